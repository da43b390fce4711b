/* qv_config: the one configuration loader (see qv_config.h).
 * Guarantees: every key of the table ends up holding a parsed, in-bounds value, or the load
 * fails with one message naming the key, the value and what is allowed, and no string is
 * leaked either way. Sources, later wins: default < --config FILE < environment < --set.
 * Environment: QUAVER_<KEY> wins over the seeds' alias (DATABASE_URL ...) when both are set,
 * because the QUAVER_ name is the one that is specific to this program; a variable that is
 * set but empty counts as set (so QUAVER_BUS_PUB= turns publishing off).
 * File syntax: "key = value" per line; blank lines and lines whose first non-blank character
 * is '#' are skipped; " #" (a '#' after a blank) starts a trailing comment, so a '#' inside a
 * URL's password survives; a value wrapped in double quotes keeps its blanks and '#'s.
 * Secrets (QV_CFG_SECRET) are never printed: --print-config and error messages show "***".
 * The source of each value is remembered per loaded struct for --print-config. */
#include "qv_config.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Where each value of a loaded struct came from, kept aside because the daemon's struct has
 * no room for it. One entry per loaded struct; qv_config_free drops it. */
typedef struct s_sources_t {
    const void          *cfg;
    const qv_cfg_key_t  *table;
    int                  nkeys;
    char               **source;   /* per key, heap */
    struct s_sources_t  *next;
} s_sources_t;

static s_sources_t *s_all_sources;
static pthread_mutex_t s_sources_lock = PTHREAD_MUTEX_INITIALIZER;

static void s_sources_drop(const void *cfg)
{
    pthread_mutex_lock(&s_sources_lock);
    s_sources_t **pp = &s_all_sources;
    while (*pp) {
        s_sources_t *s = *pp;
        if (s->cfg == cfg) {
            *pp = s->next;
            for (int i = 0; i < s->nkeys; i++)
                free(s->source[i]);
            free(s->source);
            free(s);
        } else
            pp = &s->next;
    }
    pthread_mutex_unlock(&s_sources_lock);
}

static void s_sources_keep(const void *cfg, const qv_cfg_key_t *table, int nkeys, char **source)
{
    s_sources_drop(cfg);
    s_sources_t *s = calloc(1, sizeof *s);
    if (!s) {
        for (int i = 0; i < nkeys; i++)
            free(source[i]);
        free(source);
        return;
    }
    s->cfg = cfg;
    s->table = table;
    s->nkeys = nkeys;
    s->source = source;
    pthread_mutex_lock(&s_sources_lock);
    s->next = s_all_sources;
    s_all_sources = s;
    pthread_mutex_unlock(&s_sources_lock);
}

/* ---- one load ------------------------------------------------------------------------- */

typedef struct {
    const qv_cfg_key_t *table;
    void               *cfg;
    const char         *daemon;
    int                 nkeys;
    char              **source;   /* per key */
    char               *errbuf;
    size_t              errlen;
    bool                failed;
} s_load_t;

static void s_error(s_load_t *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_error(s_load_t *ld, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ld->errbuf && ld->errlen)
        snprintf(ld->errbuf, ld->errlen, "%s: %s", ld->daemon, msg);
    else
        fprintf(stderr, "%s: %s\n", ld->daemon, msg);
    ld->failed = true;
}

static int s_find(const qv_cfg_key_t *table, const char *name, size_t len)
{
    for (int i = 0; table[i].name; i++)
        if (strlen(table[i].name) == len && strncmp(table[i].name, name, len) == 0)
            return i;
    return -1;
}

static bool s_int_bounded(const qv_cfg_key_t *k) { return !(k->min == 0 && k->max == 0); }

