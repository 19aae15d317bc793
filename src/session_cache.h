/* session_cache.h: the server-side session cache for TLS 1.2 session IDs.
 * One cache for the whole process: every context and listener of every
 * generation uses it, so sessions survive reloads; a session still only
 * resumes where its session ID context matches. Bounded in size and age.
 * Workers share it: it is split into shards by session ID, each with its
 * own lock, least-recently-used order and share of the capacity. */
#ifndef TLSPROXY_SESSION_CACHE_H
#define TLSPROXY_SESSION_CACHE_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

/* session_cache_configure sets the capacity (0: no cache) and lifetime;
 * entries beyond the new capacity are dropped, least recently used first
 * within each shard. */
void session_cache_configure(size_t capacity, uint64_t timeout_ms);

/* session_cache_attach makes |ctx| store and find sessions here. */
void session_cache_attach(SSL_CTX *ctx);

/* session_cache_set_external adds an external store behind the cache:
 * |put| sees every new session; |get| is asked on a local miss and may
 * return SSL_magic_pending_session_ptr() to make the handshake wait. */
void session_cache_set_external(void (*put)(SSL *ssl, SSL_SESSION *session),
    SSL_SESSION *(*get)(SSL *ssl, const uint8_t *id, size_t id_len));

/* session_cache_count returns the number of cached sessions. */
size_t session_cache_count(void);

/* session_cache_foreach calls |fn| with every session that has not
 * expired: its ID, its serialized bytes as kept here, and the
 * milliseconds it has left; it stops when |fn| returns nonzero. Shard by
 * shard, least recently used first, so that importing them in that order
 * keeps the order. |fn| runs with a shard's lock held: it must not call
 * the cache, and should be quick, as handshakes of that shard wait. */
void session_cache_foreach(int (*fn)(void *arg, const uint8_t *id,
    size_t id_len, const uint8_t *der, size_t der_len, uint64_t ttl_ms),
    void *arg);

/* session_cache_import stores a session that session_cache_foreach gave
 * another process, as if it had just been stored here: most recently
 * used, expiring in |ttl_ms| or the configured lifetime if shorter (0:
 * it has expired, nothing is stored), evicting as usual. The bytes are
 * parsed only when a handshake finds them, like every cached session.
 * Returns 0, or -1 without a cache, for an empty ID or one longer than
 * SSL_MAX_SSL_SESSION_ID_LENGTH, for bytes empty or over 64 KiB, or out
 * of memory. */
int session_cache_import(const uint8_t *id, size_t id_len,
    const uint8_t *der, size_t der_len, uint64_t ttl_ms);

/* session_cache_clear drops every session. */
void session_cache_clear(void);

#endif
