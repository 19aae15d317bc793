/* backend.c: tlsproxy-backend, a plain-TCP peer that tlsproxy forwards to
 * in demos and tests. One thread, one level-triggered epoll set, non-blocking
 * sockets and a fixed per-connection output buffer, so thousands of
 * connections cost little and a peer that stops reading only ever pins one
 * buffer's worth of memory.
 *
 * Modes: http, echo, proxy, sink, source N, close, and for fault tests
 * reset N, mute, slow N (see backend_usage()).
 * proxy mode is the peer for tlsproxy's PROXY protocol: it reports the
 * header it received on one line, then echoes. Until the header is parsed
 * it holds up to one maximal header (64 KiB) per connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/sockios.h>
#include <openssl/sha.h>

#include "cli.h"
#include "prng.h"
#include "proxy_decode.h"

/* Output buffer per connection: big enough for any http response head plus
 * the longest hello body (bounded by BACKEND_IN_SIZE), and large enough
 * that bulk modes move data in reasonable chunks. */
#define BACKEND_OUT_SIZE 16384
/* Largest http request head we accept; longer heads get a 431. */
#define BACKEND_IN_SIZE 8192
/* Room for the longest PROXY header: 16 bytes and a 16-bit length. */
#define BACKEND_PROXY_IN_SIZE (16 + 65535)
/* A PROXY header value longer than this, escaped, is cut short and ends
 * in "%...", so that the report line always fits the output buffer. */
#define BACKEND_PROXY_VALUE_MAX 1024
/* How long an http connection we are closing may keep sending before we
 * give up waiting for its FIN (see backend_http_finish()). */
#define BACKEND_LINGER_MS 5000
/* Read/write rounds per wakeup, so one fast connection cannot starve the
 * others; level-triggered epoll calls us back for the rest. */
#define BACKEND_ROUNDS 32
/* slow mode: one byte per this many milliseconds. */
#define BACKEND_SLOW_MS 100
/* reset mode: how often to look whether the peer has acknowledged
 * everything sent, before resetting. */
#define BACKEND_RESET_POLL_MS 5

enum backend_mode {
	MODE_HTTP,
	MODE_ECHO,
	MODE_PROXY,
	MODE_SINK,
	MODE_SOURCE,
	MODE_CLOSE,
	MODE_RESET,
	MODE_MUTE,
	MODE_SLOW,
};

struct backend_conn {
	struct backend_conn *prev, *next;   /* all live connections */
	struct backend_conn *lprev, *lnext; /* lingering ones, oldest first */
	uint64_t id;
	int fd;
	uint32_t events; /* epoll interest currently registered */
	char peer[INET6_ADDRSTRLEN + 8];
	uint64_t bytes_in, bytes_out;
	bool peer_eof; /* read() returned 0 */
	bool wr_shut;  /* we did shutdown(SHUT_WR) */
	bool lingering;
	uint64_t linger_deadline;
	uint8_t *out;
	size_t out_start, out_end;
	/* http, and proxy until its header is parsed and passed on */
	char *in;
	size_t in_len;
	uint64_t body_skip;   /* request body bytes still to discard */
	uint64_t stream_left; /* /bytes/N body bytes still to queue */
	bool close_after;     /* the queued response is the last one */
	/* proxy */
	bool proxy_done;      /* the header is parsed and reported */
	/* sink */
	SHA256_CTX sha;
	bool line_queued;
	/* source, reset, slow */
	struct prng prng;
	uint64_t gen_left;
	/* reset, slow: when to run again without socket events (0: never) */
	uint64_t due_ms;
};

struct backend {
	enum backend_mode mode;
	uint64_t source_bytes;
	int epfd, lfd, sigfd;
	FILE *log;
	struct backend_conn *conns;
	struct backend_conn *linger_head, *linger_tail;
	uint64_t next_id;
	size_t nconns;
	bool accept_paused;
};

/* epoll_event.data.ptr tags for the two fds that are not connections. */
static int backend_listen_tag, backend_signal_tag;
/* Where bytes we only count or hash land; one thread, so one buffer. */
static uint8_t backend_scratch[65536];

static void backend_conn_close(struct backend *b, struct backend_conn *c,
    const char *reason, int err);

