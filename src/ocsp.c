/* ocsp.c: OCSP request encoding and response verification with CBB/CBS. */
#include "ocsp.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/obj.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* Object identifiers, as DER contents. */
static const uint8_t oid_sha1[] = { 0x2b, 0x0e, 0x03, 0x02, 0x1a };
static const uint8_t oid_sha256[] = { 0x60, 0x86, 0x48, 0x01, 0x65, 0x03,
	0x04, 0x02, 0x01 };
static const uint8_t oid_ocsp_basic[] = { 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07,
	0x30, 0x01, 0x01 };

/* Signature algorithms a response may use. */
static const struct {
	uint8_t oid[9];
	size_t oid_len;
	const EVP_MD *(*md)(void);
} sig_algs[] = {
	{ { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b }, 9, EVP_sha256 },
	{ { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c }, 9, EVP_sha384 },
	{ { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d }, 9, EVP_sha512 },
	{ { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05 }, 9, EVP_sha1 },
	{ { 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02 }, 8, EVP_sha256 },
	{ { 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03 }, 8, EVP_sha384 },
	{ { 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04 }, 8, EVP_sha512 },
};

#define TAG0 (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 0)
#define TAG1 (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 1)

/* ocsp_cert_hashes computes the CertID hashes of |issuer| with |md|. */
static int
ocsp_cert_hashes(X509 *issuer, const EVP_MD *md, uint8_t *name_hash,
    uint8_t *key_hash, unsigned *len)
{
	const uint8_t *name_der;
	size_t name_len;
	const ASN1_BIT_STRING *key = X509_get0_pubkey_bitstr(issuer);

	if (key == NULL ||
	    X509_NAME_get0_der(X509_get_subject_name(issuer), &name_der,
	    &name_len) != 1 ||
	    EVP_Digest(name_der, name_len, name_hash, len, md, NULL) != 1 ||
	    EVP_Digest(key->data, (size_t)key->length, key_hash, len, md,
	    NULL) != 1)
		return -1;
	return 0;
}

/* ocsp_serial returns the DER contents of |leaf|'s serial number. */
static int
ocsp_serial(X509 *leaf, uint8_t **out, size_t *out_len)
{
	uint8_t *der = NULL;
	int len = i2d_ASN1_INTEGER(X509_get_serialNumber(leaf), &der);
	CBS cbs, contents;

	if (len <= 0)
		return -1;
	CBS_init(&cbs, der, (size_t)len);
	if (!CBS_get_asn1(&cbs, &contents, CBS_ASN1_INTEGER) ||
	    !CBS_stow(&contents, out, out_len)) {
		OPENSSL_free(der);
		return -1;
	}
	OPENSSL_free(der);
	return 0;
}

int
ocsp_request(X509 *leaf, X509 *issuer, uint8_t **out, size_t *out_len)
{
	uint8_t name_hash[EVP_MAX_MD_SIZE], key_hash[EVP_MAX_MD_SIZE];
	uint8_t *serial = NULL;
	size_t serial_len;
	unsigned hash_len;
	CBB cbb, req, tbs, list, one, certid, alg, oid, s;
	int ok;

	if (ocsp_cert_hashes(issuer, EVP_sha1(), name_hash, key_hash,
	    &hash_len) != 0 || ocsp_serial(leaf, &serial, &serial_len) != 0)
		return -1;
	ok = CBB_init(&cbb, 128) &&
	    CBB_add_asn1(&cbb, &req, CBS_ASN1_SEQUENCE) &&
	    CBB_add_asn1(&req, &tbs, CBS_ASN1_SEQUENCE) &&
	    CBB_add_asn1(&tbs, &list, CBS_ASN1_SEQUENCE) &&
	    CBB_add_asn1(&list, &one, CBS_ASN1_SEQUENCE) &&
	    CBB_add_asn1(&one, &certid, CBS_ASN1_SEQUENCE) &&
	    CBB_add_asn1(&certid, &alg, CBS_ASN1_SEQUENCE) &&
	    CBB_add_asn1(&alg, &oid, CBS_ASN1_OBJECT) &&
	    CBB_add_bytes(&oid, oid_sha1, sizeof(oid_sha1)) &&
	    CBB_add_asn1(&alg, &s, CBS_ASN1_NULL) &&
	    CBB_flush(&certid) &&
	    CBB_add_asn1(&certid, &s, CBS_ASN1_OCTETSTRING) &&
	    CBB_add_bytes(&s, name_hash, hash_len) &&
	    CBB_add_asn1(&certid, &s, CBS_ASN1_OCTETSTRING) &&
	    CBB_add_bytes(&s, key_hash, hash_len) &&
	    CBB_add_asn1(&certid, &s, CBS_ASN1_INTEGER) &&
	    CBB_add_bytes(&s, serial, serial_len) &&
	    CBB_finish(&cbb, out, out_len);
	OPENSSL_free(serial);
	if (!ok) {
		CBB_cleanup(&cbb);
		return -1;
	}
	return 0;
}

