/* pebble.c: see pebble.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "pebble.h"
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* How long each process may take to come up. Pebble makes its RSA root
 * and intermediate at start: a loaded machine can take seconds. */
#define PB_START_MS 30000

/* ---- Small pieces. */

/* pb_ports binds |n| sockets on 127.0.0.1 port 0 at once (so that no two
 * get the same port) and returns their ports in |out|. |udp_first|: the
 * first is a UDP port whose TCP twin is free as well (challtestsrv's DNS
 * listens on both). */
static int
pb_ports(int *out, int n, int udp_first)
{
	int fds[8], nfd = 0, ok = 0;

	for (int tries = 0; tries < 50 && nfd < n; tries++) {
		struct sockaddr_in sin = { .sin_family = AF_INET };
		socklen_t len = sizeof(sin);
		int udp = udp_first && nfd == 0;
		int fd = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);

		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
		    getsockname(fd, (struct sockaddr *)&sin, &len) != 0) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		if (udp) {
			int t = socket(AF_INET, SOCK_STREAM, 0), free_tcp;

			free_tcp = t >= 0 && bind(t, (struct sockaddr *)&sin,
			    sizeof(sin)) == 0;
			if (t >= 0)
				close(t);
			if (!free_tcp) {
				close(fd);
				continue;
			}
		}
		out[nfd] = ntohs(sin.sin_port);
		fds[nfd++] = fd;
	}
	ok = nfd == n;
	while (nfd > 0)
		close(fds[--nfd]);
	if (!ok)
		fprintf(stderr, "pebble: no free loopback ports\n");
	return ok ? 0 : -1;
}

static int
pb_port_open(int port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* pb_dns_answers sends an A query for probe.pebble.test to the DNS server
 * on 127.0.0.1:|port| and returns whether an answer with a record came
 * back within |wait_ms|. */
static int
pb_dns_answers(int port, int wait_ms)
{
	static const unsigned char q[] = {
		0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
		5, 'p', 'r', 'o', 'b', 'e', 6, 'p', 'e', 'b', 'b', 'l', 'e',
		4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
	};
	struct sockaddr_in sin = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port) };
	unsigned char r[512];
	struct pollfd pfd;
	int fd = socket(AF_INET, SOCK_DGRAM, 0), ok = 0;
	ssize_t n;

	if (fd < 0)
		return 0;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (sendto(fd, q, sizeof(q), 0, (struct sockaddr *)&sin,
	    sizeof(sin)) == (ssize_t)sizeof(q)) {
		pfd.fd = fd;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, wait_ms) == 1) {
			n = recv(fd, r, sizeof(r), 0);
			/* Same ID, a response, rcode 0, one answer or more. */
			ok = n >= 12 && r[0] == 0x12 && r[1] == 0x34 &&
			    (r[2] & 0x80) && (r[3] & 0x0f) == 0 &&
			    (r[6] << 8 | r[7]) > 0;
		}
	}
	close(fd);
	return ok;
}

/* pb_spawn runs |argv| (looked up in PATH) with stdout and stderr to
 * |log| and the environment plus |env| (NAME=VALUE strings, NULL-ended),
 * dying with the calling process. */
static pid_t
pb_spawn(char *const argv[], char *const env[], const char *log)
{
	pid_t parent = getpid(), pid = fork();

	if (pid < 0) {
		fprintf(stderr, "pebble: fork: %s\n", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		int fd;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 ||
		    dup2(fd, STDERR_FILENO) < 0)
			_exit(126);
		close(fd);
		fd = open("/dev/null", O_RDONLY);
		if (fd >= 0) {
			dup2(fd, STDIN_FILENO);
			close(fd);
		}
		/* Validation must really happen, whatever the caller's
		 * environment says. */
		unsetenv("PEBBLE_VA_ALWAYS_VALID");
		for (int i = 0; env != NULL && env[i] != NULL; i++)
			putenv(env[i]);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	return pid;
}

/* pb_reap stops |*pid| (SIGTERM, SIGKILL after |grace_ms|) and reaps it. */
static void
pb_reap(pid_t *pid, int grace_ms)
{
	long long end;
	int st;

	if (*pid <= 0)
		return;
	kill(*pid, SIGTERM);
	end = h_now_ms() + grace_ms;
	while (h_now_ms() < end) {
		if (waitpid(*pid, &st, WNOHANG) == *pid) {
			*pid = 0;
			return;
		}
		usleep(5000);
	}
	kill(*pid, SIGKILL);
	waitpid(*pid, &st, 0);
	*pid = 0;
}

/* pb_exited returns whether |*pid| has exited (reaping it). */
static int
pb_exited(pid_t *pid)
{
	int st;

	if (*pid > 0 && waitpid(*pid, &st, WNOHANG) == *pid) {
		*pid = 0;
		return 1;
	}
	return *pid <= 0;
}

static void
pb_tail(const char *what, const char *log)
{
	char *out = h_run(NULL, "tail -n 30 '%s' 2>&1", log);

	fprintf(stderr, "--- %s (%s) ---\n%s--- end ---\n", what, log, out);
	free(out);
}

static int
pb_write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (f == NULL) {
		fprintf(stderr, "pebble: cannot write %s: %s\n", path,
		    strerror(errno));
		return -1;
	}
	ok = fputs(text, f) >= 0;
	ok = fclose(f) == 0 && ok;
	if (!ok)
		fprintf(stderr, "pebble: writing %s failed\n", path);
	return ok ? 0 : -1;
}

