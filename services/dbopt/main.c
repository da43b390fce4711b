/* quaver-dbopt: load the configuration, start logging, run the server (dbopt_server.c). */
#include <stdio.h>
#include "qv_daemon.h"
#include "dbopt_config.h"
#include "dbopt_server.h"
#include "qv_log.h"

int main(int argc, char **argv)
{
    dbopt_cfg_t cfg = { 0 };
    int rc;
    if (qv_daemon_init(dbopt_cfg_keys, &cfg, "dbopt", argc, argv, &rc) != 0)
        return rc;
    rc = dbopt_server_run(&cfg);
    qv_config_free(dbopt_cfg_keys, &cfg);
    return rc;
}
