/* Faults: backends that refuse, reset, never answer or crawl; clients
 * that reset mid-handshake, go quiet, never read, leave at random points
 * or send malformed or non-TLS bytes; reloads under load, a truncated
 * config, deleted certificates, running out of descriptors and the
 * session store going away. Each case checks what the client sees and
 * what the log says, and that the daemon keeps serving: a good client
 * right after the fault, and a connection opened before it that still
 * moves data afterwards (faults.py steady). The crafted clients are in
 * faults.py. */
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

/* The ALPN protocol that routes a connection to the faulty backend; the
 * listener sends everything else to an echo backend. */
#define FAULT_ALPN "fault"

/* A long-lived connection through the echo backend. */
struct steady {
	pid_t pid;
	int in; /* its standard input: closing it ends the connection */
	char status[512], out[512];
};

struct fx {
	struct h_daemon d;
	pid_t echo_pid, fault_pid;
	int echo_port, fault_port;
	const char *cert; /* base name of the context's certificate files */
	const char *fault_extra; /* more lines for [backend fault] */
	struct steady steady;
};

static const char *
faults_py(void)
{
	static char path[512];

	snprintf(path, sizeof(path), "%s/faults.py",
	    getenv("TLSPROXY_TEST_SRC"));
	return path;
}

/* spawn runs |fmt| through sh in the background, stdout to |out|; it dies
 * with the test. */
static pid_t
spawn(const char *out, const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	pid_t pid;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (freopen(out, "w", stdout) == NULL)
			_exit(126);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static int
raw_connect(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port) };
	/* Close-on-exec: a child started later must not keep it open. */
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

static int
steady_rounds(const struct steady *s)
{
	char buf[64] = "";
	FILE *f = fopen(s->status, "r");
	int n = -1;

	if (f == NULL)
		return -1;
	if (fgets(buf, sizeof(buf), f) != NULL)
		sscanf(buf, "rounds=%d", &n);
	fclose(f);
	return n;
}

static void
steady_start(struct steady *s, int port)
{
	char portstr[16];
	long long end = h_now_ms() + 10000;
	int p[2];

	snprintf(s->status, sizeof(s->status), "%s/steady-%d.status", h_dir(),
	    port);
	snprintf(s->out, sizeof(s->out), "%s/steady-%d.out", h_dir(), port);
	snprintf(portstr, sizeof(portstr), "%d", port);
	unlink(s->status);
	/* Close-on-exec, so that no other child keeps its input open. */
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	s->pid = fork();
	ck_assert_int_ge(s->pid, 0);
	if (s->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(p[0], STDIN_FILENO);
		if (freopen(s->out, "w", stdout) == NULL)
			_exit(126);
		execlp("python3", "python3", faults_py(), "steady", portstr,
		    s->status, (char *)NULL);
		_exit(127);
	}
	close(p[0]);
	s->in = p[1];
	while (steady_rounds(s) < 1) {
		ck_assert_msg(h_now_ms() < end, "the steady connection did not "
		    "start");
		usleep(20000);
	}
}

/* steady_moves fails the test unless the steady connection completes
 * a few more round trips now. */
static void
steady_moves(const struct steady *s)
{
	int before = steady_rounds(s);
	long long end = h_now_ms() + 5000;

	while (steady_rounds(s) < before + 3) {
		ck_assert_msg(h_now_ms() < end, "the steady connection stalled "
		    "at round %d", steady_rounds(s));
		usleep(20000);
	}
}

static void
steady_stop(struct steady *s)
{
	char *out;
	int st;

	close(s->in);
	ck_assert_int_eq(waitpid(s->pid, &st, 0), s->pid);
	out = h_run(NULL, "cat '%s'", s->out);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
	    strncmp(out, "ok=1 ", 5) == 0, "steady connection: %s", out);
	free(out);
}

/* good_client sends 100 kB through the echo backend and checks it all
 * came back, with a clean end. */
static void
good_client(int port)
{
	char sent[80];
	int st;
	char *out = h_run(&st, "%s --send-bytes 100000 --timeout 20 "
	    "127.0.0.1:%d", h_bin("client"), port);

	ck_assert_msg(st == 0, "good client: %s", out);
	ck_assert_str_eq(h_field(out, "received"), "100000");
	snprintf(sent, sizeof(sent), "%s", h_field(out, "sent_sha256"));
	ck_assert_str_eq(h_field(out, "received_sha256"), sent);
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	free(out);
}

/* stream_sha256 returns the SHA-256 of the first |n| bytes of the test
 * stream (the backend's source modes and the client's --send-bytes),
 * sending them through the echo backend on the way. */
