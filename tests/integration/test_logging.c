/* Logging under pressure: a daemon whose stderr nobody reads any more (a
 * journal that pushes back) keeps failing garbage handshakes at once and
 * serving real ones, a flood of failures makes about one message a second
 * with the rest counted, and on SIGTERM everything queued comes out. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

#define FLOOD_CONNS 300

/* The daemon's stderr as read so far. */
struct captured {
	char *buf;
	size_t len;
	size_t cap;
};

static pid_t daemon_pid;

/* flat returns up to 3000 bytes of |text| on one line, for a failure
 * message: TAP takes one line. */
static const char *
flat(const char *text)
{
	static char buf[3001];
	size_t i;

	for (i = 0; i < sizeof(buf) - 1 && text[i] != '\0'; i++)
		buf[i] = text[i] == '\n' ? '|' : text[i];
	buf[i] = '\0';
	return buf;
}

static void
kill_daemon(void)
{
	if (daemon_pid > 0)
		kill(daemon_pid, SIGKILL);
}

/* capture_read appends what |fd| has within |wait_ms| and returns 0, or -1
 * at its end. */
static int
capture_read(struct captured *c, int fd, int wait_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	ssize_t n;

	if (poll(&pfd, 1, wait_ms) <= 0)
		return 0;
	if (c->cap - c->len < 65536) {
		c->cap = c->cap * 2 + 65536;
		c->buf = realloc(c->buf, c->cap);
		ck_assert_ptr_nonnull(c->buf);
	}
	n = read(fd, c->buf + c->len, c->cap - c->len - 1);
	if (n <= 0)
		return n < 0 && errno == EINTR ? 0 : -1;
	c->len += (size_t)n;
	c->buf[c->len] = '\0';
	return 0;
}

/* start_piped starts tlsproxy on |conf| with its stderr a pipe, whose read
 * end goes to |*out_rd| and write end to |*out_wr|, and reads until the
 * daemon is ready. */
static pid_t
start_piped(const char *conf, int *out_rd, int *out_wr, struct captured *c)
{
	const char *path = h_write("logging.conf", conf);
	long long end = h_now_ms() + 10000;
	int p[2];
	pid_t pid;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(p[1], STDERR_FILENO);
		execl(h_bin("tlsproxy"), "tlsproxy", "-c", path, (char *)NULL);
		_exit(127);
	}
	daemon_pid = pid;
	atexit(kill_daemon);
	while (c->buf == NULL || strstr(c->buf, " ready: ") == NULL) {
		ck_assert_msg(h_now_ms() < end, "not ready: %s",
		    flat(c->buf ? c->buf : ""));
		ck_assert_msg(capture_read(c, p[0], 100) == 0, "exited: %s",
		    flat(c->buf ? c->buf : ""));
	}
	*out_rd = p[0];
	*out_wr = p[1];
	return pid;
}

/* fill_pipe fills the pipe of |wr| to the brim and leaves it blocking, as
 * the daemon had it. */
static void
fill_pipe(int wr)
{
	static const char filler[] = "filler\n";

	ck_assert_int_eq(fcntl(wr, F_SETFL, O_NONBLOCK), 0);
	while (write(wr, filler, sizeof(filler) - 1) > 0)
		;
	ck_assert_int_eq(errno, EAGAIN);
	ck_assert_int_eq(fcntl(wr, F_SETFL, 0), 0);
}

/* shown returns what the daemon logged after the filler, for messages. */
static const char *
shown(const char *log)
{
	const char *p, *last = log;

	for (p = log; (p = strstr(p, "filler\n")) != NULL; p += 7)
		last = p + 7;
	return last;
}

static size_t
count_str(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = text; (p = strstr(p, needle)) != NULL;
	    p += strlen(needle))
		n++;
	return n;
}

/* reported_failures adds up the failed handshakes |text| tells about: the
 * lines written, and the counts of those suppressed. */
static unsigned long
reported_failures(const char *text, size_t *out_lines)
{
	unsigned long sum = 0;
	const char *nl;

	*out_lines = 0;
	for (const char *p = text; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		const char *hf = strstr(p, ": handshake failed: ");
		const char *q;
		unsigned long n;

		if (hf == NULL || hf > nl)
			continue;
		(*out_lines)++;
		q = strstr(p, " similar message");
		if (q == NULL || q > nl) {
			sum++;
			continue;
		}
		while (q > p && q[-1] >= '0' && q[-1] <= '9')
			q--;
		ck_assert_int_eq(sscanf(q, "%lu", &n), 1);
		/* "... (N similar messages suppressed)" ends a line that is
		 * one more failure; a summary line is not. */
		sum += n + (strstr(p, "suppressed after: ") == NULL ||
		    strstr(p, "suppressed after: ") > nl ? 1 : 0);
	}
	return sum;
}

