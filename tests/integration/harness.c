/* harness.c: see harness.h. */
#include "harness.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

static char h_scratch[400];
/* The daemon of the running test, whose log is printed if the test dies
 * on a failed assertion. */
static const struct h_daemon *h_current;
static int h_done_ok;

const char *
h_dir(void)
{
	return h_scratch;
}

const char *
h_bin(const char *which)
{
	const char *env = strcmp(which, "tlsproxy") == 0 ? "TLSPROXY_BIN" :
	    strcmp(which, "backend") == 0 ? "TLSPROXY_BACKEND" :
	    strcmp(which, "load") == 0 ? "TLSPROXY_LOAD" :
	    "TLSPROXY_CLIENT";
	const char *v = getenv(env);

	ck_assert_msg(v != NULL, "%s is not set (run through meson test)", env);
	return v;
}

long long
h_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *
h_run(int *status, const char *fmt, ...)
{
	char cmd[4096], *out = NULL;
	size_t len = 0;
	va_list ap;
	FILE *p;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	if (p == NULL) {
		fprintf(stderr, "popen %s: %s\n", cmd, strerror(errno));
		exit(1);
	}
	for (;;) {
		char buf[4096];
		size_t n = fread(buf, 1, sizeof(buf), p);

		if (n == 0)
			break;
		out = realloc(out, len + n + 1);
		memcpy(out + len, buf, n);
		len += n;
	}
	st = pclose(p);
	if (out == NULL)
		out = calloc(1, 1);
	out[len] = '\0';
	if (status != NULL)
		*status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
	return out;
}

static void
h_make_certs(void)
{
	int st;
	char *out = h_run(&st,
	    "cd '%s' && set -e; "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=tlsproxy test CA' "
	    "2>&1; "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "-keyout leaf.key -out leaf.csr -subj /CN=localhost 2>&1; "
	    "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\\n' > ext; "
	    "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key "
	    "-CAcreateserial -days 2 -extfile ext -out leaf-only.pem 2>&1; "
	    "cat leaf-only.pem ca.pem > leaf.pem; "
	    "openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key "
	    "-out rsa.pem -days 2 -subj /CN=localhost 2>&1; "
	    "openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-out other.key 2>&1",
	    h_scratch);

	if (st != 0) {
		fprintf(stderr, "making certificates failed: %s\n", out);
		exit(1);
	}
	free(out);
}

static void
h_atexit(void)
{
	char *log;

	/* pid 0: the test reaped the daemon itself (kill(0) would signal
	 * our own process group). */
	if (h_current == NULL || h_done_ok || h_current->pid <= 0)
		return;
	log = h_run(NULL, "tail -n 60 '%s' 2>&1", h_current->log);
	fprintf(stderr, "--- tlsproxy log (%s) ---\n%s--- end of log ---\n",
	    h_current->log, log);
	free(log);
	kill(h_current->pid, SIGKILL);
}

void
h_setup(const char *name)
{
	const char *base = getenv("TLSPROXY_TEST_TMP");
	char *out;

	snprintf(h_scratch, sizeof(h_scratch), "%s/%s.%d",
	    base ? base : "/tmp", name, (int)getpid());
	out = h_run(NULL, "rm -rf '%s' && mkdir -p '%s'", h_scratch, h_scratch);
	free(out);
	h_make_certs();
	signal(SIGPIPE, SIG_IGN);
}

int
h_free_port(void)
{
	for (int tries = 0; tries < 50; tries++) {
		struct sockaddr_in sin = { .sin_family = AF_INET };
		struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
		socklen_t len = sizeof(sin);
		int fd = socket(AF_INET, SOCK_STREAM, 0), fd6, ok;

		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
		getsockname(fd, (struct sockaddr *)&sin, &len);
		/* The same port must be free on ::1 for dual-stack tests. */
		fd6 = socket(AF_INET6, SOCK_STREAM, 0);
		sin6.sin6_addr = in6addr_loopback;
		sin6.sin6_port = sin.sin_port;
		ok = bind(fd6, (struct sockaddr *)&sin6, sizeof(sin6)) == 0;
		close(fd6);
		close(fd);
		if (ok)
			return ntohs(sin.sin_port);
	}
	ck_abort_msg("no free port");
	return -1;
}

