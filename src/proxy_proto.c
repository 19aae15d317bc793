/* proxy_proto.c: PROXY protocol version 1 and 2 header encoding. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t pp2_signature[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00,
	0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

#define PP2_VERSION_PROXY 0x21 /* version 2, command PROXY */
#define PP2_FAM_UNSPEC 0x00
#define PP2_FAM_TCP4 0x11
#define PP2_FAM_TCP6 0x21

#define PP2_TYPE_ALPN 0x01
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_SSL 0x20
#define PP2_SUBTYPE_SSL_VERSION 0x21
#define PP2_SUBTYPE_SSL_CN 0x22
#define PP2_SUBTYPE_SSL_CIPHER 0x23
#define PP2_SUBTYPE_SSL_SIG_ALG 0x24
#define PP2_SUBTYPE_SSL_KEY_ALG 0x25

#define PP2_CLIENT_SSL 0x01
#define PP2_CLIENT_CERT_CONN 0x02
#define PP2_CLIENT_CERT_SESS 0x04

/* A TLV is a type byte and a 16-bit length before the value. */
#define PP2_TLV_HEAD 3
#define PP2_TLV_MAX 65535
/* The SSL TLV's value starts with the client byte and the verify word. */
#define PP2_SSL_HEAD 5

/* The two addresses reduced to what goes on the wire. */
struct pp_addrs {
	int family; /* AF_INET, AF_INET6, or AF_UNSPEC for unknown */
	uint8_t src[16], dst[16];
	uint16_t src_port, dst_port; /* network order, as in sockaddr */
};

/* pp_side reads one address. Returns 4 for IPv4 (including IPv4-mapped
 * IPv6, whose last four bytes it keeps), 16 for IPv6, 0 for anything else. */
static int
pp_side(const struct sockaddr *sa, uint8_t addr[16], uint16_t *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		memcpy(addr, &sin->sin_addr, 4);
		*port = sin->sin_port;
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6;

		sin6 = (const struct sockaddr_in6 *)sa;
		*port = sin6->sin6_port;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			memcpy(addr, sin6->sin6_addr.s6_addr + 12, 4);
			return 4;
		}
		memcpy(addr, &sin6->sin6_addr, 16);
		return 16;
	}
	return 0;
}

/* pp_map turns the IPv4 address in the first four bytes of |addr| into
 * ::ffff:a.b.c.d. */
static void
pp_map(uint8_t addr[16])
{
	memmove(addr + 12, addr, 4);
	memset(addr, 0, 10);
	addr[10] = 0xff;
	addr[11] = 0xff;
}

static void
pp_addrs(const struct proxy_info *pi, struct pp_addrs *a)
{
	int s, d;

	memset(a, 0, sizeof(*a));
	s = pp_side(pi->src, a->src, &a->src_port);
	d = pp_side(pi->dst, a->dst, &a->dst_port);
	if (s == 0 || d == 0) {
		a->family = AF_UNSPEC;
		return;
	}
	if (s == 4 && d == 4) {
		a->family = AF_INET;
		return;
	}
	/* Both ends must share a family: IPv4 is the one that can move. */
	if (s == 4)
		pp_map(a->src);
	if (d == 4)
		pp_map(a->dst);
	a->family = AF_INET6;
}

/* pp_len is the length of an optional string: 0 when absent. */
static size_t
pp_len(const char *s)
{
	return s == NULL ? 0 : strlen(s);
}

/* pp_valid rejects what the caller cannot have meant: no addresses, a
 * length without bytes, TLS details with no TLS to carry them. */
static int
pp_valid(const struct proxy_info *pi)
{
	if (pi->src == NULL || pi->dst == NULL)
		return 0;
	if ((pi->alpn == NULL && pi->alpn_len > 0) ||
	    (pi->cert_der == NULL && pi->cert_der_len > 0))
		return 0;
	if (!pi->tls && (pi->cert_in_conn || pi->cert_in_sess ||
	    pi->verified || pp_len(pi->version) > 0 || pp_len(pi->cn) > 0 ||
	    pp_len(pi->cipher) > 0 || pp_len(pi->sig_alg) > 0 ||
	    pp_len(pi->key_alg) > 0))
		return 0;
	return 1;
}

ssize_t
proxy_proto_v1(const struct proxy_info *pi, uint8_t *out, size_t cap)
{
	char line[PROXY_PROTO_V1_MAX + 1];
	char src[INET6_ADDRSTRLEN], dst[INET6_ADDRSTRLEN];
	struct pp_addrs a;
	int n;

	if (!pp_valid(pi))
		return -1;
	pp_addrs(pi, &a);
	if (a.family == AF_UNSPEC) {
		n = snprintf(line, sizeof(line), "PROXY UNKNOWN\r\n");
	} else {
		if (inet_ntop(a.family, a.src, src, sizeof(src)) == NULL ||
		    inet_ntop(a.family, a.dst, dst, sizeof(dst)) == NULL)
			return -1;
		n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n",
		    a.family == AF_INET ? "TCP4" : "TCP6", src, dst,
		    ntohs(a.src_port), ntohs(a.dst_port));
	}
	if (n < 0 || (size_t)n >= sizeof(line) || (size_t)n > cap)
		return -1;
	memcpy(out, line, (size_t)n);
	return n;
}

/* pp_tlv_size is what a TLV of |len| value bytes takes, or 0 when the
 * value is absent. */
static size_t
pp_tlv_size(size_t len)
{
	return len == 0 ? 0 : PP2_TLV_HEAD + len;
}

