/* tickets.c: the ticket-key ring, its file format and rotation. */
#include "tickets.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/base64.h>
#include <openssl/cipher.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "log.h"
#include "retire.h"

/* Enough for any rotation scheme; a ring is searched per resumption. */
#define TICKETS_MAX_KEYS 64

/* The ring in use, immutable once published. Handshakes read it without
 * a lock; the control side swaps it and retires the old one. */
struct tickets_snap {
	struct retire_node retire;
	struct ticket_ring ring;
	time_t since; /* when ring.keys[0] became the encrypting key */
	int from_file;
};

static _Atomic(struct tickets_snap *) tickets_current;
/* Serialises the writers (a rotation reads the ring it replaces) and lets
 * the control side's getters read the snapshot: a retired one is freed
 * under it when no reader is registered. Handshakes never take it. */
static pthread_mutex_t tickets_write_lock = PTHREAD_MUTEX_INITIALIZER;

static void
tickets_snap_free(void *arg)
{
	struct tickets_snap *s = arg;

	tickets_ring_free(&s->ring);
	free(s);
}

static int
tickets_push(struct ticket_ring *r, const uint8_t *key)
{
	struct ticket_key *n = realloc(r->keys, (r->num + 1) * sizeof(*n));

	if (n == NULL)
		return -1;
	r->keys = n;
	memcpy(&r->keys[r->num++], key, TICKET_KEY_LEN);
	return 0;
}

/* tickets_is_text tells base64 lines from raw keys: random key bytes are
 * all printable with a probability too small to matter. */
static int
tickets_is_text(const uint8_t *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = data[i];

		if (!((c >= 0x20 && c < 0x7f) || c == '\n' || c == '\r' ||
		    c == '\t'))
			return 0;
	}
	return 1;
}

static int
tickets_parse_lines(const uint8_t *data, size_t len, struct ticket_ring *out,
    char *err, size_t err_len)
{
	size_t pos = 0;
	int line = 0;

	while (pos < len) {
		const uint8_t *start = data + pos, *nl = memchr(start, '\n',
		    len - pos);
		size_t n = nl != NULL ? (size_t)(nl - start) : len - pos;
		uint8_t key[TICKET_KEY_LEN + 3];
		size_t klen;
		char text[128];

		pos += n + (nl != NULL);
		line++;
		while (n > 0 && (start[n - 1] == '\r' || start[n - 1] == ' ' ||
		    start[n - 1] == '\t'))
			n--;
		while (n > 0 && (*start == ' ' || *start == '\t')) {
			start++;
			n--;
		}
		if (n == 0 || *start == '#')
			continue;
		if (n >= sizeof(text) || (memcpy(text, start, n), text[n] = '\0',
		    EVP_DecodeBase64(key, &klen, sizeof(key), (const uint8_t *)text,
		    n) != 1) || klen != TICKET_KEY_LEN) {
			snprintf(err, err_len, "line %d: expected a 48-byte key in "
			    "base64 (64 characters)", line);
			return -1;
		}
		if (tickets_push(out, key) != 0) {
			snprintf(err, err_len, "out of memory");
			return -1;
		}
		OPENSSL_cleanse(key, sizeof(key));
	}
	return 0;
}

int
tickets_parse(const uint8_t *data, size_t len, struct ticket_ring *out,
    char *err, size_t err_len)
{
	memset(out, 0, sizeof(*out));
	if (len > 0 && tickets_is_text(data, len)) {
		if (tickets_parse_lines(data, len, out, err, err_len) != 0) {
			tickets_ring_free(out);
			return -1;
		}
	} else if (len % TICKET_KEY_LEN != 0) {
		snprintf(err, err_len, "%zu bytes is not a whole number of "
		    "48-byte keys (raw keys, or one base64 key per line)", len);
		return -1;
	} else {
		for (size_t i = 0; i < len; i += TICKET_KEY_LEN) {
			if (tickets_push(out, data + i) != 0) {
				tickets_ring_free(out);
				snprintf(err, err_len, "out of memory");
				return -1;
			}
		}
	}
	if (out->num == 0) {
		snprintf(err, err_len, "no key in the file");
		return -1;
	}
	return 0;
}

