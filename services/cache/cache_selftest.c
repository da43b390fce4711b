/* cache_selftest: the cache daemon's selftests, one ctest entry per row of s_tests.
 * Usage: cache_selftest <name>   (no name: run all). */
#include "qv_selftest.h"
#include "cache_store.h"
#include "cache_policy.h"
#include "cache_redis.h"
#include "cache_server.h"
#include "cache_namespace.h"
#include "cache_tracking.h"
#include "cache_codec.h"
#include "cache_load.h"
#include "cache_msgpack.h"
#include "cache_snapshot.h"
#include <zlib.h>
#include "quaver/v1/cache.pb-c.h"
#include <time.h>
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

/* A store with one namespace "t" of the given policy (NULL = lru), for the tests of the
 * store's own behaviour. NULL when the policy is unknown. */
static cache_store_t *s_new_store(size_t max_e, size_t max_b, const char *policy)
{
    cache_store_t *s = cache_store_new(max_e, max_b);
    if (s && cache_store_add_namespace(s, "t", policy, CACHE_STORE_PRIO_MEDIUM) != 0)
        cache_store_destroy(&s);
    return s;
}

static int s_has(cache_store_t *s, const char *k)
{
    uint8_t *v = NULL; size_t n = 0;
    int rc = cache_store_ns_get(s, "t", k, &v, &n, NULL);
    free(v);
    return rc == 1;
}

/* Random sets, gets and deletes with random sizes: after every call both bounds hold and the
 * counters agree with a full count. */
static int s_store_bounds(void)
{
    const size_t max_e = 50, max_b = 4000;
    cache_store_t *s = s_new_store(max_e, max_b, "lru");
    CHECK(s);
    srand(42);
    static uint8_t buf[5000];
    for (int i = 0; i < 200000; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%d", rand() % 300);
        int op = rand() % 10;
        if (op < 6) {
            size_t len = (size_t) (rand() % 10 == 0 ? rand() % 4500 : rand() % 200);
            int rc = cache_store_ns_set(s, "t", key, buf, len, rand() % 3 ? 0 : 1000);
            CHECK(rc == 0 || strlen(key) + len > max_b);
        } else if (op < 9) {
            (void) s_has(s, key);
        } else {
            (void) cache_store_ns_delete(s, "t", key);
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
    CHECK(cache_store_ns_set(s, "t", "big", buf, 10, 0) == 0);
    CHECK(cache_store_ns_set(s, "t", "big", buf, max_b, 0) == -1);
    CHECK(!s_has(s, "big"));
    cache_store_destroy(&s);
    CHECK(s == NULL);
    cache_store_destroy(&s);
    return 0;
}

static int s_store_lru(void)
{
    cache_store_t *s = s_new_store(3, 1 << 20, NULL);
    CHECK(s);
    CHECK(cache_store_ns_set(s, "t", "a", "1", 1, 0) == 0);
    CHECK(cache_store_ns_set(s, "t", "b", "2", 1, 0) == 0);
    CHECK(cache_store_ns_set(s, "t", "c", "3", 1, 0) == 0);
    CHECK(s_has(s, "a"));                          /* a is now the most recent */
    CHECK(cache_store_ns_set(s, "t", "d", "4", 1, 0) == 0); /* evicts b, the least recent */
    CHECK(!s_has(s, "b"));
    CHECK(s_has(s, "a") && s_has(s, "c") && s_has(s, "d"));
    CHECK(cache_store_ns_set(s, "t", "c", "33", 2, 0) == 0); /* an overwrite counts as a use */
    CHECK(cache_store_ns_set(s, "t", "e", "5", 1, 0) == 0);  /* evicts a (order now: e c d a) */
    CHECK(!s_has(s, "a"));
    uint8_t *v = NULL; size_t n = 0;
    CHECK(cache_store_ns_get(s, "t", "c", &v, &n, NULL) == 1 && n == 2 && memcmp(v, "33", 2) == 0);
    free(v);
    /* Byte bound: a large value pushes out the least recent until it fits. */
    cache_store_destroy(&s);
    s = s_new_store(100, 30, NULL);
    CHECK(cache_store_ns_set(s, "t", "x", "0123456789", 10, 0) == 0);  /* 11 bytes */
    CHECK(cache_store_ns_set(s, "t", "y", "0123456789", 10, 0) == 0);  /* 22 */
    CHECK(s_has(s, "x"));                                       /* y is now the least recent */
    CHECK(cache_store_ns_set(s, "t", "z", "0123456789", 10, 0) == 0);  /* 33 > 30: y goes */
    CHECK(!s_has(s, "y") && s_has(s, "x") && s_has(s, "z"));
    cache_store_stats_t st;
    cache_store_stats(s, &st);
    CHECK(st.bytes == 22 && st.entries == 2 && st.evictions == 1);
    cache_store_destroy(&s);
    return 0;
}

static int s_store_ttl(void)
{
    cache_store_t *s = s_new_store(100, 1 << 20, "lru");
    CHECK(s);
    cache_store_set_clock(s, s_fake_clock, NULL);
    s_fake_now = 1000;
    CHECK(cache_store_ns_set(s, "t", "short", "v", 1, 100) == 0);
    CHECK(cache_store_ns_set(s, "t", "long", "v", 1, 10000) == 0);
    CHECK(cache_store_ns_set(s, "t", "never", "v", 1, 0) == 0);
    uint8_t *v = NULL; size_t n = 0; int64_t left = 0;
    CHECK(cache_store_ns_get(s, "t", "short", &v, &n, &left) == 1 && left == 100);
    free(v);
    s_fake_now = 1099;
    CHECK(s_has(s, "short"));
    s_fake_now = 1100;                      /* expiry is exclusive: at expires_ms it is gone */
    CHECK(!s_has(s, "short"));
    CHECK(cache_store_ns_get(s, "t", "never", &v, &n, &left) == 1 && left == -1);
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
    CHECK(cache_store_ns_set(s, "t", "t", "v", 1, 5) == 0);
    s_fake_now += 10;
    CHECK(cache_store_ns_delete(s, "t", "t") == 0);
    cache_store_destroy(&s);
    return 0;
}

static int s_store_prefix(void)
{
    cache_store_t *s = s_new_store(1000, 1 << 20, "lru");
    CHECK(s);
    char key[64];
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof key, "quaver:%s:item:%d", i % 3 == 0 ? "rooms" : "users", i);
        CHECK(cache_store_ns_set(s, "t", key, "v", 1, 0) == 0);
    }
    CHECK(cache_store_ns_set(s, "t", "quaver:rooms_x:item:1", "v", 1, 0) == 0);
    CHECK(cache_store_ns_delete_prefix(s, "t", "quaver:rooms:") == 100);
    CHECK(!s_has(s, "quaver:rooms:item:0"));
    CHECK(s_has(s, "quaver:rooms_x:item:1"));
    CHECK(s_has(s, "quaver:users:item:1"));
    CHECK(cache_store_ns_delete_prefix(s, "t", "quaver:users:item:1") == 1 + 7 + 67); /* 1, 1x, 1xx */
    cache_store_stats_t st;
    cache_store_stats(s, &st);
    CHECK(st.entries == 300 - 100 - 75 + 1);
    CHECK(cache_store_ns_delete_prefix(s, "t", "") == (int64_t) st.entries);
    cache_store_stats(s, &st);
    CHECK(st.entries == 0 && st.bytes == 0);
    cache_store_destroy(&s);
    return 0;
}

static int s_store_overwrite(void)
{
    cache_store_t *s = s_new_store(10, 100, "lru");
    CHECK(s);
    CHECK(s_new_store(10, 100, "nope") == NULL);
    CHECK(cache_store_ns_set(s, "t", "k", "aaaa", 4, 0) == 0);
    CHECK(cache_store_ns_set(s, "t", "k", "bb", 2, 0) == 0);
    cache_store_stats_t st;
    cache_store_stats(s, &st);
    CHECK(st.entries == 1 && st.bytes == 3);
    CHECK(cache_store_ns_set(s, "t", "empty", "", 0, 0) == 0);
    uint8_t *v = NULL; size_t n = 9;
    CHECK(cache_store_ns_get(s, "t", "empty", &v, &n, NULL) == 1 && v && n == 0);
    free(v);
    CHECK(cache_store_ns_delete(s, "t", "k") == 1 && cache_store_ns_delete(s, "t", "k") == 0);
    cache_store_clear(s);
    cache_store_stats(s, &st);
    CHECK(st.entries == 0 && st.bytes == 0);
    cache_store_destroy(&s);
    return 0;
}

/* ---- policies, driven directly as tools/cachesim drives them ------------------------------ */

/* A tiny replayer over keys 0..S_SIM_KEYS-1: every key costs one entry. */
#define S_SIM_KEYS 20000
typedef struct {
    cache_policy_t *p;
    cache_entry_t  *e;          /* one entry per key */
    uint8_t        *in;         /* 1 while the key is cached */
    size_t          cap, count;
    uint64_t        evicted_last;
} s_sim_t;

static int s_sim_init(s_sim_t *s, const char *policy, size_t cap, uint64_t seed)
{
    memset(s, 0, sizeof *s);
    s->p = cache_policy_new(policy, cap, seed);
    s->e = calloc(S_SIM_KEYS, sizeof *s->e);
    s->in = calloc(S_SIM_KEYS, 1);
    s->cap = cap;
    return s->p && s->e && s->in ? 0 : -1;
}

static void s_sim_free(s_sim_t *s)
{
    if (s->p) s->p->destroy(&s->p);
    free(s->e);
    free(s->in);
}

/* 1 on a hit; a miss inserts the key and evicts down to the capacity. */
static int s_sim(s_sim_t *s, unsigned k)
{
    if (s->in[k]) { s->p->on_access(s->p, &s->e[k]); return 1; }
    memset(&s->e[k], 0, sizeof s->e[k]);
    s->e[k].hash = cache_mix64(k);
    if (s->p->on_insert(s->p, &s->e[k]) != 0) return -1;
    s->in[k] = 1;
    s->count++;
    while (s->count > s->cap) {
        cache_entry_t *v = s->p->victim(s->p);
        if (!v) return -1;
        s->p->on_remove(s->p, v, 1);
        s->evicted_last = (uint64_t) (v - s->e);
        s->in[v - s->e] = 0;
        s->count--;
    }
    return 0;
}

static int s_policy_table(void)
{
    for (int i = 0; cache_policy_names[i]; i++) {
        CHECK(cache_policy_known(cache_policy_names[i]));
        cache_policy_t *p = cache_policy_new(cache_policy_names[i], 10, 1);
        CHECK(p && strcmp(p->name, cache_policy_names[i]) == 0);
        CHECK(p->victim(p) == NULL);                    /* empty: no victim */
        p->destroy(&p);
        CHECK(p == NULL);
    }
    CHECK(cache_policy_new("arc", 10, 1) == NULL && !cache_policy_known("arc"));
    cache_policy_t *p = cache_policy_new(NULL, 10, 1);
    CHECK(p && strcmp(p->name, "lru") == 0);
    p->destroy(&p);
    return 0;
}

static int s_policy_lru(void)
{
    s_sim_t s;
    CHECK(s_sim_init(&s, "lru", 3, 1) == 0);
    s_sim(&s, 1); s_sim(&s, 2); s_sim(&s, 3);
    CHECK(s_sim(&s, 1) == 1);                 /* 1 is now the most recent */
    s_sim(&s, 4);                             /* evicts 2, the least recent */
    CHECK(!s.in[2] && s.in[1] && s.in[3] && s.in[4]);
    s_sim_free(&s);
    return 0;
}

