/* ocsp_fetch.c: one task per stapled certificate: fetch over HTTP with
 * evhttp (GET for short requests, POST otherwise), verify, staple, persist,
 * and refresh at about half the validity window. */
#include "ocsp_fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>
#include <event2/keyvalq_struct.h>
#include <openssl/base64.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "acme_cert.h"
#include "config.h"
#include "generation.h"
#include "log.h"
#include "ocsp.h"
#include "resolver.h"
#include "staple.h"
#include "tls_ctx.h"

/* Retry delays after a failed fetch. */
#define FETCH_BACKOFF_MIN_S 30
#define FETCH_BACKOFF_MAX_S 3600
/* The most a response may be; larger ones are refused. Both caps hold
 * while the answer is read: the connection is dropped at the first byte
 * past them. */
#define FETCH_MAX_RESPONSE 65536
#define FETCH_MAX_HEADERS 65536
/* What may wait unparsed in the connection's input buffer: a whole body
 * with its headers, plus a chunk-size line. evhttp bounds what it has
 * parsed, not a line it is still waiting the end of. */
#define FETCH_MAX_BUFFERED (FETCH_MAX_HEADERS + FETCH_MAX_RESPONSE + 4096)
/* How long a replaced resolver lives on, so that answers it has already
 * queued for delivery arrive while it still exists. */
#define FETCH_RESOLVER_RETIRE_S 1

struct task {
	struct task *next;
	struct ocsp_fetcher *f;
	struct staple_slot *slot;
	X509 *leaf, *issuer;
	char *url;             /* fetched from here, or... */
	char *file;            /* ...read from this file (ocsp = FILE) */
	struct stat file_st;
	char name[160];        /* for logs: context and key type */
	char context[96];      /* for metrics */
	int key_type;
	/* For metrics: the last attempt and the response stapled. */
	int64_t last_attempt, next_refresh, this_update;
	int last_ok;
	int status;            /* enum ocsp_status of the last response, or -1 */
	char cache_path[600];  /* "" without a cache dir */
	uint64_t timeout_ms;
	int staple_revoked;
	struct event *timer;
	struct event *deadline; /* ends a fetch that takes too long */
	struct evhttp_connection *conn;
	char host[256];        /* the responder's, for logs */
	int http_error;        /* enum evhttp_request_error, -1 none */
	int64_t valid_until;   /* of the response stapled, 0 if none */
	int backoff_s;
	int busy;              /* a fetch is under way */
	int must_staple;       /* the certificate asks for a staple */
	int must_staple_strict;
	int seen;              /* still wanted after the last sync */
};

/* A resolver replaced by a reload, freed a little later. */
struct retired_dns {
	struct retired_dns *next;
	struct evdns_base *dns;
};

struct ocsp_fetcher {
	struct event_base *base;
	struct task *tasks;
	struct evdns_base *dns;    /* looks up the responders' names */
	char *dns_setting;         /* the [global] resolver it was made from */
	uint64_t dns_timeout_ms;
	struct retired_dns *retired;
	struct event *retire_ev;
};

static void task_fetch(struct task *t);

static void
task_schedule(struct task *t, int64_t delay_s)
{
	struct timeval tv = { (time_t)(delay_s < 0 ? 0 : delay_s), 0 };

	t->next_refresh = (int64_t)time(NULL) + delay_s;
	evtimer_add(t->timer, &tv);
}

/* How often an ocsp file is checked for a new response. */
#define FILE_POLL_S 1

/* task_watch_file takes a changed ocsp file's response once it passes
 * the same checks as at load; a bad one is logged and the staple kept. */
