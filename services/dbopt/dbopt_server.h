/* dbopt_server: the daemon's loop. Builds the pool, applies migrations (or keeps retrying
 * when PostgreSQL is not there yet), declares the method table
 *   Query (QueryRequest -> QueryReply, read-only catalog statements)
 *   Exec  (QueryRequest -> QueryReply, catalog statements that write)
 *   Health, Stats (Empty)
 *   DatabaseHealth (Empty -> DbHealthReply, dbopt_health.c)
 *   Maintenance (MaintenanceRequest -> MaintenanceReply, dbopt_maint.c, plus its scheduler)
 * and runs qv_server until SIGINT/SIGTERM. */
#ifndef DBOPT_SERVER_H
#define DBOPT_SERVER_H
#include "dbopt_config.h"

/* cfg is borrowed for the whole run. Returns the process exit code. */
int dbopt_server_run(const dbopt_cfg_t *cfg);
#endif
