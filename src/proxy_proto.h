/* proxy_proto.h: PROXY protocol headers (HAProxy's proxy-protocol.txt,
 * versions 1 and 2) that tell a backend who the client was. Encoding only,
 * into caller memory: no sockets, no TLS objects. */
#ifndef TLSPROXY_PROXY_PROTO_H
#define TLSPROXY_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct sockaddr;

/* PROXY_PROTO_V1_MAX is the longest version 1 line, "\r\n" included. */
#define PROXY_PROTO_V1_MAX 107

/* PROXY_PROTO_V2_MAX is the longest version 2 header: the 16-byte fixed
 * part and a 16-bit length of addresses and TLVs. */
#define PROXY_PROTO_V2_MAX (16 + 65535)

/* PROXY_PROTO_TLV_CLIENT_CERT is the version 2 TLV type that carries the
 * client certificate, DER-encoded. The specification defines none, so
 * tlsproxy uses the first type of the range it leaves to applications
 * (PP2_TYPE_MIN_CUSTOM). A backend that does not know it skips it. */
#define PROXY_PROTO_TLV_CLIENT_CERT 0xE0

/* proxy_info describes one client connection. |src| and |dst| point to a
 * full sockaddr_in or sockaddr_in6 (any other family is sent as unknown).
 * Every other field is optional: a string or byte field is absent when its
 * pointer is NULL or its length is 0, a flag when it is 0. Only version 2
 * carries them. The TLS fields below |tls| are sent inside the SSL TLV, so
 * they require |tls|. */
struct proxy_info {
	const struct sockaddr *src; /* the client's address */
	const struct sockaddr *dst; /* the local address the client reached */

	const uint8_t *alpn;        /* PP2_TYPE_ALPN: the negotiated protocol */
	size_t alpn_len;
	const char *authority;      /* PP2_TYPE_AUTHORITY: the SNI host name */

	int tls;                    /* the client spoke TLS: PP2_TYPE_SSL */
	int cert_in_conn;           /* PP2_CLIENT_CERT_CONN */
	int cert_in_sess;           /* PP2_CLIENT_CERT_SESS */
	int verified;               /* a client certificate verified */
	const char *version;        /* PP2_SUBTYPE_SSL_VERSION, "TLSv1.3" */
	const char *cn;             /* PP2_SUBTYPE_SSL_CN: client subject CN */
	const char *cipher;         /* PP2_SUBTYPE_SSL_CIPHER */
	const char *sig_alg;        /* PP2_SUBTYPE_SSL_SIG_ALG */
	const char *key_alg;        /* PP2_SUBTYPE_SSL_KEY_ALG */

	const uint8_t *cert_der;    /* PROXY_PROTO_TLV_CLIENT_CERT */
	size_t cert_der_len;
};

/* proxy_proto_v1 writes the text header for |pi| to |out|: "PROXY TCP4 "
 * or "PROXY TCP6 " with both addresses and ports, or "PROXY UNKNOWN" when
 * an address is neither IPv4 nor IPv6, then "\r\n". An IPv4-mapped IPv6
 * address is sent as IPv4 when the other one is IPv4 too; otherwise an
 * IPv4 address is sent mapped, since both must share a family. Returns the
 * length (at most PROXY_PROTO_V1_MAX), or -1 if |pi| is invalid or the
 * header does not fit in |cap| bytes; |out| is then untouched. */
ssize_t proxy_proto_v1(const struct proxy_info *pi, uint8_t *out, size_t cap);

/* proxy_proto_v2 writes the binary header for |pi| to |out|: command
 * PROXY, TCP over IPv4 or IPv6 with addresses chosen as for
 * proxy_proto_v1, or family UNSPEC and no addresses, then the TLVs in
 * ascending type order: ALPN, AUTHORITY, SSL (its verify field 0 if
 * |verified| and 1 otherwise; then VERSION, CN, CIPHER, SIG_ALG, KEY_ALG)
 * and the client certificate. Returns the length (at most
 * PROXY_PROTO_V2_MAX), or -1 if |pi| is invalid (a TLS field without
 * |tls|, a value too long for its TLV, a header over PROXY_PROTO_V2_MAX)
 * or the header does not fit in |cap| bytes; |out| is then untouched. */
ssize_t proxy_proto_v2(const struct proxy_info *pi, uint8_t *out, size_t cap);

#endif
