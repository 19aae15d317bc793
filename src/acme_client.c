/* acme_client.c: the RFC 8555 exchanges of one account. */
#include "acme_client.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pool.h>

#include "acme_challenge.h"
#include "acme_jose.h"
#include "clock.h"
#include "https_client.h"

/* badNonce answers retried with the nonce they carry, per request. */
#define ACME_NONCE_RETRIES 8
/* How often pending authorizations and orders are polled when the CA
 * does not say (Retry-After). */
#define ACME_POLL_MS 1000
#define ACME_POLL_MAX_MS 10000

const char *const acme_fail_names[ACME_FAIL_COUNT] = {
	"network", "rate_limited", "bad_nonce", "authorization", "protocol",
	"certificate", "cancelled",
};

struct acme_client {
	struct acme_account_conf conf;
	struct https_client *https;
	EVP_PKEY *key;
	int cancel_fd;
	char *kid; /* the account URL, once registered */
	/* From the directory. */
	char *new_nonce;
	char *new_account;
	char *new_order;
	char *renewal_info;
	int eab_required;
	char *nonce; /* the next request's; NULL: ask new_nonce */
	const struct acme_hooks *hooks; /* during acme_client_order */
};

static void
acme_log(const struct acme_client *c, const char *line)
{
	if (c->hooks != NULL && c->hooks->log != NULL)
		c->hooks->log(c->hooks->arg, line);
}

static void
acme_tick(const struct acme_client *c)
{
	if (c->hooks != NULL && c->hooks->tick != NULL)
		c->hooks->tick(c->hooks->arg);
}

static void
acme_fail(struct acme_error *err, enum acme_fail kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
acme_fail(struct acme_error *err, enum acme_fail kind, const char *fmt, ...)
{
	va_list ap;

	err->kind = kind;
	err->retry_after_ms = 0;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

/* acme_cancelled returns whether the cancel descriptor is readable. */
static int
acme_cancelled(const struct acme_client *c)
{
	struct timeval tv = { 0, 0 };
	fd_set fds;

	if (c->cancel_fd < 0)
		return 0;
	FD_ZERO(&fds);
	FD_SET(c->cancel_fd, &fds);
	return select(c->cancel_fd + 1, &fds, NULL, NULL, &tv) > 0;
}

/* acme_sleep waits |ms| (never past |deadline_ms|) unless cancelled;
 * returns -1 when cancelled or out of time. */
static int
acme_sleep(const struct acme_client *c, uint64_t ms, uint64_t deadline_ms,
    struct acme_error *err)
{
	uint64_t now = clock_mono_ms();
	struct timeval tv;
	fd_set fds;

	if (now + ms > deadline_ms) {
		acme_fail(err, ACME_FAIL_NETWORK, "out of time waiting for the CA");
		return -1;
	}
	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	FD_ZERO(&fds);
	if (c->cancel_fd >= 0)
		FD_SET(c->cancel_fd, &fds);
	if (select(c->cancel_fd >= 0 ? c->cancel_fd + 1 : 0, &fds, NULL, NULL,
	    &tv) > 0) {
		acme_fail(err, ACME_FAIL_CANCELLED, "cancelled");
		return -1;
	}
	return 0;
}

struct acme_client *
acme_client_new(const struct acme_account_conf *conf, EVP_PKEY *account_key,
    int cancel_fd, struct acme_error *err)
{
	struct acme_client *c = calloc(1, sizeof(*c));
	char msg[256];

	if (c == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "out of memory");
		return NULL;
	}
	c->conf = *conf;
	c->cancel_fd = cancel_fd;
	c->https = https_client_new(conf->ca, msg, sizeof(msg));
	if (c->https == NULL) {
		acme_fail(err, ACME_FAIL_NETWORK, "%s", msg);
		free(c);
		return NULL;
	}
	EVP_PKEY_up_ref(account_key);
	c->key = account_key;
	return c;
}

void
acme_client_free(struct acme_client *c)
{
	if (c == NULL)
		return;
	https_client_free(c->https);
	EVP_PKEY_free(c->key);
	free(c->kid);
	free(c->new_nonce);
	free(c->new_account);
	free(c->new_order);
	free(c->renewal_info);
	free(c->nonce);
	free(c);
}

/* acme_http runs one request, mapping transport failures to |err|. */
static int
acme_http(struct acme_client *c, const char *method, const char *url,
    const char *body, uint64_t deadline_ms, struct https_response *resp,
    struct acme_error *err)
{
	char msg[400];

	if (acme_cancelled(c)) {
		acme_fail(err, ACME_FAIL_CANCELLED, "cancelled");
		return -1;
	}
	acme_tick(c);
	if (https_request(c->https, method, url, body != NULL ?
	    "application/jose+json" : NULL, body, body != NULL ? strlen(body) :
	    0, deadline_ms, c->cancel_fd, resp, msg, sizeof(msg)) != 0) {
		acme_fail(err, acme_cancelled(c) ? ACME_FAIL_CANCELLED :
		    ACME_FAIL_NETWORK, "%s", msg);
		return -1;
	}
	if (resp->replay_nonce != NULL) {
		free(c->nonce);
		c->nonce = strdup(resp->replay_nonce);
	}
	return 0;
}

/* acme_json parses a response body; NULL with |err| when it is not a
 * JSON object. */
static json_t *
acme_json(const char *url, const struct https_response *resp,
    struct acme_error *err)
{
	json_error_t jerr;
	json_t *j = json_loadb((const char *)resp->body, resp->body_len, 0,
	    &jerr);

	if (j == NULL || !json_is_object(j)) {
		json_decref(j);
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: the answer (HTTP %d) is "
		    "not a JSON object", url, resp->status);
		return NULL;
	}
	return j;
}

