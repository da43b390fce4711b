/* cache_tracking: versions and the invalidation connection (see cache_tracking.h). */
#include "cache_tracking.h"
#include "qv_clock.h"
#include "qv_hash.h"
#include "qv_log.h"
#include <hiredis/hiredis.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define S_STRIPES         4096
#define S_LOCKS           64
#define S_POLL_MS         100
#define S_PING_IDLE_MS    1000
#define S_PING_DEAD_MS    3000
#define S_BACKOFF_MIN_MS  500
#define S_BACKOFF_MAX_MS  10000
#define S_CHANNEL         "__redis__:invalidate"

struct cache_tracking_t {
    cache_tracking_sink_t sink;
    pthread_mutex_t locks[S_LOCKS];
    uint64_t        versions[S_STRIPES];     /* under locks[stripe % S_LOCKS] */
    _Atomic uint64_t epoch;                  /* written with every lock held */
    /* connection (the thread's), guarded by mu for the fields others read */
    pthread_mutex_t mu;
    int64_t         id;                      /* CLIENT ID of the subscribed connection, 0 none */
    char           *host, *user, *password;
    int             port, timeout_ms;
    void          (*on_lost)(void *ctx, int64_t id);
    void           *lost_ctx;
    pthread_t       thread;
    bool            started;
    atomic_int      stop;
    _Atomic uint64_t n_messages, n_keys, n_flushes, n_reconnects, n_stale;
};

static uint64_t s_hash(const char *key, size_t len)
{
    uint64_t h = qv_fnv1a(key, len, QV_FNV1A_INIT);   /* spreads keys well enough for stripes */
    return h ^ (h >> 29);
}

static size_t s_stripe(const char *key, size_t len) { return s_hash(key, len) % S_STRIPES; }

cache_tracking_t *cache_tracking_new(cache_tracking_sink_t sink)
{
    cache_tracking_t *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->sink = sink;
    for (int i = 0; i < S_LOCKS; i++) pthread_mutex_init(&t->locks[i], NULL);
    pthread_mutex_init(&t->mu, NULL);
    atomic_init(&t->epoch, 1);
    atomic_init(&t->stop, 0);
    return t;
}

void cache_tracking_destroy(cache_tracking_t **self_p)
{
    if (!self_p || !*self_p) return;
    cache_tracking_t *t = *self_p;
    if (t->started) {
        atomic_store(&t->stop, 1);
        pthread_join(t->thread, NULL);
    }
    for (int i = 0; i < S_LOCKS; i++) pthread_mutex_destroy(&t->locks[i]);
    pthread_mutex_destroy(&t->mu);
    free(t->host);
    free(t->user);
    free(t->password);
    free(t);
    *self_p = NULL;
}

/* ---- versions ------------------------------------------------------------------------- */

cache_ticket_t cache_tracking_ticket(cache_tracking_t *t, const char *key)
{
    size_t s = s_stripe(key, strlen(key));
    pthread_mutex_t *m = &t->locks[s % S_LOCKS];
    pthread_mutex_lock(m);
    cache_ticket_t tk = { atomic_load(&t->epoch), t->versions[s] };
    pthread_mutex_unlock(m);
    return tk;
}

static void s_bump_len(cache_tracking_t *t, const char *key, size_t len, cache_ticket_t *out)
{
    size_t s = s_stripe(key, len);
    pthread_mutex_t *m = &t->locks[s % S_LOCKS];
    pthread_mutex_lock(m);
    t->versions[s]++;
    if (out) *out = (cache_ticket_t){ atomic_load(&t->epoch), t->versions[s] };
    pthread_mutex_unlock(m);
}

cache_ticket_t cache_tracking_bump(cache_tracking_t *t, const char *key)
{
    cache_ticket_t tk;
    s_bump_len(t, key, strlen(key), &tk);
    return tk;
}

void cache_tracking_bump_all(cache_tracking_t *t)
{
    /* Every stripe lock, so that no commit is between its check and its insert. Rare: a
     * flush, a pattern invalidation, a Clear. */
    for (int i = 0; i < S_LOCKS; i++) pthread_mutex_lock(&t->locks[i]);
    atomic_fetch_add(&t->epoch, 1);
    for (int i = S_LOCKS - 1; i >= 0; i--) pthread_mutex_unlock(&t->locks[i]);
}

void cache_tracking_flush(cache_tracking_t *t)
{
    cache_tracking_bump_all(t);
    atomic_fetch_add(&t->n_flushes, 1);
    if (t->sink.on_flush) t->sink.on_flush(t->sink.ctx);
}

