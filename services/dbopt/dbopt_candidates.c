/* dbopt_candidates: condition texts and plan trees -> per-scan facts (see the header). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>
#include "dbopt_candidates.h"

/* ---------------------------------------------------------------- tokens */
typedef enum { T_IDENT, T_PARAM, T_CONST, T_OP, T_LP, T_RP, T_COMMA, T_KW, T_OTHER } s_tok_kind_t;

typedef struct {
    s_tok_kind_t kind;
    char         text[DBOPT_NAME_MAX];        /* ident: column; kw: upper-case word; op */
    char         qual[DBOPT_NAME_MAX];        /* ident: the alias before the dot */
    int          param;
} s_tok_t;

#define S_MAX_TOKS 256

static const char *const s_keywords[] = { "AND", "OR", "NOT", "IS", "NULL", "ANY", "ALL",
                                          "TRUE", "FALSE", NULL };
/* words that continue a type name after `::` (timestamp with time zone, double precision) */
static const char *const s_type_words[] = { "with", "without", "time", "zone", "varying",
                                            "precision", NULL };

static bool s_in(const char *const *list, const char *w, size_t n)
{
    for (int i = 0; list[i]; i++)
        if (strlen(list[i]) == n && strncasecmp(list[i], w, n) == 0)
            return true;
    return false;
}