/* h_spawn starts |argv| with stdout to |out_fd| (or /dev/null) and stderr
 * to |err_path| (or inherited), dying with the test process. Its open-file
 * limit is |nofile|, or if 0 the most allowed. */
static pid_t
h_spawn(char *const argv[], int out_fd, const char *err_path, int nofile)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct rlimit rl;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (nofile > 0) {
			rl.rlim_cur = rl.rlim_max = (rlim_t)nofile;
			setrlimit(RLIMIT_NOFILE, &rl);
		} else if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
		if (out_fd >= 0)
			dup2(out_fd, STDOUT_FILENO);
		else
			freopen("/dev/null", "w", stdout);
		if (err_path != NULL)
			freopen(err_path, "a", stderr);
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

int
h_backend(const char *mode, const char *arg, pid_t *out_pid)
{
	char *argv[6] = { (char *)h_bin("backend"), (char *)mode,
		(char *)arg, NULL };
	char line[64] = "";
	int p[2], port = -1;
	FILE *f;

	ck_assert_int_eq(pipe(p), 0);
	*out_pid = h_spawn(argv, p[1], NULL, 0);
	close(p[1]);
	f = fdopen(p[0], "r");
	if (fgets(line, sizeof(line), f) != NULL)
		sscanf(line, "listening %d", &port);
	fclose(f);
	ck_assert_msg(port > 0, "backend %s did not start: '%s'", mode, line);
	return port;
}

const char *
h_write(const char *name, const char *text)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", h_scratch, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	return path;
}

const char *
h_simple_conf(int port, int backend_port, const char *extra_global)
{
	static char conf[4096];

	snprintf(conf, sizeof(conf),
	    "[global]\nworkers = 2\nlog_level = debug\n%s\n"
	    "[listener test]\nbind = 127.0.0.1:%d\ncontext = main\n"
	    "backend = b\n"
	    "[backend b]\naddress = 127.0.0.1:%d\nconnect_timeout = 2s\n"
	    "[context main]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    extra_global ? extra_global : "", port, backend_port, h_scratch,
	    h_scratch);
	return conf;
}

int
h_log_contains(const struct h_daemon *d, const char *needle, int wait_ms)
{
	long long end = h_now_ms() + wait_ms;

	do {
		char *log = h_run(NULL, "cat '%s'", d->log);
		int found = strstr(log, needle) != NULL;

		free(log);
		if (found)
			return 1;
		usleep(20000);
	} while (h_now_ms() < end);
	return 0;
}

int
h_daemon_start(struct h_daemon *d, const char *name, const char *conf)
{
	return h_daemon_start_nofile(d, name, conf, 0);
}

int
h_daemon_start_nofile(struct h_daemon *d, const char *name,
    const char *conf, int nofile)
{
	char *argv[4];
	long long end = h_now_ms() + 10000;

	memset(d, 0, sizeof(*d));
	snprintf(d->conf, sizeof(d->conf), "%s/%s.conf", h_scratch, name);
	snprintf(d->log, sizeof(d->log), "%s/%s.log", h_scratch, name);
	unlink(d->log);
	h_write(strrchr(d->conf, '/') + 1, conf);
	argv[0] = (char *)h_bin("tlsproxy");
	argv[1] = "-c";
	argv[2] = d->conf;
	argv[3] = NULL;
	d->pid = h_spawn(argv, -1, d->log, nofile);
	h_current = d;
	h_done_ok = 0;
	atexit(h_atexit);
	while (h_now_ms() < end) {
		int st;

		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			return -1;
		}
		if (h_log_contains(d, " ready: ", 0)) {
			d->base_fds = h_num_fds(d->pid);
			return 0;
		}
		usleep(10000);
	}
	ck_abort_msg("tlsproxy did not become ready; log in %s", d->log);
	return -1;
}

