/* generation.c: build, reference and release a config generation. */
#include "generation.h"

#include <pthread.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <string.h>

#include <openssl/ssl.h>

#include "backend_tls.h"
#include "config.h"
#include "conn.h"
#include "ech.h"
#include "log.h"
#include "stats.h"
#include "session_cache.h"
#include "sni.h"

static atomic_ulong generation_next_id = 1;
static atomic_ulong generation_num_live;

static void
ctx_set_release(struct ctx_set *s)
{
	sni_free(s->sni);
	for (size_t i = 0; i < s->num_contexts; i++)
		tls_ctx_release(&s->contexts[i]);
	free(s->contexts);
	memset(s, 0, sizeof(*s));
}

static void
generation_free(struct generation *g)
{
	for (size_t i = 0; i < g->num_listeners; i++) {
		struct listener_conf *l = &g->listeners[i];

		for (size_t j = 0; j < l->num_routes; j++)
			free(l->routes[j].protocol);
		free(l->routes);
		if (l->own != NULL)
			ctx_set_release(l->own);
		free(l->own);
		if (l->ech_front != NULL)
			tls_ctx_release(l->ech_front);
		free(l->ech_front);
	}
	ctx_set_release(&g->shared);
	tickets_ring_free(&g->tickets);
	for (size_t i = 0; i < g->num_backends; i++)
		backend_release(&g->backends[i]);
	free(g->listeners);
	free(g->backends);
	config_free(g->cfg);
	free(g);
}

static struct tls_ctx *
ctx_set_find(const struct ctx_set *s, const char *name)
{
	for (size_t i = 0; i < s->num_contexts; i++) {
		if (s->contexts[i].name != NULL &&
		    strcmp(s->contexts[i].name, name) == 0)
			return &s->contexts[i];
	}
	return NULL;
}

static struct backend *
generation_backend(struct generation *g, const char *name)
{
	for (size_t i = 0; i < g->num_backends; i++) {
		if (strcmp(g->backends[i].name, name) == 0)
			return &g->backends[i];
	}
	return NULL;
}

/* generation_routes resolves "protocol:backend" items (checked by the
 * config parser) against the generation's backends. */
static int
generation_routes(struct generation *g, const struct strlist *items,
    struct tls_route **out, size_t *out_num)
{
	if (items->num == 0)
		return 0;
	*out = calloc(items->num, sizeof(**out));
	if (*out == NULL)
		return -1;
	for (size_t i = 0; i < items->num; i++) {
		const char *colon = strrchr(items->v[i], ':');

		(*out)[i].protocol = strndup(items->v[i],
		    (size_t)(colon - items->v[i]));
		(*out)[i].backend = generation_backend(g, colon + 1);
		if ((*out)[i].protocol == NULL || (*out)[i].backend == NULL)
			return -1;
		(*out_num)++;
	}
	return 0;
}

/* generation_valid_name accepts host names and "*.suffix" wildcards, the
 * only forms a lookup can match. */
static int
generation_valid_name(const char *name)
{
	const char *p = name;

	if (p[0] == '*') {
		if (p[1] != '.')
			return 0;
		p += 2;
	}
	if (*p == '\0' || *p == '.')
		return 0;
	for (; *p != '\0'; p++) {
		if (*p == '.' && (p[1] == '.' || (p[1] == '\0' && p == name)))
			return 0;
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
		    *p == '_'))
			return 0;
	}
	return 1;
}

/* ctx_set_build_sni fills the server-name table; a name claimed twice is
 * an error naming both places. */
static int
ctx_set_build_sni(struct ctx_set *set, struct config *cfg)
{
	int rc = 0;

	if ((set->sni = sni_new(NULL)) == NULL)
		return -1;
	for (size_t i = 0; i < set->num_contexts; i++) {
		const struct conf_context *cc = &cfg->contexts[i];

		for (size_t j = 0; j < cc->servername.num; j++) {
			const char *name = cc->servername.v[j];
			struct tls_ctx *other = NULL;
			int r = sni_add(set->sni, name, &set->contexts[i],
			    (void **)&other);

			if (r == -1) {
				/* |other| may have failed to load: find its
				 * section by position, not through it. */
				const struct conf_context *oc =
				    &cfg->contexts[other - set->contexts];
				int line = oc->h.line;

				for (size_t k = 0; k < oc->servername.num; k++) {
					if (strcasecmp(oc->servername.v[k], name) == 0)
						line = oc->servername.lines[k];
				}
				config_error(cfg, cc->servername.lines[j],
				    "servername", "'%s' is already served by "
				    "[context %s] (line %d)", name, oc->h.name, line);
				rc = -1;
			} else if (r != 0) {
				config_error(cfg, cc->servername.lines[j],
				    "servername", "'%s' is not a valid server name",
				    name);
				rc = -1;
			}
			if (r == 0 && !generation_valid_name(name)) {
				config_error(cfg, cc->servername.lines[j],
				    "servername", "'%s' is not a host name or a "
				    "*.suffix wildcard", name);
				rc = -1;
			}
		}
	}
	return rc;
}

