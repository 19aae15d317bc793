/* acme_challenge.h: the answers to ACME challenges while an order is being
 * validated. tls-alpn-01 (RFC 8737): a handshake that offers the ALPN
 * protocol acme-tls/1 for a name being validated gets that name's
 * challenge certificate and nothing else; acme-tls/1 for any other name
 * is refused. http-01 (RFC 8555 8.3): the key authorization of a token,
 * served by the acme_http listener. The ACME side sets and clears
 * answers; every worker reads the tls-alpn-01 table without a lock
 * (retire.h), so whichever worker the CA reaches answers. */
#ifndef TLSPROXY_ACME_CHALLENGE_H
#define TLSPROXY_ACME_CHALLENGE_H

#include <openssl/ssl.h>
#include <stddef.h>

/* The ALPN protocol of tls-alpn-01. */
#define ACME_TLS_ALPN "acme-tls/1"

/* acme_challenge_set_tls makes |cert| (DER) with |key| the answer for
 * |name| (replacing any), taking its own references. Returns 0 or -1 out
 * of memory. ACME side. */
int acme_challenge_set_tls(const char *name, CRYPTO_BUFFER *cert,
    EVP_PKEY *key);

/* acme_challenge_clear_tls removes the answer for |name|, if any. */
void acme_challenge_clear_tls(const char *name);

enum acme_hello {
	ACME_HELLO_NONE,   /* not a tls-alpn-01 handshake */
	ACME_HELLO_ANSWER, /* answered: |ssl| has the challenge certificate */
	ACME_HELLO_REFUSE, /* acme-tls/1 for a name not being validated */
};

/* acme_challenge_hello looks at a ClientHello (from the early callback)
 * with server name |sni| (NULL: none). For a tls-alpn-01 handshake of a
 * name being validated it switches |hello->ssl| to the challenge context
 * (which selects acme-tls/1, asks for no client certificate and keeps no
 * session) with the name's certificate. Worker threads registered with
 * retire_reader_add; takes no lock. */
enum acme_hello acme_challenge_hello(const SSL_CLIENT_HELLO *hello,
    const char *sni);

/* acme_challenge_set_http makes |key_authorization| the answer for
 * |token|; acme_challenge_clear_http removes it. Return 0 or -1 out of
 * memory. */
int acme_challenge_set_http(const char *token, const char *key_authorization);
void acme_challenge_clear_http(const char *token);

/* acme_challenge_http returns a copy of the key authorization for |token|
 * (the caller frees it), or NULL when there is none. Any thread. */
char *acme_challenge_http(const char *token);

/* acme_challenge_count returns how many answers of each kind are set, for
 * tests and /status. */
void acme_challenge_count(size_t *num_tls, size_t *num_http);

#endif
