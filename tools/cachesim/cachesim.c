/* cachesim: replays a cache access trace through the eviction policies the cache daemon runs
 * (services/cache/cache_policy*.c, linked as the cache_policy library) and prints the hit rate.
 *
 *   cachesim --trace FILE --format arc|lirs|int32|int64 --sizes 1000,2000
 *            [--policies lru,lfu,fifo,random,wtinylfu,s3fifo,opt] [--seed N]
 *
 * Output: one CSV line per size and policy, `size,policy,hit_rate`, the hit rate in percent of
 * requests with two decimals. Every key costs one entry. `opt` is Belady's optimal (evict the
 * key whose next use is furthest in the future; it needs the future, so it lives only here).
 * Files ending in .xz are read with liblzma; anything else with zlib's gzopen (which also reads
 * uncompressed files). Formats (../shared/traces/README.md):
 *   arc    text, each line `start count ...`: keys start .. start+count-1
 *   lirs   text, one decimal key per line; blank lines and `*` lines are skipped
 *   int32  big-endian signed 32-bit keys
 *   int64  big-endian 64-bit keys
 * Bad input (missing file, unknown format, an unparsable line, a truncated binary record):
 * one message on stderr naming the file and line (or record), exit status 2. */
#include "cache_policy.h"
#include <errno.h>
#include <inttypes.h>
#include <lzma.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const char *s_file = "";

static _Noreturn void s_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "cachesim: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* ---- reading: a byte stream from gzip/plain (zlib) or xz (liblzma) ------------------------ */

typedef struct {
    gzFile      gz;
    FILE       *fp;
    lzma_stream lz;
    uint8_t     inbuf[1 << 16];
    int         lz_eof;
} s_reader_t;

static void s_reader_open(s_reader_t *r, const char *path)
{
    memset(r, 0, sizeof *r);
    size_t n = strlen(path);
    if (n > 3 && strcmp(path + n - 3, ".xz") == 0) {
        r->fp = fopen(path, "rb");
        if (!r->fp) s_die("%s: %s", path, strerror(errno));
        lzma_stream init = LZMA_STREAM_INIT;
        r->lz = init;
        if (lzma_stream_decoder(&r->lz, UINT64_MAX, 0) != LZMA_OK) s_die("%s: cannot start the xz decoder", path);
    } else {
        r->gz = gzopen(path, "rb");
        if (!r->gz) s_die("%s: %s", path, errno ? strerror(errno) : "cannot open");
        gzbuffer(r->gz, 1 << 16);
    }
}

/* Fills buf with up to len bytes; returns how many (0 at the end). Dies on a corrupt file. */
static size_t s_reader_read(s_reader_t *r, uint8_t *buf, size_t len)
{
    if (r->gz) {
        int n = gzread(r->gz, buf, (unsigned) len);
        if (n < 0) {
            int e;
            const char *msg = gzerror(r->gz, &e);
            s_die("%s: read error: %s", s_file, msg);
        }
        return (size_t) n;
    }
    r->lz.next_out = buf;
    r->lz.avail_out = len;
    while (r->lz.avail_out > 0) {
        if (r->lz.avail_in == 0 && !r->lz_eof) {
            r->lz.next_in = r->inbuf;
            r->lz.avail_in = fread(r->inbuf, 1, sizeof r->inbuf, r->fp);
            if (ferror(r->fp)) s_die("%s: read error: %s", s_file, strerror(errno));
            if (r->lz.avail_in == 0) r->lz_eof = 1;
        }
        lzma_ret rc = lzma_code(&r->lz, r->lz_eof ? LZMA_FINISH : LZMA_RUN);
        if (rc == LZMA_STREAM_END) break;
        if (rc != LZMA_OK) s_die("%s: corrupt xz data (liblzma error %d)", s_file, (int) rc);
    }
    return len - r->lz.avail_out;
}

static void s_reader_close(s_reader_t *r)
{
    if (r->gz) gzclose(r->gz);
    if (r->fp) { lzma_end(&r->lz); fclose(r->fp); }
}

/* ---- the trace: every key in order ------------------------------------------------------- */

typedef struct { uint64_t *k; size_t n, cap; } s_keys_t;

static void s_push(s_keys_t *t, uint64_t k)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1 << 16;
        t->k = realloc(t->k, t->cap * sizeof *t->k);
        if (!t->k) s_die("out of memory");
    }
    t->k[t->n++] = k;
}

