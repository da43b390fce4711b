/* dbopt_observe: what dbopt knows about every catalog statement it runs, and the alarms it
 * raises from that (services/dbopt/README.md "Observing queries").
 *
 * Per catalog statement: calls, rows, errors, a latency histogram (dbopt_plans.h: p50/p95/p99
 * within +-9%), for a read-only one the parameters of its newest successful call, and the
 * current plan (shape hash, shape, redacted JSON) from a periodic `EXPLAIN (FORMAT JSON)
 * EXECUTE`.
 *
 * Guarantees:
 * - Parameters are user data: they are copied into memory here, used only as the arguments
 *   of EXPLAIN EXECUTE, and never logged, published, answered or written anywhere. Plans that
 *   leave this module are redacted (no expressions, dbopt_plans.h).
 * - Only read-only catalog statements are EXPLAINed, and never with ANALYZE: EXPLAIN ANALYZE
 *   executes the statement, so on a writing one it would repeat the write (a vote counted
 *   twice); a plain EXPLAIN of a write still takes the write's table locks (RowExclusiveLock
 *   through the cached plan), which the sampler has no business holding.
 * - Slow calls (>= slow_query_threshold ms) are logged (name and time only) and published as
 *   `db.slow_query` {name, duration_ms, threshold_ms, time_ms, plan: {hash, shape, json}};
 *   the newest DBOPT_OBS_SLOW are kept for the SlowQueries method.
 * - Every plan_sample_interval_s the plans are sampled and the regression detector
 *   (dbopt_regress_step) runs over the window that ended; a slower new plan publishes
 *   `db.plan_regression` {name, old: {hash, shape, json, p95_ms}, new: {...}, factor, calls}.
 * Thread-safe: one mutex; no PostgreSQL round trip runs under it. */
#ifndef DBOPT_OBSERVE_H
#define DBOPT_OBSERVE_H
#include <stdint.h>
#include <stdbool.h>
#include <libpq-fe.h>
#include "qv_bus.h"
#include "qv_rpc.h"
#include "dbopt_catalog.h"
#include "dbopt_plans.h"
#include "quaver/v1/dbopt_observe.pb-c.h"

enum { DBOPT_OBS_SLOW = 64 };

typedef struct dbopt_obs_t dbopt_obs_t;
struct dbopt_pool_t;

typedef struct {
    int       slow_query_ms;        /* 0 = off */
    double    sample_interval_s;    /* plan_sample_interval_s, >= 1 */
    double    regress_factor;       /* plan_regression_factor */
    int64_t   regress_min_calls;    /* plan_regression_min_calls */
    double    regress_min_ms;       /* plan_regression_min_ms */
    qv_bus_t *bus;                  /* borrowed, may be NULL */
    bool      quiet;                /* performance_monitoring off: counts and latencies only;
                                     * no plan sampling (no EXPLAIN on the database), so no
                                     * plan regressions, and no db.slow_query events */
} dbopt_obs_opts_t;

/* opts is copied; zero fields take the config table's defaults. Caller owns the result and
 * frees it with dbopt_obs_destroy; NULL when out of memory or libsodium fails to start. */
dbopt_obs_t *dbopt_obs_new(const dbopt_obs_opts_t *opts);
void dbopt_obs_destroy(dbopt_obs_t **self_p);

/* One finished call of catalog entry idx: us on the server, rows returned or affected,
 * values (kept as its sample when the call succeeded and idx is read-only: only reads are
 * ever EXPLAINed, here or by the advisor). req_id may be NULL. */
void dbopt_obs_record(dbopt_obs_t *self, size_t idx, int64_t us, int64_t rows, bool failed,
                      const char *const *values, int nvalues, const char *req_id);

/* A copy of the newest sampled parameters of idx (for EXPLAIN or for re-running the query,
 * e.g. to measure an index): one block, caller frees with free(); values[i] NULL = SQL NULL.
 * NULL (and *nvalues_p 0) when idx has no successful call yet. Treat as user data. */
char **dbopt_obs_sample_params(dbopt_obs_t *self, size_t idx, int *nvalues_p);

/* True when a call of idx taking us is slow and idx has no plan yet: the caller (holding the
 * connection) may EXPLAIN it now and hand the text to dbopt_obs_set_plan, so that the
 * db.slow_query event carries a plan. */
bool dbopt_obs_wants_plan(dbopt_obs_t *self, size_t idx, int64_t us);
/* explain_json is borrowed (parsed and redacted here); text that is no plan is ignored. */
void dbopt_obs_set_plan(dbopt_obs_t *self, size_t idx, const char *explain_json);

/* Runs `EXPLAIN (FORMAT JSON) EXECUTE <name>(<values as literals>)` on pg; returns the JSON
 * text (caller frees) or NULL with err. Parameters are escaped by libpq. */
char *dbopt_obs_explain(PGconn *pg, const dbopt_stmt_t *st, const char *const *values,
                        int nvalues, char *err, size_t len);

/* From the pool's timer (every second; always the same thread): when a sampling window
 * ended, EXPLAIN each read-only statement that has a sample through the pool and run the
 * detector. */
void dbopt_obs_tick(dbopt_obs_t *self, struct dbopt_pool_t *pool);

/* The SlowQueries method (request SlowQueriesRequest): the newest slow calls first. */
int dbopt_obs_slow_queries(dbopt_obs_t *self, const qv_call_t *call,
                           const ProtobufCMessage *req, qv_reply_t *reply);

/* dbopt's own Stat entries (after the metrics registry's): how many, and the writer.
 * db_pool.{max,open,active,idle,waiting,up,connections_opened,connect_failures}, the
 * PgBouncer names (SHOW POOLS / SHOW STATS: cl_active, ..., avg_wait_time), recycled and
 * stats_period_s; then per catalog statement stmt.<name>.{calls,errors,avg_ms,rows,p50_ms,
 * p95_ms,p99_ms,plan_hash}. names: one 96-byte buffer per entry, which the stats point into
 * (caller owns both arrays). Returns the count written (<= max; 0 when out of memory). */
size_t dbopt_observe_nstats(void);
size_t dbopt_observe_stats(struct dbopt_pool_t *pool, Quaver__V1__Stat *stats, char (*names)[96],
                           size_t max);
#endif
