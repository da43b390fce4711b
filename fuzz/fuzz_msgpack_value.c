/* fuzz_msgpack_value: cache_msgpack_check (services/cache/cache_msgpack.c), the check of Set
 * with msgpack=true, on arbitrary bytes. Differential: the hand-written pre-scan and msgpack-c
 * must agree. Pre-scan accepts -> msgpack_unpack_next must say SUCCESS using every byte.
 * Pre-scan refuses -> msgpack-c must not accept the whole buffer as one object; msgpack-c is
 * only run there on inputs without 16/32-bit container headers (0xdc-0xdf), whose declared
 * sizes it would allocate before looking at the data (the very bombs the pre-scan exists for). */
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "cache_msgpack.h"

static int s_msgpack_c_accepts(const uint8_t *data, size_t size)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return rc = msgpack_unpack_next(&u, (const char *) data, size, &off);
    msgpack_unpacked_destroy(&u);
    return rc == MSGPACK_UNPACK_SUCCESS && off == size;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    int pre = cache_msgpack_prescan(data, size, err, sizeof err);
    int full = cache_msgpack_check(data, size, err, sizeof err);
    if (pre == 0) {
        if (full != 0 || !s_msgpack_c_accepts(data, size)) abort();
    } else {
        if (full == 0) abort();
        int big = 0;
        for (size_t i = 0; i < size && !big; i++) big = data[i] >= 0xdc && data[i] <= 0xdf;
        if (!big && size <= 4096 && s_msgpack_c_accepts(data, size)) abort();
        if (!err[0]) abort();   /* a refusal always names the problem */
    }
    return 0;
}
