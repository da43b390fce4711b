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
 * Both tiers hold values in cache_codec's stored form (zlib above the namespace's threshold);
 * a stored value that does not decode is a miss and is removed.
 *
 * Redis being down never fails a call (DESIGN.md "Failure"): the call is served by the local
 * tier alone; writes and deletes seen meanwhile are replayed as UNLINKs on reconnect, and the
 * local tier is flushed then. */
#include "cache_server.h"
#include "cache_store.h"
#include "cache_redis.h"
#include "cache_tracking.h"
#include "cache_namespace.h"
#include "cache_codec.h"
#include "cache_load.h"
#include "cache_msgpack.h"
#include "cache_warmup.h"
#include "cache_snapshot.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "quaver/v1/cache.pb-c.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_TICK_MS        250
#define S_SWEEP_BUCKETS  1024   /* per tick: a full sweep of a 10k-entry table takes ~4 s */
#define S_MGET_MAX_KEYS  1024

/* Per-namespace counters (atomics: bumped from every worker thread). */
typedef struct {
    _Atomic uint64_t hits_local, hits_redis, misses, sets, deletes, redis_round_trips,
                     redis_errors, stale_replies, corrupt_values, compressed,
                     set_bytes, stored_bytes;   /* value bytes given to Set / as stored */
    qv_metric_t     *m_hits_local, *m_hits_redis, *m_misses, *m_entries, *m_bytes,
                    *m_evictions[CACHE_EVICT__COUNT];
    uint64_t         seen_ev[CACHE_EVICT__COUNT];   /* under cache_app_t.mu */
} s_ns_stats_t;

struct cache_app_t {
    const cache_cfg_t  *cfg;
    cache_namespaces_t *namespaces;
    s_ns_stats_t        ns_stats[CACHE_NS_MAX];
    cache_store_t      *store;
    cache_tracking_t   *tracking;
    cache_redis_t      *redis;        /* NULL: no shared tier (selftests) */
    cache_load_t       *load;         /* GetOrLoad (cache_load.c) */
    int64_t             started_ms;
    qv_metrics_t       *metrics;
    qv_metric_t        *m_misses, *m_redis_errors, *m_redis_up, *m_invalidations, *m_flushes;
    /* Counters mirror totals kept elsewhere: the last value added, so only deltas are added. */
    pthread_mutex_t mu;
    uint64_t       seen_redis_errors, seen_inval_keys, seen_flushes;
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
    const char    *ns;
    const char    *key;     /* within ns */
    const void    *value;
    size_t         vlen;
    int64_t        ttl_ms;
} s_put_t;

static void s_put(void *ctx)
{
    s_put_t *p = ctx;
    if (cache_store_ns_set(p->store, p->ns, p->key, p->value, p->vlen, p->ttl_ms) != 0)
        qv_debug("value for %s:%s not kept locally (too big)", p->ns, p->key);
}

/* Copies a value into the local tier under (ns, key) if ticket t, taken on the full key
 * (the tracker's and Redis's name), still holds; counts a stale reply if not. */
static void s_commit(cache_app_t *a, const cache_namespace_t *ns, const char *key,
                     const char *full, cache_ticket_t t, const void *value, size_t vlen,
                     int64_t ttl_ms)
{
    if ((int64_t) vlen > a->cfg->max_value_bytes + 1) return;   /* + the codec's header */
    /* Locally a value is kept raw (cache_codec_local_form says why). */
    uint8_t *raw = NULL;
    size_t rlen = 0;
    if (cache_codec_local_form(value, vlen, (size_t) a->cfg->max_value_bytes, &raw, &rlen) != 0)
        return;
    s_put_t p = { a->store, ns->name, key, raw ? raw : value, raw ? rlen : vlen, ttl_ms };
    if (!cache_tracking_commit(a->tracking, full, t, s_put, &p))
        s_inc(&a->ns_stats[ns->index].stale_replies);
    free(raw);
}

/* ---- tracking sink ------------------------------------------------------------------ */

int cache_server_split_key(const char *full, size_t len, char *ns, size_t nslen,
                           const char **key_p, size_t *klen_p)
{
    if (len < 7 || memcmp(full, "quaver:", 7) != 0) return -1;
    const char *n = full + 7, *end = full + len;
    const char *c = memchr(n, ':', (size_t) (end - n));
    if (!c || c == n || (size_t) (c - n) >= nslen) return -1;
    memcpy(ns, n, (size_t) (c - n));
    ns[c - n] = 0;
    *key_p = c + 1;
    *klen_p = (size_t) (end - c - 1);
    return 0;
}

/* A namespace name never holds ':' ([a-z0-9_]), so the first ':' after "quaver:" ends it and
 * the rest, colons and all, is the key. A key of a namespace we do not declare is not ours. */
