/* tlsopt.h: the TLS client options that tlsproxy-tlsclient and
 * tlsproxy-load both take: key-exchange group names (--groups) and an
 * ECHConfigList to offer (--ech-config-list). Header-only, like cli.h. */
#ifndef TLSPROXY_TOOLS_TLSOPT_H
#define TLSPROXY_TOOLS_TLSOPT_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/base64.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

static const struct {
	const char *name;
	uint16_t id;
} tlsopt_groups[] = {
#ifdef SSL_GROUP_X25519_MLKEM768
	{ "X25519MLKEM768", SSL_GROUP_X25519_MLKEM768 },
#endif
	{ "X25519", SSL_CURVE_X25519 },
	{ "P-256", SSL_CURVE_SECP256R1 },
	{ "P-384", SSL_CURVE_SECP384R1 },
};

#define TLSOPT_NUM_GROUPS (sizeof(tlsopt_groups) / sizeof(tlsopt_groups[0]))

/* tlsopt_parse_groups reads a colon-separated list of group names into
 * at most |max| ids; returns 0 or -1. */
static inline int
tlsopt_parse_groups(const char *s, uint16_t *out, size_t max, size_t *out_num)
{
	char buf[256], *save = NULL, *tok;

	*out_num = 0;
	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	for (tok = strtok_r(buf, ":", &save); tok != NULL; tok = strtok_r(NULL, ":", &save)) {
		size_t k;

		for (k = 0; k < TLSOPT_NUM_GROUPS; k++) {
			if (strcasecmp(tok, tlsopt_groups[k].name) == 0)
				break;
		}
		if (k == TLSOPT_NUM_GROUPS || *out_num == max)
			return -1;
		out[(*out_num)++] = tlsopt_groups[k].id;
	}
	return 0;
}

/* tlsopt_group_name names a negotiated group: "-" for none (a resumed
 * TLS 1.2 session), "other" for one not in the table. */
static inline const char *
tlsopt_group_name(uint16_t id)
{
	for (size_t k = 0; k < TLSOPT_NUM_GROUPS; k++) {
		if (tlsopt_groups[k].id == id)
			return tlsopt_groups[k].name;
	}
	return id == 0 ? "-" : "other";
}

/* tlsopt_load_ech reads --ech-config-list: base64 as in the ech=
 * parameter of a DNS HTTPS record, or @FILE with the raw ECHConfigList that
 * bssl generate-ech -out-ech-config-list writes. BoringSSL checks the
 * syntax here, so a bad list is a usage error rather than failed
 * connections. On success the list is in |*out| (malloc'd); on failure
 * the reason goes to stderr after |prog|. Returns 0 or -1. */
static inline int
tlsopt_load_ech(const char *prog, const char *arg, uint8_t **out, size_t *out_len)
{
	/* An ECHConfigList is at most a 2-byte length and 65535 bytes. */
	const size_t max = 2 + 65535;
	uint8_t *buf = NULL;
	size_t len = 0, cap;
	SSL_CTX *ctx = NULL;
	SSL *ssl = NULL;
	int ret = -1;

	if (arg[0] == '@') {
		FILE *f = fopen(arg + 1, "rb");

		if (f == NULL || (buf = malloc(max + 1)) == NULL) {
			fprintf(stderr, "%s: --ech-config-list %s: %s\n", prog, arg,
			    strerror(errno));
			if (f != NULL)
				fclose(f);
			goto out;
		}
		len = fread(buf, 1, max + 1, f);
		if (ferror(f) || len > max) {
			fprintf(stderr, "%s: --ech-config-list %s: %s\n", prog, arg,
			    ferror(f) ? "read error" : "too large for an ECHConfigList");
			fclose(f);
			goto out;
		}
		fclose(f);
	} else {
		size_t n = strlen(arg);

		if (n == 0 || !EVP_DecodedLength(&cap, n) || (buf = malloc(cap)) == NULL ||
		    !EVP_DecodeBase64(buf, &len, cap, (const uint8_t *)arg, n)) {
			fprintf(stderr, "%s: --ech-config-list wants base64 "
			    "(standard alphabet, padded) or @FILE\n", prog);
			goto out;
		}
	}
	if ((ctx = SSL_CTX_new(TLS_method())) == NULL || (ssl = SSL_new(ctx)) == NULL) {
		fprintf(stderr, "%s: cannot set up TLS\n", prog);
		goto out;
	}
	if (!SSL_set1_ech_config_list(ssl, buf, len)) {
		fprintf(stderr, "%s: --ech-config-list: not a valid ECHConfigList\n", prog);
		goto out;
	}
	free(*out);
	*out = buf;
	*out_len = len;
	buf = NULL;
	ret = 0;
out:
	ERR_clear_error();
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	free(buf);
	return ret;
}

#endif
