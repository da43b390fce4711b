/* gw_ws: the WebSocket hub (see gw_ws.h for the protocol a client sees).
 *
 * What it guarantees:
 * - Only a client holding a valid JWT gets a WebSocket, and never more than max_connections of
 *   them are open (or being opened) at once; a refused upgrade gets an HTTP error with the
 *   gateway's JSON error body (401 bad token, 503 full) instead of a bare disconnect.
 * - A client receives a room's events only after dbopt said it is a participant of that room.
 * - Events of one room leave this gateway in seq order (1, 2, 3 ...), on the bus and to every
 *   local subscriber: seq is assigned, the event published and queued under one mutex, and a
 *   single hub thread delivers the queue, so two HTTP threads committing changes to the same
 *   room at once can never make a client see seq 6 before seq 5.
 * - Nothing a client sends crashes the daemon: bad JSON, unknown types, binary frames and
 *   fragments are answered with an error frame and the connection stays; a message over 64 KB
 *   is answered with an error frame and a close with status 1009 (RFC 6455 "message too big":
 *   a client that sends that much is not speaking our protocol, and holding it open invites a
 *   stream of large allocations).
 * - Writes to one connection are serialised (our per-connection mutex, and civetweb's own
 *   mg_lock_connection inside mg_websocket_write), and no thread touches a civetweb connection
 *   after its close handler has run (civetweb reuses the struct for the next client).
 * - Connections silent (not even a PONG) for longer than activity_timeout_s are closed.
 *
 * Threads:
 * - civetweb's worker threads run the connect/ready/data/close handlers, one thread per open
 *   WebSocket (its reader). The participant check (a dbopt call) runs on that thread.
 * - one hub thread ("gw-ws") owns the inproc PULL end of the local event queue, the bus SUB
 *   socket and the keepalive timer. A timer in our own loop (rather than in civetweb) because
 *   civetweb owns the connection threads and offers no timer; the loop already wakes for
 *   events, so the keepalive costs no extra thread.
 * - HTTP handler threads call gw_ws_room_event.
 *
 * Ownership and lifetime:
 * - s_conn_t is reference counted: one reference belongs to the civetweb connection (taken in
 *   the connect handler, dropped in the close handler) and one to each in-flight delivery or
 *   keepalive pass (taken under the hub mutex while copying the target list). Writes happen
 *   without the hub mutex, so a slow client delays only the hub thread, never the HTTP threads
 *   or the other connections' readers. It does delay the other subscribers of the same pass:
 *   mg_websocket_write blocks up to civetweb's request_timeout_ms on a full socket buffer; the
 *   keepalive then finds the client silent and closes it. A per-connection sender thread would
 *   remove that, at the price of twice the threads; not worth it at our connection counts.
 * - gw_ws_destroy must be called after mg_stop(ctx): mg_stop joins the connection threads, so
 *   every close handler has run and no civetweb thread can still reach the hub. If connections
 *   are still open, destroy stops the hub thread and deliberately leaks the hub (logging an
 *   error) rather than free memory that civetweb threads still use.
 *
 * civetweb settings this file relies on (the gateway's mg_start options):
 * - enable_websocket_ping_pong must stay "no" (the default): with "yes" civetweb swallows PONG
 *   frames before our data handler, and the activity timeout would close healthy clients. We
 *   answer the client's PINGs ourselves.
 * - websocket_timeout_ms (or request_timeout_ms when unset) is how long a reader thread waits
 *   in recv before it notices a close we asked for (mg_close_connection on a server-side
 *   WebSocket only sets a flag); around 1000 ms keeps idle closes and shutdown prompt.
 */
#include "gw_ws.h"
#include "gw_http.h"
#include "gw_auth.h"
#include "gw_cache.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "qv_rpc.h"
#include "quaver/v1/dbopt.pb-c.h"

#include <czmq.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_MESSAGE     (64 * 1024)  /* largest client message we read (after reassembly) */
#define S_MAX_ROOMS       256          /* subscriptions per connection */
#define S_RPC_TIMEOUT_MS  2000         /* the participant check */
#define S_QUEUE_HWM       10000        /* local events waiting for the hub thread */
#define S_TOKEN_MAX       4096
#define S_POLL_MS         200          /* hub thread: how often it looks at the stop flag */
#define S_WS_PATH         "/ws"

/* ---- connections ---------------------------------------------------------------------- */

typedef struct s_conn_t s_conn_t;
struct s_conn_t {
    struct mg_connection *conn;  /* NULL once closed; only touched under wmu */
    gw_identity_t   id;
    pthread_mutex_t wmu;         /* serialises writes; guards conn, closed, killed, broken */
    bool            closed;      /* close handler ran: civetweb may reuse conn */
    bool            killed;      /* we sent CLOSE and asked civetweb to drop it */
    bool            broken;      /* a write failed: stop writing, the reader will notice */
    atomic_int      refs;
    _Atomic int64_t last_rx_ms;  /* monotonic time of the last frame from the client */
    /* guarded by the hub mutex */
    int64_t        *rooms;
    int             nrooms, rooms_cap;
    bool            linked;
    s_conn_t       *prev, *next;
    /* the connection's reader thread only */
    char           *frag;        /* a fragmented text message being reassembled */
    size_t          frag_len;
    bool            in_text_frag, in_binary_frag;
};

