/* dbopt_pool: the connection pool and the one place statements are executed (guarantees in
 * dbopt_pool.h). Locking: one mutex guards the slots, counters and per-statement stats; no
 * libpq call that talks to the server runs under it, so a slow connect or query never stalls
 * the other workers. A slot marked busy belongs to exactly one thread. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <poll.h>
#include "dbopt_pool.h"
#include "dbopt_migrate.h"
#include "qv_log.h"
#include "qv_clock.h"

#define S_BACKOFF_MIN_MS 200
#define S_BACKOFF_MAX_MS 5000

typedef struct {
    PGconn *pg;      /* NULL: not open */
    bool    busy;    /* handed to a thread */
    int64_t opened_ms, idle_since_ms;   /* mono; for max lifetime and idle recycling */
} s_slot_t;

typedef struct {
    uint64_t     calls, errors, total_us;
    qv_metric_t *duration, *errors_total;
} s_stmt_t;

/* A thread waiting for a slot, linked from the pool while it waits (on its own stack), so
 * that maxwait can be read: PgBouncer's "longest current wait". */
typedef struct s_waiter_t {
    int64_t            since_us;
    struct s_waiter_t *prev, *next;
} s_waiter_t;

/* PgBouncer-style counters; a copy is taken at each stats period's start. */
typedef struct {
    uint64_t queries, query_us, acquires, wait_us;
} s_totals_t;

struct dbopt_pool_t {
    char   *conninfo, *migrations_dir;
    int     max, connect_timeout_s, statement_timeout_ms;
    int64_t acquire_timeout_ms;

    pthread_mutex_t mu;
    pthread_cond_t  cv;            /* a slot was released */
    s_slot_t       *slots;
    int             waiting;
    bool            migrated;      /* migrations ran once in this process */
    bool            up;
    int64_t         retry_at_ms;   /* mono; no new connection attempt before this */
    int             backoff_ms;
    uint64_t        opened, connect_failures;
    char            server_version[32];
    char            last_error[256];
    s_stmt_t       *stmts;         /* one per catalog entry */
    size_t          nstmts;
    int64_t         lifetime_ms, idle_ms, period_ms;   /* 0 = unlimited / never */
    s_waiter_t     *waiters;       /* newest first */
    s_totals_t      totals, period_start;
    int64_t         period_start_ms;
    double          avg_query_count, avg_query_time_us, avg_wait_time_us;
    uint64_t        recycled;
    dbopt_obs_t    *obs;

    qv_metric_t *g_active, *g_idle, *g_waiting, *c_opened;
    /* PgBouncer names */
    qv_metric_t *g_cl_active, *g_cl_waiting, *g_sv_active, *g_sv_idle, *g_maxwait;
    qv_metric_t *g_avg_xact, *g_avg_query, *g_avg_query_time, *g_avg_wait_time;
    qv_metric_t *c_xact, *c_query, *c_recycled;
};

/* ---- small helpers -------------------------------------------------------------------- */

static void s_trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
}

/* libpq messages run over several lines ("...failed: Connection refused\n\tIs the server
 * running..."); replies and log lines carry the first, which says what happened. */
static void s_first_line(char *dst, size_t len, const char *msg)
{
    if (!msg)
        msg = "";
    size_t n = strcspn(msg, "\n");
    if (n >= len)
        n = len - 1;
    memcpy(dst, msg, n);
    dst[n] = '\0';
}

static void s_seterr(dbopt_error_t *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_seterr(dbopt_error_t *err, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof err->text, fmt, ap);
    va_end(ap);
    s_trim(err->text);
    err->status = status;
}

static void s_set(qv_metric_t *m, double v)
{
    if (m)
        qv_metric_set(m, v);
}

static int64_t s_maxwait_us_locked(dbopt_pool_t *p)
{
    int64_t oldest = 0;
    for (s_waiter_t *w = p->waiters; w; w = w->next)
        if (!oldest || w->since_us < oldest)
            oldest = w->since_us;
    return oldest ? qv_mono_us() - oldest : 0;
}

static void s_gauges_locked(dbopt_pool_t *p)
{
    int active = 0, idle = 0;
    for (int i = 0; i < p->max; i++) {
        if (p->slots[i].busy)
            active++;
        else if (p->slots[i].pg)
            idle++;
    }
    s_set(p->g_active, active);
    s_set(p->g_idle, idle);
    s_set(p->g_waiting, p->waiting);
    /* one request holds one connection: clients and servers are the same slots */
    s_set(p->g_cl_active, active);
    s_set(p->g_sv_active, active);
    s_set(p->g_sv_idle, idle);
    s_set(p->g_cl_waiting, p->waiting);
}

