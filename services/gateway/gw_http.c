/* gw_http: the answering, body-reading and service-calling helpers the handlers share.
 * Guarantees: every response carries X-Request-ID, X-Response-Time and Content-Type; an error
 * body is always {"error":{"code","message","request_id"}}; a request body is never read past
 * its limit (Content-Length is checked before the first byte is read, and a chunked body is cut
 * at limit + 1 bytes); nothing here asserts on input. */
#include "gw_http.h"
#include "gw_gzip.h"
#include "gw_server.h"
#include "gw_routes.h"
#include "qv_clock.h"
#include "qv_log.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <strings.h>
#include <time.h>

bool gw_request_id_ok(const char *id)
{
    if (!id || !*id)
        return false;
    size_t n = 0;
    for (const char *p = id; *p; p++, n++) {
        if (n >= 64)
            return false;
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* ---- responses ------------------------------------------------------------------------ */

static const struct { int status; const char *code; } s_codes[] = {
    { 400, "bad_request" },           { 401, "unauthorized" },
    { 403, "forbidden" },             { 404, "not_found" },
    { 405, "method_not_allowed" },    { 408, "request_timeout" },
    { 409, "conflict" },              { 411, "length_required" },
    { 413, "payload_too_large" },     { 415, "unsupported_media_type" },
    { 416, "range_not_satisfiable" }, { 422, "unprocessable_entity" },
    { 429, "too_many_requests" },     { 500, "internal_error" },
    { 501, "not_implemented" },       { 502, "bad_gateway" },
    { 503, "service_unavailable" },   { 504, "gateway_timeout" },
    { 0, NULL }
};

const char *gw_status_code_name(int status)
{
    for (int i = 0; s_codes[i].code; i++)
        if (s_codes[i].status == status)
            return s_codes[i].code;
    return status >= 500 ? "internal_error" : "error";
}

int gw_send_headers(gw_req_t *req, int status, const char *content_type,
                    int64_t content_length, const char *extra)
{
    if (req->status != 0)
        return -1;      /* a second status line would corrupt the stream */
    req->status = status;
    struct mg_connection *c = req->conn;
    bool bodiless = status == 304 || status == 204;
    /* Without a length the body ends when the connection does, so it may not be kept. */
    if (content_length < 0 && !bodiless)
        mg_disable_connection_keep_alive(c);
    char rt[32], cl[48];
    snprintf(rt, sizeof rt, "%.3fms", (double) (qv_mono_us() - req->start_us) / 1000.0);
    if (req->sent_continue) {
        /* civetweb marks a connection "data sent" on any mg_write (our 100 Continue included)
         * and then refuses mg_response_header_start, so this response's head is written by
         * hand. Its keep-alive bookkeeping is then not ours to mirror: close after it. */
        mg_disable_connection_keep_alive(c);
        char date[64];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cl[0] = '\0';
        if (content_length >= 0 && !bodiless)
            snprintf(cl, sizeof cl, "Content-Length: %lld\r\n", (long long) content_length);
        int n = mg_printf(c, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nX-Request-ID: %s\r\n"
                          "X-Response-Time: %s\r\n%s%s%sDate: %s\r\nConnection: close\r\n\r\n",
                          status, mg_get_response_code_text(c, status),
                          content_type ? content_type : "application/json", req->request_id, rt,
                          cl, req->rl_headers, extra ? extra : "", date);
        return n > 0 ? 0 : -1;
    }
    if (mg_response_header_start(c, status) != 0)
        return -1;
    mg_response_header_add(c, "Content-Type",
                           content_type ? content_type : "application/json", -1);
    mg_response_header_add(c, "X-Request-ID", req->request_id, -1);
    mg_response_header_add(c, "X-Response-Time", rt, -1);
    if (content_length >= 0 && !bodiless) {
        snprintf(cl, sizeof cl, "%lld", (long long) content_length);
        mg_response_header_add(c, "Content-Length", cl, -1);
    }
    if (req->rl_headers[0])
        mg_response_header_add_lines(c, req->rl_headers);
    if (extra && *extra)
        mg_response_header_add_lines(c, extra);
    return mg_response_header_send(c) == 0 ? 0 : -1;
}

int gw_send_body(gw_req_t *req, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    int n = mg_write(req->conn, data, len);
    if (n <= 0 || (size_t) n != len)
        return -1;
    req->bytes_out += n;
    return 0;
}

/* Response compression (gw_gzip.h says when). When the response is of a compressible type
 * and size, *headers_p gets extra plus `Vary: Accept-Encoding` (caller frees); when the
 * request accepts gzip and it pays, *body_p / *len_p are swapped for the gzip form (in *gz_p,
 * caller frees), `Content-Encoding: gzip` is added and a strong ETag in extra is made weak.
 * 0, or -1 when out of memory (nothing sent). */
static int s_gzip(gw_req_t *req, int status, const char *content_type, const void **body_p,
                  size_t *len_p, const char *extra, uint8_t **gz_p, char **headers_p)
{
    const gw_cfg_t *cfg = req->srv->cfg;
    if (cfg->gzip_min_bytes <= 0 || *len_p < (size_t) cfg->gzip_min_bytes || status == 304 ||
        status == 204 || !gw_gzip_type(content_type ? content_type : "application/json"))
        return 0;
    size_t zlen = 0;
    bool use = gw_gzip_accepted(gw_header(req, "Accept-Encoding")) &&
               gw_gzip(*body_p, *len_p, (int) cfg->gzip_level, gz_p, &zlen) == 0 &&
               zlen < *len_p;
    const char *x = extra ? extra : "";
    size_t cap = strlen(x) + 96;
    char *h = malloc(cap);
    if (!h)
        return -1;
    /* "ETag: \"" -> "ETag: W/\"": at most one ETag, so at most two more bytes (in cap) */
    const char *et = use ? strstr(x, "ETag: \"") : NULL;
    if (et)
        snprintf(h, cap, "%.*sETag: W/%s", (int) (et - x), x, et + 6);
    else
        snprintf(h, cap, "%s", x);
    size_t n = strlen(h);
    snprintf(h + n, cap - n, "Vary: Accept-Encoding\r\n%s", use ? "Content-Encoding: gzip\r\n" : "");
    *headers_p = h;
    if (use) {
        qv_metric_t *in = qv_metrics_counter(req->srv->metrics, "quaver_http_gzip_bytes_total",
                                             "response bytes before and after gzip",
                                             "form=identity");
        qv_metric_t *out = qv_metrics_counter(req->srv->metrics, "quaver_http_gzip_bytes_total",
                                              "response bytes before and after gzip",
                                              "form=gzip");
        if (in)
            qv_metric_add(in, (double) *len_p);
        if (out)
            qv_metric_add(out, (double) zlen);
        *body_p = *gz_p;
        *len_p = zlen;
    } else {
        free(*gz_p);
        *gz_p = NULL;
    }
    return 0;
}

int gw_send(gw_req_t *req, int status, const char *content_type, const void *body,
            size_t len, const char *extra)
{
    if (req->capture && status == 200 && req->status == 0 &&
        (!content_type || strncmp(content_type, "application/json", 16) == 0)) {
        /* A cached route's answer: the wrapper sends it (gw_cache_run). One answer only. */
        if (req->captured)
            return -1;
        char *copy = malloc(len + 1);
        if (!copy)
            return -1;
        if (len)
            memcpy(copy, body, len);
        copy[len] = '\0';
        req->cap_body = copy;
        req->cap_len = len;
        req->captured = true;
        return 0;
    }
    uint8_t *gz = NULL;
    char *headers = NULL;
    int rc = -1;
    if (s_gzip(req, status, content_type, &body, &len, extra, &gz, &headers) != 0)
        goto out;
    if (gw_send_headers(req, status, content_type, (int64_t) len, headers ? headers : extra) != 0)
        goto out;
    rc = strcmp(req->ri->request_method, "HEAD") == 0 ? 0 : gw_send_body(req, body, len);
out:
    free(gz);
    free(headers);
    return rc;
}

int gw_send_json(gw_req_t *req, int status, json_t *doc)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return gw_send_error(req, 500, NULL, "could not build the response");
    int rc = gw_send(req, status, "application/json", text, strlen(text), NULL);
    free(text);
    return rc;
}

static int s_send_error_v(gw_req_t *req, int status, const char *code, const char *extra,
                          const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* Messages may quote input (a path, a service's text): keep them one printable line, and
     * valid UTF-8, or jansson would refuse to build the error document at all. */
    for (char *p = msg; *p; p++)
        if ((unsigned char) *p < 0x20 || *p == 0x7f)
            *p = ' ';
    json_t *probe = json_string(msg);
    if (!probe) {
        for (char *p = msg; *p; p++)
            if ((unsigned char) *p >= 0x80)
                *p = '?';
    }
    json_decref(probe);
    if (req->status != 0) {
        /* Headers are out (a stream broke midway): all we can do is say so in the log. */
        qv_log(QV_LOG_WARN, req->request_id, "error after response started: %d %s", status, msg);
        return status;
    }
    json_t *doc = json_pack("{s:{s:s,s:s,s:s}}", "error", "code",
                            code ? code : gw_status_code_name(status), "message", msg,
                            "request_id", req->request_id);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) {
        static const char oom[] = "{\"error\":{\"code\":\"internal_error\",\"message\":\"out of memory\"}}";
        gw_send(req, 500, "application/json", oom, sizeof oom - 1, NULL);
        return 500;
    }
    gw_send(req, status, "application/json", text, strlen(text), extra);
    free(text);
    if (status >= 500)
        qv_log(QV_LOG_WARN, req->request_id, "%s %s -> %d %s", req->ri->request_method,
               req->ri->local_uri ? req->ri->local_uri : "", status, msg);
    return status;
}

int gw_send_error(gw_req_t *req, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = s_send_error_v(req, status, code, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

int gw_send_error_h(gw_req_t *req, int status, const char *extra, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = s_send_error_v(req, status, NULL, extra, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- bodies --------------------------------------------------------------------------- */

int gw_read_body(gw_req_t *req, int64_t max, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    long long declared = req->ri->content_length;
    if (declared > max) {
        /* The body stays unread, so the connection cannot carry another request. */
        mg_disable_connection_keep_alive(req->conn);
        gw_send_error(req, 413, NULL, "request body is %lld bytes; the limit is %lld",
                      declared, (long long) max);
        return -1;
    }
    /* civetweb leaves "Expect: 100-continue" to the handler; without the interim answer a
     * client such as curl waits a second before it sends the body. Sent only once the size
     * is known to be acceptable, which is the point of the mechanism. */
    const char *expect = mg_get_header(req->conn, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && req->ri->http_version &&
        strcmp(req->ri->http_version, "1.1") == 0) {
        mg_printf(req->conn, "HTTP/1.1 100 Continue\r\n\r\n");
        req->sent_continue = true;
    }
    /* Known length: one allocation. Unknown (chunked): grow, never past max + 1. */
    size_t cap = declared >= 0 ? (size_t) declared + 1 : 16384;
    if (declared < 0 && (int64_t) cap > max + 1)
        cap = (size_t) max + 1;
    char *b = malloc(cap + 1);
    if (!b) {
        gw_send_error(req, 500, NULL, "out of memory reading the body");
        return -1;
    }
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            if ((int64_t) n > max)
                break;
            size_t ncap = cap * 2;
            if ((int64_t) ncap > max + 1)
                ncap = (size_t) max + 1;
            char *nb = realloc(b, ncap + 1);
            if (!nb) {
                free(b);
                gw_send_error(req, 500, NULL, "out of memory reading the body");
                return -1;
            }
            b = nb;
            cap = ncap;
        }
        int r = mg_read(req->conn, b + n, cap - n);
        if (r < 0) {
            free(b);
            mg_disable_connection_keep_alive(req->conn);
            gw_send_error(req, 400, NULL, "could not read the request body");
            return -1;
        }
        if (r == 0)
            break;
        n += (size_t) r;
    }
    if ((int64_t) n > max) {
        free(b);
        mg_disable_connection_keep_alive(req->conn);
        gw_send_error(req, 413, NULL, "request body exceeds the limit of %lld bytes",
                      (long long) max);
        return -1;
    }
    if (declared >= 0 && (long long) n != declared) {
        free(b);
        mg_disable_connection_keep_alive(req->conn);
        gw_send_error(req, 400, NULL, "request body ended after %zu of %lld bytes", n, declared);
        return -1;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}

/* True when no array/object in text nests deeper than max_depth. jansson's own limit (2048
 * levels) is far more than civetweb's 100 KB worker stacks (Debian builds civetweb with
 * USE_STACK_SIZE=102400) survive: "[[[[..." a few thousand deep crashes the parser's
 * recursion there. Our documents are flat, so anything deep is refused before parsing. */
bool gw_json_nesting_ok(const char *text, size_t len, int max_depth)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char ch = text[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
        }
        else if (ch == '"')
            in_string = true;
        else if (ch == '[' || ch == '{') {
            if (++depth > max_depth)
                return false;
        }
        else if (ch == ']' || ch == '}')
            depth--;
    }
    return true;
}

json_t *gw_read_json(gw_req_t *req)
{
    char *body;
    size_t len;
    if (gw_read_body(req, req->srv->cfg->max_body_bytes, &body, &len) != 0)
        return NULL;
    if (len == 0) {
        free(body);
        gw_send_error(req, 400, NULL, "request body is empty; a JSON object is expected");
        return NULL;
    }
    if (!gw_json_nesting_ok(body, len, GW_JSON_MAX_DEPTH)) {
        free(body);
        gw_send_error(req, 400, NULL, "invalid JSON: nested deeper than %d levels",
                      GW_JSON_MAX_DEPTH);
        return NULL;
    }
    json_error_t err;
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    free(body);
    if (!doc) {
        gw_send_error(req, 400, NULL, "invalid JSON: %s (line %d, column %d)", err.text,
                      err.line, err.column);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        gw_send_error(req, 400, NULL, "request body must be a JSON object");
        return NULL;
    }
    return doc;
}

int gw_json_string(gw_req_t *req, json_t *obj, const char *field, size_t minlen,
                   size_t maxlen, const char *charset, const char **out)
{
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) {
        gw_send_error(req, 400, NULL, "field '%s' is required", field);
        return -1;
    }
    if (!json_is_string(v)) {
        gw_send_error(req, 400, NULL, "field '%s' must be a string", field);
        return -1;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strlen(s) != n) {
        gw_send_error(req, 400, NULL, "field '%s' must not contain NUL characters", field);
        return -1;
    }
    if (n < minlen || n > maxlen) {
        gw_send_error(req, 400, NULL, "field '%s' must be %zu to %zu characters long", field,
                      minlen, maxlen);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        bool ok = charset ? (strchr(charset, c) != NULL) : (c >= 0x20 && c != 0x7f);
        if (!ok) {
            gw_send_error(req, 400, NULL, "field '%s' contains a character that is not allowed%s%s",
                          field, charset ? "; allowed: " : "", charset ? charset : "");
            return -1;
        }
    }
    *out = s;
    return 0;
}

/* ---- headers, query ------------------------------------------------------------------- */

const char *gw_header(gw_req_t *req, const char *name)
{
    return mg_get_header(req->conn, name);
}

int gw_query_param(gw_req_t *req, const char *name, char *buf, size_t len)
{
    const char *q = req->ri->query_string;
    if (!q || len == 0)
        return -1;
    return mg_get_var(q, strlen(q), name, buf, len) >= 0 ? 0 : -1;
}

/* ---- service calls -------------------------------------------------------------------- */

int gw_call(gw_req_t *req, const char *service, const char *method,
            const ProtobufCMessage *msg, int timeout_ms, qv_result_t *res)
{
    Quaver__V1__Caller caller = QUAVER__V1__CALLER__INIT;
    if (req->authed) {
        caller.user_id = req->who.user_id;
        caller.username = req->who.username;
        caller.admin = req->who.admin;
    }
    qv_rpc_call(req->srv->client_broker, service, method, msg, req->authed ? &caller : NULL,
                req->request_id, timeout_ms > 0 ? timeout_ms : req->deadline_ms, res);
    return res->status;
}

int gw_send_call_error(gw_req_t *req, const char *service, const qv_result_t *res,
                       const char *not_found_msg)
{
    int st = res->status;
    const char *text = res->error && *res->error ? res->error : NULL;
    if (st == 503)
        return gw_send_error(req, 503, NULL, "service unavailable: %s", service);
    if (st == 504)
        return gw_send_error(req, 504, NULL, "deadline passed waiting for %s", service);
    if (st == 404 && not_found_msg)
        return gw_send_error(req, 404, NULL, "%s", not_found_msg);
    if (st >= 400 && st < 500)
        return gw_send_error(req, st, NULL, "%s", text ? text : gw_status_code_name(st));
    /* Any other failure is the service's own: the gateway answers 502 (bad gateway), and the
     * detail stays in our log rather than in the client's hands. */
    qv_log(QV_LOG_WARN, req->request_id, "%s answered %d: %s", service, st, text ? text : "");
    return gw_send_error(req, 502, NULL, "%s failed", service);
}

void *gw_call_reply(gw_req_t *req, const char *service, const char *method,
                    const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *reply,
                    const char *not_found_msg)
{
    qv_result_t res;
    int st = gw_call(req, service, method, msg, 0, &res);
    if (st < 200 || st >= 300) {
        gw_send_call_error(req, service, &res, not_found_msg);
        qv_result_free(&res);
        return NULL;
    }
    ProtobufCMessage *r = protobuf_c_message_unpack(reply, NULL, res.len, res.payload);
    qv_result_free(&res);
    if (!r)
        gw_send_error(req, 502, NULL, "%s sent a reply that does not decode", service);
    return r;
}

Quaver__V1__QueryReply *gw_db(gw_req_t *req, const char *kind, const char *name,
                              int nparams, const char *const *params,
                              const char *not_found_msg)
{
    enum { MAXP = 12 };
    if (nparams < 0 || nparams > MAXP) {
        gw_send_error(req, 500, NULL, "too many parameters for %s", name);
        return NULL;
    }
    Quaver__V1__Value vals[MAXP];
    Quaver__V1__Value *ptrs[MAXP];
    for (int i = 0; i < nparams; i++) {
        quaver__v1__value__init(&vals[i]);
        if (params[i])
            vals[i].text = (char *) params[i];
        else
            vals[i].is_null = true;
        ptrs[i] = &vals[i];
    }
    Quaver__V1__QueryRequest q = QUAVER__V1__QUERY_REQUEST__INIT;
    q.name = (char *) name;
    q.n_params = (size_t) nparams;
    q.params = ptrs;
    return gw_call_reply(req, "dbopt", kind, &q.base, &quaver__v1__query_reply__descriptor,
                         not_found_msg);
}

/* ---- rows ----------------------------------------------------------------------------- */

/* Columns of the dbopt catalog that hold integers or booleans (docs/CONTRACTS.md). */
static const char *const s_int_cols[] = {
    "id", "room_id", "uploader_id", "user_id", "administrator_id", "size", "duration_ms",
    "bitrate", "vote_score", "participant_count", "current_track_id", "track_id", NULL
};
static const char *const s_bool_cols[] = {
    "is_playing", "is_admin", "joined", "left", "changed", "is_participant", NULL
};
static const char *const s_secret_cols[] = { "password_hash", NULL };

static bool s_in(const char *const *list, const char *s)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], s) == 0)
            return true;
    return false;
}

