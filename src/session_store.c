/* session_store.c: sessions in Redis, through hiredis on the worker's
 * libevent loop. Two things keep the loop and the memory safe from the
 * store: a host name is looked up with evdns and hiredis is handed an
 * address (it would call the blocking getaddrinfo otherwise), and the
 * commands waiting for an answer are capped. */
#include "session_store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/mem.h>

#include "addr.h"
#include "clock.h"
#include "config.h"
#include "log.h"
#include "resolver.h"

/* Reconnect backoff bounds. */
#define STORE_BACKOFF_MIN_MS 100
#define STORE_BACKOFF_MAX_MS 5000
/* Connecting, AUTH and SELECT must be done within this: a host that
 * drops SYNs or never answers would otherwise keep the link "connecting"
 * with no retry. */
#define STORE_CONNECT_TIMEOUT_MS 5000
/* Commands sent and not answered yet, per link. hiredis keeps each one
 * (its callback, and its bytes once the socket is full) until the answer
 * comes, so a store that takes commands and never answers would cost
 * memory with every handshake. Past this many the store counts as down
 * and the link is made again; a store that answers at all keeps far
 * fewer in flight, even at thousands of handshakes a second. */
#define STORE_MAX_PENDING 1024
/* Addresses kept from one lookup of the host name, tried in turn. */
#define STORE_MAX_ADDRS 4

enum store_state {
	STORE_WAITING,    /* for the retry timer */
	STORE_RESOLVING,  /* for evdns */
	STORE_CONNECTING, /* for connect, AUTH and SELECT */
	STORE_UP,
	STORE_DROPPING,   /* too much unanswered: closing on the next turn */
};

/* What an answer is for. Redis answers in order, so the answers to come
 * match a queue of these, one per command sent. */
enum store_want {
	STORE_WANT_NOTHING, /* SET, AUTH, or a lookup given up */
	STORE_WANT_READY,   /* SELECT: the link is ready */
	STORE_WANT_LOOKUP,
	STORE_WANT_CALL,
};

struct store_slot {
	enum store_want want;
	struct store_lookup *lookup;
	void (*call_done)(int, const char *, size_t, long long, void *);
	void *call_arg;
};

/* A lookup of the host name. evdns calls back exactly once, even when
 * its base is freed first, and the callback frees it. */
struct store_query {
	struct session_store *s; /* NULL once the store stopped waiting */
	int family;
	uint64_t start_ms;
};

struct session_store {
	struct event_base *base;
	char *url;
	char *prefix;
	char host[256];
	unsigned port;
	int host_is_name;   /* |host| needs DNS */
	char *unix_path;
	char *password;
	int db;
	uint64_t timeout_ms, ttl_ms;
	struct strlist dns_servers; /* [global] resolver, copied */
	uint64_t dns_timeout_ms;
	struct evdns_base *dns;     /* only for a host name */
	struct store_query *query;  /* the lookup waited for, or NULL */
	char addrs[STORE_MAX_ADDRS][INET6_ADDRSTRLEN];
	size_t num_addrs, next_addr;
	enum store_state state;
	redisAsyncContext *ac;
	int up;             /* connected and selected */
	_Atomic int *gauge; /* mirrors |up| for the metrics, or NULL */
	int was_up;         /* last state logged, so outages log once */
	char why[256];      /* the reason logged for the outage */
	uint64_t backoff_ms;
	/* The retry, lookup and connect deadlines, and the drop. */
	struct event *timer;
	struct store_slot slots[STORE_MAX_PENDING]; /* a ring */
	size_t first_slot, num_slots;
};

struct store_lookup {
	SSL_CTX *ctx;
	void (*done)(SSL_SESSION *, void *);
	void *arg;
	struct event *timer;
	struct session_store *s;
	size_t slot;  /* its place in s->slots, which owns it */
};

static void store_start(struct session_store *s);
static void store_resolve(struct session_store *s, int family);

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
		struct in6_addr a6;
		struct in_addr a4;

		snprintf(s->host, sizeof(s->host), "%s", host);
		s->host_is_name = inet_pton(AF_INET, host, &a4) != 1 &&
		    inet_pton(AF_INET6, host, &a6) != 1;
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

