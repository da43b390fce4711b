/* cache_sketch: see cache_sketch.h. */
#include "cache_sketch.h"
#include "cache_policy.h"   /* cache_mix64 */
#include <stdlib.h>

struct cache_sketch_t {
    uint64_t *table;        /* 4 rows of `words` words */
    size_t    words;        /* per row, power of two */
    size_t    size, sample;
};

cache_sketch_t *cache_sketch_new(size_t capacity)
{
    cache_sketch_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    size_t w = 1;
    while (w < capacity && w < ((size_t) 1 << 40)) w <<= 1;
    /* 4 rows of w/4 words of 16 counters: 16 x pow2(capacity) counters, as in Caffeine. */
    s->words = w / 4 ? w / 4 : 1;
    s->table = calloc(4 * s->words, sizeof *s->table);
    if (!s->table) { free(s); return NULL; }
    s->sample = 10 * (capacity ? capacity : 1);
    return s;
}

void cache_sketch_destroy(cache_sketch_t **self_p)
{
    if (!self_p || !*self_p) return;
    free((*self_p)->table);
    free(*self_p);
    *self_p = NULL;
}

/* Row i's word index and the counter's shift within it, from one 64-bit hash per row. */
static inline void s_slot(const cache_sketch_t *s, uint64_t hash, int row, size_t *word,
                          unsigned *shift)
{
    uint64_t h = cache_mix64(hash + (uint64_t) row * 0x632be59bd9b4e019ULL);
    *word = (size_t) row * s->words + (size_t) (h & (s->words - 1));
    *shift = (unsigned) ((h >> 58) & 15) * 4;
}

void cache_sketch_increment(cache_sketch_t *s, uint64_t hash)
{
    int added = 0;
    for (int r = 0; r < 4; r++) {
        size_t w; unsigned sh;
        s_slot(s, hash, r, &w, &sh);
        if (((s->table[w] >> sh) & 15) != 15) {
            s->table[w] += (uint64_t) 1 << sh;
            added = 1;
        }
    }
    if (added && ++s->size >= s->sample) {
        /* Halve every counter: shift each word and drop the bit that crossed a nibble. */
        for (size_t i = 0; i < 4 * s->words; i++) s->table[i] = (s->table[i] >> 1) & 0x7777777777777777ULL;
        s->size /= 2;
    }
}

unsigned cache_sketch_estimate(const cache_sketch_t *s, uint64_t hash)
{
    unsigned m = 15;
    for (int r = 0; r < 4; r++) {
        size_t w; unsigned sh;
        s_slot(s, hash, r, &w, &sh);
        unsigned c = (unsigned) ((s->table[w] >> sh) & 15);
        if (c < m) m = c;
    }
    return m;
}

size_t cache_sketch_size(const cache_sketch_t *s) { return s->size; }
size_t cache_sketch_sample_size(const cache_sketch_t *s) { return s->sample; }

size_t cache_sketch_words(const cache_sketch_t *s) { return 4 * s->words; }
const uint64_t *cache_sketch_table(const cache_sketch_t *s) { return s->table; }

int cache_sketch_load(cache_sketch_t *s, const uint64_t *table, size_t nwords, size_t size)
{
    if (nwords != 4 * s->words) return -1;
    for (size_t i = 0; i < nwords; i++) s->table[i] = table[i];
    s->size = size < s->sample ? size : s->sample - 1;
    return 0;
}