static int s_policy_lfu(void)
{
    s_sim_t s;
    CHECK(s_sim_init(&s, "lfu", 3, 1) == 0);
    s_sim(&s, 1); s_sim(&s, 2); s_sim(&s, 3);
    for (int i = 0; i < 3; i++) CHECK(s_sim(&s, 1) == 1);   /* 1: 4 uses */
    CHECK(s_sim(&s, 3) == 1);                               /* 3: 2 uses, 2: 1 use */
    s_sim(&s, 4);                                           /* evicts 2, the least used */
    CHECK(!s.in[2] && s.in[1] && s.in[3] && s.in[4]);
    s_sim(&s, 5);                                           /* 4 and 5 both at 1: 4 is older */
    CHECK(!s.in[4] && s.in[5]);
    CHECK(s_sim(&s, 5) == 1 && s_sim(&s, 5) == 1);          /* 5: 3 uses, 3: 2 uses */
    /* A newcomer is not its own victim (evict-before-insert): 3, the least used, goes. */
    s_sim(&s, 6);
    CHECK(!s.in[3] && s.in[6] && s.in[1] && s.in[5]);
    s_sim(&s, 7);                                           /* 6 and 7 at 1: 6 is older */
    CHECK(!s.in[6] && s.in[7] && s.count == 3);
    /* The frequent key survives a long scan. */
    for (unsigned k = 100; k < 1100; k++) s_sim(&s, k);
    CHECK(s.in[1]);
    s_sim_free(&s);
    return 0;
}

static int s_policy_fifo(void)
{
    s_sim_t s;
    CHECK(s_sim_init(&s, "fifo", 3, 1) == 0);
    s_sim(&s, 1); s_sim(&s, 2); s_sim(&s, 3);
    for (int i = 0; i < 5; i++) CHECK(s_sim(&s, 1) == 1);   /* hits change nothing */
    s_sim(&s, 4);
    CHECK(!s.in[1] && s.in[2] && s.in[3] && s.in[4]);
    s_sim(&s, 5);
    CHECK(!s.in[2]);
    s_sim_free(&s);
    return 0;
}

static int s_policy_random(void)
{
    uint64_t seq[2][200];
    size_t evicted_count[50] = { 0 };
    for (int run = 0; run < 2; run++) {
        s_sim_t s;
        CHECK(s_sim_init(&s, "random", 10, 7) == 0);
        for (int i = 0; i < 200; i++) {
            unsigned k = (unsigned) ((i * 37) % 50);
            if (s.in[k]) { CHECK(s_sim(&s, k) == 1); seq[run][i] = UINT64_MAX; continue; }
            uint64_t before = s.count;
            CHECK(s_sim(&s, k) == 0);
            seq[run][i] = before == 10 ? s.evicted_last : UINT64_MAX;
            if (before == 10 && run == 0) {
                CHECK(s.evicted_last != k || !s.in[k]);      /* the victim really left */
                evicted_count[s.evicted_last]++;
            }
            CHECK(s.count <= 10);
        }
        s_sim_free(&s);
    }
    CHECK(memcmp(seq[0], seq[1], sizeof seq[0]) == 0);      /* same seed, same victims */
    size_t distinct = 0;
    for (int k = 0; k < 50; k++) distinct += evicted_count[k] > 0;
    CHECK(distinct > 25);                                   /* not always the same slot */
    /* A different seed gives a different sequence. */
    s_sim_t a, b;
    CHECK(s_sim_init(&a, "random", 10, 1) == 0 && s_sim_init(&b, "random", 10, 2) == 0);
    int differ = 0;
    for (unsigned k = 0; k < 200; k++) {
        s_sim(&a, k % 40); s_sim(&b, k % 40);
        differ |= memcmp(a.in, b.in, 40) != 0;
    }
    CHECK(differ);
    s_sim_free(&a); s_sim_free(&b);
    return 0;
}

static int s_policy_s3fifo(void)
{
    s_sim_t s;
    /* 10 entries: small holds 1, main 9, the ghost remembers 9 hashes. */
    CHECK(s_sim_init(&s, "s3fifo", 10, 1) == 0);
    s_sim(&s, 1);
    CHECK(s_sim(&s, 1) == 1);                 /* re-referenced while in small */
    for (unsigned k = 100; k < 109; k++) s_sim(&s, k);
    CHECK(s.count == 10);
    /* A scan of one-hit wonders: each leaves from small; key 1 was promoted to main and stays,
     * and main never takes a one-hit wonder (only 1 + the 9 newest wonders are left). */
    for (unsigned k = 200; k < 1200; k++) s_sim(&s, k);
    CHECK(s.in[1]);
    for (unsigned k = 200; k < 1191; k++) CHECK(!s.in[k]);
    /* A key evicted from small sits in the ghost queue: when it comes back it enters main and
     * survives the next scan, which a plain FIFO would not allow. */
    CHECK(!s.in[1190] && s_sim(&s, 1190) == 0);
    for (unsigned k = 2000; k < 2500; k++) s_sim(&s, k);
    CHECK(s.in[1190] && s.in[1]);
    /* A key seen once long ago (gone from the ghost queue too) does not come back to main. */
    s_sim(&s, 300);
    for (unsigned k = 3000; k < 3100; k++) s_sim(&s, k);
    CHECK(!s.in[300]);
    s_sim_free(&s);
    return 0;
}

static int s_policy_wtinylfu(void)
{
    /* 100 entries; 30 hot keys used often, then a scan of 10,000 new keys with the hot keys
     * still used now and then. W-TinyLFU keeps every hot key; LRU loses them to the scan. */
    const char *pols[] = { "wtinylfu", "lru" };
    for (int pi = 0; pi < 2; pi++) {
        s_sim_t s;
        CHECK(s_sim_init(&s, pols[pi], 100, 1) == 0);
        for (int round = 0; round < 6; round++)
            for (unsigned k = 0; k < 30; k++) s_sim(&s, k);
        for (unsigned k = 1000; k < 11000; k++) {
            s_sim(&s, k);
            if (k % 500 == 0)
                for (unsigned h = 0; h < 30; h++) s_sim(&s, h);
        }
        for (unsigned k = 1000; k < 1100; k++) s_sim(&s, k);   /* a final burst of scan */
        int kept = 0;
        for (unsigned k = 0; k < 30; k++) kept += s.in[k];
        if (pi == 0) CHECK(kept == 30);
        else CHECK(kept == 0);
        CHECK(s.count == 100);
        s_sim_free(&s);
    }
    /* Admission: a new key enters only against a less frequent victim; a key that keeps
     * coming back is admitted in the end (its sketch count grows). */
    s_sim_t s;
    CHECK(s_sim_init(&s, "wtinylfu", 10, 1) == 0);
    for (int r = 0; r < 4; r++) for (unsigned k = 0; k < 10; k++) s_sim(&s, k);
    int admitted = 0;
    for (int r = 0; r < 8 && !admitted; r++) {
        s_sim(&s, 500);
        s_sim(&s, 501);             /* push 500 out of the 1-entry window */
        admitted = s.in[500];
    }
    CHECK(admitted);
    s_sim_free(&s);
    return 0;
}

/* ---- the store with namespaces ------------------------------------------------------------ */

/* Random sets, gets and deletes over five namespaces (every policy, every priority) with
 * random sizes and TTLs: after every call both bounds hold, and the counters agree with each
 * other and with what is really there. */
static int s_store_bounds_ns(void)
{
    const size_t max_e = 60, max_b = 5000;
    cache_store_t *s = cache_store_new(max_e, max_b);
    CHECK(s);
    cache_store_set_clock(s, s_fake_clock, NULL);
    s_fake_now = 1;
    const char *ns[] = { "a", "b", "c", "d", "e", "f" };
    for (int i = 0; cache_policy_names[i]; i++)
        CHECK(cache_store_add_namespace(s, ns[i], cache_policy_names[i], i % 3) == 0);
    srand(7);
    static uint8_t buf[6000];
    for (int i = 0; i < 300000; i++) {
        const char *n = ns[rand() % 6];
        char key[32];
        snprintf(key, sizeof key, "k%d", rand() % 150);
        int op = rand() % 10;
        s_fake_now += rand() % 3;
        if (op < 6) {
            size_t len = (size_t) (rand() % 20 == 0 ? rand() % 5500 : rand() % 150);
            int rc = cache_store_ns_set(s, n, key, buf, len, rand() % 3 ? 0 : rand() % 500);
            CHECK(rc == 0 || strlen(key) + len > max_b);
        } else if (op < 9) {
            uint8_t *v = NULL; size_t vl = 0;
            CHECK(cache_store_ns_get(s, n, key, &v, &vl, NULL) >= 0);
            free(v);
        } else if (rand() % 50) {
            CHECK(cache_store_ns_delete(s, n, key) >= 0);
        } else {
            (void) cache_store_expire(s, 16);
        }
        cache_store_stats_t st;
        cache_store_stats(s, &st);
        CHECK(st.entries <= max_e);
        CHECK(st.bytes <= max_b);
    }
    cache_store_stats_t st;
    cache_store_stats(s, &st);
    uint64_t sum_e = 0, sum_b = 0, found = 0;
    CHECK(cache_store_ns_count(s) == 6);
    for (size_t i = 0; i < 6; i++) {
        cache_store_ns_stats_t ns_st;
        CHECK(cache_store_ns_stats_at(s, i, &ns_st) == 0);
        sum_e += ns_st.entries;
        sum_b += ns_st.bytes;
        CHECK(ns_st.hits > 0 && ns_st.misses > 0);
    }
    CHECK(cache_store_ns_stats_at(s, 6, &(cache_store_ns_stats_t){ 0 }) == -1);
    CHECK(sum_e == st.entries && sum_b == st.bytes && st.evictions > 0 && st.expirations > 0);
    s_fake_now += 1000;   /* everything with a TTL has expired: count what is left */
    for (int n = 0; n < 6; n++)
        for (int k = 0; k < 150; k++) {
            char key[32];
            snprintf(key, sizeof key, "k%d", k);
            uint8_t *v = NULL; size_t vl = 0;
            found += (uint64_t) (cache_store_ns_get(s, ns[n], key, &v, &vl, NULL) == 1);
            free(v);
        }
    cache_store_stats(s, &st);
    CHECK(found == st.entries);
    cache_store_destroy(&s);
    return 0;
}

static int s_has_ns(cache_store_t *s, const char *ns, const char *k)
{
    uint8_t *v = NULL; size_t n = 0;
    int rc = cache_store_ns_get(s, ns, k, &v, &n, NULL);
    free(v);
    return rc == 1;
}

