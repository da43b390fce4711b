/* cache_redis: the shared tier over hiredis (see cache_redis.h for what it guarantees). */
#include "cache_redis.h"
#include "cache_tracking.h"
#include "qv_clock.h"
#include "qv_log.h"
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_BACKOFF_MIN_MS 500
#define S_BACKOFF_MAX_MS 10000
#define S_IDLE_PING_MS   1000
#define S_SCAN_COUNT     "500"

struct cache_redis_t {
    pthread_mutex_t mu;
    redisContext   *c;            /* NULL while down */
    uint64_t        generation;   /* bumped on every (re)connect, so a SCAN notices */
    char            host[256];
    int             port;
    char           *user, *password;
    int             db;
    int             timeout_ms;
    int64_t         backoff_ms, next_try_ms, last_ok_ms;
    uint64_t        errors;
    char            last_error[160];
    /* Keys ('k') and prefixes ('p') written or deleted while down, replayed on reconnect. */
    char          **pending;
    size_t          npending;
    bool            pending_overflow;
    void          (*on_reconnect)(void *ctx);
    void           *on_reconnect_ctx;
    cache_tracking_t *tracking;   /* NULL: no coherence (URL checks in selftests) */
    int64_t         redirect_id;  /* the invalidation connection the data connection uses */
    uint64_t        round_trips;
};

#define S_PENDING_MAX 10000

static void s_pending_add(cache_redis_t *r, char kind, const char *what);
static int s_pending_replay(cache_redis_t *r, redisContext *c);

static struct timeval s_tv(int ms)
{
    return (struct timeval){ .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
}

/* redis://[[user]:password@]host[:port][/db] */
static int s_parse_url(cache_redis_t *r, const char *url)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0) p += 8;
    else if (strstr(p, "://")) return -1;
    r->port = 6379;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t) (at - p));
        if (!colon) return -1;
        if (colon > p) r->user = strndup(p, (size_t) (colon - p));
        r->password = strndup(colon + 1, (size_t) (at - colon - 1));
        p = at + 1;
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof r->host) return -1;
    memcpy(r->host, p, hl);
    r->host[hl] = 0;
    p += hl;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port < 1 || port > 65535) return -1;
        r->port = (int) port;
        p = end;
    }
    if (*p == '/') {
        if (p[1]) {
            char *end;
            long db = strtol(p + 1, &end, 10);
            if (*end || db < 0 || db > 1000000) return -1;
            r->db = (int) db;
        }
    } else if (*p) return -1;
    return 0;
}

/* Runs one command on a fresh context during connect; 0 when it did not fail. */
static int s_setup_cmd(redisContext *c, int argc, const char **argv, char *err, size_t errlen)
{
    redisReply *rep = redisCommandArgv(c, argc, argv, NULL);
    if (!rep) { snprintf(err, errlen, "%s", c->errstr); return -1; }
    int rc = rep->type == REDIS_REPLY_ERROR ? -1 : 0;
    if (rc) snprintf(err, errlen, "%s: %s", argv[0], rep->str);
    freeReplyObject(rep);
    return rc;
}

/* Connects without holding the lock (a connect may take the whole timeout). */
static redisContext *s_connect(cache_redis_t *r, int64_t redirect_id, char *err,
                               size_t errlen)
{
    redisContext *c = redisConnectWithTimeout(r->host, r->port, s_tv(r->timeout_ms));
    if (!c) { snprintf(err, errlen, "out of memory"); return NULL; }
    if (c->err) { snprintf(err, errlen, "%s", c->errstr); redisFree(c); return NULL; }
    redisSetTimeout(c, s_tv(r->timeout_ms));
    int ok = 0;
    if (r->password) {
        const char *a3[] = { "AUTH", r->user ? r->user : "", r->password };
        ok = r->user ? s_setup_cmd(c, 3, a3, err, errlen)
                     : s_setup_cmd(c, 2, (const char *[]){ "AUTH", r->password }, err, errlen);
    }
    if (ok == 0 && r->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->db);
        ok = s_setup_cmd(c, 2, (const char *[]){ "SELECT", db }, err, errlen);
    }
    if (ok == 0) ok = s_setup_cmd(c, 1, (const char *[]){ "PING" }, err, errlen);
    if (ok == 0 && redirect_id > 0) {
        /* BCAST on our prefix: Redis tells the invalidation connection of every change to a
         * quaver: key, by anyone, without having to remember what we read. NOLOOP: not of
         * our own writes, which the server already applied to the local tier in order. */
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long) redirect_id);
        ok = s_setup_cmd(c, 9, (const char *[]){ "CLIENT", "TRACKING", "on", "REDIRECT", id,
                                                 "BCAST", "PREFIX", "quaver:", "NOLOOP" },
                         err, errlen);
    }
    if (ok != 0) { redisFree(c); return NULL; }
    return c;
}

