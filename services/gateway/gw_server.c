/* gw_server: starts and stops the gateway's parts in a safe order.
 * Guarantees: the broker is bound before civetweb accepts a request (so the first call has a
 * broker to reach); the catch-all route handler is registered only after the WebSocket hub
 * exists (so no handler can announce a room event to a hub that is not there yet); on
 * SIGINT/SIGTERM civetweb stops first (it joins its threads, so no request is in flight), then
 * the hub, then the broker, bus and metrics. The metrics snapshot goes on the bus every second
 * from the main thread's zloop timer: the gateway is not an MDP worker, so qv_server_run's
 * loop is not ours, and this loop is the one the process waits in anyway. */
#include "gw_server.h"
#include "gw_ratelimit.h"
#include "gw_routes.h"
#include "qv_clock.h"
#include "qv_log.h"
#include <czmq.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *gw_client_endpoint(const char *broker_bind, const char *broker)
{
    if (broker_bind) {
        const char *p = broker_bind;
        while (*p) {
            while (*p == ' ' || *p == ',')
                p++;
            size_t n = strcspn(p, ", ");
            if (n > 9 && strncmp(p, "inproc://", 9) == 0)
                return strndup(p, n);
            p += n;
        }
    }
    return strdup(broker ? broker : "");
}

static int s_civetweb_log(const struct mg_connection *conn, const char *message)
{
    (void) conn;
    qv_log(QV_LOG_WARN, NULL, "civetweb: %s", message);
    return 1;   /* handled: civetweb writes nothing itself */
}

gw_server_t *gw_server_new(const gw_cfg_t *cfg)
{
    gw_server_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->started_ms = qv_mono_ms();
    if (cfg->instance && *cfg->instance) {
        snprintf(self->instance, sizeof self->instance, "%s", cfg->instance);
    } else {
        char host[64] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(self->instance, sizeof self->instance, "%s-%d", host, (int) getpid());
    }
    snprintf(self->publisher, sizeof self->publisher, "gateway/%s", self->instance);
    if (sodium_init() < 0) {
        qv_error("libsodium failed to initialise");
        goto fail;
    }
    gw_users_warmup();
    zsys_init();    /* installs the SIGINT/SIGTERM handler the main loop waits on */

    self->client_broker = gw_client_endpoint(cfg->broker_bind, cfg->broker);
    self->broker = qv_broker_new(cfg->broker_bind, (int) cfg->heartbeat_ms,
                                 (int) cfg->heartbeat_liveness, (int) cfg->default_deadline_ms);
    if (!self->broker) {
        qv_error("cannot bind the MDP broker on %s", cfg->broker_bind);
        goto fail;
    }
    self->bus = qv_bus_new(cfg->bus_pub, self->publisher);
    self->metrics = qv_metrics_new("gateway", self->instance);
    if (!self->bus || !self->metrics) {
        qv_error("cannot create the bus publisher or the metrics registry");
        goto fail;
    }
    /* The response cache: the cache daemon's engine in this process (gw_cache.h says why).
     * The gateway stores only its own JSON answers, so the key and value limits are fixed. */
    self->cache_cfg = cfg->cache;
    self->cache_cfg.max_key_bytes = 512;
    self->cache_cfg.max_value_bytes = 8 * 1024 * 1024;
    self->cache = cache_embed_new(&self->cache_cfg, self->metrics);
    if (!self->cache) {
        qv_error("cannot start the response cache");
        goto fail;
    }
    if (cfg->rate_limiting_enabled &&
        !(self->ratelimit = gw_ratelimit_new(cfg->max_requests_per_hour, 3600,
                                             (size_t) cfg->rate_limit_max_callers))) {
        qv_error("cannot create the rate limiter");
        goto fail;
    }

    mg_init_library(0);
    char port[16], threads[16], ws_timeout[16];
    snprintf(port, sizeof port, "%lld", (long long) cfg->http_port);
    snprintf(threads, sizeof threads, "%lld", (long long) cfg->http_threads);
    /* gw_ws.c relies on a short WebSocket read timeout to notice closes it asked for, and on
     * enable_websocket_ping_pong staying "no" (it answers PINGs itself). */
    snprintf(ws_timeout, sizeof ws_timeout, "%d", 1000);
    const char *options[] = {
        "listening_ports", port,
        "num_threads", threads,
        "tcp_nodelay", "1",
        /* A socket read or write that stalls this long ends the request: long enough for a slow
         * upload link, short enough that a dead client frees its thread. */
        "request_timeout_ms", "60000",
        "websocket_timeout_ms", ws_timeout,
        "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", "5000",
        NULL
    };
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.log_message = s_civetweb_log;
    self->ctx = mg_start(&cb, self, options);
    if (!self->ctx) {
        qv_error("civetweb could not start on port %lld", (long long) cfg->http_port);
        goto fail;
    }
    gw_ws_cfg_t wc = {
        .jwt_secret = cfg->jwt_secret,
        .broker = self->client_broker,
        .bus_sub = cfg->bus_sub ? cfg->bus_sub : "",
        .publisher = self->publisher,
        .max_connections = (int) cfg->ws_max_connections,
        .ping_interval_s = (int) cfg->ws_ping_interval,
        .activity_timeout_s = (int) cfg->ws_activity_timeout,
        .bus = self->bus,
        .metrics = self->metrics,
    };
    self->ws = gw_ws_new(self->ctx, &wc);
    if (!self->ws) {
        qv_error("cannot start the WebSocket hub");
        goto fail;
    }
    /* "/" matches every path: unknown ones must get our JSON 404, not civetweb's page. */
    mg_set_request_handler(self->ctx, "/", gw_routes_handle, self);
    qv_info("gateway %s: http on port %lld (%lld threads), broker on %s, calls via %s",
            self->instance, (long long) cfg->http_port, (long long) cfg->http_threads,
            cfg->broker_bind, self->client_broker);
    return self;
fail:
    gw_server_destroy(&self);
    return NULL;
}

