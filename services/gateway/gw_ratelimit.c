/* gw_ratelimit: see gw_ratelimit.h. The table is CZMQ's zhashx (string keys, values owned by
 * the table); the sweep is amortised over requests, so no timer thread is needed. */
#include "gw_ratelimit.h"
#include "qv_hash.h"
#include <czmq.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define S_SWEEP_EVERY_MS (10 * 60 * 1000)

typedef struct {
    int64_t window;      /* index of the fixed window the counts below belong to */
    int64_t cur, prev;   /* requests in that window and in the one before */
} s_rec_t;

struct gw_ratelimit_t {
    int64_t         limit, window_ms;
    size_t          max_callers;
    zhashx_t       *recs;
    int64_t         next_sweep_ms;
    pthread_mutex_t mu;
};

static void s_rec_free(void **item)
{
    free(*item);
    *item = NULL;
}

gw_ratelimit_t *gw_ratelimit_new(int64_t limit, int64_t window_s, size_t max_callers)
{
    gw_ratelimit_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->limit = limit;
    self->window_ms = window_s * 1000;
    self->max_callers = max_callers;
    self->recs = qv_hashx_new();   /* addresses come from outside: keyed hash (qv_hash.h) */
    if (!self->recs) {
        free(self);
        return NULL;
    }
    zhashx_set_destructor(self->recs, s_rec_free);
    pthread_mutex_init(&self->mu, NULL);
    return self;
}

void gw_ratelimit_destroy(gw_ratelimit_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_ratelimit_t *self = *self_p;
    zhashx_destroy(&self->recs);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}

/* Moves a record's counts to window w. */
static void s_roll(s_rec_t *r, int64_t w)
{
    if (w == r->window)
        return;
    r->prev = w == r->window + 1 ? r->cur : 0;
    r->cur = 0;
    r->window = w;
}

/* Drops every record whose counts are both in the past (two windows or more ago). O(n), at
 * most once per S_SWEEP_EVERY_MS. */
static void s_sweep(gw_ratelimit_t *self, int64_t w)
{
    zlistx_t *stale = zlistx_new();
    if (!stale)
        return;
    for (s_rec_t *r = zhashx_first(self->recs); r; r = zhashx_next(self->recs))
        if (r->window + 1 < w)
            zlistx_add_end(stale, (void *) zhashx_cursor(self->recs));
    for (const char *k = zlistx_first(stale); k; k = zlistx_next(stale))
        zhashx_delete(self->recs, k);
    zlistx_destroy(&stale);
}

gw_rl_verdict_t gw_ratelimit_hit(gw_ratelimit_t *self, const char *caller, int64_t now_ms)
{
    gw_rl_verdict_t v = { .allowed = true, .limit = self->limit };
    int64_t w = now_ms / self->window_ms;
    int64_t into = now_ms - w * self->window_ms;             /* ms into the current window */
    pthread_mutex_lock(&self->mu);
    if (now_ms >= self->next_sweep_ms) {
        s_sweep(self, w);
        self->next_sweep_ms = now_ms + S_SWEEP_EVERY_MS;
    }
    s_rec_t *r = zhashx_lookup(self->recs, caller);
    if (!r) {
        if (zhashx_size(self->recs) >= self->max_callers) {
            pthread_mutex_unlock(&self->mu);
            v.allowed = false;
            v.full = true;
            v.reset_s = 1;
            return v;
        }
        r = calloc(1, sizeof *r);
        if (!r || zhashx_insert(self->recs, caller, r) != 0) {
            free(r);
            pthread_mutex_unlock(&self->mu);
            return v;    /* no memory: let it through rather than refuse everyone */
        }
        r->window = w;
    }
    s_roll(r, w);
    /* The previous window's share of the sliding window: the part not yet slid past. */
    double weight = (double) (self->window_ms - into) / (double) self->window_ms;
    double count = (double) r->prev * weight + (double) r->cur;
    if (count + 1 > (double) self->limit) {
        v.allowed = false;
        /* When will prev * weight' + cur + 1 <= limit? The weight falls linearly to 0 at the
         * window's end; with no previous share left it is the next window. */
        double need = count + 1 - (double) self->limit;             /* > 0 */
        int64_t ms = self->window_ms - into;
        if (r->prev > 0 && need <= (double) r->prev * weight)
            ms = (int64_t) (need / (double) r->prev * (double) self->window_ms) + 1;
        v.reset_s = (ms + 999) / 1000;
        v.remaining = 0;
    } else {
        r->cur++;
        count += 1;
        v.remaining = (int64_t) ((double) self->limit - count);
        if (v.remaining < 0)
            v.remaining = 0;
        v.reset_s = (self->window_ms - into + 999) / 1000;
    }
    pthread_mutex_unlock(&self->mu);
    return v;
}

bool gw_ratelimit_exempt(const char *path)
{
    static const char *const exempt[] = { "/livez", "/readyz", "/api/health", "/api/metrics",
                                          NULL };
    for (int i = 0; path && exempt[i]; i++)
        if (strcmp(path, exempt[i]) == 0)
            return true;
    return false;
}

size_t gw_ratelimit_callers(gw_ratelimit_t *self)
{
    pthread_mutex_lock(&self->mu);
    size_t n = zhashx_size(self->recs);
    pthread_mutex_unlock(&self->mu);
    return n;
}
