/* gw_cache: cached GET routes and their invalidation (see gw_cache.h for the contract: keys,
 * invalidation map, headers). What this file guarantees beyond the header:
 * - The lookup runs only after the route's auth check (gw_routes.c calls us after it), and only
 *   routes whose answer does not depend on the caller are cached (the route table says which).
 * - A hit is served byte for byte as stored; the ETag is computed from those bytes on both
 *   paths, so HIT and MISS of the same content carry the same ETag.
 * - Only a 200 JSON answer is stored; errors (404, 503 ...) are sent at once and never cached.
 * - If the cache did not answer the Get (down, 503, deadline), the Set is not attempted either:
 *   one short deadline per request is the most a dead cache costs a read.
 *
 * Stale write-back (the classic look-aside race): GET reads the database (old), a vote
 * commits and deletes the key, then the GET stores what it read, and the old value is served
 * until the TTL. Within this process it cannot happen: every invalidation bumps a per-key
 * generation counter (a small array of atomics indexed by a hash of namespace and key) before
 * its Delete; a GET notes the generation before its handler reads the database, stores only
 * if it is unchanged, and checks once more after the Set: if a change came in between, it
 * deletes what it stored. The Delete of a change that bumps after that second check is sent
 * after the Set was acknowledged, so it removes the value. Another gateway replica's change
 * reaches this process as its bus event (gw_ws.c calls gw_cache_remote_change), which bumps
 * the same counters; what remains is the bus's delay, and with the bus down, the TTL. */
#include "gw_cache.h"
#include "gw_routes.h"
#include "gw_server.h"
#include "qv_log.h"
#include "quaver/v1/cache.pb-c.h"
#include <sodium.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const gw_cache_inval_t gw_cache_inval_map[] = {
    { GW_INV_ROOM,         GW_NS_ROOM,  GW_CK_ROOM },
    { GW_INV_PARTICIPANTS, GW_NS_ROOM,  GW_CK_PARTICIPANTS },
    { GW_INV_QUEUE,        GW_NS_QUEUE, GW_CK_QUEUE },
    { 0, NULL, NULL }
};

/* ---- pure parts (selftested) ---------------------------------------------------------- */

int gw_cache_key(const char *kind, int64_t id, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s%lld", kind, (long long) id);
    return (n < 0 || (size_t) n >= len) ? -1 : 0;
}

void gw_cache_etag(const void *body, size_t len, char out[GW_ETAG_LEN])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(h, body, len);
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    snprintf(out, GW_ETAG_LEN, "\"%.16s\"", hex);
}

/* Weak comparison, as RFC 7232 §3.2 asks of If-None-Match: W/"x" matches "x". */
bool gw_cache_etag_listed(const char *list, const char *etag)
{
    if (!list || !etag)
        return false;
    size_t el = strlen(etag);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        if (*p == '*')
            return true;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t) (t - p) == el && memcmp(p, etag, el) == 0)
            return true;
        p = e;
    }
    return false;
}

#define S_GENERATIONS 1024   /* a power of two */
static _Atomic uint64_t s_generations[S_GENERATIONS];

static _Atomic uint64_t *s_gen_slot(const char *ns, const char *key)
{
    uint64_t h = 1469598103934665603ULL;               /* FNV-1a over "ns\0key" */
    for (const char *p = ns; *p; p++)
        h = (h ^ (unsigned char) *p) * 1099511628211ULL;
    h = (h ^ 0) * 1099511628211ULL;
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char) *p) * 1099511628211ULL;
    return &s_generations[h & (S_GENERATIONS - 1)];
}

uint64_t gw_cache_generation(const char *ns, const char *key)
{
    return atomic_load(s_gen_slot(ns, key));
}

static json_t *s_number(double v)
{
    if (isnan(v) || isinf(v))
        return json_null();
    if (v == floor(v) && fabs(v) < 9007199254740992.0)   /* 2^53: exact as an integer */
        return json_integer((json_int_t) v);
    return json_real(v);
}

