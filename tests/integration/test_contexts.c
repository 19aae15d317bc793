/* End to end: several [context] sections behind one listener, chosen by
 * SNI, with their own TLS options (ALPN, versions, ciphers, curves,
 * client certificates, dual RSA/ECDSA, encrypted keys, PKCS#12) and their
 * own routing, checked from real clients: openssl s_client, curl,
 * gnutls-cli, Node's tls module and our BoringSSL client. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

/* An HTTP/1.0 request for printf(1) inside h_run's shell. */
#define REQ "GET / HTTP/1.0\\r\\n\\r\\n"
#define HELLO "hello from tlsproxy's demo backend: GET /"

/* The certificates, made once in the scratch dir (see main):
 *   root.pem                  server root CA; int.pem its intermediate
 *   a, b, default .pem/.key   ECDSA P-256 leaves {a,b,default}.example.test
 *   w.pem/.key                ECDSA leaf *.w.example.test
 *   dual-ec, dual-rsa         ECDSA and RSA-2048 leaves dual.example.test
 *   enc.pem + enc.key         RSA leaf enc.example.test, key encrypted
 *                             with "s3cret" (enc.pass holds it + newline)
 *   pfx.p12                   PKCS#12 of pfx.example.test + chain, "p12pass"
 *   client-ca.pem             client CA; client-crl.pem its CRL
 *   client-{good,revoked,expired,untrusted}.pem/.key  client certificates
 * Every *.pem leaf file is the leaf followed by the intermediate. */
static const char gen_script[] =
    "set -e\n"
    "ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
    "-out \"$1\"; }\n"
    "printf 'basicConstraints=critical,CA:TRUE,pathlen:0\\n"
    "keyUsage=critical,keyCertSign,cRLSign\\nsubjectKeyIdentifier=hash\\n"
    "authorityKeyIdentifier=keyid\\n' > int.ext\n"
    "ec root.key\n"
    "openssl req -x509 -new -key root.key -out root.pem -days 30 "
    "-subj '/CN=tlsproxy contexts test root'\n"
    "ec int.key\n"
    "openssl req -new -key int.key -out int.csr "
    "-subj '/CN=tlsproxy contexts test intermediate'\n"
    "openssl x509 -req -in int.csr -CA root.pem -CAkey root.key "
    "-set_serial 2 -days 30 -extfile int.ext -out int.pem\n"
    "leaf() {\n"
    "  printf 'basicConstraints=CA:FALSE\\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\\n"
    "extendedKeyUsage=serverAuth\\nsubjectAltName=DNS:%s\\n' \"$1\" "
    "> \"$2.ext\"\n"
    "  openssl req -new -key \"$3\" -out \"$2.csr\" -subj \"/CN=$1\"\n"
    "  openssl x509 -req -in \"$2.csr\" -CA int.pem -CAkey int.key "
    "-CAcreateserial -CAserial int.srl -days 30 -extfile \"$2.ext\" "
    "-out \"$2-only.pem\"\n"
    "  cat \"$2-only.pem\" int.pem > \"$2.pem\"\n"
    "}\n"
    "for n in a b default; do ec $n.key; leaf $n.example.test $n $n.key; "
    "done\n"
    "ec w.key; leaf '*.w.example.test' w w.key\n"
    "ec dual-ec.key; leaf dual.example.test dual-ec dual-ec.key\n"
    "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
    "-out dual-rsa.key\n"
    "leaf dual.example.test dual-rsa dual-rsa.key\n"
    "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
    "-out enc-plain.key\n"
    "leaf enc.example.test enc enc-plain.key\n"
    "openssl pkey -in enc-plain.key -aes256 -passout pass:s3cret "
    "-out enc.key\n"
    "printf 's3cret\\n' > enc.pass\n"
    "ec pfx.key; leaf pfx.example.test pfx pfx.key\n"
    "openssl pkcs12 -export -in pfx-only.pem -inkey pfx.key "
    "-certfile int.pem -passout pass:p12pass -name pfx -out pfx.p12\n"
    /* The client CA is run with openssl ca: it revokes and back-dates. */
    "mkdir -p cca/new; : > cca/index.txt; echo 1000 > cca/serial; "
    "echo 1000 > cca/crlnumber\n"
    "ec client-ca.key\n"
    "openssl req -x509 -new -key client-ca.key -out client-ca.pem -days 30 "
    "-subj '/CN=tlsproxy contexts client CA'\n"
    "client() {\n"
    "  n=$1; shift\n"
    "  ec client-$n.key\n"
    "  openssl req -new -key client-$n.key -out client-$n.csr "
    "-subj \"/CN=client $n\"\n"
    "  openssl ca -batch -config cca.cnf -notext \"$@\" -in client-$n.csr "
    "-out client-$n.pem\n"
    "}\n"
    "client good\n"
    "client revoked\n"
    "client expired -startdate 20200101000000Z -enddate 20200102000000Z\n"
    "openssl ca -batch -config cca.cnf -revoke client-revoked.pem\n"
    "openssl ca -batch -config cca.cnf -gencrl -out client-crl.pem\n"
    /* A client certificate from a CA that no context trusts. */
    "ec rogue-ca.key\n"
    "openssl req -x509 -new -key rogue-ca.key -out rogue-ca.pem -days 30 "
    "-subj '/CN=tlsproxy contexts rogue CA'\n"
    "ec client-untrusted.key\n"
    "openssl req -new -key client-untrusted.key -out client-untrusted.csr "
    "-subj '/CN=client untrusted'\n"
    "printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=clientAuth\\n' "
    "> cl.ext\n"
    "openssl x509 -req -in client-untrusted.csr -CA rogue-ca.pem "
    "-CAkey rogue-ca.key -set_serial 7 -days 30 -extfile cl.ext "
    "-out client-untrusted.pem\n"
    /* Sanity: what the tests rely on, checked with OpenSSL itself. */
    "openssl verify -CAfile root.pem -untrusted int.pem a-only.pem "
    "b-only.pem w-only.pem default-only.pem dual-ec-only.pem "
    "dual-rsa-only.pem enc-only.pem pfx-only.pem\n"
    "openssl verify -crl_check -CRLfile client-crl.pem "
    "-CAfile client-ca.pem client-good.pem\n"
    "! openssl verify -crl_check -CRLfile client-crl.pem "
    "-CAfile client-ca.pem client-revoked.pem\n"
    "! openssl verify -CAfile client-ca.pem client-expired.pem\n"
    "! openssl verify -CAfile client-ca.pem client-untrusted.pem\n";

static const char cca_cnf[] =
    "[ca]\n"
    "default_ca = cca\n"
    "[cca]\n"
    "dir = ./cca\n"
    "database = $dir/index.txt\n"
    "new_certs_dir = $dir/new\n"
    "serial = $dir/serial\n"
    "crlnumber = $dir/crlnumber\n"
    "certificate = ./client-ca.pem\n"
    "private_key = ./client-ca.key\n"
    "default_md = sha256\n"
    "default_days = 30\n"
    "default_crl_days = 30\n"
    "policy = anything\n"
    "x509_extensions = client\n"
    "unique_subject = no\n"
    "[anything]\n"
    "commonName = supplied\n"
    "[client]\n"
    "basicConstraints = CA:FALSE\n"
    "keyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = clientAuth\n";

/* Node's side of a mutual-TLS handshake: argv DIR PORT. */
static const char node_script[] =
    "const tls = require('tls'), fs = require('fs');\n"
    "const d = process.argv[2];\n"
    "const s = tls.connect({ host: '127.0.0.1', port: +process.argv[3],\n"
    "  servername: 'a.example.test', ca: fs.readFileSync(d + '/root.pem'),\n"
    "  cert: fs.readFileSync(d + '/client-good.pem'),\n"
    "  key: fs.readFileSync(d + '/client-good.key'),\n"
    "  ALPNProtocols: ['h2', 'http/1.1'] }, () => {\n"
    "  console.log('authorized=' + s.authorized + ' alpn=' + s.alpnProtocol);\n"
    "  s.write('GET /node HTTP/1.0\\r\\n\\r\\n');\n"
    "});\n"
    "let body = '';\n"
    "s.on('data', (b) => { body += b; });\n"
    "s.on('end', () => { console.log('body=' + JSON.stringify(body)); });\n"
    "s.on('error', (e) => { console.log('error=' + e.code);\n"
    "  process.exitCode = 1; });\n"
    "setTimeout(() => { console.log('timeout'); process.exit(2); }, 10000)\n"
    "  .unref();\n";