/* ocsp_digits reads |n| decimal digits at |p|, or returns -1: sscanf's %d
 * would also take a sign or leading blanks. */
static int
ocsp_digits(const uint8_t *p, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

static int
ocsp_days_in_month(int year, int month)
{
	static const int days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31,
		30, 31 };

	if (month == 2 && year % 4 == 0 && (year % 100 != 0 || year % 400 == 0))
		return 29;
	return days[month - 1];
}

/* ocsp_time_contents parses the contents of a GeneralizedTime,
 * "YYYYMMDDHHMMSS[.fff]Z". Every field is range-checked: timegm would
 * quietly turn a 13th month or a 25th hour into some other valid time. */
static int
ocsp_time_contents(const CBS *t, int64_t *out)
{
	const uint8_t *p = CBS_data(t);
	size_t len = CBS_len(t);
	int year, mon, day, hour, min, sec;
	struct tm tm;

	if (len < 15 || p[len - 1] != 'Z')
		return -1;
	/* A fraction of a second, if any, is at least one digit. */
	if (len > 15) {
		if (p[14] != '.' || len == 16)
			return -1;
		for (size_t i = 15; i < len - 1; i++) {
			if (p[i] < '0' || p[i] > '9')
				return -1;
		}
	}
	year = ocsp_digits(p, 4);
	mon = ocsp_digits(p + 4, 2);
	day = ocsp_digits(p + 6, 2);
	hour = ocsp_digits(p + 8, 2);
	min = ocsp_digits(p + 10, 2);
	sec = ocsp_digits(p + 12, 2);
	if (year < 0 || mon < 1 || mon > 12 || day < 1 ||
	    day > ocsp_days_in_month(year, mon) || hour < 0 || hour > 23 ||
	    min < 0 || min > 59 || sec < 0 || sec > 59)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = year - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hour;
	tm.tm_min = min;
	tm.tm_sec = sec;
	*out = (int64_t)timegm(&tm);
	return 0;
}

/* ocsp_time reads a GeneralizedTime element. */
static int
ocsp_time(CBS *cbs, int64_t *out)
{
	CBS t;

	if (!CBS_get_asn1(cbs, &t, CBS_ASN1_GENERALIZEDTIME))
		return -1;
	return ocsp_time_contents(&t, out);
}

static const EVP_MD *
ocsp_sig_md(const CBS *oid)
{
	for (size_t i = 0; i < sizeof(sig_algs) / sizeof(sig_algs[0]); i++) {
		if (CBS_mem_equal(oid, sig_algs[i].oid, sig_algs[i].oid_len))
			return sig_algs[i].md();
	}
	return NULL;
}

static int
ocsp_verify_sig(EVP_PKEY *key, const EVP_MD *md, const CBS *tbs,
    const CBS *sig)
{
	EVP_MD_CTX ctx;
	int ok;

	EVP_MD_CTX_init(&ctx);
	ok = EVP_DigestVerifyInit(&ctx, NULL, md, NULL, key) == 1 &&
	    EVP_DigestVerify(&ctx, CBS_data(sig), CBS_len(sig), CBS_data(tbs),
	    CBS_len(tbs)) == 1;
	EVP_MD_CTX_cleanup(&ctx);
	return ok;
}

/* Why a delegated responder certificate was not accepted; the last one
 * tried is what the error names. */
enum ocsp_delegate {
	OCSP_DELEGATE_NONE,
	OCSP_DELEGATE_NO_EKU,
	OCSP_DELEGATE_NOT_YET_VALID,
	OCSP_DELEGATE_EXPIRED,
};

/* ocsp_delegate_check returns OCSP_DELEGATE_NONE if |x|, whose signature
 * by the issuer and over the response are already verified, may speak for
 * the issuer at |now|, else why not. */
