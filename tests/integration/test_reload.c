/* SIGHUP reload: new certificates and addresses take effect, established
 * connections finish on their generation, a broken config changes
 * nothing, and systemd hears about it. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

/* conf writes a one-listener config binding |binds| with certificate
 * |leaf| (a file base in the scratch dir) and starts nothing. */
static const char *
conf(const char *binds, int bport, const char *leaf)
{
	static char text[2048];

	snprintf(text, sizeof(text),
	    "[global]\nworkers = 2\nlog_level = debug\n"
	    "[listener t]\nbind = %s\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context c]\ncert = %s/%s.pem\nkey = %s/%s.key\n",
	    binds, bport, h_dir(), leaf, h_dir(), leaf);
	return text;
}

/* rewrite replaces the daemon's config file and sends SIGHUP. */
static void
rewrite(const struct h_daemon *d, const char *text)
{
	FILE *f = fopen(d->conf, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	kill(d->pid, SIGHUP);
}

/* subject returns the serial-free subject line the server presents. */
static char *
subject(int port)
{
	return h_run(NULL, "openssl s_client -connect 127.0.0.1:%d </dev/null "
	    "2>/dev/null | openssl x509 -noout -subject 2>/dev/null", port);
}

static void
make_second_leaf(void)
{
	int st;
	char *out = h_run(&st, "cd '%s' && openssl req -x509 -newkey ec "
	    "-pkeyopt ec_paramgen_curve:P-256 -nodes -keyout second.key "
	    "-out second.pem -days 2 -subj /CN=second 2>&1", h_dir());

	ck_assert_msg(st == 0, "%s", out);
	free(out);
}

static int
count(const struct h_daemon *d, const char *needle)
{
	char *out = h_run(NULL, "grep -c '%s' '%s'", needle, d->log);
	int n = atoi(out);

	free(out);
	return n;
}

START_TEST(reload_swaps_certificate_and_keeps_old_connections)
{
	struct h_daemon d;
	pid_t bpid, cpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port();
	char binds[64], cmd[512], *out;
	int st;

	make_second_leaf();
	snprintf(binds, sizeof(binds), "127.0.0.1:%d", port);
	ck_assert_int_eq(h_daemon_start(&d, "swap", conf(binds, bport,
	    "leaf")), 0);
	out = subject(port);
	ck_assert_msg(strstr(out, "CN = localhost") != NULL, "%s", out);
	free(out);
	/* A connection that keeps sending across the reload. */
	snprintf(cmd, sizeof(cmd), "(printf early; sleep 1.5; printf late) | "
	    "%s --send-file /dev/stdin --timeout 20 127.0.0.1:%d > %s/old.out",
	    h_bin("client"), port, h_dir());
	cpid = fork();
	if (cpid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	usleep(500000);
	rewrite(&d, conf(binds, bport, "second"));
	ck_assert(h_log_contains(&d, "reload: generation 2 published", 3000));
	out = subject(port);
	ck_assert_msg(strstr(out, "CN = second") != NULL, "%s", out);
	free(out);
	waitpid(cpid, &st, 0);
	ck_assert_int_eq(WEXITSTATUS(st), 0);
	out = h_run(NULL, "cat %s/old.out", h_dir());
	ck_assert_str_eq(h_field(out, "ok"), "1");
	ck_assert_str_eq(h_field(out, "received"), "9");
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(broken_reloads_change_nothing)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	int taken = h_free_port(), holder;
	char binds[64], bad[4096], *out;
	struct sockaddr_in sin = { .sin_family = AF_INET };

	snprintf(binds, sizeof(binds), "127.0.0.1:%d", port);
	ck_assert_int_eq(h_daemon_start(&d, "broken", conf(binds, bport,
	    "leaf")), 0);
	/* A syntax error. */
	snprintf(bad, sizeof(bad), "%sthis is not ini\n", conf(binds, bport,
	    "leaf"));
	rewrite(&d, bad);
	ck_assert(h_log_contains(&d, "broken.conf:13: expected 'key = value'",
	    3000));
	/* A key that does not match its certificate. */
	snprintf(bad, sizeof(bad), "%s", conf(binds, bport, "leaf"));
	strcpy(strstr(bad, "leaf.key"), "other.key\n");
	rewrite(&d, bad);
	ck_assert(h_log_contains(&d, "broken.conf:12: key 'key': private key",
	    3000));
	/* A missing file. */
	rewrite(&d, conf(binds, bport, "missing"));
	ck_assert(h_log_contains(&d, "broken.conf:11: key 'cert': cannot open",
	    3000));
	/* A new address that is already taken. */
	holder = socket(AF_INET, SOCK_STREAM, 0);
	sin.sin_port = htons((uint16_t)taken);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(holder, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(holder, 1), 0);
	snprintf(binds, sizeof(binds), "127.0.0.1:%d, 127.0.0.1:%d", port,
	    taken);
	rewrite(&d, conf(binds, bport, "leaf"));
	ck_assert(h_log_contains(&d, "Address already in use", 3000));
	close(holder);
	ck_assert_int_eq(count(&d, "reload failed"), 4);
	ck_assert_int_eq(count(&d, "published"), 0);
	/* The first generation kept serving throughout. */
	out = h_run(NULL, "curl -sS --cacert %s/ca.pem https://localhost:%d/ok",
	    h_dir(), port);
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /ok\n");
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(addresses_added_and_removed)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid);
	int p1 = h_free_port(), p2 = h_free_port();
	char binds[64], *out;
	int st;

	snprintf(binds, sizeof(binds), "127.0.0.1:%d", p1);
	ck_assert_int_eq(h_daemon_start(&d, "addrs", conf(binds, bport,
	    "leaf")), 0);
	snprintf(binds, sizeof(binds), "127.0.0.1:%d, 127.0.0.1:%d", p1, p2);
	rewrite(&d, conf(binds, bport, "leaf"));
	ck_assert(h_log_contains(&d, "generation 2 published", 3000));
	usleep(100000);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/two",
	    h_dir(), p2);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	snprintf(binds, sizeof(binds), "127.0.0.1:%d", p2);
	rewrite(&d, conf(binds, bport, "leaf"));
	ck_assert(h_log_contains(&d, "generation 3 published", 3000));
	usleep(200000);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/one "
	    "2>&1", h_dir(), p1);
	ck_assert_msg(st != 0, "removed address still answers: %s", out);
	free(out);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/two",
	    h_dir(), p2);
	ck_assert_int_eq(st, 0);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(reloads_under_load_lose_nothing)
{
	struct h_daemon d;
	pid_t bpid, lpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port();
	char binds[64], cmd[1024], *out;
	int st;

	make_second_leaf();
	snprintf(binds, sizeof(binds), "127.0.0.1:%d", port);
	ck_assert_int_eq(h_daemon_start(&d, "load", conf(binds, bport,
	    "leaf")), 0);
	/* Clients keep connecting and moving data while 50 reloads
	 * alternate between two certificates. */
	snprintf(cmd, sizeof(cmd), "fails=0; i=0; while [ ! -e %s/stop ]; do "
	    "%s --conns 10 --send-bytes 20000 --timeout 30 127.0.0.1:%d "
	    ">> %s/load.out || fails=$((fails+1)); i=$((i+1)); done; "
	    "echo \"rounds=$i fails=$fails\" > %s/load.sum",
	    h_dir(), h_bin("client"), port, h_dir(), h_dir());
	lpid = fork();
	if (lpid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	usleep(300000);
	for (int i = 0; i < 50; i++) {
		rewrite(&d, conf(binds, bport, i % 2 ? "leaf" : "second"));
		usleep(60000);
	}
	ck_assert(h_log_contains(&d, "generation 51 published", 5000) ||
	    count(&d, "published") >= 25);
	h_write("stop", "");
	waitpid(lpid, &st, 0);
	out = h_run(NULL, "cat %s/load.sum; grep -c 'ok=1' %s/load.out; "
	    "grep -c 'ok=0' %s/load.out", h_dir(), h_dir(), h_dir());
	ck_assert_msg(strstr(out, " fails=0") != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "grep 'ok=0' %s/load.out | head -3", h_dir());
	ck_assert_msg(out[0] == '\0', "failed connections: %s", out);
	free(out);
	/* Every reload succeeded. */
	ck_assert_int_eq(count(&d, "reload failed"), 0);
	ck_assert_int_eq(h_daemon_stop(&d, 10000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

/* A notify socket's reader, on its own thread: collects every message,
 * '|'-separated. */
struct notify_reader {
	int fd;
	atomic_int stop;
	char all[16384];
};

static void *
notify_read(void *arg)
{
	struct notify_reader *nr = arg;
	char buf[1024];

	while (!atomic_load(&nr->stop)) {
		ssize_t n = recv(nr->fd, buf, sizeof(buf) - 1, 0);

		if (n > 0) {
			buf[n] = '\0';
			strncat(nr->all, buf, sizeof(nr->all) - strlen(nr->all) - 2);
			strcat(nr->all, "|");
		} else {
			usleep(5000);
		}
	}
	return NULL;
}

START_TEST(systemd_hears_ready_reloading_stopping)
{
	struct h_daemon d;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char binds[64];
	struct notify_reader nr = { .fd = -1 };
	pthread_t reader;
	const char *all = nr.all;
	int fd;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/notify.sock",
	    h_dir());
	unlink(sun.sun_path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	/* Read as systemd does, all along: a datagram queue holds only a
	 * few messages, and sd_notify blocks when it is full. */
	nr.fd = fd;
	ck_assert_int_eq(pthread_create(&reader, NULL, notify_read, &nr), 0);
	setenv("NOTIFY_SOCKET", sun.sun_path, 1);
	setenv("WATCHDOG_USEC", "200000", 1);
	snprintf(binds, sizeof(binds), "127.0.0.1:%d", port);
	ck_assert_int_eq(h_daemon_start(&d, "notify", conf(binds, bport,
	    "leaf")), 0);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	usleep(300000); /* a watchdog period or so */
	rewrite(&d, conf(binds, bport, "leaf"));
	ck_assert(h_log_contains(&d, "generation 2 published", 3000));
	rewrite(&d, conf(binds, bport, "missing"));
	ck_assert(h_log_contains(&d, "reload failed", 3000));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	usleep(200000);
	atomic_store(&nr.stop, 1);
	pthread_join(reader, NULL);
	close(fd);
	h_write("notify.txt", all);
	ck_assert_msg(strstr(all, "READY=1\nSTATUS=generation 1,") != NULL,
	    "%s", all);
	ck_assert_msg(strstr(all, "RELOADING=1\nMONOTONIC_USEC=") != NULL,
	    "%s", all);
	ck_assert_msg(strstr(all, "STATUS=generation 2, 1 contexts, ") != NULL,
	    "%s", all);
	ck_assert_msg(strstr(all, "last reload FAILED (2 errors in the "
	    "configuration); still serving generation 2") != NULL, "%s", all);
	ck_assert_msg(strstr(all, "STOPPING=1") != NULL, "%s", all);
	ck_assert_msg(strstr(all, "WATCHDOG=1") != NULL, "%s", all);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(socket_activation_adopts_matching_sockets)
{
	pid_t bpid, apid;
	int bport = h_backend("http", NULL, &bpid);
	int p1 = h_free_port(), p2 = h_free_port();
	char binds[64], path[512], log[512], lsn[64], *out;
	int st;

	snprintf(binds, sizeof(binds), "127.0.0.1:%d, 127.0.0.1:%d", p1, p2);
	snprintf(path, sizeof(path), "%s", h_write("activated.conf",
	    conf(binds, bport, "leaf")));
	snprintf(log, sizeof(log), "%s/activated.log", h_dir());
	snprintf(lsn, sizeof(lsn), "127.0.0.1:%d", p1);
	/* systemd-socket-activate binds p1 and starts tlsproxy with it on
	 * the first connection; tlsproxy binds p2 itself. */
	apid = fork();
	if (apid == 0) {
		setpgid(0, 0);
		if (freopen(log, "w", stderr) == NULL)
			_exit(126);
		execlp("systemd-socket-activate", "systemd-socket-activate",
		    "-l", lsn, h_bin("tlsproxy"), "-c", path, (char *)NULL);
		_exit(127);
	}
	usleep(300000);
	out = h_run(&st, "curl -sS --retry 5 --retry-connrefused --cacert "
	    "%s/ca.pem https://localhost:%d/first", h_dir(), p1);
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /first\n");
	free(out);
	out = h_run(&st, "curl -sS --retry 5 --retry-connrefused --cacert "
	    "%s/ca.pem https://localhost:%d/second", h_dir(), p2);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	out = h_run(NULL, "cat %s", log);
	ck_assert_msg(strstr(out, "socket activation: received 127.0.0.1:") !=
	    NULL, "%s", out);
	ck_assert_msg(strstr(out, " ready: 1 listeners, 3 sockets, 2 workers") !=
	    NULL, "%s", out);
	free(out);
	kill(-apid, SIGTERM);
	waitpid(apid, &st, 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(privileges_dropped_after_binding)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char binds[64], text[2048], *out;
	int st;

	if (geteuid() != 0) {
		/* Only root can switch users; nothing to check otherwise. */
		kill(bpid, SIGTERM);
		return;
	}
	snprintf(binds, sizeof(binds), "127.0.0.1:%d", port);
	snprintf(text, sizeof(text), "%s", conf(binds, bport, "leaf"));
	strcpy(strstr(text, "log_level = debug\n"), "log_level = debug\n"
	    "user = nobody\ngroup = nogroup\n");
	strcat(text, strstr(conf(binds, bport, "leaf"), "[listener"));
	ck_assert_int_eq(h_daemon_start(&d, "drop", text), 0);
	ck_assert(h_log_contains(&d, "running as user nobody", 0));
	/* Every thread runs as nobody: no uid or gid 0 anywhere. */
	out = h_run(&st, "cat /proc/%d/task/*/status | grep -E '^(Uid|Gid):' "
	    "| sort -u", (int)d.pid);
	ck_assert_msg(strstr(out, "\t0\t") == NULL && strstr(out, "65534") !=
	    NULL, "%s", out);
	free(out);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/x",
	    h_dir(), port);
	ck_assert_int_eq(st, 0);
	free(out);
	/* The key (mode 0600, root's) cannot be read again: the reload fails
	 * and says why, and the old configuration keeps serving. */
	rewrite(&d, text);
	ck_assert(h_log_contains(&d, "Permission denied", 3000));
	ck_assert(h_log_contains(&d, "reload failed", 0));
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/y",
	    h_dir(), port);
	ck_assert_int_eq(st, 0);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

/* with_global returns conf() with |lines| added to [global]. */
static const char *
with_global(const char *binds, int bport, const char *lines)
{
	static char text[4096];
	const char *base = conf(binds, bport, "leaf");
	const char *rest = strstr(base, "[listener");

	snprintf(text, sizeof(text), "%.*s%s\n%s", (int)(rest - base), base,
	    lines, rest);
	return text;
}

START_TEST(reload_failing_after_build_is_reported_failed)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	int admin = h_free_port(), taken = h_free_port(), holder;
	char binds[64], lines[512], *out;
	struct sockaddr_in sin = { .sin_family = AF_INET };

	snprintf(binds, sizeof(binds), "127.0.0.1:%d", port);
	snprintf(lines, sizeof(lines), "admin = 127.0.0.1:%d", admin);
	ck_assert_int_eq(h_daemon_start(&d, "sidefail", with_global(binds,
	    bport, lines)), 0);
	/* The access log cannot be opened: nothing changes. */
	snprintf(lines, sizeof(lines), "admin = 127.0.0.1:%d\naccess_log = "
	    "%s/no-such-dir/access.log", admin, h_dir());
	rewrite(&d, with_global(binds, bport, lines));
	ck_assert(h_log_contains(&d, "reload failed: cannot open the access "
	    "log", 3000));
	/* The admin endpoint cannot move to an address already taken. */
	holder = socket(AF_INET, SOCK_STREAM, 0);
	sin.sin_port = htons((uint16_t)taken);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(holder, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(holder, 1), 0);
	snprintf(lines, sizeof(lines), "admin = 127.0.0.1:%d", taken);
	rewrite(&d, with_global(binds, bport, lines));
	ck_assert(h_log_contains(&d, "reload failed: cannot serve admin on",
	    3000));
	close(holder);
	ck_assert_int_eq(count(&d, "reload failed"), 2);
	ck_assert_int_eq(count(&d, "published"), 0);
	/* The old endpoint still answers and counts both failures; the
	 * first generation still serves, its access log still on stderr. */
	out = h_run(NULL, "curl -sS http://127.0.0.1:%d/metrics | grep "
	    "'^tlsproxy_reloads_total'", admin);
	ck_assert_msg(strstr(out, "tlsproxy_reloads_total{result=\"failed\"} 2")
	    != NULL && strstr(out, "tlsproxy_reloads_total{result=\"ok\"} 0")
	    != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "curl -sS http://127.0.0.1:%d/status", admin);
	ck_assert_msg(strstr(out, "last reload FAILED (cannot serve admin") !=
	    NULL, "%s", out);
	free(out);
	out = h_run(NULL, "curl -sS --cacert %s/ca.pem https://localhost:%d/ok",
	    h_dir(), port);
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /ok\n");
	free(out);
	ck_assert(h_log_contains(&d, "reason=\"done\"", 3000));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(start_only_settings_warn_on_reload)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char binds[64], text[4096];

	snprintf(binds, sizeof(binds), "127.0.0.1:%d", port);
	ck_assert_int_eq(h_daemon_start(&d, "startonly", conf(binds, bport,
	    "leaf")), 0);
	snprintf(text, sizeof(text), "%s", with_global(binds, bport,
	    "buffer_size = 32k"));
	memcpy(strstr(text, "workers = 2\n"), "workers = 3\n", 12);
	rewrite(&d, text);
	ck_assert(h_log_contains(&d, "published", 3000));
	ck_assert(h_log_contains(&d, "key 'workers': 3 workers need an "
	    "upgrade (SIGUSR2) or a restart; keeping 2", 0));
	ck_assert(h_log_contains(&d, "key 'buffer_size': 32768 bytes need an "
	    "upgrade (SIGUSR2) or a restart; keeping 65536", 0));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(supplementary_groups_kept_after_drop)
{
	struct h_daemon d;
	pid_t bpid;
	int bport, port = h_free_port(), st;
	char binds[64], text[4096], *out;
	const char *user = "tlsproxy-test-u", *group = "tlsproxy-test-g";

	if (geteuid() != 0 || access("/usr/sbin/useradd", X_OK) != 0)
		return; /* only root can make users and switch to them */
	/* A key readable only through a supplementary group of the user,
	 * as Debian's ssl-cert group is used. */
	free(h_run(NULL, "userdel %s 2>/dev/null; groupdel %s 2>/dev/null; "
	    "groupadd %s && useradd -M -N -g nogroup -G %s -s /usr/sbin/nologin "
	    "%s", user, group, group, group, user));
	out = h_run(&st, "cd '%s' && cp leaf.key grp.key && chgrp %s grp.key && "
	    "chmod 0640 grp.key && id %s", h_dir(), group, user);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	bport = h_backend("http", NULL, &bpid);
	snprintf(binds, sizeof(binds), "127.0.0.1:%d", port);
	snprintf(text, sizeof(text), "user = %s", user);
	snprintf(text, sizeof(text), "%s", with_global(binds, bport, text));
	strcpy(strstr(text, "leaf.key"), "grp.key\n");
	ck_assert_int_eq(h_daemon_start(&d, "groups", text), 0);
	ck_assert(h_log_contains(&d, "running as user tlsproxy-test-u", 0));
	rewrite(&d, text);
	ck_assert(h_log_contains(&d, "published", 3000));
	ck_assert_int_eq(count(&d, "reload failed"), 0);
	out = h_run(&st, "curl -sS --cacert %s/ca.pem https://localhost:%d/g",
	    h_dir(), port);
	ck_assert_int_eq(st, 0);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
	free(h_run(NULL, "userdel %s; groupdel %s", user, group));
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("reload");
	TCase *tc = tcase_create("sighup");

	h_setup("reload");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, reload_swaps_certificate_and_keeps_old_connections);
	tcase_add_test(tc, broken_reloads_change_nothing);
	tcase_add_test(tc, addresses_added_and_removed);
	tcase_add_test(tc, reloads_under_load_lose_nothing);
	tcase_add_test(tc, systemd_hears_ready_reloading_stopping);
	tcase_add_test(tc, socket_activation_adopts_matching_sockets);
	tcase_add_test(tc, privileges_dropped_after_binding);
	tcase_add_test(tc, reload_failing_after_build_is_reported_failed);
	tcase_add_test(tc, start_only_settings_warn_on_reload);
	tcase_add_test(tc, supplementary_groups_kept_after_drop);
	suite_add_tcase(s, tc);
	return check_run(s);
}