/* pp_ssl_len is the length of the SSL TLV's value. */
static size_t
pp_ssl_len(const struct proxy_info *pi)
{
	return PP2_SSL_HEAD + pp_tlv_size(pp_len(pi->version)) +
	    pp_tlv_size(pp_len(pi->cn)) + pp_tlv_size(pp_len(pi->cipher)) +
	    pp_tlv_size(pp_len(pi->sig_alg)) + pp_tlv_size(pp_len(pi->key_alg));
}

/* pp_v2_len computes the length after the 16-byte fixed part. Returns -1
 * if some value does not fit its TLV or the total does not fit the length
 * field. Every term is bounded by the checks before it, so the sum cannot
 * wrap. */
static int
pp_v2_len(const struct proxy_info *pi, int family, size_t *out_len)
{
	size_t len, ssl_len = 0;

	if (pi->alpn_len > PP2_TLV_MAX || pp_len(pi->authority) > PP2_TLV_MAX ||
	    pi->cert_der_len > PP2_TLV_MAX)
		return -1;
	if (pi->tls) {
		if (pp_len(pi->version) > PP2_TLV_MAX ||
		    pp_len(pi->cn) > PP2_TLV_MAX ||
		    pp_len(pi->cipher) > PP2_TLV_MAX ||
		    pp_len(pi->sig_alg) > PP2_TLV_MAX ||
		    pp_len(pi->key_alg) > PP2_TLV_MAX)
			return -1;
		ssl_len = pp_ssl_len(pi);
		if (ssl_len > PP2_TLV_MAX)
			return -1;
	}
	len = family == AF_INET ? 12 : family == AF_INET6 ? 36 : 0;
	len += pp_tlv_size(pi->alpn_len) + pp_tlv_size(pp_len(pi->authority)) +
	    (pi->tls ? PP2_TLV_HEAD + ssl_len : 0) +
	    pp_tlv_size(pi->cert_der_len);
	if (len > PROXY_PROTO_V2_MAX - 16)
		return -1;
	*out_len = len;
	return 0;
}

static uint8_t *
pp_put16(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

static uint8_t *
pp_put_tlv(uint8_t *p, uint8_t type, const void *value, size_t len)
{
	if (len == 0)
		return p;
	*p++ = type;
	p = pp_put16(p, len);
	memcpy(p, value, len);
	return p + len;
}

static uint8_t *
pp_put_str(uint8_t *p, uint8_t type, const char *s)
{
	return pp_put_tlv(p, type, s, pp_len(s));
}

static uint8_t *
pp_put_ssl(uint8_t *p, const struct proxy_info *pi)
{
	uint8_t client = PP2_CLIENT_SSL;

	if (pi->cert_in_conn)
		client |= PP2_CLIENT_CERT_CONN;
	if (pi->cert_in_sess)
		client |= PP2_CLIENT_CERT_SESS;
	*p++ = PP2_TYPE_SSL;
	p = pp_put16(p, pp_ssl_len(pi));
	*p++ = client;
	/* verify is a 32-bit word: 0 means verified, anything else not. */
	p[0] = p[1] = p[2] = 0;
	p[3] = pi->verified ? 0 : 1;
	p += 4;
	p = pp_put_str(p, PP2_SUBTYPE_SSL_VERSION, pi->version);
	p = pp_put_str(p, PP2_SUBTYPE_SSL_CN, pi->cn);
	p = pp_put_str(p, PP2_SUBTYPE_SSL_CIPHER, pi->cipher);
	p = pp_put_str(p, PP2_SUBTYPE_SSL_SIG_ALG, pi->sig_alg);
	return pp_put_str(p, PP2_SUBTYPE_SSL_KEY_ALG, pi->key_alg);
}

ssize_t
proxy_proto_v2(const struct proxy_info *pi, uint8_t *out, size_t cap)
{
	struct pp_addrs a;
	size_t len;
	uint8_t *p = out;

	if (!pp_valid(pi))
		return -1;
	pp_addrs(pi, &a);
	if (pp_v2_len(pi, a.family, &len) != 0 || cap < 16 + len)
		return -1;
	memcpy(p, pp2_signature, sizeof(pp2_signature));
	p += sizeof(pp2_signature);
	*p++ = PP2_VERSION_PROXY;
	*p++ = a.family == AF_INET ? PP2_FAM_TCP4 :
	    a.family == AF_INET6 ? PP2_FAM_TCP6 : PP2_FAM_UNSPEC;
	p = pp_put16(p, len);
	if (a.family == AF_INET) {
		memcpy(p, a.src, 4);
		memcpy(p + 4, a.dst, 4);
		p += 8;
	} else if (a.family == AF_INET6) {
		memcpy(p, a.src, 16);
		memcpy(p + 16, a.dst, 16);
		p += 32;
	}
	if (a.family != AF_UNSPEC) {
		memcpy(p, &a.src_port, 2);
		memcpy(p + 2, &a.dst_port, 2);
		p += 4;
	}
	p = pp_put_tlv(p, PP2_TYPE_ALPN, pi->alpn, pi->alpn_len);
	p = pp_put_str(p, PP2_TYPE_AUTHORITY, pi->authority);
	if (pi->tls)
		p = pp_put_ssl(p, pi);
	p = pp_put_tlv(p, PROXY_PROTO_TLV_CLIENT_CERT, pi->cert_der,
	    pi->cert_der_len);
	return p - out;
}
