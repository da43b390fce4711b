/* dbopt_validate: the advisor's apply mode. An index is kept only when the statements it
 * was chosen for run at least keep_factor faster (median of `runs` timings after a warm-up,
 * the same sampled parameters before and after); otherwise it is dropped again. The whole
 * create-measure-decide step holds a session advisory lock, so two advisors (CLI and daemon)
 * never build indexes on one database at once. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include "dbopt_advise_int.h"
/* dbopt_history_ddl: migrations/003_index_history.sql as a string (generated from it by
 * CMakeLists.txt). On databases that are not ours the table is created only by an apply run
 * (the operator asked us to change that database). */
#include "dbopt_history_ddl.h"
#include "qv_clock.h"

/* 'dbopt' 'apply' as two int4 keys: fixed, so every advisor process agrees */
#define S_LOCK_SQL "SELECT pg_advisory_lock(1684172655, 1634757753)"
#define S_UNLOCK_SQL "SELECT pg_advisory_unlock(1684172655, 1634757753)"

static double s_now_ms(void)
{
    return (double) qv_mono_us() / 1e3;
}

static int s_cmp(const void *x, const void *y)
{
    double a = *(const double *) x, b = *(const double *) y;
    return a < b ? -1 : a > b;
}

/* median ms of q over runs (after one untimed warm-up), -1 on error. Unnamed statements are
 * planned with the actual values (a custom plan), which is what is measured. */
static double s_time(adv_t *a, adv_query_t *q)
{
    int runs = a->opts->runs > 0 ? a->opts->runs : 1;
    double t[64];
    if (runs > 64)
        runs = 64;
    for (int i = -1; i < runs; i++) {
        double t0 = s_now_ms();
        PGresult *r = PQexecParams(a->conn, q->text, q->nparams, q->types,
                                   (const char *const *) q->values, NULL, NULL, 0);
        double dt = s_now_ms() - t0;
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!ok)
            adv_log(a, "timing failed: %s", PQresultErrorMessage(r));
        PQclear(r);
        if (!ok)
            return -1;
        if (i >= 0)
            t[i] = dt;
    }
    qsort(t, (size_t) runs, sizeof t[0], s_cmp);
    return runs % 2 ? t[runs / 2] : (t[runs / 2 - 1] + t[runs / 2]) / 2;
}

/* sum of the medians of c's measurable statements; -1 when none could be timed */
static double s_measure(adv_t *a, const adv_cand_t *c, int *timed)
{
    double sum = 0;
    *timed = 0;
    for (int i = 0; i < c->nserved; i++) {
        adv_query_t *q = &a->queries[c->served[i]];
        if (!q->measurable)
            continue;
        double ms = s_time(a, q);
        if (ms < 0)
            return -1;
        sum += ms;
        (*timed)++;
    }
    return *timed ? sum : -1;
}

/* runs sql (CREATE INDEX CONCURRENTLY) on a->conn, logging pg_stat_progress_create_index
 * from a second connection about twice a second. 0 or -1 with msg. */
static int s_build(adv_t *a, const char *sql, char *msg, size_t len)
{
    if (!PQsendQuery(a->conn, sql)) {
        snprintf(msg, len, "%s", PQerrorMessage(a->conn));
        return -1;
    }
    dbopt_advise_err_t ignore;
    PGconn *mon = adv_connect(a->conninfo, a->opts, &ignore);
    char pid[16], last[160] = "";
    snprintf(pid, sizeof pid, "%d", PQbackendPID(a->conn));
    int sock = PQsocket(a->conn);
    while (PQisBusy(a->conn)) {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(sock, &rd);
        struct timeval tv = { 0, 500000 };
        if (select(sock + 1, &rd, NULL, NULL, &tv) < 0)
            break;
        if (!PQconsumeInput(a->conn))
            break;
        if (mon && PQisBusy(a->conn)) {
            const char *v[1] = { pid };
            PGresult *r = adv_exec(mon,
                "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total"
                "  FROM pg_stat_progress_create_index WHERE pid = $1::int", 1, v, NULL, 0);
            if (r && PQntuples(r) == 1) {
                char line[160];
                snprintf(line, sizeof line, "%s: blocks %s/%s, tuples %s/%s",
                         PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2),
                         PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4));
                if (strcmp(line, last) != 0) {
                    adv_log(a, "  progress %s", line);
                    snprintf(last, sizeof last, "%s", line);
                }
            }
            PQclear(r);
        }
    }
    PQfinish(mon);
    int rc = 0;
    PGresult *r;
    while ((r = PQgetResult(a->conn))) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            adv_error_text(a->conn, r, msg, len);
            rc = -1;
        }
        PQclear(r);
    }
    if (rc == 0 && PQstatus(a->conn) != CONNECTION_OK) {
        snprintf(msg, len, "connection lost");
        rc = -1;
    }
    return rc;
}

