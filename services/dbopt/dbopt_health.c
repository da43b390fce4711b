/* dbopt_health: DatabaseHealth, read from PostgreSQL's catalog and statistics views on a
 * connection of its own (see dbopt_health.h for the guarantees).
 *
 * Bloat is an estimate, the simplified pgexperts/ioguide one: expected pages = live rows
 * (n_live_tup) x (tuple header 24 B + the columns' pg_stats.avg_width, rounded up to 8 B, + a
 * 4 B line pointer) / (block size - 24 B page header); for btree indexes an 8 B index-tuple
 * header and 16 B of special space at fillfactor 90 %. The actual pages are the main fork's
 * size now (pg_relation_size), not pg_class.relpages, which only VACUUM/ANALYZE refresh. It
 * ignores null bitmaps, per-column alignment, fillfactor reloptions and TOAST, so it is a rough
 * figure (measured once: 0.335 where pgstattuple found 29 % dead or free) and meaningless
 * below a few pages; without ANALYZE statistics (pg_stats) or for expression, partial and
 * non-btree indexes it reports -1 (unknown). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include "dbopt_health.h"
#include "qv_log.h"
#include "quaver/v1/dbopt_health.pb-c.h"

/* LIMITs of the queries below (text: they are spliced into the constant SQL) */
#define S_MAX_ROWS   "50"   /* tables, indexes, sessions: the worst/largest first */
#define S_MAX_TOP    "20"   /* pg_stat_statements entries */
#define S_MAX_PARTS  12     /* queries in one call */

struct dbopt_health_t {
    char           *conninfo;
    int             connect_timeout_s, statement_timeout_ms;
    double          long_query_s;
    pthread_mutex_t mu;     /* guards pg: one call at a time on the connection */
    PGconn         *pg;
};

static const char *const s_bloat_method =
    "simplified pgexperts estimate: actual pages (pg_relation_size) vs n_live_tup x "
    "pg_stats.avg_width (no null bitmap, alignment, fillfactor or TOAST): a rough figure, "
    "-1 without statistics";

/* ---- connection --------------------------------------------------------------------------- */

void dbopt_health_first_line(char *dst, size_t len, const char *msg)
{
    snprintf(dst, len, "%s", msg ? msg : "");
    dst[strcspn(dst, "\r\n")] = '\0';
}

static void s_quiet(void *arg, const char *message)
{
    (void) arg;
    (void) message;     /* NOTICEs of VACUUM/SET are not news */
}

PGconn *dbopt_health_connect(const char *conninfo, int connect_timeout_s, const char *appname,
                             const char *setup_sql, char *err, size_t len)
{
    char ctimeout[16];
    snprintf(ctimeout, sizeof ctimeout, "%d", connect_timeout_s > 0 ? connect_timeout_s : 10);
    /* expand_dbname: the keys after dbname override what the URL says */
    const char *keys[] = { "dbname", "connect_timeout", "application_name", NULL };
    const char *vals[] = { conninfo, ctimeout, appname, NULL };
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg) {
        snprintf(err, len, "out of memory");
        return NULL;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        dbopt_health_first_line(err, len, PQerrorMessage(pg));
        PQfinish(pg);
        return NULL;
    }
    PQsetNoticeProcessor(pg, s_quiet, NULL);
    const char *steps[] = { "SET TimeZone = 'UTC'", setup_sql };
    for (int i = 0; i < 2; i++) {
        if (!steps[i])
            continue;
        PGresult *r = PQexec(pg, steps[i]);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (!ok) {
            dbopt_health_first_line(err, len, PQerrorMessage(pg));
            PQfinish(pg);
            return NULL;
        }
    }
    return pg;
}

dbopt_health_t *dbopt_health_new(const dbopt_health_opts_t *o)
{
    dbopt_health_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->conninfo = strdup(o->conninfo ? o->conninfo : "");
    h->connect_timeout_s = o->connect_timeout_s;
    h->statement_timeout_ms = o->statement_timeout_ms > 0 ? o->statement_timeout_ms : 5000;
    h->long_query_s = o->long_query_s > 0 ? o->long_query_s : 60;
    pthread_mutex_init(&h->mu, NULL);
    if (!h->conninfo) {
        dbopt_health_destroy(&h);
        return NULL;
    }
    return h;
}

