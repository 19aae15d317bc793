/* The relay over socketpairs with a tiny buffer cap: integrity,
 * backpressure, half-close, a backend reset, and no buffers while idle. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../check_run.h"
#include "bufpool.h"
#include "loopback.h"
#include "relay.h"

#define CAP 16

struct rig {
	int client;  /* the test's end of the client connection */
	int backend; /* the test's end of the backend connection */
	int relay_c, relay_b;
	struct bufpool *pool;
	struct relay r;
};

static void
rig_init_cap(struct rig *g, size_t cap)
{
	int c[2], b[2];

	signal(SIGPIPE, SIG_IGN);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, c), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
	g->client = c[0];
	g->relay_c = c[1];
	g->relay_b = b[0];
	g->backend = b[1];
	for (int i = 0; i < 2; i++) {
		nonblock(c[i]);
		nonblock(b[i]);
	}
	g->pool = bufpool_new(cap, 4);
	relay_init(&g->r, g->pool, g->relay_c, NULL, g->relay_b);
}

static void
rig_init(struct rig *g)
{
	rig_init_cap(g, CAP);
}

static void
rig_free(struct rig *g)
{
	relay_release(&g->r);
	bufpool_free(g->pool);
	close(g->client);
	if (g->backend >= 0)
		close(g->backend);
	if (g->relay_c >= 0)
		close(g->relay_c);
	close(g->relay_b);
}

/* rig_step polls the relay's sockets for what it asked for and runs it
 * once; returns the status, or -1 if nothing was ready. */
static int
rig_step(struct rig *g)
{
	struct pollfd p[2];

	for (int s = 0; s < 2; s++) {
		int want = relay_interest(&g->r, (enum relay_side)s);

		p[s].fd = s == 0 ? g->relay_c : g->relay_b;
		p[s].events = (short)(((want & RELAY_WANT_READ) ? POLLIN : 0) |
		    ((want & RELAY_WANT_WRITE) ? POLLOUT : 0));
		p[s].revents = 0;
	}
	if (poll(p, 2, 0) <= 0)
		return -1;
	for (int s = 0; s < 2; s++) {
		int what = ((p[s].revents & (POLLIN | POLLHUP | POLLERR)) ?
		    RELAY_WANT_READ : 0) | ((p[s].revents & POLLOUT) ?
		    RELAY_WANT_WRITE : 0);

		relay_ready(&g->r, (enum relay_side)s, what);
	}
	return (int)relay_run(&g->r);
}

static int
rig_settle(struct rig *g)
{
	int st = (int)relay_run(&g->r), n;

	while ((n = rig_step(g)) != -1) {
		st = n;
		if (st != RELAY_OK)
			break;
	}
	return st;
}

static size_t
drain(int fd, unsigned char *out, size_t cap)
{
	size_t got = 0;
	ssize_t n;

	while (got < cap && (n = read(fd, out + got, cap - got)) > 0)
		got += (size_t)n;
	return got;
}

START_TEST(bytes_both_ways_intact)
{
	enum { N = 300000 };
	unsigned char *in = malloc(N), *out = malloc(N), *back = malloc(N);
	size_t sent = 0, got = 0, echoed = 0, back_got = 0;
	struct rig g;

	for (size_t i = 0; i < N; i++)
		in[i] = (unsigned char)(rand() >> 7);
	rig_init(&g);
	relay_run(&g.r);
	while (got < N || back_got < N) {
		ssize_t n;

		if (sent < N && (n = write(g.client, in + sent, N - sent)) > 0)
			sent += (size_t)n;
		rig_settle(&g);
		got += drain(g.backend, out + got, N - got);
		/* The backend echoes what it got, reversed in direction. */
		if (echoed < got && (n = write(g.backend, out + echoed,
		    got - echoed)) > 0)
			echoed += (size_t)n;
		rig_settle(&g);
		back_got += drain(g.client, back + back_got, N - back_got);
	}
	ck_assert_mem_eq(in, out, N);
	ck_assert_mem_eq(in, back, N);
	ck_assert_uint_eq(g.r.bytes[RELAY_CLIENT], N);
	ck_assert_uint_eq(g.r.bytes[RELAY_BACKEND], N);
	/* Idle again: no buffer held either way. */
	ck_assert_ptr_null(g.r.buf[0]);
	ck_assert_ptr_null(g.r.buf[1]);
	rig_free(&g);
	free(in);
	free(out);
	free(back);
}
END_TEST