int
session_store_endpoint(const char *url, struct store_endpoint *out,
    char *err, size_t err_len)
{
	struct session_store *s = calloc(1, sizeof(*s));
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (s == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	if (store_parse_into(s, url, err, err_len) == 0) {
		snprintf(out->host, sizeof(out->host), "%s", s->host);
		out->port = (int)s->port;
		out->db = s->db;
		out->unix_path = s->unix_path;
		out->password = s->password;
		rc = 0;
	} else {
		free(s->unix_path);
		free(s->password);
	}
	free(s);
	return rc;
}

void
session_store_endpoint_free(struct store_endpoint *e)
{
	free(e->unix_path);
	if (e->password != NULL)
		OPENSSL_cleanse(e->password, strlen(e->password));
	free(e->password);
	memset(e, 0, sizeof(*e));
}

static void
store_set_state(struct session_store *s, int up, const char *why)
{
	s->up = up;
	if (s->gauge != NULL)
		atomic_store_explicit(s->gauge, up ? 2 : 1,
		    memory_order_relaxed);
	if (up) {
		if (!s->was_up)
			log_msg(LOGL_INFO, "session store %s: connected", s->url);
		s->was_up = 1;
		s->why[0] = '\0';
		return;
	}
	/* A warning when the store goes down and when the reason changes;
	 * a store down for long adds one debug line per retry. */
	if (s->was_up || strcmp(s->why, why) != 0)
		log_msg(LOGL_WARNING, "session store %s: unavailable (%s); "
		    "handshakes go on without it", s->url, why);
	else
		log_msg(LOGL_DEBUG, "session store %s: still unavailable (%s)",
		    s->url, why);
	s->was_up = 0;
	snprintf(s->why, sizeof(s->why), "%s", why);
}

static void
store_arm(struct session_store *s, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000),
		(suseconds_t)(ms % 1000) * 1000 };

	evtimer_add(s->timer, &tv);
}

/* store_fail counts the store down for |why| and retries later. */
static void
store_fail(struct session_store *s, const char *why)
{
	store_set_state(s, 0, why);
	s->state = STORE_WAITING;
	s->backoff_ms = s->backoff_ms == 0 ? STORE_BACKOFF_MIN_MS :
	    s->backoff_ms * 2;
	if (s->backoff_ms > STORE_BACKOFF_MAX_MS)
		s->backoff_ms = STORE_BACKOFF_MAX_MS;
	store_arm(s, s->backoff_ms);
}

/* store_unlink closes the link on purpose. The answers still due run at
 * once with no reply: lookups complete as misses, calls fail. */
static void
store_unlink(struct session_store *s)
{
	redisAsyncContext *ac = s->ac;

	if (ac == NULL)
		return;
	s->ac = NULL;
	ac->data = NULL; /* no disconnect callback */
	redisAsyncFree(ac);
}

static void store_reply_cb(redisAsyncContext *ac, void *r, void *priv);

/* store_send sends one command whose answer is for |slot|; its place in
 * the ring goes to |out_slot| if not NULL. Returns 0, or -1 if the link
 * is gone or has too many answers due (then it is dropped). */
static int
store_send(struct session_store *s, const struct store_slot *slot,
    int argc, const char **argv, const size_t *argv_len, size_t *out_slot)
{
	size_t i;
	char why[64];

	if (s->ac == NULL)
		return -1;
	if (s->num_slots == STORE_MAX_PENDING) {
		snprintf(why, sizeof(why), "%d commands unanswered",
		    STORE_MAX_PENDING);
		store_set_state(s, 0, why);
		/* This may run inside one of the link's own callbacks, where
		 * hiredis must not free it: close it on the next turn. */
		s->state = STORE_DROPPING;
		store_arm(s, 0);
		return -1;
	}
	if (redisAsyncCommandArgv(s->ac, store_reply_cb, s, argc, argv,
	    argv_len) != REDIS_OK)
		return -1;
	i = (s->first_slot + s->num_slots) % STORE_MAX_PENDING;
	s->slots[i] = *slot;
	s->num_slots++;
	if (out_slot != NULL)
		*out_slot = i;
	return 0;
}