static enum ocsp_delegate
ocsp_delegate_check(X509 *x, int64_t now)
{
	time_t t = (time_t)now;
	int cmp;

	/* Without the extension X509_get_extended_key_usage reports every
	 * purpose; RFC 6960 4.2.2.2 wants id-kp-OCSPSigning named. */
	if (!(X509_get_extension_flags(x) & EXFLAG_XKUSAGE) ||
	    !(X509_get_extended_key_usage(x) & XKU_OCSP_SIGN))
		return OCSP_DELEGATE_NO_EKU;
	/* X509_cmp_time returns 0 for a time it cannot read. */
	cmp = X509_cmp_time(X509_get0_notBefore(x), &t);
	if (cmp >= 0)
		return OCSP_DELEGATE_NOT_YET_VALID;
	cmp = X509_cmp_time(X509_get0_notAfter(x), &t);
	if (cmp <= 0)
		return OCSP_DELEGATE_EXPIRED;
	return OCSP_DELEGATE_NONE;
}

/* ocsp_signed_by checks the signature with |issuer|, else with one of the
 * response's certificates that |issuer| issued for OCSP signing and that
 * is valid at |now|. */
static int
ocsp_signed_by(X509 *issuer, const EVP_MD *md, const CBS *tbs,
    const CBS *sig, CBS *certs, int has_certs, int64_t now, char *err,
    size_t err_len)
{
	EVP_PKEY *ikey = X509_get_pubkey(issuer);
	enum ocsp_delegate refused = OCSP_DELEGATE_NONE;
	int ok = 0;

	if (ikey != NULL && ocsp_verify_sig(ikey, md, tbs, sig))
		ok = 1;
	while (!ok && has_certs && ikey != NULL && CBS_len(certs) > 0) {
		EVP_PKEY *rkey = NULL;
		const uint8_t *p;
		X509 *x;
		CBS der;

		if (!CBS_get_asn1_element(certs, &der, CBS_ASN1_SEQUENCE))
			break;
		p = CBS_data(&der);
		x = d2i_X509(NULL, &p, (long)CBS_len(&der));
		if (x == NULL)
			continue;
		if (X509_check_issued(issuer, x) == X509_V_OK &&
		    X509_verify(x, ikey) == 1 &&
		    (rkey = X509_get_pubkey(x)) != NULL &&
		    ocsp_verify_sig(rkey, md, tbs, sig)) {
			refused = ocsp_delegate_check(x, now);
			if (refused == OCSP_DELEGATE_NONE)
				ok = 1;
		}
		EVP_PKEY_free(rkey);
		X509_free(x);
	}
	EVP_PKEY_free(ikey);
	if (ok)
		return 0;
	switch (refused) {
	case OCSP_DELEGATE_NO_EKU:
		snprintf(err, err_len, "signed by a responder certificate "
		    "without the OCSP-signing extended key usage");
		break;
	case OCSP_DELEGATE_NOT_YET_VALID:
		snprintf(err, err_len, "signed by a responder certificate "
		    "that is not yet valid");
		break;
	case OCSP_DELEGATE_EXPIRED:
		snprintf(err, err_len, "signed by a responder certificate "
		    "that has expired");
		break;
	case OCSP_DELEGATE_NONE:
		snprintf(err, err_len, "not signed by the issuer or a "
		    "responder it authorized");
		break;
	}
	return -1;
}

/* ocsp_match_certid compares a CertID with |leaf| and |issuer|, in the
 * response's own hash algorithm (SHA-1 or SHA-256). */
static int
ocsp_match_certid(CBS *certid, X509 *leaf, X509 *issuer)
{
	uint8_t name_hash[EVP_MAX_MD_SIZE], key_hash[EVP_MAX_MD_SIZE];
	uint8_t *serial = NULL;
	size_t serial_len;
	unsigned hash_len;
	CBS alg, oid, nh, kh, sn;
	const EVP_MD *md;
	int match;

	if (!CBS_get_asn1(certid, &alg, CBS_ASN1_SEQUENCE) ||
	    !CBS_get_asn1(&alg, &oid, CBS_ASN1_OBJECT) ||
	    !CBS_get_asn1(certid, &nh, CBS_ASN1_OCTETSTRING) ||
	    !CBS_get_asn1(certid, &kh, CBS_ASN1_OCTETSTRING) ||
	    !CBS_get_asn1(certid, &sn, CBS_ASN1_INTEGER))
		return 0;
	if (CBS_mem_equal(&oid, oid_sha1, sizeof(oid_sha1)))
		md = EVP_sha1();
	else if (CBS_mem_equal(&oid, oid_sha256, sizeof(oid_sha256)))
		md = EVP_sha256();
	else
		return 0;
	if (ocsp_cert_hashes(issuer, md, name_hash, key_hash, &hash_len) != 0 ||
	    ocsp_serial(leaf, &serial, &serial_len) != 0)
		return 0;
	match = CBS_mem_equal(&nh, name_hash, hash_len) &&
	    CBS_mem_equal(&kh, key_hash, hash_len) &&
	    CBS_mem_equal(&sn, serial, serial_len);
	OPENSSL_free(serial);
	return match;
}

