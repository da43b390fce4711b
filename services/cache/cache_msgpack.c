/* cache_msgpack: see cache_msgpack.h for what it checks and why there is a pre-scan. */
#include "cache_msgpack.h"
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>

static uint64_t s_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

int cache_msgpack_prescan(const void *buf, size_t len, char *err, size_t errlen)
{
    const uint8_t *p = buf;
    uint64_t stack[CACHE_MSGPACK_MAX_DEPTH];   /* items left in each open container */
    size_t depth = 0, pos = 0, objects = 0;
    if (len == 0) { snprintf(err, errlen, "empty"); return -1; }
    for (;;) {
        if (pos >= len) { snprintf(err, errlen, "truncated at byte %zu", pos); return -1; }
        if (++objects > CACHE_MSGPACK_MAX_OBJECTS) {
            snprintf(err, errlen, "more than %u objects", CACHE_MSGPACK_MAX_OBJECTS);
            return -1;
        }
        size_t at = pos;
        uint8_t b = p[pos++];
        size_t lenfield = 0, fixed = 0, extra = 0;   /* length field bytes, payload, type byte */
        int container = 0, map = 0;
        uint64_t count = 0;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* a whole value in the byte */
        } else if (b <= 0x8f) { container = map = 1; count = b & 0x0f;
        } else if (b <= 0x9f) { container = 1; count = b & 0x0f;
        } else if (b <= 0xbf) { fixed = b & 0x1f;
        } else if (b == 0xc1) {
            snprintf(err, errlen, "byte 0xc1 at %zu is not a msgpack type", at);
            return -1;
        } else if (b >= 0xc4 && b <= 0xc6) { lenfield = (size_t) 1 << (b - 0xc4);
        } else if (b >= 0xc7 && b <= 0xc9) { lenfield = (size_t) 1 << (b - 0xc7); extra = 1;
        } else if (b == 0xca) { fixed = 4;
        } else if (b == 0xcb) { fixed = 8;
        } else if (b >= 0xcc && b <= 0xcf) { fixed = (size_t) 1 << (b - 0xcc);
        } else if (b >= 0xd0 && b <= 0xd3) { fixed = (size_t) 1 << (b - 0xd0);
        } else if (b >= 0xd4 && b <= 0xd8) { fixed = ((size_t) 1 << (b - 0xd4)) + 1;
        } else if (b >= 0xd9 && b <= 0xdb) { lenfield = (size_t) 1 << (b - 0xd9);
        } else if (b == 0xdc || b == 0xdd) {
            container = 1;
            if (len - pos < (b == 0xdc ? 2u : 4u)) goto truncated;
            count = s_be(p + pos, b == 0xdc ? 2 : 4);
            pos += b == 0xdc ? 2 : 4;
        } else {   /* 0xde, 0xdf */
            container = map = 1;
            if (len - pos < (b == 0xde ? 2u : 4u)) goto truncated;
            count = s_be(p + pos, b == 0xde ? 2 : 4);
            pos += b == 0xde ? 2 : 4;
        }
        if (container) {
            uint64_t items = map ? 2 * count : count;
            /* msgpack-c refuses a 33rd open container, even an empty one. */
            if (depth >= CACHE_MSGPACK_MAX_DEPTH) {
                snprintf(err, errlen, "nested deeper than %d at byte %zu",
                         CACHE_MSGPACK_MAX_DEPTH, at);
                return -1;
            }
            if (items > len - pos) {
                snprintf(err, errlen, "%s at byte %zu declares %llu %s but %zu bytes follow",
                         map ? "map" : "array", at, (unsigned long long) count,
                         map ? "pairs" : "elements", len - pos);
                return -1;
            }
            if (items > 0) { stack[depth++] = items; continue; }
        } else {
            if (lenfield) {
                if (len - pos < lenfield) goto truncated;
                fixed = (size_t) s_be(p + pos, lenfield);
                pos += lenfield;
            }
            if ((uint64_t) fixed + extra > len - pos) {
                snprintf(err, errlen, "value at byte %zu declares %llu bytes but %zu follow",
                         at, (unsigned long long) fixed + extra, len - pos);
                return -1;
            }
            pos += fixed + extra;
        }
        /* A value is complete: close every container it completes. */
        while (depth > 0 && --stack[depth - 1] == 0) depth--;
        if (depth == 0) break;
    }
    if (pos != len) {
        snprintf(err, errlen, "%zu trailing bytes after the object", len - pos);
        return -1;
    }
    return 0;
truncated:
    snprintf(err, errlen, "truncated at byte %zu", len);
    return -1;
}

int cache_msgpack_check(const void *buf, size_t len, char *err, size_t errlen)
{
    if (cache_msgpack_prescan(buf, len, err, errlen) != 0) return -1;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack_next(&u, buf, len, &off);
    msgpack_unpacked_destroy(&u);
    if (rc == MSGPACK_UNPACK_SUCCESS && off == len) return 0;
    snprintf(err, errlen, "msgpack-c says %s at byte %zu",
             rc == MSGPACK_UNPACK_NOMEM_ERROR ? "out of memory"
             : rc == MSGPACK_UNPACK_CONTINUE ? "truncated"
             : rc == MSGPACK_UNPACK_PARSE_ERROR ? "parse error" : "trailing bytes", off);
    return -1;
}
