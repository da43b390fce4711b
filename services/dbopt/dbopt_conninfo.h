/* dbopt_conninfo: what we may print of a database URL. database_url may carry a password
 * (postgresql://user:secret@host/db, ?password=secret, or key=value "password=secret"); logs
 * and Health show it only with the password replaced by "***". */
#ifndef DBOPT_CONNINFO_H
#define DBOPT_CONNINFO_H
#include <stddef.h>

/* Writes the masked form of conninfo into buf (always NUL-terminated, truncated to len).
 * Works on URIs and key=value strings without libpq, so it cannot fail on a malformed one. */
void dbopt_conninfo_mask(const char *conninfo, char *buf, size_t len);

int dbopt_conninfo_selftest(void);
#endif