/* ocsp_single reads one SingleResponse into |out| if it is for |leaf|.
 * Returns 1 matched, 0 another certificate, -1 malformed. */
static int
ocsp_single(CBS *single, X509 *leaf, X509 *issuer, struct ocsp_result *out)
{
	CBS certid, status, next;
	unsigned tag;
	int has_next;

	if (!CBS_get_asn1(single, &certid, CBS_ASN1_SEQUENCE))
		return -1;
	if (!ocsp_match_certid(&certid, leaf, issuer))
		return 0;
	if (!CBS_get_any_asn1(single, &status, &tag))
		return -1;
	memset(out, 0, sizeof(*out));
	if (tag == (CBS_ASN1_CONTEXT_SPECIFIC | 0)) {
		out->status = OCSP_GOOD;
	} else if (tag == (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | 1)) {
		out->status = OCSP_REVOKED;
		if (ocsp_time(&status, &out->revoked_at) != 0)
			return -1;
	} else if (tag == (CBS_ASN1_CONTEXT_SPECIFIC | 2)) {
		out->status = OCSP_UNKNOWN;
	} else {
		return -1;
	}
	if (ocsp_time(single, &out->this_update) != 0 ||
	    !CBS_get_optional_asn1(single, &next, &has_next, TAG0))
		return -1;
	if (has_next && ocsp_time(&next, &out->next_update) != 0)
		return -1;
	return 1;
}

int
ocsp_check(const uint8_t *der, size_t der_len, X509 *leaf, X509 *issuer,
    int64_t now, struct ocsp_result *out, char *err, size_t err_len)
{
	CBS cbs, resp, bytes, body, type, basic_der, basic, tbs, data, sigalg,
	    sigoid, sig, certs, responses, ver, rid, produced;
	int64_t produced_at;
	uint64_t status;
	uint8_t unused;
	const EVP_MD *md;
	int has_bytes, has_certs, has_version, found = 0;
	unsigned tag;

	CBS_init(&cbs, der, der_len);
	if (!CBS_get_asn1(&cbs, &resp, CBS_ASN1_SEQUENCE)) {
		snprintf(err, err_len, "not an OCSP response");
		return -1;
	}
	{
		CBS e;

		if (!CBS_get_asn1(&resp, &e, CBS_ASN1_ENUMERATED) ||
		    CBS_len(&e) != 1) {
			snprintf(err, err_len, "not an OCSP response");
			return -1;
		}
		status = CBS_data(&e)[0];
	}
	if (status != 0) {
		static const char *const names[] = { "successful",
			"malformedRequest", "internalError", "tryLater", "?",
			"sigRequired", "unauthorized" };

		snprintf(err, err_len, "responder answered %s",
		    status < 7 ? names[status] : "an unknown status");
		return -1;
	}
	if (!CBS_get_optional_asn1(&resp, &bytes, &has_bytes, TAG0) ||
	    !has_bytes || !CBS_get_asn1(&bytes, &body, CBS_ASN1_SEQUENCE) ||
	    !CBS_get_asn1(&body, &type, CBS_ASN1_OBJECT) ||
	    !CBS_get_asn1(&body, &basic_der, CBS_ASN1_OCTETSTRING)) {
		snprintf(err, err_len, "malformed response");
		return -1;
	}
	if (!CBS_mem_equal(&type, oid_ocsp_basic, sizeof(oid_ocsp_basic))) {
		snprintf(err, err_len, "not a basic OCSP response");
		return -1;
	}
	if (!CBS_get_asn1(&basic_der, &basic, CBS_ASN1_SEQUENCE) ||
	    !CBS_get_asn1_element(&basic, &tbs, CBS_ASN1_SEQUENCE) ||
	    !CBS_get_asn1(&basic, &sigalg, CBS_ASN1_SEQUENCE) ||
	    !CBS_get_asn1(&sigalg, &sigoid, CBS_ASN1_OBJECT) ||
	    !CBS_get_asn1(&basic, &sig, CBS_ASN1_BITSTRING) ||
	    !CBS_get_u8(&sig, &unused) || unused != 0 ||
	    !CBS_get_optional_asn1(&basic, &certs, &has_certs, TAG0)) {
		snprintf(err, err_len, "malformed basic response");
		return -1;
	}
	if (has_certs && !CBS_get_asn1(&certs, &certs, CBS_ASN1_SEQUENCE)) {
		snprintf(err, err_len, "malformed responder certificates");
		return -1;
	}
	if ((md = ocsp_sig_md(&sigoid)) == NULL) {
		snprintf(err, err_len, "unsupported signature algorithm");
		return -1;
	}
	/* ResponseData: [0] version, responderID, producedAt, responses. */
	data = tbs;
	if (!CBS_get_asn1(&data, &data, CBS_ASN1_SEQUENCE) ||
	    !CBS_get_optional_asn1(&data, &ver, &has_version, TAG0) ||
	    !CBS_get_any_asn1(&data, &rid, &tag) ||
	    !CBS_get_asn1(&data, &produced, CBS_ASN1_GENERALIZEDTIME) ||
	    ocsp_time_contents(&produced, &produced_at) != 0 ||
	    !CBS_get_asn1(&data, &responses, CBS_ASN1_SEQUENCE)) {
		snprintf(err, err_len, "malformed response data");
		return -1;
	}
	while (CBS_len(&responses) > 0) {
		CBS single;
		int r;

		if (!CBS_get_asn1(&responses, &single, CBS_ASN1_SEQUENCE) ||
		    (r = ocsp_single(&single, leaf, issuer, out)) < 0) {
			snprintf(err, err_len, "malformed single response");
			return -1;
		}
		if (r == 1) {
			found = 1;
			break;
		}
	}
	if (!found) {
		snprintf(err, err_len, "no response for this certificate "
		    "(issuer name, issuer key or serial differ)");
		return -1;
	}
	/* Parsed first (it is only parsing), verified before any of it is
	 * believed. */
	if (ocsp_signed_by(issuer, md, &tbs, &sig, &certs, has_certs, now, err,
	    err_len) != 0)
		return -1;
	if (out->next_update != 0 && out->next_update < out->this_update) {
		snprintf(err, err_len, "nextUpdate is before thisUpdate");
		return -1;
	}
	if (out->this_update > now + OCSP_CLOCK_SKEW) {
		snprintf(err, err_len, "thisUpdate is in the future");
		return -1;
	}
	if ((out->next_update != 0 && now >= out->next_update) ||
	    (out->next_update == 0 &&
	    now >= out->this_update + OCSP_NO_NEXT_UPDATE_VALIDITY)) {
		snprintf(err, err_len, "expired (nextUpdate has passed)");
		return -1;
	}
	return 0;
}

