/* monitor_selftest: one runner for the monitor's module selftests; ctest runs one entry per
 * test (monitor_<name>), or run it with no argument for all of them. */
#include "qv_selftest.h"
#include "mon_health.h"
#include "mon_metrics.h"
#include "mon_proc.h"
#include "mon_proxy.h"
#include "monitor_server.h"
#include "qv_log.h"
#include <stdio.h>
#include <string.h>

static const qv_selftest_t s_tests[] = {
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
    return qv_selftest_run("monitor_selftest", s_tests, argc, argv);
}
