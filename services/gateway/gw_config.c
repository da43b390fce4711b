/* gw_config: the gateway's configuration keys (one table, loaded by lib/qv_config) and the
 * checks across keys that a table row cannot express. Guarantees: the gateway never starts with
 * a JWT secret shorter than 32 bytes, or with too few HTTP threads to serve plain requests
 * while every allowed WebSocket holds one (civetweb keeps a thread per open WebSocket). */
#include "gw_server.h"
#include "cache_namespace.h"
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define MB (1024 * 1024)

const qv_cfg_key_t gw_cfg_keys[] = {
    QV_COMMON_CFG_KEYS(gw_cfg_t),
    { "http_port", QV_CFG_INT, offsetof(gw_cfg_t, http_port), "8080", 1, 65535, NULL, 0,
      "HTTP listening port (all interfaces)" },
    { "http_threads", QV_CFG_INT, offsetof(gw_cfg_t, http_threads), "64", 2, 4096, NULL, 0,
      "civetweb worker threads; must exceed ws_max_connections + 8" },
    { "broker_bind", QV_CFG_STR, offsetof(gw_cfg_t, broker_bind),
      "tcp://*:5555,inproc://qv-broker", 0, 4096, NULL, QV_CFG_NONEMPTY,
      "where the in-process MDP broker binds (comma-separated); with inproc://qv-broker the "
      "gateway's own calls use it instead of `broker`" },
    { "bus_sub", QV_CFG_STR, offsetof(gw_cfg_t, bus_sub), "tcp://127.0.0.1:5557", 0, 1024,
      NULL, 0, "the monitor's XPUB endpoint for room events of other replicas (empty: none)" },
    /* Not QV_CFG_NONEMPTY: the loader validates the built-in default too, and there is no
     * sane default secret. gw_cfg_check refuses anything shorter than 32 bytes instead, which
     * also lets --print-config run before a secret is configured. */
    { "jwt_secret", QV_CFG_STR, offsetof(gw_cfg_t, jwt_secret), "", 0, 1024, NULL,
      QV_CFG_SECRET, "HS256 signing key, at least 32 bytes (required)" },
    { "jwt_ttl_s", QV_CFG_INT, offsetof(gw_cfg_t, jwt_ttl_s), "86400", 60, 31536000, NULL, 0,
      "token lifetime in seconds" },
    { "max_body_bytes", QV_CFG_INT, offsetof(gw_cfg_t, max_body_bytes), "1048576", 1024,
      64.0 * MB, NULL, 0, "largest JSON request body" },
    { "upload_max_bytes", QV_CFG_INT, offsetof(gw_cfg_t, upload_max_bytes), "52428800", 1024,
      1024.0 * MB, NULL, 0, "largest track upload (body)" },
    { "ws_max_connections", QV_CFG_INT, offsetof(gw_cfg_t, ws_max_connections), "32", 0, 4000,
      "WS_MAX_CONNECTIONS", 0, "open WebSockets at most" },
    { "ws_ping_interval", QV_CFG_INT, offsetof(gw_cfg_t, ws_ping_interval), "30", 1, 3600,
      "WS_PING_INTERVAL", 0, "seconds between WebSocket pings" },
    { "ws_activity_timeout", QV_CFG_INT, offsetof(gw_cfg_t, ws_activity_timeout), "120", 1,
      86400, "WS_ACTIVITY_TIMEOUT", 0, "seconds of silence before a WebSocket is closed" },
    { "default_deadline_ms", QV_CFG_INT, offsetof(gw_cfg_t, default_deadline_ms), "5000", 10,
      600000, NULL, 0, "deadline of a service call for routes without their own" },
    { "slow_request_threshold", QV_CFG_INT, offsetof(gw_cfg_t, slow_request_threshold), "2000",
      1, 3600000, "SLOW_REQUEST_THRESHOLD", QV_CFG_RUNTIME,
      "requests slower than this many ms are logged as warnings" },
    { "performance_monitoring", QV_CFG_BOOL, offsetof(gw_cfg_t, performance_monitoring), "true",
      0, 0, "ENABLE_PERFORMANCE_MONITORING", 0, "false: no per-route latency histograms and no "
      "slow-request warnings (request counts, X-Response-Time and the rest stay)" },
    { "rate_limiting_enabled", QV_CFG_BOOL, offsetof(gw_cfg_t, rate_limiting_enabled), "true",
      0, 0, "RATE_LIMITING_ENABLED", 0, "limit each caller (user, else address) to "
      "max_requests_per_hour (gw_ratelimit.h)" },
    { "max_requests_per_hour", QV_CFG_INT, offsetof(gw_cfg_t, max_requests_per_hour), "1000",
      1, 1000000000, "MAX_REQUESTS_PER_HOUR", 0, "requests per caller in any sliding hour, per "
      "gateway replica; past it 429 with Retry-After" },
    { "rate_limit_max_callers", QV_CFG_INT, offsetof(gw_cfg_t, rate_limit_max_callers),
      "100000", 1, 100000000, NULL, 0, "callers tracked at most (about 100 bytes each); a new "
      "caller past it gets 503" },
    { "gzip_min_bytes", QV_CFG_INT, offsetof(gw_cfg_t, gzip_min_bytes), "1024", 0, 1073741824,
      NULL, 0, "responses of a text or JSON type at least this long are sent gzip-compressed "
      "to clients that accept it (0: never; gw_gzip.h)" },
    { "gzip_level", QV_CFG_INT, offsetof(gw_cfg_t, gzip_level), "6", 1, 9, NULL, 0,
      "zlib compression level of those responses (1 fastest .. 9 smallest)" },
    /* The embedded response cache (gw_cache.h, cache_embed.h): the same key names, env
     * names and defaults as the cache daemon's, so one setting serves both. */
    { "redis_url", QV_CFG_STR, offsetof(gw_cfg_t, cache.redis_url), "redis://127.0.0.1:6379",
      0, 1024, "REDIS_URL", QV_CFG_NONEMPTY | QV_CFG_SECRET,
      "Redis behind the response cache: redis://[[user]:password@]host[:port][/db]" },
    { "cache_enabled", QV_CFG_BOOL, offsetof(gw_cfg_t, cache.cache_enabled), "true", 0, 0,
      "CACHE_ENABLED", 0, "false: cached routes always run their handler" },
    { "cache_ttl", QV_CFG_INT, offsetof(gw_cfg_t, cache.cache_ttl), "300", 1, 2592000,
      "CACHE_TTL", 0, "TTL (s) of namespaces whose ttl is 'default'" },
    { "namespaces", QV_CFG_STR, offsetof(gw_cfg_t, cache.namespaces), CACHE_NAMESPACES_DEFAULT,
      0, 8192, NULL, QV_CFG_NONEMPTY, "the cache namespaces, as the cache daemon's key" },
    { "local_max_entries", QV_CFG_INT, offsetof(gw_cfg_t, cache.local_max_entries), "10000",
      1, 100000000, NULL, 0, "most entries in the gateway's local tier" },
    { "local_max_bytes", QV_CFG_INT, offsetof(gw_cfg_t, cache.local_max_bytes), "33554432",
      1024, 68719476736.0, NULL, 0, "most key+value bytes in the gateway's local tier" },
    { "local_max_ttl_ms", QV_CFG_INT, offsetof(gw_cfg_t, cache.local_max_ttl_ms), "60000", 100,
      86400000, NULL, 0, "no local copy lives longer than this, even if an invalidation from "
      "Redis is lost" },
    /* Short: the cache is an optimisation, so a Redis that is down or slow must cost a request
     * little before it falls back to the handler. */
    { "redis_timeout_ms", QV_CFG_INT, offsetof(gw_cfg_t, cache.redis_timeout_ms), "200", 1,
      60000, NULL, 0, "Redis connect and command timeout of the response cache" },
    { NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL }
};

