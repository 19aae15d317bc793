/* conn.c: a connection's life: ACCEPTED → HANDSHAKE → CONNECTING →
 * RELAYING → CLOSED. Every end goes through conn_close(). */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "acme_cert.h"
#include "acme_challenge.h"
#include "backend.h"
#include "backend_tls.h"
#include "clock.h"
#include "daemon.h"
#include "epoll_view.h"
#include "generation.h"
#include "linger.h"
#include "listener.h"
#include "log.h"
#include "peer_table.h"
#include "proxy_proto.h"
#include "relay.h"
#include "session_store.h"
#include "sni.h"
#include "stats.h"
#include "tls_bio.h"
#include "worker.h"

/* How long TLS 1.3 session tickets may wait for the backend's first
 * bytes to carry them, before they are sent on their own. */
#define CONN_TICKET_HOLD_MS 40

enum conn_state {
	CONN_HANDSHAKE,
	CONN_ECH_WAIT, /* ECH rejected: the backend waits for client bytes */
	CONN_CONNECTING,
	CONN_BACKEND_TLS, /* connected; the TLS handshake with the backend */
	CONN_RELAYING,
};

struct conn {
	struct conn *prev, *next; /* the worker's list */
	struct worker *w;
	struct listener *listener;
	struct generation *gen;
	const struct listener_conf *lc;
	const struct tls_ctx *tls; /* chosen by SNI */
	struct backend *backend;   /* chosen once the handshake is done */
	SSL *bssl;                 /* TLS to the backend, if it has tls */
	uint8_t bhs_want;          /* RELAY_WANT_* the backend handshake waits for */
	char backend_err[160];     /* the last address's TLS failure */
	uint64_t id;
	enum conn_state state;
	SSL *ssl;
	int cfd, bfd;
	/* One edge-triggered event per socket, registered once: every
	 * operation runs until it would block, a read comes up short, or the
	 * FIN is reached, so an edge is only awaited then, and interest never
	 * changes (no epoll_ctl per turn). */
	struct event ev[2];
	uint8_t hs_want; /* RELAY_WANT_* the handshake waits for */
	uint8_t sni_refused; /* sni_strict and no context for the name */
	uint8_t acme_challenge; /* a tls-alpn-01 validation handshake */
	uint8_t ech; /* enum stat_ech: what became of an Encrypted Client Hello */
	uint8_t timed_out; /* closing because the client was silent */
	/* What the connect's event said besides writable: readable, the
	 * backend's FIN and a possible reset (which raise no edge of their
	 * own later). */
	uint8_t backend_readable;
	uint8_t backend_hup;
	uint8_t backend_trouble;
	/* TLS 1.3: when the session tickets BoringSSL holds back must leave
	 * even if nothing else goes to the client by then; 0 once gone. */
	uint64_t tickets_due_ms;
	uint64_t backend_deadline_ms;
	int alert_sent; /* fatal alert BoringSSL sent: (level << 8) | desc */
	/* A session-store lookup the handshake waits for, and its result. */
	struct store_lookup *lookup;
	SSL_SESSION *looked_up;
	uint8_t lookup_done;
	uint64_t lookup_ns; /* when the lookup started */
	struct event timer;
	struct relay relay;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	char *sni;
	size_t addr_index; /* backend address being tried */
	size_t addr_tries;
	uint64_t start_ns, handshake_ns, last_active_ns;
	uint64_t counted[2]; /* relay bytes already added to the stats */
	struct peer_ref peer_ref; /* the client address's counted place */
};

static struct timeval
conn_tv(uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	return tv;
}

/* conn_watch registers side |s|'s socket for both directions, edge
 * triggered, once for the life of that socket. EV_CLOSED (EPOLLRDHUP)
 * says when the peer's FIN is in: a short read after it is at the EOF
 * (see tls_bio_ready). */
static void
conn_watch(struct conn *c, enum relay_side s, int fd,
    event_callback_fn cb)
{
	event_assign(&c->ev[s], c->w->base, fd,
	    EV_READ | EV_WRITE | EV_CLOSED | EV_PERSIST | EV_ET, cb, c);
	event_add(&c->ev[s], NULL);
}

static void
conn_timer(struct conn *c, uint64_t ms)
{
	struct timeval tv = conn_tv(ms);

	evtimer_add(&c->timer, &tv);
}

/* conn_arm sets the timer to |ms| from now, or to when held-back session
 * tickets are due if that is sooner. */
static void
conn_arm(struct conn *c, uint64_t ms)
{
	if (c->tickets_due_ms != 0) {
		uint64_t now = clock_mono_ms();
		uint64_t left = c->tickets_due_ms > now ?
		    c->tickets_due_ms - now : 0;

		if (left < ms)
			ms = left;
	}
	conn_timer(c, ms);
}

/* conn_group_id returns the key-exchange group of |ssl|'s handshake. */
static uint16_t
conn_group_id(const SSL *ssl)
{
#ifdef SSL_GROUP_X25519_MLKEM768
	return SSL_get_group_id(ssl);
#else
	return SSL_get_curve_id(ssl);
#endif
}

/* conn_group_name names it for the access log: ecdh_curve's name, or
 * "-" without one. */
static const char *
conn_group_name(const SSL *ssl)
{
	uint16_t id = conn_group_id(ssl);
	const char *name = id != 0 ? tls_ctx_group_name(id) : NULL;

#ifdef SSL_GROUP_X25519_MLKEM768
	if (name == NULL && id != 0)
		name = SSL_get_group_name(id);
#else
	if (name == NULL && id != 0)
		name = SSL_get_curve_name(id);
#endif
	return name != NULL ? name : "-";
}

