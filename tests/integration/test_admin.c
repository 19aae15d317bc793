/* The admin endpoint: /metrics parsed line by line as the Prometheus text
 * format, counters moving as real clients drive connections (good,
 * plaintext, stalled, renegotiating, refused ciphers and versions, unknown
 * names, dead backends), /status as JSON, reloads, the unix socket, and
 * the refusal of public addresses. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

static int admin_port;

/* scrape returns /metrics after checking it with prom_check.py. */
static char *
scrape(void)
{
	int st;
	char *check = h_run(&st, "curl -sf http://127.0.0.1:%d/metrics | "
	    "python3 %s/prom_check.py", admin_port, getenv("TLSPROXY_TEST_SRC"));

	ck_assert_msg(st == 0 && strncmp(check, "ok ", 3) == 0,
	    "exposition: %s", check);
	free(check);
	return h_run(NULL, "curl -sf http://127.0.0.1:%d/metrics", admin_port);
}

/* metric returns the value of the sample whose name and labels are
 * exactly |series|, or -1 if there is none. */
static double
metric(const char *text, const char *series)
{
	size_t n = strlen(series);

	for (const char *p = text; p != NULL && *p != '\0';) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return atof(p + n + 1);
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return -1;
}

static double
scrape_one(const char *series)
{
	char *text = scrape();
	double v = metric(text, series);

	free(text);
	return v;
}

/* wait_metric polls until |series| reaches |want| (counters move when a
 * connection ends, which the client may see a moment earlier). */
static double
wait_metric(const char *series, double want)
{
	double v = -1;

	for (int i = 0; i < 50; i++) {
		v = scrape_one(series);
		if (v >= want)
			break;
		usleep(100000);
	}
	return v;
}

static const char *
conf(int port, int port2, int bport, int dead_port, const char *admin)
{
	static char text[4096];

	snprintf(text, sizeof(text),
	    "[global]\nworkers = 2\nlog_level = debug\nhandshake_timeout = 1s\n"
	    "admin = %s\n"
	    "[listener test]\nbind = 127.0.0.1:%d\ncontext = main\n"
	    "backend = b\n"
	    "[listener strict]\nbind = 127.0.0.1:%d\ncontext = main\n"
	    "backend = dead\nsni_strict = yes\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[backend dead]\naddress = 127.0.0.1:%d\nconnect_timeout = 1s\n"
	    "[context main]\nservername = localhost\ncert = %s/leaf.pem\n"
	    "key = %s/leaf.key\n",
	    admin, port, port2, bport, dead_port, h_dir(), h_dir());
	return text;
}

