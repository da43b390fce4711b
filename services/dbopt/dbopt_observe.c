/* dbopt_observe: per-statement observation, slow queries and plan regressions (guarantees in
 * dbopt_observe.h). Layout: one s_stmt_t per catalog entry under one mutex; the timer copies
 * what it needs under the mutex, runs EXPLAIN without it, and writes the outcome back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <jansson.h>
#include <sodium.h>
#include "dbopt_observe.h"
#include "dbopt_pool.h"
#include "qv_log.h"
#include "qv_clock.h"
#include "quaver/v1/dbopt_observe.pb-c.h"

/* A sampled call's parameters; one heap block holding the pointers and the strings. */
typedef struct {
    int    n;
    char **v;       /* v[i] NULL = SQL NULL; NULL itself: empty slot */
} s_params_t;

/* Calls and errors are counted by the pool (stmt.<name>.calls/errors); rows only here. */
typedef struct {
    uint64_t        rows;
    dbopt_hist_t    all;             /* since start */
    dbopt_hist_t    window;          /* since the last sampling window ended */
    s_params_t      sample;          /* the newest successful call's (reads only) */
    dbopt_plan_t    plan;            /* the current plan (hash 0: none yet) */
    dbopt_plan_t    base_plan;       /* the plan of the regression baseline */
    dbopt_regress_t rg;
} s_stmt_t;

typedef struct {
    size_t       idx;
    double       ms, threshold_ms;
    int64_t      time_ms;
    dbopt_plan_t plan;
} s_slow_t;

struct dbopt_obs_t {
    dbopt_obs_opts_t     o;
    dbopt_regress_cfg_t  rcfg;
    pthread_mutex_t      mu;
    s_stmt_t            *st;
    size_t               n;
    s_slow_t             slow[DBOPT_OBS_SLOW];   /* ring, slow_next is the next to write */
    unsigned             slow_next, slow_count;
    int64_t              window_start_ms;        /* mono */
};

/* A parameter set larger than this is not sampled: EXPLAIN needs realistic values, not an
 * upload-sized blob kept in memory. */
#define S_SAMPLE_MAX_BYTES 4096

/* ---- life ------------------------------------------------------------------------------- */

dbopt_obs_t *dbopt_obs_new(const dbopt_obs_opts_t *o)
{
    if (sodium_init() < 0)
        return NULL;
    dbopt_obs_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->o = *o;
    /* zeros (a caller that set no options) take the config table's defaults */
    if (self->o.sample_interval_s <= 0)
        self->o.sample_interval_s = 60;
    else if (self->o.sample_interval_s < 1)
        self->o.sample_interval_s = 1;
    self->rcfg.factor = o->regress_factor > 0 ? o->regress_factor : 2.0;
    self->rcfg.min_calls = o->regress_min_calls > 0 ? (uint64_t) o->regress_min_calls : 20;
    self->rcfg.min_ms = o->regress_min_ms;
    self->n = dbopt_catalog_count();
    self->st = calloc(self->n, sizeof *self->st);
    if (!self->st) {
        free(self);
        return NULL;
    }
    pthread_mutex_init(&self->mu, NULL);
    self->window_start_ms = qv_mono_ms();
    return self;
}

static void s_params_free(s_params_t *p)
{
    free(p->v);     /* one block */
    p->v = NULL;
    p->n = 0;
}

void dbopt_obs_destroy(dbopt_obs_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dbopt_obs_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++) {
        s_params_free(&self->st[i].sample);
        dbopt_plan_clear(&self->st[i].plan);
        dbopt_plan_clear(&self->st[i].base_plan);
    }
    for (int i = 0; i < DBOPT_OBS_SLOW; i++)
        dbopt_plan_clear(&self->slow[i].plan);
    pthread_mutex_destroy(&self->mu);
    free(self->st);
    free(self);
    *self_p = NULL;
}

/* ---- recording -------------------------------------------------------------------------- */

