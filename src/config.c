/* config.c: tlsproxy.conf → struct config, driven by one key table. */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "confval.h"
#include "resolver.h"
#include "session_store.h"

enum conf_section {
	SEC_GLOBAL,
	SEC_LISTENER,
	SEC_BACKEND,
	SEC_CONTEXT,
	SEC_ACME,
	SEC_NONE,
};

static const char *const section_names[] = { "global", "listener", "backend",
	"context", "acme" };

enum conf_type {
	T_DURATION,
	T_SIZE,
	T_INT,
	T_WORKERS,
	T_LOGLEVEL,
	T_STRING,
	T_LIST,
	T_BOOL,
};

static const char *const type_names[] = { "duration", "size", "integer",
	"integer|auto", "level", "string", "list", "boolean" };

struct conf_key {
	enum conf_section sec;
	const char *name;
	enum conf_type type;
	size_t offset;
	const char *def; /* NULL: required (or optional without default) */
	int required;
	int64_t min, max; /* for T_INT/T_WORKERS, and ms/bytes for T_DURATION/T_SIZE */
	const char *doc;
};

#define G(f) offsetof(struct conf_global, f)
#define L(f) offsetof(struct conf_listener, f)
#define B(f) offsetof(struct conf_backend, f)
#define C(f) offsetof(struct conf_context, f)
#define A(f) offsetof(struct conf_acme, f)

/* The TLS settings: [global] holds their defaults, a [listener] may
 * override them for the contexts it serves and a [context] for itself;
 * unset means inherited (see config_tls_effective), so listener and
 * context entries have no default. */
#define TLS_DEFAULT(v) v
#define TLS_INHERIT(v) NULL
#define TLS_KEYS(SEC, OFF, DEF)						\
	{ SEC, "ciphers", T_STRING, OFF(tls.ciphers),			\
	  DEF("ECDHE+AESGCM:ECDHE+CHACHA20"), 0, 0, 0,			\
	  "TLS 1.2 cipher list in BoringSSL syntax; unknown names are errors" }, \
	{ SEC, "honor_cipher_order", T_BOOL, OFF(tls.honor_cipher_order), \
	  DEF("yes"), 0, 0, 0,						\
	  "prefer the server's cipher order over the client's" },	\
	{ SEC, "ecdh_curve", T_STRING, OFF(tls.ecdh_curve), DEF("auto"), 0, \
	  0, 0, "key-exchange groups, ':' within a tier of equal "	\
	  "preference, '/' between tiers; auto = X25519MLKEM768/"	\
	  "X25519:P-256:P-384 (X25519:P-256:P-384 without ML-KEM)" },	\
	{ SEC, "min_version", T_STRING, OFF(tls.min_version), DEF("TLSv1.2"), \
	  0, 0, 0, "oldest protocol accepted: TLSv1, TLSv1.1, TLSv1.2, "	\
	  "TLSv1.3" },							\
	{ SEC, "max_version", T_STRING, OFF(tls.max_version), DEF("TLSv1.3"), \
	  0, 0, 0, "newest protocol accepted" },			\
	{ SEC, "max_send_fragment", T_INT, OFF(tls.max_send_fragment),	\
	  DEF("16384"), 0, 512, 16384, "largest TLS record sent, in bytes" }, \
	{ SEC, "alpn", T_LIST, OFF(tls.alpn), NULL, 0, 0, 0,		\
	  "ALPN protocols offered, in server preference order" },	\
	{ SEC, "alpn_strict", T_BOOL, OFF(tls.alpn_strict), DEF("no"), 0, 0, \
	  0, "refuse clients whose ALPN list shares no protocol with ours" },

/* The key table: parsing, defaults, bounds and the key listing in the docs
 * all come from here. */
