/* cache_redis: the shared tier, one synchronous hiredis (RESP2) connection behind a mutex,
 * with connect and command timeouts. It never makes a caller wait for a Redis that is known to
 * be down: the first transport error marks the tier down and every call then fails at once
 * (-1) until cache_redis_tick(), run from the server's timer, has reconnected. Reconnects are
 * tried at most once per back-off period (500 ms doubling to 10 s), never per request.
 * Keys are passed in full ("quaver:<namespace>:<key>") and are binary-safe.
 * Writes made while down are remembered (bounded list of keys and prefixes) and, on
 * reconnect, replayed as UNLINKs before the connection is used again: a Set or Delete seen
 * while Redis was away must not let Redis serve the value from before it afterwards.
 * Thread-safe. One connection serialises Redis round trips; at a 200 ms timeout and sub-ms
 * round trips that is enough for the foundation, and a pool can replace it behind this API.
 * Coherence (cache_tracking.h): the data connection runs CLIENT TRACKING ... REDIRECT <id of
 * the invalidation connection> BCAST PREFIX quaver: NOLOOP; it is only used while that
 * connection is up, and it is dropped (and reconnected, redirecting to the new one) when that
 * connection is lost. Reads hand back a ticket taken before the command was sent; writes and
 * deletes bump the key's version under the connection's lock, so the order of versions is the
 * order in which Redis saw the commands.
 * Return codes of the commands: -1 = Redis known down, nothing sent; -2 = sent and failed
 * (transport error, which marks the tier down, or an error reply). */
#ifndef CACHE_REDIS_H
#define CACHE_REDIS_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "cache_tracking.h"

typedef struct cache_redis_t cache_redis_t;

/* url: redis://[[user]:password@]host[:port][/db]. tracking (borrowed, must outlive this
 * object and be destroyed before it, since its thread calls back into it; NULL = no
 * coherence) gets its invalidation connection started here. Tries to connect once; a Redis that is down
 * at start is not an error (the tier starts down and the timer retries). Returns NULL only on
 * a URL it cannot parse or no memory. Caller owns the result (cache_redis_destroy). */
cache_redis_t *cache_redis_new(const char *url, int timeout_ms, cache_tracking_t *tracking);
void cache_redis_destroy(cache_redis_t **self_p);

/* The timer's work: reconnects when down and the back-off has passed, pings when up and idle.
 * Returns 1 when the tier just came back up, else 0. Call from one thread only. */
int cache_redis_tick(cache_redis_t *self);
/* fn(ctx) runs on reconnect with this tier's lock held, after the missed writes are replayed
 * and before any request can use the new connection (the server flushes its local tier
 * there). fn must not call back into cache_redis. Set before the tier is shared. */
void cache_redis_on_reconnect(cache_redis_t *self, void (*fn)(void *ctx), void *ctx);

bool cache_redis_up(cache_redis_t *self);
uint64_t cache_redis_errors(cache_redis_t *self);
/* "host:port" and the last error text, for health. Copies into buf. */
void cache_redis_describe(cache_redis_t *self, char *buf, size_t len);

/* 1 hit (*value_p malloc'd, caller frees; *pttl_p ms left or -1 for none), 0 miss,
 * -1 down, -2 error. *ticket (may be NULL) is the version before the GET was sent. */
int cache_redis_get(cache_redis_t *self, const char *key, uint8_t **value_p, size_t *vlen_p,
                    int64_t *pttl_p, cache_ticket_t *ticket);
/* SET key value PX ttl_ms (ttl_ms > 0). 0, -1 down (the key is remembered and UNLINKed on
 * reconnect), -2 error. On 0, *ticket (may be NULL) is the key's version after the bump made
 * just before sending: commit it to copy the value into the local tier. */
int cache_redis_set(cache_redis_t *self, const char *key, const void *value, size_t vlen,
                    int64_t ttl_ms, cache_ticket_t *ticket);
/* UNLINK key (bumping its version first). Returns the number removed (0/1), -1 or -2. */
int cache_redis_del(cache_redis_t *self, const char *key);
/* Removes every key matching a glob in Redis MATCH syntax (for a prefix, make it with
 * cache_redis_prefix_match): SCAN MATCH + UNLINK per batch (never KEYS, which blocks Redis).
 * The lock is released between batches so other calls go on. *rounds (may be NULL) gets the
 * round trips made added. Returns how many were removed, -1 down (remembered for the
 * reconnect), -2 failed part way (also remembered). */
int64_t cache_redis_del_match(cache_redis_t *self, const char *match, uint64_t *rounds);

typedef struct {
    bool           found;
    uint8_t       *value;    /* malloc'd when found; caller frees */
    size_t         vlen;
    int64_t        pttl;     /* ms left, -1 none */
    cache_ticket_t ticket;   /* taken before the MGET was sent */
} cache_redis_value_t;
/* MGET of n keys plus their PTTLs, pipelined in one round trip. out has n zeroed slots.
 * 0, -1 down, -2 error (nothing found then). */
int cache_redis_mget(cache_redis_t *self, const char *const *keys, size_t n,
                     cache_redis_value_t *out);
/* Commands sent to Redis since the start (a pipeline counts once). */
uint64_t cache_redis_round_trips(cache_redis_t *self);
/* One step of SCAN <cursor> MATCH match COUNT 500 (never KEYS). cursor is "0" to start, and
 * "0" again once the scan is over. *keys_p gets a malloc'd array of *n_p malloc'd keys
 * (NUL-terminated; keys holding a NUL byte are left out); free with cache_redis_keys_free.
 * 0, -1 down, -2 error (nothing in *keys_p then). */
int cache_redis_scan(cache_redis_t *self, char *cursor, size_t clen, const char *match,
                     char ***keys_p, size_t *n_p);
void cache_redis_keys_free(char **keys, size_t n);

/* Redis MATCH glob syntax (* ? [abc] [^a] [a-z] \x). check: 0, or -1 with "pattern is not a
 * glob: ..." in err (an unbalanced '[' or a trailing backslash). match: 1 when s matches pat
 * as Redis's stringmatchlen would. literal_prefix: the part of pat before its first wildcard,
 * unescaped, into out; returns its length. */
int cache_redis_glob_check(const char *pat, char *err, size_t errlen);
int cache_redis_glob_match(const char *pat, const char *s);
size_t cache_redis_glob_literal_prefix(const char *pat, char *out, size_t len);

/* Writes prefix with the glob characters * ? [ ] \ escaped, then '*', into out (NUL-ended).
 * Returns 0, -1 when it does not fit. */
int cache_redis_match_pattern(const char *prefix, char *out, size_t len);
/* The same into a new string: caller owns the result and frees it; NULL out of memory. */
char *cache_redis_prefix_match(const char *prefix);
#endif
