/* dbopt_plans: pure functions over query plans and latencies, no I/O, no state of their own
 * (dbopt_observe.c holds the state and calls these):
 * - the shape of an EXPLAIN (FORMAT JSON) plan: its node types, relation names and index
 *   names in tree order, hashed; costs and row estimates are left out, so the hash changes
 *   when the plan does, not when the statistics drift;
 * - the plan JSON with every expression removed (conditions, filters, sort keys can quote the
 *   parameters a caller sent, which may be user data), safe to publish and answer;
 * - a fixed log-bucket latency histogram with percentiles;
 * - the plan-regression detector, one step per sampling window.
 * Thread-safety: none needed; callers lock their own state. */
#ifndef DBOPT_PLANS_H
#define DBOPT_PLANS_H
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    uint64_t hash;      /* first 48 bits of BLAKE2b-128(shape); 0 only for "no plan" */
    char    *shape;     /* e.g. "Sort(Hash Join(Seq Scan on tracks, Hash(Index Scan on users
                         * using users_pkey)))"; heap */
    char    *json;      /* the redacted plan, compact JSON; heap */
} dbopt_plan_t;

/* Parses the text EXPLAIN (FORMAT JSON) returned. 0 and *out filled (free with
 * dbopt_plan_clear), or -1 with err (the input is not a plan). */
int dbopt_plan_parse(const char *explain_json, dbopt_plan_t *out, char *err, size_t len)
    __attribute__((warn_unused_result));
void dbopt_plan_clear(dbopt_plan_t *p);
/* Deep copy; 0 or -1 (out of memory, *dst then cleared). */
int dbopt_plan_copy(dbopt_plan_t *dst, const dbopt_plan_t *src);

/* ---- latency histogram --------------------------------------------------------------------
 * Written here rather than taken from a library: HdrHistogram has no C package in Debian,
 * and this needs ~30 lines. Bucket 0 holds < 1 us; bucket i >= 1 holds
 * [2^((i-1)/4), 2^(i/4)) us, four buckets per doubling, so a percentile is reported as the
 * bucket's geometric middle, within +-9.1% of the true value; the last bucket holds
 * everything from 2^27.5 us (~190 s) up. Adding is O(1) (one log2). */
enum { DBOPT_HIST_BUCKETS = 112 };
typedef struct {
    uint64_t n[DBOPT_HIST_BUCKETS];     /* 64-bit like count: a busy statement's "since
                                         * start" histogram passes 2^32 calls in days */
    uint64_t count;
} dbopt_hist_t;

void   dbopt_hist_add(dbopt_hist_t *h, int64_t us);
/* The q-quantile (0 < q <= 1) in ms, 0 when empty. */
double dbopt_hist_quantile_ms(const dbopt_hist_t *h, double q);
void   dbopt_hist_merge(dbopt_hist_t *into, const dbopt_hist_t *from);

/* ---- regression detector ------------------------------------------------------------------
 * Fed once per sampling window with the plan shape seen at the window's end and the latency
 * of the calls made during it. A window during which the shape changed is mixed (some calls
 * ran the old plan) and counts for nothing. A window with fewer than min_calls calls waits
 * (dbopt_observe keeps such a window open, so its calls are judged with the next interval's).
 * Otherwise: no baseline yet -> this becomes it; same shape as the baseline -> the
 * baseline's p95 follows this window; another shape (the window after a change) -> ALARM
 * when p95 >= factor x baseline p95 and p95 - baseline p95 >= min_ms (so that sub-millisecond
 * noise on a fast query is not a regression), else ACCEPT. Either way the new shape becomes
 * the baseline, so one change raises one alarm. */
typedef struct {
    uint64_t base_hash;     /* 0: no baseline yet */
    double   base_p95_ms;
    uint64_t last_hash;     /* shape seen at the previous window's end */
} dbopt_regress_t;

typedef struct {
    double   factor;        /* plan_regression_factor, e.g. 2.0 */
    uint64_t min_calls;     /* plan_regression_min_calls */
    double   min_ms;        /* plan_regression_min_ms */
} dbopt_regress_cfg_t;

typedef enum {
    DBOPT_RG_NONE = 0,      /* nothing to say (mixed, too few calls, same plan) */
    DBOPT_RG_BASELINE,      /* first baseline set */
    DBOPT_RG_ACCEPT,        /* a new plan, not slower: it is the baseline now */
    DBOPT_RG_ALARM,         /* a new plan, slower: publish, and it is the baseline now */
} dbopt_rg_verdict_t;

/* hash: the shape now (0 = unknown: the window is skipped). *old_hash_p / *old_p95_p (may be
 * NULL) get the baseline as it was before this step, for the alarm's text. */
dbopt_rg_verdict_t dbopt_regress_step(dbopt_regress_t *st, const dbopt_regress_cfg_t *cfg,
                                      uint64_t hash, uint64_t calls, double p95_ms,
                                      uint64_t *old_hash_p, double *old_p95_p);

int dbopt_plans_selftest(void);
#endif
