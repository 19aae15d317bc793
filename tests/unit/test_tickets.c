/* The ticket-key file: raw and base64 layouts, bad input, permissions,
 * the ring's encrypt/decrypt/renew behaviour, and the ring handed to a
 * new process: exported and installed again, same keys in the same
 * order. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/base64.h>
#include <openssl/cipher.h>
#include <openssl/hmac.h>

#include "../check_run.h"
#include "tickets.h"

static struct ticket_ring
parse_ok(const char *text, size_t len)
{
	struct ticket_ring r;
	char err[256] = "";

	ck_assert_msg(tickets_parse((const uint8_t *)text, len, &r, err,
	    sizeof(err)) == 0, "%s", err);
	return r;
}

static const char *
parse_err(const char *text, size_t len)
{
	static char err[256];
	struct ticket_ring r;

	err[0] = '\0';
	ck_assert_int_eq(tickets_parse((const uint8_t *)text, len, &r, err,
	    sizeof(err)), -1);
	return err;
}

static void
b64_key(uint8_t fill, char *out)
{
	uint8_t key[TICKET_KEY_LEN];

	memset(key, fill, sizeof(key));
	EVP_EncodeBlock((uint8_t *)out, key, sizeof(key));
}

START_TEST(raw_keys)
{
	uint8_t raw[96];
	struct ticket_ring r;

	for (size_t i = 0; i < sizeof(raw); i++)
		raw[i] = (uint8_t)(i * 7 + 1); /* not all text */
	r = parse_ok((const char *)raw, sizeof(raw));
	ck_assert_uint_eq(r.num, 2);
	ck_assert_mem_eq(r.keys[1].name, raw + 48, 16);
	ck_assert_mem_eq(r.keys[1].hmac, raw + 64, 16);
	ck_assert_mem_eq(r.keys[1].aes, raw + 80, 16);
	tickets_ring_free(&r);
	ck_assert_str_eq(parse_err((const char *)raw, 50), "50 bytes is not a "
	    "whole number of 48-byte keys (raw keys, or one base64 key per "
	    "line)");
}
END_TEST

START_TEST(base64_lines)
{
	char a[80], b[80], text[256];
	struct ticket_ring r;

	b64_key(0x11, a);
	b64_key(0x22, b);
	snprintf(text, sizeof(text), "# fleet keys, added 2026-11-27: next\n"
	    "%s\r\n\n  %s  \n", a, b);
	r = parse_ok(text, strlen(text));
	ck_assert_uint_eq(r.num, 2);
	ck_assert_uint_eq(r.keys[0].name[0], 0x11);
	ck_assert_uint_eq(r.keys[1].aes[15], 0x22);
	tickets_ring_free(&r);
	snprintf(text, sizeof(text), "%s\nAAAA\n", a);
	ck_assert_str_eq(parse_err(text, strlen(text)), "line 2: expected a "
	    "48-byte key in base64 (64 characters)");
	ck_assert_str_eq(parse_err("# nothing\n\n", 11), "no key in the file");
	ck_assert_str_eq(parse_err("", 0), "no key in the file");
}
END_TEST

START_TEST(file_permissions)
{
	char path[] = "/tmp/tlsproxy-tk-XXXXXX", err[512], line[128];
	struct ticket_ring r;
	int fd = mkstemp(path);

	ck_assert_int_eq(tickets_new_key_line(line, sizeof(line)), 0);
	ck_assert_uint_eq(strlen(line), 64);
	ck_assert_int_eq(write(fd, line, 64), 64);
	close(fd);
	chmod(path, 0600);
	ck_assert_int_eq(tickets_load_file(path, &r, err, sizeof(err)), 0);
	ck_assert_uint_eq(r.num, 1);
	tickets_ring_free(&r);
	chmod(path, 0644);
	ck_assert_int_eq(tickets_load_file(path, &r, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "is readable by every user; ticket keys "
	    "decrypt every session: chmod o-r it") != NULL, "%s", err);
	unlink(path);
	ck_assert_int_eq(tickets_load_file(path, &r, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "No such file or directory") != NULL, "%s",
	    err);
}
END_TEST

/* ring_cb runs the BoringSSL ticket callback the way a handshake does. */
static int
ring_cb(uint8_t name[16], uint8_t iv[16], int encrypt)
{
	EVP_CIPHER_CTX ctx;
	HMAC_CTX hmac;
	int rc;

	EVP_CIPHER_CTX_init(&ctx);
	HMAC_CTX_init(&hmac);
	rc = tickets_key_cb(NULL, name, iv, &ctx, &hmac, encrypt);
	EVP_CIPHER_CTX_cleanup(&ctx);
	HMAC_CTX_cleanup(&hmac);
	return rc;
}

