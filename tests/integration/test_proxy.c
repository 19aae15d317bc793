/* End to end: the real daemon on loopback, real clients (curl, openssl
 * s_client, our BoringSSL client) and real backends. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

/* start_with starts a backend in |mode| and the daemon in front of it. */
static void
start_with(struct h_daemon *d, const char *name, const char *mode,
    const char *arg, const char *extra_global, pid_t *bpid)
{
	int bport = h_backend(mode, arg, bpid);
	int port = h_free_port();

	ck_assert_int_eq(h_daemon_start(d, name, h_simple_conf(port, bport,
	    extra_global)), 0);
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

START_TEST(curl_through_http_backend)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	start_with(&d, "curl", "http", NULL, NULL, &bpid);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/hello",
	    h_dir(), d.port);
	ck_assert_int_eq(st, 0);
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /hello\n");
	free(out);
	/* HTTP/1.1 keep-alive: two requests over one TLS connection. */
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/a "
	    "https://localhost:%d/b", h_dir(), d.port, d.port);
	ck_assert_int_eq(st, 0);
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /a\n"
	    "hello from tlsproxy's demo backend: GET /b\n");
	free(out);
	ck_assert(h_log_contains(&d, "sni=localhost", 2000));
	ck_assert(h_log_contains(&d, "version=TLSv1.3", 0));
	ck_assert(h_log_contains(&d, "reason=\"done\"", 0));
	finish(&d, bpid);
}
END_TEST

START_TEST(access_log_line_fields)
{
	struct h_daemon d;
	pid_t bpid;
	char *out, *line;
	int st;

	start_with(&d, "alog", "http", NULL, NULL, &bpid);
	out = h_run(&st, "curl -sS --http1.1 --cacert %s/ca.pem "
	    "https://localhost:%d/x", h_dir(), d.port);
	ck_assert_int_eq(st, 0);
	free(out);
	ck_assert(h_log_contains(&d, "conn id=", 2000));
	out = h_run(NULL, "grep 'conn id=' '%s' | head -n 1", d.log);
	line = out;
	ck_assert_str_eq(h_field(line, "listener"), "test");
	ck_assert_str_eq(h_field(line, "sni"), "localhost");
	ck_assert_str_eq(h_field(line, "alpn"), "-");
	ck_assert_str_eq(h_field(line, "resumed"), "no");
	ck_assert_ptr_nonnull(strstr(h_field(line, "client"), "127.0.0.1:"));
	ck_assert_ptr_nonnull(strstr(h_field(line, "backend"), "127.0.0.1:"));
	ck_assert_int_gt(atoi(h_field(line, "bytes_in")), 20);
	ck_assert_int_gt(atoi(h_field(line, "bytes_out")), 40);
	ck_assert_ptr_nonnull(h_field(line, "handshake_ms"));
	ck_assert_ptr_nonnull(h_field(line, "duration_ms"));
	ck_assert_ptr_nonnull(h_field(line, "cipher"));
	free(out);
	finish(&d, bpid);
}
END_TEST

START_TEST(openssl_s_client_versions_and_chain)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	start_with(&d, "sclient", "http", NULL, NULL, &bpid);
	out = h_run(&st, "printf 'GET /v HTTP/1.0\\r\\n\\r\\n' | openssl s_client "
	    "-connect 127.0.0.1:%d -servername localhost -CAfile %s/ca.pem "
	    "-verify_return_error -tls1_2 -ign_eof 2>&1", d.port, h_dir());
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_ptr_nonnull(strstr(out, "Protocol  : TLSv1.2"));
	ck_assert_ptr_nonnull(strstr(out, "Verify return code: 0 (ok)"));
	ck_assert_ptr_nonnull(strstr(out, "demo backend: GET /v"));
	free(out);
	out = h_run(&st, "printf 'GET /w HTTP/1.0\\r\\n\\r\\n' | openssl s_client "
	    "-connect 127.0.0.1:%d -CAfile %s/ca.pem -verify_return_error "
	    "-tls1_3 -ign_eof 2>&1", d.port, h_dir());
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_ptr_nonnull(strstr(out, "TLSv1.3"));
	ck_assert_ptr_nonnull(strstr(out, "demo backend: GET /w"));
	free(out);
	/* TLS 1.1 and older are refused. */
	out = h_run(&st, "openssl s_client -connect 127.0.0.1:%d -tls1_1 "
	    "</dev/null 2>&1", d.port);
	ck_assert_int_ne(st, 0);
	free(out);
	ck_assert(h_log_contains(&d, "handshake failed: unsupported_protocol",
	    2000));
	finish(&d, bpid);
}
END_TEST

