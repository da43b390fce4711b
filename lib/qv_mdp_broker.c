/* qv_mdp_broker: the 7/MDP 0.1 broker with 8/MMI, in its own thread.
 *
 * Guarantees:
 * - Each request goes to the least recently used ready worker of its service. A request for a
 *   service with no ready worker waits in that service's queue; at its deadline the broker
 *   answers the client itself with 503 (a packed quaver.v1.Result when the body was a Call,
 *   else the single frame "503"). Nothing waits in the broker past its deadline.
 * - The deadline is the Call's deadline_ms (wall-clock epoch ms) when the first body frame is
 *   a quaver.v1.Call that sets it, else arrival + default_deadline_ms.
 * - A worker silent for hb_ms * liveness (a busy one: also past its request's deadline, as
 *   MDP workers do not heartbeat while they work), one that says DISCONNECT, sends READY twice, or
 *   sends a command that is wrong for its state is forgotten (and told DISCONNECT).
 *   A request held by a worker that dies is lost: the broker cannot know whether the worker
 *   ran it, so replaying it could run a write twice; the client gives up at its deadline.
 * - The ROUTER has ZMQ_ROUTER_MANDATORY and every send is non-blocking: a message to a peer
 *   that vanished (or whose pipe is full) is dropped and counted; the broker never blocks.
 * - Malformed messages (wrong header, missing frames, unknown commands) are dropped and
 *   counted; nothing that comes from the network reaches an assert.
 * - qv_broker_stats is a consistent snapshot: the broker thread holds the state mutex while
 *   it handles a batch of events, and the snapshot is taken under the same mutex.
 *
 * The two messages of every call (a client's request that finds a ready worker and an empty
 * queue, and a busy worker's REPLY) take a fast path on raw zmq_msg_t frames: the frames
 * received are sent on as they are (libzmq moves them, no copy), with no zmsg/zframe/zlist
 * allocations. Everything else, and anything the fast path does not like, is turned into a
 * zmsg and handled by the general code, so the two paths cannot disagree on behaviour.
 */
#include "qv_mdp.h"
#include "qv_hash.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "quaver/v1/envelope.pb-c.h"

#include <pthread.h>
#include <string.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* Bounds on what peers can make us hold. Services are created by client requests too, so a
 * client cannot create more than this many names; one service holds at most S_MAX_QUEUE
 * waiting requests (beyond that a request is answered 503 at once). */
#define S_MAX_SERVICES  1024
#define S_MAX_QUEUE     100000
#define S_NAME_MAX      63       /* fits qv_broker_service_stats_t.name */
#define S_BATCH         1000     /* messages handled per wake-up before timers run */
#define S_NEVER         INT64_MAX

typedef struct s_service_t s_service_t;

typedef struct {
    char        *key;          /* hex of the routing id: the workers table key */
    zframe_t    *identity;     /* routing id */
    s_service_t *service;
    void        *ready_handle; /* handle in service->ready; NULL while busy */
    bool         busy;         /* holding one request (MDP gives a worker one at a time) */
    int64_t      expiry;       /* mono ms: forgotten when silent past this */
    int64_t      busy_until;   /* mono ms: while busy, not forgotten before this */
} s_worker_t;

typedef struct {
    zframe_t *client;          /* routing id of the client */
    zmsg_t   *body;            /* body frames */
    int64_t   deadline;        /* mono ms */
    bool      is_call;         /* body parsed as quaver.v1.Call: the 503 is a Result */
} s_request_t;

struct s_service_t {
    char     *name;
    zlistx_t *ready;           /* s_worker_t* (borrowed), least recently used first */
    zlistx_t *queue;           /* s_request_t* (owned), arrival order */
    int       workers;
    int       inflight;
    bool      ever_had_worker;
    int64_t   last_heard;      /* mono ms, -1 never */
    uint64_t  requests;
    uint64_t  expired;
};

struct qv_broker_t {
    zsock_t        *router;
    zactor_t       *actor;
    pthread_mutex_t lock;      /* guards the tables and counters while the thread runs */
    zhashx_t       *services;  /* name -> s_service_t* (owned) */
    zhashx_t       *workers;   /* hex id -> s_worker_t* (owned) */
    int             hb_ms;
    int             liveness;
    int             default_deadline_ms;
    int             port;
    int64_t         next_expiry;   /* mono ms; no queued deadline is earlier than this */
    /* what was thrown away, for logs and the selftest */
    uint64_t        malformed;
    uint64_t        unroutable;    /* sends refused by ROUTER_MANDATORY or a full pipe */
    uint64_t        disconnected;  /* workers dropped (protocol error or expiry) */
};

/* ---- sending --------------------------------------------------------------------------- */

/* Sends msg on the ROUTER without blocking; msg stays the caller's either way. Returns -1 when
 * the ROUTER refused it (EHOSTUNREACH from ROUTER_MANDATORY: the peer is gone; EAGAIN: its
 * pipe is full). Only the routing frame can be refused (a message is atomic), and frames are
 * sent with ZFRAME_REUSE, so a refused msg is intact and can be retried elsewhere. */