json_t *gw_cache_stats_json(const Quaver__V1__StatsReply *st)
{
    json_t *global = json_object(), *spaces = json_object(), *doc = json_object();
    if (!global || !spaces || !doc) {
        json_decref(global);
        json_decref(spaces);
        json_decref(doc);
        return NULL;
    }
    for (size_t i = 0; st && i < st->n_stats; i++) {
        const Quaver__V1__Stat *s = st->stats[i];
        if (!s || !s->name || !*s->name)
            continue;
        json_t *v = s_number(s->value);
        const char *dot = strncmp(s->name, "ns.", 3) == 0 ? strchr(s->name + 3, '.') : NULL;
        if (dot && dot > s->name + 3 && dot[1]) {
            /* "ns.<namespace>.<stat>"; namespaces are [a-z0-9_], so the first dot ends it. */
            char ns[128];
            size_t nl = (size_t) (dot - (s->name + 3));
            if (nl < sizeof ns) {
                memcpy(ns, s->name + 3, nl);
                ns[nl] = '\0';
                json_t *o = json_object_get(spaces, ns);
                if (!o) {
                    o = json_object();
                    if (json_object_set_new(spaces, ns, o) != 0)
                        o = NULL;
                }
                if (o && json_object_set_new(o, dot + 1, v) == 0)
                    continue;
                json_decref(v);
                continue;
            }
        }
        /* A name that is not valid UTF-8 is refused by jansson: it is dropped, not fatal. */
        json_object_set_new(global, s->name, v);
    }
    json_object_set_new(doc, "global", global);
    json_object_set_new(doc, "namespaces", spaces);
    return doc;
}

/* ---- calls to the cache service ------------------------------------------------------- */

static int s_deadline(gw_req_t *req)
{
    int d = (int) req->srv->cfg->cache_deadline_ms;
    return d > 0 ? d : 200;
}

/* Worth calling the cache? Not when this request already saw it fail, nor when our broker
 * has no worker for it (the call would only wait for its deadline: the broker holds a request
 * for a service without workers until then). */
static bool s_reachable(gw_req_t *req)
{
    if (req->cache_failed)
        return false;
    qv_broker_service_stats_t st[32];
    int n = qv_broker_stats(req->srv->broker, st, 32);
    for (int i = 0; i < n && i < 32; i++)
        if (strcmp(st[i].name, "cache") == 0)
            return st[i].workers > 0;
    return n < 32 ? false : true;   /* a full table might have missed it: try */
}

/* Notes a failure that says "the cache is not there" (as opposed to a 4xx about the input). */
static void s_note(gw_req_t *req, int status)
{
    if (status == 503 || status == 504 || status < 200)
        req->cache_failed = true;
}

static void s_count(gw_req_t *req, const char *result)
{
    char labels[200];
    snprintf(labels, sizeof labels, "route=%s,result=%s", req->route->pattern, result);
    qv_metric_t *c = qv_metrics_counter(req->srv->metrics, "quaver_http_cache_lookups_total",
                                        "response-cache lookups by route pattern and result "
                                        "(hit, miss, unavailable)", labels);
    if (c)
        qv_metric_add(c, 1);
}

/* Delete one key; logs a failure (the TTL bounds the staleness it leaves). */
static void s_delete(gw_req_t *req, const char *ns, const char *key)
{
    /* A failure is not an error for the client: the change itself committed. The old answer
     * may be served until the namespace's TTL ends, which is the bound we accept here. */
    if (!s_reachable(req)) {
        qv_log(QV_LOG_WARN, req->request_id, "cache invalidation of %s/%s skipped (cache "
               "unavailable); it may be served stale until its TTL", ns, key);
        return;
    }
    Quaver__V1__CacheKey ck = QUAVER__V1__CACHE_KEY__INIT;
    ck.namespace_ = (char *) ns;
    ck.key = (char *) key;
    qv_result_t res;
    int st = gw_call(req, "cache", "Delete", &ck.base, s_deadline(req), &res);
    if (st < 200 || st >= 300) {
        s_note(req, st);
        qv_log(QV_LOG_WARN, req->request_id,
               "cache invalidation of %s/%s failed (%d%s%s); it may be served stale until its TTL",
               ns, key, st, res.error && *res.error ? ": " : "", res.error ? res.error : "");
    }
    qv_result_free(&res);
}

void gw_cache_room_changed(gw_req_t *req, int64_t room, unsigned what)
{
    for (const gw_cache_inval_t *m = gw_cache_inval_map; m->bit; m++) {
        if (!(what & m->bit))
            continue;
        char key[64];
        if (gw_cache_key(m->kind, room, key, sizeof key) != 0)
            continue;
        /* Bump first: a GET in flight that read the database before this change must not
         * store its answer after our Delete (see the top of this file). */
        atomic_fetch_add(s_gen_slot(m->ns, key), 1);
        s_delete(req, m->ns, key);
    }
}

static const struct { const char *type; unsigned bits; } s_events[] = {
    { "participant_joined", GW_INV_ROOM | GW_INV_PARTICIPANTS },
    { "participant_left",   GW_INV_ROOM | GW_INV_PARTICIPANTS },
    { "track_added",        GW_INV_QUEUE },
    { "vote_changed",       GW_INV_QUEUE },
    { "playback_changed",   GW_INV_ROOM | GW_INV_QUEUE },
    { NULL, 0 }
};

