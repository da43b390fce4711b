/* gw_gzip: see gw_gzip.h. */
#include "gw_gzip.h"
#include <ctype.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

/* The q-value of one Accept-Encoding element's parameters ("; q=0.5"), 1 when absent. A
 * malformed q reads as 0: refusing to compress is the safe side. */
static double s_qvalue(const char *p, const char *end)
{
    while (p < end) {
        while (p < end && (*p == ';' || *p == ' ' || *p == '\t'))
            p++;
        if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
            p += 2;
            char buf[8];
            size_t n = 0;
            while (p < end && n < sizeof buf - 1 && (isdigit((unsigned char) *p) || *p == '.'))
                buf[n++] = *p++;
            buf[n] = '\0';
            char *stop;
            double q = n ? strtod(buf, &stop) : 0;
            return (n && *stop == '\0' && q >= 0 && q <= 1) ? q : 0;
        }
        while (p < end && *p != ';')
            p++;
    }
    return 1;
}

bool gw_gzip_accepted(const char *ae)
{
    if (!ae)
        return false;
    double gzip_q = -1, star_q = -1;
    for (const char *p = ae; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *name_end = p;
        while (name_end < e && *name_end != ';' && *name_end != ' ' && *name_end != '\t')
            name_end++;
        size_t nl = (size_t) (name_end - p);
        double q = s_qvalue(name_end, e);
        if ((nl == 4 && strncasecmp(p, "gzip", 4) == 0) ||
            (nl == 6 && strncasecmp(p, "x-gzip", 6) == 0))
            gzip_q = q;
        else if (nl == 1 && *p == '*')
            star_q = q;
        p = e;
    }
    return gzip_q >= 0 ? gzip_q > 0 : star_q > 0;
}

bool gw_gzip_type(const char *ct)
{
    if (!ct)
        return false;
    static const char *const types[] = { "text/", "application/json", "application/javascript",
                                         "application/xml", "image/svg+xml", NULL };
    for (int i = 0; types[i]; i++)
        if (strncasecmp(ct, types[i], strlen(types[i])) == 0)
            return true;
    return false;
}

int gw_gzip(const void *in, size_t len, int level, uint8_t **out_p, size_t *olen_p)
{
    if (len > UINT_MAX)
        return -1;        /* zlib counts in uInt; no response we build comes near */
    z_stream z;
    memset(&z, 0, sizeof z);
    /* windowBits 15 + 16: the gzip wrapper (RFC 1952) rather than zlib's (RFC 1950). */
    if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong cap = deflateBound(&z, (uLong) len);
    uint8_t *out = malloc(cap ? cap : 1);
    if (!out) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *) in;
    z.avail_in = (uInt) len;
    z.next_out = out;
    z.avail_out = (uInt) cap;
    int rc = deflate(&z, Z_FINISH);   /* deflateBound guarantees one call is enough */
    size_t n = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return -1;
    }
    *out_p = out;
    *olen_p = n;
    return 0;
}
