/* relay.c: the byte pump, backpressure and half-close. */
#include "relay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "bufpool.h"
#include "log.h"
#include "tls_bio.h"

void
relay_init(struct relay *r, struct bufpool *pool, int client_fd,
    SSL *client_ssl, int backend_fd)
{
	memset(r, 0, sizeof(*r));
	r->pool = pool;
	r->end[RELAY_CLIENT].fd = client_fd;
	r->end[RELAY_CLIENT].ssl = client_ssl;
	r->end[RELAY_BACKEND].fd = backend_fd;
}

void
relay_release(struct relay *r)
{
	for (int s = 0; s < 2; s++) {
		if (r->buf[s] != NULL)
			bufpool_put(r->pool, r->buf[s]);
		r->buf[s] = NULL;
	}
}

void
relay_nodelay_later(struct relay *r, enum relay_side s)
{
	r->end[s].nodelay_later = 1;
}

int
relay_preface(struct relay *r, const void *data, size_t len)
{
	struct buf *b;

	if (len > bufpool_size(r->pool) ||
	    (b = r->buf[RELAY_CLIENT] = bufpool_get(r->pool)) == NULL)
		return -1;
	memcpy(b->data, data, len);
	b->start = 0;
	b->end = len;
	r->preface = len;
	return 0;
}

static const char *const side_names[] = { "client", "backend" };

static void
relay_fail(struct relay *r, enum relay_side s, const char *what,
    const char *detail)
{
	snprintf(r->reason_buf, sizeof(r->reason_buf), "%s %s: %s",
	    side_names[s], what, detail);
	r->reason = r->reason_buf;
	if (s == RELAY_BACKEND)
		r->backend_failed = 1;
}

/* relay_tls_result turns an SSL_read/SSL_write/SSL_shutdown result into
 * >0 bytes, 0 for EOF (reads only), -1 blocked (|*want| set) or -2 error. */
static int
relay_tls_result(struct relay *r, enum relay_side s, int ret, int is_read,
    uint8_t *want)
{
	struct relay_end *e = &r->end[s];
	char err[96];

	switch (SSL_get_error(e->ssl, ret)) {
	case SSL_ERROR_NONE:
		return ret;
	case SSL_ERROR_WANT_READ:
		*want = RELAY_WANT_READ;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		*want = RELAY_WANT_WRITE;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		e->clean_eof = 1;
		return 0;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		if (ret == 0 || errno == 0) {
			if (is_read)
				return 0; /* EOF without close_notify */
			relay_fail(r, s, "write", "connection closed");
			return -2;
		}
		relay_fail(r, s, is_read ? "read" : "write", strerror(errno));
		return -2;
	default:
		if (ERR_GET_LIB(ERR_peek_error()) == ERR_LIB_SSL &&
		    ERR_GET_REASON(ERR_peek_error()) == SSL_R_NO_RENEGOTIATION)
			r->renegotiation = 1;
		relay_fail(r, s, is_read ? "read" : "write",
		    log_ssl_error(err, sizeof(err)));
		return -2;
	}
}

static int
relay_plain_result(struct relay *r, enum relay_side s, ssize_t ret,
    int is_read, uint8_t *want)
{
	if (ret >= 0)
		return (int)ret;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		*want = is_read ? RELAY_WANT_READ : RELAY_WANT_WRITE;
		return -1;
	}
	relay_fail(r, s, is_read ? "read" : "write", strerror(errno));
	return -2;
}

