/* OCSP stapling with ocsp = auto: a real responder (openssl's responder
 * code behind a loopback HTTP server), s_client -status and Node's
 * requestOCSP, revocation, the cache across a restart with the responder
 * down, responder names looked up without blocking, responders that never
 * stop talking. */
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

static int responder_port;

/* The ECDSA certificate of context 'good' got its response: what
 * status() checks (the RSA one has its own line). */
#define ECDSA_GOOD "context 'good' (ECDSA certificate): good response from " \
    "http://"

/* make_pki issues, under the harness CA, leaves whose AIA points at the
 * responder: "good" and "bad" (revoked in the index). */
static void
make_pki(void)
{
	int st;
	char *out;

	responder_port = h_free_port();
	out = h_run(&st, "cd %s && set -e; for n in good bad; do "
	    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
	    "-out $n.key; openssl req -new -key $n.key -out $n.csr "
	    "-subj /CN=$n.ocsp.test; printf \"subjectAltName=DNS:$n.ocsp.test\\n"
	    "authorityInfoAccess=OCSP;URI:http://127.0.0.1:%d/ocsp\\n\" > $n.ext; "
	    "openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key "
	    "-CAcreateserial -days 2 -extfile $n.ext -out $n-only.pem; "
	    "cat $n-only.pem ca.pem > $n.pem; done; "
	    /* The same name with an RSA key, for the context's second
	     * certificate. */
	    "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
	    "-out good-rsa.key 2>/dev/null; openssl req -new -key good-rsa.key "
	    "-out good-rsa.csr -subj /CN=good.ocsp.test; openssl x509 -req -in "
	    "good-rsa.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
	    "-extfile good.ext -out good-rsa-only.pem; "
	    "cat good-rsa-only.pem ca.pem > good-rsa.pem; "
	    "g=$(openssl x509 -in good-only.pem -noout -serial | cut -d= -f2); "
	    "r=$(openssl x509 -in good-rsa-only.pem -noout -serial | cut -d= "
	    "-f2); "
	    "b=$(openssl x509 -in bad-only.pem -noout -serial | cut -d= -f2); "
	    "printf 'V\\t301231235959Z\\t\\t%%s\\tunknown\\t/CN=good.ocsp.test\\n"
	    "V\\t301231235959Z\\t\\t%%s\\tunknown\\t/CN=good.ocsp.test/O=rsa\\n"
	    "R\\t301231235959Z\\t240101000000Z\\t%%s\\tunknown\\t/CN=bad.ocsp."
	    "test\\n' $g $r $b > index.txt; mkdir -p ocsp-cache; "
	    /* A delegated responder, and a signer nobody authorized. */
	    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
	    "-out delegate.key; openssl req -new -key delegate.key -out "
	    "delegate.csr -subj /CN=delegate; printf 'extendedKeyUsage="
	    "OCSPSigning\\n' > delegate.ext; openssl x509 -req -in delegate.csr "
	    "-CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "
	    "delegate.ext -out delegate.pem; openssl genpkey -algorithm EC "
	    "-pkeyopt ec_paramgen_curve:P-256 -out rogue.key; openssl req -x509 "
	    "-new -key rogue.key -out rogue.pem -days 2 -subj /CN=rogue 2>&1",
	    h_dir(), responder_port);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
}

static pid_t start_responder_with(const char *signer, const char *validity,
    const char *flag, const char *flag_arg);

