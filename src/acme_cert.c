/* acme_cert.c: the live certificates of ACME orders. */
#include "acme_cert.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/pool.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "ocsp.h"
#include "retire.h"
#include "staple.h"

/* A certificate with its key, immutable once published; with what OCSP
 * stapling needs when the certificate names a responder. */
struct acme_snap {
	struct retire_node retire;
	EVP_PKEY *key;
	int64_t not_after;
	struct staple_slot *staple;
	X509 *leaf, *issuer; /* NULL without a responder */
	char *ocsp_url;
	size_t num;
	CRYPTO_BUFFER *chain[];
};

struct acme_slot {
	struct acme_slot *next;
	char *key;
	size_t refs; /* under slots_lock */
	_Atomic(struct acme_snap *) snap;
};

/* Guards the list and the reference counts: taken when contexts are built
 * and released and by the ACME side, never by a handshake. */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct acme_slot *slots;
static size_t slots_live;

static void
acme_snap_free(void *arg)
{
	struct acme_snap *snap = arg;

	for (size_t i = 0; i < snap->num; i++)
		CRYPTO_BUFFER_free(snap->chain[i]);
	EVP_PKEY_free(snap->key);
	staple_slot_unref(snap->staple);
	X509_free(snap->leaf);
	X509_free(snap->issuer);
	free(snap->ocsp_url);
	free(snap);
}

/* acme_slot_swap publishes |next| in |s| and retires what it replaces.
 * The swap happens under slots_lock so that control-side readers, which
 * are not retire readers, can read a snapshot under that lock. */
static void
acme_slot_swap(struct acme_slot *s, struct acme_snap *next)
{
	struct acme_snap *old;

	pthread_mutex_lock(&slots_lock);
	old = atomic_exchange(&s->snap, next);
	pthread_mutex_unlock(&slots_lock);
	if (old != NULL)
		retire_defer(&old->retire, acme_snap_free, old);
}

char *
acme_slot_key(const char *account, const char *const *names,
    size_t num_names, char *buf, size_t len)
{
	size_t used;
	int n = snprintf(buf, len, "%s:", account);

	if (n < 0 || (size_t)n >= len)
		return NULL;
	used = (size_t)n;
	for (size_t i = 0; i < num_names; i++) {
		n = snprintf(buf + used, len - used, "%s%s", i > 0 ? "," : "",
		    names[i]);
		if (n < 0 || (size_t)n >= len - used)
			return NULL;
		used += (size_t)n;
	}
	return buf;
}

struct acme_slot *
acme_slot_get(const char *key)
{
	struct acme_slot *s;

	pthread_mutex_lock(&slots_lock);
	for (s = slots; s != NULL; s = s->next) {
		if (strcmp(s->key, key) == 0)
			break;
	}
	if (s != NULL) {
		s->refs++;
	} else if ((s = calloc(1, sizeof(*s))) != NULL) {
		if ((s->key = strdup(key)) == NULL) {
			free(s);
			s = NULL;
		} else {
			s->refs = 1;
			atomic_init(&s->snap, NULL);
			s->next = slots;
			slots = s;
			slots_live++;
		}
	}
	pthread_mutex_unlock(&slots_lock);
	return s;
}

const char *
acme_slot_name(const struct acme_slot *s)
{
	return s->key;
}

struct acme_slot *
acme_slot_ref(struct acme_slot *s)
{
	if (s != NULL) {
		pthread_mutex_lock(&slots_lock);
		s->refs++;
		pthread_mutex_unlock(&slots_lock);
	}
	return s;
}

void
acme_slot_unref(struct acme_slot *s)
{
	struct acme_slot **pp;
	int last;

	if (s == NULL)
		return;
	pthread_mutex_lock(&slots_lock);
	last = --s->refs == 0;
	if (last) {
		for (pp = &slots; *pp != s; pp = &(*pp)->next)
			;
		*pp = s->next;
		slots_live--;
	}
	pthread_mutex_unlock(&slots_lock);
	if (!last)
		return;
	/* No context refers to the slot any more, so no handshake reads it:
	 * its certificate can go the way any replaced one goes. */
	acme_slot_swap(s, NULL);
	free(s->key);
	free(s);
}

static X509 *
acme_x509(const CRYPTO_BUFFER *b)
{
	const uint8_t *der = CRYPTO_BUFFER_data(b);

	return d2i_X509(NULL, &der, (long)CRYPTO_BUFFER_len(b));
}

