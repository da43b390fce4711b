/* dbopt_maint: which tables need VACUUM (ANALYZE), running it one table at a time on a
 * connection of its own, checking that it happened, and telling the bus (dbopt_maint.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>
#include <jansson.h>
#include <libpq-fe.h>
#include "dbopt_maint.h"
#include "dbopt_health.h"
#include "qv_log.h"
#include "qv_clock.h"

#define S_MIN_ROWS      50      /* autovacuum_vacuum_threshold's default: below, never due */
#define S_VERIFY_MS     3000    /* how long to wait for vacuum_count to move */

struct dbopt_maint_t {
    char           *conninfo, *window;
    int             connect_timeout_s, interval_s, lock_timeout_ms;
    int             win_start, win_end;     /* minutes since midnight UTC */
    bool            win_off;
    double          dead_ratio, analyze_ratio;
    qv_bus_t       *bus;
    pthread_mutex_t mu;         /* guards everything below */
    bool            busy;       /* a pass (scheduler or RPC) holds the right to vacuum */
    bool            thread_live, thread_done, stopping;
    pthread_t       thread;
    PGcancel       *cancel;     /* of the connection vacuuming now, for shutdown */
    int64_t         next_due_ms;
};

/* One table: the candidate's numbers, then what happened. The protobuf message points into
 * the buffers. */
typedef struct {
    char    relid[16], schema[128], name[128], table[260], reason[200], error[320];
    double  dead_ratio, mod_ratio;
    int64_t dead, vacuum_count;
    bool    due;
    Quaver__V1__MaintenanceAction msg;
} s_action_t;

/* ---- the window -------------------------------------------------------------------------- */

static int s_hhmm(const char *s, int *minutes)
{
    /* exactly two digits, ':', two digits; sscanf would take "1:5" and " 01:05" */
    for (int i = 0; i < 5; i++)
        if (i == 2 ? s[i] != ':' : (s[i] < '0' || s[i] > '9'))
            return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
    if (m > 59 || h > 24 || (h == 24 && m != 0))
        return -1;
    *minutes = h * 60 + m;
    return 0;
}

int dbopt_maint_window_parse(const char *s, int *start, int *end, bool *off, char *why,
                             size_t len)
{
    *off = false;
    if (s && strcmp(s, "off") == 0) {
        *off = true;
        return 0;
    }
    if (!s || strlen(s) != 11 || s[5] != '-' || s_hhmm(s, start) != 0
        || s_hhmm(s + 6, end) != 0) {
        snprintf(why, len, "expected HH:MM-HH:MM (UTC, 00:00..24:00) or off");
        return -1;
    }
    if (*start == 24 * 60) {
        snprintf(why, len, "a window cannot start at 24:00");
        return -1;
    }
    if (*start == *end) {
        snprintf(why, len, "an empty window: say off, or 00:00-24:00 for always");
        return -1;
    }
    return 0;
}

static bool s_in_window(const dbopt_maint_t *m)
{
    if (m->win_off)
        return false;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    int t = tm.tm_hour * 60 + tm.tm_min;
    if (m->win_start < m->win_end)
        return t >= m->win_start && t < m->win_end;
    return t >= m->win_start || t < m->win_end;     /* wraps midnight, e.g. 22:00-04:00 */
}

/* ---- life cycle ----------------------------------------------------------------------------- */

dbopt_maint_t *dbopt_maint_new(const dbopt_maint_opts_t *o, char *err, size_t len)
{
    int start = 0, end = 0;
    bool off = false;
    char why[160];
    if (dbopt_maint_window_parse(o->window, &start, &end, &off, why, sizeof why) != 0) {
        snprintf(err, len, "config key 'maintenance_window': value '%s' is invalid: %s",
                 o->window ? o->window : "", why);
        return NULL;
    }
    dbopt_maint_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, len, "out of memory");
        return NULL;
    }
    m->conninfo = strdup(o->conninfo ? o->conninfo : "");
    m->window = strdup(o->window);
    m->connect_timeout_s = o->connect_timeout_s;
    m->interval_s = o->interval_s;
    m->lock_timeout_ms = o->lock_timeout_ms > 0 ? o->lock_timeout_ms : 5000;
    m->win_start = start;
    m->win_end = end;
    m->win_off = off;
    m->dead_ratio = o->dead_ratio;
    m->analyze_ratio = o->analyze_ratio;
    m->bus = o->bus;
    m->next_due_ms = qv_mono_ms() + (int64_t) o->interval_s * 1000;
    pthread_mutex_init(&m->mu, NULL);
    if (!m->conninfo || !m->window) {
        dbopt_maint_destroy(&m);
        snprintf(err, len, "out of memory");
        return NULL;
    }
    return m;
}

