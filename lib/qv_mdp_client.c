/* qv_mdp_client: a synchronous 7/MDP client with a deadline.
 *
 * Guarantees:
 * - qv_client_call sends one request and returns the reply to that request or -1 at the
 *   timeout; on a timeout the DEALER is replaced by a new one, so a reply that arrives late
 *   lands on a closed socket and can never be taken for the next call's.
 * - A reply is accepted only when its envelope is "" MDPC01 <the service we called>;
 *   anything else on the socket is dropped.
 * - A comma-separated broker list connects one DEALER to all of them (round-robin).
 * - qv_client_tls gives each thread its own client per broker string (ZeroMQ sockets are not
 *   thread-safe); they are destroyed when the thread exits.
 */
#include "qv_mdp.h"
#include "qv_clock.h"
#include "qv_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct qv_client_t {
    char    *broker;
    zsock_t *sock;
};

static zsock_t *s_open(const char *broker)
{
    zsock_t *sock = zsock_new(ZMQ_DEALER);
    if (!sock)
        return NULL;
    zsock_set_linger(sock, 0);
    if (zsock_attach(sock, broker, false) != 0) {
        qv_warn("mdp client: cannot connect %s", broker);
        zsock_destroy(&sock);
    }
    return sock;
}

qv_client_t *qv_client_new(const char *broker)
{
    if (!broker || !*broker)
        return NULL;
    qv_client_t *self = (qv_client_t *) calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->broker = strdup(broker);
    self->sock = self->broker ? s_open(self->broker) : NULL;
    if (!self->sock) {
        free(self->broker);
        free(self);
        return NULL;
    }
    return self;
}

void qv_client_destroy(qv_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    qv_client_t *self = *self_p;
    zsock_destroy(&self->sock);
    free(self->broker);
    free(self);
    *self_p = NULL;
}

/* After a failed call the socket may still hold our request or get its reply later. */
static void s_replace(qv_client_t *self)
{
    zsock_destroy(&self->sock);
    self->sock = s_open(self->broker);
}

int qv_client_call(qv_client_t *self, const char *service, const void *body, size_t len,
                   int timeout_ms, zmsg_t **reply)
{
    if (reply)
        *reply = NULL;
    if (!self || !service || !reply || (!body && len > 0))
        return -1;
    if (!self->sock && !(self->sock = s_open(self->broker)))
        return -1;
    /* "" MDPC01 <service> <body>, straight from the caller's bytes. Only the first frame
     * can be refused (a message is atomic). */
    void *handle = zsock_resolve(self->sock);
    if (zmq_send(handle, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        s_replace(self);
        return -1;
    }
    zmq_send(handle, QV_MDPC, 6, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(handle, service, strlen(service), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(handle, body ? body : "", len, ZMQ_DONTWAIT);
    int64_t end = timeout_ms < 0 ? INT64_MAX : qv_mono_ms() + timeout_ms;
    while (true) {
        int64_t now = qv_mono_ms();
        if (now >= end)
            break;
        long wait = end == INT64_MAX ? -1 : (long) (end - now);
        zmq_pollitem_t item = { zsock_resolve(self->sock), 0, ZMQ_POLLIN, 0 };
        int rc = zmq_poll(&item, 1, wait);
        if (rc < 0) {
            if (errno == EINTR && !zsys_interrupted)
                continue;
            break;
        }
        if (rc == 0)
            continue;
        /* the envelope as raw frames; only the body becomes the caller's zmsg */
        zmq_msg_t env[3];
        int n = 0;
        bool more = true;
        while (n < 3 && more) {
            zmq_msg_init(&env[n]);
            if (zmq_msg_recv(&env[n], handle, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&env[n]);
                more = false;
                break;
            }
            more = zmq_msg_more(&env[n++]);
        }
        size_t slen = strlen(service);
        bool ok = n == 3 && zmq_msg_size(&env[0]) == 0 && zmq_msg_size(&env[1]) == 6
                  && memcmp(zmq_msg_data(&env[1]), QV_MDPC, 6) == 0
                  && zmq_msg_size(&env[2]) == slen
                  && memcmp(zmq_msg_data(&env[2]), service, slen) == 0;
        for (int i = 0; i < n; i++)
            zmq_msg_close(&env[i]);
        if (n == 0)
            continue;
        zmsg_t *in = zmsg_new();
        while (more) {
            zframe_t *f = zframe_recv(self->sock);
            if (!f)
                break;
            more = zframe_more(f);
            if (in)
                zmsg_append(in, &f);
            zframe_destroy(&f);
        }
        if (ok && in) {
            *reply = in;
            return 0;
        }
        zmsg_destroy(&in);      /* not an answer to this call */
    }
    s_replace(self);
    return -1;
}

/* ---- one client per thread and broker -------------------------------------------------- */

typedef struct s_tls_entry_t {
    qv_client_t          *client;
    struct s_tls_entry_t *next;
} s_tls_entry_t;

static pthread_key_t  s_tls_key;
static pthread_once_t s_tls_once = PTHREAD_ONCE_INIT;

static void s_tls_free(void *arg)
{
    s_tls_entry_t *e = (s_tls_entry_t *) arg;
    while (e) {
        s_tls_entry_t *next = e->next;
        qv_client_destroy(&e->client);
        free(e);
        e = next;
    }
}

static void s_tls_init(void)
{
    pthread_key_create(&s_tls_key, s_tls_free);
}

qv_client_t *qv_client_tls(const char *broker)
{
    if (!broker)
        return NULL;
    pthread_once(&s_tls_once, s_tls_init);
    s_tls_entry_t *head = (s_tls_entry_t *) pthread_getspecific(s_tls_key);
    for (s_tls_entry_t *e = head; e; e = e->next)
        if (strcmp(e->client->broker, broker) == 0)
            return e->client;
    s_tls_entry_t *e = (s_tls_entry_t *) calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->client = qv_client_new(broker);
    if (!e->client) {
        free(e);
        return NULL;
    }
    e->next = head;
    if (pthread_setspecific(s_tls_key, e) != 0) {
        qv_client_destroy(&e->client);
        free(e);
        return NULL;
    }
    return e->client;
}
