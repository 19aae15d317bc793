/* Session resumption: session IDs and tickets, ticket keys shared by two
 * instances through a file and rotated, what a reload keeps, and a Redis
 * store that is shared, down, slow, behind a DNS server that does not
 * answer, or mute. */
#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

static const char *
conf_workers(int workers, int port, int bport, const char *global,
    const char *leaf)
{
	static char text[2048];

	snprintf(text, sizeof(text),
	    "[global]\nworkers = %d\nlog_level = debug\n%s\n"
	    "[listener t]\nbind = 127.0.0.1:%d\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context c]\ncert = %s/%s.pem\nkey = %s/%s.key\n",
	    workers, global ? global : "", port, bport, h_dir(), leaf, h_dir(),
	    leaf);
	return text;
}

static const char *
conf(int port, int bport, const char *global, const char *leaf)
{
	return conf_workers(2, port, bport, global, leaf);
}

/* handshake runs one s_client request to |port|, saving the session to
 * |out| and/or offering |in|; returns "New" or "Reused". */
static const char *
handshake(int port, const char *args, const char *in, const char *out)
{
	static char verdict[16];
	char sess[600] = "";
	char *res;

	if (in != NULL)
		snprintf(sess + strlen(sess), sizeof(sess) - strlen(sess),
		    " -sess_in %s/%s", h_dir(), in);
	if (out != NULL)
		snprintf(sess + strlen(sess), sizeof(sess) - strlen(sess),
		    " -sess_out %s/%s", h_dir(), out);
	/* Sending a request and waiting for the answer lets TLS 1.3 tickets
	 * arrive before the session is saved. */
	res = h_run(NULL, "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 10 "
	    "openssl s_client -connect 127.0.0.1:%d %s %s -ign_eof 2>&1 | "
	    "grep -Eo '^(New|Reused),' | head -n 1 | tr -d ,", port,
	    args ? args : "", sess);
	snprintf(verdict, sizeof(verdict), "%s", res);
	verdict[strcspn(verdict, "\n")] = '\0';
	free(res);
	return verdict;
}

static void
write_keys(const char *name, const char *lines)
{
	char path[512];

	snprintf(path, sizeof(path), "%s.tmp", name);
	h_write(path, lines);
	/* Replace atomically, as an operator's deploy tool would. */
	free(h_run(NULL, "cd %s && chmod 600 %s.tmp && mv %s.tmp %s", h_dir(),
	    name, name, name));
}

static char *
new_key(void)
{
	char *k = h_run(NULL, "%s --new-ticket-key", h_bin("tlsproxy"));

	ck_assert_uint_eq(strlen(k), 65);
	return k;
}

