/* acme_client.h: RFC 8555 with one account at one CA, step by step and
 * synchronously: every call is bounded by an absolute deadline and gives
 * up as soon as the cancel descriptor becomes readable. It runs on the
 * ACME thread (acme.c), never on a loop. Requests are JWS-signed with the
 * account key (ES256); a badNonce answer is retried with the nonce it
 * carries; problem documents become errors with their type and detail. */
#ifndef TLSPROXY_ACME_CLIENT_H
#define TLSPROXY_ACME_CLIENT_H

#include <openssl/base.h>
#include <stddef.h>
#include <stdint.h>

/* Why a step failed, for logs and metrics (acme_fail_names). */
enum acme_fail {
	ACME_FAIL_NETWORK,       /* resolve, connect, TLS, timeout */
	ACME_FAIL_RATE_LIMITED,  /* rateLimited or HTTP 429 */
	ACME_FAIL_BAD_NONCE,     /* badNonce past the retries */
	ACME_FAIL_AUTHORIZATION, /* a challenge or authorization invalid */
	ACME_FAIL_PROTOCOL,      /* other problems, malformed answers */
	ACME_FAIL_CERTIFICATE,   /* the issued chain does not fit */
	ACME_FAIL_CANCELLED,     /* shutdown or reload */
	ACME_FAIL_COUNT,
};

extern const char *const acme_fail_names[ACME_FAIL_COUNT];

/* What one account needs; the strings stay the caller's. */
struct acme_account_conf {
	const char *name;
	const char *directory;
	const char *email;        /* NULL: none */
	const char *ca;           /* NULL: the system store */
	const char *eab_kid;      /* NULL: no external account binding */
	const uint8_t *eab_key;
	size_t eab_key_len;
};

/* The outcome of a failed call. */
struct acme_error {
	enum acme_fail kind;
	uint64_t retry_after_ms; /* from Retry-After; 0: none given */
	char msg[512];
};

struct acme_client;

/* acme_client_new prepares a client for |conf| signing with |account_key|
 * (a reference is taken). Returns NULL with |err| set on failure. */
struct acme_client *acme_client_new(const struct acme_account_conf *conf,
    EVP_PKEY *account_key, int cancel_fd, struct acme_error *err);

/* acme_client_free releases |c|. NULL is fine. */
void acme_client_free(struct acme_client *c);

/* acme_client_register reads the directory and makes sure the account
 * exists (creating it, agreeing to the terms, with the external account
 * binding when configured). Returns 0 or -1 with |err|. */
int acme_client_register(struct acme_client *c, uint64_t deadline_ms,
    struct acme_error *err);

/* acme_client_has_ari returns whether the directory offers renewal
 * information (RFC 9773); valid after acme_client_register. */
int acme_client_has_ari(const struct acme_client *c);

/* An order's outcome: the chain (PEM, leaf first) and its key. */
struct acme_issued {
	char *chain_pem;
	size_t chain_len;
	EVP_PKEY *key;
};

void acme_issued_free(struct acme_issued *is);

/* How the CA validates the names. */
enum acme_challenge_type {
	ACME_CHALLENGE_TLS_ALPN,
	ACME_CHALLENGE_HTTP,
};

/* What the caller follows of an order; any member may be NULL. */
struct acme_hooks {
	void *arg;
	/* One line per step. */
	void (*log)(void *arg, const char *line);
	/* Called between requests and while waiting: e.g. to keep a lock. */
	void (*tick)(void *arg);
	/* An answer was set (|key_authorization|) or cleared (NULL) in the
	 * local tables: "tls" with a name, or "http" with a token. Called
	 * before the CA is told to validate. */
	void (*answer)(void *arg, const char *kind, const char *id,
	    const char *key_authorization);
};

/* acme_client_order orders a certificate for |names| (the first is the
 * subject), answering the challenges of type |type| through
 * acme_challenge.h until the CA has validated them, with a new key of
 * type |rsa| (0: ECDSA P-256); |replaces| (NULL: none) is the ARI
 * identifier of the certificate it renews. Returns 0 with |out| filled,
 * or -1 with |err|. */
int acme_client_order(struct acme_client *c, const char *const *names,
    size_t num_names, enum acme_challenge_type type, int rsa,
    const char *replaces, uint64_t deadline_ms, struct acme_issued *out,
    const struct acme_hooks *hooks, struct acme_error *err);

/* acme_client_renewal_info asks the CA when the certificate with ARI
 * identifier |cert_id| should be renewed: a window [*start, *end]
 * (seconds since the epoch), and when to ask again in *retry_after_ms
 * (0: not said). Returns 0, or -1 with |err|. */
int acme_client_renewal_info(struct acme_client *c, const char *cert_id,
    uint64_t deadline_ms, int64_t *start, int64_t *end,
    uint64_t *retry_after_ms, struct acme_error *err);

#endif