/* Parses an unsigned decimal at *p (after spaces); 0 on success, p moves past it. */
static int s_num(const char **p, uint64_t *out)
{
    const char *s = *p;
    while (*s == ' ' || *s == '\t') s++;
    if (*s < '0' || *s > '9') return -1;
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        unsigned d = (unsigned) (*s - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
        s++;
    }
    if (*s && *s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return -1;
    *p = s;
    *out = v;
    return 0;
}

static void s_text_line(s_keys_t *t, int arc, char *line, size_t lineno)
{
    size_t len = strlen(line);
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' '
                   || line[len - 1] == '\t')) line[--len] = 0;
    const char *p = line;
    while (*p == ' ' || *p == '\t') p++;
    if (!arc && (*p == 0 || strcmp(p, "*") == 0)) return;
    if (arc && *p == 0) return;
    uint64_t a = 0, b = 1;
    if (s_num(&p, &a) != 0) s_die("%s:%zu: not a key: '%.60s'", s_file, lineno, line);
    if (arc) {
        if (s_num(&p, &b) != 0) s_die("%s:%zu: expected 'start count ...': '%.60s'", s_file, lineno, line);
        if (b > ((uint64_t) 1 << 32)) s_die("%s:%zu: count %" PRIu64 " is implausible", s_file, lineno, b);
        for (uint64_t i = 0; i < b; i++) s_push(t, a + i);
    } else {
        while (*p == ' ' || *p == '\t') p++;
        if (*p) s_die("%s:%zu: expected one key per line: '%.60s'", s_file, lineno, line);
        s_push(t, a);
    }
}

static void s_load(s_keys_t *t, const char *path, const char *format)
{
    int arc = strcmp(format, "arc") == 0, lirs = strcmp(format, "lirs") == 0;
    int i32 = strcmp(format, "int32") == 0, i64 = strcmp(format, "int64") == 0;
    if (!arc && !lirs && !i32 && !i64) s_die("unknown format '%s' (arc, lirs, int32, int64)", format);
    s_file = path;
    s_reader_t *r = malloc(sizeof *r);
    if (!r) s_die("out of memory");
    s_reader_open(r, path);
    static uint8_t buf[1 << 16];
    if (arc || lirs) {
        char line[4096];
        size_t ll = 0, lineno = 1, n;
        while ((n = s_reader_read(r, buf, sizeof buf)) > 0) {
            for (size_t i = 0; i < n; i++) {
                if (buf[i] == 0) s_die("%s:%zu: a NUL byte: not a text trace", path, lineno);
                if (buf[i] == '\n') {
                    line[ll] = 0;
                    s_text_line(t, arc, line, lineno);
                    ll = 0;
                    lineno++;
                } else if (ll + 1 < sizeof line) {
                    line[ll++] = (char) buf[i];
                } else {
                    s_die("%s:%zu: line longer than %zu bytes", path, lineno, sizeof line - 1);
                }
            }
        }
        if (ll) { line[ll] = 0; s_text_line(t, arc, line, lineno); }
    } else {
        size_t w = i32 ? 4 : 8, have = 0, rec = 0, n;
        uint8_t cur[8];
        while ((n = s_reader_read(r, buf, sizeof buf)) > 0) {
            for (size_t i = 0; i < n; i++) {
                cur[have++] = buf[i];
                if (have < w) continue;
                uint64_t v = 0;
                for (size_t j = 0; j < w; j++) v = (v << 8) | cur[j];
                if (i32) v = (uint64_t) (int64_t) (int32_t) (uint32_t) v;
                s_push(t, v);
                have = 0;
                rec++;
            }
        }
        if (have) s_die("%s: record %zu: truncated (%zu of %zu bytes)", path, rec + 1, have, w);
    }
    s_reader_close(r);
    free(r);
    if (t->n == 0) s_die("%s: no keys in the trace", path);
}

/* ---- an open-addressing map from a 64-bit hash to a pointer-sized value ------------------- */

typedef struct { uint64_t h; uintptr_t v; } s_slot_t;
typedef struct { s_slot_t *s; size_t mask, n; } s_map_t;

