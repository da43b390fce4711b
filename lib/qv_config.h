/* qv_config: the one configuration loader. Each daemon declares its keys in a const table of
 * qv_cfg_key_t (name, type, offsetof field, default as a string, bounds, env alias, flags);
 * this module fills the daemon's config struct from, later wins:
 *   built-in default < --config FILE (lines "key = value", '#' comments) <
 *   environment (QUAVER_<KEY upper-cased>, or the seeds' alias such as DATABASE_URL) <
 *   --set key=value (repeatable).
 * --print-config prints the effective table with each value's source.
 * A bad value (unparsable, out of bounds, unknown key in a file or --set) is reported as
 *   "<daemon>: config key 'k': value 'v' is invalid: <why> (allowed: <range>)"
 * and the load fails, so main() exits non-zero before doing anything.
 * Ownership: string fields are heap strings owned by the config struct; free them all with
 * qv_config_free(). */
#ifndef QV_CONFIG_H
#define QV_CONFIG_H
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef enum { QV_CFG_STR, QV_CFG_INT, QV_CFG_BOOL, QV_CFG_DOUBLE } qv_cfg_type_t;

enum {
    QV_CFG_SECRET  = 1 << 0,   /* --print-config shows "***" */
    QV_CFG_RUNTIME = 1 << 1,   /* may change at run time (informative for now) */
    QV_CFG_NONEMPTY = 1 << 2,  /* a string that must not be empty */
};

/* Field types by qv_cfg_type_t: STR -> char *, INT -> int64_t, BOOL -> bool, DOUBLE -> double. */
typedef struct {
    const char   *name;       /* lower_snake, e.g. "db_pool_max"; NULL ends the table */
    qv_cfg_type_t type;
    size_t        offset;     /* offsetof(daemon_cfg_t, field) */
    const char   *def;        /* default as text */
    double        min, max;   /* INT/DOUBLE bounds; STR: max length when max > 0 */
    const char   *env_alias;  /* the seeds' name, e.g. "DB_POOL_MAX", or NULL */
    int           flags;
    const char   *help;
} qv_cfg_key_t;

/* Keys every daemon has. Put QV_COMMON_CFG_FIELDS first in the daemon's config struct and
 * QV_COMMON_CFG_KEYS(type) first in its key table. */
#define QV_COMMON_CFG_FIELDS \
    char    *instance;        /* name of this replica; default hostname-pid */ \
    char    *broker;          /* comma-separated MDP broker endpoints */ \
    char    *bus_pub;         /* the monitor's XSUB endpoint, where we publish */ \
    char    *log_format;      /* text | json */ \
    char    *log_level;       /* debug | info | warn | error */ \
    int64_t  heartbeat_ms; \
    int64_t  heartbeat_liveness; \
    int64_t  workers;         /* MDP worker threads in this process */

#define QV_COMMON_CFG_KEYS(T) \
    { "instance", QV_CFG_STR, offsetof(T, instance), "", 0, 128, NULL, 0, \
      "replica name; empty means <hostname>-<pid>" }, \
    { "broker", QV_CFG_STR, offsetof(T, broker), "tcp://127.0.0.1:5555", 0, 4096, NULL, QV_CFG_NONEMPTY, \
      "MDP broker endpoints, comma-separated; a DNS name is resolved to all its addresses" }, \
    { "bus_pub", QV_CFG_STR, offsetof(T, bus_pub), "tcp://127.0.0.1:5556", 0, 1024, NULL, 0, \
      "the monitor's XSUB endpoint (empty: publish nothing)" }, \
    { "log_format", QV_CFG_STR, offsetof(T, log_format), "text", 0, 0, NULL, 0, "text | json" }, \
    { "log_level", QV_CFG_STR, offsetof(T, log_level), "info", 0, 0, NULL, 0, \
      "debug | info | warn | error" }, \
    { "heartbeat_ms", QV_CFG_INT, offsetof(T, heartbeat_ms), "1000", 50, 60000, NULL, 0, \
      "MDP heartbeat interval" }, \
    { "heartbeat_liveness", QV_CFG_INT, offsetof(T, heartbeat_liveness), "3", 1, 100, NULL, 0, \
      "missed heartbeats before a peer is declared dead" }, \
    { "workers", QV_CFG_INT, offsetof(T, workers), "4", 1, 256, NULL, 0, \
      "MDP worker threads (concurrent requests) in this process" }

typedef struct { QV_COMMON_CFG_FIELDS } qv_common_cfg_t;

/* Loads cfg from the sources above. argv may hold --config FILE, --set k=v, --print-config,
 * --help; other arguments are left in place and counted in *rest_argc if rest_argc != NULL
 * (they are moved to argv[1..]). Returns 0 on success, 1 when --print-config/--help was
 * handled (caller exits 0), -1 on a bad value (message already on stderr). */
int qv_config_load(const qv_cfg_key_t *table, void *cfg, const char *daemon,
                   int argc, char **argv, int *rest_argc) __attribute__((warn_unused_result));

/* Same as qv_config_load but for a prepared set of sources; used by selftests.
 * file may be NULL; sets is a NULL-terminated array of "k=v" or NULL; getenv_fn NULL = getenv. */
int qv_config_load_from(const qv_cfg_key_t *table, void *cfg, const char *daemon,
                        const char *file, const char *const *sets,
                        const char *(*getenv_fn)(const char *), char *errbuf, size_t errlen);

/* Prints the effective table, one "key = value  (source)" line per key. */
void qv_config_print(const qv_cfg_key_t *table, const void *cfg, void *out /* FILE* */);

/* Frees every string field and zeroes them. */
void qv_config_free(const qv_cfg_key_t *table, void *cfg);

/* The env name for a key: "QUAVER_" + upper(name). buf must hold 8+strlen(name)+1. */
void qv_config_env_name(const char *key, char *buf, size_t len);

int qv_config_selftest(void);
#endif
