/* TLS to backends ("the tls.connect half") end to end: the real daemon in
 * front of real TLS servers on loopback (openssl s_server, nginx, and a
 * second tlsproxy where half-closes must survive)
 * with certificates made at startup: chain, expiry and RFC 6125 name
 * checks, tls_verify = no, failover to the next address, client
 * certificates, ALPN pass-through, session resumption seen by both ends,
 * bulk data with half-closes both ways, bounded memory against stalled
 * peers, the PROXY header ahead of the handshake, and bad files at reload
 * and in tlsproxy -t. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
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

/* ---- Expected strings. The feature is being written in parallel and its
 * exact wording may still move: everything the tests match lives here. */
/* The access-log field, right after backend=. */
#define BTLS_FIELD "backend_tls"
/* Its value: "-" or VERSION,CIPHER,new|resumed,verified|unverified. */
#define BTLS_NONE "-"
#define BTLS_NEW ",new,"
#define BTLS_RESUMED ",resumed,"
#define BTLS_VERIFIED ",verified"
#define BTLS_UNVERIFIED ",unverified"
/* reason="..." once every address failed; the warning per address. */
#define R_PREFIX "backend tls: "
#define R_EXPIRED R_PREFIX "certificate has expired"
#define R_UNTRUSTED R_PREFIX "unable to get local issuer certificate"
#define R_MISMATCH_FMT R_PREFIX "name mismatch (expected %s)"
/* An ALPN refusal: the reason names ALPN (case-insensitively), either as
 * "alpn" or by the alert's own name (no_application_protocol). */
#define R_ALPN_1 "alpn"
#define R_ALPN_2 "application protocol"
#define R_ALPN_3 "application_protocol"
/* "conn N: backend 'NAME' address A: backend tls: ..." */
#define W_FAILED_FMT "backend '%s' address %s: " R_PREFIX
/* /metrics series. */
#define M_HANDSHAKES_FMT \
	"tlsproxy_backend_tls_handshakes_total{backend=\"%s\",resumed=\"%s\"}"
#define M_FAILURES_FMT \
	"tlsproxy_backend_tls_failures_total{backend=\"%s\",reason=\"%s\"}"
/* tlsproxy -t and reload errors: "FILE:LINE: key 'KEY': ..." as for every
 * other key. */
#define E_KEY_FMT "%s:%d: key '%s'"

/* The backend servers' names. */
#define API "api.example.test"

/* Certificates for the backends, beside the harness's (ca.pem, leaf.pem
 * for localhost and 127.0.0.1):
 *   bca       the backends' CA, the one tls_ca trusts
 *   rogue     a CA nobody trusts
 *   cca       the CA backends check client certificates against
 *   api       CN and DNS SAN api.example.test, by bca
 *   rogue-api the same names, by rogue
 *   expired   api.example.test by bca, valid in January 2020 only
 *   cnonly    CN api.example.test, DNS SAN other.example.test only
 *   dnsip     127.0.0.1 as a DNS SAN and CN, no IP SAN
 *   ipsan     IP SAN 127.0.0.1 only
 *   wild      DNS SAN *.example.test
 *   client    "btls client" by cca: tlsproxy's client certificate
 *   cca2      a second client CA
 *   client2   "btls client two" by cca2 (ECDSA)
 *   rsaclient "btls rsa client" by cca, an RSA key
 *   garbage.pem  not PEM at all
 *   bca.crl, bca-revoked.crl  bca's CRLs: none revoked, api revoked
 * The expired one needs dates in the past: openssl ca takes -startdate
 * and -enddate (OpenSSL 3.0's x509 has no -not_before). */
static const char gen_script[] =
    "set -e\n"
    "ca() {\n"
    "  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "-keyout \"$1.key\" -out \"$1.pem\" -days 2 -subj \"/CN=$2\"\n"
    "}\n"
    "leaf() {\n"
    "  printf 'subjectAltName=%s\\n' \"$3\" > \"$1.ext\"\n"
    "  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "-keyout \"$1.key\" -out \"$1.csr\" -subj \"/CN=$2\"\n"
    "  openssl x509 -req -in \"$1.csr\" -CA \"$4.pem\" -CAkey \"$4.key\" "
    "-CAcreateserial -days 2 -extfile \"$1.ext\" -out \"$1.pem\"\n"
    "}\n"
    "ca bca 'backend test CA'\n"
    "ca rogue 'rogue CA'\n"
    "ca cca 'backend client CA'\n"
    "leaf api " API " DNS:" API " bca\n"
    "leaf rogue-api " API " DNS:" API " rogue\n"
    "leaf cnonly " API " DNS:other.example.test bca\n"
    "leaf dnsip 127.0.0.1 DNS:127.0.0.1 bca\n"
    "leaf ipsan 127.0.0.1 IP:127.0.0.1 bca\n"
    "leaf wild '*.example.test' 'DNS:*.example.test' bca\n"
    "leaf client 'btls client' DNS:btls-client cca\n"
    "ca cca2 'second client CA'\n"
    "leaf client2 'btls client two' DNS:btls-client2 cca2\n"
    "openssl req -newkey rsa:2048 -nodes -keyout rsaclient.key "
    "-out rsaclient.csr -subj '/CN=btls rsa client'\n"
    "openssl x509 -req -in rsaclient.csr -CA cca.pem -CAkey cca.key "
    "-CAcreateserial -days 2 -out rsaclient.pem\n"
    "printf 'subjectAltName=DNS:" API "\\n' > expired.ext\n"
    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "-keyout expired.key -out expired.csr -subj /CN=" API "\n"
    "mkdir -p ca-db && : > ca-db/index.txt && echo 1000 > ca-db/serial\n"
    "printf '[ca]\\ndefault_ca = d\\n[d]\\ndatabase = ca-db/index.txt\\n"
    "new_certs_dir = ca-db\\nserial = ca-db/serial\\ndefault_md = sha256\\n"
    "unique_subject = no\\n"
    "policy = p\\n[p]\\ncommonName = supplied\\n' > ca-db/ca.cnf\n"
    "openssl ca -batch -config ca-db/ca.cnf -cert bca.pem -keyfile bca.key "
    "-in expired.csr -out expired.pem -startdate 200101000000Z "
    "-enddate 200201000000Z -extfile expired.ext -notext\n"
    /* CRLs of bca: one revoking nothing, one revoking api. */
    "openssl ca -config ca-db/ca.cnf -cert bca.pem -keyfile bca.key "
    "-gencrl -crldays 2 -out bca.crl\n"
    "openssl ca -config ca-db/ca.cnf -cert bca.pem -keyfile bca.key "
    "-revoke api.pem\n"
    "openssl ca -config ca-db/ca.cnf -cert bca.pem -keyfile bca.key "
    "-gencrl -crldays 2 -out bca-revoked.crl\n"
    "printf 'this is not a certificate\\n' > garbage.pem\n"
    "mkdir -p nginx\n";

/* Setup runs outside any test: failures exit with the reason. */
static void
make_files(void)
{
	char path[600], *out;
	FILE *f;
	int st;

	/* Not h_write: its checks only work inside a test. */
	snprintf(path, sizeof(path), "%s/gen-btls.sh", h_dir());
	f = fopen(path, "w");
	if (f == NULL || fputs(gen_script, f) < 0) {
		fprintf(stderr, "test_backend_tls setup: cannot write %s\n", path);
		exit(1);
	}
	fclose(f);
	out = h_run(&st, "cd '%s' && sh gen-btls.sh 2>&1", h_dir());
	if (st != 0) {
		fprintf(stderr, "test_backend_tls setup: making certificates "
		    "failed: %s\n", out);
		exit(1);
	}
	free(out);
}

/* ---- Servers. */

/* spawn runs |cmd| through sh with stdout and stderr to |log|, dying with
 * the test process (Check forks one per test). */
/* Under AddressSanitizer, freed memory waits in a quarantine before it is
 * reused, so every TLS record that passes leaves its buffers in the RSS
 * for a while: growth says nothing about what the daemon holds. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_MEANINGFUL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_MEANINGFUL 0
#endif
#endif
#ifndef RSS_MEANINGFUL
#define RSS_MEANINGFUL 1
#endif

static pid_t
spawn(const char *log, const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	pid_t pid;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (freopen(log, "a", stdout) == NULL ||
		    dup2(fileno(stdout), STDERR_FILENO) < 0)
			_exit(126);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static int
port_open(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	close(fd);
	return ok;
}

/* wait_port waits until 127.0.0.1:|port| accepts, failing the test if
 * |pid| exits first (a bad option, a bad config: its log says why). */