static int s_store_namespaces(void)
{
    cache_store_t *s = cache_store_new(100, 1 << 20);
    CHECK(s);
    CHECK(cache_store_add_namespace(s, "rooms", "wtinylfu", CACHE_STORE_PRIO_HIGH) == 0);
    CHECK(cache_store_add_namespace(s, "users", NULL, CACHE_STORE_PRIO_MEDIUM) == 0);
    CHECK(cache_store_add_namespace(s, "rooms", "lru", CACHE_STORE_PRIO_LOW) == -1);  /* taken */
    CHECK(cache_store_add_namespace(s, "", "lru", CACHE_STORE_PRIO_LOW) == -1);
    CHECK(cache_store_add_namespace(s, "x", "arc", CACHE_STORE_PRIO_LOW) == -1);
    CHECK(cache_store_add_namespace(s, "x", "lru", 3) == -1);
    CHECK(cache_store_add_namespace(s, "x", "lru", -1) == -1);
    char longname[80];
    memset(longname, 'n', 65); longname[65] = 0;
    CHECK(cache_store_add_namespace(s, longname, "lru", CACHE_STORE_PRIO_LOW) == -1);
    /* The same key in two namespaces is two entries. */
    CHECK(cache_store_ns_set(s, "rooms", "k", "r", 1, 0) == 0);
    CHECK(cache_store_ns_set(s, "users", "k", "uu", 2, 0) == 0);
    uint8_t *v = NULL; size_t n = 0;
    CHECK(cache_store_ns_get(s, "users", "k", &v, &n, NULL) == 1 && n == 2 && !memcmp(v, "uu", 2));
    free(v);
    CHECK(cache_store_ns_get(s, "rooms", "k", &v, &n, NULL) == 1 && n == 1 && v[0] == 'r');
    free(v);
    /* Unknown namespaces fail cleanly and change nothing. */
    CHECK(cache_store_ns_set(s, "nope", "k", "v", 1, 0) == CACHE_STORE_NO_NS);
    CHECK(cache_store_ns_get(s, "nope", "k", &v, &n, NULL) == CACHE_STORE_NO_NS);
    CHECK(cache_store_ns_get(s, "", "k", &v, &n, NULL) == CACHE_STORE_NO_NS);
    CHECK(cache_store_ns_get(s, NULL, "k", &v, &n, NULL) == CACHE_STORE_NO_NS);
    CHECK(cache_store_ns_delete(s, "nope", "k") == CACHE_STORE_NO_NS);
    CHECK(cache_store_ns_delete_prefix(s, "nope", "") == CACHE_STORE_NO_NS);
    CHECK(cache_store_ns_clear(s, "nope") == CACHE_STORE_NO_NS);
    cache_store_ns_stats_t st;
    CHECK(cache_store_ns_stats(s, "nope", &st) == CACHE_STORE_NO_NS);
    /* Prefix and clear stay within their namespace. */
    char key[32];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "room:%d", i);
        CHECK(cache_store_ns_set(s, "rooms", key, "v", 1, 0) == 0);
        CHECK(cache_store_ns_set(s, "users", key, "v", 1, 0) == 0);
    }
    CHECK(cache_store_ns_delete_prefix(s, "rooms", "room:1") == 11);   /* 1, 10..19 */
    CHECK(s_has_ns(s, "users", "room:1") && !s_has_ns(s, "rooms", "room:12"));
    CHECK(s_has_ns(s, "rooms", "room:2"));
    CHECK(cache_store_ns_stats(s, "rooms", &st) == 0 && st.entries == 10 && st.priority == 2);
    CHECK(strcmp(st.policy, "wtinylfu") == 0 && strcmp(st.name, "rooms") == 0);
    CHECK(cache_store_ns_delete(s, "rooms", "room:2") == 1 && cache_store_ns_delete(s, "rooms", "room:2") == 0);
    CHECK(cache_store_ns_clear(s, "rooms") == 9);
    CHECK(cache_store_ns_stats(s, "users", &st) == 0 && st.entries == 21
          && st.bytes == 3 + 10 * 7 + 10 * 8);   /* "k"+"uu", "room:N"+"v", "room:NN"+"v" */
    CHECK(cache_store_ns_stats(s, "rooms", &st) == 0 && st.entries == 0 && st.bytes == 0);
    cache_store_destroy(&s);
    return 0;
}

static int s_ev(cache_store_t *s, const char *ns, cache_store_evict_cause_t c)
{
    cache_store_ns_stats_t st;
    if (cache_store_ns_stats(s, ns, &st) != 0) return -1;
    return (int) st.evictions[c];
}

static int s_store_priority(void)
{
    cache_store_t *s = cache_store_new(10, 1 << 20);
    CHECK(s);
    CHECK(cache_store_add_namespace(s, "lo", "lru", CACHE_STORE_PRIO_LOW) == 0);
    CHECK(cache_store_add_namespace(s, "mid", "lfu", CACHE_STORE_PRIO_MEDIUM) == 0);
    CHECK(cache_store_add_namespace(s, "hi", "s3fifo", CACHE_STORE_PRIO_HIGH) == 0);
    char key[32];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof key, "%d", i);
        CHECK(cache_store_ns_set(s, "lo", key, "v", 1, 0) == 0);
        CHECK(cache_store_ns_set(s, "mid", key, "v", 1, 0) == 0);
    }
    /* 12 > 10: the low namespace gave the space (its two oldest), mid kept all six. */
    cache_store_ns_stats_t st;
    CHECK(cache_store_ns_stats(s, "lo", &st) == 0 && st.entries == 4);
    CHECK(cache_store_ns_stats(s, "mid", &st) == 0 && st.entries == 6);
    CHECK(!s_has_ns(s, "lo", "0") && !s_has_ns(s, "lo", "1") && s_has_ns(s, "lo", "5"));
    CHECK(s_ev(s, "lo", CACHE_EVICT_PRIORITY) == 1 && s_ev(s, "lo", CACHE_EVICT_CAPACITY_ENTRIES) == 1);
    /* The high namespace takes room from low first, then from medium, never the reverse. */
    for (int i = 0; i < 7; i++) {
        snprintf(key, sizeof key, "h%d", i);
        CHECK(cache_store_ns_set(s, "hi", key, "v", 1, 0) == 0);
    }
    CHECK(cache_store_ns_stats(s, "lo", &st) == 0 && st.entries == 0);
    CHECK(cache_store_ns_stats(s, "mid", &st) == 0 && st.entries == 3);
    CHECK(cache_store_ns_stats(s, "hi", &st) == 0 && st.entries == 7);
    CHECK(s_ev(s, "lo", CACHE_EVICT_PRIORITY) == 5 && s_ev(s, "mid", CACHE_EVICT_PRIORITY) == 3);
    /* A low write when the store is full of higher ones only displaces itself. */
    CHECK(cache_store_ns_set(s, "lo", "x", "v", 1, 0) == 0);
    CHECK(!s_has_ns(s, "lo", "x"));
    CHECK(cache_store_ns_stats(s, "mid", &st) == 0 && st.entries == 3);
    CHECK(s_ev(s, "lo", CACHE_EVICT_CAPACITY_ENTRIES) == 2);
    /* With only high entries left, high evicts its own (capacity, not priority). */
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof key, "g%d", i);
        CHECK(cache_store_ns_set(s, "hi", key, "v", 1, 0) == 0);
    }
    CHECK(cache_store_ns_stats(s, "hi", &st) == 0 && st.entries == 10);
    CHECK(s_ev(s, "hi", CACHE_EVICT_CAPACITY_ENTRIES) == 17 && s_ev(s, "hi", CACHE_EVICT_PRIORITY) == 0);
    cache_store_destroy(&s);
    /* The byte bound: the cause says which bound made room. Within one priority the
     * namespace holding the most bytes gives first. */
    s = cache_store_new(100, 100);
    CHECK(s);
    CHECK(cache_store_add_namespace(s, "big", "fifo", CACHE_STORE_PRIO_MEDIUM) == 0);
    CHECK(cache_store_add_namespace(s, "small", "fifo", CACHE_STORE_PRIO_MEDIUM) == 0);
    static const char v40[40] = { 0 };
    CHECK(cache_store_ns_set(s, "big", "a", v40, 39, 0) == 0);    /* 40 bytes */
    CHECK(cache_store_ns_set(s, "big", "b", v40, 39, 0) == 0);    /* 80 */
    CHECK(cache_store_ns_set(s, "small", "c", v40, 9, 0) == 0);   /* 90 */
    CHECK(cache_store_ns_set(s, "small", "d", v40, 19, 0) == 0);  /* 110 > 100: big's "a" */
    CHECK(!s_has_ns(s, "big", "a") && s_has_ns(s, "big", "b") && s_has_ns(s, "small", "c"));
    CHECK(s_ev(s, "big", CACHE_EVICT_CAPACITY_BYTES) == 1 && s_ev(s, "small", CACHE_EVICT_CAPACITY_BYTES) == 0);
    cache_store_stats_t all;
    cache_store_stats(s, &all);
    CHECK(all.bytes == 70 && all.entries == 3 && all.evictions == 1);
    cache_store_destroy(&s);
    return 0;
}

static int s_store_ns_ttl(void)
{
    cache_store_t *s = cache_store_new(3, 1 << 20);
    CHECK(s);
    cache_store_set_clock(s, s_fake_clock, NULL);
    s_fake_now = 5000;
    CHECK(cache_store_add_namespace(s, "q", "wtinylfu", CACHE_STORE_PRIO_HIGH) == 0);
    CHECK(cache_store_ns_set(s, "q", "a", "v", 1, 100) == 0);
    CHECK(cache_store_ns_set(s, "q", "b", "v", 1, 0) == 0);
    int64_t left = 0;
    uint8_t *v = NULL; size_t n = 0;
    CHECK(cache_store_ns_get(s, "q", "a", &v, &n, &left) == 1 && left == 100);
    free(v);
    s_fake_now = 5100;
    CHECK(!s_has_ns(s, "q", "a"));
    CHECK(s_ev(s, "q", CACHE_EVICT_EXPIRED) == 1);
    /* The sweep finds expired entries nobody reads. */
    CHECK(cache_store_ns_set(s, "q", "c", "v", 1, 10) == 0);
    s_fake_now += 10;
    CHECK(cache_store_expire(s, 1 << 20) == 1 && s_ev(s, "q", CACHE_EVICT_EXPIRED) == 2);
    /* An expired victim counts as expired, not as capacity. */
    CHECK(cache_store_ns_set(s, "q", "d", "v", 1, 5) == 0);
    CHECK(cache_store_ns_set(s, "q", "e", "v", 1, 0) == 0);
    s_fake_now += 10;
    CHECK(cache_store_ns_set(s, "q", "f", "v", 1, 0) == 0);       /* 4 > 3 */
    cache_store_ns_stats_t st;
    CHECK(cache_store_ns_stats(s, "q", &st) == 0 && st.entries == 3);
    CHECK(st.evictions[CACHE_EVICT_EXPIRED] + st.evictions[CACHE_EVICT_CAPACITY_ENTRIES] == 3);
    CHECK(s_has_ns(s, "q", "b"));
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
    char *m = cache_redis_prefix_match("*?[]\\");   /* every byte escaped: the longest form */
    CHECK(m && strcmp(m, "\\*\\?\\[\\]\\\\*") == 0);
    free(m);
    CHECK(cache_redis_new("http://x", 100, NULL) == NULL);
    CHECK(cache_redis_new("redis://:6379", 100, NULL) == NULL);
    CHECK(cache_redis_new("redis://h:99999", 100, NULL) == NULL);
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
    c.namespaces = "rooms:5m:medium, t:5m:high:lru:1k, users:30s:low";
    c.local_max_ttl_ms = 60000;
    return c;
}

static bool s_admin;   /* calls made as an administrator (Clear) */

/* Calls method with req; returns the status, *out gets the reply payload (caller frees). */
static int s_call(cache_app_t *app, const char *method, const ProtobufCMessage *req,
                  uint8_t **payload, size_t *plen, char *err, size_t errlen)
{
    size_t rl = protobuf_c_message_get_packed_size(req);
    uint8_t *rb = malloc(rl + 1);
    protobuf_c_message_pack(req, rb);
    Quaver__V1__Call call = QUAVER__V1__CALL__INIT;
    call.method = (char *) method;
    Quaver__V1__Caller caller = QUAVER__V1__CALLER__INIT;
    caller.username = "selftest";
    caller.admin = s_admin;
    call.caller = &caller;
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
        { "Rooms", "k1", 5,  0,  "unknown namespace 'Rooms' (known: rooms, t, users)" },
        { "ro-oms", "k1", 5, 0,  "unknown namespace 'ro-oms'" },
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

static int s_redis_cli(int port, const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "redis-cli -p %d %s >/dev/null 2>&1", port, args);
    return system(cmd);
}

