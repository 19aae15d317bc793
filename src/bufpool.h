/* bufpool.h: equally sized byte buffers recycled per thread, so that
 * connections can hold a buffer only while data is in flight. Nothing here
 * locks: a pool belongs to one worker. */
#ifndef TLSPROXY_BUFPOOL_H
#define TLSPROXY_BUFPOOL_H

#include <stddef.h>

struct buf {
	struct buf *next_free;
	size_t start, end; /* unread bytes are data[start..end) */
	char data[];
};

struct bufpool;

/* bufpool_new makes a pool of |size|-byte buffers keeping up to |max_free|
 * unused ones. */
struct bufpool *bufpool_new(size_t size, size_t max_free);

/* bufpool_free frees |p| and its unused buffers; lent ones must have been
 * returned. NULL is fine. */
void bufpool_free(struct bufpool *p);

/* bufpool_size returns the capacity of |p|'s buffers. */
size_t bufpool_size(const struct bufpool *p);

/* bufpool_get returns an empty buffer, or NULL when out of memory. */
struct buf *bufpool_get(struct bufpool *p);

/* bufpool_put returns |b| to |p|. NULL is fine. */
void bufpool_put(struct bufpool *p, struct buf *b);

#endif
