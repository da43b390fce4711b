/* cache_load: the `GetOrLoad` method (proto/quaver/v1/cache.proto). A Get that, on a miss,
 * calls a loader (any MDP service and method, with the caller's payload) and stores what it
 * answers. It guarantees:
 *  - Single-flight: at most one load per full key at a time in this process. Callers that miss
 *    while a load of their key runs wait for it (each bounded by its own deadline) and get its
 *    result, value or failure.
 *  - Negative caching: a loader's 404 is remembered as "absent" for negative_ttl_ms; until then
 *    the key answers found=false source "negative" without a loader call (only when neither
 *    tier holds a value: a Set always wins).
 *  - Early refresh by XFetch (Vattani, Chierichetti, Lowenstein, VLDB 2015): a hit on a loaded
 *    value refreshes it before it expires with a probability that grows as expiry nears and
 *    with the load's cost, so hot keys do not all expire, and get reloaded, at once.
 *  - Stale-while-revalidate: a loaded value past its TTL but within grace_ms is answered
 *    (source "stale") while one refresh runs.
 * What GetOrLoad knows about a loaded value (its logical expiry and how long its load took)
 * and the "absent" marks live in a bounded side table here, keyed by the full key, local to
 * this replica; the value itself is stored through the server's Set path, in both tiers, for
 * TTL + grace. See services/cache/README.md, "GetOrLoad", for the choices and their limits.
 * Thread-safe: one mutex over the in-flight table and the side table; loads run outside it. */
#ifndef CACHE_LOAD_H
#define CACHE_LOAD_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "cache_namespace.h"
#include "qv_rpc.h"
#include "quaver/v1/cache.pb-c.h"

typedef struct cache_load_t cache_load_t;

typedef struct {
    const char *broker;           /* where loaders are called (borrowed) */
    int64_t     negative_ttl_ms;  /* a 404 is remembered this long (0: not at all) */
    int64_t     grace_ms;         /* stale-while-revalidate window past the TTL (0: none) */
    double      xfetch_beta;      /* XFetch's beta; 0 turns early refresh off */
    int64_t     load_timeout_ms;  /* loader timeout when the caller set no deadline (<=0: 10 s) */
    size_t      max_entries;      /* bound of the side table (0: 10000) */
    int64_t     max_value_bytes;  /* a loader's value over this is answered but not stored */
    bool        enabled;          /* false (cache_enabled off): every call loads, nothing kept */
} cache_load_cfg_t;

/* The tiers and the loader, as cache_load sees them. The server implements the tiers over its
 * store, Redis and version table (cache_server.c). */
typedef struct {
    /* Looks (ns, key) up as Get does: local tier, then Redis, with the coherence rules and
     * Get's statistics. local_only: the local tier alone, counted nowhere (the single-flight
     * leader's re-check). 1 on a hit: *val_p the value (malloc'd, caller frees), *vlen_p,
     * *tier_p "local" or "redis" (static). 0 on a miss. */
    int  (*lookup)(void *app, const cache_namespace_t *ns, const char *key, bool local_only,
                   uint8_t **val_p, size_t *vlen_p, const char **tier_p);
    /* Stores value as Set does (both tiers) for ttl_ms. 0, or -1 when it was not stored. */
    int  (*store)(void *app, const cache_namespace_t *ns, const char *key, const void *value,
                  size_t vlen, int64_t ttl_ms, const char *request_id);
    /* Removes (ns, key) from both tiers (a refresh found that the value is gone). */
    void (*remove)(void *app, const cache_namespace_t *ns, const char *key);
    /* Calls the loader; fills *out as qv_rpc_call does. NULL: qv_rpc_call_raw through
     * cfg.broker (selftests put a fake loader here). */
    void (*call)(void *app, const char *service, const char *method, const void *payload,
                 size_t len, const qv_call_t *call, int timeout_ms, qv_result_t *out);
    void *app;
} cache_load_ops_t;

/* cfg and ops are copied (cfg.broker is borrowed and must outlive the result). nns: the
 * namespaces in the table (the statistics are per namespace index). Caller owns the result
 * (cache_load_destroy). NULL on no memory. */
cache_load_t *cache_load_new(const cache_load_cfg_t *cfg, const cache_load_ops_t *ops,
                             size_t nns);
/* No load may be running (the server's workers have stopped). */
void cache_load_destroy(cache_load_t **self_p);

/* Microseconds on any monotonic scale (default qv_mono_us), and a uniform draw in (0, 1]
 * (default: libsodium's generator). Injectable for tests; set before the object is shared. */
void cache_load_set_clock(cache_load_t *self, int64_t (*fn)(void *ctx), void *ctx);
void cache_load_set_rand(cache_load_t *self, double (*fn)(void *ctx), void *ctx);

/* Replaces the loader call (ops.call) with fn(ctx, ...); NULL: back to qv_rpc_call_raw.
 * For selftests that drive the server with a fake loader; set before the object is shared. */
void cache_load_set_loader(cache_load_t *self,
                           void (*fn)(void *ctx, const char *service, const char *method,
                                      const void *payload, size_t len, const qv_call_t *call,
                                      int timeout_ms, qv_result_t *out),
                           void *ctx);

/* Registers the Prometheus counters (labelled by namespace; names: namespace i's name).
 * m is borrowed and must outlive self. */
void cache_load_set_metrics(cache_load_t *self, qv_metrics_t *m,
                            const cache_namespaces_t *namespaces);

/* The handler, after the server has checked the namespace and the key (400s with its
 * messages). Checks the rest (loader service and method, ttl_ms), then serves the request;
 * returns the reply's status. */
int cache_load_handle(cache_load_t *self, const cache_namespace_t *ns, const qv_call_t *call,
                      const Quaver__V1__CacheGetOrLoadRequest *req, qv_reply_t *reply);

/* Per-namespace statistics, as (name, value) rows: at most CACHE_LOAD_NSTATS; returns how
 * many were written. Names are static. */
#define CACHE_LOAD_NSTATS 7
size_t cache_load_stats(cache_load_t *self, int ns_index, const char **names, double *values);

/* XFetch's rule: refresh early when now - delta * beta * ln(r) >= expiry, r in (0, 1].
 * Times in any one unit. Exposed for the selftest. */
bool cache_load_xfetch(int64_t now, int64_t delta, double beta, int64_t expiry, double r);

/* Selftests (run by cache_selftest). */
int cache_load_selftest_xfetch(void);
int cache_load_selftest_single_flight(void);
int cache_load_selftest_negative(void);
int cache_load_selftest_refresh(void);
int cache_load_selftest_errors(void);
#endif
