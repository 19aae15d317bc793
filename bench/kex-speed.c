/* kex-speed: what the server's side of a TLS 1.3 key exchange and its
 * ECDSA signature cost with one BoringSSL build, in microseconds per
 * operation on one core. It compares builds of the library (a compiler,
 * an optimisation level, a release against another), not whole
 * handshakes: bench/tlsproxy-ab and bench/compare do that.
 *
 *   B=~/.cache/tlsproxy/boringssl-0.20260813.0
 *   cc -O2 bench/kex-speed.c -I$B/include $B/lib/libcrypto.a -lstdc++ \
 *       -lpthread -o kex-speed && taskset -c 0 ./kex-speed
 */
#include <openssl/bytestring.h>
#include <openssl/curve25519.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/nid.h>
#if defined(__has_include) && __has_include(<openssl/mlkem.h>)
#include <openssl/mlkem.h>
#define HAVE_MLKEM 1
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Long enough that a timer tick or a stray interrupt is noise. */
#define ITERATIONS 20000

static double
now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void
report(const char *what, double start)
{
	printf("%-44s %6.1f us\n", what, (now() - start) / ITERATIONS * 1e6);
}

int
main(void)
{
	uint8_t priv[32], pub[32], shared[32], digest[32] = { 1 }, sig[80];
	EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
	unsigned sig_len;
	double t;

	if (ec == NULL || !EC_KEY_generate_key(ec)) {
		fprintf(stderr, "kex-speed: cannot make a P-256 key\n");
		return 1;
	}
	t = now();
	for (int i = 0; i < ITERATIONS; i++)
		X25519_keypair(pub, priv);
	report("X25519 key generation", t);
	t = now();
	for (int i = 0; i < ITERATIONS; i++) {
		if (!X25519(shared, priv, pub))
			return 1;
	}
	report("X25519 shared secret", t);
#ifdef HAVE_MLKEM
	{
		static uint8_t peer[MLKEM768_PUBLIC_KEY_BYTES];
		static uint8_t ct[MLKEM768_CIPHERTEXT_BYTES];
		static struct MLKEM768_private_key peer_priv;
		static struct MLKEM768_public_key key;

		MLKEM768_generate_key(peer, NULL, &peer_priv);
		t = now();
		for (int i = 0; i < ITERATIONS; i++) {
			CBS cbs;

			/* A server parses every client's key afresh. */
			CBS_init(&cbs, peer, sizeof(peer));
			if (!MLKEM768_parse_public_key(&key, &cbs))
				return 1;
			MLKEM768_encap(ct, shared, &key);
		}
		report("ML-KEM-768 public key parse + encapsulation", t);
	}
#else
	printf("%-44s %9s\n", "ML-KEM-768 public key parse + encapsulation",
	    "(none)");
#endif
	t = now();
	for (int i = 0; i < ITERATIONS; i++) {
		sig_len = sizeof(sig);
		if (!ECDSA_sign(0, digest, sizeof(digest), sig, &sig_len, ec))
			return 1;
	}
	report("ECDSA P-256 signature", t);
	EC_KEY_free(ec);
	return 0;
}
