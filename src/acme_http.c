/* acme_http.c: http-01 answers and redirects to https. */
#include "acme_http.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>

#include "acme_challenge.h"
#include "addr.h"
#include "clock.h"
#include "log.h"

#define ACME_HTTP_HEAD_MAX 4096
#define ACME_HTTP_TIMEOUT_S 10
#define ACME_HTTP_PREFIX "/.well-known/acme-challenge/"

struct acme_http_conn {
	struct acme_http_conn *next, *prev;
	struct acme_http_set *set;
	struct event *ev;
	int fd;
	uint64_t deadline_ms; /* a trickle of bytes does not extend it */
	size_t len;
	char addr[ADDR_STRLEN];
	char head[ACME_HTTP_HEAD_MAX];
};

struct acme_http_set {
	struct event_base *base;
	struct acme_http_conn *conns;
	size_t num;
};

struct acme_http_set *
acme_http_set_new(struct event_base *base)
{
	struct acme_http_set *s = calloc(1, sizeof(*s));

	if (s != NULL)
		s->base = base;
	return s;
}

static void
acme_http_close(struct acme_http_conn *c)
{
	struct acme_http_set *s = c->set;

	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->num--;
	event_free(c->ev);
	close(c->fd);
	free(c);
}

void
acme_http_set_free(struct acme_http_set *s)
{
	if (s == NULL)
		return;
	while (s->conns != NULL)
		acme_http_close(s->conns);
	free(s);
}

/* acme_http_header returns the value of header |name| in |head| (a copy
 * in |buf|), or NULL. */
static const char *
acme_http_header(const char *head, const char *name, char *buf, size_t len)
{
	size_t n = strlen(name);

	for (const char *p = strstr(head, "\r\n"); p != NULL;
	    p = strstr(p + 2, "\r\n")) {
		const char *v = p + 2, *end;

		if (strncasecmp(v, name, n) != 0 || v[n] != ':')
			continue;
		v += n + 1;
		v += strspn(v, " \t");
		end = strstr(v, "\r\n");
		if (end == NULL || (size_t)(end - v) >= len)
			return NULL;
		memcpy(buf, v, (size_t)(end - v));
		buf[end - v] = '\0';
		while (end > v && (buf[end - v - 1] == ' ' ||
		    buf[end - v - 1] == '\t'))
			buf[--end - v] = '\0';
		return buf;
	}
	return NULL;
}

static size_t
acme_http_reply(char *out, size_t out_len, int status, const char *reason,
    const char *extra, const char *body)
{
	int n = snprintf(out, out_len, "HTTP/1.1 %d %s\r\nServer: tlsproxy\r\n"
	    "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n"
	    "%s\r\n%s", status, reason, status == 200 ?
	    "application/octet-stream" : "text/plain", strlen(body), extra,
	    body);

	return n > 0 && (size_t)n < out_len ? (size_t)n : 0;
}

