/* bench_dbopt: what a catalog query costs through quaver-dbopt, beside direct libpq with a
 * prepared statement of the same SQL, at 1, 4, 16 and 64 concurrent callers, in the same run;
 * and beside PgBouncer in transaction mode when it is installed (issue 4, "Tests and measured
 * goals": at 4 callers dbopt should reach at least 0.6x direct libpq and be ahead of
 * PgBouncer).
 *
 * The processes are real: a private PostgreSQL 15 (initdb in a temporary folder, free loopback
 * port, fsync off; or --database URL to use one that exists), the quaver-dbopt of this build
 * (bin/ beside this binary) registered with an MDP broker that lives in this process as it
 * lives in the gateway, and pgbouncer (Debian's /usr/sbin/pgbouncer, transaction mode,
 * default_pool_size = dbopt's pool) when installed; without it that column says so.
 *
 * The query is the catalog's user_get (SELECT id, username, email, is_admin FROM users WHERE
 * id = $1), on a row this bench inserts; the SQL for the libpq paths is read from the catalog
 * itself (dbopt_catalog.c is compiled in), so all paths run the same statement text:
 *   dbopt:     qv_rpc_call(inproc broker, "dbopt", "Query", user_get) -> broker -> tcp ->
 *              dbopt worker -> pooled connection -> EXECUTE of the statement prepared there
 *   prepared:  one libpq connection per caller, PQprepare once, PQexecPrepared (the anchor)
 *   plain:     one libpq connection per caller, PQexecParams (parse and plan every time)
 *   pgbouncer: one libpq connection per caller to PgBouncer, PQexecParams (transaction mode
 *              cannot keep a prepared statement across transactions)
 * Each caller is a thread in a closed loop for --seconds; every reply is checked (one row, the
 * bench user's name). Each run measures every (callers, path) cell once, the paths in an order
 * that rotates from run to run; figures are medians over the runs, ratios are of those
 * medians, plus the median of the per-run ratios.
 *
 * Child processes die with us: dbopt through bench_spawn (PR_SET_PDEATHSIG); PostgreSQL and
 * PgBouncer daemonise, so they are stopped through their pid files at exit and on
 * SIGINT/SIGTERM/SIGHUP. Logs go to a temporary folder, removed on success, kept on failure.
 *
 *   bench_dbopt [--runs 5] [--seconds 2] [--callers 1,4,16,64] [--pool 10] [--workers N]
 *               [--database URL] [--daemon PATH]
 */
#include "bench_common.h"
#include "dbopt_catalog.h"
#include "qv_rpc.h"
#include "qv_mdp.h"
#include "qv_clock.h"
#include "quaver/v1/envelope.pb-c.h"
#include "quaver/v1/dbopt.pb-c.h"

#include <libpq-fe.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_CALLERS 256
#define S_MAX_COUNTS  8
#define S_TIMEOUT_MS  5000
#define S_PG_BIN      "/usr/lib/postgresql/15/bin"
#define S_PGBOUNCER   "/usr/sbin/pgbouncer"
#define S_USERNAME    "bench_dbopt_user"

typedef struct {
    int runs, seconds, pool, workers;
    int callers[S_MAX_COUNTS], ncounts;
    const char *database, *daemon;
} s_opts_t;

static s_opts_t s_opts = { 5, 2, 10, 0, { 1, 4, 16, 64 }, 4, NULL, NULL };

typedef enum { P_DBOPT, P_PREPARED, P_PLAIN, P_BOUNCER, P_N } s_path_t;

static const char *s_path_label[P_N] = {
    "dbopt Query (MDP, broker in process)", "libpq, prepared (anchor)", "libpq, unprepared",
    "PgBouncer 1.18, transaction mode, unprepared",
};

/* ---- temporary folder, children, cleanup ---------------------------------------------------- */

static bool s_own_pg, s_have_bouncer;
static char s_pg_pidfile[PATH_MAX], s_pgb_pidfile[PATH_MAX];

/* The pid in the first line of a pid file, or -1. Async-signal-safe (open/read/close). */
static pid_t s_pidfile(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    char buf[32];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    pid_t pid = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
        pid = pid * 10 + (buf[i] - '0');
    return pid > 0 ? pid : -1;
}

static void s_wait_gone(pid_t p)
{
    struct timespec t = { 0, 50 * 1000 * 1000 };
    for (int i = 0; p > 0 && i < 200 && kill(p, 0) == 0; i++)
        nanosleep(&t, NULL);
}

