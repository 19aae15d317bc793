/* PROXY protocol to backends: nginx (listen ... proxy_protocol) reading
 * v1 and v2 and reporting $proxy_protocol_addr, and tlsproxy-backend's
 * own v2 parser checking every TLV, driven by Node clients from
 * 127.0.0.2 with ALPN, SNI and a client certificate. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

/* A client CA and a client certificate "CN=pp client". */
static void
make_client_cert(void)
{
	int st;
	char *out = h_run(&st, "cd %s && set -e; "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -keyout cca.key -out cca.pem -days 2 -subj /CN=pp-ca "
	    "2>/dev/null; openssl req -newkey ec -pkeyopt "
	    "ec_paramgen_curve:P-256 -nodes -keyout client.key -out client.csr "
	    "-subj '/CN=pp client' 2>/dev/null; openssl x509 -req -in "
	    "client.csr -CA cca.pem -CAkey cca.key -CAcreateserial -days 2 "
	    "-out client.pem 2>&1", h_dir());

	ck_assert_msg(st == 0, "%s", out);
	free(out);
}

/* node_line connects from 127.0.0.2 with SNI localhost, ALPN h2 and
 * (optionally) the client certificate, sends "hello" and prints the first
 * line the backend answered plus the byte count of the rest. */
static char *
node_line(int port, int with_cert)
{
	return h_run(NULL, "cd %s && timeout 20 node -e \""
	    "const tls = require('tls'), fs = require('fs');"
	    "const o = { port: %d, host: '127.0.0.1', localAddress: '127.0.0.2',"
	    " servername: 'localhost', ALPNProtocols: ['h2'],"
	    " rejectUnauthorized: false };"
	    "if (%d) { o.cert = fs.readFileSync('client.pem');"
	    " o.key = fs.readFileSync('client.key'); }"
	    "const s = tls.connect(o, () => s.end('hello'));"
	    "let data = '';"
	    "s.on('data', (d) => data += d);"
	    "s.on('end', () => { const i = data.indexOf('\\\\n');"
	    " console.log(data.slice(0, i) + ' rest=' + data.slice(i + 1)); });"
	    "s.on('error', (e) => console.log('error ' + e.message));\" 2>&1",
	    h_dir(), port, with_cert);
}

static const char *
conf(int port, int bport, const char *listener_extra,
    const char *backend_extra)
{
	static char text[4096];

	snprintf(text, sizeof(text),
	    "[global]\nworkers = 2\nlog_level = debug\n"
	    "[listener pp]\nbind = 127.0.0.1:%d\ncontext = main\nbackend = b\n"
	    "%s\n"
	    "[backend b]\naddress = 127.0.0.1:%d\n%s\n"
	    "[context main]\ncert = %s/leaf.pem\nkey = %s/leaf.key\n"
	    "alpn = h2, http/1.1\nrequest_cert = yes\n"
	    "reject_unauthorized = no\nca = %s/cca.pem\n",
	    port, listener_extra, bport, backend_extra, h_dir(), h_dir(),
	    h_dir());
	return text;
}