/* ctx_set_routes resolves each context's own backend and alpn_backend. */
static int
ctx_set_routes(struct ctx_set *set, struct generation *g,
    const struct config *cfg)
{
	for (size_t i = 0; i < set->num_contexts; i++) {
		const struct conf_context *cc = &cfg->contexts[i];
		struct tls_ctx *t = &set->contexts[i];

		if (cc->backend != NULL)
			t->backend = generation_backend(g, cc->backend);
		if (generation_routes(g, &cc->alpn_backend, &t->routes,
		    &t->num_routes) != 0)
			return -1;
	}
	return 0;
}

/* ctx_set_build builds every context with the TLS settings seen through
 * listener |cl| (NULL: [global] only), continuing after a failure so one
 * run reports every broken certificate and key. */
static int
ctx_set_build(struct ctx_set *set, struct generation *g, struct config *cfg,
    const struct conf_listener *cl)
{
	int rc = 0;

	set->contexts = calloc(cfg->num_contexts + 1, sizeof(*set->contexts));
	if (set->contexts == NULL)
		return -1;
	for (size_t i = 0; i < cfg->num_contexts; i++) {
		if (tls_ctx_init(&set->contexts[i], cfg, cl,
		    &cfg->contexts[i]) != 0)
			rc = -1;
		else
			tls_ctx_set_callbacks(&set->contexts[i], conn_select_cert,
			    conn_servername);
		set->num_contexts++;
	}
	if (ctx_set_build_sni(set, cfg) != 0)
		rc = -1;
	if (rc == 0 && ctx_set_routes(set, g, cfg) != 0)
		rc = -1;
	return rc;
}

/* generation_ech_names checks that each ECH public name reaches a
 * context whose certificate covers it: a client whose config is stale
 * authenticates that name before it retries. */
static int
generation_ech_names(struct config *cfg, const struct listener_conf *l,
    const struct ech_public_name *names, size_t num)
{
	int rc = 0;

	for (size_t i = 0; i < num; i++) {
		const struct tls_ctx *t = sni_lookup(l->sni, names[i].name);

		if (t == NULL && l->sni_strict) {
			config_error(cfg, names[i].line, "ech", "'%s': no context "
			    "has the public name %s as a servername (sni_strict "
			    "refuses it)", names[i].file, names[i].name);
			rc = -1;
			continue;
		}
		if (t == NULL)
			t = l->context;
		if (!tls_ctx_covers_name(t, names[i].name)) {
			config_error(cfg, names[i].line, "ech", "'%s': the public "
			    "name %s is answered by [context %s], whose "
			    "certificate does not cover it", names[i].file,
			    names[i].name, t->name);
			rc = -1;
		}
	}
	return rc;
}

/* generation_ech_front builds |l|'s own copy of its default context and
 * gives it the listener's ECH keys. */
