/* cache_codec: how a value is stored, in both tiers. One header byte, then:
 *   0x00  the value as given                         ("raw")
 *   0x01  its length (4 bytes, big-endian), then a zlib stream (RFC 1950) of the value
 * A namespace with a compression threshold (cache_namespace.h) stores values at least that
 * long as zlib when that is smaller. Whatever is read back, from Redis above all (any client can
 * write there), is checked, never trusted: an unknown header, a length over the caller's limit,
 * an inflate error or a length that does not match make a value corrupt, never a crash.
 * The local tier holds every value raw (cache_codec_local_form); zlib is Redis's form. */
#ifndef CACHE_CODEC_H
#define CACHE_CODEC_H
#include <stddef.h>
#include <stdint.h>

enum { CACHE_CODEC_RAW = 0x00, CACHE_CODEC_ZLIB = 0x01 };

/* Encodes value (vlen bytes) into *out_p (malloc'd, caller frees; *olen_p its length): zlib
 * when compress_min > 0, vlen >= compress_min and the result is smaller than raw, else raw.
 * *zlib_p (may be NULL) is set to 1 when zlib was used. 0, or -1 when out of memory. */
__attribute__((warn_unused_result))
int cache_codec_encode(const void *value, size_t vlen, int64_t compress_min, uint8_t **out_p,
                       size_t *olen_p, int *zlib_p);
/* Decodes a stored value (n bytes) into *out_p (malloc'd, non-NULL even when empty; caller
 * frees) and *olen_p. A zlib value may not declare more than max_len bytes. 0; -1 when in is
 * not a valid encoding (nothing allocated); -2 when out of memory. */
__attribute__((warn_unused_result))
int cache_codec_decode(const uint8_t *in, size_t n, size_t max_len, uint8_t **out_p,
                       size_t *olen_p);
/* The raw form of value: header 0x00, then the bytes (*out_p malloc'd, caller frees). 0 or -2. */
__attribute__((warn_unused_result))
int cache_codec_raw_form(const void *value, size_t vlen, uint8_t **out_p, size_t *olen_p);
/* The form the local tier keeps: always raw. Why: a local hit is served on every read, and an
 * inflate on each one made a hit of a 4 KB JSON value cost 9 us, as much as a Redis round trip
 * (bench/cache), against 0.5 us for a copy; zlib still saves what it is for, Redis memory and
 * network bytes. The price is local memory (counted: the byte bound holds the inflated size).
 * 0 with *out_p NULL when in already is raw (keep in as it is); 0 with *out_p the raw form
 * (malloc'd, caller frees) of a zlib value; -1 when in is not a valid encoding; -2 no memory. */
__attribute__((warn_unused_result))
int cache_codec_local_form(const uint8_t *in, size_t n, size_t max_len, uint8_t **out_p,
                           size_t *olen_p);
#endif
