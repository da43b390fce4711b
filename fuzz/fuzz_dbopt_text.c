/* fuzz_dbopt_text: the text dbopt parses by hand or with jansson, none of it from a caller but
 * all of it from outside the process (a database an operator points the advisor at may hold
 * anything, and config values come from files and the environment):
 *   0  dbopt_cond_parse       a condition as EXPLAIN prints it ("Filter", "Hash Cond", ...)
 *   1  dbopt_cand_plan_parse  + dbopt_cand_plan_cost: an EXPLAIN (FORMAT JSON) document, as
 *                             the advisor walks it into per-scan facts
 *   2  dbopt_plan_parse       the same document, as the observer hashes and redacts it
 *   3  dbopt_maint_window_parse  the maintenance_window config value
 * Input: byte 0 picks the parser (mod 4), the rest is the text (NUL-terminated copy).
 * Each must return without a crash, a leak or a sanitizer report, whatever the text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dbopt_candidates.h"
#include "dbopt_plans.h"
#include "dbopt_maint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    char err[256];
    switch (data[0] % 4) {
    case 0: {
        dbopt_cond_t conds[DBOPT_MAX_CONDS];
        int n = dbopt_cond_parse(text, conds, DBOPT_MAX_CONDS);
        if (n < 0 || n > DBOPT_MAX_CONDS)
            abort();
        break;
    }
    case 1: {
        static dbopt_cand_plan_t plan;   /* large: not on the stack */
        (void) dbopt_cand_plan_parse(text, &plan, err, sizeof err);
        (void) dbopt_cand_plan_cost(text);
        break;
    }
    case 2: {
        dbopt_plan_t p;
        if (dbopt_plan_parse(text, &p, err, sizeof err) == 0)
            dbopt_plan_clear(&p);
        break;
    }
    default: {
        int start, end;
        bool off;
        (void) dbopt_maint_window_parse(text, &start, &end, &off, err, sizeof err);
        break;
    }
    }
    free(text);
    return 0;
}
