/* acme_share.c: ACME coordination through the session store. */
#include "acme_share.h"

#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <openssl/aead.h>
#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/hkdf.h>
#include <openssl/mem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>

#include "acme_challenge.h"
#include "acme_jose.h"
#include "log.h"
#include "session_store.h"
#include "tickets.h"

/* Each store call gives up after this long. */
#define ACME_SHARE_TIMEOUT_MS 2000
/* Answers left behind by an instance that died go after this long. */
#define ACME_SHARE_ANSWERS_TTL_S 600
/* Certificates are kept in the store this long after the last write. */
#define ACME_SHARE_CERT_TTL_S (400 * 86400)
#define ACME_SHARE_NONCE 12

/* An answer this instance took from the store. */
struct synced {
	struct synced *next;
	char *field; /* "tls:NAME" or "http:TOKEN" */
	char *value;
};

struct acme_share {
	struct store_endpoint ep;
	char *prefix;
	char id[33]; /* this instance, random */
	EVP_AEAD_CTX aead;
	redisContext *rc;
	int was_down;
	struct synced *synced;
};

static int
acme_share_key(struct acme_share *sh, const char *key_file, char *err,
    size_t err_len)
{
	static const char salt[] = "tlsproxy acme shared store";
	static const char info[] = "aes-256-gcm";
	struct ticket_ring ring = { NULL, 0 };
	uint8_t key[32];
	int rc = -1;

	if (tickets_load_file(key_file, &ring, err, err_len) != 0)
		return -1;
	if (ring.num == 0) {
		snprintf(err, err_len, "%s holds no key", key_file);
	} else if (HKDF(key, sizeof(key), EVP_sha256(),
	    (const uint8_t *)&ring.keys[0], sizeof(ring.keys[0]),
	    (const uint8_t *)salt, strlen(salt), (const uint8_t *)info,
	    strlen(info)) != 1 || EVP_AEAD_CTX_init(&sh->aead,
	    EVP_aead_aes_256_gcm(), key, sizeof(key),
	    EVP_AEAD_DEFAULT_TAG_LENGTH, NULL) != 1) {
		snprintf(err, err_len, "cannot derive the key of %s", key_file);
	} else {
		rc = 0;
	}
	OPENSSL_cleanse(key, sizeof(key));
	tickets_ring_free(&ring);
	return rc;
}

