/* dbopt_workload: the advisor's inputs. Reads the workload from pg_stat_statements (and the
 * rows each table had written in the same window), places every $n of a statement on its
 * column through a generic plan, samples values for them from the data (or takes captured
 * ones), plans each statement with its values, and loads what the advisor needs to know
 * about a table (size, columns with their statistics, existing indexes). Part of the
 * advisor (dbopt_advise.h); state in dbopt_advise_int.h. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <libpq-fe.h>
#include "dbopt_advise_int.h"
#include "dbopt_candidates.h"

/* ------------------------------------------------------------ tables */
void adv_free_tables(adv_t *a)
{
    for (int i = 0; i < a->ntables; i++) {
        free(a->tables[i].cols);
        free(a->tables[i].idx);
    }
    free(a->tables);
}

/* The table named relname as the planner saw it, loaded once: size, writes, columns with
 * their statistics, existing indexes. NULL for system catalogs and unknown names. The
 * name is a query parameter; the one visible on the search path wins. */
adv_table_t *adv_table(adv_t *a, const char *relname)
{
    for (int i = 0; i < a->ntables; i++)
        if (strcmp(a->tables[i].relname, relname) == 0)
            return a->tables[i].system ? NULL : &a->tables[i];
    char msg[256];
    const char *v[1] = { relname };
    PGresult *r = adv_exec(a->conn,
        "SELECT c.oid, c.oid::regclass::text, n.nspname IN ('pg_catalog', 'information_schema',"
        "       'pg_toast') OR c.relkind <> 'r',"
        "       greatest(c.reltuples, 0), n.nspname"
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = $1 ORDER BY pg_table_is_visible(c.oid) DESC LIMIT 1",
        1, v, msg, sizeof msg);
    if (!r || PQntuples(r) != 1) {
        PQclear(r);
        return NULL;
    }
    adv_table_t *grown = realloc(a->tables, sizeof *grown * (size_t) (a->ntables + 1));
    if (!grown) {
        PQclear(r);
        return NULL;
    }
    a->tables = grown;
    adv_table_t *t = &a->tables[a->ntables++];
    memset(t, 0, sizeof *t);
    snprintf(t->relname, sizeof t->relname, "%s", relname);
    snprintf(t->oid, sizeof t->oid, "%s", PQgetvalue(r, 0, 0));
    snprintf(t->regclass, sizeof t->regclass, "%s", PQgetvalue(r, 0, 1));
    snprintf(t->schema, sizeof t->schema, "%s", PQgetvalue(r, 0, 4));
    t->system = PQgetvalue(r, 0, 2)[0] == 't';
    t->reltuples = atof(PQgetvalue(r, 0, 3));
    for (int i = 0; i < a->nw; i++)
        if (strcmp(a->wnames[i], relname) == 0)
            t->writes = a->wrows[i];
    PQclear(r);
    if (t->system)
        return NULL;
    const char *ov[1] = { t->oid };
    /* n_distinct < 0 is a fraction of the rows; the boolean share comes from the MCVs */
    r = adv_exec(a->conn,
        "SELECT a.attname, quote_ident(a.attname),"
        "       coalesce(CASE WHEN s.n_distinct < 0 THEN -s.n_distinct * greatest(c.reltuples, 1)"
        "                     ELSE s.n_distinct END, 0),"
        "       coalesce(s.null_frac, 0),"
        "       coalesce((SELECT f FROM unnest(s.most_common_vals::text::text[],"
        "                  s.most_common_freqs) u(v, f) WHERE v = 't'), 0)"
        "  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
        "  LEFT JOIN pg_stats s ON s.schemaname = $2 AND s.tablename = c.relname"
        "        AND s.attname = a.attname"
        " WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped",
        2, (const char *[]) { t->oid, t->schema }, msg, sizeof msg);
    if (r) {
        t->ncols = PQntuples(r);
        t->cols = calloc((size_t) t->ncols + 1, sizeof *t->cols);
        for (int i = 0; t->cols && i < t->ncols; i++) {
            adv_col_t *c = &t->cols[i];
            snprintf(c->name, sizeof c->name, "%s", PQgetvalue(r, i, 0));
            snprintf(c->quoted, sizeof c->quoted, "%s", PQgetvalue(r, i, 1));
            c->ndistinct = atof(PQgetvalue(r, i, 2));
            c->null_frac = atof(PQgetvalue(r, i, 3));
            c->true_frac = atof(PQgetvalue(r, i, 4));
        }
        if (!t->cols)
            t->ncols = 0;
        PQclear(r);
    }
    r = adv_exec(a->conn,
        "SELECT am.amname, i.indpred IS NOT NULL OR i.indexprs IS NOT NULL,"
        "       i.indisvalid,"
        "       array_to_string(ARRAY(SELECT coalesce(at.attname, '?')"
        "         FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(att, ord)"
        "         LEFT JOIN pg_attribute at ON at.attrelid = i.indrelid AND at.attnum = k.att"
        "        WHERE k.ord <= i.indnkeyatts ORDER BY k.ord), ',')"
        "  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        "  JOIN pg_am am ON am.oid = ic.relam WHERE i.indrelid = $1::oid",
        1, ov, msg, sizeof msg);
    if (r) {
        t->nidx = PQntuples(r);
        t->idx = calloc((size_t) t->nidx + 1, sizeof *t->idx);
        for (int i = 0; t->idx && i < t->nidx; i++) {
            adv_index_t *x = &t->idx[i];
            x->btree = strcmp(PQgetvalue(r, i, 0), "btree") == 0;
            x->partial_or_expr = PQgetvalue(r, i, 1)[0] == 't';
            x->valid = PQgetvalue(r, i, 2)[0] == 't';
            snprintf(x->cols, sizeof x->cols, ",%s,", PQgetvalue(r, i, 3));
        }
        if (!t->idx)
            t->nidx = 0;
        PQclear(r);
    }
    return t;
}

