/* Encrypted Client Hello end to end: the inner ClientHello decides the
 * context and the backend; a stale config is rejected with retry configs
 * and its client never reaches a backend; GREASE is served; the inner
 * name never crosses the wire in clear; keys rotate by SIGHUP under load
 * without a failed handshake; ech files interoperate with BoringSSL's
 * own bssl tool both ways; tlsproxy -t names every bad file. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

#define PUBLIC "public.example.test"
#define SECRET "secret.example.test"

/* Base64 ECHConfigLists: a.pem, b.pem (both loaded in some tests) and
 * c.pem (a key no test loads: a stale config). */
static char list_a[512], list_b[512], list_c[512];

/* The leaves for both names are signed by the harness's CA; the ech
 * files come from tlsproxy itself. */
static const char gen_script[] =
    "set -e\n"
    "leaf() {\n"
    "  printf 'subjectAltName=DNS:%s\\n' \"$1\" > \"$2.ext\"\n"
    "  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "-keyout \"$2.key\" -out \"$2.csr\" -subj \"/CN=$1\"\n"
    "  openssl x509 -req -in \"$2.csr\" -CA ca.pem -CAkey ca.key "
    "-CAcreateserial -days 2 -extfile \"$2.ext\" -out \"$2.pem\"\n"
    "}\n"
    "leaf " PUBLIC " pub\n"
    "leaf " SECRET " secret\n"
    /* Ids are random: make each file again until its id is new. */
    "id() { sed -n '/BEGIN ECHCONFIG/,/END ECHCONFIG/p' $1 | "
    "grep -v -- ----- | base64 -d | od -An -tu1 -j6 -N1 | tr -d ' '; }\n"
    "used=\n"
    "for k in a b c; do\n"
    "  while \"$TLSPROXY_BIN\" --new-ech-key " PUBLIC " > $k.pem &&\n"
    "    case \" $used \" in *\" $(id $k.pem) \"*) true;; *) false;; esac; do\n"
    "    :; done\n"
    "  used=\"$used $(id $k.pem)\"\n"
    "done\n";

/* Setup runs outside any test: failures exit with the reason. */
static void
setup_check(int ok, const char *what, const char *out)
{
	if (!ok) {
		fprintf(stderr, "test_ech setup: %s failed: %s\n", what, out);
		exit(1);
	}
}

static void
read_list(const char *file, char *out, size_t out_len)
{
	int st;
	char *s = h_run(&st, "%s --ech-config-list %s/%s 2>&1",
	    getenv("TLSPROXY_BIN"), h_dir(), file);

	setup_check(st == 0 && strlen(s) > 20, file, s);
	s[strcspn(s, "\n")] = '\0';
	snprintf(out, out_len, "%s", s);
	free(s);
}

static void
make_files(void)
{
	int st;
	char path[600], *out;
	FILE *f;

	/* Not h_write: its checks only work inside a test. */
	snprintf(path, sizeof(path), "%s/gen.sh", h_dir());
	f = fopen(path, "w");
	setup_check(f != NULL && fputs(gen_script, f) >= 0, path, "");
	fclose(f);
	out = h_run(&st, "cd '%s' && sh gen.sh 2>&1", h_dir());

	setup_check(st == 0, "making certificates and ech files", out);
	free(out);
	read_list("a.pem", list_a, sizeof(list_a));
	read_list("b.pem", list_b, sizeof(list_b));
	read_list("c.pem", list_c, sizeof(list_c));
}

struct setup {
	struct h_daemon d;
	pid_t bpid[2];
	int bport[2]; /* the public name's backend, the secret name's */
	int plain_port; /* a listener without ech */
	int admin;
	char log[512];
};

/* conf writes the config: listener l with |ech| lines, listener plain
 * without; context pub (the default and the ECH public name) and context
 * secret, each with its own echo backend. */
