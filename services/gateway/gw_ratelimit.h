/* gw_ratelimit: MAX_REQUESTS_PER_HOUR per caller (the seeds' RATE_LIMITING_ENABLED and
 * MAX_REQUESTS_PER_HOUR; DESIGN.md puts rate limits in the gateway).
 *
 * Who is a caller: the user of a valid bearer token, else the client's address (civetweb's
 * remote_addr: behind an ingress that is the ingress, so give the ingress its own limit there,
 * or raise ours). Checked after authentication, before the handler: a refused request does
 * no work. Health probes and metrics scrapes (/livez, /readyz, /api/health, /api/metrics)
 * are never limited: an operator's probe must not be refused.
 *
 * How: a sliding window of one hour, approximated as Cloudflare does: the count of the
 * current fixed hour plus the previous hour's count weighted by how much of it still lies in
 * the window. One small record per caller (no per-request log), O(1) per request; records
 * idle for two windows are dropped by a sweep every ten minutes, and at most max_callers are
 * kept (past that, new callers are refused with 503 rather than letting memory grow: an
 * attack with many addresses must not exhaust the gateway).
 * The count is per gateway replica: behind a load balancer that spreads a caller over R
 * replicas the caller gets up to R times the limit. (A shared count would cost a Redis round
 * trip per request; nginx's limit_req makes the same choice.)
 *
 * Every limited response carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset
 * (seconds until the count falls by one hour's worth: the draft IETF RateLimit header
 * fields); a refused one is 429 with Retry-After.
 * Thread-safe (one mutex; the critical section is a hash lookup). */
#ifndef GW_RATELIMIT_H
#define GW_RATELIMIT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_ratelimit_t gw_ratelimit_t;

/* limit: requests per window_s; max_callers: records kept at most. NULL on no memory.
 * Caller owns; gw_ratelimit_destroy frees. */
gw_ratelimit_t *gw_ratelimit_new(int64_t limit, int64_t window_s, size_t max_callers);
void gw_ratelimit_destroy(gw_ratelimit_t **self_p);

typedef struct {
    bool    allowed;
    bool    full;           /* refused because max_callers records exist (503, not 429) */
    int64_t limit, remaining;
    int64_t reset_s;        /* when one more request will be allowed (refused), or when the
                             * window's count falls by a full window (allowed) */
} gw_rl_verdict_t;

/* Counts one request of caller (any string, e.g. "u:42" or "a:127.0.0.1") at now_ms (wall
 * clock, injectable for tests) and says whether it may go on. A refused request is not
 * counted. */
gw_rl_verdict_t gw_ratelimit_hit(gw_ratelimit_t *self, const char *caller, int64_t now_ms);
/* Is this path exempt (probes, metrics)? */
bool gw_ratelimit_exempt(const char *path);
size_t gw_ratelimit_callers(gw_ratelimit_t *self);
#endif
