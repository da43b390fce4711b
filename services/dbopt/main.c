/* quaver-dbopt: load the configuration, start logging, run the server (dbopt_server.c). */
#include <stdio.h>
#include "dbopt_config.h"
#include "dbopt_server.h"
#include "qv_log.h"

int main(int argc, char **argv)
{
    dbopt_cfg_t cfg = { 0 };
    int rc = qv_config_load(dbopt_cfg_keys, &cfg, "dbopt", argc, argv, NULL);
    if (rc != 0) {
        qv_config_free(dbopt_cfg_keys, &cfg);
        return rc > 0 ? 0 : 2;
    }
    if (qv_log_init("dbopt", cfg.log_format, cfg.log_level) < 0) {
        fprintf(stderr, "dbopt: bad log_format '%s' or log_level '%s'\n", cfg.log_format,
                cfg.log_level);
        qv_config_free(dbopt_cfg_keys, &cfg);
        return 2;
    }
    rc = dbopt_server_run(&cfg);
    qv_config_free(dbopt_cfg_keys, &cfg);
    return rc;
}