static const struct conf_key keys[] = {
	{ SEC_GLOBAL, "workers", T_WORKERS, G(workers), "auto", 0, 1, 1024,
	  "worker threads, each with its own event loop; auto = online CPUs" },
	{ SEC_GLOBAL, "log_level", T_LOGLEVEL, G(log_level), "info", 0, 0, 0,
	  "error, warning, info or debug" },
	{ SEC_GLOBAL, "access_log", T_STRING, G(access_log), "yes", 0, 0, 0,
	  "stderr (or yes), syslog, no, or an absolute file path" },
	{ SEC_GLOBAL, "handshake_timeout", T_DURATION, G(handshake_timeout_ms),
	  "120s", 0, 1, 86400000,
	  "time allowed from accept to a finished TLS handshake" },
	{ SEC_GLOBAL, "idle_timeout", T_DURATION, G(idle_timeout_ms), "300s", 0,
	  1, 604800000,
	  "close a relaying connection after this long without traffic" },
	{ SEC_GLOBAL, "shutdown_timeout", T_DURATION, G(shutdown_timeout_ms),
	  "30s", 0, 0, 86400000,
	  "on SIGTERM, how long open connections may finish" },
	{ SEC_GLOBAL, "upgrade_timeout", T_DURATION, G(upgrade_timeout_ms),
	  "60s", 0, 1000, 3600000,
	  "how long a new binary may take to load and take over (SIGUSR2)" },
	{ SEC_GLOBAL, "max_connections", T_INT, G(max_connections), "100000",
	  0, 1, 10000000, "connections open at once, all listeners together" },
	{ SEC_GLOBAL, "max_connections_per_address", T_INT,
	  G(max_connections_per_address), "0", 0, 0, 10000000,
	  "connections open at once from one client address (IPv6: one /64); "
	  "0 = no limit" },
	{ SEC_GLOBAL, "max_handshakes_per_second_per_address", T_INT,
	  G(max_handshakes_per_address), "0", 0, 0, 1000000,
	  "new connections per second from one client address, as a token "
	  "bucket holding one second's worth; 0 = no limit" },
	{ SEC_GLOBAL, "renegotiation_limit", T_INT, G(renegotiation_limit), "3",
	  0, 0, 15, "renegotiation attempts one client address may make per "
	  "renegotiation_window; past it the address is refused until the "
	  "window clears" },
	{ SEC_GLOBAL, "renegotiation_window", T_DURATION,
	  G(renegotiation_window_ms), "600s", 0, 1000, 86400000,
	  "the sliding window renegotiation_limit counts in" },
	{ SEC_GLOBAL, "admin", T_STRING, G(admin), NULL, 0, 0, 0,
	  "HOST:PORT or unix:/PATH of the HTTP endpoint serving /metrics and "
	  "/status; unset = off" },
	{ SEC_GLOBAL, "admin_allow_public", T_BOOL, G(admin_allow_public), "no",
	  0, 0, 0, "allow admin on an address other than loopback" },
	{ SEC_GLOBAL, "buffer_size", T_SIZE, G(buffer_size), "64k", 0, 4096,
	  16777216,
	  "relay buffer per direction; a slow reader stalls its peer at this" },

	{ SEC_GLOBAL, "user", T_STRING, G(user), NULL, 0, 0, 0,
	  "after binding and loading keys, run as this user" },
	{ SEC_GLOBAL, "group", T_STRING, G(group), NULL, 0, 0, 0,
	  "and this group (default: the user's primary group)" },
	{ SEC_GLOBAL, "session_timeout", T_DURATION, G(session_timeout_ms),
	  "300s", 0, 1000, 604800000,
	  "how long a session may be resumed (session IDs and tickets)" },
	{ SEC_GLOBAL, "session_cache_size", T_INT, G(session_cache_size),
	  "20480", 0, 0, 10000000,
	  "TLS 1.2 sessions kept for resumption by ID; 0 = none" },
	{ SEC_GLOBAL, "session_tickets", T_BOOL, G(session_tickets), "yes", 0,
	  0, 0, "resume with session tickets (TLS 1.2 and 1.3)" },
	{ SEC_GLOBAL, "ticket_keys", T_STRING, G(ticket_keys), NULL, 0, 0, 0,
	  "file of 48-byte ticket keys (first encrypts, all decrypt), or "
	  "redis (shared through session_store); unset = keys made in memory "
	  "and rotated" },
	{ SEC_GLOBAL, "ticket_rotation", T_DURATION, G(ticket_rotation_ms),
	  "12h", 0, 1000, 2592000000,
	  "without ticket_keys: how often a new key takes over" },
	{ SEC_GLOBAL, "session_store", T_STRING, G(session_store), NULL, 0, 0,
	  0, "shared session cache: redis://[:PASSWORD@]HOST:PORT[/DB] or "
	  "unix:/PATH" },
	{ SEC_GLOBAL, "session_store_timeout", T_DURATION,
	  G(session_store_timeout_ms), "20ms", 0, 1, 10000,
	  "longest a handshake waits for the store before going on without it" },
	{ SEC_GLOBAL, "session_store_prefix", T_STRING, G(session_store_prefix),
	  "tlsproxy:session:", 0, 0, 0,
	  "prefix of the store's keys, to share one Redis database" },
	{ SEC_GLOBAL, "ocsp_cache_dir", T_STRING, G(ocsp_cache_dir), NULL, 0,
	  0, 0, "directory where fetched OCSP responses persist across "
	  "restarts" },
	{ SEC_GLOBAL, "ocsp_timeout", T_DURATION, G(ocsp_timeout_ms), "10s", 0,
	  1000, 300000, "time allowed for one OCSP fetch" },
	{ SEC_GLOBAL, "ocsp_staple_revoked", T_BOOL, G(ocsp_staple_revoked),
	  "yes", 0, 0, 0, "staple a response that says revoked" },
	{ SEC_GLOBAL, "ocsp_must_staple_strict", T_BOOL,
	  G(ocsp_must_staple_strict), "no", 0, 0, 0,
	  "a must-staple certificate without a valid response is an error "
	  "in the log, not a warning" },
	{ SEC_GLOBAL, "resolver", T_LIST, G(resolver), NULL, 0, 0, 0,
	  "DNS servers (IP, IP:PORT or [IPv6]:PORT) for the host names of "
	  "backends, session_store and OCSP responders, asked without "
	  "blocking; unset = those of /etc/resolv.conf" },
	{ SEC_GLOBAL, "resolver_timeout", T_DURATION, G(resolver_timeout_ms),
	  "5s", 0, 100, 60000,
	  "wait for one DNS answer; each server is asked twice" },
	{ SEC_GLOBAL, "busy_poll", T_DURATION, G(busy_poll_ms), "0", 0, 0,
	  1000, "after activity, poll without sleeping this long (0 = off); "
	  "trades CPU for latency" },

	TLS_KEYS(SEC_GLOBAL, G, TLS_DEFAULT)

	{ SEC_LISTENER, "bind", T_LIST, L(bind), NULL, 1, 0, 0,
	  "addresses to accept TLS on: 1.2.3.4:443, [::]:443, *:443, unix:/path" },
	{ SEC_LISTENER, "context", T_STRING, L(context), NULL, 1, 0, 0,
	  "the default [context]: for clients without a server name or with "
	  "one no context serves" },
	{ SEC_LISTENER, "backend", T_STRING, L(backend), NULL, 1, 0, 0,
	  "the [backend] that decrypted traffic goes to" },
	{ SEC_LISTENER, "max_connections", T_INT, L(max_connections), "0", 0,
	  0, 10000000,
	  "connections open at once on this listener; 0 = only the global limit" },

	{ SEC_LISTENER, "sni_strict", T_BOOL, L(sni_strict), "no", 0, 0, 0,
	  "refuse unknown or missing server names with unrecognized_name" },
	{ SEC_LISTENER, "alpn_backend", T_LIST, L(alpn_backend), NULL, 0, 0, 0,
	  "route by negotiated ALPN protocol: proto:backend, ..." },

	{ SEC_LISTENER, "proxy_protocol", T_STRING, L(proxy_protocol), "off", 0,
	  0, 0, "off, v1 or v2: send a PROXY protocol header to the backend" },
	{ SEC_LISTENER, "proxy_protocol_client_cert", T_BOOL,
	  L(proxy_protocol_client_cert), "no", 0, 0, 0,
	  "v2: also send the client's certificate (DER, TLV type 0xE0)" },
	{ SEC_LISTENER, "ech", T_LIST, L(ech), NULL, 0, 0, 0,
	  "Encrypted Client Hello key files (PEM: PRIVATE KEY + ECHCONFIG)" },
	{ SEC_LISTENER, "ech_retry", T_LIST, L(ech_retry), NULL, 0, 0, 0,
	  "the ech files whose configs go back to clients as retry configs, "
	  "or yes for all (the default)" },
	{ SEC_LISTENER, "acme_http", T_BOOL, L(acme_http), "no", 0, 0, 0,
	  "plain HTTP: answer ACME http-01 challenges and redirect every "
	  "other request to https (no context, no backend)" },

	TLS_KEYS(SEC_LISTENER, L, TLS_INHERIT)

	{ SEC_BACKEND, "address", T_LIST, B(address), NULL, 1, 0, 0,
	  "host:port, [v6]:port or unix:/path; several are used round-robin" },
	{ SEC_BACKEND, "connect_timeout", T_DURATION, B(connect_timeout_ms),
	  "5s", 0, 1, 3600000, "time allowed for one connect attempt" },
	{ SEC_BACKEND, "proxy_protocol", T_STRING, B(proxy_protocol), NULL, 0,
	  0, 0, "off, v1 or v2; unset = as the listener says" },
	{ SEC_BACKEND, "proxy_protocol_client_cert", T_BOOL,
	  B(proxy_protocol_client_cert), NULL, 0, 0, 0,
	  "v2: also send the client's certificate; unset = as the listener "
	  "says" },
	{ SEC_BACKEND, "tls", T_BOOL, B(tls), "no", 0, 0, 0,
	  "connect to this backend over TLS" },
	{ SEC_BACKEND, "tls_ca", T_STRING, B(tls_ca), NULL, 0, 0, 0,
	  "PEM trust anchors for the backend's certificate; unset = the "
	  "system store" },
	{ SEC_BACKEND, "tls_verify", T_BOOL, B(tls_verify), "yes", 0, 0, 0,
	  "verify the backend's certificate and name (no: warned at every "
	  "load)" },
	{ SEC_BACKEND, "tls_crl", T_LIST, B(tls_crl), NULL, 0, 0, 0,
	  "PEM CRLs checked for the backend's chain" },
	{ SEC_BACKEND, "tls_verify_depth", T_INT, B(tls_verify_depth), "9", 0,
	  1, 100, "longest chain accepted from the backend" },
	{ SEC_BACKEND, "tls_servername", T_STRING, B(tls_servername), NULL, 0,
	  0, 0, "SNI sent: a name, client (the client's) or none; unset = the "
	  "address's host name" },
	{ SEC_BACKEND, "tls_verify_name", T_STRING, B(tls_verify_name), NULL,
	  0, 0, 0, "identity the certificate must hold; unset = the "
	  "servername, else the address" },
	{ SEC_BACKEND, "tls_cert", T_LIST, B(tls_cert), NULL, 0, 0, 0,
	  "client certificate chain(s) (PEM) for backends that ask" },
	{ SEC_BACKEND, "tls_key", T_LIST, B(tls_key), NULL, 0, 0, 0,
	  "private key(s) of tls_cert, in the same order" },
	{ SEC_BACKEND, "tls_passphrase_file", T_STRING,
	  B(tls_passphrase_file), NULL, 0, 0, 0,
	  "file whose first line decrypts tls_key or tls_pfx" },
	{ SEC_BACKEND, "tls_pfx", T_STRING, B(tls_pfx), NULL, 0, 0, 0,
	  "PKCS#12 client certificate and key" },
	{ SEC_BACKEND, "tls_alpn", T_LIST, B(tls_alpn), NULL, 0, 0, 0,
	  "ALPN protocols offered, or client (the one the client "
	  "negotiated, which the backend must pick)" },
	{ SEC_BACKEND, "tls_min_version", T_STRING, B(tls_min_version),
	  "TLSv1.2", 0, 0, 0, "oldest protocol offered" },
	{ SEC_BACKEND, "tls_max_version", T_STRING, B(tls_max_version),
	  "TLSv1.3", 0, 0, 0, "newest protocol offered" },
	{ SEC_BACKEND, "tls_ciphers", T_STRING, B(tls_ciphers),
	  "ECDHE+AESGCM:ECDHE+CHACHA20", 0, 0, 0,
	  "TLS 1.2 cipher list in BoringSSL syntax" },
	{ SEC_BACKEND, "tls_groups", T_STRING, B(tls_groups), "auto", 0, 0, 0,
	  "key-exchange groups offered, in order; auto = X25519MLKEM768:"
	  "X25519:P-256:P-384 (without ML-KEM: X25519:P-256:P-384)" },
	{ SEC_BACKEND, "tls_session_reuse", T_BOOL, B(tls_session_reuse),
	  "yes", 0, 0, 0, "resume sessions with each backend address" },
	{ SEC_BACKEND, "tls_handshake_timeout", T_DURATION,
	  B(tls_handshake_timeout_ms), "0", 0, 0, 3600000,
	  "time allowed for the TLS handshake with one address; 0 = "
	  "connect_timeout" },

	TLS_KEYS(SEC_CONTEXT, C, TLS_INHERIT)
	{ SEC_CONTEXT, "servername", T_LIST, C(servername), NULL, 0, 0, 0,
	  "names (or *.suffix wildcards) this context answers for" },
	{ SEC_CONTEXT, "cert", T_LIST, C(cert), NULL, 0, 0, 0,
	  "PEM certificate chain: the leaf first, then intermediates; may repeat "
	  "for an RSA and an ECDSA pair" },
	{ SEC_CONTEXT, "key", T_LIST, C(key), NULL, 0, 0, 0,
	  "PEM private key of the matching cert (same order)" },
	{ SEC_CONTEXT, "passphrase", T_STRING, C(passphrase), NULL, 0, 0, 0,
	  "passphrase of encrypted keys and of pfx" },
	{ SEC_CONTEXT, "passphrase_file", T_STRING, C(passphrase_file), NULL, 0,
	  0, 0, "file whose first line is the passphrase" },
	{ SEC_CONTEXT, "pfx", T_STRING, C(pfx), NULL, 0, 0, 0,
	  "PKCS#12 file holding a key, its certificate and chain" },
	{ SEC_CONTEXT, "sct", T_STRING, C(sct), NULL, 0, 0, 0,
	  "signed certificate timestamp list (TLS encoding) to send" },
	{ SEC_CONTEXT, "ca", T_STRING, C(ca), NULL, 0, 0, 0,
	  "PEM file of CAs trusted for client certificates" },
	{ SEC_CONTEXT, "crl", T_LIST, C(crl), NULL, 0, 0, 0,
	  "PEM CRL files checked for every client certificate" },
	{ SEC_CONTEXT, "request_cert", T_BOOL, C(request_cert), "no", 0, 0, 0,
	  "ask clients for a certificate" },
	{ SEC_CONTEXT, "reject_unauthorized", T_BOOL, C(reject_unauthorized),
	  "yes", 0, 0, 0, "refuse clients whose certificate does not verify" },
	{ SEC_CONTEXT, "require_cert", T_BOOL, C(require_cert), "yes", 0, 0, 0,
	  "with request_cert: no lets clients without a certificate in" },
	{ SEC_CONTEXT, "verify_depth", T_INT, C(verify_depth), "9", 0, 1, 100,
	  "longest client certificate chain accepted" },
	{ SEC_CONTEXT, "npn", T_LIST, C(npn), NULL, 0, 0, 0,
	  "NPN protocols advertised to old TLS 1.2 clients" },
	{ SEC_CONTEXT, "session_id_context", T_STRING, C(session_id_context),
	  NULL, 0, 0, 0, "sessions resume only within the same value; default: "
	  "a hash of the context's name and settings" },
	{ SEC_CONTEXT, "backend", T_STRING, C(backend), NULL, 0, 0, 0,
	  "route this context's connections to this [backend]" },
	{ SEC_CONTEXT, "alpn_backend", T_LIST, C(alpn_backend), NULL, 0, 0, 0,
	  "route by negotiated ALPN protocol: proto:backend, ..." },
	{ SEC_CONTEXT, "ocsp", T_STRING, C(ocsp), "auto", 0, 0, 0,
	  "auto (fetch from the certificate's responder), off, or a DER OCSP "
	  "response file kept up to date elsewhere" },
	{ SEC_CONTEXT, "ocsp_responder", T_STRING, C(ocsp_responder), NULL, 0,
	  0, 0, "responder URL, instead of the one in the certificate" },
	{ SEC_CONTEXT, "ocsp_issuer", T_STRING, C(ocsp_issuer), NULL, 0, 0, 0,
	  "PEM issuer certificate, when it does not follow the leaf in cert" },
	{ SEC_CONTEXT, "dhparam", T_STRING, C(dhparam), NULL, 0, 0, 0,
	  "not supported: BoringSSL has no DHE; ECDHE always gives forward "
	  "secrecy" },
	{ SEC_CONTEXT, "acme", T_STRING, C(acme), NULL, 0, 0, 0,
	  "the [acme] account that obtains and renews this context's "
	  "certificate for its servername list, instead of cert and key" },
	{ SEC_CONTEXT, "acme_challenge", T_STRING, C(acme_challenge),
	  "tls-alpn-01", 0, 0, 0, "how the CA validates the names: tls-alpn-01 "
	  "(on the TLS listeners) or http-01 (needs an acme_http listener)" },

	{ SEC_ACME, "directory", T_STRING, A(directory), NULL, 1, 0, 0,
	  "the CA's ACME directory URL (https)" },
	{ SEC_ACME, "email", T_STRING, A(email), NULL, 0, 0, 0,
	  "contact address given to the CA for the account" },
	{ SEC_ACME, "ca", T_STRING, A(ca), NULL, 0, 0, 0,
	  "PEM CAs trusted for the ACME server's own HTTPS; unset = the system "
	  "store" },
	{ SEC_ACME, "eab_kid", T_STRING, A(eab_kid), NULL, 0, 0, 0,
	  "external account binding key id, for CAs that require one" },
	{ SEC_ACME, "eab_hmac_key_file", T_STRING, A(eab_hmac_key_file), NULL,
	  0, 0, 0, "file holding the external account binding HMAC key "
	  "(base64url, as the CA gives it)" },
	{ SEC_ACME, "key_type", T_STRING, A(key_type), "ecdsa", 0, 0, 0,
	  "certificate key: ecdsa (P-256) or rsa (2048 bits)" },
	{ SEC_ACME, "renew_before", T_DURATION, A(renew_before_ms), NULL, 0,
	  3600000, 31536000000LL, "renew this long before expiry; unset = the "
	  "CA's renewal information (ARI) where offered, else a third of the "
	  "lifetime" },
	{ SEC_ACME, "state_dir", T_STRING, A(state_dir), "/var/lib/tlsproxy/acme",
	  0, 0, 0, "where the account key, certificates and keys are kept" },
	{ SEC_ACME, "shared_key_file", T_STRING, A(shared_key_file), NULL, 0, 0,
	  0, "with session_store: share orders, certificates and challenge "
	  "answers with the other instances, keys encrypted under this key "
	  "file (made like ticket keys)" },
};

