/* epoll_view.h: the part of epoll's report that libevent 2.1 does not pass
 * on. libevent folds EPOLLERR (and EPOLLHUP without EPOLLRDHUP) into
 * plain readability and writability, so a callback cannot tell data from
 * data that came with a reset. Edge-triggered reads need that difference:
 * after plain data a read that returns less than it asked for has emptied
 * the socket, and the next arrival raises a new edge; after a reset no
 * edge follows, and reading must go on until the socket says so.
 *
 * The view wraps epoll_wait, which libevent calls, and keeps for the
 * calling thread the descriptors whose events in the last pass carried
 * EPOLLHUP or EPOLLERR. A thread asks only about events of its own loop,
 * from their callbacks. */
#ifndef TLSPROXY_EPOLL_VIEW_H
#define TLSPROXY_EPOLL_VIEW_H

/* epoll_view_attach starts watching the calling thread's passes over the
 * epoll descriptor its next epoll_wait uses; epoll_view_detach stops. */
void epoll_view_attach(void);
void epoll_view_detach(void);

/* epoll_view_troubled returns 1 when the current pass reported EPOLLHUP
 * or EPOLLERR for |fd|, or when the view cannot tell (not attached, too
 * many in one pass, epoll_wait not wrapped) and the caller must assume
 * the worst; else 0. */
int epoll_view_troubled(int fd);

/* epoll_view_close unregisters |ev| (an event on |fd|, which the caller
 * owns) and closes |fd|. Closing a descriptor removes it from every epoll
 * set, so the EPOLL_CTL_DEL that event_del makes is skipped, a syscall
 * per socket. That only holds if no other process shares
 * the socket, so while a child is being created (epoll_view_spawn_lock)
 * the DEL is made as usual. */
struct event;
void epoll_view_close(int fd, struct event *ev);

/* epoll_view_spawn_lock and _unlock bracket every creation of a process
 * (posix_spawn, fork): until the child has executed, it holds a copy of
 * every descriptor, and a socket closed meanwhile would stay in an epoll
 * set under a number that may already name another socket. */
void epoll_view_spawn_lock(void);
void epoll_view_spawn_unlock(void);

#endif
