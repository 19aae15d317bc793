/* pebble.h: Let's Encrypt's Pebble test CA (Debian's pebble 2.4) for the
 * ACME tests, on loopback only, and acme_shim.py in front of it for what
 * Pebble 2.4 lacks (rate limits, ACME Renewal Information).
 *
 * Every setup function here works outside a test body too (no ck_assert):
 * failures print the reason to stderr and return -1.
 *
 * What Pebble 2.4 does, as test_pebble checks it:
 *  - Its HTTPS listener uses a certificate for localhost, 127.0.0.1 and
 *    ::1 signed by a CA made at start (|ca|): what [acme] ca = points at.
 *    Clients should use |directory| (127.0.0.1: Pebble listens on IPv4
 *    only).
 *  - Validation (http-01 to |http_port|, tls-alpn-01 to |tls_port|) looks
 *    names up in pebble-challtestsrv, which answers A 127.0.0.1 for every
 *    name and no AAAA at all: Pebble 2.4 asks AAAA first and dials only
 *    the first address it got, so an AAAA answer would send it to ::1
 *    with no fallback to IPv4.
 *  - Each challenge is validated by 3 concurrent requests, all of which
 *    must succeed; one attempt, no retry: a failure makes the authz and
 *    its order invalid.
 *  - PEBBLE_VA_NOSLEEP=1 is always set (no random 0-15 s wait before each
 *    validation). Pebble's other randomness is left at its defaults
 *    unless |env| says otherwise: 5% of good nonces are rejected as
 *    badNonce, valid authorizations are reused in 50% of new orders.
 *    Pass "PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0" for a
 *    deterministic run.
 *  - Issued certificates live 5 years unless h_pebble_opts says
 *    otherwise; the chain is leaf + intermediate (RSA 2048), under a
 *    root fetched from the management interface (h_pebble_root).
 *  - State is in memory: a restart is a new CA with a new root. */
#ifndef TLSPROXY_PEBBLE_H
#define TLSPROXY_PEBBLE_H

#include <sys/types.h>

struct h_pebble {
	pid_t pid;         /* pebble */
	pid_t dns_pid;     /* pebble-challtestsrv */
	int port;          /* ACME API, HTTPS on 127.0.0.1 */
	int mgmt_port;     /* Pebble's management interface, HTTPS */
	int dns_port;      /* challtestsrv's DNS, UDP and TCP on 127.0.0.1 */
	int dns_mgmt_port; /* challtestsrv's management interface, HTTP */
	int http_port;     /* where validation connects for http-01 */
	int tls_port;      /* and for tls-alpn-01 */
	char dir[512];     /* this instance's files, in h_dir() */
	char ca[600];      /* CA of Pebble's HTTPS certificate (PEM) */
	char cert[600];    /* Pebble's HTTPS certificate (localhost,
			      127.0.0.1, ::1) and key: the shim's too */
	char key[600];
	char conf[600];    /* pebble's JSON config */
	char log[600];     /* pebble's output */
	char dns_log[600]; /* challtestsrv's output */
	char directory[128]; /* https://127.0.0.1:PORT/dir */
	char mgmt[128];      /* https://127.0.0.1:MGMT (no trailing /) */
	char dns_mgmt[128];  /* http://127.0.0.1:DNSMGMT */
	long long start_ms;  /* how long h_pebble_start took */
};

/* h_pebble_start starts challtestsrv and Pebble on free loopback ports,
 * Pebble validating http-01 on |http_port| and tls-alpn-01 on |tls_port|
 * (127.0.0.1), with PEBBLE_VA_NOSLEEP=1 and the extra environment |env|
 * (NULL, or space-separated NAME=VALUE words, e.g.
 * "PEBBLE_WFE_NONCEREJECT=50"; PEBBLE_VA_ALWAYS_VALID is refused). It
 * returns once the directory answers over HTTPS verified with |p->ca|:
 * 0, or -1 with the reason on stderr (the logs' tails included). Both
 * processes die with the calling process. Takes about 0.5 to 3 s: Pebble
 * makes RSA keys for its root and intermediate at start. */
