/* cache_warmup: copies values from Redis into the local tier ahead of demand, under the same
 * coherence rules as a Get (cache_tracking.h): a ticket is taken before the MGET is sent and a
 * value is kept only if no invalidation, write or flush of its key came in between; a local copy
 * lives at most min(Redis's PTTL, the namespace's TTL, local_max_ttl_ms). Values that do not
 * decode (cache_codec.h) are skipped, never kept.
 * Two users: the `Warmup` method (a namespace's keys, found with SCAN, never KEYS) and the
 * snapshot load at start (cache_snapshot.h), which keeps a snapshot's entry only when Redis
 * still holds exactly the bytes the snapshot has. Thread-safe as its parts are. */
#ifndef CACHE_WARMUP_H
#define CACHE_WARMUP_H
#include <stddef.h>
#include <stdint.h>
#include "cache_store.h"
#include "cache_redis.h"
#include "cache_tracking.h"

typedef struct {
    cache_store_t    *store;      /* all borrowed */
    cache_redis_t    *redis;
    cache_tracking_t *tracking;
    size_t            max_value_bytes;
    int64_t           local_max_ttl_ms;
} cache_warmup_env_t;

/* What a snapshot says about a key: load it only if Redis holds exactly value (vlen bytes),
 * for at most ttl_ms (<= 0: no bound of its own). */
typedef struct {
    const uint8_t *value;
    size_t         vlen;
    int64_t        ttl_ms;
} cache_warmup_expect_t;

/* Loads the n keys (within ns) from Redis in one MGET + PTTL round trip. expect (NULL: any
 * value) has n rows. Returns how many were stored locally, -1 when Redis is down, -2 on an
 * error. *rounds (may be NULL) gets the round trips made added. */
int64_t cache_warmup_keys(const cache_warmup_env_t *env, const char *ns, int64_t ns_ttl_ms,
                          const char *const *keys, size_t n, const cache_warmup_expect_t *expect,
                          uint64_t *rounds);

/* SCAN MATCH quaver:<ns>:* COUNT 500, then MGET of each batch, until max_keys were stored or
 * the scan ends. Returns how many were stored (>= 0), -1 when Redis is down before anything
 * was done, -2 when it failed part way (what was stored stays). */
int64_t cache_warmup_namespace(const cache_warmup_env_t *env, const char *ns, int64_t ns_ttl_ms,
                               size_t max_keys, uint64_t *rounds);
#endif
