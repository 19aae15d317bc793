/* tlsproxy-load, the benchmarks' load generator, against the real daemon
 * in front of tlsproxy-backend's http mode: each mode for a second or
 * two, its result line, its bounds and its verdict (the exit status). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

static pid_t backend_pid;

/* start runs the daemon before an http backend, with |extra| in
 * [global]. */
static void
start(struct h_daemon *d, const char *name, const char *extra)
{
	int bport = h_backend("http", NULL, &backend_pid);
	int port = h_free_port();

	ck_assert_int_eq(h_daemon_start(d, name, h_simple_conf(port, bport, extra)), 0);
	d->port = port;
}

static void
finish(struct h_daemon *d)
{
	ck_assert_int_eq(h_daemon_stop(d, 10000), 0);
	kill(backend_pid, SIGTERM);
	waitpid(backend_pid, NULL, 0);
}

/* load runs tlsproxy-load with |args| against |port|; its exit status
 * goes to |*st|. */
static char *
load(int port, int *st, const char *args)
{
	return h_run(st, "%s %s 127.0.0.1:%d 2>&1", h_bin("load"), args, port);
}

/* num returns a numeric field of the result line, failing if absent. */
static double
num(const char *out, const char *key)
{
	const char *v = h_field(out, key);

	ck_assert_msg(v != NULL && v[0] != '\0' && v[0] != '-', "no %s= in: %s", key, out);
	return atof(v);
}

static void
expect_field(const char *out, const char *key, const char *want)
{
	const char *v = h_field(out, key);

	ck_assert_msg(v != NULL && strcmp(v, want) == 0, "want %s=%s in: %s", key, want, out);
}

START_TEST(handshake_full)
{
	struct h_daemon d;
	char args[256];
	char *out;
	int st;

	start(&d, "full", NULL);
	snprintf(args, sizeof(args), "--mode handshake --tls13 --conns 8 --duration 1 "
	    "--warmup 0.2 --cpu-pid %d", (int)d.pid);
	out = load(d.port, &st, args);
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "status", "ok");
	expect_field(out, "tls", "TLSv1.3");
	expect_field(out, "group", "X25519");
	expect_field(out, "unit", "conn/s");
	expect_field(out, "errors", "0");
	expect_field(out, "resumed", "0.0000");
	ck_assert_msg(num(out, "ok") >= 10 && num(out, "value") > 0, "%s", out);
	ck_assert_msg(num(out, "handshakes") >= num(out, "ok") - 8, "%s", out);
	/* Every reply is the backend's hello, in full. */
	ck_assert_msg(num(out, "bytes") >= 50 * num(out, "ok"), "%s", out);
	ck_assert_msg(num(out, "proxy_cpu") > 0 && num(out, "per_proxy_cpu_s") > 0 &&
	    num(out, "client_cpu") > 0 && num(out, "elapsed_s") >= 0.9, "%s", out);
	free(out);
	finish(&d);
}
END_TEST

/* resumed runs |args| and checks the version and that all but the rare
 * connection resumed. */
static void
resumed(int port, const char *args, const char *version)
{
	char *out;
	int st;

	out = load(port, &st, args);
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "status", "ok");
	expect_field(out, "tls", version);
	ck_assert_msg(num(out, "resumed") >= 0.99 && num(out, "ok") >= 10, "%s", out);
	free(out);
}

START_TEST(handshake_resumption)
{
	struct h_daemon d;
	char *out;
	int st;

	start(&d, "resume", NULL);
	resumed(d.port, "--mode handshake --resume ticket --conns 8 --duration 1 "
	    "--warmup 0.2", "TLSv1.3");
	resumed(d.port, "--mode handshake --resume session-id --conns 8 --duration 1 "
	    "--warmup 0.2", "TLSv1.2");
	/* The two are not to be mixed up with a version. */
	out = load(d.port, &st, "--mode handshake --resume ticket --tls12");
	ck_assert_msg(st == 2, "%s", out);
	free(out);
	finish(&d);
}
END_TEST

/* A server may drop a session at any time (nginx's shared cache evicts,
 * every cache expires): --resume session-id must then offer the session
 * of the full handshake that follows, not the first one for ever. Here
 * sessions live one second, so the first is gone a second into a run of
 * three and a half: a client stuck on it would make full handshakes from
 * then on, while one that offers the newest session resumes all but one
 * handshake per connection and second. */
