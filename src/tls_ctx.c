/* tls_ctx.c: SSL_CTX building from a [context] section, and switching a
 * connection to a context during its ClientHello. */
#include "tls_ctx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/pkcs8.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme_cert.h"
#include "config.h"
#include "log.h"
#include "ocsp.h"
#include "staple.h"
#include "session_cache.h"
#include "tickets.h"

/* Post-quantum first where the library has it: a client that offers
 * X25519MLKEM768 gets it, every other one keeps the classical tier. */
#ifdef SSL_GROUP_X25519_MLKEM768
#define TLS_DEFAULT_GROUPS "X25519MLKEM768/X25519:P-256:P-384"
#else
#define TLS_DEFAULT_GROUPS "X25519:P-256:P-384"
#endif

/* The groups ecdh_curve may name. |nid| serves BoringSSL releases
 * without SSL_set1_group_ids, which take NIDs. */
static const struct tls_group {
	const char *name;
	uint16_t id;
	int nid;
	int tls13_only;
} tls_groups[] = {
#ifdef SSL_GROUP_X25519_MLKEM768
	{ "X25519MLKEM768", SSL_GROUP_X25519_MLKEM768, NID_undef, 1 },
#endif
	{ "X25519", SSL_CURVE_X25519, NID_X25519, 0 },
	{ "P-256", SSL_CURVE_SECP256R1, NID_X9_62_prime256v1, 0 },
	{ "prime256v1", SSL_CURVE_SECP256R1, NID_X9_62_prime256v1, 0 },
	{ "P-384", SSL_CURVE_SECP384R1, NID_secp384r1, 0 },
	{ "secp384r1", SSL_CURVE_SECP384R1, NID_secp384r1, 0 },
	{ "P-521", SSL_CURVE_SECP521R1, NID_secp521r1, 0 },
	{ "secp521r1", SSL_CURVE_SECP521R1, NID_secp521r1, 0 },
};

#define TLS_NUM_GROUPS (sizeof(tls_groups) / sizeof(tls_groups[0]))

/* Key material of one certificate: a chain and its key. */
struct tls_pair {
	STACK_OF(X509) *chain; /* leaf first */
	EVP_PKEY *pkey;
	int line; /* of the cert (or pfx) key, for messages */
};

static void
tls_pair_free(struct tls_pair *p)
{
	sk_X509_pop_free(p->chain, X509_free);
	EVP_PKEY_free(p->pkey);
	p->chain = NULL;
	p->pkey = NULL;
}

