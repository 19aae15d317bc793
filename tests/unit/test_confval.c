/* Durations, sizes, booleans and integers as written in tlsproxy.conf. */
#include <check.h>

#include "../check_run.h"
#include "confval.h"

START_TEST(duration_units)
{
	uint64_t ms;

	ck_assert_int_eq(confval_duration("250ms", &ms), 0);
	ck_assert_uint_eq(ms, 250);
	ck_assert_int_eq(confval_duration("30s", &ms), 0);
	ck_assert_uint_eq(ms, 30000);
	ck_assert_int_eq(confval_duration("10m", &ms), 0);
	ck_assert_uint_eq(ms, 600000);
	ck_assert_int_eq(confval_duration("12h", &ms), 0);
	ck_assert_uint_eq(ms, 43200000);
	ck_assert_int_eq(confval_duration("2d", &ms), 0);
	ck_assert_uint_eq(ms, 172800000);
	ck_assert_int_eq(confval_duration("120", &ms), 0);
	ck_assert_uint_eq(ms, 120000);
	ck_assert_int_eq(confval_duration("5 S", &ms), 0);
	ck_assert_uint_eq(ms, 5000);
}
END_TEST

START_TEST(duration_rejects)
{
	uint64_t ms = 7;

	ck_assert_int_eq(confval_duration("soon", &ms), -1);
	ck_assert_int_eq(confval_duration("-5s", &ms), -1);
	ck_assert_int_eq(confval_duration("5x", &ms), -1);
	ck_assert_int_eq(confval_duration("", &ms), -1);
	ck_assert_int_eq(confval_duration("1.5s", &ms), -1);
	ck_assert_int_eq(confval_duration("99999999999999999999s", &ms), -1);
	ck_assert_int_eq(confval_duration("18446744073709551615h", &ms), -1);
	ck_assert_uint_eq(ms, 7);
}
END_TEST

START_TEST(size_units)
{
	uint64_t b;

	ck_assert_int_eq(confval_size("512", &b), 0);
	ck_assert_uint_eq(b, 512);
	ck_assert_int_eq(confval_size("16k", &b), 0);
	ck_assert_uint_eq(b, 16384);
	ck_assert_int_eq(confval_size("64KiB", &b), 0);
	ck_assert_uint_eq(b, 65536);
	ck_assert_int_eq(confval_size("4m", &b), 0);
	ck_assert_uint_eq(b, 4194304);
	ck_assert_int_eq(confval_size("1g", &b), 0);
	ck_assert_uint_eq(b, 1073741824);
	ck_assert_int_eq(confval_size("12q", &b), -1);
	ck_assert_int_eq(confval_size("k", &b), -1);
}
END_TEST

START_TEST(booleans)
{
	int v = -1;
	static const char *const yes[] = { "yes", "YES", "true", "on", "1" };
	static const char *const no[] = { "no", "False", "off", "0" };

	for (size_t i = 0; i < 5; i++) {
		ck_assert_int_eq(confval_bool(yes[i], &v), 0);
		ck_assert_int_eq(v, 1);
	}
	for (size_t i = 0; i < 4; i++) {
		ck_assert_int_eq(confval_bool(no[i], &v), 0);
		ck_assert_int_eq(v, 0);
	}
	ck_assert_int_eq(confval_bool("maybe", &v), -1);
	ck_assert_int_eq(confval_bool("", &v), -1);
}
END_TEST

START_TEST(integers)
{
	int64_t v;

	ck_assert_int_eq(confval_int("42", 0, 100, &v), 0);
	ck_assert_int_eq(v, 42);
	ck_assert_int_eq(confval_int("101", 0, 100, &v), -1);
	ck_assert_int_eq(confval_int("-1", 0, 100, &v), -1);
	ck_assert_int_eq(confval_int("4x", 0, 100, &v), -1);
	ck_assert_int_eq(confval_int("", 0, 100, &v), -1);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("confval");
	TCase *tc = tcase_create("values");

	tcase_add_test(tc, duration_units);
	tcase_add_test(tc, duration_rejects);
	tcase_add_test(tc, size_units);
	tcase_add_test(tc, booleans);
	tcase_add_test(tc, integers);
	suite_add_tcase(s, tc);
	return check_run(s);
}
