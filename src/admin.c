/* admin.c: /metrics and /status. Everything is read on the control thread
 * at request time: the workers' counters (each written by its worker
 * alone), the published generation, and the control thread's own state
 * (reloads, OCSP tasks), so serving a scrape never slows a worker. */
#include "admin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/keyvalq_struct.h>
#include <openssl/asn1.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "backend.h"
#include "acme.h"
#include "acme_cert.h"
#include "acme_client.h"
#include "backend_tls.h"
#include "clock.h"
#include "config.h"
#include "daemon.h"
#include "generation.h"
#include "log.h"
#include "ocsp.h"
#include "ocsp_fetch.h"
#include "peer_table.h"
#include "stats.h"
#include "tickets.h"
#include "upgrade.h"
#include "worker.h"

/* Requests are tiny; anything bigger is not a scrape. */
#define ADMIN_MAX_HEADERS 8192
#define ADMIN_TIMEOUT_S 10

struct admin {
	struct daemon *d;
	struct evhttp *http;
	char *spec;      /* the admin value it serves */
	struct addr addr;
	char *unix_path; /* removed when the endpoint stops */
	struct evhttp_bound_socket *bound;
};

/* A listening socket received from the process this one replaces. */
static int admin_inherited = -1;

void
admin_inherit(int fd)
{
	if (admin_inherited >= 0)
		close(admin_inherited);
	admin_inherited = fd;
}

/* admin_take_inherited returns the inherited socket if it listens on
 * |addr|, else -1 (and closes it: an endpoint that moved has no use for
 * the old address). */
static int
admin_take_inherited(const struct addr *addr)
{
	struct addr got;
	int fd = admin_inherited;

	if (fd < 0)
		return -1;
	admin_inherited = -1;
	memset(&got, 0, sizeof(got));
	got.len = sizeof(got.ss);
	if (getsockname(fd, (struct sockaddr *)&got.ss, &got.len) == 0 &&
	    addr_equal(&got, addr))
		return fd;
	close(fd);
	return -1;
}

/* ---- text helpers ---- */

/* admin_label appends |s| as a quoted label value or JSON string: both
 * escape backslash, quote and newline the same way. */
static void
admin_quoted(struct evbuffer *b, const char *s)
{
	evbuffer_add(b, "\"", 1);
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '\\' || ch == '"')
			evbuffer_add_printf(b, "\\%c", ch);
		else if (ch == '\n')
			evbuffer_add(b, "\\n", 2);
		else if (ch < 0x20)
			evbuffer_add_printf(b, "\\u%04x", ch);
		else
			evbuffer_add(b, s, 1);
	}
	evbuffer_add(b, "\"", 1);
}

static void
admin_family(struct evbuffer *b, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	    type);
}

/* admin_sample writes "name{k="v",...} value"; |labels| alternate keys
 * and values and end with NULL. */
static void
admin_sample(struct evbuffer *b, const char *name, const char *const *labels,
    double value)
{
	evbuffer_add_printf(b, "%s", name);
	for (int i = 0; labels != NULL && labels[i] != NULL; i += 2) {
		evbuffer_add_printf(b, "%s%s=", i == 0 ? "{" : ",", labels[i]);
		admin_quoted(b, labels[i + 1]);
	}
	if (labels != NULL && labels[0] != NULL)
		evbuffer_add(b, "}", 1);
	if (value == (double)(uint64_t)value && value < 1e15)
		evbuffer_add_printf(b, " %llu\n", (unsigned long long)value);
	else
		evbuffer_add_printf(b, " %.6f\n", value);
}

static void
admin_one(struct evbuffer *b, const char *name, const char *type,
    const char *help, double value)
{
	admin_family(b, name, type, help);
	admin_sample(b, name, NULL, value);
}

/* admin_sum adds up one counter over every worker; |off| is its offset
 * in struct worker_stats. */
static uint64_t
admin_sum(const struct daemon *d, size_t off)
{
	uint64_t n = 0;

	for (int i = 0; i < d->num_workers; i++) {
		const struct worker_stats *s = d->workers[i].stats;

		if (s != NULL)
			n += stat_get((const stat_t *)((const char *)s + off));
	}
	return n;
}

#define SUM(d, field) admin_sum((d), offsetof(struct worker_stats, field))
#define SUMI(d, field, i) admin_sum((d), offsetof(struct worker_stats, \
    field) + (size_t)(i) * sizeof(stat_t))

static int64_t
admin_cert_expiry(SSL_CTX *ctx)
{
	X509 *x = ctx != NULL ? SSL_CTX_get0_certificate(ctx) : NULL;
	int days, secs;

	if (x == NULL || !ASN1_TIME_diff(&days, &secs, NULL,
	    X509_get0_notAfter(x)))
		return 0;
	return (int64_t)time(NULL) + (int64_t)days * 86400 + secs;
}

