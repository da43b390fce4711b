/* dbopt_server: the method table and its handlers. A handler turns one QueryRequest into one
 * catalog statement through the pool and the PGresult into a QueryReply; it never builds SQL
 * from the request (the name only selects a catalog row, the values travel as parameters). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dbopt_server.h"
#include "dbopt_pool.h"
#include "dbopt_catalog.h"
#include "dbopt_conninfo.h"
#include "dbopt_health.h"
#include "dbopt_maint.h"
#include "dbopt_observe.h"
#include "dbopt_advisor.h"
#include "quaver/v1/dbopt_advise.pb-c.h"
#include "qv_rpc.h"
#include "qv_log.h"
#include "qv_clock.h"
#include "quaver/v1/dbopt.pb-c.h"

typedef struct {
    dbopt_pool_t      *pool;
    qv_server_t       *server;
    int64_t            started_ms;
    dbopt_health_t    *health;     /* DatabaseHealth (dbopt_health.c) */
    dbopt_maint_t     *maint;      /* Maintenance and its scheduler (dbopt_maint.c) */
    dbopt_advisor_t   *advisor;    /* Advise, ApplyIndex, Explain (dbopt_advisor.c) */
} s_app_t;

/* PGresult -> QueryReply, packed into reply at once (so everything here can be freed right
 * after). Cells point into res, which outlives the packing. */
static int s_reply_rows(qv_reply_t *reply, PGresult *res)
{
    int nrows = PQntuples(res), ncols = PQnfields(res);
    Quaver__V1__QueryReply out = QUAVER__V1__QUERY_REPLY__INIT;
    char **cols = calloc((size_t) ncols + 1, sizeof *cols);
    Quaver__V1__Row *rows = calloc((size_t) nrows + 1, sizeof *rows);
    Quaver__V1__Row **rowp = calloc((size_t) nrows + 1, sizeof *rowp);
    Quaver__V1__Value *cells = calloc((size_t) nrows * (size_t) ncols + 1, sizeof *cells);
    Quaver__V1__Value **cellp = calloc((size_t) nrows * (size_t) ncols + 1, sizeof *cellp);
    int rc = -1;
    if (cols && rows && rowp && cells && cellp) {
        for (int c = 0; c < ncols; c++)
            cols[c] = PQfname(res, c);
        for (int r = 0; r < nrows; r++) {
            quaver__v1__row__init(&rows[r]);
            rows[r].n_cells = (size_t) ncols;
            rows[r].cells = &cellp[(size_t) r * (size_t) ncols];
            for (int c = 0; c < ncols; c++) {
                size_t i = (size_t) r * (size_t) ncols + (size_t) c;
                quaver__v1__value__init(&cells[i]);
                cells[i].is_null = PQgetisnull(res, r, c);
                cells[i].text = PQgetvalue(res, r, c);   /* "" for NULL */
                cellp[i] = &cells[i];
            }
            rowp[r] = &rows[r];
        }
        out.n_columns = (size_t) ncols;
        out.columns = cols;
        out.n_rows = (size_t) nrows;
        out.rows = rowp;
        const char *affected = PQcmdTuples(res);
        out.rows_affected = affected && *affected ? atoll(affected) : nrows;
        rc = qv_reply_set(reply, &out.base);
    }
    free(cols);
    free(rows);
    free(rowp);
    free(cells);
    free(cellp);
    return rc;
}

static int s_run(s_app_t *app, const qv_call_t *call, const ProtobufCMessage *msg,
                 qv_reply_t *reply, bool want_readonly)
{
    const Quaver__V1__QueryRequest *req = (const Quaver__V1__QueryRequest *) msg;
    const dbopt_stmt_t *st;
    char why[256];
    int bad = dbopt_catalog_check(req, want_readonly, &st, why, sizeof why);
    if (bad)
        return qv_reply_error(reply, bad, "%s", why);
    const char *values[DBOPT_CATALOG_MAX_PARAMS];
    dbopt_catalog_values(req, values);
    dbopt_error_t err;
    PGresult *res = dbopt_pool_run(app->pool, st, values, st->nparams, call->deadline_ms,
                                   call->request_id, &err);
    if (!res)
        return qv_reply_error(reply, err.status, "%s", err.text);
    int rc = s_reply_rows(reply, res);
    PQclear(res);
    if (rc < 0)
        return qv_reply_error(reply, 500, "out of memory building the reply");
    return 200;
}

