/* bench_rpc: what the Majordomo broker costs on a round trip.
 *
 * Anchor (same run, same process, same body): a direct libzmq DEALER -> ROUTER echo over tcp
 * loopback. Measured: qv_client_call -> broker (ROUTER, tcp loopback) -> qv_worker echo ->
 * broker -> client. Latency mode does sequential calls from one thread and reports p50/p99
 * and calls/s; throughput mode runs N client threads in a closed loop (with N echo workers
 * behind the broker, and one ROUTER echo thread for the anchor, which serves any number of
 * clients). Each figure is the median of the runs; the ratio is broker / direct. Runs
 * alternate direct and broker so that a noisy neighbour hits both alike.
 *
 *   bench_rpc [--runs 5] [--calls 20000] [--size 64] [--threads 1,8]
 */
#include "qv_mdp.h"
#include "qv_clock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_RUNS     64
#define S_MAX_THREADS  64

typedef struct {
    int    runs, calls, size;
    int    threads[8];
    int    nthreads;
} s_opts_t;

static s_opts_t s_opts = { 5, 20000, 64, { 1, 8 }, 2 };

/* ---- the two echo servers ------------------------------------------------------------- */

static atomic_bool s_stop_direct;

/* ROUTER echo: [id][body] back as it came. */
static void *s_direct_server(void *arg)
{
    void *router = arg;
    zmq_pollitem_t item = { router, 0, ZMQ_POLLIN, 0 };
    while (!atomic_load(&s_stop_direct)) {
        if (zmq_poll(&item, 1, 100) <= 0)
            continue;
        while (true) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, router, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&part);
                break;
            }
            int more = zmq_msg_more(&part);
            zmq_msg_send(&part, router, more ? ZMQ_SNDMORE : 0);
            zmq_msg_close(&part);
        }
    }
    return NULL;
}

typedef struct {
    qv_worker_t *worker;
    pthread_t    thread;
} s_worker_ctx_t;

static void *s_mdp_worker(void *arg)
{
    s_worker_ctx_t *w = (s_worker_ctx_t *) arg;
    zframe_t *reply_to;
    zmsg_t *body;
    while ((body = qv_worker_recv(w->worker, -1, &reply_to)))
        qv_worker_send(w->worker, &body, &reply_to);
    return NULL;
}

/* ---- clients ----------------------------------------------------------------------------- */

typedef struct {
    bool      broker;      /* through the broker, else direct */
    const char *endpoint;
    int       calls;
    int64_t  *lat_us;      /* may be NULL (throughput mode) */
    int       errors;
    pthread_t thread;
} s_client_t;

static void *s_client_main(void *arg)
{
    s_client_t *c = (s_client_t *) arg;
    char *body = (char *) malloc((size_t) s_opts.size);
    memset(body, 'q', (size_t) s_opts.size);
    if (c->broker) {
        qv_client_t *client = qv_client_new(c->endpoint);
        for (int i = 0; i < c->calls; i++) {
            int64_t t0 = qv_mono_us();
            zmsg_t *reply = NULL;
            if (qv_client_call(client, "echo", body, (size_t) s_opts.size, 5000, &reply) != 0
                || zframe_size(zmsg_first(reply)) != (size_t) s_opts.size)
                c->errors++;
            zmsg_destroy(&reply);
            if (c->lat_us)
                c->lat_us[i] = qv_mono_us() - t0;
        }
        qv_client_destroy(&client);
    }
    else {
        void *dealer = zmq_socket(zsys_init(), ZMQ_DEALER);
        int zero = 0;
        zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
        zmq_connect(dealer, c->endpoint);
        char *in = (char *) malloc((size_t) s_opts.size + 1);
        for (int i = 0; i < c->calls; i++) {
            int64_t t0 = qv_mono_us();
            zmq_send(dealer, body, (size_t) s_opts.size, 0);
            if (zmq_recv(dealer, in, (size_t) s_opts.size + 1, 0) != s_opts.size)
                c->errors++;
            if (c->lat_us)
                c->lat_us[i] = qv_mono_us() - t0;
        }
        free(in);
        zmq_close(dealer);
    }
    free(body);
    return NULL;
}

static int s_cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