static int s_try_send(qv_broker_t *self, zmsg_t *msg)
{
    void *handle = zsock_resolve(self->router);
    size_t n = zmsg_size(msg), i = 0;
    for (zframe_t *f = zmsg_first(msg); f; f = zmsg_next(msg), i++) {
        int flags = ZFRAME_REUSE | ZFRAME_DONTWAIT | (i + 1 < n ? ZFRAME_MORE : 0);
        if (zframe_send(&f, handle, flags) != 0)
            return -1;
    }
    return 0;
}

/* Sends and destroys msg; a refused send is dropped and counted. */
static void s_send(qv_broker_t *self, zmsg_t **msg_p)
{
    if (s_try_send(self, *msg_p) != 0)
        self->unroutable++;
    zmsg_destroy(msg_p);
}

/* [identity] "" MDPW01 <command> */
static zmsg_t *s_worker_msg(zframe_t *identity, int command, zmsg_t *body)
{
    zmsg_t *msg = body ? body : zmsg_new();
    char cmd = (char) command;
    zmsg_pushmem(msg, &cmd, 1);
    zmsg_pushstr(msg, QV_MDPW);
    zmsg_pushmem(msg, "", 0);
    zmsg_prepend(msg, &(zframe_t *){ zframe_dup(identity) });
    return msg;
}

/* [identity] "" MDPW01 <command> <body...>; takes body (may be NULL). */
static void s_send_worker(qv_broker_t *self, zframe_t *identity, int command, zmsg_t *body)
{
    zmsg_t *msg = s_worker_msg(identity, command, body);
    s_send(self, &msg);
}

/* [client] "" MDPC01 <service> <body...>; takes client and body. */
static void s_send_client(qv_broker_t *self, zframe_t **client_p, const char *service,
                          zmsg_t *body)
{
    zmsg_t *msg = body ? body : zmsg_new();
    zmsg_pushstr(msg, service);
    zmsg_pushstr(msg, QV_MDPC);
    zmsg_pushmem(msg, "", 0);
    zmsg_prepend(msg, client_p);
    s_send(self, &msg);
}

static void s_request_destroy(s_request_t **r_p)
{
    if (*r_p) {
        zframe_destroy(&(*r_p)->client);
        zmsg_destroy(&(*r_p)->body);
        free(*r_p);
        *r_p = NULL;
    }
}

/* The broker's own answer when no worker took the request in time (or it could not be
 * queued). Consumes the request. */
static void s_reply_503(qv_broker_t *self, const char *service, s_request_t **r_p)
{
    s_request_t *r = *r_p;
    zmsg_t *body = zmsg_new();
    if (r->is_call) {
        char text[128];
        snprintf(text, sizeof text, "service %s unavailable: no worker before the deadline",
                 service);
        Quaver__V1__Result res = QUAVER__V1__RESULT__INIT;
        res.status = 503;
        res.error = text;
        size_t len = quaver__v1__result__get_packed_size(&res);
        uint8_t buf[256];   /* status + error text above always fit */
        if (len <= sizeof buf) {
            quaver__v1__result__pack(&res, buf);
            zmsg_addmem(body, buf, len);
        }
        else
            zmsg_addstr(body, "503");
    }
    else
        zmsg_addstr(body, "503");
    s_send_client(self, &r->client, service, body);
    s_request_destroy(r_p);
}

/* ---- services -------------------------------------------------------------------------- */

static void s_service_free(void **item)
{
    s_service_t *s = (s_service_t *) *item;
    if (!s)
        return;
    zlistx_destroy(&s->ready);
    if (s->queue) {
        s_request_t *r;
        while ((r = (s_request_t *) zlistx_detach(s->queue, NULL)))
            s_request_destroy(&r);
        zlistx_destroy(&s->queue);
    }
    free(s->name);
    free(s);
    *item = NULL;
}

static void s_worker_free(void **item)
{
    s_worker_t *w = (s_worker_t *) *item;
    if (!w)
        return;
    zframe_destroy(&w->identity);
    free(w->key);
    free(w);
    *item = NULL;
}

/* NULL when the table is full or memory ran out. */
static s_service_t *s_service_require(qv_broker_t *self, const char *name)
{
    s_service_t *s = (s_service_t *) zhashx_lookup(self->services, name);
    if (s || zhashx_size(self->services) >= S_MAX_SERVICES)
        return s;
    s = (s_service_t *) calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->name = strdup(name);
    s->ready = zlistx_new();
    s->queue = zlistx_new();
    s->last_heard = -1;
    if (!s->name || !s->ready || !s->queue) {
        void *p = s;
        s_service_free(&p);
        return NULL;
    }
    zhashx_insert(self->services, name, s);
    return s;
}

/* A service that never had a worker exists only because clients asked for it: once its queue
 * is empty it is forgotten, so that clients cannot grow the table for ever. Services that had
 * workers stay, so that stats show them with 0 workers when they go down. */
