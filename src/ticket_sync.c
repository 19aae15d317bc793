/* ticket_sync.c: ticket keys kept in the session store, so a fleet shares
 * and rotates them with no file to distribute. The value under
 * PREFIX"ticket-keys" is an 8-byte big-endian creation time (ms since the
 * epoch) of its first key, then the keys, newest first. Any instance that
 * finds the first key older than ticket_rotation writes the next value,
 * but only if the value is still the one it read (an atomic compare in a
 * Lua script), so two instances never both rotate. */
#include "ticket_sync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/mem.h>
#include <openssl/rand.h>

#include "clock.h"
#include "log.h"
#include "session_store.h"
#include "tickets.h"

#define SYNC_HEADER 8
#define SYNC_MAX_KEYS 16

/* Sets the value only if it is still what the caller read ("" = none). */
static const char sync_cas_script[] =
    "local cur = redis.call('GET', KEYS[1]) or '' "
    "if cur == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end "
    "return 0";

struct ticket_sync {
	struct session_store *store;
	char key[300];
	uint64_t rotation_ms;
	size_t keep;
	struct event *timer;
	int busy;
	uint8_t installed[SYNC_HEADER + SYNC_MAX_KEYS * TICKET_KEY_LEN];
	size_t installed_len;
	/* The value read, kept for the compare of a rotation. */
	uint8_t seen[SYNC_HEADER + SYNC_MAX_KEYS * TICKET_KEY_LEN];
	size_t seen_len;
	uint8_t next[SYNC_HEADER + SYNC_MAX_KEYS * TICKET_KEY_LEN];
	size_t next_len;
};

static uint64_t
sync_get_time(const uint8_t *v)
{
	uint64_t t = 0;

	for (int i = 0; i < SYNC_HEADER; i++)
		t = t << 8 | v[i];
	return t;
}

static int
sync_valid(size_t len)
{
	return len >= SYNC_HEADER + TICKET_KEY_LEN &&
	    (len - SYNC_HEADER) % TICKET_KEY_LEN == 0 &&
	    len <= SYNC_HEADER + SYNC_MAX_KEYS * TICKET_KEY_LEN;
}

/* sync_install makes the keys of value |v| the ring in use, unless they
 * already are. */
static void
sync_install(struct ticket_sync *ts, const uint8_t *v, size_t len)
{
	struct ticket_ring ring;
	char err[128];

	if (len == ts->installed_len && memcmp(v, ts->installed, len) == 0)
		return;
	if (tickets_parse(v + SYNC_HEADER, len - SYNC_HEADER, &ring, err,
	    sizeof(err)) != 0)
		return;
	memcpy(ts->installed, v, len);
	ts->installed_len = len;
	log_msg(LOGL_INFO, "session tickets: %zu keys from the session store",
	    ring.num);
	tickets_install(&ring, 1);
}

static void
sync_cas_done(int status, const char *data, size_t len, long long num,
    void *arg)
{
	struct ticket_sync *ts = arg;

	(void)data;
	(void)len;
	ts->busy = 0;
	if (status == 0 && num == 1) {
		log_msg(LOGL_INFO, "session tickets: this instance rotated the "
		    "shared key");
		sync_install(ts, ts->next, ts->next_len);
	}
	/* Lost the race: the next poll reads the winner's keys. */
	OPENSSL_cleanse(ts->next, sizeof(ts->next));
}

/* sync_rotate writes a value with a fresh first key and the newest old
 * ones, if the value is still |ts->seen|. */
