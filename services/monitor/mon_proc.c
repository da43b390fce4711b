/* mon_proc: /proc readers and the gauges they feed (see mon_proc.h). Parsing is separate
 * from reading so that the selftest checks the parsers on fixed text; the files are read
 * whole into a small buffer each refresh (they are a few KB at most). */
#include "mon_proc.h"
#include "qv_clock.h"
#include "qv_log.h"
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int mon_proc_parse_stat(const char *text, mon_cpu_times_t *out)
{
    /* First line: "cpu  user nice system idle iowait irq softirq steal guest guest_nice".
     * guest time is already counted in user, so it is not added again. */
    if (!text || strncmp(text, "cpu ", 4) != 0)
        return -1;
    unsigned long long v[8] = { 0 };
    int n = sscanf(text + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]);
    if (n < 4)
        return -1;
    out->busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    out->total = out->busy + v[3] + v[4];
    return 0;
}

static int s_meminfo_field(const char *text, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *line = text; line && *line; ) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            unsigned long long kb;
            if (sscanf(line + klen + 1, "%llu", &kb) != 1)
                return -1;
            *out = (uint64_t) kb * 1024;   /* the kernel's "kB" means KiB */
            return 0;
        }
        const char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : NULL;
    }
    return -1;
}

int mon_proc_parse_meminfo(const char *text, mon_meminfo_t *out)
{
    if (!text || s_meminfo_field(text, "MemTotal", &out->total_bytes) < 0)
        return -1;
    /* MemAvailable exists since Linux 3.14; before that MemFree is the closest. */
    if (s_meminfo_field(text, "MemAvailable", &out->available_bytes) < 0
        && s_meminfo_field(text, "MemFree", &out->available_bytes) < 0)
        return -1;
    return 0;
}

int mon_proc_parse_loadavg(const char *text, double out[3])
{
    if (!text || sscanf(text, "%lf %lf %lf", &out[0], &out[1], &out[2]) != 3)
        return -1;
    return 0;
}

int mon_proc_parse_self_stat(const char *text, mon_self_stat_t *out)
{
    /* "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so fields are
     * counted from the last ')'. After it: field 3 is state; utime is 14, stime 15,
     * num_threads 20 (man 5 proc). */
    const char *p = text ? strrchr(text, ')') : NULL;
    if (!p)
        return -1;
    p++;
    unsigned long long utime = 0, stime = 0;
    long long threads = 0;
    int field = 2;
    while (*p && field < 20) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        field++;
        char *end = NULL;
        if (field == 14)
            utime = strtoull(p, &end, 10);
        else if (field == 15)
            stime = strtoull(p, &end, 10);
        else if (field == 20)
            threads = strtoll(p, &end, 10);
        while (*p && *p != ' ')
            p++;
    }
    if (field < 20)
        return -1;
    out->utime = utime;
    out->stime = stime;
    out->threads = threads;
    return 0;
}

int mon_proc_parse_statm_rss(const char *text, long page_size, uint64_t *rss_bytes)
{
    unsigned long long size, resident;
    if (!text || page_size <= 0 || sscanf(text, "%llu %llu", &size, &resident) != 2)
        return -1;
    *rss_bytes = (uint64_t) resident * (uint64_t) page_size;
    return 0;
}

double mon_proc_cpu_ratio(const mon_cpu_times_t *before, const mon_cpu_times_t *after)
{
    if (after->total <= before->total || after->busy < before->busy)
        return 0;   /* no time passed, or a counter went back (CPU hot-unplug) */
    double r = (double) (after->busy - before->busy) / (double) (after->total - before->total);
    return r < 0 ? 0 : r > 1 ? 1 : r;
}

/* ---- the gauges ------------------------------------------------------------------------ */

struct mon_proc_t {
    qv_metric_t *host_cpu, *host_cpus, *mem_total, *mem_avail, *load[3];
    qv_metric_t *proc_cpu, *proc_cpu_total, *rss, *threads, *fds;
    mon_cpu_times_t last_host;
    uint64_t        last_ticks;      /* this process's utime + stime */
    int64_t         last_us;         /* monotonic, at the last process reading */
    bool            have_last;
    long            page_size;
    long            ticks_per_s;
    unsigned        warned;          /* bit per file already reported as unreadable */
};

/* Reads a small /proc file whole. Returns 0 and a NUL-terminated buf, or -1. */
static int s_read(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n > 0 ? 0 : -1;
}

static void s_warn_once(mon_proc_t *self, unsigned bit, const char *path)
{
    if (!(self->warned & bit)) {
        self->warned |= bit;
        qv_warn("cannot read or parse %s; its gauges stay unchanged", path);
    }
}

