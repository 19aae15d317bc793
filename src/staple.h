/* staple.h: the OCSP response stapled for each certificate. A slot per
 * certificate (keyed by the SHA-256 of its DER) lives as long as something
 * refers to it: each context built for the certificate, in any generation,
 * and whoever else took a reference. A certificate that stays across a
 * reload finds its slot again, so its staple survives. A response is an
 * immutable snapshot: the control side swaps it atomically, handshakes
 * copy it into the connection without a lock, and a replaced one is freed
 * once no worker can still read it (retire.h). Never set on an SSL_CTX
 * other threads use. */
#ifndef TLSPROXY_STAPLE_H
#define TLSPROXY_STAPLE_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct staple_slot;

/* staple_slot_get returns the slot of the certificate whose DER hashes to
 * |hash|, creating it, with a reference the caller owns (release it with
 * staple_slot_unref); NULL when out of memory. */
struct staple_slot *staple_slot_get(const uint8_t hash[32]);

/* staple_slot_ref takes one more reference to |s| (NULL is fine) and
 * returns |s|. */
struct staple_slot *staple_slot_ref(struct staple_slot *s);

/* staple_slot_unref releases a reference; the last one frees the slot and
 * its response. NULL is fine. */
void staple_slot_unref(struct staple_slot *s);

/* staple_set replaces the slot's response with a copy of |der| (NULL:
 * none), valid until |expires| (seconds since the epoch). Returns 0, or
 * -1 out of memory with the response in use kept. */
int staple_set(struct staple_slot *s, const uint8_t *der, size_t len,
    int64_t expires);

/* staple_apply gives |ssl| the slot's response if it has one that has not
 * expired; an expired one is never served. Takes no lock: for worker
 * threads registered with retire_reader_add. */
void staple_apply(struct staple_slot *s, SSL *ssl);

/* staple_has returns whether the slot holds a response (expired or not:
 * staple_prune drops expired ones). */
int staple_has(struct staple_slot *s);

/* staple_prune drops the responses that expired by |now| (seconds since
 * the epoch) from every slot. Control side. */
void staple_prune(int64_t now);

/* staple_foreach calls |fn| with every slot's response that has not
 * expired: the certificate's hash, the response and when it expires, for
 * a process taking over from this one. Control side: the responses are
 * read in place, so nothing may replace them meanwhile. |fn| runs with
 * the slots' lock held and must not call the other staple functions. */
void staple_foreach(void (*fn)(void *arg, const uint8_t hash[32],
    const uint8_t *der, size_t len, int64_t expires), void *arg);

/* staple_restore gives the slot of |hash|, if there is one, a copy of
 * |der|, valid until |expires| (seconds since the epoch); a response the
 * slot holds already (from an ocsp file, say) is kept, and no slot is
 * made. Returns 1 when the response was set; 0 when there is no such
 * slot, it holds a response, |expires| has passed, or |der| is empty or
 * over 64 KiB; -1 out of memory. Call it before ocsp_fetcher_sync, which
 * then plans its refresh from this response instead of fetching at
 * once. */
int staple_restore(const uint8_t hash[32], const uint8_t *der, size_t len,
    int64_t expires);

/* staple_copy copies the slot's response to |buf| and returns its
 * length, or 0 when it holds none or the response is longer than
 * |buf_len|. Control side, as staple_foreach. */
size_t staple_copy(struct staple_slot *s, uint8_t *buf, size_t buf_len);

/* staple_slots_live returns how many slots exist, for tests and
 * metrics. */
size_t staple_slots_live(void);

#endif