static const char *
stream_sha256(int port, long n)
{
	static char sha[80];
	int st;
	char *out = h_run(&st, "%s --send-bytes %ld --timeout 20 127.0.0.1:%d",
	    h_bin("client"), n, port);

	ck_assert_msg(st == 0, "%s", out);
	snprintf(sha, sizeof(sha), "%s", h_field(out, "sent_sha256"));
	free(out);
	return sha;
}

static const char *
fx_conf(const struct fx *f, int port, const char *extra)
{
	static char text[4096];

	snprintf(text, sizeof(text),
	    "[global]\nworkers = 2\nlog_level = debug\n%s\n"
	    "[listener test]\nbind = 127.0.0.1:%d\ncontext = main\n"
	    "backend = echo\nalpn = " FAULT_ALPN "\n"
	    "alpn_backend = " FAULT_ALPN ":fault\n"
	    "[backend echo]\naddress = 127.0.0.1:%d\n"
	    "[backend fault]\naddress = 127.0.0.1:%d\nconnect_timeout = 2s\n"
	    "%s\n"
	    "[context main]\ncert = %s/%s.pem\nkey = %s/%s.key\n",
	    extra != NULL ? extra : "", port, f->echo_port, f->fault_port,
	    f->fault_extra != NULL ? f->fault_extra : "", h_dir(), f->cert,
	    h_dir(), f->cert);
	return text;
}

/* fx_start_nofile starts the echo backend, the faulty one in |mode| (or
 * none: nothing listens on its port), the daemon with |extra| global
 * lines and open-file limit |nofile| (0: no limit), and the steady
 * connection. */
static void
fx_start_nofile(struct fx *f, const char *name, const char *mode,
    const char *arg, const char *extra, int nofile)
{
	int port;

	if (f->cert == NULL)
		f->cert = "leaf";
	f->echo_port = h_backend("echo", NULL, &f->echo_pid);
	f->fault_pid = 0;
	f->fault_port = mode != NULL ? h_backend(mode, arg, &f->fault_pid) :
	    h_free_port();
	/* Picked after the backends took theirs, which the kernel chose. */
	port = h_free_port();
	ck_assert_int_eq(h_daemon_start_nofile(&f->d, name, fx_conf(f, port,
	    extra), nofile), 0);
	f->d.port = port;
	steady_start(&f->steady, port);
}

static void
fx_start(struct fx *f, const char *name, const char *mode, const char *arg,
    const char *extra)
{
	fx_start_nofile(f, name, mode, arg, extra, 0);
}

/* fx_served checks that the daemon serves others after a fault. */
static void
fx_served(struct fx *f)
{
	good_client(f->d.port);
	steady_moves(&f->steady);
}

static void
fx_finish(struct fx *f)
{
	steady_stop(&f->steady);
	ck_assert_int_eq(h_daemon_stop(&f->d, 10000), 0);
	kill(f->echo_pid, SIGTERM);
	waitpid(f->echo_pid, NULL, 0);
	if (f->fault_pid > 0) {
		kill(f->fault_pid, SIGTERM);
		waitpid(f->fault_pid, NULL, 0);
	}
}

/* fault_client runs our client through the faulty backend with |args|. */
static char *
fault_client(const struct fx *f, int *st, const char *args)
{
	return h_run(st, "%s --alpn " FAULT_ALPN " %s 127.0.0.1:%d",
	    h_bin("client"), args, f->d.port);
}

/* fault_line returns the access-log line of the |nth| (from 1) of the
 * |total| connections that went to the faulty backend, waiting for all
 * of them (malloc'd). Workers log independently: the order is the
 * connection ids'. */
static char *
fault_line(const struct fx *f, int nth, int total)
{
	long long end = h_now_ms() + 5000;
	char *n;

	for (;;) {
		n = h_run(NULL, "grep -c 'conn id=.* alpn=" FAULT_ALPN " ' "
		    "'%s'", f->d.log);
		if (atoi(n) >= total || h_now_ms() > end)
			break;
		free(n);
		usleep(20000);
	}
	free(n);
	return h_run(NULL, "grep 'conn id=.* alpn=" FAULT_ALPN " ' '%s' | "
	    "sed 's/^.*conn id=\\([0-9]*\\) .*$/\\1 &/' | sort -n | "
	    "cut -d' ' -f2- | sed -n '%dp'", f->d.log, nth);
}

static const char *
reason_of(const char *line)
{
	static char reason[256];
	const char *p = strstr(line, "reason=\"");

	if (p == NULL)
		return "";
	p += strlen("reason=\"");
	snprintf(reason, sizeof(reason), "%.*s", (int)strcspn(p, "\""), p);
	return reason;
}

/* --- backend faults ----------------------------------------------- */

/* A TLS backend that fails its handshake: the next address would be
 * tried (there is one), the client gets a clean, empty end, the reason
 * names the failure, and the others are served. */
