/* PROXY protocol header encoding: known vectors written out by hand, then
 * generated inputs checked through the parser tlsproxy-backend uses, which
 * is written from the specification independently of the encoder. */
#include <check.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "../check_run.h"
#include "../../tools/proxy_decode.h"
#include "proxy_proto.h"

#define CANARY 0xa5

/* Room for the largest header and a canary zone after it. */
static uint8_t out[PROXY_PROTO_V2_MAX + 64];

/* --- addresses ----------------------------------------------------- */

static const struct sockaddr *
sa4(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	ck_assert_int_eq(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
	return (const struct sockaddr *)ss;
}

static const struct sockaddr *
sa6(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	ck_assert_int_eq(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
	return (const struct sockaddr *)ss;
}

static const struct sockaddr *
sa_unix(struct sockaddr_storage *ss)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)ss;

	memset(ss, 0, sizeof(*ss));
	sun->sun_family = AF_UNIX;
	strcpy(sun->sun_path, "/run/tlsproxy.sock");
	return (const struct sockaddr *)ss;
}

/* v1 encodes and returns the line as a string. */
static const char *
v1(const struct proxy_info *pi)
{
	static char line[PROXY_PROTO_V1_MAX + 1];
	ssize_t n = proxy_proto_v1(pi, (uint8_t *)line, PROXY_PROTO_V1_MAX);

	ck_assert_int_gt(n, 0);
	line[n] = '\0';
	return line;
}

/* --- known vectors ------------------------------------------------- */

START_TEST(v1_tcp4)
{
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa4(&s, "192.0.2.1", 56324),
		.dst = sa4(&d, "198.51.100.7", 443) };

	ck_assert_str_eq(v1(&pi),
	    "PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n");
}
END_TEST

START_TEST(v1_tcp6)
{
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa6(&s, "2001:db8::1", 1234),
		.dst = sa6(&d, "2001:db8:0:0:1::2", 443) };

	ck_assert_str_eq(v1(&pi),
	    "PROXY TCP6 2001:db8::1 2001:db8::1:0:0:2 1234 443\r\n");
}
END_TEST

START_TEST(v1_unknown)
{
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa_unix(&s),
		.dst = sa4(&d, "198.51.100.7", 443) };

	ck_assert_str_eq(v1(&pi), "PROXY UNKNOWN\r\n");
	pi.src = sa6(&s, "::1", 1);
	pi.dst = sa_unix(&d);
	ck_assert_str_eq(v1(&pi), "PROXY UNKNOWN\r\n");
}
END_TEST

START_TEST(v1_mapped)
{
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa6(&s, "::ffff:192.0.2.1", 1),
		.dst = sa4(&d, "198.51.100.7", 2) };

	/* Both IPv4 in effect: sent as IPv4. */
	ck_assert_str_eq(v1(&pi), "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\r\n");
	pi.dst = sa6(&d, "::ffff:198.51.100.7", 2);
	ck_assert_str_eq(v1(&pi), "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\r\n");
	/* Against real IPv6, IPv4 has to be mapped, whatever it came as. */
	pi.dst = sa6(&d, "2001:db8::2", 2);
	ck_assert_str_eq(v1(&pi),
	    "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n");
	pi.src = sa4(&s, "192.0.2.1", 1);
	ck_assert_str_eq(v1(&pi),
	    "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n");
	pi.src = sa6(&s, "2001:db8::2", 1);
	pi.dst = sa4(&d, "198.51.100.7", 2);
	ck_assert_str_eq(v1(&pi),
	    "PROXY TCP6 2001:db8::2 ::ffff:198.51.100.7 1 2\r\n");
}
END_TEST

START_TEST(v1_longest)
{
	static const char full[] = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa6(&s, full, 65535),
		.dst = sa6(&d, full, 65535) };
	const char *line = v1(&pi);

	ck_assert_uint_eq(strlen(line), 104);
	ck_assert_uint_le(strlen(line), PROXY_PROTO_V1_MAX);
}
END_TEST

