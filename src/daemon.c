/* daemon.c: the control thread: startup order, signals, reload, drain,
 * exit, and what systemd is told about each. */
#include "daemon.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "acme.h"
#include "admin.h"
#include "config.h"
#include "confval.h"
#include "generation.h"
#include "log.h"
#include "ocsp_fetch.h"
#include "peer_table.h"
#include "retire.h"
#include "staple.h"
#include "ticket_sync.h"
#include "tickets.h"
#include "upgrade.h"
#include "worker.h"

static int
daemon_num_workers(const struct generation *g)
{
	long n = g->cfg->global.workers;

	if (n == 0) {
		n = sysconf(_SC_NPROCESSORS_ONLN);
		if (n < 1)
			n = 1;
	}
	return (int)n;
}

/* daemon_notify tells systemd |msg| while it listens to this process:
 * not after an upgrade handed it to the new process, nor, in a new
 * process, before the old one has. */
static void
daemon_notify(const struct daemon *d, const char *msg)
{
	if (!d->handed_over && d->upgrade_fd < 0)
		sd_notify(0, msg);
}

/* daemon_status tells systemd (if it is listening) a one-line summary. */
static void
daemon_status(struct daemon *d, const char *state)
{
	const struct generation *g = generation_peek();
	char msg[768];

	snprintf(msg, sizeof(msg), "%sSTATUS=generation %lu, %zu contexts, %ld "
	    "connections; %s%s%s", state, g != NULL ? g->id : 0UL,
	    g != NULL ? g->shared.num_contexts : 0, atomic_load(&d->num_conns),
	    d->last_reload[0] != '\0' ? d->last_reload : "serving",
	    d->last_upgrade[0] != '\0' ? "; " : "", d->last_upgrade);
	daemon_notify(d, msg);
}

/* daemon_apply_logging takes log level and access log from |cfg|. The
 * access log file is reopened on every reload, so rotating it is a
 * rename followed by SIGHUP. With the access log off, the writer still
 * starts, on stderr, so that a reload can turn it on. */
static int
daemon_apply_logging(struct daemon *d, const struct config *cfg)
{
	const char *al = cfg->global.access_log;
	int on;

	log_set_level((enum log_level)cfg->global.log_level);
	if (confval_bool(al, &on) == 0) {
		atomic_store(&d->access_log, on);
		return log_access_open("stderr");
	}
	if (log_access_open(al) != 0) {
		log_msg(LOGL_ERROR, "%s: key 'access_log': cannot open '%s': %s",
		    cfg->path, al, strerror(errno));
		return -1;
	}
	atomic_store(&d->access_log, 1);
	return 0;
}

/* How often the ticket_keys file is checked for changes. */
#define DAEMON_TICKETS_POLL_MS 1000

static void
daemon_tickets_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	const struct config *cfg = generation_peek()->cfg;
	const struct conf_global *gl = &cfg->global;
	struct ticket_ring ring;
	struct stat st;
	char err[512];

	(void)fd;
	(void)what;
	if (config_ticket_keys_file(gl) == NULL) {
		/* Keep enough old keys to decrypt every ticket that may still
		 * be resumed: they live session_timeout. */
		size_t keep = 1 + (size_t)((gl->session_timeout_ms +
		    gl->ticket_rotation_ms - 1) / gl->ticket_rotation_ms);

		if (tickets_rotate(keep > 16 ? 16 : keep) == 0)
			log_msg(LOGL_INFO, "session tickets: rotated to a new key "
			    "(%zu kept for decryption)", tickets_num());
		return;
	}
	if (stat(gl->ticket_keys, &st) != 0 ||
	    (st.st_mtim.tv_sec == d->tickets_st.st_mtim.tv_sec &&
	    st.st_mtim.tv_nsec == d->tickets_st.st_mtim.tv_nsec &&
	    st.st_ctim.tv_sec == d->tickets_st.st_ctim.tv_sec &&
	    st.st_ctim.tv_nsec == d->tickets_st.st_ctim.tv_nsec &&
	    st.st_size == d->tickets_st.st_size &&
	    st.st_ino == d->tickets_st.st_ino))
		return;
	d->tickets_st = st;
	if (tickets_load_file(gl->ticket_keys, &ring, err, sizeof(err)) != 0) {
		log_msg(LOGL_ERROR, "%s: key 'ticket_keys': %s; keeping the "
		    "keys in use", cfg->path, err);
		return;
	}
	log_msg(LOGL_INFO, "session tickets: %zu keys from '%s'", ring.num,
	    gl->ticket_keys);
	tickets_install(&ring, 1);
}