/* ---- life ------------------------------------------------------------------------------ */

dbopt_pool_t *dbopt_pool_new(const dbopt_pool_opts_t *o)
{
    if (!o || !o->conninfo || o->max < 1)
        return NULL;
    dbopt_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->conninfo = strdup(o->conninfo);
    p->migrations_dir = o->migrations_dir ? strdup(o->migrations_dir) : NULL;
    p->max = o->max;
    p->acquire_timeout_ms = (int64_t) (o->acquire_timeout_s * 1000.0);
    p->connect_timeout_s = o->connect_timeout_s;
    p->statement_timeout_ms = o->statement_timeout_ms;
    p->slots = calloc((size_t) o->max, sizeof *p->slots);
    p->nstmts = dbopt_catalog_count();
    p->stmts = calloc(p->nstmts, sizeof *p->stmts);
    p->backoff_ms = S_BACKOFF_MIN_MS;
    p->lifetime_ms = (int64_t) o->max_lifetime_s * 1000;
    p->idle_ms = (int64_t) o->idle_timeout_s * 1000;
    p->period_ms = (int64_t) (o->stats_period_s > 0 ? o->stats_period_s : 10) * 1000;
    p->period_start_ms = qv_mono_ms();
    p->obs = dbopt_obs_new(&o->observe);
    if (!p->conninfo || (o->migrations_dir && !p->migrations_dir) || !p->slots || !p->stmts
        || !p->obs) {
        dbopt_pool_destroy(&p);
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    /* waits are measured on the monotonic clock: a wall-clock step must not shorten or
     * stretch db_pool_timeout */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);

    if (o->metrics) {
        p->g_active = qv_metrics_gauge(o->metrics, "quaver_db_pool_connections",
                                       "PostgreSQL connections by state", "state=active");
        p->g_idle = qv_metrics_gauge(o->metrics, "quaver_db_pool_connections",
                                     "PostgreSQL connections by state", "state=idle");
        p->g_waiting = qv_metrics_gauge(o->metrics, "quaver_db_pool_waiting",
                                        "requests waiting for a connection", NULL);
        p->c_opened = qv_metrics_counter(o->metrics, "quaver_db_connections_opened_total",
                                         "PostgreSQL connections opened (lazily, or to replace "
                                         "a lost one)", NULL);
        /* PgBouncer's SHOW POOLS / SHOW STATS, under their names */
        qv_metrics_t *m = o->metrics;
        p->g_cl_active = qv_metrics_gauge(m, "quaver_db_pool_cl_active",
            "requests holding a connection (PgBouncer cl_active)", NULL);
        p->g_cl_waiting = qv_metrics_gauge(m, "quaver_db_pool_cl_waiting",
            "requests waiting for a connection (PgBouncer cl_waiting)", NULL);
        p->g_sv_active = qv_metrics_gauge(m, "quaver_db_pool_sv_active",
            "connections running a statement (PgBouncer sv_active)", NULL);
        p->g_sv_idle = qv_metrics_gauge(m, "quaver_db_pool_sv_idle",
            "open idle connections (PgBouncer sv_idle)", NULL);
        p->g_maxwait = qv_metrics_gauge(m, "quaver_db_pool_maxwait_seconds",
            "longest current wait for a connection (PgBouncer maxwait)", NULL);
        /* promtool refuses a gauge named *_count, hence per_second for avg_*_count */
        p->g_avg_xact = qv_metrics_gauge(m, "quaver_db_pool_avg_xact_per_second",
            "transactions per second over the last db_stats_period_s (avg_xact_count)", NULL);
        p->g_avg_query = qv_metrics_gauge(m, "quaver_db_pool_avg_query_per_second",
            "queries per second over the last db_stats_period_s (avg_query_count)", NULL);
        p->g_avg_query_time = qv_metrics_gauge(m, "quaver_db_pool_avg_query_time_seconds",
            "mean query time over the last db_stats_period_s", NULL);
        p->g_avg_wait_time = qv_metrics_gauge(m, "quaver_db_pool_avg_wait_time_seconds",
            "mean wait for a connection over the last db_stats_period_s", NULL);
        p->c_xact = qv_metrics_counter(m, "quaver_db_pool_xact_total",
            "transactions run (PgBouncer total_xact_count)", NULL);
        p->c_query = qv_metrics_counter(m, "quaver_db_pool_query_total",
            "queries run (PgBouncer total_query_count)", NULL);
        p->c_recycled = qv_metrics_counter(m, "quaver_db_pool_recycled_total",
            "connections closed for max lifetime or idle timeout", NULL);
        for (size_t i = 0; i < p->nstmts; i++) {
            char labels[96];
            snprintf(labels, sizeof labels, "name=%s", dbopt_catalog[i].name);
            p->stmts[i].duration = qv_metrics_histogram(o->metrics,
                "quaver_db_query_duration_seconds", "catalog statement latency", labels,
                NULL, 0);
            p->stmts[i].errors_total = qv_metrics_counter(o->metrics,
                "quaver_db_query_errors_total", "catalog statements that failed", labels);
        }
    }
    return p;
}

