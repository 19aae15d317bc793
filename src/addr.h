/* addr.h: socket addresses as written in tlsproxy.conf. */
#ifndef TLSPROXY_ADDR_H
#define TLSPROXY_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
};

/* ADDR_STRLEN is enough for any formatted address, unix paths included. */
#define ADDR_STRLEN 128

/* addr_parse parses a literal "1.2.3.4:443", "[::1]:443", "*:443" (all IPv4
 * addresses) or "unix:/path". On failure it returns -1 and writes what was
 * expected to |err|. */
int addr_parse(const char *s, struct addr *out, char *err, size_t err_len);

/* addr_split splits "host:port" or "[v6]:port" into its parts. |host| must
 * hold |host_len| bytes. Returns 0 or -1. */
int addr_split(const char *s, char *host, size_t host_len, unsigned *out_port);

/* addr_format writes |a| as it would be written in the config. */
const char *addr_format(const struct addr *a, char *buf, size_t buf_len);

/* addr_format_sa is addr_format for a raw sockaddr. */
const char *addr_format_sa(const struct sockaddr *sa, socklen_t len, char *buf,
    size_t buf_len);

/* addr_is_loopback returns 1 for unix sockets and loopback addresses
 * (127.0.0.0/8, ::1, and 127.0.0.0/8 mapped into IPv6), else 0. */
int addr_is_loopback(const struct addr *a);

/* addr_equal compares family, address and port (or path). */
int addr_equal(const struct addr *a, const struct addr *b);

#endif