/* daemon_tickets_arm (re)starts the ticket timer for the published
 * configuration: rotation without a file, change polling with one.
 * Returns 0, or -1 with errno set if it cannot. */
static int
daemon_tickets_arm(struct daemon *d)
{
	const struct conf_global *gl = &generation_peek()->cfg->global;
	const char *file = config_ticket_keys_file(gl);
	int shared = gl->ticket_keys != NULL && file == NULL;
	uint64_t ms = file != NULL ? DAEMON_TICKETS_POLL_MS :
	    gl->ticket_rotation_ms;
	struct timeval tv = { (time_t)(ms / 1000),
		(suseconds_t)(ms % 1000) * 1000 };

	if (d->tickets_ev == NULL)
		d->tickets_ev = event_new(d->base, -1, EV_PERSIST,
		    daemon_tickets_cb, d);
	if (d->tickets_ev == NULL) {
		errno = ENOMEM;
		return -1;
	}
	event_del(d->tickets_ev);
	/* Keys shared through the store: the sync polls and rotates them. */
	ticket_sync_free(d->ticket_sync);
	d->ticket_sync = NULL;
	if (shared && gl->session_tickets) {
		d->ticket_sync = ticket_sync_new(d->base, gl->session_store,
		    gl->session_store_prefix, gl->ticket_rotation_ms,
		    gl->session_timeout_ms, &gl->resolver,
		    gl->resolver_timeout_ms);
		if (d->ticket_sync == NULL) {
			errno = ENOMEM;
			return -1;
		}
		return 0;
	}
	if (file != NULL)
		stat(file, &d->tickets_st);
	if (gl->session_tickets && event_add(d->tickets_ev, &tv) != 0) {
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

/* How often expired staples are dropped: handshakes only skip them. */
#define DAEMON_STAPLE_PRUNE_S 60

static void
daemon_staple_prune(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	staple_prune((int64_t)time(NULL));
}

static void
daemon_notify_cb(evutil_socket_t fd, short what, void *arg);

/* daemon_wake makes the control loop run daemon_notify_cb; any thread. */
static void
daemon_wake(void *arg)
{
	struct daemon *d = arg;
	uint64_t one = 1;

	/* EAGAIN: the counter is full, so a wake-up is pending anyway. */
	if (write(d->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_msg(LOGL_ERROR, "control: wake-up: %s", strerror(errno));
}

static void daemon_reload(struct daemon *d);

/* daemon_acme_changed: a certificate went into service on the ACME
 * thread; the control loop re-syncs the OCSP fetcher. */
static void
daemon_acme_changed(void *arg)
{
	struct daemon *d = arg;

	atomic_store(&d->acme_changed, 1);
	daemon_wake(d);
}

/* daemon_swap_done finishes a reload once every worker accepts on the new
 * socket set: only now may the sockets that went away be closed. */
static void
daemon_swap_done(struct daemon *d)
{
	unsigned v = atomic_load(&d->socks_version);

	for (int i = 0; i < d->num_workers; i++) {
		if (!atomic_load(&d->workers[i].exited) &&
		    atomic_load(&d->workers[i].socks_version) != v)
			return;
	}
	listener_set_close_unused(&d->old_socks, &d->socks);
	d->swapping = 0;
	daemon_status(d, "READY=1\n");
	if (d->reload_again && !d->stopping) {
		/* SIGHUPs during a reload coalesce into one more. */
		d->reload_again = 0;
		daemon_reload(d);
	}
}

/* daemon_close_worker_socks closes the listening sockets of worker |id|
 * once it has stopped accepting, in both the current and the previous
 * set, each number once. */
static void
daemon_close_worker_socks(struct daemon *d, int id)
{
	struct listener_set *sets[2] = { &d->socks, &d->old_socks };

	for (int i = 0; i < 2; i++) {
		for (size_t j = 0; j < sets[i]->num_socks; j++) {
			struct listen_sock *ls = &sets[i]->socks[j];
			int fd = ls->fd;

			if (ls->worker != id || fd < 0)
				continue;
			close(fd);
			for (int k = 0; k < 2; k++) {
				for (size_t m = 0; m < sets[k]->num_socks; m++) {
					if (sets[k]->socks[m].fd == fd)
						sets[k]->socks[m].fd = -1;
				}
			}
		}
	}
}

static void
daemon_notify_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	uint64_t v;
	int all_exited = 1;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_msg(LOGL_ERROR, "control: read: %s", strerror(errno));
	generation_reap();
	/* Snapshots the workers have all passed since they were replaced. */
	retire_collect();
	if (atomic_exchange(&d->acme_changed, 0) && generation_peek() != NULL)
		ocsp_fetcher_sync(d->ocsp, generation_peek());
	if (d->swapping)
		daemon_swap_done(d);
	for (int i = 0; i < d->num_workers; i++) {
		if (atomic_load(&d->workers[i].accept_stopped))
			daemon_close_worker_socks(d, i);
		if (!atomic_load(&d->workers[i].exited))
			all_exited = 0;
	}
	if (all_exited)
		event_base_loopbreak(d->base);
}

static void
daemon_reload_failed(struct daemon *d, struct config *cfg, const char *why)
{
	if (cfg != NULL) {
		for (size_t i = 0; i < cfg->num_errors; i++)
			log_msg(LOGL_ERROR, "reload: %s", cfg->errors[i]);
	}
	d->reloads_failed++;
	snprintf(d->last_reload, sizeof(d->last_reload), "last reload FAILED "
	    "(%s); still serving generation %lu", why,
	    generation_peek()->id);
	log_msg(LOGL_ERROR, "reload failed: %s; the previous configuration "
	    "keeps serving", why);
	config_free(cfg);
	daemon_status(d, "READY=1\n");
}

/* daemon_start_only warns about each setting of |next| that differs from
 * the running one and takes effect only at a restart. */
static void
daemon_start_only(const struct daemon *d, const struct generation *cur,
    const struct generation *next)
{
	const struct conf_global *a = &cur->cfg->global, *b = &next->cfg->global;
	const char *path = next->cfg->path;

	if (daemon_num_workers(next) != d->num_workers)
		log_msg(LOGL_WARNING, "reload: %s: key 'workers': %d workers "
		    "need an upgrade (SIGUSR2) or a restart; keeping %d", path,
		    daemon_num_workers(next), d->num_workers);
	if (a->buffer_size != b->buffer_size)
		log_msg(LOGL_WARNING, "reload: %s: key 'buffer_size': %llu "
		    "bytes need an upgrade (SIGUSR2) or a restart; keeping %llu",
		    path,
		    (unsigned long long)b->buffer_size,
		    (unsigned long long)a->buffer_size);
	if ((a->user == NULL) != (b->user == NULL) ||
	    (a->user != NULL && strcmp(a->user, b->user) != 0))
		log_msg(LOGL_WARNING, "reload: %s: key 'user': a change needs "
		    "a restart; still running as %s", path,
		    a->user != NULL ? a->user : "the starting user");
	if ((a->group == NULL) != (b->group == NULL) ||
	    (a->group != NULL && strcmp(a->group, b->group) != 0))
		log_msg(LOGL_WARNING, "reload: %s: key 'group': a change needs "
		    "a restart; keeping the groups of the start", path);
}

/* daemon_reload_side_effects switches what lives outside the generation
 * (log targets, the admin endpoint) to |g|'s settings. On failure it
 * puts back those of |cur| and returns -1 with the reason in |why|. */
static int
daemon_reload_side_effects(struct daemon *d, const struct generation *cur,
    const struct generation *g, char *why, size_t why_len)
{
	const struct conf_global *gl = &g->cfg->global;

	if (daemon_apply_logging(d, g->cfg) != 0) {
		snprintf(why, why_len, "cannot open the access log '%s'",
		    gl->access_log);
		daemon_apply_logging(d, cur->cfg);
		return -1;
	}
	if (admin_apply(&d->admin, d, gl) != 0) {
		snprintf(why, why_len, "cannot serve admin on '%s'", gl->admin);
		daemon_apply_logging(d, cur->cfg);
		/* The old endpoint is still up unless it had to make way
		 * for the new one on the same address. */
		if (admin_apply(&d->admin, d, &cur->cfg->global) != 0)
			log_msg(LOGL_ERROR, "reload: cannot serve admin on '%s' "
			    "again either: the admin endpoint is off",
			    cur->cfg->global.admin);
		return -1;
	}
	return 0;
}

/* daemon_reload is the reload transaction: build a whole generation with
 * the code `tlsproxy -t` runs, bind what is new, open the new log target
 * and admin endpoint, and only if all of that worked publish it and move
 * the workers to the new sockets. A failure changes nothing. */
static void
daemon_reload(struct daemon *d)
{
	struct listener_set next;
	const struct generation *cur = generation_peek();
	struct generation *g;
	struct config *cfg;
	struct timespec ts;
	char err[512], why[160];

	/* An upgrade hands over the sockets of the published set: the set
	 * stays until it is done. */
	if (d->swapping || d->upgrade != NULL) {
		d->reload_again = 1;
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(why, sizeof(why), "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000);
	daemon_notify(d, why);
	log_msg(LOGL_INFO, "SIGHUP: reloading %s", d->config_path);
	cfg = config_load(d->config_path);
	if (cfg == NULL) {
		daemon_reload_failed(d, NULL, "out of memory");
		return;
	}
	g = generation_build(cfg);
	if (g == NULL) {
		snprintf(why, sizeof(why), "%zu error%s in the configuration",
		    cfg->num_errors, cfg->num_errors == 1 ? "" : "s");
		daemon_reload_failed(d, cfg, why);
		return;
	}
	daemon_start_only(d, cur, g);
	if (listener_set_open(&next, &d->socks, g->cfg, &d->listeners,
	    d->num_workers, err, sizeof(err)) != 0) {
		log_msg(LOGL_ERROR, "reload: %s", err);
		generation_unref(g);
		daemon_reload_failed(d, NULL, "cannot bind a new address");
		return;
	}
	if (daemon_reload_side_effects(d, cur, g, why, sizeof(why)) != 0) {
		listener_set_close_unused(&next, &d->socks);
		generation_unref(g);
		daemon_reload_failed(d, NULL, why);
		return;
	}
	generation_activate(g);
	generation_publish(g);
	ocsp_fetcher_sync(d->ocsp, g);
	/* A reload is when an operator who fixed something expects fresh
	 * responses, as after a responder outage or a revocation. */
	ocsp_fetcher_refresh(d->ocsp);
	acme_sync(d->acme, g);
	d->old_socks = d->socks;
	d->socks = next;
	d->swapping = 1;
	atomic_fetch_add(&d->socks_version, 1);
	if (daemon_tickets_arm(d) != 0) {
		/* Published already: the generation serves, but keys would
		 * not rotate or follow their file. Say so everywhere. */
		d->reloads_failed++;
		snprintf(d->last_reload, sizeof(d->last_reload), "last reload "
		    "FAILED (cannot schedule session-ticket keys: %s); "
		    "generation %lu serving", strerror(errno),
		    generation_peek()->id);
		log_msg(LOGL_ERROR, "reload: generation %lu published, but %s",
		    generation_peek()->id, d->last_reload);
	} else {
		d->reloads_ok++;
		snprintf(d->last_reload, sizeof(d->last_reload), "last reload "
		    "OK (%lu so far)", d->reloads_ok);
		log_msg(LOGL_INFO, "reload: generation %lu published (%zu "
		    "listeners, %zu contexts, %zu backends)",
		    generation_peek()->id, g->num_listeners,
		    g->shared.num_contexts, g->num_backends);
	}
	for (int i = 0; i < d->num_workers; i++)
		worker_command(&d->workers[i], WORKER_SOCKETS);
	daemon_swap_done(d);
}

static void
daemon_watchdog(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	unsigned seq = atomic_load(&d->ping);
	int alive = 1;

	(void)fd;
	(void)what;
	for (int i = 0; i < d->num_workers; i++) {
		if (!atomic_load(&d->workers[i].exited) &&
		    atomic_load(&d->workers[i].pong) != seq)
			alive = 0;
	}
	if (alive)
		daemon_notify(d, "WATCHDOG=1");
	else
		log_msg(LOGL_ERROR, "watchdog: a worker did not answer within "
		    "half the watchdog period");
	atomic_store(&d->ping, seq + 1);
	for (int i = 0; i < d->num_workers; i++)
		worker_command(&d->workers[i], WORKER_PING);
}

/* daemon_watchdog_start arms the watchdog when systemd asked for one. */
static int
daemon_watchdog_start(struct daemon *d)
{
	uint64_t usec;
	struct timeval tv;

	if (sd_watchdog_enabled(0, &usec) <= 0)
		return 0;
	usec /= 2;
	tv.tv_sec = (time_t)(usec / 1000000);
	tv.tv_usec = (suseconds_t)(usec % 1000000);
	d->watchdog_ev = event_new(d->base, -1, EV_PERSIST, daemon_watchdog, d);
	if (d->watchdog_ev == NULL || event_add(d->watchdog_ev, &tv) != 0)
		return -1;
	for (int i = 0; i < d->num_workers; i++)
		worker_command(&d->workers[i], WORKER_PING);
	log_msg(LOGL_INFO, "systemd watchdog: reporting every %llums",
	    (unsigned long long)usec / 1000);
	return 0;
}

static void
daemon_drain_expired(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;

	(void)fd;
	(void)what;
	log_msg(LOGL_WARNING, "shutdown_timeout reached: closing %ld "
	    "remaining connections", atomic_load(&d->num_conns));
	for (int i = 0; i < d->num_workers; i++)
		worker_command(&d->workers[i], WORKER_CLOSE_ALL);
}

/* daemon_drain stops accepting and gives open connections
 * shutdown_timeout to finish; the process exits when they have. */
static void
daemon_drain(struct daemon *d, const char *why)
{
	const struct generation *g = generation_peek();
	struct timeval tv;
	uint64_t ms = g->cfg->global.shutdown_timeout_ms;

	d->stopping = 1;
	log_msg(LOGL_INFO, "%s: no longer accepting; draining %ld "
	    "connections for up to %llums", why, atomic_load(&d->num_conns),
	    (unsigned long long)ms);
	for (int i = 0; i < d->num_workers; i++)
		worker_command(&d->workers[i], WORKER_STOP_ACCEPT);
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(d->drain_ev, &tv);
}

static void
daemon_stop(struct daemon *d, int sig)
{
	if (d->stopping) {
		log_msg(LOGL_WARNING, "%s again: closing all connections now",
		    strsignal(sig));
		daemon_drain_expired(-1, 0, d);
		return;
	}
	/* A new process that is still loading must not take over. */
	upgrade_free(d->upgrade);
	d->upgrade = NULL;
	daemon_notify(d, "STOPPING=1");
	daemon_drain(d, strsignal(sig));
}

/* daemon_upgrade_failed says everywhere that an upgrade failed. */
static void
daemon_upgrade_failed(struct daemon *d, const char *err)
{
	d->upgrades_failed++;
	snprintf(d->last_upgrade, sizeof(d->last_upgrade), "last upgrade "
	    "FAILED (%s); still serving", err);
	log_msg(LOGL_ERROR, "upgrade failed: %s; this process keeps serving",
	    err);
	daemon_status(d, "");
}

/* daemon_upgrade_done ends an upgrade: on success this process hands
 * systemd, the admin endpoint and new connections to process |pid| and
 * drains; on failure it keeps serving and says why. */
static void
daemon_upgrade_done(void *arg, pid_t pid, const char *err)
{
	struct daemon *d = arg;
	char msg[512], why[512];

	/* |err| lives in the upgrade. */
	if (err != NULL)
		err = strncpy(why, err, sizeof(why) - 1);
	why[sizeof(why) - 1] = '\0';
	upgrade_free(d->upgrade);
	d->upgrade = NULL;
	if (err != NULL) {
		daemon_upgrade_failed(d, err);
		if (d->reload_again && !d->stopping) {
			d->reload_again = 0;
			daemon_reload(d);
		}
		return;
	}
	d->upgrades_ok++;
	snprintf(msg, sizeof(msg), "MAINPID=%d\nREADY=1\nSTATUS=process %d "
	    "took over from %d", (int)pid, (int)pid, (int)getpid());
	daemon_notify(d, msg);
	d->handed_over = 1;
	d->socks.handed_over = 1;
	d->old_socks.handed_over = 1;
	admin_hand_over(d->admin);
	log_msg(LOGL_INFO, "upgrade: process %d is ready and serves", (int)pid);
	snprintf(msg, sizeof(msg), "upgrade to process %d", (int)pid);
	daemon_drain(d, msg);
}

/* daemon_upgrade_refused says why no upgrade can start now, or returns 0
 * when one can. */
static int
daemon_upgrade_refused(const struct daemon *d, char *err, size_t err_len)
{
	if (d->stopping) {
		snprintf(err, err_len, "%s", d->handed_over ? "this process "
		    "has handed over already" : "this process is stopping");
		return -1;
	}
	if (d->upgrade != NULL) {
		snprintf(err, err_len, "an upgrade is in progress (process %d)",
		    (int)upgrade_pid(d->upgrade));
		return -1;
	}
	if (d->upgrade_fd >= 0) {
		snprintf(err, err_len, "this process is still taking over");
		return -1;
	}
	if (d->swapping) {
		snprintf(err, err_len, "a reload is in progress");
		return -1;
	}
	return 0;
}

int
daemon_upgrade(struct daemon *d, const char *who, char *err, size_t err_len)
{
	const struct generation *g = generation_peek();
	struct upgrade_source src;

	if (daemon_upgrade_refused(d, err, err_len) != 0) {
		log_msg(LOGL_WARNING, "%s: no upgrade: %s", who, err);
		return -1;
	}
	log_msg(LOGL_INFO, "%s: upgrading to the binary on disk", who);
	src.socks = &d->socks;
	src.admin_fd = admin_fd(d->admin);
	src.peers = d->peers;
	d->upgrade = upgrade_start(d->base, &src,
	    g->cfg->global.upgrade_timeout_ms, daemon_upgrade_done, d, err,
	    err_len);
	if (d->upgrade == NULL) {
		daemon_upgrade_failed(d, err);
		return -1;
	}
	return 0;
}

static void
daemon_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

	(void)what;
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		daemon_stop(d, (int)sig);
		break;
	case SIGHUP:
		if (d->handed_over)
			log_msg(LOGL_WARNING, "SIGHUP: ignored, this process "
			    "only drains after an upgrade; signal the new one");
		else if (!d->stopping)
			daemon_reload(d);
		break;
	case SIGUSR1:
		/* logrotate's postrotate: the file was renamed away. */
		log_msg(LOGL_INFO, "SIGUSR1: reopening the access log");
		log_access_reopen();
		break;
	case SIGUSR2: {
		char err[256];

		daemon_upgrade(d, "SIGUSR2", err, sizeof(err));
		break;
	}
	case SIGCHLD:
		upgrade_reap(d->upgrade);
		break;
	default:
		break;
	}
}

static int
daemon_setup_signals(struct daemon *d)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2,
		SIGCHLD };

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		d->sig_ev[i] = evsignal_new(d->base, sigs[i], daemon_signal_cb, d);
		if (d->sig_ev[i] == NULL || evsignal_add(d->sig_ev[i], NULL) != 0)
			return -1;
	}
	return 0;
}