static void s_copy(char *dst, const char *src, size_t n)
{
    if (n >= DBOPT_NAME_MAX)
        n = DBOPT_NAME_MAX - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* one name part: "quoted ""x""" or plain; returns the position after it */
static const char *s_name(const char *p, char *out)
{
    char buf[DBOPT_NAME_MAX];
    size_t n = 0;
    if (*p == '"') {
        p++;
        while (*p) {
            if (*p == '"' && p[1] == '"') {
                if (n < sizeof buf - 1)
                    buf[n++] = '"';
                p += 2;
            } else if (*p == '"') {
                p++;
                break;
            } else {
                if (n < sizeof buf - 1)
                    buf[n++] = *p;
                p++;
            }
        }
    } else {
        while (isalnum((unsigned char) *p) || *p == '_' || *p == '$') {
            if (n < sizeof buf - 1)
                buf[n++] = *p;
            p++;
        }
    }
    buf[n] = '\0';
    memcpy(out, buf, n + 1);
    return p;
}

/* skips a type name after `::` */
static const char *s_skip_type(const char *p)
{
    char dummy[DBOPT_NAME_MAX];
    while (*p == ' ')
        p++;
    p = s_name(p, dummy);
    while (*p == '.')                   /* pg_catalog.text */
        p = s_name(p + 1, dummy);
    for (;;) {
        const char *q = p;
        while (*q == ' ')
            q++;
        const char *w = q;
        while (isalpha((unsigned char) *q))
            q++;
        if (q > w && s_in(s_type_words, w, (size_t) (q - w)))
            p = q;
        else
            break;
    }
    if (*p == '(') {                    /* varchar(20), numeric(10,2) */
        while (*p && *p != ')')
            p++;
        if (*p)
            p++;
    }
    while (p[0] == '[' && p[1] == ']')
        p += 2;
    return p;
}

static int s_tokenize(const char *s, s_tok_t *toks, int max)
{
    int n = 0;
    const char *p = s;
    while (*p && n < max) {
        if (isspace((unsigned char) *p)) {
            p++;
            continue;
        }
        s_tok_t *t = &toks[n];
        memset(t, 0, sizeof *t);
        if (p[0] == ':' && p[1] == ':') {
            p = s_skip_type(p + 2);
            continue;
        }
        if (*p == '(' || *p == ')' || *p == ',') {
            t->kind = *p == '(' ? T_LP : *p == ')' ? T_RP : T_COMMA;
            t->text[0] = *p++;
        } else if (*p == '$' && isdigit((unsigned char) p[1])) {
            t->kind = T_PARAM;
            t->param = (int) strtol(p + 1, (char **) &p, 10);
        } else if (*p == '\'') {
            t->kind = T_CONST;
            p++;
            while (*p) {
                if (*p == '\'' && p[1] == '\'')
                    p += 2;
                else if (*p == '\'') {
                    p++;
                    break;
                } else
                    p++;
            }
        } else if (isdigit((unsigned char) *p)
                   || (*p == '-' && isdigit((unsigned char) p[1]) && n > 0
                       && toks[n - 1].kind == T_OP)) {
            t->kind = T_CONST;
            p++;
            while (isalnum((unsigned char) *p) || *p == '.')
                p++;
        } else if (isalpha((unsigned char) *p) || *p == '_' || *p == '"') {
            char a[DBOPT_NAME_MAX], b[DBOPT_NAME_MAX];
            bool quoted = *p == '"';
            p = s_name(p, a);
            if (*p == '.' && (isalpha((unsigned char) p[1]) || p[1] == '_' || p[1] == '"')) {
                p = s_name(p + 1, b);
                t->kind = T_IDENT;
                s_copy(t->qual, a, strlen(a));
                s_copy(t->text, b, strlen(b));
            } else if (!quoted && s_in(s_keywords, a, strlen(a))) {
                t->kind = T_KW;
                for (size_t i = 0; a[i]; i++)
                    t->text[i] = (char) toupper((unsigned char) a[i]);
            } else {
                t->kind = T_IDENT;
                s_copy(t->text, a, strlen(a));
            }
        } else if (strchr("=<>!~*+-/%|&^@#", *p)) {
            t->kind = T_OP;
            size_t k = 0;
            while (*p && strchr("=<>!~*+-/%|&^@#", *p) && k < 7)
                t->text[k++] = *p++;
        } else {
            t->kind = T_OTHER;
            p++;
        }
        n++;
    }
    return n;
}

/* index of the parenthesis closing the one at i, or -1 */
static int s_close(const s_tok_t *t, int i, int end)
{
    int depth = 0;
    for (int k = i; k < end; k++) {
        if (t[k].kind == T_LP)
            depth++;
        else if (t[k].kind == T_RP && --depth == 0)
            return k;
    }
    return -1;
}

static void s_strip(const s_tok_t *t, int *a, int *b)
{
    while (*b - *a >= 2 && t[*a].kind == T_LP && s_close(t, *a, *b) == *b - 1) {
        (*a)++;
        (*b)--;
    }
}

static bool s_op(const char *text, dbopt_op_t *op)
{
    static const struct { const char *t; dbopt_op_t op; } ops[] = {
        { "=", DBOPT_OP_EQ }, { "<", DBOPT_OP_LT }, { "<=", DBOPT_OP_LE },
        { ">", DBOPT_OP_GT }, { ">=", DBOPT_OP_GE }, { "<>", DBOPT_OP_NE },
        { "!=", DBOPT_OP_NE }, { "~~", DBOPT_OP_LIKE },
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(ops[i].t, text) == 0) {
            *op = ops[i].op;
            return true;
        }
    return false;
}

static dbopt_op_t s_flip(dbopt_op_t op)
{
    switch (op) {
    case DBOPT_OP_LT: return DBOPT_OP_GT;
    case DBOPT_OP_LE: return DBOPT_OP_GE;
    case DBOPT_OP_GT: return DBOPT_OP_LT;
    case DBOPT_OP_GE: return DBOPT_OP_LE;
    default: return op;
    }
}

/* one conjunct in t[a..b) (single-token parentheses already removed) */
static bool s_conjunct(const s_tok_t *t, int a, int b, dbopt_cond_t *c)
{
    memset(c, 0, sizeof *c);
    int n = b - a;
    const s_tok_t *id = &t[a];          /* the column side */
    if (n == 1 && t[a].kind == T_IDENT) {
        c->op = DBOPT_OP_TRUE;
    } else if (n == 2 && t[a].kind == T_KW && strcmp(t[a].text, "NOT") == 0
               && t[a + 1].kind == T_IDENT) {
        id = &t[a + 1];
        c->op = DBOPT_OP_FALSE;
    } else if (n == 3 && t[a].kind == T_IDENT && t[a + 1].kind == T_KW
               && strcmp(t[a + 1].text, "IS") == 0 && t[a + 2].kind == T_KW
               && strcmp(t[a + 2].text, "NULL") == 0) {
        c->op = DBOPT_OP_ISNULL;
    } else if (n == 4 && t[a].kind == T_IDENT && strcmp(t[a + 1].text, "IS") == 0
               && strcmp(t[a + 2].text, "NOT") == 0 && strcmp(t[a + 3].text, "NULL") == 0) {
        c->op = DBOPT_OP_NOTNULL;
    } else if (n >= 3 && t[a + 1].kind == T_OP) {
        dbopt_op_t op;
        if (!s_op(t[a + 1].text, &op))
            return false;
        const s_tok_t *l = &t[a], *r = &t[a + 2];
        if (n == 6 && op == DBOPT_OP_EQ && r->kind == T_KW && strcmp(r->text, "ANY") == 0
            && t[a + 3].kind == T_LP && t[a + 5].kind == T_RP) {
            op = DBOPT_OP_ANY;
            r = &t[a + 4];
        } else if (n != 3)
            return false;
        if (l->kind != T_IDENT) {           /* $1 < col */
            const s_tok_t *x = l;
            l = r;
            r = x;
            op = s_flip(op);
            if (l->kind != T_IDENT)
                return false;
        }
        c->op = op;
        id = l;
        if (r->kind == T_PARAM)
            c->param = r->param;
        else if (r->kind == T_IDENT) {
            c->is_join = true;
            s_copy(c->other_alias, r->qual, strlen(r->qual));
            s_copy(c->other_column, r->text, strlen(r->text));
        } else if (r->kind != T_CONST && !(r->kind == T_KW && (strcmp(r->text, "TRUE") == 0
                                                             || strcmp(r->text, "FALSE") == 0)))
            return false;
    } else
        return false;
    s_copy(c->alias, id->qual, strlen(id->qual));
    s_copy(c->column, id->text, strlen(id->text));
    return true;
}

/* `col = ANY (ARRAY[$1, $2, ...])`, the generic form of `col IN ($1, $2, ...)`: one
 * equality per element, so that each parameter is placed on the column. Returns how many. */
static int s_any_array(const s_tok_t *t, int a, int b, dbopt_cond_t *out, int max)
{
    if (b - a < 8 || t[a].kind != T_IDENT || t[a + 1].kind != T_OP || strcmp(t[a + 1].text, "=")
        || t[a + 2].kind != T_KW || strcmp(t[a + 2].text, "ANY") || t[a + 3].kind != T_LP
        || t[a + 4].kind != T_IDENT || strcasecmp(t[a + 4].text, "ARRAY")
        || t[a + 5].kind != T_OTHER || t[b - 1].kind != T_RP || t[b - 2].kind != T_OTHER)
        return 0;
    int n = 0;
    for (int k = a + 6; k < b - 2 && n < max; k++) {
        if (t[k].kind == T_COMMA)
            continue;
        if (t[k].kind != T_PARAM && t[k].kind != T_CONST)
            return 0;
        memset(&out[n], 0, sizeof out[n]);
        out[n].op = DBOPT_OP_EQ;
        out[n].param = t[k].kind == T_PARAM ? t[k].param : 0;
        s_copy(out[n].alias, t[a].qual, strlen(t[a].qual));
        s_copy(out[n].column, t[a].text, strlen(t[a].text));
        n++;
    }
    return n;
}

int dbopt_cond_parse(const char *expr, dbopt_cond_t *out, int max)
{
    if (!expr || max <= 0)
        return 0;
    s_tok_t *raw = malloc(sizeof *raw * S_MAX_TOKS), *t = malloc(sizeof *t * S_MAX_TOKS);
    int got = 0;
    if (!raw || !t)
        goto done;
    int nraw = s_tokenize(expr, raw, S_MAX_TOKS);
    if (nraw >= S_MAX_TOKS)
        goto done;                      /* too long to trust a truncated parse */
    /* `(x)` around a single token -> x: PostgreSQL wraps cast operands, `((status)::text = ..)` */
    int n = 0;
    for (int i = 0; i < nraw; i++) {
        if (raw[i].kind == T_LP && i + 2 < nraw && raw[i + 2].kind == T_RP
            && raw[i + 1].kind != T_LP && raw[i + 1].kind != T_RP
            && !(n > 0 && raw[i - 1].kind == T_KW && strcmp(raw[i - 1].text, "ANY") == 0)) {
            t[n++] = raw[i + 1];
            i += 2;
        } else
            t[n++] = raw[i];
    }
    int a = 0, b = n;
    s_strip(t, &a, &b);
    /* top level OR: nothing is a conjunct of the whole */
    int depth = 0, start = a;
    for (int i = a; i < b; i++)
        if (t[i].kind == T_LP)
            depth++;
        else if (t[i].kind == T_RP)
            depth--;
        else if (depth == 0 && t[i].kind == T_KW && strcmp(t[i].text, "OR") == 0)
            goto done;
    for (int i = a; i <= b && got < max; i++) {
        if (i < b && t[i].kind == T_LP)
            depth++;
        else if (i < b && t[i].kind == T_RP)
            depth--;
        if (i == b || (depth == 0 && t[i].kind == T_KW && strcmp(t[i].text, "AND") == 0)) {
            int ca = start, cb = i;
            s_strip(t, &ca, &cb);
            if (cb > ca) {
                bool nested_and = false;
                for (int k = ca; k < cb; k++)
                    if (t[k].kind == T_KW && strcmp(t[k].text, "AND") == 0)
                        nested_and = true;
                /* a nested AND inside an OR-free conjunct does not occur in deparsed
                 * filters (PostgreSQL flattens ANDs); skip it rather than guess */
                if (!nested_and && s_conjunct(t, ca, cb, &out[got]))
                    got++;
                else if (!nested_and)
                    got += s_any_array(t, ca, cb, &out[got], max - got);
            }
            start = i + 1;
        }
    }
done:
    free(raw);
    free(t);
    return got;
}

bool dbopt_op_is_range(dbopt_op_t op)
{
    return op == DBOPT_OP_LT || op == DBOPT_OP_LE || op == DBOPT_OP_GT || op == DBOPT_OP_GE;
}

/* ---------------------------------------------------------------- plans */
typedef struct {
    char alias[DBOPT_MAX_SCANS * 2][DBOPT_NAME_MAX];
    char rel[DBOPT_MAX_SCANS * 2][DBOPT_NAME_MAX];
    int  n;
} s_aliases_t;

static const char *s_str(json_t *node, const char *key)
{
    const char *v = json_string_value(json_object_get(node, key));
    return v ? v : "";
}

static void s_collect_aliases(json_t *node, s_aliases_t *al)
{
    const char *rel = s_str(node, "Relation Name");
    if (*rel && al->n < (int) (sizeof al->rel / sizeof al->rel[0])) {
        const char *alias = s_str(node, "Alias");
        s_copy(al->rel[al->n], rel, strlen(rel));
        s_copy(al->alias[al->n], *alias ? alias : rel, strlen(*alias ? alias : rel));
        al->n++;
    }
    json_t *kids = json_object_get(node, "Plans");
    size_t i;
    json_t *k;
    json_array_foreach(kids, i, k)
        s_collect_aliases(k, al);
}

static const char *s_resolve(const s_aliases_t *al, const char *alias, const char *own)
{
    if (!*alias)
        return own;
    for (int i = 0; i < al->n; i++)
        if (strcmp(al->alias[i], alias) == 0)
            return al->rel[i];
    return "";
}

static void s_note_params(dbopt_cand_plan_t *out, const s_aliases_t *al, const dbopt_cond_t *c,
                          int n, const char *own_rel)
{
    for (int i = 0; i < n; i++) {
        int p = c[i].param;
        if (p < 1 || p > DBOPT_MAX_PARAMS || out->params[p].known)
            continue;
        const char *rel = s_resolve(al, c[i].alias, own_rel);
        if (!*rel)
            continue;
        dbopt_param_use_t *u = &out->params[p];
        s_copy(u->relation, rel, strlen(rel));
        s_copy(u->column, c[i].column, strlen(c[i].column));
        u->op = c[i].op;
        u->known = true;
    }
}

/* "o.total DESC NULLS LAST" -> total, desc. false for expressions. */
static bool s_sort_key(const char *text, dbopt_key_t *k)
{
    if (strchr(text, '(') || strstr(text, " USING "))
        return false;
    char buf[160];
    snprintf(buf, sizeof buf, "%s", text);
    char *sp;
    if ((sp = strstr(buf, " NULLS ")))
        *sp = '\0';
    k->desc = false;
    size_t len = strlen(buf);
    if (len > 5 && strcmp(buf + len - 5, " DESC") == 0) {
        k->desc = true;
        buf[len - 5] = '\0';
    }
    s_tok_t t[4];
    int n = s_tokenize(buf, t, 4);
    if (n != 1 || t[0].kind != T_IDENT)
        return false;
    s_copy(k->column, t[0].text, strlen(t[0].text));
    return true;
}

static void s_keys(json_t *arr, dbopt_key_t *keys, int *nkeys)
{
    size_t i;
    json_t *v;
    int n = 0;
    json_array_foreach(arr, i, v) {
        if (n >= DBOPT_MAX_KEYS || !json_is_string(v) || !s_sort_key(json_string_value(v), &keys[n])) {
            n = 0;                      /* an expression or too many keys: no usable order */
            break;
        }
        n++;
    }
    *nkeys = n;
}

static void s_add_cond(dbopt_scan_t *s, const dbopt_cond_t *c)
{
    if (s->nconds < DBOPT_MAX_CONDS)
        s->conds[s->nconds++] = *c;
}

static const char *const s_cond_keys[] = { "Filter", "Index Cond", "Recheck Cond",
                                           "Join Filter", "Hash Cond", "Merge Cond", NULL };

static void s_walk(json_t *node, dbopt_cand_plan_t *out, const s_aliases_t *al, int depth)
{
    const char *nt = s_str(node, "Node Type");
    const char *rel = s_str(node, "Relation Name");
    const char *idx = s_str(node, "Index Name");
    size_t sl = strlen(out->shape);
    if (sl + strlen(nt) + strlen(idx) + 8 < sizeof out->shape)
        snprintf(out->shape + sl, sizeof out->shape - sl, "%s%s%s%s", sl ? ">" : "", nt,
                 *idx ? " " : "", idx);
    int start = out->nscans;
    dbopt_cond_t c[DBOPT_MAX_CONDS];
    for (int k = 0; s_cond_keys[k]; k++) {
        const char *txt = s_str(node, s_cond_keys[k]);
        if (*txt)
            s_note_params(out, al, c, dbopt_cond_parse(txt, c, DBOPT_MAX_CONDS), rel);
    }
    if (*rel && out->nscans < DBOPT_MAX_SCANS) {
        dbopt_scan_t *s = &out->scans[out->nscans++];
        memset(s, 0, sizeof *s);
        const char *alias = s_str(node, "Alias");
        s_copy(s->relation, rel, strlen(rel));
        s_copy(s->alias, *alias ? alias : rel, strlen(*alias ? alias : rel));
        s->seq = strcmp(nt, "Seq Scan") == 0;
        int n = dbopt_cond_parse(s_str(node, "Filter"), c, DBOPT_MAX_CONDS);
        for (int i = 0; i < n; i++)
            if (!c[i].is_join && (!*c[i].alias || strcmp(c[i].alias, s->alias) == 0))
                s_add_cond(s, &c[i]);
    }
    json_t *kids = json_object_get(node, "Plans");
    size_t i;
    json_t *k;
    if (depth < 64)
        json_array_foreach(kids, i, k)
            s_walk(k, out, al, depth + 1);
    /* join columns: each side that is scanned below this node gets an equality column */
    const char *jk[] = { "Hash Cond", "Merge Cond", "Join Filter", NULL };
    for (int j = 0; jk[j]; j++) {
        int n = dbopt_cond_parse(s_str(node, jk[j]), c, DBOPT_MAX_CONDS);
        for (int m = 0; m < n; m++) {
            if (!c[m].is_join || c[m].op != DBOPT_OP_EQ)
                continue;
            for (int x = start; x < out->nscans; x++) {
                dbopt_scan_t *s = &out->scans[x];
                dbopt_cond_t e = { .op = DBOPT_OP_EQ };
                if (strcmp(s->alias, c[m].alias) == 0)
                    s_copy(e.column, c[m].column, strlen(c[m].column));
                else if (strcmp(s->alias, c[m].other_alias) == 0)
                    s_copy(e.column, c[m].other_column, strlen(c[m].other_column));
                else
                    continue;
                s_add_cond(s, &e);
            }
        }
    }
    /* an order or grouping over one table's rows only: an index on that table can give it */
    if (out->nscans - start == 1) {
        dbopt_scan_t *s = &out->scans[start];
        json_t *sk = json_object_get(node, "Sort Key");
        json_t *gk = json_object_get(node, "Group Key");
        if (sk && s->nsort == 0)
            s_keys(sk, s->sort, &s->nsort);
        if (gk && s->ngroup == 0)
            s_keys(gk, s->group, &s->ngroup);
    }
}

int dbopt_cand_plan_parse(const char *json_text, dbopt_cand_plan_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_loads(json_text ? json_text : "", 0, &je);
    json_t *plan = json_object_get(json_array_get(root, 0), "Plan");
    if (!json_is_object(plan)) {
        snprintf(err, errlen, "not an EXPLAIN (FORMAT JSON) plan: %s", root ? "no Plan" : je.text);
        json_decref(root);
        return -1;
    }
    out->total_cost = json_number_value(json_object_get(plan, "Total Cost"));
    s_aliases_t al = { .n = 0 };
    s_collect_aliases(plan, &al);
    s_walk(plan, out, &al, 0);
    json_decref(root);
    return 0;
}

double dbopt_cand_plan_cost(const char *json_text)
{
    json_t *root = json_loads(json_text ? json_text : "", 0, NULL);
    json_t *plan = json_object_get(json_array_get(root, 0), "Plan");
    double c = json_is_object(plan) ? json_number_value(json_object_get(plan, "Total Cost")) : -1;
    json_decref(root);
    return c;
}

/* ---------------------------------------------------------------- selftest */
static int s_fail(const char *what)
{
    fprintf(stderr, "candidates: %s\n", what);
    return -1;
}

int dbopt_candidates_selftest(void)
{
    dbopt_cond_t c[8];
    int n = dbopt_cond_parse("((status = $1) AND (created_at >= $2) AND (created_at < $3))", c, 8);
    if (n != 3 || c[0].op != DBOPT_OP_EQ || strcmp(c[0].column, "status") || c[0].param != 1
        || c[1].op != DBOPT_OP_GE || c[2].op != DBOPT_OP_LT || c[2].param != 3)
        return s_fail("AND of three");
    n = dbopt_cond_parse("((o.status)::text = 'paid'::text)", c, 8);
    if (n != 1 || strcmp(c[0].alias, "o") || strcmp(c[0].column, "status") || c[0].param)
        return s_fail("cast and qualifier");
    n = dbopt_cond_parse("(created_at > '2026-01-01 00:00:00+00'::timestamp with time zone)",
                         c, 8);
    if (n != 1 || c[0].op != DBOPT_OP_GT)
        return s_fail("multi-word type");
    n = dbopt_cond_parse("(li.order_id = o.id)", c, 8);
    if (n != 1 || !c[0].is_join || strcmp(c[0].other_alias, "o") || strcmp(c[0].other_column, "id"))
        return s_fail("join");
    n = dbopt_cond_parse("((deleted_at IS NOT NULL) AND vip AND (NOT \"Select\"))", c, 8);
    if (n != 3 || c[0].op != DBOPT_OP_NOTNULL || c[1].op != DBOPT_OP_TRUE
        || c[2].op != DBOPT_OP_FALSE || strcmp(c[2].column, "Select"))
        return s_fail("null tests and booleans");
    n = dbopt_cond_parse("(o.id = ANY (ARRAY[$2, $3, $4]))", c, 8);
    if (n != 3 || c[0].op != DBOPT_OP_EQ || c[2].param != 4 || strcmp(c[1].alias, "o"))
        return s_fail("IN list as ANY (ARRAY[...])");
    n = dbopt_cond_parse("((kind = $1) OR (kind = $2))", c, 8);
    if (n != 0)
        return s_fail("OR is not a conjunction");
    n = dbopt_cond_parse("((id = ANY ($1)) AND ($2 < total) AND (lower(email) = $3))", c, 8);
    if (n != 2 || c[0].op != DBOPT_OP_ANY || c[1].op != DBOPT_OP_GT || strcmp(c[1].column, "total"))
        return s_fail("ANY, flipped operands, function skipped");

    const char *plan =
        "[{\"Plan\": {\"Node Type\": \"Limit\", \"Total Cost\": 123.5, \"Plans\": ["
        "{\"Node Type\": \"Sort\", \"Sort Key\": [\"c.country\", \"c.created_at DESC\"],"
        " \"Plans\": [{\"Node Type\": \"Hash Join\", \"Hash Cond\": \"(li.order_id = o.id)\","
        "  \"Plans\": [{\"Node Type\": \"Seq Scan\", \"Relation Name\": \"line_items\","
        "    \"Alias\": \"li\"},"
        "   {\"Node Type\": \"Hash\", \"Plans\": [{\"Node Type\": \"Index Scan\","
        "    \"Relation Name\": \"orders\", \"Alias\": \"o\", \"Index Name\": \"o_idx\","
        "    \"Index Cond\": \"(customer_id = $1)\"}]}]}]}]}}]";
    dbopt_cand_plan_t p;
    char err[128];
    if (dbopt_cand_plan_parse(plan, &p, err, sizeof err) != 0)
        return s_fail(err);
    if (p.total_cost != 123.5 || p.nscans != 2 || !p.scans[0].seq || p.scans[1].seq
        || p.scans[0].nconds != 1 || strcmp(p.scans[0].conds[0].column, "order_id")
        || p.scans[0].nsort != 0)
        return s_fail("join plan scans");
    if (!p.params[1].known || strcmp(p.params[1].relation, "orders")
        || strcmp(p.params[1].column, "customer_id"))
        return s_fail("param use");
    if (!strstr(p.shape, "Index Scan o_idx"))
        return s_fail("shape");
    const char *plan2 =
        "[{\"Plan\": {\"Node Type\": \"Limit\", \"Total Cost\": 9, \"Plans\": ["
        "{\"Node Type\": \"Sort\", \"Sort Key\": [\"country\", \"created_at DESC\"],"
        " \"Plans\": [{\"Node Type\": \"Seq Scan\", \"Relation Name\": \"customers\","
        "  \"Alias\": \"customers\", \"Filter\": \"(email = $1)\"}]}]}}]";
    if (dbopt_cand_plan_parse(plan2, &p, err, sizeof err) != 0 || p.nscans != 1 || p.scans[0].nsort != 2
        || !p.scans[0].sort[1].desc || p.scans[0].sort[0].desc || p.scans[0].nconds != 1)
        return s_fail("sort above a scan");
    if (strcmp(p.scans[0].sort[0].column, "country")
        || strcmp(p.scans[0].sort[1].column, "created_at"))
        return s_fail("sort key names");
    if (dbopt_cand_plan_cost("nonsense") != -1)
        return s_fail("cost of a non-plan");
    return 0;
}
