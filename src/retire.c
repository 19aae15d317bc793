/* retire.c: quiescent-state based reclamation.
 *
 * Why it is safe: a writer swaps the pointer, then (under retire_lock)
 * bumps the epoch to E and tags the old object with E. A reader's
 * quiescent point loads the epoch (acquire) and stores it in |seen|
 * (release). If a reader stored a value >= E, its load came after the
 * bump and so after the swap: every later pointer load of that reader
 * finds the new object, and every earlier use of the old one happened
 * before the store that collection reads (acquire). Readers that register
 * later load an epoch >= E, or are seen by the tagging, both under the
 * same lock. */
#include "retire.h"

#include <pthread.h>

/* Guards both lists. Taken by writers, by collection, and by readers only
 * when they register or leave: never on a read. */
static pthread_mutex_t retire_lock = PTHREAD_MUTEX_INITIALIZER;
static struct retire_reader *retire_readers;
/* Oldest first: epochs grow along the list, so what may be freed is
 * always a prefix. */
static struct retire_node *retire_head;
static struct retire_node **retire_tail = &retire_head;
static size_t retire_num;
static _Atomic uint64_t retire_epoch = 1;

void
retire_reader_add(struct retire_reader *r, void (*wake)(void *),
    void *wake_arg)
{
	r->wake = wake;
	r->wake_arg = wake_arg;
	pthread_mutex_lock(&retire_lock);
	atomic_store(&r->seen, atomic_load(&retire_epoch));
	r->next = retire_readers;
	retire_readers = r;
	pthread_mutex_unlock(&retire_lock);
}

void
retire_reader_remove(struct retire_reader *r)
{
	struct retire_reader **p;

	pthread_mutex_lock(&retire_lock);
	for (p = &retire_readers; *p != NULL; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
	pthread_mutex_unlock(&retire_lock);
	r->next = NULL;
	/* What only this reader held back goes now, not at the next
	 * retire. */
	retire_collect();
}

void
retire_quiescent(struct retire_reader *r)
{
	uint64_t e = atomic_load_explicit(&retire_epoch, memory_order_acquire);

	/* Unchanged means nothing was retired since the last store: the
	 * reads made since then cannot have found a retired object. */
	if (atomic_load_explicit(&r->seen, memory_order_relaxed) != e)
		atomic_store_explicit(&r->seen, e, memory_order_release);
}

void
retire_defer(struct retire_node *n, void (*free_fn)(void *), void *arg)
{
	n->free_fn = free_fn;
	n->arg = arg;
	n->next = NULL;
	pthread_mutex_lock(&retire_lock);
	n->epoch = atomic_fetch_add(&retire_epoch, 1) + 1;
	*retire_tail = n;
	retire_tail = &n->next;
	retire_num++;
	for (struct retire_reader *r = retire_readers; r != NULL; r = r->next) {
		if (r->wake != NULL &&
		    atomic_load_explicit(&r->seen, memory_order_relaxed) <
		    n->epoch)
			r->wake(r->wake_arg);
	}
	pthread_mutex_unlock(&retire_lock);
	retire_collect();
}

void
retire_collect(void)
{
	struct retire_node *done = NULL, **cut = &retire_head;
	uint64_t min = UINT64_MAX;

	pthread_mutex_lock(&retire_lock);
	for (struct retire_reader *r = retire_readers; r != NULL; r = r->next) {
		uint64_t s = atomic_load_explicit(&r->seen,
		    memory_order_acquire);

		if (s < min)
			min = s;
	}
	while (*cut != NULL && (*cut)->epoch <= min) {
		cut = &(*cut)->next;
		retire_num--;
	}
	if (cut != &retire_head) {
		done = retire_head;
		retire_head = *cut;
		*cut = NULL;
		if (retire_head == NULL)
			retire_tail = &retire_head;
	}
	pthread_mutex_unlock(&retire_lock);
	while (done != NULL) {
		struct retire_node *next = done->next;

		done->free_fn(done->arg);
		done = next;
	}
}

size_t
retire_pending(void)
{
	size_t n;

	pthread_mutex_lock(&retire_lock);
	n = retire_num;
	pthread_mutex_unlock(&retire_lock);
	return n;
}