START_TEST(megabytes_each_way_intact)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	char sent[80];
	int st;

	start_with(&d, "bulk", "echo", NULL, NULL, &bpid);
	out = h_run(&st, "%s --send-bytes 8000000 --timeout 60 127.0.0.1:%d",
	    h_bin("client"), d.port);
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "ok"), "1");
	ck_assert_str_eq(h_field(out, "sent"), "8000000");
	ck_assert_str_eq(h_field(out, "received"), "8000000");
	snprintf(sent, sizeof(sent), "%s", h_field(out, "sent_sha256"));
	ck_assert_str_eq(h_field(out, "received_sha256"), sent);
	/* The client's close_notify became a half-close to the backend, whose
	 * EOF came back as close_notify. */
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	free(out);
	ck_assert(h_log_contains(&d, "bytes_in=8000000 bytes_out=8000000", 2000));
	finish(&d, bpid);
}
END_TEST

START_TEST(sink_hash_matches)
{
	struct h_daemon d;
	pid_t bpid;
	char *out, want[160];
	int st;

	start_with(&d, "sink", "sink", NULL, NULL, &bpid);
	out = h_run(&st, "%s --send-bytes 5000000 --timeout 60 127.0.0.1:%d",
	    h_bin("client"), d.port);
	ck_assert_msg(st == 0, "%s", out);
	snprintf(want, sizeof(want), "received=5000000 sha256=%s\n",
	    h_field(out, "sent_sha256"));
	free(out);
	/* The backend reports what it got after the client's half-close. */
	out = h_run(&st, "%s --send-bytes 5000000 --timeout 60 "
	    "--expect-sha256 $(printf '%%s' '%s' | sha256sum | cut -d' ' -f1) "
	    "127.0.0.1:%d", h_bin("client"), want, d.port);
	ck_assert_msg(st == 0, "backend did not receive the exact bytes: %s",
	    out);
	free(out);
	finish(&d, bpid);
}
END_TEST

START_TEST(backend_half_closes_first)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	/* The backend sends 3 MB and half-closes; the client keeps sending
	 * after that and only then closes its side. */
	start_with(&d, "bhc", "source", "3000000", NULL, &bpid);
	out = h_run(&st, "%s --send-bytes 1000000 --timeout 60 "
	    "--expect-bytes 3000000 127.0.0.1:%d", h_bin("client"), d.port);
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "received"), "3000000");
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	free(out);
	ck_assert(h_log_contains(&d, "bytes_in=1000000 bytes_out=3000000", 2000));
	finish(&d, bpid);
}
END_TEST

/* A backend that speaks first and half-closes at once: its bytes and its
 * FIN may come in the same event as the connect's completion, and the
 * FIN raises no edge of its own afterwards. Each client gets the bytes
 * and the close_notify without sending anything. */
START_TEST(backend_speaks_first_and_half_closes)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	start_with(&d, "banner", "source", "64", NULL, &bpid);
	out = h_run(&st, "%s --conns 100 --no-half-close --expect-bytes 64 "
	    "--timeout 20 127.0.0.1:%d", h_bin("client"), d.port);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	finish(&d, bpid);
}
END_TEST

START_TEST(backend_down_closes_cleanly)
{
	struct h_daemon d;
	int port = h_free_port(), dead = h_free_port();
	char *out;
	int st;

	ck_assert_int_eq(h_daemon_start(&d, "down", h_simple_conf(port, dead,
	    NULL)), 0);
	out = h_run(&st, "%s --no-half-close --request 'GET / HTTP/1.0\\r\\n\\r\\n' "
	    "127.0.0.1:%d", h_bin("client"), port);
	ck_assert_str_eq(h_field(out, "ok"), "1");
	ck_assert_str_eq(h_field(out, "received"), "0");
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	free(out);
	ck_assert(h_log_contains(&d, "Connection refused", 2000));
	ck_assert(h_log_contains(&d, "reason=\"backend unavailable\"", 2000));
	d.port = port;
	finish(&d, 0);
}
END_TEST

