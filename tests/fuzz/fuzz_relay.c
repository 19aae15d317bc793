/* fuzz_relay.c: libFuzzer target for the relay state machine, over two
 * socketpairs with plain sockets on the client side, as in the unit test.
 * The input is a program of operations on the test's ends of the two
 * connections and on the relay.
 *
 * Input: a byte for the buffer cap (1 + b % 64) and, in bit 7, small
 * socket buffers; a byte for the length of a preface (b % (cap + 1),
 * queued with relay_preface); then operations, one byte each, some
 * followed by a length byte L meaning 1 + L * L / 8 bytes:
 *   0, 1  write L bytes into the client end, the backend end
 *   2, 3  read up to L bytes from the client end, the backend end
 *   4, 5  shut down writing on the client end, the backend end
 *   6, 7  close the client end, the backend end
 *   8     relay_ready on the side in bit 4 with the bits 5-6 (wakeups
 *         that are spurious, or missing, or both)
 *   9     relay_run
 *   10    one step of an event loop: poll what relay_interest asks for,
 *         relay_ready with what happened, relay_run
 *   11    shut down reading on the end in bit 4
 * (the operation is the byte's low nibble, modulo 12).
 *
 * The bytes written are a fixed pattern per direction, so the reader can
 * check each one. Properties:
 * - each end reads exactly a prefix of what the other end wrote (behind
 *   the preface, towards the backend), never a byte more;
 * - an end that reads EOF while the relay is open has read everything;
 * - relay_buffered never exceeds two buffers;
 * - once relay_run says RELAY_ERROR or RELAY_DONE the owner closes both
 *   sockets, and then each end reads exactly what the relay counted as
 *   delivered: nothing arrives after an error;
 * - at the end, the remaining ends shut down writing and an event loop
 *   drives the relay: it must end (RELAY_DONE or RELAY_ERROR) rather than
 *   stall, and when no end was closed or shut for reading it must be
 *   RELAY_DONE with every byte delivered;
 * - no crash, leak or undefined behaviour; the pool gets every buffer
 *   back. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bufpool.h"
#include "relay.h"

#define CHUNK_MAX 8192
#define LOOP_MAX 100000

enum { C2B = 0, B2C = 1 }; /* directions */

struct rig {
	int end[2];    /* the test's ends: client, backend */
	int rel[2];    /* the relay's sockets: client side, backend side */
	int closed[2]; /* end[i] was closed by the program */
	int shut_wr[2];
	int shut_rd[2];
	size_t cap, plen;
	uint64_t written[2];  /* per direction, by the sending end */
	uint64_t received[2]; /* per direction, by the receiving end */
	int status;           /* last relay_run result */
	struct bufpool *pool;
	struct relay r;
};

static uint8_t chunk[CHUNK_MAX];

/* pattern is byte |i| of the bytes sent in direction |d| (2: the
 * preface). */
static uint8_t
pattern(uint64_t i, int d)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL + (uint64_t)d * 0x5bd1e995;

	x ^= x >> 29;
	return (uint8_t)(x ^ x >> 11);
}

static uint64_t
expected_total(const struct rig *g, int d)
{
	return (d == C2B ? g->plen : 0) + g->written[d];
}

static uint8_t
expected_byte(const struct rig *g, int d, uint64_t i)
{
	if (d == C2B) {
		if (i < g->plen)
			return pattern(i, 2);
		i -= g->plen;
	}
	return pattern(i, d);
}

