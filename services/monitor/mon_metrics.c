/* mon_metrics: the snapshot table and the merged page (see mon_metrics.h for guarantees).
 * Snapshots are kept as protobuf-c unpacked them (each part its own allocation), which lets
 * us detach the snapshot from its BusMessage and drop single families and samples in place. */
#include "mon_metrics.h"
#include "qv_metrics.h"
#include "qv_hash.h"
#include "qv_log.h"
#include <czmq.h>
#include <pthread.h>
#include <string.h>

typedef struct {
    char                         service[MON_NAME_MAX + 1];
    char                         instance[MON_NAME_MAX + 1];
    int64_t                      last_ms;     /* monotonic, when last heard */
    Quaver__V1__MetricsSnapshot *snap;        /* owned, protobuf-c unpacked */
} s_entry_t;

struct mon_metrics_t {
    pthread_mutex_t lock;
    s_entry_t      *entries;                  /* sorted by (service, instance) */
    size_t          n;
    uint64_t        accepted, rejected, dropped, expired;
};

int mon_name_ok(const char *s)
{
    size_t n = 0;
    for (; s && s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
              || c == '_' || c == '.' || c == ':' || c == '-'))
            return 0;
    }
    return n > 0 && n <= MON_NAME_MAX;
}

/* Prometheus metric name: [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool s_metric_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 200)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p > s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* Label name: [a-zA-Z_][a-zA-Z0-9_]*, not reserved (__*), and not one that the page adds
 * itself (service, instance): a duplicate label makes the whole page invalid. */
static bool s_label_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 100 || strncmp(s, "__", 2) == 0
        || streq(s, "service") || streq(s, "instance"))
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(p > s && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

static bool s_sample_ok(const char *type, const Quaver__V1__Sample *s)
{
    if (!s->suffix)
        return false;
    bool histogram = streq(type, "histogram");
    if (histogram ? !(streq(s->suffix, "_bucket") || streq(s->suffix, "_sum")
                      || streq(s->suffix, "_count"))
                  : !streq(s->suffix, ""))
        return false;
    bool has_le = false;
    for (size_t i = 0; i < s->n_labels; i++) {
        const Quaver__V1__Label *l = s->labels[i];
        if (!l->name || !l->value || strlen(l->value) > 1024)
            return false;
        if (streq(l->name, "le")) {
            /* "le" belongs to histogram buckets only (Prometheus reserves it). */
            if (!histogram || !streq(s->suffix, "_bucket") || has_le)
                return false;
            has_le = true;
            continue;
        }
        if (!s_label_name_ok(l->name))
            return false;
        for (size_t j = 0; j < i; j++)
            if (streq(s->labels[j]->name, l->name))
                return false;
    }
    return histogram && streq(s->suffix, "_bucket") ? has_le : true;
}

/* Drops, in place, what would make the page invalid. Returns how many families or samples
 * were dropped. */
static uint64_t s_sanitize(Quaver__V1__MetricsSnapshot *snap)
{
    uint64_t dropped = 0;
    size_t keep = 0;
    for (size_t i = 0; i < snap->n_families; i++) {
        Quaver__V1__MetricFamily *f = snap->families[i];
        bool ok = s_metric_name_ok(f->name) && f->type
                  && (streq(f->type, "counter") || streq(f->type, "gauge")
                      || streq(f->type, "histogram"));
        for (size_t j = 0; ok && j < keep; j++)
            if (streq(snap->families[j]->name, f->name))
                ok = false;                      /* one family per name per snapshot */
        if (ok) {
            size_t ks = 0;
            for (size_t k = 0; k < f->n_samples; k++) {
                if (s_sample_ok(f->type, f->samples[k]))
                    f->samples[ks++] = f->samples[k];
                else {
                    quaver__v1__sample__free_unpacked(f->samples[k], NULL);
                    dropped++;
                }
            }
            f->n_samples = ks;
        }
        if (ok)
            snap->families[keep++] = f;
        else {
            quaver__v1__metric_family__free_unpacked(f, NULL);
            dropped++;
        }
    }
    snap->n_families = keep;
    return dropped;
}

static int s_cmp_key(const char *svc_a, const char *inst_a, const char *svc_b, const char *inst_b)
{
    int c = strcmp(svc_a, svc_b);
    return c ? c : strcmp(inst_a, inst_b);
}

mon_metrics_t *mon_metrics_new(void)
{
    mon_metrics_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->lock, NULL);
    return self;
}