static void s_service_maybe_forget(qv_broker_t *self, s_service_t *s)
{
    if (!s->ever_had_worker && s->workers == 0 && zlistx_size(s->queue) == 0)
        zhashx_delete(self->services, s->name);
}

/* Forgets a worker; tells it DISCONNECT first when tell is set (it may still be alive, e.g.
 * busy past its liveness, and should reconnect cleanly). A request it held is lost. */
static void s_worker_delete(qv_broker_t *self, s_worker_t *w, bool tell)
{
    if (tell)
        s_send_worker(self, w->identity, QV_MDPW_DISCONNECT, NULL);
    s_service_t *s = w->service;
    if (w->ready_handle)
        zlistx_delete(s->ready, w->ready_handle);
    if (w->busy)
        s->inflight--;
    s->workers--;
    zhashx_delete(self->workers, w->key);
}

/* Hands queued requests to ready workers, oldest request to least recently used worker. */
static void s_dispatch(qv_broker_t *self, s_service_t *s)
{
    int64_t now = qv_mono_ms();
    while (zlistx_size(s->queue) > 0) {
        s_request_t *r = (s_request_t *) zlistx_first(s->queue);
        if (r->deadline <= now) {
            zlistx_detach(s->queue, NULL);
            s->expired++;
            s_reply_503(self, s->name, &r);
            continue;
        }
        if (zlistx_size(s->ready) == 0)
            break;
        zlistx_detach(s->queue, NULL);
        s_worker_t *w = (s_worker_t *) zlistx_detach(s->ready, NULL);
        w->ready_handle = NULL;
        int64_t deadline = r->deadline;
        /* REQUEST: [worker] "" MDPW01 0x02 client-address "" body... */
        zmsg_t *msg = r->body;
        r->body = NULL;
        zmsg_pushmem(msg, "", 0);
        zmsg_prepend(msg, &r->client);
        msg = s_worker_msg(w->identity, QV_MDPW_REQUEST, msg);
        if (s_try_send(self, msg) != 0) {
            /* The worker's connection is gone (killed, not yet expired): nothing was sent,
             * so the request goes back to the head of the queue for the next worker instead
             * of being lost, and we forget this worker now rather than at its expiry. */
            for (int k = 0; k < 4; k++) {          /* worker id, "", MDPW01, command */
                zframe_t *f = zmsg_pop(msg);
                zframe_destroy(&f);
            }
            r->client = zmsg_pop(msg);
            zframe_t *empty = zmsg_pop(msg);
            zframe_destroy(&empty);
            r->body = msg;
            zlistx_add_start(s->queue, r);
            self->unroutable++;
            self->disconnected++;
            s_worker_delete(self, w, false);
            continue;
        }
        zmsg_destroy(&msg);
        s_request_destroy(&r);
        w->busy = true;
        /* A 7/MDP worker does not heartbeat while it runs a request, so silence is expected
         * until the request's deadline; after that the client has given up anyway. */
        w->busy_until = deadline + (int64_t) self->hb_ms * self->liveness;
        s->inflight++;
        s->requests++;
    }
}

/* ---- workers --------------------------------------------------------------------------- */

static void s_worker_ready(qv_broker_t *self, s_worker_t *w)
{
    w->busy = false;
    w->ready_handle = zlistx_add_end(w->service->ready, w);
    s_dispatch(self, w->service);
}

static void s_worker_refresh(qv_broker_t *self, s_worker_t *w, int64_t now)
{
    w->expiry = now + (int64_t) self->hb_ms * self->liveness;
    w->service->last_heard = now;
}

static bool s_name_ok(zframe_t *f)
{
    size_t n = f ? zframe_size(f) : 0;
    if (n == 0 || n > S_NAME_MAX)
        return false;
    return memchr(zframe_data(f), '\0', n) == NULL;
}