START_TEST(v2_tlvs_reach_the_backend)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("proxy", NULL, &bpid), port = h_free_port();
	char *out, *der, want[256];

	make_client_cert();
	ck_assert_int_eq(h_daemon_start(&d, "v2", conf(port, bport,
	    "proxy_protocol = v2", "")), 0);
	out = node_line(port, 1);
	snprintf(want, sizeof(want), "dst=127.0.0.1:%d alpn=h2 "
	    "authority=localhost ssl=1 client=07 verify=0 version=TLSv1.3 "
	    "cn=pp%%20client cipher=TLS_AES_", port);
	/* Node picks AES-256 or AES-128 depending on its build. */
	ck_assert_msg(strncmp(out, "proxy=v2 src=127.0.0.2:", 23) == 0 &&
	    strstr(out, want) != NULL && strstr(out, "_GCM_SHA") != NULL &&
	    strstr(out, " sig_alg=ecdsa-with-SHA256 key_alg=EC256 "
	    "rest=hello") != NULL, "got: %s\nwant: %s", out, want);
	free(out);
	/* The header is not the client's: bytes_in counts "hello" only. */
	ck_assert(h_log_contains(&d, "bytes_in=5 bytes_out=", 2000));
	/* Without a client certificate: no CN, no client bits. */
	out = node_line(port, 0);
	ck_assert_msg(strstr(out, "ssl=1 client=01 verify=1 ") != NULL &&
	    strstr(out, "cn=") == NULL && strstr(out, "rest=hello"), "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);

	/* The backend can ask for the certificate itself, overriding the
	 * listener (which sends no header at all here). */
	ck_assert_int_eq(h_daemon_start(&d, "v2cert", conf(port, bport, "",
	    "proxy_protocol = v2\nproxy_protocol_client_cert = yes")), 0);
	out = node_line(port, 1);
	der = h_run(NULL, "openssl x509 -in %s/client.pem -outform DER | wc -c",
	    h_dir());
	ck_assert_msg(strstr(out, "cn=pp%20client") != NULL &&
	    strstr(out, "cert_len=") != NULL &&
	    atoi(strstr(out, "cert_len=") + 9) == atoi(der), "%s (DER %s)", out,
	    der);
	free(der);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

START_TEST(v1_reaches_the_backend)
{
	struct h_daemon d;
	pid_t bpid;
	int bport = h_backend("proxy", NULL, &bpid), port = h_free_port();
	char *out, want[128];

	make_client_cert();
	ck_assert_int_eq(h_daemon_start(&d, "v1", conf(port, bport, "",
	    "proxy_protocol = v1")), 0);
	out = node_line(port, 0);
	snprintf(want, sizeof(want), " dst=127.0.0.1:%d rest=hello", port);
	ck_assert_msg(strncmp(out, "proxy=v1 src=127.0.0.2:", 23) == 0 &&
	    strstr(out, want) != NULL, "%s", out);
	free(out);
	ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	kill(bpid, SIGTERM);
}
END_TEST

/* start_nginx runs nginx in the foreground on |port| with proxy_protocol,
 * answering every request with the address the header gave it. */
static pid_t
start_nginx(int port)
{
	char conf[2048], path[600];
	pid_t pid;

	free(h_run(NULL, "mkdir -p %s/nginx/logs", h_dir()));
	snprintf(conf, sizeof(conf),
	    "worker_processes 1;\nerror_log %s/nginx/error.log;\n"
	    "pid %s/nginx/nginx.pid;\nevents { worker_connections 64; }\n"
	    "http {\n access_log off;\n"
	    " client_body_temp_path %s/nginx;\n proxy_temp_path %s/nginx;\n"
	    " fastcgi_temp_path %s/nginx;\n uwsgi_temp_path %s/nginx;\n"
	    " scgi_temp_path %s/nginx;\n"
	    " server {\n  listen 127.0.0.1:%d proxy_protocol;\n"
	    "  location / { return 200 \"addr=$proxy_protocol_addr "
	    "port=$proxy_protocol_port server_port=$proxy_protocol_server_port"
	    "\\n\"; }\n }\n}\n",
	    h_dir(), h_dir(), h_dir(), h_dir(), h_dir(), h_dir(), h_dir(),
	    port);
	snprintf(path, sizeof(path), "%s", h_write("nginx.conf", conf));
	pid = fork();
	if (pid == 0) {
		execlp("nginx", "nginx", "-p", h_dir(), "-c", path, "-g",
		    "daemon off;", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 100; i++) {
		char *out = h_run(NULL, "curl -s -o /dev/null -w '%%{http_code}' "
		    "--haproxy-protocol http://127.0.0.1:%d/ 2>/dev/null", port);
		int up = strcmp(out, "200") == 0;

		free(out);
		if (up)
			return pid;
		usleep(50000);
	}
	ck_abort_msg("nginx did not start on port %d", port);
	return -1;
}

START_TEST(nginx_reads_v1_and_v2)
{
	static const char *const versions[] = { "v1", "v2" };
	struct h_daemon d;
	int nport = h_free_port(), port = h_free_port();
	pid_t npid;

	make_client_cert();
	npid = start_nginx(nport);
	for (int i = 0; i < 2; i++) {
		char extra[64], want[128], *out;
		int st;

		snprintf(extra, sizeof(extra), "proxy_protocol = %s",
		    versions[i]);
		ck_assert_int_eq(h_daemon_start(&d, versions[i], conf(port, nport,
		    extra, "")), 0);
		/* curl cannot pick its source address; Node can. */
		out = h_run(&st, "cd %s && timeout 20 node -e \""
		    "const https = require('https');"
		    "https.get({ host: '127.0.0.1', port: %d, localAddress: "
		    "'127.0.0.2', servername: 'localhost', rejectUnauthorized: "
		    "false, path: '/' }, (r) => { r.setEncoding('utf8');"
		    " r.on('data', (d) => process.stdout.write(d)); })"
		    ".on('error', (e) => console.log('error ' + e.message));\" "
		    "2>&1", h_dir(), port);
		snprintf(want, sizeof(want), "server_port=%d\n", port);
		ck_assert_msg(strncmp(out, "addr=127.0.0.2 port=", 20) == 0 &&
		    strstr(out, want) != NULL, "%s: %s", versions[i], out);
		free(out);
		ck_assert_int_eq(h_daemon_stop(&d, 5000), 0);
	}
	kill(npid, SIGQUIT);
	waitpid(npid, NULL, 0);
}
END_TEST

START_TEST(bad_value_refused)
{
	char *out;
	int st;

	out = h_run(&st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("bad.conf", conf(1, 2, "proxy_protocol = v3", "")));
	ck_assert_msg(st != 0 && strstr(out, "bad.conf:8: key "
	    "'proxy_protocol': expected off, v1 or v2, got 'v3'"), "%s", out);
	free(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("proxy_protocol");
	TCase *tc = tcase_create("proxy_protocol");

	h_setup("proxy_protocol");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, v2_tlvs_reach_the_backend);
	tcase_add_test(tc, v1_reaches_the_backend);
	tcase_add_test(tc, nginx_reads_v1_and_v2);
	tcase_add_test(tc, bad_value_refused);
	suite_add_tcase(s, tc);
	return check_run(s);
}
