/* The table of client addresses: keys, connection limits, the handshake
 * rate, renegotiation bans, bans handed to a new process, replacement,
 * and many threads at once. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "../check_run.h"
#include "peer_table.h"

static uint64_t
key_of(const char *ip)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;

	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (inet_pton(AF_INET, ip, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		return peer_key((struct sockaddr *)&sin);
	}
	ck_assert_int_eq(inet_pton(AF_INET6, ip, &sin6.sin6_addr), 1);
	sin6.sin6_family = AF_INET6;
	return peer_key((struct sockaddr *)&sin6);
}

static const char *
fmt(uint64_t key)
{
	static char buf[PEER_KEY_STRLEN];

	return peer_key_format(key, buf, sizeof(buf));
}

/* An IPv4 address, 10.x.y.z, per number. */
static uint64_t
key_n(unsigned n)
{
	char ip[32];

	snprintf(ip, sizeof(ip), "10.%u.%u.%u", (n >> 16) & 255,
	    (n >> 8) & 255, n & 255);
	return key_of(ip);
}

START_TEST(keys_group_addresses)
{
	struct sockaddr_un sun;

	ck_assert_uint_eq(key_of("192.0.2.1"), key_of("::ffff:192.0.2.1"));
	ck_assert_uint_ne(key_of("192.0.2.1"), key_of("192.0.2.2"));
	ck_assert_uint_eq(key_of("2001:db8:1:2::1"),
	    key_of("2001:db8:1:2:ffff:ffff:ffff:fffe"));
	ck_assert_uint_ne(key_of("2001:db8:1:2::1"), key_of("2001:db8:1:3::1"));
	/* IPv4 keys live where no IPv6 source can be. */
	ck_assert_uint_ne(key_of("192.0.2.1"), key_of("::192.0.2.1"));
	ck_assert_uint_ne(key_of("192.0.2.1"), key_of("ff00::c000:201"));
	ck_assert_uint_eq(key_of("ff02::1"), PEER_KEY_NONE);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	ck_assert_uint_eq(peer_key((struct sockaddr *)&sun), PEER_KEY_NONE);
	ck_assert_uint_eq(peer_key(NULL), PEER_KEY_NONE);

	ck_assert_str_eq(fmt(key_of("192.0.2.1")), "192.0.2.1");
	ck_assert_str_eq(fmt(key_of("::ffff:255.255.255.255")),
	    "255.255.255.255");
	ck_assert_str_eq(fmt(key_of("0.0.0.0")), "0.0.0.0");
	/* ::1's /64 is all zero bits, which the table keeps for "empty". */
	ck_assert_uint_ne(key_of("::1"), 0);
	ck_assert_uint_eq(key_of("::1"), key_of("::2"));
	ck_assert_str_eq(fmt(key_of("::1")), "::/64");
	ck_assert_str_eq(fmt(key_of("2001:db8:1:2:3:4:5:6")),
	    "2001:db8:1:2::/64");
	ck_assert_str_eq(fmt(key_of("::1")), "::/64");
	ck_assert_str_eq(fmt(PEER_KEY_NONE), "-");
}
END_TEST

START_TEST(untracked_clients_pass)
{
	struct peer_table *t = peer_table_new(8);
	struct peer_limits lim = { .max_conns = 1, .reneg_window_ms = 1000 };
	struct peer_ref ref;
	uint64_t until = 0;

	ck_assert_int_eq(peer_admit(t, PEER_KEY_NONE, &lim, 0, &ref), PEER_OK);
	ck_assert_ptr_null(ref.e);
	ck_assert_int_eq(peer_admit(t, PEER_KEY_NONE, &lim, 0, &ref), PEER_OK);
	ck_assert_int_eq(peer_renegotiation(t, PEER_KEY_NONE, &lim, 0, &until),
	    0);
	ck_assert_uint_eq(peer_table_tracked(t), 0);
	peer_table_free(t);
}
END_TEST

START_TEST(sizes)
{
	struct peer_table *t = peer_table_new(0);

	ck_assert_uint_eq(peer_table_size(t), PEER_TABLE_DEFAULT_ENTRIES);
	peer_table_free(t);
	t = peer_table_new(100);
	ck_assert_uint_eq(peer_table_size(t), 128);
	peer_table_free(t);
	t = peer_table_new(1);
	ck_assert_uint_eq(peer_table_size(t), 8);
	peer_table_free(t);
	peer_table_free(NULL);
}
END_TEST

