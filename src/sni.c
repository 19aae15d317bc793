/* sni.c: open-addressing hash table of server names. */
#include "sni.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sni_entry {
	char *name; /* normalized; wildcards stored as "*.suffix" */
	void *value;
	uint64_t hash;
};

struct sni_table {
	struct sni_entry *slots;
	size_t cap; /* a power of two */
	size_t num;
	void *def;
};

static uint64_t
sni_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

int
sni_normalize(const char *name, char *out, size_t out_len)
{
	size_t len = strlen(name);

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len >= out_len)
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out[len] = '\0';
	return 0;
}

struct sni_table *
sni_new(void *def)
{
	struct sni_table *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->def = def;
	return t;
}

void
sni_free(struct sni_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->cap; i++)
		free(t->slots[i].name);
	free(t->slots);
	free(t);
}

static struct sni_entry *
sni_find(const struct sni_table *t, const char *name, size_t len, uint64_t h)
{
	if (t->cap == 0)
		return NULL;
	for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		struct sni_entry *e = &t->slots[i];

		if (e->name == NULL)
			return e;
		if (e->hash == h && strncmp(e->name, name, len) == 0 &&
		    e->name[len] == '\0')
			return e;
	}
}

static int
sni_grow(struct sni_table *t)
{
	size_t cap = t->cap ? t->cap * 2 : 16;
	struct sni_entry *old = t->slots, *slots = calloc(cap, sizeof(*slots));
	size_t old_cap = t->cap;

	if (slots == NULL)
		return -1;
	t->slots = slots;
	t->cap = cap;
	for (size_t i = 0; i < old_cap; i++) {
		if (old[i].name != NULL)
			*sni_find(t, old[i].name, strlen(old[i].name),
			    old[i].hash) = old[i];
	}
	free(old);
	return 0;
}

int
sni_add(struct sni_table *t, const char *name, void *value,
    void **out_existing)
{
	char norm[256];
	struct sni_entry *e;
	size_t len;

	if (sni_normalize(name, norm, sizeof(norm)) != 0)
		return -2;
	len = strlen(norm);
	if ((t->num + 1) * 2 > t->cap && sni_grow(t) != 0)
		return -2;
	e = sni_find(t, norm, len, sni_hash(norm, len));
	if (e->name != NULL) {
		if (out_existing != NULL)
			*out_existing = e->value;
		return -1;
	}
	if ((e->name = strdup(norm)) == NULL)
		return -2;
	e->hash = sni_hash(norm, len);
	e->value = value;
	t->num++;
	return 0;
}

void *
sni_lookup(const struct sni_table *t, const char *name)
{
	char norm[256];
	const char *dot;
	struct sni_entry *e;
	size_t len;

	/* The same room as sni_add: any name it stored can be looked up,
	 * 255 bytes included. */
	if (name == NULL || t->num == 0 ||
	    sni_normalize(name, norm, sizeof(norm)) != 0)
		return t->def;
	len = strlen(norm);
	e = sni_find(t, norm, len, sni_hash(norm, len));
	if (e->name != NULL)
		return e->value;
	/* One label only: "*.example.com" matches "a.example.com", not
	 * "example.com" nor "a.b.example.com". The '*' overwrites the last
	 * byte of the first label, so the wildcard needs no more room. */
	dot = strchr(norm, '.');
	if (dot == NULL || dot == norm)
		return t->def;
	{
		char *w = (char *)dot - 1;

		*w = '*';
		len = strlen(w);
		e = sni_find(t, w, len, sni_hash(w, len));
	}
	return e->name != NULL ? e->value : t->def;
}