void dbopt_health_destroy(dbopt_health_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dbopt_health_t *h = *self_p;
    if (h->pg)
        PQfinish(h->pg);
    pthread_mutex_destroy(&h->mu);
    free(h->conninfo);
    free(h);
    *self_p = NULL;
}

/* ---- the queries ---------------------------------------------------------------------------
 * Each is one statement on a catalog or statistics view, bounded by statement_timeout. The
 * connection's own backend is left out of the session lists. */

static const char *const s_sql_basics =
    "SELECT current_database(), current_setting('server_version'), d.blks_hit, d.blks_read, "
    "current_setting('max_connections')::int, age(db.datfrozenxid), "
    "current_setting('autovacuum_freeze_max_age')::bigint "
    "FROM pg_stat_database d JOIN pg_database db ON db.oid = d.datid "
    "WHERE d.datname = current_database()";

static const char *const s_sql_states =
    "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
    "GROUP BY 1 ORDER BY 2 DESC, 1";

/* $1: 'long' or 'idle'; $2: the long-query threshold in seconds */
static const char *const s_sql_sessions =
    "SELECT pid, coalesce(application_name, ''), coalesce(state, ''), "
    "extract(epoch FROM now() - CASE WHEN $1 = 'long' THEN query_start ELSE state_change END), "
    "coalesce(extract(epoch FROM now() - xact_start), -1), left(query, 200), "
    "coalesce(wait_event_type || ':' || wait_event, '') "
    "FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND ("
    "  ($1 = 'long' AND state = 'active' AND query_start < now() - make_interval(secs => $2::float8))"
    "  OR ($1 = 'idle' AND state IN ('idle in transaction', 'idle in transaction (aborted)'))) "
    "ORDER BY 4 DESC LIMIT " S_MAX_ROWS;

#define S_AGE(col) "coalesce(extract(epoch FROM now() - s." col "), -1)"
static const char *const s_sql_tables =
    "SELECT s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup, "
    "s.n_dead_tup::float8 / (s.n_live_tup + 1), "
    "s.n_mod_since_analyze::float8 / greatest(c.reltuples, 1), "
    "pg_relation_size(c.oid) / current_setting('block_size')::int, pg_table_size(c.oid), "
    "CASE WHEN w.width IS NOT NULL AND w.n > 0 THEN "
    "  ceil(s.n_live_tup * (ceil((24 + w.width) / 8.0) * 8 + 4) / "
    "       (current_setting('block_size')::int - 24)) END, "
    S_AGE("last_vacuum") ", " S_AGE("last_autovacuum") ", "
    S_AGE("last_analyze") ", " S_AGE("last_autoanalyze") ", "
    "s.vacuum_count, s.autovacuum_count, age(c.relfrozenxid), "
    "current_setting('block_size')::int "
    "FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid "
    "LEFT JOIN LATERAL (SELECT sum(st.avg_width) AS width, count(*) AS n FROM pg_stats st "
    "  WHERE st.schemaname = s.schemaname AND st.tablename = s.relname) w ON true "
    "ORDER BY s.n_dead_tup DESC, c.relpages DESC, 1, 2 LIMIT " S_MAX_ROWS;

