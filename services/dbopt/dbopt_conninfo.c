/* dbopt_conninfo: password masking for database URLs (see dbopt_conninfo.h). Guarantees that
 * no character of a password, in any of the three places libpq accepts one, reaches the
 * output; everything else is copied as is so the operator still sees host, port, database. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>
#include <stdbool.h>
#include "dbopt_conninfo.h"

typedef struct {
    char  *buf;
    size_t len, pos;
} s_out_t;

static void s_put(s_out_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && o->pos + 1 < o->len; i++)
        o->buf[o->pos++] = s[i];
    o->buf[o->pos] = '\0';
}

static bool s_is_uri(const char *s)
{
    return strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0;
}

/* URI: mask "user:PASS@" in the authority and "password=PASS" in the query string. */
static void s_mask_uri(const char *s, s_out_t *o)
{
    const char *auth = strstr(s, "://") + 3;
    s_put(o, s, (size_t) (auth - s));
    size_t auth_len = strcspn(auth, "/?");
    /* the last '@' ends the userinfo (a password may itself contain '@' unencoded) */
    const char *at = NULL;
    for (const char *p = auth; p < auth + auth_len; p++)
        if (*p == '@')
            at = p;
    if (at) {
        const char *colon = memchr(auth, ':', (size_t) (at - auth));
        if (colon) {
            s_put(o, auth, (size_t) (colon - auth) + 1);
            s_put(o, "***", 3);
            s_put(o, at, (size_t) (auth + auth_len - at));
        } else
            s_put(o, auth, auth_len);
    } else
        s_put(o, auth, auth_len);
    const char *rest = auth + auth_len;
    const char *q = strchr(rest, '?');
    if (!q) {
        s_put(o, rest, strlen(rest));
        return;
    }
    s_put(o, rest, (size_t) (q - rest) + 1);
    const char *p = q + 1;
    while (*p) {
        size_t plen = strcspn(p, "&");
        if (plen >= 9 && strncasecmp(p, "password=", 9) == 0) {
            s_put(o, p, 9);
            s_put(o, "***", 3);
        } else
            s_put(o, p, plen);
        p += plen;
        if (*p == '&') {
            s_put(o, "&", 1);
            p++;
        }
    }
}

/* key=value: values may be 'single quoted' with \-escapes (libpq's rules). */
static void s_mask_kv(const char *s, s_out_t *o)
{
    const char *p = s;
    while (*p) {
        const char *ws = p;
        while (isspace((unsigned char) *p))
            p++;
        s_put(o, ws, (size_t) (p - ws));
        if (!*p)
            break;
        const char *key = p;
        while (*p && *p != '=' && !isspace((unsigned char) *p))
            p++;
        size_t klen = (size_t) (p - key);
        s_put(o, key, klen);
        const char *eq = p;
        while (isspace((unsigned char) *p))
            p++;
        if (*p != '=') {     /* malformed: copy the rest as is (nothing secret can follow
                                a key without '=') */
            s_put(o, eq, strlen(eq));
            return;
        }
        p++;
        while (isspace((unsigned char) *p))
            p++;
        s_put(o, eq, (size_t) (p - eq));
        const char *val = p;
        if (*p == '\'') {
            p++;
            while (*p && *p != '\'') {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
            if (*p == '\'')
                p++;
        } else {
            while (*p && !isspace((unsigned char) *p)) {
                if (*p == '\\' && p[1])
                    p++;
                p++;
            }
        }
        bool secret = klen == 8 && strncmp(key, "password", 8) == 0;
        if (secret)
            s_put(o, "***", 3);
        else
            s_put(o, val, (size_t) (p - val));
    }
}

void dbopt_conninfo_mask(const char *conninfo, char *buf, size_t len)
{
    if (!buf || len == 0)
        return;
    s_out_t o = { buf, len, 0 };
    buf[0] = '\0';
    if (!conninfo)
        return;
    if (s_is_uri(conninfo))
        s_mask_uri(conninfo, &o);
    else
        s_mask_kv(conninfo, &o);
}

int dbopt_conninfo_selftest(void)
{
    static const struct { const char *in, *out; } cases[] = {
        { "postgresql:///quaver", "postgresql:///quaver" },
        { "postgresql://u:secret@db:5432/quaver", "postgresql://u:***@db:5432/quaver" },
        { "postgres://u@db/quaver", "postgres://u@db/quaver" },
        { "postgresql://u:p@ss@db/q?sslmode=require&password=x2",
          "postgresql://u:***@db/q?sslmode=require&password=***" },
        { "postgresql://u:secret@db", "postgresql://u:***@db" },
        { "host=db user=u password=secret dbname=q", "host=db user=u password=*** dbname=q" },
        { "password = 'se cr\\'et' host=db", "password = *** host=db" },
        { "dbname=quaver", "dbname=quaver" },
        { "", "" },
    };
    char buf[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dbopt_conninfo_mask(cases[i].in, buf, sizeof buf);
        if (strcmp(buf, cases[i].out) != 0) {
            fprintf(stderr, "mask '%s' gave '%s', want '%s'\n", cases[i].in, buf, cases[i].out);
            return -1;
        }
        if (strstr(buf, "secret") || strstr(buf, "cr\\"))
            return -1;
    }
    char small[8];
    dbopt_conninfo_mask("postgresql://u:secret@db/q", small, sizeof small);
    if (strlen(small) != 7)
        return -1;
    return 0;
}
