/* qv_rpc: the quaver.v1.Call / quaver.v1.Result envelope, the generic dispatcher, and the
 * calling side (see qv_rpc.h; the server loop is in qv_server.c).
 * Guarantees of qv_dispatch: whatever bytes arrive, it answers with a packed Result and never
 * crashes or asserts on them; a handler runs only for a known method, before the deadline,
 * with the admin right when the method needs it, on a payload that decoded as the method's
 * message type; every request is counted once in quaver_rpc_requests_total and timed in
 * quaver_rpc_duration_seconds, and method names the table does not know are counted as
 * method="unknown", so a client cannot grow the metric set.
 * Guarantees of qv_rpc_call: it always fills the result and returns by the deadline (plus
 * scheduling noise); 503 from the broker and 504 at the deadline are told apart. */
#include "qv_rpc.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "qv_mdp.h"
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qv_reply_t {
    int      status;
    char    *error;
    uint8_t *payload;
    size_t   len;
};

int qv_reply_set(qv_reply_t *r, const ProtobufCMessage *msg)
{
    if (!r || !msg)
        return -1;
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    protobuf_c_message_pack(msg, buf);
    free(r->payload);
    r->payload = buf;
    r->len = len;
    return 0;
}

int qv_reply_error(qv_reply_t *r, int status, const char *fmt, ...)
{
    if (r) {
        char *text = NULL;
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&text, fmt, ap) < 0)
            text = NULL;
        va_end(ap);
        free(r->error);
        r->error = text;
        r->status = status;
    }
    return status;
}

/* ---- dispatcher ----------------------------------------------------------------------- */

static void s_record(qv_metrics_t *metrics, const char *service, const char *method,
                     int status, double seconds)
{
    if (!metrics)
        return;
    char labels[256];
    snprintf(labels, sizeof labels, "service=%s,method=%s,status=%d", service, method, status);
    qv_metric_add(qv_metrics_counter(metrics, "quaver_rpc_requests_total",
                                     "RPC requests answered, by method and status.", labels),
                  1);
    snprintf(labels, sizeof labels, "service=%s,method=%s", service, method);
    qv_metric_observe(qv_metrics_histogram(metrics, "quaver_rpc_duration_seconds",
                                           "Time from receiving an RPC to its reply.", labels,
                                           NULL, 0),
                      seconds);
}

int qv_result_pack(int status, const char *error, const uint8_t *payload, size_t len,
                   uint8_t **out, size_t *out_len)
{
    Quaver__V1__Result res = QUAVER__V1__RESULT__INIT;
    res.status = status;
    res.error = (char *) (error ? error : "");
    res.payload.data = (uint8_t *) payload;
    res.payload.len = payload ? len : 0;
    size_t n = quaver__v1__result__get_packed_size(&res);
    *out = malloc(n ? n : 1);
    *out_len = 0;
    if (!*out)
        return -1;
    *out_len = quaver__v1__result__pack(&res, *out);
    return 0;
}