void cache_app_on_inval_key(void *ctx, const char *full, size_t len)
{
    cache_app_t *a = ctx;
    char ns[CACHE_NS_NAME_MAX + 1], buf[1024];
    const char *key;
    size_t klen;
    if (cache_server_split_key(full, len, ns, sizeof ns, &key, &klen) != 0
        || !cache_namespaces_find(a->namespaces, ns))
        return;
    char *k = klen < sizeof buf ? buf : malloc(klen + 1);
    if (!k) { cache_tracking_flush(a->tracking); return; }   /* cannot name it: drop all */
    memcpy(k, key, klen);
    k[klen] = 0;
    (void) cache_store_ns_delete(a->store, ns, k);
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
    cache_tracking_stats_t ts;
    cache_tracking_stats(a->tracking, &ts);
    uint64_t errs = a->redis ? cache_redis_errors(a->redis) : 0;
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < cache_namespaces_count(a->namespaces); i++) {
        s_ns_stats_t *n = &a->ns_stats[i];
        cache_store_ns_stats_t st;
        if (cache_store_ns_stats(a->store, cache_namespaces_at(a->namespaces, i)->name, &st) != 0)
            continue;
        qv_metric_set(n->m_entries, (double) st.entries);
        qv_metric_set(n->m_bytes, (double) st.bytes);
        for (int c = 0; c < CACHE_EVICT__COUNT; c++) {
            qv_metric_add(n->m_evictions[c], (double) (st.evictions[c] - n->seen_ev[c]));
            n->seen_ev[c] = st.evictions[c];
        }
    }
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
    a->m_misses = qv_metrics_counter(m, "quaver_cache_misses_total", "Gets found in no tier", NULL);
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
    /* Labelled by namespace: the cardinality is bounded by the namespace table. */
    static const char *const causes[CACHE_EVICT__COUNT] = {
        [CACHE_EVICT_CAPACITY_ENTRIES] = "capacity_entries",
        [CACHE_EVICT_CAPACITY_BYTES] = "capacity_bytes",
        [CACHE_EVICT_EXPIRED] = "expired", [CACHE_EVICT_PRIORITY] = "priority" };
    for (size_t i = 0; i < cache_namespaces_count(a->namespaces); i++) {
        s_ns_stats_t *n = &a->ns_stats[i];
        const char *name = cache_namespaces_at(a->namespaces, i)->name;
        char label[128];
        snprintf(label, sizeof label, "namespace=%s,tier=local", name);
        n->m_hits_local = qv_metrics_counter(m, "quaver_cache_hits_total",
                                             "cache hits by namespace and tier", label);
        snprintf(label, sizeof label, "namespace=%s,tier=redis", name);
        n->m_hits_redis = qv_metrics_counter(m, "quaver_cache_hits_total",
                                             "cache hits by namespace and tier", label);
        snprintf(label, sizeof label, "namespace=%s", name);
        n->m_misses = qv_metrics_counter(m, "quaver_cache_namespace_misses_total",
                                         "misses by namespace", label);
        n->m_entries = qv_metrics_gauge(m, "quaver_cache_entries",
                                        "entries in the local tier by namespace", label);
        n->m_bytes = qv_metrics_gauge(m, "quaver_cache_bytes",
                                      "key and value bytes in the local tier by namespace", label);
        for (int c = 0; c < CACHE_EVICT__COUNT; c++) {
            snprintf(label, sizeof label, "namespace=%s,cause=%s", name, causes[c]);
            n->m_evictions[c] = qv_metrics_counter(m, "quaver_cache_evictions_total",
                                                   "local entries removed by the store, by "
                                                   "namespace and cause", label);
        }
    }
    cache_load_set_metrics(a->load, m, a->namespaces);
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

static int s_load_init(cache_app_t *a);   /* GetOrLoad's state, below the handlers */

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
        atomic_init(&st->stale_replies, 0); atomic_init(&st->corrupt_values, 0);
        atomic_init(&st->compressed, 0); atomic_init(&st->set_bytes, 0);
        atomic_init(&st->stored_bytes, 0);
    }
    a->store = cache_store_new((size_t) cfg->local_max_entries, (size_t) cfg->local_max_bytes);
    if (!a->store) { qv_error("cannot create the local tier"); cache_app_destroy(&a); return NULL; }
    for (size_t i = 0; i < cache_namespaces_count(a->namespaces); i++) {
        /* cache_priority_t and CACHE_STORE_PRIO_* share their values. */
        const cache_namespace_t *ns = cache_namespaces_at(a->namespaces, i);
        if (cache_store_add_namespace(a->store, ns->name, ns->policy, (int) ns->priority) != 0) {
            qv_error("cannot register namespace %s in the local tier", ns->name);
            cache_app_destroy(&a);
            return NULL;
        }
    }
    a->tracking = cache_tracking_new((cache_tracking_sink_t){ cache_app_on_inval_key,
                                                              s_on_inval_flush, a });
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
    if (s_load_init(a) != 0) { qv_error("out of memory"); cache_app_destroy(&a); return NULL; }
    return a;
}

void cache_app_destroy(cache_app_t **self_p)
{
    if (!self_p || !*self_p) return;
    cache_app_t *a = *self_p;
    /* The tracking thread calls into the Redis tier and the store: stop it first. */
    cache_tracking_destroy(&a->tracking);
    cache_load_destroy(&a->load);
    cache_redis_destroy(&a->redis);
    cache_store_destroy(&a->store);
    cache_namespaces_destroy(&a->namespaces);
    pthread_mutex_destroy(&a->mu);
    free(a);
    *self_p = NULL;
}