#define NUM_KEYS (sizeof(keys) / sizeof(keys[0]))
_Static_assert(NUM_KEYS <= CONFIG_MAX_KEYS, "raise CONFIG_MAX_KEYS");

/* Parser state shared by the line reader and the inih handler. */
struct parse {
	struct config *cfg;
	const char *file;
	const char *text;
	size_t pos;
	int line;
	enum conf_section sec;
	size_t sec_index;
	int global_seen;
	int bad_section; /* the last header was refused: skip its keys */
};

void
config_error(struct config *cfg, int line, const char *key, const char *fmt,
    ...)
{
	char msg[512], full[1024];
	char **errors;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0 && key != NULL)
		snprintf(full, sizeof(full), "%s:%d: key '%s': %s", cfg->path,
		    line, key, msg);
	else if (line > 0)
		snprintf(full, sizeof(full), "%s:%d: %s", cfg->path, line, msg);
	else
		snprintf(full, sizeof(full), "%s: %s", cfg->path, msg);
	/* A [global] value every context inherits fails once, not once per
	 * context. */
	for (size_t i = 0; i < cfg->num_errors; i++) {
		if (strcmp(cfg->errors[i], full) == 0)
			return;
	}
	errors = realloc(cfg->errors, (cfg->num_errors + 1) * sizeof(*errors));
	if (errors == NULL)
		return;
	cfg->errors = errors;
	cfg->errors[cfg->num_errors] = strdup(full);
	if (cfg->errors[cfg->num_errors] != NULL)
		cfg->num_errors++;
}

