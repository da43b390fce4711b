/* gw_config: the gateway's configuration keys (one table, loaded by lib/qv_config) and the
 * checks across keys that a table row cannot express. Guarantees: the gateway never starts with
 * a JWT secret shorter than 32 bytes, or with too few HTTP threads to serve plain requests
 * while every allowed WebSocket holds one (civetweb keeps a thread per open WebSocket). */
#include "gw_server.h"
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
    /* Short: the cache is an optimisation, so a cache that is down or slow must cost a request
     * little before it falls back to the handler (gw_cache.c). */
    { "cache_deadline_ms", QV_CFG_INT, offsetof(gw_cfg_t, cache_deadline_ms), "200", 10,
      10000, NULL, 0,
      "deadline of each response-cache call (Get, Set, Delete); past it the request goes on "
      "without the cache" },
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
