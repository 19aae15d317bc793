/* upgrade.c: the handover between an old and a new process (upgrade.h). */
#include "upgrade.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "admin.h"
#include "clock.h"
#include "config.h"
#include "epoll_view.h"
#include "generation.h"
#include "listener.h"
#include "log.h"
#include "peer_table.h"
#include "session_cache.h"
#include "staple.h"
#include "tickets.h"

extern char **environ;

#define UPGRADE_ENV "TLSPROXY_UPGRADE_FD"
#define UPGRADE_VERSION 1
/* Sockets per message, well under the kernel's SCM_MAX_FD (253). */
#define UPGRADE_FDS_MAX 64

enum upgrade_msg {
	MSG_HELLO = 1,   /* new: version, pid */
	MSG_SOCKS,       /* old: listening sockets, a worker index each */
	MSG_ADMIN,       /* old: the admin endpoint's socket */
	MSG_TICKETS,     /* old: the ticket-key ring, encrypting key first */
	MSG_SESSIONS,    /* old: TLS 1.2 sessions */
	MSG_STAPLES,     /* old: OCSP responses by certificate hash */
	MSG_BANS,        /* old: banned addresses */
	MSG_END,         /* old: nothing more */
	MSG_READY,       /* new: serving */
	MSG_FAIL,        /* new: giving up, and why */
	MSG_MAIN,        /* old: systemd knows the new process as main */
};

struct upgrade_hdr {
	uint32_t type;
	uint32_t arg;
};

/* ---- how this process was started ---- */

static char upgrade_path[PATH_MAX];
static char **upgrade_argv;

void
upgrade_init(int argc, char **argv)
{
	ssize_t n = readlink("/proc/self/exe", upgrade_path,
	    sizeof(upgrade_path) - 1);

	upgrade_path[n > 0 ? n : 0] = '\0';
	/* main's argv lives as long as the process. */
	(void)argc;
	upgrade_argv = argv;
}

/* ---- messages ---- */

struct umsg {
	struct umsg *next;
	uint8_t *buf; /* header and payload */
	size_t len, cap;
	int fds[UPGRADE_FDS_MAX];
	int nfds;
};

static struct umsg *
umsg_new(uint32_t type, uint32_t arg)
{
	struct umsg *m = calloc(1, sizeof(*m));
	struct upgrade_hdr h = { type, arg };

	if (m == NULL || (m->buf = malloc(UPGRADE_MSG_MAX)) == NULL) {
		free(m);
		return NULL;
	}
	m->cap = UPGRADE_MSG_MAX;
	memcpy(m->buf, &h, sizeof(h));
	m->len = sizeof(h);
	return m;
}

static void
umsg_free(struct umsg *m)
{
	if (m == NULL)
		return;
	for (int i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	free(m->buf);
	free(m);
}

static int
umsg_room(const struct umsg *m, size_t n)
{
	return m->cap - m->len >= n;
}

static void
umsg_put(struct umsg *m, const void *p, size_t n)
{
	memcpy(m->buf + m->len, p, n);
	m->len += n;
}

/* umsg_send sends |m| on |fd|: 0, 1 when the socket is full, -1 on
 * error. */
static int
umsg_send(int fd, const struct umsg *m)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * UPGRADE_FDS_MAX)];
	} cm;
	struct iovec iov = { m->buf, m->len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (m->nfds > 0) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)m->nfds);
		cm.h.cmsg_level = SOL_SOCKET;
		cm.h.cmsg_type = SCM_RIGHTS;
		cm.h.cmsg_len = CMSG_LEN(sizeof(int) * (size_t)m->nfds);
		memcpy(CMSG_DATA(&cm.h), m->fds, sizeof(int) * (size_t)m->nfds);
	}
	if (sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
		return 0;
	return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
}

/* upgrade_send_small sends a message without sockets, waiting for room
 * for at most a second: only the short replies of the protocol. */
static int
upgrade_send_small(int fd, uint32_t type, uint32_t arg, const void *p,
    size_t n)
{
	struct umsg m;
	uint8_t buf[sizeof(struct upgrade_hdr) + 512];
	struct upgrade_hdr h = { type, arg };

	if (n > sizeof(buf) - sizeof(h))
		n = sizeof(buf) - sizeof(h);
	memset(&m, 0, sizeof(m));
	memcpy(buf, &h, sizeof(h));
	if (n > 0)
		memcpy(buf + sizeof(h), p, n);
	m.buf = buf;
	m.len = sizeof(h) + n;
	for (int i = 0; i < 100; i++) {
		int rc = umsg_send(fd, &m);
		struct pollfd pfd = { fd, POLLOUT, 0 };

		if (rc <= 0)
			return rc;
		poll(&pfd, 1, 10);
	}
	errno = ETIMEDOUT;
	return -1;
}

