/* qv_metrics: the registry of counters, gauges and histograms (see qv_metrics.h).
 * Guarantees: the rendered text is Prometheus exposition format 0.0.4 as promtool checks it:
 * each family's HELP and TYPE once, its samples contiguous, label values and help escaped,
 * histogram buckets cumulative and ending with le="+Inf" equal to _count, numbers as Go's
 * ParseFloat reads them (shortest round-trip decimal, "+Inf", "-Inf", "NaN").
 * One code path renders both a lone registry and a merge of bus snapshots: the registry is
 * first turned into a snapshot, so what the monitor merges is exactly what a daemon renders.
 * Snapshots are built here with malloc'd fields and freed only by qv_metrics_snapshot_free. */
#include "qv_metrics.h"
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double QV_LATENCY_BUCKETS[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                      0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 };
const int QV_LATENCY_NBUCKETS = (int) (sizeof QV_LATENCY_BUCKETS / sizeof QV_LATENCY_BUCKETS[0]);

typedef enum { S_COUNTER, S_GAUGE, S_HISTOGRAM } s_type_t;
static const char *const s_type_names[] = { "counter", "gauge", "histogram" };

typedef struct s_family_t s_family_t;

struct qv_metric_t {
    qv_metrics_t *reg;
    s_family_t   *family;
    char         *labels;      /* as registered, for lookup */
    int           nlabels;
    char        **lname, **lvalue;
    double        value;       /* counter, gauge */
    int           nbuckets;    /* histogram: bounds without +Inf */
    double       *bounds;
    uint64_t     *counts;      /* per bucket, not cumulative; [nbuckets] is the +Inf bucket */
    double        sum;
    uint64_t      count;
};

struct s_family_t {
    char         *name, *help;
    s_type_t      type;
    qv_metric_t **metrics;
    int           nmetrics;
};

struct qv_metrics_t {
    pthread_mutex_t lock;
    char           *service, *instance;
    s_family_t    **families;
    int             nfamilies;
};

qv_metrics_t *qv_metrics_new(const char *service, const char *instance)
{
    qv_metrics_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->service = strdup(service ? service : "");
    m->instance = strdup(instance ? instance : "");
    if (!m->service || !m->instance) {
        qv_metrics_destroy(&m);
        return NULL;
    }
    return m;
}

static void s_metric_free(qv_metric_t *x)
{
    for (int i = 0; i < x->nlabels; i++) {
        free(x->lname[i]);
        free(x->lvalue[i]);
    }
    free(x->lname);
    free(x->lvalue);
    free(x->labels);
    free(x->bounds);
    free(x->counts);
    free(x);
}

void qv_metrics_destroy(qv_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    qv_metrics_t *m = *self_p;
    for (int f = 0; f < m->nfamilies; f++) {
        s_family_t *fam = m->families[f];
        for (int i = 0; i < fam->nmetrics; i++)
            s_metric_free(fam->metrics[i]);
        free(fam->metrics);
        free(fam->name);
        free(fam->help);
        free(fam);
    }
    free(m->families);
    free(m->service);
    free(m->instance);
    pthread_mutex_destroy(&m->lock);
    free(m);
    *self_p = NULL;
}

