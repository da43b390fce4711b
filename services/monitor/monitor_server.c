/* monitor_server: wires the monitor's parts to the qv_server loop (see monitor_server.h).
 *
 * Threads: the proxy thread runs the bus and the tap (snapshots in); the MDP worker threads
 * run the RPC handlers (page out); the server's main thread runs the timers (/proc, health
 * ticks, expiry) and so publishes every health event and alert. The parts each lock their
 * own state, so no lock here.
 *
 * Where the monitor publishes: through its own proxy, over inproc. The common key bus_pub
 * defaults to tcp://127.0.0.1:5556, which is our own XSUB only while bus_xsub_bind keeps its
 * default; connecting the publisher to the XSUB's inproc endpoint instead works for any
 * bind (tests use free ports) and costs no TCP. So the monitor ignores bus_pub. Its events
 * go through the proxy like everyone's, so subscribers see one stream with one set of rules
 * (HWM, sequence numbers). */
#include "monitor_server.h"
#include "mon_health.h"
#include "mon_metrics.h"
#include "mon_proc.h"
#include "mon_proxy.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "quaver/v1/monitor.pb-c.h"
#include <czmq.h>
#include <string.h>

struct monitor_server_t {
    mon_cfg_t     *cfg;           /* borrowed */
    qv_server_t   *server;
    qv_metrics_t  *registry;      /* borrowed from server */
    qv_bus_t      *bus;           /* borrowed from server */
    mon_proxy_t   *proxy;
    mon_metrics_t *store;
    mon_health_t  *health;
    mon_proc_t    *proc;
    int64_t        started_ms;
    /* Our own counters, fed from the parts' statistics on the /proc timer. */
    qv_metric_t   *m_forwarded, *m_subscriptions, *m_snapshots, *m_rejected, *m_dropped;
    qv_metric_t   *m_instances, *m_events;
    mon_proxy_stats_t   last_proxy;
    mon_metrics_stats_t last_store;
};

/* ---- bus in: the tap, in the proxy thread ---------------------------------------------- */

static void s_tap(void *arg, const char *topic, const uint8_t *body, size_t len)
{
    monitor_server_t *self = (monitor_server_t *) arg;
    char service[MON_NAME_MAX + 1], instance[MON_NAME_MAX + 1];
    int64_t now = qv_mono_ms();
    if (mon_metrics_put_bus(self->store, body, len, now, service, instance) == 0)
        mon_health_seen(self->health, service, instance, now);
    else
        qv_debug("dropped an unusable snapshot on %s (%zu bytes)", topic, len);
}

/* ---- bus out: health events and alerts, on the timer thread ----------------------------- */

static void s_emit(void *arg, const mon_health_event_t *ev)
{
    monitor_server_t *self = (monitor_server_t *) arg;
    char topic[16 + MON_NAME_MAX];
    snprintf(topic, sizeof topic, "health.%s", ev->service);

    Quaver__V1__HealthEvent he = QUAVER__V1__HEALTH_EVENT__INIT;
    he.service = (char *) ev->service;
    he.status = (char *) ev->status;
    he.workers = ev->instances;
    he.last_heartbeat_age_ms = ev->silent_ms;
    Quaver__V1__BusMessage msg = QUAVER__V1__BUS_MESSAGE__INIT;
    msg.body_case = QUAVER__V1__BUS_MESSAGE__BODY_HEALTH;
    msg.health = &he;
    if (self->bus && qv_bus_publish(self->bus, topic, &msg) < 0)
        qv_warn("could not publish %s", topic);

    bool down = strcmp(ev->status, "down") == 0;
    /* Service names passed mon_name_ok: nothing in them needs JSON escaping. */
    char json[512];
    snprintf(json, sizeof json,
             "{\"severity\":\"%s\",\"kind\":\"%s\",\"service\":\"%s\",\"status\":\"%s\","
             "\"instances\":%d,\"silent_ms\":%lld,\"message\":\"%s %s\"}",
             down ? "warning" : "info", down ? "service_down" : "service_up", ev->service,
             ev->status, ev->instances, (long long) ev->silent_ms, ev->service,
             down ? "stopped sending metrics" : "is sending metrics again");
    if (down)
        qv_warn("service %s is down: no metrics for %lld ms", ev->service,
                (long long) ev->silent_ms);
    else
        qv_info("service %s is up (%d instance%s)%s", ev->service, ev->instances,
                ev->instances == 1 ? "" : "s", ev->recovered ? ", recovered" : "");
    if (self->bus && (down || ev->recovered)
        && qv_bus_publish_json(self->bus, down ? "alert.warning" : "alert.info", json) < 0)
        qv_warn("could not publish an alert for %s", ev->service);

    if (self->registry) {
        char labels[32 + MON_NAME_MAX];
        snprintf(labels, sizeof labels, "target_service=%s", ev->service);
        qv_metric_t *up = qv_metrics_gauge(self->registry, "quaver_monitor_service_up",
                                           "1 while the service sends metrics, 0 once it stopped",
                                           labels);
        if (up)
            qv_metric_set(up, down ? 0 : 1);
        if (self->m_events)
            qv_metric_add(self->m_events, 1);
    }
}