struct gw_ws_t {
    gw_ws_cfg_t        cfg;      /* strings, bus and metrics borrowed */
    struct mg_context *ctx;
    pthread_mutex_t    mu;       /* guards conns, nconns, nopen, seqs, push */
    s_conn_t          *conns;    /* open connections (ready handler ran) */
    int                nconns;   /* accepted by the connect handler and not yet closed */
    int                nopen;    /* linked in conns */
    zhashx_t          *seqs;     /* "room id" -> int64_t * last seq given */
    zsock_t           *push;     /* local event queue, sending end (under mu) */
    zsock_t           *pull;     /* receiving end: hub thread only */
    zsock_t           *sub;      /* bus subscriber: hub thread only; NULL without bus_sub */
    pthread_t          thread;
    bool               thread_started;
    atomic_bool        stop;
    qv_metric_t       *m_conns, *m_sent, *m_dropped, *m_remote, *m_idle;
};

static s_conn_t *s_conn_new(const gw_identity_t *id)
{
    s_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->id = *id;
    pthread_mutex_init(&c->wmu, NULL);
    atomic_init(&c->refs, 1);
    atomic_init(&c->last_rx_ms, qv_mono_ms());
    return c;
}

static void s_conn_unref(s_conn_t *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&c->wmu);
    free(c->rooms);
    free(c->frag);
    free(c);
}

/* Caller holds the hub mutex. */
static bool s_conn_has_room(const s_conn_t *c, int64_t room)
{
    for (int i = 0; i < c->nrooms; i++)
        if (c->rooms[i] == room)
            return true;
    return false;
}

/* Writes one frame. Returns the civetweb result (> 0 sent), or -1 when the connection is gone,
 * being closed, or failed before: then nothing is written. */
static int s_conn_write(gw_ws_t *self, s_conn_t *c, int opcode, const char *data, size_t len)
{
    int rc = -1;
    pthread_mutex_lock(&c->wmu);
    if (!c->closed && !c->killed && !c->broken && c->conn) {
        rc = mg_websocket_write(c->conn, opcode, data, len);
        if (rc <= 0) {
            /* The socket is dead or timed out mid-frame; another frame after a partial one
             * would be garbage to the client. The reader sees the error and closes. */
            c->broken = true;
            rc = -1;
        }
    }
    pthread_mutex_unlock(&c->wmu);
    if (rc > 0 && opcode == MG_WEBSOCKET_OPCODE_TEXT && self->m_sent)
        qv_metric_add(self->m_sent, 1);
    return rc;
}

/* Sends CLOSE with status and reason, then asks civetweb to end the connection (for a
 * server-side WebSocket mg_close_connection only sets a flag the reader checks after its recv
 * times out, or at once when the client answers our CLOSE). Only called for connections in
 * their read loop: the keepalive picks connections silent for seconds since the ready handler.
 * Known window, accepted: if the client closes at the very instant (its reader has left the
 * loop but not yet entered our close handler), civetweb closes the socket from this thread;
 * the close handler then finds the state through the hub list. */
static void s_conn_kill(s_conn_t *c, int status, const char *reason)
{
    unsigned char frame[125];
    size_t rlen = strlen(reason);
    if (rlen > sizeof frame - 2)
        rlen = sizeof frame - 2;
    frame[0] = (unsigned char) (status >> 8);
    frame[1] = (unsigned char) (status & 0xff);
    memcpy(frame + 2, reason, rlen);
    pthread_mutex_lock(&c->wmu);
    if (!c->closed && !c->killed && c->conn) {
        if (!c->broken)
            mg_websocket_write(c->conn, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE,
                               (const char *) frame, rlen + 2);
        c->killed = true;
        mg_close_connection(c->conn);
    }
    pthread_mutex_unlock(&c->wmu);
}

/* Copies (with a reference each) the open connections subscribed to room, or all of them when
 * room == 0, so that the writes happen outside the hub mutex. Caller unrefs each and frees
 * the array. Returns the count, 0 on none or out of memory. */
static int s_collect(gw_ws_t *self, int64_t room, s_conn_t ***out)
{
    *out = NULL;
    pthread_mutex_lock(&self->mu);
    int n = 0;
    s_conn_t **arr = self->nopen > 0 ? malloc(sizeof *arr * (size_t) self->nopen) : NULL;
    if (arr)
        for (s_conn_t *c = self->conns; c && n < self->nopen; c = c->next)
            if (room == 0 || s_conn_has_room(c, room)) {
                atomic_fetch_add(&c->refs, 1);
                arr[n++] = c;
            }
    pthread_mutex_unlock(&self->mu);
    if (n == 0) {
        free(arr);
        arr = NULL;
    }
    *out = arr;
    return n;
}

static void s_release(s_conn_t **arr, int n)
{
    for (int i = 0; i < n; i++)
        s_conn_unref(arr[i]);
    free(arr);
}

/* Set under the hub mutex: two threads setting a value read earlier could leave a stale one. */
static void s_set_gauge(gw_ws_t *self)
{
    if (!self->m_conns)
        return;
    pthread_mutex_lock(&self->mu);
    qv_metric_set(self->m_conns, self->nopen);
    pthread_mutex_unlock(&self->mu);
}

