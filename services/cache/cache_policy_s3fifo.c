/* cache_policy_s3fifo: S3-FIFO (Yang, Zhang, Qiu, Yue and Vinayak, "FIFO queues are all you
 * need for cache eviction", SOSP 2023), as in the authors' libCacheSim implementation.
 *
 * Three FIFO queues: small (10% of capacity), main (the rest), and a ghost queue of the hashes
 * of keys evicted from small (as many as main holds). A new key enters small, or main when its
 * hash is in the ghost queue (it was evicted from small recently: it is not a one-hit wonder).
 * A hit only raises the entry's 2-bit frequency (0..3): no list moves, hits are lock-free
 * friendly. Eviction: when main is over its share (or small is empty) main's oldest entry is
 * reinserted at main's head with its frequency minus one if it was used, else evicted;
 * otherwise small's oldest is moved to main if it was hit while in small (one-hit wonders
 * leave from small without touching main), else evicted into the ghost queue.
 *
 * Costs: insert, hit and remove are O(1); victim() may move entries before it finds one, but
 * each move spends one unit of frequency earned by a hit (at most 3 per entry in main) or the
 * single promotion of an entry out of small, so it is amortised O(1). The ghost queue is a ring
 * of hashes with an open-addressing index (linear probing, backward-shift deletion): O(1).
 * Sizes are in entries (the owner's entry bound). */
#include "cache_policy.h"
#include <stdlib.h>

enum { Q_SMALL = 1, Q_MAIN = 2 };

/* A small-queue entry moves to main when it was hit at least this often while in small. */
#define S_MOVE_TO_MAIN 1

typedef struct {
    uint64_t *ring;        /* hashes, oldest at ring[head] once full */
    uint64_t *seqs;        /* the sequence number of each ring slot */
    size_t    cap, n, next;
    uint64_t  seq;
    struct { uint64_t h, seq; } *idx;   /* h == 0: empty slot */
    size_t    mask;
} s_ghost_t;

typedef struct {
    cache_policy_t base;
    cache_plist_t  small, main;
    size_t         small_target, main_target;
    s_ghost_t      ghost;
} s_s3_t;

static uint64_t s_gh(uint64_t h) { return h ? h : 1; }

static size_t s_idx_find(const s_ghost_t *g, uint64_t h)
{
    size_t i = (size_t) cache_mix64(h) & g->mask;
    while (g->idx[i].h && g->idx[i].h != h) i = (i + 1) & g->mask;
    return i;
}

static void s_idx_delete(s_ghost_t *g, size_t i)
{
    /* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & g->mask;
        if (!g->idx[j].h) break;
        size_t home = (size_t) cache_mix64(g->idx[j].h) & g->mask;
        /* Move j into the hole i unless its home lies cyclically in (i, j]. */
        int in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) { g->idx[i] = g->idx[j]; i = j; }
    }
    g->idx[i].h = 0;
}

/* 1 when h was in the ghost queue (and removes it from there). */
static int s_ghost_take(s_ghost_t *g, uint64_t h)
{
    h = s_gh(h);
    size_t i = s_idx_find(g, h);
    if (!g->idx[i].h) return 0;
    s_idx_delete(g, i);
    return 1;
}

static void s_ghost_put(s_ghost_t *g, uint64_t h)
{
    h = s_gh(h);
    if (g->n == g->cap) {   /* forget the oldest, unless its hash was put again since */
        uint64_t old = g->ring[g->next];
        size_t i = s_idx_find(g, old);
        if (g->idx[i].h && g->idx[i].seq == g->seqs[g->next]) s_idx_delete(g, i);
        g->n--;
    }
    uint64_t seq = ++g->seq;
    g->ring[g->next] = h;
    g->seqs[g->next] = seq;
    g->next = (g->next + 1) % g->cap;
    g->n++;
    size_t i = s_idx_find(g, h);
    g->idx[i].h = h;
    g->idx[i].seq = seq;
}

static int s_insert(cache_policy_t *p, cache_entry_t *e)
{
    s_s3_t *s = (s_s3_t *) p;
    e->pol.freq = 0;
    if (s_ghost_take(&s->ghost, e->hash)) {
        cache_plist_push_head(&s->main, e);
        e->pol.queue = Q_MAIN;
    } else {
        cache_plist_push_head(&s->small, e);
        e->pol.queue = Q_SMALL;
    }
    return 0;
}

static void s_access(cache_policy_t *p, cache_entry_t *e)
{
    (void) p;
    if (e->pol.freq < 3) e->pol.freq++;
}

static void s_remove(cache_policy_t *p, cache_entry_t *e, int evicted)
{
    s_s3_t *s = (s_s3_t *) p;
    if (e->pol.queue == Q_SMALL) {
        cache_plist_unlink(&s->small, e);
        if (evicted) s_ghost_put(&s->ghost, e->hash);
    } else {
        cache_plist_unlink(&s->main, e);
    }
    e->pol.queue = 0;
}

static cache_entry_t *s_victim(cache_policy_t *p)
{
    s_s3_t *s = (s_s3_t *) p;
    for (;;) {
        if (s->main.n > s->main_target || s->small.n == 0) {
            cache_entry_t *t = s->main.tail;
            if (!t) return NULL;
            if (t->pol.freq == 0) return t;
            t->pol.freq--;
            cache_plist_unlink(&s->main, t);
            cache_plist_push_head(&s->main, t);
        } else {
            cache_entry_t *t = s->small.tail;
            if (t->pol.freq < S_MOVE_TO_MAIN) return t;
            cache_plist_unlink(&s->small, t);
            cache_plist_push_head(&s->main, t);
            t->pol.queue = Q_MAIN;
            t->pol.freq = 0;
        }
    }
}

static void s_destroy(cache_policy_t **p)
{
    if (!p || !*p) return;
    s_s3_t *s = (s_s3_t *) *p;
    free(s->ghost.ring);
    free(s->ghost.seqs);
    free(s->ghost.idx);
    free(s);
    *p = NULL;
}

cache_policy_t *cache_policy_s3fifo_new(size_t capacity, uint64_t seed)
{
    (void) seed;
    s_s3_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base = (cache_policy_t){ "s3fifo", s_insert, s_access, s_remove, s_victim, s_destroy };
    s->small_target = (size_t) ((double) capacity * 0.10);
    if (s->small_target < 1) s->small_target = 1;
    s->main_target = capacity > s->small_target ? capacity - s->small_target : 1;
    s_ghost_t *g = &s->ghost;
    g->cap = s->main_target;
    size_t slots = 4;
    while (slots < 2 * g->cap) slots <<= 1;
    g->mask = slots - 1;
    g->ring = calloc(g->cap, sizeof *g->ring);
    g->seqs = calloc(g->cap, sizeof *g->seqs);
    g->idx = calloc(slots, sizeof *g->idx);
    if (!g->ring || !g->seqs || !g->idx) {
        cache_policy_t *b = &s->base;
        s_destroy(&b);
        return NULL;
    }
    return &s->base;
}