static void
stop_responder(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

static pid_t
start_responder(void)
{
	return start_responder_with("ca", "1", NULL, NULL);
}

static pid_t
start_responder_for(const char *validity)
{
	return start_responder_with("ca", validity, NULL, NULL);
}

static pid_t
start_responder_as(const char *signer)
{
	return start_responder_with(signer, "1", NULL, NULL);
}

/* start_responder_with runs ocsp_responder.py signing as signer, with an
 * optional flag (and its argument) that makes it misbehave. */
static pid_t
start_responder_with(const char *signer, const char *validity,
    const char *flag, const char *flag_arg)
{
	char cmd[1024], line[64] = "";
	FILE *p;
	pid_t pid;
	int fds[2];

	snprintf(cmd, sizeof(cmd), "%s/ocsp_responder.py", getenv(
	    "TLSPROXY_TEST_SRC"));
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	if (pid == 0) {
		char port[16], idx[600], ca[600], cert[600], key[600];

		dup2(fds[1], 1);
		close(fds[0]);
		snprintf(port, sizeof(port), "%d", responder_port);
		snprintf(idx, sizeof(idx), "%s/index.txt", h_dir());
		snprintf(ca, sizeof(ca), "%s/ca.pem", h_dir());
		snprintf(cert, sizeof(cert), "%s/%s.pem", h_dir(), signer);
		snprintf(key, sizeof(key), "%s/%s.key", h_dir(), signer);
		execlp("python3", "python3", cmd, port, idx, ca, cert, key,
		    validity, flag, flag_arg, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	p = fdopen(fds[0], "r");
	if (fgets(line, sizeof(line), p) == NULL)
		line[0] = '\0';
	fclose(p);
	ck_assert_msg(strncmp(line, "listening", 9) == 0, "responder: %s",
	    line);
	return pid;
}

/* conf_with is conf with |extra| lines in [global]. */
static const char *
conf_with(int port, int bport, const char *extra)
{
	static char text[4096];

	snprintf(text, sizeof(text),
	    "[global]\nworkers = 2\nlog_level = debug\n"
	    "ocsp_cache_dir = %s/ocsp-cache\nocsp_timeout = 2s\n%s"
	    "[listener t]\nbind = 127.0.0.1:%d\ncontext = good\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context good]\ncert = %s/good.pem\nkey = %s/good.key\n"
	    "cert = %s/good-rsa.pem\nkey = %s/good-rsa.key\n"
	    "[context bad]\nservername = bad.ocsp.test\ncert = %s/bad.pem\n"
	    "key = %s/bad.key\n"
	    "[context plain]\nservername = localhost\ncert = %s/leaf.pem\n"
	    "key = %s/leaf.key\n",
	    h_dir(), extra, port, bport, h_dir(), h_dir(), h_dir(), h_dir(),
	    h_dir(), h_dir(), h_dir(), h_dir());
	return text;
}

static const char *
conf(int port, int bport)
{
	return conf_with(port, bport, "");
}

static char *
status_sigalgs(int port, const char *sni, const char *sigalgs)
{
	return h_run(NULL, "openssl s_client -connect 127.0.0.1:%d "
	    "-servername %s -status -sigalgs %s </dev/null 2>&1 | grep -E "
	    "'OCSP Response Status|Cert Status|no response sent|Peer "
	    "signature type'", port, sni, sigalgs);
}

static char *
status(int port, const char *sni)
{
	return status_sigalgs(port, sni, "ecdsa_secp256r1_sha256:"
	    "rsa_pss_rsae_sha256");
}

START_TEST(fetched_stapled_and_cached)
{
	struct h_daemon d;
	pid_t bpid, rpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char *out;
	int st;

	make_pki();
	rpid = start_responder();
	ck_assert_int_eq(h_daemon_start(&d, "auto", conf(port, bport)), 0);
	ck_assert(h_log_contains(&d, "ocsp context 'good' (ECDSA certificate): "
	    "good response from http://127.0.0.1:", 5000));
	ck_assert(h_log_contains(&d, "ocsp context 'good' (RSA certificate): "
	    "good response from http://127.0.0.1:", 5000));
	ck_assert(h_log_contains(&d, "ocsp context 'bad' (ECDSA certificate): "
	    "the certificate is REVOKED; stapling it anyway", 5000));
	ck_assert(h_log_contains(&d, "context 'plain': the certificate names no "
	    "OCSP responder: nothing to staple", 0));
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "OCSP Response Status: successful") &&
	    strstr(out, "Cert Status: good"), "%s", out);
	free(out);
	/* The RSA certificate of the same context has its own response. */
	out = status_sigalgs(port, "good.ocsp.test", "rsa_pss_rsae_sha256");
	ck_assert_msg(strstr(out, "Peer signature type: RSA-PSS") &&
	    strstr(out, "Cert Status: good"), "%s", out);
	free(out);
	out = status(port, "bad.ocsp.test");
	ck_assert_msg(strstr(out, "Cert Status: revoked"), "%s", out);
	free(out);
	/* Our BoringSSL client, over both protocol versions. */
	out = h_run(&st, "%s --status --servername good.ocsp.test 127.0.0.1:%d "
	    "&& %s --status --tls12 --servername bad.ocsp.test 127.0.0.1:%d "
	    "&& %s --status --servername localhost 127.0.0.1:%d",
	    h_bin("client"), port, h_bin("client"), port, h_bin("client"),
	    port);
	ck_assert_msg(st == 0, "%s", out);
	{
		char *a = strstr(out, "ocsp="), *b = a ? strstr(a + 5, "ocsp=")
		    : NULL, *c = b ? strstr(b + 5, "ocsp=") : NULL;

		ck_assert_msg(a && b && c && atoi(a + 5) > 100 &&
		    atoi(b + 5) > 100 && atoi(c + 5) == 0, "%s", out);
	}
	free(out);
	out = status(port, "localhost");
	ck_assert_msg(strstr(out, "OCSP response: no response sent"), "%s",
	    out);
	free(out);
	/* Node asks for it too. */
	out = h_run(&st, "node -e \"const tls = require('tls');"
	    "const s = tls.connect({ port: %d, host: '127.0.0.1', servername: "
	    "'good.ocsp.test', requestOCSP: true, rejectUnauthorized: false });"
	    "s.on('OCSPResponse', (r) => { console.log('ocsp=' + r.length); "
	    "s.end(); }); s.on('error', (e) => console.log(e.message));\" 2>&1",
	    port);
	ck_assert_msg(strncmp(out, "ocsp=", 5) == 0 && atoi(out + 5) > 100,
	    "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	/* The responder goes away; a restart staples from the cache. */
	stop_responder(rpid);
	ck_assert_int_eq(h_daemon_start(&d, "cached", conf(port, bport)), 0);
	ck_assert(h_log_contains(&d, "good response from the cache", 3000));
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "Cert Status: good"), "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(responder_down_at_start)
{
	struct h_daemon d;
	pid_t bpid, rpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char text[4096], *out;

	make_pki();
	/* No cache dir this time, and nobody answers at first. */
	snprintf(text, sizeof(text), "%s", conf(port, bport));
	*strstr(text, "ocsp_cache_dir") = '#';
	ck_assert_int_eq(h_daemon_start(&d, "down", text), 0);
	ck_assert(h_log_contains(&d, "no answer from the responder; nothing "
	    "stapled; retrying in 30s", 5000));
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "no response sent"), "%s", out);
	free(out);
	/* It comes up; a reload retries at once what has nothing stapled. */
	rpid = start_responder();
	kill(d.pid, SIGHUP);
	ck_assert(h_log_contains(&d, "generation 2 published", 3000));
	ck_assert(h_log_contains(&d, ECDSA_GOOD, 5000));
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "Cert Status: good"), "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	stop_responder(rpid);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(responder_down_after_a_good_fetch)
{
	struct h_daemon d;
	pid_t bpid, rpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char *out;

	make_pki();
	/* Responses valid one minute: the refresh comes after ~30s. */
	rpid = start_responder_for("1m");
	ck_assert_int_eq(h_daemon_start(&d, "keep", conf(port, bport)), 0);
	ck_assert(h_log_contains(&d, ECDSA_GOOD, 5000));
	stop_responder(rpid);
	ck_assert(h_log_contains(&d, "no answer from the responder; keeping "
	    "the response stapled until it expires", 45000));
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "Cert Status: good"), "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(responses_checked_before_stapling)
{
	struct h_daemon d;
	pid_t bpid, rpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char *out;

	make_pki();
	/* A responder the CA delegated to (EKU OCSPSigning): accepted. */
	rpid = start_responder_as("delegate");
	ck_assert_int_eq(h_daemon_start(&d, "delegate", conf(port, bport)), 0);
	ck_assert(h_log_contains(&d, "ocsp context 'good' (ECDSA certificate): "
	    "good response from http://", 5000));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	stop_responder(rpid);
	/* A signer nobody authorized: rejected, nothing stapled. */
	free(h_run(NULL, "rm -f %s/ocsp-cache/*", h_dir()));
	rpid = start_responder_as("rogue");
	ck_assert_int_eq(h_daemon_start(&d, "rogue", conf(port, bport)), 0);
	ck_assert(h_log_contains(&d, "response rejected: not signed by the "
	    "issuer or a responder it authorized; nothing stapled", 5000));
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "no response sent"), "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	stop_responder(rpid);
	kill(bpid, SIGTERM);
}
END_TEST

