/* qv_bus: the pub/sub bus through the monitor (see qv_bus.h).
 * Guarantees: a publish never blocks the caller (PUB drops at its high-water mark, sends are
 * ZMQ_DONTWAIT, linger is short so exit is not held up by a dead monitor); every message
 * sent by one qv_bus_t carries the next sequence number, so gaps a subscriber sees are
 * exactly the losses; a frame a subscriber cannot decode is dropped, never trusted. */
#include "qv_bus.h"
#include "qv_clock.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define S_SNDHWM 10000
#define S_RCVHWM 10000
#define S_LINGER_MS 200

struct qv_bus_t {
    pthread_mutex_t lock;
    zsock_t        *pub;        /* NULL: a bus that drops */
    char           *publisher;
    uint64_t        seq;
};

/* Connects sock to each of the comma-separated endpoints. */
static int s_connect_all(zsock_t *sock, const char *endpoints)
{
    char *copy = strdup(endpoints);
    if (!copy)
        return -1;
    int rc = 0, n = 0;
    char *save = NULL;
    for (char *ep = strtok_r(copy, ", ", &save); ep; ep = strtok_r(NULL, ", ", &save)) {
        if (zsock_connect(sock, "%s", ep) != 0) {
            zsys_error("qv_bus: cannot connect to '%s': %s", ep, zmq_strerror(zmq_errno()));
            rc = -1;
            break;
        }
        n++;
    }
    free(copy);
    return rc == 0 && n > 0 ? 0 : -1;
}

qv_bus_t *qv_bus_new(const char *endpoint, const char *publisher)
{
    qv_bus_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->lock, NULL);
    self->publisher = strdup(publisher ? publisher : "");
    if (!self->publisher)
        goto fail;
    if (endpoint && *endpoint) {
        self->pub = zsock_new(ZMQ_PUB);
        if (!self->pub)
            goto fail;
        zsock_set_sndhwm(self->pub, S_SNDHWM);
        zsock_set_linger(self->pub, S_LINGER_MS);
        zsock_set_sndtimeo(self->pub, 0);
        if (s_connect_all(self->pub, endpoint) != 0)
            goto fail;
    }
    return self;
fail:
    qv_bus_destroy(&self);
    return NULL;
}

void qv_bus_destroy(qv_bus_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    qv_bus_t *self = *self_p;
    zsock_destroy(&self->pub);
    free(self->publisher);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

int qv_bus_publish(qv_bus_t *self, const char *topic, Quaver__V1__BusMessage *msg)
{
    if (!self || !topic || !msg || !self->pub)
        return -1;
    char *old_pub = msg->publisher;
    uint64_t old_seq = msg->seq;
    int64_t old_time = msg->time_ms;
    int rc = -1;

    pthread_mutex_lock(&self->lock);
    msg->publisher = self->publisher;
    msg->seq = ++self->seq;
    msg->time_ms = qv_wall_ms();
    size_t len = quaver__v1__bus_message__get_packed_size(msg);
    uint8_t stackbuf[2048];
    uint8_t *buf = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (buf) {
        quaver__v1__bus_message__pack(msg, buf);
        void *raw = zsock_resolve(self->pub);
        /* The topic and body go out together or not at all: zmq delivers multipart messages
         * atomically, and a PUB at its HWM drops the whole message. */
        if (zmq_send(raw, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
            zmq_send(raw, buf, len, ZMQ_DONTWAIT) >= 0)
            rc = 0;
        if (buf != stackbuf)
            free(buf);
    }
    pthread_mutex_unlock(&self->lock);

    msg->publisher = old_pub;
    msg->seq = old_seq;
    msg->time_ms = old_time;
    return rc;
}

int qv_bus_publish_json(qv_bus_t *self, const char *topic, const char *json)
{
    Quaver__V1__BusMessage msg = QUAVER__V1__BUS_MESSAGE__INIT;
    msg.body_case = QUAVER__V1__BUS_MESSAGE__BODY_JSON;
    msg.json = (char *) (json ? json : "");
    return qv_bus_publish(self, topic, &msg);
}

uint64_t qv_bus_last_seq(qv_bus_t *self)
{
    if (!self)
        return 0;
    pthread_mutex_lock(&self->lock);
    uint64_t seq = self->seq;
    pthread_mutex_unlock(&self->lock);
    return seq;
}

zsock_t *qv_bus_sub_new(const char *endpoint, const char *prefixes)
{
    if (!endpoint || !*endpoint)
        return NULL;
    zsock_t *sub = zsock_new(ZMQ_SUB);
    if (!sub)
        return NULL;
    zsock_set_rcvhwm(sub, S_RCVHWM);
    zsock_set_linger(sub, 0);
    if (!prefixes || !*prefixes)
        zsock_set_subscribe(sub, "");
    else {
        const char *p = prefixes;
        while (true) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t) (comma - p) : strlen(p);
            while (len && *p == ' ') {
                p++;
                len--;
            }
            while (len && p[len - 1] == ' ')
                len--;
            /* zsock_set_subscribe takes a C string; an empty piece means everything */
            zmq_setsockopt(zsock_resolve(sub), ZMQ_SUBSCRIBE, p, len);
            if (!comma)
                break;
            p = comma + 1;
        }
    }
    if (s_connect_all(sub, endpoint) != 0) {
        zsock_destroy(&sub);
        return NULL;
    }
    return sub;
}