START_TEST(no_limits_write_nothing)
{
	struct peer_table *t = peer_table_new(64);
	struct peer_limits lim = { 0 };
	struct peer_ref ref;

	for (int i = 0; i < 100; i++) {
		ck_assert_int_eq(peer_admit(t, key_of("192.0.2.1"), &lim, 1000,
		    &ref), PEER_OK);
		ck_assert_ptr_null(ref.e);
	}
	ck_assert_uint_eq(peer_table_tracked(t), 0);
	peer_table_free(t);
}
END_TEST

START_TEST(max_conns)
{
	struct peer_table *t = peer_table_new(64);
	struct peer_limits lim = { .max_conns = 2 };
	uint64_t a = key_of("192.0.2.1"), b = key_of("2001:db8::1");
	struct peer_ref r1, r2, r3, rb;

	ck_assert_int_eq(peer_admit(t, a, &lim, 1000, &r1), PEER_OK);
	ck_assert_ptr_nonnull(r1.e);
	ck_assert_uint_eq(r1.key, a);
	ck_assert_int_eq(peer_admit(t, a, &lim, 1000, &r2), PEER_OK);
	ck_assert_int_eq(peer_admit(t, a, &lim, 1000, &r3),
	    PEER_TOO_MANY_CONNS);
	ck_assert_ptr_null(r3.e);
	ck_assert_uint_eq(peer_conns(t, a), 2);
	ck_assert_int_eq(peer_admit(t, b, &lim, 1000, &rb), PEER_OK);
	ck_assert_uint_eq(peer_conns(t, b), 1);

	peer_release(t, &r1);
	ck_assert_ptr_null(r1.e);
	ck_assert_uint_eq(peer_conns(t, a), 1);
	ck_assert_int_eq(peer_admit(t, a, &lim, 1001, &r1), PEER_OK);
	ck_assert_int_eq(peer_admit(t, a, &lim, 1001, &r3),
	    PEER_TOO_MANY_CONNS);
	/* A lower limit after a reload refuses until enough have closed;
	 * releasing still works after limits are turned off. */
	lim.max_conns = 1;
	ck_assert_int_eq(peer_admit(t, a, &lim, 1002, &r3),
	    PEER_TOO_MANY_CONNS);
	peer_release(t, &r1);
	peer_release(t, &r2);
	peer_release(t, &r3);
	peer_release(t, &rb);
	ck_assert_uint_eq(peer_conns(t, a), 0);
	ck_assert_uint_eq(peer_table_conns(t), 0);
	peer_table_free(t);
}
END_TEST

START_TEST(rate_bucket)
{
	struct peer_table *t = peer_table_new(64);
	struct peer_limits lim = { .rate = 5 };
	uint64_t a = key_of("192.0.2.1"), b = key_of("192.0.2.2");
	struct peer_ref ref;

	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(peer_admit(t, a, &lim, 10000, &ref), PEER_OK);
	ck_assert_ptr_null(ref.e);
	ck_assert_int_eq(peer_admit(t, a, &lim, 10000, &ref), PEER_TOO_FAST);
	ck_assert_int_eq(peer_admit(t, b, &lim, 10000, &ref), PEER_OK);
	/* One token every 200 ms. */
	ck_assert_int_eq(peer_admit(t, a, &lim, 10199, &ref), PEER_TOO_FAST);
	ck_assert_int_eq(peer_admit(t, a, &lim, 10200, &ref), PEER_OK);
	ck_assert_int_eq(peer_admit(t, a, &lim, 10200, &ref), PEER_TOO_FAST);
	ck_assert_int_eq(peer_admit(t, a, &lim, 10600, &ref), PEER_OK);
	ck_assert_int_eq(peer_admit(t, a, &lim, 10600, &ref), PEER_OK);
	ck_assert_int_eq(peer_admit(t, a, &lim, 10600, &ref), PEER_TOO_FAST);
	/* Idle time refills no more than the burst. */
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(peer_admit(t, a, &lim, 60000, &ref), PEER_OK);
	ck_assert_int_eq(peer_admit(t, a, &lim, 60000, &ref), PEER_TOO_FAST);
	peer_table_free(t);
}
END_TEST

START_TEST(rate_refusal_counts_nothing)
{
	struct peer_table *t = peer_table_new(64);
	struct peer_limits lim = { .max_conns = 10, .rate = 1 };
	uint64_t a = key_of("192.0.2.1");
	struct peer_ref r1, r2;

	ck_assert_int_eq(peer_admit(t, a, &lim, 5000, &r1), PEER_OK);
	ck_assert_int_eq(peer_admit(t, a, &lim, 5000, &r2), PEER_TOO_FAST);
	ck_assert_ptr_null(r2.e);
	ck_assert_uint_eq(peer_conns(t, a), 1);
	peer_release(t, &r1);
	ck_assert_uint_eq(peer_conns(t, a), 0);
	peer_table_free(t);
}
END_TEST

