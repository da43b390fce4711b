/* mon_proxy: the XSUB/XPUB forwarder with a tap (see mon_proxy.h).
 * Guarantees: a message is forwarded whole (all its frames) or not at all; the XPUB side
 * never blocks the loop (it drops at its high-water mark); the tap sees a copy of each
 * two-frame message under its prefix, never a partial one. The loop drains in batches and
 * returns to poll, so a flood on one side cannot starve the other side or the stop command. */
#include "mon_proxy.h"
#include "qv_log.h"
#include <czmq.h>
#include <stdatomic.h>
#include <string.h>

#define S_BATCH 1024          /* messages per side before polling again */
#define S_TOPIC_MAX 256       /* longer topics are forwarded but not tapped */

struct mon_proxy_t {
    zsock_t          *xsub;
    zsock_t          *xpub;
    zactor_t         *actor;
    char              inproc[96];
    int               xsub_port;
    int               xpub_port;
    char             *tap_prefix;
    mon_proxy_tap_fn  tap;
    void             *tap_arg;
    _Atomic uint64_t  forwarded;
    _Atomic uint64_t  tapped;
    _Atomic uint64_t  subscriptions;
};

/* Binds every comma-separated endpoint; returns the first TCP port bound (0 when none is
 * TCP), or -1 after logging the endpoint that failed. */
static int s_bind_all(zsock_t *sock, const char *endpoints, const char *what)
{
    char *copy = strdup(endpoints ? endpoints : "");
    if (!copy)
        return -1;
    int port = 0;
    char *save = NULL;
    for (char *ep = strtok_r(copy, ",", &save); ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (!*ep)
            continue;
        int rc = zsock_bind(sock, "%s", ep);
        if (rc < 0) {
            qv_error("cannot bind bus %s socket to '%s': %s", what, ep, zmq_strerror(zmq_errno()));
            free(copy);
            return -1;
        }
        if (port == 0 && rc > 0)
            port = rc;
    }
    free(copy);
    return port;
}

/* Moves up to S_BATCH whole messages from -> to. On the XSUB side (tap_side) a message under
 * the tap prefix is also handed to the tap after it has been forwarded. */
static void s_pump(mon_proxy_t *self, void *from, void *to, bool tap_side)
{
    size_t plen = self->tap_prefix ? strlen(self->tap_prefix) : 0;
    for (int n = 0; n < S_BATCH; n++) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, from, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            return;
        }
        bool tapping = false;
        char topic[S_TOPIC_MAX];
        zmq_msg_t body;
        bool have_body = false;
        int frames = 0;
        for (;;) {
            int more = zmq_msg_more(&part);
            if (tap_side && self->tap && frames == 0) {
                size_t sz = zmq_msg_size(&part);
                if (sz >= plen && sz < sizeof topic
                    && memcmp(zmq_msg_data(&part), self->tap_prefix, plen) == 0
                    && memchr(zmq_msg_data(&part), '\0', sz) == NULL) {
                    memcpy(topic, zmq_msg_data(&part), sz);
                    topic[sz] = '\0';
                    tapping = true;
                }
            }
            else if (tapping && frames == 1) {
                /* zmq_msg_copy shares the buffer (reference-counted): no byte copy. */
                zmq_msg_init(&body);
                if (zmq_msg_copy(&body, &part) == 0)
                    have_body = true;
                else
                    zmq_msg_close(&body);
            }
            frames++;
            if (zmq_msg_send(&part, to, (more ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0)
                zmq_msg_close(&part);   /* dropped: XPUB at HWM never errors, XSUB rarely */
            if (!more)
                break;
            /* The remaining frames of a message arrive together with the first. */
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, from, 0) < 0) {
                zmq_msg_close(&part);
                break;
            }
        }
        if (tap_side) {
            atomic_fetch_add(&self->forwarded, 1);
            if (tapping && have_body && frames == 2) {
                self->tap(self->tap_arg, topic, zmq_msg_data(&body), zmq_msg_size(&body));
                atomic_fetch_add(&self->tapped, 1);
            }
        }
        else
            atomic_fetch_add(&self->subscriptions, 1);
        if (have_body)
            zmq_msg_close(&body);
    }
}