/* A transport error: drop the connection and wait a back-off before the next try. Lock held. */
static void s_mark_down(cache_redis_t *r, const char *why)
{
    r->errors++;
    snprintf(r->last_error, sizeof r->last_error, "%s", why);
    if (r->c) {
        qv_warn("redis %s:%d down (%s), serving the local tier", r->host, r->port, why);
        redisFree(r->c);
        r->c = NULL;
    }
    r->backoff_ms = S_BACKOFF_MIN_MS;
    r->next_try_ms = qv_mono_ms() + r->backoff_ms;
}

static void s_on_tracking_lost(void *ctx, int64_t id)
{
    cache_redis_t *r = ctx;
    pthread_mutex_lock(&r->mu);
    if (r->c && r->redirect_id == id) s_mark_down(r, "invalidation connection lost");
    pthread_mutex_unlock(&r->mu);
}

/* The invalidation connection's id, waiting up to wait_ms for it; 0 when it is not up. */
static int64_t s_tracking_id(cache_redis_t *r, int wait_ms)
{
    if (!r->tracking) return -1;   /* no coherence wanted: connect without tracking */
    int64_t id = cache_tracking_id(r->tracking);
    for (int i = 0; id == 0 && i < wait_ms / 10; i++) {
        struct timespec ts = { 0, 10 * 1000000L };
        nanosleep(&ts, NULL);
        id = cache_tracking_id(r->tracking);
    }
    return id;
}