START_TEST(reneg_bans_over_limit)
{
	struct peer_table *t = peer_table_new(64);
	struct peer_limits lim = { .reneg_limit = 3,
	    .reneg_window_ms = 600000 };
	struct peer_limits none = { 0 }, conns = { .max_conns = 5 };
	uint64_t a = key_of("192.0.2.1"), until = 0;
	struct peer_ref ref;

	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 1000, &until), 0);
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 2000, &until), 0);
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 3000, &until), 0);
	ck_assert_uint_eq(until, 0);
	ck_assert_int_eq(peer_admit(t, a, &none, 3500, &ref), PEER_OK);
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 4000, &until), 1);
	ck_assert_uint_eq(until, 601000);
	ck_assert_uint_eq(peer_table_banned(t, 4000), 1);

	ck_assert_int_eq(peer_admit(t, a, &none, 5000, &ref), PEER_BANNED);
	ck_assert_int_eq(peer_admit(t, a, &conns, 5000, &ref), PEER_BANNED);
	ck_assert_ptr_null(ref.e);
	ck_assert_uint_eq(peer_conns(t, a), 0);
	ck_assert_int_eq(peer_admit(t, key_of("192.0.2.2"), &none, 5000, &ref),
	    PEER_OK);
	ck_assert_int_eq(peer_admit(t, a, &none, 600999, &ref), PEER_BANNED);
	ck_assert_int_eq(peer_admit(t, a, &none, 601000, &ref), PEER_OK);
	ck_assert_int_eq(peer_admit(t, a, &conns, 601000, &ref), PEER_OK);
	peer_release(t, &ref);
	ck_assert_uint_eq(peer_table_banned(t, 601000), 0);
	peer_table_free(t);
}
END_TEST

START_TEST(reneg_limit_zero_bans_at_once)
{
	struct peer_table *t = peer_table_new(64);
	struct peer_limits lim = { .reneg_limit = 0, .reneg_window_ms = 30000 };
	struct peer_limits none = { 0 };
	uint64_t a = key_of("2001:db8::7"), until = 0;
	struct peer_ref ref;

	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 1000, &until), 1);
	ck_assert_uint_eq(until, 31000);
	/* Its whole /64 is banned. */
	ck_assert_int_eq(peer_admit(t, key_of("2001:db8::8"), &none, 1000,
	    &ref), PEER_BANNED);
	ck_assert_int_eq(peer_admit(t, a, &none, 31000, &ref), PEER_OK);
	peer_table_free(t);
}
END_TEST

START_TEST(reneg_window_slides)
{
	struct peer_table *t = peer_table_new(64);
	struct peer_limits lim = { .reneg_limit = 1, .reneg_window_ms = 1000 };
	uint64_t a = key_of("192.0.2.1"), until = 0;

	/* Each attempt finds the one before it gone from the window. */
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 10000, &until), 0);
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 11000, &until), 0);
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 12000, &until), 0);
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 13500, &until), 0);
	/* Two within a second. */
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 14499, &until), 1);
	ck_assert_uint_eq(until, 14500);

	/* The limit is capped: the 16th attempt within the window bans. */
	lim.reneg_limit = 100;
	lim.reneg_window_ms = 1000000;
	a = key_of("192.0.2.9");
	for (int i = 0; i < PEER_RENEG_LIMIT_MAX; i++)
		ck_assert_int_eq(peer_renegotiation(t, a, &lim, 20000 + i,
		    &until), 0);
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 20100, &until), 1);
	ck_assert_uint_eq(until, 1020000);
	/* Long after, the history is forgotten: a fresh start. */
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 5000000, &until), 0);
	peer_table_free(t);
}
END_TEST

START_TEST(reneg_ban_keeps_longest)
{
	struct peer_table *t = peer_table_new(64);
	struct peer_limits lim = { .reneg_limit = 0,
	    .reneg_window_ms = 100000 };
	uint64_t a = key_of("192.0.2.1"), until = 0;

	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 1000, &until), 1);
	ck_assert_uint_eq(until, 101000);
	/* A shorter window later does not shorten the running ban. */
	lim.reneg_window_ms = 10;
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 2000, &until), 1);
	ck_assert_uint_eq(until, 101000);
	ck_assert_uint_eq(peer_table_banned(t, 100999), 1);
	peer_table_free(t);
}
END_TEST

/* The bans peer_table_foreach_ban gave, as a new process receives
 * them. */
struct bans {
	uint64_t key[64];
	uint64_t left_ms[64];
	size_t num;
};

static void
ban_one(void *arg, uint64_t key, uint64_t left_ms)
{
	struct bans *b = arg;

	ck_assert_uint_lt(b->num, 64);
	b->key[b->num] = key;
	b->left_ms[b->num++] = left_ms;
}

