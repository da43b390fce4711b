/* cache_load: GetOrLoad (cache_load.h). One request:
 *
 *   lookup as Get (local, Redis) --hit--> facts of a loaded value in the side table?
 *       no facts (a Set value, or facts lost)      -> answer it (source "local"/"redis")
 *       fresh, XFetch draw lost                     -> answer it
 *       fresh, draw won / past its TTL (stale)      -> try to take the key's in-flight slot:
 *           taken by someone else: answer the value (stale: source "stale")
 *           won: load now, answer the fresh value ("loader"); on a loader error answer the
 *                value we had (it is still fresh, or within grace: stale-if-error)
 *   --miss--> an "absent" mark that has not ended    -> found=false, source "negative"
 *             a load of the key in flight             -> wait for it (until our deadline)
 *             else lead: re-check the local tier, then load and hand the result to waiters
 *
 * Why the winner of a refresh loads synchronously: the daemon has a fixed number of worker
 * threads (config `workers`) and no spare thread to refresh in the background; XFetch makes
 * early refreshes rare by construction (the probability is significant only within a few load
 * durations of expiry), and only one caller per key wins the slot, so one caller in many pays
 * one load's latency and everybody else keeps the cached value.
 *
 * Waiters block a worker thread: with `workers` = 4, one leader and three waiters fill the
 * daemon and further requests queue in the broker until the load ends. Every wait is bounded
 * by the waiter's own deadline, and the load by the leader's, so nothing waits forever (even a
 * loader that calls back into the cache, which then times out rather than deadlocks).
 *
 * The side table (facts of loaded values, "absent" marks) is local to this replica and bounded
 * (oldest insertion dropped first). Losing a value's facts only turns off its early refresh and
 * grace (it is then an ordinary hit until its stored TTL); a fingerprint of the value makes
 * facts that describe an older value (the key was Set since) void. */
#include "cache_load.h"
#include "qv_clock.h"
#include "qv_hash.h"
#include "qv_log.h"
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S_DEFAULT_TIMEOUT_MS  10000
#define S_DEFAULT_MAX_ENTRIES 10000
#define S_NAME_MAX            255    /* longest loader service or method name accepted */

/* What a load (or a lookup) produced, handed from the leader to every waiter. */
typedef struct {
    int         status;     /* 200, or the loader's error status */
    char       *error;      /* heap when status != 200 */
    bool        found;
    uint8_t    *value;      /* heap when found */
    size_t      vlen;
    const char *source;     /* static */
} s_outcome_t;

typedef struct s_flight_t {
    struct s_flight_t *next;
    char              *key;        /* full key */
    int                refs;       /* the leader and its waiters; freed at 0 */
    bool               done;
    pthread_cond_t     cond;
    s_outcome_t        out;        /* set once, before done */
} s_flight_t;

/* Facts about a key kept beside the tiers: a loaded value's logical expiry and load time, or
 * an "absent" mark. */
typedef struct s_side_t {
    struct s_side_t *hnext;          /* bucket chain */
    struct s_side_t *older, *newer;  /* insertion order, for the bound */
    char            *key;
    uint64_t         hash;
    bool             absent;
    int64_t          expiry_us;      /* absent: the mark's end; else the value's logical expiry */
    int64_t          delta_us;       /* how long the load took */
    uint64_t         fp;             /* fingerprint of the value described */
    size_t           vlen;
} s_side_t;

typedef struct {
    _Atomic uint64_t loads, load_errors, load_absent, coalesced, xfetch, stale, negative;
    qv_metric_t *m_ok, *m_absent, *m_error, *m_coalesced, *m_xfetch, *m_stale, *m_negative,
                *m_seconds;
} s_ns_stats_t;

struct cache_load_t {
    cache_load_cfg_t  cfg;
    cache_load_ops_t  ops;
    void             *call_ctx;
    int64_t         (*clock)(void *ctx);
    void             *clock_ctx;
    double          (*rand)(void *ctx);
    void             *rand_ctx;
    s_ns_stats_t     *stats;
    size_t            nns;
    pthread_mutex_t   mu;             /* flights and the side table */
    s_flight_t       *flights;        /* a list: at most one per busy worker thread */
    s_side_t        **buckets;
    size_t            nbuckets;       /* a power of two >= max_entries, fixed */
    size_t            nside;
    s_side_t         *oldest, *newest;
};

/* ---- small helpers -------------------------------------------------------------------- */

static int64_t s_default_clock(void *ctx) { (void) ctx; return qv_mono_us(); }

/* splitmix64 per thread, seeded from the clock and the thread's address space. */
static double s_default_rand(void *ctx)
{
    static _Thread_local uint64_t state;
    if (!state)
        state = (uint64_t) qv_mono_us() ^ (uint64_t) (uintptr_t) &state ^ 0x9E3779B97F4A7C15ULL;
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return ((double) (z >> 11) + 1.0) / 9007199254740992.0;   /* (0, 1] */
}

static int64_t s_now(cache_load_t *l) { return l->clock(l->clock_ctx); }

static void s_inc(_Atomic uint64_t *c, qv_metric_t *m)
{
    atomic_fetch_add(c, 1);
    if (m) qv_metric_add(m, 1);
}

static void s_outcome_free(s_outcome_t *o)
{
    free(o->error);
    free(o->value);
    memset(o, 0, sizeof *o);
}

static void s_outcome_error(s_outcome_t *o, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_outcome_error(s_outcome_t *o, int status, const char *fmt, ...)
{
    s_outcome_free(o);
    o->status = status;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&o->error, fmt, ap) < 0) o->error = NULL;
    va_end(ap);
}

/* Copies (value, vlen) into a found outcome; a 500 when out of memory. */
static void s_outcome_value(s_outcome_t *o, const void *value, size_t vlen, const char *source)
{
    s_outcome_free(o);
    o->value = malloc(vlen ? vlen : 1);
    if (!o->value) { s_outcome_error(o, 500, "out of memory"); return; }
    if (vlen) memcpy(o->value, value, vlen);
    o->vlen = vlen;
    o->status = 200;
    o->found = true;
    o->source = source;
}

static void s_outcome_copy(s_outcome_t *dst, const s_outcome_t *src)
{
    memset(dst, 0, sizeof *dst);
    if (src->found) {
        s_outcome_value(dst, src->value, src->vlen, src->source);
    } else if (src->status != 200) {
        s_outcome_error(dst, src->status, "%s", src->error ? src->error : "");
    } else {
        dst->status = 200;
        dst->source = src->source;
    }
}

