/* listener.c: bind and listen. */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "log.h"

#define LISTENER_BACKLOG 4096

static int
listener_fail(int fd, const struct addr *a, const char *what, char *err,
    size_t err_len)
{
	char buf[ADDR_STRLEN];
	int saved = errno;

	snprintf(err, err_len, "%s %s: %s", what, addr_format(a, buf,
	    sizeof(buf)), strerror(saved));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* listener_unlink_stale removes a unix socket left by a previous run; a
 * path that is not a socket is left alone and bind reports it. */
static void
listener_unlink_stale(const struct addr *a)
{
	const struct sockaddr_un *sun = (const struct sockaddr_un *)&a->ss;
	struct stat st;

	if (stat(sun->sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(sun->sun_path);
}

int
listener_bind(const struct addr *a, int reuseport, char *err, size_t err_len)
{
	int fd, one = 1, family = a->ss.ss_family;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return listener_fail(-1, a, "socket for", err, err_len);
	if (family == AF_UNIX) {
		listener_unlink_stale(a);
	} else {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one,
		    sizeof(one)) != 0)
			return listener_fail(fd, a, "SO_REUSEPORT on", err,
			    err_len);
		if (family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
			    sizeof(one));
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) != 0)
		return listener_fail(fd, a, "bind", err, err_len);
	if (listen(fd, LISTENER_BACKLOG) != 0)
		return listener_fail(fd, a, "listen on", err, err_len);
	return fd;
}

/* listener_probe fails if |a| is already taken, by another program or
 * by another tlsproxy: with SO_REUSEPORT alone the kernel would quietly
 * share the port with it. */
