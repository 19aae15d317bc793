/* The acme_http listener's answers: the key authorization of a token
 * being validated, 404 for other tokens, a redirect to https (host kept,
 * port dropped) for everything else, 400 for what is not a request. */
#include <check.h>
#include <string.h>

#include "../check_run.h"
#include "acme_challenge.h"
#include "acme_http.h"

static char out[2048];

static int
answer(const char *req)
{
	int status = 0;
	size_t n = acme_http_answer(req, strlen(req), out, sizeof(out),
	    &status);

	ck_assert_uint_gt(n, 0);
	ck_assert_uint_eq(strlen(out), n);
	return status;
}

START_TEST(token_answered_with_its_key_authorization)
{
	ck_assert_int_eq(acme_challenge_set_http("tok-123_abc", "tok-123_abc."
	    "thumbprint"), 0);
	ck_assert_int_eq(answer("GET /.well-known/acme-challenge/tok-123_abc "
	    "HTTP/1.1\r\nHost: www.acme.test\r\n\r\n"), 200);
	ck_assert_ptr_nonnull(strstr(out, "\r\n\r\ntok-123_abc.thumbprint"));
	ck_assert_ptr_nonnull(strstr(out, "Content-Length: 22\r\n"));
	ck_assert_int_eq(answer("GET /.well-known/acme-challenge/other "
	    "HTTP/1.1\r\nHost: www.acme.test\r\n\r\n"), 404);
	acme_challenge_clear_http("tok-123_abc");
	ck_assert_int_eq(answer("GET /.well-known/acme-challenge/tok-123_abc "
	    "HTTP/1.0\r\n\r\n"), 404);
}
END_TEST

START_TEST(everything_else_redirected_to_https)
{
	ck_assert_int_eq(answer("GET /shop/cart?id=7 HTTP/1.1\r\n"
	    "host: www.acme.test:80\r\nAccept: */*\r\n\r\n"), 301);
	ck_assert_ptr_nonnull(strstr(out,
	    "Location: https://www.acme.test/shop/cart?id=7\r\n"));
	ck_assert_int_eq(answer("POST / HTTP/1.1\r\nHost: [2001:db8::1]:8080"
	    "\r\n\r\n"), 301);
	ck_assert_ptr_nonnull(strstr(out, "Location: https://[2001:db8::1]/\r\n"));
	ck_assert_int_eq(answer("GET /.well-known/acme-challenge/x HTTP/1.1"
	    "\r\n\r\n"), 404);
}
END_TEST

START_TEST(what_is_not_a_request_is_refused)
{
	static const char *const bad[] = {
		"GET / HTTP/1.1\r\n\r\n",                 /* no Host */
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",     /* bad Host */
		"GET / HTTP/1.1\r\nHost: x\r\nLocation: y\r\n\r\n\x01",
		"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a\"b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET noslash HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / SPDY/3\r\nHost: x\r\n\r\n",
		"GARBAGE\r\n\r\n",
		"\r\n\r\n",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int st = answer(bad[i]);

		ck_assert_msg(st == 400 || (i == 2 && st == 301),
		    "case %zu: %d", i, st);
		ck_assert_ptr_null(strstr(out, "Location: https://x\r\nLocation"));
	}
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("acme_http");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, token_answered_with_its_key_authorization);
	tcase_add_test(tc, everything_else_redirected_to_https);
	tcase_add_test(tc, what_is_not_a_request_is_refused);
	suite_add_tcase(s, tc);
	return check_run(s);
}
