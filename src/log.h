/* log.h: leveled logging to stderr and the per-connection access log. */
#ifndef TLSPROXY_LOG_H
#define TLSPROXY_LOG_H

#include <stddef.h>
#include <stdint.h>

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

/* log_prefix writes into |buf| what log_msg puts before a line at |level|
 * (a timestamp and the level, or the journal's "<N>") and returns its
 * length. */
size_t log_prefix(char *buf, size_t buf_len, enum log_level level);

/* The access log. Workers hand their lines to a buffer of their own and
 * never wait; one writer thread takes them from there to the target every
 * 50 ms or so. When the target stalls, buffers fill up and further lines
 * are dropped and counted instead. */

/* log_access_open directs the access log to |target|: NULL or "stderr" for
 * standard error (each line with the prefix of log_msg), "syslog" for
 * syslog(3) (ident "tlsproxy", facility daemon, priority info) or an
 * absolute path, a file the lines are appended to. The first call starts
 * the writer thread. Lines logged after it returns go to the new target,
 * unless the writer is stuck writing to the old one: the switch waits for
 * it no longer than a quarter of a second. The old target is closed once
 * the writer is done with it. Returns 0, or -1 with errno set and the
 * previous target kept. Call it from one thread. */
int log_access_open(const char *target);

/* log_access_reopen opens the current file target again by its path, so
 * that after a rename (log rotation) new lines go to a new file. It does
 * nothing for stderr and syslog; if the file cannot be opened it says so
 * with log_msg and keeps writing to the old one. */
void log_access_reopen(void);

/* log_access queues one access-log line (without trailing newline; longer
 * than 2047 bytes is cut) for the writer. It takes no lock and makes no
 * system call, except the first time a thread calls it and, once, when the
 * thread's buffer passes half full. Lines are dropped while the access log
 * is not open and counted as dropped when the buffer is full. Any number of
 * threads may call it. */
void log_access(const char *line, size_t line_len);

/* log_access_dropped returns how many lines have been dropped since the
 * start because a buffer was full or the target failed. */
uint64_t log_access_dropped(void);

/* log_access_flush writes every queued line to the target now and returns
 * when that is done (or has failed). */
void log_access_flush(void);

/* log_access_close writes every queued line, stops the writer thread,
 * closes the target and frees every buffer. Call it once the threads that
 * log have stopped; lines they send afterwards are dropped. */
void log_access_close(void);

#endif
