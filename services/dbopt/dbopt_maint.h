/* dbopt_maint: scheduled VACUUM (ANALYZE), and the `Maintenance` method
 * (MaintenanceRequest -> MaintenanceReply, proto/quaver/v1/dbopt_health.proto).
 *
 * A table is due when n_dead_tup / (n_live_tup + 1) > maintenance_dead_ratio (with at least
 * 50 dead tuples) or n_mod_since_analyze / max(reltuples, 1) > maintenance_analyze_ratio (with
 * at least 50 modified rows); the 50 is autovacuum's own base threshold, so that a three-row
 * table is not vacuumed on every pass.
 *
 * Guarantees:
 * - Work happens on a connection of its own (application_name quaver-dbopt-maint), opened for
 *   one pass and closed after it; never a pool slot. The scheduler's pass runs in a thread it
 *   starts from dbopt_maint_tick (the server's timer thread never blocks on VACUUM).
 * - One table at a time, one pass at a time (scheduler or RPC): a second one is refused (409).
 * - Every VACUUM runs with SET lock_timeout = maintenance_lock_timeout_ms (a table someone
 *   holds a conflicting lock on is skipped with an error, not waited for) and no
 *   statement_timeout (a big table may take long; the lock wait is what must be bounded).
 * - Table names are never interpolated: a requested name only selects a row of
 *   pg_stat_user_tables (a parameter), and the statement is built from that row's schema and
 *   name, each quoted with PQescapeIdentifier. Unknown name: 404 naming it.
 * - Afterwards vacuum_count must have risen: PostgreSQL 15 updates the shared statistics when
 *   VACUUM ends, and a session reads them through a per-transaction snapshot, so it polls
 *   (pg_stat_clear_snapshot() then pg_stat_user_tables, every 50 ms, up to 3 s).
 * - Each VACUUM's outcome is published as db.maintenance (JSON) and logged.
 * - The scheduler runs only when maintenance_interval_s > 0, and only inside
 *   maintenance_window ("HH:MM-HH:MM" UTC, end may be 24:00, start > end wraps midnight;
 *   "off" = never). The Maintenance method ignores the window (an operator asked) but reports
 *   whether now is inside it.
 * Thread-safe. */
#ifndef DBOPT_MAINT_H
#define DBOPT_MAINT_H
#include <stdbool.h>
#include <stddef.h>
#include "qv_rpc.h"
#include "qv_bus.h"
#include "quaver/v1/dbopt_health.pb-c.h"

typedef struct dbopt_maint_t dbopt_maint_t;

typedef struct {
    const char *conninfo;           /* copied */
    int         connect_timeout_s;
    int         interval_s;         /* 0 = scheduler off */
    const char *window;             /* copied; validated by dbopt_maint_new */
    double      dead_ratio, analyze_ratio;
    int         lock_timeout_ms;
    qv_bus_t   *bus;                /* borrowed, may be NULL */
} dbopt_maint_opts_t;

/* Parses a window: "off" -> *off = true; "HH:MM-HH:MM" (00:00..24:00) -> minutes since
 * midnight UTC in *start and *end (start == end is refused: say "off" or "00:00-24:00").
 * Returns 0, or -1 with the reason in why. */
int dbopt_maint_window_parse(const char *s, int *start, int *end, bool *off, char *why,
                             size_t len);

/* Caller owns the result and frees it with dbopt_maint_destroy (which cancels the running
 * VACUUM, and waits for the scheduler's pass thread; call it only once no Maintenance call
 * can be running). NULL with the reason in err when the window is bad or memory ran out.
 * Opens nothing. */
dbopt_maint_t *dbopt_maint_new(const dbopt_maint_opts_t *opts, char *err, size_t len);
void dbopt_maint_destroy(dbopt_maint_t **self_p);

/* From the server's timer (main thread): starts a pass in its own thread when one is due and
 * now is inside the window; reaps a finished one. Never blocks on PostgreSQL. */
void dbopt_maint_tick(dbopt_maint_t *self);

/* The Maintenance handler. dry_run is open to every caller; running a pass needs an
 * administrator (403). Returns the reply status. */
int dbopt_maint_handle(dbopt_maint_t *self, const qv_call_t *call,
                       const Quaver__V1__MaintenanceRequest *req, qv_reply_t *reply);

int dbopt_maint_selftest(void);
#endif
