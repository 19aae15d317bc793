/* log.c: leveled logging to stderr. The access log is in log_access.c. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

static _Atomic int log_max = LOGL_INFO;

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
log_msg(enum log_level level, const char *fmt, ...)
{
	char buf[2048];
	size_t off;
	va_list ap;
	int n;

	if (!log_enabled(level))
		return;
	off = log_prefix(buf, sizeof(buf), level);
	va_start(ap, fmt);
	n = vsnprintf(buf + off, sizeof(buf) - off - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	off += (size_t)n;
	if (off > sizeof(buf) - 2)
		off = sizeof(buf) - 2;
	buf[off++] = '\n';
	log_write_all(STDERR_FILENO, buf, off);
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
