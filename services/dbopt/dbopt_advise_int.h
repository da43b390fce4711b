/* dbopt_advise_int: the advisor's working state, shared by dbopt_advise.c (workload,
 * candidates, choice) and dbopt_validate.c (apply and measure). Not for other modules. */
#ifndef DBOPT_ADVISE_INT_H
#define DBOPT_ADVISE_INT_H
#include <stdint.h>
#include <libpq-fe.h>
#include <jansson.h>
#include "dbopt_advise.h"
#include "dbopt_candidates.h"

#define ADV_MAX_SERVED 32

typedef struct {
    char   name[DBOPT_NAME_MAX], quoted[DBOPT_NAME_MAX + 8];
    double ndistinct;      /* absolute (pg_stats n_distinct resolved against reltuples) */
    double null_frac, true_frac;
} adv_col_t;

typedef struct {
    char name[DBOPT_NAME_MAX];
    bool btree, partial_or_expr, valid;
    char cols[256];        /* ",a,b," key columns in order */
} adv_index_t;

typedef struct {
    char        relname[DBOPT_NAME_MAX], oid[16], regclass[160], schema[DBOPT_NAME_MAX];
    bool        system;
    double      reltuples, writes;   /* writes: n_tup_ins + n_tup_upd + n_tup_del */
    adv_col_t  *cols;
    int         ncols;
    adv_index_t *idx;
    int         nidx;
    int         chosen;
} adv_table_t;

typedef struct {
    char         *text;
    double        calls, total_ms;
    int           nparams;
    Oid           types[DBOPT_MAX_PARAMS];
    char         *values[DBOPT_MAX_PARAMS];   /* sampled; NULL = SQL NULL */
    bool          measurable;                 /* every parameter got a value */
    bool          captured;                   /* the values are a real call's */
    double        cost0, cost;                /* plan cost: no new index; chosen set so far */
    dbopt_cand_plan_t *plan;                       /* the custom plan before any new index */
} adv_query_t;

typedef struct {
    int         table;
    dbopt_key_t keys[DBOPT_MAX_KEYS];
    int         nkeys;
    char        where[160];
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

void adv_log(adv_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int adv_fail(adv_t *a, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
PGresult *adv_exec(PGconn *c, const char *sql, int n, const char *const *v, char *msg,
                   size_t len);
PGconn *adv_connect(const char *conninfo, const dbopt_advise_opts_t *o, dbopt_advise_err_t *err);
int adv_open(adv_t *a, const char *conninfo, const dbopt_advise_opts_t *opts,
             dbopt_advise_err_t *err);
void adv_close(adv_t *a);
/* dbopt_workload.c */
int adv_load_workload(adv_t *a);
void adv_query_free(adv_query_t *q);
void adv_free_tables(adv_t *a);
bool adv_is_limit_param(const char *text, int p);    /* $p follows LIMIT or OFFSET */
bool adv_is_offset_param(const char *text, int p);
adv_table_t *adv_table(adv_t *a, const char *relname);
adv_col_t *adv_col(adv_table_t *t, const char *name);
double adv_cost(adv_t *a, adv_query_t *q, dbopt_cand_plan_t *plan_out);
int adv_add_cand(adv_t *a, int table, const dbopt_key_t *keys, int n, const char *where);
void adv_cand_sql(const adv_t *a, const adv_cand_t *c, char *buf, size_t len, const char *name);
void adv_index_name(const adv_t *a, const adv_cand_t *c, char *buf, size_t len);
json_t *adv_cand_json(adv_t *a, const adv_cand_t *c);

/* dbopt_validate.c: creates c CONCURRENTLY, times its statements before and after, keeps or
 * drops it, records the outcome; adds ms_before, ms_after, kept, reason to rec. */
void adv_validate(adv_t *a, const adv_cand_t *c, json_t *rec);
#endif
