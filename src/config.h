/* config.h: tlsproxy.conf parsed into plain values. Parsing checks syntax,
 * types, bounds and references between sections; loading certificates and
 * building TLS contexts is generation.c's job, which reports through the
 * same error list. */
#ifndef TLSPROXY_CONFIG_H
#define TLSPROXY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "log.h"

#define CONFIG_MAX_KEYS 128

/* A string list: comma-separated values, and repeated keys append. */
struct strlist {
	char **v;
	int *lines;
	size_t num;
};

/* Every section starts with this header; |key_line[k]| is the line where
 * key |k| of the key table was set (0: not set, default applies). */
struct conf_head {
	char *name;
	int line;
	int key_line[CONFIG_MAX_KEYS];
};

/* TLS settings that [global] sets as defaults and a [context] overrides. */
struct conf_tls {
	char *ciphers;
	int64_t honor_cipher_order;
	char *ecdh_curve;
	char *min_version;
	char *max_version;
	int64_t max_send_fragment;
	struct strlist alpn;
	int64_t alpn_strict;
};

struct conf_global {
	struct conf_head h;
	struct conf_tls tls;
	int64_t workers; /* 0: auto */
	int64_t log_level;
	char *access_log; /* "yes", "no", "stderr", "syslog" or a path */
	uint64_t handshake_timeout_ms;
	uint64_t idle_timeout_ms;
	uint64_t shutdown_timeout_ms;
	uint64_t upgrade_timeout_ms;
	int64_t max_connections;
	uint64_t buffer_size;
	uint64_t busy_poll_ms;
	char *user;
	char *group;
	uint64_t session_timeout_ms;
	int64_t session_cache_size;
	int64_t session_tickets;
	char *ticket_keys;
	uint64_t ticket_rotation_ms;
	char *session_store;
	uint64_t session_store_timeout_ms;
	char *session_store_prefix;
	char *ocsp_cache_dir;
	uint64_t ocsp_timeout_ms;
	int64_t ocsp_staple_revoked;
	int64_t ocsp_must_staple_strict;
	char *admin;                /* "HOST:PORT" or "unix:/PATH" */
	struct addr admin_addr;     /* parsed |admin| */
	int64_t admin_allow_public;
	int64_t renegotiation_limit;
	uint64_t renegotiation_window_ms;
	int64_t max_connections_per_address;
	int64_t max_handshakes_per_address; /* per second */
	struct strlist resolver; /* DNS servers; empty: /etc/resolv.conf */
	uint64_t resolver_timeout_ms;
};

struct conf_listener {
	struct conf_head h;
	struct strlist bind;
	struct addr *addrs; /* parsed |bind|, |bind.num| entries */
	char *context;
	char *backend;
	int64_t max_connections; /* 0: only the global limit */
	int64_t sni_strict;
	struct strlist alpn_backend;
	char *proxy_protocol; /* "off", "v1" or "v2" */
	int64_t proxy_protocol_client_cert;
	struct strlist ech;       /* Encrypted Client Hello key files */
	struct strlist ech_retry; /* those sent as retry configs; none: all */
	/* Plain HTTP for ACME http-01 challenges, redirecting the rest to
	 * https; such a listener has no context or backend. */
	int64_t acme_http;
	struct conf_tls tls; /* overrides [global] for this listener's contexts */
};

struct conf_backend {
	struct conf_head h;
	struct strlist address;
	uint64_t connect_timeout_ms;
	char *proxy_protocol; /* NULL: the listener's */
	int64_t proxy_protocol_client_cert;
	/* TLS to the backend (tls.connect). */
	int64_t tls;
	char *tls_ca;   /* NULL: the system store */
	int64_t tls_verify;
	struct strlist tls_crl;
	int64_t tls_verify_depth;
	char *tls_servername;  /* NAME, "client", "none"; NULL: the host name */
	char *tls_verify_name; /* NULL: the servername, else the address */
	struct strlist tls_cert;
	struct strlist tls_key;
	char *tls_passphrase_file;
	char *tls_pfx;
	struct strlist tls_alpn; /* protocols, or "client" */
	char *tls_min_version;
	char *tls_max_version;
	char *tls_ciphers;
	char *tls_groups;
	int64_t tls_session_reuse;
	uint64_t tls_handshake_timeout_ms; /* 0: connect_timeout */
};