/* One allocation: n pointers, then the strings. NULL when too big or out of memory. */
static char **s_params_copy(const char *const *values, int n)
{
    size_t bytes = (size_t) n * sizeof(char *);
    for (int i = 0; i < n; i++)
        if (values[i])
            bytes += strlen(values[i]) + 1;
    if (bytes - (size_t) n * sizeof(char *) > S_SAMPLE_MAX_BYTES)
        return NULL;
    char **v = malloc(bytes ? bytes : 1);
    if (!v)
        return NULL;
    char *at = (char *) (v + n);
    for (int i = 0; i < n; i++) {
        if (!values[i]) {
            v[i] = NULL;
            continue;
        }
        size_t len = strlen(values[i]) + 1;
        memcpy(at, values[i], len);
        v[i] = at;
        at += len;
    }
    return v;
}

static int s_json_plan(json_t *obj, const dbopt_plan_t *plan)
{
    json_t *p = json_object();
    if (!p)
        return -1;
    json_object_set_new(p, "hash", json_integer((json_int_t) plan->hash));
    json_object_set_new(p, "shape", json_string(plan->shape ? plan->shape : ""));
    json_t *tree = plan->json ? json_loads(plan->json, 0, NULL) : NULL;
    json_object_set_new(p, "json", tree ? tree : json_null());
    return json_object_set_new(obj, "plan", p);
}

static void s_publish(dbopt_obs_t *self, const char *topic, json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text && self->o.bus)
        (void) qv_bus_publish_json(self->o.bus, topic, text);
    free(text);
}

void dbopt_obs_record(dbopt_obs_t *self, size_t idx, int64_t us, int64_t rows, bool failed,
                      const char *const *values, int nvalues, const char *req_id)
{
    if (!self || idx >= self->n)
        return;
    /* the copy is made before taking the lock: malloc under it would serialise workers.
     * Writes keep none: nothing ever reads them (only reads are EXPLAINed). */
    char **copy = failed || !dbopt_catalog[idx].readonly ? NULL
                  : s_params_copy(values, nvalues);
    bool slow = self->o.slow_query_ms > 0 && us >= (int64_t) self->o.slow_query_ms * 1000;
    s_slow_t event = { .idx = idx, .ms = (double) us / 1000.0,
                       .threshold_ms = self->o.slow_query_ms, .time_ms = qv_wall_ms() };
    pthread_mutex_lock(&self->mu);
    s_stmt_t *s = &self->st[idx];
    if (!failed && rows > 0)
        s->rows += (uint64_t) rows;
    dbopt_hist_add(&s->all, us);
    dbopt_hist_add(&s->window, us);
    char **old = NULL;
    if (copy) {
        old = s->sample.v;
        s->sample.v = copy;
        s->sample.n = nvalues;
    }
    if (slow) {
        s_slow_t *e = &self->slow[self->slow_next++ % DBOPT_OBS_SLOW];
        dbopt_plan_clear(&e->plan);
        *e = event;                                     /* event.plan is still empty here */
        (void) dbopt_plan_copy(&e->plan, &s->plan);
        (void) dbopt_plan_copy(&event.plan, &s->plan);  /* for the log and bus, unlocked */
        if (self->slow_count < DBOPT_OBS_SLOW)
            self->slow_count++;
    }
    pthread_mutex_unlock(&self->mu);
    free(old);
    if (!slow)
        return;
    /* name and time only: the parameters never reach a log line or the bus */
    const char *name = dbopt_catalog[idx].name;
    qv_log(QV_LOG_WARN, req_id, "slow query %s: %.1f ms (threshold %d ms)%s%s", name,
           event.ms, self->o.slow_query_ms, event.plan.shape ? ", plan " : "",
           event.plan.shape ? event.plan.shape : "");
    json_t *obj = json_pack("{s:s, s:f, s:i, s:I}", "name", name, "duration_ms", event.ms,
                            "threshold_ms", self->o.slow_query_ms, "time_ms",
                            (json_int_t) event.time_ms);
    if (obj && s_json_plan(obj, &event.plan) == 0)
        s_publish(self, "db.slow_query", obj);
    json_decref(obj);
    dbopt_plan_clear(&event.plan);
}

