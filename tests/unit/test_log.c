/* The access log: lines from many threads arrive whole and in order, a
 * stalled target costs dropped lines and never a blocked caller, and the
 * target can be reopened and switched while lines flow. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../check_run.h"
#include "log.h"

#define NUM_THREADS 4
#define LINES_PER_THREAD 10000
#define STALL_LINES 20000
#define STALL_AFTER_SWITCH 100

static char dir[512];

/* scratch returns |name| in a directory of this test run. */
static const char *
scratch(const char *name)
{
	static char path[4][600];
	static int next;
	char *p = path[next++ % 4];

	if (dir[0] == '\0') {
		const char *base = getenv("TLSPROXY_TEST_TMP");

		if (base == NULL)
			base = "/tmp";
		mkdir(base, 0700);
		snprintf(dir, sizeof(dir), "%s/log.%d", base, (int)getpid());
		ck_assert(mkdir(dir, 0700) == 0 || errno == EEXIST);
	}
	snprintf(p, sizeof(path[0]), "%s/%s", dir, name);
	return p;
}

/* slurp returns the contents of |path|, NUL-terminated, or "" if none. */
static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	size_t len = 0, cap = 4096, n;
	char *buf = malloc(cap);

	ck_assert_ptr_nonnull(buf);
	while (f != NULL && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len < 2) {
			cap *= 2;
			buf = realloc(buf, cap);
			ck_assert_ptr_nonnull(buf);
		}
	}
	if (f != NULL)
		fclose(f);
	buf[len] = '\0';
	return buf;
}

static size_t
count_lines(const char *s)
{
	size_t n = 0;

	for (; (s = strchr(s, '\n')) != NULL; s++)
		n++;
	return n;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static int
thread_line(char *buf, size_t buf_len, int thread, int seq)
{
	return snprintf(buf, buf_len, "thread=%d seq=%05d conn id=%d "
	    "client=127.0.0.1:443 reason=\"done\"", thread, seq,
	    thread * LINES_PER_THREAD + seq);
}

static void *
log_thread(void *arg)
{
	int thread = (int)(intptr_t)arg;
	char line[128];

	for (int seq = 0; seq < LINES_PER_THREAD; seq++) {
		int n = thread_line(line, sizeof(line), thread, seq);

		log_access(line, (size_t)n);
		/* Bursts a quarter of the ring apart: the test is about whole
		 * lines in order, not about outrunning the writer. */
		if (seq % 250 == 249)
			sleep_ms(2);
	}
	return NULL;
}

START_TEST(threads_lines_whole_and_in_order)
{
	const char *path = scratch("threads.log");
	pthread_t t[NUM_THREADS];
	int next[NUM_THREADS] = { 0 };
	uint64_t deadline;
	char *text, *p, *nl;

	unlink(path);
	ck_assert_int_eq(log_access_open(path), 0);
	for (int i = 0; i < NUM_THREADS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, log_thread,
		    (void *)(intptr_t)i), 0);
	for (int i = 0; i < NUM_THREADS; i++)
		pthread_join(t[i], NULL);
	ck_assert_msg(log_access_dropped() == 0, "%llu lines dropped",
	    (unsigned long long)log_access_dropped());
	/* No flush: the writer thread alone gets every line out, including
	 * those of threads that have exited. */
	deadline = now_ns() + 5000000000u;
	for (;;) {
		text = slurp(path);
		if (count_lines(text) == NUM_THREADS * LINES_PER_THREAD ||
		    now_ns() > deadline)
			break;
		free(text);
		sleep_ms(20);
	}
	ck_assert_uint_eq(count_lines(text), NUM_THREADS * LINES_PER_THREAD);
	for (p = text; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		char want[128];
		int thread = -1, seq = -1, n;

		ck_assert_int_eq(sscanf(p, "thread=%d seq=%d", &thread, &seq),
		    2);
		ck_assert(thread >= 0 && thread < NUM_THREADS);
		ck_assert_int_eq(seq, next[thread]);
		n = thread_line(want, sizeof(want), thread, next[thread]++);
		ck_assert_int_eq(nl - p, n);
		ck_assert(memcmp(p, want, (size_t)n) == 0);
	}
	for (int i = 0; i < NUM_THREADS; i++)
		ck_assert_int_eq(next[i], LINES_PER_THREAD);
	free(text);
	log_access_close();
	ck_assert_uint_eq(log_access_dropped(), 0);
}
END_TEST

struct reader {
	int fd;
	char *buf;
	size_t len;
};

