/* gateway_selftest: the gateway's pure parts, one ctest entry per table below.
 * Usage: gateway_selftest [name]  (no name: all). Exit status 0 when every check passed. */
#include "gw_routes.h"
#include "gw_range.h"
#include "gw_multipart.h"
#include "gw_auth.h"
#include "gw_http.h"
#include "gw_cache.h"
#include "gw_gzip.h"
#include "gw_ratelimit.h"
#include <zlib.h>
#include <jwt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int s_failures;

#define CHECK(cond, ...) do { if (!(cond)) { s_failures++; \
    fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); \
    fprintf(stderr, "\n"); } } while (0)

/* ---- routes ---- */
static void s_test_routes(void)
{
    static const struct {
        const char *method, *path;
        gw_match_t  want;
        gw_handler_fn fn;
        int64_t     id;
        const char *allow;
    } cases[] = {
        { "GET",    "/api/ping",                     GW_MATCH_OK, gw_h_ping, 0, NULL },
        { "GET",    "/livez",                        GW_MATCH_OK, gw_h_livez, 0, NULL },
        { "POST",   "/api/ping",                     GW_MATCH_BAD_METHOD, NULL, 0, "GET" },
        { "GET",    "/api/v1/rooms/12",              GW_MATCH_OK, gw_h_room_get, 12, NULL },
        { "POST",   "/api/v1/rooms",                 GW_MATCH_OK, gw_h_room_create, 0, NULL },
        { "GET",    "/api/v1/rooms",                 GW_MATCH_BAD_METHOD, NULL, 0, "POST" },
        { "POST",   "/api/v1/rooms/7/join",          GW_MATCH_OK, gw_h_room_join, 7, NULL },
        { "GET",    "/api/v1/rooms/7/tracks",        GW_MATCH_OK, gw_h_track_queue, 7, NULL },
        { "POST",   "/api/v1/rooms/7/tracks",        GW_MATCH_OK, gw_h_track_upload, 7, NULL },
        { "PUT",    "/api/v1/rooms/7/tracks",        GW_MATCH_BAD_METHOD, NULL, 0, "POST, GET" },
        { "DELETE", "/api/v1/tracks/5/vote",         GW_MATCH_OK, gw_h_vote_remove, 5, NULL },
        { "GET",    "/api/v1/tracks/5/vote",         GW_MATCH_BAD_METHOD, NULL, 0, "POST, DELETE" },
        { "GET",    "/api/v1/tracks/9/stream",       GW_MATCH_OK, gw_h_stream, 9, NULL },
        { "GET",    "/api/v1/rooms/0",               GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "/api/v1/rooms/-1",              GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "/api/v1/rooms/abc",             GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "/api/v1/rooms/12/",             GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "/api/v1/rooms/",                GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "/api/v1/rooms/1234567890123456789", GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "/api/v1/rooms/999999999999999999", GW_MATCH_OK, gw_h_room_get,
          999999999999999999LL, NULL },
        { "GET",    "/api/v1/rooms/1x",              GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "/",                             GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "",                              GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "//api/ping",                    GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "/api/ping/x",                   GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "GET",    "/api/pin",                      GW_MATCH_NO_PATH, NULL, 0, NULL },
        { "get",    "/api/ping",                     GW_MATCH_BAD_METHOD, NULL, 0, "GET" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const gw_route_t *r = NULL;
        int64_t ids[GW_MAX_PATH_IDS] = { 0 };
        int n = 0;
        char allow[64];
        gw_match_t m = gw_route_match(cases[i].method, cases[i].path, &r, ids, &n, allow,
                                      sizeof allow);
        CHECK(m == cases[i].want, "%s %s: match %d, want %d", cases[i].method, cases[i].path, m,
              cases[i].want);
        if (m == GW_MATCH_OK && cases[i].want == GW_MATCH_OK) {
            CHECK(r->fn == cases[i].fn, "%s %s: wrong handler", cases[i].method, cases[i].path);
            if (cases[i].id)
                CHECK(n == 1 && ids[0] == cases[i].id, "%s: id %lld", cases[i].path,
                      (long long) ids[0]);
        }
        if (m == GW_MATCH_BAD_METHOD && cases[i].allow)
            CHECK(strcmp(allow, cases[i].allow) == 0, "%s: Allow '%s', want '%s'",
                  cases[i].path, allow, cases[i].allow);
    }
    /* Every route's pattern starts with '/' and its deadline is sane. */
    for (const gw_route_t *r = gw_routes; r->method; r++)
        CHECK(r->pattern[0] == '/' && r->deadline_ms >= 0 && r->fn, "route %s", r->pattern);
}

/* ---- range ---- */
static void s_test_range(void)
{
    static const struct {
        const char *h;
        int64_t size;
        gw_range_t want;
        int64_t first, last;
    } cases[] = {
        { NULL,                 100, GW_RANGE_NONE, 0, 0 },
        { "bytes=0-9",          100, GW_RANGE_OK, 0, 9 },
        { "bytes=10-",          100, GW_RANGE_OK, 10, 99 },
        { "bytes=-10",          100, GW_RANGE_OK, 90, 99 },
        { "bytes=-1000",        100, GW_RANGE_OK, 0, 99 },
        { "bytes=90-1000",      100, GW_RANGE_OK, 90, 99 },
        { "bytes=99-99",        100, GW_RANGE_OK, 99, 99 },
        { "Bytes = 5 - 6",      100, GW_RANGE_NONE, 0, 0 },   /* no spaces inside a spec */
        { "bytes= 5-6 ",        100, GW_RANGE_OK, 5, 6 },
        { "bytes=0-0,5-9",      100, GW_RANGE_MULTI, 0, 0 },
        { "bytes=0-1, -5",      100, GW_RANGE_MULTI, 0, 0 },
        { "bytes=100-",         100, GW_RANGE_UNSAT, 0, 0 },
        { "bytes=200-300",      100, GW_RANGE_UNSAT, 0, 0 },
        { "bytes=-0",           100, GW_RANGE_UNSAT, 0, 0 },
        { "bytes=0-",             0, GW_RANGE_UNSAT, 0, 0 },
        { "bytes=-5",             0, GW_RANGE_UNSAT, 0, 0 },
        { "bytes=9-5",          100, GW_RANGE_NONE, 0, 0 },
        { "bytes=",             100, GW_RANGE_NONE, 0, 0 },
        { "bytes=-",            100, GW_RANGE_NONE, 0, 0 },
        { "bytes=a-b",          100, GW_RANGE_NONE, 0, 0 },
        { "bytes=1-2-3",        100, GW_RANGE_NONE, 0, 0 },
        { "bytes=1-2,",         100, GW_RANGE_NONE, 0, 0 },
        { "items=0-5",          100, GW_RANGE_NONE, 0, 0 },
        { "garbage",            100, GW_RANGE_NONE, 0, 0 },
        { "",                   100, GW_RANGE_NONE, 0, 0 },
        { "bytes=99999999999999999999999-", 100, GW_RANGE_NONE, 0, 0 },
        { "bytes=0-99999999999999999999999", 100, GW_RANGE_NONE, 0, 0 },
        { "bytes=-99999999999999999999999", 100, GW_RANGE_NONE, 0, 0 },
        { "bytes=9223372036854775807-", 100, GW_RANGE_UNSAT, 0, 0 },
        { "bytes=0-9223372036854775807", 100, GW_RANGE_OK, 0, 99 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t f = -1, l = -1;
        gw_range_t got = gw_range_parse(cases[i].h, cases[i].size, &f, &l);
        CHECK(got == cases[i].want, "Range '%s' size %lld: got %d want %d",
              cases[i].h ? cases[i].h : "(null)", (long long) cases[i].size, got, cases[i].want);
        if (got == GW_RANGE_OK && cases[i].want == GW_RANGE_OK)
            CHECK(f == cases[i].first && l == cases[i].last, "Range '%s': %lld-%lld",
                  cases[i].h, (long long) f, (long long) l);
    }
    /* A very long list must not be worked through. */
    char big[8192] = "bytes=";
    for (int i = 0; i < 500; i++)
        strcat(big, "1-2,");
    strcat(big, "1-2");
    int64_t f, l;
    CHECK(gw_range_parse(big, 100, &f, &l) == GW_RANGE_NONE, "long range list");
}

/* ---- multipart ---- */
static void s_test_multipart(void)
{
    const char *ct = "multipart/form-data; boundary=XyZ";
    const char good[] =
        "preamble\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"title\"\r\n\r\n"
        "hello\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"file\"; filename=\"C:\\music\\a.mp3\"\r\n"
        "Content-Type: audio/mpeg\r\n\r\n"
        "ID3\0\x01\x02--XyZ no\r\n"
        "--XyZ--\r\n";
    gw_part_t part;
    char err[160];
    int rc = gw_multipart_file(ct, good, sizeof good - 1, &part, err, sizeof err);
    CHECK(rc == 0, "good multipart: %s", err);
    if (rc == 0) {
        CHECK(part.len == 14 && memcmp(part.data, "ID3\0\x01\x02--XyZ no", 14) == 0,
              "file bytes (len %zu)", part.len);
        CHECK(strcmp(part.filename, "a.mp3") == 0, "filename '%s'", part.filename);
        CHECK(strcmp(part.content_type, "audio/mpeg") == 0, "type '%s'", part.content_type);
    }
    /* quoted boundary */
    const char q[] = "--a b\r\nContent-Disposition: form-data; name=f; filename=x.wav\r\n\r\n"
                     "RIFF\r\n--a b--";
    rc = gw_multipart_file("multipart/form-data; boundary=\"a b\"", q, sizeof q - 1, &part, err,
                           sizeof err);
    CHECK(rc == 0 && part.len == 4 && strcmp(part.filename, "x.wav") == 0, "quoted: %s", err);

    CHECK(gw_multipart_file("multipart/form-data", good, sizeof good - 1, &part, err,
                            sizeof err) != 0, "missing boundary accepted");
    CHECK(gw_multipart_file("multipart/form-data; boundary=", good, sizeof good - 1, &part, err,
                            sizeof err) != 0, "empty boundary accepted");
    char longb[120] = "multipart/form-data; boundary=";
    memset(longb + strlen(longb), 'b', 75);
    CHECK(gw_multipart_file(longb, good, sizeof good - 1, &part, err, sizeof err) != 0,
          "71+ char boundary accepted");
    CHECK(gw_multipart_file("text/plain; boundary=XyZ", good, sizeof good - 1, &part, err,
                            sizeof err) != 0, "not multipart accepted");
    /* truncated at every length: never accepted (closing delimiter missing) and never a crash */
    size_t cut_ok = 0;
    for (size_t n = 0; n + 4 < sizeof good - 1; n++) {
        char *copy = malloc(n ? n : 1);       /* exact size: ASan sees any overread */
        memcpy(copy, good, n);
        if (gw_multipart_file(ct, copy, n, &part, err, sizeof err) == 0)
            cut_ok++;
        free(copy);
    }
    CHECK(cut_ok == 0, "%zu truncated bodies accepted", cut_ok);
    const char two[] =
        "--XyZ\r\nContent-Disposition: form-data; name=\"a\"; filename=\"1.mp3\"\r\n\r\nAAA\r\n"
        "--XyZ\r\nContent-Disposition: form-data; name=\"b\"; filename=\"2.mp3\"\r\n\r\nBBB\r\n"
        "--XyZ--\r\n";
    CHECK(gw_multipart_file(ct, two, sizeof two - 1, &part, err, sizeof err) != 0 &&
          strstr(err, "more than one"), "two files: %s", err);
    const char nofile[] = "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--XyZ--";
    CHECK(gw_multipart_file(ct, nofile, sizeof nofile - 1, &part, err, sizeof err) != 0 &&
          strstr(err, "no file"), "no file: %s", err);
    CHECK(gw_multipart_file(ct, "", 0, &part, err, sizeof err) != 0, "empty body accepted");
    const char noheaders[] = "--XyZ\r\n\r\nzz\r\n--XyZ--";
    CHECK(gw_multipart_file(ct, noheaders, sizeof noheaders - 1, &part, err, sizeof err) != 0,
          "headerless part taken as file");
}

/* ---- request ids ---- */
static void s_test_request_id(void)
{
    char max[65], over[66];
    memset(max, 'a', 64);
    max[64] = '\0';
    memset(over, 'a', 65);
    over[65] = '\0';
    CHECK(gw_request_id_ok("abc-DEF_1.2"), "plain id refused");
    CHECK(gw_request_id_ok(max), "64 chars refused");
    CHECK(!gw_request_id_ok(over), "65 chars accepted");
    CHECK(!gw_request_id_ok(""), "empty accepted");
    CHECK(!gw_request_id_ok(NULL), "NULL accepted");
    CHECK(!gw_request_id_ok("a b"), "space accepted");
    CHECK(!gw_request_id_ok("a\r\nX-Evil: 1"), "CRLF accepted");
    CHECK(!gw_request_id_ok("<script>"), "markup accepted");
    CHECK(!gw_request_id_ok("caf\xc3\xa9"), "non-ASCII accepted");
}

/* ---- JWT ---- */
static char *s_b64url(const char *s)
{
    size_t n = strlen(s);
    size_t cap = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    char *out = malloc(cap);
    sodium_bin2base64(out, cap, (const unsigned char *) s, n,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    return out;
}

static void s_test_jwt(void)
{
    const char *secret = "0123456789abcdef0123456789abcdef";
    gw_identity_t id = { .user_id = 42, .admin = false };
    snprintf(id.username, sizeof id.username, "alice");
    char *tok = gw_auth_issue(secret, 3600, &id);
    CHECK(tok != NULL, "issue failed");
    if (!tok)
        return;
    gw_identity_t out;
    CHECK(gw_auth_verify(secret, tok, &out) == 0 && out.user_id == 42 &&
          strcmp(out.username, "alice") == 0 && !out.admin, "verify of a fresh token");
    CHECK(gw_auth_verify("another-secret-another-secret-xx", tok, &out) != 0, "wrong secret");

    /* tampered: change a payload character (the dot-separated middle part) */
    char *bad = strdup(tok);
    char *dot = strchr(bad, '.');
    if (dot && dot[1]) {
        dot[2] = dot[2] == 'A' ? 'B' : 'A';
        CHECK(gw_auth_verify(secret, bad, &out) != 0, "tampered payload accepted");
    }
    free(bad);
    /* tampered signature */
    bad = strdup(tok);
    size_t bl = strlen(bad);
    bad[bl - 2] = bad[bl - 2] == 'A' ? 'B' : 'A';
    CHECK(gw_auth_verify(secret, bad, &out) != 0, "tampered signature accepted");
    free(bad);
    free(tok);

    /* alg none, with a payload that would otherwise pass */
    char payload[160];
    snprintf(payload, sizeof payload, "{\"sub\":\"42\",\"name\":\"alice\",\"exp\":%ld}",
             (long) time(NULL) + 3600);
    char *h = s_b64url("{\"alg\":\"none\",\"typ\":\"JWT\"}");
    char *p = s_b64url(payload);
    char none[512];
    snprintf(none, sizeof none, "%s.%s.", h, p);
    CHECK(gw_auth_verify(secret, none, &out) != 0, "alg none accepted");
    free(h);

    /* HS512 signed with the right secret: still refused (HS256 only) */
    jwt_t *j = NULL;
    jwt_new(&j);
    jwt_add_grant(j, "sub", "42");
    jwt_add_grant_int(j, "exp", (long) time(NULL) + 3600);
    jwt_set_alg(j, JWT_ALG_HS512, (const unsigned char *) secret, (int) strlen(secret));
    char *t512 = jwt_encode_str(j);
    jwt_free(j);
    CHECK(t512 && gw_auth_verify(secret, t512, &out) != 0, "HS512 accepted");
    free(t512);

    /* expired, correctly signed */
    j = NULL;
    jwt_new(&j);
    jwt_add_grant(j, "sub", "42");
    jwt_add_grant_int(j, "exp", (long) time(NULL) - 10);
    jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *) secret, (int) strlen(secret));
    char *texp = jwt_encode_str(j);
    jwt_free(j);
    CHECK(texp && gw_auth_verify(secret, texp, &out) != 0, "expired token accepted");
    free(texp);

    /* no exp, and a non-numeric sub: refused */
    const char *grants[][2] = { { "sub", "42" }, { "sub", "bob" } };
    for (int k = 0; k < 2; k++) {
        j = NULL;
        jwt_new(&j);
        jwt_add_grant(j, grants[k][0], grants[k][1]);
        if (k == 1)
            jwt_add_grant_int(j, "exp", (long) time(NULL) + 3600);
        jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *) secret, (int) strlen(secret));
        char *t = jwt_encode_str(j);
        jwt_free(j);
        CHECK(t && gw_auth_verify(secret, t, &out) != 0, "bad grants case %d accepted", k);
        free(t);
    }
    free(p);

    static const char *garbage[] = { "", ".", "..", "a.b.c", "eyJ.eyJ.", "\xff\xfe.\x01.x",
                                     "Bearer", NULL };
    for (int k = 0; garbage[k]; k++)
        CHECK(gw_auth_verify(secret, garbage[k], &out) != 0, "garbage %d accepted", k);
    char *huge = malloc(10000);
    memset(huge, 'A', 9999);
    huge[9999] = '\0';
    CHECK(gw_auth_verify(secret, huge, &out) != 0, "huge token accepted");
    free(huge);
}

