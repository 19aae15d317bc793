/* fuzz_ocsp.c: libFuzzer target for the OCSP response parser and
 * verifier. The certificates are fixed (made once for this target), and
 * the clock is set inside the validity of the seed response, so inputs
 * near the seed reach every check. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ocsp.h"

/* Inside the seed response's thisUpdate .. nextUpdate. */
#define FUZZ_NOW 1795800400

static const char ca_pem[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBeDCCAR+gAwIBAgIUSXgVZ9QmjINWA+1IIGt+oUH1SnYwCgYIKoZIzj0EAwIw\n"
	"EjEQMA4GA1UEAwwHZnV6eiBDQTAeFw0yNjExMjcxNzI1MDdaFw0zNjExMjQxNzI1\n"
	"MDdaMBIxEDAOBgNVBAMMB2Z1enogQ0EwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC\n"
	"AATSQp7gHEjTSTZ2lN+0UXHDNv+bpyYhnmlA3t0Pvy6yVnbQSq4s7Ti8nF5JwGA4\n"
	"r6xDB1xmz+Uh98w8PmPSK/71o1MwUTAdBgNVHQ4EFgQUae+nHuYpdG2hLS3UVR2K\n"
	"Z40XjuEwHwYDVR0jBBgwFoAUae+nHuYpdG2hLS3UVR2KZ40XjuEwDwYDVR0TAQH/\n"
	"BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiADsFdEIgRgHKPUyyTDFVI0kCo375qy\n"
	"0fXDfkjVC/3x8wIgayGMWdJ36AiOj/a26gmYU5IQhZND0x9h/JtGzoBQSr4=\n"
	"-----END CERTIFICATE-----\n";

static const char leaf_pem[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBCTCBsAICEAEwCgYIKoZIzj0EAwIwEjEQMA4GA1UEAwwHZnV6eiBDQTAeFw0y\n"
	"NjExMjcxNzI1MDdaFw0zNjExMjQxNzI1MDdaMA8xDTALBgNVBAMMBGZ1enowWTAT\n"
	"BgcqhkjOPQIBBggqhkjOPQMBBwNCAASR1szzVz0YZmIwCcQ3dWS+2bgbaahUIlxf\n"
	"HPHe/x19otq7CPTNovYewIijp2raE/8dUq66+dawRvSKmV2Pbb9eMAoGCCqGSM49\n"
	"BAMCA0gAMEUCIQDdM5un6akDpJw9SFmEBVLicsFN+FpH7gPh6Yf1NHlwMQIgP7zL\n"
	"d+3tW6lHI0A3M13ZCV1CaWuVkz2Danjei8gy+hI=\n"
	"-----END CERTIFICATE-----\n";

static X509 *
fuzz_cert(const char *pem)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)strlen(pem));
	X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);

	BIO_free(bio);
	return x;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static X509 *ca, *leaf;
	struct ocsp_result r;
	char err[256];

	if (ca == NULL) {
		ca = fuzz_cert(ca_pem);
		leaf = fuzz_cert(leaf_pem);
	}
	ocsp_check(data, size, leaf, ca, FUZZ_NOW, &r, err, sizeof(err));
	ocsp_must_staple(leaf);
	return 0;
}
