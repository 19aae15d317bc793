/* tls_bio.c: read-ahead and write-gathering socket BIO for BoringSSL. */
#include "tls_bio.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>

#include "bufpool.h"

struct tls_bio {
	int fd;
	struct bufpool *pool;
	struct buf *in;  /* read ahead, not yet taken by BoringSSL */
	struct buf *out; /* written by BoringSSL, not yet sent */
	/* The peer's FIN was signalled (EPOLLRDHUP) before the last read,
	 * and that read returned less than it asked for: it reached the FIN,
	 * so what follows is the EOF, with no read needed to learn it. */
	uint8_t hup;
	uint8_t at_fin;
	/* Without the FIN, a short read has emptied the socket until the
	 * next edge (drained), unless an event may have carried a reset or
	 * a hang-up (trouble): no edge follows those, so reads then go on
	 * until one fails or blocks. The socket is registered before the
	 * first read, so what was already there is reported as an edge. */
	uint8_t trouble;
	uint8_t drained;
};

static BIO_METHOD *tls_bio_method;
/* A type of its own, so tls_bio_ready can tell its BIOs from others; still
 * a descriptor BIO, whose fd SSL_get_fd finds. */
static int tls_bio_type;

/* tls_bio_short records a read that returned less than it asked for
 * (|is_short|): at the FIN if that was signalled before the read, else
 * the socket's bytes until the next edge. */
static void
tls_bio_short(struct tls_bio *t, int is_short)
{
	t->at_fin = is_short && t->hup;
	t->drained = is_short && !t->hup && !t->trouble;
}

static int
tls_bio_read(BIO *bio, char *dst, int len)
{
	struct tls_bio *t = BIO_get_data(bio);
	struct buf *b = t->in;
	ssize_t n;

	BIO_clear_retry_flags(bio);
	if (len <= 0)
		return 0;
	if (b == NULL && t->at_fin)
		return 0;
	if (b == NULL && t->drained) {
		BIO_set_retry_read(bio);
		errno = EAGAIN;
		return -1;
	}
	if (b == NULL) {
		if ((size_t)len >= bufpool_size(t->pool)) {
			/* A large read gains nothing from a bounce buffer. */
			do {
				n = read(t->fd, dst, (size_t)len);
			} while (n < 0 && errno == EINTR);
			tls_bio_short(t, n > 0 && n < len);
			goto result;
		}
		if ((b = t->in = bufpool_get(t->pool)) == NULL) {
			errno = ENOMEM;
			return -1;
		}
		do {
			n = read(t->fd, b->data, bufpool_size(t->pool));
		} while (n < 0 && errno == EINTR);
		if (n <= 0) {
			bufpool_put(t->pool, b);
			t->in = NULL;
			goto result;
		}
		tls_bio_short(t, (size_t)n < bufpool_size(t->pool));
		b->end = (size_t)n;
	}
	n = (ssize_t)(b->end - b->start);
	if (n > len)
		n = len;
	memcpy(dst, b->data + b->start, (size_t)n);
	b->start += (size_t)n;
	if (b->start == b->end) {
		bufpool_put(t->pool, b);
		t->in = NULL;
	}
	return (int)n;
result:
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_read(bio);
	return (int)n;
}

static int
tls_bio_send(BIO *bio, int flags)
{
	struct tls_bio *t = BIO_get_data(bio);
	struct buf *b = t->out;

	while (b != NULL && b->start < b->end) {
		ssize_t n = send(t->fd, b->data + b->start, b->end - b->start,
		    MSG_NOSIGNAL | flags);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		}
		b->start += (size_t)n;
	}
	bufpool_put(t->pool, b);
	t->out = NULL;
	return 1;
}

int
tls_bio_flush(BIO *bio)
{
	return tls_bio_send(bio, 0);
}

int
tls_bio_flush_last(BIO *bio)
{
	/* MSG_MORE holds a last partial segment back; the FIN that follows
	 * (shutdown or close) then leaves in the same packet. */
	return tls_bio_send(bio, MSG_MORE);
}

