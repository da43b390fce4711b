/* gw_rooms: rooms, their participants and their playback.
 * Guarantees: every change goes through one dbopt catalog statement (so it commits or not as
 * a whole), and its room event is sent only after that statement answered success, and only
 * when something changed (joining twice announces one join). Administrator-only actions are
 * checked against the room's administrator_id as PostgreSQL has it, not against the token.
 * Cached answers a change makes old are removed after the change committed and before the
 * response goes out (gw_cache_room_changed), so the caller's next read is fresh. */
#include "gw_routes.h"
#include "gw_server.h"
#include "gw_cache.h"
#include <stdio.h>
#include <string.h>

static void s_id_text(int64_t v, char *buf, size_t len)
{
    snprintf(buf, len, "%lld", (long long) v);
}

/* The room object clients see, from a room_get row. */
static json_t *s_room_json(const Quaver__V1__QueryReply *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", gw_cell_json("id", gw_cell(r, 0, "id"), !gw_cell(r, 0, "id")));
    json_object_set_new(o, "name", gw_cell_json("name", gw_cell(r, 0, "name"), false));
    json_t *adm = json_object();
    const char *aid = gw_cell(r, 0, "administrator_id");
    json_object_set_new(adm, "id", gw_cell_json("id", aid, aid == NULL));
    const char *aname = gw_cell(r, 0, "administrator");
    json_object_set_new(adm, "username", gw_cell_json("username", aname, aname == NULL));
    json_object_set_new(o, "administrator", adm);
    const char *cols[] = { "participant_count", "current_track_id", "is_playing", "created_at" };
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        const char *v = gw_cell(r, 0, cols[i]);
        json_object_set_new(o, cols[i], gw_cell_json(cols[i], v, v == NULL));
    }
    return o;
}

/* room_get for room_id; NULL after a 404/5xx was sent. */
static Quaver__V1__QueryReply *s_room_get(gw_req_t *req, int64_t room_id)
{
    char rid[24];
    s_id_text(room_id, rid, sizeof rid);
    const char *p[] = { rid };
    Quaver__V1__QueryReply *r = gw_db(req, "Query", "room_get", 1, p, "room not found");
    if (r && r->n_rows == 0) {
        quaver__v1__query_reply__free_unpacked(r, NULL);
        gw_send_error(req, 404, NULL, "room %lld not found", (long long) room_id);
        return NULL;
    }
    return r;
}

int gw_require_participant(gw_req_t *req, int64_t room_id)
{
    char rid[24], uid[24];
    s_id_text(room_id, rid, sizeof rid);
    s_id_text(req->who.user_id, uid, sizeof uid);
    const char *p[] = { rid, uid };
    Quaver__V1__QueryReply *r = gw_db(req, "Query", "room_is_participant", 2, p, "room not found");
    if (!r)
        return -1;
    bool yes = gw_cell_bool(r, 0, "is_participant");
    quaver__v1__query_reply__free_unpacked(r, NULL);
    if (yes)
        return 0;
    /* Not a participant: say 404 when the room does not exist at all, 403 otherwise. */
    Quaver__V1__QueryReply *room = s_room_get(req, room_id);
    if (!room)
        return -1;
    quaver__v1__query_reply__free_unpacked(room, NULL);
    gw_send_error(req, 403, NULL, "only participants of room %lld may do this",
                  (long long) room_id);
    return -1;
}

int gw_h_room_create(gw_req_t *req)
{
    json_t *body = gw_read_json(req);
    if (!body)
        return req->status;
    const char *name;
    if (gw_json_string(req, body, "name", 1, 100, NULL, &name) == 0) {
        char uid[24];
        s_id_text(req->who.user_id, uid, sizeof uid);
        const char *p[] = { name, uid };
        /* A 404 here is the foreign key on administrator_id: the token's user is gone. */
        Quaver__V1__QueryReply *r = gw_db(req, "Exec", "room_create", 2, p,
                                          "the user of this token no longer exists");
        if (r) {
            if (r->n_rows < 1) {
                gw_send_error(req, 502, NULL, "dbopt created no room");
            } else {
                json_t *o = json_object();
                json_object_set_new(o, "id", json_integer(gw_cell_i64(r, 0, "id")));
                json_object_set_new(o, "name", json_string(name));
                json_object_set_new(o, "administrator",
                                    json_pack("{s:I,s:s}", "id", (json_int_t) req->who.user_id,
                                              "username", req->who.username));
                json_object_set_new(o, "participant_count", json_integer(1));
                json_object_set_new(o, "current_track_id", json_null());
                json_object_set_new(o, "is_playing", json_false());
                const char *ca = gw_cell(r, 0, "created_at");
                json_object_set_new(o, "created_at", gw_cell_json("created_at", ca, !ca));
                gw_send_json(req, 201, o);
            }
            quaver__v1__query_reply__free_unpacked(r, NULL);
        }
    }
    json_decref(body);
    return req->status;
}

int gw_h_room_get(gw_req_t *req)
{
    Quaver__V1__QueryReply *r = s_room_get(req, req->ids[0]);
    if (r) {
        gw_send_json(req, 200, s_room_json(r));
        quaver__v1__query_reply__free_unpacked(r, NULL);
    }
    return req->status;
}

static json_t *s_who_json(gw_req_t *req)
{
    return json_pack("{s:I,s:s}", "user_id", (json_int_t) req->who.user_id, "username",
                     req->who.username);
}