/* ---- timers ----------------------------------------------------------------------------- */

static void s_health_tick(void *app)
{
    monitor_server_t *self = (monitor_server_t *) app;
    mon_health_tick(self->health, qv_mono_ms());
}

/* Adds to a counter what a monotonic statistic gained since the last look. */
static void s_add_delta(qv_metric_t *c, uint64_t now, uint64_t *last)
{
    if (c && now > *last)
        qv_metric_add(c, (double) (now - *last));
    *last = now;
}

static void s_proc_tick(void *app)
{
    monitor_server_t *self = (monitor_server_t *) app;
    int64_t now = qv_mono_ms();
    mon_proc_refresh(self->proc);
    mon_metrics_expire(self->store, now, self->cfg->forget_after_ms);
    mon_health_forget(self->health, now, self->cfg->forget_after_ms);

    mon_proxy_stats_t ps;
    if (self->proxy) {
        mon_proxy_stats(self->proxy, &ps);
        s_add_delta(self->m_forwarded, ps.forwarded, &self->last_proxy.forwarded);
        s_add_delta(self->m_subscriptions, ps.subscriptions, &self->last_proxy.subscriptions);
    }
    mon_metrics_stats_t ms;
    mon_metrics_stats(self->store, &ms);
    s_add_delta(self->m_snapshots, ms.accepted, &self->last_store.accepted);
    s_add_delta(self->m_rejected, ms.rejected, &self->last_store.rejected);
    s_add_delta(self->m_dropped, ms.dropped_families, &self->last_store.dropped_families);
    if (self->m_instances)
        qv_metric_set(self->m_instances, (double) ms.instances);
}

/* ---- RPC handlers (MDP worker threads) ---------------------------------------------------- */

static int s_metrics(void *app, const qv_call_t *call, const ProtobufCMessage *req,
                     qv_reply_t *reply)
{
    monitor_server_t *self = (monitor_server_t *) app;
    Quaver__V1__MetricsSnapshot *own = qv_metrics_snapshot(self->registry);
    char *text = mon_metrics_render(self->store, own);
    if (own)
        qv_metrics_snapshot_free(own);
    if (!text)
        return qv_reply_error(reply, 500, "could not render the metrics page");
    Quaver__V1__MetricsReply out = QUAVER__V1__METRICS_REPLY__INIT;
    out.text = text;
    int rc = qv_reply_set(reply, &out.base);
    free(text);
    return rc == 0 ? 200 : qv_reply_error(reply, 500, "out of memory");
}

#define S_MAX_WATCHED 256