static struct conf_head *
config_section(struct config *cfg, enum conf_section sec, size_t i)
{
	switch (sec) {
	case SEC_GLOBAL:
		return &cfg->global.h;
	case SEC_LISTENER:
		return &cfg->listeners[i].h;
	case SEC_BACKEND:
		return &cfg->backends[i].h;
	case SEC_CONTEXT:
		return &cfg->contexts[i].h;
	case SEC_ACME:
		return &cfg->acmes[i].h;
	default:
		return NULL;
	}
}

static const struct conf_key *
config_key_find(enum conf_section sec, const char *name, size_t *out_index)
{
	for (size_t i = 0; i < NUM_KEYS; i++) {
		if (keys[i].sec == sec && strcmp(keys[i].name, name) == 0) {
			if (out_index != NULL)
				*out_index = i;
			return &keys[i];
		}
	}
	return NULL;
}

int
config_tls_line(const struct config *cfg, const struct conf_listener *cl,
    const struct conf_context *cc, const char *key)
{
	if (config_key_set(&cc->h, key))
		return config_key_line(&cc->h, key);
	if (cl != NULL && config_key_set(&cl->h, key))
		return config_key_line(&cl->h, key);
	return config_key_line(&cfg->global.h, key);
}

int
config_key_set(const struct conf_head *h, const char *key)
{
	for (size_t i = 0; i < NUM_KEYS; i++) {
		if (strcmp(keys[i].name, key) == 0 && h->key_line[i] != 0)
			return 1;
	}
	return 0;
}

/* config_tls_merge copies into |out| every TLS setting section |h| sets. */
static void
config_tls_merge(const struct conf_head *h, const struct conf_tls *c,
    struct conf_tls *out)
{
	if (config_key_set(h, "ciphers"))
		out->ciphers = c->ciphers;
	if (config_key_set(h, "honor_cipher_order"))
		out->honor_cipher_order = c->honor_cipher_order;
	if (config_key_set(h, "ecdh_curve"))
		out->ecdh_curve = c->ecdh_curve;
	if (config_key_set(h, "min_version"))
		out->min_version = c->min_version;
	if (config_key_set(h, "max_version"))
		out->max_version = c->max_version;
	if (config_key_set(h, "max_send_fragment"))
		out->max_send_fragment = c->max_send_fragment;
	if (config_key_set(h, "alpn"))
		out->alpn = c->alpn;
	if (config_key_set(h, "alpn_strict"))
		out->alpn_strict = c->alpn_strict;
}

void
config_tls_effective(const struct config *cfg, const struct conf_listener *cl,
    const struct conf_context *cc, struct conf_tls *out)
{
	*out = cfg->global.tls;
	if (cl != NULL)
		config_tls_merge(&cl->h, &cl->tls, out);
	config_tls_merge(&cc->h, &cc->tls, out);
}

int
config_listener_has_tls(const struct conf_listener *cl)
{
	static const char *const tls_keys[] = { "ciphers",
		"honor_cipher_order", "ecdh_curve", "min_version", "max_version",
		"max_send_fragment", "alpn", "alpn_strict" };

	for (size_t i = 0; i < sizeof(tls_keys) / sizeof(tls_keys[0]); i++) {
		if (config_key_set(&cl->h, tls_keys[i]))
			return 1;
	}
	return 0;
}

int
config_key_line(const struct conf_head *h, const char *key)
{
	for (size_t i = 0; i < NUM_KEYS; i++) {
		if (strcmp(keys[i].name, key) == 0 && h->key_line[i] != 0)
			return h->key_line[i];
	}
	return h->line;
}

int
config_proxy_protocol(const char *v)
{
	return strcmp(v, "off") == 0 ? 0 : strcmp(v, "v1") == 0 ? 1 :
	    strcmp(v, "v2") == 0 ? 2 : -1;
}

static void
config_check_proxy_protocol(struct config *cfg, const struct conf_head *h,
    const char *v)
{
	if (v != NULL && config_proxy_protocol(v) < 0)
		config_error(cfg, config_key_line(h, "proxy_protocol"),
		    "proxy_protocol", "expected off, v1 or v2, got '%s'", v);
}

static int
strlist_add(struct strlist *l, const char *v, int line)
{
	char **nv = realloc(l->v, (l->num + 1) * sizeof(*nv));
	int *nl;

	if (nv == NULL)
		return -1;
	l->v = nv;
	nl = realloc(l->lines, (l->num + 1) * sizeof(*nl));
	if (nl == NULL)
		return -1;
	l->lines = nl;
	if ((l->v[l->num] = strdup(v)) == NULL)
		return -1;
	l->lines[l->num++] = line;
	return 0;
}

static void
strlist_free(struct strlist *l)
{
	for (size_t i = 0; i < l->num; i++)
		free(l->v[i]);
	free(l->v);
	free(l->lines);
	memset(l, 0, sizeof(*l));
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return s;
}

/* config_set stores |value| into the field of |k| in section |h|. */
static void
config_set(struct parse *p, struct conf_head *h, const struct conf_key *k,
    const char *value, int line)
{
	void *field = (char *)h + k->offset;
	uint64_t u;
	int64_t i;

	switch (k->type) {
	case T_DURATION:
		if (confval_duration(value, &u) != 0) {
			config_error(p->cfg, line, k->name, "expected a duration "
			    "like 250ms, 30s, 10m or 12h, got '%s'", value);
		} else if ((int64_t)u < k->min || (int64_t)u > k->max) {
			config_error(p->cfg, line, k->name, "'%s' is out of range "
			    "(%lldms to %lldms)", value, (long long)k->min,
			    (long long)k->max);
		} else {
			*(uint64_t *)field = u;
		}
		break;
	case T_SIZE:
		if (confval_size(value, &u) != 0) {
			config_error(p->cfg, line, k->name, "expected a size like "
			    "16k or 1m, got '%s'", value);
		} else if ((int64_t)u < k->min || (int64_t)u > k->max) {
			config_error(p->cfg, line, k->name, "'%s' is out of range "
			    "(%lld to %lld bytes)", value, (long long)k->min,
			    (long long)k->max);
		} else {
			*(uint64_t *)field = u;
		}
		break;
	case T_WORKERS:
		if (strcmp(value, "auto") == 0) {
			*(int64_t *)field = 0;
			break;
		}
		/* fall through */
	case T_INT:
		if (confval_int(value, k->min, k->max, &i) != 0)
			config_error(p->cfg, line, k->name, "expected an integer "
			    "from %lld to %lld%s, got '%s'", (long long)k->min,
			    (long long)k->max, k->type == T_WORKERS ?
			    " or 'auto'" : "", value);
		else
			*(int64_t *)field = i;
		break;
	case T_BOOL: {
		int b;

		if (confval_bool(value, &b) != 0)
			config_error(p->cfg, line, k->name, "expected yes or no, "
			    "got '%s'", value);
		else
			*(int64_t *)field = b;
		break;
	}
	case T_LOGLEVEL: {
		enum log_level lv;

		if (log_level_parse(value, &lv) != 0)
			config_error(p->cfg, line, k->name, "expected error, "
			    "warning, info or debug, got '%s'", value);
		else
			*(int64_t *)field = lv;
		break;
	}
	case T_STRING: {
		char **s = field;
		char *dup = strdup(value);

		if (dup == NULL)
			return;
		free(*s);
		*s = dup;
		break;
	}
	case T_LIST: {
		char *copy = strdup(value), *item, *next;

		if (copy == NULL)
			return;
		/* strtok would skip empty items; "a,,b" is a typo to report. */
		for (item = copy; item != NULL; item = next) {
			next = strchr(item, ',');
			if (next != NULL)
				*next++ = '\0';
			item = trim(item);
			if (*item == '\0')
				config_error(p->cfg, line, k->name,
				    "empty item in the list");
			else
				strlist_add(field, item, line);
		}
		free(copy);
		break;
	}
	}
}

static void
config_defaults(struct parse *p, enum conf_section sec, struct conf_head *h)
{
	for (size_t i = 0; i < NUM_KEYS; i++) {
		if (keys[i].sec == sec && keys[i].def != NULL)
			config_set(p, h, &keys[i], keys[i].def, 0);
	}
}

/* config_grow appends a zeroed element to an array of sections. */
static void *
config_grow(void **arr, size_t *num, size_t size)
{
	char *n = realloc(*arr, (*num + 1) * size);

	if (n == NULL)
		return NULL;
	memset(n + *num * size, 0, size);
	*arr = n;
	return n + (*num)++ * size;
}