/* ban_left returns what |b| says |key| has left, or 0. */
static uint64_t
ban_left(const struct bans *b, uint64_t key)
{
	for (size_t i = 0; i < b->num; i++) {
		if (b->key[i] == key)
			return b->left_ms[i];
	}
	return 0;
}

START_TEST(bans_handed_over)
{
	struct peer_table *t = peer_table_new(64), *next = peer_table_new(64);
	struct peer_limits lim = { .reneg_limit = 0,
	    .reneg_window_ms = 100000 };
	struct peer_limits none = { 0 }, conns = { .max_conns = 5 };
	uint64_t a = key_of("192.0.2.1"), b = key_of("2001:db8:1:2::1");
	uint64_t c = key_of("192.0.2.3"), until;
	struct bans got = { .num = 0 };
	struct peer_ref ref;

	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 1000, &until), 1);
	lim.reneg_window_ms = 5000;
	ck_assert_int_eq(peer_renegotiation(t, b, &lim, 1000, &until), 1);
	ck_assert_int_eq(peer_admit(t, c, &conns, 1000, &ref), PEER_OK);
	peer_release(t, &ref);
	peer_table_foreach_ban(t, 2000, ban_one, &got);
	ck_assert_uint_eq(got.num, 2);
	ck_assert_uint_eq(ban_left(&got, a), 99000);
	ck_assert_uint_eq(ban_left(&got, b), 4000);
	got.num = 0;
	peer_table_foreach_ban(t, 6000, ban_one, &got);
	ck_assert_uint_eq(got.num, 1);
	ck_assert_uint_eq(got.key[0], a);
	peer_table_free(t);

	/* The new process, whose clock reads otherwise. */
	ck_assert_int_eq(peer_table_ban(next, a, 50000, 99000), 0);
	ck_assert_int_eq(peer_table_ban(next, b, 50000, 4000), 0);
	ck_assert_uint_eq(peer_table_banned(next, 50000), 2);
	ck_assert_int_eq(peer_admit(next, a, &none, 50000, &ref), PEER_BANNED);
	ck_assert_int_eq(peer_admit(next, a, &conns, 50000, &ref),
	    PEER_BANNED);
	ck_assert_ptr_null(ref.e);
	ck_assert_int_eq(peer_admit(next, key_of("2001:db8:1:2::99"), &none,
	    53999, &ref), PEER_BANNED);
	ck_assert_int_eq(peer_admit(next, c, &none, 50000, &ref), PEER_OK);
	/* Each ban ends when it would have. */
	ck_assert_int_eq(peer_admit(next, b, &conns, 54000, &ref), PEER_OK);
	peer_release(next, &ref);
	ck_assert_uint_eq(peer_table_banned(next, 54000), 1);
	ck_assert_int_eq(peer_admit(next, a, &none, 148999, &ref),
	    PEER_BANNED);
	ck_assert_int_eq(peer_admit(next, a, &none, 149000, &ref), PEER_OK);
	ck_assert_uint_eq(peer_table_banned(next, 149000), 0);
	got.num = 0;
	peer_table_foreach_ban(next, 149000, ban_one, &got);
	ck_assert_uint_eq(got.num, 0);
	peer_table_free(next);
}
END_TEST

START_TEST(ban_keeps_longest_and_bounds)
{
	struct peer_table *t = peer_table_new(8);
	struct peer_limits none = { 0 }, lim = { .reneg_limit = 0,
	    .reneg_window_ms = 1000 };
	uint64_t a = key_of("192.0.2.1"), until;
	struct peer_ref ref;

	ck_assert_int_eq(peer_table_ban(t, PEER_KEY_NONE, 1000, 1000), -1);
	ck_assert_int_eq(peer_table_ban(t, a, 1000, 10000), 0);
	/* Neither a shorter import nor a shorter renegotiation ban cuts
	 * it. */
	ck_assert_int_eq(peer_table_ban(t, a, 1000, 10), 0);
	ck_assert_int_eq(peer_renegotiation(t, a, &lim, 2000, &until), 1);
	ck_assert_uint_eq(until, 11000);
	ck_assert_int_eq(peer_admit(t, a, &none, 10999, &ref), PEER_BANNED);
	ck_assert_int_eq(peer_admit(t, a, &none, 11000, &ref), PEER_OK);
	/* A longer one does extend it. */
	ck_assert_int_eq(peer_table_ban(t, a, 11000, 500), 0);
	ck_assert_int_eq(peer_admit(t, a, &none, 11499, &ref), PEER_BANNED);
	/* However long it claims to be, no longer than a renegotiation
	 * window can make it, and no overflow. */
	ck_assert_int_eq(peer_table_ban(t, a, 20000, UINT64_MAX), 0);
	until = 20000 + (uint64_t)UINT32_MAX;
	ck_assert_int_eq(peer_admit(t, a, &none, until - 1, &ref), PEER_BANNED);
	ck_assert_int_eq(peer_admit(t, a, &none, until, &ref), PEER_OK);
	peer_table_free(t);
}
END_TEST

