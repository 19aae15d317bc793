/* acme_challenge.c: tls-alpn-01 and http-01 answers. */
#include "acme_challenge.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bytestring.h>
#include <openssl/evp.h>
#include <openssl/pool.h>

#include "retire.h"

struct tls_answer {
	char *name;
	CRYPTO_BUFFER *cert;
	EVP_PKEY *key;
};

/* The tls-alpn-01 answers, immutable once published. */
struct tls_table {
	struct retire_node retire;
	size_t num;
	struct tls_answer a[];
};

struct http_answer {
	struct http_answer *next;
	char *token;
	char *key_authorization;
};

/* Writers (the ACME side) take the lock; workers read |tls_answers|
 * without it. */
static pthread_mutex_t answers_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct tls_table *) tls_answers;
static struct http_answer *http_answers;
static size_t num_http;

static pthread_once_t challenge_once = PTHREAD_ONCE_INIT;
static SSL_CTX *challenge_ctx;

static void
acme_tls_table_free(void *arg)
{
	struct tls_table *t = arg;

	for (size_t i = 0; i < t->num; i++) {
		free(t->a[i].name);
		CRYPTO_BUFFER_free(t->a[i].cert);
		EVP_PKEY_free(t->a[i].key);
	}
	free(t);
}

/* acme_tls_table_copy returns a copy of |old| (NULL: empty) without the
 * entry for |skip| and with room for one more; NULL out of memory. */
static struct tls_table *
acme_tls_table_copy(const struct tls_table *old, const char *skip)
{
	size_t n = old != NULL ? old->num : 0;
	struct tls_table *t = calloc(1, sizeof(*t) + (n + 1) * sizeof(t->a[0]));

	if (t == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		const struct tls_answer *a = &old->a[i];

		if (strcasecmp(a->name, skip) == 0)
			continue;
		if ((t->a[t->num].name = strdup(a->name)) == NULL) {
			acme_tls_table_free(t);
			return NULL;
		}
		CRYPTO_BUFFER_up_ref(a->cert);
		t->a[t->num].cert = a->cert;
		EVP_PKEY_up_ref(a->key);
		t->a[t->num].key = a->key;
		t->num++;
	}
	return t;
}

/* acme_tls_table_swap publishes |next| and retires the old table; with
 * answers_lock held. */
static void
acme_tls_table_swap(struct tls_table *next)
{
	struct tls_table *old = atomic_exchange(&tls_answers, next);

	if (old != NULL)
		retire_defer(&old->retire, acme_tls_table_free, old);
}

int
acme_challenge_set_tls(const char *name, CRYPTO_BUFFER *cert, EVP_PKEY *key)
{
	struct tls_table *t;
	int rc = -1;

	pthread_mutex_lock(&answers_lock);
	t = acme_tls_table_copy(atomic_load(&tls_answers), name);
	if (t != NULL && (t->a[t->num].name = strdup(name)) != NULL) {
		CRYPTO_BUFFER_up_ref(cert);
		t->a[t->num].cert = cert;
		EVP_PKEY_up_ref(key);
		t->a[t->num].key = key;
		t->num++;
		acme_tls_table_swap(t);
		rc = 0;
	} else if (t != NULL) {
		acme_tls_table_free(t);
	}
	pthread_mutex_unlock(&answers_lock);
	return rc;
}

void
acme_challenge_clear_tls(const char *name)
{
	struct tls_table *t;

	pthread_mutex_lock(&answers_lock);
	t = acme_tls_table_copy(atomic_load(&tls_answers), name);
	/* Out of memory, the answer stays until the next change: the CA
	 * asks only while the challenge is pending anyway. */
	if (t != NULL)
		acme_tls_table_swap(t);
	pthread_mutex_unlock(&answers_lock);
}

/* acme_challenge_alpn selects acme-tls/1, the only protocol a challenge
 * handshake may negotiate. */
