/* cache_store: the local tier. A hash map (chained, SipHash with a random key, power-of-two
 * buckets, grows at load 1) plus, per namespace, an eviction policy (cache_policy.h), bounded
 * by entry count AND bytes at once: after every insert, victims are evicted until both bounds
 * hold, so neither bound is ever exceeded when a call returns. An entry's bytes are its key
 * plus its value (the fixed per-entry overhead is not counted; max_entries bounds it).
 *
 * Namespaces share the global budget. Each has its own policy instance and a priority
 * (CACHE_STORE_PRIO_LOW/MEDIUM/HIGH, the same values as cache_namespace.h's cache_priority_t).
 * Under pressure the victim comes from the lowest priority that holds any entries; among the
 * namespaces of that priority, from the one holding the most of the exhausted resource
 * (entries when the entry bound is exceeded, else bytes), i.e. the one furthest over an equal
 * share. Choosing scans the namespace table (at most CACHE_STORE_NS_MAX rows): O(1) in the
 * number of entries. Within the namespace its policy picks the victim.
 * Removals are counted per namespace by cause (cache_store_evict_cause_t).
 *
 * Per-entry expiry: an expired entry is never returned (checked on read, lazily removed), and
 * cache_store_expire() sweeps a bounded number of buckets per call for the ones never read.
 * get/set/delete are O(1) on average (policies: O(1) or amortised O(1)); the prefix/match
 * deletes and clears are O(n).
 * Thread-safe: one mutex around everything (values are copied out under it).
 *
 * Keys are the key within a namespace; cache_store_clear, _expire and _stats cover every
 * namespace. */
#ifndef CACHE_STORE_H
#define CACHE_STORE_H
#include <stddef.h>
#include <stdint.h>

typedef struct cache_store_t cache_store_t;

#define CACHE_STORE_NS_MAX       64    /* namespaces in one store */
#define CACHE_STORE_NS_NAME_MAX  64
/* Returned by the cache_store_ns_* calls when the namespace is not registered. */
#define CACHE_STORE_NO_NS        (-2)

enum { CACHE_STORE_PRIO_LOW = 0, CACHE_STORE_PRIO_MEDIUM = 1, CACHE_STORE_PRIO_HIGH = 2 };

typedef enum {
    CACHE_EVICT_CAPACITY_ENTRIES = 0,  /* made room: the entry bound was exceeded */
    CACHE_EVICT_CAPACITY_BYTES,        /* made room: the byte bound was exceeded */
    CACHE_EVICT_EXPIRED,               /* its TTL had passed (read, sweep, or chosen as victim) */
    CACHE_EVICT_PRIORITY,              /* made room for a namespace of higher priority */
    CACHE_EVICT__COUNT
} cache_store_evict_cause_t;

typedef struct {
    uint64_t entries;
    uint64_t bytes;
    uint64_t evictions;     /* removed to make room (capacity or priority), since creation */
    uint64_t expirations;   /* removed because their time had passed */
    uint64_t max_entries, max_bytes;
} cache_store_stats_t;

typedef struct {
    char     name[CACHE_STORE_NS_NAME_MAX + 1];
    char     policy[16];
    int      priority;
    uint64_t entries, bytes;
    uint64_t hits, misses;                     /* cache_store_ns_get only */
    uint64_t evictions[CACHE_EVICT__COUNT];    /* by cause, since creation */
} cache_store_ns_stats_t;

/* Milliseconds on any monotonic scale; injectable so tests can move time. */
typedef int64_t (*cache_clock_fn)(void *ctx);

/* An empty store with no namespace (add them with cache_store_add_namespace). Returns NULL on
 * zero bounds or no memory. Caller owns the result; free it with cache_store_destroy. */
cache_store_t *cache_store_new(size_t max_entries, size_t max_bytes);
void cache_store_destroy(cache_store_t **self_p);
/* Default clock: qv_mono_ms. Set before the store is shared between threads. */
void cache_store_set_clock(cache_store_t *self, cache_clock_fn fn, void *ctx);

/* ---- namespaces ---------------------------------------------------------------------------- */

/* Registers a namespace: name 1..CACHE_STORE_NS_NAME_MAX bytes (the store copies it), policy
 * one of cache_policy_names (NULL = "lru"), priority CACHE_STORE_PRIO_*. Returns 0, or -1 when
 * the name is empty, too long or taken, the policy unknown, the priority out of range, the
 * table full, or memory short (nothing registered then). Namespaces live as long as the store. */
__attribute__((warn_unused_result))
int cache_store_add_namespace(cache_store_t *self, const char *name, const char *policy,
                              int priority);
/* Every call below returns CACHE_STORE_NO_NS (and changes nothing) for an unknown ns. The
 * store never keeps a pointer to ns, key or value: it copies what it stores. */

