/* relay.h: the byte pump between a client side (TLS, or plain in tests)
 * and a backend side, with a fixed buffer cap per direction. The relay
 * owns no file descriptors and no events: it says what it is waiting for
 * and the caller arms events accordingly. */
#ifndef TLSPROXY_RELAY_H
#define TLSPROXY_RELAY_H

#include <openssl/base.h>
#include <stddef.h>
#include <stdint.h>

struct bufpool;
struct buf;

enum relay_side {
	RELAY_CLIENT = 0,
	RELAY_BACKEND = 1,
};

/* What an operation is blocked on. */
enum relay_want {
	RELAY_WANT_NONE = 0,
	RELAY_WANT_READ = 1,
	RELAY_WANT_WRITE = 2,
	/* For relay_ready only: the peer's FIN has arrived (EPOLLRDHUP). */
	RELAY_HUP = 4,
	/* For relay_ready only: the event may have carried a reset or a
	 * hang-up (EPOLLERR, EPOLLHUP), after which no further edge comes:
	 * reads on that side then go on until one fails or blocks. Without
	 * it, a short read has emptied the socket until the next edge. */
	RELAY_TROUBLE = 8,
};

enum relay_status {
	RELAY_OK,    /* waiting for events */
	RELAY_DONE,  /* both directions ended cleanly */
	RELAY_ERROR, /* see relay_reason() */
};

struct relay_end {
	int fd;
	SSL *ssl; /* NULL: plain socket */
	uint8_t read_eof;     /* no more data will come from this side */
	uint8_t write_shut;   /* we ended writing to this side */
	uint8_t clean_eof;    /* TLS: the EOF came with close_notify */
	uint8_t read_blocked;  /* enum relay_want of the last read */
	uint8_t write_blocked; /* enum relay_want of the last write/shutdown */
	uint8_t flush_blocked; /* TLS: gathered output waits for writability */
	uint8_t fin_pending;   /* TLS: half-close once the output is sent */
	uint8_t hup;           /* the peer's FIN was signalled */
	uint8_t at_fin;        /* a short read after that reached it */
	uint8_t trouble;       /* RELAY_TROUBLE was signalled */
	uint8_t nodelay_later; /* TCP_NODELAY before the second write */
	uint8_t wrote;         /* a write has succeeded */
};

struct relay {
	struct relay_end end[2];
	/* buf[s] holds bytes read from side s, not yet written to the other. */
	struct buf *buf[2];
	uint64_t bytes[2]; /* bytes read from side s and delivered */
	struct bufpool *pool;
	const char *reason; /* why RELAY_ERROR or RELAY_DONE */
	char reason_buf[96];
	int progress; /* set when any byte moved since last cleared */
	/* The client tried to renegotiate, which ended the connection
	 * (BoringSSL never renegotiates as a server). */
	uint8_t renegotiation;
	/* The backend side failed (a reset, a read or write error) rather
	 * than ended its stream. After a failed read, what the backend sent
	 * before is still delivered; the client's side is then not ended
	 * with close_notify, and relay_run() reports RELAY_ERROR. */
	uint8_t backend_failed;
	/* Set: the handshake messages BoringSSL holds back until the next
	 * write (TLS 1.3 session tickets, a KeyUpdate answer) wait for data
	 * to the client to carry them. Clear: every run sends them. Cleared
	 * by the first write to the client. */
	uint8_t hold_post_handshake;
	/* Bytes at the head of the backend-bound buffer that tlsproxy put
	 * there itself (a PROXY protocol header), not counted as the
	 * client's. */
	size_t preface;
};

/* relay_init prepares |r| over two connected, non-blocking sockets. */
void relay_init(struct relay *r, struct bufpool *pool, int client_fd,
    SSL *client_ssl, int backend_fd);

/* relay_nodelay_later sets TCP_NODELAY on side |s|'s (plain TCP) socket
 * just before its second write rather than now. Nagle's algorithm (with
 * Linux's Minshall rule) never delays a connection's first write, so
 * the behaviour is the same, and a connection that carries one request
 * saves the call. */
void relay_nodelay_later(struct relay *r, enum relay_side s);

/* relay_preface queues |len| bytes to go to the backend before anything
 * from the client. Call right after relay_init. Returns 0, or -1 if they
 * do not fit one buffer or memory ran out. */
int relay_preface(struct relay *r, const void *data, size_t len);

/* relay_release returns buffers to the pool (fds stay open). */
void relay_release(struct relay *r);

/* relay_ready records that |fd_side|'s socket signalled |what|
 * (RELAY_WANT_READ and/or RELAY_WANT_WRITE, with RELAY_HUP and
 * RELAY_TROUBLE), unblocking operations that waited for it. The sockets
 * are watched edge-triggered from before the relay's first read. */
void relay_ready(struct relay *r, enum relay_side fd_side, int what);

/* relay_run moves bytes both ways until everything is blocked, handles
 * half-close, and returns the status. */
enum relay_status relay_run(struct relay *r);

/* relay_interest returns the events (RELAY_WANT_* bits) side |s|'s socket
 * must be watched for. */
int relay_interest(const struct relay *r, enum relay_side s);

/* relay_buffered returns the bytes held in buffers (for tests). */
size_t relay_buffered(const struct relay *r);

#endif
