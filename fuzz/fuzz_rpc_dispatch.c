/* fuzz_rpc_dispatch: qv_dispatch (lib/qv_rpc.c) on arbitrary MDP bodies, with the real
 * method tables of the daemons that run without a live backend:
 *   cache  - cache_methods over a cache_app_t with no Redis tier (local LRU only), so the
 *            handlers' validation (namespace, key, value, ttl) and the store run for real;
 *   stream - stream_methods over a stream_app_t on a temp storage_dir (removed at exit), so
 *            Put probes uploads and Read/Stat check the sha the caller names;
 *   dbopt  - its static table needs PostgreSQL, so a table with dbopt's request type
 *            (QueryRequest) and a handler running dbopt's own checks before the pool
 *            (dbopt_catalog_check: catalog lookup, parameter count, read-only match; values);
 *   any    - every other message type a daemon unpacks (bus, replies the gateway decodes),
 *            with a handler that touches the unpacked fields.
 * Input: byte 0 picks the table (bits 0-1) and the mode (bit 2): raw mode passes the rest
 * as the packed quaver.v1.Call, so the envelope decoding is fuzzed; wrapped mode builds a
 * valid Call (method from byte 1, admin from bit 3, deadline none) around the rest as the
 * payload, so the fuzzer reaches each method's payload decoding and handler at once.
 * The reply must always be a decodable quaver.v1.Result with a 1xx-5xx status. */
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "qv_rpc.h"
#include "qv_log.h"
#include "cache_server.h"
#include "stream_server.h"
#include "dbopt_catalog.h"
#include "quaver/v1/bus.pb-c.h"
#include "quaver/v1/cache.pb-c.h"
#include "quaver/v1/dbopt.pb-c.h"
#include "quaver/v1/dbopt_advise.pb-c.h"
#include "quaver/v1/dbopt_health.pb-c.h"
#include "quaver/v1/dbopt_observe.pb-c.h"
#include "quaver/v1/monitor.pb-c.h"
#include "quaver/v1/stream.pb-c.h"

/* ---- dbopt: the checks before the pool (dbopt_catalog_check, what dbopt's Query/Exec run
 * first), then the values as dbopt would pass them to libpq ---- */
static int s_db_run(const ProtobufCMessage *msg, qv_reply_t *reply, bool want_readonly)
{
    const Quaver__V1__QueryRequest *req = (const Quaver__V1__QueryRequest *) msg;
    const dbopt_stmt_t *st;
    char err[256];
    int status = dbopt_catalog_check(req, want_readonly, &st, err, sizeof err);
    if (status != 0)
        return qv_reply_error(reply, status, "%s", err);
    const char *values[DBOPT_CATALOG_MAX_PARAMS];
    dbopt_catalog_values(req, values);
    size_t total = 0;
    for (int i = 0; i < st->nparams; i++)
        total += values[i] ? strlen(values[i]) : 0;
    return total > 1000000 ? 413 : 503;   /* "no database here" */
}

static int s_db_query(void *app, const qv_call_t *c, const ProtobufCMessage *m, qv_reply_t *r)
{
    return s_db_run(m, r, true);
}

static int s_db_exec(void *app, const qv_call_t *c, const ProtobufCMessage *m, qv_reply_t *r)
{
    return s_db_run(m, r, false);
}

static const qv_method_t s_dbopt_methods[] = {
    { "Query",  &quaver__v1__query_request__descriptor, s_db_query, QV_READONLY },
    { "Exec",   &quaver__v1__query_request__descriptor, s_db_exec,  0 },
    { "Health", &quaver__v1__empty__descriptor,         NULL,       QV_READONLY | QV_ADMIN },
    { NULL, NULL, NULL, 0 }
};

/* ---- every other message type: unpack, then re-pack what was unpacked ---- */
static int s_any(void *app, const qv_call_t *c, const ProtobufCMessage *m, qv_reply_t *r)
{
    /* Packing walks every field the unpacker filled (strings, repeated, oneofs). */
    if (qv_reply_set(r, m) != 0)
        return qv_reply_error(r, 500, "out of memory");
    return 200;
}