/* With one set of 8, bans take every entry, and a ninth has no room. */
START_TEST(ban_without_room)
{
	struct peer_table *t = peer_table_new(8);
	struct peer_limits none = { 0 };
	struct peer_ref ref;

	for (unsigned i = 0; i < 8; i++)
		ck_assert_int_eq(peer_table_ban(t, key_n(i), 1000, 5000), 0);
	ck_assert_int_eq(peer_table_ban(t, key_n(8), 1000, 5000), -1);
	ck_assert_int_eq(peer_admit(t, key_n(8), &none, 1000, &ref), PEER_OK);
	ck_assert_uint_eq(peer_table_banned(t, 1000), 8);
	/* Expired bans free their entries. */
	ck_assert_int_eq(peer_table_ban(t, key_n(8), 6000, 5000), 0);
	ck_assert_uint_eq(peer_table_banned(t, 6000), 1);
	peer_table_free(t);
}
END_TEST

/* With one set of 8, every key competes for the same entries. */
START_TEST(replacement_forgets_renegotiations)
{
	struct peer_table *t = peer_table_new(8);
	struct peer_limits lim = { .max_conns = 1, .reneg_limit = 1,
	    .reneg_window_ms = 1000000 };
	struct peer_ref ref;
	uint64_t until;

	ck_assert_int_eq(peer_renegotiation(t, key_n(0), &lim, 1, &until), 0);
	for (unsigned i = 1; i <= 8; i++) {
		ck_assert_int_eq(peer_admit(t, key_n(i), &lim, 1 + i, &ref),
		    PEER_OK);
		peer_release(t, &ref);
	}
	/* One of them has key 0's entry, not its attempt. */
	for (unsigned i = 1; i <= 8; i++)
		ck_assert_int_eq(peer_renegotiation(t, key_n(i), &lim, 100,
		    &until), 0);
	/* Key 0 is new again too. */
	ck_assert_int_eq(peer_renegotiation(t, key_n(0), &lim, 100, &until), 0);
	peer_table_free(t);
}
END_TEST


START_TEST(replaces_least_recently_seen)
{
	struct peer_table *t = peer_table_new(8);
	struct peer_limits lim = { .rate = 1 };
	struct peer_ref ref;

	for (unsigned i = 0; i < 8; i++)
		ck_assert_int_eq(peer_admit(t, key_n(i), &lim, 100 * (i + 1),
		    &ref), PEER_OK);
	ck_assert_uint_eq(peer_table_tracked(t), 8);
	/* Key 0 is seen again (and refused: its bucket is empty)... */
	ck_assert_int_eq(peer_admit(t, key_n(0), &lim, 900, &ref),
	    PEER_TOO_FAST);
	/* ...so the newcomer takes key 1's entry. */
	ck_assert_int_eq(peer_admit(t, key_n(8), &lim, 1000, &ref), PEER_OK);
	ck_assert_int_eq(peer_admit(t, key_n(0), &lim, 1000, &ref),
	    PEER_TOO_FAST);
	ck_assert_int_eq(peer_admit(t, key_n(1), &lim, 1000, &ref), PEER_OK);
	ck_assert_uint_eq(peer_table_tracked(t), 8);
	peer_table_free(t);
}
END_TEST

START_TEST(replacement_spares_conns_and_bans)
{
	struct peer_table *t = peer_table_new(8);
	struct peer_limits lim = { .max_conns = 10, .reneg_limit = 0,
	    .reneg_window_ms = 1000000 };
	struct peer_ref held[3][2], ref;
	uint64_t banned = key_n(100000), until;
	uint64_t now = 1000;

	for (unsigned k = 0; k < 3; k++) {
		for (unsigned j = 0; j < 2; j++)
			ck_assert_int_eq(peer_admit(t, key_n(k), &lim, now,
			    &held[k][j]), PEER_OK);
	}
	ck_assert_int_eq(peer_renegotiation(t, banned, &lim, now, &until), 1);
	for (unsigned i = 1000; i < 3000; i++) {
		now++;
		ck_assert_int_eq(peer_admit(t, key_n(i), &lim, now, &ref),
		    PEER_OK);
		ck_assert_ptr_nonnull(ref.e);
		peer_release(t, &ref);
	}
	ck_assert_uint_eq(peer_table_tracked(t), 8);
	for (unsigned k = 0; k < 3; k++)
		ck_assert_uint_eq(peer_conns(t, key_n(k)), 2);
	ck_assert_uint_eq(peer_table_banned(t, now), 1);
	ck_assert_int_eq(peer_admit(t, banned, &lim, now, &ref), PEER_BANNED);
	for (unsigned k = 0; k < 3; k++) {
		peer_release(t, &held[k][0]);
		ck_assert_uint_eq(peer_conns(t, key_n(k)), 1);
		peer_release(t, &held[k][1]);
		ck_assert_uint_eq(peer_conns(t, key_n(k)), 0);
	}
	ck_assert_uint_eq(peer_table_conns(t), 0);
	peer_table_free(t);
}
END_TEST