int gw_parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return -1;
    const char *p = s;
    if (*p == '-')
        p++;
    if (!*p)
        return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end)
        return -1;
    *out = (int64_t) v;
    return 0;
}

/* PostgreSQL's text form of a UTC timestamptz ("2026-11-22 19:12:59.294076+00", dbopt sets
 * TimeZone=UTC) into RFC 3339 ("2026-11-22T19:12:59.294076Z"), which every JSON client's date
 * parser reads. Anything else is left alone. */
static json_t *s_timestamp_json(const char *text)
{
    size_t n = strlen(text);
    if (n < 22 || n > 40 || text[10] != ' ' || strcmp(text + n - 3, "+00") != 0)
        return NULL;
    char buf[48];
    memcpy(buf, text, n - 3);
    buf[10] = 'T';
    buf[n - 3] = 'Z';
    buf[n - 2] = '\0';
    return json_string(buf);
}

json_t *gw_cell_json(const char *col, const char *text, bool is_null)
{
    if (is_null || !text)
        return json_null();
    if (s_in(s_int_cols, col)) {
        int64_t v;
        if (gw_parse_i64(text, &v) == 0)
            return json_integer((json_int_t) v);
    }
    if (s_in(s_bool_cols, col)) {
        if (strcmp(text, "t") == 0 || strcmp(text, "true") == 0)
            return json_true();
        if (strcmp(text, "f") == 0 || strcmp(text, "false") == 0)
            return json_false();
    }
    size_t cl = strlen(col);
    if (cl > 3 && strcmp(col + cl - 3, "_at") == 0) {
        json_t *t = s_timestamp_json(text);
        if (t)
            return t;
    }
    json_t *s = json_string(text);
    /* Not UTF-8 (json_string refuses it): a placeholder beats a crash or a broken document. */
    return s ? s : json_string("");
}

