/* bench_cache: what a local-tier hit of quaver-cache costs through the RPC path, beside a direct
 * Redis GET measured in the same run; and how many Gets the daemon serves to 50 concurrent
 * callers, beside redis-benchmark -c 50 in the same run (issue 3, "Benchmarks").
 *
 * The processes are the real ones: a private redis-server (free loopback port, no persistence)
 * and the quaver-cache daemon of this build (bin/quaver-cache beside this binary), connected
 * over tcp loopback to an MDP broker that lives in this process, as the broker lives in the
 * gateway. The broker binds tcp://127.0.0.1:* and inproc://, so there are two RPC paths, and
 * the engine embedded in this process is a third:
 *
 *   embed:  cache_app_get of a cache_embed in this process, against the same Redis (what the
 *           gateway runs for its cached routes, cache_embed.h)
 *   inproc: qv_rpc_call -> inproc:// -> broker -> tcp -> quaver-cache -> back
 *           (a caller in the broker's process)
 *   tcp:    qv_rpc_call -> tcp       -> broker -> tcp -> quaver-cache -> back
 *           (another daemon's call; the client shares this process's libzmq IO thread)
 *   redis:  hiredis GET of the same Redis key (quaver:<ns>:<key>), one connection (the anchor)
 *
 * Latency: one thread, sequential calls, p50/p99 per path and value size, the paths interleaved
 * in blocks (s_latency_main); another path, Health over inproc, is the RPC floor: the same
 * client, broker and dispatcher with no cache work; and the daemon's own time per call is read
 * from its Stats (quaver_rpc_duration_seconds). Every Get reply is
 * checked: status 200, found, tier "local", the value's bytes; any other reply is counted and
 * printed. Throughput: 50 threads (each its own client, as qv_rpc_call keeps one per thread)
 * in a closed loop for a fixed time, beside `redis-benchmark -c 50 -n N -t get -d SIZE --csv`
 * against the same redis-server (its GET key pre-set to a value of that size), and beside 50
 * threads of blocking hiredis GETs (the same client model as ours). Each run measures every
 * throughput path once, back to back, in an order that rotates from run to run; figures
 * are medians over the runs, ratios are path / Redis of those medians, plus the median of the
 * per-run ratios.
 *
 * Child processes die with us: PR_SET_PDEATHSIG (SIGKILL) before exec, and we stop them at
 * exit() and on SIGINT/SIGTERM/SIGHUP. Daemon and Redis logs go to a temporary folder, removed
 * on success and named on failure.
 *
 *   bench_cache [--runs 5] [--calls 5000] [--sizes 100,4096,4096j] [--clients 50] [--seconds 2]
 *               [--requests 100000] [--ns api_response] [--workers N] [--daemon PATH]
 */
#include "bench_common.h"
#include "qv_rpc.h"
#include "qv_mdp.h"
#include "qv_clock.h"
#include "quaver/v1/envelope.pb-c.h"
#include "quaver/v1/cache.pb-c.h"
#include "cache_embed.h"
#include "cache_namespace.h"

#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_RUNS     BENCH_MAX_RUNS
#define S_MAX_SIZES    8
#define S_MAX_CLIENTS  256
#define S_TIMEOUT_MS   5000

typedef struct {
    int runs, calls, clients, seconds, requests, workers;
    int sizes[S_MAX_SIZES];
    bool json[S_MAX_SIZES];     /* "4096j": a compressible JSON-like value */
    int nsizes;
    const char *ns;
    const char *daemon;
} s_opts_t;

static s_opts_t s_opts = { 5, 5000, 50, 2, 100000, 0, { 100, 4096, 4096 },
                          { false, false, true }, 3, "api_response", NULL };

/* ---- the cache through the broker ------------------------------------------------------- */

static char s_ep_tcp[128], s_ep_inproc[128];
static int s_redis_port;

typedef struct {
    uint8_t *value;      /* the bytes Set once and expected back */
    int      size;
    bool     json;       /* compressible (JSON-like) rather than random bytes */
    char     label[32];  /* "4096 B" or "4096 B JSON" */
    long long stored;    /* what Redis holds for it (the daemon's encoded form), bytes */
    char     key[64];    /* the key within the namespace */
    char     rkey[160];  /* its name in Redis: quaver:<ns>:<key> */
} s_item_t;

static s_item_t s_items[S_MAX_SIZES];

typedef enum { S_OK = 0, S_ERR_STATUS, S_ERR_NOT_LOCAL, S_ERR_VALUE } s_check_t;

/* One Get through the broker, checked: 200, found, tier local, the value's bytes. */
static s_check_t s_rpc_get(const char *ep, const s_item_t *it, char *tier, size_t tier_len)
{
    Quaver__V1__CacheKey req = QUAVER__V1__CACHE_KEY__INIT;
    req.namespace_ = (char *) s_opts.ns;
    req.key = (char *) it->key;
    qv_result_t res;
    qv_rpc_call(ep, "cache", "Get", &req.base, NULL, "bench-cache", S_TIMEOUT_MS, &res);
    s_check_t rc = S_OK;
    Quaver__V1__CacheGetReply *rep = res.status == 200
        ? quaver__v1__cache_get_reply__unpack(NULL, res.len, res.payload) : NULL;
    if (!rep)
        rc = S_ERR_STATUS;
    else if (!rep->found || (int) rep->value.len != it->size
             || memcmp(rep->value.data, it->value, (size_t) it->size) != 0)
        rc = S_ERR_VALUE;
    else if (strcmp(rep->tier, "local") != 0)
        rc = S_ERR_NOT_LOCAL;
    if (tier)
        snprintf(tier, tier_len, "%s", rep ? rep->tier : res.error);
    if (rep)
        quaver__v1__cache_get_reply__free_unpacked(rep, NULL);
    qv_result_free(&res);
    return rc;
}

