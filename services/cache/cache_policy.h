/* cache_policy: the eviction policy of the local tier, behind a small table of functions, so
 * that the store (hash map, bounds, expiry) does not know how victims are chosen. LRU is the
 * first policy; others (LFU, SLRU, ARC ...) plug in by filling the same table.
 *
 * Every call is made by the store with the store's mutex held: a policy is never called
 * concurrently and needs no locking of its own. Each call is O(1) for LRU; a policy must keep
 * on_insert/on_access/on_remove O(1) (amortised) because they run on every request.
 *
 * Ownership: the store owns entries; a policy only links them through the entry's `pol`
 * field and never frees one. The policy object is owned by the store (destroyed with it). */
#ifndef CACHE_POLICY_H
#define CACHE_POLICY_H
#include <stddef.h>
#include <stdint.h>

typedef struct cache_entry_t cache_entry_t;

/* Per-entry links a policy may use (a doubly linked list is what LRU needs; a policy that
 * needs more keeps it in `aux`). */
typedef struct {
    cache_entry_t *prev, *next;
    uint64_t       aux;
} cache_policy_link_t;

struct cache_entry_t {
    cache_entry_t      *hnext;      /* hash chain */
    uint64_t            hash;
    cache_policy_link_t pol;
    int64_t             expires_ms; /* store clock; 0 = never */
    size_t              klen, vlen;
    char               *key;        /* NUL-terminated, klen bytes */
    uint8_t            *value;      /* vlen bytes */
};

typedef struct cache_policy_t cache_policy_t;
struct cache_policy_t {
    const char *name;
    void (*on_insert)(cache_policy_t *p, cache_entry_t *e);   /* a new entry */
    void (*on_access)(cache_policy_t *p, cache_entry_t *e);   /* a hit or an overwrite */
    void (*on_remove)(cache_policy_t *p, cache_entry_t *e);   /* before the store frees e */
    /* The entry to evict next (still linked; the store calls on_remove), or NULL if empty. */
    cache_entry_t *(*victim)(cache_policy_t *p);
    void (*destroy)(cache_policy_t **p);
};

/* Returns a new policy by name ("lru"), or NULL for an unknown name. Caller owns it. */
cache_policy_t *cache_policy_new(const char *name);
cache_policy_t *cache_policy_lru_new(void);

#endif
