/* The access log: lines from many threads arrive whole and in order, a
 * stalled target costs dropped lines and never a blocked caller, and the
 * target can be reopened and switched while lines flow. Messages: a thread
 * that queues them never waits for a stalled stderr, keeps its order with
 * its access-log lines, and is held to one line a second per call site,
 * with the suppressed ones counted; other threads write at once. */
#include <check.h>
#include <errno.h>
#include <stdatomic.h>
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
#define FLOOD_LINES 100000
#define SAME_SITE_LINES 1000

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

/* capture_start points stderr at the file |name| of this run and returns
 * the descriptor to give back to capture_end. */
static int
capture_start(const char *name)
{
	int saved = dup(STDERR_FILENO);
	int fd = open(scratch(name), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND,
	    0600);

	ck_assert_int_ge(saved, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
	close(fd);
	return saved;
}

static void
capture_end(int saved)
{
	ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
	close(saved);
}

/* flat returns up to 3000 bytes of |text| on one line, for a failure
 * message: TAP takes one line. */
static const char *
flat(const char *text)
{
	static char buf[3001];
	size_t i;

	for (i = 0; i < sizeof(buf) - 1 && text[i] != '\0'; i++)
		buf[i] = text[i] == '\n' ? '|' : text[i];
	buf[i] = '\0';
	return buf;
}

static size_t
count_str(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = text; (p = strstr(p, needle)) != NULL;
	    p += strlen(needle))
		n++;
	return n;
}

/* sum_suppressed adds up the counts of suppressed messages that |text|
 * reports for lines containing |site|, in either form. */
static uint64_t
sum_suppressed(const char *text, const char *site)
{
	uint64_t sum = 0;
	const char *nl;

	for (const char *p = text; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
		char line[512];
		const char *q;
		size_t len = (size_t)(nl - p) < sizeof(line) - 1 ?
		    (size_t)(nl - p) : sizeof(line) - 1;
		unsigned long long n;

		memcpy(line, p, len);
		line[len] = '\0';
		if (strstr(line, site) == NULL)
			continue;
		if ((q = strstr(line, " similar message")) == NULL)
			continue;
		/* "... (N similar messages suppressed)" or
		 * "N similar messages suppressed after: ..." */
		while (q > line && q[-1] >= '0' && q[-1] <= '9')
			q--;
		ck_assert_int_eq(sscanf(q, "%llu", &n), 1);
		sum += n;
	}
	return sum;
}

struct flood {
	_Atomic int done;
	uint64_t took_ns;
};

static void *
flood_thread(void *arg)
{
	struct flood *f = arg;
	uint64_t start = now_ns();

	log_msg_set_queued(1);
	/* Debug lines are not rate-limited: each one is queued or
	 * dropped. */
	for (int i = 0; i < FLOOD_LINES; i++)
		log_msg(LOGL_DEBUG, "flood seq=%06d", i);
	/* Nor does the rate limit wait for anything. */
	for (int i = 0; i < FLOOD_LINES; i++)
		log_msg(LOGL_WARNING, "flood warning %d", i);
	f->took_ns = now_ns() - start;
	atomic_store(&f->done, 1);
	return NULL;
}

