/* cache_policy_lru: least recently used. One doubly linked list through the entries: the head
 * is the most recently used, the tail the next victim. Every operation is O(1). */
#include "cache_policy.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    cache_policy_t base;   /* first, so a cache_policy_t * is a s_lru_t * */
    cache_entry_t *head, *tail;
} s_lru_t;

static void s_unlink(s_lru_t *l, cache_entry_t *e)
{
    if (e->pol.prev) e->pol.prev->pol.next = e->pol.next; else l->head = e->pol.next;
    if (e->pol.next) e->pol.next->pol.prev = e->pol.prev; else l->tail = e->pol.prev;
    e->pol.prev = e->pol.next = NULL;
}

static void s_push_head(s_lru_t *l, cache_entry_t *e)
{
    e->pol.prev = NULL;
    e->pol.next = l->head;
    if (l->head) l->head->pol.prev = e; else l->tail = e;
    l->head = e;
}

static void s_insert(cache_policy_t *p, cache_entry_t *e) { s_push_head((s_lru_t *) p, e); }

static void s_access(cache_policy_t *p, cache_entry_t *e)
{
    s_lru_t *l = (s_lru_t *) p;
    if (l->head == e) return;
    s_unlink(l, e);
    s_push_head(l, e);
}

static void s_remove(cache_policy_t *p, cache_entry_t *e) { s_unlink((s_lru_t *) p, e); }
static cache_entry_t *s_victim(cache_policy_t *p) { return ((s_lru_t *) p)->tail; }

static void s_destroy(cache_policy_t **p)
{
    if (!p || !*p) return;
    free(*p);
    *p = NULL;
}

cache_policy_t *cache_policy_lru_new(void)
{
    s_lru_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->base = (cache_policy_t){ "lru", s_insert, s_access, s_remove, s_victim, s_destroy };
    return &l->base;
}

/* The table of known policies: add a row when a policy is added. */
static const struct { const char *name; cache_policy_t *(*make)(void); } s_policies[] = {
    { "lru", cache_policy_lru_new },
    { NULL, NULL }
};

cache_policy_t *cache_policy_new(const char *name)
{
    for (int i = 0; s_policies[i].name; i++)
        if (strcmp(s_policies[i].name, name ? name : "lru") == 0) return s_policies[i].make();
    return NULL;
}