/* ---- helpers ---- */

/* cat appends printf-style text to |buf| (of |len| bytes). */
static void
cat(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
cat(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
	ck_assert_msg(n >= 0 && (size_t)n < len - used, "config too long");
}

/* conf_head starts a config: [global] with |global| lines, one listener
 * on |port| whose default context is |def| and backend "web" at
 * 127.0.0.1:|web_port|, with |listener| lines. */
static void
conf_head(char *buf, size_t len, int port, const char *def, int web_port,
    const char *global, const char *listener)
{
	buf[0] = '\0';
	cat(buf, len, "[global]\nworkers = 1\nlog_level = debug\n%s"
	    "[listener t]\nbind = 127.0.0.1:%d\ncontext = %s\nbackend = web\n%s"
	    "[backend web]\naddress = 127.0.0.1:%d\nconnect_timeout = 2s\n",
	    global ? global : "", port, def, listener ? listener : "",
	    web_port);
}

/* conf_ctx appends [context NAME] serving |names| (NULL: none) with the
 * leaf |base|.pem/.key (NULL: none) and |extra| lines. */
static void
conf_ctx(char *buf, size_t len, const char *name, const char *names,
    const char *base, const char *extra)
{
	cat(buf, len, "[context %s]\n", name);
	if (names != NULL)
		cat(buf, len, "servername = %s\n", names);
	if (base != NULL)
		cat(buf, len, "cert = %s/%s.pem\nkey = %s/%s.key\n", h_dir(), base,
		    h_dir(), base);
	cat(buf, len, "%s", extra ? extra : "");
}

static const char *brief(const char *s);

static void
start(struct h_daemon *d, const char *name, const char *conf, int port)
{
	if (h_daemon_start(d, name, conf) != 0) {
		char *log = h_run(NULL, "tail -n 30 '%s'", d->log);

		ck_abort_msg("tlsproxy did not start on %s.conf: %s", name,
		    brief(log));
	}
	d->port = port;
}

static void
stop(struct h_daemon *d, const pid_t *backends, int n)
{
	ck_assert_int_eq(h_daemon_stop(d, 10000), 0);
	for (int i = 0; i < n; i++) {
		if (backends[i] > 0) {
			kill(backends[i], SIGTERM);
			waitpid(backends[i], NULL, 0);
		}
	}
}

/* sclient runs openssl s_client against 127.0.0.1:|port| from the scratch
 * dir (so |args| may name files there), sending SNI |sni| (NULL: none).
 * With |input| it sends that and waits for the server to close; without,
 * it ends right after the handshake. Returns stdout and stderr. */
static char *
sclient(int *st, int port, const char *sni, const char *args,
    const char *input)
{
	char sn[300];

	if (sni != NULL)
		snprintf(sn, sizeof(sn), "-servername '%s'", sni);
	else
		snprintf(sn, sizeof(sn), "-noservername");
	if (input != NULL)
		return h_run(st, "cd '%s' && printf '%s' | timeout 20 openssl "
		    "s_client -connect 127.0.0.1:%d %s %s -ign_eof 2>&1", h_dir(),
		    input, port, sn, args ? args : "");
	return h_run(st, "cd '%s' && timeout 20 openssl s_client -connect "
	    "127.0.0.1:%d %s %s </dev/null 2>&1", h_dir(), port, sn,
	    args ? args : "");
}

/* served_cn returns the subject CN of the certificate the server sends
 * for |sni| (static storage; "" if none). */
static const char *
served_cn(int port, const char *sni, const char *args)
{
	static char cn[256];
	char sn[300], *out, *p;
	size_t n = 0;

	if (sni != NULL)
		snprintf(sn, sizeof(sn), "-servername '%s'", sni);
	else
		snprintf(sn, sizeof(sn), "-noservername");
	out = h_run(NULL, "cd '%s' && timeout 20 openssl s_client -connect "
	    "127.0.0.1:%d %s %s </dev/null 2>/dev/null | openssl x509 -noout "
	    "-subject -nameopt RFC2253 2>/dev/null", h_dir(), port, sn,
	    args ? args : "");
	cn[0] = '\0';
	if ((p = strstr(out, "CN=")) != NULL) {
		p += 3;
		while (p[n] != '\0' && p[n] != '\n' && p[n] != ',' &&
		    n < sizeof(cn) - 1)
			n++;
		memcpy(cn, p, n);
		cn[n] = '\0';
	}
	free(out);
	return cn;
}

/* next_conn waits for the access-log line of the next connection (the
 * |*count|+1-th "conn id=" line of the daemon's log) and returns it
 * (malloc'd, "" if it never came). Clients run one after another and the
 * daemon has one worker, so lines come in connection order. */
static char *
next_conn(const struct h_daemon *d, int *count)
{
	long long end = h_now_ms() + 5000;

	(*count)++;
	for (;;) {
		char *out = h_run(NULL, "grep 'conn id=' '%s' | sed -n '%dp'",
		    d->log, *count);

		if (out[0] != '\0' || h_now_ms() > end)
			return out;
		free(out);
		usleep(20000);
	}
}

/* wait_conns waits until the daemon logged |n| connection lines. */
static void
wait_conns(const struct h_daemon *d, int n)
{
	long long end = h_now_ms() + 5000;

	for (;;) {
		char *out = h_run(NULL, "grep -c 'conn id=' '%s'", d->log);
		int have = atoi(out);

		free(out);
		if (have >= n)
			return;
		ck_assert_msg(h_now_ms() < end, "%d connection lines, want %d",
		    have, n);
		usleep(20000);
	}
}

/* brief shortens client output for a failure message (Check refuses
 * long ones): its start and its end. Static storage. */
static const char *
brief(const char *s)
{
	static const char cut[] = "\n[...]\n";
	static char buf[3000];
	size_t n = strlen(s);

	if (n < 2800)
		return s;
	memcpy(buf, s, 1300);
	memcpy(buf + 1300, cut, sizeof(cut) - 1);
	memcpy(buf + 1300 + sizeof(cut) - 1, s + n - 1300, 1300);
	buf[2600 + sizeof(cut) - 1] = '\0';
	return buf;
}

static const char *
field(const char *line, const char *key)
{
	const char *v = h_field(line, key);

	return v != NULL ? v : "(missing)";
}

#define ASSERT_FIELD(line, key, want)                                        \
	ck_assert_msg(strcmp(field((line), (key)), (want)) == 0,                \
	    "%s=%s, want %s, in: %s", (key), field((line), (key)), (want),     \
	    brief(line))

#define ASSERT_HAS(out, needle)                                              \
	ck_assert_msg(strstr((out), (needle)) != NULL, "no '%s' in: %s",       \
	    (needle), brief(out))

#define ASSERT_HASNT(out, needle)                                            \
	ck_assert_msg(strstr((out), (needle)) == NULL, "'%s' in: %s",          \
	    (needle), brief(out))

#define ASSERT_CN(port, sni, args, want)                                     \
	do {                                                                 \
		const char *cn_ = served_cn((port), (sni), (args));          \
		ck_assert_msg(strcmp(cn_, (want)) == 0,                      \
		    "SNI %s: got certificate CN '%s', want '%s'",             \
		    (sni) ? (sni) : "(none)", cn_, (want));                  \
	} while (0)

/* ASSERT_REFUSED: a client exchange got no answer from the backend: the
 * handshake (or, in TLS 1.3 with client certificates, the first read)
 * failed. The exit status is not asserted: after a TLS 1.3 refusal the
 * client may see the alert, a reset or a bare EOF. */
#define ASSERT_REFUSED(st, out)                                              \
	ck_assert_msg(strstr((out), HELLO) == NULL,                           \
	    "expected a refused handshake (status %d): %s", (st), brief(out))

#define ASSERT_SERVED(st, out)                                               \
	ck_assert_msg((st) == 0 && strstr((out), HELLO) != NULL,              \
	    "expected the backend's answer (status %d): %s", (st), brief(out))

/* line_of returns the 1-based number of the |nth| line of |text| that
 * contains |needle|. */
static int
line_of(const char *text, const char *needle, int nth)
{
	int line = 1;

	for (const char *p = text; *p != '\0'; line++) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		char *l = strndup(p, n);
		int hit = strstr(l, needle) != NULL;

		free(l);
		if (hit && --nth == 0)
			return line;
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	ck_abort_msg("'%s' not in config", needle);
	return -1;
}

/* error_line returns the line of |out| holding "NAME.conf:LINE: key 'KEY': "
 * (malloc'd) or NULL. */
static char *
error_line(const char *out, const char *name, int line, const char *key)
{
	char prefix[256];
	const char *p, *nl;

	snprintf(prefix, sizeof(prefix), "%s.conf:%d: key '%s': ", name, line,
	    key);
	if ((p = strstr(out, prefix)) == NULL)
		return NULL;
	nl = strchr(p, '\n');
	return strndup(p, nl ? (size_t)(nl - p) : strlen(p));
}

/* check_conf runs "tlsproxy -t" on |conf| written as NAME.conf and
 * returns its output; the exit status goes to |*st|. */
static char *
check_conf(int *st, const char *name, const char *conf)
{
	char file[128], path[512];

	snprintf(file, sizeof(file), "%s.conf", name);
	snprintf(path, sizeof(path), "%s", h_write(file, conf));
	return h_run(st, "%s -t -c '%s' 2>&1", h_bin("tlsproxy"), path);
}

/* expect_error asserts that "tlsproxy -t" refuses |conf| (exit 1) with an
 * error "NAME.conf:LINE: key 'KEY': ..." containing |substr| (any case),
 * for one of the |n| (line, key) pairs given as int, const char *. */
static void
expect_error(const char *name, const char *conf, const char *substr, int n,
    ...)
{
	char *out, *err = NULL;
	va_list ap;
	int st;

	out = check_conf(&st, name, conf);
	ck_assert_msg(st == 1, "%s.conf: tlsproxy -t exited %d: %s\nconfig:\n%s",
	    name, st, brief(out), conf);
	va_start(ap, n);
	for (int i = 0; i < n && err == NULL; i++) {
		int line = va_arg(ap, int);
		const char *key = va_arg(ap, const char *);

		err = error_line(out, name, line, key);
	}
	va_end(ap);
	ck_assert_msg(err != NULL, "%s.conf: no error at the expected line and "
	    "key: %s\nconfig:\n%s", name, brief(out), conf);
	ck_assert_msg(substr == NULL || strcasestr(err, substr) != NULL,
	    "%s.conf: error lacks '%s': %s", name, substr, err);
	free(err);
	free(out);
}

/* ---- 1. SNI picks the certificate ---- */

START_TEST(sni_selects_context_certificate)
{
	static const struct {
		const char *sni, *cn;
	} cases[] = {
		{ "a.example.test", "a.example.test" },
		{ "alias.example.test", "a.example.test" },
		{ "b.example.test", "b.example.test" },
		{ "x.w.example.test", "*.w.example.test" },
		{ "Y.W.Example.Test", "*.w.example.test" },
		/* One-label wildcard: neither the bare parent nor two labels. */
		{ "w.example.test", "default.example.test" },
		{ "a.b.w.example.test", "default.example.test" },
		/* Case and a trailing dot do not matter. */
		{ "A.EXAMPLE.TEST", "a.example.test" },
		{ "a.example.test.", "a.example.test" },
		{ "B.Example.Test.", "b.example.test" },
		{ "x.w.example.test.", "*.w.example.test" },
		/* Unknown or absent names get the listener's context. */
		{ "unknown.example.test", "default.example.test" },
		{ "example.test", "default.example.test" },
		{ NULL, "default.example.test" },
	};
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out, *line;
	int st, n = 0;

	conf_head(conf, sizeof(conf), port, "def", bport, NULL, NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default", NULL);
	conf_ctx(conf, sizeof(conf), "a", "a.example.test, alias.example.test",
	    "a", NULL);
	conf_ctx(conf, sizeof(conf), "b", "b.example.test", "b", NULL);
	conf_ctx(conf, sizeof(conf), "w", "*.w.example.test", "w", NULL);
	start(&d, "sni", conf, port);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ASSERT_CN(port, cases[i].sni, NULL, cases[i].cn);
	wait_conns(&d, (int)(sizeof(cases) / sizeof(cases[0])));
	n += (int)(sizeof(cases) / sizeof(cases[0]));
	/* The whole chain is sent: it verifies against the root alone. */
	out = sclient(&st, port, "b.example.test", "-CAfile root.pem "
	    "-verify_return_error -verify_hostname b.example.test", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "Verify return code: 0 (ok)");
	free(out);
	line = next_conn(&d, &n);
	ASSERT_FIELD(line, "sni", "b.example.test");
	/* No client certificate was asked for. */
	ASSERT_FIELD(line, "auth", "-");
	free(line);
	out = sclient(&st, port, "x.w.example.test", "-CAfile root.pem "
	    "-verify_return_error -verify_hostname x.w.example.test", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "Verify return code: 0 (ok)");
	free(out);
	stop(&d, &bpid, 1);
}
END_TEST

/* ---- 2. sni_strict ---- */

START_TEST(sni_strict_refuses_unknown_names)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out;
	int st;

	conf_head(conf, sizeof(conf), port, "def", bport, NULL,
	    "sni_strict = yes\n");
	conf_ctx(conf, sizeof(conf), "def", NULL, "default", NULL);
	conf_ctx(conf, sizeof(conf), "a", "a.example.test", "a", NULL);
	conf_ctx(conf, sizeof(conf), "w", "*.w.example.test", "w", NULL);
	start(&d, "strict", conf, port);
	ASSERT_CN(port, "a.example.test", NULL, "a.example.test");
	ASSERT_CN(port, "A.Example.Test.", NULL, "a.example.test");
	ASSERT_CN(port, "x.w.example.test", NULL, "*.w.example.test");
	out = sclient(&st, port, "a.example.test", NULL, REQ);
	ASSERT_SERVED(st, out);
	free(out);
	/* Unknown names, missing SNI, and names the wildcard does not cover
	 * (its parent, two labels deep): an unrecognized_name alert (112). */
	const char *refused[] = { "unknown.example.test", NULL,
		"w.example.test", "a.b.w.example.test" };
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		out = sclient(&st, port, refused[i], NULL, REQ);
		ASSERT_REFUSED(st, out);
		ck_assert_msg(strcasestr(out, "unrecognized name") != NULL ||
		    strstr(out, "alert number 112") != NULL,
		    "SNI %s: no unrecognized_name alert: %s",
		    refused[i] ? refused[i] : "(none)", brief(out));
		free(out);
	}
	ck_assert(h_log_contains(&d, "unrecognized name", 2000));
	/* Known names still work afterwards. */
	out = sclient(&st, port, "a.example.test", "-tls1_2", REQ);
	ASSERT_SERVED(st, out);
	free(out);
	stop(&d, &bpid, 1);
}
END_TEST

