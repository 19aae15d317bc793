/* acme_cert.h: the certificate an ACME account keeps for a context, which
 * changes while generations live. A slot per order (the account and the
 * names) lives as long as something refers to it: each context built for
 * it, in any generation, and the ACME side. A reload that keeps the order
 * finds its slot, and its certificate, again. The certificate is an
 * immutable snapshot: the ACME side publishes a new one with an atomic
 * swap, handshakes hand it to their connection without a lock, and the
 * one replaced is freed once no worker can still read it (retire.h). */
#ifndef TLSPROXY_ACME_CERT_H
#define TLSPROXY_ACME_CERT_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct acme_slot;

/* acme_slot_get returns the slot of the order named |key| (the account and
 * the names, see acme_slot_key), creating it, with a reference the caller
 * owns (release it with acme_slot_unref); NULL when out of memory. */
struct acme_slot *acme_slot_get(const char *key);

/* acme_slot_key writes the key of the order of account |account| for
 * |names| into |buf|; returns |buf|, or NULL when it does not fit. */
char *acme_slot_key(const char *account, const char *const *names,
    size_t num_names, char *buf, size_t len);

/* acme_slot_name returns the key |s| was made for. */
const char *acme_slot_name(const struct acme_slot *s);

/* acme_slot_ref takes one more reference to |s| (NULL is fine) and
 * returns |s|. */
struct acme_slot *acme_slot_ref(struct acme_slot *s);

/* acme_slot_unref releases a reference; the last one frees the slot and
 * its certificate. NULL is fine. */
void acme_slot_unref(struct acme_slot *s);

/* acme_slot_set publishes |chain| (|num| certificates, the leaf first)
 * with |key| as the slot's certificate, valid until |not_after| (seconds
 * since the epoch); the slot takes its own references. Returns 0, or -1
 * out of memory with the certificate in use kept. Control side. */
int acme_slot_set(struct acme_slot *s, CRYPTO_BUFFER *const *chain,
    size_t num, EVP_PKEY *key, int64_t not_after);

/* acme_slot_apply gives |ssl| the slot's certificate and key, and with
 * |staple| (the client asked for it) the certificate's OCSP staple if
 * there is a valid one. Returns 0, or -1 when the slot has none yet (the
 * handshake must be refused: an order's names are never served a
 * placeholder) or it cannot be set. Takes no lock: for worker threads
 * registered with retire_reader_add. */
int acme_slot_apply(struct acme_slot *s, SSL *ssl, int staple);

/* acme_slot_ocsp gives what fetching the current certificate's OCSP
 * response needs: new references to its staple slot, leaf and issuer, and
 * a copy of the responder URL. Returns 0, or -1 when there is no
 * certificate or it names no responder. Any thread. */
struct staple_slot;
int acme_slot_ocsp(struct acme_slot *s, struct staple_slot **staple,
    X509 **leaf, X509 **issuer, char **url);

/* acme_slot_not_after returns when the slot's certificate expires, or 0
 * when it has none. Any thread. */
int64_t acme_slot_not_after(struct acme_slot *s);

/* acme_slot_leaf returns a new reference to the slot's leaf certificate
 * (DER), or NULL when it has none. Any thread. */
CRYPTO_BUFFER *acme_slot_leaf(struct acme_slot *s);

/* acme_slots_live returns how many slots exist, for tests. */
size_t acme_slots_live(void);

#endif