static BIO *
tls_ctx_open(struct config *cfg, int line, const char *key, const char *path)
{
	BIO *bio = BIO_new_file(path, "r");

	if (bio == NULL) {
		ERR_clear_error();
		config_error(cfg, line, key, "cannot open '%s': %s", path,
		    strerror(errno));
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

/* tls_ctx_check_order checks that each certificate was issued by the next
 * one, so a misordered file fails here and not in clients. */
static int
tls_ctx_check_order(struct config *cfg, int line, const char *key,
    const char *path, STACK_OF(X509) *chain)
{
	for (size_t i = 0; i + 1 < sk_X509_num(chain); i++) {
		if (X509_check_issued(sk_X509_value(chain, i + 1),
		    sk_X509_value(chain, i)) != X509_V_OK) {
			config_error(cfg, line, key, "'%s': certificate %zu was "
			    "not issued by certificate %zu; the chain must be the "
			    "leaf first, then each issuer in order", path, i + 1,
			    i + 2);
			return -1;
		}
	}
	return 0;
}

static STACK_OF(X509) *
tls_ctx_load_chain(struct config *cfg, const struct conf_context *cc,
    size_t i)
{
	STACK_OF(X509) *chain = tls_ctx_read_chain(cfg, cc->cert.lines[i],
	    "cert", cc->cert.v[i]);

	if (chain != NULL)
		tls_ctx_check_dates(cc, cc->cert.v[i], sk_X509_value(chain, 0));
	return chain;
}

STACK_OF(X509) *
tls_ctx_read_chain(struct config *cfg, int line, const char *key,
    const char *path)
{
	STACK_OF(X509) *chain;
	char err[128];
	BIO *bio;
	X509 *x;

	if ((bio = tls_ctx_open(cfg, line, key, path)) == NULL)
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
		config_error(cfg, line, key, "'%s' holds no PEM certificate "
		    "(%s)", path, log_ssl_error(err, sizeof(err)));
		sk_X509_pop_free(chain, X509_free);
		return NULL;
	}
	ERR_clear_error(); /* the end-of-file "no start line" */
	if (tls_ctx_check_order(cfg, line, key, path, chain) != 0) {
		sk_X509_pop_free(chain, X509_free);
		return NULL;
	}
	return chain;
}

/* tls_ctx_passphrase returns the context's passphrase (from the config or
 * the first line of passphrase_file) in |buf|, or NULL if none is set;
 * |*failed| is set when the file cannot be read. */
static const char *
tls_ctx_passphrase(struct config *cfg, const struct conf_context *cc,
    char *buf, size_t len, int *failed)
{
	*failed = 0;
	if (cc->passphrase != NULL)
		return cc->passphrase;
	return tls_ctx_read_passphrase(cfg, config_key_line(&cc->h,
	    "passphrase_file"), "passphrase_file", cc->passphrase_file, buf, len,
	    failed);
}

const char *
tls_ctx_read_passphrase(struct config *cfg, int line, const char *key,
    const char *path, char *buf, size_t len, int *failed)
{
	FILE *f;

	*failed = 0;
	if (path == NULL)
		return NULL;
	f = fopen(path, "re");
	if (f == NULL || fgets(buf, (int)len, f) == NULL) {
		config_error(cfg, line, key, "cannot read '%s': %s", path,
		    f == NULL ? strerror(errno) : "empty file");
		if (f != NULL)
			fclose(f);
		*failed = 1;
		return NULL;
	}
	fclose(f);
	buf[strcspn(buf, "\r\n")] = '\0';
	return buf;
}

struct tls_pw {
	const char *pass;
	int asked;
};

static int
tls_ctx_pw_cb(char *buf, int size, int rwflag, void *arg)
{
	struct tls_pw *pw = arg;
	size_t len;

	(void)rwflag;
	pw->asked = 1;
	if (pw->pass == NULL)
		return -1;
	len = strlen(pw->pass);
	if (len > (size_t)size)
		len = (size_t)size;
	memcpy(buf, pw->pass, len);
	return (int)len;
}

static EVP_PKEY *
tls_ctx_load_key(struct config *cfg, const struct conf_context *cc, size_t i,
    const char *pass)
{
	return tls_ctx_read_key(cfg, cc->key.lines[i], "key", cc->key.v[i],
	    pass, "passphrase or passphrase_file");
}

EVP_PKEY *
tls_ctx_read_key(struct config *cfg, int line, const char *key,
    const char *path, const char *pass, const char *pass_keys)
{
	struct tls_pw pw = { pass, 0 };
	char err[128];
	EVP_PKEY *pkey;
	BIO *bio;

	if ((bio = tls_ctx_open(cfg, line, key, path)) == NULL)
		return NULL;
	pkey = PEM_read_bio_PrivateKey(bio, NULL, tls_ctx_pw_cb, &pw);
	BIO_free(bio);
	if (pkey != NULL)
		return pkey;
	if (pw.asked && pass == NULL)
		config_error(cfg, line, key, "'%s' is encrypted: set %s", path,
		    pass_keys);
	else if (pw.asked)
		config_error(cfg, line, key, "cannot decrypt '%s': wrong "
		    "passphrase?", path);
	else
		config_error(cfg, line, key, "cannot read a PEM private key "
		    "from '%s' (%s)", path, log_ssl_error(err, sizeof(err)));
	ERR_clear_error();
	return NULL;
}

static int
tls_ctx_load_pfx(struct config *cfg, const struct conf_context *cc,
    const char *pass, struct tls_pair *out)
{
	int line = config_key_line(&cc->h, "pfx");

	out->line = line;
	if (tls_ctx_read_pfx(cfg, line, "pfx", cc->pfx, pass,
	    "passphrase or passphrase_file", &out->pkey, &out->chain) != 0)
		return -1;
	tls_ctx_check_dates(cc, cc->pfx, sk_X509_value(out->chain, 0));
	return 0;
}

int
tls_ctx_read_pfx(struct config *cfg, int line, const char *key,
    const char *path, const char *pass, const char *pass_keys,
    EVP_PKEY **out_key, STACK_OF(X509) **out_chain)
{
	STACK_OF(X509) *extra = NULL;
	X509 *leaf = NULL;
	PKCS12 *p12;
	char err[128];
	BIO *bio;

	*out_key = NULL;
	*out_chain = NULL;
	if ((bio = tls_ctx_open(cfg, line, key, path)) == NULL)
		return -1;
	p12 = d2i_PKCS12_bio(bio, NULL);
	BIO_free(bio);
	if (p12 == NULL) {
		config_error(cfg, line, key, "'%s' is not a PKCS#12 file (%s)",
		    path, log_ssl_error(err, sizeof(err)));
		return -1;
	}
	if (PKCS12_parse(p12, pass != NULL ? pass : "", out_key, &leaf,
	    &extra) != 1) {
		config_error(cfg, line, key, "cannot open '%s': %s%s", path,
		    pass == NULL ? "set " : "", pass == NULL ? pass_keys :
		    "wrong passphrase?");
		ERR_clear_error();
		PKCS12_free(p12);
		return -1;
	}
	PKCS12_free(p12);
	*out_chain = sk_X509_new_null();
	if (leaf == NULL || *out_key == NULL || *out_chain == NULL ||
	    sk_X509_push(*out_chain, leaf) == 0) {
		config_error(cfg, line, key, "'%s' holds no certificate with "
		    "its key", path);
		X509_free(leaf);
		sk_X509_pop_free(extra, X509_free);
		return -1;
	}
	while (extra != NULL && sk_X509_num(extra) > 0)
		sk_X509_push(*out_chain, sk_X509_shift(extra));
	sk_X509_free(extra);
	return tls_ctx_check_order(cfg, line, key, path, *out_chain);
}

static enum tls_key_type
tls_pair_type(const struct tls_pair *p)
{
	return EVP_PKEY_id(p->pkey) == EVP_PKEY_EC ? TLS_KEY_ECDSA : TLS_KEY_RSA;
}

/* tls_ctx_load_pairs reads every cert/key pair and the pfx into |pairs|
 * (indexed by key type). Returns 0 or -1. */
static int
tls_ctx_load_pairs(struct config *cfg, const struct conf_context *cc,
    struct tls_pair pairs[TLS_KEY_NUM])
{
	char buf[1024];
	const char *pass;
	int failed, rc = 0;

	pass = tls_ctx_passphrase(cfg, cc, buf, sizeof(buf), &failed);
	if (failed)
		return -1;
	for (size_t i = 0; i <= cc->cert.num; i++) {
		struct tls_pair p = { NULL, NULL, 0 };
		enum tls_key_type kt;

		if (i == cc->cert.num) {
			if (cc->pfx == NULL || tls_ctx_load_pfx(cfg, cc, pass, &p) != 0) {
				tls_pair_free(&p);
				rc = cc->pfx == NULL ? rc : -1;
				break;
			}
		} else {
			p.chain = tls_ctx_load_chain(cfg, cc, i);
			p.pkey = tls_ctx_load_key(cfg, cc, i, pass);
			p.line = cc->cert.lines[i];
			if (p.chain == NULL || p.pkey == NULL) {
				tls_pair_free(&p);
				rc = -1;
				continue;
			}
			if (X509_check_private_key(sk_X509_value(p.chain, 0),
			    p.pkey) != 1) {
				ERR_clear_error();
				config_error(cfg, cc->key.lines[i], "key", "private "
				    "key '%s' does not match the certificate '%s' "
				    "(line %d)", cc->key.v[i], cc->cert.v[i],
				    cc->cert.lines[i]);
				tls_pair_free(&p);
				rc = -1;
				continue;
			}
		}
		if (EVP_PKEY_id(p.pkey) != EVP_PKEY_RSA &&
		    EVP_PKEY_id(p.pkey) != EVP_PKEY_EC) {
			config_error(cfg, p.line, i == cc->cert.num ? "pfx" : "key",
			    "unsupported key type: use an RSA or ECDSA key");
			tls_pair_free(&p);
			rc = -1;
			continue;
		}
		kt = tls_pair_type(&p);
		if (pairs[kt].pkey != NULL) {
			config_error(cfg, p.line, i == cc->cert.num ? "pfx" : "cert",
			    "a second %s certificate in [context %s] (the first is "
			    "at line %d); a context holds one RSA and one ECDSA "
			    "certificate at most", kt == TLS_KEY_RSA ? "RSA" :
			    "ECDSA", cc->h.name, pairs[kt].line);
			tls_pair_free(&p);
			rc = -1;
			continue;
		}
		pairs[kt] = p;
	}
	return rc;
}

static const struct tls_group *
tls_ctx_group_by_id(uint16_t id)
{
	for (size_t k = 0; k < TLS_NUM_GROUPS; k++) {
		if (tls_groups[k].id == id)
			return &tls_groups[k];
	}
	return NULL;
}

const char *
tls_ctx_group_name(uint16_t id)
{
	const struct tls_group *g = tls_ctx_group_by_id(id);

	return g != NULL ? g->name : NULL;
}

#ifndef SSL_GROUP_X25519_MLKEM768
/* tls_ctx_group_nids maps group IDs to the NIDs older BoringSSL releases
 * take. Returns 0, or -1 if there are too many. */
static int
tls_ctx_group_nids(const uint16_t *ids, size_t num, int *nids)
{
	if (num > TLS_NUM_GROUPS)
		return -1;
	for (size_t i = 0; i < num; i++)
		nids[i] = tls_ctx_group_by_id(ids[i])->nid;
	return 0;
}
#endif

/* tls_ctx_set_ctx_groups and tls_ctx_set_ssl_groups install a list of
 * group IDs. */
static int
tls_ctx_set_ctx_groups(SSL_CTX *ctx, const uint16_t *ids, size_t num)
{
#ifdef SSL_GROUP_X25519_MLKEM768
	return SSL_CTX_set1_group_ids(ctx, ids, num);
#else
	int nids[TLS_NUM_GROUPS];

	return tls_ctx_group_nids(ids, num, nids) == 0 &&
	    SSL_CTX_set1_curves(ctx, nids, num);
#endif
}

static int
tls_ctx_set_ssl_groups(SSL *ssl, const uint16_t *ids, size_t num)
{
#ifdef SSL_GROUP_X25519_MLKEM768
	return SSL_set1_group_ids(ssl, ids, num);
#else
	int nids[TLS_NUM_GROUPS];

	return tls_ctx_group_nids(ids, num, nids) == 0 &&
	    SSL_set1_curves(ssl, nids, num);
#endif
}

/* tls_ctx_groups turns an ecdh_curve list into group IDs, each with its
 * tier: OpenSSL's syntax, '/' between tiers, ':' within one. */
static int
tls_ctx_groups(struct tls_ctx *t, struct config *cfg,
    const struct conf_context *cc, const char *list)
{
	int line = config_tls_line(cfg, t->cl, cc, "ecdh_curve");
	char *copy = strdup(list), *tsave = NULL, *save = NULL, *tier, *tok;
	uint8_t num_tiers = 0;
	int rc = 0;

	if (copy == NULL)
		return -1;
	if (list[0] == '/' || (list[0] != '\0' && list[strlen(list) - 1] == '/') ||
	    strstr(list, "//") != NULL) {
		config_error(cfg, line, "ecdh_curve", "empty tier in '%s'", list);
		rc = -1;
	}
	for (tier = strtok_r(copy, "/", &tsave); tier != NULL;
	    tier = strtok_r(NULL, "/", &tsave), num_tiers++) {
		for (tok = strtok_r(tier, ":", &save); tok != NULL;
		    tok = strtok_r(NULL, ":", &save)) {
			size_t k, i;

			for (k = 0; k < TLS_NUM_GROUPS; k++) {
				if (strcasecmp(tok, tls_groups[k].name) == 0)
					break;
			}
			if (k == TLS_NUM_GROUPS) {
				if (strcasecmp(tok, "X25519MLKEM768") == 0)
					config_error(cfg, line, "ecdh_curve",
					    "X25519MLKEM768 needs a BoringSSL "
					    "with ML-KEM; this one has none "
					    "(tlsproxy -V)");
				else
					config_error(cfg, line, "ecdh_curve",
					    "unknown group '%s' (see tlsproxy "
					    "--list-curves)", tok);
				rc = -1;
				continue;
			}
			for (i = 0; i < t->num_groups; i++) {
				if (t->groups[i] == tls_groups[k].id)
					break;
			}
			if (i < t->num_groups) {
				config_error(cfg, line, "ecdh_curve", "group '%s' "
				    "named twice", tok);
				rc = -1;
				continue;
			}
			if (t->num_groups == sizeof(t->groups) / sizeof(t->groups[0])) {
				rc = -1;
				break;
			}
			t->groups[t->num_groups] = tls_groups[k].id;
			t->group_tier[t->num_groups++] = num_tiers;
		}
	}
	free(copy);
	if (rc == 0 && t->num_groups == 0) {
		config_error(cfg, line, "ecdh_curve", "no group given");
		rc = -1;
	}
	return rc;
}

/* tls_ctx_wire builds an ALPN/NPN wire list (length-prefixed names). */
static int
tls_ctx_wire(struct config *cfg, int line, const char *key,
    const struct strlist *l, uint8_t **out, size_t *out_len)
{
	size_t len = 0;
	uint8_t *w;

	for (size_t i = 0; i < l->num; i++) {
		if (strlen(l->v[i]) > 255) {
			config_error(cfg, line, key, "protocol name longer than "
			    "255 bytes");
			return -1;
		}
		len += 1 + strlen(l->v[i]);
	}
	if (len == 0)
		return 0;
	if ((w = malloc(len)) == NULL)
		return -1;
	*out = w;
	*out_len = len;
	for (size_t i = 0; i < l->num; i++) {
		size_t n = strlen(l->v[i]);

		*w++ = (uint8_t)n;
		memcpy(w, l->v[i], n);
		w += n;
	}
	return 0;
}

/* tls_ctx_alpn_cb picks the first of our protocols the client offers:
 * server preference, as for cipher suites. */
static int
tls_ctx_alpn_cb(SSL *ssl, const uint8_t **out, uint8_t *out_len,
    const uint8_t *in, unsigned in_len, void *arg)
{
	const struct tls_ctx *t = arg;
	CBS ours, theirs, p, q;

	(void)ssl;
	CBS_init(&ours, t->alpn, t->alpn_len);
	while (CBS_get_u8_length_prefixed(&ours, &p)) {
		CBS_init(&theirs, in, in_len);
		while (CBS_get_u8_length_prefixed(&theirs, &q)) {
			if (CBS_len(&p) == CBS_len(&q) &&
			    memcmp(CBS_data(&p), CBS_data(&q), CBS_len(&p)) == 0) {
				*out = CBS_data(&q);
				*out_len = (uint8_t)CBS_len(&q);
				return SSL_TLSEXT_ERR_OK;
			}
		}
	}
	return t->alpn_strict ? SSL_TLSEXT_ERR_ALERT_FATAL : SSL_TLSEXT_ERR_NOACK;
}

static int
tls_ctx_npn_cb(SSL *ssl, const uint8_t **out, unsigned *out_len, void *arg)
{
	const struct tls_ctx *t = arg;

	(void)ssl;
	*out = t->npn;
	*out_len = (unsigned)t->npn_len;
	return SSL_TLSEXT_ERR_OK;
}

/* tls_ctx_verify_any lets every client certificate through while the
 * verification result is still recorded (reject_unauthorized = no). */
static int
tls_ctx_verify_any(int ok, X509_STORE_CTX *store)
{
	(void)ok;
	(void)store;
	return 1;
}

static int
tls_ctx_read_file(struct config *cfg, int line, const char *key,
    const char *path, uint8_t **out, size_t *out_len)
{
	uint8_t *data = NULL;
	size_t len = 0;
	FILE *f = fopen(path, "rbe");

	if (f == NULL) {
		config_error(cfg, line, key, "cannot open '%s': %s", path,
		    strerror(errno));
		return -1;
	}
	for (;;) {
		uint8_t *n = realloc(data, len + 4096);
		size_t r;

		if (n == NULL) {
			free(data);
			fclose(f);
			return -1;
		}
		data = n;
		r = fread(data + len, 1, 4096, f);
		len += r;
		if (r < 4096)
			break;
	}
	fclose(f);
	*out = data;
	*out_len = len;
	return 0;
}

/* tls_ctx_client_auth loads the client CAs and CRLs into |ctx|. */
static int
tls_ctx_client_auth(struct config *cfg, const struct conf_context *cc,
    SSL_CTX *ctx)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	STACK_OF(X509_NAME) *names;
	char err[128];

	if (cc->ca == NULL)
		return 0;
	if (SSL_CTX_load_verify_locations(ctx, cc->ca, NULL) != 1 ||
	    (names = SSL_load_client_CA_file(cc->ca)) == NULL) {
		config_error(cfg, config_key_line(&cc->h, "ca"), "ca", "cannot "
		    "load CA certificates from '%s' (%s)", cc->ca,
		    errno != 0 ? strerror(errno) : log_ssl_error(err, sizeof(err)));
		ERR_clear_error();
		return -1;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	return tls_ctx_load_crls(cfg, "crl", &cc->crl, store);
}

int
tls_ctx_load_crls(struct config *cfg, const char *key,
    const struct strlist *files, X509_STORE *store)
{
	for (size_t i = 0; i < files->num; i++) {
		BIO *bio = tls_ctx_open(cfg, files->lines[i], key, files->v[i]);
		X509_CRL *crl;
		int n = 0;

		if (bio == NULL)
			return -1;
		while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
			X509_STORE_add_crl(store, crl);
			X509_CRL_free(crl);
			n++;
		}
		BIO_free(bio);
		ERR_clear_error();
		if (n == 0) {
			config_error(cfg, files->lines[i], key, "'%s' holds no PEM "
			    "CRL", files->v[i]);
			return -1;
		}
	}
	if (files->num > 0)
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK |
		    X509_V_FLAG_CRL_CHECK_ALL);
	return 0;
}