/* ---- 3. ALPN ---- */

START_TEST(alpn_negotiation)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out;
	int st;

	/* [global] alpn is the default; b and strict override it. */
	conf_head(conf, sizeof(conf), port, "def", bport,
	    "alpn = h2, http/1.1\n", NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default", NULL);
	conf_ctx(conf, sizeof(conf), "a", "a.example.test", "a", NULL);
	conf_ctx(conf, sizeof(conf), "b", "b.example.test", "b",
	    "alpn = http/1.1\n");
	conf_ctx(conf, sizeof(conf), "strict", "s.example.test", "a",
	    "alpn = h2\nalpn_strict = yes\n");
	start(&d, "alpn", conf, port);

	/* curl: h2 and http/1.1. */
	out = h_run(&st, "cd '%s' && curl -sS -v --max-time 5 --http2 "
	    "--cacert root.pem --resolve a.example.test:%d:127.0.0.1 "
	    "https://a.example.test:%d/ -o /dev/null 2>&1", h_dir(), port, port);
	ASSERT_HAS(out, "ALPN: server accepted h2");
	free(out);
	out = h_run(&st, "cd '%s' && curl -sS -v --max-time 5 --http1.1 "
	    "--cacert root.pem --resolve a.example.test:%d:127.0.0.1 "
	    "https://a.example.test:%d/one 2>&1", h_dir(), port, port);
	ck_assert_msg(st == 0, "%s", brief(out));
	ASSERT_HAS(out, "ALPN: server accepted http/1.1");
	ASSERT_HAS(out, "hello from tlsproxy's demo backend: GET /one");
	free(out);

	/* The server's preference wins over the client's order. */
	out = sclient(&st, port, "a.example.test", "-alpn http/1.1,h2", NULL);
	ASSERT_HAS(out, "ALPN protocol: h2");
	free(out);
	/* The default context inherits [global] too. */
	out = sclient(&st, port, NULL, "-alpn http/1.1,h2", NULL);
	ASSERT_HAS(out, "ALPN protocol: h2");
	free(out);
	/* A context's own list replaces the global one. */
	out = sclient(&st, port, "b.example.test", "-alpn h2,http/1.1", NULL);
	ASSERT_HAS(out, "ALPN protocol: http/1.1");
	free(out);

	/* No overlap, not strict: the handshake goes on without ALPN. */
	out = sclient(&st, port, "b.example.test", "-alpn h2", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "No ALPN negotiated");
	free(out);
	out = sclient(&st, port, "a.example.test", "-alpn foo/1", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "No ALPN negotiated");
	free(out);

	/* Strict: no overlap is a no_application_protocol alert (120). */
	out = sclient(&st, port, "s.example.test", "-alpn http/1.1", REQ);
	ASSERT_REFUSED(st, out);
	ck_assert_msg(strcasestr(out, "no application protocol") != NULL ||
	    strstr(out, "alert number 120") != NULL, "%s", brief(out));
	free(out);
	out = sclient(&st, port, "s.example.test", "-alpn http/1.1,h2", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "ALPN protocol: h2");
	free(out);

	ck_assert(h_log_contains(&d, " alpn=h2 ", 2000));
	ck_assert(h_log_contains(&d, " alpn=http/1.1 ", 2000));
	stop(&d, &bpid, 1);
}
END_TEST

