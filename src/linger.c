/* linger.c: read-and-discard before close. */
#include "linger.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "clock.h"

struct linger_sock {
	struct linger_sock *prev, *next;
	struct linger_set *set;
	struct event ev;
	int fd;
	size_t bytes;
	uint64_t deadline_ms;
};

struct linger_set {
	struct event_base *base;
	struct linger_sock *head;
	size_t num;
};

struct linger_set *
linger_set_new(struct event_base *base)
{
	struct linger_set *ls = calloc(1, sizeof(*ls));

	if (ls != NULL)
		ls->base = base;
	return ls;
}

static void
linger_end(struct linger_sock *l)
{
	struct linger_set *ls = l->set;

	event_del(&l->ev);
	close(l->fd);
	if (l->prev != NULL)
		l->prev->next = l->next;
	else
		ls->head = l->next;
	if (l->next != NULL)
		l->next->prev = l->prev;
	ls->num--;
	free(l);
}

static void
linger_cb(evutil_socket_t fd, short what, void *arg)
{
	struct linger_sock *l = arg;
	/* What the peer sends now is never looked at: one scratch buffer
	 * serves every socket of the thread. */
	static _Thread_local char sink[16384];
	uint64_t now = clock_mono_ms();
	struct timeval tv;
	ssize_t n;

	if (what & EV_TIMEOUT || now >= l->deadline_ms) {
		linger_end(l);
		return;
	}
	do {
		n = read(fd, sink, sizeof(sink));
		if (n > 0)
			l->bytes += (size_t)n;
	} while (n > 0 && l->bytes <= LINGER_MAX_BYTES);
	if (n == 0 || l->bytes > LINGER_MAX_BYTES ||
	    (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		linger_end(l);
		return;
	}
	tv.tv_sec = (time_t)((l->deadline_ms - now) / 1000);
	tv.tv_usec = (suseconds_t)((l->deadline_ms - now) % 1000) * 1000;
	event_add(&l->ev, &tv);
}

void
linger_close(struct linger_set *ls, int fd)
{
	struct linger_sock *l;
	struct timeval tv = { LINGER_MAX_MS / 1000,
		(LINGER_MAX_MS % 1000) * 1000 };

	if (ls == NULL || ls->num >= LINGER_MAX_SOCKETS ||
	    shutdown(fd, SHUT_WR) != 0 || (l = calloc(1, sizeof(*l))) == NULL) {
		close(fd);
		return;
	}
	l->set = ls;
	l->fd = fd;
	l->deadline_ms = clock_mono_ms() + LINGER_MAX_MS;
	event_assign(&l->ev, ls->base, fd, EV_READ, linger_cb, l);
	if (event_add(&l->ev, &tv) != 0) {
		close(fd);
		free(l);
		return;
	}
	l->next = ls->head;
	if (ls->head != NULL)
		ls->head->prev = l;
	ls->head = l;
	ls->num++;
}

size_t
linger_count(const struct linger_set *ls)
{
	return ls != NULL ? ls->num : 0;
}

void
linger_set_free(struct linger_set *ls)
{
	if (ls == NULL)
		return;
	while (ls->head != NULL)
		linger_end(ls->head);
	free(ls);
}