static void
task_watch_file(struct task *t)
{
	uint8_t buf[FETCH_MAX_RESPONSE];
	struct ocsp_result r;
	struct stat st;
	char err[256];
	ssize_t n = -1;
	int fd;

	task_schedule(t, FILE_POLL_S);
	if (stat(t->file, &st) != 0 ||
	    (st.st_mtim.tv_sec == t->file_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == t->file_st.st_mtim.tv_nsec &&
	    st.st_size == t->file_st.st_size && st.st_ino == t->file_st.st_ino))
		return;
	t->file_st = st;
	if ((fd = open(t->file, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(fd, buf, sizeof(buf));
		close(fd);
	}
	if (n <= 0 || ocsp_check(buf, (size_t)n, t->leaf, t->issuer,
	    (int64_t)time(NULL), &r, err, sizeof(err)) != 0) {
		log_msg(LOGL_WARNING, "ocsp %s: '%s' changed but cannot be "
		    "stapled (%s); keeping the response in use", t->name,
		    t->file, n <= 0 ? "unreadable" : err);
		return;
	}
	if (r.status == OCSP_UNKNOWN)
		return;
	t->status = (int)r.status;
	t->this_update = r.this_update;
	t->last_attempt = (int64_t)time(NULL);
	t->last_ok = 1;
	if (r.status == OCSP_GOOD || t->staple_revoked) {
		t->valid_until = r.next_update != 0 ? r.next_update :
		    r.this_update + OCSP_NO_NEXT_UPDATE_VALIDITY;
		staple_set(t->slot, buf, (size_t)n, t->valid_until);
	}
	log_msg(LOGL_INFO, "ocsp %s: new response from '%s'", t->name, t->file);
}

static void
task_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct task *t = arg;

	(void)fd;
	(void)what;
	if (t->file != NULL)
		task_watch_file(t);
	else
		task_fetch(t);
}

/* task_time formats a Unix time for the log, in UTC. */
static const char *
task_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
	return buf;
}

/* task_accept staples a verified response and plans the refresh: at half
 * the validity window, with jitter so a fleet does not fetch in step. */
static void
task_accept(struct task *t, const uint8_t *der, size_t len,
    const struct ocsp_result *r, const char *source)
{
	int64_t now = (int64_t)time(NULL);
	int64_t until = r->next_update != 0 ? r->next_update :
	    r->this_update + OCSP_NO_NEXT_UPDATE_VALIDITY;
	int64_t half = (until - now) / 2;
	uint32_t jitter;
	char tu[32], nu[32];

	t->last_attempt = now;
	t->last_ok = 1;
	t->status = (int)r->status;
	t->this_update = r->this_update;
	if (r->status == OCSP_UNKNOWN) {
		log_msg(LOGL_WARNING, "ocsp %s: responder does not know the "
		    "certificate; not stapling", t->name);
		return;
	}
	if (r->status == OCSP_REVOKED)
		log_msg(LOGL_ERROR, "ocsp %s: the certificate is REVOKED%s",
		    t->name, t->staple_revoked ? "; stapling it anyway" :
		    "; not stapling (ocsp_staple_revoked = no)");
	if (r->status == OCSP_GOOD || t->staple_revoked) {
		staple_set(t->slot, der, len, until);
		t->valid_until = until;
	}
	RAND_bytes((uint8_t *)&jitter, sizeof(jitter));
	if (half > 10)
		half -= (int64_t)(jitter % (uint32_t)(half / 10 + 1));
	log_msg(LOGL_INFO, "ocsp %s: %s response from %s, thisUpdate %s, "
	    "valid until %s; next refresh in %llds", t->name,
	    r->status == OCSP_GOOD ? "good" : r->status == OCSP_REVOKED ?
	    "revoked" : "unknown", source, task_time(r->this_update, tu,
	    sizeof(tu)), task_time(until, nu, sizeof(nu)), (long long)half);
	t->backoff_s = 0;
	task_schedule(t, half);
}

