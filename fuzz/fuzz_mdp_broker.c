/* fuzz_mdp_broker: random frame sequences into a live broker (qv_broker_new on inproc), sent
 * from two DEALERs that play client or worker as the input says; after each input the broker
 * must still answer an MMI query (mmi.service) from a third, well-behaved DEALER.
 * Input: byte 0 picks the header put before each message's frames (bits 0-1: none,
 * "" MDPC01, "" MDPW01, "" only) and the sending socket (bit 2). Then frames, each a length
 * byte and that many bytes (the last may be short); a length byte of 255 ends the message
 * and starts the next one with the same header. At most 8 messages of 16 frames per input.
 * The broker lives across inputs, as in the gateway: workers a previous input declared READY
 * receive the requests of later ones, heartbeats flow, deadlines expire. Whatever the broker
 * sends the fuzzing sockets is drained and dropped. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <czmq.h>
#include "qv_mdp.h"
#include "qv_log.h"

#define S_ENDPOINT "inproc://qv-fuzz-broker"

static qv_broker_t *s_broker;
static zsock_t *s_peer[2];
static zsock_t *s_checker;

static void s_drain(zsock_t *s)
{
    zmsg_t *m;
    while (zsock_events(s) & ZMQ_POLLIN) {
        m = zmsg_recv(s);
        if (!m)
            break;
        zmsg_destroy(&m);
    }
}

static void s_cleanup(void)
{
    for (int i = 0; i < 2; i++)
        zsock_destroy(&s_peer[i]);
    zsock_destroy(&s_checker);
    qv_broker_destroy(&s_broker);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    zsys_handler_set(NULL);   /* libFuzzer handles the signals */
    qv_log_init("fuzz", "text", "error");
    /* hb 250 ms so that dead workers are reaped within a short run; default deadline 100 ms
     * so that queued requests expire and take the 503 path. */
    s_broker = qv_broker_new(S_ENDPOINT, 250, 3, 100);
    if (!s_broker)
        abort();
    for (int i = 0; i < 2; i++) {
        s_peer[i] = zsock_new_dealer(S_ENDPOINT);
        if (!s_peer[i])
            abort();
        zsock_set_sndtimeo(s_peer[i], 100);
    }
    s_checker = zsock_new_dealer(S_ENDPOINT);
    if (!s_checker)
        abort();
    atexit(s_cleanup);
    return 0;
}

/* The broker is alive when "mmi.service" gets its "200"/"404" answer within 10 s.
 * libFuzzer's SIGALRM (its -timeout watchdog) interrupts a blocking zmq call with EINTR, so
 * both the send and the receive retry until the deadline rather than taking one failed call
 * for a dead broker. */
static void s_check_alive(void)
{
    int64_t until = zclock_mono() + 10000;
    zmsg_t *q = zmsg_new();
    zmsg_addstr(q, "");
    zmsg_addstr(q, QV_MDPC);
    zmsg_addstr(q, "mmi.service");
    zmsg_addstr(q, "echo");
    while (zmsg_send(&q, s_checker) != 0)   /* on failure q is kept */
        if (zclock_mono() >= until) {
            fprintf(stderr, "fuzz_mdp_broker: cannot send to the broker for 10 s\n");
            abort();
        }
    zmsg_t *r = NULL;
    for (int64_t now = zclock_mono(); !r && now < until; now = zclock_mono()) {
        zmq_pollitem_t it = { zsock_resolve(s_checker), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&it, 1, (long) (until - now)) > 0 && (it.revents & ZMQ_POLLIN))
            r = zmsg_recv(s_checker);
    }
    if (!r) {
        fprintf(stderr, "fuzz_mdp_broker: broker did not answer mmi.service within 10 s\n");
        abort();
    }
    /* "" MDPC01 mmi.service status */
    if (zmsg_size(r) != 4) {
        fprintf(stderr, "fuzz_mdp_broker: mmi reply has %zu frames\n", zmsg_size(r));
        abort();
    }
    zframe_t *last = zmsg_last(r);
    if (zframe_size(last) != 3 || (memcmp(zframe_data(last), "200", 3) != 0
                                   && memcmp(zframe_data(last), "404", 3) != 0)) {
        fprintf(stderr, "fuzz_mdp_broker: unexpected mmi status\n");
        abort();
    }
    zmsg_destroy(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int header = data[0] & 3;
    zsock_t *peer = s_peer[(data[0] >> 2) & 1];
    size_t i = 1;
    for (int msgs = 0; msgs < 8 && i < size; msgs++) {
        zmsg_t *m = zmsg_new();
        if (header == 1 || header == 2 || header == 3)
            zmsg_addmem(m, "", 0);
        if (header == 1)
            zmsg_addstr(m, QV_MDPC);
        else if (header == 2)
            zmsg_addstr(m, QV_MDPW);
        for (int f = 0; f < 16 && i < size; f++) {
            size_t n = data[i++];
            if (n == 255)
                break;
            if (n > size - i)
                n = size - i;
            zmsg_addmem(m, data + i, n);
            i += n;
        }
        if (zmsg_size(m) == 0)
            zmsg_addmem(m, "", 0);
        zmsg_send(&m, peer);   /* may time out if the broker stopped reading: checked below */
        zmsg_destroy(&m);
    }
    s_drain(s_peer[0]);
    s_drain(s_peer[1]);
    s_check_alive();
    return 0;
}
