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
    { "performance_monitoring", QV_CFG_BOOL, offsetof(dbopt_cfg_t, performance_monitoring),
      "true", 0, 0, "ENABLE_PERFORMANCE_MONITORING", 0, "false: no plan sampling (EXPLAIN), "
      "plan-regression alarms or db.slow_query events; counts and latencies are still kept" },
    { "slow_query_threshold", QV_CFG_INT, offsetof(dbopt_cfg_t, slow_query_threshold), "1000",
      0, 3600000, "SLOW_QUERY_THRESHOLD", 0,
      "ms; slower statements are logged and published as db.slow_query (0 = off)" },
    { "migrations_dir", QV_CFG_STR, offsetof(dbopt_cfg_t, migrations_dir), QV_DBOPT_MIGRATIONS,
      0, 4096, NULL, QV_CFG_NONEMPTY, "folder of numbered NNN_name.sql migrations" },
    { "health_long_query_s", QV_CFG_DOUBLE, offsetof(dbopt_cfg_t, health_long_query_s), "60",
      0.001, 86400, NULL, 0, "DatabaseHealth lists statements running longer than this (s)" },
    { "maintenance_interval_s", QV_CFG_INT, offsetof(dbopt_cfg_t, maintenance_interval_s),
      "600", 0, 86400, NULL, 0, "seconds between maintenance passes; 0 = scheduler off" },
    { "maintenance_window", QV_CFG_STR, offsetof(dbopt_cfg_t, maintenance_window),
      "00:00-24:00", 0, 32, NULL, QV_CFG_NONEMPTY,
      "HH:MM-HH:MM (UTC, may wrap midnight) when the scheduler may vacuum, or off" },
    { "maintenance_dead_ratio", QV_CFG_DOUBLE, offsetof(dbopt_cfg_t, maintenance_dead_ratio),
      "0.2", 0.001, 1000, NULL, 0, "vacuum a table when n_dead_tup / (n_live_tup + 1) exceeds this" },
    { "maintenance_analyze_ratio", QV_CFG_DOUBLE,
      offsetof(dbopt_cfg_t, maintenance_analyze_ratio), "0.1", 0.001, 1000, NULL, 0,
      "... or when n_mod_since_analyze / reltuples exceeds this" },
    { "maintenance_lock_timeout_ms", QV_CFG_INT,
      offsetof(dbopt_cfg_t, maintenance_lock_timeout_ms), "5000", 1, 600000, NULL, 0,
      "lock_timeout of VACUUM: a busy table is skipped, not waited for" },
    { "db_conn_max_lifetime_s", QV_CFG_INT, offsetof(dbopt_cfg_t, db_conn_max_lifetime_s),
      "3600", 0, 604800, NULL, 0,
      "a connection older than this is closed when released or idle (0 = never)" },
    { "db_conn_idle_timeout_s", QV_CFG_INT, offsetof(dbopt_cfg_t, db_conn_idle_timeout_s),
      "300", 0, 604800, NULL, 0,
      "an idle connection is closed after this, except the last one (0 = never)" },
    { "db_stats_period_s", QV_CFG_INT, offsetof(dbopt_cfg_t, db_stats_period_s), "10", 1,
      3600, NULL, 0, "period of the pool's avg_* statistics (PgBouncer stats_period)" },
    { "plan_sample_interval_s", QV_CFG_DOUBLE, offsetof(dbopt_cfg_t, plan_sample_interval_s),
      "60", 1, 86400, NULL, 0,
      "sampling window: plans are EXPLAINed and regressions judged once per window" },
    { "plan_regression_factor", QV_CFG_DOUBLE, offsetof(dbopt_cfg_t, plan_regression_factor),
      "2.0", 1.01, 1000, NULL, 0, "a new plan whose p95 is this many times the old one's is a "
      "regression" },
    { "plan_regression_min_calls", QV_CFG_INT,
      offsetof(dbopt_cfg_t, plan_regression_min_calls), "20", 1, 100000000, NULL, 0,
      "calls a window needs before its p95 is judged" },
    { "plan_regression_min_ms", QV_CFG_DOUBLE, offsetof(dbopt_cfg_t, plan_regression_min_ms),
      "1", 0, 3600000, NULL, 0, "... and the p95 must also be this many ms above the old one" },
    { "advise_max_queries", QV_CFG_INT, offsetof(dbopt_cfg_t, advise_max_queries), "50", 1,
      10000, NULL, 0, "advisor: statements read from pg_stat_statements (top by total time)" },
    { "advise_min_rows", QV_CFG_DOUBLE, offsetof(dbopt_cfg_t, advise_min_rows), "10000", 0,
      1e12, NULL, 0, "advisor: tables with fewer rows get no index" },
    { "advise_max_per_table", QV_CFG_INT, offsetof(dbopt_cfg_t, advise_max_per_table), "3", 1,
      32, NULL, 0, "advisor: new indexes per table and run" },
    { "advise_write_cost", QV_CFG_DOUBLE, offsetof(dbopt_cfg_t, advise_write_cost), "20", 0,
      1e9, NULL, 0, "advisor: planner cost units charged per written row per new index" },
    { "advise_keep_factor", QV_CFG_DOUBLE, offsetof(dbopt_cfg_t, advise_keep_factor), "2", 1,
      1000, NULL, 0, "advisor apply: keep an index only if the median got this many times faster" },
    { "advise_runs", QV_CFG_INT, offsetof(dbopt_cfg_t, advise_runs), "5", 1, 64, NULL, 0,
      "advisor apply: timed runs per statement before and after (median, after a warm-up)" },
    { NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL }
};