/* ---- the side table (under mu) ---------------------------------------------------------- */

static s_side_t *s_side_find(cache_load_t *l, const char *key, uint64_t h)
{
    for (s_side_t *e = l->buckets[h & (l->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && strcmp(e->key, key) == 0) return e;
    return NULL;
}

static void s_side_remove(cache_load_t *l, s_side_t *e)
{
    s_side_t **pp = &l->buckets[e->hash & (l->nbuckets - 1)];
    while (*pp != e) pp = &(*pp)->hnext;
    *pp = e->hnext;
    if (e->older) e->older->newer = e->newer; else l->oldest = e->newer;
    if (e->newer) e->newer->older = e->older; else l->newest = e->older;
    l->nside--;
    free(e->key);
    free(e);
}

/* Replaces key's facts (a fresh entry, newest in the order); drops the oldest past the bound.
 * Out of memory: the key simply has no facts. */
static void s_side_put(cache_load_t *l, const char *key, bool absent, int64_t expiry_us,
                       int64_t delta_us, uint64_t fp, size_t vlen)
{
    uint64_t h = qv_fnv1a(key, strlen(key), QV_FNV1A_INIT);
    s_side_t *old = s_side_find(l, key, h);
    if (old) s_side_remove(l, old);
    s_side_t *e = calloc(1, sizeof *e);
    if (!e || !(e->key = strdup(key))) { free(e); return; }
    e->hash = h;
    e->absent = absent;
    e->expiry_us = expiry_us;
    e->delta_us = delta_us;
    e->fp = fp;
    e->vlen = vlen;
    s_side_t **b = &l->buckets[h & (l->nbuckets - 1)];
    e->hnext = *b;
    *b = e;
    e->older = l->newest;
    if (l->newest) l->newest->newer = e; else l->oldest = e;
    l->newest = e;
    if (++l->nside > l->cfg.max_entries) s_side_remove(l, l->oldest);
}

/* ---- single-flight (under mu) ------------------------------------------------------------ */

static s_flight_t *s_flight_find(cache_load_t *l, const char *key)
{
    for (s_flight_t *f = l->flights; f; f = f->next)
        if (strcmp(f->key, key) == 0) return f;
    return NULL;
}

static s_flight_t *s_flight_new(cache_load_t *l, const char *key)
{
    s_flight_t *f = calloc(1, sizeof *f);
    if (!f || !(f->key = strdup(key))) { free(f); return NULL; }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cond, &ca);
    pthread_condattr_destroy(&ca);
    f->refs = 1;
    f->next = l->flights;
    l->flights = f;
    return f;
}

static void s_flight_release_locked(s_flight_t *f)
{
    if (--f->refs > 0) return;
    pthread_cond_destroy(&f->cond);
    s_outcome_free(&f->out);
    free(f->key);
    free(f);
}

static void s_flight_release(cache_load_t *l, s_flight_t *f)
{
    pthread_mutex_lock(&l->mu);
    s_flight_release_locked(f);
    pthread_mutex_unlock(&l->mu);
}

/* The leader hands its outcome (moved) to the waiters and takes the flight out of the table,
 * so the next miss starts a new load (the value is already in the tiers by then). */
static void s_flight_finish(cache_load_t *l, s_flight_t *f, s_outcome_t *o)
{
    pthread_mutex_lock(&l->mu);
    f->out = *o;
    memset(o, 0, sizeof *o);
    f->done = true;
    for (s_flight_t **pp = &l->flights; *pp; pp = &(*pp)->next)
        if (*pp == f) { *pp = f->next; break; }
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&l->mu);
}

/* The flight of key: *lead true when a new one was made for us (we must load and finish it),
 * false when we joined a running one (if join is false we do not join: NULL). NULL on no
 * memory too. */
static s_flight_t *s_flight_take(cache_load_t *l, const char *key, bool join, bool *lead)
{
    pthread_mutex_lock(&l->mu);
    s_flight_t *f = s_flight_find(l, key);
    *lead = false;
    if (f) {
        if (join) f->refs++;
        else f = NULL;
    } else {
        f = s_flight_new(l, key);
        *lead = f != NULL;
    }
    pthread_mutex_unlock(&l->mu);
    return f;
}

/* Waits until f is done or deadline_ms (wall clock, 0 = none: the loader timeout and a
 * second) passes; copies the outcome. 0, or -1 on timeout. Drops our reference either way. */
static int s_flight_wait(cache_load_t *l, s_flight_t *f, int64_t deadline_ms, s_outcome_t *o)
{
    int64_t wait_ms = deadline_ms ? deadline_ms - qv_wall_ms() : l->cfg.load_timeout_ms + 1000;
    if (wait_ms < 0) wait_ms = 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += wait_ms / 1000;
    ts.tv_nsec += (wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&l->mu);
    while (!f->done)
        if (pthread_cond_timedwait(&f->cond, &l->mu, &ts) == ETIMEDOUT) break;
    int rc = f->done ? 0 : -1;
    if (rc == 0) s_outcome_copy(o, &f->out);
    s_flight_release_locked(f);
    pthread_mutex_unlock(&l->mu);
    return rc;
}

/* ---- the load ------------------------------------------------------------------------------ */

typedef struct {
    cache_load_t                              *l;
    const cache_namespace_t                   *ns;
    const qv_call_t                           *call;
    const Quaver__V1__CacheGetOrLoadRequest   *req;
    const char                                *full;
    int64_t                                    ttl_ms;
    s_ns_stats_t                              *st;
} s_req_t;

static void s_default_call(void *ctx, const char *service, const char *method,
                           const void *payload, size_t len, const qv_call_t *call,
                           int timeout_ms, qv_result_t *out)
{
    cache_load_t *l = ctx;
    Quaver__V1__Caller caller = QUAVER__V1__CALLER__INIT;
    caller.user_id = call->user_id;
    caller.username = (char *) (call->username ? call->username : "");
    caller.admin = call->admin;
    qv_rpc_call_raw(l->cfg.broker, service, method, payload, len, &caller, call->request_id,
                    timeout_ms, out);
}

/* Calls the loader (bounded by the caller's deadline) and applies its answer: 2xx -> stored
 * for TTL + grace with its facts; 404 -> an "absent" mark (and, on a refresh, the old value
 * removed); anything else -> nothing kept, the status passed on. */
