/* peer_table.c: client addresses in a set-associative table of fixed size.
 * A key hashes (SipHash under a random key, so that clients cannot aim at
 * one set) to a set of PEER_WAYS entries; a new key takes an empty entry
 * of its set, or else the least recently seen one that has no counted
 * connections and no ban.
 *
 * Entries change hands without locks. |users| counts, in its low half, the
 * connections counted on the entry and, in its high half, pins: threads
 * that are reading or writing the entry right now.
 * - A thread pins an entry it found for its key by adding to |users|, then
 *   checks that |key| is still its own; if not, it unpins and looks again.
 * - A thread replacing an entry CASes its key to PEER_KEY_BUSY, then
 *   checks that |users| is 0 and no ban is running; if not, it puts the
 *   key back and tries another entry. Otherwise the entry is its own: it
 *   resets it, pins it and publishes the new key.
 * Both sides write one variable and then read the other, seq_cst: at least
 * one of them sees the other's write, so a replacer never takes an entry
 * from under a pin. Counted connections keep entries too, and are only
 * added while pinned. Everything else is relaxed, or acquire/release where
 * a value is read without a pin. Renegotiation attempts, rare, are kept
 * under a lock stripe; the accept path never takes it.
 *
 * Two threads inserting the same new key at once may both succeed, and
 * so may one that misses an entry of its key in a replacer's hands. To
 * make that rare, a lookup that misses while an entry of the set is BUSY
 * waits for it a little, and an inserter that finds another copy of its
 * key gives its entry back. A copy that is left holds the connections
 * admitted in that instant; lookups find the first, the other ages out. */
#include "peer_table.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <openssl/rand.h>
#include <openssl/siphash.h>

#define PEER_WAYS 8
#define PEER_LOCKS 64
#define PEER_HISTORY (PEER_RENEG_LIMIT_MAX + 1)
/* The top byte 0xff is IPv6 multicast, never a TCP source: room for the
 * IPv4 keys and the two markers of unused entries. */
#define PEER_KEY_V4 0xff00000000000000ULL
#define PEER_KEY_EMPTY 0
#define PEER_KEY_ZERO64 0xff01000000000000ULL
#define PEER_KEY_BUSY (PEER_KEY_NONE - 1)
#define PEER_CONNS 0xffffffffULL
#define PEER_PIN (1ULL << 32)
/* Bounds the retries of a lookup whose entries keep changing hands. */
#define PEER_PIN_TRIES 8
/* Bounds the wait for an entry that is changing hands. */
#define PEER_BUSY_WAITS 64

struct peer_entry {
	_Atomic uint64_t key;
	_Atomic uint64_t users; /* pins << 32 | counted connections */
	_Atomic uint64_t tat_ns; /* token bucket, see peer_bucket_take */
	_Atomic uint64_t ban_until_ms;
	_Atomic uint64_t seen_ms;
	/* Renegotiation attempts, under the entry's lock stripe. Replacers
	 * are on the accept path and leave them alone, so hist_key says
	 * whose they are. */
	uint64_t hist_key;
	uint64_t hist_base_ms;
	uint32_t hist_num;
	/* ms after hist_base_ms, oldest first; a cache line of its own, so
	 * the accept path reads one line per entry. */
	alignas(64) uint32_t hist_at[PEER_HISTORY];
};

_Static_assert(sizeof(struct peer_entry) == 128, "an entry is two lines");

struct peer_table {
	struct peer_entry *entries;
	size_t num_entries;
	size_t set_mask;
	uint64_t hash_key[2];
	pthread_mutex_t locks[PEER_LOCKS];
};

