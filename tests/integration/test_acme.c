/* Automatic certificates against Pebble, Let's Encrypt's test CA, with
 * real validation: Pebble's validation authority connects to the daemon's
 * listener (tls-alpn-01), looking the names up in pebble-challtestsrv,
 * which answers 127.0.0.1 for every name.
 *  - The first certificate is obtained through tls-alpn-01 and served
 *    within seconds; its chain verifies against Pebble's root. Before it
 *    exists the names are refused with unrecognized_name.
 *  - A restart takes the certificate from disk: no new order.
 *  - acme-tls/1 for a name not being validated is refused.
 *  - Pebble down: the order fails, is logged and counted, and retried. */
#include <check.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"
#include "pebble.h"

#define NAME "www.acme.test"
#define NAME2 "api.acme.test"

struct acme_t {
	struct h_pebble p;
	struct h_daemon d;
	int port;
	int admin;
	int http;     /* the acme_http listener, 0: none */
	const char *challenge; /* acme_challenge, NULL: the default */
	const char *global;    /* more [global] lines, NULL: none */
	int bport;    /* an echo backend, 0: none */
	pid_t bpid;
	char state[600];
	char root[600];
};

/* conf writes the daemon's configuration: a static context for
 * localhost (the listener's default) and an ACME context for NAME and
 * NAME2, at Pebble's |directory|. */
static const char *
conf(struct acme_t *t, const char *directory, const char *extra_acme)
{
	static char buf[4096];
	char http[128] = "", challenge[64] = "";

	if (t->http != 0)
		snprintf(http, sizeof(http), "[listener h]\nbind = 127.0.0.1:%d\n"
		    "acme_http = yes\n", t->http);
	if (t->challenge != NULL)
		snprintf(challenge, sizeof(challenge), "acme_challenge = %s\n",
		    t->challenge);
	snprintf(buf, sizeof(buf),
	    "[global]\nworkers = 2\nlog_level = info\nadmin = 127.0.0.1:%d\n%s"
	    "[listener l]\nbind = 127.0.0.1:%d\ncontext = main\nbackend = b\n"
	    "%s"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context main]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n"
	    "[context auto]\nservername = " NAME ", " NAME2 "\n"
	    "acme = pebble\n%s"
	    "[acme pebble]\ndirectory = %s\n%s%s%sstate_dir = %s\n"
	    "email = ops@acme.test\n%s",
	    t->admin, t->global != NULL ? t->global : "", t->port, http,
	    t->bport != 0 ? t->bport : 9, h_dir(),
	    h_dir(), challenge, directory, t->p.ca[0] != '\0' ? "ca = " : "",
	    t->p.ca, t->p.ca[0] != '\0' ? "\n" : "", t->state,
	    extra_acme != NULL ? extra_acme : "");
	return buf;
}

/* pebble_requests counts the requests for |path| in Pebble's log. */
static int
pebble_requests(const struct h_pebble *p, const char *path)
{
	char *out = h_run(NULL, "grep -c 'POST %s' '%s'", path, p->log);
	int n = atoi(out);

	free(out);
	return n;
}

static void
start_pebble(struct acme_t *t, const char *env)
{
	char *root;

	ck_assert_int_eq(h_pebble_start(&t->p, h_free_port(), t->port, env), 0);
	root = h_pebble_root(&t->p);
	ck_assert_ptr_nonnull(root);
	snprintf(t->root, sizeof(t->root), "%s", h_write("pebble-root.pem",
	    root));
	free(root);
}

static void
start_daemon(struct acme_t *t, const char *name, const char *directory,
    const char *extra)
{
	ck_assert_int_eq(h_daemon_start(&t->d, name, conf(t, directory,
	    extra)), 0);
	t->d.port = t->port;
}

static void
setup_ports(struct acme_t *t, const char *name)
{
	memset(t, 0, sizeof(*t));
	t->port = h_free_port();
	t->admin = h_free_port();
	snprintf(t->state, sizeof(t->state), "%s/%s-state", h_dir(), name);
}

/* verify connects for |name| and returns s_client's verdict against
 * Pebble's root, with the subject and issuer lines. */