int qv_dispatch(const char *service, const qv_method_t *methods, void *app, qv_metrics_t *metrics,
                const void *body, size_t len, uint8_t **out, size_t *out_len)
{
    int64_t t0 = qv_mono_us();
    qv_reply_t reply = { 0 };
    const char *method_label = "unknown";
    const char *req_id = NULL;
    ProtobufCMessage *req = NULL;
    int status;
    if (!service)
        service = "";

    Quaver__V1__Call *call = quaver__v1__call__unpack(NULL, len, body);
    if (!call) {
        status = qv_reply_error(&reply, 400, "cannot decode quaver.v1.Call (%zu bytes)", len);
        goto done;
    }
    req_id = call->request_id;
    const qv_method_t *m = NULL;
    for (int i = 0; methods && methods[i].name; i++)
        if (strcmp(methods[i].name, call->method) == 0) {
            m = &methods[i];
            break;
        }
    if (!m) {
        status = qv_reply_error(&reply, 404, "unknown method '%.128s' of service '%s'",
                                call->method, service);
        goto done;
    }
    method_label = m->name;
    if (call->deadline_ms != 0 && qv_wall_ms() >= call->deadline_ms) {
        status = qv_reply_error(&reply, 504, "deadline passed before %s.%s started", service,
                                m->name);
        goto done;
    }
    if ((m->flags & QV_ADMIN) && !(call->caller && call->caller->admin)) {
        status = qv_reply_error(&reply, 403, "%s.%s requires an administrator", service,
                                m->name);
        goto done;
    }
    if (m->request) {
        req = protobuf_c_message_unpack(m->request, NULL, call->payload.len, call->payload.data);
        if (!req) {
            status = qv_reply_error(&reply, 400, "cannot decode %s: malformed payload (%zu bytes)",
                                    m->request->name, call->payload.len);
            goto done;
        }
    }
    qv_call_t c = {
        .service = service,
        .method = m->name,
        .request_id = call->request_id ? call->request_id : "",
        .deadline_ms = call->deadline_ms,
        .user_id = call->caller ? call->caller->user_id : 0,
        .username = call->caller && call->caller->username ? call->caller->username : "",
        .admin = call->caller ? call->caller->admin : false,
    };
    status = m->fn ? m->fn(app, &c, req, &reply) : 501;
    if (status < 100 || status > 599) {
        qv_log(QV_LOG_ERROR, req_id, "%s.%s returned status %d", service, m->name, status);
        status = qv_reply_error(&reply, 500, "%s.%s returned an invalid status", service,
                                m->name);
    }
    if (status >= 500 && status != 503 && status != 504)
        qv_log(QV_LOG_WARN, req_id, "%s.%s -> %d %s", service, m->name, status,
               reply.error ? reply.error : "");

done:;
    int rc = qv_result_pack(status, reply.error, reply.payload, reply.len, out, out_len);
    double seconds = (double) (qv_mono_us() - t0) / 1e6;
    qv_log(QV_LOG_DEBUG, req_id, "%s.%s -> %d in %.3f ms", service, method_label, status,
           seconds * 1e3);
    s_record(metrics, service, method_label, status, seconds);
    if (req)
        protobuf_c_message_free_unpacked(req, NULL);
    if (call)
        quaver__v1__call__free_unpacked(call, NULL);
    free(reply.error);
    free(reply.payload);
    return rc;
}

/* ---- stats ---------------------------------------------------------------------------- */

Quaver__V1__StatsReply *qv_stats_from_metrics(qv_metrics_t *m, const char *service)
{
    Quaver__V1__StatsReply *r = malloc(sizeof *r);
    if (!r)
        return NULL;
    quaver__v1__stats_reply__init(r);
    r->service = strdup(service ? service : "");
    Quaver__V1__MetricsSnapshot *snap = qv_metrics_snapshot(m);
    if (!r->service || !snap)
        goto fail;
    size_t total = 0;
    for (size_t f = 0; f < snap->n_families; f++)
        total += snap->families[f]->n_samples;
    r->stats = calloc(total + 1, sizeof(Quaver__V1__Stat *));
    if (!r->stats)
        goto fail;
    for (size_t f = 0; f < snap->n_families; f++) {
        Quaver__V1__MetricFamily *fam = snap->families[f];
        bool hist = strcmp(fam->type, "histogram") == 0;
        for (size_t i = 0; i < fam->n_samples; i++) {
            Quaver__V1__Sample *s = fam->samples[i];
            /* Histograms: their count and sum, not every bucket. */
            if (hist && strcmp(s->suffix, "_bucket") == 0)
                continue;
            char *name = NULL;
            size_t nlen = 0;
            FILE *mf = open_memstream(&name, &nlen);
            if (!mf)
                goto fail;
            fprintf(mf, "%s%s", fam->name, s->suffix);
            for (size_t l = 0; l < s->n_labels; l++)
                fprintf(mf, "%s%s=\"%s\"", l ? "," : "{", s->labels[l]->name,
                        s->labels[l]->value);
            if (s->n_labels)
                fputc('}', mf);
            fclose(mf);
            Quaver__V1__Stat *st = malloc(sizeof *st);
            if (!st || !name) {
                free(st);
                free(name);
                goto fail;
            }
            quaver__v1__stat__init(st);
            st->name = name;
            st->value = s->value;
            r->stats[r->n_stats++] = st;
        }
    }
    qv_metrics_snapshot_free(snap);
    return r;
fail:
    qv_metrics_snapshot_free(snap);
    qv_stats_reply_free(r);
    return NULL;
}

