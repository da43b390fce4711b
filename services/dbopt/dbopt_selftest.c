/* dbopt_selftest: the daemon's selftests that need no server, one ctest entry each
 * (`dbopt_selftest <name>`; no argument runs them all). What needs PostgreSQL is covered by
 * the integration tests in tests/. */
#include <stdio.h>
#include <string.h>
#include "qv_selftest.h"
#include "dbopt_catalog.h"
#include "dbopt_conninfo.h"
#include "dbopt_migrate.h"
#include "dbopt_config.h"
#include "dbopt_advise.h"
#include "dbopt_candidates.h"
#include "dbopt_plans.h"
#include "dbopt_maint.h"

static const char *s_fake_env(const char *name)
{
    if (strcmp(name, "DB_POOL_MAX") == 0)
        return "25";
    if (strcmp(name, "DATABASE_URL") == 0)
        return "postgresql://u:pw@db/quaver";
    return NULL;
}

/* The key table loads: defaults, the seeds' aliases, a fractional pool timeout, and a value
 * out of bounds is refused. */
static int s_config_selftest(void)
{
    dbopt_cfg_t cfg = { 0 };
    const char *sets[] = { "db_pool_timeout=0.5", NULL };
    char err[512] = "";
    int rc = qv_config_load_from(dbopt_cfg_keys, &cfg, "dbopt", NULL, sets, s_fake_env, err,
                                 sizeof err);
    if (rc != 0) {
        fprintf(stderr, "config load: %s\n", err);
        return -1;
    }
    int ok = cfg.db_pool_max == 25 && cfg.db_pool_timeout == 0.5
             && cfg.db_connect_timeout == 10 && cfg.statement_timeout_ms == 5000
             && cfg.slow_query_threshold == 1000 && cfg.database_url
             && strcmp(cfg.database_url, "postgresql://u:pw@db/quaver") == 0
             && cfg.migrations_dir && strcmp(cfg.migrations_dir, QV_DBOPT_MIGRATIONS) == 0;
    qv_config_free(dbopt_cfg_keys, &cfg);
    if (!ok) {
        fprintf(stderr, "config: unexpected values\n");
        return -1;
    }
    const char *bad[] = { "db_pool_max=0", NULL };
    dbopt_cfg_t cfg2 = { 0 };
    rc = qv_config_load_from(dbopt_cfg_keys, &cfg2, "dbopt", NULL, bad, s_fake_env, err,
                             sizeof err);
    qv_config_free(dbopt_cfg_keys, &cfg2);
    if (rc == 0) {
        fprintf(stderr, "config: db_pool_max=0 accepted\n");
        return -1;
    }
    return 0;
}

static const qv_selftest_t s_tests[] = {
    { "catalog",  dbopt_catalog_selftest },
    { "errors",   dbopt_errors_selftest },
    { "conninfo", dbopt_conninfo_selftest },
    { "migrate",  dbopt_migrate_selftest },
    { "config",   s_config_selftest },
    { "plans",    dbopt_plans_selftest },
    { "maint",    dbopt_maint_selftest },
    { "advise",   dbopt_advise_selftest },
    { "candidates", dbopt_candidates_selftest },
    { NULL, NULL }
};

int main(int argc, char **argv)
{
    return qv_selftest_run("dbopt_selftest", s_tests, argc, argv);
}
