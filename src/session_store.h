/* session_store.h: a session cache shared by several tlsproxy instances,
 * in Redis (Node's 'newSession'/'resumeSession'). Each worker has its own
 * connection on its own event loop; lookups are asynchronous, bounded by
 * session_store_timeout, and a store that is down only turns resumptions
 * into full handshakes. Nothing here blocks the loop (the host name is
 * looked up with evdns) or grows without bound (a link with too many
 * commands unanswered counts as down and is made again). */
#ifndef TLSPROXY_SESSION_STORE_H
#define TLSPROXY_SESSION_STORE_H

#include <stdatomic.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct session_store;
struct store_lookup;
struct strlist;

/* session_store_parse checks a "redis://[:PASSWORD@]HOST:PORT[/DB]" or
 * "unix:/PATH" URL; returns 0, or -1 with the reason in |err|. */
int session_store_parse(const char *url, char *err, size_t err_len);

/* Where a store URL points, for clients of their own (acme_share.c). */
struct store_endpoint {
	char host[256];
	int port;
	int db;
	char *unix_path; /* NULL: TCP to host:port */
	char *password;  /* NULL: none */
};

/* session_store_endpoint parses |url| into |out| (release it with
 * session_store_endpoint_free). Returns 0, or -1 with |err|. */
int session_store_endpoint(const char *url, struct store_endpoint *out,
    char *err, size_t err_len);
void session_store_endpoint_free(struct store_endpoint *e);

/* session_store_new connects to |url| from |base|, reconnecting with
 * backoff when the link goes away or stops answering. A host name is
 * looked up before every connection, asynchronously on |base|, by the
 * DNS servers |resolver| (NULL or empty: those of /etc/resolv.conf) with
 * |resolver_timeout_ms| per answer; until it resolves, the store is down.
 * NULL |url|: no store. */
struct session_store *session_store_new(struct event_base *base,
    const char *url, const char *prefix, uint64_t timeout_ms,
    uint64_t ttl_ms, const struct strlist *resolver,
    uint64_t resolver_timeout_ms);

/* session_store_free disconnects; pending lookups complete as misses. A
 * name lookup still in flight is failed and releases its memory on the
 * next turn of the loop of |base|: a caller about to free that base runs
 * it once more first (event_base_loop with EVLOOP_NONBLOCK). */
void session_store_free(struct session_store *s);

/* session_store_same returns whether |s| already talks to |url| with
 * |prefix| (and, for a host name, looks it up with the same |resolver|
 * and |resolver_timeout_ms|), so a reload can keep the connection. */
int session_store_same(const struct session_store *s, const char *url,
    const char *prefix, const struct strlist *resolver,
    uint64_t resolver_timeout_ms);

/* session_store_put stores |session| under its ID, with the TTL;
 * fire-and-forget, skipped while the store is down. */
void session_store_put(struct session_store *s, SSL_SESSION *session);

/* session_store_lookup starts an asynchronous lookup of |id|. |done| is
 * called exactly once, on the store's event loop, with the session found
 * (a new reference, or NULL on a miss, an error or the timeout) and
 * |arg|. Returns a handle for session_store_cancel, or NULL when the
 * store is down (then |done| is not called). */
struct store_lookup *session_store_lookup(struct session_store *s,
    SSL_CTX *ctx, const uint8_t *id, size_t id_len,
    void (*done)(SSL_SESSION *session, void *arg), void *arg);

/* session_store_call sends one command (|argc| binary-safe arguments);
 * |done| gets the reply on the store's loop: a string (|data|, |len|), an
 * integer (|num|), or |status| -1 for an error, no reply or a store that
 * is down. Returns 0 if sent; -1 if the store is down (|done| not
 * called). */
int session_store_call(struct session_store *s, int argc, const char **argv,
    const size_t *argv_len,
    void (*done)(int status, const char *data, size_t len, long long num,
    void *arg), void *arg);

/* session_store_key_prefix returns the key prefix of |s|. */
const char *session_store_key_prefix(const struct session_store *s);

/* session_store_report makes |s| keep |*gauge| at 2 while connected and
 * 1 while not (its name unresolved, connecting, or too slow to answer);
 * with |s| NULL (no store) it sets 0. */
void session_store_report(struct session_store *s, _Atomic int *gauge);

/* session_store_cancel stops |done| from being called for |l|. */
void session_store_cancel(struct store_lookup *l);

#endif