START_TEST(v2_ipv4_bytes)
{
	static const uint8_t want[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49,
		0x54, 0x0a,             /* signature */
		0x21,                   /* version 2, PROXY */
		0x11,                   /* AF_INET, STREAM */
		0x00, 0x0c,             /* 12 bytes follow */
		192, 0, 2, 1,           /* source */
		198, 51, 100, 7,        /* destination */
		0xdc, 0x04,             /* 56324 */
		0x01, 0xbb,             /* 443 */
	};
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa4(&s, "192.0.2.1", 56324),
		.dst = sa4(&d, "198.51.100.7", 443) };

	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), sizeof(want));
	for (size_t i = 0; i < sizeof(want); i++)
		ck_assert_msg(out[i] == want[i], "byte %zu: %02x, want %02x", i,
		    out[i], want[i]);
}
END_TEST

START_TEST(v2_tlv_bytes)
{
	static const uint8_t alpn[] = { 'h', '2' };
	static const uint8_t cert[] = { 0x30, 0x00 };
	static const uint8_t want[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49,
		0x54, 0x0a, 0x21,
		0x21,                   /* AF_INET6, STREAM */
		0x00, 36 + 5 + 6 + 23 + 5,
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 7,
		0x04, 0xd2, 0x01, 0xbb,
		0x01, 0x00, 0x02, 'h', '2',                     /* ALPN */
		0x02, 0x00, 0x03, 'a', '.', 'b',                /* AUTHORITY */
		0x20, 0x00, 0x14,                               /* SSL */
		0x05,                   /* CLIENT_SSL, CLIENT_CERT_SESS */
		0x00, 0x00, 0x00, 0x00, /* verified */
		0x21, 0x00, 0x07, 'T', 'L', 'S', 'v', '1', '.', '3',
		0x22, 0x00, 0x02, 'm', 'e',
		0xe0, 0x00, 0x02, 0x30, 0x00,                   /* cert */
	};
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa6(&s, "2001:db8::1", 1234),
		.dst = sa4(&d, "198.51.100.7", 443), .alpn = alpn,
		.alpn_len = sizeof(alpn), .authority = "a.b", .tls = 1,
		.cert_in_sess = 1, .verified = 1, .version = "TLSv1.3",
		.cn = "me", .cipher = "", .cert_der = cert,
		.cert_der_len = sizeof(cert) };

	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), sizeof(want));
	for (size_t i = 0; i < sizeof(want); i++)
		ck_assert_msg(out[i] == want[i], "byte %zu: %02x, want %02x", i,
		    out[i], want[i]);
}
END_TEST

START_TEST(v2_unspec)
{
	static const uint8_t want[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49,
		0x54, 0x0a, 0x21, 0x00, 0x00, 0x0c,
		0x20, 0x00, 0x09, 0x01, 0x00, 0x00, 0x00, 0x01, /* unverified */
		0x23, 0x00, 0x01, 'X',
	};
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa_unix(&s),
		.dst = sa_unix(&d) };

	/* No address block, and command PROXY all the same. */
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), 16);
	ck_assert_int_eq(memcmp(out, want, 14), 0);
	ck_assert_int_eq(out[14], 0);
	ck_assert_int_eq(out[15], 0);
	pi.tls = 1;
	pi.cipher = "X";
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), sizeof(want));
	ck_assert_int_eq(memcmp(out, want, sizeof(want)), 0);
}
END_TEST