int
tickets_load_file(const char *path, struct ticket_ring *out, char *err,
    size_t err_len)
{
	uint8_t buf[16384 + 1];
	struct stat st;
	size_t len;
	FILE *f;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((f = fopen(path, "rbe")) == NULL) {
		snprintf(err, err_len, "cannot open '%s': %s", path,
		    strerror(errno));
		return -1;
	}
	if (fstat(fileno(f), &st) != 0 || (st.st_mode & S_IROTH) != 0) {
		snprintf(err, err_len, "'%s' is readable by every user; ticket "
		    "keys decrypt every session: chmod o-r it", path);
		fclose(f);
		return -1;
	}
	len = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	if (len == sizeof(buf)) {
		snprintf(err, err_len, "'%s' is larger than 16 KiB; a key file "
		    "holds at most %d keys", path, TICKETS_MAX_KEYS);
		OPENSSL_cleanse(buf, sizeof(buf));
		return -1;
	}
	rc = tickets_parse(buf, len, out, err, err_len);
	OPENSSL_cleanse(buf, sizeof(buf));
	if (rc == 0 && out->num > TICKETS_MAX_KEYS) {
		snprintf(err, err_len, "holds %zu keys; at most %d are used",
		    out->num, TICKETS_MAX_KEYS);
		tickets_ring_free(out);
		rc = -1;
	}
	if (rc != 0) {
		char reason[128];

		snprintf(reason, sizeof(reason), "%s", err);
		snprintf(err, err_len, "'%s': %s", path, reason);
	}
	return rc;
}

int
tickets_generate(struct ticket_ring *out, size_t num)
{
	uint8_t key[TICKET_KEY_LEN];

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < num; i++) {
		RAND_bytes(key, sizeof(key));
		if (tickets_push(out, key) != 0) {
			tickets_ring_free(out);
			return -1;
		}
	}
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
}

void
tickets_ring_free(struct ticket_ring *r)
{
	if (r->keys != NULL)
		OPENSSL_cleanse(r->keys, r->num * sizeof(*r->keys));
	free(r->keys);
	r->keys = NULL;
	r->num = 0;
}

int
tickets_new_key_line(char *out, size_t out_len)
{
	uint8_t key[TICKET_KEY_LEN];
	size_t need;

	if (EVP_EncodedLength(&need, sizeof(key)) != 1 || need > out_len)
		return -1;
	RAND_bytes(key, sizeof(key));
	EVP_EncodeBlock((uint8_t *)out, key, sizeof(key));
	OPENSSL_cleanse(key, sizeof(key));
	return 0;
}

/* tickets_install_locked publishes |r| (taking its keys) with
 * tickets_write_lock held; on failure it wipes |r| and keeps the ring in
 * use. */
static int
tickets_install_locked(struct ticket_ring *r, int from_file)
{
	struct tickets_snap *old = atomic_load_explicit(&tickets_current,
	    memory_order_relaxed);
	struct tickets_snap *s = r->num > 0 ? calloc(1, sizeof(*s)) : NULL;

	if (r->num > 0 && s == NULL) {
		tickets_ring_free(r);
		return -1;
	}
	if (s != NULL) {
		s->ring = *r;
		s->from_file = from_file;
		/* The age that matters is the encrypting key's. */
		s->since = old != NULL && memcmp(old->ring.keys[0].name,
		    r->keys[0].name, sizeof(r->keys[0].name)) == 0 ?
		    old->since : time(NULL);
	}
	memset(r, 0, sizeof(*r));
	atomic_store_explicit(&tickets_current, s, memory_order_release);
	if (old != NULL)
		retire_defer(&old->retire, tickets_snap_free, old);
	return 0;
}

void
tickets_install(struct ticket_ring *r, int from_file)
{
	pthread_mutex_lock(&tickets_write_lock);
	if (tickets_install_locked(r, from_file) != 0)
		log_msg(LOGL_ERROR, "session tickets: out of memory installing "
		    "new keys; keeping the keys in use");
	pthread_mutex_unlock(&tickets_write_lock);
}

void
tickets_clear(void)
{
	struct ticket_ring none = { NULL, 0 };

	tickets_install(&none, 0);
}