/* daemon_signals_off removes the signal events. Freeing them restores
 * the default actions, and a second SIGTERM during teardown would then
 * kill the process (exit status 143 instead of 0): the signals are
 * ignored from here on, blocked meanwhile so none slips in between. */
static void
daemon_signals_off(struct daemon *d)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2,
		SIGCHLD };
	sigset_t set, old;

	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(&set, sigs[i]);
	sigprocmask(SIG_BLOCK, &set, &old);
	for (size_t i = 0; i < sizeof(d->sig_ev) / sizeof(d->sig_ev[0]); i++) {
		if (d->sig_ev[i] != NULL)
			event_free(d->sig_ev[i]);
		d->sig_ev[i] = NULL;
	}
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], SIG_IGN);
	sigprocmask(SIG_SETMASK, &old, NULL);
}

static void
daemon_free(struct daemon *d)
{
	upgrade_free(d->upgrade);
	d->upgrade = NULL;
	if (d->upgrade_ev != NULL)
		event_free(d->upgrade_ev);
	if (d->upgrade_fd >= 0) {
		/* Failed while taking over: what was inherited is the old
		 * process's still, unix socket paths included. */
		d->socks.handed_over = d->old_socks.handed_over = 1;
		admin_hand_over(d->admin);
		close(d->upgrade_fd);
	}
	/* The endpoint reads the workers' counters: it stops first. */
	admin_free(d->admin);
	d->admin = NULL;
	for (int i = 0; i < d->num_workers; i++)
		worker_join(&d->workers[i]);
	free(d->workers);
	/* No other thread holds a generation now. */
	generation_set_reaper(NULL, NULL);
	peer_table_free(d->peers);
	daemon_signals_off(d);
	if (d->notify_ev != NULL)
		event_free(d->notify_ev);
	if (d->drain_ev != NULL)
		event_free(d->drain_ev);
	if (d->watchdog_ev != NULL)
		event_free(d->watchdog_ev);
	if (d->tickets_ev != NULL)
		event_free(d->tickets_ev);
	if (d->staple_ev != NULL)
		event_free(d->staple_ev);
	ticket_sync_free(d->ticket_sync);
	/* Before the slots and answer tables it writes can go. */
	acme_free(d->acme);
	ocsp_fetcher_free(d->ocsp);
	if (d->notify_fd >= 0)
		close(d->notify_fd);
	listener_set_close_unused(&d->old_socks, &d->socks);
	listener_set_close_unused(&d->socks, NULL);
	listener_registry_free(&d->listeners);
	if (d->base != NULL) {
		/* A name lookup the ticket sync's store failed frees itself in
		 * a callback deferred to the next turn. */
		event_base_loop(d->base, EVLOOP_NONBLOCK);
		event_base_free(d->base);
	}
}