START_TEST(slow_reader_stalls_without_growing)
{
	static unsigned char chunk[4096];
	struct rig g;
	size_t written = 0;
	ssize_t n;

	rig_init(&g);
	relay_run(&g.r);
	/* The backend never reads: the client's data must stop at the
	 * kernel buffers plus one relay buffer of CAP bytes. */
	for (int i = 0; i < 2000; i++) {
		if ((n = write(g.client, chunk, sizeof(chunk))) > 0)
			written += (size_t)n;
		rig_settle(&g);
	}
	ck_assert_uint_le(relay_buffered(&g.r), CAP);
	ck_assert_uint_gt(written, 0);
	ck_assert_int_eq(relay_interest(&g.r, RELAY_CLIENT) & RELAY_WANT_READ, 0);
	ck_assert_int_ne(relay_interest(&g.r, RELAY_BACKEND) & RELAY_WANT_WRITE, 0);
	rig_free(&g);
}
END_TEST

START_TEST(half_close_each_way)
{
	unsigned char buf[64];
	struct rig g;

	rig_init(&g);
	relay_run(&g.r);
	ck_assert_int_eq(write(g.client, "request", 7), 7);
	shutdown(g.client, SHUT_WR);
	ck_assert_int_eq(rig_settle(&g), RELAY_OK);
	ck_assert_uint_eq(drain(g.backend, buf, sizeof(buf)), 7);
	/* The backend sees EOF but may still answer. */
	ck_assert_int_eq(read(g.backend, buf, sizeof(buf)), 0);
	ck_assert_int_eq(write(g.backend, "response after eof", 18), 18);
	ck_assert_int_eq(rig_settle(&g), RELAY_OK);
	ck_assert_uint_eq(drain(g.client, buf, sizeof(buf)), 18);
	ck_assert_mem_eq(buf, "response after eof", 18);
	shutdown(g.backend, SHUT_WR);
	ck_assert_int_eq(rig_settle(&g), RELAY_DONE);
	/* The last half-close is left to the owner's close(2). */
	ck_assert_int_eq(read(g.client, buf, sizeof(buf)), -1);
	close(g.relay_c);
	g.relay_c = -1;
	ck_assert_int_eq(read(g.client, buf, sizeof(buf)), 0);
	ck_assert_ptr_null(g.r.buf[0]);
	ck_assert_ptr_null(g.r.buf[1]);
	rig_free(&g);
}
END_TEST

START_TEST(backend_first_half_close)
{
	unsigned char buf[64];
	struct rig g;

	rig_init(&g);
	relay_run(&g.r);
	ck_assert_int_eq(write(g.backend, "banner", 6), 6);
	shutdown(g.backend, SHUT_WR);
	ck_assert_int_eq(rig_settle(&g), RELAY_OK);
	ck_assert_uint_eq(drain(g.client, buf, sizeof(buf)), 6);
	ck_assert_int_eq(read(g.client, buf, sizeof(buf)), 0);
	ck_assert_int_eq(write(g.client, "late", 4), 4);
	ck_assert_int_eq(rig_settle(&g), RELAY_OK);
	ck_assert_uint_eq(drain(g.backend, buf, sizeof(buf)), 4);
	shutdown(g.client, SHUT_WR);
	ck_assert_int_eq(rig_settle(&g), RELAY_DONE);
	rig_free(&g);
}
END_TEST

START_TEST(peer_gone_is_an_error)
{
	struct rig g;
	int st;

	rig_init(&g);
	relay_run(&g.r);
	close(g.backend);
	g.backend = open("/dev/null", O_RDONLY);
	ck_assert_int_eq(write(g.client, "data", 4), 4);
	st = rig_settle(&g);
	/* The backend's EOF half-closes the client; writing to it fails. */
	ck_assert_int_eq(st, RELAY_ERROR);
	ck_assert_ptr_nonnull(g.r.reason);
	ck_assert_msg(strncmp(g.r.reason, "backend write: ", 15) == 0,
	    "reason: %s", g.r.reason);
	rig_free(&g);
}
END_TEST

