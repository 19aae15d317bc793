/* test_upgrade.c: binary upgrades of the real daemon: what the new process
 * takes over (sockets, tickets, sessions, staples, bans, the admin
 * endpoint), what systemd is told, a change of workers, and upgrades that
 * fail while the old process keeps serving. Clients are our BoringSSL
 * client, openssl s_client, Node and curl. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_run.h"
#include "harness.h"

static int admin_port;

static const char *
conf(int port, int bport, const char *extra)
{
	static char c[4096];

	snprintf(c, sizeof(c),
	    "[global]\nworkers = 2\nlog_level = debug\n"
	    "admin = 127.0.0.1:%d\nshutdown_timeout = 20s\n%s\n"
	    "[listener test]\nbind = 127.0.0.1:%d, unix:%s/up.sock\n"
	    "context = main\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context main]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    admin_port, extra, port, h_dir(), bport, h_dir(), h_dir());
	return c;
}

/* status_num reads a number from the admin endpoint's /status. */
static long
status_num(const char *key)
{
	char *out = h_run(NULL, "curl -s --max-time 5 "
	    "http://127.0.0.1:%d/status", admin_port), pat[64], *p;
	long v = -1;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	if ((p = strstr(out, pat)) != NULL)
		v = strtol(p + strlen(pat), NULL, 10);
	free(out);
	return v;
}

/* wait_pid_change waits until /status answers from a process other than
 * |old|, and returns it (0 on timeout). */
static pid_t
wait_pid_change(pid_t old, int ms)
{
	long long end = h_now_ms() + ms;

	while (h_now_ms() < end) {
		long pid = status_num("pid");

		if (pid > 0 && pid != old)
			return (pid_t)pid;
		usleep(50000);
	}
	return 0;
}

/* wait_exit reaps |pid| (our child, or orphaned to us: the test is a
 * subreaper) and returns its exit status, or -1. */
static int
wait_exit(pid_t pid, int ms)
{
	long long end = h_now_ms() + ms;
	int st;

	while (h_now_ms() < end) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		usleep(20000);
	}
	return -1;
}

static int
client_ok(const char *source, int port)
{
	int st;
	char *out = h_run(&st, "%s --source %s --send-bytes 1000 "
	    "--expect-bytes 1000 127.0.0.1:%d", h_bin("client"), source, port);

	free(out);
	return st == 0;
}

/* A client that keeps connecting until told to stop, counting failures:
 * "keeps serving" means this loop never fails. */
struct prober {
	pthread_t t;
	int port;
	atomic_int stop;
	atomic_int ok, failed;
};

static void *
prober_run(void *arg)
{
	struct prober *p = arg;

	while (!atomic_load(&p->stop)) {
		int st;
		char *out = h_run(&st, "%s --conns 4 --send-bytes 20000 "
		    "--expect-bytes 20000 127.0.0.1:%d", h_bin("client"),
		    p->port);

		if (st == 0)
			atomic_fetch_add(&p->ok, 1);
		else {
			atomic_fetch_add(&p->failed, 1);
			fprintf(stderr, "prober: %s\n", out);
		}
		free(out);
	}
	return NULL;
}

static void
prober_start(struct prober *p, int port)
{
	memset(p, 0, sizeof(*p));
	p->port = port;
	ck_assert_int_eq(pthread_create(&p->t, NULL, prober_run, p), 0);
}

static void
prober_stop(struct prober *p)
{
	atomic_store(&p->stop, 1);
	pthread_join(p->t, NULL);
	ck_assert_msg(atomic_load(&p->failed) == 0, "%d of %d probes failed",
	    atomic_load(&p->failed), atomic_load(&p->ok) +
	    atomic_load(&p->failed));
	ck_assert_int_gt(atomic_load(&p->ok), 0);
}

/* upgrade sends SIGUSR2 to |d|'s process and follows the new one: the old
 * one must drain and exit 0. */
static void
upgrade(struct h_daemon *d)
{
	pid_t old = d->pid, next;

	ck_assert_int_eq(kill(old, SIGUSR2), 0);
	next = wait_pid_change(old, 20000);
	ck_assert_msg(next > 0, "no new process; log in %s", d->log);
	ck_assert_int_eq(wait_exit(old, 25000), 0);
	d->pid = next;
	d->base_fds = h_num_fds(next);
}

/* begin runs first in each test (each is a process of its own). */
static void
begin(void)
{
	/* Old processes exit before the new ones: these are reparented to
	 * the test, which reaps them and sees how they ended. */
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	admin_port = h_free_port();
}

