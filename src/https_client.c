/* https_client.c: see https_client.h. */
#include "https_client.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "backend_tls.h"
#include "clock.h"
#include "log.h"
#include "thread.h"

/* What one SSL_read asks for. */
#define HTTPS_READ_SIZE 16384
/* The longest chunk-size line (with extensions) taken. */
#define HTTPS_MAX_CHUNK_LINE 4096

struct https_client {
	SSL_CTX *ctx;
};

/* The URL of a request, taken apart. */
struct https_url {
	char host[256];      /* a name, or an IP literal without brackets */
	int is_ip;
	char port[6];
	char authority[272]; /* the Host header: [v6] brackets, :port if not 443 */
	const char *path;    /* from the first '/' or '?', up to any '#' */
	size_t path_len;
};

/* One request under way: where its messages go and what bounds it. */
struct https_req {
	char url[300]; /* as given, printable, for the messages */
	char *err;
	size_t err_len;
	uint64_t deadline;
	int cancel_fd;
	SSL *ssl;
	/* What has arrived and is not yet parsed: buf[off, len). */
	char *buf;
	size_t off, len, cap;
	size_t header_bytes; /* of every header block and trailer so far */
};

static void
req_fail(struct https_req *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void
req_fail(struct https_req *r, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(r->err, r->err_len, "%s: %s", r->url, msg);
}

/* ---- Waiting. */

enum wait_result {
	WAIT_READY,
	WAIT_TIMEOUT,
	WAIT_CANCELLED, /* the message is set */
	WAIT_ERROR,     /* poll failed; errno says why */
};

/* req_wait waits for |events| on |fd| until |deadline| (monotonic ms),
 * watching the cancel descriptor too. */
static enum wait_result
req_wait(struct https_req *r, int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = {
			{ .fd = fd, .events = events },
			{ .fd = r->cancel_fd, .events = POLLIN },
		};
		uint64_t now = clock_mono_ms();
		int timeout = deadline <= now ? 0 : deadline - now > INT_MAX ?
		    INT_MAX : (int)(deadline - now);
		int n = poll(p, r->cancel_fd >= 0 ? 2 : 1, timeout);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return WAIT_ERROR;
		if (r->cancel_fd >= 0 && p[1].revents != 0) {
			snprintf(r->err, r->err_len, "%s", HTTPS_CANCELLED);
			return WAIT_CANCELLED;
		}
		if (p[0].revents != 0)
			return WAIT_READY;
		if (timeout == 0 || clock_mono_ms() >= deadline)
			return WAIT_TIMEOUT;
	}
}

/* req_wait_fail words a wait that did not end ready while |doing|.
 * Returns -1. */
static int
req_wait_fail(struct https_req *r, enum wait_result w, const char *doing)
{
	if (w == WAIT_TIMEOUT)
		req_fail(r, "timed out %s", doing);
	else if (w == WAIT_ERROR)
		req_fail(r, "poll failed %s: %s", doing, strerror(errno));
	return -1;
}

/* ---- The URL. */

static int
https_parse_url(struct https_req *r, const char *url, struct https_url *u)
{
	const char *p, *end;
	size_t n;

	memset(u, 0, sizeof(*u));
	for (p = url; *p != '\0'; p++) {
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			req_fail(r, "invalid URL: spaces, control characters or "
			    "non-ASCII bytes");
			return -1;
		}
	}
	if (strncasecmp(url, "https://", 8) != 0) {
		req_fail(r, "invalid URL: not https://");
		return -1;
	}
	p = url + 8;
	if (*p == '[') {
		uint8_t bin[16];

		end = strchr(p, ']');
		n = end != NULL ? (size_t)(end - p - 1) : 0;
		if (end == NULL || n == 0 || n >= sizeof(u->host)) {
			req_fail(r, "invalid URL: bad IPv6 literal");
			return -1;
		}
		memcpy(u->host, p + 1, n);
		if (inet_pton(AF_INET6, u->host, bin) != 1) {
			req_fail(r, "invalid URL: bad IPv6 literal");
			return -1;
		}
		u->is_ip = 1;
		p = end + 1;
	} else {
		uint8_t bin[4];

		n = strcspn(p, ":/?#");
		if (n == 0 || n >= sizeof(u->host)) {
			req_fail(r, "invalid URL: no host");
			return -1;
		}
		memcpy(u->host, p, n);
		for (size_t i = 0; i < n; i++) {
			if (!isalnum((unsigned char)u->host[i]) &&
			    strchr("-._", u->host[i]) == NULL) {
				req_fail(r, "invalid URL: bad host name");
				return -1;
			}
		}
		u->is_ip = inet_pton(AF_INET, u->host, bin) == 1;
		p += n;
	}
	snprintf(u->port, sizeof(u->port), "443");
	if (*p == ':') {
		unsigned long port = 0;

		p++;
		n = strspn(p, "0123456789");
		if (n > 5 || (n > 0 && ((port = strtoul(p, NULL, 10)) == 0 ||
		    port > 65535))) {
			req_fail(r, "invalid URL: bad port");
			return -1;
		}
		if (n > 0)
			snprintf(u->port, sizeof(u->port), "%lu", port);
		p += n;
	}
	if (*p != '\0' && *p != '/' && *p != '?' && *p != '#') {
		req_fail(r, "invalid URL: bad port");
		return -1;
	}
	snprintf(u->authority, sizeof(u->authority), "%s%s%s%s%s",
	    strchr(u->host, ':') != NULL ? "[" : "", u->host,
	    strchr(u->host, ':') != NULL ? "]" : "",
	    strcmp(u->port, "443") != 0 ? ":" : "",
	    strcmp(u->port, "443") != 0 ? u->port : "");
	u->path = p;
	u->path_len = strcspn(p, "#");
	return 0;
}