/* relay_read reads from side |s| into its buffer. */
static int
relay_read(struct relay *r, enum relay_side s, char *dst, size_t len)
{
	struct relay_end *e = &r->end[s];
	int n;

	if (len > INT32_MAX)
		len = INT32_MAX;
	if (e->ssl != NULL) {
		ERR_clear_error();
		n = SSL_read(e->ssl, dst, (int)len);
		return relay_tls_result(r, s, n, 1, &e->read_blocked);
	}
	ssize_t got;

	if (e->at_fin)
		return 0;
	do {
		got = read(e->fd, dst, len);
	} while (got < 0 && errno == EINTR);
	/* A short read has emptied the socket: with the FIN signalled before
	 * it, the next read is the EOF; else the next edge announces more,
	 * unless trouble was signalled (see RELAY_TROUBLE). */
	if (got > 0 && (size_t)got < len) {
		if (e->hup)
			e->at_fin = 1;
		else if (!e->trouble)
			e->read_blocked = RELAY_WANT_READ;
	}
	return relay_plain_result(r, s, got, 1, &e->read_blocked);
}

/* relay_write writes to side |s|; |more|: a FIN follows at once. */
static int
relay_write(struct relay *r, enum relay_side s, const char *src, size_t len,
    int more)
{
	struct relay_end *e = &r->end[s];
	int n;

	if (len > INT32_MAX)
		len = INT32_MAX;
	if (e->ssl != NULL) {
		ERR_clear_error();
		n = SSL_write(e->ssl, src, (int)len);
		return relay_tls_result(r, s, n, 0, &e->write_blocked);
	}
	ssize_t put;

	if (e->nodelay_later && e->wrote) {
		int one = 1;

		setsockopt(e->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		e->nodelay_later = 0;
	}
	do {
		put = send(e->fd, src, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
	} while (put < 0 && errno == EINTR);
	if (put > 0)
		e->wrote = 1;
	return relay_plain_result(r, s, put, 0, &e->write_blocked);
}

/* relay_closing returns whether both directions have ended but for side
 * |s|'s output: once that has left, the relay is done and the connection
 * is closed, so close(2) sends the FIN at once. */
static int
relay_closing(const struct relay *r, enum relay_side s)
{
	if (r->backend_failed)
		return 0;
	for (int i = 0; i < 2; i++) {
		const struct relay_end *e = &r->end[i];

		if (!e->read_eof || r->buf[i] != NULL)
			return 0;
		if (i != (int)s && (!e->write_shut || e->flush_blocked ||
		    e->fin_pending))
			return 0;
	}
	return 1;
}

/* relay_shut ends writing to side |s|: close_notify for TLS, then a TCP
 * half-close (for TLS once the close_notify has left: see relay_flush).
 * Returns 0 done, -1 blocked, -2 error. */
static int
relay_shut(struct relay *r, enum relay_side s)
{
	struct relay_end *e = &r->end[s];
	/* When this half-close ends the connection, close(2) sends the same
	 * FIN: skip the syscall. */
	int last = relay_closing(r, s);

	if (e->ssl != NULL) {
		int ret;

		ERR_clear_error();
		ret = SSL_shutdown(e->ssl);
		if (ret < 0) {
			ret = relay_tls_result(r, s, ret, 0, &e->write_blocked);
			if (ret == -1)
				return -1;
			/* The peer may already be gone; a half-close is moot. */
		}
		e->fin_pending = !last;
		e->write_shut = 1;
		return 0;
	}
	if (!last)
		shutdown(e->fd, SHUT_WR);
	e->write_shut = 1;
	return 0;
}

/* relay_post_handshake hands BoringSSL's held-back handshake messages (a
 * KeyUpdate answer, TLS 1.3 session tickets) to the BIO. BoringSSL sends
 * them only with the next write, which may never come if the backend is
 * silent. Returns 0 or -2 on error. */
static int
relay_post_handshake(struct relay *r)
{
	static const uint8_t none[1];
	struct relay_end *e = &r->end[RELAY_CLIENT];
	int ret;

	/* A write in progress carries them anyway, and after close_notify
	 * nothing else may be sent. */
	if (e->ssl == NULL || e->write_shut ||
	    e->write_blocked != RELAY_WANT_NONE)
		return 0;
	ERR_clear_error();
	ret = SSL_write(e->ssl, none, 0);
	if (ret >= 0)
		return 0;
	return relay_tls_result(r, RELAY_CLIENT, ret, 0, &e->write_blocked) ==
	    -2 ? -2 : 0;
}

/* relay_flush sends the TLS output gathered for side |s| during this run
 * in one write, then the pending half-close. Returns 0 or -2 on error. */
static int
relay_flush(struct relay *r, enum relay_side s)
{
	struct relay_end *e = &r->end[s];
	int rc;

	if (e->ssl == NULL || e->flush_blocked)
		return 0;
	if (s == RELAY_CLIENT && !r->hold_post_handshake &&
	    relay_post_handshake(r) != 0)
		return -2;
	/* The close_notify and the FIN that follows it leave together. */
	if (e->write_shut && (e->fin_pending || relay_closing(r, s)))
		rc = tls_bio_flush_last(SSL_get_wbio(e->ssl));
	else
		rc = tls_bio_flush(SSL_get_wbio(e->ssl));
	if (rc < 0) {
		relay_fail(r, s, "write", strerror(errno));
		return -2;
	}
	e->flush_blocked = rc == 0;
	if (rc == 1 && e->fin_pending) {
		shutdown(e->fd, SHUT_WR);
		e->fin_pending = 0;
	}
	return 0;
}

/* relay_pump moves bytes from side |s| to the other side. Returns 0 or -2
 * on error. */
static int
relay_pump(struct relay *r, enum relay_side s)
{
	enum relay_side d = (enum relay_side)!s;
	struct relay_end *src = &r->end[s], *dst = &r->end[d];
	size_t cap = bufpool_size(r->pool);
	int n;

	for (;;) {
		struct buf *b = r->buf[s];
		int moved = 0;

		/* Read while there is room, every record or segment there is,
		 * so that what arrived together leaves in one write; a full
		 * buffer stalls the reader, which is the backpressure. */
		while (!src->read_eof && src->read_blocked == RELAY_WANT_NONE &&
		    (b == NULL || b->end < cap)) {
			if (b == NULL && (b = r->buf[s] = bufpool_get(r->pool)) == NULL) {
				relay_fail(r, s, "read", "out of memory");
				return -2;
			}
			n = relay_read(r, s, b->data + b->end, cap - b->end);
			if (n == -2 && s == RELAY_CLIENT)
				return -2;
			/* A backend that fails (a reset) still sent what came
			 * before: the kernel keeps it readable, and dropping
			 * what is buffered here would cut the client's stream
			 * short. Deliver it, then end (see relay_run). */
			if (n == 0 || n == -2)
				src->read_eof = 1;
			/* A client that is done gets what was held for it. */
			if (n == 0 && s == RELAY_CLIENT)
				r->hold_post_handshake = 0;
			if (n <= 0)
				break;
			b->end += (size_t)n;
			moved = 1;
		}
		/* Nothing more goes to a backend that failed: the write
		 * would fail too, and end the connection before what the
		 * backend sent has reached the client. */
		if (b != NULL && b->start < b->end &&
		    dst->write_blocked == RELAY_WANT_NONE &&
		    !(d == RELAY_BACKEND && r->backend_failed)) {
			/* The source has ended: its last bytes and the FIN
			 * relay_shut sends next share a packet. */
			n = relay_write(r, d, b->data + b->start, b->end - b->start,
			    src->read_eof && !r->backend_failed);
			if (n == -2)
				return -2;
			if (n > 0) {
				size_t own = 0;

				/* A PROXY header is ours, not the client's. */
				if (r->preface > 0 && s == RELAY_CLIENT) {
					own = r->preface < (size_t)n ? r->preface :
					    (size_t)n;
					r->preface -= own;
				}
				b->start += (size_t)n;
				r->bytes[s] += (uint64_t)n - own;
				moved = 1;
				if (d == RELAY_CLIENT)
					r->hold_post_handshake = 0;
			}
		}
		if (b != NULL && b->start == b->end) {
			/* Idle connections hold no buffer. */
			bufpool_put(r->pool, b);
			r->buf[s] = NULL;
		} else if (b != NULL && b->end == cap && b->start > 0 &&
		    b->start >= cap / 2) {
			/* start > 0: with a one-byte cap, cap / 2 is 0 and
			 * compacting a full, unsent buffer would move nothing
			 * yet count as progress, forever. */
			memmove(b->data, b->data + b->start, b->end - b->start);
			b->end -= b->start;
			b->start = 0;
			moved = 1;
		}
		if (src->read_eof && r->buf[s] == NULL && !dst->write_shut &&
		    dst->write_blocked == RELAY_WANT_NONE &&
		    !r->backend_failed) {
			if (relay_shut(r, d) == -2)
				return -2;
		}
		if (moved)
			r->progress = 1;
		else
			return 0;
	}
}

void
relay_ready(struct relay *r, enum relay_side fd_side, int what)
{
	struct relay_end *e = &r->end[fd_side];

	if (what & RELAY_HUP)
		e->hup = 1;
	if (what & RELAY_TROUBLE)
		e->trouble = 1;
	if ((what & RELAY_WANT_READ) && e->ssl != NULL)
		tls_bio_ready(SSL_get_rbio(e->ssl), what & RELAY_HUP,
		    what & RELAY_TROUBLE);
	if (e->read_blocked & what)
		e->read_blocked = RELAY_WANT_NONE;
	if (e->write_blocked & what)
		e->write_blocked = RELAY_WANT_NONE;
	if (what & RELAY_WANT_WRITE)
		e->flush_blocked = 0;
}

enum relay_status
relay_run(struct relay *r)
{
	/* Client to backend first: a request reaches the backend before its
	 * response is read. Each pump runs until its direction is blocked. */
	r->progress = 0;
	if (relay_pump(r, RELAY_CLIENT) != 0 ||
	    relay_pump(r, RELAY_BACKEND) != 0 ||
	    relay_flush(r, RELAY_BACKEND) != 0 ||
	    relay_flush(r, RELAY_CLIENT) != 0)
		return RELAY_ERROR;
	if (r->backend_failed) {
		/* A failed backend read: done once what it sent has left. */
		return r->buf[RELAY_BACKEND] == NULL &&
		    !r->end[RELAY_CLIENT].flush_blocked ? RELAY_ERROR :
		    RELAY_OK;
	}
	for (int s = 0; s < 2; s++) {
		if (r->end[s].flush_blocked || r->end[s].fin_pending)
			return RELAY_OK;
	}
	for (int s = 0; s < 2; s++) {
		if (!r->end[s].read_eof || r->buf[s] != NULL ||
		    !r->end[!s].write_shut)
			return RELAY_OK;
	}
	r->reason = r->end[RELAY_CLIENT].clean_eof ? "done" :
	    "done (client closed without close_notify)";
	return RELAY_DONE;
}

int
relay_interest(const struct relay *r, enum relay_side s)
{
	const struct relay_end *e = &r->end[s];
	const struct buf *in = r->buf[s], *out = r->buf[!s];
	size_t cap = bufpool_size(r->pool);
	int what = 0;

	if (!e->read_eof && (in == NULL || in->end < cap))
		what |= e->read_blocked;
	if ((out != NULL && out->start < out->end) ||
	    (r->end[!s].read_eof && out == NULL && !e->write_shut))
		what |= e->write_blocked;
	if (e->flush_blocked)
		what |= RELAY_WANT_WRITE;
	return what;
}

size_t
relay_buffered(const struct relay *r)
{
	size_t n = 0;

	for (int s = 0; s < 2; s++) {
		if (r->buf[s] != NULL)
			n += r->buf[s]->end - r->buf[s]->start;
	}
	return n;
}
