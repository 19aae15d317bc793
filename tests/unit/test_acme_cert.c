/* ACME certificate slots and challenge answers: slots shared by order and
 * freed with their last reference; no certificate before one is
 * published, then the newest one; tls-alpn-01 handshakes get the
 * challenge certificate and acme-tls/1 only for a name being validated;
 * http-01 answers set, read and cleared. Handshakes run in memory. */
#include <check.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pool.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "../check_run.h"
#include "acme_cert.h"
#include "acme_challenge.h"
#include "retire.h"

/* make_cert returns a self-signed P-256 certificate for |cn| as DER, and
 * its key in |*out_key|. */
static CRYPTO_BUFFER *
make_cert(const char *cn, EVP_PKEY **out_key)
{
	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	EVP_PKEY *pkey = EVP_PKEY_new();
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	uint8_t *der = NULL;
	int len;
	CRYPTO_BUFFER *buf;

	ck_assert(ec != NULL && pkey != NULL && x != NULL && name != NULL);
	ck_assert_int_eq(EC_KEY_generate_key(ec), 1);
	ck_assert_int_eq(EVP_PKEY_assign_EC_KEY(pkey, ec), 1);
	ck_assert_int_eq(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const uint8_t *)cn, -1, -1, 0), 1);
	ck_assert_int_eq(X509_set_version(x, X509_VERSION_3), 1);
	ck_assert_int_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), 7), 1);
	ck_assert_int_eq(X509_set_subject_name(x, name), 1);
	ck_assert_int_eq(X509_set_issuer_name(x, name), 1);
	ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
	ck_assert_ptr_nonnull(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
	ck_assert_int_eq(X509_set_pubkey(x, pkey), 1);
	ck_assert(X509_sign(x, pkey, EVP_sha256()) > 0);
	len = i2d_X509(x, &der);
	ck_assert_int_gt(len, 0);
	buf = CRYPTO_BUFFER_new(der, (size_t)len, NULL);
	ck_assert_ptr_nonnull(buf);
	OPENSSL_free(der);
	X509_NAME_free(name);
	X509_free(x);
	*out_key = pkey;
	return buf;
}

/* What the server side of a test handshake does in its early callback:
 * the same as conn_select_cert, reduced to ACME. */
static struct acme_slot *server_slot;
static const char *server_sni;
static enum acme_hello server_hello;
static int server_refused;

static enum ssl_select_cert_result_t
select_cert(const SSL_CLIENT_HELLO *hello)
{
	server_hello = acme_challenge_hello(hello, server_sni);
	ERR_clear_error();
	server_refused = server_hello == ACME_HELLO_REFUSE ||
	    (server_hello == ACME_HELLO_NONE &&
	    acme_slot_apply(server_slot, hello->ssl, 0) != 0);
	return server_refused ? ssl_select_cert_error :
	    ssl_select_cert_success;
}

/* handshake runs a handshake in memory for |sni| (offering |alpn| when
 * not NULL) and returns the leaf the client got (NULL: it failed), and
 * the protocol selected in |alpn_out|. */
static CRYPTO_BUFFER *
handshake(const char *sni, const char *alpn, char *alpn_out,
    size_t alpn_out_len)
{
	SSL_CTX *sctx = SSL_CTX_new(TLS_method());
	SSL_CTX *cctx = SSL_CTX_new(TLS_method());
	SSL *srv, *cli;
	BIO *bs, *bc;
	int done_s = 0, done_c = 0, failed = 0;
	CRYPTO_BUFFER *leaf = NULL;

	ck_assert(sctx != NULL && cctx != NULL);
	SSL_CTX_set_select_certificate_cb(sctx, select_cert);
	srv = SSL_new(sctx);
	cli = SSL_new(cctx);
	ck_assert(srv != NULL && cli != NULL);
	ck_assert_int_eq(BIO_new_bio_pair(&bs, 0, &bc, 0), 1);
	SSL_set_bio(srv, bs, bs);
	SSL_set_bio(cli, bc, bc);
	SSL_set_accept_state(srv);
	SSL_set_connect_state(cli);
	ck_assert_int_eq(SSL_set_tlsext_host_name(cli, sni), 1);
	if (alpn != NULL) {
		uint8_t wire[64];

		wire[0] = (uint8_t)strlen(alpn);
		memcpy(wire + 1, alpn, strlen(alpn));
		ck_assert_int_eq(SSL_set_alpn_protos(cli, wire, strlen(alpn) + 1),
		    0);
	}
	server_sni = sni;
	for (int i = 0; i < 20 && !failed && !(done_s && done_c); i++) {
		int r;

		if (!done_c) {
			r = SSL_do_handshake(cli);
			done_c = r == 1;
			failed |= r <= 0 && SSL_get_error(cli, r) == SSL_ERROR_SSL;
		}
		if (!done_s) {
			r = SSL_do_handshake(srv);
			done_s = r == 1;
			failed |= r <= 0 && SSL_get_error(srv, r) == SSL_ERROR_SSL;
		}
	}
	alpn_out[0] = '\0';
	if (!failed && done_s && done_c) {
		const uint8_t *p;
		unsigned n;
		const STACK_OF(CRYPTO_BUFFER) *chain =
		    SSL_get0_peer_certificates(cli);

		leaf = sk_CRYPTO_BUFFER_value(chain, 0);
		CRYPTO_BUFFER_up_ref(leaf);
		SSL_get0_alpn_selected(cli, &p, &n);
		if (n < alpn_out_len) {
			if (n > 0)
				memcpy(alpn_out, p, n);
			alpn_out[n] = '\0';
		}
	}
	SSL_free(srv);
	SSL_free(cli);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	return leaf;
}