/* ---- messages to and from clients ------------------------------------------------------ */

/* Sends o as a text frame; steals o. */
static int s_send_json(gw_ws_t *self, s_conn_t *c, json_t *o)
{
    if (!o)
        return -1;
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!text)
        return -1;
    int rc = s_conn_write(self, c, MG_WEBSOCKET_OPCODE_TEXT, text, strlen(text));
    free(text);
    return rc;
}

/* {"type":"error","error":{"code":..,"message":..}} plus "room" when the error is about one. */
static void s_send_error(gw_ws_t *self, s_conn_t *c, const char *code, const char *message,
                         int64_t room)
{
    json_t *o = json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "code", code,
                          "message", message);
    if (o && room > 0)
        json_object_set_new(o, "room", json_integer(room));
    s_send_json(self, c, o);
}

typedef enum { S_REQ_SUBSCRIBE, S_REQ_UNSUBSCRIBE, S_REQ_PING } s_req_kind_t;

typedef struct {
    s_req_kind_t kind;
    int64_t      room;   /* subscribe / unsubscribe */
} s_request_t;

/* A room id is a positive integer; a string of digits is accepted too (clients that took it
 * from a URL). */
static int64_t s_room_of(json_t *v)
{
    if (json_is_integer(v))
        return json_integer_value(v) > 0 ? (int64_t) json_integer_value(v) : -1;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = strlen(s);
        if (n == 0 || n > 18 || strspn(s, "0123456789") != n)
            return -1;
        int64_t r = strtoll(s, NULL, 10);
        return r > 0 ? r : -1;
    }
    return -1;
}

/* Parses one client message. Returns 0 and fills *out, or -1 with *why (a static string). */
static int s_parse_request(const char *data, size_t len, s_request_t *out, const char **why)
{
    json_error_t err;
    if (!gw_json_nesting_ok(data, len, 16)) {
        *why = "message nests too deeply";
        return -1;
    }
    /* jansson rejects invalid UTF-8, NUL bytes and trailing garbage. */
    json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, &err);
    int rc = -1;
    if (!o) {
        *why = "message is not valid JSON";
        return -1;
    }
    if (!json_is_object(o)) {
        *why = "message must be a JSON object";
        goto done;
    }
    const char *type = json_string_value(json_object_get(o, "type"));
    if (!type) {
        *why = "field 'type' (string) is required";
        goto done;
    }
    if (strcmp(type, "ping") == 0) {
        out->kind = S_REQ_PING;
        out->room = 0;
        rc = 0;
        goto done;
    }
    if (strcmp(type, "subscribe") == 0)
        out->kind = S_REQ_SUBSCRIBE;
    else if (strcmp(type, "unsubscribe") == 0)
        out->kind = S_REQ_UNSUBSCRIBE;
    else {
        *why = "unknown message type (expected subscribe, unsubscribe or ping)";
        goto done;
    }
    out->room = s_room_of(json_object_get(o, "room"));
    if (out->room <= 0) {
        *why = "field 'room' must be a positive integer";
        goto done;
    }
    rc = 0;
done:
    json_decref(o);
    return rc;
}

/* Asks dbopt whether the connection's user takes part in room.
 * Returns 1 yes, 0 no, -1 could not tell (dbopt unavailable or a malformed reply). */
static int s_is_participant(gw_ws_t *self, s_conn_t *c, int64_t room)
{
    char room_s[24], user_s[24], rid[17];
    snprintf(room_s, sizeof room_s, "%" PRId64, room);
    snprintf(user_s, sizeof user_s, "%" PRId64, c->id.user_id);
    Quaver__V1__Value v[2] = { QUAVER__V1__VALUE__INIT, QUAVER__V1__VALUE__INIT };
    Quaver__V1__Value *pv[2] = { &v[0], &v[1] };
    v[0].text = room_s;
    v[1].text = user_s;
    Quaver__V1__QueryRequest req = QUAVER__V1__QUERY_REQUEST__INIT;
    req.name = (char *) "room_is_participant";
    req.n_params = 2;
    req.params = pv;
    Quaver__V1__Caller caller = QUAVER__V1__CALLER__INIT;
    caller.user_id = c->id.user_id;
    caller.username = c->id.username;
    caller.admin = c->id.admin;
    qv_request_id(rid);

    qv_result_t res;
    qv_rpc_call(self->cfg.broker, "dbopt", "Query", &req.base, &caller, rid, S_RPC_TIMEOUT_MS,
                &res);
    int verdict = -1;
    if (res.status == 200) {
        Quaver__V1__QueryReply *rep = quaver__v1__query_reply__unpack(NULL, res.len, res.payload);
        if (rep) {
            size_t col = 0;
            for (size_t i = 0; i < rep->n_columns; i++)
                if (strcmp(rep->columns[i], "is_participant") == 0)
                    col = i;
            verdict = 0;
            if (rep->n_rows >= 1 && rep->rows[0]->n_cells > col) {
                const Quaver__V1__Value *cell = rep->rows[0]->cells[col];
                verdict = !cell->is_null && cell->text && strcmp(cell->text, "t") == 0;
            }
            quaver__v1__query_reply__free_unpacked(rep, NULL);
        }
        else
            qv_log(QV_LOG_WARN, rid, "ws: undecodable QueryReply from dbopt");
    }
    else if (res.status == 404)
        verdict = 0;   /* no such room: nobody takes part in it */
    else
        qv_log(QV_LOG_WARN, rid, "ws: participant check for room %" PRId64 " failed: %d %s",
               room, res.status, res.error ? res.error : "");
    qv_result_free(&res);
    return verdict;
}