static void
store_ready(struct session_store *s, const redisReply *reply)
{
	if (reply == NULL)
		return; /* the link is closing; whoever closes it says why */
	if (reply->type == REDIS_REPLY_ERROR) {
		log_msg(LOGL_WARNING, "session store %s: %s", s->url,
		    reply->str);
		/* The disconnect callback schedules the retry. */
		redisAsyncDisconnect(s->ac);
		return;
	}
	evtimer_del(s->timer);
	s->state = STORE_UP;
	s->backoff_ms = 0;
	store_set_state(s, 1, NULL);
}

static void
store_lookup_free(struct store_lookup *l)
{
	if (l->timer != NULL)
		event_free(l->timer);
	free(l);
}

static void
store_lookup_answer(struct store_lookup *l, const redisReply *reply)
{
	void (*done)(SSL_SESSION *, void *) = l->done;
	void *arg = l->arg;
	SSL_SESSION *session = NULL;

	if (reply != NULL && reply->type == REDIS_REPLY_STRING)
		session = SSL_SESSION_from_bytes((const uint8_t *)reply->str,
		    reply->len, l->ctx);
	store_lookup_free(l);
	done(session, arg);
}

static void
store_call_answer(const struct store_slot *slot, const redisReply *reply)
{
	void *arg = slot->call_arg;

	if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
		slot->call_done(-1, NULL, 0, 0, arg);
	else if (reply->type == REDIS_REPLY_STRING)
		slot->call_done(0, reply->str, reply->len, 0, arg);
	else if (reply->type == REDIS_REPLY_INTEGER)
		slot->call_done(0, NULL, 0, reply->integer, arg);
	else
		slot->call_done(0, NULL, 0, 0, arg); /* nil and the rest */
}

static void
store_reply_cb(redisAsyncContext *ac, void *r, void *priv)
{
	struct session_store *s = priv;
	struct store_slot slot;

	(void)ac;
	if (s->num_slots == 0)
		return; /* every command sent has its slot: not reached */
	slot = s->slots[s->first_slot];
	s->first_slot = (s->first_slot + 1) % STORE_MAX_PENDING;
	s->num_slots--;
	switch (slot.want) {
	case STORE_WANT_NOTHING:
		break;
	case STORE_WANT_READY:
		store_ready(s, r);
		break;
	case STORE_WANT_LOOKUP:
		store_lookup_answer(slot.lookup, r);
		break;
	case STORE_WANT_CALL:
		store_call_answer(&slot, r);
		break;
	}
}

static void store_connect_next(struct session_store *s, const char *why);

static void
store_connect_cb(const redisAsyncContext *ac, int status)
{
	struct session_store *s = ac->data;
	struct store_slot nothing = { .want = STORE_WANT_NOTHING };
	struct store_slot ready = { .want = STORE_WANT_READY };
	char db[16], why[160];
	const char *argv[2];
	size_t argv_len[2];

	if (s == NULL)
		return;
	if (status != REDIS_OK) {
		snprintf(why, sizeof(why), "%s", ac->errstr);
		/* hiredis frees the context after this callback. */
		s->ac = NULL;
		store_connect_next(s, why);
		return;
	}
	/* AUTH and SELECT first; the last answer says the link is ready. */
	if (s->password != NULL) {
		argv[0] = "AUTH";
		argv[1] = s->password;
		argv_len[0] = 4;
		argv_len[1] = strlen(s->password);
		store_send(s, &nothing, 2, argv, argv_len, NULL);
	}
	snprintf(db, sizeof(db), "%d", s->db);
	argv[0] = "SELECT";
	argv[1] = db;
	argv_len[0] = 6;
	argv_len[1] = strlen(db);
	store_send(s, &ready, 2, argv, argv_len, NULL);
}

static void
store_disconnect_cb(const redisAsyncContext *ac, int status)
{
	struct session_store *s = ac->data;

	(void)status;
	if (s == NULL)
		return; /* closed on purpose */
	s->ac = NULL;
	store_fail(s, ac->err != 0 ? ac->errstr : "connection closed");
}