START_TEST(backend_reset_still_delivers)
{
	static unsigned char chunk[4096];
	unsigned char buf[4096];
	size_t written = 0, got = 0;
	struct rig g;
	ssize_t n;
	int st = RELAY_OK, small = 1;

	rig_init(&g);
	/* A small socket buffer towards the client, so that the relay's
	 * writes to it block often. */
	setsockopt(g.relay_c, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	relay_run(&g.r);
	/* The backend answers while the client does not read yet, so its
	 * data waits in the kernel and in the relay's buffer... */
	for (int i = 0; i < 200; i++) {
		if ((n = write(g.backend, chunk, sizeof(chunk) - 1)) > 0)
			written += (size_t)n;
		rig_settle(&g);
	}
	ck_assert_uint_gt(relay_buffered(&g.r), 0);
	/* ...when it resets: closing with unread input does that. */
	ck_assert_int_eq(write(g.client, "request", 7), 7);
	rig_settle(&g);
	close(g.backend);
	g.backend = open("/dev/null", O_RDONLY);
	/* All it sent before still reaches the client; then the relay ends
	 * on the reset, without half-closing the client: the stream was cut
	 * short, not ended. */
	for (int i = 0; i < 1000000 && st == RELAY_OK; i++) {
		/* A slow reader: the relay's writes to the client block now
		 * and then, with data still in its buffer. */
		if ((n = read(g.client, buf, 7)) > 0)
			got += (size_t)n;
		/* One step at a time: the dead backend socket always polls
		 * as hung up, so rig_settle() would never return. */
		if ((st = rig_step(&g)) == -1)
			st = RELAY_OK;
	}
	got += drain(g.client, buf, sizeof(buf));
	ck_assert_int_eq(st, RELAY_ERROR);
	ck_assert_uint_eq(got, written);
	ck_assert_str_eq(g.r.reason, "backend read: Connection reset by peer");
	ck_assert_int_eq(g.r.backend_failed, 1);
	ck_assert_int_eq(read(g.client, buf, sizeof(buf)), -1);
	rig_free(&g);
}
END_TEST

/* The daemon's way: one edge-triggered epoll registration per socket,
 * with EPOLLRDHUP, events mapped as libevent maps them, plus the trouble
 * bit epoll_view adds. Returns the status, or -1 if no event came. */
static int
rig_step_et(struct rig *g, int ep)
{
	struct epoll_event ev[2];
	int n = epoll_wait(ep, ev, 2, 0);

	for (int i = 0; i < n; i++) {
		uint32_t e = ev[i].events;
		/* As libevent 2.1 reports them: an error, or a hang-up
		 * without the FIN, as both directions and nothing else;
		 * epoll_view adds the trouble. */
		int trouble = (e & (EPOLLHUP | EPOLLERR)) ? RELAY_TROUBLE : 0;
		int what = ((e & EPOLLERR) ||
		    ((e & EPOLLHUP) && !(e & EPOLLRDHUP))) ?
		    RELAY_WANT_READ | RELAY_WANT_WRITE | trouble :
		    ((e & EPOLLIN) ? RELAY_WANT_READ : 0) |
		    ((e & EPOLLOUT) ? RELAY_WANT_WRITE : 0) |
		    ((e & EPOLLRDHUP) ? RELAY_HUP : 0) | trouble;

		relay_ready(&g->r, (enum relay_side)ev[i].data.u32, what);
	}
	return n > 0 ? (int)relay_run(&g->r) : -1;
}

static int
rig_epoll(struct rig *g)
{
	int ep = epoll_create1(0);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP |
	    EPOLLET };

	ck_assert_int_ge(ep, 0);
	ev.data.u32 = RELAY_CLIENT;
	ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, g->relay_c, &ev), 0);
	ev.data.u32 = RELAY_BACKEND;
	ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, g->relay_b, &ev), 0);
	return ep;
}

/* A short read leaves the socket marked empty without a read that would
 * return EAGAIN; the next edge, and a FIN that came with data (which
 * raises no edge of its own afterwards), are still seen. */
