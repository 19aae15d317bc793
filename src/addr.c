/* addr.c: parsing and printing of socket addresses. */
#include "addr.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

int
addr_split(const char *s, char *host, size_t host_len, unsigned *out_port)
{
	const char *colon, *hs = s, *he;
	unsigned long port;
	char *end;

	if (s[0] == '[') {
		he = strchr(s, ']');
		if (he == NULL || he[1] != ':')
			return -1;
		hs = s + 1;
		colon = he + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
			return -1;
		he = colon;
	}
	if (he == hs || (size_t)(he - hs) >= host_len)
		return -1;
	/* Digits only: strtoul also skips blanks and takes a sign, and
	 * "-18446744073709551615" wraps around to port 1. */
	if (!isdigit((unsigned char)colon[1]))
		return -1;
	port = strtoul(colon + 1, &end, 10);
	if (*end != '\0' || port == 0 || port > 65535)
		return -1;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	*out_port = (unsigned)port;
	return 0;
}

static int
addr_parse_unix(const char *path, struct addr *out, char *err, size_t err_len)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;
	size_t len = strlen(path);

	if (path[0] != '/') {
		snprintf(err, err_len, "expected an absolute path after 'unix:'");
		return -1;
	}
	if (len >= sizeof(sun->sun_path)) {
		snprintf(err, err_len, "unix socket path longer than %zu bytes",
		    sizeof(sun->sun_path) - 1);
		return -1;
	}
	memset(out, 0, sizeof(*out));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, len + 1);
	out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
	return 0;
}

int
addr_parse(const char *s, struct addr *out, char *err, size_t err_len)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
	char host[64];
	unsigned port;

	if (strncmp(s, "unix:", 5) == 0)
		return addr_parse_unix(s + 5, out, err, err_len);
	if (addr_split(s, host, sizeof(host), &port) != 0) {
		snprintf(err, err_len, "expected an address like 127.0.0.1:443, "
		    "[::1]:443, *:443 or unix:/path, got '%s'", s);
		return -1;
	}
	memset(out, 0, sizeof(*out));
	if (strcmp(host, "*") == 0)
		strcpy(host, "0.0.0.0");
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		out->len = sizeof(*sin);
		return 0;
	}
	if (s[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		out->len = sizeof(*sin6);
		return 0;
	}
	snprintf(err, err_len, "'%s' is not a numeric IPv4 address or a "
	    "bracketed IPv6 address", host);
	return -1;
}

const char *
addr_format_sa(const struct sockaddr *sa, socklen_t len, char *buf,
    size_t buf_len)
{
	char host[INET6_ADDRSTRLEN];

	switch (sa->sa_family) {
	case AF_INET: {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, buf_len, "%s:%u", host, ntohs(sin->sin_port));
		break;
	}
	case AF_INET6: {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, buf_len, "[%s]:%u", host, ntohs(sin6->sin6_port));
		break;
	}
	case AF_UNIX: {
		const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;

		if (len <= offsetof(struct sockaddr_un, sun_path))
			snprintf(buf, buf_len, "unix:");
		else
			snprintf(buf, buf_len, "unix:%.*s",
			    (int)(len - offsetof(struct sockaddr_un, sun_path)),
			    sun->sun_path);
		break;
	}
	default:
		snprintf(buf, buf_len, "?");
	}
	return buf;
}

const char *
addr_format(const struct addr *a, char *buf, size_t buf_len)
{
	return addr_format_sa((const struct sockaddr *)&a->ss, a->len, buf,
	    buf_len);
}

int
addr_equal(const struct addr *a, const struct addr *b)
{
	char x[ADDR_STRLEN], y[ADDR_STRLEN];

	if (a->ss.ss_family != b->ss.ss_family)
		return 0;
	return strcmp(addr_format(a, x, sizeof(x)), addr_format(b, y, sizeof(y))) == 0;
}

int
addr_is_loopback(const struct addr *a)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;

	switch (a->ss.ss_family) {
	case AF_UNIX:
		return 1;
	case AF_INET:
		return (ntohl(((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr)
		    >> 24) == 127;
	case AF_INET6:
		return IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr) ||
		    (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) &&
		    s6->sin6_addr.s6_addr[12] == 127);
	default:
		return 0;
	}
}