static void
backend_log(struct backend *b, const char *fmt, ...)
{
	struct timespec ts;
	struct tm tm;
	va_list ap;

	if (b->log == NULL)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	fprintf(b->log, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	va_start(ap, fmt);
	vfprintf(b->log, fmt, ap);
	va_end(ap);
	fputc('\n', b->log);
	/* Flushed per line so the log is useful when a test kills us. */
	fflush(b->log);
}

static void
backend_usage(FILE *f)
{
	fprintf(f,
	    "usage: tlsproxy-backend [--bind ADDR] [--port N] [--log FILE] MODE [ARG]\n"
	    "  --bind ADDR  address to listen on (default 127.0.0.1; IPv6 like ::1 ok)\n"
	    "  --port N     port (default 0: the kernel picks)\n"
	    "  --log FILE   append one line per connection accept/close\n"
	    "prints \"listening PORT\" once listening; runs until SIGTERM/SIGINT.\n"
	    "modes:\n"
	    "  http      HTTP/1.1: 200 text/plain \"hello from tlsproxy's demo backend: METHOD PATH\";\n"
	    "            /bytes/N answers N bytes of 'x'\n"
	    "  echo      echo every byte; on client EOF flush, shutdown(SHUT_WR), close\n"
	    "  proxy     read a PROXY protocol v1 or v2 header, answer one line\n"
	    "              proxy=v1|v2 [cmd=local] src=IP:PORT dst=IP:PORT [alpn=S]\n"
	    "              [authority=S] [ssl=1 client=HEX verify=N] [version=S] [cn=S]\n"
	    "              [cipher=S] [sig_alg=S] [key_alg=S] [cert_len=N]\n"
	    "            then echo the rest like echo. IPv6 is [IP]:PORT; UNKNOWN,\n"
	    "            UNSPEC and LOCAL give \"unknown\"; in S, bytes outside '!'..'~'\n"
	    "            and '%%' are %%XX, and over %d characters end in \"%%...\".\n"
	    "            A bad header gets \"proxy=error reason=R\" and a close.\n"
	    "  sink      read to EOF, answer \"received=N sha256=HEX\", close\n"
	    "  source N  send N bytes of the xorshift64 stream (seed 1), shutdown(SHUT_WR),\n"
	    "            read to EOF, close\n"
	    "  close     accept and close at once\n"
	    "fault modes:\n"
	    "  reset N   send N bytes of the source stream (0: none), wait until the peer\n"
	    "            has acknowledged them, then reset the connection (SO_LINGER 0)\n"
	    "  mute      read and discard everything, never answer; close on EOF\n"
	    "  slow N    like source N, but one byte every %d ms\n",
	    BACKEND_PROXY_VALUE_MAX, BACKEND_SLOW_MS);
}

static int
backend_listen(const char *addr, unsigned port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char host[INET6_ADDRSTRLEN + 2];
	size_t n = strlen(addr);
	int fd, one = 1;

	memset(&ss, 0, sizeof(ss));
	/* Accept "[::1]" as well as "::1": people paste either. */
	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']' && n - 2 < sizeof(host)) {
		memcpy(host, addr + 1, n - 2);
		host[n - 2] = '\0';
	} else if (n < sizeof(host)) {
		memcpy(host, addr, n + 1);
	} else {
		host[0] = '\0';
	}
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		len = sizeof(*sin6);
	} else {
		fprintf(stderr, "tlsproxy-backend: --bind %s: not an IPv4 or IPv6 literal\n", addr);
		return -1;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		perror("tlsproxy-backend: socket");
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
		fprintf(stderr, "tlsproxy-backend: bind %s port %u: %s\n", addr, port,
		    strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, SOMAXCONN) != 0) {
		perror("tlsproxy-backend: listen");
		close(fd);
		return -1;
	}
	return fd;
}

static unsigned
backend_local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void
backend_format_peer(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(s4->sin_port));
	}
}

static size_t
backend_out_free(const struct backend_conn *c)
{
	return BACKEND_OUT_SIZE - c->out_end;
}

/* backend_out_compact moves pending output to the buffer's start so the
 * free space is contiguous at the end. */
static void
backend_out_compact(struct backend_conn *c)
{
	if (c->out_start == 0)
		return;
	memmove(c->out, c->out + c->out_start, c->out_end - c->out_start);
	c->out_end -= c->out_start;
	c->out_start = 0;
}

static bool
backend_out_empty(const struct backend_conn *c)
{
	return c->out_start == c->out_end;
}

static void
backend_out_append(struct backend_conn *c, const void *p, size_t n)
{
	memcpy(c->out + c->out_end, p, n);
	c->out_end += n;
}

/* --- http ---------------------------------------------------------- */

/* backend_http_has_token reports whether comma-separated header value
 * |v| (length |n|) lists |tok|, case-insensitively. */
static bool
backend_http_has_token(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok), i = 0;

	while (i < n) {
		size_t s, e;

		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
			return true;
	}
	return false;
}

/* backend_http_error queues an error answer that ends the connection. It
 * returns false if earlier responses still fill the output buffer; the
 * request is then parsed again once they drained. */
static bool
backend_http_error(struct backend_conn *c, const char *status)
{
	char buf[256];
	int n;

	n = snprintf(buf, sizeof(buf),
	    "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n\r\n%s\n", status, strlen(status) + 1, status);
	backend_out_compact(c);
	if (n < 0 || (size_t)n > backend_out_free(c))
		return false;
	backend_out_append(c, buf, (size_t)n);
	c->close_after = true;
	c->in_len = 0;
	return true;
}

/* backend_http_bytes_path parses "/bytes/N" into |n|. */
static bool
backend_http_bytes_path(const char *t, size_t tl, uint64_t *n, bool *valid)
{
	static const char prefix[] = "/bytes/";
	size_t pl = sizeof(prefix) - 1;
	uint64_t v = 0;

	if (tl < pl || memcmp(t, prefix, pl) != 0)
		return false;
	*valid = false;
	if (tl == pl || tl - pl > 19)
		return true;
	for (size_t i = pl; i < tl; i++) {
		if (t[i] < '0' || t[i] > '9')
			return true;
		v = v * 10 + (uint64_t)(t[i] - '0');
	}
	*n = v;
	*valid = true;
	return true;
}

/* backend_http_request handles the request at the start of c->in. It
 * returns 1 if it consumed one, 0 if it needs more input or more output
 * space (it is then called again later), -1 if it queued an error and the
 * connection is to close. */
