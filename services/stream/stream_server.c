/* stream_server: the `stream` service (see stream_server.h). */
#include "stream_server.h"
#include "stream_store.h"
#include "stream_probe.h"
#include "qv_clock.h"
#include "qv_log.h"
#include "quaver/v1/stream.pb-c.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct stream_app_t {
    const stream_cfg_t *cfg;
    stream_store_t     *store;
    int64_t             started_ms;
    qv_metrics_t       *metrics;
    qv_metric_t        *m_bytes_read, *m_uploads, *m_files;
};

stream_app_t *stream_app_new(const stream_cfg_t *cfg)
{
    stream_app_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->cfg = cfg;
    a->started_ms = qv_mono_ms();
    a->store = stream_store_new(cfg->storage_dir);
    if (!a->store) { free(a); return NULL; }
    return a;
}

void stream_app_destroy(stream_app_t **self_p)
{
    if (!self_p || !*self_p) return;
    stream_store_destroy(&(*self_p)->store);
    free(*self_p);
    *self_p = NULL;
}

void stream_app_set_metrics(stream_app_t *a, qv_metrics_t *m)
{
    a->metrics = m;
    if (!m) return;
    a->m_bytes_read = qv_metrics_counter(m, "quaver_stream_bytes_read_total",
                                         "audio bytes returned by Read", NULL);
    a->m_uploads = qv_metrics_counter(m, "quaver_stream_uploads_total",
                                      "accepted uploads (including repeats of stored content)",
                                      NULL);
    a->m_files = qv_metrics_gauge(m, "quaver_stream_files", "audio files in storage_dir", NULL);
    qv_metric_set(a->m_files, (double) stream_store_count(a->store));
}

static void s_fill_info(Quaver__V1__AudioInfo *ai, const char *sha, const stream_file_info_t *fi)
{
    ai->sha256 = (char *) sha;
    ai->size = fi->size;
    ai->mime_type = (char *) fi->meta.mime;
    ai->duration_ms = fi->meta.duration_ms;
    ai->bitrate = fi->meta.bitrate;
    ai->mtime_ms = fi->mtime_ms;
}

/* A file stored before its meta was written (or whose meta was lost): probe it again. */
static void s_ensure_meta(stream_app_t *a, const char *sha, stream_file_info_t *fi)
{
    if (fi->has_meta) return;
    size_t len = 0;
    uint8_t *data = stream_store_slurp(a->store, sha, &len);
    if (!data) return;
    stream_probe_t p;
    char err[256];
    if (stream_probe(data, len, &p, err, sizeof err) == 0) {
        snprintf(fi->meta.mime, sizeof fi->meta.mime, "%s", p.mime);
        fi->meta.duration_ms = p.duration_ms;
        fi->meta.bitrate = p.bitrate;
        fi->has_meta = true;
        (void) stream_store_put_meta(a->store, sha, &fi->meta);
    } else {
        /* Not audio (placed there by hand?): record that, so every later Read does not read
         * and probe the whole file again. */
        stream_meta_t m = { "application/octet-stream", 0, 0 };
        fi->meta = m;
        fi->has_meta = true;
        (void) stream_store_put_meta(a->store, sha, &m);
    }
    free(data);
}

