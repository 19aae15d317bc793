/* acme_jose.c: JOSE (JWK, JWS, EAB) and certificate pieces of the ACME
 * client. DER is built with CBB, signatures made with EVP_DigestSign. */
#include "acme_jose.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "atomic_file.h"

/* Object identifiers, in dotted form for CBB_add_asn1_oid_from_text. */
#define OID_CN "2.5.4.3"
#define OID_SAN "2.5.29.17"
#define OID_ECDSA_SHA256 "1.2.840.10045.4.3.2"
#define OID_RSA_SHA256 "1.2.840.113549.1.1.11"
#define OID_EXTENSION_REQUEST "1.2.840.113549.1.9.14"
#define OID_ACME_IDENTIFIER "1.3.6.1.5.5.7.1.31"

/* [n], constructed: EXPLICIT tags, and IMPLICIT ones over a SET or
 * SEQUENCE. */
#define TAG_CONS(n) (CBS_ASN1_CONTEXT_SPECIFIC | CBS_ASN1_CONSTRUCTED | (n))
#define TAG_DNS_NAME (CBS_ASN1_CONTEXT_SPECIFIC | 2)

/* The longest CN X.520 allows (ub-common-name), and DNS name. */
#define CN_MAX 64
#define DNS_NAME_MAX 253

/* Keys larger than this are not PEM files we wrote. */
#define KEY_FILE_MAX (64 * 1024)

/* ---- base64url ---- */

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *
acme_b64url(const uint8_t *data, size_t len)
{
	size_t out_len, o = 0, i = 0;
	char *out;

	if (len > (SIZE_MAX / 4 - 1) * 3)
		return NULL;
	out_len = len / 3 * 4 + (len % 3 != 0 ? len % 3 + 1 : 0);
	if ((out = malloc(out_len + 1)) == NULL)
		return NULL;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 |
		    data[i + 2];

		out[o++] = b64url_alphabet[v >> 18];
		out[o++] = b64url_alphabet[(v >> 12) & 63];
		out[o++] = b64url_alphabet[(v >> 6) & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (len - i == 1) {
		out[o++] = b64url_alphabet[data[i] >> 2];
		out[o++] = b64url_alphabet[(data[i] & 3) << 4];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)data[i] << 8 | data[i + 1];

		out[o++] = b64url_alphabet[v >> 10];
		out[o++] = b64url_alphabet[(v >> 4) & 63];
		out[o++] = b64url_alphabet[(v & 15) << 2];
	}
	out[o] = '\0';
	return out;
}

static int
b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int
acme_b64url_decode(const char *s, uint8_t **out, size_t *out_len)
{
	size_t n = strlen(s), pad = 0, m, o = 0;
	uint32_t acc = 0;
	unsigned bits = 0;
	uint8_t *buf;

	while (pad < n && s[n - pad - 1] == '=')
		pad++;
	m = n - pad;
	if (m % 4 == 1)
		return -1;
	/* Padding, when present, must be exactly what completes the last
	 * quantum: two '=' after 2 characters, one after 3. */
	if (pad != 0 && pad != (4 - m % 4) % 4)
		return -1;
	if ((buf = malloc(m / 4 * 3 + 3)) == NULL)
		return -1;
	for (size_t i = 0; i < m; i++) {
		int v = b64url_value(s[i]);

		if (v < 0) {
			free(buf);
			return -1;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* The bits of the last character beyond the final byte must be
	 * zero: every byte string has exactly one encoding. */
	if (acc != 0) {
		free(buf);
		return -1;
	}
	*out = buf;
	*out_len = o;
	return 0;
}

/* ---- keys ---- */

EVP_PKEY *
acme_key_new(enum acme_key_type type)
{
	EVP_PKEY *pkey = EVP_PKEY_new();
	EC_KEY *ec = NULL;
	RSA *rsa = NULL;
	BIGNUM *e = NULL;

	if (pkey == NULL)
		goto fail;
	if (type == ACME_KEY_ECDSA) {
		if ((ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1)) ==
		    NULL || !EC_KEY_generate_key(ec) ||
		    !EVP_PKEY_assign_EC_KEY(pkey, ec))
			goto fail;
		return pkey;
	}
	if (type == ACME_KEY_RSA) {
		if ((rsa = RSA_new()) == NULL || (e = BN_new()) == NULL ||
		    !BN_set_word(e, RSA_F4) ||
		    !RSA_generate_key_ex(rsa, 2048, e, NULL) ||
		    !EVP_PKEY_assign_RSA(pkey, rsa))
			goto fail;
		BN_free(e);
		return pkey;
	}
fail:
	EC_KEY_free(ec);
	RSA_free(rsa);
	BN_free(e);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return NULL;
}

/* is_p256 returns whether |key| is an EC key on P-256. */
static int
is_p256(const EVP_PKEY *key)
{
	const EC_KEY *ec;

	if (EVP_PKEY_id(key) != EVP_PKEY_EC ||
	    (ec = EVP_PKEY_get0_EC_KEY(key)) == NULL ||
	    EC_KEY_get0_group(ec) == NULL)
		return 0;
	return EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) ==
	    NID_X9_62_prime256v1 && EC_KEY_get0_public_key(ec) != NULL;
}

