/* fuzz_sni.c: libFuzzer target for the server-name table, checked against
 * a plain list that does the same job slowly.
 *
 * Input: records of one operation byte and a name. Bits 0-1 of the byte:
 * 0 add the name, 1 add "*." and the name, 2 and 3 look the name up (3
 * first appends a trailing dot). Bits 2-7 give the name's length
 * (0-62); 63 means the length is in the next two bytes, so names can be
 * empty or longer than the 255 bytes a server name may have. The name
 * may hold any byte but NUL, which ends it.
 *
 * Properties: sni_add reports a name already present (with the value
 * it has), refuses one it cannot store, and accepts the rest; every
 * lookup returns what the list says: the exact name, else the wildcard
 * of its parent domain, else the default. So a name inserted is always
 * found, whatever its bytes or length. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sni.h"

#define MAX_NAMES 512
#define NAME_MAX_LEN 1024

struct model {
	char *names[MAX_NAMES]; /* normalized */
	size_t num;
};

static int values[MAX_NAMES];
static int def;

/* model_normalize is what the table documents: ASCII lower case, one
 * trailing dot dropped, not empty. Names longer than 255 bytes are not
 * server names; the table must refuse them rather than store them. */
static int
model_normalize(const char *name, char *out)
{
	size_t len = strlen(name);

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > 255)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out[len] = '\0';
	return 0;
}

static int
model_find(const struct model *m, const char *norm)
{
	for (size_t i = 0; i < m->num; i++) {
		if (strcmp(m->names[i], norm) == 0)
			return (int)i;
	}
	return -1;
}

static void *
model_lookup(const struct model *m, const char *name)
{
	char norm[NAME_MAX_LEN + 2];
	const char *dot;
	int i;

	if (model_normalize(name, norm) != 0)
		return &def;
	if ((i = model_find(m, norm)) >= 0)
		return &values[i];
	dot = strchr(norm, '.');
	if (dot == NULL || dot == norm)
		return &def;
	norm[0] = '*';
	memmove(norm + 1, dot, strlen(dot) + 1);
	if ((i = model_find(m, norm)) >= 0)
		return &values[i];
	return &def;
}

static void
check_add(struct sni_table *t, struct model *m, const char *name)
{
	char norm[NAME_MAX_LEN + 2];
	void *existing = NULL;
	int rc = sni_add(t, name, &values[m->num], &existing);
	int have;

	if (model_normalize(name, norm) != 0) {
		if (rc != -2)
			abort();
		return;
	}
	have = model_find(m, norm);
	if (have >= 0) {
		if (rc != -1 || existing != &values[have])
			abort();
		return;
	}
	if (rc != 0 || (m->names[m->num] = strdup(norm)) == NULL)
		abort();
	m->num++;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sni_table *t = sni_new(&def);
	struct model m = { .num = 0 };
	char name[NAME_MAX_LEN + 4];
	size_t pos = 0;

	if (t == NULL)
		abort();
	/* No SNI, and an empty table, give the default. */
	if (sni_lookup(t, NULL) != &def || sni_lookup(t, "a.example") != &def)
		abort();
	while (pos < size && m.num < MAX_NAMES - 1) {
		uint8_t op = data[pos++];
		size_t len = op >> 2, off = 0;
		void *got;

		if (len == 63) {
			if (size - pos < 2)
				break;
			len = ((size_t)data[pos] << 8 | data[pos + 1]) %
			    (NAME_MAX_LEN + 1);
			pos += 2;
		}
		if (len > size - pos)
			len = size - pos;
		if ((op & 3) == 1) {
			memcpy(name, "*.", 2);
			off = 2;
		}
		memcpy(name + off, data + pos, len);
		name[off + len] = '\0';
		pos += len;
		switch (op & 3) {
		case 0:
		case 1:
			check_add(t, &m, name);
			break;
		case 3:
			strcat(name, ".");
			/* fall through */
		case 2:
			got = sni_lookup(t, name);
			if (got != model_lookup(&m, name))
				abort();
			break;
		}
	}
	/* Every name stored is found under its own name, and in upper
	 * case. A stored name may end in a dot ("a.." is stored as "a."),
	 * so each is looked up with the one trailing dot lookups drop. */
	for (size_t i = 0; i < m.num; i++) {
		size_t len = strlen(m.names[i]);

		memcpy(name, m.names[i], len);
		memcpy(name + len, ".", 2);
		if (sni_lookup(t, name) != &values[i])
			abort();
		for (size_t j = 0; j < len; j++) {
			if (name[j] >= 'a' && name[j] <= 'z')
				name[j] = (char)(name[j] - 'a' + 'A');
		}
		if (sni_lookup(t, name) != &values[i])
			abort();
	}
	sni_free(t);
	for (size_t i = 0; i < m.num; i++)
		free(m.names[i]);
	return 0;
}
