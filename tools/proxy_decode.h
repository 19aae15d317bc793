/* proxy_decode.h: a PROXY protocol header parser (HAProxy's
 * proxy-protocol.txt, versions 1 and 2) for tlsproxy-backend's "proxy"
 * mode and the unit test of tlsproxy's encoder. It is written from the
 * specification alone and shares nothing with src/proxy_proto.c, so a
 * misreading of the specification would have to be made twice to go
 * unnoticed. Header-only because the backend is a single file.
 *
 * It is strict where the encoder has no excuse (one space between v1
 * fields, no leading zeros in ports, a TLV repeated, a TLV running past
 * the header) and lenient where the specification asks receivers to be
 * (unknown TLV types are skipped, a LOCAL header's block is ignored). The
 * CRC32C TLV is skipped unchecked. */
#ifndef TLSPROXY_TOOLS_PROXY_DECODE_H
#define TLSPROXY_TOOLS_PROXY_DECODE_H

#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

/* PROXY_DECODE_V1_MAX is the longest v1 line, "\r\n" included. */
#define PROXY_DECODE_V1_MAX 107

/* proxy_bytes is a value inside the parsed buffer; |p| is NULL when the
 * header did not carry it. */
struct proxy_bytes {
	const uint8_t *p;
	size_t len;
};

struct proxy_decoded {
	int version;                 /* 1 or 2 */
	int local;                   /* v2 command LOCAL: block ignored */
	int family;                  /* AF_INET, AF_INET6 or AF_UNSPEC */
	uint8_t src[16], dst[16];    /* 4 bytes used for AF_INET */
	uint16_t src_port, dst_port; /* host order */
	/* v2 TLVs. */
	struct proxy_bytes alpn, authority;
	int ssl;                     /* the SSL TLV was present */
	uint8_t client;              /* its client bits */
	uint32_t verify;             /* its verify word */
	struct proxy_bytes ssl_version, cn, cipher, sig_alg, key_alg;
	struct proxy_bytes cert;     /* custom type 0xE0: tlsproxy's cert */
};

static const uint8_t proxy_decode_sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00,
	0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a };

/* proxy_decode_prefix reports whether the |len| bytes at |buf| agree with
 * the start of |want| (|want_len| bytes), as far as both go. */
static inline int
proxy_decode_prefix(const uint8_t *buf, size_t len, const void *want,
    size_t want_len)
{
	return memcmp(buf, want, len < want_len ? len : want_len) == 0;
}

/* proxy_decode_port parses a v1 port: 1 to 5 digits, no leading zero. */
static inline int
proxy_decode_port(const char *s, size_t n, uint16_t *out)
{
	uint32_t v = 0;

	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* proxy_decode_addr parses a v1 address of family |af|. */
static inline int
proxy_decode_addr(int af, const char *s, size_t n, uint8_t out[16])
{
	char tmp[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	return inet_pton(af, tmp, out) == 1 ? 0 : -1;
}

/* proxy_decode_v1_line parses the line |s| (|n| bytes, "\r\n" excluded). */
static inline int
proxy_decode_v1_line(const char *s, size_t n, struct proxy_decoded *d,
    const char **reason)
{
	const char *tok[6];
	size_t tok_len[6], num = 0, start = 0;

	/* Whatever follows UNKNOWN is to be ignored. */
	if (n >= 13 && memcmp(s, "PROXY UNKNOWN", 13) == 0 &&
	    (n == 13 || s[13] == ' ')) {
		d->family = AF_UNSPEC;
		return 0;
	}
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != ' ')
			continue;
		if (num == 6) {
			*reason = "v1-syntax";
			return -1;
		}
		tok[num] = s + start;
		tok_len[num++] = i - start;
		start = i + 1;
	}
	if (num != 6) {
		*reason = "v1-syntax";
		return -1;
	}
	if (tok_len[1] == 4 && memcmp(tok[1], "TCP4", 4) == 0) {
		d->family = AF_INET;
	} else if (tok_len[1] == 4 && memcmp(tok[1], "TCP6", 4) == 0) {
		d->family = AF_INET6;
	} else {
		*reason = "v1-protocol";
		return -1;
	}
	if (proxy_decode_addr(d->family, tok[2], tok_len[2], d->src) != 0 ||
	    proxy_decode_addr(d->family, tok[3], tok_len[3], d->dst) != 0) {
		*reason = "v1-address";
		return -1;
	}
	if (proxy_decode_port(tok[4], tok_len[4], &d->src_port) != 0 ||
	    proxy_decode_port(tok[5], tok_len[5], &d->dst_port) != 0) {
		*reason = "v1-port";
		return -1;
	}
	return 0;
}

