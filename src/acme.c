/* acme.c: the ACME thread: which orders exist, when each is due, and
 * what is kept on disk. */
#include "acme.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme_cert.h"
#include "acme_client.h"
#include "acme_jose.h"
#include "acme_share.h"
#include "atomic_file.h"
#include "clock.h"
#include "config.h"
#include "generation.h"
#include "log.h"
#include "thread.h"
#include "tls_ctx.h"

/* Backoff after a failure: 10 s, doubling, at most an hour. */
#define ACME_BACKOFF_MIN_S 10
#define ACME_BACKOFF_MAX_S 3600
/* How long one order may take, challenges and polling included. */
#define ACME_ORDER_MS (10 * 60 * 1000)
/* How often renewal information is asked for when the CA does not say. */
#define ACME_ARI_POLL_S (6 * 3600)

struct acme_account {
	struct acme_account *next;
	char *name;
	char *directory, *email, *ca, *eab_kid, *state_dir;
	uint8_t *eab_key;
	size_t eab_key_len;
	char *eab_key_file;
	int rsa;
	uint64_t renew_before_ms;
	char *share_url, *share_prefix, *share_key_file; /* NULL: no sharing */
	int refs; /* orders using it */
	/* The ACME thread's. */
	EVP_PKEY *key;
	struct acme_client *client;
	int registered;
	struct acme_share *share;
};

struct acme_order {
	struct acme_order *next;
	char *key;   /* the slot's */
	char *names; /* comma-separated, for logs and status */
	char **name;
	size_t num_names;
	enum acme_challenge_type type;
	char dir[1024];
	struct acme_slot *slot;
	struct acme_account *acct;
	/* What the last acme_sync wants, taken over by the thread between
	 * two steps (it reads |type| and |acct| without the lock). */
	enum acme_challenge_type type_next;
	struct acme_account *acct_next;
	int dead;    /* no context uses it: freed by the thread */
	int checked; /* the disk was looked at */
	int waiting; /* another instance orders it */
	unsigned failures;
	int64_t next_at;
	int64_t renew_at;
	int64_t ari_at; /* next renewal-information check; 0: none */
	int64_t last_attempt;
	char last_result[8];
	char last_error[512];
};

struct acme {
	pthread_t thread;
	int started;
	/* Guards the lists, the schedule and the status fields. */
	pthread_mutex_t lock;
	struct acme_order *orders;
	struct acme_account *accounts;
	/* wake: the plan changed; cancel: stop now, even mid-request. */
	int wake[2];
	int cancel[2];
	uint64_t ok;
	uint64_t failed[ACME_FAIL_COUNT];
	void (*changed)(void *);
	void *changed_arg;
};

/* acme_changed tells the control side a certificate went into service. */
static void
acme_changed(const struct acme *a)
{
	if (a->changed != NULL)
		a->changed(a->changed_arg);
}

static void
acme_account_free(struct acme_account *ac)
{
	acme_share_free(ac->share);
	free(ac->share_url);
	free(ac->share_prefix);
	free(ac->share_key_file);
	acme_client_free(ac->client);
	EVP_PKEY_free(ac->key);
	free(ac->name);
	free(ac->directory);
	free(ac->email);
	free(ac->ca);
	free(ac->eab_kid);
	free(ac->eab_key_file);
	free(ac->state_dir);
	if (ac->eab_key != NULL)
		OPENSSL_cleanse(ac->eab_key, ac->eab_key_len);
	free(ac->eab_key);
	free(ac);
}

static void
acme_order_free(struct acme_order *o)
{
	for (size_t i = 0; i < o->num_names; i++)
		free(o->name[i]);
	free(o->name);
	free(o->names);
	free(o->key);
	acme_slot_unref(o->slot);
	free(o);
}

int
acme_order_dir(const char *state_dir, const char *key, const char *first,
    char *buf, size_t len)
{
	uint8_t md[SHA256_DIGEST_LENGTH];
	int n;

	/* The first name keeps the directory readable; the hash of the whole
	 * order keeps orders of other accounts or name lists apart. */
	SHA256((const uint8_t *)key, strlen(key), md);
	n = snprintf(buf, len, "%s/%s-%02x%02x%02x%02x%02x%02x", state_dir,
	    first, md[0], md[1], md[2], md[3], md[4], md[5]);
	return n > 0 && (size_t)n < len ? 0 : -1;
}

/* acme_wake_fd makes |fd|'s pipe readable. */
static void
acme_poke(int fd)
{
	ssize_t n;

	do {
		n = write(fd, "x", 1);
	} while (n < 0 && errno == EINTR);
}