int
ocsp_fetch_save(const char *path, const uint8_t *der, size_t der_len)
{
	char tmp[PATH_MAX];
	size_t done = 0;
	int fd, err = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0640)) < 0)
		return -1;
	while (err == 0 && done < der_len) {
		ssize_t n = write(fd, der + done, der_len - done);

		if (n > 0)
			done += (size_t)n;
		else if (n < 0 && errno != EINTR)
			err = errno;
		else if (n == 0)
			err = EIO;
	}
	if (err == 0 && fsync(fd) != 0)
		err = errno;
	/* One close whatever happens: the descriptor is gone even when
	 * close() fails, and closing its number again could close what
	 * another thread has opened since (a worker's new connection). */
	if (close(fd) != 0 && err == 0)
		err = errno;
	if (err == 0 && rename(tmp, path) != 0)
		err = errno;
	if (err == 0)
		return 0;
	unlink(tmp);
	errno = err;
	return -1;
}

/* task_persist keeps the response so that a restart can staple at once,
 * even with the responder down. */
static void
task_persist(struct task *t, const uint8_t *der, size_t len)
{
	if (t->cache_path[0] == '\0')
		return;
	if (ocsp_fetch_save(t->cache_path, der, len) != 0)
		log_msg(LOGL_WARNING, "ocsp %s: cannot write '%s': %s", t->name,
		    t->cache_path, strerror(errno));
}

static void
task_failed(struct task *t, const char *why)
{
	int64_t now = (int64_t)time(NULL);
	int64_t delay;

	t->busy = 0;
	t->last_attempt = now;
	t->last_ok = 0;
	t->backoff_s = t->backoff_s == 0 ? FETCH_BACKOFF_MIN_S :
	    t->backoff_s * 2;
	if (t->backoff_s > FETCH_BACKOFF_MAX_S)
		t->backoff_s = FETCH_BACKOFF_MAX_S;
	delay = t->backoff_s;
	/* Retry before the stapled response runs out, not after. */
	if (t->valid_until > now && t->valid_until - now < delay)
		delay = (t->valid_until - now) / 2;
	log_msg(LOGL_WARNING, "ocsp %s: %s; %s; retrying in %llds", t->name, why,
	    t->valid_until > now ? "keeping the response stapled until it "
	    "expires" : "nothing stapled", (long long)delay);
	if (t->must_staple && t->valid_until <= now)
		log_msg(t->must_staple_strict ? LOGL_ERROR : LOGL_WARNING,
		    "ocsp %s: the certificate is must-staple and has no valid "
		    "response: clients that enforce it refuse the handshake",
		    t->name);
	task_schedule(t, delay);
}

/* task_stop ends the fetch under way, if any, and drops the connection.
 * A name lookup still running is left to finish: its answer, or the
 * failure evdns_base_free gives it, then only releases the connection's
 * buffer. Cancelling it instead would leave the resolver a callback to
 * deliver later, into a resolver that may be freed by then. */
static void
task_stop(struct task *t)
{
	if (t->conn != NULL)
		evhttp_connection_free(t->conn);
	t->conn = NULL;
	if (t->deadline != NULL)
		evtimer_del(t->deadline);
	t->busy = 0;
}

static void
task_error_cb(enum evhttp_request_error error, void *arg)
{
	struct task *t = arg;

	t->http_error = (int)error;
}

/* task_why says why a fetch ended without an HTTP response. */
static void
task_why(const struct task *t, char *why, size_t len)
{
	struct bufferevent *bev = t->conn != NULL ?
	    evhttp_connection_get_bufferevent(t->conn) : NULL;
	int dns = bev != NULL ? bufferevent_socket_get_dns_error(bev) : 0;

	if (dns != 0)
		snprintf(why, len, "cannot resolve the responder host '%s' "
		    "of %s: %s", t->host, t->url, evutil_gai_strerror(dns));
	else if (t->http_error == EVREQ_HTTP_DATA_TOO_LONG)
		snprintf(why, len, "%s: response body malformed or over %d "
		    "bytes; not read further", t->url, FETCH_MAX_RESPONSE);
	else if (t->http_error == EVREQ_HTTP_INVALID_HEADER)
		snprintf(why, len, "%s: malformed response, or its headers "
		    "over %d bytes; not read further", t->url,
		    FETCH_MAX_HEADERS);
	else
		snprintf(why, len, "no answer from the responder");
}