/* ---- 4. Routing by context and by ALPN ---- */

START_TEST(routing_by_context_and_alpn)
{
	enum { WEB, LGRPC, BK, CGRPC, NB };
	static const char *const names[NB] = { "web", "lgrpc", "bk", "cgrpc" };
	static const struct {
		const char *sni, *alpn;
		int want;
	} cases[] = {
		/* Listener: alpn_backend, then backend. */
		{ NULL, "h2", LGRPC },
		{ NULL, "http/1.1", WEB },
		{ NULL, NULL, WEB },
		{ "a.example.test", "h2", LGRPC },
		{ "a.example.test", "http/1.1", WEB },
		/* A context's backend beats the listener's alpn_backend. */
		{ "b.example.test", "h2", BK },
		{ "b.example.test", "http/1.1", BK },
		{ "b.example.test", NULL, BK },
		/* A context's alpn_backend beats its backend. */
		{ "c.example.test", "h2", CGRPC },
		{ "c.example.test", "http/1.1", BK },
		{ "c.example.test", NULL, BK },
		/* Another name of the same context routes the same. */
		{ "C.Example.Test.", "h2", CGRPC },
	};
	struct h_daemon d;
	pid_t bpid[NB];
	int bport[NB], port = h_free_port();
	char conf[8192], *out, *line, want[64], args[64];
	int st, n = 0;

	for (int i = 0; i < NB; i++)
		bport[i] = h_backend("http", NULL, &bpid[i]);
	conf_head(conf, sizeof(conf), port, "def", bport[WEB],
	    "alpn = h2, http/1.1\n", "alpn_backend = h2:lgrpc\n");
	for (int i = 1; i < NB; i++)
		cat(conf, sizeof(conf), "[backend %s]\naddress = 127.0.0.1:%d\n",
		    names[i], bport[i]);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default", NULL);
	conf_ctx(conf, sizeof(conf), "a", "a.example.test", "a", NULL);
	conf_ctx(conf, sizeof(conf), "b", "b.example.test", "b",
	    "backend = bk\n");
	conf_ctx(conf, sizeof(conf), "c", "c.example.test, c2.example.test",
	    "a", "backend = bk\nalpn_backend = h2:cgrpc, http/1.1:bk\n");
	start(&d, "route", conf, port);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(args, sizeof(args), "%s%s", cases[i].alpn ? "-alpn " :
		    "", cases[i].alpn ? cases[i].alpn : "");
		out = sclient(&st, port, cases[i].sni, args, REQ);
		ASSERT_SERVED(st, out);
		free(out);
		line = next_conn(&d, &n);
		snprintf(want, sizeof(want), "127.0.0.1:%d", bport[cases[i].want]);
		ck_assert_msg(strcmp(field(line, "backend"), want) == 0,
		    "SNI %s ALPN %s: backend %s, want %s (%s): %s",
		    cases[i].sni ? cases[i].sni : "-",
		    cases[i].alpn ? cases[i].alpn : "-", field(line, "backend"),
		    want, names[cases[i].want], line);
		ASSERT_FIELD(line, "alpn", cases[i].alpn ? cases[i].alpn : "-");
		free(line);
	}
	stop(&d, bpid, NB);
}
END_TEST

/* ---- 5. One RSA and one ECDSA certificate in a context ---- */

START_TEST(dual_rsa_and_ecdsa_certificates)
{
	static const struct {
		const char *args, *bits, *sigtype;
	} cases[] = {
		{ "-sigalgs rsa_pss_rsae_sha256", "2048", "RSA-PSS" },
		{ "-sigalgs ecdsa_secp256r1_sha256", "256", "ECDSA" },
		{ "-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256", "2048", NULL },
		{ "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256", "256", NULL },
		{ "-tls1_2 -sigalgs rsa_pkcs1_sha256", "2048", "RSA" },
	};
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out, args[256], want[128];
	int st;

	conf_head(conf, sizeof(conf), port, "def", bport, NULL, NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default", NULL);
	/* ECDSA pair first, RSA pair second: each cert with its key. */
	conf_ctx(conf, sizeof(conf), "dual", "dual.example.test", "dual-ec",
	    NULL);
	cat(conf, sizeof(conf), "cert = %s/dual-rsa.pem\nkey = %s/dual-rsa.key\n"
	    "ecdh_curve = auto\n", h_dir(), h_dir());
	start(&d, "dual", conf, port);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(args, sizeof(args), "%s -CAfile root.pem "
		    "-verify_return_error -verify_hostname dual.example.test",
		    cases[i].args);
		out = sclient(&st, port, "dual.example.test", args, REQ);
		ck_assert_msg(st == 0 && strstr(out, HELLO) != NULL, "%s: %s",
		    cases[i].args, brief(out));
		snprintf(want, sizeof(want), "Server public key is %s bit",
		    cases[i].bits);
		ck_assert_msg(strstr(out, want) != NULL, "%s: no '%s': %s",
		    cases[i].args, want, brief(out));
		if (cases[i].sigtype != NULL) {
			snprintf(want, sizeof(want), "Peer signature type: %s\n",
			    cases[i].sigtype);
			ck_assert_msg(strstr(out, want) != NULL, "%s: no '%s': %s",
			    cases[i].args, want, brief(out));
		}
		ASSERT_HAS(out, "Verify return code: 0 (ok)");
		free(out);
	}
	ASSERT_CN(port, "dual.example.test", "-sigalgs rsa_pss_rsae_sha256",
	    "dual.example.test");
	stop(&d, &bpid, 1);
}
END_TEST

/* ---- 6. Encrypted keys and PKCS#12 ---- */