static void
acme_drain(int fd)
{
	char buf[64];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

/* ---- Disk. */

static int
acme_mkdirs(const char *path)
{
	char buf[1024];

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0700) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/* A parsed chain: buffers to serve, the leaf for checks. */
struct acme_chain {
	CRYPTO_BUFFER *buf[16];
	size_t num;
	X509 *leaf;
	int64_t not_after;
	int64_t not_before;
};

static void
acme_chain_free(struct acme_chain *ch)
{
	for (size_t i = 0; i < ch->num; i++)
		CRYPTO_BUFFER_free(ch->buf[i]);
	X509_free(ch->leaf);
	memset(ch, 0, sizeof(*ch));
}

static int64_t
acme_asn1_time(const ASN1_TIME *t)
{
	int days = 0, secs = 0;

	if (!ASN1_TIME_diff(&days, &secs, NULL, t))
		return 0;
	return (int64_t)time(NULL) + (int64_t)days * 86400 + secs;
}

/* acme_chain_parse reads a PEM chain, leaf first, and checks that it
 * fits the order: the leaf holds |key|'s public key and every name. */
static int
acme_chain_parse(const char *pem, size_t len, EVP_PKEY *key,
    const struct acme_order *o, struct acme_chain *ch, char *why,
    size_t why_len)
{
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	X509 *x;

	memset(ch, 0, sizeof(*ch));
	if (bio == NULL)
		goto oom;
	while (ch->num < 16 && (x = PEM_read_bio_X509(bio, NULL, NULL,
	    NULL)) != NULL) {
		uint8_t *der = NULL;
		int n = i2d_X509(x, &der);

		if (n <= 0 || (ch->buf[ch->num] = CRYPTO_BUFFER_new(der,
		    (size_t)n, NULL)) == NULL) {
			OPENSSL_free(der);
			X509_free(x);
			goto oom;
		}
		OPENSSL_free(der);
		ch->num++;
		if (ch->leaf == NULL)
			ch->leaf = x;
		else
			X509_free(x);
	}
	ERR_clear_error();
	BIO_free(bio);
	bio = NULL;
	if (ch->leaf == NULL) {
		snprintf(why, why_len, "no certificate in the chain");
		goto fail;
	}
	if (X509_check_private_key(ch->leaf, key) != 1) {
		ERR_clear_error();
		snprintf(why, why_len, "the certificate does not go with its key");
		goto fail;
	}
	for (size_t i = 0; i < o->num_names; i++) {
		if (X509_check_host(ch->leaf, o->name[i], strlen(o->name[i]), 0,
		    NULL) != 1) {
			snprintf(why, why_len, "the certificate does not name %s",
			    o->name[i]);
			goto fail;
		}
	}
	ch->not_after = acme_asn1_time(X509_get0_notAfter(ch->leaf));
	ch->not_before = acme_asn1_time(X509_get0_notBefore(ch->leaf));
	return 0;
oom:
	snprintf(why, why_len, "out of memory");
fail:
	BIO_free(bio);
	acme_chain_free(ch);
	return -1;
}

static char *
acme_read_file(const char *path, size_t *out_len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && n < (1 << 20) &&
	    fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) != NULL) {
		if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		} else {
			buf[n] = '\0';
			*out_len = (size_t)n;
		}
	}
	fclose(f);
	return buf;
}

/* acme_load_disk publishes the order's certificate from disk when there
 * is a valid one. Returns 0 when one was published. */
