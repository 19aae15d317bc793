/* The server-name table: exact names, one-label wildcards, default. */
#include <check.h>
#include <stdio.h>

#include "../check_run.h"
#include "sni.h"

static int def, a, wild, b;

START_TEST(lookup_order)
{
	struct sni_table *t = sni_new(&def);

	ck_assert_int_eq(sni_add(t, "a.example.com", &a, NULL), 0);
	ck_assert_int_eq(sni_add(t, "*.example.com", &wild, NULL), 0);
	ck_assert_int_eq(sni_add(t, "b.example.org", &b, NULL), 0);
	ck_assert_ptr_eq(sni_lookup(t, "a.example.com"), &a);
	ck_assert_ptr_eq(sni_lookup(t, "A.Example.COM."), &a);
	ck_assert_ptr_eq(sni_lookup(t, "x.example.com"), &wild);
	ck_assert_ptr_eq(sni_lookup(t, "example.com"), &def);
	ck_assert_ptr_eq(sni_lookup(t, "a.b.example.com"), &def);
	ck_assert_ptr_eq(sni_lookup(t, "b.example.org"), &b);
	ck_assert_ptr_eq(sni_lookup(t, "c.example.org"), &def);
	ck_assert_ptr_eq(sni_lookup(t, NULL), &def);
	ck_assert_ptr_eq(sni_lookup(t, ""), &def);
	ck_assert_ptr_eq(sni_lookup(t, "."), &def);
	sni_free(t);
}
END_TEST

START_TEST(duplicates_reported)
{
	struct sni_table *t = sni_new(&def);
	void *existing = NULL;

	ck_assert_int_eq(sni_add(t, "a.example.com", &a, NULL), 0);
	ck_assert_int_eq(sni_add(t, "A.EXAMPLE.COM.", &b, &existing), -1);
	ck_assert_ptr_eq(existing, &a);
	sni_free(t);
}
END_TEST

START_TEST(many_names)
{
	struct sni_table *t = sni_new(&def);
	static int vals[10000];
	char name[64];

	for (int i = 0; i < 10000; i++) {
		snprintf(name, sizeof(name), "host%d.example.net", i);
		ck_assert_int_eq(sni_add(t, name, &vals[i], NULL), 0);
	}
	for (int i = 0; i < 10000; i += 7) {
		snprintf(name, sizeof(name), "HOST%d.example.net", i);
		ck_assert_ptr_eq(sni_lookup(t, name), &vals[i]);
	}
	ck_assert_ptr_eq(sni_lookup(t, "host10000.example.net"), &def);
	sni_free(t);
}
END_TEST

START_TEST(empty_table_is_default)
{
	struct sni_table *t = sni_new(&def);

	ck_assert_ptr_eq(sni_lookup(t, "anything.example"), &def);
	sni_free(t);
	sni_free(NULL);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("sni");
	TCase *tc = tcase_create("table");

	tcase_add_test(tc, lookup_order);
	tcase_add_test(tc, duplicates_reported);
	tcase_add_test(tc, many_names);
	tcase_add_test(tc, empty_table_is_default);
	suite_add_tcase(s, tc);
	return check_run(s);
}
