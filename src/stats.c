/* stats.c: counter slots and the per-worker handshake counters. */
#include "stats.h"

#include <stdlib.h>
#include <string.h>

const char *const stat_hs_fail_names[STAT_HS_FAIL_COUNT] = {
	"no_shared_cipher", "unknown_sni", "protocol_version",
	"client_certificate", "timeout", "not_tls", "renegotiation", "other",
};

const char *const stat_ech_names[STAT_ECH_COUNT] = {
	"none", "accepted", "rejected",
};

const char *const stat_group_names[STAT_GROUP_COUNT] = {
	"X25519MLKEM768", "X25519", "P-256", "P-384", "P-521", "other",
};

const char *const stat_refusal_names[STAT_REFUSAL_COUNT] = {
	"max_connections", "listener_max_connections",
	"max_connections_per_address",
	"max_handshakes_per_second_per_address", "banned",
};

const uint32_t stat_hs_bounds_us[STAT_HS_BUCKETS] = {
	250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
	500000, 1000000, 5000000,
};

static char *slot_names[2][STATS_MAX_SLOTS];
static int slot_count[2];

int
stats_slot(enum stats_slot_kind kind, const char *name)
{
	char *copy;

	for (int i = 0; i < slot_count[kind]; i++) {
		if (strcmp(slot_names[kind][i], name) == 0)
			return i;
	}
	if (slot_count[kind] == STATS_MAX_SLOTS)
		return STATS_MAX_SLOTS - 1;
	/* The last slot is the overflow one: name it so, once. */
	copy = strdup(slot_count[kind] == STATS_MAX_SLOTS - 1 ? "(others)" :
	    name);
	if (copy == NULL)
		return STATS_MAX_SLOTS - 1;
	slot_names[kind][slot_count[kind]] = copy;
	return slot_count[kind]++;
}

int
stats_slot_count(enum stats_slot_kind kind)
{
	return slot_count[kind];
}

const char *
stats_slot_name(enum stats_slot_kind kind, int i)
{
	return slot_names[kind][i];
}

void
stats_slots_free(void)
{
	for (int k = 0; k < 2; k++) {
		for (int i = 0; i < slot_count[k]; i++)
			free(slot_names[k][i]);
		slot_count[k] = 0;
	}
}

uint64_t
stats_hs_key(uint16_t protocol_version, uint16_t cipher_id, int resumed)
{
	return (uint64_t)protocol_version << 17 | (uint64_t)(resumed != 0) << 16 |
	    cipher_id;
}

void
stats_hs_unkey(uint64_t key, uint16_t *protocol_version, uint16_t *cipher_id,
    int *resumed)
{
	*protocol_version = (uint16_t)(key >> 17);
	*resumed = (int)(key >> 16 & 1);
	*cipher_id = (uint16_t)key;
}

static size_t
stats_hs_kind(struct worker_stats *s, uint64_t key)
{
	uint32_t n = atomic_load_explicit(&s->hs_kinds, memory_order_relaxed);

	for (uint32_t i = 0; i < n; i++) {
		if (atomic_load_explicit(&s->hs_key[i], memory_order_relaxed) ==
		    key)
			return i;
	}
	if (n == STATS_HS_KINDS)
		return STATS_HS_KINDS - 1;
	atomic_store_explicit(&s->hs_key[n], key, memory_order_relaxed);
	atomic_store_explicit(&s->hs_kinds, n + 1, memory_order_release);
	return n;
}

void
stats_handshake(struct worker_stats *s, uint16_t protocol_version,
    uint16_t cipher_id, int resumed, uint64_t us)
{
	size_t b = 0;

	stat_add(&s->hs_count[stats_hs_kind(s, stats_hs_key(protocol_version,
	    cipher_id, resumed))], 1);
	while (b < STAT_HS_BUCKETS && us > stat_hs_bounds_us[b])
		b++;
	stat_add(&s->hs_bucket[b], 1);
	stat_add(&s->hs_sum_us, us);
}

void
stats_group(struct worker_stats *s, uint16_t group_id, int hrr)
{
	enum stat_group g;

	/* IANA numbers, so this file needs no TLS library. */
	switch (group_id) {
	case 0x11ec:
		g = STAT_GROUP_X25519MLKEM768;
		break;
	case 29:
		g = STAT_GROUP_X25519;
		break;
	case 23:
		g = STAT_GROUP_P256;
		break;
	case 24:
		g = STAT_GROUP_P384;
		break;
	case 25:
		g = STAT_GROUP_P521;
		break;
	default:
		g = STAT_GROUP_OTHER;
		break;
	}
	stat_add(&s->hs_group[g], 1);
	if (hrr)
		stat_add(&s->hello_retry_requests, 1);
}
