/* qv_server: the loop every daemon runs (see qv_rpc.h, "server").
 * Guarantees: cfg->workers MDP worker threads, each owning its qv_worker_t, each dispatching
 * through qv_dispatch; timers (including the metrics.<service> publication every second) run
 * on the calling thread, never on a sleeping thread of their own; SIGINT/SIGTERM (czmq's
 * handler sets zsys_interrupted) or qv_server_stop end the run: every worker thread finishes
 * the request in hand, sends DISCONNECT (qv_worker_destroy) and is joined before
 * qv_server_run returns, so no reply is cut in half and the broker stops routing to us at
 * once instead of after its heartbeat timeout. */
#include "qv_rpc.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "qv_mdp.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_METRICS_INTERVAL_MS 1000
#define S_STOP_CHECK_MS 100
#define S_WORKER_POLL_MS 200

typedef struct s_timer_t {
    void (*fn)(void *app);
    void *app;
    struct s_timer_t *next;
} s_timer_t;

typedef struct {
    qv_server_t *server;
    qv_worker_t *worker;
    pthread_t    thread;
    bool         started;
} s_worker_thread_t;

struct qv_server_t {
    char                   *service;
    char                   *instance;
    char                   *metrics_topic;
    const qv_common_cfg_t  *cfg;
    const qv_method_t      *methods;
    void                   *app;
    qv_metrics_t           *metrics;
    qv_bus_t               *bus;
    zloop_t                *loop;
    s_timer_t              *timers;
    atomic_int              stop;
    atomic_ullong           handled;
};

static void s_publish_metrics(qv_server_t *self)
{
    Quaver__V1__MetricsSnapshot *snap = qv_metrics_snapshot(self->metrics);
    if (!snap)
        return;
    Quaver__V1__BusMessage msg = QUAVER__V1__BUS_MESSAGE__INIT;
    msg.body_case = QUAVER__V1__BUS_MESSAGE__BODY_METRICS;
    msg.metrics = snap;
    qv_bus_publish(self->bus, self->metrics_topic, &msg);
    qv_metrics_snapshot_free(snap);
}

static int s_on_metrics_timer(zloop_t *loop, int timer_id, void *arg)
{
    s_publish_metrics((qv_server_t *) arg);
    return 0;
}

/* zloop cannot be woken from another thread or a signal handler, so it looks at the stop
 * flag on a short timer; returning -1 ends zloop_start. */
static int s_on_stop_check(zloop_t *loop, int timer_id, void *arg)
{
    qv_server_t *self = arg;
    return atomic_load(&self->stop) || zsys_interrupted ? -1 : 0;
}

static int s_on_user_timer(zloop_t *loop, int timer_id, void *arg)
{
    s_timer_t *t = arg;
    t->fn(t->app);
    return 0;
}

qv_server_t *qv_server_new(const char *service, const qv_common_cfg_t *cfg,
                           const qv_method_t *methods, void *app)
{
    if (!service || !*service || !cfg)
        return NULL;
    qv_server_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->methods = methods;
    self->app = app;
    atomic_init(&self->stop, 0);
    atomic_init(&self->handled, 0);
    self->service = strdup(service);
    if (cfg->instance && *cfg->instance)
        self->instance = strdup(cfg->instance);
    else {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        if (asprintf(&self->instance, "%s-%d", host, (int) getpid()) < 0)
            self->instance = NULL;
    }
    char *publisher = NULL;
    if (!self->service || !self->instance ||
        asprintf(&self->metrics_topic, "metrics.%s", service) < 0 ||
        asprintf(&publisher, "%s/%s", service, self->instance) < 0)
        goto fail;
    self->metrics = qv_metrics_new(service, self->instance);
    self->bus = qv_bus_new(cfg->bus_pub, publisher);
    free(publisher);
    if (!self->metrics) 
        goto fail;
    if (!self->bus) {
        qv_error("%s: cannot publish on the bus at '%s'", service, cfg->bus_pub);
        goto fail;
    }
    self->loop = zloop_new();
    if (!self->loop ||
        zloop_timer(self->loop, S_METRICS_INTERVAL_MS, 0, s_on_metrics_timer, self) < 0 ||
        zloop_timer(self->loop, S_STOP_CHECK_MS, 0, s_on_stop_check, self) < 0)
        goto fail;

    qv_metric_set(qv_metrics_gauge(self->metrics, "quaver_up", "1 while the daemon runs.", NULL),
                  1);
    qv_metric_set(qv_metrics_gauge(self->metrics, "quaver_process_start_time_seconds",
                                   "Start time of the process since the Unix epoch in seconds.",
                                   NULL),
                  (double) qv_wall_ms() / 1000.0);
    qv_metric_set(qv_metrics_gauge(self->metrics, "quaver_workers",
                                   "MDP worker threads configured.", NULL),
                  (double) cfg->workers);
    return self;
fail:
    qv_server_destroy(&self);
    return NULL;
}

void qv_server_destroy(qv_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    qv_server_t *self = *self_p;
    zloop_destroy(&self->loop);
    while (self->timers) {
        s_timer_t *t = self->timers;
        self->timers = t->next;
        free(t);
    }
    qv_bus_destroy(&self->bus);
    qv_metrics_destroy(&self->metrics);
    free(self->service);
    free(self->instance);
    free(self->metrics_topic);
    free(self);
    *self_p = NULL;
}