START_TEST(ring_encrypts_with_first_and_renews_older)
{
	struct ticket_ring r;
	uint8_t name1[16], name2[16], iv[16], unknown[16] = { 0 };

	ck_assert_int_eq(tickets_generate(&r, 1), 0);
	tickets_install(&r, 0);
	ck_assert_int_eq(ring_cb(name1, iv, 1), 1);
	ck_assert_int_eq(ring_cb(name1, iv, 0), 1);
	/* A new first key: old tickets still decrypt and get renewed. */
	ck_assert_int_eq(tickets_rotate(2), 0);
	ck_assert_uint_eq(tickets_num(), 2);
	ck_assert_int_eq(ring_cb(name2, iv, 1), 1);
	ck_assert_mem_ne(name1, name2, 16);
	ck_assert_int_eq(ring_cb(name1, iv, 0), 2);
	ck_assert_int_eq(ring_cb(name2, iv, 0), 1);
	/* Past the kept keys, the old one is gone: a full handshake. */
	ck_assert_int_eq(tickets_rotate(2), 0);
	ck_assert_int_eq(ring_cb(name1, iv, 0), 0);
	ck_assert_int_eq(ring_cb(unknown, iv, 0), 0);
	ck_assert(!tickets_from_file());
}
END_TEST

/* ring_copy returns a copy of |r|'s keys, to compare with later. */
static struct ticket_ring
ring_copy(const struct ticket_ring *r)
{
	struct ticket_ring c = { malloc(r->num * sizeof(*r->keys)), r->num };

	ck_assert_ptr_nonnull(c.keys);
	memcpy(c.keys, r->keys, r->num * sizeof(*r->keys));
	return c;
}

START_TEST(export_and_install_again)
{
	struct ticket_ring r, installed, exported, again;
	uint8_t name[16], iv[16];

	/* Nothing in use: nothing to hand over. */
	ck_assert_int_eq(tickets_export(&exported), 0);
	ck_assert_uint_eq(exported.num, 0);
	ck_assert_ptr_null(exported.keys);

	ck_assert_int_eq(tickets_generate(&r, 3), 0);
	installed = ring_copy(&r);
	tickets_install(&r, 0);
	/* A rotation puts a key of its own first: the export must follow
	 * the ring in use, not what was installed. */
	ck_assert_int_eq(tickets_rotate(3), 0);
	ck_assert_int_eq(ring_cb(name, iv, 1), 1);
	ck_assert_int_eq(tickets_export(&exported), 0);
	ck_assert_uint_eq(exported.num, 3);
	ck_assert_mem_eq(exported.keys[0].name, name, 16);
	ck_assert_mem_eq(&exported.keys[1], &installed.keys[0],
	    2 * TICKET_KEY_LEN);

	/* The new process: no keys, then the exported ones. */
	tickets_clear();
	ck_assert_uint_eq(tickets_num(), 0);
	ck_assert_int_eq(ring_cb(name, iv, 0), 0);
	r = ring_copy(&exported);
	tickets_install(&r, 0);
	ck_assert_int_eq(tickets_export(&again), 0);
	ck_assert_uint_eq(again.num, exported.num);
	ck_assert_mem_eq(again.keys, exported.keys, again.num * TICKET_KEY_LEN);
	/* Tickets issued before the handover still decrypt under the same
	 * keys, and new ones are encrypted with the same first key. */
	ck_assert_int_eq(ring_cb(name, iv, 0), 1);
	memcpy(name, installed.keys[1].name, 16);
	ck_assert_int_eq(ring_cb(name, iv, 0), 2);
	ck_assert_int_eq(ring_cb(name, iv, 1), 1);
	ck_assert_mem_eq(name, exported.keys[0].name, 16);
	tickets_ring_free(&installed);
	tickets_ring_free(&exported);
	tickets_ring_free(&again);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("tickets");
	TCase *tc = tcase_create("keys");

	tcase_add_test(tc, raw_keys);
	tcase_add_test(tc, base64_lines);
	tcase_add_test(tc, file_permissions);
	tcase_add_test(tc, ring_encrypts_with_first_and_renews_older);
	tcase_add_test(tc, export_and_install_again);
	suite_add_tcase(s, tc);
	return check_run(s);
}
