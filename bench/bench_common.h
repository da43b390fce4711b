/* bench_common: the helpers bench/rpc and bench/cache share, and nothing else.
 *
 * Guarantees:
 *   - Statistics: pure functions over caller-owned arrays; bench_median copies its input
 *     (n <= BENCH_MAX_RUNS) and leaves it untouched, bench_p50_p99 sorts its input in place.
 *   - Machine description: bench_loadavg, bench_cpu_model and bench_utc_date only read /proc
 *     and the clock; each benchmark prints its own table with them.
 *   - Child processes: one process-wide registry of at most BENCH_MAX_CHILDREN children.
 *     bench_spawn forks with PR_SET_PDEATHSIG (SIGKILL) set before exec, so children die with
 *     us; bench_reap stops them (SIGTERM, then SIGKILL after the grace period);
 *     bench_kill_children is async-signal-safe (kill + waitpid only) for signal handlers.
 *
 * Ownership: the registry belongs to this library; the caller owns the pids only to wait for
 * one itself, and then hands it back with bench_forget. File descriptors returned through
 * *out_fd belong to the caller, who closes them. Not thread-safe: spawn, forget and reap from
 * the main thread (bench_spawn itself is safe to call while other threads run).
 */
#ifndef BENCH_COMMON_H
#define BENCH_COMMON_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_MAX_RUNS     64
#define BENCH_MAX_CHILDREN 8

/* ---- statistics ---- */

/* qsort comparator for int64_t. */
int bench_cmp64(const void *a, const void *b);
/* Median of n values (1 <= n <= BENCH_MAX_RUNS); in is not modified. */
double bench_median(const double *in, int n);
double bench_min(const double *v, int n);
double bench_max(const double *v, int n);
/* Sorts lat[0..n) and sets *p50 = lat[n / 2], *p99 = lat[(int) (n * 0.99)]. */
void bench_p50_p99(int64_t *lat, int n, double *p50, double *p99);

/* ---- the machine ---- */

/* The 1-minute load average, or -1 when unknown: these machines are shared, and a busy one
 * shows in the figures. */
double bench_loadavg(void);
/* The first "model name" of /proc/cpuinfo into out, or "unknown". */
void bench_cpu_model(char *out, size_t len);
/* Now as "YYYY-MM-DD HH:MM UTC". */
void bench_utc_date(char *out, size_t len);

/* The first line a command prints (popen), or "unknown": versions for the report. Call it
 * before starting threads. */
void bench_first_line(const char *cmd, char *out, size_t len);
/* CPU time (user + system, µs) pid has used so far, from /proc/<pid>/stat, and its parent's
 * pid in *ppid (may be NULL); -1 when the process is gone. */
double bench_cpu_us(pid_t pid, pid_t *ppid);
/* A loopback TCP port nobody listens on right now (the kernel's pick for port 0), or -1. */
int bench_free_port(void);

/* ---- command-line options ---- */

/* One "--flag value" option: INT (atoi into an int), STR (the argument itself, borrowed from
 * argv, into a const char *), INTS (a comma-separated list of atoi values into an int array of
 * `max`, their number into *count). */
typedef enum { BENCH_OPT_INT, BENCH_OPT_STR, BENCH_OPT_INTS } bench_opt_kind_t;
typedef struct {
    const char      *flag;
    bench_opt_kind_t kind;
    void            *dst;
    int             *count;   /* INTS only */
    int              max;     /* INTS only */
} bench_opt_t;

/* Parses argv[1..] as "--flag value" pairs of the table (ends with a NULL flag). 0, or -1 on an
 * unknown flag or a flag without a value (the caller prints its usage). Bounds are the
 * caller's to check afterwards. */
int bench_parse_opts(int argc, char **argv, const bench_opt_t *opts);

/* ---- a run: its name, its end, its scratch folder ---- */

/* Sets the run up: messages start with `name`; CZMQ's signal handler is replaced (a signal
 * must take the children down with us); at exit() the children are reaped (grace_ms each),
 * then stop() runs (may be NULL), then the scratch folder, if any, is removed, unless
 * bench_die ran: then it is kept and named. On SIGINT/SIGTERM/SIGHUP: children killed,
 * stop() run, _exit(128 + sig); stop must then be async-signal-safe. Call once, first. */
void bench_run_init(const char *name, int grace_ms, void (*stop)(void));
/* Makes the run's scratch folder /tmp/<name>.XXXXXX, mode 0755 (a child running as another
 * user must reach it). Returns its path; exits via bench_die when it cannot. */
const char *bench_scratch(void);
/* "<name>: <message>", the tail of every *.log in the scratch folder, the folder kept, exit 1. */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* The path of an executable beside this one (bin/<exe> of the same build) into out. */
void bench_sibling(const char *exe, char *out, size_t len);

/* Calls <service>.Health through the broker at endpoint until it answers status "ok" (true),
 * the child pid exited, or timeout_ms passed (false); last gets what was seen last. Call
 * from a thread that may keep an MDP client (qv_rpc_call keeps one per thread). */
bool bench_wait_health(const char *endpoint, const char *service, pid_t pid, int timeout_ms,
                       char *last, size_t len);

/* ---- child processes ---- */

/* fork + execv(path, argv), the child registered for bench_reap and bench_kill_children.
 * The child's stdout and stderr go to the file log (appended) when log is set; its stdout goes
 * into a pipe whose read end is returned in *out_fd when out_fd is set. Only
 * async-signal-safe calls between fork and exec. Returns the pid, or -1. */
pid_t bench_spawn(const char *path, char *const argv[], const char *log, int *out_fd);
/* A Quaver daemon: path with "--set <entry>" for each of sets (NULL-terminated, at most 16
 * "key=value" entries), output appended to log; as bench_spawn. Returns the pid, or -1. */
pid_t bench_spawn_daemon(const char *path, const char *const *sets, const char *log);
/* Removes a child the caller has waited for from the registry. */
void bench_forget(pid_t pid);
/* SIGTERM to every child, waits up to grace_ms for each, then SIGKILL; empties the registry. */
void bench_reap(int grace_ms);
/* SIGKILL to every child and waits for them. Async-signal-safe: for signal handlers. */
void bench_kill_children(void);

#endif