char **dbopt_obs_sample_params(dbopt_obs_t *self, size_t idx, int *nvalues_p)
{
    *nvalues_p = 0;
    if (!self || idx >= self->n)
        return NULL;
    pthread_mutex_lock(&self->mu);
    const s_stmt_t *s = &self->st[idx];
    const s_params_t *newest = &s->sample;
    char **copy = NULL;
    if (newest->v) {
        copy = s_params_copy((const char *const *) newest->v, newest->n);
        if (copy)
            *nvalues_p = newest->n;
    }
    pthread_mutex_unlock(&self->mu);
    return copy;
}

bool dbopt_obs_wants_plan(dbopt_obs_t *self, size_t idx, int64_t us)
{
    if (!self || idx >= self->n || self->o.slow_query_ms <= 0
        || us < (int64_t) self->o.slow_query_ms * 1000)
        return false;
    pthread_mutex_lock(&self->mu);
    bool none = self->st[idx].plan.hash == 0;
    pthread_mutex_unlock(&self->mu);
    return none;
}

void dbopt_obs_set_plan(dbopt_obs_t *self, size_t idx, const char *explain_json)
{
    dbopt_plan_t plan;
    char err[128];
    if (!self || idx >= self->n || dbopt_plan_parse(explain_json, &plan, err, sizeof err) < 0)
        return;
    pthread_mutex_lock(&self->mu);
    dbopt_plan_clear(&self->st[idx].plan);
    self->st[idx].plan = plan;
    pthread_mutex_unlock(&self->mu);
}

/* ---- EXPLAIN ---------------------------------------------------------------------------- */