static int
backend_http_request(struct backend_conn *c)
{
	static const char hello[] = "hello from tlsproxy's demo backend: ";
	char head[512];
	const char *end, *p, *line_end, *method, *target, *version;
	size_t head_len, ml, tl, vl, body_len;
	uint64_t content_length = 0, bytes_n = 0;
	bool have_cl = false, chunked = false, conn_close = false, conn_keep = false;
	bool http10, keep_alive, is_bytes, bytes_valid = false, is_head;
	int hn;

	end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
	if (end == NULL) {
		if (c->in_len == BACKEND_IN_SIZE)
			return backend_http_error(c, "431 Request Header Fields Too Large") ? -1 : 0;
		return 0;
	}
	head_len = (size_t)(end - c->in) + 4;

	/* Request line: METHOD SP TARGET SP HTTP/1.x */
	line_end = memmem(c->in, head_len, "\r\n", 2);
	method = c->in;
	p = memchr(method, ' ', (size_t)(line_end - method));
	if (p == NULL || p == method)
		goto bad;
	ml = (size_t)(p - method);
	target = p + 1;
	p = memchr(target, ' ', (size_t)(line_end - target));
	if (p == NULL || p == target)
		goto bad;
	tl = (size_t)(p - target);
	version = p + 1;
	vl = (size_t)(line_end - version);
	if (vl != 8 || memcmp(version, "HTTP/1.", 7) != 0 ||
	    (version[7] != '0' && version[7] != '1'))
		goto bad;
	http10 = version[7] == '0';

	/* Header fields: only the ones that frame the message matter. */
	for (p = line_end + 2; p < end; ) {
		const char *le = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
		const char *colon = memchr(p, ':', (size_t)(le - p));
		const char *v;
		size_t nl, vlen;

		if (colon == NULL || colon == p)
			goto bad;
		nl = (size_t)(colon - p);
		v = colon + 1;
		while (v < le && (*v == ' ' || *v == '\t'))
			v++;
		vlen = (size_t)(le - v);
		while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (nl == 14 && strncasecmp(p, "Content-Length", nl) == 0) {
			char num[24];
			uint64_t cl;

			if (vlen == 0 || vlen >= sizeof(num))
				goto bad;
			memcpy(num, v, vlen);
			num[vlen] = '\0';
			if (cli_parse_u64(num, &cl) != 0 ||
			    (have_cl && cl != content_length))
				goto bad;
			content_length = cl;
			have_cl = true;
		} else if (nl == 10 && strncasecmp(p, "Connection", nl) == 0) {
			conn_close |= backend_http_has_token(v, vlen, "close");
			conn_keep |= backend_http_has_token(v, vlen, "keep-alive");
		} else if (nl == 17 && strncasecmp(p, "Transfer-Encoding", nl) == 0) {
			chunked = true;
		}
		p = le + 2;
	}

	keep_alive = http10 ? conn_keep && !conn_close : !conn_close;
	/* We do not decode chunked bodies, so we cannot find the next
	 * request after one: answer this one and close. */
	if (chunked)
		keep_alive = false;
	is_head = ml == 4 && memcmp(method, "HEAD", 4) == 0;
	is_bytes = backend_http_bytes_path(target, tl, &bytes_n, &bytes_valid);
	if (is_bytes && !bytes_valid)
		goto bad;
	body_len = sizeof(hello) - 1 + ml + 1 + tl + 1;
	hn = snprintf(head, sizeof(head),
	    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %" PRIu64
	    "\r\n%s\r\n", is_bytes ? bytes_n : (uint64_t)body_len,
	    !keep_alive ? "Connection: close\r\n" :
	    http10 ? "Connection: keep-alive\r\n" : "");
	if (hn < 0 || (size_t)hn >= sizeof(head))
		goto bad;
	if (is_bytes || is_head)
		body_len = 0;
	/* Wait for the response to fit whole: simpler than queueing parts,
	 * and the output buffer is sized so it always fits once drained. */
	backend_out_compact(c);
	if (backend_out_free(c) < (size_t)hn + body_len)
		return 0;
	backend_out_append(c, head, (size_t)hn);
	if (body_len > 0) {
		backend_out_append(c, hello, sizeof(hello) - 1);
		backend_out_append(c, method, ml);
		backend_out_append(c, " ", 1);
		backend_out_append(c, target, tl);
		backend_out_append(c, "\n", 1);
	}
	c->stream_left = is_bytes && !is_head ? bytes_n : 0;
	c->body_skip = content_length;
	c->close_after = !keep_alive;
	memmove(c->in, c->in + head_len, c->in_len - head_len);
	c->in_len -= head_len;
	return 1;
bad:
	return backend_http_error(c, "400 Bad Request") ? -1 : 0;
}

static void
backend_http_produce(struct backend_conn *c)
{
	for (;;) {
		/* Discard request bodies first: they only need input, and a
		 * client may send its whole body before reading. */
		if (c->body_skip > 0 && c->in_len > 0) {
			size_t n = c->in_len;

			if ((uint64_t)n > c->body_skip)
				n = (size_t)c->body_skip;
			memmove(c->in, c->in + n, c->in_len - n);
			c->in_len -= n;
			c->body_skip -= n;
		}
		if (c->stream_left > 0) {
			size_t n;

			backend_out_compact(c);
			n = backend_out_free(c);
			if ((uint64_t)n > c->stream_left)
				n = (size_t)c->stream_left;
			memset(c->out + c->out_end, 'x', n);
			c->out_end += n;
			c->stream_left -= n;
		}
		if (c->body_skip > 0 || c->stream_left > 0)
			return;
		if (c->close_after) {
			c->in_len = 0;
			return;
		}
		if (backend_http_request(c) <= 0)
			return;
	}
}

