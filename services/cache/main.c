/* quaver-cache: the two-tier cache daemon. Loads the key table below, then runs cache_server. */
#include "qv_daemon.h"
#include "cache_server.h"
#include "cache_namespace.h"
#include "qv_log.h"
#include <stdio.h>

static const qv_cfg_key_t s_keys[] = {
    QV_COMMON_CFG_KEYS(cache_cfg_t),
    { "redis_url", QV_CFG_STR, offsetof(cache_cfg_t, redis_url), "redis://127.0.0.1:6379",
      0, 1024, "REDIS_URL", QV_CFG_NONEMPTY | QV_CFG_SECRET,
      "the shared tier: redis://[[user]:password@]host[:port][/db]" },
    { "local_max_entries", QV_CFG_INT, offsetof(cache_cfg_t, local_max_entries), "10000",
      1, 100000000, NULL, 0, "most entries in the local tier" },
    { "local_max_bytes", QV_CFG_INT, offsetof(cache_cfg_t, local_max_bytes), "104857600",
      1024, 68719476736.0, NULL, 0, "most key+value bytes in the local tier" },
    { "cache_ttl", QV_CFG_INT, offsetof(cache_cfg_t, cache_ttl), "300", 1, 2592000, "CACHE_TTL",
      0, "TTL (s) of namespaces whose ttl is 'default'" },
    { "cache_enabled", QV_CFG_BOOL, offsetof(cache_cfg_t, cache_enabled), "true", 0, 0,
      "CACHE_ENABLED", 0, "false: every Get misses, Set stores nothing (Delete still deletes)" },
    { "max_key_bytes", QV_CFG_INT, offsetof(cache_cfg_t, max_key_bytes), "512", 1, 65536, NULL,
      0, "longest key (and prefix) accepted" },
    { "max_value_bytes", QV_CFG_INT, offsetof(cache_cfg_t, max_value_bytes), "8388608", 0,
      536870912, NULL, 0, "largest value accepted" },
    { "redis_timeout_ms", QV_CFG_INT, offsetof(cache_cfg_t, redis_timeout_ms), "200", 1, 60000,
      NULL, 0, "Redis connect and command timeout" },
    { "namespaces", QV_CFG_STR, offsetof(cache_cfg_t, namespaces), CACHE_NAMESPACES_DEFAULT,
      0, 8192, NULL, QV_CFG_NONEMPTY,
      "the namespaces, comma-separated name:ttl:priority[:policy[:compress]] (ttl 30s/10m/1h "
      "or 'default' = cache_ttl; priority high|medium|low; policy lru|lfu|fifo|random|"
      "wtinylfu|s3fifo; compress '-' or a size like 1k); a call naming another one is a 400" },
    { "local_max_ttl_ms", QV_CFG_INT, offsetof(cache_cfg_t, local_max_ttl_ms), "60000", 100,
      86400000, NULL, 0, "no local copy lives longer than this, even if an invalidation from "
      "Redis is lost" },
    { "negative_ttl_ms", QV_CFG_INT, offsetof(cache_cfg_t, negative_ttl_ms), "5000", 0,
      3600000, NULL, 0, "GetOrLoad: how long a loader's 404 is remembered (0: not at all)" },
    { "grace_ms", QV_CFG_INT, offsetof(cache_cfg_t, grace_ms), "10000", 0, 86400000, NULL, 0,
      "GetOrLoad: an expired loaded value is served this long while one refresh runs" },
    { "xfetch_beta", QV_CFG_DOUBLE, offsetof(cache_cfg_t, xfetch_beta), "1", 0, 100, NULL, 0,
      "GetOrLoad: XFetch early-refresh beta (>1 earlier, 0 off)" },
    { "load_timeout_ms", QV_CFG_INT, offsetof(cache_cfg_t, load_timeout_ms), "10000", 1,
      600000, NULL, 0, "GetOrLoad: loader timeout when the caller set no deadline" },
    { "snapshot_path", QV_CFG_STR, offsetof(cache_cfg_t, snapshot_path),
      "./var/cache/snapshot.bin", 0, 4096, NULL, 0, "the local tier's hottest entries and "
      "frequency sketches are saved here at shutdown and every snapshot_interval_s, and loaded "
      "at start (empty: off)" },
    { "snapshot_interval_s", QV_CFG_INT, offsetof(cache_cfg_t, snapshot_interval_s), "300", 0,
      86400, NULL, 0, "how often the snapshot is written while running (0: at shutdown only)" },
    { NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL }
};

int main(int argc, char **argv)
{
    cache_cfg_t cfg = { 0 };
    int rc;
    if (qv_daemon_init(s_keys, &cfg, "cache", argc, argv, &rc) != 0)
        return rc;
    /* The namespace table is checked here, before anything starts, so a bad one stops the
     * daemon with the same kind of message as any other bad key. */
    char err[256];
    cache_namespaces_t *ns = cache_namespaces_parse(cfg.namespaces, cfg.cache_ttl * 1000, err,
                                                    sizeof err);
    if (!ns) {
        fprintf(stderr, "cache: config key 'namespaces': value '%s' is invalid: %s\n",
                cfg.namespaces, err);
        qv_config_free(s_keys, &cfg);
        return 2;
    }
    cache_namespaces_destroy(&ns);
    rc = cache_server_run(&cfg);
    qv_config_free(s_keys, &cfg);
    return rc == 0 ? 0 : 1;
}