static int
same(const CRYPTO_BUFFER *a, const CRYPTO_BUFFER *b)
{
	return a != NULL && b != NULL &&
	    CRYPTO_BUFFER_len(a) == CRYPTO_BUFFER_len(b) &&
	    memcmp(CRYPTO_BUFFER_data(a), CRYPTO_BUFFER_data(b),
	    CRYPTO_BUFFER_len(a)) == 0;
}

START_TEST(slots_shared_by_order_and_freed_with_last_reference)
{
	const char *names[] = { "a.example.test", "b.example.test" };
	char key[256], key2[256];
	size_t before = acme_slots_live();
	struct acme_slot *a, *b, *c;

	ck_assert_ptr_nonnull(acme_slot_key("le", names, 2, key, sizeof(key)));
	ck_assert_str_eq(key, "le:a.example.test,b.example.test");
	ck_assert_ptr_null(acme_slot_key("le", names, 2, key2, 10));
	ck_assert_ptr_nonnull(acme_slot_key("le", names, 1, key2, sizeof(key2)));
	a = acme_slot_get(key);
	b = acme_slot_get(key);
	c = acme_slot_get(key2);
	ck_assert_ptr_eq(a, b);
	ck_assert_ptr_ne(a, c);
	ck_assert_str_eq(acme_slot_name(a), key);
	ck_assert_uint_eq(acme_slots_live(), before + 2);
	acme_slot_unref(a);
	ck_assert_uint_eq(acme_slots_live(), before + 2);
	acme_slot_unref(b);
	acme_slot_unref(c);
	ck_assert_uint_eq(acme_slots_live(), before);
	acme_slot_unref(NULL);
}
END_TEST

START_TEST(no_certificate_until_published_then_the_newest)
{
	struct acme_slot *s = acme_slot_get("le:new.example.test");
	EVP_PKEY *k1, *k2;
	CRYPTO_BUFFER *c1 = make_cert("new.example.test", &k1);
	CRYPTO_BUFFER *c2 = make_cert("new.example.test", &k2);
	CRYPTO_BUFFER *got, *leaf;
	char alpn[32];

	server_slot = s;
	ck_assert_int_eq(acme_slot_not_after(s), 0);
	ck_assert_ptr_null(acme_slot_leaf(s));
	ck_assert_ptr_null(handshake("new.example.test", NULL, alpn,
	    sizeof(alpn)));
	ck_assert(server_refused);
	ck_assert_int_eq(acme_slot_set(s, &c1, 1, k1, 1000), 0);
	ck_assert_int_eq(acme_slot_not_after(s), 1000);
	got = handshake("new.example.test", NULL, alpn, sizeof(alpn));
	ck_assert(same(got, c1));
	CRYPTO_BUFFER_free(got);
	ck_assert_int_eq(acme_slot_set(s, &c2, 1, k2, 2000), 0);
	got = handshake("new.example.test", NULL, alpn, sizeof(alpn));
	ck_assert(same(got, c2));
	leaf = acme_slot_leaf(s);
	ck_assert(same(leaf, c2));
	CRYPTO_BUFFER_free(leaf);
	CRYPTO_BUFFER_free(got);
	ck_assert_int_eq(acme_slot_set(s, &c2, 0, k2, 0), -1);
	acme_slot_unref(s);
	retire_collect();
	CRYPTO_BUFFER_free(c1);
	CRYPTO_BUFFER_free(c2);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
}
END_TEST

