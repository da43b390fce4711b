/* gw_dbperf: the index advisor over HTTP (dbopt's Advise, services/dbopt/README.md "Advisor").
 *   POST /api/v1/performance/database/optimize   administrators only; body {"apply": bool}
 *        (optional, default false; an empty body is {}) -> a new advisor run on the rooms
 *        database -> the object `quaver-dbopt advise --json` prints: {"recommendations":[...],
 *        "unused_indexes":[...],"duplicate_indexes":[...],"invalid_indexes":[...],
 *        "elapsed_ms":n,...}; with apply, each recommendation also has ms_before, ms_after,
 *        kept and reason.
 *   GET  /api/v1/performance/recommendations     any logged-in user: the last run's result
 *        (or a new read-only run when there was none), plus "cached" and "age_ms".
 * Guarantees: the administrator right is read from users.is_admin at each request (as
 * gw_perf.c does), before the body is read or anything runs. Statement texts (each
 * recommendation's "queries") are shown to administrators only, as gw_dbhealth.c does for
 * pg_stat_statements: everyone else gets "query_count" and "query_texts":"administrators only",
 * and the "top_statements" without their "query".
 * The deadlines are the route table's (gw_routes.c): an apply run builds indexes
 * CONCURRENTLY and times queries before and after, minutes on a big table; dbopt bounds every
 * statement by the time left, so a run never outlives its request. */
#include "gw_routes.h"
#include "gw_server.h"
#include "qv_log.h"
#include "quaver/v1/dbopt_advise.pb-c.h"
#include <stdio.h>
#include <string.h>

/* dbopt Advise -> the JSON document (sent); returns the status sent */
static int s_advise(gw_req_t *req, bool apply, bool latest, bool texts)
{
    Quaver__V1__AdviseRequest a = QUAVER__V1__ADVISE_REQUEST__INIT;
    a.apply = apply;
    a.latest = latest;
    Quaver__V1__AdviseReply *r = gw_call_reply(req, "dbopt", "Advise", &a.base,
                                               &quaver__v1__advise_reply__descriptor, NULL);
    if (!r)
        return req->status;
    json_t *doc = json_loads(r->json ? r->json : "", 0, NULL);
    if (json_is_object(doc)) {
        json_object_set_new(doc, "cached", json_boolean(r->cached));
        json_object_set_new(doc, "age_ms", json_integer(r->age_ms));
        json_object_set_new(doc, "query_texts", json_string(texts ? "shown"
                                                                  : "administrators only"));
        if (!texts) {
            size_t i;
            json_t *rec;
            json_array_foreach(json_object_get(doc, "recommendations"), i, rec) {
                size_t n = json_array_size(json_object_get(rec, "queries"));
                json_object_del(rec, "queries");
                json_object_set_new(rec, "query_count", json_integer((json_int_t) n));
            }
            json_array_foreach(json_object_get(doc, "top_statements"), i, rec)
                json_object_del(rec, "query");
        }
    }
    quaver__v1__advise_reply__free_unpacked(r, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return gw_send_error(req, 502, NULL, "dbopt sent advice that is not a JSON object");
    }
    return gw_send_json(req, 200, doc);
}

int gw_h_db_optimize(gw_req_t *req)
{
    if (gw_require_admin(req) != 0)
        return req->status;
    char *body;
    size_t len;
    if (gw_read_body(req, 4096, &body, &len) != 0)
        return req->status;
    bool apply = false;
    if (len > 0) {
        json_error_t err;
        err.text[0] = '\0';
        /* The depth check gw_read_json makes: 4 KB of "[" is deeper than a worker's stack. */
        bool flat = gw_json_nesting_ok(body, len, GW_JSON_MAX_DEPTH);
        json_t *doc = flat ? json_loadb(body, len, JSON_REJECT_DUPLICATES, &err) : NULL;
        json_t *v = json_object_get(doc, "apply");
        if (!flat) {
            gw_send_error(req, 400, NULL, "invalid JSON: nested deeper than %d levels",
                          GW_JSON_MAX_DEPTH);
        } else if (!json_is_object(doc)) {
            gw_send_error(req, 400, NULL, "body must be a JSON object like {\"apply\": false}%s%s",
                          doc ? "" : ": ", doc ? "" : err.text);
        } else if (v && !json_is_boolean(v)) {
            gw_send_error(req, 400, NULL, "field 'apply' must be true or false");
        } else {
            apply = json_is_true(v);
        }
        json_decref(doc);
        if (req->status >= 400) {
            free(body);
            return req->status;
        }
    }
    free(body);
    qv_log(QV_LOG_INFO, req->request_id, "user %lld runs the index advisor%s",
           (long long) req->who.user_id, apply ? " with apply" : "");
    return s_advise(req, apply, false, true);
}

int gw_h_db_recommendations(gw_req_t *req)
{
    int admin = gw_is_admin(req);
    if (admin < 0)
        return req->status;
    return s_advise(req, false, true, admin == 1);
}