int h_pebble_start(struct h_pebble *p, int http_port, int tls_port,
    const char *env);

/* What else h_pebble_start_opts can set; zero: Pebble's default. */
struct h_pebble_opts {
	const char *env;          /* as for h_pebble_start */
	/* External account binding required, with this key ID and key
	 * (base64url, as Pebble's config and RFC 8555 7.3.4 have it). */
	const char *eab_kid;
	const char *eab_hmac_b64url;
	/* Lifetime of issued certificates, in seconds; Pebble 2.4's
	 * default is 5 years (157766400 s). */
	long validity_s;
	/* The OCSP responder URL Pebble writes into issued certificates
	 * (Pebble serves none itself); NULL: none. */
	const char *ocsp_url;
};

/* h_pebble_start_opts is h_pebble_start with |o|'s settings (NULL:
 * none). */
int h_pebble_start_opts(struct h_pebble *p, int http_port, int tls_port,
    const struct h_pebble_opts *o);

/* h_pebble_stop kills (SIGTERM, then SIGKILL after a second) and reaps
 * Pebble and challtestsrv. Safe to call twice, or after a failed start. */
void h_pebble_stop(struct h_pebble *p);

/* h_pebble_root returns Pebble's current issuing root certificate (PEM,
 * malloc'd) from the management interface (/roots/0), or NULL with the
 * reason on stderr; h_pebble_intermediate the intermediate that signs
 * issued certificates (/intermediates/0). Issued chains are leaf +
 * intermediate; verify them against the root. */
char *h_pebble_root(struct h_pebble *p);
char *h_pebble_intermediate(struct h_pebble *p);

/* h_pebble_dns sends |json| to challtestsrv's management endpoint |path|
 * ("/add-a" {"host":"x.test.","addresses":["127.0.0.2"]}, "/clear-a",
 * "/set-default-ipv4" {"ip":"..."}, "/set-txt", "/add-aaaa", ...).
 * Returns 0 if it answered 200. */
int h_pebble_dns(struct h_pebble *p, const char *path, const char *json);

/* h_pebble_free_port returns a TCP port that was free on 127.0.0.1, or -1
 * (no ck_assert: usable in fixtures). */
int h_pebble_free_port(void);

/* The shim: acme_shim.py (see its docstring) on a free 127.0.0.1 port, an
 * HTTPS reverse proxy in front of Pebble's ACME API with Pebble's own
 * certificate (so |p->ca| verifies it too). */
struct h_acme_shim {
	pid_t pid;
	int port;
	char base[128];      /* https://127.0.0.1:PORT */
	char directory[160]; /* BASE/dir: what the client is pointed at */
	char control[600];   /* the JSON control file */
	char log[600];       /* one line per request, see h_acme_shim_count */
};

/* h_acme_shim_start starts the shim in front of |p| with an empty control
 * file and waits until it listens. 0, or -1 with the reason on stderr. */
int h_acme_shim_start(struct h_acme_shim *s, const struct h_pebble *p);

/* h_acme_shim_stop kills and reaps the shim. */
void h_acme_shim_stop(struct h_acme_shim *s);

/* h_acme_shim_control replaces the control file with the JSON text made
 * from |fmt| (printf-style), atomically (a new file renamed over the old:
 * the shim starts counting rate-limit rules afresh on each write), e.g.
 *
 *   {"renewalInfo": {"default": {"start": "2026-01-01T00:00:00Z",
 *                                "end": "2026-01-02T00:00:00Z"}},
 *    "rateLimit": [{"match": "newOrder", "count": 2, "retryAfter": 30}]}
 *
 * Returns 0, or -1 with the reason on stderr. */
int h_acme_shim_control(struct h_acme_shim *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* h_acme_shim_count counts the requests the shim has logged for
 * |resource| (a directory name such as "newOrder", "newAccount",
 * "newNonce", "renewalInfo", or one of "order", "authz", "chall",
 * "finalize", "cert", "account"; NULL: all) answered with |status|
 * (0: any). */
int h_acme_shim_count(const struct h_acme_shim *s, const char *resource,
    int status);

#endif