mon_proc_t *mon_proc_new(qv_metrics_t *m)
{
    mon_proc_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->host_cpu = qv_metrics_gauge(m, "quaver_host_cpu_usage_ratio",
                                      "Busy share of all host CPUs over the last interval", NULL);
    self->host_cpus = qv_metrics_gauge(m, "quaver_host_cpus", "Online CPUs of the host", NULL);
    self->mem_total = qv_metrics_gauge(m, "quaver_host_memory_total_bytes",
                                       "Host memory (MemTotal)", NULL);
    self->mem_avail = qv_metrics_gauge(m, "quaver_host_memory_available_bytes",
                                       "Host memory available without swapping (MemAvailable)",
                                       NULL);
    self->load[0] = qv_metrics_gauge(m, "quaver_host_load1", "Host load average, 1 minute", NULL);
    self->load[1] = qv_metrics_gauge(m, "quaver_host_load5", "Host load average, 5 minutes", NULL);
    self->load[2] = qv_metrics_gauge(m, "quaver_host_load15", "Host load average, 15 minutes",
                                     NULL);
    self->proc_cpu = qv_metrics_gauge(m, "quaver_process_cpu_usage_ratio",
                                      "CPU seconds used by the monitor per second (1 = one core)",
                                      NULL);
    self->proc_cpu_total = qv_metrics_counter(m, "quaver_process_cpu_seconds_total",
                                              "User and system CPU time of the monitor", NULL);
    self->rss = qv_metrics_gauge(m, "quaver_process_resident_memory_bytes",
                                 "Resident memory of the monitor", NULL);
    self->threads = qv_metrics_gauge(m, "quaver_process_threads", "Threads of the monitor", NULL);
    self->fds = qv_metrics_gauge(m, "quaver_process_open_fds",
                                 "Open file descriptors of the monitor", NULL);
    if (!self->host_cpu || !self->host_cpus || !self->mem_total || !self->mem_avail
        || !self->load[0] || !self->load[1] || !self->load[2] || !self->proc_cpu
        || !self->proc_cpu_total || !self->rss || !self->threads || !self->fds) {
        free(self);
        return NULL;
    }
    self->page_size = sysconf(_SC_PAGESIZE);
    self->ticks_per_s = sysconf(_SC_CLK_TCK);
    if (self->ticks_per_s <= 0)
        self->ticks_per_s = 100;
    return self;
}

void mon_proc_destroy(mon_proc_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

void mon_proc_refresh(mon_proc_t *self)
{
    char buf[8192];
    mon_cpu_times_t host;
    bool first = !self->have_last;

    if (s_read("/proc/stat", buf, sizeof buf) == 0 && mon_proc_parse_stat(buf, &host) == 0) {
        qv_metric_set(self->host_cpu, first ? 0 : mon_proc_cpu_ratio(&self->last_host, &host));
        self->last_host = host;
    }
    else
        s_warn_once(self, 1, "/proc/stat");
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus > 0)
        qv_metric_set(self->host_cpus, (double) cpus);

    mon_meminfo_t mem;
    if (s_read("/proc/meminfo", buf, sizeof buf) == 0 && mon_proc_parse_meminfo(buf, &mem) == 0) {
        qv_metric_set(self->mem_total, (double) mem.total_bytes);
        qv_metric_set(self->mem_avail, (double) mem.available_bytes);
    }
    else
        s_warn_once(self, 2, "/proc/meminfo");

    double load[3];
    if (s_read("/proc/loadavg", buf, sizeof buf) == 0 && mon_proc_parse_loadavg(buf, load) == 0)
        for (int i = 0; i < 3; i++)
            qv_metric_set(self->load[i], load[i]);
    else
        s_warn_once(self, 4, "/proc/loadavg");

    mon_self_stat_t ss;
    int64_t now_us = qv_mono_us();
    if (s_read("/proc/self/stat", buf, sizeof buf) == 0 && mon_proc_parse_self_stat(buf, &ss) == 0) {
        uint64_t ticks = ss.utime + ss.stime;
        if (!first && ticks >= self->last_ticks && now_us > self->last_us) {
            double cpu_s = (double) (ticks - self->last_ticks) / (double) self->ticks_per_s;
            qv_metric_set(self->proc_cpu, cpu_s / ((double) (now_us - self->last_us) / 1e6));
            qv_metric_add(self->proc_cpu_total, cpu_s);
        }
        else if (first)
            qv_metric_add(self->proc_cpu_total, (double) ticks / (double) self->ticks_per_s);
        self->last_ticks = ticks;
        self->last_us = now_us;
        qv_metric_set(self->threads, (double) ss.threads);
    }
    else
        s_warn_once(self, 8, "/proc/self/stat");

    uint64_t rss;
    if (s_read("/proc/self/statm", buf, sizeof buf) == 0
        && mon_proc_parse_statm_rss(buf, self->page_size, &rss) == 0)
        qv_metric_set(self->rss, (double) rss);
    else
        s_warn_once(self, 16, "/proc/self/statm");

    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int n = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        qv_metric_set(self->fds, (double) (n > 0 ? n - 1 : 0));   /* not the DIR's own fd */
    }
    self->have_last = true;
}

/* ---- selftest -------------------------------------------------------------------------- */

