/* gw_http: one HTTP request as the handlers see it, and the helpers every handler uses to
 * answer. Guarantees: every response that goes through gw_send_* carries X-Request-ID,
 * X-Response-Time and Content-Type; errors are {"error":{"code","message","request_id"}};
 * a body is never read past its limit; JSON field errors name the field.
 * A gw_req_t lives on the civetweb worker thread's stack for one request. */
#ifndef GW_HTTP_H
#define GW_HTTP_H
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include "civetweb.h"
#include "qv_rpc.h"
#include "gw_auth.h"
#include "quaver/v1/dbopt.pb-c.h"

struct gw_server_t;
struct gw_route_t;

#define GW_MAX_PATH_IDS 4

typedef struct gw_req_t {
    struct mg_connection        *conn;
    const struct mg_request_info *ri;
    struct gw_server_t          *srv;
    const struct gw_route_t     *route;
    char        request_id[72];
    int64_t     start_us;            /* monotonic */
    int64_t     ids[GW_MAX_PATH_IDS];/* the {id} segments of the path, in order */
    int         nids;
    bool        authed;
    gw_identity_t who;
    int         deadline_ms;         /* the route's deadline for each service call */
    int         status;              /* 0 until a response was started */
    int64_t     bytes_out;
    bool        sent_continue;       /* "100 Continue" went out: civetweb's header API is closed */
    char        rl_headers[128];     /* RateLimit-* header lines for this response, or "" */
    /* Response capture for cached routes (gw_cache.c): while `capture` is set, a 200 JSON
     * response given to gw_send is kept here (heap, owned by the request) instead of being
     * written, so the wrapper can store it in the cache and answer with X-Cache and ETag.
     * Every other status is written at once as usual. */
    bool        capture;
    bool        captured;
    char       *cap_body;
    size_t      cap_len;
} gw_req_t;

/* ---- request ids ---- */
/* true when id is 1..64 chars of [A-Za-z0-9._-]: what we are willing to echo. */
bool gw_request_id_ok(const char *id);

/* ---- responses ---- */
/* Starts a response: status line and the common headers, plus extra header lines
 * ("Name: value\r\n"... , may be NULL). content_length < 0 sends none (and the connection
 * will close after the body). Returns 0 or -1 when the connection is gone. */
int gw_send_headers(gw_req_t *req, int status, const char *content_type,
                    int64_t content_length, const char *extra);
/* Writes body bytes after gw_send_headers. 0 or -1. */
int gw_send_body(gw_req_t *req, const void *data, size_t len);
/* The whole response in one go; body may be NULL when len == 0. */
int gw_send(gw_req_t *req, int status, const char *content_type, const void *body,
            size_t len, const char *extra);
