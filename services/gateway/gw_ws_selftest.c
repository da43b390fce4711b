/* gw_ws selftest: the WebSocket hub driven the way a client and the gateway drive it.
 *
 * Part 1, no sockets to the outside: gw_ws_room_event on a hub without civetweb, observed on
 * the bus (an inproc SUB that the hub's bus publisher connects to): seq starts at 1 per room and
 * increases by one, the JSON has type/room/seq/data, data is borrowed, not stolen.
 * Part 2, a real civetweb server on a free loopback port with only the hub's handler, a real
 * MDP broker with a fake dbopt worker (room 7 and 9: participant; anything else: not), and
 * civetweb's own WebSocket client: token checks, the connection limit, ping/pong, garbage and
 * binary input, subscribe/forbidden/unsubscribe, delivery of local events and of other
 * replicas' bus events (and not of our own echoes), the 64 KB limit and the idle close.
 * (Fragmented messages are not covered here: civetweb's client always sets FIN; the
 * integration tests send fragments from Python.)
 * Uses gw_auth (gateway_core) to mint tokens and libquaver for the broker and worker. */
#include "gw_ws.h"
#include "gw_auth.h"
#include "qv_bus.h"
#include "qv_clock.h"
#include "qv_mdp.h"
#include "qv_metrics.h"
#include "quaver/v1/dbopt.pb-c.h"
#include "quaver/v1/envelope.pb-c.h"

