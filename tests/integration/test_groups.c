/* Key-exchange groups: X25519MLKEM768 for clients that offer it, the
 * classical groups for the others, and no HelloRetryRequest a client's
 * key shares could have avoided. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

static int admin_port;

/* start starts the daemon in front of an echo backend with |extra| in
 * [global] and an admin endpoint. */
static void
start(struct h_daemon *d, const char *name, const char *extra, pid_t *bpid)
{
	char global[512];
	int bport = h_backend("echo", NULL, bpid);
	int port = h_free_port();

	admin_port = h_free_port();
	snprintf(global, sizeof(global), "admin = 127.0.0.1:%d\n%s",
	    admin_port, extra != NULL ? extra : "");
	ck_assert_int_eq(h_daemon_start(d, name, h_simple_conf(port, bport,
	    global)), 0);
	d->port = port;
}

static void
finish(struct h_daemon *d, pid_t bpid)
{
	ck_assert_int_eq(h_daemon_stop(d, 10000), 0);
	kill(bpid, SIGTERM);
	waitpid(bpid, NULL, 0);
}

/* expect runs our client with |args| and checks the group and whether a
 * HelloRetryRequest was needed. */
static void
expect(const struct h_daemon *d, const char *args, const char *group,
    const char *hrr)
{
	int st;
	char *out = h_run(&st, "%s %s --request 'x' --expect-bytes 1 "
	    "127.0.0.1:%d 2>&1", h_bin("client"), args, d->port);

	ck_assert_msg(st == 0, "%s: %s", args, out);
	ck_assert_msg(strcmp(h_field(out, "group"), group) == 0 &&
	    strcmp(h_field(out, "hrr"), hrr) == 0, "%s: want group=%s hrr=%s, "
	    "got %s", args, group, hrr, out);
	free(out);
}

/* metric returns the value of the sample named exactly |series|. */
static double
metric(const char *series)
{
	int st;
	char *out = h_run(&st, "curl -sf http://127.0.0.1:%d/metrics | "
	    "awk -v s='%s' '$1 == s { print $2 }'", admin_port, series);
	double v = st == 0 && out[0] != '\0' ? atof(out) : -1;

	free(out);
	return v;
}

/* out_no_mlkem checks that a BoringSSL without ML-KEM refuses
 * X25519MLKEM768 in the configuration and says why. */
static void
out_no_mlkem(void)
{
	char *out;
	int st;

	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("nomlkem.conf", h_simple_conf(h_free_port(), h_free_port(),
	    "ecdh_curve = X25519MLKEM768:X25519\n")));
	ck_assert_msg(st != 0 && strstr(out, "X25519MLKEM768 needs a BoringSSL "
	    "with ML-KEM") != NULL, "%s", out);
	free(out);
}

START_TEST(pq_first_and_shares_respected)
{
	struct h_daemon d;
	pid_t bpid;
	double pq, hrr;

	if (!h_has_mlkem()) {
		/* Debian's 2022 BoringSSL: the group is refused, and why. */
		out_no_mlkem();
		return;
	}
	start(&d, "auto", NULL, &bpid);
	pq = metric("tlsproxy_handshakes_by_group_total{group=\"X25519MLKEM768\"}");
	hrr = metric("tlsproxy_hello_retry_requests_total");
	ck_assert(pq == 0 && hrr == 0);
	/* PQ wins even at the cost of one round trip... */
	expect(&d, "--groups X25519MLKEM768:X25519 --key-shares X25519",
	    "X25519MLKEM768", "1");
	/* ...which a client that sent the share does not pay. */
	expect(&d, "--groups X25519MLKEM768:X25519 --key-shares "
	    "X25519MLKEM768:X25519", "X25519MLKEM768", "0");
	expect(&d, "--groups X25519MLKEM768", "X25519MLKEM768", "0");
	expect(&d, "--groups X25519", "X25519", "0");
	/* Among the classical groups, the share the client sent is used. */
	expect(&d, "--groups P-256:X25519 --key-shares P-256", "P-256", "0");
	expect(&d, "--groups P-384:X25519 --key-shares P-384", "P-384", "0");
	/* ML-KEM is TLS 1.3 only (P-256: our ECDSA key needs it in TLS 1.2). */
	expect(&d, "--tls12 --groups X25519MLKEM768:X25519:P-256", "X25519",
	    "0");
	ck_assert(h_log_contains(&d, "group=X25519MLKEM768 ", 2000));
	ck_assert(h_log_contains(&d, "group=P-256 ", 2000));
	ck_assert_msg(metric("tlsproxy_handshakes_by_group_total"
	    "{group=\"X25519MLKEM768\"}") == 3, "PQ handshakes");
	ck_assert(metric("tlsproxy_handshakes_by_group_total"
	    "{group=\"P-256\"}") == 1);
	ck_assert(metric("tlsproxy_hello_retry_requests_total") == 1);
	finish(&d, bpid);
}
END_TEST

/* Node's client: argv PORT CURVES (empty: Node's default). Prints the
 * key exchange it got and the first bytes echoed back. */