static const char *
conf(struct setup *s, const char *ech)
{
	static char text[4096];

	snprintf(text, sizeof(text),
	    "[global]\nworkers = 2\nlog_level = debug\naccess_log = %s\n"
	    "admin = 127.0.0.1:%d\n"
	    "[listener l]\nbind = 127.0.0.1:%d\ncontext = pub\nbackend = bpub\n"
	    "%s\n"
	    "[listener plain]\nbind = 127.0.0.1:%d\ncontext = pub\n"
	    "backend = bpub\n"
	    "[backend bpub]\naddress = 127.0.0.1:%d\n"
	    "[backend bsec]\naddress = 127.0.0.1:%d\n"
	    "[context pub]\nservername = " PUBLIC "\ncert = %s/pub.pem\n"
	    "key = %s/pub.key\n"
	    "[context secret]\nservername = " SECRET "\ncert = %s/secret.pem\n"
	    "key = %s/secret.key\nbackend = bsec\n",
	    s->log, s->admin, s->d.port, ech, s->plain_port, s->bport[0],
	    s->bport[1], h_dir(), h_dir(), h_dir(), h_dir());
	return text;
}

/* start_mode starts the daemon with |ech| lines in listener l, the
 * secret name's backend in |secret_mode|. */
static void
start_mode(struct setup *s, const char *name, const char *ech,
    const char *secret_mode)
{
	int port;

	memset(s, 0, sizeof(*s));
	s->bport[0] = h_backend("echo", NULL, &s->bpid[0]);
	s->bport[1] = h_backend(secret_mode, NULL, &s->bpid[1]);
	s->d.port = h_free_port();
	s->plain_port = h_free_port();
	s->admin = h_free_port();
	snprintf(s->log, sizeof(s->log), "%s/%s.access.log", h_dir(), name);
	port = s->d.port;
	ck_assert_int_eq(h_daemon_start(&s->d, name, conf(s, ech)), 0);
	s->d.port = port; /* h_daemon_start starts |d| afresh */
}

static void
start(struct setup *s, const char *name, const char *ech)
{
	start_mode(s, name, ech, "echo");
}

static void
finish(struct setup *s)
{
	ck_assert_int_eq(h_daemon_stop(&s->d, 10000), 0);
	for (int i = 0; i < 2; i++) {
		kill(s->bpid[i], SIGTERM);
		waitpid(s->bpid[i], NULL, 0);
	}
}

/* client runs our client for the secret name on |port| with |args|. */
static char *
client(int port, const char *args, int *st)
{
	return h_run(st, "%s --cafile %s/ca.pem --servername " SECRET " "
	    "--request 'ping' --expect-bytes 4 %s 127.0.0.1:%d 2>&1",
	    h_bin("client"), h_dir(), args, port);
}

/* ech_client runs it offering ECH with |list| (base64), plus |extra|. */
static char *
ech_client(int port, const char *list, const char *extra, int *st)
{
	char args[1400];

	snprintf(args, sizeof(args), "--ech-config-list %s %s", list, extra);
	return client(port, args, st);
}

/* access_line waits for the access-log line holding |needle|. */
static char *
access_line(const struct setup *s, const char *needle)
{
	for (int i = 0; i < 100; i++) {
		char *out = h_run(NULL, "grep -F -- '%s' '%s' | tail -n 1",
		    needle, s->log);

		if (out[0] != '\0')
			return out;
		free(out);
		usleep(50000);
	}
	ck_abort_msg("no access-log line with %s", needle);
	return NULL;
}

static double
metric(const struct setup *s, const char *series)
{
	char *out = h_run(NULL, "curl -sf http://127.0.0.1:%d/metrics | "
	    "awk -v s='%s' '$1 == s { print $2 }'", s->admin, series);
	double v = out[0] != '\0' ? atof(out) : -1;

	free(out);
	return v;
}

/* ech_line returns "ech = DIR/FILE" lines for |files| (space separated
 * names in the scratch dir), in static storage. */