/* rejected_live runs the daemon against a responder started with flag and
 * expects reason in the log and nothing stapled for 'good'. */
static void
rejected_live(int port, int bport, const char *flag, const char *flag_arg,
    const char *reason)
{
	struct h_daemon d;
	char want[256], *out;
	pid_t rpid;

	free(h_run(NULL, "rm -f %s/ocsp-cache/*", h_dir()));
	rpid = start_responder_with("ca", "1", flag, flag_arg);
	ck_assert_int_eq(h_daemon_start(&d, flag + 2, conf(port, bport)), 0);
	snprintf(want, sizeof(want), "ocsp context 'good' (ECDSA certificate): "
	    "response rejected: %s; nothing stapled", reason);
	ck_assert(h_log_contains(&d, want, 5000));
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "no response sent"), "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	stop_responder(rpid);
}

START_TEST(wrong_or_stale_responses_rejected)
{
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char other[600];

	make_pki();
	/* The responder answers about the revoked certificate instead. */
	snprintf(other, sizeof(other), "%s/bad-only.pem", h_dir());
	rejected_live(port, bport, "--answer-for", other, "no response for "
	    "this certificate (issuer name, issuer key or serial differ)");
	/* Correctly signed, but its nextUpdate was yesterday. */
	rejected_live(port, bport, "--expired", NULL, "expired (nextUpdate "
	    "has passed)");
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(file_checked_with_ocsp_issuer)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port(), st;
	char text[4096], *out;

	make_pki();
	/* A response kept up to date by someone else, for a certificate
	 * configured without its issuer: ocsp_issuer supplies it. */
	out = h_run(&st, "cd %s && openssl ocsp -issuer ca.pem -cert "
	    "good-only.pem -no_nonce -reqout file-req.der && openssl ocsp "
	    "-index index.txt -CA ca.pem -rsigner ca.pem -rkey ca.key -ndays 1 "
	    "-reqin file-req.der -respout file.der 2>&1", h_dir());
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	snprintf(text, sizeof(text),
	    "[global]\nworkers = 1\n[listener t]\nbind = 127.0.0.1:%d\n"
	    "context = good\nbackend = b\n[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context good]\ncert = %s/good-only.pem\nkey = %s/good.key\n"
	    "ocsp = %s/file.der\nocsp_issuer = %s/ca.pem\n", port, bport,
	    h_dir(), h_dir(), h_dir(), h_dir());
	ck_assert_int_eq(h_daemon_start(&d, "file-issuer", text), 0);
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "Cert Status: good"), "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

