/* epoll_view under a real libevent loop: what libevent reports as plain
 * readability is told apart from a reset or a hang-up. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "../check_run.h"
#include "epoll_view.h"
#include "loopback.h"

struct seen {
	int calls;
	short what;
	int troubled;
};

static void
record(evutil_socket_t fd, short what, void *arg)
{
	struct seen *s = arg;

	s->calls++;
	s->what = what;
	s->troubled = epoll_view_troubled(fd);
}

/* pass runs one pass of |base| after the kernel has settled, and drains
 * what the socket holds. */
static void
pass(struct event_base *base, int fd)
{
	char buf[64];

	usleep(20000);
	event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	while (read(fd, buf, sizeof(buf)) > 0)
		continue;
}

/* watch connects |p|, watches p[0] on |base| as the daemon watches its
 * sockets, attaches the view and runs the pass that reports the new
 * socket's writability. */
static struct event *
watch(struct event_base *base, struct seen *s, int p[2])
{
	struct event *ev;

	tcp_pair(p);
	nonblock(p[0]);
	ev = event_new(base, p[0], EV_READ | EV_WRITE | EV_CLOSED |
	    EV_PERSIST | EV_ET, record, s);
	event_add(ev, NULL);
	epoll_view_attach();
	pass(base, p[0]);
	ck_assert_int_eq(s->calls, 1);
	ck_assert_int_eq(s->troubled, 0);
	return ev;
}

START_TEST(reset_told_from_data)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct event_base *base = event_base_new();
	struct seen s = { 0 };
	int p[2];
	struct event *ev = watch(base, &s, p);

	/* Plain data: readable, and no trouble. */
	ck_assert_int_eq(write(p[1], "data", 4), 4);
	pass(base, p[0]);
	ck_assert_int_eq(s.calls, 2);
	ck_assert(s.what & EV_READ);
	ck_assert_int_eq(s.troubled, 0);
	/* Data, then a reset, before the loop looks: libevent shows only
	 * readability and writability, the view the trouble. */
	ck_assert_int_eq(write(p[1], "more", 4), 4);
	ck_assert_int_eq(setsockopt(p[1], SOL_SOCKET, SO_LINGER, &lg,
	    sizeof(lg)), 0);
	close(p[1]);
	pass(base, p[0]);
	ck_assert_int_eq(s.calls, 3);
	ck_assert_int_eq(s.what & (EV_READ | EV_WRITE | EV_CLOSED),
	    EV_READ | EV_WRITE);
	ck_assert_int_eq(s.troubled, 1);
	epoll_view_detach();
	event_free(ev);
	event_base_free(base);
	close(p[0]);
}
END_TEST

/* The FIN after our own shutdown is a hang-up: libevent shows it as the
 * FIN (EV_CLOSED), the view as trouble. */
START_TEST(hangup_after_our_shutdown)
{
	struct event_base *base = event_base_new();
	struct seen s = { 0 };
	int p[2];
	struct event *ev = watch(base, &s, p);

	shutdown(p[0], SHUT_WR);
	ck_assert_int_eq(write(p[1], "last", 4), 4);
	shutdown(p[1], SHUT_WR);
	pass(base, p[0]);
	ck_assert(s.what & EV_CLOSED);
	ck_assert_int_eq(s.troubled, 1);
	epoll_view_detach();
	event_free(ev);
	event_base_free(base);
	close(p[0]);
	close(p[1]);
}
END_TEST

/* registered says whether any epoll set of this process has |fd|, as
 * /proc/self/fdinfo lists them. */
static int
registered(int fd)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int found = 0;

	ck_assert_ptr_nonnull(d);
	while (!found && (e = readdir(d)) != NULL) {
		char path[320], target[64], line[256];
		ssize_t n;
		FILE *f;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		if ((n = readlink(path, target, sizeof(target) - 1)) < 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, "anon_inode:[eventpoll]") != 0)
			continue;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%s", e->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		while (!found && fgets(line, sizeof(line), f) != NULL)
			found = strncmp(line, "tfd:", 4) == 0 &&
			    atoi(line + 4) == fd;
		fclose(f);
	}
	closedir(d);
	return found;
}

/* A closed socket leaves the epoll set by itself, so its DEL is skipped;
 * a copy held elsewhere (here a dup, in life a child being spawned)
 * keeps it there, which is why a spawn makes closes DEL again. */
START_TEST(close_skips_the_del_unless_spawning)
{
	struct event_base *base = event_base_new();
	struct seen s = { 0 };
	struct event *ev;
	int p[2], copy;

	tcp_pair(p);
	ev = event_new(base, p[0], EV_READ | EV_WRITE | EV_CLOSED |
	    EV_PERSIST | EV_ET, record, &s);
	event_add(ev, NULL);
	ck_assert_int_eq(registered(p[0]), 1);
	copy = dup(p[0]);
	epoll_view_close(p[0], ev);
	ck_assert_int_eq(registered(p[0]), 1);
	close(copy);
	ck_assert_int_eq(registered(p[0]), 0);
	event_free(ev);

	p[0] = dup(p[1]);
	ev = event_new(base, p[0], EV_READ | EV_PERSIST | EV_ET, record, &s);
	event_add(ev, NULL);
	copy = dup(p[0]);
	epoll_view_spawn_lock();
	epoll_view_close(p[0], ev);
	epoll_view_spawn_unlock();
	ck_assert_int_eq(registered(p[0]), 0);
	close(copy);
	event_free(ev);
	event_base_free(base);
	close(p[1]);
}
END_TEST

/* A thread that has not attached, or a pass the view did not see,
 * answers "troubled": the safe side. */
START_TEST(unknown_is_troubled)
{
	ck_assert_int_eq(epoll_view_troubled(0), 1);
	epoll_view_attach();
	ck_assert_int_eq(epoll_view_troubled(0), 1);
	epoll_view_detach();
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("epoll_view");
	TCase *tc = tcase_create("libevent");

	tcase_add_test(tc, reset_told_from_data);
	tcase_add_test(tc, hangup_after_our_shutdown);
	tcase_add_test(tc, unknown_is_troubled);
	tcase_add_test(tc, close_skips_the_del_unless_spawning);
	suite_add_tcase(s, tc);
	return check_run(s);
}