START_TEST(full_table_admits_untracked)
{
	struct peer_table *t = peer_table_new(8);
	struct peer_limits lim = { .max_conns = 1 };
	struct peer_ref held[8], ref;

	for (unsigned i = 0; i < 8; i++) {
		ck_assert_int_eq(peer_admit(t, key_n(i), &lim, 1000, &held[i]),
		    PEER_OK);
		ck_assert_ptr_nonnull(held[i].e);
	}
	/* No room: admitted, not counted, twice over its limit. */
	ck_assert_int_eq(peer_admit(t, key_n(8), &lim, 1000, &ref), PEER_OK);
	ck_assert_ptr_null(ref.e);
	ck_assert_int_eq(peer_admit(t, key_n(8), &lim, 1000, &ref), PEER_OK);
	ck_assert_ptr_null(ref.e);
	ck_assert_uint_eq(peer_conns(t, key_n(8)), 0);
	peer_release(t, &held[3]);
	ck_assert_int_eq(peer_admit(t, key_n(8), &lim, 1001, &ref), PEER_OK);
	ck_assert_ptr_nonnull(ref.e);
	ck_assert_int_eq(peer_admit(t, key_n(8), &lim, 1001, &held[3]),
	    PEER_TOO_MANY_CONNS);
	ck_assert_uint_eq(peer_conns(t, key_n(3)), 0);
	peer_release(t, &ref);
	for (unsigned i = 0; i < 8; i++)
		peer_release(t, &held[i]);
	ck_assert_uint_eq(peer_table_conns(t), 0);
	peer_table_free(t);
}
END_TEST

/* fill_count holds a connection from each of many new addresses at
 * |now_ms| and returns how many were counted: every entry, if none is
 * stuck. */
static size_t
fill_count(struct peer_table *t, unsigned first, unsigned n, uint64_t now_ms)
{
	struct peer_limits lim = { .max_conns = 1 };
	struct peer_ref *refs = calloc(n, sizeof(*refs));
	size_t counted = 0;

	ck_assert_ptr_nonnull(refs);
	for (unsigned i = 0; i < n; i++) {
		ck_assert_int_eq(peer_admit(t, key_n(first + i), &lim, now_ms,
		    &refs[i]), PEER_OK);
		counted += refs[i].e != NULL;
	}
	for (unsigned i = 0; i < n; i++)
		peer_release(t, &refs[i]);
	free(refs);
	return counted;
}

enum {
	HAMMER_THREADS = 4,
	HAMMER_CYCLES = 200000,
	HAMMER_CHECK_EVERY = 2000,
	HAMMER_KEYS = 300,
	HAMMER_HOT_KEYS = 8,
	HAMMER_HELD = 32,
	HAMMER_MAX_CONNS = 3,
	HAMMER_WINDOW = 500,
};

struct hammer {
	struct peer_table *t;
	pthread_barrier_t pause;
	_Atomic uint64_t clock;
	/* Connections each key holds, counted by the test. */
	atomic_uint held[HAMMER_KEYS];
	atomic_uint most;
	_Atomic uint64_t counted, untracked, refused, banned;
};

struct hammer_ref {
	struct peer_ref ref;
	unsigned k;
};

/* hammer_check runs while every thread waits: no entry may count more
 * connections than its key holds (one counted under another key would),
 * and the table counts them all. */
static void
hammer_check(struct hammer *h)
{
	uint64_t sum = 0;

	for (unsigned k = 0; k < HAMMER_KEYS; k++) {
		ck_assert_uint_le(peer_conns(h->t, key_n(k)),
		    atomic_load(&h->held[k]));
		sum += atomic_load(&h->held[k]);
	}
	ck_assert_uint_eq(peer_table_conns(h->t), sum);
}

static void
hammer_pause(struct hammer *h)
{
	if (pthread_barrier_wait(&h->pause) == PTHREAD_BARRIER_SERIAL_THREAD)
		hammer_check(h);
	pthread_barrier_wait(&h->pause);
}

