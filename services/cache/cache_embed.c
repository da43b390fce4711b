/* cache_embed: an app plus the thread that ticks it (see cache_embed.h). */
#include "cache_embed.h"
#include "qv_log.h"
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#define S_TICK_MS 250   /* as the daemon's timer */

struct cache_embed_t {
    cache_app_t    *app;
    pthread_t       thread;
    bool            running;
    bool            stop;      /* under mu */
    pthread_mutex_t mu;
    pthread_cond_t  cv;        /* signalled by destroy, so it does not wait out a tick */
};

static void *s_ticker(void *arg)
{
    cache_embed_t *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_nsec += S_TICK_MS * 1000000L;
        t.tv_sec += t.tv_nsec / 1000000000L;
        t.tv_nsec %= 1000000000L;
        int rc = 0;
        while (!e->stop && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&e->cv, &e->mu, &t);
        if (e->stop) break;
        pthread_mutex_unlock(&e->mu);
        cache_app_tick(e->app);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

cache_embed_t *cache_embed_new(const cache_cfg_t *cfg, qv_metrics_t *metrics)
{
    cache_embed_t *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    pthread_mutex_init(&e->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cv, &ca);
    pthread_condattr_destroy(&ca);
    e->app = cache_app_new(cfg, cfg->redis_url);
    if (!e->app) { cache_embed_destroy(&e); return NULL; }
    cache_app_set_metrics(e->app, metrics);
    if (pthread_create(&e->thread, NULL, s_ticker, e) != 0) {
        qv_error("cache: cannot start the embedded tier's timer thread");
        cache_embed_destroy(&e);
        return NULL;
    }
    e->running = true;
    return e;
}

void cache_embed_destroy(cache_embed_t **self_p)
{
    if (!self_p || !*self_p) return;
    cache_embed_t *e = *self_p;
    if (e->running) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    cache_app_destroy(&e->app);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
    *self_p = NULL;
}

cache_app_t *cache_embed_app(cache_embed_t *e) { return e->app; }