static void s_load(const s_req_t *q, bool refresh, s_outcome_t *o)
{
    cache_load_t *l = q->l;
    const Quaver__V1__CacheGetOrLoadRequest *req = q->req;
    int64_t timeout = l->cfg.load_timeout_ms;
    if (q->call->deadline_ms) {
        timeout = q->call->deadline_ms - qv_wall_ms();
        if (timeout <= 0) {
            s_outcome_error(o, 504, "deadline passed before loader %s.%s was called",
                            req->loader_service, req->loader_method);
            return;
        }
    }
    if (timeout > INT32_MAX) timeout = INT32_MAX;
    qv_result_t res;
    int64_t t0 = s_now(l);
    if (l->ops.call)
        l->ops.call(l->call_ctx, req->loader_service, req->loader_method,
                    req->loader_payload.data, req->loader_payload.len, q->call, (int) timeout,
                    &res);
    else
        s_default_call(l, req->loader_service, req->loader_method, req->loader_payload.data,
                       req->loader_payload.len, q->call, (int) timeout, &res);
    int64_t now = s_now(l), delta = now - t0;
    if (delta < 0) delta = 0;
    atomic_fetch_add(&q->st->loads, 1);
    if (q->st->m_seconds) qv_metric_observe(q->st->m_seconds, (double) delta / 1e6);

    if (res.status >= 200 && res.status < 300) {
        if (q->st->m_ok) qv_metric_add(q->st->m_ok, 1);
        bool keep = l->cfg.enabled && (int64_t) res.len <= l->cfg.max_value_bytes;
        if (l->cfg.enabled && !keep)
            qv_log(QV_LOG_WARN, q->call->request_id, "loader %s.%s answered %zu bytes for %s, "
                   "over max_value_bytes: answered, not cached", req->loader_service,
                   req->loader_method, res.len, q->full);
        int stored = keep ? l->ops.store(l->ops.app, q->ns, req->key, res.payload, res.len,
                                         q->ttl_ms + l->cfg.grace_ms, q->call->request_id)
                          : -1;
        if (refresh && stored != 0 && l->cfg.enabled)
            l->ops.remove(l->ops.app, q->ns, req->key);   /* never keep the older value */
        pthread_mutex_lock(&l->mu);
        if (stored == 0)
            s_side_put(l, q->full, false, now + q->ttl_ms * 1000, delta,
                       qv_fnv1a(res.payload, res.len, QV_FNV1A_INIT), res.len);
        else {
            s_side_t *e = s_side_find(l, q->full,
                                      qv_fnv1a(q->full, strlen(q->full), QV_FNV1A_INIT));
            if (e) s_side_remove(l, e);
        }
        pthread_mutex_unlock(&l->mu);
        s_outcome_value(o, res.payload ? res.payload : (uint8_t *) "", res.len, "loader");
    } else if (res.status == 404) {
        s_inc(&q->st->load_absent, q->st->m_absent);
        if (refresh) l->ops.remove(l->ops.app, q->ns, req->key);
        pthread_mutex_lock(&l->mu);
        if (l->cfg.enabled && l->cfg.negative_ttl_ms > 0)
            s_side_put(l, q->full, true, now + l->cfg.negative_ttl_ms * 1000, delta, 0, 0);
        pthread_mutex_unlock(&l->mu);
        s_outcome_free(o);
        o->status = 200;
        o->source = "loader";
    } else {
        s_inc(&q->st->load_errors, q->st->m_error);
        qv_log(QV_LOG_WARN, q->call->request_id, "loader %s.%s for %s answered %d: %s",
               req->loader_service, req->loader_method, q->full, res.status,
               res.error ? res.error : "");
        s_outcome_error(o, res.status ? res.status : 500, "loader %s.%s: %s",
                        req->loader_service, req->loader_method,
                        res.error && *res.error ? res.error : "failed");
    }
    qv_result_free(&res);
}

/* ---- the request ----------------------------------------------------------------------- */

static int s_check(const s_req_t *q, s_outcome_t *o)
{
    const Quaver__V1__CacheGetOrLoadRequest *req = q->req;
    const char *svc = req->loader_service ? req->loader_service : "";
    const char *m = req->loader_method ? req->loader_method : "";
    if (!*svc) { s_outcome_error(o, 400, "loader_service is empty"); return -1; }
    if (!*m) { s_outcome_error(o, 400, "loader_method is empty"); return -1; }
    if (strlen(svc) > S_NAME_MAX || strlen(m) > S_NAME_MAX) {
        s_outcome_error(o, 400, "loader_service or loader_method is over %d bytes", S_NAME_MAX);
        return -1;
    }
    /* The cache calling itself would hold a worker while it waits for another one: with every
     * worker in that state nothing moves until the deadlines pass. */
    if (strncmp(svc, "mmi.", 4) == 0) {   /* the broker's own services answer no Result */
        s_outcome_error(o, 400, "loader_service '%s' is not a Quaver service", svc);
        return -1;
    }
    if (strcmp(svc, "cache") == 0) {
        s_outcome_error(o, 400, "loader_service 'cache' is this service: a loader must be "
                        "another service");
        return -1;
    }
    if (req->ttl_ms < 0) {
        s_outcome_error(o, 400, "ttl_ms is negative (%lld); 0 means the namespace's (%lld)",
                        (long long) req->ttl_ms, (long long) q->ns->ttl_ms);
        return -1;
    }
    return 0;
}