static const char *const key_type_names[TLS_KEY_NUM] = { "rsa", "ecdsa" };

/* ---- /metrics ---- */

static void
metrics_connections(struct evbuffer *b, const struct daemon *d)
{
	int n = stats_slot_count(STATS_LISTENER);

	admin_family(b, "tlsproxy_connections_open", "gauge",
	    "Client connections open now, by listener.");
	for (int i = 0; i < n; i++) {
		/* Closed first: a connection is closed only after it was
		 * accepted, so the difference never goes negative. */
		uint64_t closed = SUMI(d, closed, i), acc = SUMI(d, accepted, i);
		const char *l[] = { "listener", stats_slot_name(STATS_LISTENER,
		    i), NULL };

		admin_sample(b, "tlsproxy_connections_open", l,
		    (double)(acc - closed));
	}
	admin_family(b, "tlsproxy_connections_total", "counter",
	    "Client connections accepted, by listener.");
	for (int i = 0; i < n; i++) {
		const char *l[] = { "listener", stats_slot_name(STATS_LISTENER,
		    i), NULL };

		admin_sample(b, "tlsproxy_connections_total", l,
		    (double)SUMI(d, accepted, i));
	}
	admin_family(b, "tlsproxy_refused_connections_total", "counter",
	    "Connections closed at accept, before any TLS work, by the limit "
	    "that refused them.");
	for (int r = 0; r < STAT_REFUSAL_COUNT; r++) {
		const char *l[] = { "limit", stat_refusal_names[r], NULL };

		admin_sample(b, "tlsproxy_refused_connections_total", l,
		    (double)SUMI(d, refused, r));
	}
	admin_one(b, "tlsproxy_address_bans_total", "counter", "Client "
	    "addresses banned for renegotiation attempts.",
	    (double)SUM(d, bans));
	if (d->peers != NULL) {
		admin_one(b, "tlsproxy_addresses_banned", "gauge", "Client "
		    "addresses refused now for renegotiation attempts.",
		    (double)peer_table_banned(d->peers, clock_mono_ms()));
		admin_one(b, "tlsproxy_addresses_tracked", "gauge", "Client "
		    "addresses in the per-address table.",
		    (double)peer_table_tracked(d->peers));
	}
}

/* A (version, cipher, resumed) combination summed over workers. */
struct hs_kind {
	uint64_t key;
	uint64_t n;
};

static void
metrics_handshake_kinds(struct evbuffer *b, const struct daemon *d)
{
	struct hs_kind kinds[STATS_HS_KINDS * 4];
	size_t num = 0;

	for (int w = 0; w < d->num_workers; w++) {
		const struct worker_stats *s = d->workers[w].stats;
		uint32_t k = atomic_load_explicit(&s->hs_kinds,
		    memory_order_acquire);

		for (uint32_t i = 0; i < k; i++) {
			uint64_t key = atomic_load_explicit(&s->hs_key[i],
			    memory_order_relaxed);
			size_t j = 0;

			while (j < num && kinds[j].key != key)
				j++;
			if (j == num) {
				if (num == sizeof(kinds) / sizeof(kinds[0]))
					continue;
				kinds[num].key = key;
				kinds[num++].n = 0;
			}
			kinds[j].n += stat_get(&s->hs_count[i]);
		}
	}
	admin_family(b, "tlsproxy_handshakes_total", "counter",
	    "Finished TLS handshakes, by protocol version, cipher and whether "
	    "the session was resumed.");
	for (size_t i = 0; i < num; i++) {
		uint16_t version, cipher;
		int resumed;
		const SSL_CIPHER *c;
		char cname[16];
		const char *vname;

		stats_hs_unkey(kinds[i].key, &version, &cipher, &resumed);
		c = SSL_get_cipher_by_value(cipher);
		snprintf(cname, sizeof(cname), "0x%04x", cipher);
		vname = version == TLS1_3_VERSION ? "TLSv1.3" :
		    version == TLS1_2_VERSION ? "TLSv1.2" :
		    version == TLS1_1_VERSION ? "TLSv1.1" :
		    version == TLS1_VERSION ? "TLSv1" : "unknown";
		const char *l[] = { "version", vname, "cipher", c != NULL ?
		    SSL_CIPHER_get_name(c) : cname, "resumed", resumed ? "yes" :
		    "no", NULL };
		admin_sample(b, "tlsproxy_handshakes_total", l,
		    (double)kinds[i].n);
	}
}