static void
config_begin_section(struct parse *p, char *spec)
{
	struct config *cfg = p->cfg;
	char *kind = trim(spec), *name = kind;
	struct conf_head *h = NULL;
	size_t *num = NULL;
	void **arr = NULL;
	size_t size = 0;
	int k;

	p->sec = SEC_NONE;
	while (*name != '\0' && *name != ' ' && *name != '\t')
		name++;
	if (*name != '\0')
		*name++ = '\0';
	name = trim(name);
	for (k = 0; k < SEC_NONE; k++) {
		if (strcmp(kind, section_names[k]) == 0)
			break;
	}
	if (k == SEC_NONE) {
		config_error(cfg, p->line, NULL, "unknown section [%s]: expected "
		    "[global], [listener NAME], [backend NAME], [context NAME] "
		    "or [acme NAME]", kind);
		return;
	}
	if (k == SEC_GLOBAL) {
		if (*name != '\0') {
			config_error(cfg, p->line, NULL, "[global] takes no name");
			return;
		}
		if (p->global_seen) {
			config_error(cfg, p->line, NULL, "[global] appears twice "
			    "(first at line %d)", cfg->global.h.line);
			return;
		}
		p->global_seen = 1;
		cfg->global.h.line = p->line;
		p->sec = SEC_GLOBAL;
		return;
	}
	if (*name == '\0' || strpbrk(name, " \t[]") != NULL) {
		config_error(cfg, p->line, NULL, "[%s] needs one name, like "
		    "[%s NAME]", kind, kind);
		return;
	}
	switch (k) {
	case SEC_LISTENER:
		arr = (void **)&cfg->listeners;
		num = &cfg->num_listeners;
		size = sizeof(struct conf_listener);
		break;
	case SEC_BACKEND:
		arr = (void **)&cfg->backends;
		num = &cfg->num_backends;
		size = sizeof(struct conf_backend);
		break;
	case SEC_ACME:
		arr = (void **)&cfg->acmes;
		num = &cfg->num_acmes;
		size = sizeof(struct conf_acme);
		break;
	default:
		arr = (void **)&cfg->contexts;
		num = &cfg->num_contexts;
		size = sizeof(struct conf_context);
		break;
	}
	for (size_t i = 0; i < *num; i++) {
		h = config_section(cfg, (enum conf_section)k, i);
		if (strcmp(h->name, name) == 0) {
			config_error(cfg, p->line, NULL, "[%s %s] appears twice "
			    "(first at line %d)", kind, name, h->line);
			return;
		}
	}
	if (config_grow(arr, num, size) == NULL)
		return;
	h = config_section(cfg, (enum conf_section)k, *num - 1);
	h->name = strdup(name);
	h->line = p->line;
	p->sec = (enum conf_section)k;
	p->sec_index = *num - 1;
	config_defaults(p, p->sec, h);
}

/* config_check_line reports a line that is neither blank, a comment, a
 * section header nor "key = value", and handles section headers itself
 * (inih does not report empty sections). Returns 1 if inih should see the
 * line. */
static int
config_check_line(struct parse *p, char *line)
{
	char *s = trim(line), *end;

	if (*s == '\0' || *s == ';' || *s == '#')
		return 0;
	if (*s == '[') {
		end = strchr(s, ']');
		if (end == NULL) {
			config_error(p->cfg, p->line, NULL, "expected ']' to close "
			    "the section header");
			p->sec = SEC_NONE;
			p->bad_section = 1;
			return 0;
		}
		*end = '\0';
		config_begin_section(p, s + 1);
		p->bad_section = p->sec == SEC_NONE;
		return 0;
	}
	if (strchr(s, '=') == NULL) {
		config_error(p->cfg, p->line, NULL, "expected 'key = value', "
		    "'[section]' or a comment, got '%s'", s);
		return 0;
	}
	if (p->sec == SEC_NONE && !p->bad_section)
		config_error(p->cfg, p->line, NULL, "key outside of a section: "
		    "put it under [global] or another section");
	return p->sec != SEC_NONE;
}

/* config_reader feeds inih one line at a time, counting lines and checking
 * the syntax first, so that every error carries its line and none stops
 * the parse. */
static char *
config_reader(char *str, int num, void *stream)
{
	struct parse *p = stream;
	const char *start, *nl;
	size_t len;

	while (p->text[p->pos] != '\0') {
		start = p->text + p->pos;
		nl = strchr(start, '\n');
		len = nl != NULL ? (size_t)(nl - start) : strlen(start);
		p->pos += len + (nl != NULL);
		p->line++;
		if (len > 0 && start[len - 1] == '\r')
			len--;
		if (p->line == 1 && len >= 3 &&
		    memcmp(start, "\xEF\xBB\xBF", 3) == 0) {
			start += 3; /* a UTF-8 byte order mark */
			len -= 3;
		}
		if (len + 2 > (size_t)num) {
			config_error(p->cfg, p->line, NULL, "line longer than %d "
			    "characters; split long lists over repeated keys",
			    num - 2);
			continue;
		}
		memcpy(str, start, len);
		str[len] = '\0';
		if (!config_check_line(p, str))
			continue;
		/* Leading blanks would make inih treat the line as a
		 * continuation of the previous value. */
		memmove(str, trim(str), strlen(trim(str)) + 1);
		return str;
	}
	return NULL;
}

static int
config_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct parse *p = user;
	struct conf_head *h = config_section(p->cfg, p->sec, p->sec_index);
	const struct conf_key *k;
	size_t ki;

	(void)section;
	if (h == NULL)
		return 1;
	k = config_key_find(p->sec, name, &ki);
	if (k == NULL) {
		config_error(p->cfg, p->line, name, "unknown key in [%s]",
		    section_names[p->sec]);
		return 1;
	}
	if (*value == '\0') {
		config_error(p->cfg, p->line, name, "empty value");
		return 1;
	}
	if (h->key_line[ki] != 0 && k->type != T_LIST) {
		config_error(p->cfg, p->line, name, "set twice in [%s%s%s] "
		    "(first at line %d)", section_names[p->sec],
		    h->name ? " " : "", h->name ? h->name : "", h->key_line[ki]);
		return 1;
	}
	if (h->key_line[ki] == 0 && k->type == T_LIST)
		strlist_free((struct strlist *)((char *)h + k->offset));
	h->key_line[ki] = p->line;
	config_set(p, h, k, value, p->line);
	return 1;
}

const char *
config_ticket_keys_file(const struct conf_global *g)
{
	if (g->ticket_keys == NULL || strcmp(g->ticket_keys, "redis") == 0)
		return NULL;
	return g->ticket_keys;
}

const struct conf_context *
config_find_context(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->num_contexts; i++) {
		if (strcmp(cfg->contexts[i].h.name, name) == 0)
			return &cfg->contexts[i];
	}
	return NULL;
}

const struct conf_backend *
config_find_backend(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->num_backends; i++) {
		if (strcmp(cfg->backends[i].h.name, name) == 0)
			return &cfg->backends[i];
	}
	return NULL;
}

static void
config_check_required(struct config *cfg, enum conf_section sec,
    struct conf_head *h)
{
	for (size_t i = 0; i < NUM_KEYS; i++) {
		if (keys[i].sec == sec && keys[i].required && h->key_line[i] == 0)
			config_error(cfg, h->line, NULL, "[%s %s] needs key '%s' "
			    "(%s)", section_names[sec], h->name, keys[i].name,
			    keys[i].doc);
	}
}

/* config_check_acme_http checks a plain-HTTP listener for ACME http-01:
 * it has addresses and nothing that belongs to TLS or to a backend. */
static void
config_check_acme_http(struct config *cfg, struct conf_listener *l)
{
	static const char *const tls_keys[] = { "context", "backend",
		"sni_strict", "alpn_backend", "proxy_protocol",
		"proxy_protocol_client_cert", "ech", "ech_retry" };

	if (!config_key_set(&l->h, "bind"))
		config_error(cfg, l->h.line, NULL, "[listener %s] needs key "
		    "'bind' (addresses to answer plain HTTP on, like *:80)",
		    l->h.name);
	for (size_t i = 0; i < sizeof(tls_keys) / sizeof(tls_keys[0]); i++) {
		if (config_key_set(&l->h, tls_keys[i]))
			config_error(cfg, config_key_line(&l->h, tls_keys[i]),
			    tls_keys[i], "has no effect on an acme_http listener, "
			    "which answers plain HTTP only");
	}
	if (config_listener_has_tls(l))
		config_error(cfg, config_key_line(&l->h, "acme_http"),
		    "acme_http", "an acme_http listener speaks plain HTTP: "
		    "remove its TLS settings");
}