static void
hammer_release(struct hammer *h, struct hammer_ref *r)
{
	if (r->ref.e != NULL)
		atomic_fetch_sub(&h->held[r->k], 1);
	peer_release(h->t, &r->ref);
}

static void
hammer_note_most(struct hammer *h, unsigned n)
{
	unsigned most = atomic_load(&h->most);

	while (n > most && !atomic_compare_exchange_weak(&h->most, &most, n))
		;
}

static void *
hammer_run(void *arg)
{
	struct hammer *h = arg;
	/* Two renegotiations within a window of the clock's ticks ban. */
	struct peer_limits lim = { .max_conns = HAMMER_MAX_CONNS,
	    .reneg_limit = 1, .reneg_window_ms = HAMMER_WINDOW };
	struct hammer_ref held[HAMMER_HELD], *r;
	unsigned num_held = 0, seed = (unsigned)(uintptr_t)&held, k;
	uint64_t counted = 0, untracked = 0, refused = 0, banned = 0, now;
	uint64_t until;

	for (int c = 1; c <= HAMMER_CYCLES; c++) {
		if (c % HAMMER_CHECK_EVERY == 0)
			hammer_pause(h);
		now = atomic_fetch_add(&h->clock, 1);
		if (num_held == HAMMER_HELD ||
		    (num_held > 0 && rand_r(&seed) % 2 == 0)) {
			r = &held[rand_r(&seed) % num_held];
			hammer_release(h, r);
			*r = held[--num_held];
			continue;
		}
		/* Half go to a few keys, which reach their limit; the others
		 * keep replacing each other. */
		k = (unsigned)rand_r(&seed) % (rand_r(&seed) % 2 == 0 ?
		    HAMMER_HOT_KEYS : HAMMER_KEYS);
		if (rand_r(&seed) % 32 == 0) {
			peer_renegotiation(h->t, key_n(k), &lim, now, &until);
			continue;
		}
		r = &held[num_held];
		r->k = k;
		switch (peer_admit(h->t, key_n(k), &lim, now, &r->ref)) {
		case PEER_OK:
			num_held++;
			if (r->ref.e == NULL) {
				untracked++;
				break;
			}
			counted++;
			hammer_note_most(h, atomic_fetch_add(&h->held[k], 1) + 1);
			break;
		case PEER_TOO_MANY_CONNS:
			refused++;
			break;
		case PEER_BANNED:
			banned++;
			break;
		default:
			ck_abort_msg("unexpected verdict");
		}
	}
	while (num_held > 0)
		hammer_release(h, &held[--num_held]);
	atomic_fetch_add(&h->counted, counted);
	atomic_fetch_add(&h->untracked, untracked);
	atomic_fetch_add(&h->refused, refused);
	atomic_fetch_add(&h->banned, banned);
	return NULL;
}

START_TEST(threads_hammer)
{
	static struct hammer h;
	pthread_t threads[HAMMER_THREADS];
	uint64_t counted, untracked, refused, banned, later;
	unsigned most;

	h.t = peer_table_new(32);
	ck_assert_ptr_nonnull(h.t);
	pthread_barrier_init(&h.pause, NULL, HAMMER_THREADS);
	for (int i = 0; i < HAMMER_THREADS; i++)
		ck_assert_int_eq(pthread_create(&threads[i], NULL, hammer_run,
		    &h), 0);
	for (int i = 0; i < HAMMER_THREADS; i++)
		pthread_join(threads[i], NULL);
	pthread_barrier_destroy(&h.pause);

	counted = atomic_load(&h.counted);
	untracked = atomic_load(&h.untracked);
	refused = atomic_load(&h.refused);
	banned = atomic_load(&h.banned);
	most = atomic_load(&h.most);
	/* Every outcome happened, so replacement raced with admission. */
	ck_assert_uint_gt(counted, 10000);
	ck_assert_uint_gt(untracked, 1000);
	ck_assert_uint_gt(refused, 1000);
	ck_assert_uint_gt(banned, 1000);
	/* The limit holds exactly unless a key got two copies, in a race
	 * that the table makes rare but does not exclude. */
	ck_assert_uint_le(most, HAMMER_MAX_CONNS + 1);
	/* Every count is back at 0: a negative one would add 2^32 - 1. */
	ck_assert_uint_eq(peer_table_conns(h.t), 0);
	for (unsigned k = 0; k < HAMMER_KEYS; k++)
		ck_assert_uint_eq(peer_conns(h.t, key_n(k)), 0);
	/* And no entry is stuck with a pin or a count: once the bans have
	 * run out, all can be taken. */
	later = atomic_load(&h.clock) + HAMMER_WINDOW;
	ck_assert_uint_eq(peer_table_banned(h.t, later), 0);
	ck_assert_uint_eq(fill_count(h.t, 1000, 20000, later),
	    peer_table_size(h.t));
	peer_table_free(h.t);
}
END_TEST

