/* dbopt_advise: the run (see the header): checks, candidates, hypopg costing, the greedy
 * set, reports, the JSON. Inputs are dbopt_workload.c; applying and measuring is
 * dbopt_validate.c. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <libpq-fe.h>
#include "dbopt_advise.h"
#include "dbopt_advise_int.h"
#include "dbopt_candidates.h"
#include "dbopt_conninfo.h"
#include "qv_clock.h"
#include "qv_hash.h"
#include "qv_log.h"

void dbopt_advise_opts_default(dbopt_advise_opts_t *o)
{
    *o = (dbopt_advise_opts_t) {
        .max_queries = 50, .min_rows = 10000, .max_selectivity = 0.05,
        .partial_max_fraction = 0.1, .write_cost = 20, .max_per_table = 3,
        .min_cost_ratio = 2.0, .keep_factor = 2.0, .runs = 5,
        .statement_timeout_ms = 60000, .connect_timeout_s = 5,
    };
}

void adv_log(adv_t *a, const char *fmt, ...)
{
    if (!a->opts->log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    a->opts->log(a->opts->arg, line);
}

int adv_fail(adv_t *a, int status, const char *fmt, ...)
{
    a->err->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->err->text, sizeof a->err->text, fmt, ap);
    va_end(ap);
    return -1;
}

void adv_error_text(PGconn *c, const PGresult *r, char *msg, size_t len)
{
    const char *m = r ? PQresultErrorMessage(r) : PQerrorMessage(c);
    if (m && strncmp(m, "ERROR:  ", 8) == 0)
        m += 8;
    snprintf(msg, len, "%s", m && *m ? m : "no answer");
    size_t l = strlen(msg);
    while (l && (msg[l - 1] == '\n' || msg[l - 1] == ' '))
        msg[--l] = '\0';
}

PGresult *adv_exec(PGconn *c, const char *sql, int n, const char *const *v, char *msg,
                   size_t len)
{
    PGresult *r = n ? PQexecParams(c, sql, n, NULL, v, NULL, NULL, 0) : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return r;
    if (msg)
        adv_error_text(c, r, msg, len);
    PQclear(r);
    return NULL;
}

/* ------------------------------------------------------------ connection and checks */
static void s_no_notice(void *arg, const char *message)
{
    (void) arg;
    (void) message;
}

PGconn *adv_connect(const char *conninfo, const dbopt_advise_opts_t *o, dbopt_advise_err_t *err)
{
    char masked[512], timeout[16];
    dbopt_conninfo_mask(conninfo, masked, sizeof masked);
    snprintf(timeout, sizeof timeout, "%d", o->connect_timeout_s > 0 ? o->connect_timeout_s : 5);
    const char *keys[] = { "dbname", "connect_timeout", "application_name", NULL };
    const char *vals[] = { conninfo, timeout, "quaver-dbopt advise", NULL };
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char why[300] = "out of memory";
        if (c) {
            snprintf(why, sizeof why, "%s", PQerrorMessage(c));
            /* libpq's message spans lines ("\n\tIs the server running..."): one line */
            char *w = why;
            for (const char *p = why; *p; p++)
                if (*p == '\n' || *p == '\t') {
                    if (w > why && w[-1] != ' ')
                        *w++ = ' ';
                } else
                    *w++ = *p;
            while (w > why && w[-1] == ' ')
                w--;
            *w = '\0';
        }
        err->status = 503;
        snprintf(err->text, sizeof err->text,
                 "database %.300s does not answer: %.300s; check the URL (host, port, database, "
                 "user) and that PostgreSQL is running", masked, why);
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, s_no_notice, NULL);   /* "already exists, skipping" is noise */
    char t[64];
    snprintf(t, sizeof t, "SET statement_timeout = %d", o->statement_timeout_ms);
    PQclear(PQexec(c, t));
    PQclear(PQexec(c, "SET TimeZone = 'UTC'"));
    /* our own EXPLAINs and timing runs must not become workload: superusers may switch
     * tracking off for this session; for others the text filter below does it */
    PQclear(PQexec(c, "SET pg_stat_statements.track = 'none'"));
    return c;
}

/* pg_stat_statements readable and hypopg created, or the error that says how to fix it */
static int s_check(adv_t *a)
{
    char msg[512];
    PGresult *r = adv_exec(a->conn,
        "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'),"
        "       (SELECT count(*) FROM pg_extension WHERE extname = 'hypopg'),"
        "       (SELECT count(*) FROM pg_available_extensions WHERE name = 'hypopg'),"
        "       current_setting('shared_preload_libraries')", 0, NULL, msg, sizeof msg);
    if (!r)
        return adv_fail(a, 500, "cannot read the extensions: %s", msg);
    bool pgss = atoi(PQgetvalue(r, 0, 0)) > 0, hypo = atoi(PQgetvalue(r, 0, 1)) > 0;
    bool hypo_avail = atoi(PQgetvalue(r, 0, 2)) > 0;
    bool preloaded = strstr(PQgetvalue(r, 0, 3), "pg_stat_statements") != NULL;
    PQclear(r);
    if (!pgss || !preloaded)
        return adv_fail(a, 503,
            "pg_stat_statements is missing in database %s (%s): add pg_stat_statements to "
            "shared_preload_libraries in postgresql.conf, restart PostgreSQL, then run "
            "CREATE EXTENSION pg_stat_statements; nothing was changed", a->dbname,
            !preloaded ? "not in shared_preload_libraries" : "extension not created");
    if (!hypo)
        return adv_fail(a, 503,
            "hypopg is missing in database %s: %sthen run CREATE EXTENSION hypopg; nothing was "
            "changed", a->dbname, hypo_avail ? "" : "install it (apt install "
            "postgresql-15-hypopg), ");
    r = adv_exec(a->conn, "SELECT 1 FROM pg_stat_statements LIMIT 1", 0, NULL, msg, sizeof msg);
    if (!r)
        return adv_fail(a, 503, "pg_stat_statements cannot be read: %s (it must be in "
                        "shared_preload_libraries and created with CREATE EXTENSION)", msg);
    PQclear(r);
    return 0;
}