START_TEST(next_address_on_connect_failure)
{
	struct h_daemon d;
	pid_t bpid;
	int port = h_free_port(), dead = h_free_port();
	int live = h_backend("http", NULL, &bpid);
	char conf[4096], *out;
	int st;

	snprintf(conf, sizeof(conf),
	    "[listener t]\nbind = 127.0.0.1:%d\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:%d, localhost:%d\n"
	    "[context c]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    port, dead, live, h_dir(), h_dir());
	ck_assert_int_eq(h_daemon_start(&d, "rr", conf), 0);
	for (int i = 0; i < 6; i++) {
		out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/%d",
		    h_dir(), port, i);
		ck_assert_msg(st == 0, "request %d: %s", i, out);
		free(out);
	}
	ck_assert(h_log_contains(&d, "Connection refused", 2000));
	finish(&d, bpid);
}
END_TEST

START_TEST(non_tls_bytes_end_only_that_connection)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	start_with(&d, "nontls", "http", NULL, NULL, &bpid);
	out = h_run(&st, "%s --conns 20 --send-bytes 200000 --timeout 60 "
	    "127.0.0.1:%d & "
	    "%s --send-raw 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' 127.0.0.1:%d; "
	    "%s --send-raw 'SSH-2.0-OpenSSH_9.2\\r\\n' 127.0.0.1:%d; "
	    "head -c 3000 /dev/urandom | timeout 5 %s --send-file /dev/stdin "
	    "--no-half-close 127.0.0.1:%d; wait",
	    h_bin("client"), d.port, h_bin("client"), d.port, h_bin("client"),
	    d.port, h_bin("client"), d.port);
	ck_assert(h_log_contains(&d, "handshake failed: wrong_version_number",
	    2000));
	free(out);
	/* Meanwhile-open and later connections are fine. */
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/after",
	    h_dir(), d.port);
	ck_assert_int_eq(st, 0);
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /after\n");
	free(out);
	finish(&d, bpid);
}
END_TEST

/* raw_connect opens a plain TCP connection to 127.0.0.1:|port|. */
static int
raw_connect(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* Connections queued while the daemon could not run are all taken once
 * it can, though each accept batch starts small: none waits for a later
 * arrival to be noticed. */
START_TEST(queued_connections_all_accepted)
{
	enum { N = 40 };
	struct h_daemon d;
	pid_t bpid;
	int fds[N], fds0, now = 0;
	long long t0;

	start_with(&d, "queued", "echo", NULL, NULL, &bpid);
	fds0 = h_num_fds(d.pid);
	ck_assert_int_eq(kill(d.pid, SIGSTOP), 0);
	for (int i = 0; i < N; i++)
		fds[i] = raw_connect(d.port);
	ck_assert_int_eq(kill(d.pid, SIGCONT), 0);
	t0 = h_now_ms();
	while (h_now_ms() - t0 < 5000 && (now = h_num_fds(d.pid)) < fds0 + N)
		usleep(20000);
	ck_assert_msg(now >= fds0 + N, "%d of %d queued connections accepted",
	    now - fds0, N);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	finish(&d, bpid);
}
END_TEST

START_TEST(silent_client_dropped_at_handshake_timeout)
{
	struct h_daemon d;
	pid_t bpid;
	struct pollfd p;
	long long t0, waited;
	char buf[16];
	int fd;

	start_with(&d, "hstimeout", "http", NULL, "handshake_timeout = 600ms",
	    &bpid);
	fd = raw_connect(d.port);
	t0 = h_now_ms();
	p.fd = fd;
	p.events = POLLIN;
	ck_assert_int_eq(poll(&p, 1, 5000), 1);
	waited = h_now_ms() - t0;
	ck_assert_int_le(read(fd, buf, sizeof(buf)), 0);
	ck_assert_msg(waited >= 500 && waited < 3000, "closed after %lldms",
	    waited);
	close(fd);
	ck_assert(h_log_contains(&d, "reason=\"handshake timeout\"", 2000));
	finish(&d, bpid);
}
END_TEST

START_TEST(idle_relay_closed_at_idle_timeout)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	long long t0;
	int st;

	start_with(&d, "idle", "echo", NULL, "idle_timeout = 700ms", &bpid);
	t0 = h_now_ms();
	out = h_run(&st, "%s --no-half-close --request 'ping' --timeout 10 "
	    "127.0.0.1:%d", h_bin("client"), d.port);
	ck_assert_str_eq(h_field(out, "received"), "4");
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	ck_assert_int_lt(h_now_ms() - t0, 5000);
	free(out);
	ck_assert(h_log_contains(&d, "reason=\"idle timeout\"", 2000));
	finish(&d, bpid);
}
END_TEST