static void
metrics_handshakes(struct evbuffer *b, const struct daemon *d)
{
	uint64_t cum = 0;

	metrics_handshake_kinds(b, d);
	admin_family(b, "tlsproxy_handshakes_by_group_total", "counter",
	    "Finished TLS handshakes, by key-exchange group.");
	for (int g = 0; g < STAT_GROUP_COUNT; g++) {
		const char *l[] = { "group", stat_group_names[g], NULL };

		admin_sample(b, "tlsproxy_handshakes_by_group_total", l,
		    (double)SUMI(d, hs_group, g));
	}
	admin_family(b, "tlsproxy_handshakes_by_ech_total", "counter",
	    "Finished TLS handshakes, by what became of an Encrypted Client "
	    "Hello (rejected: not decryptable, including GREASE; none: not "
	    "offered, or the listener has no ech keys).");
	for (int e = 0; e < STAT_ECH_COUNT; e++) {
		const char *l[] = { "outcome", stat_ech_names[e], NULL };

		admin_sample(b, "tlsproxy_handshakes_by_ech_total", l,
		    (double)SUMI(d, hs_ech, e));
	}
	admin_one(b, "tlsproxy_hello_retry_requests_total", "counter",
	    "TLS 1.3 handshakes that took a HelloRetryRequest (the client "
	    "sent no key share for the group chosen).",
	    (double)SUM(d, hello_retry_requests));
	admin_family(b, "tlsproxy_handshake_failures_total", "counter",
	    "Failed handshakes by reason (renegotiation: a client that tried "
	    "to renegotiate a finished one).");
	for (int r = 0; r < STAT_HS_FAIL_COUNT; r++) {
		const char *l[] = { "reason", stat_hs_fail_names[r], NULL };

		admin_sample(b, "tlsproxy_handshake_failures_total", l,
		    (double)SUMI(d, hs_fail, r));
	}
	admin_family(b, "tlsproxy_handshake_duration_seconds", "histogram",
	    "Time from accept to a finished handshake.");
	for (int i = 0; i <= STAT_HS_BUCKETS; i++) {
		char le[32];
		const char *l[] = { "le", le, NULL };

		cum += SUMI(d, hs_bucket, i);
		if (i < STAT_HS_BUCKETS)
			snprintf(le, sizeof(le), "%g",
			    stat_hs_bounds_us[i] / 1e6);
		else
			snprintf(le, sizeof(le), "+Inf");
		admin_sample(b, "tlsproxy_handshake_duration_seconds_bucket", l,
		    (double)cum);
	}
	admin_sample(b, "tlsproxy_handshake_duration_seconds_sum", NULL,
	    (double)SUM(d, hs_sum_us) / 1e6);
	admin_sample(b, "tlsproxy_handshake_duration_seconds_count", NULL,
	    (double)cum);
}

static void
metrics_traffic(struct evbuffer *b, const struct daemon *d)
{
	const char *in[] = { "direction", "client_to_backend", NULL };
	const char *out[] = { "direction", "backend_to_client", NULL };
	int n = stats_slot_count(STATS_BACKEND);

	admin_family(b, "tlsproxy_bytes_total", "counter", "Application "
	    "bytes relayed.");
	admin_sample(b, "tlsproxy_bytes_total", in,
	    (double)SUM(d, bytes_from_client));
	admin_sample(b, "tlsproxy_bytes_total", out,
	    (double)SUM(d, bytes_from_backend));
	admin_family(b, "tlsproxy_backend_connect_failures_total", "counter",
	    "Failed connection attempts to a backend address, by backend.");
	for (int i = 0; i < n; i++) {
		const char *l[] = { "backend", stats_slot_name(STATS_BACKEND, i),
		    NULL };

		admin_sample(b, "tlsproxy_backend_connect_failures_total", l,
		    (double)SUMI(d, backend_failed, i));
	}
}

static void
metrics_config(struct evbuffer *b, const struct daemon *d,
    const struct generation *g)
{
	const char *ok[] = { "result", "ok", NULL };
	const char *failed[] = { "result", "failed", NULL };

	admin_family(b, "tlsproxy_reloads_total", "counter",
	    "Configuration reloads (SIGHUP), by result.");
	admin_sample(b, "tlsproxy_reloads_total", ok, (double)d->reloads_ok);
	admin_sample(b, "tlsproxy_reloads_total", failed,
	    (double)d->reloads_failed);
	admin_family(b, "tlsproxy_upgrades_total", "counter",
	    "Binary upgrades started by this process (SIGUSR2), by result.");
	admin_sample(b, "tlsproxy_upgrades_total", ok, (double)d->upgrades_ok);
	admin_sample(b, "tlsproxy_upgrades_total", failed,
	    (double)d->upgrades_failed);
	admin_one(b, "tlsproxy_config_generation", "gauge", "Number of the "
	    "configuration generation in use (1 at start).", (double)g->id);
	admin_one(b, "tlsproxy_config_loaded_timestamp_seconds", "gauge",
	    "When the configuration in use was loaded (Unix time).",
	    (double)g->loaded_at);
	admin_one(b, "tlsproxy_workers", "gauge", "Worker threads.",
	    (double)d->num_workers);
	admin_one(b, "tlsproxy_access_log_dropped_lines_total", "counter",
	    "Access-log lines dropped because the log target fell behind.",
	    (double)log_access_dropped());
	admin_one(b, "tlsproxy_log_dropped_lines_total", "counter",
	    "Log messages dropped because standard error fell behind.",
	    (double)log_msg_dropped());
}

