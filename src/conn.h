/* conn.h: one client connection: TLS handshake, backend connect, relay,
 * timeouts, and the single way out, conn_close(). */
#ifndef TLSPROXY_CONN_H
#define TLSPROXY_CONN_H

#include <openssl/ssl.h>
#include <stdint.h>
#include <sys/socket.h>

struct worker;
struct listener;
struct listener_conf;
struct generation;
struct peer_ref;

/* conn_start takes ownership of an accepted socket |fd| and starts the
 * handshake. |gen| is referenced for the life of the connection. On
 * failure the socket is closed and the event logged. */
void conn_start(struct worker *w, struct listener *l, struct generation *gen,
    const struct listener_conf *lc, int fd, const struct sockaddr *peer,
    socklen_t peer_len, const struct peer_ref *ref);

/* conn_log_refused writes the access-log line of a connection closed at
 * accept by a limit named |limit|. */
void conn_log_refused(struct worker *w, const struct listener_conf *lc,
    const struct sockaddr *peer, socklen_t peer_len, const char *limit);

/* conn_close_all ends every connection of |w| with |reason|, sending
 * close_notify where the handshake finished. */
void conn_close_all(struct worker *w, const char *reason);

/* conn_select_cert is the ClientHello callback of every context: it
 * records the server name and switches to the context the listener's SNI
 * table names for it. */
enum ssl_select_cert_result_t conn_select_cert(const SSL_CLIENT_HELLO *hello);

/* conn_store_put and conn_store_get connect the session cache to the
 * worker's session store (see session_cache_set_external). */
void conn_store_put(SSL *ssl, SSL_SESSION *session);
SSL_SESSION *conn_store_get(SSL *ssl, const uint8_t *id, size_t id_len);

/* conn_servername is the server-name callback of every context: it sends
 * the unrecognized_name alert when conn_select_cert refused the name on a
 * listener with sni_strict. */
int conn_servername(SSL *ssl, int *out_alert, void *arg);

#endif
