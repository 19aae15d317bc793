/* log_access.c: the access log, and the writer thread that also carries
 * the messages of threads that must not wait for standard error. Every
 * thread that logs fills a ring buffer of its own, without locks or system
 * calls; one writer thread empties the rings into the targets. A target
 * that stalls (a full or hung disk, a pipe nobody reads, a journal that
 * pushes back) stalls only the writer: the rings fill up, and further lines
 * are dropped and counted while the connections go on. */
#include "log.h"
#include "thread.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* Per thread: some 800 lines of the usual 300 bytes, what a worker closing
 * 16,000 connections a second logs between two rounds of the writer. A
 * power of two, so that a position maps to an offset with a mask. */
#define ALOG_RING_SIZE (256 * 1024)
/* How often the writer empties the rings when nobody wakes it. */
#define ALOG_PERIOD_MS 50
/* The longest line kept, newline included. */
#define ALOG_LINE_MAX 2048
/* Before each line in a ring: its length and what it is. */
#define ALOG_HDR_LEN 4
/* How long a change of target waits for a write under way. */
#define ALOG_SWITCH_WAIT_MS 250

_Static_assert((ALOG_RING_SIZE & (ALOG_RING_SIZE - 1)) == 0,
    "the ring size is a power of two");
/* A line with its prefix fits in one write that a pipe keeps whole. */
_Static_assert(ALOG_LINE_MAX + 64 <= PIPE_BUF, "a line fits in PIPE_BUF");
/* A record's header holds its length in 16 bits. */
_Static_assert(ALOG_LINE_MAX <= 0xffff, "a line's length fits its header");

enum alog_kind {
	ALOG_STDERR,
	ALOG_SYSLOG,
	ALOG_FILE,
};

/* What a line in a ring is. One ring holds both, so that a thread's
 * message and its access-log line reach standard error in the order the
 * thread wrote them. */
enum alog_rec {
	/* For the access-log target, which decides on a prefix. */
	ALOG_REC_ACCESS,
	/* From log_msg, prefix included: always to standard error. */
	ALOG_REC_MSG,
};

/* A target outlives its replacement for as long as the writer still uses
 * it; the last reference closes the file. */
struct alog_target {
	enum alog_kind kind;
	int fd;
	char *path;
	int refs; /* under alog.mu */
};

/* A single-producer, single-consumer ring. Positions only grow; the bytes
 * from tail to head are whole records: a header of ALOG_HDR_LEN bytes (the
 * line's length, and its enum alog_rec above that) and a line ending in a
 * newline. Lengths rather than newlines delimit them, so that whatever a
 * line holds, the next record is found. The producer's and the
 * writer's fields sit on cache lines of their own, so that the two do not
 * steal the line from each other on every call. */
struct alog_ring {
	/* Written by the producer. */
	alignas(64) _Atomic size_t head;
	_Atomic uint64_t dropped;
	_Atomic uint64_t msg_dropped;
	/* Set by the producer, reset by the writer. */
	_Atomic int wake_sent;
	/* Written by the writer. */
	alignas(64) _Atomic size_t tail;
	/* Set before the ring is published. */
	struct alog_ring *next;
	char buf[];
};

static struct {
	/* Guards the target and its references, ring registration, start and
	 * stop. Never held across a write. */
	pthread_mutex_t mu;
	/* Held by whoever empties the rings: the writer or log_access_flush. */
	pthread_mutex_t drain_mu;
	struct alog_target *target;
	/* Newest first. Rings are only added while open, so the writer walks
	 * the list without a lock. */
	_Atomic(struct alog_ring *) rings;
	/* 0 while closed, else different at every opening: a thread that
	 * remembers a ring from an earlier one knows it is gone. */
	_Atomic unsigned epoch;
	unsigned num_opens;
	_Atomic int stop;
	/* Lines lost to the target or to a failed allocation, and the drops
	 * of rings already freed; the same for messages. */
	_Atomic uint64_t dropped;
	_Atomic uint64_t msg_dropped;
	int wake_fd;
	int syslog_open;
	int failing; /* under drain_mu */
	pthread_t writer;
} alog = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.drain_mu = PTHREAD_MUTEX_INITIALIZER,
	.wake_fd = -1,
};

