/* cache_store: the local tier (see cache_store.h for what it guarantees). */
#include "cache_store.h"
#include "cache_policy.h"
#include "qv_clock.h"
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct cache_store_t {
    pthread_mutex_t  mu;
    cache_entry_t  **buckets;
    size_t           nbuckets;       /* power of two */
    size_t           sweep_cursor;
    cache_policy_t  *policy;
    unsigned char    hash_key[crypto_shorthash_KEYBYTES];
    cache_clock_fn   now;
    void            *now_ctx;
    cache_store_stats_t st;
};

static int64_t s_default_clock(void *ctx) { (void) ctx; return qv_mono_ms(); }

/* SipHash-2-4 (libsodium's crypto_shorthash) under a random per-store key: keys often carry
 * user input (room ids, usernames), and an unkeyed hash would let a caller build colliding
 * keys that turn O(1) chains into O(n) ones. */
static uint64_t s_hash(const cache_store_t *s, const char *k, size_t len)
{
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, (const unsigned char *) k, len, s->hash_key);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return h;
}

static size_t s_entry_bytes(const cache_entry_t *e) { return e->klen + e->vlen; }

cache_store_t *cache_store_new(size_t max_entries, size_t max_bytes, const char *policy)
{
    if (max_entries == 0 || max_bytes == 0 || sodium_init() < 0) return NULL;
    cache_store_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->nbuckets = 64;
    s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
    s->policy = cache_policy_new(policy);
    if (!s->buckets || !s->policy) {
        if (s->policy) s->policy->destroy(&s->policy);
        free(s->buckets);
        free(s);
        return NULL;
    }
    crypto_shorthash_keygen(s->hash_key);
    pthread_mutex_init(&s->mu, NULL);
    s->now = s_default_clock;
    s->st.max_entries = max_entries;
    s->st.max_bytes = max_bytes;
    return s;
}

static void s_free_entry(cache_entry_t *e)
{
    free(e->key);
    free(e->value);
    free(e);
}

/* Unlinks e from its chain and the policy, and frees it. Lock held. */
static void s_remove(cache_store_t *s, cache_entry_t *e)
{
    cache_entry_t **pp = &s->buckets[e->hash & (s->nbuckets - 1)];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    s->policy->on_remove(s->policy, e);
    s->st.entries--;
    s->st.bytes -= s_entry_bytes(e);
    s_free_entry(e);
}

static void s_clear_locked(cache_store_t *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        cache_entry_t *e = s->buckets[i];
        while (e) {
            cache_entry_t *n = e->hnext;
            s->policy->on_remove(s->policy, e);
            s_free_entry(e);
            e = n;
        }
        s->buckets[i] = NULL;
    }
    s->st.entries = 0;
    s->st.bytes = 0;
}