adv_col_t *adv_col(adv_table_t *t, const char *name)
{
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i].name, name) == 0)
            return &t->cols[i];
    return NULL;
}

/* ------------------------------------------------------------ workload */
/* text holds "<keyword> $p" (any case, $p not the start of $p0..$p9) */
static bool s_follows(const char *text, const char *keyword, int p)
{
    char pat[32];
    snprintf(pat, sizeof pat, "%s $%d", keyword, p);
    size_t pl = strlen(pat);
    for (const char *s = text; *s; s++)
        if (strncasecmp(s, pat, pl) == 0 && !isdigit((unsigned char) s[pl]))
            return true;
    return false;
}

bool adv_is_limit_param(const char *text, int p)
{
    return s_follows(text, "LIMIT", p) || s_follows(text, "OFFSET", p);
}

bool adv_is_offset_param(const char *text, int p)
{
    return s_follows(text, "OFFSET", p);
}

/* value of relation.column at a share of its histogram (0..1), or NULL */
static char *s_histogram(adv_t *a, adv_table_t *t, const char *col, double share)
{
    char f[32];
    snprintf(f, sizeof f, "%.3f", share);
    const char *v[4] = { t->schema, t->relname, col, f };
    PGresult *r = adv_exec(a->conn,
        "SELECT h[greatest(1, least(array_length(h, 1),"
        "          round(array_length(h, 1) * $4::float8)::int))]"
        "  FROM (SELECT histogram_bounds::text::text[] h FROM pg_stats"
        "         WHERE schemaname = $1 AND tablename = $2 AND attname = $3) s"
        " WHERE h IS NOT NULL", 4, v, NULL, 0);
    char *out = NULL;
    if (r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
        out = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return out;
}

#define S_SAMPLE_COLS 8

/* One existing row's values of cols (n <= S_SAMPLE_COLS quoted names) of t, none NULL; the
 * caller PQclears the result. NULL when there is none. */
static PGresult *s_sample_row(adv_t *a, adv_table_t *t, const char *const *cols, int n)
{
    char sql[4096], list[S_SAMPLE_COLS * (ADV_QUOTED_MAX + 8)] = "",
         notnull[S_SAMPLE_COLS * (ADV_QUOTED_MAX + 16)] = "";
    if (n > S_SAMPLE_COLS)
        return NULL;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(list), m = strlen(notnull);
        snprintf(list + l, sizeof list - l, "%s%s::text", i ? ", " : "", cols[i]);
        snprintf(notnull + m, sizeof notnull - m, " AND %s IS NOT NULL", cols[i]);
    }
    /* SYSTEM sampling reads a few pages, not the table; when those pages hold no row that
     * fits, a plain scan. REPEATABLE: runs on unchanged data pick the same row, so they
     * cost (and an --apply run times) the same values. */
    double pct = t->reltuples > 0 ? 2000.0 * 100.0 / t->reltuples : 100.0;
    if (pct > 100)
        pct = 100;
    if (pct < 0.01)
        pct = 0.01;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (attempt == 0)
            snprintf(sql, sizeof sql, "SELECT %s FROM ONLY %s TABLESAMPLE SYSTEM (%.4f) "
                     "REPEATABLE (42) WHERE true%s LIMIT 1", list, t->regclass, pct, notnull);
        else
            snprintf(sql, sizeof sql, "SELECT %s FROM ONLY %s WHERE true%s LIMIT 1", list,
                     t->regclass, notnull);
        PGresult *r = adv_exec(a->conn, sql, 0, NULL, NULL, 0);
        if (r && PQntuples(r) == 1)
            return r;
        PQclear(r);
    }
    return NULL;
}

