/* dbopt_advisor: the daemon's side of the index advisor (dbopt_advise.h is the engine):
 * the Advise, ApplyIndex and Explain methods on the daemon's own database.
 *
 * Guarantees:
 * - Each run opens its own connection (hypothetical indexes are per session, and
 *   CREATE INDEX CONCURRENTLY needs a connection outside any transaction), so the pool's
 *   connections and their prepared statements are never touched.
 * - One run at a time: a second Advise/ApplyIndex while one runs is answered 409 at once
 *   (an apply run holds an advisory lock for minutes; queueing behind it would only reach
 *   the caller's deadline).
 * - Statements run with statement_timeout = the time left before the call's deadline, so a
 *   run never outlives its caller by more than one statement's cancellation.
 * - Catalog statements found in pg_stat_statements are timed with the parameters dbopt
 *   captured from real calls (dbopt_obs_sample_params) instead of sampled ones.
 * - The last Advise result is kept (AdviseRequest.latest answers it); every apply outcome is
 *   published on the bus as `db.index` (the recommendation entry as JSON).
 * Thread-safe. */
#ifndef DBOPT_ADVISOR_H
#define DBOPT_ADVISOR_H
#include "qv_rpc.h"
#include "qv_bus.h"
#include "dbopt_advise.h"

typedef struct dbopt_advisor_t dbopt_advisor_t;
struct dbopt_pool_t;

typedef struct {
    const char           *conninfo;     /* copied */
    dbopt_advise_opts_t   advise;       /* thresholds from the config (callbacks, arg replaced) */
    qv_bus_t             *bus;          /* borrowed, may be NULL */
    struct dbopt_pool_t  *pool;         /* borrowed, may be NULL: source of captured params */
} dbopt_advisor_opts_t;

/* Caller owns the result (dbopt_advisor_destroy). NULL on out of memory. */
dbopt_advisor_t *dbopt_advisor_new(const dbopt_advisor_opts_t *opts);
void dbopt_advisor_destroy(dbopt_advisor_t **self_p);

/* The handlers (request types: AdviseRequest, ApplyIndexRequest, QueryRequest). */
int dbopt_advisor_advise(dbopt_advisor_t *self, const qv_call_t *call,
                         const ProtobufCMessage *req, qv_reply_t *reply);
int dbopt_advisor_apply(dbopt_advisor_t *self, const qv_call_t *call,
                        const ProtobufCMessage *req, qv_reply_t *reply);
int dbopt_advisor_explain(dbopt_advisor_t *self, const qv_call_t *call,
                          const ProtobufCMessage *req, qv_reply_t *reply);
#endif
