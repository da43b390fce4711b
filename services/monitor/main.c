/* quaver-monitor: the bus (XSUB/XPUB proxy), the merged Prometheus page, host and process
 * gauges, and service health from the metrics stream. See README.md and monitor_server.h. */
#include "qv_daemon.h"
#include "mon_config.h"
#include "monitor_server.h"
#include "qv_log.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    mon_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    int rc;
    if (qv_daemon_init(mon_cfg_keys, &cfg, "monitor", argc, argv, &rc) != 0)
        return rc;
    monitor_server_t *server = monitor_server_new(&cfg);
    if (!server) {
        qv_error("could not start (see above)");
        qv_config_free(mon_cfg_keys, &cfg);
        return 1;
    }
    rc = monitor_server_run(server);
    monitor_server_destroy(&server);
    qv_config_free(mon_cfg_keys, &cfg);
    return rc == 0 ? 0 : 1;
}