/* read_all reads the FIFO until its last writer closes it. */
static void *
read_all(void *arg)
{
	struct reader *rd = arg;
	size_t cap = 1 << 20;
	ssize_t n;

	rd->buf = malloc(cap);
	while (rd->buf != NULL) {
		if (cap - rd->len < 65536) {
			cap *= 2;
			rd->buf = realloc(rd->buf, cap);
			if (rd->buf == NULL)
				break;
		}
		n = read(rd->fd, rd->buf + rd->len, cap - rd->len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		rd->len += (size_t)n;
	}
	if (rd->buf != NULL)
		rd->buf[rd->len] = '\0';
	return NULL;
}

static int
stall_line(char *buf, size_t buf_len, int seq)
{
	return snprintf(buf, buf_len, "stall seq=%06d %.80s", seq,
	    "................................................................"
	    "................................................................");
}

/* check_stall_lines checks that every line of |text| is whole, with a
 * sequence number above |*last|, and returns how many there are. */
static size_t
check_stall_lines(const char *text, int *last)
{
	size_t n = 0;
	const char *nl;

	for (const char *p = text; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		char want[128];
		int seq = -1, len;

		ck_assert_int_eq(sscanf(p, "stall seq=%d", &seq), 1);
		ck_assert_int_gt(seq, *last);
		len = stall_line(want, sizeof(want), seq);
		ck_assert_int_eq(nl - p, len);
		ck_assert(memcmp(p, want, (size_t)len) == 0);
		*last = seq;
		n++;
	}
	return n;
}

/* log_stall_lines logs lines |from| to |to| and returns the longest time
 * one call took. */
static uint64_t
log_stall_lines(int from, int to)
{
	uint64_t worst = 0;
	char line[128];

	for (int seq = from; seq < to; seq++) {
		int n = stall_line(line, sizeof(line), seq);
		uint64_t start = now_ns(), took;

		log_access(line, (size_t)n);
		took = now_ns() - start;
		if (took > worst)
			worst = took;
	}
	return worst;
}

START_TEST(stalled_target_drops_and_counts)
{
	const char *fifo = scratch("stall.fifo"), *file = scratch("stall.log");
	struct reader rd = { 0 };
	pthread_t reader;
	uint64_t worst, later, dropped, start;
	int total = STALL_LINES + STALL_AFTER_SWITCH, last = -1;
	size_t in_fifo, in_file;
	char *text;

	unlink(fifo);
	unlink(file);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	/* A reader that exists but never reads: opening the write end does
	 * not block, writing to it does once the pipe is full. */
	rd.fd = open(fifo, O_RDONLY | O_NONBLOCK);
	ck_assert_int_ge(rd.fd, 0);
	ck_assert_int_eq(log_access_open(fifo), 0);

	worst = log_stall_lines(0, STALL_LINES / 2);
	/* Long enough for the writer to be stuck in write(2) by now. */
	sleep_ms(200);
	later = log_stall_lines(STALL_LINES / 2, STALL_LINES);
	if (later > worst)
		worst = later;
	ck_assert_msg(worst < 50000000u, "a call took %llu us",
	    (unsigned long long)(worst / 1000));
	dropped = log_access_dropped();
	/* 2 MB against a 64 KiB pipe and a 256 KiB ring. */
	ck_assert_msg(dropped > STALL_LINES / 2, "%llu dropped",
	    (unsigned long long)dropped);

	/* A reload does not wait for the stuck writer. */
	start = now_ns();
	ck_assert_int_eq(log_access_open(file), 0);
	ck_assert_uint_lt(now_ns() - start, 2000000000u);

	/* Once the FIFO is read, the writer finishes with it, and what is
	 * left in the ring goes to the new target; so do the next lines. */
	ck_assert_int_eq(fcntl(rd.fd, F_SETFL, 0), 0);
	ck_assert_int_eq(pthread_create(&reader, NULL, read_all, &rd), 0);
	log_access_flush();
	worst = log_stall_lines(STALL_LINES, total);
	ck_assert_uint_lt(worst, 50000000u);
	log_access_close();
	/* The writer let go of the FIFO: the reader has seen its end. */
	pthread_join(reader, NULL);
	close(rd.fd);
	ck_assert_ptr_nonnull(rd.buf);
	in_fifo = check_stall_lines(rd.buf, &last);
	text = slurp(file);
	in_file = check_stall_lines(text, &last);
	ck_assert_uint_gt(in_fifo, 0);
	ck_assert_uint_ge(in_file, STALL_AFTER_SWITCH);
	ck_assert_int_eq(last, total - 1);
	ck_assert_uint_eq(in_fifo + in_file + log_access_dropped(),
	    (uint64_t)total);
	free(text);
	free(rd.buf);
	unlink(fifo);
}
END_TEST

static void
log_str(const char *s)
{
	log_access(s, strlen(s));
}

START_TEST(reopen_after_rename)
{
	const char *path = scratch("rotate.log");
	const char *old = scratch("rotate.log.1");
	char *a, *b;

	unlink(path);
	unlink(old);
	ck_assert_int_eq(log_access_open(path), 0);
	log_str("before rotation");
	log_access_flush();
	ck_assert_int_eq(rename(path, old), 0);
	/* The path cannot be opened: the old file keeps the lines. */
	ck_assert_int_eq(mkdir(path, 0700), 0);
	log_access_reopen();
	log_str("reopen failed");
	log_access_flush();
	ck_assert_int_eq(rmdir(path), 0);
	log_access_reopen();
	log_str("after rotation");
	log_access_flush();
	a = slurp(old);
	b = slurp(path);
	ck_assert_str_eq(a, "before rotation\nreopen failed\n");
	ck_assert_str_eq(b, "after rotation\n");
	free(a);
	free(b);
	log_access_close();
}
END_TEST

START_TEST(switch_file_stderr_file)
{
	const char *path = scratch("switch.log");
	const char *err_path = scratch("switch.stderr");
	int saved = dup(STDERR_FILENO);
	int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	char *text, *err;

	unlink(path);
	ck_assert_int_ge(err_fd, 0);
	ck_assert_int_ge(dup2(err_fd, STDERR_FILENO), 0);
	ck_assert_int_eq(log_access_open(path), 0);
	log_str("to the file");
	log_access_flush();
	ck_assert_int_eq(log_access_open("stderr"), 0);
	log_str("to stderr");
	log_access_flush();
	/* A failed open keeps the target. */
	ck_assert_int_eq(log_access_open("/nonexistent/dir/access.log"), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(log_access_open("access.log"), -1);
	ck_assert_int_eq(errno, EINVAL);
	log_str("still stderr");
	log_access_flush();
	ck_assert_int_eq(log_access_open(path), 0);
	log_str("back to the file");
	log_access_close();
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(err_fd);
	text = slurp(path);
	err = slurp(err_path);
	ck_assert_str_eq(text, "to the file\nback to the file\n");
	/* On stderr a line carries the prefix of the other messages. */
	ck_assert_msg(strstr(err, "info: to stderr\n") != NULL ||
	    strstr(err, "<6>to stderr\n") != NULL, "stderr: %s", err);
	ck_assert_ptr_nonnull(strstr(err, "still stderr\n"));
	ck_assert_ptr_null(strstr(err, "file\n"));
	free(text);
	free(err);
}
END_TEST

START_TEST(lines_outside_open_and_close_are_dropped)
{
	const char *path = scratch("closed.log");
	char *text;

	unlink(path);
	log_str("before any open");
	log_access_close();
	ck_assert_int_eq(log_access_open(path), 0);
	log_str("first opening");
	log_access_close();
	log_str("after close");
	/* Opening again gives this thread a new ring. */
	ck_assert_int_eq(log_access_open("syslog"), 0);
	ck_assert_int_eq(log_access_open(path), 0);
	log_str("second opening");
	log_access_close();
	log_access_close();
	text = slurp(path);
	ck_assert_str_eq(text, "first opening\nsecond opening\n");
	free(text);
}
END_TEST

START_TEST(long_lines_are_cut)
{
	const char *path = scratch("long.log");
	char line[5000];
	char *text;

	unlink(path);
	memset(line, 'x', sizeof(line));
	ck_assert_int_eq(log_access_open(path), 0);
	log_access(line, sizeof(line));
	log_access_close();
	text = slurp(path);
	ck_assert_uint_eq(strlen(text), 2048);
	ck_assert_int_eq(text[2046], 'x');
	ck_assert_int_eq(text[2047], '\n');
	free(text);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("access log");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, threads_lines_whole_and_in_order);
	tcase_add_test(tc, stalled_target_drops_and_counts);
	tcase_add_test(tc, reopen_after_rename);
	tcase_add_test(tc, switch_file_stderr_file);
	tcase_add_test(tc, lines_outside_open_and_close_are_dropped);
	tcase_add_test(tc, long_lines_are_cut);
	suite_add_tcase(s, tc);
	return check_run(s);
}
