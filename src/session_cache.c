/* session_cache.c: a sharded hash table of serialized sessions with LRU
 * eviction. Serialized copies, not SSL_SESSION objects, are kept: they
 * do not pin the SSL_CTX (and so the generation) that made them.
 *
 * The session ID's hash picks a shard; each shard has its own mutex,
 * buckets, LRU list and share of the capacity, so workers looking up
 * different sessions rarely wait for each other. A lock is held only to
 * find, link or unlink an entry and copy its bytes: serializing and
 * deserializing happen outside. */
#include "session_cache.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/mem.h>

#include "clock.h"

/* A power of two; at most this many shards are used, fewer when the
 * capacity is smaller, so that every shard holds at least one session. */
#define CACHE_SHARDS 16
#define CACHE_BUCKETS_PER_SHARD 256
/* Sessions this small are copied out to the stack; larger ones (client
 * certificate chains) to the heap. */
#define CACHE_STACK_COPY 4096
/* The largest session session_cache_import takes: a session with a long
 * client certificate chain stays well below it. */
#define CACHE_IMPORT_MAX 65536

struct entry {
	struct entry *hnext;           /* hash chain */
	struct entry *lru_prev, *lru_next;
	uint64_t expires_ms;
	uint64_t used_ns;              /* last stored or found */
	uint8_t id[SSL_MAX_SSL_SESSION_ID_LENGTH];
	uint8_t id_len;
	size_t der_len;
	uint8_t der[];
};

struct shard {
	alignas(64) pthread_mutex_t lock;
	struct entry **buckets;
	size_t count, capacity;
	struct entry *lru_head, *lru_tail; /* head: most recent */
};

static struct shard shards[CACHE_SHARDS];
static pthread_once_t shards_once = PTHREAD_ONCE_INIT;
/* Shards in use (0: no cache). Changed only with every shard's lock held,
 * so it is stable under any one of them. */
static _Atomic size_t num_shards;
static _Atomic uint64_t timeout_ms = 300000;
typedef void (*external_put_fn)(SSL *, SSL_SESSION *);
typedef SSL_SESSION *(*external_get_fn)(SSL *, const uint8_t *, size_t);
/* Set by the control thread on reload while workers read them. */
static _Atomic(external_put_fn) external_put;
static _Atomic(external_get_fn) external_get;

static void
cache_init_locks(void)
{
	for (size_t i = 0; i < CACHE_SHARDS; i++)
		pthread_mutex_init(&shards[i].lock, NULL);
}

void
session_cache_set_external(void (*put)(SSL *ssl, SSL_SESSION *session),
    SSL_SESSION *(*get)(SSL *ssl, const uint8_t *id, size_t id_len))
{
	atomic_store(&external_put, put);
	atomic_store(&external_get, get);
}

static uint64_t
cache_hash(const uint8_t *id, size_t len)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < len; i++)
		h = (h ^ id[i]) * 1099511628211ULL;
	return h;
}

/* cache_lock_shard locks the shard of |h| and returns it, or NULL
 * without a cache. */
static struct shard *
cache_lock_shard(uint64_t h)
{
	for (;;) {
		size_t n = atomic_load(&num_shards);
		struct shard *s;

		if (n == 0)
			return NULL;
		/* The high bits: the low ones pick the bucket. */
		s = &shards[(h >> 32) % n];
		pthread_mutex_lock(&s->lock);
		if (atomic_load(&num_shards) == n)
			return s;
		/* Resharded meanwhile: this may no longer be the shard. */
		pthread_mutex_unlock(&s->lock);
	}
}

