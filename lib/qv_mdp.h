/* qv_mdp: Majordomo 7/MDP 0.1 with 8/MMI, spoken exactly as the specs write it, so that any
 * MDP client or worker interoperates with ours.
 *
 * Frames (after the ROUTER identity / DEALER empty delimiter):
 *   client -> broker : "" "MDPC01" service body...
 *   broker -> client : "" "MDPC01" service body...
 *   worker -> broker : "" "MDPW01" 0x01 READY service
 *                      "" "MDPW01" 0x03 REPLY client-address "" body...
 *                      "" "MDPW01" 0x04 HEARTBEAT
 *                      "" "MDPW01" 0x05 DISCONNECT
 *   broker -> worker : "" "MDPW01" 0x02 REQUEST client-address "" body...
 *                      "" "MDPW01" 0x04 HEARTBEAT / 0x05 DISCONNECT
 * MMI: a request to "mmi.service" with body = a service name is answered "200" when that
 * service has at least one worker, "404" otherwise; any other "mmi.*" gets "501".
 */
#ifndef QV_MDP_H
#define QV_MDP_H
#include <czmq.h>
#include <stdint.h>
#include <stdbool.h>

#define QV_MDPC "MDPC01"
#define QV_MDPW "MDPW01"
enum { QV_MDPW_READY = 1, QV_MDPW_REQUEST, QV_MDPW_REPLY, QV_MDPW_HEARTBEAT, QV_MDPW_DISCONNECT };

/* ---- broker ---------------------------------------------------------------------------
 * Runs in its own thread. Least-recently-used ready worker per service. Heartbeats every
 * hb_ms; a worker silent for hb_ms * liveness is dropped. A request for a service with no
 * ready worker waits in that service's queue; when its deadline passes (the deadline_ms of
 * the quaver.v1.Call in the body when it parses, else now + default_deadline_ms) the broker
 * answers the client itself with a quaver.v1.Result {status 503} (for non-Quaver bodies: the
 * single frame "503"). ZMQ_ROUTER_MANDATORY is set: a send to a vanished peer is dropped and
 * counted, never blocks. */
typedef struct qv_broker_t qv_broker_t;

typedef struct {
    char    name[64];
    int     workers;          /* connected workers (ready + busy) */
    int     ready;            /* waiting for work */
    int     queued;           /* requests waiting for a worker */
    int     inflight;         /* requests sent to a worker, not yet answered */
    int64_t last_heartbeat_age_ms;  /* since any worker of this service was last heard; -1 never */
    uint64_t requests;        /* dispatched so far */
    uint64_t expired;         /* answered 503 by the broker at their deadline */
} qv_broker_service_stats_t;

/* endpoints: comma-separated bind endpoints, e.g. "tcp://0.0.0.0:5555,inproc://qv-broker"
 * (a "*" host works too).
 * Caller owns the result; qv_broker_destroy stops the thread. NULL if a bind fails. */
qv_broker_t *qv_broker_new(const char *endpoints, int hb_ms, int liveness,
                           int default_deadline_ms);
void qv_broker_destroy(qv_broker_t **self_p);
/* Thread-safe snapshot. Fills up to max entries, returns how many services are known. */
int qv_broker_stats(qv_broker_t *self, qv_broker_service_stats_t *out, int max);
/* The TCP port actually bound (useful with tcp://127.0.0.1:*), or -1. */
int qv_broker_port(qv_broker_t *self);

/* ---- worker ---------------------------------------------------------------------------
 * One logical worker for one service, connected to every broker it is given. An endpoint
 * "tcp://name:port" whose host is a DNS name is resolved to all its addresses, again every
 * few seconds, one DEALER per address. Reconnects with back-off (hb_ms, doubling, max 10 s).
 * Not thread-safe: one qv_worker_t per thread. */
typedef struct qv_worker_t qv_worker_t;

qv_worker_t *qv_worker_new(const char *brokers, const char *service, int hb_ms, int liveness);
/* Sends DISCONNECT to every broker, then closes. */
void qv_worker_destroy(qv_worker_t **self_p);

/* Waits up to timeout_ms (-1 forever) for a request; heartbeats while waiting.
 * Returns the request body (caller owns, zmsg_destroy) and sets *reply_to (caller owns; pass
 * it to qv_worker_send). Returns NULL on timeout or when interrupted (zsys_interrupted or
 * qv_worker_stop). */
zmsg_t *qv_worker_recv(qv_worker_t *self, int timeout_ms, zframe_t **reply_to);
/* Sends a reply body to the broker the request came from. Takes ownership of *body_p and
 * *reply_to_p and nulls them. */
int qv_worker_send(qv_worker_t *self, zmsg_t **body_p, zframe_t **reply_to_p);
/* Asks recv to return NULL soon (callable from another thread or a signal handler). */
void qv_worker_stop(qv_worker_t *self);

/* ---- client ---------------------------------------------------------------------------
 * A synchronous call with a deadline. One socket per thread: qv_client_tls() returns this
 * thread's client for a broker endpoint, created on first use, destroyed at thread exit. */
typedef struct qv_client_t qv_client_t;

qv_client_t *qv_client_new(const char *broker);
void qv_client_destroy(qv_client_t **self_p);
qv_client_t *qv_client_tls(const char *broker);

/* Sends body (borrowed) to service and waits up to timeout_ms for the reply.
 * Returns 0 and *reply (caller owns) on success; -1 on timeout (the socket is then replaced so
 * that a late reply cannot be taken for the next call's). */
int qv_client_call(qv_client_t *self, const char *service, const void *body, size_t len,
                   int timeout_ms, zmsg_t **reply) __attribute__((warn_unused_result));

int qv_mdp_selftest(void);
#endif