bool cache_redis_up_for_test(cache_app_t *a) { return a->redis && cache_redis_up(a->redis); }

cache_store_t *cache_app_store(cache_app_t *a) { return a->store; }

struct cache_load_t *cache_app_load(cache_app_t *a) { return a->load; }

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

/* Decodes a stored value (cache_codec.h) into *val_p and *vlen_p (caller frees). A value that
 * does not decode is corrupt: it reads as a miss and is removed from the tier it came from
 * (from Redis: both tiers, after a bump so no reply in flight re-inserts it). 0 or -1. */
static int s_decode(cache_app_t *a, const cache_namespace_t *ns, const char *key,
                    const char *full, bool from_redis, const uint8_t *enc, size_t elen,
                    uint8_t **val_p, size_t *vlen_p)
{
    int rc = cache_codec_decode(enc, elen, (size_t) a->cfg->max_value_bytes, val_p, vlen_p);
    if (rc == 0) return 0;
    *val_p = NULL;
    if (rc == -2) return -1;   /* out of memory: a miss, the value itself is fine */
    s_inc(&a->ns_stats[ns->index].corrupt_values);
    qv_warn("corrupt value for %s in %s (%zu bytes): removed", full,
            from_redis ? "redis" : "the local tier", elen);
    (void) cache_tracking_bump(a->tracking, full);
    (void) cache_store_ns_delete(a->store, ns->name, key);
    if (from_redis && a->redis) (void) cache_redis_del(a->redis, full);
    return -1;
}

/* Looks key up in both tiers; fills rep (value in *val_p, caller frees). */
static void s_lookup(cache_app_t *a, const cache_namespace_t *ns, const char *key,
                     const char *full, Quaver__V1__CacheGetReply *rep, uint8_t **val_p)
{
    s_ns_stats_t *st = &a->ns_stats[ns->index];
    uint8_t *val = NULL, *enc = NULL;
    size_t vlen = 0, elen = 0;
    int64_t pttl = -1;
    cache_ticket_t t = { 0, 0 };
    int hit = cache_store_ns_get(a->store, ns->name, key, &enc, &elen, NULL);
    if (hit == 1) {
        hit = s_decode(a, ns, key, full, false, enc, elen, &val, &vlen) == 0;
        free(enc);
        enc = NULL;
    }
    if (hit == 1) {
        rep->tier = "local";
        s_inc(&st->hits_local);
        s_count(st->m_hits_local);
    } else if (a->redis && (hit = cache_redis_get(a->redis, full, &enc, &elen, &pttl, &t)) == 1) {
        s_inc(&st->redis_round_trips);
        if (s_decode(a, ns, key, full, true, enc, elen, &val, &vlen) == 0) {
            s_commit(a, ns, key, full, t, enc, elen, s_local_ttl(a, ns->ttl_ms, pttl));
            rep->tier = "redis";
            s_inc(&st->hits_redis);
            s_count(st->m_hits_redis);
        } else {
            hit = 0;
        }
    } else {
        if (hit == 0 || hit == -2) s_inc(&st->redis_round_trips);
        if (hit == -2) s_inc(&st->redis_errors);
        hit = 0;
    }
    free(enc);
    if (hit == 1) {
        rep->found = true;
        rep->value.data = val;
        rep->value.len = vlen;
    } else {
        s_inc(&st->misses);
        s_count(a->m_misses);
        s_count(st->m_misses);
    }
    *val_p = val;
}

int cache_app_get(cache_app_t *a, const char *ns_name, const char *key, uint8_t **val_p,
                  size_t *vlen_p, const char **tier_p, char *err, size_t errlen)
{
    *val_p = NULL;
    *vlen_p = 0;
    const cache_namespace_t *ns = s_check_namespace(a, ns_name, false, err, errlen);
    if (!ns || s_check_key(a, key, false, "key", err, errlen) != 0) return -1;
    if (!a->cfg->cache_enabled) {
        s_inc(&a->ns_stats[ns->index].misses);
        s_count(a->m_misses);
        return 0;
    }
    char *full = s_full_key(ns->name, key);
    if (!full) { snprintf(err, errlen, "out of memory"); return -2; }
    Quaver__V1__CacheGetReply rep = QUAVER__V1__CACHE_GET_REPLY__INIT;
    s_lookup(a, ns, key, full, &rep, val_p);
    free(full);
    if (!rep.found) { free(*val_p); *val_p = NULL; return 0; }
    *vlen_p = rep.value.len;
    if (tier_p) *tier_p = rep.tier;
    return 1;
}