static void
wait_port(pid_t pid, int port, const char *log)
{
	for (int i = 0; i < 200; i++) {
		int st;

		if (port_open(port))
			return;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			char *out = h_run(NULL, "cat '%s'", log);

			ck_abort_msg("server for port %d exited: %s", port, out);
		}
		usleep(25000);
	}
	ck_abort_msg("nothing listens on port %d", port);
}

static void
stop(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
}

/* s_server starts openssl s_server -www on a free port with certificate
 * |cert| (a base name in the scratch dir) and |extra| options, logging to
 * s_server-PORT.log. -www answers any GET with an HTML page about the
 * session, which is what the client gets back through tlsproxy. */
static pid_t
s_server(int *port, const char *cert, const char *extra)
{
	char log[600];
	pid_t pid;

	*port = h_free_port();
	snprintf(log, sizeof(log), "%s/s_server-%d.log", h_dir(), *port);
	pid = spawn(log, "cd %s && exec openssl s_server -accept 127.0.0.1:%d "
	    "-cert %s.pem -key %s.key -www %s", h_dir(), *port, cert, cert,
	    extra != NULL ? extra : "");
	wait_port(pid, *port, log);
	return pid;
}

static char *
s_server_log(int port)
{
	return h_run(NULL, "cat %s/s_server-%d.log", h_dir(), port);
}

/* nginx starts nginx in the foreground as a single process (so it dies
 * with the test), with |http| servers in an http block that logs
 * $ssl_session_reused, SNI, ALPN and the PROXY address to
 * nginx/access.log, and |stream| servers in a stream block (the module is
 * dynamic in Debian's build). nginx 1.22 leaves TLS 1.3 off by default:
 * turn it on. Waits for |port|. */
static pid_t
nginx(const char *http, const char *stream, int port)
{
	char conf[8192], path[600], log[600];
	const char *d = h_dir();
	pid_t pid;

	snprintf(conf, sizeof(conf),
	    "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n"
	    "worker_processes 1;\nmaster_process off;\ndaemon off;\n"
	    "error_log %s/nginx/error.log info;\npid %s/nginx/nginx.pid;\n"
	    "events { worker_connections 256; }\n"
	    "http {\n"
	    " log_format btls 'reused=$ssl_session_reused "
	    "sni=$ssl_server_name alpn=$ssl_alpn_protocol "
	    "proto=$ssl_protocol pp=$proxy_protocol_addr';\n"
	    " access_log %s/nginx/access.log btls;\n"
	    " client_body_temp_path %s/nginx;\n proxy_temp_path %s/nginx;\n"
	    " fastcgi_temp_path %s/nginx;\n uwsgi_temp_path %s/nginx;\n"
	    " scgi_temp_path %s/nginx;\n"
	    " ssl_protocols TLSv1.2 TLSv1.3;\n"
	    " ssl_certificate %s/api.pem;\n ssl_certificate_key %s/api.key;\n"
	    " ssl_session_cache shared:btls:1m;\n ssl_session_tickets on;\n"
	    "%s\n}\n"
	    "stream {\n proxy_half_close on;\n"
	    " ssl_protocols TLSv1.2 TLSv1.3;\n"
	    " ssl_certificate %s/api.pem;\n ssl_certificate_key %s/api.key;\n"
	    "%s\n}\n",
	    d, d, d, d, d, d, d, d, d, d, http != NULL ? http : "", d, d,
	    stream != NULL ? stream : "");
	snprintf(path, sizeof(path), "%s", h_write("nginx/nginx.conf", conf));
	/* The logs are read by the test that started this nginx: start them
	 * afresh. */
	free(h_run(NULL, "rm -f %s/nginx/access.log %s/nginx/error.log", d, d));
	snprintf(log, sizeof(log), "%s/nginx/stderr.log", d);
	pid = spawn(log, "exec nginx -p %s/nginx -c %s", d, path);
	wait_port(pid, port, log);
	return pid;
}

static char *
nginx_log(void)
{
	return h_run(NULL, "cat %s/nginx/access.log 2>/dev/null", h_dir());
}

/* terminator runs a second tlsproxy that terminates TLS (certificate
 * api) on |port| in front of a plain backend on |bport|: a TLS peer that
 * maps close_notify and TCP half-close onto each other in both
 * directions. nginx's stream proxy ends its side without close_notify,
 * and stunnel, when its plain side closes while echoed bytes are still
 * unread, drops them (its log then says fewer bytes "sent to TLS" than
 * it read): neither can carry the bulk and half-close checks. */
static pid_t
terminator(int port, int bport)
{
	char conf[2048], path[600], log[600], name[64];
	pid_t pid;

	snprintf(conf, sizeof(conf),
	    "[global]\nworkers = 1\nlog_level = warning\naccess_log = no\n"
	    "[listener t]\nbind = 127.0.0.1:%d\ncontext = api\nbackend = p\n"
	    "[backend p]\naddress = 127.0.0.1:%d\n"
	    "[context api]\ncert = %s/api.pem\nkey = %s/api.key\n",
	    port, bport, h_dir(), h_dir());
	snprintf(name, sizeof(name), "terminator-%d.conf", port);
	snprintf(path, sizeof(path), "%s", h_write(name, conf));
	snprintf(log, sizeof(log), "%s/terminator-%d.log", h_dir(), port);
	pid = spawn(log, "exec %s -c %s", h_bin("tlsproxy"), path);
	wait_port(pid, port, log);
	return pid;
}

/* ---- The daemon. */

struct btls {
	struct h_daemon d;
	int admin;
};

/* conf is a one-listener config (context with ALPN h2 and http/1.1, so
 * that pass-through has something to pass) whose backend "b" has
 * |backend| lines (address included), with |global| lines. */
static const char *
conf(const struct btls *t, const char *backend, const char *global)
{
	static char text[4096];

	snprintf(text, sizeof(text),
	    "[global]\n%slog_level = debug\nadmin = 127.0.0.1:%d\n"
	    "%s\n"
	    "[listener l]\nbind = 127.0.0.1:%d\ncontext = main\nbackend = b\n"
	    "[backend b]\nconnect_timeout = 2s\n%s\n"
	    "[context main]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n"
	    "alpn = h2, http/1.1\n",
	    global != NULL && strstr(global, "workers") != NULL ? "" :
	    "workers = 2\n", t->admin, global != NULL ? global : "",
	    t->d.port, backend,
	    h_dir(), h_dir());
	return text;
}

static void
start(struct btls *t, const char *name, const char *backend,
    const char *global)
{
	int port = h_free_port();

	t->admin = h_free_port();
	t->d.port = port;
	if (h_daemon_start(&t->d, name, conf(t, backend, global)) != 0) {
		char *log = h_run(NULL, "tail -n 20 '%s'", t->d.log);

		ck_abort_msg("tlsproxy did not start: %s", log);
	}
	t->d.port = port;
}

static void
finish(struct btls *t)
{
	ck_assert_int_eq(h_daemon_stop(&t->d, 10000), 0);
}

/* get fetches / through the daemon with curl over HTTP/1.1 and returns
 * what came back (the body, or curl's error). */
static char *
get(const struct btls *t, const char *path)
{
	return h_run(NULL, "curl -sS --http1.1 --max-time 15 --cacert %s/ca.pem "
	    "https://localhost:%d%s 2>&1", h_dir(), t->d.port, path);
}

/* conn_line returns the |n|th access-log line (1-based), waiting for it:
 * it is written when the connection ends, which the client may see a
 * moment earlier. */
static char *
conn_line(const struct btls *t, int n)
{
	char *out = NULL;

	for (int i = 0; i < 150; i++) {
		free(out);
		out = h_run(NULL, "grep 'conn id=' '%s' | sed -n '%dp'", t->d.log,
		    n);
		if (out[0] != '\0')
			return out;
		usleep(20000);
	}
	ck_abort_msg("no access-log line %d in %s", n, t->d.log);
	return out;
}

/* reason returns the quoted reason="..." of an access-log line. */
static const char *
reason(const char *line)
{
	static char val[512];
	const char *p = strstr(line, " reason=\"");
	size_t n = 0;

	if (p == NULL)
		return "";
	p += 9;
	while (p[n] != '\0' && p[n] != '"' && n < sizeof(val) - 1)
		n++;
	memcpy(val, p, n);
	val[n] = '\0';
	return val;
}

