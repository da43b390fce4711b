/* cache_policy_wtinylfu: W-TinyLFU with an adaptive window, after Caffeine (Einziger,
 * Friedman and Manes, "TinyLFU: A Highly Efficient Cache Admission Policy", 2017; Einziger et
 * al., "Adaptive Software Cache Management", Middleware 2018; Caffeine's BoundedLocalCache).
 *
 * Three LRU queues: a small admission window (1% of capacity at first), and the main space as a
 * segmented LRU: probation (new to main) and protected (hit while in probation; 80% of main).
 * Every access, hit or miss, is counted in a 4-bit count-min sketch that halves itself after
 * 10 x capacity samples (cache_sketch.c). A new entry enters the window; the window's LRU
 * entry overflows into probation as the "candidate". When the owner needs a victim, the
 * candidate and probation's LRU entry (the "victim") are compared by their sketch estimates:
 * the candidate is admitted only when it is more frequent (Caffeine's rule, including its
 * hash-flooding guard: a candidate with estimate >= 6 that loses still wins 1 time in 128, by
 * a deterministic PRNG). A hit in probation promotes to protected; protected overflow demotes
 * its LRU entry back to probation.
 *
 * Hill climbing (Caffeine's "simple" climber): the hit rate of each sample period (10 x
 * capacity requests) is compared with the previous one; the window grows or shrinks by a step
 * in the direction that helped (6.25% of capacity, restarting after a hit-rate change of 5
 * points, else decaying by 0.98). Moving entries between the window and main on a step costs
 * O(step) once per sample period: amortised O(1) per request. Everything else is O(1).
 *
 * The capacity is in entries (the owner's entry bound): under a byte bound the owner simply
 * calls victim() more often, and the queue targets stay in entries. */
#include "cache_policy.h"
#include "cache_sketch.h"
#include <math.h>
#include <stdlib.h>

enum { Q_WINDOW = 1, Q_PROBATION = 2, Q_PROTECTED = 3 };

#define S_STEP_PERCENT   0.0625
#define S_RESTART        0.05
#define S_STEP_DECAY     0.98
#define S_HASHDOS        6

typedef struct {
    cache_policy_t  base;
    cache_plist_t   window, probation, protected_;
    size_t          capacity, max_window, max_protected;
    cache_entry_t  *cand;           /* the last entry moved from the window to probation */
    cache_sketch_t *sketch;
    uint64_t        rng;
    /* hill climber */
    uint64_t        hits, misses;
    double          prev_rate, step;
} s_wt_t;

static void s_move(cache_plist_t *from, cache_plist_t *to, cache_entry_t *e, uint8_t q)
{
    cache_plist_unlink(from, e);
    cache_plist_push_head(to, e);
    e->pol.queue = q;
}

static void s_demote_protected(s_wt_t *w)
{
    while (w->protected_.n > w->max_protected && w->protected_.tail)
        s_move(&w->protected_, &w->probation, w->protected_.tail, Q_PROBATION);
}

/* Window overflow goes to probation's MRU end; the last one moved is the candidate. */
static void s_drain_window(s_wt_t *w)
{
    while (w->window.n > w->max_window && w->window.tail) {
        cache_entry_t *e = w->window.tail;
        s_move(&w->window, &w->probation, e, Q_PROBATION);
        w->cand = e;
    }
}

static void s_climb(s_wt_t *w)
{
    uint64_t req = w->hits + w->misses;
    if (req < cache_sketch_sample_size(w->sketch)) return;
    double rate = (double) w->hits / (double) req;
    double change = rate - w->prev_rate;
    double amount = change >= 0 ? w->step : -w->step;
    double next = fabs(change) >= S_RESTART
                      ? S_STEP_PERCENT * (double) w->capacity * (amount >= 0 ? 1 : -1)
                      : S_STEP_DECAY * amount;
    w->prev_rate = rate;
    w->step = next;
    w->hits = w->misses = 0;
    long q = lround(amount);
    if (q > 0) {
        size_t quota = (size_t) q < w->max_protected ? (size_t) q : w->max_protected;
        w->max_protected -= quota;
        w->max_window += quota;
        s_demote_protected(w);
        /* Pull main's LRU entries into the window so it fills to its new size. */
        for (size_t i = 0; i < quota && w->window.n < w->max_window; i++) {
            cache_entry_t *e = w->probation.tail;
            if (e) { s_move(&w->probation, &w->window, e, Q_WINDOW); continue; }
            e = w->protected_.tail;
            if (!e) break;
            s_move(&w->protected_, &w->window, e, Q_WINDOW);
        }
        if (w->cand && w->cand->pol.queue != Q_PROBATION) w->cand = NULL;
    } else if (q < 0) {
        size_t quota = (size_t) -q;
        if (quota > w->max_window - 1) quota = w->max_window - 1;
        w->max_window -= quota;
        w->max_protected += quota;
        s_drain_window(w);
    }
}