void dbopt_pool_destroy(dbopt_pool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dbopt_pool_t *p = *self_p;
    if (p->slots) {
        for (int i = 0; i < p->max; i++)
            if (p->slots[i].pg)
                PQfinish(p->slots[i].pg);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
    }
    dbopt_obs_destroy(&p->obs);
    free(p->slots);
    free(p->stmts);
    free(p->conninfo);
    free(p->migrations_dir);
    free(p);
    *self_p = NULL;
}

/* ---- connections ----------------------------------------------------------------------- */

static void s_connect_failed(dbopt_pool_t *p, const char *why)
{
    pthread_mutex_lock(&p->mu);
    bool was_up = p->up;
    p->up = false;
    p->connect_failures++;
    p->retry_at_ms = qv_mono_ms() + p->backoff_ms;
    p->backoff_ms = p->backoff_ms * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS : p->backoff_ms * 2;
    snprintf(p->last_error, sizeof p->last_error, "%s", why);
    s_trim(p->last_error);
    char line[sizeof p->last_error];    /* other threads write last_error once we unlock */
    memcpy(line, p->last_error, sizeof line);
    pthread_mutex_unlock(&p->mu);
    /* one line when PostgreSQL goes away, then quiet at debug while retrying */
    qv_log(was_up ? QV_LOG_WARN : QV_LOG_DEBUG, NULL, "PostgreSQL unavailable: %s", line);
}

/* Runs a fixed setup command; 0 or -1 with err. */
static int s_setup(PGconn *pg, const char *sql, char *err, size_t len)
{
    PGresult *r = PQexec(pg, sql);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc < 0) {
        char msg[256];
        s_first_line(msg, sizeof msg, PQerrorMessage(pg));
        snprintf(err, len, "%s: %s", sql, msg);
    }
    PQclear(r);
    return rc;
}

/* Server notices (and the FATAL a terminated backend sends to an idle connection) go to
 * our log as one line instead of libpq's raw stderr. */
static void s_notice(void *arg, const char *message)
{
    char line[512];
    s_first_line(line, sizeof line, message);
    qv_info("PostgreSQL: %s", line);
}

/* Opens a connection ready for catalog statements, or NULL with err->status 503. Called
 * without the lock, by the thread that holds the slot. */