/* ---- Resolving, in a thread: getaddrinfo cannot be bounded or
 * cancelled, so the request waits on an eventfd the thread signals, and
 * leaves the thread behind when the deadline or the cancel comes first. */

struct resolve_job {
	pthread_mutex_t lock;
	int refs;
	int efd;
	char host[256];
	char port[6];
	struct addrinfo *res;
	int rc;
};

static void
resolve_job_unref(struct resolve_job *j)
{
	int refs;

	pthread_mutex_lock(&j->lock);
	refs = --j->refs;
	pthread_mutex_unlock(&j->lock);
	if (refs > 0)
		return;
	if (j->res != NULL)
		freeaddrinfo(j->res);
	close(j->efd);
	pthread_mutex_destroy(&j->lock);
	free(j);
}

static const struct addrinfo resolve_hints = {
	.ai_family = AF_UNSPEC,
	.ai_socktype = SOCK_STREAM,
	.ai_protocol = IPPROTO_TCP,
};

static void *
resolve_thread(void *arg)
{
	struct resolve_job *j = arg;
	struct addrinfo *res = NULL;
	uint64_t one = 1;
	int rc = getaddrinfo(j->host, j->port, &resolve_hints, &res);

	pthread_mutex_lock(&j->lock);
	j->rc = rc;
	j->res = res;
	pthread_mutex_unlock(&j->lock);
	if (write(j->efd, &one, sizeof(one)) < 0) {
		/* An eventfd takes 2^64-2 writes: this does not happen. */
	}
	resolve_job_unref(j);
	return NULL;
}

static struct addrinfo *
https_resolve(struct https_req *r, const struct https_url *u)
{
	struct addrinfo hints = resolve_hints, *res = NULL;
	struct resolve_job *j;
	pthread_attr_t attr;
	pthread_t t;
	enum wait_result w;
	int rc;

	if (u->is_ip) {
		hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
		rc = getaddrinfo(u->host, u->port, &hints, &res);
		if (rc != 0) {
			req_fail(r, "cannot use address %s: %s", u->host,
			    gai_strerror(rc));
			return NULL;
		}
		return res;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		req_fail(r, "out of memory");
		return NULL;
	}
	j->refs = 2;
	snprintf(j->host, sizeof(j->host), "%s", u->host);
	snprintf(j->port, sizeof(j->port), "%s", u->port);
	if ((j->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		req_fail(r, "cannot resolve %s: eventfd: %s", u->host,
		    strerror(errno));
		free(j);
		return NULL;
	}
	pthread_mutex_init(&j->lock, NULL);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = thread_create(&t, &attr, resolve_thread, j);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		req_fail(r, "cannot resolve %s: no thread: %s", u->host,
		    strerror(rc));
		j->refs = 1;
		resolve_job_unref(j);
		return NULL;
	}
	w = req_wait(r, j->efd, POLLIN, r->deadline);
	if (w != WAIT_READY) {
		char doing[300];

		snprintf(doing, sizeof(doing), "resolving %s", u->host);
		req_wait_fail(r, w, doing);
		resolve_job_unref(j);
		return NULL;
	}
	pthread_mutex_lock(&j->lock);
	rc = j->rc;
	res = j->res;
	j->res = NULL;
	pthread_mutex_unlock(&j->lock);
	resolve_job_unref(j);
	if (rc != 0 || res == NULL) {
		req_fail(r, "cannot resolve %s: %s", u->host, rc != 0 ?
		    gai_strerror(rc) : "no address");
		if (res != NULL)
			freeaddrinfo(res);
		return NULL;
	}
	return res;
}

/* ---- Connecting. */

static void
addr_text(const struct addrinfo *ai, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN], port[8];

	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), port,
	    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(buf, len, "?");
	else if (ai->ai_family == AF_INET6)
		snprintf(buf, len, "[%s]:%s", host, port);
	else
		snprintf(buf, len, "%s:%s", host, port);
}

/* https_connect tries each address in turn, each with an even share of
 * the time left, and returns the connected socket or -1. */
static int
https_connect(struct https_req *r, const struct addrinfo *res)
{
	char last[400] = "", addr[INET6_ADDRSTRLEN + 16];
	size_t left = 0, tried = 0;

	for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next)
		left++;
	for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next,
	    left--) {
		uint64_t now = clock_mono_ms(), until;
		enum wait_result w;
		socklen_t sl = sizeof(int);
		int fd, soerr = 0;

		if (now >= r->deadline)
			break;
		until = now + (r->deadline - now) / left;
		addr_text(ai, addr, sizeof(addr));
		tried++;
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			snprintf(last, sizeof(last), "cannot connect to %s: %s",
			    addr, strerror(errno));
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			return fd;
		if (errno != EINPROGRESS) {
			snprintf(last, sizeof(last), "cannot connect to %s: %s",
			    addr, strerror(errno));
			close(fd);
			continue;
		}
		w = req_wait(r, fd, POLLOUT, until);
		if (w == WAIT_CANCELLED) {
			close(fd);
			return -1;
		}
		if (w == WAIT_READY && getsockopt(fd, SOL_SOCKET, SO_ERROR,
		    &soerr, &sl) == 0 && soerr == 0)
			return fd;
		if (w == WAIT_TIMEOUT)
			snprintf(last, sizeof(last), "timed out connecting to %s",
			    addr);
		else
			snprintf(last, sizeof(last), "cannot connect to %s: %s",
			    addr, strerror(w == WAIT_READY ? soerr : errno));
		close(fd);
	}
	if (last[0] == '\0')
		req_fail(r, "timed out before connecting");
	else if (tried > 1)
		req_fail(r, "%s (%zu addresses tried)", last, tried);
	else
		req_fail(r, "%s", last);
	return -1;
}

