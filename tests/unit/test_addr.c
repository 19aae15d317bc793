/* Listener and backend address syntax. */
#include <check.h>
#include <string.h>
#include <sys/un.h>

#include "../check_run.h"
#include "addr.h"

static const char *
roundtrip(const char *in)
{
	static char out[ADDR_STRLEN];
	static char err[256];
	struct addr a;

	if (addr_parse(in, &a, err, sizeof(err)) != 0)
		return err;
	return addr_format(&a, out, sizeof(out));
}

START_TEST(parses_literals)
{
	ck_assert_str_eq(roundtrip("127.0.0.1:8443"), "127.0.0.1:8443");
	ck_assert_str_eq(roundtrip("[::1]:443"), "[::1]:443");
	ck_assert_str_eq(roundtrip("[::]:443"), "[::]:443");
	ck_assert_str_eq(roundtrip("*:443"), "0.0.0.0:443");
	ck_assert_str_eq(roundtrip("unix:/run/tlsproxy.sock"),
	    "unix:/run/tlsproxy.sock");
}
END_TEST

START_TEST(rejects_with_reason)
{
	ck_assert_str_eq(roundtrip("127.0.0.1"), "expected an address like "
	    "127.0.0.1:443, [::1]:443, *:443 or unix:/path, got '127.0.0.1'");
	ck_assert_str_eq(roundtrip("127.0.0.1:0"), "expected an address like "
	    "127.0.0.1:443, [::1]:443, *:443 or unix:/path, got '127.0.0.1:0'");
	ck_assert_str_eq(roundtrip("1.2.3.4:70000"), "expected an address like "
	    "127.0.0.1:443, [::1]:443, *:443 or unix:/path, got '1.2.3.4:70000'");
	ck_assert_str_eq(roundtrip("::1:443"), "expected an address like "
	    "127.0.0.1:443, [::1]:443, *:443 or unix:/path, got '::1:443'");
	ck_assert_str_eq(roundtrip("example.com:443"), "'example.com' is not a "
	    "numeric IPv4 address or a bracketed IPv6 address");
	ck_assert_str_eq(roundtrip("unix:relative"),
	    "expected an absolute path after 'unix:'");
}
END_TEST

START_TEST(unix_path_too_long)
{
	char in[200] = "unix:/";
	struct addr a;
	char err[256];

	memset(in + 6, 'a', 150);
	in[156] = '\0';
	ck_assert_int_eq(addr_parse(in, &a, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "unix socket path longer than 107 bytes");
}
END_TEST

START_TEST(split_host_port)
{
	char host[64];
	unsigned port;

	ck_assert_int_eq(addr_split("backend.internal:8080", host,
	    sizeof(host), &port), 0);
	ck_assert_str_eq(host, "backend.internal");
	ck_assert_uint_eq(port, 8080);
	ck_assert_int_eq(addr_split("[fe80::1]:80", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "fe80::1");
	ck_assert_int_eq(addr_split(":80", host, sizeof(host), &port), -1);
	ck_assert_int_eq(addr_split("host:", host, sizeof(host), &port), -1);
	ck_assert_int_eq(addr_split("host:http", host, sizeof(host), &port), -1);
}
END_TEST

/* Found by fuzz_values: strtoul skipped blanks and took a sign, so
 * "-18446744073709551615" wrapped around to port 1. */
START_TEST(port_only_digits)
{
	char host[64];
	unsigned port = 7;

	ck_assert_int_eq(addr_split("h:-18446744073709551615", host,
	    sizeof(host), &port), -1);
	ck_assert_int_eq(addr_split("h:-65535", host, sizeof(host), &port), -1);
	ck_assert_int_eq(addr_split("h:+443", host, sizeof(host), &port), -1);
	ck_assert_int_eq(addr_split("*:  0443", host, sizeof(host), &port), -1);
	ck_assert_int_eq(addr_split("[::1]: 443", host, sizeof(host), &port),
	    -1);
	ck_assert_uint_eq(port, 7);
	ck_assert_str_eq(roundtrip("1.2.3.4:-18446744073709551615"),
	    "expected an address like 127.0.0.1:443, [::1]:443, *:443 or "
	    "unix:/path, got '1.2.3.4:-18446744073709551615'");
	/* Leading zeros are still digits. */
	ck_assert_int_eq(addr_split("h:0443", host, sizeof(host), &port), 0);
	ck_assert_uint_eq(port, 443);
}
END_TEST

START_TEST(equality)
{
	struct addr a, b;
	char err[128];

	addr_parse("127.0.0.1:1", &a, err, sizeof(err));
	addr_parse("127.0.0.1:1", &b, err, sizeof(err));
	ck_assert(addr_equal(&a, &b));
	addr_parse("127.0.0.1:2", &b, err, sizeof(err));
	ck_assert(!addr_equal(&a, &b));
	addr_parse("[::1]:1", &b, err, sizeof(err));
	ck_assert(!addr_equal(&a, &b));
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("addr");
	TCase *tc = tcase_create("addresses");

	tcase_add_test(tc, parses_literals);
	tcase_add_test(tc, rejects_with_reason);
	tcase_add_test(tc, unix_path_too_long);
	tcase_add_test(tc, split_host_port);
	tcase_add_test(tc, port_only_digits);
	tcase_add_test(tc, equality);
	suite_add_tcase(s, tc);
	return check_run(s);
}