void qv_stats_reply_free(Quaver__V1__StatsReply *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_stats; i++) {
        free(r->stats[i]->name);
        free(r->stats[i]);
    }
    free(r->stats);
    free(r->service);
    free(r);
}

/* ---- client side ---------------------------------------------------------------------- */

#define S_DEADLINE_GRACE_MS 100

static pthread_once_t s_sodium_once = PTHREAD_ONCE_INIT;
static void s_sodium_init(void)
{
    if (sodium_init() < 0)
        abort();   /* no entropy source: nothing random can be trusted after this */
}

void qv_request_id(char *buf)
{
    unsigned char raw[8];
    pthread_once(&s_sodium_once, s_sodium_init);
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(buf, 17, raw, sizeof raw);
}

static void s_result_set(qv_result_t *out, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_result_set(qv_result_t *out, int status, const char *fmt, ...)
{
    out->status = status;
    free(out->error);
    out->error = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&out->error, fmt, ap) < 0)
        out->error = NULL;
    va_end(ap);
    if (!out->error)
        out->error = strdup("");
}

void qv_rpc_call(const char *broker, const char *service, const char *method,
                 const ProtobufCMessage *req, const Quaver__V1__Caller *caller,
                 const char *request_id, int timeout_ms, qv_result_t *out)
{
    uint8_t *payload = NULL;
    size_t plen = 0;
    if (req) {
        plen = protobuf_c_message_get_packed_size(req);
        payload = malloc(plen ? plen : 1);
        if (!payload) {
            memset(out, 0, sizeof *out);
            s_result_set(out, 500, "out of memory");
            return;
        }
        plen = protobuf_c_message_pack(req, payload);
    }
    qv_rpc_call_raw(broker, service, method, payload, plen, caller, request_id, timeout_ms, out);
    free(payload);
}

void qv_rpc_call_raw(const char *broker, const char *service, const char *method,
                     const void *payload, size_t plen, const Quaver__V1__Caller *caller,
                     const char *request_id, int timeout_ms, qv_result_t *out)
{
    memset(out, 0, sizeof *out);
    out->error = strdup("");
    char rid[17];
    if (!request_id || !*request_id) {
        qv_request_id(rid);
        request_id = rid;
    }
    Quaver__V1__Call call = QUAVER__V1__CALL__INIT;
    call.method = (char *) (method ? method : "");
    call.request_id = (char *) request_id;
    call.deadline_ms = qv_wall_ms() + timeout_ms;
    call.caller = (Quaver__V1__Caller *) caller;
    call.payload.data = (uint8_t *) payload;
    call.payload.len = payload ? plen : 0;
    size_t len = quaver__v1__call__get_packed_size(&call);
    uint8_t *body = malloc(len ? len : 1);
    if (!body) {
        s_result_set(out, 500, "out of memory");
        return;
    }
    quaver__v1__call__pack(&call, body);

    qv_client_t *client = qv_client_tls(broker);
    if (!client) {
        free(body);
        s_result_set(out, 503, "cannot reach the broker at '%s'", broker ? broker : "");
        return;
    }
    zmsg_t *reply = NULL;
    /* The broker answers 503 exactly at the deadline when no worker took the request; wait a
     * little past it so that verdict reaches us and "nobody serves this" is not reported as
     * "too slow". No worker starts past the deadline, so the grace adds no work. */
    int rc = qv_client_call(client, service, body, len,
                            timeout_ms < 0 ? -1 : timeout_ms + S_DEADLINE_GRACE_MS, &reply);
    free(body);
    if (rc != 0 || !reply) {
        zmsg_destroy(&reply);
        s_result_set(out, 504, "deadline passed waiting for %s", service);
        return;
    }
    zframe_t *frame = zmsg_first(reply);
    if (frame && zframe_size(frame) == 3 && memcmp(zframe_data(frame), "503", 3) == 0) {
        /* The broker's own answer for a request it could not place by the deadline. */
        s_result_set(out, 503, "service %s unavailable", service);
    } else {
        Quaver__V1__Result *res =
            frame ? quaver__v1__result__unpack(NULL, zframe_size(frame), zframe_data(frame))
                  : NULL;
        if (!res)
            s_result_set(out, 500, "cannot decode the reply of %s.%s", service, method);
        else {
            out->status = res->status;
            if (res->error && *res->error) {
                free(out->error);
                out->error = strdup(res->error);
                if (!out->error)
                    out->error = strdup("");
            }
            if (res->payload.len) {
                out->payload = malloc(res->payload.len);
                if (out->payload) {
                    memcpy(out->payload, res->payload.data, res->payload.len);
                    out->len = res->payload.len;
                } else
                    s_result_set(out, 500, "out of memory");
            }
            quaver__v1__result__free_unpacked(res, NULL);
        }
    }
    zmsg_destroy(&reply);
}

