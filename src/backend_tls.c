/* backend_tls.c: TLS to backends. */
#include "backend_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pool.h>
#include <openssl/x509.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "tls_ctx.h"

/* Debian's ca-certificates bundle: the system store. */
#define BACKEND_TLS_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"

const char *const backend_tls_fail_names[BACKEND_TLS_FAIL_COUNT] = {
	"certificate", "name", "protocol", "timeout", "closed", "alpn",
};

/* A session kept for an address, with the server name it was made for:
 * with tls_servername = client, names differ between connections, and a
 * session is only offered under its own. */
struct backend_tls_slot {
	SSL_SESSION *session;
	char name[256]; /* "" without SNI */
	/* The group the address chose last time: the next ClientHello
	 * carries a key share for it alone, so a classical backend does not
	 * cost an ML-KEM key generation per connection. */
	uint16_t group;
};

enum servername_mode {
	SNI_HOST,   /* the address's host name, if it has one */
	SNI_CLIENT, /* the client's */
	SNI_NONE,
	SNI_FIXED,
};

struct backend_tls {
	SSL_CTX *ctx;
	/* Every connection to the backend gets the same certificates: one
	 * copy of them serves all (it outlives the SSL_CTX and SSLs). */
	CRYPTO_BUFFER_POOL *pool;
	int verify;
	enum servername_mode sni;
	char *servername;  /* SNI_FIXED */
	char *verify_name; /* NULL: the servername, else the address */
	uint8_t *alpn;     /* wire format; NULL: none */
	size_t alpn_len;
	int alpn_client;
	int session_reuse;
	uint64_t timeout_ms;
	/* The last session of each address, per worker: [addr][worker]. A
	 * worker touches only its own slots, so they need no lock. */
	struct backend_tls_slot *sessions;
	/* Each address as text when it is an IP (NULL: a unix socket), the
	 * identity checked when there is no name: made once, not per
	 * connection. */
	char **ips;
	size_t num_addrs;
	int num_workers;
	/* Client certificates, for backends that ask for one. */
	struct backend_tls_cert *certs;
	size_t num_certs;
};

/* Which session slot a connection's new sessions go to. */
static int slot_index = -1;

/* The groups offered when tls_groups = auto, and by backend_tls_client_ctx. */
#ifdef SSL_GROUP_X25519_MLKEM768
#define BACKEND_TLS_GROUPS "X25519MLKEM768:X25519:P-256:P-384"
#else
#define BACKEND_TLS_GROUPS "X25519:P-256:P-384"
#endif

int
backend_tls_load_ca(SSL_CTX *ctx, const char *ca_file, const char *key,
    char *err, size_t err_len)
{
	const char *ca = ca_file != NULL ? ca_file : BACKEND_TLS_SYSTEM_CA;
	FILE *f = fopen(ca, "r");
	char reason[160];

	if (f == NULL && ca_file != NULL) {
		snprintf(err, err_len, "cannot open '%s': %s", ca,
		    strerror(errno));
		return -1;
	}
	if (f != NULL)
		fclose(f);
	if (f == NULL || !SSL_CTX_load_verify_locations(ctx, ca, NULL)) {
		if (ca_file != NULL)
			snprintf(err, err_len, "cannot load CA certificates from "
			    "'%s' (%s)", ca, log_ssl_error(reason, sizeof(reason)));
		else
			snprintf(err, err_len, "no %s, and the system store '%s' "
			    "cannot be read: install ca-certificates or set %s",
			    key, ca, key);
		ERR_clear_error();
		return ca_file != NULL ? -1 : -2;
	}
	return 0;
}

/* backend_tls_store loads the trust anchors and CRLs. */
static int
backend_tls_store(struct config *cfg, const struct conf_backend *cb,
    SSL_CTX *ctx)
{
	char err[600];
	int rc = backend_tls_load_ca(ctx, cb->tls_ca, "tls_ca", err,
	    sizeof(err));

	if (rc != 0) {
		/* The system store is what tls = yes uses without tls_ca. */
		const char *key = rc == -2 ? "tls" : "tls_ca";

		config_error(cfg, config_key_line(&cb->h, key), key, "%s", err);
		return -1;
	}
	return tls_ctx_load_crls(cfg, "tls_crl", &cb->tls_crl,
	    SSL_CTX_get_cert_store(ctx));
}

