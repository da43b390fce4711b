/* cache_policy_fifo: first in, first out. One list in insertion order; a hit or an overwrite
 * changes nothing, so the oldest insertion is always the victim. Every operation is O(1). */
#include "cache_policy.h"
#include <stdlib.h>

typedef struct {
    cache_policy_t base;
    cache_plist_t  list;
} s_fifo_t;

static int s_insert(cache_policy_t *p, cache_entry_t *e)
{
    cache_plist_push_head(&((s_fifo_t *) p)->list, e);
    return 0;
}

static void s_access(cache_policy_t *p, cache_entry_t *e) { (void) p; (void) e; }

static void s_remove(cache_policy_t *p, cache_entry_t *e, int evicted)
{
    (void) evicted;
    cache_plist_unlink(&((s_fifo_t *) p)->list, e);
}

static cache_entry_t *s_victim(cache_policy_t *p) { return ((s_fifo_t *) p)->list.tail; }

static void s_destroy(cache_policy_t **p)
{
    if (!p || !*p) return;
    free(*p);
    *p = NULL;
}

cache_policy_t *cache_policy_fifo_new(size_t capacity, uint64_t seed)
{
    (void) capacity; (void) seed;
    s_fifo_t *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->base = (cache_policy_t){ "fifo", s_insert, s_access, s_remove, s_victim, s_destroy };
    return &f->base;
}
