/* staple.c: per-certificate OCSP staples. */
#include "staple.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct staple_slot {
	struct staple_slot *next;
	uint8_t hash[32];
	pthread_rwlock_t lock;
	uint8_t *der;
	size_t len;
	int64_t expires;
};

/* Slots are few (one per certificate) and live until exit. */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct staple_slot *slots;

struct staple_slot *
staple_slot_get(const uint8_t hash[32])
{
	struct staple_slot *s;

	pthread_mutex_lock(&slots_lock);
	for (s = slots; s != NULL; s = s->next) {
		if (memcmp(s->hash, hash, 32) == 0)
			break;
	}
	if (s == NULL && (s = calloc(1, sizeof(*s))) != NULL) {
		memcpy(s->hash, hash, 32);
		pthread_rwlock_init(&s->lock, NULL);
		s->next = slots;
		slots = s;
	}
	pthread_mutex_unlock(&slots_lock);
	return s;
}

int
staple_set(struct staple_slot *s, const uint8_t *der, size_t len,
    int64_t expires)
{
	uint8_t *copy = NULL, *old;

	if (der != NULL && (copy = malloc(len)) == NULL)
		return -1;
	if (copy != NULL)
		memcpy(copy, der, len);
	pthread_rwlock_wrlock(&s->lock);
	old = s->der;
	s->der = copy;
	s->len = copy != NULL ? len : 0;
	s->expires = expires;
	pthread_rwlock_unlock(&s->lock);
	free(old);
	return 0;
}

void
staple_apply(struct staple_slot *s, SSL *ssl)
{
	int expired = 0;

	if (s == NULL)
		return;
	pthread_rwlock_rdlock(&s->lock);
	if (s->der != NULL && (int64_t)time(NULL) < s->expires)
		SSL_set_ocsp_response(ssl, s->der, s->len);
	else if (s->der != NULL)
		expired = 1;
	pthread_rwlock_unlock(&s->lock);
	if (!expired)
		return;
	/* Drop it, unless a fresh one replaced it meanwhile. */
	pthread_rwlock_wrlock(&s->lock);
	if (s->der != NULL && (int64_t)time(NULL) >= s->expires) {
		free(s->der);
		s->der = NULL;
		s->len = 0;
	}
	pthread_rwlock_unlock(&s->lock);
}

int
staple_has(struct staple_slot *s)
{
	int has;

	pthread_rwlock_rdlock(&s->lock);
	has = s->der != NULL;
	pthread_rwlock_unlock(&s->lock);
	return has;
}