static const char *
acme_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

/* acme_problem turns an error answer into |err|. Returns 1 for badNonce
 * (retry), else 0. */
static int
acme_problem(const char *url, const struct https_response *resp,
    struct acme_error *err)
{
	json_error_t jerr;
	json_t *j = json_loadb((const char *)resp->body, resp->body_len, 0,
	    &jerr);
	const char *type = j != NULL ? acme_str(j, "type") : NULL;
	const char *detail = j != NULL ? acme_str(j, "detail") : NULL;
	const char *name = type != NULL && strrchr(type, ':') != NULL ?
	    strrchr(type, ':') + 1 : type;
	uint64_t wait = 0;
	int bad_nonce = name != NULL && strcmp(name, "badNonce") == 0;
	enum acme_fail kind = ACME_FAIL_PROTOCOL;

	if (resp->status == 429 || (name != NULL &&
	    strcmp(name, "rateLimited") == 0))
		kind = ACME_FAIL_RATE_LIMITED;
	else if (bad_nonce)
		kind = ACME_FAIL_BAD_NONCE;
	acme_fail(err, kind, "%s: HTTP %d%s%s%s%s", url, resp->status,
	    name != NULL ? " " : "", name != NULL ? name : "",
	    detail != NULL ? ": " : "", detail != NULL ? detail : "");
	if (resp->retry_after != NULL &&
	    https_retry_after(resp->retry_after, time(NULL), &wait) == 0)
		err->retry_after_ms = wait;
	json_decref(j);
	return bad_nonce;
}

/* acme_get_nonce asks the CA for a fresh nonce when none is kept. */
static int
acme_get_nonce(struct acme_client *c, uint64_t deadline_ms,
    struct acme_error *err)
{
	struct https_response resp;
	int rc;

	if (c->nonce != NULL)
		return 0;
	memset(&resp, 0, sizeof(resp));
	rc = acme_http(c, "HEAD", c->new_nonce, NULL, deadline_ms, &resp, err);
	if (rc == 0 && c->nonce == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: HTTP %d without a "
		    "Replay-Nonce", c->new_nonce, resp.status);
		rc = -1;
	}
	https_response_free(&resp);
	return rc;
}

/* acme_post sends |payload| (NULL: POST-as-GET) to |url|, signed with the
 * account's key id, or with its public key when |use_jwk|. On success
 * |resp| holds the answer (2xx). */