/* The "(allowed: ...)" text of a key. */
static void s_allowed(const qv_cfg_key_t *k, char *buf, size_t len)
{
    switch (k->type) {
    case QV_CFG_INT:
        if (s_int_bounded(k))
            snprintf(buf, len, "an integer from %.0f to %.0f", k->min, k->max);
        else
            snprintf(buf, len, "an integer");
        break;
    case QV_CFG_DOUBLE:
        if (s_int_bounded(k))
            snprintf(buf, len, "a number from %g to %g", k->min, k->max);
        else
            snprintf(buf, len, "a number");
        break;
    case QV_CFG_BOOL:
        snprintf(buf, len, "true|false|1|0|yes|no|on|off");
        break;
    case QV_CFG_STR:
        if (k->max > 0)
            snprintf(buf, len, "a%s string of at most %.0f characters",
                     (k->flags & QV_CFG_NONEMPTY) ? " non-empty" : "", k->max);
        else
            snprintf(buf, len, "a%s string", (k->flags & QV_CFG_NONEMPTY) ? " non-empty" : "");
        break;
    }
}

static void s_invalid(s_load_t *ld, const qv_cfg_key_t *k, const char *value, const char *why)
{
    char allowed[160];
    s_allowed(k, allowed, sizeof allowed);
    s_error(ld, "config key '%s': value '%.200s' is invalid: %s (allowed: %s)", k->name,
            (k->flags & QV_CFG_SECRET) ? "***" : value, why, allowed);
}

/* Parses value for key i and stores it; records where it came from. */
static int s_apply(s_load_t *ld, int i, const char *value, const char *source)
{
    const qv_cfg_key_t *k = &ld->table[i];
    char *field = (char *) ld->cfg + k->offset;
    char *end;

    switch (k->type) {
    case QV_CFG_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (*value == '\0' || *end != '\0' || isspace((unsigned char) *value)) {
            s_invalid(ld, k, value, "not an integer");
            return -1;
        }
        if (errno == ERANGE || (s_int_bounded(k) && ((double) v < k->min || (double) v > k->max))) {
            s_invalid(ld, k, value, "out of range");
            return -1;
        }
        *(int64_t *) field = (int64_t) v;
        break;
    }
    case QV_CFG_DOUBLE: {
        errno = 0;
        double v = strtod(value, &end);
        if (*value == '\0' || *end != '\0' || isspace((unsigned char) *value) || !isfinite(v)) {
            s_invalid(ld, k, value, "not a number");
            return -1;
        }
        if (errno == ERANGE || (s_int_bounded(k) && (v < k->min || v > k->max))) {
            s_invalid(ld, k, value, "out of range");
            return -1;
        }
        *(double *) field = v;
        break;
    }
    case QV_CFG_BOOL: {
        static const char *const yes[] = { "true", "1", "yes", "on" };
        static const char *const no[] = { "false", "0", "no", "off" };
        int v = -1;
        for (int j = 0; j < 4; j++) {
            if (strcasecmp(value, yes[j]) == 0)
                v = 1;
            if (strcasecmp(value, no[j]) == 0)
                v = 0;
        }
        if (v < 0) {
            s_invalid(ld, k, value, "not a boolean");
            return -1;
        }
        *(bool *) field = v;
        break;
    }
    case QV_CFG_STR: {
        size_t len = strlen(value);
        if ((k->flags & QV_CFG_NONEMPTY) && len == 0) {
            s_invalid(ld, k, value, "empty");
            return -1;
        }
        if (k->max > 0 && (double) len > k->max) {
            s_invalid(ld, k, value, "too long");
            return -1;
        }
        char *copy = strdup(value);
        if (!copy) {
            s_error(ld, "config key '%s': out of memory", k->name);
            return -1;
        }
        /* Every string field was set by the defaults pass of this load, so it is ours. */
        free(*(char **) field);
        *(char **) field = copy;
        break;
    }
    }
    char *src = strdup(source);
    if (src) {
        free(ld->source[i]);
        ld->source[i] = src;
    }
    return 0;
}

static char *s_trim(char *s)
{
    while (isspace((unsigned char) *s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char) e[-1]))
        *--e = '\0';
    return s;
}

