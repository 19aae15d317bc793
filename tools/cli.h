/* cli.h: the small pieces the tools share: number and argument parsing,
 * a monotonic clock and a raised descriptor limit. Header-only because
 * each tool is a single file. */
#ifndef TLSPROXY_TOOLS_CLI_H
#define TLSPROXY_TOOLS_CLI_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* cli_parse_u64 parses a plain decimal number; returns 0 or -1. */
static inline int
cli_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* cli_parse_seconds parses a number of seconds, fractions allowed, from 0
 * to 1e9; returns 0 or -1. */
static inline int
cli_parse_seconds(const char *s, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	/* The range check also turns away NaN and infinities. */
	if (errno != 0 || end == s || *end != '\0' || !(v >= 0 && v <= 1e9))
		return -1;
	*out = v;
	return 0;
}

static inline int
cli_hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* cli_unescape decodes \r \n \t \\ \xHH in |s| into a new buffer, so
 * a shell caller can pass HTTP requests without $'...' quoting. On a bad
 * escape it says so on stderr, after |prog|, and returns NULL. */
static inline char *
cli_unescape(const char *prog, const char *s, size_t *len)
{
	size_t n = strlen(s), j = 0;
	char *out = malloc(n + 1);

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		int hi, lo;

		if (s[i] != '\\') {
			out[j++] = s[i];
			continue;
		}
		switch (s[++i]) {
		case 'r': out[j++] = '\r'; break;
		case 'n': out[j++] = '\n'; break;
		case 't': out[j++] = '\t'; break;
		case '\\': out[j++] = '\\'; break;
		case 'x':
			hi = cli_hexval(s[i + 1]);
			lo = hi < 0 ? -1 : cli_hexval(s[i + 2]);
			if (lo < 0)
				goto bad;
			out[j++] = (char)(hi * 16 + lo);
			i += 2;
			break;
		default:
			goto bad;
		}
	}
	out[j] = '\0';
	*len = j;
	return out;
bad:
	fprintf(stderr, "%s: bad escape in \"%s\" (known: \\r \\n \\t \\\\ \\xHH)\n",
	    prog, s);
	free(out);
	return NULL;
}

/* cli_parse_target splits HOST:PORT or [V6]:PORT into NUL-terminated
 * |host| and |port| of the given capacities; returns 0 or -1. */
static inline int
cli_parse_target(const char *s, char *host, size_t host_cap, char *port, size_t port_cap)
{
	const char *h = s, *colon;
	size_t hl;

	if (s[0] == '[') {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':')
			return -1;
		h = s + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -1;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= host_cap || strlen(colon + 1) == 0 ||
	    strlen(colon + 1) >= port_cap)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

/* cli_now_ns is a monotonic clock in nanoseconds. */
static inline uint64_t
cli_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* cli_now_ms is a monotonic clock in milliseconds. */
static inline uint64_t
cli_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* cli_raise_nofile lifts the soft descriptor limit to the hard one:
 * thousands of connections are the point of these tools. */
static inline void
cli_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

#endif