START_TEST(upgrade_hands_everything_over)
{
	struct h_daemon d;
	struct prober pr;
	pid_t bpid, first;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port(), st;
	char sess13[512], sess12[512], *out, sock[600];

	begin();
	snprintf(sess13, sizeof(sess13), "%s/t13.sess", h_dir());
	snprintf(sess12, sizeof(sess12), "%s/t12.sess", h_dir());
	snprintf(sock, sizeof(sock), "%s/up.sock", h_dir());
	ck_assert_int_eq(h_daemon_start(&d, "handover", conf(port, bport,
	    "renegotiation_limit = 0\nrenegotiation_window = 60s")), 0);
	first = d.pid;
	/* A TLS 1.3 ticket and a TLS 1.2 session (cache, no ticket). */
	/* TLS 1.3 tickets come after the handshake: give them time. */
	free(h_run(NULL, "sleep 0.5 | timeout 10 openssl s_client -connect "
	    "127.0.0.1:%d -tls1_3 -sess_out %s >/dev/null 2>&1", port, sess13));
	free(h_run(NULL, "sleep 0.5 | timeout 10 openssl s_client -connect "
	    "127.0.0.1:%d -tls1_2 -no_ticket -sess_out %s >/dev/null 2>&1",
	    port, sess12));
	ck_assert(access(sess13, F_OK) == 0 && access(sess12, F_OK) == 0);
	/* Node renegotiates from 127.0.0.3: banned for a minute. */
	out = h_run(&st, "timeout 20 node -e \""
	    "const tls = require('tls');"
	    "const s = tls.connect({ port: %d, host: '127.0.0.1', localAddress:"
	    " '127.0.0.3', maxVersion: 'TLSv1.2', rejectUnauthorized: false },"
	    " () => { s.renegotiate({}, () => {}); });"
	    "s.on('error', () => {});\" 2>&1", port);
	free(out);
	ck_assert(h_log_contains(&d, "client 127.0.0.3 banned for ", 3000));
	/* A connection open across the upgrade, served by the old process
	 * until it ends. */
	out = h_run(&st, "(%s --send-bytes 300000 --expect-bytes 300000 "
	    "--hold 3 127.0.0.1:%d > %s/held.out 2>&1 &)", h_bin("client"), port,
	    h_dir());
	free(out);
	usleep(300000);
	prober_start(&pr, port);
	usleep(300000);
	upgrade(&d);
	usleep(300000);
	prober_stop(&pr);
	ck_assert(h_log_contains(&d, "upgrade: handed ", 0));
	ck_assert(h_log_contains(&d, " ticket keys, ", 0));
	ck_assert(h_log_contains(&d, "upgrade: took over ", 0));
	ck_assert(h_log_contains(&d, "1 bans", 0));
	/* The held connection finished on the old process, which then
	 * exited 0 (upgrade() checked). */
	out = h_run(NULL, "cat %s/held.out", h_dir());
	ck_assert_msg(strstr(out, "ok=1") != NULL, "%s", out);
	free(out);
	/* The ticket and the session from the first process resume. */
	out = h_run(NULL, "echo | timeout 10 openssl s_client -connect "
	    "127.0.0.1:%d -tls1_3 -sess_in %s 2>&1", port, sess13);
	ck_assert_msg(strstr(out, "Reused, TLSv1.3") != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "echo | timeout 10 openssl s_client -connect "
	    "127.0.0.1:%d -tls1_2 -no_ticket -sess_in %s 2>&1", port, sess12);
	ck_assert_msg(strstr(out, "Reused, TLSv1.2") != NULL, "%s", out);
	free(out);
	/* The ban holds; other addresses are served, on both binds. */
	ck_assert(!client_ok("127.0.0.3", port));
	ck_assert(client_ok("127.0.0.2", port));
	out = h_run(&st, "curl -s --max-time 5 -k --unix-socket %s "
	    "https://localhost/ -o /dev/null -w '%%{http_code}'", sock);
	free(out);
	ck_assert_msg(access(sock, F_OK) == 0, "the unix socket's path went "
	    "away with the old process");
	ck_assert_int_eq(status_num("upgrades_ok"), 0);
	ck_assert_int_eq(status_num("workers"), 2);
	ck_assert_int_ne(d.pid, first);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	ck_assert_msg(access(sock, F_OK) != 0, "the last process leaves the "
	    "unix socket's path behind");
	kill(bpid, SIGTERM);
}
END_TEST

/* notify_read collects what the daemon tells systemd. */
struct notify_reader {
	int fd;
	atomic_int stop;
	char all[65536];
	size_t len;
};