START_TEST(rejects_invalid)
{
	static const uint8_t b[1] = { 0 };
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa4(&s, "192.0.2.1", 1),
		.dst = sa4(&d, "192.0.2.2", 2) };
	struct proxy_info bad;

	bad = pi;
	bad.src = NULL;
	ck_assert_int_eq(proxy_proto_v1(&bad, out, sizeof(out)), -1);
	ck_assert_int_eq(proxy_proto_v2(&bad, out, sizeof(out)), -1);
	bad = pi;
	bad.dst = NULL;
	ck_assert_int_eq(proxy_proto_v2(&bad, out, sizeof(out)), -1);
	bad = pi;
	bad.alpn_len = 2;
	ck_assert_int_eq(proxy_proto_v2(&bad, out, sizeof(out)), -1);
	bad = pi;
	bad.cert_der_len = 2;
	ck_assert_int_eq(proxy_proto_v2(&bad, out, sizeof(out)), -1);
	/* TLS details need the SSL TLV to travel in. */
	bad = pi;
	bad.cn = "client";
	ck_assert_int_eq(proxy_proto_v1(&bad, out, sizeof(out)), -1);
	ck_assert_int_eq(proxy_proto_v2(&bad, out, sizeof(out)), -1);
	bad = pi;
	bad.verified = 1;
	ck_assert_int_eq(proxy_proto_v2(&bad, out, sizeof(out)), -1);
	bad = pi;
	bad.cert_in_conn = 1;
	ck_assert_int_eq(proxy_proto_v2(&bad, out, sizeof(out)), -1);
	/* A pointer with length 0 is just absent, with or without TLS. */
	bad = pi;
	bad.alpn = b;
	bad.cert_der = b;
	bad.authority = "";
	bad.cn = "";
	ck_assert_int_eq(proxy_proto_v2(&bad, out, sizeof(out)), 28);
}
END_TEST

/* --- generated inputs ---------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
rng(void)
{
	/* splitmix64: every seed gives a full-quality stream. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static size_t
rng_below(size_t n)
{
	return (size_t)(rng() % n);
}

enum side_kind { SIDE_V4, SIDE_V6, SIDE_OTHER };

/* gen_side makes one address of |kind| in |ss| and writes the 16 bytes it
 * is expected as on the wire if IPv6 is used (IPv4 in the first four). */
static void
gen_side(enum side_kind kind, struct sockaddr_storage *ss, uint8_t want4[4],
    uint8_t want6[16], uint16_t *port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	static const uint16_t edge_ports[] = { 0, 1, 443, 65535 };

	memset(ss, 0, sizeof(*ss));
	*port = rng_below(4) == 0 ? edge_ports[rng_below(4)] :
	    (uint16_t)rng();
	switch (kind) {
	case SIDE_V4:
		for (int i = 0; i < 4; i++)
			want4[i] = (uint8_t)rng();
		memset(want6, 0, 10);
		want6[10] = want6[11] = 0xff;
		memcpy(want6 + 12, want4, 4);
		if (rng_below(2) == 0) {
			sin->sin_family = AF_INET;
			sin->sin_port = htons(*port);
			memcpy(&sin->sin_addr, want4, 4);
		} else {
			sin6->sin6_family = AF_INET6;
			sin6->sin6_port = htons(*port);
			memcpy(&sin6->sin6_addr, want6, 16);
		}
		break;
	case SIDE_V6:
		/* Runs of zero groups exercise the "::" shorthand. */
		do {
			for (int i = 0; i < 16; i++)
				want6[i] = (uint8_t)rng();
			for (int g = 0; g < 8; g++)
				if (rng_below(3) == 0)
					want6[2 * g] = want6[2 * g + 1] = 0;
		} while (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)want6));
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(*port);
		memcpy(&sin6->sin6_addr, want6, 16);
		break;
	case SIDE_OTHER:
		sa_unix(ss);
		break;
	}
}

/* One generated input with everything needed to check the result. */
struct gen {
	struct sockaddr_storage src, dst;
	struct proxy_info pi;
	int family;
	uint8_t want_src[16], want_dst[16];
	uint16_t sport, dport;
	uint8_t alpn[600], cert[4096];
	char authority[600], version[40], cn[600], cipher[80], sig_alg[40],
	    key_alg[40];
};

/* gen_str fills |buf| with a non-empty string or makes it absent; any
 * byte but NUL may appear. */
