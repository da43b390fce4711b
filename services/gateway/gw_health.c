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
    int st = gw_call(req, service, "Health", &e.base, req->deadline_ms, &res);
    Quaver__V1__HealthReply *h = NULL;
    if (st >= 200 && st < 300)
        h = quaver__v1__health_reply__unpack(NULL, res.len, res.payload);
    if (!h)
        snprintf(why, whylen, "%s Health answered %d%s%s", service, st,
                 res.error && *res.error ? ": " : "", res.error ? res.error : "");
    qv_result_free(&res);
    return h;
}

int gw_h_health(gw_req_t *req)
{
    qv_broker_service_stats_t st[MAX_STATS];
    int n = s_stats(req, st);
    json_t *services = json_object(), *deps = json_object();
    bool all_up = true, required_up = true, degraded = false;
    for (int i = 0; s_services[i].service; i++) {
        const char *name = s_services[i].service;
        const qv_broker_service_stats_t *s = s_find(st, n, name);
        bool up = s && s->workers > 0;
        all_up = all_up && up;
        json_object_set_new(services, name, json_pack("{s:s,s:i,s:i,s:i,s:i,s:I}",
            "status", up ? "up" : "down", "workers", s ? s->workers : 0,
            "ready", s ? s->ready : 0, "queued", s ? s->queued : 0,
            "inflight", s ? s->inflight : 0,
            "last_heartbeat_age_ms", (json_int_t) (s ? s->last_heartbeat_age_ms : -1)));
        const char *dep = s_services[i].dependency;
        if (!dep)
            continue;
        const char *state = "down";
        char detail[300] = "";
        if (!up) {
            snprintf(detail, sizeof detail, "service %s has no worker", name);
        } else {
            Quaver__V1__HealthReply *h = s_health_call(req, name, detail, sizeof detail);
            if (h) {
                state = NULL;
                for (size_t d = 0; d < h->n_dependencies; d++) {
                    Quaver__V1__Dependency *x = h->dependencies[d];
                    if (x && x->name && strcmp(x->name, dep) == 0) {
                        state = (x->state && strcmp(x->state, "up") == 0) ? "up"
                              : (x->state && strcmp(x->state, "degraded") == 0) ? "degraded"
                              : "down";
                        snprintf(detail, sizeof detail, "%s", x->detail ? x->detail : "");
                    }
                }
                if (!state)   /* the service did not name it: go by its overall status */
                    state = (h->status && strcmp(h->status, "ok") == 0) ? "up" : "down";
                quaver__v1__health_reply__free_unpacked(h, NULL);
            }
        }
        bool dep_up = strcmp(state, "up") == 0;
        if (!dep_up) {
            if (s_services[i].required)
                required_up = false;
            else
                degraded = true;
        }
        json_t *dj = json_pack("{s:s,s:s}", "state", state, "via", name);
        json_t *dt = json_string(detail);
        if (dt)
            json_object_set_new(dj, "detail", dt);
        json_object_set_new(deps, dep, dj);
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
    qv_result_t res;
    int st = gw_call(req, "monitor", "Metrics", &e.base, 0, &res);
    if (st < 200 || st >= 300) {
        gw_send_call_error(req, "monitor", &res, NULL);
        qv_result_free(&res);
        return req->status;
    }
    Quaver__V1__MetricsReply *m = quaver__v1__metrics_reply__unpack(NULL, res.len, res.payload);
    qv_result_free(&res);
    if (!m)
        return gw_send_error(req, 502, NULL, "monitor sent a reply that does not decode");
    const char *text = m->text ? m->text : "";
    gw_send(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text), NULL);
    quaver__v1__metrics_reply__free_unpacked(m, NULL);
    return req->status;
}