/* DROP INDEX CONCURRENTLY waits for every transaction older than itself, like the build: it
 * gets at least a minute even when the run's statement_timeout is shorter, since an index
 * left behind (INVALID or slow) costs every write until someone drops it. 0 or -1. */
static int s_drop(adv_t *a, const char *schema, const char *name)
{
    char sql[256], msg[256] = "", *qs = PQescapeIdentifier(a->conn, schema, strlen(schema)),
         *qn = PQescapeIdentifier(a->conn, name, strlen(name));
    int rc = -1;
    if (qs && qn) {
        int t = a->opts->statement_timeout_ms;
        snprintf(sql, sizeof sql, "SET statement_timeout = %d", t == 0 || t > 60000 ? t : 60000);
        PQclear(PQexec(a->conn, sql));
        snprintf(sql, sizeof sql, "DROP INDEX CONCURRENTLY IF EXISTS %s.%s", qs, qn);
        PGresult *r = adv_exec(a->conn, sql, 0, NULL, msg, sizeof msg);
        rc = r ? 0 : -1;
        if (!r)
            adv_log(a, "cannot drop %s: %s; drop it by hand: %s", name, msg, sql);
        PQclear(r);
        snprintf(sql, sizeof sql, "SET statement_timeout = %d", t);
        PQclear(PQexec(a->conn, sql));
    }
    PQfreemem(qs);
    PQfreemem(qn);
    return rc;
}

/* true when schema.name exists and is INVALID (a failed CONCURRENTLY build leaves one) */
static bool s_invalid(adv_t *a, const char *schema, const char *name)
{
    const char *v[2] = { schema, name };
    PGresult *r = adv_exec(a->conn,
        "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        "  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
        2, v, NULL, 0);
    bool bad = r && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
    PQclear(r);
    return bad;
}

/* the outcome as a row of dbopt_index_history (the table created first where it is
 * missing) and to opts.on_outcome; a failed insert is logged, the outcome stands */
static void s_record(adv_t *a, const adv_cand_t *c, json_t *rec)
{
    char msg[256], cb[32], ca[32], mb[32], ma[32];
    json_t *qs = json_object_get(rec, "queries");
    char *qtext = qs ? json_dumps(qs, JSON_COMPACT) : NULL;
    snprintf(cb, sizeof cb, "%.2f", c->cost_before);
    snprintf(ca, sizeof ca, "%.2f", c->cost_after);
    json_t *b = json_object_get(rec, "ms_before"), *f = json_object_get(rec, "ms_after");
    snprintf(mb, sizeof mb, "%.3f", json_number_value(b));
    snprintf(ma, sizeof ma, "%.3f", json_number_value(f));
    const char *v[10] = {
        json_string_value(json_object_get(rec, "table")),
        json_string_value(json_object_get(rec, "index_name")),
        json_string_value(json_object_get(rec, "sql")), qtext ? qtext : "[]", cb, ca,
        json_is_number(b) ? mb : NULL, json_is_number(f) ? ma : NULL,
        json_is_true(json_object_get(rec, "kept")) ? "t" : "f",
        json_string_value(json_object_get(rec, "reason")),
    };
    PGresult *r = adv_exec(a->conn, dbopt_history_ddl, 0, NULL, msg, sizeof msg);
    if (r) {
        PQclear(r);
        r = adv_exec(a->conn,
            "INSERT INTO dbopt_index_history (table_name, index_name, index_sql, queries,"
            " cost_before, cost_after, ms_before, ms_after, kept, reason)"
            " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10)", 10, v, msg, sizeof msg);
    }
    if (!r)
        adv_log(a, "cannot record the outcome in dbopt_index_history: %s", msg);
    PQclear(r);
    free(qtext);
    if (a->opts->on_outcome) {
        char *j = json_dumps(rec, JSON_COMPACT);
        if (j)
            a->opts->on_outcome(a->opts->arg, j);
        free(j);
    }
}

