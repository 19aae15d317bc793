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

	snprintf(buf, sizeof(buf),
	    "[global]\nworkers = 2\nlog_level = info\nadmin = 127.0.0.1:%d\n"
	    "[listener l]\nbind = 127.0.0.1:%d\ncontext = main\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:9\n"
	    "[context main]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n"
	    "[context auto]\nservername = " NAME ", " NAME2 "\n"
	    "acme = pebble\n"
	    "[acme pebble]\ndirectory = %s\nca = %s\nstate_dir = %s\n"
	    "email = ops@acme.test\n%s",
	    t->admin, t->port, h_dir(), h_dir(), directory, t->p.ca, t->state,
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

int
main(void)
{
	Suite *s = suite_create("acme");
	TCase *tc = tcase_create("pebble");

	h_setup("acme");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, first_certificate_through_tls_alpn_then_from_disk);
	tcase_add_test(tc, names_refused_until_issued_and_foreign_challenges_refused);
	suite_add_tcase(s, tc);
	return check_run(s);
}