static PGconn *s_open(dbopt_pool_t *p, dbopt_error_t *err)
{
    pthread_mutex_lock(&p->mu);
    int64_t wait = p->retry_at_ms - qv_mono_ms();
    bool migrated = p->migrated;
    char last[256];
    snprintf(last, sizeof last, "%s", p->last_error);
    pthread_mutex_unlock(&p->mu);
    if (wait > 0) {
        s_seterr(err, 503, "PostgreSQL unavailable: %s", last);
        return NULL;
    }
    char ctimeout[16];
    snprintf(ctimeout, sizeof ctimeout, "%d", p->connect_timeout_s);
    /* expand_dbname: the URL or key=value string is expanded in place of dbname, and the
     * keys after it override what it says, so db_connect_timeout always applies. */
    const char *keys[] = { "dbname", "connect_timeout", "fallback_application_name", NULL };
    const char *vals[] = { p->conninfo, ctimeout, "quaver-dbopt", NULL };
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    char why[512] = "";
    bool refused = false;   /* could not connect at all: back off */
    if (!pg) {
        snprintf(why, sizeof why, "out of memory");
        refused = true;
    } else if (PQstatus(pg) != CONNECTION_OK) {
        s_first_line(why, sizeof why, PQerrorMessage(pg));
        refused = true;
    } else
        PQsetNoticeProcessor(pg, s_notice, NULL);
    if (!why[0] && !migrated && p->migrations_dir) {
        char merr[400];
        if (dbopt_migrate_run(pg, p->migrations_dir, merr, sizeof merr) < 0) {
            snprintf(why, sizeof why, "schema migration failed: %s", merr);
            qv_error("%s", why);
            refused = true;     /* retrying at once would fail the same way */
        } else {
            pthread_mutex_lock(&p->mu);
            p->migrated = true;
            pthread_mutex_unlock(&p->mu);
        }
    }
    if (!why[0] && p->statement_timeout_ms > 0) {
        char sql[64];
        snprintf(sql, sizeof sql, "SET statement_timeout = %d", p->statement_timeout_ms);
        (void) s_setup(pg, sql, why, sizeof why);
    }
    /* timestamps come back as text: one zone for every replica, whatever the server's */
    if (!why[0])
        (void) s_setup(pg, "SET TimeZone = 'UTC'", why, sizeof why);
    for (size_t i = 0; !why[0] && i < p->nstmts; i++) {
        const dbopt_stmt_t *st = &dbopt_catalog[i];
        PGresult *r = PQprepare(pg, st->name, st->sql, st->nparams, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            char msg[400];
            s_first_line(msg, sizeof msg, PQerrorMessage(pg));
            snprintf(why, sizeof why, "PREPARE %s: %s", st->name, msg);
            /* a catalog statement the schema rejects is our bug, not an outage: say so, and
             * back off rather than fail the same way on every request */
            if (PQstatus(pg) == CONNECTION_OK
                && !dbopt_sqlstate_conn_lost(PQresultErrorField(r, PG_DIAG_SQLSTATE))) {
                qv_error("%s", why);
                refused = true;
            }
        }
        PQclear(r);
    }
    if (why[0]) {
        if (pg)
            PQfinish(pg);
        /* A connection lost while being set up (terminated, server restarting) is retried
         * by the next request at once; only a refused one starts the back-off. */
        if (refused)
            s_connect_failed(p, why);
        else
            qv_warn("PostgreSQL connection lost while opening: %s", why);
        s_seterr(err, 503, "PostgreSQL unavailable: %s", why);
        return NULL;
    }
    pthread_mutex_lock(&p->mu);
    bool was_up = p->up;
    p->up = true;
    p->retry_at_ms = 0;
    p->backoff_ms = S_BACKOFF_MIN_MS;
    const char *ver = PQparameterStatus(pg, "server_version");
    snprintf(p->server_version, sizeof p->server_version, "%s", ver ? ver : "?");
    p->opened++;
    if (p->c_opened)
        qv_metric_add(p->c_opened, 1);
    pthread_mutex_unlock(&p->mu);
    if (!was_up)
        qv_info("PostgreSQL %s connected", ver ? ver : "?");
    return pg;
}

/* Takes a slot: an idle open one, else a closed one to open. Returns its index, or -1 with
 * err set (503 pool timeout, 504 deadline). */
static int s_acquire(dbopt_pool_t *p, int64_t deadline_ms, int64_t limit_ms, dbopt_error_t *err)
{
    int64_t now = qv_mono_ms();
    int64_t until = now + limit_ms;
    bool deadline_first = false;
    if (deadline_ms > 0) {
        int64_t left = deadline_ms - qv_wall_ms();
        if (left < limit_ms) {
            until = now + (left > 0 ? left : 0);
            deadline_first = true;
        }
    }
    struct timespec ts = { .tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000L };
    int64_t t0_us = qv_mono_us();
    s_waiter_t me = { .since_us = t0_us };
    pthread_mutex_lock(&p->mu);
    int got = -1;
    for (;;) {
        for (int i = 0; i < p->max && got < 0; i++)
            if (!p->slots[i].busy && p->slots[i].pg)
                got = i;
        for (int i = 0; i < p->max && got < 0; i++)
            if (!p->slots[i].busy)
                got = i;
        if (got >= 0)
            break;
        if (qv_mono_ms() >= until)
            break;
        p->waiting++;
        me.next = p->waiters;
        if (p->waiters)
            p->waiters->prev = &me;
        p->waiters = &me;
        s_gauges_locked(p);
        int rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
        p->waiting--;
        if (me.prev)
            me.prev->next = me.next;
        else
            p->waiters = me.next;
        if (me.next)
            me.next->prev = me.prev;
        me.prev = me.next = NULL;
        if (rc == ETIMEDOUT) {
            /* one last look: a release may have raced the timeout */
            for (int i = 0; i < p->max && got < 0; i++)
                if (!p->slots[i].busy)
                    got = i;
            break;
        }
    }
    if (got >= 0)
        p->slots[got].busy = true;
    p->totals.acquires++;
    p->totals.wait_us += (uint64_t) (qv_mono_us() - t0_us);
    s_gauges_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (got < 0) {
        if (deadline_first)
            s_seterr(err, 504, "deadline passed waiting for a database connection");
        else
            s_seterr(err, 503, "no database connection free within %.3g s (db_pool_max %d)",
                     (double) limit_ms / 1000.0, p->max);
    }
    return got;
}