static const char *
ech_lines(const char *files)
{
	static char out[1024];
	char copy[256], *save = NULL;
	size_t n = 0;

	snprintf(copy, sizeof(copy), "%s", files);
	out[0] = '\0';
	for (char *f = strtok_r(copy, " ", &save); f != NULL;
	    f = strtok_r(NULL, " ", &save))
		n += (size_t)snprintf(out + n, sizeof(out) - n, "ech = %s/%s\n",
		    h_dir(), f);
	return out;
}

static const char *
bssl(void)
{
	const char *b = getenv("TLSPROXY_BSSL");

	return b != NULL && b[0] != '\0' ? b : NULL;
}

START_TEST(accepted_inner_name_decides)
{
	struct setup s;
	char bport[32], *out, *line;
	int st;

	start(&s, "accepted", ech_lines("a.pem"));
	out = ech_client(s.d.port, list_a, "", &st);
	ck_assert_msg(st == 0 && strcmp(h_field(out, "ech"), "accepted") == 0,
	    "%s", out);
	free(out);
	/* The inner name chose the context and its backend. */
	line = access_line(&s, "sni=" SECRET);
	snprintf(bport, sizeof(bport), "backend=127.0.0.1:%d ", s.bport[1]);
	ck_assert_msg(strstr(line, "context=secret ") != NULL &&
	    strstr(line, "ech=accepted ") != NULL && strstr(line, bport) != NULL,
	    "%s", line);
	free(line);
	ck_assert(metric(&s, "tlsproxy_handshakes_by_ech_total"
	    "{outcome=\"accepted\"}") == 1);
	/* BoringSSL's own client, with the list as DNS would carry it. */
	if (bssl() != NULL) {
		out = h_run(&st, "cd '%s' && echo %s | base64 -d > a.list && "
		    "echo ping | timeout 10 %s client -connect 127.0.0.1:%d "
		    "-server-name " SECRET " -root-certs ca.pem -ech-config-list "
		    "a.list 2>&1", h_dir(), list_a, bssl(), s.d.port);
		ck_assert_msg(strstr(out, "Encrypted ClientHello: yes") != NULL &&
		    strstr(out, "ping") != NULL, "%s", out);
		free(out);
		ck_assert(metric(&s, "tlsproxy_handshakes_by_ech_total"
		    "{outcome=\"accepted\"}") == 2);
	}
	finish(&s);
}
END_TEST

/* The PROXY protocol header names the inner server name. BoringSSL's
 * bssl client prints what comes back: the backend's report of it. */
START_TEST(proxy_header_carries_inner_name)
{
	struct setup s;
	char lines[1024], *out;
	int st;

	if (bssl() == NULL) {
		fprintf(stderr, "proxy_header_carries_inner_name: this BoringSSL "
		    "build has no bssl tool\n");
		return;
	}
	snprintf(lines, sizeof(lines), "%sproxy_protocol = v2\n",
	    ech_lines("a.pem"));
	start_mode(&s, "proxyv2", lines, "proxy");
	out = h_run(&st, "cd '%s' && echo %s | base64 -d > a.list && "
	    "echo ping | timeout 10 %s client -connect 127.0.0.1:%d "
	    "-server-name " SECRET " -root-certs ca.pem -ech-config-list "
	    "a.list 2>&1", h_dir(), list_a, bssl(), s.d.port);
	ck_assert_msg(strstr(out, "Encrypted ClientHello: yes") != NULL &&
	    strstr(out, "proxy=v2 ") != NULL &&
	    strstr(out, " authority=" SECRET " ") != NULL, "%s", out);
	free(out);
	finish(&s);
}
END_TEST