/* msg holds what follows "" MDPW01. Takes sender and msg. */
static void s_on_worker(qv_broker_t *self, zframe_t *sender, zmsg_t *msg)
{
    int64_t now = qv_mono_ms();
    zframe_t *cmdf = zmsg_pop(msg);
    int cmd = (cmdf && zframe_size(cmdf) == 1) ? zframe_data(cmdf)[0] : -1;
    zframe_destroy(&cmdf);

    char *key = zframe_strhex(sender);
    s_worker_t *w = (s_worker_t *) zhashx_lookup(self->workers, key);

    switch (cmd) {
    case QV_MDPW_READY: {
        zframe_t *svc = zmsg_pop(msg);
        if (w) {
            /* READY twice: the worker is confused about its state; make it start again. */
            self->disconnected++;
            s_worker_delete(self, w, true);
        }
        else if (!s_name_ok(svc)
                 || (zframe_size(svc) >= 4 && memcmp(zframe_data(svc), "mmi.", 4) == 0)) {
            self->malformed++;
            s_send_worker(self, sender, QV_MDPW_DISCONNECT, NULL);
        }
        else {
            char *name = zframe_strdup(svc);
            s_service_t *s = s_service_require(self, name);
            w = s ? (s_worker_t *) calloc(1, sizeof *w) : NULL;
            if (!w) {
                qv_warn("mdp broker: cannot take worker for '%s' (service table full)", name);
                s_send_worker(self, sender, QV_MDPW_DISCONNECT, NULL);
            }
            else {
                w->key = key;
                key = NULL;
                w->identity = zframe_dup(sender);
                w->service = s;
                zhashx_insert(self->workers, w->key, w);
                s->workers++;
                s->ever_had_worker = true;
                s_worker_refresh(self, w, now);
                s_worker_ready(self, w);
            }
            free(name);
        }
        zframe_destroy(&svc);
        break;
    }
    case QV_MDPW_REPLY: {
        zframe_t *client = zmsg_pop(msg);
        zframe_t *empty = zmsg_pop(msg);
        if (!w || !w->busy || !client || zframe_size(client) == 0 || !empty
            || zframe_size(empty) != 0) {
            /* A reply we did not ask for, or a broken envelope: protocol error. */
            self->malformed++;
            if (w) {
                self->disconnected++;
                s_worker_delete(self, w, true);
            }
            else
                s_send_worker(self, sender, QV_MDPW_DISCONNECT, NULL);
            zframe_destroy(&client);
        }
        else {
            s_service_t *s = w->service;
            s->inflight--;
            s_worker_refresh(self, w, now);
            s_send_client(self, &client, s->name, msg);
            msg = NULL;
            s_worker_ready(self, w);
        }
        zframe_destroy(&empty);
        break;
    }
    case QV_MDPW_HEARTBEAT:
        if (w)
            s_worker_refresh(self, w, now);
        else   /* not READY here (we restarted, or expired it): make it start again */
            s_send_worker(self, sender, QV_MDPW_DISCONNECT, NULL);
        break;
    case QV_MDPW_DISCONNECT:
        if (w)
            s_worker_delete(self, w, false);
        break;
    default:
        self->malformed++;
        if (w) {
            self->disconnected++;
            s_worker_delete(self, w, true);
        }
        break;
    }
    free(key);
    zmsg_destroy(&msg);
    zframe_destroy(&sender);
}

/* ---- clients --------------------------------------------------------------------------- */

/* 8/MMI. Takes sender and body. */
static void s_on_mmi(qv_broker_t *self, zframe_t *sender, const char *name, zmsg_t *body)
{
    const char *code = "501";
    if (strcmp(name, "mmi.service") == 0) {
        zframe_t *f = zmsg_first(body);
        code = "404";
        if (s_name_ok(f)) {
            char *want = zframe_strdup(f);
            s_service_t *s = (s_service_t *) zhashx_lookup(self->services, want);
            if (s && s->workers > 0)
                code = "200";
            free(want);
        }
    }
    zmsg_destroy(&body);
    zmsg_t *reply = zmsg_new();
    zmsg_addstr(reply, code);
    s_send_client(self, &sender, name, reply);
}

/* When the body is a Call we take its deadline and answer 503 as a Result. A body counts as a
 * Call when its first frame is non-empty, unpacks, and has no unknown fields: arbitrary bytes
 * often unpack as a message made of unknown fields, and those callers want the plain "503". */

/* The Call is unpacked by protobuf-c as always, but into a scratch arena on the stack: a
 * typical Call (method, ids, caller, a small payload) needs no malloc and no free; what does
 * not fit (a large payload) falls back to malloc and is freed as usual. */
typedef struct {
    _Alignas(16) uint8_t buf[1024];
    size_t used;
    int    mallocs;
} s_arena_t;

static void *s_arena_alloc(void *data, size_t size)
{
    s_arena_t *a = (s_arena_t *) data;
    size_t need = (size + 15) & ~(size_t) 15;
    if (need >= size && need <= sizeof a->buf - a->used) {
        void *p = a->buf + a->used;
        a->used += need;
        return p;
    }
    a->mallocs++;
    return malloc(size);
}

static void s_arena_free(void *data, void *p)
{
    s_arena_t *a = (s_arena_t *) data;
    if ((uint8_t *) p >= a->buf && (uint8_t *) p < a->buf + sizeof a->buf)
        return;
    free(p);
}

static bool s_parse_call_data(const uint8_t *data, size_t size, int64_t *deadline_wall)
{
    *deadline_wall = 0;
    if (size == 0)
        return false;
    s_arena_t arena;
    arena.used = 0;
    arena.mallocs = 0;
    ProtobufCAllocator alloc = { s_arena_alloc, s_arena_free, &arena };
    Quaver__V1__Call *call = quaver__v1__call__unpack(&alloc, size, data);
    if (!call)
        return false;     /* protobuf-c freed what it had taken, through alloc */
    bool ok = call->base.n_unknown_fields == 0;
    if (ok)
        *deadline_wall = call->deadline_ms;
    if (arena.mallocs > 0)
        quaver__v1__call__free_unpacked(call, &alloc);
    return ok;
}

