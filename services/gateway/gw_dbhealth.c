/* gw_dbhealth: GET /api/v1/performance/database, any logged-in user: dbopt's DatabaseHealth
 * (cache hit ratio, connections, long-running and idle-in-transaction sessions, tables,
 * indexes, wraparound, pg_stat_statements' top statements) and the pool's db_pool.* figures
 * from dbopt's Stats, as one JSON document:
 *   {"database":{...},"pool":{"max":10,"open":..},"query_texts":"shown"|"administrators only"}
 *
 * Guarantees: statement texts (of sessions and of pg_stat_statements) are the only part that
 * could carry user data (a literal in an ad-hoc statement), so they are in the document only
 * for administrators, read from users.is_admin in PostgreSQL at each request as gw_perf.c does
 * (a revoked administrator loses them at once); everyone else gets counts, ages, pids,
 * application names and query ids, and "query_texts":"administrators only". dbopt already cuts
 * each text to 200 characters and never sends parameter values. Numbers dbopt marks unknown
 * (-1: never vacuumed, no statistics) become null. */
#include "gw_routes.h"
#include "gw_server.h"
#include "qv_log.h"
#include "quaver/v1/dbopt_health.pb-c.h"
#include <stdio.h>
#include <string.h>

/* -1 (unknown/never) -> null */
static json_t *s_num(double v)
{
    return v < 0 ? json_null() : json_real(v);
}

static json_t *s_sessions(Quaver__V1__DbSession **s, size_t n, bool texts)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *o = json_pack("{s:i,s:s,s:s,s:o,s:o,s:s}", "pid", (int) s[i]->pid,
                              "application_name", s[i]->application_name, "state", s[i]->state,
                              "age_s", s_num(s[i]->age_s), "xact_age_s", s_num(s[i]->xact_age_s),
                              "wait_event", s[i]->wait_event);
        if (o && texts)
            json_object_set_new(o, "query", json_string(s[i]->query));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *s_tables(const Quaver__V1__DbHealthReply *h)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < h->n_tables; i++) {
        const Quaver__V1__DbTableHealth *t = h->tables[i];
        json_array_append_new(a, json_pack(
            "{s:s,s:s,s:I,s:I,s:f,s:f,s:I,s:I,s:o,s:I,s:o,s:o,s:o,s:o,s:I,s:I,s:I,s:s}",
            "schema", t->schema, "name", t->name,
            "live_tuples", (json_int_t) t->live_tuples,
            "dead_tuples", (json_int_t) t->dead_tuples,
            "dead_ratio", t->dead_ratio, "modified_ratio", t->modified_ratio,
            "pages", (json_int_t) t->pages, "size_bytes", (json_int_t) t->size_bytes,
            "bloat_ratio", s_num(t->bloat_ratio), "bloat_bytes", (json_int_t) t->bloat_bytes,
            "last_vacuum_age_s", s_num(t->last_vacuum_age_s),
            "last_autovacuum_age_s", s_num(t->last_autovacuum_age_s),
            "last_analyze_age_s", s_num(t->last_analyze_age_s),
            "last_autoanalyze_age_s", s_num(t->last_autoanalyze_age_s),
            "vacuum_count", (json_int_t) t->vacuum_count,
            "autovacuum_count", (json_int_t) t->autovacuum_count,
            "xid_age", (json_int_t) t->xid_age, "wraparound_level", t->wraparound_level));
    }
    return a;
}

static json_t *s_indexes(const Quaver__V1__DbHealthReply *h)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < h->n_indexes; i++) {
        const Quaver__V1__DbIndexHealth *x = h->indexes[i];
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:I,s:I,s:o,s:I,s:I}",
                                           "schema", x->schema, "table", x->table,
                                           "name", x->name, "pages", (json_int_t) x->pages,
                                           "size_bytes", (json_int_t) x->size_bytes,
                                           "bloat_ratio", s_num(x->bloat_ratio),
                                           "bloat_bytes", (json_int_t) x->bloat_bytes,
                                           "scans", (json_int_t) x->scans));
    }
    return a;
}

