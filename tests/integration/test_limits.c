/* Abuse resistance: a flood of half-sent ClientHellos, clients that go
 * quiet after the handshake, per-address connection and rate limits, and
 * renegotiation bans driven by real clients (openssl s_client and Node),
 * with 127.0.0.2 and 127.0.0.3 as other client addresses. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

/* The first bytes of a ClientHello: a handshake record announcing 512
 * bytes, of which only the message header and version arrive. */
#define PARTIAL_HELLO "\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xfc\\x03\\x03"

static const char *
conf(int port, int bport, const char *extra)
{
	static char text[4096];

	snprintf(text, sizeof(text),
	    "[global]\nworkers = 2\nlog_level = debug\n%s\n"
	    "[listener test]\nbind = 127.0.0.1:%d\ncontext = main\n"
	    "backend = b\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context main]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    extra, port, bport, h_dir(), h_dir());
	return text;
}

/* handshake_ms runs one full handshake plus a request and returns how
 * long it took, or -1 if it failed. */
static long long
handshake_ms(int port)
{
	long long t0 = h_now_ms();
	int st;
	char *out = h_run(&st, "%s --request 'GET / HTTP/1.0\\r\\n\\r\\n' "
	    "127.0.0.1:%d", h_bin("client"), port);

	free(out);
	return st == 0 ? h_now_ms() - t0 : -1;
}

START_TEST(partial_hellos_do_not_delay_others)
{
	struct h_daemon d;
	pid_t bpid, flood;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	long long worst = 0;
	char cmd[512];

	ck_assert_int_eq(h_daemon_start(&d, "flood", conf(port, bport,
	    "handshake_timeout = 2s")), 0);
	/* 200 connections that stop in the middle of their ClientHello. */
	snprintf(cmd, sizeof(cmd), "%s --conns 200 --source 127.0.0.2 "
	    "--send-raw '%s' 127.0.0.1:%d >/dev/null", h_bin("client"), PARTIAL_HELLO, port);
	flood = fork();
	if (flood == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	/* Let all 200 get in, then measure normal clients. */
	usleep(500000);
	for (int i = 0; i < 10; i++) {
		long long ms = handshake_ms(port);

		ck_assert_msg(ms >= 0, "a normal client failed during the flood");
		if (ms > worst)
			worst = ms;
	}
	/* A fresh handshake costs a few ms; waiting for the flood's
	 * handshake_timeout (2s) would show here. */
	ck_assert_msg(worst < 1000, "a normal handshake took %lld ms", worst);
	waitpid(flood, NULL, 0);
	/* The flood ended at handshake_timeout, not before. */
	ck_assert(h_log_contains(&d, "reason=\"handshake timeout\"", 2000));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(quiet_client_ends_at_idle_timeout)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port(), st;
	long long t0;
	char *out;

	ck_assert_int_eq(h_daemon_start(&d, "quiet", conf(port, bport,
	    "idle_timeout = 1s")), 0);
	/* Handshake, send a little, then neither send nor close. */
	t0 = h_now_ms();
	out = h_run(&st, "%s --send-bytes 10 --no-half-close --expect-bytes "
	    "10 127.0.0.1:%d", h_bin("client"), port);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	ck_assert_msg(h_now_ms() - t0 >= 900 && h_now_ms() - t0 < 5000,
	    "closed after %lld ms", h_now_ms() - t0);
	ck_assert(h_log_contains(&d, "reason=\"idle timeout\"", 2000));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

/* client_ok runs one connection from |source| and returns whether it was
 * served. */
static int
client_ok(const char *source, int port)
{
	int st;
	char *out = h_run(&st, "%s --source %s --send-bytes 10 --expect-bytes "
	    "10 127.0.0.1:%d", h_bin("client"), source, port);

	free(out);
	return st == 0;
}

/* renegotiate_sclient makes openssl s_client (from 127.0.0.1) ask for a
 * renegotiation over TLS 1.2. */
static void
renegotiate_sclient(int port)
{
	free(h_run(NULL, "(sleep 0.3; echo R; sleep 0.7) | openssl s_client "
	    "-tls1_2 -connect 127.0.0.1:%d >/dev/null 2>&1", port));
}

START_TEST(renegotiation_bans_the_address)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port();
	long long t0;

	ck_assert_int_eq(h_daemon_start(&d, "reneg", conf(port, bport,
	    "renegotiation_limit = 1\nrenegotiation_window = 4s")), 0);
	t0 = h_now_ms();
	renegotiate_sclient(port);
	ck_assert(h_log_contains(&d, "client 127.0.0.1:", 2000));
	ck_assert(h_log_contains(&d, "renegotiation attempt refused", 2000));
	/* One attempt is within the limit. */
	ck_assert(client_ok("127.0.0.1", port));
	renegotiate_sclient(port);
	ck_assert(h_log_contains(&d, "client 127.0.0.1 banned for ", 2000));
	ck_assert(h_log_contains(&d, "more than 1 renegotiation attempts "
	    "within 4s", 0));
	/* Banned: refused at accept; other addresses are not. */
	ck_assert(!client_ok("127.0.0.1", port));
	ck_assert(h_log_contains(&d, "reason=\"refused: banned\"", 2000));
	ck_assert(client_ok("127.0.0.2", port));
	ck_assert(client_ok("127.0.0.3", port));
	/* The ban ends when the window has passed the first attempt. */
	while (h_now_ms() - t0 < 4500)
		usleep(100000);
	ck_assert(client_ok("127.0.0.1", port));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(renegotiation_limit_zero_with_node)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port(), st;
	char *out;

	ck_assert_int_eq(h_daemon_start(&d, "reneg0", conf(port, bport,
	    "renegotiation_limit = 0\nrenegotiation_window = 2s")), 0);
	/* Node's renegotiate() from 127.0.0.3: refused, and banned at once. */
	out = h_run(&st, "timeout 20 node -e \""
	    "const tls = require('tls');"
	    "const s = tls.connect({ port: %d, host: '127.0.0.1', localAddress:"
	    " '127.0.0.3', maxVersion: 'TLSv1.2', rejectUnauthorized: false },"
	    " () => { s.renegotiate({}, (e) => console.log('renegotiate: ' +"
	    " (e ? 'refused' : 'done'))); });"
	    "s.on('error', (e) => console.log('error ' + e.code));"
	    "s.on('close', () => console.log('closed'));\" 2>&1", port);
	ck_assert_msg(strstr(out, "closed") != NULL && strstr(out, "done") ==
	    NULL, "%s", out);
	free(out);
	ck_assert(h_log_contains(&d, "client 127.0.0.3 banned for ", 3000));
	ck_assert(!client_ok("127.0.0.3", port));
	ck_assert(client_ok("127.0.0.1", port));
	usleep(2200000);
	ck_assert(client_ok("127.0.0.3", port));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(connections_per_address)
{
	struct h_daemon d;
	pid_t bpid, holder;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port();
	char cmd[512];

	ck_assert_int_eq(h_daemon_start(&d, "peraddr", conf(port, bport,
	    "max_connections_per_address = 3")), 0);
	/* Three connections from 127.0.0.2 that stay open. */
	snprintf(cmd, sizeof(cmd), "%s --source 127.0.0.2 --conns 3 "
	    "--no-half-close --hold 2 127.0.0.1:%d >/dev/null", h_bin("client"),
	    port);
	holder = fork();
	if (holder == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	usleep(700000);
	ck_assert(!client_ok("127.0.0.2", port));
	ck_assert(h_log_contains(&d, "reason=\"refused: "
	    "max_connections_per_address\"", 2000));
	ck_assert(h_log_contains(&d, "max_connections_per_address reached, "
	    "refusing new connections (client 127.0.0.2:", 0));
	ck_assert(client_ok("127.0.0.1", port));
	/* Once they close, the address may connect again. */
	waitpid(holder, NULL, 0);
	usleep(200000);
	ck_assert(client_ok("127.0.0.2", port));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(handshake_rate_per_address)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port();
	char *out;
	int ok = 0;

	ck_assert_int_eq(h_daemon_start(&d, "rate", conf(port, bport,
	    "max_handshakes_per_second_per_address = 5")), 0);
	/* Twenty at once from 127.0.0.2: a burst of five gets in. */
	out = h_run(NULL, "%s --source 127.0.0.2 --conns 20 127.0.0.1:%d",
	    h_bin("client"), port);
	for (const char *p = out; (p = strstr(p, "ok=1")) != NULL; p++)
		ok++;
	free(out);
	ck_assert_msg(ok >= 5 && ok <= 6, "%d of 20 were served", ok);
	ck_assert(h_log_contains(&d, "reason=\"refused: "
	    "max_handshakes_per_second_per_address\"", 2000));
	/* Another address has its own bucket; this one refills. */
	ck_assert(client_ok("127.0.0.1", port));
	usleep(1100000);
	ck_assert(client_ok("127.0.0.2", port));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("limits");
	TCase *tc = tcase_create("limits");

	h_setup("limits");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, partial_hellos_do_not_delay_others);
	tcase_add_test(tc, quiet_client_ends_at_idle_timeout);
	tcase_add_test(tc, renegotiation_bans_the_address);
	tcase_add_test(tc, renegotiation_limit_zero_with_node);
	tcase_add_test(tc, connections_per_address);
	tcase_add_test(tc, handshake_rate_per_address);
	suite_add_tcase(s, tc);
	return check_run(s);
}