static void
config_check_listener(struct config *cfg, struct conf_listener *l)
{
	char err[256];

	if (l->acme_http)
		config_check_acme_http(cfg, l);
	else
		config_check_required(cfg, SEC_LISTENER, &l->h);
	config_check_proxy_protocol(cfg, &l->h, l->proxy_protocol);
	if (l->context != NULL && config_find_context(cfg, l->context) == NULL)
		config_error(cfg, config_key_line(&l->h, "context"), "context",
		    "no [context %s] in this file", l->context);
	if (l->backend != NULL && config_find_backend(cfg, l->backend) == NULL)
		config_error(cfg, config_key_line(&l->h, "backend"), "backend",
		    "no [backend %s] in this file", l->backend);
	l->addrs = calloc(l->bind.num ? l->bind.num : 1, sizeof(*l->addrs));
	if (l->addrs == NULL)
		return;
	for (size_t i = 0; i < l->bind.num; i++) {
		if (addr_parse(l->bind.v[i], &l->addrs[i], err, sizeof(err)) != 0) {
			config_error(cfg, l->bind.lines[i], "bind", "%s", err);
			l->addrs[i].len = 0;
		}
	}
}

/* config_check_binds refuses one address bound by two listeners (or twice
 * by one), which the kernel would otherwise quietly share. */
static void
config_check_binds(struct config *cfg)
{
	for (size_t a = 0; a < cfg->num_listeners; a++) {
		struct conf_listener *la = &cfg->listeners[a];

		for (size_t i = 0; la->addrs != NULL && i < la->bind.num; i++) {
			for (size_t b = 0; b <= a; b++) {
				struct conf_listener *lb = &cfg->listeners[b];
				size_t end = b == a ? i : lb->bind.num;

				for (size_t j = 0; lb->addrs != NULL && j < end; j++) {
					if (la->addrs[i].len == 0 ||
					    lb->addrs[j].len == 0 ||
					    !addr_equal(&la->addrs[i], &lb->addrs[j]))
						continue;
					config_error(cfg, la->bind.lines[i], "bind",
					    "address %s is already bound at line %d",
					    la->bind.v[i], lb->bind.lines[j]);
				}
			}
		}
	}
}

static void config_check_version(struct config *cfg,
    const struct conf_head *h, const char *key, const char *v);

/* config_check_backend_tls checks what can be checked of a backend's TLS
 * keys without reading files (backend_tls.c reads them). */
static void
config_check_backend_tls(struct config *cfg, struct conf_backend *b)
{
	static const char *const tls_keys[] = { "tls_ca", "tls_verify",
		"tls_crl", "tls_verify_depth", "tls_servername",
		"tls_verify_name", "tls_cert", "tls_key", "tls_passphrase_file",
		"tls_pfx", "tls_alpn", "tls_min_version", "tls_max_version",
		"tls_ciphers", "tls_groups", "tls_session_reuse",
		"tls_handshake_timeout" };

	if (!b->tls) {
		for (size_t i = 0; i < sizeof(tls_keys) / sizeof(tls_keys[0]);
		    i++) {
			if (config_key_set(&b->h, tls_keys[i]))
				config_error(cfg, config_key_line(&b->h,
				    tls_keys[i]), tls_keys[i], "has no effect "
				    "without tls = yes in [backend %s]", b->h.name);
		}
		return;
	}
	config_check_version(cfg, &b->h, "tls_min_version", b->tls_min_version);
	config_check_version(cfg, &b->h, "tls_max_version", b->tls_max_version);
	if (config_version(b->tls_min_version) > config_version(
	    b->tls_max_version) && config_version(b->tls_max_version) != 0)
		config_error(cfg, config_key_line(&b->h, "tls_min_version"),
		    "tls_min_version", "%s is newer than tls_max_version %s",
		    b->tls_min_version, b->tls_max_version);
	if (b->tls_cert.num != b->tls_key.num)
		config_error(cfg, config_key_line(&b->h, b->tls_cert.num >
		    b->tls_key.num ? "tls_cert" : "tls_key"), b->tls_cert.num >
		    b->tls_key.num ? "tls_cert" : "tls_key", "%zu tls_cert but "
		    "%zu tls_key: each certificate needs its key, in the same "
		    "order", b->tls_cert.num, b->tls_key.num);
	if (b->tls_pfx != NULL && b->tls_cert.num > 0)
		config_error(cfg, config_key_line(&b->h, "tls_pfx"), "tls_pfx",
		    "give the client certificate either as tls_pfx or as "
		    "tls_cert and tls_key, not both");
	if (b->tls_servername != NULL && (b->tls_servername[0] == '\0' ||
	    strpbrk(b->tls_servername, " \t/:") != NULL))
		config_error(cfg, config_key_line(&b->h, "tls_servername"),
		    "tls_servername", "expected a host name, client or none, got "
		    "'%s'", b->tls_servername);
	for (size_t i = 0; i < b->tls_alpn.num; i++) {
		if (strcmp(b->tls_alpn.v[i], "client") == 0 &&
		    b->tls_alpn.num > 1)
			config_error(cfg, b->tls_alpn.lines[i], "tls_alpn",
			    "'client' stands alone: the backend is offered what "
			    "the client negotiated");
		else if (strlen(b->tls_alpn.v[i]) > 255)
			config_error(cfg, b->tls_alpn.lines[i], "tls_alpn",
			    "a protocol name is at most 255 bytes");
	}
}

static void
config_check_backend(struct config *cfg, struct conf_backend *b)
{
	char host[256];
	unsigned port;

	config_check_required(cfg, SEC_BACKEND, &b->h);
	config_check_proxy_protocol(cfg, &b->h, b->proxy_protocol);
	config_check_backend_tls(cfg, b);
	for (size_t i = 0; i < b->address.num; i++) {
		const char *a = b->address.v[i];
		struct addr tmp;
		char err[256];

		if (strncmp(a, "unix:", 5) == 0) {
			if (addr_parse(a, &tmp, err, sizeof(err)) != 0)
				config_error(cfg, b->address.lines[i], "address",
				    "%s", err);
		} else if (addr_split(a, host, sizeof(host), &port) != 0) {
			config_error(cfg, b->address.lines[i], "address",
			    "expected host:port, [v6]:port or unix:/path, got "
			    "'%s'", a);
		}
	}
}

/* config_check_routes checks "proto:backend" items of alpn_backend. */
static void
config_check_routes(struct config *cfg, const struct strlist *routes)
{
	for (size_t i = 0; i < routes->num; i++) {
		const char *item = routes->v[i], *colon = strrchr(item, ':');

		if (colon == NULL || colon == item || colon[1] == '\0') {
			config_error(cfg, routes->lines[i], "alpn_backend",
			    "expected protocol:backend, got '%s'", item);
		} else if (config_find_backend(cfg, colon + 1) == NULL) {
			config_error(cfg, routes->lines[i], "alpn_backend",
			    "no [backend %s] in this file", colon + 1);
		}
	}
}

/* config_version parses a protocol version name; 0 if unknown. */
int
config_version(const char *s)
{
	static const struct {
		const char *name;
		int version;
	} versions[] = {
		{ "TLSv1", 0x0301 }, { "TLSv1.0", 0x0301 }, { "TLSv1.1", 0x0302 },
		{ "TLSv1.2", 0x0303 }, { "TLSv1.3", 0x0304 },
	};

	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		if (strcasecmp(s, versions[i].name) == 0)
			return versions[i].version;
	}
	return 0;
}

static void
config_check_version(struct config *cfg, const struct conf_head *h,
    const char *key, const char *v)
{
	if (v == NULL || !config_key_set(h, key))
		return;
	if (strncasecmp(v, "SSL", 3) == 0)
		config_error(cfg, config_key_line(h, key), key, "%s is not "
		    "supported: it is broken and BoringSSL does not implement it; "
		    "use TLSv1.2 or TLSv1.3", v);
	else if (config_version(v) == 0)
		config_error(cfg, config_key_line(h, key), key, "expected TLSv1, "
		    "TLSv1.1, TLSv1.2 or TLSv1.3, got '%s'", v);
}