START_TEST(encrypted_key_and_pkcs12)
{
	static const char *const names[] = { "enc.example.test",
		"enc2.example.test", "pfx.example.test" };
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out, args[256];
	int st;

	conf_head(conf, sizeof(conf), port, "def", bport, NULL, NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default", NULL);
	cat(conf, sizeof(conf), "[context enc]\nservername = enc.example.test\n"
	    "cert = %s/enc.pem\nkey = %s/enc.key\npassphrase = s3cret\n",
	    h_dir(), h_dir());
	cat(conf, sizeof(conf), "[context encf]\nservername = enc2.example.test\n"
	    "cert = %s/enc.pem\nkey = %s/enc.key\npassphrase_file = %s/enc.pass\n",
	    h_dir(), h_dir(), h_dir());
	cat(conf, sizeof(conf), "[context pfx]\nservername = pfx.example.test\n"
	    "pfx = %s/pfx.p12\npassphrase = p12pass\n", h_dir());
	start(&d, "keys", conf, port);
	ASSERT_CN(port, "enc.example.test", NULL, "enc.example.test");
	ASSERT_CN(port, "enc2.example.test", NULL, "enc.example.test");
	ASSERT_CN(port, "pfx.example.test", NULL, "pfx.example.test");
	ASSERT_CN(port, "other.example.test", NULL, "default.example.test");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		/* The PKCS#12 file's chain is sent too. */
		snprintf(args, sizeof(args), "-CAfile root.pem -verify_return_error "
		    "-verify_hostname %s", i == 1 ? "enc.example.test" : names[i]);
		out = sclient(&st, port, names[i], args, REQ);
		ASSERT_SERVED(st, out);
		ASSERT_HAS(out, "Verify return code: 0 (ok)");
		free(out);
	}
	stop(&d, &bpid, 1);
}
END_TEST

/* ---- 7. Client certificates ---- */

#define CLIENT(name) "-cert client-" name ".pem -key client-" name ".key"

/* mtls_conf: default context "def" (no client certificates) and context
 * "m" for a.example.test asking for them, with |extra| lines. */
static void
mtls_conf(char *conf, size_t len, int port, int bport, const char *extra)
{
	char m[1024];

	snprintf(m, sizeof(m), "request_cert = yes\nca = %s/client-ca.pem\n"
	    "crl = %s/client-crl.pem\nverify_depth = 4\nalpn = http/1.1\n%s",
	    h_dir(), h_dir(), extra);
	conf_head(conf, len, port, "def", bport, NULL, NULL);
	conf_ctx(conf, len, "def", NULL, "default", NULL);
	conf_ctx(conf, len, "m", "a.example.test", "a", m);
}

START_TEST(client_cert_required)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out, *line, js[512];
	int st, n = 0;

	mtls_conf(conf, sizeof(conf), port, bport, "");
	start(&d, "mtls", conf, port);

	out = sclient(&st, port, "a.example.test", "-msg " CLIENT("good"), REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, ", CertificateRequest");
	free(out);
	line = next_conn(&d, &n);
	ASSERT_FIELD(line, "auth", "authorized");
	free(line);

	/* No certificate, TLS 1.3 and 1.2. */
	out = sclient(&st, port, "a.example.test", "", REQ);
	ASSERT_REFUSED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_HAS(line, "handshake failed");
	free(line);
	out = sclient(&st, port, "a.example.test", "-tls1_2", REQ);
	ASSERT_REFUSED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_HAS(line, "handshake failed");
	free(line);

	out = sclient(&st, port, "a.example.test", CLIENT("revoked"), REQ);
	ASSERT_REFUSED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_HAS(line, "handshake failed");
	ASSERT_HAS(line, "revoked");
	free(line);

	out = sclient(&st, port, "a.example.test", CLIENT("expired"), REQ);
	ASSERT_REFUSED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_HAS(line, "handshake failed");
	ASSERT_HAS(line, "expired");
	free(line);

	out = sclient(&st, port, "a.example.test", CLIENT("untrusted"), REQ);
	ASSERT_REFUSED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_HAS(line, "handshake failed");
	free(line);

	/* curl with a client certificate. */
	out = h_run(&st, "cd '%s' && curl -sS --max-time 10 --cacert root.pem "
	    "--cert client-good.pem --key client-good.key "
	    "--resolve a.example.test:%d:127.0.0.1 https://a.example.test:%d/curl "
	    "2>&1", h_dir(), port, port);
	ck_assert_msg(st == 0, "%s", brief(out));
	ck_assert_str_eq(out, "hello from tlsproxy's demo backend: GET /curl\n");
	free(out);
	line = next_conn(&d, &n);
	ASSERT_FIELD(line, "auth", "authorized");
	ASSERT_HAS(line, "client_subject=\"CN=client good\"");
	free(line);

	/* Node's tls.connect with a client certificate. */
	snprintf(js, sizeof(js), "%s", h_write("mtls.js", node_script));
	out = h_run(&st, "timeout 20 node '%s' '%s' %d 2>&1", js, h_dir(), port);
	ck_assert_msg(st == 0, "%s", brief(out));
	ASSERT_HAS(out, "authorized=true alpn=http/1.1");
	ASSERT_HAS(out, "hello from tlsproxy's demo backend: GET /node");
	free(out);
	line = next_conn(&d, &n);
	ASSERT_FIELD(line, "auth", "authorized");
	ASSERT_FIELD(line, "alpn", "http/1.1");
	free(line);

	/* The default context asks for nothing. */
	out = sclient(&st, port, NULL, "-msg", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HASNT(out, "CertificateRequest");
	free(out);
	line = next_conn(&d, &n);
	ASSERT_FIELD(line, "auth", "-");
	free(line);
	stop(&d, &bpid, 1);
}
END_TEST

START_TEST(client_cert_reject_unauthorized_no)
{
	static const struct {
		const char *args, *auth, *auth2;
	} cases[] = {
		{ CLIENT("good"), "authorized", NULL },
		{ "", "none", NULL },
		{ CLIENT("revoked"), "certificate_revoked", NULL },
		{ CLIENT("expired"), "certificate_has_expired", NULL },
		/* The first error of an unknown issuer, or OpenSSL's final one
		 * for it (what Node reports as UNABLE_TO_VERIFY_LEAF_SIGNATURE). */
		{ CLIENT("untrusted"), "unable_to_get_local_issuer_certificate",
		    "unable_to_verify_the_first_certificate" },
		{ "-tls1_2", "none", NULL },
		{ "-tls1_2 " CLIENT("revoked"), "certificate_revoked", NULL },
	};
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out, *line;
	int st, n = 0;

	mtls_conf(conf, sizeof(conf), port, bport, "reject_unauthorized = no\n");
	start(&d, "mtls_lax", conf, port);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *auth;

		out = sclient(&st, port, "a.example.test", cases[i].args, REQ);
		ck_assert_msg(st == 0 && strstr(out, HELLO) != NULL,
		    "'%s' was refused: %s", cases[i].args, brief(out));
		free(out);
		line = next_conn(&d, &n);
		auth = field(line, "auth");
		ck_assert_msg(strcmp(auth, cases[i].auth) == 0 ||
		    (cases[i].auth2 != NULL && strcmp(auth, cases[i].auth2) == 0),
		    "'%s': auth=%s, want %s: %s", cases[i].args, auth,
		    cases[i].auth, line);
		free(line);
	}
	stop(&d, &bpid, 1);
}
END_TEST

START_TEST(client_cert_optional)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out, *line;
	int st, n = 0;

	mtls_conf(conf, sizeof(conf), port, bport, "require_cert = no\n");
	start(&d, "mtls_opt", conf, port);
	/* No certificate: let through. */
	out = sclient(&st, port, "a.example.test", "-msg", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, ", CertificateRequest");
	free(out);
	line = next_conn(&d, &n);
	ASSERT_FIELD(line, "auth", "none");
	free(line);
	out = sclient(&st, port, "a.example.test", "-tls1_2", REQ);
	ASSERT_SERVED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_FIELD(line, "auth", "none");
	free(line);
	/* A good one: authorized. */
	out = sclient(&st, port, "a.example.test", CLIENT("good"), REQ);
	ASSERT_SERVED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_FIELD(line, "auth", "authorized");
	free(line);
	/* Bad ones are still refused. */
	out = sclient(&st, port, "a.example.test", CLIENT("revoked"), REQ);
	ASSERT_REFUSED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_HAS(line, "revoked");
	free(line);
	out = sclient(&st, port, "a.example.test", CLIENT("expired"), REQ);
	ASSERT_REFUSED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_HAS(line, "expired");
	free(line);
	out = sclient(&st, port, "a.example.test", CLIENT("untrusted"), REQ);
	ASSERT_REFUSED(st, out);
	free(out);
	line = next_conn(&d, &n);
	ASSERT_HAS(line, "handshake failed");
	free(line);
	stop(&d, &bpid, 1);
}
END_TEST

