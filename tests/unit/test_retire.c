/* Deferred freeing: nothing is freed while a registered reader may hold
 * it, lagging readers are woken, removed readers and readers that came
 * later hold nothing back, and with readers swapping pointers in a loop
 * no read ever touches freed memory (run under ASan). */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../check_run.h"
#include "retire.h"

struct obj {
	struct retire_node retire;
	int *freed; /* set when freed */
	uint64_t value;
};

static void
obj_free(void *arg)
{
	struct obj *o = arg;

	if (o->freed != NULL)
		(*o->freed)++;
	free(o);
}

static struct obj *
obj_new(int *freed, uint64_t value)
{
	struct obj *o = calloc(1, sizeof(*o));

	ck_assert_ptr_nonnull(o);
	o->freed = freed;
	o->value = value;
	return o;
}

static void
count_wake(void *arg)
{
	(*(int *)arg)++;
}

START_TEST(no_readers_frees_at_once)
{
	int freed = 0;
	struct obj *o = obj_new(&freed, 1);

	retire_defer(&o->retire, obj_free, o);
	ck_assert_int_eq(freed, 1);
	ck_assert_uint_eq(retire_pending(), 0);
}
END_TEST

START_TEST(waits_for_every_reader)
{
	struct retire_reader a, b;
	int freed = 0, woke_a = 0, woke_b = 0;
	struct obj *o = obj_new(&freed, 1);

	retire_reader_add(&a, count_wake, &woke_a);
	retire_reader_add(&b, count_wake, &woke_b);
	retire_defer(&o->retire, obj_free, o);
	ck_assert_int_eq(freed, 0);
	ck_assert_uint_eq(retire_pending(), 1);
	/* Idle readers are asked for a quiescent point. */
	ck_assert_int_eq(woke_a, 1);
	ck_assert_int_eq(woke_b, 1);
	retire_quiescent(&a);
	retire_collect();
	ck_assert_int_eq(freed, 0);
	retire_quiescent(&b);
	retire_collect();
	ck_assert_int_eq(freed, 1);
	ck_assert_uint_eq(retire_pending(), 0);
	retire_reader_remove(&a);
	retire_reader_remove(&b);
}
END_TEST

START_TEST(quiescent_before_retire_does_not_count)
{
	struct retire_reader a;
	int freed = 0;
	struct obj *o = obj_new(&freed, 1);

	retire_reader_add(&a, NULL, NULL);
	retire_quiescent(&a);
	retire_defer(&o->retire, obj_free, o);
	retire_collect();
	ck_assert_int_eq(freed, 0);
	retire_quiescent(&a);
	retire_collect();
	ck_assert_int_eq(freed, 1);
	retire_reader_remove(&a);
}
END_TEST

START_TEST(removed_reader_holds_nothing_back)
{
	struct retire_reader a, b;
	int freed = 0;
	struct obj *o1 = obj_new(&freed, 1), *o2 = obj_new(&freed, 2);

	retire_reader_add(&a, NULL, NULL);
	retire_reader_add(&b, NULL, NULL);
	retire_defer(&o1->retire, obj_free, o1);
	retire_defer(&o2->retire, obj_free, o2);
	retire_quiescent(&b);
	retire_collect();
	ck_assert_int_eq(freed, 0);
	/* |a| exits without passing a quiescent point. */
	retire_reader_remove(&a);
	ck_assert_int_eq(freed, 2);
	ck_assert_uint_eq(retire_pending(), 0);
	retire_reader_remove(&b);
}
END_TEST

START_TEST(later_reader_holds_nothing_back)
{
	struct retire_reader a, b;
	int freed = 0;
	struct obj *o = obj_new(&freed, 1);

	retire_reader_add(&a, NULL, NULL);
	retire_defer(&o->retire, obj_free, o);
	retire_reader_add(&b, NULL, NULL);
	retire_quiescent(&a);
	retire_collect();
	ck_assert_int_eq(freed, 1);
	retire_reader_remove(&a);
	retire_reader_remove(&b);
}
END_TEST

START_TEST(frees_in_order_as_readers_pass)
{
	struct retire_reader a;
	int freed = 0;
	struct obj *o1 = obj_new(&freed, 1), *o2 = obj_new(&freed, 2);

	retire_reader_add(&a, NULL, NULL);
	retire_defer(&o1->retire, obj_free, o1);
	retire_quiescent(&a);
	retire_defer(&o2->retire, obj_free, o2);
	retire_collect();
	ck_assert_int_eq(freed, 1);
	ck_assert_uint_eq(retire_pending(), 1);
	retire_quiescent(&a);
	retire_collect();
	ck_assert_int_eq(freed, 2);
	retire_reader_remove(&a);
}
END_TEST

/* Readers load the published object and check it between quiescent
 * points while the main thread replaces it; the value must always be one
 * that was published, and ASan would report any read of a freed one. */
#define STRESS_READERS 3
#define STRESS_SWAPS 20000

static _Atomic(struct obj *) published;
static atomic_int stop;

struct stress_reader {
	pthread_t thread;
	struct retire_reader r;
	atomic_int woken;
	uint64_t reads;
	int bad;
};

static void
stress_wake(void *arg)
{
	atomic_store(&((struct stress_reader *)arg)->woken, 1);
}

static void *
stress_read(void *arg)
{
	struct stress_reader *sr = arg;

	retire_reader_add(&sr->r, stress_wake, sr);
	while (!atomic_load(&stop)) {
		for (int i = 0; i < 64; i++) {
			const struct obj *o = atomic_load_explicit(&published,
			    memory_order_acquire);
			volatile uint64_t v = o->value;

			if (v == 0 || v > STRESS_SWAPS + 1)
				sr->bad++;
			sr->reads++;
		}
		/* Answer a wake-up like a worker's loop would. */
		if (atomic_exchange(&sr->woken, 0) || (sr->reads & 1023) == 0)
			retire_quiescent(&sr->r);
	}
	retire_reader_remove(&sr->r);
	return NULL;
}

START_TEST(readers_never_see_freed_memory)
{
	struct stress_reader sr[STRESS_READERS];

	memset(sr, 0, sizeof(sr));
	atomic_store(&published, obj_new(NULL, 1));
	atomic_store(&stop, 0);
	for (int i = 0; i < STRESS_READERS; i++)
		ck_assert_int_eq(pthread_create(&sr[i].thread, NULL,
		    stress_read, &sr[i]), 0);
	for (uint64_t v = 2; v <= STRESS_SWAPS + 1; v++) {
		struct obj *old = atomic_exchange(&published,
		    obj_new(NULL, v));

		retire_defer(&old->retire, obj_free, old);
		if ((v & 255) == 0)
			retire_collect();
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < STRESS_READERS; i++) {
		pthread_join(sr[i].thread, NULL);
		ck_assert_int_eq(sr[i].bad, 0);
	}
	retire_collect();
	ck_assert_uint_eq(retire_pending(), 0);
	obj_free(atomic_load(&published));
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("retire");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, no_readers_frees_at_once);
	tcase_add_test(tc, waits_for_every_reader);
	tcase_add_test(tc, quiescent_before_retire_does_not_count);
	tcase_add_test(tc, removed_reader_holds_nothing_back);
	tcase_add_test(tc, later_reader_holds_nothing_back);
	tcase_add_test(tc, frees_in_order_as_readers_pass);
	tcase_add_test(tc, readers_never_see_freed_memory);
	suite_add_tcase(s, tc);
	return check_run(s);
}