/* ---- old side ---- */

enum upgrade_state {
	UP_STARTED,  /* waiting for hello */
	UP_SENDING,  /* handing over */
	UP_LOADING,  /* all sent; waiting for ready */
	UP_DONE,     /* ready, or failed: |done| was called */
};

struct upgrade {
	struct event_base *base;
	struct upgrade_source src;
	upgrade_done_fn done;
	void *arg;
	pid_t pid;
	int reaped;
	int status;
	int fd;
	enum upgrade_state state;
	struct event *io_ev;
	struct event *timer_ev;
	/* Reports the end from a callback of its own, after which |done|
	 * may free the upgrade. */
	struct event *report_ev;
	char result[512]; /* empty on success */
	struct umsg *queue, **queue_tail;
	size_t queued_bytes;
	uint64_t timeout_ms;
	char why[256]; /* what the new process said when it gave up */
	/* What was handed over, for the log line. */
	size_t n_socks, n_keys, n_sessions, n_staples, n_bans;
};

static void
upgrade_enqueue(struct upgrade *u, struct umsg *m)
{
	*u->queue_tail = m;
	u->queue_tail = &m->next;
	u->queued_bytes += m->len;
}

/* upgrade_describe writes how a process ended from its wait |status|. */
static void
upgrade_describe(char *buf, size_t len, int status)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d (%s)",
		    WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "ended with wait status %#x", status);
}

/* upgrade_collect waits up to |ms| for the new process to end, then kills
 * it; either way it is reaped when this returns. */
static void
upgrade_collect(struct upgrade *u, int ms)
{
	for (int i = 0; !u->reaped && i <= ms / 10; i++) {
		pid_t r = waitpid(u->pid, &u->status, WNOHANG);

		if (r == u->pid || (r < 0 && errno == ECHILD)) {
			u->reaped = 1;
			break;
		}
		if (i < ms / 10)
			usleep(10000);
	}
	if (!u->reaped) {
		kill(u->pid, SIGKILL);
		if (waitpid(u->pid, &u->status, 0) == u->pid)
			u->reaped = 1;
	}
}

static void
upgrade_report_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upgrade *u = arg;

	(void)fd;
	(void)what;
	u->done(u->arg, u->pid, u->result[0] != '\0' ? u->result : NULL);
}

/* upgrade_finish stops the channel and schedules the report: |err| NULL
 * on success. */
static void
upgrade_finish(struct upgrade *u, const char *err)
{
	u->state = UP_DONE;
	event_del(u->io_ev);
	event_del(u->timer_ev);
	while (u->queue != NULL) {
		struct umsg *m = u->queue;

		u->queue = m->next;
		umsg_free(m);
	}
	u->queue_tail = &u->queue;
	u->result[0] = '\0';
	if (err != NULL) {
		close(u->fd);
		u->fd = -1;
		snprintf(u->result, sizeof(u->result), "%.240s%s%.240s", err,
		    u->why[0] != '\0' ? "; it said: " : "", u->why);
	}
	event_active(u->report_ev, EV_TIMEOUT, 0);
}

/* upgrade_failed ends an upgrade whose new process is (or must be) gone. */
static void
upgrade_failed(struct upgrade *u, const char *what, int wait_ms)
{
	char how[96], err[256];

	upgrade_collect(u, wait_ms);
	if (u->reaped && u->status != -1)
		upgrade_describe(how, sizeof(how), u->status);
	else
		snprintf(how, sizeof(how), "could not be reaped");
	snprintf(err, sizeof(err), "new process %d %s %s", (int)u->pid, what,
	    how);
	upgrade_finish(u, err);
}

