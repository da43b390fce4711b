/* dbopt_advise_int: the advisor's working state, shared by dbopt_advise.c (checks,
 * candidates, choice, reports), dbopt_workload.c (inputs) and dbopt_validate.c (apply and
 * measure). Not for other modules.
 *
 * Ownership: an adv_t owns everything it points to (queries, tables, candidates, the
 * connection); adv_close frees it all and must follow adv_open whether that failed or not.
 * Pointers into a->tables (adv_table, adv_col's table) stay valid only until the next
 * adv_table call, which may grow the array; column pointers (adv_col) stay valid until
 * adv_close. Not thread-safe: one adv_t per run. */
#ifndef DBOPT_ADVISE_INT_H
#define DBOPT_ADVISE_INT_H
#include <stdint.h>
#include <libpq-fe.h>
#include <jansson.h>
#include "dbopt_advise.h"
#include "dbopt_candidates.h"

#define ADV_MAX_SERVED 32
/* quote_ident of a name of up to DBOPT_NAME_MAX-1 bytes: every byte a doubled quote, plus two */
#define ADV_QUOTED_MAX (2 * DBOPT_NAME_MAX + 2)

typedef struct {
    char   name[DBOPT_NAME_MAX], quoted[ADV_QUOTED_MAX];   /* quoted: quote_ident(name) */
    double ndistinct;      /* absolute (pg_stats n_distinct resolved against reltuples) */
    double null_frac, true_frac;
} adv_col_t;

typedef struct {
    bool btree, partial_or_expr, valid;
    char cols[256];        /* ",a,b," key columns in order */
} adv_index_t;

typedef struct {
    /* regclass: PostgreSQL's (quoted) name, schema-qualified when not on the search path */
    char        relname[DBOPT_NAME_MAX], schema[DBOPT_NAME_MAX], oid[16];
    char        regclass[2 * ADV_QUOTED_MAX];
    bool        system;
    double      reltuples;
    double      writes;      /* rows written by the workload's INSERT/UPDATE/DELETE (a->wrows) */
    adv_col_t  *cols;
    int         ncols;
    adv_index_t *idx;
    int         nidx;
    int         chosen;
} adv_table_t;

typedef struct {
    char         *text;
    double        calls;
    int           nparams;
    Oid           types[DBOPT_MAX_PARAMS];
    char         *values[DBOPT_MAX_PARAMS];   /* sampled or captured; NULL = SQL NULL */
    bool          measurable;                 /* every parameter got a value */
    double        cost;                       /* plan cost with the indexes chosen so far */
    dbopt_cand_plan_t *plan;                  /* the custom plan before any new index */
} adv_query_t;

typedef struct {
    int         table;
    dbopt_key_t keys[DBOPT_MAX_KEYS];
    int         nkeys;
    char        where[160];     /* partial predicate (quoted column), "" for none */
    bool        chosen;
    int         order;
    double      saving, cost_before, cost_after;
    int         served[ADV_MAX_SERVED], nserved;
} adv_cand_t;

typedef struct {
    const dbopt_advise_opts_t *opts;
    dbopt_advise_err_t        *err;
    const char                *conninfo;
    PGconn                    *conn;
    char                       dbname[DBOPT_NAME_MAX];
    int64_t                    started_ms;
    adv_query_t               *queries;
    int                        nqueries, nread;
    adv_table_t               *tables;
    int                        ntables;
    adv_cand_t                *cands;
    int                        ncands, nchosen;
    /* rows written per table by INSERT/UPDATE/DELETE statements in pg_stat_statements */
    char                     (*wnames)[DBOPT_NAME_MAX];
    double                    *wrows;
    int                        nw;
} adv_t;

/* dbopt_advise.c */
void adv_log(adv_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* sets a->err; returns -1 */
int adv_fail(adv_t *a, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Runs sql (text parameters); the result, which the caller PQclears, when it is TUPLES_OK or
 * COMMAND_OK, else NULL with the server's message (one line) in msg (msg may be NULL). */
PGresult *adv_exec(PGconn *c, const char *sql, int n, const char *const *v, char *msg,
                   size_t len);
/* r's error (or c's when r is NULL) without "ERROR:  " and the trailing newline, into msg */
void adv_error_text(PGconn *c, const PGresult *r, char *msg, size_t len);
/* a connection with the run's timeouts, or NULL with err set (503, the URL masked) */
PGconn *adv_connect(const char *conninfo, const dbopt_advise_opts_t *o, dbopt_advise_err_t *err);
/* connect, check the extensions, load the workload: 0, or -1 with err set */
int adv_open(adv_t *a, const char *conninfo, const dbopt_advise_opts_t *opts,
             dbopt_advise_err_t *err);
void adv_close(adv_t *a);
/* the candidate's index (n keys, each a column of the table); its index in a->cands, also
 * when an equal one is there already; -1 when not a candidate (no such column, a column
 * twice, an existing valid btree index leads with these columns) or out of memory */
int adv_add_cand(adv_t *a, int table, const dbopt_key_t *keys, int n, const char *where);
/* CREATE INDEX [CONCURRENTLY name] ON table (keys) [WHERE ...]; every part comes quoted from
 * PostgreSQL (quote_ident, regclass) and fits in 1024 bytes */
void adv_cand_sql(const adv_t *a, const adv_cand_t *c, char *buf, size_t len, const char *name);
void adv_index_name(const adv_t *a, const adv_cand_t *c, char *buf, size_t len);
/* the recommendation entry; caller owns it */
json_t *adv_cand_json(adv_t *a, const adv_cand_t *c);

/* dbopt_workload.c */
int adv_load_workload(adv_t *a);
void adv_query_free(adv_query_t *q);
void adv_free_tables(adv_t *a);
bool adv_is_limit_param(const char *text, int p);    /* $p follows LIMIT or OFFSET */
bool adv_is_offset_param(const char *text, int p);   /* $p follows OFFSET */
/* the user table relname (loaded on first use); NULL for system catalogs and unknown names */
adv_table_t *adv_table(adv_t *a, const char *relname);
adv_col_t *adv_col(adv_table_t *t, const char *name);
/* the plan cost of q with its values (planned afresh); -1 on error. plan_out optional. */
double adv_cost(adv_t *a, adv_query_t *q, dbopt_cand_plan_t *plan_out);

/* dbopt_validate.c: creates c CONCURRENTLY, times its statements before and after, keeps or
 * drops it, records the outcome; adds ms_before, ms_after, kept, reason to rec. */
void adv_validate(adv_t *a, const adv_cand_t *c, json_t *rec);
#endif
