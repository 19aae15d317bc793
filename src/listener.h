/* listener.h: listening sockets. A [listener] keeps its identity (name,
 * connection count) for the life of the process, across reloads; its
 * sockets are bound once per worker with SO_REUSEPORT so the kernel
 * spreads connections, and a reload keeps the sockets of addresses that
 * stay, so there is never a moment without a listening socket. */
#ifndef TLSPROXY_LISTENER_H
#define TLSPROXY_LISTENER_H

#include <stdatomic.h>
#include <stddef.h>

#include "addr.h"

struct config;

struct listener {
	char *name;
	atomic_long num_conns;
};

/* Every listener name ever configured; connections point into it, so
 * entries live until the process ends. */
struct listener_registry {
	struct listener **v;
	size_t num;
};

struct listen_sock {
	int fd;
	struct addr addr;
	struct listener *listener;
	int worker; /* the worker that accepts on it; -1: every worker */
};

struct listener_set {
	struct listen_sock *socks;
	size_t num_socks;
	/* Another process accepts on these sockets now (a binary upgrade):
	 * closing ours must not remove a unix socket's path. */
	int handed_over;
};

/* listener_registry_get returns the listener named |name|, creating it on
 * first use; NULL when out of memory. */
struct listener *listener_registry_get(struct listener_registry *r,
    const char *name);

/* listener_registry_free frees every listener; connections must be gone. */
void listener_registry_free(struct listener_registry *r);

/* listener_set_open makes |next| hold a socket per worker (unix sockets:
 * one, shared) for every address of every listener of |cfg|. Sockets of
 * |cur| (may be NULL) with the same address and worker are taken over,
 * not rebound; the others are bound anew. On failure it closes what it
 * bound, leaves |cur| untouched, writes the reason to |err| and returns
 * -1. */
int listener_set_open(struct listener_set *next, const struct listener_set *cur,
    const struct config *cfg, struct listener_registry *reg, int num_workers,
    char *err, size_t err_len);

/* listener_set_close_unused closes the sockets of |old| that |next| did
 * not take over (all of them if |next| is NULL), then frees |old|'s
 * contents. */
void listener_set_close_unused(struct listener_set *old,
    const struct listener_set *next);

/* listener_set_inherit fills |set| with the listening sockets systemd
 * passed (LISTEN_FDS), shared by all workers, and returns how many. A
 * listener_set_open with it as |cur| adopts those whose address a listener
 * binds; listener_set_close_unused then closes the rest. */
int listener_set_inherit(struct listener_set *set);

/* listener_set_adopt adds |fd|, a listening socket received from
 * elsewhere (named |from| in messages), to |set| for |worker| (-1: every
 * worker), with its address; the listener is set when a
 * listener_set_open takes it over. Returns 0, or -1 after closing |fd|
 * when it is not a listening stream socket or memory runs out. */
int listener_set_adopt(struct listener_set *set, int fd, int worker,
    const char *from);

/* listener_bind opens one listening socket on |a|. Returns the fd, or -1
 * with |err| set. */
int listener_bind(const struct addr *a, int reuseport, char *err,
    size_t err_len);

#endif