static void s_subscribe(gw_ws_t *self, s_conn_t *c, int64_t room)
{
    int verdict = s_is_participant(self, c, room);
    if (verdict < 0) {
        s_send_error(self, c, "unavailable", "could not check participation, try again", room);
        return;
    }
    if (verdict == 0) {
        s_send_error(self, c, "forbidden", "you are not a participant of this room", room);
        return;
    }
    bool full = false;
    pthread_mutex_lock(&self->mu);
    if (!s_conn_has_room(c, room)) {
        if (c->nrooms == c->rooms_cap) {
            int cap = c->rooms_cap ? c->rooms_cap * 2 : 4;
            int64_t *r = cap <= S_MAX_ROOMS ? realloc(c->rooms, sizeof *r * (size_t) cap) : NULL;
            if (r) {
                c->rooms = r;
                c->rooms_cap = cap;
            }
        }
        if (c->nrooms < c->rooms_cap)
            c->rooms[c->nrooms++] = room;
        else
            full = true;
    }
    pthread_mutex_unlock(&self->mu);
    if (full)
        s_send_error(self, c, "too_many_subscriptions", "too many rooms on one connection", room);
    else
        s_send_json(self, c, json_pack("{s:s, s:I}", "type", "subscribed", "room",
                                       (json_int_t) room));
}

static void s_unsubscribe(gw_ws_t *self, s_conn_t *c, int64_t room)
{
    pthread_mutex_lock(&self->mu);
    for (int i = 0; i < c->nrooms; i++)
        if (c->rooms[i] == room) {
            c->rooms[i] = c->rooms[--c->nrooms];
            break;
        }
    pthread_mutex_unlock(&self->mu);
    s_send_json(self, c, json_pack("{s:s, s:I}", "type", "unsubscribed", "room",
                                   (json_int_t) room));
}

static void s_handle_text(gw_ws_t *self, s_conn_t *c, const char *data, size_t len)
{
    s_request_t req;
    const char *why = NULL;
    if (s_parse_request(data, len, &req, &why) != 0) {
        s_send_error(self, c, "bad_request", why, 0);
        return;
    }
    switch (req.kind) {
    case S_REQ_PING:
        s_send_json(self, c, json_pack("{s:s}", "type", "pong"));
        break;
    case S_REQ_SUBSCRIBE:
        s_subscribe(self, c, req.room);
        break;
    case S_REQ_UNSUBSCRIBE:
        s_unsubscribe(self, c, req.room);
        break;
    }
}

/* Error frame, then CLOSE 1009; the caller returns 0 so civetweb ends the connection. */
static int s_too_large(gw_ws_t *self, s_conn_t *c)
{
    s_send_error(self, c, "too_large", "message larger than 64 KB", 0);
    static const char close_1009[] = { 0x03, (char) 0xf1, 'm', 'e', 's', 's', 'a', 'g', 'e', ' ',
                                       't', 'o', 'o', ' ', 'b', 'i', 'g' };
    s_conn_write(self, c, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, close_1009, sizeof close_1009);
    return 0;
}

/* ---- civetweb handlers ----------------------------------------------------------------- */

/* The connect handler gets a const connection (civetweb's hint not to write), but a refused
 * upgrade with no response at all looks to the client like a network failure; answering a
 * plain HTTP error before the handshake is what a client can understand, and civetweb closes
 * the connection right after (an Upgrade request is never kept alive). */
static int s_refuse(const struct mg_connection *cconn, int status, const char *code,
                    const char *message)
{
    struct mg_connection *conn = (struct mg_connection *) cconn;
    char rid[65];
    const char *given = mg_get_header(conn, "X-Request-ID");
    size_t glen = given ? strlen(given) : 0;
    if (given && glen > 0 && glen < sizeof rid
        && strspn(given, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
               == glen)
        snprintf(rid, sizeof rid, "%s", given);
    else
        qv_request_id(rid);
    json_t *o = json_pack("{s:{s:s, s:s, s:s}}", "error", "code", code, "message", message,
                          "request_id", rid);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    const char *reason = status == 401 ? "Unauthorized"
                       : status == 503 ? "Service Unavailable" : "Bad Request";
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
              "X-Request-ID: %s\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n%s",
              status, reason, body ? strlen(body) : 0, rid, body ? body : "");
    free(body);
    qv_log(QV_LOG_INFO, rid, "ws: upgrade refused %d %s", status, code);
    return 1;
}