static void
nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int
rig_init(struct rig *g, size_t cap, int small, size_t plen)
{
	int c[2], b[2];

	memset(g, 0, sizeof(*g));
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, c) != 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, b) != 0) {
		close(c[0]);
		close(c[1]);
		return -1;
	}
	g->end[0] = c[0];
	g->rel[0] = c[1];
	g->rel[1] = b[0];
	g->end[1] = b[1];
	for (int i = 0; i < 2; i++) {
		int one = 1;

		nonblock(c[i]);
		nonblock(b[i]);
		if (small) {
			/* The kernel rounds this up to its minimum, a few
			 * KiB: enough to fill with a few writes. */
			setsockopt(c[i], SOL_SOCKET, SO_SNDBUF, &one,
			    sizeof(one));
			setsockopt(b[i], SOL_SOCKET, SO_SNDBUF, &one,
			    sizeof(one));
		}
	}
	g->cap = cap;
	g->pool = bufpool_new(cap, 2);
	if (g->pool == NULL)
		abort();
	relay_init(&g->r, g->pool, g->rel[0], NULL, g->rel[1]);
	if (plen > 0) {
		for (size_t i = 0; i < plen; i++)
			chunk[i] = pattern(i, 2);
		if (relay_preface(&g->r, chunk, plen) != 0)
			abort();
		g->plen = plen;
	}
	g->status = RELAY_OK;
	return 0;
}

static void
rig_write(struct rig *g, int e, size_t len)
{
	ssize_t n;

	if (g->closed[e] || g->shut_wr[e])
		return;
	for (size_t i = 0; i < len; i++)
		chunk[i] = pattern(g->written[e] + i, e);
	n = send(g->end[e], chunk, len, MSG_NOSIGNAL);
	if (n > 0)
		g->written[e] += (uint64_t)n;
}

/* rig_read reads up to |len| bytes at end |e| and checks them; returns
 * the count, 0 at EOF or -1. |relay_open|: the relay still holds its
 * sockets, so EOF means it passed the half-close on. */
static ssize_t
rig_read(struct rig *g, int e, size_t len, int relay_open)
{
	int d = !e; /* end |e| receives the other direction */
	ssize_t n;

	if (g->closed[e])
		return -1;
	n = read(g->end[e], chunk, len);
	if (n < 0)
		return -1;
	if (n == 0) {
		/* After SHUT_RD an end reads EOF of its own accord. */
		if (relay_open && !g->shut_rd[e] &&
		    g->received[d] != expected_total(g, d))
			abort();
		return 0;
	}
	if (g->received[d] + (uint64_t)n > expected_total(g, d))
		abort();
	for (ssize_t i = 0; i < n; i++) {
		uint64_t at = g->received[d] + (uint64_t)i;

		if (chunk[i] != expected_byte(g, d, at))
			abort();
	}
	g->received[d] += (uint64_t)n;
	return n;
}

/* rig_drain reads whatever end |e| can read now; returns the count. */
static size_t
rig_drain(struct rig *g, int e, int relay_open)
{
	size_t total = 0;
	ssize_t n;

	while ((n = rig_read(g, e, CHUNK_MAX, relay_open)) > 0)
		total += (size_t)n;
	return total;
}

static void
rig_run(struct rig *g)
{
	g->status = (int)relay_run(&g->r);
	if (relay_buffered(&g->r) > 2 * g->cap)
		abort();
}

/* rig_step is one turn of an event loop that watches what the relay
 * asks for; like libevent's epoll backend, a hang-up or error wakes both
 * directions. Returns whether anything was ready. */
static int
rig_step(struct rig *g)
{
	struct pollfd p[2];

	for (int s = 0; s < 2; s++) {
		int want = relay_interest(&g->r, (enum relay_side)s);

		p[s].fd = g->rel[s];
		p[s].events = (short)(((want & RELAY_WANT_READ) ? POLLIN : 0) |
		    ((want & RELAY_WANT_WRITE) ? POLLOUT : 0));
		p[s].revents = 0;
	}
	if (poll(p, 2, 0) <= 0)
		return 0;
	for (int s = 0; s < 2; s++) {
		short ev = p[s].revents;
		int what = 0;

		if (ev & (POLLIN | POLLHUP | POLLERR))
			what |= RELAY_WANT_READ;
		if (ev & (POLLOUT | POLLHUP | POLLERR))
			what |= RELAY_WANT_WRITE;
		relay_ready(&g->r, (enum relay_side)s, what);
	}
	rig_run(g);
	return 1;
}

static size_t
op_len(const uint8_t **p, const uint8_t *end)
{
	size_t l;

	if (*p == end)
		return 1;
	l = *(*p)++;
	return 1 + l * l / 8;
}

