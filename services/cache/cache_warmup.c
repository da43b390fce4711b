/* cache_warmup: see cache_warmup.h. */
#include "cache_warmup.h"
#include "cache_codec.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    cache_store_t *store;
    const char    *ns, *key;
    const uint8_t *value;
    size_t         vlen;
    int64_t        ttl_ms;
    int            stored;
} s_put_t;

static void s_put(void *ctx)
{
    s_put_t *p = ctx;
    p->stored = cache_store_ns_set(p->store, p->ns, p->key, p->value, p->vlen, p->ttl_ms) == 0;
}

int64_t cache_warmup_keys(const cache_warmup_env_t *env, const char *ns, int64_t ns_ttl_ms,
                          const char *const *keys, size_t n, const cache_warmup_expect_t *expect,
                          uint64_t *rounds)
{
    if (!env->redis) return -1;
    if (n == 0) return 0;
    size_t plen = 7 + strlen(ns) + 1;
    char **full = calloc(n, sizeof *full);
    cache_redis_value_t *rv = calloc(n, sizeof *rv);
    int64_t loaded = -2;
    if (!full || !rv) goto done;
    for (size_t i = 0; i < n; i++) {
        size_t len = plen + strlen(keys[i]) + 1;
        if (!(full[i] = malloc(len))) goto done;
        snprintf(full[i], len, "quaver:%s:%s", ns, keys[i]);
    }
    int rc = cache_redis_mget(env->redis, (const char *const *) full, n, rv);
    if (rc != -1 && rounds) (*rounds)++;
    if (rc != 0) { loaded = rc; goto done; }
    loaded = 0;
    for (size_t i = 0; i < n; i++) {
        if (!rv[i].found || rv[i].vlen > env->max_value_bytes + 1) continue;
        /* The local tier's form (raw, cache_codec_local_form), which is also what a snapshot
         * holds: compared in that form, and kept in it. */
        uint8_t *raw = NULL;
        size_t rlen = 0;
        if (cache_codec_local_form(rv[i].value, rv[i].vlen, env->max_value_bytes, &raw,
                                   &rlen) != 0)
            continue;
        if (raw) {
            free(rv[i].value);
            rv[i].value = raw;
            rv[i].vlen = rlen;
        }
        if (expect && (rv[i].vlen != expect[i].vlen
                       || memcmp(rv[i].value, expect[i].value, rv[i].vlen) != 0))
            continue;
        int64_t t = ns_ttl_ms;
        if (rv[i].pttl > 0 && rv[i].pttl < t) t = rv[i].pttl;
        if (expect && expect[i].ttl_ms > 0 && expect[i].ttl_ms < t) t = expect[i].ttl_ms;
        if (env->local_max_ttl_ms > 0 && env->local_max_ttl_ms < t) t = env->local_max_ttl_ms;
        if (t <= 0) t = 1;
        s_put_t p = { env->store, ns, keys[i], rv[i].value, rv[i].vlen, t, 0 };
        if (cache_tracking_commit(env->tracking, full[i], rv[i].ticket, s_put, &p) && p.stored)
            loaded++;
    }
done:
    for (size_t i = 0; full && i < n; i++) free(full[i]);
    for (size_t i = 0; rv && i < n; i++) free(rv[i].value);
    free(full);
    free(rv);
    return loaded;
}

int64_t cache_warmup_namespace(const cache_warmup_env_t *env, const char *ns, int64_t ns_ttl_ms,
                               size_t max_keys, uint64_t *rounds)
{
    if (!env->redis) return -1;
    size_t plen = 7 + strlen(ns) + 1;
    char *match = malloc(plen + 2);
    if (!match) return -2;
    /* Namespace names are [a-z0-9_]: nothing to escape. */
    snprintf(match, plen + 2, "quaver:%s:*", ns);
    char cursor[32] = "0";
    int64_t loaded = 0;
    bool first = true;
    while (max_keys == 0 || (size_t) loaded < max_keys) {
        char **full = NULL;
        size_t n = 0;
        int rc = cache_redis_scan(env->redis, cursor, sizeof cursor, match, &full, &n);
        if (rc != -1 && rounds) (*rounds)++;
        if (rc != 0) {
            if (first) loaded = rc;   /* -1 down, -2 failed; later: keep what was stored */
            break;
        }
        first = false;
        /* The keys within the namespace, at most what is still wanted. */
        const char **keys = calloc(n ? n : 1, sizeof *keys);
        size_t k = 0;
        for (size_t i = 0; keys && i < n; i++)
            if (max_keys == 0 || (size_t) loaded + k < max_keys) keys[k++] = full[i] + plen;
        int64_t got = keys ? cache_warmup_keys(env, ns, ns_ttl_ms, keys, k, NULL, rounds) : -2;
        free(keys);
        cache_redis_keys_free(full, n);
        if (got < 0) break;   /* what was stored stays; Redis went away mid-way */
        loaded += got;
        if (strcmp(cursor, "0") == 0) break;
    }
    free(match);
    return loaded;
}