void qv_result_free(qv_result_t *r)
{
    if (!r)
        return;
    free(r->error);
    free(r->payload);
    memset(r, 0, sizeof *r);
}

/* ---- selftest ------------------------------------------------------------------------- */

#include "quaver/v1/cache.pb-c.h"

#define S_CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "rpc selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    goto fail; } } while (0)

typedef struct {
    int calls;
    char last_key[64];
} s_test_app_t;

static int s_test_get(void *app, const qv_call_t *call, const ProtobufCMessage *req,
                      qv_reply_t *reply)
{
    s_test_app_t *a = app;
    const Quaver__V1__CacheKey *k = (const Quaver__V1__CacheKey *) req;
    a->calls++;
    snprintf(a->last_key, sizeof a->last_key, "%s/%s", k->namespace_, k->key);
    if (strcmp(k->key, "missing") == 0)
        return qv_reply_error(reply, 404, "no key '%s'", k->key);
    Quaver__V1__CacheGetReply r = QUAVER__V1__CACHE_GET_REPLY__INIT;
    r.found = true;
    r.value.data = (uint8_t *) "v";
    r.value.len = 1;
    r.tier = (char *) "local";
    if (qv_reply_set(reply, &r.base) != 0)
        return 500;
    return 200;
}

static int s_test_admin(void *app, const qv_call_t *call, const ProtobufCMessage *req,
                        qv_reply_t *reply)
{
    ((s_test_app_t *) app)->calls++;
    return call->admin ? 200 : 500;
}

static const qv_method_t s_test_methods[] = {
    { "Get", &quaver__v1__cache_key__descriptor, s_test_get, QV_READONLY },
    { "Flush", &quaver__v1__empty__descriptor, s_test_admin, QV_ADMIN },
    { NULL, NULL, NULL, 0 }
};

/* Packs a Call, dispatches it, unpacks the Result (caller frees). */
static Quaver__V1__Result *s_roundtrip(qv_metrics_t *m, s_test_app_t *app, const char *method,
                                       int64_t deadline, bool admin, const uint8_t *payload,
                                       size_t plen)
{
    Quaver__V1__Call call = QUAVER__V1__CALL__INIT;
    Quaver__V1__Caller who = QUAVER__V1__CALLER__INIT;
    who.user_id = 7;
    who.admin = admin;
    call.method = (char *) method;
    call.request_id = (char *) "req1";
    call.deadline_ms = deadline;
    call.caller = &who;
    call.payload.data = (uint8_t *) payload;
    call.payload.len = plen;
    uint8_t buf[512], *out = NULL;
    size_t len = quaver__v1__call__pack(&call, buf), out_len = 0;
    if (qv_dispatch("cache", s_test_methods, app, m, buf, len, &out, &out_len) != 0)
        return NULL;
    Quaver__V1__Result *res = quaver__v1__result__unpack(NULL, out_len, out);
    free(out);
    return res;
}

static double s_count(qv_metrics_t *m, const char *method, int status)
{
    char labels[128];
    snprintf(labels, sizeof labels, "service=cache,method=%s,status=%d", method, status);
    return qv_metric_value(qv_metrics_counter(m, "quaver_rpc_requests_total", "", labels));
}

