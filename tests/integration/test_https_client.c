/* The HTTPS client of the ACME flow against real servers on loopback:
 * nginx serving a static file, and a Python TLS server (written out at
 * setup) for what nginx cannot easily do: chunked bodies, several Link
 * headers, Replay-Nonce and Retry-After, interim responses, headers and
 * bodies past the caps, truncated and malformed answers, an answer that
 * never comes. Certificates: the harness's CA and its leaf (localhost,
 * 127.0.0.1, ::1), a leaf for another name by the same CA, and a
 * localhost leaf by a CA nobody trusts. Also the deadline, the cancel
 * descriptor, CA file errors, and the Retry-After parser. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "../check_run.h"
#include "clock.h"
#include "harness.h"
#include "https_client.h"

/* Certificates beside the harness's:
 *   other  DNS:other.example.test by the harness's CA
 *   rogue  a CA nobody trusts; rogue-leaf: localhost and 127.0.0.1 by it
 *   garbage.pem  not PEM at all */
static const char gen_script[] =
    "set -e\n"
    "leaf() {\n"
    "  printf 'subjectAltName=%s\\n' \"$2\" > \"$1.ext\"\n"
    "  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "-keyout \"$1.key\" -out \"$1.csr\" -subj \"/CN=$1\"\n"
    "  openssl x509 -req -in \"$1.csr\" -CA \"$3.pem\" -CAkey \"$3.key\" "
    "-CAcreateserial -days 2 -extfile \"$1.ext\" -out \"$1.pem\"\n"
    "}\n"
    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "-keyout rogue.key -out rogue.pem -days 2 -subj '/CN=rogue CA'\n"
    "leaf other DNS:other.example.test ca\n"
    "leaf rogue-leaf DNS:localhost,IP:127.0.0.1 rogue\n"
    "printf 'this is not a certificate\\n' > garbage.pem\n"
    "head -c 300000 /dev/urandom > static.bin\n"
    "mkdir -p nginx/www && cp static.bin nginx/www/static.bin\n";

