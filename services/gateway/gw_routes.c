/* gw_routes: the route table and the generic wrapper around every HTTP request.
 * Guarantees: each request is matched against the one table below (so the API a reader sees
 * here is the whole API); an unknown path is 404, a known path with the wrong method 405 with
 * Allow; auth is checked before the handler runs; every request is counted and timed under its
 * route pattern (never the raw path, so ids do not explode the label set); a handler that
 * forgets to answer yields a 500 instead of a hung client. */
#include "gw_routes.h"
#include "gw_ratelimit.h"
#include "gw_server.h"
#include "gw_cache.h"
#include "qv_clock.h"
#include "qv_log.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Deadlines: a service call gets the route's deadline; uploads carry up to upload_max_bytes
 * through stream and so get longer; health probes must answer fast even when a service hangs;
 * a cache Clear may walk a whole Redis namespace (SCAN + UNLINK).
 * Cache: the three room reads below do not depend on the caller (any logged-in user may read
 * any room, its participants and its queue), so one cached copy serves everyone; the
 * mutations that change them invalidate the same keys (gw_cache.h, the invalidation map). */
const gw_route_t gw_routes[] = {
    { "GET",    "/api/ping",                       GW_AUTH_NONE,   gw_h_ping,              0, GW_NO_CACHE },
    { "GET",    "/livez",                          GW_AUTH_NONE,   gw_h_livez,             0, GW_NO_CACHE },
    { "GET",    "/readyz",                         GW_AUTH_NONE,   gw_h_readyz,            0, GW_NO_CACHE },
    { "GET",    "/api/health",                     GW_AUTH_NONE,   gw_h_health,         1000, GW_NO_CACHE },
    { "GET",    "/api/metrics",                    GW_AUTH_NONE,   gw_h_metrics,        2000, GW_NO_CACHE },
    { "POST",   "/api/v1/auth/register",           GW_AUTH_NONE,   gw_h_register,          0, GW_NO_CACHE },
    { "POST",   "/api/v1/auth/login",              GW_AUTH_NONE,   gw_h_login,             0, GW_NO_CACHE },
    { "POST",   "/api/v1/rooms",                   GW_AUTH_USER,   gw_h_room_create,       0, GW_NO_CACHE },
    { "GET",    "/api/v1/rooms/{id}",              GW_AUTH_USER,   gw_h_room_get,          0,
      GW_NS_ROOM,  GW_CK_ROOM },
    { "POST",   "/api/v1/rooms/{id}/join",         GW_AUTH_USER,   gw_h_room_join,         0, GW_NO_CACHE },
    { "POST",   "/api/v1/rooms/{id}/leave",        GW_AUTH_USER,   gw_h_room_leave,        0, GW_NO_CACHE },
    { "GET",    "/api/v1/rooms/{id}/participants", GW_AUTH_USER,   gw_h_room_participants, 0,
      GW_NS_ROOM,  GW_CK_PARTICIPANTS },
    { "POST",   "/api/v1/rooms/{id}/tracks",       GW_AUTH_USER,   gw_h_track_upload,  30000, GW_NO_CACHE },
    { "GET",    "/api/v1/rooms/{id}/tracks",       GW_AUTH_USER,   gw_h_track_queue,       0,
      GW_NS_QUEUE, GW_CK_QUEUE },
    { "POST",   "/api/v1/rooms/{id}/playback",     GW_AUTH_USER,   gw_h_playback,          0, GW_NO_CACHE },
    { "POST",   "/api/v1/tracks/{id}/vote",        GW_AUTH_USER,   gw_h_vote_add,          0, GW_NO_CACHE },
    { "DELETE", "/api/v1/tracks/{id}/vote",        GW_AUTH_USER,   gw_h_vote_remove,       0, GW_NO_CACHE },
    { "GET",    "/api/v1/tracks/{id}/stream",      GW_AUTH_STREAM, gw_h_stream,            0, GW_NO_CACHE },
    { "GET",    "/api/v1/performance/cache",       GW_AUTH_USER,   gw_h_cache_stats,    2000, GW_NO_CACHE },
    { "POST",   "/api/v1/performance/cache/clear", GW_AUTH_USER,   gw_h_cache_clear,   10000, GW_NO_CACHE },
    { "GET",    "/api/v1/performance/database",    GW_AUTH_USER,   gw_h_db_health,      5000, GW_NO_CACHE },
    /* the advisor: seconds read-only, minutes with apply (CREATE INDEX CONCURRENTLY and the
     * timings before and after, gw_dbperf.c); dbopt bounds each statement by the time left */
    { "POST",   "/api/v1/performance/database/optimize", GW_AUTH_USER, gw_h_db_optimize, 300000, GW_NO_CACHE },
    { "GET",    "/api/v1/performance/recommendations", GW_AUTH_USER, gw_h_db_recommendations, 60000, GW_NO_CACHE },
    { NULL, NULL, 0, NULL, 0, GW_NO_CACHE }
};

