/* dbopt_config: the daemon's configuration struct and its key table (loaded by qv_config;
 * the keys and defaults are listed in README.md). Ownership: string fields belong to the
 * struct; qv_config_free(dbopt_cfg_keys, &cfg) frees them. */
#ifndef DBOPT_CONFIG_H
#define DBOPT_CONFIG_H
#include "qv_config.h"

typedef struct {
    QV_COMMON_CFG_FIELDS
    char   *database_url;
    int64_t db_pool_max;
    double  db_pool_timeout;        /* seconds */
    int64_t db_connect_timeout;     /* seconds (libpq connect_timeout) */
    int64_t statement_timeout_ms;
    int64_t slow_query_threshold;   /* ms */
    char   *migrations_dir;
} dbopt_cfg_t;

extern const qv_cfg_key_t dbopt_cfg_keys[];
#endif
