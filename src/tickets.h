/* tickets.h: session-ticket keys. A key is 48 bytes in Node's layout: a
 * 16-byte name, a 16-byte HMAC secret and a 16-byte AES-128 key. The
 * first key of the ring encrypts new tickets; every key decrypts, and a
 * ticket under another key is renewed under the first. The ring in use is
 * process-wide, so it survives reloads: an immutable snapshot that the
 * control side swaps atomically and handshakes read without a lock; the
 * old one is wiped and freed once no worker can still read it
 * (retire.h). */
#ifndef TLSPROXY_TICKETS_H
#define TLSPROXY_TICKETS_H

#include <openssl/base.h>
#include <stddef.h>
#include <stdint.h>

#define TICKET_KEY_LEN 48

struct ticket_key {
	uint8_t name[16];
	uint8_t hmac[16];
	uint8_t aes[16];
};

struct ticket_ring {
	struct ticket_key *keys;
	size_t num;
};

/* tickets_parse reads keys from file contents: either raw bytes (a
 * multiple of 48) or lines of base64, one 48-byte key per line (blank
 * lines and lines starting with '#' are skipped). Returns 0, or -1 with
 * the reason in |err|. */
int tickets_parse(const uint8_t *data, size_t len, struct ticket_ring *out,
    char *err, size_t err_len);

/* tickets_load_file reads |path|, refusing a file others can read. */
int tickets_load_file(const char *path, struct ticket_ring *out, char *err,
    size_t err_len);

/* tickets_generate fills |out| with |num| fresh random keys. */
int tickets_generate(struct ticket_ring *out, size_t num);

/* tickets_ring_free frees the keys of |r| (wiping them first). */
void tickets_ring_free(struct ticket_ring *r);

/* tickets_new_key_line writes one fresh key as a base64 line. */
int tickets_new_key_line(char *out, size_t out_len);

/* tickets_install makes |r| the ring in use, taking its keys; the
 * previous ring is retired (wiped and freed once no handshake can read
 * it). |from_file| records where the keys came from. Out of memory, |r|
 * is wiped and the ring in use stays. Control side only. */
void tickets_install(struct ticket_ring *r, int from_file);

/* tickets_export copies the ring in use into |out|, the key that
 * encrypts new tickets first, for a process taking over from this one:
 * tickets_install there keeps every ticket issued here valid. Free |out|
 * with tickets_ring_free. Returns 0 (with |out| empty when no ring is in
 * use), or -1 out of memory with |out| empty. Control side only. */
int tickets_export(struct ticket_ring *out);

/* tickets_clear retires the ring in use, leaving none (at exit). */
void tickets_clear(void);

/* tickets_from_file returns whether the ring in use came from a file. */
int tickets_from_file(void);

/* tickets_rotate puts a fresh key first and keeps at most |keep| keys in
 * all (automatic keys, without a file). Returns 0 or -1. */
int tickets_rotate(size_t keep);

/* tickets_key_since returns when the key that encrypts new tickets was
 * installed (Unix seconds), or 0 without keys. */
int64_t tickets_key_since(void);

/* tickets_num returns how many keys are in use. */
size_t tickets_num(void);

/* tickets_key_cb is BoringSSL's ticket key callback over the ring in use
 * (see SSL_CTX_set_tlsext_ticket_key_cb). */
int tickets_key_cb(SSL *ssl, uint8_t *key_name, uint8_t *iv,
    EVP_CIPHER_CTX *ctx, HMAC_CTX *hmac_ctx, int encrypt);

#endif