cache_redis_t *cache_redis_new(const char *url, int timeout_ms, cache_tracking_t *tracking)
{
    cache_redis_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    if (s_parse_url(r, url) != 0) {
        free(r->user); free(r->password); free(r);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    r->timeout_ms = timeout_ms > 0 ? timeout_ms : 200;
    r->backoff_ms = S_BACKOFF_MIN_MS;
    r->tracking = tracking;
    char err[160] = "";
    if (tracking && cache_tracking_start(tracking, r->host, r->port, r->user, r->password,
                                         r->timeout_ms, s_on_tracking_lost, r) != 0) {
        cache_redis_destroy(&r);
        return NULL;
    }
    int64_t tid = s_tracking_id(r, 2 * r->timeout_ms);
    if (tid != 0) r->c = s_connect(r, tid, err, sizeof err);
    else snprintf(err, sizeof err, "invalidation connection not up");
    if (r->c) {
        r->redirect_id = tid;
        r->generation = 1;
        r->last_ok_ms = qv_mono_ms();
        qv_info("redis %s:%d up", r->host, r->port);
    } else {
        r->errors++;
        snprintf(r->last_error, sizeof r->last_error, "%s", err);
        r->next_try_ms = qv_mono_ms() + r->backoff_ms;
        qv_warn("redis %s:%d unreachable at start (%s); serving the local tier, will retry",
                r->host, r->port, err);
    }
    return r;
}

void cache_redis_destroy(cache_redis_t **self_p)
{
    if (!self_p || !*self_p) return;
    cache_redis_t *r = *self_p;
    if (r->c) redisFree(r->c);
    for (size_t i = 0; i < r->npending; i++) free(r->pending[i]);
    free(r->pending);
    free(r->user);
    free(r->password);
    pthread_mutex_destroy(&r->mu);
    free(r);
    *self_p = NULL;
}

int cache_redis_tick(cache_redis_t *self)
{
    int64_t now = qv_mono_ms();
    pthread_mutex_lock(&self->mu);
    bool down = self->c == NULL;
    bool due = down && now >= self->next_try_ms;
    bool idle = !down && now - self->last_ok_ms >= S_IDLE_PING_MS;
    if (idle) {
        /* A ping when idle, so health shows a dead Redis even when no request came. */
        redisReply *rep = redisCommand(self->c, "PING");
        if (!rep) s_mark_down(self, self->c->errstr);
        else { self->last_ok_ms = now; freeReplyObject(rep); }
    }
    pthread_mutex_unlock(&self->mu);
    if (!due) return 0;

    char err[160] = "";
    /* No invalidation connection yet: nothing to redirect to, so no coherent local tier;
     * stay down and look again next tick (cheap: no network). */
    int64_t tid = s_tracking_id(self, 0);
    if (tid == 0) return 0;
    redisContext *c = s_connect(self, tid, err, sizeof err);
    pthread_mutex_lock(&self->mu);
    if (c && tid > 0 && cache_tracking_id(self->tracking) != tid) {
        /* The invalidation connection changed while we connected: redirect is dead. */
        snprintf(err, sizeof err, "invalidation connection changed while connecting");
        redisFree(c);
        c = NULL;
    }
    int came_back = 0;
    /* Replay under the lock: no request may read Redis before the writes it missed are
     * undone. The list is bounded, so this is bounded too. */
    if (c && s_pending_replay(self, c) != 0) {
        snprintf(err, sizeof err, "replaying pending invalidations: %.100s", c->errstr);
        redisFree(c);
        c = NULL;
    }
    if (c && self->pending_overflow) {
        qv_error("redis: more than %d writes while down; Redis may serve older values "
                 "until their TTL passes", S_PENDING_MAX);
        self->pending_overflow = false;
    }
    if (c) {
        if (self->on_reconnect) self->on_reconnect(self->on_reconnect_ctx);
        self->c = c;
        self->redirect_id = tid;
        self->generation++;
        self->backoff_ms = S_BACKOFF_MIN_MS;
        self->last_ok_ms = qv_mono_ms();
        self->last_error[0] = 0;
        came_back = 1;
        qv_info("redis %s:%d up again", self->host, self->port);
    } else {
        self->errors++;
        snprintf(self->last_error, sizeof self->last_error, "%s", err);
        self->backoff_ms = self->backoff_ms * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS
                                                                   : self->backoff_ms * 2;
        self->next_try_ms = qv_mono_ms() + self->backoff_ms;
    }
    pthread_mutex_unlock(&self->mu);
    return came_back;
}

void cache_redis_on_reconnect(cache_redis_t *self, void (*fn)(void *ctx), void *ctx)
{
    self->on_reconnect = fn;
    self->on_reconnect_ctx = ctx;
}

bool cache_redis_up(cache_redis_t *self)
{
    pthread_mutex_lock(&self->mu);
    bool up = self->c != NULL;
    pthread_mutex_unlock(&self->mu);
    return up;
}

uint64_t cache_redis_errors(cache_redis_t *self)
{
    pthread_mutex_lock(&self->mu);
    uint64_t n = self->errors;
    pthread_mutex_unlock(&self->mu);
    return n;
}

void cache_redis_describe(cache_redis_t *self, char *buf, size_t len)
{
    pthread_mutex_lock(&self->mu);
    if (self->c || !self->last_error[0])
        snprintf(buf, len, "%s:%d", self->host, self->port);
    else
        snprintf(buf, len, "%s:%d: %s", self->host, self->port, self->last_error);
    pthread_mutex_unlock(&self->mu);
}

/* Runs a command; returns the reply (caller frees) or NULL when down or the transport
 * failed (then marks down). An error reply is returned as is and counted. Lock held. */
static redisReply *s_cmd(cache_redis_t *r, int argc, const char **argv, const size_t *lens)
{
    if (!r->c) return NULL;
    redisReply *rep = redisCommandArgv(r->c, argc, argv, lens);
    r->round_trips++;
    if (!rep) { s_mark_down(r, r->c->errstr); return NULL; }
    r->last_ok_ms = qv_mono_ms();
    if (rep->type == REDIS_REPLY_ERROR) {
        r->errors++;
        snprintf(r->last_error, sizeof r->last_error, "%s", rep->str);
    }
    return rep;
}

int cache_redis_get(cache_redis_t *self, const char *key, uint8_t **value_p, size_t *vlen_p,
                    int64_t *pttl_p, cache_ticket_t *ticket)
{
    int rc = -1;
    pthread_mutex_lock(&self->mu);
    if (!self->c) goto done;
    rc = -2;
    /* The placeholder (cache_tracking.h): the ticket is taken before the GET is sent, under
     * the connection's lock, so a write of ours sent after it, or an invalidation applied
     * after it, makes the caller's commit of this reply fail. */
    if (ticket && self->tracking) *ticket = cache_tracking_ticket(self->tracking, key);
    self->round_trips++;
    /* GET and PTTL pipelined: one round trip. */
    redisAppendCommand(self->c, "GET %s", key);
    redisAppendCommand(self->c, "PTTL %s", key);
    redisReply *get = NULL, *ttl = NULL;
    if (redisGetReply(self->c, (void **) &get) != REDIS_OK
        || redisGetReply(self->c, (void **) &ttl) != REDIS_OK) {
        if (get) freeReplyObject(get);
        s_mark_down(self, self->c->errstr);
        goto done;
    }
    self->last_ok_ms = qv_mono_ms();
    if (get->type == REDIS_REPLY_NIL) rc = 0;
    else if (get->type == REDIS_REPLY_STRING) {
        uint8_t *copy = malloc(get->len ? get->len : 1);
        if (copy) {
            memcpy(copy, get->str, get->len);
            *value_p = copy;
            *vlen_p = get->len;
            *pttl_p = ttl->type == REDIS_REPLY_INTEGER && ttl->integer > 0 ? ttl->integer : -1;
            rc = 1;
        }
    } else {
        self->errors++;   /* WRONGTYPE or similar: a key someone else wrote; a miss for us */
        snprintf(self->last_error, sizeof self->last_error, "GET: unexpected reply type %d",
                 get->type);
        rc = 0;
    }
    freeReplyObject(get);
    freeReplyObject(ttl);
done:
    pthread_mutex_unlock(&self->mu);
    return rc;
}

int cache_redis_set(cache_redis_t *self, const char *key, const void *value, size_t vlen,
                    int64_t ttl_ms, cache_ticket_t *ticket)
{
    char px[24];
    snprintf(px, sizeof px, "%lld", (long long) (ttl_ms > 0 ? ttl_ms : 1));
    const char *argv[] = { "SET", key, value ? (const char *) value : "", "PX", px };
    size_t lens[] = { 3, strlen(key), vlen, 2, strlen(px) };
    pthread_mutex_lock(&self->mu);
    bool was_up = self->c != NULL;
    /* Bumped in the order the writes reach Redis (we hold the connection), so that of two
     * concurrent Sets of one key only the one Redis keeps may commit locally, and a GET sent
     * before this SET cannot cache its older reply. */
    if (was_up && ticket && self->tracking) *ticket = cache_tracking_bump(self->tracking, key);
    redisReply *rep = s_cmd(self, 5, argv, lens);
    int rc = rep && rep->type == REDIS_REPLY_STATUS ? 0 : was_up ? -2 : -1;
    if (!self->c) s_pending_add(self, 'k', key);
    if (rep) freeReplyObject(rep);
    pthread_mutex_unlock(&self->mu);
    return rc;
}

int cache_redis_del(cache_redis_t *self, const char *key)
{
    const char *argv[] = { "UNLINK", key };
    pthread_mutex_lock(&self->mu);
    bool was_up = self->c != NULL;
    if (was_up && self->tracking) (void) cache_tracking_bump(self->tracking, key);
    redisReply *rep = s_cmd(self, 2, argv, NULL);
    int rc = rep && rep->type == REDIS_REPLY_INTEGER ? (int) rep->integer : was_up ? -2 : -1;
    if (!self->c) s_pending_add(self, 'k', key);
    if (rep) freeReplyObject(rep);
    pthread_mutex_unlock(&self->mu);
    return rc;
}

int cache_redis_match_pattern(const char *prefix, char *out, size_t len)
{
    size_t o = 0;
    for (const char *p = prefix; *p; p++) {
        if (strchr("*?[]\\", *p)) { if (o + 1 >= len) return -1; out[o++] = '\\'; }
        if (o + 1 >= len) return -1;
        out[o++] = *p;
    }
    if (o + 2 > len) return -1;
    out[o++] = '*';
    out[o] = 0;
    return 0;
}

/* One SCAN + UNLINK batch on c. Returns 0 and updates cursor/removed, 1 on an error reply,
 * -1 on a transport error. */
static int s_scan_step(redisContext *c, char *cursor, size_t clen, const char *match,
                       int64_t *removed)
{
    const char *sargv[] = { "SCAN", cursor, "MATCH", match, "COUNT", S_SCAN_COUNT };
    redisReply *rep = redisCommandArgv(c, 6, sargv, NULL);
    if (!rep) return -1;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2
        || rep->element[0]->type != REDIS_REPLY_STRING
        || rep->element[1]->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        return 1;
    }
    snprintf(cursor, clen, "%s", rep->element[0]->str);
    redisReply *keys = rep->element[1];
    int rc = 0;
    if (keys->elements > 0) {
        size_t n = keys->elements + 1;
        const char **argv = malloc(n * sizeof *argv);
        size_t *lens = malloc(n * sizeof *lens);
        redisReply *u = NULL;
        if (argv && lens) {
            argv[0] = "UNLINK"; lens[0] = 6;
            for (size_t i = 0; i < keys->elements; i++) {
                argv[i + 1] = keys->element[i]->str;
                lens[i + 1] = keys->element[i]->len;
            }
            u = redisCommandArgv(c, (int) n, argv, lens);
            if (!u) rc = -1;
            else if (u->type == REDIS_REPLY_INTEGER) *removed += u->integer;
            else rc = 1;
        } else rc = 1;
        free(argv);
        free(lens);
        if (u) freeReplyObject(u);
    }
    freeReplyObject(rep);
    return rc;
}

