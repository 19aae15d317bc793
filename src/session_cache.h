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

/* session_cache_clear drops every session. */
void session_cache_clear(void);

#endif