/* The splitmix finaliser is a bijection, so a key's hash identifies it; 0 is the empty mark. */
static uint64_t s_key_hash(uint64_t k) { uint64_t h = cache_mix64(k); return h ? h : 0x1234567ULL; }

static void s_map_init(s_map_t *m, size_t n)
{
    size_t slots = 16;
    while (slots < 2 * n + 2) slots <<= 1;
    m->s = calloc(slots, sizeof *m->s);
    if (!m->s) s_die("out of memory");
    m->mask = slots - 1;
    m->n = 0;
}

static size_t s_map_find(const s_map_t *m, uint64_t h)
{
    size_t i = (size_t) (h ^ (h >> 29)) & m->mask;
    while (m->s[i].h && m->s[i].h != h) i = (i + 1) & m->mask;
    return i;
}

static void s_map_del(s_map_t *m, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & m->mask;
        if (!m->s[j].h) break;
        size_t home = (size_t) (m->s[j].h ^ (m->s[j].h >> 29)) & m->mask;
        int in_range = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) { m->s[i] = m->s[j]; i = j; }
    }
    m->s[i].h = 0;
    m->n--;
}

/* ---- replay through a cache_policy_t ------------------------------------------------------ */

static double s_run_policy(const s_keys_t *t, size_t size, const char *name, uint64_t seed)
{
    cache_policy_t *p = cache_policy_new(name, size, seed);
    if (!p) s_die("cannot make policy '%s'", name);
    cache_entry_t *pool = calloc(size + 1, sizeof *pool);
    cache_entry_t **free_list = malloc((size + 1) * sizeof *free_list);
    if (!pool || !free_list) s_die("out of memory");
    size_t nfree = size + 1, count = 0;
    for (size_t i = 0; i < size + 1; i++) free_list[i] = &pool[size - i];
    s_map_t m;
    s_map_init(&m, size + 1);
    uint64_t hits = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint64_t h = s_key_hash(t->k[i]);
        size_t slot = s_map_find(&m, h);
        if (m.s[slot].h) {
            hits++;
            p->on_access(p, (cache_entry_t *) m.s[slot].v);
            continue;
        }
        cache_entry_t *e = free_list[--nfree];
        memset(e, 0, sizeof *e);
        e->hash = h;
        if (p->on_insert(p, e) != 0) s_die("policy '%s' out of memory", name);
        m.s[slot].h = h;
        m.s[slot].v = (uintptr_t) e;
        m.n++;
        count++;
        while (count > size) {
            cache_entry_t *v = p->victim(p);
            if (!v) s_die("policy '%s' returned no victim", name);
            p->on_remove(p, v, 1);
            s_map_del(&m, s_map_find(&m, v->hash));
            free_list[nfree++] = v;
            count--;
        }
    }
    p->destroy(&p);
    free(m.s);
    free(pool);
    free(free_list);
    return 100.0 * (double) hits / (double) t->n;
}

/* ---- Belady's OPT: next-use positions precomputed, a lazy max-heap on next use ------------ */

typedef struct { uint64_t next; uint64_t h; } s_heap_item_t;

static void s_heap_push(s_heap_item_t *hp, size_t *n, s_heap_item_t it)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (hp[par].next >= it.next) break;
        hp[i] = hp[par];
        i = par;
    }
    hp[i] = it;
}

static s_heap_item_t s_heap_pop(s_heap_item_t *hp, size_t *n)
{
    s_heap_item_t top = hp[0], last = hp[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && hp[c + 1].next > hp[c].next) c++;
        if (hp[c].next <= last.next) break;
        hp[i] = hp[c];
        i = c;
    }
    if (*n) hp[i] = last;
    return top;
}

/* next[i]: the position of the next request for t->k[i], or n when there is none. */
static uint64_t *s_next_uses(const s_keys_t *t)
{
    uint64_t *next = malloc(t->n * sizeof *next);
    s_map_t last;
    s_map_init(&last, t->n);
    if (!next) s_die("out of memory");
    for (size_t i = t->n; i-- > 0;) {
        uint64_t h = s_key_hash(t->k[i]);
        size_t s = s_map_find(&last, h);
        next[i] = last.s[s].h ? (uint64_t) last.s[s].v : (uint64_t) t->n;
        if (!last.s[s].h) { last.s[s].h = h; last.n++; }
        last.s[s].v = i;
    }
    free(last.s);
    return next;
}