static int s_connect_handler(const struct mg_connection *conn, void *cbdata)
{
    gw_ws_t *self = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    char token[S_TOKEN_MAX];
    int n = -1;
    if (ri && ri->query_string)
        n = mg_get_var(ri->query_string, strlen(ri->query_string), "token", token, sizeof token);
    if (n <= 0) {
        /* Non-browser clients may prefer the header the rest of the API uses. */
        const char *auth = mg_get_header(conn, "Authorization");
        if (auth && strncasecmp(auth, "Bearer ", 7) == 0 && strlen(auth + 7) < sizeof token) {
            snprintf(token, sizeof token, "%s", auth + 7);
            n = (int) strlen(token);
        }
    }
    if (n <= 0)
        return s_refuse(conn, 401, "unauthorized", "missing token (GET /ws?token=JWT)");
    gw_identity_t id;
    memset(&id, 0, sizeof id);
    if (gw_auth_verify(self->cfg.jwt_secret, token, &id) != 0)
        return s_refuse(conn, 401, "unauthorized", "invalid or expired token");
    /* civetweb fails the handshake after an accepted connect (and then never calls the close
     * handler, which would leak our reservation) only for a key this long; refuse it first. */
    const char *key = mg_get_header(conn, "Sec-WebSocket-Key");
    if (key && strlen(key) > 60)
        return s_refuse(conn, 400, "bad_request", "malformed Sec-WebSocket-Key");

    s_conn_t *c = s_conn_new(&id);
    if (!c)
        return s_refuse(conn, 503, "unavailable", "out of memory");
    pthread_mutex_lock(&self->mu);
    bool full = self->cfg.max_connections > 0 && self->nconns >= self->cfg.max_connections;
    if (!full)
        self->nconns++;   /* reserved now, so concurrent upgrades cannot overshoot the limit */
    pthread_mutex_unlock(&self->mu);
    if (full) {
        s_conn_unref(c);
        return s_refuse(conn, 503, "too_many_connections", "WebSocket connection limit reached");
    }
    c->conn = (struct mg_connection *) conn;
    mg_set_user_connection_data(conn, c);
    return 0;
}

static void s_ready_handler(struct mg_connection *conn, void *cbdata)
{
    gw_ws_t *self = cbdata;
    s_conn_t *c = mg_get_user_connection_data(conn);
    if (!c)
        return;
    atomic_store(&c->last_rx_ms, qv_mono_ms());
    pthread_mutex_lock(&self->mu);
    c->next = self->conns;
    if (self->conns)
        self->conns->prev = c;
    self->conns = c;
    c->linked = true;
    self->nopen++;
    pthread_mutex_unlock(&self->mu);
    s_set_gauge(self);
    qv_debug("ws: user %" PRId64 " connected", c->id.user_id);
}

static int s_data_handler(struct mg_connection *conn, int bits, char *data, size_t len,
                          void *cbdata)
{
    gw_ws_t *self = cbdata;
    s_conn_t *c = mg_get_user_connection_data(conn);
    if (!c)
        return 0;
    atomic_store(&c->last_rx_ms, qv_mono_ms());
    bool fin = (bits & 0x80) != 0;
    switch (bits & 0x0f) {
    case MG_WEBSOCKET_OPCODE_PING:
        /* civetweb answers PINGs only with enable_websocket_ping_pong, which we leave off. */
        s_conn_write(self, c, MG_WEBSOCKET_OPCODE_PONG, data, len <= 125 ? len : 125);
        return 1;
    case MG_WEBSOCKET_OPCODE_PONG:
        return 1;   /* an answer to our keepalive: last_rx_ms is all it is for */
    case MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE:
        /* RFC 6455 5.5.1: answer CLOSE with CLOSE, echoing the status code. civetweb leaves the
         * read loop after this frame either way. */
        s_conn_write(self, c, MG_WEBSOCKET_OPCODE_CONNECTION_CLOSE, data, len >= 2 ? 2 : 0);
        return 0;
    case MG_WEBSOCKET_OPCODE_BINARY:
        c->in_binary_frag = !fin;
        s_send_error(self, c, "unsupported", "binary frames are not supported; send JSON text", 0);
        return 1;
    case MG_WEBSOCKET_OPCODE_TEXT:
        free(c->frag);
        c->frag = NULL;
        c->frag_len = 0;
        c->in_text_frag = false;
        c->in_binary_frag = false;
        if (len > S_MAX_MESSAGE)
            return s_too_large(self, c);
        if (fin) {
            s_handle_text(self, c, data, len);
            return 1;
        }
        c->frag = malloc(len ? len : 1);
        if (!c->frag) {
            s_send_error(self, c, "unavailable", "out of memory", 0);
            return 1;
        }
        memcpy(c->frag, data, len);
        c->frag_len = len;
        c->in_text_frag = true;
        return 1;
    case MG_WEBSOCKET_OPCODE_CONTINUATION:
        if (c->in_binary_frag) {   /* the rest of a binary message we already refused */
            c->in_binary_frag = !fin;
            return 1;
        }
        if (!c->in_text_frag) {
            s_send_error(self, c, "bad_request", "continuation frame without a message", 0);
            return 1;
        }
        if (c->frag_len + len > S_MAX_MESSAGE) {
            free(c->frag);
            c->frag = NULL;
            c->frag_len = 0;
            c->in_text_frag = false;
            return s_too_large(self, c);
        }
        {
            char *grown = realloc(c->frag, c->frag_len + len + 1);
            if (!grown) {
                free(c->frag);
                c->frag = NULL;
                c->frag_len = 0;
                c->in_text_frag = false;
                s_send_error(self, c, "unavailable", "out of memory", 0);
                return 1;
            }
            c->frag = grown;
            memcpy(c->frag + c->frag_len, data, len);
            c->frag_len += len;
        }
        if (fin) {
            s_handle_text(self, c, c->frag, c->frag_len);
            free(c->frag);
            c->frag = NULL;
            c->frag_len = 0;
            c->in_text_frag = false;
        }
        return 1;
    default:
        s_send_error(self, c, "bad_request", "unknown WebSocket opcode", 0);
        return 1;
    }
}

