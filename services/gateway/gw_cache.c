/* gw_cache: cached GET routes and their invalidation (see gw_cache.h for the contract: keys,
 * invalidation map, headers). What this file guarantees beyond the header:
 * - The lookup runs only after the route's auth check (gw_routes.c calls us after it), and only
 *   routes whose answer does not depend on the caller are cached (the route table says which).
 * - A hit is served byte for byte as stored; the ETag is computed from those bytes on both
 *   paths, so HIT and MISS of the same content carry the same ETag.
 * - Only a 200 JSON answer is stored; errors (404, 503 ...) are sent at once and never cached.
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
#include "qv_hash.h"
#include "qv_log.h"
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
    /* over "ns\0key" */
    uint64_t h = qv_fnv1a(key, strlen(key), qv_fnv1a(ns, strlen(ns) + 1, QV_FNV1A_INIT));
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

/* ---- the embedded cache ----------------------------------------------------------------- */

static cache_app_t *s_app(gw_req_t *req) { return cache_embed_app(req->srv->cache); }

static void s_count(gw_req_t *req, const char *result)
{
    char labels[200];
    snprintf(labels, sizeof labels, "route=%s,result=%s", req->route->pattern, result);
    qv_metric_t *c = qv_metrics_counter(req->srv->metrics, "quaver_http_cache_lookups_total",
                                        "response-cache lookups by route pattern and result "
                                        "(hit, miss)", labels);
    if (c)
        qv_metric_add(c, 1);
}

/* Delete one key from both tiers. With Redis down the local copy still goes, and cache_redis
 * UNLINKs the key when Redis is back, so no replica reads the old answer from Redis then. */
static void s_delete(gw_req_t *req, const char *ns, const char *key)
{
    char err[256];
    if (cache_app_delete(s_app(req), ns, key, err, sizeof err) < 0)
        qv_log(QV_LOG_WARN, req->request_id, "cache invalidation of %s/%s failed: %s", ns, key,
               err);
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
    char err[256];
    uint8_t *val = NULL;
    size_t vlen = 0;
    int hit = cache_app_get(s_app(req), ns, key, &val, &vlen, NULL, err, sizeof err);
    if (hit == 1 && s_plausible(val, vlen)) {
        s_count(req, "hit");
        s_answer(req, (const char *) val, vlen, "HIT");
        free(val);
        return;
    }
    if (hit == 1)
        qv_log(QV_LOG_WARN, req->request_id, "cache value of %s/%s is not a JSON object; "
               "replacing it", ns, key);
    else if (hit < 0)
        qv_log(QV_LOG_WARN, req->request_id, "cache Get %s/%s: %s", ns, key, err);
    free(val);
    s_count(req, "miss");

    _Atomic uint64_t *gen = s_gen_slot(ns, key);
    uint64_t gen0 = atomic_load(gen);
    req->capture = true;
    rt->fn(req);
    req->capture = false;
    if (!req->captured)
        return;               /* the handler answered an error itself, or nothing */

    if (atomic_load(gen) == gen0) {
        /* ttl 0: the namespace's default TTL */
        if (cache_app_set(s_app(req), ns, key, req->cap_body, req->cap_len, 0, false,
                          req->request_id, err, sizeof err) != 0)
            qv_log(QV_LOG_WARN, req->request_id, "cache Set %s/%s: %s", ns, key, err);
        if (atomic_load(gen) != gen0)
            s_delete(req, ns, key);   /* a change came in while we stored: undo */
    }
    s_answer(req, req->cap_body, req->cap_len, "MISS");
    free(req->cap_body);
    req->cap_body = NULL;
    req->cap_len = 0;
}