static int s_query(void *app, const qv_call_t *call, const ProtobufCMessage *req,
                   qv_reply_t *reply)
{
    return s_run(app, call, req, reply, true);
}

static int s_exec(void *app, const qv_call_t *call, const ProtobufCMessage *req,
                  qv_reply_t *reply)
{
    return s_run(app, call, req, reply, false);
}

static int s_health(void *appv, const qv_call_t *call, const ProtobufCMessage *req,
                    qv_reply_t *reply)
{
    s_app_t *app = appv;
    char detail[512];
    dbopt_ping_t ping = dbopt_pool_ping(app->pool, call->deadline_ms, detail, sizeof detail);
    static const char *const state[] = { [DBOPT_DOWN] = "down", [DBOPT_BUSY] = "degraded",
                                         [DBOPT_UP] = "up" };
    static const char *const status[] = { [DBOPT_DOWN] = "down", [DBOPT_BUSY] = "degraded",
                                          [DBOPT_UP] = "ok" };
    Quaver__V1__Dependency dep = QUAVER__V1__DEPENDENCY__INIT;
    dep.name = "postgresql";
    dep.state = (char *) state[ping];
    dep.detail = detail;
    Quaver__V1__Dependency *deps[1] = { &dep };
    Quaver__V1__HealthReply h = QUAVER__V1__HEALTH_REPLY__INIT;
    h.service = "dbopt";
    h.instance = (char *) qv_server_instance(app->server);
    /* without PostgreSQL dbopt can answer nothing but 503: that is down; a saturated pool
     * still serves, slowly: degraded */
    h.status = (char *) status[ping];
    h.n_dependencies = 1;
    h.dependencies = deps;
    h.uptime_ms = qv_mono_ms() - app->started_ms;
    if (qv_reply_set(reply, &h.base) < 0)
        return qv_reply_error(reply, 500, "out of memory");
    return 200;
}

/* Stats: the registry's own view (qv_stats_from_metrics), then the pool's and each catalog
 * statement's entries (dbopt_observe_stats). */
static int s_stats(void *appv, const qv_call_t *call, const ProtobufCMessage *req,
                   qv_reply_t *reply)
{
    s_app_t *app = appv;
    Quaver__V1__StatsReply *base = qv_stats_from_metrics(qv_server_metrics(app->server), "dbopt");
    size_t nbase = base ? base->n_stats : 0;
    size_t nmine = dbopt_observe_nstats();
    Quaver__V1__Stat *mine = calloc(nmine, sizeof *mine);
    char (*names)[96] = calloc(nmine, sizeof *names);
    Quaver__V1__Stat **all = calloc(nbase + nmine + 1, sizeof *all);
    int rc = -1;
    if (mine && names && all) {
        size_t k = dbopt_observe_stats(app->pool, mine, names, nmine);
        for (size_t i = 0; i < nbase; i++)
            all[i] = base->stats[i];
        for (size_t i = 0; i < k; i++)
            all[nbase + i] = &mine[i];
        Quaver__V1__StatsReply out = QUAVER__V1__STATS_REPLY__INIT;
        out.service = "dbopt";
        out.n_stats = nbase + k;
        out.stats = all;
        rc = k > 0 ? qv_reply_set(reply, &out.base) : -1;
    }
    free(all);
    free(names);
    free(mine);
    if (base)
        qv_stats_reply_free(base);
    if (rc < 0)
        return qv_reply_error(reply, 500, "out of memory");
    return 200;
}

static int s_dbhealth(void *appv, const qv_call_t *call, const ProtobufCMessage *req,
                      qv_reply_t *reply)
{
    (void) req;
    return dbopt_health_handle(((s_app_t *) appv)->health, call, reply);
}

