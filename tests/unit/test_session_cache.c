/* The TLS 1.2 session cache, through real in-memory handshakes: sessions
 * are stored and resumed, the capacity bounds them (also below the number
 * of shards, and when it shrinks, keeping the most recently used), 0 turns
 * the cache off, and threads resuming while the capacity keeps changing
 * stay correct (run under ASan). Sessions handed to a new process
 * (session_cache_foreach, then session_cache_import) resume there, with
 * their time left and their LRU order, and bad input is refused. */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "../check_run.h"
#include "session_cache.h"
#include "test_server_ctx.h"

static SSL_CTX *
cache_server_ctx(void)
{
	SSL_CTX *ctx = test_server_ctx();

	/* Session IDs only: TLS 1.2, no tickets. */
	ck_assert_int_eq(SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION),
	    1);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	session_cache_attach(ctx);
	return ctx;
}

/* handshake connects a client offering |resume| (NULL: none), returns
 * whether the server resumed, and the client's session in |*out| (if
 * not NULL). */
static int
handshake(SSL_CTX *sctx, SSL_CTX *cctx, SSL_SESSION *resume,
    SSL_SESSION **out)
{
	SSL *srv = SSL_new(sctx), *cli = SSL_new(cctx);
	BIO *bs, *bc;
	int done_s = 0, done_c = 0, reused;

	ck_assert(srv != NULL && cli != NULL);
	ck_assert_int_eq(BIO_new_bio_pair(&bs, 0, &bc, 0), 1);
	SSL_set_bio(srv, bs, bs);
	SSL_set_bio(cli, bc, bc);
	SSL_set_accept_state(srv);
	SSL_set_connect_state(cli);
	if (resume != NULL)
		ck_assert_int_eq(SSL_set_session(cli, resume), 1);
	for (int i = 0; i < 20 && !(done_s && done_c); i++) {
		if (!done_c)
			done_c = SSL_do_handshake(cli) == 1;
		if (!done_s)
			done_s = SSL_do_handshake(srv) == 1;
	}
	ck_assert(done_s && done_c);
	reused = SSL_session_reused(srv);
	if (out != NULL)
		*out = SSL_get1_session(cli);
	SSL_free(srv);
	SSL_free(cli);
	return reused;
}