/* ------------------------------------------------------------ candidates */
static bool s_covered(const adv_table_t *t, const adv_cand_t *c)
{
    char want[256] = ",";
    for (int i = 0; i < c->nkeys; i++) {
        size_t l = strlen(want);
        snprintf(want + l, sizeof want - l, "%s,", c->keys[i].column);
    }
    for (int i = 0; i < t->nidx; i++) {
        const adv_index_t *x = &t->idx[i];
        if (x->valid && x->btree && !x->partial_or_expr &&
            strncmp(x->cols, want, strlen(want)) == 0)
            return true;
    }
    return false;
}

void adv_cand_sql(const adv_t *a, const adv_cand_t *c, char *buf, size_t len, const char *name)
{
    adv_table_t *t = &a->tables[c->table];
    /* room for three quoted names with ", " and " DESC" */
    char keys[DBOPT_MAX_KEYS * (ADV_QUOTED_MAX + 8)] = "";
    for (int i = 0; i < c->nkeys; i++) {
        const adv_col_t *col = adv_col(t, c->keys[i].column);   /* adv_add_cand checked it */
        size_t l = strlen(keys);
        snprintf(keys + l, sizeof keys - l, "%s%s%s", i ? ", " : "", col ? col->quoted : "?",
                 c->keys[i].desc ? " DESC" : "");
    }
    snprintf(buf, len, "CREATE INDEX %s%s%sON %s (%s)%s%s", name ? "CONCURRENTLY " : "",
             name ? name : "", name ? " " : "", t->regclass, keys, *c->where ? " WHERE " : "",
             c->where);
}

static bool s_same_cand(const adv_cand_t *x, const adv_cand_t *y)
{
    if (x->table != y->table || x->nkeys != y->nkeys || strcmp(x->where, y->where) != 0)
        return false;
    for (int k = 0; k < x->nkeys; k++)
        if (strcmp(x->keys[k].column, y->keys[k].column) != 0 || x->keys[k].desc != y->keys[k].desc)
            return false;
    return true;
}

int adv_add_cand(adv_t *a, int table, const dbopt_key_t *keys, int n, const char *where)
{
    if (n < 1 || n > DBOPT_MAX_KEYS)
        return -1;
    adv_cand_t c = { .table = table, .nkeys = n };
    memcpy(c.keys, keys, sizeof *keys * (size_t) n);
    /* one direction throughout is what a backward scan gives for free: store it ascending */
    bool all_desc = true;
    for (int i = 0; i < n; i++)
        all_desc = all_desc && keys[i].desc;
    for (int i = 0; all_desc && i < n; i++)
        c.keys[i].desc = false;
    for (int i = 0; i < n; i++) {
        /* sort and group keys come from the plan's text: only the table's own columns */
        if (!adv_col(&a->tables[table], c.keys[i].column))
            return -1;
        for (int j = i + 1; j < n; j++)    /* the same column twice: not an index */
            if (strcmp(c.keys[i].column, c.keys[j].column) == 0)
                return -1;
    }
    snprintf(c.where, sizeof c.where, "%s", where ? where : "");
    if (!*c.where && s_covered(&a->tables[table], &c))
        return -1;
    for (int i = 0; i < a->ncands; i++)
        if (s_same_cand(&c, &a->cands[i]))
            return i;
    adv_cand_t *grown = realloc(a->cands, sizeof *grown * (size_t) (a->ncands + 1));
    if (!grown)
        return -1;
    a->cands = grown;
    a->cands[a->ncands] = c;
    return a->ncands++;
}

static double s_eq_sel(const adv_col_t *c)
{
    return c->ndistinct >= 1 ? 1.0 / c->ndistinct : 1.0;
}

/* the partial-index predicate for a null or boolean test on col; false for other ops */
static bool s_predicate_sql(dbopt_op_t op, const adv_col_t *col, char *buf, size_t len)
{
    switch (op) {
    case DBOPT_OP_ISNULL:  snprintf(buf, len, "%s IS NULL", col->quoted); return true;
    case DBOPT_OP_NOTNULL: snprintf(buf, len, "%s IS NOT NULL", col->quoted); return true;
    case DBOPT_OP_TRUE:    snprintf(buf, len, "%s", col->quoted); return true;
    case DBOPT_OP_FALSE:   snprintf(buf, len, "NOT %s", col->quoted); return true;
    default:               return false;
    }
}

