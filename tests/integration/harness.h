/* harness.h: integration-test helpers: certificates made at test time,
 * the real daemon and backends on free loopback ports, real clients. */
#ifndef TLSPROXY_HARNESS_H
#define TLSPROXY_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

/* The per-binary scratch directory, certificates included:
 * ca.pem, leaf.pem (leaf+CA chain), leaf.key, rsa.pem/rsa.key,
 * other.key (matches nothing). */
const char *h_dir(void);

/* h_setup makes the scratch directory and certificates once per binary. */
void h_setup(const char *name);

/* h_free_port returns a TCP port that was free on 127.0.0.1 and ::1. */
int h_free_port(void);

/* h_backend starts tlsproxy-backend in |mode| (with |arg| or NULL) and
 * returns its port; it dies with the test. */
int h_backend(const char *mode, const char *arg, pid_t *out_pid);

struct h_daemon {
	pid_t pid;
	int port;
	char conf[512];
	char log[512];
	/* Open descriptors once ready; h_daemon_stop checks the daemon is
	 * back to it (no descriptor outlives its connection) unless the
	 * test stops it with connections open on purpose. */
	int base_fds;
	int open_at_stop;
	/* Remote ports of links the daemon keeps open (a session store, an
	 * OCSP responder), 0-terminated: not counted as leaks. */
	int keep_ports[4];
};

/* h_write writes |text| to a file in the scratch dir and returns its path
 * (static storage, one slot per call site is not needed: copy it). */
const char *h_write(const char *name, const char *text);

/* h_daemon_start writes a config from |fmt| (printf-style; the caller puts
 * the port and paths in) and starts tlsproxy on it, waiting until it logs
 * that it is ready. Returns 0, or -1 if it exited (log in d->log). */
int h_daemon_start(struct h_daemon *d, const char *name, const char *conf);

/* h_daemon_start_nofile is h_daemon_start with the daemon's open-file
 * limit (soft and hard) set to |nofile| instead of raised to the most
 * allowed, for tests that run it out of descriptors. */
int h_daemon_start_nofile(struct h_daemon *d, const char *name,
    const char *conf, int nofile);

/* h_daemon_stop sends SIGTERM and waits (up to |wait_ms|); returns the
 * exit status, or -1 if it had to be killed. */
int h_daemon_stop(struct h_daemon *d, int wait_ms);

/* h_simple_conf returns a one-listener config text for |port| forwarding
 * to |backend_port|, with |extra_global| lines in [global]. */
const char *h_simple_conf(int port, int backend_port, const char *extra_global);

/* h_run runs |cmd| through sh and returns its stdout (malloc'd); the exit
 * status goes to |*status| if not NULL. */
char *h_run(int *status, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* h_log_contains waits up to |wait_ms| for |needle| in the daemon log. */
int h_log_contains(const struct h_daemon *d, const char *needle, int wait_ms);

/* h_rss_kib returns the resident set of |pid| in KiB. */
long h_rss_kib(pid_t pid);

/* h_num_fds returns the number of open descriptors of |pid|. */
int h_num_fds(pid_t pid);

/* h_field returns the value of "key=value" in |line| (static storage). */
const char *h_field(const char *line, const char *key);

/* h_bin returns the path of a built program: "tlsproxy", "backend",
 * "client" or "load". */
const char *h_bin(const char *which);

/* h_has_mlkem returns whether the daemon's BoringSSL has ML-KEM (post-
 * quantum key exchange), as tlsproxy -V says: a build from Debian's
 * 2022 source has not. */
int h_has_mlkem(void);

/* h_now_ms is a monotonic clock in milliseconds. */
long long h_now_ms(void);

#endif