/* ---- end to end: broker, server with worker threads, qv_rpc_call, bus ---------------- */

static int s_e2e_slow(void *app, const qv_call_t *call, const ProtobufCMessage *req,
                      qv_reply_t *reply)
{
    zclock_sleep(400);
    return 200;
}

static const qv_method_t s_e2e_methods[] = {
    { "Get", &quaver__v1__cache_key__descriptor, s_test_get, QV_READONLY },
    { "Slow", &quaver__v1__empty__descriptor, s_e2e_slow, 0 },
    { NULL, NULL, NULL, 0 }
};

typedef struct {
    s_test_app_t test;      /* first: s_test_get takes the app as an s_test_app_t */
    qv_server_t *server;
    const char  *broker;
    int          run_rc;
    int          statuses[5];
    char         errors[5][128];
    int          ticks;
} s_e2e_t;

static void s_e2e_tick(void *app) { ((s_e2e_t *) app)->ticks++; }

static void *s_e2e_server(void *arg)
{
    s_e2e_t *e = arg;
    e->run_rc = qv_server_run(e->server);
    return NULL;
}

/* Calls from a thread of their own: the thread's MDP client goes away when it exits. */
static void *s_e2e_client(void *arg)
{
    s_e2e_t *e = arg;
    Quaver__V1__CacheKey key = QUAVER__V1__CACHE_KEY__INIT;
    key.namespace_ = (char *) "rooms";
    key.key = (char *) "7";
    qv_result_t r;
    struct { const char *svc, *method; const ProtobufCMessage *req; int timeout; } calls[5] = {
        { "cache", "Get", &key.base, 3000 },
        { "cache", "Get", &key.base, 3000 },
        { "cache", "Nope", NULL, 3000 },
        { "cache", "Slow", NULL, 100 },        /* the worker is too slow: 504 */
        { "nosuchservice", "Get", NULL, 300 }, /* no worker: the broker's 503 */
    };
    for (int i = 0; i < 5; i++) {
        qv_rpc_call(e->broker, calls[i].svc, calls[i].method, calls[i].req, NULL, NULL,
                    calls[i].timeout, &r);
        e->statuses[i] = r.status;
        snprintf(e->errors[i], sizeof e->errors[i], "%s", r.error);
        if (i == 0) {
            Quaver__V1__CacheGetReply *gr =
                quaver__v1__cache_get_reply__unpack(NULL, r.len, r.payload);
            if (!gr || !gr->found)
                e->statuses[i] = -1;
            if (gr)
                quaver__v1__cache_get_reply__free_unpacked(gr, NULL);
        }
        qv_result_free(&r);
    }
    return NULL;
}