/* start_dns_responder runs dns_responder.py answering |name| with
 * 127.0.0.1, its output (the queries it saw) in dns.log, and returns its
 * port. */
static int
start_dns_responder(const char *name, pid_t *out_pid)
{
	char cmd[600], log[600];
	long long end = h_now_ms() + 5000;

	snprintf(cmd, sizeof(cmd), "%s/dns_responder.py", getenv(
	    "TLSPROXY_TEST_SRC"));
	snprintf(log, sizeof(log), "%s/dns.log", h_dir());
	unlink(log);
	*out_pid = fork();
	if (*out_pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		dup2(fd, 1);
		dup2(fd, 2);
		execlp("python3", "python3", cmd, "0", "answer", name,
		    "127.0.0.1", (char *)NULL);
		_exit(127);
	}
	while (h_now_ms() < end) {
		char *out = h_run(NULL, "sed -n 's/^listening //p' '%s' "
		    "2>/dev/null", log);
		int port = atoi(out);

		free(out);
		if (port > 0)
			return port;
		usleep(20000);
	}
	ck_abort_msg("dns_responder.py did not start");
	return -1;
}

/* udp_sink binds a UDP socket on 127.0.0.1 that nobody ever reads: a
 * name server that never answers. Returns it, its port in |out_port|. */