static void
tls_backend_fails(const char *name, const char *mode, const char *arg,
    const char *expect_reason, const char *expect_kind)
{
	struct fx f = { 0 };
	char series[160], admin[64], *out, *line;
	int st, admin_port = h_free_port();

	f.fault_extra = "tls = yes\ntls_verify = no\n"
	    "tls_handshake_timeout = 1s";
	snprintf(admin, sizeof(admin), "admin = 127.0.0.1:%d", admin_port);
	fx_start(&f, name, mode, arg, admin);
	out = fault_client(&f, &st, "--request 'GET / HTTP/1.0\r\n\r\n' "
	    "--no-half-close --timeout 10");
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "received"), "0");
	free(out);
	line = fault_line(&f, 1, 1);
	ck_assert_msg(strncmp(reason_of(line), expect_reason,
	    strlen(expect_reason)) == 0 || (strcmp(expect_kind, "closed") == 0 &&
	    strcmp(reason_of(line), "backend unavailable") == 0), "%s", line);
	ck_assert_str_eq(h_field(line, "backend"), "-");
	free(line);
	snprintf(series, sizeof(series), "backend 'fault' address 127.0.0.1:%d: "
	    "backend tls: ", f.fault_port);
	if (strcmp(expect_kind, "closed") != 0)
		ck_assert_msg(h_log_contains(&f.d, series, 2000), "no '%s'",
		    series);
	out = h_run(&st, "curl -sf http://127.0.0.1:%d/metrics | grep "
	    "'tlsproxy_backend_tls_failures_total{backend=\"fault\","
	    "reason=\"%s\"}'", admin_port, expect_kind);
	ck_assert_msg(strcmp(expect_kind, "closed") == 0 ||
	    strstr(out, "} 1") != NULL, "%s", out);
	free(out);
	fx_served(&f);
	fx_finish(&f);
}

START_TEST(tls_backend_resets_mid_handshake)
{
	tls_backend_fails("tls-reset", "reset", "0", "backend tls: ",
	    "closed");
}
END_TEST

START_TEST(tls_backend_sends_garbage)
{
	tls_backend_fails("tls-garbage", "source", "4096", "backend tls: ",
	    "protocol");
}
END_TEST

START_TEST(tls_backend_never_finishes_handshake)
{
	tls_backend_fails("tls-mute", "mute", NULL,
	    "backend tls: handshake timeout", "timeout");
}
END_TEST

