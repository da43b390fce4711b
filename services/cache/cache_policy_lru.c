/* cache_policy_lru: least recently used. One doubly linked list through the entries: the head
 * is the most recently used, the tail the next victim. Every operation is O(1). */
#include "cache_policy.h"
#include <stdlib.h>

typedef struct {
    cache_policy_t base;   /* first, so a cache_policy_t * is a s_lru_t * */
    cache_plist_t  list;
} s_lru_t;

static int s_insert(cache_policy_t *p, cache_entry_t *e)
{
    cache_plist_push_head(&((s_lru_t *) p)->list, e);
    return 0;
}

static void s_access(cache_policy_t *p, cache_entry_t *e)
{
    s_lru_t *l = (s_lru_t *) p;
    if (l->list.head == e) return;
    cache_plist_unlink(&l->list, e);
    cache_plist_push_head(&l->list, e);
}

static void s_remove(cache_policy_t *p, cache_entry_t *e, int evicted)
{
    (void) evicted;
    cache_plist_unlink(&((s_lru_t *) p)->list, e);
}

static cache_entry_t *s_victim(cache_policy_t *p) { return ((s_lru_t *) p)->list.tail; }

static void s_destroy(cache_policy_t **p)
{
    if (!p || !*p) return;
    free(*p);
    *p = NULL;
}

cache_policy_t *cache_policy_lru_new(size_t capacity, uint64_t seed)
{
    (void) capacity; (void) seed;
    s_lru_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->base = (cache_policy_t){ "lru", s_insert, s_access, s_remove, s_victim, s_destroy };
    return &l->base;
}
