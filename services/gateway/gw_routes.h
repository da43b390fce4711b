/* gw_routes: the one route table (method, path pattern, auth level, handler, deadline) and
 * the generic request wrapper civetweb calls for every HTTP request. The wrapper guarantees:
 * a request id (echoed when sane, made otherwise), 404 for an unknown path, 405 with Allow for
 * a known path and a wrong method, 401 for a route that needs a user and has no valid token,
 * the metrics quaver_http_requests_total{route,status} and
 * quaver_http_request_duration_seconds{route}, a warning line for slow requests, and a 500
 * when a handler returns without answering. Handlers check room-level rights themselves.
 * Routes with a cache policy go through gw_cache_run (lookup after auth, handler on a miss). */
#ifndef GW_ROUTES_H
#define GW_ROUTES_H
#include "gw_http.h"

typedef enum {
    GW_AUTH_NONE = 0,   /* anyone */
    GW_AUTH_USER,       /* a valid bearer token (Authorization header) */
    GW_AUTH_STREAM,     /* a valid token in the Authorization header or ?token= (media tags
                         * cannot send headers) */
} gw_auth_level_t;

typedef int (*gw_handler_fn)(gw_req_t *req);

typedef struct gw_route_t {
    const char     *method;
    const char     *pattern;     /* "/api/v1/rooms/{id}/join": {id} is a positive integer */
    gw_auth_level_t auth;
    gw_handler_fn   fn;
    int             deadline_ms; /* per service call; 0 = default_deadline_ms */
    /* Cache policy (gw_cache.h). A GET route may name a cache namespace: its 200 JSON answers
     * are kept there under the key "<cache_key><first {id}>" and served with X-Cache and ETag.
     * Only for answers that do not depend on who asks (beyond the route's auth level, which is
     * checked before the lookup): a hit skips the handler, so any right the handler checks
     * itself would be skipped too. Both NULL (GW_NO_CACHE): not cached. */
    const char     *cache_ns;
    const char     *cache_key;
} gw_route_t;

#define GW_NO_CACHE NULL, NULL

extern const gw_route_t gw_routes[];

typedef enum { GW_MATCH_OK = 0, GW_MATCH_NO_PATH, GW_MATCH_BAD_METHOD } gw_match_t;

/* Finds the route for method and path. On GW_MATCH_OK sets *route and the ids; on
 * GW_MATCH_BAD_METHOD fills allow with "GET, POST" (the methods the path takes). */
gw_match_t gw_route_match(const char *method, const char *path, const gw_route_t **route,
                          int64_t *ids, int *nids, char *allow, size_t allow_len);

/* The civetweb request handler; cbdata is the gw_server_t. */
int gw_routes_handle(struct mg_connection *conn, void *cbdata);

/* ---- handlers (one file per concern) ---- */
/* gw_health.c */
int gw_h_ping(gw_req_t *req);
int gw_h_livez(gw_req_t *req);
int gw_h_readyz(gw_req_t *req);
int gw_h_health(gw_req_t *req);
int gw_h_metrics(gw_req_t *req);
/* gw_users.c */
int gw_h_register(gw_req_t *req);
int gw_h_login(gw_req_t *req);
/* Makes the dummy hash unknown-user logins verify against, so the first such login is not
 * slower than the rest (which would tell that the name is unknown). Call once at start. */
void gw_users_warmup(void);
/* gw_rooms.c */
int gw_h_room_create(gw_req_t *req);
int gw_h_room_get(gw_req_t *req);
int gw_h_room_join(gw_req_t *req);
int gw_h_room_leave(gw_req_t *req);
int gw_h_room_participants(gw_req_t *req);
int gw_h_playback(gw_req_t *req);
/* gw_tracks.c */
int gw_h_track_upload(gw_req_t *req);
int gw_h_track_queue(gw_req_t *req);
int gw_h_vote_add(gw_req_t *req);
int gw_h_vote_remove(gw_req_t *req);
/* gw_stream.c */
int gw_h_stream(gw_req_t *req);
/* gw_perf.c */
int gw_h_cache_stats(gw_req_t *req);
int gw_h_cache_clear(gw_req_t *req);
/* gw_dbhealth.c */
int gw_h_db_health(gw_req_t *req);
/* gw_dbperf.c */
int gw_h_db_optimize(gw_req_t *req);
int gw_h_db_recommendations(gw_req_t *req);

/* Shared room checks (gw_rooms.c). 0 when the caller is a participant of room_id; otherwise
 * sends 404 (no such room) or 403 and returns -1. */
int gw_require_participant(gw_req_t *req, int64_t room_id);
#endif
