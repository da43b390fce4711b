/* cache_codec: the stored form of a value (see cache_codec.h). */
#include "cache_codec.h"
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int cache_codec_encode(const void *value, size_t vlen, int64_t compress_min, uint8_t **out_p,
                       size_t *olen_p, int *zlib_p)
{
    if (zlib_p) *zlib_p = 0;
    if (compress_min > 0 && (int64_t) vlen >= compress_min && vlen <= UINT32_MAX) {
        uLongf zl = compressBound((uLong) vlen);
        uint8_t *z = malloc(5 + zl);
        if (!z) return -1;
        if (compress2(z + 5, &zl, value, (uLong) vlen, Z_DEFAULT_COMPRESSION) == Z_OK
            && 5 + zl < 1 + vlen) {
            z[0] = CACHE_CODEC_ZLIB;
            z[1] = (uint8_t) (vlen >> 24); z[2] = (uint8_t) (vlen >> 16);
            z[3] = (uint8_t) (vlen >> 8);  z[4] = (uint8_t) vlen;
            uint8_t *shrunk = realloc(z, 5 + zl);
            *out_p = shrunk ? shrunk : z;
            *olen_p = 5 + zl;
            if (zlib_p) *zlib_p = 1;
            return 0;
        }
        free(z);   /* incompressible: raw is smaller */
    }
    return cache_codec_raw_form(value, vlen, out_p, olen_p) == 0 ? 0 : -1;
}

int cache_codec_decode(const uint8_t *in, size_t n, size_t max_len, uint8_t **out_p,
                       size_t *olen_p)
{
    if (n < 1) return -1;
    if (in[0] == CACHE_CODEC_RAW) {
        uint8_t *r = malloc(n > 1 ? n - 1 : 1);
        if (!r) return -2;
        if (n > 1) memcpy(r, in + 1, n - 1);
        *out_p = r;
        *olen_p = n - 1;
        return 0;
    }
    if (in[0] != CACHE_CODEC_ZLIB || n < 6) return -1;
    size_t len = (size_t) in[1] << 24 | (size_t) in[2] << 16 | (size_t) in[3] << 8 | in[4];
    if (len > max_len) return -1;
    uint8_t *r = malloc(len ? len : 1);
    if (!r) return -2;
    uLongf got = (uLongf) len;
    /* uncompress checks the stream's Adler-32 and stops at the buffer's end: a stream that
     * inflates to more than it declared is Z_BUF_ERROR, never an overrun. */
    int zr = uncompress(r, &got, in + 5, (uLong) (n - 5));
    if (zr != Z_OK || got != len) {
        free(r);
        return zr == Z_MEM_ERROR ? -2 : -1;
    }
    *out_p = r;
    *olen_p = len;
    return 0;
}

int cache_codec_raw_form(const void *value, size_t vlen, uint8_t **out_p, size_t *olen_p)
{
    uint8_t *r = malloc(vlen + 1);
    if (!r) return -2;
    r[0] = CACHE_CODEC_RAW;
    if (vlen) memcpy(r + 1, value, vlen);
    *out_p = r;
    *olen_p = vlen + 1;
    return 0;
}

int cache_codec_local_form(const uint8_t *in, size_t n, size_t max_len, uint8_t **out_p,
                           size_t *olen_p)
{
    *out_p = NULL;
    *olen_p = 0;
    if (n >= 1 && in[0] == CACHE_CODEC_RAW) return 0;
    uint8_t *val = NULL;
    size_t vlen = 0;
    int rc = cache_codec_decode(in, n, max_len, &val, &vlen);
    if (rc != 0) return rc;
    rc = cache_codec_raw_form(val, vlen, out_p, olen_p);
    free(val);
    return rc;
}
