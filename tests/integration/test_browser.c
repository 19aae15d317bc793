/* A real browser as the client: Debian's Chromium, headless, fetches a
 * page through the daemon; the page must arrive, and the access-log line
 * of that connection must show the key-exchange group Chromium's default
 * ClientHello offers first (the post-quantum hybrid X25519MLKEM768). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../check_run.h"
#include "harness.h"

/* chromium returns the browser's path, or fails the test naming the
 * package: CI installs it through scripts/install-deps, and a browser test
 * that skipped itself would pass without a browser. */
static char *
chromium(void)
{
	char *out = h_run(NULL, "command -v chromium 2>/dev/null");

	out[strcspn(out, "\n")] = '\0';
	ck_assert_msg(out[0] != '\0', "chromium not found: install the Debian "
	    "package 'chromium' (scripts/install-deps does)");
	return out;
}

/* ca_spki returns the base64 SHA-256 of the test CA's public key, which
 * Chromium is told to accept as a trust anchor for this run (static
 * storage). */
static const char *
ca_spki(void)
{
	static char spki[128];
	char *out;
	int st;

	out = h_run(&st, "openssl x509 -in %s/ca.pem -noout -pubkey | "
	    "openssl pkey -pubin -outform DER | "
	    "openssl dgst -sha256 -binary | openssl base64 -A", h_dir());
	ck_assert_msg(st == 0 && out[0] != '\0', "CA key hash: %s", out);
	snprintf(spki, sizeof(spki), "%.*s", (int)strcspn(out, "\n"), out);
	free(out);
	return spki;
}

static long long
field_num(const char *line, const char *key)
{
	const char *v = h_field(line, key);

	return v != NULL ? atoll(v) : 0;
}

/* page_line returns the access-log line of the connection that carried
 * the page: of the lines for this listener with SNI localhost, the one
 * that moved the most bytes (Chromium may open a spare connection).
 * malloc'd, or NULL. */
static char *
page_line(const struct h_daemon *d)
{
	char *log = h_run(NULL, "grep '^.*conn id=[0-9].* sni=localhost ' "
	    "'%s'", d->log);
	char *best = NULL, *save = NULL;
	long long most = -1;

	for (char *l = strtok_r(log, "\n", &save); l != NULL;
	    l = strtok_r(NULL, "\n", &save)) {
		long long n = field_num(l, "bytes_in") +
		    field_num(l, "bytes_out");

		if (n > most) {
			most = n;
			free(best);
			best = strdup(l);
		}
	}
	free(log);
	return best;
}

START_TEST(chromium_fetches_a_page)
{
	struct h_daemon d;
	pid_t bpid;
	char *bin = chromium(), *out, *err, *line, profile[512], errlog[600];
	const char *group;
	int st;
	int bport = h_backend("http", NULL, &bpid);
	int port = h_free_port();

	ck_assert_int_eq(h_daemon_start(&d, "browser", h_simple_conf(port,
	    bport, NULL)), 0);
	d.port = port;
	snprintf(profile, sizeof(profile), "%s/chromium-XXXXXX", h_dir());
	ck_assert_msg(mkdtemp(profile) != NULL, "mkdtemp %s", profile);
	snprintf(errlog, sizeof(errlog), "%s.err", profile);
	/* Headless and as root (hence no sandbox); nothing in the
	 * background that would reach for hosts outside the loopback;
	 * localhost is 127.0.0.1 (the listener's address) without asking
	 * a resolver. HOME points into the fresh profile so that nothing
	 * of the machine's user is read or written. */
	out = h_run(&st, "HOME='%s' timeout 60 '%s' --headless --no-sandbox "
	    "--disable-gpu --disable-quic --no-first-run "
	    "--disable-background-networking --disable-component-update "
	    "--disable-sync --user-data-dir='%s' "
	    "--host-resolver-rules='MAP localhost 127.0.0.1' "
	    "--ignore-certificate-errors-spki-list='%s' "
	    "--dump-dom https://localhost:%d/from-chromium 2>'%s'",
	    profile, bin, profile, ca_spki(), port, errlog);
	err = h_run(NULL, "tail -n 30 '%s'", errlog);
	free(h_run(NULL, "rm -rf '%s' '%s'", profile, errlog));
	ck_assert_msg(strstr(out, "hello from tlsproxy's demo backend: GET "
	    "/from-chromium") != NULL, "chromium exited %d, page: %s\n"
	    "stderr: %s", st, out, err);
	free(out);
	free(err);
	free(bin);

	/* The line is written when the connection closes, which Chromium
	 * does as it exits. */
	ck_assert_msg(h_log_contains(&d, "sni=localhost ", 5000),
	    "no access-log line for chromium's connection");
	line = page_line(&d);
	ck_assert_msg(line != NULL, "no access-log line for the page");
	fprintf(stderr, "# chromium's connection: %s\n", line);
	group = h_field(line, "version");
	ck_assert_msg(group != NULL && strcmp(group, "TLSv1.3") == 0, "%s",
	    line);
	ck_assert_int_eq(h_daemon_stop(&d, 10000), 0);
	kill(bpid, SIGTERM);
	waitpid(bpid, NULL, 0);
	/* Last: the group, which needs the access log's group field and
	 * the hybrid group preferred by the daemon. */
	group = h_field(line, "group");
	/* Without ML-KEM in BoringSSL, Chromium falls back to X25519. */
	ck_assert_msg(group != NULL && strcmp(group, h_has_mlkem() ?
	    "X25519MLKEM768" : "X25519") == 0, "want group=%s in chromium's "
	    "access-log line: %s", h_has_mlkem() ? "X25519MLKEM768" : "X25519",
	    line);
	free(line);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("browser");
	TCase *tc = tcase_create("browser");

	h_setup("browser");
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, chromium_fetches_a_page);
	suite_add_tcase(s, tc);
	return check_run(s);
}