char *dbopt_obs_explain(PGconn *pg, const dbopt_stmt_t *st, const char *const *values,
                        int nvalues, char *err, size_t len)
{
    /* EXECUTE takes its arguments as SQL expressions, so the values become literals quoted
     * by libpq (PQescapeLiteral), never spliced raw; the statement name is from the const
     * catalog (lower case and '_' only, checked by the catalog selftest). */
    size_t cap = 64 + strlen(st->name);
    char **lits = calloc((size_t) nvalues + 1, sizeof *lits);
    if (!lits) {
        snprintf(err, len, "out of memory");
        return NULL;
    }
    int ok = 1;
    for (int i = 0; i < nvalues && ok; i++) {
        if (!values[i])
            continue;
        lits[i] = PQescapeLiteral(pg, values[i], strlen(values[i]));
        if (!lits[i])
            ok = 0;
        else
            cap += strlen(lits[i]) + 2;
    }
    cap += (size_t) nvalues * 6;
    char *sql = ok ? malloc(cap) : NULL;
    char *out = NULL;
    if (sql) {
        size_t at = (size_t) snprintf(sql, cap, "EXPLAIN (FORMAT JSON) EXECUTE %s", st->name);
        for (int i = 0; i < nvalues; i++)
            at += (size_t) snprintf(sql + at, cap - at, "%s%s", i ? ", " : "(",
                                    lits[i] ? lits[i] : "NULL");
        if (nvalues)
            snprintf(sql + at, cap - at, ")");
        PGresult *r = PQexec(pg, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            out = strdup(PQgetvalue(r, 0, 0));
        else {
            /* the server's message only: it may quote a value, so it is not logged as is */
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            snprintf(err, len, "EXPLAIN %s failed (SQLSTATE %s)", st->name, state ? state : "-");
        }
        PQclear(r);
    } else
        snprintf(err, len, "out of memory");
    for (int i = 0; i < nvalues; i++)
        if (lits[i])
            PQfreemem(lits[i]);
    free(lits);
    free(sql);
    return out;
}

/* ---- the sampling window ------------------------------------------------------------------ */

static void s_regression(dbopt_obs_t *self, size_t idx, const dbopt_plan_t *old,
                         double old_p95, const dbopt_plan_t *cur, double p95, uint64_t calls)
{
    const char *name = dbopt_catalog[idx].name;
    qv_warn("plan regression %s: p95 %.2f ms -> %.2f ms (x%.1f) over %llu calls; plan %s -> %s",
            name, old_p95, p95, old_p95 > 0 ? p95 / old_p95 : 0.0, (unsigned long long) calls,
            old->shape ? old->shape : "?", cur->shape ? cur->shape : "?");
    json_t *o = json_object(), *n = json_object();
    if (s_json_plan(o, old) == 0 && s_json_plan(n, cur) == 0) {
        /* flatten {"plan": {...}} into the old/new objects */
        json_t *op = json_incref(json_object_get(o, "plan"));
        json_t *np = json_incref(json_object_get(n, "plan"));
        json_object_set_new(op, "p95_ms", json_real(old_p95));
        json_object_set_new(np, "p95_ms", json_real(p95));
        json_t *obj = json_pack("{s:s, s:o, s:o, s:f, s:f, s:f, s:I}", "name", name,
                                "old", op, "new", np, "old_p95_ms", old_p95, "new_p95_ms",
                                p95, "factor", self->rcfg.factor, "calls", (json_int_t) calls);
        if (obj)
            s_publish(self, "db.plan_regression", obj);
        json_decref(obj);
    }
    json_decref(o);
    json_decref(n);
}

/* The detector's step for statement idx at a window's end: plan is the EXPLAIN just made
 * (taken over: it becomes the current plan), win the calls of the window that ended. */
static void s_judge(dbopt_obs_t *self, size_t idx, dbopt_plan_t *plan, const dbopt_hist_t *win)
{
    const char *name = dbopt_catalog[idx].name;
    double p95 = dbopt_hist_quantile_ms(win, 0.95);
    pthread_mutex_lock(&self->mu);
    s_stmt_t *s = &self->st[idx];
    /* Same plan but too few calls to judge: the window stays open (so a plan slow enough
     * that few calls finish is still judged, one interval later), instead of needing
     * min_calls within one interval. */
    if (plan->hash == s->rg.last_hash && win->count < self->rcfg.min_calls)
        dbopt_hist_merge(&s->window, win);
    uint64_t old_hash;
    double old_p95;
    dbopt_rg_verdict_t v = dbopt_regress_step(&s->rg, &self->rcfg, plan->hash, win->count, p95,
                                              &old_hash, &old_p95);
    dbopt_plan_t old = { 0, NULL, NULL }, cur = { 0, NULL, NULL };
    if (v == DBOPT_RG_ALARM || v == DBOPT_RG_ACCEPT) {
        /* copies for the alarm, published after the unlock */
        (void) dbopt_plan_copy(&old, &s->base_plan);
        (void) dbopt_plan_copy(&cur, plan);
    }
    if (v != DBOPT_RG_NONE) {
        dbopt_plan_clear(&s->base_plan);
        (void) dbopt_plan_copy(&s->base_plan, plan);
    }
    if (plan->hash != s->plan.hash)
        qv_info("plan of %s is now %s", name, plan->shape);
    dbopt_plan_clear(&s->plan);
    s->plan = *plan;
    memset(plan, 0, sizeof *plan);
    pthread_mutex_unlock(&self->mu);
    if (v == DBOPT_RG_ALARM)
        s_regression(self, idx, &old, old_p95, &cur, p95, win->count);
    else if (v == DBOPT_RG_ACCEPT)
        qv_info("plan change of %s is not slower (p95 %.2f ms -> %.2f ms): new baseline",
                name, old_p95, p95);
    dbopt_plan_clear(&old);
    dbopt_plan_clear(&cur);
}

/* One statement at a window's end: close its window, EXPLAIN it (without the lock) and judge. */
static void s_sample(dbopt_obs_t *self, struct dbopt_pool_t *pool, size_t idx)
{
    const dbopt_stmt_t *cat = &dbopt_catalog[idx];
    /* close the window first: calls made while EXPLAIN runs belong to the next one */
    pthread_mutex_lock(&self->mu);
    s_stmt_t *s = &self->st[idx];
    dbopt_hist_t win = s->window;
    memset(&s->window, 0, sizeof s->window);
    pthread_mutex_unlock(&self->mu);
    int nparams = 0;
    char **params = cat->readonly ? dbopt_obs_sample_params(self, idx, &nparams) : NULL;
    if (!params)
        return;         /* a write, or never called: no plan to sample */
    dbopt_error_t err;
    /* the sampler waits for no one: with every connection busy it skips this window */
    char *json = dbopt_pool_explain(pool, cat, (const char *const *) params, nparams, 100, &err);
    free(params);
    dbopt_plan_t plan = { 0, NULL, NULL };
    char perr[128];
    if (!json || dbopt_plan_parse(json, &plan, perr, sizeof perr) < 0) {
        qv_debug("plan sample %s skipped: %s", cat->name, json ? perr : err.text);
        free(json);
        pthread_mutex_lock(&self->mu);
        dbopt_hist_merge(&s->window, &win);     /* judged with the next window */
        pthread_mutex_unlock(&self->mu);
        return;
    }
    free(json);
    s_judge(self, idx, &plan, &win);
}

void dbopt_obs_tick(dbopt_obs_t *self, struct dbopt_pool_t *pool)
{
    if (!self || self->o.quiet)
        return;
    int64_t now = qv_mono_ms();
    if (now - self->window_start_ms < (int64_t) (self->o.sample_interval_s * 1000.0))
        return;
    self->window_start_ms = now;    /* only the timer thread reads or writes this */
    for (size_t i = 0; i < self->n; i++)
        s_sample(self, pool, i);
}

/* ---- reading ----------------------------------------------------------------------------- */

/* One statement's figures for Stats, copied under the lock. */
typedef struct {
    uint64_t rows;
    double   p50_ms, p95_ms, p99_ms;
    uint64_t plan_hash;
} s_row_t;

/* out: one entry per catalog statement. */
static void s_rows(dbopt_obs_t *self, s_row_t *out)
{
    pthread_mutex_lock(&self->mu);
    for (size_t i = 0; i < self->n; i++) {
        const s_stmt_t *s = &self->st[i];
        out[i].rows = s->rows;
        out[i].p50_ms = dbopt_hist_quantile_ms(&s->all, 0.50);
        out[i].p95_ms = dbopt_hist_quantile_ms(&s->all, 0.95);
        out[i].p99_ms = dbopt_hist_quantile_ms(&s->all, 0.99);
        out[i].plan_hash = s->plan.hash;
    }
    pthread_mutex_unlock(&self->mu);
}

int dbopt_obs_slow_queries(dbopt_obs_t *self, const qv_call_t *call,
                           const ProtobufCMessage *msg, qv_reply_t *reply)
{
    (void) call;
    const Quaver__V1__SlowQueriesRequest *req = (const Quaver__V1__SlowQueriesRequest *) msg;
    size_t only = (size_t) -1;
    if (req->name && *req->name && !dbopt_catalog_find(req->name, &only))
        return qv_reply_error(reply, 404, "unknown catalog statement '%.80s' (names: "
                              "docs/CONTRACTS.md, dbopt catalog)", req->name);
    Quaver__V1__SlowQuery *items = calloc(DBOPT_OBS_SLOW, sizeof *items);
    Quaver__V1__SlowQuery **ptrs = calloc(DBOPT_OBS_SLOW, sizeof *ptrs);
    dbopt_plan_t *plans = calloc(DBOPT_OBS_SLOW, sizeof *plans);
    if (!items || !ptrs || !plans) {
        free(items);
        free(ptrs);
        free(plans);
        return qv_reply_error(reply, 500, "out of memory");
    }
    size_t limit = req->limit ? req->limit : DBOPT_OBS_SLOW, k = 0;
    pthread_mutex_lock(&self->mu);
    for (unsigned j = 1; j <= self->slow_count && k < limit; j++) {
        const s_slow_t *e = &self->slow[(self->slow_next - j) % DBOPT_OBS_SLOW];
        if (only != (size_t) -1 && e->idx != only)
            continue;
        /* copies: the ring may be overwritten once the lock is released */
        (void) dbopt_plan_copy(&plans[k], &e->plan);
        Quaver__V1__SlowQuery *q = &items[k];
        quaver__v1__slow_query__init(q);
        q->name = (char *) dbopt_catalog[e->idx].name;
        q->duration_ms = e->ms;
        q->time_ms = e->time_ms;
        q->threshold_ms = e->threshold_ms;
        q->plan_hash = plans[k].hash;
        q->plan_shape = plans[k].shape ? plans[k].shape : "";
        q->plan_json = plans[k].json ? plans[k].json : "";
        ptrs[k] = q;
        k++;
    }
    pthread_mutex_unlock(&self->mu);
    Quaver__V1__SlowQueriesReply out = QUAVER__V1__SLOW_QUERIES_REPLY__INIT;
    out.n_queries = k;
    out.queries = ptrs;
    int rc = qv_reply_set(reply, &out.base);
    for (size_t i = 0; i < k; i++)
        dbopt_plan_clear(&plans[i]);
    free(plans);
    free(ptrs);
    free(items);
    if (rc < 0)
        return qv_reply_error(reply, 500, "out of memory");
    return 200;
}

/* ---- Stats entries ------------------------------------------------------------------------ */

enum { S_POOL_STATS = 25, S_STMT_STATS = 8 };

size_t dbopt_observe_nstats(void)
{
    return S_POOL_STATS + S_STMT_STATS * dbopt_catalog_count();
}

size_t dbopt_observe_stats(struct dbopt_pool_t *pool, Quaver__V1__Stat *stats,
                           char (*names)[96], size_t max)
{
    size_t nst = dbopt_catalog_count();
    dbopt_stmt_stats_t *calls = calloc(nst + 1, sizeof *calls);
    s_row_t *per = calloc(nst + 1, sizeof *per);
    if (!calls || !per) {
        free(calls);
        free(per);
        return 0;
    }
    dbopt_pool_stats_t ps;
    dbopt_pool_stats(pool, &ps, calls);
    s_rows(dbopt_pool_obs(pool), per);
    const struct { const char *name; double v; } pool_rows[S_POOL_STATS] = {
        { "max", ps.max }, { "open", ps.open }, { "active", ps.active }, { "idle", ps.idle },
        { "waiting", ps.waiting }, { "up", ps.up },
        { "connections_opened", (double) ps.opened },
        { "connect_failures", (double) ps.connect_failures },
        /* PgBouncer's SHOW POOLS / SHOW STATS names */
        { "cl_active", ps.cl_active }, { "cl_waiting", ps.cl_waiting },
        { "sv_active", ps.sv_active }, { "sv_idle", ps.sv_idle },
        { "maxwait", (double) (ps.maxwait_us / 1000000) },
        { "maxwait_us", (double) (ps.maxwait_us % 1000000) },
        { "total_xact_count", (double) ps.total_xact_count },
        { "total_query_count", (double) ps.total_query_count },
        { "total_query_time", (double) ps.total_query_time_us },
        { "total_wait_time", (double) ps.total_wait_time_us },
        { "avg_xact_count", ps.avg_xact_count }, { "avg_query_count", ps.avg_query_count },
        { "avg_query_time", ps.avg_query_time_us }, { "avg_xact_time", ps.avg_query_time_us },
        { "avg_wait_time", ps.avg_wait_time_us },
        { "recycled", (double) ps.recycled }, { "stats_period_s", ps.stats_period_s },
    };
    size_t k = 0;
    for (int i = 0; i < S_POOL_STATS && k < max; i++, k++) {
        quaver__v1__stat__init(&stats[k]);
        snprintf(names[k], sizeof names[k], "db_pool.%s", pool_rows[i].name);
        stats[k].name = names[k];
        stats[k].value = pool_rows[i].v;
    }
    static const char *const suffix[S_STMT_STATS] = { "calls", "errors", "avg_ms", "rows",
                                                      "p50_ms", "p95_ms", "p99_ms",
                                                      "plan_hash" };
    for (size_t i = 0; i < nst; i++) {
        double v[S_STMT_STATS] = { (double) calls[i].calls, (double) calls[i].errors,
                                   calls[i].avg_ms, (double) per[i].rows, per[i].p50_ms,
                                   per[i].p95_ms, per[i].p99_ms, (double) per[i].plan_hash };
        for (int j = 0; j < S_STMT_STATS && k < max; j++, k++) {
            quaver__v1__stat__init(&stats[k]);
            snprintf(names[k], sizeof names[k], "stmt.%s.%s", dbopt_catalog[i].name, suffix[j]);
            stats[k].name = names[k];
            stats[k].value = v[j];
        }
    }
    free(calls);
    free(per);
    return k;
}
