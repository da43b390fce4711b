/* mon_health: service liveness from snapshot arrival times (see mon_health.h).
 * The state is derived from one number per service, the time since any instance was last
 * heard: up while it is below stale_after_ms, down from then on. A transition is emitted at
 * the tick that first sees it, so a service flapping faster than the tick interval is seen as
 * steady, which is what an operator wants from a liveness signal. */
#include "mon_health.h"
#include "qv_log.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_SERVICES 256     /* names are checked upstream; this bounds a flood of them */
#define S_MAX_INSTANCES 256

typedef enum { S_NEW, S_UP, S_DOWN } s_state_t;

typedef struct {
    char    name[129];
    int64_t last_ms;
} s_instance_t;

typedef struct {
    char          name[129];
    s_state_t     state;
    int64_t       last_ms;       /* any instance */
    s_instance_t *inst;
    int           n_inst;
} s_service_t;

struct mon_health_t {
    pthread_mutex_t    lock;
    int64_t            stale_ms;
    mon_health_emit_fn emit;
    void              *emit_arg;
    s_service_t       *svc;
    int                n_svc;
};

mon_health_t *mon_health_new(int64_t stale_after_ms, mon_health_emit_fn emit, void *emit_arg)
{
    mon_health_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->lock, NULL);
    self->stale_ms = stale_after_ms > 0 ? stale_after_ms : 3000;
    self->emit = emit;
    self->emit_arg = emit_arg;
    return self;
}