/* store_connect_to starts a connection to |addr| (numeric: hiredis then
 * does no DNS lookup of its own), or to the unix socket if NULL. */
static void
store_connect_to(struct session_store *s, const char *addr)
{
	redisAsyncContext *ac;
	char why[160];

	ac = addr == NULL ? redisAsyncConnectUnix(s->unix_path) :
	    redisAsyncConnect(addr, (int)s->port);
	if (ac == NULL || ac->err != 0 ||
	    redisLibeventAttach(ac, s->base) != REDIS_OK) {
		snprintf(why, sizeof(why), "%s", ac == NULL ? "out of memory" :
		    ac->err != 0 ? ac->errstr : "cannot watch the connection");
		if (ac != NULL)
			redisAsyncFree(ac);
		store_connect_next(s, why);
		return;
	}
	ac->data = s;
	redisAsyncSetConnectCallback(ac, store_connect_cb);
	redisAsyncSetDisconnectCallback(ac, store_disconnect_cb);
	s->ac = ac;
	s->state = STORE_CONNECTING;
	store_arm(s, STORE_CONNECT_TIMEOUT_MS);
}

/* store_connect_next tries the next address the host name resolved to,
 * or, with none left, gives up until the retry with |why|. */
static void
store_connect_next(struct session_store *s, const char *why)
{
	char msg[400];

	if (s->next_addr < s->num_addrs) {
		store_connect_to(s, s->addrs[s->next_addr++]);
		return;
	}
	if (s->num_addrs > 0) {
		/* Say which address of the name failed. */
		snprintf(msg, sizeof(msg), "%s: %s",
		    s->addrs[s->num_addrs - 1], why);
		store_fail(s, msg);
		return;
	}
	store_fail(s, why);
}

static void
store_resolved_cb(int err, struct evutil_addrinfo *res, void *arg)
{
	struct store_query *q = arg;
	struct session_store *s = q->s;
	int family = q->family;
	uint64_t took_ms = clock_mono_ms() - q->start_ms;
	char why[400];

	free(q);
	if (s == NULL) {
		if (res != NULL)
			evutil_freeaddrinfo(res);
		return;
	}
	s->query = NULL;
	evtimer_del(s->timer);
	s->num_addrs = s->next_addr = 0;
	for (const struct evutil_addrinfo *ai = res;
	    ai != NULL && s->num_addrs < STORE_MAX_ADDRS; ai = ai->ai_next) {
		const void *a = ai->ai_family == AF_INET ?
		    (const void *)&((const struct sockaddr_in *)
		    ai->ai_addr)->sin_addr :
		    (const void *)&((const struct sockaddr_in6 *)
		    ai->ai_addr)->sin6_addr;

		if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
		    evutil_inet_ntop(ai->ai_family, a, s->addrs[s->num_addrs],
		    sizeof(s->addrs[0])) != NULL)
			s->num_addrs++;
	}
	if (res != NULL)
		evutil_freeaddrinfo(res);
	if (s->num_addrs > 0) {
		store_connect_next(s, NULL);
		return;
	}
	if (family == AF_INET && (err == 0 || err == EVUTIL_EAI_NODATA ||
	    err == EVUTIL_EAI_NONAME)) {
		store_resolve(s, AF_INET6);
		return;
	}
	/* evdns reports servers that never answer as a plain failure: the
	 * time it took tells them apart. */
	if (err != 0 && took_ms >= s->dns_timeout_ms)
		snprintf(why, sizeof(why), "cannot resolve '%s': no answer from "
		    "the DNS servers within %llums", s->host,
		    (unsigned long long)took_ms);
	else
		snprintf(why, sizeof(why), "cannot resolve '%s': %s", s->host,
		    err != 0 ? evutil_gai_strerror(err) : "no address");
	store_fail(s, why);
}

/* store_resolve looks the host name up for one address family: IPv4
 * first, then IPv6 if it has no IPv4 address, as hiredis itself would.
 * Asking for both at once would have libevent cancel one internally when
 * the other answers first, and that cancellation's callback could run
 * after the store freed the evdns base. */
