/* fuzz_ech.c: libFuzzer target for the ech key file parser (PEM blocks,
 * the PKCS#8 X25519 key, the ECHConfigList and each ECHConfig in it).
 * A file that parses has at least one config and no reason; one that
 * does not has a reason. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ech.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	size_t num = 99;

	memset(err, 0, sizeof(err));
	if (ech_check(data, size, &num, err, sizeof(err)) == 0) {
		if (num == 0 || err[0] != '\0')
			abort();
	} else if (num != 0 || err[0] == '\0' || memchr(err, '\0',
	    sizeof(err)) == NULL) {
		abort();
	}
	return 0;
}