/* One path segment against one pattern segment. {id}: 1..18 digits, value > 0, so it always
 * fits an int64 and never reaches SQL as anything but a number. */
static bool s_segment_match(const char *pat, size_t plen, const char *seg, size_t slen,
                            int64_t *id_out, bool *is_id)
{
    *is_id = false;
    if (plen == 4 && memcmp(pat, "{id}", 4) == 0) {
        if (slen == 0 || slen > 18)
            return false;
        int64_t v = 0;
        for (size_t i = 0; i < slen; i++) {
            if (seg[i] < '0' || seg[i] > '9')
                return false;
            v = v * 10 + (seg[i] - '0');
        }
        if (v <= 0)
            return false;
        *id_out = v;
        *is_id = true;
        return true;
    }
    return plen == slen && memcmp(pat, seg, plen) == 0;
}

static bool s_path_match(const char *pattern, const char *path, int64_t *ids, int *nids)
{
    const char *p = pattern, *s = path;
    int n = 0;
    for (;;) {
        if (*p != '/' || *s != '/')
            return *p == '\0' && *s == '\0';
        p++;
        s++;
        const char *pe = strchr(p, '/');
        const char *se = strchr(s, '/');
        size_t plen = pe ? (size_t) (pe - p) : strlen(p);
        size_t slen = se ? (size_t) (se - s) : strlen(s);
        int64_t id = 0;
        bool is_id;
        if (!s_segment_match(p, plen, s, slen, &id, &is_id))
            return false;
        if (is_id) {
            if (n >= GW_MAX_PATH_IDS)
                return false;
            ids[n++] = id;
        }
        p += plen;
        s += slen;
        if (*p == '\0' && *s == '\0') {
            *nids = n;
            return true;
        }
    }
}

gw_match_t gw_route_match(const char *method, const char *path, const gw_route_t **route,
                          int64_t *ids, int *nids, char *allow, size_t allow_len)
{
    bool path_known = false;
    if (allow && allow_len)
        allow[0] = '\0';
    if (!method || !path)
        return GW_MATCH_NO_PATH;
    for (const gw_route_t *r = gw_routes; r->method; r++) {
        int64_t tmp[GW_MAX_PATH_IDS];
        int n = 0;
        if (!s_path_match(r->pattern, path, tmp, &n))
            continue;
        if (strcmp(r->method, method) == 0) {
            *route = r;
            memcpy(ids, tmp, sizeof tmp);
            *nids = n;
            return GW_MATCH_OK;
        }
        path_known = true;
        if (allow && allow_len && !strstr(allow, r->method)) {
            size_t used = strlen(allow);
            snprintf(allow + used, allow_len - used, "%s%s", used ? ", " : "", r->method);
        }
    }
    return path_known ? GW_MATCH_BAD_METHOD : GW_MATCH_NO_PATH;
}

/* The bearer token: from "Authorization: Bearer <jwt>", or for stream routes ?token=. */
static int s_authenticate(gw_req_t *req, gw_auth_level_t level)
{
    const char *h = gw_header(req, "Authorization");
    char qtok[2048];
    const char *tok = NULL;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        tok = h + 7;
        while (*tok == ' ')
            tok++;
    } else if (level == GW_AUTH_STREAM &&
               gw_query_param(req, "token", qtok, sizeof qtok) == 0) {
        tok = qtok;
    }
    if (!tok || !*tok)
        return gw_send_error(req, 401, NULL, "missing bearer token (Authorization: Bearer <token>)");
    if (gw_auth_verify(req->srv->cfg->jwt_secret, tok, &req->who) != 0)
        return gw_send_error(req, 401, NULL, "invalid or expired token");
    req->authed = true;
    return 0;
}

/* Counts the request against its caller's hourly budget (gw_ratelimit.h); sets the RateLimit
 * headers every response of it will carry. 0 when it may go on; otherwise 429 (or 503 when
 * the table of callers is full) has been sent. */
