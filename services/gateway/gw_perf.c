/* gw_perf: the cache's performance endpoints (the cache daemon's Stats and Clear, and this
 * gateway's own tier), and the administrator check every admin endpoint uses.
 *   GET  /api/v1/performance/cache         any logged-in user: the cache daemon's Stats as
 *        {"global":{name:value..},"namespaces":{ns:{stat:value..}},
 *         "gateway":{"global":..,"namespaces":..}}, the last being this gateway's own tier
 *        (the embedded engine serving the cached routes, gw_cache.h)
 *   POST /api/v1/performance/cache/clear   administrators only: {"namespace":"<name>"|"all"}
 *        -> cache Clear (both tiers of the daemon and Redis) -> {"cleared":N,"namespace":..};
 *        this gateway's local copies go at once, other replicas' by Redis invalidation
 * Guarantees: the administrator right is read from users.is_admin in PostgreSQL at each
 * request (user_get), not from the token's `adm` claim, so a revoked administrator loses the
 * right at once rather than when the token expires; a non-administrator gets 403 before
 * anything is read or cleared. The statistics hold counts only (no keys, no values, nothing of
 * any user), the same numbers /api/metrics already shows without a token, so they are not
 * restricted to administrators. */
#include "gw_routes.h"
#include "gw_cache.h"
#include "gw_server.h"
#include "qv_log.h"
#include "quaver/v1/cache.pb-c.h"
#include <stdio.h>
#include <string.h>

#define NS_CHARS "abcdefghijklmnopqrstuvwxyz0123456789_"

int gw_is_admin(gw_req_t *req)
{
    char uid[24];
    snprintf(uid, sizeof uid, "%lld", (long long) req->who.user_id);
    const char *p[] = { uid };
    Quaver__V1__QueryReply *r = gw_db(req, "Query", "user_get", 1, p, NULL);
    if (!r)
        return -1;
    bool admin = r->n_rows > 0 && gw_cell_bool(r, 0, "is_admin");
    quaver__v1__query_reply__free_unpacked(r, NULL);
    if (admin)
        req->who.admin = true;
    return admin ? 1 : 0;
}

int gw_require_admin(gw_req_t *req)
{
    int admin = gw_is_admin(req);
    if (admin == 1)
        return 0;
    /* On every refusal the body (if any) stays unread, so the connection cannot carry another
     * request. */
    mg_disable_connection_keep_alive(req->conn);
    if (admin == 0)
        gw_send_error(req, 403, NULL, "only administrators may do this (users.is_admin)");
    return -1;
}

int gw_h_cache_stats(gw_req_t *req)
{
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    Quaver__V1__StatsReply *s = gw_call_reply(req, "cache", "Stats", &e.base,
                                              &quaver__v1__stats_reply__descriptor, NULL);
    if (!s)
        return req->status;
    json_t *doc = gw_cache_stats_json(s);
    quaver__v1__stats_reply__free_unpacked(s, NULL);
    /* This gateway's own tier (the embedded engine that serves the cached routes). */
    Quaver__V1__StatsReply *mine = cache_app_stats(cache_embed_app(req->srv->cache), "gateway");
    json_t *gw = mine ? gw_cache_stats_json(mine) : NULL;
    if (mine)
        qv_stats_reply_free(mine);
    if (doc && (!gw || json_object_set_new(doc, "gateway", gw) != 0)) {
        json_decref(doc);
        doc = NULL;
    }
    if (!doc)
        return gw_send_error(req, 500, NULL, "could not build the response");
    return gw_send_json(req, 200, doc);
}

int gw_h_cache_clear(gw_req_t *req)
{
    if (gw_require_admin(req) != 0)
        return req->status;
    json_t *body = gw_read_json(req);
    if (!body)
        return req->status;
    const char *ns;
    if (gw_json_string(req, body, "namespace", 1, 64, NS_CHARS, &ns) != 0)
        goto out;
    /* "all" is the whole cache: the Clear contract spells that as the empty namespace. */
    bool all = strcmp(ns, "all") == 0;
    Quaver__V1__CacheClearRequest c = QUAVER__V1__CACHE_CLEAR_REQUEST__INIT;
    c.namespace_ = all ? "" : (char *) ns;
    qv_result_t res;
    int st = gw_call(req, "cache", "Clear", &c.base, 0, &res);
    if (st == 404 && res.error && strstr(res.error, "unknown method")) {
        /* A cache daemon older than the Clear method (issue 3). */
        gw_send_error(req, 501, NULL, "the cache service does not implement Clear yet; "
                      "upgrade quaver-cache");
    } else if (st < 200 || st >= 300) {
        gw_send_call_error(req, "cache", &res, NULL);
    } else {
        Quaver__V1__CacheCountReply *n = quaver__v1__cache_count_reply__unpack(NULL, res.len,
                                                                               res.payload);
        if (!n) {
            gw_send_error(req, 502, NULL, "cache sent a reply that does not decode");
        } else {
            /* The daemon's UNLINKs reach our local tier as invalidations a moment later; drop
             * our copies now so the next request here is a miss without waiting for them. */
            cache_app_forget_local(cache_embed_app(req->srv->cache), all ? NULL : ns);
            qv_log(QV_LOG_INFO, req->request_id, "user %lld cleared cache namespace %s: %lld "
                   "entries", (long long) req->who.user_id, all ? "(all)" : ns,
                   (long long) n->removed);
            gw_send_json(req, 200, json_pack("{s:I,s:s}", "cleared", (json_int_t) n->removed,
                                             "namespace", ns));
            quaver__v1__cache_count_reply__free_unpacked(n, NULL);
        }
    }
    qv_result_free(&res);
out:
    json_decref(body);
    return req->status;
}
