/* cache_msgpack: checks that a value given to Set with msgpack=true is exactly one well-formed
 * msgpack object (msgpack-c), without letting a tiny input make the unpacker allocate a lot.
 *
 * Why a pre-scan: msgpack-c's msgpack_unpack_next allocates a container's element array from
 * its zone as soon as it reads the header (24 bytes per declared element, 48 per map pair), so
 * five bytes `dd ff ff ff ff` claim ~96 GiB, and nested headers multiply that. So the buffer is
 * first walked by a small hand-written scanner (no allocation, an explicit stack) that
 * rejects: a declared element/pair count larger than the bytes that remain (every element
 * takes at least one byte), a str/bin/ext length past the end, nesting deeper than
 * CACHE_MSGPACK_MAX_DEPTH (msgpack-c's own fixed stack is 32), more than
 * CACHE_MSGPACK_MAX_OBJECTS objects in all, the never-used byte 0xc1, truncation and trailing
 * bytes. Only a buffer that passes is handed to msgpack_unpack_next, whose zone then holds at
 * most ~24 bytes per object (<= 24 MiB); its verdict must be SUCCESS with every byte used.
 * fuzz/fuzz_msgpack_value.c checks that the two agree on every input. */
#ifndef CACHE_MSGPACK_H
#define CACHE_MSGPACK_H
#include <stddef.h>

#define CACHE_MSGPACK_MAX_DEPTH    32
#define CACHE_MSGPACK_MAX_OBJECTS  (1u << 20)

/* 0 when buf (len bytes) is exactly one msgpack object; else -1 with the reason in err
 * ("truncated at byte 3", "array at byte 0 declares 4294967295 elements but 0 bytes follow",
 * "2 trailing bytes after the object", ...). */
__attribute__((warn_unused_result))
int cache_msgpack_check(const void *buf, size_t len, char *err, size_t errlen);

/* The pre-scan alone (no msgpack-c), for the fuzz harness. Same contract. */
__attribute__((warn_unused_result))
int cache_msgpack_prescan(const void *buf, size_t len, char *err, size_t errlen);
#endif
