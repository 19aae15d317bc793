/* fuzz_tickets.c: libFuzzer target for the ticket-key file parser.
 *
 * The input is parsed three ways:
 * - as a key file, as it is. A file that parses holds at least one key;
 *   raw keys are the file's bytes, 48 at a time; base64 keys each take a
 *   line of at least 64 characters, and each shows up, encoded, in the
 *   file. A file that does not parse gives a reason and no keys.
 * - its bytes, 48 at a time (at most the 64 keys a file may hold), written
 *   as base64 lines between comments, blank lines, blanks and CRLF
 *   endings the later bytes choose: the same keys come back.
 * - the same keys as a raw file: they come back too, unless every byte
 *   happens to be printable, which reads as text.
 * Files are at most 16 KiB, as tickets_load_file reads them. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/base64.h>

#include "tickets.h"

#define FILE_MAX 16384
#define KEYS_MAX 64

static uint8_t file[FILE_MAX * 2];

static void
check_failed(int rc, const struct ticket_ring *r, const char *err)
{
	if (rc != -1 || r->keys != NULL || r->num != 0 || err[0] == '\0' ||
	    memchr(err, '\0', 256) == NULL)
		abort();
}

static void
check_as_is(const uint8_t *data, size_t size)
{
	struct ticket_ring r;
	char err[256];
	int rc;

	err[0] = '\0';
	rc = tickets_parse(data, size, &r, err, sizeof(err));
	if (rc != 0) {
		check_failed(rc, &r, err);
		return;
	}
	if (r.num == 0 || r.keys == NULL)
		abort();
	if (r.num * TICKET_KEY_LEN == size &&
	    memcmp(r.keys, data, size) == 0) {
		tickets_ring_free(&r);
		return;
	}
	/* Otherwise it was read as text: one key per line. */
	if (r.num * 65 > size + 1)
		abort();
	for (size_t i = 0; i < r.num; i++) {
		uint8_t line[80];
		size_t n = EVP_EncodeBlock(line, (const uint8_t *)&r.keys[i],
		    TICKET_KEY_LEN);

		if (n != 64 || memmem(data, size, line, n) == NULL)
			abort();
	}
	tickets_ring_free(&r);
	if (r.keys != NULL || r.num != 0)
		abort();
}

/* check_ring compares a parsed ring with the first |num| keys of |keys|. */
static void
check_ring(const uint8_t *text, size_t len, const uint8_t *keys, size_t num)
{
	struct ticket_ring r;
	char err[256];

	err[0] = '\0';
	if (tickets_parse(text, len, &r, err, sizeof(err)) != 0)
		abort();
	if (r.num != num || memcmp(r.keys, keys, num * TICKET_KEY_LEN) != 0)
		abort();
	tickets_ring_free(&r);
}

/* check_base64 writes the keys in |data| as a base64 file, decorated as
 * the bytes after them say. */
static void
check_base64(const uint8_t *data, size_t size)
{
	size_t num = size / TICKET_KEY_LEN, len = 0;
	const uint8_t *deco = data + num * TICKET_KEY_LEN;
	size_t deco_len = size - num * TICKET_KEY_LEN;

	if (num > KEYS_MAX)
		num = KEYS_MAX;
	if (num == 0)
		return;
	for (size_t i = 0; i < num; i++) {
		uint8_t d = deco_len > 0 ? deco[i % deco_len] : 0;

		if (d & 1)
			len += (size_t)sprintf((char *)file + len,
			    "# key %zu\n", i);
		if (d & 2)
			file[len++] = '\n';
		if (d & 4)
			file[len++] = ' ';
		if (d & 8)
			file[len++] = '\t';
		len += EVP_EncodeBlock(file + len, data + i * TICKET_KEY_LEN,
		    TICKET_KEY_LEN);
		if (d & 16)
			file[len++] = ' ';
		if (d & 32)
			file[len++] = '\r';
		/* The last line may end without a newline. */
		if (i + 1 < num || (d & 64))
			file[len++] = '\n';
	}
	check_ring(file, len, data, num);
	memcpy(file, data, num * TICKET_KEY_LEN);
	for (size_t i = 0; i < num * TICKET_KEY_LEN; i++) {
		uint8_t c = file[i];

		if (!((c >= 0x20 && c < 0x7f) || c == '\n' || c == '\r' ||
		    c == '\t')) {
			check_ring(file, num * TICKET_KEY_LEN, data, num);
			break;
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > FILE_MAX)
		return 0;
	check_as_is(data, size);
	check_base64(data, size);
	return 0;
}
