/* dbopt_migrate: brings a database to the schema of services/dbopt/migrations.
 * Files are named NNN_name.sql and applied in ascending NNN, each in its own transaction
 * together with its row in schema_migrations(version, name, applied_at), so a migration is
 * either wholly applied and recorded or not at all. The whole run holds a session advisory
 * lock, so replicas starting together apply each file once; the others wait, then find
 * nothing to do. A second run applies nothing. */
#ifndef DBOPT_MIGRATE_H
#define DBOPT_MIGRATE_H
#include <stddef.h>
#include <libpq-fe.h>

/* The advisory lock key: "qvmigrat" as a big-endian int64, so no other tool collides. */
#define DBOPT_MIGRATE_LOCK_KEY "8175842473012257140"

/* Applies what is missing on conn (borrowed; left idle, outside any transaction).
 * Returns how many files were applied (0 when up to date), or -1 with a message in err. */
int dbopt_migrate_run(PGconn *conn, const char *dir, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* Lists the migration files of dir in order: fills versions/names (names are heap strings,
 * caller frees each), returns the count, or -1 with err (bad name, duplicate version,
 * unreadable dir). Used by dbopt_migrate_run and the selftest. */
int dbopt_migrate_scan(const char *dir, int *versions, char **names, int max,
                       char *err, size_t errlen);

int dbopt_migrate_selftest(void);
#endif
