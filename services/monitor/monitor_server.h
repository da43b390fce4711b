/* monitor_server: the monitor daemon. Owns the bus (mon_proxy), collects every daemon's
 * metrics snapshots from it (mon_metrics), judges liveness from them (mon_health), reads
 * /proc (mon_proc), and answers over MDP as service "monitor":
 *   Metrics (Empty -> MetricsReply)   the merged Prometheus page
 *   Health  (Empty -> HealthReply)    ok, with one dependency per watched service
 *   Stats   (Empty -> StatsReply)     the monitor's own registry
 * It publishes health.<service> (HealthEvent) on every transition, alert.warning (JSON) when
 * a service goes down and alert.info when it comes back. */
#ifndef MONITOR_SERVER_H
#define MONITOR_SERVER_H
#include "mon_config.h"
#include "qv_rpc.h"

typedef struct monitor_server_t monitor_server_t;

/* cfg is borrowed and must outlive the server; its bus_pub is replaced (see the .c file).
 * Binds the bus; returns NULL (reason logged) when a bind fails. Caller owns the result. */
monitor_server_t *monitor_server_new(mon_cfg_t *cfg);
void monitor_server_destroy(monitor_server_t **self_p);
/* Runs until SIGINT/SIGTERM. Returns 0, or -1 when the server could not start. */
int monitor_server_run(monitor_server_t *self);

/* The method table, for qv_dispatch in the selftest. The app is a monitor_server_t. */
extern const qv_method_t monitor_methods[];

/* Ports actually bound (useful with tcp://127.0.0.1:*), or -1. */
int monitor_server_xsub_port(monitor_server_t *self);
int monitor_server_xpub_port(monitor_server_t *self);

int monitor_server_selftest(void);
#endif
