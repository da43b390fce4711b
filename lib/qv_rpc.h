/* qv_rpc: the quaver.v1.Call / quaver.v1.Result envelope around MDP, and the server that runs
 * a daemon: MDP worker threads, the generic dispatcher over a method table, the metrics
 * registry, the bus publisher, and timers.
 *
 * Dispatch (one request): unpack Call (bad -> 400) -> look the method up (unknown -> 404) ->
 * deadline passed? (-> 504, handler not run) -> QV_ADMIN and caller not admin? (-> 403) ->
 * unpack the payload with the method's descriptor (bad -> 400) -> handler -> pack Result ->
 * record count and latency (quaver_rpc_requests_total{method,status},
 * quaver_rpc_duration_seconds{method}) -> free everything.
 *
 * Ownership: the dispatcher owns the unpacked request; a handler borrows it and must not keep
 * pointers into it. A handler fills the reply with qv_reply_set (which packs at once, so the
 * handler may build its reply message on the stack) or qv_reply_error, and returns the status.
 */
#ifndef QV_RPC_H
#define QV_RPC_H
#include <stdint.h>
#include <stdbool.h>
#include <protobuf-c/protobuf-c.h>
#include "qv_config.h"
#include "qv_metrics.h"
#include "qv_bus.h"
#include "quaver/v1/envelope.pb-c.h"

enum { QV_READONLY = 1 << 0, QV_ADMIN = 1 << 1 };

typedef struct {
    const char *service;
    const char *method;
    const char *request_id;     /* "" when the caller gave none */
    int64_t     deadline_ms;    /* wall clock epoch ms, 0 = none */
    int64_t     user_id;        /* 0 = anonymous */
    const char *username;
    bool        admin;
} qv_call_t;

typedef struct qv_reply_t qv_reply_t;

typedef int (*qv_handler_fn)(void *app, const qv_call_t *call, const ProtobufCMessage *req,
                             qv_reply_t *reply);

typedef struct {
    const char                        *name;      /* NULL ends the table */
    const ProtobufCMessageDescriptor  *request;   /* the payload's message type */
    qv_handler_fn                      fn;
    int                                flags;     /* QV_READONLY, QV_ADMIN */
} qv_method_t;

/* Packs msg as the reply payload; returns 0 (-1 on out of memory). */
int qv_reply_set(qv_reply_t *r, const ProtobufCMessage *msg);
/* Sets the error text and returns status, so a handler can `return qv_reply_error(r, 404, ..)`. */
int qv_reply_error(qv_reply_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A packed Result (status, error text, payload) into *out (caller frees with free): what
 * qv_dispatch answers, for an answer made before dispatching. 0, or -1 when out of memory. */
int qv_result_pack(int status, const char *error, const uint8_t *payload, size_t len,
                   uint8_t **out, size_t *out_len);

/* The dispatcher on its own (for selftests and benchmarks): body is a packed Call; returns a
 * packed Result in *out (caller frees with free). metrics may be NULL. */
int qv_dispatch(const char *service, const qv_method_t *methods, void *app, qv_metrics_t *metrics,
                const void *body, size_t len, uint8_t **out, size_t *out_len);

/* ---- server --------------------------------------------------------------------------- */
typedef struct qv_server_t qv_server_t;

/* cfg is borrowed and must outlive the server. Creates the metrics registry and the bus
 * publisher ("<service>/<instance>"); publishes metrics.<service> every second once running. */
qv_server_t *qv_server_new(const char *service, const qv_common_cfg_t *cfg,
                           const qv_method_t *methods, void *app);
void qv_server_destroy(qv_server_t **self_p);
qv_metrics_t *qv_server_metrics(qv_server_t *self);
qv_bus_t     *qv_server_bus(qv_server_t *self);
const char   *qv_server_instance(qv_server_t *self);
/* Periodic work on the server's main thread (zloop timer). */
int qv_server_add_timer(qv_server_t *self, int interval_ms, void (*fn)(void *app));
/* Starts cfg->workers MDP worker threads and runs timers until SIGINT/SIGTERM (or
 * qv_server_stop). Each worker finishes the request in hand and sends DISCONNECT. */
int qv_server_run(qv_server_t *self);
void qv_server_stop(qv_server_t *self);

/* Fills a StatsReply from the registry (every counter/gauge, histogram counts): helper for a
 * daemon's Stats method. Caller frees with qv_stats_reply_free. */
Quaver__V1__StatsReply *qv_stats_from_metrics(qv_metrics_t *m, const char *service);
void qv_stats_reply_free(Quaver__V1__StatsReply *r);

/* ---- client side ------------------------------------------------------------------------ */
typedef struct {
    int      status;      /* the Result's status; 503 broker/no worker, 504 our deadline */
    char    *error;       /* heap, "" when none */
    uint8_t *payload;     /* heap, may be NULL when len == 0 */
    size_t   len;
} qv_result_t;

/* Packs req into a Call (method, request_id, deadline = now + timeout_ms, caller) and calls
 * service through this thread's client for broker. Always fills *out (status 504 when no
 * reply came by the deadline, 500 when the reply did not parse). caller may be NULL. */
void qv_rpc_call(const char *broker, const char *service, const char *method,
                 const ProtobufCMessage *req, const Quaver__V1__Caller *caller,
                 const char *request_id, int timeout_ms, qv_result_t *out);
/* The same with the payload already packed (plen bytes; payload may be NULL when plen is 0),
 * for a caller that forwards bytes it did not build (the cache's GetOrLoad loader call). */
void qv_rpc_call_raw(const char *broker, const char *service, const char *method,
                     const void *payload, size_t plen, const Quaver__V1__Caller *caller,
                     const char *request_id, int timeout_ms, qv_result_t *out);
void qv_result_free(qv_result_t *r);

/* 16 random hex characters + NUL into buf (>= 17 bytes). */
void qv_request_id(char *buf);

int qv_rpc_selftest(void);
#endif