static bool s_expired(const dbopt_pool_t *p, const s_slot_t *s, int64_t now)
{
    return p->lifetime_ms > 0 && now - s->opened_ms >= p->lifetime_ms;
}

static void s_recycled_locked(dbopt_pool_t *p)
{
    p->recycled++;
    if (p->c_recycled)
        qv_metric_add(p->c_recycled, 1);
}

/* Gives the slot back. A connection past its lifetime is closed here, between statements. */
static void s_release(dbopt_pool_t *p, int slot, PGconn *pg)
{
    int64_t now = qv_mono_ms();
    PGconn *old = NULL;
    pthread_mutex_lock(&p->mu);
    s_slot_t *s = &p->slots[slot];
    if (pg && s_expired(p, s, now)) {
        old = pg;
        pg = NULL;
        s_recycled_locked(p);
    }
    s->pg = pg;
    s->busy = false;
    s->idle_since_ms = now;
    s_gauges_locked(p);
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (old)
        PQfinish(old);
}

/* After a lost connection: the idle ones almost always died with it (server restart), and
 * finding that out one request at a time would fail one request each. Closing them costs a
 * reconnect when only one backend was terminated, which is cheap. One at a time, so that
 * PQfinish (which writes to the socket) runs outside the lock. */
static void s_close_idle(dbopt_pool_t *p)
{
    for (;;) {
        PGconn *pg = NULL;
        pthread_mutex_lock(&p->mu);
        for (int i = 0; i < p->max && !pg; i++)
            if (!p->slots[i].busy && p->slots[i].pg) {
                pg = p->slots[i].pg;
                p->slots[i].pg = NULL;
            }
        s_gauges_locked(p);
        pthread_mutex_unlock(&p->mu);
        if (!pg)
            return;
        PQfinish(pg);
    }
}

/* The connection of a slot, opened or checked. NULL with err set when it cannot be had. */
static PGconn *s_ready(dbopt_pool_t *p, int slot, dbopt_error_t *err)
{
    /* The slot is busy, so its pg is ours: nobody else reads or writes it (every reader
     * tests busy first). */
    PGconn *pg = p->slots[slot].pg;
    if (pg) {
        /* An idle connection whose server went away has EOF or a FATAL message waiting:
         * reading it now costs no round trip and spares a failed statement. */
        bool dead = PQstatus(pg) != CONNECTION_OK || PQtransactionStatus(pg) != PQTRANS_IDLE;
        /* a healthy idle connection has nothing to read; a terminated one has the FATAL
         * message and then EOF, which takes two reads to see */
        for (int i = 0; i < 3 && !dead; i++) {
            struct pollfd pfd = { .fd = PQsocket(pg), .events = POLLIN };
            if (poll(&pfd, 1, 0) <= 0)
                break;
            dead = PQconsumeInput(pg) == 0 || PQstatus(pg) != CONNECTION_OK;
        }
        if (dead) {
            PQfinish(pg);
            p->slots[slot].pg = NULL;
            s_close_idle(p);
            pg = NULL;
        } else if (s_expired(p, &p->slots[slot], qv_mono_ms())) {
            /* past db_conn_max_lifetime_s while idle: replace it before it runs anything */
            PQfinish(pg);
            p->slots[slot].pg = NULL;
            pg = NULL;
            pthread_mutex_lock(&p->mu);
            s_recycled_locked(p);
            pthread_mutex_unlock(&p->mu);
        }
    }
    if (!pg) {
        pg = s_open(p, err);
        p->slots[slot].pg = pg;
        p->slots[slot].opened_ms = qv_mono_ms();
    }
    return pg;
}

/* ---- statements ------------------------------------------------------------------------ */

/* One call that reached PostgreSQL: counters, metrics, and the observer (histogram,
 * parameter sample, db.slow_query). */
static void s_record(dbopt_pool_t *p, size_t idx, int64_t us, int64_t rows, bool failed,
                     const char *const *values, int nvalues, const char *req_id)
{
    pthread_mutex_lock(&p->mu);
    s_stmt_t *s = &p->stmts[idx];
    s->calls++;
    s->total_us += (uint64_t) us;
    if (failed)
        s->errors++;
    p->totals.queries++;
    p->totals.query_us += (uint64_t) us;
    pthread_mutex_unlock(&p->mu);
    if (s->duration)
        qv_metric_observe(s->duration, (double) us / 1e6);
    if (failed && s->errors_total)
        qv_metric_add(s->errors_total, 1);
    if (p->c_xact)
        qv_metric_add(p->c_xact, 1);
    if (p->c_query)
        qv_metric_add(p->c_query, 1);
    dbopt_obs_record(p->obs, idx, us, rows, failed, values, nvalues, req_id);
}

