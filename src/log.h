/* log.h: leveled logging to stderr and the per-connection access log. */
#ifndef TLSPROXY_LOG_H
#define TLSPROXY_LOG_H

#include <stddef.h>

enum log_level {
	LOGL_ERROR,
	LOGL_WARNING,
	LOGL_INFO,
	LOGL_DEBUG,
};

/* log_set_level sets the most verbose level that is written. */
void log_set_level(enum log_level level);

/* log_enabled returns whether |level| is written, so callers can skip
 * formatting work. */
int log_enabled(enum log_level level);

/* log_level_parse sets |*out| from "error", "warning", "info" or "debug" and
 * returns 0, or returns -1. */
int log_level_parse(const char *s, enum log_level *out);

/* log_msg writes one line at |level| with a single write(2), so lines from
 * several threads never interleave. Under systemd's journal the line carries
 * a "<N>" priority prefix instead of a timestamp. */
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* log_ssl_error formats BoringSSL's error queue of this thread into |buf|
 * (the most recent reason first, "unknown error" when empty) and clears the
 * queue. Returns |buf|. */
const char *log_ssl_error(char *buf, size_t buf_len);

/* log_access_open directs the access log: |path| NULL for stderr, or a file
 * opened for appending. Returns 0, or -1 with errno set. */
int log_access_open(const char *path);

/* log_access_close closes an access-log file. */
void log_access_close(void);

/* log_access writes one access-log line (without trailing newline). */
void log_access(const char *line, size_t line_len);

#endif