json_t *gw_row_json(const Quaver__V1__QueryReply *r, size_t i)
{
    if (!r || i >= r->n_rows || !r->rows[i])
        return NULL;
    const Quaver__V1__Row *row = r->rows[i];
    json_t *o = json_object();
    for (size_t c = 0; c < r->n_columns && c < row->n_cells; c++) {
        const char *col = r->columns[c];
        if (!col || s_in(s_secret_cols, col))
            continue;
        const Quaver__V1__Value *v = row->cells[c];
        json_object_set_new(o, col, gw_cell_json(col, v ? v->text : NULL, !v || v->is_null));
    }
    return o;
}

const char *gw_cell(const Quaver__V1__QueryReply *r, size_t i, const char *col)
{
    if (!r || i >= r->n_rows || !r->rows[i])
        return NULL;
    const Quaver__V1__Row *row = r->rows[i];
    for (size_t c = 0; c < r->n_columns && c < row->n_cells; c++)
        if (r->columns[c] && strcmp(r->columns[c], col) == 0) {
            const Quaver__V1__Value *v = row->cells[c];
            return (v && !v->is_null) ? v->text : NULL;
        }
    return NULL;
}

int64_t gw_cell_i64(const Quaver__V1__QueryReply *r, size_t i, const char *col)
{
    int64_t v = 0;
    if (gw_parse_i64(gw_cell(r, i, col), &v) != 0)
        return 0;
    return v;
}

bool gw_cell_bool(const Quaver__V1__QueryReply *r, size_t i, const char *col)
{
    const char *s = gw_cell(r, i, col);
    return s && (strcmp(s, "t") == 0 || strcmp(s, "true") == 0);
}
