/* monitor_selftest: one runner for the monitor's module selftests; ctest runs one entry per
 * test (monitor_<name>), or run it with no argument for all of them. */
#include "mon_health.h"
#include "mon_metrics.h"
#include "mon_proc.h"
#include "mon_proxy.h"
#include "monitor_server.h"
#include "qv_log.h"
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(void);
} s_tests[] = {
    { "proc",    mon_proc_selftest },
    { "health",  mon_health_selftest },
    { "metrics", mon_metrics_selftest },
    { "proxy",   mon_proxy_selftest },
    { "server",  monitor_server_selftest },
    { NULL, NULL }
};

int main(int argc, char **argv)
{
    qv_log_init("monitor", "text", "warn");
    int failed = 0, ran = 0;
    for (int i = 0; s_tests[i].name; i++) {
        if (argc > 1 && strcmp(argv[1], s_tests[i].name) != 0)
            continue;
        ran++;
        int rc = s_tests[i].fn();
        printf("%-8s %s\n", s_tests[i].name, rc == 0 ? "ok" : "FAILED");
        failed += rc != 0;
    }
    if (!ran) {
        fprintf(stderr, "unknown test '%s'\n", argc > 1 ? argv[1] : "");
        return 2;
    }
    return failed ? 1 : 0;
}