static void
config_check_versions(struct config *cfg, const struct conf_head *h,
    const struct conf_tls *t)
{
	config_check_version(cfg, h, "min_version", t->min_version);
	config_check_version(cfg, h, "max_version", t->max_version);
}

/* config_acme_name_ok returns NULL when |name| is a DNS name an ACME CA
 * can validate by tls-alpn-01 or http-01, else why not. */
static const char *
config_acme_name_ok(const char *name)
{
	struct addr a;
	char err[64];

	if (strchr(name, '*') != NULL)
		return "wildcard names can only be validated by DNS (dns-01), "
		    "which tls-alpn-01 and http-01 cannot do: list the names, "
		    "or use cert and key from another ACME client";
	if (addr_parse(name, &a, err, sizeof(err)) == 0 ||
	    strspn(name, "0123456789.:[]") == strlen(name))
		return "an IP address: certificates for addresses are not "
		    "ordered, list host names";
	if (strchr(name, '.') == NULL)
		return "not a fully qualified domain name";
	return NULL;
}

const struct conf_acme *
config_find_acme(const struct config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->num_acmes; i++) {
		if (strcmp(cfg->acmes[i].h.name, name) == 0)
			return &cfg->acmes[i];
	}
	return NULL;
}

/* config_check_context_acme checks a context whose certificate comes from
 * an ACME CA: the names it orders are its servername list. */
static void
config_check_context_acme(struct config *cfg, const struct conf_context *cc)
{
	const struct conf_head *h = &cc->h;
	static const char *const cert_keys[] = { "cert", "key", "pfx",
		"passphrase", "passphrase_file", "sct", "ocsp_issuer",
		"ocsp_responder" };
	const char *why;
	int http = 0;

	if (config_find_acme(cfg, cc->acme) == NULL)
		config_error(cfg, config_key_line(h, "acme"), "acme", "no [acme "
		    "%s] in this file", cc->acme);
	for (size_t i = 0; i < sizeof(cert_keys) / sizeof(cert_keys[0]); i++) {
		if (config_key_set(h, cert_keys[i]))
			config_error(cfg, config_key_line(h, cert_keys[i]),
			    cert_keys[i], "the certificate of [context %s] comes "
			    "from acme: remove this line or the acme line",
			    h->name);
	}
	if (strcmp(cc->ocsp, "auto") != 0 && strcmp(cc->ocsp, "off") != 0)
		config_error(cfg, config_key_line(h, "ocsp"), "ocsp", "with acme, "
		    "auto (the responder the issued certificate names) or off: a "
		    "response file cannot follow certificates that change");
	if (cc->servername.num == 0)
		config_error(cfg, config_key_line(h, "acme"), "acme", "needs a "
		    "servername list: the names the certificate is ordered for");
	for (size_t i = 0; i < cc->servername.num; i++) {
		if ((why = config_acme_name_ok(cc->servername.v[i])) != NULL)
			config_error(cfg, cc->servername.lines[i], "servername",
			    "'%s' cannot be ordered through acme: %s",
			    cc->servername.v[i], why);
	}
	if (strcmp(cc->acme_challenge, "http-01") == 0) {
		for (size_t i = 0; i < cfg->num_listeners; i++)
			http |= cfg->listeners[i].acme_http != 0;
		if (!http)
			config_error(cfg, config_key_line(h, "acme_challenge"),
			    "acme_challenge", "http-01 needs a [listener] with "
			    "acme_http = yes on port 80, where the CA asks");
	} else if (strcmp(cc->acme_challenge, "tls-alpn-01") != 0) {
		config_error(cfg, config_key_line(h, "acme_challenge"),
		    "acme_challenge", "expected tls-alpn-01 or http-01, got "
		    "'%s'", cc->acme_challenge);
	}
}

static void
config_check_acme(struct config *cfg, struct conf_acme *a)
{
	struct conf_head *h = &a->h;

	config_check_required(cfg, SEC_ACME, h);
	if (a->directory != NULL && strncmp(a->directory, "https://", 8) != 0)
		config_error(cfg, config_key_line(h, "directory"), "directory",
		    "expected an https:// URL, got '%s'", a->directory);
	if (strcmp(a->key_type, "ecdsa") != 0 && strcmp(a->key_type, "rsa") != 0)
		config_error(cfg, config_key_line(h, "key_type"), "key_type",
		    "expected ecdsa or rsa, got '%s'", a->key_type);
	if ((a->eab_kid == NULL) != (a->eab_hmac_key_file == NULL))
		config_error(cfg, config_key_line(h, a->eab_kid == NULL ?
		    "eab_hmac_key_file" : "eab_kid"), a->eab_kid == NULL ?
		    "eab_hmac_key_file" : "eab_kid", "external account binding "
		    "needs both eab_kid and eab_hmac_key_file");
	if (a->shared_key_file != NULL && cfg->global.session_store == NULL)
		config_error(cfg, config_key_line(h, "shared_key_file"),
		    "shared_key_file", "has no effect without [global] "
		    "session_store, through which instances share certificates");
	if (a->state_dir[0] != '/')
		config_error(cfg, config_key_line(h, "state_dir"), "state_dir",
		    "expected an absolute path, got '%s'", a->state_dir);
}

static void
config_check_context(struct config *cfg, struct conf_context *cc)
{
	const struct conf_head *h = &cc->h;

	if (cc->cert.num != cc->key.num)
		config_error(cfg, config_key_line(h, cc->cert.num > cc->key.num ?
		    "cert" : "key"), cc->cert.num > cc->key.num ? "cert" : "key",
		    "[context %s] has %zu cert and %zu key lines; each cert "
		    "needs its key, in the same order", h->name, cc->cert.num,
		    cc->key.num);
	else if (cc->cert.num == 0 && cc->pfx == NULL && cc->acme == NULL)
		config_error(cfg, h->line, NULL, "[context %s] needs 'cert' and "
		    "'key' (PEM), 'pfx' (PKCS#12) or 'acme' (certificates "
		    "obtained automatically)", h->name);
	if (cc->acme != NULL)
		config_check_context_acme(cfg, cc);
	else if (config_key_set(h, "acme_challenge"))
		config_error(cfg, config_key_line(h, "acme_challenge"),
		    "acme_challenge", "has no effect without acme");
	if (cc->cert.num > 2)
		config_error(cfg, cc->cert.lines[2], "cert", "at most two "
		    "certificates per context: one RSA and one ECDSA");
	if (cc->dhparam != NULL)
		config_error(cfg, config_key_line(h, "dhparam"), "dhparam",
		    "not supported: BoringSSL has no DHE key exchange; ECDHE "
		    "always gives forward secrecy, so remove this line");
	if (cc->passphrase != NULL && cc->passphrase_file != NULL)
		config_error(cfg, config_key_line(h, "passphrase_file"),
		    "passphrase_file", "give either passphrase or "
		    "passphrase_file, not both");
	if (cc->request_cert && cc->crl.num > 0 && cc->ca == NULL)
		config_error(cfg, cc->crl.lines[0], "crl", "needs 'ca': a CRL is "
		    "checked along a chain verified against those CAs");
	if (cc->backend != NULL && config_find_backend(cfg, cc->backend) == NULL)
		config_error(cfg, config_key_line(h, "backend"), "backend",
		    "no [backend %s] in this file", cc->backend);
	if (!cc->request_cert) {
		static const char *const client_keys[] = { "ca", "crl",
			"reject_unauthorized", "require_cert", "verify_depth" };

		/* A client-certificate setting that does nothing would let an
		 * operator believe clients are checked when they are not. */
		for (size_t i = 0; i < 5; i++) {
			if (config_key_set(h, client_keys[i]))
				config_error(cfg, config_key_line(h, client_keys[i]),
				    client_keys[i], "has no effect without "
				    "request_cert = yes");
		}
	} else if (cc->ca == NULL && cc->reject_unauthorized) {
		config_error(cfg, config_key_line(h, "request_cert"),
		    "request_cert", "needs 'ca', the CAs that client "
		    "certificates are checked against (or reject_unauthorized "
		    "= no)");
	}
	config_check_routes(cfg, &cc->alpn_backend);
	config_check_versions(cfg, h, &cc->tls);
}

