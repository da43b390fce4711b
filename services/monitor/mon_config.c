/* mon_config: the monitor's key table (see mon_config.h). Bounds keep every timer and queue
 * within what makes sense, so a typo stops the daemon at start instead of misbehaving. */
#include "mon_config.h"
#include <stddef.h>

const qv_cfg_key_t mon_cfg_keys[] = {
    QV_COMMON_CFG_KEYS(mon_cfg_t),
    { "bus_xsub_bind", QV_CFG_STR, offsetof(mon_cfg_t, bus_xsub_bind), "tcp://*:5556", 0, 1024,
      NULL, QV_CFG_NONEMPTY,
      "bus ingest: XSUB bind endpoints, comma-separated (every daemon's bus_pub points here)" },
    { "bus_xpub_bind", QV_CFG_STR, offsetof(mon_cfg_t, bus_xpub_bind), "tcp://*:5557", 0, 1024,
      NULL, QV_CFG_NONEMPTY,
      "bus fan-out: XPUB bind endpoints, comma-separated (gateways and operators subscribe)" },
    { "bus_hwm", QV_CFG_INT, offsetof(mon_cfg_t, bus_hwm), "10000", 10, 10000000, NULL, 0,
      "messages queued per subscriber before a slow one starts losing messages" },
    { "stale_after_ms", QV_CFG_INT, offsetof(mon_cfg_t, stale_after_ms), "3000", 100, 600000,
      NULL, 0, "a service whose metrics stop for this long is reported down" },
    { "forget_after_ms", QV_CFG_INT, offsetof(mon_cfg_t, forget_after_ms), "60000", 1000,
      86400000, NULL, 0, "an instance silent this long is dropped from the metrics page" },
    { "proc_interval_ms", QV_CFG_INT, offsetof(mon_cfg_t, proc_interval_ms), "1000", 100, 60000,
      NULL, 0, "how often the host and process gauges are read from /proc" },
    { NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL }
};