char *cache_redis_prefix_match(const char *prefix)
{
    size_t mlen = strlen(prefix) * 2 + 2;
    char *match = malloc(mlen);
    if (match && cache_redis_match_pattern(prefix, match, mlen) != 0) { free(match); return NULL; }
    return match;
}

/* Remembers a key ('k') or prefix ('p') to UNLINK on reconnect. Lock held. */
static void s_pending_add(cache_redis_t *r, char kind, const char *what)
{
    /* Prefixes are rare and each replay is a SCAN of the keyspace: keep each once. Keys are
     * cheap to repeat (replayed in batched UNLINKs), so they are not searched for. */
    if (kind != 'k')
        for (size_t i = 0; i < r->npending; i++)
            if (r->pending[i][0] == kind && strcmp(r->pending[i] + 1, what) == 0) return;
    if (r->npending >= S_PENDING_MAX) { r->pending_overflow = true; return; }
    if (r->npending % 64 == 0) {
        char **n = realloc(r->pending, (r->npending + 64) * sizeof *n);
        if (!n) { r->pending_overflow = true; return; }
        r->pending = n;
    }
    size_t len = strlen(what);
    char *e = malloc(len + 2);
    if (!e) { r->pending_overflow = true; return; }
    e[0] = kind;
    memcpy(e + 1, what, len + 1);
    r->pending[r->npending++] = e;
}

