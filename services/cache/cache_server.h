/* cache_server: the cache daemon's loop. Serves the `cache` MDP service (Get, MGet, Set,
 * Delete, InvalidatePrefix, InvalidatePattern, Clear, Health, Stats; docs/CONTRACTS.md) over a
 * local tier (cache_store) kept coherent (cache_tracking) with Redis (cache_redis), for the
 * namespaces of a declared table (cache_namespace). Redis being down never fails a call: reads
 * fall back to the local tier, writes go to the local tier only. */
#ifndef CACHE_SERVER_H
#define CACHE_SERVER_H
#include "qv_config.h"
#include "qv_rpc.h"
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    QV_COMMON_CFG_FIELDS
    char   *redis_url;
    int64_t local_max_entries;
    int64_t local_max_bytes;
    int64_t cache_ttl;          /* seconds: the default TTL when a Set gives ttl_ms 0 */
    bool    cache_enabled;      /* false: every Get misses and Set/Delete do nothing */
    int64_t max_key_bytes;
    int64_t max_value_bytes;
    int64_t redis_timeout_ms;
    char   *namespaces;         /* the namespace table (cache_namespace.h); NULL = default */
    int64_t local_max_ttl_ms;   /* no local copy lives longer, whatever its TTL */
    int64_t negative_ttl_ms;    /* GetOrLoad: a loader's 404 is remembered this long */
    int64_t grace_ms;           /* GetOrLoad: stale-while-revalidate window past the TTL */
    double  xfetch_beta;        /* GetOrLoad: XFetch's beta (0: no early refresh) */
    int64_t load_timeout_ms;    /* GetOrLoad: loader timeout when the caller set no deadline */
    char   *snapshot_path;      /* snapshot file (cache_snapshot.h); NULL or "" = none */
    int64_t snapshot_interval_s;/* also written this often (0: at shutdown only) */
} cache_cfg_t;

/* Runs until SIGINT/SIGTERM. cfg is borrowed. Returns 0 on a clean stop, -1 if it could not
 * start (message logged). */
int cache_server_run(const cache_cfg_t *cfg);

/* The application state and the handlers, exposed for the selftest, which drives them through
 * qv_dispatch without a broker. */
typedef struct cache_app_t cache_app_t;
/* redis_url NULL = no Redis tier at all (selftests). Caller owns; cache_app_destroy frees. */
cache_app_t *cache_app_new(const cache_cfg_t *cfg, const char *redis_url);
void cache_app_destroy(cache_app_t **self_p);
/* Where the app publishes its metrics (may stay unset). Borrowed; must outlive the app. */
void cache_app_set_metrics(cache_app_t *self, qv_metrics_t *metrics);
/* The timer's work: Redis reconnects, expiry sweep, gauges. (Invalidations arrive on the
 * tracking thread, not here.) */
void cache_app_tick(void *app);
/* Snapshots (cache_snapshot.h). save: writes cfg->snapshot_path (the timer's function, and
 * the stop path's). load: at start, before serving; a missing, corrupt or foreign file is
 * logged and ignored. Entries are kept only when Redis is up and still holds the same bytes
 * (one MGET per batch); with Redis down only the sketches are restored. */
void cache_app_snapshot_save(void *app);
void cache_app_snapshot_load(cache_app_t *self);
/* The app's local tier, borrowed (for tests that plant values in it). */
struct cache_store_t *cache_app_store(cache_app_t *self);
/* The app's GetOrLoad state (cache_load.h), borrowed (for tests that inject a loader). */
struct cache_load_t *cache_app_load(cache_app_t *self);
/* True when the app has a Redis tier and it is up (for tests). */
bool cache_redis_up_for_test(cache_app_t *self);
/* Splits a Redis key "quaver:<ns>:<key>" (len bytes, not NUL-terminated) into the namespace
 * (NUL-terminated into ns, nslen bytes) and the key within it (*key_p points into full,
 * *klen_p bytes). 0, or -1 when full is not of that form or the name does not fit. */
int cache_server_split_key(const char *full, size_t len, char *ns, size_t nslen,
                           const char **key_p, size_t *klen_p);
/* The tracking sink's on_key: drops the local copy of the Redis key full; a key of a namespace
 * not in the table is ignored. Exposed for the selftest. */
void cache_app_on_inval_key(void *app, const char *full, size_t len);
/* ---- in-process use (cache_embed.h: the gateway runs an app as its own local tier) ----
 * The same checks, codec, tiers, coherence and statistics as the RPC methods of the same
 * name. err gets the reason of a -1 (bad input: the text an RPC would send with its 400) or
 * -2 (out of memory). Thread-safe. */
/* 1 hit (*val_p malloc'd, caller frees; *tier_p "local" or "redis", static), 0 miss. */
int cache_app_get(cache_app_t *self, const char *ns, const char *key, uint8_t **val_p,
                  size_t *vlen_p, const char **tier_p, char *err, size_t errlen);
/* ttl_ms 0: the namespace's. 0 stored (or deliberately not: cache disabled, Redis refused). */
int cache_app_set(cache_app_t *self, const char *ns, const char *key, const void *value,
                  size_t vlen, int64_t ttl_ms, bool msgpack, const char *req_id, char *err,
                  size_t errlen);
/* Both tiers. 1 removed, 0 there was nothing. */
int cache_app_delete(cache_app_t *self, const char *ns, const char *key, char *err,
                     size_t errlen);
/* Drops the local copies of namespace ns (NULL or "": all), leaving Redis alone: for a caller
 * that just had another process clear Redis and must not wait for the invalidations. */
void cache_app_forget_local(cache_app_t *self, const char *ns);
/* The Stats reply (ns.<name>.<stat> and global names, then the metrics registry) with
 * `service` as its service name. Caller frees with qv_stats_reply_free. NULL: no memory. */
Quaver__V1__StatsReply *cache_app_stats(cache_app_t *self, const char *service);

/* The method table (ends with a NULL name). */
extern const qv_method_t cache_methods[];
#endif
