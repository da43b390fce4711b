/* dbopt_catalog: the named statements, the only SQL dbopt ever runs for a caller
 * (docs/CONTRACTS.md "dbopt catalog"). Callers name a statement and pass text parameters;
 * nothing from the network is ever spliced into SQL.
 * Also maps a PostgreSQL SQLSTATE to the status dbopt answers (CONTRACTS.md "dbopt errors").
 * Ownership: everything here is static and const; nothing to free. */
#ifndef DBOPT_CATALOG_H
#define DBOPT_CATALOG_H
#include <stdbool.h>
#include <stddef.h>
#include "quaver/v1/dbopt.pb-c.h"

typedef struct {
    const char *name;       /* also the name it is PREPAREd under on every connection */
    const char *sql;        /* parameters $1..$nparams, each used at least once */
    int         nparams;
    bool        readonly;   /* Query runs only these; Exec only the others */
} dbopt_stmt_t;

/* The table, ended by an entry with name == NULL. */
extern const dbopt_stmt_t dbopt_catalog[];
/* Number of entries (without the terminator). */
size_t dbopt_catalog_count(void);
/* The entry called name, or NULL. *index_p (when not NULL) gets its position. */
const dbopt_stmt_t *dbopt_catalog_find(const char *name, size_t *index_p);
/* Most parameters any catalog statement takes (the selftest holds every entry to it), so a
 * caller can keep the values in a fixed array. */
#define DBOPT_CATALOG_MAX_PARAMS 16

/* The checks before a request reaches PostgreSQL: the name is in the catalog (404) and the
 * request carries exactly its nparams values (400; 500 for an entry over DBOPT_CATALOG_MAX_PARAMS).
 * Returns 0 and sets *st_p, or the status with a message naming the cause in err (errlen
 * bytes, always NUL-terminated). Borrows req; *st_p points into the catalog. Explain uses
 * this one: it plans reads and writes alike. */
int dbopt_catalog_check_any(const Quaver__V1__QueryRequest *req, const dbopt_stmt_t **st_p,
                            char *err, size_t errlen);
/* The same, and the statement's kind matches the method: want_readonly is true for Query,
 * false for Exec (400 otherwise). */
int dbopt_catalog_check(const Quaver__V1__QueryRequest *req, bool want_readonly,
                        const dbopt_stmt_t **st_p, char *err, size_t errlen);
/* The request's parameters as libpq text values (NULL for SQL NULL), borrowed from req, into
 * values[0..n_params-1]; call after a check passed (n_params <= DBOPT_CATALOG_MAX_PARAMS). */
void dbopt_catalog_values(const Quaver__V1__QueryRequest *req, const char **values);
/* The highest $n that sql refers to (0 when none); -1 when a $ is followed by no digit
 * outside quotes (which the catalog never does). Used by the selftest. */
int dbopt_catalog_max_param(const char *sql);

/* What dbopt answers for a failed statement with this SQLSTATE (NULL: no SQLSTATE, which
 * libpq leaves for connection failures): 400 bad value, 404 missing referenced row, 409
 * unique violation, 503 database unavailable, 504 statement timeout, 500 anything else. */
int dbopt_sqlstate_status(const char *sqlstate);
/* True when the SQLSTATE (or its absence) means the connection is gone and must be reopened
 * (class 08, 57P01..57P03 admin/crash shutdown, NULL). */
bool dbopt_sqlstate_conn_lost(const char *sqlstate);

int dbopt_catalog_selftest(void);
int dbopt_errors_selftest(void);
#endif