static inline ssize_t
proxy_decode_v1(const uint8_t *buf, size_t len, struct proxy_decoded *d,
    const char **reason)
{
	size_t scan = len < PROXY_DECODE_V1_MAX ? len : PROXY_DECODE_V1_MAX;
	const uint8_t *lf = memchr(buf, '\n', scan);
	size_t line_len;

	if (lf == NULL) {
		if (len >= PROXY_DECODE_V1_MAX) {
			*reason = "v1-too-long";
			return -1;
		}
		return 0;
	}
	line_len = (size_t)(lf - buf);
	if (line_len == 0 || buf[line_len - 1] != '\r') {
		*reason = "v1-no-crlf";
		return -1;
	}
	d->version = 1;
	if (proxy_decode_v1_line((const char *)buf, line_len - 1, d,
	    reason) != 0)
		return -1;
	return (ssize_t)line_len + 1;
}

/* proxy_decode_get16 reads a big-endian 16-bit number. */
static inline size_t
proxy_decode_get16(const uint8_t *p)
{
	return (size_t)p[0] << 8 | p[1];
}

/* proxy_decode_set records the value of a TLV, refusing a second one. */
static inline int
proxy_decode_set(struct proxy_bytes *b, const uint8_t *p, size_t len)
{
	if (b->p != NULL)
		return -1;
	b->p = p;
	b->len = len;
	return 0;
}

/* proxy_decode_tlv reads the TLV at |*off| of the |len| bytes at |p| and
 * moves |*off| past it. Returns its type, or -1 if it runs past the end. */
static inline int
proxy_decode_tlv(const uint8_t *p, size_t len, size_t *off,
    struct proxy_bytes *value)
{
	size_t left = len - *off;
	int type;

	if (left < 3 || left - 3 < proxy_decode_get16(p + *off + 1))
		return -1;
	type = p[*off];
	value->p = p + *off + 3;
	value->len = proxy_decode_get16(p + *off + 1);
	*off += 3 + value->len;
	return type;
}

/* proxy_decode_ssl parses the SSL TLV's value: client bits, verify word,
 * then sub-TLVs that must fill it exactly. */
static inline int
proxy_decode_ssl(const uint8_t *p, size_t len, struct proxy_decoded *d,
    const char **reason)
{
	size_t off = 5;

	if (d->ssl) {
		*reason = "v2-duplicate-tlv";
		return -1;
	}
	if (len < 5) {
		*reason = "v2-short-ssl-tlv";
		return -1;
	}
	d->ssl = 1;
	d->client = p[0];
	d->verify = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 |
	    (uint32_t)p[3] << 8 | p[4];
	while (off < len) {
		struct proxy_bytes *b = NULL, v;

		switch (proxy_decode_tlv(p, len, &off, &v)) {
		case -1:
			*reason = "v2-truncated-ssl-subtlv";
			return -1;
		case 0x21:
			b = &d->ssl_version;
			break;
		case 0x22:
			b = &d->cn;
			break;
		case 0x23:
			b = &d->cipher;
			break;
		case 0x24:
			b = &d->sig_alg;
			break;
		case 0x25:
			b = &d->key_alg;
			break;
		}
		if (b != NULL && proxy_decode_set(b, v.p, v.len) != 0) {
			*reason = "v2-duplicate-ssl-subtlv";
			return -1;
		}
	}
	return 0;
}