START_TEST(stale_config_gets_retry_configs)
{
	struct setup s;
	char retry[1024], *out, *line;
	int st;

	start(&s, "stale", ech_lines("a.pem"));
	out = ech_client(s.d.port, list_c, "", &st);
	ck_assert_msg(st != 0 && strcmp(h_field(out, "ech"), "rejected") == 0 &&
	    strstr(out, "ECH_REJECTED") != NULL, "%s", out);
	/* The retry configs are the loaded key's. */
	snprintf(retry, sizeof(retry), "%s", h_field(out, "retry_configs"));
	ck_assert_msg(strcmp(retry, list_a) == 0, "%s", out);
	free(out);
	/* The client authenticated the public name and aborted: nothing
	 * reached a backend. */
	line = access_line(&s, "ech=rejected");
	ck_assert_msg(strstr(line, "sni=" PUBLIC " ") != NULL &&
	    strstr(line, "backend=- ") != NULL &&
	    strstr(line, "reason=\"ECH rejected: ") != NULL, "%s", line);
	free(line);
	out = ech_client(s.d.port, retry, "", &st);
	ck_assert_msg(st == 0 && strcmp(h_field(out, "ech"), "accepted") == 0,
	    "%s", out);
	free(out);
	ck_assert(metric(&s, "tlsproxy_handshakes_by_ech_total"
	    "{outcome=\"rejected\"}") == 1);
	ck_assert(metric(&s, "tlsproxy_handshakes_by_ech_total"
	    "{outcome=\"accepted\"}") == 1);
	finish(&s);
}
END_TEST

/* ech_retry narrows the retry configs to the files it names: both keys
 * decrypt, only B's config is offered to a client with a stale one. */
START_TEST(retry_configs_from_ech_retry_only)
{
	struct setup s;
	char lines[1024], *out;
	int st;

	snprintf(lines, sizeof(lines), "%sech_retry = %s/b.pem\n",
	    ech_lines("a.pem b.pem"), h_dir());
	start(&s, "retrysel", lines);
	out = ech_client(s.d.port, list_c, "", &st);
	ck_assert_msg(st != 0 && strcmp(h_field(out, "retry_configs"),
	    list_b) == 0, "%s", out);
	free(out);
	out = ech_client(s.d.port, list_a, "", &st);
	ck_assert_msg(st == 0 && strcmp(h_field(out, "ech"), "accepted") == 0,
	    "%s", out);
	free(out);
	finish(&s);
}
END_TEST

START_TEST(grease_is_served)
{
	struct setup s;
	char bport[32], *out, *line;
	int st;

	start(&s, "grease", ech_lines("a.pem"));
	/* GREASE looks like a config nobody knows: the handshake completes
	 * with the outer name, which is the real one. */
	out = client(s.d.port, "--ech-grease", &st);
	ck_assert_msg(st == 0 && strcmp(h_field(out, "ech"), "-") == 0, "%s",
	    out);
	free(out);
	line = access_line(&s, "listener=l ");
	snprintf(bport, sizeof(bport), "backend=127.0.0.1:%d ", s.bport[1]);
	ck_assert_msg(strstr(line, "ech=rejected ") != NULL &&
	    strstr(line, bport) != NULL && strstr(line, "bytes_in=4 ") != NULL,
	    "%s", line);
	free(line);
	/* A listener without ech is as it was: GREASE is plain TLS, and a
	 * real config is refused without retry configs. */
	out = client(s.plain_port, "--ech-grease", &st);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	line = access_line(&s, "listener=plain ");
	ck_assert_msg(strstr(line, "ech=- ") != NULL, "%s", line);
	free(line);
	out = ech_client(s.plain_port, list_a, "", &st);
	ck_assert_msg(st != 0 && strstr(out, "ECH_REJECTED") != NULL &&
	    strcmp(h_field(out, "retry_configs"), "-") == 0, "%s", out);
	free(out);
	finish(&s);
}
END_TEST