START_TEST(session_ids_and_tickets_resume)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();

	ck_assert_int_eq(h_daemon_start(&d, "basic", conf(port, bport, NULL,
	    "leaf")), 0);
	ck_assert_str_eq(handshake(port, "-tls1_2 -no_ticket", NULL, "id12"),
	    "New");
	ck_assert_str_eq(handshake(port, "-tls1_2 -no_ticket", "id12", NULL),
	    "Reused");
	ck_assert_str_eq(handshake(port, "-tls1_2", NULL, "t12"), "New");
	ck_assert_str_eq(handshake(port, "-tls1_2", "t12", NULL), "Reused");
	ck_assert_str_eq(handshake(port, "-tls1_3", NULL, "t13"), "New");
	ck_assert_str_eq(handshake(port, "-tls1_3", "t13", NULL), "Reused");
	ck_assert(h_log_contains(&d, "resumed=yes", 2000));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(node_sees_resumption)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char *out;
	int st;

	ck_assert_int_eq(h_daemon_start(&d, "node", conf(port, bport, NULL,
	    "leaf")), 0);
	out = h_run(&st, "node -e \""
	    "const tls = require('tls'); const fs = require('fs');"
	    "const ca = fs.readFileSync('%s/ca.pem');"
	    "function go(session, n) {"
	    " const s = tls.connect({ port: %d, host: '127.0.0.1',"
	    "  servername: 'localhost', ca, session }, () => {"
	    "  s.write('GET / HTTP/1.0\\\\r\\\\n\\\\r\\\\n'); });"
	    " let saved; s.on('session', (x) => { saved = x; });"
	    " s.on('data', () => {});"
	    " s.on('end', () => { console.log('reused=' + s.isSessionReused());"
	    "  s.end(); if (n > 0) go(saved, n - 1); });"
	    "}"
	    "go(undefined, 1);\" 2>&1", h_dir(), port);
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_msg(strcmp(out, "reused=false\nreused=true\n") == 0, "%s",
	    out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(fleet_shares_and_rotates_ticket_keys)
{
	struct h_daemon d1, d2;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid);
	int p1 = h_free_port(), p2 = h_free_port();
	char global[600], lines[600], *k1 = new_key(), *k2 = new_key();

	write_keys("fleet.keys", k1);
	snprintf(global, sizeof(global), "ticket_keys = %s/fleet.keys",
	    h_dir());
	ck_assert_int_eq(h_daemon_start(&d1, "fleet1", conf(p1, bport, global,
	    "leaf")), 0);
	ck_assert_int_eq(h_daemon_start(&d2, "fleet2", conf(p2, bport, global,
	    "leaf")), 0);
	/* A ticket from one instance resumes on the other, both versions. */
	ck_assert_str_eq(handshake(p1, "-tls1_3", NULL, "f13"), "New");
	ck_assert_str_eq(handshake(p2, "-tls1_3", "f13", NULL), "Reused");
	ck_assert_str_eq(handshake(p1, "-tls1_2", NULL, "f12"), "New");
	ck_assert_str_eq(handshake(p2, "-tls1_2", "f12", NULL), "Reused");
	/* Rotation, step 1 and 2 at once here: a new first key; tickets
	 * under the old one still resume (and are renewed). */
	snprintf(lines, sizeof(lines), "%s%s", k2, k1);
	write_keys("fleet.keys", lines);
	ck_assert(h_log_contains(&d2, "session tickets: 2 keys from", 3000));
	ck_assert(h_log_contains(&d1, "session tickets: 2 keys from", 3000));
	ck_assert_str_eq(handshake(p2, "-tls1_3", "f13", "f13b"), "Reused");
	ck_assert_str_eq(handshake(p1, "-tls1_2", "f12", NULL), "Reused");
	/* Step 3: the old key is removed; its tickets get a full handshake,
	 * the renewed ones still resume. */
	write_keys("fleet.keys", k2);
	ck_assert(h_log_contains(&d1, "session tickets: 1 keys from", 3000));
	ck_assert(h_log_contains(&d2, "session tickets: 1 keys from", 3000));
	ck_assert_str_eq(handshake(p1, "-tls1_3", "f13", NULL), "New");
	ck_assert_str_eq(handshake(p1, "-tls1_3", "f13b", NULL), "Reused");
	/* A world-readable file is refused, and the keys in use stay. */
	free(h_run(NULL, "chmod 644 %s/fleet.keys", h_dir()));
	ck_assert(h_log_contains(&d1, "is readable by every user", 3000));
	ck_assert_str_eq(handshake(p1, "-tls1_3", "f13b", NULL), "Reused");
	ck_assert_int_eq(h_daemon_stop(&d1, 5000), 0);
	ck_assert_int_eq(h_daemon_stop(&d2, 5000), 0);
	free(k1);
	free(k2);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(tickets_off_and_bad_key_files)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char global[600], *out;
	int st;

	ck_assert_int_eq(h_daemon_start(&d, "notickets", conf(port, bport,
	    "session_tickets = no", "leaf")), 0);
	/* TLS 1.3 resumes only with tickets; TLS 1.2 falls back to IDs. */
	ck_assert_str_eq(handshake(port, "-tls1_3", NULL, "n13"), "New");
	{
		/* Without a ticket the client may have nothing to save. */
		char path[512];
		struct stat st;

		snprintf(path, sizeof(path), "%s/n13", h_dir());
		if (stat(path, &st) == 0 && st.st_size > 0)
			ck_assert_str_eq(handshake(port, "-tls1_3", "n13", NULL),
			    "New");
	}
	ck_assert_str_eq(handshake(port, "-tls1_2", NULL, "n12"), "New");
	ck_assert_str_eq(handshake(port, "-tls1_2", "n12", NULL), "Reused");
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	/* Bad key files are configuration errors with the key's line. */
	h_write("open.keys", "QUJD\n");
	free(h_run(NULL, "chmod 644 %s/open.keys", h_dir()));
	snprintf(global, sizeof(global), "ticket_keys = %s/open.keys", h_dir());
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("badkeys.conf", conf(port, bport, global, "leaf")));
	ck_assert_int_eq(st, 1);
	ck_assert_msg(strstr(out, "badkeys.conf:4: key 'ticket_keys': '") &&
	    strstr(out, "open.keys' is readable by every user"), "%s", out);
	free(out);
	free(h_run(NULL, "chmod 600 %s/open.keys", h_dir()));
	out = h_run(&st, "%s -t -c %s/badkeys.conf 2>&1", h_bin("tlsproxy"),
	    h_dir());
	ck_assert_int_eq(st, 1);
	ck_assert_msg(strstr(out, "open.keys': line 1: expected a 48-byte key "
	    "in base64 (64 characters)") != NULL, "%s", out);
	free(out);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(reload_keeps_sessions_unless_the_context_changed)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	FILE *f;

	free(h_run(NULL, "cd '%s' && openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:P-256 -nodes -keyout other-leaf.key -out "
	    "other-leaf.pem -days 2 -subj /CN=localhost 2>&1", h_dir()));
	ck_assert_int_eq(h_daemon_start(&d, "keep", conf(port, bport, NULL,
	    "leaf")), 0);
	ck_assert_str_eq(handshake(port, "-tls1_2 -no_ticket", NULL, "k12"),
	    "New");
	ck_assert_str_eq(handshake(port, "-tls1_3", NULL, "k13"), "New");
	/* An unchanged context: both kinds survive a reload. */
	kill(d.pid, SIGHUP);
	ck_assert(h_log_contains(&d, "generation 2 published", 3000));
	ck_assert_str_eq(handshake(port, "-tls1_2 -no_ticket", "k12", NULL),
	    "Reused");
	ck_assert_str_eq(handshake(port, "-tls1_3", "k13", NULL), "Reused");
	/* A new certificate changes the context: no resumption across. */
	f = fopen(d.conf, "w");
	fputs(conf(port, bport, NULL, "other-leaf"), f);
	fclose(f);
	kill(d.pid, SIGHUP);
	ck_assert(h_log_contains(&d, "generation 3 published", 3000));
	ck_assert_str_eq(handshake(port, "-tls1_2 -no_ticket", "k12", NULL),
	    "New");
	ck_assert_str_eq(handshake(port, "-tls1_3", "k13", NULL), "New");
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(automatic_keys_rotate)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();

	/* Rotate every second, sessions live 2s: 1 + 2 keys are kept. */
	ck_assert_int_eq(h_daemon_start(&d, "rotate", conf(port, bport,
	    "ticket_rotation = 1s\nsession_timeout = 2s", "leaf")), 0);
	ck_assert_str_eq(handshake(port, "-tls1_3", NULL, "r13"), "New");
	ck_assert(h_log_contains(&d, "rotated to a new key (2 kept", 3000));
	/* One rotation later the ticket still decrypts... */
	ck_assert_str_eq(handshake(port, "-tls1_3", "r13", NULL), "Reused");
	ck_assert(h_log_contains(&d, "rotated to a new key (3 kept", 3000));
	/* ...and once its key is gone (and it has expired), it does not. */
	sleep(3);
	ck_assert_str_eq(handshake(port, "-tls1_3", "r13", NULL), "New");
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