void dbopt_maint_destroy(dbopt_maint_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dbopt_maint_t *m = *self_p;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    if (m->cancel) {
        char buf[256];
        (void) PQcancel(m->cancel, buf, sizeof buf);
    }
    bool live = m->thread_live;
    pthread_mutex_unlock(&m->mu);
    if (live)
        pthread_join(m->thread, NULL);
    pthread_mutex_destroy(&m->mu);
    free(m->conninfo);
    free(m->window);
    free(m);
    *self_p = NULL;
}

/* ---- one pass ------------------------------------------------------------------------------ */

static PGconn *s_connect(dbopt_maint_t *m, char *err, size_t len)
{
    char setup[96];
    snprintf(setup, sizeof setup, "SET lock_timeout = %d; SET statement_timeout = 0",
             m->lock_timeout_ms);
    return dbopt_health_connect(m->conninfo, m->connect_timeout_s, "quaver-dbopt-maint", setup,
                                err, len);
}

/* The tables (all, or the one named), each marked due or not. Returns 200, or the status with
 * err set (404 unknown table, 400 ambiguous, 503 PostgreSQL). *out: caller frees. */
static int s_candidates(dbopt_maint_t *m, PGconn *pg, const char *table, bool force,
                        s_action_t **out, int *n, char *err, size_t len)
{
    static const char *const sql =
        "SELECT s.relid::text, s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup, "
        "s.n_mod_since_analyze, c.reltuples, s.vacuum_count "
        "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
        "WHERE s.schemaname NOT LIKE 'pg\\_temp\\_%' "
        "AND ($1::text IS NULL OR s.relname = $1 OR s.schemaname || '.' || s.relname = $1) "
        "ORDER BY s.n_dead_tup DESC, 2, 3";
    const char *params[1] = { table && *table ? table : NULL };
    *out = NULL;
    *n = 0;
    PGresult *r = PQexecParams(pg, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char line[256];
        dbopt_health_first_line(line, sizeof line, PQresultErrorMessage(r));
        snprintf(err, len, "reading pg_stat_user_tables: %s", line);
        PQclear(r);
        return 503;
    }
    int rows = PQntuples(r);
    if (params[0] && rows == 0) {
        snprintf(err, len, "table '%.200s' does not exist (no such user table in this database)",
                 table);
        PQclear(r);
        return 404;
    }
    if (params[0] && rows > 1) {
        snprintf(err, len, "table '%.200s' is in %d schemas: name it as schema.table", table,
                 rows);
        PQclear(r);
        return 400;
    }
    s_action_t *a = calloc((size_t) rows + 1, sizeof *a);
    if (!a) {
        snprintf(err, len, "out of memory");
        PQclear(r);
        return 500;
    }
    for (int i = 0; i < rows; i++) {
        s_action_t *t = &a[i];
        snprintf(t->relid, sizeof t->relid, "%s", PQgetvalue(r, i, 0));
        snprintf(t->schema, sizeof t->schema, "%s", PQgetvalue(r, i, 1));
        snprintf(t->name, sizeof t->name, "%s", PQgetvalue(r, i, 2));
        snprintf(t->table, sizeof t->table, "%s.%s", t->schema, t->name);
        int64_t live = atoll(PQgetvalue(r, i, 3)), mod = atoll(PQgetvalue(r, i, 5));
        double reltuples = atof(PQgetvalue(r, i, 6));
        t->dead = atoll(PQgetvalue(r, i, 4));
        t->vacuum_count = atoll(PQgetvalue(r, i, 7));
        t->dead_ratio = (double) t->dead / (double) (live + 1);
        /* reltuples is -1 until the first VACUUM or ANALYZE: then every change counts */
        t->mod_ratio = (double) mod / (reltuples > 1 ? reltuples : 1);
        bool dead_due = t->dead >= S_MIN_ROWS && t->dead_ratio > m->dead_ratio;
        bool mod_due = mod >= S_MIN_ROWS && t->mod_ratio > m->analyze_ratio;
        t->due = dead_due || mod_due || force;
        if (dead_due && mod_due)
            snprintf(t->reason, sizeof t->reason, "dead ratio %.3f > %.3f and modified ratio "
                     "%.3f > %.3f", t->dead_ratio, m->dead_ratio, t->mod_ratio,
                     m->analyze_ratio);
        else if (dead_due)
            snprintf(t->reason, sizeof t->reason, "dead ratio %.3f > %.3f", t->dead_ratio,
                     m->dead_ratio);
        else if (mod_due)
            snprintf(t->reason, sizeof t->reason, "modified ratio %.3f > %.3f", t->mod_ratio,
                     m->analyze_ratio);
        else
            snprintf(t->reason, sizeof t->reason, "%sbelow thresholds (dead ratio %.3f, "
                     "modified ratio %.3f; %lld dead, %lld modified)", force ? "forced, " : "",
                     t->dead_ratio, t->mod_ratio, (long long) t->dead, (long long) mod);
    }
    PQclear(r);
    *out = a;
    *n = rows;
    return 200;
}