uint64_t
peer_key(const struct sockaddr *sa)
{
	const struct in6_addr *a6;
	uint32_t a4;
	uint64_t key = 0;

	if (sa == NULL)
		return PEER_KEY_NONE;
	if (sa->sa_family == AF_INET) {
		a4 = ((const struct sockaddr_in *)sa)->sin_addr.s_addr;
		return PEER_KEY_V4 | ntohl(a4);
	}
	if (sa->sa_family != AF_INET6)
		return PEER_KEY_NONE;
	a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6)) {
		memcpy(&a4, a6->s6_addr + 12, sizeof(a4));
		return PEER_KEY_V4 | ntohl(a4);
	}
	if (IN6_IS_ADDR_MULTICAST(a6))
		return PEER_KEY_NONE;
	for (int i = 0; i < 8; i++)
		key = key << 8 | a6->s6_addr[i];
	/* 0 marks an empty entry (so a new table is all zero pages and costs
	 * no memory until used): ::/64, where ::1 lives, gets a multicast
	 * prefix no client can have instead. */
	return key == 0 ? PEER_KEY_ZERO64 : key;
}

const char *
peer_key_format(uint64_t key, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	struct in6_addr a6;
	struct in_addr a4;

	if ((key >> 32) == (PEER_KEY_V4 >> 32)) {
		a4.s_addr = htonl((uint32_t)key);
		inet_ntop(AF_INET, &a4, host, sizeof(host));
		snprintf(buf, len, "%s", host);
	} else if (key == PEER_KEY_ZERO64) {
		snprintf(buf, len, "::/64");
	} else if ((key >> 56) == 0xff) {
		snprintf(buf, len, "-");
	} else {
		memset(&a6, 0, sizeof(a6));
		for (int i = 0; i < 8; i++)
			a6.s6_addr[i] = (uint8_t)(key >> (56 - 8 * i));
		inet_ntop(AF_INET6, &a6, host, sizeof(host));
		snprintf(buf, len, "%s/64", host);
	}
	return buf;
}

static int
peer_key_valid(uint64_t key)
{
	return key != PEER_KEY_EMPTY && key < PEER_KEY_BUSY;
}