static int s_health(void *app, const qv_call_t *call, const ProtobufCMessage *req,
                    qv_reply_t *reply)
{
    monitor_server_t *self = (monitor_server_t *) app;
    int64_t now = qv_mono_ms();
    mon_health_view_t *view = calloc(S_MAX_WATCHED, sizeof *view);
    Quaver__V1__Dependency *deps = calloc(S_MAX_WATCHED, sizeof *deps);
    Quaver__V1__Dependency **dep_ptrs = calloc(S_MAX_WATCHED, sizeof *dep_ptrs);
    char (*details)[96] = calloc(S_MAX_WATCHED, sizeof *details);
    int rc;
    if (!view || !deps || !dep_ptrs || !details) {
        rc = qv_reply_error(reply, 500, "out of memory");
        goto done;
    }
    int n = mon_health_list(self->health, now, view, S_MAX_WATCHED);
    if (n > S_MAX_WATCHED)
        n = S_MAX_WATCHED;
    for (int i = 0; i < n; i++) {
        quaver__v1__dependency__init(&deps[i]);
        deps[i].name = view[i].service;
        deps[i].state = (char *) (view[i].up ? "up" : "down");
        snprintf(details[i], sizeof details[i], "instances=%d silent_ms=%lld",
                 view[i].instances, (long long) view[i].silent_ms);
        deps[i].detail = details[i];
        dep_ptrs[i] = &deps[i];
    }
    Quaver__V1__HealthReply out = QUAVER__V1__HEALTH_REPLY__INIT;
    out.service = (char *) "monitor";
    out.instance = (char *) (self->server ? qv_server_instance(self->server) : "");
    /* The monitor itself is fine when it answers; a watched service being down is reported
     * in its dependency line, not as the monitor's own state. */
    out.status = (char *) "ok";
    out.n_dependencies = (size_t) n;
    out.dependencies = dep_ptrs;
    out.uptime_ms = now - self->started_ms;
    rc = qv_reply_set(reply, &out.base) == 0 ? 200 : qv_reply_error(reply, 500, "out of memory");
done:
    free(view);
    free(deps);
    free(dep_ptrs);
    free(details);
    return rc;
}

static int s_stats(void *app, const qv_call_t *call, const ProtobufCMessage *req,
                   qv_reply_t *reply)
{
    monitor_server_t *self = (monitor_server_t *) app;
    Quaver__V1__StatsReply *out = qv_stats_from_metrics(self->registry, "monitor");
    if (!out)
        return qv_reply_error(reply, 500, "out of memory");
    int rc = qv_reply_set(reply, &out->base);
    qv_stats_reply_free(out);
    return rc == 0 ? 200 : qv_reply_error(reply, 500, "out of memory");
}

const qv_method_t monitor_methods[] = {
    { "Metrics", &quaver__v1__empty__descriptor, s_metrics, QV_READONLY },
    { "Health",  &quaver__v1__empty__descriptor, s_health,  QV_READONLY },
    { "Stats",   &quaver__v1__empty__descriptor, s_stats,   QV_READONLY },
    { NULL, NULL, NULL, 0 }
};

/* ---- life cycle --------------------------------------------------------------------------- */

/* Registers the monitor's own counters in registry (not the /proc gauges: mon_proc does). */
static void s_register(monitor_server_t *self)
{
    qv_metrics_t *m = self->registry;
    self->m_forwarded = qv_metrics_counter(m, "quaver_monitor_bus_messages_total",
                                           "Messages forwarded from publishers to subscribers",
                                           NULL);
    self->m_subscriptions = qv_metrics_counter(m, "quaver_monitor_bus_subscriptions_total",
                                               "Subscribe and unsubscribe requests forwarded",
                                               NULL);
    self->m_snapshots = qv_metrics_counter(m, "quaver_monitor_snapshots_total",
                                           "Metrics snapshots accepted from the bus", NULL);
    self->m_rejected = qv_metrics_counter(m, "quaver_monitor_snapshots_rejected_total",
                                          "Bus messages under metrics. that were not usable",
                                          NULL);
    self->m_dropped = qv_metrics_counter(m, "quaver_monitor_dropped_families_total",
                                         "Families or samples left out of the page as invalid",
                                         NULL);
    self->m_instances = qv_metrics_gauge(m, "quaver_monitor_instances",
                                         "Instances whose latest snapshot is on the page", NULL);
    self->m_events = qv_metrics_counter(m, "quaver_monitor_health_events_total",
                                        "Health transitions published", NULL);
}