/* tls_ctx_hash_file adds a file's contents (not its name: a replaced CA
 * file must change the result) to |sha|. */
static void
tls_ctx_hash_file(SHA256_CTX *sha, const char *path)
{
	uint8_t buf[4096];
	size_t n;
	FILE *f = fopen(path, "rbe");

	if (f == NULL)
		return;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		SHA256_Update(sha, buf, n);
	fclose(f);
}

/* tls_ctx_sid_ctx derives the session ID context: sessions resume only
 * under the same value. It covers what decides whether a client is let in
 * (certificates, CAs, CRLs, verification settings), so a session made
 * before those changed, or under another context, never skips them; it is
 * stable across reloads and across instances loading the same files. */
static void
tls_ctx_sid_ctx(const struct conf_context *cc, uint8_t out[SHA256_DIGEST_LENGTH])
{
	SHA256_CTX sha;
	char flags[64];

	SHA256_Init(&sha);
	if (cc->session_id_context != NULL) {
		SHA256_Update(&sha, cc->session_id_context,
		    strlen(cc->session_id_context));
		SHA256_Final(out, &sha);
		return;
	}
	SHA256_Update(&sha, cc->h.name, strlen(cc->h.name) + 1);
	snprintf(flags, sizeof(flags), "%d/%d/%d/%d", (int)cc->request_cert,
	    (int)cc->reject_unauthorized, (int)cc->require_cert,
	    (int)cc->verify_depth);
	SHA256_Update(&sha, flags, strlen(flags) + 1);
	if (cc->ca != NULL)
		tls_ctx_hash_file(&sha, cc->ca);
	for (size_t i = 0; i < cc->crl.num; i++)
		tls_ctx_hash_file(&sha, cc->crl.v[i]);
	for (size_t i = 0; i < cc->cert.num; i++)
		tls_ctx_hash_file(&sha, cc->cert.v[i]);
	if (cc->pfx != NULL)
		tls_ctx_hash_file(&sha, cc->pfx);
	SHA256_Final(out, &sha);
}