START_TEST(inner_name_never_on_the_wire)
{
	struct setup s;
	char args[1024], *out;
	int st;

	start(&s, "wire", ech_lines("a.pem"));
	snprintf(args, sizeof(args), "--ech-config-list %s --wire %s/ech.wire",
	    list_a, h_dir());
	out = client(s.d.port, args, &st);
	ck_assert_msg(st == 0 && strcmp(h_field(out, "ech"), "accepted") == 0,
	    "%s", out);
	free(out);
	out = h_run(&st, "grep -a -c " SECRET " %s/ech.wire; grep -a -c "
	    PUBLIC " %s/ech.wire", h_dir(), h_dir());
	ck_assert_msg(strncmp(out, "0\n", 2) == 0 && atoi(out + 2) > 0,
	    "secret / public name counts in the ECH capture: %s", out);
	free(out);
	/* The same capture without ECH does show it: the check can fail. */
	snprintf(args, sizeof(args), "--wire %s/plain.wire", h_dir());
	out = client(s.d.port, args, &st);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	out = h_run(&st, "grep -a -c " SECRET " %s/plain.wire", h_dir());
	ck_assert_msg(atoi(out) > 0, "%s", out);
	free(out);
	finish(&s);
}
END_TEST

/* load starts runs of 8 concurrent ECH clients with |list| in the
 * background until NAME.stop appears; results go to NAME.out, then
 * NAME.done appears. */
static void
load(const struct setup *s, const char *name, const char *list)
{
	char *out = h_run(NULL, "cd '%s' && (while [ ! -f %s.stop ]; do %s "
	    "--cafile ca.pem --servername " SECRET " --conns 8 --request ping "
	    "--expect-bytes 4 --ech-config-list %s 127.0.0.1:%d; done "
	    "> %s.out 2>&1; touch %s.done) > /dev/null 2>&1 &", h_dir(), name,
	    h_bin("client"), list, s->d.port, name, name);

	free(out);
}

/* load_lines returns how many connections of load NAME have finished. */
static int
load_lines(const char *name)
{
	char *out = h_run(NULL, "cat %s/%s.out 2>/dev/null | wc -l", h_dir(),
	    name);
	int n = atoi(out);

	free(out);
	return n;
}

/* load_past waits until load NAME has finished |n| more connections. */
static void
load_past(const char *name, int n)
{
	int until = load_lines(name) + n;

	for (int i = 0; i < 600 && load_lines(name) < until; i++)
		usleep(50000);
	ck_assert_msg(load_lines(name) >= until, "load %s stalled", name);
}

/* load_stop stops load NAME and checks every connection it made was
 * accepted ECH with its data echoed. */
static void
load_stop(const char *name)
{
	char *out = h_run(NULL, "touch %s/%s.stop", h_dir(), name);

	free(out);
	for (int i = 0; i < 600; i++) {
		out = h_run(NULL, "test -f %s/%s.done && echo done", h_dir(),
		    name);
		if (out[0] != '\0') {
			free(out);
			break;
		}
		free(out);
		usleep(50000);
	}
	out = h_run(NULL, "cd '%s' && grep -v 'ok=1 .*ech=accepted' %s.out | "
	    "head -n 3", h_dir(), name);
	ck_assert_msg(out[0] == '\0' && load_lines(name) > 0, "load %s: %s",
	    name, out);
	free(out);
}

static void
reload_to(struct setup *s, const char *ech, int generation)
{
	char needle[64];
	FILE *f = fopen(s->d.conf, "w");

	ck_assert_ptr_nonnull(f);
	fputs(conf(s, ech), f);
	fclose(f);
	kill(s->d.pid, SIGHUP);
	snprintf(needle, sizeof(needle), "reload: generation %d published",
	    generation);
	ck_assert_msg(h_log_contains(&s->d, needle, 10000), "%s", needle);
}