/* vacuum_count and n_dead_tup of one table now. 0, or -1 when it cannot be read. */
static int s_counts(PGconn *pg, const char *relid, int64_t *vc, int64_t *dead)
{
    /* stats_fetch_consistency caches the statistics for a transaction; each statement here
     * is its own transaction, and clearing the snapshot makes that explicit */
    PQclear(PQexec(pg, "SELECT pg_stat_clear_snapshot()"));
    const char *p[1] = { relid };
    PGresult *r = PQexecParams(pg, "SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables "
                               "WHERE relid = $1::oid", 1, NULL, p, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        *vc = atoll(PQgetvalue(r, 0, 0));
        *dead = atoll(PQgetvalue(r, 0, 1));
        rc = 0;
    }
    PQclear(r);
    return rc;
}

static void s_publish(dbopt_maint_t *m, const s_action_t *a, const char *trigger)
{
    const Quaver__V1__MaintenanceAction *x = &a->msg;
    json_t *j = json_pack("{s:s,s:s,s:s,s:b,s:f,s:f,s:I,s:I,s:I,s:I,s:f,s:s}",
                          "table", a->table, "trigger", trigger, "reason", a->reason,
                          "done", x->done, "dead_ratio", a->dead_ratio,
                          "modified_ratio", a->mod_ratio,
                          "vacuum_count_before", (json_int_t) x->vacuum_count_before,
                          "vacuum_count_after", (json_int_t) x->vacuum_count_after,
                          "dead_tuples_before", (json_int_t) x->dead_tuples_before,
                          "dead_tuples_after", (json_int_t) x->dead_tuples_after,
                          "ms", x->ms, "error", a->error);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text && m->bus)
        (void) qv_bus_publish_json(m->bus, "db.maintenance", text);
    free(text);
    json_decref(j);
}

/* VACUUM (ANALYZE) of one table, then the check that vacuum_count rose. */
static void s_vacuum(dbopt_maint_t *m, PGconn *pg, s_action_t *a, const char *trigger)
{
    Quaver__V1__MaintenanceAction *x = &a->msg;
    x->vacuum_count_before = a->vacuum_count;
    x->dead_tuples_before = a->dead;
    char *qs = PQescapeIdentifier(pg, a->schema, strlen(a->schema));
    char *qn = PQescapeIdentifier(pg, a->name, strlen(a->name));
    if (!qs || !qn) {
        snprintf(a->error, sizeof a->error, "cannot quote the table name");
    } else {
        size_t len = strlen(qs) + strlen(qn) + 32;
        char *sql = malloc(len);
        if (!sql) {
            snprintf(a->error, sizeof a->error, "out of memory");
        } else {
            snprintf(sql, len, "VACUUM (ANALYZE) %s.%s", qs, qn);
            int64_t t0 = qv_mono_us();
            PGresult *r = PQexec(pg, sql);
            x->ms = (double) (qv_mono_us() - t0) / 1000.0;
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                char line[200];
                dbopt_health_first_line(line, sizeof line, PQresultErrorMessage(r));
                if (state && strcmp(state, "55P03") == 0)
                    snprintf(a->error, sizeof a->error, "lock_timeout (%d ms): the table is "
                             "locked by another session, skipped: %s", m->lock_timeout_ms, line);
                else
                    snprintf(a->error, sizeof a->error, "%s", line[0] ? line : "VACUUM failed");
            }
            PQclear(r);
            free(sql);
        }
    }
    PQfreemem(qs);
    PQfreemem(qn);
    int64_t vc = a->vacuum_count, dead = a->dead;
    int reads = 0;
    if (!a->error[0]) {
        int64_t end = qv_mono_ms() + S_VERIFY_MS;
        for (;;) {
            reads++;
            if (s_counts(pg, a->relid, &vc, &dead) == 0 && vc > a->vacuum_count)
                break;
            if (qv_mono_ms() >= end) {
                snprintf(a->error, sizeof a->error, "VACUUM returned but vacuum_count stayed at "
                         "%lld for %d ms", (long long) vc, S_VERIFY_MS);
                break;
            }
            usleep(50 * 1000);
        }
    }
    x->vacuum_count_after = vc;
    x->dead_tuples_after = dead;
    x->done = !a->error[0];
    if (x->done)
        qv_info("maintenance (%s): VACUUM (ANALYZE) %s in %.0f ms (%s): vacuum_count %lld -> "
                "%lld (seen on read %d), dead tuples %lld -> %lld", trigger, a->table, x->ms,
                a->reason, (long long) x->vacuum_count_before, (long long) vc, reads,
                (long long) x->dead_tuples_before, (long long) dead);
    else
        qv_warn("maintenance (%s): %s not vacuumed: %s", trigger, a->table, a->error);
    s_publish(m, a, trigger);
}