static void s_test_password(void)
{
    char hash[128];
    CHECK(gw_password_hash("correct horse", hash, sizeof hash) == 0, "hash");
    CHECK(strncmp(hash, "$argon2id$", 10) == 0, "not argon2id: %.12s", hash);
    CHECK(gw_password_verify(hash, "correct horse") == 0, "right password refused");
    CHECK(gw_password_verify(hash, "correct horsE") != 0, "wrong password accepted");
    CHECK(gw_password_verify("not a hash", "x") != 0, "garbage hash accepted");
    CHECK(gw_password_hash("x", hash, 10) != 0, "short buffer accepted");
}

static void s_test_json(void)
{
    json_t *v = gw_cell_json("vote_score", "-3", false);
    CHECK(json_is_integer(v) && json_integer_value(v) == -3, "int column");
    json_decref(v);
    v = gw_cell_json("is_playing", "t", false);
    CHECK(json_is_true(v), "bool column");
    json_decref(v);
    v = gw_cell_json("current_track_id", NULL, true);
    CHECK(json_is_null(v), "null");
    json_decref(v);
    v = gw_cell_json("size", "12abc", false);
    CHECK(json_is_string(v), "garbage int stays a string");
    json_decref(v);
    v = gw_cell_json("name", "\xff\xfe", false);
    CHECK(json_is_string(v), "bad UTF-8 becomes a string");
    json_decref(v);
    int64_t x;
    CHECK(gw_parse_i64("9223372036854775807", &x) == 0 && x == INT64_MAX, "max int64");
    CHECK(gw_parse_i64("9223372036854775808", &x) != 0, "overflow accepted");
    CHECK(gw_parse_i64("", &x) != 0 && gw_parse_i64("-", &x) != 0 && gw_parse_i64(" 1", &x) != 0,
          "junk accepted");

    /* A QueryReply with a secret column: left out of the JSON. */
    Quaver__V1__Value c0 = QUAVER__V1__VALUE__INIT, c1 = QUAVER__V1__VALUE__INIT;
    c0.text = "7";
    c1.text = "$argon2id$...";
    Quaver__V1__Value *cells[] = { &c0, &c1 };
    Quaver__V1__Row row = QUAVER__V1__ROW__INIT;
    row.n_cells = 2;
    row.cells = cells;
    Quaver__V1__Row *rows[] = { &row };
    char *cols[] = { "id", "password_hash" };
    Quaver__V1__QueryReply r = QUAVER__V1__QUERY_REPLY__INIT;
    r.n_columns = 2;
    r.columns = cols;
    r.n_rows = 1;
    r.rows = rows;
    json_t *o = gw_row_json(&r, 0);
    CHECK(o && json_integer_value(json_object_get(o, "id")) == 7 &&
          !json_object_get(o, "password_hash"), "row json");
    json_decref(o);
    CHECK(gw_row_json(&r, 1) == NULL, "row out of range");
    CHECK(gw_cell_i64(&r, 0, "id") == 7 && gw_cell(&r, 0, "nope") == NULL, "cells");
}

