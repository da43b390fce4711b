/* gw_multipart: a bounded multipart/form-data reader (RFC 7578 / RFC 2046 section 5.1).
 * Guarantees: every scan is limited by the buffer length (memmem, never strstr, since a file
 * holds NULs); the boundary must be 1..70 characters; part headers are limited to 8 KiB; a body
 * without its closing delimiter is refused as truncated; exactly one part with a filename is
 * accepted, and other (plain field) parts are skipped. */
#include "gw_multipart.h"
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PART_HEADERS_MAX 8192

int gw_multipart_boundary(const char *ct, char *buf, size_t len)
{
    if (!ct || strncasecmp(ct, "multipart/form-data", 19) != 0)
        return -1;
    const char *p = ct + 19;
    for (;;) {
        p = strchr(p, ';');
        if (!p)
            return -1;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, "boundary=", 9) == 0)
            break;
    }
    p += 9;
    size_t n = 0;
    if (*p == '"') {
        p++;
        const char *e = strchr(p, '"');
        if (!e)
            return -1;
        n = (size_t) (e - p);
    } else {
        while (p[n] && p[n] != ';' && p[n] != ' ' && p[n] != '\t')
            n++;
    }
    if (n < 1 || n > 70 || n + 1 > len)
        return -1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return 0;
}

/* Value of a parameter (name="value" or name=value) inside one header line [h, e). */
static void s_param(const char *h, const char *e, const char *name, char *out, size_t outlen)
{
    out[0] = '\0';
    size_t nl = strlen(name);
    for (const char *p = h; p + nl + 1 <= e; p++) {
        bool at_start = p == h || p[-1] == ';' || p[-1] == ' ' || p[-1] == '\t';
        if (!at_start || strncasecmp(p, name, nl) != 0 || p[nl] != '=')
            continue;
        const char *v = p + nl + 1;
        const char *ve;
        if (v < e && *v == '"') {
            v++;
            ve = memchr(v, '"', (size_t) (e - v));
            if (!ve)
                ve = e;
        } else {
            ve = v;
            while (ve < e && *ve != ';' && *ve != ' ' && *ve != '\t')
                ve++;
        }
        size_t n = (size_t) (ve - v);
        if (n >= outlen)
            n = outlen - 1;
        memcpy(out, v, n);
        out[n] = '\0';
        /* Keep only the last path component: some browsers send "C:\dir\x.mp3". */
        char *slash = strrchr(out, '/'), *bs = strrchr(out, '\\');
        char *base = slash > bs ? slash : bs;
        if (base)
            memmove(out, base + 1, strlen(base + 1) + 1);
        return;
    }
}

static void s_set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

int gw_multipart_file(const char *content_type, const char *body, size_t len, gw_part_t *out,
                      char *err, size_t errlen)
{
    char boundary[72];
    if (gw_multipart_boundary(content_type, boundary, sizeof boundary) != 0) {
        s_set_err(err, errlen, "multipart body without a valid boundary parameter");
        return -1;
    }
    /* delim = "--" boundary; parts are separated by CRLF delim. */
    char delim[80];
    int dl = snprintf(delim, sizeof delim, "--%s", boundary);
    size_t dlen = (size_t) dl;

    /* The first delimiter may follow a preamble. */
    const char *p = memmem(body, len, delim, dlen);
    if (!p) {
        s_set_err(err, errlen, "multipart body does not contain its boundary");
        return -1;
    }
    const char *end = body + len;
    int files = 0;
    memset(out, 0, sizeof *out);
    for (;;) {
        p += dlen;
        if ((size_t) (end - p) >= 2 && p[0] == '-' && p[1] == '-')
            break;                                   /* closing delimiter */
        /* Transport padding, then CRLF. */
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if ((size_t) (end - p) < 2 || p[0] != '\r' || p[1] != '\n') {
            s_set_err(err, errlen, "multipart body is truncated or malformed");
            return -1;
        }
        p += 2;
        /* Headers end at an empty line. */
        size_t hspan = (size_t) (end - p) < PART_HEADERS_MAX ? (size_t) (end - p)
                                                             : PART_HEADERS_MAX;
        const char *hend;
        if (hspan >= 2 && p[0] == '\r' && p[1] == '\n')
            hend = p;                                /* a part with no headers */
        else {
            hend = memmem(p, hspan, "\r\n\r\n", 4);
            if (!hend) {
                s_set_err(err, errlen, "multipart part headers are truncated or too long");
                return -1;
            }
            hend += 2;                               /* keep the last header's CRLF inside */
        }
        const char *content = hend + 2;
        /* The part ends at CRLF delim. */
        char sep[84];
        int sl = snprintf(sep, sizeof sep, "\r\n%s", delim);
        const char *next = memmem(content, (size_t) (end - content), sep, (size_t) sl);
        if (!next) {
            s_set_err(err, errlen, "multipart body is truncated (no closing boundary)");
            return -1;
        }
        /* Look at this part's headers: is it a file? */
        char filename[256] = "", ctype[128] = "";
        bool is_file = false;
        for (const char *h = p; h < hend;) {
            const char *le = memmem(h, (size_t) (hend - h), "\r\n", 2);
            if (!le)
                le = hend;
            if ((size_t) (le - h) > 20 && strncasecmp(h, "Content-Disposition:", 20) == 0) {
                s_param(h + 20, le, "filename", filename, sizeof filename);
                /* filename="" still marks a file input (an empty one). */
                const char *q = h + 20;
                size_t ql = (size_t) (le - q);
                for (size_t i = 0; i + 9 <= ql; i++)
                    if (strncasecmp(q + i, "filename=", 9) == 0 &&
                        (i == 0 || q[i - 1] == ' ' || q[i - 1] == ';' || q[i - 1] == '\t')) {
                        is_file = true;
                        break;
                    }
            } else if ((size_t) (le - h) > 13 && strncasecmp(h, "Content-Type:", 13) == 0) {
                const char *v = h + 13;
                while (v < le && (*v == ' ' || *v == '\t'))
                    v++;
                size_t n = (size_t) (le - v);
                if (n >= sizeof ctype)
                    n = sizeof ctype - 1;
                memcpy(ctype, v, n);
                ctype[n] = '\0';
            }
            h = le + 2;
        }
        if (is_file) {
            if (++files > 1) {
                s_set_err(err, errlen, "multipart body holds more than one file; send one");
                return -1;
            }
            out->data = content;
            out->len = (size_t) (next - content);
            snprintf(out->filename, sizeof out->filename, "%s", filename);
            snprintf(out->content_type, sizeof out->content_type, "%s", ctype);
        }
        p = next + 2;                                /* at the delimiter */
    }
    if (files == 0) {
        s_set_err(err, errlen, "multipart body holds no file part");
        return -1;
    }
    return 0;
}