static const char *
gen_str(char *buf, size_t size)
{
	size_t n;

	if (rng_below(3) == 0)
		return NULL;
	n = 1 + rng_below(rng_below(8) == 0 ? size - 1 : 24);
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)(1 + rng_below(255));
	buf[n] = '\0';
	return buf;
}

static size_t
gen_bytes(uint8_t *buf, size_t size)
{
	size_t n;

	if (rng_below(3) == 0)
		return 0;
	n = 1 + rng_below(rng_below(8) == 0 ? size : 16);
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)rng();
	return n;
}

static void
gen(struct gen *g)
{
	enum side_kind ks, kd;
	uint8_t s4[4], d4[4], s6[16], d6[16];
	size_t r = rng_below(10);

	memset(&g->pi, 0, sizeof(g->pi));
	/* Mostly IP, sometimes a family PROXY cannot carry. */
	ks = r == 0 ? SIDE_OTHER : rng_below(2) == 0 ? SIDE_V4 : SIDE_V6;
	kd = r == 1 ? SIDE_OTHER : rng_below(2) == 0 ? SIDE_V4 : SIDE_V6;
	gen_side(ks, &g->src, s4, s6, &g->sport);
	gen_side(kd, &g->dst, d4, d6, &g->dport);
	if (ks == SIDE_OTHER || kd == SIDE_OTHER) {
		g->family = AF_UNSPEC;
	} else if (ks == SIDE_V4 && kd == SIDE_V4) {
		g->family = AF_INET;
		memcpy(g->want_src, s4, 4);
		memcpy(g->want_dst, d4, 4);
	} else {
		g->family = AF_INET6;
		memcpy(g->want_src, s6, 16);
		memcpy(g->want_dst, d6, 16);
	}
	g->pi.src = (const struct sockaddr *)&g->src;
	g->pi.dst = (const struct sockaddr *)&g->dst;
	g->pi.alpn_len = gen_bytes(g->alpn, sizeof(g->alpn));
	g->pi.alpn = g->pi.alpn_len > 0 ? g->alpn : NULL;
	g->pi.authority = gen_str(g->authority, sizeof(g->authority));
	g->pi.cert_der_len = gen_bytes(g->cert, sizeof(g->cert));
	g->pi.cert_der = g->pi.cert_der_len > 0 ? g->cert : NULL;
	g->pi.tls = rng_below(4) != 0;
	if (!g->pi.tls)
		return;
	g->pi.cert_in_conn = (int)rng_below(2);
	g->pi.cert_in_sess = (int)rng_below(2);
	g->pi.verified = (int)rng_below(2);
	g->pi.version = gen_str(g->version, sizeof(g->version));
	g->pi.cn = gen_str(g->cn, sizeof(g->cn));
	g->pi.cipher = gen_str(g->cipher, sizeof(g->cipher));
	g->pi.sig_alg = gen_str(g->sig_alg, sizeof(g->sig_alg));
	g->pi.key_alg = gen_str(g->key_alg, sizeof(g->key_alg));
}

static void
check_addrs(const struct gen *g, const struct proxy_decoded *d, int iter)
{
	size_t alen = g->family == AF_INET ? 4 : 16;

	ck_assert_msg(d->family == g->family, "case %d: family %d, want %d",
	    iter, d->family, g->family);
	if (g->family == AF_UNSPEC)
		return;
	ck_assert_msg(memcmp(d->src, g->want_src, alen) == 0 &&
	    memcmp(d->dst, g->want_dst, alen) == 0, "case %d: addresses", iter);
	ck_assert_msg(d->src_port == g->sport && d->dst_port == g->dport,
	    "case %d: ports %u %u, want %u %u", iter, d->src_port, d->dst_port,
	    g->sport, g->dport);
}

/* same reports whether a decoded value is the expected optional one. */
static int
same(const struct proxy_bytes *b, const void *want, size_t want_len)
{
	if (want == NULL || want_len == 0)
		return b->p == NULL;
	return b->p != NULL && b->len == want_len &&
	    memcmp(b->p, want, want_len) == 0;
}