/* is_rsa returns whether |key| is an RSA key with a modulus and
 * exponent (of any size). */
static int
is_rsa(const EVP_PKEY *key)
{
	const RSA *rsa;

	return EVP_PKEY_id(key) == EVP_PKEY_RSA &&
	    (rsa = EVP_PKEY_get0_RSA(key)) != NULL &&
	    RSA_get0_n(rsa) != NULL && RSA_get0_e(rsa) != NULL;
}

int
acme_key_type_of(const EVP_PKEY *key, enum acme_key_type *out)
{
	if (key == NULL)
		return -1;
	if (is_p256(key)) {
		*out = ACME_KEY_ECDSA;
		return 0;
	}
	if (is_rsa(key) && RSA_bits(EVP_PKEY_get0_RSA(key)) >= 2048) {
		*out = ACME_KEY_RSA;
		return 0;
	}
	return -1;
}

/* ---- JWK ---- */

/* set_b64 sets |name| in |obj| to base64url(|data|). */
static int
set_b64(json_t *obj, const char *name, const uint8_t *data, size_t len)
{
	char *s = acme_b64url(data, len);
	int rc;

	if (s == NULL)
		return -1;
	rc = json_object_set_new(obj, name, json_string(s));
	free(s);
	return rc;
}

static int
set_str(json_t *obj, const char *name, const char *value)
{
	return json_object_set_new(obj, name, json_string(value));
}

/* set_bn sets |name| to the minimal big-endian base64url of |bn|. */
static int
set_bn(json_t *obj, const char *name, const BIGNUM *bn)
{
	size_t len = BN_num_bytes(bn);
	uint8_t *buf = malloc(len > 0 ? len : 1);
	int rc;

	if (buf == NULL)
		return -1;
	BN_bn2bin(bn, buf);
	rc = set_b64(obj, name, buf, len);
	free(buf);
	return rc;
}

json_t *
acme_jwk(const EVP_PKEY *key)
{
	json_t *jwk;

	if (key == NULL || (jwk = json_object()) == NULL)
		return NULL;
	if (is_p256(key)) {
		const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(key);
		uint8_t pt[65];

		/* Uncompressed: 0x04 || x || y, each 32 bytes. */
		if (EC_POINT_point2oct(EC_KEY_get0_group(ec),
		    EC_KEY_get0_public_key(ec), POINT_CONVERSION_UNCOMPRESSED,
		    pt, sizeof(pt), NULL) != sizeof(pt) ||
		    set_str(jwk, "crv", "P-256") != 0 ||
		    set_str(jwk, "kty", "EC") != 0 ||
		    set_b64(jwk, "x", pt + 1, 32) != 0 ||
		    set_b64(jwk, "y", pt + 33, 32) != 0)
			goto fail;
		return jwk;
	}
	if (is_rsa(key)) {
		const RSA *rsa = EVP_PKEY_get0_RSA(key);

		if (set_bn(jwk, "e", RSA_get0_e(rsa)) != 0 ||
		    set_str(jwk, "kty", "RSA") != 0 ||
		    set_bn(jwk, "n", RSA_get0_n(rsa)) != 0)
			goto fail;
		return jwk;
	}
fail:
	json_decref(jwk);
	ERR_clear_error();
	return NULL;
}