/* v as the text of a one-element array, `{"v"}` with `"` and `\` escaped, so that commas,
 * braces and spaces in v stay one element. Caller frees; NULL on out of memory. */
static char *s_array_of_one(const char *v)
{
    char *out = malloc(2 * strlen(v) + 5), *o = out;
    if (!out)
        return NULL;
    *o++ = '{';
    *o++ = '"';
    for (; *v; v++) {
        if (*v == '"' || *v == '\\')
            *o++ = '\\';
        *o++ = *v;
    }
    *o++ = '"';
    *o++ = '}';
    *o = '\0';
    return out;
}

/* fills q->values from the generic plan's parameter uses */
static void s_sample(adv_t *a, adv_query_t *q, const dbopt_cand_plan_t *g)
{
    q->measurable = true;
    if (a->opts->captured_params) {
        int n = 0;
        char **v = a->opts->captured_params(a->opts->arg, q->text, &n);
        if (v && n == q->nparams) {
            for (int i = 0; i < n; i++)
                q->values[i] = v[i] ? strdup(v[i]) : NULL;
            free(v);
            return;
        }
        free(v);
    }
    for (int p = 1; p <= q->nparams; p++) {
        const dbopt_param_use_t *u = &g->params[p];
        char *val = NULL;
        if (u->known) {
            adv_table_t *t = adv_table(a, u->relation);
            adv_col_t *c = t ? adv_col(t, u->column) : NULL;
            if (c && dbopt_op_is_range(u->op)) {
                bool lower = u->op == DBOPT_OP_GT || u->op == DBOPT_OP_GE;
                bool both = false;   /* a lower and an upper bound on the same column */
                for (int o = 1; o <= q->nparams; o++)
                    if (o != p && g->params[o].known && strcmp(g->params[o].column, u->column) == 0
                        && strcmp(g->params[o].relation, u->relation) == 0
                        && dbopt_op_is_range(g->params[o].op))
                        both = true;
                /* about 2% of the rows: a slice in the middle, or the top/bottom tail */
                double share = both ? (lower ? 0.49 : 0.51) : (lower ? 0.98 : 0.02);
                val = s_histogram(a, t, c->name, share);
            }
            if (c && !val) {
                const char *cols[1] = { c->quoted };
                PGresult *r = s_sample_row(a, t, cols, 1);
                if (r) {
                    const char *v = PQgetvalue(r, 0, 0);
                    val = u->op == DBOPT_OP_ANY ? s_array_of_one(v) : strdup(v);
                    PQclear(r);
                }
            }
        } else if (adv_is_limit_param(q->text, p))
            val = strdup(adv_is_offset_param(q->text, p) ? "0" : "10");
        if (!val)
            q->measurable = false;   /* costed with NULL, not timed */
        q->values[p - 1] = val;
    }
    /* equality parameters on one table should come from one row, or their AND finds
     * nothing: resample them together */
    for (int p = 1; p <= q->nparams; p++) {
        const dbopt_param_use_t *u = &g->params[p];
        if (!u->known || u->op != DBOPT_OP_EQ)
            continue;
        adv_table_t *t = adv_table(a, u->relation);
        if (!t)
            continue;
        const char *cols[S_SAMPLE_COLS];
        int idx[S_SAMPLE_COLS], n = 0;
        for (int o = 1; o <= q->nparams && n < S_SAMPLE_COLS; o++) {
            const dbopt_param_use_t *w = &g->params[o];
            adv_col_t *c = w->known && w->op == DBOPT_OP_EQ
                           && strcmp(w->relation, u->relation) == 0 ? adv_col(t, w->column) : NULL;
            if (c) {
                cols[n] = c->quoted;
                idx[n++] = o;
            }
        }
        if (n < 2 || idx[0] != p)
            continue;
        PGresult *r = s_sample_row(a, t, cols, n);
        for (int k = 0; r && k < n; k++) {
            free(q->values[idx[k] - 1]);
            q->values[idx[k] - 1] = strdup(PQgetvalue(r, 0, k));
        }
        PQclear(r);
    }
}