/* A key that neither tier holds: an "absent" mark, else one load for every caller. */
static void s_miss(const s_req_t *q, s_outcome_t *o)
{
    cache_load_t *l = q->l;
    uint64_t h = qv_fnv1a(q->full, strlen(q->full), QV_FNV1A_INIT);
    pthread_mutex_lock(&l->mu);
    s_side_t *e = s_side_find(l, q->full, h);
    bool negative = false;
    if (e && e->absent) {
        if (s_now(l) < e->expiry_us) negative = true;
        else s_side_remove(l, e);
    }
    pthread_mutex_unlock(&l->mu);
    if (negative) {
        s_inc(&q->st->negative, q->st->m_negative);
        s_outcome_free(o);
        o->status = 200;
        o->source = "negative";
        return;
    }
    bool lead;
    s_flight_t *f = s_flight_take(l, q->full, true, &lead);
    if (!f) { s_outcome_error(o, 500, "out of memory"); return; }
    if (!lead) {
        s_inc(&q->st->coalesced, q->st->m_coalesced);
        if (s_flight_wait(l, f, q->call->deadline_ms, o) != 0)
            s_outcome_error(o, 504, "deadline passed waiting for the load of %s", q->full);
        return;
    }
    /* We lead. A load that ended between our miss and now has stored its value (or its mark)
     * before leaving the table: look again, locally, so it is not loaded twice. */
    uint8_t *val = NULL;
    size_t vlen = 0;
    const char *tier = NULL;
    if (l->cfg.enabled
        && l->ops.lookup(l->ops.app, q->ns, q->req->key, true, &val, &vlen, &tier) == 1) {
        s_outcome_value(o, val, vlen, tier);
    } else {
        pthread_mutex_lock(&l->mu);
        e = s_side_find(l, q->full, h);
        negative = e && e->absent && s_now(l) < e->expiry_us;
        pthread_mutex_unlock(&l->mu);
        if (negative) {
            s_inc(&q->st->negative, q->st->m_negative);
            s_outcome_free(o);
            o->status = 200;
            o->source = "negative";
        } else {
            s_load(q, false, o);
        }
    }
    free(val);
    s_outcome_t mine;
    s_outcome_copy(&mine, o);
    s_flight_finish(l, f, &mine);
    s_flight_release(l, f);
}

/* A hit: early refresh (XFetch) or stale-while-revalidate when the value's facts say so.
 * Takes ownership of val. A value past TTL + grace by its facts (only possible when clocks
 * disagree: the tiers drop it at TTL + grace) is treated as stale too. */
static void s_hit(const s_req_t *q, uint8_t *val, size_t vlen, const char *tier, s_outcome_t *o)
{
    cache_load_t *l = q->l;
    uint64_t h = qv_fnv1a(q->full, strlen(q->full), QV_FNV1A_INIT);
    uint64_t fp = qv_fnv1a(val, vlen, QV_FNV1A_INIT);
    int64_t now = s_now(l), expiry = 0, delta = 0;
    bool facts = false;
    pthread_mutex_lock(&l->mu);
    s_side_t *e = s_side_find(l, q->full, h);
    if (e && !e->absent && e->fp == fp && e->vlen == vlen) {
        facts = true;
        expiry = e->expiry_us;
        delta = e->delta_us;
    } else if (e) {
        s_side_remove(l, e);   /* an absent mark, or facts of an older value: void now */
    }
    pthread_mutex_unlock(&l->mu);

    bool stale = facts && now >= expiry;
    bool early = facts && !stale && l->cfg.xfetch_beta > 0
                 && cache_load_xfetch(now, delta, l->cfg.xfetch_beta, expiry, l->rand(l->rand_ctx));
    s_flight_t *f = NULL;
    bool lead = false;
    if (stale || early) f = s_flight_take(l, q->full, false, &lead);
    if (!f || !lead) {   /* fresh, or somebody else is refreshing it */
        if (stale) s_inc(&q->st->stale, q->st->m_stale);
        s_outcome_value(o, val, vlen, stale ? "stale" : tier);
        free(val);
        return;
    }
    if (early) s_inc(&q->st->xfetch, q->st->m_xfetch);
    s_load(q, true, o);
    s_outcome_t mine;
    s_outcome_copy(&mine, o);
    s_flight_finish(l, f, &mine);
    s_flight_release(l, f);
    if (o->status != 200) {
        /* The refresh failed; the value we hold is still fresh, or within grace: answer it. */
        if (stale) s_inc(&q->st->stale, q->st->m_stale);
        s_outcome_value(o, val, vlen, stale ? "stale" : tier);
    }
    free(val);
}

/* The whole request into o (the selftests call this; cache_load_handle packs o). */
static void s_serve(cache_load_t *l, const cache_namespace_t *ns, const qv_call_t *call,
                    const Quaver__V1__CacheGetOrLoadRequest *req, s_outcome_t *o)
{
    memset(o, 0, sizeof *o);
    s_req_t q = { l, ns, call, req, NULL, req->ttl_ms > 0 ? req->ttl_ms : ns->ttl_ms,
                  &l->stats[ns->index] };
    if (s_check(&q, o) != 0) return;
    size_t n = 7 + strlen(ns->name) + 1 + strlen(req->key) + 1;
    char *full = malloc(n);
    if (!full) { s_outcome_error(o, 500, "out of memory"); return; }
    snprintf(full, n, "quaver:%s:%s", ns->name, req->key);
    q.full = full;
    if (!l->cfg.enabled) {
        /* Nothing is kept, but concurrent callers still share one load. */
        s_miss(&q, o);
        free(full);
        return;
    }
    uint8_t *val = NULL;
    size_t vlen = 0;
    const char *tier = NULL;
    if (l->ops.lookup(l->ops.app, ns, req->key, false, &val, &vlen, &tier) == 1)
        s_hit(&q, val, vlen, tier, o);
    else {
        free(val);
        s_miss(&q, o);
    }
    free(full);
}

int cache_load_handle(cache_load_t *l, const cache_namespace_t *ns, const qv_call_t *call,
                      const Quaver__V1__CacheGetOrLoadRequest *req, qv_reply_t *r)
{
    s_outcome_t o;
    s_serve(l, ns, call, req, &o);
    int rc;
    if (o.status != 200) {
        rc = qv_reply_error(r, o.status, "%s", o.error ? o.error : "");
    } else {
        Quaver__V1__CacheGetOrLoadReply rep = QUAVER__V1__CACHE_GET_OR_LOAD_REPLY__INIT;
        rep.found = o.found;
        rep.value.data = o.value;
        rep.value.len = o.vlen;
        rep.source = (char *) (o.source ? o.source : "");
        rc = qv_reply_set(r, &rep.base) == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
    }
    s_outcome_free(&o);
    return rc;
}

bool cache_load_xfetch(int64_t now, int64_t delta, double beta, int64_t expiry, double r)
{
    if (!(r > 0.0)) r = 1e-300;   /* guard ln(0); (0, 1] is the contract */
    if (r > 1.0) r = 1.0;
    return (double) now - (double) delta * beta * log(r) >= (double) expiry;
}

/* ---- lifecycle, statistics --------------------------------------------------------------- */

