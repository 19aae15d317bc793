/* tls_bio.h: the socket BIO under every client SSL. BoringSSL reads a
 * record as two exact reads (header, then body) and writes each record on
 * its own; this BIO reads ahead into a pooled buffer, so a record costs one
 * read(2) or less, and gathers what one event produces (a handshake flight
 * and its tickets, a response and its close_notify, several records of a
 * download) into one write(2). A read that returns less than it asked
 * for has emptied the socket: the next read waits for the next
 * readability edge, or is the EOF when the peer's FIN was signalled
 * before it. Buffers are held only while bytes wait. */
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
 * readability; with |hup|, that the peer's FIN has arrived (EPOLLRDHUP);
 * with |trouble|, that the event may have carried a reset or a hang-up
 * (EPOLLERR, EPOLLHUP), after which no edge is awaited any more. Ignores
 * other BIOs. */
void tls_bio_ready(BIO *bio, int hup, int trouble);

/* tls_bio_pending returns how many output bytes wait for tls_bio_flush. */
size_t tls_bio_pending(BIO *bio);

#endif