/* Set with a TTL longer than the bench, so the local copy lives through it (the daemon is
 * started with local_max_ttl_ms at its maximum too). */
static int s_rpc_set(const s_item_t *it)
{
    Quaver__V1__CacheSetRequest req = QUAVER__V1__CACHE_SET_REQUEST__INIT;
    req.namespace_ = (char *) s_opts.ns;
    req.key = (char *) it->key;
    req.value.data = it->value;
    req.value.len = (size_t) it->size;
    req.ttl_ms = 3600 * 1000;
    qv_result_t res;
    qv_rpc_call(s_ep_inproc, "cache", "Set", &req.base, NULL, "bench-cache-set", S_TIMEOUT_MS,
                &res);
    int rc = res.status == 200 ? 0 : -1;
    if (rc != 0)
        fprintf(stderr, "bench_cache: Set %s: %d %s\n", it->key, res.status, res.error);
    qv_result_free(&res);
    return rc;
}

/* ---- Redis -------------------------------------------------------------------------------- */

static redisContext *s_redis_connect(void)
{
    struct timeval tv = { 2, 0 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s_redis_port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* ---- measurements ------------------------------------------------------------------------- */

/* The daemon's own account of a method: quaver_rpc_duration_seconds{method} sum and count from
 * its Stats (the dispatcher times each call from receiving it to its packed reply). */
static bool s_rpc_duration(const char *ep, const char *method, double *sum, double *count)
{
    Quaver__V1__Empty req = QUAVER__V1__EMPTY__INIT;
    qv_result_t res;
    qv_rpc_call(ep, "cache", "Stats", &req.base, NULL, "bench-cache-stats", S_TIMEOUT_MS, &res);
    Quaver__V1__StatsReply *rep = res.status == 200
        ? quaver__v1__stats_reply__unpack(NULL, res.len, res.payload) : NULL;
    char want[64];
    snprintf(want, sizeof want, "method=\"%s\"", method);
    int found = 0;
    for (size_t i = 0; rep && i < rep->n_stats; i++) {
        const char *n = rep->stats[i]->name;
        if (strncmp(n, "quaver_rpc_duration_seconds_", 28) != 0 || !strstr(n, want))
            continue;
        if (strncmp(n + 28, "sum", 3) == 0)
            *sum = rep->stats[i]->value, found |= 1;
        else if (strncmp(n + 28, "count", 5) == 0)
            *count = rep->stats[i]->value, found |= 2;
    }
    if (rep)
        quaver__v1__stats_reply__free_unpacked(rep, NULL);
    qv_result_free(&res);
    return found == 3;
}

typedef enum { S_EMBED, S_INPROC, S_TCP, S_FLOOR, S_REDIS, S_NPATHS } s_path_t;

static const char *s_path_label[S_NPATHS] = {
    "cache engine embedded in this process, local hit (the gateway's path, cache_embed.h)",
    "quaver-cache Get, local hit, inproc client (a caller beside the broker)",
    "quaver-cache Get, local hit, tcp client",
    "quaver-cache Health, inproc client (the RPC floor: same path, no cache work)",
    "Redis GET, hiredis, one connection (anchor)",
};

/* The cache engine in this process (cache_embed.h), against the same Redis: what the gateway
 * runs for its cached routes. Configured like the daemon below (same namespaces, long local
 * TTL so the copy lives through the bench). */
static cache_cfg_t s_ecfg;
static cache_embed_t *s_embed;
static char s_redis_url[64];

static void s_start_embed(void)
{
    snprintf(s_redis_url, sizeof s_redis_url, "redis://127.0.0.1:%d", s_redis_port);
    s_ecfg = (cache_cfg_t) { .redis_url = s_redis_url, .local_max_entries = 10000,
                             .local_max_bytes = 64 << 20, .cache_ttl = 300,
                             .cache_enabled = true, .max_key_bytes = 512,
                             .max_value_bytes = 8 << 20, .redis_timeout_ms = 1000,
                             .namespaces = CACHE_NAMESPACES_DEFAULT,
                             .local_max_ttl_ms = 86400000 };
    if (!(s_embed = cache_embed_new(&s_ecfg, NULL)))
        bench_die("cannot start the embedded cache engine");
}

/* One Get of the embedded engine, checked as s_rpc_get checks the daemon's. */
static s_check_t s_embed_get(const s_item_t *it, char *tier, size_t tier_len)
{
    uint8_t *v = NULL;
    size_t n = 0;
    const char *t = "";
    char err[256];
    int hit = cache_app_get(cache_embed_app(s_embed), s_opts.ns, it->key, &v, &n, &t, err,
                            sizeof err);
    s_check_t rc = S_OK;
    if (hit < 0)
        rc = S_ERR_STATUS;
    else if (hit == 0 || (int) n != it->size || memcmp(v, it->value, n) != 0)
        rc = S_ERR_VALUE;
    else if (strcmp(t, "local") != 0)
        rc = S_ERR_NOT_LOCAL;
    if (tier)
        snprintf(tier, tier_len, "%.63s", hit < 0 ? err : t);
    free(v);
    return rc;
}

/* Health through the inproc path: the same client, broker, worker and dispatcher as a Get,
 * with a handler that reads two fields. What a Get costs above it is the cache's own work. */
static bool s_rpc_health(void)
{
    Quaver__V1__Empty req = QUAVER__V1__EMPTY__INIT;
    qv_result_t res;
    qv_rpc_call(s_ep_inproc, "cache", "Health", &req.base, NULL, "bench-cache", S_TIMEOUT_MS,
                &res);
    bool ok = res.status == 200;
    qv_result_free(&res);
    return ok;
}

static atomic_int s_errors[4];      /* by s_check_t; [0] counts Redis GET failures */
static char s_last_bad_tier[64];

static void s_count(s_check_t rc, const char *tier)
{
    if (rc == S_OK)
        return;
    atomic_fetch_add(&s_errors[rc], 1);
    if (rc == S_ERR_NOT_LOCAL)
        snprintf(s_last_bad_tier, sizeof s_last_bad_tier, "%s", tier);
}

/* GET of the daemon's own Redis key: its stored form, as long as at setup, is a success. */
static bool s_redis_get(redisContext *rc, const s_item_t *it)
{
    redisReply *r = rc ? (redisReply *) redisCommand(rc, "GET %s", it->rkey) : NULL;
    bool ok = r && r->type == REDIS_REPLY_STRING && (long long) r->len == it->stored;
    if (r)
        freeReplyObject(r);
    return ok;
}

/* One call of path p, checked; counts what was wrong. */
static void s_call(s_path_t p, const s_item_t *it, redisContext *rc, bool count)
{
    char tier[64];
    if (p == S_REDIS) {
        if (!s_redis_get(rc, it) && count)
            atomic_fetch_add(&s_errors[0], 1);
    }
    else if (p == S_EMBED) {
        s_check_t k = s_embed_get(it, tier, sizeof tier);
        if (count)
            s_count(k, tier);
    }
    else if (p == S_FLOOR) {
        if (!s_rpc_health() && count)
            s_count(S_ERR_STATUS, "");
    }
    else {
        s_check_t k = s_rpc_get(p == S_INPROC ? s_ep_inproc : s_ep_tcp, it, tier, sizeof tier);
        if (count)
            s_count(k, tier);
    }
}

/* ---- latency: one thread, every path interleaved ------------------------------------------
 * The machine drifts within seconds (neighbours come and go, vCPUs halt and wake), so a run
 * does not measure one path after another: it cuts its calls into S_CHUNKS blocks and measures
 * every path's block in turn, in an order that rotates per block, so that each path sees the
 * same moments. One thread owns every client (qv_rpc_call keeps one per endpoint per thread). */
#define S_CHUNKS 10

typedef struct {
    const s_item_t *item;
    int             run;
    int64_t        *lat[S_NPATHS];     /* calls each */
    double          server_s[S_NPATHS], server_n[S_NPATHS];
} s_lat_t;

/* Nanoseconds: an in-process hit takes well under a microsecond. */
static int64_t s_mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t) t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *s_latency_main(void *arg)
{
    s_lat_t *l = (s_lat_t *) arg;
    redisContext *rc = s_redis_connect();
    for (int p = 0; p < S_NPATHS; p++)         /* warm-up: connections, allocator, caches */
        for (int i = 0; i < 200; i++)
            s_call((s_path_t) p, l->item, rc, false);
    int chunk = s_opts.calls / S_CHUNKS;
    for (int c = 0; c < S_CHUNKS; c++)
        for (int k = 0; k < S_NPATHS; k++) {
            s_path_t p = (s_path_t) ((l->run + c + k) % S_NPATHS);
            const char *method = p == S_FLOOR ? "Health" : "Get";
            const char *ep = p == S_TCP ? s_ep_tcp : s_ep_inproc;
            double sum0 = 0, n0 = 0, sum1 = 0, n1 = 0;
            bool timed = p != S_REDIS && p != S_EMBED && s_rpc_duration(ep, method, &sum0, &n0);
            for (int i = 0; i < chunk; i++) {
                int64_t t0 = s_mono_ns();
                s_call(p, l->item, rc, true);
                l->lat[p][c * chunk + i] = s_mono_ns() - t0;
            }
            if (timed && s_rpc_duration(ep, method, &sum1, &n1) && n1 > n0) {
                l->server_s[p] += sum1 - sum0;
                l->server_n[p] += n1 - n0;
            }
        }
    if (rc)
        redisFree(rc);
    return NULL;
}

/* One latency run for one value: p50/p99 (µs, from ns samples) and the daemon's mean time per call (µs, -1
 * when unknown) of every path. */
static void s_latency(const s_item_t *it, int run, double p50[S_NPATHS], double p99[S_NPATHS],
                      double server_us[S_NPATHS])
{
    int n = s_opts.calls / S_CHUNKS * S_CHUNKS;
    s_lat_t l = { .item = it, .run = run };
    for (int p = 0; p < S_NPATHS; p++)
        if (!(l.lat[p] = (int64_t *) malloc((size_t) n * sizeof(int64_t))))
            bench_die("out of memory");
    pthread_t t;
    pthread_create(&t, NULL, s_latency_main, &l);
    pthread_join(t, NULL);
    for (int p = 0; p < S_NPATHS; p++) {
        bench_p50_p99(l.lat[p], n, &p50[p], &p99[p]);
        p50[p] /= 1000;
        p99[p] /= 1000;
        server_us[p] = l.server_n[p] > 0 ? l.server_s[p] / l.server_n[p] * 1e6 : -1;
        free(l.lat[p]);
    }
}

/* ---- throughput: N threads in a closed loop ---------------------------------------------- */

typedef struct {
    s_path_t           path;
    const s_item_t    *item;
    long               done;           /* calls completed before s_stop */
    pthread_barrier_t *ready;          /* connected and warmed up: the clock may start */
    pthread_t          thread;
} s_client_t;

static atomic_bool s_stop;

static void *s_client_main(void *arg)
{
    s_client_t *c = (s_client_t *) arg;
    redisContext *rc = c->path == S_REDIS ? s_redis_connect() : NULL;
    for (int i = 0; i < 20; i++)
        s_call(c->path, c->item, rc, false);
    pthread_barrier_wait(c->ready);
    while (!atomic_load_explicit(&s_stop, memory_order_relaxed)) {
        s_call(c->path, c->item, rc, true);
        if (!atomic_load_explicit(&s_stop, memory_order_relaxed))
            c->done++;
    }
    if (rc)
        redisFree(rc);
    return NULL;
}

enum { C_DAEMON, C_BENCH, C_REDIS, C_N };
static pid_t s_cpu_pid[C_N];      /* quaver-cache, this process, redis-server */

/* Throughput through the daemon or hiredis: clients threads in a closed loop for --seconds,
 * counted from when all are connected and warm. Returns calls/s; cpu[] gets each process's CPU
 * time per call (µs) over the same interval. */
static double s_throughput(s_path_t path, const s_item_t *it, double cpu[C_N])
{
    static s_client_t cl[S_MAX_CLIENTS];
    int n = s_opts.clients;
    pthread_barrier_t ready;
    pthread_barrier_init(&ready, NULL, (unsigned) n + 1);
    atomic_store(&s_stop, false);
    for (int i = 0; i < n; i++) {
        cl[i] = (s_client_t) { .path = path, .item = it, .ready = &ready };
        pthread_create(&cl[i].thread, NULL, s_client_main, &cl[i]);
    }
    pthread_barrier_wait(&ready);
    double c0[C_N], c1[C_N];
    for (int k = 0; k < C_N; k++)
        c0[k] = bench_cpu_us(s_cpu_pid[k], NULL);
    int64_t t0 = qv_mono_us();
    usleep((useconds_t) s_opts.seconds * 1000000);
    atomic_store(&s_stop, true);
    double secs = (double) (qv_mono_us() - t0) / 1e6;
    for (int k = 0; k < C_N; k++)
        c1[k] = bench_cpu_us(s_cpu_pid[k], NULL);
    long total = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(cl[i].thread, NULL);
        total += cl[i].done;
    }
    pthread_barrier_destroy(&ready);
    for (int k = 0; k < C_N; k++)
        cpu[k] = total > 0 && c0[k] >= 0 && c1[k] >= 0 ? (c1[k] - c0[k]) / (double) total : -1;
    return (double) total / secs;
}