START_TEST(short_reads_under_edge_triggered_events)
{
	unsigned char buf[64];
	struct rig g;
	int ep;

	rig_init_cap(&g, 64);
	ep = rig_epoll(&g);
	ck_assert_int_eq(rig_step_et(&g, ep), RELAY_OK);
	ck_assert_int_eq(write(g.client, "hello", 5), 5);
	ck_assert_int_eq(rig_step_et(&g, ep), RELAY_OK);
	ck_assert_uint_eq(drain(g.backend, buf, sizeof(buf)), 5);
	/* Marked empty by the short read itself. */
	ck_assert_int_eq(g.r.end[RELAY_CLIENT].read_blocked, RELAY_WANT_READ);
	/* Data and FIN before the relay looks: both arrive. */
	ck_assert_int_eq(write(g.client, "world", 5), 5);
	shutdown(g.client, SHUT_WR);
	ck_assert_int_eq(rig_step_et(&g, ep), RELAY_OK);
	ck_assert_uint_eq(drain(g.backend, buf, sizeof(buf)), 5);
	ck_assert_mem_eq(buf, "world", 5);
	/* The short read reached the FIN: no read to learn the EOF. */
	ck_assert_int_eq(g.r.end[RELAY_CLIENT].at_fin, 1);
	ck_assert_int_eq(g.r.end[RELAY_CLIENT].read_eof, 1);
	ck_assert_int_eq(read(g.backend, buf, sizeof(buf)), 0);
	/* Data, a pass that empties the socket, then the FIN alone. */
	ck_assert_int_eq(write(g.backend, "reply", 5), 5);
	ck_assert_int_eq(rig_step_et(&g, ep), RELAY_OK);
	ck_assert_uint_eq(drain(g.client, buf, sizeof(buf)), 5);
	ck_assert_int_eq(g.r.end[RELAY_BACKEND].read_eof, 0);
	shutdown(g.backend, SHUT_WR);
	ck_assert_int_eq(rig_step_et(&g, ep), RELAY_DONE);
	close(ep);
	rig_free(&g);
}
END_TEST

/* rig_init_tcp is rig_init_cap with a TCP connection for the backend. */
static void
rig_init_tcp(struct rig *g, size_t cap)
{
	int b[2];

	rig_init_cap(g, cap);
	tcp_pair(b);
	close(g->relay_b);
	close(g->backend);
	g->relay_b = b[0];
	g->backend = b[1];
	nonblock(b[0]);
	nonblock(b[1]);
	relay_init(&g->r, g->pool, g->relay_c, NULL, g->relay_b);
}

static int
nodelay(int fd)
{
	int v = -1;
	socklen_t len = sizeof(v);

	ck_assert_int_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
	return v;
}

/* A TCP backend gets TCP_NODELAY just before the relay's second write to
 * it, never later. */
START_TEST(nodelay_before_the_second_write)
{
	unsigned char buf[64];
	struct rig g;

	rig_init_tcp(&g, 64);
	relay_nodelay_later(&g.r, RELAY_BACKEND);
	relay_run(&g.r);
	ck_assert_int_eq(write(g.client, "first", 5), 5);
	ck_assert_int_eq(rig_settle(&g), RELAY_OK);
	ck_assert_int_eq(nodelay(g.relay_b), 0);
	ck_assert_int_eq(write(g.client, "second", 6), 6);
	ck_assert_int_eq(rig_settle(&g), RELAY_OK);
	ck_assert_int_ne(nodelay(g.relay_b), 0);
	usleep(20000);
	ck_assert_uint_eq(drain(g.backend, buf, sizeof(buf)), 11);
	ck_assert_mem_eq(buf, "firstsecond", 11);
	rig_free(&g);
}
END_TEST

/* A backend that sends, then resets, before the relay looks: libevent
 * shows the event as plain readability (and writability), epoll_view
 * adds the trouble; a short read takes the bytes, and the reset must
 * still be read rather than waited for, since no later edge will come. */