static _Thread_local struct alog_ring *alog_mine;
static _Thread_local unsigned alog_mine_epoch;

/* A ring's lines are copied out here (under drain_mu), which frees the ring
 * before the write that may take long. */
static char alog_scratch[ALOG_RING_SIZE];

/* Whole lines gathered for one write(2). On standard error a write is at
 * most PIPE_BUF bytes, which a pipe never splits or mixes with a write of
 * another thread (log_msg's own, for one); a file takes larger ones. For
 * each line it keeps where it ends and what it is, to count the lines a
 * failed write loses. Under drain_mu. */
#define ALOG_OUT_SIZE (64 * 1024)
#define ALOG_OUT_LINES 4096

struct alog_out {
	int fd;
	size_t cap;
	size_t len;
	size_t num_lines;
	char buf[ALOG_OUT_SIZE];
	uint32_t end[ALOG_OUT_LINES];
	uint8_t rec[ALOG_OUT_LINES];
	/* Lines lost, by enum alog_rec, and errno of the last failure. */
	size_t lost[2];
	int err;
};

/* One for standard error, one for an access-log file. */
static struct alog_out alog_out_err, alog_out_file;

static struct alog_target *
alog_target_new(const char *name)
{
	struct alog_target *t = calloc(1, sizeof(*t));
	int err;

	if (t == NULL)
		return NULL;
	t->refs = 1;
	t->fd = STDERR_FILENO;
	if (name == NULL || strcmp(name, "stderr") == 0)
		return t;
	if (strcmp(name, "syslog") == 0) {
		t->kind = ALOG_SYSLOG;
		t->fd = -1;
		pthread_mutex_lock(&alog.mu);
		/* The connection belongs to the process: it stays open until
		 * log_access_close, even once another target replaces this
		 * one. */
		openlog("tlsproxy", LOG_NDELAY | LOG_PID, LOG_DAEMON);
		alog.syslog_open = 1;
		pthread_mutex_unlock(&alog.mu);
		return t;
	}
	/* A relative path would change meaning with the working directory
	 * between opening and reopening. */
	if (name[0] != '/') {
		free(t);
		errno = EINVAL;
		return NULL;
	}
	t->kind = ALOG_FILE;
	t->path = strdup(name);
	if (t->path == NULL) {
		free(t);
		return NULL;
	}
	t->fd = open(name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (t->fd < 0) {
		err = errno;
		free(t->path);
		free(t);
		errno = err;
		return NULL;
	}
	return t;
}

static struct alog_target *
alog_target_get(void)
{
	struct alog_target *t;

	pthread_mutex_lock(&alog.mu);
	t = alog.target;
	if (t != NULL)
		t->refs++;
	pthread_mutex_unlock(&alog.mu);
	return t;
}

static void
alog_target_put(struct alog_target *t)
{
	int last;

	if (t == NULL)
		return;
	pthread_mutex_lock(&alog.mu);
	last = --t->refs == 0;
	pthread_mutex_unlock(&alog.mu);
	if (!last)
		return;
	if (t->kind == ALOG_FILE)
		close(t->fd);
	free(t->path);
	free(t);
}

static const char *
alog_target_name(const struct alog_target *t)
{
	switch (t->kind) {
	case ALOG_SYSLOG:
		return "syslog";
	case ALOG_FILE:
		return t->path;
	default:
		return "stderr";
	}
}

/* alog_switch makes |t| the target. It waits for a round of the writer
 * under way, so that lines logged after the switch never reach the old
 * target, but not for long: a writer stuck on a stalled target must not
 * hold up a reload. */
static void
alog_switch(struct alog_target *t)
{
	struct alog_target *old;
	struct timespec until;
	int locked;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += ALOG_SWITCH_WAIT_MS * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	locked = pthread_mutex_timedlock(&alog.drain_mu, &until) == 0;
	pthread_mutex_lock(&alog.mu);
	old = alog.target;
	alog.target = t;
	pthread_mutex_unlock(&alog.mu);
	if (locked)
		pthread_mutex_unlock(&alog.drain_mu);
	alog_target_put(old);
}

static struct alog_ring *
alog_ring_new(unsigned epoch)
{
	struct alog_ring *r = aligned_alloc(alignof(struct alog_ring),
	    sizeof(*r) + ALOG_RING_SIZE);

	if (r == NULL)
		return NULL;
	atomic_init(&r->head, 0);
	atomic_init(&r->dropped, 0);
	atomic_init(&r->msg_dropped, 0);
	atomic_init(&r->wake_sent, 0);
	atomic_init(&r->tail, 0);
	pthread_mutex_lock(&alog.mu);
	if (atomic_load(&alog.epoch) != epoch) {
		pthread_mutex_unlock(&alog.mu);
		free(r);
		return NULL;
	}
	r->next = atomic_load_explicit(&alog.rings, memory_order_relaxed);
	atomic_store_explicit(&alog.rings, r, memory_order_release);
	pthread_mutex_unlock(&alog.mu);
	alog_mine = r;
	alog_mine_epoch = epoch;
	return r;
}

static void
alog_ring_put(struct alog_ring *r, size_t pos, const char *src, size_t len)
{
	size_t off = pos & (ALOG_RING_SIZE - 1);
	size_t first = len < ALOG_RING_SIZE - off ? len : ALOG_RING_SIZE - off;

	memcpy(r->buf + off, src, first);
	memcpy(r->buf, src + first, len - first);
}

static void
alog_ring_get(const struct alog_ring *r, size_t pos, char *dst, size_t len)
{
	size_t off = pos & (ALOG_RING_SIZE - 1);
	size_t first = len < ALOG_RING_SIZE - off ? len : ALOG_RING_SIZE - off;

	memcpy(dst, r->buf + off, first);
	memcpy(dst + first, r->buf, len - first);
}

/* alog_drop counts a line of |rec| that did not fit in |r|. Only the
 * ring's thread writes these counters, so a plain increment is enough;
 * readers only need an untorn value. */
static void
alog_drop(struct alog_ring *r, enum alog_rec rec)
{
	_Atomic uint64_t *n = rec == ALOG_REC_MSG ? &r->msg_dropped :
	    &r->dropped;

	atomic_store_explicit(n, atomic_load_explicit(n, memory_order_relaxed) +
	    1, memory_order_relaxed);
}

/* alog_push queues |line| of |rec| (|nl|: add a newline) in the calling
 * thread's ring. Returns 0 when it is queued or counted as dropped, -1
 * when no writer runs. */
static int
alog_push(enum alog_rec rec, const char *line, size_t line_len, int nl)
{
	unsigned epoch = atomic_load_explicit(&alog.epoch,
	    memory_order_acquire);
	struct alog_ring *r = alog_mine;
	size_t head, tail, len = line_len + (nl ? 1 : 0);
	uint32_t hdr;

	if (epoch == 0)
		return -1;
	if (r == NULL || alog_mine_epoch != epoch) {
		r = alog_ring_new(epoch);
		if (r == NULL) {
			atomic_fetch_add(rec == ALOG_REC_MSG ? &alog.msg_dropped :
			    &alog.dropped, 1);
			return 0;
		}
	}
	head = atomic_load_explicit(&r->head, memory_order_relaxed);
	/* Acquire: the writer is done with the bytes it gave back. */
	tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	if (ALOG_RING_SIZE - (head - tail) < ALOG_HDR_LEN + len) {
		alog_drop(r, rec);
		return 0;
	}
	hdr = (uint32_t)len | (uint32_t)rec << 16;
	alog_ring_put(r, head, (const char *)&hdr, ALOG_HDR_LEN);
	alog_ring_put(r, head + ALOG_HDR_LEN, line, line_len);
	if (nl)
		alog_ring_put(r, head + ALOG_HDR_LEN + line_len, "\n", 1);
	head += ALOG_HDR_LEN + len;
	/* Release: the writer sees the bytes no later than the position. */
	atomic_store_explicit(&r->head, head, memory_order_release);
	if (head - tail > ALOG_RING_SIZE / 2 &&
	    !atomic_load_explicit(&r->wake_sent, memory_order_relaxed)) {
		/* One wake-up until the writer has been here: while it is
		 * stuck, a full ring costs no system calls. */
		atomic_store_explicit(&r->wake_sent, 1, memory_order_relaxed);
		eventfd_write(alog.wake_fd, 1);
	}
	return 0;
}

void
log_access(const char *line, size_t line_len)
{
	if (line_len > ALOG_LINE_MAX - 1)
		line_len = ALOG_LINE_MAX - 1;
	alog_push(ALOG_REC_ACCESS, line, line_len, 1);
}

int
log_access_queue_msg(const char *line, size_t line_len)
{
	/* Cut like an access-log line, keeping the newline. */
	if (line_len > ALOG_LINE_MAX)
		return alog_push(ALOG_REC_MSG, line, ALOG_LINE_MAX - 1, 1);
	return alog_push(ALOG_REC_MSG, line, line_len, 0);
}

/* alog_write_all returns how many bytes of |buf| reached |fd|: all of them
 * unless the target failed, with errno saying why. */
static size_t
alog_write_all(int fd, const char *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n = write(fd, buf + off, len - off);

		if (n > 0) {
			off += (size_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			/* Someone made the descriptor non-blocking (stderr may
			 * be shared); wait as a blocking one would. */
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			poll(&pfd, 1, -1);
		} else if (n == 0 || errno != EINTR) {
			if (n == 0)
				errno = EIO;
			break;
		}
	}
	return off;
}

/* alog_out_flush writes the gathered lines and counts those that did not
 * get out whole as lost. */
static void
alog_out_flush(struct alog_out *o)
{
	size_t n;

	if (o->len == 0)
		return;
	n = alog_write_all(o->fd, o->buf, o->len);
	if (n < o->len) {
		o->err = errno;
		for (size_t i = 0; i < o->num_lines; i++) {
			if (o->end[i] > n)
				o->lost[o->rec[i]]++;
		}
	}
	o->len = 0;
	o->num_lines = 0;
}

/* alog_out_add appends |prefix| and |line| (which ends in a newline) as
 * one line of |rec|, writing out what was gathered first if both do not
 * fit. */
static void
alog_out_add(struct alog_out *o, const char *prefix, size_t prefix_len,
    const char *line, size_t line_len, enum alog_rec rec)
{
	if (o->len + prefix_len + line_len > o->cap ||
	    o->num_lines == ALOG_OUT_LINES)
		alog_out_flush(o);
	memcpy(o->buf + o->len, prefix, prefix_len);
	memcpy(o->buf + o->len + prefix_len, line, line_len);
	o->len += prefix_len + line_len;
	o->end[o->num_lines] = (uint32_t)o->len;
	o->rec[o->num_lines++] = (uint8_t)rec;
}

static void
alog_out_start(struct alog_out *o, int fd, size_t cap)
{
	o->fd = fd;
	o->cap = cap;
	o->len = 0;
	o->num_lines = 0;
	o->lost[ALOG_REC_ACCESS] = 0;
	o->lost[ALOG_REC_MSG] = 0;
	o->err = 0;
}

/* alog_report says once when the target starts failing and once when it
 * works again, rather than once per round. */
static void
alog_report(const struct alog_target *t, size_t lost, int err)
{
	if (lost > 0) {
		atomic_fetch_add(&alog.dropped, lost);
		if (!alog.failing)
			log_msg(LOGL_ERROR, "access log: cannot write to %s: "
			    "%s; dropping lines until it works again",
			    alog_target_name(t), strerror(err));
		alog.failing = 1;
	} else if (alog.failing) {
		log_msg(LOGL_INFO, "access log: writing to %s again",
		    alog_target_name(t));
		alog.failing = 0;
	}
}

/* alog_drain_ring moves the lines of |r| to their targets: messages to
 * standard error, access-log lines to |t|. Under drain_mu. */
static void
alog_drain_ring(struct alog_ring *r, const struct alog_target *t)
{
	size_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	size_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	size_t len = head - tail, pos = 0, num_access = 0;
	char prefix[64];
	size_t prefix_len = 0;

	if (len == 0)
		return;
	alog_ring_get(r, tail, alog_scratch, len);
	atomic_store_explicit(&r->tail, head, memory_order_release);
	if (atomic_load_explicit(&r->wake_sent, memory_order_relaxed))
		atomic_store_explicit(&r->wake_sent, 0, memory_order_relaxed);
	if (t->kind == ALOG_STDERR) {
		prefix_len = log_prefix(prefix, sizeof(prefix), LOGL_INFO);
		if (prefix_len >= sizeof(prefix))
			prefix_len = sizeof(prefix) - 1;
	}
	alog_out_start(&alog_out_err, STDERR_FILENO, PIPE_BUF);
	alog_out_start(&alog_out_file, t->fd, ALOG_OUT_SIZE);
	while (pos < len) {
		uint32_t hdr;
		size_t line_len;
		char *line;

		memcpy(&hdr, alog_scratch + pos, ALOG_HDR_LEN);
		line_len = hdr & 0xffff;
		line = alog_scratch + pos + ALOG_HDR_LEN;
		pos += ALOG_HDR_LEN + line_len;
		if ((enum alog_rec)(hdr >> 16) == ALOG_REC_MSG) {
			alog_out_add(&alog_out_err, "", 0, line, line_len,
			    ALOG_REC_MSG);
			continue;
		}
		num_access++;
		switch (t->kind) {
		case ALOG_SYSLOG:
			/* syslog(3) reports no failure, so none is lost as
			 * far as we can tell. */
			syslog(LOG_INFO, "%.*s", (int)(line_len - 1), line);
			break;
		case ALOG_FILE:
			alog_out_add(&alog_out_file, "", 0, line, line_len,
			    ALOG_REC_ACCESS);
			break;
		default:
			alog_out_add(&alog_out_err, prefix, prefix_len, line,
			    line_len, ALOG_REC_ACCESS);
			break;
		}
	}
	alog_out_flush(&alog_out_err);
	alog_out_flush(&alog_out_file);
	atomic_fetch_add(&alog.msg_dropped, alog_out_err.lost[ALOG_REC_MSG]);
	if (num_access > 0)
		alog_report(t, alog_out_err.lost[ALOG_REC_ACCESS] +
		    alog_out_file.lost[ALOG_REC_ACCESS], alog_out_file.lost[
		    ALOG_REC_ACCESS] > 0 ? alog_out_file.err : alog_out_err.err);
}

void
log_access_flush(void)
{
	struct alog_target *t;

	pthread_mutex_lock(&alog.drain_mu);
	t = alog_target_get();
	if (t != NULL) {
		for (struct alog_ring *r = atomic_load_explicit(&alog.rings,
		    memory_order_acquire); r != NULL; r = r->next)
			alog_drain_ring(r, t);
	}
	pthread_mutex_unlock(&alog.drain_mu);
	alog_target_put(t);
}

static void *
alog_writer_main(void *arg)
{
	struct pollfd pfd = { .fd = alog.wake_fd, .events = POLLIN };
	eventfd_t n;

	(void)arg;
	while (!atomic_load(&alog.stop)) {
		if (poll(&pfd, 1, ALOG_PERIOD_MS) > 0)
			eventfd_read(alog.wake_fd, &n);
		log_access_flush();
		/* Here rather than in a timer of some worker: a count of
		 * suppressed messages must come out when their flood ends. */
		log_msg_report_suppressed(0);
	}
	return NULL;
}

/* alog_start starts the writer unless it runs. Under alog.mu. */
static int
alog_start(void)
{
	int rc;

	if (atomic_load(&alog.epoch) != 0)
		return 0;
	alog.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (alog.wake_fd < 0)
		return -1;
	atomic_store(&alog.stop, 0);
	/* Blocked, SIGPIPE from a target whose reader went away also
	 * becomes a plain EPIPE. */
	rc = thread_create(&alog.writer, NULL, alog_writer_main, NULL);
	if (rc != 0) {
		close(alog.wake_fd);
		alog.wake_fd = -1;
		errno = rc;
		return -1;
	}
	if (++alog.num_opens == 0)
		alog.num_opens = 1;
	atomic_store(&alog.epoch, alog.num_opens);
	return 0;
}

int
log_access_open(const char *target)
{
	struct alog_target *t = alog_target_new(target);
	int rc, err;

	if (t == NULL)
		return -1;
	pthread_mutex_lock(&alog.mu);
	rc = alog_start();
	err = errno;
	pthread_mutex_unlock(&alog.mu);
	if (rc != 0) {
		alog_target_put(t);
		errno = err;
		return -1;
	}
	alog_switch(t);
	return 0;
}

void
log_access_reopen(void)
{
	struct alog_target *cur = alog_target_get(), *t;
	char *path = NULL;

	if (cur != NULL && cur->kind == ALOG_FILE)
		path = strdup(cur->path);
	alog_target_put(cur);
	if (path == NULL)
		return;
	t = alog_target_new(path);
	if (t == NULL)
		log_msg(LOGL_ERROR, "access log: cannot reopen %s: %s; still "
		    "writing to the file opened before", path, strerror(errno));
	else
		alog_switch(t);
	free(path);
}

uint64_t
log_msg_dropped(void)
{
	uint64_t n = atomic_load(&alog.msg_dropped);

	for (struct alog_ring *r = atomic_load_explicit(&alog.rings,
	    memory_order_acquire); r != NULL; r = r->next)
		n += atomic_load_explicit(&r->msg_dropped, memory_order_relaxed);
	return n;
}

uint64_t
log_access_dropped(void)
{
	uint64_t n = atomic_load(&alog.dropped);

	for (struct alog_ring *r = atomic_load_explicit(&alog.rings,
	    memory_order_acquire); r != NULL; r = r->next)
		n += atomic_load_explicit(&r->dropped, memory_order_relaxed);
	return n;
}

void
log_access_close(void)
{
	struct alog_ring *r, *next;
	struct alog_target *t;

	pthread_mutex_lock(&alog.mu);
	if (atomic_load(&alog.epoch) == 0) {
		pthread_mutex_unlock(&alog.mu);
		return;
	}
	/* From here on log_access drops lines instead of touching a ring. */
	atomic_store(&alog.epoch, 0);
	pthread_mutex_unlock(&alog.mu);
	atomic_store(&alog.stop, 1);
	eventfd_write(alog.wake_fd, 1);
	pthread_join(alog.writer, NULL);
	log_access_flush();
	for (r = atomic_exchange(&alog.rings, NULL); r != NULL; r = next) {
		next = r->next;
		atomic_fetch_add(&alog.dropped, atomic_load(&r->dropped));
		atomic_fetch_add(&alog.msg_dropped,
		    atomic_load(&r->msg_dropped));
		free(r);
	}
	pthread_mutex_lock(&alog.mu);
	t = alog.target;
	alog.target = NULL;
	if (alog.syslog_open)
		closelog();
	alog.syslog_open = 0;
	pthread_mutex_unlock(&alog.mu);
	alog_target_put(t);
	close(alog.wake_fd);
	alog.wake_fd = -1;
	/* Floods that had not ended yet: their counts come last. */
	log_msg_report_suppressed(1);
}