Quaver__V1__BusMessage *qv_bus_recv(zsock_t *sub, char **topic_p)
{
    if (topic_p)
        *topic_p = NULL;
    zmsg_t *zmsg = zmsg_recv(sub);
    if (!zmsg)
        return NULL;
    Quaver__V1__BusMessage *msg = NULL;
    if (zmsg_size(zmsg) == 2) {
        zframe_t *topic = zmsg_first(zmsg);
        zframe_t *body = zmsg_next(zmsg);
        msg = quaver__v1__bus_message__unpack(NULL, zframe_size(body), zframe_data(body));
        if (msg && topic_p) {
            *topic_p = strndup((const char *) zframe_data(topic), zframe_size(topic));
            if (!*topic_p) {
                quaver__v1__bus_message__free_unpacked(msg, NULL);
                msg = NULL;
            }
        }
    }
    zmsg_destroy(&zmsg);
    return msg;
}

/* ---- selftest ------------------------------------------------------------------------- */

#define S_CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "bus selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    goto fail; } } while (0)

/* Receives one message with a timeout (the selftest must never hang). */
static Quaver__V1__BusMessage *s_recv(zsock_t *sub, char **topic_p, int timeout_ms)
{
    if (topic_p)
        *topic_p = NULL;
    zpoller_t *poller = zpoller_new(sub, NULL);
    void *which = zpoller_wait(poller, timeout_ms);
    zpoller_destroy(&poller);
    return which ? qv_bus_recv(sub, topic_p) : NULL;
}

static void s_drain(zsock_t *sub, int quiet_ms)
{
    zpoller_t *poller = zpoller_new(sub, NULL);
    while (zpoller_wait(poller, quiet_ms)) {
        zmsg_t *m = zmsg_recv(sub);
        zmsg_destroy(&m);
    }
    zpoller_destroy(&poller);
}