static int s_load_file(s_load_t *ld, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        s_error(ld, "cannot read config file '%s': %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        lineno++;
        char *s = s_trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            s_error(ld, "%s:%d: expected 'key = value'", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = s_trim(s);
        char *value = s_trim(eq + 1);
        if (*value == '"') {
            char *close = strchr(value + 1, '"');
            if (!close) {
                s_error(ld, "%s:%d: unterminated quoted value", path, lineno);
                rc = -1;
                break;
            }
            *close = '\0';
            value++;
        } else {
            for (char *h = value; *h; h++)
                if (*h == '#' && h > value && isspace((unsigned char) h[-1])) {
                    *h = '\0';
                    value = s_trim(value);
                    break;
                }
        }
        int i = s_find(ld->table, key, strlen(key));
        if (i < 0) {
            s_error(ld, "%s:%d: unknown config key '%s'", path, lineno, key);
            rc = -1;
            break;
        }
        char src[512];
        snprintf(src, sizeof src, "file %s:%d", path, lineno);
        rc = s_apply(ld, i, value, src);
    }
    free(line);
    fclose(f);
    return rc;
}

static int s_load(const qv_cfg_key_t *table, void *cfg, const char *daemon,
                  const char *const *files, int nfiles, const char *const *sets,
                  const char *(*getenv_fn)(const char *), char *errbuf, size_t errlen)
{
    s_load_t ld = { .table = table, .cfg = cfg, .daemon = daemon ? daemon : "quaver",
                    .errbuf = errbuf, .errlen = errlen };
    while (table[ld.nkeys].name)
        ld.nkeys++;
    ld.source = calloc((size_t) ld.nkeys + 1, sizeof(char *));
    if (!ld.source) {
        s_error(&ld, "out of memory");
        return -1;
    }
    /* Loading a struct we loaded before: its strings are ours to free. Otherwise the struct's
     * string fields hold nothing of ours (the caller zeroes it) and are overwritten. */
    pthread_mutex_lock(&s_sources_lock);
    bool reload = false;
    for (s_sources_t *s = s_all_sources; s; s = s->next)
        reload = reload || s->cfg == cfg;
    pthread_mutex_unlock(&s_sources_lock);
    if (reload)
        qv_config_free(table, cfg);
    /* Defaults first, for every key: this also makes every string field ours. */
    for (int i = 0; i < ld.nkeys; i++)
        if (table[i].type == QV_CFG_STR)
            *(char **) ((char *) cfg + table[i].offset) = NULL;
    for (int i = 0; i < ld.nkeys && !ld.failed; i++)
        s_apply(&ld, i, table[i].def ? table[i].def : "", "default");

    for (int f = 0; f < nfiles && !ld.failed; f++)
        s_load_file(&ld, files[f]);

    for (int i = 0; i < ld.nkeys && !ld.failed; i++) {
        char name[256];
        qv_config_env_name(table[i].name, name, sizeof name);
        const char *v = getenv_fn(name);
        const char *used = name;
        if (!v && table[i].env_alias) {
            v = getenv_fn(table[i].env_alias);
            used = table[i].env_alias;
        }
        if (v) {
            char src[300];
            snprintf(src, sizeof src, "env %s", used);
            s_apply(&ld, i, v, src);
        }
    }

    for (int s = 0; sets && sets[s] && !ld.failed; s++) {
        const char *eq = strchr(sets[s], '=');
        if (!eq) {
            s_error(&ld, "--set '%s': expected key=value", sets[s]);
            break;
        }
        int i = s_find(table, sets[s], (size_t) (eq - sets[s]));
        if (i < 0) {
            s_error(&ld, "--set: unknown config key '%.*s'", (int) (eq - sets[s]), sets[s]);
            break;
        }
        s_apply(&ld, i, eq + 1, "--set");
    }

    if (ld.failed) {
        for (int i = 0; i < ld.nkeys; i++)
            free(ld.source[i]);
        free(ld.source);
        qv_config_free(table, cfg);
        return -1;
    }
    s_sources_keep(cfg, table, ld.nkeys, ld.source);
    return 0;
}

static const char *s_real_getenv(const char *name) { return getenv(name); }

int qv_config_load_from(const qv_cfg_key_t *table, void *cfg, const char *daemon,
                        const char *file, const char *const *sets,
                        const char *(*getenv_fn)(const char *), char *errbuf, size_t errlen)
{
    const char *files[1] = { file };
    return s_load(table, cfg, daemon, files, file ? 1 : 0, sets,
                  getenv_fn ? getenv_fn : s_real_getenv, errbuf, errlen);
}

static const char *s_type_name(qv_cfg_type_t t)
{
    switch (t) {
    case QV_CFG_INT: return "int";
    case QV_CFG_DOUBLE: return "number";
    case QV_CFG_BOOL: return "bool";
    case QV_CFG_STR: return "string";
    }
    return "?";
}

static void s_help(const qv_cfg_key_t *table, const char *daemon, FILE *out)
{
    fprintf(out,
            "usage: %s [--config FILE] [--set key=value]... [--print-config] [--help]\n"
            "Sources, later wins: default < --config FILE < environment < --set.\n\n"
            "keys:\n", daemon);
    for (int i = 0; table[i].name; i++) {
        const qv_cfg_key_t *k = &table[i];
        char env[256], allowed[160];
        qv_config_env_name(k->name, env, sizeof env);
        s_allowed(k, allowed, sizeof allowed);
        fprintf(out, "  %s (%s, default '%s'; env %s%s%s)\n      %s; allowed: %s%s\n",
                k->name, s_type_name(k->type),
                (k->flags & QV_CFG_SECRET) && k->def && *k->def ? "***" : (k->def ? k->def : ""),
                env, k->env_alias ? " or " : "", k->env_alias ? k->env_alias : "",
                k->help ? k->help : "", allowed,
                (k->flags & QV_CFG_RUNTIME) ? " (may change at run time)" : "");
    }
}

int qv_config_load(const qv_cfg_key_t *table, void *cfg, const char *daemon,
                   int argc, char **argv, int *rest_argc)
{
    const char **files = calloc((size_t) argc + 1, sizeof(char *));
    const char **sets = calloc((size_t) argc + 1, sizeof(char *));
    char **rest = calloc((size_t) argc + 1, sizeof(char *));
    int nfiles = 0, nsets = 0, nrest = 0, rc = 0;
    bool print = false, help = false, options_done = false;
    if (!files || !sets || !rest) {
        fprintf(stderr, "%s: out of memory\n", daemon);
        rc = -1;
        goto done;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (options_done) {
            rest[nrest++] = argv[a];
        } else if (strcmp(arg, "--") == 0) {
            options_done = true;
        } else if (strcmp(arg, "--config") == 0 || strcmp(arg, "--set") == 0) {
            if (a + 1 >= argc) {
                fprintf(stderr, "%s: %s needs an argument\n", daemon, arg);
                rc = -1;
                goto done;
            }
            if (arg[2] == 'c')
                files[nfiles++] = argv[++a];
            else
                sets[nsets++] = argv[++a];
        } else if (strncmp(arg, "--config=", 9) == 0) {
            files[nfiles++] = arg + 9;
        } else if (strncmp(arg, "--set=", 6) == 0) {
            sets[nsets++] = arg + 6;
        } else if (strcmp(arg, "--print-config") == 0) {
            print = true;
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            help = true;
        } else
            rest[nrest++] = argv[a];
    }
    if (help) {
        s_help(table, daemon, stdout);
        rc = 1;
        goto done;
    }
    if (s_load(table, cfg, daemon, files, nfiles, sets, s_real_getenv, NULL, 0) != 0) {
        rc = -1;
        goto done;
    }
    if (print) {
        qv_config_print(table, cfg, stdout);
        rc = 1;
    }
    for (int r = 0; r < nrest; r++)
        argv[1 + r] = rest[r];
    if (nrest + 1 < argc)
        argv[1 + nrest] = NULL;
    if (rest_argc)
        *rest_argc = nrest;
done:
    free(files);
    free(sets);
    free(rest);
    return rc;
}

/* Prints doubles as the shortest text that reads back to the same value. */
static void s_fmt_double(double v, char *buf, size_t len)
{
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

void qv_config_print(const qv_cfg_key_t *table, const void *cfg, void *out)
{
    FILE *f = out ? (FILE *) out : stdout;
    pthread_mutex_lock(&s_sources_lock);
    const s_sources_t *src = NULL;
    for (const s_sources_t *s = s_all_sources; s; s = s->next)
        if (s->cfg == cfg && s->table == table)
            src = s;
    for (int i = 0; table[i].name; i++) {
        const qv_cfg_key_t *k = &table[i];
        const char *field = (const char *) cfg + k->offset;
        char val[64];
        const char *v = val;
        switch (k->type) {
        case QV_CFG_INT:
            snprintf(val, sizeof val, "%lld", (long long) *(const int64_t *) field);
            break;
        case QV_CFG_DOUBLE:
            s_fmt_double(*(const double *) field, val, sizeof val);
            break;
        case QV_CFG_BOOL:
            v = *(const bool *) field ? "true" : "false";
            break;
        case QV_CFG_STR:
            v = *(char *const *) field;
            /* Quoted when empty or blank-edged, so the line reads back as a config file. */
            if (!v || !*v)
                v = "\"\"";
            break;
        }
        if (k->flags & QV_CFG_SECRET)
            v = "***";
        fprintf(f, "%s = %s  (%s)\n", k->name, v,
                src && i < src->nkeys && src->source[i] ? src->source[i] : "unknown");
    }
    pthread_mutex_unlock(&s_sources_lock);
    fflush(f);
}

void qv_config_free(const qv_cfg_key_t *table, void *cfg)
{
    for (int i = 0; table[i].name; i++)
        if (table[i].type == QV_CFG_STR) {
            char **p = (char **) ((char *) cfg + table[i].offset);
            free(*p);
            *p = NULL;
        }
    s_sources_drop(cfg);
}

void qv_config_env_name(const char *key, char *buf, size_t len)
{
    if (!len)
        return;
    size_t n = (size_t) snprintf(buf, len, "QUAVER_%s", key);
    if (n >= len)
        n = len - 1;
    for (size_t i = 7; i < n; i++)
        buf[i] = (char) toupper((unsigned char) buf[i]);
}

/* ---- selftest ------------------------------------------------------------------------- */

typedef struct {
    QV_COMMON_CFG_FIELDS
    int64_t db_pool_max;
    double  ratio;
    bool    cache_enabled;
    char   *database_url;
} s_test_cfg_t;

static const qv_cfg_key_t s_test_keys[] = {
    QV_COMMON_CFG_KEYS(s_test_cfg_t),
    { "db_pool_max", QV_CFG_INT, offsetof(s_test_cfg_t, db_pool_max), "10", 1, 100,
      "DB_POOL_MAX", 0, "pool size" },
    { "ratio", QV_CFG_DOUBLE, offsetof(s_test_cfg_t, ratio), "0.5", 0, 1, NULL, 0, "a ratio" },
    { "cache_enabled", QV_CFG_BOOL, offsetof(s_test_cfg_t, cache_enabled), "true", 0, 0,
      "CACHE_ENABLED", 0, "cache on" },
    { "database_url", QV_CFG_STR, offsetof(s_test_cfg_t, database_url), "postgres://x", 0, 64,
      "DATABASE_URL", QV_CFG_SECRET | QV_CFG_NONEMPTY, "PostgreSQL URL" },
    { NULL }
};

/* A fake environment for the selftest: pairs of name, value. */
static const char *const *s_test_env;
static const char *s_test_getenv(const char *name)
{
    for (int i = 0; s_test_env && s_test_env[i]; i += 2)
        if (strcmp(s_test_env[i], name) == 0)
            return s_test_env[i + 1];
    return NULL;
}

#define S_CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "config selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    goto fail; } } while (0)

/* Loads with the given sources; returns the rc, the error text in err. */
static int s_try(s_test_cfg_t *c, const char *file, const char *const *sets,
                 const char *const *env, char *err, size_t errlen)
{
    s_test_env = env;
    err[0] = '\0';
    memset(c, 0, sizeof *c);
    return qv_config_load_from(s_test_keys, c, "testd", file, sets, s_test_getenv, err, errlen);
}

static bool s_printed_has(s_test_cfg_t *c, const char *needle)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return false;
    qv_config_print(s_test_keys, c, f);
    fclose(f);
    bool found = buf && strstr(buf, needle) != NULL;
    if (!found)
        fprintf(stderr, "config selftest: '%s' not in:\n%s", needle, buf ? buf : "");
    free(buf);
    return found;
}

int qv_config_selftest(void)
{
    s_test_cfg_t c;
    char err[1024];
    char path[] = "/tmp/qv-config-test-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "w");
    fputs("# a comment\n\n  db_pool_max = 20\nratio=0.25 # trailing comment\n"
          "database_url = postgres://u:p#w@h/db\ninstance = \" spaced # \"\nworkers = 8\n", f);
    fclose(f);

    /* defaults */
    S_CHECK(s_try(&c, NULL, NULL, NULL, err, sizeof err) == 0);
    S_CHECK(c.db_pool_max == 10 && c.ratio == 0.5 && c.cache_enabled);
    S_CHECK(strcmp(c.broker, "tcp://127.0.0.1:5555") == 0 && strcmp(c.instance, "") == 0);
    S_CHECK(c.workers == 4 && c.heartbeat_ms == 1000);
    S_CHECK(s_printed_has(&c, "db_pool_max = 10  (default)\n"));
    S_CHECK(s_printed_has(&c, "database_url = ***  (default)\n"));
    S_CHECK(s_printed_has(&c, "instance = \"\"  (default)\n"));
    qv_config_free(s_test_keys, &c);
    S_CHECK(c.broker == NULL && c.database_url == NULL);

    /* file over defaults */
    S_CHECK(s_try(&c, path, NULL, NULL, err, sizeof err) == 0);
    S_CHECK(c.db_pool_max == 20 && c.ratio == 0.25 && c.workers == 8);
    S_CHECK(strcmp(c.database_url, "postgres://u:p#w@h/db") == 0);
    S_CHECK(strcmp(c.instance, " spaced # ") == 0);
    char want[600];
    snprintf(want, sizeof want, "db_pool_max = 20  (file %s:3)\n", path);
    S_CHECK(s_printed_has(&c, want));
    qv_config_free(s_test_keys, &c);

    /* env over file; QUAVER_ name over the alias; alias alone works */
    const char *env1[] = { "DB_POOL_MAX", "30", "QUAVER_DB_POOL_MAX", "40",
                           "DATABASE_URL", "postgres://env", "QUAVER_CACHE_ENABLED", "off",
                           "QUAVER_BUS_PUB", "", NULL };
    S_CHECK(s_try(&c, path, NULL, env1, err, sizeof err) == 0);
    S_CHECK(c.db_pool_max == 40 && !c.cache_enabled && c.ratio == 0.25);
    S_CHECK(strcmp(c.database_url, "postgres://env") == 0 && strcmp(c.bus_pub, "") == 0);
    S_CHECK(s_printed_has(&c, "db_pool_max = 40  (env QUAVER_DB_POOL_MAX)\n"));
    S_CHECK(s_printed_has(&c, "database_url = ***  (env DATABASE_URL)\n"));
    S_CHECK(s_printed_has(&c, "cache_enabled = false  (env QUAVER_CACHE_ENABLED)\n"));
    qv_config_free(s_test_keys, &c);

    /* --set over env, repeatable, last wins */
    const char *sets1[] = { "db_pool_max=50", "ratio=1", "db_pool_max=60", "cache_enabled=YES",
                            NULL };
    S_CHECK(s_try(&c, path, sets1, env1, err, sizeof err) == 0);
    S_CHECK(c.db_pool_max == 60 && c.ratio == 1.0 && c.cache_enabled);
    S_CHECK(s_printed_has(&c, "db_pool_max = 60  (--set)\n"));
    S_CHECK(s_printed_has(&c, "ratio = 1  (--set)\n"));
    qv_config_free(s_test_keys, &c);

    /* bad values: exact message, load fails, nothing leaks */
    const char *bad1[] = { "db_pool_max=101", NULL };
    S_CHECK(s_try(&c, NULL, bad1, NULL, err, sizeof err) == -1);
    S_CHECK(strcmp(err, "testd: config key 'db_pool_max': value '101' is invalid: out of range "
                        "(allowed: an integer from 1 to 100)") == 0);
    S_CHECK(c.broker == NULL);
    const char *bad2[] = { "workers=4x", NULL };
    S_CHECK(s_try(&c, NULL, bad2, NULL, err, sizeof err) == -1);
    S_CHECK(strcmp(err, "testd: config key 'workers': value '4x' is invalid: not an integer "
                        "(allowed: an integer from 1 to 256)") == 0);
    const char *bad3[] = { "ratio=abc", NULL };
    S_CHECK(s_try(&c, NULL, bad3, NULL, err, sizeof err) == -1);
    S_CHECK(strstr(err, "value 'abc' is invalid: not a number (allowed: a number from 0 to 1)"));
    const char *bad4[] = { "nope=1", NULL };
    S_CHECK(s_try(&c, NULL, bad4, NULL, err, sizeof err) == -1);
    S_CHECK(strcmp(err, "testd: --set: unknown config key 'nope'") == 0);
    const char *env2[] = { "CACHE_ENABLED", "maybe", NULL };
    S_CHECK(s_try(&c, NULL, NULL, env2, err, sizeof err) == -1);
    S_CHECK(strcmp(err, "testd: config key 'cache_enabled': value 'maybe' is invalid: not a "
                        "boolean (allowed: true|false|1|0|yes|no|on|off)") == 0);
    const char *bad5[] = { "database_url=", NULL };
    S_CHECK(s_try(&c, NULL, bad5, NULL, err, sizeof err) == -1);
    S_CHECK(strstr(err, "'database_url': value '***' is invalid: empty"));
    const char *bad6[] = { "instance=", NULL };
    S_CHECK(s_try(&c, NULL, bad6, NULL, err, sizeof err) == 0);
    qv_config_free(s_test_keys, &c);
    const char *bad7[] = { "workers=99999999999999999999", NULL };
    S_CHECK(s_try(&c, NULL, bad7, NULL, err, sizeof err) == -1 && strstr(err, "out of range"));
    const char *bad8[] = { "noequals", NULL };
    S_CHECK(s_try(&c, NULL, bad8, NULL, err, sizeof err) == -1 && strstr(err, "key=value"));

    /* unknown key in a file names file:line */
    f = fopen(path, "w");
    fputs("workers = 2\n# x\nwrokers = 3\n", f);
    fclose(f);
    S_CHECK(s_try(&c, path, NULL, NULL, err, sizeof err) == -1);
    snprintf(want, sizeof want, "testd: %s:3: unknown config key 'wrokers'", path);
    S_CHECK(strcmp(err, want) == 0);
    S_CHECK(s_try(&c, "/nonexistent/qv.conf", NULL, NULL, err, sizeof err) == -1);
    S_CHECK(strstr(err, "cannot read config file"));

    /* argv handling: options taken out, the rest moved to argv[1..] */
    f = fopen(path, "w");
    fputs("workers = 2\n", f);
    fclose(f);
    char a0[] = "testd", a1[] = "--config", a3[] = "pos1", a4[] = "--set", a5[] = "ratio=0.75",
         a6[] = "pos2";
    char *argv[] = { a0, a1, path, a3, a4, a5, a6, NULL };
    int rest = -1;
    memset(&c, 0, sizeof c);
    S_CHECK(qv_config_load(s_test_keys, &c, "testd", 7, argv, &rest) == 0);
    S_CHECK(rest == 2 && strcmp(argv[1], "pos1") == 0 && strcmp(argv[2], "pos2") == 0);
    S_CHECK(argv[3] == NULL);
    S_CHECK(c.workers == 2 && c.ratio == 0.75);
    qv_config_free(s_test_keys, &c);

    char e[32];
    qv_config_env_name("db_pool_max", e, sizeof e);
    S_CHECK(strcmp(e, "QUAVER_DB_POOL_MAX") == 0);
    unlink(path);
    return 0;
fail:
    qv_config_free(s_test_keys, &c);
    unlink(path);
    return -1;
}