/* Serialises and sends a JSON document; steals `doc` (json_decref). */
int gw_send_json(gw_req_t *req, int status, json_t *doc);
/* The JSON error body; code defaults to the status's name when NULL. Returns status. */
int gw_send_error(gw_req_t *req, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Same with extra header lines (e.g. "Allow: GET\r\n"). */
int gw_send_error_h(gw_req_t *req, int status, const char *extra, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
const char *gw_status_code_name(int status);

/* ---- request bodies ---- */
/* Reads the body into a heap buffer (NUL-terminated; caller frees *buf), refusing with 413
 * from Content-Length before reading anything when it exceeds max, and stopping a chunked
 * body at max + 1 bytes. On failure the error response has been sent and -1 is returned. */
int gw_read_body(gw_req_t *req, int64_t max, char **buf, size_t *len);
/* Reads and parses a JSON object body (bounded by max_body_bytes). Caller json_decref's.
 * NULL when an error response (400/413) was sent. */
json_t *gw_read_json(gw_req_t *req);
/* True when no array/object in text nests deeper than max_depth (see gw_http.c for why). */
#define GW_JSON_MAX_DEPTH 32
bool gw_json_nesting_ok(const char *text, size_t len, int max_depth);
/* Field getters: 0 with *out borrowed from obj, or -1 after sending a 400 naming the field.
 * Lengths are in bytes; charset NULL = any printable. */
int gw_json_string(gw_req_t *req, json_t *obj, const char *field, size_t minlen,
                   size_t maxlen, const char *charset, const char **out);

/* ---- headers and query ---- */
const char *gw_header(gw_req_t *req, const char *name);
/* Copies query parameter `name` (URL-decoded) into buf; 0 when present. */
int gw_query_param(gw_req_t *req, const char *name, char *buf, size_t len);

/* ---- service calls ---- */
/* Calls service.method with the caller's identity and request id, bounded by the route's
 * deadline (or timeout_ms when > 0). Returns the service status. res is always filled; caller
 * frees it with qv_result_free. */
int gw_call(gw_req_t *req, const char *service, const char *method,
            const ProtobufCMessage *msg, int timeout_ms, qv_result_t *res);
/* Turns a failed call into the HTTP error (503 "service unavailable", 504, 4xx with the
 * service's message, or not_found_msg for 404 when given). Returns the status sent. */
int gw_send_call_error(gw_req_t *req, const char *service, const qv_result_t *res,
                       const char *not_found_msg);
/* gw_call and the unpacking of its reply in one: service.method with the route's deadline,
 * the reply unpacked as a `reply` message. Returns it (caller frees with the type's
 * __free_unpacked), or NULL after sending the error response: the failed call's as
 * gw_send_call_error gives it (not_found_msg likewise), 502 for a reply that does not decode. */
void *gw_call_reply(gw_req_t *req, const char *service, const char *method,
                    const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *reply,
                    const char *not_found_msg);

/* Runs a dbopt catalog statement (kind "Query" or "Exec") with text params (NULL = SQL NULL).
 * Returns the unpacked reply (caller frees with quaver__v1__query_reply__free_unpacked), or
 * NULL after sending the error response (not_found_msg as for gw_send_call_error). */
Quaver__V1__QueryReply *gw_db(gw_req_t *req, const char *kind, const char *name,
                              int nparams, const char *const *params,
                              const char *not_found_msg);

/* Is the caller an administrator? Read from users.is_admin in PostgreSQL at each request, not
 * from the token's `adm` claim, so a revoked administrator loses the right at once. 1 yes (and
 * req->who.admin is set, for the services' own QV_ADMIN checks), 0 no, -1 when the check itself
 * failed (the error has been sent). */
int gw_is_admin(gw_req_t *req);
/* 0 when the caller is an administrator; otherwise the error (403, or the dbopt failure) has
 * been sent and keep-alive is off (the caller leaves the body unread). */
int gw_require_admin(gw_req_t *req);

/* ---- rows as JSON ---- */
/* Row i of a QueryReply as an object: columns become keys; columns known to be integers
 * become JSON integers, 't'/'f' booleans become true/false, SQL NULL becomes null, and
 * secrets (password_hash) are left out. NULL when i is out of range. */
json_t *gw_row_json(const Quaver__V1__QueryReply *r, size_t i);
/* The cell of row i named col, or NULL (absent or SQL NULL). Borrowed from r. */
const char *gw_cell(const Quaver__V1__QueryReply *r, size_t i, const char *col);
/* Parses a decimal int64 strictly (whole string). 0 or -1. */
int gw_parse_i64(const char *s, int64_t *out);
/* A cell as int64 (0 when NULL/absent/garbage) and as bool ("t"). */
int64_t gw_cell_i64(const Quaver__V1__QueryReply *r, size_t i, const char *col);
bool gw_cell_bool(const Quaver__V1__QueryReply *r, size_t i, const char *col);
/* Converts one cell text by column name as gw_row_json does. New reference. */
json_t *gw_cell_json(const char *col, const char *text, bool is_null);
#endif
