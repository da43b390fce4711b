/* cache_embed: the cache engine (cache_app, cache_server.h) inside another process, as that
 * process's own local tier in front of the shared Redis.
 *
 * Why: a hit in the cache daemon costs a broker hop and several thread switches (about 55 us
 * here), which is slower than asking Redis directly (about 9 us); only a hit in the caller's
 * own memory beats a network round trip (docs/BENCHMARKS.md, "cache latency"). The gateway
 * therefore serves its cached routes from an embedded app.
 *
 * Coherence is the daemon's, unchanged: the embedded app opens its own two Redis connections
 * (data + CLIENT TRACKING BCAST REDIRECT invalidations), so a value changed in Redis by anyone
 * (the cache daemon, another gateway, any Redis client) leaves this process's local tier as it
 * leaves the daemon's; keys and the stored form (cache_codec) are shared with the daemon, so
 * the daemon's Clear, InvalidatePattern, Warmup and Stats keep seeing the same Redis data.
 *
 * What the embedding adds is the timer: a thread of its own runs cache_app_tick every 250 ms
 * (Redis reconnects, the expiry sweep). Ownership: cfg is borrowed and must outlive the
 * object; metrics (may be NULL) too. Thread-safe: use cache_embed_app() from any thread. */
#ifndef CACHE_EMBED_H
#define CACHE_EMBED_H
#include "cache_server.h"

typedef struct cache_embed_t cache_embed_t;

/* NULL (with a logged reason) on a bad namespace table or Redis URL, or no memory. Redis being
 * down is not an error: the app starts degraded and reconnects. Caller owns the result. */
cache_embed_t *cache_embed_new(const cache_cfg_t *cfg, qv_metrics_t *metrics);
/* Stops the timer thread, then destroys the app. */
void cache_embed_destroy(cache_embed_t **self_p);
/* The app, borrowed for the embed's lifetime. */
cache_app_t *cache_embed_app(cache_embed_t *self);
#endif
