/* worker.c: worker threads, accept, and commands from the control thread. */
#include "worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "acme_http.h"
#include "clock.h"
#include "config.h"
#include "conn.h"
#include "daemon.h"
#include "epoll_view.h"
#include "generation.h"
#include "listener.h"
#include "linger.h"
#include "log.h"
#include "bufpool.h"
#include "peer_table.h"
#include "relay.h"
#include "retire.h"
#include "session_store.h"
#include "stats.h"
#include "thread.h"

/* Most accepts per readiness event, so one busy listener cannot starve
 * the connections already open. */
#define WORKER_ACCEPT_BATCH 64
/* How long accept pauses when out of file descriptors. */
#define WORKER_EMFILE_PAUSE_MS 100
/* Unused relay buffers a worker keeps for reuse. */
#define WORKER_POOL_KEEP 64

struct worker_accept {
	struct worker *w;
	struct listen_sock *ls;
	struct event *ev;
	/* The listener's settings in the generation last seen, looked up by
	 * name only when the generation changes. */
	const struct generation *gen;
	const struct listener_conf *lc;
	/* Accepts to try on the next event; see worker_accept_budget. */
	int budget;
};

/* worker_accept_budget sizes the next accept batch from this one: |n|
 * connections taken, |drained| if the queue ran dry. A batch that ends at
 * its budget never makes the accept that only returns EAGAIN, one
 * syscall in every connection's cost when they come one at a time. The
 * listener is level-triggered, so what a batch leaves is reported at
 * once; the budget doubles while batches fill it, and falls back to what
 * a batch found when the queue runs dry. */
static int
worker_accept_budget(int budget, int n, int drained)
{
	if (drained)
		return n > 1 ? n : 1;
	budget *= 2;
	return budget < WORKER_ACCEPT_BATCH ? budget : WORKER_ACCEPT_BATCH;
}

struct generation *
worker_generation(struct worker *w)
{
	if (generation_peek() != w->gen) {
		generation_unref(w->gen);
		w->gen = generation_current();
	}
	return w->gen;
}

static void
worker_accept_pause(struct worker *w)
{
	struct timeval tv = { 0, WORKER_EMFILE_PAUSE_MS * 1000 };

	if (w->accept_paused)
		return;
	w->accept_paused = 1;
	for (size_t i = 0; i < w->num_accepts; i++)
		event_del(w->accepts[i].ev);
	evtimer_add(w->pause_ev, &tv);
	log_msg(LOGL_WARNING, "worker %d: out of file descriptors, accept "
	    "paused for %dms (%zu connections open)", w->id,
	    WORKER_EMFILE_PAUSE_MS, w->num_conns);
}

static void
worker_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	w->accept_paused = 0;
	if (w->stopping)
		return;
	for (size_t i = 0; i < w->num_accepts; i++)
		event_add(w->accepts[i].ev, NULL);
}

/* worker_refusal checks the process's and the listener's limits. Returns
 * the limit that refuses, or -1. */
static int
worker_refusal(struct worker *w, const struct generation *g,
    const struct listener_conf *lc, const struct listener *l)
{
	if (atomic_load_explicit(&w->d->num_conns, memory_order_relaxed) >=
	    g->cfg->global.max_connections)
		return STAT_REFUSE_MAX_CONNECTIONS;
	if (lc->max_connections > 0 &&
	    atomic_load_explicit(&l->num_conns, memory_order_relaxed) >=
	    lc->max_connections)
		return STAT_REFUSE_LISTENER_MAX_CONNECTIONS;
	return -1;
}

/* worker_admit applies the connection limits, then the client address's
 * (bans, connections, handshake rate); over a limit the socket is closed
 * before any TLS work. On admission |ref| holds the address's counted
 * place, if any. */