static int s_rate_limit(gw_req_t *req, const char *path)
{
    gw_ratelimit_t *rl = req->srv->ratelimit;
    if (!rl || gw_ratelimit_exempt(path))
        return 0;
    char caller[80];
    if (req->authed)
        snprintf(caller, sizeof caller, "u:%lld", (long long) req->who.user_id);
    else
        snprintf(caller, sizeof caller, "a:%s", req->ri->remote_addr);
    gw_rl_verdict_t v = gw_ratelimit_hit(rl, caller, qv_wall_ms());
    if (v.full)
        return gw_send_error(req, 503, NULL, "too many distinct callers right now; try again");
    snprintf(req->rl_headers, sizeof req->rl_headers,
             "RateLimit-Limit: %lld\r\nRateLimit-Remaining: %lld\r\nRateLimit-Reset: %lld\r\n",
             (long long) v.limit, (long long) v.remaining, (long long) v.reset_s);
    if (v.allowed)
        return 0;
    qv_metric_t *m = qv_metrics_counter(req->srv->metrics, "quaver_http_rate_limited_total",
                                        "requests refused with 429 (gw_ratelimit.h)", NULL);
    if (m)
        qv_metric_add(m, 1);
    char extra[48];
    snprintf(extra, sizeof extra, "Retry-After: %lld\r\n", (long long) v.reset_s);
    return gw_send_error_h(req, 429, extra, "rate limit of %lld requests per hour reached; "
                           "retry in %lld s", (long long) v.limit, (long long) v.reset_s);
}

int gw_routes_handle(struct mg_connection *conn, void *cbdata)
{
    gw_server_t *srv = cbdata;
    gw_req_t req;
    memset(&req, 0, sizeof req);
    req.conn = conn;
    req.ri = mg_get_request_info(conn);
    req.srv = srv;
    req.start_us = qv_mono_us();
    req.deadline_ms = (int) srv->cfg->default_deadline_ms;

    const char *rid = mg_get_header(conn, "X-Request-ID");
    if (gw_request_id_ok(rid))
        snprintf(req.request_id, sizeof req.request_id, "%s", rid);
    else
        qv_request_id(req.request_id);

    const char *method = req.ri->request_method ? req.ri->request_method : "";
    const char *path = req.ri->local_uri ? req.ri->local_uri : "";
    char allow[64];
    const gw_route_t *route = NULL;
    gw_match_t m = gw_route_match(method, path, &route, req.ids, &req.nids, allow, sizeof allow);
    if (m == GW_MATCH_NO_PATH) {
        gw_send_error(&req, 404, NULL, "no such endpoint: %.200s", path);
    } else if (m == GW_MATCH_BAD_METHOD) {
        char extra[96];
        snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
        gw_send_error_h(&req, 405, extra, "method %.16s not allowed here; allowed: %s", method,
                        allow);
    } else {
        req.route = route;
        if (route->deadline_ms > 0)
            req.deadline_ms = route->deadline_ms;
        /* Auth first, always: a cached answer is never served to a caller the route would
         * refuse. */
        if ((route->auth == GW_AUTH_NONE || s_authenticate(&req, route->auth) == 0) &&
            s_rate_limit(&req, path) == 0) {
            if (route->cache_ns)
                gw_cache_run(&req);
            else
                route->fn(&req);
        }
        if (req.status == 0)
            gw_send_error(&req, 500, NULL, "the handler sent no response");
    }

    double secs = (double) (qv_mono_us() - req.start_us) / 1e6;
    /* Raw paths never become labels: ids and garbage would grow the series without bound. */
    const char *label = route ? route->pattern
                              : (m == GW_MATCH_BAD_METHOD ? "method_not_allowed" : "unmatched");
    char labels[160];
    snprintf(labels, sizeof labels, "route=%s,status=%d", label, req.status);
    qv_metric_t *c = qv_metrics_counter(srv->metrics, "quaver_http_requests_total",
                                        "HTTP requests by route pattern and status", labels);
    if (c)
        qv_metric_add(c, 1);
    qv_metric_t *h = NULL;
    if (srv->cfg->performance_monitoring) {
        snprintf(labels, sizeof labels, "route=%s", label);
        h = qv_metrics_histogram(srv->metrics, "quaver_http_request_duration_seconds",
                                 "HTTP request duration by route pattern", labels, NULL, 0);
    }
    if (h)
        qv_metric_observe(h, secs);
    if (srv->cfg->performance_monitoring &&
        secs * 1000.0 > (double) srv->cfg->slow_request_threshold)
        qv_log(QV_LOG_WARN, req.request_id, "slow request: %s %.200s -> %d in %.1f ms",
               method, path, req.status, secs * 1000.0);
    else
        qv_log(QV_LOG_DEBUG, req.request_id, "%s %.200s -> %d in %.3f ms", method, path,
               req.status, secs * 1000.0);
    return req.status ? req.status : 500;
}