/* acme_snap_ocsp fills what stapling needs: the staple slot of the leaf
 * (by the SHA-256 of its DER, as for certificates from files, so both
 * kinds share one fetcher) and, when the leaf names an OCSP responder and
 * its issuer follows it, the leaf, the issuer and the URL. */
static void
acme_snap_ocsp(struct acme_snap *snap)
{
	uint8_t hash[32];

	SHA256(CRYPTO_BUFFER_data(snap->chain[0]),
	    CRYPTO_BUFFER_len(snap->chain[0]), hash);
	snap->staple = staple_slot_get(hash);
	if (snap->num < 2 || (snap->leaf = acme_x509(snap->chain[0])) == NULL ||
	    (snap->ocsp_url = ocsp_responder_url(snap->leaf)) == NULL ||
	    (snap->issuer = acme_x509(snap->chain[1])) == NULL) {
		X509_free(snap->leaf);
		free(snap->ocsp_url);
		snap->leaf = NULL;
		snap->ocsp_url = NULL;
	}
	ERR_clear_error();
}

int
acme_slot_set(struct acme_slot *s, CRYPTO_BUFFER *const *chain,
    size_t num, EVP_PKEY *key, int64_t not_after)
{
	struct acme_snap *snap;

	if (num == 0 || key == NULL)
		return -1;
	snap = calloc(1, sizeof(*snap) + num * sizeof(snap->chain[0]));
	if (snap == NULL)
		return -1;
	for (size_t i = 0; i < num; i++) {
		CRYPTO_BUFFER_up_ref(chain[i]);
		snap->chain[i] = chain[i];
	}
	snap->num = num;
	EVP_PKEY_up_ref(key);
	snap->key = key;
	snap->not_after = not_after;
	acme_snap_ocsp(snap);
	acme_slot_swap(s, snap);
	return 0;
}

int
acme_slot_apply(struct acme_slot *s, SSL *ssl, int staple)
{
	const struct acme_snap *snap;

	/* Valid until this worker's next quiescent point (retire.h); the
	 * connection takes its own references to the buffers and the key. */
	snap = atomic_load_explicit(&s->snap, memory_order_acquire);
	if (snap == NULL)
		return -1;
	if (SSL_set_chain_and_key(ssl, snap->chain, snap->num, snap->key,
	    NULL) != 1)
		return -1;
	if (staple)
		staple_apply(snap->staple, ssl);
	return 0;
}

int
acme_slot_ocsp(struct acme_slot *s, struct staple_slot **staple, X509 **leaf,
    X509 **issuer, char **url)
{
	const struct acme_snap *snap;
	int rc = -1;

	*staple = NULL;
	*leaf = *issuer = NULL;
	*url = NULL;
	pthread_mutex_lock(&slots_lock);
	snap = atomic_load_explicit(&s->snap, memory_order_acquire);
	if (snap != NULL && snap->ocsp_url != NULL &&
	    (*url = strdup(snap->ocsp_url)) != NULL) {
		*staple = staple_slot_ref(snap->staple);
		X509_up_ref(snap->leaf);
		*leaf = snap->leaf;
		X509_up_ref(snap->issuer);
		*issuer = snap->issuer;
		rc = 0;
	}
	pthread_mutex_unlock(&slots_lock);
	return rc;
}

int64_t
acme_slot_not_after(struct acme_slot *s)
{
	const struct acme_snap *snap;
	int64_t t;

	pthread_mutex_lock(&slots_lock);
	snap = atomic_load_explicit(&s->snap, memory_order_acquire);
	t = snap != NULL ? snap->not_after : 0;
	pthread_mutex_unlock(&slots_lock);
	return t;
}

CRYPTO_BUFFER *
acme_slot_leaf(struct acme_slot *s)
{
	const struct acme_snap *snap;

	CRYPTO_BUFFER *leaf = NULL;

	pthread_mutex_lock(&slots_lock);
	snap = atomic_load_explicit(&s->snap, memory_order_acquire);
	if (snap != NULL) {
		CRYPTO_BUFFER_up_ref(snap->chain[0]);
		leaf = snap->chain[0];
	}
	pthread_mutex_unlock(&slots_lock);
	return leaf;
}

size_t
acme_slots_live(void)
{
	size_t n;

	pthread_mutex_lock(&slots_lock);
	n = slots_live;
	pthread_mutex_unlock(&slots_lock);
	return n;
}
