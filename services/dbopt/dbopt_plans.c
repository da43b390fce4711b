/* dbopt_plans: plan shapes (jansson + libsodium), the latency histogram and the regression
 * detector (dbopt_plans.h says what each guarantees). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <jansson.h>
#include <sodium.h>
#include "dbopt_plans.h"

/* ---- plan shape ------------------------------------------------------------------------- */

/* Keys of a plan node kept in the published JSON: what the plan does and what it estimates,
 * none of them an expression. Everything else (Filter, Index Cond, Hash Cond, Sort Key,
 * Output, ...) is dropped because it can contain the statement's parameter values. */
static const char *const s_keep[] = {
    "Node Type", "Parent Relationship", "Subplan Name", "Relation Name", "Alias",
    "Index Name", "Join Type", "Strategy", "Scan Direction", "Partial Mode", "Parallel Aware",
    "Startup Cost", "Total Cost", "Plan Rows", "Plan Width", NULL
};

typedef struct {
    char  *buf;
    size_t len, cap;
    bool   oom;
} s_str_t;

static void s_put(s_str_t *s, const char *t)
{
    size_t n = strlen(t);
    if (s->oom)
        return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *b = realloc(s->buf, cap);
        if (!b) {
            s->oom = true;
            return;
        }
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, t, n + 1);
    s->len += n;
}

static const char *s_get(json_t *node, const char *key)
{
    return json_string_value(json_object_get(node, key));
}

/* Writes node's shape into s and its redacted copy into *red. -1 when node is no plan node. */
static int s_walk(json_t *node, s_str_t *s, json_t **red, int depth)
{
    const char *type = s_get(node, "Node Type");
    if (!json_is_object(node) || !type || depth > 100)
        return -1;
    s_put(s, type);
    const char *rel = s_get(node, "Relation Name");
    const char *idx = s_get(node, "Index Name");
    if (rel) {
        s_put(s, " on ");
        s_put(s, rel);
    }
    if (idx) {
        s_put(s, " using ");
        s_put(s, idx);
    }
    json_t *out = json_object();
    if (!out)
        return -1;
    for (int i = 0; s_keep[i]; i++) {
        json_t *v = json_object_get(node, s_keep[i]);
        if (v)
            json_object_set(out, s_keep[i], v);
    }
    json_t *plans = json_object_get(node, "Plans");
    size_t n = json_array_size(plans);
    if (n) {
        json_t *kids = json_array();
        json_object_set_new(out, "Plans", kids);
        s_put(s, "(");
        for (size_t i = 0; i < n; i++) {
            json_t *kid = NULL;
            if (i)
                s_put(s, ", ");
            if (s_walk(json_array_get(plans, i), s, &kid, depth + 1) < 0) {
                json_decref(out);
                return -1;
            }
            json_array_append_new(kids, kid);
        }
        s_put(s, ")");
    }
    *red = out;
    return 0;
}

