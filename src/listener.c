/* listener.c: bind and listen. */
#include "listener.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"

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

static int
listener_add_sock(struct listener_set *set, const struct addr *a,
    struct listener *l, int worker, char *err, size_t err_len)
{
	struct listen_sock *n;
	int fd = listener_bind(a, worker >= 0, err, err_len);

	if (fd < 0)
		return -1;
	n = realloc(set->socks, (set->num_socks + 1) * sizeof(*n));
	if (n == NULL) {
		close(fd);
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	set->socks = n;
	n[set->num_socks].fd = fd;
	n[set->num_socks].addr = *a;
	n[set->num_socks].listener = l;
	n[set->num_socks].worker = worker;
	set->num_socks++;
	return 0;
}

int
listener_set_open(struct listener_set *set, const struct config *cfg,
    int num_workers, char *err, size_t err_len)
{
	memset(set, 0, sizeof(*set));
	set->listeners = calloc(cfg->num_listeners, sizeof(*set->listeners));
	if (set->listeners == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	set->num_listeners = cfg->num_listeners;
	for (size_t i = 0; i < cfg->num_listeners; i++) {
		const struct conf_listener *cl = &cfg->listeners[i];
		struct listener *l = &set->listeners[i];

		l->name = strdup(cl->h.name);
		for (size_t j = 0; j < cl->bind.num; j++) {
			const struct addr *a = &cl->addrs[j];
			int unix_sock = a->ss.ss_family == AF_UNIX;

			if (listener_probe(a, err, err_len) != 0)
				goto fail;
			for (int w = 0; w < (unix_sock ? 1 : num_workers); w++) {
				if (listener_add_sock(set, a, l, unix_sock ? -1 : w,
				    err, err_len) != 0)
					goto fail;
			}
		}
	}
	return 0;
fail:
	listener_set_close(set);
	return -1;
}

void
listener_set_close(struct listener_set *set)
{
	for (size_t i = 0; i < set->num_socks; i++) {
		const struct addr *a = &set->socks[i].addr;

		if (set->socks[i].fd < 0)
			continue;
		close(set->socks[i].fd);
		if (a->ss.ss_family == AF_UNIX)
			unlink(((const struct sockaddr_un *)&a->ss)->sun_path);
	}
	for (size_t i = 0; i < set->num_listeners; i++)
		free(set->listeners[i].name);
	free(set->socks);
	free(set->listeners);
	memset(set, 0, sizeof(*set));
}