static void
conn_access_log(struct conn *c, const char *reason)
{
	const struct daemon *d = c->w->d;
	char line[1400], peer[ADDR_STRLEN], backend[ADDR_STRLEN] = "-";
	char btls[128] = "-";
	char auth_buf[96], subject_buf[256];
	const char *auth = "-", *subject = "-";
	const SSL_CIPHER *cipher = NULL;
	const uint8_t *alpn = NULL;
	unsigned alpn_len = 0;
	const char *version = "-", *group = "-", *ech = "-";
	int hs_done = c->state != CONN_HANDSHAKE || c->acme_challenge;
	uint64_t now = clock_mono_ns();
	int n;

	if (!d->access_log)
		return;
	addr_format_sa((struct sockaddr *)&c->peer, c->peer_len, peer,
	    sizeof(peer));
	if (hs_done) {
		auth = tls_ctx_auth(c->tls, c->ssl, auth_buf, sizeof(auth_buf));
		if (strcmp(auth, "-") != 0 && strcmp(auth, "none") != 0)
			subject = tls_ctx_peer_subject(c->ssl, subject_buf,
			    sizeof(subject_buf));
		version = SSL_get_version(c->ssl);
		cipher = SSL_get_current_cipher(c->ssl);
		group = conn_group_name(c->ssl);
		SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
	}
	/* Known from the ClientHello on: a rejected one is worth logging
	 * even if the handshake then failed. */
	if (c->ech != STAT_ECH_NONE)
		ech = stat_ech_names[c->ech];
	if (c->state == CONN_RELAYING) {
		addr_format(&c->backend->addrs[c->addr_index], backend,
		    sizeof(backend));
		if (c->bssl != NULL)
			backend_tls_describe(c->bssl, btls, sizeof(btls));
	}
	n = snprintf(line, sizeof(line), "conn id=%llu client=%s listener=%s "
	    "sni=%s context=%s alpn=%.*s version=%s cipher=%s group=%s "
	    "ech=%s resumed=%s auth=%s client_subject=\"%s\" handshake_ms=%.3f "
	    "backend=%s backend_tls=%s bytes_in=%llu bytes_out=%llu "
	    "duration_ms=%.3f reason=\"%s\"",
	    (unsigned long long)c->id, peer, c->lc->name,
	    c->sni ? c->sni : "-", c->tls ? c->tls->name : "-",
	    alpn_len ? (int)alpn_len : 1,
	    alpn_len ? (const char *)alpn : "-", version,
	    cipher ? SSL_CIPHER_get_name(cipher) : "-", group, ech,
	    hs_done ? (SSL_session_reused(c->ssl) ? "yes" : "no") : "-", auth,
	    subject,
	    hs_done ? (double)(c->handshake_ns - c->start_ns) / 1e6 : 0.0,
	    backend, btls, (unsigned long long)c->relay.bytes[RELAY_CLIENT],
	    (unsigned long long)c->relay.bytes[RELAY_BACKEND],
	    (double)(now - c->start_ns) / 1e6, reason);
	if (n > 0)
		log_access(line, (size_t)n < sizeof(line) ? (size_t)n :
		    sizeof(line) - 1);
}

void
conn_log_refused(struct worker *w, const struct listener_conf *lc,
    const struct sockaddr *peer, socklen_t peer_len, const char *limit)
{
	char line[512], addr[ADDR_STRLEN];
	int n;

	if (!w->d->access_log)
		return;
	/* The same fields as every other line, so parsers need no case. */
	n = snprintf(line, sizeof(line), "conn id=- client=%s listener=%s "
	    "sni=- context=- alpn=- version=- cipher=- group=- ech=- "
	    "resumed=- "
	    "auth=- "
	    "client_subject=\"-\" handshake_ms=0.000 backend=- backend_tls=- "
	    "bytes_in=0 "
	    "bytes_out=0 duration_ms=0.000 reason=\"refused: %s\"",
	    addr_format_sa(peer, peer_len, addr, sizeof(addr)), lc->name, limit);
	if (n > 0)
		log_access(line, (size_t)n < sizeof(line) ? (size_t)n :
		    sizeof(line) - 1);
}

static void conn_link(struct worker *w, struct conn *c);
static void conn_unlink(struct worker *w, struct conn *c);

/* conn_count_bytes adds what the relay moved since the last call, so
 * the byte counters move while long connections are still open. */
static void
conn_count_bytes(struct conn *c)
{
	struct worker_stats *s = c->w->stats;
	const uint64_t *b = c->relay.bytes;

	if (b[RELAY_CLIENT] != c->counted[RELAY_CLIENT]) {
		stat_add(&s->bytes_from_client, b[RELAY_CLIENT] -
		    c->counted[RELAY_CLIENT]);
		c->counted[RELAY_CLIENT] = b[RELAY_CLIENT];
	}
	if (b[RELAY_BACKEND] != c->counted[RELAY_BACKEND]) {
		stat_add(&s->bytes_from_backend, b[RELAY_BACKEND] -
		    c->counted[RELAY_BACKEND]);
		c->counted[RELAY_BACKEND] = b[RELAY_BACKEND];
	}
}

/* conn_should_linger returns whether the client may still be sending
 * when we close, so that closing at once would answer with a reset. */
static int
conn_should_linger(struct conn *c)
{
	int unread = 0;

	if (c->state == CONN_RELAYING && c->relay.end[RELAY_CLIENT].read_eof)
		return 0;
	if (ioctl(c->cfd, FIONREAD, &unread) == 0 && unread > 0)
		return 1;
	/* A silent client and one that waits for our handshake flight
	 * send nothing more: a plain close is clean. */
	return !c->timed_out && c->state != CONN_HANDSHAKE;
}

/* conn_close_backend closes the backend's socket, if open. */
static void
conn_close_backend(struct conn *c)
{
	if (c->bfd < 0)
		return;
	if (event_initialized(&c->ev[RELAY_BACKEND]))
		epoll_view_close(c->bfd, &c->ev[RELAY_BACKEND]);
	else
		close(c->bfd);
	c->bfd = -1;
}

/* conn_close is the one way out: it logs the connection's line, releases
 * everything it owns and frees it. Callers return right after. */
static void
conn_close(struct conn *c, const char *reason)
{
	struct worker *w = c->w;

	conn_count_bytes(c);
	conn_access_log(c, reason);
	if (c->state != CONN_HANDSHAKE &&
	    !c->relay.end[RELAY_CLIENT].write_shut && !c->relay.backend_failed) {
		/* Best effort: tell the client the end is intended. Not when
		 * the backend reset or failed: a close_notify would pass what
		 * it sent so far off as the complete stream, where a bare FIN
		 * lets the client see it was cut short. */
		SSL_shutdown(c->ssl);
		ERR_clear_error();
	}
	if (c->state != CONN_HANDSHAKE)
		tls_bio_flush_last(SSL_get_wbio(c->ssl));
	evtimer_del(&c->timer);
	session_store_cancel(c->lookup);
	SSL_SESSION_free(c->looked_up);
	relay_release(&c->relay);
	SSL_free(c->ssl);
	SSL_free(c->bssl);
	if (conn_should_linger(c)) {
		event_del(&c->ev[RELAY_CLIENT]);
		linger_close(w->linger, c->cfd);
	} else {
		epoll_view_close(c->cfd, &c->ev[RELAY_CLIENT]);
	}
	conn_close_backend(c);
	atomic_fetch_sub_explicit(&c->listener->num_conns, 1,
	    memory_order_relaxed);
	stat_add(&w->stats->closed[c->lc->stat_slot], 1);
	peer_release(w->d->peers, &c->peer_ref);
	conn_unlink(w, c);
	generation_unref(c->gen);
	free(c->sni);
	free(c);
	worker_conn_closed(w);
}

