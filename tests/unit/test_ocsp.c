/* OCSP encoding and verification against responses made by `openssl ocsp`
 * at test time, and the fetcher's plan for a certificate whose slot holds
 * a response handed over by a previous process. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../check_run.h"
#include "config.h"
#include "generation.h"
#include "ocsp.h"
#include "ocsp_fetch.h"
#include "staple.h"

static char dir[512];

/* While set, the next rename() first opens a descriptor, as a worker
 * accepting a connection at that moment would, and leaves its number in
 * rename_opened. This definition stands in for the C library's in this
 * program, ocsp_fetch_save's rename() included. */
static int rename_opens;
static int rename_opened = -1;

int
rename(const char *from, const char *to)
{
	if (rename_opens) {
		rename_opens = 0;
		rename_opened = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	return renameat(AT_FDCWD, from, AT_FDCWD, to);
}

static void
sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
sh(const char *fmt, ...)
{
	char cmd[2048], full[2700];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "cd '%s' && (%s) >>log 2>&1", dir, cmd);
	ck_assert_msg(system(full) == 0, "failed: %s (see %s/log)", cmd, dir);
}

static X509 *
load_cert(const char *name)
{
	char path[600];
	FILE *f;
	X509 *x;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(x);
	return x;
}

static uint8_t *
load_file(const char *name, size_t *len)
{
	char path[600];
	uint8_t *buf = malloc(65536);
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	ck_assert_ptr_nonnull(f);
	*len = fread(buf, 1, 65536, f);
	fclose(f);
	return buf;
}

/* dir_file returns the path of |name| in the scratch directory (static
 * storage). */
static const char *
dir_file(const char *name)
{
	static char path[600];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

static void
write_request(const char *leaf, const char *out)
{
	X509 *l = load_cert(leaf), *ca = load_cert("ca.pem");
	char path[600];
	uint8_t *der;
	size_t len;
	FILE *f;

	ck_assert_int_eq(ocsp_request(l, ca, &der, &len), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, out);
	f = fopen(path, "wb");
	fwrite(der, 1, len, f);
	fclose(f);
	OPENSSL_free(der);
	X509_free(l);
	X509_free(ca);
}

/* respond has openssl answer our request for |leaf| as |signer|. */
static void
respond(const char *leaf, const char *signer, const char *out)
{
	write_request(leaf, "req.der");
	sh("openssl ocsp -index index.txt -CA ca.pem -rsigner %s.pem -rkey "
	    "%s.key -reqin req.der -respout %s -ndays 1", signer, signer, out);
}

static int
check(const char *resp, const char *leaf, int64_t now, struct ocsp_result *r,
    char *err, size_t err_len)
{
	X509 *l = load_cert(leaf), *ca = load_cert("ca.pem");
	size_t len;
	uint8_t *der = load_file(resp, &len);
	int rc = ocsp_check(der, len, l, ca, now, r, err, err_len);

	free(der);
	X509_free(l);
	X509_free(ca);
	return rc;
}

static EVP_PKEY *
load_key(const char *name)
{
	char path[600];
	EVP_PKEY *k;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(k);
	return k;
}

static void
save_file(const char *name, const uint8_t *der, size_t len)
{
	char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(der, 1, len, f), len);
	fclose(f);
}

/* redate copies certificate |from| to |to| with a validity period of
 * |not_before_s| .. |not_after_s| from now, signed again by the CA: the
 * openssl CLI here cannot issue a certificate valid only in the past or
 * the future. The key stays the same, so |from|'s key signs for it. */
static void
redate(const char *from, long not_before_s, long not_after_s, const char *to)
{
	X509 *x = load_cert(from);
	EVP_PKEY *ca_key = load_key("ca.key");
	char path[600];
	FILE *f;

	ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(x),
	    not_before_s));
	ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(x),
	    not_after_s));
	ck_assert_int_gt(X509_sign(x, ca_key, EVP_sha256()), 0);
	snprintf(path, sizeof(path), "%s/%s", dir, to);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(PEM_write_X509(f, x), 1);
	fclose(f);
	EVP_PKEY_free(ca_key);
	X509_free(x);
}