START_TEST(stalled_stderr_does_not_stop_workers)
{
	struct captured c = { 0 };
	char conf[2048], *out, *access, *metrics;
	int bport, port = h_free_port(), admin_port = h_free_port(), rd, wr;
	int st;
	long long t0, flood_ms;
	unsigned long reported;
	size_t lines;
	pid_t bpid, pid;

	bport = h_backend("echo", NULL, &bpid);
	snprintf(conf, sizeof(conf),
	    "[global]\nworkers = 2\nlog_level = info\n"
	    "access_log = %s/access.log\nadmin = 127.0.0.1:%d\n"
	    "[listener test]\nbind = 127.0.0.1:%d\ncontext = main\n"
	    "backend = b\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context main]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    h_dir(), admin_port, port, bport, h_dir(), h_dir());
	pid = start_piped(conf, &rd, &wr, &c);
	fill_pipe(wr);
	close(wr);

	/* Plain HTTP to a TLS port, from many clients at once: each gets its
	 * alert and its close at once, not after the client's own 5 s. */
	t0 = h_now_ms();
	out = h_run(&st, "%s --conns %d --send-raw 'GET / HTTP/1.0\\r\\n\\r\\n' "
	    "127.0.0.1:%d", h_bin("client"), FLOOD_CONNS, port);
	flood_ms = h_now_ms() - t0;
	ck_assert_int_eq(st, 0);
	free(out);
	ck_assert_msg(flood_ms < 4000, "%d failing handshakes took %lld ms",
	    FLOOD_CONNS, flood_ms);
	/* Real clients, on either worker, are still served. */
	for (int i = 0; i < 6; i++) {
		out = h_run(&st, "%s --timeout 5 --send-bytes 10 --expect-bytes "
		    "10 127.0.0.1:%d", h_bin("client"), port);
		ck_assert_msg(st == 0, "client %d: %s", i, flat(out));
		free(out);
	}
	/* The control thread still answers too. */
	metrics = h_run(&st, "curl -sf --max-time 5 "
	    "http://127.0.0.1:%d/metrics", admin_port);
	ck_assert_int_eq(st, 0);
	ck_assert_ptr_nonnull(strstr(metrics, "\ntlsproxy_log_dropped_lines_total "));
	free(metrics);

	/* Read again, stop, and see everything that was queued. */
	kill(pid, SIGTERM);
	while (capture_read(&c, rd, 10000) == 0)
		;
	close(rd);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	daemon_pid = 0;
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d: %s",
	    st, flat(shown(c.buf)));
	/* Every failure is accounted for, in a handful of lines. */
	reported = reported_failures(c.buf, &lines);
	ck_assert_msg(reported == FLOOD_CONNS, "%lu failures reported: %s",
	    reported, flat(shown(c.buf)));
	ck_assert_msg(lines <= 2 * (size_t)(flood_ms / 1000) + 3,
	    "%zu lines in %lld ms: %s", lines, flood_ms, flat(shown(c.buf)));
	ck_assert_ptr_nonnull(strstr(c.buf, "similar messages suppressed"));
	ck_assert_ptr_nonnull(strstr(c.buf, "all connections closed; exiting"));
	/* Under the sanitizers, a report would be here. */
	ck_assert_msg(strstr(c.buf, "runtime error:") == NULL &&
	    strstr(c.buf, "Sanitizer") == NULL, "%s", flat(shown(c.buf)));
	/* The access log has a line for each, whatever stderr did. */
	access = h_run(NULL, "cat %s/access.log", h_dir());
	ck_assert_uint_eq(count_str(access, "reason=\"handshake failed: "),
	    FLOOD_CONNS);
	free(access);
	free(c.buf);
	kill(bpid, SIGTERM);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("logging");
	TCase *tc = tcase_create("logging");

	h_setup("logging");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, stalled_stderr_does_not_stop_workers);
	suite_add_tcase(s, tc);
	return check_run(s);
}
