/* fuzz_proxy_proto.c: libFuzzer target for the PROXY protocol encoder and
 * tlsproxy-backend's parser. The input is parsed as a header as it is,
 * then read as a description of a connection that is encoded, with a
 * capacity the input also picks, and parsed back.
 *
 * Input layout: a flags byte (bits 0-1 the source's kind, 2-3 the
 * destination's: IPv4, IPv4-mapped IPv6, IPv6, unix; then tls,
 * cert_in_conn, cert_in_sess, verified), 16 bytes per address, 2 per port,
 * 2 for the capacity, then eight values each preceded by a 16-bit length:
 * ALPN, authority, version, CN, cipher, signature and key algorithm,
 * certificate. */
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "../../tools/proxy_decode.h"
#include "proxy_proto.h"

#define CANARY 0xa5

static uint8_t out[PROXY_PROTO_V2_MAX + 16];

struct fuzz_in {
	const uint8_t *p;
	size_t len;
};

static const uint8_t *
fuzz_take(struct fuzz_in *in, size_t n)
{
	const uint8_t *p = in->p;

	if (in->len < n)
		return NULL;
	in->p += n;
	in->len -= n;
	return p;
}

static size_t
fuzz_u16(struct fuzz_in *in)
{
	const uint8_t *p = fuzz_take(in, 2);

	return p == NULL ? 0 : (size_t)p[0] << 8 | p[1];
}

/* fuzz_side builds an address of kind |kind| and its IPv6 form in |v6|
 * (IPv4 mapped), which is what it must come back as whatever family the
 * header uses. Returns 4 for IPv4 in either form (the IPv6 kind may be
 * given mapped bytes too), 6 for IPv6, 0 for unix. */
static int
fuzz_side(int kind, const uint8_t *a, uint16_t port,
    struct sockaddr_storage *ss, uint8_t v6[16])
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	memset(v6, 0, 16);
	v6[10] = v6[11] = 0xff;
	memcpy(v6 + 12, a, 4);
	switch (kind) {
	case 0:
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, a, 4);
		return 4;
	case 1:
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, v6, 16);
		return 4;
	case 2:
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, a, 16);
		memcpy(v6, a, 16);
		return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) ? 4 : 6;
	}
	((struct sockaddr_un *)ss)->sun_family = AF_UNIX;
	return 0;
}

/* fuzz_as_v6 is the parsed address in IPv6 form. */
static void
fuzz_as_v6(int family, const uint8_t *a, uint8_t v6[16])
{
	if (family == AF_INET6) {
		memcpy(v6, a, 16);
		return;
	}
	memset(v6, 0, 16);
	v6[10] = v6[11] = 0xff;
	memcpy(v6 + 12, a, 4);
}

static int
fuzz_same(const struct proxy_bytes *b, const void *want, size_t want_len)
{
	if (want == NULL || want_len == 0)
		return b->p == NULL;
	return b->p != NULL && b->len == want_len &&
	    memcmp(b->p, want, want_len) == 0;
}

static int
fuzz_same_str(const struct proxy_bytes *b, const char *want)
{
	return fuzz_same(b, want, want == NULL ? 0 : strlen(want));
}

/* fuzz_check_addrs compares what came back with what went in. */
static void
fuzz_check_addrs(const struct proxy_decoded *d, int ip, int both_v4,
    const uint8_t src6[16], const uint8_t dst6[16], uint16_t sport,
    uint16_t dport)
{
	uint8_t s[16], t[16];

	if (!ip) {
		if (d->family != AF_UNSPEC)
			abort();
		return;
	}
	if (d->family != (both_v4 ? AF_INET : AF_INET6))
		abort();
	fuzz_as_v6(d->family, d->src, s);
	fuzz_as_v6(d->family, d->dst, t);
	if (memcmp(s, src6, 16) != 0 || memcmp(t, dst6, 16) != 0 ||
	    d->src_port != sport || d->dst_port != dport)
		abort();
}

static void
fuzz_check_tlvs(const struct proxy_decoded *d, const struct proxy_info *pi)
{
	uint8_t client = 0x01 | (pi->cert_in_conn ? 0x02 : 0) |
	    (pi->cert_in_sess ? 0x04 : 0);

	if (!fuzz_same(&d->alpn, pi->alpn, pi->alpn_len) ||
	    !fuzz_same_str(&d->authority, pi->authority) ||
	    !fuzz_same(&d->cert, pi->cert_der, pi->cert_der_len) ||
	    d->ssl != pi->tls)
		abort();
	if (!pi->tls)
		return;
	if (d->client != client || (d->verify == 0) != (pi->verified != 0) ||
	    !fuzz_same_str(&d->ssl_version, pi->version) ||
	    !fuzz_same_str(&d->cn, pi->cn) ||
	    !fuzz_same_str(&d->cipher, pi->cipher) ||
	    !fuzz_same_str(&d->sig_alg, pi->sig_alg) ||
	    !fuzz_same_str(&d->key_alg, pi->key_alg))
		abort();
}