/* ---- 8. Versions, ciphers and curves seen from clients ---- */

START_TEST(versions_ciphers_curves)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out;
	int st;

	/* [global] sets TLS 1.3 only; contexts override. */
	conf_head(conf, sizeof(conf), port, "def", bport,
	    "min_version = TLSv1.3\necdh_curve = X25519:P-256\n", NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default", NULL);
	conf_ctx(conf, sizeof(conf), "old", "old.example.test", "a",
	    "min_version = TLSv1.2\nmax_version = TLSv1.2\n");
	conf_ctx(conf, sizeof(conf), "ciph", "ciph.example.test", "a",
	    "min_version = TLSv1.2\nciphers = ECDHE-ECDSA-AES256-GCM-SHA384\n");
	conf_ctx(conf, sizeof(conf), "order", "order.example.test", "a",
	    "min_version = TLSv1.2\nciphers = ECDHE-ECDSA-AES256-GCM-SHA384:"
	    "ECDHE-ECDSA-AES128-GCM-SHA256\nhonor_cipher_order = yes\n");
	conf_ctx(conf, sizeof(conf), "corder", "corder.example.test", "a",
	    "min_version = TLSv1.2\nciphers = ECDHE-ECDSA-AES256-GCM-SHA384:"
	    "ECDHE-ECDSA-AES128-GCM-SHA256\nhonor_cipher_order = no\n");
	conf_ctx(conf, sizeof(conf), "curve", "curve.example.test", "a",
	    "ecdh_curve = P-384\n");
	start(&d, "versions", conf, port);

	/* min_version = TLSv1.3 (from [global]). */
	out = sclient(&st, port, NULL, "-tls1_2", NULL);
	ck_assert_msg(st != 0, "TLS 1.2 accepted: %s", brief(out));
	free(out);
	out = sclient(&st, port, NULL, "-tls1_3", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "New, TLSv1.3, Cipher is");
	free(out);
	out = h_run(&st, "cd '%s' && timeout 20 gnutls-cli -p %d "
	    "--x509cafile root.pem --sni-hostname default.example.test "
	    "--verify-hostname default.example.test "
	    "--priority NORMAL:-VERS-ALL:+VERS-TLS1.2 127.0.0.1 </dev/null 2>&1",
	    h_dir(), port);
	ck_assert_msg(st != 0, "gnutls-cli TLS 1.2 accepted: %s", brief(out));
	free(out);

	/* max_version = TLSv1.2. */
	out = sclient(&st, port, "old.example.test", "", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "New, TLSv1.2, Cipher is");
	ASSERT_HAS(out, "Protocol  : TLSv1.2");
	free(out);
	out = sclient(&st, port, "old.example.test", "-tls1_3", NULL);
	ck_assert_msg(st != 0, "TLS 1.3 accepted: %s", brief(out));
	free(out);
	out = h_run(&st, "cd '%s' && timeout 20 gnutls-cli -p %d "
	    "--x509cafile root.pem --sni-hostname old.example.test "
	    "--verify-hostname a.example.test "
	    "--priority NORMAL:-VERS-ALL:+VERS-TLS1.2 127.0.0.1 </dev/null 2>&1",
	    h_dir(), port);
	ck_assert_msg(st == 0, "gnutls-cli: %s", brief(out));
	ASSERT_HAS(out, "- Description: (TLS1.2");
	ASSERT_HAS(out, "Handshake was completed");
	free(out);

	/* ciphers: TLS 1.2 only gets the listed suite. */
	out = sclient(&st, port, "ciph.example.test", "-tls1_2", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384");
	free(out);
	out = sclient(&st, port, "ciph.example.test",
	    "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256:"
	    "ECDHE-ECDSA-CHACHA20-POLY1305", NULL);
	ck_assert_msg(st != 0, "AES128 client accepted: %s", brief(out));
	free(out);
	/* TLS 1.3 suites are not governed by it. */
	out = sclient(&st, port, "ciph.example.test", "-tls1_3", NULL);
	ck_assert_msg(st == 0, "%s", brief(out));
	ASSERT_HAS(out, "New, TLSv1.3, Cipher is");
	free(out);

	/* honor_cipher_order: the server's order, or the client's. */
	out = sclient(&st, port, "order.example.test", "-tls1_2 -cipher "
	    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384", NULL);
	ASSERT_HAS(out, "Cipher is ECDHE-ECDSA-AES256-GCM-SHA384");
	free(out);
	out = sclient(&st, port, "corder.example.test", "-tls1_2 -cipher "
	    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384", NULL);
	ASSERT_HAS(out, "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256");
	free(out);

	/* ecdh_curve = P-384. */
	out = sclient(&st, port, "curve.example.test", "-groups P-384", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "Server Temp Key: ECDH, secp384r1, 384 bits");
	free(out);
	out = sclient(&st, port, "curve.example.test", "-groups X25519", NULL);
	ck_assert_msg(st != 0, "X25519 accepted: %s", brief(out));
	free(out);
	out = sclient(&st, port, "curve.example.test",
	    "-tls1_2 -groups X25519:P-256", NULL);
	ck_assert_msg(st != 0, "X25519/P-256 accepted on TLS 1.2: %s", brief(out));
	free(out);
	/* The [global] curves elsewhere. */
	out = sclient(&st, port, NULL, "-groups X25519", NULL);
	ck_assert_msg(st == 0, "%s", brief(out));
	ASSERT_HAS(out, "Server Temp Key: X25519");
	free(out);
	out = sclient(&st, port, NULL, "-groups P-384", NULL);
	ck_assert_msg(st != 0, "P-384 accepted by the default context: %s", brief(out));
	free(out);
	stop(&d, &bpid, 1);
}
END_TEST

/* ---- 9. Sessions stay in their context ---- */

/* resume_checks: a session made with |proto| args for a.example.test is
 * resumed there, but not for b.example.test, which asks for a client
 * certificate. |tag| names the session file. */
static void
resume_checks(const struct h_daemon *d, const char *tag, const char *proto)
{
	char args[1024], sess[512];
	char *out;
	int st;

	snprintf(sess, sizeof(sess), "%s/sess-%s.pem", h_dir(), tag);
	unlink(sess);
	/* With a request, the client stays until the server closes, so TLS
	 * 1.3 tickets arrive. */
	snprintf(args, sizeof(args), "%s -sess_out %s", proto, sess);
	out = sclient(&st, d->port, "a.example.test", args, REQ);
	ASSERT_SERVED(st, out);
	ck_assert_msg(strstr(out, "\nNew, ") != NULL, "%s: %s", tag, brief(out));
	free(out);

	snprintf(args, sizeof(args), "%s -sess_in %s", proto, sess);
	out = sclient(&st, d->port, "a.example.test", args, REQ);
	ASSERT_SERVED(st, out);
	ck_assert_msg(strstr(out, "\nReused, ") != NULL,
	    "%s: same context, not resumed: %s", tag, brief(out));
	free(out);

	/* Another context: a full handshake, with its certificate request. */
	snprintf(args, sizeof(args), "%s -sess_in %s -msg", proto, sess);
	out = sclient(&st, d->port, "b.example.test", args, REQ);
	ck_assert_msg(strstr(out, "\nReused, ") == NULL,
	    "%s: session resumed in another context: %s", tag, brief(out));
	ASSERT_HAS(out, ", CertificateRequest");
	ASSERT_REFUSED(st, out);
	free(out);
	snprintf(args, sizeof(args), "%s -sess_in %s " CLIENT("good"), proto,
	    sess);
	out = sclient(&st, d->port, "b.example.test", args, REQ);
	ASSERT_SERVED(st, out);
	ck_assert_msg(strstr(out, "\nNew, ") != NULL && strstr(out,
	    "\nReused, ") == NULL, "%s: session resumed in another context: %s",
	    tag, brief(out));
	free(out);

	/* Nor the other way round into a context without a request. */
	out = sclient(&st, d->port, "c.example.test", args, REQ);
	ASSERT_SERVED(st, out);
	ck_assert_msg(strstr(out, "\nReused, ") == NULL,
	    "%s: session resumed in another context: %s", tag, brief(out));
	free(out);
}

START_TEST(sessions_stay_in_their_context)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], b[1024], *log;
	int st;

	conf_head(conf, sizeof(conf), port, "def", bport, NULL, NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default", NULL);
	conf_ctx(conf, sizeof(conf), "a", "a.example.test", "a",
	    "session_id_context = ctx-a\n");
	snprintf(b, sizeof(b), "request_cert = yes\nca = %s/client-ca.pem\n",
	    h_dir());
	conf_ctx(conf, sizeof(conf), "b", "b.example.test", "b", b);
	/* Same certificate as a, different context. */
	conf_ctx(conf, sizeof(conf), "c", "c.example.test", "a", NULL);
	start(&d, "sessions", conf, port);
	resume_checks(&d, "tls12-id", "-tls1_2 -no_ticket");
	resume_checks(&d, "tls12-ticket", "-tls1_2");
	resume_checks(&d, "tls13", "-tls1_3");
	ck_assert(h_log_contains(&d, "resumed=yes", 2000));
	/* Only the three same-context resumptions. */
	log = h_run(&st, "grep 'conn id=' '%s' | grep -c 'resumed=yes'", d.log);
	ck_assert_msg(atoi(log) == 3, "resumed connections: %s", log);
	free(log);
	stop(&d, &bpid, 1);
}
END_TEST

/* ---- 10. Config errors ---- */

/* base_conf: a valid config whose context "def" starts at line 9; the
 * caller appends lines. */
static void
base_conf(char *conf, size_t len, const char *global)
{
	conf[0] = '\0';
	cat(conf, len, "[global]\nworkers = 1\n%s[listener t]\n"
	    "bind = 127.0.0.1:1\ncontext = def\nbackend = b\n[backend b]\n"
	    "address = 127.0.0.1:2\n", global ? global : "");
	conf_ctx(conf, len, "def", NULL, "default", NULL);
}

START_TEST(config_errors)
{
	char conf[8192], want[32], *out, *err;
	int st, l1, l2;

	/* The base is good. */
	base_conf(conf, sizeof(conf), NULL);
	conf_ctx(conf, sizeof(conf), "x", "x.example.test, *.w.example.test",
	    "a", "ciphers = ECDHE-ECDSA-AES128-GCM-SHA256\n"
	    "min_version = TLSv1.2\nmax_version = TLSv1.3\n"
	    "ecdh_curve = X25519:P-256\nalpn = h2, http/1.1\n"
	    "max_send_fragment = 16384\nhonor_cipher_order = yes\n");
	out = check_conf(&st, "err_good", conf);
	ck_assert_msg(st == 0, "%s\nconfig:\n%s", brief(out), conf);
	free(out);

	/* The same name in two contexts. */
	base_conf(conf, sizeof(conf), NULL);
	conf_ctx(conf, sizeof(conf), "first", "z.example.test, a.example.test",
	    "a", NULL);
	conf_ctx(conf, sizeof(conf), "second", "y.example.test, a.example.test",
	    "b", NULL);
	l1 = line_of(conf, "servername = z.example.test", 1);
	l2 = line_of(conf, "servername = y.example.test", 1);
	out = check_conf(&st, "err_dupname", conf);
	ck_assert_msg(st == 1, "exit %d: %s", st, brief(out));
	err = error_line(out, "err_dupname", l2, "servername");
	ck_assert_msg(err != NULL, "no err_dupname.conf:%d: key 'servername': in %s",
	    l2, brief(out));
	ck_assert_msg(strstr(err, "'a.example.test'") != NULL &&
	    strstr(err, "is already served by") != NULL &&
	    strstr(err, "[context first]") != NULL, "%s", err);
	snprintf(want, sizeof(want), "(line %d)", l1);
	ck_assert_msg(strstr(err, want) != NULL, "no '%s' in: %s", want, err);
	free(err);
	free(out);

	/* Unknown cipher (BoringSSL's list is strict), in a context and in
	 * [global]. */
	base_conf(conf, sizeof(conf), NULL);
	cat(conf, sizeof(conf), "ciphers = ECDHE-ECDSA-AES128-GCM-SHA256:"
	    "NO-SUCH-CIPHER\n");
	expect_error("err_cipher", conf, "cipher", 1,
	    line_of(conf, "ciphers =", 1), "ciphers");
	base_conf(conf, sizeof(conf), "ciphers = NO-SUCH-CIPHER\n");
	expect_error("err_gcipher", conf, "cipher", 1, 3, "ciphers");

	/* SSLv3 is never accepted. */
	base_conf(conf, sizeof(conf), NULL);
	cat(conf, sizeof(conf), "min_version = SSLv3\n");
	expect_error("err_sslv3", conf, "SSLv3", 1,
	    line_of(conf, "min_version", 1), "min_version");

	/* dhparam: no finite-field DHE at all. */
	base_conf(conf, sizeof(conf), NULL);
	cat(conf, sizeof(conf), "dhparam = %s/root.pem\n", h_dir());
	expect_error("err_dhparam", conf, "DHE", 1, line_of(conf, "dhparam", 1),
	    "dhparam");

	/* Two certificates, one key. */
	base_conf(conf, sizeof(conf), NULL);
	conf_ctx(conf, sizeof(conf), "two", "two.example.test", NULL, NULL);
	cat(conf, sizeof(conf), "cert = %s/dual-ec.pem\ncert = %s/dual-rsa.pem\n"
	    "key = %s/dual-ec.key\n", h_dir(), h_dir(), h_dir());
	expect_error("err_count", conf, NULL, 3,
	    line_of(conf, "dual-rsa.pem", 1), "cert",
	    line_of(conf, "dual-ec.key", 1), "key",
	    line_of(conf, "dual-ec.pem", 1), "cert");

	/* Encrypted key: wrong passphrase, then none. */
	base_conf(conf, sizeof(conf), NULL);
	cat(conf, sizeof(conf), "[context enc]\nservername = enc.example.test\n"
	    "cert = %s/enc.pem\nkey = %s/enc.key\npassphrase = wrong\n",
	    h_dir(), h_dir());
	expect_error("err_badpass", conf, "passphrase", 2,
	    line_of(conf, "enc.key", 1), "key",
	    line_of(conf, "passphrase", 1), "passphrase");
	base_conf(conf, sizeof(conf), NULL);
	cat(conf, sizeof(conf), "[context enc]\nservername = enc.example.test\n"
	    "cert = %s/enc.pem\nkey = %s/enc.key\n", h_dir(), h_dir());
	expect_error("err_nopass", conf, "passphrase", 1,
	    line_of(conf, "enc.key", 1), "key");
	/* A wrong PKCS#12 passphrase. */
	base_conf(conf, sizeof(conf), NULL);
	cat(conf, sizeof(conf), "[context pfx]\nservername = pfx.example.test\n"
	    "pfx = %s/pfx.p12\npassphrase = wrong\n", h_dir());
	expect_error("err_badp12", conf, "passphrase", 2,
	    line_of(conf, "pfx.p12", 1), "pfx",
	    line_of(conf, "passphrase", 1), "passphrase");

	/* max_send_fragment is 512 to 16384. */
	base_conf(conf, sizeof(conf), NULL);
	cat(conf, sizeof(conf), "max_send_fragment = 100\n");
	expect_error("err_frag", conf, "512", 1,
	    line_of(conf, "max_send_fragment", 1), "max_send_fragment");
	base_conf(conf, sizeof(conf), "max_send_fragment = 16385\n");
	expect_error("err_gfrag", conf, "16384", 1, 3, "max_send_fragment");
}
END_TEST

START_TEST(old_versions_accepted_with_warning)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out;
	int st;

	conf_head(conf, sizeof(conf), port, "def", bport, NULL, NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default",
	    "min_version = TLSv1.1\n");
	conf_ctx(conf, sizeof(conf), "v10", "v10.example.test", "a",
	    "min_version = TLSv1\nmax_version = TLSv1.2\n");
	out = check_conf(&st, "old_t", conf);
	ck_assert_msg(st == 0, "%s", brief(out));
	free(out);
	start(&d, "old", conf, port);
	out = h_run(&st, "grep -i warning '%s' | grep 'TLSv1.1'", d.log);
	ck_assert_msg(out[0] != '\0', "no warning about TLSv1.1");
	free(out);
	out = h_run(&st, "grep -i warning '%s' | grep -E \"TLSv1([^.0-9]|$)\"",
	    d.log);
	ck_assert_msg(out[0] != '\0', "no warning about TLSv1");
	free(out);
	/* Modern clients are still served. */
	out = sclient(&st, port, "v10.example.test", "-tls1_2", REQ);
	ASSERT_SERVED(st, out);
	free(out);
	out = sclient(&st, port, NULL, "", REQ);
	ASSERT_SERVED(st, out);
	ASSERT_HAS(out, "New, TLSv1.3, Cipher is");
	free(out);
	stop(&d, &bpid, 1);
}
END_TEST

/* ---- 11. max_send_fragment ---- */

START_TEST(max_send_fragment_small_records)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("echo", NULL, &bpid), port = h_free_port();
	char conf[8192], sent[80], *out;
	int st;

	conf_head(conf, sizeof(conf), port, "def", bport, NULL, NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default",
	    "max_send_fragment = 512\n");
	conf_ctx(conf, sizeof(conf), "a", "a.example.test", "a",
	    "max_send_fragment = 512\n");
	out = check_conf(&st, "frag_t", conf);
	ck_assert_msg(st == 0, "%s", brief(out));
	free(out);
	start(&d, "frag", conf, port);
	for (int i = 0; i < 3; i++) {
		out = h_run(&st, "%s %s %s --send-bytes 100000 --timeout 30 "
		    "127.0.0.1:%d", h_bin("client"), i == 1 ? "--tls12" : "",
		    i == 2 ? "--servername a.example.test" : "", port);
		ck_assert_msg(st == 0, "%s", brief(out));
		ASSERT_FIELD(out, "ok", "1");
		ASSERT_FIELD(out, "received", "100000");
		snprintf(sent, sizeof(sent), "%s", field(out, "sent_sha256"));
		ASSERT_FIELD(out, "received_sha256", sent);
		free(out);
	}
	ck_assert(h_log_contains(&d, "bytes_in=100000 bytes_out=100000", 2000));
	stop(&d, &bpid, 1);
	/* Below the minimum: refused. */
	conf_head(conf, sizeof(conf), port, "def", bport, NULL, NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default",
	    "max_send_fragment = 100\n");
	out = check_conf(&st, "frag_bad", conf);
	ck_assert_msg(st == 1, "%s", brief(out));
	ASSERT_HAS(out, "key 'max_send_fragment': ");
	free(out);
}
END_TEST

