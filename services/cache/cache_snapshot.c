/* cache_snapshot: see cache_snapshot.h for the format and what loading guarantees. */
#include "cache_snapshot.h"
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define S_HEADER 24   /* magic 8, version 4, crc32 4, body length 8 */
#define S_BATCH  500  /* keys per load call (one MGET) */

typedef struct {
    const char     *name;        /* into buf, NUL-terminated copy below */
    char            namebuf[CACHE_STORE_NS_NAME_MAX + 1];
    const uint8_t  *sketch;      /* words x 8 bytes, little-endian */
    size_t          words;
    uint64_t        size;
} s_ns_t;

typedef struct {
    size_t         ns;           /* index into the snapshot's namespaces */
    char          *key;          /* owned copy, NUL-terminated */
    const uint8_t *value;        /* into buf */
    size_t         vlen;
    int64_t        ttl_ms;       /* left when written; -1 none */
} s_item_t;

struct cache_snapshot_t {
    uint8_t  *buf;
    int64_t   written_ms;
    uint8_t   hash_key[CACHE_STORE_HASH_KEY_BYTES];
    s_ns_t   *ns;
    size_t    nns;
    s_item_t *items;
    size_t    nitems;
};

/* ---- writing -------------------------------------------------------------------------- */

typedef struct { FILE *f; uLong crc; uint64_t len; int err; } s_out_t;

static void s_put(s_out_t *o, const void *p, size_t n)
{
    if (o->err || n == 0) return;
    if (fwrite(p, 1, n, o->f) != n) { o->err = 1; return; }
    o->crc = crc32(o->crc, p, (uInt) n);   /* n < 4 GiB: values are bounded far below */
    o->len += n;
}

static void s_put_u(s_out_t *o, uint64_t v, int bytes)
{
    uint8_t b[8];
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t) (v >> (8 * i));
    s_put(o, b, (size_t) bytes);
}

static void s_le(uint8_t *b, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++) b[i] = (uint8_t) (v >> (8 * i));
}

static int64_t s_now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* mkdir -p of path's directory. */
static void s_mkdirs(const char *path)
{
    char *d = strdup(path);
    if (!d) return;
    char *dir = dirname(d);
    for (char *p = dir + 1; *p; p++)
        if (*p == '/') { *p = 0; (void) mkdir(dir, 0755); *p = '/'; }
    (void) mkdir(dir, 0755);
    free(d);
}

