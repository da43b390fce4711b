/* stream_server: the `stream` MDP service (Put, Read, Stat, Health, Stats; docs/CONTRACTS.md)
 * over stream_store and stream_probe. An upload is probed in memory before anything is
 * written: 413 over max_upload_bytes, 415 when it is not MP3/WAV/FLAC/Ogg, else stored and
 * answered 201 with its AudioInfo (also when the same content was already there). */
#ifndef STREAM_SERVER_H
#define STREAM_SERVER_H
#include "qv_config.h"
#include "qv_rpc.h"

typedef struct {
    QV_COMMON_CFG_FIELDS
    char   *storage_dir;
    int64_t max_upload_bytes;
    int64_t read_chunk_max;
} stream_cfg_t;

/* Runs until SIGINT/SIGTERM. cfg is borrowed. 0 on a clean stop, -1 if it could not start. */
int stream_server_run(const stream_cfg_t *cfg);

/* The application behind the handlers, exposed for the selftest (qv_dispatch, no broker). */
typedef struct stream_app_t stream_app_t;
/* Caller owns the result (stream_app_destroy). NULL when storage_dir is unusable. */
stream_app_t *stream_app_new(const stream_cfg_t *cfg);
void stream_app_destroy(stream_app_t **self_p);
/* Where metrics go (borrowed, may stay unset). */
void stream_app_set_metrics(stream_app_t *self, qv_metrics_t *metrics);
extern const qv_method_t stream_methods[];
#endif