/* ---- Pebble. */

/* pb_certs makes |p|'s CA and Pebble's HTTPS certificate in |p->dir|. */
static int
pb_certs(struct h_pebble *p)
{
	int st;
	char *out = h_run(&st,
	    "cd '%s' && set -e; "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -keyout ca.key -out ca.pem -days 7 "
	    "-subj '/CN=Pebble HTTPS test CA' 2>&1; "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "-keyout https.key -out https.csr -subj /CN=localhost 2>&1; "
	    "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\\n"
	    "extendedKeyUsage=serverAuth\\n' > https.ext; "
	    "openssl x509 -req -in https.csr -CA ca.pem -CAkey ca.key "
	    "-CAcreateserial -days 7 -extfile https.ext -out https.pem 2>&1",
	    p->dir);

	if (st != 0) {
		fprintf(stderr, "pebble: making certificates failed: %s\n", out);
		free(out);
		return -1;
	}
	free(out);
	snprintf(p->ca, sizeof(p->ca), "%s/ca.pem", p->dir);
	snprintf(p->cert, sizeof(p->cert), "%s/https.pem", p->dir);
	snprintf(p->key, sizeof(p->key), "%s/https.key", p->dir);
	return 0;
}

/* pb_env splits |env| into NAME=VALUE words after PEBBLE_VA_NOSLEEP=1 in
 * |words| (|buf| holds them). */
static int
pb_env(const char *env, char *buf, size_t bufsz, char **words, int max)
{
	int n = 0;
	char *save = NULL, *w;

	words[n++] = "PEBBLE_VA_NOSLEEP=1";
	snprintf(buf, bufsz, "%s", env != NULL ? env : "");
	for (w = strtok_r(buf, " \t\n", &save); w != NULL;
	    w = strtok_r(NULL, " \t\n", &save)) {
		if (strchr(w, '=') == NULL || w[0] == '=') {
			fprintf(stderr, "pebble: env word '%s' is not "
			    "NAME=VALUE\n", w);
			return -1;
		}
		if (strncmp(w, "PEBBLE_VA_ALWAYS_VALID=", 23) == 0) {
			fprintf(stderr, "pebble: PEBBLE_VA_ALWAYS_VALID is not "
			    "for these tests: validation must happen\n");
			return -1;
		}
		if (n >= max - 1) {
			fprintf(stderr, "pebble: too many env words\n");
			return -1;
		}
		words[n++] = w;
	}
	words[n] = NULL;
	return 0;
}

/* pb_port_clash returns whether a start failed on a port already taken. */
static int
pb_port_clash(const struct h_pebble *p)
{
	char *out = h_run(NULL, "cat '%s' '%s' 2>/dev/null | grep -c "
	    "'address already in use'", p->log, p->dns_log);
	int clash = atoi(out) > 0;

	free(out);
	return clash;
}