static int s_insert(cache_policy_t *p, cache_entry_t *e)
{
    s_wt_t *w = (s_wt_t *) p;
    cache_sketch_increment(w->sketch, e->hash);
    w->misses++;
    cache_plist_push_head(&w->window, e);
    e->pol.queue = Q_WINDOW;
    s_drain_window(w);
    s_climb(w);
    return 0;
}

static void s_access(cache_policy_t *p, cache_entry_t *e)
{
    s_wt_t *w = (s_wt_t *) p;
    cache_sketch_increment(w->sketch, e->hash);
    w->hits++;
    switch (e->pol.queue) {
    case Q_WINDOW:
        s_move(&w->window, &w->window, e, Q_WINDOW);
        break;
    case Q_PROBATION:
        if (w->cand == e) w->cand = NULL;
        s_move(&w->probation, &w->protected_, e, Q_PROTECTED);
        s_demote_protected(w);
        break;
    default:
        s_move(&w->protected_, &w->protected_, e, Q_PROTECTED);
        break;
    }
    s_climb(w);
}

static cache_plist_t *s_list(s_wt_t *w, cache_entry_t *e)
{
    return e->pol.queue == Q_WINDOW ? &w->window
         : e->pol.queue == Q_PROBATION ? &w->probation : &w->protected_;
}

static void s_remove(cache_policy_t *p, cache_entry_t *e, int evicted)
{
    (void) evicted;
    s_wt_t *w = (s_wt_t *) p;
    if (w->cand == e) w->cand = NULL;
    cache_plist_unlink(s_list(w, e), e);
    e->pol.queue = 0;
}

static int s_admit(s_wt_t *w, uint64_t cand_hash, uint64_t victim_hash)
{
    unsigned c = cache_sketch_estimate(w->sketch, cand_hash);
    unsigned v = cache_sketch_estimate(w->sketch, victim_hash);
    if (c > v) return 1;
    if (c >= S_HASHDOS) return (cache_rand64(&w->rng) & 127) == 0;
    return 0;
}

static cache_entry_t *s_victim(cache_policy_t *p)
{
    s_wt_t *w = (s_wt_t *) p;
    cache_entry_t *c = w->cand;
    w->cand = NULL;
    if (c && c->pol.queue == Q_PROBATION) {
        cache_entry_t *v = w->probation.tail;
        if (v == c) v = w->protected_.tail;   /* nothing older in probation */
        if (!v) return c;
        return s_admit(w, c->hash, v->hash) ? v : c;
    }
    if (w->probation.tail) return w->probation.tail;
    if (w->protected_.tail) return w->protected_.tail;
    return w->window.tail;
}

static void s_destroy(cache_policy_t **p)
{
    if (!p || !*p) return;
    s_wt_t *w = (s_wt_t *) *p;
    cache_sketch_destroy(&w->sketch);
    free(w);
    *p = NULL;
}

cache_policy_t *cache_policy_wtinylfu_new(size_t capacity, uint64_t seed)
{
    s_wt_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->base = (cache_policy_t){ "wtinylfu", s_insert, s_access, s_remove, s_victim, s_destroy };
    w->sketch = cache_sketch_new(capacity);
    if (!w->sketch) { free(w); return NULL; }
    w->capacity = capacity;
    w->max_window = (size_t) ((double) capacity * 0.01);
    if (w->max_window < 1) w->max_window = 1;
    size_t main = capacity > w->max_window ? capacity - w->max_window : 1;
    w->max_protected = (size_t) ((double) main * 0.8);
    w->step = -S_STEP_PERCENT * (double) capacity;
    w->rng = seed;
    return &w->base;
}

cache_sketch_t *cache_policy_sketch(cache_policy_t *p)
{
    return p && p->destroy == s_destroy ? ((s_wt_t *) p)->sketch : NULL;
}
