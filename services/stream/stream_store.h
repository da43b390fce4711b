/* stream_store: audio files on disk under content-addressed names. A file is named by the
 * lowercase hex SHA-256 of its bytes (libsodium), so the same content uploaded twice is one
 * file and no error. Put writes a temporary file in the same directory, fsyncs it, renames it
 * to its name and fsyncs the directory: after a crash the name holds the whole file or does
 * not exist. Beside each file, "<sha>.meta" (written the same way, before the file) keeps
 * what the probe found (MIME type, duration, bitrate) so Stat and Read need no re-probe.
 * Names are only ever built from a validated 64-character lowercase hex string: input never
 * becomes a path. Thread-safe (no shared mutable state but a counter under a mutex). */
#ifndef STREAM_STORE_H
#define STREAM_STORE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct stream_store_t stream_store_t;

typedef struct {
    char    mime[32];
    int64_t duration_ms;
    int32_t bitrate;
} stream_meta_t;

typedef struct {
    int64_t       size;
    int64_t       mtime_ms;
    bool          has_meta;    /* false: the .meta file is missing (caller may re-probe) */
    stream_meta_t meta;
} stream_file_info_t;

/* Creates dir (and parents) if needed and removes temporary files older than an hour (left by
 * a crash). NULL when the directory cannot be created or opened (message logged).
 * Caller owns the result (stream_store_destroy). */
stream_store_t *stream_store_new(const char *dir);
void stream_store_destroy(stream_store_t **self_p);
const char *stream_store_dir(stream_store_t *self);

/* True when s is exactly 64 lowercase hex characters. */
bool stream_sha_valid(const char *s);
/* Lowercase hex SHA-256 of data into out (65 bytes). */
void stream_sha256_hex(const uint8_t *data, size_t len, char out[65]);

/* Stores data with its meta; sha_out (65 bytes) gets the name; *existed is set when the same
 * content was already stored (nothing rewritten). 0, or -1 on an I/O error (logged, and the
 * temporary file removed). */
int stream_store_put(stream_store_t *self, const uint8_t *data, size_t len,
                     const stream_meta_t *meta, char sha_out[65], bool *existed)
    __attribute__((warn_unused_result));
/* Rewrites the meta of an existing file (after a re-probe). 0 or -1. */
int stream_store_put_meta(stream_store_t *self, const char *sha, const stream_meta_t *meta);

/* sha must be valid (stream_sha_valid). 0 found, -1 no such file, -2 I/O error. */
int stream_store_stat(stream_store_t *self, const char *sha, stream_file_info_t *out);
/* Reads up to len bytes at offset into buf; *got gets how many (short at end of file).
 * Also fills *info. 0, -1 no such file, -2 I/O error, -3 offset >= size. */
int stream_store_read(stream_store_t *self, const char *sha, int64_t offset, size_t len,
                      uint8_t *buf, size_t *got, stream_file_info_t *info);
/* Reads a whole stored file into a malloc'd buffer (caller frees). NULL on error. */
uint8_t *stream_store_slurp(stream_store_t *self, const char *sha, size_t *len);

/* How many audio files the directory holds (counted at start, then kept up to date). */
int64_t stream_store_count(stream_store_t *self);
#endif