cache_load_t *cache_load_new(const cache_load_cfg_t *cfg, const cache_load_ops_t *ops,
                             size_t nns)
{
    cache_load_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->cfg = *cfg;
    l->ops = *ops;
    l->call_ctx = ops->app;
    if (l->cfg.load_timeout_ms <= 0) l->cfg.load_timeout_ms = S_DEFAULT_TIMEOUT_MS;
    if (l->cfg.max_entries == 0) l->cfg.max_entries = S_DEFAULT_MAX_ENTRIES;
    if (l->cfg.negative_ttl_ms < 0) l->cfg.negative_ttl_ms = 0;
    if (l->cfg.grace_ms < 0) l->cfg.grace_ms = 0;
    l->clock = s_default_clock;
    l->rand = s_default_rand;
    l->nns = nns;
    l->nbuckets = 16;
    while (l->nbuckets < l->cfg.max_entries) l->nbuckets <<= 1;
    l->buckets = calloc(l->nbuckets, sizeof *l->buckets);
    l->stats = calloc(nns ? nns : 1, sizeof *l->stats);
    if (!l->buckets || !l->stats) { free(l->buckets); free(l->stats); free(l); return NULL; }
    for (size_t i = 0; i < nns; i++) {
        s_ns_stats_t *s = &l->stats[i];
        atomic_init(&s->loads, 0); atomic_init(&s->load_errors, 0);
        atomic_init(&s->load_absent, 0); atomic_init(&s->coalesced, 0);
        atomic_init(&s->xfetch, 0); atomic_init(&s->stale, 0); atomic_init(&s->negative, 0);
    }
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

void cache_load_destroy(cache_load_t **self_p)
{
    if (!self_p || !*self_p) return;
    cache_load_t *l = *self_p;
    while (l->oldest) s_side_remove(l, l->oldest);
    /* No flight can be left: each is finished by the request that made it. */
    free(l->buckets);
    free(l->stats);
    pthread_mutex_destroy(&l->mu);
    free(l);
    *self_p = NULL;
}

void cache_load_set_clock(cache_load_t *l, int64_t (*fn)(void *ctx), void *ctx)
{
    l->clock = fn ? fn : s_default_clock;
    l->clock_ctx = ctx;
}

void cache_load_set_rand(cache_load_t *l, double (*fn)(void *ctx), void *ctx)
{
    l->rand = fn ? fn : s_default_rand;
    l->rand_ctx = ctx;
}

void cache_load_set_loader(cache_load_t *l,
                           void (*fn)(void *ctx, const char *service, const char *method,
                                      const void *payload, size_t len, const qv_call_t *call,
                                      int timeout_ms, qv_result_t *out),
                           void *ctx)
{
    l->ops.call = fn;
    l->call_ctx = fn ? ctx : l->ops.app;
}

void cache_load_set_metrics(cache_load_t *l, qv_metrics_t *m, const cache_namespaces_t *nss)
{
    if (!m) return;
    for (size_t i = 0; i < l->nns && i < cache_namespaces_count(nss); i++) {
        s_ns_stats_t *s = &l->stats[i];
        const char *name = cache_namespaces_at(nss, i)->name;
        char lb[128];
        const char *loads = "GetOrLoad loader calls by namespace and result";
        snprintf(lb, sizeof lb, "namespace=%s,result=value", name);
        s->m_ok = qv_metrics_counter(m, "quaver_cache_loads_total", loads, lb);
        snprintf(lb, sizeof lb, "namespace=%s,result=absent", name);
        s->m_absent = qv_metrics_counter(m, "quaver_cache_loads_total", loads, lb);
        snprintf(lb, sizeof lb, "namespace=%s,result=error", name);
        s->m_error = qv_metrics_counter(m, "quaver_cache_loads_total", loads, lb);
        snprintf(lb, sizeof lb, "namespace=%s", name);
        s->m_coalesced = qv_metrics_counter(m, "quaver_cache_load_coalesced_total",
                                            "GetOrLoad misses that waited for a load in flight "
                                            "(single-flight)", lb);
        s->m_xfetch = qv_metrics_counter(m, "quaver_cache_xfetch_refreshes_total",
                                         "early refreshes (XFetch) of loaded values", lb);
        s->m_stale = qv_metrics_counter(m, "quaver_cache_stale_served_total",
                                        "expired loaded values served within the grace period",
                                        lb);
        s->m_negative = qv_metrics_counter(m, "quaver_cache_negative_hits_total",
                                           "GetOrLoad answers from a cached 404", lb);
        s->m_seconds = qv_metrics_histogram(m, "quaver_cache_load_seconds",
                                            "GetOrLoad loader call duration", lb, NULL, 0);
    }
}

size_t cache_load_stats(cache_load_t *l, int i, const char **names, double *values)
{
    if (i < 0 || (size_t) i >= l->nns) return 0;
    s_ns_stats_t *s = &l->stats[i];
    const char *n[CACHE_LOAD_NSTATS] = { "loads", "load_errors", "load_absent", "load_coalesced",
                                         "xfetch_refreshes", "stale_served", "negative_hits" };
    uint64_t v[CACHE_LOAD_NSTATS] = {
        atomic_load(&s->loads), atomic_load(&s->load_errors), atomic_load(&s->load_absent),
        atomic_load(&s->coalesced), atomic_load(&s->xfetch), atomic_load(&s->stale),
        atomic_load(&s->negative) };
    for (size_t k = 0; k < CACHE_LOAD_NSTATS; k++) { names[k] = n[k]; values[k] = (double) v[k]; }
    return CACHE_LOAD_NSTATS;
}

/* ---- selftests ----------------------------------------------------------------------------
 * Against a fake tier (a few slots with expiry on a fake clock) and a fake loader, so time,
 * the XFetch draw and the loader's answers are all under the test's control. */

#define S_CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
                                            __LINE__, #c); return 1; } } while (0)

typedef struct {
    pthread_mutex_t mu;
    struct { char key[64]; char val[64]; size_t vlen; int64_t expiry; bool used; } slot[8];
    _Atomic int64_t now;          /* µs */
    _Atomic int     calls, in_load;
    int             status;       /* the loader's answer */
    const char     *value;
    int             sleep_ms;     /* real time per load */
    int64_t         advance_us;   /* fake time per load */
    double          r;            /* the XFetch draw, 0 = the default generator */
} s_fake_t;

static int64_t s_fake_clock(void *ctx) { return atomic_load(&((s_fake_t *) ctx)->now); }
static double s_fake_rand(void *ctx) { return ((s_fake_t *) ctx)->r; }

static int s_fake_lookup(void *app, const cache_namespace_t *ns, const char *key,
                         bool local_only, uint8_t **val_p, size_t *vlen_p, const char **tier_p)
{
    s_fake_t *f = app;
    int hit = 0;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < 8; i++)
        if (f->slot[i].used && strcmp(f->slot[i].key, key) == 0
            && f->slot[i].expiry > atomic_load(&f->now)) {
            *val_p = malloc(f->slot[i].vlen + 1);
            memcpy(*val_p, f->slot[i].val, f->slot[i].vlen);
            *vlen_p = f->slot[i].vlen;
            *tier_p = "local";
            hit = 1;
        }
    pthread_mutex_unlock(&f->mu);
    return hit;
}