/* daemon_drop_privileges switches to [global] user/group once sockets are
 * bound and keys read, before any worker thread exists, and checks that
 * root cannot be regained. */
static int
daemon_drop_privileges(const struct config *cfg)
{
	const struct passwd *pw;
	const struct group *gr;
	uid_t uid;
	gid_t gid;

	if (cfg->global.user == NULL)
		return 0;
	if ((pw = getpwnam(cfg->global.user)) == NULL) {
		log_msg(LOGL_ERROR, "user '%s' not found", cfg->global.user);
		return -1;
	}
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	if (cfg->global.group != NULL) {
		if ((gr = getgrnam(cfg->global.group)) == NULL) {
			log_msg(LOGL_ERROR, "group '%s' not found",
			    cfg->global.group);
			return -1;
		}
		gid = gr->gr_gid;
	}
	if (getuid() == uid && geteuid() == uid && getgid() == gid)
		return 0;
	/* Every group of the user, not only the primary one: on Debian,
	 * keys are often readable through a supplementary group
	 * (ssl-cert), and reloads after the switch must still read them. */
	if (initgroups(cfg->global.user, gid) != 0 || setgid(gid) != 0 ||
	    setuid(uid) != 0) {
		log_msg(LOGL_ERROR, "cannot switch to user '%s': %s",
		    cfg->global.user, strerror(errno));
		return -1;
	}
	if (uid != 0 && (setuid(0) == 0 || geteuid() == 0)) {
		log_msg(LOGL_ERROR, "switched to user '%s' but could regain root",
		    cfg->global.user);
		return -1;
	}
	log_msg(LOGL_INFO, "running as user %s (uid %u, gid %u)",
	    cfg->global.user, (unsigned)uid, (unsigned)gid);
	return 0;
}