/* tls_ctx_check_ciphers reports a bad cipher list before any file is
 * read, so it shows up in the same run as other errors. */
static int
tls_ctx_check_ciphers(const struct tls_ctx *t, struct config *cfg,
    const struct conf_context *cc, const char *ciphers)
{
	SSL_CTX *probe = SSL_CTX_new(TLS_method());
	char err[128];
	int ok;

	if (probe == NULL)
		return -1;
	ok = SSL_CTX_set_strict_cipher_list(probe, ciphers) == 1;
	SSL_CTX_free(probe);
	if (!ok)
		config_error(cfg, config_tls_line(cfg, t->cl, cc, "ciphers"), "ciphers",
		    "'%s' is not a valid cipher list (%s)", ciphers,
		    log_ssl_error(err, sizeof(err)));
	return ok ? 0 : -1;
}

/* tls_ctx_settings fills the per-connection settings of |t|. */
static int
tls_ctx_settings(struct tls_ctx *t, struct config *cfg,
    const struct conf_context *cc, const struct conf_tls *tls)
{
	const char *curves = strcasecmp(tls->ecdh_curve, "auto") == 0 ?
	    TLS_DEFAULT_GROUPS : tls->ecdh_curve;
	int rc = 0;

	t->min_version = (uint16_t)config_version(tls->min_version);
	t->max_version = (uint16_t)config_version(tls->max_version);
	if (t->min_version > t->max_version) {
		config_error(cfg, config_tls_line(cfg, t->cl, cc, "min_version"),
		    "min_version", "%s is newer than max_version %s",
		    tls->min_version, tls->max_version);
		rc = -1;
	}
	if (t->min_version < TLS1_2_VERSION && (config_key_set(&cc->h,
	    "min_version") || (t->cl != NULL && config_key_set(&t->cl->h,
	    "min_version"))))
		log_msg(LOGL_WARNING, "context '%s': min_version %s allows "
		    "protocol versions with known weaknesses", cc->h.name,
		    tls->min_version);
	t->server_preference = tls->honor_cipher_order != 0;
	t->max_send_fragment = (uint16_t)tls->max_send_fragment;
	t->alpn_strict = tls->alpn_strict != 0;
	if (cc->request_cert) {
		t->verify_mode = SSL_VERIFY_PEER;
		if (cc->reject_unauthorized && cc->require_cert)
			t->verify_mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	}
	t->verify_depth = (int)cc->verify_depth;
	t->reject_unauthorized = cc->reject_unauthorized != 0;
	if (tls_ctx_groups(t, cfg, cc, curves) != 0 ||
	    tls_ctx_check_ciphers(t, cfg, cc, tls->ciphers) != 0)
		rc = -1;
	if (tls_ctx_wire(cfg, config_tls_line(cfg, t->cl, cc, "alpn"), "alpn",
	    &tls->alpn, &t->alpn, &t->alpn_len) != 0 ||
	    tls_ctx_wire(cfg, config_key_line(&cc->h, "npn"), "npn", &cc->npn,
	    &t->npn, &t->npn_len) != 0)
		rc = -1;
	return rc;
}