START_TEST(rotation_by_sighup_drops_nothing)
{
	struct setup s;
	char *out;
	int st;

	start(&s, "rotate", ech_lines("a.pem"));
	/* Clients with the published config A all through. */
	load(&s, "load-a", list_a);
	load_past("load-a", 16);
	/* Step 1: add the new key; its config goes to DNS. */
	reload_to(&s, ech_lines("a.pem b.pem"), 2);
	load_past("load-a", 16);
	load(&s, "load-b", list_b);
	load_past("load-b", 16);
	/* Step 2, once the old DNS records expired: drop the old key. */
	load_stop("load-a");
	reload_to(&s, ech_lines("b.pem"), 3);
	load_past("load-b", 16);
	load_stop("load-b");
	/* A client still holding A is sent B to retry with. */
	out = ech_client(s.d.port, list_a, "", &st);
	ck_assert_msg(st != 0 && strcmp(h_field(out, "retry_configs"),
	    list_b) == 0, "%s", out);
	free(out);
	finish(&s);
}
END_TEST

/* A PEM ech file from bssl generate-ech's raw key and list: the key
 * wrapped in PKCS#8 (the fixed X25519 prefix), the list in base64. */
static const char to_pem_script[] =
    "set -e\n"
    "{ echo '-----BEGIN PRIVATE KEY-----'\n"
    "  { printf '\\060\\056\\002\\001\\000\\060\\005\\006\\003\\053\\145"
    "\\156\\004\\042\\004\\040'; cat \"$1\"; } | base64 -w 64\n"
    "  echo '-----END PRIVATE KEY-----'\n"
    "  echo '-----BEGIN ECHCONFIG-----'\n"
    "  base64 -w 64 \"$2\"\n"
    "  echo '-----END ECHCONFIG-----'; } > \"$3\"\n";

START_TEST(files_interoperate_with_bssl)
{
	struct setup s;
	char *out;
	int st, port;

	if (bssl() == NULL) {
		fprintf(stderr, "files_interoperate_with_bssl: this BoringSSL "
		    "build has no bssl tool; nothing to compare with\n");
		return;
	}
	/* bssl's files, converted, serve in tlsproxy. */
	out = h_run(&st, "cd '%s' && %s generate-ech -out-ech-config-list "
	    "g.list -out-ech-config g.config -out-private-key g.key "
	    "-public-name " PUBLIC " -config-id 200 && sh %s g.key g.list "
	    "g.pem 2>&1", h_dir(), bssl(), h_write("to-pem.sh", to_pem_script));
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	start(&s, "interop", ech_lines("g.pem"));
	out = h_run(&st, "cd '%s' && echo ping | timeout 10 %s client -connect "
	    "127.0.0.1:%d -server-name " SECRET " -root-certs ca.pem "
	    "-ech-config-list g.list 2>&1", h_dir(), bssl(), s.d.port);
	ck_assert_msg(strstr(out, "Encrypted ClientHello: yes") != NULL &&
	    strstr(out, "ping") != NULL, "%s", out);
	free(out);
	finish(&s);
	/* Ours, taken apart, serve in bssl server. It binds every address,
	 * so it runs in a network namespace of its own, with only lo. */
	port = h_free_port();
	out = h_run(&st, "cd '%s' && openssl pkey -in a.pem -outform DER | "
	    "tail -c 32 > a.key.raw && sed -n '/BEGIN ECHCONFIG/,/END "
	    "ECHCONFIG/p' a.pem | grep -v -- ----- | base64 -d | tail -c +3 > "
	    "a.config && echo %s | base64 -d > a.list && unshare -n sh -c "
	    "'ip link set lo up && { %s server -accept %d -ech-key a.key.raw "
	    "-ech-config a.config & } && sleep 0.5 && echo | timeout 10 %s "
	    "client -connect 127.0.0.1:%d -server-name " SECRET
	    " -ech-config-list a.list; kill %%1' 2>&1", h_dir(), list_a, bssl(),
	    port, bssl(), port);
	ck_assert_msg(strstr(out, "Encrypted ClientHello: yes") != NULL, "%s",
	    out);
	free(out);
}
END_TEST

