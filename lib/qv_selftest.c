/* quaver_selftest: runs libquaver's module selftests. `quaver_selftest NAME` runs one (ctest
 * registers one test per name), no argument runs them all. Exit status 0 only when every
 * test that ran passed. */
#include "qv_selftest.h"
#include "qv_bus.h"
#include "qv_config.h"
#include "qv_hash.h"
#include "qv_log.h"
#include "qv_mdp.h"
#include "qv_metrics.h"
#include "qv_rpc.h"
#include <stdio.h>
#include <string.h>

static const qv_selftest_t s_tests[] = {
    { "config",  qv_config_selftest },
    { "mdp",     qv_mdp_selftest },
    { "rpc",     qv_rpc_selftest },
    { "bus",     qv_bus_selftest },
    { "metrics", qv_metrics_selftest },
    { "log",     qv_log_selftest },
    { "hash",    qv_hash_selftest },
    { NULL, NULL }
};

int main(int argc, char **argv)
{
    return qv_selftest_run("quaver_selftest", s_tests, argc, argv);
}
