/* gw_range: parses "bytes=a-b", "bytes=a-", "bytes=-n" against a file size.
 * Guarantees: digits are accumulated with an overflow check (a 30-digit number is malformed,
 * never a wrapped negative), the result always satisfies 0 <= first <= last < size, and any
 * input (NULL, empty, garbage, huge) yields one of the four answers without reading past the
 * string's end. */
#include "gw_range.h"
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

/* Reads a non-negative decimal; returns chars consumed, 0 when none or on overflow. */
static size_t s_num(const char *s, int64_t *out)
{
    int64_t v = 0;
    size_t i = 0;
    while (s[i] >= '0' && s[i] <= '9') {
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
        i++;
    }
    *out = v;
    return i;
}

static const char *s_ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

gw_range_t gw_range_parse(const char *header, int64_t size, int64_t *first, int64_t *last)
{
    if (!header || size < 0)
        return GW_RANGE_NONE;
    const char *p = s_ows(header);
    if (strncasecmp(p, "bytes", 5) != 0)
        return GW_RANGE_NONE;
    p = s_ows(p + 5);
    if (*p != '=')
        return GW_RANGE_NONE;
    p = s_ows(p + 1);

    /* Validate every range-spec first: a list with one malformed member is malformed. */
    int count = 0;
    int64_t f = 0, l = 0;
    bool sat = false;
    for (;;) {
        int64_t a = -1, b = -1;
        if (*p == '-') {                      /* suffix: last n bytes */
            size_t n = s_num(p + 1, &b);
            if (n == 0)
                return GW_RANGE_NONE;
            p += 1 + n;
            if (count == 0) {
                if (b > 0 && size > 0) {
                    f = b >= size ? 0 : size - b;
                    l = size - 1;
                    sat = true;
                }
            }
        } else {
            size_t n = s_num(p, &a);
            if (n == 0)
                return GW_RANGE_NONE;
            p += n;
            if (*p != '-')
                return GW_RANGE_NONE;
            p++;
            size_t m = s_num(p, &b);
            if (m == 0) {
                if (*p >= '0' && *p <= '9')   /* overflowed */
                    return GW_RANGE_NONE;
                b = -1;
            }
            p += m;
            if (b >= 0 && b < a)
                return GW_RANGE_NONE;         /* "5-3" is invalid syntax, not unsatisfiable */
            if (count == 0 && a < size) {
                f = a;
                l = (b < 0 || b >= size) ? size - 1 : b;
                sat = true;
            }
        }
        count++;
        p = s_ows(p);
        if (*p == '\0')
            break;
        if (*p != ',')
            return GW_RANGE_NONE;
        p = s_ows(p + 1);
        if (count > 64)
            return GW_RANGE_NONE;            /* nobody needs that many; refuse to work for it */
    }
    if (count > 1)
        return GW_RANGE_MULTI;
    if (!sat)
        return GW_RANGE_UNSAT;
    *first = f;
    *last = l;
    return GW_RANGE_OK;
}
