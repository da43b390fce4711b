/* cache_store: the local tier (see cache_store.h for what it guarantees). */
#include "cache_store.h"
#include "cache_policy.h"
#include "cache_sketch.h"
#include "qv_clock.h"
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char            name[CACHE_STORE_NS_NAME_MAX + 1];
    int             priority;
    cache_policy_t *policy;
    uint64_t        entries, bytes, hits, misses;
    uint64_t        ev[CACHE_EVICT__COUNT];
} s_ns_t;

struct cache_store_t {
    pthread_mutex_t  mu;
    cache_entry_t  **buckets;
    size_t           nbuckets;       /* power of two */
    size_t           sweep_cursor;
    s_ns_t           ns[CACHE_STORE_NS_MAX];
    size_t           nns;
    unsigned char    hash_key[crypto_shorthash_KEYBYTES];
    cache_clock_fn   now;
    void            *now_ctx;
    uint64_t         entries, bytes, max_entries, max_bytes;
};

static int64_t s_default_clock(void *ctx) { (void) ctx; return qv_mono_ms(); }
_Static_assert(crypto_shorthash_KEYBYTES == CACHE_STORE_HASH_KEY_BYTES,
               "the snapshot's hash key is SipHash's key");

/* SipHash-2-4 (libsodium's crypto_shorthash) under a random per-store key: keys often carry
 * user input (room ids, usernames), and an unkeyed hash would let a caller build colliding
 * keys that turn O(1) chains into O(n) ones. The namespace index is mixed in so that one key
 * in two namespaces lands in two places. */
static uint64_t s_hash(const cache_store_t *s, uint16_t ns, const char *k, size_t len)
{
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, (const unsigned char *) k, len, s->hash_key);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return h ^ cache_mix64(ns);
}

static size_t s_entry_bytes(const cache_entry_t *e) { return e->klen + e->vlen; }

/* Lock held (or the store not yet shared). */
static int s_add_ns(cache_store_t *s, const char *name, const char *policy, int priority)
{
    if (!name || !*name || strlen(name) > CACHE_STORE_NS_NAME_MAX || s->nns == CACHE_STORE_NS_MAX
        || priority < CACHE_STORE_PRIO_LOW || priority > CACHE_STORE_PRIO_HIGH)
        return -1;
    for (size_t i = 0; i < s->nns; i++)
        if (strcmp(s->ns[i].name, name) == 0) return -1;
    /* Sized for the whole entry budget, since any namespace may come to hold all of it. The
     * seed is the namespace's index: replays and tests see the same random choices. */
    cache_policy_t *p = cache_policy_new(policy, s->max_entries, s->nns + 1);
    if (!p) return -1;
    s_ns_t *n = &s->ns[s->nns];
    memset(n, 0, sizeof *n);
    strcpy(n->name, name);
    n->priority = priority;
    n->policy = p;
    s->nns++;
    return 0;
}

cache_store_t *cache_store_new(size_t max_entries, size_t max_bytes)
{
    if (max_entries == 0 || max_bytes == 0 || sodium_init() < 0) return NULL;
    cache_store_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->max_entries = max_entries;
    s->max_bytes = max_bytes;
    s->nbuckets = 64;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    if (!s->buckets) {
        free(s->buckets);
        free(s);
        return NULL;
    }
    crypto_shorthash_keygen(s->hash_key);
    pthread_mutex_init(&s->mu, NULL);
    s->now = s_default_clock;
    return s;
}

static void s_free_entry(cache_entry_t *e)
{
    free(e->key);
    free(e->value);
    free(e);
}

/* Unlinks e from its chain and its policy, and frees it. Lock held. */
static void s_remove(cache_store_t *s, cache_entry_t *e, int evicted)
{
    cache_entry_t **pp = &s->buckets[e->hash & (s->nbuckets - 1)];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    s_ns_t *n = &s->ns[e->ns];
    n->policy->on_remove(n->policy, e, evicted);
    n->entries--;
    n->bytes -= s_entry_bytes(e);
    s->entries--;
    s->bytes -= s_entry_bytes(e);
    s_free_entry(e);
}