/* check_conf runs tlsproxy -t on the config with |ech| lines in
 * listener l; returns its output, the exit status in |*st|. */
static char *
check_conf(const char *ech, int *st)
{
	struct setup s;

	memset(&s, 0, sizeof(s));
	s.d.port = h_free_port();
	s.plain_port = h_free_port();
	s.admin = h_free_port();
	s.bport[0] = h_free_port();
	s.bport[1] = h_free_port();
	snprintf(s.log, sizeof(s.log), "%s/check.log", h_dir());
	return h_run(st, "%s -t -c %s 2>&1", h_bin("tlsproxy"),
	    h_write("check.conf", conf(&s, ech)));
}

/* check wants tlsproxy -t to fail with |expect| among its errors. */
static void
check(const char *ech, const char *expect)
{
	int st;
	char *out = check_conf(ech, &st);

	ck_assert_msg(st != 0 && strstr(out, expect) != NULL,
	    "want '%s' in: %s", expect, out);
	free(out);
}

START_TEST(bad_files_are_named)
{
	char lines[1024];
	char *out;
	int st;

	/* The key of one file, the config of another. */
	out = h_run(&st, "cd '%s' && { sed -n '/BEGIN PRIVATE/,/END PRIVATE/p' "
	    "a.pem; sed -n '/BEGIN ECHCONFIG/,/END ECHCONFIG/p' c.pem; } > "
	    "mixed.pem && cp a.pem a-again.pem && printf 'nothing here\\n' > "
	    "empty.pem && openssl genpkey -algorithm EC -pkeyopt "
	    "ec_paramgen_curve:P-256 > ec.pem && sed -n '/BEGIN ECHCONFIG/,"
	    "/END ECHCONFIG/p' a.pem >> ec.pem && %s --new-ech-key "
	    "nowhere.example.test > nowhere.pem", h_dir(), h_bin("tlsproxy"));
	free(out);
	check(ech_lines("mixed.pem"), "mixed.pem': config id");
	check(ech_lines("mixed.pem"), "was not made for this file's private "
	    "key");
	check(ech_lines("a.pem a-again.pem"), "a-again.pem': config id");
	check(ech_lines("a.pem a-again.pem"), "is already used by");
	check(ech_lines("nowhere.pem"), "the public name nowhere.example.test "
	    "is answered by [context pub], whose certificate does not cover "
	    "it");
	check(ech_lines("empty.pem"), "empty.pem': no PEM blocks");
	check(ech_lines("ec.pem"), "is not an X25519 key");
	check(ech_lines("missing.pem"), "missing.pem': cannot open");
	snprintf(lines, sizeof(lines), "%sech_retry = %s/b.pem\n",
	    ech_lines("a.pem"), h_dir());
	check(lines, "b.pem' is not one of [listener l]'s ech files");
	/* yes stands for every file. */
	snprintf(lines, sizeof(lines), "%sech_retry = yes\n",
	    ech_lines("a.pem b.pem"));
	out = check_conf(lines, &st);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
	/* Every check passes on good files. */
	out = check_conf(ech_lines("a.pem b.pem"), &st);
	ck_assert_msg(st == 0, "%s", out);
	free(out);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("ech");
	TCase *tc = tcase_create("ech");

	h_setup("ech");
	make_files();
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, accepted_inner_name_decides);
	tcase_add_test(tc, proxy_header_carries_inner_name);
	tcase_add_test(tc, stale_config_gets_retry_configs);
	tcase_add_test(tc, retry_configs_from_ech_retry_only);
	tcase_add_test(tc, grease_is_served);
	tcase_add_test(tc, inner_name_never_on_the_wire);
	tcase_add_test(tc, rotation_by_sighup_drops_nothing);
	tcase_add_test(tc, files_interoperate_with_bssl);
	tcase_add_test(tc, bad_files_are_named);
	suite_add_tcase(s, tc);
	return check_run(s);
}
