/* sni.h: the server-name table of a listener: exact names, one-label
 * wildcards, and a default. Immutable once built; lookups are lock-free. */
#ifndef TLSPROXY_SNI_H
#define TLSPROXY_SNI_H

#include <stddef.h>

struct sni_table;

/* sni_new returns an empty table whose lookups fall back to |def|. */
struct sni_table *sni_new(void *def);

/* sni_free releases |t| (not the values). NULL is fine. */
void sni_free(struct sni_table *t);

/* sni_add maps |name| ("a.example.com" or "*.example.com") to |value|.
 * Returns 0, -1 when the name is already present (|*out_existing| is its
 * value), or -2 when out of memory. */
int sni_add(struct sni_table *t, const char *name, void *value,
    void **out_existing);

/* sni_lookup returns the value for a client's |name| (case-insensitive, a
 * trailing dot ignored): the exact name, else the wildcard of its parent,
 * else the default. |name| may be NULL (no SNI). */
void *sni_lookup(const struct sni_table *t, const char *name);

/* sni_normalize lower-cases |name| into |out| and drops a trailing dot.
 * Returns 0, or -1 if it is empty or does not fit. */
int sni_normalize(const char *name, char *out, size_t out_len);

#endif
