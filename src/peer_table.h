/* peer_table.h: what the process knows about each client address, shared
 * by every worker: open connections, a handshake-rate token bucket and
 * renegotiation bans. Bounded (a fixed number of entries, chosen at
 * creation) and lock-free on the accept path. An address the table has no
 * room for is not tracked: it is admitted, never refused for that. */
#ifndef TLSPROXY_PEER_TABLE_H
#define TLSPROXY_PEER_TABLE_H

#include <stddef.h>
#include <stdint.h>

struct sockaddr;
struct peer_entry;
struct peer_table;

/* PEER_KEY_NONE is the key of a client without an IP address (a unix
 * socket); such clients are never tracked. */
#define PEER_KEY_NONE UINT64_MAX

/* PEER_KEY_STRLEN is enough for any formatted key. */
#define PEER_KEY_STRLEN 64

/* PEER_TABLE_DEFAULT_ENTRIES is the table size for a daemon that was not
 * told otherwise. */
#define PEER_TABLE_DEFAULT_ENTRIES 65536

/* PEER_RENEG_LIMIT_MAX is the largest renegotiation limit; larger ones are
 * cut to it. */
#define PEER_RENEG_LIMIT_MAX 15

struct peer_limits {
	uint32_t max_conns;       /* open per address; 0: no limit */
	uint32_t rate;            /* handshakes per second per address, in
	                           * bursts of up to |rate|; 0: no limit */
	uint32_t reneg_limit;     /* attempts allowed per window; one more bans */
	uint64_t reneg_window_ms; /* at most 2^32-1 (49 days); longer is cut */
};

enum peer_verdict {
	PEER_OK,
	PEER_BANNED,
	PEER_TOO_MANY_CONNS,
	PEER_TOO_FAST,
};

/* What an admitted connection keeps so that it can give its place back.
 * |e| is NULL when nothing was counted. */
struct peer_ref {
	struct peer_entry *e;
	uint64_t key;
};

/* peer_key returns the key |sa| is tracked under: an IPv4 address (also
 * when written as ::ffff:a.b.c.d) on its own, an IPv6 address with the
 * rest of its /64, which one host usually holds whole. Anything else gets
 * PEER_KEY_NONE. */
uint64_t peer_key(const struct sockaddr *sa);

/* peer_key_format writes |key| for a log line: "192.0.2.1",
 * "2001:db8:1:2::/64", or "-" for PEER_KEY_NONE. Returns |buf|. */
const char *peer_key_format(uint64_t key, char *buf, size_t len);

/* peer_table_new makes a table of |entries| entries (0: the default),
 * rounded up to a power of two, at least 8. Returns NULL when out of
 * memory. */
struct peer_table *peer_table_new(size_t entries);

/* peer_table_free frees |t|; no thread may still use it. NULL is fine. */
void peer_table_free(struct peer_table *t);

/* peer_table_size returns the number of entries of |t|. */
size_t peer_table_size(const struct peer_table *t);

/* peer_admit decides, at accept and before any TLS work, whether a client
 * with |key| may go on under |lim| at |now_ms| (a monotonic clock). On
 * PEER_OK with |ref->e| set, the connection is counted and |ref| must be
 * passed to peer_release when it closes; refused connections hold
 * nothing. Connections are counted only while |lim| sets max_conns, and
 * without max_conns or rate only bans are looked up: nothing is written.
 * Never blocks: an address the table cannot make room for is admitted. */
enum peer_verdict peer_admit(struct peer_table *t, uint64_t key,
    const struct peer_limits *lim, uint64_t now_ms, struct peer_ref *ref);

/* peer_release gives back the place peer_admit counted in |ref| and clears
 * |ref|. A ref with nothing counted is fine. */
void peer_release(struct peer_table *t, struct peer_ref *ref);

/* peer_renegotiation records an attempt by |key| to renegotiate at
 * |now_ms|. When it is more than |lim|'s reneg_limit attempts within the
 * window (so with a limit of 0, the first attempt), it bans the address
 * until the window has passed over the oldest of those attempts, sets
 * |*out_until_ms| to that time and returns 1. Returns 0 otherwise. A ban
 * lasts until it expires, whatever the limits become. */
int peer_renegotiation(struct peer_table *t, uint64_t key,
    const struct peer_limits *lim, uint64_t now_ms, uint64_t *out_until_ms);

/* peer_table_foreach_ban calls |fn| for each address banned beyond
 * |now_ms|, with the milliseconds its ban has left, for a process taking
 * over from this one. It scans the table without stopping the workers:
 * a ban made meanwhile may be missed, and an address held twice for an
 * instant (see peer_table.c) may come twice. */
void peer_table_foreach_ban(struct peer_table *t, uint64_t now_ms,
    void (*fn)(void *arg, uint64_t key, uint64_t left_ms), void *arg);

/* peer_table_ban bans |key| until |now_ms| + |left_ms| (at most
 * 2^32-1 ms, as a renegotiation ban), as peer_renegotiation does: a ban
 * already running that ends later stays. peer_admit refuses the address
 * until then. Returns 0, or -1 for PEER_KEY_NONE or when the table has no
 * room for the address. */
int peer_table_ban(struct peer_table *t, uint64_t key, uint64_t now_ms,
    uint64_t left_ms);

/* peer_conns returns the connections counted for |key|. */
uint32_t peer_conns(struct peer_table *t, uint64_t key);

/* peer_table_conns returns the connections counted over the whole table.
 * It scans the table: for metrics, not for every connection. */
uint64_t peer_table_conns(struct peer_table *t);

/* peer_table_banned returns the number of addresses banned at |now_ms|.
 * It scans the table. */
size_t peer_table_banned(struct peer_table *t, uint64_t now_ms);

/* peer_table_tracked returns the number of addresses in the table. It
 * scans the table. */
size_t peer_table_tracked(struct peer_table *t);

#endif
