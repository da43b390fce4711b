/* stream_probe: what an uploaded file is, told by its content and never by its name.
 * MP3 (an ID3v2 tag or an MPEG audio frame sync at the start) is probed with libmpg123;
 * WAV, FLAC and Ogg (by their magic bytes) with libsndfile. A file is accepted only when the
 * library parses it and it holds at least one audio frame; for WAV/FLAC/Ogg every frame the
 * header promises must also decode (a truncated upload is refused, not stored). Everything
 * runs over the bytes in memory: nothing is written before the probe says yes.
 * Libraries are kept quiet: mpg123 gets MPG123_QUIET, libsndfile only logs internally.
 * Thread-safe (each call has its own library handles). */
#ifndef STREAM_PROBE_H
#define STREAM_PROBE_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char    mime[32];        /* audio/mpeg, audio/wav, audio/flac, audio/ogg */
    int64_t duration_ms;
    int32_t bitrate;         /* bits per second */
} stream_probe_t;

#define STREAM_PROBE_UNSUPPORTED "not a supported audio file (MP3, WAV, FLAC, Ogg)"

/* 0 and *out filled when data is a supported audio file; -1 otherwise, with a reason in err
 * (starting with STREAM_PROBE_UNSUPPORTED). */
int stream_probe(const uint8_t *data, size_t len, stream_probe_t *out, char *err, size_t errlen);
#endif