struct peer_table *
peer_table_new(size_t entries)
{
	struct peer_table *t;
	size_t n = PEER_WAYS;

	if (entries == 0)
		entries = PEER_TABLE_DEFAULT_ENTRIES;
	while (n < entries) {
		if (n > SIZE_MAX / 2 / sizeof(struct peer_entry))
			return NULL;
		n <<= 1;
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	/* Anonymous memory is zero (every entry empty) and page aligned, and
	 * only the pages of entries in use ever become resident. */
	t->entries = mmap(NULL, n * sizeof(struct peer_entry),
	    PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->entries == MAP_FAILED) {
		free(t);
		return NULL;
	}
	t->num_entries = n;
	t->set_mask = n / PEER_WAYS - 1;
	RAND_bytes((uint8_t *)t->hash_key, sizeof(t->hash_key));
	for (int i = 0; i < PEER_LOCKS; i++)
		pthread_mutex_init(&t->locks[i], NULL);
	return t;
}

void
peer_table_free(struct peer_table *t)
{
	if (t == NULL)
		return;
	for (int i = 0; i < PEER_LOCKS; i++)
		pthread_mutex_destroy(&t->locks[i]);
	munmap(t->entries, t->num_entries * sizeof(struct peer_entry));
	free(t);
}

size_t
peer_table_size(const struct peer_table *t)
{
	return t->num_entries;
}

static struct peer_entry *
peer_set(const struct peer_table *t, uint64_t key)
{
	uint64_t h = SIPHASH_24(t->hash_key, (const uint8_t *)&key,
	    sizeof(key));

	return &t->entries[(h & t->set_mask) * PEER_WAYS];
}

/* peer_lookup returns the entry of |set| holding |key|, or NULL; |*busy|
 * says whether an entry was changing hands, maybe to or from |key|. */
static struct peer_entry *
peer_lookup(struct peer_entry *set, uint64_t key, int *busy)
{
	uint64_t k;

	*busy = 0;
	for (int i = 0; i < PEER_WAYS; i++) {
		k = atomic_load_explicit(&set[i].key, memory_order_acquire);
		if (k == key)
			return &set[i];
		*busy |= k == PEER_KEY_BUSY;
	}
	return NULL;
}

static void
peer_unpin(struct peer_entry *e)
{
	atomic_fetch_sub_explicit(&e->users, PEER_PIN, memory_order_release);
}

static void
peer_touch(struct peer_entry *e, uint64_t now_ms)
{
	/* Only forward, and without a write when nothing changed: the line
	 * is read by every lookup in the set. */
	if (atomic_load_explicit(&e->seen_ms, memory_order_relaxed) < now_ms)
		atomic_store_explicit(&e->seen_ms, now_ms,
		    memory_order_relaxed);
}

/* peer_replaceable says whether |e| may be given to another key: no pins,
 * no counted connections, no ban running. */
static int
peer_replaceable(struct peer_entry *e, uint64_t now_ms)
{
	return atomic_load(&e->users) == 0 &&
	    atomic_load_explicit(&e->ban_until_ms, memory_order_acquire) <=
	    now_ms;
}

/* peer_victim picks the entry of |set| a new key should take, among those
 * not yet in |*tried|, and adds it there. NULL when none may be taken. */
static struct peer_entry *
peer_victim(struct peer_entry *set, uint64_t now_ms, unsigned *tried)
{
	struct peer_entry *best = NULL;
	uint64_t key, seen, best_seen = 0;

	for (int i = 0; i < PEER_WAYS; i++) {
		if (*tried & (1u << i))
			continue;
		key = atomic_load_explicit(&set[i].key, memory_order_relaxed);
		if (key == PEER_KEY_EMPTY) {
			best = &set[i];
			break;
		}
		if (key == PEER_KEY_BUSY || !peer_replaceable(&set[i], now_ms))
			continue;
		seen = atomic_load_explicit(&set[i].seen_ms,
		    memory_order_relaxed);
		if (best == NULL || seen < best_seen) {
			best = &set[i];
			best_seen = seen;
		}
	}
	if (best != NULL)
		*tried |= 1u << (unsigned)(best - set);
	return best;
}

/* peer_claim gives an entry of |set| to |key| and returns it pinned, or
 * NULL when every entry is in use. */
static struct peer_entry *
peer_claim(struct peer_entry *set, uint64_t key, uint64_t now_ms)
{
	struct peer_entry *v;
	unsigned tried = 0;
	uint64_t old;

	while ((v = peer_victim(set, now_ms, &tried)) != NULL) {
		old = atomic_load_explicit(&v->key, memory_order_relaxed);
		if (old == PEER_KEY_BUSY ||
		    !atomic_compare_exchange_strong(&v->key, &old,
		    PEER_KEY_BUSY))
			continue;
		/* Pins that fail their check come and go on a BUSY entry, so
		 * |users| must be left alone: they take back what they add. */
		if (!peer_replaceable(v, now_ms)) {
			atomic_store(&v->key, old);
			continue;
		}
		atomic_store_explicit(&v->tat_ns, 0, memory_order_relaxed);
		atomic_store_explicit(&v->ban_until_ms, 0,
		    memory_order_relaxed);
		atomic_store_explicit(&v->seen_ms, now_ms, memory_order_relaxed);
		atomic_fetch_add_explicit(&v->users, PEER_PIN,
		    memory_order_relaxed);
		atomic_store(&v->key, key);
		return v;
	}
	return NULL;
}

/* peer_copy returns another entry of |set| than |e| holding |key|. */
static struct peer_entry *
peer_copy(struct peer_entry *set, uint64_t key, struct peer_entry *e)
{
	for (int i = 0; i < PEER_WAYS; i++) {
		if (&set[i] != e && atomic_load(&set[i].key) == key)
			return &set[i];
	}
	return NULL;
}

/* peer_vacate unpins |e|, which this thread has just given to |key|, and
 * gives it back if nobody else has used it and |copy| still holds |key|.
 * Two threads that see each other's copy cannot both give theirs back:
 * each reads the other's key after hiding its own. */
static void
peer_vacate(struct peer_entry *e, uint64_t key, struct peer_entry *copy,
    uint64_t now_ms)
{
	uint64_t k = key;

	if (atomic_compare_exchange_strong(&e->key, &k, PEER_KEY_BUSY)) {
		if (atomic_load(&e->users) == PEER_PIN &&
		    atomic_load_explicit(&e->ban_until_ms,
		    memory_order_acquire) <= now_ms &&
		    atomic_load(&copy->key) == key) {
			peer_unpin(e);
			atomic_store(&e->key, PEER_KEY_EMPTY);
			return;
		}
		atomic_store(&e->key, key);
	}
	peer_unpin(e);
}

/* peer_pin returns the entry of |key|, pinned, making one if needed; NULL
 * when the key cannot be tracked now. */
static struct peer_entry *
peer_pin(struct peer_table *t, uint64_t key, uint64_t now_ms)
{
	struct peer_entry *set = peer_set(t, key), *e, *copy;
	int busy, waits = 0, tries = 0;

	while (tries < PEER_PIN_TRIES) {
		e = peer_lookup(set, key, &busy);
		/* The entry of |key| may be in a replacer's hands, for a few
		 * instructions: inserting another now would make a copy. */
		if (e == NULL && busy && waits++ < PEER_BUSY_WAITS)
			continue;
		tries++;
		if (e == NULL) {
			e = peer_claim(set, key, now_ms);
			if (e == NULL ||
			    (copy = peer_copy(set, key, e)) == NULL)
				return e;
			/* Another thread has inserted |key| too: one copy
			 * goes, and the lookup starts again. */
			peer_vacate(e, key, copy, now_ms);
			continue;
		}
		atomic_fetch_add(&e->users, PEER_PIN);
		if (atomic_load(&e->key) == key) {
			peer_touch(e, now_ms);
			return e;
		}
		peer_unpin(e);
	}
	return NULL;
}

/* peer_conn_take counts one more connection unless |max| are open. */
static int
peer_conn_take(struct peer_entry *e, uint32_t max)
{
	uint64_t u = atomic_load_explicit(&e->users, memory_order_relaxed);

	do {
		if ((u & PEER_CONNS) >= max)
			return 0;
	} while (!atomic_compare_exchange_weak_explicit(&e->users, &u, u + 1,
	    memory_order_relaxed, memory_order_relaxed));
	return 1;
}

static void
peer_conn_put(struct peer_entry *e)
{
	atomic_fetch_sub_explicit(&e->users, 1, memory_order_release);
}

/* peer_bucket_take takes a token from |e|'s bucket of |rate| tokens that
 * refills at |rate| a second. The bucket is kept as one word, the time at
 * which it will be full again (a theoretical arrival time), so that a
 * single CAS updates it: each token moves that time 1/rate later, and a
 * token is there as long as it stays within a second of now. Rates above
 * 10^9 have no effect. */
static int
peer_bucket_take(struct peer_entry *e, uint32_t rate, uint64_t now_ms)
{
	uint64_t now = now_ms * 1000000, interval = 1000000000 / rate;
	uint64_t burst = interval * rate, tat, next;

	tat = atomic_load_explicit(&e->tat_ns, memory_order_relaxed);
	do {
		next = (tat > now ? tat : now) + interval;
		if (next - now > burst)
			return 0;
	} while (!atomic_compare_exchange_weak_explicit(&e->tat_ns, &tat,
	    next, memory_order_relaxed, memory_order_relaxed));
	return 1;
}

static enum peer_verdict
peer_check(struct peer_entry *e, const struct peer_limits *lim,
    uint64_t now_ms)
{
	if (atomic_load_explicit(&e->ban_until_ms, memory_order_acquire) >
	    now_ms)
		return PEER_BANNED;
	if (lim->max_conns != 0 && !peer_conn_take(e, lim->max_conns))
		return PEER_TOO_MANY_CONNS;
	if (lim->rate != 0 && !peer_bucket_take(e, lim->rate, now_ms)) {
		if (lim->max_conns != 0)
			peer_conn_put(e);
		return PEER_TOO_FAST;
	}
	return PEER_OK;
}

/* peer_banned looks a ban up without pinning or writing anything. */
static int
peer_banned(struct peer_table *t, uint64_t key, uint64_t now_ms)
{
	struct peer_entry *e;
	int busy;

	e = peer_lookup(peer_set(t, key), key, &busy);
	if (e == NULL ||
	    atomic_load_explicit(&e->ban_until_ms, memory_order_acquire) <=
	    now_ms)
		return 0;
	/* The entry may have gone to another key, and been banned there,
	 * since the lookup: a second look at the key tells. */
	return atomic_load_explicit(&e->key, memory_order_relaxed) == key;
}

enum peer_verdict
peer_admit(struct peer_table *t, uint64_t key, const struct peer_limits *lim,
    uint64_t now_ms, struct peer_ref *ref)
{
	struct peer_entry *e;
	enum peer_verdict v;

	ref->e = NULL;
	ref->key = key;
	if (!peer_key_valid(key))
		return PEER_OK;
	if (lim->max_conns == 0 && lim->rate == 0)
		return peer_banned(t, key, now_ms) ? PEER_BANNED : PEER_OK;
	e = peer_pin(t, key, now_ms);
	if (e == NULL)
		return PEER_OK; /* every entry of its set is in use */
	v = peer_check(e, lim, now_ms);
	if (v == PEER_OK && lim->max_conns != 0)
		ref->e = e;
	peer_unpin(e);
	return v;
}

void
peer_release(struct peer_table *t, struct peer_ref *ref)
{
	(void)t;
	if (ref->e != NULL)
		peer_conn_put(ref->e);
	ref->e = NULL;
}

/* peer_history_drop forgets the |n| oldest attempts of |e| and measures
 * the others from the oldest left. */
static void
peer_history_drop(struct peer_entry *e, uint32_t n)
{
	uint32_t shift;

	if (n == 0)
		return;
	if (n >= e->hist_num) {
		e->hist_num = 0;
		return;
	}
	shift = e->hist_at[n];
	for (uint32_t i = n; i < e->hist_num; i++)
		e->hist_at[i - n] = e->hist_at[i] - shift;
	e->hist_num -= n;
	e->hist_base_ms += shift;
}

/* peer_history_add records an attempt by |key| on |e| at |now_ms|, under
 * the entry's lock. It returns 1 and sets |*out_until_ms| when this is one
 * attempt more than the limit within the window. Attempts the window has
 * passed over are dropped, so the offsets stay below the window, which is
 * why it is capped to 32 bits. */
static int
peer_history_add(struct peer_entry *e, uint64_t key,
    const struct peer_limits *lim, uint64_t now_ms, uint64_t *out_until_ms)
{
	uint64_t window = lim->reneg_window_ms, last;
	uint32_t limit = lim->reneg_limit, n = 0;
	int over;

	if (window > UINT32_MAX)
		window = UINT32_MAX;
	if (limit > PEER_RENEG_LIMIT_MAX)
		limit = PEER_RENEG_LIMIT_MAX;
	if (e->hist_key != key) {
		e->hist_key = key;
		e->hist_num = 0;
	}
	while (n < e->hist_num &&
	    e->hist_base_ms + e->hist_at[n] + window <= now_ms)
		n++;
	peer_history_drop(e, n);
	if (e->hist_num == 0) {
		e->hist_base_ms = now_ms;
	} else {
		/* Kept in order even if a caller's clock steps back. */
		last = e->hist_base_ms + e->hist_at[e->hist_num - 1];
		if (now_ms < last)
			now_ms = last;
	}
	over = window > 0 && e->hist_num >= limit;
	if (over)
		*out_until_ms = window + (limit == 0 ? now_ms :
		    e->hist_base_ms + e->hist_at[e->hist_num - limit]);
	if (e->hist_num == PEER_HISTORY)
		peer_history_drop(e, 1);
	e->hist_at[e->hist_num++] = (uint32_t)(now_ms - e->hist_base_ms);
	return over;
}

static pthread_mutex_t *
peer_lock(struct peer_table *t, const struct peer_entry *e)
{
	return &t->locks[(size_t)(e - t->entries) % PEER_LOCKS];
}

/* peer_ban_extend bans |e|, which the caller has pinned and locked,
 * until |until| unless its ban runs longer, and returns when the ban
 * ends. Bans are only written here, pinned and locked, and a ban already
 * running may end later than this one. */
static uint64_t
peer_ban_extend(struct peer_entry *e, uint64_t until)
{
	uint64_t ban = atomic_load_explicit(&e->ban_until_ms,
	    memory_order_relaxed);

	if (until <= ban)
		return ban;
	atomic_store_explicit(&e->ban_until_ms, until, memory_order_release);
	return until;
}

int
peer_renegotiation(struct peer_table *t, uint64_t key,
    const struct peer_limits *lim, uint64_t now_ms, uint64_t *out_until_ms)
{
	struct peer_entry *e;
	uint64_t until = 0;
	int over;

	if (!peer_key_valid(key))
		return 0;
	e = peer_pin(t, key, now_ms);
	if (e == NULL)
		return 0;
	pthread_mutex_lock(peer_lock(t, e));
	over = peer_history_add(e, key, lim, now_ms, &until);
	if (over)
		until = peer_ban_extend(e, until);
	pthread_mutex_unlock(peer_lock(t, e));
	peer_unpin(e);
	if (over)
		*out_until_ms = until;
	return over;
}

int
peer_table_ban(struct peer_table *t, uint64_t key, uint64_t now_ms,
    uint64_t left_ms)
{
	struct peer_entry *e;

	if (!peer_key_valid(key))
		return -1;
	/* The bytes may come from another process: no ban longer than a
	 * renegotiation window, and no overflow. */
	if (left_ms > UINT32_MAX)
		left_ms = UINT32_MAX;
	e = peer_pin(t, key, now_ms);
	if (e == NULL)
		return -1;
	pthread_mutex_lock(peer_lock(t, e));
	peer_ban_extend(e, now_ms + left_ms);
	pthread_mutex_unlock(peer_lock(t, e));
	peer_unpin(e);
	return 0;
}

void
peer_table_foreach_ban(struct peer_table *t, uint64_t now_ms,
    void (*fn)(void *arg, uint64_t key, uint64_t left_ms), void *arg)
{
	struct peer_entry *e;
	uint64_t key, until;

	for (size_t i = 0; i < t->num_entries; i++) {
		e = &t->entries[i];
		key = atomic_load_explicit(&e->key, memory_order_acquire);
		if (!peer_key_valid(key))
			continue;
		until = atomic_load_explicit(&e->ban_until_ms,
		    memory_order_acquire);
		/* As in peer_banned: the entry may have changed hands, and
		 * been banned for its new key, between the two loads. */
		if (until > now_ms && atomic_load_explicit(&e->key,
		    memory_order_relaxed) == key)
			fn(arg, key, until - now_ms);
	}
}

uint32_t
peer_conns(struct peer_table *t, uint64_t key)
{
	struct peer_entry *e;
	int busy;

	if (!peer_key_valid(key))
		return 0;
	e = peer_lookup(peer_set(t, key), key, &busy);
	if (e == NULL)
		return 0;
	return (uint32_t)(atomic_load_explicit(&e->users,
	    memory_order_relaxed) & PEER_CONNS);
}

uint64_t
peer_table_conns(struct peer_table *t)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < t->num_entries; i++)
		sum += atomic_load_explicit(&t->entries[i].users,
		    memory_order_relaxed) & PEER_CONNS;
	return sum;
}

size_t
peer_table_banned(struct peer_table *t, uint64_t now_ms)
{
	struct peer_entry *e;
	size_t n = 0;

	for (size_t i = 0; i < t->num_entries; i++) {
		e = &t->entries[i];
		if (peer_key_valid(atomic_load_explicit(&e->key,
		    memory_order_relaxed)) &&
		    atomic_load_explicit(&e->ban_until_ms,
		    memory_order_relaxed) > now_ms)
			n++;
	}
	return n;
}

size_t
peer_table_tracked(struct peer_table *t)
{
	size_t n = 0;

	for (size_t i = 0; i < t->num_entries; i++) {
		if (peer_key_valid(atomic_load_explicit(&t->entries[i].key,
		    memory_order_relaxed)))
			n++;
	}
	return n;
}
