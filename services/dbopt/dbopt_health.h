/* dbopt_health: the database detail behind the `DatabaseHealth` method (DbHealthReply in
 * proto/quaver/v1/dbopt_health.proto): cache hit ratio, connections by state, long-running and
 * idle-in-transaction sessions, dead tuples, bloat estimates, vacuum/analyze ages, wraparound
 * age, and the top statements of pg_stat_statements.
 *
 * Guarantees:
 * - It reads catalog views only, on a dedicated connection of its own (application_name
 *   quaver-dbopt-health), never a pool slot: a slow catalog never starves the application's
 *   queries. The connection opens on the first call and again after it was lost; calls
 *   serialise on it (each query is cheap and bounded by statement_timeout).
 * - One failing part (a timeout, a view it may not read) becomes a line in `warnings` and the
 *   rest is still answered; only "PostgreSQL unreachable" fails the call (503).
 * - pg_stat_statements missing or not preloaded: statements_available = false and
 *   statements_note says why and what to do; the call still succeeds.
 * - Session and statement texts are cut to 200 characters and never carry a prepared
 *   statement's parameter values (the placeholders stay $n); an ad-hoc statement's text does
 *   hold its literals, so deciding who may see texts at all is the gateway's business.
 * Thread-safe. */
#ifndef DBOPT_HEALTH_H
#define DBOPT_HEALTH_H
#include <stddef.h>
#include <libpq-fe.h>
#include "qv_rpc.h"

typedef struct dbopt_health_t dbopt_health_t;

typedef struct {
    const char *conninfo;           /* copied */
    int         connect_timeout_s;
    int         statement_timeout_ms;   /* per catalog query; 0 = 5000 */
    double      long_query_s;       /* health_long_query_s */
} dbopt_health_opts_t;

/* Caller owns the result and frees it with dbopt_health_destroy. Opens nothing yet. */
dbopt_health_t *dbopt_health_new(const dbopt_health_opts_t *opts);
void dbopt_health_destroy(dbopt_health_t **self_p);

/* The DatabaseHealth handler (request: Empty). Returns the reply status. */
int dbopt_health_handle(dbopt_health_t *self, const qv_call_t *call, qv_reply_t *reply);

/* A connection of its own for dbopt's housekeeping (health, maintenance): conninfo with
 * connect_timeout and application_name forced, TimeZone UTC, then setup_sql (may be NULL).
 * Returns the connection (caller owns, PQfinish) or NULL with the reason in err. */
PGconn *dbopt_health_connect(const char *conninfo, int connect_timeout_s, const char *appname,
                             const char *setup_sql, char *err, size_t len);
/* The first line of a libpq message (which ends in a newline and may carry DETAIL/HINT
 * lines) into dst, for log lines and replies; msg may be NULL. */
void dbopt_health_first_line(char *dst, size_t len, const char *msg);
#endif