static char *
verify(const struct acme_t *t, const char *name, const char *alpn)
{
	return h_run(NULL, "echo | timeout 10 openssl s_client -connect "
	    "127.0.0.1:%d -servername %s -CAfile %s -verify_return_error "
	    "-verify_hostname %s %s%s 2>&1 | grep -E 'Verify return code|"
	    "alert|^subject=|^issuer='", t->port, name, t->root, name,
	    alpn != NULL ? "-alpn " : "", alpn != NULL ? alpn : "");
}

START_TEST(first_certificate_through_tls_alpn_then_from_disk)
{
	struct acme_t t;
	char *out;
	int orders;

	setup_ports(&t, "first");
	start_pebble(&t, "PEBBLE_WFE_NONCEREJECT=0");
	start_daemon(&t, "first", t.p.directory, NULL);
	ck_assert_msg(h_log_contains(&t.d, "acme: " NAME "," NAME2 ": new "
	    "certificate in service", 60000), "no certificate: see %s",
	    t.d.log);
	out = verify(&t, NAME, NULL);
	ck_assert_msg(strstr(out, "Verify return code: 0 (ok)") != NULL,
	    "%s", out);
	free(out);
	out = verify(&t, NAME2, "h2");
	ck_assert_msg(strstr(out, "Verify return code: 0 (ok)") != NULL,
	    "%s", out);
	free(out);
	/* The key and chain are kept, the key private. */
	out = h_run(NULL, "stat -c '%%a %%n' %s/" NAME "-*/key.pem "
	    "%s/account-pebble.key", t.state, t.state);
	ck_assert_msg(strstr(out, "600 ") != NULL && strstr(out,
	    "account-pebble.key") != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "curl -sf http://127.0.0.1:%d/status", t.admin);
	ck_assert_msg(strstr(out, "\"last_result\":\"ok\"") != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "curl -sf http://127.0.0.1:%d/metrics | grep "
	    "'^tlsproxy_acme_orders_ok_total'", t.admin);
	ck_assert_msg(strstr(out, "tlsproxy_acme_orders_ok_total 1") != NULL,
	    "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);

	/* Restart: the certificate comes from disk, Pebble sees no order. */
	orders = pebble_requests(&t.p, "/order-plz");
	start_daemon(&t, "first-again", t.p.directory, NULL);
	ck_assert(h_log_contains(&t.d, "certificate from", 10000));
	out = verify(&t, NAME, NULL);
	ck_assert_msg(strstr(out, "Verify return code: 0 (ok)") != NULL,
	    "%s", out);
	free(out);
	sleep(2);
	ck_assert_int_eq(pebble_requests(&t.p, "/order-plz"), orders);
	ck_assert(!h_log_contains(&t.d, "ordering", 0));
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);
	h_pebble_stop(&t.p);
}
END_TEST

