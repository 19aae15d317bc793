/* ocsp_fetch.h: fetching, verifying, refreshing and persisting the OCSP
 * responses tlsproxy staples (ocsp = auto). Runs on the control thread,
 * never during a client's handshake; results go to the staple slots. */
#ifndef TLSPROXY_OCSP_FETCH_H
#define TLSPROXY_OCSP_FETCH_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct generation;
struct ocsp_fetcher;

/* ocsp_fetcher_new makes the fetcher for the control loop |base|. */
struct ocsp_fetcher *ocsp_fetcher_new(struct event_base *base);

/* ocsp_fetcher_sync makes the fetcher follow the certificates of the
 * generation |g| that use ocsp = auto: new ones are loaded from the
 * cache, else refreshed on the schedule of the response their slot holds
 * already (staple_restore), else fetched at once; known ones keep their
 * schedule, others are dropped. Responders' names are looked up with
 * |g|'s [global] resolver and resolver_timeout, never by blocking the
 * loop; when they change, fetches under way start again with the new
 * setting. */
void ocsp_fetcher_sync(struct ocsp_fetcher *f, const struct generation *g);

/* ocsp_fetcher_refresh fetches every response again now (SIGUSR2, a
 * reload, POST /ocsp/refetch), except those whose fetch is already under
 * way; returns how many fetches it started. */
size_t ocsp_fetcher_refresh(struct ocsp_fetcher *f);

/* What the metrics show of one stapled certificate. Times are Unix
 * seconds, 0 when unknown. */
struct ocsp_task_status {
	const char *context;
	int key_type;        /* enum tls_key_type */
	const char *source;  /* responder URL or ocsp file */
	int stapled;         /* a valid response is stapled now */
	int status;          /* enum ocsp_status of the last response, -1 none */
	int64_t this_update, valid_until;
	int64_t last_attempt, next_refresh;
	int last_ok;         /* the last attempt gave a usable response */
};

/* ocsp_fetcher_foreach calls |cb| for every certificate it follows. */
void ocsp_fetcher_foreach(const struct ocsp_fetcher *f,
    void (*cb)(const struct ocsp_task_status *, void *), void *arg);

/* ocsp_fetch_save writes |der| to |path| through a temporary file next to
 * it that is synced, closed and then renamed over |path|, so a reader
 * finds the old response or the new one, never part of one. Returns 0, or
 * -1 with errno set and the temporary file removed. */
int ocsp_fetch_save(const char *path, const uint8_t *der, size_t der_len);

/* ocsp_fetcher_free stops every fetch. It runs passes of the loop of
 * |base| that do not wait, so that the resolver can release what its
 * lookups still hold: call it once the loop has ended and every other
 * event on it is gone. NULL is fine. */
void ocsp_fetcher_free(struct ocsp_fetcher *f);

#endif
