/* mon_proxy: the bus itself. Binds XSUB (where every process publishes) and XPUB (where
 * operators and gateways subscribe) and forwards between them in its own thread: messages
 * XSUB -> XPUB, subscriptions XPUB -> XSUB. The XPUB socket has a send high-water mark and
 * drops for a subscriber whose queue is full, so a slow subscriber loses messages (and sees
 * the gap in the publisher's sequence numbers) while no publisher ever blocks.
 *
 * The tap: the proxy itself subscribes to one topic prefix on the XSUB side and hands every
 * matching [topic][body] pair to a callback, in the proxy thread, after forwarding it. The
 * monitor collects `metrics.` snapshots this way without a second socket or copy.
 *
 * The XSUB socket is also bound to an inproc endpoint (mon_proxy_inproc) so that the monitor
 * publishes its own events into its own bus whatever the TCP endpoints are. */
#ifndef MON_PROXY_H
#define MON_PROXY_H
#include <stddef.h>
#include <stdint.h>

typedef struct mon_proxy_t mon_proxy_t;

/* Called in the proxy thread for each message whose topic starts with the tap prefix.
 * topic and body are borrowed for the duration of the call. Must not block for long: the
 * bus waits while it runs. */
typedef void (*mon_proxy_tap_fn)(void *arg, const char *topic, const uint8_t *body, size_t len);

typedef struct {
    const char      *xsub_bind;   /* comma-separated bind endpoints (tcp, ipc, inproc) */
    const char      *xpub_bind;   /* the same, for the subscriber side */
    int              hwm;         /* per-peer high-water mark on both sides (messages) */
    const char      *tap_prefix;  /* e.g. "metrics."; NULL = no tap */
    mon_proxy_tap_fn tap;
    void            *tap_arg;
} mon_proxy_opts_t;

typedef struct {
    uint64_t forwarded;           /* messages XSUB -> XPUB */
    uint64_t tapped;              /* of which handed to the tap */
    uint64_t subscriptions;       /* subscribe/unsubscribe messages XPUB -> XSUB */
} mon_proxy_stats_t;

/* Binds and starts the thread. Returns NULL (and logs which endpoint failed) when a bind
 * fails. Caller owns the result; mon_proxy_destroy stops the thread and closes the sockets. */
mon_proxy_t *mon_proxy_new(const mon_proxy_opts_t *opts);
void mon_proxy_destroy(mon_proxy_t **self_p);

/* The inproc endpoint the XSUB socket is also bound to (borrowed, lives with the proxy). */
const char *mon_proxy_inproc(mon_proxy_t *self);
/* The TCP port actually bound by the first tcp endpoint of each side (useful with ":*"), or -1. */
int mon_proxy_xsub_port(mon_proxy_t *self);
int mon_proxy_xpub_port(mon_proxy_t *self);
/* Thread-safe counters. */
void mon_proxy_stats(mon_proxy_t *self, mon_proxy_stats_t *out);

int mon_proxy_selftest(void);
#endif
