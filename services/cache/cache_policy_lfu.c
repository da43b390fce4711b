/* cache_policy_lfu: least frequently used, in O(1) (Shah, Mitra and Matani, "An O(1)
 * algorithm for implementing the LFU cache eviction scheme", 2010). Frequency buckets form a
 * list in ascending order; each bucket holds its entries in a list, newest at the head. The
 * victim is the oldest entry (the one that reached that count first) of the lowest bucket.
 * A hit moves an entry to the bucket one above, creating it right after the current one if
 * needed. A new entry has frequency 1.
 *
 * Buckets come from a pool that on_insert tops up so that it always holds at least one more
 * bucket than there are entries: a bucket in use holds an entry, so on_access always finds a
 * free bucket and never allocates (it cannot fail). The pool is freed with the policy.
 * Counts are never aged: this is the seeds' plain LFU (W-TinyLFU is the aged, sketch-based
 * one). Every operation is O(1).
 *
 * The owner inserts before it asks for a victim, so the newest entry (frequency 1) would
 * often be the only one in the lowest bucket and be evicted at once, and nothing new could
 * ever enter a cache of entries used twice. victim() therefore skips the entry inserted last
 * while any other entry remains: the classic evict-before-insert LFU. */
#include "cache_policy.h"
#include <stdlib.h>

typedef struct s_bucket_t s_bucket_t;
struct s_bucket_t {
    s_bucket_t   *prev, *next;    /* ascending frequency */
    uint64_t      freq;
    cache_plist_t entries;
};

typedef struct {
    cache_policy_t base;
    s_bucket_t    *lowest;        /* the list of buckets in use */
    s_bucket_t    *free;          /* the pool (singly linked through next) */
    size_t         nfree, nused, nentries;
    cache_entry_t *newest;        /* inserted last and not touched since */
    s_bucket_t   **blocks;        /* every allocation, to free them */
    size_t         nblocks, capblocks;
} s_lfu_t;

static s_bucket_t *s_take(s_lfu_t *l)
{
    s_bucket_t *b = l->free;
    l->free = b->next;
    l->nfree--;
    l->nused++;
    *b = (s_bucket_t){ 0 };
    return b;
}

static void s_give(s_lfu_t *l, s_bucket_t *b)
{
    if (b->prev) b->prev->next = b->next; else l->lowest = b->next;
    if (b->next) b->next->prev = b->prev;
    b->next = l->free;
    l->free = b;
    l->nfree++;
    l->nused--;
}

/* A new bucket with freq f placed after `after` (NULL: at the front). */
static s_bucket_t *s_bucket_after(s_lfu_t *l, s_bucket_t *after, uint64_t f)
{
    s_bucket_t *b = s_take(l);
    b->freq = f;
    b->prev = after;
    b->next = after ? after->next : l->lowest;
    if (b->next) b->next->prev = b;
    if (after) after->next = b; else l->lowest = b;
    return b;
}

/* Keeps nfree + nused >= nentries + 2 (one for the entry being inserted's bucket, one spare). */
static int s_reserve(s_lfu_t *l)
{
    while (l->nfree + l->nused < l->nentries + 2) {
        size_t n = 64;
        if (l->nblocks == l->capblocks) {
            size_t cap = l->capblocks ? l->capblocks * 2 : 16;
            s_bucket_t **bl = realloc(l->blocks, cap * sizeof *bl);
            if (!bl) return -1;
            l->blocks = bl;
            l->capblocks = cap;
        }
        s_bucket_t *blk = calloc(n, sizeof *blk);
        if (!blk) return -1;
        l->blocks[l->nblocks++] = blk;
        for (size_t i = 0; i < n; i++) {
            blk[i].next = l->free;
            l->free = &blk[i];
        }
        l->nfree += n;
    }
    return 0;
}

static int s_insert(cache_policy_t *p, cache_entry_t *e)
{
    s_lfu_t *l = (s_lfu_t *) p;
    if (s_reserve(l) != 0) return -1;
    s_bucket_t *b = l->lowest;
    if (!b || b->freq != 1) b = s_bucket_after(l, NULL, 1);
    cache_plist_push_head(&b->entries, e);
    e->pol.node = b;
    l->nentries++;
    l->newest = e;
    return 0;
}

static void s_access(cache_policy_t *p, cache_entry_t *e)
{
    s_lfu_t *l = (s_lfu_t *) p;
    s_bucket_t *b = e->pol.node;
    s_bucket_t *nb = b->next;
    if (l->newest == e) l->newest = NULL;
    if (!nb || nb->freq != b->freq + 1) nb = s_bucket_after(l, b, b->freq + 1);
    cache_plist_unlink(&b->entries, e);
    cache_plist_push_head(&nb->entries, e);
    e->pol.node = nb;
    if (b->entries.n == 0) s_give(l, b);
}

static void s_remove(cache_policy_t *p, cache_entry_t *e, int evicted)
{
    (void) evicted;
    s_lfu_t *l = (s_lfu_t *) p;
    s_bucket_t *b = e->pol.node;
    if (l->newest == e) l->newest = NULL;
    cache_plist_unlink(&b->entries, e);
    if (b->entries.n == 0) s_give(l, b);
    e->pol.node = NULL;
    l->nentries--;
}

static cache_entry_t *s_victim(cache_policy_t *p)
{
    s_lfu_t *l = (s_lfu_t *) p;
    s_bucket_t *b = l->lowest;
    if (!b) return NULL;
    cache_entry_t *v = b->entries.tail;
    /* The newest sits at its bucket's head, so it is the tail only when alone there. */
    if (v == l->newest && b->next) v = b->next->entries.tail;
    return v;
}

static void s_destroy(cache_policy_t **p)
{
    if (!p || !*p) return;
    s_lfu_t *l = (s_lfu_t *) *p;
    for (size_t i = 0; i < l->nblocks; i++) free(l->blocks[i]);
    free(l->blocks);
    free(l);
    *p = NULL;
}

cache_policy_t *cache_policy_lfu_new(size_t capacity, uint64_t seed)
{
    (void) capacity; (void) seed;
    s_lfu_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->base = (cache_policy_t){ "lfu", s_insert, s_access, s_remove, s_victim, s_destroy };
    return &l->base;
}