static int
acme_load_disk(struct acme_order *o)
{
	char path[1100], why[256], err[256];
	struct acme_chain ch;
	EVP_PKEY *key;
	size_t len = 0;
	char *pem;
	int rc = -1;

	snprintf(path, sizeof(path), "%s/key.pem", o->dir);
	if ((key = acme_key_load(path, err, sizeof(err))) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/cert.pem", o->dir);
	if ((pem = acme_read_file(path, &len)) == NULL) {
		EVP_PKEY_free(key);
		return -1;
	}
	if (acme_chain_parse(pem, len, key, o, &ch, why, sizeof(why)) != 0) {
		log_msg(LOGL_WARNING, "acme: %s: ignoring %s: %s", o->names,
		    path, why);
	} else if (ch.not_after <= (int64_t)time(NULL)) {
		log_msg(LOGL_WARNING, "acme: %s: %s has expired", o->names, path);
	} else if (acme_slot_set(o->slot, ch.buf, ch.num, key,
	    ch.not_after) == 0) {
		log_msg(LOGL_INFO, "acme: %s: certificate from %s, valid until "
		    "%lld", o->names, path, (long long)ch.not_after);
		rc = 0;
	}
	acme_chain_free(&ch);
	free(pem);
	EVP_PKEY_free(key);
	return rc;
}

/* acme_save_disk keeps a new certificate and its key. */
static int
acme_save_disk(const struct acme_order *o, const struct acme_issued *is,
    char *err, size_t err_len)
{
	char path[1100];

	if (acme_mkdirs(o->dir) != 0) {
		snprintf(err, err_len, "cannot create %s: %s", o->dir,
		    strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/key.pem", o->dir);
	if (acme_key_save(path, is->key, err, err_len) != 0)
		return -1;
	/* The key first: a certificate on disk always has its key. */
	snprintf(path, sizeof(path), "%s/cert.pem", o->dir);
	return atomic_file_write(path, is->chain_pem, is->chain_len, 0644, err,
	    err_len);
}

/* ---- Accounts. */

/* What an order's hooks need. */
struct acme_run {
	struct acme *a;
	struct acme_order *o;
	int locked; /* the store's lock of the order is ours */
};

static void
acme_log_step(void *arg, const char *line)
{
	const struct acme_run *run = arg;

	log_msg(LOGL_INFO, "acme: %s: %s", run->o->names, line);
}

/* The lock lives this long unless refreshed: an instance that dies in
 * the middle of an order holds the names back no longer than that. */
#define ACME_LOCK_MS 30000

static void
acme_tick_step(void *arg)
{
	const struct acme_run *run = arg;

	if (run->locked)
		acme_share_lock(run->o->acct->share, run->o->key, ACME_LOCK_MS);
}

static void
acme_answer_step(void *arg, const char *kind, const char *id,
    const char *key_authorization)
{
	const struct acme_run *run = arg;
	struct acme_share *sh = run->o->acct->share;

	if (sh == NULL)
		return;
	if (key_authorization == NULL) {
		acme_share_clear_answer(sh, kind, id);
		return;
	}
	if (acme_share_set_answer(sh, kind, id, key_authorization) == 0)
		/* The other instances take it within a second (they poll
		 * while an order of theirs waits on the lock). */
		poll(&(struct pollfd){ run->a->cancel[0], POLLIN, 0 }, 1, 1500);
}

/* acme_account_ready loads or makes the account key and registers the
 * account once per run. */
static int
acme_account_ready(struct acme *a, struct acme_account *ac,
    uint64_t deadline_ms, struct acme_error *err)
{
	char path[1100], msg[256];
	struct acme_account_conf conf;

	if (ac->key == NULL) {
		snprintf(path, sizeof(path), "%s/account-%s.key", ac->state_dir,
		    ac->name);
		ac->key = acme_key_load(path, msg, sizeof(msg));
		if (ac->key == NULL) {
			if (acme_mkdirs(ac->state_dir) != 0) {
				snprintf(err->msg, sizeof(err->msg), "cannot "
				    "create %s: %s", ac->state_dir,
				    strerror(errno));
				err->kind = ACME_FAIL_PROTOCOL;
				return -1;
			}
			ac->key = acme_key_new(ACME_KEY_ECDSA);
			if (ac->key == NULL || acme_key_save(path, ac->key, msg,
			    sizeof(msg)) != 0) {
				snprintf(err->msg, sizeof(err->msg), "account key: "
				    "%s", ac->key == NULL ? "out of memory" : msg);
				err->kind = ACME_FAIL_PROTOCOL;
				EVP_PKEY_free(ac->key);
				ac->key = NULL;
				return -1;
			}
			log_msg(LOGL_INFO, "acme: [acme %s]: new account key in "
			    "%s", ac->name, path);
		}
	}
	if (ac->client == NULL) {
		memset(&conf, 0, sizeof(conf));
		conf.name = ac->name;
		conf.directory = ac->directory;
		conf.email = ac->email;
		conf.ca = ac->ca;
		conf.eab_kid = ac->eab_kid;
		conf.eab_key = ac->eab_key;
		conf.eab_key_len = ac->eab_key_len;
		ac->client = acme_client_new(&conf, ac->key, a->cancel[0], err);
		if (ac->client == NULL)
			return -1;
	}
	if (!ac->registered) {
		if (acme_client_register(ac->client, deadline_ms, err) != 0)
			return -1;
		ac->registered = 1;
		log_msg(LOGL_INFO, "acme: [acme %s]: account ready at %s",
		    ac->name, ac->directory);
	}
	return 0;
}

/* ---- Scheduling. */

/* acme_renew_time sets when the order's current certificate (valid
 * |not_before| to |not_after|) is due: renew_before, else a third of its
 * lifetime before it ends; ARI, when the CA offers it, may move it. */
static void
acme_renew_time(struct acme_order *o, int64_t not_before, int64_t not_after)
{
	int64_t life = not_after - not_before;
	int64_t before = (int64_t)(o->acct->renew_before_ms / 1000);

	if (before != 0 && before < life) {
		o->renew_at = not_after - before;
		return;
	}
	/* A renew_before as long as the lifetime (short-lived certificates)
	 * would renew at once, again and again: halfway then. */
	if (before != 0)
		log_msg(LOGL_WARNING, "acme: %s: renew_before is not shorter than "
		    "the certificate's lifetime (%llds): renewing halfway through "
		    "it instead", o->names, (long long)life);
	o->renew_at = not_after - (life > 0 ? (before != 0 ? life / 2 :
	    life / 3) : 0);
}

/* acme_ari asks the CA when to renew, moving renew_at into its window. */
static void
acme_ari(struct acme *a, struct acme_order *o)
{
	CRYPTO_BUFFER *leaf = acme_slot_leaf(o->slot);
	const uint8_t *der;
	X509 *x = NULL;
	char *id = NULL;
	int64_t start, end, now = (int64_t)time(NULL);
	uint64_t retry = 0;
	struct acme_error err;

	int64_t renew_at = 0, ari_at = now + ACME_ARI_POLL_S;

	if (leaf == NULL)
		goto out;
	der = CRYPTO_BUFFER_data(leaf);
	x = d2i_X509(NULL, &der, (long)CRYPTO_BUFFER_len(leaf));
	if (x != NULL && (id = acme_ari_cert_id(x)) != NULL &&
	    acme_client_renewal_info(o->acct->client, id, clock_mono_ms() +
	    60000, &start, &end, &retry, &err) == 0) {
		uint32_t r = 0;

		RAND_bytes((uint8_t *)&r, sizeof(r));
		/* A random moment in the window, as RFC 9773 asks, so that
		 * instances do not all renew at once. */
		renew_at = start + (end > start ? (int64_t)(r %
		    (uint64_t)(end - start)) : 0);
		if (retry > 0)
			ari_at = now + (int64_t)(retry / 1000);
		log_msg(LOGL_INFO, "acme: %s: renewal information: renew at %lld",
		    o->names, (long long)renew_at);
	} else if (id != NULL) {
		log_msg(LOGL_WARNING, "acme: %s: renewal information: %s",
		    o->names, err.msg);
	}
	ERR_clear_error();
	free(id);
	X509_free(x);
	CRYPTO_BUFFER_free(leaf);
out:
	pthread_mutex_lock(&a->lock);
	if (renew_at != 0)
		o->renew_at = renew_at;
	o->ari_at = ari_at;
	pthread_mutex_unlock(&a->lock);
}

/* acme_run_order orders a certificate for |o| and publishes it. */
static void
acme_run_order(struct acme *a, struct acme_order *o, int locked)
{
	struct acme_run run = { a, o, locked };
	const struct acme_hooks hooks = { &run, acme_log_step, acme_tick_step,
		acme_answer_step };
	struct acme_error err;
	struct acme_issued is;
	struct acme_chain ch;
	char why[256], saveerr[1400], *replaces = NULL;
	uint64_t deadline = clock_mono_ms() + ACME_ORDER_MS;
	int64_t now = (int64_t)time(NULL), backoff;
	CRYPTO_BUFFER *leaf;
	int ok = 0;

	memset(&is, 0, sizeof(is));
	memset(&err, 0, sizeof(err));
	log_msg(LOGL_INFO, "acme: %s: %s", o->names,
	    acme_slot_not_after(o->slot) != 0 ? "renewing" : "ordering");
	if (acme_account_ready(a, o->acct, deadline, &err) == 0) {
		if ((leaf = acme_slot_leaf(o->slot)) != NULL &&
		    acme_client_has_ari(o->acct->client)) {
			const uint8_t *der = CRYPTO_BUFFER_data(leaf);
			X509 *x = d2i_X509(NULL, &der,
			    (long)CRYPTO_BUFFER_len(leaf));

			replaces = x != NULL ? acme_ari_cert_id(x) : NULL;
			X509_free(x);
		}
		CRYPTO_BUFFER_free(leaf);
		if (acme_client_order(o->acct->client, (const char *const *)o->name,
		    o->num_names, o->type, o->acct->rsa, replaces, deadline, &is,
		    &hooks, &err) == 0) {
			if (acme_chain_parse(is.chain_pem, is.chain_len, is.key, o,
			    &ch, why, sizeof(why)) != 0) {
				err.kind = ACME_FAIL_CERTIFICATE;
				snprintf(err.msg, sizeof(err.msg), "the issued "
				    "certificate: %s", why);
			} else {
				if (acme_save_disk(o, &is, saveerr,
				    sizeof(saveerr)) != 0)
					log_msg(LOGL_WARNING, "acme: %s: cannot keep "
					    "the certificate: %s", o->names, saveerr);
				if (o->acct->share != NULL &&
				    acme_share_put(o->acct->share, o->key,
				    is.chain_pem, is.chain_len, is.key) != 0)
					log_msg(LOGL_WARNING, "acme: %s: cannot "
					    "share the certificate through the "
					    "session store", o->names);
				if (acme_slot_set(o->slot, ch.buf, ch.num, is.key,
				    ch.not_after) == 0) {
					ok = 1;
					pthread_mutex_lock(&a->lock);
					acme_renew_time(o, ch.not_before,
					    ch.not_after);
					pthread_mutex_unlock(&a->lock);
				}
				acme_chain_free(&ch);
			}
		}
	}
	free(replaces);
	acme_issued_free(&is);
	ERR_clear_error();
	if (locked)
		acme_share_unlock(o->acct->share, o->key);
	pthread_mutex_lock(&a->lock);
	o->last_attempt = now;
	if (ok) {
		a->ok++;
		o->failures = 0;
		o->last_error[0] = '\0';
		snprintf(o->last_result, sizeof(o->last_result), "ok");
		/* With renewal information, ask at once: the answer's
		 * Retry-After sets the pace from then on. */
		o->ari_at = o->acct->renew_before_ms == 0 &&
		    acme_client_has_ari(o->acct->client) ? now : 0;
		o->next_at = o->ari_at != 0 ? o->ari_at : o->renew_at;
		pthread_mutex_unlock(&a->lock);
		log_msg(LOGL_INFO, "acme: %s: new certificate in service, valid "
		    "until %lld", o->names, (long long)acme_slot_not_after(o->slot));
		acme_changed(a);
		return;
	}
	if (err.kind != ACME_FAIL_CANCELLED)
		a->failed[err.kind]++;
	o->failures++;
	backoff = ACME_BACKOFF_MIN_S << (o->failures - 1 < 9 ?
	    o->failures - 1 : 9);
	if (backoff > ACME_BACKOFF_MAX_S)
		backoff = ACME_BACKOFF_MAX_S;
	if ((int64_t)(err.retry_after_ms / 1000) > backoff)
		backoff = (int64_t)(err.retry_after_ms / 1000);
	o->next_at = now + backoff;
	snprintf(o->last_result, sizeof(o->last_result), "failed");
	snprintf(o->last_error, sizeof(o->last_error), "%s", err.msg);
	pthread_mutex_unlock(&a->lock);
	if (err.kind != ACME_FAIL_CANCELLED)
		log_msg(LOGL_WARNING, "acme: %s: %s failed (%s): %s; %s, next "
		    "attempt in %llds", o->names, acme_slot_not_after(o->slot) ?
		    "renewal" : "order", acme_fail_names[err.kind], err.msg,
		    acme_slot_not_after(o->slot) ? "the current certificate "
		    "stays in service" : "its names are refused until then",
		    (long long)backoff);
}

/* acme_take_shared publishes the certificate another instance put in the
 * store for |o|, when it is newer than the one in service and not due
 * itself. Returns 1 when it did. */
static int
acme_take_shared(struct acme *a, struct acme_order *o, int64_t now)
{
	char *pem = NULL, why[256], err[1400];
	size_t len = 0;
	EVP_PKEY *key = NULL;
	struct acme_chain ch;
	struct acme_issued is;
	int done = 0;

	if (acme_share_get(o->acct->share, o->key, &pem, &len, &key) != 1)
		return 0;
	if (acme_chain_parse(pem, len, key, o, &ch, why, sizeof(why)) != 0) {
		log_msg(LOGL_WARNING, "acme: %s: ignoring the certificate in the "
		    "session store: %s", o->names, why);
	} else if (ch.not_after > acme_slot_not_after(o->slot) &&
	    ch.not_after > now) {
		pthread_mutex_lock(&a->lock);
		acme_renew_time(o, ch.not_before, ch.not_after);
		pthread_mutex_unlock(&a->lock);
		if (o->renew_at > now && acme_slot_set(o->slot, ch.buf, ch.num,
		    key, ch.not_after) == 0) {
			is.chain_pem = pem;
			is.chain_len = len;
			is.key = key;
			if (acme_save_disk(o, &is, err, sizeof(err)) != 0)
				log_msg(LOGL_WARNING, "acme: %s: cannot keep the "
				    "certificate: %s", o->names, err);
			log_msg(LOGL_INFO, "acme: %s: certificate from the "
			    "session store in service, valid until %lld",
			    o->names, (long long)ch.not_after);
			done = 1;
		}
	}
	if (done || ch.leaf != NULL)
		acme_chain_free(&ch);
	free(pem);
	EVP_PKEY_free(key);
	if (!done)
		return 0;
	pthread_mutex_lock(&a->lock);
	o->waiting = 0;
	o->failures = 0;
	o->next_at = o->renew_at;
	pthread_mutex_unlock(&a->lock);
	acme_changed(a);
	return 1;
}

/* acme_step_shared orders |o| unless another instance does: the first to
 * take the store's lock orders and shares the result, the others answer
 * the challenges it publishes and take the certificate from the store.
 * A store that is down makes each instance order alone. */
static void
acme_step_shared(struct acme *a, struct acme_order *o, int64_t now)
{
	struct acme_share *sh = o->acct->share;

	if (acme_take_shared(a, o, now)) {
		acme_share_forget_answers(sh);
		return;
	}
	switch (acme_share_lock(sh, o->key, ACME_LOCK_MS)) {
	case ACME_LOCK_TAKEN:
		o->waiting = 0;
		acme_share_forget_answers(sh);
		acme_run_order(a, o, 1);
		return;
	case ACME_LOCK_DOWN:
		o->waiting = 0;
		acme_share_forget_answers(sh);
		acme_run_order(a, o, 0);
		return;
	case ACME_LOCK_BUSY:
		break;
	}
	if (!o->waiting)
		log_msg(LOGL_INFO, "acme: %s: another instance is ordering; "
		    "answering its challenges and waiting for its certificate",
		    o->names);
	acme_share_sync_answers(sh);
	pthread_mutex_lock(&a->lock);
	o->waiting = 1;
	o->next_at = now + 1;
	pthread_mutex_unlock(&a->lock);
}

/* acme_step looks at one due order. */
static void
acme_step(struct acme *a, struct acme_order *o)
{
	int64_t now = (int64_t)time(NULL);

	pthread_mutex_lock(&a->lock);
	o->type = o->type_next;
	if (o->acct != o->acct_next) {
		/* The account's settings changed with a reload: renewal
		 * follows the new ones. */
		o->acct->refs--;
		o->acct = o->acct_next;
		o->acct->refs++;
		o->checked = 0;
		o->renew_at = 0;
		o->ari_at = 0;
	}
	pthread_mutex_unlock(&a->lock);
	if (!o->checked) {
		o->checked = 1;
		if (acme_slot_not_after(o->slot) == 0 && acme_load_disk(o) == 0)
			acme_changed(a);
		if (acme_slot_not_after(o->slot) != 0) {
			CRYPTO_BUFFER *leaf = acme_slot_leaf(o->slot);
			const uint8_t *der = leaf != NULL ?
			    CRYPTO_BUFFER_data(leaf) : NULL;
			X509 *x = der != NULL ? d2i_X509(NULL, &der,
			    (long)CRYPTO_BUFFER_len(leaf)) : NULL;

			pthread_mutex_lock(&a->lock);
			if (x != NULL)
				acme_renew_time(o,
				    acme_asn1_time(X509_get0_notBefore(x)),
				    acme_asn1_time(X509_get0_notAfter(x)));
			o->next_at = o->renew_at;
			/* The certificate on disk is enough for now: ask
			 * about renewal later, not at start. */
			if (o->acct->renew_before_ms == 0)
				o->ari_at = now + ACME_ARI_POLL_S;
			if (o->ari_at != 0 && o->ari_at < o->next_at)
				o->next_at = o->ari_at;
			pthread_mutex_unlock(&a->lock);
			X509_free(x);
			CRYPTO_BUFFER_free(leaf);
			ERR_clear_error();
			if (o->renew_at > now)
				return;
		}
	}
	if (acme_slot_not_after(o->slot) != 0 && o->renew_at > now) {
		/* Woken for renewal information. */
		struct acme_error err;
		int due = o->ari_at != 0 && o->ari_at <= now;
		int ready = due && acme_account_ready(a, o->acct,
		    clock_mono_ms() + 60000, &err) == 0;

		if (ready && acme_client_has_ari(o->acct->client)) {
			acme_ari(a, o);
		} else {
			pthread_mutex_lock(&a->lock);
			/* The CA unreachable: ask again in an hour; no renewal
			 * information offered: renew_at stands. */
			o->ari_at = due && !ready ? now + 3600 : 0;
			pthread_mutex_unlock(&a->lock);
		}
		pthread_mutex_lock(&a->lock);
		o->next_at = o->renew_at;
		if (o->ari_at != 0 && o->ari_at < o->next_at)
			o->next_at = o->ari_at;
		pthread_mutex_unlock(&a->lock);
		if (o->renew_at > now)
			return;
	}
	if (o->acct->share == NULL) {
		acme_run_order(a, o, 0);
		return;
	}
	acme_step_shared(a, o, now);
}

/* acme_reap frees dead orders and unused accounts; with the lock. */
static void
acme_reap(struct acme *a)
{
	struct acme_order **op = &a->orders;
	struct acme_account **ap = &a->accounts;

	while (*op != NULL) {
		struct acme_order *o = *op;

		if (o->dead == 1) {
			*op = o->next;
			o->acct->refs--;
			o->acct_next->refs--;
			acme_order_free(o);
		} else {
			op = &o->next;
		}
	}
	while (*ap != NULL) {
		struct acme_account *ac = *ap;

		if (ac->refs == 0) {
			*ap = ac->next;
			acme_account_free(ac);
		} else {
			ap = &ac->next;
		}
	}
}

static void *
acme_main(void *arg)
{
	struct acme *a = arg;

	for (;;) {
		struct acme_order *due = NULL;
		int64_t now = (int64_t)time(NULL), wait_s = 3600;
		struct pollfd pfd[2];

		pthread_mutex_lock(&a->lock);
		acme_reap(a);
		for (struct acme_order *o = a->orders; o != NULL; o = o->next) {
			if (o->next_at <= now && (due == NULL ||
			    o->next_at < due->next_at))
				due = o;
			else if (o->next_at - now < wait_s)
				wait_s = o->next_at - now;
		}
		pthread_mutex_unlock(&a->lock);
		if (due != NULL) {
			acme_step(a, due);
			if (poll(&(struct pollfd){ a->cancel[0], POLLIN, 0 }, 1,
			    0) > 0)
				break;
			continue;
		}
		pfd[0] = (struct pollfd){ a->wake[0], POLLIN, 0 };
		pfd[1] = (struct pollfd){ a->cancel[0], POLLIN, 0 };
		if (poll(pfd, 2, (int)(wait_s > 0 ? wait_s : 1) * 1000) > 0) {
			if (pfd[1].revents != 0)
				break;
			acme_drain(a->wake[0]);
		}
	}
	return NULL;
}

struct acme *
acme_new(void (*changed)(void *arg), void *arg)
{
	struct acme *a = calloc(1, sizeof(*a));

	if (a == NULL)
		return NULL;
	a->changed = changed;
	a->changed_arg = arg;
	a->wake[0] = a->wake[1] = a->cancel[0] = a->cancel[1] = -1;
	pthread_mutex_init(&a->lock, NULL);
	if (pipe2(a->wake, O_CLOEXEC | O_NONBLOCK) != 0 ||
	    pipe2(a->cancel, O_CLOEXEC | O_NONBLOCK) != 0) {
		acme_free(a);
		return NULL;
	}
	if (thread_create(&a->thread, NULL, acme_main, a) != 0) {
		acme_free(a);
		return NULL;
	}
	a->started = 1;
	return a;
}

void
acme_free(struct acme *a)
{
	if (a == NULL)
		return;
	if (a->started) {
		acme_poke(a->cancel[1]);
		pthread_join(a->thread, NULL);
	}
	for (struct acme_order *o = a->orders; o != NULL; o = o->next)
		o->dead = 1;
	acme_reap(a);
	for (int i = 0; i < 2; i++) {
		if (a->wake[i] >= 0)
			close(a->wake[i]);
		if (a->cancel[i] >= 0)
			close(a->cancel[i]);
	}
	pthread_mutex_destroy(&a->lock);
	free(a);
}

/* ---- Following the generation. */

/* acme_eab_key reads an external account binding key file: base64url, as
 * CAs hand it out. */
static int
acme_eab_key(struct acme_account *ac, const char *path)
{
	size_t len = 0;
	char *text = acme_read_file(path, &len);
	int rc;

	if (text == NULL) {
		log_msg(LOGL_ERROR, "acme: [acme %s]: cannot read "
		    "eab_hmac_key_file '%s': %s", ac->name, path, strerror(errno));
		return -1;
	}
	text[strcspn(text, " \t\r\n")] = '\0';
	rc = acme_b64url_decode(text, &ac->eab_key, &ac->eab_key_len);
	OPENSSL_cleanse(text, len);
	free(text);
	if (rc != 0)
		log_msg(LOGL_ERROR, "acme: [acme %s]: eab_hmac_key_file '%s' is "
		    "not base64url", ac->name, path);
	return rc;
}

static int
acme_same_str(const char *x, const char *y)
{
	return (x == NULL && y == NULL) ||
	    (x != NULL && y != NULL && strcmp(x, y) == 0);
}

/* acme_account_for returns the account for |ca|, reusing one whose
 * settings are the same; with the lock. */
static struct acme_account *
acme_account_for(struct acme *a, const struct conf_global *gl,
    const struct conf_acme *ca)
{
	const char *share_url = ca->shared_key_file != NULL ?
	    gl->session_store : NULL;
	const char *share_prefix = share_url != NULL ?
	    gl->session_store_prefix : NULL;
	struct acme_account *ac;
	uint64_t rb = ca->renew_before_ms;
	int rsa = strcmp(ca->key_type, "rsa") == 0;

	for (ac = a->accounts; ac != NULL; ac = ac->next) {
		if (strcmp(ac->name, ca->h.name) == 0 &&
		    strcmp(ac->directory, ca->directory) == 0 &&
		    acme_same_str(ac->email, ca->email) &&
		    acme_same_str(ac->ca, ca->ca) &&
		    acme_same_str(ac->eab_kid, ca->eab_kid) &&
		    acme_same_str(ac->eab_key_file, ca->eab_hmac_key_file) &&
		    strcmp(ac->state_dir, ca->state_dir) == 0 &&
		    ac->rsa == rsa && ac->renew_before_ms == rb &&
		    acme_same_str(ac->share_url, share_url) &&
		    acme_same_str(ac->share_prefix, share_prefix) &&
		    acme_same_str(ac->share_key_file, ca->shared_key_file))
			return ac;
	}
	if ((ac = calloc(1, sizeof(*ac))) == NULL)
		return NULL;
	ac->name = strdup(ca->h.name);
	ac->directory = strdup(ca->directory);
	ac->email = ca->email != NULL ? strdup(ca->email) : NULL;
	ac->ca = ca->ca != NULL ? strdup(ca->ca) : NULL;
	ac->eab_kid = ca->eab_kid != NULL ? strdup(ca->eab_kid) : NULL;
	ac->eab_key_file = ca->eab_hmac_key_file != NULL ?
	    strdup(ca->eab_hmac_key_file) : NULL;
	ac->state_dir = strdup(ca->state_dir);
	ac->rsa = rsa;
	ac->renew_before_ms = rb;
	if (share_url != NULL) {
		char err[256];

		ac->share_url = strdup(share_url);
		ac->share_prefix = strdup(share_prefix != NULL ? share_prefix :
		    "");
		ac->share_key_file = strdup(ca->shared_key_file);
		ac->share = acme_share_new(share_url, share_prefix,
		    ca->shared_key_file, err, sizeof(err));
		if (ac->share == NULL)
			log_msg(LOGL_ERROR, "acme: [acme %s]: not sharing through "
			    "the session store: %s", ca->h.name, err);
	}
	if (ac->name == NULL || ac->directory == NULL || ac->state_dir == NULL ||
	    (ca->eab_hmac_key_file != NULL && acme_eab_key(ac,
	    ca->eab_hmac_key_file) != 0)) {
		acme_account_free(ac);
		return NULL;
	}
	ac->next = a->accounts;
	a->accounts = ac;
	return ac;
}

/* acme_add_order adds the order of context |t| unless it is there;
 * with the lock. */
static void
acme_add_order(struct acme *a, const struct config *cfg,
    const struct tls_ctx *t)
{
	const struct conf_context *cc = t->cc;
	const char *key = acme_slot_name(t->acme);
	const struct conf_acme *ca = config_find_acme(cfg, cc->acme);
	enum acme_challenge_type type = strcmp(cc->acme_challenge,
	    "http-01") == 0 ? ACME_CHALLENGE_HTTP : ACME_CHALLENGE_TLS_ALPN;
	struct acme_account *ac;
	struct acme_order *o;
	size_t len = 1;

	if (ca == NULL || (ac = acme_account_for(a, &cfg->global, ca)) == NULL)
		goto oom;
	for (o = a->orders; o != NULL; o = o->next) {
		if (o->dead != 1 && strcmp(o->key, key) == 0) {
			if (o->acct_next != ac) {
				o->acct_next->refs--;
				o->acct_next = ac;
				ac->refs++;
			}
			o->type_next = type;
			o->dead = -1; /* seen */
			return;
		}
	}
	if ((o = calloc(1, sizeof(*o))) == NULL)
		goto oom;
	o->acct = o->acct_next = ac;
	ac->refs += 2;
	o->type = o->type_next = type;
	o->key = strdup(key);
	o->slot = acme_slot_ref(t->acme);
	o->name = calloc(cc->servername.num, sizeof(*o->name));
	for (size_t i = 0; i < cc->servername.num; i++)
		len += strlen(cc->servername.v[i]) + 1;
	o->names = calloc(1, len);
	if (o->key == NULL || o->name == NULL || o->names == NULL)
		goto oom_order;
	for (size_t i = 0; i < cc->servername.num; i++) {
		if ((o->name[i] = strdup(cc->servername.v[i])) == NULL)
			goto oom_order;
		o->num_names++;
		if (i > 0)
			strcat(o->names, ",");
		strcat(o->names, cc->servername.v[i]);
	}
	if (acme_order_dir(ac->state_dir, o->key, o->name[0], o->dir,
	    sizeof(o->dir)) != 0)
		goto oom_order;
	snprintf(o->last_result, sizeof(o->last_result), "-");
	o->dead = -1;
	o->next = a->orders;
	a->orders = o;
	return;
oom_order:
	ac->refs -= 2;
	acme_order_free(o);
oom:
	log_msg(LOGL_ERROR, "acme: [context %s]: cannot follow its order (out "
	    "of memory or unreadable eab_hmac_key_file)", cc->h.name);
}

void
acme_sync(struct acme *a, const struct generation *g)
{
	pthread_mutex_lock(&a->lock);
	for (struct acme_order *o = a->orders; o != NULL; o = o->next)
		if (!o->dead)
			o->dead = 2; /* unless a context still uses it */
	for (size_t i = 0; g != NULL && i < g->shared.num_contexts; i++) {
		const struct tls_ctx *t = &g->shared.contexts[i];

		if (t->acme != NULL)
			acme_add_order(a, g->cfg, t);
	}
	for (struct acme_order *o = a->orders; o != NULL; o = o->next)
		o->dead = o->dead == -1 ? 0 : 1;
	pthread_mutex_unlock(&a->lock);
	acme_poke(a->wake[1]);
}

void
acme_foreach(struct acme *a,
    void (*cb)(void *arg, const struct acme_order_status *st), void *arg)
{
	pthread_mutex_lock(&a->lock);
	for (struct acme_order *o = a->orders; o != NULL; o = o->next) {
		struct acme_order_status st;

		if (o->dead)
			continue;
		st.names = o->names;
		st.account = o->acct->name;
		st.not_after = acme_slot_not_after(o->slot);
		st.renew_at = o->renew_at;
		st.next_attempt = o->next_at;
		st.last_attempt = o->last_attempt;
		st.last_result = o->last_result;
		st.last_error = o->last_error;
		cb(arg, &st);
	}
	pthread_mutex_unlock(&a->lock);
}

void
acme_counters(struct acme *a, uint64_t *ok, uint64_t *failed)
{
	pthread_mutex_lock(&a->lock);
	*ok = a->ok;
	memcpy(failed, a->failed, sizeof(a->failed));
	pthread_mutex_unlock(&a->lock);
}

void
acme_check_disk(const struct generation *g)
{
	for (size_t i = 0; i < g->shared.num_contexts; i++) {
		const struct tls_ctx *t = &g->shared.contexts[i];
		const struct conf_acme *ca;
		char dir[1024], path[1100];

		if (t->acme == NULL ||
		    (ca = config_find_acme(g->cfg, t->cc->acme)) == NULL ||
		    acme_order_dir(ca->state_dir, acme_slot_name(t->acme),
		    t->cc->servername.v[0], dir, sizeof(dir)) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/cert.pem", dir);
		if (access(path, R_OK) != 0)
			fprintf(stderr, "tlsproxy: warning: [context %s] has no "
			    "certificate yet (%s): it is ordered from %s when "
			    "tlsproxy starts, and its names are refused until "
			    "then\n", t->name, path, ca->directory);
	}
}
