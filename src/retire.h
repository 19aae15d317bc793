/* retire.h: deferred freeing of the snapshots that worker threads read
 * without locks (quiescent-state based reclamation).
 *
 * A writer publishes a new snapshot with an atomic pointer swap and hands
 * the old one to retire_defer. Readers are threads registered with
 * retire_reader_add; between two calls of retire_quiescent a reader may
 * hold snapshot pointers, and at the call it holds none. An object retired
 * at some moment is freed once every reader registered at that moment has
 * passed a quiescent point since, or has been removed. Reading costs the
 * reader nothing: no lock, no counter it writes per read.
 *
 * An idle reader would never pass a quiescent point, so retiring calls
 * each reader's wake function; the reader answers from its loop with
 * retire_quiescent, and whoever collects calls retire_collect afterwards.
 * Without readers (tests, startup, shutdown) retired objects are freed at
 * once. */
#ifndef TLSPROXY_RETIRE_H
#define TLSPROXY_RETIRE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Embedded in each object that may be retired, so retiring never
 * allocates and cannot fail. */
struct retire_node {
	struct retire_node *next;
	uint64_t epoch;
	void (*free_fn)(void *);
	void *arg;
};

/* Embedded in each reader (one per thread), owned by it. */
struct retire_reader {
	struct retire_reader *next;
	/* The epoch seen at the reader's last quiescent point. */
	_Atomic uint64_t seen;
	void (*wake)(void *);
	void *wake_arg;
};

/* retire_reader_add registers |r| for the calling thread. |wake| (may be
 * NULL) is called from the retiring thread, with a lock held, when |r|
 * must pass a quiescent point: it must only signal the reader's thread
 * (e.g. write to its wake-up descriptor), never block or retire. |r| must
 * be registered before the thread reads any snapshot. */
void retire_reader_add(struct retire_reader *r, void (*wake)(void *),
    void *wake_arg);

/* retire_reader_remove unregisters |r|, from its own thread once it holds
 * no snapshot pointer any more; |r| then delays nothing. */
void retire_reader_remove(struct retire_reader *r);

/* retire_quiescent declares that |r|'s thread holds no snapshot pointer.
 * Lock-free; called from |r|'s own thread. */
void retire_quiescent(struct retire_reader *r);

/* retire_defer arranges for |free_fn(arg)| to run once no reader can
 * still hold the object that embeds |n|; the caller has already made the
 * object unreachable for new readers. Lagging readers are woken. Frees
 * at once when no reader is registered. */
void retire_defer(struct retire_node *n, void (*free_fn)(void *), void *arg);

/* retire_collect frees every retired object that all readers have passed
 * a quiescent point since, outside any lock. Any thread. */
void retire_collect(void);

/* retire_pending returns how many retired objects wait to be freed. */
size_t retire_pending(void);

#endif