void mon_health_destroy(mon_health_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mon_health_t *self = *self_p;
    for (int i = 0; i < self->n_svc; i++)
        free(self->svc[i].inst);
    free(self->svc);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

static s_service_t *s_find_service(mon_health_t *self, const char *name, bool create)
{
    for (int i = 0; i < self->n_svc; i++)
        if (strcmp(self->svc[i].name, name) == 0)
            return &self->svc[i];
    if (!create || self->n_svc >= S_MAX_SERVICES)
        return NULL;
    s_service_t *grown = realloc(self->svc, (size_t) (self->n_svc + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    self->svc = grown;
    s_service_t *s = &grown[self->n_svc++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->state = S_NEW;
    return s;
}

void mon_health_seen(mon_health_t *self, const char *service, const char *instance,
                     int64_t now_ms)
{
    pthread_mutex_lock(&self->lock);
    s_service_t *s = s_find_service(self, service, true);
    if (s) {
        s->last_ms = now_ms;
        int i = 0;
        while (i < s->n_inst && strcmp(s->inst[i].name, instance) != 0)
            i++;
        if (i == s->n_inst && s->n_inst < S_MAX_INSTANCES) {
            s_instance_t *grown = realloc(s->inst, (size_t) (s->n_inst + 1) * sizeof *grown);
            if (grown) {
                s->inst = grown;
                snprintf(grown[i].name, sizeof grown[i].name, "%s", instance);
                s->n_inst++;
            }
        }
        if (i < s->n_inst)
            s->inst[i].last_ms = now_ms;
    }
    pthread_mutex_unlock(&self->lock);
}

static int s_live_instances(const mon_health_t *self, const s_service_t *s, int64_t now_ms)
{
    int n = 0;
    for (int i = 0; i < s->n_inst; i++)
        if (now_ms - s->inst[i].last_ms < self->stale_ms)
            n++;
    return n;
}

int mon_health_tick(mon_health_t *self, int64_t now_ms)
{
    pthread_mutex_lock(&self->lock);
    int n = self->n_svc;
    /* Copies, so that emit runs without the lock and may call back in. */
    mon_health_event_t *evs = n ? calloc((size_t) n, sizeof *evs) : NULL;
    char (*names)[129] = n ? calloc((size_t) n, sizeof *names) : NULL;
    int count = 0;
    for (int i = 0; evs && names && i < n; i++) {
        s_service_t *s = &self->svc[i];
        int64_t silent = now_ms - s->last_ms;
        bool fresh = silent < self->stale_ms;
        const char *status = NULL;
        bool recovered = false;
        if (fresh && s->state != S_UP) {
            recovered = s->state == S_DOWN;
            s->state = S_UP;
            status = "up";
        }
        else if (!fresh && s->state != S_DOWN) {
            /* A service first seen with an old timestamp goes straight to down: its "up"
             * would be stale news. */
            s->state = S_DOWN;
            status = "down";
        }
        if (!status)
            continue;
        snprintf(names[count], sizeof names[count], "%s", s->name);
        evs[count] = (mon_health_event_t) { names[count], status, recovered,
                                            s_live_instances(self, s, now_ms), silent };
        count++;
    }
    pthread_mutex_unlock(&self->lock);
    for (int i = 0; i < count; i++)
        if (self->emit)
            self->emit(self->emit_arg, &evs[i]);
    free(evs);
    free(names);
    return count;
}

void mon_health_forget(mon_health_t *self, int64_t now_ms, int64_t forget_ms)
{
    pthread_mutex_lock(&self->lock);
    for (int i = 0; i < self->n_svc; i++) {
        s_service_t *s = &self->svc[i];
        int keep = 0;
        for (int j = 0; j < s->n_inst; j++)
            if (now_ms - s->inst[j].last_ms <= forget_ms)
                s->inst[keep++] = s->inst[j];
        s->n_inst = keep;
    }
    pthread_mutex_unlock(&self->lock);
}

int mon_health_list(mon_health_t *self, int64_t now_ms, mon_health_view_t *out, int max)
{
    pthread_mutex_lock(&self->lock);
    int n = self->n_svc;
    for (int i = 0; i < n && i < max; i++) {
        s_service_t *s = &self->svc[i];
        snprintf(out[i].service, sizeof out[i].service, "%s", s->name);
        /* The view reports the state the last tick published, so it agrees with the bus. */
        out[i].up = s->state != S_DOWN;
        out[i].instances = s_live_instances(self, s, now_ms);
        out[i].silent_ms = now_ms - s->last_ms;
    }
    pthread_mutex_unlock(&self->lock);
    return n;
}

/* ---- selftest -------------------------------------------------------------------------- */

typedef struct {
    char log[1024];
    int  n;
} s_seen_t;

static void s_test_emit(void *arg, const mon_health_event_t *ev)
{
    s_seen_t *seen = (s_seen_t *) arg;
    size_t len = strlen(seen->log);
    snprintf(seen->log + len, sizeof seen->log - len, "%s%s:%s%s/%d", len ? " " : "",
             ev->service, ev->status, ev->recovered ? "!" : "", ev->instances);
    seen->n++;
}

#define S_EXPECT(want) do { if (strcmp(seen.log, want) != 0) { \
        fprintf(stderr, "health: line %d: got '%s', want '%s'\n", __LINE__, seen.log, want); \
        goto done; } seen.log[0] = '\0'; } while (0)

int mon_health_selftest(void)
{
    int rc = -1;
    s_seen_t seen = { "", 0 };
    mon_health_t *h = mon_health_new(3000, s_test_emit, &seen);
    if (!h)
        return -1;
    int64_t t = 1000000;
    mon_health_tick(h, t);
    S_EXPECT("");                                   /* nothing known, nothing said */

    mon_health_seen(h, "dbopt", "a", t);
    mon_health_seen(h, "dbopt", "b", t);
    mon_health_seen(h, "cache", "c", t);
    mon_health_tick(h, t + 10);
    S_EXPECT("dbopt:up/2 cache:up/1");              /* first sighting */
    mon_health_tick(h, t + 20);
    S_EXPECT("");                                   /* said once */

    /* dbopt/a stops; b goes on: the service stays up with one instance. */
    for (int64_t dt = 1000; dt <= 5000; dt += 1000) {
        mon_health_seen(h, "dbopt", "b", t + dt);
        mon_health_seen(h, "cache", "c", t + dt);
        mon_health_tick(h, t + dt + 10);
    }
    S_EXPECT("");
    mon_health_view_t v[4];
    if (mon_health_list(h, t + 5010, v, 4) != 2 || strcmp(v[0].service, "dbopt") != 0
        || !v[0].up || v[0].instances != 1) {
        fprintf(stderr, "health: view wrong\n");
        goto done;
    }

    /* cache stops at t+5000. Still up just before stale_after, down at it. */
    mon_health_seen(h, "dbopt", "b", t + 7000);
    mon_health_tick(h, t + 7999);
    S_EXPECT("");
    mon_health_seen(h, "dbopt", "b", t + 8000);
    mon_health_tick(h, t + 8000);
    S_EXPECT("cache:down/0");
    mon_health_tick(h, t + 9000);
    S_EXPECT("");                                   /* down is said once */
    if (mon_health_list(h, t + 9000, v, 4) != 2 || v[1].up || v[1].silent_ms != 4000) {
        fprintf(stderr, "health: down view wrong\n");
        goto done;
    }

    /* cache returns (a new instance): up, marked as a recovery. */
    mon_health_seen(h, "dbopt", "b", t + 11000);
    mon_health_seen(h, "cache", "c2", t + 12000);
    mon_health_tick(h, t + 12001);
    S_EXPECT("cache:up!/1");

    /* Everything stops: both go down in one tick. */
    mon_health_tick(h, t + 30000);
    S_EXPECT("dbopt:down/0 cache:down/0");
    mon_health_forget(h, t + 80000, 60000);
    if (mon_health_list(h, t + 80000, v, 4) != 2 || v[0].instances != 0) {
        fprintf(stderr, "health: forget wrong\n");
        goto done;
    }
    /* A service first heard long ago (its timestamp is old at the tick) is reported down. */
    mon_health_seen(h, "stream", "s", t + 80000);
    mon_health_tick(h, t + 90000);
    S_EXPECT("stream:down/0");
    rc = 0;
done:
    mon_health_destroy(&h);
    return rc;
}