static int
worker_admit(struct worker *w, const struct generation *g,
    const struct listener_conf *lc, const struct listener *l,
    const struct sockaddr *peer, socklen_t peer_len, struct peer_ref *ref)
{
	int why = worker_refusal(w, g, lc, l);
	char addr[ADDR_STRLEN];

	ref->e = NULL;
	if (why < 0) {
		switch (peer_admit(w->d->peers, peer_key(peer), &g->peer_limits,
		    clock_mono_ms(), ref)) {
		case PEER_OK:
			return 1;
		case PEER_BANNED:
			why = STAT_REFUSE_BANNED;
			break;
		case PEER_TOO_MANY_CONNS:
			why = STAT_REFUSE_PER_ADDRESS;
			break;
		case PEER_TOO_FAST:
			why = STAT_REFUSE_RATE;
			break;
		}
	}
	stat_add(&w->stats->refused[why], 1);
	conn_log_refused(w, lc, peer, peer_len, stat_refusal_names[why]);
	/* Bans were logged when they started. log_msg keeps a flood of
	 * refusals to one warning a second. */
	if (why != STAT_REFUSE_BANNED)
		log_msg(LOGL_WARNING, "listener %s: %s reached, refusing new "
		    "connections (client %s)", lc->name, stat_refusal_names[why],
		    addr_format_sa(peer, peer_len, addr, sizeof(addr)));
	return 0;
}

static void
worker_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct worker_accept *wa = arg;
	struct worker *w = wa->w;

	(void)what;
	w->activity++;
	for (int i = 0; i < wa->budget; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		struct generation *g;
		struct peer_ref ref;
		int fd;

		fd = accept4(lfd, (struct sockaddr *)&ss, &len,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE ||
			    errno == ENOBUFS || errno == ENOMEM)
				worker_accept_pause(w);
			else if (errno != EAGAIN && errno != EWOULDBLOCK &&
			    errno != EINTR && errno != ECONNABORTED)
				log_msg(LOGL_ERROR, "listener %s: accept: %s",
				    wa->ls->listener->name, strerror(errno));
			wa->budget = worker_accept_budget(wa->budget, i, 1);
			return;
		}
		g = worker_generation(w);
		if (g != wa->gen) {
			wa->gen = g;
			wa->lc = generation_listener(g, wa->ls->listener->name);
			/* Between a reload's publish and this worker taking the
			 * new sockets, a kept socket may carry an old name. */
			if (wa->lc == NULL)
				wa->lc = generation_listener_by_addr(g,
				    &wa->ls->addr);
		}
		if (wa->lc != NULL && wa->lc->acme_http) {
			acme_http_accept(w->acme_http, fd,
			    (struct sockaddr *)&ss, len);
			continue;
		}
		if (wa->lc == NULL || !worker_admit(w, g, wa->lc,
		    wa->ls->listener, (struct sockaddr *)&ss, len, &ref)) {
			close(fd);
			continue;
		}
		conn_start(w, wa->ls->listener, g, wa->lc, fd,
		    (struct sockaddr *)&ss, len, &ref);
	}
	wa->budget = worker_accept_budget(wa->budget, wa->budget, 0);
}

static void worker_notify_control(struct worker *w);

static void
worker_stop_accept(struct worker *w)
{
	for (size_t i = 0; i < w->num_accepts; i++) {
		struct worker_accept *wa = &w->accepts[i];

		event_del(wa->ev);
	}
	evtimer_del(w->pause_ev);
	/* Our own SO_REUSEPORT sockets must close now, so the kernel stops
	 * queueing connections for us. The control thread closes them: the
	 * socket sets are its own, and during a reload a socket's number is
	 * in two of them. */
	atomic_store(&w->accept_stopped, 1);
	worker_notify_control(w);
}

static void
worker_maybe_exit(struct worker *w)
{
	if (w->stopping && w->num_conns == 0)
		event_base_loopexit(w->base, NULL);
}

static int worker_attach(struct worker *w, const struct listener_set *set);

/* worker_store_update connects this worker to the published generation's
 * session store, keeping the link when it did not change. */