static bool s_parse_call(zmsg_t *body, int64_t *deadline_wall)
{
    zframe_t *f = zmsg_first(body);
    *deadline_wall = 0;
    if (!f)
        return false;
    return s_parse_call_data(zframe_data(f), zframe_size(f), deadline_wall);
}

/* A request's deadline in mono ms, from the wall-clock deadline of its Call (0: none). */
static int64_t s_request_deadline(qv_broker_t *self, int64_t now, int64_t wall)
{
    if (wall > 0) {
        int64_t left = wall - qv_wall_ms();
        if (left > 86400000)          /* a day: anything beyond is a broken clock or body */
            left = 86400000;
        return now + (left > 0 ? left : 0);
    }
    return now + self->default_deadline_ms;
}

/* msg holds what follows "" MDPC01. Takes sender and msg. */
static void s_on_client(qv_broker_t *self, zframe_t *sender, zmsg_t *msg)
{
    zframe_t *svc = zmsg_pop(msg);
    if (!s_name_ok(svc)) {
        self->malformed++;
        zframe_destroy(&svc);
        zframe_destroy(&sender);
        zmsg_destroy(&msg);
        return;
    }
    char *name = zframe_strdup(svc);
    zframe_destroy(&svc);
    if (strncmp(name, "mmi.", 4) == 0) {
        s_on_mmi(self, sender, name, msg);
        free(name);
        return;
    }
    s_request_t *r = (s_request_t *) calloc(1, sizeof *r);
    if (!r) {
        zframe_destroy(&sender);
        zmsg_destroy(&msg);
        free(name);
        return;
    }
    r->client = sender;
    r->body = msg;
    int64_t now = qv_mono_ms(), wall = 0;
    r->is_call = s_parse_call(msg, &wall);
    r->deadline = s_request_deadline(self, now, wall);

    s_service_t *s = s_service_require(self, name);
    if (!s || zlistx_size(s->queue) >= S_MAX_QUEUE)
        s_reply_503(self, name, &r);     /* no room to wait: answer at once */
    else {
        zlistx_add_end(s->queue, r);
        if (r->deadline < self->next_expiry)
            self->next_expiry = r->deadline;
        s_dispatch(self, s);
        s_service_maybe_forget(self, s);
    }
    free(name);
}

/* The general path: one whole message from the ROUTER. Takes msg. */
static void s_on_message(qv_broker_t *self, zmsg_t *msg)
{
    zframe_t *sender = zmsg_pop(msg);
    zframe_t *empty = zmsg_pop(msg);
    zframe_t *header = zmsg_pop(msg);
    if (sender && empty && zframe_size(empty) == 0 && header && zframe_streq(header, QV_MDPC)) {
        s_on_client(self, sender, msg);
        sender = NULL;
        msg = NULL;
    }
    else if (sender && empty && zframe_size(empty) == 0 && header
             && zframe_streq(header, QV_MDPW)) {
        s_on_worker(self, sender, msg);
        sender = NULL;
        msg = NULL;
    }
    else
        self->malformed++;
    zframe_destroy(&sender);
    zframe_destroy(&empty);
    zframe_destroy(&header);
    zmsg_destroy(&msg);
}

/* ---- the fast path --------------------------------------------------------------------- */

#define S_FAST_FRAMES 16         /* longer messages take the general path */

typedef struct {
    zmq_msg_t part[S_FAST_FRAMES];
    int       n;
} s_parts_t;

static bool s_part_eq(zmq_msg_t *m, const char *str, size_t len)
{
    return zmq_msg_size(m) == len && memcmp(zmq_msg_data(m), str, len) == 0;
}

static void s_parts_close(s_parts_t *p)
{
    for (int i = 0; i < p->n; i++)
        zmq_msg_close(&p->part[i]);
    p->n = 0;
}

/* A small frame built in place (libzmq keeps up to 33 bytes inside the zmq_msg_t: no
 * allocation). */
static void s_small(zmq_msg_t *m, const void *data, size_t size)
{
    if (zmq_msg_init_size(m, size) == 0)
        memcpy(zmq_msg_data(m), data, size);
    else
        zmq_msg_init(m);
}