static json_t *s_statements(const Quaver__V1__DbHealthReply *h, bool texts)
{
    json_t *top = json_array();
    for (size_t i = 0; top && i < h->n_top_queries; i++) {
        const Quaver__V1__DbTopQuery *q = h->top_queries[i];
        json_t *o = json_pack("{s:s,s:I,s:f,s:f,s:I,s:o}", "queryid", q->queryid,
                              "calls", (json_int_t) q->calls, "total_ms", q->total_ms,
                              "mean_ms", q->mean_ms, "rows", (json_int_t) q->rows,
                              "hit_ratio", s_num(q->hit_ratio));
        if (o && texts)
            json_object_set_new(o, "query", json_string(q->query));
        json_array_append_new(top, o);
    }
    return json_pack("{s:b,s:s,s:o}", "available", h->statements_available,
                     "note", h->statements_note, "top", top);
}

static json_t *s_database(const Quaver__V1__DbHealthReply *h, bool texts)
{
    json_t *conns = json_object();
    for (size_t i = 0; conns && i < h->n_connections; i++)
        json_object_set_new(conns, h->connections[i]->state,
                            json_integer((json_int_t) h->connections[i]->count));
    json_t *d = json_pack("{s:s,s:s,s:o,s:I,s:I,s:I,s:o,s:f}", "name", h->database,
                          "server_version", h->server_version,
                          "cache_hit_ratio", s_num(h->cache_hit_ratio),
                          "blks_hit", (json_int_t) h->blks_hit,
                          "blks_read", (json_int_t) h->blks_read,
                          "max_connections", (json_int_t) h->max_connections,
                          "connections", conns, "long_query_s", h->long_query_s);
    if (!d)
        return NULL;
    json_t *warnings = json_array();
    for (size_t i = 0; warnings && i < h->n_warnings; i++)
        json_array_append_new(warnings, json_string(h->warnings[i]));
    json_object_set_new(d, "long_running", s_sessions(h->long_running, h->n_long_running,
                                                      texts));
    json_object_set_new(d, "idle_in_transaction",
                        s_sessions(h->idle_in_transaction, h->n_idle_in_transaction, texts));
    json_object_set_new(d, "tables", s_tables(h));
    json_object_set_new(d, "indexes", s_indexes(h));
    json_object_set_new(d, "bloat_method", json_string(h->bloat_method));
    json_object_set_new(d, "wraparound", json_pack("{s:I,s:I,s:s}",
                        "datfrozenxid_age", (json_int_t) h->datfrozenxid_age,
                        "autovacuum_freeze_max_age", (json_int_t) h->autovacuum_freeze_max_age,
                        "level", h->wraparound_level));
    json_object_set_new(d, "statements", s_statements(h, texts));
    json_object_set_new(d, "warnings", warnings);
    return d;
}

/* db_pool.* of dbopt's Stats, without the prefix; null when Stats did not answer. */
static json_t *s_pool(gw_req_t *req)
{
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    qv_result_t res;
    int st = gw_call(req, "dbopt", "Stats", &e.base, 0, &res);
    Quaver__V1__StatsReply *s = st == 200
        ? quaver__v1__stats_reply__unpack(NULL, res.len, res.payload) : NULL;
    qv_result_free(&res);
    if (!s)
        return json_null();
    json_t *o = json_object();
    for (size_t i = 0; o && i < s->n_stats; i++)
        if (strncmp(s->stats[i]->name, "db_pool.", 8) == 0)
            json_object_set_new(o, s->stats[i]->name + 8, json_real(s->stats[i]->value));
    quaver__v1__stats_reply__free_unpacked(s, NULL);
    return o;
}

int gw_h_db_health(gw_req_t *req)
{
    int admin = gw_is_admin(req);
    if (admin < 0)
        return req->status;
    Quaver__V1__Empty e = QUAVER__V1__EMPTY__INIT;
    Quaver__V1__DbHealthReply *h = gw_call_reply(req, "dbopt", "DatabaseHealth", &e.base,
                                                 &quaver__v1__db_health_reply__descriptor, NULL);
    if (!h)
        return req->status;
    json_t *db = s_database(h, admin == 1);
    quaver__v1__db_health_reply__free_unpacked(h, NULL);
    if (!db)
        return gw_send_error(req, 500, NULL, "could not build the response");
    json_t *doc = json_pack("{s:o,s:o,s:s}", "database", db, "pool", s_pool(req),
                            "query_texts", admin == 1 ? "shown" : "administrators only");
    if (!doc)
        return gw_send_error(req, 500, NULL, "could not build the response");
    return gw_send_json(req, 200, doc);
}
