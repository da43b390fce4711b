/* cache_server: the `cache` service. Validation happens before anything is touched, so a bad
 * request (400) stores nothing. Reads go local tier -> Redis -> miss; writes go to both tiers
 * (local first, so the local tier answers even if the Redis write fails). Redis being down
 * never fails a call (DESIGN.md "Failure"): the call is served by the local tier alone. */
#include "cache_server.h"
#include "cache_store.h"
#include "cache_redis.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "quaver/v1/cache.pb-c.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_TICK_MS        250
#define S_SWEEP_BUCKETS  1024   /* per tick: a full sweep of a 10k-entry table takes ~4 s */

struct cache_app_t {
    const cache_cfg_t *cfg;
    cache_store_t *store;
    cache_redis_t *redis;        /* NULL: no shared tier (selftests) */
    int64_t        started_ms;
    qv_metrics_t  *metrics;
    qv_metric_t   *m_hits_local, *m_hits_redis, *m_misses, *m_entries, *m_bytes, *m_evictions,
                  *m_redis_errors, *m_redis_up;
    /* Counters mirror totals kept elsewhere: the last value added, so only deltas are added. */
    pthread_mutex_t mu;
    uint64_t       seen_evictions, seen_redis_errors;
};

/* ---- validation ----------------------------------------------------------------------- */

static int s_check_namespace(const char *ns, char *err, size_t len)
{
    if (!ns || !*ns) { snprintf(err, len, "namespace is empty"); return -1; }
    if (strlen(ns) > 64) { snprintf(err, len, "namespace is longer than 64 bytes"); return -1; }
    for (const char *p = ns; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            snprintf(err, len, "namespace may only hold [a-z0-9_]");
            return -1;
        }
    return 0;
}

static int s_check_key(const cache_app_t *a, const char *key, bool allow_empty, const char *what,
                       char *err, size_t len)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 && !allow_empty) { snprintf(err, len, "%s is empty", what); return -1; }
    if ((int64_t) n > a->cfg->max_key_bytes) {
        snprintf(err, len, "%s is %zu bytes, over max_key_bytes %lld", what, n,
                 (long long) a->cfg->max_key_bytes);
        return -1;
    }
    return 0;
}

/* "quaver:<namespace>:<key>", the name in both tiers. Caller frees. */
static char *s_full_key(const char *ns, const char *key)
{
    size_t n = 7 + strlen(ns) + 1 + strlen(key) + 1;
    char *k = malloc(n);
    if (k) snprintf(k, n, "quaver:%s:%s", ns, key);
    return k;
}

static int64_t s_default_ttl_ms(const cache_app_t *a) { return a->cfg->cache_ttl * 1000; }

/* ---- metrics -------------------------------------------------------------------------- */

static void s_count(qv_metric_t *m) { if (m) qv_metric_add(m, 1); }

static void s_update_gauges(cache_app_t *a)
{
    if (!a->metrics) return;
    cache_store_stats_t st;
    cache_store_stats(a->store, &st);
    uint64_t errs = a->redis ? cache_redis_errors(a->redis) : 0;
    pthread_mutex_lock(&a->mu);
    qv_metric_set(a->m_entries, (double) st.entries);
    qv_metric_set(a->m_bytes, (double) st.bytes);
    qv_metric_add(a->m_evictions, (double) (st.evictions - a->seen_evictions));
    a->seen_evictions = st.evictions;
    qv_metric_add(a->m_redis_errors, (double) (errs - a->seen_redis_errors));
    a->seen_redis_errors = errs;
    qv_metric_set(a->m_redis_up, a->redis && cache_redis_up(a->redis) ? 1 : 0);
    pthread_mutex_unlock(&a->mu);
}