START_TEST(stores_resumes_and_shrinks)
{
	SSL_CTX *sctx = cache_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	SSL_SESSION *sess[40];

	/* Room for every one of the 40 in any shard (100 per shard): the
	 * IDs are random, and a smaller size would make how many fit depend
	 * on how they spread. */
	session_cache_configure(1600, 300000);
	for (int i = 0; i < 40; i++)
		ck_assert(!handshake(sctx, cctx, NULL, &sess[i]));
	ck_assert_uint_eq(session_cache_count(), 40);
	ck_assert(handshake(sctx, cctx, sess[0], NULL));
	ck_assert(handshake(sctx, cctx, sess[39], NULL));
	/* Same number of shards, smaller shares. */
	session_cache_configure(20, 300000);
	ck_assert_uint_le(session_cache_count(), 20);
	ck_assert(handshake(sctx, cctx, sess[39], NULL));
	/* Fewer shards than before: the most recently used one stays. */
	session_cache_configure(3, 300000);
	ck_assert_uint_le(session_cache_count(), 3);
	ck_assert_uint_ge(session_cache_count(), 1);
	ck_assert(handshake(sctx, cctx, sess[39], NULL));
	/* Back up: what was kept is still there. */
	session_cache_configure(100, 300000);
	ck_assert(handshake(sctx, cctx, sess[39], NULL));
	session_cache_configure(0, 300000);
	ck_assert_uint_eq(session_cache_count(), 0);
	ck_assert(!handshake(sctx, cctx, sess[39], NULL));
	for (int i = 0; i < 40; i++)
		SSL_SESSION_free(sess[i]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

START_TEST(capacity_of_one)
{
	SSL_CTX *sctx = cache_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	SSL_SESSION *a, *b;

	session_cache_configure(1, 300000);
	ck_assert(!handshake(sctx, cctx, NULL, &a));
	ck_assert_uint_eq(session_cache_count(), 1);
	ck_assert(handshake(sctx, cctx, a, NULL));
	ck_assert(!handshake(sctx, cctx, NULL, &b));
	ck_assert_uint_eq(session_cache_count(), 1);
	ck_assert(handshake(sctx, cctx, b, NULL));
	ck_assert(!handshake(sctx, cctx, a, NULL));
	session_cache_clear();
	ck_assert_uint_eq(session_cache_count(), 0);
	SSL_SESSION_free(a);
	SSL_SESSION_free(b);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

#define STRESS_THREADS 2
#define STRESS_ROUNDS 150

struct stress {
	pthread_t thread;
	SSL_CTX *sctx, *cctx;
	atomic_int done;
};

static void *
stress_run(void *arg)
{
	struct stress *st = arg;
	SSL_SESSION *s = NULL;

	for (int i = 0; i < STRESS_ROUNDS; i++) {
		SSL_SESSION *next = NULL;

		/* Whether it resumes depends on the capacity of the moment;
		 * what matters is that nothing breaks. */
		handshake(st->sctx, st->cctx, i % 3 == 0 ? NULL : s, &next);
		SSL_SESSION_free(s);
		s = next;
	}
	SSL_SESSION_free(s);
	atomic_store(&st->done, 1);
	return NULL;
}

START_TEST(threads_while_capacity_changes)
{
	static const size_t caps[] = { 1000, 4, 64, 1, 20, 0, 500 };
	SSL_CTX *sctx = cache_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	struct stress st[STRESS_THREADS];
	int running = STRESS_THREADS;

	session_cache_configure(1000, 300000);
	memset(st, 0, sizeof(st));
	for (int i = 0; i < STRESS_THREADS; i++) {
		st[i].sctx = sctx;
		st[i].cctx = cctx;
		ck_assert_int_eq(pthread_create(&st[i].thread, NULL, stress_run,
		    &st[i]), 0);
	}
	for (size_t n = 0; running > 0; n++) {
		size_t cap = caps[n % (sizeof(caps) / sizeof(caps[0]))];

		session_cache_configure(cap, 300000);
		ck_assert_uint_le(session_cache_count(), cap);
		running = 0;
		for (int i = 0; i < STRESS_THREADS; i++)
			running += !atomic_load(&st[i].done);
		if (running > 0)
			sched_yield();
	}
	for (int i = 0; i < STRESS_THREADS; i++)
		pthread_join(st[i].thread, NULL);
	session_cache_configure(10, 300000);
	ck_assert_uint_le(session_cache_count(), 10);
	session_cache_clear();
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

/* What session_cache_foreach gave, as another process would receive
 * it. */
struct exported {
	uint8_t id[SSL_MAX_SSL_SESSION_ID_LENGTH];
	size_t id_len;
	uint8_t *der;
	size_t der_len;
	uint64_t ttl_ms;
};

struct export_list {
	struct exported v[256];
	size_t num;
	size_t stop_after; /* 0: never stop */
};

static int
export_one(void *arg, const uint8_t *id, size_t id_len, const uint8_t *der,
    size_t der_len, uint64_t ttl_ms)
{
	struct export_list *l = arg;
	struct exported *x = &l->v[l->num++];

	ck_assert_uint_le(l->num, sizeof(l->v) / sizeof(l->v[0]));
	ck_assert_uint_le(id_len, sizeof(x->id));
	memcpy(x->id, id, id_len);
	x->id_len = id_len;
	x->der = malloc(der_len);
	ck_assert_ptr_nonnull(x->der);
	memcpy(x->der, der, der_len);
	x->der_len = der_len;
	x->ttl_ms = ttl_ms;
	return l->stop_after != 0 && l->num == l->stop_after;
}

static void
export_all(struct export_list *l)
{
	l->num = 0;
	session_cache_foreach(export_one, l);
}

static void
export_free(struct export_list *l)
{
	for (size_t i = 0; i < l->num; i++)
		free(l->v[i].der);
	l->num = 0;
}

static void
import_all(const struct export_list *l)
{
	for (size_t i = 0; i < l->num; i++) {
		const struct exported *x = &l->v[i];

		ck_assert_int_eq(session_cache_import(x->id, x->id_len, x->der,
		    x->der_len, x->ttl_ms), 0);
	}
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) != 0)
		;
}

START_TEST(handed_over_sessions_resume)
{
	SSL_CTX *sctx = cache_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	static struct export_list l;
	SSL_SESSION *sess[10];

	session_cache_configure(1600, 300000);
	for (int i = 0; i < 10; i++)
		ck_assert(!handshake(sctx, cctx, NULL, &sess[i]));
	export_all(&l);
	ck_assert_uint_eq(l.num, 10);
	for (size_t i = 0; i < l.num; i++) {
		ck_assert_uint_le(l.v[i].ttl_ms, 300000);
		ck_assert_uint_gt(l.v[i].ttl_ms, 240000);
	}
	/* The new process starts empty. */
	session_cache_clear();
	ck_assert_uint_eq(session_cache_count(), 0);
	import_all(&l);
	ck_assert_uint_eq(session_cache_count(), 10);
	for (int i = 0; i < 10; i++)
		ck_assert_msg(handshake(sctx, cctx, sess[i], NULL),
		    "session %d not resumed", i);
	export_free(&l);
	/* A callback that has had enough stops the walk. */
	l.stop_after = 3;
	export_all(&l);
	ck_assert_uint_eq(l.num, 3);
	export_free(&l);
	for (int i = 0; i < 10; i++)
		SSL_SESSION_free(sess[i]);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

START_TEST(import_ttl_honoured_and_capped)
{
	SSL_CTX *sctx = cache_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	static struct export_list l;
	SSL_SESSION *a, *b;
	const uint8_t *a_id;
	unsigned a_id_len;
	size_t ia, ib;

	session_cache_configure(1600, 2000);
	ck_assert(!handshake(sctx, cctx, NULL, &a));
	ck_assert(!handshake(sctx, cctx, NULL, &b));
	a_id = SSL_SESSION_get_id(a, &a_id_len);
	export_all(&l);
	ck_assert_uint_eq(l.num, 2);
	/* The walk goes by shard: which one is a's? */
	ia = l.v[1].id_len == a_id_len && memcmp(l.v[1].id, a_id,
	    a_id_len) == 0;
	ib = 1 - ia;
	session_cache_clear();
	/* Longer than this process keeps sessions: its lifetime wins. */
	ck_assert_int_eq(session_cache_import(l.v[ia].id, l.v[ia].id_len,
	    l.v[ia].der, l.v[ia].der_len, 86400000), 0);
	/* Nearly expired over there: nearly expired here. */
	ck_assert_int_eq(session_cache_import(l.v[ib].id, l.v[ib].id_len,
	    l.v[ib].der, l.v[ib].der_len, 500), 0);
	export_free(&l);
	export_all(&l);
	ck_assert_uint_eq(l.num, 2);
	ia = l.v[1].id_len == a_id_len && memcmp(l.v[1].id, a_id,
	    a_id_len) == 0;
	ib = 1 - ia;
	ck_assert_uint_le(l.v[ia].ttl_ms, 2000);
	ck_assert_uint_gt(l.v[ia].ttl_ms, 1000);
	ck_assert_uint_le(l.v[ib].ttl_ms, 500);
	ck_assert(handshake(sctx, cctx, a, NULL));
	ck_assert(handshake(sctx, cctx, b, NULL));
	sleep_ms(600);
	export_free(&l);
	export_all(&l);
	ck_assert_uint_eq(l.num, 1);
	ck_assert_mem_eq(l.v[0].id, a_id, a_id_len);
	ck_assert(handshake(sctx, cctx, a, NULL));
	ck_assert(!handshake(sctx, cctx, b, NULL));
	/* Expired already: stored nowhere. */
	session_cache_clear();
	ck_assert_int_eq(session_cache_import(l.v[0].id, l.v[0].id_len,
	    l.v[0].der, l.v[0].der_len, 0), 0);
	ck_assert_uint_eq(session_cache_count(), 0);
	export_free(&l);
	SSL_SESSION_free(a);
	SSL_SESSION_free(b);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

/* id_n makes the session ID of number |n|. */
static void
id_n(unsigned n, uint8_t id[32])
{
	memset(id, 0, 32);
	memcpy(id, &n, sizeof(n));
}

static unsigned
n_of(const struct exported *x)
{
	unsigned n;

	memcpy(&n, x->id, sizeof(n));
	return n;
}

START_TEST(import_keeps_lru_order)
{
	static struct export_list l, again;
	uint8_t id[32];
	unsigned fresh = 1000, mate = 0, gone = 0;
	int found = 0;

	/* 16 shards of 2: after 200 imports each holds the last 2 of its
	 * own, and the walk gives them shard by shard, in pairs. */
	session_cache_configure(32, 300000);
	for (unsigned n = 0; n < 200; n++) {
		id_n(n, id);
		ck_assert_int_eq(session_cache_import(id, 32,
		    (const uint8_t *)"session", 7, 300000), 0);
	}
	ck_assert_uint_eq(session_cache_count(), 32);
	export_all(&l);
	ck_assert_uint_eq(l.num, 32);
	/* Least recently used first. */
	for (size_t i = 0; i < l.num; i += 2)
		ck_assert_uint_lt(n_of(&l.v[i]), n_of(&l.v[i + 1]));
	/* Imported in that order, the order is the same. */
	session_cache_clear();
	import_all(&l);
	export_all(&again);
	ck_assert_uint_eq(again.num, l.num);
	for (size_t i = 0; i < l.num; i++)
		ck_assert_uint_eq(n_of(&again.v[i]), n_of(&l.v[i]));
	export_free(&again);
	/* One more session evicts the least recently used of its shard. */
	id_n(fresh, id);
	ck_assert_int_eq(session_cache_import(id, 32,
	    (const uint8_t *)"session", 7, 300000), 0);
	export_all(&again);
	ck_assert_uint_eq(again.num, 32);
	for (size_t i = 0; i < again.num; i += 2) {
		if (n_of(&again.v[i + 1]) == fresh) {
			mate = n_of(&again.v[i]);
			found = 1;
		}
	}
	ck_assert(found);
	for (size_t i = 0; i < l.num; i += 2) {
		if (n_of(&l.v[i + 1]) == mate)
			gone = n_of(&l.v[i]);
	}
	for (size_t i = 0; i < again.num; i++)
		ck_assert_uint_ne(n_of(&again.v[i]), gone);
	export_free(&again);
	export_free(&l);
}
END_TEST

START_TEST(import_refuses_bad_input)
{
	SSL_CTX *sctx = cache_server_ctx(), *cctx = SSL_CTX_new(TLS_method());
	static uint8_t big[65537];
	static struct export_list l;
	uint8_t id[SSL_MAX_SSL_SESSION_ID_LENGTH + 1];
	SSL_SESSION *a;

	memset(id, 7, sizeof(id));
	session_cache_configure(0, 300000);
	ck_assert_int_eq(session_cache_import(id, 32, big, 100, 1000), -1);
	session_cache_configure(100, 300000);
	ck_assert_int_eq(session_cache_import(id, 0, big, 100, 1000), -1);
	ck_assert_int_eq(session_cache_import(id, 33, big, 100, 1000), -1);
	ck_assert_int_eq(session_cache_import(NULL, 32, big, 100, 1000), -1);
	ck_assert_int_eq(session_cache_import(id, 32, big, 0, 1000), -1);
	ck_assert_int_eq(session_cache_import(id, 32, NULL, 100, 1000), -1);
	ck_assert_int_eq(session_cache_import(id, 32, big, sizeof(big), 1000),
	    -1);
	ck_assert_uint_eq(session_cache_count(), 0);
	ck_assert_int_eq(session_cache_import(id, 32, big, sizeof(big) - 1,
	    1000), 0);
	ck_assert_int_eq(session_cache_import(id, 1, big, 1, 1000), 0);
	ck_assert_uint_eq(session_cache_count(), 2);
	/* Bytes that are no session, under a real session's ID: the
	 * handshake that finds them does a full handshake. */
	ck_assert(!handshake(sctx, cctx, NULL, &a));
	export_all(&l);
	session_cache_clear();
	ck_assert_int_eq(session_cache_import(l.v[0].id, l.v[0].id_len,
	    (const uint8_t *)"\x30\x03garbage", 9, 1000), 0);
	ck_assert(!handshake(sctx, cctx, a, NULL));
	export_free(&l);
	SSL_SESSION_free(a);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("session_cache");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, stores_resumes_and_shrinks);
	tcase_add_test(tc, capacity_of_one);
	tcase_add_test(tc, threads_while_capacity_changes);
	tcase_add_test(tc, handed_over_sessions_resume);
	tcase_add_test(tc, import_ttl_honoured_and_capped);
	tcase_add_test(tc, import_keeps_lru_order);
	tcase_add_test(tc, import_refuses_bad_input);
	suite_add_tcase(s, tc);
	return check_run(s);
}