/* check_btls asserts the backend_tls field of |line|: "-" if |want| is
 * NULL, else that it has every comma-separated part of |want| ("TLSv1.3,"
 * ",new," ",verified"...). backend_tls comes right after backend=. */
static void
check_btls(const char *line, const char *const *want)
{
	const char *v = h_field(line, BTLS_FIELD);
	const char *b = strstr(line, " backend=");

	ck_assert_msg(v != NULL, "no " BTLS_FIELD "= in: %s", line);
	ck_assert_msg(b != NULL && strncmp(strchr(b + 1, ' '), " " BTLS_FIELD
	    "=", strlen(BTLS_FIELD) + 2) == 0,
	    BTLS_FIELD "= does not follow backend=: %s", line);
	if (want == NULL) {
		ck_assert_msg(strcmp(v, BTLS_NONE) == 0, "%s", line);
		return;
	}
	for (; *want != NULL; want++) {
		char val[512];
		size_t n = strlen(*want);

		/* ",verified" must end the value, not match ",unverified". */
		snprintf(val, sizeof(val), "%s", h_field(line, BTLS_FIELD));
		if ((*want)[0] == ',' && strcmp(*want, BTLS_VERIFIED) == 0)
			ck_assert_msg(strlen(val) >= n &&
			    strcmp(val + strlen(val) - n, *want) == 0,
			    "want %s at the end: %s", *want, line);
		else
			ck_assert_msg(strstr(val, *want) != NULL, "want %s in: %s",
			    *want, line);
	}
}

/* metric returns the value of the /metrics sample named exactly by
 * printf(|fmt|, backend, label), or -1 if there is none. */
static double
metric(const struct btls *t, const char *fmt, const char *label)
{
	char series[256], *text;
	double v = -1;
	size_t n;

	snprintf(series, sizeof(series), fmt, "b", label);
	n = strlen(series);
	text = h_run(NULL, "curl -sf http://127.0.0.1:%d/metrics", t->admin);
	for (const char *p = text; p != NULL && *p != '\0';) {
		if (strncmp(p, series, n) == 0 && p[n] == ' ') {
			v = atof(p + n + 1);
			break;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	free(text);
	return v;
}

/* wait_metric polls until the sample reaches |want| and returns it. */
static double
wait_metric(const struct btls *t, const char *fmt, const char *label,
    double want)
{
	double v = -1;

	for (int i = 0; i < 50; i++) {
		v = metric(t, fmt, label);
		if (v >= want)
			break;
		usleep(50000);
	}
	return v;
}

/* warning formats the daemon's warning for a failed address
 * 127.0.0.1:|port| with the access log's |reason|. */
static void
warning(char *buf, size_t len, int port, const char *why)
{
	char addr[64];

	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	snprintf(buf, len, W_FAILED_FMT "%s", "b", addr,
	    why + strlen(R_PREFIX));
}

/* The page s_server -www sends: proof the request reached it. */
#define S_SERVER_PAGE "Ciphers supported in s_server binary"

/* api_backend writes backend lines for a TLS backend on |port| that is
 * trusted through bca and named api.example.test, plus |extra| lines. */
static void
api_backend(char *buf, size_t len, int port, const char *extra)
{
	snprintf(buf, len, "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/bca.pem\ntls_servername = " API "\n%s", port, h_dir(),
	    extra);
}

/* expect_refused: a backend presenting |cert| (with s_server |extra|) and
 * the daemon's backend |lines| (after address and tls = yes) is refused:
 * the client gets nothing from it, the access log says |want_reason| and
 * backend_tls=-, the address is named in a warning, and the failure is
 * counted under |metric_reason|. */
static void
expect_refused(const char *name, const char *cert, const char *extra,
    const char *lines, const char *want_reason, const char *metric_reason)
{
	struct btls t;
	char backend[1024], warn[256], *out, *line;
	int sport;
	pid_t spid = s_server(&sport, cert, extra);

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "%s", sport, lines);
	start(&t, name, backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) == NULL,
	    "the request got through: %s", out);
	free(out);
	line = conn_line(&t, 1);
	ck_assert_msg(strcmp(reason(line), want_reason) == 0,
	    "reason: want \"%s\": %s", want_reason, line);
	check_btls(line, NULL);
	free(line);
	warning(warn, sizeof(warn), sport, want_reason);
	ck_assert_msg(h_log_contains(&t.d, warn, 2000), "no '%s' in the log",
	    warn);
	ck_assert_msg(wait_metric(&t, M_FAILURES_FMT, metric_reason, 1) == 1,
	    M_FAILURES_FMT " is not 1", "b", metric_reason);
	ck_assert_msg(metric(&t, M_HANDSHAKES_FMT, "no") <= 0,
	    "a refused handshake was counted as done");
	finish(&t);
	stop(spid);
}

/* ---- Verification. */

/* The reference case: a chain to tls_ca and the configured name pass; the
 * page comes back, the access log has the version, the cipher, "new" and
 * "verified", and the handshake is counted. */
START_TEST(trusted_chain_passes)
{
	static const char *const want[] = { "TLSv1.3,", "TLS_", BTLS_NEW,
		BTLS_VERIFIED, NULL };
	struct btls t;
	char backend[512], *out, *line;
	int sport;
	pid_t spid = s_server(&sport, "api", NULL);

	api_backend(backend, sizeof(backend), sport, "");
	start(&t, "trusted", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "%s", out);
	/* s_server saw a TLS 1.3 session: the bytes went over TLS. */
	ck_assert_msg(strstr(out, "New, TLSv1.3, Cipher is") != NULL, "%s", out);
	free(out);
	line = conn_line(&t, 1);
	ck_assert_msg(strcmp(reason(line), "done") == 0, "%s", line);
	check_btls(line, want);
	free(line);
	ck_assert_int_eq(wait_metric(&t, M_HANDSHAKES_FMT, "no", 1), 1);
	finish(&t);
	stop(spid);
}
END_TEST

/* After the first handshake with an address, the next ClientHello
 * carries a key share only for the group that address chose: a backend
 * without ML-KEM (OpenSSL 3.0's s_server) costs no post-quantum key
 * generation from then on. */
START_TEST(learned_group_is_the_only_key_share)
{
	struct btls t;
	char backend[512], *out;
	int sport, st;
	pid_t spid = s_server(&sport, "api", "-trace");

	api_backend(backend, sizeof(backend), sport, "");
	/* One worker: what an address chose is remembered per worker. */
	start(&t, "keyshare", backend, "workers = 1\n");
	for (int i = 0; i < 2; i++) {
		out = get(&t, "/");
		ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "%s", out);
		free(out);
	}
	/* The NamedGroup lines of each ClientHello's key_share, in order. */
	out = h_run(&st, "grep -A4 'extension_type=key_share' "
	    "%s/s_server-%d.log | grep -o 'NamedGroup: [^ ]*' | tr '\\n' ' '",
	    h_dir(), sport);
	if (h_has_mlkem())
		/* ClientHello (hybrid, X25519), ServerHello (X25519), then
		 * a ClientHello with X25519 alone. */
		ck_assert_msg(strncmp(out, "NamedGroup: UNKNOWN NamedGroup: "
		    "ecdh_x25519 NamedGroup: ecdh_x25519 NamedGroup: ecdh_x25519",
		    strlen("NamedGroup: UNKNOWN NamedGroup: ecdh_x25519 "
		    "NamedGroup: ecdh_x25519 NamedGroup: ecdh_x25519")) == 0 &&
		    strstr(out + 20, "UNKNOWN") == NULL, "%s", out);
	else
		ck_assert_msg(strstr(out, "ecdh_x25519") != NULL, "%s", out);
	free(out);
	finish(&t);
	stop(spid);
}
END_TEST

/* A plaintext backend logs backend_tls=- (and is counted nowhere). */
START_TEST(plaintext_backend_logs_dash)
{
	struct btls t;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid);
	char backend[256], *out, *line;

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\n", bport);
	start(&t, "plain", backend, NULL);
	out = get(&t, "/p");
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /p\n");
	free(out);
	line = conn_line(&t, 1);
	check_btls(line, NULL);
	free(line);
	ck_assert_msg(metric(&t, M_HANDSHAKES_FMT, "no") <= 0,
	    "a plaintext backend counted a TLS handshake");
	finish(&t);
	stop(bpid);
}
END_TEST