static int
same_str(const struct proxy_bytes *b, const char *want)
{
	return same(b, want, want == NULL ? 0 : strlen(want));
}

static void
check_tlvs(const struct gen *g, const struct proxy_decoded *d, int iter)
{
	const struct proxy_info *pi = &g->pi;
	uint8_t client = 0x01;

	ck_assert_msg(same(&d->alpn, pi->alpn, pi->alpn_len) &&
	    same_str(&d->authority, pi->authority) &&
	    same(&d->cert, pi->cert_der, pi->cert_der_len),
	    "case %d: ALPN, AUTHORITY or certificate", iter);
	ck_assert_msg(d->ssl == pi->tls, "case %d: SSL TLV", iter);
	if (!pi->tls)
		return;
	if (pi->cert_in_conn)
		client |= 0x02;
	if (pi->cert_in_sess)
		client |= 0x04;
	ck_assert_msg(d->client == client, "case %d: client %02x, want %02x",
	    iter, d->client, client);
	ck_assert_msg((d->verify == 0) == (pi->verified != 0),
	    "case %d: verify %u", iter, d->verify);
	ck_assert_msg(same_str(&d->ssl_version, pi->version) &&
	    same_str(&d->cn, pi->cn) && same_str(&d->cipher, pi->cipher) &&
	    same_str(&d->sig_alg, pi->sig_alg) &&
	    same_str(&d->key_alg, pi->key_alg), "case %d: SSL sub-TLVs", iter);
}

/* check_prefixes asserts the parser waits for more on every prefix. */
static void
check_prefixes(const uint8_t *h, size_t n, int iter)
{
	struct proxy_decoded d;
	const char *reason = NULL;

	for (size_t i = 0; i < n; i += n > 300 ? 1 + rng_below(n / 8) : 1)
		ck_assert_msg(proxy_decode(h, i, &d, &reason) == 0,
		    "case %d: prefix of %zu of %zu bytes: %s", iter, i, n,
		    reason != NULL ? reason : "parsed");
}

START_TEST(roundtrip_generated)
{
	static struct gen g;
	struct proxy_decoded d;
	const char *reason;
	ssize_t n;

	for (int iter = 0; iter < 20000; iter++) {
		gen(&g);

		reason = "";
		n = proxy_proto_v1(&g.pi, out, sizeof(out));
		ck_assert_msg(n > 0 && n <= PROXY_PROTO_V1_MAX,
		    "case %d: v1 %zd", iter, n);
		ck_assert_msg(proxy_decode(out, (size_t)n, &d, &reason) == n,
		    "case %d: v1 \"%.*s\": %s", iter, (int)n, out, reason);
		ck_assert_int_eq(d.version, 1);
		check_addrs(&g, &d, iter);
		if (iter % 16 == 0)
			check_prefixes(out, (size_t)n, iter);

		n = proxy_proto_v2(&g.pi, out, sizeof(out));
		ck_assert_msg(n >= 16, "case %d: v2 %zd", iter, n);
		ck_assert_msg(proxy_decode(out, (size_t)n, &d, &reason) == n,
		    "case %d: v2: %s", iter, reason);
		ck_assert_int_eq(d.version, 2);
		ck_assert_int_eq(d.local, 0);
		check_addrs(&g, &d, iter);
		check_tlvs(&g, &d, iter);
		if (iter % 16 == 0)
			check_prefixes(out, (size_t)n, iter);
	}
}
END_TEST

/* --- capacity ------------------------------------------------------ */

typedef ssize_t (*encoder)(const struct proxy_info *, uint8_t *, size_t);

/* check_short asserts that |cap| bytes, short of the header, make |enc|
 * fail without writing anything. */
static void
check_short(encoder enc, const struct proxy_info *pi, size_t cap, size_t need)
{
	size_t i;

	memset(out, CANARY, need + 16);
	ck_assert_msg(enc(pi, out, cap) == -1, "cap %zu of %zu", cap, need);
	/* One assertion per call, not per byte: Check records each. */
	for (i = 0; i < need + 16 && out[i] == CANARY; i++)
		;
	ck_assert_msg(i == need + 16, "cap %zu: byte %zu written", cap, i);
}