/* fuzz_short checks that |cap| bytes, fewer than the header needs, are
 * refused without a byte written. */
static void
fuzz_short(ssize_t (*enc)(const struct proxy_info *, uint8_t *, size_t),
    const struct proxy_info *pi, size_t cap, size_t need)
{
	memset(out, CANARY, need);
	if (enc(pi, out, cap % need) != -1)
		abort();
	for (size_t i = 0; i < need; i++)
		if (out[i] != CANARY)
			abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct proxy_decoded d;
	struct sockaddr_storage src, dst;
	struct proxy_info pi;
	uint8_t src6[16], dst6[16];
	const uint8_t *flags, *sa, *da;
	uint8_t *val[8] = { NULL };
	size_t val_len[8], cap;
	uint16_t sport, dport;
	const char *reason;
	ssize_t n;
	int s, t;

	n = proxy_decode(data, size, &d, &reason);
	if (n > (ssize_t)size)
		abort();

	flags = fuzz_take(&in, 1);
	sa = fuzz_take(&in, 16);
	da = fuzz_take(&in, 16);
	if (flags == NULL || sa == NULL || da == NULL)
		return 0;
	sport = (uint16_t)fuzz_u16(&in);
	dport = (uint16_t)fuzz_u16(&in);
	cap = fuzz_u16(&in);
	/* Each value gets a terminating NUL so strings can be used as such;
	 * a NUL inside a string shortens it, as it would for the caller. */
	for (int i = 0; i < 8; i++) {
		const uint8_t *p;

		val_len[i] = fuzz_u16(&in);
		if (val_len[i] > in.len)
			val_len[i] = in.len;
		p = fuzz_take(&in, val_len[i]);
		val[i] = malloc(val_len[i] + 1);
		if (val[i] == NULL)
			abort();
		memcpy(val[i], p, val_len[i]);
		val[i][val_len[i]] = '\0';
	}
	s = fuzz_side(*flags & 3, sa, sport, &src, src6);
	t = fuzz_side(*flags >> 2 & 3, da, dport, &dst, dst6);
	memset(&pi, 0, sizeof(pi));
	pi.src = (const struct sockaddr *)&src;
	pi.dst = (const struct sockaddr *)&dst;
	pi.alpn = val[0];
	pi.alpn_len = val_len[0];
	pi.authority = (const char *)val[1];
	pi.cert_der = val[7];
	pi.cert_der_len = val_len[7];
	pi.tls = *flags >> 4 & 1;
	if (pi.tls) {
		pi.cert_in_conn = *flags >> 5 & 1;
		pi.cert_in_sess = *flags >> 6 & 1;
		pi.verified = *flags >> 7 & 1;
		pi.version = (const char *)val[2];
		pi.cn = (const char *)val[3];
		pi.cipher = (const char *)val[4];
		pi.sig_alg = (const char *)val[5];
		pi.key_alg = (const char *)val[6];
	}

	n = proxy_proto_v1(&pi, out, sizeof(out));
	if (n <= 0 || n > PROXY_PROTO_V1_MAX ||
	    proxy_decode(out, (size_t)n, &d, &reason) != n || d.version != 1)
		abort();
	fuzz_check_addrs(&d, s && t, s == 4 && t == 4, src6, dst6, sport,
	    dport);
	fuzz_short(proxy_proto_v1, &pi, cap, (size_t)n);

	/* Over the 64 KiB limit is the one reason v2 may refuse. */
	n = proxy_proto_v2(&pi, out, sizeof(out));
	if (n > 0) {
		if (proxy_decode(out, (size_t)n, &d, &reason) != n ||
		    d.version != 2 || d.local)
			abort();
		fuzz_check_addrs(&d, s && t, s == 4 && t == 4, src6, dst6,
		    sport, dport);
		fuzz_check_tlvs(&d, &pi);
		fuzz_short(proxy_proto_v2, &pi, cap, (size_t)n);
	} else if (36 + 9 + val_len[0] + val_len[1] + val_len[7] +
	    (pi.tls ? 3 + 5 + 15 + val_len[2] + val_len[3] + val_len[4] +
	    val_len[5] + val_len[6] : 0) <= 65535) {
		abort();
	}
	for (int i = 0; i < 8; i++)
		free(val[i]);
	return 0;
}
