/* tls_ctx.h: one [context] section built into a BoringSSL SSL_CTX. */
#ifndef TLSPROXY_TLS_CTX_H
#define TLSPROXY_TLS_CTX_H

#include <openssl/ssl.h>

struct config;
struct conf_context;

struct tls_ctx {
	char *name;
	SSL_CTX *ssl_ctx;
};

/* tls_ctx_init fills |t| from |cc|: reads and checks the certificate chain
 * and key and configures the SSL_CTX. Problems go to |cfg|'s error list
 * with the file and line of the key concerned; returns 0 or -1. */
int tls_ctx_init(struct tls_ctx *t, struct config *cfg,
    const struct conf_context *cc);

/* tls_ctx_release frees what tls_ctx_init made. */
void tls_ctx_release(struct tls_ctx *t);

/* tls_ctx_set_select_cb installs |cb| as the early (ClientHello) callback
 * of every context: it runs before a certificate is chosen. */
void tls_ctx_set_select_cb(struct tls_ctx *t,
    enum ssl_select_cert_result_t (*cb)(const SSL_CLIENT_HELLO *));

#endif