/* check_caps tries capacities short of the header (every |step|-th and
 * the last one) and then the exact one, which must write exactly it. */
static void
check_caps(encoder enc, const struct proxy_info *pi, size_t step)
{
	static uint8_t want[PROXY_PROTO_V2_MAX];
	ssize_t n = enc(pi, want, sizeof(want));
	size_t need;

	ck_assert_int_gt(n, 0);
	need = (size_t)n;
	for (size_t cap = 0; cap < need; cap += step)
		check_short(enc, pi, cap, need);
	check_short(enc, pi, need - 1, need);
	memset(out, CANARY, need + 16);
	ck_assert_int_eq(enc(pi, out, need), n);
	ck_assert_int_eq(memcmp(out, want, need), 0);
	for (n = 0; n < 16 && out[need + (size_t)n] == CANARY; n++)
		;
	ck_assert_int_eq(n, 16);
}

START_TEST(cap_never_overrun)
{
	static const char full[] = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
	static struct gen g;
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa6(&s, full, 65535),
		.dst = sa6(&d, full, 65535) };

	check_caps(proxy_proto_v1, &pi, 1);
	check_caps(proxy_proto_v2, &pi, 1);
	pi.src = sa4(&s, "192.0.2.1", 1);
	pi.dst = sa4(&d, "192.0.2.2", 2);
	check_caps(proxy_proto_v1, &pi, 1);
	check_caps(proxy_proto_v2, &pi, 1);
	pi.src = sa_unix(&s);
	check_caps(proxy_proto_v1, &pi, 1);
	check_caps(proxy_proto_v2, &pi, 1);
	for (int i = 0; i < 200; i++) {
		gen(&g);
		check_caps(proxy_proto_v1, &g.pi, 1);
		check_caps(proxy_proto_v2, &g.pi, 1);
	}
}
END_TEST

/* --- the 64 KiB limit ---------------------------------------------- */

static uint8_t big[70000];
static char big_str[70000];

static const char *
str_of(size_t n)
{
	memset(big_str, 'a', n);
	big_str[n] = '\0';
	return big_str;
}

START_TEST(v2_length_limit)
{
	struct sockaddr_storage s, d;
	struct proxy_info pi = { .src = sa4(&s, "192.0.2.1", 1),
		.dst = sa4(&d, "192.0.2.2", 2), .cert_der = big };
	struct proxy_decoded dec;
	const char *reason = "";

	memset(big, 0x42, sizeof(big));
	/* 12 address bytes, 3 TLV head bytes: 65520 fills the 16-bit length. */
	pi.cert_der_len = 65520;
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)),
	    PROXY_PROTO_V2_MAX);
	ck_assert_int_eq(proxy_decode(out, PROXY_PROTO_V2_MAX, &dec, &reason),
	    PROXY_PROTO_V2_MAX);
	ck_assert_uint_eq(dec.cert.len, 65520);
	check_caps(proxy_proto_v2, &pi, 4099);
	pi.cert_der_len = 65521;
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), -1);
	pi.cert_der_len = 65535;
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), -1);
	pi.cert_der_len = 65536;
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), -1);

	pi.src = sa6(&s, "2001:db8::1", 1);
	pi.cert_der_len = 65535 - 36 - 3;
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)),
	    PROXY_PROTO_V2_MAX);
	pi.cert_der_len++;
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), -1);

	/* Each value fits its TLV, the sum does not fit the header. */
	pi.cert_der_len = 40000;
	pi.authority = str_of(40000);
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), -1);
	pi.cert_der_len = 0;
	pi.authority = NULL;
	pi.alpn = big;
	pi.alpn_len = 65536;
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), -1);
	pi.alpn = NULL;
	pi.alpn_len = 0;

	/* The SSL TLV's sub-TLVs count against both its own length and the
	 * header's. Without addresses: 3 + 5 + 3 + CN fill 65535. */
	pi.src = sa_unix(&s);
	pi.tls = 1;
	pi.cn = str_of(65524);
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)),
	    PROXY_PROTO_V2_MAX);
	ck_assert_int_eq(proxy_decode(out, PROXY_PROTO_V2_MAX, &dec, &reason),
	    PROXY_PROTO_V2_MAX);
	ck_assert_uint_eq(dec.cn.len, 65524);
	pi.cn = str_of(65525);
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), -1);
	pi.cn = str_of(65536);
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), -1);
	pi.cn = NULL;
	pi.version = str_of(33000);
	pi.cipher = str_of(33000);
	ck_assert_int_eq(proxy_proto_v2(&pi, out, sizeof(out)), -1);
	/* v1 carries none of this, so it is not limited by it. */
	ck_assert_str_eq(v1(&pi), "PROXY UNKNOWN\r\n");
}
END_TEST

