/* dbopt_pool: db_pool_max libpq connections shared by the worker threads.
 *
 * Guarantees:
 * - A connection is opened lazily, on the first request that finds no idle one, with
 *   connect_timeout; when it opens, migrations are applied (once per process, under the
 *   advisory lock), `SET statement_timeout` and `SET TimeZone = 'UTC'` are run, and every
 *   catalog statement is PREPAREd on it. A connection that cannot do all of this is closed.
 * - Acquiring waits at most db_pool_timeout (and never past the request's deadline), then
 *   fails with 503 (504 when the deadline was the shorter limit).
 * - PostgreSQL down: after a failed connect, requests that would need a new connection are
 *   answered 503 at once until a back-off (200 ms doubling to 5 s) expires; dbopt_pool_tick
 *   keeps retrying while no connection is open, so the daemon recovers without traffic.
 * - A connection found dead (CONNECTION_BAD, SQLSTATE class 08 or 57P0x, e.g. after
 *   pg_terminate_backend or a server restart) is closed together with the idle ones, which
 *   died with it in the common case; the failed call is retried once on a fresh connection
 *   when it is read-only, otherwise answered 503 (a write may or may not have committed; the
 *   caller decides).
 * - Recycling: a connection older than db_conn_max_lifetime_s is closed when it is released
 *   or found idle (never during a statement), and one idle for db_conn_idle_timeout_s is
 *   closed by the timer, except the last open one (the timer keeps one open anyway).
 * - Statistics in the shape of PgBouncer's SHOW POOLS / SHOW STATS (dbopt_pool_stats_t).
 *   Every catalog statement is one transaction (autocommit), so xact and query counts are
 *   equal. The avg_* values are over the last complete db_stats_period_s period, like
 *   PgBouncer's stats_period.
 * - Metrics: quaver_db_pool_connections{state=active|idle}, quaver_db_pool_waiting,
 *   quaver_db_query_duration_seconds{name}, quaver_db_query_errors_total{name},
 *   quaver_db_connections_opened_total, and the PgBouncer names as
 *   quaver_db_pool_{cl_active,cl_waiting,sv_active,sv_idle,maxwait_seconds,
 *   avg_xact_per_second,avg_query_per_second,avg_query_time_seconds,avg_wait_time_seconds},
 *   quaver_db_pool_{xact,query,recycled}_total.
 * - Every call is reported to the pool's dbopt_observe (dbopt_pool_obs).
 * Thread-safe. */
#ifndef DBOPT_POOL_H
#define DBOPT_POOL_H
#include <stdint.h>
#include <stdbool.h>
#include <libpq-fe.h>
#include "qv_metrics.h"
#include "dbopt_catalog.h"
#include "dbopt_observe.h"

typedef struct dbopt_pool_t dbopt_pool_t;

typedef struct {
    const char   *conninfo;             /* URI or key=value; copied */
    int           max;                  /* connections, >= 1 */
    double        acquire_timeout_s;    /* db_pool_timeout */
    int           connect_timeout_s;    /* db_connect_timeout (libpq connect_timeout) */
    int           statement_timeout_ms; /* 0 = none */
    const char   *migrations_dir;       /* copied; NULL = apply none */
    qv_metrics_t *metrics;              /* borrowed, may be NULL */
    int           max_lifetime_s;       /* db_conn_max_lifetime_s; 0 = unlimited */
    int           idle_timeout_s;       /* db_conn_idle_timeout_s; 0 = never */
    int           stats_period_s;       /* db_stats_period_s (>= 1) for the avg_* values */
    dbopt_obs_opts_t observe;           /* the observer's: slow queries, plans, bus */
} dbopt_pool_opts_t;

typedef struct {
    int  status;          /* 0 on success, else the HTTP-like status to answer */
    char text[512];
} dbopt_error_t;

typedef struct {
    int      max, open, active, idle, waiting;
    uint64_t opened, connect_failures;   /* connections opened; attempts that failed */
    bool     up;                  /* the last connect or statement reached PostgreSQL */
    char     server_version[32];  /* "" until a connection opened */
    char     last_error[256];
    /* PgBouncer's SHOW POOLS */
    int      cl_active, cl_waiting, sv_active, sv_idle;
    int64_t  maxwait_us;                 /* the longest current wait; 0 when none waits */
    /* PgBouncer's SHOW STATS: totals since start, averages over the last period */
    uint64_t total_xact_count, total_query_count, total_query_time_us, total_wait_time_us;
    double   avg_xact_count, avg_query_count;     /* per second */
    double   avg_query_time_us, avg_wait_time_us; /* per query / per acquire */
    uint64_t recycled;                   /* closed for max lifetime or idle timeout */
    int      stats_period_s;
} dbopt_pool_stats_t;

typedef struct {
    uint64_t calls, errors;
    double   avg_ms;
} dbopt_stmt_stats_t;

/* Caller owns the result and frees it with dbopt_pool_destroy. Opens nothing. */
dbopt_pool_t *dbopt_pool_new(const dbopt_pool_opts_t *opts);
void dbopt_pool_destroy(dbopt_pool_t **self_p);

/* Opens the first connection now (applying migrations). 0 when it opened; -1 (with the
 * reason logged) when it did not, which is not fatal: the pool keeps trying. */
int dbopt_pool_start(dbopt_pool_t *self);

/* Periodic work (every second from the server's timer): reconnect while down, refresh
 * gauges. */
void dbopt_pool_tick(dbopt_pool_t *self);

/* Runs catalog statement st with nvalues text parameters (values[i] NULL = SQL NULL).
 * deadline_ms: wall-clock epoch ms, 0 = none. req_id may be NULL (for logs).
 * Returns the result (caller owns, PQclear) or NULL with err->status/text set. The
 * parameter count is checked here (400). */
PGresult *dbopt_pool_run(dbopt_pool_t *self, const dbopt_stmt_t *st,
                         const char *const *values, int nvalues, int64_t deadline_ms,
                         const char *req_id, dbopt_error_t *err)
    __attribute__((warn_unused_result));

/* Round trip to PostgreSQL through the pool; detail gets a human line. BUSY: every
 * connection stayed in use (PostgreSQL was up when last seen), so the pool is saturated,
 * not down. */
typedef enum { DBOPT_DOWN = 0, DBOPT_BUSY, DBOPT_UP } dbopt_ping_t;
dbopt_ping_t dbopt_pool_ping(dbopt_pool_t *self, int64_t deadline_ms, char *detail, size_t len);

/* The pool's observer (borrowed; lives as long as the pool). */
dbopt_obs_t *dbopt_pool_obs(dbopt_pool_t *self);

/* EXPLAIN (FORMAT JSON) EXECUTE of st with values on a pool connection, waiting at most
 * limit_ms for one. JSON text (caller frees) or NULL with err. Not counted as a query. */
char *dbopt_pool_explain(dbopt_pool_t *self, const dbopt_stmt_t *st, const char *const *values,
                         int nvalues, int64_t limit_ms, dbopt_error_t *err);

/* per_stmt: NULL, or dbopt_catalog_count() entries. */
void dbopt_pool_stats(dbopt_pool_t *self, dbopt_pool_stats_t *out, dbopt_stmt_stats_t *per_stmt);
#endif