int gw_cfg_check(const gw_cfg_t *cfg, char *errbuf, size_t errlen)
{
    size_t slen = cfg->jwt_secret ? strlen(cfg->jwt_secret) : 0;
    if (slen < 32) {
        snprintf(errbuf, errlen, "gateway: config key 'jwt_secret': value of %zu bytes is "
                 "invalid: too short for HS256 (allowed: at least 32 bytes; `make run` makes "
                 "one under ./var)", slen);
        return -1;
    }
    char why[256];
    cache_namespaces_t *ns = cache_namespaces_parse(cfg->cache.namespaces,
                                                    cfg->cache.cache_ttl * 1000, why, sizeof why);
    if (!ns) {
        snprintf(errbuf, errlen, "gateway: config key 'namespaces': value '%s' is invalid: %s",
                 cfg->cache.namespaces, why);
        return -1;
    }
    cache_namespaces_destroy(&ns);
    if (cfg->http_threads <= cfg->ws_max_connections + GW_HTTP_SPARE_THREADS) {
        snprintf(errbuf, errlen, "gateway: config key 'http_threads': value '%lld' is invalid: "
                 "each open WebSocket holds a civetweb thread, so it must exceed "
                 "ws_max_connections (%lld) + %d (allowed: >= %lld)",
                 (long long) cfg->http_threads, (long long) cfg->ws_max_connections,
                 GW_HTTP_SPARE_THREADS,
                 (long long) (cfg->ws_max_connections + GW_HTTP_SPARE_THREADS + 1));
        return -1;
    }
    return 0;
}