START_TEST(stalled_reader_keeps_memory_bounded)
{
	struct h_daemon d;
	pid_t bpid, cpid;
	long before, during;
	char cmd[512];
	char *out;
	int st;

	start_with(&d, "stall", "source", "100000000", "access_log = no",
	    &bpid);
	before = h_rss_kib(d.pid);
	snprintf(cmd, sizeof(cmd), "%s --no-read --hold 4 127.0.0.1:%d "
	    ">/dev/null", h_bin("client"), d.port);
	cpid = fork();
	if (cpid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	sleep(2);
	during = h_rss_kib(d.pid);
	/* Other clients are served meanwhile. */
	out = h_run(&st, "%s --no-half-close --request x --expect-bytes "
	    "100000000 --timeout 60 127.0.0.1:%d", h_bin("client"), d.port);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	waitpid(cpid, NULL, 0);
	/* 100 MB were offered; the daemon holds at most its buffers. */
	ck_assert_msg(during - before < 8 * 1024, "RSS grew from %ld to %ld KiB",
	    before, during);
	finish(&d, bpid);
}
END_TEST

START_TEST(thousand_concurrent_connections)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st, lines = 0;

	start_with(&d, "many", "echo", NULL, "access_log = no", &bpid);
	out = h_run(&st, "%s --conns 1000 --send-bytes 20000 --timeout 120 "
	    "127.0.0.1:%d", h_bin("client"), d.port);
	for (char *p = out; (p = strstr(p, "conn=")) != NULL; p++) {
		char *nl = strchr(p, '\n');
		char sent[80];

		if (nl != NULL)
			*nl = '\0';
		ck_assert_msg(strcmp(h_field(p, "ok"), "1") == 0, "%s", p);
		snprintf(sent, sizeof(sent), "%s", h_field(p, "sent_sha256"));
		ck_assert_str_eq(h_field(p, "received_sha256"), sent);
		lines++;
		if (nl == NULL)
			break;
		p = nl;
	}
	ck_assert_int_eq(lines, 1000);
	ck_assert_int_eq(st, 0);
	free(out);
	finish(&d, bpid);
}
END_TEST

START_TEST(ipv6_and_unix_listeners)
{
	struct h_daemon d;
	pid_t bpid;
	int port = h_free_port(), bport = h_backend("http", NULL, &bpid);
	char conf[4096], *out;
	int st;

	snprintf(conf, sizeof(conf),
	    "[listener t]\nbind = [::1]:%d, unix:%s/tls.sock\ncontext = c\n"
	    "backend = b\n"
	    "[backend b]\naddress = [::1]:%d, 127.0.0.1:%d\n"
	    "[context c]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    port, h_dir(), bport, bport, h_dir(), h_dir());
	ck_assert_int_eq(h_daemon_start(&d, "v6", conf), 0);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem 'https://[::1]:%d/six'",
	    h_dir(), port);
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /six\n");
	free(out);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem --unix-socket %s/tls.sock "
	    "https://localhost/unix", h_dir(), h_dir());
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /unix\n");
	free(out);
	finish(&d, bpid);
	/* The socket file goes away with the daemon. */
	out = h_run(&st, "test -e %s/tls.sock", h_dir());
	ck_assert_int_ne(st, 0);
	free(out);
}
END_TEST