/* proxy_decode_tlvs parses the TLVs that fill |p| .. |p| + |len|. */
static inline int
proxy_decode_tlvs(const uint8_t *p, size_t len, struct proxy_decoded *d,
    const char **reason)
{
	size_t off = 0;

	while (off < len) {
		struct proxy_bytes v;
		int r = 0;

		switch (proxy_decode_tlv(p, len, &off, &v)) {
		case -1:
			*reason = "v2-truncated-tlv";
			return -1;
		case 0x01:
			r = proxy_decode_set(&d->alpn, v.p, v.len);
			break;
		case 0x02:
			r = proxy_decode_set(&d->authority, v.p, v.len);
			break;
		case 0x20:
			if (proxy_decode_ssl(v.p, v.len, d, reason) != 0)
				return -1;
			break;
		case 0xe0:
			r = proxy_decode_set(&d->cert, v.p, v.len);
			break;
		}
		if (r != 0) {
			*reason = "v2-duplicate-tlv";
			return -1;
		}
	}
	return 0;
}

/* proxy_decode_family maps a v2 family byte; only TCP and UNSPEC are
 * understood. Returns the address block's length, or -1. */
static inline int
proxy_decode_family(uint8_t fam, struct proxy_decoded *d)
{
	switch (fam) {
	case 0x00:
		d->family = AF_UNSPEC;
		return 0;
	case 0x11:
		d->family = AF_INET;
		return 12;
	case 0x21:
		d->family = AF_INET6;
		return 36;
	}
	return -1;
}

static inline ssize_t
proxy_decode_v2(const uint8_t *buf, size_t len, struct proxy_decoded *d,
    const char **reason)
{
	const uint8_t *p = buf + 16;
	size_t block, alen;
	int addr_len;

	if (len < 16)
		return 0;
	block = proxy_decode_get16(buf + 14);
	if (buf[12] >> 4 != 2) {
		*reason = "v2-version";
		return -1;
	}
	if ((buf[12] & 0x0f) > 1) {
		*reason = "v2-command";
		return -1;
	}
	d->version = 2;
	/* LOCAL: the receiver uses the real endpoints and skips the block,
	 * whatever the family says. */
	if ((buf[12] & 0x0f) == 0) {
		d->local = 1;
		d->family = AF_UNSPEC;
		return len < 16 + block ? 0 : (ssize_t)(16 + block);
	}
	/* Checked before waiting for the block, so that garbage is refused
	 * at once rather than after up to 64 KiB. */
	addr_len = proxy_decode_family(buf[13], d);
	if (addr_len < 0) {
		*reason = "v2-family";
		return -1;
	}
	if (block < (size_t)addr_len) {
		*reason = "v2-short-addresses";
		return -1;
	}
	if (len < 16 + block)
		return 0;
	if (addr_len > 0) {
		alen = ((size_t)addr_len - 4) / 2;
		memcpy(d->src, p, alen);
		memcpy(d->dst, p + alen, alen);
		d->src_port = (uint16_t)proxy_decode_get16(p + 2 * alen);
		d->dst_port = (uint16_t)proxy_decode_get16(p + 2 * alen + 2);
	}
	if (proxy_decode_tlvs(p + addr_len, block - (size_t)addr_len, d,
	    reason) != 0)
		return -1;
	return (ssize_t)(16 + block);
}

/* proxy_decode parses the PROXY header at the start of the |len| bytes at
 * |buf|. Returns the header's length with |d| filled (its values point
 * into |buf|), 0 if the bytes so far are a valid beginning but more are
 * needed, or -1 with a short reason (no spaces) in |reason|. */
static inline ssize_t
proxy_decode(const uint8_t *buf, size_t len, struct proxy_decoded *d,
    const char **reason)
{
	memset(d, 0, sizeof(*d));
	if (len == 0)
		return 0;
	if (buf[0] == 'P') {
		if (!proxy_decode_prefix(buf, len, "PROXY ", 6)) {
			*reason = "not-proxy";
			return -1;
		}
		return proxy_decode_v1(buf, len, d, reason);
	}
	if (!proxy_decode_prefix(buf, len, proxy_decode_sig,
	    sizeof(proxy_decode_sig))) {
		*reason = "not-proxy";
		return -1;
	}
	return proxy_decode_v2(buf, len, d, reason);
}

#endif