SSL_CTX *
backend_tls_client_ctx(const char *ca_file, const char *key, char *err,
    size_t err_len)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	char reason[160];

	if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx,
	    TLS1_2_VERSION) || !SSL_CTX_set_max_proto_version(ctx,
	    TLS1_3_VERSION) || !SSL_CTX_set1_curves_list(ctx,
	    BACKEND_TLS_GROUPS)) {
		snprintf(err, err_len, "cannot make a TLS client context (%s)",
		    log_ssl_error(reason, sizeof(reason)));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (backend_tls_load_ca(ctx, ca_file, key, err, err_len) != 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
}

/* A client certificate: its chain (leaf first) as the buffers BoringSSL
 * sends, its key, and the issuer name (DER) of each certificate of the
 * chain, to match the CA names a backend lists in its request. */
struct backend_tls_cert {
	CRYPTO_BUFFER **chain;
	CRYPTO_BUFFER **issuers;
	size_t len;
	EVP_PKEY *key;
};

static void
backend_tls_cert_free(struct backend_tls_cert *c)
{
	for (size_t i = 0; i < c->len; i++) {
		CRYPTO_BUFFER_free(c->chain[i]);
		CRYPTO_BUFFER_free(c->issuers[i]);
	}
	free(c->chain);
	free(c->issuers);
	EVP_PKEY_free(c->key);
}

/* backend_tls_der makes a pooled buffer of |len| bytes at |der| (freed
 * with OPENSSL_free by the caller's i2d). */
static CRYPTO_BUFFER *
backend_tls_der(struct backend_tls *bt, uint8_t *der, int len)
{
	CRYPTO_BUFFER *b = len > 0 ? CRYPTO_BUFFER_new(der, (size_t)len,
	    bt->pool) : NULL;

	OPENSSL_free(der);
	return b;
}

/* backend_tls_add_cert checks a client certificate chain against its key
 * and keeps it, in configuration order. */
static int
backend_tls_add_cert(struct config *cfg, int line, const char *key,
    struct backend_tls *bt, STACK_OF(X509) *chain, EVP_PKEY *pkey)
{
	struct backend_tls_cert *c;
	size_t n = sk_X509_num(chain);

	if (X509_check_private_key(sk_X509_value(chain, 0), pkey) != 1) {
		ERR_clear_error();
		config_error(cfg, line, key, "the client certificate and its key "
		    "do not go together");
		return -1;
	}
	if (EVP_PKEY_id(pkey) != EVP_PKEY_RSA && EVP_PKEY_id(pkey) != EVP_PKEY_EC) {
		config_error(cfg, line, key, "unsupported key type: use an RSA "
		    "or ECDSA key");
		return -1;
	}
	c = realloc(bt->certs, (bt->num_certs + 1) * sizeof(*c));
	if (c == NULL)
		goto oom;
	bt->certs = c;
	c = &bt->certs[bt->num_certs++];
	memset(c, 0, sizeof(*c));
	if ((c->chain = calloc(n, sizeof(*c->chain))) == NULL ||
	    (c->issuers = calloc(n, sizeof(*c->issuers))) == NULL)
		goto oom;
	for (; c->len < n; c->len++) {
		X509 *x = sk_X509_value(chain, c->len);
		uint8_t *der = NULL, *name = NULL;
		int der_len = i2d_X509(x, &der);
		int name_len = i2d_X509_NAME(X509_get_issuer_name(x), &name);

		c->chain[c->len] = backend_tls_der(bt, der, der_len);
		c->issuers[c->len] = backend_tls_der(bt, name, name_len);
		if (c->chain[c->len] == NULL || c->issuers[c->len] == NULL) {
			c->len++;
			goto oom;
		}
	}
	EVP_PKEY_up_ref(pkey);
	c->key = pkey;
	return 0;
oom:
	ERR_clear_error();
	config_error(cfg, line, key, "out of memory");
	return -1;
}

/* backend_tls_sigalg_fits returns whether the backend's signature
 * algorithm |sigalg| can be made with |key| at protocol |version|: TLS
 * 1.3 signs RSA with PSS only, and binds ECDSA to one curve. */
static int
backend_tls_sigalg_fits(uint16_t sigalg, EVP_PKEY *key, uint16_t version)
{
	int curve;

	if (SSL_get_signature_algorithm_key_type(sigalg) != EVP_PKEY_id(key))
		return 0;
	if (version < TLS1_3_VERSION)
		return 1;
	if (EVP_PKEY_id(key) == EVP_PKEY_RSA)
		return SSL_is_signature_algorithm_rsa_pss(sigalg);
	curve = EC_GROUP_get_curve_name(EC_KEY_get0_group(
	    EVP_PKEY_get0_EC_KEY(key)));
	return (sigalg == SSL_SIGN_ECDSA_SECP256R1_SHA256 &&
	    curve == NID_X9_62_prime256v1) ||
	    (sigalg == SSL_SIGN_ECDSA_SECP384R1_SHA384 &&
	    curve == NID_secp384r1) ||
	    (sigalg == SSL_SIGN_ECDSA_SECP521R1_SHA512 &&
	    curve == NID_secp521r1);
}

static int
backend_tls_cert_fits(const struct backend_tls_cert *c, SSL *ssl)
{
	const uint16_t *sigalgs;
	size_t n = SSL_get0_peer_verify_algorithms(ssl, &sigalgs);

	for (size_t i = 0; i < n; i++)
		if (backend_tls_sigalg_fits(sigalgs[i], c->key,
		    (uint16_t)SSL_version(ssl)))
			return 1;
	return 0;
}

/* backend_tls_cert_named returns whether an issuer of |c|'s chain is
 * among the CA names the backend sent. */
static int
backend_tls_cert_named(const struct backend_tls_cert *c,
    const STACK_OF(CRYPTO_BUFFER) *cas)
{
	for (size_t i = 0; i < sk_CRYPTO_BUFFER_num(cas); i++) {
		const CRYPTO_BUFFER *ca = sk_CRYPTO_BUFFER_value(cas, i);

		for (size_t j = 0; j < c->len; j++)
			if (CRYPTO_BUFFER_len(ca) == CRYPTO_BUFFER_len(
			    c->issuers[j]) && memcmp(CRYPTO_BUFFER_data(ca),
			    CRYPTO_BUFFER_data(c->issuers[j]),
			    CRYPTO_BUFFER_len(ca)) == 0)
				return 1;
	}
	return 0;
}

/* backend_tls_choose_cert answers a backend's certificate request: the
 * first certificate, in configuration order, whose key the backend can
 * verify and whose chain comes from a CA it names; else the first it can
 * verify; else none, and the backend decides. */
static int
backend_tls_choose_cert(SSL *ssl, void *arg)
{
	const struct backend_tls *bt = arg;
	const STACK_OF(CRYPTO_BUFFER) *cas = SSL_get0_server_requested_CAs(ssl);
	const struct backend_tls_cert *fit = NULL;

	for (size_t i = 0; i < bt->num_certs; i++) {
		const struct backend_tls_cert *c = &bt->certs[i];

		if (!backend_tls_cert_fits(c, ssl))
			continue;
		if (fit == NULL)
			fit = c;
		if (cas == NULL || backend_tls_cert_named(c, cas)) {
			fit = c;
			break;
		}
	}
	if (fit == NULL)
		return 1;
	return SSL_set_chain_and_key(ssl, fit->chain, fit->len, fit->key,
	    NULL);
}

static int
backend_tls_client_certs(struct config *cfg, const struct conf_backend *cb,
    struct backend_tls *bt)
{
	static const char pass_keys[] = "tls_passphrase_file";
	char buf[1024];
	const char *pass;
	int failed, rc = 0;

	if (cb->tls_cert.num == 0 && cb->tls_pfx == NULL)
		return 0;
	pass = tls_ctx_read_passphrase(cfg, config_key_line(&cb->h,
	    "tls_passphrase_file"), "tls_passphrase_file",
	    cb->tls_passphrase_file, buf, sizeof(buf), &failed);
	if (failed)
		return -1;
	for (size_t i = 0; i <= cb->tls_cert.num; i++) {
		STACK_OF(X509) *chain = NULL;
		EVP_PKEY *pkey = NULL;
		const char *key = i < cb->tls_cert.num ? "tls_key" : "tls_pfx";
		int line = 0, ok = 0;

		if (i == cb->tls_cert.num && cb->tls_pfx == NULL)
			break;
		if (i == cb->tls_cert.num) {
			line = config_key_line(&cb->h, "tls_pfx");
			ok = tls_ctx_read_pfx(cfg, line, key, cb->tls_pfx, pass,
			    pass_keys, &pkey, &chain) == 0;
		} else if (i < cb->tls_key.num) {
			/* (Unequal counts are reported by config.c.) */
			line = cb->tls_key.lines[i];
			chain = tls_ctx_read_chain(cfg, cb->tls_cert.lines[i],
			    "tls_cert", cb->tls_cert.v[i]);
			pkey = tls_ctx_read_key(cfg, line, key, cb->tls_key.v[i],
			    pass, pass_keys);
			ok = chain != NULL && pkey != NULL;
		}
		if (!ok || backend_tls_add_cert(cfg, line, key, bt, chain,
		    pkey) != 0)
			rc = -1;
		sk_X509_pop_free(chain, X509_free);
		EVP_PKEY_free(pkey);
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	return rc;
}

/* backend_tls_alpn turns tls_alpn into wire format. */
static int
backend_tls_alpn(struct backend_tls *bt, const struct conf_backend *cb)
{
	size_t len = 0;

	if (cb->tls_alpn.num == 1 && strcmp(cb->tls_alpn.v[0], "client") == 0) {
		bt->alpn_client = 1;
		return 0;
	}
	for (size_t i = 0; i < cb->tls_alpn.num; i++)
		len += 1 + strlen(cb->tls_alpn.v[i]);
	if (len == 0)
		return 0;
	if ((bt->alpn = malloc(len)) == NULL)
		return -1;
	for (size_t i = 0; i < cb->tls_alpn.num; i++) {
		size_t n = strlen(cb->tls_alpn.v[i]);

		bt->alpn[bt->alpn_len++] = (uint8_t)n;
		memcpy(bt->alpn + bt->alpn_len, cb->tls_alpn.v[i], n);
		bt->alpn_len += n;
	}
	return 0;
}

/* backend_tls_new_session keeps the newest session of an address, for
 * the worker's next connection to it. */
static int
backend_tls_new_session(SSL *ssl, SSL_SESSION *session)
{
	struct backend_tls_slot *slot = SSL_get_ex_data(ssl, slot_index);
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

	if (slot == NULL)
		return 0;
	SSL_SESSION_free(slot->session);
	slot->session = session;
	snprintf(slot->name, sizeof(slot->name), "%s", name != NULL ? name : "");
	return 1;
}

static SSL_CTX *
backend_tls_ctx(struct config *cfg, const struct conf_backend *cb,
    struct backend_tls *bt)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());
	const char *groups = strcasecmp(cb->tls_groups, "auto") != 0 ?
	    cb->tls_groups : BACKEND_TLS_GROUPS;
	char err[160];

	if (ctx == NULL)
		return NULL;
	if (!SSL_CTX_set_min_proto_version(ctx,
	    (uint16_t)config_version(cb->tls_min_version)) ||
	    !SSL_CTX_set_max_proto_version(ctx,
	    (uint16_t)config_version(cb->tls_max_version)))
		goto fail;
	if (!SSL_CTX_set_strict_cipher_list(ctx, cb->tls_ciphers)) {
		config_error(cfg, config_key_line(&cb->h, "tls_ciphers"),
		    "tls_ciphers", "'%s' is not a cipher list BoringSSL accepts "
		    "(%s)", cb->tls_ciphers, log_ssl_error(err, sizeof(err)));
		goto fail;
	}
	if (!SSL_CTX_set1_curves_list(ctx, groups)) {
		config_error(cfg, config_key_line(&cb->h, "tls_groups"),
		    "tls_groups", "'%s' names a group this BoringSSL does not "
		    "know (tlsproxy --list-curves lists them)", groups);
		goto fail;
	}
	if (backend_tls_store(cfg, cb, ctx) != 0 ||
	    backend_tls_client_certs(cfg, cb, bt) != 0)
		goto fail;
	if (bt->num_certs > 0)
		SSL_CTX_set_cert_cb(ctx, backend_tls_choose_cert, bt);
	/* Verification happens in any case, so that the log can say; only
	 * tls_verify = no lets a failure pass. */
	SSL_CTX_set_verify(ctx, bt->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
	    NULL);
	SSL_CTX_set_verify_depth(ctx, (int)cb->tls_verify_depth);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (bt->session_reuse) {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
		    SSL_SESS_CACHE_NO_INTERNAL);
		SSL_CTX_sess_set_new_cb(ctx, backend_tls_new_session);
	} else {
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	}
	return ctx;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

