/* daemon.h: the control thread: startup, signals, drain and shutdown,
 * sd_notify. It owns the listening sockets and the workers. */
#ifndef TLSPROXY_DAEMON_H
#define TLSPROXY_DAEMON_H

#include <stdatomic.h>
#include <stdint.h>

#include "listener.h"

struct event;
struct event_base;
struct generation;
struct worker;

struct daemon {
	const char *config_path;
	struct event_base *base;
	struct listener_set socks;
	struct worker *workers;
	int num_workers;
	int access_log;
	atomic_long num_conns;
	atomic_ullong next_conn_id;
	/* Workers write here when their loop ends. */
	int exit_fd;
	struct event *exit_ev;
	struct event *sig_ev[4];
	struct event *drain_ev;
	int stopping;
};

/* daemon_run serves |gen| (taking over the caller's reference) until
 * SIGTERM or SIGINT. Returns the process exit status. */
int daemon_run(const char *config_path, struct generation *gen);

#endif