static int s_put(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    stream_app_t *a = app;
    const Quaver__V1__StreamPutRequest *req = (const Quaver__V1__StreamPutRequest *) msg;
    if ((int64_t) req->data.len > a->cfg->max_upload_bytes)
        return qv_reply_error(r, 413, "upload is %zu bytes, over max_upload_bytes %lld",
                              req->data.len, (long long) a->cfg->max_upload_bytes);
    stream_probe_t p;
    char err[256];
    if (stream_probe(req->data.data, req->data.len, &p, err, sizeof err) != 0) {
        qv_log(QV_LOG_INFO, call->request_id, "upload refused: %s", err);
        return qv_reply_error(r, 415, "%s", STREAM_PROBE_UNSUPPORTED);
    }
    stream_meta_t meta = { .duration_ms = p.duration_ms, .bitrate = p.bitrate };
    snprintf(meta.mime, sizeof meta.mime, "%s", p.mime);
    char sha[65];
    bool existed = false;
    if (stream_store_put(a->store, req->data.data, req->data.len, &meta, sha, &existed) != 0)
        return qv_reply_error(r, 500, "could not store the file");
    stream_file_info_t fi;
    if (stream_store_stat(a->store, sha, &fi) != 0)
        return qv_reply_error(r, 500, "stored file vanished");
    fi.meta = meta;   /* what we just probed, even if an older .meta says otherwise */
    if (a->m_uploads) qv_metric_add(a->m_uploads, 1);
    if (a->m_files) qv_metric_set(a->m_files, (double) stream_store_count(a->store));
    qv_log(QV_LOG_INFO, call->request_id, "stored %s (%s, %lld bytes, %lld ms)%s", sha,
           meta.mime, (long long) fi.size, (long long) meta.duration_ms,
           existed ? " (already there)" : "");
    Quaver__V1__AudioInfo ai = QUAVER__V1__AUDIO_INFO__INIT;
    s_fill_info(&ai, sha, &fi);
    return qv_reply_set(r, &ai.base) == 0 ? 201 : qv_reply_error(r, 500, "out of memory");
}

static int s_read(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    stream_app_t *a = app;
    const Quaver__V1__StreamReadRequest *req = (const Quaver__V1__StreamReadRequest *) msg;
    if (!stream_sha_valid(req->sha256))
        return qv_reply_error(r, 400, "sha256 must be 64 lowercase hex characters");
    if (req->offset < 0) return qv_reply_error(r, 400, "offset is negative");
    if (req->length < 0) return qv_reply_error(r, 400, "length is negative");
    /* length 0 means "as much as one Read gives". */
    size_t want = (size_t) (req->length == 0 || req->length > a->cfg->read_chunk_max
                            ? a->cfg->read_chunk_max : req->length);
    stream_file_info_t fi;
    int rc = stream_store_stat(a->store, req->sha256, &fi);
    if (rc == -1) return qv_reply_error(r, 404, "no audio file %s", req->sha256);
    if (rc != 0) return qv_reply_error(r, 500, "cannot read %s", req->sha256);
    if (req->offset >= fi.size) {
        /* The info goes along as the payload so the caller can answer with the size
         * (HTTP: Content-Range: bytes * /size); the text says it too. */
        s_ensure_meta(a, req->sha256, &fi);
        Quaver__V1__StreamReadReply rep = QUAVER__V1__STREAM_READ_REPLY__INIT;
        Quaver__V1__AudioInfo ai = QUAVER__V1__AUDIO_INFO__INIT;
        s_fill_info(&ai, req->sha256, &fi);
        rep.info = &ai;
        (void) qv_reply_set(r, &rep.base);
        return qv_reply_error(r, 416, "offset %lld is at or past the end (size %lld)",
                              (long long) req->offset, (long long) fi.size);
    }
    if ((int64_t) want > fi.size - req->offset) want = (size_t) (fi.size - req->offset);
    uint8_t *buf = malloc(want ? want : 1);
    if (!buf) return qv_reply_error(r, 500, "out of memory");
    size_t got = 0;
    rc = stream_store_read(a->store, req->sha256, req->offset, want, buf, &got, &fi);
    if (rc != 0) {
        free(buf);
        if (rc == -1) return qv_reply_error(r, 404, "no audio file %s", req->sha256);
        if (rc == -3) return qv_reply_error(r, 416, "offset %lld is at or past the end (size %lld)",
                                            (long long) req->offset, (long long) fi.size);
        return qv_reply_error(r, 500, "cannot read %s", req->sha256);
    }
    s_ensure_meta(a, req->sha256, &fi);
    Quaver__V1__StreamReadReply rep = QUAVER__V1__STREAM_READ_REPLY__INIT;
    Quaver__V1__AudioInfo ai = QUAVER__V1__AUDIO_INFO__INIT;
    s_fill_info(&ai, req->sha256, &fi);
    rep.info = &ai;
    rep.data.data = buf;
    rep.data.len = got;
    int ok = qv_reply_set(r, &rep.base);
    free(buf);
    if (ok != 0) return qv_reply_error(r, 500, "out of memory");
    if (a->m_bytes_read) qv_metric_add(a->m_bytes_read, (double) got);
    return 200;
}

