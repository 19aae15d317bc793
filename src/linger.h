/* linger.h: lingering close. A socket closed while the peer is still
 * sending answers that peer's next segments with a reset, and a reset can
 * make the peer's stack fail its writes, or drop what it had not yet read,
 * before it sees our last bytes (an alert, a close_notify). So instead of
 * closing at once, tlsproxy ends its side with a FIN and reads and
 * discards what the client still sends, for a bounded time and number of
 * bytes, then closes. */
#ifndef TLSPROXY_LINGER_H
#define TLSPROXY_LINGER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct linger_set;

/* Bounds of one lingering socket: whichever comes first ends it. */
#define LINGER_MAX_MS 2000
#define LINGER_MAX_BYTES (4u << 20)
/* Sockets one worker lets linger at once; past it they close at once. */
#define LINGER_MAX_SOCKETS 4096

/* linger_set_new returns an empty set whose sockets are watched on
 * |base|, or NULL when out of memory. */
struct linger_set *linger_set_new(struct event_base *base);

/* linger_close takes ownership of socket |fd|: it half-closes it for
 * writing and closes it once the peer has closed its side, has sent more
 * than LINGER_MAX_BYTES or LINGER_MAX_MS have passed. With |ls| NULL or
 * full the socket is closed at once. */
void linger_close(struct linger_set *ls, int fd);

/* linger_count returns how many sockets linger in |ls|. */
size_t linger_count(const struct linger_set *ls);

/* linger_set_free closes every socket still lingering and frees |ls|.
 * NULL is fine. */
void linger_set_free(struct linger_set *ls);

#endif