START_TEST(session_id_follows_the_newest_session)
{
	struct h_daemon d;
	char extra[256], *out;
	int st, full, aport = h_free_port();

	snprintf(extra, sizeof(extra), "session_timeout = 1s\nsession_tickets = no\n"
	    "admin = 127.0.0.1:%d\n", aport);
	start(&d, "expire", extra);
	out = load(d.port, &st, "--mode handshake --resume session-id --conns 2 "
	    "--duration 3.5 --warmup 0");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "status", "ok");
	expect_field(out, "tls", "TLSv1.2");
	ck_assert_msg(num(out, "resumed") >= 0.99 && num(out, "ok") >= 200, "%s", out);
	free(out);
	/* The sessions did expire: the daemon made the first session's full
	 * handshake and at least one for each of the next two seconds. */
	out = h_run(&st, "curl -sf http://127.0.0.1:%d/metrics | awk "
	    "'/^tlsproxy_handshakes_total\\{.*TLSv1\\.2.*resumed=\"no\"/ "
	    "{ n += $NF } END { print n + 0 }'", aport);
	full = atoi(out);
	ck_assert_msg(st == 0 && full >= 3, "full handshakes: %s", out);
	free(out);
	finish(&d);
}
END_TEST

/* Without tickets from the server, ticket resumption cannot happen: the
 * run must say so rather than report full handshakes as a result. */
START_TEST(handshake_resumption_refused)
{
	struct h_daemon d;
	char *out;
	int st;

	start(&d, "notickets", "session_tickets = no\n");
	out = load(d.port, &st, "--mode handshake --resume ticket --conns 4 "
	    "--duration 1 --warmup 0");
	ck_assert_msg(st == 1, "%s", out);
	ck_assert_msg(strstr(out, "no session to resume") != NULL ||
	    strcmp(h_field(out, "status"), "not_resumed") == 0, "%s", out);
	free(out);
	finish(&d);
}
END_TEST

START_TEST(bulk_moves_bytes)
{
	struct h_daemon d;
	char *out;
	int st;

	start(&d, "bulk", NULL);
	out = load(d.port, &st, "--mode bulk --conns 2 --path /bytes/4000000 "
	    "--duration 1 --warmup 0.2");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "status", "ok");
	expect_field(out, "unit", "MB/s");
	expect_field(out, "errors", "0");
	ck_assert_msg(num(out, "bytes") >= 4000000 && num(out, "ok") >= 1, "%s", out);
	/* value is the window's bytes in MB/s. */
	ck_assert_msg(num(out, "value") > 0.9 * num(out, "bytes") / 1e6 /
	    num(out, "elapsed_s") && num(out, "value") < 1.1 * num(out, "bytes") / 1e6 /
	    num(out, "elapsed_s"), "%s", out);
	free(out);
	/* A body the backend refuses (400: not a number) is an error. */
	out = load(d.port, &st, "--mode bulk --conns 1 --path /bytes/x --duration 0.5 "
	    "--warmup 0");
	ck_assert_msg(st == 1 && num(out, "err_http") > 0, "%s", out);
	free(out);
	finish(&d);
}
END_TEST

START_TEST(idle_holds_connections)
{
	struct h_daemon d;
	char ready[512], *out;
	int st, fds0;
	long long t0;

	start(&d, "idle", NULL);
	fds0 = h_num_fds(d.pid);
	snprintf(ready, sizeof(ready), "%s/ready", h_dir());
	unlink(ready);
	/* In the background; the test ends it with SIGTERM long before
	 * --hold, which must still give a valid result. */
	t0 = h_now_ms();
	out = h_run(&st, "%s --mode idle --conns 60 --parallel 16 --hold 30 "
	    "--ready-file %s 127.0.0.1:%d > %s.out 2>&1 & p=$!; i=0; "
	    "while [ ! -f %s ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; "
	    "cat %s; sleep 0.3; ls /proc/%d/fd | wc -l; kill -TERM $p; wait $p; "
	    "echo rc=$?; cat %s.out", h_bin("load"), ready, d.port, ready, ready, ready,
	    (int)d.pid, ready);
	ck_assert_msg(strncmp(out, "ready 60\n", 9) == 0, "%s", out);
	/* Both sides of each connection are open in the daemon. */
	ck_assert_msg(atoi(out + 9) >= fds0 + 120, "fds %d then: %s", fds0, out);
	ck_assert_msg(strstr(out, "rc=0\n") != NULL, "%s", out);
	ck_assert_msg(h_now_ms() - t0 < 20000, "SIGTERM did not end the hold");
	expect_field(out, "status", "ok");
	expect_field(out, "unit", "conns");
	expect_field(out, "established", "60");
	expect_field(out, "dropped", "0");
	ck_assert_msg(num(out, "value") == 60, "%s", out);
	free(out);
	finish(&d);
}
END_TEST

