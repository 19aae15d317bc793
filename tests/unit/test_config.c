/* tlsproxy.conf parsing: values, defaults, and the exact error messages. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../check_run.h"
#include "config.h"

static const char *const minimal =
    "[listener https]\n"
    "bind = 127.0.0.1:8443\n"
    "context = default\n"
    "backend = web\n"
    "[backend web]\n"
    "address = 127.0.0.1:8080\n"
    "[context default]\n"
    "cert = /etc/tlsproxy/cert.pem\n"
    "key = /etc/tlsproxy/key.pem\n";

/* errors_of parses |text| and returns its errors joined by newlines. */
static char *
errors_of(const char *text)
{
	struct config *cfg = config_load_string("t.conf", text);
	size_t len = 1;
	char *out;

	ck_assert_ptr_nonnull(cfg);
	for (size_t i = 0; i < cfg->num_errors; i++)
		len += strlen(cfg->errors[i]) + 1;
	out = calloc(1, len);
	for (size_t i = 0; i < cfg->num_errors; i++) {
		strcat(out, cfg->errors[i]);
		strcat(out, "\n");
	}
	config_free(cfg);
	return out;
}

static void
expect_errors(const char *text, const char *expected)
{
	char *got = errors_of(text);

	ck_assert_str_eq(got, expected);
	free(got);
}

static char *
with(const char *extra_global)
{
	char *s = malloc(strlen(minimal) + strlen(extra_global) + 16);

	sprintf(s, "[global]\n%s\n%s", extra_global, minimal);
	return s;
}

START_TEST(minimal_config_defaults)
{
	struct config *cfg = config_load_string("t.conf", minimal);

	ck_assert_uint_eq(cfg->num_errors, 0);
	ck_assert_int_eq(cfg->global.workers, 0);
	ck_assert_uint_eq(cfg->global.handshake_timeout_ms, 120000);
	ck_assert_uint_eq(cfg->global.idle_timeout_ms, 300000);
	ck_assert_uint_eq(cfg->global.shutdown_timeout_ms, 30000);
	ck_assert_int_eq(cfg->global.max_connections, 100000);
	ck_assert_uint_eq(cfg->global.buffer_size, 65536);
	ck_assert_uint_eq(cfg->global.busy_poll_ms, 0);
	ck_assert_str_eq(cfg->global.access_log, "yes");
	ck_assert_uint_eq(cfg->num_listeners, 1);
	ck_assert_str_eq(cfg->listeners[0].h.name, "https");
	ck_assert_uint_eq(cfg->listeners[0].bind.num, 1);
	ck_assert_str_eq(cfg->listeners[0].context, "default");
	ck_assert_uint_eq(cfg->backends[0].connect_timeout_ms, 5000);
	ck_assert_str_eq(cfg->contexts[0].cert.v[0], "/etc/tlsproxy/cert.pem");
	config_free(cfg);
}
END_TEST

START_TEST(values_and_lists)
{
	struct config *cfg = config_load_string("t.conf",
	    "[global]\n"
	    "  workers = 3   ; indented, with a comment\n"
	    "log_level = debug\n"
	    "handshake_timeout = 250ms\n"
	    "buffer_size = 16k\n"
	    "# a comment line\n"
	    "[listener https]\n"
	    "bind = 127.0.0.1:8443, [::1]:8443\n"
	    "bind = unix:/run/t.sock\n"
	    "context = default\n"
	    "backend = web\n"
	    "[backend web]\n"
	    "address = 127.0.0.1:8080,127.0.0.2:8080\n"
	    "[context default]\n"
	    "cert = c.pem\n"
	    "key = k.pem\n");

	ck_assert_uint_eq(cfg->num_errors, 0);
	ck_assert_int_eq(cfg->global.workers, 3);
	ck_assert_int_eq(cfg->global.log_level, LOGL_DEBUG);
	ck_assert_uint_eq(cfg->global.handshake_timeout_ms, 250);
	ck_assert_uint_eq(cfg->global.buffer_size, 16384);
	ck_assert_uint_eq(cfg->listeners[0].bind.num, 3);
	ck_assert_str_eq(cfg->listeners[0].bind.v[1], "[::1]:8443");
	ck_assert_int_eq(cfg->listeners[0].bind.lines[2], 9);
	ck_assert_uint_eq(cfg->backends[0].address.num, 2);
	ck_assert_int_eq(config_key_line(&cfg->contexts[0].h, "key"), 16);
	config_free(cfg);
}
END_TEST

