/* cache_policy_random: a uniformly random victim. The entries sit in an array (each entry
 * remembers its index in pol.aux); removal swaps the last element into the hole, so insert,
 * remove and victim are O(1) (insert amortised: the array doubles when full). The PRNG is
 * splitmix64 seeded by the caller, so a test or a replay gives the same victims every run. */
#include "cache_policy.h"
#include <stdlib.h>

typedef struct {
    cache_policy_t  base;
    cache_entry_t **arr;
    size_t          n, cap;
    uint64_t        rng;
} s_random_t;

static int s_insert(cache_policy_t *p, cache_entry_t *e)
{
    s_random_t *r = (s_random_t *) p;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        cache_entry_t **a = realloc(r->arr, cap * sizeof *a);
        if (!a) return -1;
        r->arr = a;
        r->cap = cap;
    }
    e->pol.aux = r->n;
    r->arr[r->n++] = e;
    return 0;
}

static void s_access(cache_policy_t *p, cache_entry_t *e) { (void) p; (void) e; }

static void s_remove(cache_policy_t *p, cache_entry_t *e, int evicted)
{
    (void) evicted;
    s_random_t *r = (s_random_t *) p;
    size_t i = (size_t) e->pol.aux;
    cache_entry_t *last = r->arr[--r->n];
    r->arr[i] = last;
    last->pol.aux = i;
}

static cache_entry_t *s_victim(cache_policy_t *p)
{
    s_random_t *r = (s_random_t *) p;
    if (r->n == 0) return NULL;
    return r->arr[cache_rand64(&r->rng) % r->n];
}

static void s_destroy(cache_policy_t **p)
{
    if (!p || !*p) return;
    s_random_t *r = (s_random_t *) *p;
    free(r->arr);
    free(r);
    *p = NULL;
}

cache_policy_t *cache_policy_random_new(size_t capacity, uint64_t seed)
{
    (void) capacity;
    s_random_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->base = (cache_policy_t){ "random", s_insert, s_access, s_remove, s_victim, s_destroy };
    r->rng = seed;
    return &r->base;
}