/* Replays the pending list on c (not yet shared, or lock held): runs of keys go as one
 * UNLINK of up to S_REPLAY_BATCH keys, prefixes as SCAN + UNLINK. 0, or -1 on a transport
 * error (what was not replayed is kept for the next try). */
#define S_REPLAY_BATCH 512
static int s_pending_replay(cache_redis_t *r, redisContext *c)
{
    size_t done = 0;
    int rc = 0;
    const char *argv[S_REPLAY_BATCH + 1];
    while (done < r->npending && rc == 0) {
        const char *e = r->pending[done];
        if (e[0] == 'k') {
            int n = 0;
            argv[n++] = "UNLINK";
            while (done + (size_t) n - 1 < r->npending && n <= S_REPLAY_BATCH
                   && r->pending[done + (size_t) n - 1][0] == 'k') {
                argv[n] = r->pending[done + (size_t) n - 1] + 1;
                n++;
            }
            redisReply *u = redisCommandArgv(c, n, argv, NULL);
            if (!u) { rc = -1; break; }
            freeReplyObject(u);
            done += (size_t) n - 1;
        } else {
            char *match = e[0] == 'g' ? strdup(e + 1) : cache_redis_prefix_match(e + 1);
            char cursor[32] = "0";
            int64_t removed = 0;
            do {
                int st = match ? s_scan_step(c, cursor, sizeof cursor, match, &removed) : 1;
                if (st < 0) { rc = -1; break; }
                if (st > 0) break;
            } while (strcmp(cursor, "0") != 0);
            free(match);
            if (rc < 0) break;
            done++;
        }
    }
    for (size_t i = 0; i < done; i++) free(r->pending[i]);
    if (done > 0) {   /* r->pending is NULL when nothing was ever remembered */
        memmove(r->pending, r->pending + done, (r->npending - done) * sizeof *r->pending);
        r->npending -= done;
    }
    return rc;
}