static int
upgrade_add_sock(struct upgrade *u, struct umsg **m, int fd, int worker)
{
	int32_t w = worker;
	int dup;

	if (*m != NULL && ((*m)->nfds == UPGRADE_FDS_MAX ||
	    !umsg_room(*m, sizeof(w)))) {
		upgrade_enqueue(u, *m);
		*m = NULL;
	}
	if (*m == NULL && (*m = umsg_new(MSG_SOCKS, 0)) == NULL)
		return -1;
	/* A copy of our own: a socket the daemon closes meanwhile stays
	 * valid until it has been sent. */
	if ((dup = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
		return -1;
	(*m)->fds[(*m)->nfds++] = dup;
	umsg_put(*m, &w, sizeof(w));
	u->n_socks++;
	return 0;
}

static int
upgrade_queue_socks(struct upgrade *u)
{
	const struct listener_set *set = u->src.socks;
	struct umsg *m = NULL;

	for (size_t i = 0; i < set->num_socks; i++) {
		int fd = set->socks[i].fd, seen = 0;

		for (size_t j = 0; j < i && !seen; j++)
			seen = set->socks[j].fd == fd;
		if (fd < 0 || seen)
			continue;
		if (upgrade_add_sock(u, &m, fd, set->socks[i].worker) != 0) {
			umsg_free(m);
			return -1;
		}
	}
	if (m != NULL)
		upgrade_enqueue(u, m);
	if (u->src.admin_fd >= 0) {
		if ((m = umsg_new(MSG_ADMIN, 0)) == NULL)
			return -1;
		if ((m->fds[0] = fcntl(u->src.admin_fd, F_DUPFD_CLOEXEC, 3)) < 0) {
			umsg_free(m);
			return -1;
		}
		m->nfds = 1;
		upgrade_enqueue(u, m);
	}
	return 0;
}

static int
upgrade_queue_tickets(struct upgrade *u)
{
	struct ticket_ring ring;
	struct umsg *m;
	int rc = 0;

	if (tickets_export(&ring) != 0)
		return -1;
	/* 16 keys at most are kept: one message holds them. */
	if (ring.num > 0 && (m = umsg_new(MSG_TICKETS, 0)) != NULL) {
		for (size_t i = 0; i < ring.num &&
		    umsg_room(m, TICKET_KEY_LEN); i++) {
			umsg_put(m, &ring.keys[i], TICKET_KEY_LEN);
			u->n_keys++;
		}
		upgrade_enqueue(u, m);
	} else if (ring.num > 0) {
		rc = -1;
	}
	tickets_ring_free(&ring);
	return rc;
}

/* A batch of records of one kind, filled by the foreach callbacks. */
struct upgrade_batch {
	struct upgrade *u;
	struct umsg *m;
	uint32_t type;
	size_t *count;
	int failed;
};

/* upgrade_batch_room makes room for a record of |n| bytes, starting a new
 * message when the current one is full. */
static int
upgrade_batch_room(struct upgrade_batch *b, size_t n)
{
	if (b->failed || n > UPGRADE_MSG_MAX - sizeof(struct upgrade_hdr) ||
	    b->u->queued_bytes + n > UPGRADE_TOTAL_MAX)
		return -1;
	if (b->m != NULL && !umsg_room(b->m, n)) {
		upgrade_enqueue(b->u, b->m);
		b->m = NULL;
	}
	if (b->m == NULL && (b->m = umsg_new(b->type, 0)) == NULL) {
		b->failed = 1;
		return -1;
	}
	(*b->count)++;
	return 0;
}

static void
upgrade_batch_end(struct upgrade_batch *b)
{
	if (b->m != NULL)
		upgrade_enqueue(b->u, b->m);
	b->m = NULL;
}

static int
upgrade_put_session(void *arg, const uint8_t *id, size_t id_len,
    const uint8_t *der, size_t der_len, uint64_t ttl_ms)
{
	struct upgrade_batch *b = arg;
	uint8_t idl = (uint8_t)id_len;
	uint32_t dl = (uint32_t)der_len;

	if (id_len > 255 || der_len > UINT32_MAX ||
	    upgrade_batch_room(b, 1 + 4 + 8 + id_len + der_len) != 0)
		return 0; /* skipped; the rest may fit */
	umsg_put(b->m, &idl, 1);
	umsg_put(b->m, &dl, 4);
	umsg_put(b->m, &ttl_ms, 8);
	umsg_put(b->m, id, id_len);
	umsg_put(b->m, der, der_len);
	return 0;
}

static void
upgrade_put_staple(void *arg, const uint8_t hash[32], const uint8_t *der,
    size_t len, int64_t expires)
{
	struct upgrade_batch *b = arg;
	uint32_t dl = (uint32_t)len;

	if (len > UINT32_MAX || upgrade_batch_room(b, 32 + 8 + 4 + len) != 0)
		return;
	umsg_put(b->m, hash, 32);
	umsg_put(b->m, &expires, 8);
	umsg_put(b->m, &dl, 4);
	umsg_put(b->m, der, len);
}

static void
upgrade_put_ban(void *arg, uint64_t key, uint64_t left_ms)
{
	struct upgrade_batch *b = arg;

	if (upgrade_batch_room(b, 16) != 0)
		return;
	umsg_put(b->m, &key, 8);
	umsg_put(b->m, &left_ms, 8);
}

/* upgrade_queue_all builds the whole handover when the new process says
 * hello: what it receives is as fresh as can be. */
static int
upgrade_queue_all(struct upgrade *u)
{
	struct upgrade_batch b;
	struct umsg *end;

	if (upgrade_queue_socks(u) != 0 || upgrade_queue_tickets(u) != 0)
		return -1;
	b = (struct upgrade_batch){ u, NULL, MSG_SESSIONS, &u->n_sessions, 0 };
	session_cache_foreach(upgrade_put_session, &b);
	upgrade_batch_end(&b);
	b = (struct upgrade_batch){ u, NULL, MSG_STAPLES, &u->n_staples, 0 };
	staple_foreach(upgrade_put_staple, &b);
	upgrade_batch_end(&b);
	b = (struct upgrade_batch){ u, NULL, MSG_BANS, &u->n_bans, 0 };
	if (u->src.peers != NULL)
		peer_table_foreach_ban(u->src.peers, clock_mono_ms(),
		    upgrade_put_ban, &b);
	upgrade_batch_end(&b);
	if ((end = umsg_new(MSG_END, 0)) == NULL)
		return -1;
	upgrade_enqueue(u, end);
	return 0;
}

/* upgrade_flush sends what is queued; 0 when all went, 1 when the socket
 * is full, -1 on error. */
static int
upgrade_flush(struct upgrade *u)
{
	while (u->queue != NULL) {
		struct umsg *m = u->queue;
		int rc = umsg_send(u->fd, m);

		if (rc != 0)
			return rc;
		u->queue = m->next;
		if (u->queue == NULL)
			u->queue_tail = &u->queue;
		umsg_free(m);
	}
	return 0;
}

static void upgrade_io_cb(evutil_socket_t fd, short what, void *arg);

/* upgrade_watch sets what the channel's event waits for. */
static void
upgrade_watch(struct upgrade *u, short what)
{
	event_del(u->io_ev);
	event_assign(u->io_ev, u->base, u->fd, what | EV_PERSIST,
	    upgrade_io_cb, u);
	event_add(u->io_ev, NULL);
}

static void
upgrade_on_hello(struct upgrade *u, const uint8_t *p, size_t n)
{
	uint32_t version;

	if (n < 4) {
		upgrade_failed(u, "sent a malformed hello and", 0);
		return;
	}
	memcpy(&version, p, 4);
	/* The new binary reads this version's messages and skips kinds it
	 * does not know; an older one may not, so say what happened. */
	if (version < UPGRADE_VERSION)
		log_msg(LOGL_WARNING, "upgrade: the new binary speaks handover "
		    "version %u, this one %u; it may not take everything",
		    version, UPGRADE_VERSION);
	if (upgrade_queue_all(u) != 0) {
		upgrade_failed(u, "could not be handed the state (out of "
		    "memory or descriptors), so it", 0);
		return;
	}
	u->state = UP_SENDING;
	upgrade_watch(u, EV_READ | EV_WRITE);
}

static void
upgrade_on_ready(struct upgrade *u)
{
	if (u->state != UP_LOADING) {
		upgrade_failed(u, "said it was ready before it had everything;",
		    0);
		return;
	}
	if (upgrade_send_small(u->fd, MSG_MAIN, 0, NULL, 0) != 0) {
		upgrade_failed(u, "was ready but could not be told it serves;",
		    0);
		return;
	}
	log_msg(LOGL_INFO, "upgrade: handed %zu sockets, %zu ticket keys, "
	    "%zu sessions, %zu staples and %zu bans to process %d",
	    u->n_socks, u->n_keys, u->n_sessions, u->n_staples, u->n_bans,
	    (int)u->pid);
	upgrade_finish(u, NULL);
}

/* upgrade_read handles what the new process sent; 0 to go on. */
static int
upgrade_read(struct upgrade *u)
{
	uint8_t buf[sizeof(struct upgrade_hdr) + 1024];
	struct upgrade_hdr h;
	ssize_t n = recv(u->fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		upgrade_failed(u, "closed the handover before it was ready and",
		    1000);
		return -1;
	}
	if ((size_t)n < sizeof(h)) {
		upgrade_failed(u, "sent a malformed message and", 0);
		return -1;
	}
	memcpy(&h, buf, sizeof(h));
	switch (h.type) {
	case MSG_HELLO:
		if (u->state != UP_STARTED) {
			upgrade_failed(u, "said hello twice and", 0);
			return -1;
		}
		upgrade_on_hello(u, buf + sizeof(h), (size_t)n - sizeof(h));
		return u->state == UP_DONE ? -1 : 0;
	case MSG_READY:
		upgrade_on_ready(u);
		return -1;
	case MSG_FAIL:
		snprintf(u->why, sizeof(u->why), "%.*s",
		    (int)((size_t)n - sizeof(h)), (const char *)buf + sizeof(h));
		return 0;
	default:
		return 0;
	}
}

static void
upgrade_io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upgrade *u = arg;

	(void)fd;
	if ((what & EV_READ) && upgrade_read(u) != 0)
		return;
	if (u->state != UP_SENDING || !(what & EV_WRITE))
		return;
	switch (upgrade_flush(u)) {
	case 0:
		u->state = UP_LOADING;
		upgrade_watch(u, EV_READ);
		break;
	case 1:
		break;
	default:
		upgrade_failed(u, "could not be sent the handover and", 1000);
		break;
	}
}

static void
upgrade_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upgrade *u = arg;
	char what_s[96];

	(void)fd;
	(void)what;
	snprintf(what_s, sizeof(what_s), "was not ready within %llums, so it",
	    (unsigned long long)u->timeout_ms);
	upgrade_failed(u, what_s, 0);
}

