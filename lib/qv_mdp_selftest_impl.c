/* qv_mdp selftest: the broker, worker and client against each other on inproc and tcp
 * loopback, plus raw sockets that speak the protocol badly. Checks what a caller would see:
 * replies, status codes, who got which request, what stats say. Heartbeats are 100 ms so the
 * whole run takes a few seconds. Times are printed, never asserted tightly (shared machines):
 * the only time bounds are loose ones that catch "never". */
#include "qv_mdp.h"
#include "qv_clock.h"
#include "quaver/v1/envelope.pb-c.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_HB        100
#define S_LIVENESS  3
#define S_DEFAULT_DEADLINE 600

static int s_failed;
#define S_CHECK(cond, ...) do { if (!(cond)) { s_failed = 1; \
    fprintf(stderr, "qv_mdp_selftest: FAIL line %d: %s: ", __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

/* ---- an echo worker in its own thread -------------------------------------------------- */

typedef struct {
    qv_worker_t *worker;
    const char  *tag;          /* appended to each reply, to see who answered */
    pthread_t    thread;
    atomic_bool  done;
} s_echo_t;

static void *s_echo_main(void *arg)
{
    s_echo_t *e = (s_echo_t *) arg;
    zframe_t *reply_to;
    zmsg_t *body;
    while ((body = qv_worker_recv(e->worker, -1, &reply_to))) {
        zframe_t *first = zmsg_first(body);
        if (first && zframe_streq(first, "sleep"))
            zclock_sleep(200);
        if (e->tag)
            zmsg_addstr(body, e->tag);
        if (qv_worker_send(e->worker, &body, &reply_to) != 0)
            fprintf(stderr, "qv_mdp_selftest: echo %s: reply dropped\n", e->tag ? e->tag : "");
    }
    qv_worker_destroy(&e->worker);
    atomic_store(&e->done, true);
    return NULL;
}

/* The worker is made here and handed to its thread (thread creation is the memory barrier
 * ZeroMQ needs to move a socket between threads). */
static s_echo_t *s_echo_start_hb(const char *ep, const char *service, const char *tag, int hb)
{
    s_echo_t *e = (s_echo_t *) calloc(1, sizeof *e);
    e->worker = qv_worker_new(ep, service, hb, S_LIVENESS);
    e->tag = tag;
    atomic_init(&e->done, false);
    if (!e->worker || pthread_create(&e->thread, NULL, s_echo_main, e) != 0) {
        qv_worker_destroy(&e->worker);
        free(e);
        return NULL;
    }
    return e;
}

static s_echo_t *s_echo_start(const char *ep, const char *service, const char *tag)
{
    return s_echo_start_hb(ep, service, tag, S_HB);
}

/* Stops the worker from this (another) thread; returns the ms recv took to notice. */
static int64_t s_echo_stop(s_echo_t **e_p)
{
    s_echo_t *e = *e_p;
    if (!e)
        return -1;
    int64_t t0 = qv_mono_ms();
    qv_worker_stop(e->worker);
    while (!atomic_load(&e->done) && qv_mono_ms() - t0 < 3000)
        zclock_sleep(5);
    int64_t took = qv_mono_ms() - t0;
    if (atomic_load(&e->done))
        pthread_join(e->thread, NULL);
    else {
        S_CHECK(false, "worker %s ignored qv_worker_stop", e->tag ? e->tag : "");
        pthread_detach(e->thread);   /* leak rather than hang the runner */
        *e_p = NULL;
        return took;
    }
    free(e);
    *e_p = NULL;
    return took;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static int s_find(qv_broker_t *b, const char *name, qv_broker_service_stats_t *out)
{
    qv_broker_service_stats_t st[64];
    int n = qv_broker_stats(b, st, 64);
    for (int i = 0; i < n && i < 64; i++)
        if (strcmp(st[i].name, name) == 0) {
            *out = st[i];
            return 0;
        }
    return -1;
}

/* Waits (up to ms) until the service has `ready` ready workers. */
static bool s_wait_ready(qv_broker_t *b, const char *name, int ready, int ms)
{
    int64_t end = qv_mono_ms() + ms;
    qv_broker_service_stats_t s;
    while (qv_mono_ms() < end) {
        if (s_find(b, name, &s) == 0 && s.ready == ready)
            return true;
        zclock_sleep(10);
    }
    return false;
}

/* One call whose reply is a single string frame (or the frames joined by '|'). */
static char *s_call_str(qv_client_t *c, const char *service, const char *body, int timeout)
{
    zmsg_t *reply = NULL;
    if (qv_client_call(c, service, body, strlen(body), timeout, &reply) != 0)
        return NULL;
    char out[512] = "";
    for (zframe_t *f = zmsg_first(reply); f; f = zmsg_next(reply)) {
        if (out[0])
            strncat(out, "|", sizeof out - strlen(out) - 1);
        char *s = zframe_strdup(f);
        strncat(out, s, sizeof out - strlen(out) - 1);
        free(s);
    }
    zmsg_destroy(&reply);
    return strdup(out);
}

static bool s_call_is(qv_client_t *c, const char *service, const char *body, const char *want)
{
    char *got = s_call_str(c, service, body, 2000);
    bool ok = got && strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "qv_mdp_selftest: %s(%s): want '%s', got '%s'\n", service, body, want,
                got ? got : "(timeout)");
    free(got);
    return ok;
}

/* A raw DEALER speaking as a worker, to misbehave on purpose. */
static zsock_t *s_raw(const char *ep)
{
    zsock_t *s = zsock_new(ZMQ_DEALER);
    zsock_set_linger(s, 0);
    zsock_set_rcvtimeo(s, 2000);
    zsock_connect(s, "%s", ep);
    return s;
}

static void s_raw_cmd(zsock_t *s, int cmd, const char *arg)
{
    char c = (char) cmd;
    zmsg_t *m = zmsg_new();
    zmsg_addmem(m, "", 0);
    zmsg_addstr(m, QV_MDPW);
    zmsg_addmem(m, &c, 1);
    if (arg)
        zmsg_addstr(m, arg);
    zmsg_send(&m, s);
}

/* Reads until a DISCONNECT arrives (skipping heartbeats) or the socket times out. */
static bool s_raw_wait_disconnect(zsock_t *s)
{
    while (true) {
        zmsg_t *m = zmsg_recv(s);
        if (!m)
            return false;
        zframe_t *cmd = zmsg_size(m) >= 3 ? zmsg_last(m) : NULL;
        bool bye = zmsg_size(m) == 3 && cmd && zframe_size(cmd) == 1
                   && zframe_data(cmd)[0] == QV_MDPW_DISCONNECT;
        zmsg_destroy(&m);
        if (bye)
            return true;
    }
}

static void *s_tls_thread(void *arg)
{
    const char *ep = (const char *) arg;
    qv_client_t *c = qv_client_tls(ep);
    bool ok = c && c == qv_client_tls(ep) && s_call_is(c, "echo", "tls", "tls|A");
    return ok ? (void *) 1 : NULL;
}

void qv_broker_counters_(qv_broker_t *self, uint64_t *malformed, uint64_t *unroutable,
                         uint64_t *disconnected);
void qv_worker_test_hooks_(int (*lookup)(const char *host, char *ips, size_t len),
                           int resolve_ms);

static atomic_int s_dns_stage;

static int s_fake_lookup(const char *host, char *ips, size_t len)
{
    static const char *answers[] = { "127.0.0.1", "127.0.0.1,127.0.0.2", "127.0.0.2" };
    int stage = atomic_load(&s_dns_stage);
    if (strcmp(host, "brokers.quaver.test") != 0 || stage > 2)
        return -1;
    snprintf(ips, len, "%s", answers[stage]);
    return 0;
}

/* ---- the test ---------------------------------------------------------------------------- */

int qv_mdp_selftest(void)
{
    s_failed = 0;
    printf(" * qv_mdp: ");
    fflush(stdout);
    int64_t t_start = qv_mono_ms();
    qv_broker_t *b = qv_broker_new("tcp://127.0.0.1:*, inproc://qv-mdp-selftest", S_HB,
                                   S_LIVENESS, S_DEFAULT_DEADLINE);
    S_CHECK(b, "broker did not start");
    if (!b)
        return 1;
    int port = qv_broker_port(b);
    S_CHECK(port > 0, "port %d", port);
    char tcp[64], dns[64];
    snprintf(tcp, sizeof tcp, "tcp://127.0.0.1:%d", port);
    snprintf(dns, sizeof dns, "tcp://localhost:%d", port);
    S_CHECK(qv_broker_new("inproc://qv-mdp-selftest", S_HB, S_LIVENESS, 300) == NULL,
            "a second bind of the same endpoint must fail");

    /* round trip over tcp and inproc, the worker on both brokers' endpoints of one broker */
    s_echo_t *a = s_echo_start(tcp, "echo", "A");
    S_CHECK(a, "worker A");
    S_CHECK(s_wait_ready(b, "echo", 1, 3000), "worker A never became ready");
    qv_client_t *c = qv_client_new(tcp);
    qv_client_t *ci = qv_client_new("inproc://qv-mdp-selftest");
    S_CHECK(c && ci, "clients");
    S_CHECK(s_call_is(c, "echo", "hello", "hello|A"), "tcp round trip");
    S_CHECK(s_call_is(ci, "echo", "hello", "hello|A"), "inproc round trip");

    /* 8/MMI */
    S_CHECK(s_call_is(c, "mmi.service", "echo", "200"), "mmi.service known");
    S_CHECK(s_call_is(c, "mmi.service", "nosuch", "404"), "mmi.service unknown");
    S_CHECK(s_call_is(c, "mmi.nothing", "echo", "501"), "other mmi");

    /* no worker: the broker answers 503 at the deadline. Plain body -> "503"; */
    int64_t t0 = qv_mono_ms();
    S_CHECK(s_call_is(c, "nosuch", "ping", "503"), "plain 503");
    int64_t waited = qv_mono_ms() - t0;
    S_CHECK(waited >= S_DEFAULT_DEADLINE - 20 && waited < 5000,
            "503 after %lld ms, default deadline is %d", (long long) waited, S_DEFAULT_DEADLINE);
    /* ... a Call body -> a Result{503} at the Call's own deadline. */
    {
        Quaver__V1__Call call = QUAVER__V1__CALL__INIT;
        call.method = "Get";
        call.deadline_ms = qv_wall_ms() + 100;
        uint8_t buf[64];
        size_t len = quaver__v1__call__pack(&call, buf);
        zmsg_t *reply = NULL;
        t0 = qv_mono_ms();
        int rc = qv_client_call(c, "cache", buf, len, 2000, &reply);
        waited = qv_mono_ms() - t0;
        S_CHECK(rc == 0 && zmsg_size(reply) == 1, "Call to a service without workers");
        zframe_t *f = reply ? zmsg_first(reply) : NULL;
        Quaver__V1__Result *res = f ? quaver__v1__result__unpack(NULL, zframe_size(f),
                                                                 zframe_data(f)) : NULL;
        S_CHECK(res && res->status == 503 && strstr(res->error, "service cache unavailable"),
                "Result{503}: %s", res ? res->error : "(none)");
        /* 100 ms, not the default: the margin is wide so that a loaded machine passes */
        S_CHECK(waited >= 80 && waited < S_DEFAULT_DEADLINE - 100,
                "Call deadline 100 ms honoured (%lld ms)", (long long) waited);
        if (res)
            quaver__v1__result__free_unpacked(res, NULL);
        zmsg_destroy(&reply);
        qv_broker_service_stats_t st;
        S_CHECK(s_find(b, "cache", &st) != 0, "a service nobody served is forgotten");
    }

    /* LRU: B becomes ready after A, then calls alternate A, B, A, B */
    s_echo_t *bw = s_echo_start(tcp, "echo", "B");
    S_CHECK(s_wait_ready(b, "echo", 2, 3000), "worker B never became ready");
    /* A went back to the ready list after its last reply, before B arrived: A is first. */
    S_CHECK(s_call_is(c, "echo", "1", "1|A") && s_call_is(c, "echo", "2", "2|B")
            && s_call_is(c, "echo", "3", "3|A") && s_call_is(c, "echo", "4", "4|B"),
            "LRU order");
    qv_broker_service_stats_t st = { .workers = -1 };
    S_CHECK(s_find(b, "echo", &st) == 0 && st.workers == 2 && st.requests == 6
            && st.inflight == 0 && st.queued == 0 && st.last_heartbeat_age_ms >= 0,
            "stats workers=%d requests=%llu inflight=%d", st.workers,
            (unsigned long long) st.requests, st.inflight);
    S_CHECK(s_echo_stop(&bw) < 1000, "stop B");
    S_CHECK(s_wait_ready(b, "echo", 1, 1000), "B's DISCONNECT removes it at once");

    /* a request handed to a worker whose process died (connection closed, not yet expired)
     * goes to the next worker instead of being lost. Slow heartbeats keep the broker from
     * noticing the death by itself first. */
    {
        qv_broker_t *b3 = qv_broker_new("tcp://127.0.0.1:*", 5000, S_LIVENESS, 2000);
        char ep3[64];
        snprintf(ep3, sizeof ep3, "tcp://127.0.0.1:%d", qv_broker_port(b3));
        zsock_t *zombie = s_raw(ep3);
        s_raw_cmd(zombie, QV_MDPW_READY, "requeue");
        S_CHECK(s_wait_ready(b3, "requeue", 1, 2000), "zombie READY");
        s_echo_t *r = s_echo_start_hb(ep3, "requeue", "R", 5000);
        S_CHECK(s_wait_ready(b3, "requeue", 2, 2000), "second worker READY");
        zsock_destroy(&zombie);             /* killed: no DISCONNECT */
        zclock_sleep(200);                  /* the ROUTER sees the connection close */
        qv_client_t *c3 = qv_client_new(ep3);
        S_CHECK(s_call_is(c3, "requeue", "x", "x|R"), "request to a dead worker re-queued");
        S_CHECK(s_find(b3, "requeue", &st) == 0 && st.workers == 1, "dead worker forgotten "
                "(workers %d)", st.workers);
        uint64_t m3, u3, d3;
        qv_broker_counters_(b3, &m3, &u3, &d3);
        S_CHECK(u3 == 1 && d3 == 1, "refused REQUEST counted (unroutable %llu)",
                (unsigned long long) u3);
        qv_client_destroy(&c3);
        s_echo_stop(&r);
        qv_broker_destroy(&b3);
    }

    /* a worker found through DNS ("localhost"), and a client per thread */
    s_echo_t *d = s_echo_start(dns, "dnsecho", "D");
    S_CHECK(d && s_wait_ready(b, "dnsecho", 1, 3000), "worker through DNS");
    S_CHECK(s_call_is(c, "dnsecho", "x", "x|D"), "round trip through the DNS worker");
    s_echo_stop(&d);
    /* one logical worker on two brokers answers each on the connection it asked on */
    {
        qv_broker_t *b2 = qv_broker_new("inproc://qv-mdp-selftest-2", S_HB, S_LIVENESS, 300);
        char both[128];
        snprintf(both, sizeof both, "%s,inproc://qv-mdp-selftest-2", tcp);
        s_echo_t *m = s_echo_start(both, "multi", "M");
        S_CHECK(b2 && m && s_wait_ready(b, "multi", 1, 3000) && s_wait_ready(b2, "multi", 1, 3000),
                "worker on two brokers");
        qv_client_t *c2 = qv_client_new("inproc://qv-mdp-selftest-2");
        S_CHECK(s_call_is(c, "multi", "one", "one|M") && s_call_is(c2, "multi", "two", "two|M")
                && s_call_is(c, "multi", "three", "three|M"), "replies go back to their broker");
        qv_client_destroy(&c2);
        s_echo_stop(&m);
        qv_broker_destroy(&b2);
    }
    /* recv gives up at its timeout */
    {
        qv_worker_t *idle = qv_worker_new(tcp, "idle", S_HB, S_LIVENESS);
        zframe_t *rt = NULL;
        t0 = qv_mono_ms();
        zmsg_t *none = qv_worker_recv(idle, 50, &rt);
        waited = qv_mono_ms() - t0;
        S_CHECK(!none && !rt && waited >= 45 && waited < 1000, "recv timeout (%lld ms)",
                (long long) waited);
        zmsg_destroy(&none);
        qv_worker_destroy(&idle);
        S_CHECK(qv_worker_new(tcp, "", S_HB, S_LIVENESS) == NULL, "empty service refused");
        S_CHECK(qv_worker_new("bogus://x", "idle", S_HB, S_LIVENESS) == NULL,
                "bad endpoint refused");
        S_CHECK(qv_worker_new(" , ", "idle", S_HB, S_LIVENESS) == NULL, "no endpoint refused");
    }
    /* discovery: one DEALER per address of a name, following the answers as they change
     * (a fake resolver stands in for the headless Service's A records) */
    {
        char ep2[64];
        snprintf(ep2, sizeof ep2, "tcp://127.0.0.2:%d", port);
        qv_broker_t *b2 = qv_broker_new(ep2, S_HB, S_LIVENESS, S_DEFAULT_DEADLINE);
        if (!b2)
            printf("(no 127.0.0.2 here: discovery test skipped) ");
        else {
            atomic_store(&s_dns_stage, 0);
            qv_worker_test_hooks_(s_fake_lookup, 100);
            char name[64];
            snprintf(name, sizeof name, "tcp://brokers.quaver.test:%d", port);
            s_echo_t *m = s_echo_start(name, "disc", "M");
            S_CHECK(m && s_wait_ready(b, "disc", 1, 3000), "resolved to the first broker");
            S_CHECK(s_find(b2, "disc", &st) != 0, "not yet on the second broker");
            atomic_store(&s_dns_stage, 1);     /* a second broker appears */
            S_CHECK(s_wait_ready(b2, "disc", 1, 3000), "new address connected");
            atomic_store(&s_dns_stage, 2);     /* the first one vanishes */
            bool left = false;
            for (int64_t end = qv_mono_ms() + 3000; !left && qv_mono_ms() < end;
                 zclock_sleep(10))
                left = s_find(b, "disc", &st) == 0 && st.workers == 0;
            S_CHECK(left, "vanished address dropped");
            atomic_store(&s_dns_stage, 3);     /* lookups fail: keep what we have */
            zclock_sleep(S_HB * S_LIVENESS * 2);
            qv_client_t *c2 = qv_client_new(ep2);
            S_CHECK(s_wait_ready(b2, "disc", 1, 100) && s_call_is(c2, "disc", "dns", "dns|M"),
                    "a failed lookup keeps the connections");
            qv_client_destroy(&c2);
            s_echo_stop(&m);
            qv_worker_test_hooks_(NULL, 0);
            qv_broker_destroy(&b2);
        }
    }
    /* a request dropped without a reply: the next recv starts over, the worker is usable */
    {
        qv_worker_t *w = qv_worker_new(tcp, "drop", S_HB, S_LIVENESS);
        zsock_t *raw_client = zsock_new(ZMQ_DEALER);
        zsock_set_linger(raw_client, 0);
        zsock_connect(raw_client, "%s", tcp);
        zframe_t *rt = NULL;
        zmsg_t *none = qv_worker_recv(w, 300, &rt);    /* registers */
        S_CHECK(!none, "nothing to receive yet");
        zstr_sendx(raw_client, "", QV_MDPC, "drop", "first", NULL);
        zmsg_t *req = qv_worker_recv(w, 2000, &rt);
        S_CHECK(req && rt && zframe_streq(zmsg_first(req), "first"), "request received");
        zmsg_destroy(&req);
        zframe_destroy(&rt);                            /* ... and dropped */
        none = qv_worker_recv(w, 300, &rt);
        S_CHECK(!none && s_find(b, "drop", &st) == 0 && st.workers == 1 && st.ready == 1
                && st.inflight == 0, "dropped request: workers %d ready %d inflight %d",
                st.workers, st.ready, st.inflight);
        zstr_sendx(raw_client, "", QV_MDPC, "drop", "second", NULL);
        req = qv_worker_recv(w, 2000, &rt);
        S_CHECK(req && zframe_streq(zmsg_first(req), "second"), "next request after a drop");
        S_CHECK(qv_worker_send(w, &req, &rt) == 0 && !req && !rt, "reply sent");
        char *e = NULL, *h = NULL, *svc = NULL, *body = NULL;
        zsock_set_rcvtimeo(raw_client, 2000);
        zstr_recvx(raw_client, &e, &h, &svc, &body, NULL);
        S_CHECK(body && strcmp(body, "second") == 0 && svc && strcmp(svc, "drop") == 0,
                "raw client got the reply");
        zstr_free(&e); zstr_free(&h); zstr_free(&svc); zstr_free(&body);
        S_CHECK(qv_worker_send(w, &(zmsg_t *){ zmsg_new() }, &(zframe_t *){ zframe_new("x", 1) })
                == -1, "a reply without a request is refused");
        zsock_destroy(&raw_client);
        qv_worker_destroy(&w);
    }
    pthread_t th;
    void *tls_ok = NULL;
    pthread_create(&th, NULL, s_tls_thread, tcp);
    pthread_join(th, &tls_ok);
    S_CHECK(tls_ok, "qv_client_tls call from a thread");

    /* a timed-out call replaces the socket: the late reply is not the next call's */
    S_CHECK(qv_client_call(c, "echo", "sleep", 5, 100, &(zmsg_t *){ NULL }) == -1,
            "call must time out");
    S_CHECK(s_call_is(c, "echo", "after", "after|A"), "late reply taken for the next call");

    /* a worker that stops heartbeating disappears within hb * liveness (+ one tick) */
    zsock_t *ghost = s_raw(tcp);
    s_raw_cmd(ghost, QV_MDPW_READY, "ghost");
    S_CHECK(s_wait_ready(b, "ghost", 1, 2000), "ghost READY");
    t0 = qv_mono_ms();
    bool gone = false;
    while (!gone && qv_mono_ms() - t0 < 3000) {
        gone = s_find(b, "ghost", &st) == 0 && st.workers == 0;
        zclock_sleep(10);
    }
    waited = qv_mono_ms() - t0;
    /* due at hb * liveness (+ one heartbeat tick); the bound is loose for loaded machines */
    S_CHECK(gone && waited <= 5 * S_HB * S_LIVENESS, "silent worker still there after %lld ms",
            (long long) waited);
    printf("(silent worker gone after %lld ms) ", (long long) waited);
    S_CHECK(s_raw_wait_disconnect(ghost), "expired worker is told DISCONNECT");

    /* protocol errors: READY twice, an unknown command, garbage; the broker goes on */
    uint64_t bad0, bad1, unr, disc0, disc1;
    qv_broker_counters_(b, &bad0, &unr, &disc0);
    zsock_t *twice = s_raw(tcp);
    s_raw_cmd(twice, QV_MDPW_READY, "twice");
    s_raw_cmd(twice, QV_MDPW_READY, "twice");
    S_CHECK(s_raw_wait_disconnect(twice), "READY twice -> DISCONNECT");
    zsock_t *odd = s_raw(tcp);
    s_raw_cmd(odd, QV_MDPW_READY, "odd");
    s_raw_cmd(odd, 42, NULL);
    S_CHECK(s_raw_wait_disconnect(odd), "unknown command -> DISCONNECT");
    s_raw_cmd(odd, QV_MDPW_REPLY, NULL);              /* REPLY from nobody */
    S_CHECK(s_raw_wait_disconnect(odd), "REPLY from an unknown worker -> DISCONNECT");
    zstr_send(odd, "junk");                           /* no empty delimiter */
    zstr_sendx(odd, "", "MDPC01", NULL);              /* client without service */
    zstr_sendx(odd, "", "MDPW01", "", NULL);          /* empty command frame */
    zstr_sendx(odd, "", "MDPW01", "\x01", "mmi.x", NULL);  /* READY for mmi.* */
    S_CHECK(s_raw_wait_disconnect(odd), "READY mmi.* -> DISCONNECT");
    /* deterministic fuzz: random frames, often behind a valid-looking header */
    {
        uint32_t seed = 20261122;
        for (int i = 0; i < 500; i++) {
            zmsg_t *m = zmsg_new();
            seed = seed * 1103515245u + 12345u;
            int frames = (int) (seed >> 16) % 7;
            for (int f = 0; f < frames; f++) {
                seed = seed * 1103515245u + 12345u;
                int kind = (int) (seed >> 16) % 6;
                uint8_t junk[80];
                size_t n = (seed >> 8) % sizeof junk;
                for (size_t k = 0; k < n; k++) {
                    seed = seed * 1103515245u + 12345u;
                    junk[k] = (uint8_t) (seed >> 16);
                }
                if (f == 0 && kind < 4)
                    zmsg_addmem(m, "", 0);
                else if (f == 1 && kind < 2)
                    zmsg_addstr(m, QV_MDPW);
                else if (f == 1 && kind < 4)
                    zmsg_addstr(m, QV_MDPC);
                else if (f == 2 && kind < 3)
                    zmsg_addmem(m, &(char){ (char) (1 + kind % 5) }, 1);
                else
                    zmsg_addmem(m, junk, n);
            }
            if (zmsg_size(m) > 0)
                zmsg_send(&m, odd);
            zmsg_destroy(&m);
        }
    }
    S_CHECK(s_call_is(c, "echo", "still", "still|A"), "broker survives garbage");
    qv_broker_counters_(b, &bad1, &unr, &disc1);
    S_CHECK(bad1 - bad0 >= 5 && disc1 - disc0 >= 2, "malformed %llu, disconnected %llu",
            (unsigned long long) (bad1 - bad0), (unsigned long long) (disc1 - disc0));
    zsock_destroy(&ghost);
    zsock_destroy(&twice);
    zsock_destroy(&odd);

    /* a vanished client: its reply is dropped and counted, the broker does not block */
    {
        zsock_t *gone_client = zsock_new(ZMQ_DEALER);
        zsock_set_linger(gone_client, 0);
        zsock_connect(gone_client, "%s", tcp);
        zstr_sendx(gone_client, "", "MDPC01", "echo", "sleep", NULL);
        zclock_sleep(100);
        zsock_destroy(&gone_client);
        zclock_sleep(500);
        qv_broker_counters_(b, &bad1, &unr, &disc1);
        S_CHECK(unr >= 1, "unroutable reply counted (%llu)", (unsigned long long) unr);
    }

    /* the broker is away longer than hb * liveness, then back on the same port: the worker
     * replaced its silent socket meanwhile and registers again as soon as it can connect */
    qv_client_destroy(&ci);
    qv_broker_destroy(&b);
    S_CHECK(b == NULL, "destroy nulls");
    zclock_sleep(S_HB * S_LIVENESS * 3);
    char again[64];
    snprintf(again, sizeof again, "tcp://127.0.0.1:%d", port);
    /* the old listener closes asynchronously (libzmq's reaper): retry the bind a while */
    for (int i = 0; i < 100 && !(b = qv_broker_new(again, S_HB, S_LIVENESS, 300)); i++)
        zclock_sleep(20);
    S_CHECK(b, "broker restart on %s", again);
    t0 = qv_mono_ms();
    S_CHECK(b && s_wait_ready(b, "echo", 1, 3000), "worker did not come back");
    printf("(worker back after %lld ms) ", (long long) (qv_mono_ms() - t0));
    S_CHECK(s_call_is(c, "echo", "back", "back|A"), "round trip after broker restart");

    /* qv_worker_recv returns NULL soon after qv_worker_stop from another thread */
    int64_t took = s_echo_stop(&a);
    S_CHECK(took >= 0 && took < 1000, "stop took %lld ms", (long long) took);
    S_CHECK(s_wait_ready(b, "echo", 0, 1000) && s_find(b, "echo", &st) == 0 && st.workers == 0,
            "stopped worker said DISCONNECT");

    qv_client_destroy(&c);
    qv_broker_destroy(&b);
    printf("%s (%lld ms)\n", s_failed ? "FAILED" : "OK", (long long) (qv_mono_ms() - t_start));
    return s_failed;
}