START_TEST(bad_values_name_line_and_key)
{
	char *t = with("handshake_timeout = soon\nworkers = many\n"
	    "buffer_size = 1k\nlog_level = loud\naccess_log = maybe");

	expect_errors(t,
	    "t.conf:2: key 'handshake_timeout': expected a duration like "
	    "250ms, 30s, 10m or 12h, got 'soon'\n"
	    "t.conf:3: key 'workers': expected an integer from 1 to 1024 or "
	    "'auto', got 'many'\n"
	    "t.conf:4: key 'buffer_size': '1k' is out of range (4096 to "
	    "16777216 bytes)\n"
	    "t.conf:5: key 'log_level': expected error, warning, info or "
	    "debug, got 'loud'\n"
	    "t.conf:6: key 'access_log': expected yes, no, stderr, syslog or "
	    "an absolute file path, got 'maybe'\n");
	free(t);
}
END_TEST

START_TEST(access_log_targets)
{
	static const char *const good[] = { "yes", "no", "stderr", "syslog",
	    "/var/log/tlsproxy/access.log" };
	char *t;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char line[64];

		snprintf(line, sizeof(line), "access_log = %s", good[i]);
		t = with(line);
		expect_errors(t, "");
		free(t);
	}
	/* The target words are not booleans: only lower case names them. */
	t = with("access_log = Syslog");
	expect_errors(t, "t.conf:2: key 'access_log': expected yes, no, "
	    "stderr, syslog or an absolute file path, got 'Syslog'\n");
	free(t);
	t = with("access_log = access.log");
	expect_errors(t, "t.conf:2: key 'access_log': expected yes, no, "
	    "stderr, syslog or an absolute file path, got 'access.log'\n");
	free(t);
}
END_TEST

START_TEST(unknown_sections_and_keys)
{
	expect_errors("[globl]\nworkers = 1\n[global]\ncolour = blue\n"
	    "[listener]\n",
	    "t.conf:1: unknown section [globl]: expected [global], "
	    "[listener NAME], [backend NAME], [context NAME] or [acme NAME]\n"
	    "t.conf:4: key 'colour': unknown key in [global]\n"
	    "t.conf:5: [listener] needs one name, like [listener NAME]\n"
	    "t.conf: no [listener NAME] section: nothing to accept "
	    "connections on\n");
}
END_TEST

START_TEST(syntax_errors_all_reported)
{
	expect_errors("workers = 2\n[global\nthis is not ini\n[global]\n"
	    "workers = 2\nworkers = 3\nidle_timeout =\n",
	    "t.conf:1: key outside of a section: put it under [global] or "
	    "another section\n"
	    "t.conf:2: expected ']' to close the section header\n"
	    "t.conf:3: expected 'key = value', '[section]' or a comment, got "
	    "'this is not ini'\n"
	    "t.conf:6: key 'workers': set twice in [global] (first at line 5)\n"
	    "t.conf:7: key 'idle_timeout': empty value\n"
	    "t.conf: no [listener NAME] section: nothing to accept "
	    "connections on\n");
}
END_TEST

START_TEST(missing_and_dangling_references)
{
	expect_errors("[listener a]\nbind = 127.0.0.1:1\ncontext = nope\n"
	    "backend = gone\n[listener b]\n[backend web]\n[context c]\n"
	    "cert = x\n",
	    "t.conf:3: key 'context': no [context nope] in this file\n"
	    "t.conf:4: key 'backend': no [backend gone] in this file\n"
	    "t.conf:5: [listener b] needs key 'bind' (addresses to accept TLS "
	    "on: 1.2.3.4:443, [::]:443, *:443, unix:/path)\n"
	    "t.conf:5: [listener b] needs key 'context' (the default "
	    "[context]: for clients without a server name or with one no "
	    "context serves)\n"
	    "t.conf:5: [listener b] needs key 'backend' (the [backend] that "
	    "decrypted traffic goes to)\n"
	    "t.conf:6: [backend web] needs key 'address' (host:port, "
	    "[v6]:port or unix:/path; several are used round-robin)\n"
	    "t.conf:8: key 'cert': [context c] has 1 cert and 0 key lines; "
	    "each cert needs its key, in the same order\n");
}
END_TEST