void mon_metrics_destroy(mon_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mon_metrics_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++)
        quaver__v1__metrics_snapshot__free_unpacked(self->entries[i].snap, NULL);
    free(self->entries);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

int mon_metrics_put_bus(mon_metrics_t *self, const uint8_t *body, size_t len, int64_t now_ms,
                        char *service, char *instance)
{
    Quaver__V1__BusMessage *msg = quaver__v1__bus_message__unpack(NULL, len, body);
    Quaver__V1__MetricsSnapshot *snap = NULL;
    if (msg && msg->body_case == QUAVER__V1__BUS_MESSAGE__BODY_METRICS && msg->metrics) {
        /* Detach: the snapshot is a separate allocation tree, freed on its own later. */
        snap = msg->metrics;
        msg->metrics = NULL;
        msg->body_case = QUAVER__V1__BUS_MESSAGE__BODY__NOT_SET;
    }
    if (msg)
        quaver__v1__bus_message__free_unpacked(msg, NULL);
    if (!snap || !mon_name_ok(snap->service) || !mon_name_ok(snap->instance)) {
        if (snap)
            quaver__v1__metrics_snapshot__free_unpacked(snap, NULL);
        pthread_mutex_lock(&self->lock);
        self->rejected++;
        pthread_mutex_unlock(&self->lock);
        return -1;
    }
    if (service)
        snprintf(service, MON_NAME_MAX + 1, "%s", snap->service);
    if (instance)
        snprintf(instance, MON_NAME_MAX + 1, "%s", snap->instance);
    uint64_t dropped = s_sanitize(snap);

    pthread_mutex_lock(&self->lock);
    self->dropped += dropped;
    size_t lo = 0, hi = self->n;                 /* binary search for the slot */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = s_cmp_key(self->entries[mid].service, self->entries[mid].instance,
                          snap->service, snap->instance);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    int rc = 0;
    if (lo < self->n && s_cmp_key(self->entries[lo].service, self->entries[lo].instance,
                                  snap->service, snap->instance) == 0) {
        quaver__v1__metrics_snapshot__free_unpacked(self->entries[lo].snap, NULL);
        self->entries[lo].snap = snap;
        self->entries[lo].last_ms = now_ms;
    }
    else if (self->n >= MON_METRICS_MAX_INSTANCES) {
        rc = -1;                                 /* a flood of made-up instances stops here */
    }
    else {
        s_entry_t *grown = realloc(self->entries, (self->n + 1) * sizeof *grown);
        if (!grown)
            rc = -1;
        else {
            self->entries = grown;
            memmove(&grown[lo + 1], &grown[lo], (self->n - lo) * sizeof *grown);
            s_entry_t *e = &grown[lo];
            snprintf(e->service, sizeof e->service, "%s", snap->service);
            snprintf(e->instance, sizeof e->instance, "%s", snap->instance);
            e->last_ms = now_ms;
            e->snap = snap;
            self->n++;
        }
    }
    if (rc == 0)
        self->accepted++;
    else {
        self->rejected++;
        quaver__v1__metrics_snapshot__free_unpacked(snap, NULL);
    }
    pthread_mutex_unlock(&self->lock);
    return rc;
}