static int
daemon_start_workers(struct daemon *d, int n)
{
	d->workers = calloc((size_t)n, sizeof(*d->workers));
	if (d->workers == NULL)
		return -1;
	for (int i = 0; i < n; i++) {
		d->workers[i].wake_fd = -1;
		if (worker_init(&d->workers[i], d, i) != 0) {
			d->num_workers = i + 1;
			return -1;
		}
	}
	d->num_workers = n;
	for (int i = 0; i < n; i++) {
		if (worker_start(&d->workers[i]) != 0) {
			log_msg(LOGL_ERROR, "cannot start worker %d: %s", i,
			    strerror(errno));
			/* Started ones must stop before they are freed. */
			for (int j = 0; j < i; j++)
				worker_command(&d->workers[j],
				    WORKER_STOP_ACCEPT | WORKER_CLOSE_ALL);
			d->num_workers = n;
			return -1;
		}
	}
	return 0;
}

/* daemon_took_over: the old process has handed systemd over (or is gone),
 * so this one reports from now on. */
static void
daemon_upgrade_main_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	int rc = upgrade_wait_main((int)fd);

	(void)what;
	if (rc == 0)
		return;
	if (rc < 0)
		log_msg(LOGL_WARNING, "upgrade: the old process closed the "
		    "handover without confirming it; serving anyway");
	event_free(d->upgrade_ev);
	d->upgrade_ev = NULL;
	close(d->upgrade_fd);
	d->upgrade_fd = -1;
	if (daemon_watchdog_start(d) != 0)
		log_msg(LOGL_WARNING, "cannot arm the systemd watchdog");
	/* The old process's last ping may be most of a period ago, and
	 * this one's first is half a period away: one now, its workers
	 * having just started. */
	daemon_status(d, d->watchdog_ev != NULL ? "WATCHDOG=1\n" : "");
}

