/* test_server_ctx.h: a server SSL_CTX with a fresh self-signed P-256
 * certificate, for unit tests that run handshakes in memory. */
#ifndef TLSPROXY_TEST_SERVER_CTX_H
#define TLSPROXY_TEST_SERVER_CTX_H

#include <check.h>

#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* test_server_ctx returns a new SSL_CTX serving a self-signed
 * certificate made now. */
static SSL_CTX *
test_server_ctx(void)
{
	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	EVP_PKEY *pkey = EVP_PKEY_new();
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	SSL_CTX *ctx = SSL_CTX_new(TLS_method());

	ck_assert(ec != NULL && pkey != NULL && x != NULL && name != NULL &&
	    ctx != NULL);
	ck_assert_int_eq(EC_KEY_generate_key(ec), 1);
	ck_assert_int_eq(EVP_PKEY_assign_EC_KEY(pkey, ec), 1);
	ck_assert_int_eq(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const uint8_t *)"staple.test", -1, -1, 0), 1);
	ck_assert_int_eq(X509_set_version(x, X509_VERSION_3), 1);
	ck_assert_int_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), 1), 1);
	ck_assert_int_eq(X509_set_subject_name(x, name), 1);
	ck_assert_int_eq(X509_set_issuer_name(x, name), 1);
	ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
	ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
	ck_assert_int_eq(X509_set_pubkey(x, pkey), 1);
	ck_assert(X509_sign(x, pkey, EVP_sha256()) > 0);
	ck_assert_int_eq(SSL_CTX_use_certificate(ctx, x), 1);
	ck_assert_int_eq(SSL_CTX_use_PrivateKey(ctx, pkey), 1);
	X509_NAME_free(name);
	X509_free(x);
	EVP_PKEY_free(pkey);
	return ctx;
}

#endif
