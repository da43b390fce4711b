/* qv_metrics: a registry of counters, gauges and histograms (fixed buckets) with constant
 * labels. Renders the Prometheus text exposition format 0.0.4 (what `promtool check metrics`
 * accepts) and snapshots itself into a quaver.v1.MetricsSnapshot for the bus.
 * Thread-safe: registration and updates take the registry's mutex (updates are a few ns of
 * work; contention is not an issue at our request rates).
 * Ownership: the registry owns every metric; a qv_metric_t * stays valid until
 * qv_metrics_destroy. Registering an existing (name, labels) returns the same metric. */
#ifndef QV_METRICS_H
#define QV_METRICS_H
#include <stddef.h>
#include "quaver/v1/bus.pb-c.h"

typedef struct qv_metrics_t qv_metrics_t;
typedef struct qv_metric_t qv_metric_t;

qv_metrics_t *qv_metrics_new(const char *service, const char *instance);
void qv_metrics_destroy(qv_metrics_t **self_p);

/* name: a Prometheus metric name ("quaver_rpc_requests_total"); labels: "k=v,k2=v2" or NULL
 * (values may not contain ',' or '='). Returns NULL on a bad name or label. */
qv_metric_t *qv_metrics_counter(qv_metrics_t *m, const char *name, const char *help,
                                const char *labels);
qv_metric_t *qv_metrics_gauge(qv_metrics_t *m, const char *name, const char *help,
                              const char *labels);
/* buckets: upper bounds, ascending, without +Inf (added). NULL/0 = QV_LATENCY_BUCKETS. */
qv_metric_t *qv_metrics_histogram(qv_metrics_t *m, const char *name, const char *help,
                                  const char *labels, const double *buckets, int nbuckets);

/* Seconds: 0.1 ms .. 10 s. */
extern const double QV_LATENCY_BUCKETS[];
extern const int QV_LATENCY_NBUCKETS;

void qv_metric_add(qv_metric_t *c, double v);      /* counter or gauge */
void qv_metric_set(qv_metric_t *g, double v);      /* gauge */
void qv_metric_observe(qv_metric_t *h, double v);  /* histogram */
double qv_metric_value(qv_metric_t *c);            /* counter/gauge value; histogram count */

/* Prometheus text of this registry alone. Caller frees. */
char *qv_metrics_render(qv_metrics_t *m);

/* Snapshot for the bus. Caller frees with qv_metrics_snapshot_free. */
Quaver__V1__MetricsSnapshot *qv_metrics_snapshot(qv_metrics_t *m);
void qv_metrics_snapshot_free(Quaver__V1__MetricsSnapshot *s);

/* Merges snapshots (from several daemons) into one Prometheus page: families with the same
 * name are written once (HELP/TYPE once, all samples together); when add_labels is true each
 * sample gets service="..",instance=".." from its snapshot. Caller frees. */
char *qv_prom_render(Quaver__V1__MetricsSnapshot *const *snaps, size_t n, int add_labels);

int qv_metrics_selftest(void);
#endif