static int
acme_post(struct acme_client *c, const char *url, const char *payload,
    int use_jwk, uint64_t deadline_ms, struct https_response *resp,
    struct acme_error *err)
{
	for (int attempt = 0; attempt <= ACME_NONCE_RETRIES; attempt++) {
		char *jws, *nonce;
		int rc;

		if (acme_get_nonce(c, deadline_ms, err) != 0)
			return -1;
		/* A nonce is good for one request, whatever its answer. */
		nonce = c->nonce;
		c->nonce = NULL;
		jws = acme_jws(c->key, use_jwk ? NULL : c->kid, nonce, url,
		    payload != NULL ? payload : "");
		free(nonce);
		if (jws == NULL) {
			acme_fail(err, ACME_FAIL_PROTOCOL, "%s: cannot sign the "
			    "request", url);
			return -1;
		}
		memset(resp, 0, sizeof(*resp));
		rc = acme_http(c, "POST", url, jws, deadline_ms, resp, err);
		free(jws);
		if (rc != 0)
			return -1;
		if (resp->status >= 200 && resp->status < 300)
			return 0;
		rc = acme_problem(url, resp, err);
		https_response_free(resp);
		if (!rc)
			return -1;
	}
	return -1;
}

/* acme_post_json is acme_post returning the answer as a JSON object, and
 * its Location in |*location| when asked. */
static json_t *
acme_post_json(struct acme_client *c, const char *url, const char *payload,
    int use_jwk, uint64_t deadline_ms, char **location,
    struct acme_error *err)
{
	struct https_response resp;
	json_t *j;

	if (acme_post(c, url, payload, use_jwk, deadline_ms, &resp, err) != 0)
		return NULL;
	j = acme_json(url, &resp, err);
	if (j != NULL && location != NULL) {
		*location = resp.location != NULL ? strdup(resp.location) : NULL;
		if (*location == NULL) {
			acme_fail(err, ACME_FAIL_PROTOCOL, "%s: HTTP %d without a "
			    "Location", url, resp.status);
			json_decref(j);
			j = NULL;
		}
	}
	https_response_free(&resp);
	return j;
}

/* acme_directory reads the CA's directory. */
static int
acme_directory(struct acme_client *c, uint64_t deadline_ms,
    struct acme_error *err)
{
	struct https_response resp;
	json_t *j, *meta;
	const char *nn, *na, *no, *ri;
	int rc = -1;

	memset(&resp, 0, sizeof(resp));
	if (acme_http(c, "GET", c->conf.directory, NULL, deadline_ms, &resp,
	    err) != 0)
		return -1;
	if (resp.status != 200) {
		acme_problem(c->conf.directory, &resp, err);
		goto out;
	}
	if ((j = acme_json(c->conf.directory, &resp, err)) == NULL)
		goto out;
	nn = acme_str(j, "newNonce");
	na = acme_str(j, "newAccount");
	no = acme_str(j, "newOrder");
	ri = acme_str(j, "renewalInfo");
	meta = json_object_get(j, "meta");
	if (nn == NULL || na == NULL || no == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: the directory lacks "
		    "newNonce, newAccount or newOrder", c->conf.directory);
	} else {
		free(c->new_nonce);
		free(c->new_account);
		free(c->new_order);
		free(c->renewal_info);
		c->new_nonce = strdup(nn);
		c->new_account = strdup(na);
		c->new_order = strdup(no);
		c->renewal_info = ri != NULL ? strdup(ri) : NULL;
		c->eab_required = json_is_true(json_object_get(meta,
		    "externalAccountRequired"));
		rc = c->new_nonce != NULL && c->new_account != NULL &&
		    c->new_order != NULL ? 0 : -1;
		if (rc != 0)
			acme_fail(err, ACME_FAIL_PROTOCOL, "out of memory");
	}
	json_decref(j);
out:
	https_response_free(&resp);
	return rc;
}

int
acme_client_register(struct acme_client *c, uint64_t deadline_ms,
    struct acme_error *err)
{
	json_t *req = json_object(), *acct;
	char *payload = NULL, *kid = NULL;