/* ---- TLS. */

/* req_ssl_wait waits for what SSL_get_error's |e| asks for. Returns 1 to
 * go on, 0 when |e| is not a wait, -1 on timeout or cancel (the message
 * is set, naming |doing|). */
static int
req_ssl_wait(struct https_req *r, int e, const char *doing)
{
	enum wait_result w;

	if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
		return 0;
	w = req_wait(r, SSL_get_fd(r->ssl), e == SSL_ERROR_WANT_READ ?
	    POLLIN : POLLOUT, r->deadline);
	if (w == WAIT_READY)
		return 1;
	return req_wait_fail(r, w, doing);
}

static int
https_handshake(struct https_req *r, const struct https_url *u)
{
	for (;;) {
		int rc, e, saved, w;
		long vr;
		uint32_t code;
		char reason[160];

		ERR_clear_error();
		errno = 0;
		rc = SSL_do_handshake(r->ssl);
		if (rc == 1)
			return 0;
		saved = errno;
		e = SSL_get_error(r->ssl, rc);
		if ((w = req_ssl_wait(r, e, "in the TLS handshake")) > 0)
			continue;
		if (w < 0)
			return -1;
		vr = SSL_get_verify_result(r->ssl);
		code = ERR_peek_error();
		if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
		    ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
		    vr != X509_V_OK) {
			ERR_clear_error();
			if (vr == X509_V_ERR_HOSTNAME_MISMATCH ||
			    vr == X509_V_ERR_IP_ADDRESS_MISMATCH)
				req_fail(r, "certificate verify failed: %s "
				    "(expected %s)", X509_verify_cert_error_string(vr),
				    u->host);
			else
				req_fail(r, "certificate verify failed: %s",
				    X509_verify_cert_error_string(vr));
		} else if ((e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) &&
		    code == 0) {
			req_fail(r, "TLS handshake failed: %s", saved != 0 ?
			    strerror(saved) : "the server closed the connection");
		} else {
			req_fail(r, "TLS handshake failed: %s",
			    log_ssl_error(reason, sizeof(reason)));
		}
		return -1;
	}
}

static int
https_send(struct https_req *r, const char *data, size_t len)
{
	size_t off = 0;

	while (off < len) {
		size_t n = len - off > INT_MAX ? INT_MAX : len - off;
		int rc, e, saved, w;
		char reason[160];

		ERR_clear_error();
		errno = 0;
		rc = SSL_write(r->ssl, data + off, (int)n);
		if (rc > 0) {
			off += (size_t)rc;
			continue;
		}
		saved = errno;
		e = SSL_get_error(r->ssl, rc);
		if ((w = req_ssl_wait(r, e, "sending the request")) > 0)
			continue;
		if (w < 0)
			return -1;
		if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
			req_fail(r, "sending the request: %s", saved != 0 ?
			    strerror(saved) : "the server closed the connection");
		else
			req_fail(r, "sending the request: %s",
			    log_ssl_error(reason, sizeof(reason)));
		return -1;
	}
	return 0;
}

/* ---- Reading. */

/* req_more reads what the server sends next onto the buffer. Returns the
 * number of bytes, 0 at the end of the stream, -1 on failure. */
static int
req_more(struct https_req *r, const char *doing)
{
	if (r->off > 0) {
		memmove(r->buf, r->buf + r->off, r->len - r->off);
		r->len -= r->off;
		r->off = 0;
	}
	if (r->cap - r->len < HTTPS_READ_SIZE) {
		size_t cap = r->len + HTTPS_READ_SIZE;
		char *b = realloc(r->buf, cap);

		if (b == NULL) {
			req_fail(r, "out of memory");
			return -1;
		}
		r->buf = b;
		r->cap = cap;
	}
	for (;;) {
		int rc, e, saved, w;
		uint32_t code;
		char reason[160];

		ERR_clear_error();
		errno = 0;
		rc = SSL_read(r->ssl, r->buf + r->len, HTTPS_READ_SIZE);
		if (rc > 0) {
			r->len += (size_t)rc;
			return rc;
		}
		saved = errno;
		e = SSL_get_error(r->ssl, rc);
		if ((w = req_ssl_wait(r, e, doing)) > 0)
			continue;
		if (w < 0)
			return -1;
		code = ERR_peek_error();
		/* The end: with close_notify, or without it (as many servers
		 * do after Connection: close); what the framing expected
		 * decides whether that is a truncation. */
		if (e == SSL_ERROR_ZERO_RETURN ||
		    (e == SSL_ERROR_SYSCALL && code == 0 && saved == 0))
			return 0;
		if (e == SSL_ERROR_SYSCALL && code == 0)
			req_fail(r, "%s: %s", doing, strerror(saved));
		else
			req_fail(r, "%s: %s", doing, log_ssl_error(reason,
			    sizeof(reason)));
		return -1;
	}
}

/* req_line finds the next line (ended by LF, an optional CR before it
 * dropped), reading more as needed. |*line| points into the buffer and is
 * NUL-terminated in place; it lasts until the next read. Lines longer
 * than |max| fail with |too_long|. Returns 1, 0 when the stream ended
 * first (|closed| names the situation), -1 on failure. */