START_TEST(names_refused_until_issued_and_foreign_challenges_refused)
{
	struct acme_t t;
	char *out;

	setup_ports(&t, "refused");
	/* Pebble is not running yet: the order cannot start. */
	start_daemon(&t, "refused", "https://127.0.0.1:1/dir", NULL);
	ck_assert(h_log_contains(&t.d, "order failed (network)", 20000));
	t.p.ca[0] = '\0';
	out = h_run(NULL, "echo | timeout 10 openssl s_client -connect "
	    "127.0.0.1:%d -servername " NAME " 2>&1 | grep -i alert", t.port);
	ck_assert_msg(strstr(out, "unrecognized name") != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "echo | timeout 10 openssl s_client -connect "
	    "127.0.0.1:%d -servername other.acme.test -alpn acme-tls/1 2>&1 | "
	    "grep -i alert", t.port);
	ck_assert_msg(strstr(out, "alert") != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "curl -sf http://127.0.0.1:%d/metrics | grep "
	    "'^tlsproxy_acme_order_failures_total{reason=\"network\"}'", t.admin);
	ck_assert_msg(strstr(out, "} 0") == NULL && out[0] != '\0', "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);
}
END_TEST

/* h_wait_log_count waits until |needle| appears |n| times in the log. */
static int
h_wait_log_count(const struct h_daemon *d, const char *needle, int n,
    int wait_ms)
{
	for (int waited = 0; waited <= wait_ms; waited += 100) {
		char *out = h_run(NULL, "grep -cF '%s' '%s'", needle, d->log);
		int got = atoi(out);

		free(out);
		if (got >= n)
			return 1;
		usleep(100000);
	}
	return 0;
}

/* count_metric returns the value of the /metrics sample |series|. */
static long
count_metric(const struct acme_t *t, const char *series)
{
	char *out = h_run(NULL, "curl -sf http://127.0.0.1:%d/metrics | grep -F "
	    "'%s ' | awk '{print $2}'", t->admin, series);
	long n = atol(out);

	free(out);
	return n;
}

/* Through the shim: Pebble rejects half the nonces (every badNonce is
 * retried), the first new order is refused as rate limited with a
 * Retry-After (logged, counted, retried later), then the certificate is
 * issued; renewal information whose window has passed renews it, new
 * handshakes get the new certificate, and a connection opened before
 * keeps running. */
START_TEST(bad_nonces_rate_limits_and_renewal_by_ari)
{
	struct acme_t t;
	struct h_acme_shim shim;
	char *out, *serial1, *serial2, bg[600];
	int status;

	setup_ports(&t, "ari");
	t.bport = h_backend("echo", NULL, &t.bpid);
	start_pebble(&t, "PEBBLE_WFE_NONCEREJECT=50");
	ck_assert_int_eq(h_acme_shim_start(&shim, &t.p), 0);
	/* Renewal information: a window years ahead, asked about again
	 * every second. */
	ck_assert_int_eq(h_acme_shim_control(&shim, "{\"rateLimit\": [{"
	    "\"match\": \"newOrder\", \"count\": 1, \"retryAfter\": 3}], "
	    "\"renewalInfo\": {\"default\": {\"start\": "
	    "\"2035-01-01T00:00:00Z\", \"end\": \"2035-01-02T00:00:00Z\", "
	    "\"retryAfter\": 1}}}"), 0);
	start_daemon(&t, "ari", shim.directory, NULL);
	ck_assert(h_log_contains(&t.d, "order failed (rate_limited)", 30000));
	ck_assert(h_log_contains(&t.d, "new certificate in service", 60000));
	ck_assert_int_eq(count_metric(&t, "tlsproxy_acme_order_failures_total"
	    "{reason=\"rate_limited\"}"), 1);
	ck_assert_int_gt(h_acme_shim_count(&shim, NULL, 400), 0);
	ck_assert_int_eq(h_acme_shim_count(&shim, "newOrder", 429), 1);
	serial1 = h_run(NULL, "echo | openssl s_client -connect 127.0.0.1:%d "
	    "-servername " NAME " 2>/dev/null | openssl x509 -noout -serial",
	    t.port);
	ck_assert_msg(strncmp(serial1, "serial=", 7) == 0, "%s", serial1);

	/* A connection that stays open across the renewal. */
	snprintf(bg, sizeof(bg), "%s/ari-open.out", h_dir());
	out = h_run(NULL, "( ( (sleep 8; printf still-here; sleep 2) | timeout "
	    "30 openssl s_client -quiet -no_ign_eof -connect 127.0.0.1:%d "
	    "-servername " NAME " > %s 2>&1 ) < /dev/null > /dev/null 2>&1 & )",
	    t.port, bg);
	free(out);
	sleep(1);
	ck_assert_int_eq(h_acme_shim_control(&shim, "{\"renewalInfo\": "
	    "{\"default\": {\"start\": \"2020-01-01T00:00:00Z\", "
	    "\"end\": \"2020-01-02T00:00:00Z\", \"retryAfter\": 1}}}"), 0);
	/* The next question sees the window has passed. */
	ck_assert(h_log_contains(&t.d, "renewing", 30000));
	ck_assert(h_wait_log_count(&t.d, "new certificate in service", 2,
	    60000));
	serial2 = h_run(NULL, "echo | openssl s_client -connect 127.0.0.1:%d "
	    "-servername " NAME " 2>/dev/null | openssl x509 -noout -serial",
	    t.port);
	ck_assert_msg(strncmp(serial2, "serial=", 7) == 0 &&
	    strcmp(serial1, serial2) != 0, "%s %s", serial1, serial2);
	free(serial1);
	free(serial2);
	sleep(9);
	out = h_run(&status, "cat %s", bg);
	ck_assert_msg(strstr(out, "still-here") != NULL, "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);
	h_acme_shim_stop(&shim);
	h_pebble_stop(&t.p);
	kill(t.bpid, SIGTERM);
}
END_TEST

/* The CA cannot reach the daemon for one name (its DNS points it at
 * 127.0.0.2): the authorization fails, which is logged with Pebble's
 * reason and counted, and the names stay refused. */
START_TEST(failed_authorization_logged_counted_and_retried)
{
	struct acme_t t;
	char *out;

	setup_ports(&t, "authz");
	start_pebble(&t, "PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0");
	ck_assert_int_eq(h_pebble_dns(&t.p, "/add-a", "{\"host\": \"" NAME2
	    ".\", \"addresses\": [\"127.0.0.2\"]}"), 0);
	start_daemon(&t, "authz", t.p.directory, NULL);
	ck_assert(h_log_contains(&t.d, "order failed (authorization)", 60000));
	ck_assert(h_log_contains(&t.d, NAME2, 0));
	ck_assert_int_eq(count_metric(&t, "tlsproxy_acme_order_failures_total"
	    "{reason=\"authorization\"}"), 1);
	out = h_run(NULL, "curl -sf http://127.0.0.1:%d/status", t.admin);
	ck_assert_msg(strstr(out, "\"last_result\":\"failed\"") != NULL &&
	    strstr(out, "tls-alpn-01 for " NAME2) != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "echo | timeout 10 openssl s_client -connect "
	    "127.0.0.1:%d -servername " NAME " 2>&1 | grep -i alert", t.port);
	ck_assert_msg(strstr(out, "unrecognized name") != NULL, "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);
	h_pebble_stop(&t.p);
}
END_TEST

/* http-01 through an acme_http listener, which redirects everything
 * else to https. */
START_TEST(certificate_through_http_01)
{
	struct acme_t t;
	char *out;

	setup_ports(&t, "http01");
	t.http = h_free_port();
	t.challenge = "http-01";
	ck_assert_int_eq(h_pebble_start(&t.p, t.http, h_free_port(),
	    "PEBBLE_WFE_NONCEREJECT=0"), 0);
	out = h_pebble_root(&t.p);
	ck_assert_ptr_nonnull(out);
	snprintf(t.root, sizeof(t.root), "%s", h_write("pebble-root.pem",
	    out));
	free(out);
	start_daemon(&t, "http01", t.p.directory, NULL);
	ck_assert_msg(h_log_contains(&t.d, "new certificate in service",
	    60000), "see %s", t.d.log);
	ck_assert(h_log_contains(&t.d, "http-01 challenge answered", 0));
	out = verify(&t, NAME2, NULL);
	ck_assert_msg(strstr(out, "Verify return code: 0 (ok)") != NULL,
	    "%s", out);
	free(out);
	out = h_run(NULL, "curl -si http://127.0.0.1:%d/shop?x=1 -H 'Host: "
	    NAME ":80'", t.http);
	ck_assert_msg(strstr(out, "301 Moved Permanently") != NULL &&
	    strstr(out, "Location: https://" NAME "/shop?x=1\r\n") != NULL,
	    "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);
	h_pebble_stop(&t.p);
}
END_TEST

/* start_redis runs a throwaway redis-server on |port|, dying with the
 * test. */
static pid_t
start_redis(int port)
{
	char portstr[16];
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	snprintf(portstr, sizeof(portstr), "%d", port);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (freopen("/dev/null", "w", stdout) == NULL)
			_exit(126);
		execlp("redis-server", "redis-server", "--port", portstr,
		    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		    (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		char *out = h_run(NULL, "redis-cli -p %d ping 2>/dev/null", port);
		int up = strncmp(out, "PONG", 4) == 0;

		free(out);
		if (up)
			return pid;
		usleep(50000);
	}
	ck_abort_msg("redis-server did not start");
	return -1;
}

static char *
serial_of(int port)
{
	return h_run(NULL, "echo | openssl s_client -connect 127.0.0.1:%d "
	    "-servername " NAME " 2>/dev/null | openssl x509 -noout -serial",
	    port);
}

/* Two instances, one Redis, one Pebble that reaches only instance A.
 * Instance B starts first and orders: A answers the challenges B
 * publishes in the store, and takes B's certificate from the store; the
 * CA sees one order. Then B is killed in the middle of another order
 * (other names): A takes over once B's lock expires. */
START_TEST(two_instances_one_order_and_takeover)
{
	struct acme_t a, b;
	struct h_pebble pebble;
	char global[256], extra[600], *sa, *sb;
	const char *keyfile;
	int redis = h_free_port(), orders;
	pid_t rpid = start_redis(redis);

	setup_ports(&a, "share-a");
	setup_ports(&b, "share-b");
	sa = h_run(NULL, "%s --new-ticket-key", getenv("TLSPROXY_BIN"));
	keyfile = h_write("acme-shared.key", sa);
	free(sa);
	free(h_run(NULL, "chmod 600 %s", keyfile));
	snprintf(extra, sizeof(extra), "shared_key_file = %s\n", keyfile);
	snprintf(global, sizeof(global), "session_store = redis://127.0.0.1:%d"
	    "\n", redis);
	a.global = b.global = global;
	start_pebble(&a, "PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0");
	b.p = a.p;

	start_daemon(&b, "share-b", a.p.directory, extra);
	ck_assert(h_log_contains(&b.d, ": ordering", 20000));
	start_daemon(&a, "share-a", a.p.directory, extra);
	ck_assert_msg(h_log_contains(&b.d, "new certificate in service",
	    60000), "see %s and %s", b.d.log, a.d.log);
	ck_assert_msg(h_log_contains(&a.d, "certificate from the session "
	    "store in service", 20000), "see %s", a.d.log);
	ck_assert(h_log_contains(&a.d, "another instance is ordering", 0));
	ck_assert(!h_log_contains(&a.d, "names validated", 0));
	sa = serial_of(a.port);
	sb = serial_of(b.port);
	ck_assert_msg(strncmp(sa, "serial=", 7) == 0 && strcmp(sa, sb) == 0,
	    "%s %s", sa, sb);
	free(sa);
	free(sb);
	orders = pebble_requests(&a.p, "/order-plz");
	ck_assert_int_eq(orders, 1);
	ck_assert_int_eq(h_daemon_stop(&a.d, 10000), 0);
	ck_assert_int_eq(h_daemon_stop(&b.d, 10000), 0);

	/* Takeover: B dies while it orders for new state. */
	pebble = a.p;
	setup_ports(&a, "take-a");
	setup_ports(&b, "take-b");
	a.global = b.global = global;
	a.p = b.p = pebble;
	a.port = pebble.tls_port; /* where the CA validates */
	snprintf(a.root, sizeof(a.root), "%s/pebble-root.pem", h_dir());
	/* Nothing in the store: the next start orders anew. */
	free(h_run(NULL, "redis-cli -p %d flushall", redis));
	start_daemon(&b, "take-b", a.p.directory, extra);
	ck_assert(h_log_contains(&b.d, ": ordering", 20000));
	kill(b.d.pid, SIGKILL);
	waitpid(b.d.pid, NULL, 0);
	b.d.pid = 0;
	start_daemon(&a, "take-a", a.p.directory, extra);
	ck_assert(h_log_contains(&a.d, "another instance is ordering", 10000));
	ck_assert_msg(h_log_contains(&a.d, "new certificate in service",
	    90000), "see %s", a.d.log);
	ck_assert_int_eq(h_daemon_stop(&a.d, 10000), 0);
	h_pebble_stop(&a.p);
	kill(rpid, SIGTERM);
	waitpid(rpid, NULL, 0);
}
END_TEST

/* Certificates that live 40 seconds, with renew_before = 1h: renewed
 * halfway through, with a warning. Then the CA goes away: the renewal
 * fails, is logged and counted, the certificate in service stays, and
 * the retries back off. */
START_TEST(short_lived_renewed_and_kept_when_the_ca_is_down)
{
	struct acme_t t;
	struct h_pebble_opts o = { .env = "PEBBLE_WFE_NONCEREJECT=0",
		.validity_s = 40 };
	char *s1, *s2, *s3, *root;

	setup_ports(&t, "short");
	ck_assert_int_eq(h_pebble_start_opts(&t.p, h_free_port(), t.port, &o),
	    0);
	root = h_pebble_root(&t.p);
	ck_assert_ptr_nonnull(root);
	snprintf(t.root, sizeof(t.root), "%s", h_write("pebble-root.pem", root));
	free(root);
	start_daemon(&t, "short", t.p.directory, "renew_before = 1h\n");
	ck_assert(h_log_contains(&t.d, "new certificate in service", 30000));
	ck_assert(h_log_contains(&t.d, "renewing halfway", 0));
	s1 = serial_of(t.port);
	ck_assert(h_wait_log_count(&t.d, "new certificate in service", 2,
	    40000));
	s2 = serial_of(t.port);
	ck_assert_msg(strncmp(s2, "serial=", 7) == 0 && strcmp(s1, s2) != 0,
	    "%s %s", s1, s2);
	h_pebble_stop(&t.p);
	ck_assert(h_log_contains(&t.d, "renewal failed (network)", 30000));
	ck_assert(h_log_contains(&t.d, "the current certificate stays in "
	    "service, next attempt in 10s", 0));
	s3 = serial_of(t.port);
	ck_assert_str_eq(s2, s3);
	ck_assert(h_log_contains(&t.d, "next attempt in 20s", 20000));
	ck_assert_int_ge(count_metric(&t, "tlsproxy_acme_order_failures_total"
	    "{reason=\"network\"}"), 2);
	free(s1);
	free(s2);
	free(s3);
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);
}
END_TEST

/* A session store that is down: the instance orders on its own. */
START_TEST(store_down_orders_alone)
{
	struct acme_t t;
	char global[128], extra[700], *key;
	const char *keyfile;

	setup_ports(&t, "alone");
	key = h_run(NULL, "%s --new-ticket-key", getenv("TLSPROXY_BIN"));
	keyfile = h_write("acme-alone.key", key);
	free(key);
	free(h_run(NULL, "chmod 600 %s", keyfile));
	snprintf(global, sizeof(global), "session_store = redis://127.0.0.1:%d"
	    "\n", h_free_port());
	snprintf(extra, sizeof(extra), "shared_key_file = %s\n", keyfile);
	t.global = global;
	start_pebble(&t, "PEBBLE_WFE_NONCEREJECT=0");
	start_daemon(&t, "alone", t.p.directory, extra);
	ck_assert(h_log_contains(&t.d, "new certificate in service", 60000));
	ck_assert(h_log_contains(&t.d, "session store unavailable", 0));
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);
	h_pebble_stop(&t.p);
}
END_TEST

/* A CA that requires external account binding: without it the account
 * is refused with a message saying what to set; with eab_kid and
 * eab_hmac_key_file an RSA certificate is issued (key_type = rsa). */
START_TEST(external_account_binding_and_rsa)
{
	struct acme_t t;
	const char *hmac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3"
	    "MUAsUDkMTQ12W";
	struct h_pebble_opts o = { .env = "PEBBLE_WFE_NONCEREJECT=0",
		.eab_kid = "kid-1", .eab_hmac_b64url = hmac };
	char extra[700], *out;
	const char *keyfile;

	setup_ports(&t, "eab");
	ck_assert_int_eq(h_pebble_start_opts(&t.p, h_free_port(), t.port, &o),
	    0);
	out = h_pebble_root(&t.p);
	ck_assert_ptr_nonnull(out);
	snprintf(t.root, sizeof(t.root), "%s", h_write("pebble-root.pem", out));
	free(out);
	start_daemon(&t, "eab-none", t.p.directory, "key_type = rsa\n");
	ck_assert_msg(h_log_contains(&t.d, "set eab_kid and eab_hmac_key_file",
	    20000), "see %s", t.d.log);
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);

	keyfile = h_write("eab-hmac.key", hmac);
	snprintf(extra, sizeof(extra), "key_type = rsa\neab_kid = kid-1\n"
	    "eab_hmac_key_file = %s\n", keyfile);
	snprintf(t.state, sizeof(t.state), "%s/eab-state2", h_dir());
	start_daemon(&t, "eab", t.p.directory, extra);
	ck_assert_msg(h_log_contains(&t.d, "new certificate in service", 60000),
	    "see %s", t.d.log);
	out = h_run(NULL, "echo | openssl s_client -connect 127.0.0.1:%d "
	    "-servername " NAME " 2>/dev/null | openssl x509 -noout -text | "
	    "grep 'Public Key Algorithm'", t.port);
	ck_assert_msg(strstr(out, "rsaEncryption") != NULL, "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);
	h_pebble_stop(&t.p);
}
END_TEST

/* OCSP stapling follows ACME certificates: Pebble writes a responder URL
 * into what it issues, and ocsp_responder.py answers for its
 * intermediate. The first fetch gets "unknown" (the serial is not in the
 * responder's index yet); once it is, a reload retries at once and the
 * response is stapled. */
START_TEST(ocsp_stapling_follows_the_acme_certificate)
{
	struct acme_t t;
	char url[64], dir[600], *out, *serial;
	int rport = h_free_port();
	struct h_pebble_opts o = { .env = "PEBBLE_WFE_NONCEREJECT=0",
		.ocsp_url = url };
	pid_t rpid;

	setup_ports(&t, "ocsp");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", rport);
	ck_assert_int_eq(h_pebble_start_opts(&t.p, h_free_port(), t.port, &o),
	    0);
	snprintf(dir, sizeof(dir), "%s/ocsp-pebble", h_dir());
	out = h_run(NULL, "mkdir -p %s && cd %s && : > index.txt && "
	    "curl -sf --cacert %s %s/intermediates/0 > int.pem && "
	    "curl -sf --cacert %s %s/intermediate-keys/0 > int.key && "
	    "curl -sf --cacert %s %s/roots/0 > root.pem && echo ok", dir, dir,
	    t.p.ca, t.p.mgmt, t.p.ca, t.p.mgmt, t.p.ca, t.p.mgmt);
	ck_assert_msg(strncmp(out, "ok", 2) == 0, "%s", out);
	free(out);
	snprintf(t.root, sizeof(t.root), "%.500s/root.pem", dir);
	rpid = fork();
	ck_assert_int_ge(rpid, 0);
	if (rpid == 0) {
		char port[16], idx[700], ca[700], key[700], cmd[700];

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		snprintf(port, sizeof(port), "%d", rport);
		snprintf(idx, sizeof(idx), "%s/index.txt", dir);
		snprintf(ca, sizeof(ca), "%s/int.pem", dir);
		snprintf(key, sizeof(key), "%s/int.key", dir);
		snprintf(cmd, sizeof(cmd), "%s/ocsp_responder.py",
		    getenv("TLSPROXY_TEST_SRC"));
		if (freopen("/dev/null", "w", stdout) == NULL ||
		    freopen("/dev/null", "w", stderr) == NULL)
			_exit(126);
		execlp("python3", "python3", cmd, port, idx, ca, ca, key,
		    (char *)NULL);
		_exit(127);
	}
	start_daemon(&t, "ocsp", t.p.directory, NULL);
	ck_assert(h_log_contains(&t.d, "new certificate in service", 60000));
	ck_assert_msg(h_log_contains(&t.d, "ocsp context 'auto'", 20000),
	    "see %s", t.d.log);
	serial = h_run(NULL, "echo | openssl s_client -connect 127.0.0.1:%d "
	    "-servername " NAME " 2>/dev/null | openssl x509 -noout -serial | "
	    "cut -d= -f2", t.port);
	serial[strcspn(serial, "\n")] = '\0';
	free(h_run(NULL, "printf 'V\\t301231235959Z\\t\\t%s\\tunknown\\t"
	    "/CN=" NAME "\\n' > %s/index.txt", serial, dir));
	free(serial);
	ck_assert_int_eq(kill(t.d.pid, SIGHUP), 0);
	ck_assert_msg(h_log_contains(&t.d, "good response from", 20000),
	    "see %s", t.d.log);
	out = h_run(NULL, "echo | openssl s_client -connect 127.0.0.1:%d "
	    "-servername " NAME " -status 2>&1 | grep -E 'OCSP Response Status|"
	    "Cert Status'", t.port);
	ck_assert_msg(strstr(out, "successful") != NULL &&
	    strstr(out, "Cert Status: good") != NULL, "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&t.d, 10000), 0);
	h_pebble_stop(&t.p);
	kill(rpid, SIGTERM);
	waitpid(rpid, NULL, 0);
}
END_TEST

/* http-01 with two instances: Pebble asks only instance A's acme_http
 * listener, instance B orders and publishes the token, A serves it. */
START_TEST(two_instances_http_01)
{
	struct acme_t a, b;
	char global[256], extra[600], *key;
	const char *keyfile;
	int redis = h_free_port();
	pid_t rpid = start_redis(redis);

	setup_ports(&a, "http-a");
	setup_ports(&b, "http-b");
	a.http = h_free_port();
	b.http = h_free_port();
	a.challenge = b.challenge = "http-01";
	key = h_run(NULL, "%s --new-ticket-key", getenv("TLSPROXY_BIN"));
	keyfile = h_write("acme-http.key", key);
	free(key);
	free(h_run(NULL, "chmod 600 %s", keyfile));
	snprintf(extra, sizeof(extra), "shared_key_file = %s\n", keyfile);
	snprintf(global, sizeof(global), "session_store = redis://127.0.0.1:%d"
	    "\n", redis);
	a.global = b.global = global;
	ck_assert_int_eq(h_pebble_start(&a.p, a.http, h_free_port(),
	    "PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0"), 0);
	b.p = a.p;
	start_daemon(&b, "http-b", a.p.directory, extra);
	ck_assert(h_log_contains(&b.d, ": ordering", 20000));
	start_daemon(&a, "http-a", a.p.directory, extra);
	ck_assert_msg(h_log_contains(&b.d, "new certificate in service",
	    60000), "see %s and %s", b.d.log, a.d.log);
	ck_assert(h_log_contains(&a.d, "http-01 challenge answered", 0));
	ck_assert(!h_log_contains(&b.d, "http-01 challenge answered", 0));
	ck_assert(h_log_contains(&a.d, "certificate from the session store in "
	    "service", 20000));
	ck_assert_int_eq(pebble_requests(&a.p, "/order-plz"), 1);
	ck_assert_int_eq(h_daemon_stop(&a.d, 10000), 0);
	ck_assert_int_eq(h_daemon_stop(&b.d, 10000), 0);
	h_pebble_stop(&a.p);
	kill(rpid, SIGTERM);
	waitpid(rpid, NULL, 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("acme");
	TCase *tc = tcase_create("pebble");

	h_setup("acme");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, first_certificate_through_tls_alpn_then_from_disk);
	tcase_add_test(tc, names_refused_until_issued_and_foreign_challenges_refused);
	tcase_add_test(tc, bad_nonces_rate_limits_and_renewal_by_ari);
	tcase_add_test(tc, failed_authorization_logged_counted_and_retried);
	tcase_add_test(tc, certificate_through_http_01);
	tcase_add_test(tc, two_instances_one_order_and_takeover);
	tcase_add_test(tc, short_lived_renewed_and_kept_when_the_ca_is_down);
	tcase_add_test(tc, store_down_orders_alone);
	tcase_add_test(tc, external_account_binding_and_rsa);
	tcase_add_test(tc, ocsp_stapling_follows_the_acme_certificate);
	tcase_add_test(tc, two_instances_http_01);
	suite_add_tcase(s, tc);
	return check_run(s);
}