size_t
acme_http_answer(const char *req, size_t len, char *out, size_t out_len,
    int *status)
{
	char method[8], path[1024], host[256], loc[1400];
	const char *sp1, *sp2, *eol;
	char *ka;
	size_t plen, hlen;

	(void)len;
	eol = strstr(req, "\r\n");
	sp1 = strchr(req, ' ');
	sp2 = sp1 != NULL ? strchr(sp1 + 1, ' ') : NULL;
	if (eol == NULL || sp1 == NULL || sp2 == NULL || sp2 > eol ||
	    (size_t)(sp1 - req) >= sizeof(method) ||
	    (plen = (size_t)(sp2 - sp1 - 1)) == 0 || plen >= sizeof(path) ||
	    strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		*status = 400;
		return acme_http_reply(out, out_len, 400, "Bad Request", "",
		    "bad request\n");
	}
	memcpy(method, req, (size_t)(sp1 - req));
	method[sp1 - req] = '\0';
	memcpy(path, sp1 + 1, plen);
	path[plen] = '\0';
	if (path[0] != '/' || strspn(path, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%?") != plen) {
		*status = 400;
		return acme_http_reply(out, out_len, 400, "Bad Request", "",
		    "bad request\n");
	}
	if (strncmp(path, ACME_HTTP_PREFIX, strlen(ACME_HTTP_PREFIX)) == 0 &&
	    (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)) {
		ka = acme_challenge_http(path + strlen(ACME_HTTP_PREFIX));
		if (ka == NULL) {
			*status = 404;
			return acme_http_reply(out, out_len, 404, "Not Found", "",
			    "no such challenge\n");
		}
		*status = 200;
		plen = acme_http_reply(out, out_len, 200, "OK", "", ka);
		free(ka);
		return plen;
	}
	/* Everything else goes to https, host and path kept; the port is
	 * dropped, since the TLS listener is the one on 443. */
	if (acme_http_header(req, "Host", host, sizeof(host)) == NULL ||
	    (hlen = strspn(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
	    "qrstuvwxyz0123456789-.[]:")) != strlen(host) || hlen == 0) {
		*status = 400;
		return acme_http_reply(out, out_len, 400, "Bad Request", "",
		    "a Host header is needed\n");
	}
	if (host[0] != '[' && strchr(host, ':') != NULL)
		*strchr(host, ':') = '\0';
	else if (host[0] == '[' && strstr(host, "]:") != NULL)
		strstr(host, "]:")[1] = '\0';
	snprintf(loc, sizeof(loc), "Location: https://%s%s\r\n", host, path);
	*status = 301;
	return acme_http_reply(out, out_len, 301, "Moved Permanently", loc,
	    "moved to https\n");
}

static void
acme_http_cb(evutil_socket_t fd, short what, void *arg)
{
	struct acme_http_conn *c = arg;
	char out[2048];
	size_t n;
	ssize_t r;
	int status;

	if ((what & EV_TIMEOUT) || clock_mono_ms() > c->deadline_ms) {
		acme_http_close(c);
		return;
	}
	r = read(fd, c->head + c->len, sizeof(c->head) - 1 - c->len);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		acme_http_close(c);
		return;
	}
	c->len += (size_t)r;
	c->head[c->len] = '\0';
	if (strstr(c->head, "\r\n\r\n") == NULL) {
		if (c->len == sizeof(c->head) - 1)
			acme_http_close(c);
		return;
	}
	n = acme_http_answer(c->head, c->len, out, sizeof(out), &status);
	if (strncmp(c->head, "HEAD ", 5) == 0 && n > 0) {
		char *body = strstr(out, "\r\n\r\n");

		if (body != NULL)
			n = (size_t)(body + 4 - out);
	}
	/* One small write to a fresh socket: it fits the send buffer. */
	if (n > 0 && write(fd, out, n) < 0)
		log_msg(LOGL_DEBUG, "acme http: %s: %s", c->addr, strerror(errno));
	if (status == 200)
		log_msg(LOGL_INFO, "acme: http-01 challenge answered for %s",
		    c->addr);
	shutdown(fd, SHUT_WR);
	acme_http_close(c);
}

void
acme_http_accept(struct acme_http_set *s, int fd,
    const struct sockaddr *peer, socklen_t peer_len)
{
	const struct timeval tv = { ACME_HTTP_TIMEOUT_S, 0 };
	struct acme_http_conn *c;

	if (s->num >= ACME_HTTP_MAX || (c = calloc(1, sizeof(*c))) == NULL) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->set = s;
	c->deadline_ms = clock_mono_ms() + ACME_HTTP_TIMEOUT_S * 1000;
	addr_format_sa(peer, peer_len, c->addr, sizeof(c->addr));
	c->ev = event_new(s->base, fd, EV_READ | EV_PERSIST, acme_http_cb, c);
	if (c->ev == NULL || event_add(c->ev, &tv) != 0) {
		if (c->ev != NULL)
			event_free(c->ev);
		close(fd);
		free(c);
		return;
	}
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->num++;
}