static void
metrics_certificates(struct evbuffer *b, const struct generation *g)
{
	admin_family(b, "tlsproxy_certificate_expiry_timestamp_seconds",
	    "gauge", "When each context's certificate expires (Unix time).");
	for (size_t i = 0; i < g->shared.num_contexts; i++) {
		const struct tls_ctx *t = &g->shared.contexts[i];

		for (int k = 0; k < TLS_KEY_NUM; k++) {
			const char *l[] = { "context", t->name, "type",
			    key_type_names[k], NULL };

			if (t->ctx[k] == NULL)
				continue;
			admin_sample(b, "tlsproxy_certificate_expiry_"
			    "timestamp_seconds", l, (double)(t->acme != NULL ?
			    acme_slot_not_after(t->acme) :
			    admin_cert_expiry(t->ctx[k])));
		}
	}
}

struct ocsp_metrics {
	struct evbuffer *b;
	int pass;
};

static const char *const ocsp_families[][3] = {
	{ "tlsproxy_ocsp_stapled", "gauge", "1 while a valid OCSP response "
	  "is stapled for the certificate." },
	{ "tlsproxy_ocsp_this_update_timestamp_seconds", "gauge",
	  "thisUpdate of the response in use (its age is now minus this)." },
	{ "tlsproxy_ocsp_valid_until_timestamp_seconds", "gauge",
	  "When the stapled response expires." },
	{ "tlsproxy_ocsp_next_refresh_timestamp_seconds", "gauge",
	  "When the response is fetched or checked next." },
	{ "tlsproxy_ocsp_last_attempt_timestamp_seconds", "gauge",
	  "When the response was last fetched or read." },
	{ "tlsproxy_ocsp_last_attempt_ok", "gauge",
	  "1 if the last fetch gave a usable response." },
	{ "tlsproxy_ocsp_revoked", "gauge",
	  "1 if the last response says the certificate is revoked." },
};

static void
metrics_ocsp_task(const struct ocsp_task_status *st, void *arg)
{
	struct ocsp_metrics *m = arg;
	const char *l[] = { "context", st->context, "type",
	    key_type_names[st->key_type], NULL };
	double v[] = { st->stapled, (double)st->this_update,
	    (double)st->valid_until, (double)st->next_refresh,
	    (double)st->last_attempt, st->last_ok,
	    st->status == OCSP_REVOKED };

	admin_sample(m->b, ocsp_families[m->pass][0], l, v[m->pass]);
}

static void
metrics_ocsp(struct evbuffer *b, const struct daemon *d)
{
	struct ocsp_metrics m = { b, 0 };

	/* One pass per family: samples of a family must be together. */
	for (m.pass = 0; m.pass < (int)(sizeof(ocsp_families) /
	    sizeof(ocsp_families[0])); m.pass++) {
		admin_family(b, ocsp_families[m.pass][0],
		    ocsp_families[m.pass][1], ocsp_families[m.pass][2]);
		ocsp_fetcher_foreach(d->ocsp, metrics_ocsp_task, &m);
	}
}

static void
metrics_sessions(struct evbuffer *b, const struct daemon *d)
{
	int64_t since = tickets_key_since();
	int links = 0, up = 0;

	if (since != 0)
		admin_one(b, "tlsproxy_ticket_key_age_seconds", "gauge",
		    "Age of the key that encrypts new session tickets.",
		    (double)((int64_t)time(NULL) - since));
	for (int i = 0; i < d->num_workers; i++) {
		int st = atomic_load_explicit(&d->workers[i].stats->store_state,
		    memory_order_relaxed);

		links += st != 0;
		up += st == 2;
	}
	if (links == 0)
		return;
	admin_one(b, "tlsproxy_session_store_up", "gauge", "1 while every "
	    "worker's link to the session store is up.", up == links);
	admin_one(b, "tlsproxy_session_store_lookups_total", "counter",
	    "Session lookups the store answered or timed out.",
	    (double)SUM(d, store_lookups));
	admin_one(b, "tlsproxy_session_store_lookup_seconds_total", "counter",
	    "Time handshakes waited for the store (divide by lookups for the "
	    "mean latency).", (double)SUM(d, store_lookup_us) / 1e6);
}