static bool s_valid_name(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon && c == ':') || (p > s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* Splits "k=v,k2=v2" into x's label arrays. */
static int s_parse_labels(qv_metric_t *x, const char *labels, bool histogram)
{
    x->labels = strdup(labels ? labels : "");
    if (!x->labels)
        return -1;
    if (!labels || !*labels)
        return 0;
    int n = 1;
    for (const char *p = labels; *p; p++)
        n += *p == ',';
    x->lname = calloc((size_t) n, sizeof(char *));
    x->lvalue = calloc((size_t) n, sizeof(char *));
    if (!x->lname || !x->lvalue)
        return -1;
    const char *p = labels;
    while (true) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t) (comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        if (!eq)
            return -1;
        char *name = strndup(p, (size_t) (eq - p));
        char *value = strndup(eq + 1, len - (size_t) (eq - p) - 1);
        x->lname[x->nlabels] = name;
        x->lvalue[x->nlabels] = value;
        x->nlabels++;
        if (!name || !value || !s_valid_name(name, false) || strncmp(name, "__", 2) == 0 ||
            (histogram && strcmp(name, "le") == 0))
            return -1;
        for (int i = 0; i < x->nlabels - 1; i++)
            if (strcmp(x->lname[i], name) == 0)
                return -1;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

static qv_metric_t *s_register(qv_metrics_t *m, s_type_t type, const char *name,
                               const char *help, const char *labels, const double *buckets,
                               int nbuckets)
{
    if (!m || !s_valid_name(name, true))
        return NULL;
    if (!labels)
        labels = "";
    qv_metric_t *found = NULL;
    pthread_mutex_lock(&m->lock);
    s_family_t *fam = NULL;
    for (int f = 0; f < m->nfamilies && !fam; f++)
        if (strcmp(m->families[f]->name, name) == 0)
            fam = m->families[f];
    if (fam) {
        if (fam->type != type)
            goto out;   /* one name, one type: Prometheus would reject the page */
        for (int i = 0; i < fam->nmetrics; i++)
            if (strcmp(fam->metrics[i]->labels, labels) == 0) {
                found = fam->metrics[i];
                goto out;
            }
    }
    qv_metric_t *x = calloc(1, sizeof *x);
    if (!x)
        goto out;
    x->reg = m;
    if (s_parse_labels(x, labels, type == S_HISTOGRAM) != 0)
        goto bad;
    if (type == S_HISTOGRAM) {
        if (!buckets || nbuckets <= 0) {
            buckets = QV_LATENCY_BUCKETS;
            nbuckets = QV_LATENCY_NBUCKETS;
        }
        for (int i = 0; i < nbuckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
                goto bad;
        x->nbuckets = nbuckets;
        x->bounds = malloc(sizeof(double) * (size_t) nbuckets);
        x->counts = calloc((size_t) nbuckets + 1, sizeof(uint64_t));
        if (!x->bounds || !x->counts)
            goto bad;
        memcpy(x->bounds, buckets, sizeof(double) * (size_t) nbuckets);
    }
    if (!fam) {
        s_family_t **fs = realloc(m->families, sizeof(*fs) * ((size_t) m->nfamilies + 1));
        if (!fs)
            goto bad;
        m->families = fs;
        fam = calloc(1, sizeof *fam);
        if (!fam)
            goto bad;
        fam->name = strdup(name);
        fam->help = strdup(help ? help : "");
        fam->type = type;
        if (!fam->name || !fam->help) {
            free(fam->name);
            free(fam->help);
            free(fam);
            goto bad;
        }
        m->families[m->nfamilies++] = fam;
    }
    qv_metric_t **ms = realloc(fam->metrics, sizeof(*ms) * ((size_t) fam->nmetrics + 1));
    if (!ms)
        goto bad;   /* an empty family may stay behind: it renders nothing */
    fam->metrics = ms;
    fam->metrics[fam->nmetrics++] = x;
    x->family = fam;
    found = x;
    goto out;
bad:
    s_metric_free(x);
out:
    pthread_mutex_unlock(&m->lock);
    return found;
}

qv_metric_t *qv_metrics_counter(qv_metrics_t *m, const char *name, const char *help,
                                const char *labels)
{
    return s_register(m, S_COUNTER, name, help, labels, NULL, 0);
}

qv_metric_t *qv_metrics_gauge(qv_metrics_t *m, const char *name, const char *help,
                              const char *labels)
{
    return s_register(m, S_GAUGE, name, help, labels, NULL, 0);
}

qv_metric_t *qv_metrics_histogram(qv_metrics_t *m, const char *name, const char *help,
                                  const char *labels, const double *buckets, int nbuckets)
{
    return s_register(m, S_HISTOGRAM, name, help, labels, buckets, nbuckets);
}

void qv_metric_add(qv_metric_t *c, double v)
{
    if (!c || c->family->type == S_HISTOGRAM)
        return;
    /* A counter only goes up; a negative add is a caller bug we refuse rather than crash on. */
    if (c->family->type == S_COUNTER && !(v >= 0))
        return;
    pthread_mutex_lock(&c->reg->lock);
    c->value += v;
    pthread_mutex_unlock(&c->reg->lock);
}

void qv_metric_set(qv_metric_t *g, double v)
{
    if (!g || g->family->type != S_GAUGE)
        return;
    pthread_mutex_lock(&g->reg->lock);
    g->value = v;
    pthread_mutex_unlock(&g->reg->lock);
}

void qv_metric_observe(qv_metric_t *h, double v)
{
    if (!h || h->family->type != S_HISTOGRAM || isnan(v))
        return;
    int b = 0;
    while (b < h->nbuckets && v > h->bounds[b])
        b++;
    pthread_mutex_lock(&h->reg->lock);
    h->counts[b]++;
    h->count++;
    h->sum += v;
    pthread_mutex_unlock(&h->reg->lock);
}

double qv_metric_value(qv_metric_t *c)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->reg->lock);
    double v = c->family->type == S_HISTOGRAM ? (double) c->count : c->value;
    pthread_mutex_unlock(&c->reg->lock);
    return v;
}

/* ---- snapshots ------------------------------------------------------------------------ */

/* Prometheus numbers: the shortest decimal that reads back exactly; Go's spellings of the
 * special values. */
static void s_fmt_double(double v, char *buf, size_t len)
{
    if (isnan(v)) {
        snprintf(buf, len, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* Whole numbers as integers ("10", not "1e+01"), which is what counters mostly are. */
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, len, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

static Quaver__V1__Sample *s_sample(const char *suffix, const qv_metric_t *x, const char *le,
                                    double value)
{
    Quaver__V1__Sample *s = malloc(sizeof *s);
    if (!s)
        return NULL;
    quaver__v1__sample__init(s);
    s->value = value;
    s->suffix = strdup(suffix);
    size_t n = (size_t) x->nlabels + (le ? 1 : 0);
    s->labels = n ? calloc(n, sizeof(Quaver__V1__Label *)) : NULL;
    if (!s->suffix || (n && !s->labels))
        return s;   /* caller notices the NULL fields */
    for (size_t i = 0; i < n; i++) {
        Quaver__V1__Label *l = malloc(sizeof *l);
        if (!l)
            break;
        quaver__v1__label__init(l);
        bool is_le = i == (size_t) x->nlabels;
        l->name = strdup(is_le ? "le" : x->lname[i]);
        l->value = strdup(is_le ? le : x->lvalue[i]);
        s->labels[s->n_labels++] = l;
    }
    return s;
}

static bool s_sample_ok(const Quaver__V1__Sample *s, size_t want_labels)
{
    if (!s || !s->suffix || s->n_labels != want_labels)
        return false;
    for (size_t i = 0; i < s->n_labels; i++)
        if (!s->labels[i]->name || !s->labels[i]->value)
            return false;
    return true;
}

static void s_sample_free(Quaver__V1__Sample *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_labels; i++) {
        free(s->labels[i]->name);
        free(s->labels[i]->value);
        free(s->labels[i]);
    }
    free(s->labels);
    free(s->suffix);
    free(s);
}

void qv_metrics_snapshot_free(Quaver__V1__MetricsSnapshot *snap)
{
    if (!snap)
        return;
    for (size_t f = 0; f < snap->n_families; f++) {
        Quaver__V1__MetricFamily *fam = snap->families[f];
        for (size_t i = 0; i < fam->n_samples; i++)
            s_sample_free(fam->samples[i]);
        free(fam->samples);
        free(fam->name);
        free(fam->help);
        free(fam->type);
        free(fam);
    }
    free(snap->families);
    free(snap->service);
    free(snap->instance);
    free(snap);
}

Quaver__V1__MetricsSnapshot *qv_metrics_snapshot(qv_metrics_t *m)
{
    if (!m)
        return NULL;
    Quaver__V1__MetricsSnapshot *snap = malloc(sizeof *snap);
    if (!snap)
        return NULL;
    quaver__v1__metrics_snapshot__init(snap);
    snap->service = strdup(m->service);
    snap->instance = strdup(m->instance);
    if (!snap->service || !snap->instance)
        goto fail;
    pthread_mutex_lock(&m->lock);
    snap->families = calloc((size_t) m->nfamilies + 1, sizeof(Quaver__V1__MetricFamily *));
    if (!snap->families)
        goto fail_locked;
    for (int f = 0; f < m->nfamilies; f++) {
        s_family_t *src = m->families[f];
        if (src->nmetrics == 0)
            continue;
        Quaver__V1__MetricFamily *fam = malloc(sizeof *fam);
        if (!fam)
            goto fail_locked;
        quaver__v1__metric_family__init(fam);
        snap->families[snap->n_families++] = fam;
        fam->name = strdup(src->name);
        fam->help = strdup(src->help);
        fam->type = strdup(s_type_names[src->type]);
        size_t per = src->type == S_HISTOGRAM ? 0 : 1;
        size_t total = 0;
        for (int i = 0; i < src->nmetrics; i++)
            total += per ? 1 : (size_t) src->metrics[i]->nbuckets + 3;
        fam->samples = calloc(total, sizeof(Quaver__V1__Sample *));
        if (!fam->name || !fam->help || !fam->type || !fam->samples)
            goto fail_locked;
        for (int i = 0; i < src->nmetrics; i++) {
            qv_metric_t *x = src->metrics[i];
            size_t nl = (size_t) x->nlabels;
            Quaver__V1__Sample *s;
            if (src->type != S_HISTOGRAM) {
                s = s_sample("", x, NULL, x->value);
                fam->samples[fam->n_samples++] = s;
                if (!s_sample_ok(s, nl))
                    goto fail_locked;
                continue;
            }
            uint64_t cum = 0;
            char le[40];
            for (int b = 0; b <= x->nbuckets; b++) {
                cum += x->counts[b];
                s_fmt_double(b < x->nbuckets ? x->bounds[b] : INFINITY, le, sizeof le);
                s = s_sample("_bucket", x, le, (double) cum);
                fam->samples[fam->n_samples++] = s;
                if (!s_sample_ok(s, nl + 1))
                    goto fail_locked;
            }
            s = s_sample("_sum", x, NULL, x->sum);
            fam->samples[fam->n_samples++] = s;
            if (!s_sample_ok(s, nl))
                goto fail_locked;
            s = s_sample("_count", x, NULL, (double) x->count);
            fam->samples[fam->n_samples++] = s;
            if (!s_sample_ok(s, nl))
                goto fail_locked;
        }
    }
    pthread_mutex_unlock(&m->lock);
    return snap;
fail_locked:
    pthread_mutex_unlock(&m->lock);
fail:
    qv_metrics_snapshot_free(snap);
    return NULL;
}

/* ---- text rendering ------------------------------------------------------------------- */

typedef struct {
    char  *data;
    size_t len, cap;
    bool   oom;
} s_buf_t;

static void s_put(s_buf_t *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->oom = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void s_puts(s_buf_t *b, const char *s) { s_put(b, s, strlen(s)); }

/* Escapes \ and newline (help text) and also " (label values), as the format requires. */
static void s_put_escaped(s_buf_t *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            s_put(b, "\\\\", 2);
        else if (*s == '\n')
            s_put(b, "\\n", 2);
        else if (quote && *s == '"')
            s_put(b, "\\\"", 2);
        else
            s_put(b, s, 1);
    }
}

static void s_put_label(s_buf_t *b, bool *first, const char *name, const char *value)
{
    s_puts(b, *first ? "{" : ",");
    *first = false;
    s_puts(b, name);
    s_puts(b, "=\"");
    s_put_escaped(b, value, true);
    s_puts(b, "\"");
}

static bool s_has_label(const Quaver__V1__Sample *s, const char *name)
{
    for (size_t i = 0; i < s->n_labels; i++)
        if (s->labels[i]->name && strcmp(s->labels[i]->name, name) == 0)
            return true;
    return false;
}

static void s_render_family_samples(s_buf_t *b, const Quaver__V1__MetricsSnapshot *snap,
                                    const Quaver__V1__MetricFamily *fam, int add_labels)
{
    for (size_t i = 0; i < fam->n_samples; i++) {
        const Quaver__V1__Sample *s = fam->samples[i];
        /* A snapshot off the bus is untrusted: skip what would break the page. */
        if (!s->suffix || !s_valid_name(s->suffix[0] ? s->suffix + 1 : "x", false))
            continue;
        s_puts(b, fam->name);
        s_puts(b, s->suffix);
        bool first = true;
        /* The sample's own service/instance labels win (the RPC metrics carry service). */
        if (add_labels && snap->service && !s_has_label(s, "service"))
            s_put_label(b, &first, "service", snap->service);
        if (add_labels && snap->instance && !s_has_label(s, "instance"))
            s_put_label(b, &first, "instance", snap->instance);
        for (size_t l = 0; l < s->n_labels; l++) {
            const Quaver__V1__Label *lab = s->labels[l];
            if (!lab->name || !lab->value || !s_valid_name(lab->name, false))
                continue;
            s_put_label(b, &first, lab->name, lab->value);
        }
        if (!first)
            s_puts(b, "}");
        char num[40];
        s_fmt_double(s->value, num, sizeof num);
        s_puts(b, " ");
        s_puts(b, num);
        s_puts(b, "\n");
    }
}

static bool s_known_type(const char *t)
{
    return t && (strcmp(t, "counter") == 0 || strcmp(t, "gauge") == 0 ||
                 strcmp(t, "histogram") == 0 || strcmp(t, "untyped") == 0 ||
                 strcmp(t, "summary") == 0);
}

char *qv_prom_render(Quaver__V1__MetricsSnapshot *const *snaps, size_t n, int add_labels)
{
    s_buf_t b = { 0 };
    s_put(&b, "", 0);   /* an empty page is "", not NULL */
    for (size_t i = 0; i < n; i++) {
        if (!snaps[i])
            continue;
        for (size_t f = 0; f < snaps[i]->n_families; f++) {
            const Quaver__V1__MetricFamily *fam = snaps[i]->families[f];
            if (!fam->name || !s_valid_name(fam->name, true) || !s_known_type(fam->type))
                continue;
            /* Written already, at the first snapshot that has it? */
            bool seen = false;
            for (size_t pi = 0; pi <= i && !seen; pi++) {
                if (!snaps[pi])
                    continue;
                size_t lim = pi == i ? f : snaps[pi]->n_families;
                for (size_t pf = 0; pf < lim && !seen; pf++)
                    seen = snaps[pi]->families[pf]->name &&
                           strcmp(snaps[pi]->families[pf]->name, fam->name) == 0;
            }
            if (seen)
                continue;
            s_puts(&b, "# HELP ");
            s_puts(&b, fam->name);
            if (fam->help && *fam->help) {
                s_puts(&b, " ");
                s_put_escaped(&b, fam->help, false);
            }
            s_puts(&b, "\n# TYPE ");
            s_puts(&b, fam->name);
            s_puts(&b, " ");
            s_puts(&b, fam->type);
            s_puts(&b, "\n");
            /* Every snapshot's samples of this family, from here on, together. */
            for (size_t j = i; j < n; j++) {
                if (!snaps[j])
                    continue;
                for (size_t g = (j == i ? f : 0); g < snaps[j]->n_families; g++) {
                    const Quaver__V1__MetricFamily *other = snaps[j]->families[g];
                    if (!other->name || strcmp(other->name, fam->name) != 0)
                        continue;
                    /* A type clash between daemons: the first one's type stands. */
                    if (!other->type || strcmp(other->type, fam->type) != 0)
                        continue;
                    s_render_family_samples(&b, snaps[j], other, add_labels);
                }
            }
        }
    }
    if (b.oom) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

char *qv_metrics_render(qv_metrics_t *m)
{
    Quaver__V1__MetricsSnapshot *snap = qv_metrics_snapshot(m);
    if (!snap)
        return NULL;
    char *text = qv_prom_render(&snap, 1, 0);
    qv_metrics_snapshot_free(snap);
    return text;
}

/* ---- selftest ------------------------------------------------------------------------- */

#define S_CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "metrics selftest: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    goto fail; } } while (0)

static bool s_same(const char *got, const char *want)
{
    if (got && strcmp(got, want) == 0)
        return true;
    fprintf(stderr, "metrics selftest: got:\n%s\nwant:\n%s\n", got ? got : "(null)", want);
    return false;
}

int qv_metrics_selftest(void)
{
    qv_metrics_t *m = qv_metrics_new("cache", "c1");
    qv_metrics_t *m2 = qv_metrics_new("dbopt", "d1");
    char *text = NULL;
    Quaver__V1__MetricsSnapshot *snaps[2] = { NULL, NULL };
    S_CHECK(m && m2);

    /* bad names and labels are refused */
    S_CHECK(qv_metrics_counter(m, "1bad", "x", NULL) == NULL);
    S_CHECK(qv_metrics_counter(m, "ok_total", "x", "novalue") == NULL);
    S_CHECK(qv_metrics_counter(m, "ok_total", "x", "a-b=1") == NULL);
    S_CHECK(qv_metrics_histogram(m, "h_seconds", "x", "le=1", NULL, 0) == NULL);
    double unsorted[] = { 2, 1 };
    S_CHECK(qv_metrics_histogram(m, "h2_seconds", "x", NULL, unsorted, 2) == NULL);

    /* counter: two label sets, same (name, labels) is the same metric */
    qv_metric_t *c1 = qv_metrics_counter(m, "hits_total", "Cache hits.\nBy tier \\ kind",
                                         "tier=local");
    qv_metric_t *c2 = qv_metrics_counter(m, "hits_total", "ignored", "tier=re\"dis\\x");
    S_CHECK(c1 && c2 && c1 != c2);
    S_CHECK(qv_metrics_counter(m, "hits_total", "", "tier=local") == c1);
    S_CHECK(qv_metrics_gauge(m, "hits_total", "", "tier=local") == NULL);
    qv_metric_add(c1, 3);
    qv_metric_add(c1, -1);   /* refused */
    qv_metric_add(c2, 0.5);
    S_CHECK(qv_metric_value(c1) == 3);

    qv_metric_t *g = qv_metrics_gauge(m, "temp", "A gauge.", NULL);
    qv_metric_set(g, 1e21);
    qv_metric_t *gi = qv_metrics_gauge(m, "odd", "Odd values.", "k=v");
    qv_metric_t *gn = qv_metrics_gauge(m, "odd", "", "k=w");
    qv_metric_set(gi, -INFINITY);
    qv_metric_set(gn, NAN);

    double bk[] = { 0.1, 0.5, 1 };
    qv_metric_t *h = qv_metrics_histogram(m, "lat_seconds", "Latency.", "method=Get", bk, 3);
    S_CHECK(h);
    qv_metric_observe(h, 0.05);
    qv_metric_observe(h, 0.1);    /* le is inclusive */
    qv_metric_observe(h, 0.3);
    qv_metric_observe(h, 7);
    S_CHECK(qv_metric_value(h) == 4);

    /* a late counter of an earlier family still renders inside that family */
    qv_metric_t *c3 = qv_metrics_counter(m, "hits_total", "", "tier=none");
    qv_metric_add(c3, 1);

    text = qv_metrics_render(m);
    S_CHECK(s_same(text,
        "# HELP hits_total Cache hits.\\nBy tier \\\\ kind\n"
        "# TYPE hits_total counter\n"
        "hits_total{tier=\"local\"} 3\n"
        "hits_total{tier=\"re\\\"dis\\\\x\"} 0.5\n"
        "hits_total{tier=\"none\"} 1\n"
        "# HELP temp A gauge.\n"
        "# TYPE temp gauge\n"
        "temp 1e+21\n"
        "# HELP odd Odd values.\n"
        "# TYPE odd gauge\n"
        "odd{k=\"v\"} -Inf\n"
        "odd{k=\"w\"} NaN\n"
        "# HELP lat_seconds Latency.\n"
        "# TYPE lat_seconds histogram\n"
        "lat_seconds_bucket{method=\"Get\",le=\"0.1\"} 2\n"
        "lat_seconds_bucket{method=\"Get\",le=\"0.5\"} 3\n"
        "lat_seconds_bucket{method=\"Get\",le=\"1\"} 3\n"
        "lat_seconds_bucket{method=\"Get\",le=\"+Inf\"} 4\n"
        "lat_seconds_sum{method=\"Get\"} 7.45\n"
        "lat_seconds_count{method=\"Get\"} 4\n"));
    free(text);
    text = NULL;

    /* default buckets */
    qv_metric_t *hd = qv_metrics_histogram(m2, "quaver_rpc_duration_seconds", "RPC latency.",
                                           "service=dbopt,method=Query", NULL, 0);
    qv_metric_observe(hd, 0.0002);
    qv_metric_t *cd = qv_metrics_counter(m2, "hits_total", "Other help.", "tier=local");
    qv_metric_add(cd, 2);
    text = qv_metrics_render(m2);
    S_CHECK(text && strstr(text, "quaver_rpc_duration_seconds_bucket{service=\"dbopt\","
                                 "method=\"Query\",le=\"0.0001\"} 0\n"
                                 "quaver_rpc_duration_seconds_bucket{service=\"dbopt\","
                                 "method=\"Query\",le=\"0.00025\"} 1\n"));
    S_CHECK(strstr(text, "le=\"10\"} 1\nquaver_rpc_duration_seconds_bucket{service=\"dbopt\","
                         "method=\"Query\",le=\"+Inf\"} 1\n"));
    free(text);
    text = NULL;

    /* merge: hits_total from both, one HELP/TYPE, samples contiguous, labels added but the
     * sample's own service label kept */
    snaps[0] = qv_metrics_snapshot(m);
    snaps[1] = qv_metrics_snapshot(m2);
    S_CHECK(snaps[0] && snaps[1]);
    S_CHECK(strcmp(snaps[0]->service, "cache") == 0 && snaps[0]->n_families == 4);
    S_CHECK(snaps[0]->families[3]->n_samples == 6);
    S_CHECK(snaps[0]->families[3]->samples[1]->value == 3);   /* cumulative */
    text = qv_prom_render(snaps, 2, 1);
    S_CHECK(text);
    const char *want_hits =
        "# HELP hits_total Cache hits.\\nBy tier \\\\ kind\n"
        "# TYPE hits_total counter\n"
        "hits_total{service=\"cache\",instance=\"c1\",tier=\"local\"} 3\n"
        "hits_total{service=\"cache\",instance=\"c1\",tier=\"re\\\"dis\\\\x\"} 0.5\n"
        "hits_total{service=\"cache\",instance=\"c1\",tier=\"none\"} 1\n"
        "hits_total{service=\"dbopt\",instance=\"d1\",tier=\"local\"} 2\n"
        "# HELP temp A gauge.\n";
    S_CHECK(strncmp(text, want_hits, strlen(want_hits)) == 0);
    S_CHECK(strstr(strstr(text, "# TYPE hits_total") + 1, "# TYPE hits_total") == NULL);
    S_CHECK(strstr(text, "\nquaver_rpc_duration_seconds_count{instance=\"d1\",service=\"dbopt\","
                         "method=\"Query\"} 1\n"));
    free(text);
    text = qv_prom_render(snaps, 2, 0);
    S_CHECK(text && strstr(text, "hits_total{tier=\"none\"} 1\nhits_total{tier=\"local\"} 2\n"));
    free(text);
    text = NULL;

    qv_metrics_snapshot_free(snaps[0]);
    qv_metrics_snapshot_free(snaps[1]);
    qv_metrics_destroy(&m);
    qv_metrics_destroy(&m2);
    S_CHECK(m == NULL);
    qv_metrics_destroy(&m);   /* NULL is fine */
    return 0;
fail:
    free(text);
    qv_metrics_snapshot_free(snaps[0]);
    qv_metrics_snapshot_free(snaps[1]);
    qv_metrics_destroy(&m);
    qv_metrics_destroy(&m2);
    return -1;
}
