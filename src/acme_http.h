/* acme_http.h: the plain-HTTP side of an acme_http listener, run by the
 * workers: GET /.well-known/acme-challenge/TOKEN gets the key
 * authorization of a token being validated (http-01, RFC 8555 section
 * 8.3), anything else a redirect to the same URL over https. One request
 * per connection, read within a few seconds and a few kilobytes, then
 * closed; at most ACME_HTTP_MAX connections per worker at once. */
#ifndef TLSPROXY_ACME_HTTP_H
#define TLSPROXY_ACME_HTTP_H

#include <stddef.h>
#include <sys/socket.h>

#define ACME_HTTP_MAX 1024

struct event_base;
struct acme_http_set;

/* acme_http_set_new makes the set of a worker's HTTP connections on
 * |base|; NULL out of memory. */
struct acme_http_set *acme_http_set_new(struct event_base *base);

/* acme_http_accept takes over accepted socket |fd| from |peer|. */
void acme_http_accept(struct acme_http_set *s, int fd,
    const struct sockaddr *peer, socklen_t peer_len);

/* acme_http_set_free closes every connection and frees |s|. NULL is
 * fine. */
void acme_http_set_free(struct acme_http_set *s);

/* acme_http_answer builds the response to request |req| (|len| bytes, the
 * head up to the blank line) into |out|; returns its length, and the
 * status in |*status|. Exposed for tests and fuzzing. */
size_t acme_http_answer(const char *req, size_t len, char *out,
    size_t out_len, int *status);

#endif