unsigned gw_cache_event_bits(const char *type)
{
    for (int i = 0; type && s_events[i].type; i++)
        if (strcmp(s_events[i].type, type) == 0)
            return s_events[i].bits;
    return 0;
}

void gw_cache_remote_change(int64_t room, unsigned what)
{
    for (const gw_cache_inval_t *m = gw_cache_inval_map; m->bit; m++) {
        char key[64];
        if ((what & m->bit) && gw_cache_key(m->kind, room, key, sizeof key) == 0)
            atomic_fetch_add(s_gen_slot(m->ns, key), 1);
    }
}

/* Sends a cached-route answer with its cache headers, or 304 when If-None-Match names it. */
static void s_answer(gw_req_t *req, const char *body, size_t len, const char *xcache)
{
    char etag[GW_ETAG_LEN];
    gw_cache_etag(body, len, etag);
    char extra[160];
    snprintf(extra, sizeof extra, "X-Cache: %s\r\nETag: %s\r\nCache-Control: private, no-cache\r\n",
             xcache, etag);
    const char *inm = gw_header(req, "If-None-Match");
    if (inm && gw_cache_etag_listed(inm, etag))
        gw_send_headers(req, 304, "application/json", -1, extra);
    else
        gw_send(req, 200, "application/json", body, len, extra);
}

/* The stored value, when it looks like what we store (a JSON object). Anything else in our
 * key is treated as a miss and overwritten, never served. */
static bool s_plausible(const uint8_t *v, size_t n)
{
    return v && n >= 2 && v[0] == '{' && v[n - 1] == '}';
}

void gw_cache_run(gw_req_t *req)
{
    const gw_route_t *rt = req->route;
    char key[64];
    if (req->nids < 1 || gw_cache_key(rt->cache_key, req->ids[0], key, sizeof key) != 0) {
        rt->fn(req);          /* a route without an id: not cacheable by this scheme */
        return;
    }
    const char *ns = rt->cache_ns;
    int dl = s_deadline(req);

    Quaver__V1__CacheKey ck = QUAVER__V1__CACHE_KEY__INIT;
    ck.namespace_ = (char *) ns;
    ck.key = key;
    qv_result_t res;
    int st = 503;
    if (s_reachable(req))
        st = gw_call(req, "cache", "Get", &ck.base, dl, &res);
    else
        memset(&res, 0, sizeof res);
    bool cache_up = st >= 200 && st < 300;
    s_note(req, st);
    if (cache_up) {
        Quaver__V1__CacheGetReply *g = quaver__v1__cache_get_reply__unpack(NULL, res.len,
                                                                           res.payload);
        if (g && g->found && s_plausible(g->value.data, g->value.len)) {
            s_count(req, "hit");
            s_answer(req, (const char *) g->value.data, g->value.len, "HIT");
            quaver__v1__cache_get_reply__free_unpacked(g, NULL);
            qv_result_free(&res);
            return;
        }
        if (!g)
            cache_up = false;
        else if (g->found)
            qv_log(QV_LOG_WARN, req->request_id, "cache value of %s/%s is not a JSON object; "
                   "replacing it", ns, key);
        if (g)
            quaver__v1__cache_get_reply__free_unpacked(g, NULL);
    } else {
        qv_log(QV_LOG_DEBUG, req->request_id, "cache Get %s/%s answered %d; going on without "
               "the cache", ns, key, st);
    }
    qv_result_free(&res);
    s_count(req, cache_up ? "miss" : "unavailable");

    _Atomic uint64_t *gen = s_gen_slot(ns, key);
    uint64_t gen0 = atomic_load(gen);
    req->capture = true;
    rt->fn(req);
    req->capture = false;
    if (!req->captured)
        return;               /* the handler answered an error itself, or nothing */

    if (cache_up && atomic_load(gen) == gen0) {
        Quaver__V1__CacheSetRequest set = QUAVER__V1__CACHE_SET_REQUEST__INIT;
        set.namespace_ = (char *) ns;
        set.key = key;
        set.value.data = (uint8_t *) req->cap_body;
        set.value.len = req->cap_len;
        set.ttl_ms = 0;       /* the namespace's default TTL */
        st = gw_call(req, "cache", "Set", &set.base, dl, &res);
        s_note(req, st);
        if (st < 200 || st >= 300)
            qv_log(QV_LOG_DEBUG, req->request_id, "cache Set %s/%s answered %d%s%s", ns, key,
                   st, res.error && *res.error ? ": " : "", res.error ? res.error : "");
        qv_result_free(&res);
        if (atomic_load(gen) != gen0)
            s_delete(req, ns, key);   /* a change came in while we stored: undo */
    }
    s_answer(req, req->cap_body, req->cap_len, "MISS");
    free(req->cap_body);
    req->cap_body = NULL;
    req->cap_len = 0;
}
