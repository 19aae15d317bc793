/* daemon.c: the control thread: startup order, signals, drain, exit. */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "confval.h"
#include "generation.h"
#include "log.h"
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

static void
daemon_exit_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	uint64_t v;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_msg(LOGL_ERROR, "control: read: %s", strerror(errno));
	for (int i = 0; i < d->num_workers; i++) {
		if (!atomic_load(&d->workers[i].exited))
			return;
	}
	event_base_loopbreak(d->base);
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

static void
daemon_stop(struct daemon *d, int sig)
{
	const struct generation *g = generation_peek();
	struct timeval tv;
	uint64_t ms = g->cfg->global.shutdown_timeout_ms;

	if (d->stopping) {
		log_msg(LOGL_WARNING, "%s again: closing all connections now",
		    strsignal(sig));
		daemon_drain_expired(-1, 0, d);
		return;
	}
	d->stopping = 1;
	sd_notify(0, "STOPPING=1");
	log_msg(LOGL_INFO, "%s: no longer accepting; draining %ld "
	    "connections for up to %llums", strsignal(sig),
	    atomic_load(&d->num_conns), (unsigned long long)ms);
	for (int i = 0; i < d->num_workers; i++)
		worker_command(&d->workers[i], WORKER_STOP_ACCEPT);
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(d->drain_ev, &tv);
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
		log_msg(LOGL_WARNING, "SIGHUP: configuration reload is not "
		    "supported by this version; restart to apply changes");
		break;
	default:
		break;
	}
}

static int
daemon_setup_signals(struct daemon *d)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP };

	signal(SIGPIPE, SIG_IGN);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		d->sig_ev[i] = evsignal_new(d->base, sigs[i], daemon_signal_cb, d);
		if (d->sig_ev[i] == NULL || evsignal_add(d->sig_ev[i], NULL) != 0)
			return -1;
	}
	return 0;
}

static void
daemon_free(struct daemon *d)
{
	for (int i = 0; i < d->num_workers; i++)
		worker_join(&d->workers[i]);
	free(d->workers);
	for (size_t i = 0; i < sizeof(d->sig_ev) / sizeof(d->sig_ev[0]); i++) {
		if (d->sig_ev[i] != NULL)
			event_free(d->sig_ev[i]);
	}
	if (d->exit_ev != NULL)
		event_free(d->exit_ev);
	if (d->drain_ev != NULL)
		event_free(d->drain_ev);
	if (d->exit_fd >= 0)
		close(d->exit_fd);
	listener_set_close(&d->socks);
	if (d->base != NULL)
		event_base_free(d->base);
}

static int
daemon_start_workers(struct daemon *d, int n)
{
	d->workers = calloc((size_t)n, sizeof(*d->workers));
	if (d->workers == NULL)
		return -1;
	for (int i = 0; i < n; i++) {
		d->workers[i].wake_fd = -1;
		if (worker_init(&d->workers[i], d, i, d->socks.socks,
		    d->socks.num_socks) != 0) {
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

int
daemon_run(const char *config_path, struct generation *gen)
{
	struct daemon d;
	const struct config *cfg = gen->cfg;
	char err[512];
	int n = daemon_num_workers(gen);
	int rc = 1;

	memset(&d, 0, sizeof(d));
	d.config_path = config_path;
	d.exit_fd = -1;
	if (confval_bool(cfg->global.access_log, &d.access_log) != 0)
		d.access_log = 1; /* a path: config_check allowed nothing else */
	if (cfg->global.access_log[0] == '/' &&
	    log_access_open(cfg->global.access_log) != 0) {
		log_msg(LOGL_ERROR, "%s: key 'access_log': cannot open '%s': %s",
		    cfg->path, cfg->global.access_log, strerror(errno));
		generation_unref(gen);
		return 1;
	}
	generation_publish(gen);
	if (listener_set_open(&d.socks, cfg, n, err, sizeof(err)) != 0) {
		log_msg(LOGL_ERROR, "%s", err);
		goto out;
	}
	d.base = event_base_new();
	d.exit_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d.base == NULL || d.exit_fd < 0 || daemon_setup_signals(&d) != 0) {
		log_msg(LOGL_ERROR, "cannot set up the control loop");
		goto out;
	}
	d.exit_ev = event_new(d.base, d.exit_fd, EV_READ | EV_PERSIST,
	    daemon_exit_cb, &d);
	d.drain_ev = evtimer_new(d.base, daemon_drain_expired, &d);
	if (d.exit_ev == NULL || d.drain_ev == NULL ||
	    event_add(d.exit_ev, NULL) != 0)
		goto out;
	if (daemon_start_workers(&d, n) != 0) {
		log_msg(LOGL_ERROR, "cannot start %d workers", n);
		goto out;
	}
	log_msg(LOGL_INFO, "tlsproxy %s ready: %zu listeners, %zu sockets, "
	    "%d workers", TLSPROXY_VERSION, cfg->num_listeners,
	    d.socks.num_socks, n);
	sd_notify(0, "READY=1\nSTATUS=serving");
	event_base_dispatch(d.base);
	log_msg(LOGL_INFO, "all connections closed; exiting");
	rc = 0;
out:
	daemon_free(&d);
	generation_publish(NULL);
	log_access_close();
	return rc;
}
