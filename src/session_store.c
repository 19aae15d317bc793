/* session_store.c: sessions in Redis, through hiredis on the worker's
 * libevent loop. */
#include "session_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/mem.h>

#include "addr.h"
#include "log.h"

/* Reconnect backoff bounds. */
#define STORE_BACKOFF_MIN_MS 100
#define STORE_BACKOFF_MAX_MS 5000

struct session_store {
	struct event_base *base;
	char *url;
	char *prefix;
	char host[256];
	unsigned port;
	char *unix_path;
	char *password;
	int db;
	uint64_t timeout_ms, ttl_ms;
	redisAsyncContext *ac;
	int up;         /* connected and selected */
	_Atomic int *gauge; /* mirrors |up| for the metrics, or NULL */
	int was_up;     /* last state logged, so outages log once */
	uint64_t backoff_ms;
	struct event *retry_ev;
};

struct store_lookup {
	struct session_store *s;
	SSL_CTX *ctx;
	void (*done)(SSL_SESSION *, void *);
	void *arg;
	struct event *timer;
	int finished;  /* |done| was called or cancelled */
	int replies;   /* hiredis still holds this as callback data */
};

static void store_connect(struct session_store *s);

/* store_parse_into fills |s| (may be NULL for a check) from |url|. */
static int
store_parse_into(struct session_store *s, const char *url, char *err,
    size_t err_len)
{
	char host[256], pass[256] = "";
	const char *p, *at, *slash;
	unsigned port;
	int db = 0;

	if (strncmp(url, "unix:", 5) == 0) {
		if (url[5] != '/') {
			snprintf(err, err_len, "expected unix:/path, got '%s'", url);
			return -1;
		}
		if (s != NULL && (s->unix_path = strdup(url + 5)) == NULL)
			return -1;
		return 0;
	}
	if (strncmp(url, "redis://", 8) != 0) {
		snprintf(err, err_len, "expected redis://HOST:PORT[/DB] or "
		    "unix:/PATH, got '%s'", url);
		return -1;
	}
	p = url + 8;
	if ((at = strchr(p, '@')) != NULL) {
		const char *colon = memchr(p, ':', (size_t)(at - p));

		if (colon == NULL || (size_t)(at - colon - 1) >= sizeof(pass)) {
			snprintf(err, err_len, "expected redis://:PASSWORD@HOST:PORT");
			return -1;
		}
		memcpy(pass, colon + 1, (size_t)(at - colon - 1));
		pass[at - colon - 1] = '\0';
		p = at + 1;
	}
	if ((slash = strchr(p, '/')) != NULL) {
		char *end;
		long v = strtol(slash + 1, &end, 10);

		if (*end != '\0' || v < 0 || v > 1000 || slash[1] == '\0') {
			snprintf(err, err_len, "expected a database number after "
			    "'/', got '%s'", slash + 1);
			return -1;
		}
		db = (int)v;
	}
	{
		char hp[300];
		size_t n = slash != NULL ? (size_t)(slash - p) : strlen(p);

		if (n >= sizeof(hp)) {
			snprintf(err, err_len, "host too long");
			return -1;
		}
		memcpy(hp, p, n);
		hp[n] = '\0';
		if (addr_split(hp, host, sizeof(host), &port) != 0) {
			snprintf(err, err_len, "expected HOST:PORT in '%s'", url);
			return -1;
		}
	}
	if (s != NULL) {
		snprintf(s->host, sizeof(s->host), "%s", host);
		s->port = port;
		s->db = db;
		if (pass[0] != '\0' && (s->password = strdup(pass)) == NULL)
			return -1;
	}
	OPENSSL_cleanse(pass, sizeof(pass));
	return 0;
}

int
session_store_parse(const char *url, char *err, size_t err_len)
{
	return store_parse_into(NULL, url, err, err_len);
}

static void
store_set_state(struct session_store *s, int up, const char *why)
{
	s->up = up;
	if (s->gauge != NULL)
		atomic_store_explicit(s->gauge, up ? 2 : 1,
		    memory_order_relaxed);
	if (up == s->was_up)
		return;
	s->was_up = up;
	if (up)
		log_msg(LOGL_INFO, "session store %s: connected", s->url);
	else
		log_msg(LOGL_WARNING, "session store %s: unavailable (%s); "
		    "handshakes go on without it", s->url, why);
}

static void
store_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	store_connect(arg);
}

