/* generation.h: everything built from one config, immutable once published
 * and reference counted: connections hold the generation they were
 * accepted under until they close. */
#ifndef TLSPROXY_GENERATION_H
#define TLSPROXY_GENERATION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "peer_table.h"
#include "tickets.h"
#include "tls_ctx.h"

struct config;
struct sni_table;

/* Every context of a config, built for one scope of TLS settings, with
 * the server-name table that leads to them. */
struct ctx_set {
	struct tls_ctx *contexts;
	size_t num_contexts;
	struct sni_table *sni;
};

/* The settings of a [listener] in one generation. */
struct listener_conf {
	const char *name;
	/* A listener that overrides TLS settings gets its own build of the
	 * contexts; the others share the generation's. */
	struct ctx_set *own;
	struct tls_ctx *context; /* default context */
	/* With ech: this listener's own build of its default context, whose
	 * SSL_CTXs (where its connections start) hold the ECH keys; the
	 * contexts other listeners share never decrypt for it. */
	struct tls_ctx *ech_front;
	const struct sni_table *sni;
	int sni_strict;
	struct backend *backend;
	struct tls_route *routes; /* alpn_backend */
	size_t num_routes;
	int64_t max_connections;
	int stat_slot; /* stats_slot() of the name */
	int proxy_protocol; /* 0 off, 1 v1, 2 v2 */
	int proxy_cert;     /* v2: send the client certificate */
	int acme_http;      /* plain HTTP for ACME http-01 (acme_http.h) */
};

struct generation {
	atomic_long refs;
	struct generation *dead_next; /* waiting for generation_reap */
	unsigned long id;
	int64_t loaded_at; /* Unix time the config was read */
	struct config *cfg; /* owned */
	struct ctx_set shared;
	struct backend *backends;
	size_t num_backends;
	struct listener_conf *listeners;
	size_t num_listeners;
	/* Copied from [global] for the hot path. */
	uint64_t handshake_timeout_ms;
	uint64_t idle_timeout_ms;
	uint64_t buffer_size;
	uint64_t busy_poll_ms;
	struct peer_limits peer_limits; /* per client address */
	const char *session_store; /* URL, or NULL */
	/* Keys read from ticket_keys, installed when this generation is
	 * activated; empty without a file. */
	struct ticket_ring tickets;
};

/* generation_build turns |cfg| into a generation, taking ownership of
 * |cfg| on success. Everything a config names is loaded and checked here:
 * this is what `tlsproxy -t`, startup and reload all run. On failure it
 * returns NULL and the errors are in |cfg|, which the caller still owns. */
struct generation *generation_build(struct config *cfg);

/* generation_ref takes a reference. */
void generation_ref(struct generation *g);

/* generation_unref drops a reference. The last one frees |g| on the
 * reaper's thread (see generation_set_reaper): dropped on any other
 * thread, |g| is queued for generation_reap and the reaper woken. Without
 * a reaper it is freed at once. NULL is fine. */
void generation_unref(struct generation *g);

/* generation_set_reaper makes the calling thread the one that frees
 * generations: |wake|(|arg|) is called from the thread that dropped a
 * last reference, and must make the reaper call generation_reap soon.
 * NULL |wake| ends that and frees what is queued; call it once no other
 * thread holds generations. Freeing thousands of TLS contexts takes a
 * while, and on the control thread it delays no connection. */
void generation_set_reaper(void (*wake)(void *), void *arg);

/* generation_reap frees the generations queued for the reaper. */
void generation_reap(void);

/* generation_live returns how many generations are built and not yet
 * freed (for tests and metrics). */
unsigned long generation_live(void);

/* generation_route picks the backend of a finished handshake: the
 * context's alpn_backend, the context's backend, the listener's
 * alpn_backend, the listener's backend, first match wins. */
struct backend *generation_route(const struct listener_conf *lc,
    const struct tls_ctx *t, const uint8_t *alpn, size_t alpn_len);

/* generation_listener_by_addr returns the listener that binds |a|, or
 * NULL. */
const struct listener_conf *generation_listener_by_addr(
    const struct generation *g, const struct addr *a);

/* generation_listener returns the settings of the listener named |name|,
 * or NULL. */
const struct listener_conf *generation_listener(const struct generation *g,
    const char *name);


/* generation_activate applies what |g| configures process-wide: the
 * session cache bounds and, with a ticket_keys file, its keys. Called just
 * before generation_publish. */
void generation_activate(struct generation *g);

/* generation_publish makes |g| the generation new connections use, taking
 * over the caller's reference; the previous one is released (and freed
 * when its last connection ends). NULL retires the current one. */
void generation_publish(struct generation *g);

/* generation_current returns a new reference to the published generation,
 * or NULL. */
struct generation *generation_current(void);

/* generation_peek returns the published generation without a reference,
 * only to compare it with one the caller holds. */
const struct generation *generation_peek(void);

#endif
