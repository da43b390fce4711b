/* cache_policy: the eviction policy of the local tier, behind a small table of functions, so
 * that the store (hash map, bounds, expiry, namespaces) and the trace replayer (tools/cachesim)
 * drive the same code without knowing how victims are chosen. One file per policy:
 *   lru       cache_policy_lru.c       least recently used
 *   lfu       cache_policy_lfu.c       least frequently used, O(1) frequency buckets
 *   fifo      cache_policy_fifo.c      first in, first out (hits change nothing)
 *   random    cache_policy_random.c    uniform random victim (deterministic PRNG)
 *   wtinylfu  cache_policy_wtinylfu.c  W-TinyLFU with an adaptive window (Caffeine's design)
 *   s3fifo    cache_policy_s3fifo.c    S3-FIFO (Yang et al., SOSP 2023)
 *
 * Every call is made with the store's mutex held (or from the single-threaded simulator): a
 * policy is never called concurrently and needs no locking of its own. Every call is O(1) or
 * amortised O(1); a policy file says where and why when it is amortised.
 *
 * Calling sequence: on_insert for a new entry (the policy may refuse it for lack of memory),
 * on_access on a hit or an overwrite, and, while the owner is over its bounds, victim() then
 * on_remove(e, 1) for the returned entry. Deletions, expiries and clears call on_remove(e, 0).
 * victim() may reorganise the policy's own queues (S3-FIFO's reinsertion, W-TinyLFU's
 * admission) but never removes the entry it returns.
 *
 * Ownership: the store owns entries; a policy only links them through the entry's `pol`
 * field and never frees one. The policy object is owned by whoever made it (the store frees
 * it with destroy). */
#ifndef CACHE_POLICY_H
#define CACHE_POLICY_H
#include <stddef.h>
#include <stdint.h>

typedef struct cache_entry_t cache_entry_t;

/* Per-entry fields a policy may use as it likes; the store never reads them. */
typedef struct {
    cache_entry_t *prev, *next;   /* a doubly linked list (all the list-based policies) */
    void          *node;          /* LFU: the frequency bucket */
    uint64_t       aux;           /* Random: index in the array */
    uint32_t       freq;          /* S3-FIFO: 2-bit frequency */
    uint8_t        queue;         /* which of a policy's queues holds the entry */
} cache_policy_link_t;

struct cache_entry_t {
    cache_entry_t      *hnext;      /* hash chain (store) */
    uint64_t            hash;       /* a well-mixed 64-bit hash of the key: policies use it
                                       for sketches and ghost queues */
    cache_policy_link_t pol;
    int64_t             expires_ms; /* store clock; 0 = never */
    size_t              klen, vlen;
    char               *key;        /* NUL-terminated, klen bytes (NULL in the simulator) */
    uint8_t            *value;      /* vlen bytes */
    uint16_t            ns;         /* the store's namespace index */
};

typedef struct cache_policy_t cache_policy_t;
struct cache_policy_t {
    const char *name;
    /* A new entry. 0, or -1 when the policy is out of memory (the caller drops the entry). */
    int  (*on_insert)(cache_policy_t *p, cache_entry_t *e);
    void (*on_access)(cache_policy_t *p, cache_entry_t *e);   /* a hit or an overwrite */
    /* Before the owner frees e. evicted: 1 when e came from victim(), 0 for a delete,
     * an expiry or a clear (ghost queues only remember evictions). */
    void (*on_remove)(cache_policy_t *p, cache_entry_t *e, int evicted);
    /* The entry to evict next (still linked), or NULL if the policy holds none. */
    cache_entry_t *(*victim)(cache_policy_t *p);
    void (*destroy)(cache_policy_t **p);
};

/* Returns a new policy by name (see the list above; NULL = "lru"), or NULL for an unknown
 * name or no memory. capacity: the number of entries the owner expects to hold at most; the
 * segmented policies size their queues and sketches from it (must be >= 1). seed: the
 * deterministic seed of any randomness in the policy (Random, W-TinyLFU's admission jitter).
 * Caller owns the result and frees it with p->destroy(&p). */
cache_policy_t *cache_policy_new(const char *name, size_t capacity, uint64_t seed);
/* 1 when name is a known policy. */
int cache_policy_known(const char *name);
/* The known names, NULL-terminated (for help texts). */
extern const char *const cache_policy_names[];

cache_policy_t *cache_policy_lru_new(size_t capacity, uint64_t seed);
cache_policy_t *cache_policy_lfu_new(size_t capacity, uint64_t seed);
cache_policy_t *cache_policy_fifo_new(size_t capacity, uint64_t seed);
cache_policy_t *cache_policy_random_new(size_t capacity, uint64_t seed);
cache_policy_t *cache_policy_wtinylfu_new(size_t capacity, uint64_t seed);
cache_policy_t *cache_policy_s3fifo_new(size_t capacity, uint64_t seed);
/* W-TinyLFU's frequency sketch (borrowed, lives as long as p), or NULL when p is another
 * policy. For snapshots (cache_snapshot.h). */
struct cache_sketch_t *cache_policy_sketch(cache_policy_t *p);

/* Small helpers shared by the policy files: an intrusive doubly linked list through
 * e->pol.prev/next, head = most recent, tail = oldest. All O(1). */
typedef struct { cache_entry_t *head, *tail; size_t n; } cache_plist_t;

static inline void cache_plist_unlink(cache_plist_t *l, cache_entry_t *e)
{
    if (e->pol.prev) e->pol.prev->pol.next = e->pol.next; else l->head = e->pol.next;
    if (e->pol.next) e->pol.next->pol.prev = e->pol.prev; else l->tail = e->pol.prev;
    e->pol.prev = e->pol.next = NULL;
    l->n--;
}

static inline void cache_plist_push_head(cache_plist_t *l, cache_entry_t *e)
{
    e->pol.prev = NULL;
    e->pol.next = l->head;
    if (l->head) l->head->pol.prev = e; else l->tail = e;
    l->head = e;
    l->n++;
}

/* splitmix64: a deterministic PRNG step and a 64-bit mixer. */
static inline uint64_t cache_mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}
static inline uint64_t cache_rand64(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ULL;
    return cache_mix64(*state - 0x9e3779b97f4a7c15ULL);
}

#endif