	if (acme_directory(c, deadline_ms, err) != 0)
		goto fail;
	if (c->eab_required && c->conf.eab_kid == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: the CA requires an "
		    "external account binding: set eab_kid and eab_hmac_key_file",
		    c->conf.directory);
		goto fail;
	}
	if (req == NULL)
		goto oom;
	json_object_set_new(req, "termsOfServiceAgreed", json_true());
	if (c->conf.email != NULL) {
		char mailto[320];

		snprintf(mailto, sizeof(mailto), "mailto:%s", c->conf.email);
		json_object_set_new(req, "contact", json_pack("[s]", mailto));
	}
	if (c->conf.eab_kid != NULL) {
		json_t *eab = acme_eab(c->key, c->conf.eab_kid, c->conf.eab_key,
		    c->conf.eab_key_len, c->new_account);

		if (eab == NULL)
			goto oom;
		json_object_set_new(req, "externalAccountBinding", eab);
	}
	if ((payload = json_dumps(req, JSON_COMPACT)) == NULL)
		goto oom;
	acct = acme_post_json(c, c->new_account, payload, 1, deadline_ms, &kid,
	    err);
	if (acct == NULL)
		goto fail;
	if (acme_str(acct, "status") != NULL &&
	    strcmp(acme_str(acct, "status"), "valid") != 0) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: the account is %s",
		    kid, acme_str(acct, "status"));
		json_decref(acct);
		free(kid);
		goto fail;
	}
	json_decref(acct);
	free(c->kid);
	c->kid = kid;
	json_decref(req);
	free(payload);
	return 0;
oom:
	acme_fail(err, ACME_FAIL_PROTOCOL, "out of memory");
fail:
	json_decref(req);
	free(payload);
	return -1;
}

int
acme_client_has_ari(const struct acme_client *c)
{
	return c->renewal_info != NULL;
}

void
acme_issued_free(struct acme_issued *is)
{
	free(is->chain_pem);
	EVP_PKEY_free(is->key);
	memset(is, 0, sizeof(*is));
}

/* acme_poll_wait is how long to wait before polling |resp|'s resource
 * again: the CA's Retry-After, else a growing default. */
static uint64_t
acme_poll_wait(const struct https_response *resp, int round)
{
	uint64_t ms = 0;

	if (resp != NULL && resp->retry_after != NULL &&
	    https_retry_after(resp->retry_after, time(NULL), &ms) == 0 && ms > 0)
		return ms < ACME_POLL_MAX_MS * 6 ? ms : ACME_POLL_MAX_MS * 6;
	ms = (uint64_t)ACME_POLL_MS << (round < 4 ? round : 4);
	return ms < ACME_POLL_MAX_MS ? ms : ACME_POLL_MAX_MS;
}

/* acme_poll fetches |url| until its status is neither "pending" nor
 * "processing" (nor "ready" when |ready_is_final| is 0). Returns the
 * object, or NULL with |err|. */
static json_t *
acme_poll(struct acme_client *c, const char *url, int ready_is_final,
    uint64_t deadline_ms, struct acme_error *err)
{
	for (int round = 0;; round++) {
		struct https_response resp;
		json_t *j;
		const char *st;
		uint64_t wait;

		if (acme_post(c, url, NULL, 0, deadline_ms, &resp, err) != 0)
			return NULL;
		j = acme_json(url, &resp, err);
		wait = acme_poll_wait(&resp, round);
		https_response_free(&resp);
		if (j == NULL)
			return NULL;
		st = acme_str(j, "status");
		if (st == NULL || (strcmp(st, "pending") != 0 &&
		    strcmp(st, "processing") != 0 && (ready_is_final ||
		    strcmp(st, "ready") != 0)))
			return j;
		json_decref(j);
		if (acme_sleep(c, wait, deadline_ms, err) != 0)
			return NULL;
	}
}

/* acme_challenge_of returns the challenge of |type| in authorization
 * |authz|, or NULL. */
static json_t *
acme_challenge_of(json_t *authz, const char *type)
{
	json_t *list = json_object_get(authz, "challenges");

	for (size_t i = 0; i < json_array_size(list); i++) {
		json_t *ch = json_array_get(list, i);

		if (acme_str(ch, "type") != NULL &&
		    strcmp(acme_str(ch, "type"), type) == 0)
			return ch;
	}
	return NULL;
}

/* One challenge being answered, to take down afterwards. */
struct acme_answer {
	char *name;  /* tls-alpn-01 */
	char *token; /* http-01 */
};