/* The run's stop hook (bench_run_init): PgBouncer, then PostgreSQL (fast shutdown), both
 * daemonised, so by their pid files, and waits for them to go (the scratch folder holds the
 * data directory). Async-signal-safe: open/read/close, kill, nanosleep. */
static void s_stop_servers(void)
{
    pid_t b = s_have_bouncer ? s_pidfile(s_pgb_pidfile) : -1;
    pid_t p = s_own_pg ? s_pidfile(s_pg_pidfile) : -1;
    if (b > 0)
        kill(b, SIGINT);
    if (p > 0)
        kill(p, SIGINT);
    s_wait_gone(b);
    s_wait_gone(p);
}

/* Runs argv to its end, as the postgres user when we are root (initdb, pg_ctl and pgbouncer
 * refuse to run as root), output appended to log. Returns the exit status, -1 on failure. */
static int s_run_as_pg(char *const argv[], const char *log)
{
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (geteuid() == 0 && !pw)
        bench_die("running as root and there is no postgres user to run PostgreSQL as");
    uid_t uid = pw ? pw->pw_uid : 0;
    gid_t gid = pw ? pw->pw_gid : 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        /* drop privileges first, so that the log is postgres's own (pg_ctl appends to it) */
        if (pw && (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0))
            _exit(126);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void s_chown_pg(const char *path)
{
    struct passwd *pw = geteuid() == 0 ? getpwnam("postgres") : NULL;
    if (pw && chown(path, pw->pw_uid, pw->pw_gid) != 0)
        bench_die("chown %s: %s", path, strerror(errno));
}

/* ---- servers --------------------------------------------------------------------------------- */

static char s_pg_url[512];        /* direct libpq and dbopt */
static char s_pgb_url[512];       /* through PgBouncer */
static char s_pg_version[64], s_pgb_version[64] = "not installed";
static int  s_pg_port;

static void s_start_postgres(void)
{
    char data[512], log[PATH_MAX], sock[512];   /* the scratch path is short */
    snprintf(sock, sizeof sock, "%s/pg", bench_scratch());
    snprintf(data, sizeof data, "%s/pg/data", bench_scratch());
    snprintf(log, sizeof log, "%s/postgres.log", bench_scratch());
    snprintf(s_pg_pidfile, sizeof s_pg_pidfile, "%s/postmaster.pid", data);
    if (mkdir(sock, 0700) != 0)
        bench_die("mkdir %s: %s", sock, strerror(errno));
    s_chown_pg(sock);
    char *initdb[] = { (char *) S_PG_BIN "/initdb", (char *) "-D", data, (char *) "-U",
                       (char *) "postgres", (char *) "-A", (char *) "trust", (char *) "-E",
                       (char *) "UTF8", (char *) "--locale=C", (char *) "--no-sync", NULL };
    if (s_run_as_pg(initdb, log) != 0)
        bench_die("initdb failed (see %s)", log);
    s_pg_port = bench_free_port();
    char opts[PATH_MAX + 256];
    snprintf(opts, sizeof opts, "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
             "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
             s_pg_port, sock);
    char *start[] = { (char *) S_PG_BIN "/pg_ctl", (char *) "-D", data, (char *) "-l", log,
                      (char *) "-w", (char *) "-t", (char *) "60", (char *) "-o", opts,
                      (char *) "start", NULL };
    s_own_pg = true;
    if (s_run_as_pg(start, log) != 0)
        bench_die("pg_ctl start failed (see %s)", log);
    char url[256];
    snprintf(url, sizeof url, "postgresql://postgres@127.0.0.1:%d/postgres", s_pg_port);
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, "CREATE DATABASE bench") : NULL;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        bench_die("CREATE DATABASE bench: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    snprintf(s_pg_url, sizeof s_pg_url, "postgresql://postgres@127.0.0.1:%d/bench", s_pg_port);
}

/* PgBouncer in transaction mode in front of s_pg_url (whose parts come from libpq's own
 * parser, so --database URL works too). */
static void s_start_pgbouncer(void)
{
    PQconninfoOption *opts = PQconninfoParse(s_pg_url, NULL);
    const char *host = "127.0.0.1", *port = "5432", *db = "postgres", *user = "postgres";
    const char *pass = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            port = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            db = o->val;
        else if (strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp(o->keyword, "password") == 0)
            pass = o->val;
    }
    char ini[PATH_MAX], users[PATH_MAX], log[PATH_MAX];
    snprintf(ini, sizeof ini, "%s/pgbouncer.ini", bench_scratch());
    snprintf(users, sizeof users, "%s/userlist.txt", bench_scratch());
    snprintf(log, sizeof log, "%s/pgbouncer.log", bench_scratch());
    snprintf(s_pgb_pidfile, sizeof s_pgb_pidfile, "%s/pgbouncer.pid", bench_scratch());
    int port_b = bench_free_port();
    FILE *f = fopen(users, "w");
    if (!f)
        bench_die("cannot write %s", users);
    fprintf(f, "\"%s\" \"\"\n", user);
    fclose(f);
    f = fopen(ini, "w");
    if (!f)
        bench_die("cannot write %s", ini);
    fprintf(f, "[databases]\nbench = host=%s port=%s dbname=%s user=%s%s%s\n\n"
            "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
            "auth_type = trust\nauth_file = %s\npool_mode = transaction\n"
            "default_pool_size = %d\nmin_pool_size = %d\nmax_client_conn = 1000\n"
            "pidfile = %s\nlogfile = %s\nlog_connections = 0\nlog_disconnections = 0\n"
            "ignore_startup_parameters = extra_float_digits\n",
            host, port, db, user, pass ? " password=" : "", pass ? pass : "", port_b, users,
            s_opts.pool, s_opts.pool, s_pgb_pidfile, log);
    fclose(f);
    char *argv[] = { (char *) S_PGBOUNCER, (char *) "-d", ini, NULL };
    s_have_bouncer = true;
    if (s_run_as_pg(argv, log) != 0)
        bench_die("pgbouncer did not start (see %s)", log);
    snprintf(s_pgb_url, sizeof s_pgb_url, "postgresql://%s@127.0.0.1:%d/bench", user, port_b);
    PQconninfoFree(opts);       /* host, port, db, user and pass pointed into it */
    for (int64_t end = qv_mono_ms() + 10000; qv_mono_ms() < end; usleep(50 * 1000)) {
        PGconn *c = PQconnectdb(s_pgb_url);
        bool ok = PQstatus(c) == CONNECTION_OK;
        PQfinish(c);
        if (ok)
            return;
    }
    bench_die("pgbouncer does not accept connections on port %d (see %s)", port_b, log);
}

