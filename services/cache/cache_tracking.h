/* cache_tracking: keeps the local tier coherent with Redis (Redis client-side caching, the
 * two-connection RESP2 form, https://redis.io/docs/manual/client-side-caching/).
 *
 * Two parts:
 *  1. Versions. A table of per-key version counters (4096 stripes of a 64-bit hash of the key;
 *     a collision only costs an unneeded miss) plus a global epoch. This is Redis's
 *     "placeholder" rule in another form: a caller takes a ticket before it sends a GET (or a
 *     SET), and after the reply it may copy the value into the local tier only through
 *     cache_tracking_commit(), which refuses when an invalidation of that key (or a flush)
 *     happened in between. Check and insert run under the stripe's lock, and invalidations bump
 *     under the same lock before they delete, so a late reply can never be cached after the
 *     invalidation that should have removed it.
 *  2. The invalidation connection. A thread of its own owns a second Redis connection that has
 *     run CLIENT ID and SUBSCRIBE __redis__:invalidate; the data connection (cache_redis) then
 *     turns on `CLIENT TRACKING on REDIRECT <that id> BCAST PREFIX quaver: NOLOOP`. Every
 *     message names keys (bumped, then removed from the local tier through on_key) or is nil
 *     (Redis flushed: everything goes, through on_flush). The thread waits in poll(2) on the
 *     socket, so an invalidation is applied within a scheduling delay of its arrival.
 *     It pings the connection after 1 s of silence and declares it lost after 3 s without an
 *     answer.
 *     When the connection drops, the thread tries once at once to reconnect:
 *       - Redis answers (only our connection was lost, e.g. CLIENT KILL): invalidations may
 *         have been missed, so the data connection is dropped (its REDIRECT target is gone;
 *         cache_redis reconnects it with the new id) and the local tier is flushed.
 *       - Redis does not answer (it is down): nobody can change it meanwhile, so the local
 *         tier is kept and served (DESIGN.md: Redis down -> serve the local tier); the data
 *         connection flushes it when Redis is reachable again (cache_redis's on_reconnect).
 *     Later reconnects back off from 500 ms to 10 s.
 * Thread-safe. */
#ifndef CACHE_TRACKING_H
#define CACHE_TRACKING_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef struct cache_tracking_t cache_tracking_t;

typedef struct {
    uint64_t epoch;
    uint64_t version;
} cache_ticket_t;

typedef struct {
    /* A key Redis says changed (full key "quaver:<ns>:<key>", not NUL-terminated: len bytes).
     * Called on the tracking thread after the key's version was bumped. */
    void (*on_key)(void *ctx, const char *key, size_t len);
    /* Everything must go (Redis flushed, or we lost invalidations). After the epoch bump. */
    void (*on_flush)(void *ctx);
    void *ctx;
} cache_tracking_sink_t;

/* The version table only; no connection until cache_tracking_start. Caller owns the result
 * (cache_tracking_destroy stops the thread first). */
cache_tracking_t *cache_tracking_new(cache_tracking_sink_t sink);
void cache_tracking_destroy(cache_tracking_t **self_p);

/* Starts the invalidation thread against host:port (AUTH with user/password when password is
 * not NULL). on_lost(ctx, id) is called from the thread when the connection whose CLIENT ID
 * was id drops (before any flush), so the data connection redirecting to it can be dropped.
 * 0, or -1 when the thread cannot start. */
int cache_tracking_start(cache_tracking_t *self, const char *host, int port, const char *user,
                         const char *password, int timeout_ms,
                         void (*on_lost)(void *ctx, int64_t id), void *lost_ctx);
/* The CLIENT ID of the subscribed connection, or 0 while there is none. */
int64_t cache_tracking_id(cache_tracking_t *self);

/* ---- versions ---- */
/* A snapshot of key's version and the epoch, taken before a read is sent. */
cache_ticket_t cache_tracking_ticket(cache_tracking_t *self, const char *key);
/* Bumps key's version (a write or delete of ours is about to be sent) and returns the ticket
 * after the bump, which the writer may then commit. */
cache_ticket_t cache_tracking_bump(cache_tracking_t *self, const char *key);
/* Bumps the epoch: every outstanding ticket becomes invalid. Does not touch the local tier. */
void cache_tracking_bump_all(cache_tracking_t *self);
/* Bumps the epoch, then calls sink.on_flush. */
void cache_tracking_flush(cache_tracking_t *self);
/* Runs fn(ctx) under the key's stripe lock if no bump or flush touched key since ticket t
 * was taken; returns 1 when fn ran, 0 when the ticket was stale. fn must not call back into
 * the tracker. */
int cache_tracking_commit(cache_tracking_t *self, const char *key, cache_ticket_t t,
                          void (*fn)(void *ctx), void *ctx);

typedef struct {
    uint64_t messages;       /* invalidation messages received */
    uint64_t keys;           /* keys they named */
    uint64_t flushes;        /* local flushes (nil messages, lost connection with Redis up) */
    uint64_t reconnects;     /* successful (re)connects of the invalidation connection */
    uint64_t stale_commits;  /* commits refused because of a bump or flush */
} cache_tracking_stats_t;
void cache_tracking_stats(cache_tracking_t *self, cache_tracking_stats_t *out);
#endif