START_TEST(rate_percentiles)
{
	struct h_daemon d;
	char *out;
	int st;

	start(&d, "rate", NULL);
	out = load(d.port, &st, "--mode rate --conns 4 --rate 200 --duration 1.5 "
	    "--warmup 0.3");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "status", "ok");
	expect_field(out, "unit", "us");
	ck_assert_msg(num(out, "achieved") >= 190 && num(out, "achieved") <= 210, "%s", out);
	ck_assert_msg(num(out, "samples") >= 280 && num(out, "samples") <= 310, "%s", out);
	ck_assert_msg(num(out, "p50_us") > 0 && num(out, "p50_us") <= num(out, "p90_us") &&
	    num(out, "p90_us") <= num(out, "p99_us") &&
	    num(out, "p99_us") <= num(out, "p999_us") &&
	    num(out, "p999_us") <= num(out, "max_us"), "%s", out);
	ck_assert_msg(num(out, "value") == num(out, "p50_us"), "%s", out);
	free(out);
	/* One connection cannot carry a million requests a second: the
	 * schedule falls behind and the run is not valid. */
	out = load(d.port, &st, "--mode rate --conns 1 --rate 1000000 --duration 0.5 "
	    "--warmup 0");
	ck_assert_msg(st == 1, "%s", out);
	expect_field(out, "status", "rate_not_achieved");
	ck_assert_msg(num(out, "unfinished") > 0, "%s", out);
	free(out);
	finish(&d);
}
END_TEST

START_TEST(max_requests_bounds_the_run)
{
	struct h_daemon d;
	long long t0;
	char *out;
	int st;

	start(&d, "bounds", NULL);
	t0 = h_now_ms();
	out = load(d.port, &st, "--mode handshake --conns 8 --max-requests 25 "
	    "--duration 60 --warmup 0");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "ok", "25");
	free(out);
	out = load(d.port, &st, "--mode rate --conns 2 --rate 100 --max-requests 30 "
	    "--duration 60 --warmup 0");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "samples", "30");
	ck_assert_msg(num(out, "elapsed_s") < 1, "%s", out);
	free(out);
	out = load(d.port, &st, "--mode bulk --conns 2 --path /bytes/1000 --max-requests 40 "
	    "--duration 60 --warmup 0");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "ok", "40");
	expect_field(out, "bytes", "40000");
	free(out);
	ck_assert_msg(h_now_ms() - t0 < 20000, "the count did not end the runs");
	finish(&d);
}
END_TEST

START_TEST(closed_port_counts_errors)
{
	char *out;
	int st;

	out = load(h_free_port(), &st, "--mode handshake --duration 0.5 --warmup 0");
	ck_assert_msg(st == 1, "%s", out);
	expect_field(out, "status", "errors");
	expect_field(out, "ok", "0");
	expect_field(out, "tls", "-");
	ck_assert_msg(num(out, "err_connect") > 0 &&
	    num(out, "errors") == num(out, "err_connect"), "%s", out);
	free(out);
	/* Tolerated errors leave the verdict to the rest. */
	out = load(h_free_port(), &st, "--mode idle --conns 4 --duration 0.3 --hold 0 "
	    "--max-errors 1000000");
	ck_assert_msg(st == 1, "%s", out);
	expect_field(out, "status", "not_established");
	free(out);
}
END_TEST

/* --ech-config-list: the handshakes go through Encrypted Client Hello. */
START_TEST(handshake_ech)
{
	struct h_daemon d;
	char conf[2048], args[1024], list[512], *out;
	int st, port = h_free_port(), bport = h_backend("http", NULL, &backend_pid);

	out = h_run(&st, "cd '%s' && %s --new-ech-key localhost > ech.pem && "
	    "%s --ech-config-list ech.pem", h_dir(), h_bin("tlsproxy"), h_bin("tlsproxy"));
	ck_assert_msg(st == 0 && strlen(out) > 20 && strlen(out) < sizeof(list), "%s", out);
	snprintf(list, sizeof(list), "%.*s", (int)strcspn(out, "\n"), out);
	free(out);
	snprintf(conf, sizeof(conf), "[global]\nworkers = 1\n"
	    "[listener test]\nbind = 127.0.0.1:%d\ncontext = main\nbackend = b\n"
	    "ech = %s/ech.pem\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context main]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    port, h_dir(), bport, h_dir(), h_dir());
	ck_assert_int_eq(h_daemon_start(&d, "ech", conf), 0);
	d.port = port;
	snprintf(args, sizeof(args), "--mode handshake --conns 4 --duration 0.5 --warmup 0 "
	    "--ech-config-list %s", list);
	out = load(d.port, &st, args);
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "ech", "accepted");
	expect_field(out, "tls", "TLSv1.3");
	free(out);
	/* Without it, the same server says nothing of ECH. */
	out = load(d.port, &st, "--mode handshake --conns 4 --duration 0.5 --warmup 0");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "ech", "-");
	free(out);
	out = load(d.port, &st, "--mode handshake --ech-config-list bm90IGEgbGlzdA==");
	ck_assert_msg(st == 2, "%s", out);
	free(out);
	finish(&d);
}
END_TEST