/* copy_elements copies every element left in |in| to |out|. */
static void
copy_elements(CBS *in, CBB *out)
{
	while (CBS_len(in) > 0) {
		CBS el;

		ck_assert(CBS_get_any_asn1_element(in, &el, NULL, NULL));
		ck_assert(CBB_add_bytes(out, CBS_data(&el), CBS_len(&el)));
	}
}

static void
add_time(CBB *out, const char *t)
{
	CBB gt;

	ck_assert(CBB_add_asn1(out, &gt, CBS_ASN1_GENERALIZEDTIME));
	ck_assert(CBB_add_bytes(&gt, (const uint8_t *)t, strlen(t)));
	ck_assert(CBB_flush(out));
}

/* retime rewrites the good response |from| (signed by the CA itself) with
 * the first SingleResponse's thisUpdate and nextUpdate set to the given
 * GeneralizedTime contents (|next| NULL: none), signs it again with the
 * CA's key and writes it to |to|. The times need not be valid: that is
 * the point. */
static void
retime(const char *from, const char *this_update, const char *next,
    const char *to)
{
	/* ecdsa-with-SHA256 */
	static const uint8_t oid_ecdsa_sha256[] = { 0x2a, 0x86, 0x48, 0xce,
		0x3d, 0x04, 0x03, 0x02 };
	size_t len, tbs_len, out_len, sig_len;
	uint8_t *der = load_file(from, &len), *tbs_der, *out_der, *sig;
	CBS cbs, resp, status, bytes, body, type, octets, basic, tbs, data,
	    el, responses, single, certid, cstatus;
	CBB cbb, seq, rsps, sgl, nx, top, exp, bseq, boct, basic_cbb, alg,
	    oid, bits;
	EVP_PKEY *key = load_key("ca.key");
	EVP_MD_CTX ctx;
	int has;
	unsigned tag;

	CBS_init(&cbs, der, len);
	ck_assert(CBS_get_asn1(&cbs, &resp, CBS_ASN1_SEQUENCE));
	ck_assert(CBS_get_asn1_element(&resp, &status, CBS_ASN1_ENUMERATED));
	ck_assert(CBS_get_asn1(&resp, &bytes, CBS_ASN1_CONTEXT_SPECIFIC |
	    CBS_ASN1_CONSTRUCTED | 0));
	ck_assert(CBS_get_asn1(&bytes, &body, CBS_ASN1_SEQUENCE));
	ck_assert(CBS_get_asn1_element(&body, &type, CBS_ASN1_OBJECT));
	ck_assert(CBS_get_asn1(&body, &octets, CBS_ASN1_OCTETSTRING));
	ck_assert(CBS_get_asn1(&octets, &basic, CBS_ASN1_SEQUENCE));
	ck_assert(CBS_get_asn1(&basic, &tbs, CBS_ASN1_SEQUENCE));

	/* ResponseData up to its responses, copied; then the first
	 * SingleResponse with new times; then the rest. */
	ck_assert(CBB_init(&cbb, 512));
	ck_assert(CBB_add_asn1(&cbb, &seq, CBS_ASN1_SEQUENCE));
	data = tbs;
	for (;;) {
		ck_assert(CBS_get_any_asn1_element(&data, &el, &tag, NULL));
		if (tag == CBS_ASN1_SEQUENCE)
			break;
		ck_assert(CBB_add_bytes(&seq, CBS_data(&el), CBS_len(&el)));
	}
	ck_assert(CBS_get_asn1(&el, &responses, CBS_ASN1_SEQUENCE));
	ck_assert(CBB_add_asn1(&seq, &rsps, CBS_ASN1_SEQUENCE));
	ck_assert(CBS_get_asn1(&responses, &single, CBS_ASN1_SEQUENCE));
	ck_assert(CBB_add_asn1(&rsps, &sgl, CBS_ASN1_SEQUENCE));
	ck_assert(CBS_get_asn1_element(&single, &certid, CBS_ASN1_SEQUENCE));
	ck_assert(CBS_get_any_asn1_element(&single, &cstatus, NULL, NULL));
	ck_assert(CBB_add_bytes(&sgl, CBS_data(&certid), CBS_len(&certid)));
	ck_assert(CBB_add_bytes(&sgl, CBS_data(&cstatus), CBS_len(&cstatus)));
	ck_assert(CBS_get_asn1(&single, &el, CBS_ASN1_GENERALIZEDTIME));
	add_time(&sgl, this_update);
	ck_assert(CBS_get_optional_asn1(&single, &el, &has,
	    CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0));
	if (next != NULL) {
		ck_assert(CBB_add_asn1(&sgl, &nx, CBS_ASN1_CONTEXT_SPECIFIC |
		    CBS_ASN1_CONSTRUCTED | 0));
		add_time(&nx, next);
	}
	copy_elements(&single, &sgl);
	copy_elements(&responses, &rsps);
	copy_elements(&data, &seq);
	ck_assert(CBB_finish(&cbb, &tbs_der, &tbs_len));

	/* Signed again; the responder certificates, if any, are dropped:
	 * the CA signs. */
	EVP_MD_CTX_init(&ctx);
	ck_assert_int_eq(EVP_DigestSignInit(&ctx, NULL, EVP_sha256(), NULL,
	    key), 1);
	ck_assert_int_eq(EVP_DigestSign(&ctx, NULL, &sig_len, tbs_der,
	    tbs_len), 1);
	sig = malloc(sig_len);
	ck_assert_int_eq(EVP_DigestSign(&ctx, sig, &sig_len, tbs_der,
	    tbs_len), 1);
	EVP_MD_CTX_cleanup(&ctx);

	ck_assert(CBB_init(&cbb, 1024));
	ck_assert(CBB_add_asn1(&cbb, &top, CBS_ASN1_SEQUENCE));
	ck_assert(CBB_add_bytes(&top, CBS_data(&status), CBS_len(&status)));
	ck_assert(CBB_add_asn1(&top, &exp, CBS_ASN1_CONTEXT_SPECIFIC |
	    CBS_ASN1_CONSTRUCTED | 0));
	ck_assert(CBB_add_asn1(&exp, &bseq, CBS_ASN1_SEQUENCE));
	ck_assert(CBB_add_bytes(&bseq, CBS_data(&type), CBS_len(&type)));
	ck_assert(CBB_add_asn1(&bseq, &boct, CBS_ASN1_OCTETSTRING));
	ck_assert(CBB_add_asn1(&boct, &basic_cbb, CBS_ASN1_SEQUENCE));
	ck_assert(CBB_add_bytes(&basic_cbb, tbs_der, tbs_len));
	ck_assert(CBB_add_asn1(&basic_cbb, &alg, CBS_ASN1_SEQUENCE));
	ck_assert(CBB_add_asn1(&alg, &oid, CBS_ASN1_OBJECT));
	ck_assert(CBB_add_bytes(&oid, oid_ecdsa_sha256,
	    sizeof(oid_ecdsa_sha256)));
	ck_assert(CBB_add_asn1(&basic_cbb, &bits, CBS_ASN1_BITSTRING));
	ck_assert(CBB_add_u8(&bits, 0));
	ck_assert(CBB_add_bytes(&bits, sig, sig_len));
	ck_assert(CBB_finish(&cbb, &out_der, &out_len));
	save_file(to, out_der, out_len);
	OPENSSL_free(out_der);
	OPENSSL_free(tbs_der);
	free(sig);
	EVP_PKEY_free(key);
	free(der);
}