START_TEST(sigterm_drains_open_connections)
{
	struct h_daemon d;
	pid_t bpid, cpid;
	long long t0;
	char cmd[512];
	int st;

	start_with(&d, "drain", "echo", NULL, "shutdown_timeout = 20s", &bpid);
	/* A client that is still sending when SIGTERM arrives. */
	snprintf(cmd, sizeof(cmd), "(sleep 1; printf late) | %s --send-file "
	    "/dev/stdin --timeout 20 127.0.0.1:%d > %s/drain.out",
	    h_bin("client"), d.port, h_dir());
	cpid = fork();
	if (cpid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	usleep(400000);
	t0 = h_now_ms();
	kill(d.pid, SIGTERM);
	/* No new connections once draining. */
	usleep(200000);
	{
		char *out = h_run(&st, "curl -sS --max-time 2 -k "
		    "https://127.0.0.1:%d/ 2>&1", d.port);

		ck_assert_int_ne(st, 0);
		free(out);
	}
	waitpid(cpid, &st, 0);
	ck_assert_int_eq(WEXITSTATUS(st), 0);
	{
		char *out = h_run(NULL, "cat %s/drain.out", h_dir());

		ck_assert_str_eq(h_field(out, "received"), "4");
		free(out);
	}
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	ck_assert_int_lt(h_now_ms() - t0, 5000);
	kill(bpid, SIGTERM);
}
END_TEST

/* Signals keep coming while the daemon shuts down (an impatient operator,
 * a supervisor repeating itself): the exit stays clean. */
START_TEST(repeated_sigterm_exits_cleanly)
{
	struct h_daemon d;
	pid_t bpid;
	int st = -1;

	for (int round = 0; round < 5; round++) {
		start_with(&d, "sigterms", "echo", NULL, NULL, &bpid);
		for (int i = 0; i < 2000; i++) {
			kill(d.pid, i % 2 ? SIGTERM : SIGINT);
			if (waitpid(d.pid, &st, WNOHANG) == d.pid)
				break;
			usleep(500);
		}
		waitpid(d.pid, &st, 0);
		d.pid = 0;
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		    "round %d: exit status %d, signal %d", round,
		    WIFEXITED(st) ? WEXITSTATUS(st) : -1,
		    WIFSIGNALED(st) ? WTERMSIG(st) : 0);
		kill(bpid, SIGTERM);
	}
}
END_TEST

START_TEST(shutdown_timeout_closes_with_close_notify)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	start_with(&d, "drainto", "echo", NULL, "shutdown_timeout = 500ms",
	    &bpid);
	/* The client's input stays open: only the daemon ends this. The
	 * shell times the client alone, not the writer that keeps the pipe
	 * open. */
	out = h_run(&st, "t0=$(date +%%s%%N); (sleep 0.5; kill -TERM %d; sleep 5) "
	    "| { %s --send-file /dev/stdin --timeout 20 127.0.0.1:%d; "
	    "echo \" elapsed_ms=$(( ($(date +%%s%%N) - t0) / 1000000 ))\"; }",
	    (int)d.pid, h_bin("client"), d.port);
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	ck_assert_msg(atoi(h_field(out, "elapsed_ms")) < 3000, "%s", out);
	free(out);
	ck_assert(h_log_contains(&d, "reason=\"shutdown\"", 3000));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(no_openssl_in_the_process)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	out = h_run(&st, "ldd %s", h_bin("tlsproxy"));
	ck_assert_int_eq(st, 0);
	ck_assert_msg(strstr(out, "libssl.so.3") == NULL &&
	    strstr(out, "libcrypto.so.3") == NULL &&
	    strstr(out, "libevent_openssl") == NULL, "ldd: %s", out);
	free(out);
	start_with(&d, "maps", "http", NULL, NULL, &bpid);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/",
	    h_dir(), d.port);
	free(out);
	out = h_run(&st, "cat /proc/%d/maps", (int)d.pid);
	ck_assert_ptr_nonnull(strstr(out, "r-xp"));
	ck_assert_msg(strstr(out, "libssl.so.3") == NULL &&
	    strstr(out, "libcrypto.so.3") == NULL, "OpenSSL mapped: %s", out);
	free(out);
	finish(&d, bpid);
}
END_TEST

