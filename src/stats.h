/* stats.h: the counters behind /metrics. Each worker owns one
 * worker_stats and is its only writer, so counting is a plain load and
 * store (relaxed atomics, which compile to ordinary moves): no locked
 * instruction on the data path. The admin endpoint sums the workers'
 * counters when it is scraped. */
#ifndef TLSPROXY_STATS_H
#define TLSPROXY_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "backend_tls.h"

typedef _Atomic uint64_t stat_t;

/* stat_add adds |n| to a counter only the calling thread writes. */
static inline void
stat_add(stat_t *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c,
	    memory_order_relaxed) + n, memory_order_relaxed);
}

static inline uint64_t
stat_get(const stat_t *c)
{
	return atomic_load_explicit((stat_t *)c, memory_order_relaxed);
}

/* Why a handshake (or, for renegotiation, a finished one) failed. */
enum stat_hs_fail {
	STAT_HS_NO_SHARED_CIPHER,
	STAT_HS_UNKNOWN_SNI,
	STAT_HS_PROTOCOL_VERSION,
	STAT_HS_CLIENT_CERT,
	STAT_HS_TIMEOUT,
	STAT_HS_NOT_TLS,
	STAT_HS_RENEGOTIATION,
	STAT_HS_OTHER,
	STAT_HS_FAIL_COUNT,
};

/* Why a connection was closed at accept, before any TLS work. */
enum stat_refusal {
	STAT_REFUSE_MAX_CONNECTIONS,
	STAT_REFUSE_LISTENER_MAX_CONNECTIONS,
	STAT_REFUSE_PER_ADDRESS,
	STAT_REFUSE_RATE,
	STAT_REFUSE_BANNED,
	STAT_REFUSAL_COUNT,
};

/* The key-exchange group of a finished handshake. */
enum stat_group {
	STAT_GROUP_X25519MLKEM768,
	STAT_GROUP_X25519,
	STAT_GROUP_P256,
	STAT_GROUP_P384,
	STAT_GROUP_P521,
	STAT_GROUP_OTHER,
	STAT_GROUP_COUNT,
};

/* What became of an Encrypted Client Hello. */
enum stat_ech {
	STAT_ECH_NONE,     /* none offered, or the listener has no ech */
	STAT_ECH_ACCEPTED,
	STAT_ECH_REJECTED, /* not decryptable: stale config or GREASE */
	STAT_ECH_COUNT,
};

extern const char *const stat_hs_fail_names[STAT_HS_FAIL_COUNT];
extern const char *const stat_ech_names[STAT_ECH_COUNT];
extern const char *const stat_group_names[STAT_GROUP_COUNT];
extern const char *const stat_refusal_names[STAT_REFUSAL_COUNT];

/* Upper bounds (microseconds) of the handshake-duration histogram; one
 * more bucket holds the rest. */
#define STAT_HS_BUCKETS 13
extern const uint32_t stat_hs_bounds_us[STAT_HS_BUCKETS];

/* Listeners and backends are counted by slot: a small number given to
 * each name the first time a config uses it, kept across reloads so a
 * reload does not reset their counters. */
#define STATS_MAX_SLOTS 256
/* Distinct (version, cipher, resumed) combinations counted per worker;
 * later ones are counted under the last. */
#define STATS_HS_KINDS 32

enum stats_slot_kind {
	STATS_LISTENER,
	STATS_BACKEND,
};

struct worker_stats {
	stat_t hs_fail[STAT_HS_FAIL_COUNT];
	stat_t refused[STAT_REFUSAL_COUNT];
	stat_t bans;
	stat_t hs_group[STAT_GROUP_COUNT];
	stat_t hello_retry_requests;
	stat_t hs_ech[STAT_ECH_COUNT];
	stat_t hs_bucket[STAT_HS_BUCKETS + 1];
	stat_t hs_sum_us;
	stat_t bytes_from_client, bytes_from_backend;
	stat_t store_lookups, store_lookup_us;
	_Atomic int store_state; /* 0 no store, 1 down, 2 up */
	/* Handshakes by kind: |hs_key| holds stats_hs_key() values; a key is
	 * written before |hs_kinds| grows past it (release), so a reader
	 * that loaded |hs_kinds| (acquire) sees every key below it. */
	_Atomic uint32_t hs_kinds;
	_Atomic uint64_t hs_key[STATS_HS_KINDS];
	stat_t hs_count[STATS_HS_KINDS];
	stat_t accepted[STATS_MAX_SLOTS]; /* by listener slot */
	stat_t closed[STATS_MAX_SLOTS];
	stat_t backend_failed[STATS_MAX_SLOTS]; /* by backend slot */
	/* TLS to backends, by backend slot. */
	stat_t bt_handshakes[STATS_MAX_SLOTS];
	stat_t bt_resumed[STATS_MAX_SLOTS];
	stat_t bt_fail[STATS_MAX_SLOTS][BACKEND_TLS_FAIL_COUNT];
};

/* stats_slot returns the slot of |name|, giving it the next free one the
 * first time; the last slot is shared by every name past the limit.
 * Control thread only. */
int stats_slot(enum stats_slot_kind kind, const char *name);

/* stats_slot_count returns how many slots of |kind| have names. */
int stats_slot_count(enum stats_slot_kind kind);

/* stats_slot_name returns the name of slot |i|. */
const char *stats_slot_name(enum stats_slot_kind kind, int i);

/* stats_slots_free forgets every name (at exit). */
void stats_slots_free(void);

/* stats_handshake counts a finished handshake of |protocol_version|,
 * cipher |cipher_id| (its IANA number) and |resumed|, taking |us|. */
void stats_handshake(struct worker_stats *s, uint16_t protocol_version,
    uint16_t cipher_id, int resumed, uint64_t us);

/* stats_group counts the key-exchange group |group_id| (its IANA number,
 * 0 for none) of a finished handshake, and whether it took a
 * HelloRetryRequest. */
void stats_group(struct worker_stats *s, uint16_t group_id, int hrr);

/* stats_hs_key packs what stats_handshake counts by; stats_hs_unkey
 * undoes it. */
uint64_t stats_hs_key(uint16_t protocol_version, uint16_t cipher_id,
    int resumed);
void stats_hs_unkey(uint64_t key, uint16_t *protocol_version,
    uint16_t *cipher_id, int *resumed);

#endif
