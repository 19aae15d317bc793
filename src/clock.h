/* clock.h: the clocks the daemon reads, in the units it needs. */
#ifndef TLSPROXY_CLOCK_H
#define TLSPROXY_CLOCK_H

#include <stdint.h>
#include <time.h>

/* clock_mono_ns is a monotonic clock for durations and timeouts. */
static inline uint64_t
clock_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* clock_mono_ms is clock_mono_ns in milliseconds. */
static inline uint64_t
clock_mono_ms(void)
{
	return clock_mono_ns() / 1000000;
}

/* clock_wall_ms is the time of day, for what other hosts compare. */
static inline uint64_t
clock_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#endif
