/* backend.h: a [backend]: its resolved addresses and how to connect. */
#ifndef TLSPROXY_BACKEND_H
#define TLSPROXY_BACKEND_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

struct config;
struct conf_backend;

struct backend {
	char *name;
	struct addr *addrs;
	size_t num_addrs;
	uint64_t connect_timeout_ms;
	/* Round-robin position, shared by all workers. */
	atomic_uint next;
	int stat_slot; /* stats_slot() of the name */
	/* PROXY protocol: 0 off, 1 v1, 2 v2, -1 as the listener says; and
	 * whether v2 carries the client certificate (-1: the listener's). */
	int proxy_protocol;
	int proxy_cert;
	/* The host name each address came from (NULL: a literal), and TLS
	 * to the backend (NULL: plaintext). */
	char **hosts;
	struct backend_tls *tls;
};

/* backend_resolve_all fills |out[i]| for every [backend] of |cfg|: literal
 * addresses directly, host names with evdns (all queries at once, like
 * Node's lookup, at load time only). Errors go to |cfg|. Returns 0 or -1. */
int backend_resolve_all(struct config *cfg, struct backend *out);

/* backend_release frees what backend_resolve_all stored in |b|. */
void backend_release(struct backend *b);

/* backend_pick returns the index of the address to try first. */
size_t backend_pick(struct backend *b);

/* backend_connect starts a non-blocking connect to address |i| of |b|
 * (TCP_NODELAY set for a TLS backend; a plain one's is the relay's:
 * relay_nodelay_later) and
 * returns the socket, or -1 with errno set. EINPROGRESS is not a failure:
 * the caller waits for writability and calls backend_connect_result. */
int backend_connect(const struct backend *b, size_t i);

/* backend_connect_result returns 0 once a pending connect on |fd|
 * succeeded, or the errno it failed with. */
int backend_connect_result(int fd);

#endif
