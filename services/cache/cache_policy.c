/* cache_policy: the table of known eviction policies (a new policy is one file and one row). */
#include "cache_policy.h"
#include <string.h>

static const struct {
    const char *name;
    cache_policy_t *(*make)(size_t capacity, uint64_t seed);
} s_policies[] = {
    { "lru",      cache_policy_lru_new },
    { "lfu",      cache_policy_lfu_new },
    { "fifo",     cache_policy_fifo_new },
    { "random",   cache_policy_random_new },
    { "wtinylfu", cache_policy_wtinylfu_new },
    { "s3fifo",   cache_policy_s3fifo_new },
    { NULL, NULL }
};

const char *const cache_policy_names[] = { "lru", "lfu", "fifo", "random", "wtinylfu", "s3fifo",
                                           NULL };

cache_policy_t *cache_policy_new(const char *name, size_t capacity, uint64_t seed)
{
    if (capacity == 0) capacity = 1;
    for (int i = 0; s_policies[i].name; i++)
        if (strcmp(s_policies[i].name, name ? name : "lru") == 0)
            return s_policies[i].make(capacity, seed);
    return NULL;
}

int cache_policy_known(const char *name)
{
    for (int i = 0; s_policies[i].name; i++)
        if (strcmp(s_policies[i].name, name ? name : "lru") == 0) return 1;
    return 0;
}
