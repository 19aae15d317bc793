/* acme_jose.h: the JOSE and certificate pieces of the ACME client
 * (RFC 8555): base64url, keys and their JWKs and thumbprints (RFC 7517,
 * RFC 7638), signed request bodies (flattened JWS, RFC 7515), external
 * account binding, key authorizations, CSRs, the tls-alpn-01 challenge
 * certificate (RFC 8737) and renewal-information certificate ids
 * (RFC 9773), and the key files. Apart from those files, pure functions
 * of their arguments (and of the random generator); every function is
 * safe to call from any thread, and leaves no error on BoringSSL's
 * queue.
 *
 * Strings returned as char * are NUL-terminated and malloc'd: free() them.
 * json_t results are jansson references: json_decref() them. */
#ifndef TLSPROXY_ACME_JOSE_H
#define TLSPROXY_ACME_JOSE_H

#include <openssl/base.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* Base64url (RFC 4648 section 5) of |len| bytes, without padding. NULL
 * only when out of memory. */
char *acme_b64url(const uint8_t *data, size_t len);

/* acme_b64url_decode decodes the NUL-terminated base64url string |s|.
 * Unpadded input is what JOSE uses and is accepted; so is input carrying
 * exactly the '=' padding standard base64 would add (as some CAs print
 * EAB keys). Refused, returning -1: any character outside the url-safe
 * alphabet (including '+', '/' and whitespace), misplaced or excess '=',
 * a length no encoding has (4n+1), and non-zero bits left over in the
 * last character (non-canonical). Returns 0 with |*out| malloc'd (never
 * NULL, even for zero bytes) and |*out_len| set. */
int acme_b64url_decode(const char *s, uint8_t **out, size_t *out_len);

enum acme_key_type {
	ACME_KEY_ECDSA, /* P-256 */
	ACME_KEY_RSA,   /* 2048 bits, e = 65537 */
};

/* acme_key_new makes a fresh key of |type|: EVP_PKEY_free() it. NULL on
 * failure. Account keys are always ACME_KEY_ECDSA. */
EVP_PKEY *acme_key_new(enum acme_key_type type);

/* acme_key_type_of returns whether |key| is one this module handles:
 * 0 with |*out| set for a P-256 or an RSA key (of at least 2048 bits),
 * -1 for anything else. */
int acme_key_type_of(const EVP_PKEY *key, enum acme_key_type *out);

/* acme_jwk returns the public JWK of |key|, holding exactly the members
 * RFC 7638 requires: {"crv":"P-256","kty":"EC","x","y"} with 32-byte
 * big-endian coordinates, or {"e","kty":"RSA","n"} with the minimal
 * big-endian integers. NULL for other keys. */
json_t *acme_jwk(const EVP_PKEY *key);

/* acme_thumbprint returns the RFC 7638 JWK thumbprint of |key|:
 * base64url(SHA-256(the JWK's required members in lexicographic order,
 * without whitespace)). NULL for other keys. */
char *acme_thumbprint(const EVP_PKEY *key);

/* acme_jws returns the flattened JSON serialization of an ACME request
 * body signed with |account_key| (RFC 8555 section 6.2):
 * {"protected","payload","signature"}. The protected header holds
 * exactly "alg", "nonce", "url" and either "kid" (the account URL) or,
 * with |kid| NULL (newAccount, revokeCert by certificate key), "jwk".
 * alg is ES256 for a P-256 key (the signature is r||s, 64 bytes, not
 * DER) and RS256 for an RSA key. |payload| is JSON text, signed as
 * given; "" (or NULL) is POST-as-GET: the payload member is the empty
 * string (section 6.3). NULL on failure. */
char *acme_jws(EVP_PKEY *account_key, const char *kid, const char *nonce,
    const char *url, const char *payload);

/* acme_eab returns the externalAccountBinding member of a newAccount
 * payload (RFC 8555 section 7.3.4): a flattened JWS with protected
 * {"alg":"HS256","kid":eab_kid,"url":new_account_url}, payload the
 * account's public JWK, and an HMAC-SHA256 signature under the CA-given
 * |hmac_key| (already base64url-decoded). NULL on failure. */
json_t *acme_eab(EVP_PKEY *account_key, const char *eab_kid,
    const uint8_t *hmac_key, size_t hmac_key_len,
    const char *new_account_url);

/* acme_key_authorization returns |token| "." thumbprint(account key)
 * (RFC 8555 section 8.1). NULL on failure, and for a token that is
 * empty or not base64url (it becomes part of an http-01 URL path). */
char *acme_key_authorization(const char *token, const EVP_PKEY *account_key);

/* acme_csr returns a DER PKCS#10 certification request for |names|,
 * signed with |cert_key| over SHA-256 (ecdsa-with-SHA256 or
 * sha256WithRSAEncryption), with a subjectAltName extension request
 * listing every name as a dNSName and subject CN = the first name (no
 * subject at all when that name is longer than the 64 characters a CN
 * may hold; the CA reads the SAN). Names must be 1-253 characters of
 * letters, digits, '-', '.', '_' and '*' (IDNs as A-labels). |cert_key|
 * must be one acme_key_type_of accepts. Returns a buffer for
 * OPENSSL_free() and its length in |*out_len|, or NULL. */
uint8_t *acme_csr(EVP_PKEY *cert_key, const char *const *names,
    size_t num_names, size_t *out_len);

/* acme_alpn_cert makes the tls-alpn-01 challenge certificate for |name|
 * (RFC 8737 section 3): a fresh P-256 key, self-signed (issuer and
 * subject CN "ACME tls-alpn-01 challenge"), valid from a day
 * ago to seven days ahead, with a random serial, a subjectAltName of
 * exactly the dNSName |name| and the critical id-pe-acmeIdentifier
 * extension (1.3.6.1.5.5.7.1.31) holding the DER OCTET STRING of
 * SHA-256(|key_authorization|). The certificate is made in |pool| (may
 * be NULL). Returns 0 with |*out_cert| (CRYPTO_BUFFER_free()) and
 * |*out_key| (EVP_PKEY_free()), or -1 with both left NULL. */
int acme_alpn_cert(const char *name, const char *key_authorization,
    CRYPTO_BUFFER_POOL *pool, CRYPTO_BUFFER **out_cert, EVP_PKEY **out_key);

/* acme_ari_cert_id returns the renewal-information certificate
 * identifier of |cert| (RFC 9773 section 4.1): base64url(the keyIdentifier
 * of its Authority Key Identifier) "." base64url(the content octets of
 * its serialNumber's DER INTEGER, a leading zero byte included). NULL
 * when the certificate has no AKI keyIdentifier (or out of memory). */
char *acme_ari_cert_id(const X509 *cert);

/* acme_key_load reads a PEM private key (PKCS#8, or the traditional EC
 * and RSA forms) from |path|. Only keys acme_key_type_of accepts are
 * returned; otherwise NULL with the reason, naming |path|, in |err|. */
EVP_PKEY *acme_key_load(const char *path, char *err, size_t err_len);

/* acme_key_save writes |key| to |path| as an unencrypted PEM PKCS#8
 * private key, mode 0600, through atomic_file_write (never half-written).
 * Returns 0, or -1 with the reason in |err|. */
int acme_key_save(const char *path, const EVP_PKEY *key, char *err,
    size_t err_len);

#endif