monitor_server_t *monitor_server_new(mon_cfg_t *cfg)
{
    monitor_server_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = cfg;
    self->started_ms = qv_mono_ms();
    self->store = mon_metrics_new();
    self->health = mon_health_new(cfg->stale_after_ms, s_emit, self);
    if (!self->store || !self->health)
        goto fail;
    /* The tap may run as soon as the proxy exists; it touches only store and health. */
    mon_proxy_opts_t opts = { cfg->bus_xsub_bind, cfg->bus_xpub_bind, (int) cfg->bus_hwm,
                              "metrics.", s_tap, self };
    self->proxy = mon_proxy_new(&opts);
    if (!self->proxy)
        goto fail;
    char *inproc = strdup(mon_proxy_inproc(self->proxy));
    if (!inproc)
        goto fail;
    free(cfg->bus_pub);          /* a heap string owned by cfg (qv_config.h) */
    cfg->bus_pub = inproc;
    self->server = qv_server_new("monitor", (const qv_common_cfg_t *) cfg, monitor_methods, self);
    if (!self->server)
        goto fail;
    self->registry = qv_server_metrics(self->server);
    self->bus = qv_server_bus(self->server);
    self->proc = mon_proc_new(self->registry);
    if (!self->proc)
        goto fail;
    s_register(self);
    mon_proc_refresh(self->proc);
    qv_info("bus: XSUB %s, XPUB %s (hwm %lld); down after %lld ms without metrics",
            cfg->bus_xsub_bind, cfg->bus_xpub_bind, (long long) cfg->bus_hwm,
            (long long) cfg->stale_after_ms);
    return self;
fail:
    monitor_server_destroy(&self);
    return NULL;
}

void monitor_server_destroy(monitor_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    monitor_server_t *self = *self_p;
    /* The server first (its workers use the store), then the proxy (its tap uses it). */
    qv_server_destroy(&self->server);
    mon_proxy_destroy(&self->proxy);
    mon_proc_destroy(&self->proc);
    mon_health_destroy(&self->health);
    mon_metrics_destroy(&self->store);
    free(self);
    *self_p = NULL;
}

int monitor_server_run(monitor_server_t *self)
{
    /* Health ticks a few times per stale period, so "down" is said at most a quarter of a
     * second (or a tenth of the period) after it became true. */
    int64_t tick = self->cfg->stale_after_ms / 10;
    tick = tick < 50 ? 50 : tick > 250 ? 250 : tick;
    if (qv_server_add_timer(self->server, (int) tick, s_health_tick) < 0
        || qv_server_add_timer(self->server, (int) self->cfg->proc_interval_ms, s_proc_tick) < 0)
        return -1;
    return qv_server_run(self->server);
}

int monitor_server_xsub_port(monitor_server_t *self) { return mon_proxy_xsub_port(self->proxy); }
int monitor_server_xpub_port(monitor_server_t *self) { return mon_proxy_xpub_port(self->proxy); }

/* ---- selftest: the whole monitor minus MDP, on free loopback ports ------------------------ */

#define S_CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "server: " __VA_ARGS__); \
                                              fputc('\n', stderr); goto done; } } while (0)

/* Runs one call through the real dispatcher; returns the Result (caller frees) or NULL. */
static Quaver__V1__Result *s_call(monitor_server_t *srv, const char *method, const uint8_t *raw,
                                  size_t raw_len)
{
    uint8_t buf[64];
    size_t len = raw_len;
    const uint8_t *body = raw;
    if (!raw) {
        Quaver__V1__Call call = QUAVER__V1__CALL__INIT;
        call.method = (char *) method;
        call.request_id = (char *) "selftest";
        len = quaver__v1__call__pack(&call, buf);   /* empty payload = packed Empty */
        body = buf;
    }
    uint8_t *out = NULL;
    size_t out_len = 0;
    qv_dispatch("monitor", monitor_methods, srv, NULL, body, len, &out, &out_len);
    Quaver__V1__Result *r = out ? quaver__v1__result__unpack(NULL, out_len, out) : NULL;
    free(out);
    return r;
}

