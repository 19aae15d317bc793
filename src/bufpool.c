/* bufpool.c: a free list of fixed-size buffers. */
#include "bufpool.h"

#include <stdlib.h>

struct bufpool {
	size_t size;
	size_t max_free;
	size_t num_free;
	struct buf *free_list;
};

struct bufpool *
bufpool_new(size_t size, size_t max_free)
{
	struct bufpool *p = calloc(1, sizeof(*p));

	if (p != NULL) {
		p->size = size;
		p->max_free = max_free;
	}
	return p;
}

void
bufpool_free(struct bufpool *p)
{
	if (p == NULL)
		return;
	while (p->free_list != NULL) {
		struct buf *b = p->free_list;

		p->free_list = b->next_free;
		free(b);
	}
	free(p);
}

size_t
bufpool_size(const struct bufpool *p)
{
	return p->size;
}

struct buf *
bufpool_get(struct bufpool *p)
{
	struct buf *b = p->free_list;

	if (b != NULL) {
		p->free_list = b->next_free;
		p->num_free--;
	} else if ((b = malloc(sizeof(*b) + p->size)) == NULL) {
		return NULL;
	}
	b->start = b->end = 0;
	return b;
}

void
bufpool_put(struct bufpool *p, struct buf *b)
{
	if (b == NULL)
		return;
	if (p->num_free >= p->max_free) {
		free(b);
		return;
	}
	b->next_free = p->free_list;
	p->free_list = b;
	p->num_free++;
}