/* metrics_backend_tls counts TLS to the backends that have it now; the
 * counters of a backend that had it before a reload stay in its slot. */
static void
metrics_backend_tls(struct evbuffer *b, const struct daemon *d,
    const struct generation *g)
{
	admin_family(b, "tlsproxy_backend_tls_handshakes_total", "counter",
	    "Finished TLS handshakes with backends, by backend and whether "
	    "they resumed a session.");
	for (size_t i = 0; i < g->num_backends; i++) {
		const struct backend *be = &g->backends[i];
		uint64_t all = SUMI(d, bt_handshakes, be->stat_slot),
		    resumed = SUMI(d, bt_resumed, be->stat_slot);
		const char *yes[] = { "backend", be->name, "resumed", "yes", NULL };
		const char *no[] = { "backend", be->name, "resumed", "no", NULL };

		if (be->tls == NULL)
			continue;
		admin_sample(b, "tlsproxy_backend_tls_handshakes_total", yes,
		    (double)resumed);
		admin_sample(b, "tlsproxy_backend_tls_handshakes_total", no,
		    (double)(all - resumed));
	}
	admin_family(b, "tlsproxy_backend_tls_failures_total", "counter",
	    "Failed TLS handshakes with a backend address, by backend and "
	    "reason (certificate, name, protocol, timeout, closed, alpn).");
	for (size_t i = 0; i < g->num_backends; i++) {
		const struct backend *be = &g->backends[i];

		if (be->tls == NULL)
			continue;
		for (int k = 0; k < BACKEND_TLS_FAIL_COUNT; k++) {
			const char *l[] = { "backend", be->name, "reason",
			    backend_tls_fail_names[k], NULL };

			admin_sample(b, "tlsproxy_backend_tls_failures_total", l,
			    (double)SUMI(d, bt_fail, be->stat_slot *
			    BACKEND_TLS_FAIL_COUNT + k));
		}
	}
}

/* The per-order families, one pass of acme_foreach each: a family's
 * samples must follow its HELP and TYPE lines. */
static const char *const acme_order_families[][3] = {
	{ "tlsproxy_acme_last_attempt_timestamp_seconds", "gauge",
	  "When each order was last attempted (0: not since start)." },
	{ "tlsproxy_acme_last_attempt_ok", "gauge",
	  "0 when the order's last attempt failed, else 1." },
	{ "tlsproxy_acme_next_attempt_timestamp_seconds", "gauge",
	  "When the ACME side looks at each order next." },
};

struct metrics_acme {
	struct evbuffer *b;
	int family;
};

static void
metrics_acme_order(void *arg, const struct acme_order_status *st)
{
	const struct metrics_acme *m = arg;
	const char *l[] = { "names", st->names, "account", st->account, NULL };
	double v = m->family == 0 ? (double)st->last_attempt :
	    m->family == 1 ? (strcmp(st->last_result, "failed") == 0 ? 0.0 :
	    1.0) : (double)st->next_attempt;

	admin_sample(m->b, acme_order_families[m->family][0], l, v);
}

static void
metrics_acme(struct evbuffer *b, struct daemon *d)
{
	uint64_t ok, failed[ACME_FAIL_COUNT];

	if (d->acme == NULL)
		return;
	acme_counters(d->acme, &ok, failed);
	admin_one(b, "tlsproxy_acme_orders_ok_total", "counter",
	    "ACME orders that ended with a certificate in service.", (double)ok);
	admin_family(b, "tlsproxy_acme_order_failures_total", "counter",
	    "ACME orders and renewals that failed, by reason.");
	for (int i = 0; i < ACME_FAIL_COUNT; i++) {
		const char *l[] = { "reason", acme_fail_names[i], NULL };

		if (i != ACME_FAIL_CANCELLED)
			admin_sample(b, "tlsproxy_acme_order_failures_total", l,
			    (double)failed[i]);
	}
	for (int f = 0; f < 3; f++) {
		struct metrics_acme m = { b, f };

		admin_family(b, acme_order_families[f][0],
		    acme_order_families[f][1], acme_order_families[f][2]);
		acme_foreach(d->acme, metrics_acme_order, &m);
	}
}

