/* qv_mdp_worker: one logical 7/MDP worker for one service, connected to every broker.
 *
 * Guarantees:
 * - Each broker endpoint gets its own DEALER. "tcp://NAME:PORT" with a DNS name is resolved to
 *   all its IPv4 addresses, one DEALER per address, and again every S_RESOLVE_MS: new
 *   addresses are connected, vanished ones dropped (a failed lookup keeps what we have, so a
 *   DNS hiccup never disconnects us). Under Kubernetes a connect to a Service name reaches one
 *   pod; resolving the headless Service ourselves reaches every broker replica.
 * - Every connection says READY when it starts, heartbeats every hb_ms while we wait in recv,
 *   and is replaced by a new socket (new identity, new READY) when its broker tells us
 *   DISCONNECT or is silent for hb_ms * liveness. While it stays silent, replacements back
 *   off: a new socket waits max(hb_ms * liveness, back-off) before the next, the back-off
 *   doubling from hb_ms up to 10 s and resetting once the broker is heard again. The new
 *   socket connects at once, so there is no dead window when the broker returns.
 * - A request is answered on the connection it came from. A worker holds one request at a
 *   time, so "the connection of the last request" is enough bookkeeping; if that connection
 *   was replaced meanwhile, the reply is dropped (the broker forgot the request already).
 * - A request dropped without a reply does not wedge the worker: the next recv leaves that
 *   broker (DISCONNECT) and says READY on a new socket.
 * - qv_worker_stop is an atomic flag; recv polls in slices of at most 100 ms, so it returns
 *   NULL within that long. Not thread-safe otherwise.
 * - Malformed messages from a broker are dropped, never asserted on.
 */
#include "qv_mdp.h"
#include "qv_clock.h"
#include "qv_log.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define S_RESOLVE_MS    5000
#define S_BACKOFF_MAX   10000
#define S_SLICE_MS      100
#define S_LINGER_BYE    200      /* ms to flush DISCONNECT at destroy */

typedef struct {
    char   *endpoint;      /* as given */
    char   *host;          /* DNS name to resolve; NULL when connected as given */
    char   *port;
    int64_t next_resolve;  /* mono ms */
    bool    failing;       /* the last lookup failed (warn once per streak) */
} s_spec_t;

typedef struct {
    int       spec;        /* index into specs */
    char     *addr;        /* concrete endpoint we connect to */
    zsock_t  *sock;        /* NULL while waiting to reconnect */
    int64_t   last_heard;  /* mono ms (or when the socket was made) */
    int64_t   next_hb;     /* mono ms */
    int64_t   reconnect_at;/* mono ms, when sock is NULL (socket creation failed) */
    int       backoff;     /* ms */
    uint64_t  generation;  /* bumps with every new socket */
} s_conn_t;

struct qv_worker_t {
    char        *service;
    int          hb_ms;
    int          liveness;
    s_spec_t    *specs;
    int          nspecs;
    zlistx_t    *conns;       /* s_conn_t* (owned) */
    atomic_bool  stop;
    s_conn_t    *reply_conn;  /* where the request in hand came from */
    uint64_t     reply_gen;   /* ... and on which socket */
    uint64_t     next_gen;
    uint64_t     malformed;
    zmq_pollitem_t *items;    /* recv's poll set, kept between calls */
    s_conn_t   **owners;
    size_t       cap;
};

/* ---- connections ----------------------------------------------------------------------- */

/* Sends and destroys msg without blocking: a DEALER whose pipe is full (broker not reading)
 * must not stall the worker. Returns -1 when the message was not sent. */
static int s_send(zsock_t *sock, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    void *handle = zsock_resolve(sock);
    size_t n = zmsg_size(msg), i = 0;
    int rc = 0;
    for (zframe_t *f = zmsg_first(msg); f; f = zmsg_next(msg), i++) {
        int flags = ZFRAME_REUSE | ZFRAME_DONTWAIT | (i + 1 < n ? ZFRAME_MORE : 0);
        if (zframe_send(&f, handle, flags) != 0) {
            rc = -1;      /* only the first frame can fail: a message is atomic */
            break;
        }
    }
    zmsg_destroy(msg_p);
    return rc;
}