static double s_cmpd_median(double *v, int n)
{
    for (int i = 1; i < n; i++)        /* insertion sort: n is the number of runs */
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j]; v[j] = v[j - 1]; v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One measurement: nthreads clients, calls in total. Returns calls/s; fills p50/p99 (µs)
 * when latency is wanted (nthreads == 1). */
static double s_measure(bool broker, const char *ep, int nthreads, int calls, double *p50,
                        double *p99, int *errors)
{
    s_client_t cl[S_MAX_THREADS];
    int per = calls / nthreads;
    int64_t *lat = p50 ? (int64_t *) malloc((size_t) per * sizeof *lat) : NULL;
    int64_t t0 = qv_mono_us();
    for (int i = 0; i < nthreads; i++) {
        cl[i] = (s_client_t) { .broker = broker, .endpoint = ep, .calls = per,
                               .lat_us = i == 0 ? lat : NULL };
        pthread_create(&cl[i].thread, NULL, s_client_main, &cl[i]);
    }
    for (int i = 0; i < nthreads; i++) {
        pthread_join(cl[i].thread, NULL);
        *errors += cl[i].errors;
    }
    double secs = (double) (qv_mono_us() - t0) / 1e6;
    if (lat) {
        qsort(lat, (size_t) per, sizeof *lat, s_cmp64);
        *p50 = (double) lat[per / 2];
        *p99 = (double) lat[(int) ((double) per * 0.99)];
        free(lat);
    }
    return (double) (per * nthreads) / secs;
}

/* ---- main -------------------------------------------------------------------------------- */

static void s_parse(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--runs") == 0)
            s_opts.runs = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--calls") == 0)
            s_opts.calls = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--size") == 0)
            s_opts.size = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0) {
            s_opts.nthreads = 0;
            char *list = strdup(argv[i + 1]), *save = NULL;
            for (char *t = strtok_r(list, ",", &save); t && s_opts.nthreads < 8;
                 t = strtok_r(NULL, ",", &save))
                s_opts.threads[s_opts.nthreads++] = atoi(t);
            free(list);
        }
        else {
            fprintf(stderr, "usage: bench_rpc [--runs N] [--calls N] [--size BYTES] "
                            "[--threads 1,8]\n");
            exit(2);
        }
    }
    if (s_opts.runs < 1 || s_opts.runs > S_MAX_RUNS || s_opts.calls < 100 || s_opts.size < 1)
        exit(2);
    for (int i = 0; i < s_opts.nthreads; i++)
        if (s_opts.threads[i] < 1 || s_opts.threads[i] > S_MAX_THREADS)
            exit(2);
}

static void s_machine(void)
{
    char model[256] = "unknown", line[512];
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                snprintf(model, sizeof model, "%s", colon + 2);
                model[strcspn(model, "\n")] = '\0';
            }
            break;
        }
    if (f)
        fclose(f);
    char date[64];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    printf("machine: %ld CPUs (nproc), %s; %s; libzmq %d.%d.%d, CZMQ %d.%d.%d\n",
           sysconf(_SC_NPROCESSORS_ONLN), model, date, ZMQ_VERSION_MAJOR, ZMQ_VERSION_MINOR,
           ZMQ_VERSION_PATCH, CZMQ_VERSION_MAJOR, CZMQ_VERSION_MINOR, CZMQ_VERSION_PATCH);
}

