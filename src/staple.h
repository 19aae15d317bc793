/* staple.h: the OCSP response stapled for each certificate. A slot per
 * certificate (keyed by the SHA-256 of its DER) lives for the whole
 * process, so a staple survives reloads; its response is replaced under a
 * lock and copied into each handshake that asks for it, never set on an
 * SSL_CTX other threads use. */
#ifndef TLSPROXY_STAPLE_H
#define TLSPROXY_STAPLE_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

struct staple_slot;

/* staple_slot_get returns the slot of the certificate whose DER hashes to
 * |hash|, creating it; NULL when out of memory. */
struct staple_slot *staple_slot_get(const uint8_t hash[32]);

/* staple_set replaces the slot's response with a copy of |der| (NULL:
 * none), valid until |expires| (seconds since the epoch). */
int staple_set(struct staple_slot *s, const uint8_t *der, size_t len,
    int64_t expires);

/* staple_apply gives |ssl| the slot's response if it has one that has not
 * expired; an expired one is dropped, never served. */
void staple_apply(struct staple_slot *s, SSL *ssl);

/* staple_has returns whether the slot holds a response. */
int staple_has(struct staple_slot *s);

#endif