static void
backend_linger_start(struct backend *b, struct backend_conn *c)
{
	c->lingering = true;
	c->linger_deadline = cli_now_ms() + BACKEND_LINGER_MS;
	c->lprev = b->linger_tail;
	c->lnext = NULL;
	if (b->linger_tail != NULL)
		b->linger_tail->lnext = c;
	else
		b->linger_head = c;
	b->linger_tail = c;
}

/* backend_http_finish decides whether an http connection is over. When we
 * end one the client has not half-closed, we shutdown(SHUT_WR) and keep
 * reading until its FIN (or BACKEND_LINGER_MS): closing with unread input
 * would make the kernel send a RST that can destroy the response still in
 * flight. Returns true if |c| was closed. */
static bool
backend_http_finish(struct backend *b, struct backend_conn *c)
{
	if (c->lingering) {
		if (c->peer_eof) {
			backend_conn_close(b, c, "done", 0);
			return true;
		}
		return false;
	}
	if (!backend_out_empty(c) || c->stream_left > 0)
		return false;
	if (c->close_after || c->peer_eof) {
		shutdown(c->fd, SHUT_WR);
		c->wr_shut = true;
		if (c->peer_eof) {
			backend_conn_close(b, c, "done", 0);
			return true;
		}
		backend_linger_start(b, c);
	}
	return false;
}

/* --- proxy -------------------------------------------------------- */