/* --- the parser's own rejections ----------------------------------- */

/* parse runs the parser on |len| bytes and returns its verdict, with the
 * reason for -1 in |why|. */
static ssize_t
parse(const void *buf, size_t len, const char **why)
{
	struct proxy_decoded d;

	*why = "";
	return proxy_decode(buf, len, &d, why);
}

static ssize_t
parse_str(const char *s, const char **why)
{
	return parse(s, strlen(s), why);
}

START_TEST(parser_v1_rejects)
{
	char line[200];
	const char *why;

	ck_assert_int_eq(parse_str("GET / HTTP/1.1\r\n", &why), -1);
	ck_assert_str_eq(why, "not-proxy");
	ck_assert_int_eq(parse_str("PROXZ", &why), -1);
	ck_assert_int_eq(parse_str("PROX", &why), 0);
	ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", &why),
	    -1);
	ck_assert_str_eq(why, "v1-no-crlf");
	ck_assert_int_eq(parse_str("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", &why),
	    -1);
	ck_assert_str_eq(why, "v1-protocol");
	ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", &why),
	    -1);
	ck_assert_str_eq(why, "v1-syntax");
	ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", &why),
	    -1);
	ck_assert_str_eq(why, "v1-syntax");
	ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 ::1 1 2\r\n", &why), -1);
	ck_assert_str_eq(why, "v1-address");
	ck_assert_int_eq(parse_str("PROXY TCP6 ::1 5.6.7.8 1 2\r\n", &why), -1);
	ck_assert_str_eq(why, "v1-address");
	ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", &why),
	    -1);
	ck_assert_str_eq(why, "v1-port");
	ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
	    &why), -1);
	ck_assert_str_eq(why, "v1-port");
	/* UNKNOWN may carry anything up to the end of the line. */
	ck_assert_int_eq(parse_str("PROXY UNKNOWN whatever\r\nGET", &why), 24);
	ck_assert_int_eq(parse_str("PROXY UNKNOWNX\r\n", &why), -1);
	/* The longest line is 107 bytes, "\r\n" included. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY ", 6);
	ck_assert_int_eq(parse(line, 106, &why), 0);
	ck_assert_int_eq(parse(line, 107, &why), -1);
	ck_assert_str_eq(why, "v1-too-long");
}
END_TEST

/* v2_raw builds a v2 header around |body|. */
static size_t
v2_raw(uint8_t *buf, uint8_t ver_cmd, uint8_t fam, const void *body,
    size_t body_len)
{
	memcpy(buf, proxy_decode_sig, 12);
	buf[12] = ver_cmd;
	buf[13] = fam;
	buf[14] = (uint8_t)(body_len >> 8);
	buf[15] = (uint8_t)body_len;
	memcpy(buf + 16, body, body_len);
	return 16 + body_len;
}