/* A statement PostgreSQL refused (the connection is fine): err gets the status for its
 * SQLSTATE and PostgreSQL's primary message, naming the constraint when there is one. */
static void s_statement_error(const dbopt_stmt_t *st, PGconn *pg, const PGresult *r,
                              const char *req_id, dbopt_error_t *err)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int status = dbopt_sqlstate_status(state);
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *constraint = r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
    char first[256];
    if (!primary) {
        s_first_line(first, sizeof first, PQerrorMessage(pg));
        primary = first;
    }
    if (constraint && !strstr(primary, constraint))
        s_seterr(err, status, "%s: %s (constraint %s)", st->name, primary, constraint);
    else
        s_seterr(err, status, "%s: %s", st->name, primary);
    if (status >= 500)
        qv_log(status == 500 ? QV_LOG_ERROR : QV_LOG_WARN, req_id, "%s failed: SQLSTATE %s %s",
               st->name, state ? state : "-", primary);
}

PGresult *dbopt_pool_run(dbopt_pool_t *p, const dbopt_stmt_t *st, const char *const *values,
                         int nvalues, int64_t deadline_ms, const char *req_id,
                         dbopt_error_t *err)
{
    err->status = 0;
    err->text[0] = '\0';
    if (!st || st < dbopt_catalog || (size_t) (st - dbopt_catalog) >= p->nstmts) {
        s_seterr(err, 404, "unknown catalog statement");
        return NULL;
    }
    size_t idx = (size_t) (st - dbopt_catalog);
    if (nvalues != st->nparams) {
        s_seterr(err, 400, "statement '%s' takes %d parameters, got %d", st->name,
                 st->nparams, nvalues);
        return NULL;
    }
    for (int attempt = 0; attempt < 2; attempt++) {
        int slot = s_acquire(p, deadline_ms, p->acquire_timeout_ms, err);
        if (slot < 0)
            return NULL;
        PGconn *pg = s_ready(p, slot, err);
        if (!pg) {
            s_release(p, slot, NULL);
            /* a read may try once more: when PostgreSQL is really down the back-off makes
             * the second try fail at once */
            if (st->readonly && attempt == 0)
                continue;
            return NULL;
        }
        /* do not start work the caller no longer waits for (DESIGN.md "Deadlines travel") */
        if (deadline_ms > 0 && qv_wall_ms() >= deadline_ms) {
            s_release(p, slot, pg);
            s_seterr(err, 504, "deadline passed before the statement started");
            return NULL;
        }
        int64_t t0 = qv_mono_us();
        PGresult *r = PQexecPrepared(pg, st->name, nvalues, values, NULL, NULL, 0);
        int64_t us = qv_mono_us() - t0;
        ExecStatusType rs = PQresultStatus(r);
        if (r && (rs == PGRES_TUPLES_OK || rs == PGRES_COMMAND_OK)) {
            /* a slow read with no plan known yet: EXPLAIN it now, on the connection in
             * hand, so that its db.slow_query event says why it was slow */
            if (st->readonly && dbopt_obs_wants_plan(p->obs, idx, us)) {
                char perr[256];
                char *plan = dbopt_obs_explain(pg, st, values, nvalues, perr, sizeof perr);
                if (plan)
                    dbopt_obs_set_plan(p->obs, idx, plan);
                free(plan);
            }
            s_release(p, slot, pg);
            const char *affected = PQcmdTuples(r);
            int64_t rows = affected && *affected ? atoll(affected) : PQntuples(r);
            s_record(p, idx, us, rows, false, values, nvalues, req_id);
            return r;
        }
        const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        /* 26000: our prepared statement is gone (DISCARD ALL by someone); a fresh
         * connection re-prepares it. */
        bool lost = PQstatus(pg) != CONNECTION_OK || dbopt_sqlstate_conn_lost(state)
                    || (state && strcmp(state, "26000") == 0);
        if (lost) {
            char msg[256];
            s_first_line(msg, sizeof msg, PQerrorMessage(pg));
            PQclear(r);
            PQfinish(pg);
            s_release(p, slot, NULL);
            s_close_idle(p);
            s_record(p, idx, us, 0, true, values, nvalues, req_id);
            pthread_mutex_lock(&p->mu);
            snprintf(p->last_error, sizeof p->last_error, "%s", msg);
            pthread_mutex_unlock(&p->mu);
            if (st->readonly && attempt == 0) {
                qv_log(QV_LOG_WARN, req_id, "%s: connection lost (%s), retrying once",
                       st->name, msg);
                continue;
            }
            s_seterr(err, 503, "database connection lost: %s", msg);
            return NULL;
        }
        s_statement_error(st, pg, r, req_id, err);
        PQclear(r);
        s_release(p, slot, pg);
        s_record(p, idx, us, 0, true, values, nvalues, req_id);
        return NULL;
    }
    return NULL;    /* not reached: attempt 1 always returns */
}