/* upgrade_env builds the new process's environment: ours, with the
 * channel's descriptor. */
static char **
upgrade_env(int fd)
{
	size_t n = 0, k = 0;
	char **env;

	while (environ[n] != NULL)
		n++;
	if ((env = calloc(n + 2, sizeof(*env))) == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (strncmp(environ[i], UPGRADE_ENV "=",
		    sizeof(UPGRADE_ENV)) != 0)
			env[k++] = environ[i];
	}
	if (asprintf(&env[k], UPGRADE_ENV "=%d", fd) < 0) {
		free(env);
		return NULL;
	}
	return env;
}

/* upgrade_spawn starts the binary with the channel's end |fd| as its only
 * extra descriptor, default signal actions and nothing blocked. */
static int
upgrade_spawn(int fd, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, dfl;
	char **env = upgrade_env(fd);
	int rc;

	if (env == NULL)
		return ENOMEM;
	sigemptyset(&none);
	sigemptyset(&dfl);
	for (int s = 1; s < NSIG; s++) {
		if (s != SIGKILL && s != SIGSTOP)
			sigaddset(&dfl, s);
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawnattr_init(&at);
	/* dup2 onto itself clears close-on-exec (glibc 2.29 and later). */
	rc = posix_spawn_file_actions_adddup2(&fa, fd, fd);
	if (rc == 0)
		rc = posix_spawnattr_setsigmask(&at, &none);
	if (rc == 0)
		rc = posix_spawnattr_setsigdefault(&at, &dfl);
	if (rc == 0)
		rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK |
		    POSIX_SPAWN_SETSIGDEF);
	if (rc == 0) {
		/* posix_spawn returns once the child has executed, and with
		 * it closed its copies of our sockets. */
		epoll_view_spawn_lock();
		rc = posix_spawn(pid, upgrade_path, &fa, &at, upgrade_argv, env);
		epoll_view_spawn_unlock();
	}
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	for (size_t i = 0; env[i] != NULL; i++) {
		if (strncmp(env[i], UPGRADE_ENV "=", sizeof(UPGRADE_ENV)) == 0)
			free(env[i]);
	}
	free(env);
	return rc;
}

