/* qv_hash: hash tables (CZMQ zhashx) whose string keys may come from outside: service names
 * and routing ids on the broker, callers' addresses in the rate limiter.
 *
 * Why: zhashx's default hash is a fixed, public function, and zhashx grows its table whenever
 * a lookup walks a chain longer than its limit. Keys that collide in the full hash are never
 * separated by growing, so each lookup grows the table again: a fuzzer found broker inputs
 * that drove one table to an 8 GiB allocation. Here the hash is SipHash-2-4
 * (libsodium's crypto_shorthash) under a key drawn at random once per process, so nobody
 * outside can choose colliding keys.
 * Thread-safe (the key is set once, under pthread_once); the tables themselves are not. */
#ifndef QV_HASH_H
#define QV_HASH_H
#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

/* zhashx_new() with the keyed hash. Caller owns the result (zhashx_destroy). NULL: no memory,
 * or libsodium could not start. */
zhashx_t *qv_hashx_new(void);
/* The keyed hash of a NUL-terminated string (the zhashx_hash_fn). */
size_t qv_hash_string(const void *key);

/* FNV-1a, 64-bit: a fixed, fast, unkeyed hash for what is not exposed to chosen keys: lock
 * stripes, generation slots, and names that must be the same in every run (index names).
 * Chain calls to hash several pieces: qv_fnv1a(b, nb, qv_fnv1a(a, na, QV_FNV1A_INIT)). */
#define QV_FNV1A_INIT 14695981039346656037ULL   /* the offset basis */
uint64_t qv_fnv1a(const void *data, size_t len, uint64_t h);

int qv_hash_selftest(void);
#endif
