/* gw_ws: the WebSocket hub. Registers GET /ws?token=JWT on the civetweb context; a client
 * sends {"type":"subscribe","room":ID} (accepted only from a participant of that room, checked
 * with dbopt `room_is_participant`) and from then on receives every change to that room as
 * {"type","room","seq","data"}. Events come from two places: gw_ws_room_event (this gateway's
 * own mutations, delivered at once and published on the bus as room.<id>) and a bus subscriber
 * thread (room.* from other gateway replicas; our own echoes are recognised by publisher name
 * and skipped). civetweb holds one worker thread per open WebSocket, so the number of
 * connections is bounded by ws_max_connections (and the gateway sizes its thread pool for it).
 * Ownership: gw_ws_new borrows cfg's strings, bus and metrics (they must outlive the hub). */
#ifndef GW_WS_H
#define GW_WS_H
#include <stdint.h>
#include <jansson.h>
#include "civetweb.h"
#include "qv_bus.h"
#include "qv_metrics.h"

typedef struct gw_ws_t gw_ws_t;

typedef struct {
    const char   *jwt_secret;
    const char   *broker;            /* for the participant check through dbopt */
    const char   *bus_sub;           /* the monitor's XPUB endpoint; "" = no cross-replica events */
    const char   *publisher;         /* our own bus publisher name, to skip our echoes */
    int           max_connections;   /* WS_MAX_CONNECTIONS */
    int           ping_interval_s;   /* WS_PING_INTERVAL */
    int           activity_timeout_s;/* WS_ACTIVITY_TIMEOUT */
    qv_bus_t     *bus;
    qv_metrics_t *metrics;
} gw_ws_cfg_t;

gw_ws_t *gw_ws_new(struct mg_context *ctx, const gw_ws_cfg_t *cfg);
void gw_ws_destroy(gw_ws_t **self_p);

/* A room changed (the change has committed). Adds the room's next seq, sends
 * {"type":type,"room":room_id,"seq":n,"data":data} to this gateway's subscribers of the room,
 * and publishes it on the bus as room.<room_id>. data is borrowed (not stolen). */
void gw_ws_room_event(gw_ws_t *self, int64_t room_id, const char *type, json_t *data);

/* Open WebSocket connections right now. */
int gw_ws_count(gw_ws_t *self);
#endif
