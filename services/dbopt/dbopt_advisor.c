/* dbopt_advisor: Advise, ApplyIndex and Explain for the daemon (see the header). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dbopt_advisor.h"
#include "dbopt_catalog.h"
#include "dbopt_observe.h"
#include "dbopt_pool.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "quaver/v1/dbopt.pb-c.h"
#include "quaver/v1/dbopt_advise.pb-c.h"

struct dbopt_advisor_t {
    dbopt_advisor_opts_t opts;
    char                *conninfo;
    pthread_mutex_t      mu;          /* running and the last_* fields */
    bool                 running;
    char                *last;        /* the last Advise result (JSON) */
    int64_t              last_at;     /* mono ms */
    int64_t              last_elapsed;
    uint32_t             last_count;
};

dbopt_advisor_t *dbopt_advisor_new(const dbopt_advisor_opts_t *opts)
{
    dbopt_advisor_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->opts = *opts;
    self->conninfo = strdup(opts->conninfo ? opts->conninfo : "");
    if (!self->conninfo) {
        free(self);
        return NULL;
    }
    self->opts.conninfo = self->conninfo;   /* the caller's string may not outlive us */
    pthread_mutex_init(&self->mu, NULL);
    return self;
}

void dbopt_advisor_destroy(dbopt_advisor_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dbopt_advisor_t *self = *self_p;
    pthread_mutex_destroy(&self->mu);
    free(self->conninfo);
    free(self->last);
    free(self);
    *self_p = NULL;
}

static void s_log(void *arg, const char *line)
{
    (void) arg;
    qv_info("advisor: %s", line);
}

static void s_outcome(void *arg, const char *json)
{
    dbopt_advisor_t *self = arg;
    if (self->opts.bus && qv_bus_publish_json(self->opts.bus, "db.index", json) != 0)
        qv_warn("advisor: db.index not published");
}

/* the captured parameters of the catalog statement whose SQL is query */
static char **s_captured(void *arg, const char *query, int *n)
{
    dbopt_advisor_t *self = arg;
    *n = 0;
    if (!self->opts.pool)
        return NULL;
    for (size_t i = 0; dbopt_catalog[i].name; i++)
        if (dbopt_catalog[i].readonly && strcmp(dbopt_catalog[i].sql, query) == 0)
            return dbopt_obs_sample_params(dbopt_pool_obs(self->opts.pool), i, n);
    return NULL;
}

/* engine options for one call: the configured thresholds, our callbacks, and statements
 * bounded by the time left before the deadline. -1 when no time is left. */
static int s_opts(dbopt_advisor_t *self, const qv_call_t *call, dbopt_advise_opts_t *o)
{
    *o = self->opts.advise;
    o->log = s_log;
    o->on_outcome = s_outcome;
    o->captured_params = s_captured;
    o->arg = self;
    if (call->deadline_ms > 0) {
        int64_t left = call->deadline_ms - qv_wall_ms();
        if (left < 100)
            return -1;
        if (o->statement_timeout_ms == 0 || left - 50 < o->statement_timeout_ms)
            o->statement_timeout_ms = (int) (left - 50);
    }
    return 0;
}

static int s_begin(dbopt_advisor_t *self)
{
    pthread_mutex_lock(&self->mu);
    bool busy = self->running;
    self->running = true;
    pthread_mutex_unlock(&self->mu);
    return busy ? -1 : 0;
}

static void s_end(dbopt_advisor_t *self)
{
    pthread_mutex_lock(&self->mu);
    self->running = false;
    pthread_mutex_unlock(&self->mu);
}

static int s_advise_reply(qv_reply_t *reply, const char *json, uint32_t n, int64_t elapsed,
                          bool cached, int64_t age)
{
    Quaver__V1__AdviseReply out = QUAVER__V1__ADVISE_REPLY__INIT;
    out.json = (char *) json;
    out.recommendations = n;
    out.elapsed_ms = elapsed;
    out.cached = cached;
    out.age_ms = age;
    if (qv_reply_set(reply, &out.base) < 0)
        return qv_reply_error(reply, 500, "out of memory");
    return 200;
}

