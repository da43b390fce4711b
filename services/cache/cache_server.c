/* cache_server: the `cache` service. Validation happens before anything is touched, so a bad
 * request (400) stores nothing. Every call names a namespace of the declared table
 * (cache_namespace.h); an unknown one is a 400 that lists the known ones.
 *
 * Reads go local tier -> Redis -> miss; a Redis hit is copied into the local tier only through
 * cache_tracking_commit with the ticket taken before the GET was sent, so a reply that an
 * invalidation overtook is never cached (Redis's placeholder rule). Writes go to Redis first
 * and then, if no other write or invalidation of the key came in between, to the local tier.
 * A local copy lives at most min(the entry's TTL, Redis's PTTL, local_max_ttl_ms), so nothing
 * lives forever locally even if an invalidation is lost.
 *
 * Redis being down never fails a call (DESIGN.md "Failure"): the call is served by the local
 * tier alone; writes and deletes seen meanwhile are replayed as UNLINKs on reconnect, and the
 * local tier is flushed then. */
#include "cache_server.h"
#include "cache_store.h"
#include "cache_redis.h"
#include "cache_tracking.h"
#include "cache_namespace.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "quaver/v1/cache.pb-c.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_TICK_MS        250
#define S_SWEEP_BUCKETS  1024   /* per tick: a full sweep of a 10k-entry table takes ~4 s */
#define S_MGET_MAX_KEYS  1024

/* Per-namespace counters (atomics: bumped from every worker thread). */
typedef struct {
    _Atomic uint64_t hits_local, hits_redis, misses, sets, deletes, redis_round_trips,
                     redis_errors, stale_replies;
    qv_metric_t     *m_hits, *m_misses;
} s_ns_stats_t;

struct cache_app_t {
    const cache_cfg_t  *cfg;
    cache_namespaces_t *namespaces;
    s_ns_stats_t        ns_stats[CACHE_NS_MAX];
    cache_store_t      *store;
    cache_tracking_t   *tracking;
    cache_redis_t      *redis;        /* NULL: no shared tier (selftests) */
    int64_t             started_ms;
    qv_metrics_t       *metrics;
    qv_metric_t        *m_hits_local, *m_hits_redis, *m_misses, *m_entries, *m_bytes,
                       *m_evictions, *m_redis_errors, *m_redis_up, *m_invalidations,
                       *m_flushes;
    /* Counters mirror totals kept elsewhere: the last value added, so only deltas are added. */
    pthread_mutex_t mu;
    uint64_t       seen_evictions, seen_redis_errors, seen_inval_keys, seen_flushes;
};

/* ---- validation ----------------------------------------------------------------------- */

