/* fuzz_values.c: libFuzzer target for the value parsers of tlsproxy.conf
 * (durations, sizes, booleans, integers) and for addresses.
 *
 * The whole input, up to its first NUL, is one value handed to every
 * parser. Properties:
 * - durations and sizes agree with a small reference parser written here,
 *   and a parsed value printed back in the base unit parses to itself;
 * - a boolean is accepted exactly when it is one of the documented words;
 * - an integer lies within the bounds given, and prints back to itself;
 * - an address that parses is printed without truncation, and the printed
 *   form parses to an equal address that prints the same;
 * - addr_split gives a host that fits the buffer and a port in 1..65535
 *   written in digits; put back together, they split the same way. */
#include <ctype.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "confval.h"

struct unit {
	const char *name;
	uint64_t mult;
};

static const struct unit duration_units[] = {
	{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "min", 60000 },
	{ "h", 3600000 }, { "d", 86400000 }, { NULL, 0 },
};

static const struct unit size_units[] = {
	{ "b", 1 }, { "k", 1024 }, { "kb", 1024 }, { "kib", 1024 },
	{ "m", 1 << 20 }, { "mb", 1 << 20 }, { "mib", 1 << 20 },
	{ "g", 1 << 30 }, { "gb", 1 << 30 }, { "gib", 1 << 30 },
	{ NULL, 0 },
};

/* ref_number_unit is the documented grammar, written without strtoull:
 * blanks, digits, blanks, then a unit or nothing (|bare| applies). */
static int
ref_number_unit(const char *s, const struct unit *units, uint64_t bare,
    uint64_t *out)
{
	uint64_t v = 0, mult = bare;

	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		if (__builtin_mul_overflow(v, 10, &v) ||
		    __builtin_add_overflow(v, (uint64_t)(*s - '0'), &v))
			return -1;
	}
	while (isspace((unsigned char)*s))
		s++;
	if (*s != '\0') {
		const struct unit *u;

		for (u = units; u->name != NULL; u++) {
			if (strcasecmp(s, u->name) == 0)
				break;
		}
		if (u->name == NULL)
			return -1;
		mult = u->mult;
	}
	if (__builtin_mul_overflow(v, mult, out))
		return -1;
	return 0;
}

static void
fuzz_duration(const char *s)
{
	uint64_t got = 7, want = 0, again = 0;
	char buf[32];
	int rc = confval_duration(s, &got);

	if (rc != ref_number_unit(s, duration_units, 1000, &want))
		abort();
	if (rc != 0) {
		if (got != 7)
			abort(); /* a failure leaves |*out| alone */
		return;
	}
	snprintf(buf, sizeof(buf), "%" PRIu64 "ms", got);
	if (got != want || confval_duration(buf, &again) != 0 || again != got)
		abort();
}

static void
fuzz_size(const char *s)
{
	uint64_t got = 7, want = 0, again = 0;
	char buf[32];
	int rc = confval_size(s, &got);

	if (rc != ref_number_unit(s, size_units, 1, &want))
		abort();
	if (rc != 0) {
		if (got != 7)
			abort();
		return;
	}
	snprintf(buf, sizeof(buf), "%" PRIu64, got);
	if (got != want || confval_size(buf, &again) != 0 || again != got)
		abort();
}

static void
fuzz_bool(const char *s)
{
	static const char *const words[] = { "no", "yes", "false", "true",
		"off", "on", "0", "1" };
	int got = 7, want = -1;

	for (int i = 0; i < 8; i++) {
		if (strcasecmp(s, words[i]) == 0)
			want = i & 1;
	}
	if (confval_bool(s, &got) != 0)
		got = -1;
	if (got != want)
		abort();
}

static void
fuzz_int(const char *s)
{
	/* Bounds of the key table, and the widest. */
	static const int64_t bounds[][2] = {
		{ 1, 1024 }, { 0, 15 }, { 512, 16384 }, { 0, 10000000 },
		{ 1, 100 }, { 0, 0 }, { INT64_MIN, INT64_MAX },
	};
	int64_t full = 0, v;
	int full_rc = confval_int(s, INT64_MIN, INT64_MAX, &full);

	for (size_t i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++) {
		int64_t lo = bounds[i][0], hi = bounds[i][1];
		int in = full_rc == 0 && full >= lo && full <= hi;

		v = 7;
		if (confval_int(s, lo, hi, &v) != (in ? 0 : -1))
			abort();
		if (in ? v != full : v != 7)
			abort();
	}
	if (full_rc == 0) {
		char buf[32];

		snprintf(buf, sizeof(buf), "%" PRId64, full);
		if (confval_int(buf, INT64_MIN, INT64_MAX, &v) != 0 ||
		    v != full)
			abort();
	}
}

static void
fuzz_addr(const char *s)
{
	struct addr a, b;
	char err[256], text[ADDR_STRLEN], text2[ADDR_STRLEN];

	err[0] = '\0';
	if (addr_parse(s, &a, err, sizeof(err)) != 0) {
		if (err[0] == '\0')
			abort(); /* a failure says what was expected */
		return;
	}
	if (a.len == 0 || a.len > sizeof(a.ss))
		abort();
	addr_format(&a, text, sizeof(text));
	if (strlen(text) >= sizeof(text) - 1)
		abort(); /* possibly truncated */
	if (addr_parse(text, &b, err, sizeof(err)) != 0 ||
	    !addr_equal(&a, &b) || a.len != b.len ||
	    memcmp(&a.ss, &b.ss, a.len) != 0)
		abort();
	addr_format(&b, text2, sizeof(text2));
	if (strcmp(text, text2) != 0)
		abort();
	if (addr_is_loopback(&a) != addr_is_loopback(&b))
		abort();
}

/* fuzz_split checks addr_split with a host buffer of every small size and
 * the one addr_parse uses. */
static void
fuzz_split(const char *s)
{
	static const size_t sizes[] = { 1, 2, 8, 64, 256 };
	const char *colon = strrchr(s, ':');

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char host[256], again[256], joined[600];
		unsigned port = 0, port2 = 0;

		memset(host, 0x5a, sizeof(host));
		if (addr_split(s, host, sizes[i], &port) != 0)
			continue;
		if (strlen(host) == 0 || strlen(host) >= sizes[i] ||
		    strstr(s, host) == NULL || port < 1 || port > 65535)
			abort();
		/* The port is the text after the last colon, in digits. */
		for (const char *p = colon + 1; *p != '\0'; p++) {
			if (!isdigit((unsigned char)*p))
				abort();
		}
		if (strchr(host, ':') != NULL || host[0] == '[')
			snprintf(joined, sizeof(joined), "[%s]:%u", host, port);
		else
			snprintf(joined, sizeof(joined), "%s:%u", host, port);
		if (addr_split(joined, again, sizeof(again), &port2) != 0 ||
		    strcmp(host, again) != 0 || port != port2)
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	/* Config values are single lines; nothing longer reaches a parser. */
	if (size > 4096)
		return 0;
	s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	fuzz_duration(s);
	fuzz_size(s);
	fuzz_bool(s);
	fuzz_int(s);
	fuzz_addr(s);
	fuzz_split(s);
	free(s);
	return 0;
}