/* Workers keep admitting addresses, in a table too small for them all,
 * while the control thread imports bans and exports them. */
enum {
	EXPORT_THREADS = 2,
	EXPORT_KEYS = 300,
	EXPORT_BANS = 24,
};

struct export_run {
	struct peer_table *t;
	atomic_int stop;
};

static void *
export_worker(void *arg)
{
	struct export_run *x = arg;
	struct peer_limits lim = { .max_conns = 2 };
	struct peer_ref held[4];
	unsigned seed = (unsigned)(uintptr_t)&held, num = 0;

	memset(held, 0, sizeof(held));
	while (!atomic_load(&x->stop)) {
		if (num == 4) {
			while (num > 0)
				peer_release(x->t, &held[--num]);
		}
		if (peer_admit(x->t, key_n((unsigned)rand_r(&seed) %
		    EXPORT_KEYS), &lim, 1000, &held[num]) == PEER_OK)
			num++;
	}
	while (num > 0)
		peer_release(x->t, &held[--num]);
	return NULL;
}

START_TEST(export_while_workers_run)
{
	static struct export_run x;
	pthread_t threads[EXPORT_THREADS];
	int taken[EXPORT_BANS];
	struct bans got;
	size_t num_taken = 0;

	x.t = peer_table_new(64);
	ck_assert_ptr_nonnull(x.t);
	atomic_store(&x.stop, 0);
	for (int i = 0; i < EXPORT_THREADS; i++)
		ck_assert_int_eq(pthread_create(&threads[i], NULL,
		    export_worker, &x), 0);
	for (unsigned i = 0; i < EXPORT_BANS; i++) {
		/* Room depends on the workers' connections of the moment. */
		taken[i] = peer_table_ban(x.t, key_n(100000 + i), 1000,
		    500000 + i) == 0;
		num_taken += (size_t)taken[i];
		for (int round = 0; round < 50; round++) {
			got.num = 0;
			peer_table_foreach_ban(x.t, 1000, ban_one, &got);
			/* Every ban taken and nothing else, whatever changes
			 * hands meanwhile. */
			ck_assert_uint_eq(got.num, num_taken);
			for (unsigned j = 0; j <= i; j++)
				ck_assert_uint_eq(ban_left(&got,
				    key_n(100000 + j)), taken[j] ?
				    500000 + j : 0);
		}
	}
	atomic_store(&x.stop, 1);
	for (int i = 0; i < EXPORT_THREADS; i++)
		pthread_join(threads[i], NULL);
	ck_assert_uint_gt(num_taken, 0);
	ck_assert_uint_eq(peer_table_banned(x.t, 1000), num_taken);
	ck_assert_uint_eq(peer_table_conns(x.t), 0);
	peer_table_free(x.t);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("peer_table");
	TCase *keys = tcase_create("keys");
	TCase *limits = tcase_create("limits");
	TCase *reneg = tcase_create("renegotiation");
	TCase *replace = tcase_create("replacement");
	TCase *threads = tcase_create("threads");

	tcase_add_test(keys, keys_group_addresses);
	tcase_add_test(keys, untracked_clients_pass);
	tcase_add_test(keys, sizes);
	tcase_add_test(limits, no_limits_write_nothing);
	tcase_add_test(limits, max_conns);
	tcase_add_test(limits, rate_bucket);
	tcase_add_test(limits, rate_refusal_counts_nothing);
	tcase_add_test(reneg, reneg_bans_over_limit);
	tcase_add_test(reneg, reneg_limit_zero_bans_at_once);
	tcase_add_test(reneg, reneg_window_slides);
	tcase_add_test(reneg, reneg_ban_keeps_longest);
	tcase_add_test(reneg, bans_handed_over);
	tcase_add_test(reneg, ban_keeps_longest_and_bounds);
	tcase_add_test(reneg, ban_without_room);
	tcase_add_test(replace, replaces_least_recently_seen);
	tcase_add_test(replace, replacement_spares_conns_and_bans);
	tcase_add_test(replace, replacement_forgets_renegotiations);
	tcase_add_test(replace, full_table_admits_untracked);
	tcase_add_test(threads, threads_hammer);
	tcase_add_test(threads, export_while_workers_run);
	tcase_set_timeout(threads, 120);
	suite_add_tcase(s, keys);
	suite_add_tcase(s, limits);
	suite_add_tcase(s, reneg);
	suite_add_tcase(s, replace);
	suite_add_tcase(s, threads);
	return check_run(s);
}
