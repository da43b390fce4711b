/* quaver-gateway: HTTP/WebSocket front door with the MDP broker inside. Thin: load config,
 * check it, start the server, wait for SIGINT/SIGTERM, stop. */
#include "qv_daemon.h"
#include "gw_server.h"
#include "qv_log.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    gw_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    int rc;
    if (qv_daemon_init(gw_cfg_keys, &cfg, "gateway", argc, argv, &rc) != 0)
        return rc;
    char err[512];
    if (gw_cfg_check(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        qv_config_free(gw_cfg_keys, &cfg);
        return 2;
    }
    gw_server_t *srv = gw_server_new(&cfg);
    if (!srv) {
        qv_config_free(gw_cfg_keys, &cfg);
        return 1;
    }
    gw_server_run(srv);
    gw_server_destroy(&srv);
    qv_config_free(gw_cfg_keys, &cfg);
    return 0;
}