static void
backend_proxy_put(struct backend_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* backend_proxy_put appends to the output buffer. The report line is
 * bounded well below its size, so cutting short never happens in
 * practice; it only keeps a mistake from overrunning. */
static void
backend_proxy_put(struct backend_conn *c, const char *fmt, ...)
{
	size_t room = backend_out_free(c);
	va_list ap;
	int n;

	if (room == 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf((char *)c->out + c->out_end, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		c->out_end += (size_t)n < room ? (size_t)n : room - 1;
}

static void
backend_proxy_addr(struct backend_conn *c, const char *key, int family,
    const uint8_t *addr, uint16_t port)
{
	char host[INET6_ADDRSTRLEN];

	if (family == AF_UNSPEC ||
	    inet_ntop(family, addr, host, sizeof(host)) == NULL) {
		backend_proxy_put(c, " %s=unknown", key);
		return;
	}
	if (family == AF_INET6)
		backend_proxy_put(c, " %s=[%s]:%u", key, host, port);
	else
		backend_proxy_put(c, " %s=%s:%u", key, host, port);
}

/* backend_proxy_value appends " key=value" if the header carried the
 * value. Values are arbitrary bytes (a CN may hold spaces), so everything
 * that could split the line or be misread is escaped. */
static void
backend_proxy_value(struct backend_conn *c, const char *key,
    const struct proxy_bytes *v)
{
	static const char hex[] = "0123456789abcdef";
	char buf[BACKEND_PROXY_VALUE_MAX + 4];
	size_t n = 0;

	if (v->p == NULL)
		return;
	for (size_t i = 0; i < v->len; i++) {
		uint8_t ch = v->p[i];
		bool esc = ch < 0x21 || ch > 0x7e || ch == '%';

		if (n + (esc ? 3 : 1) > BACKEND_PROXY_VALUE_MAX) {
			/* "%." cannot come from escaping: the cut is
			 * unambiguous. */
			memcpy(buf + n, "%...", 4);
			n += 4;
			break;
		}
		if (esc) {
			buf[n++] = '%';
			buf[n++] = hex[ch >> 4];
			buf[n++] = hex[ch & 0x0f];
		} else {
			buf[n++] = (char)ch;
		}
	}
	backend_proxy_put(c, " %s=%.*s", key, (int)n, buf);
}

static void
backend_proxy_report(struct backend_conn *c, const struct proxy_decoded *d)
{
	backend_proxy_put(c, "proxy=v%d", d->version);
	if (d->local)
		backend_proxy_put(c, " cmd=local");
	backend_proxy_addr(c, "src", d->family, d->src, d->src_port);
	backend_proxy_addr(c, "dst", d->family, d->dst, d->dst_port);
	backend_proxy_value(c, "alpn", &d->alpn);
	backend_proxy_value(c, "authority", &d->authority);
	if (d->ssl)
		backend_proxy_put(c, " ssl=1 client=%02x verify=%" PRIu32,
		    d->client, d->verify);
	backend_proxy_value(c, "version", &d->ssl_version);
	backend_proxy_value(c, "cn", &d->cn);
	backend_proxy_value(c, "cipher", &d->cipher);
	backend_proxy_value(c, "sig_alg", &d->sig_alg);
	backend_proxy_value(c, "key_alg", &d->key_alg);
	if (d->cert.p != NULL)
		backend_proxy_put(c, " cert_len=%zu", d->cert.len);
	backend_proxy_put(c, "\n");
}

/* backend_proxy_produce parses the header once it is complete, queues the
 * report line (the output buffer is still empty then), and passes the
 * bytes that came with the header on to the echo as room allows. */
static void
backend_proxy_produce(struct backend_conn *c)
{
	struct proxy_decoded d;
	const char *reason = "";
	ssize_t n;

	if (c->close_after)
		return;
	if (!c->proxy_done) {
		n = proxy_decode((const uint8_t *)c->in, c->in_len, &d, &reason);
		if (n == 0 && !c->peer_eof)
			return;
		if (n <= 0) {
			backend_proxy_put(c, "proxy=error reason=%s\n",
			    n == 0 ? "eof-in-header" : reason);
			c->close_after = true;
			c->in_len = 0;
			return;
		}
		backend_proxy_report(c, &d);
		c->proxy_done = true;
		memmove(c->in, c->in + n, c->in_len - (size_t)n);
		c->in_len -= (size_t)n;
	}
	if (c->in_len > 0) {
		size_t k;

		backend_out_compact(c);
		k = backend_out_free(c);
		if (k > c->in_len)
			k = c->in_len;
		backend_out_append(c, c->in, k);
		memmove(c->in, c->in + k, c->in_len - k);
		c->in_len -= k;
	}
	if (c->in_len == 0) {
		/* From here on this is echo, which needs no input buffer. */
		free(c->in);
		c->in = NULL;
	}
}

static bool
backend_proxy_wants_read(const struct backend_conn *c)
{
	if (c->close_after)
		return true;
	if (!c->proxy_done)
		return c->in_len < BACKEND_PROXY_IN_SIZE;
	if (c->in_len > 0)
		return false;
	return backend_out_free(c) > 0 || c->out_start > 0;
}

/* backend_proxy_finish ends a connection whose client sent EOF and got
 * its echo, or one refused for its header. The refusal waits for the
 * client's FIN as backend_http_finish() does, for the same reason. */
static bool
backend_proxy_finish(struct backend *b, struct backend_conn *c)
{
	if (!backend_out_empty(c))
		return false;
	if (c->close_after) {
		if (!c->wr_shut) {
			shutdown(c->fd, SHUT_WR);
			c->wr_shut = true;
		}
		if (c->peer_eof) {
			backend_conn_close(b, c, "bad-proxy-header", 0);
			return true;
		}
		if (!c->lingering)
			backend_linger_start(b, c);
		return false;
	}
	if (c->peer_eof && c->proxy_done && c->in_len == 0) {
		shutdown(c->fd, SHUT_WR);
		c->wr_shut = true;
		backend_conn_close(b, c, "done", 0);
		return true;
	}
	return false;
}

/* --- per-mode glue ------------------------------------------------- */

static void
backend_conn_produce(struct backend *b, struct backend_conn *c)
{
	switch (b->mode) {
	case MODE_HTTP:
		if (!c->lingering)
			backend_http_produce(c);
		break;
	case MODE_SINK:
		if (c->peer_eof && !c->line_queued) {
			uint8_t md[SHA256_DIGEST_LENGTH];
			char line[128];
			int n;

			SHA256_Final(md, &c->sha);
			n = snprintf(line, sizeof(line), "received=%" PRIu64 " sha256=",
			    c->bytes_in);
			for (size_t i = 0; i < sizeof(md); i++)
				n += snprintf(line + n, sizeof(line) - (size_t)n, "%02x", md[i]);
			line[n++] = '\n';
			backend_out_append(c, line, (size_t)n);
			c->line_queued = true;
		}
		break;
	case MODE_SLOW:
		if (c->gen_left > 0 && backend_out_empty(c) &&
		    cli_now_ms() >= c->due_ms) {
			prng_fill(&c->prng, c->out + c->out_end, 1);
			c->out_end++;
			c->gen_left--;
			c->due_ms = c->gen_left > 0 ? cli_now_ms() + BACKEND_SLOW_MS : 0;
		}
		break;
	case MODE_SOURCE:
	case MODE_RESET:
		if (c->gen_left > 0) {
			size_t n;

			backend_out_compact(c);
			n = backend_out_free(c);
			if ((uint64_t)n > c->gen_left)
				n = (size_t)c->gen_left;
			prng_fill(&c->prng, c->out + c->out_end, n);
			c->out_end += n;
			c->gen_left -= n;
		}
		break;
	case MODE_PROXY:
		backend_proxy_produce(c);
		break;
	case MODE_ECHO:
	case MODE_CLOSE:
	case MODE_MUTE:
		break;
	}
}

static bool
backend_conn_wants_read(const struct backend *b, const struct backend_conn *c)
{
	if (c->peer_eof)
		return false;
	switch (b->mode) {
	case MODE_ECHO:
		/* Backpressure: stop reading while the echo is not drained. */
		return backend_out_free(c) > 0 || c->out_start > 0;
	case MODE_HTTP:
		return c->lingering || c->close_after || c->in_len < BACKEND_IN_SIZE;
	case MODE_PROXY:
		return backend_proxy_wants_read(c);
	default:
		return true;
	}
}

/* backend_conn_read reads once. Returns bytes read, 0 on EOF, -1 when
 * nothing is available, -2 on error (errno set). */
static ssize_t
backend_conn_read(struct backend *b, struct backend_conn *c)
{
	uint8_t *dst = backend_scratch;
	size_t room = sizeof(backend_scratch);
	size_t *fill = NULL; /* what grows by the bytes read, if anything */
	ssize_t n;

	if (b->mode == MODE_ECHO ||
	    (b->mode == MODE_PROXY && c->proxy_done && !c->close_after)) {
		backend_out_compact(c);
		dst = c->out + c->out_end;
		room = backend_out_free(c);
		fill = &c->out_end;
	} else if (b->mode == MODE_HTTP && !c->lingering && !c->close_after) {
		dst = (uint8_t *)c->in + c->in_len;
		room = BACKEND_IN_SIZE - c->in_len;
		fill = &c->in_len;
	} else if (b->mode == MODE_PROXY && !c->close_after) {
		dst = (uint8_t *)c->in + c->in_len;
		room = BACKEND_PROXY_IN_SIZE - c->in_len;
		fill = &c->in_len;
	}
	n = recv(c->fd, dst, room, 0);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
	if (n == 0)
		return 0;
	c->bytes_in += (uint64_t)n;
	if (fill != NULL)
		*fill += (size_t)n;
	else if (b->mode == MODE_SINK)
		SHA256_Update(&c->sha, dst, (size_t)n);
	return n;
}

/* backend_conn_flush writes pending output once. Returns bytes written,
 * -1 if the socket is full or nothing is pending, -2 on error. */
static ssize_t
backend_conn_flush(struct backend_conn *c)
{
	ssize_t n;

	if (backend_out_empty(c))
		return -1;
	n = send(c->fd, c->out + c->out_start, c->out_end - c->out_start, MSG_NOSIGNAL);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
	c->out_start += (size_t)n;
	c->bytes_out += (uint64_t)n;
	if (c->out_start == c->out_end)
		c->out_start = c->out_end = 0;
	return n;
}

/* backend_conn_finish closes |c| when its mode's exchange is complete.
 * Returns true if it did. */
static bool
backend_conn_finish(struct backend *b, struct backend_conn *c)
{
	struct linger abort_close = { .l_onoff = 1, .l_linger = 0 };
	int unacked = 0;

	switch (b->mode) {
	case MODE_HTTP:
		return backend_http_finish(b, c);
	case MODE_PROXY:
		return backend_proxy_finish(b, c);
	case MODE_ECHO:
	case MODE_SINK:
		/* The client already sent its FIN, so after ours nothing is
		 * left to wait for: close right after shutdown(SHUT_WR). */
		if (c->peer_eof && backend_out_empty(c) &&
		    (b->mode == MODE_ECHO || c->line_queued)) {
			shutdown(c->fd, SHUT_WR);
			c->wr_shut = true;
			backend_conn_close(b, c, "done", 0);
			return true;
		}
		return false;
	case MODE_RESET:
		if (c->gen_left > 0 || !backend_out_empty(c))
			return false;
		/* Bytes still in our send queue would be thrown away by the
		 * reset: wait until the peer has acknowledged all of them. */
		if (ioctl(c->fd, SIOCOUTQ, &unacked) == 0 && unacked > 0) {
			c->due_ms = cli_now_ms() + BACKEND_RESET_POLL_MS;
			return false;
		}
		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &abort_close,
		    sizeof(abort_close));
		backend_conn_close(b, c, "reset", 0);
		return true;
	case MODE_MUTE:
		if (c->peer_eof) {
			backend_conn_close(b, c, "done", 0);
			return true;
		}
		return false;
	case MODE_SOURCE:
	case MODE_SLOW:
		if (!c->wr_shut && c->gen_left == 0 && backend_out_empty(c)) {
			shutdown(c->fd, SHUT_WR);
			c->wr_shut = true;
		}
		if (c->wr_shut && c->peer_eof) {
			backend_conn_close(b, c, "done", 0);
			return true;
		}
		return false;
	case MODE_CLOSE:
		break;
	}
	return false;
}

static void
backend_conn_interest(struct backend *b, struct backend_conn *c)
{
	uint32_t ev = 0;
	struct epoll_event e;

	if (backend_conn_wants_read(b, c))
		ev |= EPOLLIN;
	if (!backend_out_empty(c))
		ev |= EPOLLOUT;
	if (ev == c->events)
		return;
	memset(&e, 0, sizeof(e));
	e.events = ev;
	e.data.ptr = c;
	if (epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &e) == 0)
		c->events = ev;
}

static void
backend_pause_accept(struct backend *b)
{
	struct epoll_event e = { .events = 0, .data.ptr = &backend_listen_tag };

	/* Out of descriptors or memory: stop polling the listener (it would
	 * stay readable and spin) until a connection closes or a short
	 * timeout passes. */
	if (!b->accept_paused && epoll_ctl(b->epfd, EPOLL_CTL_MOD, b->lfd, &e) == 0)
		b->accept_paused = true;
}

static void
backend_resume_accept(struct backend *b)
{
	struct epoll_event e = { .events = EPOLLIN, .data.ptr = &backend_listen_tag };

	if (b->accept_paused && epoll_ctl(b->epfd, EPOLL_CTL_MOD, b->lfd, &e) == 0)
		b->accept_paused = false;
}

/* backend_conn_run moves |c| forward as far as its socket allows. */
static void
backend_conn_run(struct backend *b, struct backend_conn *c, uint32_t revents)
{
	bool progress = false;

	for (int round = 0; round < BACKEND_ROUNDS; round++) {
		ssize_t n;

		progress = false;
		backend_conn_produce(b, c);
		n = backend_conn_flush(c);
		if (n == -2) {
			backend_conn_close(b, c, "write-error", errno);
			return;
		}
		if (n > 0)
			progress = true;
		if (backend_conn_wants_read(b, c)) {
			n = backend_conn_read(b, c);
			if (n == -2) {
				backend_conn_close(b, c, "read-error", errno);
				return;
			}
			if (n == 0)
				c->peer_eof = true;
			if (n >= 0)
				progress = true;
		}
		if (!progress)
			break;
	}
	/* Produce once more so that pending work shows up as queued output,
	 * which registers EPOLLOUT and guarantees we are called back. */
	backend_conn_produce(b, c);
	if (backend_conn_finish(b, c))
		return;
	if ((revents & EPOLLERR) || ((revents & EPOLLHUP) && !progress)) {
		int err = 0;
		socklen_t len = sizeof(err);

		/* An error or hang-up we could not act on: without this a
		 * level-triggered HUP would wake us forever. */
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		backend_conn_close(b, c, "hangup", err);
		return;
	}
	backend_conn_interest(b, c);
}

static void
backend_conn_close(struct backend *b, struct backend_conn *c, const char *reason, int err)
{
	if (err != 0)
		backend_log(b, "close id=%" PRIu64 " peer=%s in=%" PRIu64 " out=%" PRIu64
		    " reason=%s errno=%d (%s)", c->id, c->peer, c->bytes_in,
		    c->bytes_out, reason, err, strerror(err));
	else
		backend_log(b, "close id=%" PRIu64 " peer=%s in=%" PRIu64 " out=%" PRIu64
		    " reason=%s", c->id, c->peer, c->bytes_in, c->bytes_out, reason);
	close(c->fd);
	if (c->lingering) {
		if (c->lprev != NULL)
			c->lprev->lnext = c->lnext;
		else
			b->linger_head = c->lnext;
		if (c->lnext != NULL)
			c->lnext->lprev = c->lprev;
		else
			b->linger_tail = c->lprev;
	}
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		b->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	free(c->out);
	free(c->in);
	free(c);
	b->nconns--;
	/* A descriptor came free: try accepting again. */
	backend_resume_accept(b);
}

static void
backend_accept(struct backend *b)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		struct backend_conn *c;
		struct epoll_event e;
		char peer[INET6_ADDRSTRLEN + 8];
		int fd, one = 1;
		uint64_t id;

		fd = accept4(b->lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				fprintf(stderr, "tlsproxy-backend: accept: %s\n", strerror(errno));
				backend_pause_accept(b);
			}
			return;
		}
		id = ++b->next_id;
		backend_format_peer(&ss, peer, sizeof(peer));
		backend_log(b, "accept id=%" PRIu64 " peer=%s", id, peer);
		if (b->mode == MODE_CLOSE) {
			close(fd);
			backend_log(b, "close id=%" PRIu64 " peer=%s in=0 out=0 reason=close-mode",
			    id, peer);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (c != NULL)
			c->out = malloc(BACKEND_OUT_SIZE);
		if (c != NULL && b->mode == MODE_HTTP)
			c->in = malloc(BACKEND_IN_SIZE);
		if (c != NULL && b->mode == MODE_PROXY)
			c->in = malloc(BACKEND_PROXY_IN_SIZE);
		if (c == NULL || c->out == NULL ||
		    ((b->mode == MODE_HTTP || b->mode == MODE_PROXY) && c->in == NULL)) {
			if (c != NULL) {
				free(c->out);
				free(c->in);
				free(c);
			}
			close(fd);
			backend_log(b, "close id=%" PRIu64 " peer=%s in=0 out=0 reason=no-memory",
			    id, peer);
			continue;
		}
		c->id = id;
		c->fd = fd;
		memcpy(c->peer, peer, sizeof(peer));
		/* http answers are small writes that must not wait for Nagle. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		SHA256_Init(&c->sha);
		prng_init(&c->prng);
		c->gen_left = b->source_bytes;
		memset(&e, 0, sizeof(e));
		e.events = EPOLLIN;
		e.data.ptr = c;
		if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
			fprintf(stderr, "tlsproxy-backend: epoll_ctl: %s\n", strerror(errno));
			close(fd);
			free(c->out);
			free(c->in);
			free(c);
			backend_log(b, "close id=%" PRIu64 " peer=%s in=0 out=0 reason=epoll", id, peer);
			continue;
		}
		c->events = EPOLLIN;
		c->next = b->conns;
		if (b->conns != NULL)
			b->conns->prev = c;
		b->conns = c;
		b->nconns++;
		/* source starts writing at once; the others just settle their
		 * interest set. */
		backend_conn_run(b, c, 0);
	}
}