/* ---- the broker and dbopt ---------------------------------------------------------------------- */

static char s_ep_tcp[128], s_ep_inproc[128];
static char s_user_id[32];
static const char *s_sql;       /* the catalog's user_get */

static pid_t s_start_dbopt(const char *path)
{
    char broker[160], db[600], pool[32], workers[32], log[PATH_MAX];
    snprintf(broker, sizeof broker, "broker=%s", s_ep_tcp);
    snprintf(db, sizeof db, "database_url=%s", s_pg_url);
    snprintf(pool, sizeof pool, "db_pool_max=%d", s_opts.pool);
    snprintf(workers, sizeof workers, "workers=%d", s_opts.workers);
    snprintf(log, sizeof log, "%s/dbopt.log", bench_scratch());
    const char *sets[] = {
        broker, db, pool, "bus_pub=", "instance=bench",
        "maintenance_interval_s=0",   /* no maintenance pass in the middle of a measurement */
        "log_level=warn",
        s_opts.workers > 0 ? workers : NULL, NULL
    };
    pid_t pid = bench_spawn_daemon(path, sets, log);
    if (pid < 0)
        bench_die("cannot start %s", path);
    return pid;
}

/* Health "ok" (connected and migrated), then the bench user inserted directly. */
static void *s_setup(void *arg)
{
    char last[256];
    if (!bench_wait_health(s_ep_tcp, "dbopt", *(pid_t *) arg, 60000, last, sizeof last))
        bench_die("quaver-dbopt did not answer Health ok within 60 s (last: %s)", last);
    PGconn *c = PQconnectdb(s_pg_url);
    PGresult *r = PQexec(c, "INSERT INTO users (username, email, password_hash) VALUES ('"
                         S_USERNAME "', 'bench@example.test', 'x') ON CONFLICT (username) "
                         "DO UPDATE SET email = EXCLUDED.email RETURNING id");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        bench_die("inserting the bench user: %s", PQerrorMessage(c));
    snprintf(s_user_id, sizeof s_user_id, "%s", PQgetvalue(r, 0, 0));
    snprintf(s_pg_version, sizeof s_pg_version, "%s", PQparameterStatus(c, "server_version"));
    PQclear(r);
    PQfinish(c);
    return NULL;
}

/* ---- the callers ------------------------------------------------------------------------------- */

static atomic_int s_bad;          /* replies that were not one row with the bench user */
static char s_last_bad[256];