/* canonical_json dumps |j| with sorted members and no whitespace, the
 * form RFC 7638 hashes (the JWK holds only strings from our alphabet). */
static char *
canonical_json(const json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
}

char *
acme_thumbprint(const EVP_PKEY *key)
{
	json_t *jwk = acme_jwk(key);
	uint8_t digest[SHA256_DIGEST_LENGTH];
	char *text;

	if (jwk == NULL)
		return NULL;
	text = canonical_json(jwk);
	json_decref(jwk);
	if (text == NULL)
		return NULL;
	SHA256((const uint8_t *)text, strlen(text), digest);
	free(text);
	return acme_b64url(digest, sizeof(digest));
}

/* ---- signatures ---- */

/* sign signs |data| with SHA-256 under |key|. An ECDSA signature comes
 * back as DER unless |raw|, then as r||s (32 bytes each, JWS). Returns
 * a malloc'd buffer, or NULL. */
static uint8_t *
sign(EVP_PKEY *key, const uint8_t *data, size_t len, int raw,
    size_t *out_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t *sig = NULL, *rs = NULL;
	ECDSA_SIG *esig = NULL;
	size_t sig_len = 0;

	if (ctx == NULL ||
	    !EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) ||
	    !EVP_DigestSign(ctx, NULL, &sig_len, data, len) ||
	    (sig = malloc(sig_len)) == NULL ||
	    !EVP_DigestSign(ctx, sig, &sig_len, data, len))
		goto fail;
	EVP_MD_CTX_free(ctx);
	ctx = NULL;
	if (!raw || EVP_PKEY_id(key) != EVP_PKEY_EC) {
		*out_len = sig_len;
		return sig;
	}
	if (!is_p256(key) ||
	    (esig = ECDSA_SIG_from_bytes(sig, sig_len)) == NULL ||
	    (rs = malloc(64)) == NULL ||
	    !BN_bn2bin_padded(rs, 32, ECDSA_SIG_get0_r(esig)) ||
	    !BN_bn2bin_padded(rs + 32, 32, ECDSA_SIG_get0_s(esig)))
		goto fail;
	ECDSA_SIG_free(esig);
	free(sig);
	*out_len = 64;
	return rs;
fail:
	EVP_MD_CTX_free(ctx);
	ECDSA_SIG_free(esig);
	free(sig);
	free(rs);
	ERR_clear_error();
	return NULL;
}

/* b64url_json returns base64url of |j| dumped compactly (sorted). */
static char *
b64url_json(const json_t *j)
{
	char *text = canonical_json(j), *b;

	if (text == NULL)
		return NULL;
	b = acme_b64url((const uint8_t *)text, strlen(text));
	free(text);
	return b;
}

/* signing_input returns "|a|.|b|". */
static char *
signing_input(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 2);

	if (s == NULL)
		return NULL;
	memcpy(s, a, la);
	s[la] = '.';
	memcpy(s + la + 1, b, lb + 1);
	return s;
}

/* flattened returns the flattened JWS object {"protected","payload",
 * "signature"}. */
static json_t *
flattened(const char *protected_b64, const char *payload_b64,
    const uint8_t *sig, size_t sig_len)
{
	json_t *jws = json_object();

	if (jws == NULL)
		return NULL;
	if (set_str(jws, "protected", protected_b64) != 0 ||
	    set_str(jws, "payload", payload_b64) != 0 ||
	    set_b64(jws, "signature", sig, sig_len) != 0) {
		json_decref(jws);
		return NULL;
	}
	return jws;
}