/* With no tls_servername, a backend address that is a host name is both
 * the SNI and the name checked; an IP address sends no SNI and is checked
 * against IP SANs. The harness's leaf has DNS:localhost and IP:127.0.0.1;
 * nginx reports the SNI it got. */
START_TEST(default_servername_from_the_address)
{
	struct btls t;
	int nport = h_free_port();
	char http[512], backend[512], *out;
	pid_t npid;

	snprintf(http, sizeof(http), " server {\n  listen 127.0.0.1:%d ssl;\n"
	    "  ssl_certificate %s/leaf.pem;\n  ssl_certificate_key %s/leaf.key;\n"
	    "  location / { return 200 \"sni=[$ssl_server_name]\\n\"; }\n }\n",
	    nport, h_dir(), h_dir());
	npid = nginx(http, NULL, nport);

	snprintf(backend, sizeof(backend), "address = localhost:%d\ntls = yes\n"
	    "tls_ca = %s/ca.pem\n", nport, h_dir());
	start(&t, "defname", backend, NULL);
	out = get(&t, "/");
	ck_assert_str_eq(out, "sni=[localhost]\n");
	free(out);
	finish(&t);

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/ca.pem\n", nport, h_dir());
	start(&t, "defip", backend, NULL);
	out = get(&t, "/");
	ck_assert_str_eq(out, "sni=[]\n");
	free(out);
	out = conn_line(&t, 1);
	ck_assert_msg(strstr(h_field(out, BTLS_FIELD), BTLS_VERIFIED) != NULL,
	    "%s", out);
	free(out);
	finish(&t);

	/* tls_servername = none: no SNI, but tls_verify_name still checks. */
	snprintf(backend, sizeof(backend), "address = localhost:%d\ntls = yes\n"
	    "tls_ca = %s/ca.pem\ntls_servername = none\n"
	    "tls_verify_name = localhost\n", nport, h_dir());
	start(&t, "nosni", backend, NULL);
	out = get(&t, "/");
	ck_assert_str_eq(out, "sni=[]\n");
	free(out);
	finish(&t);
	stop(npid);
}
END_TEST

/* A chain to a CA tls_ca does not hold: refused. The server sends only
 * its leaf, so the chain stops at an unknown issuer. */
START_TEST(untrusted_ca_refused)
{
	char lines[512];

	snprintf(lines, sizeof(lines), "tls_ca = %s/bca.pem\n"
	    "tls_servername = " API "\n", h_dir());
	expect_refused("untrusted", "rogue-api", NULL, lines, R_UNTRUSTED,
	    "certificate");
}
END_TEST

START_TEST(expired_certificate_refused)
{
	char lines[512];

	snprintf(lines, sizeof(lines), "tls_ca = %s/bca.pem\n"
	    "tls_servername = " API "\n", h_dir());
	expect_refused("expired", "expired", NULL, lines, R_EXPIRED,
	    "certificate");
}
END_TEST

/* With tls_crl, a certificate its CA revoked is refused; the same chain
 * passes with a CRL that revokes nothing. */
START_TEST(revoked_certificate_refused)
{
	struct btls t;
	char lines[512], backend[1024], *out;
	int sport;
	pid_t spid;

	snprintf(lines, sizeof(lines), "tls_ca = %s/bca.pem\n"
	    "tls_crl = %s/bca-revoked.crl\ntls_servername = " API "\n",
	    h_dir(), h_dir());
	expect_refused("revoked", "api", NULL, lines, R_PREFIX
	    "certificate revoked", "certificate");
	spid = s_server(&sport, "api", NULL);
	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/bca.pem\ntls_crl = %s/bca.crl\ntls_servername = "
	    API "\n", sport, h_dir(), h_dir());
	start(&t, "crlok", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "%s", out);
	free(out);
	finish(&t);
	stop(spid);
}
END_TEST

/* A good chain for another name. */
START_TEST(name_mismatch_refused)
{
	char lines[512], want[256];

	snprintf(lines, sizeof(lines), "tls_ca = %s/bca.pem\n"
	    "tls_servername = www.example.test\n", h_dir());
	snprintf(want, sizeof(want), R_MISMATCH_FMT, "www.example.test");
	expect_refused("mismatch", "api", NULL, lines, want, "name");
}
END_TEST

/* RFC 6125: the CN is not looked at when there is a DNS SAN, even if the
 * CN is exactly the name wanted. */
START_TEST(common_name_ignored_beside_dns_san)
{
	char lines[512], want[256];

	snprintf(lines, sizeof(lines), "tls_ca = %s/bca.pem\n"
	    "tls_servername = " API "\n", h_dir());
	snprintf(want, sizeof(want), R_MISMATCH_FMT, API);
	expect_refused("cnonly", "cnonly", NULL, lines, want, "name");
}
END_TEST

/* An IP address is checked against IP SANs only: a certificate carrying
 * "127.0.0.1" as a DNS name (and CN) does not vouch for the address,
 * while one with the IP SAN does. */
START_TEST(ip_address_against_dns_only_refused)
{
	struct btls t;
	char lines[512], want[256], backend[1024], *out;
	int sport;
	pid_t spid;

	snprintf(lines, sizeof(lines), "tls_ca = %s/bca.pem\n", h_dir());
	snprintf(want, sizeof(want), R_MISMATCH_FMT, "127.0.0.1");
	expect_refused("dnsip", "dnsip", NULL, lines, want, "name");

	spid = s_server(&sport, "ipsan", NULL);
	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "%s", sport, lines);
	start(&t, "ipsan", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "IP SAN: %s", out);
	free(out);
	finish(&t);
	stop(spid);
}
END_TEST

/* A wildcard stands for the whole leftmost label and one label only:
 * *.example.test covers b.example.test but not a.b.example.test. */
START_TEST(wildcard_two_labels_deep_refused)
{
	struct btls t;
	char lines[512], want[256], backend[1024], *out;
	int sport;
	pid_t spid;

	snprintf(lines, sizeof(lines), "tls_ca = %s/bca.pem\n"
	    "tls_servername = a.b.example.test\n", h_dir());
	snprintf(want, sizeof(want), R_MISMATCH_FMT, "a.b.example.test");
	expect_refused("wild2", "wild", NULL, lines, want, "name");

	spid = s_server(&sport, "wild", NULL);
	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/bca.pem\ntls_servername = b.example.test\n", sport,
	    h_dir());
	start(&t, "wild1", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "one label: %s", out);
	free(out);
	finish(&t);
	stop(spid);
}
END_TEST

/* tls_verify = no lets the untrusted chain through and says so. */
START_TEST(verify_off_lets_untrusted_through)
{
	static const char *const want[] = { "TLSv1.3,", BTLS_NEW,
		BTLS_UNVERIFIED, NULL };
	struct btls t;
	char backend[512], *out, *line;
	int sport;
	pid_t spid = s_server(&sport, "rogue-api", NULL);

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/bca.pem\ntls_servername = " API "\ntls_verify = no\n",
	    sport, h_dir());
	start(&t, "noverify", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "%s", out);
	free(out);
	line = conn_line(&t, 1);
	check_btls(line, want);
	ck_assert_msg(strcmp(reason(line), "done") == 0, "%s", line);
	free(line);
	finish(&t);
	stop(spid);
}
END_TEST

/* A failed backend handshake moves on to the next address; the client is
 * closed only when every address failed, with the last failure. */