static void s_count_bad(const char *why)
{
    if (atomic_fetch_add(&s_bad, 1) == 0)
        snprintf(s_last_bad, sizeof s_last_bad, "%s", why);
}

static bool s_check_pg(PGresult *r)
{
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
              && strcmp(PQgetvalue(r, 0, 1), S_USERNAME) == 0;
    if (!ok)
        s_count_bad(PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

static bool s_call_dbopt(void)
{
    Quaver__V1__Value v = QUAVER__V1__VALUE__INIT;
    v.text = s_user_id;
    Quaver__V1__Value *params[1] = { &v };
    Quaver__V1__QueryRequest req = QUAVER__V1__QUERY_REQUEST__INIT;
    req.name = (char *) "user_get";
    req.n_params = 1;
    req.params = params;
    qv_result_t res;
    qv_rpc_call(s_ep_inproc, "dbopt", "Query", &req.base, NULL, "bench-dbopt", S_TIMEOUT_MS,
                &res);
    Quaver__V1__QueryReply *rep = res.status == 200
        ? quaver__v1__query_reply__unpack(NULL, res.len, res.payload) : NULL;
    bool ok = rep && rep->n_rows == 1 && rep->rows[0]->n_cells >= 2
              && strcmp(rep->rows[0]->cells[1]->text, S_USERNAME) == 0;
    if (!ok) {
        char why[256];
        snprintf(why, sizeof why, "dbopt %d %s", res.status, res.error);
        s_count_bad(why);
    }
    if (rep)
        quaver__v1__query_reply__free_unpacked(rep, NULL);
    qv_result_free(&res);
    return ok;
}

typedef struct {
    s_path_t           path;
    pthread_barrier_t *ready;
    atomic_bool       *stop;
    uint64_t           calls;
    bool               failed;
} s_caller_t;

static bool s_call(s_path_t p, PGconn *c)
{
    const char *vals[1] = { s_user_id };
    switch (p) {
    case P_DBOPT:
        return s_call_dbopt();
    case P_PREPARED:
        return s_check_pg(PQexecPrepared(c, "user_get", 1, vals, NULL, NULL, 0));
    case P_PLAIN:
    case P_BOUNCER:
        return s_check_pg(PQexecParams(c, s_sql, 1, NULL, vals, NULL, NULL, 0));
    default:
        return false;
    }
}

static void *s_caller_main(void *arg)
{
    s_caller_t *k = arg;
    PGconn *c = NULL;
    if (k->path != P_DBOPT) {
        c = PQconnectdb(k->path == P_BOUNCER ? s_pgb_url : s_pg_url);
        if (PQstatus(c) != CONNECTION_OK)
            k->failed = true;
        else if (k->path == P_PREPARED) {
            PGresult *r = PQprepare(c, "user_get", s_sql, 1, NULL);
            k->failed = PQresultStatus(r) != PGRES_COMMAND_OK;
            PQclear(r);
        }
    }
    for (int i = 0; i < 20 && !k->failed; i++)     /* warm-up: connection, plan cache */
        (void) s_call(k->path, c);
    pthread_barrier_wait(k->ready);
    while (!k->failed && !atomic_load(k->stop))
        if (s_call(k->path, c))
            k->calls++;
    if (c)
        PQfinish(c);
    return NULL;
}

/* ---- where the CPU goes ----------------------------------------------------------------------
 * CPU time (user + system) each party used during a cell, per call: quaver-dbopt; this process
 * (the caller threads, and for the dbopt path also the broker); PostgreSQL (the postmaster and
 * all its children: backends, walwriter, ...); PgBouncer. On 2 CPUs throughput is roughly
 * 2 s / (CPU per call), so this says which party a path's calls are paying for. */
enum { C_DBOPT, C_BENCH, C_PG, C_BOUNCER, C_N };
static pid_t s_dbopt_pid;

static void s_cpu(double out[C_N])
{
    out[C_DBOPT] = bench_cpu_us(s_dbopt_pid, NULL);
    out[C_BENCH] = bench_cpu_us(getpid(), NULL);
    pid_t b = s_have_bouncer ? s_pidfile(s_pgb_pidfile) : -1;
    out[C_BOUNCER] = b > 0 ? bench_cpu_us(b, NULL) : -1;
    out[C_PG] = -1;
    pid_t pm = s_own_pg ? s_pidfile(s_pg_pidfile) : -1;
    DIR *d = pm > 0 ? opendir("/proc") : NULL;
    if (!d)
        return;
    out[C_PG] = 0;
    for (struct dirent *e; (e = readdir(d)); ) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        pid_t pid = (pid_t) atoi(e->d_name), pp = 0;
        double us = bench_cpu_us(pid, &pp);
        if (us >= 0 && (pid == pm || pp == pm))
            out[C_PG] += us;
    }
    closedir(d);
}

/* n callers on path p in a closed loop for --seconds; calls per second. cpu: per-call CPU µs
 * of each party (-1 unknown). */
static double s_measure(s_path_t p, int n, double cpu[C_N])
{
    static s_caller_t callers[S_MAX_CALLERS];
    static pthread_t th[S_MAX_CALLERS];
    pthread_barrier_t ready;
    atomic_bool stop = false;
    pthread_barrier_init(&ready, NULL, (unsigned) n + 1);
    for (int i = 0; i < n; i++) {
        callers[i] = (s_caller_t) { .path = p, .ready = &ready, .stop = &stop };
        if (pthread_create(&th[i], NULL, s_caller_main, &callers[i]) != 0)
            bench_die("cannot start caller thread %d", i);
    }
    double c0[C_N], c1[C_N];
    pthread_barrier_wait(&ready);
    s_cpu(c0);
    int64_t t0 = qv_mono_us();
    usleep((useconds_t) s_opts.seconds * 1000000);
    atomic_store(&stop, true);
    int64_t t1 = qv_mono_us();
    s_cpu(c1);      /* before the joins: the callers' backends are still there */
    uint64_t calls = 0;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        calls += callers[i].calls;
        failed += callers[i].failed;
    }
    pthread_barrier_destroy(&ready);
    for (int k = 0; k < C_N; k++)
        cpu[k] = c0[k] >= 0 && c1[k] >= 0 && calls > 0 ? (c1[k] - c0[k]) / (double) calls : -1;
    if (failed)
        bench_die("%d of %d callers of '%s' could not connect or prepare", failed, n,
              s_path_label[p]);
    return (double) calls * 1e6 / (double) (t1 - t0);
}