char *
acme_jws(EVP_PKEY *account_key, const char *kid, const char *nonce,
    const char *url, const char *payload)
{
	json_t *prot = NULL, *jws = NULL;
	char *prot_b64 = NULL, *payload_b64 = NULL, *input = NULL;
	char *out = NULL;
	uint8_t *sig = NULL;
	size_t sig_len;
	const char *alg;

	if (account_key == NULL || nonce == NULL || url == NULL)
		return NULL;
	if (is_p256(account_key))
		alg = "ES256";
	else if (is_rsa(account_key))
		alg = "RS256";
	else
		return NULL;
	if ((prot = json_object()) == NULL || set_str(prot, "alg", alg) != 0)
		goto done;
	if (kid != NULL) {
		if (set_str(prot, "kid", kid) != 0)
			goto done;
	} else if (json_object_set_new(prot, "jwk",
	    acme_jwk(account_key)) != 0) {
		goto done;
	}
	if (set_str(prot, "nonce", nonce) != 0 ||
	    set_str(prot, "url", url) != 0 ||
	    (prot_b64 = b64url_json(prot)) == NULL)
		goto done;
	if (payload == NULL)
		payload = "";
	if ((payload_b64 = acme_b64url((const uint8_t *)payload,
	    strlen(payload))) == NULL ||
	    (input = signing_input(prot_b64, payload_b64)) == NULL ||
	    (sig = sign(account_key, (const uint8_t *)input, strlen(input), 1,
	    &sig_len)) == NULL ||
	    (jws = flattened(prot_b64, payload_b64, sig, sig_len)) == NULL)
		goto done;
	out = json_dumps(jws, JSON_COMPACT);
done:
	json_decref(prot);
	json_decref(jws);
	free(prot_b64);
	free(payload_b64);
	free(input);
	free(sig);
	return out;
}

json_t *
acme_eab(EVP_PKEY *account_key, const char *eab_kid, const uint8_t *hmac_key,
    size_t hmac_key_len, const char *new_account_url)
{
	json_t *prot = NULL, *jwk = NULL, *jws = NULL;
	char *prot_b64 = NULL, *payload_b64 = NULL, *input = NULL;
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned mac_len = 0;

	if (account_key == NULL || eab_kid == NULL || hmac_key == NULL ||
	    hmac_key_len == 0 || new_account_url == NULL)
		return NULL;
	if ((jwk = acme_jwk(account_key)) == NULL ||
	    (prot = json_object()) == NULL ||
	    set_str(prot, "alg", "HS256") != 0 ||
	    set_str(prot, "kid", eab_kid) != 0 ||
	    set_str(prot, "url", new_account_url) != 0 ||
	    (prot_b64 = b64url_json(prot)) == NULL ||
	    (payload_b64 = b64url_json(jwk)) == NULL ||
	    (input = signing_input(prot_b64, payload_b64)) == NULL)
		goto done;
	if (HMAC(EVP_sha256(), hmac_key, hmac_key_len, (const uint8_t *)input,
	    strlen(input), mac, &mac_len) == NULL) {
		ERR_clear_error();
		goto done;
	}
	jws = flattened(prot_b64, payload_b64, mac, mac_len);
done:
	OPENSSL_cleanse(mac, sizeof(mac));
	json_decref(prot);
	json_decref(jwk);
	free(prot_b64);
	free(payload_b64);
	free(input);
	return jws;
}

char *
acme_key_authorization(const char *token, const EVP_PKEY *account_key)
{
	char *tp, *out;

	/* Tokens are base64url (RFC 8555 section 8.3 and 8.4): anything
	 * else could not be served safely under /.well-known. */
	if (token == NULL || *token == '\0')
		return NULL;
	for (const char *p = token; *p != '\0'; p++) {
		if (b64url_value(*p) < 0)
			return NULL;
	}
	if ((tp = acme_thumbprint(account_key)) == NULL)
		return NULL;
	out = signing_input(token, tp);
	free(tp);
	return out;
}

/* ---- DER: names, extensions, signed structures ---- */

/* valid_dns_name accepts what a certificate's dNSName may carry here:
 * letters, digits, '-', '.', '_' and a '*' for wildcards (IDNs come as
 * A-labels), at most 253 characters. */