int main(int argc, char **argv)
{
    s_parse(argc, argv);
    zsys_init();
    zsys_set_io_threads(1);

    /* direct anchor */
    void *router = zmq_socket(zsys_init(), ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(router, "tcp://127.0.0.1:*") != 0)
        return 1;
    char direct_ep[256];
    size_t len = sizeof direct_ep;
    zmq_getsockopt(router, ZMQ_LAST_ENDPOINT, direct_ep, &len);
    pthread_t direct_thread;
    pthread_create(&direct_thread, NULL, s_direct_server, router);

    /* the broker and enough echo workers for the widest client count */
    qv_broker_t *broker = qv_broker_new("tcp://127.0.0.1:*", 1000, 3, 5000);
    if (!broker)
        return 1;
    char broker_ep[64];
    snprintf(broker_ep, sizeof broker_ep, "tcp://127.0.0.1:%d", qv_broker_port(broker));
    int nworkers = 1;
    for (int i = 0; i < s_opts.nthreads; i++)
        if (s_opts.threads[i] > nworkers)
            nworkers = s_opts.threads[i];
    s_worker_ctx_t workers[S_MAX_THREADS];
    for (int i = 0; i < nworkers; i++) {
        workers[i].worker = qv_worker_new(broker_ep, "echo", 1000, 3);
        pthread_create(&workers[i].thread, NULL, s_mdp_worker, &workers[i]);
    }
    for (int64_t end = qv_mono_ms() + 5000; qv_mono_ms() < end;) {
        qv_broker_service_stats_t st;
        if (qv_broker_stats(broker, &st, 1) == 1 && st.ready == nworkers)
            break;
        zclock_sleep(10);
    }

    int errors = 0;
    double d_p50[S_MAX_RUNS], d_p99[S_MAX_RUNS], d_tp[S_MAX_RUNS];
    double b_p50[S_MAX_RUNS], b_p99[S_MAX_RUNS], b_tp[S_MAX_RUNS];
    /* warm-up: connections, allocator, caches */
    double dummy;
    s_measure(false, direct_ep, 1, 1000, &dummy, &dummy, &errors);
    s_measure(true, broker_ep, 1, 1000, &dummy, &dummy, &errors);
    for (int r = 0; r < s_opts.runs; r++) {
        d_tp[r] = s_measure(false, direct_ep, 1, s_opts.calls, &d_p50[r], &d_p99[r], &errors);
        b_tp[r] = s_measure(true, broker_ep, 1, s_opts.calls, &b_p50[r], &b_p99[r], &errors);
    }
    double dp50 = s_cmpd_median(d_p50, s_opts.runs), dp99 = s_cmpd_median(d_p99, s_opts.runs);
    double bp50 = s_cmpd_median(b_p50, s_opts.runs), bp99 = s_cmpd_median(b_p99, s_opts.runs);
    double dtp = s_cmpd_median(d_tp, s_opts.runs), btp = s_cmpd_median(b_tp, s_opts.runs);

    printf("## bench_rpc: MDP broker vs direct libzmq, tcp loopback\n\n");
    s_machine();
    printf("body %d bytes; %d runs x %d sequential calls; medians of the runs\n\n",
           s_opts.size, s_opts.runs, s_opts.calls);
    printf("| path | p50 (µs) | p99 (µs) | calls/s (1 client) |\n|---|---:|---:|---:|\n");
    printf("| direct DEALER -> ROUTER echo | %.0f | %.0f | %.0f |\n", dp50, dp99, dtp);
    printf("| client -> broker -> worker -> back | %.0f | %.0f | %.0f |\n", bp50, bp99, btp);
    printf("| ratio broker / direct | %.2f | %.2f | %.2f |\n\n", bp50 / dp50, bp99 / dp99,
           btp / dtp);
    fflush(stdout);

    printf("Throughput, N client threads in a closed loop (%d calls per run in total; "
           "broker has %d echo workers, direct has one ROUTER echo thread)\n\n",
           s_opts.calls, nworkers);
    printf("| clients | direct calls/s | broker calls/s | ratio broker / direct |\n"
           "|---:|---:|---:|---:|\n");
    for (int t = 0; t < s_opts.nthreads; t++) {
        int n = s_opts.threads[t];
        for (int r = 0; r < s_opts.runs; r++) {
            d_tp[r] = s_measure(false, direct_ep, n, s_opts.calls, NULL, NULL, &errors);
            b_tp[r] = s_measure(true, broker_ep, n, s_opts.calls, NULL, NULL, &errors);
        }
        dtp = s_cmpd_median(d_tp, s_opts.runs);
        btp = s_cmpd_median(b_tp, s_opts.runs);
        printf("| %d | %.0f | %.0f | %.2f |\n", n, dtp, btp, btp / dtp);
        fflush(stdout);
    }
    if (errors)
        printf("\n%d calls failed or returned the wrong size\n", errors);

    for (int i = 0; i < nworkers; i++)
        qv_worker_stop(workers[i].worker);
    for (int i = 0; i < nworkers; i++) {
        pthread_join(workers[i].thread, NULL);
        qv_worker_destroy(&workers[i].worker);
    }
    qv_broker_destroy(&broker);
    atomic_store(&s_stop_direct, true);
    pthread_join(direct_thread, NULL);
    zmq_close(router);
    return errors ? 1 : 0;
}
