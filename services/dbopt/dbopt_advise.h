/* dbopt_advise: the index advisor, one engine for `quaver-dbopt advise`, the daemon's
 * Advise/ApplyIndex/Explain methods and the gateway (through them).
 *
 * What a run does (README.md "Advisor" has the reasons):
 * 1. Workload: the top `max_queries` SELECT statements of pg_stat_statements by total time in
 *    the current database (normalised text with $n), skipping utility statements, the
 *    advisor's own queries and statements on system catalogs.
 * 2. Parameters: each statement is PREPAREd once and EXPLAINed as a generic plan to learn
 *    which column each $n meets; values are then sampled from the data (an existing row for
 *    equality, a pg_stats histogram slice for ranges, 10 for LIMIT), because
 *    pg_stat_statements keeps no parameters.
 * 3. Candidates from the custom plan of every statement (dbopt_candidates.h): Seq Scans on
 *    tables of at least `min_rows` rows, with equality columns (most selective first) before
 *    the first range column, sort or group keys above the scan (DESC kept only when mixed),
 *    and a partial WHERE for an IS [NOT] NULL / boolean test that selects at most
 *    `partial_max_fraction` of the rows. Skipped: a lone equality column selecting more than
 *    `max_selectivity`, and a candidate whose columns lead an existing valid index of the
 *    same kind (btree).
 * 4. A set, chosen greedily with hypopg: every round costs each remaining candidate with the
 *    already chosen hypothetical indexes in place (each statement re-planned, since a
 *    statement prepared before a hypothetical index keeps its old plan), takes the one with
 *    the largest saving sum((cost - new cost) * calls) minus `write_cost` per row written to
 *    the table (INSERT/UPDATE/DELETE rows in pg_stat_statements: the reads' window), if it
 *    cuts some statement's cost by at least `min_cost_ratio` (a narrower candidate leading it
 *    is taken instead when it does within 10 % as well), and stops at `max_per_table` new
 *    indexes per table.
 * 5. Apply (opts.apply): per recommendation, under pg_advisory_lock, times its statements
 *    (one warm-up, then the median of `runs`), CREATE INDEX CONCURRENTLY (progress from
 *    pg_stat_progress_create_index logged, an INVALID leftover dropped), times again, keeps
 *    the index only if the median improved by `keep_factor`, else DROP INDEX CONCURRENTLY.
 *    Each outcome is a row in dbopt_index_history (created in the target database by the
 *    apply run itself; an advise-only run writes nothing) and goes to opts.on_outcome.
 * 6. Reports unused (idx_scan = 0, not unique), duplicate (same kind, key columns a prefix of
 *    another's) and invalid indexes.
 *
 * Errors leave the database as it was: the checks (connection, pg_stat_statements, hypopg)
 * run before anything is created, hypothetical indexes live only in the advisor's session.
 * Thread-safe: every call opens its own connection. */
#ifndef DBOPT_ADVISE_H
#define DBOPT_ADVISE_H
#include <stdbool.h>
#include <jansson.h>

typedef struct {
    int    max_queries;           /* statements read from pg_stat_statements */
    double min_rows;              /* tables with fewer rows get no index */
    double max_selectivity;       /* a lone equality column must select at most this share */
    double partial_max_fraction;  /* a null/boolean test this selective becomes a partial WHERE */
    double write_cost;            /* cost units per written row per new index (the penalty) */
    int    max_per_table;         /* new indexes per table per run */
    double min_cost_ratio;        /* some statement's cost must drop by this factor */
    double keep_factor;           /* apply: measured median must improve by this factor */
    int    runs;                  /* apply: timed runs per statement (after one warm-up) */
    int    statement_timeout_ms;  /* for every statement the advisor runs (0 = none) */
    int    connect_timeout_s;
    bool   apply;
    /* progress lines, and each apply outcome as JSON (db.index); either may be NULL */
    void (*log)(void *arg, const char *line);
    void (*on_outcome)(void *arg, const char *json);
    /* real parameters of a statement, when the caller captured some (the daemon does for its
     * catalog): one malloc'd block as dbopt_obs_sample_params returns it, which the advisor
     * frees; NULL = sample values from the data instead. The callback may be NULL. */
    char **(*captured_params)(void *arg, const char *query, int *nvalues);
    void  *arg;
} dbopt_advise_opts_t;

/* Fills opts with the defaults README.md documents: advice only, no callbacks. */
void dbopt_advise_opts_default(dbopt_advise_opts_t *opts);

typedef struct {
    int  status;       /* 400 bad input, 404 unknown table, 409 already indexed,
                        * 503 database or extension missing, 500 other */
    char text[768];    /* what went wrong and what to do; the URL in it is masked */
} dbopt_advise_err_t;

/* One advisor run on the database at conninfo. Returns the result object (the shape of
 * `quaver-dbopt advise --json`: recommendations, unused_indexes, duplicate_indexes,
 * invalid_indexes, queries_read, elapsed_ms); caller owns it (json_decref). NULL with err. */
json_t *dbopt_advise_run(const char *conninfo, const dbopt_advise_opts_t *opts,
                         dbopt_advise_err_t *err);

/* ApplyIndex: one index given by table, columns (each "name" or "name DESC", n 1..3) and an
 * optional partial predicate (only `col IS [NOT] NULL`, `col`, `NOT col`: anything else is
 * 400), costed against the workload and then created and validated as in apply mode
 * (whatever opts.apply says). Returns the recommendation entry with ms_before, ms_after,
 * kept and reason; caller owns it. NULL with err. */
json_t *dbopt_advise_apply_one(const char *conninfo, const dbopt_advise_opts_t *opts,
                               const char *table, const char *const *columns, int ncolumns,
                               const char *where, dbopt_advise_err_t *err);

/* Explain: EXPLAIN (FORMAT JSON) of sql with text parameters (NULL = SQL NULL). Returns
 * {"plan": <plan json>, "shape": "...", "total_cost": n}; caller owns it. NULL with err
 * (a statement PostgreSQL rejects is 400). */
json_t *dbopt_advise_explain(const char *conninfo, const char *sql, const char *const *values,
                             int nvalues, int statement_timeout_ms, dbopt_advise_err_t *err);

/* `quaver-dbopt advise ...` (dbopt_advise_cli.c): argv[0] is "advise". Returns the exit
 * code: 0 ok, 2 bad usage, 1 failure. */
int dbopt_advise_main(int argc, char **argv);

/* Pure helpers' selftests (no database). */
int dbopt_advise_selftest(void);
#endif
