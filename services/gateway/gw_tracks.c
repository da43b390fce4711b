/* gw_tracks: uploading tracks into a room's queue, reading the queue, and voting.
 * Guarantees: only participants upload or vote (403, or 404 for a room that does not exist);
 * an upload's size is refused from Content-Length before any byte is read (413); the audio's
 * type is decided by the stream service from the content, not by the name or the header we
 * were sent; a track row is created only after the file is durably stored; the queue is
 * returned in dbopt's order (vote_score DESC, created_at ASC); a vote event goes out only when
 * the vote changed something; the room's cached queue is invalidated after an upload or a vote
 * committed and before the response goes out. */
#include "gw_routes.h"
#include "gw_server.h"
#include "gw_multipart.h"
#include "gw_cache.h"
#include "qv_log.h"
#include "quaver/v1/stream.pb-c.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A display name we can store and put in JSON: printable, valid UTF-8, <= 255 bytes. */
static void s_clean_filename(const char *in, char *out, size_t outlen)
{
    size_t n = 0;
    for (const char *p = in ? in : ""; *p && n + 1 < outlen && n < 255; p++) {
        unsigned char c = (unsigned char) *p;
        if (c < 0x20 || c == 0x7f)
            continue;
        out[n++] = (char) c;
    }
    out[n] = '\0';
    json_t *probe = json_string(out);      /* refuses invalid UTF-8 (or a cut sequence) */
    if (!probe || n == 0)
        snprintf(out, outlen, "upload");
    json_decref(probe);
}

int gw_h_track_upload(gw_req_t *req)
{
    int64_t room = req->ids[0];
    const char *ct = gw_header(req, "Content-Type");
    bool multipart = ct && strncasecmp(ct, "multipart/form-data", 19) == 0;
    bool raw = ct && strncasecmp(ct, "audio/", 6) == 0;
    if (!multipart && !raw) {
        /* Checked before reading: no reason to take in 50 MB we will refuse. */
        mg_disable_connection_keep_alive(req->conn);
        return gw_send_error(req, 415, NULL,
                             "send the file as the body with Content-Type audio/*, or as "
                             "multipart/form-data with one file part");
    }
    if (gw_require_participant(req, room) != 0) {
        mg_disable_connection_keep_alive(req->conn);
        return req->status;
    }
    char *body;
    size_t blen;
    if (gw_read_body(req, req->srv->cfg->upload_max_bytes, &body, &blen) != 0)
        return req->status;

    const char *data = body;
    size_t dlen = blen;
    char filename[256], mime[128];
    if (multipart) {
        gw_part_t part;
        char err[160];
        if (gw_multipart_file(ct, body, blen, &part, err, sizeof err) != 0) {
            gw_send_error(req, 400, NULL, "%s", err);
            goto out;
        }
        data = part.data;
        dlen = part.len;
        s_clean_filename(part.filename, filename, sizeof filename);
        snprintf(mime, sizeof mime, "%s", part.content_type);
    } else {
        char q[256];
        const char *name = gw_query_param(req, "filename", q, sizeof q) == 0 ? q
                         : gw_header(req, "X-Filename");
        s_clean_filename(name, filename, sizeof filename);
        snprintf(mime, sizeof mime, "%s", ct);
    }
    if (dlen == 0) {
        gw_send_error(req, 400, NULL, "the uploaded file is empty");
        goto out;
    }

    Quaver__V1__StreamPutRequest put = QUAVER__V1__STREAM_PUT_REQUEST__INIT;
    put.data.data = (uint8_t *) data;
    put.data.len = dlen;
    put.filename = filename;
    put.content_type = mime;
    Quaver__V1__AudioInfo *info = gw_call_reply(req, "stream", "Put", &put.base,
                                                &quaver__v1__audio_info__descriptor, NULL);
    if (!info)
        goto out;
    if (!info->sha256 || strlen(info->sha256) != 64) {
        quaver__v1__audio_info__free_unpacked(info, NULL);
        gw_send_error(req, 502, NULL, "stream sent a reply that does not decode");
        goto out;
    }
    char rid[24], uid[24], size[24], dur[24], br[24];
    snprintf(rid, sizeof rid, "%lld", (long long) room);
    snprintf(uid, sizeof uid, "%lld", (long long) req->who.user_id);
    snprintf(size, sizeof size, "%lld", (long long) info->size);
    snprintf(dur, sizeof dur, "%lld", (long long) info->duration_ms);
    snprintf(br, sizeof br, "%d", info->bitrate);
    const char *mt = info->mime_type && *info->mime_type ? info->mime_type
                                                         : "application/octet-stream";
    const char *p[] = { rid, uid, info->sha256, filename, mt, size, dur, br };
    Quaver__V1__QueryReply *r = gw_db(req, "Exec", "track_create", 8, p, "room not found");
    if (r) {
        json_t *t = json_object();
        json_object_set_new(t, "id", json_integer(gw_cell_i64(r, 0, "id")));
        json_object_set_new(t, "room_id", json_integer(room));
        json_object_set_new(t, "uploader_id", json_integer(req->who.user_id));
        json_object_set_new(t, "filename", json_string(filename));
        json_object_set_new(t, "mime_type", json_string(mt));
        json_object_set_new(t, "size", json_integer(info->size));
        json_object_set_new(t, "duration_ms", json_integer(info->duration_ms));
        json_object_set_new(t, "bitrate", json_integer(info->bitrate));
        json_object_set_new(t, "vote_score", json_integer(0));
        const char *ca = gw_cell(r, 0, "created_at");
        json_object_set_new(t, "created_at", gw_cell_json("created_at", ca, !ca));
        quaver__v1__query_reply__free_unpacked(r, NULL);
        /* The room's own answer has no track counts: only the queue changed. */
        gw_cache_room_changed(req, room, GW_INV_QUEUE);
        json_t *data_ev = json_pack("{s:O,s:s}", "track", t, "uploader", req->who.username);
        gw_send_json(req, 201, t);
        if (data_ev) {
            gw_ws_room_event(req->srv->ws, room, "track_added", data_ev);
            json_decref(data_ev);
        }
        qv_log(QV_LOG_INFO, req->request_id, "track %s (%lld bytes) added to room %lld",
               info->sha256, (long long) info->size, (long long) room);
    }
    quaver__v1__audio_info__free_unpacked(info, NULL);
out:
    free(body);
    return req->status;
}