START_TEST(duplicate_sections_and_binds)
{
	expect_errors("[global]\n[global]\n"
	    "[listener a]\nbind = 127.0.0.1:1, 127.0.0.1:1\ncontext = c\n"
	    "backend = b\n"
	    "[listener z]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:2\n[backend b]\n"
	    "[context c]\ncert = x\nkey = y\n",
	    "t.conf:2: [global] appears twice (first at line 1)\n"
	    "t.conf:13: [backend b] appears twice (first at line 11)\n"
	    "t.conf:4: key 'bind': address 127.0.0.1:1 is already bound at "
	    "line 4\n"
	    "t.conf:8: key 'bind': address 127.0.0.1:1 is already bound at "
	    "line 4\n");
}
END_TEST

START_TEST(bad_addresses)
{
	expect_errors("[listener a]\nbind = localhost:443, 1.2.3.4\n"
	    "context = c\nbackend = b\n[backend b]\n"
	    "address = backend:http, unix:rel, ok.example:80\n"
	    "[context c]\ncert = x\nkey = y\n",
	    "t.conf:2: key 'bind': 'localhost' is not a numeric IPv4 address "
	    "or a bracketed IPv6 address\n"
	    "t.conf:2: key 'bind': expected an address like 127.0.0.1:443, "
	    "[::1]:443, *:443 or unix:/path, got '1.2.3.4'\n"
	    "t.conf:6: key 'address': expected host:port, [v6]:port or "
	    "unix:/path, got 'backend:http'\n"
	    "t.conf:6: key 'address': expected an absolute path after "
	    "'unix:'\n");
}
END_TEST

START_TEST(long_line_refused)
{
	char text[600];

	snprintf(text, sizeof(text), "[global]\nlog_level = %0250d\n", 1);
	expect_errors(text,
	    "t.conf:2: line longer than 198 characters; split long lists "
	    "over repeated keys\n"
	    "t.conf: no [listener NAME] section: nothing to accept "
	    "connections on\n");
}
END_TEST

START_TEST(missing_file)
{
	struct config *cfg = config_load("/nonexistent/tlsproxy.conf");

	ck_assert_uint_eq(cfg->num_errors, 1);
	ck_assert_str_eq(cfg->errors[0], "/nonexistent/tlsproxy.conf: cannot "
	    "open: No such file or directory");
	config_free(cfg);
}
END_TEST

START_TEST(file_with_crlf_and_bom)
{
	char path[] = "/tmp/tlsproxy-conf-XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	struct config *cfg;

	fputs("\xEF\xBB\xBF[global]\r\nworkers = 2\r\n", f);
	fputs(minimal, f);
	fclose(f);
	cfg = config_load(path);
	unlink(path);
	ck_assert_uint_eq(cfg->num_errors, 0);
	ck_assert_int_eq(cfg->global.workers, 2);
	config_free(cfg);
}
END_TEST