static void s_actor(zsock_t *pipe, void *arg)
{
    mon_proxy_t *self = (mon_proxy_t *) arg;
    void *xsub = zsock_resolve(self->xsub);
    void *xpub = zsock_resolve(self->xpub);
    if (self->tap_prefix) {
        /* Our own subscription: publishers filter on their side, so without it nothing
         * under the prefix would reach us unless some downstream subscriber asked for it.
         * XSUB reference-counts subscriptions, so downstream unsubscribes leave ours. */
        size_t plen = strlen(self->tap_prefix);
        char *sub = malloc(plen + 1);
        if (sub) {
            sub[0] = 1;
            memcpy(sub + 1, self->tap_prefix, plen);
            zmq_send(xsub, sub, plen + 1, 0);
            free(sub);
        }
    }
    zsock_signal(pipe, 0);
    zmq_pollitem_t items[] = {
        { zsock_resolve(pipe), 0, ZMQ_POLLIN, 0 },
        { xsub, 0, ZMQ_POLLIN, 0 },
        { xpub, 0, ZMQ_POLLIN, 0 },
    };
    for (;;) {
        if (zmq_poll(items, 3, -1) < 0) {
            if (zmq_errno() == EINTR)
                continue;   /* a signal for the main thread; it will stop us via the pipe */
            break;
        }
        if (items[0].revents & ZMQ_POLLIN) {
            zmsg_t *cmd = zmsg_recv(pipe);
            char *word = cmd ? zmsg_popstr(cmd) : NULL;
            bool term = !cmd || (word && streq(word, "$TERM"));
            free(word);
            zmsg_destroy(&cmd);
            if (term)
                break;
        }
        if (items[1].revents & ZMQ_POLLIN)
            s_pump(self, xsub, xpub, true);
        if (items[2].revents & ZMQ_POLLIN)
            s_pump(self, xpub, xsub, false);
    }
}

mon_proxy_t *mon_proxy_new(const mon_proxy_opts_t *opts)
{
    mon_proxy_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    snprintf(self->inproc, sizeof self->inproc, "inproc://quaver-monitor-bus-%p", (void *) self);
    if (opts->tap && opts->tap_prefix) {       /* a tap needs both, or there is none */
        self->tap_prefix = strdup(opts->tap_prefix);
        self->tap = self->tap_prefix ? opts->tap : NULL;
        self->tap_arg = opts->tap_arg;
    }
    self->xsub = zsock_new(ZMQ_XSUB);
    self->xpub = zsock_new(ZMQ_XPUB);
    if (!self->xsub || !self->xpub) {
        mon_proxy_destroy(&self);
        return NULL;
    }
    int hwm = opts->hwm > 0 ? opts->hwm : 10000;
    zsock_set_rcvhwm(self->xsub, hwm);
    zsock_set_sndhwm(self->xpub, hwm);
    /* Bus messages are events and snapshots (KBs); a peer sending more than this is broken
     * or hostile, and is disconnected instead of being buffered. */
    zsock_set_maxmsgsize(self->xsub, 16 * 1024 * 1024);
    zsock_set_linger(self->xsub, 0);
    zsock_set_linger(self->xpub, 0);
    self->xsub_port = s_bind_all(self->xsub, opts->xsub_bind, "XSUB");
    if (self->xsub_port < 0 || zsock_bind(self->xsub, "%s", self->inproc) < 0) {
        mon_proxy_destroy(&self);
        return NULL;
    }
    self->xpub_port = s_bind_all(self->xpub, opts->xpub_bind, "XPUB");
    if (self->xpub_port < 0) {
        mon_proxy_destroy(&self);
        return NULL;
    }
    /* The sockets move to the actor thread; zactor_new's thread start is the memory barrier
     * ZeroMQ asks for, and this thread never touches them again until the actor is gone. */
    self->actor = zactor_new(s_actor, self);
    if (!self->actor) {
        mon_proxy_destroy(&self);
        return NULL;
    }
    return self;
}

void mon_proxy_destroy(mon_proxy_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mon_proxy_t *self = *self_p;
    zactor_destroy(&self->actor);   /* sends $TERM and waits for the thread */
    zsock_destroy(&self->xsub);
    zsock_destroy(&self->xpub);
    free(self->tap_prefix);
    free(self);
    *self_p = NULL;
}

const char *mon_proxy_inproc(mon_proxy_t *self) { return self->inproc; }
int mon_proxy_xsub_port(mon_proxy_t *self) { return self->xsub_port > 0 ? self->xsub_port : -1; }
int mon_proxy_xpub_port(mon_proxy_t *self) { return self->xpub_port > 0 ? self->xpub_port : -1; }

void mon_proxy_stats(mon_proxy_t *self, mon_proxy_stats_t *out)
{
    out->forwarded = atomic_load(&self->forwarded);
    out->tapped = atomic_load(&self->tapped);
    out->subscriptions = atomic_load(&self->subscriptions);
}

/* ---- selftest: a PUB through the proxy to a SUB, with the tap counting metrics. ---------- */
typedef struct { _Atomic int calls; char topic[64]; char body[64]; } s_tap_seen_t;

static void s_test_tap(void *arg, const char *topic, const uint8_t *body, size_t len)
{
    s_tap_seen_t *seen = (s_tap_seen_t *) arg;
    if (atomic_load(&seen->calls) == 0) {
        snprintf(seen->topic, sizeof seen->topic, "%s", topic);
        snprintf(seen->body, sizeof seen->body, "%.*s", (int) len, (const char *) body);
    }
    atomic_fetch_add(&seen->calls, 1);   /* publishes topic/body to the reader */
}