static void s_fake_put(s_fake_t *f, const char *key, const char *v, int64_t ttl_ms)
{
    pthread_mutex_lock(&f->mu);
    int at = -1;
    for (int i = 0; i < 8; i++)
        if (f->slot[i].used && strcmp(f->slot[i].key, key) == 0) at = i;
    for (int i = 0; i < 8 && at < 0; i++)
        if (!f->slot[i].used) at = i;
    snprintf(f->slot[at].key, sizeof f->slot[at].key, "%s", key);
    snprintf(f->slot[at].val, sizeof f->slot[at].val, "%s", v);
    f->slot[at].vlen = strlen(v);
    f->slot[at].expiry = atomic_load(&f->now) + ttl_ms * 1000;
    f->slot[at].used = true;
    pthread_mutex_unlock(&f->mu);
}

static int s_fake_store(void *app, const cache_namespace_t *ns, const char *key,
                        const void *value, size_t vlen, int64_t ttl_ms, const char *rid)
{
    char v[64];
    snprintf(v, sizeof v, "%.*s", (int) vlen, (const char *) value);
    s_fake_put(app, key, v, ttl_ms);
    return 0;
}

static void s_fake_remove(void *app, const cache_namespace_t *ns, const char *key)
{
    s_fake_t *f = app;
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < 8; i++)
        if (f->slot[i].used && strcmp(f->slot[i].key, key) == 0) f->slot[i].used = false;
    pthread_mutex_unlock(&f->mu);
}

static void s_fake_call(void *ctx, const char *service, const char *method, const void *payload,
                        size_t len, const qv_call_t *call, int timeout_ms, qv_result_t *out)
{
    s_fake_t *f = ctx;
    atomic_fetch_add(&f->calls, 1);
    atomic_fetch_add(&f->in_load, 1);
    if (f->sleep_ms) usleep((useconds_t) f->sleep_ms * 1000);
    atomic_fetch_add(&f->now, f->advance_us);
    memset(out, 0, sizeof *out);
    out->status = f->status;
    out->error = strdup(f->status == 200 ? "" : "the loader is sad");
    if (f->status == 200) {
        out->len = strlen(f->value);
        out->payload = malloc(out->len + 1);
        memcpy(out->payload, f->value, out->len);
    }
    atomic_fetch_sub(&f->in_load, 1);
}

static const cache_namespace_t s_test_ns = { .name = "t", .index = 0, .ttl_ms = 1000 };

static cache_load_t *s_fake_new(s_fake_t *f, int64_t negative_ms, int64_t grace_ms, double beta)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->status = 200;
    f->value = "v1";
    cache_load_cfg_t cfg = { NULL, negative_ms, grace_ms, beta, 5000, 100, 64, true };
    cache_load_ops_t ops = { s_fake_lookup, s_fake_store, s_fake_remove, s_fake_call, f };
    cache_load_t *l = cache_load_new(&cfg, &ops, 1);
    if (l) {
        cache_load_set_clock(l, s_fake_clock, f);
        cache_load_set_rand(l, s_fake_rand, f);
    }
    return l;
}

/* Asks for key with a deadline ms from now (0: none); o as s_serve fills it. */
static void s_ask(cache_load_t *l, const char *key, int64_t deadline_in_ms, s_outcome_t *o)
{
    Quaver__V1__CacheGetOrLoadRequest req = QUAVER__V1__CACHE_GET_OR_LOAD_REQUEST__INIT;
    req.namespace_ = "t";
    req.key = (char *) key;
    req.loader_service = "loader";
    req.loader_method = "Get";
    qv_call_t call = { "cache", "GetOrLoad", "", deadline_in_ms ? qv_wall_ms() + deadline_in_ms : 0,
                       0, "selftest", false };
    s_serve(l, &s_test_ns, &call, &req, o);
}

static bool s_is(const s_outcome_t *o, bool found, const char *value, const char *source)
{
    return o->status == 200 && o->found == found && o->source && strcmp(o->source, source) == 0
           && (!found || (o->vlen == strlen(value) && memcmp(o->value, value, o->vlen) == 0));
}

/* Asks for key with no deadline and says whether the answer is (found, value, source). */
static bool s_ask_is(cache_load_t *l, const char *key, bool found, const char *value,
                     const char *source)
{
    s_outcome_t o;
    s_ask(l, key, 0, &o);
    bool ok = s_is(&o, found, value, source);
    s_outcome_free(&o);
    return ok;
}

static uint64_t s_stat_of(cache_load_t *l, const char *name)
{
    const char *n[CACHE_LOAD_NSTATS];
    double v[CACHE_LOAD_NSTATS];
    size_t k = cache_load_stats(l, 0, n, v);
    for (size_t i = 0; i < k; i++) if (strcmp(n[i], name) == 0) return (uint64_t) v[i];
    return UINT64_MAX;
}

static double s_default_rand_wrap(void *ctx) { return s_default_rand(ctx); }