/* dbopt's own account of Query: quaver_rpc_duration_seconds{method="Query"} sum and count, and
 * the statement's calls and average ms (stmt.user_get.*), from its Stats. */
typedef struct { double rpc_sum, rpc_n, stmt_calls, stmt_avg_ms; } s_dstats_t;

static void *s_dbopt_stats(void *arg)
{
    s_dstats_t *d = arg;
    memset(d, 0, sizeof *d);
    Quaver__V1__Empty req = QUAVER__V1__EMPTY__INIT;
    qv_result_t res;
    qv_rpc_call(s_ep_tcp, "dbopt", "Stats", &req.base, NULL, "bench-dbopt", S_TIMEOUT_MS, &res);
    Quaver__V1__StatsReply *rep = res.status == 200
        ? quaver__v1__stats_reply__unpack(NULL, res.len, res.payload) : NULL;
    for (size_t i = 0; rep && i < rep->n_stats; i++) {
        const char *n = rep->stats[i]->name;
        double v = rep->stats[i]->value;
        if (strncmp(n, "quaver_rpc_duration_seconds_", 28) == 0 && strstr(n, "method=\"Query\"")) {
            if (strncmp(n + 28, "sum", 3) == 0)
                d->rpc_sum = v;
            else if (strncmp(n + 28, "count", 5) == 0)
                d->rpc_n = v;
        } else if (strcmp(n, "stmt.user_get.calls") == 0)
            d->stmt_calls = v;
        else if (strcmp(n, "stmt.user_get.avg_ms") == 0)
            d->stmt_avg_ms = v;
    }
    if (rep)
        quaver__v1__stats_reply__free_unpacked(rep, NULL);
    qv_result_free(&res);
    return NULL;
}

/* Stats from a thread of its own: qv_rpc_call's per-thread client closes with the thread, and
 * main's would outlive the broker. */
static void s_read_dbopt_stats(s_dstats_t *d)
{
    pthread_t t;
    pthread_create(&t, NULL, s_dbopt_stats, d);
    pthread_join(t, NULL);
}

/* ---- the runs and the report ---------------------------------------------------------------- */

/* What the runs measured (static: too big for a stack). */
static struct {
    double tput[S_MAX_COUNTS][P_N][BENCH_MAX_RUNS];         /* calls/s; -1: not measured */
    double cpu[S_MAX_COUNTS][P_N][C_N][BENCH_MAX_RUNS];     /* CPU us per call */
    double in_dbopt_sum, in_dbopt_n, stmt_ms_sum, stmt_n;   /* the 1-caller dbopt cells */
    double load_start, load_end;
    int    workers;                                         /* dbopt's, as the broker saw */
} s_res;