/* redis-benchmark -c clients -n requests -t get -d size --csv against our redis-server;
 * returns its GET requests per second (and its p50 in µs), or -1. Its GET reads the key
 * "key:__rand_int__" (no -r), which we first make a copy of the daemon's key, so that it
 * reads the very bytes our Redis GET reads, not a nil. */
static double s_redis_benchmark(const s_item_t *it, double *p50_us)
{
    redisContext *rc = s_redis_connect();
    redisReply *r = rc ? (redisReply *) redisCommand(rc, "COPY %s key:__rand_int__ REPLACE",
                                                     it->rkey) : NULL;
    bool set_ok = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    if (r)
        freeReplyObject(r);
    if (rc)
        redisFree(rc);
    if (!set_ok)
        bench_die("cannot SET the key redis-benchmark reads");
    char port[16], clients[16], requests[16], size[16];
    snprintf(port, sizeof port, "%d", s_redis_port);
    snprintf(clients, sizeof clients, "%d", s_opts.clients);
    snprintf(requests, sizeof requests, "%d", s_opts.requests);
    snprintf(size, sizeof size, "%lld", it->stored);
    char *argv[] = { (char *) "redis-benchmark", (char *) "-h", (char *) "127.0.0.1",
                     (char *) "-p", port, (char *) "-c", clients, (char *) "-n", requests,
                     (char *) "-t", (char *) "get", (char *) "-d", size, (char *) "--csv",
                     NULL };
    int fd = -1;
    pid_t pid = bench_spawn("/usr/bin/redis-benchmark", argv, NULL, &fd);
    if (pid < 0)
        bench_die("cannot start redis-benchmark");
    FILE *f = fdopen(fd, "r");
    char line[512];
    double rps = -1;
    /* "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",... */
    while (f && fgets(line, sizeof line, f)) {
        double v[5];
        if (strncmp(line, "\"GET\"", 5) == 0
            && sscanf(line + 5, ",\"%lf\",\"%lf\",\"%lf\",\"%lf\"", &v[0], &v[1], &v[2],
                      &v[3]) == 4) {
            rps = v[0];
            *p50_us = v[3] * 1000;
        }
    }
    if (f)
        fclose(f);
    int status = 0;
    waitpid(pid, &status, 0);
    bench_forget(pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return rps;
}

/* ---- statistics and the report ------------------------------------------------------------ */

static void s_machine(const char *redis_version, double load_start, double load_end)
{
    char model[256], date[64];
    bench_cpu_model(model, sizeof model);
    bench_utc_date(date, sizeof date);
    int major, minor, patch;
    zmq_version(&major, &minor, &patch);
    printf("| date | machine | redis-server | hiredis | libzmq | load average (1 min) at start, "
           "end |\n|---|---|---|---|---|---|\n");
    printf("| %s | %ld CPUs (nproc), %s | %s | %d.%d.%d | %d.%d.%d | %.2f, %.2f |\n\n", date,
           sysconf(_SC_NPROCESSORS_ONLN), model, redis_version, HIREDIS_MAJOR, HIREDIS_MINOR,
           HIREDIS_PATCH, major, minor, patch, load_start, load_end);
}

/* ---- main --------------------------------------------------------------------------------- */

static void s_usage(void)
{
    fprintf(stderr, "usage: bench_cache [--runs 5] [--calls 5000] [--sizes 100,4096,4096j] "
                    "[--clients 50] [--seconds 2] [--requests 100000] [--ns api_response] "
                    "[--workers N] [--daemon PATH]\n");
    exit(2);
}

static void s_parse(int argc, char **argv)
{
    const char *sizes = NULL;
    const bench_opt_t opts[] = {
        { "--runs", BENCH_OPT_INT, &s_opts.runs, NULL, 0 },
        { "--calls", BENCH_OPT_INT, &s_opts.calls, NULL, 0 },
        { "--clients", BENCH_OPT_INT, &s_opts.clients, NULL, 0 },
        { "--seconds", BENCH_OPT_INT, &s_opts.seconds, NULL, 0 },
        { "--requests", BENCH_OPT_INT, &s_opts.requests, NULL, 0 },
        { "--workers", BENCH_OPT_INT, &s_opts.workers, NULL, 0 },
        { "--ns", BENCH_OPT_STR, &s_opts.ns, NULL, 0 },
        { "--daemon", BENCH_OPT_STR, &s_opts.daemon, NULL, 0 },
        { "--sizes", BENCH_OPT_STR, &sizes, NULL, 0 },
        { NULL, 0, NULL, NULL, 0 },
    };
    if (bench_parse_opts(argc, argv, opts) != 0)
        s_usage();
    if (sizes) {            /* "100,4096j": a trailing j asks for a JSON-like value */
        s_opts.nsizes = 0;
        for (const char *p = sizes; *p && s_opts.nsizes < S_MAX_SIZES;) {
            const char *end = strchr(p, ',');
            size_t n = end ? (size_t) (end - p) : strlen(p);
            s_opts.json[s_opts.nsizes] = n > 0 && p[n - 1] == 'j';
            s_opts.sizes[s_opts.nsizes++] = atoi(p);
            if (!end)
                break;
            p = end + 1;
        }
    }
    if (s_opts.runs < 1 || s_opts.runs > S_MAX_RUNS || s_opts.calls < 100 || s_opts.nsizes < 1
        || s_opts.clients < 1 || s_opts.clients > S_MAX_CLIENTS || s_opts.seconds < 1
        || s_opts.requests < 1000 || s_opts.workers < 0 || strlen(s_opts.ns) > 64)
        s_usage();
    for (int i = 0; i < s_opts.nsizes; i++)
        if (s_opts.sizes[i] < (s_opts.json[i] ? 16 : 1) || s_opts.sizes[i] > 1 << 20)
            s_usage();
}

/* Plain values are pseudo-random bytes (fixed seed): zlib cannot shrink them, so both sides
 * move the same number of bytes. JSON values look like a cached API response (a list of
 * tracks) and compress well: both tiers then hold them deflated, Redis's GET returns the
 * smaller form and our Get inflates it on every hit (cache_codec). */
static void s_make_items(void)
{
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int s = 0; s < s_opts.nsizes; s++) {
        s_item_t *it = &s_items[s];
        it->size = s_opts.sizes[s];
        it->json = s_opts.json[s];
        it->value = (uint8_t *) malloc((size_t) it->size + 256);
        if (!it->value)
            bench_die("out of memory");
        int len = 0;
        for (int i = 0; !it->json && i < it->size; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;     /* xorshift64 */
            it->value[len++] = (uint8_t) (x >> 24);
        }
        for (int t = 1; it->json && len < it->size; t++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            len += snprintf((char *) it->value + len, 256,
                            "%s{\"id\":%d,\"title\":\"Track %llu\",\"artist\":\"Artist %llu\","
                            "\"votes\":%llu,\"duration_ms\":%llu}", t == 1 ? "[" : ",", t,
                            (unsigned long long) (x % 100000), (unsigned long long) (x % 977),
                            (unsigned long long) (x % 50),
                            (unsigned long long) (120000 + x % 240000));
        }
        if (it->json)           /* cut to the size; the last byte closes the list */
            it->value[it->size - 1] = ']';
        snprintf(it->label, sizeof it->label, "%d B%s", it->size, it->json ? " JSON" : "");
        snprintf(it->key, sizeof it->key, "bench:%s:%d", it->json ? "json" : "value", it->size);
        /* Built from the same parts as key, not from key itself: GCC's -Wrestrict cannot
         * tell two members of one s_items element apart. */
        snprintf(it->rkey, sizeof it->rkey, "quaver:%s:bench:%s:%d", s_opts.ns,
                 it->json ? "json" : "value", it->size);
    }
}

