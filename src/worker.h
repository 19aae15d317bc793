/* worker.h: worker threads, each with its own event loop, listening
 * sockets and connections. Handshakes read ticket keys and staples without
 * locks (retire.h). The locks a worker can take: a session-cache shard's
 * per TLS 1.2 handshake (session_cache.c), a peer-table stripe per
 * renegotiation attempt, the generation lock once after each reload, the
 * access log's lock at its first line (to register its ring), and the
 * reclamation lock when the thread starts and exits. */
#ifndef TLSPROXY_WORKER_H
#define TLSPROXY_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "retire.h"

struct conn;
struct daemon;
struct event;
struct event_base;
struct generation;
struct listen_sock;
struct bufpool;
struct linger_set;

/* Commands from the control thread, as bits in worker.cmd. */
enum worker_cmd {
	WORKER_STOP_ACCEPT = 1, /* close listeners, exit when idle */
	WORKER_CLOSE_ALL = 2,   /* end every connection now */
	WORKER_SOCKETS = 4,     /* accept on the daemon's new socket set */
	WORKER_PING = 8,        /* answer in |pong| (systemd watchdog) */
	WORKER_QUIESCE = 16,    /* pass a quiescent point, tell the control
	                         * thread (retire.h) */
};

struct worker_accept;

struct worker {
	int id;
	struct daemon *d;
	pthread_t thread;
	struct event_base *base;
	struct bufpool *pool;
	struct worker_stats *stats; /* written by this worker only */
	struct session_store *store; /* this worker's link to it, or NULL */
	struct generation *gen; /* newest generation this worker has seen */

	struct worker_accept *accepts;
	size_t num_accepts;
	struct event *pause_ev; /* re-enables accept after EMFILE */
	int accept_paused;

	struct conn *conns; /* intrusive list, for drain and close-all */
	struct linger_set *linger; /* closed sockets still read from */
	struct acme_http_set *acme_http; /* acme_http listeners' requests */
	size_t num_conns;

	/* Bumped by every event handled; busy polling watches it. */
	unsigned long activity;

	int wake_fd;
	struct event *wake_ev;
	atomic_int cmd;
	int stopping;
	atomic_int exited;
	/* Set once the worker stopped accepting: its own listening sockets
	 * may be closed (by the control thread, which owns them). */
	atomic_int accept_stopped;
	/* The daemon's socket-set version this worker accepts on. */
	atomic_uint socks_version;
	/* The last watchdog ping this worker's loop answered. */
	atomic_uint pong;
	/* Registered while the thread runs: ticket keys and staples are read
	 * without locks, and freed after every worker passed a quiescent
	 * point (any event callback: none keeps a snapshot pointer). */
	struct retire_reader reader;
};

/* worker_init prepares |w| (event base, pool, wake-up channel) and
 * attaches the daemon's listening sockets meant for it. Returns 0 or -1. */
int worker_init(struct worker *w, struct daemon *d, int id);

/* worker_start runs |w|'s loop on a new thread. */
int worker_start(struct worker *w);

/* worker_command sets |cmd| bits for |w| and wakes it; any thread. */
void worker_command(struct worker *w, int cmd);

/* worker_conn_closed is called after a connection of |w| ended; a
 * draining worker stops with its last one. */
void worker_conn_closed(struct worker *w);

/* worker_join waits for the thread, then frees what worker_init made. */
void worker_join(struct worker *w);

/* worker_generation returns the current generation for a new connection,
 * taking a reference the caller owns. */
struct generation *worker_generation(struct worker *w);

#endif
