/* tls_ctx.c: SSL_CTX building from a [context] section. */
#include "tls_ctx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "log.h"

static BIO *
tls_ctx_open(struct config *cfg, const struct conf_context *cc,
    const char *key, const char *path)
{
	BIO *bio = BIO_new_file(path, "r");

	if (bio == NULL) {
		ERR_clear_error();
		config_error(cfg, config_key_line(&cc->h, key), key,
		    "cannot open '%s': %s", path, strerror(errno));
	}
	return bio;
}

/* tls_ctx_time_str formats an ASN1_TIME for messages. */
static void
tls_ctx_time_str(const ASN1_TIME *t, char *buf, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	const uint8_t *data;
	size_t n;

	snprintf(buf, len, "?");
	if (b == NULL)
		return;
	if (ASN1_TIME_print(b, t) == 1 && BIO_mem_contents(b, &data, &n) == 1)
		snprintf(buf, len, "%.*s", (int)n, (const char *)data);
	BIO_free(b);
}

/* tls_ctx_check_dates warns (never refuses: operators fix this by
 * replacing the file and reloading) about certificates outside their
 * validity period. */
static void
tls_ctx_check_dates(const struct conf_context *cc, const char *path, X509 *x)
{
	char from[64], to[64];
	time_t now = time(NULL);

	if (X509_cmp_time(X509_get0_notAfter(x), &now) < 0 ||
	    X509_cmp_time(X509_get0_notBefore(x), &now) > 0) {
		tls_ctx_time_str(X509_get0_notBefore(x), from, sizeof(from));
		tls_ctx_time_str(X509_get0_notAfter(x), to, sizeof(to));
		log_msg(LOGL_WARNING, "context '%s': certificate '%s' is not "
		    "valid now (valid from %s until %s)", cc->h.name, path, from,
		    to);
	}
}

/* tls_ctx_load_chain reads the PEM chain and checks that each certificate
 * was issued by the next one, so a misordered file fails here and not in
 * clients. */
static STACK_OF(X509) *
tls_ctx_load_chain(struct config *cfg, const struct conf_context *cc)
{
	int line = config_key_line(&cc->h, "cert");
	STACK_OF(X509) *chain;
	char err[128];
	BIO *bio;
	X509 *x;

	if ((bio = tls_ctx_open(cfg, cc, "cert", cc->cert)) == NULL)
		return NULL;
	chain = sk_X509_new_null();
	while (chain != NULL &&
	    (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (sk_X509_push(chain, x) == 0) {
			X509_free(x);
			break;
		}
	}
	BIO_free(bio);
	if (chain == NULL || sk_X509_num(chain) == 0) {
		config_error(cfg, line, "cert", "'%s' holds no PEM certificate "
		    "(%s)", cc->cert, log_ssl_error(err, sizeof(err)));
		sk_X509_pop_free(chain, X509_free);
		return NULL;
	}
	ERR_clear_error(); /* the end-of-file "no start line" */
	for (size_t i = 0; i + 1 < sk_X509_num(chain); i++) {
		if (X509_check_issued(sk_X509_value(chain, i + 1),
		    sk_X509_value(chain, i)) != X509_V_OK) {
			config_error(cfg, line, "cert", "'%s': certificate %zu "
			    "was not issued by certificate %zu; the chain must "
			    "be the leaf first, then each issuer in order",
			    cc->cert, i + 1, i + 2);
			sk_X509_pop_free(chain, X509_free);
			return NULL;
		}
	}
	tls_ctx_check_dates(cc, cc->cert, sk_X509_value(chain, 0));
	return chain;
}

static EVP_PKEY *
tls_ctx_load_key(struct config *cfg, const struct conf_context *cc)
{
	int line = config_key_line(&cc->h, "key");
	char err[128];
	EVP_PKEY *pkey;
	BIO *bio;

	if ((bio = tls_ctx_open(cfg, cc, "key", cc->key)) == NULL)
		return NULL;
	pkey = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (pkey == NULL)
		config_error(cfg, line, "key", "cannot read a PEM private key "
		    "from '%s' (%s)", cc->key, log_ssl_error(err, sizeof(err)));
	return pkey;
}

/* tls_ctx_configure sets what every context shares: versions, server
 * cipher preference, and a session ID context so sessions stay within
 * the context that made them. */
static int
tls_ctx_configure(struct tls_ctx *t)
{
	uint8_t sid[SHA256_DIGEST_LENGTH];
	SSL_CTX *ctx = t->ssl_ctx;

	SHA256((const uint8_t *)t->name, strlen(t->name), sid);
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_session_id_context(ctx, sid,
	    SSL_MAX_SID_CTX_LENGTH) != 1)
		return -1;
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_NO_RENEGOTIATION);
	/* The relay hands SSL_write whatever the backend sent and copes with
	 * partial writes; the buffer may move between retries. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	return 0;
}

int
tls_ctx_init(struct tls_ctx *t, struct config *cfg,
    const struct conf_context *cc)
{
	STACK_OF(X509) *chain = NULL;
	EVP_PKEY *pkey = NULL;
	char err[128];
	int rc = -1;

	memset(t, 0, sizeof(*t));
	if ((t->name = strdup(cc->h.name)) == NULL)
		return -1;
	chain = tls_ctx_load_chain(cfg, cc);
	pkey = tls_ctx_load_key(cfg, cc);
	if (chain == NULL || pkey == NULL)
		goto out;
	if (X509_check_private_key(sk_X509_value(chain, 0), pkey) != 1) {
		ERR_clear_error();
		config_error(cfg, config_key_line(&cc->h, "key"), "key",
		    "private key '%s' does not match the certificate '%s' "
		    "(line %d)", cc->key, cc->cert,
		    config_key_line(&cc->h, "cert"));
		goto out;
	}
	t->ssl_ctx = SSL_CTX_new(TLS_method());
	if (t->ssl_ctx == NULL || tls_ctx_configure(t) != 0 ||
	    SSL_CTX_use_certificate(t->ssl_ctx, sk_X509_value(chain, 0)) != 1 ||
	    SSL_CTX_use_PrivateKey(t->ssl_ctx, pkey) != 1) {
		config_error(cfg, cc->h.line, NULL, "[context %s]: cannot set "
		    "up TLS (%s)", cc->h.name, log_ssl_error(err, sizeof(err)));
		goto out;
	}
	for (size_t i = 1; i < sk_X509_num(chain); i++) {
		if (SSL_CTX_add1_chain_cert(t->ssl_ctx,
		    sk_X509_value(chain, i)) != 1) {
			config_error(cfg, config_key_line(&cc->h, "cert"), "cert",
			    "cannot add chain certificate %zu (%s)", i + 1,
			    log_ssl_error(err, sizeof(err)));
			goto out;
		}
	}
	rc = 0;
out:
	sk_X509_pop_free(chain, X509_free);
	EVP_PKEY_free(pkey);
	if (rc != 0)
		tls_ctx_release(t);
	return rc;
}

void
tls_ctx_release(struct tls_ctx *t)
{
	SSL_CTX_free(t->ssl_ctx);
	free(t->name);
	t->ssl_ctx = NULL;
	t->name = NULL;
}

void
tls_ctx_set_select_cb(struct tls_ctx *t,
    enum ssl_select_cert_result_t (*cb)(const SSL_CLIENT_HELLO *))
{
	SSL_CTX_set_select_certificate_cb(t->ssl_ctx, cb);
}
