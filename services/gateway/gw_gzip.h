/* gw_gzip: response compression (DESIGN.md: the gateway does gzip; civetweb 1.15 has no zlib
 * of its own). gw_send compresses a whole-body response when all of these hold:
 *   - gzip_min_bytes > 0 and the body is at least that long (the seeds' 1 KB by default:
 *     below it the gzip header and the CPU cost more than the bytes saved);
 *   - its Content-Type is text, JSON, JavaScript, XML or SVG (audio and images are compressed
 *     already; gw_stream.c sends them through its own path, never through gw_send);
 *   - the request's Accept-Encoding accepts gzip (RFC 9110 §12.5.3: "gzip", "x-gzip" or "*"
 *     with a q-value above 0, a token of its own naming gzip winning over "*");
 *   - the gzip form is smaller.
 * Such a response carries `Content-Encoding: gzip`; every response of a compressible type and
 * size carries `Vary: Accept-Encoding`, compressed or not, so shared caches keep the two
 * apart. A strong ETag becomes weak (W/"...") on the compressed form, as nginx does: the bytes
 * differ, the content does not, and If-None-Match compares weakly.
 * Pure functions; zlib does the compression (deflate with the gzip wrapper, RFC 1952). */
#ifndef GW_GZIP_H
#define GW_GZIP_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Does this Accept-Encoding value (NULL: header absent) accept gzip? */
bool gw_gzip_accepted(const char *accept_encoding);
/* Is this Content-Type worth compressing? */
bool gw_gzip_type(const char *content_type);
/* The gzip form of in (*out_p malloc'd, caller frees; *olen_p its length) at level 1..9.
 * 0, or -1 (out of memory, zlib error). */
int gw_gzip(const void *in, size_t len, int level, uint8_t **out_p, size_t *olen_p);
#endif
