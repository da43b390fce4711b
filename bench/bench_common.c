/* bench_common: see bench_common.h for what it guarantees and who owns what. */
#include "bench_common.h"
#include "qv_clock.h"
#include "qv_rpc.h"
#include "quaver/v1/envelope.pb-c.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- statistics ---- */

int bench_cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

double bench_median(const double *in, int n)
{
    double v[BENCH_MAX_RUNS];
    memcpy(v, in, (size_t) n * sizeof *v);
    for (int i = 1; i < n; i++)        /* insertion sort: n is the number of runs */
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j]; v[j] = v[j - 1]; v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double bench_min(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        m = v[i] < m ? v[i] : m;
    return m;
}

double bench_max(const double *v, int n)
{
    double m = v[0];
    for (int i = 1; i < n; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

void bench_p50_p99(int64_t *lat, int n, double *p50, double *p99)
{
    qsort(lat, (size_t) n, sizeof *lat, bench_cmp64);
    *p50 = (double) lat[n / 2];
    *p99 = (double) lat[(int) ((double) n * 0.99)];
}

/* ---- the machine ---- */

double bench_loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

void bench_cpu_model(char *out, size_t len)
{
    char line[512];
    snprintf(out, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                snprintf(out, len, "%s", colon + 2);
                out[strcspn(out, "\n")] = '\0';
            }
            break;
        }
    if (f)
        fclose(f);
}

void bench_utc_date(char *out, size_t len)
{
    time_t now = time(NULL);
    strftime(out, len, "%Y-%m-%d %H:%M UTC", gmtime(&now));
}

/* ---- child processes ---- */

static pid_t s_child[BENCH_MAX_CHILDREN];
static volatile sig_atomic_t s_nchild;

pid_t bench_spawn(const char *path, char *const argv[], const char *log, int *out_fd)
{
    int fds[2] = { -1, -1 };
    if (out_fd && pipe(fds) != 0)
        return -1;
    int logfd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
    if (log && logfd < 0) {
        if (out_fd) {
            close(fds[0]);
            close(fds[1]);
        }
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)        /* the parent died before prctl */
            _exit(1);
        if (logfd >= 0) {
            dup2(logfd, STDOUT_FILENO);
            dup2(logfd, STDERR_FILENO);
        }
        if (out_fd) {
            dup2(fds[1], STDOUT_FILENO);
            close(fds[0]);
            close(fds[1]);
        }
        execv(path, argv);
        _exit(127);
    }
    if (logfd >= 0)
        close(logfd);
    if (out_fd) {
        close(fds[1]);
        if (pid < 0)
            close(fds[0]);
        else
            *out_fd = fds[0];
    }
    if (pid > 0 && s_nchild < BENCH_MAX_CHILDREN)
        s_child[s_nchild++] = pid;
    return pid;
}

void bench_forget(pid_t pid)
{
    for (int i = 0; i < s_nchild; i++)
        if (s_child[i] == pid) {
            s_child[i] = s_child[s_nchild - 1];
            s_nchild--;
            return;
        }
}

void bench_reap(int grace_ms)
{
    for (int i = 0; i < s_nchild; i++)
        kill(s_child[i], SIGTERM);
    for (int i = 0; i < s_nchild; i++) {
        int64_t end = qv_mono_ms() + grace_ms;
        while (waitpid(s_child[i], NULL, WNOHANG) == 0) {
            if (qv_mono_ms() >= end) {
                kill(s_child[i], SIGKILL);
                waitpid(s_child[i], NULL, 0);
                break;
            }
            usleep(5000);
        }
    }
    s_nchild = 0;
}

void bench_kill_children(void)
{
    for (int i = 0; i < s_nchild; i++)
        kill(s_child[i], SIGKILL);
    for (int i = 0; i < s_nchild; i++)
        waitpid(s_child[i], NULL, 0);
}

void bench_first_line(const char *cmd, char *out, size_t len)
{
    snprintf(out, len, "unknown");
    FILE *p = popen(cmd, "r");
    if (!p)
        return;
    if (fgets(out, (int) len, p))
        out[strcspn(out, "\n")] = '\0';
    pclose(p);
}

double bench_cpu_us(pid_t pid, pid_t *ppid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');    /* the command name may hold spaces */
    int pp = 0;
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &pp, &ut,
                     &st) != 3)
        return -1;
    if (ppid)
        *ppid = pp;
    return (double) (ut + st) * 1e6 / (double) sysconf(_SC_CLK_TCK);
}