/* daemon_sockets fills d->socks for |cfg|: from the sockets systemd or the
 * old process passed, binding the rest. */
static int
daemon_sockets(struct daemon *d, const struct config *cfg, int n)
{
	const char *from = d->upgrade_fd >= 0 ? "upgrade" : "socket activation";
	char err[512];

	if (d->upgrade_fd >= 0) {
		if (upgrade_receive(d->upgrade_fd, cfg->global.upgrade_timeout_ms,
		    &d->old_socks, n, d->peers, err, sizeof(err)) != 0) {
			log_msg(LOGL_ERROR, "upgrade: %s", err);
			return -1;
		}
	} else {
		listener_set_inherit(&d->old_socks);
	}
	if (listener_set_open(&d->socks, &d->old_socks, cfg, &d->listeners, n,
	    err, sizeof(err)) != 0) {
		log_msg(LOGL_ERROR, "%s", err);
		return -1;
	}
	for (size_t i = 0; i < d->old_socks.num_socks; i++) {
		const struct listen_sock *ls = &d->old_socks.socks[i];
		char buf[ADDR_STRLEN];
		int used = 0;

		for (size_t j = 0; j < d->socks.num_socks; j++)
			used |= d->socks.socks[j].fd == ls->fd;
		if (!used)
			log_msg(LOGL_WARNING, "%s: no listener binds %s; closing "
			    "it", from, addr_format(&ls->addr, buf, sizeof(buf)));
	}
	listener_set_close_unused(&d->old_socks, &d->socks);
	return 0;
}