static int
req_line(struct https_req *r, size_t max, const char *doing,
    const char *too_long, char **line, size_t *len)
{
	size_t scanned = 0;

	for (;;) {
		char *start = r->buf != NULL ? r->buf + r->off : NULL;
		char *nl = r->len - r->off > scanned ? memchr(start + scanned,
		    '\n', r->len - r->off - scanned) : NULL;
		int n;

		if (nl != NULL) {
			size_t l = (size_t)(nl - start);

			if (l > max) {
				req_fail(r, "%s", too_long);
				return -1;
			}
			r->off += l + 1;
			if (l > 0 && start[l - 1] == '\r')
				l--;
			start[l] = '\0';
			*line = start;
			*len = l;
			return 1;
		}
		scanned = r->len - r->off;
		if (scanned > max) {
			req_fail(r, "%s", too_long);
			return -1;
		}
		if ((n = req_more(r, doing)) <= 0)
			return n;
	}
}

/* ---- The response. */

static int
resp_add_header(struct https_response *resp, const char *name, size_t nlen,
    const char *value, size_t vlen)
{
	struct https_header *h = realloc(resp->headers,
	    (resp->num_headers + 1) * sizeof(*h));

	if (h == NULL)
		return -1;
	resp->headers = h;
	h = &resp->headers[resp->num_headers];
	h->name = strndup(name, nlen);
	h->value = strndup(value, vlen);
	if (h->name == NULL || h->value == NULL) {
		free(h->name);
		free(h->value);
		return -1;
	}
	resp->num_headers++;
	return 0;
}

static void
resp_clear_headers(struct https_response *resp)
{
	for (size_t i = 0; i < resp->num_headers; i++) {
		free(resp->headers[i].name);
		free(resp->headers[i].value);
	}
	free(resp->headers);
	resp->headers = NULL;
	resp->num_headers = 0;
}