/* Stores a copy of value under (ns, key), replacing any entry; ttl_ms <= 0 means no expiry.
 * Returns 0, or -1 when the entry alone is larger than max_bytes (nothing stored, any old
 * entry under the key removed, so a stale value is never left behind) or memory ran out.
 * A policy with admission (wtinylfu) may evict the new entry itself at once to keep a more
 * valuable one: that is still 0. */
int cache_store_ns_set(cache_store_t *self, const char *ns, const char *key, const void *value,
                       size_t vlen, int64_t ttl_ms);
/* 1 on a hit: *value_p gets a malloc'd copy (caller frees; non-NULL even for an empty value),
 * *vlen_p its length, *ttl_left_p (may be NULL) the ms left or -1 for no expiry.
 * 0 on a miss (absent or expired), -1 when out of memory. Counts the namespace's hits/misses. */
int cache_store_ns_get(cache_store_t *self, const char *ns, const char *key, uint8_t **value_p,
                       size_t *vlen_p, int64_t *ttl_left_p);
/* 1 when a live entry was removed, 0 when there was none. */
int cache_store_ns_delete(cache_store_t *self, const char *ns, const char *key);
/* Removes every entry of ns for which match(key, ctx) returns nonzero (match NULL: all of
 * them; match is called under the store's mutex and must not call the store). O(n) over the
 * whole table. Returns how many live entries were removed. Not counted as evictions. */
int64_t cache_store_ns_delete_matching(cache_store_t *self, const char *ns,
                                       int (*match)(const char *key, void *ctx), void *ctx);
/* Removes every entry of ns whose key starts with prefix. Count as above. */
int64_t cache_store_ns_delete_prefix(cache_store_t *self, const char *ns, const char *prefix);
/* Empties ns (the same as delete_matching with match NULL). */
int64_t cache_store_ns_clear(cache_store_t *self, const char *ns);
/* Copies ns's statistics into *out. 0 or CACHE_STORE_NO_NS. */
int cache_store_ns_stats(cache_store_t *self, const char *ns, cache_store_ns_stats_t *out);
/* Namespaces in registration order: their number, and the stats of
 * the i-th (0, or -1 when i is out of range). */
size_t cache_store_ns_count(cache_store_t *self);
int cache_store_ns_stats_at(cache_store_t *self, size_t i, cache_store_ns_stats_t *out);

/* ---- the whole store ---------------------------------------------------------------------- */

/* Removes everything in every namespace (counted neither as evictions nor expirations). */
void cache_store_clear(cache_store_t *self);
/* Examines up to `buckets` buckets from a rotating cursor and removes expired entries there
 * (any namespace). Returns how many were removed. Called from a timer so idle expired entries
 * free memory. */
size_t cache_store_expire(cache_store_t *self, size_t buckets);
/* Totals over every namespace. */
void cache_store_stats(cache_store_t *self, cache_store_stats_t *out);

/* ---- snapshots (cache_snapshot.h) ------------------------------------------------------- */

#define CACHE_STORE_HASH_KEY_BYTES 16

/* One live entry, copied out. */
typedef struct {
    size_t   ns;            /* the namespace's index, in registration order */
    char    *key;           /* NUL-terminated */
    uint8_t *value;
    size_t   vlen;
    int64_t  ttl_left_ms;   /* -1: no expiry */
    unsigned freq;          /* the namespace's W-TinyLFU sketch estimate, 0 for other policies */
} cache_store_item_t;

/* Copies up to max live entries of every namespace into *items_p (*n_p of them; caller frees
 * with cache_store_items_free), the hottest first: highest sketch estimate, then longest time
 * to live. Sorting and copying run under the store's mutex: O(n log n) in the entries held,
 * once per snapshot. 0, or -1 when out of memory. */
int cache_store_export(cache_store_t *self, size_t max, cache_store_item_t **items_p,
                       size_t *n_p);
void cache_store_items_free(cache_store_item_t *items, size_t n);
/* The hash key (SipHash key): a sketch means something only under the key it was built
 * with. set: only into an empty store (0), else -1 and nothing changes. */
void cache_store_hash_key(cache_store_t *self, uint8_t key[CACHE_STORE_HASH_KEY_BYTES]);
int cache_store_set_hash_key(cache_store_t *self, const uint8_t key[CACHE_STORE_HASH_KEY_BYTES]);
/* The namespace's frequency sketch, W-TinyLFU only: words gets its size in 64-bit words (0:
 * the policy has none). get copies at most cap words into table and the increment count into
 * *size; put loads one of exactly that size. 0, -1, or CACHE_STORE_NO_NS. */
int cache_store_ns_sketch_get(cache_store_t *self, const char *ns, uint64_t *table, size_t cap,
                              size_t *words, uint64_t *size);
int cache_store_ns_sketch_put(cache_store_t *self, const char *ns, const uint64_t *table,
                              size_t words, uint64_t size);
/* The sketch's estimate for key (0..15), or -1 when the policy has no sketch. */
int cache_store_ns_frequency(cache_store_t *self, const char *ns, const char *key);

#endif