/* ---- cache: keys, ETags, If-None-Match, generations, stats JSON, the route policy ---- */
static void s_test_cache(void)
{
    char k[64];
    CHECK(gw_cache_key(GW_CK_ROOM, 12, k, sizeof k) == 0 && strcmp(k, "room:12") == 0, "%s", k);
    CHECK(gw_cache_key(GW_CK_QUEUE, 999999999999999999LL, k, sizeof k) == 0 &&
          strcmp(k, "queue:999999999999999999") == 0, "%s", k);
    CHECK(gw_cache_key(GW_CK_PARTICIPANTS, 5, k, 8) == -1, "key truncation not reported");

    /* sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad */
    char e[GW_ETAG_LEN], e2[GW_ETAG_LEN];
    gw_cache_etag("abc", 3, e);
    CHECK(strcmp(e, "\"ba7816bf8f01cfea\"") == 0, "etag %s", e);
    gw_cache_etag("abd", 3, e2);
    CHECK(strcmp(e, e2) != 0, "different bodies, same etag");
    gw_cache_etag("", 0, e2);
    CHECK(strcmp(e2, "\"e3b0c44298fc1c14\"") == 0, "empty-body etag %s", e2);

    static const struct { const char *h; bool want; } inm[] = {
        { "\"ba7816bf8f01cfea\"", true },  { "W/\"ba7816bf8f01cfea\"", true },
        { "*", true },                      { "\"x\", \"ba7816bf8f01cfea\"", true },
        { "\"x\" ,\t\"ba7816bf8f01cfea\" ", true },
        { "\"ba7816bf8f01cfeb\"", false }, { "ba7816bf8f01cfea", false },
        { "\"ba7816bf8f01cfea", false },    { "", false }, { ",,,", false },
        { "\"ba7816bf8f01cfea\"x", false },
    };
    for (size_t i = 0; i < sizeof inm / sizeof inm[0]; i++)
        CHECK(gw_cache_etag_listed(inm[i].h, e) == inm[i].want, "If-None-Match '%s'", inm[i].h);
    CHECK(!gw_cache_etag_listed(NULL, e), "NULL header");

    /* Invalidation bumps the key's generation (and only changes, never lowers it). */
    uint64_t g0 = gw_cache_generation(GW_NS_QUEUE, "queue:77");
    CHECK(gw_cache_generation(GW_NS_QUEUE, "queue:77") == g0, "generation moved by itself");
    uint64_t r0 = gw_cache_generation(GW_NS_ROOM, "room:77");
    gw_cache_remote_change(77, GW_INV_QUEUE);
    CHECK(gw_cache_generation(GW_NS_QUEUE, "queue:77") == g0 + 1, "queue:77 not bumped");
    /* (room:77 and queue:77 could share a slot; then the count moved with queue:77's.) */
    uint64_t r1 = gw_cache_generation(GW_NS_ROOM, "room:77");
    CHECK(r1 == r0 || r1 == r0 + 1, "room:77 moved by %llu", (unsigned long long) (r1 - r0));
    gw_cache_remote_change(77, GW_INV_ROOM | GW_INV_PARTICIPANTS | GW_INV_QUEUE);
    CHECK(gw_cache_generation(GW_NS_ROOM, "room:77") > r1 &&
          gw_cache_generation(GW_NS_ROOM, "participants:77") > 0 &&
          gw_cache_generation(GW_NS_QUEUE, "queue:77") > g0 + 1, "bump of three keys");

    /* Room events of another replica name the same changes as the mutations that send them. */
    CHECK(gw_cache_event_bits("participant_joined") == (GW_INV_ROOM | GW_INV_PARTICIPANTS) &&
          gw_cache_event_bits("participant_left") == (GW_INV_ROOM | GW_INV_PARTICIPANTS) &&
          gw_cache_event_bits("track_added") == GW_INV_QUEUE &&
          gw_cache_event_bits("vote_changed") == GW_INV_QUEUE &&
          gw_cache_event_bits("playback_changed") == (GW_INV_ROOM | GW_INV_QUEUE),
          "event bits");
    CHECK(gw_cache_event_bits("nope") == 0 && gw_cache_event_bits(NULL) == 0, "unknown event");

    /* Every cached route is a GET with an {id}, names a namespace and key kind the
     * invalidation map knows (so some mutation removes it), and requires a user. */
    int cached = 0;
    for (const gw_route_t *r = gw_routes; r->method; r++) {
        CHECK((r->cache_ns == NULL) == (r->cache_key == NULL), "route %s: half a policy",
              r->pattern);
        if (!r->cache_ns)
            continue;
        cached++;
        CHECK(strcmp(r->method, "GET") == 0 && strstr(r->pattern, "{id}") &&
              r->auth == GW_AUTH_USER, "route %s: not a cacheable GET", r->pattern);
        bool known = false;
        for (const gw_cache_inval_t *m = gw_cache_inval_map; m->bit; m++)
            known = known || (strcmp(m->ns, r->cache_ns) == 0 &&
                              strcmp(m->kind, r->cache_key) == 0);
        CHECK(known, "route %s: %s/%s is never invalidated", r->pattern, r->cache_ns,
              r->cache_key);
    }
    CHECK(cached == 3, "%d cached routes, want 3", cached);

    /* Stats: "ns.<ns>.<stat>" under namespaces, the rest under global; integers stay so. */
    Quaver__V1__Stat s1 = QUAVER__V1__STAT__INIT, s2 = QUAVER__V1__STAT__INIT,
                     s3 = QUAVER__V1__STAT__INIT, s4 = QUAVER__V1__STAT__INIT,
                     s5 = QUAVER__V1__STAT__INIT, s6 = QUAVER__V1__STAT__INIT;
    s1.name = "ns.room_state.hits";    s1.value = 3;
    s2.name = "ns.room_state.hit_rate"; s2.value = 0.75;
    s3.name = "ns.track_queue.entries"; s3.value = 1;
    s4.name = "entries";               s4.value = 4;
    s5.name = "ns.";                   s5.value = 1;     /* malformed: global */
    s6.name = "quaver_cache_hits_total{tier=\"local\"}"; s6.value = 2;
    Quaver__V1__Stat *stats[] = { &s1, &s2, &s3, &s4, &s5, &s6 };
    Quaver__V1__StatsReply rep = QUAVER__V1__STATS_REPLY__INIT;
    rep.service = "cache";
    rep.stats = stats;
    rep.n_stats = 6;
    json_t *doc = gw_cache_stats_json(&rep);
    char *txt = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    const char *want = "{\"global\":{\"entries\":4,\"ns.\":1,"
                       "\"quaver_cache_hits_total{tier=\\\"local\\\"}\":2},"
                       "\"namespaces\":{\"room_state\":{\"hit_rate\":0.75,\"hits\":3},"
                       "\"track_queue\":{\"entries\":1}}}";
    CHECK(txt && strcmp(txt, want) == 0, "stats json %s", txt ? txt : "(null)");
    free(txt);
    json_decref(doc);
    doc = gw_cache_stats_json(NULL);
    txt = doc ? json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    CHECK(txt && strcmp(txt, "{\"global\":{},\"namespaces\":{}}") == 0, "empty stats %s",
          txt ? txt : "(null)");
    free(txt);
    json_decref(doc);
}

