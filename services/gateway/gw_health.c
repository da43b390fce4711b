/* gw_health: ping, liveness, readiness, health and the Prometheus page.
 * Guarantees: /livez and /api/ping touch no service (they answer while the process runs);
 * /readyz reads only the broker's own counters (no call can hang it); /api/health asks each
 * dependency-owning service with a short deadline and never asks a service that has no worker
 * (that call could only wait for its deadline), so it answers within about one second per
 * live service even when they hang. */
#include "gw_routes.h"
#include "gw_server.h"
#include "qv_clock.h"
#include "quaver/v1/monitor.pb-c.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The services the gateway needs, and which dependency each one reports on. */
static const struct {
    const char *service;
    const char *dependency;   /* NULL: no dependency of its own */
    bool        required;     /* the dependency must be up for overall "ok" */
} s_services[] = {
    { "dbopt",   "postgresql", true  },
    { "cache",   "redis",      false },   /* Redis down = degraded: it holds only cache */
    { "stream",  "storage",    true  },
    { "monitor", NULL,         false },
    { NULL, NULL, false }
};

#define MAX_STATS 64

static const qv_broker_service_stats_t *s_find(const qv_broker_service_stats_t *st, int n,
                                                const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(st[i].name, name) == 0)
            return &st[i];
    return NULL;
}

static int s_stats(gw_req_t *req, qv_broker_service_stats_t *st)
{
    int n = qv_broker_stats(req->srv->broker, st, MAX_STATS);
    return n < 0 ? 0 : (n > MAX_STATS ? MAX_STATS : n);
}

int gw_h_ping(gw_req_t *req)
{
    return gw_send_json(req, 200, json_pack("{s:b,s:s,s:s,s:I}", "pong", 1, "service", "gateway",
                                            "instance", req->srv->instance, "time_ms",
                                            (json_int_t) qv_wall_ms()));
}

int gw_h_livez(gw_req_t *req)
{
    return gw_send_json(req, 200, json_pack("{s:s}", "status", "alive"));
}

int gw_h_readyz(gw_req_t *req)
{
    qv_broker_service_stats_t st[MAX_STATS];
    int n = s_stats(req, st);
    char missing[256] = "";
    for (int i = 0; s_services[i].service; i++) {
        const qv_broker_service_stats_t *s = s_find(st, n, s_services[i].service);
        if (!s || s->workers < 1) {
            size_t used = strlen(missing);
            snprintf(missing + used, sizeof missing - used, "%s%s", used ? ", " : "",
                     s_services[i].service);
        }
    }
    if (*missing)
        return gw_send_error(req, 503, "not_ready", "no worker for: %s", missing);
    return gw_send_json(req, 200, json_pack("{s:s}", "status", "ready"));
}

/* Asks service for Health; returns the reply (caller frees) or NULL. */
static Quaver__V1__HealthReply *s_health_call(gw_req_t *req, const char *service, char *why,
                                              size_t whylen)
{
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    qv_result_t res;
    /* Shorter than the liveness window: health must show a dead service within three
     * heartbeats, and a call queued for a worker that just died waits for its deadline. A
     * live worker answers Health in microseconds, so one heartbeat less is plenty. */
    int64_t liveness = req->srv->cfg->heartbeat_liveness;
    int64_t window = req->srv->cfg->heartbeat_ms * (liveness > 1 ? liveness - 1 : 1);
    int deadline = window < req->deadline_ms ? (int) window : req->deadline_ms;
    int st = gw_call(req, service, "Health", &e.base, deadline, &res);
    Quaver__V1__HealthReply *h = NULL;
    if (st >= 200 && st < 300)
        h = quaver__v1__health_reply__unpack(NULL, res.len, res.payload);
    if (!h)
        snprintf(why, whylen, "%s Health answered %d%s%s", service, st,
                 res.error && *res.error ? ": " : "", res.error ? res.error : "");
    qv_result_free(&res);
    return h;
}

/* One dependency's state as its owning service reports it; "down" with a reason when the
 * service has no worker or its Health call failed. */