static const qv_method_t s_any_methods[] = {
    { "BusMessage",      &quaver__v1__bus_message__descriptor,      s_any, 0 },
    { "MetricsSnapshot", &quaver__v1__metrics_snapshot__descriptor, s_any, 0 },
    { "HealthEvent",     &quaver__v1__health_event__descriptor,     s_any, 0 },
    { "Result",          &quaver__v1__result__descriptor,           s_any, 0 },
    { "HealthReply",     &quaver__v1__health_reply__descriptor,     s_any, 0 },
    { "StatsReply",      &quaver__v1__stats_reply__descriptor,      s_any, 0 },
    { "QueryReply",      &quaver__v1__query_reply__descriptor,      s_any, 0 },
    { "CacheGetReply",   &quaver__v1__cache_get_reply__descriptor,  s_any, 0 },
    { "CacheCountReply", &quaver__v1__cache_count_reply__descriptor, s_any, 0 },
    { "AudioInfo",       &quaver__v1__audio_info__descriptor,       s_any, 0 },
    { "StreamReadReply", &quaver__v1__stream_read_reply__descriptor, s_any, 0 },
    { "MetricsReply",    &quaver__v1__metrics_reply__descriptor,    s_any, 0 },
    /* dbopt's other methods need PostgreSQL: their requests' decoding, and the replies the
     * gateway decodes */
    { "AdviseRequest",      &quaver__v1__advise_request__descriptor,       s_any, 0 },
    { "AdviseReply",        &quaver__v1__advise_reply__descriptor,         s_any, 0 },
    { "ApplyIndexRequest",  &quaver__v1__apply_index_request__descriptor,  s_any, 0 },
    { "ApplyIndexReply",    &quaver__v1__apply_index_reply__descriptor,    s_any, 0 },
    { "ExplainReply",       &quaver__v1__explain_reply__descriptor,        s_any, 0 },
    { "SlowQueriesRequest", &quaver__v1__slow_queries_request__descriptor, s_any, 0 },
    { "SlowQueriesReply",   &quaver__v1__slow_queries_reply__descriptor,   s_any, 0 },
    { "DbHealthReply",      &quaver__v1__db_health_reply__descriptor,      s_any, 0 },
    { "MaintenanceRequest", &quaver__v1__maintenance_request__descriptor,  s_any, 0 },
    { "MaintenanceReply",   &quaver__v1__maintenance_reply__descriptor,    s_any, 0 },
    { NULL, NULL, NULL, 0 }
};

/* ---- the apps, made once ---- */
static cache_cfg_t   s_cache_cfg;
static cache_app_t  *s_cache;
static stream_cfg_t  s_stream_cfg;
static stream_app_t *s_stream;
static qv_metrics_t *s_metrics;
static char          s_dir[64];

static int s_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void s_cleanup(void)
{
    stream_app_destroy(&s_stream);
    cache_app_destroy(&s_cache);
    if (s_dir[0])
        nftw(s_dir, s_rm, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    qv_log_init("fuzz", "text", "error");   /* handlers log refusals at info */
    s_metrics = qv_metrics_new("fuzz", "fuzz-1");
    s_cache_cfg.instance = "fuzz";
    s_cache_cfg.local_max_entries = 64;
    s_cache_cfg.local_max_bytes = 1 << 16;
    s_cache_cfg.cache_ttl = 300;
    s_cache_cfg.cache_enabled = true;
    s_cache_cfg.max_key_bytes = 64;
    s_cache_cfg.max_value_bytes = 4096;
    s_cache_cfg.redis_timeout_ms = 100;
    s_cache = cache_app_new(&s_cache_cfg, NULL);
    snprintf(s_dir, sizeof s_dir, "/tmp/qv-fuzz-stream-XXXXXX");
    if (!mkdtemp(s_dir))
        abort();
    s_stream_cfg.instance = "fuzz";
    s_stream_cfg.storage_dir = s_dir;
    s_stream_cfg.max_upload_bytes = 1 << 16;
    s_stream_cfg.read_chunk_max = 4096;
    s_stream = stream_app_new(&s_stream_cfg);
    if (!s_metrics || !s_cache || !s_stream)
        abort();
    cache_app_set_metrics(s_cache, s_metrics);
    stream_app_set_metrics(s_stream, s_metrics);
    atexit(s_cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *service;
    const qv_method_t *methods;
    void *app = NULL;
    switch (data[0] & 3) {
    case 0: service = "cache"; methods = cache_methods; app = s_cache; break;
    case 1: service = "stream"; methods = stream_methods; app = s_stream; break;
    case 2: service = "dbopt"; methods = s_dbopt_methods; break;
    default: service = "any"; methods = s_any_methods; break;
    }
    bool wrapped = data[0] & 4;
    bool admin = data[0] & 8;
    data++, size--;

    uint8_t *body = NULL;
    size_t blen = 0;
    if (wrapped) {
        if (size < 1)
            return 0;
        int n = 0;
        while (methods[n].name)
            n++;
        Quaver__V1__Caller caller = QUAVER__V1__CALLER__INIT;
        caller.user_id = 42;
        caller.username = "fuzz";
        caller.admin = admin;
        Quaver__V1__Call call = QUAVER__V1__CALL__INIT;
        call.method = (char *) methods[data[0] % n].name;
        call.request_id = "fuzz";
        call.caller = &caller;
        call.payload.data = (uint8_t *) data + 1;
        call.payload.len = size - 1;
        blen = quaver__v1__call__get_packed_size(&call);
        body = malloc(blen);
        if (!body)
            return 0;
        quaver__v1__call__pack(&call, body);
    }
    else {
        blen = size;
        body = malloc(blen ? blen : 1);
        if (!body)
            return 0;
        memcpy(body, data, size);
    }

    uint8_t *out = NULL;
    size_t out_len = 0;
    if (qv_dispatch(service, methods, app, s_metrics, body, blen, &out, &out_len) == 0) {
        Quaver__V1__Result *res = quaver__v1__result__unpack(NULL, out_len, out);
        if (!res || res->status < 100 || res->status > 599)
            abort();   /* the dispatcher always answers with a valid Result */
        quaver__v1__result__free_unpacked(res, NULL);
    }
    free(out);
    free(body);
    return 0;
}