static const char server_py[] =
    "# A TLS server for test_https_client: each path answers in a way nginx\n"
    "# cannot easily be made to. Usage: server.py PORT CERT KEY\n"
    "import hashlib, socket, ssl, sys, threading, time\n"
    "\n"
    "port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]\n"
    "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "ctx.load_cert_chain(cert, key)\n"
    "OK = b\"HTTP/1.1 200 OK\\r\\n\"\n"
    "\n"
    "def read_request(c):\n"
    "    data = b\"\"\n"
    "    while b\"\\r\\n\\r\\n\" not in data:\n"
    "        d = c.recv(65536)\n"
    "        if not d:\n"
    "            return None\n"
    "        data += d\n"
    "    head, body = data.split(b\"\\r\\n\\r\\n\", 1)\n"
    "    lines = head.decode(\"latin-1\").split(\"\\r\\n\")\n"
    "    method, path, _ = lines[0].split(\" \", 2)\n"
    "    hdrs = {}\n"
    "    for l in lines[1:]:\n"
    "        k, v = l.split(\":\", 1)\n"
    "        hdrs[k.strip().lower()] = v.strip()\n"
    "    n = int(hdrs.get(\"content-length\", \"0\"))\n"
    "    while len(body) < n:\n"
    "        d = c.recv(65536)\n"
    "        if not d:\n"
    "            break\n"
    "        body += d\n"
    "    return method, path, lines, hdrs, body\n"
    "\n"
    "def filler(c, n):\n"
    "    for i in range(n):\n"
    "        c.sendall(b\"X-Filler-%d: %s\\r\\n\" % (i, b\"f\" * 1000))\n"
    "\n"
    "def answer(c, req):\n"
    "    method, path, lines, hdrs, body = req\n"
    "    if path == \"/echo\":\n"
    "        text = (\"method=%s\\nsha256=%s\\nlength=%d\\ntype=%s\\nhost=%s\\n\"\n"
    "                \"agent=%s\\nconnection=%s\\nrequest=%s\\n\" % (\n"
    "                    method, hashlib.sha256(body).hexdigest(),\n"
    "                    len(body), hdrs.get(\"content-type\", \"-\"),\n"
    "                    hdrs.get(\"host\", \"-\"),\n"
    "                    hdrs.get(\"user-agent\", \"-\"),\n"
    "                    hdrs.get(\"connection\", \"-\"), lines[0]))\n"
    "        text = text.encode()\n"
    "        c.sendall(OK + b\"Content-Length: %d\\r\\n\\r\\n\" % len(text)\n"
    "                  + text)\n"
    "    elif path == \"/chunked\":\n"
    "        c.sendall(b\"HTTP/1.1 201 Created\\r\\n\"\n"
    "                  b\"transfer-encoding: chunked\\r\\n\"\n"
    "                  b\"Content-Type: application/json\\r\\n\\r\\n\")\n"
    "        parts = (b'{\"status\":', b' \"valid\", ',\n"
    "                 b'\"x\": \"' + b\"y\" * 40000 + b'\"}')\n"
    "        for part in parts:\n"
    "            c.sendall(b\"%x;ext=1\\r\\n\" % len(part) + part + b\"\\r\\n\")\n"
    "            time.sleep(0.02)\n"
    "        c.sendall(b\"0\\r\\nX-Trailer: t\\r\\n\\r\\n\")\n"
    "    elif path == \"/links\":\n"
    "        body = b'{\"ok\":true}'\n"
    "        c.sendall(OK + b\"Replay-Nonce: nonce-1_abc\\r\\n\"\n"
    "                  b\"retry-after: Sun, 06 Nov 1994 08:49:37 GMT\\r\\n\"\n"
    "                  b\"LOCATION: https://example.test/acme/order/1\\r\\n\"\n"
    "                  b'Link: <https://example.test/dir>;rel=\"index\"\\r\\n'\n"
    "                  b'Link: <https://example.test/alt1>; '\n"
    "                  b'rel=\"alternate\", <https://example.test/alt2>;'\n"
    "                  b'title=\"a, b; c\";rel=alternate\\r\\n'\n"
    "                  b\"link: <https://example.test/up>; rel=up\\r\\n\"\n"
    "                  b\"Link: garbage, <https://example.test/both>; \"\n"
    "                  b'rel=\"up alternate\"; rel=index\\r\\n'\n"
    "                  b\"Content-Type: application/json\\r\\n\"\n"
    "                  b\"X-Folded: one\\r\\n two\\r\\n\"\n"
    "                  b\"Content-Length: %d\\r\\n\\r\\n\" % len(body) + body)\n"
    "    elif path == \"/bigheaders\":\n"
    "        c.sendall(OK)\n"
    "        filler(c, 70)\n"
    "        c.sendall(b\"Content-Length: 2\\r\\n\\r\\nok\")\n"
    "    elif path == \"/justunder\":\n"
    "        c.sendall(OK)\n"
    "        filler(c, 60)\n"
    "        c.sendall(b\"Content-Length: 2\\r\\n\\r\\nok\")\n"
    "    elif path == \"/bigbody\":\n"
    "        n = 1024 * 1024 + 1\n"
    "        c.sendall(OK + b\"Content-Length: %d\\r\\n\\r\\n\" % n)\n"
    "        c.sendall(b\"b\" * n)\n"
    "    elif path == \"/exactbody\":\n"
    "        n = 1024 * 1024\n"
    "        c.sendall(OK + b\"Content-Length: %d\\r\\n\\r\\n\" % n)\n"
    "        c.sendall(b\"e\" * n)\n"
    "    elif path == \"/bigchunked\":\n"
    "        c.sendall(OK + b\"Transfer-Encoding: chunked\\r\\n\\r\\n\")\n"
    "        for i in range(20):\n"
    "            c.sendall(b\"10000\\r\\n\" + b\"c\" * 65536 + b\"\\r\\n\")\n"
    "        c.sendall(b\"0\\r\\n\\r\\n\")\n"
    "    elif path == \"/bigclose\":\n"
    "        c.sendall(OK + b\"Connection: close\\r\\n\\r\\n\")\n"
    "        c.sendall(b\"u\" * (1024 * 1024 + 100))\n"
    "    elif path == \"/close\":\n"
    "        c.sendall(OK + b\"Connection: close\\r\\n\\r\\nuntil the end\\n\")\n"
    "        try:\n"
    "            c.unwrap()\n"
    "        except Exception:\n"
    "            pass\n"
    "    elif path == \"/closeunclean\":\n"
    "        c.sendall(OK + b\"\\r\\nno close_notify\\n\")\n"
    "    elif path == \"/interim\":\n"
    "        c.sendall(b\"HTTP/1.1 100 Continue\\r\\n\\r\\n\"\n"
    "                  b\"HTTP/1.1 103 Early Hints\\r\\n\"\n"
    "                  b\"Link: </style.css>; rel=preload\\r\\n\\r\\n\"\n"
    "                  b\"HTTP/1.1 204 No Content\\r\\n\"\n"
    "                  b\"Replay-Nonce: after-interim\\r\\n\\r\\n\")\n"
    "    elif path == \"/truncated\":\n"
    "        c.sendall(OK + b\"Content-Length: 100\\r\\n\\r\\n0123456789\")\n"
    "    elif path == \"/garbage\":\n"
    "        c.sendall(b\"SMTP ready\\r\\n\\r\\n\")\n"
    "    elif path == \"/silent\":\n"
    "        time.sleep(30)\n"
    "    elif path == \"/retry\":\n"
    "        c.sendall(b\"HTTP/1.1 503 Service Unavailable\\r\\n\"\n"
    "                  b\"Retry-After: 120\\r\\nReplay-Nonce: n2\\r\\n\"\n"
    "                  b\"Content-Length: 0\\r\\n\\r\\n\")\n"
    "    else:\n"
    "        c.sendall(b\"HTTP/1.1 404 Not Found\\r\\n\"\n"
    "                  b\"Content-Length: 0\\r\\n\\r\\n\")\n"
    "\n"
    "def serve(raw):\n"
    "    try:\n"
    "        c = ctx.wrap_socket(raw, server_side=True)\n"
    "    except Exception:\n"
    "        raw.close()\n"
    "        return\n"
    "    try:\n"
    "        c.settimeout(40)\n"
    "        req = read_request(c)\n"
    "        if req is not None:\n"
    "            answer(c, req)\n"
    "    except Exception as e:\n"
    "        sys.stderr.write(\"server: %r\\n\" % (e,))\n"
    "    finally:\n"
    "        try:\n"
    "            c.close()\n"
    "        except Exception:\n"
    "            pass\n"
    "\n"
    "ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
    "ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "ls.bind((\"127.0.0.1\", port))\n"
    "ls.listen(64)\n"
    "while True:\n"
    "    raw, _ = ls.accept()\n"
    "    threading.Thread(target=serve, args=(raw,), daemon=True).start()\n";

/* Setup runs outside any test: failures exit with the reason. */
static void
make_files(void)
{
	char path[600], *out;
	FILE *f;
	int st;

	/* Not h_write: its checks only work inside a test. */
	snprintf(path, sizeof(path), "%s/gen-hc.sh", h_dir());
	f = fopen(path, "w");
	if (f == NULL || fputs(gen_script, f) < 0) {
		fprintf(stderr, "test_https_client setup: cannot write %s\n",
		    path);
		exit(1);
	}
	fclose(f);
	snprintf(path, sizeof(path), "%s/server.py", h_dir());
	f = fopen(path, "w");
	if (f == NULL || fputs(server_py, f) < 0) {
		fprintf(stderr, "test_https_client setup: cannot write %s\n",
		    path);
		exit(1);
	}
	fclose(f);
	out = h_run(&st, "cd '%s' && sh gen-hc.sh 2>&1", h_dir());
	if (st != 0) {
		fprintf(stderr, "test_https_client setup: making certificates "
		    "failed: %s\n", out);
		exit(1);
	}
	free(out);
}

/* ---- Servers. */

/* spawn runs |cmd| through sh with stdout and stderr to |log|, dying with
 * the test process (Check forks one per test). */
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
 * |pid| exits first. */
static void
wait_port(pid_t pid, int port, const char *log)
{
	for (int i = 0; i < 400; i++) {
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

/* nginx's three servers: the harness's leaf (localhost, 127.0.0.1, ::1)
 * on 127.0.0.1 and ::1, a leaf for other.example.test, and a localhost
 * leaf by the rogue CA. Each serves nginx/www and /hello. */
struct ngx {
	pid_t pid;
	int good, other, rogue;
};

static void
nginx_start(struct ngx *n)
{
	char conf[8192], path[600], log[600];
	const char *d = h_dir();
	static const char server_fmt[] =
	    " server {\n  listen 127.0.0.1:%d ssl;\n%s"
	    "  ssl_certificate %s/%s.pem;\n  ssl_certificate_key %s/%s.key;\n"
	    "  root %s/nginx/www;\n"
	    "  location = /hello { default_type text/plain;\n"
	    "   return 200 \"hello from nginx\\n\"; }\n }\n";
	char good[1024], other[1024], rogue[1024], v6[64];

	n->good = h_free_port();
	n->other = h_free_port();
	n->rogue = h_free_port();
	snprintf(v6, sizeof(v6), "  listen [::1]:%d ssl;\n", n->good);
	snprintf(good, sizeof(good), server_fmt, n->good, v6, d, "leaf", d,
	    "leaf", d);
	snprintf(other, sizeof(other), server_fmt, n->other, "", d, "other", d,
	    "other", d);
	snprintf(rogue, sizeof(rogue), server_fmt, n->rogue, "", d,
	    "rogue-leaf", d, "rogue-leaf", d);
	snprintf(conf, sizeof(conf),
	    "worker_processes 1;\nmaster_process off;\ndaemon off;\n"
	    "error_log %s/nginx/error.log info;\npid %s/nginx/nginx.pid;\n"
	    "events { worker_connections 64; }\n"
	    "http {\n"
	    " access_log %s/nginx/access.log;\n"
	    " client_body_temp_path %s/nginx;\n proxy_temp_path %s/nginx;\n"
	    " fastcgi_temp_path %s/nginx;\n uwsgi_temp_path %s/nginx;\n"
	    " scgi_temp_path %s/nginx;\n"
	    " types { application/octet-stream bin; }\n"
	    " ssl_protocols TLSv1.2 TLSv1.3;\n"
	    "%s%s%s}\n",
	    d, d, d, d, d, d, d, d, good, other, rogue);
	snprintf(path, sizeof(path), "%s", h_write("nginx/nginx.conf", conf));
	snprintf(log, sizeof(log), "%s/nginx/stderr.log", d);
	n->pid = spawn(log, "exec nginx -p %s/nginx -c %s", d, path);
	wait_port(n->pid, n->good, log);
	wait_port(n->pid, n->other, log);
	wait_port(n->pid, n->rogue, log);
}

/* pyserver starts server.py with the harness's leaf; returns its port. */
static int
pyserver(pid_t *pid)
{
	char log[600];
	int port = h_free_port();

	snprintf(log, sizeof(log), "%s/server-%d.log", h_dir(), port);
	*pid = spawn(log, "exec python3 %s/server.py %d %s/leaf.pem "
	    "%s/leaf.key", h_dir(), port, h_dir(), h_dir());
	wait_port(*pid, port, log);
	return port;
}

/* silent_listener listens on 127.0.0.1 and never accepts: connections
 * complete in the kernel and nothing answers them. */
static int
silent_listener(int *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	getsockname(fd, (struct sockaddr *)&sin, &len);
	*port = ntohs(sin.sin_port);
	return fd;
}

/* ---- The client. */

static struct https_client *
client_with(const char *ca)
{
	char path[600], err[512];
	struct https_client *hc;

	snprintf(path, sizeof(path), "%s/%s", h_dir(), ca);
	hc = https_client_new(path, err, sizeof(err));
	ck_assert_msg(hc != NULL, "https_client_new: %s", err);
	return hc;
}

static struct https_client *
client(void)
{
	return client_with("ca.pem");
}

static char last_err[1024];

/* req makes a request allowed |timeout_ms|; the message of a failure is
 * left in last_err. */
static int
req(struct https_client *hc, const char *method, const char *url,
    const char *ctype, const void *body, size_t len, int timeout_ms,
    int cancel_fd, struct https_response *resp)
{
	return https_request(hc, method, url, ctype, body, len,
	    clock_mono_ms() + (uint64_t)timeout_ms, cancel_fd, resp, last_err,
	    sizeof(last_err));
}

static void
get_ok(struct https_client *hc, const char *url, struct https_response *resp)
{
	ck_assert_msg(req(hc, "GET", url, NULL, NULL, 0, 10000, -1, resp) == 0,
	    "GET %s: %s", url, last_err);
}

/* get_fails_within GETs |url| with |timeout_ms| expecting a failure
 * whose message starts with the URL and contains |want|. */
static void
get_fails_within(struct https_client *hc, const char *url, int timeout_ms,
    const char *want)
{
	struct https_response resp;
	char prefix[600];

	ck_assert_msg(req(hc, "GET", url, NULL, NULL, 0, timeout_ms, -1,
	    &resp) == -1, "GET %s succeeded (status %d)", url, resp.status);
	snprintf(prefix, sizeof(prefix), "%s: ", url);
	ck_assert_msg(strncmp(last_err, prefix, strlen(prefix)) == 0,
	    "'%s' does not start with '%s'", last_err, prefix);
	ck_assert_msg(strstr(last_err, want) != NULL, "want '%s': %s", want,
	    last_err);
	ck_assert_ptr_null(resp.body);
	ck_assert_uint_eq(resp.num_headers, 0);
	https_response_free(&resp);
}

static void
get_fails(struct https_client *hc, const char *url, const char *want)
{
	get_fails_within(hc, url, 10000, want);
}

static char *
url_of(const char *host, int port, const char *path)
{
	static char buf[4][300];
	static int i;
	char *u = buf[i++ % 4];

	snprintf(u, sizeof(buf[0]), "https://%s:%d%s", host, port, path);
	return u;
}

static char *
read_file(const char *name, size_t *len)
{
	char path[600], *data;
	FILE *f;
	long n;

	snprintf(path, sizeof(path), "%s/%s", h_dir(), name);
	f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	data = malloc((size_t)n);
	ck_assert_uint_eq(fread(data, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return data;
}

/* ---- Tests. */

START_TEST(static_file_from_nginx)
{
	struct https_client *hc = client();
	struct https_response resp;
	struct ngx n;
	size_t len;
	char *want = read_file("static.bin", &len);

	nginx_start(&n);
	get_ok(hc, url_of("localhost", n.good, "/static.bin"), &resp);
	ck_assert_int_eq(resp.status, 200);
	ck_assert_uint_eq(resp.body_len, len);
	ck_assert_msg(memcmp(resp.body, want, len) == 0, "body differs");
	ck_assert_str_eq(resp.content_type, "application/octet-stream");
	ck_assert_str_eq(https_response_header(&resp, "content-length"),
	    "300000");
	https_response_free(&resp);
	ck_assert_ptr_null(resp.body);

	get_ok(hc, url_of("localhost", n.good, "/hello#fragment"), &resp);
	ck_assert_int_eq(resp.status, 200);
	ck_assert_str_eq(resp.body, "hello from nginx\n");
	https_response_free(&resp);

	get_ok(hc, url_of("localhost", n.good, "/missing"), &resp);
	ck_assert_int_eq(resp.status, 404);
	https_response_free(&resp);
	free(want);
	https_client_free(hc);
	stop(n.pid);
}
END_TEST

/* An IPv4 or IPv6 literal is checked against the IP SANs (the harness's
 * leaf has 127.0.0.1 and ::1), and no SNI is sent. */
START_TEST(ip_literals_with_ip_sans)
{
	struct https_client *hc = client();
	struct https_response resp;
	struct ngx n;

	nginx_start(&n);
	get_ok(hc, url_of("127.0.0.1", n.good, "/hello"), &resp);
	ck_assert_int_eq(resp.status, 200);
	ck_assert_str_eq(resp.body, "hello from nginx\n");
	https_response_free(&resp);

	get_ok(hc, url_of("[::1]", n.good, "/hello"), &resp);
	ck_assert_int_eq(resp.status, 200);
	ck_assert_str_eq(resp.body, "hello from nginx\n");
	https_response_free(&resp);
	https_client_free(hc);
	stop(n.pid);
}
END_TEST

START_TEST(head_has_no_body)
{
	struct https_client *hc = client();
	struct https_response resp;
	struct ngx n;
	const char *url;

	nginx_start(&n);
	url = url_of("localhost", n.good, "/static.bin");
	ck_assert_msg(req(hc, "HEAD", url, NULL, NULL, 0, 10000, -1, &resp) ==
	    0, "HEAD: %s", last_err);
	ck_assert_int_eq(resp.status, 200);
	ck_assert_uint_eq(resp.body_len, 0);
	ck_assert_ptr_nonnull(resp.body);
	ck_assert_str_eq(https_response_header(&resp, "Content-Length"),
	    "300000");
	https_response_free(&resp);
	https_client_free(hc);
	stop(n.pid);
}
END_TEST

/* A chain to a CA the client does not trust fails verification, with the
 * X509 reason; trusting that CA lets the same server through. */
START_TEST(untrusted_ca_refused)
{
	struct https_client *hc = client(), *rogue = client_with("rogue.pem");
	struct https_response resp;
	struct ngx n;
	const char *url;

	nginx_start(&n);
	url = url_of("localhost", n.rogue, "/hello");
	get_fails(hc, url, "certificate verify failed: "
	    "unable to get local issuer certificate");
	get_ok(rogue, url, &resp);
	ck_assert_str_eq(resp.body, "hello from nginx\n");
	https_response_free(&resp);
	/* And the other way round. */
	get_fails(rogue, url_of("localhost", n.good, "/hello"),
	    "certificate verify failed: ");
	https_client_free(hc);
	https_client_free(rogue);
	stop(n.pid);
}
END_TEST

/* A certificate of the right CA for another name, or a name where an IP
 * was asked for, is refused. */
START_TEST(name_mismatch_refused)
{
	struct https_client *hc = client();
	struct ngx n;
	char *low;

	nginx_start(&n);
	get_fails(hc, url_of("localhost", n.other, "/hello"),
	    "certificate verify failed: ");
	low = strdup(last_err);
	for (char *p = low; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	ck_assert_msg(strstr(low, "mismatch") != NULL &&
	    strstr(low, "(expected localhost)") != NULL, "%s", last_err);
	free(low);
	get_fails(hc, url_of("127.0.0.1", n.other, "/hello"),
	    "(expected 127.0.0.1)");
	https_client_free(hc);
	stop(n.pid);
}
END_TEST

/* The system store: the test CA is not in it. */
START_TEST(system_store_does_not_trust_the_test_ca)
{
	char err[512];
	struct https_client *hc = https_client_new(NULL, err, sizeof(err));
	struct ngx n;

	if (hc == NULL) {
		ck_assert_msg(strstr(err, "no ca, and the system store") != NULL,
		    "%s", err);
		return;
	}
	nginx_start(&n);
	get_fails(hc, url_of("localhost", n.good, "/hello"),
	    "certificate verify failed: ");
	https_client_free(hc);
	stop(n.pid);
}
END_TEST

START_TEST(ca_file_errors)
{
	char err[512], path[600], want[700];

	ck_assert_ptr_null(https_client_new("/nonexistent/ca.pem", err,
	    sizeof(err)));
	ck_assert_str_eq(err, "cannot open '/nonexistent/ca.pem': "
	    "No such file or directory");
	snprintf(path, sizeof(path), "%s/garbage.pem", h_dir());
	ck_assert_ptr_null(https_client_new(path, err, sizeof(err)));
	snprintf(want, sizeof(want), "cannot load CA certificates from '%s' (",
	    path);
	ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "%s", err);
}
END_TEST

/* A POST body arrives intact, with the headers the client sends. */
START_TEST(post_body_intact)
{
	struct https_client *hc = client();
	struct https_response resp;
	pid_t pid;
	int port = pyserver(&pid);
	size_t len = 200000;
	uint8_t *body = malloc(len), digest[SHA256_DIGEST_LENGTH];
	char hex[2 * SHA256_DIGEST_LENGTH + 1], want[600];

	for (size_t i = 0; i < len; i++)
		body[i] = (uint8_t)(i * 7 + i / 251);
	SHA256(body, len, digest);
	for (size_t i = 0; i < sizeof(digest); i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	ck_assert_msg(req(hc, "POST", url_of("localhost", port, "/echo"),
	    "application/jose+json", body, len, 10000, -1, &resp) == 0, "%s",
	    last_err);
	ck_assert_int_eq(resp.status, 200);
	snprintf(want, sizeof(want), "method=POST\nsha256=%s\nlength=%zu\n"
	    "type=application/jose+json\nhost=localhost:%d\n"
	    "agent=tlsproxy/%s\nconnection=close\n"
	    "request=POST /echo HTTP/1.1\n", hex, len, port, TLSPROXY_VERSION);
	ck_assert_str_eq(resp.body, want);
	https_response_free(&resp);

	/* An empty POST still says Content-Length: 0; a GET has no body
	 * headers. */
	ck_assert_msg(req(hc, "POST", url_of("127.0.0.1", port, "/echo"),
	    "application/jose+json", NULL, 0, 10000, -1, &resp) == 0, "%s",
	    last_err);
	ck_assert_msg(strstr(resp.body, "length=0\n") != NULL &&
	    strstr(resp.body, "host=127.0.0.1:") != NULL, "%s", resp.body);
	https_response_free(&resp);
	get_ok(hc, url_of("localhost", port, "/echo"), &resp);
	ck_assert_msg(strstr(resp.body, "method=GET\n") != NULL &&
	    strstr(resp.body, "type=-\n") != NULL, "%s", resp.body);
	https_response_free(&resp);
	free(body);
	https_client_free(hc);
	stop(pid);
}
END_TEST

START_TEST(chunked_body)
{
	struct https_client *hc = client();
	struct https_response resp;
	pid_t pid;
	int port = pyserver(&pid);
	static const char start[] = "{\"status\": \"valid\", \"x\": \"";
	char *want = malloc(41000), *p = want;

	p = stpcpy(p, start);
	memset(p, 'y', 40000);
	strcpy(p + 40000, "\"}");
	get_ok(hc, url_of("localhost", port, "/chunked"), &resp);
	ck_assert_int_eq(resp.status, 201);
	ck_assert_str_eq(resp.content_type, "application/json");
	ck_assert_uint_eq(resp.body_len, strlen(want));
	ck_assert_msg(strcmp(resp.body, want) == 0, "chunked body differs");
	https_response_free(&resp);
	free(want);
	https_client_free(hc);
	stop(pid);
}
END_TEST

/* Several Link headers, several links in one, quoted commas, rels that
 * list several types; Replay-Nonce, Location and Retry-After whatever
 * their case. */
START_TEST(links_and_acme_headers)
{
	struct https_client *hc = client();
	struct https_response resp;
	pid_t pid;
	int port = pyserver(&pid);
	size_t pos = 0;
	uint64_t ms = 1;
	const char *alternates[] = { "https://example.test/alt1",
		"https://example.test/alt2", "https://example.test/both" };

	get_ok(hc, url_of("localhost", port, "/links"), &resp);
	ck_assert_int_eq(resp.status, 200);
	ck_assert_str_eq(resp.body, "{\"ok\":true}");
	ck_assert_str_eq(resp.replay_nonce, "nonce-1_abc");
	ck_assert_str_eq(resp.location, "https://example.test/acme/order/1");
	ck_assert_str_eq(resp.retry_after, "Sun, 06 Nov 1994 08:49:37 GMT");
	ck_assert_int_eq(https_retry_after(resp.retry_after, time(NULL), &ms),
	    0);
	ck_assert_uint_eq(ms, 0);
	ck_assert_str_eq(https_response_header(&resp, "x-folded"), "one two");
	ck_assert_uint_eq(resp.num_links, 5);
	ck_assert_str_eq(https_response_link(&resp, "index"),
	    "https://example.test/dir");
	ck_assert_str_eq(https_response_link(&resp, "up"),
	    "https://example.test/up");
	ck_assert_str_eq(https_response_link(&resp, "UP"),
	    "https://example.test/up");
	ck_assert_str_eq(https_response_link(&resp, "alternate"),
	    "https://example.test/alt1");
	ck_assert_ptr_null(https_response_link(&resp, "next"));
	ck_assert_ptr_null(https_response_link(&resp, "alt"));
	for (size_t i = 0; i < 3; i++)
		ck_assert_str_eq(https_response_links(&resp, "alternate", &pos),
		    alternates[i]);
	ck_assert_ptr_null(https_response_links(&resp, "alternate", &pos));
	pos = 0;
	ck_assert_str_eq(https_response_links(&resp, "up", &pos),
	    "https://example.test/up");
	ck_assert_str_eq(https_response_links(&resp, "up", &pos),
	    "https://example.test/both");
	ck_assert_ptr_null(https_response_links(&resp, "up", &pos));
	/* Only the first rel of a link counts. */
	pos = 0;
	ck_assert_str_eq(https_response_links(&resp, "index", &pos),
	    "https://example.test/dir");
	ck_assert_ptr_null(https_response_links(&resp, "index", &pos));
	https_response_free(&resp);

	get_ok(hc, url_of("localhost", port, "/retry"), &resp);
	ck_assert_int_eq(resp.status, 503);
	ck_assert_str_eq(resp.replay_nonce, "n2");
	ck_assert_int_eq(https_retry_after(resp.retry_after, time(NULL), &ms),
	    0);
	ck_assert_uint_eq(ms, 120000);
	ck_assert_uint_eq(resp.body_len, 0);
	ck_assert_uint_eq(resp.num_links, 0);
	ck_assert_ptr_null(resp.location);
	https_response_free(&resp);
	https_client_free(hc);
	stop(pid);
}
END_TEST

/* 100 and 103 go by; the 204 after them is the answer. */
START_TEST(interim_responses_skipped)
{
	struct https_client *hc = client();
	struct https_response resp;
	pid_t pid;
	int port = pyserver(&pid);

	get_ok(hc, url_of("localhost", port, "/interim"), &resp);
	ck_assert_int_eq(resp.status, 204);
	ck_assert_str_eq(resp.replay_nonce, "after-interim");
	ck_assert_uint_eq(resp.num_links, 0);
	ck_assert_uint_eq(resp.body_len, 0);
	https_response_free(&resp);
	https_client_free(hc);
	stop(pid);
}
END_TEST

START_TEST(read_until_close)
{
	struct https_client *hc = client();
	struct https_response resp;
	pid_t pid;
	int port = pyserver(&pid);

	get_ok(hc, url_of("localhost", port, "/close"), &resp);
	ck_assert_str_eq(resp.body, "until the end\n");
	https_response_free(&resp);
	get_ok(hc, url_of("localhost", port, "/closeunclean"), &resp);
	ck_assert_str_eq(resp.body, "no close_notify\n");
	https_response_free(&resp);
	https_client_free(hc);
	stop(pid);
}
END_TEST

START_TEST(headers_capped)
{
	struct https_client *hc = client();
	struct https_response resp;
	pid_t pid;
	int port = pyserver(&pid);

	get_fails(hc, url_of("localhost", port, "/bigheaders"),
	    "the headers exceed 64 KiB");
	get_ok(hc, url_of("localhost", port, "/justunder"), &resp);
	ck_assert_str_eq(resp.body, "ok");
	ck_assert_uint_eq(resp.num_headers, 61);
	https_response_free(&resp);
	https_client_free(hc);
	stop(pid);
}
END_TEST

/* 1 MiB is the most a body may be, whatever its framing. */
START_TEST(body_capped)
{
	struct https_client *hc = client();
	struct https_response resp;
	pid_t pid;
	int port = pyserver(&pid);

	get_fails(hc, url_of("localhost", port, "/bigbody"),
	    "the response body exceeds 1048576 bytes");
	get_fails(hc, url_of("localhost", port, "/bigchunked"),
	    "the response body exceeds 1048576 bytes");
	get_fails(hc, url_of("localhost", port, "/bigclose"),
	    "the response body exceeds 1048576 bytes");
	get_ok(hc, url_of("localhost", port, "/exactbody"), &resp);
	ck_assert_uint_eq(resp.body_len, 1024 * 1024);
	ck_assert_int_eq(resp.body[0], 'e');
	ck_assert_int_eq(resp.body[1024 * 1024 - 1], 'e');
	ck_assert_int_eq(resp.body[1024 * 1024], '\0');
	https_response_free(&resp);
	https_client_free(hc);
	stop(pid);
}
END_TEST

START_TEST(malformed_responses)
{
	struct https_client *hc = client();
	pid_t pid;
	int port = pyserver(&pid);

	get_fails(hc, url_of("localhost", port, "/truncated"),
	    "closed the connection after 10 of 100 body bytes");
	get_fails(hc, url_of("localhost", port, "/garbage"),
	    "malformed response: bad status line");
	https_client_free(hc);
	stop(pid);
}
END_TEST

START_TEST(connect_refused)
{
	struct https_client *hc = client();
	int port = h_free_port();

	get_fails(hc, url_of("127.0.0.1", port, "/"), "cannot connect to "
	    "127.0.0.1:");
	ck_assert_msg(strstr(last_err, "Connection refused") != NULL, "%s",
	    last_err);
	get_fails(hc, url_of("[::1]", port, "/"), "Connection refused");
	get_fails(hc, url_of("localhost", port, "/"), "Connection refused");
	https_client_free(hc);
}
END_TEST

START_TEST(invalid_requests)
{
	struct https_client *hc = client();
	struct https_response resp;

	get_fails(hc, "http://localhost/", "not https://");
	get_fails(hc, "https:///x", "no host");
	get_fails(hc, "https://localhost:99999/", "bad port");
	get_fails(hc, "https://localhost:44x/", "bad port");
	get_fails(hc, "https://[::1/", "bad IPv6 literal");
	/* Control characters do not reach the message either. */
	ck_assert_int_eq(req(hc, "GET", "https://exa\nmple/", NULL, NULL, 0,
	    1000, -1, &resp), -1);
	ck_assert_str_eq(last_err, "https://exa?mple/: invalid URL: spaces, "
	    "control characters or non-ASCII bytes");
	get_fails(hc, "https://user@localhost/", "bad host name");
	ck_assert_int_eq(req(hc, "PUT", "https://localhost/", NULL, NULL, 0,
	    1000, -1, &resp), -1);
	ck_assert_msg(strstr(last_err, "not GET, HEAD or POST") != NULL, "%s",
	    last_err);
	ck_assert_int_eq(req(hc, "POST", "https://localhost/", "a\r\nb: c",
	    "x", 1, 1000, -1, &resp), -1);
	ck_assert_msg(strstr(last_err, "Content-Type") != NULL, "%s",
	    last_err);
	https_client_free(hc);
}
END_TEST

/* The deadline holds in the handshake (a listener that never answers)
 * and while the response is awaited (a server that reads the request and
 * says nothing). */
START_TEST(deadline_honoured)
{
	struct https_client *hc = client();
	pid_t pid;
	int port = pyserver(&pid), sport, lfd = silent_listener(&sport);
	long long t0, dt;

	t0 = h_now_ms();
	get_fails_within(hc, url_of("127.0.0.1", sport, "/"), 800,
	    "timed out in the TLS handshake");
	dt = h_now_ms() - t0;
	ck_assert_msg(dt >= 750 && dt < 2500, "took %lld ms", dt);

	t0 = h_now_ms();
	get_fails_within(hc, url_of("localhost", port, "/silent"), 800,
	    "timed out waiting for the response");
	dt = h_now_ms() - t0;
	ck_assert_msg(dt >= 750 && dt < 2500, "took %lld ms", dt);
	close(lfd);
	https_client_free(hc);
	stop(pid);
}
END_TEST

struct canceller {
	int fd;
	int delay_ms;
};

static void *
cancel_later(void *arg)
{
	struct canceller *c = arg;

	usleep((useconds_t)c->delay_ms * 1000);
	if (write(c->fd, "x", 1) != 1)
		abort();
	return NULL;
}

/* cancelled_within requests |url| with a deadline far off and the cancel
 * pipe written after |delay_ms|, and checks it ends soon after. */
static void
cancelled_within(struct https_client *hc, const char *url, int delay_ms)
{
	struct canceller c = { .delay_ms = delay_ms };
	struct https_response resp;
	pthread_t t;
	int p[2];
	long long t0, dt;

	ck_assert_int_eq(pipe(p), 0);
	c.fd = p[1];
	t0 = h_now_ms();
	if (delay_ms > 0)
		ck_assert_int_eq(pthread_create(&t, NULL, cancel_later, &c), 0);
	else
		ck_assert_int_eq(write(p[1], "x", 1), 1);
	ck_assert_int_eq(req(hc, "GET", url, NULL, NULL, 0, 20000, p[0],
	    &resp), -1);
	dt = h_now_ms() - t0;
	ck_assert_str_eq(last_err, HTTPS_CANCELLED);
	ck_assert_msg(dt >= delay_ms - 50 && dt < delay_ms + 1500,
	    "took %lld ms", dt);
	https_response_free(&resp);
	if (delay_ms > 0)
		pthread_join(t, NULL);
	close(p[0]);
	close(p[1]);
}

START_TEST(cancel_fd_ends_the_wait)
{
	struct https_client *hc = client();
	pid_t pid;
	int port = pyserver(&pid), sport, lfd = silent_listener(&sport);

	cancelled_within(hc, url_of("127.0.0.1", sport, "/"), 300);
	cancelled_within(hc, url_of("localhost", port, "/silent"), 300);
	cancelled_within(hc, url_of("localhost", port, "/silent"), 0);
	close(lfd);
	https_client_free(hc);
	stop(pid);
}
END_TEST

/* A Sunday, 6 December 2026, 12:00:00 UTC. */
#define NOW ((time_t)1796558400)

START_TEST(retry_after_parser)
{
	uint64_t ms = 7;
	struct tm tm;

	ck_assert_ptr_nonnull(gmtime_r(&(time_t){ NOW }, &tm));
	ck_assert_int_eq(tm.tm_year, 126);
	ck_assert_int_eq(tm.tm_mon, 11);
	ck_assert_int_eq(tm.tm_mday, 6);
	ck_assert_int_eq(tm.tm_hour, 12);
	ck_assert_int_eq(tm.tm_wday, 0);

	ck_assert_int_eq(https_retry_after("120", NOW, &ms), 0);
	ck_assert_uint_eq(ms, 120000);
	ck_assert_int_eq(https_retry_after(" 0 ", NOW, &ms), 0);
	ck_assert_uint_eq(ms, 0);
	ck_assert_int_eq(https_retry_after("99999999999999999999999", NOW, &ms),
	    0);
	ck_assert_uint_eq(ms, UINT64_MAX);
	/* IMF-fixdate, RFC 850 and asctime. */
	ck_assert_int_eq(https_retry_after("Sun, 06 Dec 2026 12:01:30 GMT",
	    NOW, &ms), 0);
	ck_assert_uint_eq(ms, 90000);
	ck_assert_int_eq(https_retry_after("Mon, 07 Dec 2026 12:00:00 GMT",
	    NOW, &ms), 0);
	ck_assert_uint_eq(ms, 86400000);
	ck_assert_int_eq(https_retry_after("Sunday, 06-Dec-26 12:00:10 GMT",
	    NOW, &ms), 0);
	ck_assert_uint_eq(ms, 10000);
	ck_assert_int_eq(https_retry_after("Sun Dec  6 12:00:20 2026", NOW,
	    &ms), 0);
	ck_assert_uint_eq(ms, 20000);
	ck_assert_int_eq(https_retry_after("Thu Dec 31 23:59:59 2026", NOW,
	    &ms), 0);
	ck_assert_uint_eq(ms, (uint64_t)(25 * 86400 + 11 * 3600 + 3599) * 1000);
	/* Past dates: no wait. An RFC 850 year more than 50 years ahead is
	 * the century before. */
	ms = 7;
	ck_assert_int_eq(https_retry_after("Sun, 06 Nov 1994 08:49:37 GMT",
	    NOW, &ms), 0);
	ck_assert_uint_eq(ms, 0);
	ms = 7;
	ck_assert_int_eq(https_retry_after("Sunday, 06-Nov-94 08:49:37 GMT",
	    NOW, &ms), 0);
	ck_assert_uint_eq(ms, 0);
	/* Not Retry-After. */
	ck_assert_int_eq(https_retry_after("", NOW, &ms), -1);
	ck_assert_int_eq(https_retry_after("soon", NOW, &ms), -1);
	ck_assert_int_eq(https_retry_after("12s", NOW, &ms), -1);
	ck_assert_int_eq(https_retry_after("-5", NOW, &ms), -1);
	ck_assert_int_eq(https_retry_after("Sun, 06 Dec 2026 12:01:30 UTC",
	    NOW, &ms), -1);
	ck_assert_int_eq(https_retry_after("Sun, 06 Foo 2026 12:01:30 GMT",
	    NOW, &ms), -1);
	ck_assert_int_eq(https_retry_after("Sun, 32 Dec 2026 12:01:30 GMT",
	    NOW, &ms), -1);
	ck_assert_int_eq(https_retry_after("Sun, 06 Dec 2026 12:01:30 GMT x",
	    NOW, &ms), -1);
	ck_assert_int_eq(https_retry_after(NULL, NOW, &ms), -1);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("https_client");
	TCase *tc = tcase_create("https_client");

	h_setup("https_client");
	make_files();
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, retry_after_parser);
	tcase_add_test(tc, ca_file_errors);
	tcase_add_test(tc, invalid_requests);
	tcase_add_test(tc, static_file_from_nginx);
	tcase_add_test(tc, ip_literals_with_ip_sans);
	tcase_add_test(tc, head_has_no_body);
	tcase_add_test(tc, untrusted_ca_refused);
	tcase_add_test(tc, name_mismatch_refused);
	tcase_add_test(tc, system_store_does_not_trust_the_test_ca);
	tcase_add_test(tc, connect_refused);
	tcase_add_test(tc, post_body_intact);
	tcase_add_test(tc, chunked_body);
	tcase_add_test(tc, links_and_acme_headers);
	tcase_add_test(tc, interim_responses_skipped);
	tcase_add_test(tc, read_until_close);
	tcase_add_test(tc, headers_capped);
	tcase_add_test(tc, body_capped);
	tcase_add_test(tc, malformed_responses);
	tcase_add_test(tc, deadline_honoured);
	tcase_add_test(tc, cancel_fd_ends_the_wait);
	suite_add_tcase(s, tc);
	return check_run(s);
}