/* Every (callers, path) cell once per run, the paths in an order rotating per run. */
static void s_run_all(void)
{
    int runs = s_opts.runs, nc = s_opts.ncounts;
    bool bouncer = s_have_bouncer;
    double (*tput)[P_N][BENCH_MAX_RUNS] = s_res.tput;
    double (*cpu)[P_N][C_N][BENCH_MAX_RUNS] = s_res.cpu;
    s_res.load_start = bench_loadavg();
    for (int r = 0; r < runs; r++) {
        fprintf(stderr, "bench_dbopt: run %d/%d\n", r + 1, runs);
        for (int c = 0; c < nc; c++)
            for (int k = 0; k < P_N; k++) {
                s_path_t p = (s_path_t) ((r + k) % P_N);
                if (p == P_BOUNCER && !bouncer) {
                    tput[c][p][r] = -1;
                    continue;
                }
                s_dstats_t d0, d1;
                bool one = p == P_DBOPT && s_opts.callers[c] == 1;
                if (one)
                    s_read_dbopt_stats(&d0);
                double cc[C_N];
                tput[c][p][r] = s_measure(p, s_opts.callers[c], cc);
                for (int j = 0; j < C_N; j++)
                    cpu[c][p][j][r] = cc[j];
                if (one) {
                    s_read_dbopt_stats(&d1);
                    s_res.in_dbopt_sum += d1.rpc_sum - d0.rpc_sum;
                    s_res.in_dbopt_n += d1.rpc_n - d0.rpc_n;
                    s_res.stmt_ms_sum += d1.stmt_avg_ms * d1.stmt_calls
                                         - d0.stmt_avg_ms * d0.stmt_calls;
                    s_res.stmt_n += d1.stmt_calls - d0.stmt_calls;
                }
            }
    }
    s_res.load_end = bench_loadavg();
}

