/* confval.c: value parsers for tlsproxy.conf. */
#include "confval.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct unit {
	const char *name;
	uint64_t mult;
};

/* confval_number_unit splits "123unit" and scales by the matching unit. */
static int
confval_number_unit(const char *s, const struct unit *units, uint64_t bare,
    uint64_t *out)
{
	unsigned long long v;
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	while (isspace((unsigned char)*end))
		end++;
	if (*end == '\0') {
		if (bare != 0 && v > UINT64_MAX / bare)
			return -1;
		*out = v * bare;
		return 0;
	}
	for (const struct unit *u = units; u->name != NULL; u++) {
		if (strcasecmp(end, u->name) == 0) {
			if (v > UINT64_MAX / u->mult)
				return -1;
			*out = v * u->mult;
			return 0;
		}
	}
	return -1;
}

int
confval_duration(const char *s, uint64_t *out_ms)
{
	static const struct unit units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "min", 60000 },
		{ "h", 3600000 }, { "d", 86400000 }, { NULL, 0 },
	};

	return confval_number_unit(s, units, 1000, out_ms);
}

int
confval_size(const char *s, uint64_t *out_bytes)
{
	static const struct unit units[] = {
		{ "b", 1 }, { "k", 1024 }, { "kb", 1024 }, { "kib", 1024 },
		{ "m", 1024 * 1024 }, { "mb", 1024 * 1024 },
		{ "mib", 1024 * 1024 }, { "g", 1024ULL * 1024 * 1024 },
		{ "gb", 1024ULL * 1024 * 1024 }, { "gib", 1024ULL * 1024 * 1024 },
		{ NULL, 0 },
	};

	return confval_number_unit(s, units, 1, out_bytes);
}

int
confval_bool(const char *s, int *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

int
confval_int(const char *s, int64_t min, int64_t max, int64_t *out)
{
	long long v;
	char *end;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}
