/* ech.c: reading, checking and making ECH key files. */
#include "ech.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/base64.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hpke.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "config.h"
#include "log.h"

/* The ECHConfig version tlsproxy serves (RFC 9849); configs of other
 * versions in a file are skipped. */
#define ECH_VERSION 0xfe0d
/* HPKE's identifier of DHKEM(X25519, HKDF-SHA256). */
#define ECH_KEM_X25519 0x0020

struct ech_config {
	const uint8_t *der; /* the whole ECHConfig, inside ech_file.list */
	size_t len;
	uint8_t id;
	char public_name[256];
};

/* What one ech file holds. */
struct ech_file {
	EVP_HPKE_KEY key;
	int has_key;
	uint8_t *list; /* the ECHCONFIG block: an ECHConfigList */
	size_t list_len;
	struct ech_config configs[16];
	size_t num_configs;
};

static void
ech_file_free(struct ech_file *f)
{
	if (f->has_key)
		EVP_HPKE_KEY_cleanup(&f->key);
	OPENSSL_free(f->list);
	memset(f, 0, sizeof(*f));
}

static void
ech_err(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

/* ech_parse_key takes the X25519 key out of a PKCS#8 PrivateKeyInfo. */
static int
ech_parse_key(struct ech_file *f, const uint8_t *der, size_t len, char *err,
    size_t err_len)
{
	uint8_t raw[32];
	size_t raw_len = sizeof(raw);
	EVP_PKEY *pkey;
	CBS cbs;
	int ok;

	CBS_init(&cbs, der, len);
	pkey = EVP_parse_private_key(&cbs);
	if (pkey == NULL || CBS_len(&cbs) != 0) {
		ERR_clear_error();
		EVP_PKEY_free(pkey);
		ech_err(err, err_len, "the PRIVATE KEY block is not a PKCS#8 key");
		return -1;
	}
	ok = EVP_PKEY_id(pkey) == EVP_PKEY_X25519 &&
	    EVP_PKEY_get_raw_private_key(pkey, raw, &raw_len) && raw_len == 32;
	EVP_PKEY_free(pkey);
	if (!ok) {
		ERR_clear_error();
		ech_err(err, err_len, "the PRIVATE KEY is not an X25519 key (ECH "
		    "keys are X25519)");
		return -1;
	}
	EVP_HPKE_KEY_zero(&f->key);
	ok = EVP_HPKE_KEY_init(&f->key, EVP_hpke_x25519_hkdf_sha256(), raw,
	    sizeof(raw));
	OPENSSL_cleanse(raw, sizeof(raw));
	if (!ok) {
		ERR_clear_error();
		ech_err(err, err_len, "the X25519 key is not usable for HPKE");
		return -1;
	}
	f->has_key = 1;
	return 0;
}

/* ech_parse_config reads the fields of one ECHConfig's contents that the
 * checks need, and whether its key is |f|'s. */
static int
ech_parse_config(struct ech_file *f, struct ech_config *c, CBS contents,
    char *err, size_t err_len)
{
	uint8_t ours[EVP_HPKE_MAX_PUBLIC_KEY_LENGTH];
	size_t ours_len;
	uint16_t kem;
	uint8_t max_name_len;
	CBS public_key, suites, name, extensions;

	if (!CBS_get_u8(&contents, &c->id) || !CBS_get_u16(&contents, &kem) ||
	    !CBS_get_u16_length_prefixed(&contents, &public_key) ||
	    !CBS_get_u16_length_prefixed(&contents, &suites) ||
	    !CBS_get_u8(&contents, &max_name_len) ||
	    !CBS_get_u8_length_prefixed(&contents, &name) ||
	    !CBS_get_u16_length_prefixed(&contents, &extensions) ||
	    CBS_len(&contents) != 0 || CBS_len(&name) == 0 ||
	    CBS_len(&name) >= sizeof(c->public_name)) {
		ech_err(err, err_len, "an ECHConfig is malformed");
		return -1;
	}
	(void)max_name_len;
	memcpy(c->public_name, CBS_data(&name), CBS_len(&name));
	c->public_name[CBS_len(&name)] = '\0';
	for (size_t i = 0; c->public_name[i] != '\0'; i++) {
		if (c->public_name[i] <= ' ' || c->public_name[i] > '~') {
			ech_err(err, err_len, "config id %u: its public name is "
			    "not a host name", c->id);
			return -1;
		}
	}
	if (kem != ECH_KEM_X25519) {
		ech_err(err, err_len, "config id %u uses HPKE KEM 0x%04x; only "
		    "X25519 (0x0020) is supported", c->id, kem);
		return -1;
	}
	if (!EVP_HPKE_KEY_public_key(&f->key, ours, &ours_len, sizeof(ours)) ||
	    CBS_len(&public_key) != ours_len ||
	    memcmp(CBS_data(&public_key), ours, ours_len) != 0) {
		ech_err(err, err_len, "config id %u (public name %s) was not made "
		    "for this file's private key", c->id, c->public_name);
		return -1;
	}
	return 0;
}

/* ech_parse_list splits the ECHConfigList into configs. */
static int
ech_parse_list(struct ech_file *f, char *err, size_t err_len)
{
	CBS cbs, list;

	CBS_init(&cbs, f->list, f->list_len);
	if (!CBS_get_u16_length_prefixed(&cbs, &list) || CBS_len(&cbs) != 0) {
		ech_err(err, err_len, "the ECHCONFIG block is not an "
		    "ECHConfigList");
		return -1;
	}
	while (CBS_len(&list) > 0) {
		const uint8_t *start = CBS_data(&list);
		uint16_t version;
		CBS contents;
		struct ech_config *c;

		if (!CBS_get_u16(&list, &version) ||
		    !CBS_get_u16_length_prefixed(&list, &contents)) {
			ech_err(err, err_len, "the ECHConfigList is truncated");
			return -1;
		}
		if (version != ECH_VERSION)
			continue;
		if (f->num_configs == sizeof(f->configs) / sizeof(f->configs[0])) {
			ech_err(err, err_len, "more than %zu ECHConfigs",
			    sizeof(f->configs) / sizeof(f->configs[0]));
			return -1;
		}
		c = &f->configs[f->num_configs];
		c->der = start;
		c->len = (size_t)(CBS_data(&list) - start);
		if (ech_parse_config(f, c, contents, err, err_len) != 0)
			return -1;
		f->num_configs++;
	}
	if (f->num_configs == 0) {
		ech_err(err, err_len, "no ECHConfig of version 0x%04x",
		    ECH_VERSION);
		return -1;
	}
	return 0;
}

/* ech_parse reads and checks an ech file's contents from |bio|. Returns
 * 0, or -1 with the reason in |err|. */
static int
ech_parse(BIO *bio, struct ech_file *f, char *err, size_t err_len)
{
	int blocks = 0;

	memset(f, 0, sizeof(*f));
	for (;;) {
		char *name = NULL, *header = NULL;
		uint8_t *data = NULL;
		long len = 0;
		int r = -1;

		if (!PEM_read_bio(bio, &name, &header, &data, &len)) {
			ERR_clear_error();
			break;
		}
		blocks++;
		if (strcmp(name, "PRIVATE KEY") == 0 && !f->has_key) {
			r = ech_parse_key(f, data, (size_t)len, err, err_len);
		} else if (strcmp(name, "ECHCONFIG") == 0 && f->list == NULL) {
			f->list = data;
			f->list_len = (size_t)len;
			data = NULL;
			r = 0;
		} else {
			ech_err(err, err_len, "unexpected PEM block '%s' (an ech "
			    "file holds one PRIVATE KEY and one ECHCONFIG)", name);
		}
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(data);
		if (r != 0)
			goto fail;
	}
	if (!f->has_key || f->list == NULL) {
		ech_err(err, err_len, blocks == 0 ? "no PEM blocks (expected a "
		    "PRIVATE KEY and an ECHCONFIG)" : "needs both a PRIVATE KEY "
		    "and an ECHCONFIG block");
		goto fail;
	}
	if (ech_parse_list(f, err, err_len) == 0)
		return 0;
fail:
	ech_file_free(f);
	return -1;
}

/* ech_read reads and checks ech file |path|. */
static int
ech_read(const char *path, struct ech_file *f, char *err, size_t err_len)
{
	BIO *bio = BIO_new_file(path, "r");
	int rc;

	if (bio == NULL) {
		ERR_clear_error();
		memset(f, 0, sizeof(*f));
		ech_err(err, err_len, "cannot open: %s", strerror(errno));
		return -1;
	}
	rc = ech_parse(bio, f, err, err_len);
	BIO_free(bio);
	return rc;
}

int
ech_check(const uint8_t *data, size_t len, size_t *num_configs, char *err,
    size_t err_len)
{
	BIO *bio = BIO_new_mem_buf(data, len);
	struct ech_file f;
	int rc = -1;

	*num_configs = 0;
	if (bio == NULL) {
		ech_err(err, err_len, "out of memory");
		return -1;
	}
	if (ech_parse(bio, &f, err, err_len) == 0) {
		*num_configs = f.num_configs;
		ech_file_free(&f);
		rc = 0;
	}
	BIO_free(bio);
	return rc;
}

/* ech_retry_all says whether every ech file gives retry configs: with
 * ech_retry unset, or set to yes or all. */
static int
ech_retry_all(const struct conf_listener *cl)
{
	return cl->ech_retry.num == 0 || (cl->ech_retry.num == 1 &&
	    (strcasecmp(cl->ech_retry.v[0], "yes") == 0 ||
	    strcasecmp(cl->ech_retry.v[0], "all") == 0));
}

/* ech_is_retry says whether |path| is one of the ech_retry files. */
static int
ech_is_retry(const struct conf_listener *cl, const char *path)
{
	if (ech_retry_all(cl))
		return 1;
	for (size_t i = 0; i < cl->ech_retry.num; i++) {
		if (strcmp(cl->ech_retry.v[i], path) == 0)
			return 1;
	}
	return 0;
}

/* ech_check_retry_names reports ech_retry files that are not ech files. */
static int
ech_check_retry_names(struct config *cfg, const struct conf_listener *cl)
{
	int rc = 0;

	if (ech_retry_all(cl))
		return 0;
	for (size_t i = 0; i < cl->ech_retry.num; i++) {
		size_t j;

		for (j = 0; j < cl->ech.num; j++) {
			if (strcmp(cl->ech.v[j], cl->ech_retry.v[i]) == 0)
				break;
		}
		if (j == cl->ech.num) {
			config_error(cfg, cl->ech_retry.lines[i], "ech_retry",
			    "'%s' is not one of [listener %s]'s ech files (a "
			    "list of them, or yes for all; at least one must give "
			    "retry configs)", cl->ech_retry.v[i], cl->h.name);
			rc = -1;
		}
	}
	return rc;
}

/* Where each config id was first seen, to name both files of a clash. */
struct ech_seen {
	const char *file[256];
};

static int
ech_add_file(struct config *cfg, const struct conf_listener *cl, size_t i,
    SSL_ECH_KEYS *keys, struct ech_seen *seen, struct ech_public_name *names,
    size_t *num_names)
{
	const char *path = cl->ech.v[i];
	int line = cl->ech.lines[i];
	struct ech_file f;
	char err[256], ssl_err[160];
	int rc = 0;

	if (ech_read(path, &f, err, sizeof(err)) != 0) {
		config_error(cfg, line, "ech", "'%s': %s", path, err);
		return -1;
	}
	for (size_t k = 0; k < f.num_configs; k++) {
		const struct ech_config *c = &f.configs[k];

		if (seen->file[c->id] != NULL) {
			config_error(cfg, line, "ech", "'%s': config id %u is "
			    "already used by '%s'; every config of a listener "
			    "needs its own id", path, c->id, seen->file[c->id]);
			rc = -1;
			continue;
		}
		seen->file[c->id] = path;
		if (!SSL_ECH_KEYS_add(keys, ech_is_retry(cl, path), c->der, c->len,
		    &f.key)) {
			config_error(cfg, line, "ech", "'%s': config id %u cannot "
			    "be served (%s)", path, c->id,
			    log_ssl_error(ssl_err, sizeof(ssl_err)));
			rc = -1;
			continue;
		}
		snprintf(names[*num_names].name, sizeof(names[*num_names].name),
		    "%s", c->public_name);
		names[*num_names].file = path;
		names[*num_names].line = line;
		(*num_names)++;
	}
	ech_file_free(&f);
	return rc;
}

SSL_ECH_KEYS *
ech_load(struct config *cfg, const struct conf_listener *cl,
    struct ech_public_name **names, size_t *num_names)
{
	SSL_ECH_KEYS *keys = SSL_ECH_KEYS_new();
	struct ech_seen *seen = calloc(1, sizeof(*seen));
	int rc = ech_check_retry_names(cfg, cl);

	*num_names = 0;
	/* At most 16 configs a file. */
	*names = calloc(cl->ech.num * 16 + 1, sizeof(**names));
	if (keys == NULL || seen == NULL || *names == NULL) {
		config_error(cfg, 0, NULL, "out of memory");
		rc = -1;
		goto out;
	}
	for (size_t i = 0; i < cl->ech.num; i++) {
		if (ech_add_file(cfg, cl, i, keys, seen, *names, num_names) != 0)
			rc = -1;
	}
out:
	free(seen);
	if (rc != 0) {
		SSL_ECH_KEYS_free(keys);
		free(*names);
		*names = NULL;
		*num_names = 0;
		return NULL;
	}
	return keys;
}

/* ech_write_pem writes one PEM block. */
static int
ech_write_pem(FILE *out, const char *name, const uint8_t *der, size_t len)
{
	BIO *bio = BIO_new_fp(out, BIO_NOCLOSE);
	int ok = bio != NULL && PEM_write_bio(bio, name, "", der, (long)len) > 0;

	BIO_free(bio);
	return ok ? 0 : -1;
}

int
ech_new_key(const char *public_name, FILE *out)
{
	EVP_HPKE_KEY key;
	uint8_t raw[32], id, *config = NULL, *pkcs8 = NULL, *list = NULL;
	size_t raw_len, config_len, pkcs8_len, list_len;
	EVP_PKEY *pkey = NULL;
	CBB cbb, child;
	int rc = -1;

	EVP_HPKE_KEY_zero(&key);
	RAND_bytes(&id, 1);
	if (!EVP_HPKE_KEY_generate(&key, EVP_hpke_x25519_hkdf_sha256()) ||
	    !EVP_HPKE_KEY_private_key(&key, raw, &raw_len, sizeof(raw)))
		goto out;
	/* The longest name the configuration hides: clients pad shorter
	 * inner names up to it, so names of up to 32 characters all look
	 * alike on the wire. */
	if (!SSL_marshal_ech_config(&config, &config_len, id, &key, public_name,
	    32)) {
		fprintf(stderr, "tlsproxy: '%s' cannot be an ECH public name (it "
		    "must be a DNS name, not an IP address)\n", public_name);
		ERR_clear_error();
		goto out;
	}
	pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, raw, raw_len);
	if (pkey == NULL || !CBB_init(&cbb, 64))
		goto out;
	if (!EVP_marshal_private_key(&cbb, pkey) ||
	    !CBB_finish(&cbb, &pkcs8, &pkcs8_len)) {
		CBB_cleanup(&cbb);
		goto out;
	}
	if (!CBB_init(&cbb, config_len + 2))
		goto out;
	if (!CBB_add_u16_length_prefixed(&cbb, &child) ||
	    !CBB_add_bytes(&child, config, config_len) ||
	    !CBB_finish(&cbb, &list, &list_len)) {
		CBB_cleanup(&cbb);
		goto out;
	}
	if (ech_write_pem(out, "PRIVATE KEY", pkcs8, pkcs8_len) != 0 ||
	    ech_write_pem(out, "ECHCONFIG", list, list_len) != 0) {
		fprintf(stderr, "tlsproxy: cannot write the ech file\n");
		goto out;
	}
	rc = 0;
out:
	if (rc != 0 && ERR_peek_error() != 0) {
		char err[160];

		fprintf(stderr, "tlsproxy: cannot make an ECH key: %s\n",
		    log_ssl_error(err, sizeof(err)));
	}
	OPENSSL_cleanse(raw, sizeof(raw));
	if (pkcs8 != NULL)
		OPENSSL_cleanse(pkcs8, pkcs8_len);
	EVP_HPKE_KEY_cleanup(&key);
	EVP_PKEY_free(pkey);
	OPENSSL_free(config);
	OPENSSL_free(pkcs8);
	OPENSSL_free(list);
	return rc;
}