START_TEST(metrics_follow_traffic)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port();
	int port2 = h_free_port(), dead = h_free_port(), st;
	char admin[64], *out, *text;

	admin_port = h_free_port();
	snprintf(admin, sizeof(admin), "127.0.0.1:%d", admin_port);
	ck_assert_int_eq(h_daemon_start(&d, "traffic", conf(port, port2, bport,
	    dead, admin)), 0);
	text = scrape();
	ck_assert(metric(text, "tlsproxy_connections_total{listener=\"test\"}")
	    == 0);
	ck_assert(metric(text, "tlsproxy_config_generation") == 1);
	ck_assert(metric(text, "tlsproxy_workers") == 2);
	ck_assert(metric(text, "tlsproxy_certificate_expiry_timestamp_seconds"
	    "{context=\"main\",type=\"ecdsa\"}") > (double)time(NULL));
	free(text);

	/* Five good connections, 1,000 bytes each way. */
	out = h_run(&st, "%s --conns 5 --send-bytes 1000 --expect-bytes 1000 "
	    "127.0.0.1:%d", h_bin("client"), port);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	ck_assert(wait_metric("tlsproxy_connections_total{listener=\"test\"}",
	    5) == 5);
	ck_assert(wait_metric("tlsproxy_bytes_total{direction="
	    "\"client_to_backend\"}", 5000) == 5000);
	ck_assert(wait_metric("tlsproxy_bytes_total{direction="
	    "\"backend_to_client\"}", 5000) == 5000);
	ck_assert(scrape_one("tlsproxy_handshakes_total{version=\"TLSv1.3\","
	    "cipher=\"TLS_AES_128_GCM_SHA256\",resumed=\"no\"}") == 5);
	ck_assert(scrape_one("tlsproxy_handshake_duration_seconds_count") == 5);

	/* Plain HTTP on the TLS port, and a client that never speaks. */
	free(h_run(NULL, "%s --send-raw 'GET / HTTP/1.0\\r\\n\\r\\n' "
	    "127.0.0.1:%d", h_bin("client"), port));
	ck_assert(wait_metric("tlsproxy_handshake_failures_total{reason="
	    "\"not_tls\"}", 1) == 1);
	free(h_run(NULL, "%s --send-raw '' 127.0.0.1:%d", h_bin("client"),
	    port));
	ck_assert(wait_metric("tlsproxy_handshake_failures_total{reason="
	    "\"timeout\"}", 1) == 1);

	/* A renegotiation attempt. */
	free(h_run(NULL, "(sleep 0.5; echo R; sleep 1) | openssl s_client "
	    "-tls1_2 -connect 127.0.0.1:%d >/dev/null 2>&1", port));
	ck_assert(wait_metric("tlsproxy_handshake_failures_total{reason="
	    "\"renegotiation\"}", 1) == 1);

	/* No cipher in common (RSA key exchange only, ECDSA certificate),
	 * and a protocol version nobody here speaks. */
	free(h_run(NULL, "openssl s_client -tls1_2 -cipher AES128-SHA "
	    "-connect 127.0.0.1:%d </dev/null >/dev/null 2>&1", port));
	ck_assert(wait_metric("tlsproxy_handshake_failures_total{reason="
	    "\"no_shared_cipher\"}", 1) == 1);
	free(h_run(NULL, "gnutls-cli --insecure --priority "
	    "'NORMAL:-VERS-ALL:+VERS-TLS1.1' -p %d 127.0.0.1 </dev/null "
	    ">/dev/null 2>&1", port));
	ck_assert(wait_metric("tlsproxy_handshake_failures_total{reason="
	    "\"protocol_version\"}", 1) == 1);

	/* sni_strict refusing a name, then a backend that is down. */
	free(h_run(NULL, "%s --servername nope.test 127.0.0.1:%d",
	    h_bin("client"), port2));
	ck_assert(wait_metric("tlsproxy_handshake_failures_total{reason="
	    "\"unknown_sni\"}", 1) == 1);
	free(h_run(NULL, "%s --servername localhost 127.0.0.1:%d",
	    h_bin("client"), port2));
	ck_assert(wait_metric("tlsproxy_backend_connect_failures_total{"
	    "backend=\"dead\"}", 1) == 1);
	ck_assert(scrape_one("tlsproxy_connections_open{listener="
	    "\"strict\"}") == 0);
	ck_assert(scrape_one("tlsproxy_handshake_failures_total{reason="
	    "\"other\"}") == 0);

	/* /status is JSON with what an operator looks for. */
	out = h_run(&st, "curl -sf http://127.0.0.1:%d/status | python3 -c "
	    "'import json, sys; s = json.load(sys.stdin); "
	    "print(s[\"generation\"], s[\"workers\"], "
	    "[l[\"name\"] for l in s[\"listeners\"]], "
	    "s[\"listeners\"][0][\"connections_total\"], "
	    "s[\"contexts\"][0][\"name\"], "
	    "s[\"contexts\"][0][\"certificates\"][0][\"not_after\"] > 0)'",
	    admin_port);
	ck_assert_msg(st == 0 && strcmp(out, "1 2 ['test', 'strict'] 10 main "
	    "True\n") == 0, "%s", out);
	free(out);

	/* A reload counts, and the generation moves. */
	kill(d.pid, SIGHUP);
	ck_assert(h_log_contains(&d, "generation 2 published", 5000));
	ck_assert(scrape_one("tlsproxy_reloads_total{result=\"ok\"}") == 1);
	ck_assert(scrape_one("tlsproxy_config_generation") == 2);
	/* Counters survive it. */
	ck_assert(scrape_one("tlsproxy_connections_total{listener=\"test\"}")
	    == 10);

	/* Other paths and methods. */
	out = h_run(NULL, "curl -s -o /dev/null -w '%%{http_code}' "
	    "http://127.0.0.1:%d/; curl -s -o /dev/null -w ' %%{http_code}' "
	    "-X POST http://127.0.0.1:%d/metrics", admin_port, admin_port);
	ck_assert_msg(strcmp(out, "404 405") == 0 || strcmp(out, "404 501")
	    == 0, "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(public_address_needs_consent)
{
	char text[4096], *out;
	int st;

	snprintf(text, sizeof(text), "%s", conf(h_free_port(), h_free_port(),
	    h_free_port(), h_free_port(), "0.0.0.0:9199"));
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("public.conf", text));
	ck_assert_msg(st != 0 && strstr(out, "public.conf:5: key 'admin': "
	    "'0.0.0.0:9199' is not a loopback address or unix socket; set "
	    "admin_allow_public = yes"), "%s", out);
	free(out);
	snprintf(text, sizeof(text), "%s", conf(h_free_port(), h_free_port(),
	    h_free_port(), h_free_port(), "[::]:9199\nadmin_allow_public = "
	    "yes"));
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("consent.conf", text));
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	snprintf(text, sizeof(text), "%s", conf(h_free_port(), h_free_port(),
	    h_free_port(), h_free_port(), "localhost:9199"));
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("name.conf", text));
	ck_assert_msg(st != 0 && strstr(out, "name.conf:5: key 'admin'"),
	    "%s", out);
	free(out);
}
END_TEST

