/* gw_stream: GET /api/v1/tracks/{id}/stream, the audio bytes of a track.
 * Guarantees: the file is read from the stream service in chunks of at most GW_READ_CHUNK
 * bytes, so one request never holds more than one chunk in memory; the headers promise exactly
 * the bytes that follow (Content-Length), and when a chunk cannot be read midway the connection
 * is closed, so a client never mistakes a short body for a whole one; ETag is the content's
 * SHA-256 (strong: content-addressed files never change under a name).
 * Range decisions are in gw_range.h (malformed -> ignored -> 200; several -> 200). If-Range
 * with anything but our current ETag also gives 200 with the whole file, as RFC 7233 asks.
 * Auth: a valid token is required, from the Authorization header or ?token= (an <audio>
 * element cannot send headers); any logged-in user may stream a track by id. */
#include "gw_routes.h"
#include "gw_server.h"
#include "gw_range.h"
#include "gw_cache.h"
#include "qv_log.h"
#include "quaver/v1/stream.pb-c.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define GW_READ_CHUNK (1024 * 1024)

static void s_http_date(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t) (ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* One Read call; NULL after the error response (or, once streaming, the log line). */
static Quaver__V1__StreamReadReply *s_read(gw_req_t *req, const char *sha, int64_t off,
                                           int64_t len)
{
    Quaver__V1__StreamReadRequest rr = QUAVER__V1__STREAM_READ_REQUEST__INIT;
    rr.sha256 = (char *) sha;
    rr.offset = off;
    rr.length = len;
    return gw_call_reply(req, "stream", "Read", &rr.base,
                         &quaver__v1__stream_read_reply__descriptor, "audio file not found");
}

int gw_h_stream(gw_req_t *req)
{
    int64_t track = req->ids[0];
    char tid[24];
    snprintf(tid, sizeof tid, "%lld", (long long) track);
    const char *p[] = { tid };
    Quaver__V1__QueryReply *t = gw_db(req, "Query", "track_get", 1, p, "track not found");
    if (!t)
        return req->status;
    if (t->n_rows == 0) {
        quaver__v1__query_reply__free_unpacked(t, NULL);
        return gw_send_error(req, 404, NULL, "track %lld not found", (long long) track);
    }
    char sha[65], mime[128];
    const char *s = gw_cell(t, 0, "sha256");
    const char *m = gw_cell(t, 0, "mime_type");
    snprintf(sha, sizeof sha, "%s", s ? s : "");
    snprintf(mime, sizeof mime, "%s", m && *m ? m : "application/octet-stream");
    int64_t size = gw_cell_i64(t, 0, "size");
    quaver__v1__query_reply__free_unpacked(t, NULL);
    if (strlen(sha) != 64 || size < 0)
        return gw_send_error(req, 502, NULL, "track %lld has no stored file", (long long) track);

    char etag[70];
    snprintf(etag, sizeof etag, "\"%s\"", sha);
    const char *cache = "private, max-age=86400";
    char extra[512];

    const char *inm = gw_header(req, "If-None-Match");
    if (inm && gw_cache_etag_listed(inm, etag)) {
        snprintf(extra, sizeof extra, "ETag: %s\r\nCache-Control: %s\r\nAccept-Ranges: bytes\r\n",
                 etag, cache);
        gw_send_headers(req, 304, mime, -1, extra);
        return req->status;
    }

    int64_t first = 0, last = size - 1;
    gw_range_t rk = GW_RANGE_NONE;
    const char *range = gw_header(req, "Range");
    const char *if_range = gw_header(req, "If-Range");
    if (range && (!if_range || strcmp(if_range, etag) == 0))
        rk = gw_range_parse(range, size, &first, &last);
    if (rk == GW_RANGE_UNSAT) {
        snprintf(extra, sizeof extra, "Content-Range: bytes */%lld\r\nAccept-Ranges: bytes\r\n",
                 (long long) size);
        return gw_send_error_h(req, 416, extra, "range not satisfiable for %lld bytes",
                               (long long) size);
    }
    if (rk != GW_RANGE_OK) {
        first = 0;
        last = size - 1;
    }
    int status = rk == GW_RANGE_OK ? 206 : 200;
    int64_t total = size > 0 ? last - first + 1 : 0;
    bool head = strcmp(req->ri->request_method, "HEAD") == 0;

    /* The first chunk comes before the headers: its AudioInfo gives Last-Modified, and an
     * error (file gone from disk) can still become a proper error response. */
    int64_t want = total < GW_READ_CHUNK ? total : GW_READ_CHUNK;
    Quaver__V1__StreamReadReply *r = NULL;
    char lm[64] = "";
    if (total > 0 && !head) {
        r = s_read(req, sha, first, want);
        if (!r)
            return req->status;
        if (r->info && r->info->mtime_ms > 0)
            s_http_date(r->info->mtime_ms, lm, sizeof lm);
    }
    int n = snprintf(extra, sizeof extra, "Accept-Ranges: bytes\r\nETag: %s\r\nCache-Control: %s\r\n",
                     etag, cache);
    if (*lm)
        n += snprintf(extra + n, sizeof extra - (size_t) n, "Last-Modified: %s\r\n", lm);
    if (status == 206)
        snprintf(extra + n, sizeof extra - (size_t) n, "Content-Range: bytes %lld-%lld/%lld\r\n",
                 (long long) first, (long long) last, (long long) size);
    if (gw_send_headers(req, status, mime, total, extra) != 0) {
        if (r)
            quaver__v1__stream_read_reply__free_unpacked(r, NULL);
        return req->status;
    }
    int64_t off = first, left = total;
    while (left > 0 && r) {
        size_t got = r->data.len;
        if ((int64_t) got > left)
            got = (size_t) left;
        if (got == 0 || gw_send_body(req, r->data.data, got) != 0) {
            quaver__v1__stream_read_reply__free_unpacked(r, NULL);
            r = NULL;
            break;
        }
        quaver__v1__stream_read_reply__free_unpacked(r, NULL);
        r = NULL;
        off += (int64_t) got;
        left -= (int64_t) got;
        if (left > 0)
            r = s_read(req, sha, off, left < GW_READ_CHUNK ? left : GW_READ_CHUNK);
    }
    if (r)
        quaver__v1__stream_read_reply__free_unpacked(r, NULL);
    if (left > 0 && !head) {
        /* We promised `total` bytes and cannot deliver: closing is the only honest signal. */
        mg_disable_connection_keep_alive(req->conn);
        qv_log(QV_LOG_WARN, req->request_id, "stream of track %lld stopped with %lld bytes unsent",
               (long long) track, (long long) left);
    }
    return req->status;
}