int cache_tracking_commit(cache_tracking_t *t, const char *key, cache_ticket_t tk,
                          void (*fn)(void *ctx), void *ctx)
{
    size_t s = s_stripe(key, strlen(key));
    pthread_mutex_t *m = &t->locks[s % S_LOCKS];
    pthread_mutex_lock(m);
    int ok = atomic_load(&t->epoch) == tk.epoch && t->versions[s] == tk.version;
    if (ok) fn(ctx);
    pthread_mutex_unlock(m);
    if (!ok) atomic_fetch_add(&t->n_stale, 1);
    return ok;
}

void cache_tracking_stats(cache_tracking_t *t, cache_tracking_stats_t *out)
{
    out->messages = atomic_load(&t->n_messages);
    out->keys = atomic_load(&t->n_keys);
    out->flushes = atomic_load(&t->n_flushes);
    out->reconnects = atomic_load(&t->n_reconnects);
    out->stale_commits = atomic_load(&t->n_stale);
}

int64_t cache_tracking_id(cache_tracking_t *t)
{
    pthread_mutex_lock(&t->mu);
    int64_t id = t->id;
    pthread_mutex_unlock(&t->mu);
    return id;
}

/* ---- the invalidation connection ------------------------------------------------------ */

static struct timeval s_tv(int ms)
{
    return (struct timeval){ .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
}

/* Connects, authenticates, reads CLIENT ID and subscribes. NULL on failure (err filled). */
static redisContext *s_connect(cache_tracking_t *t, int64_t *id, char *err, size_t errlen)
{
    redisContext *c = redisConnectWithTimeout(t->host, t->port, s_tv(t->timeout_ms));
    if (!c) { snprintf(err, errlen, "out of memory"); return NULL; }
    if (c->err) { snprintf(err, errlen, "%s", c->errstr); redisFree(c); return NULL; }
    redisSetTimeout(c, s_tv(t->timeout_ms));
    redisReply *r = NULL;
    if (t->password) {
        r = t->user ? redisCommand(c, "AUTH %s %s", t->user, t->password)
                    : redisCommand(c, "AUTH %s", t->password);
        if (!r || r->type == REDIS_REPLY_ERROR) goto fail;
        freeReplyObject(r);
    }
    r = redisCommand(c, "CLIENT ID");
    if (!r || r->type != REDIS_REPLY_INTEGER) goto fail;
    *id = r->integer;
    freeReplyObject(r);
    r = redisCommand(c, "SUBSCRIBE " S_CHANNEL);
    if (!r || r->type != REDIS_REPLY_ARRAY) goto fail;
    freeReplyObject(r);
    return c;
fail:
    snprintf(err, errlen, "%s", r ? (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply")
                                  : c->errstr);
    if (r) freeReplyObject(r);
    redisFree(c);
    return NULL;
}

/* One pub/sub message: ["message", channel, payload] or a ["pong", ""] reply. Returns 1 for
 * a pong. */
static int s_handle(cache_tracking_t *t, redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2
        || r->element[0]->type != REDIS_REPLY_STRING)
        return 0;
    if (strcasecmp(r->element[0]->str, "pong") == 0) return 1;
    if (strcmp(r->element[0]->str, "message") != 0 || r->elements != 3) return 0;
    redisReply *p = r->element[2];
    atomic_fetch_add(&t->n_messages, 1);
    if (p->type == REDIS_REPLY_NIL) {
        /* FLUSHALL/FLUSHDB, or Redis dropped its tracking table: everything may be stale. */
        qv_info("redis invalidation: flush (nil message), local tier flushed");
        cache_tracking_flush(t);
    } else if (p->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < p->elements; i++) {
            redisReply *k = p->element[i];
            if (k->type != REDIS_REPLY_STRING) continue;
            s_bump_len(t, k->str, k->len, NULL);
            atomic_fetch_add(&t->n_keys, 1);
            if (t->sink.on_key) t->sink.on_key(t->sink.ctx, k->str, k->len);
        }
    } else if (p->type == REDIS_REPLY_STRING) {   /* a single key (older servers) */
        s_bump_len(t, p->str, p->len, NULL);
        atomic_fetch_add(&t->n_keys, 1);
        if (t->sink.on_key) t->sink.on_key(t->sink.ctx, p->str, p->len);
    }
    return 0;
}

static void s_set_id(cache_tracking_t *t, int64_t id)
{
    pthread_mutex_lock(&t->mu);
    t->id = id;
    pthread_mutex_unlock(&t->mu);
}