/* gw_ws_selftest.c: the WebSocket hub's own selftest (0 or -1). */
int gw_ws_selftest(void);
static void s_test_ws(void)
{
    CHECK(gw_ws_selftest() == 0, "gw_ws_selftest failed");
}

/* ---- gzip ---- */
static void s_test_gzip(void)
{
    static const struct { const char *ae; bool want; } ae[] = {
        { NULL, false }, { "", false }, { "gzip", true }, { "GZip", true },
        { "gzip, deflate, br", true }, { "deflate, x-gzip", true }, { "br", false },
        { "gzip;q=0", false }, { "gzip; q=0.000", false }, { "gzip;q=0.5", true },
        { "*", true }, { "*;q=0", false }, { "gzip;q=0, *", false }, { "*, gzip;q=0", false },
        { "identity", false }, { "gzipx", false }, { "gzip;q=abc", false },
        { "gzip;q=2", false }, { ",,, ,gzip", true }, { "br;q=1, gzip ; q=0.1", true },
    };
    for (size_t i = 0; i < sizeof ae / sizeof ae[0]; i++)
        CHECK(gw_gzip_accepted(ae[i].ae) == ae[i].want, "Accept-Encoding '%s'",
              ae[i].ae ? ae[i].ae : "(none)");
    CHECK(gw_gzip_type("application/json"), "json");
    CHECK(gw_gzip_type("text/plain; version=0.0.4"), "text");
    CHECK(gw_gzip_type("Application/JSON; charset=utf-8"), "case");
    CHECK(!gw_gzip_type("audio/mpeg") && !gw_gzip_type("image/png") && !gw_gzip_type(NULL),
          "binary types");
    /* round trip through zlib's own gzip reader */
    char in[4000];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = "{\"id\":1,\"name\":\"track\"}"[i % 24];
    uint8_t *gz = NULL;
    size_t n = 0;
    CHECK(gw_gzip(in, sizeof in, 6, &gz, &n) == 0 && n > 18 && n < sizeof in / 4, "compress");
    CHECK(gz && gz[0] == 0x1f && gz[1] == 0x8b, "gzip magic");
    char back[sizeof in];
    z_stream z;
    memset(&z, 0, sizeof z);
    CHECK(inflateInit2(&z, 15 + 16) == Z_OK, "inflateInit2");
    z.next_in = gz;
    z.avail_in = (uInt) n;
    z.next_out = (Bytef *) back;
    z.avail_out = sizeof back;
    CHECK(inflate(&z, Z_FINISH) == Z_STREAM_END && z.total_out == sizeof in &&
          memcmp(back, in, sizeof in) == 0, "round trip");
    inflateEnd(&z);
    free(gz);
}