/* backend_run_due runs the connections whose timer (reset, slow modes)
 * has come and returns the epoll timeout until the next one, or -1. */
static int
backend_run_due(struct backend *b)
{
	struct backend_conn *c, *next;
	uint64_t now = cli_now_ms(), first = 0;

	if (b->mode != MODE_RESET && b->mode != MODE_SLOW)
		return -1;
	for (c = b->conns; c != NULL; c = next) {
		next = c->next; /* running |c| may free it, never another */
		if (c->due_ms != 0 && c->due_ms <= now) {
			c->due_ms = 0;
			backend_conn_run(b, c, 0);
		}
	}
	for (c = b->conns; c != NULL; c = c->next) {
		if (c->due_ms != 0 && (first == 0 || c->due_ms < first))
			first = c->due_ms;
	}
	if (first == 0)
		return -1;
	now = cli_now_ms();
	return first > now ? (int)(first - now) : 0;
}

static int
backend_parse_args(struct backend *b, int argc, char **argv, const char **bind_addr,
    unsigned *port)
{
	static const struct option opts[] = {
		{ "bind", required_argument, NULL, 'b' },
		{ "port", required_argument, NULL, 'p' },
		{ "log", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *mode;
	uint64_t v;
	int ch;

	while ((ch = getopt_long(argc, argv, "b:p:l:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'b':
			*bind_addr = optarg;
			break;
		case 'p':
			if (cli_parse_u64(optarg, &v) != 0 || v > 65535) {
				fprintf(stderr, "tlsproxy-backend: bad --port %s\n", optarg);
				return -1;
			}
			*port = (unsigned)v;
			break;
		case 'l':
			b->log = fopen(optarg, "ae");
			if (b->log == NULL) {
				fprintf(stderr, "tlsproxy-backend: --log %s: %s\n", optarg,
				    strerror(errno));
				return -1;
			}
			break;
		case 'h':
			backend_usage(stdout);
			exit(0);
		default:
			backend_usage(stderr);
			return -1;
		}
	}
	if (optind >= argc) {
		backend_usage(stderr);
		return -1;
	}
	mode = argv[optind++];
	if (strcmp(mode, "http") == 0) {
		b->mode = MODE_HTTP;
	} else if (strcmp(mode, "echo") == 0) {
		b->mode = MODE_ECHO;
	} else if (strcmp(mode, "proxy") == 0) {
		b->mode = MODE_PROXY;
	} else if (strcmp(mode, "sink") == 0) {
		b->mode = MODE_SINK;
	} else if (strcmp(mode, "close") == 0) {
		b->mode = MODE_CLOSE;
	} else if (strcmp(mode, "mute") == 0) {
		b->mode = MODE_MUTE;
	} else if (strcmp(mode, "source") == 0 || strcmp(mode, "reset") == 0 ||
	    strcmp(mode, "slow") == 0) {
		b->mode = strcmp(mode, "source") == 0 ? MODE_SOURCE :
		    strcmp(mode, "reset") == 0 ? MODE_RESET : MODE_SLOW;
		if (optind >= argc || cli_parse_u64(argv[optind], &b->source_bytes) != 0) {
			fprintf(stderr, "tlsproxy-backend: %s needs a byte count\n", mode);
			return -1;
		}
		optind++;
	} else {
		fprintf(stderr, "tlsproxy-backend: unknown mode %s\n", mode);
		backend_usage(stderr);
		return -1;
	}
	if (optind != argc) {
		fprintf(stderr, "tlsproxy-backend: unexpected argument %s\n", argv[optind]);
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct backend b;
	struct epoll_event evs[256], e;
	const char *bind_addr = "127.0.0.1";
	unsigned port = 0;
	sigset_t mask;
	bool running = true;

	memset(&b, 0, sizeof(b));
	if (backend_parse_args(&b, argc, argv, &bind_addr, &port) != 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	cli_raise_nofile();
	/* Signals arrive through a signalfd so the loop never races a
	 * handler against epoll_wait. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	b.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	b.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (b.sigfd < 0 || b.epfd < 0) {
		perror("tlsproxy-backend: signalfd/epoll");
		return 1;
	}
	b.lfd = backend_listen(bind_addr, port);
	if (b.lfd < 0)
		return 1;
	memset(&e, 0, sizeof(e));
	e.events = EPOLLIN;
	e.data.ptr = &backend_listen_tag;
	epoll_ctl(b.epfd, EPOLL_CTL_ADD, b.lfd, &e);
	e.data.ptr = &backend_signal_tag;
	epoll_ctl(b.epfd, EPOLL_CTL_ADD, b.sigfd, &e);

	printf("listening %u\n", backend_local_port(b.lfd));
	fflush(stdout);

	while (running) {
		int timeout = backend_run_due(&b), n;
		uint64_t now;

		if (b.linger_head != NULL) {
			int linger;

			now = cli_now_ms();
			linger = b.linger_head->linger_deadline > now ?
			    (int)(b.linger_head->linger_deadline - now) : 0;
			if (timeout < 0 || linger < timeout)
				timeout = linger;
		}
		if (b.accept_paused && (timeout < 0 || timeout > 100))
			timeout = 100;
		n = epoll_wait(b.epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("tlsproxy-backend: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			void *tag = evs[i].data.ptr;

			if (tag == &backend_listen_tag) {
				backend_accept(&b);
			} else if (tag == &backend_signal_tag) {
				struct signalfd_siginfo si;

				while (read(b.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
					;
				running = false;
			} else {
				backend_conn_run(&b, tag, evs[i].events);
			}
		}
		now = cli_now_ms();
		while (b.linger_head != NULL && b.linger_head->linger_deadline <= now)
			backend_conn_close(&b, b.linger_head, "linger-timeout", 0);
		if (b.accept_paused && n == 0)
			backend_resume_accept(&b);
	}
	while (b.conns != NULL)
		backend_conn_close(&b, b.conns, "shutdown", 0);
	close(b.lfd);
	close(b.epfd);
	close(b.sigfd);
	if (b.log != NULL)
		fclose(b.log);
	return 0;
}