#include <czmq.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_CHECK(cond) do { \
        if (!(cond)) { \
            fprintf(stderr, "gw_ws_selftest: %s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond); \
            goto fail; \
        } \
    } while (0)

static const char *s_secret = "gw-ws-selftest-secret-0123456789abcdef";

/* ---- part 1: events on the bus ------------------------------------------------------------ */

/* Receives one bus message within timeout_ms and parses its json; caller decrefs. */
static json_t *s_bus_event(zsock_t *sub, char **topic_p, int timeout_ms)
{
    zpoller_t *p = zpoller_new(sub, NULL);
    void *which = zpoller_wait(p, timeout_ms);
    zpoller_destroy(&p);
    if (!which)
        return NULL;
    Quaver__V1__BusMessage *m = qv_bus_recv(sub, topic_p);
    if (!m)
        return NULL;
    json_t *o = m->body_case == QUAVER__V1__BUS_MESSAGE__BODY_JSON
                    ? json_loads(m->json, 0, NULL) : NULL;
    quaver__v1__bus_message__free_unpacked(m, NULL);
    return o;
}

static bool s_is_event(json_t *o, const char *type, int64_t room, int64_t seq)
{
    return o && json_is_object(o) && json_object_size(o) == 4
           && json_is_string(json_object_get(o, "type"))
           && strcmp(json_string_value(json_object_get(o, "type")), type) == 0
           && json_integer_value(json_object_get(o, "room")) == room
           && json_integer_value(json_object_get(o, "seq")) == seq
           && json_is_object(json_object_get(o, "data"));
}

static int s_test_events(void)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://gw-ws-selftest-bus-%d", (int) getpid());
    zsock_t *sub = zsock_new(ZMQ_SUB);
    qv_bus_t *bus = NULL;
    qv_metrics_t *metrics = qv_metrics_new("gateway", "selftest");
    gw_ws_t *ws = NULL;
    json_t *data = json_pack("{s:i, s:i}", "track_id", 3, "vote_score", 2);
    json_t *o = NULL;
    char *topic = NULL;
    S_CHECK(sub && metrics && data);
    zsock_set_subscribe(sub, "");
    S_CHECK(zsock_bind(sub, "%s", ep) == 0);
    bus = qv_bus_new(ep, "gateway/selftest");
    S_CHECK(bus);
    gw_ws_cfg_t cfg = { .jwt_secret = s_secret, .broker = "", .bus_sub = "",
                        .publisher = "gateway/selftest", .max_connections = 10,
                        .ping_interval_s = 0, .activity_timeout_s = 0,
                        .bus = bus, .metrics = metrics };
    ws = gw_ws_new(NULL, &cfg);
    S_CHECK(ws);
    S_CHECK(gw_ws_count(ws) == 0);
    /* A PUB that connects learns the SUB's subscription only after a while (the first
     * messages of a fresh inproc PUB are dropped): publish warm-ups until one arrives. */
    {
        bool warm = false;
        for (int i = 0; i < 40 && !warm; i++) {
            qv_bus_publish_json(bus, "warmup", "{}");
            zpoller_t *p = zpoller_new(sub, NULL);
            warm = zpoller_wait(p, 50) != NULL;
            zpoller_destroy(&p);
        }
        S_CHECK(warm);
        zpoller_t *p = zpoller_new(sub, NULL);
        while (zpoller_wait(p, 100)) {
            zmsg_t *m = zmsg_recv(sub);
            zmsg_destroy(&m);
        }
        zpoller_destroy(&p);
    }

    gw_ws_room_event(ws, 7, "vote_changed", data);
    gw_ws_room_event(ws, 7, "vote_changed", data);
    gw_ws_room_event(ws, 8, "track_added", data);
    gw_ws_room_event(ws, 7, "playback_changed", NULL);
    /* garbage from a caller: ignored, no seq consumed */
    gw_ws_room_event(NULL, 7, "vote_changed", data);
    gw_ws_room_event(ws, 0, "vote_changed", data);
    gw_ws_room_event(ws, -5, "vote_changed", data);
    gw_ws_room_event(ws, 7, NULL, data);
    gw_ws_room_event(ws, 7, "\xff\xfe not utf-8", data);
    gw_ws_room_event(ws, 7, "participant_joined", data);
    S_CHECK(data->refcount == 1);   /* borrowed, not stolen */

    o = s_bus_event(sub, &topic, 2000);
    S_CHECK(s_is_event(o, "vote_changed", 7, 1));
    S_CHECK(topic && strcmp(topic, "room.7") == 0);
    S_CHECK(json_equal(json_object_get(o, "data"), data));
    json_decref(o);
    free(topic);
    topic = NULL;
    o = s_bus_event(sub, &topic, 2000);
    S_CHECK(s_is_event(o, "vote_changed", 7, 2));
    json_decref(o);
    free(topic);
    topic = NULL;
    o = s_bus_event(sub, &topic, 2000);
    S_CHECK(s_is_event(o, "track_added", 8, 1));
    S_CHECK(topic && strcmp(topic, "room.8") == 0);
    json_decref(o);
    free(topic);
    topic = NULL;
    o = s_bus_event(sub, &topic, 2000);
    S_CHECK(s_is_event(o, "playback_changed", 7, 3));
    S_CHECK(json_object_size(json_object_get(o, "data")) == 0);
    json_decref(o);
    free(topic);
    topic = NULL;
    o = s_bus_event(sub, &topic, 2000);
    S_CHECK(s_is_event(o, "participant_joined", 7, 4));
    json_decref(o);
    free(topic);
    topic = NULL;
    o = s_bus_event(sub, &topic, 300);
    S_CHECK(o == NULL);   /* nothing else was published */

    qv_metric_t *m = qv_metrics_counter(metrics, "quaver_ws_events_total", "x",
                                        "type=vote_changed");
    S_CHECK(m && qv_metric_value(m) == 2);

    gw_ws_destroy(&ws);
    S_CHECK(ws == NULL);
    gw_ws_destroy(&ws);   /* NULL is fine */
    qv_bus_destroy(&bus);
    qv_metrics_destroy(&metrics);
    zsock_destroy(&sub);
    json_decref(data);
    return 0;
fail:
    json_decref(o);
    free(topic);
    gw_ws_destroy(&ws);
    qv_bus_destroy(&bus);
    qv_metrics_destroy(&metrics);
    zsock_destroy(&sub);
    json_decref(data);
    return -1;
}

/* ---- part 2: a real server --------------------------------------------------------------- */

/* The fake dbopt: answers Query room_is_participant with 't' for rooms 7 and 9. */
typedef struct {
    const char *broker;
    atomic_bool stop;
    atomic_int  calls;
} s_fake_dbopt_t;

static zmsg_t *s_result(int status, const ProtobufCMessage *payload)
{
    Quaver__V1__Result res = QUAVER__V1__RESULT__INIT;
    res.status = status;
    uint8_t *pbuf = NULL;
    if (payload) {
        size_t n = protobuf_c_message_get_packed_size(payload);
        pbuf = malloc(n ? n : 1);
        if (!pbuf)
            return NULL;
        protobuf_c_message_pack(payload, pbuf);
        res.payload.data = pbuf;
        res.payload.len = n;
    }
    size_t len = quaver__v1__result__get_packed_size(&res);
    uint8_t *buf = malloc(len ? len : 1);
    zmsg_t *msg = NULL;
    if (buf) {
        quaver__v1__result__pack(&res, buf);
        msg = zmsg_new();
        zmsg_addmem(msg, buf, len);
    }
    free(buf);
    free(pbuf);
    return msg;
}

static void *s_fake_dbopt(void *arg)
{
    s_fake_dbopt_t *f = arg;
    qv_worker_t *w = qv_worker_new(f->broker, "dbopt", 250, 3);
    if (!w)
        return NULL;
    while (!atomic_load(&f->stop)) {
        zframe_t *reply_to = NULL;
        zmsg_t *body = qv_worker_recv(w, 100, &reply_to);
        if (!body)
            continue;
        atomic_fetch_add(&f->calls, 1);
        zframe_t *fr = zmsg_first(body);
        Quaver__V1__Call *call = fr ? quaver__v1__call__unpack(NULL, zframe_size(fr),
                                                               zframe_data(fr)) : NULL;
        Quaver__V1__QueryRequest *q = NULL;
        if (call && strcmp(call->method, "Query") == 0)
            q = quaver__v1__query_request__unpack(NULL, call->payload.len, call->payload.data);
        zmsg_t *out;
        if (q && strcmp(q->name, "room_is_participant") == 0 && q->n_params == 2) {
            const char *room = q->params[0]->text;
            bool yes = strcmp(room, "7") == 0 || strcmp(room, "9") == 0;
            char *cols[] = { (char *) "is_participant" };
            Quaver__V1__Value v = QUAVER__V1__VALUE__INIT;
            v.text = (char *) (yes ? "t" : "f");
            Quaver__V1__Value *pv[] = { &v };
            Quaver__V1__Row row = QUAVER__V1__ROW__INIT;
            row.n_cells = 1;
            row.cells = pv;
            Quaver__V1__Row *prow[] = { &row };
            Quaver__V1__QueryReply rep = QUAVER__V1__QUERY_REPLY__INIT;
            rep.n_columns = 1;
            rep.columns = cols;
            rep.n_rows = 1;
            rep.rows = prow;
            out = s_result(200, &rep.base);
        }
        else
            out = s_result(400, NULL);
        if (q)
            quaver__v1__query_request__free_unpacked(q, NULL);
        if (call)
            quaver__v1__call__free_unpacked(call, NULL);
        zmsg_destroy(&body);
        if (out)
            qv_worker_send(w, &out, &reply_to);
        zframe_destroy(&reply_to);
        zmsg_destroy(&out);
    }
    qv_worker_destroy(&w);
    return NULL;
}

/* A WebSocket client (civetweb's): collects text messages; answers PINGs unless told not to. */
typedef struct {
    struct mg_connection *conn;
    pthread_mutex_t mu;
    pthread_cond_t  cond;
    char           *msgs[64];
    int             head, tail;
    int             pings;
    bool            closed;
    bool            mute;        /* do not answer PINGs */
} s_client_t;

static int s_client_data(struct mg_connection *conn, int bits, char *data, size_t len, void *arg)
{
    s_client_t *cl = arg;
    int op = bits & 0x0f;
    pthread_mutex_lock(&cl->mu);
    if (op == MG_WEBSOCKET_OPCODE_TEXT && cl->tail - cl->head < 64) {
        cl->msgs[cl->tail % 64] = strndup(data, len);
        cl->tail++;
    }
    else if (op == MG_WEBSOCKET_OPCODE_PING)
        cl->pings++;
    else if (op == MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE)
        cl->closed = true;
    bool mute = cl->mute;
    pthread_cond_broadcast(&cl->cond);
    pthread_mutex_unlock(&cl->mu);
    if (op == MG_WEBSOCKET_OPCODE_PING && !mute)
        mg_websocket_client_write(conn, MG_WEBSOCKET_OPCODE_PONG, data, len);
    return op != MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE;
}

static void s_client_close(const struct mg_connection *conn, void *arg)
{
    s_client_t *cl = arg;
    pthread_mutex_lock(&cl->mu);
    cl->closed = true;
    pthread_cond_broadcast(&cl->cond);
    pthread_mutex_unlock(&cl->mu);
}

static int s_client_open(s_client_t *cl, int port, const char *token)
{
    memset(cl, 0, sizeof *cl);
    pthread_mutex_init(&cl->mu, NULL);
    pthread_cond_init(&cl->cond, NULL);
    char path[4200], ebuf[256] = "";
    if (token)
        snprintf(path, sizeof path, "/ws?token=%s", token);
    else
        snprintf(path, sizeof path, "/ws");
    cl->conn = mg_connect_websocket_client("127.0.0.1", port, 0, ebuf, sizeof ebuf, path, NULL,
                                           s_client_data, s_client_close, cl);
    return cl->conn ? 0 : -1;
}

/* Ends the client: CLOSE so the server drops the socket (the client thread then leaves its
 * read loop at once instead of after civetweb's 2 s poll quantum), then frees it. */
static void s_client_end(s_client_t *cl)
{
    if (cl->conn) {
        pthread_mutex_lock(&cl->mu);
        bool closed = cl->closed;
        pthread_mutex_unlock(&cl->mu);
        if (!closed)
            mg_websocket_client_write(cl->conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, "\x03\xe8",
                                      2);
        mg_close_connection(cl->conn);
        cl->conn = NULL;
    }
    while (cl->head < cl->tail)
        free(cl->msgs[cl->head++ % 64]);
    pthread_mutex_destroy(&cl->mu);
    pthread_cond_destroy(&cl->cond);
}

static int s_send_text(s_client_t *cl, const char *text)
{
    return mg_websocket_client_write(cl->conn, MG_WEBSOCKET_OPCODE_TEXT, text, strlen(text)) > 0
               ? 0 : -1;
}

static void s_deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long) (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* The next text message within timeout_ms, parsed (caller decrefs); NULL on timeout. */
static json_t *s_next(s_client_t *cl, int timeout_ms)
{
    struct timespec ts;
    s_deadline(&ts, timeout_ms);
    char *text = NULL;
    pthread_mutex_lock(&cl->mu);
    while (cl->head == cl->tail)
        if (pthread_cond_timedwait(&cl->cond, &cl->mu, &ts) != 0)
            break;
    if (cl->head < cl->tail)
        text = cl->msgs[cl->head++ % 64];
    pthread_mutex_unlock(&cl->mu);
    json_t *o = text ? json_loads(text, 0, NULL) : NULL;
    if (text && !o)
        fprintf(stderr, "gw_ws_selftest: server sent non-JSON text: %.200s\n", text);
    free(text);
    return o;
}

static bool s_wait_closed(s_client_t *cl, int timeout_ms)
{
    struct timespec ts;
    s_deadline(&ts, timeout_ms);
    pthread_mutex_lock(&cl->mu);
    while (!cl->closed)
        if (pthread_cond_timedwait(&cl->cond, &cl->mu, &ts) != 0)
            break;
    bool closed = cl->closed;
    pthread_mutex_unlock(&cl->mu);
    return closed;
}

static bool s_is_type(json_t *o, const char *type)
{
    const char *t = json_string_value(json_object_get(o, "type"));
    return t && strcmp(t, type) == 0;
}

static bool s_is_error(json_t *o, const char *code)
{
    const char *c = json_string_value(json_object_get(json_object_get(o, "error"), "code"));
    return s_is_type(o, "error") && c && strcmp(c, code) == 0
           && json_is_string(json_object_get(json_object_get(o, "error"), "message"));
}

/* Sends text and expects an error frame with code. */
static bool s_expect_error(s_client_t *cl, const char *text, const char *code)
{
    if (s_send_text(cl, text) != 0)
        return false;
    json_t *o = s_next(cl, 3000);
    bool ok = s_is_error(o, code);
    if (!ok) {
        char *d = o ? json_dumps(o, 0) : NULL;
        fprintf(stderr, "gw_ws_selftest: for %.60s expected error %s, got %s\n", text, code,
                d ? d : "nothing");
        free(d);
    }
    json_decref(o);
    return ok;
}

static bool s_wait_count(gw_ws_t *ws, int n, int timeout_ms)
{
    int64_t end = qv_mono_ms() + timeout_ms;
    while (gw_ws_count(ws) != n && qv_mono_ms() < end)
        zclock_sleep(20);
    return gw_ws_count(ws) == n;
}

static int s_publish_remote(zsock_t *pub, const char *publisher, const char *json)
{
    Quaver__V1__BusMessage m = QUAVER__V1__BUS_MESSAGE__INIT;
    m.publisher = (char *) publisher;
    m.seq = 1;
    m.body_case = QUAVER__V1__BUS_MESSAGE__BODY_JSON;
    m.json = (char *) json;
    size_t len = quaver__v1__bus_message__get_packed_size(&m);
    uint8_t *buf = malloc(len);
    if (!buf)
        return -1;
    quaver__v1__bus_message__pack(&m, buf);
    zmsg_t *msg = zmsg_new();
    zmsg_addstr(msg, "room.7");
    zmsg_addmem(msg, buf, len);
    free(buf);
    return zmsg_send(&msg, pub);
}

static int s_test_server(void)
{
    int rc = -1;
    char broker_ep[80], bus_ep[80];
    snprintf(broker_ep, sizeof broker_ep, "inproc://gw-ws-selftest-broker-%d", (int) getpid());
    snprintf(bus_ep, sizeof bus_ep, "inproc://gw-ws-selftest-xpub-%d", (int) getpid());
    qv_broker_t *broker = NULL;
    s_fake_dbopt_t fake = { .broker = broker_ep };
    atomic_init(&fake.stop, false);
    atomic_init(&fake.calls, 0);
    pthread_t fake_thread;
    bool fake_started = false;
    zsock_t *pub = NULL;
    qv_metrics_t *metrics = qv_metrics_new("gateway", "selftest");
    struct mg_context *ctx = NULL;
    gw_ws_t *ws = NULL;
    s_client_t a, b, c, d;
    bool a_open = false, b_open = false, d_open = false;
    json_t *o = NULL, *data = NULL;
    char *token = NULL, *token2 = NULL;
    int port = 0;

    gw_identity_t alice = { .user_id = 41, .username = "alice", .admin = false };
    gw_identity_t bob = { .user_id = 42, .username = "bob", .admin = false };
    token = gw_auth_issue(s_secret, 300, &alice);
    token2 = gw_auth_issue(s_secret, 300, &bob);
    S_CHECK(token && token2 && metrics);

    broker = qv_broker_new(broker_ep, 250, 3, 2000);
    S_CHECK(broker);
    S_CHECK(pthread_create(&fake_thread, NULL, s_fake_dbopt, &fake) == 0);
    fake_started = true;
    pub = zsock_new(ZMQ_PUB);
    S_CHECK(pub && zsock_bind(pub, "%s", bus_ep) == 0);

    const char *options[] = { "listening_ports", "127.0.0.1:0", "num_threads", "16",
                              "websocket_timeout_ms", "500", NULL };
    struct mg_callbacks callbacks;
    memset(&callbacks, 0, sizeof callbacks);
    ctx = mg_start(&callbacks, NULL, options);
    S_CHECK(ctx);
    struct mg_server_port ports[4];
    S_CHECK(mg_get_server_ports(ctx, 4, ports) >= 1);
    port = ports[0].port;
    S_CHECK(port > 0);

    gw_ws_cfg_t cfg = { .jwt_secret = s_secret, .broker = broker_ep, .bus_sub = bus_ep,
                        .publisher = "gateway/self", .max_connections = 2,
                        .ping_interval_s = 1, .activity_timeout_s = 2,
                        .bus = NULL, .metrics = metrics };
    ws = gw_ws_new(ctx, &cfg);
    S_CHECK(ws);

    /* tokens: none, garbage, signed with another secret -> refused before the handshake */
    S_CHECK(s_client_open(&c, port, NULL) != 0);
    s_client_end(&c);
    S_CHECK(s_client_open(&c, port, "not.a.jwt") != 0);
    s_client_end(&c);
    {
        char *other = gw_auth_issue("another-secret-entirely-0123456789", 300, &alice);
        S_CHECK(other);
        int r = s_client_open(&c, port, other);
        free(other);
        s_client_end(&c);
        S_CHECK(r != 0);
    }
    S_CHECK(gw_ws_count(ws) == 0);

    S_CHECK(s_client_open(&a, port, token) == 0);
    a_open = true;
    S_CHECK(s_wait_count(ws, 1, 2000));

    /* ping -> pong */
    S_CHECK(s_send_text(&a, "{\"type\":\"ping\"}") == 0);
    o = s_next(&a, 3000);
    S_CHECK(s_is_type(o, "pong"));
    json_decref(o);
    o = NULL;

    /* garbage: an error each, and the connection stays */
    S_CHECK(s_expect_error(&a, "not json", "bad_request"));
    S_CHECK(s_expect_error(&a, "", "bad_request"));
    S_CHECK(s_expect_error(&a, "[1,2,3]", "bad_request"));
    S_CHECK(s_expect_error(&a, "null", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":5}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"dance\"}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"subscribe\"}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"subscribe\",\"room\":-3}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"subscribe\",\"room\":0}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"subscribe\",\"room\":\"7x\"}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"subscribe\",\"room\":7.5}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"subscribe\",\"room\":1e400}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"subscribe\",\"room\":99999999999999999999999}",
                           "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"subscribe\",\"type\":\"ping\"}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"sub\xff\xfe\"}", "bad_request"));
    S_CHECK(s_expect_error(&a, "{\"type\":\"ping\"", "bad_request"));
    {
        char deep[6001];
        memset(deep, '[', 6000);
        deep[6000] = '\0';
        S_CHECK(s_expect_error(&a, deep, "bad_request"));
    }
    {
        static const char nul_inside[] = "{\"type\":\"ping\"}\0{}";
        S_CHECK(mg_websocket_client_write(a.conn, MG_WEBSOCKET_OPCODE_TEXT, nul_inside,
                                          sizeof nul_inside - 1) > 0);
        o = s_next(&a, 3000);
        S_CHECK(s_is_error(o, "bad_request"));
        json_decref(o);
        o = NULL;
    }
    S_CHECK(mg_websocket_client_write(a.conn, MG_WEBSOCKET_OPCODE_BINARY, "\x01\x02", 2) > 0);
    o = s_next(&a, 3000);
    S_CHECK(s_is_error(o, "unsupported"));
    json_decref(o);
    o = NULL;
    S_CHECK(gw_ws_count(ws) == 1);

    /* subscribe: forbidden for a room we are not in, fine for room 7 (number or string) */
    S_CHECK(s_expect_error(&a, "{\"type\":\"subscribe\",\"room\":8}", "forbidden"));
    S_CHECK(s_send_text(&a, "{\"type\":\"subscribe\",\"room\":7}") == 0);
    o = s_next(&a, 3000);
    S_CHECK(s_is_type(o, "subscribed") && json_integer_value(json_object_get(o, "room")) == 7);
    json_decref(o);
    o = NULL;
    S_CHECK(s_send_text(&a, "{\"type\":\"subscribe\",\"room\":\"7\"}") == 0);
    o = s_next(&a, 3000);
    S_CHECK(s_is_type(o, "subscribed") && json_integer_value(json_object_get(o, "room")) == 7);
    json_decref(o);
    o = NULL;
    S_CHECK(atomic_load(&fake.calls) >= 3);

    /* local events: room 8 is not delivered (the hub thread works in order, so room 7's next
     * event arriving first proves it), room 7 is, with seq 1, 2 */
    data = json_pack("{s:i}", "track_id", 5);
    S_CHECK(data);
    gw_ws_room_event(ws, 8, "vote_changed", data);
    gw_ws_room_event(ws, 7, "vote_changed", data);
    gw_ws_room_event(ws, 7, "track_added", data);
    o = s_next(&a, 3000);
    S_CHECK(s_is_event(o, "vote_changed", 7, 1) && json_equal(json_object_get(o, "data"), data));
    json_decref(o);
    o = s_next(&a, 3000);
    S_CHECK(s_is_event(o, "track_added", 7, 2));
    json_decref(o);
    o = NULL;

    /* events of other replicas arrive unchanged; our own echoes do not */
    zclock_sleep(200);   /* the hub's SUB has joined our PUB by now */
    S_CHECK(s_publish_remote(pub, "gateway/self",
                             "{\"type\":\"vote_changed\",\"room\":7,\"seq\":1,\"data\":{}}") == 0);
    S_CHECK(s_publish_remote(pub, "gateway/other",
                             "{\"type\":\"track_added\",\"room\":7,\"seq\":42,\"data\":{}}") == 0);
    o = s_next(&a, 3000);
    S_CHECK(s_is_event(o, "track_added", 7, 42));
    json_decref(o);
    o = NULL;
    S_CHECK(s_publish_remote(pub, "gateway/other", "this is not json") == 0);
    S_CHECK(s_publish_remote(pub, "gateway/other",
                             "{\"type\":\"participant_left\",\"room\":7,\"seq\":43,\"data\":{}}")
            == 0);
    o = s_next(&a, 3000);
    S_CHECK(s_is_event(o, "participant_left", 7, 43));
    json_decref(o);
    o = NULL;

    /* the connection limit (2): b fits, c does not; after b leaves, there is room again */
    S_CHECK(s_client_open(&b, port, token2) == 0);
    b_open = true;
    S_CHECK(s_wait_count(ws, 2, 2000));
    S_CHECK(s_client_open(&c, port, token2) != 0);
    s_client_end(&c);
    S_CHECK(s_send_text(&b, "{\"type\":\"subscribe\",\"room\":9}") == 0);
    o = s_next(&b, 3000);
    S_CHECK(s_is_type(o, "subscribed"));
    json_decref(o);
    o = NULL;
    s_client_end(&b);
    b_open = false;
    S_CHECK(s_wait_count(ws, 1, 3000));

    /* unsubscribe: room 7 stops, room 9 (subscribed after) keeps coming */
    S_CHECK(s_send_text(&a, "{\"type\":\"unsubscribe\",\"room\":7}") == 0);
    o = s_next(&a, 3000);
    S_CHECK(s_is_type(o, "unsubscribed"));
    json_decref(o);
    S_CHECK(s_send_text(&a, "{\"type\":\"subscribe\",\"room\":9}") == 0);
    o = s_next(&a, 3000);
    S_CHECK(s_is_type(o, "subscribed"));
    json_decref(o);
    o = NULL;
    gw_ws_room_event(ws, 7, "vote_changed", data);
    gw_ws_room_event(ws, 9, "vote_changed", data);
    o = s_next(&a, 3000);
    S_CHECK(s_is_event(o, "vote_changed", 9, 1));
    json_decref(o);
    o = NULL;

    /* keepalive: a answers the PINGs and stays; d does not and is closed for silence */
    S_CHECK(s_client_open(&d, port, token2) == 0);
    d_open = true;
    pthread_mutex_lock(&d.mu);
    d.mute = true;
    pthread_mutex_unlock(&d.mu);
    S_CHECK(s_wait_closed(&d, 6000));
    S_CHECK(s_wait_count(ws, 1, 3000));
    pthread_mutex_lock(&a.mu);
    int a_pings = a.pings;
    bool a_closed = a.closed;
    pthread_mutex_unlock(&a.mu);
    S_CHECK(a_pings >= 2 && !a_closed);
    s_client_end(&d);
    d_open = false;

    /* a message over 64 KB: an error frame, then CLOSE */
    {
        size_t big = 70 * 1024;
        char *huge = malloc(big);
        S_CHECK(huge);
        memset(huge, ' ', big);
        memcpy(huge, "{\"type\":\"ping\"", 14);
        huge[big - 1] = '}';
        (void) mg_websocket_client_write(a.conn, MG_WEBSOCKET_OPCODE_TEXT, huge, big);
        free(huge);
        /* The hub stops reading at 64 KB, sends the error frame and closes. When the close
         * wins the race with the rest of our write, the kernel resets the connection and
         * both the rest of our write and the error frame may be lost. Either way the connection
         * must end; whatever frame did arrive must be the error. */
        o = s_next(&a, 3000);
        if (o)
            S_CHECK(s_is_error(o, "too_large"));
        json_decref(o);
        o = NULL;
        S_CHECK(s_wait_closed(&a, 3000));
        S_CHECK(s_wait_count(ws, 0, 3000));
    }

    rc = 0;
fail:
    json_decref(o);
    json_decref(data);
    if (a_open)
        s_client_end(&a);
    if (b_open)
        s_client_end(&b);
    if (d_open)
        s_client_end(&d);
    /* mg_stop first: it joins the connection threads, so every close handler has run */
    if (ctx)
        mg_stop(ctx);
    if (ws) {
        int left = gw_ws_count(ws);
        if (left != 0) {
            fprintf(stderr, "gw_ws_selftest: %d connections left after mg_stop\n", left);
            rc = -1;
        }
        gw_ws_destroy(&ws);
    }
    if (fake_started) {
        atomic_store(&fake.stop, true);
        pthread_join(fake_thread, NULL);
    }
    qv_broker_destroy(&broker);
    zsock_destroy(&pub);
    qv_metrics_destroy(&metrics);
    free(token);
    free(token2);
    return rc;
}

int gw_ws_selftest(void)
{
    if (s_test_events() != 0)
        return -1;
    if (!mg_check_feature(16)) {
        fprintf(stderr, "gw_ws_selftest: civetweb built without WebSockets; server part skipped\n");
        return 0;
    }
    mg_init_library(0);
    int rc = s_test_server();
    mg_exit_library();
    return rc;
}