qv_metrics_t *qv_server_metrics(qv_server_t *self) { return self ? self->metrics : NULL; }
qv_bus_t *qv_server_bus(qv_server_t *self) { return self ? self->bus : NULL; }
const char *qv_server_instance(qv_server_t *self) { return self ? self->instance : NULL; }

int qv_server_add_timer(qv_server_t *self, int interval_ms, void (*fn)(void *app))
{
    if (!self || !fn || interval_ms <= 0)
        return -1;
    s_timer_t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->fn = fn;
    t->app = self->app;
    if (zloop_timer(self->loop, (size_t) interval_ms, 0, s_on_user_timer, t) < 0) {
        free(t);
        return -1;
    }
    t->next = self->timers;
    self->timers = t;
    return 0;
}

void qv_server_stop(qv_server_t *self)
{
    if (self)
        atomic_store(&self->stop, 1);
}

static void *s_worker_main(void *arg)
{
    s_worker_thread_t *wt = arg;
    qv_server_t *self = wt->server;
    while (!atomic_load(&self->stop) && !zsys_interrupted) {
        zframe_t *reply_to = NULL;
        zmsg_t *req = qv_worker_recv(wt->worker, S_WORKER_POLL_MS, &reply_to);
        if (!req) {
            zframe_destroy(&reply_to);
            continue;
        }
        /* The body is one frame, a Call (DESIGN.md); any other count is a 400, answered
         * without dispatching. */
        uint8_t *out = NULL;
        size_t out_len = 0;
        int rc;
        if (zmsg_size(req) == 1) {
            zframe_t *body = zmsg_first(req);
            rc = qv_dispatch(self->service, self->methods, self->app, self->metrics,
                             zframe_data(body), zframe_size(body), &out, &out_len);
        } else {
            char why[96];
            snprintf(why, sizeof why, "a request body is one frame (quaver.v1.Call), not %zu",
                     zmsg_size(req));
            rc = qv_result_pack(400, why, NULL, 0, &out, &out_len);
        }
        if (rc == 0) {
            zmsg_t *reply = zmsg_new();
            zmsg_addmem(reply, out, out_len);
            if (qv_worker_send(wt->worker, &reply, &reply_to) != 0)
                qv_warn("%s: could not send a reply", self->service);
            zmsg_destroy(&reply);
        }
        free(out);
        zframe_destroy(&reply_to);
        zmsg_destroy(&req);
        atomic_fetch_add(&self->handled, 1);
    }
    qv_worker_destroy(&wt->worker);   /* sends DISCONNECT */
    return NULL;
}

int qv_server_run(qv_server_t *self)
{
    if (!self)
        return -1;
    const qv_common_cfg_t *cfg = self->cfg;
    /* czmq installs its SIGINT/SIGTERM handler at zsys_init, unless a daemon's own code
     * replaced it since; install it again so a signal always reaches zsys_interrupted. */
    zsys_init();
    zsys_catch_interrupts();

    int n = cfg->workers > 0 ? (int) cfg->workers : 1;
    s_worker_thread_t *wts = calloc((size_t) n, sizeof *wts);
    if (!wts)
        return -1;
    int rc = 0;
    /* Workers are made here, so a bad broker endpoint fails the run before any thread
     * starts; each is then handed to its thread and used only there. */
    for (int i = 0; i < n; i++) {
        wts[i].server = self;
        wts[i].worker = qv_worker_new(cfg->broker, self->service, (int) cfg->heartbeat_ms,
                                      (int) cfg->heartbeat_liveness);
        if (!wts[i].worker) {
            qv_error("%s: cannot create an MDP worker for broker '%s'", self->service,
                     cfg->broker);
            rc = -1;
            goto stop;
        }
    }
    for (int i = 0; i < n; i++) {
        if (pthread_create(&wts[i].thread, NULL, s_worker_main, &wts[i]) != 0) {
            qv_error("%s: cannot start worker thread %d", self->service, i);
            rc = -1;
            goto stop;
        }
        wts[i].started = true;
    }
    s_publish_metrics(self);   /* the monitor sees us up at once, not a second later */
    qv_info("%s ready: %d workers, broker %s, bus %s, instance %s", self->service, n,
            cfg->broker, cfg->bus_pub && *cfg->bus_pub ? cfg->bus_pub : "(none)",
            self->instance);
    zloop_start(self->loop);
    qv_info("%s stopping%s", self->service, zsys_interrupted ? " (signal)" : "");

stop:
    atomic_store(&self->stop, 1);
    for (int i = 0; i < n; i++)
        if (wts[i].started)
            qv_worker_stop(wts[i].worker);
    for (int i = 0; i < n; i++) {
        if (wts[i].started)
            pthread_join(wts[i].thread, NULL);
        else
            qv_worker_destroy(&wts[i].worker);
    }
    free(wts);
    qv_metric_set(qv_metrics_gauge(self->metrics, "quaver_up", "1 while the daemon runs.", NULL),
                  0);
    s_publish_metrics(self);
    if (rc == 0)
        qv_info("%s stopped after %llu requests", self->service,
                (unsigned long long) atomic_load(&self->handled));
    return rc;
}