START_TEST(backend_refuses)
{
	struct fx f = { 0 };
	char needle[128], *out, *line;
	int st;

	fx_start(&f, "refuses", NULL, NULL, NULL);
	/* Nothing listens: the client gets a clean, empty end. */
	out = fault_client(&f, &st, "--request 'GET / HTTP/1.0\\r\\n\\r\\n' "
	    "--no-half-close");
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "received"), "0");
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	free(out);
	snprintf(needle, sizeof(needle), "backend 'fault' address "
	    "127.0.0.1:%d: Connection refused", f.fault_port);
	ck_assert_msg(h_log_contains(&f.d, needle, 2000), "no '%s'", needle);
	line = fault_line(&f, 1, 1);
	ck_assert_str_eq(reason_of(line), "backend unavailable");
	ck_assert_str_eq(h_field(line, "backend"), "-");
	free(line);
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(backend_resets_on_accept)
{
	struct fx f = { 0 };
	int close_notify[5];
	char *out, *line;
	int st;

	fx_start(&f, "resets", "reset", "0", NULL);
	/* The client sends nothing: bytes arriving after the daemon closed
	 * would draw a reset from the kernel, whatever the daemon did. */
	for (int i = 0; i < 5; i++) {
		out = fault_client(&f, &st, "--no-half-close");
		ck_assert_msg(st == 0, "%s", out);
		ck_assert_str_eq(h_field(out, "received"), "0");
		close_notify[i] = atoi(h_field(out, "close_notify"));
		free(out);
	}
	/* The reset may come before the connect is seen to complete (the
	 * backend is then unavailable: nothing was relayed, and the end is
	 * clean) or after (the relay fails: no close_notify, see
	 * tlsproxy(8), Relaying). */
	for (int i = 0; i < 5; i++) {
		const char *reason;

		line = fault_line(&f, i + 1, 5);
		reason = reason_of(line);
		if (strcmp(reason, "backend unavailable") == 0) {
			ck_assert_int_eq(close_notify[i], 1);
		} else {
			ck_assert_msg(strcmp(reason, "backend read: "
			    "Connection reset by peer") == 0 ||
			    strcmp(reason, "backend write: Connection reset "
			    "by peer") == 0, "%s", line);
			ck_assert_int_eq(close_notify[i], 0);
		}
		free(line);
	}
	ck_assert(h_log_contains(&f.d, "Connection reset by peer", 0));
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(backend_never_answers)
{
	struct fx f = { 0 };
	long long t0, waited;
	char *out, *line;
	int st;

	fx_start(&f, "mute", "mute", NULL, "idle_timeout = 1s");
	t0 = h_now_ms();
	out = fault_client(&f, &st, "--request 'GET / HTTP/1.0\\r\\n\\r\\n' "
	    "--no-half-close --timeout 10");
	waited = h_now_ms() - t0;
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "received"), "0");
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	ck_assert_msg(waited >= 900 && waited < 4000, "closed after %lld ms",
	    waited);
	free(out);
	line = fault_line(&f, 1, 1);
	ck_assert_str_eq(reason_of(line), "idle timeout");
	ck_assert_str_eq(h_field(line, "bytes_in"), "18");
	free(line);
	/* The steady connection, busy every 100 ms, outlived it. */
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(backend_answers_slowly)
{
	struct fx f = { 0 };
	char args[256], *out, *line;
	long long t0, took;
	int st;

	/* 20 bytes at one per 100 ms: twice idle_timeout, never idle. */
	fx_start(&f, "slow", "slow", "20", "idle_timeout = 1s");
	snprintf(args, sizeof(args), "--request x --expect-bytes 20 "
	    "--expect-sha256 %s --timeout 20", stream_sha256(f.d.port, 20));
	t0 = h_now_ms();
	out = fault_client(&f, &st, args);
	took = h_now_ms() - t0;
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	ck_assert_msg(took >= 1800, "20 slow bytes in %lld ms", took);
	free(out);
	line = fault_line(&f, 1, 1);
	ck_assert_str_eq(reason_of(line), "done");
	ck_assert_str_eq(h_field(line, "bytes_out"), "20");
	free(line);
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(backend_resets_mid_stream)
{
	struct fx f = { 0 };
	char want[80], args[256], *out, *line;
	int st;

	/* The backend sends 3 MB, waits until they are acknowledged, then
	 * resets. */
	fx_start(&f, "cut", "reset", "3000000", NULL);
	snprintf(want, sizeof(want), "%s", stream_sha256(f.d.port, 3000000));
	/* A fast reader and a slow one (the daemon then still holds data
	 * when the reset arrives) get every byte, then an end without
	 * close_notify: a truncation they can tell from a complete stream. */
	snprintf(args, sizeof(args), "--request x --no-half-close "
	    "--expect-bytes 3000000 --expect-sha256 %s --timeout 20", want);
	out = fault_client(&f, &st, args);
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "close_notify"), "0");
	free(out);
	out = h_run(&st, "python3 %s slow-reader %d " FAULT_ALPN " 1",
	    faults_py(), f.d.port);
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "received"), "3000000");
	ck_assert_str_eq(h_field(out, "sha256"), want);
	ck_assert_str_eq(h_field(out, "close_notify"), "0");
	free(out);
	for (int i = 1; i <= 2; i++) {
		line = fault_line(&f, i, 2);
		ck_assert_str_eq(reason_of(line),
		    "backend read: Connection reset by peer");
		ck_assert_str_eq(h_field(line, "bytes_out"), "3000000");
		free(line);
	}
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

/* --- client faults ------------------------------------------------ */

/* hs_failure_logged waits up to |wait_ms| for the access-log line of the
 * connection from 127.0.0.1:|port| that failed its handshake with |why|.
 * The message about it may have been suppressed by the rate limit, the
 * access-log line never is. */
static int
hs_failure_logged(const struct fx *f, const char *port, const char *why,
    int wait_ms)
{
	long long end = h_now_ms() + wait_ms;

	do {
		/* |why| may name alternatives, "a|b": BoringSSL releases
		 * word some refusals differently. */
		char *out = h_run(NULL, "grep -F ' client=127.0.0.1:%s ' '%s' | "
		    "grep -cE 'reason=\"handshake failed: (%s)\"'", port,
		    f->d.log, why);
		int n = atoi(out);

		free(out);
		if (n == 1)
			return 1;
		usleep(20000);
	} while (h_now_ms() < end);
	return 0;
}

