/* mon_metrics: the latest MetricsSnapshot of every (service, instance) heard on the bus, and
 * the merged Prometheus page built from them.
 *
 * Guarantees:
 * - What arrives from the network is checked before it is kept: an undecodable message, a
 *   snapshot without a usable service/instance name, or one past the instance limit is
 *   rejected whole; a family with an invalid name or type, and a sample with an invalid
 *   suffix or label, is dropped alone. So one bad publisher cannot make the page invalid.
 * - The page is one qv_prom_render over every kept snapshot plus the caller's own, with
 *   service/instance labels added: each family's HELP/TYPE appear once. When two publishers
 *   disagree on a family's type, the first one (the monitor's own, then by service/instance
 *   order) wins and the disagreeing family is left out of the page.
 * - An instance not heard from for max_age_ms is forgotten by mon_metrics_expire.
 * Thread-safe: one mutex around the table (the tap writes from the proxy thread, the
 * Metrics RPC renders from worker threads, the expiry runs on the server timer). */
#ifndef MON_METRICS_H
#define MON_METRICS_H
#include <stddef.h>
#include <stdint.h>
#include "quaver/v1/bus.pb-c.h"

#define MON_METRICS_MAX_INSTANCES 1024
#define MON_NAME_MAX 128         /* longest service or instance name we keep (as the config key) */

typedef struct mon_metrics_t mon_metrics_t;

/* Caller owns the result. */
mon_metrics_t *mon_metrics_new(void);
void mon_metrics_destroy(mon_metrics_t **self_p);

/* body: a packed quaver.v1.BusMessage from the bus (borrowed). On success stores its
 * snapshot (replacing that instance's previous one), copies the names into service/instance
 * (each at least MON_NAME_MAX + 1 bytes; may be NULL) and returns 0. Returns -1 when the
 * message was rejected (counted). now_ms: monotonic. */
int mon_metrics_put_bus(mon_metrics_t *self, const uint8_t *body, size_t len, int64_t now_ms,
                        char *service, char *instance);

/* Forgets instances last heard before now_ms - max_age_ms; returns how many. */
int mon_metrics_expire(mon_metrics_t *self, int64_t now_ms, int64_t max_age_ms);

/* The merged page. own (borrowed, may be NULL) is rendered first, as trusted input, in
 * place of any stored snapshot with the same service and instance (the monitor's own
 * snapshot comes back through its own bus; the page shows the live registry instead).
 * Caller frees the result with free(); NULL on out of memory. */
char *mon_metrics_render(mon_metrics_t *self, Quaver__V1__MetricsSnapshot *own);

typedef struct {
    size_t   instances;          /* kept now */
    uint64_t accepted;           /* snapshots stored so far */
    uint64_t rejected;           /* messages rejected whole */
    uint64_t dropped_families;   /* families or samples left out by the checks */
    uint64_t expired;            /* instances forgotten */
} mon_metrics_stats_t;
void mon_metrics_stats(mon_metrics_t *self, mon_metrics_stats_t *out);

/* A name we accept for a service or instance: 1..MON_NAME_MAX of [A-Za-z0-9_.:-]. These end
 * up as label values and in bus topics, so nothing that needs escaping gets in. */
int mon_name_ok(const char *s);

int mon_metrics_selftest(void);
#endif