START_TEST(next_address_after_tls_failure)
{
	struct btls t;
	char backend[512], warn[256], *out, *line;
	int rport, gport, rport2;
	pid_t rpid = s_server(&rport, "rogue-api", NULL);
	pid_t gpid = s_server(&gport, "api", NULL);
	pid_t rpid2;

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d, "
	    "127.0.0.1:%d\ntls = yes\ntls_ca = %s/bca.pem\n"
	    "tls_servername = " API "\n", rport, gport, h_dir());
	start(&t, "failover", backend, NULL);
	/* Whichever address a connection starts at, all succeed. */
	for (int i = 1; i <= 4; i++) {
		char gaddr[64];

		out = get(&t, "/");
		ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "%d: %s", i,
		    out);
		free(out);
		line = conn_line(&t, i);
		snprintf(gaddr, sizeof(gaddr), "127.0.0.1:%d", gport);
		ck_assert_msg(strcmp(h_field(line, "backend"), gaddr) == 0,
		    "%s", line);
		ck_assert_msg(strstr(h_field(line, BTLS_FIELD), BTLS_VERIFIED),
		    "%s", line);
		free(line);
	}
	warning(warn, sizeof(warn), rport, R_UNTRUSTED);
	ck_assert_msg(h_log_contains(&t.d, warn, 2000), "no '%s'", warn);
	finish(&t);
	stop(gpid);

	/* Both untrusted: the client is closed, after both were tried. */
	rpid2 = s_server(&rport2, "rogue-api", NULL);
	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d, "
	    "127.0.0.1:%d\ntls = yes\ntls_ca = %s/bca.pem\n"
	    "tls_servername = " API "\n", rport, rport2, h_dir());
	start(&t, "allfail", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) == NULL, "%s", out);
	free(out);
	line = conn_line(&t, 1);
	ck_assert_msg(strcmp(reason(line), R_UNTRUSTED) == 0, "%s", line);
	free(line);
	/* Warnings from one place are limited to one a second: the metric
	 * counts both addresses. */
	ck_assert_msg(h_log_contains(&t.d, "backend tls: " "unable to get "
	    "local issuer certificate", 2000), "no warning");
	ck_assert_int_eq(wait_metric(&t, M_FAILURES_FMT, "certificate", 2), 2);
	finish(&t);
	stop(rpid);
	stop(rpid2);
}
END_TEST

/* A backend that never answers the ClientHello is given up at
 * tls_handshake_timeout; one that closes at once counts as "closed". */
START_TEST(handshake_timeout_and_closed)
{
	struct btls t;
	pid_t mpid, cpid;
	int mport = h_backend("mute", NULL, &mpid);
	int cport = h_backend("close", NULL, &cpid);
	char backend[512], *out, *line;
	long long t0;

	api_backend(backend, sizeof(backend), mport,
	    "tls_handshake_timeout = 500ms\n");
	start(&t, "hstimeout", backend, NULL);
	t0 = h_now_ms();
	out = get(&t, "/");
	free(out);
	line = conn_line(&t, 1);
	ck_assert_msg(h_now_ms() - t0 < 4000, "took %lld ms", h_now_ms() - t0);
	ck_assert_msg(strncmp(reason(line), R_PREFIX, strlen(R_PREFIX)) == 0,
	    "%s", line);
	free(line);
	ck_assert_int_eq(wait_metric(&t, M_FAILURES_FMT, "timeout", 1), 1);
	finish(&t);

	api_backend(backend, sizeof(backend), cport, "");
	start(&t, "hsclosed", backend, NULL);
	out = get(&t, "/");
	free(out);
	line = conn_line(&t, 1);
	ck_assert_msg(strncmp(reason(line), R_PREFIX, strlen(R_PREFIX)) == 0,
	    "%s", line);
	free(line);
	ck_assert_int_eq(wait_metric(&t, M_FAILURES_FMT, "closed", 1), 1);
	finish(&t);
	stop(mpid);
	stop(cpid);
}
END_TEST

/* A backend handshake still running when the client's held-back session
 * tickets fall due (40 ms after a client that sent its request at once)
 * goes on: the timer that sends them may fire a moment before they are
 * due by the daemon's clock, which once ended such handshakes as timed
 * out. The backend waits 150 ms before its handshake; every request must
 * get its answer. */
START_TEST(slow_backend_handshake_outlives_the_ticket_timer)
{
	struct btls t;
	char backend[1024], log[600], *out, *line;
	int port = h_free_port();
	pid_t pid;

	snprintf(log, sizeof(log), "%s/slow-%d.log", h_dir(), port);
	pid = spawn(log, "exec python3 %s/slow_tls_backend.py %d %s/api.pem "
	    "%s/api.key 150", getenv("TLSPROXY_TEST_SRC"), port, h_dir(),
	    h_dir());
	wait_port(pid, port, log);
	api_backend(backend, sizeof(backend), port, "");
	start(&t, "slow", backend, NULL);
	/* 32 at once, each request in the flight of its Finished: the
	 * later ones in an event-loop pass see the timer fire earliest. */
	for (int round = 0; round < 3; round++) {
		int ok = 0;

		out = h_run(NULL, "%s --conns 32 --expect-bytes 71 --servername localhost --request "
		    "'GET / HTTP/1.1\\r\\nHost: localhost\\r\\n\\r\\n' "
		    "127.0.0.1:%d", getenv("TLSPROXY_CLIENT"), t.d.port);
		for (line = out; (line = strstr(line, "ok=1")) != NULL; line++)
			ok++;
		ck_assert_msg(ok == 32, "%d of 32 answered: %.400s", ok, out);
		free(out);
	}
	for (int i = 1; i <= 96; i++) {
		line = conn_line(&t, i);
		ck_assert_msg(strstr(line, "backend_tls=TLSv1.3") != NULL, "%s",
		    line);
		free(line);
	}
	finish(&t);
	stop(pid);
}
END_TEST

/* ---- Client certificates. */

/* s_server demands a certificate from cca (-Verify 1 with
 * -verify_return_error): tls_cert/tls_key get through and the server
 * logs the subject; without them nothing gets through. In TLS 1.3 the
 * server's refusal comes after the client's Finished, so the daemon may
 * see it as a handshake that went wrong just after it ended; with TLS 1.2
 * it is a plain handshake failure. */
START_TEST(client_certificate_for_mtls)
{
	struct btls t;
	char backend[1024], *out, *line;
	int sport;
	pid_t spid = s_server(&sport, "api", "-Verify 1 -verify_return_error "
	    "-CAfile cca.pem");

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/bca.pem\ntls_servername = " API "\n"
	    "tls_cert = %s/client.pem\ntls_key = %s/client.key\n", sport, h_dir(),
	    h_dir(), h_dir());
	start(&t, "mtls", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "%s", out);
	free(out);
	out = s_server_log(sport);
	ck_assert_msg(strstr(out, "depth=0 CN = btls client") != NULL, "%s", out);
	free(out);
	finish(&t);

	api_backend(backend, sizeof(backend), sport, "");
	start(&t, "nocert13", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) == NULL, "%s", out);
	free(out);
	line = conn_line(&t, 1);
	ck_assert_msg(strcmp(reason(line), "done") != 0, "%s", line);
	free(line);
	finish(&t);

	api_backend(backend, sizeof(backend), sport,
	    "tls_max_version = TLSv1.2\n");
	start(&t, "nocert12", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) == NULL, "%s", out);
	free(out);
	line = conn_line(&t, 1);
	ck_assert_msg(strncmp(reason(line), R_PREFIX, strlen(R_PREFIX)) == 0,
	    "%s", line);
	check_btls(line, NULL);
	free(line);
	out = s_server_log(sport);
	ck_assert_msg(strstr(out, "peer did not return a certificate") != NULL,
	    "%s", out);
	free(out);
	finish(&t);
	stop(spid);
}
END_TEST

/* With several client certificates, the backend's request chooses: the
 * CA names it sends (s_server sends those of -CAfile) pick the second
 * certificate, and its signature algorithms (-client_sigalgs) pick the
 * RSA one over an ECDSA one listed first. */
static void
client_cert_sent(const char *server_extra, const char *certs,
    const char *expected)
{
	struct btls t;
	char backend[1024], want[128], *out;
	int sport;
	pid_t spid = s_server(&sport, "api", server_extra);

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/bca.pem\ntls_servername = " API "\n%s", sport, h_dir(),
	    certs);
	start(&t, "mtls-choice", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "%s", out);
	free(out);
	out = s_server_log(sport);
	snprintf(want, sizeof(want), "depth=0 CN = %s\n", expected);
	ck_assert_msg(strstr(out, want) != NULL, "want %s in %s", want, out);
	free(out);
	finish(&t);
	stop(spid);
}