static int s_e2e_selftest(void)
{
    int rc = -1;
    qv_broker_t *broker = qv_broker_new("tcp://127.0.0.1:*", 200, 3, 2000);
    char ep[64], bus_ep[64];
    snprintf(bus_ep, sizeof bus_ep, "inproc://qv-rpc-test-bus-%d", (int) getpid());
    /* A SUB that binds stands in for the monitor's XSUB: the server's PUB connects to it. */
    zsock_t *sub = zsock_new(ZMQ_SUB);
    s_e2e_t e = { 0 };
    qv_server_t *server = NULL;
    Quaver__V1__BusMessage *bm = NULL;
    char *topic = NULL;
    pthread_t st, ct;
    bool started = false;
    S_CHECK(broker && qv_broker_port(broker) > 0 && sub);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", qv_broker_port(broker));
    zsock_set_subscribe(sub, "metrics.");
    S_CHECK(zsock_bind(sub, "%s", bus_ep) == 0);

    qv_common_cfg_t cfg = { .instance = (char *) "t1", .broker = ep, .bus_pub = bus_ep,
                            .log_format = (char *) "text", .log_level = (char *) "info",
                            .heartbeat_ms = 200, .heartbeat_liveness = 3, .workers = 2 };
    server = qv_server_new("cache", &cfg, s_e2e_methods, &e);
    S_CHECK(server && strcmp(qv_server_instance(server), "t1") == 0);
    S_CHECK(qv_server_add_timer(server, 50, s_e2e_tick) == 0);
    e.server = server;
    e.broker = ep;
    S_CHECK(pthread_create(&st, NULL, s_e2e_server, &e) == 0);
    started = true;

    /* the metrics arrive on the bus, stamped with the publisher */
    zpoller_t *poller = zpoller_new(sub, NULL);
    bool got = zpoller_wait(poller, 3000) != NULL;
    zpoller_destroy(&poller);
    S_CHECK(got);
    bm = qv_bus_recv(sub, &topic);
    S_CHECK(bm && strcmp(topic, "metrics.cache") == 0 && strcmp(bm->publisher, "cache/t1") == 0);
    S_CHECK(bm->body_case == QUAVER__V1__BUS_MESSAGE__BODY_METRICS &&
            strcmp(bm->metrics->service, "cache") == 0 && bm->metrics->n_families > 0);

    S_CHECK(pthread_create(&ct, NULL, s_e2e_client, &e) == 0);
    pthread_join(ct, NULL);
    S_CHECK(e.statuses[0] == 200 && e.statuses[1] == 200);
    S_CHECK(e.statuses[2] == 404 && strstr(e.errors[2], "unknown method 'Nope'"));
    S_CHECK(e.statuses[3] == 504 && strcmp(e.errors[3], "deadline passed waiting for cache") == 0);
    S_CHECK(e.statuses[4] == 503);

    qv_server_stop(server);
    pthread_join(st, NULL);
    started = false;
    S_CHECK(e.run_rc == 0 && e.ticks > 0);
    qv_metrics_t *m = qv_server_metrics(server);
    S_CHECK(s_count(m, "Get", 200) == 2 && s_count(m, "unknown", 404) == 1);
    S_CHECK(s_count(m, "Slow", 200) == 1);   /* finished the request in hand */
    S_CHECK(e.test.calls == 2 && strcmp(e.test.last_key, "rooms/7") == 0);
    rc = 0;
fail:
    if (started) {
        qv_server_stop(server);
        pthread_join(st, NULL);
    }
    if (bm)
        quaver__v1__bus_message__free_unpacked(bm, NULL);
    zstr_free(&topic);
    qv_server_destroy(&server);
    zsock_destroy(&sub);
    qv_broker_destroy(&broker);
    return rc;
}

