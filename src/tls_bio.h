/* tls_bio.h: the socket BIO under every client SSL. BoringSSL reads a
 * record as two exact reads (header, then body) and writes each record on
 * its own; this BIO reads ahead into a pooled buffer, so a record costs one
 * read(2) or less, and gathers what one event produces (a handshake flight
 * and its tickets, a response and its close_notify, several records of a
 * download) into one write(2). Once the peer's FIN has been signalled, a
 * read that returns less than it asked for has reached it, and the EOF
 * needs no read of its own. Buffers are held only while bytes wait. */
#ifndef TLSPROXY_TLS_BIO_H
#define TLSPROXY_TLS_BIO_H

#include <openssl/base.h>

struct bufpool;

/* tls_bio_new returns a BIO over socket |fd| (not owned) drawing buffers
 * from |pool|, or NULL. */
BIO *tls_bio_new(int fd, struct bufpool *pool);

/* tls_bio_flush writes gathered output. Returns 1 when nothing is left, 0
 * when the socket would block (wait for writability), -1 on error with
 * errno set. */
int tls_bio_flush(BIO *bio);

/* tls_bio_flush_last is tls_bio_flush for the last output before a FIN
 * (shutdown or close): the kernel may hold a partial segment back until
 * then, so data and FIN leave in one packet. */
int tls_bio_flush_last(BIO *bio);

/* tls_bio_ready tells the BIO that its socket's event reported
 * readability, and with |hup| that the peer's FIN has arrived (EPOLLRDHUP).
 * Ignores other BIOs. */
void tls_bio_ready(BIO *bio, int hup);

/* tls_bio_pending returns how many output bytes wait for tls_bio_flush. */
size_t tls_bio_pending(BIO *bio);

#endif