static void
task_response_cb(struct evhttp_request *req, void *arg)
{
	struct task *t = arg;
	struct evbuffer *body;
	struct ocsp_result r;
	char err[256], why[1024];
	uint8_t *der;
	size_t len;

	t->busy = 0;
	evtimer_del(t->deadline);
	if (req == NULL || evhttp_request_get_response_code(req) == 0) {
		task_why(t, why, sizeof(why));
		task_failed(t, why);
		return;
	}
	if (evhttp_request_get_response_code(req) != 200) {
		snprintf(why, sizeof(why), "responder answered HTTP %d",
		    evhttp_request_get_response_code(req));
		task_failed(t, why);
		return;
	}
	body = evhttp_request_get_input_buffer(req);
	len = evbuffer_get_length(body);
	if (len == 0 || len > FETCH_MAX_RESPONSE) {
		task_failed(t, "empty or oversized response");
		return;
	}
	der = evbuffer_pullup(body, (ssize_t)len);
	if (ocsp_check(der, len, t->leaf, t->issuer, (int64_t)time(NULL), &r,
	    err, sizeof(err)) != 0) {
		snprintf(why, sizeof(why), "response rejected: %s", err);
		task_failed(t, why);
		return;
	}
	task_persist(t, der, len);
	task_accept(t, der, len, &r, t->url);
}

/* task_deadline_cb ends a fetch that outlived its time: the name lookup,
 * then ocsp_timeout. evhttp's own timeout restarts with every read, so a
 * responder sending a byte at a time, or a stalled input buffer, would
 * otherwise keep the fetch, and its retry, waiting for ever. */
static void
task_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct task *t = arg;
	char why[1024];

	(void)fd;
	(void)what;
	snprintf(why, sizeof(why), "%s: no complete response in time",
	    t->url);
	task_stop(t);
	task_failed(t, why);
}

/* task_connect makes the connection for a fetch from |host|:|port|:
 * names resolved by the fetcher's resolver, never by a blocking
 * getaddrinfo on the control thread, and every byte read bounded. */
