/* The TLS 1.2 session cache, through real in-memory handshakes: sessions
 * are stored and resumed, the capacity bounds them (also below the number
 * of shards, and when it shrinks, keeping the most recently used), 0 turns
 * the cache off, and threads resuming while the capacity keeps changing
 * stay correct (run under ASan). */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

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

int
main(void)
{
	Suite *s = suite_create("session_cache");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, stores_resumes_and_shrinks);
	tcase_add_test(tc, capacity_of_one);
	tcase_add_test(tc, threads_while_capacity_changes);
	suite_add_tcase(s, tc);
	return check_run(s);
}