struct acme_share *
acme_share_new(const char *url, const char *prefix, const char *key_file,
    char *err, size_t err_len)
{
	struct acme_share *sh = calloc(1, sizeof(*sh));
	uint8_t rnd[16];

	if (sh == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	if (session_store_endpoint(url, &sh->ep, err, err_len) != 0) {
		free(sh);
		return NULL;
	}
	if (acme_share_key(sh, key_file, err, err_len) != 0) {
		session_store_endpoint_free(&sh->ep);
		free(sh);
		return NULL;
	}
	RAND_bytes(rnd, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(sh->id + 2 * i, 3, "%02x", rnd[i]);
	if ((sh->prefix = strdup(prefix != NULL ? prefix : "")) == NULL) {
		acme_share_free(sh);
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	return sh;
}

static void acme_share_apply(const char *field, const char *value);

void
acme_share_forget_answers(struct acme_share *sh)
{
	while (sh->synced != NULL) {
		struct synced *s = sh->synced;

		sh->synced = s->next;
		acme_share_apply(s->field, NULL);
		free(s->field);
		free(s->value);
		free(s);
	}
}

void
acme_share_free(struct acme_share *sh)
{
	if (sh == NULL)
		return;
	acme_share_forget_answers(sh);
	if (sh->rc != NULL)
		redisFree(sh->rc);
	EVP_AEAD_CTX_cleanup(&sh->aead);
	session_store_endpoint_free(&sh->ep);
	free(sh->prefix);
	free(sh);
}

/* acme_share_down drops the link after a failure, logging the outage
 * once. */
static void
acme_share_down(struct acme_share *sh, const char *why)
{
	if (!sh->was_down)
		log_msg(LOGL_WARNING, "acme: session store unavailable (%s): "
		    "instances order on their own until it is back", why);
	sh->was_down = 1;
	if (sh->rc != NULL)
		redisFree(sh->rc);
	sh->rc = NULL;
}

/* acme_share_cmd runs one command (argv form); NULL when the store is
 * down. The caller frees the reply. */
static redisReply *
acme_share_cmd(struct acme_share *sh, int argc, const char **argv,
    const size_t *lens)
{
	const struct timeval tv = { ACME_SHARE_TIMEOUT_MS / 1000,
		(ACME_SHARE_TIMEOUT_MS % 1000) * 1000 };
	redisReply *r;

	if (sh->rc == NULL) {
		sh->rc = sh->ep.unix_path != NULL ?
		    redisConnectUnixWithTimeout(sh->ep.unix_path, tv) :
		    redisConnectWithTimeout(sh->ep.host, sh->ep.port, tv);
		if (sh->rc == NULL || sh->rc->err != 0) {
			acme_share_down(sh, sh->rc != NULL ? sh->rc->errstr :
			    "out of memory");
			return NULL;
		}
		redisSetTimeout(sh->rc, tv);
		if (sh->ep.password != NULL) {
			r = redisCommand(sh->rc, "AUTH %s", sh->ep.password);
			if (r == NULL || r->type == REDIS_REPLY_ERROR) {
				freeReplyObject(r);
				acme_share_down(sh, "AUTH refused");
				return NULL;
			}
			freeReplyObject(r);
		}
		if (sh->ep.db != 0) {
			r = redisCommand(sh->rc, "SELECT %d", sh->ep.db);
			if (r == NULL || r->type == REDIS_REPLY_ERROR) {
				freeReplyObject(r);
				acme_share_down(sh, "SELECT refused");
				return NULL;
			}
			freeReplyObject(r);
		}
	}
	r = redisCommandArgv(sh->rc, argc, argv, lens);
	if (r == NULL) {
		acme_share_down(sh, sh->rc->errstr[0] != '\0' ? sh->rc->errstr :
		    "no answer");
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		log_msg(LOGL_WARNING, "acme: session store: %s: %s", argv[0],
		    r->str);
		freeReplyObject(r);
		return NULL;
	}
	if (sh->was_down)
		log_msg(LOGL_INFO, "acme: session store back: instances "
		    "coordinate again");
	sh->was_down = 0;
	return r;
}

static void
acme_share_name(const struct acme_share *sh, const char *what,
    const char *key, char *buf, size_t len)
{
	snprintf(buf, len, "%sacme:%s:%s", sh->prefix, what, key);
}

enum acme_lock
acme_share_lock(struct acme_share *sh, const char *key, uint64_t ttl_ms)
{
	char name[1200], ttl[32];
	const char *argv[6];
	redisReply *r;
	enum acme_lock st;

	acme_share_name(sh, "lock", key, name, sizeof(name));
	snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
	argv[0] = "SET";
	argv[1] = name;
	argv[2] = sh->id;
	argv[3] = "NX";
	argv[4] = "PX";
	argv[5] = ttl;
	if ((r = acme_share_cmd(sh, 6, argv, NULL)) == NULL)
		return ACME_LOCK_DOWN;
	st = r->type == REDIS_REPLY_STATUS ? ACME_LOCK_TAKEN : ACME_LOCK_BUSY;
	freeReplyObject(r);
	if (st == ACME_LOCK_TAKEN)
		return st;
	/* Ours already (a refresh): extend it, atomically with the check. */
	argv[0] = "EVAL";
	argv[1] = "if redis.call('get', KEYS[1]) == ARGV[1] then "
	    "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
	argv[2] = "1";
	argv[3] = name;
	argv[4] = sh->id;
	argv[5] = ttl;
	if ((r = acme_share_cmd(sh, 6, argv, NULL)) == NULL)
		return ACME_LOCK_DOWN;
	st = r->type == REDIS_REPLY_INTEGER && r->integer == 1 ?
	    ACME_LOCK_TAKEN : ACME_LOCK_BUSY;
	freeReplyObject(r);
	return st;
}

void
acme_share_unlock(struct acme_share *sh, const char *key)
{
	char name[1200];
	const char *argv[5];

	acme_share_name(sh, "lock", key, name, sizeof(name));
	argv[0] = "EVAL";
	argv[1] = "if redis.call('get', KEYS[1]) == ARGV[1] then "
	    "return redis.call('del', KEYS[1]) else return 0 end";
	argv[2] = "1";
	argv[3] = name;
	argv[4] = sh->id;
	freeReplyObject(acme_share_cmd(sh, 5, argv, NULL));
}

/* The stored value: u32 length + chain PEM, then the key (DER, PKCS#8)
 * sealed: nonce || ciphertext || tag, with the order's key as additional
 * data, so a value cannot be moved to another order. */
int
acme_share_put(struct acme_share *sh, const char *key, const char *pem,
    size_t pem_len, EVP_PKEY *pkey)
{
	char name[1200], ttl[32];
	uint8_t *der = NULL, *out = NULL, *sealed;
	size_t der_len = 0, out_len = 0, sealed_len;
	const char *argv[5];
	size_t lens[5];
	CBB cbb;
	redisReply *r;
	int rc = -1;

	if (!CBB_init(&cbb, 0) || !EVP_marshal_private_key(&cbb, pkey) ||
	    !CBB_finish(&cbb, &der, &der_len)) {
		CBB_cleanup(&cbb);
		return -1;
	}
	out_len = 4 + pem_len + ACME_SHARE_NONCE + der_len +
	    EVP_AEAD_max_overhead(EVP_aead_aes_256_gcm());
	if ((out = malloc(out_len)) == NULL)
		goto out;
	out[0] = (uint8_t)(pem_len >> 24);
	out[1] = (uint8_t)(pem_len >> 16);
	out[2] = (uint8_t)(pem_len >> 8);
	out[3] = (uint8_t)pem_len;
	memcpy(out + 4, pem, pem_len);
	sealed = out + 4 + pem_len;
	RAND_bytes(sealed, ACME_SHARE_NONCE);
	if (EVP_AEAD_CTX_seal(&sh->aead, sealed + ACME_SHARE_NONCE, &sealed_len,
	    out_len - 4 - pem_len - ACME_SHARE_NONCE, sealed, ACME_SHARE_NONCE,
	    der, der_len, (const uint8_t *)key, strlen(key)) != 1)
		goto out;
	out_len = 4 + pem_len + ACME_SHARE_NONCE + sealed_len;
	acme_share_name(sh, "cert", key, name, sizeof(name));
	snprintf(ttl, sizeof(ttl), "%d", ACME_SHARE_CERT_TTL_S);
	argv[0] = "SET";
	argv[1] = name;
	argv[2] = (const char *)out;
	argv[3] = "EX";
	argv[4] = ttl;
	lens[0] = 3;
	lens[1] = strlen(name);
	lens[2] = out_len;
	lens[3] = 2;
	lens[4] = strlen(ttl);
	if ((r = acme_share_cmd(sh, 5, argv, lens)) != NULL) {
		rc = 0;
		freeReplyObject(r);
	}
out:
	if (der != NULL)
		OPENSSL_cleanse(der, der_len);
	OPENSSL_free(der);
	free(out);
	return rc;
}

int
acme_share_get(struct acme_share *sh, const char *key, char **pem,
    size_t *pem_len, EVP_PKEY **pkey)
{
	char name[1200];
	const char *argv[2];
	redisReply *r;
	const uint8_t *p;
	uint8_t *der = NULL;
	size_t len, n, der_len = 0;
	CBS cbs;
	int rc = -1;

	*pem = NULL;
	*pkey = NULL;
	acme_share_name(sh, "cert", key, name, sizeof(name));
	argv[0] = "GET";
	argv[1] = name;
	if ((r = acme_share_cmd(sh, 2, argv, NULL)) == NULL)
		return -1;
	if (r->type == REDIS_REPLY_NIL) {
		freeReplyObject(r);
		return 0;
	}
	p = (const uint8_t *)r->str;
	len = r->type == REDIS_REPLY_STRING ? r->len : 0;
	if (len < 4 || (n = (size_t)p[0] << 24 | (size_t)p[1] << 16 |
	    (size_t)p[2] << 8 | p[3]) > len - 4 ||
	    len - 4 - n < ACME_SHARE_NONCE)
		goto bad;
	der = malloc(len);
	if (der == NULL || EVP_AEAD_CTX_open(&sh->aead, der, &der_len, len,
	    p + 4 + n, ACME_SHARE_NONCE, p + 4 + n + ACME_SHARE_NONCE,
	    len - 4 - n - ACME_SHARE_NONCE, (const uint8_t *)key,
	    strlen(key)) != 1)
		goto bad;
	CBS_init(&cbs, der, der_len);
	if ((*pkey = EVP_parse_private_key(&cbs)) == NULL ||
	    (*pem = malloc(n + 1)) == NULL)
		goto bad;
	memcpy(*pem, p + 4, n);
	(*pem)[n] = '\0';
	*pem_len = n;
	rc = 1;
	goto out;
bad:
	log_msg(LOGL_WARNING, "acme: session store: the certificate kept for "
	    "%s cannot be read (another shared_key_file?); ignoring it", key);
	EVP_PKEY_free(*pkey);
	*pkey = NULL;
out:
	if (der != NULL)
		OPENSSL_cleanse(der, len);
	free(der);
	freeReplyObject(r);
	return rc;
}

int
acme_share_set_answer(struct acme_share *sh, const char *kind,
    const char *id, const char *key_authorization)
{
	char name[600], field[600], value[1200], ttl[32];
	const char *argv[4];
	redisReply *r;

	acme_share_name(sh, "answers", "all", name, sizeof(name));
	snprintf(field, sizeof(field), "%s:%s", kind, id);
	/* The owner first: an instance skips what it published itself. */
	snprintf(value, sizeof(value), "%s %s", sh->id, key_authorization);
	argv[0] = "HSET";
	argv[1] = name;
	argv[2] = field;
	argv[3] = value;
	if ((r = acme_share_cmd(sh, 4, argv, NULL)) == NULL)
		return -1;
	freeReplyObject(r);
	snprintf(ttl, sizeof(ttl), "%d", ACME_SHARE_ANSWERS_TTL_S);
	argv[0] = "EXPIRE";
	argv[2] = ttl;
	freeReplyObject(acme_share_cmd(sh, 3, argv, NULL));
	return 0;
}

void
acme_share_clear_answer(struct acme_share *sh, const char *kind,
    const char *id)
{
	char name[600], field[600];
	const char *argv[3];

	acme_share_name(sh, "answers", "all", name, sizeof(name));
	snprintf(field, sizeof(field), "%s:%s", kind, id);
	argv[0] = "HDEL";
	argv[1] = name;
	argv[2] = field;
	freeReplyObject(acme_share_cmd(sh, 3, argv, NULL));
}

/* acme_share_apply installs (|value| not NULL) or removes an answer taken
 * from the store. */
static void
acme_share_apply(const char *field, const char *value)
{
	const char *id = strchr(field, ':') + 1;

	if (strncmp(field, "tls:", 4) == 0) {
		CRYPTO_BUFFER *cert = NULL;
		EVP_PKEY *key = NULL;

		if (value == NULL) {
			acme_challenge_clear_tls(id);
		} else if (acme_alpn_cert(id, value, NULL, &cert, &key) == 0) {
			acme_challenge_set_tls(id, cert, key);
			CRYPTO_BUFFER_free(cert);
			EVP_PKEY_free(key);
		}
	} else if (strncmp(field, "http:", 5) == 0) {
		if (value == NULL)
			acme_challenge_clear_http(id);
		else
			acme_challenge_set_http(id, value);
	}
}

int
acme_share_sync_answers(struct acme_share *sh)
{
	char name[600];
	const char *argv[2];
	redisReply *r;
	struct synced **pp;

	acme_share_name(sh, "answers", "all", name, sizeof(name));
	argv[0] = "HGETALL";
	argv[1] = name;
	if ((r = acme_share_cmd(sh, 2, argv, NULL)) == NULL)
		return -1;
	/* Drop what the store no longer has. */
	for (pp = &sh->synced; *pp != NULL;) {
		struct synced *s = *pp;
		int found = 0;

		for (size_t i = 0; r->type == REDIS_REPLY_ARRAY &&
		    i + 1 < r->elements; i += 2)
			found |= strcmp(r->element[i]->str, s->field) == 0;
		if (found) {
			pp = &s->next;
			continue;
		}
		acme_share_apply(s->field, NULL);
		*pp = s->next;
		free(s->field);
		free(s->value);
		free(s);
	}
	for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements;
	    i += 2) {
		const char *field = r->element[i]->str;
		const char *v = r->element[i + 1]->str;
		const char *sp = v != NULL ? strchr(v, ' ') : NULL;
		struct synced *s;

		if (field == NULL || sp == NULL || strchr(field, ':') == NULL ||
		    strncmp(v, sh->id, strlen(sh->id)) == 0)
			continue;
		for (s = sh->synced; s != NULL; s = s->next)
			if (strcmp(s->field, field) == 0)
				break;
		if (s != NULL && strcmp(s->value, sp + 1) == 0)
			continue;
		if (s == NULL) {
			if ((s = calloc(1, sizeof(*s))) == NULL ||
			    (s->field = strdup(field)) == NULL) {
				free(s);
				continue;
			}
			s->next = sh->synced;
			sh->synced = s;
		}
		free(s->value);
		s->value = strdup(sp + 1);
		if (s->value != NULL)
			acme_share_apply(field, s->value);
	}
	freeReplyObject(r);
	return 0;
}