/* tls_ctx_build_one makes the SSL_CTX for one key pair. */
static SSL_CTX *
tls_ctx_build_one(struct tls_ctx *t, struct config *cfg,
    const struct conf_context *cc, const struct conf_tls *tls,
    const struct tls_pair *p, const uint8_t *sct, size_t sct_len)
{
	uint8_t sid[SHA256_DIGEST_LENGTH];
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	char err[128];

	if (ctx == NULL)
		return NULL;
	if (SSL_CTX_set_strict_cipher_list(ctx, tls->ciphers) != 1)
		goto fail; /* reported by tls_ctx_check_ciphers */
	tls_ctx_sid_ctx(cc, sid);
	if (SSL_CTX_set_min_proto_version(ctx, t->min_version) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, t->max_version) != 1 ||
	    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid)) != 1 ||
	    tls_ctx_set_ctx_groups(ctx, t->groups, t->num_groups) != 1)
		goto fail_ssl;
	/* Without a pair (acme), each handshake gets the current certificate
	 * from the order's slot. */
	if (p != NULL && (SSL_CTX_use_certificate(ctx,
	    sk_X509_value(p->chain, 0)) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, p->pkey) != 1))
		goto fail_ssl;
	for (size_t i = 1; p != NULL && i < sk_X509_num(p->chain); i++) {
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(p->chain, i)) != 1)
			goto fail_ssl;
	}
	if (sct != NULL &&
	    SSL_CTX_set_signed_cert_timestamp_list(ctx, sct, sct_len) != 1) {
		config_error(cfg, config_key_line(&cc->h, "sct"), "sct", "'%s' "
		    "is not a valid SignedCertificateTimestampList (%s)", cc->sct,
		    log_ssl_error(err, sizeof(err)));
		goto fail;
	}
	if (t->server_preference)
		SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	/* The relay hands SSL_write whatever the backend sent and copes with
	 * partial writes; the buffer may move between retries. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	session_cache_attach(ctx);
	SSL_CTX_set_timeout(ctx, (uint32_t)(cfg->global.session_timeout_ms / 1000));
	SSL_CTX_set_session_psk_dhe_timeout(ctx,
	    (uint32_t)(cfg->global.session_timeout_ms / 1000));
	if (cfg->global.session_tickets)
		SSL_CTX_set_tlsext_ticket_key_cb(ctx, tickets_key_cb);
	else
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_max_send_fragment(ctx, t->max_send_fragment);
	SSL_CTX_set_verify(ctx, t->verify_mode, t->reject_unauthorized ? NULL :
	    tls_ctx_verify_any);
	SSL_CTX_set_verify_depth(ctx, t->verify_depth);
	if (t->alpn_len > 0)
		SSL_CTX_set_alpn_select_cb(ctx, tls_ctx_alpn_cb, t);
	if (t->npn_len > 0)
		SSL_CTX_set_next_protos_advertised_cb(ctx, tls_ctx_npn_cb, t);
	if (tls_ctx_client_auth(cfg, cc, ctx) != 0)
		goto fail;
	return ctx;
fail_ssl:
	config_error(cfg, p != NULL ? p->line : cc->h.line, NULL, "[context %s]: "
	    "cannot set up TLS (%s)", cc->h.name, log_ssl_error(err,
	    sizeof(err)));
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* tls_ctx_ecdsa_params records the TLS 1.3 signature scheme and the TLS
 * group of an EC key's curve. */
static void
tls_ctx_ecdsa_params(struct tls_ctx *t, EVP_PKEY *pkey)
{
	const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
	int nid = ec != NULL ? EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) : 0;

	switch (nid) {
	case NID_secp384r1:
		t->ecdsa_sigalg = SSL_SIGN_ECDSA_SECP384R1_SHA384;
		t->ecdsa_group = SSL_CURVE_SECP384R1;
		break;
	case NID_secp521r1:
		t->ecdsa_sigalg = SSL_SIGN_ECDSA_SECP521R1_SHA512;
		t->ecdsa_group = SSL_CURVE_SECP521R1;
		break;
	default:
		t->ecdsa_sigalg = SSL_SIGN_ECDSA_SECP256R1_SHA256;
		t->ecdsa_group = SSL_CURVE_SECP256R1;
		break;
	}
}

/* tls_ctx_slot returns the staple slot of the chain's leaf, with a
 * reference that tls_ctx_release drops. */
static struct staple_slot *
tls_ctx_slot(STACK_OF(X509) *chain)
{
	uint8_t hash[32];
	unsigned len;

	if (X509_digest(sk_X509_value(chain, 0), EVP_sha256(), hash, &len) != 1)
		return NULL;
	return staple_slot_get(hash);
}

/* tls_ctx_ocsp_issuer reads ocsp_issuer, when set, into |*out| (the
 * caller frees it). Returns 0, or -1 with the error recorded. */
static int
tls_ctx_ocsp_issuer(struct config *cfg, const struct conf_context *cc,
    X509 **out)
{
	int line = config_key_line(&cc->h, "ocsp_issuer");
	BIO *bio;

	*out = NULL;
	if (cc->ocsp_issuer == NULL)
		return 0;
	if ((bio = tls_ctx_open(cfg, line, "ocsp_issuer", cc->ocsp_issuer)) ==
	    NULL)
		return -1;
	*out = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (*out == NULL) {
		ERR_clear_error();
		config_error(cfg, line, "ocsp_issuer", "'%s' holds no PEM "
		    "certificate", cc->ocsp_issuer);
		return -1;
	}
	return 0;
}

/* tls_ctx_ocsp_file reads a DER OCSP response maintained elsewhere and
 * keeps it for the certificate it answers for, once it has been checked
 * like a fetched one. */
static int
tls_ctx_ocsp_file(struct tls_ctx *t, struct config *cfg,
    const struct conf_context *cc, struct tls_pair pairs[TLS_KEY_NUM])
{
	int line = config_key_line(&cc->h, "ocsp");
	char err[256], first[256] = "";
	X509 *issuer_file = NULL, *leaf, *issuer;
	uint8_t *der;
	size_t len;

	if (tls_ctx_ocsp_issuer(cfg, cc, &issuer_file) != 0)
		return -1;
	if (tls_ctx_read_file(cfg, line, "ocsp", cc->ocsp, &der, &len) != 0) {
		X509_free(issuer_file);
		return -1;
	}
	for (int k = 0; k < TLS_KEY_NUM; k++) {
		struct ocsp_result r;

		if (pairs[k].chain == NULL)
			continue;
		leaf = sk_X509_value(pairs[k].chain, 0);
		issuer = issuer_file != NULL ? issuer_file :
		    sk_X509_num(pairs[k].chain) > 1 ?
		    sk_X509_value(pairs[k].chain, 1) : NULL;
		if (issuer == NULL) {
			snprintf(first, sizeof(first), "the certificate's issuer "
			    "must follow it in 'cert' (or be in ocsp_issuer) to "
			    "check the response");
			continue;
		}
		if (ocsp_check(der, len, leaf, issuer, (int64_t)time(NULL), &r,
		    err, sizeof(err)) != 0) {
			if (first[0] == '\0')
				snprintf(first, sizeof(first), "%s", err);
			continue;
		}
		if (r.status != OCSP_GOOD)
			log_msg(LOGL_ERROR, "context '%s': OCSP response '%s' says "
			    "the certificate is %s", cc->h.name, cc->ocsp,
			    r.status == OCSP_REVOKED ? "REVOKED" : "unknown");
		if (r.status == OCSP_UNKNOWN)
			break;
		t->ocsp_der[k] = der;
		t->ocsp_len[k] = len;
		t->ocsp_expires[k] = r.next_update != 0 ? r.next_update :
		    r.this_update + OCSP_NO_NEXT_UPDATE_VALIDITY;
		/* The fetcher watches the file for this certificate. */
		X509_up_ref(leaf);
		X509_up_ref(issuer);
		t->leaf[k] = leaf;
		t->issuer[k] = issuer;
		X509_free(issuer_file);
		return 0;
	}
	X509_free(issuer_file);
	free(der);
	config_error(cfg, line, "ocsp", "'%s' cannot be stapled: %s", cc->ocsp,
	    first[0] != '\0' ? first : "status unknown");
	return -1;
}

/* tls_ctx_ocsp_auto prepares what the fetcher needs for each certificate:
 * the leaf, its issuer and the responder URL. A certificate without a URL
 * simply has nothing to staple. */