static void
cache_lru_unlink(struct shard *s, struct entry *e)
{
	if (e->lru_prev != NULL)
		e->lru_prev->lru_next = e->lru_next;
	else
		s->lru_head = e->lru_next;
	if (e->lru_next != NULL)
		e->lru_next->lru_prev = e->lru_prev;
	else
		s->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void
cache_lru_push(struct shard *s, struct entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = s->lru_head;
	if (s->lru_head != NULL)
		s->lru_head->lru_prev = e;
	s->lru_head = e;
	if (s->lru_tail == NULL)
		s->lru_tail = e;
}

static struct entry **
cache_find(struct shard *s, const uint8_t *id, size_t len)
{
	struct entry **p = &s->buckets[cache_hash(id, len) %
	    CACHE_BUCKETS_PER_SHARD];

	for (; *p != NULL; p = &(*p)->hnext) {
		if ((*p)->id_len == len && memcmp((*p)->id, id, len) == 0)
			break;
	}
	return p;
}

static void
cache_entry_free(struct entry *e)
{
	OPENSSL_cleanse(e->der, e->der_len);
	free(e);
}

/* cache_unlink takes the entry at |slot| out of its shard. */
static struct entry *
cache_unlink(struct shard *s, struct entry **slot)
{
	struct entry *e = *slot;

	*slot = e->hnext;
	e->hnext = NULL;
	cache_lru_unlink(s, e);
	s->count--;
	return e;
}

static void
cache_evict_oldest(struct shard *s)
{
	struct entry *e = s->lru_tail;

	if (e != NULL)
		cache_entry_free(cache_unlink(s, cache_find(s, e->id,
		    e->id_len)));
}

/* cache_link adds |e| to |s| as its most recent entry, replacing one of
 * the same ID and making room. */
static void
cache_link(struct shard *s, struct entry *e)
{
	struct entry **slot = cache_find(s, e->id, e->id_len);

	if (*slot != NULL)
		cache_entry_free(cache_unlink(s, slot));
	while (s->count >= s->capacity)
		cache_evict_oldest(s);
	slot = cache_find(s, e->id, e->id_len);
	e->hnext = *slot;
	*slot = e;
	cache_lru_push(s, e);
	s->count++;
}

static int
cache_by_use(const void *a, const void *b)
{
	const struct entry *x = *(struct entry *const *)a;
	const struct entry *y = *(struct entry *const *)b;

	return x->used_ns < y->used_ns ? -1 : x->used_ns > y->used_ns;
}

/* cache_reshard spreads every entry over |n| shards of the new
 * capacities, least recently used first so that those are what a smaller
 * cache drops. Every shard's lock is held. */
static void
cache_reshard(size_t n, size_t cap)
{
	struct entry **all = NULL;
	size_t num = 0;

	for (size_t i = 0; i < CACHE_SHARDS; i++)
		num += shards[i].count;
	/* Without a cache, or out of memory: start empty rather than break
	 * a bound. */
	if (num > 0 && (n == 0 || (all = malloc(num * sizeof(*all))) ==
	    NULL)) {
		for (size_t i = 0; i < CACHE_SHARDS; i++) {
			while (shards[i].count > 0)
				cache_evict_oldest(&shards[i]);
		}
	}
	num = 0;
	for (size_t i = 0; all != NULL && i < CACHE_SHARDS; i++) {
		struct shard *s = &shards[i];

		while (s->lru_tail != NULL)
			all[num++] = cache_unlink(s, cache_find(s,
			    s->lru_tail->id, s->lru_tail->id_len));
	}
	for (size_t i = 0; i < CACHE_SHARDS; i++)
		shards[i].capacity = i < n ? cap / n + (i < cap % n) : 0;
	atomic_store(&num_shards, n);
	if (num > 0)
		qsort(all, num, sizeof(*all), cache_by_use);
	for (size_t i = 0; i < num; i++) {
		struct shard *s = &shards[(cache_hash(all[i]->id,
		    all[i]->id_len) >> 32) % n];

		cache_link(s, all[i]);
	}
	free(all);
}

void
session_cache_configure(size_t cap, uint64_t timeout)
{
	size_t n = cap < CACHE_SHARDS ? cap : CACHE_SHARDS;

	pthread_once(&shards_once, cache_init_locks);
	for (size_t i = 0; i < CACHE_SHARDS; i++)
		pthread_mutex_lock(&shards[i].lock);
	atomic_store(&timeout_ms, timeout);
	for (size_t i = 0; i < n; i++) {
		if (shards[i].buckets == NULL &&
		    (shards[i].buckets = calloc(CACHE_BUCKETS_PER_SHARD,
		    sizeof(*shards[i].buckets))) == NULL)
			n = i;
	}
	if (n == 0)
		cap = 0;
	if (n == atomic_load(&num_shards)) {
		for (size_t i = 0; i < n; i++) {
			struct shard *s = &shards[i];

			s->capacity = cap / n + (i < cap % n);
			while (s->count > s->capacity)
				cache_evict_oldest(s);
		}
	} else {
		cache_reshard(n, cap);
	}
	for (size_t i = CACHE_SHARDS; i > 0; i--)
		pthread_mutex_unlock(&shards[i - 1].lock);
}

/* cache_entry_new makes an entry for a session stored at |now_ns| that
 * expires |ttl_ms| later. */
static struct entry *
cache_entry_new(const uint8_t *id, size_t id_len, const uint8_t *der,
    size_t der_len, uint64_t now_ns, uint64_t ttl_ms)
{
	struct entry *e = malloc(sizeof(*e) + der_len);

	if (e == NULL)
		return NULL;
	memset(e, 0, sizeof(*e));
	memcpy(e->id, id, id_len);
	e->id_len = (uint8_t)id_len;
	e->der_len = der_len;
	memcpy(e->der, der, der_len);
	e->used_ns = now_ns;
	e->expires_ms = now_ns / 1000000 + ttl_ms;
	return e;
}

/* cache_insert links |e| into its shard, or frees it without a cache.
 * Returns 0 or -1. */
static int
cache_insert(struct entry *e)
{
	struct shard *s = cache_lock_shard(cache_hash(e->id, e->id_len));

	if (s == NULL) {
		cache_entry_free(e);
		return -1;
	}
	cache_link(s, e);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int
cache_new_cb(SSL *ssl, SSL_SESSION *session)
{
	unsigned id_len;
	const uint8_t *id = SSL_SESSION_get_id(session, &id_len);
	uint8_t *der = NULL;
	size_t der_len;
	struct entry *e;

	/* TLS 1.3 resumes with tickets only: nothing to look up by ID. */
	if (id_len == 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH ||
	    SSL_SESSION_get_protocol_version(session) >= TLS1_3_VERSION)
		return 0;
	external_put_fn put = atomic_load(&external_put);

	if (put != NULL)
		put(ssl, session);
	if (atomic_load_explicit(&num_shards, memory_order_relaxed) == 0 ||
	    SSL_SESSION_to_bytes(session, &der, &der_len) != 1)
		return 0;
	e = cache_entry_new(id, id_len, der, der_len, clock_mono_ns(),
	    atomic_load(&timeout_ms));
	OPENSSL_cleanse(der, der_len);
	OPENSSL_free(der);
	if (e != NULL)
		cache_insert(e);
	return 0;
}

static SSL_SESSION *
cache_get_cb(SSL *ssl, const uint8_t *id, int id_len, int *out_copy)
{
	uint8_t stack[CACHE_STACK_COPY], *copy = NULL;
	SSL_SESSION *session = NULL;
	struct entry **slot, *gone = NULL;
	struct shard *s;
	size_t copy_len = 0;
	uint64_t now;

	*out_copy = 0;
	if (id_len <= 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH)
		return NULL;
	now = clock_mono_ns();
	s = cache_lock_shard(cache_hash(id, (size_t)id_len));
	if (s != NULL && *(slot = cache_find(s, id, (size_t)id_len)) != NULL) {
		struct entry *e = *slot;

		if (e->expires_ms <= now / 1000000) {
			gone = cache_unlink(s, slot);
		} else {
			copy_len = e->der_len;
			copy = copy_len <= sizeof(stack) ? stack :
			    malloc(copy_len);
			if (copy != NULL)
				memcpy(copy, e->der, copy_len);
			e->used_ns = now;
			cache_lru_unlink(s, e);
			cache_lru_push(s, e);
		}
	}
	if (s != NULL)
		pthread_mutex_unlock(&s->lock);
	if (gone != NULL)
		cache_entry_free(gone);
	if (copy != NULL) {
		session = SSL_SESSION_from_bytes(copy, copy_len,
		    SSL_get_SSL_CTX(ssl));
		OPENSSL_cleanse(copy, copy_len);
		if (copy != stack)
			free(copy);
	}
	if (session == NULL) {
		external_get_fn get = atomic_load(&external_get);

		if (get != NULL)
			session = get(ssl, id, (size_t)id_len);
	}
	return session;
}

void
session_cache_attach(SSL_CTX *ctx)
{
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER |
	    SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(ctx, cache_new_cb);
	SSL_CTX_sess_set_get_cb(ctx, cache_get_cb);
}

size_t
session_cache_count(void)
{
	size_t n = 0;

	pthread_once(&shards_once, cache_init_locks);
	for (size_t i = 0; i < CACHE_SHARDS; i++) {
		pthread_mutex_lock(&shards[i].lock);
		n += shards[i].count;
		pthread_mutex_unlock(&shards[i].lock);
	}
	return n;
}

void
session_cache_foreach(int (*fn)(void *arg, const uint8_t *id, size_t id_len,
    const uint8_t *der, size_t der_len, uint64_t ttl_ms), void *arg)
{
	uint64_t now_ms = clock_mono_ms();
	int stop = 0;

	pthread_once(&shards_once, cache_init_locks);
	for (size_t i = 0; i < CACHE_SHARDS && !stop; i++) {
		struct shard *s = &shards[i];

		pthread_mutex_lock(&s->lock);
		for (struct entry *e = s->lru_tail; e != NULL && !stop;
		    e = e->lru_prev) {
			if (e->expires_ms > now_ms)
				stop = fn(arg, e->id, e->id_len, e->der,
				    e->der_len, e->expires_ms - now_ms);
		}
		pthread_mutex_unlock(&s->lock);
	}
}

int
session_cache_import(const uint8_t *id, size_t id_len, const uint8_t *der,
    size_t der_len, uint64_t ttl_ms)
{
	uint64_t timeout = atomic_load(&timeout_ms);
	struct entry *e;

	if (atomic_load(&num_shards) == 0 || id == NULL || id_len == 0 ||
	    id_len > SSL_MAX_SSL_SESSION_ID_LENGTH || der == NULL ||
	    der_len == 0 || der_len > CACHE_IMPORT_MAX)
		return -1;
	if (ttl_ms == 0)
		return 0;
	e = cache_entry_new(id, id_len, der, der_len, clock_mono_ns(),
	    ttl_ms < timeout ? ttl_ms : timeout);
	if (e == NULL)
		return -1;
	return cache_insert(e);
}

void
session_cache_clear(void)
{
	pthread_once(&shards_once, cache_init_locks);
	for (size_t i = 0; i < CACHE_SHARDS; i++) {
		pthread_mutex_lock(&shards[i].lock);
		while (shards[i].count > 0)
			cache_evict_oldest(&shards[i]);
		pthread_mutex_unlock(&shards[i].lock);
	}
}
