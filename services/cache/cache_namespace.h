/* cache_namespace: the declarative table of cache namespaces (name, TTL, priority, eviction
 * policy, compression threshold), parsed once at start from the `namespaces` config key and
 * read-only afterwards (so it is shared between threads without a lock).
 *
 * Spec: comma-separated entries `name:ttl:priority[:policy[:compress]]`
 *   name      [a-z0-9_], 1..64 bytes, unique
 *   ttl       a number with a unit: 500ms, 30s, 10m, 1h, 1d; or `default` (= cache_ttl)
 *   priority  high | medium | low   (who gives space first under pressure: low)
 *   policy    lru | lfu | fifo | random | wtinylfu | s3fifo (default lru)
 *   compress  `-` or `off` (never), or a size (1k, 512, 2m): values at least that large are
 *             compressed (default off)
 * Spaces around fields are ignored. Example (the built-in default, from the seeds):
 *   room_state:30s:high:s3fifo:-, track_queue:60s:high:s3fifo:-, user_data:10m:medium:wtinylfu:1k, ...
 * A bad spec fails the parse with a message naming the entry and what is wrong with it. */
#ifndef CACHE_NAMESPACE_H
#define CACHE_NAMESPACE_H
#include <stddef.h>
#include <stdint.h>

#define CACHE_NS_MAX       64      /* namespaces in one table */
#define CACHE_NS_NAME_MAX  64

typedef enum { CACHE_PRIO_LOW = 0, CACHE_PRIO_MEDIUM = 1, CACHE_PRIO_HIGH = 2 } cache_priority_t;

typedef struct {
    char             name[CACHE_NS_NAME_MAX + 1];
    int              index;          /* position in the table, 0..count-1 */
    int64_t          ttl_ms;         /* > 0 */
    cache_priority_t priority;
    char             policy[16];
    int64_t          compress_min;   /* 0 = never compress */
} cache_namespace_t;

typedef struct cache_namespaces_t cache_namespaces_t;

/* The seeds' six namespaces (issue 3). The policies are the trace replays' recommendations:
 * docs/BENCHMARKS.md, "Cache hit rates (tools/cachesim)", says why each was chosen. */
#define CACHE_NAMESPACES_DEFAULT \
    "room_state:30s:high:s3fifo:-, track_queue:60s:high:s3fifo:-, " \
    "user_data:10m:medium:wtinylfu:1k, file_metadata:1h:low:wtinylfu:1k, " \
    "api_response:2m:medium:s3fifo:1k, db_query:3m:high:wtinylfu:1k"

/* Parses spec. default_ttl_ms is what `default` in the ttl field means. Returns NULL and a
 * message in err on a bad spec. Caller owns the result (cache_namespaces_destroy). */
cache_namespaces_t *cache_namespaces_parse(const char *spec, int64_t default_ttl_ms,
                                           char *err, size_t errlen);
void cache_namespaces_destroy(cache_namespaces_t **self_p);

/* NULL when name is not in the table. The pointer lives as long as the table. */
const cache_namespace_t *cache_namespaces_find(const cache_namespaces_t *self, const char *name);
size_t cache_namespaces_count(const cache_namespaces_t *self);
const cache_namespace_t *cache_namespaces_at(const cache_namespaces_t *self, size_t i);
/* "room_state, track_queue, ..." for error messages; lives as long as the table. */
const char *cache_namespaces_list(const cache_namespaces_t *self);

const char *cache_priority_name(cache_priority_t p);
/* Parses "30s", "500ms", "10m", "1h", "2d" (a bare number is seconds). 0 or -1. */
int cache_namespace_parse_duration(const char *s, int64_t *ms_out);
#endif