struct upgrade *
upgrade_start(struct event_base *base, const struct upgrade_source *src,
    uint64_t timeout_ms, upgrade_done_fn done, void *arg, char *err,
    size_t err_len)
{
	struct upgrade *u = calloc(1, sizeof(*u));
	struct timeval tv = { (time_t)(timeout_ms / 1000),
		(suseconds_t)(timeout_ms % 1000) * 1000 };
	int sv[2] = { -1, -1 }, rc;

	if (upgrade_path[0] == '\0') {
		snprintf(err, err_len, "the path of this binary is unknown");
		free(u);
		return NULL;
	}
	if (u == NULL || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0,
	    sv) != 0) {
		snprintf(err, err_len, "cannot make the handover channel: %s",
		    strerror(errno));
		free(u);
		return NULL;
	}
	u->base = base;
	u->src = *src;
	u->done = done;
	u->arg = arg;
	u->fd = sv[0];
	u->status = -1;
	u->timeout_ms = timeout_ms;
	u->queue_tail = &u->queue;
	fcntl(u->fd, F_SETFL, fcntl(u->fd, F_GETFL) | O_NONBLOCK);
	u->io_ev = event_new(base, u->fd, EV_READ | EV_PERSIST, upgrade_io_cb,
	    u);
	u->timer_ev = evtimer_new(base, upgrade_timeout_cb, u);
	u->report_ev = evtimer_new(base, upgrade_report_cb, u);
	if (u->io_ev == NULL || u->timer_ev == NULL || u->report_ev == NULL ||
	    event_add(u->io_ev, NULL) != 0 || evtimer_add(u->timer_ev, &tv) != 0) {
		snprintf(err, err_len, "out of memory");
		goto fail;
	}
	rc = upgrade_spawn(sv[1], &u->pid);
	if (rc != 0) {
		snprintf(err, err_len, "cannot start %s: %s", upgrade_path,
		    strerror(rc));
		goto fail;
	}
	close(sv[1]);
	log_msg(LOGL_INFO, "upgrade: started %s as process %d", upgrade_path,
	    (int)u->pid);
	return u;