static const char node_script[] =
    "const tls = require('tls');\n"
    "const o = { host: '127.0.0.1', port: +process.argv[2],\n"
    "  rejectUnauthorized: false };\n"
    "if (process.argv[3]) o.ecdhCurve = process.argv[3];\n"
    "const s = tls.connect(o, () => {\n"
    "  const k = s.getEphemeralKeyInfo();\n"
    "  console.log('key=' + k.name + ' version=' + s.getProtocol() + ' ');\n"
    "  s.end('x');\n"
    "});\n"
    "s.on('data', () => {});\n"
    "s.on('error', (e) => { console.log('error=' + e.code);\n"
    "  process.exitCode = 1; });\n";

START_TEST(classical_clients_never_retry)
{
	struct h_daemon d;
	pid_t bpid;
	char *out, *st_out;
	const char *js;
	int st;

	start(&d, "classical", NULL, &bpid);
	out = h_run(&st, "echo | timeout 10 openssl s_client -connect "
	    "127.0.0.1:%d -msg 2>&1", d.port);
	ck_assert_msg(strstr(out, "Server Temp Key: X25519") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "HelloRetryRequest") == NULL, "%s", out);
	free(out);
	/* gnutls-cli's default puts its share for its first group. */
	out = h_run(&st, "timeout 20 gnutls-cli --insecure -p %d 127.0.0.1 "
	    "< /dev/null 2>&1", d.port);
	ck_assert_msg(strstr(out, "Handshake was completed") != NULL, "%s", out);
	free(out);
	/* Node (OpenSSL 3.0): its default, then a list led by P-384, whose
	 * share is taken as it is rather than moved to X25519. */
	js = h_write("groups.js", node_script);
	out = h_run(&st, "timeout 20 node '%s' %d '' 2>&1", js, d.port);
	ck_assert_msg(st == 0 && strstr(out, "key=X25519 ") != NULL, "%s", out);
	free(out);
	out = h_run(&st, "timeout 20 node '%s' %d 'P-384:X25519' 2>&1", js,
	    d.port);
	ck_assert_msg(st == 0 && strstr(out, "key=secp384r1 ") != NULL, "%s", out);
	free(out);
	ck_assert(h_log_contains(&d, "group=P-384 ", 2000));
	ck_assert(metric("tlsproxy_handshakes_by_group_total"
	    "{group=\"X25519\"}") == 3);
	ck_assert(metric("tlsproxy_handshakes_by_group_total"
	    "{group=\"P-384\"}") == 1);
	ck_assert(metric("tlsproxy_hello_retry_requests_total") == 0);
	st_out = h_run(&st, "curl -sf http://127.0.0.1:%d/status", admin_port);
	ck_assert_msg(strstr(st_out, "\"X25519\":3") != NULL &&
	    strstr(st_out, "\"hello_retry_requests\":0") != NULL, "%s", st_out);
	free(st_out);
	finish(&d, bpid);
}
END_TEST

START_TEST(tiers_are_honoured)
{
	struct h_daemon d;
	pid_t bpid;

	start(&d, "tiers", "ecdh_curve = P-384/X25519:P-256\n", &bpid);
	if (!h_has_mlkem()) {
		/* An older BoringSSL client cannot choose its key shares: it
		 * sends one, for the first group it lists. */
		expect(&d, "--groups X25519:P-384", "P-384", "1");
		expect(&d, "--groups P-256:X25519", "P-256", "0");
		expect(&d, "--groups X25519:P-256", "X25519", "0");
		finish(&d, bpid);
		return;
	}
	/* The first tier wins over any share... */
	expect(&d, "--groups X25519:P-384 --key-shares X25519", "P-384", "1");
	/* ...within the second, the share the client sent. */
	expect(&d, "--groups X25519:P-256 --key-shares P-256", "P-256", "0");
	expect(&d, "--groups X25519:P-256 --key-shares X25519", "X25519", "0");
	/* Without a share among them, our order. */
	expect(&d, "--groups P-256:X25519 --key-shares ''", "X25519", "1");
	finish(&d, bpid);
}
END_TEST

START_TEST(one_tier_without_slash)
{
	struct h_daemon d;
	pid_t bpid;

	if (!h_has_mlkem()) {
		out_no_mlkem();
		return;
	}
	/* As in OpenSSL, a list without '/' is one tier. */
	start(&d, "onetier", "ecdh_curve = X25519MLKEM768:X25519\n", &bpid);
	expect(&d, "--groups X25519MLKEM768:X25519 --key-shares X25519",
	    "X25519", "0");
	finish(&d, bpid);
}
END_TEST

START_TEST(bad_groups_are_errors)
{
	char *out;
	int st;

	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("bad.conf", h_simple_conf(h_free_port(), h_free_port(),
	    "ecdh_curve = X25519/X448\n")));
	ck_assert_msg(st != 0 && strstr(out, "bad.conf:4: key 'ecdh_curve': "
	    "unknown group 'X448'") != NULL, "%s", out);
	free(out);
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("empty.conf", h_simple_conf(h_free_port(), h_free_port(),
	    "ecdh_curve = X25519//P-256\n")));
	ck_assert_msg(st != 0 && strstr(out, "empty.conf:4: key 'ecdh_curve': "
	    "empty tier") != NULL, "%s", out);
	free(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("groups");
	TCase *tc = tcase_create("groups");

	h_setup("groups");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, pq_first_and_shares_respected);
	tcase_add_test(tc, classical_clients_never_retry);
	tcase_add_test(tc, tiers_are_honoured);
	tcase_add_test(tc, one_tier_without_slash);
	tcase_add_test(tc, bad_groups_are_errors);
	suite_add_tcase(s, tc);
	return check_run(s);
}