START_TEST(queued_messages_never_wait_for_a_full_stderr)
{
	struct flood f = { 0 };
	struct reader rd = { 0 };
	pthread_t t, reader;
	int p[2], saved, filler = 0, last = -1;
	uint64_t deadline, dropped;
	size_t lines = 0, warnings = 0;
	const char *nl;

	ck_assert_int_eq(pipe(p), 0);
	/* Fill the pipe, then let writes block: a journal that has stopped
	 * reading. */
	ck_assert_int_eq(fcntl(p[1], F_SETFL, O_NONBLOCK), 0);
	while (write(p[1], "filler\n", 7) == 7)
		filler++;
	ck_assert_int_eq(errno, EAGAIN);
	ck_assert_int_eq(fcntl(p[1], F_SETFL, 0), 0);
	saved = dup(STDERR_FILENO);
	ck_assert_int_ge(dup2(p[1], STDERR_FILENO), 0);
	log_set_level(LOGL_DEBUG);
	ck_assert_int_eq(log_access_open(scratch("flood.access")), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, flood_thread, &f), 0);
	/* A caller that blocks never comes back; give it ample time. */
	deadline = now_ns() + 10000000000u;
	while (!atomic_load(&f.done) && now_ns() < deadline)
		sleep_ms(10);
	ck_assert_msg(atomic_load(&f.done), "log_msg blocked on a full stderr");
	pthread_join(t, NULL);
	ck_assert_msg(f.took_ns < 2000000000u, "%d calls took %llu ms",
	    2 * FLOOD_LINES, (unsigned long long)(f.took_ns / 1000000));
	dropped = log_msg_dropped();
	ck_assert_msg(dropped > FLOOD_LINES / 2, "%llu dropped",
	    (unsigned long long)dropped);

	/* Once stderr is read again, what was queued comes out, whole and
	 * in order, and what was dropped is all that is missing. */
	rd.fd = p[0];
	ck_assert_int_eq(pthread_create(&reader, NULL, read_all, &rd), 0);
	log_access_close();
	ck_assert_uint_eq(log_msg_dropped(), dropped);
	ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
	close(saved);
	close(p[1]);
	pthread_join(reader, NULL);
	close(p[0]);
	ck_assert_ptr_nonnull(rd.buf);
	ck_assert_uint_eq(count_str(rd.buf, "filler\n"), (size_t)filler);
	for (const char *q = rd.buf; (nl = strchr(q, '\n')) != NULL;
	    q = nl + 1) {
		const char *m, *w;
		int seq = -1;

		if (strncmp(q, "filler\n", 7) == 0)
			continue;
		w = memmem(q, (size_t)(nl + 1 - q), "flood warning 0\n", 16);
		if (w != NULL) {
			warnings++;
			continue;
		}
		m = strstr(q, "flood seq=");
		ck_assert_msg(m != NULL && m < nl, "stray line: %.*s",
		    (int)(nl - q), q);
		ck_assert_int_eq(sscanf(m, "flood seq=%d", &seq), 1);
		ck_assert_int_eq(nl - m, 16);
		ck_assert_int_gt(seq, last);
		/* The first ones found an empty buffer. */
		if (last == -1)
			ck_assert_int_eq(seq, 0);
		last = seq;
		lines++;
	}
	/* The first warning may have found the buffer full; the count of
	 * the others comes last, from log_access_close, in the one line of
	 * |warnings| that is not the first warning. */
	ck_assert_uint_eq(sum_suppressed(rd.buf, "flood warning 0"),
	    FLOOD_LINES - 1);
	ck_assert_uint_eq(lines + (warnings - 1) + dropped, FLOOD_LINES + 1);
	free(rd.buf);
}
END_TEST

struct same_site {
	uint64_t took_ns;
	int pause_ms;
};

/* same_site_thread logs like a worker: SAME_SITE_LINES lines from one call
 * site and one line from each of two others. */
static void *
same_site_thread(void *arg)
{
	struct same_site *s = arg;
	uint64_t start = now_ns();

	log_msg_set_queued(1);
	for (int i = 0; i < SAME_SITE_LINES; i++)
		log_msg(LOGL_WARNING, "same site %d", i);
	log_msg(LOGL_WARNING, "other site");
	log_msg(LOGL_INFO, "third site %d", 3);
	s->took_ns = now_ns() - start;
	if (s->pause_ms > 0) {
		sleep_ms(s->pause_ms);
		log_msg(LOGL_WARNING, "same site %d", SAME_SITE_LINES);
	}
	return NULL;
}

START_TEST(one_line_per_second_per_call_site)
{
	struct same_site s = { 0 };
	int saved = capture_start("same.stderr");
	pthread_t t;
	char *text;

	ck_assert_int_eq(log_access_open(scratch("same.access")), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, same_site_thread, &s), 0);
	pthread_join(t, NULL);
	log_access_close();
	capture_end(saved);
	text = slurp(scratch("same.stderr"));
	/* The first line comes out as it is, the other sites too. */
	ck_assert_msg(strstr(text, "warning: same site 0\n") != NULL ||
	    strstr(text, "<4>same site 0\n") != NULL, "%s", flat(text));
	ck_assert_int_eq(count_str(text, "other site\n"), 1);
	ck_assert_int_eq(count_str(text, "third site 3\n"), 1);
	/* Every one of the others is counted, once. */
	ck_assert_uint_eq(count_str(text, "same site ") -
	    count_str(text, "after: same site ") +
	    sum_suppressed(text, "same site "), SAME_SITE_LINES);
	/* Unless this machine took most of a second for the loop, that was
	 * one line and one count. */
	if (s.took_ns < 800000000u) {
		ck_assert_int_eq(count_str(text, "same site "), 2);
		ck_assert_msg(strstr(text, "999 similar messages suppressed "
		    "after: same site 0\n") != NULL, "%s", flat(text));
	}
	free(text);
}
END_TEST