int mon_proxy_selftest(void)
{
    s_tap_seen_t seen = { .calls = 0 };
    mon_proxy_opts_t opts = { "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", 100, "metrics.",
                              s_test_tap, &seen };
    mon_proxy_t *p = mon_proxy_new(&opts);
    if (!p) {
        fprintf(stderr, "proxy: new failed\n");
        return -1;
    }
    int rc = -1;
    zsock_t *pub = zsock_new_pub(NULL);
    zsock_t *sub = zsock_new_sub(NULL, "room.");
    zsock_connect(pub, "tcp://127.0.0.1:%d", mon_proxy_xsub_port(p));
    zsock_connect(sub, "tcp://127.0.0.1:%d", mon_proxy_xpub_port(p));
    zsock_set_rcvtimeo(sub, 200);
    /* Subscriptions propagate asynchronously (sub -> XPUB -> XSUB -> pub): retry until the
     * first room message arrives, as any late joiner would. */
    char *topic = NULL, *body = NULL;
    for (int i = 0; i < 50 && !topic; i++) {
        zstr_sendx(pub, "room.7", "hello", NULL);
        zstr_sendx(pub, "metrics.cache", "snap", NULL);
        zstr_sendx(pub, "alert.warning", "nobody listens", NULL);
        zstr_recvx(sub, &topic, &body, NULL);
    }
    if (!topic || !streq(topic, "room.7") || !body || !streq(body, "hello")) {
        fprintf(stderr, "proxy: room message not forwarded\n");
        goto done;
    }
    for (int i = 0; i < 50 && atomic_load(&seen.calls) == 0; i++)
        zclock_sleep(10);
    if (atomic_load(&seen.calls) == 0 || !streq(seen.topic, "metrics.cache") || !streq(seen.body, "snap")) {
        fprintf(stderr, "proxy: tap did not see metrics\n");
        goto done;
    }
    /* A subscriber that only asked for room. never gets the others. */
    char *t2 = NULL, *b2 = NULL;
    zstr_sendx(pub, "alert.warning", "x", NULL);
    zstr_sendx(pub, "room.8", "second", NULL);
    zstr_recvx(sub, &t2, &b2, NULL);
    bool ok = t2 && streq(t2, "room.8");
    zstr_free(&t2);
    zstr_free(&b2);
    if (!ok) {
        fprintf(stderr, "proxy: filter broken\n");
        goto done;
    }
    {
        /* A subscriber that never reads must cost others nothing: flood the bus far past
         * every buffer on its way (HWMs and the kernel's), then a reading subscriber still
         * gets the marker sent after the flood, and the sleeper has lost messages. */
        zsock_t *slow = zsock_new_sub(NULL, "flood.");
        zsock_t *fast = zsock_new_sub(NULL, "flood.end");
        zsock_set_rcvhwm(slow, 10);
        zsock_connect(slow, "tcp://127.0.0.1:%d", mon_proxy_xpub_port(p));
        zsock_connect(fast, "tcp://127.0.0.1:%d", mon_proxy_xpub_port(p));
        zsock_set_rcvtimeo(fast, 100);
        zsock_set_rcvtimeo(slow, 100);
        char *ft = NULL, *fb = NULL;
        for (int i = 0; i < 50 && !ft; i++) {     /* both subscriptions in place */
            zstr_sendx(pub, "flood.end", "probe", NULL);
            zstr_recvx(fast, &ft, &fb, NULL);
        }
        zstr_free(&ft);
        zstr_free(&fb);
        static char payload[1024];
        memset(payload, 'x', sizeof payload - 1);
        const int sent = 60000;                  /* ~60 MB */
        for (int i = 0; i < sent; i++)
            zstr_sendx(pub, "flood.data", payload, NULL);
        bool marker = false;
        for (int i = 0; i < 100 && !marker; i++) {
            zstr_sendx(pub, "flood.end", "done", NULL);
            if (zstr_recvx(fast, &ft, &fb, NULL) >= 0 && fb && streq(fb, "done"))
                marker = true;
            zstr_free(&ft);
            zstr_free(&fb);
        }
        int got = 0;
        zmsg_t *m;
        while ((m = zmsg_recv(slow)) != NULL) {
            got++;
            zmsg_destroy(&m);
        }
        zsock_destroy(&slow);
        zsock_destroy(&fast);
        mon_proxy_stats_t fs;
        mon_proxy_stats(p, &fs);
        if (getenv("MON_PROXY_VERBOSE"))
            fprintf(stderr, "proxy: forwarded %llu, slow subscriber got %d of %d\n",
                    (unsigned long long) fs.forwarded, got, sent);
        /* The proxy forwarded more than the sleeper got: it was dropped for, not waited on. */
        if (!marker || (uint64_t) got >= fs.forwarded) {
            fprintf(stderr, "proxy: marker %s, slow subscriber got %d of %llu forwarded\n",
                    marker ? "seen" : "lost", got, (unsigned long long) fs.forwarded);
            goto done;
        }
    }
    mon_proxy_stats_t st;
    mon_proxy_stats(p, &st);
    if (st.forwarded == 0 || st.tapped == 0 || st.subscriptions == 0) {
        fprintf(stderr, "proxy: stats not counted\n");
        goto done;
    }
    rc = 0;
done:
    zstr_free(&topic);
    zstr_free(&body);
    zsock_destroy(&pub);
    zsock_destroy(&sub);
    mon_proxy_destroy(&p);
    return rc;
}