#define S_CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "proc: %s\n", what); \
                                                goto done; } } while (0)

int mon_proc_selftest(void)
{
    int rc = -1;
    qv_metrics_t *m = NULL;
    mon_proc_t *p = NULL;
    char *page = NULL;

    const char *stat1 = "cpu  100 10 50 800 40 0 0 0 0 0\n"
                        "cpu0 50 5 25 400 20 0 0 0 0 0\nintr 12345\n";
    const char *stat2 = "cpu  160 10 70 900 60 0 0 0 5 0\n";
    mon_cpu_times_t a, b;
    S_CHECK(mon_proc_parse_stat(stat1, &a) == 0 && a.busy == 160 && a.total == 1000, "stat 1");
    S_CHECK(mon_proc_parse_stat(stat2, &b) == 0 && b.busy == 240 && b.total == 1200, "stat 2");
    double r = mon_proc_cpu_ratio(&a, &b);           /* 80 busy of 200 */
    S_CHECK(r > 0.3999 && r < 0.4001, "cpu ratio");
    S_CHECK(mon_proc_cpu_ratio(&b, &a) == 0, "cpu ratio backwards");
    S_CHECK(mon_proc_parse_stat("intr 1 2 3\n", &a) == -1, "stat garbage");
    S_CHECK(mon_proc_parse_stat("cpu  1 2\n", &a) == -1, "stat short");

    const char *meminfo = "MemTotal:       16318412 kB\nMemFree:          512000 kB\n"
                          "MemAvailable:    8159206 kB\nBuffers:          100 kB\n";
    mon_meminfo_t mi;
    S_CHECK(mon_proc_parse_meminfo(meminfo, &mi) == 0 && mi.total_bytes == 16318412ULL * 1024
            && mi.available_bytes == 8159206ULL * 1024, "meminfo");
    S_CHECK(mon_proc_parse_meminfo("MemTotal: 1000 kB\nMemFree: 10 kB\n", &mi) == 0
            && mi.available_bytes == 10240, "meminfo without MemAvailable");
    S_CHECK(mon_proc_parse_meminfo("Buffers: 1 kB\n", &mi) == -1, "meminfo garbage");

    double la[3];
    S_CHECK(mon_proc_parse_loadavg("0.52 1.25 2.00 3/456 7890\n", la) == 0 && la[0] == 0.52
            && la[1] == 1.25 && la[2] == 2.0, "loadavg");
    S_CHECK(mon_proc_parse_loadavg("x", la) == -1, "loadavg garbage");

    /* A comm with a space and a parenthesis, which naive splitting gets wrong. */
    const char *self_stat = "4242 (quaver mon) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 "
                            "1234 567 0 0 20 0 7 0 100 1000000 900 18446744073709551615\n";
    mon_self_stat_t ss;
    S_CHECK(mon_proc_parse_self_stat(self_stat, &ss) == 0 && ss.utime == 1234 && ss.stime == 567
            && ss.threads == 7, "self stat");
    S_CHECK(mon_proc_parse_self_stat("4242 (short) S 1 2\n", &ss) == -1, "self stat short");
    S_CHECK(mon_proc_parse_self_stat("no paren", &ss) == -1, "self stat garbage");

    uint64_t rss;
    S_CHECK(mon_proc_parse_statm_rss("2000 300 100 10 0 500 0\n", 4096, &rss) == 0
            && rss == 300ULL * 4096, "statm");
    S_CHECK(mon_proc_parse_statm_rss("", 4096, &rss) == -1, "statm garbage");

    /* The real files, twice: the gauges get plausible values. */
    m = qv_metrics_new("monitor", "selftest");
    p = m ? mon_proc_new(m) : NULL;
    S_CHECK(p, "mon_proc_new");
    mon_proc_refresh(p);
    volatile double spin = 0;
    for (int i = 0; i < 2000000; i++)
        spin += i;                                    /* some CPU time to measure */
    mon_proc_refresh(p);
    S_CHECK(qv_metric_value(p->mem_total) > 0, "real MemTotal");
    S_CHECK(qv_metric_value(p->mem_avail) > 0
            && qv_metric_value(p->mem_avail) <= qv_metric_value(p->mem_total), "real MemAvailable");
    S_CHECK(qv_metric_value(p->rss) > 0, "real RSS");
    S_CHECK(qv_metric_value(p->threads) >= 1, "real threads");
    S_CHECK(qv_metric_value(p->host_cpu) >= 0 && qv_metric_value(p->host_cpu) <= 1, "real cpu");
    S_CHECK(qv_metric_value(p->host_cpus) >= 1, "real cpus");
    page = qv_metrics_render(m);
    S_CHECK(page && strstr(page, "# TYPE quaver_host_memory_available_bytes gauge")
            && strstr(page, "# TYPE quaver_process_cpu_seconds_total counter"), "rendered");
    rc = 0;
done:
    free(page);
    mon_proc_destroy(&p);
    qv_metrics_destroy(&m);
    return rc;
}
