/* qv_daemon: what every daemon's main() does first, once: load the configuration from its key
 * table (qv_config_load) and start logging from the common keys. One exit convention for all
 * five daemons: 0 after --help or --print-config, 2 for a bad value (the message already names
 * the key, the value and what is allowed). */
#ifndef QV_DAEMON_H
#define QV_DAEMON_H
#include "qv_config.h"

/* cfg is the daemon's config struct, which starts with QV_COMMON_CFG_FIELDS. Returns 0 when
 * the daemon should go on (cfg loaded, logging started); otherwise cfg is already freed and
 * *exit_code is what main() returns. */
int qv_daemon_init(const qv_cfg_key_t *keys, void *cfg, const char *daemon, int argc,
                   char **argv, int *exit_code) __attribute__((warn_unused_result));
#endif
