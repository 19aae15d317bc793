/* listener.h: listening sockets. A [listener] keeps its identity (name,
 * connection count) across generations; its sockets are bound once per
 * worker with SO_REUSEPORT so the kernel spreads connections. */
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

struct listen_sock {
	int fd;
	struct addr addr;
	struct listener *listener;
	int worker; /* the worker that accepts on it; -1: every worker */
};

struct listener_set {
	struct listener *listeners;
	size_t num_listeners;
	struct listen_sock *socks;
	size_t num_socks;
};

/* listener_set_open binds every address of every listener of |cfg|, one
 * socket per worker (unix sockets: one, shared). On failure it closes
 * what it opened, writes the reason to |err| and returns -1. */
int listener_set_open(struct listener_set *set, const struct config *cfg,
    int num_workers, char *err, size_t err_len);

/* listener_set_close closes every socket and frees |set|'s contents. */
void listener_set_close(struct listener_set *set);

/* listener_bind opens one listening socket on |a|. Returns the fd, or -1
 * with |err| set. */
int listener_bind(const struct addr *a, int reuseport, char *err,
    size_t err_len);

#endif