START_TEST(request_matches_openssl)
{
	size_t a_len, b_len;
	uint8_t *a, *b;

	write_request("leaf.pem", "ours.der");
	sh("openssl ocsp -issuer ca.pem -cert leaf.pem -no_nonce -reqout "
	    "theirs.der");
	a = load_file("ours.der", &a_len);
	b = load_file("theirs.der", &b_len);
	ck_assert_uint_eq(a_len, b_len);
	ck_assert_mem_eq(a, b, a_len);
	free(a);
	free(b);
}
END_TEST

START_TEST(good_revoked_unknown)
{
	struct ocsp_result r;
	char err[256] = "";
	int64_t now = time(NULL);

	respond("leaf.pem", "ca", "good.der");
	ck_assert_msg(check("good.der", "leaf.pem", now, &r, err,
	    sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(r.status, OCSP_GOOD);
	ck_assert_int_le(r.this_update, now + 5);
	ck_assert_int_gt(r.next_update, now + 3600);
	respond("revoked.pem", "ca", "revoked.der");
	ck_assert_msg(check("revoked.der", "revoked.pem", now, &r, err,
	    sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(r.status, OCSP_REVOKED);
	ck_assert_int_gt(r.revoked_at, 0);
	respond("stranger.pem", "ca", "unknown.der");
	ck_assert_msg(check("unknown.der", "stranger.pem", now, &r, err,
	    sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(r.status, OCSP_UNKNOWN);
}
END_TEST

START_TEST(delegated_responders)
{
	struct ocsp_result r;
	char err[256] = "";

	respond("leaf.pem", "responder", "delegated.der");
	ck_assert_msg(check("delegated.der", "leaf.pem", time(NULL), &r, err,
	    sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(r.status, OCSP_GOOD);
	respond("leaf.pem", "noeku", "noeku.der");
	ck_assert_int_eq(check("noeku.der", "leaf.pem", time(NULL), &r, err,
	    sizeof(err)), -1);
	ck_assert_str_eq(err, "signed by a responder certificate without the "
	    "OCSP-signing extended key usage");
	respond("leaf.pem", "rogue", "rogue.der");
	ck_assert_int_eq(check("rogue.der", "leaf.pem", time(NULL), &r, err,
	    sizeof(err)), -1);
	ck_assert_str_eq(err, "not signed by the issuer or a responder it "
	    "authorized");
}
END_TEST

START_TEST(wrong_certificate_expired_and_garbage)
{
	struct ocsp_result r;
	char err[256] = "";
	uint8_t junk[] = { 0x30, 0x03, 0x0a, 0x01, 0x00 };
	X509 *l = load_cert("leaf.pem"), *ca = load_cert("ca.pem");

	respond("revoked.pem", "ca", "other.der");
	ck_assert_int_eq(check("other.der", "leaf.pem", time(NULL), &r, err,
	    sizeof(err)), -1);
	ck_assert_str_eq(err, "no response for this certificate (issuer name, "
	    "issuer key or serial differ)");
	respond("leaf.pem", "ca", "good2.der");
	ck_assert_int_eq(check("good2.der", "leaf.pem", time(NULL) + 2 * 86400,
	    &r, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "expired (nextUpdate has passed)");
	ck_assert_int_eq(check("good2.der", "leaf.pem", time(NULL) - 3600, &r,
	    err, sizeof(err)), -1);
	ck_assert_str_eq(err, "thisUpdate is in the future");
	ck_assert_int_eq(ocsp_check((const uint8_t *)"hello", 5, l, ca,
	    time(NULL), &r, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "not an OCSP response");
	/* A successful status without a body, and an error status. */
	ck_assert_int_eq(ocsp_check(junk, sizeof(junk), l, ca, time(NULL), &r,
	    err, sizeof(err)), -1);
	ck_assert_str_eq(err, "malformed response");
	junk[4] = 3;
	ck_assert_int_eq(ocsp_check(junk, sizeof(junk), l, ca, time(NULL), &r,
	    err, sizeof(err)), -1);
	ck_assert_str_eq(err, "responder answered tryLater");
	X509_free(l);
	X509_free(ca);
}
END_TEST

START_TEST(delegated_responder_needs_eku_and_validity)
{
	struct ocsp_result r;
	char err[256] = "";

	/* No extended key usage at all: any certificate the CA issued (a
	 * server's, say) could otherwise speak for the CA. */
	respond("leaf.pem", "bare", "bare.der");
	ck_assert_int_eq(check("bare.der", "leaf.pem", time(NULL), &r, err,
	    sizeof(err)), -1);
	ck_assert_str_eq(err, "signed by a responder certificate without the "
	    "OCSP-signing extended key usage");
	/* The responder's certificate, dated again: accepted while valid... */
	redate("responder.pem", -3600, 86400, "current.pem");
	sh("cp responder.key current.key");
	respond("leaf.pem", "current", "current.der");
	ck_assert_msg(check("current.der", "leaf.pem", time(NULL), &r, err,
	    sizeof(err)) == 0, "%s", err);
	/* ...refused once expired or before it starts. */
	redate("responder.pem", -2 * 86400, -86400, "expired.pem");
	sh("cp responder.key expired.key");
	respond("leaf.pem", "expired", "by-expired.der");
	ck_assert_int_eq(check("by-expired.der", "leaf.pem", time(NULL), &r,
	    err, sizeof(err)), -1);
	ck_assert_str_eq(err, "signed by a responder certificate that has "
	    "expired");
	redate("responder.pem", 86400, 2 * 86400, "notyet.pem");
	sh("cp responder.key notyet.key");
	respond("leaf.pem", "notyet", "by-notyet.der");
	ck_assert_int_eq(check("by-notyet.der", "leaf.pem", time(NULL), &r,
	    err, sizeof(err)), -1);
	ck_assert_str_eq(err, "signed by a responder certificate that is not "
	    "yet valid");
}
END_TEST

/* 2024-02-29T12:00:00Z */
#define LEAP_NOON 1709208000

START_TEST(times_range_checked)
{
	static const char *const bad[] = {
		"20241301000000Z", /* month 13 */
		"20240001000000Z", /* month 0 */
		"20240100000000Z", /* day 0 */
		"20240132000000Z", /* January 32 */
		"20240431000000Z", /* April 31 */
		"20230229000000Z", /* not a leap year */
		"21000229000000Z", /* nor is 2100 */
		"20240101240000Z", /* hour 24 */
		"20240101006000Z", /* minute 60 */
		"20240101000060Z", /* second 60 */
		"2024 101000000Z", /* blank in a field */
		"+0240101000000Z", /* sign */
		"2024010100000-1Z", /* sign, later */
		"20240101000000.Z", /* empty fraction */
		"20240101000000.5xZ", /* fraction not digits */
		"20240101000000ZZ", /* junk after */
		"20240101000000", /* no Z */
	};
	struct ocsp_result r;
	char err[256] = "";

	respond("leaf.pem", "ca", "base.der");
	/* The rewriter itself: a leap day, with and without a fraction. */
	retime("base.der", "20240229120000Z", "20240301120000Z", "leap.der");
	ck_assert_msg(check("leap.der", "leaf.pem", LEAP_NOON + 60, &r, err,
	    sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(r.this_update, LEAP_NOON);
	ck_assert_int_eq(r.next_update, LEAP_NOON + 86400);
	retime("base.der", "20240229120000.25Z", "20240301120000Z", "frac.der");
	ck_assert_msg(check("frac.der", "leaf.pem", LEAP_NOON + 60, &r, err,
	    sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(r.this_update, LEAP_NOON);
	retime("base.der", "20000229000000Z", "20000301000000Z", "y2k.der");
	ck_assert_msg(check("y2k.der", "leaf.pem", 951782400 + 60, &r, err,
	    sizeof(err)) == 0, "%s", err);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		retime("base.der", bad[i], "20240301120000Z", "bad.der");
		ck_assert_msg(check("bad.der", "leaf.pem", LEAP_NOON, &r, err,
		    sizeof(err)) == -1 && strcmp(err, "malformed single "
		    "response") == 0, "thisUpdate %s: %s", bad[i], err);
		retime("base.der", "20240229120000Z", bad[i], "bad.der");
		ck_assert_msg(check("bad.der", "leaf.pem", LEAP_NOON, &r, err,
		    sizeof(err)) == -1 && strcmp(err, "malformed single "
		    "response") == 0, "nextUpdate %s: %s", bad[i], err);
	}
	/* Well-formed, current, but ending before it starts. */
	retime("base.der", "20240229120000Z", "20240229115959Z", "back.der");
	ck_assert_int_eq(check("back.der", "leaf.pem", LEAP_NOON - 120, &r,
	    err, sizeof(err)), -1);
	ck_assert_str_eq(err, "nextUpdate is before thisUpdate");
}
END_TEST

START_TEST(cache_write_failure_closes_once)
{
	static const uint8_t der[] = { 0x30, 0x03, 0x0a, 0x01, 0x00 };
	char path[600], tmp[640];
	size_t len;
	uint8_t *back;
	int lowest;

	/* A directory where the response should go: the rename, the step
	 * after the temporary file is closed, fails. */
	snprintf(path, sizeof(path), "%s/cache-is-a-dir.der", dir);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	lowest = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(lowest, 0);
	close(lowest);
	rename_opens = 1;
	ck_assert_int_eq(ocsp_fetch_save(path, der, sizeof(der)), -1);
	ck_assert_int_eq(errno, EISDIR);
	/* The temporary file had the lowest free number, and the descriptor
	 * opened after its close got the same one: it must still be open. */
	ck_assert_int_eq(rename_opened, lowest);
	ck_assert_msg(fcntl(rename_opened, F_GETFD) != -1, "descriptor %d, "
	    "opened after the temporary file was closed, was closed too",
	    rename_opened);
	close(rename_opened);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	ck_assert_int_eq(access(tmp, F_OK), -1);
	/* And where it can go, it does. */
	ck_assert_int_eq(ocsp_fetch_save(dir_file("cached.der"), der,
	    sizeof(der)), 0);
	back = load_file("cached.der", &len);
	ck_assert_uint_eq(len, sizeof(der));
	ck_assert_mem_eq(back, der, len);
	free(back);
	ck_assert_int_eq(access(dir_file("cached.der.tmp"), F_OK), -1);
}
END_TEST

/* ocsp_generation builds a generation whose one context staples with
 * ocsp = auto for leaf.pem, from a responder that never answers. */
static struct generation *
ocsp_generation(void)
{
	struct config *cfg;
	struct generation *g;
	char text[2048];

	sh("cat leaf.pem ca.pem > chain.pem");
	snprintf(text, sizeof(text), "[global]\nresolver = 127.0.0.1\n"
	    "[listener l]\nbind = 127.0.0.1:1\ncontext = c\nbackend = b\n"
	    "[backend b]\naddress = 127.0.0.1:2\n"
	    "[context c]\ncert = %s/chain.pem\nkey = %s/leaf.key\n"
	    "ocsp = auto\nocsp_responder = http://127.0.0.1:1/\n", dir, dir);
	cfg = config_load_string("test.conf", text);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_msg(cfg->num_errors == 0, "%s", cfg->errors[0]);
	g = generation_build(cfg);
	ck_assert_msg(g != NULL, "%s", cfg->num_errors ? cfg->errors[0] : "?");
	return g;
}

static void
status_of(const struct ocsp_task_status *st, void *arg)
{
	struct ocsp_task_status *out = arg;

	ck_assert_int_eq(out->key_type, -1); /* one certificate only */
	*out = *st;
}

/* fetcher_plan syncs a new fetcher with |g| and returns what it then
 * shows of the certificate. */
static struct ocsp_task_status
fetcher_plan(struct event_base *base, const struct generation *g)
{
	struct ocsp_fetcher *f = ocsp_fetcher_new(base);
	struct ocsp_task_status st = { .key_type = -1 };

	ck_assert_ptr_nonnull(f);
	ocsp_fetcher_sync(f, g);
	ocsp_fetcher_foreach(f, status_of, &st);
	ck_assert_int_ne(st.key_type, -1);
	ocsp_fetcher_free(f);
	return st;
}

START_TEST(handed_over_staple_planned_not_fetched)
{
	struct generation *g = ocsp_generation();
	const struct tls_ctx *tc = &g->shared.contexts[0];
	struct event_base *base = event_base_new();
	struct ocsp_task_status st;
	int64_t now = (int64_t)time(NULL);
	uint8_t hash[32], *der;
	unsigned hlen;
	size_t len;
	int k = tc->leaf[TLS_KEY_ECDSA] != NULL ? TLS_KEY_ECDSA : TLS_KEY_RSA;

	ck_assert_ptr_nonnull(base);
	ck_assert_ptr_nonnull(tc->leaf[k]);
	ck_assert_int_eq(X509_digest(tc->leaf[k], EVP_sha256(), hash, &hlen),
	    1);
	/* Nothing stapled, nothing cached: a fetch at once. */
	st = fetcher_plan(base, g);
	ck_assert(!st.stapled);
	ck_assert_int_le(st.next_refresh, now + 1);

	/* The previous process stapled a response valid for a day. */
	respond("leaf.pem", "ca", "handed.der");
	der = load_file("handed.der", &len);
	ck_assert_int_eq(staple_restore(hash, der, len, now + 86400), 1);
	st = fetcher_plan(base, g);
	ck_assert(st.stapled);
	ck_assert(st.last_ok);
	ck_assert_int_eq(st.status, OCSP_GOOD);
	ck_assert_int_ge(st.this_update, now - OCSP_CLOCK_SKEW);
	ck_assert_int_ge(st.valid_until, now + 86400 - 60);
	/* Refreshed at about half the day, not now. */
	ck_assert_int_ge(st.next_refresh, now + 10 * 3600);
	ck_assert_int_le(st.next_refresh, now + 13 * 3600);
	ck_assert_uint_eq(staple_copy(tc->staple[k], der, 65536), len);
	free(der);
	generation_unref(g);
	event_base_free(base);
}
END_TEST

static const char setup_script[] =
    "set -e\n"
    "ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
    "-out $1.key; }\n"
    "ec ca; openssl req -x509 -new -key ca.key -out ca.pem -days 2 "
    "-subj '/CN=ocsp test CA'\n"
    "issue() {\n"
    "  ec $1; openssl req -new -key $1.key -out $1.csr -subj \"/CN=$1\"\n"
    "  printf \"$3\" > $1.ext\n"
    "  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca.key -set_serial $2 "
    "-days 2 -extfile $1.ext -out $1.pem\n"
    "}\n"
    "issue leaf 4097 'basicConstraints=CA:FALSE\\n'\n"
    "issue revoked 4098 'basicConstraints=CA:FALSE\\n'\n"
    "issue stranger 4099 'basicConstraints=CA:FALSE\\n'\n"
    "issue responder 4100 'extendedKeyUsage=OCSPSigning\\n'\n"
    "issue noeku 4101 'extendedKeyUsage=serverAuth\\n'\n"
    "issue bare 4103 'basicConstraints=CA:FALSE\\n'\n"
    "issue muststaple 4102 'tlsfeature=status_request\\n'\n"
    "ec rogue; openssl req -x509 -new -key rogue.key -out rogue.pem -days 2 "
    "-subj '/CN=rogue'\n"
    /* The responder's database: leaf valid, one revoked; 'stranger' is
     * absent, so its status is unknown. */
    "printf 'V\\t301231235959Z\\t\\t1001\\tunknown\\t/CN=leaf\\n"
    "R\\t301231235959Z\\t240101000000Z\\t1002\\tunknown\\t/CN=revoked\\n' "
    "> index.txt\n";

START_TEST(must_staple_detected)
{
	X509 *m = load_cert("muststaple.pem"), *l = load_cert("leaf.pem");

	ck_assert_int_eq(ocsp_must_staple(m), 1);
	ck_assert_int_eq(ocsp_must_staple(l), 0);
	X509_free(m);
	X509_free(l);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("ocsp");
	TCase *tc = tcase_create("der");
	const char *base = getenv("TLSPROXY_TEST_TMP");
	char cmd[5000];

	snprintf(dir, sizeof(dir), "%s/ocsp.%d", base ? base : "/tmp",
	    (int)getpid());
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cd '%s' && (%s) >log 2>&1",
	    dir, dir, setup_script);
	if (system(cmd) != 0) {
		fprintf(stderr, "making the OCSP fixtures failed; see %s/log\n",
		    dir);
		return 1;
	}
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, request_matches_openssl);
	tcase_add_test(tc, good_revoked_unknown);
	tcase_add_test(tc, delegated_responders);
	tcase_add_test(tc, delegated_responder_needs_eku_and_validity);
	tcase_add_test(tc, times_range_checked);
	tcase_add_test(tc, wrong_certificate_expired_and_garbage);
	tcase_add_test(tc, must_staple_detected);
	tcase_add_test(tc, cache_write_failure_closes_once);
	tcase_add_test(tc, handed_over_staple_planned_not_fetched);
	suite_add_tcase(s, tc);
	return check_run(s);
}