int
tickets_rotate(size_t keep)
{
	struct ticket_ring next;
	const struct tickets_snap *cur;
	uint8_t key[TICKET_KEY_LEN];
	int rc = 0;

	memset(&next, 0, sizeof(next));
	RAND_bytes(key, sizeof(key));
	pthread_mutex_lock(&tickets_write_lock);
	cur = atomic_load_explicit(&tickets_current, memory_order_relaxed);
	rc |= tickets_push(&next, key);
	for (size_t i = 0; cur != NULL && i < cur->ring.num && next.num < keep;
	    i++)
		rc |= tickets_push(&next, (const uint8_t *)&cur->ring.keys[i]);
	OPENSSL_cleanse(key, sizeof(key));
	if (rc != 0)
		tickets_ring_free(&next);
	else
		rc = tickets_install_locked(&next, 0);
	pthread_mutex_unlock(&tickets_write_lock);
	return rc != 0 ? -1 : 0;
}

int
tickets_export(struct ticket_ring *out)
{
	const struct tickets_snap *s;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&tickets_write_lock);
	s = atomic_load_explicit(&tickets_current, memory_order_relaxed);
	if (s != NULL && (out->keys = malloc(s->ring.num *
	    sizeof(*out->keys))) != NULL) {
		out->num = s->ring.num;
		memcpy(out->keys, s->ring.keys, out->num * sizeof(*out->keys));
	} else if (s != NULL) {
		rc = -1;
	}
	pthread_mutex_unlock(&tickets_write_lock);
	return rc;
}

int64_t
tickets_key_since(void)
{
	const struct tickets_snap *s;
	int64_t v;

	pthread_mutex_lock(&tickets_write_lock);
	s = atomic_load_explicit(&tickets_current, memory_order_relaxed);
	v = s != NULL ? (int64_t)s->since : 0;
	pthread_mutex_unlock(&tickets_write_lock);
	return v;
}

int
tickets_from_file(void)
{
	const struct tickets_snap *s;
	int v;

	pthread_mutex_lock(&tickets_write_lock);
	s = atomic_load_explicit(&tickets_current, memory_order_relaxed);
	v = s != NULL && s->from_file;
	pthread_mutex_unlock(&tickets_write_lock);
	return v;
}

size_t
tickets_num(void)
{
	const struct tickets_snap *s;
	size_t n;

	pthread_mutex_lock(&tickets_write_lock);
	s = atomic_load_explicit(&tickets_current, memory_order_relaxed);
	n = s != NULL ? s->ring.num : 0;
	pthread_mutex_unlock(&tickets_write_lock);
	return n;
}

int
tickets_key_cb(SSL *ssl, uint8_t *key_name, uint8_t *iv, EVP_CIPHER_CTX *ctx,
    HMAC_CTX *hmac_ctx, int encrypt)
{
	const struct tickets_snap *s;
	struct ticket_key k;
	int rc = 0;

	(void)ssl;
	/* Valid until this worker's next quiescent point (retire.h). */
	s = atomic_load_explicit(&tickets_current, memory_order_acquire);
	if (s != NULL && encrypt) {
		k = s->ring.keys[0];
		rc = 1;
	} else if (s != NULL) {
		for (size_t i = 0; i < s->ring.num; i++) {
			if (memcmp(s->ring.keys[i].name, key_name, 16) == 0) {
				k = s->ring.keys[i];
				/* 2: valid, but renew it under the first key. */
				rc = i == 0 ? 1 : 2;
				break;
			}
		}
	}
	if (rc == 0)
		return encrypt ? -1 : 0;
	if (encrypt) {
		memcpy(key_name, k.name, 16);
		RAND_bytes(iv, 16);
	}
	if (!(encrypt ? EVP_EncryptInit_ex(ctx, EVP_aes_128_cbc(), NULL, k.aes,
	    iv) : EVP_DecryptInit_ex(ctx, EVP_aes_128_cbc(), NULL, k.aes, iv)) ||
	    !HMAC_Init_ex(hmac_ctx, k.hmac, 16, EVP_sha256(), NULL))
		rc = -1;
	OPENSSL_cleanse(&k, sizeof(k));
	return rc;
}