static int
valid_dns_name(const char *s)
{
	size_t n = 0;

	if (s == NULL)
		return 0;
	for (; s[n] != '\0'; n++) {
		char c = s[n];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '*'))
			return 0;
	}
	return n >= 1 && n <= DNS_NAME_MAX;
}

/* add_oid appends the OBJECT IDENTIFIER |text| (dotted). */
static int
add_oid(CBB *cbb, const char *text)
{
	CBB oid;

	return CBB_add_asn1(cbb, &oid, CBS_ASN1_OBJECT) &&
	    CBB_add_asn1_oid_from_text(&oid, text, strlen(text)) &&
	    CBB_flush(cbb);
}

/* add_name appends a Name: CN=|cn|, or the empty Name for NULL. */
static int
add_name(CBB *cbb, const char *cn)
{
	CBB name, rdn, atv, value;

	if (!CBB_add_asn1(cbb, &name, CBS_ASN1_SEQUENCE))
		return 0;
	if (cn != NULL) {
		if (!CBB_add_asn1(&name, &rdn, CBS_ASN1_SET) ||
		    !CBB_add_asn1(&rdn, &atv, CBS_ASN1_SEQUENCE) ||
		    !add_oid(&atv, OID_CN) ||
		    !CBB_add_asn1(&atv, &value, CBS_ASN1_UTF8STRING) ||
		    !CBB_add_bytes(&value, (const uint8_t *)cn, strlen(cn)))
			return 0;
	}
	return CBB_flush(cbb);
}

/* add_san_ext appends the subjectAltName Extension (not critical)
 * listing |names| as dNSNames. */
static int
add_san_ext(CBB *exts, const char *const *names, size_t num_names)
{
	CBB ext, value, gns, gn;

	if (!CBB_add_asn1(exts, &ext, CBS_ASN1_SEQUENCE) ||
	    !add_oid(&ext, OID_SAN) ||
	    !CBB_add_asn1(&ext, &value, CBS_ASN1_OCTETSTRING) ||
	    !CBB_add_asn1(&value, &gns, CBS_ASN1_SEQUENCE))
		return 0;
	for (size_t i = 0; i < num_names; i++) {
		if (!CBB_add_asn1(&gns, &gn, TAG_DNS_NAME) ||
		    !CBB_add_bytes(&gn, (const uint8_t *)names[i],
		    strlen(names[i])))
			return 0;
	}
	return CBB_flush(exts);
}

/* add_sig_alg appends the AlgorithmIdentifier of a SHA-256 signature by
 * |key|. */
static int
add_sig_alg(CBB *cbb, const EVP_PKEY *key)
{
	CBB alg, null;

	if (!CBB_add_asn1(cbb, &alg, CBS_ASN1_SEQUENCE))
		return 0;
	if (EVP_PKEY_id(key) == EVP_PKEY_EC) {
		if (!add_oid(&alg, OID_ECDSA_SHA256))
			return 0;
	} else {
		/* RFC 4055: the parameters are NULL, and present. */
		if (!add_oid(&alg, OID_RSA_SHA256) ||
		    !CBB_add_asn1(&alg, &null, CBS_ASN1_NULL))
			return 0;
	}
	return CBB_flush(cbb);
}

/* finish_signed turns the to-be-signed SEQUENCE in |tbs_cbb| into
 * SEQUENCE { tbs, signatureAlgorithm, BIT STRING signature } under
 * |key|. Returns the DER for OPENSSL_free(), or NULL; |tbs_cbb| is
 * cleaned up either way. */