fail:
	close(sv[1]);
	u->state = UP_DONE;
	upgrade_free(u);
	return NULL;
}

pid_t
upgrade_pid(const struct upgrade *u)
{
	return u->pid;
}

void
upgrade_free(struct upgrade *u)
{
	if (u == NULL)
		return;
	if (u->state != UP_DONE && u->pid > 0) {
		/* Still loading: it must not take over once we are gone. */
		kill(u->pid, SIGKILL);
		upgrade_collect(u, 0);
	}
	while (u->queue != NULL) {
		struct umsg *m = u->queue;

		u->queue = m->next;
		umsg_free(m);
	}
	if (u->io_ev != NULL)
		event_free(u->io_ev);
	if (u->timer_ev != NULL)
		event_free(u->timer_ev);
	if (u->report_ev != NULL)
		event_free(u->report_ev);
	if (u->fd >= 0)
		close(u->fd);
	free(u);
}

void
upgrade_reap(struct upgrade *u)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		char how[96];

		if (u != NULL && pid == u->pid) {
			u->reaped = 1;
			u->status = status;
			/* A failure in flight is reported by the channel's
			 * end of file with this status. */
			if (u->state != UP_DONE)
				continue;
		}
		upgrade_describe(how, sizeof(how), status);
		log_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0 ?
		    LOGL_INFO : LOGL_WARNING, "process %d, started by this one, "
		    "%s", (int)pid, how);
	}
}

/* ---- new side ---- */

int
upgrade_child_fd(void)
{
	const char *v = getenv(UPGRADE_ENV);
	char *end, pid[32], val[32];
	socklen_t len = sizeof(int);
	int type = 0;
	long fd;

	if (v == NULL)
		return -1;
	snprintf(val, sizeof(val), "%s", v);
	v = val;
	errno = 0;
	fd = strtol(v, &end, 10);
	unsetenv(UPGRADE_ENV);
	if (errno != 0 || *end != '\0' || fd < 3 || fd > INT_MAX ||
	    getsockopt((int)fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
	    type != SOCK_SEQPACKET) {
		log_msg(LOGL_WARNING, UPGRADE_ENV "=%s is not a handover "
		    "channel; starting as usual", v);
		return -1;
	}
	fcntl((int)fd, F_SETFD, FD_CLOEXEC);
	/* systemd's watchdog settings name the process they are for: this
	 * one is about to be it. */
	if (getenv("WATCHDOG_USEC") != NULL) {
		snprintf(pid, sizeof(pid), "%d", (int)getpid());
		setenv("WATCHDOG_PID", pid, 1);
	}
	return (int)fd;
}

/* A received message. */
struct upgrade_in {
	uint8_t buf[UPGRADE_MSG_MAX];
	size_t len;
	int fds[UPGRADE_FDS_MAX];
	int nfds;
};

/* upgrade_recv reads one message, waiting until |deadline_ms|. Returns 0,
 * or -1 with |err| set. */
static int
upgrade_recv(int fd, struct upgrade_in *in, uint64_t deadline_ms, char *err,
    size_t err_len)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * UPGRADE_FDS_MAX)];
	} cm;
	struct iovec iov = { in->buf, sizeof(in->buf) };
	struct msghdr mh;
	ssize_t n;

	in->nfds = 0;
	for (;;) {
		uint64_t now = clock_mono_ms();
		struct pollfd pfd = { fd, POLLIN, 0 };
		int rc;

		if (now >= deadline_ms) {
			snprintf(err, err_len, "the old process sent nothing "
			    "before the upgrade timeout");
			return -1;
		}
		rc = poll(&pfd, 1, (int)(deadline_ms - now));
		if (rc > 0)
			break;
		if (rc < 0 && errno != EINTR) {
			snprintf(err, err_len, "poll: %s", strerror(errno));
			return -1;
		}
	}
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cm.buf;
	mh.msg_controllen = sizeof(cm.buf);
	n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); n >= 0 && c != NULL;
	    c = CMSG_NXTHDR(&mh, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int got;

			memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(got));
			if (in->nfds < UPGRADE_FDS_MAX)
				in->fds[in->nfds++] = got;
			else
				close(got);
		}
	}
	if (n < 0 || n == 0 || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) ||
	    (size_t)n < sizeof(struct upgrade_hdr)) {
		snprintf(err, err_len, "%s", n < 0 ? strerror(errno) : n == 0 ?
		    "the old process closed the handover" :
		    "a malformed handover message");
		for (int i = 0; i < in->nfds; i++)
			close(in->fds[i]);
		in->nfds = 0;
		return -1;
	}
	in->len = (size_t)n;
	return 0;
}

