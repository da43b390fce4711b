/* dbopt_config: the key table (DESIGN.md "Configuration"). The seeds' variable names
 * (DATABASE_URL, DB_POOL_MAX, DB_POOL_TIMEOUT, DB_CONNECT_TIMEOUT, SLOW_QUERY_THRESHOLD) work
 * as aliases of QUAVER_<KEY>. */
#include <stddef.h>
#include "dbopt_config.h"

#ifndef QV_DBOPT_MIGRATIONS
#define QV_DBOPT_MIGRATIONS "migrations"
#endif

const qv_cfg_key_t dbopt_cfg_keys[] = {
    QV_COMMON_CFG_KEYS(dbopt_cfg_t),
    /* SECRET: the URL may hold a password. --print-config shows "***"; the log line at
     * start shows the URL with only the password masked (dbopt_conninfo_mask). */
    { "database_url", QV_CFG_STR, offsetof(dbopt_cfg_t, database_url), "postgresql:///quaver",
      0, 4096, "DATABASE_URL", QV_CFG_SECRET | QV_CFG_NONEMPTY,
      "libpq URI or key=value connection string" },
    { "db_pool_max", QV_CFG_INT, offsetof(dbopt_cfg_t, db_pool_max), "10", 1, 500,
      "DB_POOL_MAX", 0, "PostgreSQL connections in the pool" },
    { "db_pool_timeout", QV_CFG_DOUBLE, offsetof(dbopt_cfg_t, db_pool_timeout), "10", 0.001,
      3600, "DB_POOL_TIMEOUT", 0,
      "seconds a request waits for a free connection before 503 (e.g. 0.5)" },
    { "db_connect_timeout", QV_CFG_INT, offsetof(dbopt_cfg_t, db_connect_timeout), "10", 1,
      3600, "DB_CONNECT_TIMEOUT", 0, "seconds to establish a connection (libpq connect_timeout)" },
    { "statement_timeout_ms", QV_CFG_INT, offsetof(dbopt_cfg_t, statement_timeout_ms), "5000",
      0, 3600000, NULL, 0, "PostgreSQL statement_timeout per connection; 0 = none (-> 504)" },
    { "slow_query_threshold", QV_CFG_INT, offsetof(dbopt_cfg_t, slow_query_threshold), "1000",
      0, 3600000, "SLOW_QUERY_THRESHOLD", 0,
      "ms; slower statements are logged and published as db.slow_query (0 = off)" },
    { "migrations_dir", QV_CFG_STR, offsetof(dbopt_cfg_t, migrations_dir), QV_DBOPT_MIGRATIONS,
      0, 4096, NULL, QV_CFG_NONEMPTY, "folder of numbered NNN_name.sql migrations" },
    { NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL }
};