static void s_clear_locked(cache_store_t *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        cache_entry_t *e = s->buckets[i];
        while (e) {
            cache_entry_t *n = e->hnext;
            s_ns_t *ns = &s->ns[e->ns];
            ns->policy->on_remove(ns->policy, e, 0);
            s_free_entry(e);
            e = n;
        }
        s->buckets[i] = NULL;
    }
    for (size_t i = 0; i < s->nns; i++) s->ns[i].entries = s->ns[i].bytes = 0;
    s->entries = 0;
    s->bytes = 0;
}

void cache_store_destroy(cache_store_t **self_p)
{
    if (!self_p || !*self_p) return;
    cache_store_t *s = *self_p;
    s_clear_locked(s);
    for (size_t i = 0; i < s->nns; i++) s->ns[i].policy->destroy(&s->ns[i].policy);
    free(s->buckets);
    pthread_mutex_destroy(&s->mu);
    free(s);
    *self_p = NULL;
}

void cache_store_set_clock(cache_store_t *self, cache_clock_fn fn, void *ctx)
{
    self->now = fn ? fn : s_default_clock;
    self->now_ctx = ctx;
}

int cache_store_add_namespace(cache_store_t *self, const char *name, const char *policy,
                              int priority)
{
    if (!name || !*name) return -1;
    pthread_mutex_lock(&self->mu);
    int rc = s_add_ns(self, name, policy, priority);
    pthread_mutex_unlock(&self->mu);
    return rc;
}

/* The namespace index, or -1. A linear scan of at most CACHE_STORE_NS_MAX short names. Lock
 * held (the table only grows, under the lock). */
static int s_ns_find(const cache_store_t *s, const char *name)
{
    if (!name) return -1;
    for (size_t i = 0; i < s->nns; i++)
        if (strcmp(s->ns[i].name, name) == 0) return (int) i;
    return -1;
}