/* conn_renegotiation ends a connection whose client tried to
 * renegotiate (BoringSSL has already refused it with a no_renegotiation
 * alert) and counts the attempt against the client's address. */
static void
conn_renegotiation(struct conn *c)
{
	const struct peer_limits *lim = &c->gen->peer_limits;
	uint64_t key = peer_key((struct sockaddr *)&c->peer), until;
	char peer[ADDR_STRLEN], who[PEER_KEY_STRLEN];

	stat_add(&c->w->stats->hs_fail[STAT_HS_RENEGOTIATION], 1);
	log_msg(LOGL_WARNING, "conn %llu: client %s sni %s: renegotiation "
	    "attempt refused", (unsigned long long)c->id,
	    addr_format_sa((struct sockaddr *)&c->peer, c->peer_len, peer,
	    sizeof(peer)), c->sni ? c->sni : "-");
	if (peer_renegotiation(c->w->d->peers, key, lim, clock_mono_ms(),
	    &until)) {
		stat_add(&c->w->stats->bans, 1);
		log_msg(LOGL_WARNING, "client %s banned for %llus: more than %u "
		    "renegotiation attempts within %llus",
		    peer_key_format(key, who, sizeof(who)),
		    (unsigned long long)((until - clock_mono_ms() + 999) / 1000),
		    lim->reneg_limit,
		    (unsigned long long)(lim->reneg_window_ms / 1000));
	}
	conn_close(c, "renegotiation attempt");
}

static void conn_connect_next(struct conn *c);
static void conn_backend_cb(evutil_socket_t fd, short what, void *arg);

static void
conn_relay(struct conn *c)
{
	enum relay_status st = relay_run(&c->relay);

	if (st == RELAY_ERROR && c->relay.renegotiation) {
		conn_renegotiation(c);
		return;
	}
	if (st == RELAY_ERROR || st == RELAY_DONE) {
		conn_close(c, c->relay.reason);
		return;
	}
	if (c->relay.progress) {
		c->last_active_ns = clock_mono_ns();
		conn_count_bytes(c);
	}
	/* Something went to the client and took the tickets along. */
	if (!c->relay.hold_post_handshake)
		c->tickets_due_ms = 0;
}

/* conn_proxy_info describes the connection for a PROXY header. |cn| and
 * |local| are the caller's storage. */
static void
conn_proxy_info(struct conn *c, struct proxy_info *pi,
    struct sockaddr_storage *local, char *cn, size_t cn_len, int with_cert)
{
	const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(c->ssl);
	socklen_t len = sizeof(*local);
	unsigned alpn_len = 0;
	enum tls_key_type kt = tls_ctx_key_type(c->tls, c->ssl);
	int has_cert = certs != NULL && sk_CRYPTO_BUFFER_num(certs) > 0;

	memset(pi, 0, sizeof(*pi));
	pi->src = (const struct sockaddr *)&c->peer;
	if (getsockname(c->cfd, (struct sockaddr *)local, &len) == 0)
		pi->dst = (const struct sockaddr *)local;
	SSL_get0_alpn_selected(c->ssl, &pi->alpn, &alpn_len);
	pi->alpn_len = alpn_len;
	if (c->sni != NULL && strcmp(c->sni, "(invalid)") != 0)
		pi->authority = c->sni;
	pi->tls = 1;
	pi->version = SSL_get_version(c->ssl);
	pi->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
	pi->sig_alg = c->tls->sig_alg[kt];
	pi->key_alg = c->tls->key_alg[kt];
	if (!has_cert)
		return;
	pi->cert_in_sess = 1;
	pi->cert_in_conn = !SSL_session_reused(c->ssl);
	pi->verified = SSL_get_verify_result(c->ssl) == X509_V_OK;
	X509 *x = SSL_get_peer_certificate(c->ssl);

	if (x != NULL && X509_NAME_get_text_by_NID(X509_get_subject_name(x),
	    NID_commonName, cn, (int)cn_len) > 0)
		pi->cn = cn;
	X509_free(x);
	if (with_cert) {
		const CRYPTO_BUFFER *leaf = sk_CRYPTO_BUFFER_value(certs, 0);

		pi->cert_der = CRYPTO_BUFFER_data(leaf);
		pi->cert_der_len = CRYPTO_BUFFER_len(leaf);
	}
}

/* conn_proxy_header puts the PROXY protocol header the listener or the
 * backend asks for ahead of the client's bytes: queued in the relay for
 * a plain backend, sent at once, before the TLS handshake, to a TLS one.
 * Returns 0 or -1. */