/* Makes pg's statement cancellable by dbopt_maint_destroy (pg NULL: no longer). false when
 * shutting down: the caller then starts nothing. One lock for both, so that destroy either
 * sees the handle or stops the VACUUM from starting. */
static bool s_set_cancel(dbopt_maint_t *m, PGconn *pg)
{
    PGcancel *c = pg ? PQgetCancel(pg) : NULL;
    pthread_mutex_lock(&m->mu);
    bool stopping = m->stopping;
    if (m->cancel)
        PQfreeCancel(m->cancel);
    m->cancel = stopping ? NULL : c;
    pthread_mutex_unlock(&m->mu);
    if (stopping && c)
        PQfreeCancel(c);
    return !stopping;
}

/* Fills the protobuf side of each action (dry run: just the candidate). */
static void s_fill(s_action_t *a)
{
    Quaver__V1__MaintenanceAction *x = &a->msg;
    x->table = a->table;
    x->reason = a->reason;
    x->dead_ratio = a->dead_ratio;
    x->modified_ratio = a->mod_ratio;
    x->error = a->error;
}

/* A whole pass: candidates, then each due one vacuumed in turn. Returns 200 or an error
 * status with err set. *out and *n as in s_candidates. */
static int s_pass(dbopt_maint_t *m, const char *table, bool force, bool dry_run,
                  const char *trigger, s_action_t **out, int *n, char *err, size_t len)
{
    char cerr[400];
    PGconn *pg = s_connect(m, cerr, sizeof cerr);
    if (!pg) {
        snprintf(err, len, "PostgreSQL unavailable: %s", cerr);
        return 503;
    }
    int st = s_candidates(m, pg, table, force, out, n, err, len);
    if (st == 200) {
        for (int i = 0; i < *n; i++) {
            s_action_t *a = &(*out)[i];
            quaver__v1__maintenance_action__init(&a->msg);
            if (a->due && !dry_run && s_set_cancel(m, pg)) {
                s_vacuum(m, pg, a, trigger);
                (void) s_set_cancel(m, NULL);
            }
            s_fill(a);
        }
    }
    PQfinish(pg);
    return st;
}

/* ---- the scheduler --------------------------------------------------------------------------- */