/* O(log n) per request: each request pushes one heap item; stale items (a key since used
 * again or evicted) are skipped when they surface. */
static double s_run_opt(const s_keys_t *t, size_t size, const uint64_t *next)
{
    s_map_t m;                       /* cached key -> its next use */
    s_map_init(&m, size + 1);
    s_heap_item_t *hp = malloc(t->n * sizeof *hp);
    if (!hp) s_die("out of memory");
    size_t hn = 0;
    uint64_t hits = 0;
    for (size_t i = 0; i < t->n; i++) {
        uint64_t h = s_key_hash(t->k[i]);
        size_t slot = s_map_find(&m, h);
        if (m.s[slot].h) {
            hits++;
        } else {
            if (m.n == size) {
                for (;;) {
                    s_heap_item_t top = s_heap_pop(hp, &hn);
                    size_t vs = s_map_find(&m, top.h);
                    if (m.s[vs].h && m.s[vs].v == top.next) { s_map_del(&m, vs); break; }
                }
                slot = s_map_find(&m, h);
            }
            m.s[slot].h = h;
            m.n++;
        }
        m.s[slot].v = (uintptr_t) next[i];
        s_heap_push(hp, &hn, (s_heap_item_t){ next[i], h });
    }
    free(hp);
    free(m.s);
    return 100.0 * (double) hits / (double) t->n;
}

/* ---- command line ------------------------------------------------------------------------- */

static void s_usage(void)
{
    fprintf(stderr,
            "usage: cachesim --trace FILE --format arc|lirs|int32|int64 --sizes N[,N...]\n"
            "                [--policies lru,lfu,fifo,random,wtinylfu,s3fifo,opt] [--seed N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *trace = NULL, *format = NULL, *sizes = NULL;
    const char *policies = "lru,lfu,fifo,random,wtinylfu,s3fifo,opt";
    uint64_t seed = 42;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) s_usage();
        if (!strcmp(a, "--trace")) trace = argv[++i];
        else if (!strcmp(a, "--format")) format = argv[++i];
        else if (!strcmp(a, "--sizes")) sizes = argv[++i];
        else if (!strcmp(a, "--policies")) policies = argv[++i];
        else if (!strcmp(a, "--seed")) seed = strtoull(argv[++i], NULL, 10);
        else s_usage();
    }
    if (!trace || !format || !sizes) s_usage();
    /* Check the arguments before the (possibly long) load. */
    size_t size_list[64], nsizes = 0;
    for (const char *p = sizes; *p;) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || errno || v == 0 || v > ((size_t) 1 << 32) || (*end && *end != ','))
            s_die("--sizes: '%s' is not a list of positive entry counts", sizes);
        if (nsizes == 64) s_die("--sizes: at most 64 sizes");
        size_list[nsizes++] = (size_t) v;
        p = *end ? end + 1 : end;
    }
    if (nsizes == 0) s_die("--sizes is empty");
    char *plist = strdup(policies);
    if (!plist) s_die("out of memory");
    const char *pol[32];
    size_t npol = 0;
    for (char *tok = strtok(plist, ","); tok; tok = strtok(NULL, ",")) {
        if (strcmp(tok, "opt") != 0 && !cache_policy_known(tok))
            s_die("--policies: unknown policy '%s'", tok);
        if (npol == 32) s_die("--policies: too many");
        pol[npol++] = tok;
    }
    if (npol == 0) s_die("--policies is empty");
    if (strcmp(format, "arc") && strcmp(format, "lirs") && strcmp(format, "int32") && strcmp(format, "int64"))
        s_die("unknown format '%s' (arc, lirs, int32, int64)", format);

    s_keys_t t = { 0 };
    s_load(&t, trace, format);
    uint64_t *next = NULL;
    for (size_t si = 0; si < nsizes; si++) {
        for (size_t pi = 0; pi < npol; pi++) {
            double rate;
            if (!strcmp(pol[pi], "opt")) {
                if (!next) next = s_next_uses(&t);
                rate = s_run_opt(&t, size_list[si], next);
            } else {
                rate = s_run_policy(&t, size_list[si], pol[pi], seed);
            }
            printf("%zu,%s,%.2f\n", size_list[si], pol[pi], rate);
            fflush(stdout);
        }
    }
    free(next);
    free(t.k);
    free(plist);
    return 0;
}