static cache_entry_t *s_find(cache_store_t *s, uint16_t ns, const char *key, size_t klen,
                             uint64_t h)
{
    for (cache_entry_t *e = s->buckets[h & (s->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->ns == ns && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
    return NULL;
}

static int s_expired(const cache_entry_t *e, int64_t now)
{
    return e->expires_ms != 0 && e->expires_ms <= now;
}

/* Doubles the bucket array. On no memory the table keeps working with longer chains. */
static void s_grow(cache_store_t *s)
{
    size_t n = s->nbuckets * 2;
    cache_entry_t **b = calloc(n, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        cache_entry_t *e = s->buckets[i];
        while (e) {
            cache_entry_t *next = e->hnext;
            e->hnext = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
    s->sweep_cursor = 0;
}

/* The namespace that gives space next: the lowest priority holding entries; within it the
 * one holding the most of the exhausted resource. -1 when the store is empty. */
static int s_pick_ns(const cache_store_t *s, int by_entries)
{
    int best = -1;
    for (size_t i = 0; i < s->nns; i++) {
        const s_ns_t *n = &s->ns[i];
        if (n->entries == 0) continue;
        if (best < 0) { best = (int) i; continue; }
        const s_ns_t *b = &s->ns[best];
        if (n->priority != b->priority) {
            if (n->priority < b->priority) best = (int) i;
            continue;
        }
        if (by_entries ? n->entries > b->entries : n->bytes > b->bytes) best = (int) i;
    }
    return best;
}

/* Evicts until both bounds hold. for_ns: the namespace whose write caused this (-1: none).
 * An expired victim counts as expired: the capacity causes are meant to tell an operator that
 * the tier is too small, and the priority cause that a namespace lost room to a higher one. */
static void s_enforce_bounds(cache_store_t *s, int64_t now, int for_ns)
{
    while (s->entries > s->max_entries || s->bytes > s->max_bytes) {
        int by_entries = s->entries > s->max_entries;
        int ni = s_pick_ns(s, by_entries);
        if (ni < 0) break;
        s_ns_t *n = &s->ns[ni];
        cache_entry_t *v = n->policy->victim(n->policy);
        if (!v) break;   /* cannot happen while n->entries > 0; never loop forever */
        cache_store_evict_cause_t cause =
            s_expired(v, now) ? CACHE_EVICT_EXPIRED
            : for_ns >= 0 && s->ns[for_ns].priority > n->priority ? CACHE_EVICT_PRIORITY
            : by_entries ? CACHE_EVICT_CAPACITY_ENTRIES : CACHE_EVICT_CAPACITY_BYTES;
        n->ev[cause]++;
        s_remove(s, v, 1);
    }
}

int cache_store_ns_set(cache_store_t *self, const char *ns, const char *key, const void *value,
                       size_t vlen, int64_t ttl_ms)
{
    size_t klen = strlen(key);
    pthread_mutex_lock(&self->mu);
    int ni = s_ns_find(self, ns);
    if (ni < 0) { pthread_mutex_unlock(&self->mu); return CACHE_STORE_NO_NS; }
    uint64_t h = s_hash(self, (uint16_t) ni, key, klen);
    s_ns_t *n = &self->ns[ni];
    int64_t now = self->now(self->now_ctx);
    cache_entry_t *old = s_find(self, (uint16_t) ni, key, klen, h);
    if (klen + vlen > self->max_bytes) {
        if (old) s_remove(self, old, 0);
        pthread_mutex_unlock(&self->mu);
        return -1;
    }
    /* Copy first so that a failed allocation leaves the old entry as it was. */
    uint8_t *copy = malloc(vlen ? vlen : 1);
    if (!copy) { pthread_mutex_unlock(&self->mu); return -1; }
    if (vlen) memcpy(copy, value, vlen);
    int64_t expires = ttl_ms > 0 ? now + ttl_ms : 0;
    if (old) {
        self->bytes -= old->vlen;
        n->bytes -= old->vlen;
        free(old->value);
        old->value = copy;
        old->vlen = vlen;
        old->expires_ms = expires;
        self->bytes += vlen;
        n->bytes += vlen;
        n->policy->on_access(n->policy, old);
    } else {
        cache_entry_t *e = calloc(1, sizeof *e);
        char *k = e ? strdup(key) : NULL;
        if (!e || !k) {
            free(e); free(k); free(copy);
            pthread_mutex_unlock(&self->mu);
            return -1;
        }
        e->key = k; e->klen = klen; e->hash = h; e->ns = (uint16_t) ni;
        e->value = copy; e->vlen = vlen; e->expires_ms = expires;
        if (n->policy->on_insert(n->policy, e) != 0) {
            s_free_entry(e);
            pthread_mutex_unlock(&self->mu);
            return -1;
        }
        size_t b = h & (self->nbuckets - 1);
        e->hnext = self->buckets[b];
        self->buckets[b] = e;
        n->entries++;
        n->bytes += s_entry_bytes(e);
        self->entries++;
        self->bytes += s_entry_bytes(e);
        if (self->entries > self->nbuckets) s_grow(self);
    }
    s_enforce_bounds(self, now, ni);
    pthread_mutex_unlock(&self->mu);
    return 0;
}

int cache_store_ns_get(cache_store_t *self, const char *ns, const char *key, uint8_t **value_p,
                       size_t *vlen_p, int64_t *ttl_left_p)
{
    size_t klen = strlen(key);
    int rc = 0;
    pthread_mutex_lock(&self->mu);
    int ni = s_ns_find(self, ns);
    if (ni < 0) { pthread_mutex_unlock(&self->mu); return CACHE_STORE_NO_NS; }
    uint64_t h = s_hash(self, (uint16_t) ni, key, klen);
    s_ns_t *n = &self->ns[ni];
    int64_t now = self->now(self->now_ctx);
    cache_entry_t *e = s_find(self, (uint16_t) ni, key, klen, h);
    if (e && s_expired(e, now)) {
        n->ev[CACHE_EVICT_EXPIRED]++;
        s_remove(self, e, 0);
        e = NULL;
    }
    if (e) {
        uint8_t *copy = malloc(e->vlen ? e->vlen : 1);
        if (!copy) rc = -1;
        else {
            if (e->vlen) memcpy(copy, e->value, e->vlen);
            *value_p = copy;
            *vlen_p = e->vlen;
            if (ttl_left_p) *ttl_left_p = e->expires_ms ? e->expires_ms - now : -1;
            n->policy->on_access(n->policy, e);
            n->hits++;
            rc = 1;
        }
    } else {
        n->misses++;
    }
    pthread_mutex_unlock(&self->mu);
    return rc;
}

int cache_store_ns_delete(cache_store_t *self, const char *ns, const char *key)
{
    size_t klen = strlen(key);
    pthread_mutex_lock(&self->mu);
    int ni = s_ns_find(self, ns);
    if (ni < 0) { pthread_mutex_unlock(&self->mu); return CACHE_STORE_NO_NS; }
    uint64_t h = s_hash(self, (uint16_t) ni, key, klen);
    cache_entry_t *e = s_find(self, (uint16_t) ni, key, klen, h);
    int live = e && !s_expired(e, self->now(self->now_ctx));
    if (e) s_remove(self, e, 0);
    pthread_mutex_unlock(&self->mu);
    return live;
}

typedef int (*s_match_fn)(const char *key, size_t klen, const void *arg, void *ctx);

/* Removes the entries of ns (-1: all namespaces) that match; counts the live ones. Lock held. */
static int64_t s_delete_where(cache_store_t *s, int ns, s_match_fn match, const void *arg,
                              void *ctx)
{
    int64_t n = 0;
    int64_t now = s->now(s->now_ctx);
    for (size_t i = 0; i < s->nbuckets; i++) {
        cache_entry_t *e = s->buckets[i];
        while (e) {
            cache_entry_t *next = e->hnext;
            if ((ns < 0 || e->ns == ns) && (!match || match(e->key, e->klen, arg, ctx))) {
                if (!s_expired(e, now)) n++;
                s_remove(s, e, 0);
            }
            e = next;
        }
    }
    return n;
}

static int s_match_prefix(const char *key, size_t klen, const void *arg, void *ctx)
{
    size_t plen = *(const size_t *) ctx;
    return klen >= plen && memcmp(key, arg, plen) == 0;
}

static int s_match_user(const char *key, size_t klen, const void *arg, void *ctx)
{
    (void) klen;
    int (*fn)(const char *, void *) = *(int (*const *)(const char *, void *)) arg;
    return fn(key, ctx);
}

int64_t cache_store_ns_delete_matching(cache_store_t *self, const char *ns,
                                       int (*match)(const char *key, void *ctx), void *ctx)
{
    if (!ns || !*ns) return CACHE_STORE_NO_NS;
    pthread_mutex_lock(&self->mu);
    int ni = s_ns_find(self, ns);
    int64_t n = ni < 0 ? CACHE_STORE_NO_NS
              : s_delete_where(self, ni, match ? s_match_user : NULL, &match, ctx);
    pthread_mutex_unlock(&self->mu);
    return n;
}

int64_t cache_store_ns_delete_prefix(cache_store_t *self, const char *ns, const char *prefix)
{
    if (!ns || !*ns) return CACHE_STORE_NO_NS;
    size_t plen = strlen(prefix);
    pthread_mutex_lock(&self->mu);
    int ni = s_ns_find(self, ns);
    int64_t n = ni < 0 ? CACHE_STORE_NO_NS : s_delete_where(self, ni, s_match_prefix, prefix, &plen);
    pthread_mutex_unlock(&self->mu);
    return n;
}

int64_t cache_store_ns_clear(cache_store_t *self, const char *ns)
{
    return cache_store_ns_delete_matching(self, ns, NULL, NULL);
}

static void s_ns_stats(const s_ns_t *n, cache_store_ns_stats_t *out)
{
    memset(out, 0, sizeof *out);
    strcpy(out->name, n->name);
    snprintf(out->policy, sizeof out->policy, "%s", n->policy->name);
    out->priority = n->priority;
    out->entries = n->entries;
    out->bytes = n->bytes;
    out->hits = n->hits;
    out->misses = n->misses;
    memcpy(out->evictions, n->ev, sizeof out->evictions);
}

int cache_store_ns_stats(cache_store_t *self, const char *ns, cache_store_ns_stats_t *out)
{
    if (!ns || !*ns) return CACHE_STORE_NO_NS;
    pthread_mutex_lock(&self->mu);
    int ni = s_ns_find(self, ns);
    if (ni >= 0) s_ns_stats(&self->ns[ni], out);
    pthread_mutex_unlock(&self->mu);
    return ni < 0 ? CACHE_STORE_NO_NS : 0;
}

size_t cache_store_ns_count(cache_store_t *self)
{
    pthread_mutex_lock(&self->mu);
    size_t n = self->nns;
    pthread_mutex_unlock(&self->mu);
    return n;
}

int cache_store_ns_stats_at(cache_store_t *self, size_t i, cache_store_ns_stats_t *out)
{
    pthread_mutex_lock(&self->mu);
    int ok = i < self->nns;
    if (ok) s_ns_stats(&self->ns[i], out);
    pthread_mutex_unlock(&self->mu);
    return ok ? 0 : -1;
}

/* ---- the whole store ---------------------------------------------------------------------- */

void cache_store_clear(cache_store_t *self)
{
    pthread_mutex_lock(&self->mu);
    s_clear_locked(self);
    pthread_mutex_unlock(&self->mu);
}

size_t cache_store_expire(cache_store_t *self, size_t buckets)
{
    size_t n = 0;
    pthread_mutex_lock(&self->mu);
    int64_t now = self->now(self->now_ctx);
    if (buckets > self->nbuckets) buckets = self->nbuckets;
    for (size_t i = 0; i < buckets; i++) {
        size_t b = self->sweep_cursor;
        self->sweep_cursor = (self->sweep_cursor + 1) & (self->nbuckets - 1);
        cache_entry_t *e = self->buckets[b];
        while (e) {
            cache_entry_t *next = e->hnext;
            if (s_expired(e, now)) {
                self->ns[e->ns].ev[CACHE_EVICT_EXPIRED]++;
                s_remove(self, e, 0);
                n++;
            }
            e = next;
        }
    }
    pthread_mutex_unlock(&self->mu);
    return n;
}

void cache_store_stats(cache_store_t *self, cache_store_stats_t *out)
{
    pthread_mutex_lock(&self->mu);
    memset(out, 0, sizeof *out);
    out->entries = self->entries;
    out->bytes = self->bytes;
    out->max_entries = self->max_entries;
    out->max_bytes = self->max_bytes;
    for (size_t i = 0; i < self->nns; i++) {
        const s_ns_t *n = &self->ns[i];
        out->evictions += n->ev[CACHE_EVICT_CAPACITY_ENTRIES] + n->ev[CACHE_EVICT_CAPACITY_BYTES]
                        + n->ev[CACHE_EVICT_PRIORITY];
        out->expirations += n->ev[CACHE_EVICT_EXPIRED];
    }
    pthread_mutex_unlock(&self->mu);
}

/* ---- snapshots ------------------------------------------------------------------------ */

typedef struct { cache_entry_t *e; unsigned freq; } s_rank_t;

static int s_rank_cmp(const void *x, const void *y)
{
    const s_rank_t *a = x, *b = y;
    if (a->freq != b->freq) return a->freq > b->freq ? -1 : 1;
    /* expires_ms 0 (never) sorts as the longest-lived */
    uint64_t ea = (uint64_t) a->e->expires_ms - 1, eb = (uint64_t) b->e->expires_ms - 1;
    return ea > eb ? -1 : ea < eb ? 1 : 0;
}

void cache_store_items_free(cache_store_item_t *items, size_t n)
{
    for (size_t i = 0; items && i < n; i++) { free(items[i].key); free(items[i].value); }
    free(items);
}

int cache_store_export(cache_store_t *self, size_t max, cache_store_item_t **items_p,
                       size_t *n_p)
{
    *items_p = NULL;
    *n_p = 0;
    pthread_mutex_lock(&self->mu);
    int64_t now = self->now(self->now_ctx);
    s_rank_t *r = malloc((self->entries ? self->entries : 1) * sizeof *r);
    size_t n = 0;
    for (size_t b = 0; r && b < self->nbuckets; b++)
        for (cache_entry_t *e = self->buckets[b]; e; e = e->hnext) {
            if (s_expired(e, now) || n == self->entries) continue;
            cache_sketch_t *sk = cache_policy_sketch(self->ns[e->ns].policy);
            r[n].e = e;
            r[n++].freq = sk ? cache_sketch_estimate(sk, e->hash) : 0;
        }
    if (r) qsort(r, n, sizeof *r, s_rank_cmp);
    if (n > max) n = max;
    cache_store_item_t *items = r ? calloc(n ? n : 1, sizeof *items) : NULL;
    int rc = items ? 0 : -1;
    for (size_t i = 0; items && i < n; i++) {
        cache_entry_t *e = r[i].e;
        items[i].ns = e->ns;
        items[i].key = strdup(e->key);
        items[i].value = malloc(e->vlen ? e->vlen : 1);
        if (!items[i].key || !items[i].value) { rc = -1; n = i + 1; break; }
        if (e->vlen) memcpy(items[i].value, e->value, e->vlen);
        items[i].vlen = e->vlen;
        items[i].ttl_left_ms = e->expires_ms ? e->expires_ms - now : -1;
        items[i].freq = r[i].freq;
    }
    pthread_mutex_unlock(&self->mu);
    free(r);
    if (rc != 0) { cache_store_items_free(items, n); return -1; }
    *items_p = items;
    *n_p = n;
    return 0;
}

void cache_store_hash_key(cache_store_t *self, uint8_t key[CACHE_STORE_HASH_KEY_BYTES])
{
    pthread_mutex_lock(&self->mu);
    memcpy(key, self->hash_key, CACHE_STORE_HASH_KEY_BYTES);
    pthread_mutex_unlock(&self->mu);
}

int cache_store_set_hash_key(cache_store_t *self, const uint8_t key[CACHE_STORE_HASH_KEY_BYTES])
{
    pthread_mutex_lock(&self->mu);
    int ok = self->entries == 0;
    if (ok) memcpy(self->hash_key, key, CACHE_STORE_HASH_KEY_BYTES);
    pthread_mutex_unlock(&self->mu);
    return ok ? 0 : -1;
}

int cache_store_ns_sketch_get(cache_store_t *self, const char *ns, uint64_t *table, size_t cap,
                              size_t *words, uint64_t *size)
{
    pthread_mutex_lock(&self->mu);
    int ni = s_ns_find(self, ns);
    cache_sketch_t *sk = ni < 0 ? NULL : cache_policy_sketch(self->ns[ni].policy);
    *words = sk ? cache_sketch_words(sk) : 0;
    if (sk && table) {
        size_t n = *words < cap ? *words : cap;
        memcpy(table, cache_sketch_table(sk), n * sizeof *table);
        *size = cache_sketch_size(sk);
    }
    pthread_mutex_unlock(&self->mu);
    return ni < 0 ? CACHE_STORE_NO_NS : 0;
}

int cache_store_ns_sketch_put(cache_store_t *self, const char *ns, const uint64_t *table,
                              size_t words, uint64_t size)
{
    pthread_mutex_lock(&self->mu);
    int ni = s_ns_find(self, ns);
    cache_sketch_t *sk = ni < 0 ? NULL : cache_policy_sketch(self->ns[ni].policy);
    int rc = ni < 0 ? CACHE_STORE_NO_NS
           : sk ? cache_sketch_load(sk, table, words, (size_t) size) : -1;
    pthread_mutex_unlock(&self->mu);
    return rc;
}

int cache_store_ns_frequency(cache_store_t *self, const char *ns, const char *key)
{
    pthread_mutex_lock(&self->mu);
    int ni = s_ns_find(self, ns);
    cache_sketch_t *sk = ni < 0 ? NULL : cache_policy_sketch(self->ns[ni].policy);
    int f = sk ? (int) cache_sketch_estimate(sk, s_hash(self, (uint16_t) ni, key, strlen(key)))
               : -1;
    pthread_mutex_unlock(&self->mu);
    return f;
}
