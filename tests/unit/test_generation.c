/* Releasing generations: the last reference dropped on a worker's thread
 * must not free the generation there (freeing thousands of contexts would
 * stall that worker's loop), but hand it to the reaper's thread. */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../check_run.h"
#include "config.h"
#include "generation.h"

static char dir[512];
static int wakes;
static pthread_t waker;

static void
make_cert(void)
{
	char cmd[2048];
	const char *tmp = getenv("TLSPROXY_TEST_TMP");

	snprintf(dir, sizeof(dir), "%s/generation.%d", tmp ? tmp : "/tmp",
	    (int)getpid());
	mkdir(tmp ? tmp : "/tmp", 0700);
	mkdir(dir, 0700);
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey ec -pkeyopt "
	    "ec_paramgen_curve:P-256 -nodes -keyout %s/k.pem -out %s/c.pem "
	    "-subj /CN=localhost -days 2 2>/dev/null", dir, dir);
	if (system(cmd) != 0)
		abort();
}

static struct generation *
build(void)
{
	char text[2048];
	struct config *cfg;
	struct generation *g;

	snprintf(text, sizeof(text), "[listener l]\nbind = 127.0.0.1:1\n"
	    "context = c\nbackend = b\n[backend b]\naddress = 127.0.0.1:2\n"
	    "[context c]\ncert = %s/c.pem\nkey = %s/k.pem\n", dir, dir);
	cfg = config_load_string("test.conf", text);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_uint_eq(cfg->num_errors, 0);
	g = generation_build(cfg);
	ck_assert_msg(g != NULL, "%s", cfg->num_errors ? cfg->errors[0] : "?");
	return g;
}

static void
wake(void *arg)
{
	(void)arg;
	wakes++;
	waker = pthread_self();
}

static void *
drop(void *arg)
{
	generation_unref(arg);
	return NULL;
}

START_TEST(last_reference_on_another_thread_goes_to_the_reaper)
{
	struct generation *g = build();
	unsigned long before = generation_live();
	pthread_t t;

	wakes = 0;
	generation_set_reaper(wake, NULL);
	generation_ref(g);
	generation_unref(g); /* not the last: nothing happens */
	ck_assert_int_eq(wakes, 0);
	ck_assert_int_eq(pthread_create(&t, NULL, drop, g), 0);
	pthread_join(t, NULL);
	/* Still alive: the worker-side drop only queued it. */
	ck_assert_uint_eq(generation_live(), before);
	ck_assert_int_eq(wakes, 1);
	ck_assert(pthread_equal(waker, t));
	generation_reap();
	ck_assert_uint_eq(generation_live(), before - 1);
	generation_set_reaper(NULL, NULL);
}
END_TEST

START_TEST(reaper_thread_frees_at_once)
{
	struct generation *g = build();
	unsigned long before = generation_live();

	wakes = 0;
	generation_set_reaper(wake, NULL);
	generation_unref(g);
	ck_assert_uint_eq(generation_live(), before - 1);
	ck_assert_int_eq(wakes, 0);
	generation_set_reaper(NULL, NULL);
}
END_TEST

START_TEST(ending_the_reaper_frees_the_queue)
{
	struct generation *a = build(), *b = build();
	unsigned long before = generation_live();
	pthread_t t;

	generation_set_reaper(wake, NULL);
	ck_assert_int_eq(pthread_create(&t, NULL, drop, a), 0);
	pthread_join(t, NULL);
	ck_assert_int_eq(pthread_create(&t, NULL, drop, b), 0);
	pthread_join(t, NULL);
	ck_assert_uint_eq(generation_live(), before);
	generation_set_reaper(NULL, NULL);
	ck_assert_uint_eq(generation_live(), before - 2);
}
END_TEST

START_TEST(without_reaper_any_thread_frees)
{
	struct generation *g = build();
	unsigned long before = generation_live();
	pthread_t t;

	ck_assert_int_eq(pthread_create(&t, NULL, drop, g), 0);
	pthread_join(t, NULL);
	ck_assert_uint_eq(generation_live(), before - 1);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("generation");
	TCase *tc = tcase_create("release");

	make_cert();
	tcase_add_test(tc, last_reference_on_another_thread_goes_to_the_reaper);
	tcase_add_test(tc, reaper_thread_frees_at_once);
	tcase_add_test(tc, ending_the_reaper_frees_the_queue);
	tcase_add_test(tc, without_reaper_any_thread_frees);
	suite_add_tcase(s, tc);
	return check_run(s);
}
