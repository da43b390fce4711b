/* mon_config: the monitor's configuration, one declarative key table (lib/qv_config.h loads
 * it from defaults, --config FILE, QUAVER_<KEY> environment and --set). */
#ifndef MON_CONFIG_H
#define MON_CONFIG_H
#include "qv_config.h"

typedef struct {
    QV_COMMON_CFG_FIELDS          /* first: the server reads this prefix as qv_common_cfg_t */
    char    *bus_xsub_bind;       /* where publishers connect (XSUB) */
    char    *bus_xpub_bind;       /* where subscribers connect (XPUB) */
    int64_t  bus_hwm;             /* per-subscriber queue, messages, before it loses some */
    int64_t  stale_after_ms;      /* a service silent this long is down */
    int64_t  forget_after_ms;     /* an instance silent this long leaves the page */
    int64_t  proc_interval_ms;    /* /proc gauges refresh */
} mon_cfg_t;

/* NULL-terminated. */
extern const qv_cfg_key_t mon_cfg_keys[];
#endif