/* What the new process took, for its log line. */
struct upgrade_counts {
	size_t socks, keys, sessions, staples, bans;
};

static int
upgrade_take_socks(struct upgrade_in *in, const uint8_t *p, size_t n,
    struct listener_set *socks, int num_workers, struct upgrade_counts *c)
{
	if (n != (size_t)in->nfds * sizeof(int32_t))
		return -1;
	for (int i = 0; i < in->nfds; i++) {
		int32_t w;

		memcpy(&w, p + (size_t)i * sizeof(w), sizeof(w));
		/* With fewer workers, one takes several sockets: each has
		 * connections queued that must be accepted. */
		if (listener_set_adopt(socks, in->fds[i], w < 0 ? -1 :
		    (int)(w % num_workers), "upgrade") == 0)
			c->socks++;
		in->fds[i] = -1;
	}
	in->nfds = 0;
	return 0;
}

static int
upgrade_take_tickets(const uint8_t *p, size_t n, struct upgrade_counts *c)
{
	const struct generation *g = generation_peek();
	struct ticket_ring ring;

	if (n == 0 || n % TICKET_KEY_LEN != 0)
		return -1;
	/* Keys from a file are the operator's: the file wins. */
	if (g != NULL && config_ticket_keys_file(&g->cfg->global) != NULL)
		return 0;
	ring.num = n / TICKET_KEY_LEN;
	if ((ring.keys = calloc(ring.num, sizeof(*ring.keys))) == NULL)
		return -1;
	memcpy(ring.keys, p, n);
	c->keys = ring.num;
	tickets_install(&ring, 0);
	return 0;
}

static int
upgrade_take_sessions(const uint8_t *p, size_t n, struct upgrade_counts *c)
{
	while (n > 0) {
		uint8_t idl;
		uint32_t dl;
		uint64_t ttl;

		if (n < 13)
			return -1;
		memcpy(&idl, p, 1);
		memcpy(&dl, p + 1, 4);
		memcpy(&ttl, p + 5, 8);
		p += 13;
		n -= 13;
		if (n < (size_t)idl + dl)
			return -1;
		if (session_cache_import(p, idl, p + idl, dl, ttl) == 0)
			c->sessions++;
		p += (size_t)idl + dl;
		n -= (size_t)idl + dl;
	}
	return 0;
}

static int
upgrade_take_staples(const uint8_t *p, size_t n, struct upgrade_counts *c)
{
	while (n > 0) {
		int64_t expires;
		uint32_t dl;

		if (n < 44)
			return -1;
		memcpy(&expires, p + 32, 8);
		memcpy(&dl, p + 40, 4);
		if (n - 44 < dl)
			return -1;
		if (staple_restore(p, p + 44, dl, expires) == 1)
			c->staples++;
		p += 44 + (size_t)dl;
		n -= 44 + (size_t)dl;
	}
	return 0;
}