static int
listener_probe(const struct addr *a, char *err, size_t err_len)
{
	int fd;

	if (a->ss.ss_family == AF_UNIX)
		return 0;
	fd = listener_bind(a, 0, err, err_len);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

struct listener *
listener_registry_get(struct listener_registry *r, const char *name)
{
	struct listener **v, *l;

	for (size_t i = 0; i < r->num; i++) {
		if (strcmp(r->v[i]->name, name) == 0)
			return r->v[i];
	}
	if ((l = calloc(1, sizeof(*l))) == NULL ||
	    (l->name = strdup(name)) == NULL ||
	    (v = realloc(r->v, (r->num + 1) * sizeof(*v))) == NULL) {
		if (l != NULL)
			free(l->name);
		free(l);
		return NULL;
	}
	r->v = v;
	r->v[r->num++] = l;
	return l;
}

void
listener_registry_free(struct listener_registry *r)
{
	for (size_t i = 0; i < r->num; i++) {
		free(r->v[i]->name);
		free(r->v[i]);
	}
	free(r->v);
	r->v = NULL;
	r->num = 0;
}

/* listener_set_find returns the socket of |set| for |a| and |worker|;
 * with |open_only|, only one that is still open. */
static const struct listen_sock *
listener_set_find(const struct listener_set *set, const struct addr *a,
    int worker, int open_only)
{
	for (size_t i = 0; set != NULL && i < set->num_socks; i++) {
		if ((set->socks[i].fd >= 0 || !open_only) &&
		    set->socks[i].worker == worker &&
		    addr_equal(&set->socks[i].addr, a))
			return &set->socks[i];
	}
	return NULL;
}

static int
listener_add_sock(struct listener_set *set, int fd, const struct addr *a,
    struct listener *l, int worker)
{
	struct listen_sock *n = realloc(set->socks, (set->num_socks + 1) *
	    sizeof(*n));

	if (n == NULL)
		return -1;
	set->socks = n;
	n[set->num_socks].fd = fd;
	n[set->num_socks].addr = *a;
	n[set->num_socks].listener = l;
	n[set->num_socks].worker = worker;
	set->num_socks++;
	return 0;
}

/* listener_set_discard undoes a failed listener_set_open: it closes only
 * the sockets that were bound for |next|, not those taken over. */
static void
listener_set_discard(struct listener_set *next, const struct listener_set *cur)
{
	for (size_t i = 0; i < next->num_socks; i++) {
		const struct listen_sock *ls = &next->socks[i];

		if (listener_set_find(cur, &ls->addr, ls->worker, 1) == NULL)
			close(ls->fd);
	}
	free(next->socks);
	memset(next, 0, sizeof(*next));
}

/* listener_take_over adds to |next| every open socket of |cur| for |a| and
 * |worker|: after an upgrade to fewer workers, one worker accepts on
 * several, since closing any would reset the connections in its queue.
 * Returns how many, or -1 out of memory. */
static int
listener_take_over(struct listener_set *next, const struct listener_set *cur,
    const struct addr *a, struct listener *l, int worker)
{
	int n = 0;

	for (size_t i = 0; cur != NULL && i < cur->num_socks; i++) {
		const struct listen_sock *ls = &cur->socks[i];

		if (ls->fd < 0 || ls->worker != worker ||
		    !addr_equal(&ls->addr, a))
			continue;
		if (listener_add_sock(next, ls->fd, a, l, worker) != 0)
			return -1;
		n++;
	}
	return n;
}

/* listener_set_open_addr puts the sockets for one address into |next|. */
static int
listener_set_open_addr(struct listener_set *next,
    const struct listener_set *cur, const struct addr *a, struct listener *l,
    int num_workers, char *err, size_t err_len)
{
	/* Unix sockets, and sockets passed in by systemd, are one socket
	 * all workers accept on. */
	int shared = a->ss.ss_family == AF_UNIX ||
	    listener_set_find(cur, a, -1, 1) != NULL;
	/* The address is ours already (a reload, an upgrade to more
	 * workers): probing it would only find ourselves. */
	int probed = 0;

	for (int w = 0; cur != NULL && w < num_workers && !probed; w++)
		probed = listener_set_find(cur, a, w, 1) != NULL;
	for (int w = 0; w < (shared ? 1 : num_workers); w++) {
		int worker = shared ? -1 : w;
		int n = listener_take_over(next, cur, a, l, worker), fd;

		if (n < 0) {
			snprintf(err, err_len, "out of memory");
			return -1;
		}
		if (n > 0)
			continue;
		if (!probed && listener_probe(a, err, err_len) != 0)
			return -1;
		probed = 1;
		if ((fd = listener_bind(a, !shared, err, err_len)) < 0)
			return -1;
		if (listener_add_sock(next, fd, a, l, worker) != 0) {
			close(fd);
			snprintf(err, err_len, "out of memory");
			return -1;
		}
	}
	return 0;
}

int
listener_set_open(struct listener_set *next, const struct listener_set *cur,
    const struct config *cfg, struct listener_registry *reg, int num_workers,
    char *err, size_t err_len)
{
	memset(next, 0, sizeof(*next));
	for (size_t i = 0; i < cfg->num_listeners; i++) {
		const struct conf_listener *cl = &cfg->listeners[i];
		struct listener *l = listener_registry_get(reg, cl->h.name);

		if (l == NULL) {
			snprintf(err, err_len, "out of memory");
			goto fail;
		}
		for (size_t j = 0; j < cl->bind.num; j++) {
			if (listener_set_open_addr(next, cur, &cl->addrs[j], l,
			    num_workers, err, err_len) != 0)
				goto fail;
		}
	}
	return 0;
fail:
	listener_set_discard(next, cur);
	return -1;
}

void
listener_set_close_unused(struct listener_set *old,
    const struct listener_set *next)
{
	for (size_t i = 0; i < old->num_socks; i++) {
		const struct listen_sock *ls = &old->socks[i];

		/* A socket |next| took over is its to close, even if a
		 * worker already did. */
		if (ls->fd < 0 || (next != NULL &&
		    listener_set_find(next, &ls->addr, ls->worker, 0) != NULL))
			continue;
		close(ls->fd);
		if (ls->addr.ss.ss_family == AF_UNIX && !old->handed_over)
			unlink(((const struct sockaddr_un *)&ls->addr.ss)->sun_path);
	}
	free(old->socks);
	memset(old, 0, sizeof(*old));
}

int
listener_set_adopt(struct listener_set *set, int fd, int worker,
    const char *from)
{
	struct addr a;

	memset(&a, 0, sizeof(a));
	a.len = sizeof(a.ss);
	if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
	    getsockname(fd, (struct sockaddr *)&a.ss, &a.len) != 0) {
		log_msg(LOGL_WARNING, "%s: file descriptor %d is not a "
		    "listening stream socket; closing it", from, fd);
		close(fd);
		return -1;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	if (listener_add_sock(set, fd, &a, NULL, worker) != 0) {
		log_msg(LOGL_ERROR, "%s: out of memory", from);
		close(fd);
		return -1;
	}
	return 0;
}

int
listener_set_inherit(struct listener_set *set)
{
	int n = sd_listen_fds(1);

	memset(set, 0, sizeof(*set));
	for (int i = 0; i < n; i++) {
		char buf[ADDR_STRLEN];

		if (listener_set_adopt(set, SD_LISTEN_FDS_START + i, -1,
		    "socket activation") != 0)
			continue;
		log_msg(LOGL_INFO, "socket activation: received %s",
		    addr_format(&set->socks[set->num_socks - 1].addr, buf,
		    sizeof(buf)));
	}
	return (int)set->num_socks;
}
