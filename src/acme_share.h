/* acme_share.h: what instances behind one address share through the
 * session store (Redis) so that each name is ordered once: a lock per
 * order with an expiry, the issued chain with its key (the key encrypted
 * with AES-256-GCM under a key derived from shared_key_file, never stored
 * in clear), and the challenge answers, so that whichever instance the CA
 * reaches can answer. Used by the ACME thread only, with blocking calls
 * bounded by a short timeout; a store that is down makes each call fail
 * and the caller order on its own. */
#ifndef TLSPROXY_ACME_SHARE_H
#define TLSPROXY_ACME_SHARE_H

#include <openssl/base.h>
#include <stddef.h>
#include <stdint.h>

struct acme_share;

/* acme_share_new prepares sharing through store |url| (session_store
 * syntax) under key prefix |prefix|, encrypting with the first key of
 * ticket-key file |key_file|. Connects lazily. NULL with |err| when the
 * URL or the key file is bad. */
struct acme_share *acme_share_new(const char *url, const char *prefix,
    const char *key_file, char *err, size_t err_len);

void acme_share_free(struct acme_share *sh);

enum acme_lock {
	ACME_LOCK_TAKEN, /* ours: order */
	ACME_LOCK_BUSY,  /* another instance orders */
	ACME_LOCK_DOWN,  /* the store cannot say: order alone */
};

/* acme_share_lock takes (or refreshes, when already ours) the lock of
 * order |key| for |ttl_ms|. */
enum acme_lock acme_share_lock(struct acme_share *sh, const char *key,
    uint64_t ttl_ms);

/* acme_share_unlock releases the lock of |key| if it is ours. */
void acme_share_unlock(struct acme_share *sh, const char *key);

/* acme_share_put stores the chain (PEM) and key issued for |key|.
 * Returns 0 or -1. */
int acme_share_put(struct acme_share *sh, const char *key, const char *pem,
    size_t pem_len, EVP_PKEY *pkey);

/* acme_share_get fetches the chain and key stored for |key|: 1 with
 * |*pem| (free) and |*pkey| set, 0 when there is none, -1 when the store
 * is down or what it holds cannot be decrypted (logged). */
int acme_share_get(struct acme_share *sh, const char *key, char **pem,
    size_t *pem_len, EVP_PKEY **pkey);

/* acme_share_set_answer publishes a challenge answer: |kind| "tls" with
 * the name as |id|, or "http" with the token, and the key
 * authorization. acme_share_clear_answer removes it. */
int acme_share_set_answer(struct acme_share *sh, const char *kind,
    const char *id, const char *key_authorization);
void acme_share_clear_answer(struct acme_share *sh, const char *kind,
    const char *id);

/* acme_share_sync_answers makes the local answer tables (acme_challenge.h)
 * hold what the store holds, as far as this instance did not publish it
 * itself. Returns 0, or -1 when the store is down. */
int acme_share_sync_answers(struct acme_share *sh);

/* acme_share_forget_answers removes from the local tables every answer
 * taken from the store, once this instance no longer waits on another. */
void acme_share_forget_answers(struct acme_share *sh);

#endif