static int
tls_ctx_ocsp_auto(struct tls_ctx *t, struct config *cfg,
    const struct conf_context *cc, struct tls_pair pairs[TLS_KEY_NUM])
{
	X509 *issuer_file = NULL;

	if (tls_ctx_ocsp_issuer(cfg, cc, &issuer_file) != 0)
		return -1;
	for (int k = 0; k < TLS_KEY_NUM; k++) {
		X509 *leaf, *issuer;

		if (pairs[k].chain == NULL)
			continue;
		leaf = sk_X509_value(pairs[k].chain, 0);
		issuer = issuer_file != NULL ? issuer_file :
		    sk_X509_num(pairs[k].chain) > 1 ?
		    sk_X509_value(pairs[k].chain, 1) : NULL;
		t->ocsp_url[k] = cc->ocsp_responder != NULL ?
		    strdup(cc->ocsp_responder) : ocsp_responder_url(leaf);
		if (t->ocsp_url[k] == NULL) {
			log_msg(LOGL_INFO, "context '%s': the certificate names no "
			    "OCSP responder: nothing to staple", cc->h.name);
			continue;
		}
		if (issuer == NULL) {
			log_msg(LOGL_WARNING, "context '%s': no issuer certificate "
			    "to check OCSP responses with (add it after the leaf "
			    "in cert, or set ocsp_issuer): not stapling",
			    cc->h.name);
			free(t->ocsp_url[k]);
			t->ocsp_url[k] = NULL;
			continue;
		}
		X509_up_ref(leaf);
		X509_up_ref(issuer);
		t->leaf[k] = leaf;
		t->issuer[k] = issuer;
	}
	X509_free(issuer_file);
	return 0;
}

void
tls_ctx_activate(struct tls_ctx *t)
{
	for (int k = 0; k < TLS_KEY_NUM; k++) {
		if (t->staple[k] == NULL)
			continue;
		if (t->ocsp_der[k] != NULL)
			staple_set(t->staple[k], t->ocsp_der[k], t->ocsp_len[k],
			    t->ocsp_expires[k]);
		else if (t->cc->ocsp == NULL || strcmp(t->cc->ocsp, "off") == 0)
			staple_set(t->staple[k], NULL, 0, 0);
	}
}

static void tls_ctx_describe(struct tls_ctx *t);

/* tls_ctx_init_acme builds a context whose certificate an ACME account
 * obtains: one SSL_CTX for the account's key type, without a certificate,
 * and a reference to the order's slot, which holds the certificate once
 * there is one (acme_cert.h). */
static int
tls_ctx_init_acme(struct tls_ctx *t, struct config *cfg,
    const struct conf_context *cc, const struct conf_tls *tls)
{
	const struct conf_acme *a = config_find_acme(cfg, cc->acme);
	enum tls_key_type kt = TLS_KEY_ECDSA;
	const char *names[64];
	char key[4096];
	size_t n = 0;

	if (a == NULL) /* reported by config.c */
		goto fail;
	if (strcmp(a->key_type, "rsa") == 0)
		kt = TLS_KEY_RSA;
	if (a->shared_key_file != NULL) {
		struct ticket_ring ring = { NULL, 0 };
		char err[512];

		/* Read here so that -t and a reload catch what the ACME
		 * thread would only find later. */
		if (tickets_load_file(a->shared_key_file, &ring, err,
		    sizeof(err)) != 0) {
			config_error(cfg, config_key_line(&a->h,
			    "shared_key_file"), "shared_key_file", "%s", err);
			goto fail;
		}
		tickets_ring_free(&ring);
	}
	for (; n < cc->servername.num && n < 64; n++)
		names[n] = cc->servername.v[n];
	if (n < cc->servername.num ||
	    acme_slot_key(a->h.name, names, n, key, sizeof(key)) == NULL) {
		config_error(cfg, config_key_line(&cc->h, "acme"), "acme",
		    "[context %s] lists too many names for one order",
		    cc->h.name);
		goto fail;
	}
	if ((t->ctx[kt] = tls_ctx_build_one(t, cfg, cc, tls, NULL, NULL,
	    0)) == NULL || (t->acme = acme_slot_get(key)) == NULL)
		goto fail;
	/* The certificates' key: P-256 for ecdsa, 2048 bits for rsa. */
	t->ecdsa_sigalg = SSL_SIGN_ECDSA_SECP256R1_SHA256;
	t->ecdsa_group = SSL_CURVE_SECP256R1;
	snprintf(t->key_alg[kt], sizeof(t->key_alg[kt]), "%s",
	    kt == TLS_KEY_RSA ? "RSA2048" : "EC256");
	return 0;
fail:
	tls_ctx_release(t);
	return -1;
}

int
tls_ctx_init(struct tls_ctx *t, struct config *cfg,
    const struct conf_listener *cl, const struct conf_context *cc)
{
	struct tls_pair pairs[TLS_KEY_NUM] = { { NULL, NULL, 0 },
		{ NULL, NULL, 0 } };
	struct conf_tls tls;
	uint8_t *sct = NULL;
	size_t sct_len = 0;
	int rc = 0;

	memset(t, 0, sizeof(*t));
	t->cc = cc;
	t->cl = cl;
	if ((t->name = strdup(cc->h.name)) == NULL)
		return -1;
	config_tls_effective(cfg, cl, cc, &tls);
	if (tls_ctx_settings(t, cfg, cc, &tls) != 0)
		rc = -1;
	if (cc->acme != NULL)
		return rc == 0 ? tls_ctx_init_acme(t, cfg, cc, &tls) :
		    (tls_ctx_release(t), -1);
	if (tls_ctx_load_pairs(cfg, cc, pairs) != 0)
		rc = -1;
	if (cc->sct != NULL && tls_ctx_read_file(cfg,
	    config_key_line(&cc->h, "sct"), "sct", cc->sct, &sct, &sct_len) != 0)
		rc = -1;
	for (int k = 0; rc == 0 && k < TLS_KEY_NUM; k++) {
		if (pairs[k].pkey == NULL)
			continue;
		t->ctx[k] = tls_ctx_build_one(t, cfg, cc, &tls, &pairs[k], sct,
		    sct_len);
		if (t->ctx[k] == NULL)
			rc = -1;
		else if (k == TLS_KEY_ECDSA)
			tls_ctx_ecdsa_params(t, pairs[k].pkey);
		if (t->ctx[k] != NULL &&
		    (t->staple[k] = tls_ctx_slot(pairs[k].chain)) == NULL)
			rc = -1;
	}
	if (rc == 0)
		tls_ctx_describe(t);
	if (rc == 0 && cc->ocsp != NULL && strcmp(cc->ocsp, "auto") == 0 &&
	    tls_ctx_ocsp_auto(t, cfg, cc, pairs) != 0)
		rc = -1;
	else if (rc == 0 && cc->ocsp != NULL && strcmp(cc->ocsp, "off") != 0 &&
	    strcmp(cc->ocsp, "auto") != 0 &&
	    tls_ctx_ocsp_file(t, cfg, cc, pairs) != 0)
		rc = -1;
	for (int k = 0; k < TLS_KEY_NUM; k++)
		tls_pair_free(&pairs[k]);
	free(sct);
	if (rc != 0)
		tls_ctx_release(t);
	return rc;
}