int qv_rpc_selftest(void)
{
    qv_metrics_t *m = qv_metrics_new("cache", "t1");
    s_test_app_t app = { 0 };
    Quaver__V1__Result *res = NULL;
    Quaver__V1__CacheGetReply *gr = NULL;
    Quaver__V1__StatsReply *stats = NULL;
    uint8_t *out = NULL;
    size_t out_len = 0;
    S_CHECK(m);
    int64_t later = qv_wall_ms() + 60000;

    Quaver__V1__CacheKey key = QUAVER__V1__CACHE_KEY__INIT;
    key.namespace_ = (char *) "rooms";
    key.key = (char *) "42";
    uint8_t kbuf[64];
    size_t klen = quaver__v1__cache_key__pack(&key, kbuf);

    /* a good call */
    res = s_roundtrip(m, &app, "Get", later, false, kbuf, klen);
    S_CHECK(res && res->status == 200 && strcmp(res->error, "") == 0);
    S_CHECK(app.calls == 1 && strcmp(app.last_key, "rooms/42") == 0);
    gr = quaver__v1__cache_get_reply__unpack(NULL, res->payload.len, res->payload.data);
    S_CHECK(gr && gr->found && strcmp(gr->tier, "local") == 0);
    quaver__v1__cache_get_reply__free_unpacked(gr, NULL);
    gr = NULL;
    quaver__v1__result__free_unpacked(res, NULL);

    /* a handler's own error */
    key.key = (char *) "missing";
    klen = quaver__v1__cache_key__pack(&key, kbuf);
    res = s_roundtrip(m, &app, "Get", 0, false, kbuf, klen);
    S_CHECK(res && res->status == 404 && strcmp(res->error, "no key 'missing'") == 0);
    quaver__v1__result__free_unpacked(res, NULL);

    /* bad Call bytes */
    const uint8_t junk[] = { 0xff, 0xff, 0xff, 0x01, 0x02 };
    S_CHECK(qv_dispatch("cache", s_test_methods, &app, m, junk, sizeof junk, &out, &out_len) == 0);
    res = quaver__v1__result__unpack(NULL, out_len, out);
    free(out);
    out = NULL;
    S_CHECK(res && res->status == 400 && strstr(res->error, "cannot decode quaver.v1.Call"));
    quaver__v1__result__free_unpacked(res, NULL);

    /* unknown method: 404, counted as method="unknown" */
    res = s_roundtrip(m, &app, "Nope", later, false, NULL, 0);
    S_CHECK(res && res->status == 404 &&
            strcmp(res->error, "unknown method 'Nope' of service 'cache'") == 0);
    quaver__v1__result__free_unpacked(res, NULL);

    /* past deadline: 504 and the handler does not run */
    int before = app.calls;
    res = s_roundtrip(m, &app, "Get", qv_wall_ms() - 1000, false, kbuf, klen);
    S_CHECK(res && res->status == 504 && app.calls == before);
    quaver__v1__result__free_unpacked(res, NULL);

    /* admin method: 403 without the right, 200 with it */
    res = s_roundtrip(m, &app, "Flush", later, false, NULL, 0);
    S_CHECK(res && res->status == 403 && app.calls == before);
    quaver__v1__result__free_unpacked(res, NULL);
    res = s_roundtrip(m, &app, "Flush", later, true, NULL, 0);
    S_CHECK(res && res->status == 200 && app.calls == before + 1);
    quaver__v1__result__free_unpacked(res, NULL);

    /* bad payload bytes: 400 naming the message type, handler not run */
    res = s_roundtrip(m, &app, "Get", later, false, junk, sizeof junk);
    S_CHECK(res && res->status == 400 && app.calls == before + 1);
    S_CHECK(strncmp(res->error, "cannot decode quaver.v1.CacheKey: ", 34) == 0);
    quaver__v1__result__free_unpacked(res, NULL);
    res = NULL;

    /* the counters */
    S_CHECK(s_count(m, "Get", 200) == 1);
    S_CHECK(s_count(m, "Get", 404) == 1);
    S_CHECK(s_count(m, "Get", 504) == 1);
    S_CHECK(s_count(m, "Get", 400) == 1);
    S_CHECK(s_count(m, "unknown", 400) == 1);
    S_CHECK(s_count(m, "unknown", 404) == 1);
    S_CHECK(s_count(m, "Nope", 404) == 0);
    S_CHECK(s_count(m, "Flush", 403) == 1 && s_count(m, "Flush", 200) == 1);
    S_CHECK(qv_metric_value(qv_metrics_histogram(m, "quaver_rpc_duration_seconds", "",
                                                 "service=cache,method=Get", NULL, 0)) == 4);

    /* Stats from the registry */
    stats = qv_stats_from_metrics(m, "cache");
    S_CHECK(stats && strcmp(stats->service, "cache") == 0);
    bool seen = false;
    for (size_t i = 0; i < stats->n_stats; i++)
        if (strcmp(stats->stats[i]->name, "quaver_rpc_requests_total{service=\"cache\","
                                          "method=\"Get\",status=\"200\"}") == 0)
            seen = stats->stats[i]->value == 1;
    S_CHECK(seen);
    qv_stats_reply_free(stats);
    stats = NULL;

    /* request ids: 16 hex characters, different each time */
    char id1[17], id2[17];
    qv_request_id(id1);
    qv_request_id(id2);
    S_CHECK(strlen(id1) == 16 && strspn(id1, "0123456789abcdef") == 16 && strcmp(id1, id2) != 0);

    qv_metrics_destroy(&m);
    return s_e2e_selftest();
fail:
    if (res)
        quaver__v1__result__free_unpacked(res, NULL);
    if (gr)
        quaver__v1__cache_get_reply__free_unpacked(gr, NULL);
    qv_stats_reply_free(stats);
    free(out);
    qv_metrics_destroy(&m);
    return -1;
}