static int s_stat(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    stream_app_t *a = app;
    const Quaver__V1__StreamStatRequest *req = (const Quaver__V1__StreamStatRequest *) msg;
    if (!stream_sha_valid(req->sha256))
        return qv_reply_error(r, 400, "sha256 must be 64 lowercase hex characters");
    stream_file_info_t fi;
    int rc = stream_store_stat(a->store, req->sha256, &fi);
    if (rc == -1) return qv_reply_error(r, 404, "no audio file %s", req->sha256);
    if (rc != 0) return qv_reply_error(r, 500, "cannot stat %s", req->sha256);
    s_ensure_meta(a, req->sha256, &fi);
    Quaver__V1__AudioInfo ai = QUAVER__V1__AUDIO_INFO__INIT;
    s_fill_info(&ai, req->sha256, &fi);
    return qv_reply_set(r, &ai.base) == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

static int s_health(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    stream_app_t *a = app;
    const char *dir = stream_store_dir(a->store);
    char detail[256];
    bool up = access(dir, W_OK | X_OK) == 0;
    struct statvfs vfs;
    if (!up) snprintf(detail, sizeof detail, "%s not writable: %s", dir, strerror(errno));
    else if (statvfs(dir, &vfs) == 0)
        snprintf(detail, sizeof detail, "%s: %llu bytes free", dir,
                 (unsigned long long) vfs.f_bavail * (unsigned long long) vfs.f_frsize);
    else snprintf(detail, sizeof detail, "%s", dir);
    Quaver__V1__Dependency dep = QUAVER__V1__DEPENDENCY__INIT;
    dep.name = "storage";
    dep.state = up ? "up" : "down";
    dep.detail = detail;
    Quaver__V1__Dependency *deps[1] = { &dep };
    Quaver__V1__HealthReply rep = QUAVER__V1__HEALTH_REPLY__INIT;
    rep.service = "stream";
    rep.instance = a->cfg->instance ? a->cfg->instance : "";
    rep.status = up ? "ok" : "down";
    rep.dependencies = deps;
    rep.n_dependencies = 1;
    rep.uptime_ms = qv_mono_ms() - a->started_ms;
    return qv_reply_set(r, &rep.base) == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

static int s_stats(void *app, const qv_call_t *call, const ProtobufCMessage *msg, qv_reply_t *r)
{
    stream_app_t *a = app;
    if (!a->metrics) return qv_reply_error(r, 503, "no metrics registry");
    qv_metric_set(a->m_files, (double) stream_store_count(a->store));
    Quaver__V1__StatsReply *rep = qv_stats_from_metrics(a->metrics, "stream");
    if (!rep) return qv_reply_error(r, 500, "out of memory");
    int rc = qv_reply_set(r, &rep->base);
    qv_stats_reply_free(rep);
    return rc == 0 ? 200 : qv_reply_error(r, 500, "out of memory");
}

const qv_method_t stream_methods[] = {
    { "Put",    &quaver__v1__stream_put_request__descriptor,  s_put,    0 },
    { "Read",   &quaver__v1__stream_read_request__descriptor, s_read,   QV_READONLY },
    { "Stat",   &quaver__v1__stream_stat_request__descriptor, s_stat,   QV_READONLY },
    { "Health", &quaver__v1__empty__descriptor,               s_health, QV_READONLY },
    { "Stats",  &quaver__v1__empty__descriptor,               s_stats,  QV_READONLY },
    { NULL, NULL, NULL, 0 }
};

int stream_server_run(const stream_cfg_t *cfg)
{
    stream_app_t *app = stream_app_new(cfg);
    if (!app) return -1;
    qv_server_t *srv = qv_server_new("stream", (const qv_common_cfg_t *) cfg, stream_methods, app);
    if (!srv) { stream_app_destroy(&app); return -1; }
    stream_app_set_metrics(app, qv_server_metrics(srv));
    qv_info("stream: storage %s (%lld files), max upload %lld bytes, read chunk %lld bytes",
            cfg->storage_dir, (long long) stream_store_count(app->store),
            (long long) cfg->max_upload_bytes, (long long) cfg->read_chunk_max);
    int rc = qv_server_run(srv);
    qv_server_destroy(&srv);
    stream_app_destroy(&app);
    return rc;
}