static void s_close_handler(const struct mg_connection *conn, void *cbdata)
{
    gw_ws_t *self = cbdata;
    s_conn_t *c = mg_get_user_connection_data(conn);
    pthread_mutex_lock(&self->mu);
    if (!c)   /* see s_conn_kill: civetweb may have cleared the user data already */
        for (s_conn_t *it = self->conns; it; it = it->next)
            if (it->conn == conn) {
                c = it;
                break;
            }
    if (c) {
        if (c->linked) {
            if (c->prev)
                c->prev->next = c->next;
            else
                self->conns = c->next;
            if (c->next)
                c->next->prev = c->prev;
            c->prev = c->next = NULL;
            c->linked = false;
            c->nrooms = 0;   /* out of every room at once */
            self->nopen--;
        }
        self->nconns--;
    }
    pthread_mutex_unlock(&self->mu);
    if (!c)
        return;
    mg_set_user_connection_data(conn, NULL);
    /* From here on no thread writes to conn: writers check `closed` under wmu, and a writer
     * already inside mg_websocket_write finishes before we get the mutex. */
    pthread_mutex_lock(&c->wmu);
    c->closed = true;
    c->conn = NULL;
    pthread_mutex_unlock(&c->wmu);
    s_set_gauge(self);
    qv_debug("ws: user %" PRId64 " disconnected", c->id.user_id);
    s_conn_unref(c);
}

/* ---- events ------------------------------------------------------------------------------ */

static void s_free_seq(void **item_p)
{
    free(*item_p);
    *item_p = NULL;
}

/* Caller holds the hub mutex. Returns the room's next seq (1 for its first event), -1 on out
 * of memory. The map keeps one entry per room that ever had an event: 8 bytes plus the key,
 * a few MB for a million rooms; forgetting entries would restart a room's seq at 1 and make
 * a connected client think it missed nothing when it did. */
static int64_t s_next_seq(gw_ws_t *self, int64_t room)
{
    char key[24];
    snprintf(key, sizeof key, "%" PRId64, room);
    int64_t *seq = zhashx_lookup(self->seqs, key);
    if (!seq) {
        seq = calloc(1, sizeof *seq);
        if (!seq || zhashx_insert(self->seqs, key, seq) != 0) {
            free(seq);
            return -1;
        }
    }
    return ++*seq;
}