static int
conn_proxy_header(struct conn *c)
{
	const struct backend *b = c->backend;
	int version = b->proxy_protocol >= 0 ? b->proxy_protocol :
	    c->lc->proxy_protocol;
	int with_cert = b->proxy_cert >= 0 ? b->proxy_cert : c->lc->proxy_cert;
	struct sockaddr_storage local;
	struct proxy_info pi;
	uint8_t small[2048], *out = small;
	size_t cap = sizeof(small);
	char cn[256];
	ssize_t n;
	int rc;

	if (version == 0)
		return 0;
	conn_proxy_info(c, &pi, &local, cn, sizeof(cn), with_cert && version == 2);
	if (pi.cert_der != NULL) {
		cap = PROXY_PROTO_V2_MAX;
		if ((out = malloc(cap)) == NULL)
			return -1;
	}
	n = version == 1 ? proxy_proto_v1(&pi, out, cap) :
	    proxy_proto_v2(&pi, out, cap);
	if (n < 0)
		rc = -1;
	else if (b->tls == NULL)
		rc = relay_preface(&c->relay, out, (size_t)n);
	else
		/* A fresh connection's send buffer takes a header whole. */
		rc = send(c->bfd, out, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
	if (out != small)
		free(out);
	return rc;
}

static void
conn_relay_start(struct conn *c)
{
	c->state = CONN_RELAYING;
	relay_init(&c->relay, c->w->pool, c->cfd, c->ssl, c->bfd);
	c->relay.end[RELAY_BACKEND].ssl = c->bssl;
	/* A plain backend that has sent nothing yet raises an edge when it
	 * does: no read until then. */
	if (c->bssl == NULL && !c->backend_readable)
		c->relay.end[RELAY_BACKEND].read_blocked = RELAY_WANT_READ;
	relay_ready(&c->relay, RELAY_BACKEND,
	    (c->backend_hup ? RELAY_HUP : 0) |
	    (c->backend_trouble ? RELAY_TROUBLE : 0));
	if (c->bssl == NULL &&
	    c->backend->addrs[c->addr_index].ss.ss_family != AF_UNIX)
		relay_nodelay_later(&c->relay, RELAY_BACKEND);
	if (c->bssl == NULL && conn_proxy_header(c) != 0) {
		conn_close(c, "cannot build the PROXY protocol header (larger "
		    "than buffer_size?)");
		return;
	}
	c->relay.hold_post_handshake = c->tickets_due_ms != 0;
	c->last_active_ns = clock_mono_ns();
	conn_arm(c, c->gen->idle_timeout_ms);
	conn_relay(c);
}

static void
conn_backend_failed(struct conn *c, const char *why)
{
	char a[ADDR_STRLEN];
	const struct backend *b = c->backend;

	log_msg(LOGL_WARNING, "conn %llu: backend '%s' address %s: %s",
	    (unsigned long long)c->id, b->name,
	    addr_format(&b->addrs[c->addr_index], a, sizeof(a)), why);
	stat_add(&c->w->stats->backend_failed[b->stat_slot], 1);
	SSL_free(c->bssl);
	c->bssl = NULL;
	conn_close_backend(c);
	c->addr_index = (c->addr_index + 1) % b->num_addrs;
	conn_connect_next(c);
}

/* conn_connect_next tries the backend's next address; each address is
 * tried once per connection. */
static void
conn_connect_next(struct conn *c)
{
	const struct backend *b = c->backend;

	if (c->addr_tries == b->num_addrs) {
		conn_close(c, c->backend_err[0] != '\0' ? c->backend_err :
		    "backend unavailable");
		return;
	}
	c->addr_tries++;
	/* After a failed TLS handshake with the previous address too. */
	c->state = CONN_CONNECTING;
	c->bhs_want = 0;
	c->bfd = backend_connect(b, c->addr_index);
	if (c->bfd < 0) {
		conn_backend_failed(c, strerror(errno));
		return;
	}
	conn_watch(c, RELAY_BACKEND, c->bfd, conn_backend_cb);
	c->backend_deadline_ms = clock_mono_ms() + b->connect_timeout_ms;
	conn_arm(c, b->connect_timeout_ms);
}

/* conn_client_alpn returns the protocol negotiated with the client. */
static const uint8_t *
conn_client_alpn(struct conn *c, size_t *len)
{
	const uint8_t *alpn = NULL;
	unsigned n = 0;

	SSL_get0_alpn_selected(c->ssl, &alpn, &n);
	*len = n;
	return alpn;
}

/* conn_backend_tls_failed counts a failed backend handshake and moves on
 * to the next address. */
static void
conn_backend_tls_failed(struct conn *c, enum backend_tls_fail kind,
    const char *why)
{
	stat_add(&c->w->stats->bt_fail[c->backend->stat_slot][kind], 1);
	snprintf(c->backend_err, sizeof(c->backend_err), "%s", why);
	conn_backend_failed(c, why);
}

static void
conn_backend_handshake(struct conn *c)
{
	const uint8_t *alpn;
	size_t alpn_len;
	int ret, err, saved_errno, flushed;
	char why[160];
	enum backend_tls_fail kind;

	ERR_clear_error();
	ret = SSL_do_handshake(c->bssl);
	saved_errno = errno;
	err = SSL_get_error(c->bssl, ret);
	/* The last flight (our Finished) waits for the relay, which sends it
	 * in one write with the client's first bytes. */
	flushed = err == SSL_ERROR_NONE ? 1 :
	    tls_bio_flush(SSL_get_wbio(c->bssl));
	if (flushed < 0 && err != SSL_ERROR_SSL) {
		snprintf(why, sizeof(why), "backend tls: %s", strerror(errno));
		conn_backend_tls_failed(c, BACKEND_TLS_FAIL_CLOSED, why);
		return;
	}
	switch (err) {
	case SSL_ERROR_NONE:
		alpn = conn_client_alpn(c, &alpn_len);
		if (backend_tls_check_alpn(c->backend, c->bssl, alpn,
		    alpn_len) != 0) {
			snprintf(why, sizeof(why), "backend tls: the backend did "
			    "not choose ALPN protocol %.*s", (int)alpn_len,
			    (const char *)alpn);
			conn_backend_tls_failed(c, BACKEND_TLS_FAIL_ALPN, why);
			return;
		}
		backend_tls_done(c->backend, c->addr_index, c->w->id, c->bssl);
		stat_add(&c->w->stats->bt_handshakes[c->backend->stat_slot], 1);
		if (SSL_session_reused(c->bssl))
			stat_add(&c->w->stats->bt_resumed[c->backend->stat_slot],
			    1);
		c->backend_err[0] = '\0';
		conn_relay_start(c);
		return;
	case SSL_ERROR_WANT_READ:
		c->bhs_want = RELAY_WANT_READ |
		    (flushed == 0 ? RELAY_WANT_WRITE : 0);
		return;
	case SSL_ERROR_WANT_WRITE:
		c->bhs_want = RELAY_WANT_WRITE;
		return;
	default:
		kind = backend_tls_why(c->bssl, err, saved_errno,
		    backend_tls_expected(c->backend, c->addr_index, c->sni), why,
		    sizeof(why));
		alpn = conn_client_alpn(c, &alpn_len);
		if (kind == BACKEND_TLS_FAIL_ALPN && alpn_len > 0 &&
		    backend_tls_passes_alpn(c->backend->tls))
			snprintf(why, sizeof(why), "backend tls: the backend does "
			    "not speak ALPN protocol %.*s", (int)alpn_len,
			    (const char *)alpn);
		conn_backend_tls_failed(c, kind, why);
		return;
	}
}

/* conn_backend_tls_start begins TLS with a connected backend: the PROXY
 * header first, in the clear, as HAProxy and nginx expect it. */
static void
conn_backend_tls_start(struct conn *c)
{
	const uint8_t *alpn;
	size_t alpn_len;
	BIO *bio;

	alpn = conn_client_alpn(c, &alpn_len);
	if (conn_proxy_header(c) != 0) {
		conn_backend_failed(c, "cannot send the PROXY protocol header");
		return;
	}
	c->bssl = backend_tls_ssl(c->backend, c->addr_index, c->w->id, c->sni,
	    alpn, alpn_len);
	if (c->bssl == NULL || (bio = tls_bio_new(c->bfd, c->w->pool)) == NULL) {
		conn_close(c, "out of memory");
		return;
	}
	SSL_set_bio(c->bssl, bio, bio);
	tls_bio_ready(bio, c->backend_hup, c->backend_trouble);
	c->state = CONN_BACKEND_TLS;
	c->bhs_want = 0;
	c->backend_deadline_ms = clock_mono_ms() +
	    backend_tls_timeout_ms(c->backend->tls);
	conn_arm(c, backend_tls_timeout_ms(c->backend->tls));
	conn_backend_handshake(c);
}

/* conn_connected: the backend's socket signalled |ready| (RELAY_* bits)
 * while connecting. Writable alone is a connect that succeeded; an error
 * raises readable and writable together (EPOLLERR), as may a backend
 * that spoke first, and only those need SO_ERROR asked. */
static void
conn_connected(struct conn *c, int ready)
{
	int err = (ready & (RELAY_WANT_READ | RELAY_HUP)) ?
	    backend_connect_result(c->bfd) : 0;

	c->backend_readable = (ready & RELAY_WANT_READ) != 0;
	c->backend_hup = (ready & RELAY_HUP) != 0;
	c->backend_trouble = (ready & RELAY_TROUBLE) != 0;
	if (err != 0) {
		conn_backend_failed(c, strerror(err));
		return;
	}
	if (c->backend->tls != NULL)
		conn_backend_tls_start(c);
	else
		conn_relay_start(c);
}

/* conn_handshake_failed logs a failed handshake with its reason (Node's
 * 'tlsClientError') and closes the connection. */
static void
conn_handshake_failed(struct conn *c, enum stat_hs_fail kind, const char *why)
{
	char reason[256], peer[ADDR_STRLEN];

	stat_add(&c->w->stats->hs_fail[kind], 1);
	snprintf(reason, sizeof(reason), "handshake failed: %s", why);
	log_msg(LOGL_INFO, "conn %llu: client %s sni %s: %s",
	    (unsigned long long)c->id, addr_format_sa((struct sockaddr *)&c->peer,
	    c->peer_len, peer, sizeof(peer)), c->sni ? c->sni : "-", reason);
	conn_close(c, reason);
}

/* conn_fail_kind sorts a handshake's BoringSSL error into the reasons
 * the metrics count. */
static enum stat_hs_fail
conn_fail_kind(uint32_t err)
{
	if (ERR_GET_LIB(err) != ERR_LIB_SSL)
		return STAT_HS_OTHER;
	switch (ERR_GET_REASON(err)) {
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SHARED_GROUP:
	case SSL_R_NO_COMMON_SIGNATURE_ALGORITHMS:
	/* Current BoringSSL's word for a TLS 1.2 client that cannot use an
	 * ECDSA certificate because it lists no curve at all. */
	case SSL_R_WRONG_CURVE:
		return STAT_HS_NO_SHARED_CIPHER;
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
	case SSL_R_INAPPROPRIATE_FALLBACK:
		return STAT_HS_PROTOCOL_VERSION;
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_UNKNOWN_PROTOCOL:
	case SSL_R_UNEXPECTED_RECORD:
	case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
	case SSL_R_RECORD_TOO_LARGE:
		return STAT_HS_NOT_TLS;
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
		return STAT_HS_CLIENT_CERT;
	default:
		return STAT_HS_OTHER;
	}
}

/* conn_handshake_why names why BoringSSL failed a handshake, adding
 * what it does not say itself: a refused server name, or why a client
 * certificate did not verify. */
static const char *
conn_handshake_why(struct conn *c, enum stat_hs_fail *kind, char *buf,
    size_t len)
{
	long vr = SSL_get_verify_result(c->ssl);
	char ssl_err[64];

	if (c->sni_refused) {
		ERR_clear_error();
		*kind = STAT_HS_UNKNOWN_SNI;
		return "unrecognized name";
	}
	const STACK_OF(CRYPTO_BUFFER) *peer = SSL_get0_peer_certificates(c->ssl);

	*kind = conn_fail_kind(ERR_peek_last_error());
	log_ssl_error(ssl_err, sizeof(ssl_err));
	/* The verification result means something only if a certificate
	 * was presented and checked. */
	if (vr != X509_V_OK && peer != NULL && sk_CRYPTO_BUFFER_num(peer) > 0) {
		snprintf(buf, len, "%s: client certificate: %s", ssl_err,
		    X509_verify_cert_error_string(vr));
		*kind = STAT_HS_CLIENT_CERT;
	} else {
		snprintf(buf, len, "%s", ssl_err);
	}
	return buf;
}

/* conn_client_sent_more returns whether the client has sent more than
 * the handshake used, read ahead or still in the socket, and more than a
 * record that can only hold an alert (24 bytes in TLS 1.3): a client that
 * closes right after its Finished sent no request to wait for an answer
 * to, and must have its tickets before it goes. */
static int
conn_client_sent_more(struct conn *c)
{
	size_t ahead = BIO_pending(SSL_get_rbio(c->ssl));
	int unread = 0;

	/* The socket is asked even when the last read found it empty: a
	 * request that arrived since keeps the tickets for its answer, where
	 * sending them now would cost a write and a packet of their own. */
	if (ahead <= 24 && (ioctl(c->cfd, FIONREAD, &unread) != 0 ||
	    unread < 0))
		unread = 0;
	return ahead + (size_t)unread > 24;
}

/* conn_connect_backend routes a finished handshake and starts
 * connecting to the backend. */
static void
conn_connect_backend(struct conn *c)
{
	const uint8_t *alpn = NULL;
	unsigned alpn_len = 0;

	c->state = CONN_CONNECTING;
	SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
	c->backend = generation_route(c->lc, c->tls, alpn, alpn_len);
	c->addr_index = backend_pick(c->backend);
	conn_connect_next(c);
}

/* conn_ech_wait: a client whose Encrypted Client Hello could not be
 * decrypted completes the handshake for the ECH public name and then, if
 * it offered a real (stale) config, aborts with ech_required to retry
 * with the configs it was sent; only a client that sent GREASE goes on.
 * So the backend is connected once the client sends application data,
 * and a client that aborts never reaches it. */
static void
conn_ech_wait(struct conn *c)
{
	char byte, buf[160], why[192];
	enum stat_hs_fail kind;
	int n, err;

	ERR_clear_error();
	n = SSL_peek(c->ssl, &byte, 1);
	err = SSL_get_error(c->ssl, n);
	tls_bio_flush(SSL_get_wbio(c->ssl));
	if (n > 0) {
		evtimer_del(&c->timer);
		conn_connect_backend(c);
		return;
	}
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return;
	if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL) {
		ERR_clear_error();
		conn_close(c, "ECH rejected: the client closed before sending "
		    "data");
		return;
	}
	snprintf(why, sizeof(why), "ECH rejected: %s",
	    conn_handshake_why(c, &kind, buf, sizeof(buf)));
	conn_close(c, why);
}