static const char *const s_sql_indexes =
    "SELECT s.schemaname, s.relname, s.indexrelname, "
    "pg_relation_size(c.oid) / current_setting('block_size')::int, pg_relation_size(c.oid), "
    "s.idx_scan, "
    "CASE WHEN am.amname = 'btree' AND i.indexprs IS NULL AND i.indpred IS NULL "
    "  AND w.n = i.indnatts THEN "
    "  ceil(t.n_live_tup * (ceil((8 + w.width) / 8.0) * 8 + 4) / "
    "       ((current_setting('block_size')::int - 40) * 0.9)) + 1 END, "
    "current_setting('block_size')::int "
    "FROM pg_stat_user_indexes s JOIN pg_class c ON c.oid = s.indexrelid "
    "JOIN pg_am am ON am.oid = c.relam JOIN pg_index i ON i.indexrelid = s.indexrelid "
    "JOIN pg_stat_user_tables t ON t.relid = s.relid "
    "LEFT JOIN LATERAL (SELECT sum(st.avg_width) AS width, count(*) AS n "
    "  FROM pg_attribute a JOIN pg_stats st ON st.schemaname = s.schemaname "
    "  AND st.tablename = s.relname AND st.attname = a.attname "
    "  WHERE a.attrelid = s.relid AND a.attnum = ANY (i.indkey)) w ON true "
    "ORDER BY c.relpages DESC, 1, 2, 3 LIMIT " S_MAX_ROWS;

static const char *const s_sql_pgss_schema =
    "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
    "WHERE e.extname = 'pg_stat_statements'";

/* %s: the extension's schema, quoted */
static const char *const s_sql_top_fmt =
    "SELECT queryid::text, left(query, 200), calls, total_exec_time, mean_exec_time, rows, "
    "CASE WHEN shared_blks_hit + shared_blks_read > 0 THEN "
    "  shared_blks_hit::float8 / (shared_blks_hit + shared_blks_read) ELSE -1 END "
    "FROM %s.pg_stat_statements "
    "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "ORDER BY total_exec_time DESC LIMIT " S_MAX_TOP;

/* The results of one call; the reply points into them until it is packed. */
typedef struct {
    PGresult *res[S_MAX_PARTS];
    int       n;
    char     *warn[S_MAX_PARTS];
    int       nwarn;
    char      warn_buf[S_MAX_PARTS][320];
} s_call_t;

/* Runs one part; NULL (and a warning naming the part) when it failed. */
static PGresult *s_part(s_call_t *c, PGconn *pg, const char *what, const char *sql,
                        int nparams, const char *const *params)
{
    PGresult *r = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && c->n < S_MAX_PARTS) {
        c->res[c->n++] = r;
        return r;
    }
    if (c->nwarn < S_MAX_PARTS) {
        char line[256];
        dbopt_health_first_line(line, sizeof line, PQresultErrorMessage(r));
        snprintf(c->warn_buf[c->nwarn], sizeof c->warn_buf[0], "%s: %s", what,
                 line[0] ? line : "failed");
        c->warn[c->nwarn] = c->warn_buf[c->nwarn];
        c->nwarn++;
    }
    PQclear(r);
    return NULL;
}

static double s_f(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? -1 : atof(PQgetvalue(r, row, col));
}

static int64_t s_i(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? -1 : atoll(PQgetvalue(r, row, col));
}

/* ok below half of autovacuum_freeze_max_age; warning from half (the forced anti-wraparound
 * autovacuum is getting near); critical past it (autovacuum should have frozen it already and
 * is falling behind; PostgreSQL stops assigning XIDs at about 2^31 - 3 million). */
static const char *s_wrap_level(int64_t age, int64_t freeze_max)
{
    if (freeze_max <= 0 || age < 0)
        return "ok";
    if (age >= freeze_max)
        return "critical";
    return age >= freeze_max / 2 ? "warning" : "ok";
}

static int s_level_rank(const char *l)
{
    return strcmp(l, "critical") == 0 ? 2 : strcmp(l, "warning") == 0 ? 1 : 0;
}

/* The rows of s_sql_sessions into s[] and sp[] (as the other fillers below). */
static void s_sessions(PGresult *r, Quaver__V1__DbSession *s, Quaver__V1__DbSession **sp)
{
    for (int i = 0; r && i < PQntuples(r); i++, s++) {
        quaver__v1__db_session__init(s);
        s->pid = (int32_t) s_i(r, i, 0);
        s->application_name = PQgetvalue(r, i, 1);
        s->state = PQgetvalue(r, i, 2);
        s->age_s = s_f(r, i, 3);
        s->xact_age_s = s_f(r, i, 4);
        s->query = PQgetvalue(r, i, 5);
        s->wait_event = PQgetvalue(r, i, 6);
        sp[i] = s;
    }
}