static int
generation_ech_front(struct generation *g, struct config *cfg,
    const struct conf_listener *cl, struct listener_conf *l)
{
	struct ech_public_name *names = NULL;
	size_t num_names = 0;
	SSL_ECH_KEYS *keys = ech_load(cfg, cl, &names, &num_names);
	const struct conf_context *cc = l->context->cc;
	struct tls_ctx *t;
	int rc = -1;

	if (keys == NULL)
		return -1;
	if (generation_ech_names(cfg, l, names, num_names) != 0)
		goto out;
	if ((t = l->ech_front = calloc(1, sizeof(*t))) == NULL ||
	    tls_ctx_init(t, cfg, config_listener_has_tls(cl) ? cl : NULL,
	    cc) != 0) {
		free(l->ech_front);
		l->ech_front = NULL;
		goto out;
	}
	tls_ctx_set_callbacks(t, conn_select_cert, conn_servername);
	if (cc->backend != NULL)
		t->backend = generation_backend(g, cc->backend);
	if (generation_routes(g, &cc->alpn_backend, &t->routes,
	    &t->num_routes) != 0 || tls_ctx_set_ech_keys(t, keys) != 0) {
		config_error(cfg, cl->ech.lines[0], "ech", "cannot install the "
		    "ECH keys of [listener %s]", cl->h.name);
		goto out;
	}
	l->context = t;
	rc = 0;
out:
	SSL_ECH_KEYS_free(keys);
	free(names);
	return rc;
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

		const struct ctx_set *set = &g->shared;

		l->name = cl->h.name;
		l->stat_slot = stats_slot(STATS_LISTENER, l->name);
		l->max_connections = cl->max_connections;
		if (cl->acme_http) {
			/* Plain HTTP for http-01: no TLS, no backend. */
			l->acme_http = 1;
			continue;
		}
		if (config_listener_has_tls(cl)) {
			if ((l->own = calloc(1, sizeof(*l->own))) == NULL ||
			    ctx_set_build(l->own, g, cfg, cl) != 0)
				return -1;
			set = l->own;
		}
		l->context = ctx_set_find(set, cl->context);
		l->sni = set->sni;
		l->max_connections = cl->max_connections;
		l->sni_strict = cl->sni_strict != 0;
		l->proxy_protocol = config_proxy_protocol(cl->proxy_protocol);
		l->proxy_cert = cl->proxy_protocol_client_cert != 0;
		l->backend = generation_backend(g, cl->backend);
		if (l->context == NULL || l->backend == NULL ||
		    generation_routes(g, &cl->alpn_backend, &l->routes,
		    &l->num_routes) != 0)
			return -1;
		if (cl->ech.num > 0 && generation_ech_front(g, cfg, cl, l) != 0)
			return -1;
	}
	return 0;
}

/* generation_workers is how many workers the configuration asks for:
 * backend session slots are kept per worker. */
static int
generation_workers(const struct config *cfg)
{
	long n = cfg->global.workers;

	if (n == 0)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	return n < 1 ? 1 : (int)n;
}

/* generation_backend_tls builds the TLS side of every backend that has
 * tls = yes, reporting every broken file. */