int qv_bus_selftest(void)
{
    char in[64], out[64];
    snprintf(in, sizeof in, "inproc://qv-bus-test-in-%d", (int) getpid());
    snprintf(out, sizeof out, "inproc://qv-bus-test-out-%d", (int) getpid());
    zactor_t *proxy = zactor_new(zproxy, NULL);
    zsock_t *sub = NULL, *raw = NULL;
    qv_bus_t *bus = NULL, *dead = NULL;
    Quaver__V1__BusMessage *m = NULL;
    char *topic = NULL;
    S_CHECK(proxy);
    zstr_sendx(proxy, "FRONTEND", "XSUB", in, NULL);
    zsock_wait(proxy);
    zstr_sendx(proxy, "BACKEND", "XPUB", out, NULL);
    zsock_wait(proxy);

    /* a bus without an endpoint drops without failing anything */
    dead = qv_bus_new("", "test/x");
    S_CHECK(dead && qv_bus_publish_json(dead, "room.1", "{}") == -1);
    qv_bus_destroy(&dead);
    S_CHECK(dead == NULL);

    sub = qv_bus_sub_new(out, "test., probe");
    S_CHECK(sub);
    /* Subscriptions travel sub -> XPUB -> XSUB -> publishers asynchronously: probe with a
     * raw publisher until one arrives, then the path is known to be up. */
    raw = zsock_new(ZMQ_PUB);
    S_CHECK(raw && zsock_connect(raw, "%s", in) == 0);
    zpoller_t *poller = zpoller_new(sub, NULL);
    bool up = false;
    for (int i = 0; i < 100 && !up; i++) {
        zstr_sendx(raw, "probe", "x", NULL);
        up = zpoller_wait(poller, 50) != NULL;
    }
    zpoller_destroy(&poller);
    S_CHECK(up);
    s_drain(sub, 100);

    bus = qv_bus_new(in, "test/one");
    S_CHECK(bus && qv_bus_last_seq(bus) == 0);
    /* The new PUB learns the subscriptions from XSUB when it processes its commands. */
    zclock_sleep(200);
    S_CHECK(qv_bus_publish_json(bus, "test.a", "{\"n\":1}") == 0);
    S_CHECK(qv_bus_publish_json(bus, "test.b", "{\"n\":2}") == 0);
    Quaver__V1__BusMessage hm = QUAVER__V1__BUS_MESSAGE__INIT;
    Quaver__V1__HealthEvent he = QUAVER__V1__HEALTH_EVENT__INIT;
    he.service = (char *) "cache";
    he.status = (char *) "up";
    hm.body_case = QUAVER__V1__BUS_MESSAGE__BODY_HEALTH;
    hm.health = &he;
    S_CHECK(qv_bus_publish(bus, "test.c", &hm) == 0);
    S_CHECK(hm.seq == 0 && hm.publisher == (char *) protobuf_c_empty_string);   /* restored */
    S_CHECK(qv_bus_publish_json(bus, "other.d", "{}") == 0);   /* filtered out */
    S_CHECK(qv_bus_publish_json(bus, "test.e", "{}") == 0);
    S_CHECK(qv_bus_last_seq(bus) == 5);

    const char *want_topic[] = { "test.a", "test.b", "test.c", "test.e" };
    const uint64_t want_seq[] = { 1, 2, 3, 5 };
    for (int i = 0; i < 4; i++) {
        m = s_recv(sub, &topic, 2000);
        S_CHECK(m && topic);
        S_CHECK(strcmp(topic, want_topic[i]) == 0 && m->seq == want_seq[i]);
        S_CHECK(strcmp(m->publisher, "test/one") == 0 && m->time_ms > 0);
        if (i < 2)
            S_CHECK(m->body_case == QUAVER__V1__BUS_MESSAGE__BODY_JSON &&
                    strcmp(m->json, i == 0 ? "{\"n\":1}" : "{\"n\":2}") == 0);
        if (i == 2)
            S_CHECK(m->body_case == QUAVER__V1__BUS_MESSAGE__BODY_HEALTH &&
                    strcmp(m->health->service, "cache") == 0);
        quaver__v1__bus_message__free_unpacked(m, NULL);
        m = NULL;
        zstr_free(&topic);
    }

    /* garbage is dropped (NULL), and the next good message still arrives */
    zstr_sendx(raw, "test.garbage", "\xff\xff\xff\xff", NULL);
    m = s_recv(sub, &topic, 2000);
    S_CHECK(m == NULL && topic == NULL);
    zstr_send(raw, "test.oneframe");
    m = s_recv(sub, &topic, 2000);
    S_CHECK(m == NULL && topic == NULL);
    Quaver__V1__BusMessage good = QUAVER__V1__BUS_MESSAGE__INIT;
    good.publisher = (char *) "raw/1";
    good.seq = 9;
    uint8_t buf[64];
    size_t len = quaver__v1__bus_message__pack(&good, buf);
    zmsg_t *zm = zmsg_new();
    zmsg_addstr(zm, "test.good");
    zmsg_addmem(zm, buf, len);
    zmsg_send(&zm, raw);
    m = s_recv(sub, &topic, 2000);
    S_CHECK(m && m->seq == 9 && strcmp(topic, "test.good") == 0);
    quaver__v1__bus_message__free_unpacked(m, NULL);
    m = NULL;
    zstr_free(&topic);

    qv_bus_destroy(&bus);
    zsock_destroy(&raw);
    zsock_destroy(&sub);
    zactor_destroy(&proxy);
    return 0;
fail:
    if (m)
        quaver__v1__bus_message__free_unpacked(m, NULL);
    zstr_free(&topic);
    qv_bus_destroy(&bus);
    qv_bus_destroy(&dead);
    zsock_destroy(&raw);
    zsock_destroy(&sub);
    zactor_destroy(&proxy);
    return -1;
}