int gw_h_room_join(gw_req_t *req)
{
    int64_t room = req->ids[0];
    char rid[24], uid[24];
    s_id_text(room, rid, sizeof rid);
    s_id_text(req->who.user_id, uid, sizeof uid);
    const char *p[] = { rid, uid };
    /* A missing room is the foreign-key violation, which dbopt answers 404. */
    Quaver__V1__QueryReply *r = gw_db(req, "Exec", "room_join", 2, p, "room not found");
    if (!r)
        return req->status;
    bool joined = gw_cell_bool(r, 0, "joined");
    quaver__v1__query_reply__free_unpacked(r, NULL);
    /* participant_count is part of the room's answer too. */
    gw_cache_room_changed(req, room, GW_INV_ROOM | GW_INV_PARTICIPANTS);
    json_t *doc = json_pack("{s:I,s:I,s:b}", "room_id", (json_int_t) room, "user_id",
                            (json_int_t) req->who.user_id, "joined", joined);
    gw_send_json(req, joined ? 201 : 200, doc);
    if (joined) {
        json_t *data = s_who_json(req);
        gw_ws_room_event(req->srv->ws, room, "participant_joined", data);
        json_decref(data);
    }
    return req->status;
}

int gw_h_room_leave(gw_req_t *req)
{
    int64_t room = req->ids[0];
    char rid[24], uid[24];
    s_id_text(room, rid, sizeof rid);
    s_id_text(req->who.user_id, uid, sizeof uid);
    const char *p[] = { rid, uid };
    Quaver__V1__QueryReply *r = gw_db(req, "Exec", "room_leave", 2, p, "room not found");
    if (!r)
        return req->status;
    bool left = gw_cell_bool(r, 0, "left");
    quaver__v1__query_reply__free_unpacked(r, NULL);
    if (!left) {
        /* Nothing removed: either not a participant (fine, idempotent) or no such room. */
        Quaver__V1__QueryReply *room_r = s_room_get(req, room);
        if (!room_r)
            return req->status;
        quaver__v1__query_reply__free_unpacked(room_r, NULL);
    }
    gw_cache_room_changed(req, room, GW_INV_ROOM | GW_INV_PARTICIPANTS);
    json_t *doc = json_pack("{s:I,s:I,s:b}", "room_id", (json_int_t) room, "user_id",
                            (json_int_t) req->who.user_id, "left", left);
    gw_send_json(req, 200, doc);
    if (left) {
        json_t *data = s_who_json(req);
        gw_ws_room_event(req->srv->ws, room, "participant_left", data);
        json_decref(data);
    }
    return req->status;
}

int gw_h_room_participants(gw_req_t *req)
{
    int64_t room = req->ids[0];
    char rid[24];
    s_id_text(room, rid, sizeof rid);
    const char *p[] = { rid };
    Quaver__V1__QueryReply *r = gw_db(req, "Query", "room_participants", 1, p, "room not found");
    if (!r)
        return req->status;
    if (r->n_rows == 0) {
        /* An empty list is a real answer only for a room that exists. */
        Quaver__V1__QueryReply *room_r = s_room_get(req, room);
        if (!room_r) {
            quaver__v1__query_reply__free_unpacked(r, NULL);
            return req->status;
        }
        quaver__v1__query_reply__free_unpacked(room_r, NULL);
    }
    json_t *list = json_array();
    for (size_t i = 0; i < r->n_rows; i++)
        json_array_append_new(list, gw_row_json(r, i));
    quaver__v1__query_reply__free_unpacked(r, NULL);
    gw_send_json(req, 200, json_pack("{s:I,s:o}", "room_id", (json_int_t) room,
                                     "participants", list));
    return req->status;
}

int gw_h_playback(gw_req_t *req)
{
    int64_t room = req->ids[0];
    json_t *body = gw_read_json(req);
    if (!body)
        return req->status;
    const char *action;
    if (gw_json_string(req, body, "action", 1, 16, NULL, &action) != 0)
        goto out;
    if (strcmp(action, "play") != 0 && strcmp(action, "pause") != 0 &&
        strcmp(action, "skip") != 0) {
        gw_send_error(req, 400, NULL, "field 'action' must be one of play, pause, skip");
        goto out;
    }
    Quaver__V1__QueryReply *room_r = s_room_get(req, room);
    if (!room_r)
        goto out;
    int64_t admin_id = gw_cell_i64(room_r, 0, "administrator_id");
    quaver__v1__query_reply__free_unpacked(room_r, NULL);
    if (admin_id != req->who.user_id) {
        gw_send_error(req, 403, NULL, "only the administrator of room %lld controls playback",
                      (long long) room);
        goto out;
    }
    char rid[24];
    s_id_text(room, rid, sizeof rid);
    const char *p[] = { rid, action };
    Quaver__V1__QueryReply *r = gw_db(req, "Exec", "playback_set", 2, p, "room not found");
    if (!r)
        goto out;
    const char *cur = gw_cell(r, 0, "current_track_id");
    json_t *doc = json_object();
    json_object_set_new(doc, "room_id", json_integer(room));
    json_object_set_new(doc, "current_track_id", gw_cell_json("current_track_id", cur, !cur));
    json_object_set_new(doc, "is_playing", json_boolean(gw_cell_bool(r, 0, "is_playing")));
    quaver__v1__query_reply__free_unpacked(r, NULL);
    /* The room shows current_track_id and is_playing; play and skip mark a track played,
     * which takes it off the queue. */
    gw_cache_room_changed(req, room, GW_INV_ROOM | GW_INV_QUEUE);
    json_t *data = json_deep_copy(doc);
    json_object_set_new(data, "action", json_string(action));
    gw_send_json(req, 200, doc);
    gw_ws_room_event(req->srv->ws, room, "playback_changed", data);
    json_decref(data);
out:
    json_decref(body);
    return req->status;
}