static int
udp_sink(int *out_port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*out_port = ntohs(sin.sin_port);
	return fd;
}

/* count_watchdog reads what the daemon sent to the notify socket |fd|
 * and returns how many watchdog pings were among it. */
static int
count_watchdog(int fd)
{
	char buf[1024];
	ssize_t n;
	int pings = 0;

	while ((n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
		buf[n] = '\0';
		if (strstr(buf, "WATCHDOG=1") != NULL)
			pings++;
	}
	return pings;
}

static const char *
dns_conf(int port, int bport, int admin_port, int dns_port)
{
	static char text[2048];

	snprintf(text, sizeof(text),
	    "[global]\nworkers = 1\nlog_level = debug\nocsp_timeout = 2s\n"
	    "resolver = 127.0.0.1:%d\nresolver_timeout = 1s\n"
	    "admin = 127.0.0.1:%d\n"
	    "[listener t]\nbind = 127.0.0.1:%d\ncontext = good\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n"
	    "[context good]\ncert = %s/good.pem\nkey = %s/good.key\n"
	    "ocsp_responder = http://ocsp.invalid:%d/ocsp\n",
	    dns_port, admin_port, port, bport, h_dir(), h_dir(),
	    responder_port);
	return text;
}

START_TEST(responder_name_lookup_never_blocks)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct h_daemon d;
	pid_t bpid, rpid, dpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	int admin_port = h_free_port(), silent_port, dns_port, sink, notify;
	int pings = 0, rounds = 0, st;
	long long start, t, slowest_tls = 0, slowest_admin = 0;
	char want[300], *out;

	make_pki();
	rpid = start_responder();
	sink = udp_sink(&silent_port);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/notify.sock",
	    h_dir());
	unlink(sun.sun_path);
	notify = socket(AF_UNIX, SOCK_DGRAM, 0);
	ck_assert_int_eq(bind(notify, (struct sockaddr *)&sun, sizeof(sun)),
	    0);
	/* Pings every 300ms. sd_notify blocks once ten messages wait on the
	 * socket, so the test reads it at least every few rounds. */
	setenv("NOTIFY_SOCKET", sun.sun_path, 1);
	setenv("WATCHDOG_USEC", "600000", 1);
	ck_assert_int_eq(h_daemon_start(&d, "dns-silent", dns_conf(port, bport,
	    admin_port, silent_port)), 0);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	/* The responder's name waits on a server that never answers: two
	 * tries of resolver_timeout = 1s. Meanwhile the control thread must
	 * go on answering scrapes and pinging the watchdog, and handshakes
	 * go on. */
	start = h_now_ms();
	count_watchdog(notify);
	snprintf(want, sizeof(want), "ocsp context 'good' (ECDSA "
	    "certificate): cannot resolve the responder host 'ocsp.invalid' "
	    "of http://ocsp.invalid:%d/ocsp: ", responder_port);
	while (!h_log_contains(&d, want, 0) && h_now_ms() - start < 10000) {
		t = h_now_ms();
		out = h_run(&st, "%s --status --servername good.ocsp.test "
		    "127.0.0.1:%d 2>&1", h_bin("client"), port);
		ck_assert_msg(st == 0, "handshake failed: %s", out);
		free(out);
		if (h_now_ms() - t > slowest_tls)
			slowest_tls = h_now_ms() - t;
		t = h_now_ms();
		out = h_run(&st, "curl -sf --max-time 5 "
		    "http://127.0.0.1:%d/metrics | grep -c '^tlsproxy_'",
		    admin_port);
		ck_assert_msg(st == 0 && atoi(out) > 0, "scrape failed: %s",
		    out);
		free(out);
		if (h_now_ms() - t > slowest_admin)
			slowest_admin = h_now_ms() - t;
		pings += count_watchdog(notify);
		rounds++;
		usleep(100000);
	}
	t = h_now_ms() - start;
	pings += count_watchdog(notify);
	ck_assert_msg(h_log_contains(&d, want, 0), "no lookup failure logged "
	    "after %lldms", t);
	ck_assert(h_log_contains(&d, "; nothing stapled; retrying in 30s", 0));
	/* Two tries of 1s each, then the failure: not earlier. */
	ck_assert_msg(t >= 1500, "the lookup failed after %lldms only", t);
	ck_assert_msg(rounds >= 3, "%d rounds of checks in %lldms", rounds, t);
	ck_assert_msg(slowest_tls < 1000 && slowest_admin < 1000, "slowest "
	    "handshake %lldms, slowest scrape %lldms while the lookup waited",
	    slowest_tls, slowest_admin);
	/* 300ms between pings: over the wait, most of them. */
	ck_assert_msg(pings >= t / 300 / 2, "%d watchdog pings in %lldms",
	    pings, t);
	/* From here on nobody reads the pings: without a socket there,
	 * sd_notify fails at once instead of waiting. */
	close(notify);
	unlink(sun.sun_path);

	/* A new fetch waits on the silent server again, and a reload points
	 * the resolver at one that knows the name: the fetch starts over
	 * with it instead of finishing its wait (then 30s of backoff). */
	free(h_run(NULL, "curl -s -X POST http://127.0.0.1:%d/ocsp/refetch",
	    admin_port));
	usleep(300000);
	dns_port = start_dns_responder("ocsp.invalid", &dpid);
	h_write(strrchr(d.conf, '/') + 1, dns_conf(port, bport, admin_port,
	    dns_port));
	kill(d.pid, SIGHUP);
	ck_assert(h_log_contains(&d, "generation 2 published", 3000));
	snprintf(want, sizeof(want), "ocsp context 'good' (ECDSA "
	    "certificate): good response from http://ocsp.invalid:%d/ocsp",
	    responder_port);
	ck_assert(h_log_contains(&d, want, 5000));
	/* Asked of our resolver, which the system's never consults. */
	out = h_run(NULL, "grep -ci 'query ocsp.invalid 1$' %s/dns.log",
	    h_dir());
	ck_assert_msg(atoi(out) >= 1, "%s", out);
	free(out);
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "Cert Status: good"), "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	close(sink);
	kill(dpid, SIGTERM);
	waitpid(dpid, NULL, 0);
	stop_responder(rpid);
	kill(bpid, SIGTERM);
}
END_TEST