START_TEST(client_certificate_chosen_by_the_request)
{
	char certs[1024];
	const char *d = h_dir();

	snprintf(certs, sizeof(certs), "tls_cert = %s/client.pem\n"
	    "tls_key = %s/client.key\ntls_cert = %s/client2.pem\n"
	    "tls_key = %s/client2.key\n", d, d, d, d);
	client_cert_sent("-Verify 1 -verify_return_error -CAfile cca2.pem",
	    certs, "btls client two");
	client_cert_sent("-Verify 1 -verify_return_error -CAfile cca.pem",
	    certs, "btls client");
	snprintf(certs, sizeof(certs), "tls_cert = %s/client.pem\n"
	    "tls_key = %s/client.key\ntls_cert = %s/rsaclient.pem\n"
	    "tls_key = %s/rsaclient.key\n", d, d, d, d);
	client_cert_sent("-Verify 1 -verify_return_error -CAfile cca.pem "
	    "-client_sigalgs rsa_pss_rsae_sha256", certs, "btls rsa client");
	client_cert_sent("-Verify 1 -verify_return_error -CAfile cca.pem "
	    "-client_sigalgs rsa_pss_rsae_sha256 -tls1_2", certs,
	    "btls rsa client");
	client_cert_sent("-Verify 1 -verify_return_error -CAfile cca.pem",
	    certs, "btls client");
}
END_TEST

/* ---- ALPN. */

/* tls_alpn = client offers the backend what the client negotiated: a
 * client on h2 reaches an h2-only backend (s_server -www answers the
 * HTTP/1.0 request whatever the ALPN), and an http/1.1-only backend
 * refuses the h2 offer with no_application_protocol. */
START_TEST(alpn_passthrough_h2)
{
	struct btls t;
	char backend[512], *out, *line;
	int sport;
	pid_t spid = s_server(&sport, "api", "-alpn h2");

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/bca.pem\ntls_servername = " API "\ntls_alpn = client\n",
	    sport, h_dir());
	start(&t, "alpnh2", backend, NULL);
	out = h_run(NULL, "%s --alpn h2 --servername localhost --request "
	    "'GET / HTTP/1.0\\r\\n\\r\\n' --timeout 15 127.0.0.1:%d",
	    h_bin("client"), t.d.port);
	ck_assert_msg(strcmp(h_field(out, "ok"), "1") == 0 &&
	    strcmp(h_field(out, "alpn"), "h2") == 0 &&
	    atoi(h_field(out, "received")) > 1000, "%s", out);
	free(out);
	line = conn_line(&t, 1);
	ck_assert_str_eq(h_field(line, "alpn"), "h2");
	ck_assert_msg(strcmp(reason(line), "done") == 0, "%s", line);
	free(line);
	finish(&t);
	stop(spid);
}
END_TEST

START_TEST(alpn_passthrough_h1_backend_refuses_h2)
{
	struct btls t;
	char backend[512], *out, *line;
	const char *r;
	int sport;
	pid_t spid = s_server(&sport, "api", "-alpn http/1.1");

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/bca.pem\ntls_servername = " API "\ntls_alpn = client\n",
	    sport, h_dir());
	start(&t, "alpnh1", backend, NULL);
	out = h_run(NULL, "%s --alpn h2 --servername localhost --request "
	    "'GET / HTTP/1.0\\r\\n\\r\\n' --timeout 15 127.0.0.1:%d",
	    h_bin("client"), t.d.port);
	/* The client's own handshake may have finished (on h2); nothing of
	 * the backend's comes back. */
	ck_assert_msg(strcmp(h_field(out, "ok"), "0") == 0 ||
	    strcmp(h_field(out, "received"), "0") == 0, "%s", out);
	free(out);
	line = conn_line(&t, 1);
	r = reason(line);
	ck_assert_msg(strncmp(r, R_PREFIX, strlen(R_PREFIX)) == 0 &&
	    (strcasestr(r, R_ALPN_1) != NULL || strcasestr(r, R_ALPN_2) != NULL ||
	    strcasestr(r, R_ALPN_3) != NULL),
	    "%s", line);
	free(line);
	ck_assert_int_eq(wait_metric(&t, M_FAILURES_FMT, "alpn", 1), 1);
	out = s_server_log(sport);
	ck_assert_msg(strstr(out, "no application protocol") != NULL, "%s", out);
	free(out);
	/* The same backend takes a client on http/1.1. */
	out = h_run(NULL, "%s --alpn http/1.1 --servername localhost --request "
	    "'GET / HTTP/1.0\\r\\n\\r\\n' --timeout 15 127.0.0.1:%d",
	    h_bin("client"), t.d.port);
	ck_assert_msg(strcmp(h_field(out, "alpn"), "http/1.1") == 0 &&
	    atoi(h_field(out, "received")) > 1000, "%s", out);
	free(out);
	finish(&t);
	stop(spid);
}
END_TEST

/* ---- Session reuse. */

/* The backend is nginx with a session cache and tickets, logging
 * $ssl_session_reused. One worker, so both connections share whatever
 * session store the daemon keeps per backend address. */
START_TEST(second_connection_resumes)
{
	static const char *const first[] = { "TLSv1.3,", BTLS_NEW,
		BTLS_VERIFIED, NULL };
	static const char *const second[] = { "TLSv1.3,", BTLS_RESUMED,
		BTLS_VERIFIED, NULL };
	struct btls t;
	int nport = h_free_port();
	char http[512], backend[512], *out, *line;
	pid_t npid;

	snprintf(http, sizeof(http), " server {\n  listen 127.0.0.1:%d ssl;\n"
	    "  location / { return 200 \"reused=$ssl_session_reused "
	    "sni=$ssl_server_name\\n\"; }\n }\n", nport);
	npid = nginx(http, NULL, nport);
	api_backend(backend, sizeof(backend), nport, "");
	start(&t, "resume", backend, "workers = 1");
	out = get(&t, "/1");
	ck_assert_str_eq(out, "reused=. sni=" API "\n");
	free(out);
	out = get(&t, "/2");
	ck_assert_str_eq(out, "reused=r sni=" API "\n");
	free(out);
	line = conn_line(&t, 1);
	check_btls(line, first);
	free(line);
	line = conn_line(&t, 2);
	check_btls(line, second);
	free(line);
	ck_assert_int_eq(wait_metric(&t, M_HANDSHAKES_FMT, "yes", 1), 1);
	ck_assert_int_eq(metric(&t, M_HANDSHAKES_FMT, "no"), 1);
	/* nginx's own log agrees, line by line. */
	out = nginx_log();
	ck_assert_msg(strncmp(out, "reused=. sni=" API " ",
	    strlen("reused=. sni=" API " ")) == 0 &&
	    strstr(out, "\nreused=r sni=" API " ") != NULL, "%s", out);
	free(out);
	finish(&t);
	stop(npid);
}
END_TEST

/* tls_session_reuse = no: every connection is a full handshake. */
START_TEST(session_reuse_off)
{
	struct btls t;
	int nport = h_free_port();
	char http[512], backend[512], *out;
	pid_t npid;

	snprintf(http, sizeof(http), " server {\n  listen 127.0.0.1:%d ssl;\n"
	    "  location / { return 200 \"reused=$ssl_session_reused\\n\"; }\n"
	    " }\n", nport);
	npid = nginx(http, NULL, nport);
	api_backend(backend, sizeof(backend), nport,
	    "tls_session_reuse = no\n");
	start(&t, "noresume", backend, "workers = 1");
	for (int i = 0; i < 3; i++) {
		out = get(&t, "/");
		ck_assert_str_eq(out, "reused=.\n");
		free(out);
	}
	ck_assert_int_eq(wait_metric(&t, M_HANDSHAKES_FMT, "no", 3), 3);
	ck_assert_msg(metric(&t, M_HANDSHAKES_FMT, "yes") <= 0,
	    "resumed with tls_session_reuse = no");
	finish(&t);
	stop(npid);
}
END_TEST

/* ---- Bulk data. */

/* 8 MB each way through TLS on both sides (a terminating tlsproxy in front
 * of an echo backend), hashed; the client's close_notify reaches the
 * backend as a close_notify (the terminator makes it a FIN for echo), and
 * echo's FIN comes back to the client as close_notify. */
START_TEST(megabytes_each_way_intact)
{
	struct btls t;
	pid_t epid, spid;
	int eport = h_backend("echo", NULL, &epid), sport = h_free_port();
	char backend[512], sent[80], *out;
	int st;

	spid = terminator(sport, eport);
	api_backend(backend, sizeof(backend), sport, "");
	start(&t, "bulk", backend, NULL);
	out = h_run(&st, "%s --send-bytes 8000000 --timeout 90 127.0.0.1:%d",
	    h_bin("client"), t.d.port);
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "received"), "8000000");
	snprintf(sent, sizeof(sent), "%s", h_field(out, "sent_sha256"));
	ck_assert_str_eq(h_field(out, "received_sha256"), sent);
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	free(out);
	ck_assert(h_log_contains(&t.d, "bytes_in=8000000 bytes_out=8000000",
	    2000));
	out = conn_line(&t, 1);
	ck_assert_msg(strcmp(reason(out), "done") == 0, "%s", out);
	free(out);
	finish(&t);
	stop(spid);
	stop(epid);
}
END_TEST