static void
store_resolve(struct session_store *s, int family)
{
	struct store_query *q = calloc(1, sizeof(*q));
	struct evutil_addrinfo hints;

	if (q == NULL) {
		store_fail(s, "out of memory");
		return;
	}
	q->s = s;
	q->family = family;
	q->start_ms = clock_mono_ms();
	s->query = q;
	s->state = STORE_RESOLVING;
	/* evdns gives up on its own well before this; the deadline only
	 * bounds a lookup that would never call back. */
	store_arm(s, resolver_wait_ms(s->dns_timeout_ms) + 1000);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	/* The callback owns |q|, and may run before this returns (a name in
	 * /etc/hosts). */
	evdns_getaddrinfo(s->dns, s->host, NULL, &hints, store_resolved_cb, q);
}

static void
store_start(struct session_store *s)
{
	if (s->unix_path != NULL)
		store_connect_to(s, NULL);
	else if (!s->host_is_name)
		store_connect_to(s, s->host);
	else
		store_resolve(s, AF_INET);
}

static void
store_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session_store *s = arg;
	char why[400];

	(void)fd;
	(void)what;
	switch (s->state) {
	case STORE_WAITING:
		store_start(s);
		break;
	case STORE_RESOLVING:
		/* The query frees itself when evdns calls back. */
		s->query->s = NULL;
		s->query = NULL;
		snprintf(why, sizeof(why), "cannot resolve '%s': no answer "
		    "within %llums", s->host, (unsigned long long)
		    (resolver_wait_ms(s->dns_timeout_ms) + 1000));
		store_fail(s, why);
		break;
	case STORE_CONNECTING:
		store_unlink(s);
		snprintf(why, sizeof(why), "not ready within %dms",
		    STORE_CONNECT_TIMEOUT_MS);
		store_connect_next(s, why);
		break;
	case STORE_DROPPING:
		/* Logged when it was decided. */
		snprintf(why, sizeof(why), "%s", s->why);
		store_unlink(s);
		store_fail(s, why);
		break;
	case STORE_UP:
		break;
	}
}

static int
store_copy_servers(struct strlist *to, const struct strlist *from)
{
	if (from == NULL || from->num == 0)
		return 0;
	if ((to->v = calloc(from->num, sizeof(*to->v))) == NULL)
		return -1;
	for (; to->num < from->num; to->num++) {
		if ((to->v[to->num] = strdup(from->v[to->num])) == NULL)
			return -1;
	}
	return 0;
}

static int
store_same_servers(const struct strlist *a, const struct strlist *b)
{
	size_t num_b = b != NULL ? b->num : 0;

	if (a->num != num_b)
		return 0;
	for (size_t i = 0; i < num_b; i++) {
		if (strcmp(a->v[i], b->v[i]) != 0)
			return 0;
	}
	return 1;
}