static void
conn_ech_wait_start(struct conn *c)
{
	c->state = CONN_ECH_WAIT;
	/* Tickets need not wait for a backend that may never be used. */
	c->tickets_due_ms = 0;
	if (SSL_version(c->ssl) >= TLS1_3_VERSION && SSL_write(c->ssl, "", 0) < 0)
		ERR_clear_error();
	conn_arm(c, c->gen->idle_timeout_ms);
	conn_ech_wait(c);
}

static void
conn_handshake(struct conn *c)
{
	int ret, err, saved_errno, flushed;
	enum stat_hs_fail kind;
	char why[192];

	ERR_clear_error();
	ret = SSL_do_handshake(c->ssl);
	saved_errno = errno;
	err = SSL_get_error(c->ssl, ret);
	if (ret == 1 && SSL_version(c->ssl) >= TLS1_3_VERSION) {
		/* BoringSSL holds TLS 1.3 session tickets back until the next
		 * write. A client that has already sent more than its
		 * Finished (a request) gets them with the backend's answer,
		 * or from conn_timer_cb if that is slow; one that waits gets
		 * them now, with this flush: some clients look for tickets
		 * only right after the handshake. */
		if (conn_client_sent_more(c))
			c->tickets_due_ms = clock_mono_ms() + CONN_TICKET_HOLD_MS;
		else if (SSL_write(c->ssl, "", 0) < 0)
			ERR_clear_error();
	}
	/* Send the flight (or alert) BoringSSL gathered in the BIO. */
	flushed = tls_bio_flush(SSL_get_wbio(c->ssl));
	if (flushed < 0 && err != SSL_ERROR_SSL) {
		conn_handshake_failed(c, STAT_HS_OTHER, strerror(errno));
		return;
	}
	switch (err) {
	case SSL_ERROR_NONE:
		c->handshake_ns = clock_mono_ns();
		stats_handshake(c->w->stats, (uint16_t)SSL_version(c->ssl),
		    SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(c->ssl)),
		    SSL_session_reused(c->ssl),
		    (c->handshake_ns - c->start_ns) / 1000);
		stats_group(c->w->stats, conn_group_id(c->ssl),
		    SSL_used_hello_retry_request(c->ssl));
		stat_add(&c->w->stats->hs_ech[c->ech], 1);
		c->hs_want = 0;
		evtimer_del(&c->timer);
		if (c->acme_challenge) {
			conn_close(c, "acme tls-alpn-01 challenge answered");
			return;
		}
		if (c->ech == STAT_ECH_REJECTED) {
			conn_ech_wait_start(c);
			return;
		}
		conn_connect_backend(c);
		return;
	case SSL_ERROR_WANT_READ:
		c->hs_want = RELAY_WANT_READ | (flushed == 0 ? RELAY_WANT_WRITE : 0);
		return;
	case SSL_ERROR_WANT_WRITE:
		c->hs_want = RELAY_WANT_WRITE;
		return;
	case SSL_ERROR_PENDING_SESSION:
		/* The session store answers (or times out) and calls
		 * conn_store_done, which resumes the handshake. */
		c->hs_want = 0;
		return;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		if (c->alert_sent != 0) {
			/* Some refusals (a malformed server_name, for one) send
			 * an alert without queueing an error: the client did
			 * not close, we did. */
			snprintf(why, sizeof(why), "alert sent: %s",
			    SSL_alert_desc_string_long(c->alert_sent));
			conn_handshake_failed(c, STAT_HS_OTHER, why);
			return;
		}
		conn_handshake_failed(c, STAT_HS_OTHER, ret == 0 ||
		    saved_errno == 0 ? "client closed the connection" :
		    strerror(saved_errno));
		return;
	default: {
		const char *w = conn_handshake_why(c, &kind, why, sizeof(why));

		conn_handshake_failed(c, kind, w);
		return;
	}
	}
}