/* what one scan's filter offers an index: its equality columns (most selective first), the
 * first range column, and one selective null/boolean test as a partial predicate */
typedef struct {
    adv_col_t *eq[DBOPT_MAX_CONDS], *range;
    int        neq;
    char       where[160];
    adv_col_t *where_col;
} s_facts_t;

static void s_scan_facts(adv_t *a, adv_table_t *t, const dbopt_scan_t *s, s_facts_t *f)
{
    memset(f, 0, sizeof *f);
    for (int i = 0; i < s->nconds; i++) {
        const dbopt_cond_t *c = &s->conds[i];
        adv_col_t *col = adv_col(t, c->column);
        if (!col)
            continue;
        if (c->op == DBOPT_OP_EQ || c->op == DBOPT_OP_ANY) {
            bool dup = false;
            for (int k = 0; k < f->neq; k++)
                dup = dup || f->eq[k] == col;
            if (!dup)
                f->eq[f->neq++] = col;
        } else if (dbopt_op_is_range(c->op) && !f->range)
            f->range = col;
        else if (!*f->where) {
            double frac = c->op == DBOPT_OP_ISNULL ? col->null_frac
                        : c->op == DBOPT_OP_NOTNULL ? 1 - col->null_frac
                        : c->op == DBOPT_OP_TRUE ? col->true_frac
                        : c->op == DBOPT_OP_FALSE ? 1 - col->true_frac - col->null_frac : 1;
            if (frac <= a->opts->partial_max_fraction
                && s_predicate_sql(c->op, col, f->where, sizeof f->where))
                f->where_col = col;
        }
    }
    /* equality columns most selective first (insertion sort, a handful at most) */
    for (int i = 1; i < f->neq; i++)
        for (int j = i; j > 0 && s_eq_sel(f->eq[j]) < s_eq_sel(f->eq[j - 1]); j--) {
            adv_col_t *x = f->eq[j];
            f->eq[j] = f->eq[j - 1];
            f->eq[j - 1] = x;
        }
}

static void s_key(dbopt_key_t *k, const adv_col_t *col)
{
    snprintf(k->column, sizeof k->column, "%s", col->name);
    k->desc = false;
}

/* all candidates one seq scan suggests, each without and (if there is one) with the
 * partial predicate */
static void s_scan_cands(adv_t *a, const dbopt_scan_t *s)
{
    adv_table_t *t = adv_table(a, s->relation);
    if (!t || !s->seq || t->reltuples < a->opts->min_rows)
        return;
    int ti = (int) (t - a->tables);
    s_facts_t f;
    s_scan_facts(a, t, s, &f);
    dbopt_key_t k[DBOPT_MAX_KEYS];
    const char *wh[2] = { "", f.where };
    for (int w = 0; w < (*f.where ? 2 : 1); w++) {
        double sel = 1;
        for (int n = 1; n <= f.neq && n <= DBOPT_MAX_KEYS; n++) {
            sel *= s_eq_sel(f.eq[n - 1]);
            for (int i = 0; i < n; i++)
                s_key(&k[i], f.eq[i]);
            /* equality alone: only when selective; with a range, sort or partial WHERE the
             * planner's cost decides */
            if (sel <= a->opts->max_selectivity || w == 1)
                (void) adv_add_cand(a, ti, k, n, wh[w]);
            if (f.range && n < DBOPT_MAX_KEYS) {
                s_key(&k[n], f.range);
                (void) adv_add_cand(a, ti, k, n + 1, wh[w]);
            }
            if (s->nsort && n + s->nsort <= DBOPT_MAX_KEYS) {
                /* after equality columns only the sort keys' relative direction matters */
                bool all_desc = true;
                for (int i = 0; i < s->nsort; i++)
                    all_desc = all_desc && s->sort[i].desc;
                memcpy(&k[n], s->sort, sizeof *k * (size_t) s->nsort);
                for (int i = 0; all_desc && i < s->nsort; i++)
                    k[n + i].desc = false;
                (void) adv_add_cand(a, ti, k, n + s->nsort, wh[w]);
            }
            if (s->ngroup && n + s->ngroup <= DBOPT_MAX_KEYS) {
                memcpy(&k[n], s->group, sizeof *k * (size_t) s->ngroup);
                (void) adv_add_cand(a, ti, k, n + s->ngroup, wh[w]);
            }
        }
        if (f.range) {
            s_key(&k[0], f.range);
            (void) adv_add_cand(a, ti, k, 1, wh[w]);
        }
        if (s->nsort)
            (void) adv_add_cand(a, ti, s->sort, s->nsort, wh[w]);
        /* the tested column itself is the key when nothing else is */
        if (w == 1 && f.neq == 0 && !f.range && !s->nsort) {
            s_key(&k[0], f.where_col);
            (void) adv_add_cand(a, ti, k, 1, f.where);
        }
    }
}

/* ------------------------------------------------------------ costing and the set */
static bool s_touches(const adv_query_t *q, const char *relname)
{
    for (int i = 0; i < q->plan->nscans; i++)
        if (strcmp(q->plan->scans[i].relation, relname) == 0)
            return true;
    return false;
}

