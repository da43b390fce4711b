/* dbopt_advise_cli: `quaver-dbopt advise --database URL [--apply] [--json]`, the advisor
 * used once on any PostgreSQL database, the way Dexter is used. Exit 0 ok, 2 bad usage,
 * 1 failure (the message names the cause and the fix; nothing was changed). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "dbopt_advise.h"

/* the options that take a number: name, bounds, where it goes in dbopt_advise_opts_t */
#define S_OPT(field) offsetof(dbopt_advise_opts_t, field)
static const struct {
    const char *name;
    double      lo, hi;
    size_t      off;
    bool        is_int;
} s_numeric[] = {
    { "--max-queries",       1, 10000,    S_OPT(max_queries),          true },
    { "--min-rows",          0, 1e12,     S_OPT(min_rows),             false },
    { "--max-per-table",     1, 32,       S_OPT(max_per_table),        true },
    { "--write-cost",        0, 1e9,      S_OPT(write_cost),           false },
    { "--min-cost-ratio",    1, 1e6,      S_OPT(min_cost_ratio),       false },
    { "--keep-factor",       0, 1e6,      S_OPT(keep_factor),          false },
    { "--statement-timeout", 0, 86400000, S_OPT(statement_timeout_ms), true },
    { "--runs",              1, 64,       S_OPT(runs),                 true },
};

static void s_usage(FILE *f)
{
    fprintf(f,
        "usage: quaver-dbopt advise --database URL [--apply] [--json] [--verbose]\n"
        "         [--max-queries N] [--min-rows N] [--max-per-table N] [--write-cost X]\n"
        "         [--min-cost-ratio X] [--keep-factor X] [--runs N] [--statement-timeout MS]\n"
        "Reads pg_stat_statements of the database, proposes indexes costed with hypopg and,\n"
        "with --apply, creates each one CONCURRENTLY, times its queries before and after and\n"
        "keeps it only when they got --keep-factor (default 2) times faster.\n"
        "--statement-timeout (default 60000 ms, 0 = none) bounds every statement it runs,\n"
        "index builds included. Exit: 0 ok, 1 failure (nothing changed), 2 bad usage.\n");
}

static void s_log(void *arg, const char *line)
{
    (void) arg;
    fprintf(stderr, "advise: %s\n", line);
}

/* a is one of s_numeric and v a number in its bounds: stored in o. false otherwise. */
static bool s_set_numeric(dbopt_advise_opts_t *o, const char *a, const char *v)
{
    for (size_t i = 0; i < sizeof s_numeric / sizeof s_numeric[0]; i++) {
        if (strcmp(a, s_numeric[i].name) != 0)
            continue;
        char *end;
        double x = v ? strtod(v, &end) : 0;
        if (!v || !*v || *end || x < s_numeric[i].lo || x > s_numeric[i].hi)
            return false;
        char *field = (char *) o + s_numeric[i].off;
        if (s_numeric[i].is_int)
            *(int *) field = (int) x;
        else
            *(double *) field = x;
        return true;
    }
    return false;
}

static void s_print_table(json_t *out)
{
    json_t *recs = json_object_get(out, "recommendations"), *r;
    size_t i;
    printf("%zu recommended index(es) from %lld statements in %lld ms\n", json_array_size(recs),
           (long long) json_integer_value(json_object_get(out, "queries_used")),
           (long long) json_integer_value(json_object_get(out, "elapsed_ms")));
    json_array_foreach(recs, i, r) {
        printf("\n%zu. %s\n   cost %.1f -> %.1f over %zu statement(s)\n", i + 1,
               json_string_value(json_object_get(r, "sql")),
               json_number_value(json_object_get(r, "cost_before")),
               json_number_value(json_object_get(r, "cost_after")),
               json_array_size(json_object_get(r, "queries")));
        json_t *reason = json_object_get(r, "reason");
        if (reason)
            printf("   %s\n", json_string_value(reason));
        json_t *q;
        size_t k;
        json_array_foreach(json_object_get(r, "queries"), k, q)
            printf("   - %.110s\n", json_string_value(q));
    }
    json_t *top = json_object_get(out, "top_statements"), *t;
    if (json_array_size(top))
        printf("\ntop statements by total time (pg_stat_statements):\n");
    json_array_foreach(top, i, t)
        printf("   %10.1f ms total %10lld calls %9.3f ms mean  hit %5.3f  %.70s\n",
               json_number_value(json_object_get(t, "total_ms")),
               (long long) json_integer_value(json_object_get(t, "calls")),
               json_number_value(json_object_get(t, "mean_ms")),
               json_number_value(json_object_get(t, "shared_hit_ratio")),
               json_string_value(json_object_get(t, "query")));
    const char *sections[] = { "unused_indexes", "duplicate_indexes", "invalid_indexes" };
    for (int s = 0; s < 3; s++) {
        json_t *arr = json_object_get(out, sections[s]), *x;
        if (json_is_null(arr))
            printf("\n%s: could not be read (the log says why)\n", sections[s]);
        if (!json_array_size(arr))
            continue;
        printf("\n%s:\n", sections[s]);
        json_array_foreach(arr, i, x) {
            const char *dup = json_string_value(json_object_get(x, "duplicate_of"));
            const char *since = json_string_value(json_object_get(x, "stats_since"));
            printf("   %s on %s%s%s%s%s\n", json_string_value(json_object_get(x, "index")),
                   json_string_value(json_object_get(x, "table")), dup ? ", same leading "
                   "columns as " : "", dup ? dup : "", since ? ", no scan since " : "",
                   since ? since : "");
        }
    }
}

int dbopt_advise_main(int argc, char **argv)
{
    dbopt_advise_opts_t o;
    dbopt_advise_opts_default(&o);
    const char *url = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--apply") == 0)
            o.apply = true;
        else if (strcmp(a, "--json") == 0)
            json = true;
        else if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0)
            o.log = s_log;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            s_usage(stdout);
            return 0;
        } else if (strcmp(a, "--database") == 0 && v) {
            url = v;
            i++;
        } else if (s_set_numeric(&o, a, v)) {
            i++;
        } else {
            fprintf(stderr, "quaver-dbopt advise: bad argument '%s'%s\n", a,
                    v || a[0] != '-' ? "" : " (it needs a value)");
            s_usage(stderr);
            return 2;
        }
    }
    if (!url || !*url) {
        fprintf(stderr, "quaver-dbopt advise: --database URL is required "
                "(e.g. postgresql://user@host:5432/dbname)\n");
        s_usage(stderr);
        return 2;
    }
    dbopt_advise_err_t err;
    json_t *out = dbopt_advise_run(url, &o, &err);
    if (!out) {
        fprintf(stderr, "quaver-dbopt advise: %s\n", err.text);
        return 1;
    }
    if (json) {
        char *s = json_dumps(out, JSON_INDENT(2));
        if (s)
            puts(s);
        free(s);
    } else
        s_print_table(out);
    json_decref(out);
    return 0;
}