/* conn_what turns an event on |fd| into RELAY_* bits. A reset or a
 * hang-up, after which no edge follows, always comes as readable; only
 * epoll_view can tell it (RELAY_TROUBLE). */
static int
conn_what(evutil_socket_t fd, short what)
{
	return ((what & EV_READ) ? RELAY_WANT_READ : 0) |
	    ((what & EV_WRITE) ? RELAY_WANT_WRITE : 0) |
	    ((what & EV_CLOSED) ? RELAY_HUP : 0) |
	    ((what & EV_READ) && epoll_view_troubled(fd) ? RELAY_TROUBLE : 0);
}

static void
conn_client_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	int ready = conn_what(fd, what);

	c->w->activity++;
	if (c->state == CONN_RELAYING) {
		relay_ready(&c->relay, RELAY_CLIENT, ready);
		conn_relay(c);
		return;
	}
	if (ready & RELAY_WANT_READ)
		tls_bio_ready(SSL_get_rbio(c->ssl), ready & RELAY_HUP,
		    ready & RELAY_TROUBLE);
	if (c->state == CONN_HANDSHAKE) {
		/* Ignore the writability edge every new socket reports. */
		if (ready & c->hs_want)
			conn_handshake(c);
	} else if (c->state == CONN_ECH_WAIT) {
		conn_ech_wait(c);
	}
}