/* The same through nginx's stream proxy: the data are intact whatever the
 * daemon makes of nginx ending its side without close_notify. */
START_TEST(megabytes_through_nginx_stream)
{
	struct btls t;
	pid_t epid, npid;
	int eport = h_backend("echo", NULL, &epid), nport = h_free_port();
	char stream[256], backend[512], sent[80], *out;

	snprintf(stream, sizeof(stream), " server {\n  listen 127.0.0.1:%d "
	    "ssl;\n  proxy_pass 127.0.0.1:%d;\n }\n", nport, eport);
	npid = nginx(NULL, stream, nport);
	api_backend(backend, sizeof(backend), nport, "");
	start(&t, "nginxbulk", backend, NULL);
	out = h_run(NULL, "%s --send-bytes 8000000 --timeout 90 127.0.0.1:%d",
	    h_bin("client"), t.d.port);
	ck_assert_msg(strcmp(h_field(out, "received"), "8000000") == 0, "%s",
	    out);
	snprintf(sent, sizeof(sent), "%s", h_field(out, "sent_sha256"));
	ck_assert_str_eq(h_field(out, "received_sha256"), sent);
	free(out);
	finish(&t);
	stop(npid);
	stop(epid);
}
END_TEST

/* The backend half-closes first (source: 3 MB, then FIN, which the
 * terminator sends as close_notify); the client keeps sending 1 MB after that, which
 * still reaches the backend, and gets close_notify at the end. */
START_TEST(backend_half_closes_first)
{
	struct btls t;
	pid_t bpid, spid;
	int bport = h_backend("source", "3000000", &bpid), sport = h_free_port();
	char backend[512], *out;
	int st;

	spid = terminator(sport, bport);
	api_backend(backend, sizeof(backend), sport, "");
	start(&t, "bhc", backend, NULL);
	out = h_run(&st, "%s --send-bytes 1000000 --timeout 60 "
	    "--expect-bytes 3000000 127.0.0.1:%d", h_bin("client"), t.d.port);
	ck_assert_msg(st == 0, "%s", out);
	ck_assert_str_eq(h_field(out, "close_notify"), "1");
	free(out);
	ck_assert(h_log_contains(&t.d, "bytes_in=1000000 bytes_out=3000000",
	    2000));
	finish(&t);
	stop(spid);
	stop(bpid);
}
END_TEST

/* The sink reports what it got once the client's half-close reached it
 * through both TLS legs: the exact bytes. */
START_TEST(sink_hash_matches)
{
	struct btls t;
	pid_t bpid, spid;
	int bport = h_backend("sink", NULL, &bpid), sport = h_free_port();
	char backend[512], want[160], *out;
	int st;

	spid = terminator(sport, bport);
	api_backend(backend, sizeof(backend), sport, "");
	start(&t, "sink", backend, NULL);
	out = h_run(&st, "%s --send-bytes 5000000 --timeout 60 127.0.0.1:%d",
	    h_bin("client"), t.d.port);
	ck_assert_msg(st == 0, "%s", out);
	snprintf(want, sizeof(want), "received=5000000 sha256=%s\n",
	    h_field(out, "sent_sha256"));
	free(out);
	out = h_run(&st, "%s --send-bytes 5000000 --timeout 60 "
	    "--expect-sha256 $(printf '%%s' '%s' | sha256sum | cut -d' ' -f1) "
	    "127.0.0.1:%d", h_bin("client"), want, t.d.port);
	ck_assert_msg(st == 0, "backend did not receive the exact bytes: %s",
	    out);
	free(out);
	finish(&t);
	stop(spid);
	stop(bpid);
}
END_TEST

/* ---- Memory against stalled peers (as test_proxy's stalled reader). */

/* stalled_listener returns a listening socket nobody accepts on: the
 * kernel completes connections and buffers a little, then the peer's
 * writes stall for good. */
static int
stalled_listener(int *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	getsockname(fd, (struct sockaddr *)&sin, &len);
	*port = ntohs(sin.sin_port);
	return fd;
}

/* run_bg runs |cmd| through sh without waiting. */
static pid_t
run_bg(const char *cmd)
{
	pid_t pid = fork();

	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* The backend's TLS server (nginx stream) stops reading because what it
 * forwards to never reads: a client pushing 100 MB must not pile up in
 * the daemon. */
START_TEST(stalled_backend_reader_keeps_memory_bounded)
{
	struct btls t;
	int stall_port, nport = h_free_port();
	int lfd = stalled_listener(&stall_port);
	char stream[256], backend[512], cmd[512];
	long before, during;
	pid_t npid, cpid;

	snprintf(stream, sizeof(stream), " server {\n  listen 127.0.0.1:%d "
	    "ssl;\n  proxy_pass 127.0.0.1:%d;\n }\n", nport, stall_port);
	npid = nginx(NULL, stream, nport);
	api_backend(backend, sizeof(backend), nport, "");
	/* The client gives up while the daemon is still blocked writing to
	 * the backend; it holds that connection until it drains (as it does
	 * with a plaintext backend), so it is stopped with it open. */
	start(&t, "bstall", backend, "access_log = no\nshutdown_timeout = 1s");
	t.d.open_at_stop = 1;
	before = h_rss_kib(t.d.pid);
	snprintf(cmd, sizeof(cmd), "%s --send-bytes 100000000 --timeout 5 "
	    "127.0.0.1:%d >/dev/null", h_bin("client"), t.d.port);
	cpid = run_bg(cmd);
	sleep(3);
	during = h_rss_kib(t.d.pid);
	waitpid(cpid, NULL, 0);
	ck_assert_msg(!RSS_MEANINGFUL || during - before < 8 * 1024,
	    "RSS grew from %ld to %ld KiB",
	    before, during);
	finish(&t);
	stop(npid);
	close(lfd);
}
END_TEST

/* The other way: a TLS backend offers 100 MB to a client that never
 * reads. */
START_TEST(stalled_client_reader_keeps_memory_bounded)
{
	struct btls t;
	pid_t bpid, npid, cpid;
	int bport = h_backend("source", "100000000", &bpid);
	int nport = h_free_port();
	char stream[256], backend[512], cmd[512], *out;
	long before, during;
	int st;

	snprintf(stream, sizeof(stream), " server {\n  listen 127.0.0.1:%d "
	    "ssl;\n  proxy_pass 127.0.0.1:%d;\n }\n", nport, bport);
	npid = nginx(NULL, stream, nport);
	api_backend(backend, sizeof(backend), nport, "");
	start(&t, "cstall", backend, "access_log = no");
	before = h_rss_kib(t.d.pid);
	snprintf(cmd, sizeof(cmd), "%s --no-read --hold 4 127.0.0.1:%d "
	    ">/dev/null", h_bin("client"), t.d.port);
	cpid = run_bg(cmd);
	sleep(2);
	during = h_rss_kib(t.d.pid);
	/* Other clients are served meanwhile, all 100 MB of them. */
	out = h_run(&st, "%s --no-half-close --request x --expect-bytes "
	    "100000000 --timeout 90 127.0.0.1:%d", h_bin("client"), t.d.port);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	waitpid(cpid, NULL, 0);
	ck_assert_msg(!RSS_MEANINGFUL || during - before < 8 * 1024,
	    "RSS grew from %ld to %ld KiB",
	    before, during);
	finish(&t);
	stop(npid);
	stop(bpid);
}
END_TEST

/* ---- PROXY protocol. */

/* nginx listens with "ssl proxy_protocol": it reads the PROXY header in
 * clear and then expects the ClientHello, so a header sent inside TLS (or
 * after it) would be a "broken header". The client comes from 127.0.0.2.
 * nginx 1.22 peeks at most 108 bytes for the header on an ssl listener
 * ("header is too large" beyond): the client sends no SNI and no ALPN so
 * that the daemon's TLVs (SSL version and cipher) stay within that. */
START_TEST(proxy_v2_header_before_handshake)
{
	struct btls t;
	int nport = h_free_port();
	char http[512], backend[512], *out;
	pid_t npid;

	snprintf(http, sizeof(http), " server {\n  listen 127.0.0.1:%d ssl "
	    "proxy_protocol;\n  location / { return 200 \"addr="
	    "$proxy_protocol_addr proto=$ssl_protocol sni=$ssl_server_name\\n\"; "
	    "}\n }\n", nport);
	npid = nginx(http, NULL, nport);
	api_backend(backend, sizeof(backend), nport,
	    "proxy_protocol = v2\n");
	start(&t, "ppv2", backend, NULL);
	out = h_run(NULL, "%s --source 127.0.0.2 --request 'GET / HTTP/1.0"
	    "\\r\\n\\r\\n' --timeout 15 127.0.0.1:%d", h_bin("client"),
	    t.d.port);
	/* "addr=127.0.0.2 proto=TLSv1.3 sni=api.example.test\n" plus the
	 * response head: the body alone is 51 bytes. */
	ck_assert_msg(strcmp(h_field(out, "ok"), "1") == 0 &&
	    atoi(h_field(out, "received")) > 51, "%s", out);
	free(out);
	out = nginx_log();
	ck_assert_msg(strstr(out, "reused=. sni=" API " alpn=- proto=TLSv1.3 "
	    "pp=127.0.0.2\n") != NULL, "%s", out);
	free(out);
	/* wait_port's bare connection is a "broken header: \"\"": any other
	 * is not. */
	out = h_run(NULL, "grep -e 'broken header: \"[^\"]' -e 'too large' "
	    "%s/nginx/error.log", h_dir());
	ck_assert_msg(out[0] == '\0', "%s", out);
	free(out);
	out = conn_line(&t, 1);
	ck_assert_msg(strcmp(reason(out), "done") == 0, "%s", out);
	free(out);
	finish(&t);
	stop(npid);
}
END_TEST

/* ---- Configuration errors. */

/* line_of returns the 1-based line of the first line starting with
 * |prefix| in |text|. */
static int
line_of(const char *text, const char *prefix)
{
	int line = 1;

	for (const char *p = text; *p != '\0'; p = strchr(p, '\n') + 1) {
		if (strncmp(p, prefix, strlen(prefix)) == 0)
			return line;
		if (strchr(p, '\n') == NULL)
			break;
		line++;
	}
	ck_abort_msg("no line '%s' in: %s", prefix, text);
	return -1;
}

/* A CA file that does not load fails the SIGHUP reload with FILE:LINE;
 * the running config keeps verifying and serving. */
START_TEST(reload_with_bad_ca_keeps_old_config)
{
	struct btls t;
	char backend[512], bad[4096], want[700], *out;
	FILE *f;
	int sport;
	pid_t spid = s_server(&sport, "api", NULL);

	api_backend(backend, sizeof(backend), sport, "");
	start(&t, "reload", backend, NULL);
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "%s", out);
	free(out);

	snprintf(backend, sizeof(backend), "address = 127.0.0.1:%d\ntls = yes\n"
	    "tls_ca = %s/garbage.pem\ntls_servername = " API "\n", sport,
	    h_dir());
	snprintf(bad, sizeof(bad), "%s", conf(&t, backend, NULL));
	f = fopen(t.d.conf, "w");
	ck_assert_ptr_nonnull(f);
	fputs(bad, f);
	fclose(f);
	kill(t.d.pid, SIGHUP);
	ck_assert(h_log_contains(&t.d, "reload failed", 3000));
	snprintf(want, sizeof(want), E_KEY_FMT, t.d.conf, line_of(bad,
	    "tls_ca"), "tls_ca");
	ck_assert_msg(h_log_contains(&t.d, want, 0), "no '%s' in the log", want);

	/* Still the old generation: the chain verifies against bca. */
	out = get(&t, "/");
	ck_assert_msg(strstr(out, S_SERVER_PAGE) != NULL, "%s", out);
	free(out);
	out = conn_line(&t, 2);
	ck_assert_msg(strstr(h_field(out, BTLS_FIELD), BTLS_VERIFIED) != NULL,
	    "%s", out);
	free(out);
	finish(&t);
	stop(spid);
}
END_TEST

