/* cache_namespace: parsing and lookup of the namespace table (see cache_namespace.h). Lookup
 * is a linear scan: the table holds at most CACHE_NS_MAX short names, which is faster than
 * hashing for the handful there are in practice. */
#include "cache_namespace.h"
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cache_namespaces_t {
    cache_namespace_t ns[CACHE_NS_MAX];
    size_t            count;
    char              list[CACHE_NS_MAX * (CACHE_NS_NAME_MAX + 2) + 1];
};

/* The store engineer's policy table (cache_policy_names) is the authority; this copy keeps
 * the parser independent of the store's build while that API settles. */
static const char *const s_policies[] = { "lru", "lfu", "fifo", "random", "wtinylfu", "s3fifo",
                                          NULL };

const char *cache_priority_name(cache_priority_t p)
{
    return p == CACHE_PRIO_HIGH ? "high" : p == CACHE_PRIO_MEDIUM ? "medium" : "low";
}

/* Copies field [b, e) trimmed into out; -1 when it does not fit. */
static int s_field(const char *b, const char *e, char *out, size_t len)
{
    while (b < e && isspace((unsigned char) *b)) b++;
    while (e > b && isspace((unsigned char) e[-1])) e--;
    if ((size_t) (e - b) >= len) return -1;
    memcpy(out, b, (size_t) (e - b));
    out[e - b] = 0;
    return 0;
}

int cache_namespace_parse_duration(const char *s, int64_t *ms_out)
{
    char *end;
    if (!s || !isdigit((unsigned char) *s)) return -1;
    long long v = strtoll(s, &end, 10);
    int64_t mul;
    if (!*end || strcmp(end, "s") == 0) mul = 1000;
    else if (strcmp(end, "ms") == 0) mul = 1;
    else if (strcmp(end, "m") == 0) mul = 60 * 1000;
    else if (strcmp(end, "h") == 0) mul = 3600 * 1000;
    else if (strcmp(end, "d") == 0) mul = 86400 * 1000;
    else return -1;
    if (v <= 0 || v > 366LL * 86400 * 1000 / mul) return -1;
    *ms_out = (int64_t) v * mul;
    return 0;
}

static int s_parse_size(const char *s, int64_t *out)
{
    char *end;
    if (!isdigit((unsigned char) *s)) return -1;
    long long v = strtoll(s, &end, 10);
    int64_t mul = 1;
    if (*end == 'k' || *end == 'K') { mul = 1024; end++; }
    else if (*end == 'm' || *end == 'M') { mul = 1024 * 1024; end++; }
    if (*end == 'b' || *end == 'B') end++;
    if (*end || v <= 0 || v > (1LL << 40) / mul) return -1;
    *out = (int64_t) v * mul;
    return 0;
}