static void s_start_redis(void)
{
    s_redis_port = bench_free_port();
    if (s_redis_port < 0)
        bench_die("no free port for redis-server");
    char port[16], log[PATH_MAX];
    snprintf(port, sizeof port, "%d", s_redis_port);
    snprintf(log, sizeof log, "%s/redis.log", bench_scratch());
    char *argv[] = { (char *) "redis-server", (char *) "--port", port, (char *) "--bind",
                     (char *) "127.0.0.1", (char *) "--save", (char *) "", (char *) "--appendonly",
                     (char *) "no", (char *) "--daemonize", (char *) "no", (char *) "--dir",
                     (char *) bench_scratch(), NULL };
    if ((s_cpu_pid[C_REDIS] = bench_spawn("/usr/bin/redis-server", argv, log, NULL)) < 0)
        bench_die("cannot start redis-server");
    for (int64_t end = qv_mono_ms() + 10000; qv_mono_ms() < end; usleep(20 * 1000)) {
        redisContext *c = s_redis_connect();
        redisReply *r = c ? (redisReply *) redisCommand(c, "PING") : NULL;
        bool up = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
        if (c)
            redisFree(c);
        if (up)
            return;
    }
    bench_die("redis-server did not answer PING on port %d", s_redis_port);
}

static pid_t s_start_daemon(const char *path)
{
    char broker[160], redis[160], log[PATH_MAX], workers[32];
    snprintf(broker, sizeof broker, "broker=%s", s_ep_tcp);
    snprintf(redis, sizeof redis, "redis_url=redis://127.0.0.1:%d", s_redis_port);
    snprintf(workers, sizeof workers, "workers=%d", s_opts.workers);
    snprintf(log, sizeof log, "%s/cache.log", bench_scratch());
    const char *sets[] = {
        broker, redis, "bus_pub=", "instance=bench",
        /* the local copies must outlive the bench: no expiry in the middle of a run */
        "local_max_ttl_ms=86400000",
        s_opts.workers > 0 ? workers : NULL, NULL
    };
    pid_t pid = bench_spawn_daemon(path, sets, log);
    if (pid < 0)
        bench_die("cannot start %s", path);
    return pid;
}

