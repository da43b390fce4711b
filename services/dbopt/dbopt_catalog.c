/* dbopt_catalog: the const table of named statements (docs/CONTRACTS.md), and the SQLSTATE
 * to status mapping. Guarantees: names are unique, every statement uses exactly $1..$nparams
 * (checked by the selftest), column names and order are those of the contract, and every
 * write that must be atomic (a vote and its score, a room and its first participant, a
 * playback change) is one statement, so it is one transaction in autocommit. */
#include <string.h>
#include <ctype.h>
#include <stdio.h>
#include "dbopt_catalog.h"

/* Why CTEs for the votes: INSERT ... ON CONFLICT DO NOTHING RETURNING yields a row only when
 * the vote is new, and the UPDATE of vote_score runs only then, so a repeated vote changes
 * nothing (idempotent) and the score moves in the same transaction as the vote row. The final
 * SELECT reads the snapshot from before the UPDATE, so it prefers the UPDATE's RETURNING
 * value. Concurrent votes on one track serialise on the track row's lock (UPDATE re-reads the
 * latest vote_score), and two identical votes serialise on the unique index. */
const dbopt_stmt_t dbopt_catalog[] = {
    { "user_create",
      "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3) RETURNING id",
      3, false },
    { "user_by_username",
      "SELECT id, username, email, password_hash, is_admin FROM users WHERE username = $1",
      1, true },
    { "user_get",
      "SELECT id, username, email, is_admin FROM users WHERE id = $1",
      1, true },
    { "room_create",
      "WITH r AS (INSERT INTO rooms (name, administrator_id) VALUES ($1, $2)"
      "           RETURNING id, name, administrator_id, created_at),"
      "     p AS (INSERT INTO room_participants (room_id, user_id)"
      "           SELECT id, administrator_id FROM r)"
      " SELECT id, name, administrator_id, created_at FROM r",
      2, false },
    { "room_get",
      "SELECT r.id, r.name, r.administrator_id, u.username AS administrator,"
      "       (SELECT count(*) FROM room_participants p WHERE p.room_id = r.id)"
      "         AS participant_count,"
      "       r.current_track_id, r.is_playing, r.created_at"
      "  FROM rooms r JOIN users u ON u.id = r.administrator_id"
      " WHERE r.id = $1",
      1, true },
    { "room_join",
      "WITH ins AS (INSERT INTO room_participants (room_id, user_id) VALUES ($1, $2)"
      "             ON CONFLICT (room_id, user_id) DO NOTHING RETURNING 1)"
      " SELECT EXISTS (SELECT 1 FROM ins) AS joined",
      2, false },
    { "room_leave",
      "WITH del AS (DELETE FROM room_participants WHERE room_id = $1 AND user_id = $2"
      "             RETURNING 1)"
      " SELECT EXISTS (SELECT 1 FROM del) AS \"left\"",
      2, false },
    { "room_participants",
      "SELECT p.user_id, u.username, p.joined_at"
      "  FROM room_participants p JOIN users u ON u.id = p.user_id"
      " WHERE p.room_id = $1"
      " ORDER BY p.joined_at ASC, p.user_id ASC",
      1, true },
    { "room_is_participant",
      "SELECT EXISTS (SELECT 1 FROM room_participants WHERE room_id = $1 AND user_id = $2)"
      "  AS is_participant",
      2, true },
    { "track_create",
      "INSERT INTO tracks (room_id, uploader_id, sha256, filename, mime_type, size_bytes,"
      "                    duration_ms, bitrate)"
      " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id, created_at",
      8, false },
    { "track_get",
      "SELECT id, room_id, uploader_id, sha256, filename, mime_type, size_bytes AS size,"
      "       duration_ms, bitrate, vote_score, created_at"
      "  FROM tracks WHERE id = $1",
      1, true },
    /* Reads tracks_queue_idx (partial, WHERE played_at IS NULL) in index order. */
    { "track_queue",
      "SELECT t.id, t.filename, t.uploader_id, u.username AS uploader, t.duration_ms,"
      "       t.size_bytes AS size, t.vote_score, t.created_at"
      "  FROM tracks t JOIN users u ON u.id = t.uploader_id"
      " WHERE t.room_id = $1 AND t.played_at IS NULL"
      " ORDER BY t.vote_score DESC, t.created_at ASC, t.id ASC",
      1, true },
    { "vote_add",
      "WITH ins AS (INSERT INTO track_votes (track_id, user_id) VALUES ($1, $2)"
      "             ON CONFLICT (track_id, user_id) DO NOTHING RETURNING track_id),"
      "     upd AS (UPDATE tracks SET vote_score = vote_score + 1"
      "             WHERE id = $1 AND EXISTS (SELECT 1 FROM ins)"
      "             RETURNING vote_score)"
      " SELECT COALESCE(upd.vote_score, t.vote_score) AS vote_score, t.room_id,"
      "        (upd.vote_score IS NOT NULL) AS changed"
      "   FROM tracks t LEFT JOIN upd ON true WHERE t.id = $1",
      2, false },
    { "vote_remove",
      "WITH del AS (DELETE FROM track_votes WHERE track_id = $1 AND user_id = $2"
      "             RETURNING track_id),"
      "     upd AS (UPDATE tracks SET vote_score = vote_score - 1"
      "             WHERE id = $1 AND EXISTS (SELECT 1 FROM del)"
      "             RETURNING vote_score)"
      " SELECT COALESCE(upd.vote_score, t.vote_score) AS vote_score, t.room_id,"
      "        (upd.vote_score IS NOT NULL) AS changed"
      "   FROM tracks t LEFT JOIN upd ON true WHERE t.id = $1",
      2, false },
    /* The body is the plpgsql function of migrations/002_playback.sql, which says why. */
    { "playback_set",
      "SELECT current_track_id, is_playing FROM quaver_playback_set($1::bigint, $2::text)",
      2, false },
    { NULL, NULL, 0, false }
};