int mon_metrics_expire(mon_metrics_t *self, int64_t now_ms, int64_t max_age_ms)
{
    int gone = 0;
    pthread_mutex_lock(&self->lock);
    size_t keep = 0;
    for (size_t i = 0; i < self->n; i++) {
        if (now_ms - self->entries[i].last_ms > max_age_ms) {
            qv_info("forgetting %s/%s: no metrics for %lld ms", self->entries[i].service,
                    self->entries[i].instance, (long long) (now_ms - self->entries[i].last_ms));
            quaver__v1__metrics_snapshot__free_unpacked(self->entries[i].snap, NULL);
            gone++;
        }
        else
            self->entries[keep++] = self->entries[i];
    }
    self->n = keep;
    self->expired += gone;
    pthread_mutex_unlock(&self->lock);
    return gone;
}

/* Adds to snaps a shallow copy of src holding only the families whose type agrees with the
 * first type seen for that name (types: name -> type, first seen wins). */
static int s_add_filtered(Quaver__V1__MetricsSnapshot *copy, Quaver__V1__MetricsSnapshot *src,
                          zhashx_t *types)
{
    *copy = *src;
    copy->families = src->n_families ? calloc(src->n_families, sizeof *copy->families) : NULL;
    copy->n_families = 0;
    if (src->n_families && !copy->families)
        return -1;
    for (size_t i = 0; i < src->n_families; i++) {
        Quaver__V1__MetricFamily *f = src->families[i];
        const char *seen = (const char *) zhashx_lookup(types, f->name);
        if (!seen)
            zhashx_insert(types, f->name, f->type);
        else if (!streq(seen, f->type))
            continue;
        copy->families[copy->n_families++] = f;
    }
    return 0;
}

char *mon_metrics_render(mon_metrics_t *self, Quaver__V1__MetricsSnapshot *own)
{
    zhashx_t *types = qv_hashx_new();   /* keys copied, values borrowed; names from the bus */
    if (!types)
        return NULL;
    char *page = NULL;
    pthread_mutex_lock(&self->lock);
    size_t total = self->n + (own ? 1 : 0);
    Quaver__V1__MetricsSnapshot *copies = calloc(total ? total : 1, sizeof *copies);
    Quaver__V1__MetricsSnapshot **ptrs = calloc(total ? total : 1, sizeof *ptrs);
    size_t n = 0;
    bool ok = copies && ptrs;
    if (ok && own) {
        ok = s_add_filtered(&copies[n], own, types) == 0;
        ptrs[n] = &copies[n];
        n++;
    }
    for (size_t i = 0; ok && i < self->n; i++) {
        if (own && streq(self->entries[i].service, own->service)
            && streq(self->entries[i].instance, own->instance))
            continue;
        ok = s_add_filtered(&copies[n], self->entries[i].snap, types) == 0;
        ptrs[n] = &copies[n];
        n++;
    }
    if (ok)
        page = qv_prom_render(ptrs, n, 1);
    pthread_mutex_unlock(&self->lock);
    for (size_t i = 0; copies && i < n; i++)
        free(copies[i].families);
    free(copies);
    free(ptrs);
    zhashx_destroy(&types);
    return page;
}

void mon_metrics_stats(mon_metrics_t *self, mon_metrics_stats_t *out)
{
    pthread_mutex_lock(&self->lock);
    out->instances = self->n;
    out->accepted = self->accepted;
    out->rejected = self->rejected;
    out->dropped_families = self->dropped;
    out->expired = self->expired;
    pthread_mutex_unlock(&self->lock);
}

/* ---- selftest -------------------------------------------------------------------------- */

/* Packs a registry's snapshot as the bus would carry it. Caller frees the result. */
static uint8_t *s_pack_registry(qv_metrics_t *reg, size_t *len)
{
    Quaver__V1__MetricsSnapshot *snap = qv_metrics_snapshot(reg);
    if (!snap)
        return NULL;
    Quaver__V1__BusMessage msg = QUAVER__V1__BUS_MESSAGE__INIT;
    msg.publisher = (char *) "test/x";
    msg.seq = 1;
    msg.body_case = QUAVER__V1__BUS_MESSAGE__BODY_METRICS;
    msg.metrics = snap;
    *len = quaver__v1__bus_message__get_packed_size(&msg);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        quaver__v1__bus_message__pack(&msg, buf);
    qv_metrics_snapshot_free(snap);
    return buf;
}