int cache_load_selftest_xfetch(void)
{
    /* The rule itself: r = 1 never refreshes early; r = e^-k moves "now" k * delta * beta
     * closer to expiry. */
    S_CHECK(!cache_load_xfetch(999, 100, 1.0, 1000, 1.0));
    S_CHECK(cache_load_xfetch(1000, 100, 1.0, 1000, 1.0));
    S_CHECK(!cache_load_xfetch(850, 100, 1.0, 1000, exp(-1.0)));    /* 850 + 100 < 1000 */
    S_CHECK(cache_load_xfetch(900, 100, 1.0, 1000, exp(-1.0)));     /* 900 + 100 >= 1000 */
    S_CHECK(cache_load_xfetch(800, 100, 2.0, 1000, exp(-1.0)));     /* beta 2: 800 + 200 */
    S_CHECK(!cache_load_xfetch(799, 100, 2.0, 1000, exp(-1.0)));
    S_CHECK(!cache_load_xfetch(0, 100, 0.0, 1000, 1e-300));         /* beta 0: never early */
    S_CHECK(cache_load_xfetch(0, 100, 1.0, 1000, 1e-9));            /* a tiny draw: early */
    /* The default draw is in (0, 1] and, one delta before expiry, refreshes with probability
     * P(-ln r >= 1) = 1/e. */
    int early = 0, n = 200000;
    for (int i = 0; i < n; i++) {
        double r = s_default_rand_wrap(NULL);
        S_CHECK(r > 0.0 && r <= 1.0);
        early += cache_load_xfetch(900, 100, 1.0, 1000, r);
    }
    double p = (double) early / n;
    S_CHECK(p > exp(-1.0) - 0.01 && p < exp(-1.0) + 0.01);

    /* Through a request, with the draw fixed: loaded at 100 ms (the load took 100 ms), so it
     * expires at 1100 ms; at 950 ms a draw of e^-1 (950 + 100 < 1100) keeps the value and a
     * draw of e^-2 (950 + 200 >= 1100) refreshes it, answering the new value. */
    s_fake_t f;
    cache_load_t *l = s_fake_new(&f, 5000, 0, 1.0);
    S_CHECK(l);
    f.advance_us = 100000;
    f.r = 1.0;
    s_outcome_t o;
    S_CHECK(s_ask_is(l, "k", true, "v1", "loader") && f.calls == 1);
    f.advance_us = 0;
    atomic_store(&f.now, 950000);
    f.value = "v2";
    f.r = exp(-1.0);
    S_CHECK(s_ask_is(l, "k", true, "v1", "local") && f.calls == 1);
    f.r = exp(-2.0);
    s_ask(l, "k", 0, &o);
    S_CHECK(s_is(&o, true, "v2", "loader") && f.calls == 2);
    S_CHECK(s_stat_of(l, "xfetch_refreshes") == 1);
    s_outcome_free(&o);
    /* The new value's facts: the load took 0 µs, so no draw refreshes it before 1950 ms. */
    f.r = 1e-12;
    S_CHECK(s_ask_is(l, "k", true, "v2", "local") && f.calls == 2);
    cache_load_destroy(&l);
    return 0;
}

typedef struct {
    cache_load_t *l;
    const char   *key;
    s_outcome_t   o;
    _Atomic int  *go;
} s_thread_arg_t;

static void *s_asker(void *arg)
{
    s_thread_arg_t *a = arg;
    while (!atomic_load(a->go)) usleep(100);
    s_ask(a->l, a->key, 5000, &a->o);
    return NULL;
}

int cache_load_selftest_single_flight(void)
{
    enum { N = 16 };
    s_fake_t f;
    cache_load_t *l = s_fake_new(&f, 5000, 0, 0.0);
    S_CHECK(l);
    f.sleep_ms = 200;
    for (int round = 0; round < 2; round++) {
        /* Round 0: N concurrent misses, one load, everybody gets its value. Round 1: the
         * loader fails; its failure reaches everybody, and nothing is kept. */
        const char *key = round == 0 ? "one" : "two";
        f.status = round == 0 ? 200 : 503;
        atomic_store(&f.calls, 0);
        _Atomic int go = 0;
        pthread_t th[N];
        s_thread_arg_t args[N];
        for (int i = 0; i < N; i++) {
            args[i] = (s_thread_arg_t){ l, key, { 0 }, &go };
            S_CHECK(pthread_create(&th[i], NULL, s_asker, &args[i]) == 0);
        }
        atomic_store(&go, 1);
        int local = 0;
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            if (round == 0) {
                S_CHECK(s_is(&args[i].o, true, "v1", "loader")
                        || s_is(&args[i].o, true, "v1", "local"));
                local += strcmp(args[i].o.source, "local") == 0;
            } else {
                S_CHECK(args[i].o.status == 503 && strstr(args[i].o.error, "the loader is sad"));
            }
            s_outcome_free(&args[i].o);
        }
        S_CHECK(f.calls == 1);
        if (round == 0) S_CHECK(s_stat_of(l, "load_coalesced") + (uint64_t) local == N - 1);
    }
    s_outcome_t o;
    S_CHECK(s_fake_lookup(&f, NULL, "two", false, &o.value, &o.vlen, &o.source) == 0);
    S_CHECK(s_stat_of(l, "load_errors") == 1);

    /* A waiter gives up at its own deadline; the leader goes on and gets the value. */
    f.status = 200;
    f.sleep_ms = 400;
    atomic_store(&f.calls, 0);
    _Atomic int go = 1;
    s_thread_arg_t lead = { l, "three", { 0 }, &go };
    pthread_t th;
    S_CHECK(pthread_create(&th, NULL, s_asker, &lead) == 0);
    while (!atomic_load(&f.in_load)) usleep(1000);
    int64_t t0 = qv_mono_ms();
    s_ask(l, "three", 100, &o);
    int64_t waited = qv_mono_ms() - t0;
    S_CHECK(o.status == 504 && waited >= 90 && waited < 350);
    s_outcome_free(&o);
    pthread_join(th, NULL);
    S_CHECK(s_is(&lead.o, true, "v1", "loader") && f.calls == 1);
    s_outcome_free(&lead.o);
    cache_load_destroy(&l);
    return 0;
}

