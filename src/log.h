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

/* log_msg writes one line at |level|, formatted like printf. Under
 * systemd's journal the line carries a "<N>" priority prefix instead of a
 * timestamp and level. Each line reaches stderr whole, within one write(2)
 * of at most PIPE_BUF bytes, so lines from several threads never
 * interleave, and the lines of one thread stay in the order it wrote them.
 *
 * On a thread that queues its messages (log_msg_set_queued), while the
 * access-log writer runs, log_msg never waits for stderr: the line goes to
 * the thread's access-log buffer and the writer thread writes it out, some
 * 50 ms later at most unless stderr stalls; a line that does not fit is
 * dropped and counted (log_msg_dropped). Such a thread's messages are also
 * rate-limited: of the lines from one call site (known by |fmt|), the first
 * is written at once and then at most one a second. Those suppressed in
 * between are counted, and the count is told either at the end of the
 * next line from that site, as "(N similar messages suppressed)", or, when
 * the second has passed without one, by the writer in a line of its own at
 * the same level: "N similar messages suppressed after: <the last line
 * written>". Debug lines are never suppressed.
 *
 * With no writer running, such a thread writes its lines itself, rate
 * limit and all. On any other thread, log_msg writes the line itself
 * before it returns, and nothing is suppressed. */
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* log_last_error copies the last error line log_msg wrote directly (not
 * through the writer thread), without prefix; empty if none. */
void log_last_error(char *out, size_t len);

/* log_msg_set_queued sets whether the calling thread's messages go through
 * the writer thread and the rate limit (|on| nonzero) or are written at
 * once (the default). Threads that serve connections turn it on, so that a
 * stalled stderr or a flood of failures from clients neither stops them nor
 * floods the log. Threads whose messages are few and each worth seeing at
 * once, such as the control thread with startup errors, leave it off. */
void log_msg_set_queued(int on);

/* log_msg_dropped returns how many lines of log_msg have been dropped since
 * the start because a thread's buffer was full or stderr failed. Lines
 * suppressed by the rate limit are not counted here. */
uint64_t log_msg_dropped(void);

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
 * are dropped and counted instead. The same buffers and writer carry the
 * messages of threads that queue them (log_msg_set_queued) to stderr. */

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
 * closes the target and frees every buffer, then writes the counts of
 * messages suppressed since their last line. Call it once the threads that
 * log have stopped; access-log lines they send afterwards are dropped, and
 * their messages are written at once. */
void log_access_close(void);

/* Between log_msg and the writer; not for other callers. */

/* log_access_queue_msg queues |line|, a message with its prefix and
 * newline, for the writer to copy to stderr. Returns 0 when it is queued
 * or counted as dropped, or -1 when no writer runs and the caller must
 * write it itself. */
int log_access_queue_msg(const char *line, size_t line_len);

/* log_msg_report_suppressed writes a summary line for every kind of
 * message whose second has passed with lines suppressed (or, with |all|,
 * for every kind with lines suppressed). The writer calls it every round. */
void log_msg_report_suppressed(int all);

#endif
