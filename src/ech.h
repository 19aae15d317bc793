/* ech.h: Encrypted Client Hello keys. An ech file has the PEM layout other
 * ECH servers read (draft-farrell-tls-pemesni): a PKCS#8 "PRIVATE KEY"
 * (X25519) followed by an "ECHCONFIG" block, the base64 ECHConfigList
 * whose configs carry that key's public half. */
#ifndef TLSPROXY_ECH_H
#define TLSPROXY_ECH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/ssl.h>

struct config;
struct conf_listener;

/* One config's public name, and the ech file (and its line in the
 * configuration) it came from, for the checks that need contexts. */
struct ech_public_name {
	char name[256];
	const char *file;
	int line;
};

/* ech_load reads listener |cl|'s ech files into keys for
 * SSL_CTX_set1_ech_keys: every config decrypts; those of the ech_retry
 * files (all, when it is unset) go back to clients as retry configs.
 * Checks that each key matches its configs and that config ids are
 * unique. The public names go to |*names| (|*num_names| of them; the
 * caller frees the array). Problems go to |cfg| with the key's line;
 * returns NULL then. */
SSL_ECH_KEYS *ech_load(struct config *cfg, const struct conf_listener *cl,
    struct ech_public_name **names, size_t *num_names);

/* ech_check parses and checks the contents of an ech file held in
 * memory, as ech_load does a file. Returns 0 with the number of usable
 * configs in |*num_configs|, or -1 with the reason in |err|. */
int ech_check(const uint8_t *data, size_t len, size_t *num_configs,
    char *err, size_t err_len);

/* ech_new_key writes a fresh ech file for |public_name| to |out|: an
 * X25519 key, a random config id, HKDF-SHA256 with AES-128-GCM and
 * ChaCha20-Poly1305. Returns 0, or -1 with the reason on stderr. */
int ech_new_key(const char *public_name, FILE *out);

/* ech_print_config_list writes the ECHConfigList of every config in
 * |files|, in order, as one base64 line (the ech= value of a DNS HTTPS
 * record). Returns 0, or -1 with the reason on stderr. */
int ech_print_config_list(char *const *files, int num_files, FILE *out);

#endif
