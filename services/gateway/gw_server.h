/* gw_server: the gateway process. Owns, in start order: the MDP broker (the services' workers
 * connect to it), the bus publisher, the metrics registry, civetweb with the route table, and
 * the WebSocket hub. The main thread runs a zloop whose one-second timer publishes the metrics
 * snapshot on the bus; it returns on SIGINT/SIGTERM and gw_server_destroy stops everything in
 * reverse order (civetweb first, so no handler runs against a dead broker).
 * Ownership: gw_server_new borrows cfg (it must outlive the server). */
#ifndef GW_SERVER_H
#define GW_SERVER_H
#include <stdint.h>
#include <stdbool.h>
#include "qv_config.h"
#include "qv_mdp.h"
#include "qv_bus.h"
#include "qv_metrics.h"
#include "gw_ws.h"
#include "cache_embed.h"

typedef struct {
    QV_COMMON_CFG_FIELDS
    int64_t  http_port;
    int64_t  http_threads;
    char    *broker_bind;
    char    *bus_sub;
    char    *jwt_secret;
    int64_t  jwt_ttl_s;
    int64_t  max_body_bytes;
    int64_t  upload_max_bytes;
    int64_t  ws_max_connections;
    int64_t  ws_ping_interval;
    int64_t  ws_activity_timeout;
    int64_t  default_deadline_ms;
    int64_t  slow_request_threshold;
    bool     performance_monitoring;
    bool     rate_limiting_enabled;
    int64_t  max_requests_per_hour;
    int64_t  rate_limit_max_callers;
    int64_t  gzip_min_bytes;
    int64_t  gzip_level;
    /* The response cache's engine, embedded (gw_cache.h): the cache daemon's keys of the same
     * names (redis_url, cache_ttl, namespaces, local_*), loaded into this struct. */
    cache_cfg_t cache;
} gw_cfg_t;

/* The key table (gw_config.c). */
extern const qv_cfg_key_t gw_cfg_keys[];

/* Cross-key checks the table cannot express (secret length, thread budget). Returns 0, or -1
 * with a message naming the key in errbuf. */
int gw_cfg_check(const gw_cfg_t *cfg, char *errbuf, size_t errlen);

/* Threads civetweb keeps for plain HTTP beyond the ones WebSockets may hold. */
#define GW_HTTP_SPARE_THREADS 8

typedef struct gw_server_t {
    const gw_cfg_t *cfg;
    char            instance[160];
    char            publisher[200];     /* "gateway/<instance>" */
    char           *client_broker;      /* where our own MDP client threads connect (heap) */
    qv_broker_t    *broker;
    qv_bus_t       *bus;
    qv_metrics_t   *metrics;
    struct mg_context *ctx;
    gw_ws_t        *ws;
    cache_cfg_t     cache_cfg;          /* cfg->cache plus the fixed limits (gw_server.c) */
    cache_embed_t  *cache;              /* the response cache (gw_cache.c) */
    struct gw_ratelimit_t *ratelimit;   /* NULL when rate limiting is off (gw_ratelimit.h) */
    int64_t         started_ms;         /* monotonic */
} gw_server_t;

/* Starts everything; NULL (with a logged reason) when a bind or civetweb fails. */
gw_server_t *gw_server_new(const gw_cfg_t *cfg);
void gw_server_destroy(gw_server_t **self_p);
/* Runs the main loop until SIGINT/SIGTERM. */
int gw_server_run(gw_server_t *self);

/* Where clients should connect given broker_bind and the configured broker: the inproc
 * endpoint when the broker binds one (no TCP hop, no port to agree on), else `broker`.
 * Caller frees. */
char *gw_client_endpoint(const char *broker_bind, const char *broker);
#endif