START_TEST(suppressed_count_told_when_the_second_ends)
{
	struct same_site s = { .pause_ms = 2500 };
	int saved = capture_start("end.stderr");
	const char *summary;
	pthread_t t;
	char *text = NULL;

	ck_assert_int_eq(log_access_open(scratch("end.access")), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, same_site_thread, &s), 0);
	pthread_join(t, NULL);
	/* No flush: the writer told the count within the pause, and the line
	 * after it is the next line of the site, without a count. */
	for (int i = 0; i < 100; i++) {
		text = slurp(scratch("end.stderr"));
		if (strstr(text, "same site 1000\n") != NULL)
			break;
		free(text);
		text = NULL;
		sleep_ms(20);
	}
	ck_assert_ptr_nonnull(text);
	summary = strstr(text, "similar messages suppressed after: same site ");
	ck_assert_msg(summary != NULL && summary < strstr(text,
	    "same site 1000\n"), "%s", flat(text));
	ck_assert_msg(s.took_ns > 800000000u || strstr(text,
	    "999 similar messages suppressed after: same site 0\n") != NULL,
	    "%s", flat(text));
	ck_assert_uint_eq(sum_suppressed(text, "same site "),
	    SAME_SITE_LINES + 1 - (count_str(text, "same site ") -
	    count_str(text, "after: same site ")));
	free(text);
	log_access_close();
	capture_end(saved);
}
END_TEST

START_TEST(next_line_of_the_site_carries_the_count)
{
	struct same_site s = { .pause_ms = 1100 };
	int saved = capture_start("next.stderr");
	pthread_t t;
	char *text;

	/* No writer: the thread writes its lines itself, and nobody tells
	 * the count but the next line of the site. */
	ck_assert_int_eq(pthread_create(&t, NULL, same_site_thread, &s), 0);
	pthread_join(t, NULL);
	capture_end(saved);
	text = slurp(scratch("next.stderr"));
	if (s.took_ns < 800000000u) {
		ck_assert_int_eq(count_str(text, "same site "), 2);
		ck_assert_msg(strstr(text, "same site 1000 (999 similar "
		    "messages suppressed)\n") != NULL, "%s", flat(text));
	}
	ck_assert_uint_eq(count_str(text, "same site ") +
	    sum_suppressed(text, "same site "), SAME_SITE_LINES + 1);
	free(text);
}
END_TEST

START_TEST(other_threads_write_at_once_and_unlimited)
{
	int saved = capture_start("control.stderr");
	char *text;

	ck_assert_int_eq(log_access_open(scratch("control.access")), 0);
	/* Like the control thread listing the errors of a reload. */
	for (int i = 0; i < 5; i++)
		log_msg(LOGL_ERROR, "control %d", i);
	text = slurp(scratch("control.stderr"));
	ck_assert_int_eq(count_str(text, "control "), 5);
	ck_assert_ptr_nonnull(strstr(text, "control 4\n"));
	ck_assert_ptr_null(strstr(text, "suppressed"));
	free(text);
	log_access_close();
	capture_end(saved);
}
END_TEST

static void *
ordered_thread(void *arg)
{
	char line[64];
	int n;

	(void)arg;
	log_msg_set_queued(1);
	for (int i = 0; i < 1000; i++) {
		log_msg(LOGL_DEBUG, "message %04d", i);
		n = snprintf(line, sizeof(line), "access %04d", i);
		log_access(line, (size_t)n);
		/* Bursts well below a buffer's worth. */
		if (i % 100 == 99)
			sleep_ms(5);
	}
	return NULL;
}

START_TEST(messages_and_access_lines_keep_thread_order)
{
	int saved = capture_start("order.stderr"), i = 0;
	const char *nl;
	pthread_t t;
	char *text;

	log_set_level(LOGL_DEBUG);
	ck_assert_int_eq(log_access_open("stderr"), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, ordered_thread, NULL), 0);
	pthread_join(t, NULL);
	/* Closing writes out everything that was queued. */
	log_access_close();
	capture_end(saved);
	text = slurp(scratch("order.stderr"));
	ck_assert_uint_eq(log_msg_dropped(), 0);
	for (const char *p = text; (nl = strchr(p, '\n')) != NULL;
	    p = nl + 1, i++) {
		char want[64];

		snprintf(want, sizeof(want), "%s %04d\n", i % 2 == 0 ?
		    "message" : "access", i / 2);
		ck_assert_msg(strncmp(nl + 1 - strlen(want), want,
		    strlen(want)) == 0, "line %d: %.*s", i, (int)(nl - p), p);
		/* Each with its own prefix. */
		ck_assert_msg(strstr(p, i % 2 == 0 ? "debug: " : "info: ") ==
		    p + 25 || strncmp(p, i % 2 == 0 ? "<7>" : "<6>", 3) == 0,
		    "line %d: %.*s", i, (int)(nl - p), p);
	}
	ck_assert_int_eq(i, 2000);
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
	tc = tcase_create("messages");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, queued_messages_never_wait_for_a_full_stderr);
	tcase_add_test(tc, one_line_per_second_per_call_site);
	tcase_add_test(tc, suppressed_count_told_when_the_second_ends);
	tcase_add_test(tc, next_line_of_the_site_carries_the_count);
	tcase_add_test(tc, other_threads_write_at_once_and_unlimited);
	tcase_add_test(tc, messages_and_access_lines_keep_thread_order);
	suite_add_tcase(s, tc);
	return check_run(s);
}