static struct evhttp_connection *
task_connect(struct task *t, const char *host, int port)
{
	struct bufferevent *bev;
	struct evhttp_connection *conn;

	/* The buffer owns the socket: a connection freed while its name is
	 * looked up may still connect once the answer comes, and its socket
	 * must go with the buffer then. */
	bev = bufferevent_socket_new(t->f->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		return NULL;
	conn = evhttp_connection_base_bufferevent_new(t->f->base, t->f->dns,
	    bev, host, (unsigned short)port);
	if (conn == NULL) {
		bufferevent_free(bev);
		return NULL;
	}
	bufferevent_setwatermark(bev, EV_READ, 0, FETCH_MAX_BUFFERED);
	evhttp_connection_set_max_headers_size(conn, FETCH_MAX_HEADERS);
	evhttp_connection_set_max_body_size(conn, FETCH_MAX_RESPONSE);
	evhttp_connection_set_timeout(conn, (int)((t->timeout_ms + 999) /
	    1000));
	return conn;
}

/* task_fetch sends the request: GET with the request in the path when it
 * is short (RFC 6960, appendix A), else POST. */
static void
task_fetch(struct task *t)
{
	struct evhttp_uri *uri;
	struct evhttp_request *req = NULL;
	char target[1024], b64[512];
	const char *host, *path;
	uint8_t *der = NULL;
	size_t der_len, b64_len;
	uint64_t wait_ms;
	struct timeval tv;
	int port, rc;

	/* The fetch under way plans the next one when it ends. */
	if (t->busy)
		return;
	t->busy = 1;
	t->http_error = -1;
	uri = evhttp_uri_parse(t->url);
	if (uri == NULL || (host = evhttp_uri_get_host(uri)) == NULL ||
	    ocsp_request(t->leaf, t->issuer, &der, &der_len) != 0) {
		if (uri != NULL)
			evhttp_uri_free(uri);
		task_failed(t, "bad responder URL");
		return;
	}
	snprintf(t->host, sizeof(t->host), "%s", host);
	port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
	path = evhttp_uri_get_path(uri);
	if (path == NULL || path[0] == '\0')
		path = "/";
	if (t->conn != NULL)
		evhttp_connection_free(t->conn);
	t->conn = t->f->dns != NULL ? task_connect(t, host, port) : NULL;
	if (t->conn != NULL)
		req = evhttp_request_new(task_response_cb, t);
	if (req == NULL) {
		evhttp_uri_free(uri);
		OPENSSL_free(der);
		task_failed(t, t->f->dns == NULL ? "no DNS resolver to look up "
		    "the responder" : "out of memory");
		return;
	}
	evhttp_request_set_error_cb(req, task_error_cb);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Host", host);
	EVP_EncodedLength(&b64_len, der_len);
	if (b64_len < 255 && b64_len <= sizeof(b64)) {
		char *p, *q;

		EVP_EncodeBlock((uint8_t *)b64, der, der_len);
		/* URL-encode the base64 characters that need it. */
		p = target + snprintf(target, sizeof(target), "%s%s", path,
		    path[strlen(path) - 1] == '/' ? "" : "/");
		for (q = b64; *q != '\0' && p < target + sizeof(target) - 4; q++)
			p += *q == '+' ? sprintf(p, "%%2B") : *q == '/' ?
			    sprintf(p, "%%2F") : *q == '=' ? sprintf(p, "%%3D") :
			    sprintf(p, "%c", *q);
		rc = evhttp_make_request(t->conn, req, EVHTTP_REQ_GET, target);
	} else {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Content-Type", "application/ocsp-request");
		evbuffer_add(evhttp_request_get_output_buffer(req), der, der_len);
		rc = evhttp_make_request(t->conn, req, EVHTTP_REQ_POST, path);
	}
	OPENSSL_free(der);
	evhttp_uri_free(uri);
	if (rc != 0) {
		task_failed(t, "cannot send the request");
		return;
	}
	/* The resolver gives up on its own first; see task_deadline_cb. */
	wait_ms = resolver_wait_ms(t->f->dns_timeout_ms) + t->timeout_ms +
	    1000;
	tv.tv_sec = (time_t)(wait_ms / 1000);
	tv.tv_usec = (suseconds_t)(wait_ms % 1000) * 1000;
	evtimer_add(t->deadline, &tv);
}

/* task_load_cache staples a persisted response that is still valid. */
static int
task_load_cache(struct task *t)
{
	uint8_t buf[FETCH_MAX_RESPONSE];
	struct ocsp_result r;
	char err[256];
	ssize_t n;
	int fd;

	if (t->cache_path[0] == '\0' ||
	    (fd = open(t->cache_path, O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n <= 0 || ocsp_check(buf, (size_t)n, t->leaf, t->issuer,
	    (int64_t)time(NULL), &r, err, sizeof(err)) != 0)
		return -1;
	task_accept(t, buf, (size_t)n, &r, "the cache");
	return 0;
}

/* task_load_staple plans the refresh from the response the slot holds
 * already, one handed over by the process this one took over from: it is
 * as good as a cached one, and fetching at once would ask the responder
 * for every certificate at each upgrade. */
static int
task_load_staple(struct task *t)
{
	uint8_t buf[FETCH_MAX_RESPONSE];
	struct ocsp_result r;
	char err[256];
	size_t n;

	/* task_accept plans nothing for an unknown status: fetch then. */
	if ((n = staple_copy(t->slot, buf, sizeof(buf))) == 0 ||
	    ocsp_check(buf, n, t->leaf, t->issuer, (int64_t)time(NULL), &r,
	    err, sizeof(err)) != 0 || r.status == OCSP_UNKNOWN)
		return -1;
	task_accept(t, buf, n, &r, "the staple in place");
	return 0;
}

static void
task_free(struct task *t)
{
	task_stop(t);
	if (t->timer != NULL)
		event_free(t->timer);
	if (t->deadline != NULL)
		event_free(t->deadline);
	X509_free(t->leaf);
	X509_free(t->issuer);
	staple_slot_unref(t->slot);
	free(t->url);
	free(t->file);
	free(t);
}

static void
task_names(struct task *t, const struct tls_ctx *tc, int k)
{
	snprintf(t->name, sizeof(t->name), "context '%s' (%s certificate)",
	    tc->name, k == TLS_KEY_RSA ? "RSA" : "ECDSA");
	snprintf(t->context, sizeof(t->context), "%s", tc->name);
	t->key_type = k;
	t->status = -1;
}

static struct task *
fetcher_find(struct ocsp_fetcher *f, struct staple_slot *slot,
    const char *url, const char *file)
{
	for (struct task *t = f->tasks; t != NULL; t = t->next) {
		if (t->slot != slot)
			continue;
		if (url != NULL && t->url != NULL && strcmp(t->url, url) == 0)
			return t;
		if (file != NULL && t->file != NULL && strcmp(t->file, file) == 0)
			return t;
	}
	return NULL;
}

/* fetcher_watch follows an ocsp file for one certificate. */
static void
fetcher_watch(struct ocsp_fetcher *f, const struct tls_ctx *tc, int k,
    const struct conf_global *gl)
{
	const char *file = tc->cc->ocsp;
	struct task *t = fetcher_find(f, tc->staple[k], NULL, file);

	if (t != NULL) {
		t->seen = 1;
		/* The reload read the file already. */
		stat(file, &t->file_st);
		t->valid_until = tc->ocsp_expires[k];
		return;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL ||
	    (t->file = strdup(file)) == NULL) {
		free(t);
		return;
	}
	t->f = f;
	/* The slot must outlive the generation that named it. */
	t->slot = staple_slot_ref(tc->staple[k]);
	X509_up_ref(tc->leaf[k]);
	X509_up_ref(tc->issuer[k]);
	t->leaf = tc->leaf[k];
	t->issuer = tc->issuer[k];
	t->staple_revoked = (int)gl->ocsp_staple_revoked;
	t->seen = 1;
	task_names(t, tc, k);
	t->valid_until = tc->ocsp_expires[k];
	stat(file, &t->file_st);
	t->timer = evtimer_new(f->base, task_timer_cb, t);
	t->next = f->tasks;
	f->tasks = t;
	task_schedule(t, FILE_POLL_S);
}

/* What one certificate to fetch for needs: borrowed, the task takes its
 * own references. */
struct want {
	struct staple_slot *slot;
	const char *url;
	X509 *leaf, *issuer;
	const struct tls_ctx *tc;
	int k;
};

static void
fetcher_want(struct ocsp_fetcher *f, const struct want *w,
    const struct conf_global *gl)
{
	struct task *t = fetcher_find(f, w->slot, w->url, NULL);
	char hex[65];
	uint8_t hash[32];
	unsigned hlen;

	if (t != NULL) {
		t->seen = 1;
		t->staple_revoked = (int)gl->ocsp_staple_revoked;
		t->timeout_ms = gl->ocsp_timeout_ms;
		/* A reload is a good moment to retry what has nothing
		 * stapled, instead of waiting out the backoff. */
		if (t->valid_until <= (int64_t)time(NULL) && !t->busy) {
			t->backoff_s = 0;
			task_schedule(t, 0);
		}
		return;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL ||
	    (t->url = strdup(w->url)) == NULL) {
		free(t);
		return;
	}
	t->f = f;
	/* The slot must outlive the generation that named it. */
	t->slot = staple_slot_ref(w->slot);
	t->leaf = X509_up_ref(w->leaf) ? w->leaf : NULL;
	t->issuer = X509_up_ref(w->issuer) ? w->issuer : NULL;
	t->staple_revoked = (int)gl->ocsp_staple_revoked;
	t->timeout_ms = gl->ocsp_timeout_ms;
	t->must_staple = t->leaf != NULL && ocsp_must_staple(t->leaf);
	t->must_staple_strict = (int)gl->ocsp_must_staple_strict;
	t->seen = 1;
	task_names(t, w->tc, w->k);
	if (gl->ocsp_cache_dir != NULL &&
	    X509_digest(t->leaf, EVP_sha256(), hash, &hlen) == 1) {
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", hash[i]);
		snprintf(t->cache_path, sizeof(t->cache_path), "%s/%s.der",
		    gl->ocsp_cache_dir, hex);
	}
	t->timer = evtimer_new(f->base, task_timer_cb, t);
	t->deadline = evtimer_new(f->base, task_deadline_cb, t);
	t->http_error = -1;
	t->next = f->tasks;
	f->tasks = t;
	if (task_load_cache(t) != 0 && task_load_staple(t) != 0)
		task_schedule(t, 0);
}

static void
fetcher_free_retired(struct ocsp_fetcher *f)
{
	while (f->retired != NULL) {
		struct retired_dns *r = f->retired;

		f->retired = r->next;
		/* Lookups still waiting fail now; each failure only releases
		 * the buffer of a connection already freed. */
		evdns_base_free(r->dns, 1);
		free(r);
	}
}

static void
fetcher_retire_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	fetcher_free_retired(arg);
}

/* fetcher_dns_setting returns [global] resolver and resolver_timeout as
 * one string, to tell whether a reload changed them. */
static char *
fetcher_dns_setting(const struct conf_global *gl)
{
	size_t len = 32;
	char *s, *p;

	for (size_t i = 0; i < gl->resolver.num; i++)
		len += strlen(gl->resolver.v[i]) + 1;
	if ((s = malloc(len)) == NULL)
		return NULL;
	p = s + sprintf(s, "%llu", (unsigned long long)gl->resolver_timeout_ms);
	for (size_t i = 0; i < gl->resolver.num; i++)
		p += sprintf(p, " %s", gl->resolver.v[i]);
	return s;
}

/* fetcher_resolver makes the resolver follow [global] resolver and
 * resolver_timeout. A replaced one is retired: the connections made with
 * it go first (a fetch under way starts again with the new one), and it
 * is freed a little later, once the answers it has already queued for
 * delivery have arrived. */
static void
fetcher_resolver(struct ocsp_fetcher *f, const struct conf_global *gl)
{
	struct timeval tv = { FETCH_RESOLVER_RETIRE_S, 0 };
	char *setting = fetcher_dns_setting(gl);
	struct retired_dns *r = NULL;
	struct evdns_base *dns;

	if (setting == NULL ||
	    (f->dns != NULL && strcmp(setting, f->dns_setting) == 0) ||
	    (f->dns != NULL && (r = calloc(1, sizeof(*r))) == NULL)) {
		free(setting);
		return;
	}
	if ((dns = resolver_new(f->base, &gl->resolver,
	    gl->resolver_timeout_ms)) == NULL) {
		log_msg(LOGL_ERROR, "ocsp: cannot start the DNS resolver%s",
		    f->dns != NULL ? "; keeping the previous one" : "");
		free(r);
		free(setting);
		return;
	}
	if (f->dns != NULL) {
		for (struct task *t = f->tasks; t != NULL; t = t->next) {
			int busy = t->busy;

			task_stop(t);
			if (busy)
				task_schedule(t, 0);
		}
		r->dns = f->dns;
		r->next = f->retired;
		f->retired = r;
		evtimer_add(f->retire_ev, &tv);
	}
	f->dns = dns;
	free(f->dns_setting);
	f->dns_setting = setting;
	f->dns_timeout_ms = gl->resolver_timeout_ms;
}

struct ocsp_fetcher *
ocsp_fetcher_new(struct event_base *base)
{
	struct ocsp_fetcher *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return NULL;
	f->base = base;
	if ((f->retire_ev = evtimer_new(base, fetcher_retire_cb, f)) == NULL) {
		free(f);
		return NULL;
	}
	return f;
}

void
ocsp_fetcher_sync(struct ocsp_fetcher *f, const struct generation *g)
{
	const struct conf_global *gl = &g->cfg->global;
	struct task **p;

	if (f == NULL)
		return;
	fetcher_resolver(f, gl);
	for (struct task *t = f->tasks; t != NULL; t = t->next)
		t->seen = 0;
	for (size_t i = 0; i < g->shared.num_contexts; i++) {
		const struct tls_ctx *tc = &g->shared.contexts[i];

		for (int k = 0; k < TLS_KEY_NUM; k++) {
			struct want w = { tc->staple[k], tc->ocsp_url[k],
				tc->leaf[k], tc->issuer[k], tc, k };

			if (tc->ocsp_url[k] != NULL && tc->issuer[k] != NULL)
				fetcher_want(f, &w, gl);
			else if (tc->ocsp_der[k] != NULL && tc->issuer[k] != NULL)
				fetcher_watch(f, tc, k, gl);
		}
		/* An ACME context: its certificate in service, which the
		 * ACME side replaces (it asks for a sync when it does). */
		if (tc->acme != NULL && (tc->cc->ocsp == NULL ||
		    strcmp(tc->cc->ocsp, "off") != 0)) {
			struct want w = { NULL, NULL, NULL, NULL, tc,
				tc->ctx[TLS_KEY_RSA] != NULL ? TLS_KEY_RSA :
				TLS_KEY_ECDSA };
			char *url;

			if (acme_slot_ocsp(tc->acme, &w.slot, &w.leaf, &w.issuer,
			    &url) == 0) {
				w.url = url;
				fetcher_want(f, &w, gl);
				staple_slot_unref(w.slot);
				X509_free(w.leaf);
				X509_free(w.issuer);
				free(url);
			}
		}
	}
	for (p = &f->tasks; *p != NULL;) {
		struct task *t = *p;

		if (t->seen) {
			p = &t->next;
			continue;
		}
		*p = t->next;
		task_free(t);
	}
}

size_t
ocsp_fetcher_refresh(struct ocsp_fetcher *f)
{
	size_t n = 0;

	if (f == NULL)
		return 0;
	for (struct task *t = f->tasks; t != NULL; t = t->next) {
		if (t->url != NULL && !t->busy) {
			task_schedule(t, 0);
			n++;
		}
	}
	return n;
}

void
ocsp_fetcher_foreach(const struct ocsp_fetcher *f,
    void (*cb)(const struct ocsp_task_status *, void *), void *arg)
{
	int64_t now = (int64_t)time(NULL);

	if (f == NULL)
		return;
	for (const struct task *t = f->tasks; t != NULL; t = t->next) {
		struct ocsp_task_status st = {
			.context = t->context,
			.key_type = t->key_type,
			.source = t->url != NULL ? t->url : t->file,
			.stapled = t->valid_until > now,
			.status = t->status,
			.this_update = t->this_update,
			.valid_until = t->valid_until,
			.last_attempt = t->last_attempt,
			.last_ok = t->last_ok,
			.next_refresh = t->next_refresh,
		};

		cb(&st, arg);
	}
}

void
ocsp_fetcher_free(struct ocsp_fetcher *f)
{
	if (f == NULL)
		return;
	while (f->tasks != NULL) {
		struct task *t = f->tasks;

		f->tasks = t->next;
		task_free(t);
	}
	event_free(f->retire_ev);
	if (f->dns != NULL || f->retired != NULL) {
		/* Answers a resolver has queued for delivery must arrive
		 * while it exists, and the failures evdns_base_free gives the
		 * lookups still waiting must arrive at all: each releases the
		 * buffer of a connection freed above. Hence one pass of the
		 * loop before and one after (see ocsp_fetch.h). */
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		if (f->dns != NULL)
			evdns_base_free(f->dns, 1);
		fetcher_free_retired(f);
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	}
	free(f->dns_setting);
	free(f);
}