/* Waits for the daemon's Health, then Sets every value once through it (Redis first, then the
 * local tier) and checks that a Get answers it from the local tier and that Redis holds it.
 * Exits the bench on failure. */
static void *s_setup(void *arg)
{
    char health[256];
    if (!bench_wait_health(s_ep_tcp, "cache", *(pid_t *) arg, 30000, health, sizeof health))
        bench_die("quaver-cache did not answer Health ok within 30 s (last: %s)", health);

    /* the values, Set once through the daemon (Redis first, then the local tier) */
    char tier[64];
    redisContext *rc = s_redis_connect();
    for (int s = 0; s < s_opts.nsizes; s++) {
        s_item_t *it = &s_items[s];
        if (s_rpc_set(it) != 0)
            bench_die("Set through the daemon failed");
        s_check_t k = s_rpc_get(s_ep_inproc, it, tier, sizeof tier);
        if (k != S_OK)
            bench_die("Get of %s right after Set: %s (tier '%s')", it->key,
                  k == S_ERR_NOT_LOCAL ? "not a local hit" : "wrong or missing value", tier);
        /* The embedded engine reads it from Redis once (tier "redis"), then holds it. */
        (void) s_embed_get(it, tier, sizeof tier);
        if ((k = s_embed_get(it, tier, sizeof tier)) != S_OK)
            bench_die("embedded Get of %s: %s (tier '%s')", it->key,
                  k == S_ERR_NOT_LOCAL ? "not a local hit" : "wrong or missing value", tier);
        redisReply *r = rc ? (redisReply *) redisCommand(rc, "STRLEN %s", it->rkey) : NULL;
        if (!r || r->type != REDIS_REPLY_INTEGER || r->integer < 1)
            bench_die("Redis does not hold %s", it->rkey);
        it->stored = r->integer;
        freeReplyObject(r);
    }
    if (rc)
        redisFree(rc);
    return NULL;
}

