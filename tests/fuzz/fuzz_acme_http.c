/* fuzz_acme_http.c: libFuzzer target for the acme_http listener's request
 * handling: any bytes a client sends on port 80.
 *
 * Input: a request head (NUL-terminated at the first NUL, as the listener
 * sees it), with one challenge token set beforehand.
 *
 * Properties: an answer is always produced and fits its buffer; its status
 * is 200, 301, 400 or 404; the status line says the same; only the
 * token's request gets 200; a redirect's Location is one line, starts
 * with https:// and holds no control character. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "acme_challenge.h"
#include "acme_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	char req[4096], out[2048], line[32];
	const char *loc;
	size_t n;
	int status = 0;

	if (!ready) {
		acme_challenge_set_http("fuzz-token", "fuzz-token.thumbprint");
		ready = 1;
	}
	if (size >= sizeof(req))
		size = sizeof(req) - 1;
	memcpy(req, data, size);
	req[size] = '\0';
	n = acme_http_answer(req, strlen(req), out, sizeof(out), &status);
	if (n == 0 || n >= sizeof(out) || strlen(out) != n)
		abort();
	if (status != 200 && status != 301 && status != 400 && status != 404)
		abort();
	snprintf(line, sizeof(line), "HTTP/1.1 %d ", status);
	if (strncmp(out, line, strlen(line)) != 0)
		abort();
	if (status == 200 && strstr(req, "fuzz-token") == NULL)
		abort();
	if ((loc = strstr(out, "\r\nLocation: ")) != NULL) {
		const char *end = strstr(loc + 2, "\r\n");

		if (status != 301 || strncmp(loc + 12, "https://", 8) != 0 ||
		    end == NULL)
			abort();
		for (const char *p = loc + 12; p < end; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				abort();
	}
	return 0;
}
