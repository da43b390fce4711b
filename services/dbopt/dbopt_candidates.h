/* dbopt_candidates: what an EXPLAIN (FORMAT JSON) plan says about useful indexes. Pure
 * functions (no database): parse the condition texts PostgreSQL prints ("Filter",
 * "Index Cond", "Hash Cond", ...) and walk a plan into per-scan facts (equality, range,
 * null tests, join columns, sort and group keys above the scan). Names come out unquoted,
 * as PostgreSQL spells them: whoever writes SQL with them quotes them.
 *
 * Why a hand-written expression parser: the texts are PostgreSQL's deparsed expressions
 * (ruleutils.c), and no Debian 12 package parses them (libpg_query is not packaged). We need
 * only the shape `col op $n|const|col` joined by AND, plus IS [NOT] NULL and bare booleans;
 * anything else (OR, function calls, sub-plans) is skipped, which only costs a candidate.
 *
 * Guarantees: never reads past the given strings, truncates names to DBOPT_NAME_MAX-1,
 * fills at most the given capacity. What is allocated (the parsers' token arrays, jansson's
 * tree) is released before the call returns; the caller owns every output struct. */
#ifndef DBOPT_CANDIDATES_H
#define DBOPT_CANDIDATES_H
#include <stdbool.h>
#include <stddef.h>

#define DBOPT_NAME_MAX   64
#define DBOPT_MAX_CONDS  24
#define DBOPT_MAX_SCANS  16
#define DBOPT_MAX_KEYS   3        /* index columns we ever propose */
#define DBOPT_MAX_PARAMS 32

typedef enum {
    DBOPT_OP_EQ, DBOPT_OP_LT, DBOPT_OP_LE, DBOPT_OP_GT, DBOPT_OP_GE, DBOPT_OP_NE,
    DBOPT_OP_LIKE, DBOPT_OP_ANY, DBOPT_OP_ISNULL, DBOPT_OP_NOTNULL, DBOPT_OP_TRUE,
    DBOPT_OP_FALSE
} dbopt_op_t;

/* One understood conjunct. column is unquoted; alias "" when unqualified. */
typedef struct {
    char       alias[DBOPT_NAME_MAX], column[DBOPT_NAME_MAX];
    dbopt_op_t op;
    int        param;                       /* n of $n on the other side, 0 otherwise */
    bool       is_join;                     /* other side is a column: other_alias.other_column */
    char       other_alias[DBOPT_NAME_MAX], other_column[DBOPT_NAME_MAX];
} dbopt_cond_t;

/* Splits expr at top-level AND and fills out[] with the conjuncts it understands.
 * Returns how many (0..max). */
int dbopt_cond_parse(const char *expr, dbopt_cond_t *out, int max);

/* true for the ops an index can use as a range bound */
bool dbopt_op_is_range(dbopt_op_t op);

typedef struct {
    char column[DBOPT_NAME_MAX];
    bool desc;
} dbopt_key_t;

/* What one scan node of a plan tells. */
typedef struct {
    char         relation[DBOPT_NAME_MAX], alias[DBOPT_NAME_MAX];
    bool         seq;                       /* Seq Scan (parallel or not) */
    dbopt_cond_t conds[DBOPT_MAX_CONDS];    /* filter conjuncts and join columns of this scan */
    int          nconds;
    dbopt_key_t  sort[DBOPT_MAX_KEYS];      /* Sort Key above it (single-scan subtree) */
    int          nsort;
    dbopt_key_t  group[DBOPT_MAX_KEYS];     /* Group Key above it (single-scan subtree) */
    int          ngroup;
} dbopt_scan_t;

/* A parameter's place: relation.column op $n, from any node's condition. */
typedef struct {
    char       relation[DBOPT_NAME_MAX], column[DBOPT_NAME_MAX];
    dbopt_op_t op;
    bool       known;
} dbopt_param_use_t;

typedef struct {
    double            total_cost;
    char              shape[512];           /* node types and index names, "Limit>Sort>Seq Scan" */
    dbopt_scan_t      scans[DBOPT_MAX_SCANS];
    int               nscans;
    dbopt_param_use_t params[DBOPT_MAX_PARAMS + 1];   /* index 1..32 */
} dbopt_cand_plan_t;

/* Parses EXPLAIN (FORMAT JSON) output. 0, or -1 with err filled. */
int dbopt_cand_plan_parse(const char *json_text, dbopt_cand_plan_t *out, char *err, size_t errlen);

/* Just the root's "Total Cost"; -1 when the text is not a plan. */
double dbopt_cand_plan_cost(const char *json_text);

int dbopt_candidates_selftest(void);
#endif