struct backend_tls *
backend_tls_new(struct config *cfg, const struct conf_backend *cb,
    const struct backend *b, int num_workers)
{
	struct backend_tls *bt = calloc(1, sizeof(*bt));

	if (slot_index < 0)
		slot_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (bt == NULL)
		goto oom;
	bt->verify = cb->tls_verify != 0;
	bt->session_reuse = cb->tls_session_reuse != 0;
	bt->timeout_ms = cb->tls_handshake_timeout_ms != 0 ?
	    cb->tls_handshake_timeout_ms : cb->connect_timeout_ms;
	bt->num_addrs = b->num_addrs;
	bt->num_workers = num_workers > 0 ? num_workers : 1;
	if (cb->tls_servername == NULL) {
		bt->sni = SNI_HOST;
	} else if (strcmp(cb->tls_servername, "client") == 0) {
		bt->sni = SNI_CLIENT;
	} else if (strcmp(cb->tls_servername, "none") == 0) {
		bt->sni = SNI_NONE;
	} else {
		bt->sni = SNI_FIXED;
		if ((bt->servername = strdup(cb->tls_servername)) == NULL)
			goto oom;
	}
	if ((cb->tls_verify_name != NULL &&
	    (bt->verify_name = strdup(cb->tls_verify_name)) == NULL) ||
	    backend_tls_alpn(bt, cb) != 0 ||
	    (bt->sessions = calloc(bt->num_addrs * (size_t)bt->num_workers + 1,
	    sizeof(*bt->sessions))) == NULL)
		goto oom;
	if ((bt->ips = calloc(bt->num_addrs + 1, sizeof(*bt->ips))) == NULL)
		goto oom;
	for (size_t i = 0; i < bt->num_addrs; i++) {
		const struct addr *a = &b->addrs[i];
		char ip[INET6_ADDRSTRLEN];

		if (a->ss.ss_family == AF_INET)
			inet_ntop(AF_INET,
			    &((const struct sockaddr_in *)&a->ss)->sin_addr, ip,
			    sizeof(ip));
		else if (a->ss.ss_family == AF_INET6)
			inet_ntop(AF_INET6,
			    &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, ip,
			    sizeof(ip));
		else
			continue;
		if ((bt->ips[i] = strdup(ip)) == NULL)
			goto oom;
	}
	if ((bt->pool = CRYPTO_BUFFER_POOL_new()) == NULL)
		goto oom;
	if ((bt->ctx = backend_tls_ctx(cfg, cb, bt)) == NULL) {
		backend_tls_free(bt);
		return NULL;
	}
	SSL_CTX_set0_buffer_pool(bt->ctx, bt->pool);
	if (!bt->verify)
		log_msg(LOGL_WARNING, "[backend %s]: tls_verify = no: the "
		    "backend's certificate is not checked, so anyone on the path "
		    "to it can read and change the traffic", cb->h.name);
	return bt;
oom:
	config_error(cfg, 0, NULL, "out of memory");
	backend_tls_free(bt);
	return NULL;
}