static int s_parse_entry(cache_namespaces_t *t, const char *b, const char *e,
                         int64_t default_ttl_ms, char *err, size_t errlen)
{
    char f[5][80];
    int n = 0;
    const char *p = b;
    char entry[160];
    snprintf(entry, sizeof entry, "%.*s", (int) (e - b), b);
    for (;;) {
        const char *c = memchr(p, ':', (size_t) (e - p));
        const char *fe = c ? c : e;
        if (n == 5) { snprintf(err, errlen, "namespace entry '%s': more than 5 fields "
                               "(name:ttl:priority[:policy[:compress]])", entry); return -1; }
        if (s_field(p, fe, f[n], sizeof f[n]) != 0) {
            snprintf(err, errlen, "namespace entry '%s': field %d is too long", entry, n + 1);
            return -1;
        }
        n++;
        if (!c) break;
        p = c + 1;
    }
    if (n < 3) {
        snprintf(err, errlen, "namespace entry '%s': want name:ttl:priority[:policy[:compress]]",
                 entry);
        return -1;
    }
    if (t->count == CACHE_NS_MAX) {
        snprintf(err, errlen, "more than %d namespaces", CACHE_NS_MAX);
        return -1;
    }
    cache_namespace_t *ns = &t->ns[t->count];
    memset(ns, 0, sizeof *ns);
    size_t nl = strlen(f[0]);
    if (nl == 0 || nl > CACHE_NS_NAME_MAX || strspn(f[0], "abcdefghijklmnopqrstuvwxyz"
                                                          "0123456789_") != nl) {
        snprintf(err, errlen, "namespace entry '%s': name '%s' must be 1-%d of [a-z0-9_]",
                 entry, f[0], CACHE_NS_NAME_MAX);
        return -1;
    }
    for (size_t i = 0; i < t->count; i++)
        if (strcmp(t->ns[i].name, f[0]) == 0) {
            snprintf(err, errlen, "namespace '%s' is declared twice", f[0]);
            return -1;
        }
    memcpy(ns->name, f[0], nl + 1);
    if (strcmp(f[1], "default") == 0) ns->ttl_ms = default_ttl_ms;
    else if (cache_namespace_parse_duration(f[1], &ns->ttl_ms) != 0) {
        snprintf(err, errlen, "namespace '%s': ttl '%s' is not a duration like 500ms, 30s, "
                 "10m, 1h, 1d or 'default'", ns->name, f[1]);
        return -1;
    }
    if (strcmp(f[2], "high") == 0) ns->priority = CACHE_PRIO_HIGH;
    else if (strcmp(f[2], "medium") == 0) ns->priority = CACHE_PRIO_MEDIUM;
    else if (strcmp(f[2], "low") == 0) ns->priority = CACHE_PRIO_LOW;
    else {
        snprintf(err, errlen, "namespace '%s': priority '%s' is not high, medium or low",
                 ns->name, f[2]);
        return -1;
    }
    const char *policy = n > 3 && f[3][0] ? f[3] : "lru";
    {
        int known = 0;
        for (int i = 0; s_policies[i]; i++) known |= strcmp(s_policies[i], policy) == 0;
        if (!known) {
            snprintf(err, errlen, "namespace '%s': policy '%s' is not one of lru, lfu, fifo, "
                     "random, wtinylfu, s3fifo", ns->name, policy);
            return -1;
        }
    }
    memcpy(ns->policy, policy, strlen(policy) + 1);   /* a known name: fits */
    if (n > 4 && f[4][0] && strcmp(f[4], "-") != 0 && strcmp(f[4], "off") != 0
        && s_parse_size(f[4], &ns->compress_min) != 0) {
        snprintf(err, errlen, "namespace '%s': compress '%s' is not '-', 'off' or a size like "
                 "512, 1k, 2m", ns->name, f[4]);
        return -1;
    }
    ns->index = (int) t->count;
    t->count++;
    return 0;
}

cache_namespaces_t *cache_namespaces_parse(const char *spec, int64_t default_ttl_ms,
                                           char *err, size_t errlen)
{
    cache_namespaces_t *t = calloc(1, sizeof *t);
    if (!t) { snprintf(err, errlen, "out of memory"); return NULL; }
    const char *p = spec ? spec : "";
    while (*p) {
        const char *c = strchr(p, ',');
        const char *e = c ? c : p + strlen(p);
        const char *q = p;
        while (q < e && isspace((unsigned char) *q)) q++;
        if (q == e) {   /* an empty entry: "a,,b" or a trailing comma */
            if (c) { p = c + 1; continue; }
            break;
        }
        if (s_parse_entry(t, p, e, default_ttl_ms, err, errlen) != 0) { free(t); return NULL; }
        p = c ? c + 1 : e;
    }
    if (t->count == 0) {
        snprintf(err, errlen, "no namespace declared (want name:ttl:priority[:policy"
                 "[:compress]], ...)");
        free(t);
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < t->count; i++)
        o += (size_t) snprintf(t->list + o, sizeof t->list - o, "%s%s", i ? ", " : "",
                               t->ns[i].name);
    return t;
}

void cache_namespaces_destroy(cache_namespaces_t **self_p)
{
    if (!self_p || !*self_p) return;
    free(*self_p);
    *self_p = NULL;
}

const cache_namespace_t *cache_namespaces_find(const cache_namespaces_t *self, const char *name)
{
    if (!self || !name) return NULL;
    for (size_t i = 0; i < self->count; i++)
        if (strcmp(self->ns[i].name, name) == 0) return &self->ns[i];
    return NULL;
}

size_t cache_namespaces_count(const cache_namespaces_t *self) { return self ? self->count : 0; }

const cache_namespace_t *cache_namespaces_at(const cache_namespaces_t *self, size_t i)
{
    return self && i < self->count ? &self->ns[i] : NULL;
}

const char *cache_namespaces_list(const cache_namespaces_t *self) { return self ? self->list : ""; }