static void
acme_answer_clear(const struct acme_client *c, struct acme_answer *a)
{
	const struct acme_hooks *h = c->hooks;

	if (a->name != NULL) {
		acme_challenge_clear_tls(a->name);
		if (h != NULL && h->answer != NULL)
			h->answer(h->arg, "tls", a->name, NULL);
	}
	if (a->token != NULL) {
		acme_challenge_clear_http(a->token);
		if (h != NULL && h->answer != NULL)
			h->answer(h->arg, "http", a->token, NULL);
	}
	free(a->name);
	free(a->token);
	memset(a, 0, sizeof(*a));
}

/* acme_answer_set publishes the answer to challenge |ch| for |name|. */
static int
acme_answer_set(struct acme_client *c, enum acme_challenge_type type,
    const char *name, const json_t *ch, struct acme_answer *a,
    struct acme_error *err)
{
	const char *token = acme_str(ch, "token");
	char *ka;
	int rc = -1;

	if (token == NULL || token[0] == '\0' ||
	    strspn(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789-_") != strlen(token)) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "the challenge for %s has no "
		    "valid token", name);
		return -1;
	}
	if ((ka = acme_key_authorization(token, c->key)) == NULL)
		goto oom;
	if (type == ACME_CHALLENGE_TLS_ALPN) {
		CRYPTO_BUFFER *cert = NULL;
		EVP_PKEY *key = NULL;

		if (acme_alpn_cert(name, ka, NULL, &cert, &key) == 0 &&
		    (a->name = strdup(name)) != NULL &&
		    acme_challenge_set_tls(name, cert, key) == 0)
			rc = 0;
		CRYPTO_BUFFER_free(cert);
		EVP_PKEY_free(key);
	} else if ((a->token = strdup(token)) != NULL &&
	    acme_challenge_set_http(token, ka) == 0) {
		rc = 0;
	}
	if (rc == 0 && c->hooks != NULL && c->hooks->answer != NULL)
		c->hooks->answer(c->hooks->arg, type == ACME_CHALLENGE_TLS_ALPN ?
		    "tls" : "http", type == ACME_CHALLENGE_TLS_ALPN ? name : token,
		    ka);
	free(ka);
	if (rc == 0)
		return 0;
oom:
	acme_fail(err, ACME_FAIL_PROTOCOL, "cannot prepare the answer for %s",
	    name);
	return -1;
}

/* acme_authorize takes one authorization of an order to "valid". */
static int
acme_authorize(struct acme_client *c, const char *url,
    enum acme_challenge_type type, uint64_t deadline_ms,
    struct acme_error *err)
{
	const char *type_name = type == ACME_CHALLENGE_TLS_ALPN ?
	    "tls-alpn-01" : "http-01";
	struct acme_answer answer = { NULL, NULL };
	json_t *authz, *ch, *done = NULL, *resp_ch;
	const char *name, *st, *curl;
	char line[512];
	int rc = -1;

	if ((authz = acme_post_json(c, url, NULL, 0, deadline_ms, NULL,
	    err)) == NULL)
		return -1;
	name = json_string_value(json_object_get(json_object_get(authz,
	    "identifier"), "value"));
	st = acme_str(authz, "status");
	if (name == NULL || st == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: malformed authorization",
		    url);
		goto out;
	}
	if (strcmp(st, "valid") == 0) {
		rc = 0;
		goto out;
	}
	if (strcmp(st, "pending") != 0) {
		acme_fail(err, ACME_FAIL_AUTHORIZATION, "authorization for %s "
		    "is %s", name, st);
		goto out;
	}
	if ((ch = acme_challenge_of(authz, type_name)) == NULL ||
	    (curl = acme_str(ch, "url")) == NULL) {
		acme_fail(err, ACME_FAIL_AUTHORIZATION, "the CA offers no %s "
		    "challenge for %s", type_name, name);
		goto out;
	}
	if (acme_answer_set(c, type, name, ch, &answer, err) != 0)
		goto out;
	snprintf(line, sizeof(line), "%s: answering %s", name, type_name);
	acme_log(c, line);
	/* The answer is in place for every worker: tell the CA to look. */
	if ((resp_ch = acme_post_json(c, curl, "{}", 0, deadline_ms, NULL,
	    err)) == NULL)
		goto out;
	json_decref(resp_ch);
	if ((done = acme_poll(c, url, 1, deadline_ms, err)) == NULL)
		goto out;
	st = acme_str(done, "status");
	if (st != NULL && strcmp(st, "valid") == 0) {
		rc = 0;
	} else {
		json_t *cerr = json_object_get(acme_challenge_of(done, type_name),
		    "error");
		const char *detail = acme_str(cerr, "detail");
		const char *etype = acme_str(cerr, "type");

		acme_fail(err, ACME_FAIL_AUTHORIZATION, "%s for %s failed: %s%s%s",
		    type_name, name, st != NULL ? st : "no status",
		    etype != NULL || detail != NULL ? ": " : "",
		    detail != NULL ? detail : etype != NULL ? etype : "");
	}
