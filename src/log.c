/* log.c: leveled logging to stderr, and the rate limit of messages from
 * threads that queue them. The access log and the writer thread are in
 * log_access.c. */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "clock.h"

/* Kinds of message the rate limit tells apart: more than the call sites
 * of log_msg, so the table never fills. */
#define LOG_KINDS 512
/* One line per kind and period. */
#define LOG_KIND_PERIOD_MS 1000
/* How much of a kind's last line its summary quotes. */
#define LOG_EXCERPT_LEN 200

_Static_assert((LOG_KINDS & (LOG_KINDS - 1)) == 0,
    "the number of kinds is a power of two");

/* A kind of message is a call site of log_msg, known by its format string:
 * a flood of failed handshakes from a thousand clients is one kind however
 * the addresses differ. */
struct log_kind {
	_Atomic(const char *) fmt;
	/* Monotonic time (ms) before which lines of this kind are
	 * suppressed; 0 until the first one. */
	_Atomic uint64_t until_ms;
	/* Suppressed since the last line written or summary. */
	_Atomic uint64_t suppressed;
	/* Under log_kinds_mu: the last line written, for the summary. */
	enum log_level level;
	char excerpt[LOG_EXCERPT_LEN];
};

static struct log_kind log_kinds[LOG_KINDS];
static pthread_mutex_t log_kinds_mu = PTHREAD_MUTEX_INITIALIZER;

static _Atomic int log_max = LOGL_INFO;
/* Whether this thread hands its lines to the writer (log_msg_set_queued). */
static _Thread_local int log_queued;

static const char *const level_names[] = { "error", "warning", "info", "debug" };
/* sd-daemon(3) priorities for the journal. */
static const int level_prio[] = { 3, 4, 6, 7 };

void
log_set_level(enum log_level level)
{
	atomic_store(&log_max, level);
}

int
log_enabled(enum log_level level)
{
	return (int)level <= atomic_load_explicit(&log_max, memory_order_relaxed);
}

int
log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcasecmp(s, "warn") == 0) {
		*out = LOGL_WARNING;
		return 0;
	}
	return -1;
}

static int
log_to_journal(void)
{
	static int cached = -1;

	if (cached < 0)
		cached = getenv("JOURNAL_STREAM") != NULL;
	return cached;
}

size_t
log_prefix(char *buf, size_t buf_len, enum log_level level)
{
	struct timespec ts;
	struct tm tm;
	int n;

	if (log_to_journal())
		return (size_t)snprintf(buf, buf_len, "<%d>", level_prio[level]);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(buf, buf_len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s: ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level]);
	return n < 0 ? 0 : (size_t)n;
}

static void
log_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

void
log_msg_set_queued(int on)
{
	log_queued = on;
}

/* log_emit sends one whole line (newline included) on its way: to the
 * writer when this thread queues and the writer runs, else straight to
 * stderr in one write. */
static void
log_emit(const char *line, size_t len)
{
	if (log_queued && log_access_queue_msg(line, len) == 0)
		return;
	log_write_all(STDERR_FILENO, line, len);
}

/* log_kind_find returns the entry of |fmt|, making one if needed, or NULL
 * if the table is full (then nothing is suppressed). */
static struct log_kind *
log_kind_find(const char *fmt)
{
	/* Fibonacci hashing of the address: string literals sit a few bytes
	 * apart, the multiplication spreads them. */
	uint64_t h = (uint64_t)(uintptr_t)fmt * 0x9e3779b97f4a7c15ULL;

	for (size_t i = 0; i < LOG_KINDS; i++) {
		struct log_kind *k = &log_kinds[((h >> 40) + i) &
		    (LOG_KINDS - 1)];
		const char *cur = atomic_load_explicit(&k->fmt,
		    memory_order_acquire);

		if (cur == NULL && atomic_compare_exchange_strong(&k->fmt, &cur,
		    fmt))
			return k;
		if (cur == fmt)
			return k;
	}
	return NULL;
}

/* log_kind_admit decides whether a line of |k| is written at |now_ms|:
 * the first one is, then one per period. Returns 0 with |*out_suppressed|
 * set to the number suppressed before it, or -1 when this one is
 * suppressed (and counted). */
static int
log_kind_admit(struct log_kind *k, uint64_t now_ms, uint64_t *out_suppressed)
{
	uint64_t until = atomic_load_explicit(&k->until_ms,
	    memory_order_relaxed);

	/* Of threads that find the period over at once, one wins the
	 * exchange; the others are suppressed like the rest. */
	if (now_ms < until || !atomic_compare_exchange_strong(&k->until_ms,
	    &until, now_ms + LOG_KIND_PERIOD_MS)) {
		atomic_fetch_add_explicit(&k->suppressed, 1,
		    memory_order_relaxed);
		return -1;
	}
	*out_suppressed = atomic_exchange(&k->suppressed, 0);
	return 0;
}