int dbopt_plan_parse(const char *text, dbopt_plan_t *out, char *err, size_t len)
{
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loads(text ? text : "", 0, &jerr);
    if (!root) {
        snprintf(err, len, "EXPLAIN output is not JSON: %s", jerr.text);
        return -1;
    }
    /* EXPLAIN (FORMAT JSON) answers [ { "Plan": { ... } } ] */
    json_t *top = json_is_array(root) ? json_array_get(root, 0) : root;
    json_t *plan = json_object_get(top, "Plan");
    s_str_t s = { 0 };
    json_t *red = NULL;
    int rc = -1;
    if (!plan)
        snprintf(err, len, "EXPLAIN output has no Plan");
    else if (s_walk(plan, &s, &red, 0) < 0 || s.oom)
        snprintf(err, len, "EXPLAIN output has a node without a Node Type");
    else {
        json_t *wrap = json_pack("[{s:o}]", "Plan", red);
        red = NULL;
        out->json = wrap ? json_dumps(wrap, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(wrap);
        unsigned char h[16];
        crypto_generichash(h, sizeof h, (const unsigned char *) s.buf, s.len, NULL, 0);
        uint64_t v = 0;
        for (int i = 0; i < 6; i++)
            v = (v << 8) | h[i];
        out->hash = v ? v : 1;      /* 0 means "no plan" */
        out->shape = s.buf;
        s.buf = NULL;
        if (out->json && out->shape)
            rc = 0;
        else
            snprintf(err, len, "out of memory");
    }
    json_decref(red);
    free(s.buf);
    json_decref(root);
    if (rc < 0)
        dbopt_plan_clear(out);
    return rc;
}

void dbopt_plan_clear(dbopt_plan_t *p)
{
    if (!p)
        return;
    free(p->shape);
    free(p->json);
    memset(p, 0, sizeof *p);
}

int dbopt_plan_copy(dbopt_plan_t *dst, const dbopt_plan_t *src)
{
    memset(dst, 0, sizeof *dst);
    dst->hash = src->hash;
    dst->shape = src->shape ? strdup(src->shape) : NULL;
    dst->json = src->json ? strdup(src->json) : NULL;
    if ((src->shape && !dst->shape) || (src->json && !dst->json)) {
        dbopt_plan_clear(dst);
        return -1;
    }
    return 0;
}

/* ---- histogram --------------------------------------------------------------------------- */

void dbopt_hist_add(dbopt_hist_t *h, int64_t us)
{
    int i = 0;
    if (us >= 1) {
        i = 1 + (int) floor(4.0 * log2((double) us));
        if (i >= DBOPT_HIST_BUCKETS)
            i = DBOPT_HIST_BUCKETS - 1;
    }
    h->n[i]++;
    h->count++;
}

double dbopt_hist_quantile_ms(const dbopt_hist_t *h, double q)
{
    if (!h->count)
        return 0.0;
    /* the smallest bucket whose cumulative count reaches rank ceil(q * count) */
    uint64_t rank = (uint64_t) ceil(q * (double) h->count);
    if (rank < 1)
        rank = 1;
    uint64_t cum = 0;
    int i = 0;
    for (; i < DBOPT_HIST_BUCKETS - 1; i++) {
        cum += h->n[i];
        if (cum >= rank)
            break;
    }
    if (i == 0)
        return 0.0005;      /* < 1 us: say half a microsecond */
    return pow(2.0, ((double) i - 0.5) / 4.0) / 1000.0;
}

void dbopt_hist_merge(dbopt_hist_t *into, const dbopt_hist_t *from)
{
    for (int i = 0; i < DBOPT_HIST_BUCKETS; i++)
        into->n[i] += from->n[i];
    into->count += from->count;
}

/* ---- regression detector ------------------------------------------------------------------ */

dbopt_rg_verdict_t dbopt_regress_step(dbopt_regress_t *st, const dbopt_regress_cfg_t *cfg,
                                      uint64_t hash, uint64_t calls, double p95_ms,
                                      uint64_t *old_hash_p, double *old_p95_p)
{
    if (old_hash_p)
        *old_hash_p = st->base_hash;
    if (old_p95_p)
        *old_p95_p = st->base_p95_ms;
    if (!hash)
        return DBOPT_RG_NONE;           /* no EXPLAIN this window: nothing known */
    if (hash != st->last_hash) {
        st->last_hash = hash;           /* the change happened during this window: mixed */
        return DBOPT_RG_NONE;
    }
    if (calls < cfg->min_calls)
        return DBOPT_RG_NONE;
    if (!st->base_hash) {
        st->base_hash = hash;
        st->base_p95_ms = p95_ms;
        return DBOPT_RG_BASELINE;
    }
    if (hash == st->base_hash) {
        st->base_p95_ms = p95_ms;
        return DBOPT_RG_NONE;
    }
    bool slower = p95_ms >= cfg->factor * st->base_p95_ms
                  && p95_ms - st->base_p95_ms >= cfg->min_ms;
    st->base_hash = hash;
    st->base_p95_ms = p95_ms;
    return slower ? DBOPT_RG_ALARM : DBOPT_RG_ACCEPT;
}

/* ---- selftest ---------------------------------------------------------------------------- */
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "%s:%d: check failed: %s\n", \
                                          __FILE__, __LINE__, #c); return -1; } } while (0)

static int s_shape_selftest(void)
{
    /* what PostgreSQL 15 answers for track_queue, cut down; the value 'secret' must never
     * reach the redacted JSON */
    const char *a =
        "[{\"Plan\": {\"Node Type\": \"Nested Loop\", \"Join Type\": \"Inner\","
        " \"Startup Cost\": 0.29, \"Total Cost\": 20.1, \"Plan Rows\": 3, \"Plan Width\": 80,"
        " \"Plans\": [{\"Node Type\": \"Index Scan\", \"Parent Relationship\": \"Outer\","
        "   \"Relation Name\": \"tracks\", \"Alias\": \"t\", \"Index Name\": \"tracks_queue_idx\","
        "   \"Index Cond\": \"(room_id = '42'::bigint)\", \"Filter\": \"(filename <> 'secret')\","
        "   \"Total Cost\": 8.3, \"Plan Rows\": 3},"
        "  {\"Node Type\": \"Index Scan\", \"Parent Relationship\": \"Inner\","
        "   \"Relation Name\": \"users\", \"Alias\": \"u\", \"Index Name\": \"users_pkey\","
        "   \"Index Cond\": \"(id = t.uploader_id)\", \"Total Cost\": 4.1, \"Plan Rows\": 1}]}}]";
    /* the same plan with other costs and rows: same shape */
    const char *a2 =
        "[{\"Plan\": {\"Node Type\": \"Nested Loop\", \"Total Cost\": 99.0, \"Plan Rows\": 300,"
        " \"Plans\": [{\"Node Type\": \"Index Scan\", \"Relation Name\": \"tracks\","
        "   \"Index Name\": \"tracks_queue_idx\", \"Plan Rows\": 300},"
        "  {\"Node Type\": \"Index Scan\", \"Relation Name\": \"users\","
        "   \"Index Name\": \"users_pkey\"}]}}]";
    /* the index dropped: a seq scan and a sort */
    const char *b =
        "[{\"Plan\": {\"Node Type\": \"Sort\", \"Sort Key\": [\"t.vote_score DESC\"],"
        " \"Plans\": [{\"Node Type\": \"Nested Loop\", \"Plans\": ["
        "  {\"Node Type\": \"Seq Scan\", \"Relation Name\": \"tracks\"},"
        "  {\"Node Type\": \"Index Scan\", \"Relation Name\": \"users\","
        "   \"Index Name\": \"users_pkey\"}]}]}}]";
    dbopt_plan_t pa, pa2, pb, pc;
    char err[128];
    CHECK(dbopt_plan_parse(a, &pa, err, sizeof err) == 0);
    CHECK(dbopt_plan_parse(a2, &pa2, err, sizeof err) == 0);
    CHECK(dbopt_plan_parse(b, &pb, err, sizeof err) == 0);
    CHECK(strcmp(pa.shape, "Nested Loop(Index Scan on tracks using tracks_queue_idx, "
                 "Index Scan on users using users_pkey)") == 0);
    CHECK(pa.hash == pa2.hash && pa.hash != 0 && pa.hash < (1ULL << 48));
    CHECK(pa.hash != pb.hash);
    CHECK(strcmp(pb.shape, "Sort(Nested Loop(Seq Scan on tracks, Index Scan on users using "
                 "users_pkey))") == 0);
    CHECK(!strstr(pa.json, "secret") && !strstr(pa.json, "42") && !strstr(pa.json, "Cond"));
    CHECK(strstr(pa.json, "\"Index Name\":\"tracks_queue_idx\"") && strstr(pa.json, "20.1"));
    CHECK(!strstr(pb.json, "Sort Key"));
    CHECK(dbopt_plan_copy(&pc, &pa) == 0 && pc.hash == pa.hash && strcmp(pc.json, pa.json) == 0);
    dbopt_plan_clear(&pa);
    dbopt_plan_clear(&pa2);
    dbopt_plan_clear(&pb);
    dbopt_plan_clear(&pc);
    CHECK(pa.shape == NULL);
    CHECK(dbopt_plan_parse("not json", &pa, err, sizeof err) == -1 && pa.json == NULL);
    CHECK(dbopt_plan_parse("[{\"Plan\": {\"Plans\": []}}]", &pa, err, sizeof err) == -1);
    CHECK(dbopt_plan_parse("[]", &pa, err, sizeof err) == -1);
    CHECK(dbopt_plan_parse(NULL, &pa, err, sizeof err) == -1);
    return 0;
}

static int s_hist_selftest(void)
{
    dbopt_hist_t h = { { 0 }, 0 };
    CHECK(dbopt_hist_quantile_ms(&h, 0.5) == 0.0);
    /* 1..1000 us uniform: p50 ~ 0.5 ms, p99 ~ 0.99 ms, each within the bucket width */
    for (int64_t us = 1; us <= 1000; us++)
        dbopt_hist_add(&h, us);
    CHECK(h.count == 1000);
    double p50 = dbopt_hist_quantile_ms(&h, 0.50), p99 = dbopt_hist_quantile_ms(&h, 0.99);
    CHECK(fabs(p50 - 0.5) / 0.5 < 0.10);
    CHECK(fabs(p99 - 0.99) / 0.99 < 0.10);
    /* one slow call in twenty moves p95 but not p50 */
    dbopt_hist_t g = { { 0 }, 0 };
    for (int i = 0; i < 95; i++)
        dbopt_hist_add(&g, 200);
    for (int i = 0; i < 5; i++)
        dbopt_hist_add(&g, 50000);
    CHECK(fabs(dbopt_hist_quantile_ms(&g, 0.5) - 0.2) < 0.02);
    CHECK(fabs(dbopt_hist_quantile_ms(&g, 0.95) - 0.2) < 0.02);
    CHECK(fabs(dbopt_hist_quantile_ms(&g, 0.99) - 50.0) / 50.0 < 0.10);
    dbopt_hist_add(&g, 0);
    dbopt_hist_add(&g, -5);
    dbopt_hist_add(&g, INT64_MAX);      /* clamps into the last bucket */
    CHECK(g.count == 103 && g.n[0] == 2 && g.n[DBOPT_HIST_BUCKETS - 1] == 1);
    dbopt_hist_merge(&h, &g);
    CHECK(h.count == 1103);
    return 0;
}

/* The detector on made-up windows: (hash, calls, p95) per window, and the verdict expected. */
static int s_regress_selftest(void)
{
    const dbopt_regress_cfg_t cfg = { .factor = 2.0, .min_calls = 10, .min_ms = 1.0 };
    static const struct {
        uint64_t hash, calls;
        double p95;
        dbopt_rg_verdict_t want;
    } w[] = {
        { 0, 50, 1.0, DBOPT_RG_NONE },      /* no plan known yet */
        { 7, 50, 1.0, DBOPT_RG_NONE },      /* first sight of plan 7: window mixed */
        { 7, 3, 1.0, DBOPT_RG_NONE },       /* too few calls */
        { 7, 50, 2.0, DBOPT_RG_BASELINE },  /* baseline: 7 at 2 ms */
        { 7, 50, 3.0, DBOPT_RG_NONE },      /* same plan: baseline p95 follows (3 ms) */
        { 9, 50, 50.0, DBOPT_RG_NONE },     /* plan 9 appears: mixed window, ignored */
        { 9, 5, 50.0, DBOPT_RG_NONE },      /* too few calls to judge */
        { 9, 50, 5.9, DBOPT_RG_ACCEPT },    /* 5.9 < 2 x 3: not slower, new baseline 9 */
        { 11, 50, 5.0, DBOPT_RG_NONE },     /* plan 11 appears */
        { 11, 50, 12.0, DBOPT_RG_ALARM },   /* 12 >= 2 x 5.9: regression */
        { 11, 50, 12.0, DBOPT_RG_NONE },    /* reported once: 11 is the baseline now */
        { 13, 50, 0.1, DBOPT_RG_NONE },
        { 13, 50, 0.1, DBOPT_RG_ACCEPT },   /* faster: accepted */
        { 15, 50, 0.1, DBOPT_RG_NONE },
        { 15, 50, 0.5, DBOPT_RG_ACCEPT },   /* 5x but only 0.4 ms more: noise (min_ms) */
        { 17, 50, 0.5, DBOPT_RG_NONE },
        { 17, 50, 1.5, DBOPT_RG_ALARM },    /* 3x and 1 ms more */
    };
    dbopt_regress_t st = { 0, 0, 0 };
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        uint64_t oh;
        double op;
        dbopt_rg_verdict_t v = dbopt_regress_step(&st, &cfg, w[i].hash, w[i].calls, w[i].p95,
                                                  &oh, &op);
        if (v != w[i].want) {
            fprintf(stderr, "regress window %zu: verdict %d, want %d\n", i, v, w[i].want);
            return -1;
        }
        if (i == 9)
            CHECK(oh == 9 && op == 5.9);    /* the alarm knows the old baseline */
    }
    CHECK(st.base_hash == 17 && st.base_p95_ms == 1.5);
    return 0;
}

int dbopt_plans_selftest(void)
{
    if (sodium_init() < 0)
        return -1;
    if (s_shape_selftest() < 0 || s_hist_selftest() < 0 || s_regress_selftest() < 0)
        return -1;
    return 0;
}