void
tls_ctx_release(struct tls_ctx *t)
{
	for (int k = 0; k < TLS_KEY_NUM; k++) {
		SSL_CTX_free(t->ctx[k]);
		t->ctx[k] = NULL;
	}
	acme_slot_unref(t->acme);
	for (int k = 0; k < TLS_KEY_NUM; k++) {
		staple_slot_unref(t->staple[k]);
		free(t->ocsp_der[k]);
		free(t->ocsp_url[k]);
		X509_free(t->leaf[k]);
		X509_free(t->issuer[k]);
	}
	for (size_t i = 0; i < t->num_routes; i++)
		free(t->routes[i].protocol);
	free(t->routes);
	free(t->alpn);
	free(t->npn);
	free(t->name);
	memset(t, 0, sizeof(*t));
}

void
tls_ctx_set_callbacks(struct tls_ctx *t,
    enum ssl_select_cert_result_t (*select)(const SSL_CLIENT_HELLO *),
    int (*servername)(SSL *, int *, void *))
{
	for (int k = 0; k < TLS_KEY_NUM; k++) {
		if (t->ctx[k] == NULL)
			continue;
		SSL_CTX_set_select_certificate_cb(t->ctx[k], select);
		SSL_CTX_set_tlsext_servername_callback(t->ctx[k], servername);
	}
}

int
tls_ctx_covers_name(const struct tls_ctx *t, const char *name)
{
	/* An order's certificate holds exactly its names. */
	for (size_t i = 0; t->acme != NULL && i < t->cc->servername.num; i++) {
		if (strcasecmp(t->cc->servername.v[i], name) == 0)
			return 1;
	}
	for (int k = 0; k < TLS_KEY_NUM; k++) {
		X509 *x = t->ctx[k] != NULL ? SSL_CTX_get0_certificate(t->ctx[k]) :
		    NULL;

		if (x != NULL && X509_check_host(x, name, strlen(name), 0,
		    NULL) == 1)
			return 1;
	}
	return 0;
}

int
tls_ctx_set_ech_keys(struct tls_ctx *t, SSL_ECH_KEYS *keys)
{
	for (int k = 0; k < TLS_KEY_NUM; k++) {
		if (t->ctx[k] != NULL && SSL_CTX_set1_ech_keys(t->ctx[k], keys) != 1)
			return -1;
	}
	return 0;
}

SSL_CTX *
tls_ctx_default(const struct tls_ctx *t)
{
	return t->ctx[TLS_KEY_ECDSA] != NULL ? t->ctx[TLS_KEY_ECDSA] :
	    t->ctx[TLS_KEY_RSA];
}

/* tls_ctx_hello_has_u16 looks for |value| in a u16 list inside extension
 * |type| of the ClientHello; |prefix| is the width of the list's length. */
static int
tls_ctx_hello_has_u16(const SSL_CLIENT_HELLO *hello, uint16_t type,
    int prefix, uint16_t value)
{
	const uint8_t *data;
	size_t len;
	CBS ext, list;
	uint16_t v;

	if (!SSL_early_callback_ctx_extension_get(hello, type, &data, &len))
		return 0;
	CBS_init(&ext, data, len);
	if (!(prefix == 1 ? CBS_get_u8_length_prefixed(&ext, &list) :
	    CBS_get_u16_length_prefixed(&ext, &list)))
		return 0;
	while (CBS_get_u16(&list, &v)) {
		if (v == value)
			return 1;
	}
	return 0;
}

/* tls_ctx_wants_ecdsa decides whether a client can be served the ECDSA
 * certificate: it must accept our key's signature scheme and either speak
 * TLS 1.3 or offer an ECDSA cipher suite for TLS 1.2. */
static int
tls_ctx_wants_ecdsa(const struct tls_ctx *t, const SSL_CLIENT_HELLO *hello)
{
	STACK_OF(SSL_CIPHER) *ours;
	const uint8_t *groups;
	size_t groups_len;
	CBS suites;
	uint16_t id;

	if (!tls_ctx_hello_has_u16(hello, TLSEXT_TYPE_signature_algorithms, 2,
	    t->ecdsa_sigalg))
		return 0;
	if (t->max_version >= TLS1_3_VERSION &&
	    tls_ctx_hello_has_u16(hello, TLSEXT_TYPE_supported_versions, 1,
	    TLS1_3_VERSION))
		return 1;
	/* TLS 1.2: the key's curve must be one the client supports, and an
	 * ECDSA suite must be both offered and allowed by our list. */
	if (SSL_early_callback_ctx_extension_get(hello,
	    TLSEXT_TYPE_supported_groups, &groups, &groups_len) &&
	    !tls_ctx_hello_has_u16(hello, TLSEXT_TYPE_supported_groups, 2,
	    t->ecdsa_group))
		return 0;
	ours = SSL_CTX_get_ciphers(t->ctx[TLS_KEY_ECDSA]);
	CBS_init(&suites, hello->cipher_suites, hello->cipher_suites_len);
	while (CBS_get_u16(&suites, &id)) {
		const SSL_CIPHER *c = SSL_get_cipher_by_value(id);

		if (c == NULL || SSL_CIPHER_get_auth_nid(c) != NID_auth_ecdsa)
			continue;
		for (size_t i = 0; i < sk_SSL_CIPHER_num(ours); i++) {
			if (SSL_CIPHER_get_id(sk_SSL_CIPHER_value(ours, i)) ==
			    SSL_CIPHER_get_id(c))
				return 1;
		}
	}
	return 0;
}

/* tls_ctx_describe names each certificate's signature and key algorithms
 * the way HAProxy's PROXY protocol TLVs do ("RSA-SHA256", "RSA2048",
 * "ecdsa-with-SHA256", "EC256"), once, for every connection to use. */
static void
tls_ctx_describe(struct tls_ctx *t)
{
	for (int k = 0; k < TLS_KEY_NUM; k++) {
		X509 *x = t->ctx[k] != NULL ? SSL_CTX_get0_certificate(t->ctx[k]) :
		    NULL;
		EVP_PKEY *pk = x != NULL ? X509_get_pubkey(x) : NULL;

		if (x == NULL)
			continue;
		snprintf(t->sig_alg[k], sizeof(t->sig_alg[k]), "%s",
		    OBJ_nid2sn(X509_get_signature_nid(x)));
		if (pk != NULL)
			snprintf(t->key_alg[k], sizeof(t->key_alg[k]), "%s%d",
			    EVP_PKEY_id(pk) == EVP_PKEY_RSA ? "RSA" : "EC",
			    EVP_PKEY_bits(pk));
		EVP_PKEY_free(pk);
	}
}

enum tls_key_type
tls_ctx_key_type(const struct tls_ctx *t, const SSL *ssl)
{
	return SSL_get_SSL_CTX(ssl) == t->ctx[TLS_KEY_ECDSA] ? TLS_KEY_ECDSA :
	    TLS_KEY_RSA;
}

/* tls_ctx_hello_shares collects the groups of the client's key shares. */
static size_t
tls_ctx_hello_shares(const SSL_CLIENT_HELLO *hello, uint16_t *out,
    size_t max)
{
	const uint8_t *data;
	size_t len, n = 0;
	CBS ext, list, key;
	uint16_t group;

	if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_key_share,
	    &data, &len))
		return 0;
	CBS_init(&ext, data, len);
	if (!CBS_get_u16_length_prefixed(&ext, &list))
		return 0;
	while (n < max && CBS_get_u16(&list, &group) &&
	    CBS_get_u16_length_prefixed(&list, &key))
		out[n++] = group;
	return n;
}