void cache_store_destroy(cache_store_t **self_p)
{
    if (!self_p || !*self_p) return;
    cache_store_t *s = *self_p;
    s_clear_locked(s);
    s->policy->destroy(&s->policy);
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

static cache_entry_t *s_find(cache_store_t *s, const char *key, size_t klen, uint64_t h)
{
    for (cache_entry_t *e = s->buckets[h & (s->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && e->klen == klen && memcmp(e->key, key, klen) == 0) return e;
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

/* Evicts until both bounds hold. An expired victim counts as an expiration, not an eviction:
 * the metric is meant to tell an operator that the tier is too small. */
static void s_enforce_bounds(cache_store_t *s, int64_t now)
{
    while (s->st.entries > s->st.max_entries || s->st.bytes > s->st.max_bytes) {
        cache_entry_t *v = s->policy->victim(s->policy);
        if (!v) break;
        if (s_expired(v, now)) s->st.expirations++; else s->st.evictions++;
        s_remove(s, v);
    }
}

int cache_store_set(cache_store_t *self, const char *key, const void *value, size_t vlen,
                    int64_t ttl_ms)
{
    size_t klen = strlen(key);
    uint64_t h = s_hash(self, key, klen);
    pthread_mutex_lock(&self->mu);
    int64_t now = self->now(self->now_ctx);
    cache_entry_t *old = s_find(self, key, klen, h);
    if (klen + vlen > self->st.max_bytes) {
        if (old) s_remove(self, old);
        pthread_mutex_unlock(&self->mu);
        return -1;
    }
    /* Copy first so that a failed allocation leaves the old entry as it was. */
    uint8_t *copy = malloc(vlen ? vlen : 1);
    if (!copy) { pthread_mutex_unlock(&self->mu); return -1; }
    if (vlen) memcpy(copy, value, vlen);
    int64_t expires = ttl_ms > 0 ? now + ttl_ms : 0;
    if (old) {
        self->st.bytes -= old->vlen;
        free(old->value);
        old->value = copy;
        old->vlen = vlen;
        old->expires_ms = expires;
        self->st.bytes += vlen;
        self->policy->on_access(self->policy, old);
    } else {
        cache_entry_t *e = calloc(1, sizeof *e);
        char *k = e ? strdup(key) : NULL;
        if (!e || !k) {
            free(e); free(k); free(copy);
            pthread_mutex_unlock(&self->mu);
            return -1;
        }
        e->key = k; e->klen = klen; e->hash = h;
        e->value = copy; e->vlen = vlen; e->expires_ms = expires;
        size_t b = h & (self->nbuckets - 1);
        e->hnext = self->buckets[b];
        self->buckets[b] = e;
        self->policy->on_insert(self->policy, e);
        self->st.entries++;
        self->st.bytes += s_entry_bytes(e);
        if (self->st.entries > self->nbuckets) s_grow(self);
    }
    s_enforce_bounds(self, now);
    pthread_mutex_unlock(&self->mu);
    return 0;
}

int cache_store_get(cache_store_t *self, const char *key, uint8_t **value_p, size_t *vlen_p,
                    int64_t *ttl_left_p)
{
    size_t klen = strlen(key);
    uint64_t h = s_hash(self, key, klen);
    int rc = 0;
    pthread_mutex_lock(&self->mu);
    int64_t now = self->now(self->now_ctx);
    cache_entry_t *e = s_find(self, key, klen, h);
    if (e && s_expired(e, now)) {
        self->st.expirations++;
        s_remove(self, e);
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
            self->policy->on_access(self->policy, e);
            rc = 1;
        }
    }
    pthread_mutex_unlock(&self->mu);
    return rc;
}

int cache_store_delete(cache_store_t *self, const char *key)
{
    size_t klen = strlen(key);
    uint64_t h = s_hash(self, key, klen);
    pthread_mutex_lock(&self->mu);
    cache_entry_t *e = s_find(self, key, klen, h);
    int live = e && !s_expired(e, self->now(self->now_ctx));
    if (e) s_remove(self, e);
    pthread_mutex_unlock(&self->mu);
    return live;
}

size_t cache_store_delete_prefix(cache_store_t *self, const char *prefix)
{
    size_t plen = strlen(prefix), n = 0;
    pthread_mutex_lock(&self->mu);
    int64_t now = self->now(self->now_ctx);
    for (size_t i = 0; i < self->nbuckets; i++) {
        cache_entry_t *e = self->buckets[i];
        while (e) {
            cache_entry_t *next = e->hnext;
            if (e->klen >= plen && memcmp(e->key, prefix, plen) == 0) {
                if (!s_expired(e, now)) n++;
                s_remove(self, e);
            }
            e = next;
        }
    }
    pthread_mutex_unlock(&self->mu);
    return n;
}

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
            if (s_expired(e, now)) { self->st.expirations++; s_remove(self, e); n++; }
            e = next;
        }
    }
    pthread_mutex_unlock(&self->mu);
    return n;
}

void cache_store_stats(cache_store_t *self, cache_store_stats_t *out)
{
    pthread_mutex_lock(&self->mu);
    *out = self->st;
    pthread_mutex_unlock(&self->mu);
}