void adv_validate(adv_t *a, const adv_cand_t *c, json_t *rec)
{
    const char *name = json_string_value(json_object_get(rec, "index_name"));
    const char *sql = json_string_value(json_object_get(rec, "sql"));
    const char *schema = a->tables[c->table].schema;
    char reason[512] = "", msg[512] = "";
    double before = -1, after = -1;
    bool kept = false, locked = false;
    int timed = 0;
    PGresult *r = adv_exec(a->conn, S_LOCK_SQL, 0, NULL, msg, sizeof msg);
    if (!r) {
        snprintf(reason, sizeof reason, "advisory lock not taken: %.400s", msg);
        goto out;
    }
    PQclear(r);
    locked = true;
    before = s_measure(a, c, &timed);
    if (before < 0) {
        snprintf(reason, sizeof reason, "not created: no statement it serves could be timed "
                 "(parameter values unknown)");
        goto out;
    }
    adv_log(a, "building %s (statements before: %.2f ms)", sql, before);
    if (s_build(a, sql, msg, sizeof msg) != 0) {
        snprintf(reason, sizeof reason, "CREATE INDEX failed: %.400s", msg);
        if (s_invalid(a, schema, name))
            strncat(reason, s_drop(a, schema, name) == 0
                    ? "; the INVALID index it left was dropped"
                    : "; the INVALID index it left could not be dropped: run DROP INDEX "
                      "CONCURRENTLY on it", sizeof reason - strlen(reason) - 1);
        goto out;
    }
    /* fresh statistics for the new index's expression-free columns are not needed (the
     * table's are unchanged); the planner sees the index at once */
    after = s_measure(a, c, &timed);
    if (after < 0) {
        snprintf(reason, sizeof reason, "%s: timing after the build failed",
                 s_drop(a, schema, name) == 0 ? "dropped" : "NOT dropped (drop it by hand)");
        goto out;
    }
    double factor = after > 0 ? before / after : INFINITY;
    if (factor >= a->opts->keep_factor) {
        kept = true;
        snprintf(reason, sizeof reason, "kept: %.1fx faster (%.2f -> %.2f ms, %d statements)",
                 factor, before, after, timed);
    } else {
        bool gone = s_drop(a, schema, name) == 0;
        snprintf(reason, sizeof reason, "%s: %.2fx is below the required %.1fx "
                 "(%.2f -> %.2f ms)", gone ? "dropped" : "NOT dropped (drop it by hand)",
                 factor, a->opts->keep_factor, before, after);
    }
out:
    if (locked)
        PQclear(PQexec(a->conn, S_UNLOCK_SQL));
    json_object_set_new(rec, "ms_before", before >= 0 ? json_real(round(before * 1000) / 1000)
                                                     : json_null());
    json_object_set_new(rec, "ms_after", after >= 0 ? json_real(round(after * 1000) / 1000)
                                                   : json_null());
    json_object_set_new(rec, "kept", json_boolean(kept));
    json_object_set_new(rec, "reason", json_string(reason));
    adv_log(a, "%s: %s", name, reason);
    s_record(a, c, rec);
}