static int s_get(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    const Quaver__V1__CacheKey *req = (const Quaver__V1__CacheKey *) msg;
    char err[512];
    uint8_t *val = NULL;
    size_t vlen = 0;
    const char *tier = NULL;
    int hit = cache_app_get(app, req->namespace_, req->key, &val, &vlen, &tier, err, sizeof err);
    if (hit < 0) return qv_reply_error(r, hit == -1 ? 400 : 500, "%s", err);
    Quaver__V1__CacheGetReply rep = QUAVER__V1__CACHE_GET_REPLY__INIT;
    if (hit) {
        rep.found = true;
        rep.tier = (char *) tier;
        rep.value.data = val;
        rep.value.len = vlen;
    }
    int rc = s_ok(r, &rep.base);
    free(val);
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
        uint8_t *enc = NULL;
        size_t elen = 0, vlen = 0;
        int hit = cache_store_ns_get(a->store, ns->name, req->keys[i], &enc, &elen, NULL) == 1
                  && s_decode(a, ns, req->keys[i], keys[i], false, enc, elen, &vals[i],
                              &vlen) == 0;
        free(enc);
        if (hit) {
            items[i].found = true;
            items[i].tier = "local";
            items[i].value.data = vals[i];
            items[i].value.len = vlen;
            s_inc(&st->hits_local);
            s_count(st->m_hits_local);
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
            size_t i = miss_idx[m], vlen = 0;
            if (s_decode(a, ns, req->keys[i], keys[i], true, rv[m].value, rv[m].vlen, &vals[i],
                         &vlen) != 0)
                continue;
            s_commit(a, ns, req->keys[i], keys[i], rv[m].ticket, rv[m].value, rv[m].vlen,
                     s_local_ttl(a, ns->ttl_ms, rv[m].pttl));
            items[i].found = true;
            items[i].tier = "redis";
            items[i].value.data = vals[i];
            items[i].value.len = vlen;
            s_inc(&st->hits_redis);
            s_count(st->m_hits_redis);
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

/* The write path of Set (and of GetOrLoad's loaded values), after the checks: encode once,
 * SET in Redis, then the local copy through the version table. 0; -1 when Redis refused the
 * value (no local copy is kept then: Redis may still hold an older one); -2 out of memory. */
static int s_write(cache_app_t *a, const cache_namespace_t *ns, const char *key,
                   const void *value, size_t vlen, int64_t ttl, const char *req_id)
{
    s_ns_stats_t *st = &a->ns_stats[ns->index];
    s_inc(&st->sets);
    /* Both tiers hold the encoded form (cache_codec.h): compressed once, here. */
    uint8_t *enc = NULL;
    size_t elen = 0;
    int zlib = 0;
    char *full = s_full_key(ns->name, key);
    if (!full || cache_codec_encode(value, vlen, ns->compress_min, &enc, &elen, &zlib) != 0) {
        free(full);
        return -2;
    }
    atomic_fetch_add(&st->set_bytes, vlen);
    atomic_fetch_add(&st->stored_bytes, elen);
    if (zlib) s_inc(&st->compressed);
    int64_t local_ttl = s_local_ttl(a, ttl, -1);
    cache_ticket_t t;
    int rc = 0, rr = a->redis ? cache_redis_set(a->redis, full, enc, elen, ttl, &t) : -1;
    if (rr != -1) s_inc(&st->redis_round_trips);
    /* The local copy is raw (cache_codec_local_form): from the value we hold, not by
     * inflating what we just deflated. */
    uint8_t *raw = NULL;
    size_t rlen = 0;
    if (zlib && cache_codec_raw_form(value, vlen, &raw, &rlen) != 0) rr = -3;
    const uint8_t *local = raw ? raw : enc;
    size_t llen = raw ? rlen : elen;
    if (rr == 0) {
        s_commit(a, ns, key, full, t, local, llen, local_ttl);
    } else if (rr == -1) {
        /* Redis down (or none): the local tier alone; the key is UNLINKed on reconnect. */
        t = cache_tracking_bump(a->tracking, full);
        s_commit(a, ns, key, full, t, local, llen, local_ttl);
    } else if (rr == -3) {
        /* No memory for the local copy: Redis has the value, the old local copy goes. */
        (void) cache_tracking_bump(a->tracking, full);
        (void) cache_store_ns_delete(a->store, ns->name, key);
    } else {
        /* Redis refused it (e.g. out of memory) and may still hold an older value: keep no
         * local copy that would disagree with it. */
        s_inc(&st->redis_errors);
        (void) cache_tracking_bump(a->tracking, full);
        (void) cache_store_ns_delete(a->store, ns->name, key);
        qv_log(QV_LOG_WARN, req_id, "redis SET %s failed; not cached", full);
        rc = -1;
    }
    free(raw);
    free(enc);
    free(full);
    return rc;
}

int cache_app_set(cache_app_t *a, const char *ns_name, const char *key, const void *value,
                  size_t vlen, int64_t ttl_ms, bool msgpack, const char *req_id, char *err,
                  size_t errlen)
{
    const cache_namespace_t *ns = s_check_namespace(a, ns_name, false, err, errlen);
    if (!ns || s_check_key(a, key, false, "key", err, errlen) != 0) return -1;
    if ((int64_t) vlen > a->cfg->max_value_bytes) {
        snprintf(err, errlen, "value is %zu bytes, over max_value_bytes %lld", vlen,
                 (long long) a->cfg->max_value_bytes);
        return -1;
    }
    if (ttl_ms < 0) {
        snprintf(err, errlen, "ttl_ms is negative (%lld); 0 means the namespace's (%lld)",
                 (long long) ttl_ms, (long long) ns->ttl_ms);
        return -1;
    }
    /* Structured values: exactly one msgpack object (cache_msgpack.h bounds what a hostile one
     * can make msgpack-c allocate). */
    if (msgpack) {
        char why[256];
        if (cache_msgpack_check(value, vlen, why, sizeof why) != 0) {
            snprintf(err, errlen, "value is not one msgpack object: %s", why);
            return -1;
        }
    }
    if (!a->cfg->cache_enabled) return 0;
    if (s_write(a, ns, key, value, vlen, ttl_ms > 0 ? ttl_ms : ns->ttl_ms, req_id) == -2) {
        snprintf(err, errlen, "out of memory");
        return -2;
    }
    return 0;
}

static int s_set(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    const Quaver__V1__CacheSetRequest *req = (const Quaver__V1__CacheSetRequest *) msg;
    char err[512];
    int rc = cache_app_set(app, req->namespace_, req->key, req->value.data, req->value.len,
                           req->ttl_ms, req->msgpack, call->request_id, err, sizeof err);
    if (rc < 0) return qv_reply_error(r, rc == -1 ? 400 : 500, "%s", err);
    Quaver__V1__Empty empty = QUAVER__V1__EMPTY__INIT;
    return s_ok(r, &empty.base);
}

int cache_app_delete(cache_app_t *a, const char *ns_name, const char *key, char *err,
                     size_t errlen)
{
    const cache_namespace_t *ns = s_check_namespace(a, ns_name, false, err, errlen);
    if (!ns || s_check_key(a, key, false, "key", err, errlen) != 0) return -1;
    s_ns_stats_t *st = &a->ns_stats[ns->index];
    s_inc(&st->deletes);
    /* Deleting works even with cache_enabled off: turning the cache off must not keep a
     * stale value alive in Redis for the replicas that still have it on. Local first (after
     * a bump, so no reply in flight re-inserts it), then Redis (which bumps again before the
     * UNLINK, in Redis's order), then local once more: a Set of ours whose SET reached Redis
     * between the first local delete and the UNLINK may have committed its local copy before
     * the UNLINK's bump; Redis no longer has it, so neither may we. (Our own writes bring no
     * invalidation: NOLOOP.) A Set committing after this point holds a ticket newer than the
     * UNLINK, so Redis has its value. */
    char *full = s_full_key(ns->name, key);
    if (!full) { snprintf(err, errlen, "out of memory"); return -2; }
    (void) cache_tracking_bump(a->tracking, full);
    int local = cache_store_ns_delete(a->store, ns->name, key);
    int remote = a->redis ? cache_redis_del(a->redis, full) : -1;
    if (remote != -1 && cache_store_ns_delete(a->store, ns->name, key) > 0) local = 1;
    if (remote != -1) s_inc(&st->redis_round_trips);
    if (remote == -2) s_inc(&st->redis_errors);
    free(full);
    return (local > 0 || remote > 0) ? 1 : 0;
}

static int s_delete(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    const Quaver__V1__CacheKey *req = (const Quaver__V1__CacheKey *) msg;
    char err[512];
    int removed = cache_app_delete(app, req->namespace_, req->key, err, sizeof err);
    if (removed < 0) return qv_reply_error(r, removed == -1 ? 400 : 500, "%s", err);
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    rep.removed = removed;
    return s_ok(r, &rep.base);
}

/* What the local side of an invalidation removes: in namespace ns (NULL: every namespace),
 * the keys matching glob (Redis MATCH syntax, the same matcher Redis applies) when glob is
 * set, else the keys starting with prefix. */
typedef struct {
    const char *ns;
    const char *prefix;
    const char *glob;
} s_local_match_t;

static int s_glob_match(const char *key, void *glob)
{
    return cache_redis_glob_match(glob, key);
}

static int64_t s_remove_local(cache_app_t *a, const s_local_match_t *m)
{
    if (!m->ns) {
        int64_t n = 0;
        for (size_t i = 0; i < cache_namespaces_count(a->namespaces); i++)
            n += cache_store_ns_clear(a->store, cache_namespaces_at(a->namespaces, i)->name);
        return n;
    }
    int64_t n = m->glob ? cache_store_ns_delete_matching(a->store, m->ns, s_glob_match,
                                                         (void *) m->glob)
                        : cache_store_ns_delete_prefix(a->store, m->ns, m->prefix);
    return n > 0 ? n : 0;
}

void cache_app_forget_local(cache_app_t *a, const char *ns)
{
    s_local_match_t m = { ns && *ns ? ns : NULL, "", NULL };
    cache_tracking_bump_all(a->tracking);   /* no GET reply in flight may re-insert */
    (void) s_remove_local(a, &m);
}

/* Removes from both tiers what matches: Redis SCAN MATCH redis_match + UNLINK, and locally
 * what m names. The two sides select the same keys. The epoch is bumped before and after the
 * Redis part and the local part runs twice, so no GET reply in flight while the scan ran can
 * leave a copy behind. Returns the count to report. */
static int64_t s_remove_matching(cache_app_t *a, s_ns_stats_t *st, const s_local_match_t *m,
                                 const char *redis_match, const char *call_id)
{
    cache_tracking_bump_all(a->tracking);
    int64_t local = s_remove_local(a, m);
    uint64_t rounds = 0;
    int64_t remote = a->redis ? cache_redis_del_match(a->redis, redis_match, &rounds) : -1;
    if (st) atomic_fetch_add(&st->redis_round_trips, rounds);
    if (remote == -2) {
        if (st) s_inc(&st->redis_errors);
        qv_log(QV_LOG_WARN, call_id, "redis invalidation of %s incomplete; replayed when Redis "
               "is back", redis_match);
    }
    cache_tracking_bump_all(a->tracking);
    local += s_remove_local(a, m);
    /* The same logical entry usually sits in both tiers: report the larger count rather than
     * the sum, so a caller sees roughly how many keys the namespace lost. */
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
    const char *p = req->prefix ? req->prefix : "";
    char *full = s_full_key(ns->name, p);
    char *match = full ? cache_redis_prefix_match(full) : NULL;
    free(full);
    if (!match) return qv_reply_error(r, 500, "out of memory");
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    s_local_match_t m = { ns->name, p, NULL };
    rep.removed = s_remove_matching(a, &a->ns_stats[ns->index], &m, match, call->request_id);
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
    /* Redis side: "quaver:<ns>:" is literal ([a-z0-9_] needs no escaping) followed by the
     * caller's glob, so a Redis key matches exactly when its key within the namespace matches
     * the glob: the local side applies the same matcher to the same keys. */
    char *match = s_full_key(ns->name, req->pattern);
    if (!match) return qv_reply_error(r, 500, "out of memory");
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    s_local_match_t m = { ns->name, NULL, req->pattern };
    rep.removed = s_remove_matching(a, &a->ns_stats[ns->index], &m, match, call->request_id);
    free(match);
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
        char *match = s_full_key(ns->name, "*");
        if (!match) return qv_reply_error(r, 500, "out of memory");
        s_local_match_t m = { ns->name, "", NULL };
        rep.removed = s_remove_matching(a, &a->ns_stats[ns->index], &m, match,
                                        call->request_id);
        free(match);
        qv_log(QV_LOG_INFO, call->request_id, "cache: namespace %s cleared by %s (%lld)",
               ns->name, call->username ? call->username : "?", (long long) rep.removed);
    } else {
        s_local_match_t m = { NULL, NULL, NULL };
        rep.removed = s_remove_matching(a, NULL, &m, "quaver:*", call->request_id);
        qv_log(QV_LOG_INFO, call->request_id, "cache: every namespace cleared by %s (%lld)",
               call->username ? call->username : "?", (long long) rep.removed);
    }
    return s_ok(r, &rep.base);
}

/* Warmup (admin): the namespace's Redis keys into the local tier (cache_warmup.h: SCAN +
 * MGET, Get's coherence rules), at most max_keys, 0 = the namespace's fair share of the entry
 * budget (local_max_entries / namespaces). The reply's `removed` counts the keys loaded.
 * Redis down: nothing to copy, 200 with 0 (no call fails only because Redis is down). */
static int s_warmup(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheWarmupRequest *req = (const Quaver__V1__CacheWarmupRequest *) msg;
    char err[512];
    const cache_namespace_t *ns = s_check_namespace(a, req->namespace_, false, err, sizeof err);
    if (!ns) return qv_reply_error(r, 400, "%s", err);
    int64_t share = a->cfg->local_max_entries / (int64_t) cache_namespaces_count(a->namespaces);
    if (req->max_keys < 0)
        return qv_reply_error(r, 400, "max_keys is negative (%lld); 0 means the namespace's "
                              "share (%lld)", (long long) req->max_keys, (long long) share);
    int64_t max = req->max_keys ? req->max_keys : (share > 0 ? share : 1);
    if (max > a->cfg->local_max_entries) max = a->cfg->local_max_entries;
    Quaver__V1__CacheCountReply rep = QUAVER__V1__CACHE_COUNT_REPLY__INIT;
    if (a->cfg->cache_enabled && a->redis) {
        s_ns_stats_t *st = &a->ns_stats[ns->index];
        cache_warmup_env_t env = { a->store, a->redis, a->tracking,
                                   (size_t) a->cfg->max_value_bytes, a->cfg->local_max_ttl_ms };
        uint64_t rounds = 0;
        int64_t n = cache_warmup_namespace(&env, ns->name, ns->ttl_ms, (size_t) max, &rounds);
        atomic_fetch_add(&st->redis_round_trips, rounds);
        if (n == -2) s_inc(&st->redis_errors);
        rep.removed = n > 0 ? n : 0;
        qv_log(QV_LOG_INFO, call->request_id, "cache: warmup of %s loaded %lld keys (at most "
               "%lld)%s", ns->name, (long long) rep.removed, (long long) max,
               n == -1 ? ", redis down" : n == -2 ? ", redis failed part way" : "");
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
Quaver__V1__StatsReply *cache_app_stats(cache_app_t *a, const char *service)
{
    Quaver__V1__StatsReply *rep = NULL;
    if (a->metrics) {
        s_update_gauges(a);
        rep = qv_stats_from_metrics(a->metrics, service);
    } else if ((rep = calloc(1, sizeof *rep))) {
        quaver__v1__stats_reply__init(rep);
        rep->service = strdup(service);
    }
    if (!rep || !rep->service) { if (rep) qv_stats_reply_free(rep); return NULL; }
    size_t cap = rep->n_stats;
    int bad = 0;
    uint64_t hits = 0, misses = 0;
    for (size_t i = 0; i < cache_namespaces_count(a->namespaces); i++) {
        const cache_namespace_t *ns = cache_namespaces_at(a->namespaces, i);
        s_ns_stats_t *st = &a->ns_stats[i];
        uint64_t hl = atomic_load(&st->hits_local), hr = atomic_load(&st->hits_redis);
        uint64_t m = atomic_load(&st->misses);
        cache_store_ns_stats_t ls;
        if (cache_store_ns_stats(a->store, ns->name, &ls) != 0) memset(&ls, 0, sizeof ls);
        uint64_t sb = atomic_load(&st->stored_bytes);
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
            { "entries", (double) ls.entries }, { "bytes", (double) ls.bytes },
            { "compression_ratio", sb ? (double) atomic_load(&st->set_bytes) / (double) sb : 1.0 },
            { "values_compressed", (double) atomic_load(&st->compressed) },
            { "corrupt_values", (double) atomic_load(&st->corrupt_values) },
            { "evictions_capacity_entries",
              (double) ls.evictions[CACHE_EVICT_CAPACITY_ENTRIES] },
            { "evictions_capacity_bytes", (double) ls.evictions[CACHE_EVICT_CAPACITY_BYTES] },
            { "evictions_priority", (double) ls.evictions[CACHE_EVICT_PRIORITY] },
            { "evictions_expired", (double) ls.evictions[CACHE_EVICT_EXPIRED] },
        };
        for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
            char name[128];
            snprintf(name, sizeof name, "ns.%s.%s", ns->name, rows[k].n);
            bad |= s_stat(rep, &cap, name, rows[k].v);
        }
        const char *ln[CACHE_LOAD_NSTATS];   /* GetOrLoad's (cache_load.c) */
        double lv[CACHE_LOAD_NSTATS];
        for (size_t k = 0, nl = cache_load_stats(a->load, ns->index, ln, lv); k < nl; k++) {
            char name[128];
            snprintf(name, sizeof name, "ns.%s.%s", ns->name, ln[k]);
            bad |= s_stat(rep, &cap, name, lv[k]);
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
    if (bad) { qv_stats_reply_free(rep); return NULL; }
    return rep;
}

static int s_stats(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    Quaver__V1__StatsReply *rep = cache_app_stats(app, "cache");
    if (!rep) return qv_reply_error(r, 500, "out of memory");
    int rc = s_ok(r, &rep->base);
    qv_stats_reply_free(rep);
    return rc;
}

/* ---- GetOrLoad (cache_load.c): the tiers as it sees them --------------------------------- */

/* Get's lookup (s_lookup); local_only: the local tier alone, counted nowhere. */
static int s_load_lookup(void *app, const cache_namespace_t *ns, const char *key,
                         bool local_only, uint8_t **val_p, size_t *vlen_p, const char **tier_p)
{
    cache_app_t *a = app;
    *val_p = NULL;
    *vlen_p = 0;
    char *full = a->cfg->cache_enabled ? s_full_key(ns->name, key) : NULL;
    if (!full) return 0;
    int hit = 0;
    if (local_only) {
        uint8_t *enc = NULL;
        size_t elen = 0;
        hit = cache_store_ns_get(a->store, ns->name, key, &enc, &elen, NULL) == 1
              && s_decode(a, ns, key, full, false, enc, elen, val_p, vlen_p) == 0;
        free(enc);
        *tier_p = "local";
    } else {
        Quaver__V1__CacheGetReply rep = QUAVER__V1__CACHE_GET_REPLY__INIT;
        s_lookup(a, ns, key, full, &rep, val_p);
        hit = rep.found;
        *vlen_p = rep.value.len;
        *tier_p = rep.tier;
    }
    if (!hit) { free(*val_p); *val_p = NULL; }
    free(full);
    return hit;
}

/* Set's write path for a value a loader answered. */
static int s_load_store(void *app, const cache_namespace_t *ns, const char *key,
                        const void *value, size_t vlen, int64_t ttl_ms, const char *req_id)
{
    return s_write(app, ns, key, value, vlen, ttl_ms, req_id) == 0 ? 0 : -1;
}

/* Delete's path (both tiers, after a bump). */
static void s_load_remove(void *app, const cache_namespace_t *ns, const char *key)
{
    char err[256];
    (void) cache_app_delete(app, ns->name, key, err, sizeof err);
}

static int s_load_init(cache_app_t *a)
{
    const cache_cfg_t *c = a->cfg;
    cache_load_cfg_t lc = { c->broker, c->negative_ttl_ms, c->grace_ms, c->xfetch_beta,
                            c->load_timeout_ms, (size_t) c->local_max_entries,
                            c->max_value_bytes, c->cache_enabled };
    cache_load_ops_t ops = { s_load_lookup, s_load_store, s_load_remove, NULL, a };
    a->load = cache_load_new(&lc, &ops, cache_namespaces_count(a->namespaces));
    return a->load ? 0 : -1;
}

static int s_get_or_load(void *app, const qv_call_t *call, const ProtobufCMessage *msg,
                         qv_reply_t *r)
{
    cache_app_t *a = app;
    const Quaver__V1__CacheGetOrLoadRequest *req =
        (const Quaver__V1__CacheGetOrLoadRequest *) msg;
    char err[512];
    const cache_namespace_t *ns = s_check_namespace(a, req->namespace_, false, err, sizeof err);
    if (!ns || s_check_key(a, req->key, false, "key", err, sizeof err) != 0)
        return qv_reply_error(r, 400, "%s", err);
    return cache_load_handle(a->load, ns, call, req, r);
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
    { "GetOrLoad",         &quaver__v1__cache_get_or_load_request__descriptor, s_get_or_load,
      0 },
    { "Warmup",            &quaver__v1__cache_warmup_request__descriptor,  s_warmup, QV_ADMIN },
    { "Health",            &quaver__v1__empty__descriptor,                 s_health, QV_READONLY },
    { "Stats",             &quaver__v1__empty__descriptor,                 s_stats,  QV_READONLY },
    { NULL, NULL, NULL, 0 }
};

/* ---- snapshots (cache_snapshot.h) ------------------------------------------------------ */

static bool s_snapshot_on(const cache_app_t *a)
{
    return a->cfg->snapshot_path && *a->cfg->snapshot_path;
}

/* Runs on the server loop's thread (the timer, then the stop path): the workers go on serving
 * meanwhile, except while the store's entries are copied out under its mutex. */
void cache_app_snapshot_save(void *app)
{
    cache_app_t *a = app;
    if (!s_snapshot_on(a) || !a->cfg->cache_enabled) return;
    char err[512];
    size_t n = 0;
    int64_t t0 = qv_mono_ms();
    if (cache_snapshot_write(a->store, a->cfg->snapshot_path, CACHE_SNAPSHOT_MAX_ENTRIES, &n, err,
                             sizeof err) != 0)
        qv_warn("cache: snapshot not written: %s", err);
    else
        qv_info("cache: snapshot of %zu entries written to %s in %lld ms", n,
                a->cfg->snapshot_path, (long long) (qv_mono_ms() - t0));
}

/* Coherence: Redis may have changed while we were down, so an entry is kept only if Redis
 * still holds exactly its bytes (cache_warmup_keys: MGET with tickets, TTL bounded by PTTL). */
static int64_t s_snapshot_load_batch(void *app, const char *ns, const char *const *keys,
                                     const cache_warmup_expect_t *expect, size_t n)
{
    cache_app_t *a = app;
    const cache_namespace_t *nd = cache_namespaces_find(a->namespaces, ns);
    if (!nd) return 0;
    cache_warmup_env_t env = { a->store, a->redis, a->tracking,
                               (size_t) a->cfg->max_value_bytes, a->cfg->local_max_ttl_ms };
    return cache_warmup_keys(&env, ns, nd->ttl_ms, keys, n, expect, NULL);
}

void cache_app_snapshot_load(cache_app_t *a)
{
    if (!s_snapshot_on(a) || !a->cfg->cache_enabled) return;
    char err[512];
    int missing = 0;
    /* No snapshot we write is larger than the byte budget plus per-entry framing and the
     * sketches; anything far larger is not ours. */
    size_t max = (size_t) a->cfg->local_max_bytes * 2 + ((size_t) 1 << 30);
    cache_snapshot_t *snap = cache_snapshot_read(a->cfg->snapshot_path, max, &missing, err,
                                                 sizeof err);
    if (!snap) {
        if (missing) qv_info("cache: no snapshot to load (%s)", err);
        else qv_warn("cache: snapshot ignored: %s", err);
        return;
    }
    bool redis_up = a->redis && cache_redis_up(a->redis);
    cache_snapshot_stats_t st;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    cache_snapshot_apply(snap, a->store, (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                         redis_up ? s_snapshot_load_batch : NULL, a, &st);
    qv_info("cache: snapshot %s: %zu of %zu entries loaded (%zu expired, %zu changed in or "
            "gone from redis, %zu of unknown namespaces), %zu sketches restored%s",
            a->cfg->snapshot_path, st.loaded, cache_snapshot_entries(snap), st.expired,
            st.refused, st.unknown, st.sketches,
            redis_up ? "" : "; redis down: values not loaded (they could not be checked)");
    cache_snapshot_destroy(&snap);
}

int cache_server_run(const cache_cfg_t *cfg)
{
    cache_app_t *app = cache_app_new(cfg, cfg->redis_url);
    if (!app) return -1;
    cache_app_snapshot_load(app);   /* before any worker serves */
    qv_server_t *srv = qv_server_new("cache", (const qv_common_cfg_t *) cfg, cache_methods, app);
    if (!srv) { cache_app_destroy(&app); return -1; }
    cache_app_set_metrics(app, qv_server_metrics(srv));
    qv_server_add_timer(srv, S_TICK_MS, cache_app_tick);
    if (s_snapshot_on(app) && cfg->snapshot_interval_s > 0)
        qv_server_add_timer(srv, (int) (cfg->snapshot_interval_s * 1000), cache_app_snapshot_save);
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
    cache_app_snapshot_save(app);   /* the workers have stopped: the final state */
    qv_server_destroy(&srv);
    cache_app_destroy(&app);
    return rc;
}
