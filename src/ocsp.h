/* ocsp.h: OCSP requests and responses (RFC 6960) built and checked with
 * BoringSSL's byte-string builders, since BoringSSL has no OCSP API. */
#ifndef TLSPROXY_OCSP_H
#define TLSPROXY_OCSP_H

#include <openssl/base.h>
#include <stddef.h>
#include <stdint.h>

enum ocsp_status {
	OCSP_GOOD,
	OCSP_REVOKED,
	OCSP_UNKNOWN,
};

struct ocsp_result {
	enum ocsp_status status;
	int64_t this_update; /* seconds since the epoch */
	int64_t next_update; /* 0: the response had none */
	int64_t revoked_at;  /* OCSP_REVOKED only */
};

/* A response without nextUpdate is treated as valid this long after its
 * thisUpdate. */
#define OCSP_NO_NEXT_UPDATE_VALIDITY (3600)

/* Clock skew allowed for a thisUpdate in the future. */
#define OCSP_CLOCK_SKEW (300)

/* ocsp_request builds the DER OCSPRequest for |leaf|, issued by |issuer|
 * (CertID with SHA-1, as responders expect). Returns 0 and a buffer for
 * OPENSSL_free, or -1. */
int ocsp_request(X509 *leaf, X509 *issuer, uint8_t **out, size_t *out_len);

/* ocsp_must_staple returns whether |cert| carries the TLS feature
 * extension asking for status_request (RFC 7633, "must-staple"). */
int ocsp_must_staple(X509 *cert);

/* ocsp_responder_url returns the OCSP responder URL of |leaf|'s Authority
 * Information Access extension (malloc'd), or NULL. */
char *ocsp_responder_url(X509 *leaf);

/* ocsp_check parses a DER OCSPResponse and accepts it for |leaf| only if
 * it is successful and basic, signed by |issuer| or by a responder
 * certificate |issuer| signed that names the OCSP-signing purpose in its
 * extended key usage and is within its validity period at |now|, holds a
 * response for exactly this certificate whose times are well-formed
 * (nextUpdate, if any, not before thisUpdate), and is current at |now|.
 * Returns 0 with |out| filled, or -1 with the reason in |err|. */
int ocsp_check(const uint8_t *der, size_t der_len, X509 *leaf, X509 *issuer,
    int64_t now, struct ocsp_result *out, char *err, size_t err_len);

#endif