/* Top statements: the extension must be installed here and loaded by the server. */
static void s_statements(s_call_t *c, PGconn *pg, Quaver__V1__DbHealthReply *h,
                         PGresult **top, char *note, size_t len)
{
    *top = NULL;
    PGresult *ext = s_part(c, pg, "pg_extension", s_sql_pgss_schema, 0, NULL);
    if (!ext) {
        snprintf(note, len, "could not read pg_extension");
        return;
    }
    if (PQntuples(ext) == 0) {
        snprintf(note, len, "pg_stat_statements is not installed in database %s: run CREATE "
                 "EXTENSION pg_stat_statements (it also needs shared_preload_libraries = "
                 "'pg_stat_statements' and a server restart)", h->database);
        return;
    }
    const char *nsp = PQgetvalue(ext, 0, 0);
    char *q = PQescapeIdentifier(pg, nsp, strlen(nsp));
    if (!q) {
        snprintf(note, len, "cannot quote schema %s", nsp);
        return;
    }
    char sql[1024];
    snprintf(sql, sizeof sql, s_sql_top_fmt, q);
    PQfreemem(q);
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || c->n >= S_MAX_PARTS) {
        char line[256];
        dbopt_health_first_line(line, sizeof line, PQresultErrorMessage(r));
        /* typically "pg_stat_statements must be loaded via shared_preload_libraries" */
        snprintf(note, len, "pg_stat_statements is installed but cannot be read: %s", line);
        PQclear(r);
        return;
    }
    c->res[c->n++] = r;
    *top = r;
    h->statements_available = 1;
}

/* Expected pages (the estimate of the queries above; -1 or NULL: unknown) against the pages
 * there are: the share and bytes beyond the estimate. *ratio -1 when unknown. */
static void s_bloat(int64_t pages, double expected, int64_t block_size, double *ratio,
                    int64_t *bytes)
{
    *ratio = -1;
    *bytes = 0;
    if (expected < 0 || pages <= 0)
        return;
    double extra = (double) pages - expected;
    *ratio = extra > 0 ? extra / (double) pages : 0;
    *bytes = extra > 0 ? (int64_t) extra * block_size : 0;
}

/* The rows of s_sql_tables into t[] and tp[]; *level: raised to the worst table's. */
static void s_tables(PGresult *r, Quaver__V1__DbTableHealth *t, Quaver__V1__DbTableHealth **tp,
                     int64_t freeze_max, const char **level)
{
    for (int i = 0; r && i < PQntuples(r); i++, t++) {
        quaver__v1__db_table_health__init(t);
        t->schema = PQgetvalue(r, i, 0);
        t->name = PQgetvalue(r, i, 1);
        t->live_tuples = s_i(r, i, 2);
        t->dead_tuples = s_i(r, i, 3);
        t->dead_ratio = s_f(r, i, 4);
        t->modified_ratio = s_f(r, i, 5);
        t->pages = s_i(r, i, 6);
        t->size_bytes = s_i(r, i, 7);
        s_bloat(t->pages, s_f(r, i, 8), s_i(r, i, 16), &t->bloat_ratio, &t->bloat_bytes);
        t->last_vacuum_age_s = s_f(r, i, 9);
        t->last_autovacuum_age_s = s_f(r, i, 10);
        t->last_analyze_age_s = s_f(r, i, 11);
        t->last_autoanalyze_age_s = s_f(r, i, 12);
        t->vacuum_count = s_i(r, i, 13);
        t->autovacuum_count = s_i(r, i, 14);
        t->xid_age = s_i(r, i, 15);
        t->wraparound_level = (char *) s_wrap_level(t->xid_age, freeze_max);
        if (s_level_rank(t->wraparound_level) > s_level_rank(*level))
            *level = t->wraparound_level;
        tp[i] = t;
    }
}