int cache_snapshot_write(cache_store_t *store, const char *path, size_t max_entries,
                         size_t *entries_p, char *err, size_t errlen)
{
    cache_store_item_t *items = NULL;
    size_t n = 0;
    if (cache_store_export(store, max_entries, &items, &n) != 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s_mkdirs(path);
    size_t tlen = strlen(path) + 5;
    char *tmp = malloc(tlen);
    if (!tmp) { cache_store_items_free(items, n); snprintf(err, errlen, "out of memory"); return -1; }
    snprintf(tmp, tlen, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (!f) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        if (fd >= 0) close(fd);
        free(tmp);
        cache_store_items_free(items, n);
        return -1;
    }
    uint8_t hdr[S_HEADER] = { 0 };
    int rc = fwrite(hdr, 1, S_HEADER, f) == S_HEADER ? 0 : -1;
    s_out_t o = { f, crc32(0, NULL, 0), 0, rc };
    s_put_u(&o, (uint64_t) s_now_unix_ms(), 8);
    uint8_t key[CACHE_STORE_HASH_KEY_BYTES];
    cache_store_hash_key(store, key);
    s_put(&o, key, sizeof key);
    size_t nns = cache_store_ns_count(store);
    cache_store_ns_stats_t *names = calloc(nns ? nns : 1, sizeof *names);
    if (!names) o.err = 1;
    s_put_u(&o, nns, 4);
    for (size_t i = 0; names && i < nns; i++) {
        if (cache_store_ns_stats_at(store, i, &names[i]) != 0) { o.err = 1; break; }
        size_t nl = strlen(names[i].name), words = 0;
        uint64_t size = 0;
        s_put_u(&o, nl, 1);
        s_put(&o, names[i].name, nl);
        (void) cache_store_ns_sketch_get(store, names[i].name, NULL, 0, &words, &size);
        uint64_t *table = words ? malloc(words * sizeof *table) : NULL;
        if (words && !table) { o.err = 1; break; }
        if (words) (void) cache_store_ns_sketch_get(store, names[i].name, table, words, &words,
                                                    &size);
        s_put_u(&o, words, 4);
        s_put_u(&o, size, 8);
        for (size_t w = 0; w < words; w++) s_put_u(&o, table[w], 8);
        free(table);
    }
    s_put_u(&o, n, 4);
    for (size_t i = 0; names && i < n && !o.err; i++) {
        const char *ns = items[i].ns < nns ? names[items[i].ns].name : "";
        size_t nl = strlen(ns), kl = strlen(items[i].key);
        s_put_u(&o, nl, 1);
        s_put(&o, ns, nl);
        s_put_u(&o, kl, 4);
        s_put(&o, items[i].key, kl);
        s_put_u(&o, items[i].vlen, 4);
        s_put(&o, items[i].value, items[i].vlen);
        s_put_u(&o, (uint64_t) items[i].ttl_left_ms, 8);
    }
    free(names);
    cache_store_items_free(items, n);
    memcpy(hdr, CACHE_SNAPSHOT_MAGIC, 8);
    s_le(hdr + 8, CACHE_SNAPSHOT_VERSION, 4);
    s_le(hdr + 12, o.crc, 4);
    s_le(hdr + 16, o.len, 8);
    if (o.err || fseek(f, 0, SEEK_SET) != 0 || fwrite(hdr, 1, S_HEADER, f) != S_HEADER
        || fflush(f) != 0 || fsync(fileno(f)) != 0)
        rc = -1;
    if (rc != 0 || o.err) snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && rc == 0) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
        rc = -1;
    }
    if (o.err) rc = -1;
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        rc = -1;
    }
    if (rc != 0) (void) unlink(tmp);
    else {
        /* The rename itself must reach the disk. */
        char *d = strdup(path);
        int dfd = d ? open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        if (dfd >= 0) { (void) fsync(dfd); close(dfd); }
        free(d);
    }
    free(tmp);
    if (rc == 0 && entries_p) *entries_p = n;
    return rc;
}

/* ---- reading -------------------------------------------------------------------------- */

typedef struct { const uint8_t *p; size_t n, off; int bad; } s_in_t;

static uint64_t s_get_u(s_in_t *in, int bytes)
{
    if (in->bad || in->n - in->off < (size_t) bytes) { in->bad = 1; return 0; }
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t) in->p[in->off + (size_t) i] << (8 * i);
    in->off += (size_t) bytes;
    return v;
}

static const uint8_t *s_get(s_in_t *in, uint64_t len)
{
    if (in->bad || (uint64_t) (in->n - in->off) < len) { in->bad = 1; return NULL; }
    const uint8_t *p = in->p + in->off;
    in->off += (size_t) len;
    return p;
}

void cache_snapshot_destroy(cache_snapshot_t **self_p)
{
    if (!self_p || !*self_p) return;
    cache_snapshot_t *s = *self_p;
    for (size_t i = 0; s->items && i < s->nitems; i++) free(s->items[i].key);
    free(s->items);
    free(s->ns);
    free(s->buf);
    free(s);
    *self_p = NULL;
}

size_t cache_snapshot_entries(const cache_snapshot_t *self) { return self->nitems; }

static cache_snapshot_t *s_fail(cache_snapshot_t *s, char *err, size_t errlen, const char *path,
                                const char *why)
{
    snprintf(err, errlen, "%s: %s", path, why);
    cache_snapshot_destroy(&s);
    return NULL;
}