START_TEST(unix_socket)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("echo", NULL, &bpid), st;
	char admin[700], path[600], *out;

	snprintf(path, sizeof(path), "%s/admin.sock", h_dir());
	snprintf(admin, sizeof(admin), "unix:%s", path);
	ck_assert_int_eq(h_daemon_start(&d, "unix", conf(h_free_port(),
	    h_free_port(), bport, h_free_port(), admin)), 0);
	out = h_run(&st, "curl -sf --unix-socket %s http://admin/metrics | "
	    "python3 %s/prom_check.py", path, getenv("TLSPROXY_TEST_SRC"));
	ck_assert_msg(st == 0 && strncmp(out, "ok ", 3) == 0, "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	ck_assert_msg(access(path, F_OK) != 0, "the socket file stayed");
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(access_log_reopened_on_sigusr1)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port(), st;
	char text[4096], logf[600], admin[700], *out;

	snprintf(logf, sizeof(logf), "%s/access.log", h_dir());
	snprintf(admin, sizeof(admin), "127.0.0.1:%d\naccess_log = %s",
	    h_free_port(), logf);
	snprintf(text, sizeof(text), "%s", conf(port, h_free_port(), bport,
	    h_free_port(), admin));
	ck_assert_int_eq(h_daemon_start(&d, "rotate", text), 0);
	out = h_run(&st, "%s --send-bytes 10 127.0.0.1:%d", h_bin("client"),
	    port);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	/* logrotate: rename, then SIGUSR1. */
	free(h_run(NULL, "sleep 0.3; mv %s %s.1", logf, logf));
	kill(d.pid, SIGUSR1);
	ck_assert(h_log_contains(&d, "SIGUSR1: reopening the access log", 2000));
	out = h_run(&st, "%s --send-bytes 20 127.0.0.1:%d", h_bin("client"),
	    port);
	free(out);
	usleep(300000);
	out = h_run(NULL, "grep -c 'bytes_in=10 ' %s.1; grep -c 'bytes_in=20 ' "
	    "%s; grep -c 'bytes_in=20 ' %s.1", logf, logf, logf);
	ck_assert_msg(strcmp(out, "1\n1\n0\n") == 0, "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("admin");
	TCase *tc = tcase_create("admin");

	h_setup("admin");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, metrics_follow_traffic);
	tcase_add_test(tc, public_address_needs_consent);
	tcase_add_test(tc, unix_socket);
	tcase_add_test(tc, access_log_reopened_on_sigusr1);
	suite_add_tcase(s, tc);
	return check_run(s);
}