static void s_indexes(PGresult *r, Quaver__V1__DbIndexHealth *x, Quaver__V1__DbIndexHealth **xp)
{
    for (int i = 0; r && i < PQntuples(r); i++, x++) {
        quaver__v1__db_index_health__init(x);
        x->schema = PQgetvalue(r, i, 0);
        x->table = PQgetvalue(r, i, 1);
        x->name = PQgetvalue(r, i, 2);
        x->pages = s_i(r, i, 3);
        x->size_bytes = s_i(r, i, 4);
        x->scans = s_i(r, i, 5);
        s_bloat(x->pages, s_f(r, i, 6), s_i(r, i, 7), &x->bloat_ratio, &x->bloat_bytes);
        xp[i] = x;
    }
}

static void s_top(PGresult *r, Quaver__V1__DbTopQuery *q, Quaver__V1__DbTopQuery **qp)
{
    for (int i = 0; r && i < PQntuples(r); i++, q++) {
        quaver__v1__db_top_query__init(q);
        q->queryid = PQgetvalue(r, i, 0);
        q->query = PQgetvalue(r, i, 1);
        q->calls = s_i(r, i, 2);
        q->total_ms = s_f(r, i, 3);
        q->mean_ms = s_f(r, i, 4);
        q->rows = s_i(r, i, 5);
        q->hit_ratio = s_f(r, i, 6);
        qp[i] = q;
    }
}

static void s_connections(PGresult *r, Quaver__V1__DbConnectionCount *c,
                          Quaver__V1__DbConnectionCount **cp)
{
    for (int i = 0; r && i < PQntuples(r); i++, c++) {
        quaver__v1__db_connection_count__init(c);
        c->state = PQgetvalue(r, i, 0);
        c->count = s_i(r, i, 1);
        cp[i] = c;
    }
}

/* The connection, opened when there is none or it was lost. Called with mu held. NULL with
 * the reason in err. */
static PGconn *s_conn_locked(dbopt_health_t *self, char *err, size_t len)
{
    if (self->pg && PQstatus(self->pg) != CONNECTION_OK) {
        PQfinish(self->pg);
        self->pg = NULL;
    }
    if (!self->pg) {
        char setup[64];
        snprintf(setup, sizeof setup, "SET statement_timeout = %d", self->statement_timeout_ms);
        self->pg = dbopt_health_connect(self->conninfo, self->connect_timeout_s,
                                        "quaver-dbopt-health", setup, err, len);
    }
    return self->pg;
}

static int s_rows(PGresult *r)
{
    return r ? PQntuples(r) : 0;
}