/* tlsproxy -t names the file and line of a bad tls_ca, tls_cert or
 * tls_key. */
START_TEST(config_test_names_bad_tls_files)
{
	char text[2048], path[600], want[700], key[600], *out;
	int st;

	snprintf(text, sizeof(text),
	    "[listener l]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:2\ntls = yes\n"
	    "tls_ca = %s/missing-ca.pem\n"
	    "[context c]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    h_dir(), h_dir(), h_dir());
	snprintf(path, sizeof(path), "%s", h_write("badca.conf", text));
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"), path);
	ck_assert_int_eq(st, 1);
	snprintf(want, sizeof(want), E_KEY_FMT, path, line_of(text, "tls_ca"),
	    "tls_ca");
	ck_assert_msg(strstr(out, want) != NULL &&
	    strstr(out, "missing-ca.pem") != NULL, "want '%s': %s", want, out);
	free(out);

	/* Not a certificate; a key for another certificate. */
	snprintf(text, sizeof(text),
	    "[listener l]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:2\ntls = yes\n"
	    "tls_cert = %s/garbage.pem\ntls_key = %s/client.key\n"
	    "[backend b2]\naddress = 127.0.0.1:3\ntls = yes\n"
	    "tls_cert = %s/client.pem\ntls_key = %s/api.key\n"
	    "[context c]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n",
	    h_dir(), h_dir(), h_dir(), h_dir(), h_dir(), h_dir());
	snprintf(path, sizeof(path), "%s", h_write("badcert.conf", text));
	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"), path);
	ck_assert_int_eq(st, 1);
	snprintf(want, sizeof(want), E_KEY_FMT, path, line_of(text,
	    "tls_cert"), "tls_cert");
	ck_assert_msg(strstr(out, want) != NULL &&
	    strstr(out, "garbage.pem") != NULL, "want '%s': %s", want, out);
	/* The second backend's key, as for a context's key. */
	snprintf(key, sizeof(key), "tls_key = %s/api.key", h_dir());
	snprintf(want, sizeof(want), E_KEY_FMT, path, line_of(text, key),
	    "tls_key");
	ck_assert_msg(strstr(out, want) != NULL, "want '%s': %s", want, out);
	free(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("backend_tls");
	TCase *tc = tcase_create("backend_tls");

	h_setup("backend_tls");
	make_files();
	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, trusted_chain_passes);
	tcase_add_test(tc, plaintext_backend_logs_dash);
	tcase_add_test(tc, default_servername_from_the_address);
	tcase_add_test(tc, untrusted_ca_refused);
	tcase_add_test(tc, expired_certificate_refused);
	tcase_add_test(tc, revoked_certificate_refused);
	tcase_add_test(tc, name_mismatch_refused);
	tcase_add_test(tc, common_name_ignored_beside_dns_san);
	tcase_add_test(tc, ip_address_against_dns_only_refused);
	tcase_add_test(tc, wildcard_two_labels_deep_refused);
	tcase_add_test(tc, verify_off_lets_untrusted_through);
	tcase_add_test(tc, learned_group_is_the_only_key_share);
	tcase_add_test(tc, next_address_after_tls_failure);
	tcase_add_test(tc, handshake_timeout_and_closed);
	tcase_add_test(tc, slow_backend_handshake_outlives_the_ticket_timer);
	tcase_add_test(tc, client_certificate_for_mtls);
	tcase_add_test(tc, client_certificate_chosen_by_the_request);
	tcase_add_test(tc, alpn_passthrough_h2);
	tcase_add_test(tc, alpn_passthrough_h1_backend_refuses_h2);
	tcase_add_test(tc, second_connection_resumes);
	tcase_add_test(tc, session_reuse_off);
	tcase_add_test(tc, megabytes_each_way_intact);
	tcase_add_test(tc, megabytes_through_nginx_stream);
	tcase_add_test(tc, backend_half_closes_first);
	tcase_add_test(tc, sink_hash_matches);
	tcase_add_test(tc, stalled_backend_reader_keeps_memory_bounded);
	tcase_add_test(tc, stalled_client_reader_keeps_memory_bounded);
	tcase_add_test(tc, proxy_v2_header_before_handshake);
	tcase_add_test(tc, reload_with_bad_ca_keeps_old_config);
	tcase_add_test(tc, config_test_names_bad_tls_files);
	suite_add_tcase(s, tc);
	return check_run(s);
}