static uint8_t *
finish_signed(CBB *tbs_cbb, EVP_PKEY *key, size_t *out_len)
{
	uint8_t *tbs = NULL, *sig = NULL, *der = NULL;
	size_t tbs_len, sig_len;
	CBB cbb, seq, bits;

	if (!CBB_finish(tbs_cbb, &tbs, &tbs_len)) {
		CBB_cleanup(tbs_cbb);
		ERR_clear_error();
		return NULL;
	}
	if ((sig = sign(key, tbs, tbs_len, 0, &sig_len)) == NULL) {
		OPENSSL_free(tbs);
		return NULL;
	}
	if (!CBB_init(&cbb, tbs_len + sig_len + 64) ||
	    !CBB_add_asn1(&cbb, &seq, CBS_ASN1_SEQUENCE) ||
	    !CBB_add_bytes(&seq, tbs, tbs_len) ||
	    !add_sig_alg(&seq, key) ||
	    !CBB_add_asn1(&seq, &bits, CBS_ASN1_BITSTRING) ||
	    !CBB_add_u8(&bits, 0) ||
	    !CBB_add_bytes(&bits, sig, sig_len) ||
	    !CBB_finish(&cbb, &der, out_len)) {
		CBB_cleanup(&cbb);
		der = NULL;
		ERR_clear_error();
	}
	OPENSSL_free(tbs);
	free(sig);
	return der;
}

uint8_t *
acme_csr(EVP_PKEY *cert_key, const char *const *names, size_t num_names,
    size_t *out_len)
{
	CBB cbb, info, attrs, attr, values, exts;
	enum acme_key_type type;
	const char *cn;

	if (names == NULL || num_names == 0 ||
	    acme_key_type_of(cert_key, &type) != 0)
		return NULL;
	for (size_t i = 0; i < num_names; i++) {
		if (!valid_dns_name(names[i]))
			return NULL;
	}
	cn = strlen(names[0]) <= CN_MAX ? names[0] : NULL;
	if (!CBB_init(&cbb, 512))
		return NULL;
	/* CertificationRequestInfo: version 0, subject, SPKI, and the
	 * attributes [0]: one extensionRequest holding the SAN. */
	if (!CBB_add_asn1(&cbb, &info, CBS_ASN1_SEQUENCE) ||
	    !CBB_add_asn1_uint64(&info, 0) ||
	    !add_name(&info, cn) ||
	    !EVP_marshal_public_key(&info, cert_key) ||
	    !CBB_add_asn1(&info, &attrs, TAG_CONS(0)) ||
	    !CBB_add_asn1(&attrs, &attr, CBS_ASN1_SEQUENCE) ||
	    !add_oid(&attr, OID_EXTENSION_REQUEST) ||
	    !CBB_add_asn1(&attr, &values, CBS_ASN1_SET) ||
	    !CBB_add_asn1(&values, &exts, CBS_ASN1_SEQUENCE) ||
	    !add_san_ext(&exts, names, num_names) ||
	    !CBB_flush(&cbb)) {
		CBB_cleanup(&cbb);
		ERR_clear_error();
		return NULL;
	}
	return finish_signed(&cbb, cert_key, out_len);
}

/* add_time appends |t| as UTCTime (years 1950-2049) or GeneralizedTime,
 * as RFC 5280 section 4.1.2.5 requires. */
static int
add_time(CBB *cbb, time_t t)
{
	struct tm tm;
	char buf[32];
	CBB child;
	int year, n;

	if (gmtime_r(&t, &tm) == NULL)
		return 0;
	year = tm.tm_year + 1900;
	if (year >= 1950 && year < 2050) {
		n = snprintf(buf, sizeof(buf), "%02d%02d%02d%02d%02d%02dZ",
		    year % 100, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		    tm.tm_min, tm.tm_sec);
		if (!CBB_add_asn1(cbb, &child, CBS_ASN1_UTCTIME))
			return 0;
	} else {
		if (year < 0 || year > 9999)
			return 0;
		n = snprintf(buf, sizeof(buf), "%04d%02d%02d%02d%02d%02dZ",
		    year, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		    tm.tm_sec);
		if (!CBB_add_asn1(cbb, &child, CBS_ASN1_GENERALIZEDTIME))
			return 0;
	}
	return n > 0 && CBB_add_bytes(&child, (const uint8_t *)buf,
	    (size_t)n) && CBB_flush(cbb);
}

/* The tls-alpn-01 certificate's issuer and subject. */
#define ALPN_CERT_CN "ACME tls-alpn-01 challenge"