void
backend_tls_free(struct backend_tls *bt)
{
	if (bt == NULL)
		return;
	SSL_CTX_free(bt->ctx);
	for (size_t i = 0; bt->sessions != NULL &&
	    i < bt->num_addrs * (size_t)bt->num_workers; i++)
		SSL_SESSION_free(bt->sessions[i].session);
	free(bt->sessions);
	for (size_t i = 0; bt->ips != NULL && i < bt->num_addrs; i++)
		free(bt->ips[i]);
	free(bt->ips);
	for (size_t i = 0; i < bt->num_certs; i++)
		backend_tls_cert_free(&bt->certs[i]);
	free(bt->certs);
	CRYPTO_BUFFER_POOL_free(bt->pool);
	free(bt->servername);
	free(bt->verify_name);
	free(bt->alpn);
	free(bt);
}

int
backend_tls_unverified(const struct backend_tls *bt)
{
	return bt != NULL && !bt->verify;
}

int
backend_tls_passes_alpn(const struct backend_tls *bt)
{
	return bt->alpn_client;
}

uint64_t
backend_tls_timeout_ms(const struct backend_tls *bt)
{
	return bt->timeout_ms;
}

/* backend_tls_sni returns the server name sent to address |i|. */
static const char *
backend_tls_sni(const struct backend *b, size_t i, const char *client_sni)
{
	switch (b->tls->sni) {
	case SNI_HOST:
		return b->hosts != NULL ? b->hosts[i] : NULL;
	case SNI_CLIENT:
		return client_sni;
	case SNI_FIXED:
		return b->tls->servername;
	case SNI_NONE:
		break;
	}
	return NULL;
}