void gw_server_destroy(gw_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_server_t *self = *self_p;
    if (self->ctx) {
        mg_stop(self->ctx);
        self->ctx = NULL;
        qv_debug("civetweb stopped");
    }
    gw_ws_destroy(&self->ws);
    qv_debug("websocket hub stopped");
    cache_embed_destroy(&self->cache);
    gw_ratelimit_destroy(&self->ratelimit);
    qv_broker_destroy(&self->broker);
    qv_debug("broker stopped");
    qv_bus_destroy(&self->bus);
    qv_metrics_destroy(&self->metrics);
    free(self->client_broker);
    free(self);
    *self_p = NULL;
}

/* Once a second: broker gauges, then the registry's snapshot on the bus. */
static int s_tick(zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    gw_server_t *self = arg;
    qv_broker_service_stats_t st[64];
    int n = qv_broker_stats(self->broker, st, 64);
    if (n > 64)
        n = 64;
    for (int i = 0; i < n; i++) {
        char labels[96];
        snprintf(labels, sizeof labels, "service=%.63s", st[i].name);
        if (strchr(st[i].name, ',') || strchr(st[i].name, '='))
            continue;   /* any MDP client may name a service; only sane names become labels */
        qv_metric_t *w = qv_metrics_gauge(self->metrics, "quaver_broker_workers",
                                          "workers connected to this broker", labels);
        qv_metric_t *q = qv_metrics_gauge(self->metrics, "quaver_broker_queued",
                                          "requests waiting for a worker", labels);
        if (w)
            qv_metric_set(w, st[i].workers);
        if (q)
            qv_metric_set(q, st[i].queued);
    }
    Quaver__V1__MetricsSnapshot *snap = qv_metrics_snapshot(self->metrics);
    if (snap) {
        Quaver__V1__BusMessage msg = QUAVER__V1__BUS_MESSAGE__INIT;
        msg.body_case = QUAVER__V1__BUS_MESSAGE__BODY_METRICS;
        msg.metrics = snap;
        qv_bus_publish(self->bus, "metrics.gateway", &msg);
        qv_metrics_snapshot_free(snap);
    }
    return 0;
}

int gw_server_run(gw_server_t *self)
{
    zloop_t *loop = zloop_new();
    if (!loop)
        return -1;
    /* The timer also bounds how long a signal that landed on another thread goes unnoticed:
     * zloop checks zsys_interrupted each time it wakes. */
    zloop_timer(loop, 1000, 0, s_tick, self);
    zloop_start(loop);
    zloop_destroy(&loop);
    qv_info("gateway %s stopping", self->instance);
    return 0;
}