static void
conn_backend_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	int ready = conn_what(fd, what);

	c->w->activity++;
	if (c->state == CONN_CONNECTING) {
		conn_connected(c, ready);
	} else if (c->state == CONN_BACKEND_TLS) {
		if (c->bssl != NULL && (ready & RELAY_WANT_READ))
			tls_bio_ready(SSL_get_rbio(c->bssl), ready & RELAY_HUP,
			    ready & RELAY_TROUBLE);
		if (c->bssl != NULL && (ready & c->bhs_want))
			conn_backend_handshake(c);
	} else if (c->state == CONN_RELAYING) {
		relay_ready(&c->relay, RELAY_BACKEND, ready);
		conn_relay(c);
	}
}

/* conn_send_tickets sends the session tickets BoringSSL held back, once
 * nothing else has taken them to the client within CONN_TICKET_HOLD_MS,
 * then re-arms the timer for the state's own deadline. */
static void
conn_send_tickets(struct conn *c)
{
	uint64_t now = clock_mono_ms();

	c->tickets_due_ms = 0;
	if (c->state == CONN_RELAYING) {
		c->relay.hold_post_handshake = 0;
		c->last_active_ns = clock_mono_ns();
		conn_arm(c, c->gen->idle_timeout_ms);
		conn_relay(c);
		return;
	}
	/* Still connecting: the relay has not started, write directly. A
	 * failure shows again on the relay's first write. */
	if (SSL_write(c->ssl, "", 0) < 0)
		ERR_clear_error();
	tls_bio_flush(SSL_get_wbio(c->ssl));
	conn_arm(c, c->backend_deadline_ms > now ? c->backend_deadline_ms - now :
	    0);
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	uint64_t idle_ms;

	(void)fd;
	(void)what;
	if (c->tickets_due_ms != 0 && clock_mono_ms() >= c->tickets_due_ms) {
		conn_send_tickets(c);
		return;
	}
	switch (c->state) {
	case CONN_HANDSHAKE:
		stat_add(&c->w->stats->hs_fail[STAT_HS_TIMEOUT], 1);
		c->timed_out = 1;
		conn_close(c, "handshake timeout");
		return;
	case CONN_ECH_WAIT:
		c->timed_out = 1;
		conn_close(c, "ECH rejected: the client sent nothing (idle "
		    "timeout)");
		return;
	case CONN_CONNECTING:
	case CONN_BACKEND_TLS:
		if (clock_mono_ms() < c->backend_deadline_ms) {
			/* Woken for the tickets (the timer may fire a little
			 * before they are due by our clock): the backend still
			 * has time left. */
			conn_arm(c, c->backend_deadline_ms - clock_mono_ms());
			return;
		}
		if (c->state == CONN_CONNECTING) {
			conn_backend_failed(c, "connect timeout");
			return;
		}
		conn_backend_tls_failed(c, BACKEND_TLS_FAIL_TIMEOUT,
		    "backend tls: handshake timeout");
		return;
	case CONN_RELAYING:
		/* Activity only stamps |last_active_ns|; the timer checks it
		 * instead of being re-armed on every read. */
		idle_ms = (clock_mono_ns() - c->last_active_ns) / 1000000;
		if (idle_ms >= c->gen->idle_timeout_ms) {
			c->timed_out = 1;
			conn_close(c, "idle timeout");
			return;
		}
		conn_arm(c, c->gen->idle_timeout_ms - idle_ms);
		return;
	}
}

/* conn_parse_sni extracts the host_name from a server_name extension. */
static char *
conn_parse_sni(const SSL_CLIENT_HELLO *hello)
{
	const uint8_t *data;
	size_t len;
	CBS ext, list, name;
	uint8_t type;

	if (!SSL_early_callback_ctx_extension_get(hello,
	    TLSEXT_TYPE_server_name, &data, &len))
		return NULL;
	CBS_init(&ext, data, len);
	if (!CBS_get_u16_length_prefixed(&ext, &list))
		return NULL;
	while (CBS_len(&list) > 0) {
		if (!CBS_get_u8(&list, &type) ||
		    !CBS_get_u16_length_prefixed(&list, &name))
			return NULL;
		if (type != TLSEXT_NAMETYPE_host_name || CBS_len(&name) == 0 ||
		    CBS_len(&name) > 255)
			continue;
		/* Only host-name characters reach logs and lookups. */
		for (size_t i = 0; i < CBS_len(&name); i++) {
			uint8_t ch = CBS_data(&name)[i];

			if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
			    ch == '_'))
				return strdup("(invalid)");
		}
		return strndup((const char *)CBS_data(&name), CBS_len(&name));
	}
	return NULL;
}

/* conn_ech_outcome tells an ECH that BoringSSL decrypted from one it
 * could not: a stale or unknown config, or GREASE, which looks the same
 * from here. */
static uint8_t
conn_ech_outcome(const SSL_CLIENT_HELLO *hello)
{
	const uint8_t *data;
	size_t len;

	if (SSL_ech_accepted(hello->ssl))
		return STAT_ECH_ACCEPTED;
	if (SSL_early_callback_ctx_extension_get(hello,
	    TLSEXT_TYPE_encrypted_client_hello, &data, &len))
		return STAT_ECH_REJECTED;
	return STAT_ECH_NONE;
}