static void
admin_metrics(struct evbuffer *b, struct daemon *d)
{
	struct generation *g = generation_current();

	metrics_connections(b, d);
	metrics_handshakes(b, d);
	metrics_traffic(b, d);
	if (g != NULL) {
		metrics_config(b, d, g);
		metrics_certificates(b, g);
		metrics_backend_tls(b, d, g);
	}
	metrics_ocsp(b, d);
	metrics_sessions(b, d);
	metrics_acme(b, d);
	generation_unref(g);
}

/* ---- /status ---- */

static void
status_strings(struct evbuffer *b, const struct strlist *l)
{
	evbuffer_add(b, "[", 1);
	for (size_t i = 0; i < l->num; i++) {
		if (i > 0)
			evbuffer_add(b, ",", 1);
		admin_quoted(b, l->v[i]);
	}
	evbuffer_add(b, "]", 1);
}

static void
status_listeners(struct evbuffer *b, const struct daemon *d,
    const struct generation *g)
{
	evbuffer_add_printf(b, ",\"listeners\":[");
	for (size_t i = 0; i < g->num_listeners; i++) {
		const struct listener_conf *l = &g->listeners[i];
		const struct conf_listener *cl = &g->cfg->listeners[i];
		uint64_t closed = SUMI(d, closed, l->stat_slot);
		uint64_t acc = SUMI(d, accepted, l->stat_slot);

		evbuffer_add_printf(b, "%s{\"name\":", i > 0 ? "," : "");
		admin_quoted(b, l->name);
		evbuffer_add_printf(b, ",\"bind\":");
		status_strings(b, &cl->bind);
		evbuffer_add_printf(b, ",\"connections\":%llu,"
		    "\"connections_total\":%llu}",
		    (unsigned long long)(acc - closed), (unsigned long long)acc);
	}
	evbuffer_add(b, "]", 1);
}

static void
status_contexts(struct evbuffer *b, const struct generation *g)
{
	evbuffer_add_printf(b, ",\"contexts\":[");
	for (size_t i = 0; i < g->shared.num_contexts; i++) {
		const struct tls_ctx *t = &g->shared.contexts[i];
		int first = 1;

		evbuffer_add_printf(b, "%s{\"name\":", i > 0 ? "," : "");
		admin_quoted(b, t->name);
		evbuffer_add_printf(b, ",\"servernames\":");
		status_strings(b, &t->cc->servername);
		evbuffer_add_printf(b, ",\"certificates\":[");
		for (int k = 0; k < TLS_KEY_NUM; k++) {
			if (t->ctx[k] == NULL)
				continue;
			evbuffer_add_printf(b, "%s{\"type\":\"%s\","
			    "\"not_after\":%lld}", first ? "" : ",",
			    key_type_names[k], (long long)(t->acme != NULL ?
			    acme_slot_not_after(t->acme) :
			    admin_cert_expiry(t->ctx[k])));
			first = 0;
		}
		evbuffer_add(b, "]}", 2);
	}
	evbuffer_add(b, "]", 1);
}

struct status_acme {
	struct evbuffer *b;
	int n;
};

static void
status_acme_order(void *arg, const struct acme_order_status *st)
{
	struct status_acme *sa = arg;

	evbuffer_add_printf(sa->b, "%s{\"names\":", sa->n++ > 0 ? "," : "");
	admin_quoted(sa->b, st->names);
	evbuffer_add_printf(sa->b, ",\"account\":");
	admin_quoted(sa->b, st->account);
	evbuffer_add_printf(sa->b, ",\"not_after\":%lld,\"renew_at\":%lld,"
	    "\"next_attempt\":%lld,\"last_attempt\":%lld,\"last_result\":",
	    (long long)st->not_after, (long long)st->renew_at,
	    (long long)st->next_attempt, (long long)st->last_attempt);
	admin_quoted(sa->b, st->last_result);
	evbuffer_add_printf(sa->b, ",\"last_error\":");
	admin_quoted(sa->b, st->last_error);
	evbuffer_add(sa->b, "}", 1);
}

static void
status_acme(struct evbuffer *b, struct daemon *d)
{
	struct status_acme sa = { b, 0 };

	evbuffer_add_printf(b, ",\"acme\":[");
	if (d->acme != NULL)
		acme_foreach(d->acme, status_acme_order, &sa);
	evbuffer_add(b, "]", 1);
}