static void *s_thread_main(void *arg)
{
    dbopt_maint_t *m = arg;
    s_action_t *acts = NULL;
    int n = 0;
    char err[512];
    int st = s_pass(m, NULL, false, false, "scheduler", &acts, &n, err, sizeof err);
    if (st != 200)
        qv_warn("maintenance pass skipped: %s", err);
    free(acts);
    pthread_mutex_lock(&m->mu);
    m->busy = false;
    m->thread_done = true;
    m->next_due_ms = qv_mono_ms() + (int64_t) m->interval_s * 1000;
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

void dbopt_maint_tick(dbopt_maint_t *m)
{
    if (!m || m->interval_s <= 0)
        return;
    pthread_mutex_lock(&m->mu);
    if (m->thread_live && m->thread_done) {
        pthread_join(m->thread, NULL);     /* it has returned: this does not wait */
        m->thread_live = m->thread_done = false;
    }
    bool start = !m->thread_live && !m->busy && !m->stopping && qv_mono_ms() >= m->next_due_ms;
    if (start && !s_in_window(m)) {
        m->next_due_ms = qv_mono_ms() + 60 * 1000;  /* look again in a minute */
        start = false;
    }
    if (start) {
        m->busy = true;
        if (pthread_create(&m->thread, NULL, s_thread_main, m) == 0)
            m->thread_live = true;
        else {
            m->busy = false;
            m->next_due_ms = qv_mono_ms() + (int64_t) m->interval_s * 1000;
            qv_warn("maintenance: cannot start the pass thread");
        }
    }
    pthread_mutex_unlock(&m->mu);
}

/* ---- the method ------------------------------------------------------------------------------- */

int dbopt_maint_handle(dbopt_maint_t *m, const qv_call_t *call,
                       const Quaver__V1__MaintenanceRequest *req, qv_reply_t *reply)
{
    const char *table = req->table && *req->table ? req->table : NULL;
    if (req->force && !table)
        return qv_reply_error(reply, 400, "force needs a table: name the table to vacuum");
    if (table && strlen(table) > 200)
        return qv_reply_error(reply, 400, "table name longer than 200 bytes");
    if (!req->dry_run && !call->admin)
        return qv_reply_error(reply, 403, "running maintenance needs an administrator "
                              "(dry_run is open to everyone)");
    if (!req->dry_run) {
        pthread_mutex_lock(&m->mu);
        bool busy = m->busy;
        if (!busy)
            m->busy = true;
        pthread_mutex_unlock(&m->mu);
        if (busy)
            return qv_reply_error(reply, 409, "a maintenance pass is running; try again when "
                                  "it ends (db.maintenance on the bus reports each table)");
    }
    s_action_t *acts = NULL;
    int n = 0;
    char err[512];
    int st = s_pass(m, table, req->force, req->dry_run, "rpc", &acts, &n, err, sizeof err);
    if (!req->dry_run) {
        pthread_mutex_lock(&m->mu);
        m->busy = false;
        pthread_mutex_unlock(&m->mu);
    }
    if (st != 200) {
        free(acts);
        return qv_reply_error(reply, st, "%s", err);
    }
    /* without a table: only what is (or was) due; with one: that table, due or not */
    Quaver__V1__MaintenanceAction **list = calloc((size_t) n + 1, sizeof *list);
    if (!list) {
        free(acts);
        return qv_reply_error(reply, 500, "out of memory");
    }
    size_t k = 0;
    for (int i = 0; i < n; i++)
        if (table || acts[i].due)
            list[k++] = &acts[i].msg;
    Quaver__V1__MaintenanceReply out = QUAVER__V1__MAINTENANCE_REPLY__INIT;
    out.dry_run = req->dry_run;
    out.window = m->window;
    out.in_window = s_in_window(m);
    out.dead_ratio_threshold = m->dead_ratio;
    out.modified_ratio_threshold = m->analyze_ratio;
    out.n_actions = k;
    out.actions = list;
    int rc = qv_reply_set(reply, &out.base);
    free(list);
    free(acts);
    if (rc < 0)
        return qv_reply_error(reply, 500, "out of memory");
    return 200;
}

/* ---- selftest ----------------------------------------------------------------------------------- */

int dbopt_maint_selftest(void)
{
    static const struct { const char *s; int ok, start, end, off; } cases[] = {
        { "00:00-24:00", 1, 0, 1440, 0 }, { "off", 1, 0, 0, 1 },
        { "22:00-04:30", 1, 1320, 270, 0 }, { "01:05-01:06", 1, 65, 66, 0 },
        { "24:00-01:00", 0, 0, 0, 0 }, { "10:00-10:00", 0, 0, 0, 0 },
        { "1:00-02:00", 0, 0, 0, 0 }, { "01:00-02:60", 0, 0, 0, 0 },
        { "01:00-25:00", 0, 0, 0, 0 }, { "01:00 02:00", 0, 0, 0, 0 },
        { "", 0, 0, 0, 0 }, { "always", 0, 0, 0, 0 }, { "01:00-02:00x", 0, 0, 0, 0 },
        { "Off", 0, 0, 0, 0 }, { "24:00-24:00", 0, 0, 0, 0 },
    };
    int fails = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int start = -1, end = -1;
        bool off = false;
        char why[160] = "";
        int rc = dbopt_maint_window_parse(cases[i].s, &start, &end, &off, why, sizeof why);
        bool ok = (rc == 0) == (cases[i].ok != 0);
        if (ok && rc == 0)
            ok = off == (cases[i].off != 0)
                 && (off || (start == cases[i].start && end == cases[i].end));
        if (ok && rc != 0)
            ok = why[0] != '\0';
        if (!ok) {
            fprintf(stderr, "window '%s': rc %d start %d end %d off %d (%s)\n", cases[i].s, rc,
                    start, end, off, why);
            fails++;
        }
    }
    char err[256];
    dbopt_maint_opts_t o = { .conninfo = "postgresql:///x", .window = "25:00-01:00",
                             .interval_s = 1 };
    dbopt_maint_t *m = dbopt_maint_new(&o, err, sizeof err);
    if (m || !strstr(err, "maintenance_window") || !strstr(err, "25:00-01:00")) {
        fprintf(stderr, "bad window accepted or not named: %s\n", err);
        fails++;
    }
    dbopt_maint_destroy(&m);
    return fails ? -1 : 0;
}