int main(int argc, char **argv)
{
    s_parse(argc, argv);
    bench_run_init("bench_cache", 2000, NULL);
    s_make_items();

    /* quaver-cache of this very build: bin/ beside us */
    char daemon[PATH_MAX];
    if (s_opts.daemon)
        snprintf(daemon, sizeof daemon, "%s", s_opts.daemon);
    else
        bench_sibling("quaver-cache", daemon, sizeof daemon);
    if (access(daemon, X_OK) != 0)
        bench_die("no executable %s (build quaver-cache, or pass --daemon PATH)", daemon);
    if (access("/usr/bin/redis-server", X_OK) != 0 || access("/usr/bin/redis-benchmark", X_OK) != 0)
        bench_die("needs /usr/bin/redis-server and /usr/bin/redis-benchmark (Debian: redis-server, "
              "redis-tools)");
    char redis_version[128];
    bench_first_line("/usr/bin/redis-server --version", redis_version, sizeof redis_version);
    char *v = strstr(redis_version, "v=");    /* "Redis server v=7.0.15 sha=..." */
    if (v) {
        memmove(redis_version, v + 2, strlen(v + 2) + 1);
        redis_version[strcspn(redis_version, " ")] = '\0';
    }

    (void) bench_scratch();

    s_start_redis();
    s_start_embed();

    /* the broker as the gateway runs it: tcp for daemons, inproc for the gateway's threads */
    snprintf(s_ep_inproc, sizeof s_ep_inproc, "inproc://qv-bench-cache-%d", (int) getpid());
    char binds[192];
    snprintf(binds, sizeof binds, "tcp://127.0.0.1:*,%s", s_ep_inproc);
    qv_broker_t *broker = qv_broker_new(binds, 1000, 3, 5000);
    if (!broker)
        bench_die("cannot start the broker");
    snprintf(s_ep_tcp, sizeof s_ep_tcp, "tcp://127.0.0.1:%d", qv_broker_port(broker));

    pid_t cache = s_start_daemon(daemon);
    s_cpu_pid[C_DAEMON] = cache;
    s_cpu_pid[C_BENCH] = getpid();
    /* In a thread of its own: qv_rpc_call keeps a client per thread, closed when the thread
     * ends, and main's would outlive the broker. */
    pthread_t setup;
    pthread_create(&setup, NULL, s_setup, &cache);
    pthread_join(setup, NULL);
    qv_broker_service_stats_t st;
    int workers = qv_broker_stats(broker, &st, 1) >= 1 ? st.workers : -1;

    int runs = s_opts.runs, ns = s_opts.nsizes;
    static double p50[S_MAX_SIZES][S_NPATHS][S_MAX_RUNS], p99[S_MAX_SIZES][S_NPATHS][S_MAX_RUNS];
    /* throughput columns: the daemon over inproc and over tcp; Redis with the same client model
     * (one blocking hiredis connection per thread); redis-benchmark (one event loop) */
    enum { T_EMBED, T_INPROC, T_TCP, T_HIREDIS, T_RBENCH, T_N };
    static double tput[S_MAX_SIZES][T_N][S_MAX_RUNS], rb_p50[S_MAX_SIZES][S_MAX_RUNS];
    static double cpu[S_MAX_SIZES][T_N][C_N][S_MAX_RUNS];
    static double srv[S_MAX_SIZES][S_NPATHS][S_MAX_RUNS];
    double load_start = bench_loadavg();
    for (int r = 0; r < runs; r++) {
        fprintf(stderr, "bench_cache: run %d/%d\n", r + 1, runs);
        for (int s = 0; s < ns; s++) {
            double a50[S_NPATHS], a99[S_NPATHS], asv[S_NPATHS];
            s_latency(&s_items[s], r, a50, a99, asv);
            for (int p = 0; p < S_NPATHS; p++) {
                p50[s][p][r] = a50[p];
                p99[s][p][r] = a99[p];
                srv[s][p][r] = asv[p];
            }
            static const s_path_t tp_path[T_N] = { S_EMBED, S_INPROC, S_TCP, S_REDIS, S_REDIS };
            for (int k = 0; k < T_N; k++) {
                int t = (r + k) % T_N;
                if (t == T_RBENCH) {
                    tput[s][t][r] = s_redis_benchmark(&s_items[s], &rb_p50[s][r]);
                    if (tput[s][t][r] < 0)
                        bench_die("redis-benchmark failed");
                }
                else {
                    double c[C_N];
                    tput[s][t][r] = s_throughput(tp_path[t], &s_items[s], c);
                    for (int k = 0; k < C_N; k++)
                        cpu[s][t][k][r] = c[k];
                }
            }
        }
    }
    double load_end = bench_loadavg();

    printf("## bench_cache: quaver-cache local hit and throughput vs Redis\n\n");
    s_machine(redis_version, load_start, load_end);
    printf("Namespace `%s`; each value Set once through the daemon: N B = pseudo-random bytes "
           "(incompressible), N B JSON = a JSON list of tracks (compressible: both tiers hold "
           "it deflated, our Get inflates it on each hit, Redis's GET returns the deflated "
           "form). quaver-cache runs %d MDP workers%s and reaches the broker in this process "
           "over tcp loopback. %d runs. Figures are medians over the runs; ratios are path / "
           "Redis of those medians, and the median of the per-run ratios.\n\n", s_opts.ns,
           workers, s_opts.workers ? "" : " (its default)", runs);
    for (int s = 0; s < ns; s++)
        printf("%s`%s` (%s): %lld bytes in Redis%s", s ? ", " : "Stored form: ", s_items[s].rkey,
               s_items[s].label, s_items[s].stored, s == ns - 1 ? ".\n\n" : "");
    printf("Latency: one thread, %d sequential calls per path and run after a warm-up, "
           "interleaved: each run cuts them into %d blocks and measures every path's block in "
           "turn (order rotating per block), so all paths see the same moments of this "
           "machine.\n\n", s_opts.calls / S_CHUNKS * S_CHUNKS, S_CHUNKS);
    printf("| value | path | p50 (µs) | p99 (µs) | p50 min–max over runs (µs) | p50 / Redis | "
           "p99 / Redis | median of per-run p50 ratios | in the daemon, mean (µs) |\n"
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (int s = 0; s < ns; s++) {
        double r50 = bench_median(p50[s][S_REDIS], runs), r99 = bench_median(p99[s][S_REDIS], runs);
        for (int p = 0; p < S_NPATHS; p++) {
            double ratio[S_MAX_RUNS];
            for (int r = 0; r < runs; r++)
                ratio[r] = p50[s][p][r] / p50[s][S_REDIS][r];
            double m50 = bench_median(p50[s][p], runs), m99 = bench_median(p99[s][p], runs);
            char in_daemon[32] = "";
            double sv = bench_median(srv[s][p], runs);
            if (p != S_REDIS && sv >= 0)
                snprintf(in_daemon, sizeof in_daemon, "%.1f", sv);
            printf("| %s | %s | %.1f | %.1f | %.1f–%.1f | %.3f | %.3f | %.3f | %s |\n",
                   s_items[s].label, s_path_label[p], m50, m99, bench_min(p50[s][p], runs),
                   bench_max(p50[s][p], runs), m50 / r50, m99 / r99, bench_median(ratio, runs),
                   in_daemon);
        }
    }
    printf("\nLast column: the daemon's own time per call (its quaver_rpc_duration_seconds, "
           "from receiving the request to its packed reply; sum / count over the measured "
           "calls, from Stats before and after), median over the runs. The rest of the p50 is "
           "the way there and back: client, broker, tcp, the daemon's worker threads.\n");
    printf("\nThroughput: %d concurrent callers, closed loop, same redis-server for both Redis "
           "columns. quaver-cache and hiredis: %d threads in this process, each with its own "
           "client (an MDP client; a blocking hiredis connection), %d s per run. "
           "redis-benchmark: `redis-benchmark -c %d -n %d -t get -d SIZE --csv` (one process, "
           "one event loop, %d connections).\n\n", s_opts.clients, s_opts.clients,
           s_opts.seconds, s_opts.clients, s_opts.requests, s_opts.clients);
    printf("| value | embedded engine Get (calls/s) | quaver-cache Get, inproc (calls/s) | "
           "quaver-cache Get, tcp (calls/s) | "
           "Redis GET, %d hiredis threads (calls/s) | redis-benchmark GET (requests/s) | "
           "embedded / redis-benchmark | inproc / redis-benchmark | tcp / redis-benchmark | "
           "inproc / hiredis threads | "
           "median of per-run inproc / redis-benchmark | inproc min–max | redis-benchmark "
           "min–max | redis-benchmark p50 (µs) |\n"
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
           s_opts.clients);
    for (int s = 0; s < ns; s++) {
        double m[T_N];
        for (int t = 0; t < T_N; t++)
            m[t] = bench_median(tput[s][t], runs);
        double ratio[S_MAX_RUNS];
        for (int r = 0; r < runs; r++)
            ratio[r] = tput[s][T_INPROC][r] / tput[s][T_RBENCH][r];
        printf("| %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | "
               "%.0f–%.0f | %.0f–%.0f | %.0f |\n", s_items[s].label, m[T_EMBED], m[T_INPROC],
               m[T_TCP], m[T_HIREDIS], m[T_RBENCH], m[T_EMBED] / m[T_RBENCH],
               m[T_INPROC] / m[T_RBENCH], m[T_TCP] / m[T_RBENCH],
               m[T_INPROC] / m[T_HIREDIS], bench_median(ratio, runs),
               bench_min(tput[s][T_INPROC], runs), bench_max(tput[s][T_INPROC], runs),
               bench_min(tput[s][T_RBENCH], runs), bench_max(tput[s][T_RBENCH], runs),
               bench_median(rb_p50[s], runs));
    }
    printf("\nWhere the CPU goes at %d callers: CPU time (user + system) each process used "
           "during the timed interval, divided by the calls completed in it; µs per call, "
           "median over the runs. This machine has %ld CPUs for all of them.\n\n",
           s_opts.clients, sysconf(_SC_NPROCESSORS_ONLN));
    printf("| value | path | calls/s | quaver-cache | bench process (%d clients%s) | "
           "redis-server | total |\n|---:|---|---:|---:|---:|---:|---:|\n", s_opts.clients,
           ", broker");
    static const char *tlabel[T_N] = { "embedded engine Get", "quaver-cache Get, inproc",
                                       "quaver-cache Get, tcp",
                                       "Redis GET, hiredis threads", NULL };
    for (int s = 0; s < ns; s++)
        for (int t = 0; t < T_RBENCH; t++) {
            double m[C_N], sum = 0;
            for (int k = 0; k < C_N; k++) {
                m[k] = bench_median(cpu[s][t][k], runs);
                sum += m[k];
            }
            printf("| %s | %s | %.0f | %.1f | %.1f | %.1f | %.1f |\n", s_items[s].label,
                   tlabel[t], bench_median(tput[s][t], runs), m[C_DAEMON], m[C_BENCH], m[C_REDIS],
                   sum);
        }
    int e[4];
    for (int i = 0; i < 4; i++)
        e[i] = atomic_load(&s_errors[i]);
    int bad = e[0] + e[S_ERR_STATUS] + e[S_ERR_NOT_LOCAL] + e[S_ERR_VALUE];
    printf("\nChecked replies: %d failed Redis GETs, %d Gets without a 200, %d not from the "
           "local tier%s%s%s, %d with a wrong value.\n", e[0], e[S_ERR_STATUS],
           e[S_ERR_NOT_LOCAL], *s_last_bad_tier ? " (last tier: '" : "", s_last_bad_tier,
           *s_last_bad_tier ? "')" : "", e[S_ERR_VALUE]);

    bench_reap(2000);
    cache_embed_destroy(&s_embed);
    qv_broker_destroy(&broker);
    for (int s = 0; s < ns; s++)
        free(s_items[s].value);
    return bad ? 1 : 0;
}