/* config_check_admin refuses to put metrics and status on a public
 * address unless the operator says so. */
static void
config_check_admin(struct config *cfg)
{
	struct conf_global *g = &cfg->global;
	int line = config_key_line(&g->h, "admin");
	char err[256];

	if (g->admin == NULL)
		return;
	if (addr_parse(g->admin, &g->admin_addr, err, sizeof(err)) != 0) {
		config_error(cfg, line, "admin", "%s", err);
		return;
	}
	if (!addr_is_loopback(&g->admin_addr) && !g->admin_allow_public)
		config_error(cfg, line, "admin", "'%s' is not a loopback "
		    "address or unix socket; set admin_allow_public = yes to "
		    "serve metrics and status on it", g->admin);
}

static void
config_check(struct config *cfg)
{
	const char *al = cfg->global.access_log;
	int b;

	if (cfg->num_listeners == 0)
		config_error(cfg, 0, NULL, "no [listener NAME] section: nothing "
		    "to accept connections on");
	for (size_t i = 0; i < cfg->num_listeners; i++)
		config_check_listener(cfg, &cfg->listeners[i]);
	for (size_t i = 0; i < cfg->num_listeners; i++) {
		config_check_routes(cfg, &cfg->listeners[i].alpn_backend);
		config_check_versions(cfg, &cfg->listeners[i].h,
		    &cfg->listeners[i].tls);
	}
	config_check_binds(cfg);
	for (size_t i = 0; i < cfg->num_backends; i++)
		config_check_backend(cfg, &cfg->backends[i]);
	for (size_t i = 0; i < cfg->num_contexts; i++)
		config_check_context(cfg, &cfg->contexts[i]);
	for (size_t i = 0; i < cfg->num_acmes; i++)
		config_check_acme(cfg, &cfg->acmes[i]);
	config_check_versions(cfg, &cfg->global.h, &cfg->global.tls);
	if (cfg->global.user != NULL && getpwnam(cfg->global.user) == NULL)
		config_error(cfg, config_key_line(&cfg->global.h, "user"), "user",
		    "no such user '%s'", cfg->global.user);
	if (cfg->global.group != NULL && getgrnam(cfg->global.group) == NULL)
		config_error(cfg, config_key_line(&cfg->global.h, "group"),
		    "group", "no such group '%s'", cfg->global.group);
	if (cfg->global.group != NULL && cfg->global.user == NULL)
		config_error(cfg, config_key_line(&cfg->global.h, "group"),
		    "group", "needs 'user' as well");
	if (cfg->global.ticket_keys != NULL &&
	    strcmp(cfg->global.ticket_keys, "redis") == 0 &&
	    cfg->global.session_store == NULL)
		config_error(cfg, config_key_line(&cfg->global.h, "ticket_keys"),
		    "ticket_keys", "'redis' keeps the keys in session_store, "
		    "which is not set");
	if (cfg->global.session_store != NULL) {
		char err[256];

		if (session_store_parse(cfg->global.session_store, err,
		    sizeof(err)) != 0)
			config_error(cfg, config_key_line(&cfg->global.h,
			    "session_store"), "session_store", "%s", err);
	}
	config_check_admin(cfg);
	for (size_t i = 0; i < cfg->global.resolver.num; i++) {
		char err[160];

		if (resolver_check(cfg->global.resolver.v[i], err,
		    sizeof(err)) != 0)
			config_error(cfg, cfg->global.resolver.lines[i],
			    "resolver", "%s", err);
	}
	if (al != NULL && confval_bool(al, &b) != 0 && al[0] != '/' &&
	    strcmp(al, "stderr") != 0 && strcmp(al, "syslog") != 0)
		config_error(cfg, config_key_line(&cfg->global.h, "access_log"),
		    "access_log", "expected yes, no, stderr, syslog or an "
		    "absolute file path, got '%s'", al);
}

static struct config *
config_parse(const char *name, const char *text)
{
	struct config *cfg = calloc(1, sizeof(*cfg));
	struct parse p = { 0 };

	if (cfg == NULL)
		return NULL;
	cfg->path = strdup(name);
	if (cfg->path == NULL) {
		free(cfg);
		return NULL;
	}
	p.cfg = cfg;
	p.file = name;
	p.text = text;
	p.sec = SEC_NONE;
	config_defaults(&p, SEC_GLOBAL, &cfg->global.h);
	ini_parse_stream(config_reader, &p, config_handler, &p);
	config_check(cfg);
	return cfg;
}

struct config *
config_load_string(const char *name, const char *text)
{
	return config_parse(name, text);
}

struct config *
config_load(const char *path)
{
	struct config *cfg;
	char *text = NULL;
	size_t len = 0, cap = 0;
	FILE *f = fopen(path, "re");

	if (f == NULL) {
		int saved = errno;

		cfg = config_parse(path, "");
		if (cfg != NULL) {
			/* Only the open error matters, not the emptiness. */
			for (size_t i = 0; i < cfg->num_errors; i++)
				free(cfg->errors[i]);
			cfg->num_errors = 0;
			config_error(cfg, 0, NULL, "cannot open: %s",
			    strerror(saved));
		}
		return cfg;
	}
	for (;;) {
		if (len + 4096 + 1 > cap) {
			char *n = realloc(text, cap = (cap + 4096) * 2);

			if (n == NULL) {
				free(text);
				fclose(f);
				return NULL;
			}
			text = n;
		}
		size_t r = fread(text + len, 1, cap - len - 1, f);

		len += r;
		if (r == 0)
			break;
	}
	fclose(f);
	text[len] = '\0';
	if (strlen(text) != len) {
		cfg = config_parse(path, "");
		if (cfg != NULL) {
			for (size_t i = 0; i < cfg->num_errors; i++)
				free(cfg->errors[i]);
			cfg->num_errors = 0;
			config_error(cfg, 0, NULL, "contains a NUL byte: not a "
			    "text file");
		}
	} else {
		cfg = config_parse(path, text);
	}
	free(text);
	return cfg;
}

static void
config_free_fields(enum conf_section sec, struct conf_head *h)
{
	for (size_t i = 0; i < NUM_KEYS; i++) {
		void *field = (char *)h + keys[i].offset;

		if (keys[i].sec != sec)
			continue;
		if (keys[i].type == T_STRING)
			free(*(char **)field);
		else if (keys[i].type == T_LIST)
			strlist_free(field);
	}
	free(h->name);
}

void
config_free(struct config *cfg)
{
	if (cfg == NULL)
		return;
	config_free_fields(SEC_GLOBAL, &cfg->global.h);
	for (size_t i = 0; i < cfg->num_listeners; i++) {
		config_free_fields(SEC_LISTENER, &cfg->listeners[i].h);
		free(cfg->listeners[i].addrs);
	}
	for (size_t i = 0; i < cfg->num_backends; i++)
		config_free_fields(SEC_BACKEND, &cfg->backends[i].h);
	for (size_t i = 0; i < cfg->num_contexts; i++)
		config_free_fields(SEC_CONTEXT, &cfg->contexts[i].h);
	for (size_t i = 0; i < cfg->num_acmes; i++)
		config_free_fields(SEC_ACME, &cfg->acmes[i].h);
	free(cfg->listeners);
	free(cfg->backends);
	free(cfg->contexts);
	free(cfg->acmes);
	for (size_t i = 0; i < cfg->num_errors; i++)
		free(cfg->errors[i]);
	free(cfg->errors);
	free(cfg->path);
	free(cfg);
}

void
config_print_keys(void)
{
	for (size_t i = 0; i < NUM_KEYS; i++) {
		const char *def = keys[i].def;

		if (def == NULL && keys[i].sec != SEC_GLOBAL &&
		    config_key_find(SEC_GLOBAL, keys[i].name, NULL) != NULL)
			def = "(from [global])";
		else if (def == NULL && keys[i].sec == SEC_BACKEND &&
		    config_key_find(SEC_LISTENER, keys[i].name, NULL) != NULL)
			def = "(from [listener])";
		else if (def == NULL)
			def = keys[i].required ? "(required)" : "-";
		printf("%s\t%s\t%s\t%s\t%s\n", section_names[keys[i].sec],
		    keys[i].name, type_names[keys[i].type], def, keys[i].doc);
	}
}
