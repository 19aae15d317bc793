/* tls_ctx.h: one [context] section built into BoringSSL SSL_CTXs (one per
 * key type), plus the per-connection settings BoringSSL copies into an SSL
 * when it is created and that must follow a switch of context.
 *
 * Current BoringSSL could hold both certificates of a context as
 * SSL_CREDENTIALs in one SSL_CTX and choose between them itself. The 2022
 * snapshot tlsproxy still builds with when the pinned release cannot be
 * had lacks that API, and keeping two ways of choosing a certificate
 * would be more code, not less: the ClientHello callback chooses, the
 * same way with either library. */
#ifndef TLSPROXY_TLS_CTX_H
#define TLSPROXY_TLS_CTX_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct backend;
struct config;
struct conf_context;
struct conf_listener;
struct acme_slot;
struct staple_slot;

enum tls_key_type {
	TLS_KEY_RSA,
	TLS_KEY_ECDSA,
	TLS_KEY_NUM,
};

/* An "alpn_backend" item resolved against the generation's backends. */
struct tls_route {
	char *protocol;
	struct backend *backend;
};

struct tls_ctx {
	char *name;
	const struct conf_context *cc;
	const struct conf_listener *cl; /* whose TLS overrides apply, or NULL */
	SSL_CTX *ctx[TLS_KEY_NUM]; /* NULL where the context has no such key */
	uint16_t ecdsa_sigalg;     /* the TLS 1.3 signature scheme of the key */
	uint16_t ecdsa_group;      /* the TLS group of the key's curve */
	uint16_t min_version, max_version;
	uint16_t max_send_fragment;
	int server_preference;
	int verify_mode; /* SSL_VERIFY_* */
	int verify_depth;
	int reject_unauthorized;
	/* ecdh_curve: SSL_GROUP_* IDs in our order, each with its tier (0
	 * first); groups of one tier are of equal preference. */
	uint16_t groups[8];
	uint8_t group_tier[8];
	size_t num_groups;
	uint8_t *alpn; /* wire format, server preference order */
	size_t alpn_len;
	int alpn_strict;
	uint8_t *npn;
	size_t npn_len;
	/* OCSP: the staple slot of each certificate (a reference), and a
	 * response read from an ocsp file, installed when the generation is
	 * activated. */
	struct staple_slot *staple[TLS_KEY_NUM];
	uint8_t *ocsp_der[TLS_KEY_NUM];
	size_t ocsp_len[TLS_KEY_NUM];
	int64_t ocsp_expires[TLS_KEY_NUM];
	/* ocsp = auto: what the fetcher needs (NULL url: nothing to do). */
	X509 *leaf[TLS_KEY_NUM];
	X509 *issuer[TLS_KEY_NUM];
	char *ocsp_url[TLS_KEY_NUM];
	/* Each certificate's algorithms, for PROXY protocol v2. */
	char sig_alg[TLS_KEY_NUM][32];
	char key_alg[TLS_KEY_NUM][16];
	/* acme: the order whose certificate handshakes get (NULL: the
	 * context has its own certificates). */
	struct acme_slot *acme;
	/* Routing: resolved by generation.c once backends exist. */
	struct backend *backend;
	struct tls_route *routes;
	size_t num_routes;
};

/* tls_ctx_init fills |t| from |cc| with the TLS settings it inherits from
 * listener |cl| (NULL: none) and [global]: reads and checks certificates,
 * keys, CAs and CRLs and configures the SSL_CTXs. Problems go to |cfg|'s
 * error list with the file and line of the key concerned; returns 0 or
 * -1. */
int tls_ctx_init(struct tls_ctx *t, struct config *cfg,
    const struct conf_listener *cl, const struct conf_context *cc);

/* tls_ctx_release frees what tls_ctx_init made. */
void tls_ctx_release(struct tls_ctx *t);

/* tls_ctx_set_callbacks installs the ClientHello callback (certificate
 * selection) and the server-name callback on every SSL_CTX of |t|. */
void tls_ctx_set_callbacks(struct tls_ctx *t,
    enum ssl_select_cert_result_t (*select)(const SSL_CLIENT_HELLO *),
    int (*servername)(SSL *, int *, void *));

