/* cache_sketch: a 4-bit count-min sketch of access frequencies (TinyLFU, Einziger, Friedman
 * and Manes, 2017; laid out as Caffeine's FrequencySketch). Four rows of 4-bit counters
 * packed 16 to a 64-bit word, 16 x pow2(capacity) counters in all. Each increment adds one to
 * the key's counter in every row (saturating at 15); the estimate is the minimum of the four.
 * After 10 x capacity increments every counter is halved (the "reset" that ages history), so
 * the sketch follows a changing workload. increment and estimate are O(1); the reset walks
 * the table, O(capacity) once every 10 x capacity increments: amortised O(1).
 * The doorkeeper (a Bloom filter in front of the sketch) is not implemented: it saves memory,
 * not hit rate. Not thread-safe: the owning policy runs under the store's mutex. */
#ifndef CACHE_SKETCH_H
#define CACHE_SKETCH_H
#include <stddef.h>
#include <stdint.h>

typedef struct cache_sketch_t cache_sketch_t;

/* Caller owns the result (cache_sketch_destroy). NULL on no memory. */
cache_sketch_t *cache_sketch_new(size_t capacity);
void cache_sketch_destroy(cache_sketch_t **self_p);
/* hash: a well-mixed 64-bit hash of the key. */
void cache_sketch_increment(cache_sketch_t *self, uint64_t hash);
unsigned cache_sketch_estimate(const cache_sketch_t *self, uint64_t hash);
/* Increments since the last reset, and the sample size that triggers one. */
size_t cache_sketch_size(const cache_sketch_t *self);
size_t cache_sketch_sample_size(const cache_sketch_t *self);
/* For snapshots (cache_snapshot.h): the counter table is cache_sketch_words() 64-bit words,
 * read with _table(). _load copies a table of the same size back and sets the increment
 * count (at most the sample size); 0, or -1 when nwords does not match (nothing changed). */
size_t cache_sketch_words(const cache_sketch_t *self);
const uint64_t *cache_sketch_table(const cache_sketch_t *self);
int cache_sketch_load(cache_sketch_t *self, const uint64_t *table, size_t nwords, size_t size);

#endif