static int
write_file(const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", h_dir(), name);
	if ((f = fopen(path, "w")) == NULL || fputs(text, f) < 0 ||
	    fclose(f) != 0) {
		perror(path);
		return -1;
	}
	return 0;
}

START_TEST(expired_certificate_sct_npn_and_listings)
{
	static const char sct_script[] =
	    /* A SignedCertificateTimestampList holding one (unsigned, made
	     * up) SCT: BoringSSL checks the framing, clients see the bytes.
	     * And a CT log list with no logs, which s_client -ct needs. */
	    "python3 -c 'import struct; "
	    "sct = bytes(1) + bytes([17]) * 32 + struct.pack(\">QH\", "
	    "1700000000000, 0) + bytes([4, 3, 0, 4, 48, 2, 1, 0]); "
	    "l = struct.pack(\">H\", len(sct)) + sct; "
	    "open(\"sct.bin\", \"wb\").write(struct.pack(\">H\", "
	    "len(l)) + l)' && printf 'enabled_logs =\\n' > ct-logs.cnf && "
	    "wc -c < sct.bin";
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("http", NULL, &bpid), port = h_free_port();
	char conf[8192], *out;
	int st;

	out = h_run(&st, "cd '%s' && %s", h_dir(), sct_script);
	ck_assert_msg(st == 0 && atoi(out) == 55, "sct.bin: %s", out);
	free(out);
	conf_head(conf, sizeof(conf), port, "def", bport, NULL, NULL);
	conf_ctx(conf, sizeof(conf), "def", NULL, "default", NULL);
	/* An expired certificate is loaded with a warning, not refused:
	 * operators replace it and reload. */
	conf_ctx(conf, sizeof(conf), "old", "old.example.test", NULL, NULL);
	cat(conf, sizeof(conf), "cert = %s/client-expired.pem\n"
	    "key = %s/client-expired.key\n", h_dir(), h_dir());
	conf_ctx(conf, sizeof(conf), "meta", "meta.example.test", "a",
	    "sct = sct.bin\nnpn = http/1.1, spdy/3\nmax_version = TLSv1.2\n");
	/* sct = relative to the scratch dir is not what the daemon sees. */
	{
		char *p = strstr(conf, "sct = sct.bin");
		char fixed[8192];

		*p = '\0';
		snprintf(fixed, sizeof(fixed), "%ssct = %s/sct.bin%s", conf,
		    h_dir(), p + strlen("sct = sct.bin"));
		snprintf(conf, sizeof(conf), "%s", fixed);
	}
	start(&d, "meta", conf, port);
	ck_assert(h_log_contains(&d, "context 'old': certificate '", 0));
	ck_assert(h_log_contains(&d, "is not valid now (valid from Jan  1 "
	    "00:00:00 2020 GMT until Jan  2 00:00:00 2020 GMT)", 0));
	ck_assert_str_eq(served_cn(port, "old.example.test", NULL),
	    "client expired");
	out = sclient(&st, port, "meta.example.test",
	    "-ct -ctlogfile ct-logs.cnf -nextprotoneg http/1.1", NULL);
	ck_assert_msg(strstr(out, "SCTs present (1)") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "Next protocol: (1) http/1.1") != NULL, "%s",
	    out);
	free(out);
	stop(&d, &bpid, 1);

	out = h_run(&st, "%s --list-ciphers", h_bin("tlsproxy"));
	ck_assert_int_eq(st, 0);
	ck_assert_ptr_nonnull(strstr(out, "TLS_AES_128_GCM_SHA256\n"));
	ck_assert_ptr_nonnull(strstr(out, "ECDHE-ECDSA-AES128-GCM-SHA256\n"));
	free(out);
	out = h_run(&st, "%s --list-curves", h_bin("tlsproxy"));
	ck_assert_int_eq(st, 0);
	ck_assert_str_eq(out, h_has_mlkem() ?
	    "X25519MLKEM768\nX25519\nP-256\nP-384\nP-521\n" :
	    "X25519\nP-256\nP-384\nP-521\n");
	free(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("contexts");
	TCase *tc = tcase_create("contexts");
	char *out;
	int st;

	h_setup("contexts");
	/* Outside a test: no ck_assert (so not h_write) before check_run. */
	if (write_file("cca.cnf", cca_cnf) != 0 ||
	    write_file("gen.sh", gen_script) != 0)
		return 1;
	out = h_run(&st, "cd '%s' && sh -e gen.sh 2>&1", h_dir());
	if (st != 0) {
		fprintf(stderr, "making the contexts certificates failed:\n%s\n",
		    out);
		return 1;
	}
	free(out);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, sni_selects_context_certificate);
	tcase_add_test(tc, sni_strict_refuses_unknown_names);
	tcase_add_test(tc, alpn_negotiation);
	tcase_add_test(tc, routing_by_context_and_alpn);
	tcase_add_test(tc, dual_rsa_and_ecdsa_certificates);
	tcase_add_test(tc, encrypted_key_and_pkcs12);
	tcase_add_test(tc, client_cert_required);
	tcase_add_test(tc, client_cert_reject_unauthorized_no);
	tcase_add_test(tc, client_cert_optional);
	tcase_add_test(tc, versions_ciphers_curves);
	tcase_add_test(tc, sessions_stay_in_their_context);
	tcase_add_test(tc, config_errors);
	tcase_add_test(tc, old_versions_accepted_with_warning);
	tcase_add_test(tc, max_send_fragment_small_records);
	tcase_add_test(tc, expired_certificate_sct_npn_and_listings);
	suite_add_tcase(s, tc);
	return check_run(s);
}
