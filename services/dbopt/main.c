/* quaver-dbopt: load the configuration, start logging, run the server (dbopt_server.c). */
#include <stdio.h>
#include <string.h>
#include "qv_daemon.h"
#include "dbopt_config.h"
#include "dbopt_server.h"
#include "qv_log.h"
#include "dbopt_advise.h"

int main(int argc, char **argv)
{
    dbopt_cfg_t cfg = { 0 };
    int rc;
    /* the one-shot advisor on any database: no daemon, no config file */
    if (argc > 1 && strcmp(argv[1], "advise") == 0)
        return dbopt_advise_main(argc - 1, argv + 1);
    if (qv_daemon_init(dbopt_cfg_keys, &cfg, "dbopt", argc, argv, &rc) != 0)
        return rc;
    rc = dbopt_server_run(&cfg);
    qv_config_free(dbopt_cfg_keys, &cfg);
    return rc;
}