int dbopt_health_handle(dbopt_health_t *self, const qv_call_t *call, qv_reply_t *reply)
{
    (void) call;
    pthread_mutex_lock(&self->mu);
    char err[400] = "";
    PGconn *pg = s_conn_locked(self, err, sizeof err);
    if (!pg) {
        pthread_mutex_unlock(&self->mu);
        return qv_reply_error(reply, 503, "PostgreSQL unavailable: %s", err);
    }
    s_call_t c = { .n = 0 };
    Quaver__V1__DbHealthReply h = QUAVER__V1__DB_HEALTH_REPLY__INIT;
    PGresult *basics = s_part(&c, pg, "pg_stat_database", s_sql_basics, 0, NULL);
    if (!basics || PQntuples(basics) != 1) {
        /* the first query failing means the connection is no good: reconnect next time */
        char why[320];
        snprintf(why, sizeof why, "%s", c.nwarn ? c.warn[0] : "pg_stat_database: no row");
        for (int i = 0; i < c.n; i++)
            PQclear(c.res[i]);
        PQfinish(self->pg);
        self->pg = NULL;
        pthread_mutex_unlock(&self->mu);
        return qv_reply_error(reply, 503, "PostgreSQL unavailable: %s", why);
    }
    h.database = PQgetvalue(basics, 0, 0);
    h.server_version = PQgetvalue(basics, 0, 1);
    h.blks_hit = s_i(basics, 0, 2);
    h.blks_read = s_i(basics, 0, 3);
    h.cache_hit_ratio = h.blks_hit + h.blks_read > 0
        ? (double) h.blks_hit / (double) (h.blks_hit + h.blks_read) : -1;
    h.max_connections = s_i(basics, 0, 4);
    h.datfrozenxid_age = s_i(basics, 0, 5);
    h.autovacuum_freeze_max_age = s_i(basics, 0, 6);
    const char *level = s_wrap_level(h.datfrozenxid_age, h.autovacuum_freeze_max_age);
    h.long_query_s = self->long_query_s;
    h.bloat_method = (char *) s_bloat_method;

    PGresult *states = s_part(&c, pg, "connections", s_sql_states, 0, NULL);
    char thr[32];
    snprintf(thr, sizeof thr, "%.3f", self->long_query_s);
    const char *plong[] = { "long", thr }, *pidle[] = { "idle", thr };
    PGresult *lng = s_part(&c, pg, "long-running", s_sql_sessions, 2, plong);
    PGresult *idle = s_part(&c, pg, "idle in transaction", s_sql_sessions, 2, pidle);
    PGresult *tabs = s_part(&c, pg, "tables", s_sql_tables, 0, NULL);
    PGresult *idxs = s_part(&c, pg, "indexes", s_sql_indexes, 0, NULL);
    PGresult *top;
    char note[512] = "";
    s_statements(&c, pg, &h, &top, note, sizeof note);
    h.statements_note = note;

    int nst = s_rows(states), nl = s_rows(lng), ni = s_rows(idle), nt = s_rows(tabs);
    int nx = s_rows(idxs), nq = s_rows(top);
    Quaver__V1__DbConnectionCount *cc = calloc((size_t) nst + 1, sizeof *cc);
    Quaver__V1__DbConnectionCount **ccp = calloc((size_t) nst + 1, sizeof *ccp);
    Quaver__V1__DbSession *ss = calloc((size_t) (nl + ni) + 1, sizeof *ss);
    Quaver__V1__DbSession **ssp = calloc((size_t) (nl + ni) + 1, sizeof *ssp);
    Quaver__V1__DbTableHealth *tt = calloc((size_t) nt + 1, sizeof *tt);
    Quaver__V1__DbTableHealth **ttp = calloc((size_t) nt + 1, sizeof *ttp);
    Quaver__V1__DbIndexHealth *xx = calloc((size_t) nx + 1, sizeof *xx);
    Quaver__V1__DbIndexHealth **xxp = calloc((size_t) nx + 1, sizeof *xxp);
    Quaver__V1__DbTopQuery *qq = calloc((size_t) nq + 1, sizeof *qq);
    Quaver__V1__DbTopQuery **qqp = calloc((size_t) nq + 1, sizeof *qqp);
    int rc = -1;
    if (cc && ccp && ss && ssp && tt && ttp && xx && xxp && qq && qqp) {
        s_connections(states, cc, ccp);
        h.n_connections = (size_t) nst;
        h.connections = ccp;
        s_sessions(lng, ss, ssp);
        s_sessions(idle, ss + nl, ssp + nl);
        h.n_long_running = (size_t) nl;
        h.long_running = ssp;
        h.n_idle_in_transaction = (size_t) ni;
        h.idle_in_transaction = ssp + nl;
        s_tables(tabs, tt, ttp, h.autovacuum_freeze_max_age, &level);
        h.n_tables = (size_t) nt;
        h.tables = ttp;
        s_indexes(idxs, xx, xxp);
        h.n_indexes = (size_t) nx;
        h.indexes = xxp;
        s_top(top, qq, qqp);
        h.n_top_queries = (size_t) nq;
        h.top_queries = qqp;
        h.wraparound_level = (char *) level;
        h.n_warnings = (size_t) c.nwarn;
        h.warnings = c.warn;
        rc = qv_reply_set(reply, &h.base);
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        PQfinish(self->pg);
        self->pg = NULL;
    }
    pthread_mutex_unlock(&self->mu);
    for (int i = 0; i < c.n; i++)
        PQclear(c.res[i]);
    free(cc);
    free(ccp);
    free(ss);
    free(ssp);
    free(tt);
    free(ttp);
    free(xx);
    free(xxp);
    free(qq);
    free(qqp);
    if (rc < 0)
        return qv_reply_error(reply, 500, "out of memory building the reply");
    return 200;
}