cache_snapshot_t *cache_snapshot_read(const char *path, size_t max_bytes, int *missing_p,
                                      char *err, size_t errlen)
{
    if (missing_p) *missing_p = 0;
    FILE *f = fopen(path, "rbe");
    if (!f) {
        if (missing_p) *missing_p = errno == ENOENT;
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    cache_snapshot_t *s = calloc(1, sizeof *s);
    if (!s || fstat(fileno(f), &st) != 0) { fclose(f); return s_fail(s, err, errlen, path, "cannot stat"); }
    size_t n = (size_t) st.st_size;
    if ((uint64_t) st.st_size > max_bytes) {
        fclose(f);
        return s_fail(s, err, errlen, path, "larger than the local tier could have written");
    }
    s->buf = malloc(n ? n : 1);
    size_t got = s->buf ? fread(s->buf, 1, n, f) : 0;
    fclose(f);
    if (!s->buf || got != n) return s_fail(s, err, errlen, path, "cannot read");
    if (n < S_HEADER || memcmp(s->buf, CACHE_SNAPSHOT_MAGIC, 8) != 0)
        return s_fail(s, err, errlen, path, "not a cache snapshot (bad magic)");
    s_in_t h = { s->buf, n, 8, 0 };
    uint64_t version = s_get_u(&h, 4), crc = s_get_u(&h, 4), len = s_get_u(&h, 8);
    if (version != CACHE_SNAPSHOT_VERSION) {
        char why[96];
        snprintf(why, sizeof why, "version %llu, this build reads %d", (unsigned long long) version,
                 CACHE_SNAPSHOT_VERSION);
        return s_fail(s, err, errlen, path, why);
    }
    if (len != n - S_HEADER) return s_fail(s, err, errlen, path, "truncated (length mismatch)");
    uLong c = crc32(crc32(0, NULL, 0), s->buf + S_HEADER, (uInt) len);
    if (c != crc) return s_fail(s, err, errlen, path, "checksum mismatch");
    s_in_t in = { s->buf + S_HEADER, (size_t) len, 0, 0 };
    s->written_ms = (int64_t) s_get_u(&in, 8);
    const uint8_t *k = s_get(&in, CACHE_STORE_HASH_KEY_BYTES);
    if (k) memcpy(s->hash_key, k, CACHE_STORE_HASH_KEY_BYTES);
    uint64_t nns = s_get_u(&in, 4);
    if (nns > CACHE_STORE_NS_MAX) in.bad = 1;
    s->ns = in.bad ? NULL : calloc(nns ? nns : 1, sizeof *s->ns);
    if (!in.bad && !s->ns) return s_fail(s, err, errlen, path, "out of memory");
    for (size_t i = 0; !in.bad && i < nns; i++) {
        uint64_t nl = s_get_u(&in, 1);
        const uint8_t *name = s_get(&in, nl);
        if (in.bad || nl == 0 || nl > CACHE_STORE_NS_NAME_MAX) { in.bad = 1; break; }
        memcpy(s->ns[i].namebuf, name, nl);
        s->ns[i].name = s->ns[i].namebuf;
        uint64_t words = s_get_u(&in, 4);
        s->ns[i].size = s_get_u(&in, 8);
        if (words > (in.n - in.off) / 8) { in.bad = 1; break; }
        s->ns[i].words = (size_t) words;
        s->ns[i].sketch = s_get(&in, words * 8);
        s->nns++;
    }
    uint64_t nitems = s_get_u(&in, 4);
    /* Each entry takes at least 17 bytes: never allocate for more than the file can hold. */
    if (!in.bad && nitems > (in.n - in.off) / 17) in.bad = 1;
    s->items = in.bad ? NULL : calloc(nitems ? nitems : 1, sizeof *s->items);
    if (!in.bad && !s->items) return s_fail(s, err, errlen, path, "out of memory");
    for (size_t i = 0; !in.bad && i < nitems; i++) {
        uint64_t nl = s_get_u(&in, 1);
        const uint8_t *name = s_get(&in, nl);
        size_t ns = s->nns;
        for (size_t j = 0; name && j < s->nns; j++)
            if (strlen(s->ns[j].name) == nl && memcmp(s->ns[j].name, name, nl) == 0) ns = j;
        uint64_t kl = s_get_u(&in, 4);
        const uint8_t *key = s_get(&in, kl);
        uint64_t vl = s_get_u(&in, 4);
        const uint8_t *val = s_get(&in, vl);
        int64_t ttl = (int64_t) s_get_u(&in, 8);
        if (in.bad || ns == s->nns || kl == 0 || memchr(key, 0, kl)) { in.bad = 1; break; }
        s_item_t *it = &s->items[i];
        if (!(it->key = malloc(kl + 1))) return s_fail(s, err, errlen, path, "out of memory");
        memcpy(it->key, key, kl);
        it->key[kl] = 0;
        it->ns = ns;
        it->value = val;
        it->vlen = (size_t) vl;
        it->ttl_ms = ttl;
        s->nitems++;
    }
    if (in.bad || in.off != in.n) return s_fail(s, err, errlen, path, "malformed body");
    return s;
}

/* ---- applying ------------------------------------------------------------------------- */

int64_t cache_snapshot_load_direct(void *store, const char *ns, const char *const *keys,
                                   const cache_warmup_expect_t *expect, size_t n)
{
    int64_t stored = 0;
    for (size_t i = 0; i < n; i++)
        if (cache_store_ns_set(store, ns, keys[i], expect[i].value, expect[i].vlen,
                               expect[i].ttl_ms) == 0)
            stored++;
    return stored;
}

void cache_snapshot_apply(const cache_snapshot_t *s, cache_store_t *store, int64_t now_unix_ms,
                          cache_snapshot_load_fn load, void *ctx, cache_snapshot_stats_t *out)
{
    memset(out, 0, sizeof *out);
    bool keyed = cache_store_set_hash_key(store, s->hash_key) == 0;
    int64_t elapsed = now_unix_ms > s->written_ms ? now_unix_ms - s->written_ms : 0;
    const char *keys[S_BATCH];
    cache_warmup_expect_t exp[S_BATCH];
    cache_store_ns_stats_t st;
    for (size_t j = 0; load && keyed && j < s->nns; j++) {
        const char *ns = s->ns[j].name;
        if (cache_store_ns_stats(store, ns, &st) != 0) {
            for (size_t i = 0; i < s->nitems; i++) out->unknown += s->items[i].ns == j;
            continue;
        }
        size_t b = 0;
        /* Coldest first: the file lists the hottest first. */
        for (size_t i = s->nitems; i-- > 0;) {
            const s_item_t *it = &s->items[i];
            if (it->ns != j) continue;
            int64_t ttl = it->ttl_ms < 0 ? 0 : it->ttl_ms - elapsed;
            if (it->ttl_ms >= 0 && ttl <= 0) { out->expired++; continue; }
            keys[b] = it->key;
            exp[b++] = (cache_warmup_expect_t){ it->value, it->vlen, ttl };
            if (b == S_BATCH) {
                int64_t got = load(ctx, ns, keys, exp, b);
                out->loaded += got > 0 ? (size_t) got : 0;
                b = 0;
            }
        }
        if (b > 0) {
            int64_t got = load(ctx, ns, keys, exp, b);
            out->loaded += got > 0 ? (size_t) got : 0;
        }
    }
    if (load && keyed) out->refused = s->nitems - out->loaded - out->expired - out->unknown;
    for (size_t j = 0; keyed && j < s->nns; j++) {
        if (s->ns[j].words == 0) continue;
        uint64_t *table = malloc(s->ns[j].words * sizeof *table);
        if (!table) continue;
        for (size_t w = 0; w < s->ns[j].words; w++) {
            uint64_t v = 0;
            for (int k = 0; k < 8; k++) v |= (uint64_t) s->ns[j].sketch[w * 8 + (size_t) k] << (8 * k);
            table[w] = v;
        }
        if (cache_store_ns_sketch_put(store, s->ns[j].name, table, s->ns[j].words,
                                      s->ns[j].size) == 0)
            out->sketches++;
        free(table);
    }
}
