/* Staple slots: shared by certificate hash, freed with their last
 * reference; responses served until they expire and never after;
 * handshakes on other threads reading a slot while its response keeps
 * being replaced never touch freed memory (run under ASan); and responses
 * handed to a new process fill only the slots there that exist and have
 * none. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "../check_run.h"
#include "test_server_ctx.h"
#include "retire.h"
#include "staple.h"

static void
hash_of(uint8_t fill, uint8_t hash[32])
{
	memset(hash, fill, 32);
}

START_TEST(slots_shared_and_freed_with_last_reference)
{
	uint8_t h1[32], h2[32];
	size_t before = staple_slots_live();
	struct staple_slot *a, *b, *c;

	hash_of(1, h1);
	hash_of(2, h2);
	a = staple_slot_get(h1);
	b = staple_slot_get(h1);
	c = staple_slot_get(h2);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_eq(a, b);
	ck_assert_ptr_ne(a, c);
	ck_assert_uint_eq(staple_slots_live(), before + 2);
	ck_assert_int_eq(staple_set(a, (const uint8_t *)"resp", 4,
	    (int64_t)time(NULL) + 3600), 0);
	/* A second context for the same certificate leaves: the staple
	 * stays for the other. */
	staple_slot_unref(b);
	ck_assert_uint_eq(staple_slots_live(), before + 2);
	ck_assert(staple_has(a));
	ck_assert_ptr_eq(staple_slot_ref(c), c);
	staple_slot_unref(c);
	ck_assert_uint_eq(staple_slots_live(), before + 2);
	staple_slot_unref(c);
	ck_assert_uint_eq(staple_slots_live(), before + 1);
	staple_slot_unref(a);
	ck_assert_uint_eq(staple_slots_live(), before);
	/* Found again by hash: a new, empty slot. */
	a = staple_slot_get(h1);
	ck_assert(!staple_has(a));
	staple_slot_unref(a);
	staple_slot_unref(NULL);
	ck_assert_uint_eq(staple_slots_live(), before);
}
END_TEST

START_TEST(prune_drops_only_expired)
{
	uint8_t h1[32], h2[32];
	struct staple_slot *a, *b;
	int64_t now = (int64_t)time(NULL);

	hash_of(3, h1);
	hash_of(4, h2);
	a = staple_slot_get(h1);
	b = staple_slot_get(h2);
	ck_assert_int_eq(staple_set(a, (const uint8_t *)"old", 3, now - 1), 0);
	ck_assert_int_eq(staple_set(b, (const uint8_t *)"new", 3, now + 60),
	    0);
	staple_prune(now);
	ck_assert(!staple_has(a));
	ck_assert(staple_has(b));
	ck_assert_int_eq(staple_set(b, NULL, 0, 0), 0);
	ck_assert(!staple_has(b));
	staple_slot_unref(a);
	staple_slot_unref(b);
}
END_TEST

/* handshake runs a TLS handshake in memory after |s| was applied to the
 * server side, and returns the length of the response the client got
 * stapled (0: none), copying up to |out_len| bytes of it to |out|. */
static size_t
handshake(SSL_CTX *sctx, SSL_CTX *cctx, struct staple_slot *s, uint8_t *out,
    size_t out_len)
{
	SSL *srv = SSL_new(sctx), *cli = SSL_new(cctx);
	BIO *bs, *bc;
	const uint8_t *resp;
	size_t resp_len = 0;
	int done_s = 0, done_c = 0;

	ck_assert(srv != NULL && cli != NULL);
	ck_assert_int_eq(BIO_new_bio_pair(&bs, 0, &bc, 0), 1);
	SSL_set_bio(srv, bs, bs);
	SSL_set_bio(cli, bc, bc);
	SSL_set_accept_state(srv);
	SSL_set_connect_state(cli);
	SSL_enable_ocsp_stapling(cli);
	staple_apply(s, srv);
	for (int i = 0; i < 20 && !(done_s && done_c); i++) {
		if (!done_c)
			done_c = SSL_do_handshake(cli) == 1;
		if (!done_s)
			done_s = SSL_do_handshake(srv) == 1;
	}
	ck_assert(done_s && done_c);
	SSL_get0_ocsp_response(cli, &resp, &resp_len);
	if (out != NULL && resp_len > 0)
		memcpy(out, resp, resp_len < out_len ? resp_len : out_len);
	SSL_free(srv);
	SSL_free(cli);
	return resp_len;
}