int
ech_print_config_list(char *const *files, int num_files, FILE *out)
{
	CBB cbb, list;
	uint8_t *der = NULL;
	size_t der_len, b64_len;
	char *b64 = NULL, err[256];
	int rc = -1;

	if (!CBB_init(&cbb, 256) || !CBB_add_u16_length_prefixed(&cbb, &list))
		return -1;
	for (int i = 0; i < num_files; i++) {
		struct ech_file f;

		if (ech_read(files[i], &f, err, sizeof(err)) != 0) {
			fprintf(stderr, "tlsproxy: %s: %s\n", files[i], err);
			CBB_cleanup(&cbb);
			return -1;
		}
		for (size_t k = 0; k < f.num_configs; k++) {
			if (!CBB_add_bytes(&list, f.configs[k].der,
			    f.configs[k].len)) {
				ech_file_free(&f);
				CBB_cleanup(&cbb);
				return -1;
			}
		}
		ech_file_free(&f);
	}
	if (!CBB_finish(&cbb, &der, &der_len)) {
		CBB_cleanup(&cbb);
		return -1;
	}
	if (EVP_EncodedLength(&b64_len, der_len) &&
	    (b64 = malloc(b64_len)) != NULL) {
		EVP_EncodeBlock((uint8_t *)b64, der, der_len);
		fprintf(out, "%s\n", b64);
		rc = 0;
	}
	free(b64);
	OPENSSL_free(der);
	return rc;
}