START_TEST(tls_alpn_answered_only_for_names_being_validated)
{
	struct acme_slot *s = acme_slot_get("le:c.example.test");
	EVP_PKEY *ck, *sk;
	CRYPTO_BUFFER *chal = make_cert("c.example.test challenge", &ck);
	CRYPTO_BUFFER *site = make_cert("c.example.test", &sk);
	CRYPTO_BUFFER *got;
	char alpn[32];
	size_t num_tls, num_http;

	server_slot = s;
	ck_assert_int_eq(acme_slot_set(s, &site, 1, sk, 1000), 0);
	/* Nothing to validate yet: acme-tls/1 is refused, other ALPN is
	 * served the site's certificate. */
	ck_assert_ptr_null(handshake("c.example.test", ACME_TLS_ALPN, alpn,
	    sizeof(alpn)));
	ck_assert_int_eq(server_hello, ACME_HELLO_REFUSE);
	got = handshake("c.example.test", "h2", alpn, sizeof(alpn));
	ck_assert(same(got, site));
	CRYPTO_BUFFER_free(got);
	ck_assert_int_eq(server_hello, ACME_HELLO_NONE);

	ck_assert_int_eq(acme_challenge_set_tls("c.example.test", chal, ck), 0);
	acme_challenge_count(&num_tls, &num_http);
	ck_assert_uint_eq(num_tls, 1);
	got = handshake("C.Example.Test", ACME_TLS_ALPN, alpn, sizeof(alpn));
	ck_assert_int_eq(server_hello, ACME_HELLO_ANSWER);
	ck_assert(same(got, chal));
	ck_assert_str_eq(alpn, ACME_TLS_ALPN);
	CRYPTO_BUFFER_free(got);
	/* Another name, or no acme-tls/1: no challenge certificate. */
	ck_assert_ptr_null(handshake("d.example.test", ACME_TLS_ALPN, alpn,
	    sizeof(alpn)));
	ck_assert_int_eq(server_hello, ACME_HELLO_REFUSE);
	got = handshake("c.example.test", "http/1.1", alpn, sizeof(alpn));
	ck_assert(same(got, site));
	CRYPTO_BUFFER_free(got);

	acme_challenge_clear_tls("c.example.test");
	acme_challenge_count(&num_tls, &num_http);
	ck_assert_uint_eq(num_tls, 0);
	ck_assert_ptr_null(handshake("c.example.test", ACME_TLS_ALPN, alpn,
	    sizeof(alpn)));
	acme_slot_unref(s);
	retire_collect();
	CRYPTO_BUFFER_free(chal);
	CRYPTO_BUFFER_free(site);
	EVP_PKEY_free(ck);
	EVP_PKEY_free(sk);
}
END_TEST

START_TEST(http_answers_set_read_and_cleared)
{
	char *ka;
	size_t num_tls, num_http;

	ck_assert_ptr_null(acme_challenge_http("tok1"));
	ck_assert_int_eq(acme_challenge_set_http("tok1", "tok1.thumb"), 0);
	ck_assert_int_eq(acme_challenge_set_http("tok2", "tok2.thumb"), 0);
	ck_assert_int_eq(acme_challenge_set_http("tok1", "tok1.other"), 0);
	acme_challenge_count(&num_tls, &num_http);
	ck_assert_uint_eq(num_http, 2);
	ka = acme_challenge_http("tok1");
	ck_assert_str_eq(ka, "tok1.other");
	free(ka);
	acme_challenge_clear_http("tok1");
	ck_assert_ptr_null(acme_challenge_http("tok1"));
	ka = acme_challenge_http("tok2");
	ck_assert_str_eq(ka, "tok2.thumb");
	free(ka);
	acme_challenge_clear_http("tok2");
	acme_challenge_clear_http("never-set");
	acme_challenge_count(&num_tls, &num_http);
	ck_assert_uint_eq(num_http, 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("acme_cert");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, slots_shared_by_order_and_freed_with_last_reference);
	tcase_add_test(tc, no_certificate_until_published_then_the_newest);
	tcase_add_test(tc, tls_alpn_answered_only_for_names_being_validated);
	tcase_add_test(tc, http_answers_set_read_and_cleared);
	suite_add_tcase(s, tc);
	return check_run(s);
}
