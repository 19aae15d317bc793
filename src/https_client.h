/* https_client.h: the HTTPS client the ACME client (RFC 8555) talks to
 * its certificate authority with. One request per connection (HTTP/1.1,
 * Connection: close), in blocking style for the ACME thread: the socket
 * is non-blocking and every wait is a poll() bounded by an absolute
 * deadline that also watches a cancel descriptor. The TLS is the one
 * client of the code base, backend_tls's: a verifying SSL_CTX, TLS 1.2 to
 * 1.3, and the host's name (or IP literal) checked against the
 * certificate. Verification cannot be turned off.
 *
 * Not thread-safe per client: one thread uses a struct https_client at a
 * time. The process must ignore SIGPIPE (the daemon and the tests do). */
#ifndef TLSPROXY_HTTPS_CLIENT_H
#define TLSPROXY_HTTPS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The caps on what a server sends: past them the request fails. */
#define HTTPS_MAX_HEADERS (64 * 1024) /* the header block(s), interim
                                        * responses and trailers included */
#define HTTPS_MAX_BODY (1024 * 1024)

/* The message of a cancelled request, exactly (the URL is not added),
 * for callers to tell a shutdown from a failure. */
#define HTTPS_CANCELLED "cancelled"

struct https_client;

/* A header as received: the name as sent (compare case-insensitively),
 * the value with surrounding whitespace removed and folded lines joined
 * by a space. */
struct https_header {
	char *name;
	char *value;
};

/* A link of a Link header (RFC 8288): the target as sent between < and >
 * (not resolved against the request URL: ACME servers send absolute
 * URLs) and its rel parameter, which may list several relation types
 * separated by spaces. */
struct https_link {
	char *url;
	char *rel; /* "" without rel */
};

struct https_response {
	int status;
	/* Every header, in order; the ones ACME reads are also here (NULL
	 * when absent; the first when repeated). */
	struct https_header *headers;
	size_t num_headers;
	const char *replay_nonce;
	const char *location;
	const char *retry_after;  /* raw: https_retry_after reads it */
	const char *content_type;
	/* Every link of every Link header, in order. */
	struct https_link *links;
	size_t num_links;
	/* The body, NUL-terminated beyond |body_len| (not counted), never
	 * NULL after a successful request ("" for HEAD, 204, 304). */
	char *body;
	size_t body_len;
};

/* https_client_new makes a client that trusts the PEM CA certificates of
 * |ca_file|, or the system store when it is NULL. Messages name the
 * [acme] key "ca" as the way to set a CA file. NULL with the reason in
 * |err| on failure (backend_tls_load_ca's words). */
struct https_client *https_client_new(const char *ca_file, char *err,
    size_t err_len);

void https_client_free(struct https_client *hc);

/* https_request sends one request and reads its response into |out|
 * (zeroed first; free it with https_response_free, also after a
 * failure, which leaves it empty).
 *
 * |method| is "GET", "HEAD" or "POST". |url| is https://HOST[:PORT][/PATH]
 * where HOST is a DNS name, an IPv4 literal or a bracketed IPv6 literal;
 * a fragment is dropped. A name is resolved with getaddrinfo (in a helper
 * thread, so that the deadline and |cancel_fd| hold) and sent as SNI;
 * each address is tried in turn, each with an even share of the time
 * left. The certificate must chain to the client's CAs and be valid for
 * HOST (IP literals: an IP address SAN).
 *
 * The request carries Host, User-Agent tlsproxy/VERSION, Accept,
 * Connection: close, and, with a body or for POST, Content-Type (when
 * |content_type| is not NULL) and Content-Length. Interim 1xx responses
 * are skipped. The body is read by Content-Length, chunked
 * transfer-coding (trailers read and dropped) or until the server closes
 * (with or without close_notify: a truncated JSON body fails to parse
 * anyway); HEAD, 204 and 304 have none.
 *
 * |deadline_ms| is absolute on CLOCK_MONOTONIC (clock_mono_ms()).
 * |cancel_fd| (-1: none) is polled beside every wait: once readable the
 * request ends with HTTPS_CANCELLED as the message. Nothing is read from
 * it.
 *
 * Returns 0 when a response was read, whatever its status, or -1 with a
 * message in |err| naming the URL and what failed: resolving, connecting
 * (refused, timed out), the TLS handshake (BoringSSL's reason),
 * certificate verification ("certificate verify failed: " and the X509
 * reason), a malformed or over-large response, the deadline. */
int https_request(struct https_client *hc, const char *method,
    const char *url, const char *content_type, const void *body,
    size_t body_len, uint64_t deadline_ms, int cancel_fd,
    struct https_response *out, char *err, size_t err_len);

void https_response_free(struct https_response *resp);

/* https_response_header returns the value of the first header |name|
 * (case-insensitive), or NULL. */
const char *https_response_header(const struct https_response *resp,
    const char *name);

/* https_response_link returns the URL of the first link whose rel
 * includes |rel| (case-insensitive, e.g. "up", "alternate", "index"), or
 * NULL. */
const char *https_response_link(const struct https_response *resp,
    const char *rel);

/* https_response_links iterates over the links with rel |rel|: start
 * with *|pos| = 0; each call returns the next URL, or NULL at the end.
 *
 *	size_t pos = 0;
 *	const char *u;
 *	while ((u = https_response_links(resp, "alternate", &pos)) != NULL)
 *		...
 */
const char *https_response_links(const struct https_response *resp,
    const char *rel, size_t *pos);

/* https_retry_after reads a Retry-After value (RFC 9110 10.2.3): delta
 * seconds, or an HTTP-date (IMF-fixdate, RFC 850 or asctime form) taken
 * against |now| (seconds since the epoch). The wait goes to |*out_ms|: 0
 * for a date in the past, saturated rather than overflowing. Returns 0,
 * or -1 when |value| is neither. */
int https_retry_after(const char *value, time_t now, uint64_t *out_ms);

#endif