struct session_store *
session_store_new(struct event_base *base, const char *url,
    const char *prefix, uint64_t timeout_ms, uint64_t ttl_ms,
    const struct strlist *resolver, uint64_t resolver_timeout_ms)
{
	struct session_store *s;
	char err[256];

	if (url == NULL || (s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->base = base;
	s->timeout_ms = timeout_ms;
	s->ttl_ms = ttl_ms;
	s->dns_timeout_ms = resolver_timeout_ms;
	s->was_up = 1; /* so that a first failure is logged */
	s->url = strdup(url);
	s->prefix = strdup(prefix);
	s->timer = evtimer_new(base, store_timer_cb, s);
	if (s->url == NULL || s->prefix == NULL || s->timer == NULL ||
	    store_parse_into(s, url, err, sizeof(err)) != 0 ||
	    store_copy_servers(&s->dns_servers, resolver) != 0) {
		session_store_free(s);
		return NULL;
	}
	if (s->host_is_name && (s->dns = resolver_new(base, &s->dns_servers,
	    resolver_timeout_ms)) == NULL) {
		log_msg(LOGL_ERROR, "session store %s: cannot start the DNS "
		    "resolver", url);
		session_store_free(s);
		return NULL;
	}
	store_start(s);
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
	s->up = 0; /* what the completions below start sends nothing */
	store_unlink(s);
	if (s->query != NULL)
		s->query->s = NULL;
	/* Fails the lookups in flight; their callbacks, deferred to the
	 * loop's next turn, free them. */
	if (s->dns != NULL)
		evdns_base_free(s->dns, 1);
	if (s->timer != NULL)
		event_free(s->timer);
	for (size_t i = 0; i < s->dns_servers.num; i++)
		free(s->dns_servers.v[i]);
	free(s->dns_servers.v);
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
    const char *prefix, const struct strlist *resolver,
    uint64_t resolver_timeout_ms)
{
	if (s == NULL || url == NULL || strcmp(s->url, url) != 0 ||
	    strcmp(s->prefix, prefix) != 0)
		return 0;
	return !s->host_is_name ||
	    (s->dns_timeout_ms == resolver_timeout_ms &&
	    store_same_servers(&s->dns_servers, resolver));
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
	struct store_slot nothing = { .want = STORE_WANT_NOTHING };
	unsigned id_len;
	const uint8_t *id = SSL_SESSION_get_id(session, &id_len);
	uint8_t *der;
	size_t der_len;
	char key[512], px[24];
	const char *argv[5];
	size_t argv_len[5];

	if (s == NULL || !s->up || id_len == 0 ||
	    SSL_SESSION_to_bytes(session, &der, &der_len) != 1)
		return;
	store_key(s, id, id_len, key, sizeof(key));
	snprintf(px, sizeof(px), "%llu", (unsigned long long)s->ttl_ms);
	argv[0] = "SET";
	argv[1] = key;
	argv[2] = (const char *)der;
	argv[3] = "PX";
	argv[4] = px;
	argv_len[0] = 3;
	argv_len[1] = strlen(key);
	argv_len[2] = der_len;
	argv_len[3] = 2;
	argv_len[4] = strlen(px);
	store_send(s, &nothing, 5, argv, argv_len, NULL);
	OPENSSL_cleanse(der, der_len);
	OPENSSL_free(der);
}

static void
store_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_lookup *l = arg;
	void (*done)(SSL_SESSION *, void *) = l->done;
	void *done_arg = l->arg;

	(void)fd;
	(void)what;
	/* Too slow: a full handshake now. The late answer finds nothing to
	 * complete, and nothing of the lookup waits for it. */
	l->s->slots[l->slot].want = STORE_WANT_NOTHING;
	store_lookup_free(l);
	done(NULL, done_arg);
}

struct store_lookup *
session_store_lookup(struct session_store *s, SSL_CTX *ctx,
    const uint8_t *id, size_t id_len,
    void (*done)(SSL_SESSION *session, void *arg), void *arg)
{
	struct store_slot slot = { .want = STORE_WANT_LOOKUP };
	struct store_lookup *l;
	struct timeval tv;
	char key[512];
	const char *argv[2];
	size_t argv_len[2];

	if (s == NULL || !s->up || (l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	l->s = s;
	l->ctx = ctx;
	l->done = done;
	l->arg = arg;
	l->timer = evtimer_new(s->base, store_timeout_cb, l);
	store_key(s, id, id_len, key, sizeof(key));
	argv[0] = "GET";
	argv[1] = key;
	argv_len[0] = 3;
	argv_len[1] = strlen(key);
	slot.lookup = l;
	if (l->timer == NULL ||
	    store_send(s, &slot, 2, argv, argv_len, &l->slot) != 0) {
		store_lookup_free(l);
		return NULL;
	}
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
	l->s->slots[l->slot].want = STORE_WANT_NOTHING;
	store_lookup_free(l);
}

int
session_store_call(struct session_store *s, int argc, const char **argv,
    const size_t *argv_len,
    void (*done)(int status, const char *data, size_t len, long long num,
    void *arg), void *arg)
{
	struct store_slot slot = { .want = STORE_WANT_CALL, .call_done = done,
		.call_arg = arg };

	if (s == NULL || !s->up)
		return -1;
	return store_send(s, &slot, argc, argv, argv_len, NULL);
}

const char *
session_store_key_prefix(const struct session_store *s)
{
	return s->prefix;
}