static void
worker_store_update(struct worker *w)
{
	const struct generation *g = worker_generation(w);
	const struct conf_global *gl = &g->cfg->global;

	if (session_store_same(w->store, gl->session_store,
	    gl->session_store_prefix, &gl->resolver, gl->resolver_timeout_ms))
		return;
	session_store_free(w->store);
	w->store = session_store_new(w->base, gl->session_store,
	    gl->session_store_prefix, gl->session_store_timeout_ms,
	    gl->session_timeout_ms, &gl->resolver, gl->resolver_timeout_ms);
	session_store_report(w->store, &w->stats->store_state);
}

/* worker_notify_control wakes the control thread to look at the
 * workers' state (sockets taken over, loop ended). */
static void
worker_notify_control(struct worker *w)
{
	uint64_t one = 1;

	if (write(w->d->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_msg(LOGL_ERROR, "worker %d: notification: %s", w->id,
		    strerror(errno));
}

static void
worker_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	uint64_t v;
	int cmd;

	(void)what;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_msg(LOGL_ERROR, "worker %d: wake-up read: %s", w->id,
		    strerror(errno));
	cmd = atomic_exchange(&w->cmd, 0);
	if ((cmd & WORKER_SOCKETS) && !w->stopping) {
		unsigned version = atomic_load(&w->d->socks_version);

		worker_store_update(w);

		if (worker_attach(w, &w->d->socks) != 0)
			log_msg(LOGL_ERROR, "worker %d: out of memory taking the "
			    "new listening sockets", w->id);
		atomic_store(&w->socks_version, version);
		worker_notify_control(w);
	}
	if ((cmd & WORKER_STOP_ACCEPT) && !w->stopping) {
		w->stopping = 1;
		worker_stop_accept(w);
	}
	if (cmd & WORKER_CLOSE_ALL)
		conn_close_all(w, "shutdown");
	if (cmd & WORKER_PING)
		atomic_store(&w->pong, atomic_load(&w->d->ping));
	if (cmd & WORKER_QUIESCE) {
		/* Between callbacks this thread holds no snapshot pointer. */
		retire_quiescent(&w->reader);
		worker_notify_control(w);
	}
	worker_maybe_exit(w);
}

void
worker_conn_closed(struct worker *w)
{
	worker_maybe_exit(w);
}

/* worker_attach replaces the worker's accept events with ones for the
 * sockets of |set| meant for it. Sockets that stay keep accepting in the
 * kernel meanwhile: nothing is lost between the two sets. */
static int
worker_attach(struct worker *w, const struct listener_set *set)
{
	struct worker_accept *accepts = calloc(set->num_socks + 1,
	    sizeof(*accepts));
	size_t num = 0;

	if (accepts == NULL)
		return -1;
	for (size_t i = 0; i < set->num_socks; i++) {
		struct listen_sock *ls = &set->socks[i];
		struct worker_accept *wa = &accepts[num];

		if (ls->worker != w->id && ls->worker != -1)
			continue;
		wa->w = w;
		wa->ls = ls;
		wa->budget = 1;
		wa->ev = event_new(w->base, ls->fd, EV_READ | EV_PERSIST,
		    worker_accept_cb, wa);
		if (wa->ev == NULL)
			break;
		num++;
	}
	for (size_t i = 0; i < w->num_accepts; i++)
		event_free(w->accepts[i].ev);
	free(w->accepts);
	w->accepts = accepts;
	w->num_accepts = num;
	if (!w->accept_paused) {
		for (size_t i = 0; i < num; i++)
			event_add(accepts[i].ev, NULL);
	}
	return 0;
}

int
worker_init(struct worker *w, struct daemon *d, int id)
{
	memset(w, 0, sizeof(*w));
	w->id = id;
	w->d = d;
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	w->base = event_base_new();
	w->pool = bufpool_new((size_t)generation_peek()->buffer_size,
	    WORKER_POOL_KEEP);
	/* Its own cache lines, so counting never shares a line with another
	 * worker. */
	w->stats = aligned_alloc(64, (sizeof(*w->stats) + 63) / 64 * 64);
	if (w->wake_fd < 0 || w->base == NULL || w->pool == NULL ||
	    w->stats == NULL)
		return -1;
	memset(w->stats, 0, sizeof(*w->stats));
	w->wake_ev = event_new(w->base, w->wake_fd, EV_READ | EV_PERSIST,
	    worker_wake_cb, w);
	w->pause_ev = evtimer_new(w->base, worker_accept_resume, w);
	w->linger = linger_set_new(w->base);
	w->acme_http = acme_http_set_new(w->base);
	if (w->wake_ev == NULL || w->pause_ev == NULL || w->linger == NULL ||
	    w->acme_http == NULL)
		return -1;
	event_add(w->wake_ev, NULL);
	atomic_store(&w->socks_version, atomic_load(&d->socks_version));
	worker_store_update(w);
	return worker_attach(w, &d->socks);
}

static int
worker_loop_ended(struct worker *w)
{
	return event_base_got_exit(w->base) || event_base_got_break(w->base);
}

/* worker_spin keeps polling without sleeping while events keep coming
 * within |budget_ns| of each other. A sleeping thread pays a wake-up
 * (an inter-processor interrupt, on virtual machines a VM exit) for every
 * event; a spinning one sees the backend's answer at once. */
static int
worker_spin(struct worker *w, uint64_t budget_ns)
{
	uint64_t deadline = clock_mono_ns() + budget_ns;

	for (;;) {
		unsigned long before = w->activity;
		uint64_t now;

		event_base_loop(w->base, EVLOOP_NONBLOCK);
		if (worker_loop_ended(w))
			return -1;
		now = clock_mono_ns();
		if (w->activity != before)
			deadline = now + budget_ns;
		else if (now >= deadline)
			return 0;
	}
}

static void
worker_loop(struct worker *w)
{
	for (;;) {
		const struct generation *g = worker_generation(w);
		uint64_t busy_ns = g != NULL ? g->busy_poll_ms * 1000000ULL : 0;

		event_base_loop(w->base, EVLOOP_ONCE);
		if (worker_loop_ended(w))
			return;
		if (busy_ns > 0 && worker_spin(w, busy_ns) != 0)
			return;
	}
}

/* worker_retire_wake asks the worker for a quiescent point; called by
 * retire_defer on the thread that retires. */
static void
worker_retire_wake(void *arg)
{
	worker_command(arg, WORKER_QUIESCE);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	retire_reader_add(&w->reader, worker_retire_wake, w);
	/* Connections must never wait for stderr. */
	log_msg_set_queued(1);
	epoll_view_attach();
	worker_loop(w);
	epoll_view_detach();
	/* An exited worker must hold back no reclamation. */
	retire_reader_remove(&w->reader);
	atomic_store(&w->exited, 1);
	worker_notify_control(w);
	return NULL;
}

int
worker_start(struct worker *w)
{
	int rc;

	rc = thread_create(&w->thread, NULL, worker_main, w);
	if (rc != 0) {
		errno = rc;
		return -1;
	}
	return 0;
}

void
worker_command(struct worker *w, int cmd)
{
	uint64_t one = 1;

	atomic_fetch_or(&w->cmd, cmd);
	if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_msg(LOGL_ERROR, "worker %d: wake-up: %s", w->id,
		    strerror(errno));
}

void
worker_join(struct worker *w)
{
	if (w->thread != 0)
		pthread_join(w->thread, NULL);
	conn_close_all(w, "shutdown");
	linger_set_free(w->linger);
	w->linger = NULL;
	acme_http_set_free(w->acme_http);
	w->acme_http = NULL;
	for (size_t i = 0; i < w->num_accepts; i++)
		event_free(w->accepts[i].ev);
	free(w->accepts);
	if (w->wake_ev != NULL)
		event_free(w->wake_ev);
	if (w->pause_ev != NULL)
		event_free(w->pause_ev);
	/* The store's events live on this base: free it first, then let a
	 * name lookup it failed run its callback, which frees it. */
	session_store_free(w->store);
	w->store = NULL;
	if (w->base != NULL) {
		event_base_loop(w->base, EVLOOP_NONBLOCK);
		event_base_free(w->base);
	}
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	bufpool_free(w->pool);
	free(w->stats);
	w->stats = NULL;
	generation_unref(w->gen);
	w->gen = NULL;
}
