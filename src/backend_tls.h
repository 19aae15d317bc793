/* backend_tls.h: TLS to a backend (the tls.connect side): the SSL_CTX a
 * [backend] with tls = yes builds, the SSL of each connection to it
 * (server name, identity to verify, ALPN, a session to resume), sessions
 * kept per backend address and worker, and what a failure is called. */
#ifndef TLSPROXY_BACKEND_TLS_H
#define TLSPROXY_BACKEND_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct backend;
struct config;
struct conf_backend;

/* Why a backend handshake failed, for the metrics. */
enum backend_tls_fail {
	BACKEND_TLS_FAIL_CERTIFICATE, /* chain, expiry, CA, CRL */
	BACKEND_TLS_FAIL_NAME,        /* identity mismatch */
	BACKEND_TLS_FAIL_PROTOCOL,    /* alerts, versions, ciphers, garbage */
	BACKEND_TLS_FAIL_TIMEOUT,
	BACKEND_TLS_FAIL_CLOSED,      /* closed or reset mid-handshake */
	BACKEND_TLS_FAIL_ALPN,        /* not the protocol the client got */
	BACKEND_TLS_FAIL_COUNT,
};

extern const char *const backend_tls_fail_names[BACKEND_TLS_FAIL_COUNT];

struct backend_tls;

/* backend_tls_new builds |cb|'s TLS settings for the |num_addrs| resolved
 * addresses of backend |b|, with session slots for |num_workers| workers.
 * Files are read now; problems go to |cfg| with the key's line. NULL on
 * error. */
struct backend_tls *backend_tls_new(struct config *cfg,
    const struct conf_backend *cb, const struct backend *b, int num_workers);

void backend_tls_free(struct backend_tls *bt);

/* backend_tls_unverified returns whether |bt| skips verification. */
int backend_tls_unverified(const struct backend_tls *bt);

/* backend_tls_passes_alpn returns whether |bt| offers the backend the
 * client's ALPN protocol (tls_alpn = client). */
int backend_tls_passes_alpn(const struct backend_tls *bt);

/* backend_tls_timeout_ms returns the time allowed for one handshake. */
uint64_t backend_tls_timeout_ms(const struct backend_tls *bt);

/* backend_tls_ssl makes the client SSL for a connection to address |i|
 * of |b| on worker |worker|: the server name (|client_sni| for
 * tls_servername = client), the identity to verify, ALPN (|client_alpn|
 * for tls_alpn = client) and the session to resume. The caller attaches a
 * BIO. NULL when out of memory. */
SSL *backend_tls_ssl(const struct backend *b, size_t i, int worker,
    const char *client_sni, const uint8_t *client_alpn,
    size_t client_alpn_len);

/* backend_tls_done records what a finished handshake with address |i|
 * of |b| on worker |worker| chose, for the next one. */
void backend_tls_done(const struct backend *b, size_t i, int worker,
    SSL *ssl);

/* backend_tls_check_alpn checks, after the handshake, that a backend
 * offered the client's protocol chose it. Returns 0 or -1. */
int backend_tls_check_alpn(const struct backend *b, SSL *ssl,
    const uint8_t *client_alpn, size_t client_alpn_len);

/* backend_tls_expected returns the identity a connection to address |i|
 * of |b| checks the certificate against: tls_verify_name, else the
 * server name sent, else the address (NULL for a unix socket). */
const char *backend_tls_expected(const struct backend *b, size_t i,
    const char *client_sni);

/* backend_tls_why names why a handshake failed, as "backend tls: ..."
 * text in |buf|, from |ssl|'s state, SSL_get_error's |err|, |errno_| and
 * the identity |expected|. Returns the kind. */
enum backend_tls_fail backend_tls_why(SSL *ssl, int err, int errno_,
    const char *expected, char *buf, size_t len);

/* backend_tls_load_ca loads the trust anchors of the PEM file |ca_file|,
 * or of the system store (Debian's ca-certificates bundle) when it is
 * NULL, into |ctx|. |key| is the setting that names a CA file ("tls_ca"
 * for a [backend]), for the messages. On failure it writes why to |err|,
 * in the words [backend] tls_ca uses: "cannot open 'F': REASON", "cannot
 * load CA certificates from 'F' (REASON)", or "no KEY, and the system
 * store 'F' cannot be read: install ca-certificates or set KEY"; it
 * returns -1 when |ca_file| failed and -2 when the system store did.
 * Returns 0 on success. */
int backend_tls_load_ca(SSL_CTX *ctx, const char *ca_file, const char *key,
    char *err, size_t err_len);

/* backend_tls_client_ctx makes a verifying TLS client SSL_CTX, TLS 1.2
 * to 1.3, trusting |ca_file| or the system store (NULL), loaded as
 * backend_tls_load_ca does (|key| as there). Every handshake checks the
 * chain (SSL_VERIFY_PEER); backend_tls_identity sets the name. NULL with
 * the reason in |err| on failure. */
SSL_CTX *backend_tls_client_ctx(const char *ca_file, const char *key,
    char *err, size_t err_len);

/* backend_tls_identity sets what the certificate presented to |ssl|
 * must be valid for: an IP literal (v4, or v6 without brackets) is
 * checked against IP address SANs only, anything else as a DNS name
 * (RFC 6125). NULL checks the chain only. Returns 1, or 0 on failure. */
int backend_tls_identity(SSL *ssl, const char *name);

/* backend_tls_describe writes "VERSION,CIPHER,new|resumed,verified|
 * unverified" for the access log. */
const char *backend_tls_describe(SSL *ssl, char *buf, size_t len);

#endif