static int s_maintenance(void *appv, const qv_call_t *call, const ProtobufCMessage *req,
                         qv_reply_t *reply)
{
    return dbopt_maint_handle(((s_app_t *) appv)->maint, call,
                              (const Quaver__V1__MaintenanceRequest *) req, reply);
}

static int s_slow_queries(void *appv, const qv_call_t *call, const ProtobufCMessage *req,
                          qv_reply_t *reply)
{
    return dbopt_obs_slow_queries(dbopt_pool_obs(((s_app_t *) appv)->pool), call, req, reply);
}

static int s_advise(void *appv, const qv_call_t *call, const ProtobufCMessage *req,
                    qv_reply_t *reply)
{
    return dbopt_advisor_advise(((s_app_t *) appv)->advisor, call, req, reply);
}

static int s_apply_index(void *appv, const qv_call_t *call, const ProtobufCMessage *req,
                         qv_reply_t *reply)
{
    return dbopt_advisor_apply(((s_app_t *) appv)->advisor, call, req, reply);
}

static int s_explain(void *appv, const qv_call_t *call, const ProtobufCMessage *req,
                     qv_reply_t *reply)
{
    return dbopt_advisor_explain(((s_app_t *) appv)->advisor, call, req, reply);
}

static const qv_method_t s_methods[] = {
    { "Query",  &quaver__v1__query_request__descriptor, s_query,  QV_READONLY },
    { "Exec",   &quaver__v1__query_request__descriptor, s_exec,   0 },
    { "Health", &quaver__v1__empty__descriptor,         s_health, QV_READONLY },
    { "Stats",  &quaver__v1__empty__descriptor,         s_stats,  QV_READONLY },
    { "DatabaseHealth", &quaver__v1__empty__descriptor, s_dbhealth, QV_READONLY },
    { "SlowQueries", &quaver__v1__slow_queries_request__descriptor, s_slow_queries, QV_READONLY },
    { "Maintenance", &quaver__v1__maintenance_request__descriptor, s_maintenance, 0 },
    /* Advise checks QV_ADMIN itself: only its apply mode needs it */
    { "Advise",     &quaver__v1__advise_request__descriptor,      s_advise,      0 },
    { "ApplyIndex", &quaver__v1__apply_index_request__descriptor, s_apply_index, QV_ADMIN },
    { "Explain",    &quaver__v1__query_request__descriptor,       s_explain,     QV_READONLY },
    { NULL, NULL, NULL, 0 }
};

static void s_tick(void *appv)
{
    s_app_t *app = appv;
    dbopt_pool_tick(app->pool);
    dbopt_maint_tick(app->maint);
}