static void
admin_status(struct evbuffer *b, struct daemon *d)
{
	struct generation *g = generation_current();

	if (g == NULL) {
		evbuffer_add_printf(b, "{\"state\":\"stopping\"}\n");
		return;
	}
	evbuffer_add_printf(b, "{\"version\":\"%s\",\"pid\":%d,"
	    "\"state\":\"%s\",\"generation\":%lu,\"config\":",
	    TLSPROXY_VERSION, (int)getpid(), d->handed_over ? "handed over" :
	    d->stopping ? "stopping" : d->upgrade != NULL ? "upgrading" :
	    "serving", g->id);
	admin_quoted(b, g->cfg->path);
	evbuffer_add_printf(b, ",\"loaded_at\":%lld,\"reloads_ok\":%lu,"
	    "\"reloads_failed\":%lu,\"last_reload\":", (long long)g->loaded_at,
	    d->reloads_ok, d->reloads_failed);
	admin_quoted(b, d->last_reload[0] != '\0' ? d->last_reload : "-");
	evbuffer_add_printf(b, ",\"upgrades_ok\":%lu,\"upgrades_failed\":%lu,"
	    "\"last_upgrade\":", d->upgrades_ok, d->upgrades_failed);
	admin_quoted(b, d->last_upgrade[0] != '\0' ? d->last_upgrade : "-");
	{
		int unverified = 0;

		for (size_t i = 0; i < g->num_backends; i++)
			unverified += backend_tls_unverified(g->backends[i].tls);
		evbuffer_add_printf(b, ",\"backends_tls_unverified\":%d",
		    unverified);
	}
	evbuffer_add_printf(b, ",\"workers\":%d,\"connections\":%ld",
	    d->num_workers, atomic_load(&d->num_conns));
	evbuffer_add_printf(b, ",\"handshakes_by_group\":{");
	for (int i = 0; i < STAT_GROUP_COUNT; i++)
		evbuffer_add_printf(b, "%s\"%s\":%llu", i > 0 ? "," : "",
		    stat_group_names[i], (unsigned long long)SUMI(d, hs_group,
		    i));
	evbuffer_add_printf(b, "},\"hello_retry_requests\":%llu",
	    (unsigned long long)SUM(d, hello_retry_requests));
	evbuffer_add_printf(b, ",\"handshakes_by_ech\":{");
	for (int i = 0; i < STAT_ECH_COUNT; i++)
		evbuffer_add_printf(b, "%s\"%s\":%llu", i > 0 ? "," : "",
		    stat_ech_names[i], (unsigned long long)SUMI(d, hs_ech, i));
	evbuffer_add(b, "}", 1);
	status_listeners(b, d, g);
	status_contexts(b, g);
	status_acme(b, d);
	evbuffer_add(b, "}\n", 2);
	generation_unref(g);
}

/* ---- HTTP ---- */

/* admin_upgrade answers POST /upgrade: 202 once the new process is
 * started (the outcome shows in /status), 409 when none can start. */
static void
admin_upgrade(struct evhttp_request *req, struct daemon *d,
    struct evbuffer *b)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char err[256];

	evhttp_add_header(h, "Content-Type", "text/plain");
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		evhttp_add_header(h, "Allow", "POST");
		evhttp_send_error(req, 405, "POST /upgrade");
		return;
	}
	if (daemon_upgrade(d, "admin", err, sizeof(err)) != 0) {
		evbuffer_add_printf(b, "%s\n", err);
		evhttp_send_reply(req, 409, "Conflict", b);
		return;
	}
	evbuffer_add_printf(b, "upgrading: process %d is starting\n",
	    (int)upgrade_pid(d->upgrade));
	evhttp_send_reply(req, 202, "Accepted", b);
}

static void
admin_request_cb(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(
	    req));
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *b = evbuffer_new();

	if (b == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	if (evhttp_request_get_command(req) == EVHTTP_REQ_POST &&
	    (path == NULL || (strcmp(path, "/ocsp/refetch") != 0 &&
	    strcmp(path, "/upgrade") != 0))) {
		evbuffer_free(b);
		evhttp_add_header(h, "Allow", "GET, HEAD");
		evhttp_send_error(req, 405, NULL);
		return;
	}
	if (path != NULL && strcmp(path, "/metrics") == 0) {
		admin_metrics(b, a->d);
		evhttp_add_header(h, "Content-Type",
		    "text/plain; version=0.0.4; charset=utf-8");
	} else if (path != NULL && strcmp(path, "/status") == 0) {
		admin_status(b, a->d);
		evhttp_add_header(h, "Content-Type", "application/json");
	} else if (path != NULL && strcmp(path, "/ocsp/refetch") == 0) {
		/* A change, so not on a GET that a crawler or a cache might
		 * repeat. */
		if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
			evbuffer_free(b);
			evhttp_add_header(h, "Allow", "POST");
			evhttp_send_error(req, 405, "POST /ocsp/refetch");
			return;
		}
		log_msg(LOGL_INFO, "admin: fetching every OCSP response now");
		evbuffer_add_printf(b, "fetching %zu OCSP responses\n",
		    ocsp_fetcher_refresh(a->d->ocsp));
		evhttp_add_header(h, "Content-Type", "text/plain");
		evhttp_add_header(h, "Cache-Control", "no-store");
		evhttp_send_reply(req, 202, "Accepted", b);
		evbuffer_free(b);
		return;
	} else if (path != NULL && strcmp(path, "/upgrade") == 0) {
		admin_upgrade(req, a->d, b);
		evbuffer_free(b);
		return;
	} else {
		evbuffer_free(b);
		evhttp_send_error(req, HTTP_NOTFOUND, "try /metrics, /status, "
		    "POST /ocsp/refetch or POST /upgrade");
		return;
	}
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

