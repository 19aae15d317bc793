/* staple.c: per-certificate OCSP staples. */
#include "staple.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "retire.h"

/* The largest response staple_restore takes; a responder's answer is a
 * few kilobytes. */
#define STAPLE_RESTORE_MAX 65536

/* A response, immutable once published. */
struct staple_resp {
	struct retire_node retire;
	int64_t expires;
	size_t len;
	uint8_t der[];
};

struct staple_slot {
	struct staple_slot *next;
	uint8_t hash[32];
	size_t refs; /* under slots_lock */
	_Atomic(struct staple_resp *) resp;
};

/* Guards the list and the reference counts: taken when contexts are built
 * and released, and by the control side, never by a handshake. */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct staple_slot *slots;
static size_t slots_live;

static void
staple_resp_free(void *arg)
{
	free(arg);
}

/* staple_swap publishes |next| in |s| and retires what it replaces. */
static void
staple_swap(struct staple_slot *s, struct staple_resp *next)
{
	struct staple_resp *old = atomic_exchange(&s->resp, next);

	if (old != NULL)
		retire_defer(&old->retire, staple_resp_free, old);
}

struct staple_slot *
staple_slot_get(const uint8_t hash[32])
{
	struct staple_slot *s;

	pthread_mutex_lock(&slots_lock);
	for (s = slots; s != NULL; s = s->next) {
		if (memcmp(s->hash, hash, 32) == 0)
			break;
	}
	if (s != NULL) {
		s->refs++;
	} else if ((s = calloc(1, sizeof(*s))) != NULL) {
		memcpy(s->hash, hash, 32);
		s->refs = 1;
		atomic_init(&s->resp, NULL);
		s->next = slots;
		slots = s;
		slots_live++;
	}
	pthread_mutex_unlock(&slots_lock);
	return s;
}

struct staple_slot *
staple_slot_ref(struct staple_slot *s)
{
	if (s != NULL) {
		pthread_mutex_lock(&slots_lock);
		s->refs++;
		pthread_mutex_unlock(&slots_lock);
	}
	return s;
}

void
staple_slot_unref(struct staple_slot *s)
{
	struct staple_slot **p;
	int last;

	if (s == NULL)
		return;
	pthread_mutex_lock(&slots_lock);
	last = --s->refs == 0;
	if (last) {
		for (p = &slots; *p != s; p = &(*p)->next)
			;
		*p = s->next;
		slots_live--;
	}
	pthread_mutex_unlock(&slots_lock);
	if (!last)
		return;
	/* Handshakes reach a slot only through a context holding a
	 * reference: with none left, nobody can be reading the response. */
	free(atomic_load_explicit(&s->resp, memory_order_relaxed));
	free(s);
}

static struct staple_resp *
staple_resp_new(const uint8_t *der, size_t len, int64_t expires)
{
	struct staple_resp *r = malloc(sizeof(*r) + len);

	if (r == NULL)
		return NULL;
	memset(r, 0, sizeof(*r));
	memcpy(r->der, der, len);
	r->len = len;
	r->expires = expires;
	return r;
}

int
staple_set(struct staple_slot *s, const uint8_t *der, size_t len,
    int64_t expires)
{
	struct staple_resp *r = NULL;

	if (der != NULL && (r = staple_resp_new(der, len, expires)) == NULL)
		return -1;
	staple_swap(s, r);
	return 0;
}

void
staple_apply(struct staple_slot *s, SSL *ssl)
{
	const struct staple_resp *r;

	if (s == NULL)
		return;
	/* Valid until this worker's next quiescent point (retire.h); the
	 * response is copied into the connection. An expired one is left
	 * for the control side to drop (staple_prune). */
	r = atomic_load_explicit(&s->resp, memory_order_acquire);
	if (r != NULL && (int64_t)time(NULL) < r->expires)
		SSL_set_ocsp_response(ssl, r->der, r->len);
}

int
staple_has(struct staple_slot *s)
{
	const struct staple_resp *r = atomic_load_explicit(&s->resp,
	    memory_order_acquire);

	return r != NULL;
}

void
staple_prune(int64_t now)
{
	pthread_mutex_lock(&slots_lock);
	for (struct staple_slot *s = slots; s != NULL; s = s->next) {
		struct staple_resp *r = atomic_load_explicit(&s->resp,
		    memory_order_acquire);

		/* Only if no fresh response replaced it meanwhile. */
		if (r != NULL && now >= r->expires &&
		    atomic_compare_exchange_strong(&s->resp, &r, NULL))
			retire_defer(&r->retire, staple_resp_free, r);
	}
	pthread_mutex_unlock(&slots_lock);
}

void
staple_foreach(void (*fn)(void *arg, const uint8_t hash[32],
    const uint8_t *der, size_t len, int64_t expires), void *arg)
{
	int64_t now = (int64_t)time(NULL);

	pthread_mutex_lock(&slots_lock);
	for (struct staple_slot *s = slots; s != NULL; s = s->next) {
		const struct staple_resp *r = atomic_load_explicit(&s->resp,
		    memory_order_acquire);

		if (r != NULL && now < r->expires)
			fn(arg, s->hash, r->der, r->len, r->expires);
	}
	pthread_mutex_unlock(&slots_lock);
}

int
staple_restore(const uint8_t hash[32], const uint8_t *der, size_t len,
    int64_t expires)
{
	struct staple_resp *r, *none = NULL;
	struct staple_slot *s;
	int set = 0;

	if (der == NULL || len == 0 || len > STAPLE_RESTORE_MAX ||
	    expires <= (int64_t)time(NULL))
		return 0;
	if ((r = staple_resp_new(der, len, expires)) == NULL)
		return -1;
	pthread_mutex_lock(&slots_lock);
	for (s = slots; s != NULL; s = s->next) {
		if (memcmp(s->hash, hash, 32) == 0)
			break;
	}
	/* Only into an empty slot: what the configuration or the fetcher
	 * put there meanwhile is at least as fresh. The lock keeps the slot
	 * from being freed. */
	if (s != NULL)
		set = atomic_compare_exchange_strong(&s->resp, &none, r);
	pthread_mutex_unlock(&slots_lock);
	if (!set)
		free(r);
	return set;
}

size_t
staple_copy(struct staple_slot *s, uint8_t *buf, size_t buf_len)
{
	const struct staple_resp *r = atomic_load_explicit(&s->resp,
	    memory_order_acquire);

	if (r == NULL || r->len > buf_len)
		return 0;
	memcpy(buf, r->der, r->len);
	return r->len;
}

size_t
staple_slots_live(void)
{
	size_t n;

	pthread_mutex_lock(&slots_lock);
	n = slots_live;
	pthread_mutex_unlock(&slots_lock);
	return n;
}