/* The report on stdout: markdown tables, as docs/BENCHMARKS.md quotes them. */
static void s_report(void)
{
    int runs = s_opts.runs, nc = s_opts.ncounts, workers = s_res.workers;
    bool bouncer = s_have_bouncer;
    double (*tput)[P_N][BENCH_MAX_RUNS] = s_res.tput;
    double (*cpu)[P_N][C_N][BENCH_MAX_RUNS] = s_res.cpu;
    double load_start = s_res.load_start, load_end = s_res.load_end;
    double in_dbopt_sum = s_res.in_dbopt_sum, in_dbopt_n = s_res.in_dbopt_n;
    double stmt_ms_sum = s_res.stmt_ms_sum, stmt_n = s_res.stmt_n;
    char model[256], date[64];
    bench_cpu_model(model, sizeof model);
    bench_utc_date(date, sizeof date);
    printf("## bench_dbopt: a catalog query through quaver-dbopt vs direct libpq and "
           "PgBouncer\n\n");
    printf("| date | machine | PostgreSQL | PgBouncer | libpq | load average (1 min) at start, "
           "end |\n|---|---|---|---|---|---|\n");
    printf("| %s | %ld CPUs (nproc), %s | %s%s | %s | %d | %.2f, %.2f |\n\n", date,
           sysconf(_SC_NPROCESSORS_ONLN), model, s_pg_version,
           s_opts.database ? " (given URL)" : " (private, fsync off)", s_pgb_version,
           PQlibVersion(), load_start, load_end);
    printf("Query: catalog `user_get` (`%s`) for one existing row, every reply checked. "
           "dbopt: pool of %d connections, %d MDP worker%s%s, its broker in this process "
           "(the client on inproc, dbopt over tcp loopback, as with the gateway). libpq paths: "
           "one connection per caller. PgBouncer: transaction mode, default_pool_size %d, "
           "PQexecParams. Callers: threads in a closed loop for %d s per cell; %d runs, the "
           "paths in an order rotating per run. Figures are medians over the runs (calls/s); "
           "ratios are of the medians, and the median of the per-run ratios.\n\n", s_sql,
           s_opts.pool, workers, workers == 1 ? "" : "s",
           s_opts.workers ? "" : " (its default)", s_opts.pool, s_opts.seconds, runs);
    printf("| callers | %s | %s | %s | %s | dbopt / prepared | dbopt / PgBouncer | "
           "median of per-run dbopt / prepared | prepared / unprepared | dbopt min–max | "
           "prepared min–max |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
           s_path_label[P_DBOPT], s_path_label[P_PREPARED], s_path_label[P_PLAIN],
           s_path_label[P_BOUNCER]);
    double ratio4 = -1, ratio4_b = -1;
    for (int c = 0; c < nc; c++) {
        double m[P_N];
        for (int p = 0; p < P_N; p++)
            m[p] = bench_median(tput[c][p], runs);
        double per[BENCH_MAX_RUNS];
        for (int r = 0; r < runs; r++)
            per[r] = tput[c][P_DBOPT][r] / tput[c][P_PREPARED][r];
        char b[32] = "—", rb[32] = "—";
        if (bouncer) {
            snprintf(b, sizeof b, "%.0f", m[P_BOUNCER]);
            snprintf(rb, sizeof rb, "%.2f", m[P_DBOPT] / m[P_BOUNCER]);
        }
        printf("| %d | %.0f | %.0f | %.0f | %s | %.2f | %s | %.2f | %.2f | %.0f–%.0f | "
               "%.0f–%.0f |\n", s_opts.callers[c], m[P_DBOPT], m[P_PREPARED], m[P_PLAIN], b,
               m[P_DBOPT] / m[P_PREPARED], rb, bench_median(per, runs),
               m[P_PREPARED] / m[P_PLAIN], bench_min(tput[c][P_DBOPT], runs),
               bench_max(tput[c][P_DBOPT], runs), bench_min(tput[c][P_PREPARED], runs),
               bench_max(tput[c][P_PREPARED], runs));
        if (s_opts.callers[c] == 4) {
            ratio4 = m[P_DBOPT] / m[P_PREPARED];
            ratio4_b = bouncer ? m[P_DBOPT] / m[P_BOUNCER] : -1;
        }
    }
    if (ratio4 >= 0)
        printf("\nGoal at 4 callers: dbopt >= 0.6x direct libpq (prepared): %.2fx, %s; ahead "
               "of PgBouncer: %s.\n", ratio4, ratio4 >= 0.6 ? "met" : "NOT met",
               ratio4_b < 0 ? "not measured (PgBouncer not installed)"
               : ratio4_b > 1 ? "met" : "NOT met");
    for (int c = 0; c < nc; c++)
        if (s_opts.callers[c] == 1 && in_dbopt_n > 0 && stmt_n > 0) {
            double total = 1e6 / bench_median(tput[c][P_DBOPT], runs);
            double inside = in_dbopt_sum / in_dbopt_n * 1e6, stmt = stmt_ms_sum / stmt_n * 1e3;
            double direct = 1e6 / bench_median(tput[c][P_PREPARED], runs);
            printf("\nWhere a call goes at 1 caller (µs, means over the 1-caller dbopt cells): "
                   "whole call %.0f; inside dbopt's dispatcher %.0f, of which the statement on "
                   "its pooled connection %.0f; so client + broker + the two MDP hops %.0f. "
                   "The same statement from libpq directly: %.0f.\n", total, inside, stmt,
                   total - inside, direct);
        }
    printf("\nWhere the CPU goes: CPU time (user + system) each party used during the timed "
           "interval, divided by the calls completed in it; µs per call, median over the runs "
           "(— where it does not apply). This machine has %ld CPUs for all of them (and for "
           "whatever else runs on it).\n\n| callers | path | calls/s | quaver-dbopt | bench "
           "process (callers%s) | PostgreSQL (all processes) | PgBouncer | total |\n"
           "|---:|---|---:|---:|---:|---:|---:|---:|\n", sysconf(_SC_NPROCESSORS_ONLN),
           ", and the broker on the dbopt path");
    for (int c = 0; c < nc; c++)
        for (int p = 0; p < P_N; p++) {
            if (p == P_BOUNCER && !bouncer)
                continue;
            char cell[C_N][32];
            double sum = 0;
            for (int k = 0; k < C_N; k++) {
                double v = bench_median(cpu[c][p][k], runs);
                bool na = v < 0 || (k == C_DBOPT && p != P_DBOPT)
                          || (k == C_BOUNCER && p != P_BOUNCER);
                snprintf(cell[k], sizeof cell[k], na ? "—" : "%.0f", v);
                if (!na)
                    sum += v;
            }
            printf("| %d | %s | %.0f | %s | %s | %s | %s | %.0f |\n", s_opts.callers[c],
                   s_path_label[p], bench_median(tput[c][p], runs), cell[C_DBOPT],
                   cell[C_BENCH], cell[C_PG], cell[C_BOUNCER], sum);
        }
}