static int
pb_start_dns(struct h_pebble *p)
{
	char dns[64], mgmt[64];
	char *argv[] = { "pebble-challtestsrv", dns, mgmt, "-http01=",
		"-https01=", "-tlsalpn01=", "-defaultIPv4=127.0.0.1",
		"-defaultIPv6=", NULL };
	long long end = h_now_ms() + PB_START_MS;

	snprintf(dns, sizeof(dns), "-dns01=127.0.0.1:%d", p->dns_port);
	snprintf(mgmt, sizeof(mgmt), "-management=127.0.0.1:%d",
	    p->dns_mgmt_port);
	p->dns_pid = pb_spawn(argv, NULL, p->dns_log);
	if (p->dns_pid < 0)
		return -1;
	for (int i = 0; h_now_ms() < end; i++) {
		if (pb_exited(&p->dns_pid)) {
			fprintf(stderr, "pebble: pebble-challtestsrv exited\n");
			pb_tail("challtestsrv log", p->dns_log);
			return -1;
		}
		if (pb_port_open(p->dns_mgmt_port) &&
		    pb_dns_answers(p->dns_port, 100))
			return 0;
		/* It logs a server that could not bind and runs on. */
		if (i % 10 == 9 && pb_port_clash(p)) {
			pb_tail("challtestsrv log", p->dns_log);
			return -1;
		}
		usleep(10000);
	}
	fprintf(stderr, "pebble: pebble-challtestsrv did not answer DNS on "
	    "127.0.0.1:%d\n", p->dns_port);
	pb_tail("challtestsrv log", p->dns_log);
	return -1;
}

static int
pb_conf(struct h_pebble *p, const struct h_pebble_opts *o)
{
	char text[4096], eab[1024] = "", validity[128] = "";
	const char *kid = o->eab_kid;

	if (kid != NULL)
		snprintf(eab, sizeof(eab), ",\n    \"externalAccountMACKeys\": "
		    "{\"%s\": \"%s\"}", kid, o->eab_hmac_b64url);
	if (o->validity_s > 0)
		snprintf(validity, sizeof(validity), "    "
		    "\"certificateValidityPeriod\": %ld,\n", o->validity_s);
	snprintf(text, sizeof(text),
	    "{\n  \"pebble\": {\n"
	    "    \"listenAddress\": \"127.0.0.1:%d\",\n"
	    "    \"managementListenAddress\": \"127.0.0.1:%d\",\n"
	    "    \"certificate\": \"%s\",\n"
	    "    \"privateKey\": \"%s\",\n"
	    "    \"httpPort\": %d,\n"
	    "    \"tlsPort\": %d,\n"
	    "    \"ocspResponderURL\": \"%s\",\n%s"
	    "    \"externalAccountBindingRequired\": %s%s\n"
	    "  }\n}\n",
	    p->port, p->mgmt_port, p->cert, p->key, p->http_port, p->tls_port,
	    o->ocsp_url != NULL ? o->ocsp_url : "", validity, kid != NULL ? "true" : "false", eab);
	snprintf(p->conf, sizeof(p->conf), "%s/pebble-config.json", p->dir);
	return pb_write_file(p->conf, text);
}

static int
pb_start_pebble(struct h_pebble *p, const char *env)
{
	char envbuf[1024], *words[16], dnsarg[64];
	char *argv[] = { "pebble", "-config", p->conf, "-dnsserver", dnsarg,
		NULL };
	long long end = h_now_ms() + PB_START_MS;

	if (pb_env(env, envbuf, sizeof(envbuf), words, 16) != 0)
		return -1;
	snprintf(dnsarg, sizeof(dnsarg), "127.0.0.1:%d", p->dns_port);
	p->pid = pb_spawn(argv, words, p->log);
	if (p->pid < 0)
		return -1;
	while (h_now_ms() < end) {
		if (pb_exited(&p->pid)) {
			fprintf(stderr, "pebble: pebble exited\n");
			pb_tail("pebble log", p->log);
			return -1;
		}
		if (pb_port_open(p->port) && pb_port_open(p->mgmt_port)) {
			int st;
			char *out = h_run(&st, "curl -sS --max-time 5 --cacert "
			    "'%s' '%s' 2>&1", p->ca, p->directory);
			int ok = st == 0 && strstr(out, "\"newNonce\"") != NULL;

			if (!ok && h_now_ms() + 200 >= end)
				fprintf(stderr, "pebble: directory: %s\n", out);
			free(out);
			if (ok)
				return 0;
		}
		usleep(10000);
	}
	fprintf(stderr, "pebble: the directory %s did not answer\n",
	    p->directory);
	pb_tail("pebble log", p->log);
	return -1;
}

static int pb_try_start(struct h_pebble *p, int http_port, int tls_port,
    const struct h_pebble_opts *o);

