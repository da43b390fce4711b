/* quaver_selftest: runs libquaver's module selftests. `quaver_selftest NAME` runs one (ctest
 * registers one test per name), no argument runs them all. Exit status 0 only when every
 * test that ran passed. */
#include "qv_bus.h"
#include "qv_config.h"
#include "qv_log.h"
#include "qv_mdp.h"
#include "qv_metrics.h"
#include "qv_rpc.h"
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(void);
} s_tests[] = {
    { "config",  qv_config_selftest },
    { "mdp",     qv_mdp_selftest },
    { "rpc",     qv_rpc_selftest },
    { "bus",     qv_bus_selftest },
    { "metrics", qv_metrics_selftest },
    { "log",     qv_log_selftest },
};

int main(int argc, char **argv)
{
    int ntests = (int) (sizeof s_tests / sizeof s_tests[0]);
    int passed = 0, failed = 0;
    const char *only = argc > 1 ? argv[1] : NULL;
    bool found = false;
    for (int i = 0; i < ntests; i++) {
        if (only && strcmp(only, s_tests[i].name) != 0)
            continue;
        found = true;
        printf("%s: running\n", s_tests[i].name);
        fflush(stdout);
        int rc = s_tests[i].fn();
        printf("%s: %s\n", s_tests[i].name, rc == 0 ? "ok" : "FAILED");
        fflush(stdout);
        if (rc == 0)
            passed++;
        else
            failed++;
    }
    if (only && !found) {
        fprintf(stderr, "quaver_selftest: no test named '%s' (tests:", only);
        for (int i = 0; i < ntests; i++)
            fprintf(stderr, " %s", s_tests[i].name);
        fprintf(stderr, ")\n");
        return 2;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