static void
store_schedule_retry(struct session_store *s)
{
	struct timeval tv;

	s->backoff_ms = s->backoff_ms == 0 ? STORE_BACKOFF_MIN_MS :
	    s->backoff_ms * 2;
	if (s->backoff_ms > STORE_BACKOFF_MAX_MS)
		s->backoff_ms = STORE_BACKOFF_MAX_MS;
	tv.tv_sec = (time_t)(s->backoff_ms / 1000);
	tv.tv_usec = (suseconds_t)(s->backoff_ms % 1000) * 1000;
	evtimer_add(s->retry_ev, &tv);
}

static void
store_ready_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct session_store *s = priv;
	redisReply *reply = r;

	(void)ac;
	if (s == NULL || s->ac == NULL)
		return; /* being freed */
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
		log_msg(LOGL_WARNING, "session store %s: %s", s->url,
		    reply != NULL ? reply->str : "no reply to SELECT");
		/* The disconnect callback schedules the retry. */
		redisAsyncDisconnect(s->ac);
		return;
	}
	s->backoff_ms = 0;
	store_set_state(s, 1, NULL);
}

static void
store_connect_cb(const redisAsyncContext *ac, int status)
{
	struct session_store *s = ac->data;

	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback. */
		s->ac = NULL;
		store_set_state(s, 0, ac->errstr);
		store_schedule_retry(s);
		return;
	}
	/* AUTH and SELECT first; the last reply says the link is ready. */
	if (s->password != NULL)
		redisAsyncCommand(s->ac, NULL, NULL, "AUTH %s", s->password);
	redisAsyncCommand(s->ac, store_ready_cb, s, "SELECT %d", s->db);
}

static void
store_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct session_store *s = ac->data;

	(void)status;
	if (s == NULL)
		return; /* store_free disconnected on purpose */
	s->ac = NULL;
	store_set_state(s, 0, ac->err != 0 ? ac->errstr : "connection closed");
	store_schedule_retry(s);
}

