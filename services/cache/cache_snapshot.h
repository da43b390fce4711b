/* cache_snapshot: the local tier's hottest entries and the W-TinyLFU frequency sketches, saved
 * to a file (at shutdown and on a timer) and loaded at start, so a restarted replica does not
 * begin cold.
 *
 * What is saved: up to CACHE_SNAPSHOT_MAX_ENTRIES live entries over all namespaces, hottest
 * first (cache_store_export: highest sketch estimate, then longest time to live; namespaces
 * without a sketch rank by time to live only), each with its value as stored (codec header
 * included) and its remaining TTL; every W-TinyLFU namespace's sketch; the store's hash key
 * (a sketch is indexed by keyed hashes, so it means nothing under another key: the file is
 * therefore written 0600, like the values it holds).
 *
 * File: "QVCSNAP\0", version (u32), crc32 (zlib) of the body (u32), body length (u64), then the
 * body (little-endian): written time (unix ms), hash key, namespaces (name, sketch), entries
 * (namespace, key, value, TTL left). Written to <path>.tmp, fsync'd, renamed over path, and the
 * directory fsync'd: a crash leaves the old snapshot or the new one, never half of one.
 *
 * Loading never trusts the file: it is read whole and checked whole (magic, version, length,
 * crc32, then every record's bounds) before anything is applied; a file that fails any check
 * is ignored as a whole. Entries whose TTL has passed (TTL left minus the time since the file
 * was written) are skipped, and so are namespaces the table no longer has. */
#ifndef CACHE_SNAPSHOT_H
#define CACHE_SNAPSHOT_H
#include <stddef.h>
#include <stdint.h>
#include "cache_store.h"
#include "cache_warmup.h"

#define CACHE_SNAPSHOT_MAGIC        "QVCSNAP"    /* 8 bytes with its NUL */
#define CACHE_SNAPSHOT_VERSION      1
#define CACHE_SNAPSHOT_MAX_ENTRIES  10000

typedef struct cache_snapshot_t cache_snapshot_t;

/* Writes store's snapshot to path atomically (see above), creating the parent directory if
 * needed. *entries_p (may be NULL) gets the number of entries written. 0, or -1 with the
 * reason in err. */
int cache_snapshot_write(cache_store_t *store, const char *path, size_t max_entries,
                         size_t *entries_p, char *err, size_t errlen);

/* Reads and checks path whole. NULL with the reason in err: *missing_p (may be NULL) is 1
 * when the file does not exist, 0 when it is unreadable, corrupt, truncated or of another
 * version. Caller owns the result (cache_snapshot_destroy). max_bytes: a larger file is
 * refused unread. */
cache_snapshot_t *cache_snapshot_read(const char *path, size_t max_bytes, int *missing_p,
                                      char *err, size_t errlen);
void cache_snapshot_destroy(cache_snapshot_t **self_p);
size_t cache_snapshot_entries(const cache_snapshot_t *self);

/* How entries reach the store: n keys of namespace ns, with what the snapshot holds for each
 * (value and TTL left). Returns how many were stored (< 0: none). The server passes a loader
 * that keeps an entry only when Redis still holds the same bytes (cache_warmup_keys);
 * cache_snapshot_load_direct stores them as they are, for a store with no Redis behind it. */
typedef int64_t (*cache_snapshot_load_fn)(void *ctx, const char *ns, const char *const *keys,
                                          const cache_warmup_expect_t *expect, size_t n);
int64_t cache_snapshot_load_direct(void *store, const char *ns, const char *const *keys,
                                   const cache_warmup_expect_t *expect, size_t n);

typedef struct {
    size_t loaded;     /* entries stored */
    size_t expired;    /* skipped: TTL passed while we were down */
    size_t refused;    /* skipped: the loader did not keep them (changed in Redis, ...) */
    size_t unknown;    /* skipped: namespace not in the store */
    size_t sketches;   /* sketches restored */
} cache_snapshot_stats_t;

/* Applies a checked snapshot to an empty store: the hash key, then the entries (coldest first,
 * so the hottest end up most recent; load NULL = entries skipped, sketches only), then the
 * sketches (last, so the loads' own counting does not change them; a sketch of another size,
 * e.g. after local_max_entries changed, is skipped). now_unix_ms: the wall clock. */
void cache_snapshot_apply(const cache_snapshot_t *self, cache_store_t *store, int64_t now_unix_ms,
                          cache_snapshot_load_fn load, void *ctx, cache_snapshot_stats_t *out);
#endif