enum ssl_select_cert_result_t
conn_select_cert(const SSL_CLIENT_HELLO *hello)
{
	struct conn *c = SSL_get_app_data(hello->ssl);
	const struct tls_ctx *t;
	const uint8_t *ext;
	size_t ext_len;

	if (c == NULL)
		return ssl_select_cert_success;
	/* With ECH accepted, |hello| is the inner ClientHello: it decides the
	 * name, the context and everything after. */
	if (c->lc->ech_front != NULL)
		c->ech = conn_ech_outcome(hello);
	free(c->sni);
	c->sni = conn_parse_sni(hello);
	/* tls-alpn-01: the CA's validator gets the challenge certificate for
	 * a name being validated, and acme-tls/1 gets nothing else. */
	switch (acme_challenge_hello(hello, c->sni)) {
	case ACME_HELLO_ANSWER:
		c->acme_challenge = 1;
		return ssl_select_cert_success;
	case ACME_HELLO_REFUSE:
		c->sni_refused = 1;
		return ssl_select_cert_success;
	case ACME_HELLO_NONE:
		break;
	}
	/* The table belongs to the generation the connection was accepted
	 * under, so a reload never changes a handshake in flight. */
	t = sni_lookup(c->lc->sni, c->sni);
	if (t == NULL) {
		t = c->lc->context;
		/* The alert goes out from conn_servername, which BoringSSL
		 * lets choose it. */
		c->sni_refused = (uint8_t)c->lc->sni_strict;
	}
	/* An ECH listener's default context is its own build of it. */
	if (t->cc == c->lc->context->cc)
		t = c->lc->context;
	c->tls = t;
	if (tls_ctx_apply(t, c->lc->context, hello) != 0)
		return ssl_select_cert_error;
	/* Until its first certificate is issued, an ACME context refuses
	 * its names rather than serve a placeholder. */
	if (t->acme != NULL && acme_slot_apply(t->acme, hello->ssl,
	    SSL_early_callback_ctx_extension_get(hello,
	    TLSEXT_TYPE_status_request, &ext, &ext_len)) != 0)
		c->sni_refused = 1;
	return ssl_select_cert_success;
}

static void
conn_store_done(SSL_SESSION *session, void *arg)
{
	struct conn *c = arg;

	c->lookup = NULL;
	c->looked_up = session;
	c->lookup_done = 1;
	stat_add(&c->w->stats->store_lookups, 1);
	stat_add(&c->w->stats->store_lookup_us, (clock_mono_ns() -
	    c->lookup_ns) / 1000);
	conn_handshake(c);
}

void
conn_store_put(SSL *ssl, SSL_SESSION *session)
{
	struct conn *c = SSL_get_app_data(ssl);

	if (c != NULL)
		session_store_put(c->w->store, session);
}

SSL_SESSION *
conn_store_get(SSL *ssl, const uint8_t *id, size_t id_len)
{
	struct conn *c = SSL_get_app_data(ssl);
	SSL_SESSION *session;

	if (c == NULL || c->w->store == NULL)
		return NULL;
	if (c->lookup_done) {
		/* BoringSSL asks again once the lookup finished. */
		session = c->looked_up;
		c->looked_up = NULL;
		c->lookup_done = 0;
		return session;
	}
	c->lookup_ns = clock_mono_ns();
	c->lookup = session_store_lookup(c->w->store, SSL_get_SSL_CTX(ssl), id,
	    id_len, conn_store_done, c);
	return c->lookup != NULL ? SSL_magic_pending_session_ptr() : NULL;
}

int
conn_servername(SSL *ssl, int *out_alert, void *arg)
{
	struct conn *c = SSL_get_app_data(ssl);

	(void)arg;
	if (c != NULL && c->sni_refused) {
		*out_alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* conn_info records the fatal alert a failed handshake sent, for
 * conn_handshake to name when BoringSSL names no error. */
static void
conn_info(const SSL *ssl, int type, int value)
{
	struct conn *c = SSL_get_app_data(ssl);

	if (c != NULL && (type & SSL_CB_WRITE_ALERT) &&
	    (value >> 8) == SSL3_AL_FATAL)
		c->alert_sent = value;
}

void
conn_start(struct worker *w, struct listener *l, struct generation *gen,
    const struct listener_conf *lc, int fd, const struct sockaddr *peer,
    socklen_t peer_len, const struct peer_ref *ref)
{
	struct daemon *d = w->d;
	struct conn *c = calloc(1, sizeof(*c));
	BIO *bio;

	if (c == NULL ||
	    (c->ssl = SSL_new(tls_ctx_default(lc->context))) == NULL) {
		struct peer_ref r = *ref;

		log_msg(LOGL_ERROR, "out of memory accepting a connection");
		peer_release(d->peers, &r);
		free(c);
		close(fd);
		return;
	}
	c->peer_ref = *ref;
	c->w = w;
	c->listener = l;
	c->gen = gen;
	generation_ref(gen);
	c->lc = lc;
	c->id = atomic_fetch_add_explicit(&d->next_conn_id, 1,
	    memory_order_relaxed);
	c->state = CONN_HANDSHAKE;
	c->cfd = fd;
	c->bfd = -1;
	c->start_ns = clock_mono_ns();
	memcpy(&c->peer, peer, peer_len);
	c->peer_len = peer_len;
	atomic_fetch_add_explicit(&l->num_conns, 1, memory_order_relaxed);
	stat_add(&w->stats->accepted[lc->stat_slot], 1);
	conn_link(w, c);

	conn_watch(c, RELAY_CLIENT, fd, conn_client_cb);
	evtimer_assign(&c->timer, w->base, conn_timer_cb, c);

	SSL_set_app_data(c->ssl, c);
	SSL_set_info_callback(c->ssl, conn_info);
	/* Certificates and keys are not needed after the handshake: shedding
	 * them keeps idle connections small. */
	SSL_set_shed_handshake_config(c->ssl, 1);
	SSL_set_accept_state(c->ssl);
	if ((bio = tls_bio_new(fd, w->pool)) == NULL) {
		conn_close(c, "out of memory");
		return;
	}
	SSL_set_bio(c->ssl, bio, bio);
	conn_timer(c, gen->handshake_timeout_ms);
	/* The ClientHello has usually arrived with the connection already:
	 * try at once instead of waiting a loop turn for readability. */
	conn_handshake(c);
}

void
conn_close_all(struct worker *w, const char *reason)
{
	while (w->conns != NULL)
		conn_close(w->conns, reason);
}

static void
conn_link(struct worker *w, struct conn *c)
{
	c->prev = NULL;
	c->next = w->conns;
	if (w->conns != NULL)
		w->conns->prev = c;
	w->conns = c;
	w->num_conns++;
	atomic_fetch_add_explicit(&w->d->num_conns, 1, memory_order_relaxed);
}

static void
conn_unlink(struct worker *w, struct conn *c)
{
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	w->num_conns--;
	atomic_fetch_sub_explicit(&w->d->num_conns, 1, memory_order_relaxed);
}