int cache_load_selftest_negative(void)
{
    s_fake_t f;
    cache_load_t *l = s_fake_new(&f, 5000, 0, 0.0);
    S_CHECK(l);
    f.status = 404;
    s_outcome_t o;
    S_CHECK(s_ask_is(l, "gone", false, NULL, "loader") && f.calls == 1);
    atomic_store(&f.now, 4999000);   /* within the negative TTL: no loader call */
    s_ask(l, "gone", 0, &o);
    S_CHECK(s_is(&o, false, NULL, "negative") && f.calls == 1);
    S_CHECK(s_stat_of(l, "negative_hits") == 1 && s_stat_of(l, "load_absent") == 1);
    s_outcome_free(&o);
    atomic_store(&f.now, 5000000);   /* the mark has ended: loaded again */
    S_CHECK(s_ask_is(l, "gone", false, NULL, "loader") && f.calls == 2);
    /* A value Set meanwhile wins over the mark, and voids it. */
    s_fake_put(&f, "gone", "back", 1000);
    S_CHECK(s_ask_is(l, "gone", true, "back", "local") && f.calls == 2);
    s_fake_remove(&f, NULL, "gone");
    S_CHECK(s_ask_is(l, "gone", false, NULL, "loader") && f.calls == 3);
    cache_load_destroy(&l);
    /* negative_ttl_ms 0: every call asks the loader. */
    l = s_fake_new(&f, 0, 0, 0.0);
    S_CHECK(l);
    f.status = 404;
    for (int i = 0; i < 3; i++) {
        S_CHECK(s_ask_is(l, "gone", false, NULL, "loader"));
    }
    S_CHECK(f.calls == 3);
    cache_load_destroy(&l);
    return 0;
}

int cache_load_selftest_refresh(void)
{
    s_fake_t f;
    cache_load_t *l = s_fake_new(&f, 5000, 500, 0.0);   /* TTL 1 s, grace 0.5 s, no XFetch */
    S_CHECK(l);
    s_outcome_t o;
    s_ask(l, "k", 0, &o);                                 /* stored until 1.5 s, expires 1 s */
    S_CHECK(s_is(&o, true, "v1", "loader") && f.calls == 1);
    s_outcome_free(&o);
    atomic_store(&f.now, 999000);
    S_CHECK(s_ask_is(l, "k", true, "v1", "local") && f.calls == 1);
    /* Stale: the caller that takes the slot refreshes (slowly); meanwhile others get stale. */
    atomic_store(&f.now, 1200000);
    f.value = "v2";
    f.sleep_ms = 300;
    _Atomic int go = 1;
    s_thread_arg_t a = { l, "k", { 0 }, &go };
    pthread_t th;
    S_CHECK(pthread_create(&th, NULL, s_asker, &a) == 0);
    while (!atomic_load(&f.in_load)) usleep(1000);
    s_ask(l, "k", 0, &o);
    S_CHECK(s_is(&o, true, "v1", "stale") && f.calls == 2);
    S_CHECK(s_stat_of(l, "stale_served") == 1);
    s_outcome_free(&o);
    pthread_join(th, NULL);
    S_CHECK(s_is(&a.o, true, "v2", "loader"));
    s_outcome_free(&a.o);
    f.sleep_ms = 0;
    /* v2 expires at 2.2 s. A failed refresh within grace answers the stale value. */
    atomic_store(&f.now, 2300000);
    f.status = 503;
    S_CHECK(s_ask_is(l, "k", true, "v2", "stale") && f.calls == 3
            && s_stat_of(l, "load_errors") == 1);
    /* Past TTL + grace the tier has dropped it: a miss, and the error passes through. */
    atomic_store(&f.now, 2700000);
    s_ask(l, "k", 0, &o);
    S_CHECK(o.status == 503 && f.calls == 4);
    s_outcome_free(&o);
    /* A refresh answered 404: the value goes, the key is absent. */
    f.status = 200;
    f.value = "v3";
    s_ask(l, "k", 0, &o);                                 /* loaded at 2.7 s, expires 3.7 s */
    S_CHECK(s_is(&o, true, "v3", "loader"));
    s_outcome_free(&o);
    atomic_store(&f.now, 3800000);
    f.status = 404;
    S_CHECK(s_ask_is(l, "k", false, NULL, "loader") && f.calls == 6);
    S_CHECK(s_ask_is(l, "k", false, NULL, "negative") && f.calls == 6);
    /* Facts of an older value are void: a Set value past the loaded one's expiry is a plain
     * hit, not stale. */
    f.status = 200;
    f.value = "v4";
    atomic_store(&f.now, 9000000);
    S_CHECK(s_ask_is(l, "j", true, "v4", "loader") && f.calls == 7);
    s_fake_put(&f, "j", "set", 60000);
    atomic_store(&f.now, 10200000);
    S_CHECK(s_ask_is(l, "j", true, "set", "local") && f.calls == 7);
    cache_load_destroy(&l);
    return 0;
}

int cache_load_selftest_errors(void)
{
    s_fake_t f;
    cache_load_t *l = s_fake_new(&f, 5000, 0, 0.0);
    S_CHECK(l);
    qv_call_t call = { "cache", "GetOrLoad", "", 0, 0, "selftest", false };
    struct { const char *svc, *method; int64_t ttl; const char *want; } bad[] = {
        { "", "Get", 0, "loader_service is empty" },
        { "loader", "", 0, "loader_method is empty" },
        { "cache", "Get", 0, "loader_service 'cache' is this service" },
        { "mmi.service", "Get", 0, "is not a Quaver service" },
        { "loader", "Get", -1, "ttl_ms is negative" },
    };
    s_outcome_t o;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Quaver__V1__CacheGetOrLoadRequest req = QUAVER__V1__CACHE_GET_OR_LOAD_REQUEST__INIT;
        req.namespace_ = "t";
        req.key = "k";
        req.loader_service = (char *) bad[i].svc;
        req.loader_method = (char *) bad[i].method;
        req.ttl_ms = bad[i].ttl;
        s_serve(l, &s_test_ns, &call, &req, &o);
        S_CHECK(o.status == 400 && strstr(o.error, bad[i].want));
        s_outcome_free(&o);
    }
    S_CHECK(f.calls == 0);
    /* A loader error passes through and nothing is kept: the next call loads again. */
    f.status = 503;
    s_ask(l, "k", 0, &o);
    S_CHECK(o.status == 503 && strstr(o.error, "loader loader.Get: the loader is sad"));
    s_outcome_free(&o);
    s_ask(l, "k", 0, &o);
    S_CHECK(o.status == 503 && f.calls == 2);
    s_outcome_free(&o);
    /* A value over max_value_bytes (64) is answered, not kept. */
    f.status = 200;
    f.value = "0123456789012345678901234567890123456789012345678901234567890123456789";
    S_CHECK(s_ask_is(l, "big", true, f.value, "loader"));
    S_CHECK(s_ask_is(l, "big", true, f.value, "loader") && f.calls == 4);
    cache_load_destroy(&l);
    return 0;
}
