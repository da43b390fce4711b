/* bench_rpc: what a call through the Majordomo broker costs, beside a direct libzmq round trip
 * measured in the same run.
 *
 * The processes are laid out as Quaver runs them (DESIGN.md "Processes and traffic"): the
 * broker lives in this process (as it lives in the gateway), the echo workers live in a
 * separate process connected over tcp loopback (as every service replica does), and so does
 * the anchor's ROUTER echo. Three paths, one body (a packed quaver.v1.Call, so that the broker
 * does the work it does in production: it reads the Call's deadline):
 *
 *   (a) gateway:  qv_client -> inproc://  -> broker -> tcp -> worker process -> back
 *                 (the gateway's HTTP threads call the broker this way, gw_client_endpoint)
 *   (b) external: qv_client -> tcp        -> broker -> tcp -> worker process -> back
 *                 (another daemon, or anyone's MDP client)
 *   (c) direct:   libzmq DEALER -> tcp -> ROUTER echo process -> back (the anchor)
 *
 * Latency: one client thread, sequential calls, p50/p99 and calls/s. Throughput: N client
 * threads in a closed loop; the worker process runs as many echo workers as the widest N, the
 * anchor one ROUTER echo thread (a ROUTER serves any number of clients). Each run measures
 * every path once, in an order that rotates from run to run, so that a noisy neighbour hits
 * all of them alike; each figure is the median over the runs and each ratio is path / direct
 * of those medians.
 *
 * Child processes die with us: they get PR_SET_PDEATHSIG (SIGKILL) before exec, and we stop
 * them at exit() and on SIGINT/SIGTERM/SIGHUP.
 *
 *   bench_rpc [--runs 7] [--calls 20000] [--size 64] [--threads 1,8]
 *   (internal: bench_rpc --echo | bench_rpc --worker ENDPOINT N)
 */
#include "bench_common.h"
#include "qv_mdp.h"
#include "qv_clock.h"
#include "quaver/v1/envelope.pb-c.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_RUNS     BENCH_MAX_RUNS
#define S_MAX_THREADS  64
#define S_NPATHS       3

typedef struct {
    int runs, calls, size;
    int threads[8];
    int nthreads;
} s_opts_t;

static s_opts_t s_opts = { 7, 20000, 64, { 1, 8 }, 2 };

/* ---- child processes -------------------------------------------------------------------- */

static const char *s_exe = "/proc/self/exe";   /* argv[0] when it is a path (valgrind) */

/* fork + exec ourselves with argv; the child's stdout goes to *out_fd when out_fd is set. */
static pid_t s_spawn(char *const argv[], int *out_fd)
{
    return bench_spawn(s_exe, argv, NULL, out_fd);
}

/* --echo: the anchor. A ROUTER on tcp loopback that sends every message back as it came;
 * prints its endpoint on stdout. Plain libzmq, one IO thread. Ends when killed. */
static int s_echo_main(void)
{
    void *ctx = zmq_ctx_new();
    void *router = ctx ? zmq_socket(ctx, ZMQ_ROUTER) : NULL;
    int zero = 0;
    if (!router || zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero) != 0
        || zmq_bind(router, "tcp://127.0.0.1:*") != 0)
        return 1;
    char ep[256];
    size_t len = sizeof ep;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, ep, &len);
    printf("%s\n", ep);
    fflush(stdout);
    while (true) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, router, 0) < 0) {
            zmq_msg_close(&part);
            if (errno == EINTR)
                continue;
            break;
        }
        int more = zmq_msg_more(&part);
        if (zmq_msg_send(&part, router, more ? ZMQ_SNDMORE : 0) < 0)
            zmq_msg_close(&part);
    }
    zmq_close(router);
    zmq_ctx_term(ctx);
    return 0;
}

/* --worker ENDPOINT N: N echo workers for service "echo", one thread each, in this process.
 * Ends on SIGTERM (CZMQ's handler sets zsys_interrupted; qv_worker_recv returns NULL). */
static void *s_worker_thread(void *arg)
{
    qv_worker_t *worker = qv_worker_new((const char *) arg, "echo", 1000, 3);
    if (!worker)
        return NULL;
    zframe_t *reply_to;
    zmsg_t *body;
    while ((body = qv_worker_recv(worker, -1, &reply_to)))
        qv_worker_send(worker, &body, &reply_to);
    qv_worker_destroy(&worker);
    return NULL;
}

static int s_worker_main(const char *endpoint, int n)
{
    if (n < 1 || n > S_MAX_THREADS)
        return 2;
    zsys_init();
    pthread_t threads[S_MAX_THREADS];
    for (int i = 0; i < n; i++)
        pthread_create(&threads[i], NULL, s_worker_thread, (void *) endpoint);
    for (int i = 0; i < n; i++)
        pthread_join(threads[i], NULL);
    return 0;
}