size_t dbopt_catalog_count(void)
{
    size_t n = 0;
    while (dbopt_catalog[n].name)
        n++;
    return n;
}

const dbopt_stmt_t *dbopt_catalog_find(const char *name, size_t *index_p)
{
    if (!name)
        return NULL;
    for (size_t i = 0; dbopt_catalog[i].name; i++)
        if (strcmp(dbopt_catalog[i].name, name) == 0) {
            if (index_p)
                *index_p = i;
            return &dbopt_catalog[i];
        }
    return NULL;
}

int dbopt_catalog_check_any(const Quaver__V1__QueryRequest *req, const dbopt_stmt_t **st_p,
                            char *err, size_t errlen)
{
    const dbopt_stmt_t *st = dbopt_catalog_find(req->name, NULL);
    *st_p = st;
    if (!st) {
        snprintf(err, errlen, "unknown catalog statement '%.80s'", req->name ? req->name : "");
        return 404;
    }
    if (st->nparams > DBOPT_CATALOG_MAX_PARAMS) {       /* a catalog bug the selftest catches */
        snprintf(err, errlen, "statement '%s': too many parameters", st->name);
        return 500;
    }
    if (req->n_params != (size_t) st->nparams) {
        snprintf(err, errlen, "statement '%s' takes %d parameters, got %zu",
                 st->name, st->nparams, req->n_params);
        return 400;
    }
    return 0;
}

int dbopt_catalog_check(const Quaver__V1__QueryRequest *req, bool want_readonly,
                        const dbopt_stmt_t **st_p, char *err, size_t errlen)
{
    int bad = dbopt_catalog_check_any(req, st_p, err, errlen);
    if (bad || (*st_p)->readonly == want_readonly)
        return bad;
    snprintf(err, errlen, (*st_p)->readonly
             ? "statement '%s' is read-only: call Query, not Exec"
             : "statement '%s' writes: call Exec, not Query", (*st_p)->name);
    return 400;
}

void dbopt_catalog_values(const Quaver__V1__QueryRequest *req, const char **values)
{
    for (size_t i = 0; i < req->n_params; i++) {
        const Quaver__V1__Value *v = req->params[i];
        values[i] = (!v || v->is_null) ? NULL : (v->text ? v->text : "");
    }
}