START_TEST(reset_after_data_is_read_not_awaited)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	unsigned char buf[64];
	int ep, st = RELAY_OK, n;
	struct rig g;

	rig_init_tcp(&g, 64);
	ep = rig_epoll(&g);
	ck_assert_int_eq(rig_step_et(&g, ep), RELAY_OK);
	ck_assert_int_eq(write(g.backend, "partial", 7), 7);
	ck_assert_int_eq(setsockopt(g.backend, SOL_SOCKET, SO_LINGER, &lg,
	    sizeof(lg)), 0);
	usleep(20000);
	close(g.backend);
	g.backend = -1;
	usleep(20000);
	while (st == RELAY_OK && (n = rig_step_et(&g, ep)) != -1)
		st = n;
	ck_assert_int_eq(st, RELAY_ERROR);
	ck_assert_int_eq(g.r.backend_failed, 1);
	ck_assert_uint_eq(drain(g.client, buf, sizeof(buf)), 7);
	close(ep);
	rig_free(&g);
}
END_TEST

/* The relay has ended the backend's input (the client's FIN went on)
 * when the backend's last bytes and its FIN arrive together, as a
 * hang-up: the short read of those bytes must go on to the EOF rather
 * than wait for an edge. */
START_TEST(fin_after_our_shutdown_is_read_not_awaited)
{
	unsigned char buf[64];
	int ep, st = RELAY_OK, n;
	struct rig g;

	rig_init_tcp(&g, 64);
	ep = rig_epoll(&g);
	ck_assert_int_eq(write(g.client, "req", 3), 3);
	shutdown(g.client, SHUT_WR);
	ck_assert_int_eq(rig_step_et(&g, ep), RELAY_OK);
	usleep(20000);
	ck_assert_uint_eq(drain(g.backend, buf, sizeof(buf)), 3);
	ck_assert_int_eq(read(g.backend, buf, sizeof(buf)), 0);
	ck_assert_int_eq(write(g.backend, "tail", 4), 4);
	shutdown(g.backend, SHUT_WR);
	usleep(20000);
	while (st == RELAY_OK && (n = rig_step_et(&g, ep)) != -1)
		st = n;
	ck_assert_int_eq(st, RELAY_DONE);
	ck_assert_uint_eq(drain(g.client, buf, sizeof(buf)), 4);
	ck_assert_mem_eq(buf, "tail", 4);
	/* Its FIN is the close(2) that RELAY_DONE leads to. */
	ck_assert_int_eq(g.r.end[RELAY_CLIENT].write_shut, 1);
	close(ep);
	rig_free(&g);
}
END_TEST

/* Found by fuzz_relay: with a one-byte buffer, a full buffer the other
 * side could not take was "compacted" in place, which moved nothing but
 * counted as progress, so relay_run never returned. */
START_TEST(one_byte_buffer_stalls_without_spinning)
{
	enum { N = 2000 };
	unsigned char in[N], out[N];
	size_t sent = 0, got = 0;
	struct rig g;
	ssize_t n;

	for (size_t i = 0; i < N; i++)
		in[i] = (unsigned char)(i * 7);
	rig_init_cap(&g, 1);
	relay_run(&g.r);
	/* One byte per send fills the client's socket with small packets
	 * long before N bytes: the relay must then wait, not spin. */
	while (sent < N && (n = write(g.backend, in + sent, N - sent)) > 0)
		sent += (size_t)n;
	ck_assert_uint_eq(sent, N);
	ck_assert_int_eq(rig_settle(&g), RELAY_OK);
	ck_assert_uint_le(relay_buffered(&g.r), 1);
	while (got < N) {
		got += drain(g.client, out + got, N - got);
		ck_assert_int_eq(rig_settle(&g), RELAY_OK);
	}
	ck_assert_mem_eq(in, out, N);
	rig_free(&g);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("relay");
	TCase *tc = tcase_create("socketpairs");

	tcase_add_test(tc, bytes_both_ways_intact);
	tcase_add_test(tc, slow_reader_stalls_without_growing);
	tcase_add_test(tc, half_close_each_way);
	tcase_add_test(tc, backend_first_half_close);
	tcase_add_test(tc, peer_gone_is_an_error);
	tcase_add_test(tc, backend_reset_still_delivers);
	tcase_add_test(tc, one_byte_buffer_stalls_without_spinning);
	tcase_add_test(tc, short_reads_under_edge_triggered_events);
	tcase_add_test(tc, nodelay_before_the_second_write);
	tcase_add_test(tc, reset_after_data_is_read_not_awaited);
	tcase_add_test(tc, fin_after_our_shutdown_is_read_not_awaited);
	suite_add_tcase(s, tc);
	return check_run(s);
}
