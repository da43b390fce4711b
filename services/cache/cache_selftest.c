/* cache_selftest: the cache daemon's selftests, one ctest entry per row of s_tests.
 * Usage: cache_selftest <name>   (no name: run all). */
#include "cache_store.h"
#include "cache_redis.h"
#include "cache_server.h"
#include "quaver/v1/cache.pb-c.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
                                          __LINE__, #c); return 1; } } while (0)

static int64_t s_fake_now;
static int64_t s_fake_clock(void *ctx) { (void) ctx; return s_fake_now; }

static int s_has(cache_store_t *s, const char *k)
{
    uint8_t *v = NULL; size_t n = 0;
    int rc = cache_store_get(s, k, &v, &n, NULL);
    free(v);
    return rc == 1;
}

/* Random sets, gets and deletes with random sizes: after every call both bounds hold and the
 * counters agree with a full count. */
static int s_store_bounds(void)
{
    const size_t max_e = 50, max_b = 4000;
    cache_store_t *s = cache_store_new(max_e, max_b, "lru");
    CHECK(s);
    srand(42);
    static uint8_t buf[5000];
    for (int i = 0; i < 200000; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", rand() % 300);
        int op = rand() % 10;
        if (op < 6) {
            size_t len = (size_t) (rand() % 10 == 0 ? rand() % 4500 : rand() % 200);
            int rc = cache_store_set(s, key, buf, len, rand() % 3 ? 0 : 1000);
            CHECK(rc == 0 || strlen(key) + len > max_b);
        } else if (op < 9) {
            (void) s_has(s, key);
        } else {
            (void) cache_store_delete(s, key);
        }
        cache_store_stats_t st;
        cache_store_stats(s, &st);
        CHECK(st.entries <= max_e);
        CHECK(st.bytes <= max_b);
    }
    cache_store_stats_t st;
    cache_store_stats(s, &st);
    CHECK(st.evictions > 0);
    /* The counters match what is really there. */
    size_t found = 0;
    for (int k = 0; k < 300; k++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", k);
        found += (size_t) s_has(s, key);
    }
    cache_store_stats(s, &st);
    CHECK(found == st.entries);
    /* An entry bigger than the whole tier is refused and leaves no stale older value. */
    CHECK(cache_store_set(s, "big", buf, 10, 0) == 0);
    CHECK(cache_store_set(s, "big", buf, max_b, 0) == -1);
    CHECK(!s_has(s, "big"));
    cache_store_destroy(&s);
    CHECK(s == NULL);
    cache_store_destroy(&s);
    return 0;
}

static int s_store_lru(void)
{
    cache_store_t *s = cache_store_new(3, 1 << 20, NULL);
    CHECK(s);
    CHECK(cache_store_set(s, "a", "1", 1, 0) == 0);
    CHECK(cache_store_set(s, "b", "2", 1, 0) == 0);
    CHECK(cache_store_set(s, "c", "3", 1, 0) == 0);
    CHECK(s_has(s, "a"));                          /* a is now the most recent */
    CHECK(cache_store_set(s, "d", "4", 1, 0) == 0); /* evicts b, the least recent */
    CHECK(!s_has(s, "b"));
    CHECK(s_has(s, "a") && s_has(s, "c") && s_has(s, "d"));
    CHECK(cache_store_set(s, "c", "33", 2, 0) == 0); /* an overwrite counts as a use */
    CHECK(cache_store_set(s, "e", "5", 1, 0) == 0);  /* evicts a (order now: e c d a) */
    CHECK(!s_has(s, "a"));
    uint8_t *v = NULL; size_t n = 0;
    CHECK(cache_store_get(s, "c", &v, &n, NULL) == 1 && n == 2 && memcmp(v, "33", 2) == 0);
    free(v);
    /* Byte bound: a large value pushes out the least recent until it fits. */
    cache_store_destroy(&s);
    s = cache_store_new(100, 30, NULL);
    CHECK(cache_store_set(s, "x", "0123456789", 10, 0) == 0);  /* 11 bytes */
    CHECK(cache_store_set(s, "y", "0123456789", 10, 0) == 0);  /* 22 */
    CHECK(s_has(s, "x"));                                       /* y is now the least recent */
    CHECK(cache_store_set(s, "z", "0123456789", 10, 0) == 0);  /* 33 > 30: y goes */
    CHECK(!s_has(s, "y") && s_has(s, "x") && s_has(s, "z"));
    cache_store_stats_t st;
    cache_store_stats(s, &st);
    CHECK(st.bytes == 22 && st.entries == 2 && st.evictions == 1);
    cache_store_destroy(&s);
    return 0;
}