static int
is_tchar(int c)
{
	return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* https_read_head reads a status line and its headers into |resp|,
 * skipping interim (1xx) responses. */
static int
https_read_head(struct https_req *r, struct https_response *resp)
{
	static const char too_long[] = "malformed response: the headers "
	    "exceed 64 KiB";

	for (;;) {
		char *line;
		size_t len;
		int rc, first = 1;

		resp_clear_headers(resp);
		for (;;) {
			size_t left = r->header_bytes < HTTPS_MAX_HEADERS ?
			    HTTPS_MAX_HEADERS - r->header_bytes : 0;
			const char *colon, *v, *end;

			rc = req_line(r, left, "waiting for the response",
			    too_long, &line, &len);
			if (rc < 0)
				return -1;
			if (rc == 0) {
				req_fail(r, first && r->header_bytes == 0 ?
				    "the server closed the connection without a "
				    "response" : "malformed response: the server "
				    "closed the connection in the headers");
				return -1;
			}
			r->header_bytes += len + 2;
			if (memchr(line, '\0', len) != NULL) {
				req_fail(r, "malformed response: a NUL byte in the "
				    "headers");
				return -1;
			}
			if (first) {
				/* HTTP/1.x DDD[ reason] */
				if (len < 12 || strncmp(line, "HTTP/1.", 7) != 0 ||
				    !isdigit((unsigned char)line[7]) ||
				    line[8] != ' ' ||
				    !isdigit((unsigned char)line[9]) ||
				    !isdigit((unsigned char)line[10]) ||
				    !isdigit((unsigned char)line[11]) ||
				    (len > 12 && line[12] != ' ')) {
					req_fail(r, "malformed response: bad status "
					    "line");
					return -1;
				}
				resp->status = atoi(line + 9);
				if (resp->status < 100) {
					req_fail(r, "malformed response: bad status "
					    "code");
					return -1;
				}
				first = 0;
				continue;
			}
			if (len == 0)
				break;
			if (line[0] == ' ' || line[0] == '\t') {
				/* obs-fold: joined to the value by a space. */
				struct https_header *h;
				size_t old, add;
				char *nv;

				if (resp->num_headers == 0) {
					req_fail(r, "malformed response: a folded "
					    "line before any header");
					return -1;
				}
				h = &resp->headers[resp->num_headers - 1];
				while (*line == ' ' || *line == '\t')
					line++;
				add = strlen(line);
				while (add > 0 && (line[add - 1] == ' ' ||
				    line[add - 1] == '\t'))
					add--;
				old = strlen(h->value);
				if ((nv = realloc(h->value, old + add + 2)) == NULL) {
					req_fail(r, "out of memory");
					return -1;
				}
				nv[old] = ' ';
				memcpy(nv + old + 1, line, add);
				nv[old + 1 + add] = '\0';
				h->value = nv;
				continue;
			}
			colon = memchr(line, ':', len);
			if (colon == NULL || colon == line) {
				req_fail(r, "malformed response: a header line "
				    "without a name");
				return -1;
			}
			for (const char *p = line; p < colon; p++) {
				if (!is_tchar((unsigned char)*p)) {
					req_fail(r, "malformed response: a bad "
					    "header name");
					return -1;
				}
			}
			v = colon + 1;
			end = line + len;
			while (v < end && (*v == ' ' || *v == '\t'))
				v++;
			while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
				end--;
			if (resp_add_header(resp, line, (size_t)(colon - line), v,
			    (size_t)(end - v)) != 0) {
				req_fail(r, "out of memory");
				return -1;
			}
		}
		if (resp->status == 101) {
			req_fail(r, "malformed response: 101 Switching Protocols "
			    "was not asked for");
			return -1;
		}
		if (resp->status >= 200)
			return 0;
	}
}

/* ---- Links (RFC 8288). */

static const char *
skip_ows(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* link_param_value reads a token or quoted-string at |*pp| into a new
 * string. */
static char *
link_param_value(const char **pp)
{
	const char *p = *pp;
	char *v, *o;

	if (*p != '"') {
		size_t n = strcspn(p, ";, \t");

		*pp = p + n;
		return strndup(p, n);
	}
	p++;
	if ((v = o = malloc(strlen(p) + 1)) == NULL)
		return NULL;
	while (*p != '\0' && *p != '"') {
		if (*p == '\\' && p[1] != '\0')
			p++;
		*o++ = *p++;
	}
	*o = '\0';
	if (*p == '"')
		p++;
	*pp = p;
	return v;
}

static int
resp_parse_links(struct https_response *resp, const char *value)
{
	const char *p = value;

	for (;;) {
		const char *gt;
		char *url, *rel = NULL;
		struct https_link *l;

		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			return 0;
		if (*p != '<' || (gt = strchr(p, '>')) == NULL) {
			/* Not a link-value: on to the next one. */
			int quoted = 0;

			for (; *p != '\0' && (quoted || *p != ','); p++) {
				if (*p == '"')
					quoted = !quoted;
				else if (quoted && *p == '\\' && p[1] != '\0')
					p++;
			}
			continue;
		}
		if ((url = strndup(p + 1, (size_t)(gt - p - 1))) == NULL)
			return -1;
		p = gt + 1;
		for (;;) {
			const char *name;
			size_t nlen;
			char *v = NULL;

			p = skip_ows(p);
			if (*p != ';')
				break;
			p = skip_ows(p + 1);
			name = p;
			nlen = strcspn(p, "=;, \t");
			p = skip_ows(p + nlen);
			if (*p == '=') {
				p = skip_ows(p + 1);
				if ((v = link_param_value(&p)) == NULL) {
					free(url);
					free(rel);
					return -1;
				}
			}
			/* Only the first rel counts (RFC 8288 3.3). */
			if (rel == NULL && nlen == 3 &&
			    strncasecmp(name, "rel", 3) == 0 && v != NULL)
				rel = v;
			else
				free(v);
		}
		/* Whatever else is left of this link-value is ignored. */
		while (*p != '\0' && *p != ',')
			p++;
		if (rel == NULL && (rel = strdup("")) == NULL) {
			free(url);
			return -1;
		}
		l = realloc(resp->links, (resp->num_links + 1) * sizeof(*l));
		if (l == NULL) {
			free(url);
			free(rel);
			return -1;
		}
		resp->links = l;
		resp->links[resp->num_links].url = url;
		resp->links[resp->num_links].rel = rel;
		resp->num_links++;
	}
}

static int
rel_has(const char *rels, const char *rel)
{
	size_t want = strlen(rel);

	for (const char *p = rels; *p != '\0';) {
		size_t n;

		p += strspn(p, " \t");
		n = strcspn(p, " \t");
		if (n == want && n > 0 && strncasecmp(p, rel, n) == 0)
			return 1;
		p += n;
	}
	return 0;
}

const char *
https_response_links(const struct https_response *resp, const char *rel,
    size_t *pos)
{
	for (; *pos < resp->num_links; (*pos)++) {
		if (rel_has(resp->links[*pos].rel, rel))
			return resp->links[(*pos)++].url;
	}
	return NULL;
}

const char *
https_response_link(const struct https_response *resp, const char *rel)
{
	size_t pos = 0;

	return https_response_links(resp, rel, &pos);
}

const char *
https_response_header(const struct https_response *resp, const char *name)
{
	for (size_t i = 0; i < resp->num_headers; i++) {
		if (strcasecmp(resp->headers[i].name, name) == 0)
			return resp->headers[i].value;
	}
	return NULL;
}

/* ---- The body. */

static int
body_add(struct https_req *r, struct https_response *resp, size_t *cap,
    const char *data, size_t len)
{
	if (len > HTTPS_MAX_BODY - resp->body_len) {
		req_fail(r, "the response body exceeds %d bytes", HTTPS_MAX_BODY);
		return -1;
	}
	if (resp->body_len + len + 1 > *cap) {
		size_t c = *cap * 2;
		char *b;

		if (c < resp->body_len + len + 1)
			c = resp->body_len + len + 1;
		if (c > HTTPS_MAX_BODY + 1)
			c = HTTPS_MAX_BODY + 1;
		if ((b = realloc(resp->body, c)) == NULL) {
			req_fail(r, "out of memory");
			return -1;
		}
		resp->body = b;
		*cap = c;
	}
	memcpy(resp->body + resp->body_len, data, len);
	resp->body_len += len;
	resp->body[resp->body_len] = '\0';
	return 0;
}

/* body_take moves up to |max| buffered bytes into the body. */
static int
body_take(struct https_req *r, struct https_response *resp, size_t *cap,
    size_t max)
{
	size_t n = r->len - r->off;

	if (n > max)
		n = max;
	if (body_add(r, resp, cap, r->buf + r->off, n) != 0)
		return -1;
	r->off += n;
	return (int)(n > 0);
}

/* parse_content_length reads Content-Length (every one, each possibly a
 * list, must agree). Returns 1 with |*out|, 0 without one, -1 if bad. */
static int
parse_content_length(const struct https_response *resp, uint64_t *out)
{
	int found = 0;

	for (size_t i = 0; i < resp->num_headers; i++) {
		const char *p = resp->headers[i].value;

		if (strcasecmp(resp->headers[i].name, "Content-Length") != 0)
			continue;
		do {
			uint64_t v = 0;

			p = skip_ows(p);
			if (!isdigit((unsigned char)*p))
				return -1;
			for (; isdigit((unsigned char)*p); p++) {
				if (v > (UINT64_MAX - 9) / 10)
					return -1;
				v = v * 10 + (uint64_t)(*p - '0');
			}
			p = skip_ows(p);
			if (*p != '\0' && *p != ',')
				return -1;
			if (found && v != *out)
				return -1;
			*out = v;
			found = 1;
		} while (*p++ == ',');
	}
	return found;
}

/* is_chunked returns whether the last transfer coding is chunked. */
static int
is_chunked(const struct https_response *resp, int *has_te)
{
	const char *last = NULL;

	*has_te = 0;
	for (size_t i = 0; i < resp->num_headers; i++) {
		if (strcasecmp(resp->headers[i].name, "Transfer-Encoding") == 0) {
			*has_te = 1;
			last = resp->headers[i].value;
		}
	}
	if (last == NULL)
		return 0;
	if (strrchr(last, ',') != NULL)
		last = strrchr(last, ',') + 1;
	last = skip_ows(last);
	return strncasecmp(last, "chunked", 7) == 0 &&
	    *skip_ows(last + 7) == '\0';
}

static int
https_read_chunked(struct https_req *r, struct https_response *resp,
    size_t *cap)
{
	static const char doing[] = "reading the chunked body";
	static const char closed[] = "malformed response: the server closed "
	    "the connection in the chunked body";

	for (;;) {
		char *line, *p;
		size_t len, size = 0;
		int rc;

		rc = req_line(r, HTTPS_MAX_CHUNK_LINE, doing, "malformed "
		    "response: a chunk-size line too long", &line, &len);
		if (rc <= 0) {
			if (rc == 0)
				req_fail(r, "%s", closed);
			return -1;
		}
		if (!isxdigit((unsigned char)line[0])) {
			req_fail(r, "malformed response: bad chunk size");
			return -1;
		}
		for (p = line; isxdigit((unsigned char)*p); p++) {
			if (size > HTTPS_MAX_BODY) {
				req_fail(r, "the response body exceeds %d bytes",
				    HTTPS_MAX_BODY);
				return -1;
			}
			size = size * 16 + (size_t)(isdigit((unsigned char)*p) ?
			    *p - '0' : (tolower((unsigned char)*p) - 'a' + 10));
		}
		p = (char *)skip_ows(p);
		if (*p != '\0' && *p != ';') {
			req_fail(r, "malformed response: bad chunk size");
			return -1;
		}
		if (size > HTTPS_MAX_BODY - resp->body_len) {
			req_fail(r, "the response body exceeds %d bytes",
			    HTTPS_MAX_BODY);
			return -1;
		}
		if (size == 0)
			break;
		while (size > 0) {
			size_t before = resp->body_len;

			if (r->off == r->len) {
				rc = req_more(r, doing);
				if (rc <= 0) {
					if (rc == 0)
						req_fail(r, "%s", closed);
					return -1;
				}
			}
			if (body_take(r, resp, cap, size) < 0)
				return -1;
			size -= resp->body_len - before;
		}
		rc = req_line(r, 2, doing, "malformed response: no CRLF after "
		    "a chunk", &line, &len);
		if (rc < 0)
			return -1;
		if (rc == 0 || len != 0) {
			req_fail(r, "%s", rc == 0 ? closed : "malformed response: "
			    "no CRLF after a chunk");
			return -1;
		}
	}
	/* Trailers, counted with the headers, then the empty line. */
	for (;;) {
		char *line;
		size_t len;
		int rc = req_line(r, r->header_bytes < HTTPS_MAX_HEADERS ?
		    HTTPS_MAX_HEADERS - r->header_bytes : 0, doing,
		    "malformed response: the headers exceed 64 KiB", &line, &len);

		if (rc <= 0) {
			if (rc == 0)
				req_fail(r, "%s", closed);
			return -1;
		}
		r->header_bytes += len + 2;
		if (len == 0)
			return 0;
	}
}

static int
https_read_body(struct https_req *r, struct https_response *resp,
    int head)
{
	size_t cap = 0;
	uint64_t clen = 0;
	int has_te, chunked, rc;

	if (body_add(r, resp, &cap, "", 0) != 0)
		return -1;
	if (head || resp->status == 204 || resp->status == 304)
		return 0;
	chunked = is_chunked(resp, &has_te);
	if (chunked)
		return https_read_chunked(r, resp, &cap);
	if (!has_te && (rc = parse_content_length(resp, &clen)) != 0) {
		if (rc < 0) {
			req_fail(r, "malformed response: bad Content-Length");
			return -1;
		}
		if (clen > HTTPS_MAX_BODY) {
			req_fail(r, "the response body exceeds %d bytes "
			    "(Content-Length: %llu)", HTTPS_MAX_BODY,
			    (unsigned long long)clen);
			return -1;
		}
		while (resp->body_len < clen) {
			if (r->off == r->len) {
				rc = req_more(r, "reading the response body");
				if (rc < 0)
					return -1;
				if (rc == 0) {
					req_fail(r, "malformed response: the server "
					    "closed the connection after %zu of %llu "
					    "body bytes", resp->body_len,
					    (unsigned long long)clen);
					return -1;
				}
			}
			if (body_take(r, resp, &cap, clen - resp->body_len) < 0)
				return -1;
		}
		return 0;
	}
	/* Until the server closes. */
	for (;;) {
		if (body_take(r, resp, &cap, SIZE_MAX) < 0)
			return -1;
		rc = req_more(r, "reading the response body");
		if (rc <= 0)
			return rc;
	}
}

/* ---- The request. */

static char *
https_build_request(const char *method, const struct https_url *u,
    const char *content_type, const void *body, size_t body_len,
    size_t *out_len)
{
	int with_body = body_len > 0 || strcmp(method, "POST") == 0;
	size_t cap = 256 + strlen(method) + u->path_len + strlen(u->authority) +
	    strlen(TLSPROXY_VERSION) + (content_type != NULL ?
	    strlen(content_type) : 0);
	char *req;
	int n;

	if (body_len > SIZE_MAX - cap || (req = malloc(cap + body_len)) == NULL)
		return NULL;
	n = snprintf(req, cap, "%s %s%.*s HTTP/1.1\r\nHost: %s\r\n"
	    "User-Agent: tlsproxy/%s\r\nAccept: */*\r\n",
	    method, u->path[0] == '/' ? "" : "/", (int)u->path_len, u->path,
	    u->authority, TLSPROXY_VERSION);
	if (with_body && content_type != NULL)
		n += snprintf(req + n, cap - (size_t)n, "Content-Type: %s\r\n",
		    content_type);
	if (with_body)
		n += snprintf(req + n, cap - (size_t)n,
		    "Content-Length: %zu\r\n", body_len);
	n += snprintf(req + n, cap - (size_t)n, "Connection: close\r\n\r\n");
	if (body_len > 0)
		memcpy(req + n, body, body_len);
	*out_len = (size_t)n + body_len;
	return req;
}

static int
valid_content_type(const char *s)
{
	for (; *s != '\0'; s++) {
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			return 0;
	}
	return 1;
}

int
https_request(struct https_client *hc, const char *method, const char *url,
    const char *content_type, const void *body, size_t body_len,
    uint64_t deadline_ms, int cancel_fd, struct https_response *out,
    char *err, size_t err_len)
{
	struct https_req r = {
		.err = err,
		.err_len = err_len,
		.deadline = deadline_ms,
		.cancel_fd = cancel_fd,
	};
	struct https_url u;
	struct addrinfo *res = NULL;
	char *req = NULL;
	size_t req_len = 0, i;
	int fd = -1, rc = -1, head = strcmp(method, "HEAD") == 0;

	memset(out, 0, sizeof(*out));
	for (i = 0; url[i] != '\0' && i < sizeof(r.url) - 4; i++)
		r.url[i] = (unsigned char)url[i] < 0x20 ||
		    (unsigned char)url[i] >= 0x7f ? '?' : url[i];
	if (url[i] != '\0')
		memcpy(r.url + i, "...", 4);
	if (err_len > 0)
		err[0] = '\0';
	ERR_clear_error();
	if (strcmp(method, "GET") != 0 && !head && strcmp(method, "POST") != 0) {
		req_fail(&r, "method %.16s is not GET, HEAD or POST", method);
		return -1;
	}
	if (content_type != NULL && !valid_content_type(content_type)) {
		req_fail(&r, "a Content-Type with control characters");
		return -1;
	}
	if (https_parse_url(&r, url, &u) != 0)
		return -1;
	if ((req = https_build_request(method, &u, content_type, body,
	    body_len, &req_len)) == NULL) {
		req_fail(&r, "out of memory");
		return -1;
	}
	if (cancel_fd >= 0) {
		struct pollfd p = { .fd = cancel_fd, .events = POLLIN };

		if (poll(&p, 1, 0) > 0) {
			snprintf(err, err_len, "%s", HTTPS_CANCELLED);
			goto done;
		}
	}
	if (clock_mono_ms() >= r.deadline) {
		req_fail(&r, "timed out before starting");
		goto done;
	}
	if ((res = https_resolve(&r, &u)) == NULL ||
	    (fd = https_connect(&r, res)) < 0)
		goto done;
	if ((r.ssl = SSL_new(hc->ctx)) == NULL || !SSL_set_fd(r.ssl, fd) ||
	    (!u.is_ip && !SSL_set_tlsext_host_name(r.ssl, u.host)) ||
	    !backend_tls_identity(r.ssl, u.host)) {
		char reason[160];

		req_fail(&r, "cannot set up TLS: %s", log_ssl_error(reason,
		    sizeof(reason)));
		goto done;
	}
	SSL_set_connect_state(r.ssl);
	if (https_handshake(&r, &u) != 0 || https_send(&r, req, req_len) != 0 ||
	    https_read_head(&r, out) != 0)
		goto done;
	out->replay_nonce = https_response_header(out, "Replay-Nonce");
	out->location = https_response_header(out, "Location");
	out->retry_after = https_response_header(out, "Retry-After");
	out->content_type = https_response_header(out, "Content-Type");
	for (i = 0; i < out->num_headers; i++) {
		if (strcasecmp(out->headers[i].name, "Link") == 0 &&
		    resp_parse_links(out, out->headers[i].value) != 0) {
			req_fail(&r, "out of memory");
			goto done;
		}
	}
	if (https_read_body(&r, out, head) != 0)
		goto done;
	rc = 0;
done:
	if (rc != 0)
		https_response_free(out);
	SSL_free(r.ssl);
	if (fd >= 0)
		close(fd);
	if (res != NULL)
		freeaddrinfo(res);
	free(r.buf);
	free(req);
	ERR_clear_error();
	return rc;
}

void
https_response_free(struct https_response *resp)
{
	if (resp == NULL)
		return;
	resp_clear_headers(resp);
	for (size_t i = 0; i < resp->num_links; i++) {
		free(resp->links[i].url);
		free(resp->links[i].rel);
	}
	free(resp->links);
	free(resp->body);
	memset(resp, 0, sizeof(*resp));
}

struct https_client *
https_client_new(const char *ca_file, char *err, size_t err_len)
{
	struct https_client *hc = calloc(1, sizeof(*hc));

	if (hc == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	if ((hc->ctx = backend_tls_client_ctx(ca_file, "ca", err,
	    err_len)) == NULL) {
		free(hc);
		return NULL;
	}
	return hc;
}

void
https_client_free(struct https_client *hc)
{
	if (hc == NULL)
		return;
	SSL_CTX_free(hc->ctx);
	free(hc);
}

/* ---- Retry-After. */

static const char *const month_names[12] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};
static const char *const day_names[7] = {
	"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun",
};
static const char *const long_day_names[7] = {
	"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
	"Sunday",
};

/* The date parsers step a cursor; each returns NULL on a mismatch. */

static const char *
lit(const char *p, const char *s)
{
	size_t n = strlen(s);

	return p != NULL && strncmp(p, s, n) == 0 ? p + n : NULL;
}

static const char *
digits(const char *p, int n, int *out)
{
	*out = 0;
	for (int i = 0; p != NULL && i < n; i++, p++) {
		if (!isdigit((unsigned char)*p))
			return NULL;
		*out = *out * 10 + (*p - '0');
	}
	return p;
}

static const char *
name_of(const char *p, const char *const *names, int count, int *out)
{
	for (int i = 0; p != NULL && i < count; i++) {
		size_t n = strlen(names[i]);

		if (strncmp(p, names[i], n) == 0) {
			*out = i;
			return p + n;
		}
	}
	return NULL;
}

static const char *
clock_time(const char *p, struct tm *tm)
{
	p = digits(p, 2, &tm->tm_hour);
	p = digits(lit(p, ":"), 2, &tm->tm_min);
	return digits(lit(p, ":"), 2, &tm->tm_sec);
}

/* http_date reads an HTTP-date (RFC 9110 5.6.7), all three forms. */
static int
http_date(const char *s, time_t now, time_t *out)
{
	struct tm tm = { 0 };
	const char *p;
	int wd, year = 0;

	if ((p = name_of(s, day_names, 7, &wd)) != NULL && *p == ',') {
		/* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
		p = digits(lit(p, ", "), 2, &tm.tm_mday);
		p = name_of(lit(p, " "), month_names, 12, &tm.tm_mon);
		p = digits(lit(p, " "), 4, &year);
		p = lit(clock_time(lit(p, " "), &tm), " GMT");
	} else if (p != NULL && *p == ' ') {
		/* asctime: Sun Nov  6 08:49:37 1994 */
		p = name_of(p + 1, month_names, 12, &tm.tm_mon);
		if (p != NULL && p[0] == ' ' && p[1] == ' ')
			p = digits(p + 2, 1, &tm.tm_mday);
		else
			p = digits(lit(p, " "), 2, &tm.tm_mday);
		p = clock_time(lit(p, " "), &tm);
		p = digits(lit(p, " "), 4, &year);
	} else if ((p = name_of(s, long_day_names, 7, &wd)) != NULL) {
		/* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT; a two-digit year
		 * more than 50 years ahead is the century before. */
		struct tm now_tm;
		int yy, century;

		p = digits(lit(p, ", "), 2, &tm.tm_mday);
		p = name_of(lit(p, "-"), month_names, 12, &tm.tm_mon);
		p = digits(lit(p, "-"), 2, &yy);
		p = lit(clock_time(lit(p, " "), &tm), " GMT");
		if (p == NULL || gmtime_r(&now, &now_tm) == NULL)
			return -1;
		century = (now_tm.tm_year + 1900) / 100 * 100;
		year = century + yy;
		if (year > now_tm.tm_year + 1900 + 50)
			year -= 100;
		else if (year + 100 <= now_tm.tm_year + 1900 + 50)
			year += 100;
	} else {
		return -1;
	}
	if (p == NULL || *p != '\0' || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return -1;
	tm.tm_year = year - 1900;
	*out = timegm(&tm);
	return *out == (time_t)-1 ? -1 : 0;
}

int
https_retry_after(const char *value, time_t now, uint64_t *out_ms)
{
	char buf[64];
	size_t n;
	time_t when;

	if (value == NULL)
		return -1;
	value = skip_ows(value);
	n = strlen(value);
	while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, value, n);
	buf[n] = '\0';
	if (strspn(buf, "0123456789") == n) {
		uint64_t s = 0;

		for (size_t i = 0; i < n; i++) {
			if (s > (UINT64_MAX / 1000 - 9) / 10) {
				*out_ms = UINT64_MAX;
				return 0;
			}
			s = s * 10 + (uint64_t)(buf[i] - '0');
		}
		*out_ms = s * 1000;
		return 0;
	}
	if (http_date(buf, now, &when) != 0)
		return -1;
	*out_ms = when > now ? (uint64_t)(when - now) * 1000 : 0;
	return 0;
}
