/* backend.c: backend addresses, name resolution, non-blocking connect. */
#include "backend.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "backend_tls.h"
#include "config.h"
#include "resolver.h"

struct backend_query {
	struct config *cfg;
	struct backend *b;
	const struct conf_backend *cb;
	size_t item;
	char host[256];
	unsigned port;
	struct evdns_getaddrinfo_request *req;
	int done;
	int *pending;
};

static int
backend_add_addr(struct backend *b, const struct sockaddr *sa, socklen_t len,
    const char *host)
{
	struct addr *n = realloc(b->addrs, (b->num_addrs + 1) * sizeof(*n));
	char **h;

	if (n == NULL)
		return -1;
	b->addrs = n;
	if ((h = realloc(b->hosts, (b->num_addrs + 1) * sizeof(*h))) == NULL)
		return -1;
	b->hosts = h;
	h[b->num_addrs] = NULL;
	if (host != NULL && (h[b->num_addrs] = strdup(host)) == NULL)
		return -1;
	memset(&n[b->num_addrs], 0, sizeof(n[0]));
	memcpy(&n[b->num_addrs].ss, sa, len);
	n[b->num_addrs++].len = len;
	return 0;
}

static void
backend_dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct backend_query *q = arg;

	q->done = 1;
	q->req = NULL;
	(*q->pending)--;
	if (result != 0) {
		if (result != EVUTIL_EAI_CANCEL)
			config_error(q->cfg, q->cb->address.lines[q->item],
			    "address", "cannot resolve '%s': %s", q->host,
			    evutil_gai_strerror(result));
		return;
	}
	for (struct evutil_addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET)
			((struct sockaddr_in *)ai->ai_addr)->sin_port =
			    htons((uint16_t)q->port);
		else if (ai->ai_family == AF_INET6)
			((struct sockaddr_in6 *)ai->ai_addr)->sin6_port =
			    htons((uint16_t)q->port);
		else
			continue;
		backend_add_addr(q->b, ai->ai_addr, (socklen_t)ai->ai_addrlen,
		    q->host);
	}
	evutil_freeaddrinfo(res);
}

static void
backend_dns_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

/* backend_literal adds |s| if it is a numeric address or unix path and
 * returns 1; 0 means it needs DNS. */
static int
backend_literal(struct backend *b, const char *s)
{
	struct addr a;
	char err[128];

	if (addr_parse(s, &a, err, sizeof(err)) != 0)
		return 0;
	backend_add_addr(b, (struct sockaddr *)&a.ss, a.len, NULL);
	return 1;
}

static int
backend_resolve_names(struct config *cfg, struct backend *out,
    struct backend_query *qs, size_t num_qs)
{
	struct event_base *base = event_base_new();
	struct evdns_base *dns = NULL;
	struct event *timer = NULL;
	/* The resolver gives up on its own; the timer only bounds a loop
	 * that would otherwise wait on a resolver that never calls back. */
	uint64_t wait_ms = resolver_wait_ms(cfg->global.resolver_timeout_ms) +
	    1000;
	struct timeval tv = { (time_t)(wait_ms / 1000),
	    (suseconds_t)(wait_ms % 1000) * 1000 };
	struct evutil_addrinfo hints;
	int pending = 0;