/* Sends frames from..n-1 of p, the last without MORE. */
static void s_send_rest(void *handle, s_parts_t *p, int from)
{
    for (int i = from; i < p->n; i++)
        zmq_msg_send(&p->part[i], handle, (i + 1 < p->n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
}

/* Same text as zframe_strhex, which keys the workers table; NUL-terminated in out. */
static void s_hex(const uint8_t *data, size_t size, char *out)
{
    static const char digits[] = "0123456789ABCDEF";
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * size] = '\0';
}

/* [client] "" MDPC01 <service> <body...> for a service with a ready worker and nobody
 * queued: straight to the least recently used worker, as s_on_client + s_dispatch would do.
 * Returns false (p untouched) when the general path must decide: mmi, no worker, a queue, a
 * deadline already past, a send refused. */
static bool s_fast_client(qv_broker_t *self, s_parts_t *p, void *handle)
{
    if (p->n < 5)
        return false;
    size_t len = zmq_msg_size(&p->part[3]);
    if (len == 0 || len > S_NAME_MAX)
        return false;
    char name[S_NAME_MAX + 1];
    memcpy(name, zmq_msg_data(&p->part[3]), len);
    name[len] = '\0';
    if (memchr(name, '\0', len) || strncmp(name, "mmi.", 4) == 0)
        return false;
    s_service_t *s = (s_service_t *) zhashx_lookup(self->services, name);
    if (!s || zlistx_size(s->queue) > 0 || zlistx_size(s->ready) == 0)
        return false;
    int64_t now = qv_mono_ms(), wall = 0;
    s_parse_call_data((const uint8_t *) zmq_msg_data(&p->part[4]), zmq_msg_size(&p->part[4]),
                      &wall);
    int64_t deadline = s_request_deadline(self, now, wall);
    if (deadline <= now)
        return false;
    s_worker_t *w = (s_worker_t *) zlistx_first(s->ready);
    /* REQUEST: [worker] "" MDPW01 0x02 client-address "" body... Only the first frame can
     * be refused (a message is atomic); then the general path retries and forgets w. */
    zmq_msg_t id;
    s_small(&id, zframe_data(w->identity), zframe_size(w->identity));
    if (zmq_msg_send(&id, handle, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        return false;
    }
    zmq_msg_t empty, proto, cmd;
    char command = QV_MDPW_REQUEST;
    zmq_msg_init(&empty);
    s_small(&proto, QV_MDPW, 6);
    s_small(&cmd, &command, 1);
    zmq_msg_send(&empty, handle, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_msg_send(&proto, handle, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_msg_send(&cmd, handle, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_msg_send(&p->part[0], handle, ZMQ_SNDMORE | ZMQ_DONTWAIT);   /* client address */
    zmq_msg_send(&p->part[1], handle, ZMQ_SNDMORE | ZMQ_DONTWAIT);   /* "" */
    s_send_rest(handle, p, 4);
    zmq_msg_close(&id);
    zmq_msg_close(&empty);
    zmq_msg_close(&proto);
    zmq_msg_close(&cmd);
    s_parts_close(p);

    zlistx_detach(s->ready, NULL);
    w->ready_handle = NULL;
    w->busy = true;
    w->busy_until = deadline + (int64_t) self->hb_ms * self->liveness;
    s->inflight++;
    s->requests++;
    return true;
}

/* [worker] "" MDPW01 0x03 client-address "" <body...> from a busy worker we know: the body
 * goes to the client, the worker back to the ready list, as s_on_worker does. Returns false
 * (p untouched) for anything else. */
static bool s_fast_reply(qv_broker_t *self, s_parts_t *p, void *handle)
{
    if (p->n < 6 || !s_part_eq(&p->part[3], "\x03", 1) || zmq_msg_size(&p->part[4]) == 0
        || zmq_msg_size(&p->part[5]) != 0)
        return false;
    char key[2 * 256 + 1];
    size_t idlen = zmq_msg_size(&p->part[0]);
    if (idlen == 0 || idlen > 256)
        return false;
    s_hex((const uint8_t *) zmq_msg_data(&p->part[0]), idlen, key);
    s_worker_t *w = (s_worker_t *) zhashx_lookup(self->workers, key);
    if (!w || !w->busy)
        return false;
    s_service_t *s = w->service;
    s->inflight--;
    s_worker_refresh(self, w, qv_mono_ms());
    /* [client] "" MDPC01 <service> <body...> */
    if (zmq_msg_send(&p->part[4], handle, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        self->unroutable++;
    else {
        zmq_msg_t proto, svc;
        s_small(&proto, QV_MDPC, 6);
        s_small(&svc, s->name, strlen(s->name));
        zmq_msg_send(&p->part[5], handle, ZMQ_SNDMORE | ZMQ_DONTWAIT);   /* "" */
        zmq_msg_send(&proto, handle, ZMQ_SNDMORE | ZMQ_DONTWAIT);
        zmq_msg_send(&svc, handle, (p->n > 6 ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
        s_send_rest(handle, p, 6);
        zmq_msg_close(&proto);
        zmq_msg_close(&svc);
    }
    s_parts_close(p);
    s_worker_ready(self, w);
    return true;
}

/* Reads and handles one message from the ROUTER. Returns false when none was waiting. */
static bool s_on_router(qv_broker_t *self)
{
    void *handle = zsock_resolve(self->router);
    s_parts_t p;
    p.n = 0;
    bool more = true;
    while (more && p.n < S_FAST_FRAMES) {
        zmq_msg_t *m = &p.part[p.n];
        zmq_msg_init(m);
        if (zmq_msg_recv(m, handle, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(m);
            if (p.n == 0)
                return false;
            more = false;      /* not seen: a message arrives whole */
            break;
        }
        p.n++;
        more = zmq_msg_more(m);
    }
    if (!more && p.n >= 3 && zmq_msg_size(&p.part[1]) == 0) {
        if (s_part_eq(&p.part[2], QV_MDPC, 6) && s_fast_client(self, &p, handle))
            return true;
        if (s_part_eq(&p.part[2], QV_MDPW, 6) && s_fast_reply(self, &p, handle))
            return true;
    }
    /* the general path */
    zmsg_t *msg = zmsg_new();
    for (int i = 0; i < p.n; i++)
        zmsg_addmem(msg, zmq_msg_data(&p.part[i]), zmq_msg_size(&p.part[i]));
    s_parts_close(&p);
    while (more) {
        zframe_t *f = zframe_recv(self->router);
        if (!f)
            break;
        more = zframe_more(f);
        zmsg_append(msg, &f);
    }
    s_on_message(self, msg);
    return true;
}

/* ---- timers ---------------------------------------------------------------------------- */

/* Answers 503 to every queued request past its deadline; recomputes next_expiry. */
static void s_expire(qv_broker_t *self, int64_t now)
{
    self->next_expiry = S_NEVER;
    zlistx_t *forget = zlistx_new();
    for (s_service_t *s = (s_service_t *) zhashx_first(self->services); s;
         s = (s_service_t *) zhashx_next(self->services)) {
        size_t n = zlistx_size(s->queue);
        for (size_t i = 0; i < n; i++) {
            /* rotate through the queue once, keeping the order of what stays */
            s_request_t *r = (s_request_t *) zlistx_detach(s->queue, NULL);
            if (r->deadline <= now) {
                s->expired++;
                s_reply_503(self, s->name, &r);
            }
            else {
                zlistx_add_end(s->queue, r);
                if (r->deadline < self->next_expiry)
                    self->next_expiry = r->deadline;
            }
        }
        if (forget && !s->ever_had_worker && s->workers == 0 && zlistx_size(s->queue) == 0)
            zlistx_add_end(forget, s);
    }
    if (forget) {
        for (s_service_t *s = (s_service_t *) zlistx_first(forget); s;
             s = (s_service_t *) zlistx_next(forget))
            s_service_maybe_forget(self, s);
        zlistx_destroy(&forget);
    }
}

/* Drops workers silent past their expiry, heartbeats the others (busy ones too, so that a
 * worker back from a long request finds the broker's heartbeats waiting and stays). */
static void s_heartbeat(qv_broker_t *self, int64_t now)
{
    zlistx_t *dead = zlistx_new();
    for (s_worker_t *w = (s_worker_t *) zhashx_first(self->workers); w;
         w = (s_worker_t *) zhashx_next(self->workers)) {
        int64_t expiry = w->busy && w->busy_until > w->expiry ? w->busy_until : w->expiry;
        if (expiry <= now) {
            if (dead)
                zlistx_add_end(dead, w);
        }
        else {
            zmsg_t *hb = s_worker_msg(w->identity, QV_MDPW_HEARTBEAT, NULL);
            if (s_try_send(self, hb) != 0 && errno == EHOSTUNREACH && dead) {
                /* its connection closed (process killed): forget it now, not at expiry */
                self->unroutable++;
                zlistx_add_end(dead, w);
            }
            zmsg_destroy(&hb);
        }
    }
    if (dead) {
        for (s_worker_t *w = (s_worker_t *) zlistx_first(dead); w;
             w = (s_worker_t *) zlistx_next(dead)) {
            self->disconnected++;
            s_worker_delete(self, w, w->expiry <= now);
        }
        zlistx_destroy(&dead);
    }
}

/* ---- the thread ------------------------------------------------------------------------ */

static void s_broker_actor(zsock_t *pipe, void *args)
{
    qv_broker_t *self = (qv_broker_t *) args;
    zsock_signal(pipe, 0);
    int64_t next_hb = qv_mono_ms() + self->hb_ms;
    while (true) {
        int64_t now = qv_mono_ms();
        int64_t wake = next_hb < self->next_expiry ? next_hb : self->next_expiry;
        long timeout = wake > now ? (long) (wake - now) : 0;
        zmq_pollitem_t items[] = {
            { zsock_resolve(pipe), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve(self->router), 0, ZMQ_POLLIN, 0 },
        };
        int rc = zmq_poll(items, 2, timeout);
        if (rc < 0 && errno != EINTR)
            break;          /* context terminated */
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN)) {
            char *cmd = zstr_recv(pipe);
            bool term = !cmd || strcmp(cmd, "$TERM") == 0;
            zstr_free(&cmd);
            if (term)
                break;
        }
        pthread_mutex_lock(&self->lock);
        if (rc > 0 && (items[1].revents & ZMQ_POLLIN))
            for (int i = 0; i < S_BATCH && s_on_router(self); i++)
                ;
        now = qv_mono_ms();
        if (now >= self->next_expiry)
            s_expire(self, now);
        if (now >= next_hb) {
            s_heartbeat(self, now);
            next_hb = now + self->hb_ms;
        }
        pthread_mutex_unlock(&self->lock);
    }
}

/* ---- API ------------------------------------------------------------------------------- */

qv_broker_t *qv_broker_new(const char *endpoints, int hb_ms, int liveness,
                           int default_deadline_ms)
{
    if (!endpoints || hb_ms <= 0 || liveness <= 0 || default_deadline_ms <= 0)
        return NULL;
    qv_broker_t *self = (qv_broker_t *) calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->lock, NULL);
    self->hb_ms = hb_ms;
    self->liveness = liveness;
    self->default_deadline_ms = default_deadline_ms;
    self->port = -1;
    self->next_expiry = S_NEVER;
    /* keys come from the network: keyed hash (qv_hash.h says why) */
    self->services = qv_hashx_new();
    self->workers = qv_hashx_new();
    self->router = zsock_new(ZMQ_ROUTER);
    if (!self->services || !self->workers || !self->router)
        goto fail;
    zhashx_set_destructor(self->services, s_service_free);
    zhashx_set_destructor(self->workers, s_worker_free);
    zsock_set_router_mandatory(self->router, 1);
    zsock_set_linger(self->router, 0);
    /* Deep pipes: the broker never blocks, so a shallow pipe would only drop sooner. */
    zsock_set_sndhwm(self->router, 100000);
    zsock_set_rcvhwm(self->router, 100000);

    char *list = strdup(endpoints), *save = NULL;
    if (!list)
        goto fail;
    int binds = 0;
    for (char *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        size_t n = strlen(ep);
        while (n > 0 && ep[n - 1] == ' ')
            ep[--n] = '\0';
        if (n == 0)
            continue;
        int rc = zsock_bind(self->router, "%s", ep);
        if (rc < 0) {
            qv_warn("mdp broker: cannot bind %s: %s", ep, zmq_strerror(zmq_errno()));
            free(list);
            goto fail;
        }
        if (strncmp(ep, "tcp://", 6) == 0 && self->port < 0) {
            char *last = zsock_last_endpoint(self->router);   /* caller frees */
            const char *colon = last ? strrchr(last, ':') : NULL;
            self->port = colon ? atoi(colon + 1) : rc;
            zstr_free(&last);
        }
        binds++;
    }
    free(list);
    if (binds == 0)
        goto fail;
    self->actor = zactor_new(s_broker_actor, self);
    if (!self->actor)
        goto fail;
    return self;
fail:
    zsock_destroy(&self->router);
    zhashx_destroy(&self->services);
    zhashx_destroy(&self->workers);
    pthread_mutex_destroy(&self->lock);
    free(self);
    return NULL;
}

void qv_broker_destroy(qv_broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    qv_broker_t *self = *self_p;
    zactor_destroy(&self->actor);      /* $TERM, and waits for the thread */
    if (self->malformed || self->unroutable)
        qv_info("mdp broker: stopped; dropped %llu malformed, %llu unroutable",
                (unsigned long long) self->malformed, (unsigned long long) self->unroutable);
    zsock_destroy(&self->router);
    zhashx_destroy(&self->workers);
    zhashx_destroy(&self->services);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

int qv_broker_stats(qv_broker_t *self, qv_broker_service_stats_t *out, int max)
{
    if (!self)
        return 0;
    pthread_mutex_lock(&self->lock);
    int64_t now = qv_mono_ms();
    int n = 0;
    for (s_service_t *s = (s_service_t *) zhashx_first(self->services); s;
         s = (s_service_t *) zhashx_next(self->services), n++) {
        if (!out || n >= max)
            continue;
        qv_broker_service_stats_t *o = &out[n];
        memset(o, 0, sizeof *o);
        snprintf(o->name, sizeof o->name, "%s", s->name);
        o->workers = s->workers;
        o->ready = (int) zlistx_size(s->ready);
        o->queued = (int) zlistx_size(s->queue);
        o->inflight = s->inflight;
        o->last_heartbeat_age_ms = s->last_heard < 0 ? -1 : now - s->last_heard;
        o->requests = s->requests;
        o->expired = s->expired;
    }
    pthread_mutex_unlock(&self->lock);
    return n;
}

int qv_broker_port(qv_broker_t *self)
{
    return self ? self->port : -1;
}

/* For the selftest (same library): what the broker threw away. */
void qv_broker_counters_(qv_broker_t *self, uint64_t *malformed, uint64_t *unroutable,
                         uint64_t *disconnected);
void qv_broker_counters_(qv_broker_t *self, uint64_t *malformed, uint64_t *unroutable,
                         uint64_t *disconnected)
{
    pthread_mutex_lock(&self->lock);
    *malformed = self->malformed;
    *unroutable = self->unroutable;
    *disconnected = self->disconnected;
    pthread_mutex_unlock(&self->lock);
}