static const char *s_dependency(gw_req_t *req, const qv_broker_service_stats_t *s,
                                const char *service, const char *dep, char *detail,
                                size_t detail_len)
{
    if (!s || s->workers < 1) {
        snprintf(detail, detail_len, "service %s has no worker", service);
        return "down";
    }
    Quaver__V1__HealthReply *h = s_health_call(req, service, detail, detail_len);
    if (!h)
        return "down";
    const char *state = NULL;
    for (size_t d = 0; d < h->n_dependencies; d++) {
        Quaver__V1__Dependency *x = h->dependencies[d];
        if (x && x->name && strcmp(x->name, dep) == 0) {
            state = (x->state && strcmp(x->state, "up") == 0) ? "up"
                  : (x->state && strcmp(x->state, "degraded") == 0) ? "degraded"
                  : "down";
            snprintf(detail, detail_len, "%s", x->detail ? x->detail : "");
        }
    }
    if (!state)   /* the service did not name it: go by its overall status */
        state = (h->status && strcmp(h->status, "ok") == 0) ? "up" : "down";
    quaver__v1__health_reply__free_unpacked(h, NULL);
    return state;
}

int gw_h_health(gw_req_t *req)
{
    /* Dependencies first, services second: a worker killed a moment ago still counts in the
     * broker until its heartbeats run out, and the Health call to it waits for its deadline;
     * reading the broker's counts after the calls reports it down in the same answer. */
    qv_broker_service_stats_t st[MAX_STATS];
    int n = s_stats(req, st);
    json_t *services = json_object(), *deps = json_object();
    bool required_up = true, degraded = false;
    for (int i = 0; s_services[i].service; i++) {
        const char *dep = s_services[i].dependency;
        if (!dep)
            continue;
        char detail[300] = "";
        const char *state = s_dependency(req, s_find(st, n, s_services[i].service),
                                         s_services[i].service, dep, detail, sizeof detail);
        if (strcmp(state, "up") != 0) {
            if (s_services[i].required)
                required_up = false;
            else
                degraded = true;
        }
        json_t *dj = json_pack("{s:s,s:s}", "state", state, "via", s_services[i].service);
        json_t *dt = json_string(detail);
        if (dt)
            json_object_set_new(dj, "detail", dt);
        json_object_set_new(deps, dep, dj);
    }
    n = s_stats(req, st);
    bool all_up = true;
    for (int i = 0; s_services[i].service; i++) {
        const qv_broker_service_stats_t *s = s_find(st, n, s_services[i].service);
        bool up = s && s->workers > 0;
        all_up = all_up && up;
        json_object_set_new(services, s_services[i].service,
            json_pack("{s:s,s:i,s:i,s:i,s:i,s:I}",
                "status", up ? "up" : "down", "workers", s ? s->workers : 0,
                "ready", s ? s->ready : 0, "queued", s ? s->queued : 0,
                "inflight", s ? s->inflight : 0,
                "last_heartbeat_age_ms", (json_int_t) (s ? s->last_heartbeat_age_ms : -1)));
    }
    bool ok = all_up && required_up;
    const char *overall = !ok ? "down" : degraded ? "degraded" : "ok";
    json_t *doc = json_object();
    json_object_set_new(doc, "status", json_string(overall));
    json_object_set_new(doc, "gateway", json_pack("{s:s,s:I,s:i}", "instance",
                        req->srv->instance, "uptime_ms",
                        (json_int_t) (qv_mono_ms() - req->srv->started_ms),
                        "websockets", req->srv->ws ? gw_ws_count(req->srv->ws) : 0));
    json_object_set_new(doc, "services", services);
    json_object_set_new(doc, "dependencies", deps);
    return gw_send_json(req, ok ? 200 : 503, doc);
}

int gw_h_metrics(gw_req_t *req)
{
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    Quaver__V1__MetricsReply *m = gw_call_reply(req, "monitor", "Metrics", &e.base,
                                                &quaver__v1__metrics_reply__descriptor, NULL);
    if (!m)
        return req->status;
    const char *text = m->text ? m->text : "";
    gw_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text), NULL);
    quaver__v1__metrics_reply__free_unpacked(m, NULL);
    return req->status;
}
