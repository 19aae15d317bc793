/* The server-name table: exact names, one-label wildcards, default. */
#include <check.h>
#include <stdio.h>
#include <string.h>

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

/* Found by fuzz_sni: sni_add stored names of up to 255 bytes, but
 * lookups had room for 254, so a 255-byte name was never found. */
START_TEST(longest_name_found)
{
	struct sni_table *t = sni_new(&def);
	char name[300], wname[300];

	memset(name, 'h', 255);
	memcpy(name + 250, ".test", 6);
	ck_assert_uint_eq(strlen(name), 255);
	ck_assert_int_eq(sni_add(t, name, &a, NULL), 0);
	ck_assert_ptr_eq(sni_lookup(t, name), &a);
	/* A trailing dot is not part of the name. */
	strcat(name, ".");
	ck_assert_ptr_eq(sni_lookup(t, name), &a);
	/* A wildcard's longest match is 255 bytes too. */
	memset(wname, 'w', 254);
	memcpy(wname, "*.", 2);
	wname[254] = '\0';
	ck_assert_int_eq(sni_add(t, wname, &wild, NULL), 0);
	memset(name, 'w', 255);
	memcpy(name, "ab.", 3);
	name[255] = '\0';
	ck_assert_ptr_eq(sni_lookup(t, name), &wild);
	/* 256 bytes is too long for either. */
	memset(name, 'h', 256);
	name[256] = '\0';
	ck_assert_int_eq(sni_add(t, name, &b, NULL), -2);
	ck_assert_ptr_eq(sni_lookup(t, name), &def);
	sni_free(t);
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
	tcase_add_test(tc, longest_name_found);
	suite_add_tcase(s, tc);
	return check_run(s);
}