/* endless_cut runs the daemon against a responder that streams |mode|'s
 * endless answer: the fetch must fail with |reason| in the log, the
 * daemon's memory stay flat, and handshakes go on. */
static void
endless_cut(int port, int bport, const char *mode, const char *reason)
{
	struct h_daemon d;
	char name[64], want[300], *out;
	long rss_start, rss_end;
	pid_t rpid;
	int st;

	rpid = start_responder_with("ca", "1", "--endless", mode);
	snprintf(name, sizeof(name), "endless-%s", mode);
	/* A short resolver timeout keeps the fetch deadline (name lookup,
	 * then ocsp_timeout) short for the answer that stalls. */
	ck_assert_int_eq(h_daemon_start(&d, name, conf_with(port, bport,
	    "resolver_timeout = 200ms\n")), 0);
	rss_start = h_rss_kib(d.pid);
	/* Long enough for a few hundred megabytes to arrive. */
	usleep(3000000);
	rss_end = h_rss_kib(d.pid);
	ck_assert_msg(rss_end - rss_start < 20 * 1024, "%s: RSS grew from %ld "
	    "to %ld KiB", mode, rss_start, rss_end);
	snprintf(want, sizeof(want), "ocsp context 'good' (ECDSA "
	    "certificate): http://127.0.0.1:%d/ocsp: %s; nothing stapled; "
	    "retrying in 30s", responder_port, reason);
	ck_assert_msg(h_log_contains(&d, want, 5000), "%s: no '%s' in the log",
	    mode, want);
	out = h_run(&st, "%s --status --servername good.ocsp.test 127.0.0.1:%d "
	    "2>&1", h_bin("client"), port);
	ck_assert_msg(st == 0 && strstr(out, "ocsp=0") != NULL, "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	stop_responder(rpid);
}

START_TEST(endless_responses_cut_while_read)
{
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();

	make_pki();
	endless_cut(port, bport, "chunked", "response body malformed or over "
	    "65536 bytes; not read further");
	endless_cut(port, bport, "no-length", "response body malformed or over "
	    "65536 bytes; not read further");
	endless_cut(port, bport, "headers", "malformed response, or its "
	    "headers over 65536 bytes; not read further");
	endless_cut(port, bport, "chunk-line", "no complete response in time");
	kill(bpid, SIGTERM);
}
END_TEST

static int
count_lines(const struct h_daemon *d, const char *needle)
{
	char *out = h_run(NULL, "grep -c '%s' '%s'", needle, d->log);
	int n = atoi(out);

	free(out);
	return n;
}

/* wait_count waits until |needle| is in the log more than |than|
 * times. */
static int
wait_count(const struct h_daemon *d, const char *needle, int than)
{
	for (int i = 0; i < 100; i++) {
		if (count_lines(d, needle) > than)
			return 1;
		usleep(50000);
	}
	return 0;
}

/* A good response for the ECDSA certificate of context good (count_lines
 * quotes its needle in single quotes). */
#define GOOD_LINE "(ECDSA certificate): good response from http:"

/* Every response is fetched again on POST /ocsp/refetch (GET is refused:
 * it is a change) and on a reload. */
START_TEST(refetch_on_admin_request_and_reload)
{
	struct h_daemon d;
	pid_t bpid, rpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	int admin = h_free_port(), n;
	char extra[64], *out;

	make_pki();
	rpid = start_responder();
	snprintf(extra, sizeof(extra), "admin = 127.0.0.1:%d\n", admin);
	ck_assert_int_eq(h_daemon_start(&d, "refetch", conf_with(port, bport,
	    extra)), 0);
	ck_assert(h_log_contains(&d, ECDSA_GOOD, 5000));
	n = count_lines(&d, GOOD_LINE);
	out = h_run(NULL, "curl -s -X POST -w ' %%{http_code}' "
	    "http://127.0.0.1:%d/ocsp/refetch", admin);
	ck_assert_msg(strcmp(out, "fetching 3 OCSP responses\n 202") == 0,
	    "%s", out);
	free(out);
	ck_assert(wait_count(&d, GOOD_LINE, n));
	out = h_run(NULL, "curl -s -o /dev/null -w '%%{http_code}' "
	    "http://127.0.0.1:%d/ocsp/refetch", admin);
	ck_assert_str_eq(out, "405");
	free(out);
	n = count_lines(&d, GOOD_LINE);
	ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
	ck_assert(h_log_contains(&d, "generation 2 published", 5000));
	ck_assert(wait_count(&d, GOOD_LINE, n));
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	stop_responder(rpid);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(staples_survive_an_upgrade)
{
	struct h_daemon d;
	pid_t bpid, rpid, old;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char *c, *line, *out;
	long long end;

	/* The new process is the old one's child: once that exits, the
	 * test reaps it. */
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	make_pki();
	rpid = start_responder();
	/* No cache directory: a staple can only come from the handover. */
	c = strdup(conf(port, bport));
	line = strstr(c, "ocsp_cache_dir = ");
	memmove(line, strchr(line, '\n') + 1, strlen(strchr(line, '\n')));
	ck_assert_int_eq(h_daemon_start(&d, "upgrade", c), 0);
	free(c);
	ck_assert(h_log_contains(&d, ECDSA_GOOD, 5000));
	ck_assert(h_log_contains(&d, "ocsp context 'good' (RSA certificate): "
	    "good response from http://", 5000));
	stop_responder(rpid);
	old = d.pid;
	ck_assert_int_eq(kill(old, SIGUSR2), 0);
	ck_assert(h_log_contains(&d, "upgrade: process ", 10000));
	/* Both of 'good' at least; 'bad' may have its revoked one. */
	out = h_run(NULL, "grep -o 'upgrade: took over .*' '%s'", d.log);
	ck_assert_msg(strstr(out, " 2 staples ") != NULL ||
	    strstr(out, " 3 staples ") != NULL, "%s", out);
	free(out);
	out = h_run(NULL, "grep -o 'upgrade: process [0-9]*' '%s'", d.log);
	d.pid = (pid_t)atoi(out + strlen("upgrade: process "));
	free(out);
	end = h_now_ms() + 10000;
	while (waitpid(old, NULL, WNOHANG) != old && h_now_ms() < end)
		usleep(20000);
	/* Stapled by the new process at once, with the responder down. */
	out = status(port, "good.ocsp.test");
	ck_assert_msg(strstr(out, "Cert Status: good") != NULL, "%s", out);
	free(out);
	d.base_fds = h_num_fds(d.pid);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(refreshes_keep_memory_flat)
{
	struct h_daemon d;
	pid_t bpid, rpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	long rss_early = 0, rss_end;
	int done = 0, admin = h_free_port();
	char extra[64], cmd[128];

	make_pki();
	rpid = start_responder();
	snprintf(extra, sizeof(extra), "admin = 127.0.0.1:%d\n", admin);
	ck_assert_int_eq(h_daemon_start(&d, "cycles", conf_with(port, bport,
	    extra)), 0);
	ck_assert(h_log_contains(&d, ECDSA_GOOD, 5000));
	/* Each refetch fetches every response: 1,000 fetch, verify, staple
	 * and persist cycles per certificate. */
	snprintf(cmd, sizeof(cmd), "curl -s -o /dev/null -X POST "
	    "http://127.0.0.1:%d/ocsp/refetch", admin);
	while (done < 1000) {
		for (int i = 0; i < 25; i++) {
			ck_assert_int_eq(system(cmd), 0);
			usleep(10000);
		}
		/* One certificate's fetches. */
		done = count_lines(&d, "(ECDSA certificate): good response "
		    "from http:");
		if (rss_early == 0 && done >= 100)
			rss_early = h_rss_kib(d.pid);
	}
	rss_end = h_rss_kib(d.pid);
#if !defined(__SANITIZE_ADDRESS__)
	/* Under AddressSanitizer freed memory sits in its quarantine, so RSS
	 * says nothing there; LeakSanitizer checks that build at exit. */
	ck_assert_msg(rss_end - rss_early < 1024, "RSS grew from %ld KiB "
	    "after 100 refreshes to %ld KiB after %d", rss_early, rss_end, done);
#else
	(void)rss_early;
	(void)rss_end;
#endif
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	stop_responder(rpid);
	kill(bpid, SIGTERM);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("stapling");
	TCase *tc = tcase_create("stapling");

	h_setup("stapling");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, fetched_stapled_and_cached);
	tcase_add_test(tc, responder_down_at_start);
	tcase_add_test(tc, responder_down_after_a_good_fetch);
	tcase_add_test(tc, responses_checked_before_stapling);
	tcase_add_test(tc, wrong_or_stale_responses_rejected);
	tcase_add_test(tc, file_checked_with_ocsp_issuer);
	tcase_add_test(tc, refreshes_keep_memory_flat);
	tcase_add_test(tc, refetch_on_admin_request_and_reload);
	tcase_add_test(tc, staples_survive_an_upgrade);
	tcase_add_test(tc, responder_name_lookup_never_blocks);
	tcase_add_test(tc, endless_responses_cut_while_read);
	suite_add_tcase(s, tc);
	return check_run(s);
}