START_TEST(served_until_expiry_never_after)
{
	SSL_CTX *sctx = test_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	uint8_t h[32], got[16];
	struct staple_slot *s;
	int64_t now = (int64_t)time(NULL);

	hash_of(5, h);
	s = staple_slot_get(h);
	ck_assert_uint_eq(handshake(sctx, cctx, s, NULL, 0), 0);
	ck_assert_int_eq(staple_set(s, (const uint8_t *)"fresh", 5, now + 60),
	    0);
	ck_assert_uint_eq(handshake(sctx, cctx, s, got, sizeof(got)), 5);
	ck_assert_mem_eq(got, "fresh", 5);
	ck_assert_int_eq(staple_set(s, (const uint8_t *)"stale", 5, now), 0);
	ck_assert_uint_eq(handshake(sctx, cctx, s, NULL, 0), 0);
	/* Skipped, not dropped, until the control side prunes it. */
	ck_assert(staple_has(s));
	staple_prune(now);
	ck_assert(!staple_has(s));
	staple_slot_unref(s);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

/* The responses staple_foreach gave, as a new process receives them. */
struct handed {
	uint8_t hash[32];
	uint8_t der[32];
	size_t len;
	int64_t expires;
};

struct handed_list {
	struct handed v[8];
	size_t num;
};

static void
hand_one(void *arg, const uint8_t hash[32], const uint8_t *der, size_t len,
    int64_t expires)
{
	struct handed_list *l = arg;
	struct handed *h = &l->v[l->num++];

	ck_assert_uint_le(l->num, sizeof(l->v) / sizeof(l->v[0]));
	ck_assert_uint_le(len, sizeof(h->der));
	memcpy(h->hash, hash, 32);
	memcpy(h->der, der, len);
	h->len = len;
	h->expires = expires;
}

START_TEST(foreach_hands_over_fresh_responses)
{
	SSL_CTX *sctx = test_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	size_t before = staple_slots_live();
	struct handed_list l = { .num = 0 };
	uint8_t h1[32], h2[32], h3[32], got[16];
	struct staple_slot *a, *b, *c;
	int64_t now = (int64_t)time(NULL);

	hash_of(7, h1);
	hash_of(8, h2);
	hash_of(9, h3);
	a = staple_slot_get(h1);
	b = staple_slot_get(h2);
	c = staple_slot_get(h3);
	ck_assert_int_eq(staple_set(a, (const uint8_t *)"fresh", 5, now + 600),
	    0);
	ck_assert_int_eq(staple_set(b, (const uint8_t *)"stale", 5, now), 0);
	staple_foreach(hand_one, &l);
	ck_assert_uint_eq(l.num, 1);
	ck_assert_mem_eq(l.v[0].hash, h1, 32);
	ck_assert_uint_eq(l.v[0].len, 5);
	ck_assert_mem_eq(l.v[0].der, "fresh", 5);
	ck_assert_int_eq(l.v[0].expires, now + 600);

	/* The new process: the same certificates, slots without
	 * responses. */
	staple_slot_unref(a);
	staple_slot_unref(b);
	staple_slot_unref(c);
	ck_assert_uint_eq(staple_slots_live(), before);
	a = staple_slot_get(h1);
	ck_assert(!staple_has(a));
	ck_assert_int_eq(staple_restore(l.v[0].hash, l.v[0].der, l.v[0].len,
	    l.v[0].expires), 1);
	ck_assert_uint_eq(handshake(sctx, cctx, a, got, sizeof(got)), 5);
	ck_assert_mem_eq(got, "fresh", 5);
	ck_assert_uint_eq(staple_copy(a, got, sizeof(got)), 5);
	ck_assert_mem_eq(got, "fresh", 5);
	ck_assert_uint_eq(staple_copy(a, got, 4), 0);
	l.num = 0;
	staple_foreach(hand_one, &l);
	ck_assert_uint_eq(l.num, 1);
	ck_assert_int_eq(l.v[0].expires, now + 600);
	staple_slot_unref(a);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

START_TEST(restore_neither_overrides_nor_creates)
{
	SSL_CTX *sctx = test_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	static uint8_t big[65537];
	uint8_t h1[32], h2[32], h3[32], got[16];
	struct staple_slot *a, *b;
	size_t before = staple_slots_live();
	int64_t now = (int64_t)time(NULL);

	hash_of(10, h1);
	hash_of(11, h2);
	hash_of(12, h3);
	a = staple_slot_get(h1);
	b = staple_slot_get(h2);
	/* What the configuration gave wins over what is handed over. */
	ck_assert_int_eq(staple_set(a, (const uint8_t *)"config", 6, now + 60),
	    0);
	ck_assert_int_eq(staple_restore(h1, (const uint8_t *)"handed", 6,
	    now + 600), 0);
	ck_assert_uint_eq(handshake(sctx, cctx, a, got, sizeof(got)), 6);
	ck_assert_mem_eq(got, "config", 6);
	/* A certificate no context uses any more: no slot for it. */
	ck_assert_int_eq(staple_restore(h3, (const uint8_t *)"handed", 6,
	    now + 600), 0);
	ck_assert_uint_eq(staple_slots_live(), before + 2);
	/* Expired, empty or oversized: nothing. */
	ck_assert_int_eq(staple_restore(h2, (const uint8_t *)"handed", 6, now),
	    0);
	ck_assert_int_eq(staple_restore(h2, (const uint8_t *)"handed", 0,
	    now + 600), 0);
	ck_assert_int_eq(staple_restore(h2, big, sizeof(big), now + 600), 0);
	ck_assert(!staple_has(b));
	ck_assert_int_eq(staple_restore(h2, big, sizeof(big) - 1, now + 600),
	    1);
	ck_assert(staple_has(b));
	/* Only once: the slot holds one now. */
	ck_assert_int_eq(staple_restore(h2, (const uint8_t *)"handed", 6,
	    now + 600), 0);
	ck_assert_uint_eq(staple_copy(b, big, sizeof(big)), sizeof(big) - 1);
	staple_slot_unref(a);
	staple_slot_unref(b);
	ck_assert_uint_eq(staple_slots_live(), before);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

/* Worker-like threads handshake against a slot while the main thread
 * keeps replacing its response and a context's reference comes and
 * goes. */
#define STRESS_THREADS 2
#define STRESS_SETS 3000

static atomic_int stress_stop;

struct stress_worker {
	pthread_t thread;
	struct retire_reader r;
	struct staple_slot *slot;
	SSL_CTX *sctx, *cctx;
	atomic_int woken;
	atomic_int served;
	int bad;
};

static void
stress_wake(void *arg)
{
	atomic_store(&((struct stress_worker *)arg)->woken, 1);
}

static void *
stress_run(void *arg)
{
	struct stress_worker *sw = arg;
	uint8_t got[8];

	retire_reader_add(&sw->r, stress_wake, sw);
	while (!atomic_load(&stress_stop)) {
		size_t n = handshake(sw->sctx, sw->cctx, sw->slot, got,
		    sizeof(got));

		if (n == 8) {
			atomic_fetch_add(&sw->served, 1);
			if (memcmp(got, "response", 8) != 0)
				sw->bad++;
		} else if (n != 0) {
			sw->bad++;
		}
		/* Between handshakes, like a worker between events. */
		atomic_store(&sw->woken, 0);
		retire_quiescent(&sw->r);
	}
	retire_reader_remove(&sw->r);
	return NULL;
}

START_TEST(readers_never_see_freed_responses)
{
	struct stress_worker sw[STRESS_THREADS];
	SSL_CTX *sctx = test_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	size_t before = staple_slots_live();
	struct staple_slot *s;
	uint8_t h[32];
	int64_t later = (int64_t)time(NULL) + 3600;

	hash_of(6, h);
	s = staple_slot_get(h);
	ck_assert_int_eq(staple_set(s, (const uint8_t *)"response", 8, later),
	    0);
	memset(sw, 0, sizeof(sw));
	atomic_store(&stress_stop, 0);
	for (int i = 0; i < STRESS_THREADS; i++) {
		sw[i].slot = s;
		sw[i].sctx = sctx;
		sw[i].cctx = cctx;
		ck_assert_int_eq(pthread_create(&sw[i].thread, NULL, stress_run,
		    &sw[i]), 0);
	}
	/* Until each thread made a few handshakes with a response, however
	 * slow the machine. */
	for (int i = 0; i < STRESS_SETS || atomic_load(&sw[0].served) < 20 ||
	    atomic_load(&sw[STRESS_THREADS - 1].served) < 20; i++) {
		/* Another generation's context comes and goes meanwhile. */
		struct staple_slot *again = staple_slot_get(h);

		ck_assert_ptr_eq(again, s);
		ck_assert_int_eq(staple_set(s, (const uint8_t *)"response", 8,
		    later), 0);
		if (i % 100 == 0)
			ck_assert_int_eq(staple_set(s, NULL, 0, 0), 0);
		staple_slot_unref(again);
		retire_collect();
		sched_yield();
	}
	atomic_store(&stress_stop, 1);
	for (int i = 0; i < STRESS_THREADS; i++) {
		pthread_join(sw[i].thread, NULL);
		ck_assert_int_eq(sw[i].bad, 0);
		ck_assert_int_ge(atomic_load(&sw[i].served), 20);
	}
	retire_collect();
	ck_assert_uint_eq(retire_pending(), 0);
	staple_slot_unref(s);
	ck_assert_uint_eq(staple_slots_live(), before);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("staple");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, slots_shared_and_freed_with_last_reference);
	tcase_add_test(tc, prune_drops_only_expired);
	tcase_add_test(tc, served_until_expiry_never_after);
	tcase_add_test(tc, readers_never_see_freed_responses);
	tcase_add_test(tc, foreach_hands_over_fresh_responses);
	tcase_add_test(tc, restore_neither_overrides_nor_creates);
	suite_add_tcase(s, tc);
	return check_run(s);
}