void cache_app_set_metrics(cache_app_t *a, qv_metrics_t *m)
{
    a->metrics = m;
    if (!m) return;
    a->m_hits_local = qv_metrics_counter(m, "quaver_cache_hits_total", "cache hits by tier",
                                         "tier=local");
    a->m_hits_redis = qv_metrics_counter(m, "quaver_cache_hits_total", "cache hits by tier",
                                         "tier=redis");
    a->m_misses = qv_metrics_counter(m, "quaver_cache_misses_total", "Gets found in no tier", NULL);
    a->m_entries = qv_metrics_gauge(m, "quaver_cache_entries", "entries in the local tier", NULL);
    a->m_bytes = qv_metrics_gauge(m, "quaver_cache_bytes",
                                  "key and value bytes in the local tier", NULL);
    a->m_evictions = qv_metrics_counter(m, "quaver_cache_evictions_total",
                                        "local entries evicted to stay within the bounds", NULL);
    a->m_redis_errors = qv_metrics_counter(m, "quaver_cache_redis_errors_total",
                                           "Redis transport errors, error replies, failed "
                                           "reconnects", NULL);
    a->m_redis_up = qv_metrics_gauge(m, "quaver_cache_redis_up", "1 when Redis is reachable",
                                     NULL);
    s_update_gauges(a);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Redis is back. While it was away other replicas may have changed or invalidated keys we
 * hold locally, and we could not see it; the local tier is only a copy, so we drop all of it
 * rather than serve values of unknown age. Runs before the connection is usable, so no
 * request sees Redis up and the old local tier at once. */
static void s_flush_on_reconnect(void *app)
{
    cache_app_t *a = app;
    cache_store_clear(a->store);
    qv_info("redis back: local tier flushed");
}

cache_app_t *cache_app_new(const cache_cfg_t *cfg, const char *redis_url)
{
    cache_app_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->cfg = cfg;
    a->started_ms = qv_mono_ms();
    pthread_mutex_init(&a->mu, NULL);
    a->store = cache_store_new((size_t) cfg->local_max_entries, (size_t) cfg->local_max_bytes,
                               "lru");
    if (!a->store) { qv_error("cannot create the local tier"); cache_app_destroy(&a); return NULL; }
    if (redis_url) {
        a->redis = cache_redis_new(redis_url, (int) cfg->redis_timeout_ms);
        if (!a->redis) {
            qv_error("redis_url '%s' is not redis://[[user]:password@]host[:port][/db]",
                     redis_url);
            cache_app_destroy(&a);
            return NULL;
        }
        cache_redis_on_reconnect(a->redis, s_flush_on_reconnect, a);
    }
    return a;
}

void cache_app_destroy(cache_app_t **self_p)
{
    if (!self_p || !*self_p) return;
    cache_app_t *a = *self_p;
    cache_store_destroy(&a->store);
    cache_redis_destroy(&a->redis);
    pthread_mutex_destroy(&a->mu);
    free(a);
    *self_p = NULL;
}

bool cache_redis_up_for_test(cache_app_t *a) { return a->redis && cache_redis_up(a->redis); }

void cache_app_tick(void *app)
{
    cache_app_t *a = app;
    if (a->redis) (void) cache_redis_tick(a->redis);
    cache_store_expire(a->store, S_SWEEP_BUCKETS);
    s_update_gauges(a);
}

/* ---- handlers ------------------------------------------------------------------------- */

static int s_get(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheKey *req = (const Quaver__V1__CacheKey *) msg;
    char err[160];
    if (s_check_namespace(req->namespace_, err, sizeof err) != 0
        || s_check_key(a, req->key, false, "key", err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);

    Quaver__V1__CacheGetReply rep = QUAVER__V1__CACHE_GET_REPLY__INIT;
    if (!a->cfg->cache_enabled) {
        s_count(a->m_misses);
        return qv_reply_set(r, &rep.base) == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
    }
    char *key = s_full_key(req->namespace_, req->key);
    if (!key) return qv_reply_error(r, 500, "out of memory");
    uint8_t *val = NULL;
    size_t vlen = 0;
    int64_t ttl = -1;
    int hit = cache_store_get(a->store, key, &val, &vlen, NULL);
    if (hit == 1) {
        rep.tier = "local";
        s_count(a->m_hits_local);
    } else if (a->redis && cache_redis_get(a->redis, key, &val, &vlen, &ttl) == 1) {
        /* Keep it locally no longer than Redis will, nor than the default TTL, so a local copy
         * never outlives the namespace's freshness bound. */
        int64_t def = s_default_ttl_ms(a);
        int64_t local_ttl = ttl > 0 && ttl < def ? ttl : def;
        if ((int64_t) vlen <= a->cfg->max_value_bytes)
            (void) cache_store_set(a->store, key, val, vlen, local_ttl);
        rep.tier = "redis";
        s_count(a->m_hits_redis);
        hit = 1;
    } else {
        s_count(a->m_misses);
        hit = 0;
    }
    if (hit == 1) {
        rep.found = true;
        rep.value.data = val;
        rep.value.len = vlen;
    }
    int rc = qv_reply_set(r, &rep.base);
    free(val);
    free(key);
    return rc == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

static int s_set(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheSetRequest *req = (const Quaver__V1__CacheSetRequest *) msg;
    char err[160];
    if (s_check_namespace(req->namespace_, err, sizeof err) != 0
        || s_check_key(a, req->key, false, "key", err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);
    if ((int64_t) req->value.len > a->cfg->max_value_bytes)
        return qv_reply_error(r, 400, "value is %zu bytes, over max_value_bytes %lld",
                              req->value.len, (long long) a->cfg->max_value_bytes);
    if (req->ttl_ms < 0)
        return qv_reply_error(r, 400, "ttl_ms is negative (%lld); 0 means the default",
                              (long long) req->ttl_ms);

    Quaver__V1__Empty empty = QUAVER__V1__EMPTY__INIT;
    if (a->cfg->cache_enabled) {
        char *key = s_full_key(req->namespace_, req->key);
        if (!key) return qv_reply_error(r, 500, "out of memory");
        int64_t ttl = req->ttl_ms > 0 ? req->ttl_ms : s_default_ttl_ms(a);
        if (cache_store_set(a->store, key, req->value.data, req->value.len, ttl) != 0)
            qv_log(QV_LOG_DEBUG, call->request_id, "value for %s not kept locally (too big)", key);
        if (a->redis && cache_redis_set(a->redis, key, req->value.data, req->value.len, ttl) != 0)
            qv_log(QV_LOG_DEBUG, call->request_id, "redis SET %s failed; local tier only", key);
        free(key);
    }
    return qv_reply_set(r, &empty.base) == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

static int s_delete(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheKey *req = (const Quaver__V1__CacheKey *) msg;
    char err[160];
    if (s_check_namespace(req->namespace_, err, sizeof err) != 0
        || s_check_key(a, req->key, false, "key", err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    /* Deleting works even with cache_enabled off: turning the cache off must not keep a
     * stale value alive in Redis for the replicas that still have it on. */
    char *key = s_full_key(req->namespace_, req->key);
    if (!key) return qv_reply_error(r, 500, "out of memory");
    int local = cache_store_delete(a->store, key);
    int remote = a->redis ? cache_redis_del(a->redis, key) : -1;
    rep.removed = (local > 0 || remote > 0) ? 1 : 0;
    free(key);
    return qv_reply_set(r, &rep.base) == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

static int s_invalidate_prefix(void *app, const qv_call_t *call, const ProtobufCMessage *msg,
                               qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CachePrefixRequest *req = (const Quaver__V1__CachePrefixRequest *) msg;
    char err[160];
    /* An empty prefix is allowed: it invalidates the whole namespace. */
    if (s_check_namespace(req->namespace_, err, sizeof err) != 0
        || s_check_key(a, req->prefix, true, "prefix", err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);
    char *prefix = s_full_key(req->namespace_, req->prefix ? req->prefix : "");
    if (!prefix) return qv_reply_error(r, 500, "out of memory");
    int64_t local = (int64_t) cache_store_delete_prefix(a->store, prefix);
    int64_t remote = a->redis ? cache_redis_del_prefix(a->redis, prefix) : -1;
    /* Known down: expected, and said once by cache_redis. Failing part way: worth a warning. */
    if (a->redis && remote < 0)
        qv_log(cache_redis_up(a->redis) ? QV_LOG_WARN : QV_LOG_DEBUG, call->request_id,
               "redis prefix invalidation of %s incomplete; replayed when Redis is back", prefix);
    /* The same logical entry usually sits in both tiers: report the larger count rather than
     * the sum, so a caller sees roughly how many keys the namespace lost. */
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    rep.removed = remote > local ? remote : local;
    free(prefix);
    return qv_reply_set(r, &rep.base) == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

static int s_health(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    Quaver__V1__HealthReply rep = QUAVER__V1__HEALTH_REPLY__INIT;
    Quaver__V1__Dependency dep = QUAVER__V1__DEPENDENCY__INIT;
    Quaver__V1__Dependency *deps[1] = { &dep };
    char detail[256];
    rep.service = "cache";
    rep.instance = a->cfg->instance ? a->cfg->instance : "";
    rep.uptime_ms = qv_mono_ms() - a->started_ms;
    rep.status = "ok";
    if (a->redis) {
        bool up = cache_redis_up(a->redis);
        cache_redis_describe(a->redis, detail, sizeof detail);
        dep.name = "redis";
        dep.state = up ? "up" : "down";
        dep.detail = detail;
        rep.dependencies = deps;
        rep.n_dependencies = 1;
        if (!up) rep.status = "degraded";
    }
    return qv_reply_set(r, &rep.base) == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

static int s_stats(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    if (!a->metrics) return qv_reply_error(r, 503, "no metrics registry");
    s_update_gauges(a);
    Quaver__V1__StatsReply *rep = qv_stats_from_metrics(a->metrics, "cache");
    if (!rep) return qv_reply_error(r, 500, "out of memory");
    int rc = qv_reply_set(r, &rep->base);
    qv_stats_reply_free(rep);
    return rc == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

const qv_method_t cache_methods[] = {
    { "Get",              &quaver__v1__cache_key__descriptor,            s_get,    QV_READONLY },
    { "Set",              &quaver__v1__cache_set_request__descriptor,    s_set,    0 },
    { "Delete",           &quaver__v1__cache_key__descriptor,            s_delete, 0 },
    { "InvalidatePrefix", &quaver__v1__cache_prefix_request__descriptor, s_invalidate_prefix, 0 },
    { "Health",           &quaver__v1__empty__descriptor,                s_health, QV_READONLY },
    { "Stats",            &quaver__v1__empty__descriptor,                s_stats,  QV_READONLY },
    { NULL, NULL, NULL, 0 }
};

int cache_server_run(const cache_cfg_t *cfg)
{
    cache_app_t *app = cache_app_new(cfg, cfg->redis_url);
    if (!app) return -1;
    qv_server_t *srv = qv_server_new("cache", (const qv_common_cfg_t *) cfg, cache_methods, app);
    if (!srv) { cache_app_destroy(&app); return -1; }
    cache_app_set_metrics(app, qv_server_metrics(srv));
    qv_server_add_timer(srv, S_TICK_MS, cache_app_tick);
    /* Log host:port only: the URL may hold a password. */
    char where[256];
    cache_redis_describe(app->redis, where, sizeof where);
    qv_info("cache: local tier %lld entries / %lld bytes, default ttl %lld s, redis %s%s",
            (long long) cfg->local_max_entries, (long long) cfg->local_max_bytes,
            (long long) cfg->cache_ttl, where,
            cfg->cache_enabled ? "" : " (cache disabled: every Get misses)");
    int rc = qv_server_run(srv);
    qv_server_destroy(&srv);
    cache_app_destroy(&app);
    return rc;
}
