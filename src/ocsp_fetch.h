/* ocsp_fetch.h: fetching, verifying, refreshing and persisting the OCSP
 * responses tlsproxy staples (ocsp = auto). Runs on the control thread,
 * never during a client's handshake; results go to the staple slots. */
#ifndef TLSPROXY_OCSP_FETCH_H
#define TLSPROXY_OCSP_FETCH_H

struct event_base;
struct generation;
struct ocsp_fetcher;

/* ocsp_fetcher_new makes the fetcher for the control loop |base|. */
struct ocsp_fetcher *ocsp_fetcher_new(struct event_base *base);

/* ocsp_fetcher_sync makes the fetcher follow the certificates of the
 * generation |g| that use ocsp = auto: new ones are loaded from the cache
 * or fetched at once, known ones keep their schedule, others are
 * dropped. */
void ocsp_fetcher_sync(struct ocsp_fetcher *f, const struct generation *g);

/* ocsp_fetcher_refresh fetches every response again now (SIGUSR1),
 * except those whose fetch is already under way. */
void ocsp_fetcher_refresh(struct ocsp_fetcher *f);

/* ocsp_fetcher_free stops every fetch. NULL is fine. */
void ocsp_fetcher_free(struct ocsp_fetcher *f);

#endif
