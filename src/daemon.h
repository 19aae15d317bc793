/* daemon.h: the control thread: startup, signals, drain and shutdown,
 * sd_notify. It owns the listening sockets and the workers. */
#ifndef TLSPROXY_DAEMON_H
#define TLSPROXY_DAEMON_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/stat.h>

#include "listener.h"

struct admin;
struct event;
struct event_base;
struct generation;
struct ocsp_fetcher;
struct ticket_sync;
struct worker;

struct daemon {
	const char *config_path;
	struct event_base *base;
	struct listener_registry listeners;
	/* The sockets workers accept on, and its version: workers report
	 * the version they took over in worker.socks_version. */
	struct listener_set socks;
	atomic_uint socks_version;
	/* The previous set, until every worker has left it. */
	struct listener_set old_socks;
	int swapping;
	struct worker *workers;
	int num_workers;
	atomic_int access_log;
	atomic_long num_conns;
	atomic_ullong next_conn_id;
	/* Workers write here when they took new sockets, passed a quiescent
	 * point asked for by retire_defer, or their loop ended. */
	int notify_fd;
	struct event *notify_ev;
	struct event *sig_ev[5];
	struct event *drain_ev;
	/* systemd watchdog: a ping goes to every worker each half period; the
	 * daemon reports alive only if all answered the previous one. */
	struct event *watchdog_ev;
	/* Ticket keys: rotation of automatic keys, or watching the file. */
	struct event *tickets_ev;
	struct stat tickets_st;
	struct ticket_sync *ticket_sync; /* ticket_keys = redis */
	struct ocsp_fetcher *ocsp;
	struct acme *acme; /* automatic certificates */
	atomic_int acme_changed; /* a certificate went into service */
	struct event *staple_ev; /* drops expired staples */
	struct admin *admin; /* NULL while off */
	struct peer_table *peers; /* client addresses, shared by the workers */
	atomic_uint ping;
	int stopping;
	/* Reload bookkeeping, for logs and the systemd status line. */
	int reload_again;
	unsigned long reloads_ok, reloads_failed;
	char last_reload[160];
};

/* daemon_run serves |gen| (taking over the caller's reference) until
 * SIGTERM or SIGINT. Returns the process exit status. */
int daemon_run(const char *config_path, struct generation *gen);

#endif
