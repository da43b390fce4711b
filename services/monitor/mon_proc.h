/* mon_proc: host and process gauges read from /proc, for the monitor's own registry.
 *   quaver_host_cpu_usage_ratio            busy share of all CPUs since the last refresh, 0..1
 *   quaver_host_cpus                       online CPUs
 *   quaver_host_memory_total_bytes         MemTotal
 *   quaver_host_memory_available_bytes     MemAvailable
 *   quaver_host_load1 / load5 / load15     /proc/loadavg
 *   quaver_process_cpu_usage_ratio         this process's CPU time per second of wall time
 *                                          (1.0 = one core busy) since the last refresh
 *   quaver_process_cpu_seconds_total       this process's user + system CPU time
 *   quaver_process_resident_memory_bytes   RSS from /proc/self/statm
 *   quaver_process_threads                 from /proc/self/stat
 *   quaver_process_open_fds                entries in /proc/self/fd
 * Ratios need two readings: the first refresh sets them to 0. In a container /proc/stat,
 * /proc/meminfo and /proc/loadavg describe the host (the node), not the container.
 * The parsers take text so that the selftest runs them on samples. A file that is missing or
 * does not parse leaves its gauges as they were and is logged once. */
#ifndef MON_PROC_H
#define MON_PROC_H
#include <stdint.h>
#include "qv_metrics.h"

typedef struct {
    uint64_t busy;      /* user + nice + system + irq + softirq + steal (jiffies) */
    uint64_t total;     /* busy + idle + iowait */
} mon_cpu_times_t;

typedef struct {
    uint64_t total_bytes;
    uint64_t available_bytes;
} mon_meminfo_t;

typedef struct {
    uint64_t utime, stime;   /* clock ticks */
    int64_t  threads;
} mon_self_stat_t;

/* Each returns 0, or -1 when the text does not have what it needs. */
int mon_proc_parse_stat(const char *text, mon_cpu_times_t *out);        /* /proc/stat */
int mon_proc_parse_meminfo(const char *text, mon_meminfo_t *out);       /* /proc/meminfo */
int mon_proc_parse_loadavg(const char *text, double out[3]);            /* /proc/loadavg */
int mon_proc_parse_self_stat(const char *text, mon_self_stat_t *out);   /* /proc/<pid>/stat */
int mon_proc_parse_statm_rss(const char *text, long page_size, uint64_t *rss_bytes);

/* Busy share between two readings, 0..1 (0 when no time passed). */
double mon_proc_cpu_ratio(const mon_cpu_times_t *before, const mon_cpu_times_t *after);

typedef struct mon_proc_t mon_proc_t;

/* Registers the gauges in m (borrowed; must outlive the result). Caller owns the result. */
mon_proc_t *mon_proc_new(qv_metrics_t *m);
void mon_proc_destroy(mon_proc_t **self_p);
/* Reads /proc and updates the gauges. Call from one thread (the server's timer). */
void mon_proc_refresh(mon_proc_t *self);

int mon_proc_selftest(void);
#endif