static int
upgrade_take_bans(const uint8_t *p, size_t n, struct peer_table *peers,
    struct upgrade_counts *c)
{
	uint64_t now = clock_mono_ms();

	if (n % 16 != 0)
		return -1;
	for (; n > 0; p += 16, n -= 16) {
		uint64_t key, left;

		memcpy(&key, p, 8);
		memcpy(&left, p + 8, 8);
		if (peers != NULL && peer_table_ban(peers, key, now, left) == 0)
			c->bans++;
	}
	return 0;
}

/* upgrade_take handles one message; 1 at the end, 0 to go on, -1 when it
 * is malformed. */
static int
upgrade_take(struct upgrade_in *in, struct listener_set *socks,
    int num_workers, struct peer_table *peers, struct upgrade_counts *c)
{
	struct upgrade_hdr h;
	const uint8_t *p = in->buf + sizeof(h);
	size_t n = in->len - sizeof(h);
	int rc = 0;

	memcpy(&h, in->buf, sizeof(h));
	switch (h.type) {
	case MSG_SOCKS:
		rc = upgrade_take_socks(in, p, n, socks, num_workers, c);
		break;
	case MSG_ADMIN:
		if (in->nfds != 1)
			return -1;
		admin_inherit(in->fds[0]);
		in->nfds = 0;
		break;
	case MSG_TICKETS:
		rc = upgrade_take_tickets(p, n, c);
		break;
	case MSG_SESSIONS:
		rc = upgrade_take_sessions(p, n, c);
		break;
	case MSG_STAPLES:
		rc = upgrade_take_staples(p, n, c);
		break;
	case MSG_BANS:
		rc = upgrade_take_bans(p, n, peers, c);
		break;
	case MSG_END:
		rc = 1;
		break;
	default:
		/* A kind from a later version: not needed to serve. */
		break;
	}
	for (int i = 0; i < in->nfds; i++)
		close(in->fds[i]);
	in->nfds = 0;
	return rc;
}

int
upgrade_receive(int fd, uint64_t timeout_ms, struct listener_set *socks,
    int num_workers, struct peer_table *peers, char *err, size_t err_len)
{
	uint64_t deadline = clock_mono_ms() + timeout_ms;
	uint32_t hello[2] = { UPGRADE_VERSION, (uint32_t)getpid() };
	struct upgrade_counts c = { 0, 0, 0, 0, 0 };
	struct upgrade_in *in = malloc(sizeof(*in));
	size_t total = 0;
	int rc = 0;

	memset(socks, 0, sizeof(*socks));
	if (in == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	if (upgrade_send_small(fd, MSG_HELLO, 0, hello, sizeof(hello)) != 0) {
		snprintf(err, err_len, "cannot reach the old process: %s",
		    strerror(errno));
		free(in);
		return -1;
	}
	while (rc == 0) {
		if (upgrade_recv(fd, in, deadline, err, err_len) != 0) {
			rc = -1;
			break;
		}
		total += in->len;
		if (total > UPGRADE_TOTAL_MAX) {
			snprintf(err, err_len, "the handover exceeds %lu MiB",
			    UPGRADE_TOTAL_MAX >> 20);
			rc = -1;
			for (int i = 0; i < in->nfds; i++)
				close(in->fds[i]);
			break;
		}
		rc = upgrade_take(in, socks, num_workers, peers, &c);
		if (rc < 0)
			snprintf(err, err_len, "a malformed handover message");
	}
	free(in);
	if (rc < 0) {
		/* The old process still serves on them. */
		socks->handed_over = 1;
		listener_set_close_unused(socks, NULL);
		admin_inherit(-1);
		return -1;
	}
	log_msg(LOGL_INFO, "upgrade: took over %zu sockets, %zu ticket keys, "
	    "%zu sessions, %zu staples and %zu bans", c.socks, c.keys,
	    c.sessions, c.staples, c.bans);
	return 0;
}

int
upgrade_ready(int fd)
{
	return upgrade_send_small(fd, MSG_READY, 0, NULL, 0);
}

void
upgrade_fail(int fd, const char *why)
{
	upgrade_send_small(fd, MSG_FAIL, 0, why, strlen(why));
}

int
upgrade_wait_main(int fd)
{
	struct upgrade_hdr h;
	uint8_t buf[sizeof(h) + 64];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n < (ssize_t)sizeof(h))
		return -1;
	memcpy(&h, buf, sizeof(h));
	return h.type == MSG_MAIN ? 1 : 0;
}
