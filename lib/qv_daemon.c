/* qv_daemon: see qv_daemon.h. */
#include "qv_daemon.h"
#include "qv_log.h"
#include <stdio.h>

int qv_daemon_init(const qv_cfg_key_t *keys, void *cfg, const char *daemon, int argc,
                   char **argv, int *exit_code)
{
    int rc = qv_config_load(keys, cfg, daemon, argc, argv, NULL);
    if (rc != 0) {
        qv_config_free(keys, cfg);
        *exit_code = rc > 0 ? 0 : 2;
        return -1;
    }
    const qv_common_cfg_t *common = cfg;
    if (qv_log_init(daemon, common->log_format, common->log_level) != 0) {
        fprintf(stderr, "%s: config key 'log_format' or 'log_level': value '%s' / '%s' is "
                "invalid (allowed: text | json, and debug | info | warn | error)\n", daemon,
                common->log_format, common->log_level);
        qv_config_free(keys, cfg);
        *exit_code = 2;
        return -1;
    }
    return 0;
}
