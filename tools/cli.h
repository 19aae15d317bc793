/* cli.h: the small pieces both test tools need: number parsing, a
 * monotonic clock and a raised descriptor limit. Header-only because each
 * tool is a single file. */
#ifndef TLSPROXY_TOOLS_CLI_H
#define TLSPROXY_TOOLS_CLI_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

/* cli_parse_u64 parses a plain decimal number; returns 0 or -1. */
static inline int
cli_parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* cli_now_ms is a monotonic clock in milliseconds. */
static inline uint64_t
cli_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* cli_raise_nofile lifts the soft descriptor limit to the hard one:
 * thousands of connections are the point of these tools. */
static inline void
cli_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

#endif