int
ocsp_must_staple(X509 *cert)
{
	/* id-pe-tlsfeature, 1.3.6.1.5.5.7.1.24, has no NID in BoringSSL. */
	static const uint8_t oid_tlsfeature[] = { 0x2b, 0x06, 0x01, 0x05, 0x05,
		0x07, 0x01, 0x18 };

	for (int i = 0; i < X509_get_ext_count(cert); i++) {
		X509_EXTENSION *ext = X509_get_ext(cert, i);
		const ASN1_OBJECT *obj = X509_EXTENSION_get_object(ext);
		const ASN1_OCTET_STRING *value = X509_EXTENSION_get_data(ext);
		CBS cbs, features;

		if (OBJ_length(obj) != sizeof(oid_tlsfeature) ||
		    memcmp(OBJ_get0_data(obj), oid_tlsfeature,
		    sizeof(oid_tlsfeature)) != 0)
			continue;
		CBS_init(&cbs, ASN1_STRING_get0_data(value),
		    (size_t)ASN1_STRING_length(value));
		if (!CBS_get_asn1(&cbs, &features, CBS_ASN1_SEQUENCE))
			return 0;
		while (CBS_len(&features) > 0) {
			uint64_t feature;

			if (!CBS_get_asn1_uint64(&features, &feature))
				return 0;
			if (feature == 5) /* status_request */
				return 1;
		}
	}
	return 0;
}

char *
ocsp_responder_url(X509 *leaf)
{
	AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(leaf, NID_info_access,
	    NULL, NULL);
	char *url = NULL;

	for (size_t i = 0; aia != NULL && i < sk_ACCESS_DESCRIPTION_num(aia);
	    i++) {
		ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(aia, i);

		if (OBJ_obj2nid(ad->method) == NID_ad_OCSP &&
		    ad->location->type == GEN_URI) {
			const ASN1_STRING *u = ad->location->d.uniformResourceIdentifier;

			url = strndup((const char *)ASN1_STRING_get0_data(u),
			    (size_t)ASN1_STRING_length(u));
			break;
		}
	}
	AUTHORITY_INFO_ACCESS_free(aia);
	return url;
}