/* One command line read by redis-cli from stdin, where "\x00" in double quotes is a byte:
 * what another client writes must carry the codec's header (cache_codec.h). */
static int s_redis_cli_line(int port, const char *line)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "printf '%%s\\n' '%s' | redis-cli -p %d >/dev/null 2>&1", line,
             port);
    return system(cmd);
}

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
    CHECK(s_redis_cli_line(port, "set quaver:t:b \"\\x00two\" PX 60000") == 0);
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
    CHECK(s_redis_cli_line(port, "mset quaver:t:c \"\\x00old\" quaver:t:d \"\\x00old\" "
                           "quaver:t:room:1 \"\\x00old\" quaver:t:room:2 \"\\x00old\" "
                           "quaver:t:other \"\\x00old\"") == 0);
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

/* Runs body against a cache app whose Redis tier is a fresh redis-server on a free port,
 * stopped afterwards; a skip (0) where redis-server is not installed. */
static int s_with_redis(const char *name, int (*body)(cache_app_t *app, int port))
{
    if (system("command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1") != 0) {
        printf("%s: skipped: redis-server is not installed\n", name);
        return 0;
    }
    int port = s_free_port();
    CHECK(port > 0);
    CHECK(s_sh(S_REDIS_START, port) == 0);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    int up = 0;
    for (int i = 0; i < 50 && !up; i++) {
        up = s_redis_cli(port, "ping") == 0;
        if (!up) usleep(100000);
    }
    cache_cfg_t cfg = s_cfg();
    cache_app_t *app = up ? cache_app_new(&cfg, url) : NULL;
    int rc = app ? body(app, port) : 1;
    cache_app_destroy(&app);
    s_sh(S_REDIS_STOP, port);
    return rc;
}

static int s_redis_live(void)
{
    return s_with_redis("redis_live", s_redis_live_body);
}

/* ---- namespaces, globs, the issue-3 methods, coherence ------------------------------------ */

static int s_ns_bad(const char *spec, const char *want)
{
    char err[256] = "";
    cache_namespaces_t *t = cache_namespaces_parse(spec, 300000, err, sizeof err);
    if (t) { fprintf(stderr, "spec '%s' accepted\n", spec); cache_namespaces_destroy(&t); return 1; }
    if (!strstr(err, want)) { fprintf(stderr, "spec '%s': error '%s' lacks '%s'\n", spec, err, want); return 1; }
    return 0;
}

static int s_namespace_table(void)
{
    char err[256];
    cache_namespaces_t *t = cache_namespaces_parse(CACHE_NAMESPACES_DEFAULT, 300000, err, sizeof err);
    CHECK(t && cache_namespaces_count(t) == 6);
    const cache_namespace_t *n = cache_namespaces_find(t, "room_state");
    CHECK(n && n->ttl_ms == 30000 && n->priority == CACHE_PRIO_HIGH && n->compress_min == 0);
    n = cache_namespaces_find(t, "user_data");
    CHECK(n && n->ttl_ms == 600000 && n->priority == CACHE_PRIO_MEDIUM && n->compress_min == 1024);
    n = cache_namespaces_find(t, "file_metadata");
    CHECK(n && n->ttl_ms == 3600000 && n->priority == CACHE_PRIO_LOW
          && !strcmp(n->policy, "wtinylfu"));
    /* The benchmark's recommendations (docs/BENCHMARKS.md). */
    CHECK(!strcmp(cache_namespaces_find(t, "room_state")->policy, "s3fifo"));
    CHECK(!strcmp(cache_namespaces_find(t, "track_queue")->policy, "s3fifo"));
    CHECK(!strcmp(cache_namespaces_find(t, "user_data")->policy, "wtinylfu"));
    CHECK(!strcmp(cache_namespaces_find(t, "api_response")->policy, "s3fifo"));
    CHECK(!strcmp(cache_namespaces_find(t, "db_query")->policy, "wtinylfu"));
    n = cache_namespaces_find(t, "db_query");
    CHECK(n && n->ttl_ms == 180000 && n->priority == CACHE_PRIO_HIGH && n->index == 5);
    CHECK(!cache_namespaces_find(t, "nope") && !cache_namespaces_find(t, ""));
    CHECK(!strcmp(cache_namespaces_list(t), "room_state, track_queue, user_data, file_metadata, "
                                              "api_response, db_query"));
    cache_namespaces_destroy(&t);
    CHECK(t == NULL);
    t = cache_namespaces_parse(" a:default:low , b:500ms:high:s3fifo:64 ,", 7000, err, sizeof err);
    CHECK(t && cache_namespaces_count(t) == 2);
    CHECK(cache_namespaces_find(t, "a")->ttl_ms == 7000);
    n = cache_namespaces_find(t, "b");
    CHECK(n->ttl_ms == 500 && !strcmp(n->policy, "s3fifo") && n->compress_min == 64);
    cache_namespaces_destroy(&t);
    CHECK(s_ns_bad("", "no namespace") == 0);
    CHECK(s_ns_bad("a:30s", "want name:ttl:priority") == 0);
    CHECK(s_ns_bad("a:30s:urgent", "priority 'urgent'") == 0);
    CHECK(s_ns_bad("a:30x:high", "ttl '30x'") == 0);
    CHECK(s_ns_bad("a:0s:high", "ttl '0s'") == 0);
    CHECK(s_ns_bad("a:30s:high:mru", "policy 'mru'") == 0);
    CHECK(s_ns_bad("a:30s:high:lru:lots", "compress 'lots'") == 0);
    CHECK(s_ns_bad("A-b:30s:high", "name 'A-b'") == 0);
    CHECK(s_ns_bad("a:1s:low,a:2s:high", "declared twice") == 0);
    CHECK(s_ns_bad("a:1s:low:lru:-:x", "more than 5 fields") == 0);
    return 0;
}

static int s_redis_glob(void)
{
    char err[256];
    struct { const char *p, *s; int want; } m[] = {
        { "room:*", "room:1", 1 }, { "room:*", "room:", 1 }, { "room:*", "roo", 0 },
        { "h?llo", "hello", 1 }, { "h?llo", "hllo", 0 }, { "h[ae]llo", "hallo", 1 },
        { "h[ae]llo", "hillo", 0 }, { "h[^e]llo", "hallo", 1 }, { "h[^e]llo", "hello", 0 },
        { "h[a-c]llo", "hbllo", 1 }, { "h[a-c]llo", "hdllo", 0 }, { "a\\*b", "a*b", 1 },
        { "a\\*b", "axb", 0 }, { "*:1", "room:1", 1 }, { "*:1", "room:12", 0 },
        { "a*b*c", "aXXbYYc", 1 }, { "a*b*c", "aXXbYY", 0 }, { "[\\]]x", "]x", 1 },
        { "**", "anything", 1 },
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        CHECK(cache_redis_glob_check(m[i].p, err, sizeof err) == 0);
        if (cache_redis_glob_match(m[i].p, m[i].s) != m[i].want) {
            fprintf(stderr, "glob '%s' on '%s': want %d\n", m[i].p, m[i].s, m[i].want);
            return 1;
        }
    }
    const char *bad[] = { "[abc", "abc\\", "x[a\\", "[^", "a[b]c[" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(cache_redis_glob_check(bad[i], err, sizeof err) == -1);
        CHECK(strstr(err, "pattern is not a glob: ") != NULL);
    }
    char lit[64];
    CHECK(cache_redis_glob_literal_prefix("room:\\*x*y", lit, sizeof lit) == 7 && !strcmp(lit, "room:*x"));
    CHECK(cache_redis_glob_literal_prefix("*", lit, sizeof lit) == 0 && lit[0] == 0);
    return 0;
}

/* Helpers for the method tests (namespace given). */
static int s_set_ns(cache_app_t *app, const char *ns, const char *k, const char *v)
{
    Quaver__V1__CacheSetRequest set = QUAVER__V1__CACHE_SET_REQUEST__INIT;
    set.namespace_ = (char *) ns; set.key = (char *) k;
    set.value.data = (uint8_t *) v; set.value.len = strlen(v);
    char err[256];
    return s_call(app, "Set", &set.base, NULL, NULL, err, sizeof err);
}

static int s_found_ns(cache_app_t *app, const char *ns, const char *k)
{
    Quaver__V1__CacheKey key = QUAVER__V1__CACHE_KEY__INIT;
    key.namespace_ = (char *) ns; key.key = (char *) k;
    uint8_t *p = NULL; size_t pl = 0;
    char err[256];
    if (s_call(app, "Get", &key.base, &p, &pl, err, sizeof err) != 200) { free(p); return -1; }
    Quaver__V1__CacheGetReply *g = quaver__v1__cache_get_reply__unpack(NULL, pl, p);
    free(p);
    int f = g ? g->found : -1;
    quaver__v1__cache_get_reply__free_unpacked(g, NULL);
    return f;
}

static int64_t s_removed(cache_app_t *app, const char *method, const ProtobufCMessage *req,
                         int *status, char *err, size_t errlen)
{
    uint8_t *p = NULL; size_t pl = 0;
    *status = s_call(app, method, req, &p, &pl, err, errlen);
    int64_t n = -1;
    if (*status == 200) {
        Quaver__V1__CacheCountReply *c = quaver__v1__cache_count_reply__unpack(NULL, pl, p);
        if (c) n = c->removed;
        quaver__v1__cache_count_reply__free_unpacked(c, NULL);
    }
    free(p);
    return n;
}