/* Costs candidate c (with the chosen ones in place) over the statements on its table.
 * new_cost[q] gets each statement's cost, *best_ratio the largest cost / new cost; returns
 * the saving (cost units x calls), -1 when hypopg refused the index. */
static double s_evaluate(adv_t *a, adv_cand_t *c, double *new_cost, double *best_ratio)
{
    char sql[1024], msg[256] = "not one index";
    adv_cand_sql(a, c, sql, sizeof sql, NULL);
    const char *v[1] = { sql };
    PGresult *r = adv_exec(a->conn, "SELECT indexrelid FROM hypopg_create_index($1)", 1, v,
                           msg, sizeof msg);
    *best_ratio = 0;
    if (!r || PQntuples(r) != 1) {
        adv_log(a, "hypopg refused %s: %s", sql, msg);
        PQclear(r);
        return -1;
    }
    char oid[32];
    snprintf(oid, sizeof oid, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    double saving = 0;
    const char *rel = a->tables[c->table].relname;
    for (int i = 0; i < a->nqueries; i++) {
        adv_query_t *q = &a->queries[i];
        new_cost[i] = q->cost;
        if (!s_touches(q, rel))
            continue;
        double nc = adv_cost(a, q, NULL);
        if (nc < 0 || nc >= q->cost)
            continue;
        new_cost[i] = nc;
        saving += (q->cost - nc) * q->calls;
        if (nc > 0 && q->cost / nc > *best_ratio)
            *best_ratio = q->cost / nc;
        else if (nc <= 0)
            *best_ratio = 1e9;
    }
    const char *ov[1] = { oid };
    PQclear(adv_exec(a->conn, "SELECT hypopg_drop_index($1::oid)", 1, ov, NULL, 0));
    return saving;
}

/* the statements whose cost nc cuts become c's (at most ADV_MAX_SERVED, for the report) */
static void s_serve(adv_t *a, adv_cand_t *c, const double *nc)
{
    for (int i = 0; i < a->nqueries && c->nserved < ADV_MAX_SERVED; i++)
        if (nc[i] < a->queries[i].cost) {
            c->served[c->nserved++] = i;
            c->cost_before += a->queries[i].cost;
            c->cost_after += nc[i];
        }
}

/* true when p's keys (and predicate) lead b's: p is the narrower index */
static bool s_leads(const adv_cand_t *p, const adv_cand_t *b)
{
    if (p->table != b->table || p->nkeys >= b->nkeys || strcmp(p->where, b->where) != 0)
        return false;
    for (int k = 0; k < p->nkeys; k++)
        if (strcmp(p->keys[k].column, b->keys[k].column) != 0 || p->keys[k].desc != b->keys[k].desc)
            return false;
    return true;
}

/* calls x cost, with the costs nc, of the statements that base_nc makes cheaper */
static double s_remaining(const adv_t *a, const double *base_nc, const double *nc)
{
    double rem = 0;
    for (int i = 0; i < a->nqueries; i++)
        if (base_nc[i] < a->queries[i].cost)
            rem += nc[i] * a->queries[i].calls;
    return rem;
}

static void s_choose(adv_t *a)
{
    size_t nq = (size_t) a->nqueries + 1;
    /* ncs: each candidate's statement costs of this round, nq per candidate */
    double *ncs = calloc(nq * ((size_t) a->ncands + 1), sizeof *ncs);
    double *nets = calloc((size_t) a->ncands + 1, sizeof *nets);
    bool *dead = calloc((size_t) a->ncands + 1, sizeof *dead);
    if (!ncs || !nets || !dead)
        goto done;
    for (;;) {
        int best = -1;
        double best_net = 0;
        for (int i = 0; i < a->ncands; i++) {
            adv_cand_t *c = &a->cands[i];
            nets[i] = 0;
            if (dead[i] || c->chosen)
                continue;
            adv_table_t *t = &a->tables[c->table];
            if (t->chosen >= a->opts->max_per_table) {
                dead[i] = true;
                continue;
            }
            double ratio;
            double saving = s_evaluate(a, c, ncs + nq * (size_t) i, &ratio);
            double penalty = t->writes * a->opts->write_cost;
            double net = saving - penalty;
            /* with more indexes chosen a candidate only loses: once out, out for good */
            if (saving <= 0 || net <= 0 || ratio < a->opts->min_cost_ratio) {
                dead[i] = true;
                if (saving > 0 && net <= 0)
                    adv_log(a, "skip %s(%s...): saving %.0f below the write penalty %.0f "
                            "(%.0f rows written)", t->regclass, c->keys[0].column, saving,
                            penalty, t->writes);
                continue;
            }
            nets[i] = net;
            if (net > best_net) {
                best_net = net;
                best = i;
            }
        }
        if (best < 0)
            break;
        /* A wider index wins the saving by a hair when its extra column only filters a row
         * or two more: prefer the narrowest candidate leading it whose statements end up
         * within 10 % of the wider one's cost (smaller, cheaper to write, serves more). */
        const double *bnc = ncs + nq * (size_t) best;
        double rem_best = s_remaining(a, bnc, bnc);
        int pick = best;
        for (int i = 0; i < a->ncands; i++)
            if (nets[i] > 0 && s_leads(&a->cands[i], &a->cands[pick])
                && s_remaining(a, bnc, ncs + nq * (size_t) i) <= rem_best * 1.1 + 1)
                pick = i;
        best = pick;
        best_net = nets[best];
        const double *best_nc = ncs + nq * (size_t) best;
        adv_cand_t *c = &a->cands[best];
        char sql[1024];
        adv_cand_sql(a, c, sql, sizeof sql, NULL);
        const char *v[1] = { sql };
        char msg[256];
        PGresult *r = adv_exec(a->conn, "SELECT * FROM hypopg_create_index($1)", 1, v, msg,
                               sizeof msg);
        if (!r)   /* it was created a moment ago; later rounds would cost without it */
            adv_log(a, "hypopg refused the chosen %s: %s", sql, msg);
        PQclear(r);
        c->chosen = true;
        c->order = a->nchosen++;
        c->saving = best_net;
        a->tables[c->table].chosen++;
        s_serve(a, c, best_nc);
        for (int i = 0; i < a->nqueries; i++)   /* the next rounds cost against this one */
            if (best_nc[i] < a->queries[i].cost)
                a->queries[i].cost = best_nc[i];
        adv_log(a, "chose %s (saving %.0f, %d statements)", sql, best_net, c->nserved);
    }
done:
    PQclear(PQexec(a->conn, "SELECT hypopg_reset()"));
    free(ncs);
    free(nets);
    free(dead);
}

/* ------------------------------------------------------------ reports */
/* The rows of a report query as objects (names: the keys; '#' marks an integer column, '~' a
 * real one), or
 * JSON null when the query failed: "could not tell" must not read as "none found". */
static json_t *s_rows(adv_t *a, const char *sql, const char *const *names)
{
    char msg[256];
    PGresult *r = adv_exec(a->conn, sql, 0, NULL, msg, sizeof msg);
    if (!r) {
        qv_warn("advisor: a report query failed: %s", msg);
        return json_null();
    }
    json_t *arr = json_array();
    for (int i = 0; r && i < PQntuples(r); i++) {
        json_t *o = json_object();
        for (int k = 0; names[k]; k++) {
            const char *n = names[k];
            bool num = n[0] == '#', real = n[0] == '~';
            json_t *v = PQgetisnull(r, i, k) ? json_null()
                      : num ? json_integer(atoll(PQgetvalue(r, i, k)))
                      : real ? json_real(atof(PQgetvalue(r, i, k)))
                      : json_string(PQgetvalue(r, i, k));
            json_object_set_new(o, num || real ? n + 1 : n, v);
        }
        json_array_append_new(arr, o);
    }
    PQclear(r);
    return arr;
}

static void s_reports(adv_t *a, json_t *out)
{
    static const char *const unused[] = { "table", "index", "#size_bytes", "#idx_scan",
                                          "stats_since", "#stats_age_s", NULL };
    /* "unused since when": the database's statistics reset, or the server start when they
     * were never reset */
    json_object_set_new(out, "unused_indexes", s_rows(a,
        "WITH r AS (SELECT coalesce((SELECT stats_reset FROM pg_stat_database"
        "                             WHERE datname = current_database()),"
        "                           pg_postmaster_start_time()) AS t)"
        "SELECT s.relid::regclass::text, s.indexrelid::regclass::text,"
        "       pg_relation_size(s.indexrelid), s.idx_scan,"
        "       to_char(r.t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        "       extract(epoch FROM now() - r.t)::bigint"
        "  FROM r, pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid"
        " WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid"
        " ORDER BY 3 DESC", unused));
    static const char *const dup[] = { "table", "index", "duplicate_of", NULL };
    json_object_set_new(out, "duplicate_indexes", s_rows(a,
        "SELECT a.indrelid::regclass::text, a.indexrelid::regclass::text,"
        "       b.indexrelid::regclass::text"
        "  FROM pg_index a JOIN pg_index b ON a.indrelid = b.indrelid"
        "   AND a.indexrelid <> b.indexrelid"
        "  JOIN pg_class ca ON ca.oid = a.indexrelid JOIN pg_class cb ON cb.oid = b.indexrelid"
        "  JOIN pg_namespace n ON n.oid = ca.relnamespace"
        " WHERE ca.relam = cb.relam AND n.nspname NOT IN ('pg_catalog', 'pg_toast')"
        "   AND NOT a.indisunique AND a.indpred IS NULL AND b.indpred IS NULL"
        "   AND a.indexprs IS NULL AND b.indexprs IS NULL"
        "   AND (b.indkey::text || ' ') LIKE (a.indkey::text || ' %')"
        "   AND (a.indkey::text <> b.indkey::text OR a.indexrelid > b.indexrelid"
        "        OR b.indisunique)"
        " ORDER BY 1, 2", dup));
    /* The pg_stat_statements picture of this database, which is all there is to know about the
     * queries of a database that is not ours: the top 20 by total time. */
    static const char *const top[] = { "query", "#calls", "~total_ms", "~mean_ms", "#rows",
                                       "~shared_hit_ratio", NULL };
    json_object_set_new(out, "top_statements", s_rows(a,
        "SELECT left(query, 200), calls, round(total_exec_time::numeric, 3),"
        "       round(mean_exec_time::numeric, 3), rows,"
        "       round(shared_blks_hit::numeric / nullif(shared_blks_hit + shared_blks_read, 0), 4)"
        "  FROM pg_stat_statements"
        " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " ORDER BY total_exec_time DESC LIMIT 20", top));
    static const char *const inv[] = { "table", "index", NULL };
    json_object_set_new(out, "invalid_indexes", s_rows(a,
        "SELECT indrelid::regclass::text, indexrelid::regclass::text FROM pg_index"
        " WHERE NOT indisvalid ORDER BY 1, 2", inv));
}

/* ------------------------------------------------------------ the run */
json_t *adv_cand_json(adv_t *a, const adv_cand_t *c)
{
    const adv_table_t *t = &a->tables[c->table];
    json_t *cols = json_array(), *qs = json_array();
    for (int i = 0; i < c->nkeys; i++)
        json_array_append_new(cols, json_string(c->keys[i].column));
    for (int i = 0; i < c->nserved; i++)
        json_array_append_new(qs, json_string(a->queries[c->served[i]].text));
    char name[64], sql[1024];
    adv_index_name(a, c, name, sizeof name);
    adv_cand_sql(a, c, sql, sizeof sql, name);
    json_t *dirs = json_array();
    for (int i = 0; i < c->nkeys; i++)
        json_array_append_new(dirs, json_string(c->keys[i].desc ? "desc" : "asc"));
    return json_pack("{s:s,s:o,s:o,s:o,s:s,s:s,s:o,s:f,s:f,s:f}", "table", t->regclass,
                     "columns", cols, "directions", dirs,
                     "where", *c->where ? json_string(c->where) : json_null(), "sql", sql,
                     "index_name", name, "queries", qs,
                     "cost_before", round(c->cost_before * 100) / 100,
                     "cost_after", round(c->cost_after * 100) / 100,
                     "saving", round(c->saving));
}

/* dbopt_<table>_<col>[_desc]..[_part_<hash of the predicate>]_idx, lower-case ASCII, at most
 * 63 bytes (NAMEDATALEN - 1). Unique per (table, keys, directions, predicate): a DESC key says
 * so, a partial index carries a hash of its predicate, and a name that would pass 58
 * characters keeps its first 49 and ends in a hash of the whole (two long names sharing a
 * prefix would otherwise be cut to the same one, and the second build would fail with
 * "already exists"). FNV-1a of a then b, because it needs no key and is stable across runs. */
static uint64_t s_fnv(const char *a, const char *b)
{
    return qv_fnv1a(b, strlen(b), qv_fnv1a(a, strlen(a), QV_FNV1A_INIT));
}

void adv_index_name(const adv_t *a, const adv_cand_t *c, char *buf, size_t len)
{
    char raw[512];
    snprintf(raw, sizeof raw, "dbopt_%s", a->tables[c->table].relname);
    for (int i = 0; i < c->nkeys; i++) {
        size_t l = strlen(raw);
        snprintf(raw + l, sizeof raw - l, "_%s%s", c->keys[i].column,
                 c->keys[i].desc ? "_desc" : "");
    }
    if (*c->where) {
        size_t l = strlen(raw);
        snprintf(raw + l, sizeof raw - l, "_part_%06llx",
                 (unsigned long long) (s_fnv(c->where, "") & 0xffffff));
    }
    char clean[512];
    size_t n = 0;
    for (size_t i = 0; raw[i] && n < sizeof clean - 1; i++) {
        unsigned char ch = (unsigned char) raw[i];
        clean[n++] = (char) (isalnum(ch) ? tolower(ch) : '_');
    }
    clean[n] = '\0';
    if (n > 58)
        snprintf(buf, len, "%.49s_%08llx_idx", clean,
                 (unsigned long long) (s_fnv(raw, c->where) & 0xffffffffULL));
    else
        snprintf(buf, len, "%s_idx", clean);
}

int adv_open(adv_t *a, const char *conninfo, const dbopt_advise_opts_t *opts,
             dbopt_advise_err_t *err)
{
    memset(a, 0, sizeof *a);
    a->opts = opts;
    a->err = err;
    a->conninfo = conninfo;
    a->started_ms = qv_mono_ms();
    err->status = 0;
    err->text[0] = '\0';
    a->conn = adv_connect(conninfo, opts, err);
    if (!a->conn)
        return -1;
    snprintf(a->dbname, sizeof a->dbname, "%s", PQdb(a->conn));
    if (s_check(a) != 0 || adv_load_workload(a) != 0)
        return -1;
    return 0;
}

void adv_close(adv_t *a)
{
    for (int i = 0; i < a->nqueries; i++)
        adv_query_free(&a->queries[i]);
    free(a->queries);
    adv_free_tables(a);
    free(a->cands);
    free(a->wnames);
    free(a->wrows);
    PQfinish(a->conn);
    memset(a, 0, sizeof *a);
}

json_t *dbopt_advise_run(const char *conninfo, const dbopt_advise_opts_t *opts,
                         dbopt_advise_err_t *err)
{
    adv_t a;
    if (adv_open(&a, conninfo, opts, err) != 0) {
        adv_close(&a);
        return NULL;
    }
    for (int i = 0; i < a.nqueries; i++)
        for (int s = 0; s < a.queries[i].plan->nscans; s++)
            s_scan_cands(&a, &a.queries[i].plan->scans[s]);
    adv_log(&a, "%d candidate indexes", a.ncands);
    s_choose(&a);
    json_t *out = json_object(), *recs = json_array();
    for (int n = 0; n < a.nchosen; n++)
        for (int i = 0; i < a.ncands; i++)
            if (a.cands[i].chosen && a.cands[i].order == n) {
                json_t *rec = adv_cand_json(&a, &a.cands[i]);
                if (opts->apply)
                    adv_validate(&a, &a.cands[i], rec);
                json_array_append_new(recs, rec);
            }
    json_object_set_new(out, "recommendations", recs);
    s_reports(&a, out);
    /* an index this run just built has had no chance to be scanned yet */
    json_t *unused = json_object_get(out, "unused_indexes"), *u, *rec;
    size_t ui, ri;
    for (ui = json_array_size(unused); ui-- > 0;) {
        u = json_array_get(unused, ui);
        json_array_foreach(recs, ri, rec)
            if (json_is_true(json_object_get(rec, "kept"))
                && json_equal(json_object_get(rec, "index_name"), json_object_get(u, "index"))) {
                json_array_remove(unused, ui);
                break;
            }
    }
    json_object_set_new(out, "database", json_string(a.dbname));
    json_object_set_new(out, "queries_read", json_integer(a.nread));
    json_object_set_new(out, "queries_used", json_integer(a.nqueries));
    json_object_set_new(out, "candidates", json_integer(a.ncands));
    json_object_set_new(out, "applied", json_boolean(opts->apply));
    json_object_set_new(out, "elapsed_ms", json_integer(qv_mono_ms() - a.started_ms));
    adv_close(&a);
    return out;
}

json_t *dbopt_advise_apply_one(const char *conninfo, const dbopt_advise_opts_t *opts,
                               const char *table, const char *const *columns, int ncolumns,
                               const char *where, dbopt_advise_err_t *err)
{
    if (!table || !*table || ncolumns < 1 || ncolumns > DBOPT_MAX_KEYS) {
        err->status = 400;
        snprintf(err->text, sizeof err->text, "an index needs a table and 1 to %d columns",
                 DBOPT_MAX_KEYS);
        return NULL;
    }
    adv_t a;
    if (adv_open(&a, conninfo, opts, err) != 0) {
        adv_close(&a);
        return NULL;
    }
    json_t *rec = NULL;
    adv_table_t *t = adv_table(&a, table);
    dbopt_key_t k[DBOPT_MAX_KEYS];
    char wh[160] = "";
    if (!t) {
        adv_fail(&a, 404, "unknown table '%.80s' in database %s", table, a.dbname);
        goto out;
    }
    for (int i = 0; i < ncolumns; i++) {
        char name[DBOPT_NAME_MAX];
        snprintf(name, sizeof name, "%s", columns[i] ? columns[i] : "");
        size_t l = strlen(name);
        k[i].desc = l > 5 && strcasecmp(name + l - 5, " desc") == 0;
        if (k[i].desc)
            name[l - 5] = '\0';
        if (!adv_col(t, name)) {
            adv_fail(&a, 400, "table %s has no column '%.60s'", t->regclass, name);
            goto out;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(k[j].column, name) == 0) {
                adv_fail(&a, 400, "column '%.60s' is given twice", name);
                goto out;
            }
        snprintf(k[i].column, sizeof k[i].column, "%s", name);
    }
    if (where && *where) {
        dbopt_cond_t c[2];
        adv_col_t *col = NULL;
        if (dbopt_cond_parse(where, c, 2) != 1 || c[0].param || c[0].is_join
            || !(col = adv_col(t, c[0].column))
            || !s_predicate_sql(c[0].op, col, wh, sizeof wh)) {
            adv_fail(&a, 400, "where must be `col IS NULL`, `col IS NOT NULL`, `col` or `NOT col` "
                     "on a column of %s", t->regclass);
            goto out;
        }
    }
    int ci = adv_add_cand(&a, (int) (t - a.tables), k, ncolumns, wh);
    if (ci < 0) {
        adv_fail(&a, 409, "an existing index on %s already leads with these columns", t->regclass);
        goto out;
    }
    adv_cand_t *c = &a.cands[ci];
    double *nc = calloc((size_t) a.nqueries + 1, sizeof *nc), ratio;
    if (nc && s_evaluate(&a, c, nc, &ratio) >= 0)
        s_serve(&a, c, nc);
    free(nc);
    PQclear(PQexec(a.conn, "SELECT hypopg_reset()"));
    rec = adv_cand_json(&a, c);
    adv_validate(&a, c, rec);
out:
    adv_close(&a);
    return rec;
}

json_t *dbopt_advise_explain(const char *conninfo, const char *sql, const char *const *values,
                             int nvalues, int statement_timeout_ms, dbopt_advise_err_t *err)
{
    dbopt_advise_opts_t o;
    dbopt_advise_opts_default(&o);
    o.statement_timeout_ms = statement_timeout_ms;
    PGconn *c = adv_connect(conninfo, &o, err);
    if (!c)
        return NULL;
    size_t len = strlen(sql) + 32;
    char *ex = malloc(len);
    dbopt_cand_plan_t *p = calloc(1, sizeof *p);
    PGresult *r = NULL;
    json_t *out = NULL;
    char msg[512], perr[128];
    err->status = 500;
    snprintf(err->text, sizeof err->text, "out of memory");
    if (!ex || !p)
        goto done;
    snprintf(ex, len, "EXPLAIN (FORMAT JSON) %s", sql);
    r = adv_exec(c, ex, nvalues, values, msg, sizeof msg);
    if (!r) {
        err->status = 400;
        snprintf(err->text, sizeof err->text, "PostgreSQL cannot explain it: %s", msg);
    } else if (dbopt_cand_plan_parse(PQgetvalue(r, 0, 0), p, perr, sizeof perr) != 0)
        snprintf(err->text, sizeof err->text, "unreadable plan");
    else
        out = json_pack("{s:s,s:s,s:f}", "plan", PQgetvalue(r, 0, 0), "shape", p->shape,
                        "total_cost", p->total_cost);
done:
    PQclear(r);
    free(p);
    free(ex);
    PQfinish(c);
    return out;
}

/* ------------------------------------------------------------ selftest */
int dbopt_advise_selftest(void)
{
    if (!adv_is_limit_param("SELECT a FROM t ORDER BY a LIMIT $2", 2)
        || adv_is_limit_param("SELECT a FROM t LIMIT $12", 1)
        || !adv_is_offset_param("select a from t limit $1 offset $2", 2))
        return fprintf(stderr, "advise: LIMIT/OFFSET parameters\n"), -1;
    adv_table_t t = { .relname = "orders", .regclass = "public.orders", .reltuples = 1e6 };
    adv_col_t cols[2] = { { .name = "status", .quoted = "status", .ndistinct = 4 },
                          { .name = "Created", .quoted = "\"Created\"", .ndistinct = 1e5 } };
    adv_index_t idx[1] = { { .btree = true, .valid = true, .cols = ",status,Created," } };
    t.cols = cols;
    t.ncols = 2;
    t.idx = idx;
    t.nidx = 1;
    dbopt_advise_opts_t o;
    dbopt_advise_opts_default(&o);
    adv_t a = { .opts = &o, .tables = &t, .ntables = 1 };
    dbopt_key_t k[2] = { { .column = "Created", .desc = true }, { .column = "status" } };
    int i = adv_add_cand(&a, 0, k, 2, "");
    if (i != 0 || !a.cands[0].keys[0].desc)
        return fprintf(stderr, "advise: mixed directions kept\n"), free(a.cands), -1;
    char sql[256], name[64];
    adv_index_name(&a, &a.cands[0], name, sizeof name);
    adv_cand_sql(&a, &a.cands[0], sql, sizeof sql, name);
    int rc = strcmp(sql, "CREATE INDEX CONCURRENTLY dbopt_orders_created_desc_status_idx ON "
                         "public.orders (\"Created\" DESC, status)") == 0 ? 0 : -1;
    if (rc)
        fprintf(stderr, "advise: sql %s\n", sql);
    dbopt_key_t lead[1] = { { .column = "status" } };
    if (adv_add_cand(&a, 0, lead, 1, "") != -1)   /* leads the existing (status, Created) */
        rc = -1, fprintf(stderr, "advise: covered candidate kept\n");
    if (adv_add_cand(&a, 0, k, 2, "") != 0)       /* the same one again */
        rc = -1, fprintf(stderr, "advise: duplicate candidate\n");
    dbopt_key_t other[1] = { { .column = "created" } };
    if (adv_add_cand(&a, 0, other, 1, "") != -1)  /* not a column ("Created" is) */
        rc = -1, fprintf(stderr, "advise: candidate on an unknown column\n");
    /* Names: one per (keys, directions, predicate), never past 63 bytes. */
    adv_cand_t v[5];
    memset(v, 0, sizeof v);
    for (int j = 0; j < 5; j++) {
        v[j].nkeys = 1;
        snprintf(v[j].keys[0].column, sizeof v[j].keys[0].column, "status");
    }
    v[1].keys[0].desc = true;
    snprintf(v[2].where, sizeof v[2].where, "status = 'a'");
    snprintf(v[3].where, sizeof v[3].where, "status = 'b'");
    snprintf(v[4].keys[0].column, sizeof v[4].keys[0].column, "%s", "a_column_name_long_enough_"
             "to_pass_the_limit_on_its_own_x");
    char names[6][64];
    for (int j = 0; j < 5; j++)
        adv_index_name(&a, &v[j], names[j], sizeof names[j]);
    snprintf(v[4].keys[0].column, sizeof v[4].keys[0].column, "%s", "a_column_name_long_enough_"
             "to_pass_the_limit_on_its_own_y");
    adv_index_name(&a, &v[4], names[5], sizeof names[5]);
    for (int j = 0; j < 6; j++) {
        if (strlen(names[j]) > 63 || strncmp(names[j], "dbopt_orders_", 13) != 0)
            rc = -1, fprintf(stderr, "advise: index name %s\n", names[j]);
        for (int m = 0; m < j; m++)
            if (strcmp(names[j], names[m]) == 0)
                rc = -1, fprintf(stderr, "advise: two candidates named %s\n", names[j]);
    }
    free(a.cands);
    return rc;
}
