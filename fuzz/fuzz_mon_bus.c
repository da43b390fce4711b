/* fuzz_mon_bus: the monitor's bus tap (mon_metrics_put_bus), which decodes a packed
 * quaver.v1.BusMessage from any publisher on the bus, checks names, and keeps the snapshot;
 * then mon_metrics_render builds the merged Prometheus page over what was kept and
 * mon_metrics_expire forgets it. One table lives across runs (as in the daemon) so snapshots
 * from earlier inputs meet later ones in the render; it is expired every run to stay small. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "mon_metrics.h"

static mon_metrics_t *s_mm;
static int64_t s_now;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!s_mm && !(s_mm = mon_metrics_new()))
        abort();
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    char service[MON_NAME_MAX + 1], instance[MON_NAME_MAX + 1];
    s_now += 1000;
    if (mon_metrics_put_bus(s_mm, buf, size, s_now, service, instance) == 0) {
        if (!mon_name_ok(service) || !mon_name_ok(instance))
            abort();   /* only checked names are kept */
    }
    free(buf);
    char *page = mon_metrics_render(s_mm, NULL);
    free(page);
    /* Keep the last few seconds' snapshots only. */
    mon_metrics_expire(s_mm, s_now, 4000);
    return 0;
}
