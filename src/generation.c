/* generation.c: build, reference and release a config generation. */
#include "generation.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "config.h"
#include "conn.h"
#include "log.h"
#include "sni.h"

static atomic_ulong generation_next_id = 1;

static void
generation_free(struct generation *g)
{
	for (size_t i = 0; i < g->num_listeners; i++)
		sni_free(g->listeners[i].sni);
	for (size_t i = 0; i < g->num_contexts; i++)
		tls_ctx_release(&g->contexts[i]);
	for (size_t i = 0; i < g->num_backends; i++)
		backend_release(&g->backends[i]);
	free(g->listeners);
	free(g->contexts);
	free(g->backends);
	config_free(g->cfg);
	free(g);
}

static struct tls_ctx *
generation_context(struct generation *g, const char *name)
{
	for (size_t i = 0; i < g->num_contexts; i++) {
		if (g->contexts[i].name != NULL &&
		    strcmp(g->contexts[i].name, name) == 0)
			return &g->contexts[i];
	}
	return NULL;
}

static int
generation_build_listeners(struct generation *g, struct config *cfg)
{
	g->listeners = calloc(cfg->num_listeners, sizeof(*g->listeners));
	if (g->listeners == NULL)
		return -1;
	g->num_listeners = cfg->num_listeners;
	for (size_t i = 0; i < cfg->num_listeners; i++) {
		const struct conf_listener *cl = &cfg->listeners[i];
		struct listener_conf *l = &g->listeners[i];

		l->name = cl->h.name;
		l->context = generation_context(g, cl->context);
		l->max_connections = cl->max_connections;
		for (size_t j = 0; j < cfg->num_backends; j++) {
			if (strcmp(cfg->backends[j].h.name, cl->backend) == 0)
				l->backend = &g->backends[j];
		}
		if (l->context == NULL || l->backend == NULL)
			return -1;
		l->sni = sni_new(l->context);
		if (l->sni == NULL)
			return -1;
	}
	return 0;
}

struct generation *
generation_build(struct config *cfg)
{
	struct generation *g;
	int failed = 0;

	if (cfg->num_errors > 0)
		return NULL;
	g = calloc(1, sizeof(*g));
	if (g == NULL)
		return NULL;
	g->contexts = calloc(cfg->num_contexts + 1, sizeof(*g->contexts));
	g->backends = calloc(cfg->num_backends + 1, sizeof(*g->backends));
	if (g->contexts == NULL || g->backends == NULL) {
		config_error(cfg, 0, NULL, "out of memory");
		goto fail;
	}
	/* Build every context even after a failure, so one run reports all
	 * broken certificates and keys. */
	for (size_t i = 0; i < cfg->num_contexts; i++) {
		if (tls_ctx_init(&g->contexts[i], cfg, &cfg->contexts[i]) != 0)
			failed = 1;
		else
			tls_ctx_set_select_cb(&g->contexts[i], conn_select_cert);
		g->num_contexts++;
	}
	g->num_backends = cfg->num_backends;
	if (backend_resolve_all(cfg, g->backends) != 0)
		failed = 1;
	if (failed || cfg->num_errors > 0)
		goto fail;
	if (generation_build_listeners(g, cfg) != 0) {
		config_error(cfg, 0, NULL, "cannot set up listeners");
		goto fail;
	}
	g->cfg = cfg;
	g->handshake_timeout_ms = cfg->global.handshake_timeout_ms;
	g->idle_timeout_ms = cfg->global.idle_timeout_ms;
	g->buffer_size = cfg->global.buffer_size;
	g->busy_poll_ms = cfg->global.busy_poll_ms;
	g->id = atomic_fetch_add(&generation_next_id, 1);
	atomic_init(&g->refs, 1);
	return g;
fail:
	g->cfg = NULL;
	generation_free(g);
	return NULL;
}

void
generation_ref(struct generation *g)
{
	atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
}

void
generation_unref(struct generation *g)
{
	if (g == NULL)
		return;
	if (atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) == 1) {
		log_msg(LOGL_DEBUG, "generation %lu released", g->id);
		generation_free(g);
	}
}

const struct listener_conf *
generation_listener(const struct generation *g, const char *name)
{
	for (size_t i = 0; i < g->num_listeners; i++) {
		if (strcmp(g->listeners[i].name, name) == 0)
			return &g->listeners[i];
	}
	return NULL;
}

/* The published generation. Workers compare it with the one they hold on
 * every accept (one atomic load) and take the lock only when it changed,
 * so the data path never contends on it. */
static _Atomic(struct generation *) generation_published;
static pthread_mutex_t generation_lock = PTHREAD_MUTEX_INITIALIZER;

void
generation_publish(struct generation *g)
{
	struct generation *old;

	pthread_mutex_lock(&generation_lock);
	old = atomic_exchange(&generation_published, g);
	pthread_mutex_unlock(&generation_lock);
	generation_unref(old);
}

struct generation *
generation_current(void)
{
	struct generation *g;

	pthread_mutex_lock(&generation_lock);
	g = atomic_load(&generation_published);
	if (g != NULL)
		generation_ref(g);
	pthread_mutex_unlock(&generation_lock);
	return g;
}

const struct generation *
generation_peek(void)
{
	return atomic_load_explicit(&generation_published,
	    memory_order_acquire);
}