/* EXPLAIN of q with its values as an unnamed statement: a fresh custom plan every time, so
 * hypothetical indexes created since are seen. */
double adv_cost(adv_t *a, adv_query_t *q, dbopt_cand_plan_t *plan_out)
{
    size_t len = strlen(q->text) + 32;
    char *sql = malloc(len);
    if (!sql)
        return -1;
    snprintf(sql, len, "EXPLAIN (FORMAT JSON) %s", q->text);
    PGresult *r = PQexecParams(a->conn, sql, q->nparams, q->types,
                               (const char *const *) q->values, NULL, NULL, 0);
    free(sql);
    double cost = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        const char *txt = PQgetvalue(r, 0, 0);
        if (plan_out) {
            char err[128];
            if (dbopt_cand_plan_parse(txt, plan_out, err, sizeof err) == 0)
                cost = plan_out->total_cost;
        } else
            cost = dbopt_cand_plan_cost(txt);
    }
    PQclear(r);
    return cost;
}

void adv_query_free(adv_query_t *q)
{
    free(q->text);
    for (int i = 0; i < q->nparams; i++)
        free(q->values[i]);
    free(q->plan);
}

/* PREPARE + generic EXPLAIN (parameter places and types), sample values, custom EXPLAIN.
 * 0 when the statement is usable. */
static int s_prepare_query(adv_t *a, adv_query_t *q)
{
    char msg[512];
    size_t len = strlen(q->text) + 64;
    char *sql = malloc(len);
    if (!sql)
        return -1;
    snprintf(sql, len, "PREPARE dbopt_advise_q AS %s", q->text);
    PGresult *r = adv_exec(a->conn, sql, 0, NULL, msg, sizeof msg);
    free(sql);
    if (!r) {
        adv_log(a, "skip (cannot prepare: %s): %.80s", msg, q->text);
        return -1;
    }
    PQclear(r);
    r = adv_exec(a->conn, "SELECT coalesce(array_to_string(parameter_types::oid[], ','), '') "
                 "FROM pg_prepared_statements WHERE name = 'dbopt_advise_q'", 0, NULL, NULL, 0);
    int n = 0;
    if (r && PQntuples(r) == 1) {
        const char *s = PQgetvalue(r, 0, 0);
        while (*s && n < DBOPT_MAX_PARAMS) {
            q->types[n++] = (Oid) strtoul(s, (char **) &s, 10);
            if (*s == ',')
                s++;
        }
    }
    PQclear(r);
    q->nparams = n;
    char exec[64 + 6 * DBOPT_MAX_PARAMS] = "EXPLAIN (FORMAT JSON) EXECUTE dbopt_advise_q";
    for (int i = 0; i < n; i++) {
        size_t l = strlen(exec);
        snprintf(exec + l, sizeof exec - l, "%sNULL%s", i ? ", " : "(", i == n - 1 ? ")" : "");
    }
    PQclear(PQexec(a->conn, "SET plan_cache_mode = force_generic_plan"));
    r = adv_exec(a->conn, exec, 0, NULL, msg, sizeof msg);
    PQclear(PQexec(a->conn, "RESET plan_cache_mode"));
    PQclear(PQexec(a->conn, "DEALLOCATE dbopt_advise_q"));
    dbopt_cand_plan_t *g = calloc(1, sizeof *g);
    int rc = -1;
    if (r && g && dbopt_cand_plan_parse(PQgetvalue(r, 0, 0), g, msg, sizeof msg) == 0) {
        bool ok = g->nscans > 0;
        for (int i = 0; ok && i < g->nscans; i++)
            if (!adv_table(a, g->scans[i].relation))
                ok = false;   /* a system catalog or something we cannot name */
        if (ok) {
            s_sample(a, q, g);
            q->plan = calloc(1, sizeof *q->plan);
            q->cost = q->plan ? adv_cost(a, q, q->plan) : -1;
            rc = q->cost >= 0 ? 0 : -1;
            if (rc != 0)
                adv_log(a, "skip (cannot explain with sampled values): %.80s", q->text);
        }
    } else if (!r)
        adv_log(a, "skip (cannot explain: %s): %.80s", msg, q->text);
    PQclear(r);
    free(g);
    return rc;
}