static void s_wait(cache_tracking_t *t, int64_t ms)
{
    while (ms > 0 && !atomic_load(&t->stop)) {
        int64_t step = ms > 50 ? 50 : ms;
        struct timespec ts = { 0, (long) step * 1000000L };
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

static void *s_main(void *arg)
{
    cache_tracking_t *t = arg;
    redisContext *c = NULL;
    int64_t id = 0, backoff = S_BACKOFF_MIN_MS, next_try = 0, last_rx = 0, ping_sent = 0;
    char err[160] = "";
    bool warned = false;
    while (!atomic_load(&t->stop)) {
        int64_t now = qv_mono_ms();
        if (!c) {
            if (now < next_try) { s_wait(t, next_try - now); continue; }
            c = s_connect(t, &id, err, sizeof err);
            if (!c) {
                if (!warned) qv_warn("redis invalidation connection: %s; retrying", err);
                warned = true;
                next_try = qv_mono_ms() + backoff;
                backoff = backoff * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            warned = false;
            backoff = S_BACKOFF_MIN_MS;
            last_rx = qv_mono_ms();
            ping_sent = 0;
            atomic_fetch_add(&t->n_reconnects, 1);
            s_set_id(t, id);
            qv_info("redis invalidation connection up (client id %lld)", (long long) id);
            continue;
        }
        struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
        int pr = poll(&pfd, 1, S_POLL_MS);
        bool lost = false;
        const char *why = "";
        if (pr < 0 && errno != EINTR) { lost = true; why = strerror(errno); }
        if (pr > 0) {
            if (redisBufferRead(c) != REDIS_OK) { lost = true; why = c->errstr; }
            else {
                last_rx = qv_mono_ms();
                ping_sent = 0;
                void *rep = NULL;
                while (!lost && redisGetReplyFromReader(c, &rep) == REDIS_OK && rep) {
                    s_handle(t, rep);
                    freeReplyObject(rep);
                    rep = NULL;
                }
                if (c->err) { lost = true; why = c->errstr; }
            }
        }
        now = qv_mono_ms();
        if (!lost && !ping_sent && now - last_rx >= S_PING_IDLE_MS) {
            /* PING is allowed in RESP2 pub/sub mode and answered ["pong", ""]. */
            int done = 0;
            if (redisAppendCommand(c, "PING") != REDIS_OK) { lost = true; why = c->errstr; }
            while (!lost && !done)
                if (redisBufferWrite(c, &done) != REDIS_OK) { lost = true; why = c->errstr; }
            ping_sent = now;
        }
        if (!lost && ping_sent && now - ping_sent >= S_PING_DEAD_MS) {
            lost = true;
            why = "no answer to PING";
        }
        if (!lost) continue;

        /* Lost: first take the id away and drop the data connection that redirects to it,
         * then decide whether to flush (see the header). */
        qv_warn("redis invalidation connection (client id %lld) lost: %s", (long long) id,
                why && *why ? why : "closed");
        redisFree(c);
        c = NULL;
        int64_t old = id;
        s_set_id(t, 0);
        if (t->on_lost) t->on_lost(t->lost_ctx, old);
        c = s_connect(t, &id, err, sizeof err);
        if (c) {
            cache_tracking_flush(t);
            qv_warn("redis is up but invalidations may have been missed: local tier flushed");
            last_rx = qv_mono_ms();
            ping_sent = 0;
            atomic_fetch_add(&t->n_reconnects, 1);
            s_set_id(t, id);
            qv_info("redis invalidation connection up again (client id %lld)", (long long) id);
        } else {
            /* Redis itself is away: keep serving the local tier; cache_redis flushes it
             * when Redis is reachable again. */
            qv_warn("redis unreachable (%s): serving the local tier until it is back", err);
            warned = true;
            backoff = S_BACKOFF_MIN_MS;
            next_try = qv_mono_ms() + backoff;
        }
    }
    if (c) redisFree(c);
    s_set_id(t, 0);
    return NULL;
}

int cache_tracking_start(cache_tracking_t *t, const char *host, int port, const char *user,
                         const char *password, int timeout_ms,
                         void (*on_lost)(void *ctx, int64_t id), void *lost_ctx)
{
    if (t->started) return -1;
    t->host = strdup(host);
    t->user = user ? strdup(user) : NULL;
    t->password = password ? strdup(password) : NULL;
    t->port = port;
    t->timeout_ms = timeout_ms > 0 ? timeout_ms : 200;
    t->on_lost = on_lost;
    t->lost_ctx = lost_ctx;
    if (!t->host || (user && !t->user) || (password && !t->password)) return -1;
    if (pthread_create(&t->thread, NULL, s_main, t) != 0) return -1;
    t->started = true;
    return 0;
}