int
acme_alpn_cert(const char *name, const char *key_authorization,
    CRYPTO_BUFFER_POOL *pool, CRYPTO_BUFFER **out_cert, EVP_PKEY **out_key)
{
	uint8_t digest[SHA256_DIGEST_LENGTH], serial[16], *der = NULL;
	CBB cbb, tbs, version, serial_cbb, validity, exts_wrap, exts, ext;
	CBB value;
	EVP_PKEY *key = NULL;
	size_t der_len;
	time_t now = time(NULL);

	*out_cert = NULL;
	*out_key = NULL;
	if (!valid_dns_name(name) || key_authorization == NULL)
		return -1;
	SHA256((const uint8_t *)key_authorization, strlen(key_authorization),
	    digest);
	/* A positive serial in minimal DER: 16 random bytes, the first
	 * 0x01-0x7f. */
	RAND_bytes(serial, sizeof(serial));
	serial[0] &= 0x7f;
	if (serial[0] == 0)
		serial[0] = 1;
	if ((key = acme_key_new(ACME_KEY_ECDSA)) == NULL)
		return -1;
	if (!CBB_init(&cbb, 512))
		goto fail;
	if (!CBB_add_asn1(&cbb, &tbs, CBS_ASN1_SEQUENCE) ||
	    !CBB_add_asn1(&tbs, &version, TAG_CONS(0)) ||
	    !CBB_add_asn1_uint64(&version, 2) ||
	    !CBB_add_asn1(&tbs, &serial_cbb, CBS_ASN1_INTEGER) ||
	    !CBB_add_bytes(&serial_cbb, serial, sizeof(serial)) ||
	    !add_sig_alg(&tbs, key) ||
	    !add_name(&tbs, ALPN_CERT_CN) ||
	    !CBB_add_asn1(&tbs, &validity, CBS_ASN1_SEQUENCE) ||
	    !add_time(&validity, now - 86400) ||
	    !add_time(&validity, now + 7 * 86400) ||
	    !add_name(&tbs, ALPN_CERT_CN) ||
	    !EVP_marshal_public_key(&tbs, key) ||
	    !CBB_add_asn1(&tbs, &exts_wrap, TAG_CONS(3)) ||
	    !CBB_add_asn1(&exts_wrap, &exts, CBS_ASN1_SEQUENCE) ||
	    !add_san_ext(&exts, &name, 1) ||
	    /* id-pe-acmeIdentifier, critical, extnValue = DER of
	     * Authorization ::= OCTET STRING (SIZE (32)). */
	    !CBB_add_asn1(&exts, &ext, CBS_ASN1_SEQUENCE) ||
	    !add_oid(&ext, OID_ACME_IDENTIFIER) ||
	    !CBB_add_asn1_bool(&ext, 1) ||
	    !CBB_add_asn1(&ext, &value, CBS_ASN1_OCTETSTRING) ||
	    !CBB_add_asn1_octet_string(&value, digest, sizeof(digest)) ||
	    !CBB_flush(&cbb)) {
		CBB_cleanup(&cbb);
		goto fail;
	}
	if ((der = finish_signed(&cbb, key, &der_len)) == NULL ||
	    (*out_cert = CRYPTO_BUFFER_new(der, der_len, pool)) == NULL)
		goto fail;
	OPENSSL_free(der);
	*out_key = key;
	return 0;
fail:
	OPENSSL_free(der);
	EVP_PKEY_free(key);
	ERR_clear_error();
	return -1;
}

/* ---- renewal information ---- */