START_TEST(context_options_checked)
{
	expect_errors("[global]\nmin_version = SSLv3\nalpn_strict = maybe\n"
	    "[listener a]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "alpn_backend = h2:nope, junk\n"
	    "[backend b]\naddress = 127.0.0.1:2\n"
	    "[context c]\ncert = x\nkey = y\ndhparam = dh.pem\n"
	    "max_version = TLSv9\ncrl = r.pem\nbackend = gone\n"
	    "[context d]\nservername = d.example\nrequest_cert = yes\n"
	    "passphrase = a\npassphrase_file = f\n",
	    "t.conf:3: key 'alpn_strict': expected yes or no, got 'maybe'\n"
	    "t.conf:8: key 'alpn_backend': no [backend nope] in this file\n"
	    "t.conf:8: key 'alpn_backend': expected protocol:backend, got "
	    "'junk'\n"
	    "t.conf:14: key 'dhparam': not supported: BoringSSL has no DHE key "
	    "exchange; ECDHE always gives forward secrecy, so remove this "
	    "line\n"
	    "t.conf:17: key 'backend': no [backend gone] in this file\n"
	    "t.conf:16: key 'crl': has no effect without request_cert = yes\n"
	    "t.conf:15: key 'max_version': expected TLSv1, TLSv1.1, TLSv1.2 "
	    "or TLSv1.3, got 'TLSv9'\n"
	    "t.conf:18: [context d] needs 'cert' and 'key' (PEM), 'pfx' "
	    "(PKCS#12) or 'acme' (certificates obtained automatically)\n"
	    "t.conf:22: key 'passphrase_file': give either passphrase or "
	    "passphrase_file, not both\n"
	    "t.conf:20: key 'request_cert': needs 'ca', the CAs that client "
	    "certificates are checked against (or reject_unauthorized = no)\n"
	    "t.conf:2: key 'min_version': SSLv3 is not supported: it is broken "
	    "and BoringSSL does not implement it; use TLSv1.2 or TLSv1.3\n");
}
END_TEST

START_TEST(global_tls_defaults_and_overrides)
{
	struct config *cfg = config_load_string("t.conf",
	    "[global]\nciphers = ECDHE+AESGCM\nalpn = h2, http/1.1\n"
	    "ecdh_curve = X25519\n"
	    "[listener a]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "ecdh_curve = P-256\nmax_version = TLSv1.3\n"
	    "[backend b]\naddress = 127.0.0.1:2\n"
	    "[context c]\ncert = x\nkey = y\nmax_version = TLSv1.2\n"
	    "alpn = http/1.1\n");
	struct conf_tls t;

	ck_assert_uint_eq(cfg->num_errors, 0);
	ck_assert(config_listener_has_tls(&cfg->listeners[0]));
	/* Without the listener: context, then [global]. */
	config_tls_effective(cfg, NULL, &cfg->contexts[0], &t);
	ck_assert_str_eq(t.ecdh_curve, "X25519");
	ck_assert_int_eq(config_tls_line(cfg, NULL, &cfg->contexts[0],
	    "ecdh_curve"), 4);
	/* Through the listener: context, then listener, then [global]. */
	config_tls_effective(cfg, &cfg->listeners[0], &cfg->contexts[0], &t);
	ck_assert_str_eq(t.ecdh_curve, "P-256");
	ck_assert_int_eq(config_tls_line(cfg, &cfg->listeners[0],
	    &cfg->contexts[0], "ecdh_curve"), 9);
	ck_assert_int_eq(config_tls_line(cfg, &cfg->listeners[0],
	    &cfg->contexts[0], "max_version"), 16);
	ck_assert_str_eq(t.ciphers, "ECDHE+AESGCM");
	ck_assert_str_eq(t.max_version, "TLSv1.2");
	ck_assert_str_eq(t.min_version, "TLSv1.2");
	ck_assert_uint_eq(t.alpn.num, 1);
	ck_assert_str_eq(t.alpn.v[0], "http/1.1");
	ck_assert_int_eq(t.honor_cipher_order, 1);
	ck_assert_int_eq(t.max_send_fragment, 16384);
	config_free(cfg);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("parse");

	tcase_add_test(tc, minimal_config_defaults);
	tcase_add_test(tc, values_and_lists);
	tcase_add_test(tc, bad_values_name_line_and_key);
	tcase_add_test(tc, access_log_targets);
	tcase_add_test(tc, unknown_sections_and_keys);
	tcase_add_test(tc, syntax_errors_all_reported);
	tcase_add_test(tc, missing_and_dangling_references);
	tcase_add_test(tc, duplicate_sections_and_binds);
	tcase_add_test(tc, bad_addresses);
	tcase_add_test(tc, long_line_refused);
	tcase_add_test(tc, missing_file);
	tcase_add_test(tc, file_with_crlf_and_bom);
	tcase_add_test(tc, context_options_checked);
	tcase_add_test(tc, global_tls_defaults_and_overrides);
	suite_add_tcase(s, tc);
	return check_run(s);
}