int dbopt_catalog_max_param(const char *sql)
{
    int max = 0;
    char quote = 0;
    for (const char *p = sql; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
            continue;
        }
        if (*p == '\'' || *p == '"') {
            quote = *p;
            continue;
        }
        if (*p != '$')
            continue;
        if (!isdigit((unsigned char) p[1]))
            return -1;
        int n = 0;
        while (isdigit((unsigned char) p[1]))
            n = n * 10 + (*++p - '0');
        if (n > max)
            max = n;
    }
    return max;
}

/* ---- SQLSTATE -> status ----------------------------------------------------------------
 * A table, most specific first: an exact code, or a two-character class prefix. */
static const struct {
    const char *prefix;
    int         status;
} s_sqlstate_map[] = {
    { "23505", 409 },   /* unique_violation */
    { "23503", 404 },   /* foreign_key_violation: the referenced room/user/track is missing */
    { "23502", 400 },   /* not_null_violation: a required parameter was NULL */
    { "23514", 400 },   /* check_violation: e.g. a malformed sha256 */
    { "42804", 400 },   /* datatype_mismatch */
    { "57014", 504 },   /* query_canceled: statement_timeout */
    { "57P01", 503 },   /* admin_shutdown, e.g. pg_terminate_backend */
    { "57P02", 503 },   /* crash_shutdown */
    { "57P03", 503 },   /* cannot_connect_now: starting up */
    { "40001", 503 },   /* serialization_failure: safe for the caller to retry */
    { "40P01", 503 },   /* deadlock_detected: idem */
    { "22",    400 },   /* data_exception: 22P02 bad text, 22003 out of range, 22023 ... */
    { "08",    503 },   /* connection_exception */
    { "53",    503 },   /* insufficient_resources: too many connections, disk full */
    { NULL, 0 }
};

int dbopt_sqlstate_status(const char *sqlstate)
{
    if (!sqlstate || !*sqlstate)
        return 503;
    for (int i = 0; s_sqlstate_map[i].prefix; i++) {
        size_t n = strlen(s_sqlstate_map[i].prefix);
        if (strncmp(sqlstate, s_sqlstate_map[i].prefix, n) == 0)
            return s_sqlstate_map[i].status;
    }
    return 500;
}

bool dbopt_sqlstate_conn_lost(const char *sqlstate)
{
    if (!sqlstate || !*sqlstate)
        return true;
    return strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "57P01") == 0
        || strcmp(sqlstate, "57P02") == 0 || strcmp(sqlstate, "57P03") == 0;
}

/* ---- selftest -------------------------------------------------------------------------- */
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", \
                                          __FILE__, __LINE__, #c); return -1; } } while (0)

