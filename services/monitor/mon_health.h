/* mon_health: is each service alive, judged by its metrics snapshots on the bus.
 * A service is "up" from the first snapshot of any of its instances; when no instance has
 * sent one for stale_after_ms it becomes "down"; the next snapshot makes it "up" again. Each
 * transition is reported once, through the emit callback, from mon_health_tick (so events
 * come from one thread, the server's timer, whatever thread saw the snapshot).
 * The clock is injected: every call takes now_ms (monotonic), so the selftest drives time.
 * Thread-safe: one mutex; emit is called without it held, so it may call back in. */
#ifndef MON_HEALTH_H
#define MON_HEALTH_H
#include <stdbool.h>
#include <stdint.h>

typedef struct mon_health_t mon_health_t;

typedef struct {
    const char *service;
    const char *status;          /* "up" or "down" */
    bool        recovered;       /* "up" after having been "down" (not the first sighting) */
    int         instances;       /* instances heard within stale_after_ms */
    int64_t     silent_ms;       /* since the last snapshot of any instance */
} mon_health_event_t;

typedef void (*mon_health_emit_fn)(void *arg, const mon_health_event_t *ev);

/* Caller owns the result. */
mon_health_t *mon_health_new(int64_t stale_after_ms, mon_health_emit_fn emit, void *emit_arg);
void mon_health_destroy(mon_health_t **self_p);

/* A snapshot from service/instance arrived at now_ms. Names are copied. */
void mon_health_seen(mon_health_t *self, const char *service, const char *instance,
                     int64_t now_ms);
/* Applies the rules at now_ms and emits what changed. Returns how many events. */
int mon_health_tick(mon_health_t *self, int64_t now_ms);
/* Forgets instances not heard for forget_ms (a service keeps its state; its instance count
 * goes to 0). */
void mon_health_forget(mon_health_t *self, int64_t now_ms, int64_t forget_ms);

/* Read-only view, one line per service, for the Health RPC. Fills up to max entries and
 * returns how many services are known. */
typedef struct {
    char    service[129];
    bool    up;
    int     instances;
    int64_t silent_ms;
} mon_health_view_t;
int mon_health_list(mon_health_t *self, int64_t now_ms, mon_health_view_t *out, int max);

int mon_health_selftest(void);
#endif