static int s_store_ttl(void)
{
    cache_store_t *s = cache_store_new(100, 1 << 20, "lru");
    CHECK(s);
    cache_store_set_clock(s, s_fake_clock, NULL);
    s_fake_now = 1000;
    CHECK(cache_store_set(s, "short", "v", 1, 100) == 0);
    CHECK(cache_store_set(s, "long", "v", 1, 10000) == 0);
    CHECK(cache_store_set(s, "never", "v", 1, 0) == 0);
    uint8_t *v = NULL; size_t n = 0; int64_t left = 0;
    CHECK(cache_store_get(s, "short", &v, &n, &left) == 1 && left == 100);
    free(v);
    s_fake_now = 1099;
    CHECK(s_has(s, "short"));
    s_fake_now = 1100;                      /* expiry is exclusive: at expires_ms it is gone */
    CHECK(!s_has(s, "short"));
    CHECK(cache_store_get(s, "never", &v, &n, &left) == 1 && left == -1);
    free(v);
    cache_store_stats_t st;
    cache_store_stats(s, &st);
    CHECK(st.entries == 2 && st.expirations == 1);
    /* Never-read expired entries are removed by the sweep. */
    s_fake_now = 20000;
    CHECK(cache_store_expire(s, 1 << 20) == 1);
    cache_store_stats(s, &st);
    CHECK(st.entries == 1 && st.expirations == 2);
    CHECK(s_has(s, "never"));
    /* Deleting an expired entry reports nothing removed. */
    CHECK(cache_store_set(s, "t", "v", 1, 5) == 0);
    s_fake_now += 10;
    CHECK(cache_store_delete(s, "t") == 0);
    cache_store_destroy(&s);
    return 0;
}

static int s_store_prefix(void)
{
    cache_store_t *s = cache_store_new(1000, 1 << 20, "lru");
    CHECK(s);
    char key[64];
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof key, "quaver:%s:item:%d", i % 3 == 0 ? "rooms" : "users", i);
        CHECK(cache_store_set(s, key, "v", 1, 0) == 0);
    }
    CHECK(cache_store_set(s, "quaver:rooms_x:item:1", "v", 1, 0) == 0);
    CHECK(cache_store_delete_prefix(s, "quaver:rooms:") == 100);
    CHECK(!s_has(s, "quaver:rooms:item:0"));
    CHECK(s_has(s, "quaver:rooms_x:item:1"));
    CHECK(s_has(s, "quaver:users:item:1"));
    CHECK(cache_store_delete_prefix(s, "quaver:users:item:1") == 1 + 7 + 67); /* 1, 1x, 1xx */
    cache_store_stats_t st;
    cache_store_stats(s, &st);
    CHECK(st.entries == 300 - 100 - 75 + 1);
    CHECK(cache_store_delete_prefix(s, "") == st.entries);
    cache_store_stats(s, &st);
    CHECK(st.entries == 0 && st.bytes == 0);
    cache_store_destroy(&s);
    return 0;
}

static int s_store_overwrite(void)
{
    cache_store_t *s = cache_store_new(10, 100, "lru");
    CHECK(s);
    CHECK(cache_store_new(10, 100, "nope") == NULL);
    CHECK(cache_store_set(s, "k", "aaaa", 4, 0) == 0);
    CHECK(cache_store_set(s, "k", "bb", 2, 0) == 0);
    cache_store_stats_t st;
    cache_store_stats(s, &st);
    CHECK(st.entries == 1 && st.bytes == 3);
    CHECK(cache_store_set(s, "empty", "", 0, 0) == 0);
    uint8_t *v = NULL; size_t n = 9;
    CHECK(cache_store_get(s, "empty", &v, &n, NULL) == 1 && v && n == 0);
    free(v);
    CHECK(cache_store_delete(s, "k") == 1 && cache_store_delete(s, "k") == 0);
    cache_store_clear(s);
    cache_store_stats(s, &st);
    CHECK(st.entries == 0 && st.bytes == 0);
    cache_store_destroy(&s);
    return 0;
}

