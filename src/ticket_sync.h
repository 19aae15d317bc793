/* ticket_sync.h: ticket keys shared through the session store
 * (ticket_keys = redis), run by the control thread. */
#ifndef TLSPROXY_TICKET_SYNC_H
#define TLSPROXY_TICKET_SYNC_H

#include <stdint.h>

struct event_base;
struct strlist;
struct ticket_sync;

/* ticket_sync_new polls the store at |url| from |base| and installs its
 * keys, rotating them when the first is older than |rotation_ms| and
 * keeping enough to decrypt tickets for |session_timeout_ms|. The store's
 * host name is looked up as session_store_new does, with |resolver| and
 * |resolver_timeout_ms|. */
struct ticket_sync *ticket_sync_new(struct event_base *base, const char *url,
    const char *prefix, uint64_t rotation_ms, uint64_t session_timeout_ms,
    const struct strlist *resolver, uint64_t resolver_timeout_ms);

/* ticket_sync_free stops it (the keys in use stay). NULL is fine. As
 * with session_store_free, a name lookup in flight is released on the
 * next turn of the loop of |base|. */
void ticket_sync_free(struct ticket_sync *ts);

#endif