out:
	acme_answer_clear(c, &answer);
	json_decref(done);
	json_decref(authz);
	return rc;
}

/* acme_finalize sends the CSR for |names| with a new key, waits for the
 * order to be valid and downloads the chain. */
static int
acme_finalize(struct acme_client *c, const char *order_url,
    const char *finalize, const char *const *names, size_t num_names,
    int rsa, uint64_t deadline_ms, struct acme_issued *out,
    struct acme_error *err)
{
	EVP_PKEY *key = acme_key_new(rsa ? ACME_KEY_RSA : ACME_KEY_ECDSA);
	uint8_t *csr = NULL;
	size_t csr_len = 0;
	char *csr64 = NULL, *payload = NULL;
	json_t *req = NULL, *order = NULL, *j;
	const char *st, *cert_url;
	struct https_response resp;
	int rc = -1;

	memset(&resp, 0, sizeof(resp));
	if (key == NULL ||
	    (csr = acme_csr(key, names, num_names, &csr_len)) == NULL ||
	    (csr64 = acme_b64url(csr, csr_len)) == NULL ||
	    (req = json_pack("{s:s}", "csr", csr64)) == NULL ||
	    (payload = json_dumps(req, JSON_COMPACT)) == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "cannot make the CSR");
		goto out;
	}
	if ((j = acme_post_json(c, finalize, payload, 0, deadline_ms, NULL,
	    err)) == NULL)
		goto out;
	json_decref(j);
	if ((order = acme_poll(c, order_url, 1, deadline_ms, err)) == NULL)
		goto out;
	st = acme_str(order, "status");
	cert_url = acme_str(order, "certificate");
	if (st == NULL || strcmp(st, "valid") != 0 || cert_url == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: the order is %s after "
		    "finalization", order_url, st != NULL ? st : "without status");
		goto out;
	}
	if (acme_post(c, cert_url, NULL, 0, deadline_ms, &resp, err) != 0)
		goto out;
	if ((out->chain_pem = malloc(resp.body_len + 1)) == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "out of memory");
		goto out;
	}
	memcpy(out->chain_pem, resp.body, resp.body_len);
	out->chain_pem[resp.body_len] = '\0';
	out->chain_len = resp.body_len;
	out->key = key;
	key = NULL;
	rc = 0;
out:
	https_response_free(&resp);
	EVP_PKEY_free(key);
	OPENSSL_free(csr);
	free(csr64);
	free(payload);
	json_decref(req);
	json_decref(order);
	return rc;
}

static int acme_order_run(struct acme_client *c, const char *const *names,
    size_t num_names, enum acme_challenge_type type, int rsa,
    const char *replaces, uint64_t deadline_ms, struct acme_issued *out,
    struct acme_error *err);

int
acme_client_order(struct acme_client *c, const char *const *names,
    size_t num_names, enum acme_challenge_type type, int rsa,
    const char *replaces, uint64_t deadline_ms, struct acme_issued *out,
    const struct acme_hooks *hooks, struct acme_error *err)
{
	int rc;

	c->hooks = hooks;
	rc = acme_order_run(c, names, num_names, type, rsa, replaces,
	    deadline_ms, out, err);
	c->hooks = NULL;
	return rc;
}