START_TEST(parser_v2_rejects)
{
	static const uint8_t addrs[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2 };
	uint8_t buf[256], body[64];
	const char *why;
	size_t n;

	n = v2_raw(buf, 0x11, 0x11, addrs, 12);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-version");
	n = v2_raw(buf, 0x22, 0x11, addrs, 12);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-command");
	/* UDP and unix sockets are not what tlsproxy forwards. */
	n = v2_raw(buf, 0x21, 0x12, addrs, 12);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-family");
	v2_raw(buf, 0x21, 0x31, addrs, 12);
	ck_assert_int_eq(parse(buf, 16, &why), -1);
	ck_assert_str_eq(why, "v2-family");
	n = v2_raw(buf, 0x21, 0x11, addrs, 11);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-short-addresses");
	/* LOCAL: whatever the block holds is skipped. */
	n = v2_raw(buf, 0x20, 0x31, "junk", 4);
	ck_assert_int_eq(parse(buf, n, &why), 20);

	memcpy(body, addrs, 12);
	memcpy(body + 12, "\x02\x00", 2);
	n = v2_raw(buf, 0x21, 0x11, body, 14);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-truncated-tlv");
	memcpy(body + 12, "\x02\x00\x03" "ab", 5);
	n = v2_raw(buf, 0x21, 0x11, body, 17);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-truncated-tlv");
	memcpy(body + 12, "\x02\x00\x01" "a" "\x02\x00\x01" "b", 8);
	n = v2_raw(buf, 0x21, 0x11, body, 20);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-duplicate-tlv");
	/* Unknown types are skipped, as the specification asks. */
	memcpy(body + 12, "\x04\x00\x01" "a" "\xee\x00\x00", 7);
	n = v2_raw(buf, 0x21, 0x11, body, 19);
	ck_assert_int_eq(parse(buf, n, &why), (ssize_t)n);
	memcpy(body + 12, "\x20\x00\x04\x01\x00\x00\x00", 7);
	n = v2_raw(buf, 0x21, 0x11, body, 19);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-short-ssl-tlv");
	memcpy(body + 12, "\x20\x00\x07\x01\x00\x00\x00\x00\x21\x00", 10);
	n = v2_raw(buf, 0x21, 0x11, body, 22);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-truncated-ssl-subtlv");
	memcpy(body + 12, "\x20\x00\x0b\x01\x00\x00\x00\x00"
	    "\x22\x00\x00\x22\x00\x00", 14);
	n = v2_raw(buf, 0x21, 0x11, body, 26);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-duplicate-ssl-subtlv");
	memcpy(body + 12, "\x20\x00\x05\x01\x00\x00\x00\x00"
	    "\x20\x00\x05\x01\x00\x00\x00\x00", 16);
	n = v2_raw(buf, 0x21, 0x11, body, 28);
	ck_assert_int_eq(parse(buf, n, &why), -1);
	ck_assert_str_eq(why, "v2-duplicate-tlv");
	/* A wrong signature byte anywhere is refused at once. */
	n = v2_raw(buf, 0x21, 0x11, addrs, 12);
	buf[7] ^= 1;
	ck_assert_int_eq(parse(buf, 8, &why), -1);
	ck_assert_str_eq(why, "not-proxy");
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("proxy_proto");
	TCase *tc = tcase_create("encode");

	tcase_add_test(tc, v1_tcp4);
	tcase_add_test(tc, v1_tcp6);
	tcase_add_test(tc, v1_unknown);
	tcase_add_test(tc, v1_mapped);
	tcase_add_test(tc, v1_longest);
	tcase_add_test(tc, v2_ipv4_bytes);
	tcase_add_test(tc, v2_tlv_bytes);
	tcase_add_test(tc, v2_unspec);
	tcase_add_test(tc, rejects_invalid);
	tcase_add_test(tc, roundtrip_generated);
	tcase_add_test(tc, cap_never_overrun);
	tcase_add_test(tc, v2_length_limit);
	tcase_add_test(tc, parser_v1_rejects);
	tcase_add_test(tc, parser_v2_rejects);
	/* The generated cases take a while under the sanitizers. */
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return check_run(s);
}