START_TEST(client_resets_mid_handshake)
{
	struct fx f = { 0 };
	char *out, *p;
	int st, n = 0;

	fx_start(&f, "hsreset", NULL, NULL, NULL);
	out = h_run(&st, "python3 %s reset-handshake %d 20", faults_py(),
	    f.d.port);
	ck_assert_msg(st == 0, "%s", out);
	for (p = out; (p = strstr(p, "port=")) != NULL; p++) {
		char port[16];

		snprintf(port, sizeof(port), "%d", atoi(p + 5));
		ck_assert_msg(hs_failure_logged(&f, port, "Connection reset by "
		    "peer", 3000), "port %s: no access-log line", port);
		n++;
	}
	ck_assert_int_eq(n, 20);
	free(out);
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(half_open_client_ends_at_idle_timeout)
{
	struct fx f = { 0 };
	char out[512];
	long long end;
	pid_t cpid;
	int fds;

	fx_start(&f, "halfopen", NULL, NULL, "idle_timeout = 1s");
	/* A client that sends, then neither reads, sends nor closes, as if
	 * it had vanished without a FIN. */
	snprintf(out, sizeof(out), "%s/halfopen.out", h_dir());
	cpid = spawn(out, "exec %s --send-bytes 1000 --no-half-close --no-read "
	    "--hold 30 127.0.0.1:%d", h_bin("client"), f.d.port);
	ck_assert(h_log_contains(&f.d, "bytes_in=1000 bytes_out=1000 ", 4000));
	{
		char *line = h_run(NULL, "grep 'bytes_in=1000 bytes_out=1000 ' "
		    "'%s'", f.d.log);

		ck_assert_str_eq(reason_of(line), "idle timeout");
		ck_assert_msg(atof(h_field(line, "duration_ms")) >= 900 &&
		    atof(h_field(line, "duration_ms")) < 3000, "%s", line);
		free(line);
	}
	/* Its descriptors are released while the client still holds its
	 * end: only the steady connection's two remain. */
	end = h_now_ms() + 3000;
	while ((fds = h_num_fds(f.d.pid)) > f.d.base_fds + 2 &&
	    h_now_ms() < end)
		usleep(20000);
	ck_assert_int_eq(fds, f.d.base_fds + 2);
	ck_assert_int_eq(waitpid(cpid, NULL, WNOHANG), 0);
	kill(cpid, SIGKILL);
	waitpid(cpid, NULL, 0);
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(client_never_reads_while_backend_streams)
{
	struct fx f = { 0 };
	char out[512];
	long before, during, later;
	long long end;
	pid_t cpid;
	char *grep = h_run(NULL, "grep -c __asan_init %s", h_bin("tlsproxy"));
	int asan = atoi(grep) > 0;

	free(grep);
	fx_start(&f, "noread", "source", "100000000", NULL);
	good_client(f.d.port);
	before = h_rss_kib(f.d.pid);
	/* Ten clients that take the handshake, then never read, while the
	 * backend offers each 100 MB. */
	snprintf(out, sizeof(out), "%s/noread.out", h_dir());
	cpid = spawn(out, "exec %s --alpn " FAULT_ALPN " --conns 10 "
	    "--request x --no-half-close --no-read --hold 30 127.0.0.1:%d",
	    h_bin("client"), f.d.port);
	end = h_now_ms() + 5000;
	while (h_num_fds(f.d.pid) < f.d.base_fds + 2 + 2 * 10 &&
	    h_now_ms() < end)
		usleep(20000);
	ck_assert_int_eq(h_num_fds(f.d.pid), f.d.base_fds + 2 + 2 * 10);
	/* Let the backend fill every buffer on the way. */
	usleep(1000000);
	during = h_rss_kib(f.d.pid);
	/* Each holds at most its buffers: a few MiB for all ten. Under
	 * AddressSanitizer, whose quarantine keeps freed memory resident,
	 * only the second check means anything. */
	ck_assert_msg(asan || during - before < 4 * 1024, "RSS grew from %ld "
	    "to %ld KiB", before, during);
	/* Stalled, they cost nothing more. */
	usleep(500000);
	later = h_rss_kib(f.d.pid);
	ck_assert_msg(later - during < 512, "RSS grew from %ld to %ld KiB "
	    "while stalled", during, later);
	/* Others are served meanwhile. */
	fx_served(&f);
	ck_assert_int_eq(waitpid(cpid, NULL, WNOHANG), 0);
	kill(cpid, SIGKILL);
	waitpid(cpid, NULL, 0);
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(thousand_clients_leave_at_random_points)
{
	struct fx f = { 0 };
	long long end;
	char *out;
	int st, lines0, lines = 0, fds;

	fx_start(&f, "chaos", NULL, NULL, NULL);
	out = h_run(NULL, "grep -c 'conn id=' '%s'", f.d.log);
	lines0 = atoi(out);
	free(out);
	/* Before the ClientHello, inside it, right after the handshake,
	 * mid-transfer or complete, each with a FIN or a reset; fixed seed. */
	out = h_run(&st, "python3 %s chaos %d 1000 1", faults_py(), f.d.port);
	ck_assert_msg(st == 0 && strncmp(out, "done=1000 failed=0 ", 19) == 0,
	    "%s", out);
	ck_assert_msg(atoi(h_field(out, "complete")) > 100, "%s", out);
	free(out);
	/* Every connection ended, once each... */
	end = h_now_ms() + 5000;
	while (h_now_ms() < end) {
		out = h_run(NULL, "grep -c 'conn id=' '%s'", f.d.log);
		lines = atoi(out) - lines0;
		free(out);
		if (lines >= 1000)
			break;
		usleep(50000);
	}
	ck_assert_int_eq(lines, 1000);
	/* ...and released its descriptors: only the steady connection's
	 * two are left. */
	end = h_now_ms() + 3000;
	while ((fds = h_num_fds(f.d.pid)) > f.d.base_fds + 2 &&
	    h_now_ms() < end)
		usleep(20000);
	ck_assert_int_eq(fds, f.d.base_fds + 2);
	usleep(200000);
	out = h_run(NULL, "grep -c 'conn id=' '%s'", f.d.log);
	ck_assert_int_eq(atoi(out) - lines0, 1000);
	free(out);
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

/* check_refused runs faults.py's |cases|, each expected to end within a
 * second with the alert and the handshake failure of |expect| (pairs of
 * alert, reason, in the same order). */
static void
check_refused(struct fx *f, const char *cases, const char *const *expect)
{
	char *out, *p;
	int st, i = 0;

	out = h_run(&st, "python3 %s bytes %d %s", faults_py(), f->d.port,
	    cases);
	ck_assert_msg(st == 0, "%s", out);
	for (p = out; p != NULL && *p != '\0'; i++) {
		char *nl = strchr(p, '\n'), port[16], line[256];
		const char *closed;

		if (nl != NULL)
			*nl = '\0';
		snprintf(line, sizeof(line), "%s", p);
		closed = h_field(line, "closed_ms");
		ck_assert_msg(closed != NULL &&
		    strcmp(closed, "timeout") != 0 && atoi(closed) < 1000,
		    "not refused promptly: %s", line);
		ck_assert_msg(strcmp(h_field(line, "alert"),
		    expect[2 * i]) == 0, "%s: expected alert %s", line,
		    expect[2 * i]);
		snprintf(port, sizeof(port), "%s", h_field(line, "port"));
		ck_assert_msg(hs_failure_logged(f, port, expect[2 * i + 1],
		    2000), "%s: no access-log line with reason \"handshake "
		    "failed: %s\"", line, expect[2 * i + 1]);
		p = nl != NULL ? nl + 1 : NULL;
	}
	ck_assert_ptr_null(expect[2 * i]);
	free(out);
}

START_TEST(malformed_client_hellos_refused)
{
	static const char *const expect[] = {
		"record_overflow", "encrypted_length_too_long",
		"illegal_parameter", "excessive_message_size",
		"decode_error", "decode_error|clienthello_parse_failed",
		"decode_error", "decode_error|clienthello_parse_failed",
		"decode_error", "decode_error|clienthello_parse_failed",
		"decode_error", "alert sent: decode error|error_parsing_extension",
		"protocol_version", "unsupported_protocol",
		NULL,
	};
	struct fx f = { 0 };

	fx_start(&f, "hellos", NULL, NULL, NULL);
	check_refused(&f, "record_too_long length_too_long length_too_short "
	    "extension_overrun extension_garbage server_name_garbage "
	    "sslv2_hello", expect);
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(non_tls_protocols_refused)
{
	static const char *const expect[] = {
		"-", "http_request",
		"protocol_version", "wrong_version_number",
		"protocol_version", "wrong_version_number",
		NULL,
	};
	struct fx f = { 0 };

	fx_start(&f, "nontls", NULL, NULL, NULL);
	check_refused(&f, "http ssh random", expect);
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

/* --- control faults ----------------------------------------------- */

START_TEST(hundred_sighups_under_load)
{
	struct fx f = { 0 };
	char out[512], stop[512], *res;
	int st, reloads;
	pid_t load;

	fx_start(&f, "sighups", NULL, NULL, NULL);
	snprintf(out, sizeof(out), "%s/sighups.load", h_dir());
	snprintf(stop, sizeof(stop), "%s/sighups.stop", h_dir());
	unlink(stop);
	/* Rounds of 200 connections of 100 kB each, every byte checked,
	 * until the signals stop. */
	load = spawn(out, "n=0; while [ $n -eq 0 ] || [ ! -e %s ]; do "
	    "%s --conns 200 --send-bytes 100000 --expect-bytes 100000 "
	    "--expect-sha256 %s --timeout 60 127.0.0.1:%d > %s.last || "
	    "{ grep -v ok=1 %s.last | head -n 5; exit 1; }; n=$((n + 1)); "
	    "done; echo runs=$n", stop, h_bin("client"),
	    stream_sha256(f.d.port, 100000), f.d.port, out, out);
	for (int i = 0; i < 100; i++) {
		kill(f.d.pid, SIGHUP);
		usleep(10000);
	}
	free(h_run(NULL, "touch %s", stop));
	ck_assert_int_eq(waitpid(load, &st, 0), load);
	res = h_run(NULL, "cat %s", out);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "load failed: %s",
	    res);
	ck_assert_msg(atoi(h_field(res, "runs")) >= 1, "%s", res);
	free(res);
	/* SIGHUPs during a reload coalesce; none failed. */
	res = h_run(NULL, "grep -c 'reload: generation .* published' %s",
	    f.d.log);
	reloads = atoi(res);
	free(res);
	ck_assert_msg(reloads >= 10 && reloads <= 100, "%d reloads", reloads);
	ck_assert(!h_log_contains(&f.d, "reload failed", 0));
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(truncated_config_refused)
{
	struct fx f = { 0 };
	char conf[4096], cut[4096], needle[700];
	const char *at;
	int line = 1;
	FILE *w;

	fx_start(&f, "truncated", NULL, NULL, NULL);
	snprintf(conf, sizeof(conf), "%s", fx_conf(&f, f.d.port, NULL));
	/* As if SIGHUP came while an editor was writing the file: it ends
	 * in the middle of the echo backend's address. */
	at = strstr(conf, "[backend echo]\naddress = 127.0.0") +
	    strlen("[backend echo]\naddress = 127.0.0");
	snprintf(cut, sizeof(cut), "%.*s", (int)(at - conf), conf);
	for (const char *p = cut; *p != '\0'; p++)
		line += *p == '\n';
	w = fopen(f.d.conf, "w");
	fputs(cut, w);
	fclose(w);
	kill(f.d.pid, SIGHUP);
	snprintf(needle, sizeof(needle), "reload: %s:%d: key 'address': "
	    "expected host:port", f.d.conf, line);
	ck_assert_msg(h_log_contains(&f.d, needle, 3000), "no '%s'", needle);
	ck_assert(h_log_contains(&f.d, "reload failed: ", 0));
	ck_assert(h_log_contains(&f.d, "the previous configuration keeps "
	    "serving", 0));
	fx_served(&f);
	/* Written in full, it loads. */
	w = fopen(f.d.conf, "w");
	fputs(conf, w);
	fclose(w);
	kill(f.d.pid, SIGHUP);
	ck_assert(h_log_contains(&f.d, "reload: generation 2 published", 3000));
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(deleted_certificates_refused)
{
	struct fx f = { 0 };
	char needle[700];
	const char *conf;
	int line = 1;

	free(h_run(NULL, "cd %s && cp leaf.pem gone.pem && cp leaf.key "
	    "gone.key", h_dir()));
	f.cert = "gone";
	fx_start(&f, "gonecert", NULL, NULL, NULL);
	conf = fx_conf(&f, f.d.port, NULL);
	for (const char *p = conf; p < strstr(conf, "cert = "); p++)
		line += *p == '\n';
	free(h_run(NULL, "rm %s/gone.pem %s/gone.key", h_dir(), h_dir()));
	kill(f.d.pid, SIGHUP);
	snprintf(needle, sizeof(needle), "reload: %s:%d: key 'cert': cannot "
	    "open '%s/gone.pem': No such file or directory", f.d.conf, line,
	    h_dir());
	ck_assert_msg(h_log_contains(&f.d, needle, 3000), "no '%s'", needle);
	ck_assert(h_log_contains(&f.d, "reload failed: ", 0));
	/* The certificate loaded before still serves new handshakes. */
	fx_served(&f);
	free(h_run(NULL, "cd %s && cp leaf.pem gone.pem && cp leaf.key "
	    "gone.key", h_dir()));
	kill(f.d.pid, SIGHUP);
	ck_assert(h_log_contains(&f.d, "reload: generation 2 published", 3000));
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

START_TEST(out_of_descriptors_pauses_accept)
{
	enum { HELD = 60 };
	struct fx f = { 0 };
	char out[512], *res;
	int held[HELD], st;
	pid_t late;

	/* 64 descriptors: about 20 are the daemon's own, two the steady
	 * connection's; sixty silent connections cannot all fit. */
	fx_start_nofile(&f, "emfile", NULL, NULL, "handshake_timeout = 30s",
	    64);
	for (int i = 0; i < HELD; i++)
		held[i] = raw_connect(f.d.port);
	ck_assert(h_log_contains(&f.d, "out of file descriptors, accept paused "
	    "for 100ms", 3000));
	/* Open connections carry on. */
	steady_moves(&f.steady);
	/* A client arriving now waits in the listen queue... */
	snprintf(out, sizeof(out), "%s/emfile.late", h_dir());
	late = spawn(out, "exec %s --send-bytes 100000 --timeout 20 "
	    "127.0.0.1:%d", h_bin("client"), f.d.port);
	usleep(300000);
	ck_assert_int_eq(waitpid(late, NULL, WNOHANG), 0);
	/* ...and is served once descriptors come free. */
	for (int i = 0; i < HELD; i++)
		close(held[i]);
	ck_assert_int_eq(waitpid(late, &st, 0), late);
	res = h_run(NULL, "cat %s", out);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s", res);
	ck_assert_str_eq(h_field(res, "received"), "100000");
	free(res);
	fx_served(&f);
	fx_finish(&f);
}
END_TEST

/* start_redis runs a throwaway redis-server on |port|; it dies with the
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
		char *out = h_run(NULL, "redis-cli -p %d ping 2>/dev/null",
		    port);
		int up = strncmp(out, "PONG", 4) == 0;

		free(out);
		if (up)
			return pid;
		usleep(50000);
	}
	ck_abort_msg("redis-server did not start");
	return -1;
}

/* redis_keys returns the number of keys in the store. */
static int
redis_keys(int port)
{
	char *out = h_run(NULL, "redis-cli -p %d dbsize 2>/dev/null", port);
	int n = atoi(out);

	free(out);
	return n;
}

START_TEST(session_store_goes_away_under_load)
{
	struct fx f = { 0 };
	char extra[256], out[512], stop[512], *res;
	int rport = h_free_port(), st;
	long long end;
	pid_t rpid, load;

	rpid = start_redis(rport);
	snprintf(extra, sizeof(extra), "session_store = redis://127.0.0.1:%d\n"
	    "session_tickets = no", rport);
	fx_start(&f, "store", NULL, NULL, extra);
	f.d.keep_ports[0] = rport;
	snprintf(out, sizeof(out), "%s/store.load", h_dir());
	snprintf(stop, sizeof(stop), "%s/store.stop", h_dir());
	unlink(stop);
	/* Handshakes all along: each stores its session. */
	load = spawn(out, "n=0; while [ ! -e %s ]; do %s --tls12 --conns 20 "
	    "--send-bytes 1000 --expect-bytes 1000 --timeout 20 127.0.0.1:%d "
	    "> %s.last || { grep -v ok=1 %s.last | head -n 5; exit 1; }; "
	    "n=$((n + 1)); done; echo runs=$n", stop, h_bin("client"),
	    f.d.port, out, out);
	end = h_now_ms() + 5000;
	while (redis_keys(rport) == 0 && h_now_ms() < end)
		usleep(50000);
	ck_assert_int_gt(redis_keys(rport), 0);
	/* The store goes away... */
	kill(rpid, SIGTERM);
	waitpid(rpid, NULL, 0);
	ck_assert(h_log_contains(&f.d, "unavailable", 3000));
	usleep(500000);
	/* ...and comes back, empty: the workers reconnect and store again. */
	rpid = start_redis(rport);
	end = h_now_ms() + 10000;
	for (;;) {
		res = h_run(NULL, "sed -n '/: unavailable (/,$p' %s | grep -c "
		    "'session store redis://127.0.0.1:%d: connected'", f.d.log,
		    rport);
		st = atoi(res);
		free(res);
		if (st >= 2 || h_now_ms() > end)
			break;
		usleep(50000);
	}
	ck_assert_msg(st >= 2, "the workers did not reconnect");
	end = h_now_ms() + 5000;
	while (redis_keys(rport) == 0 && h_now_ms() < end)
		usleep(50000);
	ck_assert_int_gt(redis_keys(rport), 0);
	free(h_run(NULL, "touch %s", stop));
	ck_assert_int_eq(waitpid(load, &st, 0), load);
	res = h_run(NULL, "cat %s", out);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "load failed: %s",
	    res);
	ck_assert_msg(atoi(h_field(res, "runs")) >= 2, "%s", res);
	free(res);
	fx_served(&f);
	fx_finish(&f);
	kill(rpid, SIGTERM);
	waitpid(rpid, NULL, 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("faults");
	TCase *tc = tcase_create("faults");

	h_setup("faults");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, backend_refuses);
	tcase_add_test(tc, backend_resets_on_accept);
	tcase_add_test(tc, backend_never_answers);
	tcase_add_test(tc, backend_answers_slowly);
	tcase_add_test(tc, backend_resets_mid_stream);
	tcase_add_test(tc, tls_backend_resets_mid_handshake);
	tcase_add_test(tc, tls_backend_sends_garbage);
	tcase_add_test(tc, tls_backend_never_finishes_handshake);
	tcase_add_test(tc, client_resets_mid_handshake);
	tcase_add_test(tc, half_open_client_ends_at_idle_timeout);
	tcase_add_test(tc, client_never_reads_while_backend_streams);
	tcase_add_test(tc, thousand_clients_leave_at_random_points);
	tcase_add_test(tc, malformed_client_hellos_refused);
	tcase_add_test(tc, non_tls_protocols_refused);
	tcase_add_test(tc, hundred_sighups_under_load);
	tcase_add_test(tc, truncated_config_refused);
	tcase_add_test(tc, deleted_certificates_refused);
	tcase_add_test(tc, out_of_descriptors_pauses_accept);
	tcase_add_test(tc, session_store_goes_away_under_load);
	suite_add_tcase(s, tc);
	return check_run(s);
}