/* ---- health, stats, timer --------------------------------------------------------------- */

dbopt_ping_t dbopt_pool_ping(dbopt_pool_t *p, int64_t deadline_ms, char *detail, size_t len)
{
    dbopt_error_t err = { 0, "" };
    /* a saturated pool is busy, not down: give up quickly and say so */
    int64_t limit = p->acquire_timeout_ms < 1000 ? p->acquire_timeout_ms : 1000;
    int slot = s_acquire(p, deadline_ms, limit, &err);
    bool up = false;
    if (slot >= 0) {
        PGconn *pg = s_ready(p, slot, &err);
        if (pg) {
            PGresult *r = PQexec(pg, "SELECT 1");
            up = PQresultStatus(r) == PGRES_TUPLES_OK;
            if (!up)
                s_first_line(err.text, sizeof err.text, PQerrorMessage(pg));
            PQclear(r);
            if (!up && PQstatus(pg) != CONNECTION_OK) {
                PQfinish(pg);
                pg = NULL;
            }
        }
        s_release(p, slot, pg);
    }
    dbopt_pool_stats_t s;
    dbopt_pool_stats(p, &s, NULL);
    if (up)
        snprintf(detail, len, "PostgreSQL %s; pool %d/%d open, %d active, %d waiting",
                 s.server_version, s.open, s.max, s.active, s.waiting);
    else
        snprintf(detail, len, "%s; pool %d/%d open, %d active, %d waiting", err.text, s.open,
                 s.max, s.active, s.waiting);
    if (up)
        return DBOPT_UP;
    return slot < 0 && s.up ? DBOPT_BUSY : DBOPT_DOWN;
}

void dbopt_pool_stats(dbopt_pool_t *p, dbopt_pool_stats_t *out, dbopt_stmt_stats_t *per_stmt)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&p->mu);
    out->max = p->max;
    for (int i = 0; i < p->max; i++) {
        /* busy first: the pg of a busy slot belongs to its thread and is not read here */
        if (p->slots[i].busy)
            out->active++;
        else if (p->slots[i].pg)
            out->idle++;
    }
    out->open = out->active + out->idle;
    out->waiting = p->waiting;
    out->opened = p->opened;
    out->connect_failures = p->connect_failures;
    out->up = p->up;
    snprintf(out->server_version, sizeof out->server_version, "%s", p->server_version);
    snprintf(out->last_error, sizeof out->last_error, "%s", p->last_error);
    out->cl_active = out->sv_active = out->active;
    out->cl_waiting = p->waiting;
    out->sv_idle = out->idle;
    out->maxwait_us = s_maxwait_us_locked(p);
    out->total_xact_count = out->total_query_count = p->totals.queries;
    out->total_query_time_us = p->totals.query_us;
    out->total_wait_time_us = p->totals.wait_us;
    out->avg_xact_count = out->avg_query_count = p->avg_query_count;
    out->avg_query_time_us = p->avg_query_time_us;
    out->avg_wait_time_us = p->avg_wait_time_us;
    out->recycled = p->recycled;
    out->stats_period_s = (int) (p->period_ms / 1000);
    for (size_t i = 0; per_stmt && i < p->nstmts; i++) {
        per_stmt[i].calls = p->stmts[i].calls;
        per_stmt[i].errors = p->stmts[i].errors;
        per_stmt[i].avg_ms = p->stmts[i].calls
            ? (double) p->stmts[i].total_us / 1000.0 / (double) p->stmts[i].calls : 0.0;
    }
    pthread_mutex_unlock(&p->mu);
}

/* Opens one connection if a slot is free; NULL-safe err. true when one is open now. */
static bool s_open_one(dbopt_pool_t *p, dbopt_error_t *err)
{
    int slot = s_acquire(p, 0, 0, err);
    if (slot < 0)
        return false;
    PGconn *pg = s_ready(p, slot, err);
    s_release(p, slot, pg);
    return pg != NULL;
}