static int
acme_order_run(struct acme_client *c, const char *const *names,
    size_t num_names, enum acme_challenge_type type, int rsa,
    const char *replaces, uint64_t deadline_ms, struct acme_issued *out,
    struct acme_error *err)
{
	json_t *req = json_object(), *ids = json_array(), *order = NULL;
	json_t *authzs;
	char *payload = NULL, *order_url = NULL, line[512];
	const char *finalize, *st;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	if (req == NULL || ids == NULL)
		goto oom;
	for (size_t i = 0; i < num_names; i++)
		json_array_append_new(ids, json_pack("{s:s,s:s}", "type", "dns",
		    "value", names[i]));
	json_object_set(req, "identifiers", ids);
	if (replaces != NULL && c->renewal_info != NULL)
		json_object_set_new(req, "replaces", json_string(replaces));
	if ((payload = json_dumps(req, JSON_COMPACT)) == NULL)
		goto oom;
	if ((order = acme_post_json(c, c->new_order, payload, 0, deadline_ms,
	    &order_url, err)) == NULL)
		goto out;
	snprintf(line, sizeof(line), "order %s for %s%s", order_url, names[0],
	    num_names > 1 ? " and more" : "");
	acme_log(c, line);
	authzs = json_object_get(order, "authorizations");
	finalize = acme_str(order, "finalize");
	if (!json_is_array(authzs) || finalize == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: malformed order",
		    order_url);
		goto out;
	}
	st = acme_str(order, "status");
	if (st != NULL && strcmp(st, "pending") != 0 &&
	    strcmp(st, "ready") != 0) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: new order is %s",
		    order_url, st);
		goto out;
	}
	for (size_t i = 0; i < json_array_size(authzs); i++) {
		const char *url = json_string_value(json_array_get(authzs, i));

		if (url == NULL) {
			acme_fail(err, ACME_FAIL_PROTOCOL, "%s: malformed "
			    "authorization list", order_url);
			goto out;
		}
		if (acme_authorize(c, url, type, deadline_ms, err) != 0)
			goto out;
	}
	acme_log(c, "names validated: finalizing");
	rc = acme_finalize(c, order_url, finalize, names, num_names, rsa,
	    deadline_ms, out, err);
	goto out;
oom:
	acme_fail(err, ACME_FAIL_PROTOCOL, "out of memory");
out:
	json_decref(req);
	json_decref(ids);
	json_decref(order);
	free(payload);
	free(order_url);
	return rc;
}

/* acme_time parses an RFC 3339 time (fractional seconds ignored, "Z" or
 * an offset). Returns 0 or -1. */
static int
acme_time(const char *s, int64_t *out)
{
	struct tm tm;
	const char *p;
	int64_t off = 0;

	memset(&tm, 0, sizeof(tm));
	if (s == NULL || (p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return -1;
	if (*p == '.') {
		p++;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == '+' || *p == '-') {
		int h, m;

		if (sscanf(p + 1, "%2d:%2d", &h, &m) != 2)
			return -1;
		off = (h * 3600 + m * 60) * (*p == '+' ? 1 : -1);
	} else if (*p != 'Z' && *p != 'z') {
		return -1;
	}
	*out = (int64_t)timegm(&tm) - off;
	return 0;
}

int
acme_client_renewal_info(struct acme_client *c, const char *cert_id,
    uint64_t deadline_ms, int64_t *start, int64_t *end,
    uint64_t *retry_after_ms, struct acme_error *err)
{
	struct https_response resp;
	char url[2048];
	json_t *j = NULL, *w;
	int rc = -1;

	if (c->renewal_info == NULL) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "the CA offers no renewal "
		    "information");
		return -1;
	}
	snprintf(url, sizeof(url), "%s%s%s", c->renewal_info,
	    c->renewal_info[strlen(c->renewal_info) - 1] == '/' ? "" : "/",
	    cert_id);
	memset(&resp, 0, sizeof(resp));
	if (acme_http(c, "GET", url, NULL, deadline_ms, &resp, err) != 0)
		return -1;
	if (resp.status != 200) {
		acme_problem(url, &resp, err);
		goto out;
	}
	if ((j = acme_json(url, &resp, err)) == NULL)
		goto out;
	w = json_object_get(j, "suggestedWindow");
	if (acme_time(acme_str(w, "start"), start) != 0 ||
	    acme_time(acme_str(w, "end"), end) != 0 || *end < *start) {
		acme_fail(err, ACME_FAIL_PROTOCOL, "%s: malformed "
		    "suggestedWindow", url);
		goto out;
	}
	*retry_after_ms = 0;
	if (resp.retry_after != NULL)
		https_retry_after(resp.retry_after, time(NULL), retry_after_ms);
	rc = 0;
out:
	json_decref(j);
	https_response_free(&resp);
	return rc;
}