static int
generation_backend_tls(struct generation *g, struct config *cfg)
{
	int rc = 0;

	for (size_t i = 0; i < g->num_backends; i++) {
		if (!cfg->backends[i].tls)
			continue;
		g->backends[i].tls = backend_tls_new(cfg, &cfg->backends[i],
		    &g->backends[i], generation_workers(cfg));
		if (g->backends[i].tls == NULL)
			rc = -1;
	}
	return rc;
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
	g->backends = calloc(cfg->num_backends + 1, sizeof(*g->backends));
	if (g->backends == NULL) {
		config_error(cfg, 0, NULL, "out of memory");
		goto fail;
	}
	g->num_backends = cfg->num_backends;
	if (backend_resolve_all(cfg, g->backends) != 0)
		failed = 1;
	for (size_t i = 0; i < g->num_backends; i++) {
		if (g->backends[i].name != NULL)
			g->backends[i].stat_slot = stats_slot(STATS_BACKEND,
			    g->backends[i].name);
	}
	if (!failed && generation_backend_tls(g, cfg) != 0)
		failed = 1;
	if (ctx_set_build(&g->shared, g, cfg, NULL) != 0)
		failed = 1;
	if (config_ticket_keys_file(&cfg->global) != NULL) {
		char err[512];

		if (tickets_load_file(cfg->global.ticket_keys, &g->tickets, err,
		    sizeof(err)) != 0) {
			config_error(cfg, config_key_line(&cfg->global.h,
			    "ticket_keys"), "ticket_keys", "%s", err);
			failed = 1;
		}
	}
	if (config_version(cfg->global.tls.min_version) != 0 &&
	    config_version(cfg->global.tls.min_version) < 0x0303)
		log_msg(LOGL_WARNING, "%s: min_version %s allows protocol "
		    "versions with known weaknesses", cfg->path,
		    cfg->global.tls.min_version);
	if (failed || cfg->num_errors > 0)
		goto fail;
	if (generation_build_listeners(g, cfg) != 0) {
		/* A listener's own TLS settings may be what failed. */
		if (cfg->num_errors == 0)
			config_error(cfg, 0, NULL, "cannot set up listeners");
		goto fail;
	}
	g->cfg = cfg;
	g->loaded_at = (int64_t)time(NULL);
	g->handshake_timeout_ms = cfg->global.handshake_timeout_ms;
	g->idle_timeout_ms = cfg->global.idle_timeout_ms;
	g->buffer_size = cfg->global.buffer_size;
	g->busy_poll_ms = cfg->global.busy_poll_ms;
	g->peer_limits.max_conns =
	    (uint32_t)cfg->global.max_connections_per_address;
	g->peer_limits.rate = (uint32_t)cfg->global.max_handshakes_per_address;
	g->peer_limits.reneg_limit = (uint32_t)cfg->global.renegotiation_limit;
	g->peer_limits.reneg_window_ms = cfg->global.renegotiation_window_ms;
	g->session_store = cfg->global.session_store;
	g->id = atomic_fetch_add(&generation_next_id, 1);
	atomic_fetch_add(&generation_num_live, 1);
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

/* Generations whose last reference went on another thread than the
 * reaper's wait here, linked through |dead_next|, for generation_reap. */
static _Atomic(struct generation *) generation_dead;
static atomic_int generation_reaper_on;
static pthread_t generation_reaper;
static void (*generation_reaper_wake)(void *);
static void *generation_reaper_arg;

/* generation_destroy frees a generation whose last reference is gone. */
static void
generation_destroy(struct generation *g)
{
	log_msg(LOGL_DEBUG, "generation %lu released", g->id);
	generation_free(g);
	atomic_fetch_sub(&generation_num_live, 1);
}

void
generation_set_reaper(void (*wake)(void *), void *arg)
{
	if (wake != NULL) {
		generation_reaper = pthread_self();
		generation_reaper_wake = wake;
		generation_reaper_arg = arg;
		atomic_store(&generation_reaper_on, 1);
		return;
	}
	atomic_store(&generation_reaper_on, 0);
	generation_reap();
}

void
generation_reap(void)
{
	struct generation *g = atomic_exchange(&generation_dead, NULL);

	while (g != NULL) {
		struct generation *next = g->dead_next;

		generation_destroy(g);
		g = next;
	}
}

unsigned long
generation_live(void)
{
	return atomic_load(&generation_num_live);
}

void
generation_unref(struct generation *g)
{
	if (g == NULL ||
	    atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (atomic_load(&generation_reaper_on) &&
	    !pthread_equal(pthread_self(), generation_reaper)) {
		/* Freeing thousands of contexts would stall this worker's
		 * loop: hand the generation to the reaper's thread. Only
		 * pushes race here, and the reaper takes the whole list, so
		 * a plain compare-and-swap push is enough. */
		g->dead_next = atomic_load(&generation_dead);
		while (!atomic_compare_exchange_weak(&generation_dead,
		    &g->dead_next, g))
			;
		generation_reaper_wake(generation_reaper_arg);
		return;
	}
	generation_destroy(g);
}

static struct backend *
generation_route_alpn(const struct tls_route *routes, size_t num,
    const uint8_t *alpn, size_t alpn_len)
{
	for (size_t i = 0; i < num; i++) {
		if (strlen(routes[i].protocol) == alpn_len &&
		    memcmp(routes[i].protocol, alpn, alpn_len) == 0)
			return routes[i].backend;
	}
	return NULL;
}

struct backend *
generation_route(const struct listener_conf *lc, const struct tls_ctx *t,
    const uint8_t *alpn, size_t alpn_len)
{
	struct backend *b = NULL;

	if (t != NULL && alpn_len > 0)
		b = generation_route_alpn(t->routes, t->num_routes, alpn, alpn_len);
	if (b == NULL && t != NULL)
		b = t->backend;
	if (b == NULL && alpn_len > 0)
		b = generation_route_alpn(lc->routes, lc->num_routes, alpn,
		    alpn_len);
	return b != NULL ? b : lc->backend;
}

void
generation_activate(struct generation *g)
{
	const struct conf_global *gl = &g->cfg->global;

	session_cache_configure((size_t)gl->session_cache_size,
	    gl->session_timeout_ms);
	for (size_t i = 0; i < g->shared.num_contexts; i++)
		tls_ctx_activate(&g->shared.contexts[i]);
	if (gl->session_store != NULL)
		session_cache_set_external(conn_store_put, conn_store_get);
	else
		session_cache_set_external(NULL, NULL);
	if (g->tickets.num > 0) {
		tickets_install(&g->tickets, 1);
	} else if (tickets_num() == 0 || (tickets_from_file() &&
	    gl->ticket_keys == NULL)) {
		/* Shared keys from the store replace these once it answers. */
		/* Automatic keys start fresh; later reloads keep them, so
		 * tickets stay valid. */
		struct ticket_ring ring;

		if (tickets_generate(&ring, 1) == 0)
			tickets_install(&ring, 0);
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

const struct listener_conf *
generation_listener_by_addr(const struct generation *g, const struct addr *a)
{
	for (size_t i = 0; i < g->num_listeners; i++) {
		const struct conf_listener *cl = &g->cfg->listeners[i];

		for (size_t j = 0; j < cl->bind.num; j++) {
			if (addr_equal(&cl->addrs[j], a))
				return &g->listeners[i];
		}
	}
	return NULL;
}