/* log_kind_remember keeps the text of the line of |k| just written (after
 * the prefix, without the newline) for a later summary. */
static void
log_kind_remember(struct log_kind *k, enum log_level level, const char *text,
    size_t len)
{
	if (len >= sizeof(k->excerpt))
		len = sizeof(k->excerpt) - 1;
	pthread_mutex_lock(&log_kinds_mu);
	k->level = level;
	memcpy(k->excerpt, text, len);
	k->excerpt[len] = '\0';
	pthread_mutex_unlock(&log_kinds_mu);
}

/* The last error written directly, which a process that fails to start
 * can pass on to the one that started it. */
static pthread_mutex_t log_error_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_error_text[256];

static void
log_keep_error(const char *text, size_t len)
{
	if (len >= sizeof(log_error_text))
		len = sizeof(log_error_text) - 1;
	pthread_mutex_lock(&log_error_lock);
	memcpy(log_error_text, text, len);
	log_error_text[len] = '\0';
	pthread_mutex_unlock(&log_error_lock);
}

void
log_last_error(char *out, size_t len)
{
	if (len == 0)
		return;
	pthread_mutex_lock(&log_error_lock);
	snprintf(out, len, "%s", log_error_text);
	pthread_mutex_unlock(&log_error_lock);
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char buf[2048];
	/* Room kept for the count of suppressed lines. */
	const size_t note_max = 48;
	struct log_kind *k = NULL;
	uint64_t suppressed = 0;
	size_t off, text_off, max;
	va_list ap;
	int n;

	if (!log_enabled(level))
		return;
	/* Debug lines are asked for, one by one, by whoever is chasing a
	 * problem: they are never suppressed. */
	if (log_queued && level != LOGL_DEBUG) {
		k = log_kind_find(fmt);
		if (k != NULL && log_kind_admit(k, clock_mono_ms(),
		    &suppressed) != 0)
			return;
	}
	off = text_off = log_prefix(buf, sizeof(buf), level);
	if (off > sizeof(buf) - note_max)
		off = text_off = sizeof(buf) - note_max;
	max = sizeof(buf) - off - (suppressed > 0 ? note_max : 1);
	va_start(ap, fmt);
	n = vsnprintf(buf + off, max, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	off += (size_t)n < max ? (size_t)n : max - 1;
	if (k != NULL)
		log_kind_remember(k, level, buf + text_off, off - text_off);
	else if (level == LOGL_ERROR)
		log_keep_error(buf + text_off, off - text_off);
	if (suppressed > 0) {
		n = snprintf(buf + off, note_max, " (%llu similar message%s "
		    "suppressed)", (unsigned long long)suppressed,
		    suppressed == 1 ? "" : "s");
		if (n > 0)
			off += (size_t)n < note_max ? (size_t)n : note_max - 1;
	}
	buf[off++] = '\n';
	log_emit(buf, off);
}

void
log_msg_report_suppressed(int all)
{
	uint64_t now = clock_mono_ms();

	for (size_t i = 0; i < LOG_KINDS; i++) {
		struct log_kind *k = &log_kinds[i];
		uint64_t until = atomic_load(&k->until_ms), n;
		char buf[LOG_EXCERPT_LEN + 128];
		enum log_level level;
		size_t off;
		int len;

		if (atomic_load_explicit(&k->fmt, memory_order_relaxed) ==
		    NULL || atomic_load(&k->suppressed) == 0)
			continue;
		/* While the period lasts, the next line of the kind may still
		 * tell the count. The summary does not start a period of its
		 * own: a line of the kind that comes after the flood is news,
		 * written at once. */
		if (!all && now < until)
			continue;
		n = atomic_exchange(&k->suppressed, 0);
		if (n == 0)
			continue;
		pthread_mutex_lock(&log_kinds_mu);
		level = k->level;
		off = log_prefix(buf, sizeof(buf) - LOG_EXCERPT_LEN - 64, level);
		len = snprintf(buf + off, sizeof(buf) - off, "%llu similar "
		    "message%s suppressed after: %s\n", (unsigned long long)n,
		    n == 1 ? "" : "s", k->excerpt);
		pthread_mutex_unlock(&log_kinds_mu);
		if (len < 0)
			continue;
		off += (size_t)len < sizeof(buf) - off ? (size_t)len :
		    sizeof(buf) - off - 1;
		log_emit(buf, off);
	}
}

const char *
log_ssl_error(char *buf, size_t buf_len)
{
	uint32_t err = ERR_peek_last_error();

	if (err == 0)
		snprintf(buf, buf_len, "unknown error");
	else
		snprintf(buf, buf_len, "%s", ERR_reason_error_string(err) ?
		    ERR_reason_error_string(err) : "unknown error");
	ERR_clear_error();
	/* BoringSSL reasons are UPPER_CASE; lower case reads better in logs. */
	for (char *p = buf; *p != '\0'; p++) {
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	}
	return buf;
}