static void
sync_rotate(struct ticket_sync *ts)
{
	size_t old_keys = ts->seen_len > SYNC_HEADER ?
	    (ts->seen_len - SYNC_HEADER) / TICKET_KEY_LEN : 0;
	size_t keep_old = ts->keep - 1 < old_keys ? ts->keep - 1 : old_keys;
	uint64_t now = clock_wall_ms();
	const char *argv[6];
	size_t argv_len[6];

	for (int i = SYNC_HEADER - 1; i >= 0; i--, now >>= 8)
		ts->next[i] = (uint8_t)now;
	RAND_bytes(ts->next + SYNC_HEADER, TICKET_KEY_LEN);
	memcpy(ts->next + SYNC_HEADER + TICKET_KEY_LEN, ts->seen + SYNC_HEADER,
	    keep_old * TICKET_KEY_LEN);
	ts->next_len = SYNC_HEADER + (1 + keep_old) * TICKET_KEY_LEN;
	argv[0] = "EVAL";
	argv[1] = sync_cas_script;
	argv[2] = "1";
	argv[3] = ts->key;
	argv[4] = (const char *)ts->seen;
	argv[5] = (const char *)ts->next;
	for (int i = 0; i < 4; i++)
		argv_len[i] = strlen(argv[i]);
	argv_len[4] = ts->seen_len;
	argv_len[5] = ts->next_len;
	if (session_store_call(ts->store, 6, argv, argv_len, sync_cas_done,
	    ts) != 0)
		ts->busy = 0;
}

static void
sync_get_done(int status, const char *data, size_t len, long long num,
    void *arg)
{
	struct ticket_sync *ts = arg;
	const uint8_t *v = (const uint8_t *)data;

	(void)num;
	if (status != 0) {
		ts->busy = 0;
		return;
	}
	if (v != NULL && sync_valid(len)) {
		memcpy(ts->seen, v, len);
		ts->seen_len = len;
		sync_install(ts, v, len);
		if (clock_wall_ms() < sync_get_time(v) + ts->rotation_ms) {
			ts->busy = 0;
			return;
		}
	} else {
		/* Nothing yet (or garbage): start the shared keys. */
		ts->seen_len = 0;
		if (v != NULL)
			log_msg(LOGL_WARNING, "session tickets: the value of %s in "
			    "the session store is not a key list; replacing it",
			    ts->key);
	}
	sync_rotate(ts);
}

static void
sync_tick(evutil_socket_t fd, short what, void *arg)
{
	struct ticket_sync *ts = arg;
	const char *argv[2] = { "GET", ts->key };
	size_t argv_len[2] = { 3, strlen(ts->key) };

	(void)fd;
	(void)what;
	if (ts->busy)
		return;
	ts->busy = 1;
	if (session_store_call(ts->store, 2, argv, argv_len, sync_get_done,
	    ts) != 0)
		ts->busy = 0;
}

struct ticket_sync *
ticket_sync_new(struct event_base *base, const char *url, const char *prefix,
    uint64_t rotation_ms, uint64_t session_timeout_ms,
    const struct strlist *resolver, uint64_t resolver_timeout_ms)
{
	struct ticket_sync *ts = calloc(1, sizeof(*ts));
	uint64_t poll_ms = rotation_ms / 4;
	struct timeval tv;
	size_t keep;

	if (ts == NULL)
		return NULL;
	if (poll_ms > 5000)
		poll_ms = 5000;
	if (poll_ms < 200)
		poll_ms = 200;
	keep = 1 + (size_t)((session_timeout_ms + rotation_ms - 1) /
	    rotation_ms);
	ts->keep = keep > SYNC_MAX_KEYS ? SYNC_MAX_KEYS : keep;
	ts->rotation_ms = rotation_ms;
	snprintf(ts->key, sizeof(ts->key), "%sticket-keys", prefix);
	/* The store's lifetime is ours; its timeout does not matter here. */
	ts->store = session_store_new(base, url, prefix, 1000, 0, resolver,
	    resolver_timeout_ms);
	ts->timer = event_new(base, -1, EV_PERSIST, sync_tick, ts);
	if (ts->store == NULL || ts->timer == NULL) {
		ticket_sync_free(ts);
		return NULL;
	}
	tv.tv_sec = (time_t)(poll_ms / 1000);
	tv.tv_usec = (suseconds_t)(poll_ms % 1000) * 1000;
	event_add(ts->timer, &tv);
	return ts;
}

void
ticket_sync_free(struct ticket_sync *ts)
{
	if (ts == NULL)
		return;
	if (ts->timer != NULL)
		event_free(ts->timer);
	session_store_free(ts->store);
	OPENSSL_cleanse(ts, sizeof(*ts));
	free(ts);
}
