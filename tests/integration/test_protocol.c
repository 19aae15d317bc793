/* Protocol behaviour seen from real clients: what a client gets without
 * sending anything (session tickets, a KeyUpdate answer), and how a
 * connection ends while the client is still sending (lingering close). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

static const char *
probe(void)
{
	static char path[512];

	snprintf(path, sizeof(path), "%s/tls_probe.py",
	    getenv("TLSPROXY_TEST_SRC"));
	return path;
}

/* start_mute starts the daemon in front of a backend that never says a
 * word, so nothing the client gets can have been pushed out by backend
 * data. */
static void
start_mute(struct h_daemon *d, const char *name, pid_t *bpid)
{
	int bport = h_backend("mute", NULL, bpid);

	int port = h_free_port();

	ck_assert_int_eq(h_daemon_start(d, name, h_simple_conf(port, bport,
	    NULL)), 0);
	d->port = port;
}

static void
finish(struct h_daemon *d, pid_t bpid)
{
	ck_assert_int_eq(h_daemon_stop(d, 10000), 0);
	if (bpid > 0) {
		kill(bpid, SIGTERM);
		waitpid(bpid, NULL, 0);
	}
}

START_TEST(tickets_arrive_while_client_waits)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	start_mute(&d, "tickets", &bpid);
	for (int i = 0; i < 3; i++) {
		/* TLS 1.3 sends tickets after the handshake: they must not
		 * wait for the backend to speak. */
		out = h_run(&st, "python3 %s ticket %d 1.3 100", probe(), d.port);
		ck_assert_msg(st == 0 && strcmp(h_field(out, "ticket"), "1") == 0,
		    "TLS 1.3 round %d: %s", i, out);
		ck_assert_msg(atof(h_field(out, "ms")) < 100.0, "%s", out);
		free(out);
		/* One that sent a request with its Finished gets them with
		 * the answer, or on their own if the backend is slow, as
		 * this one is: still in time. */
		out = h_run(&st, "python3 %s ticket-request %d 1.3 100", probe(),
		    d.port);
		ck_assert_msg(st == 0 && strcmp(h_field(out, "ticket"), "1") == 0,
		    "TLS 1.3 with a request, round %d: %s", i, out);
		ck_assert_msg(atof(h_field(out, "ms")) < 100.0, "%s", out);
		free(out);
		out = h_run(&st, "python3 %s ticket %d 1.2 100", probe(), d.port);
		ck_assert_msg(st == 0 && strcmp(h_field(out, "ticket"), "1") == 0,
		    "TLS 1.2 round %d: %s", i, out);
		free(out);
	}
	finish(&d, bpid);
}
END_TEST

START_TEST(gnutls_resumes_with_nothing_to_send)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	start_mute(&d, "gnutls", &bpid);
	out = h_run(&st, "timeout 20 gnutls-cli --insecure --resume -p %d "
	    "127.0.0.1 < /dev/null 2>&1", d.port);
	ck_assert_msg(strstr(out, "This is a resumed session") != NULL, "%s",
	    out);
	free(out);
	ck_assert(h_log_contains(&d, "resumed=yes", 2000));
	finish(&d, bpid);
}
END_TEST

START_TEST(key_update_answered_without_backend_data)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	start_mute(&d, "keyupdate", &bpid);
	/* "K" asks s_client to send a KeyUpdate that requests ours. */
	out = h_run(&st, "(printf 'K\\n'; sleep 1) | timeout 10 openssl "
	    "s_client -connect 127.0.0.1:%d -tls1_3 -msg 2>&1", d.port);
	ck_assert_msg(strstr(out, ">>> TLS 1.3, Handshake [length 0005], "
	    "KeyUpdate") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "<<< TLS 1.3, Handshake [length 0005], "
	    "KeyUpdate") != NULL, "no KeyUpdate came back: %s", out);
	free(out);
	finish(&d, bpid);
}
END_TEST

START_TEST(client_still_sending_sees_close_notify)
{
	static const char *const versions[] = { "--tls12", "--tls13" };
	struct h_daemon d;
	int dead = h_free_port();
	char *out;
	int st;
	int port = h_free_port();

	ck_assert_int_eq(h_daemon_start(&d, "linger", h_simple_conf(port,
	    dead, NULL)), 0);
	d.port = port;
	/* The backend is down, so the daemon ends each connection right
	 * after the handshake, while the client is sending its megabyte.
	 * Closing then would reset the connection under the client's
	 * writes; it must get the close_notify instead. */
	for (int i = 0; i < 6; i++) {
		out = h_run(&st, "%s %s --send-bytes 1000000 127.0.0.1:%d",
		    h_bin("client"), versions[i % 2], d.port);
		ck_assert_msg(strcmp(h_field(out, "ok"), "1") == 0 &&
		    strcmp(h_field(out, "close_notify"), "1") == 0,
		    "%s round %d: %s", versions[i % 2], i, out);
		free(out);
	}
	ck_assert(h_log_contains(&d, "reason=\"backend unavailable\"", 2000));
	finish(&d, 0);
}
END_TEST

START_TEST(lingering_is_bounded)
{
	struct h_daemon d;
	int dead = h_free_port();
	long long start;
	char *out;
	int st;
	int port = h_free_port();

	ck_assert_int_eq(h_daemon_start(&d, "linger-bound",
	    h_simple_conf(port, dead, NULL)), 0);
	d.port = port;
	/* A client that keeps sending is cut off after a bounded time
	 * (two seconds) or amount, whichever comes first. */
	out = h_run(&st, "python3 %s flood %d 1.3 20", probe(), d.port);
	ck_assert_msg(st == 0 && strcmp(h_field(out, "error"), "none") != 0 &&
	    atof(h_field(out, "ms")) < 6000, "%s", out);
	free(out);
	/* One that stays connected and silent does not keep its socket
	 * on the daemon's side past the same bound. */
	out = h_run(&st, "python3 %s hold %d 1.3 5 >/dev/null & echo started",
	    probe(), d.port);
	free(out);
	usleep(500 * 1000);
	start = h_now_ms();
	while (h_num_fds(d.pid) > d.base_fds && h_now_ms() - start < 4500)
		usleep(50 * 1000);
	ck_assert_msg(h_num_fds(d.pid) <= d.base_fds, "%d descriptors, %d at "
	    "start", h_num_fds(d.pid), d.base_fds);
	finish(&d, 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("protocol");
	TCase *tc = tcase_create("protocol");

	h_setup("protocol");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, tickets_arrive_while_client_waits);
	tcase_add_test(tc, gnutls_resumes_with_nothing_to_send);
	tcase_add_test(tc, key_update_answered_without_backend_data);
	tcase_add_test(tc, client_still_sending_sees_close_notify);
	tcase_add_test(tc, lingering_is_bounded);
	suite_add_tcase(s, tc);
	return check_run(s);
}