const char *
backend_tls_expected(const struct backend *b, size_t i,
    const char *client_sni)
{
	const char *sni = backend_tls_sni(b, i, client_sni);

	return b->tls->verify_name != NULL ? b->tls->verify_name :
	    sni != NULL ? sni : b->tls->ips[i];
}

int
backend_tls_identity(SSL *ssl, const char *name)
{
	X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
	uint8_t bin[16];

	if (name == NULL)
		return 1;
	if (inet_pton(AF_INET, name, bin) == 1 ||
	    inet_pton(AF_INET6, name, bin) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(p, name);
	return X509_VERIFY_PARAM_set1_host(p, name, strlen(name));
}

SSL *
backend_tls_ssl(const struct backend *b, size_t i, int worker,
    const char *client_sni, const uint8_t *client_alpn,
    size_t client_alpn_len)
{
	struct backend_tls *bt = b->tls;
	SSL *ssl = SSL_new(bt->ctx);
	const char *sni = backend_tls_sni(b, i, client_sni);
	struct backend_tls_slot *slot = NULL;

	if (ssl == NULL)
		return NULL;
	if ((sni != NULL && !SSL_set_tlsext_host_name(ssl, sni)) ||
	    !backend_tls_identity(ssl, backend_tls_expected(b, i, client_sni)))
		goto fail;
	if (bt->alpn_client && client_alpn_len > 0) {
		uint8_t wire[256];

		wire[0] = (uint8_t)client_alpn_len;
		memcpy(wire + 1, client_alpn, client_alpn_len);
		if (SSL_set_alpn_protos(ssl, wire, client_alpn_len + 1) != 0)
			goto fail;
	} else if (bt->alpn != NULL &&
	    SSL_set_alpn_protos(ssl, bt->alpn, bt->alpn_len) != 0) {
		goto fail;
	}
	if (worker >= 0 && worker < bt->num_workers)
		slot = &bt->sessions[i * (size_t)bt->num_workers + (size_t)worker];
#ifdef SSL_GROUP_X25519_MLKEM768
	if (slot != NULL && slot->group != 0 &&
	    !SSL_set1_server_supported_groups_hint(ssl, &slot->group, 1))
		goto fail;
#endif
	if (slot != NULL && bt->session_reuse) {
		SSL_set_ex_data(ssl, slot_index, slot);
		if (slot->session != NULL &&
		    strcmp(slot->name, sni != NULL ? sni : "") == 0) {
			/* Offered again until a newer ticket replaces it, as
			 * nginx and HAProxy do with their backends: a TLS 1.3
			 * ticket is single-use only so that a client cannot be
			 * tracked across connections, which does not matter
			 * between a proxy and its own backend, while connections
			 * that start before the last one's tickets arrive would
			 * otherwise all pay a full handshake. */
			SSL_set_session(ssl, slot->session);
		}
	}
	/* Certificates and settings are not needed after the handshake:
	 * shedding them keeps idle connections small. */
	SSL_set_shed_handshake_config(ssl, 1);
	SSL_set_connect_state(ssl);
	return ssl;
fail:
	ERR_clear_error();
	SSL_free(ssl);
	return NULL;
}

void
backend_tls_done(const struct backend *b, size_t i, int worker, SSL *ssl)
{
	struct backend_tls *bt = b->tls;

	if (worker >= 0 && worker < bt->num_workers)
		bt->sessions[i * (size_t)bt->num_workers + (size_t)worker].group =
#ifdef SSL_GROUP_X25519_MLKEM768
		    SSL_get_group_id(ssl);
#else
		    SSL_get_curve_id(ssl);
#endif
}

int
backend_tls_check_alpn(const struct backend *b, SSL *ssl,
    const uint8_t *client_alpn, size_t client_alpn_len)
{
	const uint8_t *got;
	unsigned got_len;

	if (!b->tls->alpn_client || client_alpn_len == 0)
		return 0;
	SSL_get0_alpn_selected(ssl, &got, &got_len);
	return got_len == client_alpn_len &&
	    memcmp(got, client_alpn, got_len) == 0 ? 0 : -1;
}

/* backend_tls_verify_why words a failed verification. */
static enum backend_tls_fail
backend_tls_verify_why(long result, const char *expected, char *buf,
    size_t len)
{
	if (result == X509_V_ERR_HOSTNAME_MISMATCH ||
	    result == X509_V_ERR_IP_ADDRESS_MISMATCH) {
		snprintf(buf, len, "backend tls: name mismatch (expected %s)",
		    expected != NULL ? expected : "-");
		return BACKEND_TLS_FAIL_NAME;
	}
	snprintf(buf, len, "backend tls: %s",
	    X509_verify_cert_error_string(result));
	return BACKEND_TLS_FAIL_CERTIFICATE;
}

enum backend_tls_fail
backend_tls_why(SSL *ssl, int err, int errno_, const char *expected,
    char *buf, size_t len)
{
	long result = SSL_get_verify_result(ssl);
	uint32_t e = ERR_peek_error();
	char detail[160];

	if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
	    result != X509_V_OK) {
		ERR_clear_error();
		return backend_tls_verify_why(result, expected, buf, len);
	}
	if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL) {
		ERR_clear_error();
		snprintf(buf, len, "backend tls: the backend speaks none of the "
		    "ALPN protocols offered");
		return BACKEND_TLS_FAIL_ALPN;
	}
	if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN) {
		ERR_clear_error();
		snprintf(buf, len, "backend tls: %s", errno_ != 0 ?
		    strerror(errno_) : "the backend closed the connection "
		    "during the handshake");
		return BACKEND_TLS_FAIL_CLOSED;
	}
	snprintf(buf, len, "backend tls: %s", log_ssl_error(detail,
	    sizeof(detail)));
	return BACKEND_TLS_FAIL_PROTOCOL;
}

const char *
backend_tls_describe(SSL *ssl, char *buf, size_t len)
{
	snprintf(buf, len, "%s,%s,%s,%s", SSL_get_version(ssl),
	    SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)),
	    SSL_session_reused(ssl) ? "resumed" : "new",
	    SSL_get_verify_result(ssl) == X509_V_OK ? "verified" : "unverified");
	return buf;
}