static const cache_namespace_t *s_check_namespace(const cache_app_t *a, const char *ns,
                                                  bool allow_all, char *err, size_t len)
{
    if (!ns || !*ns) {
        if (!allow_all) snprintf(err, len, "namespace is empty (known: %s)",
                                 cache_namespaces_list(a->namespaces));
        return NULL;
    }
    const cache_namespace_t *n = cache_namespaces_find(a->namespaces, ns);
    if (!n)
        snprintf(err, len, "unknown namespace '%.64s%s' (known: %s)", ns,
                 strlen(ns) > 64 ? "..." : "", cache_namespaces_list(a->namespaces));
    return n;
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

/* How long a local copy may live: the entry's TTL, Redis's PTTL when known, never more than
 * local_max_ttl_ms. */
static int64_t s_local_ttl(const cache_app_t *a, int64_t ttl_ms, int64_t pttl_ms)
{
    int64_t t = ttl_ms;
    if (pttl_ms > 0 && pttl_ms < t) t = pttl_ms;
    if (a->cfg->local_max_ttl_ms > 0 && a->cfg->local_max_ttl_ms < t) t = a->cfg->local_max_ttl_ms;
    return t > 0 ? t : 1;
}

static void s_inc(_Atomic uint64_t *c) { atomic_fetch_add(c, 1); }
static void s_count(qv_metric_t *m) { if (m) qv_metric_add(m, 1); }

/* ---- local tier, through the version table ------------------------------------------ */

typedef struct {
    cache_store_t *store;
    const char    *key;
    const void    *value;
    size_t         vlen;
    int64_t        ttl_ms;
} s_put_t;

static void s_put(void *ctx)
{
    s_put_t *p = ctx;
    if (cache_store_set(p->store, p->key, p->value, p->vlen, p->ttl_ms) != 0)
        qv_debug("value for %s not kept locally (too big)", p->key);
}

/* Copies a value into the local tier if ticket t still holds; counts a stale reply if not. */
static void s_commit(cache_app_t *a, s_ns_stats_t *st, const char *key, cache_ticket_t t,
                     const void *value, size_t vlen, int64_t ttl_ms)
{
    if ((int64_t) vlen > a->cfg->max_value_bytes) return;
    s_put_t p = { a->store, key, value, vlen, ttl_ms };
    if (!cache_tracking_commit(a->tracking, key, t, s_put, &p)) s_inc(&st->stale_replies);
}

/* ---- tracking sink ------------------------------------------------------------------ */

static void s_on_inval_key(void *ctx, const char *key, size_t len)
{
    cache_app_t *a = ctx;
    char buf[1024];
    char *k = len < sizeof buf ? buf : malloc(len + 1);
    if (!k) { cache_tracking_flush(a->tracking); return; }   /* cannot name it: drop all */
    memcpy(k, key, len);
    k[len] = 0;
    (void) cache_store_delete(a->store, k);
    if (k != buf) free(k);
}

static void s_on_inval_flush(void *ctx)
{
    cache_app_t *a = ctx;
    cache_store_clear(a->store);
}

/* ---- metrics -------------------------------------------------------------------------- */

static void s_update_gauges(cache_app_t *a)
{
    if (!a->metrics) return;
    cache_store_stats_t st;
    cache_store_stats(a->store, &st);
    cache_tracking_stats_t ts;
    cache_tracking_stats(a->tracking, &ts);
    uint64_t errs = a->redis ? cache_redis_errors(a->redis) : 0;
    pthread_mutex_lock(&a->mu);
    qv_metric_set(a->m_entries, (double) st.entries);
    qv_metric_set(a->m_bytes, (double) st.bytes);
    qv_metric_add(a->m_evictions, (double) (st.evictions - a->seen_evictions));
    a->seen_evictions = st.evictions;
    qv_metric_add(a->m_redis_errors, (double) (errs - a->seen_redis_errors));
    a->seen_redis_errors = errs;
    qv_metric_add(a->m_invalidations, (double) (ts.keys - a->seen_inval_keys));
    a->seen_inval_keys = ts.keys;
    qv_metric_add(a->m_flushes, (double) (ts.flushes - a->seen_flushes));
    a->seen_flushes = ts.flushes;
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
    a->m_invalidations = qv_metrics_counter(m, "quaver_cache_invalidations_total",
                                            "keys Redis said changed (client tracking)", NULL);
    a->m_flushes = qv_metrics_counter(m, "quaver_cache_local_flushes_total",
                                      "local tier flushes (Redis flush, lost invalidations, "
                                      "reconnect)", NULL);
    for (size_t i = 0; i < cache_namespaces_count(a->namespaces); i++) {
        char label[96];
        snprintf(label, sizeof label, "namespace=%s", cache_namespaces_at(a->namespaces, i)->name);
        a->ns_stats[i].m_hits = qv_metrics_counter(m, "quaver_cache_namespace_hits_total",
                                                   "hits (either tier) by namespace", label);
        a->ns_stats[i].m_misses = qv_metrics_counter(m, "quaver_cache_namespace_misses_total",
                                                     "misses by namespace", label);
    }
    s_update_gauges(a);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* Redis is back. While it was away other replicas may have changed or invalidated keys we
 * hold locally, and we could not see it; the local tier is only a copy, so we drop all of it
 * rather than serve values of unknown age. Runs before the connection is usable, so no
 * request sees Redis up and the old local tier at once; the epoch bump also voids any reply
 * still in flight from before. */
static void s_flush_on_reconnect(void *app)
{
    cache_app_t *a = app;
    cache_tracking_flush(a->tracking);
    qv_info("redis back: local tier flushed");
}

cache_app_t *cache_app_new(const cache_cfg_t *cfg, const char *redis_url)
{
    cache_app_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->cfg = cfg;
    a->started_ms = qv_mono_ms();
    pthread_mutex_init(&a->mu, NULL);
    char err[256];
    a->namespaces = cache_namespaces_parse(cfg->namespaces ? cfg->namespaces
                                                           : CACHE_NAMESPACES_DEFAULT,
                                           cfg->cache_ttl * 1000, err, sizeof err);
    if (!a->namespaces) {
        qv_error("config key 'namespaces': %s", err);
        cache_app_destroy(&a);
        return NULL;
    }
    for (size_t i = 0; i < CACHE_NS_MAX; i++) {
        s_ns_stats_t *st = &a->ns_stats[i];
        atomic_init(&st->hits_local, 0); atomic_init(&st->hits_redis, 0);
        atomic_init(&st->misses, 0); atomic_init(&st->sets, 0); atomic_init(&st->deletes, 0);
        atomic_init(&st->redis_round_trips, 0); atomic_init(&st->redis_errors, 0);
        atomic_init(&st->stale_replies, 0);
    }
    a->store = cache_store_new((size_t) cfg->local_max_entries, (size_t) cfg->local_max_bytes,
                               "lru");
    if (!a->store) { qv_error("cannot create the local tier"); cache_app_destroy(&a); return NULL; }
    a->tracking = cache_tracking_new((cache_tracking_sink_t){ s_on_inval_key, s_on_inval_flush,
                                                              a });
    if (!a->tracking) { qv_error("out of memory"); cache_app_destroy(&a); return NULL; }
    if (redis_url) {
        a->redis = cache_redis_new(redis_url, (int) cfg->redis_timeout_ms, a->tracking);
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
    /* The tracking thread calls into the Redis tier and the store: stop it first. */
    cache_tracking_destroy(&a->tracking);
    cache_redis_destroy(&a->redis);
    cache_store_destroy(&a->store);
    cache_namespaces_destroy(&a->namespaces);
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

static int s_ok(qv_reply_t *r, const ProtobufCMessage *m)
{
    return qv_reply_set(r, m) == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

/* Looks key up in both tiers; fills rep (value in *val_p, caller frees). */
static void s_lookup(cache_app_t *a, const cache_namespace_t *ns, const char *key,
                     Quaver__V1__CacheGetReply *rep, uint8_t **val_p)
{
    s_ns_stats_t *st = &a->ns_stats[ns->index];
    uint8_t *val = NULL;
    size_t vlen = 0;
    int64_t pttl = -1;
    cache_ticket_t t = { 0, 0 };
    int hit = cache_store_get(a->store, key, &val, &vlen, NULL);
    if (hit == 1) {
        rep->tier = "local";
        s_inc(&st->hits_local);
        s_count(a->m_hits_local);
    } else if (a->redis && (hit = cache_redis_get(a->redis, key, &val, &vlen, &pttl, &t)) == 1) {
        s_inc(&st->redis_round_trips);
        s_commit(a, st, key, t, val, vlen, s_local_ttl(a, ns->ttl_ms, pttl));
        rep->tier = "redis";
        s_inc(&st->hits_redis);
        s_count(a->m_hits_redis);
    } else {
        if (hit == 0 || hit == -2) s_inc(&st->redis_round_trips);
        if (hit == -2) s_inc(&st->redis_errors);
        hit = 0;
    }
    if (hit == 1) {
        rep->found = true;
        rep->value.data = val;
        rep->value.len = vlen;
        s_count(st->m_hits);
    } else {
        s_inc(&st->misses);
        s_count(a->m_misses);
        s_count(st->m_misses);
    }
    *val_p = val;
}

static int s_get(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheKey *req = (const Quaver__V1__CacheKey *) msg;
    char err[512];
    const cache_namespace_t *ns = s_check_namespace(a, req->namespace_, false, err, sizeof err);
    if (!ns || s_check_key(a, req->key, false, "key", err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);

    Quaver__V1__CacheGetReply rep = QUAVER__V1__CACHE_GET_REPLY__INIT;
    if (!a->cfg->cache_enabled) {
        s_inc(&a->ns_stats[ns->index].misses);
        s_count(a->m_misses);
        return s_ok(r, &rep.base);
    }
    char *key = s_full_key(req->namespace_, req->key);
    if (!key) return qv_reply_error(r, 500, "out of memory");
    uint8_t *val = NULL;
    s_lookup(a, ns, key, &rep, &val);
    int rc = s_ok(r, &rep.base);
    free(val);
    free(key);
    return rc;
}

static int s_mget(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheMGetRequest *req = (const Quaver__V1__CacheMGetRequest *) msg;
    char err[512];
    const cache_namespace_t *ns = s_check_namespace(a, req->namespace_, false, err, sizeof err);
    if (!ns) return qv_reply_error(r, 400, "%s", err);
    if (req->n_keys > S_MGET_MAX_KEYS)
        return qv_reply_error(r, 400, "MGet has %zu keys, over %d", req->n_keys, S_MGET_MAX_KEYS);
    for (size_t i = 0; i < req->n_keys; i++) {
        char what[32];
        snprintf(what, sizeof what, "keys[%zu]", i);
        if (s_check_key(a, req->keys[i], false, what, err, sizeof err) != 0)
            return qv_reply_error(r, 400, "%s", err);
    }
    s_ns_stats_t *st = &a->ns_stats[ns->index];
    size_t n = req->n_keys;
    Quaver__V1__CacheMGetReply rep = QUAVER__V1__CACHE_MGET_REPLY__INIT;
    Quaver__V1__CacheGetReply *items = calloc(n ? n : 1, sizeof *items);
    Quaver__V1__CacheGetReply **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    char **keys = calloc(n ? n : 1, sizeof *keys);
    uint8_t **vals = calloc(n ? n : 1, sizeof *vals);
    const char **miss_keys = calloc(n ? n : 1, sizeof *miss_keys);
    size_t *miss_idx = calloc(n ? n : 1, sizeof *miss_idx);
    cache_redis_value_t *rv = calloc(n ? n : 1, sizeof *rv);
    int rc = 500;
    if (!items || !ptrs || !keys || !vals || !miss_keys || !miss_idx || !rv) goto done;
    size_t nmiss = 0;
    for (size_t i = 0; i < n; i++) {
        quaver__v1__cache_get_reply__init(&items[i]);
        ptrs[i] = &items[i];
        if (!a->cfg->cache_enabled) continue;
        if (!(keys[i] = s_full_key(req->namespace_, req->keys[i]))) goto done;
        size_t vlen = 0;
        if (cache_store_get(a->store, keys[i], &vals[i], &vlen, NULL) == 1) {
            items[i].found = true;
            items[i].tier = "local";
            items[i].value.data = vals[i];
            items[i].value.len = vlen;
            s_inc(&st->hits_local);
            s_count(a->m_hits_local);
            s_count(st->m_hits);
        } else {
            miss_keys[nmiss] = keys[i];
            miss_idx[nmiss++] = i;
        }
    }
    if (nmiss > 0 && a->redis) {
        int mr = cache_redis_mget(a->redis, miss_keys, nmiss, rv);
        if (mr != -1) s_inc(&st->redis_round_trips);
        if (mr == -2) s_inc(&st->redis_errors);
        for (size_t m = 0; mr == 0 && m < nmiss; m++) {
            if (!rv[m].found) continue;
            size_t i = miss_idx[m];
            s_commit(a, st, keys[i], rv[m].ticket, rv[m].value, rv[m].vlen,
                     s_local_ttl(a, ns->ttl_ms, rv[m].pttl));
            vals[i] = rv[m].value;
            rv[m].value = NULL;
            items[i].found = true;
            items[i].tier = "redis";
            items[i].value.data = vals[i];
            items[i].value.len = rv[m].vlen;
            s_inc(&st->hits_redis);
            s_count(a->m_hits_redis);
            s_count(st->m_hits);
        }
    }
    for (size_t i = 0; i < n; i++)
        if (!items[i].found) { s_inc(&st->misses); s_count(a->m_misses); s_count(st->m_misses); }
    rep.values = ptrs;
    rep.n_values = n;
    rc = s_ok(r, &rep.base);
done:
    for (size_t i = 0; keys && vals && i < n; i++) { free(keys[i]); free(vals[i]); }
    for (size_t i = 0; rv && i < n; i++) free(rv[i].value);
    free(items); free(ptrs); free(keys); free(vals); free(miss_keys); free(miss_idx); free(rv);
    return rc == 500 ? qv_reply_error(r, 500, "out of memory") : rc;
}

static int s_set(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheSetRequest *req = (const Quaver__V1__CacheSetRequest *) msg;
    char err[512];
    const cache_namespace_t *ns = s_check_namespace(a, req->namespace_, false, err, sizeof err);
    if (!ns || s_check_key(a, req->key, false, "key", err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);
    if ((int64_t) req->value.len > a->cfg->max_value_bytes)
        return qv_reply_error(r, 400, "value is %zu bytes, over max_value_bytes %lld",
                              req->value.len, (long long) a->cfg->max_value_bytes);
    if (req->ttl_ms < 0)
        return qv_reply_error(r, 400, "ttl_ms is negative (%lld); 0 means the namespace's "
                              "(%lld)", (long long) req->ttl_ms, (long long) ns->ttl_ms);

    Quaver__V1__Empty empty = QUAVER__V1__EMPTY__INIT;
    if (!a->cfg->cache_enabled) return s_ok(r, &empty.base);
    s_ns_stats_t *st = &a->ns_stats[ns->index];
    s_inc(&st->sets);
    char *key = s_full_key(req->namespace_, req->key);
    if (!key) return qv_reply_error(r, 500, "out of memory");
    int64_t ttl = req->ttl_ms > 0 ? req->ttl_ms : ns->ttl_ms;
    int64_t local_ttl = s_local_ttl(a, ttl, -1);
    cache_ticket_t t;
    int rr = a->redis ? cache_redis_set(a->redis, key, req->value.data, req->value.len, ttl, &t)
                      : -1;
    if (rr != -1) s_inc(&st->redis_round_trips);
    if (rr == 0) {
        s_commit(a, st, key, t, req->value.data, req->value.len, local_ttl);
    } else if (rr == -1) {
        /* Redis down (or none): the local tier alone; the key is UNLINKed on reconnect. */
        t = cache_tracking_bump(a->tracking, key);
        s_commit(a, st, key, t, req->value.data, req->value.len, local_ttl);
    } else {
        /* Redis refused it (e.g. out of memory) and may still hold an older value: keep no
         * local copy that would disagree with it. */
        s_inc(&st->redis_errors);
        (void) cache_tracking_bump(a->tracking, key);
        (void) cache_store_delete(a->store, key);
        qv_log(QV_LOG_WARN, call->request_id, "redis SET %s failed; not cached", key);
    }
    free(key);
    return s_ok(r, &empty.base);
}

static int s_delete(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheKey *req = (const Quaver__V1__CacheKey *) msg;
    char err[512];
    const cache_namespace_t *ns = s_check_namespace(a, req->namespace_, false, err, sizeof err);
    if (!ns || s_check_key(a, req->key, false, "key", err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);
    s_ns_stats_t *st = &a->ns_stats[ns->index];
    s_inc(&st->deletes);
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    /* Deleting works even with cache_enabled off: turning the cache off must not keep a
     * stale value alive in Redis for the replicas that still have it on. Local first (after
     * a bump, so no reply in flight re-inserts it), then Redis (which bumps again before the
     * UNLINK, in Redis's order). */
    char *key = s_full_key(req->namespace_, req->key);
    if (!key) return qv_reply_error(r, 500, "out of memory");
    (void) cache_tracking_bump(a->tracking, key);
    int local = cache_store_delete(a->store, key);
    int remote = a->redis ? cache_redis_del(a->redis, key) : -1;
    if (remote != -1) s_inc(&st->redis_round_trips);
    if (remote == -2) s_inc(&st->redis_errors);
    rep.removed = (local > 0 || remote > 0) ? 1 : 0;
    free(key);
    return s_ok(r, &rep.base);
}

/* Removes from both tiers what matches: Redis SCAN MATCH redis_match + UNLINK, and locally
 * every key starting with local_prefix that local_glob (NULL = all) matches. The epoch is
 * bumped before and after the Redis part and the local part runs twice, so no GET reply
 * in flight while the scan ran can leave a copy behind. Returns the count to report. */
static int64_t s_remove_matching(cache_app_t *a, s_ns_stats_t *st, const char *local_prefix,
                                 bool local_exact, const char *redis_match, const char *call_id)
{
    cache_tracking_bump_all(a->tracking);
    int64_t local = (int64_t) cache_store_delete_prefix(a->store, local_prefix);
    uint64_t rounds = 0;
    int64_t remote = a->redis ? cache_redis_del_match(a->redis, redis_match, &rounds) : -1;
    if (st) atomic_fetch_add(&st->redis_round_trips, rounds);
    if (remote == -2) {
        if (st) s_inc(&st->redis_errors);
        qv_log(QV_LOG_WARN, call_id, "redis invalidation of %s incomplete; replayed when Redis "
               "is back", redis_match);
    }
    cache_tracking_bump_all(a->tracking);
    local += (int64_t) cache_store_delete_prefix(a->store, local_prefix);
    /* The same logical entry usually sits in both tiers: report the larger count rather than
     * the sum, so a caller sees roughly how many keys the namespace lost. When the local part
     * removed a superset (a pattern), Redis's count is the one that means something. */
    if (!local_exact && remote >= 0) return remote;
    return remote > local ? remote : local;
}

static int s_invalidate_prefix(void *app, const qv_call_t *call, const ProtobufCMessage *msg,
                               qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CachePrefixRequest *req = (const Quaver__V1__CachePrefixRequest *) msg;
    char err[512];
    /* An empty prefix is allowed: it invalidates the whole namespace. */
    const cache_namespace_t *ns = s_check_namespace(a, req->namespace_, false, err, sizeof err);
    if (!ns || s_check_key(a, req->prefix, true, "prefix", err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);
    char *prefix = s_full_key(req->namespace_, req->prefix ? req->prefix : "");
    size_t mlen = prefix ? strlen(prefix) * 2 + 2 : 0;
    char *match = prefix ? malloc(mlen) : NULL;
    if (!match || cache_redis_match_pattern(prefix, match, mlen) != 0) {
        free(prefix); free(match);
        return qv_reply_error(r, 500, "out of memory");
    }
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    rep.removed = s_remove_matching(a, &a->ns_stats[ns->index], prefix, true, match,
                                    call->request_id);
    free(prefix);
    free(match);
    return s_ok(r, &rep.base);
}

static int s_invalidate_pattern(void *app, const qv_call_t *call, const ProtobufCMessage *msg,
                                qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CachePatternRequest *req = (const Quaver__V1__CachePatternRequest *) msg;
    char err[512];
    const cache_namespace_t *ns = s_check_namespace(a, req->namespace_, false, err, sizeof err);
    if (!ns || s_check_key(a, req->pattern, false, "pattern", err, sizeof err) != 0
        || cache_redis_glob_check(req->pattern, err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);
    /* Redis side: the namespace prefix needs no escaping ([a-z0-9_]), the pattern is the
     * caller's glob. Local side: every key under the pattern's literal prefix. That removes
     * a superset of the matches until the store offers a match-walk (the namespace-aware
     * store API); a superset only costs hits, never coherence. */
    char *match = s_full_key(req->namespace_, req->pattern);
    size_t plen = strlen(req->pattern) + 1;
    char *lit = malloc(plen);
    char *prefix = NULL;
    if (match && lit) {
        cache_redis_glob_literal_prefix(req->pattern, lit, plen);
        prefix = s_full_key(req->namespace_, lit);
    }
    if (!prefix) { free(match); free(lit); return qv_reply_error(r, 500, "out of memory"); }
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    rep.removed = s_remove_matching(a, &a->ns_stats[ns->index], prefix, false, match,
                                    call->request_id);
    free(match); free(lit); free(prefix);
    return s_ok(r, &rep.base);
}

static int s_clear(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheClearRequest *req = (const Quaver__V1__CacheClearRequest *) msg;
    char err[512];
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    const cache_namespace_t *ns = s_check_namespace(a, req->namespace_, true, err, sizeof err);
    if (req->namespace_ && *req->namespace_ && !ns) return qv_reply_error(r, 400, "%s", err);
    if (ns) {
        char *prefix = s_full_key(ns->name, "");
        char *match = s_full_key(ns->name, "*");
        if (!prefix || !match) { free(prefix); free(match); return qv_reply_error(r, 500, "oom"); }
        rep.removed = s_remove_matching(a, &a->ns_stats[ns->index], prefix, true, match,
                                        call->request_id);
        free(prefix); free(match);
        qv_log(QV_LOG_INFO, call->request_id, "cache: namespace %s cleared by %s (%lld)",
               ns->name, call->username ? call->username : "?", (long long) rep.removed);
    } else {
        rep.removed = s_remove_matching(a, NULL, "quaver:", true, "quaver:*", call->request_id);
        qv_log(QV_LOG_INFO, call->request_id, "cache: every namespace cleared by %s (%lld)",
               call->username ? call->username : "?", (long long) rep.removed);
    }
    return s_ok(r, &rep.base);
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
    return s_ok(r, &rep.base);
}

/* Appends one stat; name is copied. -1 on no memory. */
static int s_stat(Quaver__V1__StatsReply *rep, size_t *cap, const char *name, double v)
{
    if (rep->n_stats == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        Quaver__V1__Stat **n = realloc(rep->stats, nc * sizeof *n);
        if (!n) return -1;
        rep->stats = n;
        *cap = nc;
    }
    Quaver__V1__Stat *st = malloc(sizeof *st);
    char *nm = strdup(name);
    if (!st || !nm) { free(st); free(nm); return -1; }
    quaver__v1__stat__init(st);
    st->name = nm;
    st->value = v;
    rep->stats[rep->n_stats++] = st;
    return 0;
}

static double s_rate(uint64_t hits, uint64_t misses)
{
    return hits + misses ? (double) hits / (double) (hits + misses) : 0.0;
}

/* Per namespace: ns.<name>.<stat>; global: plain names (the gateway renders them as
 * {"namespaces": {ns: {stat: v}}, stat: v}). Then every metric of the registry. */
static int s_stats(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    Quaver__V1__StatsReply *rep = NULL;
    if (a->metrics) {
        s_update_gauges(a);
        rep = qv_stats_from_metrics(a->metrics, "cache");
    } else if ((rep = calloc(1, sizeof *rep))) {
        quaver__v1__stats_reply__init(rep);
        rep->service = strdup("cache");
    }
    if (!rep) return qv_reply_error(r, 500, "out of memory");
    size_t cap = rep->n_stats;
    int bad = 0;
    uint64_t hits = 0, misses = 0;
    for (size_t i = 0; i < cache_namespaces_count(a->namespaces); i++) {
        const cache_namespace_t *ns = cache_namespaces_at(a->namespaces, i);
        s_ns_stats_t *st = &a->ns_stats[i];
        uint64_t hl = atomic_load(&st->hits_local), hr = atomic_load(&st->hits_redis);
        uint64_t m = atomic_load(&st->misses);
        hits += hl + hr;
        misses += m;
        struct { const char *n; double v; } rows[] = {
            { "hits", (double) (hl + hr) }, { "hits_local", (double) hl },
            { "hits_redis", (double) hr }, { "misses", (double) m },
            { "hit_rate", s_rate(hl + hr, m) }, { "sets", (double) atomic_load(&st->sets) },
            { "deletes", (double) atomic_load(&st->deletes) },
            { "redis_round_trips", (double) atomic_load(&st->redis_round_trips) },
            { "redis_errors", (double) atomic_load(&st->redis_errors) },
            { "stale_replies", (double) atomic_load(&st->stale_replies) },
            { "ttl_ms", (double) ns->ttl_ms }, { "priority", (double) ns->priority },
            { "compress_min_bytes", (double) ns->compress_min },
        };
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
            char name[128];
            snprintf(name, sizeof name, "ns.%s.%s", ns->name, rows[k].n);
            bad |= s_stat(rep, &cap, name, rows[k].v);
        }
    }
    cache_store_stats_t ss;
    cache_store_stats(a->store, &ss);
    cache_tracking_stats_t ts;
    cache_tracking_stats(a->tracking, &ts);
    struct { const char *n; double v; } g[] = {
        { "hits", (double) hits }, { "misses", (double) misses },
        { "hit_rate", s_rate(hits, misses) },
        { "entries", (double) ss.entries }, { "bytes", (double) ss.bytes },
        { "max_entries", (double) ss.max_entries }, { "max_bytes", (double) ss.max_bytes },
        { "evictions_capacity", (double) ss.evictions },
        { "evictions_expired", (double) ss.expirations },
        { "invalidations", (double) ts.keys }, { "invalidation_messages", (double) ts.messages },
        { "local_flushes", (double) ts.flushes },
        { "tracking_reconnects", (double) ts.reconnects },
        { "stale_replies", (double) ts.stale_commits },
        { "redis_round_trips", a->redis ? (double) cache_redis_round_trips(a->redis) : 0 },
        { "redis_errors", a->redis ? (double) cache_redis_errors(a->redis) : 0 },
        { "redis_up", a->redis && cache_redis_up(a->redis) ? 1 : 0 },
    };
    for (size_t k = 0; k < sizeof g / sizeof g[0]; k++) bad |= s_stat(rep, &cap, g[k].n, g[k].v);
    int rc = bad ? qv_reply_error(r, 500, "out of memory") : s_ok(r, &rep->base);
    qv_stats_reply_free(rep);
    return rc;
}

const qv_method_t cache_methods[] = {
    { "Get",               &quaver__v1__cache_key__descriptor,             s_get,    QV_READONLY },
    { "MGet",              &quaver__v1__cache_mget_request__descriptor,    s_mget,   QV_READONLY },
    { "Set",               &quaver__v1__cache_set_request__descriptor,     s_set,    0 },
    { "Delete",            &quaver__v1__cache_key__descriptor,             s_delete, 0 },
    { "InvalidatePrefix",  &quaver__v1__cache_prefix_request__descriptor,  s_invalidate_prefix, 0 },
    { "InvalidatePattern", &quaver__v1__cache_pattern_request__descriptor, s_invalidate_pattern,
      0 },
    { "Clear",             &quaver__v1__cache_clear_request__descriptor,   s_clear,  QV_ADMIN },
    { "Health",            &quaver__v1__empty__descriptor,                 s_health, QV_READONLY },
    { "Stats",             &quaver__v1__empty__descriptor,                 s_stats,  QV_READONLY },
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
    qv_info("cache: local tier %lld entries / %lld bytes, local copies at most %lld ms, "
            "redis %s%s", (long long) cfg->local_max_entries, (long long) cfg->local_max_bytes,
            (long long) cfg->local_max_ttl_ms, where,
            cfg->cache_enabled ? "" : " (cache disabled: every Get misses)");
    for (size_t i = 0; i < cache_namespaces_count(app->namespaces); i++) {
        const cache_namespace_t *ns = cache_namespaces_at(app->namespaces, i);
        char z[32] = "off";
        if (ns->compress_min) snprintf(z, sizeof z, ">= %lld bytes", (long long) ns->compress_min);
        qv_info("cache: namespace %s ttl %lld ms, priority %s, policy %s, compress %s",
                ns->name, (long long) ns->ttl_ms, cache_priority_name(ns->priority), ns->policy,
                z);
    }
    int rc = qv_server_run(srv);
    qv_server_destroy(&srv);
    cache_app_destroy(&app);
    return rc;
}
