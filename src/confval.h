/* confval.h: parsers for the value types of tlsproxy.conf. Each returns 0 and
 * sets |*out|, or returns -1 and leaves |*out| alone. */
#ifndef TLSPROXY_CONFVAL_H
#define TLSPROXY_CONFVAL_H

#include <stdint.h>

/* confval_duration parses "250ms", "30s", "10m", "12h", "1d"; a bare
 * number means seconds. The result is in milliseconds. */
int confval_duration(const char *s, uint64_t *out_ms);

/* confval_size parses "512", "16k", "64KiB", "4m", "1g" (powers of 1024). */
int confval_size(const char *s, uint64_t *out_bytes);

/* confval_bool parses yes/no, true/false, on/off, 1/0 (any case). */
int confval_bool(const char *s, int *out);

/* confval_int parses a decimal integer within [min, max]. */
int confval_int(const char *s, int64_t min, int64_t max, int64_t *out);

#endif
