/* epoll_view.c: EPOLLHUP and EPOLLERR as epoll reported them, and the
 * EPOLL_CTL_DEL a close makes needless. */
#include "epoll_view.h"

#include <pthread.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <event2/event.h>

/* More troubled descriptors than this in one pass (a mass reset) make
 * the whole pass unknown, which is only slower. */
#define EPOLL_VIEW_MAX 64

struct epoll_view {
	int attached;
	int epfd;        /* the loop's, adopted by the first pass */
	int passes;      /* nonzero once a pass was seen */
	int overflow;
	int num;
	int fds[EPOLL_VIEW_MAX];
};

static __thread struct epoll_view view;
/* The descriptor whose EPOLL_CTL_DEL this thread skips, or -1. */
static __thread int view_closing = -1;

/* Held shared while a socket is closed without its DEL, exclusively
 * while a child is created. Writers first: a close that finds a spawn
 * waiting makes the DEL instead of delaying it. */
static pthread_rwlock_t view_spawn =
    PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;

void
epoll_view_attach(void)
{
	view.attached = 1;
	view.epfd = -1;
	view.passes = 0;
	view.num = 0;
	view.overflow = 0;
}

void
epoll_view_detach(void)
{
	view.attached = 0;
}

static void
epoll_view_note(int epfd, const struct epoll_event *ev, int n)
{
	if (view.epfd < 0)
		view.epfd = epfd;
	if (epfd != view.epfd)
		return;
	view.passes = 1;
	view.num = 0;
	view.overflow = 0;
	for (int i = 0; i < n; i++) {
		if (!(ev[i].events & (EPOLLHUP | EPOLLERR)))
			continue;
		if (view.num == EPOLL_VIEW_MAX) {
			view.overflow = 1;
			return;
		}
		/* libevent registers every descriptor with data.fd. */
		view.fds[view.num++] = ev[i].data.fd;
	}
}

int
epoll_view_troubled(int fd)
{
	if (!view.attached || !view.passes || view.overflow)
		return 1;
	for (int i = 0; i < view.num; i++) {
		if (view.fds[i] == fd)
			return 1;
	}
	return 0;
}

/* This definition takes the place of the C library's for every caller in
 * the process, libevent among them: the executable's symbols come first.
 * epoll_pwait without a signal mask is the same call. If it were ever not
 * in place, no pass is seen and epoll_view_troubled always answers 1. */
int
epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	int n = epoll_pwait(epfd, events, maxevents, timeout, NULL);

	if (view.attached && n >= 0)
		epoll_view_note(epfd, events, n);
	return n;
}

void
epoll_view_close(int fd, struct event *ev)
{
	if (pthread_rwlock_tryrdlock(&view_spawn) != 0) {
		event_del(ev);
		close(fd);
		return;
	}
	view_closing = fd;
	event_del(ev);
	view_closing = -1;
	close(fd);
	pthread_rwlock_unlock(&view_spawn);
}

void
epoll_view_spawn_lock(void)
{
	pthread_rwlock_wrlock(&view_spawn);
}

void
epoll_view_spawn_unlock(void)
{
	pthread_rwlock_unlock(&view_spawn);
}

/* Like epoll_wait, this takes the C library's place for libevent; the
 * real call is made directly. */
int
epoll_ctl(int epfd, int op, int fd, struct epoll_event *event)
{
	if (op == EPOLL_CTL_DEL && fd == view_closing && fd >= 0)
		return 0;
	return (int)syscall(SYS_epoll_ctl, epfd, op, fd, event);
}