void
tls_bio_ready(BIO *bio, int hup, int trouble)
{
	struct tls_bio *t;

	if (bio == NULL || BIO_method_type(bio) != tls_bio_type ||
	    (t = BIO_get_data(bio)) == NULL)
		return;
	if (hup)
		t->hup = 1;
	if (trouble)
		t->trouble = 1;
	t->drained = 0;
}

size_t
tls_bio_pending(BIO *bio)
{
	struct tls_bio *t = BIO_get_data(bio);

	return t->out != NULL ? t->out->end - t->out->start : 0;
}

static int
tls_bio_write(BIO *bio, const char *src, int len)
{
	struct tls_bio *t = BIO_get_data(bio);
	size_t cap = bufpool_size(t->pool), room;
	struct buf *b;

	BIO_clear_retry_flags(bio);
	if (len <= 0)
		return 0;
	if (t->out != NULL && t->out->end == cap) {
		/* Full: make room by sending what is gathered. */
		if (tls_bio_flush(bio) < 0)
			return -1;
		if (t->out != NULL) {
			if (t->out->start == 0) {
				BIO_set_retry_write(bio);
				return -1;
			}
			memmove(t->out->data, t->out->data + t->out->start,
			    t->out->end - t->out->start);
			t->out->end -= t->out->start;
			t->out->start = 0;
		}
	}
	if ((b = t->out) == NULL && (b = t->out = bufpool_get(t->pool)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	room = cap - b->end;
	if ((size_t)len > room)
		len = (int)room;
	memcpy(b->data + b->end, src, (size_t)len);
	b->end += (size_t)len;
	return len;
}

static long
tls_bio_ctrl(BIO *bio, int cmd, long larg, void *parg)
{
	struct tls_bio *t = BIO_get_data(bio);

	(void)larg;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		/* Deferred: the connection flushes once per event, which is
		 * what gathers records into one write. */
		return 1;
	case BIO_C_GET_FD:
		if (parg != NULL)
			*(int *)parg = t->fd;
		return t->fd;
	case BIO_CTRL_PENDING:
		return t->in != NULL ? (long)(t->in->end - t->in->start) : 0;
	case BIO_CTRL_WPENDING:
		return (long)tls_bio_pending(bio);
	default:
		return 0;
	}
}

static int
tls_bio_destroy(BIO *bio)
{
	struct tls_bio *t = BIO_get_data(bio);

	if (t != NULL) {
		bufpool_put(t->pool, t->in);
		bufpool_put(t->pool, t->out);
		free(t);
	}
	BIO_set_data(bio, NULL);
	return 1;
}

static void
tls_bio_init_method(void)
{
	int index = BIO_get_new_index();
	BIO_METHOD *m;

	if (index < 0)
		return;
	tls_bio_type = index | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR;
	m = BIO_meth_new(tls_bio_type, "tlsproxy socket");
	if (m == NULL || BIO_meth_set_read(m, tls_bio_read) != 1 ||
	    BIO_meth_set_write(m, tls_bio_write) != 1 ||
	    BIO_meth_set_ctrl(m, tls_bio_ctrl) != 1 ||
	    BIO_meth_set_destroy(m, tls_bio_destroy) != 1) {
		BIO_meth_free(m);
		return;
	}
	tls_bio_method = m;
}

static const BIO_METHOD *
tls_bio_get_method(void)
{
	/* Built once; BIO_METHODs are immutable after setup and shared. */
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, tls_bio_init_method);
	return tls_bio_method;
}

BIO *
tls_bio_new(int fd, struct bufpool *pool)
{
	const BIO_METHOD *m = tls_bio_get_method();
	struct tls_bio *t;
	BIO *bio;

	if (m == NULL || (t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	if ((bio = BIO_new(m)) == NULL) {
		free(t);
		return NULL;
	}
	t->fd = fd;
	t->pool = pool;
	BIO_set_data(bio, t);
	BIO_set_init(bio, 1);
	return bio;
}