START_TEST(config_test_mode)
{
	char conf[2048], *out;
	int st;

	snprintf(conf, sizeof(conf), "%s", h_simple_conf(1, 2, NULL));
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("good.conf", conf));
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	snprintf(conf, sizeof(conf),
	    "[global]\nidle_timeout = forever\n"
	    "[listener t]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:2\n"
	    "[context c]\ncert = %s/missing.pem\nkey = %s/leaf.key\n"
	    "[context d]\ncert = %s/leaf.pem\nkey = %s/other.key\n",
	    h_dir(), h_dir(), h_dir(), h_dir());
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("bad.conf", conf));
	ck_assert_int_eq(st, 1);
	/* Syntax errors come first; files are checked once syntax is good. */
	ck_assert_ptr_nonnull(strstr(out, "bad.conf:2: key 'idle_timeout': "
	    "expected a duration like 250ms, 30s, 10m or 12h, got 'forever'"));
	free(out);
	snprintf(conf, sizeof(conf),
	    "[listener t]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:2\n"
	    "[context c]\ncert = %s/missing.pem\nkey = %s/leaf.key\n"
	    "[context d]\ncert = %s/leaf.pem\nkey = %s/other.key\n"
	    "[context e]\ncert = %s/ca.key\nkey = %s/leaf.pem\n",
	    h_dir(), h_dir(), h_dir(), h_dir(), h_dir(), h_dir());
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("bad2.conf", conf));
	ck_assert_int_eq(st, 1);
	ck_assert_msg(strstr(out, "bad2.conf:8: key 'cert': cannot open '") &&
	    strstr(out, "missing.pem': No such file or directory"), "%s", out);
	ck_assert_msg(strstr(out, "bad2.conf:12: key 'key': private key '") &&
	    strstr(out, "does not match the certificate"), "%s", out);
	ck_assert_msg(strstr(out, "bad2.conf:14: key 'cert': '") &&
	    strstr(out, "holds no PEM certificate"), "%s", out);
	ck_assert_msg(strstr(out, "bad2.conf:15: key 'key': cannot read a PEM "
	    "private key"), "%s", out);
	ck_assert_ptr_nonnull(strstr(out, "4 errors in"));
	free(out);
}
END_TEST

START_TEST(wrong_chain_order_refused)
{
	char conf[2048], *out;
	int st;

	out = h_run(&st, "cd %s && cat ca.pem leaf-only.pem > reversed.pem",
	    h_dir());
	free(out);
	snprintf(conf, sizeof(conf),
	    "[listener t]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:2\n"
	    "[context c]\ncert = %s/reversed.pem\nkey = %s/leaf.key\n",
	    h_dir(), h_dir());
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("order.conf", conf));
	ck_assert_int_eq(st, 1);
	ck_assert_msg(strstr(out, "certificate 1 was not issued by certificate "
	    "2") != NULL, "%s", out);
	free(out);
}
END_TEST

START_TEST(port_in_use_is_a_clear_error)
{
	struct h_daemon d, d2;
	pid_t bpid;

	start_with(&d, "inuse", "http", NULL, NULL, &bpid);
	ck_assert_int_eq(h_daemon_start(&d2, "inuse2", h_simple_conf(d.port,
	    1, NULL)), -1);
	ck_assert(h_log_contains(&d2, "Address already in use", 0));
	finish(&d, bpid);
}
END_TEST

START_TEST(busy_poll_serves_and_stops)
{
	struct h_daemon d;
	pid_t bpid;
	char *out;
	int st;

	start_with(&d, "busy", "echo", NULL, "busy_poll = 2ms", &bpid);
	out = h_run(&st, "%s --conns 50 --send-bytes 100000 --timeout 60 "
	    "127.0.0.1:%d", h_bin("client"), d.port);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	/* A spinning worker still drains and exits on SIGTERM. */
	finish(&d, bpid);
}
END_TEST

