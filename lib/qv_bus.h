/* qv_bus: the pub/sub bus through the monitor (DESIGN.md "The bus"). Every message is two
 * frames, [topic][quaver.v1.BusMessage]; the publisher stamps its name, a per-publisher
 * sequence number (1, 2, 3 ...) and the time, so a subscriber can count what it missed.
 * Publishing never blocks: the PUB socket drops at its high-water mark.
 * qv_bus_t is thread-safe (a mutex around the PUB socket and the sequence). */
#ifndef QV_BUS_H
#define QV_BUS_H
#include <czmq.h>
#include "quaver/v1/bus.pb-c.h"

typedef struct qv_bus_t qv_bus_t;

/* endpoint: where to connect (the monitor's XSUB), or NULL/"" for a bus that drops
 * everything (daemons keep running without a monitor). publisher: "<service>/<instance>". */
qv_bus_t *qv_bus_new(const char *endpoint, const char *publisher);
void qv_bus_destroy(qv_bus_t **self_p);

/* Fills msg->publisher, seq and time_ms (msg is borrowed, only those fields are touched and
 * restored), packs and sends. Returns 0, or -1 when nothing was sent. */
int qv_bus_publish(qv_bus_t *self, const char *topic, Quaver__V1__BusMessage *msg);
int qv_bus_publish_json(qv_bus_t *self, const char *topic, const char *json);
uint64_t qv_bus_last_seq(qv_bus_t *self);

/* Subscriber: a SUB socket connected to the monitor's XPUB endpoint, subscribed to each
 * comma-separated prefix ("" = everything). Caller owns the socket (zsock_destroy). */
zsock_t *qv_bus_sub_new(const char *endpoint, const char *prefixes);
/* Receives one message; *topic_p gets a heap copy of the topic (caller frees). Returns the
 * unpacked message (caller frees with quaver__v1__bus_message__free_unpacked(msg, NULL)),
 * or NULL on interrupt or an undecodable message (which is dropped). */
Quaver__V1__BusMessage *qv_bus_recv(zsock_t *sub, char **topic_p);

int qv_bus_selftest(void);
#endif