int64_t cache_redis_del_match(cache_redis_t *self, const char *match, uint64_t *rounds)
{
    char cursor[32] = "0";
    int64_t removed = 0;
    uint64_t gen = 0;
    bool first = true;
    for (;;) {
        pthread_mutex_lock(&self->mu);
        if (!self->c) {
            s_pending_add(self, 'g', match);
            pthread_mutex_unlock(&self->mu);
            removed = first ? -1 : -2;
            break;
        }
        /* A reconnect between batches: the pending replay does not know of this scan, so
         * restart it from the beginning on the new connection. */
        if (!first && gen != self->generation) { snprintf(cursor, sizeof cursor, "0"); }
        gen = self->generation;
        first = false;
        int st = s_scan_step(self->c, cursor, sizeof cursor, match, &removed);
        self->round_trips += 2;
        if (rounds) *rounds += 2;
        if (st < 0) {
            s_mark_down(self, self->c->errstr);
            s_pending_add(self, 'g', match);
        } else {
            self->last_ok_ms = qv_mono_ms();
            if (st > 0) { self->errors++; snprintf(self->last_error, sizeof self->last_error,
                                                   "SCAN/UNLINK: unexpected reply"); }
        }
        pthread_mutex_unlock(&self->mu);
        if (st != 0) { removed = -2; break; }
        if (strcmp(cursor, "0") == 0) break;
    }
    return removed;
}

int cache_redis_mget(cache_redis_t *self, const char *const *keys, size_t n,
                     cache_redis_value_t *out)
{
    if (n == 0) return 0;
    pthread_mutex_lock(&self->mu);
    if (!self->c) { pthread_mutex_unlock(&self->mu); return -1; }
    const char **argv = malloc((n + 1) * sizeof *argv);
    if (!argv) { pthread_mutex_unlock(&self->mu); return -2; }
    argv[0] = "MGET";
    for (size_t i = 0; i < n; i++) {
        argv[i + 1] = keys[i];
        if (self->tracking) out[i].ticket = cache_tracking_ticket(self->tracking, keys[i]);
    }
    /* MGET and one PTTL per key, pipelined: one round trip. */
    int rc = redisAppendCommandArgv(self->c, (int) n + 1, argv, NULL) == REDIS_OK ? 0 : -2;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (redisAppendCommand(self->c, "PTTL %s", keys[i]) != REDIS_OK) rc = -2;
    free(argv);
    self->round_trips++;
    redisReply *mg = NULL;
    if (rc == 0 && redisGetReply(self->c, (void **) &mg) != REDIS_OK) rc = -3;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        redisReply *t = NULL;
        if (redisGetReply(self->c, (void **) &t) != REDIS_OK) { rc = -3; break; }
        out[i].pttl = t->type == REDIS_REPLY_INTEGER && t->integer > 0 ? t->integer : -1;
        freeReplyObject(t);
    }
    if (rc == -3 || (rc == -2 && self->c->err)) {
        s_mark_down(self, self->c->errstr);
        rc = -2;
    } else if (rc == 0) {
        self->last_ok_ms = qv_mono_ms();
        if (mg->type != REDIS_REPLY_ARRAY || mg->elements != n) {
            self->errors++;
            snprintf(self->last_error, sizeof self->last_error, "MGET: unexpected reply");
            rc = -2;
        } else {
            for (size_t i = 0; i < n; i++) {
                redisReply *v = mg->element[i];
                out[i].found = false;
                if (v->type != REDIS_REPLY_STRING) continue;   /* nil, or not a string */
                out[i].value = malloc(v->len ? v->len : 1);
                if (!out[i].value) continue;
                memcpy(out[i].value, v->str, v->len);
                out[i].vlen = v->len;
                out[i].found = true;
            }
        }
    }
    if (mg) freeReplyObject(mg);
    pthread_mutex_unlock(&self->mu);
    return rc;
}

uint64_t cache_redis_round_trips(cache_redis_t *self)
{
    pthread_mutex_lock(&self->mu);
    uint64_t n = self->round_trips;
    pthread_mutex_unlock(&self->mu);
    return n;
}