int
h_pebble_start_opts(struct h_pebble *p, int http_port, int tls_port,
    const struct h_pebble_opts *o)
{
	static const struct h_pebble_opts none;

	memset(p, 0, sizeof(*p));
	if (o == NULL)
		o = &none;
	if (o->eab_kid != NULL && o->eab_hmac_b64url == NULL) {
		fprintf(stderr, "pebble: an EAB key ID without its key\n");
		return -1;
	}
	/* The environment is checked before anything starts. */
	{
		char envbuf[1024], *words[16];

		if (pb_env(o->env, envbuf, sizeof(envbuf), words, 16) != 0)
			return -1;
	}
	/* The ports were free when picked; another process may take one
	 * before Pebble binds it: then again with new ones. */
	for (int attempt = 1;; attempt++) {
		int rc = pb_try_start(p, http_port, tls_port, o);

		if (rc == 0 || attempt == 3 || !pb_port_clash(p))
			return rc;
		fprintf(stderr, "pebble: a port was taken; again\n");
	}
}

static int
pb_try_start(struct h_pebble *p, int http_port, int tls_port,
    const struct h_pebble_opts *o)
{
	long long t0 = h_now_ms();
	int ports[4];
	char *out;

	memset(p, 0, sizeof(*p));
	p->http_port = http_port;
	p->tls_port = tls_port;
	if (pb_ports(ports, 4, 1) != 0)
		return -1;
	p->dns_port = ports[0];
	p->dns_mgmt_port = ports[1];
	p->port = ports[2];
	p->mgmt_port = ports[3];
	snprintf(p->dir, sizeof(p->dir), "%s/pebble-%d", h_dir(), p->port);
	out = h_run(NULL, "rm -rf '%s' && mkdir -p '%s' 2>&1", p->dir, p->dir);
	free(out);
	snprintf(p->log, sizeof(p->log), "%s/pebble.log", p->dir);
	snprintf(p->dns_log, sizeof(p->dns_log), "%s/challtestsrv.log",
	    p->dir);
	snprintf(p->directory, sizeof(p->directory),
	    "https://127.0.0.1:%d/dir", p->port);
	snprintf(p->mgmt, sizeof(p->mgmt), "https://127.0.0.1:%d",
	    p->mgmt_port);
	snprintf(p->dns_mgmt, sizeof(p->dns_mgmt), "http://127.0.0.1:%d",
	    p->dns_mgmt_port);
	if (pb_certs(p) != 0 || pb_conf(p, o) != 0 ||
	    pb_start_dns(p) != 0 || pb_start_pebble(p, o->env) != 0) {
		h_pebble_stop(p);
		return -1;
	}
	p->start_ms = h_now_ms() - t0;
	return 0;
}

int
h_pebble_start(struct h_pebble *p, int http_port, int tls_port,
    const char *env)
{
	struct h_pebble_opts o = { .env = env };

	return h_pebble_start_opts(p, http_port, tls_port, &o);
}

void
h_pebble_stop(struct h_pebble *p)
{
	pb_reap(&p->pid, 1000);
	pb_reap(&p->dns_pid, 1000);
}

static char *
pb_mgmt_pem(struct h_pebble *p, const char *path)
{
	int st;
	char *out = h_run(&st, "curl -sS --fail --max-time 10 --cacert '%s' "
	    "'%s%s' 2>&1", p->ca, p->mgmt, path);

	if (st != 0 || strstr(out, "-----BEGIN CERTIFICATE-----") == NULL) {
		fprintf(stderr, "pebble: %s%s: %s\n", p->mgmt, path, out);
		free(out);
		return NULL;
	}
	return out;
}

char *
h_pebble_root(struct h_pebble *p)
{
	return pb_mgmt_pem(p, "/roots/0");
}

char *
h_pebble_intermediate(struct h_pebble *p)
{
	return pb_mgmt_pem(p, "/intermediates/0");
}

int
h_pebble_dns(struct h_pebble *p, const char *path, const char *json)
{
	char file[700];
	char *out;
	int st;

	snprintf(file, sizeof(file), "%s/dns-request.json", p->dir);
	if (pb_write_file(file, json) != 0)
		return -1;
	out = h_run(&st, "curl -sS --max-time 5 -o /dev/null -w '%%{http_code}' "
	    "--data-binary @'%s' '%s%s' 2>&1", file, p->dns_mgmt, path);
	st = st == 0 && strcmp(out, "200") == 0 ? 0 : -1;
	if (st != 0)
		fprintf(stderr, "pebble: challtestsrv %s: %s\n", path, out);
	free(out);
	return st;
}