int dbopt_server_run(const dbopt_cfg_t *cfg)
{
    s_app_t app = { .started_ms = qv_mono_ms() };
    /* maintenance_window is a string the key table cannot check: a bad one refuses to start
     * with the config loader's message shape and exit code (2) */
    int wstart, wend;
    bool woff;
    char why[160];
    if (dbopt_maint_window_parse(cfg->maintenance_window, &wstart, &wend, &woff, why,
                                 sizeof why) != 0) {
        fprintf(stderr, "dbopt: config key 'maintenance_window': value '%s' is invalid: %s\n",
                cfg->maintenance_window, why);
        return 2;
    }
    app.server = qv_server_new("dbopt", (const qv_common_cfg_t *) cfg, s_methods, &app);
    if (!app.server) {
        qv_error("cannot create the server (broker '%s')", cfg->broker);
        return 1;
    }
    char masked[512];
    dbopt_conninfo_mask(cfg->database_url, masked, sizeof masked);
    dbopt_pool_opts_t opts = {
        .conninfo = cfg->database_url,
        .max = (int) cfg->db_pool_max,
        .acquire_timeout_s = cfg->db_pool_timeout,
        .connect_timeout_s = (int) cfg->db_connect_timeout,
        .statement_timeout_ms = (int) cfg->statement_timeout_ms,
        .max_lifetime_s = (int) cfg->db_conn_max_lifetime_s,
        .idle_timeout_s = (int) cfg->db_conn_idle_timeout_s,
        .stats_period_s = (int) cfg->db_stats_period_s,
        .observe = { .slow_query_ms = cfg->performance_monitoring
                                      ? (int) cfg->slow_query_threshold : 0,
                     .quiet = !cfg->performance_monitoring,
                     .sample_interval_s = cfg->plan_sample_interval_s,
                     .regress_factor = cfg->plan_regression_factor,
                     .regress_min_calls = cfg->plan_regression_min_calls,
                     .regress_min_ms = cfg->plan_regression_min_ms,
                     .bus = qv_server_bus(app.server) },
        .migrations_dir = cfg->migrations_dir,
        .metrics = qv_server_metrics(app.server),
    };
    app.pool = dbopt_pool_new(&opts);
    if (!app.pool) {
        qv_error("cannot create the connection pool");
        qv_server_destroy(&app.server);
        return 1;
    }
    qv_info("database %s, pool %d, migrations %s", masked, opts.max, cfg->migrations_dir);
    /* Not fatal: without PostgreSQL we still register with the broker and answer 503, and
     * the timer below connects (and migrates) as soon as it can. */
    (void) dbopt_pool_start(app.pool);
    dbopt_health_opts_t hopts = {
        .conninfo = cfg->database_url,
        .connect_timeout_s = (int) cfg->db_connect_timeout,
        .statement_timeout_ms = (int) cfg->statement_timeout_ms,
        .long_query_s = cfg->health_long_query_s,
    };
    dbopt_maint_opts_t mopts = {
        .conninfo = cfg->database_url,
        .connect_timeout_s = (int) cfg->db_connect_timeout,
        .interval_s = (int) cfg->maintenance_interval_s,
        .window = cfg->maintenance_window,
        .dead_ratio = cfg->maintenance_dead_ratio,
        .analyze_ratio = cfg->maintenance_analyze_ratio,
        .lock_timeout_ms = (int) cfg->maintenance_lock_timeout_ms,
        .bus = qv_server_bus(app.server),
    };
    char merr[256] = "";
    app.health = dbopt_health_new(&hopts);
    app.maint = dbopt_maint_new(&mopts, merr, sizeof merr);
    dbopt_advisor_opts_t aopts = { .conninfo = cfg->database_url,
                                   .bus = qv_server_bus(app.server), .pool = app.pool };
    dbopt_advise_opts_default(&aopts.advise);
    aopts.advise.max_queries = (int) cfg->advise_max_queries;
    aopts.advise.min_rows = cfg->advise_min_rows;
    aopts.advise.max_per_table = (int) cfg->advise_max_per_table;
    aopts.advise.write_cost = cfg->advise_write_cost;
    aopts.advise.keep_factor = cfg->advise_keep_factor;
    aopts.advise.runs = (int) cfg->advise_runs;
    aopts.advise.connect_timeout_s = (int) cfg->db_connect_timeout;
    app.advisor = dbopt_advisor_new(&aopts);
    int rc = 0;
    if (!app.health || !app.maint || !app.advisor) {
        qv_error("cannot set up %s: %s", !app.health ? "database health" : !app.maint
                 ? "maintenance" : "the advisor", merr[0] ? merr : "out of memory");
        rc = 1;
    } else if (cfg->maintenance_interval_s > 0)
        qv_info("maintenance every %lld s in window %s (dead ratio > %g, modified ratio > %g, "
                "lock_timeout %lld ms)", (long long) cfg->maintenance_interval_s,
                cfg->maintenance_window, cfg->maintenance_dead_ratio,
                cfg->maintenance_analyze_ratio, (long long) cfg->maintenance_lock_timeout_ms);
    if (rc == 0 && qv_server_add_timer(app.server, 1000, s_tick) < 0) {
        qv_error("cannot add the pool timer");
        rc = 1;
    }
    if (rc == 0 && qv_server_run(app.server) < 0)
        rc = 1;
    dbopt_maint_destroy(&app.maint);     /* before the server: it publishes on its bus */
    dbopt_health_destroy(&app.health);
    dbopt_advisor_destroy(&app.advisor);
    qv_server_destroy(&app.server);
    dbopt_pool_destroy(&app.pool);
    return rc;
}