/* start_redis runs a throwaway redis-server on |port| (no persistence);
 * it dies with the test. */
static pid_t
start_redis(int port)
{
	char portstr[16];
	pid_t pid = fork();

	snprintf(portstr, sizeof(portstr), "%d", port);
	if (pid == 0) {
		if (freopen("/dev/null", "w", stdout) == NULL)
			_exit(126);
		execlp("redis-server", "redis-server", "--port", portstr,
		    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		    (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		char *out = h_run(NULL, "redis-cli -p %d ping 2>/dev/null", port);
		int up = strncmp(out, "PONG", 4) == 0;

		free(out);
		if (up)
			return pid;
		usleep(50000);
	}
	ck_abort_msg("redis-server did not start");
	return -1;
}

static void
stop_redis(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

START_TEST(redis_store_shared_by_two_instances)
{
	struct h_daemon d1, d2;
	pid_t bpid, rpid;
	int bport = h_backend("http", NULL, &bpid);
	int p1 = h_free_port(), p2 = h_free_port(), rport = h_free_port();
	char global[300];
	long long t0;

	rpid = start_redis(rport);
	snprintf(global, sizeof(global), "session_store = redis://127.0.0.1:%d/3"
	    "\nsession_tickets = no", rport);
	ck_assert_int_eq(h_daemon_start(&d1, "redis1", conf(p1, bport, global,
	    "leaf")), 0);
	ck_assert_int_eq(h_daemon_start(&d2, "redis2", conf(p2, bport, global,
	    "leaf")), 0);
	/* A session made on one instance resumes on the other. */
	ck_assert_str_eq(handshake(p1, "-tls1_2", NULL, "rs1"), "New");
	ck_assert_str_eq(handshake(p2, "-tls1_2", "rs1", NULL), "Reused");
	/* Redis gone: handshakes keep working, as full ones. */
	stop_redis(rpid);
	ck_assert(h_log_contains(&d1, "unavailable", 3000));
	ck_assert_str_eq(handshake(p2, "-tls1_2", NULL, "rs2"), "New");
	ck_assert_str_eq(handshake(p1, "-tls1_2", "rs2", NULL), "New");
	/* Back again: the instances reconnect and share sessions again. */
	rpid = start_redis(rport);
	ck_assert(h_log_contains(&d1, "session store redis://127.0.0.1", 0));
	for (int i = 0; i < 100 && !h_log_contains(&d2, "connected", 0); i++)
		usleep(100000);
	for (int i = 0; i < 100 && !h_log_contains(&d1, "connected", 0); i++)
		usleep(100000);
	usleep(300000); /* every worker of both */
	ck_assert_str_eq(handshake(p1, "-tls1_2", NULL, "rs3"), "New");
	ck_assert_str_eq(handshake(p2, "-tls1_2", "rs3", NULL), "Reused");
	/* A store too slow to answer costs session_store_timeout, then the
	 * handshake goes on as a full one. The session is only in the store
	 * (made on the other instance), so the lookup must wait for it. */
	ck_assert_str_eq(handshake(p2, "-tls1_2", NULL, "rs4"), "New");
	kill(rpid, SIGSTOP); /* connected, but answers nothing */
	t0 = h_now_ms();
	ck_assert_str_eq(handshake(p1, "-tls1_2", "rs4", NULL), "New");
	ck_assert_msg(h_now_ms() - t0 < 2000, "slow store stalled the "
	    "handshake for %lldms", h_now_ms() - t0);
	kill(rpid, SIGCONT);
	ck_assert_int_eq(h_daemon_stop(&d1, 5000), 0);
	ck_assert_int_eq(h_daemon_stop(&d2, 5000), 0);
	stop_redis(rpid);
	kill(bpid, SIGTERM);
}
END_TEST

/* dns_start runs dns_responder.py on |port| in |mode| ("answer NAME ADDR"
 * or "silent"); it dies with the test. */
static pid_t
dns_start(int port, const char *mode)
{
	char out[512];
	pid_t pid;

	snprintf(out, sizeof(out), "%s/dns-%d.out", h_dir(), port);
	unlink(out);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char cmd[1024];

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		snprintf(cmd, sizeof(cmd), "exec python3 %s/dns_responder.py %d "
		    "%s >%s", getenv("TLSPROXY_TEST_SRC"), port, mode, out);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		char *log = h_run(NULL, "cat %s 2>/dev/null", out);
		int up = strstr(log, "listening") != NULL;

		free(log);
		if (up)
			return pid;
		usleep(50000);
	}
	ck_abort_msg("dns_responder.py did not start");
	return -1;
}

static void
stop_pid(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

/* store_up scrapes the admin endpoint on |aport| and returns the store
 * gauge ('0', '1', or '?' when missing); |*out_ms| gets the time the
 * scrape took. */
static char
store_up(int aport, long long *out_ms)
{
	long long t0 = h_now_ms();
	char *out = h_run(NULL, "curl -sf -m 10 http://127.0.0.1:%d/metrics | "
	    "awk '/^tlsproxy_session_store_up / { print $2 }'", aport);
	char v = out[0] == '0' || out[0] == '1' ? out[0] : '?';

	free(out);
	if (out_ms != NULL)
		*out_ms = h_now_ms() - t0;
	return v;
}

/* wait_store_up polls the gauge until it is |want| (up to |wait_ms|). */
static int
wait_store_up(int aport, char want, int wait_ms)
{
	long long end = h_now_ms() + wait_ms;

	do {
		if (store_up(aport, NULL) == want)
			return 1;
		usleep(100000);
	} while (h_now_ms() < end);
	return 0;
}

/* timed_handshake is handshake() that fails the test if it took longer
 * than a worker that never waits could take, with margin. */
static const char *
timed_handshake(int port, const char *args, const char *in, const char *out)
{
	long long t0 = h_now_ms();
	const char *v = handshake(port, args, in, out);
	long long took = h_now_ms() - t0;

	ck_assert_msg(took < 3000, "handshake %s took %lldms", args, took);
	return v;
}

START_TEST(store_host_resolved_by_the_configured_resolver)
{
	struct h_daemon d;
	pid_t bpid, rpid, dpid;
	int bport = h_backend("http", NULL, &bpid);
	int port = h_free_port(), rport = h_free_port(), aport = h_free_port();
	int dport = h_free_port();
	char global[400], *out;
	long long took;

	rpid = start_redis(rport);
	/* store.test is known to this DNS server alone: only a lookup through
	 * [global] resolver finds the store. */
	dpid = dns_start(dport, "answer store.test 127.0.0.1");
	snprintf(global, sizeof(global), "resolver = 127.0.0.1:%d\n"
	    "resolver_timeout = 500ms\nsession_store = redis://store.test:%d\n"
	    "session_tickets = no\nadmin = 127.0.0.1:%d", dport, rport, aport);
	ck_assert_int_eq(h_daemon_start(&d, "byname", conf(port, bport, global,
	    "leaf")), 0);
	d.keep_ports[0] = rport;
	ck_assert_msg(wait_store_up(aport, '1', 5000), "the store is not up");
	ck_assert_str_eq(handshake(port, "-tls1_2", NULL, "bn1"), "New");
	out = h_run(NULL, "redis-cli -p %d dbsize", rport);
	ck_assert_msg(atoi(out) >= 1, "nothing stored: %s", out);
	free(out);
	/* Now the DNS server takes queries and answers none, and the store
	 * goes away: each worker looks the name up again to reconnect, and
	 * meanwhile serves as if there were no store. */
	stop_pid(dpid);
	dpid = dns_start(dport, "silent");
	stop_redis(rpid);
	ck_assert(h_log_contains(&d, "cannot resolve 'store.test'", 8000));
	ck_assert_str_eq(timed_handshake(port, "-tls1_2", NULL, "bn2"), "New");
	ck_assert_str_eq(timed_handshake(port, "-tls1_2", "bn2", NULL),
	    "Reused");
	ck_assert_int_eq(store_up(aport, &took), '0');
	ck_assert_msg(took < 2000, "a scrape took %lldms", took);
	/* The name servers' sockets come and go with the lookups. */
	d.open_at_stop = 1;
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	stop_pid(dpid);
	kill(bpid, SIGTERM);
}
END_TEST

/* notify_open binds the datagram socket a daemon started next reports to
 * as systemd's, with a watchdog of |watchdog_usec|. */
static int
notify_open(const char *watchdog_usec)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/notify.sock",
	    h_dir());
	unlink(sun.sun_path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	setenv("NOTIFY_SOCKET", sun.sun_path, 1);
	setenv("WATCHDOG_USEC", watchdog_usec, 1);
	return fd;
}

/* watchdog_pings counts the "WATCHDOG=1" reports on |fd| for |ms|. */
static int
watchdog_pings(int fd, int ms)
{
	long long end = h_now_ms() + ms;
	char buf[1024];
	int n = 0;

	while (recv(fd, buf, sizeof(buf), 0) > 0)
		; /* older ones */
	while (h_now_ms() < end) {
		ssize_t len = recv(fd, buf, sizeof(buf) - 1, 0);

		if (len > 0) {
			buf[len] = '\0';
			n += strstr(buf, "WATCHDOG=1") != NULL;
		} else {
			usleep(10000);
		}
	}
	return n;
}

START_TEST(silent_dns_server_stalls_no_worker)
{
	struct h_daemon d;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sin_len = sizeof(sin);
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid);
	int port = h_free_port(), aport = h_free_port();
	int dns, notify, pings;
	char global[400];
	long long took;
	FILE *f;

	/* A DNS server whose port is open and which never reads a query. */
	dns = socket(AF_INET, SOCK_DGRAM, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(dns, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(dns, (struct sockaddr *)&sin, &sin_len),
	    0);
	snprintf(global, sizeof(global), "resolver = 127.0.0.1:%d\n"
	    "resolver_timeout = 1s\nsession_store = redis://store.invalid:%d\n"
	    "admin = 127.0.0.1:%d", ntohs(sin.sin_port), h_free_port(), aport);
	/* Pings every 200ms, which every worker must answer. */
	notify = notify_open("400000");
	ck_assert_int_eq(h_daemon_start(&d, "silentdns", conf(port, bport,
	    global, "leaf")), 0);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	/* The lookup fails after resolver_timeout, twice; the store is down
	 * and the log says why. */
	ck_assert(h_log_contains(&d, "cannot resolve 'store.invalid'", 8000));
	ck_assert_int_eq(store_up(aport, &took), '0');
	ck_assert_msg(took < 2000, "a scrape took %lldms", took);
	/* Handshakes go on without the store, full and resumed by ticket,
	 * while lookups keep being retried. */
	ck_assert_str_eq(timed_handshake(port, "-tls1_2", NULL, "sd12"), "New");
	ck_assert_str_eq(timed_handshake(port, "-tls1_2", "sd12", NULL),
	    "Reused");
	ck_assert_str_eq(timed_handshake(port, "-tls1_3", NULL, "sd13"), "New");
	ck_assert_str_eq(timed_handshake(port, "-tls1_3", "sd13", NULL),
	    "Reused");
	/* Most of 3 s worth of pings must arrive. */
	pings = watchdog_pings(notify, 3000);
	ck_assert_msg(pings >= 8, "%d watchdog pings in 3s", pings);
	/* A reload makes every worker a new store, whose name is looked up
	 * again: the reload and the workers go on meanwhile. */
	strcat(global, "\nsession_store_prefix = other:");
	f = fopen(d.conf, "w");
	ck_assert_ptr_nonnull(f);
	fputs(conf(port, bport, global, "leaf"), f);
	fclose(f);
	kill(d.pid, SIGHUP);
	ck_assert(h_log_contains(&d, "generation 2 published", 3000));
	ck_assert_str_eq(timed_handshake(port, "-tls1_2", NULL, NULL), "New");
	pings = watchdog_pings(notify, 2000);
	ck_assert_msg(pings >= 5, "%d watchdog pings in 2s", pings);
	ck_assert_int_eq(store_up(aport, &took), '0');
	ck_assert_msg(took < 2000, "a scrape took %lldms", took);
	d.open_at_stop = 1; /* the lookups' sockets come and go */
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	close(notify);
	close(dns);
	kill(bpid, SIGTERM);
}
END_TEST

/* mute_redis_start listens on |port| like a Redis server that answers the
 * first command (the SELECT that makes a link ready) of its first
 * |answered| clients, then nothing: it never reads again, so everything
 * sent later stays with the sender. It dies with the test. */
static pid_t
mute_redis_start(int port, int answered)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int one = 1, small = 4096, fd = socket(AF_INET, SOCK_STREAM, 0);
	pid_t pid;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Accepted sockets inherit it: the less the kernel holds, the sooner
	 * what is unanswered shows in the sender's memory. */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Not the test runner's handler, which stops the whole group. */
		signal(SIGTERM, SIG_DFL);
		for (;;) {
			int c = accept(fd, NULL, NULL);
			char buf[256];

			/* Each client stays connected, unread, until we die. */
			if (c >= 0 && answered > 0 && read(c, buf, sizeof(buf)) > 0 &&
			    write(c, "+OK\r\n", 5) == 5)
				answered--;
		}
	}
	close(fd);
	return pid;
}