int bench_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *) &a, sizeof a) == 0
        && getsockname(fd, (struct sockaddr *) &a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

int bench_parse_opts(int argc, char **argv, const bench_opt_t *opts)
{
    for (int i = 1; i < argc; i += 2) {
        const bench_opt_t *o = opts;
        while (o->flag && strcmp(o->flag, argv[i]) != 0)
            o++;
        if (!o->flag || i + 1 >= argc)
            return -1;
        const char *v = argv[i + 1];
        if (o->kind == BENCH_OPT_INT) {
            *(int *) o->dst = atoi(v);
        } else if (o->kind == BENCH_OPT_STR) {
            *(const char **) o->dst = v;
        } else {
            int n = 0;
            for (const char *p = v; *p && n < o->max;) {
                ((int *) o->dst)[n++] = atoi(p);
                p = strchr(p, ',');
                if (!p)
                    break;
                p++;
            }
            *o->count = n;
        }
    }
    return 0;
}

pid_t bench_spawn_daemon(const char *path, const char *const *sets, const char *log)
{
    char *argv[2 * 16 + 2];
    int n = 0;
    const char *base = strrchr(path, '/');
    argv[n++] = (char *) (base ? base + 1 : path);
    for (int i = 0; sets && sets[i]; i++) {
        if (i == 16)
            return -1;
        argv[n++] = (char *) "--set";
        argv[n++] = (char *) sets[i];
    }
    argv[n] = NULL;
    return bench_spawn(path, argv, log, NULL);
}

/* ---- the run ---- */

static const char *s_name = "bench";
static int s_grace_ms = 2000;
static void (*s_stop)(void);
static char s_scratch[PATH_MAX];
static int s_keep;

static void s_rmtree(const char *dir)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/rm", "rm", "-rf", dir, (char *) NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

static void s_at_exit(void)
{
    bench_reap(s_grace_ms);
    if (s_stop)
        s_stop();
    if (!s_scratch[0])
        return;
    if (s_keep)
        fprintf(stderr, "%s: logs kept in %s\n", s_name, s_scratch);
    else
        s_rmtree(s_scratch);
}

static void s_on_signal(int sig)
{
    bench_kill_children();
    if (s_stop)
        s_stop();
    _exit(128 + sig);
}

void bench_run_init(const char *name, int grace_ms, void (*stop)(void))
{
    s_name = name;
    s_grace_ms = grace_ms;
    s_stop = stop;
    zsys_handler_set(NULL);
    zsys_init();
    atexit(s_at_exit);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

const char *bench_scratch(void)
{
    if (!s_scratch[0]) {
        snprintf(s_scratch, sizeof s_scratch, "/tmp/%s.XXXXXX", s_name);
        if (!mkdtemp(s_scratch)) {
            s_scratch[0] = '\0';
            bench_die("cannot create a temporary folder");
        }
        chmod(s_scratch, 0755);
    }
    return s_scratch;
}

/* The last 40 lines of each *.log in the scratch folder, to stderr. */
static void s_print_logs(void)
{
    DIR *d = s_scratch[0] ? opendir(s_scratch) : NULL;
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".log") != 0)
            continue;
        char path[PATH_MAX + 256], ring[40][256];
        snprintf(path, sizeof path, "%s/%s", s_scratch, e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        int lines = 0;
        while (fgets(ring[lines % 40], sizeof ring[0], f))
            lines++;
        fclose(f);
        fprintf(stderr, "---- %s (last lines) ----\n", path);
        for (int i = lines > 40 ? lines - 40 : 0; i < lines; i++)
            fputs(ring[i % 40], stderr);
    }
    if (d)
        closedir(d);
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", s_name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    s_keep = 1;
    s_print_logs();
    exit(1);    /* atexit: s_at_exit */
}

void bench_sibling(const char *exe, char *out, size_t len)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        bench_die("cannot read /proc/self/exe");
    self[n] = '\0';
    snprintf(out, len, "%s/%s", dirname(self), exe);
}

bool bench_wait_health(const char *endpoint, const char *service, pid_t pid, int timeout_ms,
                       char *last, size_t len)
{
    snprintf(last, len, "no answer");
    for (int64_t end = qv_mono_ms() + timeout_ms; qv_mono_ms() < end; usleep(100 * 1000)) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            bench_forget(pid);
            snprintf(last, len, "%s exited", service);
            return false;
        }
        Quaver__V1__Empty req = QUAVER__V1__EMPTY__INIT;
        qv_result_t res;
        qv_rpc_call(endpoint, service, "Health", &req.base, NULL, "bench-health", 1000, &res);
        Quaver__V1__HealthReply *h = res.status == 200
            ? quaver__v1__health_reply__unpack(NULL, res.len, res.payload) : NULL;
        bool ok = h && strcmp(h->status, "ok") == 0;
        snprintf(last, len, "%d %s", res.status, h ? h->status : res.error ? res.error : "");
        if (h)
            quaver__v1__health_reply__free_unpacked(h, NULL);
        qv_result_free(&res);
        if (ok)
            return true;
    }
    return false;
}
