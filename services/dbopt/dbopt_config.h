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
    bool    performance_monitoring; /* ENABLE_PERFORMANCE_MONITORING (dbopt_observe.h quiet) */
    char   *migrations_dir;
    /* pool recycling and statistics, query observation (dbopt_pool.c, dbopt_observe.c) */
    int64_t db_conn_max_lifetime_s;  /* 0 = unlimited */
    int64_t db_conn_idle_timeout_s;  /* 0 = never */
    int64_t db_stats_period_s;
    double  plan_sample_interval_s;
    double  plan_regression_factor;
    int64_t plan_regression_min_calls;
    double  plan_regression_min_ms;
    /* health detail and maintenance (dbopt_health.c, dbopt_maint.c) */
    double  health_long_query_s;
    int64_t maintenance_interval_s;  /* 0 = scheduler off */
    char   *maintenance_window;      /* "HH:MM-HH:MM" UTC or "off"; checked by dbopt_maint */
    double  maintenance_dead_ratio;
    double  maintenance_analyze_ratio;
    int64_t maintenance_lock_timeout_ms;
    /* the index advisor (dbopt_advise.h, dbopt_advisor.c) */
    int64_t advise_max_queries;
    double  advise_min_rows;
    int64_t advise_max_per_table;
    double  advise_write_cost;
    double  advise_keep_factor;
    int64_t advise_runs;
} dbopt_cfg_t;

extern const qv_cfg_key_t dbopt_cfg_keys[];
#endif