int dbopt_pool_start(dbopt_pool_t *p)
{
    dbopt_error_t err = { 0, "" };
    if (s_open_one(p, &err))
        return 0;
    qv_warn("PostgreSQL not reachable at start (%s); answering 503 and retrying", err.text);
    return -1;
}

/* Closes idle connections past their lifetime, or idle for db_conn_idle_timeout_s (keeping
 * the last open one: the timer would only reopen it). PQfinish runs outside the lock. */
static void s_recycle_idle(dbopt_pool_t *p)
{
    if (!p->lifetime_ms && !p->idle_ms)
        return;
    PGconn *doomed[64];     /* at most 64 a tick; any more go on the next one */
    int n = 0;
    int64_t now = qv_mono_ms();
    pthread_mutex_lock(&p->mu);
    int open = 0;
    for (int i = 0; i < p->max; i++)
        if (p->slots[i].busy || p->slots[i].pg)
            open++;
    for (int i = 0; i < p->max && n < 64; i++) {
        s_slot_t *s = &p->slots[i];
        if (s->busy || !s->pg)
            continue;
        bool idle_too_long = p->idle_ms > 0 && now - s->idle_since_ms >= p->idle_ms && open > 1;
        if (s_expired(p, s, now) || idle_too_long) {
            doomed[n++] = s->pg;
            s->pg = NULL;
            open--;
            s_recycled_locked(p);
        }
    }
    s_gauges_locked(p);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n; i++)
        PQfinish(doomed[i]);
}

/* Ends a stats period when it is due: the averages are the differences over it, as
 * PgBouncer's stats_period. */
static void s_stats_period(dbopt_pool_t *p)
{
    int64_t now = qv_mono_ms();
    pthread_mutex_lock(&p->mu);
    int64_t span = now - p->period_start_ms;
    if (span >= p->period_ms) {
        s_totals_t d = {
            .queries = p->totals.queries - p->period_start.queries,
            .query_us = p->totals.query_us - p->period_start.query_us,
            .acquires = p->totals.acquires - p->period_start.acquires,
            .wait_us = p->totals.wait_us - p->period_start.wait_us,
        };
        p->avg_query_count = (double) d.queries * 1000.0 / (double) span;
        p->avg_query_time_us = d.queries ? (double) d.query_us / (double) d.queries : 0.0;
        p->avg_wait_time_us = d.acquires ? (double) d.wait_us / (double) d.acquires : 0.0;
        p->period_start = p->totals;
        p->period_start_ms = now;
    }
    s_set(p->g_avg_xact, p->avg_query_count);
    s_set(p->g_avg_query, p->avg_query_count);
    s_set(p->g_avg_query_time, p->avg_query_time_us / 1e6);
    s_set(p->g_avg_wait_time, p->avg_wait_time_us / 1e6);
    s_set(p->g_maxwait, (double) s_maxwait_us_locked(p) / 1e6);
    pthread_mutex_unlock(&p->mu);
}

dbopt_obs_t *dbopt_pool_obs(dbopt_pool_t *p)
{
    return p->obs;
}

char *dbopt_pool_explain(dbopt_pool_t *p, const dbopt_stmt_t *st, const char *const *values,
                         int nvalues, int64_t limit_ms, dbopt_error_t *err)
{
    err->status = 0;
    err->text[0] = '\0';
    int slot = s_acquire(p, 0, limit_ms, err);
    if (slot < 0)
        return NULL;
    PGconn *pg = s_ready(p, slot, err);
    char *json = NULL;
    if (pg) {
        json = dbopt_obs_explain(pg, st, values, nvalues, err->text, sizeof err->text);
        if (!json) {
            err->status = 500;
            if (PQstatus(pg) != CONNECTION_OK) {
                PQfinish(pg);
                pg = NULL;
            }
        }
    }
    s_release(p, slot, pg);
    return json;
}

void dbopt_pool_tick(dbopt_pool_t *p)
{
    s_recycle_idle(p);
    s_stats_period(p);
    pthread_mutex_lock(&p->mu);
    bool any_open = false;
    for (int i = 0; i < p->max; i++)
        if (p->slots[i].busy || p->slots[i].pg)
            any_open = true;
    bool due = p->retry_at_ms <= qv_mono_ms();
    s_gauges_locked(p);
    pthread_mutex_unlock(&p->mu);
    /* keep one connection open so that Health, and the first request after an outage, find
     * PostgreSQL already back */
    if (!any_open && due) {
        dbopt_error_t err = { 0, "" };
        (void) s_open_one(p, &err);     /* s_connect_failed logs the first failure only */
    }
    dbopt_obs_tick(p->obs, p);
}