/* admin_listen makes the listening socket for |addr|: a stale unix socket
 * file left by an earlier run is replaced. */
static int
admin_listen(const struct addr *addr)
{
	const struct sockaddr_un *un = (const struct sockaddr_un *)&addr->ss;
	int fd, one = 1;
	struct stat st;

	if ((fd = admin_take_inherited(addr)) >= 0)
		return fd;
	if (addr->ss.ss_family == AF_UNIX && lstat(un->sun_path, &st) == 0 &&
	    S_ISSOCK(st.st_mode))
		unlink(un->sun_path);
	fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (addr->ss.ss_family != AF_UNIX)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) != 0 ||
	    (addr->ss.ss_family == AF_UNIX && chmod(un->sun_path, 0660) != 0) ||
	    listen(fd, 64) != 0) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static struct admin *
admin_start(struct daemon *d, const struct conf_global *g)
{
	struct admin *a = calloc(1, sizeof(*a));
	struct evconnlistener *listener;
	int fd = -1;

	if (a == NULL || (a->spec = strdup(g->admin)) == NULL ||
	    (a->http = evhttp_new(d->base)) == NULL)
		goto fail;
	a->d = d;
	a->addr = g->admin_addr;
	if ((fd = admin_listen(&g->admin_addr)) < 0)
		goto fail;
	/* Made here rather than by evhttp_accept_socket_with_handle, whose
	 * NULL does not say whether the socket was closed already: until
	 * the listener exists the socket is ours to close, after that the
	 * listener's. */
	listener = evconnlistener_new(d->base, NULL, NULL,
	    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_CLOSE_ON_FREE, 0,
	    fd);
	if (listener == NULL) {
		close(fd);
		goto fail;
	}
	if ((a->bound = evhttp_bind_listener(a->http, listener)) == NULL) {
		evconnlistener_free(listener);
		goto fail;
	}
	if (g->admin_addr.ss.ss_family == AF_UNIX)
		a->unix_path = strdup(((const struct sockaddr_un *)
		    &g->admin_addr.ss)->sun_path);
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD |
	    EVHTTP_REQ_POST);
	evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS);
	evhttp_set_max_body_size(a->http, 0);
	evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
	evhttp_set_gencb(a->http, admin_request_cb, a);
	log_msg(LOGL_INFO, "admin endpoint on %s (/metrics, /status, "
	    "POST /ocsp/refetch, POST /upgrade)",
	    g->admin);
	return a;
fail:
	log_msg(LOGL_ERROR, "admin: cannot listen on %s: %s", g->admin,
	    strerror(errno));
	admin_free(a);
	return NULL;
}

int
admin_apply(struct admin **a, struct daemon *d, const struct conf_global *g)
{
	struct admin *next;

	if (g->admin == NULL) {
		admin_free(*a);
		*a = NULL;
		return 0;
	}
	if (*a != NULL && strcmp((*a)->spec, g->admin) == 0)
		return 0;
	/* The old endpoint goes first: the new one may want its address. */
	if (*a != NULL && addr_equal(&g->admin_addr, &(*a)->addr)) {
		admin_free(*a);
		*a = NULL;
	}
	next = admin_start(d, g);
	if (next == NULL)
		return -1;
	admin_free(*a);
	*a = next;
	return 0;
}

int
admin_fd(const struct admin *a)
{
	if (a == NULL || a->bound == NULL)
		return -1;
	return evhttp_bound_socket_get_fd(a->bound);
}

void
admin_hand_over(struct admin *a)
{
	if (a == NULL || a->bound == NULL)
		return;
	evhttp_del_accept_socket(a->http, a->bound);
	a->bound = NULL;
	free(a->unix_path);
	a->unix_path = NULL;
}

void
admin_free(struct admin *a)
{
	if (a == NULL)
		return;
	if (a->http != NULL)
		evhttp_free(a->http);
	if (a->unix_path != NULL)
		unlink(a->unix_path);
	free(a->unix_path);
	free(a->spec);
	free(a);
}