int dbopt_catalog_selftest(void)
{
    size_t n = dbopt_catalog_count();
    CHECK(n == 15);     /* the rows of CONTRACTS.md's catalog table */
    for (size_t i = 0; i < n; i++) {
        const dbopt_stmt_t *st = &dbopt_catalog[i];
        int max = dbopt_catalog_max_param(st->sql);
        if (max != st->nparams) {
            fprintf(stderr, "catalog '%s': uses $%d, nparams %d\n", st->name, max, st->nparams);
            return -1;
        }
        /* every $k for k <= nparams is used, or PREPARE could not type it */
        for (int k = 1; k <= st->nparams; k++) {
            char tok[16];
            snprintf(tok, sizeof tok, "$%d", k);
            const char *p = st->sql;
            bool found = false;
            while ((p = strstr(p, tok)) != NULL) {
                p += strlen(tok);
                if (!isdigit((unsigned char) *p)) {
                    found = true;
                    break;
                }
            }
            if (!found) {
                fprintf(stderr, "catalog '%s': $%d unused\n", st->name, k);
                return -1;
            }
        }
        for (size_t j = i + 1; j < n; j++)
            CHECK(strcmp(st->name, dbopt_catalog[j].name) != 0);
        CHECK(st->nparams <= DBOPT_CATALOG_MAX_PARAMS);
        size_t idx = 99;
        CHECK(dbopt_catalog_find(st->name, &idx) == st && idx == i);
        /* a name must be usable as a prepared-statement name without quoting */
        for (const char *c = st->name; *c; c++)
            CHECK(islower((unsigned char) *c) || *c == '_');
        /* reads must not write: a read-only statement starts with SELECT and has no DML */
        if (st->readonly) {
            CHECK(strncmp(st->sql, "SELECT", 6) == 0);
            CHECK(!strstr(st->sql, "INSERT") && !strstr(st->sql, "UPDATE")
                  && !strstr(st->sql, "DELETE"));
        }
    }
    static const char *const reads[] = { "user_by_username", "user_get", "room_get",
        "room_participants", "room_is_participant", "track_get", "track_queue", NULL };
    for (int i = 0; reads[i]; i++)
        CHECK(dbopt_catalog_find(reads[i], NULL) && dbopt_catalog_find(reads[i], NULL)->readonly);
    CHECK(!dbopt_catalog_find("vote_add", NULL)->readonly);
    CHECK(dbopt_catalog_find("nope", NULL) == NULL);
    CHECK(dbopt_catalog_find(NULL, NULL) == NULL);
    {   /* the request checks Query/Exec run before the pool */
        Quaver__V1__QueryRequest q = QUAVER__V1__QUERY_REQUEST__INIT;
        const dbopt_stmt_t *st = NULL;
        char why[128];
        q.name = "nope";
        CHECK(dbopt_catalog_check(&q, true, &st, why, sizeof why) == 404 && !st
              && strstr(why, "nope"));
        q.name = "room_get";
        CHECK(dbopt_catalog_check(&q, true, &st, why, sizeof why) == 400
              && strstr(why, "takes 1 parameters, got 0"));
        Quaver__V1__Value v = QUAVER__V1__VALUE__INIT, *vp[1] = { &v };
        v.text = "7";
        q.n_params = 1;
        q.params = vp;
        CHECK(dbopt_catalog_check(&q, false, &st, why, sizeof why) == 400
              && strstr(why, "call Query"));
        CHECK(dbopt_catalog_check_any(&q, &st, why, sizeof why) == 0);
        CHECK(dbopt_catalog_check(&q, true, &st, why, sizeof why) == 0
              && st == dbopt_catalog_find("room_get", NULL));
        const char *values[DBOPT_CATALOG_MAX_PARAMS];
        dbopt_catalog_values(&q, values);
        CHECK(values[0] && strcmp(values[0], "7") == 0);
        v.is_null = true;
        dbopt_catalog_values(&q, values);
        CHECK(values[0] == NULL);
    }
    CHECK(dbopt_catalog_max_param("SELECT 1") == 0);
    CHECK(dbopt_catalog_max_param("SELECT $12, '$3'") == 12);
    CHECK(dbopt_catalog_max_param("SELECT $x") == -1);
    return 0;
}

int dbopt_errors_selftest(void)
{
    static const struct { const char *state; int status; bool lost; } cases[] = {
        { "23505", 409, false }, { "23503", 404, false }, { "22P02", 400, false },
        { "22003", 400, false }, { "22023", 400, false }, { "42804", 400, false },
        { "23502", 400, false }, { "23514", 400, false }, { "57014", 504, false },
        { "08006", 503, true },  { "08001", 503, true },  { "57P01", 503, true },
        { "53300", 503, false }, { "42P01", 500, false }, { "XX000", 500, false },
        { NULL,    503, true },  { "",      503, true },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (dbopt_sqlstate_status(cases[i].state) != cases[i].status
            || dbopt_sqlstate_conn_lost(cases[i].state) != cases[i].lost) {
            fprintf(stderr, "sqlstate %s: status %d lost %d\n",
                    cases[i].state ? cases[i].state : "(null)",
                    dbopt_sqlstate_status(cases[i].state),
                    dbopt_sqlstate_conn_lost(cases[i].state));
            return -1;
        }
    }
    return 0;
}