static int s_server_methods(void)
{
    cache_cfg_t cfg = s_cfg();
    cache_app_t *app = cache_app_new(&cfg, NULL);
    CHECK(app);
    char err[512];
    int st = 0;
    CHECK(s_set_ns(app, "rooms", "k1", "v1") == 200 && s_set_ns(app, "rooms", "k2", "v2") == 200);
    /* MGet: one reply per key, in order. */
    Quaver__V1__CacheMGetRequest mg = QUAVER__V1__CACHE_MGET_REQUEST__INIT;
    char *keys[] = { "k2", "nope", "k1" };
    mg.namespace_ = "rooms"; mg.keys = keys; mg.n_keys = 3;
    uint8_t *p = NULL; size_t pl = 0;
    CHECK(s_call(app, "MGet", &mg.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__CacheMGetReply *mr = quaver__v1__cache_mget_reply__unpack(NULL, pl, p);
    free(p);
    CHECK(mr && mr->n_values == 3);
    CHECK(mr->values[0]->found && mr->values[0]->value.len == 2 && !memcmp(mr->values[0]->value.data, "v2", 2));
    CHECK(!mr->values[1]->found);
    CHECK(mr->values[2]->found && !memcmp(mr->values[2]->value.data, "v1", 2));
    CHECK(!strcmp(mr->values[0]->tier, "local"));
    quaver__v1__cache_mget_reply__free_unpacked(mr, NULL);
    /* MGet bad input: 400 naming the key. */
    char *badkeys[] = { "ok", "a_key_that_is_too_long" };
    mg.keys = badkeys; mg.n_keys = 2;
    CHECK(s_call(app, "MGet", &mg.base, NULL, NULL, err, sizeof err) == 400 && strstr(err, "keys[1]"));
    mg.namespace_ = "nope"; mg.keys = keys; mg.n_keys = 1;
    CHECK(s_call(app, "MGet", &mg.base, NULL, NULL, err, sizeof err) == 400);
    CHECK(strstr(err, "unknown namespace 'nope'") && strstr(err, "known: rooms, t, users"));
    /* InvalidatePattern: what matches goes, the rest stays (here: the other namespace, and
     * keys outside the pattern's literal prefix). */
    CHECK(s_set_ns(app, "t", "room:1", "a") == 200 && s_set_ns(app, "t", "room:22", "b") == 200);
    CHECK(s_set_ns(app, "t", "user:1", "c") == 200 && s_set_ns(app, "users", "room:1", "d") == 200);
    Quaver__V1__CachePatternRequest pat = QUAVER__V1__CACHE_PATTERN_REQUEST__INIT;
    pat.namespace_ = "t"; pat.pattern = "room:*";
    CHECK(s_removed(app, "InvalidatePattern", &pat.base, &st, err, sizeof err) == 2 && st == 200);
    CHECK(s_found_ns(app, "t", "room:1") == 0 && s_found_ns(app, "t", "room:22") == 0);
    CHECK(s_found_ns(app, "t", "user:1") == 1 && s_found_ns(app, "users", "room:1") == 1);
    /* Bad globs and unknown namespaces: 400, nothing removed. */
    const char *bad[] = { "room:[1", "room:\\" };
    for (size_t i = 0; i < 2; i++) {
        pat.pattern = (char *) bad[i];
        CHECK(s_removed(app, "InvalidatePattern", &pat.base, &st, err, sizeof err) == -1 && st == 400);
        CHECK(strstr(err, "pattern is not a glob: ") != NULL);
    }
    pat.pattern = "";
    CHECK(s_removed(app, "InvalidatePattern", &pat.base, &st, err, sizeof err) == -1 && st == 400);
    pat.namespace_ = "zz"; pat.pattern = "*";
    CHECK(s_removed(app, "InvalidatePattern", &pat.base, &st, err, sizeof err) == -1 && st == 400);
    CHECK(s_found_ns(app, "t", "user:1") == 1);
    /* Clear: admin only; one namespace, then all. */
    Quaver__V1__CacheClearRequest cl = QUAVER__V1__CACHE_CLEAR_REQUEST__INIT;
    cl.namespace_ = "rooms";
    s_admin = false;
    CHECK(s_removed(app, "Clear", &cl.base, &st, err, sizeof err) == -1 && st == 403);
    s_admin = true;
    CHECK(s_found_ns(app, "rooms", "k1") == 1);
    CHECK(s_removed(app, "Clear", &cl.base, &st, err, sizeof err) == 2 && st == 200);
    CHECK(s_found_ns(app, "rooms", "k1") == 0 && s_found_ns(app, "t", "user:1") == 1);
    cl.namespace_ = "what";
    CHECK(s_removed(app, "Clear", &cl.base, &st, err, sizeof err) == -1 && st == 400);
    CHECK(strstr(err, "unknown namespace 'what'"));
    cl.namespace_ = "";
    CHECK(s_removed(app, "Clear", &cl.base, &st, err, sizeof err) == 2 && st == 200);
    CHECK(s_found_ns(app, "t", "user:1") == 0 && s_found_ns(app, "users", "room:1") == 0);
    s_admin = false;
    /* Stats: per-namespace figures as ns.<name>.<stat>, global ones plain. */
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    CHECK(s_call(app, "Stats", &e.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__StatsReply *sr = quaver__v1__stats_reply__unpack(NULL, pl, p);
    free(p);
    CHECK(sr);
    double hits = -1, misses = -1, rate = -1, entries = -1;
    for (size_t i = 0; i < sr->n_stats; i++) {
        const char *n = sr->stats[i]->name;
        if (!strcmp(n, "ns.rooms.hits")) hits = sr->stats[i]->value;
        if (!strcmp(n, "ns.rooms.misses")) misses = sr->stats[i]->value;
        if (!strcmp(n, "ns.rooms.hit_rate")) rate = sr->stats[i]->value;
        if (!strcmp(n, "entries")) entries = sr->stats[i]->value;
    }
    quaver__v1__stats_reply__free_unpacked(sr, NULL);
    /* rooms: MGet 2 hits + 1 miss, then one Get hit before and one miss after the Clear */
    CHECK(hits == 3 && misses == 2 && rate > 0.59 && rate < 0.61 && entries == 0);
    cache_app_destroy(&app);
    return 0;
}

/* One stat of the Stats reply, or -1 when absent. */
static double s_stat_of(cache_app_t *app, const char *name)
{
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    uint8_t *p = NULL; size_t pl = 0;
    char err[256];
    double v = -1;
    if (s_call(app, "Stats", &e.base, &p, &pl, err, sizeof err) == 200) {
        Quaver__V1__StatsReply *sr = quaver__v1__stats_reply__unpack(NULL, pl, p);
        for (size_t i = 0; sr && i < sr->n_stats; i++)
            if (!strcmp(sr->stats[i]->name, name)) v = sr->stats[i]->value;
        quaver__v1__stats_reply__free_unpacked(sr, NULL);
    }
    free(p);
    return v;
}

/* The server on the namespace-aware store: namespaces are separate, priorities decide who
 * gives room, an invalidation names (ns, key) through the Redis key, and InvalidatePattern's
 * local side removes exactly what the glob matches. */
static int s_server_wiring(void)
{
    cache_cfg_t cfg = s_cfg();
    cfg.local_max_entries = 4;
    cfg.namespaces = "hi:5m:high:s3fifo, lo:5m:low:wtinylfu, t:5m:medium";
    cache_app_t *app = cache_app_new(&cfg, NULL);
    CHECK(app);
    char err[256];
    int st = 0;
    /* A Set in one namespace does not show in another. */
    CHECK(s_set_ns(app, "t", "k", "v") == 200);
    CHECK(s_found_ns(app, "t", "k") == 1 && s_found_ns(app, "hi", "k") == 0
          && s_found_ns(app, "lo", "k") == 0);
    CHECK(s_stat_of(app, "ns.t.entries") == 1 && s_stat_of(app, "ns.t.bytes") == 3);  /* k, 0, v */
    CHECK(s_stat_of(app, "ns.hi.entries") == 0);
    /* Priority: with 4 entries in all, "hi" takes its room from "lo" and then from "t". */
    CHECK(s_set_ns(app, "lo", "a", "1") == 200 && s_set_ns(app, "lo", "b", "2") == 200);
    CHECK(s_stat_of(app, "ns.lo.entries") == 2);
    CHECK(s_set_ns(app, "hi", "x", "1") == 200 && s_set_ns(app, "hi", "y", "2") == 200);
    CHECK(s_set_ns(app, "hi", "z", "3") == 200);
    CHECK(s_stat_of(app, "ns.lo.entries") == 0 && s_stat_of(app, "ns.lo.evictions_priority") == 2);
    CHECK(s_stat_of(app, "ns.t.entries") == 1 && s_stat_of(app, "ns.hi.entries") == 3);
    CHECK(s_set_ns(app, "hi", "w", "4") == 200);
    CHECK(s_stat_of(app, "ns.t.entries") == 0 && s_stat_of(app, "ns.t.evictions_priority") == 1);
    CHECK(s_found_ns(app, "hi", "x") == 1 && s_found_ns(app, "hi", "w") == 1);
    CHECK(s_stat_of(app, "ns.hi.evictions_capacity_entries") == 0);
    CHECK(s_set_ns(app, "hi", "v", "5") == 200);   /* now hi gives room to itself */
    CHECK(s_stat_of(app, "ns.hi.evictions_capacity_entries") == 1);
    /* Empty "hi": with 4 entries in all, "t" would otherwise give its own room below. */
    Quaver__V1__CacheClearRequest cl = QUAVER__V1__CACHE_CLEAR_REQUEST__INIT;
    cl.namespace_ = "hi";
    s_admin = true;
    CHECK(s_removed(app, "Clear", &cl.base, &st, err, sizeof err) == 4 && st == 200);
    s_admin = false;
    CHECK(s_stat_of(app, "ns.hi.entries") == 0);
    /* The invalidation key mapping. */
    char ns[CACHE_NS_NAME_MAX + 1];
    const char *k = NULL;
    size_t kl = 0;
    CHECK(cache_server_split_key("quaver:hi:a:b", 13, ns, sizeof ns, &k, &kl) == 0);
    CHECK(!strcmp(ns, "hi") && kl == 3 && !memcmp(k, "a:b", 3));
    CHECK(cache_server_split_key("quaver:hi:", 10, ns, sizeof ns, &k, &kl) == 0 && kl == 0);
    CHECK(cache_server_split_key("quaver:hi:a", 9, ns, sizeof ns, &k, &kl) == -1);  /* "quaver:h" */
    CHECK(cache_server_split_key("quaver::a", 9, ns, sizeof ns, &k, &kl) == -1);
    CHECK(cache_server_split_key("quaver:hi", 9, ns, sizeof ns, &k, &kl) == -1);
    CHECK(cache_server_split_key("quavex:hi:a", 11, ns, sizeof ns, &k, &kl) == -1);
    CHECK(cache_server_split_key("quaver:hi:a", 11, ns, 2, &k, &kl) == -1);
    CHECK(s_set_ns(app, "t", "a:b", "1") == 200 && s_set_ns(app, "hi", "a:b", "2") == 200);
    CHECK(s_found_ns(app, "t", "a:b") == 1 && s_found_ns(app, "hi", "a:b") == 1);
    cache_app_on_inval_key(app, "quaver:nope:a:b", 15);        /* not ours: ignored */
    cache_app_on_inval_key(app, "quaver:t:a:bXYZ", 12);        /* len counts, not the NUL */
    CHECK(s_found_ns(app, "t", "a:b") == 0 && s_found_ns(app, "hi", "a:b") == 1);
    cache_app_on_inval_key(app, "quaver:hi:a:b", 13);
    CHECK(s_found_ns(app, "hi", "a:b") == 0);
    /* InvalidatePattern's local side is exact: "room:1x" shares the literal prefix but does
     * not match "room:?", and stays a local hit. */
    CHECK(s_set_ns(app, "t", "room:1", "a") == 200 && s_set_ns(app, "t", "room:1x", "b") == 200);
    Quaver__V1__CachePatternRequest pat = QUAVER__V1__CACHE_PATTERN_REQUEST__INIT;
    pat.namespace_ = "t"; pat.pattern = "room:?";
    CHECK(s_removed(app, "InvalidatePattern", &pat.base, &st, err, sizeof err) == 1 && st == 200);
    CHECK(s_found_ns(app, "t", "room:1") == 0 && s_found_ns(app, "t", "room:1x") == 1);
    cache_app_destroy(&app);
    return 0;
}

/* The stored form: raw and zlib round trips, the threshold, and every kind of bad input
 * refused without a crash. */
static int s_codec(void)
{
    uint8_t *e = NULL, *d = NULL;
    size_t el = 0, dl = 0;
    int z = -1;
    CHECK(cache_codec_encode("hello", 5, 0, &e, &el, &z) == 0 && z == 0 && el == 6 && e[0] == 0);
    CHECK(cache_codec_decode(e, el, 100, &d, &dl) == 0 && dl == 5 && !memcmp(d, "hello", 5));
    free(e); free(d);
    CHECK(cache_codec_encode("", 0, 1, &e, &el, &z) == 0 && z == 0 && el == 1);
    CHECK(cache_codec_decode(e, el, 100, &d, &dl) == 0 && d && dl == 0);
    free(e); free(d);
    static uint8_t big[4000], rnd[2000];
    memset(big, 'a', sizeof big);
    srand(3);
    for (size_t i = 0; i < sizeof rnd; i++) rnd[i] = (uint8_t) rand();
    CHECK(cache_codec_encode(big, 1000, 1024, &e, &el, &z) == 0 && z == 0 && el == 1001);
    free(e);
    CHECK(cache_codec_encode(big, sizeof big, 1024, &e, &el, &z) == 0 && z == 1 && el < 100);
    CHECK(e[0] == 1 && e[3] == (4000 >> 8) && e[4] == (4000 & 0xff));
    CHECK(cache_codec_decode(e, el, sizeof big, &d, &dl) == 0 && dl == sizeof big);
    CHECK(!memcmp(d, big, sizeof big));
    free(d);
    /* Corrupt: over the caller's limit, truncated, a flipped byte, a wrong declared length. */
    CHECK(cache_codec_decode(e, el, sizeof big - 1, &d, &dl) == -1);
    CHECK(cache_codec_decode(e, el - 1, sizeof big, &d, &dl) == -1);
    CHECK(cache_codec_decode(e, 6, sizeof big, &d, &dl) == -1);
    e[el / 2] ^= 0x55;
    CHECK(cache_codec_decode(e, el, sizeof big, &d, &dl) == -1);
    e[el / 2] ^= 0x55;
    e[4]--;                                 /* declares one byte less than the stream holds */
    CHECK(cache_codec_decode(e, el, sizeof big, &d, &dl) == -1);
    e[4] += 2;                              /* one byte more */
    CHECK(cache_codec_decode(e, el, sizeof big, &d, &dl) == -1);
    free(e);
    /* Incompressible: stored raw even above the threshold. */
    CHECK(cache_codec_encode(rnd, sizeof rnd, 1024, &e, &el, &z) == 0 && z == 0 && el == 2001);
    free(e);
    const uint8_t bad1[] = { 0x02, 'x' }, bad2[] = { 0x01, 0, 0, 0 }, bad3[] = { 'v', '2' };
    CHECK(cache_codec_decode(bad1, 0, 100, &d, &dl) == -1);
    CHECK(cache_codec_decode(bad1, sizeof bad1, 100, &d, &dl) == -1);
    CHECK(cache_codec_decode(bad2, sizeof bad2, 100, &d, &dl) == -1);
    CHECK(cache_codec_decode(bad3, sizeof bad3, 100, &d, &dl) == -1);
    return 0;
}

/* Through the server: a value over its namespace's threshold is stored compressed in the
 * local tier and read back whole; the ratio is a stat; a corrupt stored value is a miss and
 * is removed, never a crash. */
static int s_server_compression(void)
{
    cache_cfg_t cfg = s_cfg();
    cfg.max_value_bytes = 1 << 20;
    cache_app_t *app = cache_app_new(&cfg, NULL);
    CHECK(app);
    static char big[4001];
    memset(big, 'q', 4000);
    CHECK(s_set_ns(app, "t", "big", big) == 200);      /* t compresses from 1k */
    CHECK(s_set_ns(app, "rooms", "big", big) == 200);  /* rooms does not compress */
    Quaver__V1__CacheKey key = QUAVER__V1__CACHE_KEY__INIT;
    key.namespace_ = "t"; key.key = "big";
    uint8_t *p = NULL; size_t pl = 0;
    char err[256];
    CHECK(s_call(app, "Get", &key.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__CacheGetReply *g = quaver__v1__cache_get_reply__unpack(NULL, pl, p);
    free(p);
    CHECK(g && g->found && !strcmp(g->tier, "local") && g->value.len == 4000);
    CHECK(!memcmp(g->value.data, big, 4000));
    quaver__v1__cache_get_reply__free_unpacked(g, NULL);
    CHECK(s_stat_of(app, "ns.t.values_compressed") == 1);
    CHECK(s_stat_of(app, "ns.t.compression_ratio") > 10);
    CHECK(s_stat_of(app, "ns.t.bytes") == 3 + 4001);   /* locally raw: cache_codec_local_form */
    CHECK(s_stat_of(app, "ns.rooms.values_compressed") == 0);
    CHECK(s_stat_of(app, "ns.rooms.compression_ratio") < 1.0);   /* 4000 / 4001 */
    CHECK(s_stat_of(app, "ns.rooms.bytes") == 3 + 4001);
    /* Corrupt values in the local tier (only a bug could put them there): a miss, removed. */
    cache_store_t *store = cache_app_store(app);
    const uint8_t junk[] = { 0x01, 0, 0, 0, 9, 'j', 'u', 'n', 'k' }, nohdr[] = { 'x' };
    CHECK(cache_store_ns_set(store, "t", "j", junk, sizeof junk, 0) == 0);
    CHECK(cache_store_ns_set(store, "t", "h", nohdr, sizeof nohdr, 0) == 0);
    CHECK(cache_store_ns_set(store, "t", "ok", "\0fine", 5, 0) == 0);
    CHECK(s_found_ns(app, "t", "j") == 0 && s_found_ns(app, "t", "h") == 0);
    CHECK(s_found_ns(app, "t", "ok") == 1);
    CHECK(s_stat_of(app, "ns.t.corrupt_values") == 2);
    CHECK(s_stat_of(app, "ns.t.entries") == 2);   /* big and ok */
    Quaver__V1__CacheMGetRequest mg = QUAVER__V1__CACHE_MGET_REQUEST__INIT;
    char *keys[] = { "ok", "j", "big" };
    CHECK(cache_store_ns_set(store, "t", "j", junk, sizeof junk, 0) == 0);
    mg.namespace_ = "t"; mg.keys = keys; mg.n_keys = 3;
    CHECK(s_call(app, "MGet", &mg.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__CacheMGetReply *mr = quaver__v1__cache_mget_reply__unpack(NULL, pl, p);
    free(p);
    CHECK(mr && mr->n_values == 3 && mr->values[0]->found && !mr->values[1]->found);
    CHECK(mr->values[0]->value.len == 4 && !memcmp(mr->values[0]->value.data, "fine", 4));
    CHECK(mr->values[2]->found && mr->values[2]->value.len == 4000);
    quaver__v1__cache_mget_reply__free_unpacked(mr, NULL);
    CHECK(s_stat_of(app, "ns.t.corrupt_values") == 3);
    cache_app_destroy(&app);
    return 0;
}

/* Version rules on their own: a reply whose key was bumped or flushed after its ticket is
 * not committed. */
static void s_mark(void *ctx) { (*(int *) ctx)++; }

static int s_tracking_versions(void)
{
    cache_tracking_t *t = cache_tracking_new((cache_tracking_sink_t){ NULL, NULL, NULL });
    CHECK(t);
    int ran = 0;
    cache_ticket_t a = cache_tracking_ticket(t, "quaver:t:a");
    CHECK(cache_tracking_commit(t, "quaver:t:a", a, s_mark, &ran) == 1 && ran == 1);
    a = cache_tracking_ticket(t, "quaver:t:a");
    (void) cache_tracking_bump(t, "quaver:t:a");          /* an invalidation overtook the GET */
    CHECK(cache_tracking_commit(t, "quaver:t:a", a, s_mark, &ran) == 0 && ran == 1);
    cache_ticket_t b = cache_tracking_ticket(t, "quaver:t:b");
    a = cache_tracking_bump(t, "quaver:t:a");              /* a Set's own ticket */
    CHECK(cache_tracking_commit(t, "quaver:t:b", b, s_mark, &ran) == 1 && ran == 2);
    cache_tracking_bump_all(t);                            /* a flush voids everything */
    CHECK(cache_tracking_commit(t, "quaver:t:a", a, s_mark, &ran) == 0 && ran == 2);
    cache_tracking_stats_t ts;
    cache_tracking_stats(t, &ts);
    CHECK(ts.stale_commits == 2);
    cache_tracking_destroy(&t);
    CHECK(t == NULL);
    return 0;
}

/* Polls Get until it returns want (or a miss when want is NULL); returns the ms it took or
 * -1 after 3 s. Never accepts a value other than want or the old one. */
static int64_t s_wait_value(cache_app_t *app, const char *k, const char *want, const char *old)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 3000; i++) {
        char tier[16], val[64];
        int f = s_get_tier(app, k, tier, val);
        if (f < 0) return -1;
        bool ok = want ? (f == 1 && !strcmp(val, want)) : f == 0;
        if (ok) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            return (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        }
        if (f == 1 && old && strcmp(val, old) != 0) return -1;
        usleep(1000);
    }
    return -1;
}

static int s_redis_coherence_body(cache_app_t *app, int port)
{
    char tier[16], val[64];
    CHECK(s_set_kv(app, "a", "one") == 200);
    CHECK(s_get_tier(app, "a", tier, val) == 1 && !strcmp(tier, "local") && !strcmp(val, "one"));
    /* Changed by another client: gone from the local tier within 100 ms. */
    CHECK(s_redis_cli_line(port, "set quaver:t:a \"\\x00two\"") == 0);
    int64_t ms = s_wait_value(app, "a", "two", "one");
    printf("redis_coherence: external SET seen after %lld ms\n", (long long) ms);
    CHECK(ms >= 0 && ms < 100);
    CHECK(s_get_tier(app, "a", tier, val) == 1 && !strcmp(tier, "local"));  /* cached again */
    /* Deleted by another client. */
    CHECK(s_redis_cli(port, "del quaver:t:a") == 0);
    CHECK(s_wait_value(app, "a", NULL, "two") >= 0);
    /* FLUSHALL: a nil invalidation flushes the local tier. */
    CHECK(s_set_kv(app, "b", "x") == 200);
    CHECK(s_redis_cli(port, "flushall") == 0);
    CHECK(s_wait_value(app, "b", NULL, "x") >= 0);
    /* The invalidation connection is killed while Redis stays up: local tier flushed, so a
     * value changed meanwhile is not served stale; both connections come back. */
    CHECK(s_set_kv(app, "c", "old") == 200);
    CHECK(s_get_tier(app, "c", tier, val) == 1 && !strcmp(tier, "local"));
    CHECK(s_redis_cli(port, "client kill type pubsub") == 0);
    CHECK(s_redis_cli_line(port, "set quaver:t:c \"\\x00new\"") == 0);
    for (int i = 0; i < 60 && !cache_redis_up_for_test(app); i++) { cache_app_tick(app); usleep(50000); }
    for (int i = 0; i < 20; i++) { cache_app_tick(app); usleep(50000); }
    CHECK(cache_redis_up_for_test(app));
    CHECK(s_wait_value(app, "c", "new", "old") >= 0);
    /* And invalidations flow again on the new connection. */
    CHECK(s_redis_cli_line(port, "set quaver:t:c \"\\x00newer\"") == 0);
    CHECK(s_wait_value(app, "c", "newer", "new") >= 0);
    /* MGet through Redis: found ones from Redis, in order, with one round trip. */
    CHECK(s_redis_cli_line(port, "mset quaver:t:m1 \"\\x001\" quaver:t:m2 \"\\x002\"") == 0);
    Quaver__V1__CacheMGetRequest mg = QUAVER__V1__CACHE_MGET_REQUEST__INIT;
    char *keys[] = { "m1", "m0", "m2" };
    mg.namespace_ = "t"; mg.keys = keys; mg.n_keys = 3;
    uint8_t *p = NULL; size_t pl = 0;
    char err[256];
    CHECK(s_call(app, "MGet", &mg.base, &p, &pl, err, sizeof err) == 200);
    Quaver__V1__CacheMGetReply *mr = quaver__v1__cache_mget_reply__unpack(NULL, pl, p);
    free(p);
    CHECK(mr && mr->n_values == 3 && mr->values[0]->found && !mr->values[1]->found && mr->values[2]->found);
    CHECK(!strcmp(mr->values[2]->tier, "redis") && mr->values[2]->value.data[0] == '2');
    quaver__v1__cache_mget_reply__free_unpacked(mr, NULL);
    CHECK(s_get_tier(app, "m1", tier, val) == 1 && !strcmp(tier, "local"));
    /* InvalidatePattern reaches Redis (SCAN MATCH + UNLINK) and keeps the others. */
    CHECK(s_redis_cli_line(port, "mset quaver:t:p:1 \"\\x00a\" quaver:t:p:2 \"\\x00b\" "
                                "quaver:t:q:1 \"\\x00c\"") == 0);
    Quaver__V1__CachePatternRequest pat = QUAVER__V1__CACHE_PATTERN_REQUEST__INIT;
    pat.namespace_ = "t"; pat.pattern = "p:?";
    int st = 0;
    CHECK(s_removed(app, "InvalidatePattern", &pat.base, &st, err, sizeof err) == 2);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "redis-cli -p %d exists quaver:t:p:1 quaver:t:p:2 quaver:t:q:1 | grep -q '^1$'", port);
    CHECK(system(cmd) == 0);
    /* A value another client wrote without a valid header (zlib declaring 9 bytes, then no
     * zlib stream; or no header byte at all) reads as a miss and is deleted from Redis. */
    CHECK(s_redis_cli_line(port, "mset quaver:t:bad \"\\x01\\x00\\x00\\x00\\x09junk\" "
                                 "quaver:t:bare plain") == 0);
    CHECK(s_get_tier(app, "bad", tier, val) == 0 && s_get_tier(app, "bare", tier, val) == 0);
    snprintf(cmd, sizeof cmd, "redis-cli -p %d exists quaver:t:bad quaver:t:bare | grep -q '^0$'",
             port);
    CHECK(system(cmd) == 0);
    return 0;
}

static int s_redis_coherence(void)
{
    if (s_tracking_versions() != 0) return 1;
    return s_with_redis("redis_coherence", s_redis_coherence_body);
}

/* msgpack values: good ones pass, bad ones and allocation bombs are refused by name, and
 * through Set a bad one is a 400 that stores nothing. */
static int s_msgpack_check(void)
{
    static const struct { const char *bytes; size_t len; } good[] = {
        { "\x01", 1 }, { "\xc0", 1 }, { "\x90", 1 }, { "\x80", 1 }, { "\xa3" "abc", 4 },
        { "\x82\xa1" "a\x01\xa1" "b\x92\x02\xc3", 9 },                  /* {a:1, b:[2,true]} */
        { "\xcb\x3f\xf0\0\0\0\0\0\0", 9 }, { "\xd4\x01\x02", 3 },   /* double, fixext 1 */
        { "\xc7\x00\x05", 3 }, { "\xc4\x02xy", 4 }, { "\xdc\x00\x01\x07", 4 },
    };
    char err[256];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (cache_msgpack_check(good[i].bytes, good[i].len, err, sizeof err) != 0) {
            fprintf(stderr, "good[%zu] refused: %s\n", i, err);
            return 1;
        }
    static const struct { const char *bytes; size_t len; const char *why; } bad[] = {
        { "", 0, "empty" }, { "\xc1", 1, "0xc1" }, { "\x01\x02", 2, "1 trailing bytes" },
        { "\x92\x01", 2, "declares 2 elements but 1 bytes" }, { "\xd9", 1, "truncated" }, { "\xa5" "ab", 3, "declares 5 bytes" },
        { "\xcd\x01", 2, "declares 2 bytes" },
        /* bombs: a few bytes that would make msgpack-c allocate gigabytes */
        { "\xdd\xff\xff\xff\xff", 5, "declares 4294967295 elements" },
        { "\xdf\xff\xff\xff\xff\x01\x01", 7, "declares 4294967295 pairs" },
        { "\xc9\xff\xff\xff\xff\x01", 6, "declares 4294967296 bytes" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        if (cache_msgpack_check(bad[i].bytes, bad[i].len, err, sizeof err) == 0
            || !strstr(err, bad[i].why)) {
            fprintf(stderr, "bad[%zu]: '%s' does not say '%s'\n", i, err, bad[i].why);
            return 1;
        }
    }
    /* Nesting: 32 arrays deep is msgpack-c's limit and ours; 33 is refused. */
    uint8_t deep[40];
    memset(deep, 0x91, sizeof deep);
    deep[32] = 0x01;
    CHECK(cache_msgpack_check(deep, 33, err, sizeof err) == 0);
    deep[32] = 0x91; deep[33] = 0x01;
    CHECK(cache_msgpack_check(deep, 34, err, sizeof err) != 0 && strstr(err, "deeper than 32"));
    /* Too many objects in all: 1 << 20 + 1 nil in one array. */
    size_t n = CACHE_MSGPACK_MAX_OBJECTS + 5;
    uint8_t *many = malloc(n);
    CHECK(many);
    memset(many, 0xc0, n);
    many[0] = 0xdd; many[1] = 0; many[2] = 0x10; many[3] = 0; many[4] = 0;   /* 1 << 20 */
    CHECK(cache_msgpack_check(many, n, err, sizeof err) != 0 && strstr(err, "more than"));
    free(many);

    /* Through Set: 200 for a good value, 400 naming the problem and nothing stored else. */
    cache_cfg_t cfg = s_cfg();
    cache_app_t *app = cache_app_new(&cfg, NULL);
    CHECK(app);
    Quaver__V1__CacheSetRequest set = QUAVER__V1__CACHE_SET_REQUEST__INIT;
    set.namespace_ = "rooms"; set.key = "m"; set.msgpack = true;
    set.value.data = (uint8_t *) "\x81\xa1" "a\x01"; set.value.len = 4;
    CHECK(s_call(app, "Set", &set.base, NULL, NULL, err, sizeof err) == 200);
    CHECK(s_found_ns(app, "rooms", "m") == 1);
    set.key = "bomb";
    set.value.data = (uint8_t *) "\xdd\xff\xff\xff\xff"; set.value.len = 5;
    CHECK(s_call(app, "Set", &set.base, NULL, NULL, err, sizeof err) == 400);
    CHECK(strstr(err, "value is not one msgpack object: array at byte 0 declares"));
    CHECK(s_found_ns(app, "rooms", "bomb") == 0);
    set.msgpack = false;   /* the same bytes as plain bytes are fine */
    CHECK(s_call(app, "Set", &set.base, NULL, NULL, err, sizeof err) == 200);
    cache_app_destroy(&app);
    return 0;
}

/* ---- snapshots ---------------------------------------------------------------------------- */

static cache_store_t *s_snap_store(void)
{
    cache_store_t *s = cache_store_new(200, 1 << 20);
    if (s && (cache_store_add_namespace(s, "w", "wtinylfu", CACHE_STORE_PRIO_HIGH) != 0
              || cache_store_add_namespace(s, "l", "lru", CACHE_STORE_PRIO_LOW) != 0))
        cache_store_destroy(&s);
    if (s) cache_store_set_clock(s, s_fake_clock, NULL);
    return s;
}

static void s_snap_path(char *buf, size_t len, const char *what)
{
    snprintf(buf, len, "/tmp/quaver-cache-selftest-%d/%s/snapshot.bin", (int) getpid(), what);
}

/* Write, load into a fresh store: the same values, TTLs within tolerance, equal sketch
 * estimates; entries whose TTL passed while "down" are skipped. */
static int s_snapshot_round_trip(void)
{
    s_fake_now = 1000000;
    cache_store_t *a = s_snap_store();
    CHECK(a);
    char key[32], val[64];
    for (int i = 0; i < 120; i++) {
        snprintf(key, sizeof key, "k%d", i);
        val[0] = 0;   /* the codec's raw header */
        int vl = snprintf(val + 1, sizeof val - 1, "value-%d", i);
        const char *ns = i % 2 ? "w" : "l";
        /* k0..k9 live 2 s, the rest 60 s + i ms, k7 (lru) forever */
        int64_t ttl = i == 7 ? 0 : i < 10 ? 2000 : 60000 + i;
        CHECK(cache_store_ns_set(a, ns, key, val, (size_t) vl + 1, ttl) == 0);
    }
    for (int r = 0; r < 5; r++)        /* some keys of "w" get hot */
        for (int i = 1; i < 40; i += 2) {
            snprintf(key, sizeof key, "k%d", i);
            uint8_t *v = NULL; size_t vl = 0;
            (void) cache_store_ns_get(a, "w", key, &v, &vl, NULL);
            free(v);
        }
    char path[256], err[512];
    s_snap_path(path, sizeof path, "rt");
    size_t written = 0;
    CHECK(cache_snapshot_write(a, path, CACHE_SNAPSHOT_MAX_ENTRIES, &written, err, sizeof err) == 0);
    cache_store_stats_t sa;
    cache_store_stats(a, &sa);
    CHECK(written == sa.entries && written > 0);
    int missing = -1;
    cache_snapshot_t *snap = cache_snapshot_read(path, 1 << 26, &missing, err, sizeof err);
    if (!snap) fprintf(stderr, "%s\n", err);
    CHECK(snap && cache_snapshot_entries(snap) == written);

    cache_store_t *b = s_snap_store();
    CHECK(b);
    cache_snapshot_stats_t st;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    /* 5 s later: the 2 s entries are gone (k7 never expires). */
    cache_snapshot_apply(snap, b, now + 5000, cache_snapshot_load_direct, b, &st);
    cache_snapshot_destroy(&snap);
    if (st.expired != 9 || st.loaded != written - 9 || st.sketches != 1 || st.unknown != 0)
        fprintf(stderr, "expired %zu loaded %zu of %zu sketches %zu unknown %zu\n", st.expired,
                st.loaded, written, st.sketches, st.unknown);
    CHECK(st.expired == 9 && st.loaded == written - 9 && st.sketches == 1 && st.unknown == 0);
    /* The sketch came back as it was written: every estimate is the same (before any get below
     * touches either store). */
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof key, "k%d", i);
        CHECK(cache_store_ns_frequency(a, "w", key) == cache_store_ns_frequency(b, "w", key));
    }
    for (int i = 0; i < 120; i++) {
        snprintf(key, sizeof key, "k%d", i);
        const char *ns = i % 2 ? "w" : "l";
        uint8_t *va = NULL, *vb = NULL; size_t la = 0, lb = 0;
        int64_t ta = 0, tb = 0;
        int ha = cache_store_ns_get(a, ns, key, &va, &la, &ta);
        int hb = cache_store_ns_get(b, ns, key, &vb, &lb, &tb);
        if (i < 10 && i != 7) CHECK(hb == 0);
        else if (ha == 1) {
            CHECK(hb == 1 && la == lb && memcmp(va, vb, la) == 0);
            if (ta < 0) CHECK(tb < 0);
            else CHECK(tb <= ta - 5000 + 500 && tb >= ta - 5000 - 2000);
        }
        free(va); free(vb);
    }
    CHECK(cache_store_ns_frequency(b, "w", "k1") >= 5);
    CHECK(cache_store_ns_frequency(b, "l", "k1") == -1);
    /* Sketches only (Redis down): no entries, the sketch still restored. */
    snap = cache_snapshot_read(path, 1 << 26, &missing, err, sizeof err);
    CHECK(snap);
    cache_store_t *c = s_snap_store();
    CHECK(c);
    cache_snapshot_apply(snap, c, now, NULL, NULL, &st);
    cache_snapshot_destroy(&snap);
    cache_store_stats_t sc;
    cache_store_stats(c, &sc);
    CHECK(sc.entries == 0 && st.sketches == 1 && st.loaded == 0);
    CHECK(cache_store_ns_frequency(c, "w", "k3") >= 5);
    cache_store_destroy(&a); cache_store_destroy(&b); cache_store_destroy(&c);
    unlink(path);
    return 0;
}

static int s_write_file(const char *path, const uint8_t *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

/* Missing, corrupt, truncated, wrong-magic, wrong-version and malformed files are refused
 * whole, with a reason; nothing is applied. */
static int s_snapshot_corrupt(void)
{
    s_fake_now = 1000;
    cache_store_t *a = s_snap_store();
    CHECK(a);
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        CHECK(cache_store_ns_set(a, i % 2 ? "w" : "l", key, "\x00v", 2, 60000) == 0);
    }
    char path[256], bad[300], err[512];
    s_snap_path(path, sizeof path, "bad");
    CHECK(cache_snapshot_write(a, path, 100, NULL, err, sizeof err) == 0);
    snprintf(bad, sizeof bad, "%s.bad", path);
    FILE *f = fopen(path, "rb");
    CHECK(f);
    static uint8_t good[1 << 20], buf[1 << 20];
    size_t n = fread(good, 1, sizeof good, f);
    fclose(f);
    CHECK(n > 24 && n < sizeof good);
    int missing = -1;
    CHECK(!cache_snapshot_read("/tmp/quaver-no-such-dir/snap.bin", 1 << 26, &missing, err,
                               sizeof err) && missing == 1);
    struct { const char *what; size_t len; size_t flip; uint8_t xor; const char *why; } cases[] = {
        { "truncated", n - 1, 0, 0, "truncated" },
        { "header only", 24, 0, 0, "truncated" },
        { "empty", 0, 0, 0, "bad magic" },
        { "flipped body byte", n, n - 3, 0x40, "checksum" },
        { "wrong magic", n, 0, 0x20, "bad magic" },
        { "wrong version", n, 8, 0x03, "version 2" },
        { "longer", n + 1, 0, 0, "truncated" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(buf, good, n);
        buf[n] = 0;
        if (cases[i].xor) buf[cases[i].flip] ^= cases[i].xor;
        CHECK(s_write_file(bad, buf, cases[i].len) == 0);
        err[0] = 0;
        cache_snapshot_t *s = cache_snapshot_read(bad, 1 << 26, &missing, err, sizeof err);
        if (s || missing || !strstr(err, cases[i].why)) {
            fprintf(stderr, "%s: '%s' does not say '%s'\n", cases[i].what, err, cases[i].why);
            cache_snapshot_destroy(&s);
            return 1;
        }
    }
    /* A body cut short with a recomputed length and checksum: the records do not parse. */
    memcpy(buf, good, n);
    size_t cut = n - 5;
    uLong crc = crc32(crc32(0, NULL, 0), buf + 24, (uInt) (cut - 24));
    for (int i = 0; i < 4; i++) buf[12 + i] = (uint8_t) (crc >> (8 * i));
    for (int i = 0; i < 8; i++) buf[16 + i] = (uint8_t) ((uint64_t) (cut - 24) >> (8 * i));
    CHECK(s_write_file(bad, buf, cut) == 0);
    CHECK(!cache_snapshot_read(bad, 1 << 26, &missing, err, sizeof err) && strstr(err, "malformed"));
    /* Over the size limit: refused unread. */
    CHECK(!cache_snapshot_read(path, 10, &missing, err, sizeof err) && strstr(err, "larger"));
    /* The good one still reads. */
    cache_snapshot_t *s = cache_snapshot_read(path, 1 << 26, &missing, err, sizeof err);
    CHECK(s && cache_snapshot_entries(s) == 20);
    cache_snapshot_destroy(&s);
    unlink(bad);
    unlink(path);
    cache_store_destroy(&a);
    return 0;
}

/* GetOrLoad through the dispatcher and the real tiers (no Redis), with a fake loader: the
 * server's checks (400), a load stored with Set's semantics (a plain Get then finds it), a
 * 404 remembered, a 503 passed through, and the per-namespace statistics. */
static int s_gol_calls;
static void s_gol_loader(void *ctx, const char *service, const char *method, const void *payload,
                         size_t len, const qv_call_t *call, int timeout_ms, qv_result_t *out)
{
    s_gol_calls++;
    memset(out, 0, sizeof *out);
    const char *p = payload;
    out->status = len >= 3 && memcmp(p, "404", 3) == 0 ? 404
                : len >= 3 && memcmp(p, "503", 3) == 0 ? 503 : 200;
    out->error = strdup(out->status == 503 ? "no database" : "");
    if (out->status == 200) {
        out->payload = malloc(len + 8);
        out->len = (size_t) snprintf((char *) out->payload, len + 8, "val:%.*s", (int) len, p);
    }
}

static int s_gol(cache_app_t *app, const char *ns, const char *key, const char *svc,
                 const char *payload, Quaver__V1__CacheGetOrLoadReply **rep_p, char *err)
{
    Quaver__V1__CacheGetOrLoadRequest req = QUAVER__V1__CACHE_GET_OR_LOAD_REQUEST__INIT;
    req.namespace_ = (char *) ns;
    req.key = (char *) key;
    req.loader_service = (char *) svc;
    req.loader_method = "Get";
    req.loader_payload.data = (uint8_t *) payload;
    req.loader_payload.len = strlen(payload);
    uint8_t *out = NULL;
    size_t olen = 0;
    int st = s_call(app, "GetOrLoad", &req.base, &out, &olen, err, 256);
    *rep_p = st == 200 ? quaver__v1__cache_get_or_load_reply__unpack(NULL, olen, out) : NULL;
    free(out);
    return st;
}

static int s_server_get_or_load(void)
{
    cache_cfg_t cfg = s_cfg();
    cfg.negative_ttl_ms = 5000;
    cfg.grace_ms = 1000;
    cfg.xfetch_beta = 1.0;
    cache_app_t *app = cache_app_new(&cfg, NULL);
    CHECK(app);
    cache_load_set_loader(cache_app_load(app), s_gol_loader, NULL);
    s_gol_calls = 0;
    char err[256];
    Quaver__V1__CacheGetOrLoadReply *rep = NULL;
    struct { const char *ns, *key, *svc, *want; } bad[] = {
        { "nope", "k", "loader", "unknown namespace 'nope'" },
        { "rooms", "", "loader", "key is empty" },
        { "rooms", "a_key_that_is_too_long", "loader", "max_key_bytes" },
        { "rooms", "k", "", "loader_service is empty" },
        { "rooms", "k", "cache", "loader_service 'cache'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(s_gol(app, bad[i].ns, bad[i].key, bad[i].svc, "x", &rep, err) == 400);
        CHECK(strstr(err, bad[i].want));
    }
    CHECK(s_gol_calls == 0);
    /* A load: answered, then in the local tier for Get and for the next GetOrLoad. */
    CHECK(s_gol(app, "rooms", "k", "loader", "abc", &rep, err) == 200 && rep);
    CHECK(rep->found && strcmp(rep->source, "loader") == 0 && rep->value.len == 7
          && memcmp(rep->value.data, "val:abc", 7) == 0);
    quaver__v1__cache_get_or_load_reply__free_unpacked(rep, NULL);
    CHECK(s_found_ns(app, "rooms", "k") == 1);
    CHECK(s_found_ns(app, "users", "k") == 0);
    CHECK(s_gol(app, "rooms", "k", "loader", "abc", &rep, err) == 200 && rep);
    CHECK(rep->found && strcmp(rep->source, "local") == 0 && s_gol_calls == 1);
    quaver__v1__cache_get_or_load_reply__free_unpacked(rep, NULL);
    /* 404: absent, then "negative" without a call. */
    CHECK(s_gol(app, "rooms", "gone", "loader", "404", &rep, err) == 200 && rep);
    CHECK(!rep->found && strcmp(rep->source, "loader") == 0);
    quaver__v1__cache_get_or_load_reply__free_unpacked(rep, NULL);
    CHECK(s_gol(app, "rooms", "gone", "loader", "404", &rep, err) == 200 && rep);
    CHECK(!rep->found && strcmp(rep->source, "negative") == 0 && s_gol_calls == 2);
    quaver__v1__cache_get_or_load_reply__free_unpacked(rep, NULL);
    CHECK(s_found_ns(app, "rooms", "gone") == 0);
    /* 503: passed through, nothing kept. */
    CHECK(s_gol(app, "rooms", "down", "loader", "503", &rep, err) == 503);
    CHECK(strstr(err, "no database"));
    CHECK(s_found_ns(app, "rooms", "down") == 0);
    CHECK(s_gol(app, "rooms", "down", "loader", "503", &rep, err) == 503 && s_gol_calls == 4);
    /* Statistics per namespace. */
    uint8_t *out = NULL;
    size_t olen = 0;
    Quaver__V1__Empty empty = QUAVER__V1__EMPTY__INIT;
    CHECK(s_call(app, "Stats", &empty.base, &out, &olen, err, sizeof err) == 200);
    Quaver__V1__StatsReply *sr = quaver__v1__stats_reply__unpack(NULL, olen, out);
    CHECK(sr);
    int seen = 0;
    for (size_t i = 0; i < sr->n_stats; i++) {
        const char *n = sr->stats[i]->name;
        double v = sr->stats[i]->value;
        if (strcmp(n, "ns.rooms.loads") == 0) seen += v == 4;
        if (strcmp(n, "ns.rooms.load_errors") == 0) seen += v == 2;
        if (strcmp(n, "ns.rooms.load_absent") == 0) seen += v == 1;
        if (strcmp(n, "ns.rooms.negative_hits") == 0) seen += v == 1;
        if (strcmp(n, "ns.users.loads") == 0) seen += v == 0;
    }
    quaver__v1__stats_reply__free_unpacked(sr, NULL);
    free(out);
    CHECK(seen == 5);
    cache_app_destroy(&app);
    return 0;
}

static const qv_selftest_t s_tests[] = {
    { "store_bounds",      s_store_bounds },
    { "store_lru",         s_store_lru },
    { "store_ttl",         s_store_ttl },
    { "store_prefix",      s_store_prefix },
    { "store_overwrite",   s_store_overwrite },
    { "policy_table",      s_policy_table },
    { "policy_lru",        s_policy_lru },
    { "policy_lfu",        s_policy_lfu },
    { "policy_fifo",       s_policy_fifo },
    { "policy_random",     s_policy_random },
    { "policy_s3fifo",     s_policy_s3fifo },
    { "policy_wtinylfu",   s_policy_wtinylfu },
    { "store_bounds_ns",   s_store_bounds_ns },
    { "store_namespaces",  s_store_namespaces },
    { "store_priority",    s_store_priority },
    { "store_ns_ttl",      s_store_ns_ttl },
    { "redis_pattern",     s_redis_pattern },
    { "server_validation", s_server_validation },
    { "server_no_redis",   s_server_no_redis },
    { "redis_live",        s_redis_live },
    { "namespace_table",   s_namespace_table },
    { "redis_glob",        s_redis_glob },
    { "server_methods",    s_server_methods },
    { "server_wiring",     s_server_wiring },
    { "codec",             s_codec },
    { "server_compression", s_server_compression },
    { "redis_coherence",   s_redis_coherence },
    { "msgpack_check",     s_msgpack_check },
    { "snapshot_round_trip", s_snapshot_round_trip },
    { "snapshot_corrupt",  s_snapshot_corrupt },
    { "server_get_or_load", s_server_get_or_load },
    { "load_xfetch",       cache_load_selftest_xfetch },
    { "load_single_flight", cache_load_selftest_single_flight },
    { "load_negative",     cache_load_selftest_negative },
    { "load_refresh",      cache_load_selftest_refresh },
    { "load_errors",       cache_load_selftest_errors },
    { NULL, NULL }
};

int main(int argc, char **argv)
{
    return qv_selftest_run("cache_selftest", s_tests, argc, argv);
}