START_TEST(max_connections_refuses_extra_at_accept)
{
	struct h_daemon d;
	pid_t bpid;
	char buf[16];
	struct pollfd p;
	int held[2], extra;
	char *out;
	int st;

	start_with(&d, "maxconn", "http", NULL, "max_connections = 2", &bpid);
	/* Two silent connections fill the limit... */
	held[0] = raw_connect(d.port);
	held[1] = raw_connect(d.port);
	usleep(200000);
	/* ...so a third is closed before any TLS work. */
	extra = raw_connect(d.port);
	p.fd = extra;
	p.events = POLLIN;
	ck_assert_int_eq(poll(&p, 1, 3000), 1);
	ck_assert_int_le(read(extra, buf, sizeof(buf)), 0);
	close(extra);
	ck_assert(h_log_contains(&d, "max_connections reached", 2000));
	close(held[0]);
	close(held[1]);
	/* Closed connections free their slots. */
	usleep(300000);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/ok",
	    h_dir(), d.port);
	ck_assert_int_eq(st, 0);
	free(out);
	finish(&d, bpid);
}
END_TEST

START_TEST(listener_tls_settings_override_global)
{
	struct h_daemon d;
	pid_t bpid;
	int p1 = h_free_port(), p2 = h_free_port();
	int bport = h_backend("http", NULL, &bpid);
	char conf[4096], *out;
	int st;

	/* One context, two listeners: the second narrows it to TLS 1.2 and
	 * one cipher; a context setting would still win over both. */
	snprintf(conf, sizeof(conf),
	    "[global]\nciphers = ECDHE+AESGCM\n"
	    "[listener one]\nbind = 127.0.0.1:%d\ncontext = c\nbackend = b\n"
	    "[listener two]\nbind = 127.0.0.1:%d\ncontext = c\nbackend = b\n"
	    "max_version = TLSv1.2\nciphers = ECDHE-ECDSA-AES256-GCM-SHA384\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context c]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    p1, p2, bport, h_dir(), h_dir());
	ck_assert_int_eq(h_daemon_start(&d, "lsnr", conf), 0);
	out = h_run(&st, "openssl s_client -connect 127.0.0.1:%d </dev/null "
	    "2>&1", p1);
	ck_assert_msg(strstr(out, "New, TLSv1.3") != NULL, "%s", out);
	free(out);
	out = h_run(&st, "openssl s_client -connect 127.0.0.1:%d </dev/null "
	    "2>&1", p2);
	ck_assert_msg(strstr(out, "New, TLSv1.2, Cipher is "
	    "ECDHE-ECDSA-AES256-GCM-SHA384") != NULL, "%s", out);
	free(out);
	d.port = p1;
	finish(&d, bpid);
	/* A bad value on a listener is reported at the listener's line. */
	snprintf(conf, sizeof(conf),
	    "[listener one]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "ciphers = NOT-A-CIPHER\n"
	    "[backend b]\naddress = 127.0.0.1:2\n"
	    "[context c]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    h_dir(), h_dir());
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("lsnr-bad.conf", conf));
	ck_assert_int_eq(st, 1);
	ck_assert_msg(strstr(out, "lsnr-bad.conf:5: key 'ciphers': "
	    "'NOT-A-CIPHER' is not a valid cipher list") != NULL, "%s", out);
	free(out);
}
END_TEST

START_TEST(static_ocsp_response_is_stapled)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[4096], *out;
	int st;

	/* A response from openssl's own responder code, for our leaf. */
	out = h_run(&st, "cd %s && s=$(openssl x509 -in leaf-only.pem -noout "
	    "-serial | cut -d= -f2) && printf 'V\\t301231235959Z\\t\\t%%s"
	    "\\tunknown\\t/CN=localhost\\n' $s > ocsp-index.txt && "
	    "openssl ocsp -issuer ca.pem -cert leaf-only.pem -no_nonce -reqout "
	    "ocsp-req.der && openssl ocsp -index ocsp-index.txt -CA ca.pem "
	    "-rsigner ca.pem -rkey ca.key -reqin ocsp-req.der -respout "
	    "ocsp.der -ndays 1 2>&1", h_dir());
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	snprintf(conf, sizeof(conf), "%s", h_simple_conf(port, bport, NULL));
	snprintf(conf + strlen(conf), sizeof(conf) - strlen(conf),
	    "ocsp = %s/ocsp.der\n", h_dir());
	ck_assert_int_eq(h_daemon_start(&d, "ocsp", conf), 0);
	out = h_run(&st, "openssl s_client -connect 127.0.0.1:%d -status "
	    "</dev/null 2>&1", port);
	ck_assert_msg(strstr(out, "OCSP Response Status: successful") != NULL &&
	    strstr(out, "Cert Status: good") != NULL, "%s", out);
	free(out);
	/* Clients that do not ask get no staple. */
	out = h_run(&st, "openssl s_client -connect 127.0.0.1:%d </dev/null "
	    "2>&1", port);
	ck_assert_ptr_null(strstr(out, "OCSP Response Status"));
	free(out);
	/* The file is watched: a new response (now: revoked) is taken up
	 * without a reload. */
	out = h_run(&st, "cd %s && sed -i 's/^V\\t301231235959Z\\t\\t/R\\t"
	    "301231235959Z\\t240101000000Z\\t/' ocsp-index.txt && openssl "
	    "ocsp -index ocsp-index.txt -CA ca.pem -rsigner ca.pem -rkey ca.key "
	    "-reqin ocsp-req.der -respout ocsp.new -ndays 1 && mv ocsp.new "
	    "ocsp.der 2>&1", h_dir());
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	ck_assert(h_log_contains(&d, "new response from '", 5000));
	out = h_run(&st, "openssl s_client -connect 127.0.0.1:%d -status "
	    "</dev/null 2>&1", port);
	ck_assert_msg(strstr(out, "Cert Status: revoked") != NULL, "%s", out);
	free(out);
	d.port = port;
	finish(&d, bpid);
	/* A response for another certificate is refused at load. */
	snprintf(conf, sizeof(conf), "%s", h_simple_conf(port, bport, NULL));
	snprintf(conf + strlen(conf), sizeof(conf) - strlen(conf),
	    "cert = %s/rsa.pem\nkey = %s/rsa.key\nocsp = %s/ocsp.der\n",
	    h_dir(), h_dir(), h_dir());
	/* Replace the context's pair with the self-signed RSA one. */
	*strstr(conf, "cert = ") = '#';
	*strstr(conf, "key = ") = '#';
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("ocsp-bad.conf", conf));
	ck_assert_int_eq(st, 1);
	ck_assert_msg(strstr(out, "key 'ocsp': '") != NULL &&
	    strstr(out, "cannot be stapled: the certificate's issuer must "
	    "follow it in 'cert'") != NULL, "%s", out);
	free(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("proxy");
	TCase *tc = tcase_create("end-to-end");

	h_setup("proxy");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, curl_through_http_backend);
	tcase_add_test(tc, access_log_line_fields);
	tcase_add_test(tc, openssl_s_client_versions_and_chain);
	tcase_add_test(tc, megabytes_each_way_intact);
	tcase_add_test(tc, sink_hash_matches);
	tcase_add_test(tc, backend_half_closes_first);
	tcase_add_test(tc, backend_down_closes_cleanly);
	tcase_add_test(tc, next_address_on_connect_failure);
	tcase_add_test(tc, non_tls_bytes_end_only_that_connection);
	tcase_add_test(tc, backend_speaks_first_and_half_closes);
	tcase_add_test(tc, queued_connections_all_accepted);
	tcase_add_test(tc, silent_client_dropped_at_handshake_timeout);
	tcase_add_test(tc, idle_relay_closed_at_idle_timeout);
	tcase_add_test(tc, stalled_reader_keeps_memory_bounded);
	tcase_add_test(tc, thousand_concurrent_connections);
	tcase_add_test(tc, ipv6_and_unix_listeners);
	tcase_add_test(tc, sigterm_drains_open_connections);
	tcase_add_test(tc, repeated_sigterm_exits_cleanly);
	tcase_add_test(tc, shutdown_timeout_closes_with_close_notify);
	tcase_add_test(tc, no_openssl_in_the_process);
	tcase_add_test(tc, config_test_mode);
	tcase_add_test(tc, wrong_chain_order_refused);
	tcase_add_test(tc, port_in_use_is_a_clear_error);
	tcase_add_test(tc, busy_poll_serves_and_stops);
	tcase_add_test(tc, max_connections_refuses_extra_at_accept);
	tcase_add_test(tc, listener_tls_settings_override_global);
	tcase_add_test(tc, static_ocsp_response_is_stapled);
	suite_add_tcase(s, tc);
	return check_run(s);
}