static int
acme_challenge_alpn(SSL *ssl, const uint8_t **out, uint8_t *out_len,
    const uint8_t *in, unsigned in_len, void *arg)
{
	CBS list, proto;

	(void)ssl;
	(void)arg;
	CBS_init(&list, in, in_len);
	while (CBS_get_u8_length_prefixed(&list, &proto)) {
		if (CBS_mem_equal(&proto, (const uint8_t *)ACME_TLS_ALPN,
		    strlen(ACME_TLS_ALPN))) {
			*out = CBS_data(&proto);
			*out_len = (uint8_t)CBS_len(&proto);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static void
acme_challenge_ctx_init(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());

	if (ctx == NULL)
		return;
	/* RFC 8737: TLS 1.2 or later, and no resumption, so every
	 * validation sees the certificate. */
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		SSL_CTX_free(ctx);
		return;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_alpn_select_cb(ctx, acme_challenge_alpn, NULL);
	challenge_ctx = ctx;
}

/* acme_challenge_offered returns whether a ClientHello offers
 * acme-tls/1. */
static int
acme_challenge_offered(const SSL_CLIENT_HELLO *hello)
{
	const uint8_t *data;
	size_t len;
	CBS ext, list, proto;

	if (!SSL_early_callback_ctx_extension_get(hello,
	    TLSEXT_TYPE_application_layer_protocol_negotiation, &data, &len))
		return 0;
	CBS_init(&ext, data, len);
	if (!CBS_get_u16_length_prefixed(&ext, &list))
		return 0;
	while (CBS_get_u8_length_prefixed(&list, &proto)) {
		if (CBS_mem_equal(&proto, (const uint8_t *)ACME_TLS_ALPN,
		    strlen(ACME_TLS_ALPN)))
			return 1;
	}
	return 0;
}

enum acme_hello
acme_challenge_hello(const SSL_CLIENT_HELLO *hello, const char *sni)
{
	const struct tls_table *t;
	SSL *ssl = hello->ssl;

	if (!acme_challenge_offered(hello))
		return ACME_HELLO_NONE;
	if (sni == NULL)
		return ACME_HELLO_REFUSE;
	pthread_once(&challenge_once, acme_challenge_ctx_init);
	/* Valid until this worker's next quiescent point (retire.h); the
	 * connection takes its own references. */
	t = atomic_load_explicit(&tls_answers, memory_order_acquire);
	for (size_t i = 0; t != NULL && i < t->num; i++) {
		const struct tls_answer *a = &t->a[i];

		if (strcasecmp(a->name, sni) != 0)
			continue;
		if (challenge_ctx == NULL ||
		    SSL_set_SSL_CTX(ssl, challenge_ctx) == NULL ||
		    SSL_set_chain_and_key(ssl, &a->cert, 1, a->key, NULL) != 1)
			return ACME_HELLO_REFUSE;
		/* The listener's context may ask clients for certificates;
		 * the CA's validator has none to give. */
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
		return ACME_HELLO_ANSWER;
	}
	return ACME_HELLO_REFUSE;
}

int
acme_challenge_set_http(const char *token, const char *key_authorization)
{
	struct http_answer *a;
	char *ka = strdup(key_authorization);

	if (ka == NULL)
		return -1;
	pthread_mutex_lock(&answers_lock);
	for (a = http_answers; a != NULL; a = a->next) {
		if (strcmp(a->token, token) == 0)
			break;
	}
	if (a == NULL && (a = calloc(1, sizeof(*a))) != NULL) {
		if ((a->token = strdup(token)) == NULL) {
			free(a);
			a = NULL;
		} else {
			a->next = http_answers;
			http_answers = a;
			num_http++;
		}
	}
	if (a != NULL) {
		free(a->key_authorization);
		a->key_authorization = ka;
		ka = NULL;
	}
	pthread_mutex_unlock(&answers_lock);
	free(ka);
	return a != NULL ? 0 : -1;
}

void
acme_challenge_clear_http(const char *token)
{
	struct http_answer **pp, *a = NULL;

	pthread_mutex_lock(&answers_lock);
	for (pp = &http_answers; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->token, token) == 0) {
			a = *pp;
			*pp = a->next;
			num_http--;
			break;
		}
	}
	pthread_mutex_unlock(&answers_lock);
	if (a != NULL) {
		free(a->token);
		free(a->key_authorization);
		free(a);
	}
}

char *
acme_challenge_http(const char *token)
{
	char *ka = NULL;

	pthread_mutex_lock(&answers_lock);
	for (const struct http_answer *a = http_answers; a != NULL; a = a->next) {
		if (strcmp(a->token, token) == 0) {
			ka = strdup(a->key_authorization);
			break;
		}
	}
	pthread_mutex_unlock(&answers_lock);
	return ka;
}

void
acme_challenge_count(size_t *out_tls, size_t *out_http)
{
	const struct tls_table *t;

	pthread_mutex_lock(&answers_lock);
	t = atomic_load(&tls_answers);
	*out_tls = t != NULL ? t->num : 0;
	*out_http = num_http;
	pthread_mutex_unlock(&answers_lock);
}