/* ---- clients ----------------------------------------------------------------------------- */

typedef enum { S_DIRECT, S_GATEWAY, S_EXTERNAL } s_path_t;

static const char *s_path_label[S_NPATHS] = {
    "(c) direct: DEALER -tcp-> ROUTER echo process",
    "(a) gateway: client -inproc-> broker -tcp-> worker process",
    "(b) external: client -tcp-> broker -tcp-> worker process",
};

static char s_endpoint[S_NPATHS][256];
static uint8_t *s_body;          /* a packed quaver.v1.Call */
static size_t s_body_len;

typedef struct {
    s_path_t          path;
    int               calls;
    int64_t          *lat_us;     /* may be NULL (throughput mode) */
    int               errors;
    pthread_barrier_t *ready;     /* connected and warmed up: the clock may start */
    pthread_t         thread;
} s_client_t;

static void *s_client_main(void *arg)
{
    s_client_t *c = (s_client_t *) arg;
    int warm = c->calls / 10 < 100 ? c->calls / 10 : 100;
    if (c->path == S_DIRECT) {
        void *dealer = zmq_socket(zsys_init(), ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
        zmq_connect(dealer, s_endpoint[S_DIRECT]);
        uint8_t *in = (uint8_t *) malloc(s_body_len + 1);
        for (int i = -warm; i < c->calls; i++) {
            if (i == 0)
                pthread_barrier_wait(c->ready);
            int64_t t0 = qv_mono_us();
            if (zmq_send(dealer, s_body, s_body_len, 0) != (int) s_body_len
                || zmq_recv(dealer, in, s_body_len + 1, 0) != (int) s_body_len)
                c->errors++;
            if (c->lat_us && i >= 0)
                c->lat_us[i] = qv_mono_us() - t0;
        }
        free(in);
        zmq_close(dealer);
    }
    else {
        qv_client_t *client = qv_client_new(s_endpoint[c->path]);
        for (int i = -warm; i < c->calls; i++) {
            if (i == 0)
                pthread_barrier_wait(c->ready);
            int64_t t0 = qv_mono_us();
            zmsg_t *reply = NULL;
            if (!client
                || qv_client_call(client, "echo", s_body, s_body_len, 5000, &reply) != 0
                || zframe_size(zmsg_first(reply)) != s_body_len)
                c->errors++;
            zmsg_destroy(&reply);
            if (c->lat_us && i >= 0)
                c->lat_us[i] = qv_mono_us() - t0;
        }
        qv_client_destroy(&client);
    }
    return NULL;
}

/* One measurement: nthreads clients of one path, calls in total, timed from when all are
 * connected and warm. Returns calls/s; fills p50/p99 (µs) of the first client when asked. */
static double s_measure(s_path_t path, int nthreads, int calls, double *p50, double *p99,
                        int *errors)
{
    s_client_t cl[S_MAX_THREADS];
    int per = calls / nthreads;
    int64_t *lat = p50 ? (int64_t *) malloc((size_t) per * sizeof *lat) : NULL;
    pthread_barrier_t ready;
    pthread_barrier_init(&ready, NULL, (unsigned) nthreads + 1);
    for (int i = 0; i < nthreads; i++) {
        cl[i] = (s_client_t) { .path = path, .calls = per, .lat_us = i == 0 ? lat : NULL,
                               .ready = &ready };
        pthread_create(&cl[i].thread, NULL, s_client_main, &cl[i]);
    }
    pthread_barrier_wait(&ready);
    int64_t t0 = qv_mono_us();
    for (int i = 0; i < nthreads; i++) {
        pthread_join(cl[i].thread, NULL);
        *errors += cl[i].errors;
    }
    double secs = (double) (qv_mono_us() - t0) / 1e6;
    pthread_barrier_destroy(&ready);
    if (lat) {
        bench_p50_p99(lat, per, p50, p99);
        free(lat);
    }
    return (double) (per * nthreads) / secs;
}

/* ---- main -------------------------------------------------------------------------------- */

static void s_usage(void)
{
    fprintf(stderr, "usage: bench_rpc [--runs N] [--calls N] [--size BYTES] [--threads 1,8]\n");
    exit(2);
}

static void s_parse(int argc, char **argv)
{
    const bench_opt_t opts[] = {
        { "--runs", BENCH_OPT_INT, &s_opts.runs, NULL, 0 },
        { "--calls", BENCH_OPT_INT, &s_opts.calls, NULL, 0 },
        { "--size", BENCH_OPT_INT, &s_opts.size, NULL, 0 },
        { "--threads", BENCH_OPT_INTS, s_opts.threads, &s_opts.nthreads, 8 },
        { NULL, 0, NULL, NULL, 0 },
    };
    if (bench_parse_opts(argc, argv, opts) != 0)
        s_usage();
    if (s_opts.runs < 1 || s_opts.runs > S_MAX_RUNS || s_opts.calls < 100 || s_opts.size < 0
        || s_opts.size > 1 << 24 || s_opts.nthreads < 1)
        s_usage();
    for (int i = 0; i < s_opts.nthreads; i++)
        if (s_opts.threads[i] < 1 || s_opts.threads[i] > S_MAX_THREADS)
            s_usage();
}

/* The body every path carries: a Call as the gateway makes one, payload of --size bytes. */
static void s_make_body(void)
{
    uint8_t *payload = (uint8_t *) malloc((size_t) s_opts.size + 1);
    memset(payload, 'q', (size_t) s_opts.size);
    Quaver__V1__Caller caller = QUAVER__V1__CALLER__INIT;
    caller.user_id = 1;
    caller.username = (char *) "bench";
    Quaver__V1__Call call = QUAVER__V1__CALL__INIT;
    call.method = (char *) "Echo";
    call.request_id = (char *) "bench-0000000000000000";
    call.deadline_ms = qv_wall_ms() + 24LL * 3600 * 1000;  /* never the limit here */
    call.caller = &caller;
    call.payload.data = payload;
    call.payload.len = (size_t) s_opts.size;
    s_body_len = quaver__v1__call__get_packed_size(&call);
    s_body = (uint8_t *) malloc(s_body_len);
    quaver__v1__call__pack(&call, s_body);
    free(payload);
}

static void s_machine(double load_start, double load_end)
{
    char model[256], date[64];
    bench_cpu_model(model, sizeof model);
    bench_utc_date(date, sizeof date);
    int major, minor, patch;
    zmq_version(&major, &minor, &patch);
    printf("| date | machine | libzmq | CZMQ | load average (1 min) at start, end |\n"
           "|---|---|---|---|---|\n");
    printf("| %s | %ld CPUs (nproc), %s | %d.%d.%d | %d.%d.%d | %.2f, %.2f |\n\n", date,
           sysconf(_SC_NPROCESSORS_ONLN), model, major, minor, patch, CZMQ_VERSION_MAJOR,
           CZMQ_VERSION_MINOR, CZMQ_VERSION_PATCH, load_start, load_end);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--echo") == 0)
        return s_echo_main();
    if (argc == 4 && strcmp(argv[1], "--worker") == 0)
        return s_worker_main(argv[2], atoi(argv[3]));
    s_parse(argc, argv);
    s_make_body();
    if (strchr(argv[0], '/'))
        s_exe = argv[0];

    bench_run_init("bench_rpc", 1000, NULL);

    /* (c) the anchor's echo process; it tells us where it listens */
    int out = -1;
    char *echo_argv[] = { argv[0], (char *) "--echo", NULL };
    if (s_spawn(echo_argv, &out) < 0)
        bench_die("cannot start the echo process");
    FILE *echo_out = fdopen(out, "r");
    if (!echo_out || !fgets(s_endpoint[S_DIRECT], sizeof s_endpoint[S_DIRECT], echo_out))
        bench_die("the echo process did not say where it listens");
    fclose(echo_out);
    s_endpoint[S_DIRECT][strcspn(s_endpoint[S_DIRECT], "\n")] = '\0';

    /* the broker as the gateway runs it: tcp for workers and external clients, inproc for
     * the gateway's own threads */
    char inproc[64];
    snprintf(inproc, sizeof inproc, "inproc://qv-bench-broker-%d", (int) getpid());
    char binds[128];
    snprintf(binds, sizeof binds, "tcp://127.0.0.1:*,%s", inproc);
    qv_broker_t *broker = qv_broker_new(binds, 1000, 3, 5000);
    if (!broker)
        bench_die("cannot start the broker");
    snprintf(s_endpoint[S_EXTERNAL], sizeof s_endpoint[S_EXTERNAL], "tcp://127.0.0.1:%d",
             qv_broker_port(broker));
    snprintf(s_endpoint[S_GATEWAY], sizeof s_endpoint[S_GATEWAY], "%s", inproc);

    /* the worker process, with enough echo workers for the widest client count */
    int nworkers = 1;
    for (int i = 0; i < s_opts.nthreads; i++)
        if (s_opts.threads[i] > nworkers)
            nworkers = s_opts.threads[i];
    char nw[16];
    snprintf(nw, sizeof nw, "%d", nworkers);
    char *worker_argv[] = { argv[0], (char *) "--worker", s_endpoint[S_EXTERNAL], nw, NULL };
    if (s_spawn(worker_argv, NULL) < 0)
        bench_die("cannot start the worker process");
    bool up = false;
    for (int64_t end = qv_mono_ms() + 10000; !up && qv_mono_ms() < end;) {
        qv_broker_service_stats_t st;
        up = qv_broker_stats(broker, &st, 1) == 1 && st.ready == nworkers;
        if (!up)
            zclock_sleep(10);
    }
    if (!up)
        bench_die("the worker process did not get ready");

    int errors = 0, runs = s_opts.runs;
    double load_start = bench_loadavg();
    double p50[S_NPATHS][S_MAX_RUNS], p99[S_NPATHS][S_MAX_RUNS], tp[S_NPATHS][S_MAX_RUNS];
    double dummy;
    for (int p = 0; p < S_NPATHS; p++)        /* warm-up: connections, allocator, caches */
        s_measure((s_path_t) p, 1, 2000, &dummy, &dummy, &errors);
    for (int r = 0; r < runs; r++)
        for (int k = 0; k < S_NPATHS; k++) {
            int p = (r + k) % S_NPATHS;
            tp[p][r] = s_measure((s_path_t) p, 1, s_opts.calls, &p50[p][r], &p99[p][r],
                                 &errors);
        }

    /* Per-run ratios too: the paths of one run are measured back to back, so their ratio
     * cancels what drifts between runs (a neighbour that comes and goes). */
    double r50[S_NPATHS][S_MAX_RUNS];
    for (int p = 0; p < S_NPATHS; p++)
        for (int r = 0; r < runs; r++)
            r50[p][r] = p50[p][r] / p50[S_DIRECT][r];

    /* throughput first, so that the tables print together below */
    double tput[8][S_NPATHS];
    for (int t = 0; t < s_opts.nthreads; t++) {
        int n = s_opts.threads[t];
        double v[S_NPATHS][S_MAX_RUNS];
        for (int r = 0; r < runs; r++)
            for (int k = 0; k < S_NPATHS; k++) {
                int p = (r + k) % S_NPATHS;
                v[p][r] = s_measure((s_path_t) p, n, s_opts.calls, NULL, NULL, &errors);
            }
        for (int p = 0; p < S_NPATHS; p++)
            tput[t][p] = bench_median(v[p], runs);
    }
    double load_end = bench_loadavg();

    printf("## bench_rpc: a call through the MDP broker vs a direct libzmq round trip\n\n");
    s_machine(load_start, load_end);
    printf("Body: a packed quaver.v1.Call of %zu bytes (payload %d bytes). %d runs; in each, "
           "every path does %d calls after a warm-up, in an order that rotates from run to "
           "run. Figures are medians over the runs; ratios are path / direct of those "
           "medians, and (last column) the median of the per-run p50 ratios.\n\n",
           s_body_len, s_opts.size, runs, s_opts.calls);
    printf("Latency, one client thread, sequential calls\n\n");
    printf("| path | p50 (µs) | p99 (µs) | calls/s | p50 / direct | p99 / direct |"
           " p50 min–max over runs (µs) | median of per-run p50 ratios |\n"
           "|---|---:|---:|---:|---:|---:|---:|---:|\n");
    double d50 = bench_median(p50[S_DIRECT], runs), d99 = bench_median(p99[S_DIRECT], runs);
    static const s_path_t order[S_NPATHS] = { S_GATEWAY, S_EXTERNAL, S_DIRECT };
    for (int k = 0; k < S_NPATHS; k++) {
        int p = order[k];
        double m50 = bench_median(p50[p], runs), m99 = bench_median(p99[p], runs);
        printf("| %s | %.0f | %.0f | %.0f | %.2f | %.2f | %.0f–%.0f | %.2f |\n", s_path_label[p],
               m50, m99, bench_median(tp[p], runs), m50 / d50, m99 / d99, bench_min(p50[p], runs),
               bench_max(p50[p], runs), bench_median(r50[p], runs));
    }
    printf("\nThroughput, N client threads in a closed loop, calls/s (%d calls per run in "
           "total; the worker process runs %d echo workers, the echo process one ROUTER "
           "thread). ≤ 2× direct means a ratio ≥ 0.50 here.\n\n", s_opts.calls, nworkers);
    printf("| clients | (a) gateway | (b) external | (c) direct | (a) / (c) | (b) / (c) |\n"
           "|---:|---:|---:|---:|---:|---:|\n");
    for (int t = 0; t < s_opts.nthreads; t++) {
        double a = tput[t][S_GATEWAY], b = tput[t][S_EXTERNAL], c = tput[t][S_DIRECT];
        printf("| %d | %.0f | %.0f | %.0f | %.2f | %.2f |\n", s_opts.threads[t], a, b, c,
               a / c, b / c);
    }
    if (errors)
        printf("\n%d calls failed or returned the wrong size\n", errors);

    bench_reap(1000);
    qv_broker_destroy(&broker);
    free(s_body);
    return errors ? 1 : 0;
}