static int s_redis_pattern(void)
{
    char out[64];
    CHECK(cache_redis_match_pattern("quaver:ns:a*b?[c]\\d", out, sizeof out) == 0);
    CHECK(strcmp(out, "quaver:ns:a\\*b\\?\\[c\\]\\\\d*") == 0);
    CHECK(cache_redis_match_pattern("", out, sizeof out) == 0 && strcmp(out, "*") == 0);
    CHECK(cache_redis_match_pattern("abc", out, 4) == -1);
    CHECK(cache_redis_new("http://x", 100) == NULL);
    CHECK(cache_redis_new("redis://:6379", 100) == NULL);
    CHECK(cache_redis_new("redis://h:99999", 100) == NULL);
    return 0;
}

/* ---- through the dispatcher, no broker ---------------------------------------------------- */

static cache_cfg_t s_cfg(void)
{
    cache_cfg_t c = { 0 };
    c.instance = "selftest";
    c.local_max_entries = 100;
    c.local_max_bytes = 1 << 20;
    c.cache_ttl = 300;
    c.cache_enabled = true;
    c.max_key_bytes = 16;
    c.max_value_bytes = 64;
    c.redis_timeout_ms = 100;
    return c;
}

/* Calls method with req; returns the status, *out gets the reply payload (caller frees). */
static int s_call(cache_app_t *app, const char *method, const ProtobufCMessage *req,
                  uint8_t **payload, size_t *plen, char *err, size_t errlen)
{
    size_t rl = protobuf_c_message_get_packed_size(req);
    uint8_t *rb = malloc(rl + 1);
    protobuf_c_message_pack(req, rb);
    Quaver__V1__Call call = QUAVER__V1__CALL__INIT;
    call.method = (char *) method;
    call.payload.data = rb;
    call.payload.len = rl;
    size_t cl = quaver__v1__call__get_packed_size(&call);
    uint8_t *cb = malloc(cl + 1);
    quaver__v1__call__pack(&call, cb);
    uint8_t *out = NULL; size_t olen = 0;
    int status = -1;
    if (qv_dispatch("cache", cache_methods, app, NULL, cb, cl, &out, &olen) == 0) {
        Quaver__V1__Result *res = quaver__v1__result__unpack(NULL, olen, out);
        if (res) {
            status = res->status;
            if (err) snprintf(err, errlen, "%s", res->error ? res->error : "");
            if (payload) {
                *payload = malloc(res->payload.len + 1);
                if (res->payload.len) memcpy(*payload, res->payload.data, res->payload.len);
                *plen = res->payload.len;
            }
            quaver__v1__result__free_unpacked(res, NULL);
        }
    }
    free(out); free(cb); free(rb);
    return status;
}