/* tls_ctx_pick_group chooses the one group a connection may use, so that
 * BoringSSL's own choice (always our first supported group) cannot cost
 * a HelloRetryRequest the client did not need: in the first tier holding
 * a group the client supports, the first of those it sent a key share
 * for, else the first of them. TLS-1.3-only groups count only when both
 * sides can speak TLS 1.3. Returns 0 and the group, or -1 when nothing
 * matches. */
static int
tls_ctx_pick_group(const struct tls_ctx *t, const SSL_CLIENT_HELLO *hello,
    uint16_t *out_group)
{
	uint16_t shares[16];
	size_t num_shares = tls_ctx_hello_shares(hello, shares,
	    sizeof(shares) / sizeof(shares[0]));
	int tls13 = t->max_version >= TLS1_3_VERSION &&
	    tls_ctx_hello_has_u16(hello, TLSEXT_TYPE_supported_versions, 1,
	    TLS1_3_VERSION);
	size_t i = 0;

	while (i < t->num_groups) {
		uint8_t tier = t->group_tier[i];
		int found = 0;

		for (; i < t->num_groups && t->group_tier[i] == tier; i++) {
			const struct tls_group *g = tls_ctx_group_by_id(
			    t->groups[i]);

			if ((g->tls13_only && !tls13) ||
			    !tls_ctx_hello_has_u16(hello,
			    TLSEXT_TYPE_supported_groups, 2, g->id))
				continue;
			for (size_t s = 0; s < num_shares; s++) {
				if (shares[s] == g->id) {
					*out_group = g->id;
					return 0;
				}
			}
			if (!found)
				*out_group = g->id;
			found = 1;
		}
		if (found)
			return 0;
	}
	return -1;
}

int
tls_ctx_apply(const struct tls_ctx *t, const struct tls_ctx *from,
    const SSL_CLIENT_HELLO *hello)
{
	SSL *ssl = hello->ssl;
	enum tls_key_type kt = TLS_KEY_RSA;
	const uint8_t *ext;
	size_t ext_len;
	uint16_t group;

	if (t->ctx[TLS_KEY_RSA] == NULL || (t->ctx[TLS_KEY_ECDSA] != NULL &&
	    tls_ctx_wants_ecdsa(t, hello)))
		kt = TLS_KEY_ECDSA;
	if (SSL_get_SSL_CTX(ssl) != t->ctx[kt] &&
	    SSL_set_SSL_CTX(ssl, t->ctx[kt]) == NULL)
		return -1;
	/* Copied only for clients that ask (status_request). */
	if (SSL_early_callback_ctx_extension_get(hello,
	    TLSEXT_TYPE_status_request, &ext, &ext_len))
		staple_apply(t->staple[kt], ssl);
	/* Without a match the context's whole list stays, and BoringSSL
	 * fails the handshake as it always would. */
	if (tls_ctx_pick_group(t, hello, &group) == 0) {
		if (tls_ctx_set_ssl_groups(ssl, &group, 1) != 1)
			return -1;
	} else if (t != from &&
	    tls_ctx_set_ssl_groups(ssl, t->groups, t->num_groups) != 1)
		return -1;
	/* Both SSL_CTXs of a context carry the same settings, which SSL_new
	 * already copied: the common case (no SNI, or the default context)
	 * costs nothing more. */
	if (t == from)
		return 0;
	/* BoringSSL copied these from the SSL_CTX the connection started
	 * with; the chosen context's values must win. */
	if (SSL_set_min_proto_version(ssl, t->min_version) != 1 ||
	    SSL_set_max_proto_version(ssl, t->max_version) != 1)
		return -1;
	if (t->server_preference)
		SSL_set_options(ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
	else
		SSL_clear_options(ssl, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_set_verify(ssl, t->verify_mode, t->reject_unauthorized ? NULL :
	    tls_ctx_verify_any);
	SSL_set_verify_depth(ssl, t->verify_depth);
	SSL_set_max_send_fragment(ssl, t->max_send_fragment);
	return 0;
}

const char *
tls_ctx_auth(const struct tls_ctx *t, const SSL *ssl, char *buf,
    size_t buf_len)
{
	long result;

	if (t == NULL || t->verify_mode == SSL_VERIFY_NONE)
		return "-";
	if (SSL_get0_peer_certificates(ssl) == NULL ||
	    sk_CRYPTO_BUFFER_num(SSL_get0_peer_certificates(ssl)) == 0)
		return "none";
	result = SSL_get_verify_result(ssl);
	if (result == X509_V_OK)
		return "authorized";
	snprintf(buf, buf_len, "%s", X509_verify_cert_error_string(result));
	for (char *p = buf; *p != '\0'; p++) {
		if (*p == ' ' || *p == '-')
			*p = '_';
		else if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	}
	return buf;
}

const char *
tls_ctx_peer_subject(const SSL *ssl, char *buf, size_t buf_len)
{
	X509 *x = SSL_get_peer_certificate(ssl);
	BIO *bio;
	size_t n = 0;

	if (x == NULL)
		return "-";
	bio = BIO_new(BIO_s_mem());
	/* RFC 2253 with control and non-ASCII bytes escaped: safe to log. */
	if (bio != NULL && X509_NAME_print_ex(bio, X509_get_subject_name(x), 0,
	    XN_FLAG_RFC2253) >= 0) {
		const uint8_t *data;
		size_t len;

		BIO_mem_contents(bio, &data, &len);
		n = len < buf_len - 1 ? len : buf_len - 1;
		memcpy(buf, data, n);
	}
	buf[n] = '\0';
	/* The access log quotes it. */
	for (char *p = buf; *p != '\0'; p++) {
		if (*p == '"')
			*p = '\'';
	}
	BIO_free(bio);
	X509_free(x);
	return n > 0 ? buf : "-";
}

void
tls_ctx_list_ciphers(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	STACK_OF(SSL_CIPHER) *list;

	if (ctx == NULL)
		return;
	/* TLS 1.3 suites are fixed by BoringSSL, not configured. */
	for (uint16_t id = 0x1301; id <= 0x1303; id++) {
		const SSL_CIPHER *c = SSL_get_cipher_by_value(id);

		if (c != NULL)
			printf("%s\n", SSL_CIPHER_get_name(c));
	}
	if (SSL_CTX_set_cipher_list(ctx, "ALL") == 1) {
		list = SSL_CTX_get_ciphers(ctx);
		for (size_t i = 0; i < sk_SSL_CIPHER_num(list); i++)
			printf("%s\n", SSL_CIPHER_get_name(sk_SSL_CIPHER_value(list,
			    i)));
	}
	SSL_CTX_free(ctx);
}

void
tls_ctx_list_curves(void)
{
	static const char *const candidates[] = {
#ifdef SSL_GROUP_X25519_MLKEM768
		"X25519MLKEM768",
#endif
		"X25519", "P-256", "P-384", "P-521" };
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());

	if (ctx == NULL)
		return;
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		if (SSL_CTX_set1_curves_list(ctx, candidates[i]) == 1)
			printf("%s\n", candidates[i]);
	}
	ERR_clear_error();
	SSL_CTX_free(ctx);
}