/* rig_program runs the operations until the input ends or the relay
 * finishes. */
static void
rig_program(struct rig *g, const uint8_t *p, const uint8_t *end)
{
	while (p < end && g->status == RELAY_OK) {
		uint8_t op = *p++;
		int e = op >> 4 & 1;

		switch ((op & 15) % 12) {
		case 0:
		case 1:
			rig_write(g, op & 1, op_len(&p, end));
			break;
		case 2:
		case 3:
			rig_read(g, op & 1, op_len(&p, end), 1);
			break;
		case 4:
		case 5:
			e = op & 1;
			if (!g->closed[e] && !g->shut_wr[e]) {
				shutdown(g->end[e], SHUT_WR);
				g->shut_wr[e] = 1;
			}
			break;
		case 6:
		case 7:
			e = op & 1;
			if (!g->closed[e]) {
				close(g->end[e]);
				g->closed[e] = 1;
			}
			break;
		case 8:
			relay_ready(&g->r, (enum relay_side)e, op >> 5 & 3);
			break;
		case 9:
			rig_run(g);
			break;
		case 10:
			rig_step(g);
			break;
		case 11:
			if (!g->closed[e] && !g->shut_rd[e]) {
				shutdown(g->end[e], SHUT_RD);
				g->shut_rd[e] = 1;
			}
			break;
		}
		if (relay_buffered(&g->r) > 2 * g->cap)
			abort();
	}
}

/* rig_finish lets the ends finish their sending and drives the relay to
 * its end, reading what arrives. */
static void
rig_finish(struct rig *g)
{
	int intact = 1;

	for (int e = 0; e < 2; e++) {
		if (g->closed[e] || g->shut_rd[e])
			intact = 0;
		if (!g->closed[e] && !g->shut_wr[e]) {
			shutdown(g->end[e], SHUT_WR);
			g->shut_wr[e] = 1;
		}
	}
	if (g->status == RELAY_OK)
		rig_run(g);
	for (int i = 0; g->status == RELAY_OK; i++) {
		size_t got = rig_drain(g, 0, 1) + rig_drain(g, 1, 1);

		if (!rig_step(g) && got == 0)
			break;
		if (i == LOOP_MAX)
			abort(); /* moving bytes forever */
	}
	if (g->status == RELAY_OK)
		abort(); /* stalled: nothing ready, yet not finished */
	if (intact && g->status != RELAY_DONE)
		abort();
}

/* rig_close is the owner's close after RELAY_DONE or RELAY_ERROR; then
 * the ends read what is left, which must be what the relay counted. */
static void
rig_close(struct rig *g)
{
	uint64_t sent[2];

	sent[C2B] = g->plen - g->r.preface + g->r.bytes[RELAY_CLIENT];
	sent[B2C] = g->r.bytes[RELAY_BACKEND];
	if (g->r.bytes[RELAY_CLIENT] > g->written[C2B] ||
	    g->r.bytes[RELAY_BACKEND] > g->written[B2C])
		abort();
	relay_release(&g->r);
	if (g->r.buf[0] != NULL || g->r.buf[1] != NULL)
		abort();
	close(g->rel[0]);
	close(g->rel[1]);
	for (int e = 0; e < 2; e++) {
		int d = !e;

		if (g->closed[e])
			continue;
		while (rig_read(g, e, CHUNK_MAX, 0) > 0)
			;
		if (g->received[d] != sent[d])
			abort();
		if (g->status == RELAY_DONE &&
		    g->received[d] != expected_total(g, d))
			abort();
		close(g->end[e]);
	}
	bufpool_free(g->pool);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int once;
	struct rig g;
	size_t cap;

	if (!once) {
		signal(SIGPIPE, SIG_IGN);
		once = 1;
	}
	if (size < 2)
		return 0;
	cap = 1 + data[0] % 64;
	if (rig_init(&g, cap, data[0] >> 7, data[1] % (cap + 1)) != 0)
		return 0;
	rig_program(&g, data + 2, data + size);
	rig_finish(&g);
	rig_close(&g);
	return 0;
}