/* "" MDPW01 <command> as the start of a message, straight from constant bytes (libzmq keeps
 * frames this small inside the message: no allocation). Only the first frame can be refused
 * (a message is atomic). Returns -1 when nothing was sent. */
static int s_send_header(void *handle, int command, bool more)
{
    char cmd = (char) command;
    if (zmq_send(handle, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -1;
    zmq_send(handle, QV_MDPW, 6, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(handle, &cmd, 1, (more ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
    return 0;
}

/* Receives one frame into m (initialised here; the caller closes it). Returns -1 when there
 * was none; *more tells whether the message goes on. */
static int s_recv_part(void *handle, zmq_msg_t *m, bool *more)
{
    zmq_msg_init(m);
    if (zmq_msg_recv(m, handle, ZMQ_DONTWAIT) < 0) {
        *more = false;
        return -1;
    }
    *more = zmq_msg_more(m);
    return 0;
}

/* The rest of a message as a zmsg (frames moved, not copied); NULL when out of memory, the
 * rest still drained. */
static zmsg_t *s_recv_rest(zsock_t *sock, bool more)
{
    zmsg_t *msg = zmsg_new();
    while (more) {
        zframe_t *f = zframe_recv(sock);
        if (!f)
            break;
        more = zframe_more(f);
        if (msg)
            zmsg_append(msg, &f);
        zframe_destroy(&f);
    }
    return msg;
}

static void s_send_cmd(s_conn_t *c, int command, const char *arg)
{
    zmsg_t *msg = zmsg_new();
    char cmd = (char) command;
    zmsg_addmem(msg, "", 0);
    zmsg_addstr(msg, QV_MDPW);
    zmsg_addmem(msg, &cmd, 1);
    if (arg)
        zmsg_addstr(msg, arg);
    s_send(c->sock, &msg);
}

static void s_conn_close(s_conn_t *c, bool say_bye, int linger)
{
    if (!c->sock)
        return;
    if (say_bye)
        s_send_cmd(c, QV_MDPW_DISCONNECT, NULL);
    zsock_set_linger(c->sock, linger);
    zsock_destroy(&c->sock);
}

/* A fresh socket (fresh identity on the broker), connected, READY sent. */
static void s_conn_open(qv_worker_t *self, s_conn_t *c, int64_t now)
{
    c->sock = zsock_new(ZMQ_DEALER);
    if (c->sock) {
        zsock_set_linger(c->sock, 0);
        if (zsock_connect(c->sock, "%s", c->addr) != 0) {
            qv_warn("mdp worker %s: cannot connect %s", self->service, c->addr);
            zsock_destroy(&c->sock);
        }
    }
    if (!c->sock) {
        c->reconnect_at = now + c->backoff;
        return;
    }
    c->generation = ++self->next_gen;
    s_send_cmd(c, QV_MDPW_READY, self->service);
    c->last_heard = now;
    c->next_hb = now + self->hb_ms;
}

static s_conn_t *s_conn_new(qv_worker_t *self, int spec, const char *addr, int64_t now)
{
    s_conn_t *c = (s_conn_t *) calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->spec = spec;
    c->addr = strdup(addr);
    c->backoff = self->hb_ms;
    if (!c->addr) {
        free(c);
        return NULL;
    }
    s_conn_open(self, c, now);
    zlistx_add_end(self->conns, c);
    return c;
}

static void s_conn_free(qv_worker_t *self, s_conn_t **c_p, bool say_bye, int linger)
{
    s_conn_t *c = *c_p;
    if (self->reply_conn == c)
        self->reply_conn = NULL;
    s_conn_close(c, say_bye, linger);
    free(c->addr);
    free(c);
    *c_p = NULL;
}

/* ---- endpoints and DNS ----------------------------------------------------------------- */

static bool s_is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (strcmp(host, "*") == 0 || host[0] == '[')
        return true;
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Splits "tcp://HOST:PORT" with a DNS host into spec->host / spec->port. */
static void s_spec_parse(s_spec_t *sp)
{
    if (strncmp(sp->endpoint, "tcp://", 6) != 0)
        return;
    const char *hp = sp->endpoint + 6;
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp || colon[1] == '\0')
        return;
    char *host = strndup(hp, (size_t) (colon - hp));
    /* "tcp://eth0;name:port" (a source address) is libzmq's business: connect as given. */
    if (!host || s_is_numeric(host) || strchr(host, ';')) {
        free(host);
        return;
    }
    sp->host = host;
    sp->port = strdup(colon + 1);
    if (!sp->port) {
        free(sp->host);
        sp->host = NULL;
    }
}

/* Test hooks (qv_mdp selftest only; set before any worker exists): a fake resolver that
 * writes "ip,ip,..." and returns 0 (-1: lookup failed), and the re-resolution period. */
static int (*s_lookup_hook)(const char *host, char *ips, size_t len);
static int s_resolve_ms = S_RESOLVE_MS;

void qv_worker_test_hooks_(int (*lookup)(const char *host, char *ips, size_t len),
                           int resolve_ms);
void qv_worker_test_hooks_(int (*lookup)(const char *host, char *ips, size_t len),
                           int resolve_ms)
{
    s_lookup_hook = lookup;
    s_resolve_ms = resolve_ms > 0 ? resolve_ms : S_RESOLVE_MS;
}

static void s_want_add(zlistx_t *want, const char *ip, const char *port)
{
    char ep[128];
    snprintf(ep, sizeof ep, "tcp://%s:%s", ip, port);
    if (!zlistx_find(want, ep))
        zlistx_add_end(want, ep);
}

/* All IPv4 addresses of host as endpoints into want. Returns 0, or -1 with *why set. */
static int s_lookup(s_spec_t *sp, zlistx_t *want, const char **why)
{
    if (s_lookup_hook) {
        char ips[512];
        if (s_lookup_hook(sp->host, ips, sizeof ips) != 0) {
            *why = "lookup failed";
            return -1;
        }
        char *save = NULL;
        for (char *ip = strtok_r(ips, ",", &save); ip; ip = strtok_r(NULL, ",", &save))
            s_want_add(want, ip, sp->port);
        return 0;
    }
    struct addrinfo hints = { 0 }, *res = NULL;
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(sp->host, sp->port, &hints, &res);
    if (rc != 0) {
        *why = gai_strerror(rc);
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        char ip[INET_ADDRSTRLEN];
        struct sockaddr_in *sin = (struct sockaddr_in *) ai->ai_addr;
        if (inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip))
            s_want_add(want, ip, sp->port);
    }
    freeaddrinfo(res);
    return 0;
}

/* Resolves spec i and makes its connections match the answer. getaddrinfo blocks this
 * worker's thread while it runs; that is the price of resolving ourselves (see the top). */
static void s_resolve(qv_worker_t *self, int i, int64_t now)
{
    s_spec_t *sp = &self->specs[i];
    sp->next_resolve = now + s_resolve_ms;
    zlistx_t *want = zlistx_new();
    if (!want)
        return;
    zlistx_set_destructor(want, (zlistx_destructor_fn *) zstr_free);
    zlistx_set_duplicator(want, (zlistx_duplicator_fn *) strdup);
    zlistx_set_comparator(want, (zlistx_comparator_fn *) strcmp);
    const char *why = NULL;
    if (s_lookup(sp, want, &why) != 0 || zlistx_size(want) == 0) {
        /* A failed or empty answer keeps what we have: a DNS hiccup must not disconnect us. */
        size_t have = 0;
        for (s_conn_t *c = (s_conn_t *) zlistx_first(self->conns); c;
             c = (s_conn_t *) zlistx_next(self->conns))
            have += c->spec == i;
        if (have == 0)   /* nothing to serve from: try again sooner than the usual period */
            sp->next_resolve = now + (self->hb_ms < 1000 ? self->hb_ms : 1000);
        if (!sp->failing)
            qv_warn("mdp worker %s: cannot resolve %s: %s (keeping %zu connection(s))",
                    self->service, sp->host, why ? why : "no IPv4 address", have);
        sp->failing = true;
        zlistx_destroy(&want);
        return;
    }
    if (sp->failing)
        qv_info("mdp worker %s: %s resolves again", self->service, sp->host);
    sp->failing = false;
    /* drop connections whose address vanished; keep the ones still wanted */
    for (s_conn_t *c = (s_conn_t *) zlistx_first(self->conns); c;
         c = (s_conn_t *) zlistx_next(self->conns)) {
        if (c->spec != i)
            continue;
        void *found = zlistx_find(want, c->addr);
        if (found)
            zlistx_delete(want, found);       /* already connected */
        else {
            qv_info("mdp worker %s: broker %s is gone from %s", self->service, c->addr,
                    sp->host);
            zlistx_detach_cur(self->conns);   /* cursor steps back: iteration goes on */
            s_conn_free(self, &c, true, S_LINGER_BYE);
        }
    }
    for (char *ep = (char *) zlistx_first(want); ep; ep = (char *) zlistx_next(want)) {
        qv_info("mdp worker %s: connecting broker %s (%s)", self->service, ep, sp->host);
        s_conn_new(self, i, ep, now);
    }
    zlistx_destroy(&want);
}

/* ---- the loop -------------------------------------------------------------------------- */

/* Heartbeats, liveness, reconnects, re-resolution: everything timed. */
static void s_maintain(qv_worker_t *self, int64_t now)
{
    for (int i = 0; i < self->nspecs; i++)
        if (self->specs[i].host && now >= self->specs[i].next_resolve)
            s_resolve(self, i, now);
    for (s_conn_t *c = (s_conn_t *) zlistx_first(self->conns); c;
         c = (s_conn_t *) zlistx_next(self->conns)) {
        if (!c->sock) {
            if (now >= c->reconnect_at)
                s_conn_open(self, c, now);
            continue;
        }
        /* After a long request the broker's heartbeats wait unread in the socket: that is
         * not silence. */
        int64_t window = (int64_t) self->hb_ms * self->liveness;
        if (c->backoff > window)
            window = c->backoff;
        if (now - c->last_heard >= window && !(zsock_events(c->sock) & ZMQ_POLLIN)) {
            /* Silent broker: a new socket gets a new identity and says READY again. It is
             * connected at once (libzmq retries the TCP connect by itself), so a broker that
             * comes back reaches us within libzmq's reconnect interval; what backs off is how
             * often we replace the socket while the broker stays silent. */
            if (c->backoff == self->hb_ms)
                qv_warn("mdp worker %s: broker %s silent for %lld ms, reconnecting",
                        self->service, c->addr, (long long) (now - c->last_heard));
            else
                qv_debug("mdp worker %s: broker %s still silent, new socket (back-off %d ms)",
                         self->service, c->addr, c->backoff);
            c->backoff = c->backoff * 2 > S_BACKOFF_MAX ? S_BACKOFF_MAX : c->backoff * 2;
            s_conn_close(c, false, 0);
            s_conn_open(self, c, now);
            continue;
        }
        if (now >= c->next_hb) {
            s_send_cmd(c, QV_MDPW_HEARTBEAT, NULL);
            c->next_hb = now + self->hb_ms;
        }
    }
}

/* Reads one message from c. Returns the request body and sets *reply_to for a REQUEST.
 * The envelope is read as raw frames and only the body becomes a zmsg. */
static zmsg_t *s_on_conn(qv_worker_t *self, s_conn_t *c, int64_t now, zframe_t **reply_to)
{
    void *handle = zsock_resolve(c->sock);
    zmq_msg_t env[3];
    int n = 0;
    bool more = true;
    while (n < 3 && more && s_recv_part(handle, &env[n], &more) == 0)
        n++;
    if (n == 0) {
        zmq_msg_close(&env[0]);
        return NULL;
    }
    c->last_heard = now;
    c->backoff = self->hb_ms;
    zmsg_t *body = NULL;
    if (n < 3 || zmq_msg_size(&env[0]) != 0 || zmq_msg_size(&env[1]) != 6
        || memcmp(zmq_msg_data(&env[1]), QV_MDPW, 6) != 0 || zmq_msg_size(&env[2]) != 1)
        self->malformed++;
    else {
        switch (((const uint8_t *) zmq_msg_data(&env[2]))[0]) {
        case QV_MDPW_REQUEST: {
            zframe_t *client = more ? zframe_recv(c->sock) : NULL;
            more = client && zframe_more(client);
            zframe_t *delim = more ? zframe_recv(c->sock) : NULL;
            more = delim && zframe_more(delim);
            if (client && zframe_size(client) > 0 && delim && zframe_size(delim) == 0) {
                body = s_recv_rest(c->sock, more);
                more = false;
                if (body) {
                    *reply_to = client;
                    client = NULL;
                    self->reply_conn = c;
                    self->reply_gen = c->generation;
                }
            }
            else
                self->malformed++;
            zframe_destroy(&client);
            zframe_destroy(&delim);
            break;
        }
        case QV_MDPW_HEARTBEAT:
            break;
        case QV_MDPW_DISCONNECT:
            /* The broker forgot us (restart, or it thought us dead): start a new
             * conversation at once, it is evidently alive. The old socket's unread frames
             * go with it. */
            s_conn_close(c, false, 0);
            s_conn_open(self, c, now);
            more = false;
            break;
        default:
            self->malformed++;
            break;
        }
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&env[i]);
    if (more) {               /* whatever is left of a message we did not take */
        zmsg_t *rest = s_recv_rest(c->sock, true);
        zmsg_destroy(&rest);
    }
    return body;
}

/* ---- API ------------------------------------------------------------------------------- */

qv_worker_t *qv_worker_new(const char *brokers, const char *service, int hb_ms, int liveness)
{
    if (!brokers || !service || !*service || hb_ms <= 0 || liveness <= 0)
        return NULL;
    qv_worker_t *self = (qv_worker_t *) calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->service = strdup(service);
    self->hb_ms = hb_ms;
    self->liveness = liveness;
    self->conns = zlistx_new();
    atomic_init(&self->stop, false);
    char *list = strdup(brokers), *save = NULL;
    if (!self->service || !self->conns || !list) {
        free(list);
        qv_worker_destroy(&self);
        return NULL;
    }
    int64_t now = qv_mono_ms();
    for (char *ep = strtok_r(list, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        size_t n = strlen(ep);
        while (n > 0 && ep[n - 1] == ' ')
            ep[--n] = '\0';
        if (n == 0)
            continue;
        s_spec_t *grown = (s_spec_t *) realloc(self->specs,
                                               (size_t) (self->nspecs + 1) * sizeof *grown);
        if (!grown)
            break;
        self->specs = grown;
        s_spec_t *sp = &self->specs[self->nspecs++];
        memset(sp, 0, sizeof *sp);
        sp->endpoint = strdup(ep);
        if (!sp->endpoint) {
            self->nspecs--;
            break;
        }
        s_spec_parse(sp);
        if (sp->host)      /* a name that does not resolve yet may later: not an error */
            s_resolve(self, self->nspecs - 1, now);
        else {
            /* an endpoint libzmq refuses is a configuration error: fail now, not forever */
            s_conn_t *c = s_conn_new(self, self->nspecs - 1, sp->endpoint, now);
            if (!c || !c->sock) {
                qv_warn("mdp worker %s: bad broker endpoint '%s'", service, sp->endpoint);
                free(list);
                qv_worker_destroy(&self);
                return NULL;
            }
        }
    }
    free(list);
    if (self->nspecs == 0) {
        qv_worker_destroy(&self);
        return NULL;
    }
    return self;
}

void qv_worker_destroy(qv_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    qv_worker_t *self = *self_p;
    if (self->conns) {
        s_conn_t *c;
        while ((c = (s_conn_t *) zlistx_detach(self->conns, NULL)))
            s_conn_free(self, &c, true, S_LINGER_BYE);
        zlistx_destroy(&self->conns);
    }
    for (int i = 0; i < self->nspecs; i++) {
        free(self->specs[i].endpoint);
        free(self->specs[i].host);
        free(self->specs[i].port);
    }
    free(self->specs);
    free(self->service);
    free(self->items);
    free(self->owners);
    free(self);
    *self_p = NULL;
}

zmsg_t *qv_worker_recv(qv_worker_t *self, int timeout_ms, zframe_t **reply_to)
{
    if (!self || !reply_to)
        return NULL;
    *reply_to = NULL;
    int64_t end = timeout_ms < 0 ? INT64_MAX : qv_mono_ms() + timeout_ms;
    s_conn_t *unanswered = self->reply_conn;
    if (unanswered && unanswered->sock && unanswered->generation == self->reply_gen) {
        /* The last request was never answered. MDP has no "give up" command, and the broker
         * would keep that identity busy for ever while it heartbeats: leave it (DISCONNECT)
         * and start a new conversation on a new socket. */
        self->reply_conn = NULL;
        s_conn_close(unanswered, true, S_LINGER_BYE);
        s_conn_open(self, unanswered, qv_mono_ms());
    }
    self->reply_conn = NULL;
    zmsg_t *body = NULL;
    while (!body && !atomic_load(&self->stop) && !zsys_interrupted) {
        int64_t now = qv_mono_ms();
        s_maintain(self, now);
        size_t n = 0, total = zlistx_size(self->conns);
        if (total > self->cap) {
            zmq_pollitem_t *ni = (zmq_pollitem_t *) realloc(self->items, total * sizeof *ni);
            if (ni)
                self->items = ni;
            s_conn_t **no = (s_conn_t **) realloc(self->owners, total * sizeof *no);
            if (no)
                self->owners = no;
            if (!ni || !no)
                break;
            self->cap = total;
        }
        zmq_pollitem_t *items = self->items;
        s_conn_t **owners = self->owners;
        int64_t wake = now + S_SLICE_MS;
        if (end < wake)
            wake = end;
        for (s_conn_t *c = (s_conn_t *) zlistx_first(self->conns); c;
             c = (s_conn_t *) zlistx_next(self->conns)) {
            if (!c->sock) {
                if (c->reconnect_at < wake)
                    wake = c->reconnect_at;
                continue;
            }
            if (c->next_hb < wake)
                wake = c->next_hb;
            items[n] = (zmq_pollitem_t) { zsock_resolve(c->sock), 0, ZMQ_POLLIN, 0 };
            owners[n++] = c;
        }
        long slice = wake > now ? (long) (wake - now) : 0;
        int rc = zmq_poll(n ? items : NULL, (int) n, slice);
        now = qv_mono_ms();
        for (size_t i = 0; rc > 0 && i < n && !body; i++)
            if (items[i].revents & ZMQ_POLLIN)
                body = s_on_conn(self, owners[i], now, reply_to);
        if (!body && now >= end)
            break;
    }
    return body;
}

int qv_worker_send(qv_worker_t *self, zmsg_t **body_p, zframe_t **reply_to_p)
{
    zmsg_t *body = body_p ? *body_p : NULL;
    zframe_t *client = reply_to_p ? *reply_to_p : NULL;
    if (body_p)
        *body_p = NULL;
    if (reply_to_p)
        *reply_to_p = NULL;
    s_conn_t *c = self ? self->reply_conn : NULL;
    if (!self || !client || !c || !c->sock || c->generation != self->reply_gen) {
        /* The connection the request came on is gone; so is the broker's memory of it. */
        zmsg_destroy(&body);
        zframe_destroy(&client);
        return -1;
    }
    self->reply_conn = NULL;
    /* "" MDPW01 0x03 client-address "" body...: the envelope from constant bytes, the
     * client address and the body frames moved into libzmq, not copied */
    void *handle = zsock_resolve(c->sock);
    size_t n = body ? zmsg_size(body) : 0;
    if (s_send_header(handle, QV_MDPW_REPLY, true) != 0) {
        zmsg_destroy(&body);
        zframe_destroy(&client);
        return -1;
    }
    zframe_send(&client, c->sock, ZFRAME_MORE | ZFRAME_DONTWAIT);
    zmq_send(handle, "", 0, (n > 0 ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT);
    for (size_t i = 0; i < n; i++) {
        zframe_t *f = zmsg_pop(body);
        zframe_send(&f, c->sock, (i + 1 < n ? ZFRAME_MORE : 0) | ZFRAME_DONTWAIT);
        zframe_destroy(&f);       /* NULL already unless the send failed */
    }
    zmsg_destroy(&body);
    zframe_destroy(&client);
    /* The reply is a heartbeat too. */
    c->next_hb = qv_mono_ms() + self->hb_ms;
    return 0;
}

void qv_worker_stop(qv_worker_t *self)
{
    if (self)
        atomic_store(&self->stop, true);
}