static int s_publish_snapshot(qv_bus_t *bus, qv_metrics_t *reg, const char *topic)
{
    Quaver__V1__MetricsSnapshot *snap = qv_metrics_snapshot(reg);
    if (!snap)
        return -1;
    Quaver__V1__BusMessage msg = QUAVER__V1__BUS_MESSAGE__INIT;
    msg.body_case = QUAVER__V1__BUS_MESSAGE__BODY_METRICS;
    msg.metrics = snap;
    int rc = qv_bus_publish(bus, topic, &msg);
    qv_metrics_snapshot_free(snap);
    return rc;
}

/* Waits for the next bus message whose topic is want; returns it (caller frees) or NULL. */
static Quaver__V1__BusMessage *s_expect(zsock_t *sub, const char *want)
{
    for (int i = 0; i < 20; i++) {
        char *topic = NULL;
        Quaver__V1__BusMessage *m = qv_bus_recv(sub, &topic);
        bool match = m && topic && streq(topic, want);
        free(topic);
        if (match)
            return m;
        if (m)
            quaver__v1__bus_message__free_unpacked(m, NULL);
        else
            return NULL;   /* timeout */
    }
    return NULL;
}

int monitor_server_selftest(void)
{
    int rc = -1;
    mon_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    char err[256] = "";
    const char *sets[] = { "bus_xsub_bind=tcp://127.0.0.1:*", "bus_xpub_bind=tcp://127.0.0.1:*",
                           "stale_after_ms=300", "instance=selftest",
                           "broker=tcp://127.0.0.1:1", NULL };
    monitor_server_t *srv = NULL;
    zsock_t *sub = NULL;
    qv_bus_t *bus_c = NULL, *bus_d = NULL;
    qv_metrics_t *reg_c = qv_metrics_new("cache", "c1");
    qv_metrics_t *reg_d = qv_metrics_new("dbopt", "d1");
    Quaver__V1__Result *res = NULL;
    Quaver__V1__BusMessage *ev = NULL;
    Quaver__V1__MetricsReply *page = NULL;
    Quaver__V1__HealthReply *health = NULL;
    char ep[64];

    S_CHECK(qv_config_load_from(mon_cfg_keys, &cfg, "monitor", NULL, sets, NULL, err,
                                sizeof err) == 0, "config: %s", err);
    srv = monitor_server_new(&cfg);
    S_CHECK(srv, "monitor_server_new failed");
    S_CHECK(strncmp(cfg.bus_pub, "inproc://", 9) == 0, "bus_pub not redirected");
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", monitor_server_xpub_port(srv));
    sub = qv_bus_sub_new(ep, "health.,alert.");
    S_CHECK(sub, "subscriber");
    zsock_set_rcvtimeo(sub, 2000);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", monitor_server_xsub_port(srv));
    bus_c = qv_bus_new(ep, "cache/c1");
    bus_d = qv_bus_new(ep, "dbopt/d1");
    S_CHECK(reg_c && reg_d && bus_c && bus_d, "publishers");
    qv_metric_add(qv_metrics_counter(reg_c, "quaver_rpc_requests_total", "RPC requests",
                                     "method=Get,status=200"), 2);
    qv_metric_add(qv_metrics_counter(reg_d, "quaver_rpc_requests_total", "RPC requests",
                                     "method=Query,status=200"), 3);

    /* Publish until both snapshots are in (the first ones race the subscription). */
    mon_metrics_stats_t st = { 0 };
    for (int i = 0; i < 100 && st.instances < 2; i++) {
        s_publish_snapshot(bus_c, reg_c, "metrics.cache");
        s_publish_snapshot(bus_d, reg_d, "metrics.dbopt");
        zclock_sleep(20);
        mon_metrics_stats(srv->store, &st);
    }
    S_CHECK(st.instances == 2, "snapshots not collected (%zu)", st.instances);

    s_health_tick(srv);
    ev = s_expect(sub, "health.cache");
    S_CHECK(ev && ev->body_case == QUAVER__V1__BUS_MESSAGE__BODY_HEALTH
            && streq(ev->health->status, "up") && ev->health->workers == 1
            && strncmp(ev->publisher, "monitor/", 8) == 0, "no health.cache up event");
    quaver__v1__bus_message__free_unpacked(ev, NULL);
    ev = NULL;

    s_proc_tick(srv);
    res = s_call(srv, "Metrics", NULL, 0);
    S_CHECK(res && res->status == 200, "Metrics status %d", res ? res->status : -1);
    page = quaver__v1__metrics_reply__unpack(NULL, res->payload.len, res->payload.data);
    S_CHECK(page && strstr(page->text, "service=\"cache\"") && strstr(page->text, "service=\"dbopt\"")
            && strstr(page->text, "# TYPE quaver_host_memory_available_bytes gauge")
            && strstr(page->text, "quaver_monitor_snapshots_total{"), "page content:\n%s",
            page ? page->text : "(none)");
    const char *first = strstr(page->text, "# TYPE quaver_rpc_requests_total counter");
    S_CHECK(first && !strstr(first + 1, "# TYPE quaver_rpc_requests_total"), "TYPE twice");
    const char *out = getenv("MON_SERVER_PAGE_OUT");
    if (out) {
        FILE *f = fopen(out, "w");
        if (f) {
            fputs(page->text, f);
            fclose(f);
        }
    }
    quaver__v1__result__free_unpacked(res, NULL);
    res = NULL;

    /* cache stops, dbopt goes on: cache goes down, with an alert. */
    for (int i = 0; i < 10; i++) {
        s_publish_snapshot(bus_d, reg_d, "metrics.dbopt");
        zclock_sleep(50);
    }
    s_health_tick(srv);
    ev = s_expect(sub, "health.cache");
    S_CHECK(ev && streq(ev->health->status, "down") && ev->health->workers == 0,
            "no health.cache down event");
    quaver__v1__bus_message__free_unpacked(ev, NULL);
    ev = s_expect(sub, "alert.warning");
    S_CHECK(ev && ev->body_case == QUAVER__V1__BUS_MESSAGE__BODY_JSON
            && strstr(ev->json, "\"service\":\"cache\"") && strstr(ev->json, "\"status\":\"down\""),
            "no alert.warning");

    res = s_call(srv, "Health", NULL, 0);
    S_CHECK(res && res->status == 200, "Health status");
    health = quaver__v1__health_reply__unpack(NULL, res->payload.len, res->payload.data);
    S_CHECK(health && health->n_dependencies == 2 && streq(health->status, "ok"), "health reply");
    for (size_t i = 0; i < health->n_dependencies; i++)
        S_CHECK(streq(health->dependencies[i]->state,
                      streq(health->dependencies[i]->name, "cache") ? "down" : "up"),
                "dependency %s", health->dependencies[i]->name);
    quaver__v1__result__free_unpacked(res, NULL);

    res = s_call(srv, "Stats", NULL, 0);
    S_CHECK(res && res->status == 200, "Stats status");
    quaver__v1__result__free_unpacked(res, NULL);
    res = s_call(srv, "NoSuchMethod", NULL, 0);
    S_CHECK(res && res->status == 404, "unknown method gives %d", res ? res->status : -1);
    quaver__v1__result__free_unpacked(res, NULL);
    const uint8_t junk[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f };
    res = s_call(srv, NULL, junk, sizeof junk);
    S_CHECK(res && res->status == 400, "junk body gives %d", res ? res->status : -1);
    rc = 0;
done:
    if (res)
        quaver__v1__result__free_unpacked(res, NULL);
    if (ev)
        quaver__v1__bus_message__free_unpacked(ev, NULL);
    if (page)
        quaver__v1__metrics_reply__free_unpacked(page, NULL);
    if (health)
        quaver__v1__health_reply__free_unpacked(health, NULL);
    zsock_destroy(&sub);
    qv_bus_destroy(&bus_c);
    qv_bus_destroy(&bus_d);
    qv_metrics_destroy(&reg_c);
    qv_metrics_destroy(&reg_d);
    monitor_server_destroy(&srv);
    qv_config_free(mon_cfg_keys, &cfg);
    return rc;
}
