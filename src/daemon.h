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
	struct event *sig_ev[6];
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
	/* Binary upgrade. As the old process: the one in progress, and
	 * whether a new process serves now (this one only drains, and
	 * systemd no longer listens to it). As the new one: the channel
	 * until the old one has handed systemd over (-1 after). */
	struct upgrade *upgrade;
	int handed_over;
	int upgrade_fd;
	struct event *upgrade_ev;
	unsigned long upgrades_ok, upgrades_failed;
	char last_upgrade[400];
};

/* daemon_run serves |gen| (taking over the caller's reference) until
 * SIGTERM or SIGINT, or until a new process took over and this one has
 * drained. |upgrade_fd| is the handover channel when this process was
 * started by an upgrade, else -1. Returns the process exit status. */
int daemon_run(const char *config_path, struct generation *gen,
    int upgrade_fd);

/* daemon_upgrade starts a binary upgrade, asked for by |who| (for the
 * log). Returns 0, or -1 with the reason in |err| when none can start
 * now. */
int daemon_upgrade(struct daemon *d, const char *who, char *err,
    size_t err_len);

#endif