/* ---- rate limit (time injected: ms since an arbitrary epoch) ---- */
static void s_test_ratelimit(void)
{
    gw_ratelimit_t *rl = gw_ratelimit_new(3, 10, 2);   /* 3 per 10 s, 2 callers at most */
    CHECK(rl != NULL, "new");
    if (!rl)
        return;
    int64_t t0 = 1000000;                              /* the start of a window */
    for (int i = 0; i < 3; i++) {
        gw_rl_verdict_t v = gw_ratelimit_hit(rl, "a", t0 + i);
        CHECK(v.allowed && v.limit == 3 && v.remaining == 2 - i && v.reset_s == 10,
              "hit %d: allowed %d remaining %lld reset %lld", i, v.allowed,
              (long long) v.remaining, (long long) v.reset_s);
    }
    gw_rl_verdict_t v = gw_ratelimit_hit(rl, "a", t0 + 5000);
    CHECK(!v.allowed && !v.full && v.remaining == 0 && v.reset_s == 5, "4th refused, reset %lld",
          (long long) v.reset_s);
    CHECK(gw_ratelimit_hit(rl, "b", t0 + 5000).allowed, "another caller has its own budget");
    /* 2.5 s into the next window three quarters of the previous count still weigh: 2.25 + 1
     * > 3. The refusal says when enough has slid out: 0.25 / 3 of a window, rounded up. */
    v = gw_ratelimit_hit(rl, "a", t0 + 12500);
    CHECK(!v.allowed && v.reset_s == 1, "sliding: refused, reset %lld", (long long) v.reset_s);
    /* 4 s in: 3 * 0.6 = 1.8, + 1 <= 3 */
    v = gw_ratelimit_hit(rl, "a", t0 + 14000);
    CHECK(v.allowed && v.remaining == 0, "sliding: allowed, remaining %lld",
          (long long) v.remaining);
    /* two windows later nothing weighs */
    v = gw_ratelimit_hit(rl, "a", t0 + 30000);
    CHECK(v.allowed && v.remaining == 2, "fresh, remaining %lld", (long long) v.remaining);
    /* the table is full (a, b): a third caller is refused as "full", not counted */
    v = gw_ratelimit_hit(rl, "c", t0 + 30000);
    CHECK(!v.allowed && v.full && gw_ratelimit_callers(rl) == 2, "full");
    /* ten minutes on, the sweep drops both (idle for two windows) and c gets in */
    v = gw_ratelimit_hit(rl, "c", t0 + 30000 + 10 * 60 * 1000);
    CHECK(v.allowed && gw_ratelimit_callers(rl) == 1, "swept: %zu callers",
          gw_ratelimit_callers(rl));
    CHECK(gw_ratelimit_exempt("/livez") && gw_ratelimit_exempt("/api/metrics") &&
          !gw_ratelimit_exempt("/api/ping") && !gw_ratelimit_exempt("/api/healthz"), "exempt");
    gw_ratelimit_destroy(&rl);
    CHECK(rl == NULL, "destroy");
}

static const struct {
    const char *name;
    void (*fn)(void);
} s_tests[] = {
    { "routes", s_test_routes },       { "range", s_test_range },
    { "multipart", s_test_multipart }, { "request_id", s_test_request_id },
    { "jwt", s_test_jwt },             { "password", s_test_password },
    { "json", s_test_json },           { "ws", s_test_ws },
    { "cache", s_test_cache },         { "gzip", s_test_gzip },
    { "ratelimit", s_test_ratelimit },
    { NULL, NULL }
};

int main(int argc, char **argv)
{
    if (sodium_init() < 0)
        return 1;
    int ran = 0;
    for (int i = 0; s_tests[i].name; i++) {
        if (argc > 1 && strcmp(argv[1], s_tests[i].name) != 0)
            continue;
        int before = s_failures;
        s_tests[i].fn();
        ran++;
        printf("%s: %s\n", s_tests[i].name, s_failures == before ? "ok" : "FAILED");
    }
    if (ran == 0) {
        fprintf(stderr, "unknown test '%s'\n", argc > 1 ? argv[1] : "");
        return 2;
    }
    return s_failures ? 1 : 0;
}
