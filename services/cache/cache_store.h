/* cache_store: the local tier. A hash map (chained, SipHash with a random key, power-of-two
 * buckets, grows at load 1) plus an eviction policy (cache_policy.h, LRU first), bounded by
 * entry count AND bytes at once: after every insert, victims are evicted until both bounds
 * hold, so neither bound is ever exceeded when a call returns. An entry's bytes are its key
 * plus its value (the fixed per-entry overhead is not counted; max_entries bounds it).
 * Per-entry expiry: an expired entry is never returned (checked on read, lazily removed), and
 * cache_store_expire() sweeps a bounded number of buckets per call for the ones never read.
 * get/set/delete are O(1) on average; delete_prefix and clear are O(n).
 * Thread-safe: one mutex around everything (values are copied out under it).
 * Keys are NUL-terminated strings; the server builds them as "quaver:<namespace>:<key>". */
#ifndef CACHE_STORE_H
#define CACHE_STORE_H
#include <stddef.h>
#include <stdint.h>

typedef struct cache_store_t cache_store_t;

typedef struct {
    uint64_t entries;
    uint64_t bytes;
    uint64_t evictions;     /* removed to make room (capacity), since creation */
    uint64_t expirations;   /* removed because their time had passed */
    uint64_t max_entries, max_bytes;
} cache_store_stats_t;

/* Milliseconds on any monotonic scale; injectable so tests can move time. */
typedef int64_t (*cache_clock_fn)(void *ctx);

/* policy: "lru" (NULL = "lru"). Returns NULL on an unknown policy, zero bounds or no memory.
 * Caller owns the result; free it with cache_store_destroy. */
cache_store_t *cache_store_new(size_t max_entries, size_t max_bytes, const char *policy);
void cache_store_destroy(cache_store_t **self_p);
/* Default clock: qv_mono_ms. Set before the store is shared between threads. */
void cache_store_set_clock(cache_store_t *self, cache_clock_fn fn, void *ctx);

/* Stores a copy of value under key, replacing any entry; ttl_ms <= 0 means no expiry.
 * Returns 0, or -1 when the entry alone is larger than max_bytes (nothing stored, any old
 * entry under key removed, so a stale value is never left behind) or memory ran out. */
int cache_store_set(cache_store_t *self, const char *key, const void *value, size_t vlen,
                    int64_t ttl_ms);
/* 1 on a hit: *value_p gets a malloc'd copy (caller frees; non-NULL even for an empty value),
 * *vlen_p its length, *ttl_left_p (may be NULL) the ms left or -1 for no expiry.
 * 0 on a miss (absent or expired), -1 when out of memory. */
int cache_store_get(cache_store_t *self, const char *key, uint8_t **value_p, size_t *vlen_p,
                    int64_t *ttl_left_p);
/* 1 when an entry was removed, 0 when there was none. */
int cache_store_delete(cache_store_t *self, const char *key);
/* Removes every entry whose key starts with prefix. O(n): it walks the whole table. Returns
 * how many were removed. */
size_t cache_store_delete_prefix(cache_store_t *self, const char *prefix);
/* Removes everything (counted neither as evictions nor expirations). */
void cache_store_clear(cache_store_t *self);
/* Examines up to `buckets` buckets from a rotating cursor and removes expired entries there.
 * Returns how many were removed. Called from a timer so idle expired entries free memory. */
size_t cache_store_expire(cache_store_t *self, size_t buckets);
void cache_store_stats(cache_store_t *self, cache_store_stats_t *out);

#endif