char *
acme_ari_cert_id(const X509 *cert)
{
	AUTHORITY_KEYID *akid;
	const ASN1_INTEGER *serial;
	char *kid_b64 = NULL, *serial_b64 = NULL, *out = NULL;
	uint8_t *der = NULL;
	CBS cbs, content;
	int der_len;

	if (cert == NULL)
		return NULL;
	akid = X509_get_ext_d2i(cert, NID_authority_key_identifier, NULL, NULL);
	if (akid == NULL || akid->keyid == NULL ||
	    ASN1_STRING_length(akid->keyid) <= 0)
		goto done;
	/* The serial's content octets exactly as DER has them: i2d and
	 * strip the tag and length. */
	if ((serial = X509_get0_serialNumber(cert)) == NULL ||
	    (der_len = i2d_ASN1_INTEGER(serial, &der)) <= 0)
		goto done;
	CBS_init(&cbs, der, (size_t)der_len);
	if (!CBS_get_asn1(&cbs, &content, CBS_ASN1_INTEGER) ||
	    CBS_len(&content) == 0)
		goto done;
	if ((kid_b64 = acme_b64url(ASN1_STRING_get0_data(akid->keyid),
	    (size_t)ASN1_STRING_length(akid->keyid))) == NULL ||
	    (serial_b64 = acme_b64url(CBS_data(&content),
	    CBS_len(&content))) == NULL)
		goto done;
	out = signing_input(kid_b64, serial_b64);
done:
	AUTHORITY_KEYID_free(akid);
	OPENSSL_free(der);
	free(kid_b64);
	free(serial_b64);
	ERR_clear_error();
	return out;
}

/* ---- key files ---- */

/* no_passphrase refuses to decrypt: our key files are not encrypted,
 * and nothing may prompt on a terminal. */
static int
no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)userdata;
	return 0;
}

EVP_PKEY *
acme_key_load(const char *path, char *err, size_t err_len)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	EVP_PKEY *key = NULL;
	enum acme_key_type type;
	struct stat st;
	BIO *bio;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		snprintf(err, err_len, "cannot open '%s': %s", path,
		    strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0) {
		snprintf(err, err_len, "cannot read '%s': %s", path,
		    strerror(errno));
		close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > KEY_FILE_MAX) {
		snprintf(err, err_len, "'%s' is %s; not a key file", path,
		    !S_ISREG(st.st_mode) ? "not a regular file" :
		    "larger than 64 KiB");
		close(fd);
		return NULL;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		snprintf(err, err_len, "'%s': out of memory", path);
		close(fd);
		return NULL;
	}
	while (len < (size_t)st.st_size + 1) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, err_len, "cannot read '%s': %s", path,
			    strerror(errno));
			goto done;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > (size_t)st.st_size) {
		snprintf(err, err_len, "'%s' changed while it was read", path);
		goto done;
	}
	if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL) {
		snprintf(err, err_len, "'%s': out of memory", path);
		goto done;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if (key == NULL) {
		snprintf(err, err_len, "'%s' holds no PEM private key (or an "
		    "encrypted one)", path);
		goto done;
	}
	if (acme_key_type_of(key, &type) != 0) {
		snprintf(err, err_len, "'%s': the key is neither P-256 ECDSA "
		    "nor RSA of at least 2048 bits", path);
		EVP_PKEY_free(key);
		key = NULL;
	}
done:
	close(fd);
	OPENSSL_cleanse(buf, (size_t)st.st_size + 1);
	free(buf);
	ERR_clear_error();
	return key;
}

int
acme_key_save(const char *path, const EVP_PKEY *key, char *err,
    size_t err_len)
{
	const uint8_t *pem;
	size_t pem_len;
	BIO *bio;
	int rc;

	if (key == NULL) {
		snprintf(err, err_len, "cannot write '%s': no key", path);
		return -1;
	}
	if ((bio = BIO_new(BIO_s_mem())) == NULL) {
		snprintf(err, err_len, "cannot write '%s': out of memory", path);
		return -1;
	}
	/* Older BoringSSL takes a non-const key; it is only read. */
	if (!PEM_write_bio_PKCS8PrivateKey(bio, (EVP_PKEY *)key, NULL, NULL, 0,
	    NULL, NULL) || !BIO_mem_contents(bio, &pem, &pem_len)) {
		snprintf(err, err_len, "cannot write '%s': cannot encode the "
		    "key", path);
		BIO_free(bio);
		ERR_clear_error();
		return -1;
	}
	rc = atomic_file_write(path, pem, pem_len, 0600, err, err_len);
	/* The memory BIO's buffer is freed with OPENSSL_free, which wipes
	 * it. */
	BIO_free(bio);
	return rc;
}