struct conf_context {
	struct conf_head h;
	struct conf_tls tls;
	struct strlist servername;
	struct strlist cert;
	struct strlist key;
	char *passphrase;
	char *passphrase_file;
	char *pfx;
	char *sct;
	char *ca;
	struct strlist crl;
	int64_t request_cert;
	int64_t reject_unauthorized;
	int64_t require_cert;
	int64_t verify_depth;
	struct strlist npn;
	char *session_id_context;
	char *backend;
	struct strlist alpn_backend;
	char *dhparam;
	char *ocsp; /* "auto", "off" or a DER response file */
	char *ocsp_responder;
	char *ocsp_issuer;
	char *acme;           /* [acme NAME] issuing this context's certificate */
	char *acme_challenge; /* "tls-alpn-01" or "http-01" */
};

/* An ACME account at one certificate authority (RFC 8555). */
struct conf_acme {
	struct conf_head h;
	char *directory;
	char *email;
	char *ca; /* trust for the ACME server's HTTPS; NULL: the system store */
	char *eab_kid;
	char *eab_hmac_key_file;
	char *key_type; /* "ecdsa" (P-256) or "rsa" (2048 bits) */
	uint64_t renew_before_ms; /* 0: ARI where offered, else 1/3 of lifetime */
	char *state_dir;
	char *shared_key_file; /* encrypts what instances share through Redis */
};

struct config {
	char *path;
	struct conf_global global;
	struct conf_listener *listeners;
	size_t num_listeners;
	struct conf_backend *backends;
	size_t num_backends;
	struct conf_context *contexts;
	size_t num_contexts;
	struct conf_acme *acmes;
	size_t num_acmes;
	/* Every error found, each "FILE:LINE: key 'K': message". */
	char **errors;
	size_t num_errors;
};

/* config_load reads and checks |path|. It always returns a config (NULL only
 * when out of memory); the caller checks |num_errors|. */
struct config *config_load(const char *path);

/* config_load_string is config_load on text in memory; |name| is used as the
 * file name in errors. It opens no file (the checks only look up user and
 * group names), which is what the unit tests and fuzz_config rely on. */
struct config *config_load_string(const char *name, const char *text);

/* config_free releases |cfg| and everything it owns. NULL is fine. */
void config_free(struct config *cfg);

/* config_error appends an error at |line| (0: no line) about |key| (NULL:
 * none) to |cfg|. */
void config_error(struct config *cfg, int line, const char *key,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* config_key_line returns the line where |key| was set in section |h|, or
 * the section header's line when it was not set. */
int config_key_line(const struct conf_head *h, const char *key);

/* config_proxy_protocol returns 0 for "off", 1 for "v1", 2 for "v2" and
 * -1 for anything else. */
int config_proxy_protocol(const char *v);

/* config_key_set returns whether |key| was set in section |h|. */
int config_key_set(const struct conf_head *h, const char *key);

/* config_tls_effective fills |out| with |cc|'s TLS settings as seen
 * through listener |cl| (NULL: none): the context's own value, else the
 * listener's, else [global]'s. The strings stay owned by |cfg|. */
void config_tls_effective(const struct config *cfg,
    const struct conf_listener *cl, const struct conf_context *cc,
    struct conf_tls *out);

/* config_listener_has_tls returns whether |cl| sets any TLS setting. */
int config_listener_has_tls(const struct conf_listener *cl);

/* config_version returns the TLS version number of "TLSv1.2" and the
 * like, or 0. */
int config_version(const char *s);

/* config_tls_line returns the line a context's TLS setting |key| comes
 * from, with the precedence of config_tls_effective. */
int config_tls_line(const struct config *cfg, const struct conf_listener *cl,
    const struct conf_context *cc, const char *key);

/* config_ticket_keys_file returns the ticket_keys file of |g|, or NULL
 * when there is none ("redis" or unset). */
const char *config_ticket_keys_file(const struct conf_global *g);

/* config_find_* return the named section or NULL. */
const struct conf_context *config_find_context(const struct config *cfg,
    const char *name);
const struct conf_backend *config_find_backend(const struct config *cfg,
    const char *name);
const struct conf_acme *config_find_acme(const struct config *cfg,
    const char *name);

/* config_print_keys writes the key table (section, key, type, default and
 * description) to stdout; it is what the docs are checked against. */
void config_print_keys(void);

#endif