static void *
notify_read(void *arg)
{
	struct notify_reader *nr = arg;

	while (!atomic_load(&nr->stop)) {
		char buf[4096];
		ssize_t n = recv(nr->fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

		if (n <= 0) {
			usleep(10000);
			continue;
		}
		if (nr->len + (size_t)n + 2 < sizeof(nr->all)) {
			memcpy(nr->all + nr->len, buf, (size_t)n);
			nr->len += (size_t)n;
			nr->all[nr->len++] = '\n';
			nr->all[nr->len] = '\0';
		}
	}
	return NULL;
}

/* write_exec writes an executable script to |path| by renaming it in
 * place, as a package manager replaces a binary. */
static void
write_exec(const char *path, const char *text)
{
	char tmp[600];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.new", path);
	/* Close-on-exec: a child the prober's thread forks meanwhile must
	 * not keep the file open for writing, or executing it fails with
	 * ETXTBSY. */
	f = fopen(tmp, "we");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	ck_assert_int_eq(chmod(tmp, 0755), 0);
	ck_assert_int_eq(rename(tmp, path), 0);
}

/* install_binary puts a copy of the real daemon at |path|. */
static void
install_binary(const char *real, const char *path)
{
	int st;

	free(h_run(&st, "cp '%s' '%s.new' && mv '%s.new' '%s'", real, path,
	    path, path));
	ck_assert_int_eq(st, 0);
}

START_TEST(failed_upgrades_keep_the_old_process_serving)
{
	struct h_daemon d;
	struct prober pr;
	struct notify_reader nr;
	struct sockaddr_un sun;
	pthread_t reader;
	pid_t bpid, child;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port();
	char bin[512], script[1200], *real = strdup(h_bin("tlsproxy")), *out;
	const char *p;

	begin();
	/* The daemon runs from a copy the test can replace. */
	snprintf(bin, sizeof(bin), "%s/tlsproxy-copy", h_dir());
	install_binary(real, bin);
	memset(&nr, 0, sizeof(nr));
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/notify.sock", h_dir());
	unlink(sun.sun_path);
	nr.fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(bind(nr.fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	ck_assert_int_eq(pthread_create(&reader, NULL, notify_read, &nr), 0);
	setenv("NOTIFY_SOCKET", sun.sun_path, 1);
	setenv("TLSPROXY_BIN", bin, 1);
	ck_assert_int_eq(h_daemon_start(&d, "failing", conf(port, bport,
	    "upgrade_timeout = 2s")), 0);
	setenv("TLSPROXY_BIN", real, 1);
	unsetenv("NOTIFY_SOCKET");
	prober_start(&pr, port);

	/* A binary that exits at once. */
	write_exec(bin, "#!/bin/sh\necho 'not a daemon' >&2\nexit 3\n");
	kill(d.pid, SIGUSR2);
	ck_assert(h_log_contains(&d, "upgrade failed: new process ", 5000));
	ck_assert(h_log_contains(&d, "exited with status 3; this process "
	    "keeps serving", 0));
	ck_assert_int_eq(status_num("upgrades_failed"), 1);
	ck_assert_int_eq(status_num("pid"), d.pid);

	/* The real binary, with a configuration that does not load. */
	install_binary(real, bin);
	h_write("failing.conf", "[global]\nworkers = two\n");
	kill(d.pid, SIGUSR2);
	ck_assert(h_log_contains(&d, "it said: 2 errors in the configuration, "
	    "the first: ", 10000));
	ck_assert(h_log_contains(&d, "key 'workers'", 0));
	ck_assert_int_eq(status_num("upgrades_failed"), 2);
	h_write("failing.conf", conf(port, bport, "upgrade_timeout = 2s"));

	/* A new process that never gets ready: killed at the timeout. */
	snprintf(script, sizeof(script), "#!/bin/sh\nsleep 30\n");
	write_exec(bin, script);
	kill(d.pid, SIGUSR2);
	ck_assert(h_log_contains(&d, "was not ready within 2000ms, so it was "
	    "killed by signal 9", 8000));
	ck_assert_int_eq(status_num("upgrades_failed"), 3);

	/* One killed from outside while it loads. */
	snprintf(script, sizeof(script), "#!/bin/sh\nsleep 1\nexec '%s' "
	    "\"$@\"\n", real);
	free(h_run(NULL, "sed -i 's/upgrade_timeout = 2s/upgrade_timeout = "
	    "30s/' '%s'", d.conf));
	kill(d.pid, SIGHUP);
	ck_assert(h_log_contains(&d, "generation 2 published", 5000));
	write_exec(bin, script);
	kill(d.pid, SIGUSR2);
	ck_assert(h_log_contains(&d, "upgrade: started ", 5000));
	out = h_run(NULL, "cat '%s'", d.log);
	for (p = out; strstr(p, " as process ") != NULL; )
		p = strstr(p, " as process ") + 12;
	child = (pid_t)atoi(p);
	free(out);
	ck_assert_int_gt(child, 1);
	kill(child, SIGKILL);
	ck_assert(h_log_contains(&d, "closed the handover before it was ready "
	    "and was killed by signal 9 (Killed); this process keeps serving",
	    5000));
	ck_assert_int_eq(status_num("upgrades_failed"), 4);
	ck_assert_int_eq(status_num("pid"), d.pid);
	out = h_run(NULL, "curl -s http://127.0.0.1:%d/metrics | grep "
	    "'^tlsproxy_upgrades_total'", admin_port);
	ck_assert_msg(strstr(out, "tlsproxy_upgrades_total{result=\"failed\"} "
	    "4") != NULL && strstr(out, "tlsproxy_upgrades_total{result="
	    "\"ok\"} 0") != NULL, "%s", out);
	free(out);

	/* And then one that works, from the package's replaced file. */
	install_binary(real, bin);
	upgrade(&d);
	prober_stop(&pr);
	child = d.pid;
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	usleep(200000);
	atomic_store(&nr.stop, 1);
	pthread_join(reader, NULL);
	close(nr.fd);
	h_write("failing-notify.txt", nr.all);
	ck_assert_msg(strstr(nr.all, "last upgrade FAILED (new process ") !=
	    NULL, "%s", nr.all);
	ck_assert_msg(strstr(nr.all, "still serving") != NULL, "%s", nr.all);
	{
		char want[64];

		snprintf(want, sizeof(want), "MAINPID=%d\nREADY=1\n", (int)child);
		ck_assert_msg(strstr(nr.all, want) != NULL, "%s", nr.all);
	}
	/* The new process reports once it is the main one, and stops. */
	ck_assert_msg(strstr(strstr(nr.all, "MAINPID="), "STOPPING=1") != NULL,
	    "%s", nr.all);
	free(real);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(workers_change_through_an_upgrade)
{
	struct h_daemon d;
	struct prober pr;
	pid_t bpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port();
	char *c;

	begin();
	ck_assert_int_eq(h_daemon_start(&d, "workers", conf(port, bport, "")),
	    0);
	c = strdup(conf(port, bport, ""));
	/* workers = 2 is in the template: down to 1, then up to 2. */
	memcpy(strstr(c, "workers = 2"), "workers = 1", 11);
	h_write("workers.conf", c);
	kill(d.pid, SIGHUP);
	ck_assert(h_log_contains(&d, "key 'workers': 1 workers need an upgrade "
	    "(SIGUSR2) or a restart; keeping 2", 5000));
	prober_start(&pr, port);
	upgrade(&d);
	ck_assert_int_eq(status_num("workers"), 1);
	h_write("workers.conf", conf(port, bport, ""));
	upgrade(&d);
	ck_assert_int_eq(status_num("workers"), 2);
	usleep(500000);
	prober_stop(&pr);
	free(c);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(upgrade_command_uses_the_admin_endpoint)
{
	struct h_daemon d;
	pid_t bpid, next;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port(), st;
	char *out;

	begin();
	ck_assert_int_eq(h_daemon_start(&d, "command", conf(port, bport, "")),
	    0);
	out = h_run(&st, "%s --upgrade -c %s 2>&1", h_bin("tlsproxy"), d.conf);
	ck_assert_msg(st == 0 && strstr(out, " took over; process ") != NULL,
	    "%s", out);
	free(out);
	next = wait_pid_change(d.pid, 1000);
	ck_assert_int_gt(next, 0);
	ck_assert_int_eq(wait_exit(d.pid, 25000), 0);
	d.pid = next;
	/* One at a time: a second request while one runs is refused. */
	out = h_run(&st, "curl -s -X POST http://127.0.0.1:%d/upgrade "
	    "http://127.0.0.1:%d/upgrade", admin_port, admin_port);
	ck_assert_msg(strstr(out, "upgrading: process ") != NULL &&
	    strstr(out, "an upgrade is in progress") != NULL, "%s", out);
	free(out);
	next = wait_pid_change(d.pid, 20000);
	ck_assert_int_gt(next, 0);
	ck_assert_int_eq(wait_exit(d.pid, 25000), 0);
	d.pid = next;
	d.base_fds = h_num_fds(next);
	/* Without an admin endpoint the command says what to do instead. */
	h_write("noadmin.conf", h_simple_conf(h_free_port(), bport, ""));
	out = h_run(&st, "%s --upgrade -c %s/noadmin.conf 2>&1",
	    h_bin("tlsproxy"), h_dir());
	ck_assert_msg(st != 0 && strstr(out, "send SIGUSR2") != NULL, "%s",
	    out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("upgrade");
	TCase *tc = tcase_create("upgrade");

	h_setup("upgrade");
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, upgrade_hands_everything_over);
	tcase_add_test(tc, failed_upgrades_keep_the_old_process_serving);
	tcase_add_test(tc, workers_change_through_an_upgrade);
	tcase_add_test(tc, upgrade_command_uses_the_admin_endpoint);
	suite_add_tcase(s, tc);
	return check_run(s);
}