/* Rows written per table, from the INSERT/UPDATE/DELETE statements of pg_stat_statements:
 * the same window as the reads' calls. (pg_stat_user_tables counts since its own reset, bulk
 * loads included, so a table loaded once and read ever after would look write-heavy.) A
 * statement writing several tables (a CTE) is charged to each of them. */
static void s_load_writes(adv_t *a)
{
    PGresult *r = adv_exec(a->conn,
        "SELECT lower(m[2]), sum(s.rows)::float8"
        "  FROM pg_stat_statements s, regexp_matches(s.query,"
        "       '(insert\\s+into|update|delete\\s+from)\\s+(?:only\\s+)?"
        "(?:\"?\\w+\"?\\.)?\"?(\\w+)\"?', 'gi') m"
        " WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " GROUP BY 1", 0, NULL, NULL, 0);
    int n = r ? PQntuples(r) : 0;
    a->wnames = calloc((size_t) n + 1, sizeof *a->wnames);
    a->wrows = calloc((size_t) n + 1, sizeof *a->wrows);
    for (int i = 0; a->wnames && a->wrows && i < n; i++) {
        snprintf(a->wnames[i], sizeof a->wnames[i], "%s", PQgetvalue(r, i, 0));
        a->wrows[i] = atof(PQgetvalue(r, i, 1));
        a->nw++;
    }
    PQclear(r);
}

int adv_load_workload(adv_t *a)
{
    s_load_writes(a);
    char msg[512], lim[16];
    snprintf(lim, sizeof lim, "%d", a->opts->max_queries);
    const char *v[1] = { lim };
    /* statements are grouped by text: the same normalised text can carry several query ids
     * (e.g. literals in one client, parameters in another) */
    PGresult *r = adv_exec(a->conn,
        "SELECT s.query, sum(s.calls)::float8, sum(s.total_exec_time)::float8"
        "  FROM pg_stat_statements s"
        " WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        "   AND s.query ~* '^\\s*select\\s'"
        "   AND s.query !~* '(pg_stat_statements|hypopg|pg_catalog|pg_stat|pg_class|pg_index"
        "|pg_attribute|pg_namespace|pg_am\\M|pg_settings|pg_database|pg_extension|pg_locks"
        "|information_schema|dbopt_index_history|pg_advisory|pg_prepared|pg_stats|pg_available)'"
        " GROUP BY s.query ORDER BY 3 DESC LIMIT $1::int", 1, v, msg, sizeof msg);
    if (!r)
        return adv_fail(a, 500, "cannot read pg_stat_statements: %s", msg);
    a->nread = PQntuples(r);
    a->queries = calloc((size_t) a->nread + 1, sizeof *a->queries);
    if (!a->queries) {
        PQclear(r);
        return adv_fail(a, 500, "out of memory");
    }
    for (int i = 0; i < a->nread; i++) {
        adv_query_t *q = &a->queries[a->nqueries];
        memset(q, 0, sizeof *q);
        q->text = strdup(PQgetvalue(r, i, 0));
        q->calls = atof(PQgetvalue(r, i, 1));
        if (q->text && s_prepare_query(a, q) == 0)
            a->nqueries++;
        else
            adv_query_free(q);
    }
    PQclear(r);
    adv_log(a, "workload: %d statements read, %d usable", a->nread, a->nqueries);
    return 0;
}