int cache_redis_scan(cache_redis_t *self, char *cursor, size_t clen, const char *match,
                     char ***keys_p, size_t *n_p)
{
    *keys_p = NULL;
    *n_p = 0;
    pthread_mutex_lock(&self->mu);
    const char *argv[] = { "SCAN", cursor, "MATCH", match, "COUNT", S_SCAN_COUNT };
    redisReply *rep = s_cmd(self, 6, argv, NULL);
    int rc = rep ? 0 : (self->c ? -2 : -1);
    if (rep && (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2
                || rep->element[0]->type != REDIS_REPLY_STRING
                || rep->element[1]->type != REDIS_REPLY_ARRAY)) {
        if (rep->type != REDIS_REPLY_ERROR) {
            self->errors++;
            snprintf(self->last_error, sizeof self->last_error, "SCAN: unexpected reply");
        }
        rc = -2;
    }
    if (rc == 0) {
        redisReply *ks = rep->element[1];
        char **keys = calloc(ks->elements ? ks->elements : 1, sizeof *keys);
        size_t n = 0;
        for (size_t i = 0; keys && i < ks->elements; i++) {
            redisReply *k = ks->element[i];
            if (k->type != REDIS_REPLY_STRING || strlen(k->str) != k->len) continue;
            if (!(keys[n] = strdup(k->str))) break;
            n++;
        }
        if (!keys) rc = -2;
        else {
            snprintf(cursor, clen, "%s", rep->element[0]->str);
            *keys_p = keys;
            *n_p = n;
        }
    }
    if (rep) freeReplyObject(rep);
    pthread_mutex_unlock(&self->mu);
    return rc;
}

void cache_redis_keys_free(char **keys, size_t n)
{
    for (size_t i = 0; keys && i < n; i++) free(keys[i]);
    free(keys);
}

/* ---- Redis glob syntax ------------------------------------------------------------------ */

int cache_redis_glob_check(const char *pat, char *err, size_t errlen)
{
    for (const char *p = pat; *p; p++) {
        if (*p == '\\') {
            if (!p[1]) { snprintf(err, errlen, "pattern is not a glob: '%s' ends in a lone "
                                  "backslash", pat); return -1; }
            p++;
        } else if (*p == '[') {
            const char *q = p + 1;
            if (*q == '^') q++;
            for (;; q++) {
                if (!*q) { snprintf(err, errlen, "pattern is not a glob: '%s' has an unbalanced "
                                    "'['", pat); return -1; }
                if (*q == '\\') {
                    if (!q[1]) { snprintf(err, errlen, "pattern is not a glob: '%s' ends in a "
                                          "lone backslash", pat); return -1; }
                    q++;
                } else if (*q == ']') break;
            }
            p = q;
        }
    }
    return 0;
}

/* Redis's stringmatchlen (util.c), case-sensitive, on NUL-terminated strings. Recursion on
 * '*' is bounded by the pattern's stars; patterns are at most max_key_bytes long. */
int cache_redis_glob_match(const char *p, const char *s)
{
    while (*p) {
        switch (*p) {
        case '*':
            while (p[1] == '*') p++;
            if (!p[1]) return 1;
            for (; *s; s++)
                if (cache_redis_glob_match(p + 1, s)) return 1;
            return 0;
        case '?':
            if (!*s) return 0;
            s++;
            break;
        case '[': {
            p++;
            int neg = *p == '^';
            if (neg) p++;
            int match = 0;
            for (;;) {
                if (*p == '\\' && p[1]) {
                    p++;
                    if (*p == *s) match = 1;
                } else if (*p == ']') {
                    break;
                } else if (!*p) {
                    p--;
                    break;
                } else if (p[1] == '-' && p[2]) {
                    int lo = (unsigned char) p[0], hi = (unsigned char) p[2];
                    if (lo > hi) { int t = lo; lo = hi; hi = t; }
                    int c = (unsigned char) *s;
                    if (c >= lo && c <= hi) match = 1;
                    p += 2;
                } else if (*p == *s) {
                    match = 1;
                }
                p++;
            }
            if (neg) match = !match;
            if (!match || !*s) return 0;
            s++;
            break;
        }
        case '\\':
            if (p[1]) p++;
            /* fall through */
        default:
            if (*p != *s) return 0;
            s++;
            break;
        }
        p++;
        if (!*s) {
            while (*p == '*') p++;
            break;
        }
    }
    return !*p && !*s;
}

size_t cache_redis_glob_literal_prefix(const char *pat, char *out, size_t len)
{
    size_t o = 0;
    for (const char *p = pat; *p && o + 1 < len; p++) {
        if (*p == '*' || *p == '?' || *p == '[') break;
        if (*p == '\\' && p[1]) p++;
        out[o++] = *p;
    }
    out[o] = 0;
    return o;
}