/* ---- main --------------------------------------------------------------------------------------- */

static void s_usage(void)
{
    fprintf(stderr, "usage: bench_dbopt [--runs 5] [--seconds 2] [--callers 1,4,16,64] "
                    "[--pool 10] [--workers N] [--database URL] [--daemon PATH]\n");
    exit(2);
}

static void s_parse(int argc, char **argv)
{
    const bench_opt_t opts[] = {
        { "--runs", BENCH_OPT_INT, &s_opts.runs, NULL, 0 },
        { "--seconds", BENCH_OPT_INT, &s_opts.seconds, NULL, 0 },
        { "--pool", BENCH_OPT_INT, &s_opts.pool, NULL, 0 },
        { "--workers", BENCH_OPT_INT, &s_opts.workers, NULL, 0 },
        { "--database", BENCH_OPT_STR, &s_opts.database, NULL, 0 },
        { "--daemon", BENCH_OPT_STR, &s_opts.daemon, NULL, 0 },
        { "--callers", BENCH_OPT_INTS, s_opts.callers, &s_opts.ncounts, S_MAX_COUNTS },
        { NULL, 0, NULL, NULL, 0 },
    };
    if (bench_parse_opts(argc, argv, opts) != 0)
        s_usage();
    if (s_opts.runs < 1 || s_opts.runs > BENCH_MAX_RUNS || s_opts.seconds < 1
        || s_opts.pool < 1 || s_opts.ncounts < 1)
        s_usage();
    for (int i = 0; i < s_opts.ncounts; i++)
        if (s_opts.callers[i] < 1 || s_opts.callers[i] > S_MAX_CALLERS)
            s_usage();
}

int main(int argc, char **argv)
{
    s_parse(argc, argv);
    bench_run_init("bench_dbopt", 3000, s_stop_servers);
    const dbopt_stmt_t *st = dbopt_catalog_find("user_get", NULL);
    if (!st)
        bench_die("the catalog has no user_get");
    s_sql = st->sql;

    char daemon[PATH_MAX];
    if (s_opts.daemon)
        snprintf(daemon, sizeof daemon, "%s", s_opts.daemon);
    else
        bench_sibling("quaver-dbopt", daemon, sizeof daemon);
    if (access(daemon, X_OK) != 0)
        bench_die("no executable %s (build quaver-dbopt, or pass --daemon PATH)", daemon);
    if (!s_opts.database && access(S_PG_BIN "/initdb", X_OK) != 0)
        bench_die("needs PostgreSQL 15 (%s; Debian: postgresql-15) or --database URL", S_PG_BIN);
    bool bouncer = access(S_PGBOUNCER, X_OK) == 0;
    if (!bouncer)
        fprintf(stderr, "bench_dbopt: %s not installed (Debian: apt-get install pgbouncer): "
                "the PgBouncer column is skipped\n", S_PGBOUNCER);
    else {
        bench_first_line(S_PGBOUNCER " --version", s_pgb_version, sizeof s_pgb_version);
    }

    s_chown_pg(bench_scratch());

    if (s_opts.database)
        snprintf(s_pg_url, sizeof s_pg_url, "%s", s_opts.database);
    else
        s_start_postgres();
    if (bouncer)
        s_start_pgbouncer();

    snprintf(s_ep_inproc, sizeof s_ep_inproc, "inproc://qv-bench-dbopt-%d", (int) getpid());
    char binds[192];
    snprintf(binds, sizeof binds, "tcp://127.0.0.1:*,%s", s_ep_inproc);
    qv_broker_t *broker = qv_broker_new(binds, 1000, 3, 5000);
    if (!broker)
        bench_die("cannot start the broker");
    snprintf(s_ep_tcp, sizeof s_ep_tcp, "tcp://127.0.0.1:%d", qv_broker_port(broker));
    pid_t dbopt = s_start_dbopt(daemon);
    s_dbopt_pid = dbopt;
    pthread_t setup;
    pthread_create(&setup, NULL, s_setup, &dbopt);
    pthread_join(setup, NULL);
    qv_broker_service_stats_t bst;
    s_res.workers = qv_broker_stats(broker, &bst, 1) >= 1 ? bst.workers : -1;
    s_run_all();
    s_report();
    int bad = atomic_load(&s_bad);
    printf("\nChecked replies: %d wrong or failed%s%s%s.\n", bad, bad ? " (first: " : "",
           bad ? s_last_bad : "", bad ? ")" : "");
    bench_reap(3000);
    qv_broker_destroy(&broker);
    return bad ? 1 : 0;
}