/* daemon_ready tells systemd, or in a new process the old one, that this
 * process accepts connections. */
static int
daemon_ready(struct daemon *d)
{
	if (d->upgrade_fd < 0) {
		if (daemon_watchdog_start(d) != 0)
			log_msg(LOGL_WARNING, "cannot arm the systemd watchdog");
		daemon_status(d, "READY=1\n");
		return 0;
	}
	d->upgrade_ev = event_new(d->base, d->upgrade_fd, EV_READ | EV_PERSIST,
	    daemon_upgrade_main_cb, d);
	if (d->upgrade_ev == NULL || event_add(d->upgrade_ev, NULL) != 0 ||
	    upgrade_ready(d->upgrade_fd) != 0) {
		log_msg(LOGL_ERROR, "upgrade: cannot tell the old process this "
		    "one is ready: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int
daemon_run(const char *config_path, struct generation *gen, int upgrade_fd)
{
	struct daemon d;
	const struct config *cfg = gen->cfg;
	const struct timeval prune_tv = { DAEMON_STAPLE_PRUNE_S, 0 };
	int n = daemon_num_workers(gen);
	int rc = 1;

	memset(&d, 0, sizeof(d));
	d.config_path = config_path;
	d.notify_fd = -1;
	d.upgrade_fd = upgrade_fd;
	if (daemon_apply_logging(&d, cfg) != 0) {
		generation_unref(gen);
		goto out;
	}
	generation_activate(gen);
	generation_publish(gen);
	/* Before the sockets: an upgrade hands bans over with them. */
	if ((d.peers = peer_table_new(0)) == NULL) {
		log_msg(LOGL_ERROR, "out of memory for the address table");
		goto out;
	}
	if (daemon_sockets(&d, cfg, n) != 0)
		goto out;
	d.base = event_base_new();
	d.notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d.base == NULL || d.notify_fd < 0 || daemon_setup_signals(&d) != 0) {
		log_msg(LOGL_ERROR, "cannot set up the control loop");
		goto out;
	}
	/* Bound before dropping privileges, like the listeners. */
	if (admin_apply(&d.admin, &d, &cfg->global) != 0)
		goto out;
	/* An inherited endpoint socket the configuration no longer wants. */
	admin_inherit(-1);
	if (daemon_drop_privileges(cfg) != 0)
		goto out;
	d.notify_ev = event_new(d.base, d.notify_fd, EV_READ | EV_PERSIST,
	    daemon_notify_cb, &d);
	d.drain_ev = evtimer_new(d.base, daemon_drain_expired, &d);
	d.staple_ev = event_new(d.base, -1, EV_PERSIST, daemon_staple_prune,
	    &d);
	if (d.notify_ev == NULL || d.drain_ev == NULL || d.staple_ev == NULL ||
	    event_add(d.notify_ev, NULL) != 0 ||
	    event_add(d.staple_ev, &prune_tv) != 0)
		goto out;
	generation_set_reaper(daemon_wake, &d);
	if (daemon_start_workers(&d, n) != 0) {
		log_msg(LOGL_ERROR, "cannot start %d workers", n);
		goto out;
	}
	if (daemon_tickets_arm(&d) != 0) {
		log_msg(LOGL_ERROR, "cannot schedule session-ticket keys: %s",
		    strerror(errno));
		goto out;
	}
	d.ocsp = ocsp_fetcher_new(d.base);
	ocsp_fetcher_sync(d.ocsp, generation_peek());
	if ((d.acme = acme_new(daemon_acme_changed, &d)) == NULL) {
		log_msg(LOGL_ERROR, "cannot start the ACME thread");
		goto out;
	}
	acme_sync(d.acme, generation_peek());
	log_msg(LOGL_INFO, "tlsproxy %s ready: %zu listeners, %zu sockets, "
	    "%d workers", TLSPROXY_VERSION, cfg->num_listeners,
	    d.socks.num_socks, n);
	if (daemon_ready(&d) != 0)
		goto out;
	event_base_dispatch(d.base);
	/* The workers have stopped: what they queued comes before the last
	 * line. */
	log_access_flush();
	log_msg(LOGL_INFO, "all connections closed; exiting");
	rc = 0;
out:
	if (rc != 0 && d.upgrade_fd >= 0) {
		char why[256];

		log_last_error(why, sizeof(why));
		upgrade_fail(d.upgrade_fd, why[0] != '\0' ? why :
		    "it could not start");
	}
	daemon_free(&d);
	generation_publish(NULL);
	/* No worker is left to read them: retired and current snapshots
	 * go now. */
	tickets_clear();
	retire_collect();
	log_access_close();
	return rc;
}
