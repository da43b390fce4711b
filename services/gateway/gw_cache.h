/* gw_cache: the gateway's response cache, served by the cache engine embedded in this process
 * (cache_embed.h: the cache daemon's local tier, codec and namespaces in front of the shared
 * Redis, coherent with it by Redis client tracking). In-process because a local hit through an
 * RPC to quaver-cache costs more than a Redis round trip, and one here costs well under a
 * microsecond (docs/BENCHMARKS.md, bench/cache).
 *
 * A GET route whose table row names a namespace (gw_routes.c) is answered through
 * gw_cache_run: after the route's auth check, Get(namespace, key); a hit is sent as stored
 * with `X-Cache: HIT`; a miss runs the handler, and its 200 JSON answer is stored with Set
 * (the namespace's default TTL) and sent with `X-Cache: MISS`. Both carry
 * `ETag: "<first 16 hex digits of the SHA-256 of the body>"` and `Cache-Control: private,
 * no-cache`, and an If-None-Match naming the ETag (or `*`) gets 304 without a body.
 *
 * Guarantees:
 * - The cache never fails a request: the cache daemon is not on this path at all, and with
 *   Redis down the local tier serves alone (each Redis command waits at most
 *   redis_timeout_ms, and none is sent again until a reconnect succeeds).
 * - Keys: "<kind>:<id>" with the id of the path, one key per cached resource:
 *     room_state   room:<room_id>          GET /api/v1/rooms/{id}
 *     room_state   participants:<room_id>  GET /api/v1/rooms/{id}/participants
 *     track_queue  queue:<room_id>         GET /api/v1/rooms/{id}/tracks
 *   Keys end with the id, so they are removed by exact key (Delete), never by prefix ("room:1"
 *   is a prefix of "room:12"). Query strings are not part of the key: these routes take none.
 * - Invalidation (gw_cache_room_changed), after the change committed and before the
 *   response is sent: join/leave -> room + participants; upload -> queue; vote/unvote ->
 *   queue of the track's room; playback -> room + queue. A Delete removes the key from both
 *   tiers; Redis's UNLINK reaches the other replicas' local tiers as an invalidation.
 * - No stale write-back within this process: a GET that read the database before a change and
 *   would store its now-old answer after that change's Delete does not store it (or deletes
 *   it again); see gw_cache.c. Across gateway replicas that window is bounded by the TTL. */
#ifndef GW_CACHE_H
#define GW_CACHE_H
#include "gw_http.h"
#include "quaver/v1/envelope.pb-c.h"

/* The namespaces and key kinds; the route table and the invalidation map both use these. */
#define GW_NS_ROOM          "room_state"
#define GW_NS_QUEUE         "track_queue"
#define GW_CK_ROOM          "room:"
#define GW_CK_PARTICIPANTS  "participants:"
#define GW_CK_QUEUE         "queue:"

/* What a mutation of one room changed (bits for gw_cache_room_changed). */
enum {
    GW_INV_ROOM         = 1 << 0,   /* room_state   room:<id> */
    GW_INV_PARTICIPANTS = 1 << 1,   /* room_state   participants:<id> */
    GW_INV_QUEUE        = 1 << 2,   /* track_queue  queue:<id> */
};

/* The invalidation map as data: for each bit, the namespace and key kind it removes. */
typedef struct {
    unsigned    bit;
    const char *ns;
    const char *kind;
} gw_cache_inval_t;
extern const gw_cache_inval_t gw_cache_inval_map[];   /* ends with bit 0 */

/* "\"" + 16 hex digits + "\"" + NUL */
#define GW_ETAG_LEN 19

/* The cache key "<kind><id>" into buf. 0, or -1 when it does not fit. */
int gw_cache_key(const char *kind, int64_t id, char *buf, size_t len);
/* The ETag of a body: the first 16 hex digits of its SHA-256, quoted. */
void gw_cache_etag(const void *body, size_t len, char out[GW_ETAG_LEN]);
/* Does an If-None-Match header value name etag (weak comparison, `*` matches)? */
bool gw_cache_etag_listed(const char *if_none_match, const char *etag);

/* Answers req (a cached GET route, caller authenticated) from the cache or the handler. */
void gw_cache_run(gw_req_t *req);

/* After a committed change to room `room`: removes the cached answers named by `what`
 * (GW_INV_* bits). Never fails the request; failures are logged. */
void gw_cache_room_changed(gw_req_t *req, int64_t room, unsigned what);

/* Which cached answers a room event of this type (participant_joined, track_added ...) says
 * changed: GW_INV_* bits, 0 for an unknown type. The same map as the mutations use. */
unsigned gw_cache_event_bits(const char *type);
/* Another gateway replica changed room `room` (its event came over the bus): bumps the change
 * counters of the keys `what` names, so a GET of ours in flight does not store what it read
 * before that change. The other replica deleted the keys itself; no cache call is made. */
void gw_cache_remote_change(int64_t room, unsigned what);

/* The change counter of one cache key in this process (bumped by every invalidation of the
 * key; shared by keys that hash alike, which only costs a skipped Set). For the selftest. */
uint64_t gw_cache_generation(const char *ns, const char *key);

/* Cache Stats as {"global":{name:value..},"namespaces":{ns:{stat:value..}}}: a stat named
 * "ns.<namespace>.<stat>" goes under its namespace, every other name under global. Integral
 * values become JSON integers; NaN and infinities null. New reference, NULL on no memory. */
json_t *gw_cache_stats_json(const Quaver__V1__StatsReply *st);
#endif
