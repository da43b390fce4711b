/* dbopt_migrate: numbered SQL files applied once each, in order, under an advisory lock
 * (see dbopt_migrate.h for the guarantees). The SQL comes from files shipped with the daemon,
 * never from a caller. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include "dbopt_migrate.h"
#include "qv_log.h"

#define S_MAX_FILES 1000

static void s_err(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_err(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
    /* libpq messages span lines (LINE n: ..., a caret); one log line per event */
    for (char *c = err; *c; c++)
        if (*c == '\n' || *c == '\t')
            *c = ' ';
    size_t n = strlen(err);
    while (n && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
}

/* "001_rooms.sql" -> 1. -1 when the name is not a migration's. */
static int s_version_of(const char *name)
{
    const char *p = name;
    int v = 0, digits = 0;
    while (isdigit((unsigned char) *p) && digits < 9) {
        v = v * 10 + (*p++ - '0');
        digits++;
    }
    size_t n = strlen(name);
    if (digits == 0 || *p != '_' || n < 5 || strcmp(name + n - 4, ".sql") != 0)
        return -1;
    return v;
}

typedef struct { int version; char *name; } s_file_t;

static int s_cmp(const void *a, const void *b)
{
    const s_file_t *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

int dbopt_migrate_scan(const char *dir, int *versions, char **names, int max,
                       char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        s_err(err, errlen, "migrations dir '%s': %s", dir, strerror(errno));
        return -1;
    }
    s_file_t files[S_MAX_FILES];
    int n = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        int v = s_version_of(e->d_name);
        if (v < 0)
            continue;       /* README, editor files: not migrations */
        if (n == max || n == S_MAX_FILES) {
            s_err(err, errlen, "migrations dir '%s': more than %d files", dir, max);
            rc = -1;
            break;
        }
        files[n].version = v;
        files[n].name = strdup(e->d_name);
        if (!files[n].name) {
            s_err(err, errlen, "out of memory");
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    qsort(files, (size_t) n, sizeof files[0], s_cmp);
    for (int i = 1; rc == 0 && i < n; i++)
        if (files[i].version == files[i - 1].version) {
            s_err(err, errlen, "migrations '%s' and '%s' share version %d", files[i - 1].name,
                  files[i].name, files[i].version);
            rc = -1;
        }
    if (rc < 0) {
        for (int i = 0; i < n; i++)
            free(files[i].name);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        versions[i] = files[i].version;
        names[i] = files[i].name;
    }
    return n;
}

static char *s_read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        s_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (len < cap - 1)
            break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    bool bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        s_err(err, errlen, "%s: cannot read", path);
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* Runs sql (no parameters); 0 or -1 with err. */
static int s_exec(PGconn *conn, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : -1;
    if (rc < 0)
        s_err(err, errlen, "%s: %s", what, PQerrorMessage(conn));
    PQclear(r);
    return rc;
}

static int s_apply(PGconn *conn, const char *dir, int version, const char *name,
                   char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *sql = s_read_file(path, err, errlen);
    if (!sql)
        return -1;
    char what[512];
    snprintf(what, sizeof what, "migration %s", name);
    int rc = s_exec(conn, "BEGIN", what, err, errlen);
    if (rc == 0)
        rc = s_exec(conn, sql, what, err, errlen);
    free(sql);
    if (rc == 0) {
        char vbuf[16];
        snprintf(vbuf, sizeof vbuf, "%d", version);
        const char *vals[2] = { vbuf, name };
        PGresult *r = PQexecParams(conn,
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            2, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            s_err(err, errlen, "%s: recording it: %s", what, PQerrorMessage(conn));
            rc = -1;
        }
        PQclear(r);
    }
    if (rc == 0)
        rc = s_exec(conn, "COMMIT", what, err, errlen);
    if (rc < 0) {
        char ignore[64];
        (void) s_exec(conn, "ROLLBACK", "rollback", ignore, sizeof ignore);
    }
    return rc;
}

int dbopt_migrate_run(PGconn *conn, const char *dir, char *err, size_t errlen)
{
    int versions[S_MAX_FILES];
    char *names[S_MAX_FILES];
    int n = dbopt_migrate_scan(dir, versions, names, S_MAX_FILES, err, errlen);
    if (n < 0)
        return -1;
    int applied = 0, rc = 0;
    /* Session lock, not transaction lock: it must span one transaction per file. */
    if (s_exec(conn, "SELECT pg_advisory_lock(" DBOPT_MIGRATE_LOCK_KEY ")", "advisory lock",
               err, errlen) < 0) {
        rc = -1;
        goto out;
    }
    /* Only NOTICE "already exists" noise when present; quiet it for this one command. */
    if (s_exec(conn, "SET client_min_messages = warning", "set", err, errlen) < 0
        || s_exec(conn,
                  "CREATE TABLE IF NOT EXISTS schema_migrations ("
                  " version integer PRIMARY KEY,"
                  " name text NOT NULL,"
                  " applied_at timestamptz NOT NULL DEFAULT now())",
                  "schema_migrations", err, errlen) < 0
        || s_exec(conn, "RESET client_min_messages", "reset", err, errlen) < 0) {
        rc = -1;
        goto unlock;
    }
    PGresult *r = PQexec(conn, "SELECT version FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        s_err(err, errlen, "reading schema_migrations: %s", PQerrorMessage(conn));
        PQclear(r);
        rc = -1;
        goto unlock;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        bool done = false;
        for (int row = 0; row < PQntuples(r) && !done; row++)
            done = atoi(PQgetvalue(r, row, 0)) == versions[i];
        if (done)
            continue;
        if (s_apply(conn, dir, versions[i], names[i], err, errlen) < 0) {
            rc = -1;
            break;
        }
        qv_info("migration %s applied", names[i]);
        applied++;
    }
    PQclear(r);
unlock:
    {
        char ignore[64];
        (void) s_exec(conn, "SELECT pg_advisory_unlock(" DBOPT_MIGRATE_LOCK_KEY ")", "unlock",
                      ignore, sizeof ignore);
    }
out:
    for (int i = 0; i < n; i++)
        free(names[i]);
    return rc < 0 ? -1 : applied;
}

int dbopt_migrate_selftest(void)
{
    if (s_version_of("001_rooms.sql") != 1 || s_version_of("120_x.sql") != 120
        || s_version_of("rooms.sql") != -1 || s_version_of("001_rooms.sql~") != -1
        || s_version_of("001rooms.sql") != -1)
        return -1;
#ifdef QV_DBOPT_MIGRATIONS
    int versions[64];
    char *names[64];
    char err[256];
    int n = dbopt_migrate_scan(QV_DBOPT_MIGRATIONS, versions, names, 64, err, sizeof err);
    if (n < 1) {
        fprintf(stderr, "scan: %s\n", n < 0 ? err : "no migrations");
        return -1;
    }
    int rc = strcmp(names[0], "001_rooms.sql") == 0 ? 0 : -1;
    for (int i = 0; i < n; i++) {
        if (i > 0 && versions[i] <= versions[i - 1])
            rc = -1;
        free(names[i]);
    }
    return rc;
#else
    return 0;
#endif
}
