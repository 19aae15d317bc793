/* The ACME JOSE and certificate pieces, checked against independent
 * implementations: Node.js verifies the JWS signatures, JWKs and the EAB
 * HMAC; openssl checks the CSRs, the tls-alpn-01 certificate and makes
 * the certificates whose ARI ids are computed. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/capability.h>

#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "../check_run.h"
#include "acme_jose.h"
#include "atomic_file.h"

static char dir[512];

/* ---- helpers ---- */

/* path_of returns |name| in the scratch directory (one of two static
 * buffers, so two may be used at once). */
static const char *
path_of(const char *name)
{
	static char paths[2][600];
	static int which;

	which ^= 1;
	snprintf(paths[which], sizeof(paths[which]), "%s/%s", dir, name);
	return paths[which];
}

/* run runs |cmd| in the scratch directory, its stdout and stderr in
 * |out| (trailing newline removed). Returns the exit status. */
static int
run(char *out, size_t out_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
run(char *out, size_t out_len, const char *fmt, ...)
{
	char cmd[4096], full[4700];
	size_t used = 0;
	va_list ap;
	FILE *p;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	snprintf(full, sizeof(full), "cd '%s' && (%s) 2>&1", dir, cmd);
	p = popen(full, "r");
	ck_assert_ptr_nonnull(p);
	while (used + 1 < out_len) {
		size_t n = fread(out + used, 1, out_len - used - 1, p);

		if (n == 0)
			break;
		used += n;
	}
	out[used] = '\0';
	while (used > 0 && out[used - 1] == '\n')
		out[--used] = '\0';
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void
write_file(const char *name, const void *data, size_t len)
{
	FILE *f = fopen(path_of(name), "wb");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

static void
write_str(const char *name, const char *s)
{
	write_file(name, s, strlen(s));
}

/* read_str returns the contents of |name| (malloc'd, NUL-terminated). */
static char *
read_str(const char *name)
{
	FILE *f = fopen(path_of(name), "rb");
	char *buf = malloc(1 << 16);
	size_t n;

	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, (1 << 16) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

/* write_spki writes |key|'s public key as DER SubjectPublicKeyInfo. */
static void
write_spki(const char *name, const EVP_PKEY *key)
{
	uint8_t *der;
	size_t len;
	CBB cbb;

	ck_assert(CBB_init(&cbb, 0));
	ck_assert(EVP_marshal_public_key(&cbb, key));
	ck_assert(CBB_finish(&cbb, &der, &len));
	write_file(name, der, len);
	OPENSSL_free(der);
}

static EVP_PKEY *
read_pem_key(const char *name)
{
	FILE *f = fopen(path_of(name), "r");
	EVP_PKEY *k;

	ck_assert_ptr_nonnull(f);
	k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(k);
	return k;
}

static X509 *
read_pem_cert(const char *name)
{
	FILE *f = fopen(path_of(name), "r");
	X509 *x;

	ck_assert_ptr_nonnull(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(x);
	return x;
}

/* temp_entries counts the names in |sub| starting with '.' other than
 * "." and "..": the temporary files atomic_file_write might leave. */
static int
temp_entries(const char *sub)
{
	DIR *d = opendir(path_of(sub));
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' && strcmp(e->d_name, ".") != 0 &&
		    strcmp(e->d_name, "..") != 0)
			n++;
	}
	closedir(d);
	return n;
}

/* ---- scripts ---- */

/* Node's reading of an ACME request body: argv BODY SPKI. Prints one
 * line of key=value facts: the body's and protected header's members,
 * the header fields, whether an embedded JWK equals Node's own export
 * of the key, whether every part is strict base64url, the signature's
 * length and verification, the payload, and the RFC 7638 thumbprint as
 * Node computes it from its own JWK export. */
static const char jws_js[] =
    "const fs = require('fs'), crypto = require('crypto');\n"
    "const body = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));\n"
    "const spki = crypto.createPublicKey({ key: fs.readFileSync("
    "process.argv[3]), format: 'der', type: 'spki' });\n"
    "const b64 = (s) => /^[A-Za-z0-9_-]*$/.test(s);\n"
    "const dec = (s) => Buffer.from(s, 'base64url').toString('utf8');\n"
    "const prot = JSON.parse(dec(body.protected));\n"
    "const want = spki.export({ format: 'jwk' });\n"
    "const out = [];\n"
    "out.push('body=' + Object.keys(body).sort().join(','));\n"
    "out.push('members=' + Object.keys(prot).sort().join(','));\n"
    "out.push('alg=' + prot.alg, 'nonce=' + prot.nonce, 'url=' + prot.url);\n"
    "if ('kid' in prot) out.push('kid=' + prot.kid);\n"
    "let key = spki;\n"
    "if ('jwk' in prot) {\n"
    "  key = crypto.createPublicKey({ key: prot.jwk, format: 'jwk' });\n"
    "  const same = Object.keys(prot.jwk).length === "
    "Object.keys(want).length &&\n"
    "    Object.keys(want).every((k) => want[k] === prot.jwk[k]);\n"
    "  out.push('jwk=' + (same ? 'same' : 'DIFFERENT'));\n"
    "}\n"
    "out.push('b64=' + (b64(body.protected) && b64(body.payload) &&\n"
    "  b64(body.signature)));\n"
    "const sig = Buffer.from(body.signature, 'base64url');\n"
    "out.push('siglen=' + sig.length);\n"
    "out.push('verify=' + crypto.verify('sha256',\n"
    "  Buffer.from(body.protected + '.' + body.payload),\n"
    "  { key: key, dsaEncoding: 'ieee-p1363' }, sig));\n"
    "out.push('payload=' + (body.payload === '' ? '(empty)' :\n"
    "  dec(body.payload)));\n"
    "const canon = want.kty === 'EC' ?\n"
    "  { crv: want.crv, kty: want.kty, x: want.x, y: want.y } :\n"
    "  { e: want.e, kty: want.kty, n: want.n };\n"
    "out.push('tp=' + crypto.createHash('sha256')\n"
    "  .update(JSON.stringify(canon)).digest('base64url'));\n"
    "console.log(out.join(' '));\n";

/* Node's check of an externalAccountBinding: argv EAB SPKI HMACKEY. */
static const char eab_js[] =
    "const fs = require('fs'), crypto = require('crypto');\n"
    "const eab = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));\n"
    "const spki = crypto.createPublicKey({ key: fs.readFileSync("
    "process.argv[3]), format: 'der', type: 'spki' });\n"
    "const dec = (s) => Buffer.from(s, 'base64url').toString('utf8');\n"
    "const prot = JSON.parse(dec(eab.protected));\n"
    "const jwk = JSON.parse(dec(eab.payload));\n"
    "const want = spki.export({ format: 'jwk' });\n"
    "const same = Object.keys(jwk).length === Object.keys(want).length &&\n"
    "  Object.keys(want).every((k) => want[k] === jwk[k]);\n"
    "const mac = crypto.createHmac('sha256', Buffer.from(process.argv[4],\n"
    "  'base64url')).update(eab.protected + '.' + eab.payload)\n"
    "  .digest('base64url');\n"
    "console.log(['body=' + Object.keys(eab).sort().join(','),\n"
    "  'members=' + Object.keys(prot).sort().join(','), 'alg=' + prot.alg,\n"
    "  'kid=' + prot.kid, 'url=' + prot.url,\n"
    "  'jwk=' + (same ? 'same' : 'DIFFERENT'),\n"
    "  'mac=' + (mac === eab.signature ? 'ok' : 'BAD')].join(' '));\n";

/* Node's reading of the tls-alpn-01 certificate: argv DER. */
static const char alpn_js[] =
    "const fs = require('fs'), crypto = require('crypto');\n"
    "const x = new crypto.X509Certificate(fs.readFileSync(process.argv[2]));\n"
    "const now = Date.now(), h = 3600 * 1000;\n"
    "console.log(['san=' + x.subjectAltName, 'subject=' + x.subject,\n"
    "  'issuer=' + x.issuer, 'selfsigned=' + x.verify(x.publicKey),\n"
    "  'ca=' + x.ca, 'keytype=' + x.publicKey.asymmetricKeyType,\n"
    "  'from=' + Math.round((now - Date.parse(x.validFrom)) / h) + 'h',\n"
    "  'to=' + Math.round((Date.parse(x.validTo) - now) / h) + 'h',\n"
    "  'seriallen=' + x.serialNumber.length].join(' '));\n";

/* Certificates with a known AKI keyIdentifier and serials, the example
 * of RFC 9773 section 4.1: keyIdentifier 69:88:5B:..., serial
 * 0x87654321 (high bit set: the DER content has a leading zero). */
static const char setup_script[] =
    "set -e\n"
    "openssl ecparam -name prime256v1 -genkey -noout -out ca.key\n"
    "printf '[req]\\ndistinguished_name = dn\\nx509_extensions = v3\\n"
    "prompt = no\\n[dn]\\nCN = ari test CA\\n[v3]\\n"
    "subjectKeyIdentifier = 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:"
    "DE:01:C8:D4\\nbasicConstraints = critical,CA:true\\n"
    "keyUsage = critical,keyCertSign\\n' > ca.cnf\n"
    "openssl req -new -x509 -config ca.cnf -key ca.key -days 2 -out ca.pem\n"
    "openssl ecparam -name prime256v1 -genkey -noout -out leaf.key\n"
    "openssl req -new -key leaf.key -subj /CN=leaf -out leaf.csr\n"
    "printf 'authorityKeyIdentifier = keyid:always\\n' > aki.cnf\n"
    "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key "
    "-set_serial 0x87654321 -days 1 -extfile aki.cnf -out leaf-high.pem\n"
    "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key "
    "-set_serial 0x1234 -days 1 -extfile aki.cnf -out leaf-low.pem\n"
    /* An AKI without keyIdentifier: issuer and serial only. */
    "printf 'authorityKeyIdentifier = issuer:always\\n' > noaki.cnf\n"
    "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key "
    "-set_serial 0x1234 -days 1 -extfile noaki.cnf -out leaf-noaki.pem\n"
    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 "
    "-out p384.key\n";

/* ---- base64url ---- */

static void
check_b64(const char *raw, size_t len, const char *want)
{
	char *enc = acme_b64url((const uint8_t *)raw, len);
	uint8_t *dec;
	size_t dec_len;

	ck_assert_ptr_nonnull(enc);
	ck_assert_str_eq(enc, want);
	ck_assert_int_eq(acme_b64url_decode(enc, &dec, &dec_len), 0);
	ck_assert_uint_eq(dec_len, len);
	ck_assert(memcmp(dec, raw, len) == 0);
	free(enc);
	free(dec);
}

START_TEST(b64url_vectors)
{
	/* RFC 4648 section 10, without the padding. */
	check_b64("", 0, "");
	check_b64("f", 1, "Zg");
	check_b64("fo", 2, "Zm8");
	check_b64("foo", 3, "Zm9v");
	check_b64("foob", 4, "Zm9vYg");
	check_b64("fooba", 5, "Zm9vYmE");
	check_b64("foobar", 6, "Zm9vYmFy");
	/* The url alphabet: standard base64 would say "+/8=" and "//7+". */
	check_b64("\xfb\xff", 2, "-_8");
	check_b64("\xff\xfe\xfe", 3, "__7-");
	check_b64("\0\0\0", 3, "AAAA");
}
END_TEST

START_TEST(b64url_round_trips)
{
	uint8_t buf[300];

	for (size_t len = 0; len <= sizeof(buf); len++) {
		uint8_t *dec;
		size_t dec_len;
		char *enc;

		for (size_t i = 0; i < len; i++)
			buf[i] = (uint8_t)(i * 37 + len * 11 + 5);
		enc = acme_b64url(buf, len);
		ck_assert_ptr_nonnull(enc);
		ck_assert_uint_eq(strlen(enc), (len * 4 + 2) / 3);
		ck_assert_uint_eq(strspn(enc, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "abcdefghijklmnopqrstuvwxyz0123456789-_"), strlen(enc));
		ck_assert_int_eq(acme_b64url_decode(enc, &dec, &dec_len), 0);
		ck_assert_uint_eq(dec_len, len);
		ck_assert(memcmp(dec, buf, len) == 0);
		free(enc);
		free(dec);
	}
}
END_TEST

START_TEST(b64url_bad_input_rejected)
{
	static const char *const bad[] = {
		"Zm9v!", "Zm+v", "Zm/v", "Zm9v Yg", " Zm9v", "Zm9v\n",
		"Z",          /* 4n+1 characters */
		"Zm9vY",
		"Zh",         /* leftover bits set: not canonical */
		"Zm9",
		"Zg=", "Zg===", "Zm8==", "Zm9v=", "Zm9v====", /* wrong padding */
		"=Zg", "Z=g=", "=", "==",
		"Zm\xc3\xa9v", /* not ASCII */
	};
	static const struct {
		const char *in, *out;
	} padded[] = {
		{ "Zg==", "f" }, { "Zm8=", "fo" }, { "Zm9vYg==", "foob" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t *out = (uint8_t *)"untouched";
		size_t len = 12345;

		ck_assert_msg(acme_b64url_decode(bad[i], &out, &len) == -1,
		    "accepted '%s'", bad[i]);
		ck_assert_uint_eq(len, 12345);
	}
	/* Exactly standard padding is tolerated. */
	for (size_t i = 0; i < sizeof(padded) / sizeof(padded[0]); i++) {
		uint8_t *out;
		size_t len;

		ck_assert_int_eq(acme_b64url_decode(padded[i].in, &out, &len),
		    0);
		ck_assert_uint_eq(len, strlen(padded[i].out));
		ck_assert(memcmp(out, padded[i].out, len) == 0);
		free(out);
	}
}
END_TEST

/* ---- keys, JWK, thumbprints ---- */

/* RFC 7638 section 3.1. */
static const char rfc7638_n[] =
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPF"
    "FxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93"
    "lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZ"
    "Hzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3X"
    "PksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

START_TEST(rfc7638_thumbprint)
{
	uint8_t *n, *e;
	size_t n_len, e_len;
	EVP_PKEY *pkey = EVP_PKEY_new();
	RSA *rsa = RSA_new();
	json_t *jwk;
	char *tp, *text;

	ck_assert_int_eq(acme_b64url_decode(rfc7638_n, &n, &n_len), 0);
	ck_assert_int_eq(acme_b64url_decode("AQAB", &e, &e_len), 0);
	ck_assert_uint_eq(n_len, 256);
	ck_assert(RSA_set0_key(rsa, BN_bin2bn(n, n_len, NULL),
	    BN_bin2bn(e, e_len, NULL), NULL));
	ck_assert(EVP_PKEY_assign_RSA(pkey, rsa));

	jwk = acme_jwk(pkey);
	ck_assert_ptr_nonnull(jwk);
	text = json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS);
	ck_assert_ptr_nonnull(text);
	ck_assert(strncmp(text, "{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"0vx7ag",
	    34) == 0);
	ck_assert_str_eq(json_string_value(json_object_get(jwk, "n")),
	    rfc7638_n);
	ck_assert_uint_eq(json_object_size(jwk), 3);

	tp = acme_thumbprint(pkey);
	ck_assert_ptr_nonnull(tp);
	ck_assert_str_eq(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");

	free(tp);
	free(text);
	json_decref(jwk);
	free(n);
	free(e);
	EVP_PKEY_free(pkey);
}
END_TEST

START_TEST(new_keys_and_jwks)
{
	EVP_PKEY *ec = acme_key_new(ACME_KEY_ECDSA);
	EVP_PKEY *rsa = acme_key_new(ACME_KEY_RSA);
	enum acme_key_type type;
	json_t *jwk;
	uint8_t *bytes;
	size_t len;

	ck_assert_ptr_nonnull(ec);
	ck_assert_ptr_nonnull(rsa);
	ck_assert_int_eq(acme_key_type_of(ec, &type), 0);
	ck_assert_int_eq(type, ACME_KEY_ECDSA);
	ck_assert_int_eq(acme_key_type_of(rsa, &type), 0);
	ck_assert_int_eq(type, ACME_KEY_RSA);
	ck_assert_int_eq(EVP_PKEY_bits(rsa), 2048);
	ck_assert(BN_is_word(RSA_get0_e(EVP_PKEY_get0_RSA(rsa)), 65537));

	jwk = acme_jwk(ec);
	ck_assert_uint_eq(json_object_size(jwk), 4);
	ck_assert_str_eq(json_string_value(json_object_get(jwk, "kty")), "EC");
	ck_assert_str_eq(json_string_value(json_object_get(jwk, "crv")),
	    "P-256");
	for (int i = 0; i < 2; i++) {
		const char *c = json_string_value(json_object_get(jwk,
		    i ? "y" : "x"));

		ck_assert_ptr_nonnull(c);
		ck_assert_int_eq(acme_b64url_decode(c, &bytes, &len), 0);
		ck_assert_uint_eq(len, 32);
		free(bytes);
	}
	json_decref(jwk);

	jwk = acme_jwk(rsa);
	ck_assert_uint_eq(json_object_size(jwk), 3);
	ck_assert_str_eq(json_string_value(json_object_get(jwk, "e")), "AQAB");
	ck_assert_int_eq(acme_b64url_decode(json_string_value(
	    json_object_get(jwk, "n")), &bytes, &len), 0);
	ck_assert_uint_eq(len, 256);
	ck_assert_uint_ge(bytes[0], 0x80);
	free(bytes);
	json_decref(jwk);

	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
}
END_TEST

START_TEST(other_keys_refused)
{
	EVP_PKEY *p384 = read_pem_key("p384.key");
	EVP_PKEY *small = EVP_PKEY_new();
	RSA *rsa = RSA_new();
	BIGNUM *e = BN_new();
	enum acme_key_type type;
	const char *names[] = { "a.example" };
	CRYPTO_BUFFER *cert;
	EVP_PKEY *key;
	size_t len;

	ck_assert(BN_set_word(e, 65537));
	ck_assert(RSA_generate_key_ex(rsa, 1024, e, NULL));
	ck_assert(EVP_PKEY_assign_RSA(small, rsa));
	ERR_clear_error();
	ck_assert_int_eq(acme_key_type_of(p384, &type), -1);
	ck_assert_int_eq(acme_key_type_of(small, &type), -1);
	ck_assert_ptr_null(acme_jwk(p384));
	ck_assert_ptr_null(acme_thumbprint(p384));
	ck_assert_ptr_null(acme_jws(p384, NULL, "n", "https://x/", ""));
	ck_assert_ptr_null(acme_csr(p384, names, 1, &len));
	ck_assert_ptr_null(acme_csr(small, names, 1, &len));
	/* Nothing is left on the error queue, even when refusing. */
	ck_assert_uint_eq(ERR_peek_error(), 0);
	/* A challenge certificate only for a plausible DNS name. */
	ck_assert_int_eq(acme_alpn_cert("bad name", "t.k", NULL, &cert, &key),
	    -1);
	ck_assert_ptr_null(cert);
	ck_assert_ptr_null(key);
	ck_assert_int_eq(acme_alpn_cert("", "t.k", NULL, &cert, &key), -1);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(small);
	BN_free(e);
}
END_TEST

/* ---- JWS ---- */

/* check_jws has Node read |body| made by |key| and compares its facts
 * with |want| (the thumbprint is appended to |want| here). */
static void
check_jws(const char *body, EVP_PKEY *key, const char *want)
{
	char out[8192], full[8192];
	char *tp = acme_thumbprint(key);

	ck_assert_ptr_nonnull(tp);
	write_str("body.json", body);
	write_spki("account.spki", key);
	ck_assert_int_eq(run(out, sizeof(out), "node jws.js body.json "
	    "account.spki"), 0);
	snprintf(full, sizeof(full), "%s tp=%s", want, tp);
	ck_assert_str_eq(out, full);
	free(tp);
}

START_TEST(jws_with_jwk_verified_by_node)
{
	EVP_PKEY *key = acme_key_new(ACME_KEY_ECDSA);
	const char *payload = "{\"termsOfServiceAgreed\":true,\"contact\":"
	    "[\"mailto:admin@example.com\"]}";
	char *body;

	/* Several times: ECDSA signatures differ every time, and r or s
	 * may have leading zero bytes that must be kept. */
	for (int i = 0; i < 3; i++) {
		body = acme_jws(key, NULL, "nonce-Aa_1",
		    "https://ca.example/acme/new-acct", payload);
		ck_assert_ptr_nonnull(body);
		check_jws(body, key, "body=payload,protected,signature "
		    "members=alg,jwk,nonce,url alg=ES256 nonce=nonce-Aa_1 "
		    "url=https://ca.example/acme/new-acct jwk=same "
		    "b64=true siglen=64 verify=true "
		    "payload={\"termsOfServiceAgreed\":true,\"contact\":"
		    "[\"mailto:admin@example.com\"]}");
		free(body);
	}
	ck_assert_ptr_null(acme_jws(key, NULL, NULL, "https://x/", ""));
	ck_assert_ptr_null(acme_jws(key, NULL, "n", NULL, ""));
	EVP_PKEY_free(key);
}
END_TEST

/* r and s are each 32 bytes, leading zeros kept (one signature in about
 * 64 has one): every signature, parsed back as r||s, verifies. */
START_TEST(es256_signatures_fixed_width)
{
	EVP_PKEY *key = acme_key_new(ACME_KEY_ECDSA);
	int short_seen = 0;

	for (int i = 0; i < 400; i++) {
		char nonce[32], *body, *input;
		const char *prot, *payload, *sig_b64;
		uint8_t *sig, digest[32];
		size_t sig_len;
		ECDSA_SIG *esig = ECDSA_SIG_new();
		BIGNUM *r = BN_new(), *sv = BN_new();
		json_t *j;

		snprintf(nonce, sizeof(nonce), "n%d", i);
		body = acme_jws(key, "https://ca.example/acct/1", nonce,
		    "https://ca.example/x", "{}");
		ck_assert_ptr_nonnull(body);
		j = json_loads(body, 0, NULL);
		prot = json_string_value(json_object_get(j, "protected"));
		payload = json_string_value(json_object_get(j, "payload"));
		sig_b64 = json_string_value(json_object_get(j, "signature"));
		ck_assert_int_eq(acme_b64url_decode(sig_b64, &sig, &sig_len), 0);
		ck_assert_uint_eq(sig_len, 64);
		if (sig[0] == 0 || sig[32] == 0)
			short_seen++;
		ck_assert_ptr_nonnull(BN_bin2bn(sig, 32, r));
		ck_assert_ptr_nonnull(BN_bin2bn(sig + 32, 32, sv));
		ck_assert(ECDSA_SIG_set0(esig, r, sv));
		input = malloc(strlen(prot) + strlen(payload) + 2);
		sprintf(input, "%s.%s", prot, payload);
		SHA256((const uint8_t *)input, strlen(input), digest);
		ck_assert_int_eq(ECDSA_do_verify(digest, sizeof(digest), esig,
		    EVP_PKEY_get0_EC_KEY(key)), 1);
		free(input);
		free(sig);
		ECDSA_SIG_free(esig);
		json_decref(j);
		free(body);
	}
	/* Not asserted (chance), only reported when absent. */
	if (short_seen == 0)
		fprintf(stderr, "es256: no signature with a leading zero byte "
		    "this time\n");
	EVP_PKEY_free(key);
}
END_TEST

START_TEST(jws_with_kid_and_post_as_get)
{
	EVP_PKEY *key = acme_key_new(ACME_KEY_ECDSA);
	char *body;
	json_t *j;

	body = acme_jws(key, "https://ca.example/acme/acct/17", "n2",
	    "https://ca.example/acme/order/5", "");
	ck_assert_ptr_nonnull(body);
	/* POST-as-GET: the payload member is present and empty. */
	j = json_loads(body, 0, NULL);
	ck_assert_ptr_nonnull(j);
	ck_assert_str_eq(json_string_value(json_object_get(j, "payload")), "");
	json_decref(j);
	check_jws(body, key, "body=payload,protected,signature "
	    "members=alg,kid,nonce,url alg=ES256 nonce=n2 "
	    "url=https://ca.example/acme/order/5 "
	    "kid=https://ca.example/acme/acct/17 b64=true siglen=64 "
	    "verify=true payload=(empty)");
	free(body);

	body = acme_jws(key, "https://ca.example/acme/acct/17", "n3",
	    "https://ca.example/acme/order/5/finalize",
	    "{\"csr\":\"MIIB\"}");
	ck_assert_ptr_nonnull(body);
	check_jws(body, key, "body=payload,protected,signature "
	    "members=alg,kid,nonce,url alg=ES256 nonce=n3 "
	    "url=https://ca.example/acme/order/5/finalize "
	    "kid=https://ca.example/acme/acct/17 b64=true siglen=64 "
	    "verify=true payload={\"csr\":\"MIIB\"}");
	free(body);
	EVP_PKEY_free(key);
}
END_TEST

START_TEST(jws_rs256_verified_by_node)
{
	EVP_PKEY *key = acme_key_new(ACME_KEY_RSA);
	char *body;

	body = acme_jws(key, NULL, "n4", "https://ca.example/acme/new-acct",
	    "{}");
	ck_assert_ptr_nonnull(body);
	check_jws(body, key, "body=payload,protected,signature "
	    "members=alg,jwk,nonce,url alg=RS256 nonce=n4 "
	    "url=https://ca.example/acme/new-acct jwk=same b64=true "
	    "siglen=256 verify=true payload={}");
	free(body);
	EVP_PKEY_free(key);
}
END_TEST

START_TEST(eab_hmac_checked_by_node)
{
	EVP_PKEY *key = acme_key_new(ACME_KEY_ECDSA);
	uint8_t hmac_key[32];
	char *hmac_b64, *text, out[4096], cmd[512];
	json_t *eab;

	for (size_t i = 0; i < sizeof(hmac_key); i++)
		hmac_key[i] = (uint8_t)(0xf0 + i * 7);
	hmac_b64 = acme_b64url(hmac_key, sizeof(hmac_key));
	eab = acme_eab(key, "kid-123", hmac_key, sizeof(hmac_key),
	    "https://ca.example/acme/new-acct");
	ck_assert_ptr_nonnull(eab);
	ck_assert_uint_eq(json_object_size(eab), 3);
	text = json_dumps(eab, JSON_COMPACT);
	write_str("eab.json", text);
	write_spki("account.spki", key);
	snprintf(cmd, sizeof(cmd), "node eab.js eab.json account.spki %s",
	    hmac_b64);
	ck_assert_int_eq(run(out, sizeof(out), "%s", cmd), 0);
	ck_assert_str_eq(out, "body=payload,protected,signature "
	    "members=alg,kid,url alg=HS256 kid=kid-123 "
	    "url=https://ca.example/acme/new-acct jwk=same mac=ok");
	/* The wrong key does not pass. */
	ck_assert_int_eq(run(out, sizeof(out), "node eab.js eab.json "
	    "account.spki AAAA"), 0);
	ck_assert_ptr_nonnull(strstr(out, "mac=BAD"));
	ck_assert_ptr_null(acme_eab(key, "kid", hmac_key, 0, "https://x/"));
	free(text);
	free(hmac_b64);
	json_decref(eab);
	EVP_PKEY_free(key);
}
END_TEST

START_TEST(key_authorization)
{
	EVP_PKEY *key = acme_key_new(ACME_KEY_ECDSA);
	char *tp = acme_thumbprint(key), *ka, want[256];

	ck_assert_ptr_nonnull(tp);
	ka = acme_key_authorization("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
	    key);
	ck_assert_ptr_nonnull(ka);
	snprintf(want, sizeof(want), "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr"
	    "-oA.%s", tp);
	ck_assert_str_eq(ka, want);
	ck_assert_ptr_null(acme_key_authorization("", key));
	ck_assert_ptr_null(acme_key_authorization("../etc", key));
	ck_assert_ptr_null(acme_key_authorization("a b", key));
	free(ka);
	free(tp);
	EVP_PKEY_free(key);
}
END_TEST

/* ---- CSR ---- */

static void
check_csr(enum acme_key_type type)
{
	EVP_PKEY *key = acme_key_new(type);
	const char *names[] = { "www.example.com", "example.com",
		"*.api.example.com" };
	char out[16384];
	uint8_t *der;
	size_t len;

	der = acme_csr(key, names, 3, &len);
	ck_assert_ptr_nonnull(der);
	write_file("csr.der", der, len);
	OPENSSL_free(der);
	ck_assert_int_eq(run(out, sizeof(out), "openssl req -inform DER -in "
	    "csr.der -verify -noout -text"), 0);
	ck_assert_msg(strstr(out, "verify OK") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "Subject: CN = www.example.com\n") != NULL,
	    "%s", out);
	ck_assert_msg(strstr(out, "Requested Extensions:") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "DNS:www.example.com, DNS:example.com, "
	    "DNS:*.api.example.com\n") != NULL, "%s", out);
	ck_assert_msg(strstr(out, type == ACME_KEY_ECDSA ?
	    "Signature Algorithm: ecdsa-with-SHA256" :
	    "Signature Algorithm: sha256WithRSAEncryption") != NULL, "%s", out);
	ck_assert_msg(strstr(out, type == ACME_KEY_ECDSA ? "NIST CURVE: P-256" :
	    "Public-Key: (2048 bit)") != NULL, "%s", out);
	/* The CSR's key is |key|. */
	write_spki("key.spki", key);
	ck_assert_int_eq(run(out, sizeof(out), "openssl req -inform DER -in "
	    "csr.der -noout -pubkey | openssl pkey -pubin -outform DER "
	    "-out csr.spki && cmp -s csr.spki key.spki && echo same"), 0);
	ck_assert_str_eq(out, "same");
	EVP_PKEY_free(key);
}

START_TEST(csr_ecdsa_checked_by_openssl)
{
	check_csr(ACME_KEY_ECDSA);
}
END_TEST

START_TEST(csr_rsa_checked_by_openssl)
{
	check_csr(ACME_KEY_RSA);
}
END_TEST

START_TEST(csr_long_first_name_and_bad_names)
{
	EVP_PKEY *key = acme_key_new(ACME_KEY_ECDSA);
	char long_name[100], out[16384], want[200];
	const char *names[2] = { long_name, "short.example" };
	const char *bad[][1] = { { "" }, { "a b.example" }, { "a/b" },
		{ "x\xc3\xa9.example" }, { NULL } };
	uint8_t *der;
	size_t len;

	/* 65 characters: too long for a CN, so the subject is empty. */
	memset(long_name, 'a', 61);
	memcpy(long_name + 61, ".com", 5);
	der = acme_csr(key, names, 2, &len);
	ck_assert_ptr_nonnull(der);
	write_file("csr.der", der, len);
	OPENSSL_free(der);
	ck_assert_int_eq(run(out, sizeof(out), "openssl req -inform DER -in "
	    "csr.der -verify -noout -text"), 0);
	ck_assert_msg(strstr(out, "verify OK") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "CN =") == NULL, "%s", out);
	snprintf(want, sizeof(want), "DNS:%s, DNS:short.example\n", long_name);
	ck_assert_msg(strstr(out, want) != NULL, "%s", out);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_ptr_null(acme_csr(key, bad[i], 1, &len));
	ck_assert_ptr_null(acme_csr(key, names, 0, &len));
	EVP_PKEY_free(key);
}
END_TEST

/* ---- tls-alpn-01 certificate ---- */

START_TEST(alpn_cert_checked_by_openssl_and_node)
{
	const char *ka = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA."
	    "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
	CRYPTO_BUFFER_POOL *pool = CRYPTO_BUFFER_POOL_new();
	CRYPTO_BUFFER *cert, *cert2;
	EVP_PKEY *key, *key2, *pub;
	char out[16384], hash[128], want[256], *line;
	X509 *x;

	ck_assert_int_eq(acme_alpn_cert("alpn.example.com", ka, pool, &cert,
	    &key), 0);
	write_file("alpn.der", CRYPTO_BUFFER_data(cert),
	    CRYPTO_BUFFER_len(cert));

	/* The key returned is the certificate's. */
	x = X509_parse_from_buffer(cert);
	ck_assert_ptr_nonnull(x);
	pub = X509_get_pubkey(x);
	ck_assert_int_eq(EVP_PKEY_cmp(pub, key), 1);
	EVP_PKEY_free(pub);
	/* Not a certificate an ARI id can be computed for: no AKI. */
	ck_assert_ptr_null(acme_ari_cert_id(x));
	X509_free(x);

	ck_assert_int_eq(run(out, sizeof(out), "node alpn.js alpn.der"), 0);
	ck_assert_str_eq(out, "san=DNS:alpn.example.com "
	    "subject=CN=ACME tls-alpn-01 challenge "
	    "issuer=CN=ACME tls-alpn-01 challenge selfsigned=true ca=false "
	    "keytype=ec from=24h to=168h seriallen=32");

	/* The acmeIdentifier extension: critical, and its value the DER
	 * OCTET STRING (04 20) of SHA-256(key authorization). */
	ck_assert_int_eq(run(hash, sizeof(hash), "printf '%%s' '%s' | "
	    "openssl dgst -sha256 -r | cut -d' ' -f1", ka), 0);
	ck_assert_uint_eq(strlen(hash), 64);
	ck_assert_int_eq(run(out, sizeof(out), "openssl asn1parse -inform DER "
	    "-in alpn.der"), 0);
	line = strstr(out, ":1.3.6.1.5.5.7.1.31");
	if (line == NULL)
		line = strstr(out, ":id-pe-acmeIdentifier");
	ck_assert_msg(line != NULL, "%s", out);
	line = strchr(line, '\n');
	ck_assert_ptr_nonnull(line);
	ck_assert_msg(strncmp(strstr(line, "prim:"), "prim: BOOLEAN           "
	    ":255", 28) == 0, "%s", line);
	line = strchr(line + 1, '\n');
	ck_assert_ptr_nonnull(line);
	snprintf(want, sizeof(want), "prim: OCTET STRING      [HEX DUMP]:0420%s\n",
	    hash);
	ck_assert_msg(strncasecmp(strstr(line, "prim:"), want, strlen(want)) ==
	    0, "want %s in %s", want, line);

	/* openssl's view: one SAN, exactly the name; the extension
	 * critical. */
	ck_assert_int_eq(run(out, sizeof(out), "openssl x509 -inform DER -in "
	    "alpn.der -noout -text"), 0);
	ck_assert_msg(strstr(out, "X509v3 Subject Alternative Name: \n"
	    "                DNS:alpn.example.com\n") != NULL, "%s", out);
	ck_assert_ptr_null(strstr(strstr(out, "Alternative Name") + 1,
	    "Alternative Name"));
	ck_assert_msg(strstr(out, "1.3.6.1.5.5.7.1.31: critical") != NULL ||
	    strstr(out, "cmeIdentifier: critical") != NULL, "%s", out);
	ck_assert_ptr_nonnull(strstr(out, "Signature Algorithm: "
	    "ecdsa-with-SHA256"));
	ck_assert_ptr_nonnull(strstr(out, "Version: 3 (0x2)"));

	/* A second certificate has its own key and serial. */
	ck_assert_int_eq(acme_alpn_cert("alpn.example.com", ka, NULL, &cert2,
	    &key2), 0);
	ck_assert_int_ne(EVP_PKEY_cmp(key, key2), 1);
	ck_assert(CRYPTO_BUFFER_len(cert) != CRYPTO_BUFFER_len(cert2) ||
	    memcmp(CRYPTO_BUFFER_data(cert), CRYPTO_BUFFER_data(cert2),
	    CRYPTO_BUFFER_len(cert)) != 0);
	CRYPTO_BUFFER_free(cert);
	CRYPTO_BUFFER_free(cert2);
	EVP_PKEY_free(key);
	EVP_PKEY_free(key2);
	CRYPTO_BUFFER_POOL_free(pool);
}
END_TEST

/* ---- ARI ---- */

START_TEST(ari_cert_ids)
{
	X509 *high = read_pem_cert("leaf-high.pem");
	X509 *low = read_pem_cert("leaf-low.pem");
	X509 *noaki = read_pem_cert("leaf-noaki.pem");
	char *id;

	/* RFC 9773 section 4.1's example. */
	id = acme_ari_cert_id(high);
	ck_assert_ptr_nonnull(id);
	ck_assert_str_eq(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
	free(id);
	id = acme_ari_cert_id(low);
	ck_assert_ptr_nonnull(id);
	ck_assert_str_eq(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.EjQ");
	free(id);
	ck_assert_ptr_null(acme_ari_cert_id(noaki));
	X509_free(high);
	X509_free(low);
	X509_free(noaki);
}
END_TEST

/* ---- key files ---- */

static void
check_key_file(enum acme_key_type type)
{
	EVP_PKEY *key = acme_key_new(type), *back;
	const char *path = path_of("keys/k.pem");
	char err[512], out[4096], *pem;
	struct stat st;

	mkdir(path_of("keys"), 0755);
	/* An old file of another mode is replaced, and ends up 0600. */
	write_str("keys/k.pem", "old\n");
	chmod(path, 0644);
	ck_assert_int_eq(acme_key_save(path, key, err, sizeof(err)), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0600);
	ck_assert_int_eq(temp_entries("keys"), 0);
	pem = read_str("keys/k.pem");
	ck_assert_msg(strncmp(pem, "-----BEGIN PRIVATE KEY-----\n", 28) == 0,
	    "%s", pem);
	free(pem);
	ck_assert_int_eq(run(out, sizeof(out), "openssl pkey -in keys/k.pem "
	    "-noout -text | head -1"), 0);
	ck_assert_msg(strstr(out, type == ACME_KEY_ECDSA ? "256 bit" :
	    "2048 bit") != NULL, "%s", out);

	back = acme_key_load(path, err, sizeof(err));
	ck_assert_msg(back != NULL, "%s", err);
	ck_assert_int_eq(EVP_PKEY_cmp(key, back), 1);
	if (type == ACME_KEY_ECDSA)
		ck_assert_int_eq(BN_cmp(EC_KEY_get0_private_key(
		    EVP_PKEY_get0_EC_KEY(key)), EC_KEY_get0_private_key(
		    EVP_PKEY_get0_EC_KEY(back))), 0);
	else
		ck_assert_int_eq(BN_cmp(RSA_get0_d(EVP_PKEY_get0_RSA(key)),
		    RSA_get0_d(EVP_PKEY_get0_RSA(back))), 0);
	EVP_PKEY_free(back);
	EVP_PKEY_free(key);
}

START_TEST(key_save_load_ecdsa)
{
	check_key_file(ACME_KEY_ECDSA);
}
END_TEST

START_TEST(key_save_load_rsa)
{
	check_key_file(ACME_KEY_RSA);
}
END_TEST

START_TEST(key_load_failures)
{
	char err[512];
	EVP_PKEY *k;

	ERR_clear_error();
	ck_assert_ptr_null(acme_key_load(path_of("missing.pem"), err,
	    sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "missing.pem"));
	ck_assert_ptr_nonnull(strstr(err, strerror(ENOENT)));
	write_str("garbage.pem", "not a key\n");
	ck_assert_ptr_null(acme_key_load(path_of("garbage.pem"), err,
	    sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "garbage.pem"));
	ck_assert_ptr_null(acme_key_load(path_of("p384.key"), err,
	    sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "p384.key"));
	ck_assert_ptr_null(acme_key_load(dir, err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
	/* The traditional "EC PRIVATE KEY" form openssl ecparam writes. */
	k = acme_key_load(path_of("ca.key"), err, sizeof(err));
	ck_assert_msg(k != NULL, "%s", err);
	EVP_PKEY_free(k);
	ck_assert_uint_eq(ERR_peek_error(), 0);
}
END_TEST

/* ---- atomic_file ---- */

START_TEST(atomic_write_replaces_with_exact_mode)
{
	const char *path = path_of("aw/f");
	char err[512], *s;
	struct stat st;
	mode_t old_umask;

	mkdir(path_of("aw"), 0755);
	ck_assert_int_eq(atomic_file_write(path, "first", 5, 0644, err,
	    sizeof(err)), 0);
	old_umask = umask(077);
	ck_assert_int_eq(atomic_file_write(path, "second\n", 7, 0640, err,
	    sizeof(err)), 0);
	umask(old_umask);
	s = read_str("aw/f");
	ck_assert_str_eq(s, "second\n");
	free(s);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0640);
	ck_assert_int_eq(temp_entries("aw"), 0);
	/* An empty file is a file too. */
	ck_assert_int_eq(atomic_file_write(path, "", 0, 0600, err,
	    sizeof(err)), 0);
	s = read_str("aw/f");
	ck_assert_str_eq(s, "");
	free(s);
}
END_TEST

/* dac_override takes CAP_DAC_OVERRIDE out of the effective set
 * (|on| = 0) or puts it back, so that root too meets a directory's
 * permissions. */
static void
dac_override(int on)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	uint32_t bits = 1u << CAP_DAC_OVERRIDE | 1u << CAP_DAC_READ_SEARCH;

	if (syscall(SYS_capget, &h, d) != 0)
		return;
	if (on)
		d[0].effective |= d[0].permitted & bits;
	else
		d[0].effective &= ~bits;
	ck_assert_int_eq(syscall(SYS_capset, &h, d), 0);
}

START_TEST(atomic_write_unwritable_directory_keeps_old_file)
{
	const char *path = path_of("ro/cert.pem");
	char err[512], *s;
	int rc, e;

	mkdir(path_of("ro"), 0755);
	write_str("ro/cert.pem", "old contents\n");
	ck_assert_int_eq(chmod(path_of("ro"), 0555), 0);
	dac_override(0);
	errno = 0;
	rc = atomic_file_write(path, "new contents\n", 13, 0644, err,
	    sizeof(err));
	e = errno;
	dac_override(1);
	ck_assert_int_eq(chmod(path_of("ro"), 0755), 0);
	ck_assert_int_eq(rc, -1);
	ck_assert_int_eq(e, EACCES);
	ck_assert_msg(strstr(err, path) != NULL, "%s", err);
	ck_assert_msg(strstr(err, strerror(EACCES)) != NULL, "%s", err);
	s = read_str("ro/cert.pem");
	ck_assert_str_eq(s, "old contents\n");
	free(s);
	ck_assert_int_eq(temp_entries("ro"), 0);
}
END_TEST

START_TEST(atomic_write_failing_midway_keeps_old_file)
{
	const char *path = path_of("big/f");
	struct rlimit old, small;
	char err[512], data[4096], *s;
	int rc, e;

	mkdir(path_of("big"), 0755);
	write_str("big/f", "old\n");
	memset(data, 'x', sizeof(data));
	/* Writes past 100 bytes fail with EFBIG (SIGXFSZ ignored). */
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	small = old;
	small.rlim_cur = 100;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
	rc = atomic_file_write(path, data, sizeof(data), 0644, err,
	    sizeof(err));
	e = errno;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	ck_assert_int_eq(rc, -1);
	ck_assert_int_eq(e, EFBIG);
	ck_assert_msg(strstr(err, path) != NULL, "%s", err);
	s = read_str("big/f");
	ck_assert_str_eq(s, "old\n");
	free(s);
	ck_assert_int_eq(temp_entries("big"), 0);
}
END_TEST

START_TEST(atomic_write_other_failures)
{
	char err[512];

	/* The target is a directory: the rename fails, the temporary goes. */
	mkdir(path_of("isdir"), 0755);
	mkdir(path_of("isdir/sub"), 0755);
	write_str("isdir/sub/x", "x");
	ck_assert_int_eq(atomic_file_write(path_of("isdir/sub"), "y", 1, 0644,
	    err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "isdir/sub"));
	ck_assert_int_eq(temp_entries("isdir"), 0);
	/* No such directory. */
	ck_assert_int_eq(atomic_file_write(path_of("nodir/f"), "y", 1, 0644,
	    err, sizeof(err)), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "nodir/f"));
	ck_assert_ptr_nonnull(strstr(err, strerror(ENOENT)));
	/* No file name. */
	ck_assert_int_eq(atomic_file_write(path_of("isdir/"), "y", 1, 0644,
	    err, sizeof(err)), -1);
}
END_TEST

/* write_script writes a fixture before the tests run (no Check asserts
 * there). */
static int
write_script(const char *name, const char *text)
{
	FILE *f = fopen(path_of(name), "w");

	if (f == NULL)
		return -1;
	fputs(text, f);
	return fclose(f) == 0 ? 0 : -1;
}

int
main(void)
{
	Suite *s = suite_create("acme_jose");
	TCase *tc = tcase_create("jose");
	const char *base = getenv("TLSPROXY_TEST_TMP");
	char cmd[5000];

	snprintf(dir, sizeof(dir), "%s/acme_jose.%d", base ? base : "/tmp",
	    (int)getpid());
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cd '%s' && (%s) >log 2>&1",
	    dir, dir, setup_script);
	if (system(cmd) != 0) {
		fprintf(stderr, "making the fixtures failed; see %s/log\n", dir);
		return 1;
	}
	if (write_script("jws.js", jws_js) != 0 ||
	    write_script("eab.js", eab_js) != 0 ||
	    write_script("alpn.js", alpn_js) != 0) {
		fprintf(stderr, "cannot write the scripts in %s\n", dir);
		return 1;
	}

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, b64url_vectors);
	tcase_add_test(tc, b64url_round_trips);
	tcase_add_test(tc, b64url_bad_input_rejected);
	tcase_add_test(tc, rfc7638_thumbprint);
	tcase_add_test(tc, new_keys_and_jwks);
	tcase_add_test(tc, other_keys_refused);
	tcase_add_test(tc, jws_with_jwk_verified_by_node);
	tcase_add_test(tc, es256_signatures_fixed_width);
	tcase_add_test(tc, jws_with_kid_and_post_as_get);
	tcase_add_test(tc, jws_rs256_verified_by_node);
	tcase_add_test(tc, eab_hmac_checked_by_node);
	tcase_add_test(tc, key_authorization);
	tcase_add_test(tc, csr_ecdsa_checked_by_openssl);
	tcase_add_test(tc, csr_rsa_checked_by_openssl);
	tcase_add_test(tc, csr_long_first_name_and_bad_names);
	tcase_add_test(tc, alpn_cert_checked_by_openssl_and_node);
	tcase_add_test(tc, ari_cert_ids);
	tcase_add_test(tc, key_save_load_ecdsa);
	tcase_add_test(tc, key_save_load_rsa);
	tcase_add_test(tc, key_load_failures);
	tcase_add_test(tc, atomic_write_replaces_with_exact_mode);
	tcase_add_test(tc, atomic_write_unwritable_directory_keeps_old_file);
	tcase_add_test(tc, atomic_write_failing_midway_keeps_old_file);
	tcase_add_test(tc, atomic_write_other_failures);
	suite_add_tcase(s, tc);
	return check_run(s);
}
