/* acme.h: automatic certificates. The ACME side is a thread of its own
 * that keeps every order of the running generation served: at start it
 * loads each order's certificate from state_dir (a valid one on disk
 * means the CA is not contacted), orders what is missing, renews what is
 * due (renew_before, else the CA's renewal information, else a third of
 * the lifetime before expiry), persists certificates and keys with atomic
 * writes, and publishes them into the orders' slots (acme_cert.h), which
 * handshakes read: no reload is involved and open connections are not
 * touched. Failures keep the current certificate and are retried with
 * exponential backoff capped at one hour, or after the CA's Retry-After.
 * Network calls are bounded and block only this thread. */
#ifndef TLSPROXY_ACME_H
#define TLSPROXY_ACME_H

#include <stddef.h>
#include <stdint.h>

struct generation;
struct acme;

/* acme_new starts the ACME thread (idle until acme_sync gives it orders).
 * |changed| (may be NULL) is called from that thread, with |arg|, after a
 * certificate was put in service, so that the control side can follow it
 * (OCSP); it must only signal, never block. Returns NULL on failure. */
struct acme *acme_new(void (*changed)(void *arg), void *arg);

/* acme_sync makes the thread follow the ACME contexts of |g|: new orders
 * are added, orders no context uses any more are dropped (one in progress
 * finishes first). Control thread. */
void acme_sync(struct acme *a, const struct generation *g);

/* acme_free cancels whatever is in flight, stops the thread and releases
 * everything. NULL is fine. */
void acme_free(struct acme *a);

/* One order's state, for /status and /metrics. */
struct acme_order_status {
	const char *names;      /* comma-separated */
	const char *account;
	int64_t not_after;      /* 0: no certificate yet */
	int64_t renew_at;       /* 0: unknown yet */
	int64_t next_attempt;   /* when the thread looks at the order next */
	int64_t last_attempt;   /* 0: never ordered since start */
	const char *last_result; /* "ok", "failed" or "-" */
	const char *last_error;  /* "" when none */
};

/* acme_foreach calls |cb| for each order, under the ACME lock: |cb| must
 * copy what it keeps and must not call back into acme. */
void acme_foreach(struct acme *a,
    void (*cb)(void *arg, const struct acme_order_status *st), void *arg);

/* acme_counters reports orders that succeeded and failures by reason
 * (ACME_FAIL_COUNT entries, acme_client.h). */
void acme_counters(struct acme *a, uint64_t *ok, uint64_t *failed);

/* acme_order_dir writes the directory, under |state_dir|, where the order
 * with slot key |key| and first name |first| keeps its certificate.
 * Returns 0 or -1 when it does not fit. */
int acme_order_dir(const char *state_dir, const char *key, const char *first,
    char *buf, size_t len);

/* acme_check_disk warns on stderr, for tlsproxy -t, about each ACME
 * context of |g| that has no certificate in its state_dir yet. */
void acme_check_disk(const struct generation *g);

#endif