static int s_server_validation(void)
{
    cache_cfg_t cfg = s_cfg();
    cache_app_t *app = cache_app_new(&cfg, NULL);
    CHECK(app);
    char err[256];
    Quaver__V1__CacheSetRequest set = QUAVER__V1__CACHE_SET_REQUEST__INIT;
    set.namespace_ = "rooms"; set.key = "k1";
    set.value.data = (uint8_t *) "hello"; set.value.len = 5;
    /* Each bad field: 400 naming the problem, and nothing stored. */
    struct { const char *ns, *key; size_t vlen; int64_t ttl; const char *want; } bad[] = {
        { "",      "k1", 5,  0,  "namespace is empty" },
        { "Rooms", "k1", 5,  0,  "[a-z0-9_]" },
        { "ro-oms", "k1", 5, 0,  "[a-z0-9_]" },
        { "rooms", "",   5,  0,  "key is empty" },
        { "rooms", "a_key_that_is_too_long", 5, 0, "max_key_bytes" },
        { "rooms", "k1", 65, 0,  "max_value_bytes" },
        { "rooms", "k1", 5, -1,  "ttl_ms" },
    };
    static uint8_t big[100];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set.namespace_ = (char *) bad[i].ns; set.key = (char *) bad[i].key;
        set.value.data = bad[i].vlen > 5 ? big : (uint8_t *) "hello";
        set.value.len = bad[i].vlen; set.ttl_ms = bad[i].ttl;
        CHECK(s_call(app, "Set", &set.base, NULL, NULL, err, sizeof err) == 400);
        if (!strstr(err, bad[i].want)) { fprintf(stderr, "error '%s' lacks '%s'\n", err, bad[i].want); return 1; }
    }
    Quaver__V1__CacheKey key = QUAVER__V1__CACHE_KEY__INIT;
    key.namespace_ = "rooms"; key.key = "k1";
    uint8_t *p = NULL; size_t pl = 0;
    CHECK(s_call(app, "Get", &key.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__CacheGetReply *g = quaver__v1__cache_get_reply__unpack(NULL, pl, p);
    CHECK(g && !g->found);
    quaver__v1__cache_get_reply__free_unpacked(g, NULL); free(p);
    key.namespace_ = "BAD";
    CHECK(s_call(app, "Get", &key.base, NULL, NULL, err, sizeof err) == 400);
    CHECK(s_call(app, "Delete", &key.base, NULL, NULL, err, sizeof err) == 400);
    Quaver__V1__CachePrefixRequest pr = QUAVER__V1__CACHE_PREFIX_REQUEST__INIT;
    pr.namespace_ = "x y"; pr.prefix = "";
    CHECK(s_call(app, "InvalidatePrefix", &pr.base, NULL, NULL, err, sizeof err) == 400);
    cache_app_destroy(&app);
    return 0;
}

static int s_server_no_redis(void)
{
    cache_cfg_t cfg = s_cfg();
    cache_app_t *app = cache_app_new(&cfg, NULL);
    CHECK(app);
    char err[256];
    Quaver__V1__CacheSetRequest set = QUAVER__V1__CACHE_SET_REQUEST__INIT;
    set.namespace_ = "rooms"; set.key = "k1";
    set.value.data = (uint8_t *) "hello"; set.value.len = 5;
    CHECK(s_call(app, "Set", &set.base, NULL, NULL, err, sizeof err) == 200);
    set.key = "k2";
    CHECK(s_call(app, "Set", &set.base, NULL, NULL, err, sizeof err) == 200);
    Quaver__V1__CacheKey key = QUAVER__V1__CACHE_KEY__INIT;
    key.namespace_ = "rooms"; key.key = "k1";
    uint8_t *p = NULL; size_t pl = 0;
    CHECK(s_call(app, "Get", &key.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__CacheGetReply *g = quaver__v1__cache_get_reply__unpack(NULL, pl, p);
    CHECK(g && g->found && g->value.len == 5 && memcmp(g->value.data, "hello", 5) == 0);
    CHECK(strcmp(g->tier, "local") == 0);
    quaver__v1__cache_get_reply__free_unpacked(g, NULL); free(p);
    CHECK(s_call(app, "Delete", &key.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__CacheCountReply *c = quaver__v1__cache_count_reply__unpack(NULL, pl, p);
    CHECK(c && c->removed == 1);
    quaver__v1__cache_count_reply__free_unpacked(c, NULL); free(p);
    Quaver__V1__CachePrefixRequest pr = QUAVER__V1__CACHE_PREFIX_REQUEST__INIT;
    pr.namespace_ = "rooms"; pr.prefix = "k";
    CHECK(s_call(app, "InvalidatePrefix", &pr.base, &p, &pl, err, sizeof err) == 200);
    c = quaver__v1__cache_count_reply__unpack(NULL, pl, p);
    CHECK(c && c->removed == 1);
    quaver__v1__cache_count_reply__free_unpacked(c, NULL); free(p);
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    CHECK(s_call(app, "Health", &e.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__HealthReply *h = quaver__v1__health_reply__unpack(NULL, pl, p);
    CHECK(h && strcmp(h->status, "ok") == 0 && strcmp(h->service, "cache") == 0);
    quaver__v1__health_reply__free_unpacked(h, NULL); free(p);
    cache_app_destroy(&app);
    return 0;
}


/* ---- against a real redis-server (skipped when none is installed) ------------------------ */

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *) &a, sizeof a) != 0
        || getsockname(fd, (struct sockaddr *) &a, &l) != 0) { if (fd >= 0) close(fd); return -1; }
    close(fd);
    return ntohs(a.sin_port);
}

static int s_sh(const char *fmt, int port)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, fmt, port, port);
    return system(cmd);
}

#define S_REDIS_START "redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no " \
                      "--daemonize yes --pidfile /tmp/cache_selftest_redis_%d.pid >/dev/null"
#define S_REDIS_STOP  "redis-cli -p %d shutdown nosave >/dev/null 2>&1; rm -f /tmp/cache_selftest_redis_%d.pid"

static int s_get_tier(cache_app_t *app, const char *k, char *tier, char *val)
{
    Quaver__V1__CacheKey key = QUAVER__V1__CACHE_KEY__INIT;
    key.namespace_ = "t"; key.key = (char *) k;
    uint8_t *p = NULL; size_t pl = 0;
    char err[128];
    if (s_call(app, "Get", &key.base, &p, &pl, err, sizeof err) != 200) return -1;
    Quaver__V1__CacheGetReply *g = quaver__v1__cache_get_reply__unpack(NULL, pl, p);
    free(p);
    if (!g) return -1;
    int found = g->found;
    snprintf(tier, 16, "%s", g->tier);
    snprintf(val, 64, "%.*s", (int) g->value.len, g->value.data);
    quaver__v1__cache_get_reply__free_unpacked(g, NULL);
    return found;
}

static int s_set_kv(cache_app_t *app, const char *k, const char *v)
{
    Quaver__V1__CacheSetRequest set = QUAVER__V1__CACHE_SET_REQUEST__INIT;
    set.namespace_ = "t"; set.key = (char *) k;
    set.value.data = (uint8_t *) v; set.value.len = strlen(v);
    char err[128];
    return s_call(app, "Set", &set.base, NULL, NULL, err, sizeof err);
}

static int s_redis_live_body(cache_app_t *app, int port)
{
    char tier[16], val[64], cmd[256];
    CHECK(s_set_kv(app, "a", "1") == 200);
    CHECK(s_get_tier(app, "a", tier, val) == 1 && strcmp(tier, "local") == 0);
    /* Written by someone else: found in Redis, then kept locally. */
    snprintf(cmd, sizeof cmd, "redis-cli -p %d set quaver:t:b two PX 60000 >/dev/null", port);
    CHECK(system(cmd) == 0);
    CHECK(s_get_tier(app, "b", tier, val) == 1 && strcmp(tier, "redis") == 0 && !strcmp(val, "two"));
    CHECK(s_get_tier(app, "b", tier, val) == 1 && strcmp(tier, "local") == 0);
    /* Prefix with glob characters only removes the literal prefix. */
    CHECK(s_set_kv(app, "x*1", "v") == 200 && s_set_kv(app, "xy1", "v") == 200);
    Quaver__V1__CachePrefixRequest pr = QUAVER__V1__CACHE_PREFIX_REQUEST__INIT;
    pr.namespace_ = "t"; pr.prefix = "x*";
    char err[128];
    CHECK(s_call(app, "InvalidatePrefix", &pr.base, NULL, NULL, err, sizeof err) == 200);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d exists quaver:t:xy1 | grep -q '^1$'", port);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d exists 'quaver:t:x*1' | grep -q '^0$'", port);
    CHECK(system(cmd) == 0);
    /* Redis goes away: reads from the local tier, writes to it, nothing fails. */
    s_sh(S_REDIS_STOP, port);
    usleep(200000);
    CHECK(s_get_tier(app, "a", tier, val) == 1 && strcmp(tier, "local") == 0);
    CHECK(s_set_kv(app, "c", "while-down") == 200);
    CHECK(s_set_kv(app, "d", "while-down") == 200);
    Quaver__V1__CachePrefixRequest pr2 = QUAVER__V1__CACHE_PREFIX_REQUEST__INIT;
    pr2.namespace_ = "t"; pr2.prefix = "room:";
    CHECK(s_call(app, "InvalidatePrefix", &pr2.base, NULL, NULL, err, sizeof err) == 200);
    CHECK(s_get_tier(app, "c", tier, val) == 1 && !strcmp(val, "while-down"));
    CHECK(s_get_tier(app, "nothing", tier, val) == 0);
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    uint8_t *p = NULL; size_t pl = 0;
    CHECK(s_call(app, "Health", &e.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__HealthReply *h = quaver__v1__health_reply__unpack(NULL, pl, p);
    CHECK(h && !strcmp(h->status, "degraded") && !strcmp(h->dependencies[0]->state, "down"));
    quaver__v1__health_reply__free_unpacked(h, NULL); free(p);
    /* Redis comes back holding an older value of c: the write we took while it was away
     * must win (the key is unlinked on reconnect) and the local tier is flushed. */
    CHECK(s_sh(S_REDIS_START, port) == 0);
    usleep(200000);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d mset quaver:t:c old quaver:t:d old "
             "quaver:t:room:1 old quaver:t:room:2 old quaver:t:other old >/dev/null", port);
    CHECK(system(cmd) == 0);
    for (int i = 0; i < 60 && !cache_redis_up_for_test(app); i++) { cache_app_tick(app); usleep(100000); }
    CHECK(cache_redis_up_for_test(app));
    CHECK(s_get_tier(app, "c", tier, val) == 0);   /* not "old" */
    CHECK(s_get_tier(app, "d", tier, val) == 0);
    CHECK(s_get_tier(app, "room:1", tier, val) == 0);  /* the prefix invalidation replayed */
    CHECK(s_get_tier(app, "room:2", tier, val) == 0);
    CHECK(s_get_tier(app, "other", tier, val) == 1 && strcmp(tier, "redis") == 0);
    CHECK(s_get_tier(app, "a", tier, val) == 0);   /* local tier flushed, Redis restarted empty */
    return 0;
}

static int s_redis_live(void)
{
    if (system("command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1") != 0) {
        printf("redis_live: skipped: redis-server is not installed\n");
        return 0;
    }
    int port = s_free_port();
    CHECK(port > 0);
    CHECK(s_sh(S_REDIS_START, port) == 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    int up = 0;
    for (int i = 0; i < 50 && !up; i++) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "redis-cli -p %d ping >/dev/null 2>&1", port);
        up = system(cmd) == 0;
        if (!up) usleep(100000);
    }
    cache_cfg_t cfg = s_cfg();
    cache_app_t *app = up ? cache_app_new(&cfg, url) : NULL;
    int rc = app ? s_redis_live_body(app, port) : 1;
    cache_app_destroy(&app);
    s_sh(S_REDIS_STOP, port);
    return rc;
}

static const struct { const char *name; int (*fn)(void); } s_tests[] = {
    { "store_bounds",      s_store_bounds },
    { "store_lru",         s_store_lru },
    { "store_ttl",         s_store_ttl },
    { "store_prefix",      s_store_prefix },
    { "store_overwrite",   s_store_overwrite },
    { "redis_pattern",     s_redis_pattern },
    { "server_validation", s_server_validation },
    { "server_no_redis",   s_server_no_redis },
    { "redis_live",        s_redis_live },
    { NULL, NULL }
};

int main(int argc, char **argv)
{
    int failed = 0, ran = 0;
    for (int i = 0; s_tests[i].name; i++) {
        if (argc > 1 && strcmp(argv[1], s_tests[i].name) != 0) continue;
        ran++;
        int rc = s_tests[i].fn();
        printf("%s: %s\n", s_tests[i].name, rc == 0 ? "ok" : "FAILED");
        failed += rc != 0;
    }
    if (ran == 0) { fprintf(stderr, "no test named '%s'\n", argc > 1 ? argv[1] : ""); return 2; }
    return failed ? 1 : 0;
}