/* --plain: every mode over plain TCP, straight at tlsproxy-backend, the
 * baseline the benchmarks put under the proxies. */
START_TEST(plain_modes_against_the_backend)
{
	int st, bport = h_backend("http", NULL, &backend_pid);
	char *out;

	out = load(bport, &st, "--plain --mode handshake --conns 4 --duration 1 "
	    "--warmup 0.2");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "status", "ok");
	expect_field(out, "tls", "plain");
	expect_field(out, "cipher", "-");
	expect_field(out, "errors", "0");
	expect_field(out, "resumed", "0.0000");
	ck_assert_msg(num(out, "ok") >= 10 && num(out, "handshakes") >= num(out, "ok") - 4,
	    "%s", out);
	/* Each connection's reply is the backend's hello, in full. */
	ck_assert_msg(num(out, "bytes") >= 50 * num(out, "ok"), "%s", out);
	free(out);
	out = load(bport, &st, "--plain --mode bulk --conns 2 --path /bytes/4000000 "
	    "--duration 1 --warmup 0.2");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "status", "ok");
	expect_field(out, "tls", "plain");
	expect_field(out, "errors", "0");
	ck_assert_msg(num(out, "bytes") >= 4000000 && num(out, "value") > 0, "%s", out);
	free(out);
	out = load(bport, &st, "--plain --mode rate --conns 2 --rate 200 --duration 1 "
	    "--warmup 0.2");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "status", "ok");
	ck_assert_msg(num(out, "achieved") >= 190 && num(out, "achieved") <= 210 &&
	    num(out, "p50_us") > 0 && num(out, "p50_us") <= num(out, "p99_us"), "%s", out);
	free(out);
	out = load(bport, &st, "--plain --mode idle --conns 20 --parallel 8 --hold 0 "
	    "--duration 5");
	ck_assert_msg(st == 0, "%s", out);
	expect_field(out, "established", "20");
	free(out);
	kill(backend_pid, SIGTERM);
	waitpid(backend_pid, NULL, 0);
	/* Nothing listening: connect errors, as with TLS. */
	out = load(h_free_port(), &st, "--plain --mode handshake --duration 0.5 --warmup 0");
	ck_assert_msg(st == 1, "%s", out);
	expect_field(out, "status", "errors");
	expect_field(out, "tls", "-");
	ck_assert_msg(num(out, "err_connect") > 0 &&
	    num(out, "errors") == num(out, "err_connect"), "%s", out);
	free(out);
}
END_TEST

START_TEST(usage_errors)
{
	static const char *const bad[] = {
		"--mode nosuch",
		"--conns 0 --mode handshake",
		"--mode handshake --duration 0",
		"--mode bulk --resume ticket",
		"--mode rate --rate 0",
		"--mode handshake --request 'x\\q'",
		"--mode handshake --groups X448",
		"--mode handshake --cpu-pid 999999999",
		"--mode handshake --plain --tls13",
		"--mode handshake --plain --resume session-id",
		"--mode bulk --plain --groups X25519",
	};
	char *out;
	int st;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		out = load(h_free_port(), &st, bad[i]);
		ck_assert_msg(st == 2, "%s: %s", bad[i], out);
		free(out);
	}
	out = h_run(&st, "%s --mode handshake 2>&1", h_bin("load"));
	ck_assert_msg(st == 2 && strstr(out, "usage:") != NULL, "%s", out);
	free(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("load");
	TCase *tc = tcase_create("load");

	h_setup("load");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, handshake_full);
	tcase_add_test(tc, handshake_resumption);
	tcase_add_test(tc, session_id_follows_the_newest_session);
	tcase_add_test(tc, handshake_resumption_refused);
	tcase_add_test(tc, handshake_ech);
	tcase_add_test(tc, bulk_moves_bytes);
	tcase_add_test(tc, idle_holds_connections);
	tcase_add_test(tc, rate_percentiles);
	tcase_add_test(tc, max_requests_bounds_the_run);
	tcase_add_test(tc, closed_port_counts_errors);
	tcase_add_test(tc, plain_modes_against_the_backend);
	tcase_add_test(tc, usage_errors);
	suite_add_tcase(s, tc);
	return check_run(s);
}