/* tls_ctx_activate installs the responses read from ocsp files into the
 * staple slots (or clears them with ocsp = off). */
void tls_ctx_activate(struct tls_ctx *t);

/* Certificate files read for a configuration key |key| at |line|, with
 * problems reported to |cfg| (tls_ctx.c serves contexts with them, and
 * backend_tls.c client certificates):
 * - tls_ctx_read_chain: a PEM chain, leaf first, each issued by the next;
 * - tls_ctx_read_passphrase: the first line of a passphrase file (NULL
 *   |path|: none), in |buf|; |*failed| set when it cannot be read;
 * - tls_ctx_read_key: a PEM private key, decrypted with |pass| (an
 *   encrypted key without one names |pass_keys| as what to set);
 * - tls_ctx_read_pfx: a PKCS#12 file's key and chain, leaf first; on
 *   failure what was read is left for the caller to free. */
STACK_OF(X509) *tls_ctx_read_chain(struct config *cfg, int line,
    const char *key, const char *path);
const char *tls_ctx_read_passphrase(struct config *cfg, int line,
    const char *key, const char *path, char *buf, size_t len, int *failed);
EVP_PKEY *tls_ctx_read_key(struct config *cfg, int line, const char *key,
    const char *path, const char *pass, const char *pass_keys);
int tls_ctx_read_pfx(struct config *cfg, int line, const char *key,
    const char *path, const char *pass, const char *pass_keys,
    EVP_PKEY **out_key, STACK_OF(X509) **out_chain);

/* tls_ctx_load_crls adds the CRLs of every PEM file in |files| (the
 * values of configuration key |key|) to |store| and turns CRL checking on
 * for the whole chain. Problems go to |cfg|; returns 0 or -1. */
struct strlist;
int tls_ctx_load_crls(struct config *cfg, const char *key,
    const struct strlist *files, X509_STORE *store);

/* tls_ctx_covers_name returns whether a certificate of |t| is valid for
 * host name |name|. */
int tls_ctx_covers_name(const struct tls_ctx *t, const char *name);

/* tls_ctx_set_ech_keys has |t|'s SSL_CTXs decrypt Encrypted Client Hellos
 * with |keys| (the caller keeps its reference). Returns 0 or -1. */
int tls_ctx_set_ech_keys(struct tls_ctx *t, SSL_ECH_KEYS *keys);

/* tls_ctx_default returns the SSL_CTX new connections start with. */
SSL_CTX *tls_ctx_default(const struct tls_ctx *t);

/* tls_ctx_apply switches |ssl| to |t| during the ClientHello callback:
 * the certificate (ECDSA when the client can use it, else RSA), and, if
 * |from| (the context the SSL was created from) is another context, every
 * setting BoringSSL keeps per connection. Returns 0 or -1. */
int tls_ctx_apply(const struct tls_ctx *t, const struct tls_ctx *from,
    const SSL_CLIENT_HELLO *hello);

/* tls_ctx_key_type returns which certificate of |t| a handshake used. */
enum tls_key_type tls_ctx_key_type(const struct tls_ctx *t, const SSL *ssl);

/* tls_ctx_auth describes the client-certificate result of a handshake
 * made under |t| (NULL: none chosen) for logs: "-" (not requested), "none",
 * "authorized", or the verification error, lower case with underscores. */
const char *tls_ctx_auth(const struct tls_ctx *t, const SSL *ssl, char *buf,
    size_t buf_len);

/* tls_ctx_peer_subject writes the subject of the client's certificate
 * (RFC 2253, escaped) into |buf|, or returns "-" without one. */
const char *tls_ctx_peer_subject(const SSL *ssl, char *buf, size_t buf_len);

/* tls_ctx_group_name returns tlsproxy's name of TLS group |id| (the one
 * ecdh_curve takes), or NULL for a group it does not know. */
const char *tls_ctx_group_name(uint16_t id);

/* tls_ctx_list_ciphers and tls_ctx_list_curves print what the linked
 * BoringSSL supports, one name per line. */
void tls_ctx_list_ciphers(void);
void tls_ctx_list_curves(void);

#endif