int gw_h_track_queue(gw_req_t *req)
{
    int64_t room = req->ids[0];
    char rid[24];
    snprintf(rid, sizeof rid, "%lld", (long long) room);
    const char *p[] = { rid };
    Quaver__V1__QueryReply *r = gw_db(req, "Query", "track_queue", 1, p, "room not found");
    if (!r)
        return req->status;
    if (r->n_rows == 0) {
        /* Empty queue or no such room: only the first is a 200. */
        Quaver__V1__QueryReply *room_r = gw_db(req, "Query", "room_get", 1, p, "room not found");
        if (!room_r) {
            quaver__v1__query_reply__free_unpacked(r, NULL);
            return req->status;
        }
        size_t n = room_r->n_rows;
        quaver__v1__query_reply__free_unpacked(room_r, NULL);
        if (n == 0) {
            quaver__v1__query_reply__free_unpacked(r, NULL);
            return gw_send_error(req, 404, NULL, "room %lld not found", (long long) room);
        }
    }
    json_t *list = json_array();
    for (size_t i = 0; i < r->n_rows; i++)
        json_array_append_new(list, gw_row_json(r, i));
    quaver__v1__query_reply__free_unpacked(r, NULL);
    gw_send_json(req, 200, json_pack("{s:I,s:o}", "room_id", (json_int_t) room, "tracks", list));
    return req->status;
}

static int s_vote(gw_req_t *req, bool add)
{
    int64_t track = req->ids[0];
    char tid[24], uid[24];
    snprintf(tid, sizeof tid, "%lld", (long long) track);
    snprintf(uid, sizeof uid, "%lld", (long long) req->who.user_id);
    const char *p1[] = { tid };
    Quaver__V1__QueryReply *t = gw_db(req, "Query", "track_get", 1, p1, "track not found");
    if (!t)
        return req->status;
    if (t->n_rows == 0) {
        quaver__v1__query_reply__free_unpacked(t, NULL);
        return gw_send_error(req, 404, NULL, "track %lld not found", (long long) track);
    }
    int64_t room = gw_cell_i64(t, 0, "room_id");
    quaver__v1__query_reply__free_unpacked(t, NULL);
    if (gw_require_participant(req, room) != 0)
        return req->status;
    const char *p2[] = { tid, uid };
    Quaver__V1__QueryReply *r = gw_db(req, "Exec", add ? "vote_add" : "vote_remove", 2, p2,
                                      "track not found");
    if (!r)
        return req->status;
    int64_t score = gw_cell_i64(r, 0, "vote_score");
    bool changed = gw_cell_bool(r, 0, "changed");
    quaver__v1__query_reply__free_unpacked(r, NULL);
    /* A vote invalidates its room's queue (scores and order). Also when this vote changed
     * nothing: one Delete is cheap, and it repairs an entry an earlier failed Delete left. */
    gw_cache_room_changed(req, room, GW_INV_QUEUE);
    gw_send_json(req, 200, json_pack("{s:I,s:I,s:b}", "track_id", (json_int_t) track,
                                     "vote_score", (json_int_t) score, "voted", add));
    if (changed) {
        json_t *data = json_pack("{s:I,s:I,s:I,s:b}", "track_id", (json_int_t) track,
                                 "vote_score", (json_int_t) score, "user_id",
                                 (json_int_t) req->who.user_id, "voted", add);
        if (data) {
            gw_ws_room_event(req->srv->ws, room, "vote_changed", data);
            json_decref(data);
        }
    }
    return req->status;
}

int gw_h_vote_add(gw_req_t *req)
{
    return s_vote(req, true);
}

int gw_h_vote_remove(gw_req_t *req)
{
    return s_vote(req, false);
}