int dbopt_advisor_advise(dbopt_advisor_t *self, const qv_call_t *call,
                         const ProtobufCMessage *msg, qv_reply_t *reply)
{
    const Quaver__V1__AdviseRequest *req = (const Quaver__V1__AdviseRequest *) msg;
    if (req->apply && !call->admin)
        return qv_reply_error(reply, 403, "only administrators may apply indexes");
    if (req->latest && !req->apply) {
        pthread_mutex_lock(&self->mu);
        char *last = self->last ? strdup(self->last) : NULL;
        int64_t age = qv_mono_ms() - self->last_at, elapsed = self->last_elapsed;
        uint32_t n = self->last_count;
        pthread_mutex_unlock(&self->mu);
        if (last) {
            int st = s_advise_reply(reply, last, n, elapsed, true, age);
            free(last);
            return st;
        }
    }
    dbopt_advise_opts_t o;
    if (s_opts(self, call, &o) != 0)
        return qv_reply_error(reply, 504, "the deadline passed before the advisor could start");
    o.apply = req->apply;
    if (s_begin(self) != 0)
        return qv_reply_error(reply, 409, "an advisor run is in progress; try again when it "
                              "ends (GET /api/v1/performance/recommendations shows the last "
                              "result)");
    dbopt_advise_err_t err;
    json_t *out = dbopt_advise_run(self->conninfo, &o, &err);
    s_end(self);
    if (!out)
        return qv_reply_error(reply, err.status ? err.status : 500, "%s", err.text);
    char *json = json_dumps(out, JSON_COMPACT);
    uint32_t n = (uint32_t) json_array_size(json_object_get(out, "recommendations"));
    int64_t elapsed = json_integer_value(json_object_get(out, "elapsed_ms"));
    json_decref(out);
    if (!json)
        return qv_reply_error(reply, 500, "out of memory");
    qv_log(QV_LOG_INFO, call->request_id, "advisor: %u recommendation(s) in %lld ms%s", n,
           (long long) elapsed, req->apply ? " (applied)" : "");
    int st = s_advise_reply(reply, json, n, elapsed, false, 0);   /* the reply copies json */
    pthread_mutex_lock(&self->mu);
    free(self->last);
    self->last = json;
    self->last_at = qv_mono_ms();
    self->last_elapsed = elapsed;
    self->last_count = n;
    pthread_mutex_unlock(&self->mu);
    return st;
}

int dbopt_advisor_apply(dbopt_advisor_t *self, const qv_call_t *call,
                        const ProtobufCMessage *msg, qv_reply_t *reply)
{
    const Quaver__V1__ApplyIndexRequest *req = (const Quaver__V1__ApplyIndexRequest *) msg;
    if (req->n_columns < 1 || req->n_columns > 3)
        return qv_reply_error(reply, 400, "columns: give 1 to 3 column names, got %zu",
                              req->n_columns);
    dbopt_advise_opts_t o;
    if (s_opts(self, call, &o) != 0)
        return qv_reply_error(reply, 504, "the deadline passed before the advisor could start");
    if (s_begin(self) != 0)
        return qv_reply_error(reply, 409, "an advisor run is in progress; try again when it ends");
    dbopt_advise_err_t err;
    json_t *rec = dbopt_advise_apply_one(self->conninfo, &o, req->table,
                                         (const char *const *) req->columns,
                                         (int) req->n_columns, req->where, &err);
    s_end(self);
    if (!rec)
        return qv_reply_error(reply, err.status ? err.status : 500, "%s", err.text);
    char *json = json_dumps(rec, JSON_COMPACT);
    Quaver__V1__ApplyIndexReply out = QUAVER__V1__APPLY_INDEX_REPLY__INIT;
    out.json = json;
    out.kept = json_is_true(json_object_get(rec, "kept"));
    out.ms_before = json_number_value(json_object_get(rec, "ms_before"));
    out.ms_after = json_number_value(json_object_get(rec, "ms_after"));
    out.reason = (char *) json_string_value(json_object_get(rec, "reason"));
    out.sql = (char *) json_string_value(json_object_get(rec, "sql"));
    if (!out.reason)
        out.reason = "";
    if (!out.sql)
        out.sql = "";
    int rc = json ? qv_reply_set(reply, &out.base) : -1;
    free(json);
    json_decref(rec);
    if (rc < 0)
        return qv_reply_error(reply, 500, "out of memory");
    return 200;
}

int dbopt_advisor_explain(dbopt_advisor_t *self, const qv_call_t *call,
                          const ProtobufCMessage *msg, qv_reply_t *reply)
{
    const Quaver__V1__QueryRequest *req = (const Quaver__V1__QueryRequest *) msg;
    const dbopt_stmt_t *st;
    char why[256];
    int bad = dbopt_catalog_check_any(req, &st, why, sizeof why);
    if (bad)
        return qv_reply_error(reply, bad, "%s", why);
    const char *values[DBOPT_CATALOG_MAX_PARAMS];
    dbopt_catalog_values(req, values);
    dbopt_advise_opts_t o;
    if (s_opts(self, call, &o) != 0)
        return qv_reply_error(reply, 504, "the deadline passed");
    dbopt_advise_err_t err;
    /* EXPLAIN without ANALYZE: the statement is planned, never executed, writes included */
    json_t *out = dbopt_advise_explain(self->conninfo, st->sql, values, st->nparams,
                                       o.statement_timeout_ms, &err);
    if (!out)
        return qv_reply_error(reply, err.status ? err.status : 500, "%s", err.text);
    Quaver__V1__ExplainReply r = QUAVER__V1__EXPLAIN_REPLY__INIT;
    r.plan_json = (char *) json_string_value(json_object_get(out, "plan"));
    r.shape = (char *) json_string_value(json_object_get(out, "shape"));
    r.total_cost = json_number_value(json_object_get(out, "total_cost"));
    int rc = qv_reply_set(reply, &r.base);
    json_decref(out);
    if (rc < 0)
        return qv_reply_error(reply, 500, "out of memory");
    return 200;
}