/* Event types become a metric label: keep them to [a-z0-9_] (labels may not hold ',' '='). */
static void s_count_event(gw_ws_t *self, const char *type)
{
    if (!self->cfg.metrics)
        return;
    char labels[80];
    size_t n = type ? strlen(type) : 0;
    bool ok = n > 0 && n < 48 && strspn(type, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
    snprintf(labels, sizeof labels, "type=%s", ok ? type : "other");
    qv_metric_t *m = qv_metrics_counter(self->cfg.metrics, "quaver_ws_events_total",
                                        "Room events delivered to this gateway's WebSockets, "
                                        "by type", labels);
    if (m)
        qv_metric_add(m, 1);
}

static void s_deliver(gw_ws_t *self, int64_t room, const char *text, size_t len)
{
    s_conn_t **targets;
    int n = s_collect(self, room, &targets);
    for (int i = 0; i < n; i++)
        s_conn_write(self, targets[i], MG_WEBSOCKET_OPCODE_TEXT, text, len);
    s_release(targets, n);
}

void gw_ws_room_event(gw_ws_t *self, int64_t room_id, const char *type, json_t *data)
{
    if (!self || !type || room_id <= 0)
        return;
    /* Built before the mutex, seq last: a type that is not valid UTF-8 (json_string refuses
     * it) must not consume a seq, or clients would see a gap for an event that never was. */
    json_t *o = json_object();
    json_t *seq_v = json_integer(0);   /* filled in under the mutex; keeps the key order */
    if (!o || !seq_v || json_object_set_new(o, "type", json_string(type)) != 0
        || json_object_set_new(o, "room", json_integer(room_id)) != 0
        || json_object_set(o, "seq", seq_v) != 0
        || (data ? json_object_set(o, "data", data) : json_object_set_new(o, "data", json_object()))
               != 0) {
        qv_warn("ws: could not build event for room %" PRId64, room_id);
        json_decref(seq_v);
        json_decref(o);
        return;
    }
    pthread_mutex_lock(&self->mu);
    int64_t seq = s_next_seq(self, room_id);
    char *text = NULL;
    if (seq > 0 && json_integer_set(seq_v, seq) == 0)
        text = json_dumps(o, JSON_COMPACT);
    bool queued = false;
    if (text) {
        char topic[32];
        snprintf(topic, sizeof topic, "room.%" PRId64, room_id);
        /* Published under the mutex so the bus sees a room's events in seq order too;
         * qv_bus_publish never blocks (it drops at the high-water mark). */
        if (self->cfg.bus)
            qv_bus_publish_json(self->cfg.bus, topic, text);
        void *push = zsock_resolve(self->push);
        uint64_t r = (uint64_t) room_id;
        /* DONTWAIT: an HTTP thread never waits for the hub thread; a queue this far behind
         * means a stuck client holds the hub thread, and the event is dropped (counted). A
         * multipart message is queued whole or not at all. */
        if (zmq_send(push, &r, sizeof r, ZMQ_SNDMORE | ZMQ_DONTWAIT) == (int) sizeof r) {
            zmq_send(push, text, strlen(text), ZMQ_DONTWAIT);
            queued = true;
        }
    }
    pthread_mutex_unlock(&self->mu);
    if (!text)
        qv_warn("ws: out of memory building event %s for room %" PRId64, type, room_id);
    else if (!queued) {
        qv_warn("ws: local event queue full, event %s seq %" PRId64 " of room %" PRId64
                " not delivered here", type, seq, room_id);
        if (self->m_dropped)
            qv_metric_add(self->m_dropped, 1);
    }
    else
        s_count_event(self, type);
    free(text);
    json_decref(seq_v);
    json_decref(o);
}

int gw_ws_count(gw_ws_t *self)
{
    if (!self)
        return 0;
    pthread_mutex_lock(&self->mu);
    int n = self->nopen;
    pthread_mutex_unlock(&self->mu);
    return n;
}

/* ---- the hub thread ---------------------------------------------------------------------- */

static void s_on_local(gw_ws_t *self)
{
    zmsg_t *m = zmsg_recv(self->pull);
    if (!m)
        return;
    zframe_t *fr = zmsg_first(m);
    zframe_t *ft = zmsg_next(m);
    if (fr && ft && zframe_size(fr) == sizeof(uint64_t)) {
        uint64_t r;
        memcpy(&r, zframe_data(fr), sizeof r);
        s_deliver(self, (int64_t) r, (const char *) zframe_data(ft), zframe_size(ft));
    }
    zmsg_destroy(&m);
}

/* A room event from the bus: another replica's (ours are skipped by publisher name), passed
 * on unchanged, with that replica's seq. */
static void s_on_bus(gw_ws_t *self)
{
    char *topic = NULL;
    Quaver__V1__BusMessage *msg = qv_bus_recv(self->sub, &topic);
    if (!msg) {
        free(topic);
        return;
    }
    bool ours = self->cfg.publisher && msg->publisher
                && strcmp(msg->publisher, self->cfg.publisher) == 0;
    if (!ours && msg->body_case == QUAVER__V1__BUS_MESSAGE__BODY_JSON && msg->json
        && topic && strncmp(topic, "room.", 5) == 0) {
        /* Another replica's text, but still not parsed without the depth check (this thread's
         * stack is the default 8 MB; 64 levels is far beyond any event we build). */
        json_t *o = gw_json_nesting_ok(msg->json, strlen(msg->json), 64)
                        ? json_loads(msg->json, 0, NULL) : NULL;
        int64_t room = o ? s_room_of(json_object_get(o, "room")) : -1;
        if (room <= 0) {
            /* The topic names the room as well; trust it when the body does not. */
            const char *t = topic + 5;
            size_t n = strlen(t);
            if (n > 0 && n <= 18 && strspn(t, "0123456789") == n)
                room = strtoll(t, NULL, 10);
        }
        if (o && json_is_object(o) && room > 0) {
            /* That replica deleted the cached answers the change made old; ours in flight
             * must not store them back (gw_cache.h). */
            gw_cache_remote_change(room, gw_cache_event_bits(json_string_value(
                                             json_object_get(o, "type"))));
            s_deliver(self, room, msg->json, strlen(msg->json));
            s_count_event(self, json_string_value(json_object_get(o, "type")));
            if (self->m_remote)
                qv_metric_add(self->m_remote, 1);
        }
        else
            qv_debug("ws: ignored undecodable event on %s from %s", topic,
                     msg->publisher ? msg->publisher : "?");
        json_decref(o);
    }
    quaver__v1__bus_message__free_unpacked(msg, NULL);
    free(topic);
}

/* Every ping interval: PING each connection, and close the ones silent (no frame at all, not
 * even the PONG to the previous PING) for longer than the activity timeout. */
static void s_keepalive(gw_ws_t *self)
{
    s_conn_t **all;
    int n = s_collect(self, 0, &all);
    int64_t now = qv_mono_ms();
    int64_t limit_ms = (int64_t) self->cfg.activity_timeout_s * 1000;
    for (int i = 0; i < n; i++) {
        s_conn_t *c = all[i];
        if (limit_ms > 0 && now - atomic_load(&c->last_rx_ms) > limit_ms) {
            qv_info("ws: closing connection of user %" PRId64 ", silent for %" PRId64 " ms",
                    c->id.user_id, now - atomic_load(&c->last_rx_ms));
            s_conn_kill(c, 1000, "idle timeout");
            if (self->m_idle)
                qv_metric_add(self->m_idle, 1);
        }
        else if (self->cfg.ping_interval_s > 0)
            s_conn_write(self, c, MG_WEBSOCKET_OPCODE_PING, "", 0);
    }
    s_release(all, n);
}

static void *s_hub_thread(void *arg)
{
    gw_ws_t *self = arg;
    zpoller_t *poller = zpoller_new(self->pull, NULL);
    if (!poller) {
        qv_error("ws: cannot create the hub poller; no events will be delivered");
        return NULL;
    }
    if (self->sub)
        zpoller_add(poller, self->sub);
    /* We stop on our flag, not on SIGINT: the gateway decides when the hub goes. */
    zpoller_set_nonstop(poller, true);
    int tick_s = self->cfg.ping_interval_s;
    if (tick_s <= 0)   /* no pings: still check the activity timeout every second */
        tick_s = 1;
    bool keepalive = self->cfg.ping_interval_s > 0 || self->cfg.activity_timeout_s > 0;
    int64_t next_tick = qv_mono_ms() + (int64_t) tick_s * 1000;
    while (!atomic_load(&self->stop)) {
        int64_t wait = S_POLL_MS;
        if (keepalive) {
            int64_t until = next_tick - qv_mono_ms();
            if (until < wait)
                wait = until > 0 ? until : 0;
        }
        void *which = zpoller_wait(poller, (int) wait);
        if (which == self->pull)
            s_on_local(self);
        else if (which && which == self->sub)
            s_on_bus(self);
        if (keepalive && qv_mono_ms() >= next_tick) {
            s_keepalive(self);
            next_tick = qv_mono_ms() + (int64_t) tick_s * 1000;
        }
    }
    zpoller_destroy(&poller);
    return NULL;
}

/* ---- life cycle ---------------------------------------------------------------------------- */

/* ctx may be NULL (selftests of the event path): then no handler is registered. */
gw_ws_t *gw_ws_new(struct mg_context *ctx, const gw_ws_cfg_t *cfg)
{
    if (!cfg)
        return NULL;
    gw_ws_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    if (!self->cfg.jwt_secret)
        self->cfg.jwt_secret = "";
    if (!self->cfg.broker)
        self->cfg.broker = "";
    self->ctx = ctx;
    pthread_mutex_init(&self->mu, NULL);
    atomic_init(&self->stop, false);
    self->seqs = zhashx_new();
    if (!self->seqs)
        goto fail;
    zhashx_set_destructor(self->seqs, s_free_seq);

    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "inproc://gw-ws-%p", (void *) self);
    self->pull = zsock_new(ZMQ_PULL);
    self->push = zsock_new(ZMQ_PUSH);
    if (!self->pull || !self->push)
        goto fail;
    zsock_set_rcvhwm(self->pull, S_QUEUE_HWM);
    zsock_set_sndhwm(self->push, S_QUEUE_HWM);
    zsock_set_linger(self->push, 0);
    if (zsock_bind(self->pull, "%s", endpoint) != 0 || zsock_connect(self->push, "%s", endpoint) != 0)
        goto fail;
    if (cfg->bus_sub && *cfg->bus_sub) {
        self->sub = qv_bus_sub_new(cfg->bus_sub, "room.");
        if (!self->sub) {
            qv_error("ws: cannot subscribe to the bus at '%s'", cfg->bus_sub);
            goto fail;
        }
    }

    if (cfg->metrics) {
        self->m_conns = qv_metrics_gauge(cfg->metrics, "quaver_ws_connections",
                                         "Open WebSocket connections", NULL);
        self->m_sent = qv_metrics_counter(cfg->metrics, "quaver_ws_messages_sent_total",
                                          "Text messages sent to WebSocket clients", NULL);
        self->m_dropped = qv_metrics_counter(cfg->metrics, "quaver_ws_events_dropped_total",
                                             "Room events not delivered locally: queue full",
                                             NULL);
        self->m_remote = qv_metrics_counter(cfg->metrics, "quaver_ws_remote_events_total",
                                            "Room events received from other gateway replicas",
                                            NULL);
        self->m_idle = qv_metrics_counter(cfg->metrics, "quaver_ws_idle_closed_total",
                                          "WebSocket connections closed for silence", NULL);
        if (self->m_conns)
            qv_metric_set(self->m_conns, 0);
    }

    if (pthread_create(&self->thread, NULL, s_hub_thread, self) != 0)
        goto fail;
    self->thread_started = true;
    if (ctx)
        mg_set_websocket_handler(ctx, S_WS_PATH, s_connect_handler, s_ready_handler,
                                 s_data_handler, s_close_handler, self);
    return self;
fail:
    gw_ws_destroy(&self);
    return NULL;
}

void gw_ws_destroy(gw_ws_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_ws_t *self = *self_p;
    *self_p = NULL;
    if (self->thread_started) {
        atomic_store(&self->stop, true);
        pthread_join(self->thread, NULL);
    }
    pthread_mutex_lock(&self->mu);
    int left = self->nconns;
    pthread_mutex_unlock(&self->mu);
    if (left > 0) {
        qv_error("ws: gw_ws_destroy with %d WebSocket connections open (call it after mg_stop); "
                 "leaking the hub so that their threads stay safe", left);
        return;
    }
    zsock_destroy(&self->sub);
    zsock_destroy(&self->push);
    zsock_destroy(&self->pull);
    zhashx_destroy(&self->seqs);
    pthread_mutex_destroy(&self->mu);
    free(self);
}