static void
store_connect(struct session_store *s)
{
	redisAsyncContext *ac;

	ac = s->unix_path != NULL ? redisAsyncConnectUnix(s->unix_path) :
	    redisAsyncConnect(s->host, (int)s->port);
	if (ac == NULL || ac->err != 0) {
		store_set_state(s, 0, ac != NULL ? ac->errstr : "out of memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		store_schedule_retry(s);
		return;
	}
	ac->data = s;
	if (redisLibeventAttach(ac, s->base) != REDIS_OK) {
		redisAsyncFree(ac);
		store_schedule_retry(s);
		return;
	}
	redisAsyncSetConnectCallback(ac, store_connect_cb);
	redisAsyncSetDisconnectCallback(ac, store_disconnect_cb);
	s->ac = ac;
}

struct session_store *
session_store_new(struct event_base *base, const char *url,
    const char *prefix, uint64_t timeout_ms, uint64_t ttl_ms)
{
	struct session_store *s;
	char err[256];

	if (url == NULL || (s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->base = base;
	s->timeout_ms = timeout_ms;
	s->ttl_ms = ttl_ms;
	s->was_up = 1; /* so that a first failure is logged */
	s->url = strdup(url);
	s->prefix = strdup(prefix);
	s->retry_ev = evtimer_new(base, store_retry_cb, s);
	if (s->url == NULL || s->prefix == NULL || s->retry_ev == NULL ||
	    store_parse_into(s, url, err, sizeof(err)) != 0) {
		session_store_free(s);
		return NULL;
	}
	store_connect(s);
	return s;
}

void
session_store_report(struct session_store *s, _Atomic int *gauge)
{
	if (s == NULL) {
		if (gauge != NULL)
			atomic_store_explicit(gauge, 0, memory_order_relaxed);
		return;
	}
	s->gauge = gauge;
	atomic_store_explicit(gauge, s->up ? 2 : 1, memory_order_relaxed);
}

void
session_store_free(struct session_store *s)
{
	if (s == NULL)
		return;
	if (s->ac != NULL) {
		redisAsyncContext *ac = s->ac;

		s->ac = NULL;
		s->up = 0;
		ac->data = NULL;
		/* Pending replies run with NULL and finish their lookups. */
		redisAsyncFree(ac);
	}
	if (s->retry_ev != NULL)
		event_free(s->retry_ev);
	free(s->url);
	free(s->prefix);
	free(s->unix_path);
	if (s->password != NULL)
		OPENSSL_cleanse(s->password, strlen(s->password));
	free(s->password);
	free(s);
}

int
session_store_same(const struct session_store *s, const char *url,
    const char *prefix)
{
	return s != NULL && url != NULL && strcmp(s->url, url) == 0 &&
	    strcmp(s->prefix, prefix) == 0;
}

/* store_key formats prefix + hex(id). */
static void
store_key(const struct session_store *s, const uint8_t *id, size_t len,
    char *out, size_t out_len)
{
	size_t n = (size_t)snprintf(out, out_len, "%s", s->prefix);

	for (size_t i = 0; i < len && n + 2 < out_len; i++, n += 2)
		snprintf(out + n, 3, "%02x", id[i]);
}

void
session_store_put(struct session_store *s, SSL_SESSION *session)
{
	unsigned id_len;
	const uint8_t *id = SSL_SESSION_get_id(session, &id_len);
	uint8_t *der;
	size_t der_len;
	char key[512];

	if (s == NULL || !s->up || id_len == 0 ||
	    SSL_SESSION_to_bytes(session, &der, &der_len) != 1)
		return;
	store_key(s, id, id_len, key, sizeof(key));
	redisAsyncCommand(s->ac, NULL, NULL, "SET %s %b PX %llu", key, der,
	    der_len, (unsigned long long)s->ttl_ms);
	OPENSSL_cleanse(der, der_len);
	OPENSSL_free(der);
}

static void
store_lookup_finish(struct store_lookup *l, SSL_SESSION *session)
{
	if (!l->finished) {
		l->finished = 1;
		l->done(session, l->arg);
	} else if (session != NULL) {
		SSL_SESSION_free(session);
	}
	if (l->timer != NULL)
		evtimer_del(l->timer);
}

static void
store_lookup_release(struct store_lookup *l)
{
	if (l->replies > 0 || !l->finished)
		return;
	if (l->timer != NULL)
		event_free(l->timer);
	free(l);
}

static void
store_get_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct store_lookup *l = priv;
	redisReply *reply = r;
	SSL_SESSION *session = NULL;

	(void)ac;
	l->replies--;
	if (reply != NULL && reply->type == REDIS_REPLY_STRING && !l->finished)
		session = SSL_SESSION_from_bytes((const uint8_t *)reply->str,
		    reply->len, l->ctx);
	store_lookup_finish(l, session);
	store_lookup_release(l);
}

static void
store_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_lookup *l = arg;

	(void)fd;
	(void)what;
	/* Too slow: a full handshake now; the late reply is dropped. */
	store_lookup_finish(l, NULL);
	store_lookup_release(l);
}

struct store_lookup *
session_store_lookup(struct session_store *s, SSL_CTX *ctx,
    const uint8_t *id, size_t id_len,
    void (*done)(SSL_SESSION *session, void *arg), void *arg)
{
	struct store_lookup *l;
	struct timeval tv;
	char key[512];

	if (s == NULL || !s->up || (l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	l->s = s;
	l->ctx = ctx;
	l->done = done;
	l->arg = arg;
	l->timer = evtimer_new(s->base, store_timeout_cb, l);
	store_key(s, id, id_len, key, sizeof(key));
	if (l->timer == NULL || redisAsyncCommand(s->ac, store_get_cb, l,
	    "GET %s", key) != REDIS_OK) {
		if (l->timer != NULL)
			event_free(l->timer);
		free(l);
		return NULL;
	}
	l->replies = 1;
	tv.tv_sec = (time_t)(s->timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(s->timeout_ms % 1000) * 1000;
	evtimer_add(l->timer, &tv);
	return l;
}

void
session_store_cancel(struct store_lookup *l)
{
	if (l == NULL)
		return;
	l->finished = 1;
	if (l->timer != NULL)
		evtimer_del(l->timer);
	store_lookup_release(l);
}

struct store_call {
	void (*done)(int, const char *, size_t, long long, void *);
	void *arg;
};

static void
store_call_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct store_call *call = priv;
	redisReply *reply = r;

	(void)ac;
	if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
		call->done(-1, NULL, 0, 0, call->arg);
	else if (reply->type == REDIS_REPLY_STRING)
		call->done(0, reply->str, reply->len, 0, call->arg);
	else if (reply->type == REDIS_REPLY_INTEGER)
		call->done(0, NULL, 0, reply->integer, call->arg);
	else
		call->done(0, NULL, 0, 0, call->arg); /* nil and the rest */
	free(call);
}

int
session_store_call(struct session_store *s, int argc, const char **argv,
    const size_t *argv_len,
    void (*done)(int status, const char *data, size_t len, long long num,
    void *arg), void *arg)
{
	struct store_call *call;

	if (s == NULL || !s->up || (call = malloc(sizeof(*call))) == NULL)
		return -1;
	call->done = done;
	call->arg = arg;
	if (redisAsyncCommandArgv(s->ac, store_call_cb, call, argc, argv,
	    argv_len) != REDIS_OK) {
		free(call);
		return -1;
	}
	return 0;
}

const char *
session_store_key_prefix(const struct session_store *s)
{
	return s->prefix;
}