static int s_count(const char *hay, const char *needle)
{
    int n = 0;
    size_t len = strlen(needle);
    for (const char *p = strstr(hay, needle); p; p = strstr(p + len, needle))
        n++;
    return n;
}

/* Counts lines that start with prefix (a sample of a family, or a comment line). */
static int s_count_lines(const char *page, const char *prefix)
{
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *line = page; line && *line; ) {
        if (strncmp(line, prefix, len) == 0)
            n++;
        const char *nl = strchr(line, '\n');
        line = nl ? nl + 1 : NULL;
    }
    return n;
}

#define S_CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "metrics: " __VA_ARGS__); \
                                              fputc('\n', stderr); goto done; } } while (0)

int mon_metrics_selftest(void)
{
    int rc = -1;
    char *page = NULL;
    uint8_t *b1 = NULL, *b2 = NULL, *b3 = NULL, *b4 = NULL;
    size_t l1 = 0, l2 = 0, l3 = 0, l4 = 0;
    mon_metrics_t *mm = mon_metrics_new();
    qv_metrics_t *cache = qv_metrics_new("cache", "c1");
    qv_metrics_t *dbopt = qv_metrics_new("dbopt", "d1");
    qv_metrics_t *own = qv_metrics_new("monitor", "m1");
    qv_metrics_t *odd = qv_metrics_new("stream", "s1");
    Quaver__V1__MetricsSnapshot *own_snap = NULL;
    S_CHECK(mm && cache && dbopt && own && odd, "setup failed");

    /* Two daemons with a family in common (as every daemon has the RPC families). */
    qv_metric_add(qv_metrics_counter(cache, "quaver_rpc_requests_total", "RPC requests",
                                     "method=Get,status=200"), 5);
    qv_metric_add(qv_metrics_counter(cache, "quaver_cache_hits_total", "Cache hits", NULL), 3);
    qv_metric_observe(qv_metrics_histogram(cache, "quaver_rpc_duration_seconds", "RPC latency",
                                           "method=Get", NULL, 0), 0.002);
    qv_metric_add(qv_metrics_counter(dbopt, "quaver_rpc_requests_total", "RPC requests",
                                     "method=Query,status=200"), 7);
    qv_metric_observe(qv_metrics_histogram(dbopt, "quaver_rpc_duration_seconds", "RPC latency",
                                           "method=Query", NULL, 0), 0.02);
    qv_metric_set(qv_metrics_gauge(dbopt, "quaver_db_pool_connections", "Open connections",
                                   NULL), 4);
    qv_metric_set(qv_metrics_gauge(own, "quaver_host_load1", "Load average, 1 minute", NULL),
                  0.5);
    /* A publisher that disagrees on a type: its family must stay out of the page. */
    qv_metric_set(qv_metrics_gauge(odd, "quaver_cache_hits_total", "wrong type", NULL), 1);
    qv_metric_set(qv_metrics_gauge(odd, "quaver_stream_files", "Stored files", NULL), 2);

    b1 = s_pack_registry(cache, &l1);
    b2 = s_pack_registry(dbopt, &l2);
    b3 = s_pack_registry(odd, &l3);
    b4 = s_pack_registry(own, &l4);
    S_CHECK(b1 && b2 && b3 && b4, "pack failed");
    char svc[MON_NAME_MAX + 1], inst[MON_NAME_MAX + 1];
    S_CHECK(mon_metrics_put_bus(mm, b1, l1, 1000, svc, inst) == 0, "put cache");
    S_CHECK(streq(svc, "cache") && streq(inst, "c1"), "names not returned");
    S_CHECK(mon_metrics_put_bus(mm, b2, l2, 1000, NULL, NULL) == 0, "put dbopt");
    S_CHECK(mon_metrics_put_bus(mm, b2, l2, 1500, NULL, NULL) == 0, "put dbopt again");
    S_CHECK(mon_metrics_put_bus(mm, b3, l3, 1000, NULL, NULL) == 0, "put stream");
    S_CHECK(mon_metrics_put_bus(mm, b4, l4, 1000, NULL, NULL) == 0, "put own");
    {
        /* A hand-made snapshot with what no registry would produce: a bad family name, a
         * sample claiming the label the page adds itself, a gauge with a bucket suffix. */
        Quaver__V1__Label l_bad = QUAVER__V1__LABEL__INIT, l_ok = QUAVER__V1__LABEL__INIT;
        l_bad.name = (char *) "service";
        l_bad.value = (char *) "spoofed";
        l_ok.name = (char *) "queue";
        l_ok.value = (char *) "a\"b\\c\nd";       /* needs escaping in the page */
        Quaver__V1__Label *lb[] = { &l_bad }, *lo[] = { &l_ok };
        Quaver__V1__Sample s_bad = QUAVER__V1__SAMPLE__INIT, s_ok = QUAVER__V1__SAMPLE__INIT,
                           s_suffix = QUAVER__V1__SAMPLE__INIT;
        s_bad.n_labels = 1;
        s_bad.labels = lb;
        s_ok.n_labels = 1;
        s_ok.labels = lo;
        s_ok.value = 9;
        s_suffix.suffix = (char *) "_bucket";
        Quaver__V1__Sample *samples[] = { &s_bad, &s_ok, &s_suffix };
        Quaver__V1__MetricFamily f_bad = QUAVER__V1__METRIC_FAMILY__INIT,
                                 f_ok = QUAVER__V1__METRIC_FAMILY__INIT;
        f_bad.name = (char *) "9bad name";
        f_bad.type = (char *) "gauge";
        f_ok.name = (char *) "quaver_fake_depth";
        f_ok.help = (char *) "Depth";
        f_ok.type = (char *) "gauge";
        f_ok.n_samples = 3;
        f_ok.samples = samples;
        Quaver__V1__MetricFamily *fams[] = { &f_bad, &f_ok };
        Quaver__V1__MetricsSnapshot snap = QUAVER__V1__METRICS_SNAPSHOT__INIT;
        snap.service = (char *) "fake";
        snap.instance = (char *) "f1";
        snap.n_families = 2;
        snap.families = fams;
        Quaver__V1__BusMessage msg = QUAVER__V1__BUS_MESSAGE__INIT;
        msg.body_case = QUAVER__V1__BUS_MESSAGE__BODY_METRICS;
        msg.metrics = &snap;
        uint8_t buf[1024];
        size_t blen = quaver__v1__bus_message__pack(&msg, buf);
        S_CHECK(mon_metrics_put_bus(mm, buf, blen, 1000, NULL, NULL) == 0, "put fake");
        snap.service = (char *) "bad service";
        blen = quaver__v1__bus_message__pack(&msg, buf);
        S_CHECK(mon_metrics_put_bus(mm, buf, blen, 1000, NULL, NULL) == -1, "bad service kept");
    }
    /* Garbage from the network: rejected, nothing kept, no crash. */
    const uint8_t junk[] = { 0xff, 0xff, 0xff, 0x01, 0x02 };
    S_CHECK(mon_metrics_put_bus(mm, junk, sizeof junk, 1000, NULL, NULL) == -1, "junk accepted");
    S_CHECK(mon_metrics_put_bus(mm, (const uint8_t *) "", 0, 1000, NULL, NULL) == -1,
            "empty message accepted");
    mon_metrics_stats_t st;
    mon_metrics_stats(mm, &st);
    S_CHECK(st.instances == 5, "expected 5 instances, have %zu", st.instances);
    S_CHECK(st.dropped_families == 3, "expected 3 drops, have %llu",
            (unsigned long long) st.dropped_families);
    S_CHECK(st.rejected == 3, "expected 2 rejected, have %llu", (unsigned long long) st.rejected);

    own_snap = qv_metrics_snapshot(own);
    page = mon_metrics_render(mm, own_snap);
    S_CHECK(page, "render failed");
    const char *out = getenv("MON_PAGE_OUT");
    if (out) {
        FILE *f = fopen(out, "w");
        if (f) {
            fputs(page, f);
            fclose(f);
        }
    }
    /* Parse back: every family has HELP and TYPE exactly once. */
    S_CHECK(s_count_lines(page, "# TYPE quaver_rpc_requests_total ") == 1, "TYPE twice:\n%s", page);
    S_CHECK(s_count_lines(page, "# HELP quaver_rpc_requests_total ") == 1, "HELP twice");
    S_CHECK(s_count_lines(page, "# TYPE quaver_rpc_duration_seconds histogram") == 1,
            "histogram TYPE");
    S_CHECK(s_count_lines(page, "# TYPE quaver_cache_hits_total counter") == 1, "hits TYPE");
    S_CHECK(s_count_lines(page, "# TYPE quaver_host_load1 gauge") == 1, "own gauge missing");
    S_CHECK(s_count_lines(page, "# TYPE quaver_stream_files gauge") == 1, "stream family");
    /* Both daemons' samples are there, labelled with their service and instance. */
    S_CHECK(s_count(page, "quaver_rpc_requests_total{") == 2, "rpc samples");
    S_CHECK(s_count(page, "service=\"cache\"") > 0 && s_count(page, "instance=\"c1\"") > 0,
            "cache labels");
    S_CHECK(s_count(page, "service=\"dbopt\"") > 0 && s_count(page, "instance=\"d1\"") > 0,
            "dbopt labels");
    S_CHECK(s_count(page, "service=\"monitor\"") > 0, "own labels");
    S_CHECK(s_count_lines(page, "quaver_host_load1{") == 1, "own snapshot rendered twice");
    S_CHECK(s_count_lines(page, "quaver_rpc_duration_seconds_bucket{") >= 2, "buckets");
    /* The type-conflicting family from stream is left out, its other family kept. */
    S_CHECK(s_count(page, "wrong type") == 0 && s_count(page, "service=\"stream\"") == 1,
            "type conflict not filtered");
    S_CHECK(s_count(page, "spoofed") == 0 && s_count(page, "9bad") == 0
            && s_count_lines(page, "quaver_fake_depth{") == 1, "sanitizer");
    /* Families of one name are contiguous: no TYPE line for a family after its samples. */
    const char *first_hits = strstr(page, "quaver_cache_hits_total{");
    const char *type_hits = strstr(page, "# TYPE quaver_cache_hits_total");
    S_CHECK(first_hits && type_hits && type_hits < first_hits, "family order");

    /* Expiry: dbopt was heard at 1500, the others at 1000. */
    S_CHECK(mon_metrics_expire(mm, 61200, 60000) == 4, "expiry count");
    mon_metrics_stats(mm, &st);
    S_CHECK(st.instances == 1, "one instance left");
    free(page);
    page = mon_metrics_render(mm, NULL);
    S_CHECK(page && s_count(page, "service=\"dbopt\"") > 0 && s_count(page, "service=\"cache\"") == 0,
            "expired instance still rendered");
    S_CHECK(mon_name_ok("dbopt") && mon_name_ok("host-1.pod:2") && !mon_name_ok("")
            && !mon_name_ok("a\"b") && !mon_name_ok("a,b") && !mon_name_ok("a b"), "names");
    rc = 0;
done:
    free(page);
    free(b1);
    free(b2);
    free(b3);
    free(b4);
    if (own_snap)
        qv_metrics_snapshot_free(own_snap);
    qv_metrics_destroy(&cache);
    qv_metrics_destroy(&dbopt);
    qv_metrics_destroy(&own);
    qv_metrics_destroy(&odd);
    mon_metrics_destroy(&mm);
    return rc;
}