	(void)out;
	if (base != NULL)
		dns = resolver_new(base, &cfg->global.resolver,
		    cfg->global.resolver_timeout_ms);
	if (dns == NULL) {
		config_error(cfg, 0, NULL, "cannot start the DNS resolver");
		if (base != NULL)
			event_base_free(base);
		return -1;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	for (size_t i = 0; i < num_qs; i++) {
		qs[i].pending = &pending;
		pending++;
		qs[i].req = evdns_getaddrinfo(dns, qs[i].host, NULL, &hints,
		    backend_dns_cb, &qs[i]);
	}
	timer = evtimer_new(base, backend_dns_timeout, base);
	if (timer != NULL)
		evtimer_add(timer, &tv);
	while (pending > 0 && event_base_loop(base, EVLOOP_ONCE) == 0 &&
	    !event_base_got_break(base))
		;
	for (size_t i = 0; i < num_qs; i++) {
		if (!qs[i].done) {
			config_error(cfg, qs[i].cb->address.lines[qs[i].item],
			    "address", "cannot resolve '%s': no answer within "
			    "%llums", qs[i].host, (unsigned long long)wait_ms);
			if (qs[i].req != NULL)
				evdns_getaddrinfo_cancel(qs[i].req);
		}
	}
	if (timer != NULL)
		event_free(timer);
	evdns_base_free(dns, 1);
	/* Cancelled and failed queries complete on the next turn: let them,
	 * or what libevent holds for them is never freed. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	event_base_free(base);
	return 0;
}

int
backend_resolve_all(struct config *cfg, struct backend *out)
{
	struct backend_query *qs = NULL;
	size_t num_qs = 0, before = cfg->num_errors;

	for (size_t i = 0; i < cfg->num_backends; i++) {
		const struct conf_backend *cb = &cfg->backends[i];
		struct backend *b = &out[i];

		memset(b, 0, sizeof(*b));
		b->name = strdup(cb->h.name);
		b->connect_timeout_ms = cb->connect_timeout_ms;
		b->proxy_protocol = cb->proxy_protocol != NULL ?
		    config_proxy_protocol(cb->proxy_protocol) : -1;
		b->proxy_cert = config_key_set(&cb->h,
		    "proxy_protocol_client_cert") ?
		    (int)cb->proxy_protocol_client_cert : -1;
		for (size_t j = 0; j < cb->address.num; j++) {
			struct backend_query *q, *n;

			if (backend_literal(b, cb->address.v[j]))
				continue;
			n = realloc(qs, (num_qs + 1) * sizeof(*qs));
			if (n == NULL)
				break;
			qs = n;
			q = &qs[num_qs];
			memset(q, 0, sizeof(*q));
			if (addr_split(cb->address.v[j], q->host,
			    sizeof(q->host), &q->port) != 0)
				continue; /* reported by config_check */
			q->cfg = cfg;
			q->b = b;
			q->cb = cb;
			q->item = j;
			num_qs++;
		}
	}
	if (num_qs > 0)
		backend_resolve_names(cfg, out, qs, num_qs);
	free(qs);
	for (size_t i = 0; i < cfg->num_backends; i++) {
		if (out[i].num_addrs == 0 && cfg->backends[i].address.num > 0 &&
		    cfg->num_errors == before)
			config_error(cfg, cfg->backends[i].address.lines[0],
			    "address", "[backend %s] has no usable address",
			    out[i].name);
	}
	return cfg->num_errors == before ? 0 : -1;
}

void
backend_release(struct backend *b)
{
	backend_tls_free(b->tls);
	b->tls = NULL;
	for (size_t i = 0; b->hosts != NULL && i < b->num_addrs; i++)
		free(b->hosts[i]);
	free(b->hosts);
	b->hosts = NULL;
	free(b->name);
	free(b->addrs);
	b->name = NULL;
	b->addrs = NULL;
	b->num_addrs = 0;
}

size_t
backend_pick(struct backend *b)
{
	return atomic_fetch_add_explicit(&b->next, 1, memory_order_relaxed) %
	    b->num_addrs;
}

int
backend_connect(const struct backend *b, size_t i)
{
	const struct addr *a = &b->addrs[i];
	int fd, one = 1;

	fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd < 0)
		return -1;
	/* A plain backend gets TCP_NODELAY from the relay, before its second
	 * write: Nagle never holds a connection's first. */
	if (a->ss.ss_family != AF_UNIX && b->tls != NULL)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) != 0 &&
	    errno != EINPROGRESS) {
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int
backend_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return errno;
	return err;
}