/* h_kept_fds counts the daemon's TCP sockets whose remote port is one of
 * |d->keep_ports|, from /proc/net/tcp and tcp6. */
static int
h_kept_fds(const struct h_daemon *d)
{
	char ports[64] = "", *out;
	int n;

	for (int i = 0; i < 4 && d->keep_ports[i] != 0; i++)
		snprintf(ports + strlen(ports), sizeof(ports) - strlen(ports),
		    ":%04X ", d->keep_ports[i]);
	if (ports[0] == '\0')
		return 0;
	out = h_run(NULL, "for f in /proc/%d/fd/*; do readlink $f; done | "
	    "sed -n 's/^socket:\\[\\([0-9]*\\)\\]$/\\1/p' | sort > %s/.inodes; "
	    "cat /proc/net/tcp /proc/net/tcp6 | awk -v p='%s' 'NR > 1 { "
	    "split($3, r, \":\"); if (index(p, \":\" r[2] \" \") > 0) print $10 "
	    "}' | sort | comm -12 - %s/.inodes | wc -l", (int)d->pid, h_scratch,
	    ports, h_scratch);
	n = atoi(out);
	free(out);
	return n;
}

/* h_fds_settle fails the test unless the daemon's descriptors come back
 * to what it had when it became ready: connections that ended must have
 * released theirs. Closing takes a moment after the client sees the end,
 * hence the wait. Persistent links made after startup (a session store,
 * an OCSP responder) are not connections and are left out. */
static void
h_fds_settle(const struct h_daemon *d)
{
	long long end = h_now_ms() + 5000;
	int n = h_num_fds(d->pid) - h_kept_fds(d);

	while (n > d->base_fds && h_now_ms() < end) {
		usleep(50000);
		n = h_num_fds(d->pid) - h_kept_fds(d);
	}
	if (n > d->base_fds) {
		char *fds = h_run(NULL, "ls -l /proc/%d/fd | tail -n +2",
		    (int)d->pid);

		ck_abort_msg("tlsproxy holds %d descriptors, %d when it became "
		    "ready:\n%s", n, d->base_fds, fds);
	}
}

int
h_daemon_stop(struct h_daemon *d, int wait_ms)
{
	long long end;
	int st;

	if (d->pid <= 0)
		return -1;
	if (!d->open_at_stop)
		h_fds_settle(d);
	end = h_now_ms() + wait_ms;
	kill(d->pid, SIGTERM);
	while (h_now_ms() < end) {
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			h_done_ok = 1;
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		usleep(10000);
	}
	kill(d->pid, SIGKILL);
	waitpid(d->pid, &st, 0);
	d->pid = 0;
	return -1;
}

long
h_rss_kib(pid_t pid)
{
	char *out = h_run(NULL, "awk '/^VmRSS:/ {print $2}' /proc/%d/status",
	    (int)pid);
	long v = atol(out);

	free(out);
	return v;
}

int
h_num_fds(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (dir == NULL)
		return -1;
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] != '.')
			n++;
	}
	closedir(dir);
	return n;
}

const char *
h_field(const char *line, const char *key)
{
	static char val[512];
	char pat[64];
	const char *p;
	size_t n = 0;

	snprintf(pat, sizeof(pat), " %s=", key);
	p = strstr(line, pat);
	if (p == NULL) {
		snprintf(pat, sizeof(pat), "%s=", key);
		if (strncmp(line, pat, strlen(pat)) != 0)
			return NULL;
		p = line;
	}
	p += strlen(pat);
	while (p[n] != '\0' && p[n] != ' ' && p[n] != '\n' &&
	    n < sizeof(val) - 1)
		n++;
	memcpy(val, p, n);
	val[n] = '\0';
	return val;
}

int
h_has_mlkem(void)
{
	static int known = -1;

	if (known < 0) {
		char *out = h_run(NULL, "%s -V", h_bin("tlsproxy"));

		known = strstr(out, "post-quantum key exchange: X25519MLKEM768")
		    != NULL;
		free(out);
	}
	return known;
}