int
h_pebble_free_port(void)
{
	int port;

	return pb_ports(&port, 1, 0) == 0 ? port : -1;
}

/* ---- The shim. */

int
h_acme_shim_start(struct h_acme_shim *s, const struct h_pebble *p)
{
	const char *src = getenv("TLSPROXY_TEST_SRC");
	char script[600], upstream[64], dir[580];
	char *argv[] = { "python3", script, "--listen", "127.0.0.1:0",
		"--upstream", upstream, "--cert", (char *)p->cert,
		"--key", (char *)p->key, "--cafile", (char *)p->ca,
		"--control", s->control, NULL };
	long long end = h_now_ms() + PB_START_MS;

	memset(s, 0, sizeof(*s));
	if (src == NULL) {
		fprintf(stderr, "acme shim: TLSPROXY_TEST_SRC is not set\n");
		return -1;
	}
	snprintf(script, sizeof(script), "%s/acme_shim.py", src);
	if (access(script, R_OK) != 0) {
		fprintf(stderr, "acme shim: %s: %s\n", script, strerror(errno));
		return -1;
	}
	snprintf(upstream, sizeof(upstream), "https://127.0.0.1:%d", p->port);
	/* One directory per shim, named after the moment: several may run
	 * in front of one Pebble. */
	snprintf(dir, sizeof(dir), "%s/shim-%lld-%d", p->dir, h_now_ms(),
	    (int)getpid());
	if (mkdir(dir, 0755) != 0) {
		fprintf(stderr, "acme shim: mkdir %s: %s\n", dir,
		    strerror(errno));
		return -1;
	}
	snprintf(s->control, sizeof(s->control), "%s/control.json", dir);
	snprintf(s->log, sizeof(s->log), "%s/shim.log", dir);
	if (pb_write_file(s->control, "{}\n") != 0)
		return -1;
	s->pid = pb_spawn(argv, NULL, s->log);
	if (s->pid < 0)
		return -1;
	while (h_now_ms() < end) {
		char *out;

		if (pb_exited(&s->pid)) {
			fprintf(stderr, "acme shim: exited\n");
			pb_tail("shim log", s->log);
			return -1;
		}
		out = h_run(NULL, "sed -n 's/^listening \\([0-9]*\\)$/\\1/p' "
		    "'%s' 2>/dev/null", s->log);
		s->port = atoi(out);
		free(out);
		if (s->port > 0) {
			snprintf(s->base, sizeof(s->base),
			    "https://127.0.0.1:%d", s->port);
			snprintf(s->directory, sizeof(s->directory), "%s/dir",
			    s->base);
			return 0;
		}
		usleep(10000);
	}
	fprintf(stderr, "acme shim: did not start listening\n");
	pb_tail("shim log", s->log);
	h_acme_shim_stop(s);
	return -1;
}

void
h_acme_shim_stop(struct h_acme_shim *s)
{
	pb_reap(&s->pid, 1000);
}

int
h_acme_shim_control(struct h_acme_shim *s, const char *fmt, ...)
{
	char tmp[700], *text = NULL;
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (rc < 0) {
		fprintf(stderr, "acme shim: out of memory\n");
		return -1;
	}
	snprintf(tmp, sizeof(tmp), "%s.new", s->control);
	rc = pb_write_file(tmp, text);
	free(text);
	if (rc == 0 && rename(tmp, s->control) != 0) {
		fprintf(stderr, "acme shim: rename %s: %s\n", tmp,
		    strerror(errno));
		rc = -1;
	}
	return rc;
}

int
h_acme_shim_count(const struct h_acme_shim *s, const char *resource,
    int status)
{
	char line[2048];
	int n = 0;
	FILE *f = fopen(s->log, "r");

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		char method[16], path[1024], res[64];
		int code;

		/* "req METHOD PATH STATUS RESOURCE ..." */
		if (sscanf(line, "req %15s %1023s %d %63s", method, path, &code,
		    res) != 4)
			continue;
		if (resource != NULL && strcmp(res, resource) != 0)
			continue;
		if (status != 0 && code != status)
			continue;
		n++;
	}
	fclose(f);
	return n;
}
