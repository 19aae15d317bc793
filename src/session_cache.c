/* session_cache.c: a locked hash table of serialized sessions with LRU
 * eviction. Serialized copies, not SSL_SESSION objects, are kept: they
 * do not pin the SSL_CTX (and so the generation) that made them. */
#include "session_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/mem.h>

#include "clock.h"

struct entry {
	struct entry *hnext;           /* hash chain */
	struct entry *lru_prev, *lru_next;
	uint64_t expires_ms;
	uint8_t id[SSL_MAX_SSL_SESSION_ID_LENGTH];
	uint8_t id_len;
	size_t der_len;
	uint8_t der[];
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry **buckets;
static size_t num_buckets, count, capacity;
static uint64_t timeout_ms = 300000;
static struct entry *lru_head, *lru_tail; /* head: most recent */
typedef void (*external_put_fn)(SSL *, SSL_SESSION *);
typedef SSL_SESSION *(*external_get_fn)(SSL *, const uint8_t *, size_t);
/* Set by the control thread on reload while workers read them. */
static _Atomic(external_put_fn) external_put;
static _Atomic(external_get_fn) external_get;

void
session_cache_set_external(void (*put)(SSL *ssl, SSL_SESSION *session),
    SSL_SESSION *(*get)(SSL *ssl, const uint8_t *id, size_t id_len))
{
	atomic_store(&external_put, put);
	atomic_store(&external_get, get);
}

static size_t
cache_bucket(const uint8_t *id, size_t len)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < len; i++)
		h = (h ^ id[i]) * 1099511628211ULL;
	return (size_t)(h % num_buckets);
}

static void
cache_lru_unlink(struct entry *e)
{
	if (e->lru_prev != NULL)
		e->lru_prev->lru_next = e->lru_next;
	else
		lru_head = e->lru_next;
	if (e->lru_next != NULL)
		e->lru_next->lru_prev = e->lru_prev;
	else
		lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void
cache_lru_push(struct entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = lru_head;
	if (lru_head != NULL)
		lru_head->lru_prev = e;
	lru_head = e;
	if (lru_tail == NULL)
		lru_tail = e;
}

static struct entry **
cache_find(const uint8_t *id, size_t len)
{
	struct entry **p = &buckets[cache_bucket(id, len)];

	for (; *p != NULL; p = &(*p)->hnext) {
		if ((*p)->id_len == len && memcmp((*p)->id, id, len) == 0)
			break;
	}
	return p;
}

static void
cache_remove(struct entry **slot)
{
	struct entry *e = *slot;

	*slot = e->hnext;
	cache_lru_unlink(e);
	OPENSSL_cleanse(e->der, e->der_len);
	free(e);
	count--;
}

static void
cache_evict_oldest(void)
{
	struct entry *e = lru_tail;

	if (e != NULL)
		cache_remove(cache_find(e->id, e->id_len));
}

void
session_cache_configure(size_t cap, uint64_t timeout)
{
	pthread_mutex_lock(&cache_lock);
	timeout_ms = timeout;
	capacity = cap;
	if (buckets == NULL && cap > 0) {
		num_buckets = 4096;
		buckets = calloc(num_buckets, sizeof(*buckets));
		if (buckets == NULL)
			capacity = 0;
	}
	while (count > capacity)
		cache_evict_oldest();
	pthread_mutex_unlock(&cache_lock);
}

static int
cache_new_cb(SSL *ssl, SSL_SESSION *session)
{
	unsigned id_len;
	const uint8_t *id = SSL_SESSION_get_id(session, &id_len);
	uint8_t *der = NULL;
	size_t der_len;
	struct entry *e, **slot;

	/* TLS 1.3 resumes with tickets only: nothing to look up by ID. */
	if (id_len == 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH ||
	    SSL_SESSION_get_protocol_version(session) >= TLS1_3_VERSION)
		return 0;
	external_put_fn put = atomic_load(&external_put);

	if (put != NULL)
		put(ssl, session);
	if (SSL_SESSION_to_bytes(session, &der, &der_len) != 1)
		return 0;
	e = malloc(sizeof(*e) + der_len);
	if (e == NULL) {
		OPENSSL_free(der);
		return 0;
	}
	memset(e, 0, sizeof(*e));
	memcpy(e->id, id, id_len);
	e->id_len = (uint8_t)id_len;
	e->der_len = der_len;
	memcpy(e->der, der, der_len);
	OPENSSL_cleanse(der, der_len);
	OPENSSL_free(der);
	pthread_mutex_lock(&cache_lock);
	if (capacity == 0) {
		pthread_mutex_unlock(&cache_lock);
		free(e);
		return 0;
	}
	e->expires_ms = clock_mono_ms() + timeout_ms;
	slot = cache_find(id, id_len);
	if (*slot != NULL)
		cache_remove(slot);
	while (count >= capacity)
		cache_evict_oldest();
	slot = cache_find(id, id_len);
	e->hnext = *slot;
	*slot = e;
	cache_lru_push(e);
	count++;
	pthread_mutex_unlock(&cache_lock);
	return 0;
}

static SSL_SESSION *
cache_get_cb(SSL *ssl, const uint8_t *id, int id_len, int *out_copy)
{
	SSL_SESSION *session = NULL;
	struct entry **slot;

	*out_copy = 0;
	if (id_len <= 0 || id_len > SSL_MAX_SSL_SESSION_ID_LENGTH)
		return NULL;
	pthread_mutex_lock(&cache_lock);
	if (capacity > 0 && *(slot = cache_find(id, (size_t)id_len)) != NULL) {
		struct entry *e = *slot;

		if (e->expires_ms <= clock_mono_ms()) {
			cache_remove(slot);
		} else {
			session = SSL_SESSION_from_bytes(e->der, e->der_len,
			    SSL_get_SSL_CTX(ssl));
			cache_lru_unlink(e);
			cache_lru_push(e);
		}
	}
	pthread_mutex_unlock(&cache_lock);
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
	size_t n;

	pthread_mutex_lock(&cache_lock);
	n = count;
	pthread_mutex_unlock(&cache_lock);
	return n;
}

void
session_cache_clear(void)
{
	pthread_mutex_lock(&cache_lock);
	while (count > 0)
		cache_evict_oldest();
	pthread_mutex_unlock(&cache_lock);
}