/* full_handshakes runs |n| TLS 1.2 handshakes, each a new session, 250 at
 * a time; returns how many succeeded. */
static int
full_handshakes(int port, int n)
{
	int ok = 0;

	for (int i = 0; i < n; i += 250) {
		char *out = h_run(NULL, "%s --tls12 --conns 250 127.0.0.1:%d | "
		    "grep -c ok=1", h_bin("client"), port);

		ok += atoi(out);
		free(out);
	}
	return ok;
}

START_TEST(mute_store_keeps_memory_bounded)
{
	struct h_daemon d;
	pid_t bpid, rpid;
	int bport = h_backend("http", NULL, &bpid);
	int port = h_free_port(), rport = h_free_port(), aport = h_free_port();
	char global[400];
	char *grep = h_run(NULL, "grep -c __asan_init %s", h_bin("tlsproxy"));
	int asan = atoi(grep) > 0, n = 5000, ok;
	long rss_n, rss_2n;

	free(grep);
	rpid = mute_redis_start(rport, 1);
	/* One worker, one link: its socket buffers (several MB) fill after a
	 * few thousand sessions, past which they would stay in the daemon.
	 * No local cache, whose growth would hide the store's. */
	snprintf(global, sizeof(global), "session_store = redis://127.0.0.1:%d\n"
	    "session_tickets = no\nsession_cache_size = 0\naccess_log = no\n"
	    "admin = 127.0.0.1:%d", rport, aport);
	ck_assert_int_eq(h_daemon_start(&d, "mute", conf_workers(1, port,
	    bport, global, "leaf")), 0);
	d.keep_ports[0] = rport;
	ck_assert_msg(wait_store_up(aport, '1', 5000), "the store is not up");
	ok = full_handshakes(port, n);
	ck_assert_int_eq(ok, n);
	rss_n = h_rss_kib(d.pid);
	ok = full_handshakes(port, n);
	ck_assert_int_eq(ok, n);
	rss_2n = h_rss_kib(d.pid);
	/* Every session was offered to the store and none answered; what
	 * waits for it is capped, so the second half costs nothing more
	 * (AddressSanitizer's quarantine keeps freed memory resident). */
	ck_assert_msg(asan || rss_2n - rss_n < 768, "RSS grew from %ld KiB "
	    "after %d handshakes to %ld KiB after %d", rss_n, n, rss_2n, 2 * n);
	ck_assert(h_log_contains(&d, "1024 commands unanswered", 0));
	/* Reconnected, it does not answer SELECT either: down it stays. */
	ck_assert_int_eq(store_up(aport, NULL), '0');
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	stop_pid(rpid);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(ticket_keys_shared_and_rotated_through_redis)
{
	struct h_daemon d1, d2;
	pid_t bpid, rpid;
	int bport = h_backend("http", NULL, &bpid);
	int p1 = h_free_port(), p2 = h_free_port(), rport = h_free_port();
	char global[400], *out;

	rpid = start_redis(rport);
	snprintf(global, sizeof(global), "session_store = redis://127.0.0.1:%d"
	    "\nticket_keys = redis\nticket_rotation = 2s\n"
	    "session_timeout = 10s", rport);
	ck_assert_int_eq(h_daemon_start(&d1, "tk1", conf(p1, bport, global,
	    "leaf")), 0);
	ck_assert_int_eq(h_daemon_start(&d2, "tk2", conf(p2, bport, global,
	    "leaf")), 0);
	/* Both instances take the keys from the store (one of them made
	 * them); a ticket from either resumes on the other. */
	ck_assert(h_log_contains(&d1, "keys from the session store", 3000));
	ck_assert(h_log_contains(&d2, "keys from the session store", 3000));
	ck_assert_str_eq(handshake(p1, "-tls1_3", NULL, "x13"), "New");
	ck_assert_str_eq(handshake(p2, "-tls1_3", "x13", NULL), "Reused");
	/* After a rotation, old tickets still resume on both. */
	sleep(3);
	ck_assert_str_eq(handshake(p2, "-tls1_3", "x13", NULL), "Reused");
	ck_assert_str_eq(handshake(p1, "-tls1_3", "x13", NULL), "Reused");
	/* Exactly one instance rotated each time: the store holds one key
	 * list, and the log lines add up to the number of rotations. */
	out = h_run(NULL, "grep -h 'rotated the shared key' %s %s | wc -l",
	    d1.log, d2.log);
	ck_assert_int_ge(atoi(out), 2);
	free(out);
	out = h_run(NULL, "redis-cli -p %d strlen tlsproxy:session:ticket-keys",
	    rport);
	ck_assert_int_ge(atoi(out), 8 + 2 * 48);
	ck_assert_int_eq((atoi(out) - 8) % 48, 0);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d1, 5000), 0);
	ck_assert_int_eq(h_daemon_stop(&d2, 5000), 0);
	stop_redis(rpid);
	kill(bpid, SIGTERM);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("sessions");
	TCase *tc = tcase_create("resumption");

	h_setup("sessions");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, session_ids_and_tickets_resume);
	tcase_add_test(tc, node_sees_resumption);
	tcase_add_test(tc, fleet_shares_and_rotates_ticket_keys);
	tcase_add_test(tc, tickets_off_and_bad_key_files);
	tcase_add_test(tc, reload_keeps_sessions_unless_the_context_changed);
	tcase_add_test(tc, automatic_keys_rotate);
	tcase_add_test(tc, redis_store_shared_by_two_instances);
	tcase_add_test(tc, ticket_keys_shared_and_rotated_through_redis);
	tcase_add_test(tc, store_host_resolved_by_the_configured_resolver);
	tcase_add_test(tc, silent_dns_server_stalls_no_worker);
	tcase_add_test(tc, mute_store_keeps_memory_bounded);
	suite_add_tcase(s, tc);
	return check_run(s);
}
