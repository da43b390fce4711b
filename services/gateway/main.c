/* quaver-gateway: HTTP/WebSocket front door with the MDP broker inside. Thin: load config,
 * check it, start the server, wait for SIGINT/SIGTERM, stop. */
#include "gw_server.h"
#include "qv_log.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    gw_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    int rc = qv_config_load(gw_cfg_keys, &cfg, "gateway", argc, argv, NULL);
    if (rc != 0) {
        qv_config_free(gw_cfg_keys, &cfg);
        return rc == 1 ? 0 : 1;
    }
    char err[512];
    if (gw_cfg_check(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        qv_config_free(gw_cfg_keys, &cfg);
        return 1;
    }
    if (qv_log_init("gateway", cfg.log_format, cfg.log_level) != 0) {
        fprintf(stderr, "gateway: bad log_format '%s' or log_level '%s'\n", cfg.log_format,
                cfg.log_level);
        qv_config_free(gw_cfg_keys, &cfg);
        return 1;
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
