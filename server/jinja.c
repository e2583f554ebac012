/* jinja.c: the Jinja2 subset that chat templates use (server/jinja.h).  The source is
 * lexed into tokens (text with the whitespace control of trim_blocks/lstrip_blocks already
 * applied), parsed into an AST kept in the template's arena, and each render evaluates it
 * over values allocated in the render's own arena.  Values are immutable once built (as
 * transformers' ImmutableSandboxedEnvironment makes them), except namespace() objects, so
 * they are shared freely and nothing is counted or freed one by one.  The semantics are
 * Python's where the output shows them: str() of floats (repr), of lists and dicts (their
 * repr), True/False/None, codepoint indexing of strings, floor division and modulo. */
#include "server/jinja.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fd.h"

/* ---------------------------------------------------------------- arena */

typedef struct ablk {
    struct ablk *next;
    size_t used, cap;
    max_align_t data[];
} ablk_t;

typedef struct arena {
    ablk_t *head;
    size_t total, limit; /* limit 0: none */
    int over;            /* the limit was reached (not a malloc failure) */
} arena_t;

static void *ar_alloc(arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 - sizeof(ablk_t) ? n : 65536 - sizeof(ablk_t);
        if (a->limit && a->total + cap > a->limit) {
            a->over = 1;
            return NULL;
        }
        ablk_t *b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
        a->total += cap;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void ar_free(arena_t *a)
{
    ablk_t *b = a->head;
    while (b) {
        ablk_t *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}

static char *ar_strndup(arena_t *a, const char *s, size_t n)
{
    char *p = ar_alloc(a, n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

/* ---------------------------------------------------------------- values */

enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_LIST, V_DICT, V_NS, V_FUNC, V_LOOP };

typedef struct jv {
    int t;
    union {
        int b;
        long long i;
        double f;
        struct {
            const char *p;
            size_t n;
        } s;
        struct jlist *l;
        struct jdict *d; /* V_DICT, V_NS */
        struct jfunc *fn;
        struct jloop *lp;
    } u;
    const char *x; /* V_INT: the digits of an integer beyond 64 bits; V_UNDEF: why;
                      V_LIST: TUPLE for a tuple (Python prints it in parentheses) */
} jv_t;

typedef struct jlist {
    size_t n;
    jv_t *v;
} jlist_t;

typedef struct jdict {
    size_t n, cap;
    jv_t *k, *v;
} jdict_t;

static const jv_t V_NULL = {.t = V_NONE};

static jv_t vbool(int b)
{
    return (jv_t){.t = V_BOOL, .u.b = !!b};
}
static jv_t vint(long long i)
{
    return (jv_t){.t = V_INT, .u.i = i};
}
static jv_t vfloat(double f)
{
    return (jv_t){.t = V_FLOAT, .u.f = f};
}
static jv_t vstr(const char *p, size_t n)
{
    return (jv_t){.t = V_STR, .u.s = {p, n}};
}
static jv_t vlist(jlist_t *l)
{
    return (jv_t){.t = V_LIST, .u.l = l};
}
static const char TUPLE[] = "tuple";
static jv_t vtuple(jlist_t *l)
{
    return (jv_t){.t = V_LIST, .u.l = l, .x = TUPLE};
}
static jv_t vundef(const char *why)
{
    return (jv_t){.t = V_UNDEF, .x = why};
}

static int is_num(const jv_t *v)
{
    return v->t == V_INT || v->t == V_FLOAT || v->t == V_BOOL;
}
static double num_f(const jv_t *v)
{
    if (v->t == V_FLOAT)
        return v->u.f;
    if (v->t == V_INT)
        return v->x ? strtod(v->x, NULL) : (double)v->u.i;
    return v->t == V_BOOL ? v->u.b : 0;
}
static long long num_i(const jv_t *v)
{
    return v->t == V_INT ? v->u.i : v->t == V_BOOL ? v->u.b : (long long)v->u.f;
}

/* ---------------------------------------------------------------- growing strings */

typedef struct sb {
    char *p;
    size_t n, cap;
    size_t limit; /* 0: none */
    int err;      /* -ENOMEM or FD_ERANGE once failed */
} sb_t;

static void sb_put(sb_t *b, const char *s, size_t n)
{
    if (b->err || !n)
        return;
    if (b->limit && b->n + n > b->limit) {
        b->err = FD_ERANGE;
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->err = -ENOMEM;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_puts(sb_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}
static void sb_putc(sb_t *b, char ch)
{
    sb_put(b, &ch, 1);
}
static void sb_printf(sb_t *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0)
        sb_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

/* ---------------------------------------------------------------- UTF-8 */

static size_t u8_count(const char *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)p[i] & 0xC0) != 0x80;
    return k;
}

/* byte offset of codepoint idx (idx <= count) */
static size_t u8_off(const char *p, size_t n, size_t idx)
{
    size_t i = 0;
    while (idx && i < n) {
        i++;
        while (i < n && ((unsigned char)p[i] & 0xC0) == 0x80)
            i++;
        idx--;
    }
    return i;
}

static void u8_put(sb_t *b, unsigned cp)
{
    char t[4];
    size_t k;
    if (cp < 0x80) {
        t[0] = (char)cp;
        k = 1;
    } else if (cp < 0x800) {
        t[0] = (char)(0xC0 | cp >> 6);
        t[1] = (char)(0x80 | (cp & 63));
        k = 2;
    } else if (cp < 0x10000) {
        t[0] = (char)(0xE0 | cp >> 12);
        t[1] = (char)(0x80 | (cp >> 6 & 63));
        t[2] = (char)(0x80 | (cp & 63));
        k = 3;
    } else {
        t[0] = (char)(0xF0 | cp >> 18);
        t[1] = (char)(0x80 | (cp >> 12 & 63));
        t[2] = (char)(0x80 | (cp >> 6 & 63));
        t[3] = (char)(0x80 | (cp & 63));
        k = 4;
    }
    sb_put(b, t, k);
}

/* Python's str.isspace for the ASCII range (and NEL, NBSP as the two-byte forms) */
static int py_space(const char *p, size_t n, size_t i, size_t *w)
{
    unsigned char ch = (unsigned char)p[i];
    *w = 1;
    if (ch == ' ' || (ch >= 9 && ch <= 13) || (ch >= 0x1c && ch <= 0x1f))
        return 1;
    if (ch == 0xC2 && i + 1 < n && ((unsigned char)p[i + 1] == 0x85 ||
                                    (unsigned char)p[i + 1] == 0xA0)) {
        *w = 2;
        return 1;
    }
    if (ch == 0xE3 && i + 2 < n && (unsigned char)p[i + 1] == 0x80 &&
        (unsigned char)p[i + 2] == 0x80) {
        *w = 3;
        return 1;
    }
    return 0;
}

static size_t ws_lead(const char *p, size_t n)
{
    size_t i = 0, w;
    while (i < n && py_space(p, n, i, &w))
        i += w;
    return i;
}

static size_t ws_trail(const char *p, size_t n) /* new length after rstrip */
{
    while (n) {
        size_t i = n - 1;
        while (i && ((unsigned char)p[i] & 0xC0) == 0x80)
            i--;
        size_t w;
        if (!py_space(p, n, i, &w) || i + w != n)
            break;
        n = i;
    }
    return n;
}

/* ---------------------------------------------------------------- numbers as Python prints them */

static void put_float(sb_t *b, double f)
{
    if (isnan(f)) {
        sb_puts(b, "nan");
        return;
    }
    if (isinf(f)) {
        sb_puts(b, f < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    /* tmp: [-]d[.ddd]e[+-]XX -> digits and decimal exponent */
    char digits[32];
    int nd = 0, neg = tmp[0] == '-';
    const char *q = tmp + neg;
    for (; *q && *q != 'e'; q++)
        if (isdigit((unsigned char)*q))
            digits[nd++] = *q;
    int exp = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (neg)
        sb_putc(b, '-');
    if (exp < -4 || exp >= 16) {
        sb_putc(b, digits[0]);
        if (nd > 1) {
            sb_putc(b, '.');
            sb_put(b, digits + 1, (size_t)nd - 1);
        }
        sb_printf(b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    } else if (exp < 0) {
        sb_puts(b, "0.");
        for (int k = -1; k > exp; k--)
            sb_putc(b, '0');
        sb_put(b, digits, (size_t)nd);
    } else {
        for (int k = 0; k <= exp; k++)
            sb_putc(b, k < nd ? digits[k] : '0');
        sb_putc(b, '.');
        if (nd > exp + 1)
            sb_put(b, digits + exp + 1, (size_t)(nd - exp - 1));
        else
            sb_putc(b, '0');
    }
}

static void put_int(sb_t *b, const jv_t *v)
{
    if (v->x)
        sb_puts(b, v->x);
    else
        sb_printf(b, "%lld", v->u.i);
}

/* ---------------------------------------------------------------- JSON out (json.dumps) */

static void json_str(sb_t *b, const char *p, size_t n)
{
    sb_putc(b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        const char *esc = NULL;
        char u[8];
        if (ch == '"')
            esc = "\\\"";
        else if (ch == '\\')
            esc = "\\\\";
        else if (ch == '\n')
            esc = "\\n";
        else if (ch == '\r')
            esc = "\\r";
        else if (ch == '\t')
            esc = "\\t";
        else if (ch == '\b')
            esc = "\\b";
        else if (ch == '\f')
            esc = "\\f";
        else if (ch < 0x20) {
            snprintf(u, sizeof u, "\\u%04x", ch);
            esc = u;
        }
        if (esc) {
            sb_put(b, p + run, i - run);
            sb_puts(b, esc);
            run = i + 1;
        }
    }
    sb_put(b, p + run, n - run);
    sb_putc(b, '"');
}

static void json_nl(sb_t *b, int indent, int level)
{
    sb_putc(b, '\n');
    for (int k = 0; k < indent * level; k++)
        sb_putc(b, ' ');
}

/* 0, or -EINVAL for a value JSON cannot hold (undefined, a function): *bad names it */
static int json_dump(sb_t *b, const jv_t *v, int indent, int level, const char **bad)
{
    switch (v->t) {
    case V_NONE:
        sb_puts(b, "null");
        return 0;
    case V_BOOL:
        sb_puts(b, v->u.b ? "true" : "false");
        return 0;
    case V_INT:
        put_int(b, v);
        return 0;
    case V_FLOAT:
        if (isnan(v->u.f))
            sb_puts(b, "NaN");
        else if (isinf(v->u.f))
            sb_puts(b, v->u.f < 0 ? "-Infinity" : "Infinity");
        else
            put_float(b, v->u.f);
        return 0;
    case V_STR:
        json_str(b, v->u.s.p, v->u.s.n);
        return 0;
    case V_LIST: {
        const jlist_t *l = v->u.l;
        if (!l->n) {
            sb_puts(b, "[]");
            return 0;
        }
        sb_putc(b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                sb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0)
                json_nl(b, indent, level + 1);
            if (json_dump(b, &l->v[i], indent, level + 1, bad))
                return -EINVAL;
        }
        if (indent >= 0)
            json_nl(b, indent, level);
        sb_putc(b, ']');
        return 0;
    }
    case V_DICT:
    case V_NS: {
        const jdict_t *d = v->u.d;
        if (!d->n) {
            sb_puts(b, "{}");
            return 0;
        }
        sb_putc(b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i)
                sb_puts(b, indent >= 0 ? "," : ", ");
            if (indent >= 0)
                json_nl(b, indent, level + 1);
            const jv_t *k = &d->k[i];
            if (k->t == V_STR)
                json_str(b, k->u.s.p, k->u.s.n);
            else if (k->t == V_INT || k->t == V_FLOAT || k->t == V_BOOL || k->t == V_NONE) {
                sb_putc(b, '"');
                json_dump(b, k, -1, 0, bad);
                sb_putc(b, '"');
            } else {
                *bad = "keys must be str, int, float, bool or None";
                return -EINVAL;
            }
            sb_puts(b, ": ");
            if (json_dump(b, &d->v[i], indent, level + 1, bad))
                return -EINVAL;
        }
        if (indent >= 0)
            json_nl(b, indent, level);
        sb_putc(b, '}');
        return 0;
    }
    case V_UNDEF:
        *bad = "Object of type Undefined is not JSON serializable";
        return -EINVAL;
    default:
        *bad = "Object of type function is not JSON serializable";
        return -EINVAL;
    }
}

/* ---------------------------------------------------------------- Python repr and str */

static void repr_str(sb_t *b, const char *p, size_t n)
{
    int sq = memchr(p, '\'', n) != NULL, dq = memchr(p, '"', n) != NULL;
    char quote = sq && !dq ? '"' : '\'';
    sb_putc(b, quote);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == (unsigned char)quote || ch == '\\') {
            sb_putc(b, '\\');
            sb_putc(b, (char)ch);
        } else if (ch == '\n')
            sb_puts(b, "\\n");
        else if (ch == '\r')
            sb_puts(b, "\\r");
        else if (ch == '\t')
            sb_puts(b, "\\t");
        else if (ch < 0x20 || ch == 0x7f)
            sb_printf(b, "\\x%02x", ch);
        else
            sb_putc(b, (char)ch);
    }
    sb_putc(b, quote);
}

static void put_str(sb_t *b, const jv_t *v, int repr);

static void put_str(sb_t *b, const jv_t *v, int repr)
{
    switch (v->t) {
    case V_UNDEF:
        if (repr)
            sb_puts(b, "Undefined");
        return;
    case V_NONE:
        sb_puts(b, "None");
        return;
    case V_BOOL:
        sb_puts(b, v->u.b ? "True" : "False");
        return;
    case V_INT:
        put_int(b, v);
        return;
    case V_FLOAT:
        put_float(b, v->u.f);
        return;
    case V_STR:
        if (repr)
            repr_str(b, v->u.s.p, v->u.s.n);
        else
            sb_put(b, v->u.s.p, v->u.s.n);
        return;
    case V_LIST:
        sb_putc(b, v->x ? '(' : '[');
        for (size_t i = 0; i < v->u.l->n; i++) {
            if (i)
                sb_puts(b, ", ");
            put_str(b, &v->u.l->v[i], 1);
        }
        if (v->x && v->u.l->n == 1)
            sb_putc(b, ',');
        sb_putc(b, v->x ? ')' : ']');
        return;
    case V_DICT:
    case V_NS:
        sb_puts(b, v->t == V_NS ? "<Namespace {" : "{");
        for (size_t i = 0; i < v->u.d->n; i++) {
            if (i)
                sb_puts(b, ", ");
            put_str(b, &v->u.d->k[i], 1);
            sb_puts(b, ": ");
            put_str(b, &v->u.d->v[i], 1);
        }
        sb_puts(b, v->t == V_NS ? "}>" : "}");
        return;
    case V_LOOP:
        sb_puts(b, "<LoopContext>");
        return;
    default:
        sb_puts(b, "<function>");
        return;
    }
}

static int truthy(const jv_t *v)
{
    switch (v->t) {
    case V_UNDEF:
    case V_NONE:
        return 0;
    case V_BOOL:
        return v->u.b;
    case V_INT:
        return v->x || v->u.i != 0;
    case V_FLOAT:
        return v->u.f != 0;
    case V_STR:
        return v->u.s.n != 0;
    case V_LIST:
        return v->u.l->n != 0;
    case V_DICT:
        return v->u.d->n != 0;
    default:
        return 1;
    }
}

static const char *type_name(const jv_t *v)
{
    static const char *const names[] = {"Undefined", "NoneType", "bool", "int", "float", "str",
                                        "list", "dict", "Namespace", "function", "LoopContext"};
    return names[v->t];
}

static int str_eq(const jv_t *v, const char *s)
{
    return v->t == V_STR && v->u.s.n == strlen(s) && memcmp(v->u.s.p, s, v->u.s.n) == 0;
}

static int veq(const jv_t *a, const jv_t *b)
{
    if (is_num(a) && is_num(b)) {
        if (a->t != V_FLOAT && b->t != V_FLOAT && !a->x && !b->x)
            return num_i(a) == num_i(b);
        if (a->x && b->x)
            return strcmp(a->x, b->x) == 0;
        return num_f(a) == num_f(b);
    }
    if (a->t != b->t)
        return 0;
    switch (a->t) {
    case V_UNDEF:
    case V_NONE:
        return 1;
    case V_STR:
        return a->u.s.n == b->u.s.n && memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0;
    case V_LIST:
        if (a->u.l->n != b->u.l->n)
            return 0;
        for (size_t i = 0; i < a->u.l->n; i++)
            if (!veq(&a->u.l->v[i], &b->u.l->v[i]))
                return 0;
        return 1;
    case V_DICT:
        if (a->u.d->n != b->u.d->n)
            return 0;
        for (size_t i = 0; i < a->u.d->n; i++) {
            size_t j;
            for (j = 0; j < b->u.d->n; j++)
                if (veq(&a->u.d->k[i], &b->u.d->k[j]))
                    break;
            if (j == b->u.d->n || !veq(&a->u.d->v[i], &b->u.d->v[j]))
                return 0;
        }
        return 1;
    default:
        return a->u.d == b->u.d;
    }
}

static const jv_t *dict_get(const jdict_t *d, const char *k, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == V_STR && d->k[i].u.s.n == n && memcmp(d->k[i].u.s.p, k, n) == 0)
            return &d->v[i];
    return NULL;
}

static const jv_t *dict_getv(const jdict_t *d, const jv_t *k)
{
    for (size_t i = 0; i < d->n; i++)
        if (veq(&d->k[i], k))
            return &d->v[i];
    return NULL;
}

/* sets or adds k (0, or -ENOMEM/FD_ERANGE through the arena) */
static int dict_set(arena_t *a, jdict_t *d, jv_t k, jv_t v)
{
    for (size_t i = 0; i < d->n; i++)
        if (veq(&d->k[i], &k)) {
            d->v[i] = v;
            return 0;
        }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        jv_t *nk = ar_alloc(a, cap * sizeof *nk), *nv = ar_alloc(a, cap * sizeof *nv);
        if (!nk || !nv)
            return a->over ? FD_ERANGE : -ENOMEM;
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = k;
    d->v[d->n] = v;
    d->n++;
    return 0;
}

/* ---------------------------------------------------------------- JSON in (json.loads) */

typedef struct jin {
    arena_t *a;
    const char *p, *end;
    int depth;
} jin_t;

static void jin_ws(jin_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int jin_hex4(const char *p, const char *end, unsigned *out)
{
    if (end - p < 4)
        return -1;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int d = fd_hex_digit((unsigned char)p[k]);
        if (d < 0)
            return -1;
        v = v * 16 + (unsigned)d;
    }
    *out = v;
    return 0;
}

static int jin_value(jin_t *j, jv_t *out);

static int jin_string(jin_t *j, jv_t *out)
{
    j->p++; /* the quote */
    sb_t b = {0};
    int rc = -EINVAL;
    while (j->p < j->end && *j->p != '"') {
        const char *run = j->p;
        while (j->p < j->end && *j->p != '"' && *j->p != '\\' && (unsigned char)*j->p >= 0x20)
            j->p++;
        sb_put(&b, run, (size_t)(j->p - run));
        if (j->p >= j->end || *j->p == '"')
            break;
        if (*j->p != '\\')
            goto out; /* a raw control character */
        j->p++;
        if (j->p >= j->end)
            goto out;
        char e = *j->p++;
        switch (e) {
        case '"': sb_putc(&b, '"'); break;
        case '\\': sb_putc(&b, '\\'); break;
        case '/': sb_putc(&b, '/'); break;
        case 'b': sb_putc(&b, '\b'); break;
        case 'f': sb_putc(&b, '\f'); break;
        case 'n': sb_putc(&b, '\n'); break;
        case 'r': sb_putc(&b, '\r'); break;
        case 't': sb_putc(&b, '\t'); break;
        case 'u': {
            unsigned cp, lo;
            if (jin_hex4(j->p, j->end, &cp))
                goto out;
            j->p += 4;
            if (cp >= 0xD800 && cp < 0xDC00 && j->end - j->p >= 6 && j->p[0] == '\\' &&
                j->p[1] == 'u' && !jin_hex4(j->p + 2, j->end, &lo) && lo >= 0xDC00 &&
                lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                j->p += 6;
            }
            u8_put(&b, cp);
            break;
        }
        default:
            goto out;
        }
    }
    if (j->p >= j->end)
        goto out;
    j->p++;
    rc = b.err;
    if (!rc) {
        char *s = ar_strndup(j->a, b.p ? b.p : "", b.n);
        if (!s)
            rc = -ENOMEM;
        else
            *out = vstr(s, b.n);
    }
out:
    free(b.p);
    return rc;
}

static int jin_value(jin_t *j, jv_t *out)
{
    jin_ws(j);
    if (j->p >= j->end)
        return -EINVAL;
    char ch = *j->p;
    if (ch == '"')
        return jin_string(j, out);
    if (ch == '{' || ch == '[') {
        if (++j->depth > 512)
            return -EINVAL;
        j->p++;
        jdict_t *d = NULL;
        jv_t *items = NULL;
        size_t n = 0, cap = 0;
        if (ch == '{') {
            d = ar_alloc(j->a, sizeof *d);
            if (!d)
                return -ENOMEM;
            memset(d, 0, sizeof *d);
        }
        jin_ws(j);
        if (j->p < j->end && *j->p == (ch == '{' ? '}' : ']')) {
            j->p++;
        } else {
            for (;;) {
                jv_t k, v;
                int rc;
                if (d) {
                    jin_ws(j);
                    if (j->p >= j->end || *j->p != '"')
                        return -EINVAL;
                    if ((rc = jin_string(j, &k)))
                        return rc;
                    jin_ws(j);
                    if (j->p >= j->end || *j->p != ':')
                        return -EINVAL;
                    j->p++;
                }
                if ((rc = jin_value(j, &v)))
                    return rc;
                if (d) {
                    if ((rc = dict_set(j->a, d, k, v)))
                        return rc;
                } else {
                    if (n == cap) {
                        cap = cap ? cap * 2 : 8;
                        jv_t *ni = ar_alloc(j->a, cap * sizeof *ni);
                        if (!ni)
                            return -ENOMEM;
                        if (n)
                            memcpy(ni, items, n * sizeof *ni);
                        items = ni;
                    }
                    items[n++] = v;
                }
                jin_ws(j);
                if (j->p < j->end && *j->p == ',') {
                    j->p++;
                    continue;
                }
                if (j->p < j->end && *j->p == (d ? '}' : ']')) {
                    j->p++;
                    break;
                }
                return -EINVAL;
            }
        }
        j->depth--;
        if (d) {
            *out = (jv_t){.t = V_DICT, .u.d = d};
        } else {
            jlist_t *l = ar_alloc(j->a, sizeof *l);
            if (!l)
                return -ENOMEM;
            l->n = n;
            l->v = items;
            *out = vlist(l);
        }
        return 0;
    }
    static const struct {
        const char *w;
        int t, b;
    } words[] = {{"true", V_BOOL, 1}, {"false", V_BOOL, 0}, {"null", V_NONE, 0}};
    for (size_t k = 0; k < 3; k++) {
        size_t wl = strlen(words[k].w);
        if ((size_t)(j->end - j->p) >= wl && memcmp(j->p, words[k].w, wl) == 0) {
            j->p += wl;
            *out = words[k].t == V_BOOL ? vbool(words[k].b) : V_NULL;
            return 0;
        }
    }
    const char *s = j->p;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || !isdigit((unsigned char)*j->p))
        return -EINVAL;
    if (*j->p == '0' && j->p + 1 < j->end && isdigit((unsigned char)j->p[1]))
        return -EINVAL;
    while (j->p < j->end && isdigit((unsigned char)*j->p))
        j->p++;
    int isf = 0;
    if (j->p < j->end && *j->p == '.') {
        isf = 1;
        j->p++;
        if (j->p >= j->end || !isdigit((unsigned char)*j->p))
            return -EINVAL;
        while (j->p < j->end && isdigit((unsigned char)*j->p))
            j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        isf = 1;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
            j->p++;
        if (j->p >= j->end || !isdigit((unsigned char)*j->p))
            return -EINVAL;
        while (j->p < j->end && isdigit((unsigned char)*j->p))
            j->p++;
    }
    char *txt = ar_strndup(j->a, s, (size_t)(j->p - s));
    if (!txt)
        return -ENOMEM;
    if (isf) {
        *out = vfloat(strtod(txt, NULL));
        return 0;
    }
    errno = 0;
    long long i = strtoll(txt, NULL, 10);
    *out = vint(i);
    if (errno == ERANGE) { /* Python keeps every digit: "-0" is 0, but 99...9 stays */
        out->x = txt;
        out->u.i = i;
    }
    return 0;
}

/* ---------------------------------------------------------------- lexer */

enum { T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct tok {
    int k;
    size_t off;      /* where it starts in the (normalised) source */
    const char *p;   /* T_TEXT, T_NAME, T_OP: the text; T_STR: the unescaped value */
    size_t n;
    jv_t num;        /* T_INT, T_FLOAT */
} tok_t;

struct jinja {
    arena_t ar;
    char *src; /* normalised: "\r\n" and "\r" made "\n", one final newline dropped */
    size_t len;
    struct jn **body;
    size_t n_body;
    const char **names; /* every variable name the template reads, for jinja_uses */
    size_t n_names;
};

typedef struct lex {
    jinja_t *t;
    tok_t *toks;
    size_t n, cap;
    char *err;
    size_t errlen;
} lex_t;

static void line_col(const char *src, size_t off, int *line, int *col)
{
    int l = 1, c = 1;
    for (size_t i = 0; i < off; i++) {
        if (src[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)src[i] & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

static int lex_fail(lex_t *x, size_t off, const char *fmt, ...)
{
    int line, col;
    line_col(x->t->src, off, &line, &col);
    int k = snprintf(x->err, x->errlen, "line %d column %d: ", line, col);
    if (k >= 0 && (size_t)k < x->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err + k, x->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static tok_t *lex_add(lex_t *x, int k, size_t off, const char *p, size_t n)
{
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 256;
        tok_t *nt = realloc(x->toks, cap * sizeof *nt);
        if (!nt)
            return NULL;
        x->toks = nt;
        x->cap = cap;
    }
    tok_t *t = &x->toks[x->n++];
    *t = (tok_t){.k = k, .off = off, .p = p, .n = n};
    return t;
}

/* a string literal at s[i] (its quote): the unescaped value in the template's arena */
static int lex_string(lex_t *x, size_t *i)
{
    const char *s = x->t->src;
    size_t n = x->t->len, start = *i;
    char q = s[(*i)++];
    sb_t b = {0};
    while (*i < n && s[*i] != q) {
        char ch = s[(*i)++];
        if (ch != '\\') {
            sb_putc(&b, ch);
            continue;
        }
        if (*i >= n)
            break;
        char e = s[(*i)++];
        unsigned cp;
        int hex = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
        switch (e) {
        case 'n': sb_putc(&b, '\n'); break;
        case 't': sb_putc(&b, '\t'); break;
        case 'r': sb_putc(&b, '\r'); break;
        case 'b': sb_putc(&b, '\b'); break;
        case 'f': sb_putc(&b, '\f'); break;
        case 'v': sb_putc(&b, '\v'); break;
        case 'a': sb_putc(&b, '\a'); break;
        case '0': sb_putc(&b, '\0'); break;
        case '\\': sb_putc(&b, '\\'); break;
        case '\'': sb_putc(&b, '\''); break;
        case '"': sb_putc(&b, '"'); break;
        case '\n': break;
        default:
            if (hex && *i + (size_t)hex <= n) {
                cp = 0;
                int ok = 1;
                for (int k = 0; k < hex; k++) {
                    int d = fd_hex_digit((unsigned char)s[*i + (size_t)k]);
                    if (d < 0)
                        ok = 0;
                    cp = cp * 16 + (unsigned)(d < 0 ? 0 : d);
                }
                if (ok && cp <= 0x10FFFF) {
                    *i += (size_t)hex;
                    u8_put(&b, cp);
                    break;
                }
            }
            sb_putc(&b, '\\');
            sb_putc(&b, e);
        }
    }
    if (*i >= n) {
        free(b.p);
        return lex_fail(x, start, "unterminated string literal");
    }
    (*i)++;
    if (b.err) {
        free(b.p);
        return b.err;
    }
    char *v = ar_strndup(&x->t->ar, b.p ? b.p : "", b.n);
    free(b.p);
    if (!v || !lex_add(x, T_STR, start, v, b.n))
        return -ENOMEM;
    return 0;
}

static int lex_number(lex_t *x, size_t *i)
{
    const char *s = x->t->src;
    size_t n = x->t->len, start = *i;
    char buf[64];
    size_t bl = 0;
    int isf = 0;
    while (*i < n && (isdigit((unsigned char)s[*i]) || s[*i] == '_')) {
        if (s[*i] != '_' && bl < sizeof buf - 1)
            buf[bl++] = s[*i];
        (*i)++;
    }
    if (*i + 1 < n && s[*i] == '.' && isdigit((unsigned char)s[*i + 1])) {
        isf = 1;
        buf[bl++] = s[(*i)++];
        while (*i < n && (isdigit((unsigned char)s[*i]) || s[*i] == '_')) {
            if (s[*i] != '_' && bl < sizeof buf - 1)
                buf[bl++] = s[*i];
            (*i)++;
        }
    }
    if (*i < n && (s[*i] == 'e' || s[*i] == 'E')) {
        size_t j = *i + 1;
        if (j < n && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j < n && isdigit((unsigned char)s[j])) {
            isf = 1;
            while (*i < j && bl < sizeof buf - 1)
                buf[bl++] = s[(*i)++];
            while (*i < n && isdigit((unsigned char)s[*i]) && bl < sizeof buf - 1)
                buf[bl++] = s[(*i)++];
        }
    }
    buf[bl] = 0;
    tok_t *t = lex_add(x, isf ? T_FLOAT : T_INT, start, s + start, *i - start);
    if (!t)
        return -ENOMEM;
    if (isf) {
        t->num = vfloat(strtod(buf, NULL));
    } else {
        errno = 0;
        t->num = vint(strtoll(buf, NULL, 10));
        if (errno == ERANGE)
            return lex_fail(x, start, "integer literal too large");
    }
    return 0;
}

static const char *const OPS[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%",
                                  "~", "[", "]", "(", ")", "{", "}", "<", ">", "=", ".", ":",
                                  "|", ",", ";"};

/* The tokens inside {{ }} or {% %} from *i up to and including the closing delimiter;
 * *i is left after it (and after the whitespace that -%} or trim_blocks removes). */
static int lex_tag(lex_t *x, size_t *i, int block, size_t open)
{
    const char *s = x->t->src;
    size_t n = x->t->len;
    int depth = 0;
    for (;;) {
        while (*i < n && isspace((unsigned char)s[*i]))
            (*i)++;
        if (*i >= n)
            return lex_fail(x, open, "unexpected end of template: '%s' is not closed",
                            block ? "{%" : "{{");
        char c0 = s[*i];
        if (depth == 0) {
            size_t j = *i;
            char sign = 0;
            if ((s[j] == '-' || s[j] == '+') && j + 2 < n + 0 && s[j + 1] == (block ? '%' : '}') &&
                s[j + 2] == '}') {
                sign = s[j];
                j++;
            }
            if (j + 1 < n && s[j] == (block ? '%' : '}') && s[j + 1] == '}') {
                if (!lex_add(x, block ? T_BEND : T_VEND, *i, s + *i, j + 2 - *i))
                    return -ENOMEM;
                *i = j + 2;
                if (sign == '-')
                    *i += ws_lead(s + *i, n - *i);
                else if (block && sign != '+' && *i < n && s[*i] == '\n')
                    (*i)++;
                return 0;
            }
        }
        int rc;
        if (c0 == '"' || c0 == '\'') {
            if ((rc = lex_string(x, i)))
                return rc;
        } else if (isdigit((unsigned char)c0)) {
            if ((rc = lex_number(x, i)))
                return rc;
        } else if (isalpha((unsigned char)c0) || c0 == '_') {
            size_t st = *i;
            while (*i < n && (isalnum((unsigned char)s[*i]) || s[*i] == '_'))
                (*i)++;
            if (!lex_add(x, T_NAME, st, s + st, *i - st))
                return -ENOMEM;
        } else {
            size_t k;
            for (k = 0; k < FD_ARRAY_LEN(OPS); k++) {
                size_t ol = strlen(OPS[k]);
                if (*i + ol <= n && memcmp(s + *i, OPS[k], ol) == 0)
                    break;
            }
            if (k == FD_ARRAY_LEN(OPS))
                return lex_fail(x, *i, "unexpected character '%c'", c0);
            size_t ol = strlen(OPS[k]);
            if (c0 == '(' || c0 == '[' || c0 == '{')
                depth++;
            else if ((c0 == ')' || c0 == ']' || c0 == '}') && depth > 0)
                depth--;
            if (!lex_add(x, T_OP, *i, s + *i, ol))
                return -ENOMEM;
            *i += ol;
        }
    }
}

/* {% raw %} at s[q]: when it is one, its text is a T_TEXT and *i goes past {% endraw %} */
static int lex_raw(lex_t *x, size_t q, size_t *i, int *was)
{
    const char *s = x->t->src;
    size_t n = x->t->len, j = q + 2;
    *was = 0;
    if (j < n && (s[j] == '-' || s[j] == '+'))
        j++;
    while (j < n && isspace((unsigned char)s[j]))
        j++;
    if (j + 3 > n || memcmp(s + j, "raw", 3) != 0)
        return 0;
    j += 3;
    while (j < n && isspace((unsigned char)s[j]))
        j++;
    char sign = 0;
    if (j < n && (s[j] == '-' || s[j] == '+'))
        sign = s[j++];
    if (j + 2 > n || s[j] != '%' || s[j + 1] != '}')
        return 0;
    j += 2;
    if (sign == '-')
        j += ws_lead(s + j, n - j);
    else if (sign != '+' && j < n && s[j] == '\n')
        j++;
    *was = 1;
    /* find {%[-] endraw [-]%} */
    for (size_t k = j; k + 1 < n; k++) {
        if (s[k] != '{' || s[k + 1] != '%')
            continue;
        size_t m = k + 2;
        char lsign = 0;
        if (m < n && (s[m] == '-' || s[m] == '+'))
            lsign = s[m++];
        while (m < n && isspace((unsigned char)s[m]))
            m++;
        if (m + 6 > n || memcmp(s + m, "endraw", 6) != 0)
            continue;
        m += 6;
        while (m < n && isspace((unsigned char)s[m]))
            m++;
        char rsign = 0;
        if (m < n && (s[m] == '-' || s[m] == '+'))
            rsign = s[m++];
        if (m + 2 > n || s[m] != '%' || s[m + 1] != '}')
            continue;
        size_t tl = k - j;
        if (lsign == '-')
            tl = ws_trail(s + j, tl);
        if (tl && !lex_add(x, T_TEXT, j, s + j, tl))
            return -ENOMEM;
        m += 2;
        if (rsign == '-')
            m += ws_lead(s + m, n - m);
        else if (rsign != '+' && m < n && s[m] == '\n')
            m++;
        *i = m;
        return 0;
    }
    return lex_fail(x, q, "missing {%% endraw %%}");
}

static int lex_all(lex_t *x)
{
    const char *s = x->t->src;
    size_t n = x->t->len, i = 0;
    int line_start = 1;
    while (i < n) {
        size_t q = i;
        while (q + 1 < n && !(s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')))
            q++;
        if (q + 1 >= n) {
            if (!lex_add(x, T_TEXT, i, s + i, n - i))
                return -ENOMEM;
            break;
        }
        char kind = s[q + 1];
        char sign = q + 2 < n && (s[q + 2] == '-' || s[q + 2] == '+') ? s[q + 2] : 0;
        size_t tl = q - i;
        if (sign == '-') {
            tl = ws_trail(s + i, tl);
        } else if (kind != '{' && sign != '+') { /* lstrip_blocks */
            size_t l = tl;
            while (l > 0 && s[i + l - 1] != '\n')
                l--;
            if (l > 0 || line_start) {
                size_t k = l;
                while (k < tl && (s[i + k] == ' ' || s[i + k] == '\t' || s[i + k] == '\v' ||
                                  s[i + k] == '\f' || s[i + k] == '\r'))
                    k++;
                if (k == tl)
                    tl = l;
            }
        }
        if (tl && !lex_add(x, T_TEXT, i, s + i, tl))
            return -ENOMEM;
        int rc;
        if (kind == '#') {
            size_t e = q + 2;
            while (e + 1 < n && !(s[e] == '#' && s[e + 1] == '}'))
                e++;
            if (e + 1 >= n)
                return lex_fail(x, q, "unexpected end of template: comment '{#' is not closed");
            char esign = e > q + 2 && (s[e - 1] == '-' || s[e - 1] == '+') ? s[e - 1] : 0;
            i = e + 2;
            if (esign == '-')
                i += ws_lead(s + i, n - i);
            else if (esign != '+' && i < n && s[i] == '\n')
                i++;
        } else if (kind == '%') {
            int was;
            if ((rc = lex_raw(x, q, &i, &was)))
                return rc;
            if (!was) {
                if (!lex_add(x, T_BBEGIN, q, s + q, 2))
                    return -ENOMEM;
                i = q + 2 + (sign != 0);
                if ((rc = lex_tag(x, &i, 1, q)))
                    return rc;
            }
        } else {
            if (!lex_add(x, T_VBEGIN, q, s + q, 2))
                return -ENOMEM;
            i = q + 2 + (sign != 0);
            if ((rc = lex_tag(x, &i, 0, q)))
                return rc;
        }
        line_start = i > 0 && s[i - 1] == '\n';
    }
    if (!lex_add(x, T_EOF, n, s + n, 0))
        return -ENOMEM;
    return 0;
}

/* ---------------------------------------------------------------- AST */

enum {
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_FILTERBLOCK,
    N_BREAK, N_CONTINUE,
    /* expressions */
    N_LIT, N_NAME, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER, N_TEST, N_BIN, N_NEG, N_POS,
    N_NOT, N_AND, N_OR, N_COND, N_LIST, N_TUPLE, N_DICT, N_CMP,
    N_HOLE /* the captured text a filter block or a block set filters */
};

enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CAT, OP_EQ, OP_NE,
       OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

typedef struct jn {
    int k, op;
    size_t off;
    const char *s; /* a name, a text, an attribute */
    size_t n;
    jv_t v;        /* N_LIT */
    struct jn *a, *b, *c, *d;
    struct jn **l; /* body, items, positional arguments, comparison operands */
    size_t nl;
    struct jn **l2; /* else body, dict values, keyword argument values, defaults */
    size_t nl2;
    const char **names; /* keyword argument names, macro parameters, loop targets */
    size_t nnames;
    int *ops; /* N_CMP */
} jn_t;

typedef struct parser {
    jinja_t *t;
    tok_t *tk;
    size_t pos;
    char *err;
    size_t errlen;
    int depth;
    int in_loop;
} parser_t;

typedef struct vec {
    void **p;
    size_t n, cap;
} vec_t;

static int vec_push(arena_t *a, vec_t *v, void *x)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        void **np = ar_alloc(a, cap * sizeof *np);
        if (!np)
            return -ENOMEM;
        if (v->n)
            memcpy(np, v->p, v->n * sizeof *np);
        v->p = np;
        v->cap = cap;
    }
    v->p[v->n++] = x;
    return 0;
}

static int p_fail(parser_t *p, const tok_t *t, const char *fmt, ...)
{
    int line, col;
    line_col(p->t->src, t->off, &line, &col);
    int k = snprintf(p->err, p->errlen, "line %d column %d: ", line, col);
    if (k >= 0 && (size_t)k < p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err + k, p->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static tok_t *cur(parser_t *p)
{
    return &p->tk[p->pos];
}

static int is_op(const tok_t *t, const char *op)
{
    return t->k == T_OP && t->n == strlen(op) && memcmp(t->p, op, t->n) == 0;
}

static int is_name(const tok_t *t, const char *name)
{
    return t->k == T_NAME && t->n == strlen(name) && memcmp(t->p, name, t->n) == 0;
}

static const char *tok_desc(const tok_t *t, char *buf, size_t len)
{
    switch (t->k) {
    case T_EOF: return "end of template";
    case T_TEXT: return "template text";
    case T_VEND: return "'}}'";
    case T_BEND: return "'%}'";
    case T_VBEGIN: return "'{{'";
    case T_BBEGIN: return "'{%'";
    case T_STR: return "a string";
    case T_INT:
    case T_FLOAT: return "a number";
    default:
        snprintf(buf, len, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p);
        return buf;
    }
}

static int expect_op(parser_t *p, const char *op)
{
    if (!is_op(cur(p), op)) {
        char b[64];
        return p_fail(p, cur(p), "expected '%s', got %s", op, tok_desc(cur(p), b, sizeof b));
    }
    p->pos++;
    return 0;
}

static jn_t *node(parser_t *p, int k, const tok_t *at)
{
    jn_t *n = ar_alloc(&p->t->ar, sizeof *n);
    if (n) {
        memset(n, 0, sizeof *n);
        n->k = k;
        n->off = at->off;
    }
    return n;
}

#define NEW(var, kind, at)                                                                    \
    do {                                                                                      \
        if (!((var) = node(p, (kind), (at))))                                                 \
            return -ENOMEM;                                                                   \
    } while (0)

static int p_expr(parser_t *p, jn_t **out);
static int p_or(parser_t *p, jn_t **out);
static int p_unary(parser_t *p, jn_t **out, int with_filter);
static int p_primary(parser_t *p, jn_t **out);
static int p_postfix(parser_t *p, jn_t **n);

static int note_name(parser_t *p, const char *s, size_t n)
{
    for (size_t i = 0; i < p->t->n_names; i++)
        if (strlen(p->t->names[i]) == n && memcmp(p->t->names[i], s, n) == 0)
            return 0;
    if ((p->t->n_names & (p->t->n_names - 1)) == 0) { /* grow at powers of two */
        size_t cap = p->t->n_names ? p->t->n_names * 2 : 8;
        const char **nn = ar_alloc(&p->t->ar, cap * sizeof *nn);
        if (!nn)
            return -ENOMEM;
        if (p->t->n_names)
            memcpy(nn, p->t->names, p->t->n_names * sizeof *nn);
        p->t->names = nn;
    }
    const char *c = ar_strndup(&p->t->ar, s, n);
    if (!c)
        return -ENOMEM;
    p->t->names[p->t->n_names++] = c;
    return 0;
}

/* call arguments after '(': positional in l, keyword in names/l2 */
static int p_args(parser_t *p, jn_t *call)
{
    vec_t pos = {0}, kv = {0}, kn = {0};
    int rc;
    while (!is_op(cur(p), ")")) {
        if (pos.n + kv.n && (rc = expect_op(p, ",")))
            return rc;
        if (is_op(cur(p), ")"))
            break;
        tok_t *t = cur(p);
        if (t->k == T_NAME && is_op(&p->tk[p->pos + 1], "=")) {
            p->pos += 2;
            jn_t *v;
            if ((rc = p_expr(p, &v)))
                return rc;
            const char *name = ar_strndup(&p->t->ar, t->p, t->n);
            if (!name || vec_push(&p->t->ar, &kn, (void *)name) || vec_push(&p->t->ar, &kv, v))
                return -ENOMEM;
            continue;
        }
        if (kv.n)
            return p_fail(p, t, "positional argument follows keyword argument");
        jn_t *v;
        if ((rc = p_expr(p, &v)))
            return rc;
        if (vec_push(&p->t->ar, &pos, v))
            return -ENOMEM;
    }
    p->pos++;
    call->l = (jn_t **)pos.p;
    call->nl = pos.n;
    call->l2 = (jn_t **)kv.p;
    call->nl2 = kv.n;
    call->names = (const char **)kn.p;
    call->nnames = kn.n;
    return 0;
}

static int p_filter_tail(parser_t *p, jn_t **n)
{
    int rc;
    for (;;) {
        tok_t *t = cur(p);
        if (is_op(t, "|")) {
            p->pos++;
            tok_t *nm = cur(p);
            if (nm->k != T_NAME)
                return p_fail(p, nm, "expected a filter name after '|'");
            p->pos++;
            size_t nlen = nm->n;
            const char *name = nm->p;
            while (is_op(cur(p), ".") && p->tk[p->pos + 1].k == T_NAME) { /* dotted names */
                p->pos++;
                nlen = (size_t)(cur(p)->p + cur(p)->n - name);
                p->pos++;
            }
            jn_t *f;
            NEW(f, N_FILTER, nm);
            f->s = ar_strndup(&p->t->ar, name, nlen);
            f->n = nlen;
            f->a = *n;
            if (is_op(cur(p), "(")) {
                p->pos++;
                if ((rc = p_args(p, f)))
                    return rc;
            }
            *n = f;
        } else if (is_name(t, "is")) {
            p->pos++;
            int neg = 0;
            if (is_name(cur(p), "not")) {
                neg = 1;
                p->pos++;
            }
            tok_t *nm = cur(p);
            const char *name;
            size_t nlen;
            if (nm->k == T_NAME) {
                name = nm->p;
                nlen = nm->n;
            } else if (is_op(nm, "==") || is_op(nm, "!=") || is_op(nm, "<") ||
                       is_op(nm, ">") || is_op(nm, "<=") || is_op(nm, ">=")) {
                name = nm->p;
                nlen = nm->n;
            } else {
                return p_fail(p, nm, "expected a test name after 'is'");
            }
            p->pos++;
            jn_t *f;
            NEW(f, N_TEST, nm);
            f->s = ar_strndup(&p->t->ar, name, nlen);
            f->n = nlen;
            f->a = *n;
            f->op = neg;
            tok_t *nx = cur(p);
            if (is_op(nx, "(")) {
                p->pos++;
                if ((rc = p_args(p, f)))
                    return rc;
            } else if (nx->k == T_STR || nx->k == T_INT || nx->k == T_FLOAT ||
                       is_op(nx, "[") || is_op(nx, "{") || is_op(nx, "-") ||
                       (nx->k == T_NAME && !is_name(nx, "else") && !is_name(nx, "or") &&
                        !is_name(nx, "and") && !is_name(nx, "if") && !is_name(nx, "in") &&
                        !is_name(nx, "is") && !is_name(nx, "not"))) {
                jn_t *arg;
                if ((rc = p_unary(p, &arg, 0)))
                    return rc;
                jn_t **l = ar_alloc(&p->t->ar, sizeof *l);
                if (!l)
                    return -ENOMEM;
                l[0] = arg;
                f->l = l;
                f->nl = 1;
            }
            *n = f;
        } else if (is_op(t, "(")) {
            p->pos++;
            jn_t *c;
            NEW(c, N_CALL, t);
            c->a = *n;
            if ((rc = p_args(p, c)))
                return rc;
            *n = c;
        } else {
            return 0;
        }
    }
}

static int p_unary(parser_t *p, jn_t **out, int with_filter)
{
    tok_t *t = cur(p);
    int rc;
    if (++p->depth > 200)
        return p_fail(p, t, "expression nested too deeply");
    if (is_op(t, "-") || is_op(t, "+")) {
        p->pos++;
        jn_t *n;
        NEW(n, is_op(t, "-") ? N_NEG : N_POS, t);
        if ((rc = p_unary(p, &n->a, 0)))
            return rc;
        *out = n;
    } else {
        if ((rc = p_primary(p, out)))
            return rc;
        if ((rc = p_postfix(p, out)))
            return rc;
    }
    if (with_filter && (rc = p_filter_tail(p, out)))
        return rc;
    p->depth--;
    return 0;
}

static int p_pow(parser_t *p, jn_t **out)
{
    int rc = p_unary(p, out, 1);
    while (!rc && is_op(cur(p), "**")) {
        jn_t *n;
        NEW(n, N_BIN, cur(p));
        p->pos++;
        n->op = OP_POW;
        n->a = *out;
        rc = p_unary(p, &n->b, 1);
        *out = n;
    }
    return rc;
}

static int p_math2(parser_t *p, jn_t **out)
{
    int rc = p_pow(p, out);
    for (;;) {
        tok_t *t = cur(p);
        int op = is_op(t, "*") ? OP_MUL : is_op(t, "/") ? OP_DIV : is_op(t, "//") ? OP_FDIV
                 : is_op(t, "%") ? OP_MOD : 0;
        if (rc || !op)
            return rc;
        jn_t *n;
        NEW(n, N_BIN, t);
        p->pos++;
        n->op = op;
        n->a = *out;
        rc = p_pow(p, &n->b);
        *out = n;
    }
}

static int p_concat(parser_t *p, jn_t **out)
{
    int rc = p_math2(p, out);
    while (!rc && is_op(cur(p), "~")) {
        jn_t *n;
        NEW(n, N_BIN, cur(p));
        p->pos++;
        n->op = OP_CAT;
        n->a = *out;
        rc = p_math2(p, &n->b);
        *out = n;
    }
    return rc;
}

static int p_math1(parser_t *p, jn_t **out)
{
    int rc = p_concat(p, out);
    for (;;) {
        tok_t *t = cur(p);
        int op = is_op(t, "+") ? OP_ADD : is_op(t, "-") ? OP_SUB : 0;
        if (rc || !op)
            return rc;
        jn_t *n;
        NEW(n, N_BIN, t);
        p->pos++;
        n->op = op;
        n->a = *out;
        rc = p_concat(p, &n->b);
        *out = n;
    }
}

static int p_compare(parser_t *p, jn_t **out)
{
    jn_t *first;
    int rc = p_math1(p, &first);
    if (rc)
        return rc;
    vec_t operands = {0}, ops = {0};
    for (;;) {
        tok_t *t = cur(p);
        intptr_t op = is_op(t, "==") ? OP_EQ : is_op(t, "!=") ? OP_NE : is_op(t, "<") ? OP_LT
                      : is_op(t, "<=") ? OP_LE : is_op(t, ">") ? OP_GT : is_op(t, ">=") ? OP_GE
                      : is_name(t, "in") ? OP_IN : 0;
        if (!op && is_name(t, "not") && is_name(&p->tk[p->pos + 1], "in")) {
            op = OP_NOTIN;
            p->pos++;
        }
        if (!op)
            break;
        p->pos++;
        jn_t *rhs;
        if ((rc = p_math1(p, &rhs)))
            return rc;
        if (vec_push(&p->t->ar, &operands, rhs) || vec_push(&p->t->ar, &ops, (void *)op))
            return -ENOMEM;
    }
    if (!operands.n) {
        *out = first;
        return 0;
    }
    jn_t *n;
    NEW(n, N_CMP, &p->tk[p->pos - 1]);
    n->off = first->off;
    n->a = first;
    n->l = (jn_t **)operands.p;
    n->nl = operands.n;
    n->ops = ar_alloc(&p->t->ar, ops.n * sizeof *n->ops);
    if (!n->ops)
        return -ENOMEM;
    for (size_t i = 0; i < ops.n; i++)
        n->ops[i] = (int)(intptr_t)ops.p[i];
    *out = n;
    return 0;
}

static int p_not(parser_t *p, jn_t **out)
{
    if (is_name(cur(p), "not")) {
        jn_t *n;
        NEW(n, N_NOT, cur(p));
        p->pos++;
        if (++p->depth > 200)
            return p_fail(p, cur(p), "expression nested too deeply");
        int rc = p_not(p, &n->a);
        p->depth--;
        *out = n;
        return rc;
    }
    return p_compare(p, out);
}

static int p_and(parser_t *p, jn_t **out)
{
    int rc = p_not(p, out);
    while (!rc && is_name(cur(p), "and")) {
        jn_t *n;
        NEW(n, N_AND, cur(p));
        p->pos++;
        n->a = *out;
        rc = p_not(p, &n->b);
        *out = n;
    }
    return rc;
}

static int p_or(parser_t *p, jn_t **out)
{
    int rc = p_and(p, out);
    while (!rc && is_name(cur(p), "or")) {
        jn_t *n;
        NEW(n, N_OR, cur(p));
        p->pos++;
        n->a = *out;
        rc = p_and(p, &n->b);
        *out = n;
    }
    return rc;
}

static int p_expr(parser_t *p, jn_t **out)
{
    int rc = p_or(p, out);
    while (!rc && is_name(cur(p), "if")) {
        jn_t *n;
        NEW(n, N_COND, cur(p));
        p->pos++;
        n->a = *out; /* the value when true */
        if ((rc = p_or(p, &n->b)))
            return rc;
        if (is_name(cur(p), "else")) {
            p->pos++;
            if (++p->depth > 200)
                return p_fail(p, cur(p), "expression nested too deeply");
            rc = p_expr(p, &n->c);
            p->depth--;
        }
        *out = n;
    }
    return rc;
}

/* an expression, or several separated by commas (a tuple, as in "set a = 1, 2") */
static int p_tuple(parser_t *p, jn_t **out, int with_cond)
{
    tok_t *start = cur(p);
    int rc = with_cond ? p_expr(p, out) : p_or(p, out);
    if (rc || !is_op(cur(p), ","))
        return rc;
    vec_t items = {0};
    if (vec_push(&p->t->ar, &items, *out))
        return -ENOMEM;
    while (is_op(cur(p), ",")) {
        p->pos++;
        tok_t *t = cur(p);
        if (t->k == T_BEND || t->k == T_VEND || is_name(t, "if") || is_op(t, ")"))
            break;
        jn_t *e;
        if ((rc = with_cond ? p_expr(p, &e) : p_or(p, &e)))
            return rc;
        if (vec_push(&p->t->ar, &items, e))
            return -ENOMEM;
    }
    jn_t *n;
    NEW(n, N_TUPLE, start);
    n->l = (jn_t **)items.p;
    n->nl = items.n;
    *out = n;
    return 0;
}

static int p_primary(parser_t *p, jn_t **out)
{
    tok_t *t = cur(p);
    jn_t *n;
    int rc;
    char b[64];
    switch (t->k) {
    case T_NAME:
        p->pos++;
        NEW(n, N_LIT, t);
        if (is_name(t, "true") || is_name(t, "True")) {
            n->v = vbool(1);
        } else if (is_name(t, "false") || is_name(t, "False")) {
            n->v = vbool(0);
        } else if (is_name(t, "none") || is_name(t, "None")) {
            n->v = V_NULL;
        } else {
            n->k = N_NAME;
            n->s = ar_strndup(&p->t->ar, t->p, t->n);
            n->n = t->n;
            if (!n->s || note_name(p, t->p, t->n))
                return -ENOMEM;
        }
        *out = n;
        return 0;
    case T_STR: {
        sb_t s = {0};
        NEW(n, N_LIT, t);
        while (cur(p)->k == T_STR) { /* adjacent literals concatenate */
            sb_put(&s, cur(p)->p, cur(p)->n);
            p->pos++;
        }
        if (s.err) {
            free(s.p);
            return -ENOMEM;
        }
        char *v = ar_strndup(&p->t->ar, s.p ? s.p : "", s.n);
        free(s.p);
        if (!v)
            return -ENOMEM;
        n->v = vstr(v, s.n);
        *out = n;
        return 0;
    }
    case T_INT:
    case T_FLOAT:
        p->pos++;
        NEW(n, N_LIT, t);
        n->v = t->num;
        *out = n;
        return 0;
    case T_OP:
        if (is_op(t, "(")) {
            p->pos++;
            if (is_op(cur(p), ")")) {
                p->pos++;
                NEW(n, N_TUPLE, t);
                *out = n;
                return 0;
            }
            if ((rc = p_tuple(p, out, 1)))
                return rc;
            return expect_op(p, ")");
        }
        if (is_op(t, "[")) {
            p->pos++;
            vec_t items = {0};
            while (!is_op(cur(p), "]")) {
                if (items.n && (rc = expect_op(p, ",")))
                    return rc;
                if (is_op(cur(p), "]"))
                    break;
                jn_t *e;
                if ((rc = p_expr(p, &e)))
                    return rc;
                if (vec_push(&p->t->ar, &items, e))
                    return -ENOMEM;
            }
            p->pos++;
            NEW(n, N_LIST, t);
            n->l = (jn_t **)items.p;
            n->nl = items.n;
            *out = n;
            return 0;
        }
        if (is_op(t, "{")) {
            p->pos++;
            vec_t ks = {0}, vs = {0};
            while (!is_op(cur(p), "}")) {
                if (ks.n && (rc = expect_op(p, ",")))
                    return rc;
                if (is_op(cur(p), "}"))
                    break;
                jn_t *k, *v;
                if ((rc = p_expr(p, &k)) || (rc = expect_op(p, ":")) || (rc = p_expr(p, &v)))
                    return rc;
                if (vec_push(&p->t->ar, &ks, k) || vec_push(&p->t->ar, &vs, v))
                    return -ENOMEM;
            }
            p->pos++;
            NEW(n, N_DICT, t);
            n->l = (jn_t **)ks.p;
            n->l2 = (jn_t **)vs.p;
            n->nl = n->nl2 = ks.n;
            *out = n;
            return 0;
        }
        /* fall through */
    default:
        return p_fail(p, t, "unexpected %s in an expression", tok_desc(t, b, sizeof b));
    }
}

static int p_postfix(parser_t *p, jn_t **n)
{
    int rc;
    for (;;) {
        tok_t *t = cur(p);
        if (is_op(t, ".")) {
            p->pos++;
            tok_t *a = cur(p);
            jn_t *x;
            if (a->k == T_NAME) {
                NEW(x, N_ATTR, a);
                x->s = ar_strndup(&p->t->ar, a->p, a->n);
                x->n = a->n;
            } else if (a->k == T_INT) {
                NEW(x, N_ITEM, a);
                NEW(x->b, N_LIT, a);
                x->b->v = a->num;
            } else {
                return p_fail(p, a, "expected an attribute name after '.'");
            }
            p->pos++;
            x->a = *n;
            *n = x;
        } else if (is_op(t, "[")) {
            p->pos++;
            jn_t *parts[3] = {NULL, NULL, NULL};
            int slice = 0, k = 0;
            for (;;) {
                tok_t *c = cur(p);
                if (is_op(c, "]"))
                    break;
                if (is_op(c, ":")) {
                    slice = 1;
                    if (++k > 2)
                        return p_fail(p, c, "too many ':' in a slice");
                    p->pos++;
                    continue;
                }
                if (parts[k])
                    return p_fail(p, c, "expected ']' or ':' in a subscript");
                if ((rc = p_expr(p, &parts[k])))
                    return rc;
            }
            p->pos++;
            jn_t *x;
            if (slice) {
                NEW(x, N_SLICE, t);
                x->b = parts[0];
                x->c = parts[1];
                x->d = parts[2];
            } else {
                if (!parts[0])
                    return p_fail(p, t, "empty subscript");
                NEW(x, N_ITEM, t);
                x->b = parts[0];
            }
            x->a = *n;
            *n = x;
        } else if (is_op(t, "(")) {
            p->pos++;
            jn_t *c;
            NEW(c, N_CALL, t);
            c->a = *n;
            if ((rc = p_args(p, c)))
                return rc;
            *n = c;
        } else {
            return 0;
        }
    }
}

/* ---------------------------------------------------------------- statements */

static int p_body(parser_t *p, const char *const *stops, vec_t *body, const char *opener,
                  const tok_t *open_tok);

static int expect_bend(parser_t *p)
{
    if (cur(p)->k != T_BEND) {
        char b[64];
        return p_fail(p, cur(p), "expected '%%}', got %s", tok_desc(cur(p), b, sizeof b));
    }
    p->pos++;
    return 0;
}

/* at {% NAME ...: consumes "{%", returns the name token */
static tok_t *stmt_name(parser_t *p)
{
    return &p->tk[p->pos + 1];
}

static int end_tag(parser_t *p, const char *name)
{
    /* at {% name %} */
    p->pos += 2;
    (void)name;
    return expect_bend(p);
}

static int p_target(parser_t *p, jn_t **out, int allow_attr)
{
    tok_t *t = cur(p);
    if (t->k != T_NAME)
        return p_fail(p, t, "expected a variable name");
    jn_t *n;
    NEW(n, N_NAME, t);
    n->s = ar_strndup(&p->t->ar, t->p, t->n);
    n->n = t->n;
    p->pos++;
    if (allow_attr && is_op(cur(p), ".") && p->tk[p->pos + 1].k == T_NAME) {
        jn_t *a;
        NEW(a, N_ATTR, &p->tk[p->pos + 1]);
        a->a = n;
        a->s = ar_strndup(&p->t->ar, p->tk[p->pos + 1].p, p->tk[p->pos + 1].n);
        a->n = p->tk[p->pos + 1].n;
        p->pos += 2;
        n = a;
    }
    if (is_op(cur(p), ",")) {
        vec_t items = {0};
        if (vec_push(&p->t->ar, &items, n))
            return -ENOMEM;
        while (is_op(cur(p), ",")) {
            p->pos++;
            tok_t *x = cur(p);
            if (x->k != T_NAME)
                break;
            jn_t *m;
            NEW(m, N_NAME, x);
            m->s = ar_strndup(&p->t->ar, x->p, x->n);
            m->n = x->n;
            p->pos++;
            if (vec_push(&p->t->ar, &items, m))
                return -ENOMEM;
        }
        jn_t *tu;
        NEW(tu, N_TUPLE, t);
        tu->l = (jn_t **)items.p;
        tu->nl = items.n;
        n = tu;
    }
    *out = n;
    return 0;
}

static int p_params(parser_t *p, jn_t *m)
{
    /* (a, b=1, ...) into names / l2 defaults (NULL: none) */
    vec_t names = {0}, defs = {0};
    int rc;
    if ((rc = expect_op(p, "(")))
        return rc;
    while (!is_op(cur(p), ")")) {
        if (names.n && (rc = expect_op(p, ",")))
            return rc;
        tok_t *t = cur(p);
        if (t->k != T_NAME)
            return p_fail(p, t, "expected a parameter name");
        p->pos++;
        jn_t *def = NULL;
        if (is_op(cur(p), "=")) {
            p->pos++;
            if ((rc = p_expr(p, &def)))
                return rc;
        }
        const char *nm = ar_strndup(&p->t->ar, t->p, t->n);
        if (!nm || vec_push(&p->t->ar, &names, (void *)nm) || vec_push(&p->t->ar, &defs, def))
            return -ENOMEM;
    }
    p->pos++;
    m->names = (const char **)names.p;
    m->nnames = names.n;
    m->l2 = (jn_t **)defs.p;
    m->nl2 = defs.n;
    return 0;
}

static int p_stmt(parser_t *p, vec_t *body)
{
    tok_t *open = cur(p);
    tok_t *nm = stmt_name(p);
    int rc;
    char b[64];
    if (nm->k != T_NAME)
        return p_fail(p, nm, "expected a tag name after '{%%', got %s", tok_desc(nm, b, sizeof b));
    p->pos += 2;
    jn_t *n;
    if (is_name(nm, "if")) {
        NEW(n, N_IF, nm);
        if ((rc = p_expr(p, &n->a)) || (rc = expect_bend(p)))
            return rc;
        jn_t *top = n;
        for (;;) {
            static const char *const stops[] = {"elif", "else", "endif", NULL};
            vec_t v = {0};
            if ((rc = p_body(p, stops, &v, "if", nm)))
                return rc;
            n->l = (jn_t **)v.p;
            n->nl = v.n;
            tok_t *st = stmt_name(p);
            if (is_name(st, "elif")) {
                p->pos += 2;
                jn_t *e;
                NEW(e, N_IF, st);
                if ((rc = p_expr(p, &e->a)) || (rc = expect_bend(p)))
                    return rc;
                jn_t **l = ar_alloc(&p->t->ar, sizeof *l);
                if (!l)
                    return -ENOMEM;
                l[0] = e;
                n->l2 = l;
                n->nl2 = 1;
                n = e;
                continue;
            }
            if (is_name(st, "else")) {
                p->pos += 2;
                if ((rc = expect_bend(p)))
                    return rc;
                static const char *const stops2[] = {"endif", NULL};
                vec_t e = {0};
                if ((rc = p_body(p, stops2, &e, "if", nm)))
                    return rc;
                n->l2 = (jn_t **)e.p;
                n->nl2 = e.n;
            }
            if ((rc = end_tag(p, "endif")))
                return rc;
            break;
        }
        n = top;
    } else if (is_name(nm, "for")) {
        NEW(n, N_FOR, nm);
        if ((rc = p_target(p, &n->a, 0)))
            return rc;
        if (!is_name(cur(p), "in"))
            return p_fail(p, cur(p), "expected 'in' in a for loop, got %s",
                          tok_desc(cur(p), b, sizeof b));
        p->pos++;
        if ((rc = p_tuple(p, &n->b, 0)))
            return rc;
        if (is_name(cur(p), "if")) {
            p->pos++;
            if ((rc = p_expr(p, &n->c)))
                return rc;
        }
        if (is_name(cur(p), "recursive"))
            return p_fail(p, cur(p), "recursive loops are not supported");
        if ((rc = expect_bend(p)))
            return rc;
        static const char *const stops[] = {"else", "endfor", NULL};
        vec_t v = {0};
        p->in_loop++;
        rc = p_body(p, stops, &v, "for", nm);
        p->in_loop--;
        if (rc)
            return rc;
        n->l = (jn_t **)v.p;
        n->nl = v.n;
        if (is_name(stmt_name(p), "else")) {
            p->pos += 2;
            if ((rc = expect_bend(p)))
                return rc;
            static const char *const stops2[] = {"endfor", NULL};
            vec_t e = {0};
            if ((rc = p_body(p, stops2, &e, "for", nm)))
                return rc;
            n->l2 = (jn_t **)e.p;
            n->nl2 = e.n;
        }
        if ((rc = end_tag(p, "endfor")))
            return rc;
    } else if (is_name(nm, "set")) {
        NEW(n, N_SET, nm);
        if ((rc = p_target(p, &n->a, 1)))
            return rc;
        if (is_op(cur(p), "=")) {
            p->pos++;
            if ((rc = p_tuple(p, &n->b, 1)) || (rc = expect_bend(p)))
                return rc;
        } else {
            n->k = N_SETBLOCK;
            if (n->a->k == N_TUPLE)
                return p_fail(p, nm, "a block set takes one name");
            /* optional filters: {% set x | trim %} */
            jn_t *hole;
            NEW(hole, N_HOLE, cur(p));
            jn_t *f = hole;
            if ((rc = p_filter_tail(p, &f)))
                return rc;
            n->b = f == hole ? NULL : f;
            n->c = hole;
            if ((rc = expect_bend(p)))
                return rc;
            static const char *const stops[] = {"endset", NULL};
            vec_t v = {0};
            if ((rc = p_body(p, stops, &v, "set", nm)))
                return rc;
            n->l = (jn_t **)v.p;
            n->nl = v.n;
            if ((rc = end_tag(p, "endset")))
                return rc;
        }
    } else if (is_name(nm, "macro")) {
        NEW(n, N_MACRO, nm);
        tok_t *mn = cur(p);
        if (mn->k != T_NAME)
            return p_fail(p, mn, "expected a macro name");
        n->s = ar_strndup(&p->t->ar, mn->p, mn->n);
        n->n = mn->n;
        p->pos++;
        if ((rc = p_params(p, n)) || (rc = expect_bend(p)))
            return rc;
        static const char *const stops[] = {"endmacro", NULL};
        vec_t v = {0};
        int saved = p->in_loop;
        p->in_loop = 0;
        rc = p_body(p, stops, &v, "macro", nm);
        p->in_loop = saved;
        if (rc)
            return rc;
        n->l = (jn_t **)v.p;
        n->nl = v.n;
        if ((rc = end_tag(p, "endmacro")))
            return rc;
    } else if (is_name(nm, "call")) {
        NEW(n, N_CALLBLOCK, nm);
        if (is_op(cur(p), "(")) {
            if ((rc = p_params(p, n)))
                return rc;
        }
        if ((rc = p_expr(p, &n->a)))
            return rc;
        if (n->a->k != N_CALL)
            return p_fail(p, nm, "a call block needs a macro call");
        if ((rc = expect_bend(p)))
            return rc;
        static const char *const stops[] = {"endcall", NULL};
        vec_t v = {0};
        if ((rc = p_body(p, stops, &v, "call", nm)))
            return rc;
        n->l = (jn_t **)v.p;
        n->nl = v.n;
        if ((rc = end_tag(p, "endcall")))
            return rc;
    } else if (is_name(nm, "filter")) {
        NEW(n, N_FILTERBLOCK, nm);
        jn_t *hole;
        NEW(hole, N_HOLE, cur(p));
        /* the first filter has no '|' before it */
        p->pos--;
        tok_t saved = p->tk[p->pos];
        p->tk[p->pos] = (tok_t){.k = T_OP, .off = saved.off, .p = "|", .n = 1};
        jn_t *f = hole;
        rc = p_filter_tail(p, &f);
        if (rc)
            return rc;
        if (f == hole)
            return p_fail(p, nm, "expected a filter name");
        n->b = f;
        n->c = hole;
        if ((rc = expect_bend(p)))
            return rc;
        static const char *const stops[] = {"endfilter", NULL};
        vec_t v = {0};
        if ((rc = p_body(p, stops, &v, "filter", nm)))
            return rc;
        n->l = (jn_t **)v.p;
        n->nl = v.n;
        if ((rc = end_tag(p, "endfilter")))
            return rc;
    } else if (is_name(nm, "break") || is_name(nm, "continue")) {
        if (!p->in_loop)
            return p_fail(p, nm, "'%.*s' outside a for loop", (int)nm->n, nm->p);
        NEW(n, is_name(nm, "break") ? N_BREAK : N_CONTINUE, nm);
        if ((rc = expect_bend(p)))
            return rc;
    } else if (is_name(nm, "generation")) {
        /* transformers' {% generation %} marks the assistant's text; it renders as is */
        if ((rc = expect_bend(p)))
            return rc;
        static const char *const stops[] = {"endgeneration", NULL};
        if ((rc = p_body(p, stops, body, "generation", nm)))
            return rc;
        return end_tag(p, "endgeneration");
    } else if (is_name(nm, "include") || is_name(nm, "import") || is_name(nm, "from") ||
               is_name(nm, "extends") || is_name(nm, "block")) {
        return p_fail(p, nm, "'%.*s' is not supported in a chat template", (int)nm->n, nm->p);
    } else {
        (void)open;
        return p_fail(p, nm, "unknown tag '%.*s'", (int)nm->n, nm->p);
    }
    return vec_push(&p->t->ar, body, n) ? -ENOMEM : 0;
}

static int p_body(parser_t *p, const char *const *stops, vec_t *body, const char *opener,
                  const tok_t *open_tok)
{
    int rc;
    if (++p->depth > 200)
        return p_fail(p, cur(p), "blocks nested too deeply");
    for (;;) {
        tok_t *t = cur(p);
        jn_t *n;
        switch (t->k) {
        case T_EOF:
            if (stops) {
                int line, col;
                line_col(p->t->src, open_tok->off, &line, &col);
                size_t last = 0;
                while (stops[last + 1])
                    last++;
                return p_fail(p, t, "unexpected end of template: the '%s' of line %d column "
                              "%d is not closed (expected '%s')", opener, line, col,
                              stops[last]);
            }
            p->depth--;
            return 0;
        case T_TEXT:
            NEW(n, N_TEXT, t);
            n->s = t->p;
            n->n = t->n;
            p->pos++;
            if (vec_push(&p->t->ar, body, n))
                return -ENOMEM;
            break;
        case T_VBEGIN: {
            NEW(n, N_OUT, t);
            p->pos++;
            if ((rc = p_tuple(p, &n->a, 1)))
                return rc;
            if (cur(p)->k != T_VEND) {
                char b[64];
                return p_fail(p, cur(p), "expected '}}', got %s", tok_desc(cur(p), b, sizeof b));
            }
            p->pos++;
            if (vec_push(&p->t->ar, body, n))
                return -ENOMEM;
            break;
        }
        case T_BBEGIN: {
            tok_t *nm = stmt_name(p);
            if (nm->k == T_NAME && stops)
                for (size_t i = 0; stops[i]; i++)
                    if (is_name(nm, stops[i])) {
                        p->depth--;
                        return 0;
                    }
            if (nm->k == T_NAME && ((nm->n > 3 && memcmp(nm->p, "end", 3) == 0) ||
                                    is_name(nm, "else") || is_name(nm, "elif")))
                return p_fail(p, nm, "unexpected '%.*s'%s%s%s", (int)nm->n, nm->p,
                              stops ? " (expected '" : "", stops ? stops[0] : "",
                              stops ? "')" : "");
            if ((rc = p_stmt(p, body)))
                return rc;
            break;
        }
        default: {
            char b[64];
            return p_fail(p, t, "unexpected %s", tok_desc(t, b, sizeof b));
        }
        }
    }
}

/* ---------------------------------------------------------------- evaluation */

enum { F_BUILTIN, F_METHOD, F_MACRO, F_CALLER };

typedef struct frame {
    struct frame *parent;
    size_t n, cap;
    const char **names;
    jv_t *vals;
} frame_t;

typedef struct jfunc {
    int kind;
    const char *name; /* builtin or method name */
    jv_t self;        /* F_METHOD */
    const jn_t *m;    /* F_MACRO, F_CALLER: the node with params (names, l2) and body (l) */
    frame_t *closure;
} jfunc_t;

typedef struct jloop {
    size_t i, n;
    const jlist_t *items;
} jloop_t;

typedef struct rctx {
    const jinja_t *t;
    arena_t ar;
    sb_t *out;
    jinja_limits_t lim;
    size_t steps, depth;
    char *err;
    size_t errlen;
    int failed;
    frame_t *root;
    jv_t hole;
    jfunc_t *caller_pending;
} rctx_t;

typedef struct args {
    jv_t *pos;
    size_t npos;
    const char **kn;
    jv_t *kv;
    size_t nkw;
} args_t;

enum { JX_BREAK = 1, JX_CONTINUE = 2 };

static int r_fail(rctx_t *c, const jn_t *at, const char *fmt, ...)
{
    if (c->failed)
        return -EINVAL;
    c->failed = 1;
    int k = 0;
    if (at) {
        int line, col;
        line_col(c->t->src, at->off, &line, &col);
        k = snprintf(c->err, c->errlen, "line %d column %d: ", line, col);
    }
    if (k >= 0 && (size_t)k < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static int r_oom(rctx_t *c, const jn_t *at)
{
    if (c->ar.over || c->failed) {
        if (!c->failed)
            r_fail(c, at, "the template used more than %zu bytes of memory", c->lim.max_memory);
        return FD_ERANGE;
    }
    c->failed = 1;
    snprintf(c->err, c->errlen, "out of memory rendering the template");
    return -ENOMEM;
}

static int sb_fail(rctx_t *c, const jn_t *at, int err)
{
    if (err == FD_ERANGE) {
        r_fail(c, at, "the template's output exceeds %zu bytes", c->lim.max_output);
        return FD_ERANGE;
    }
    c->ar.over = 0;
    return r_oom(c, at);
}

static void *r_alloc(rctx_t *c, size_t n)
{
    return ar_alloc(&c->ar, n ? n : 1);
}

static jlist_t *new_list(rctx_t *c, size_t n)
{
    jlist_t *l = r_alloc(c, sizeof *l);
    if (!l)
        return NULL;
    l->n = n;
    l->v = r_alloc(c, (n ? n : 1) * sizeof *l->v);
    return l->v ? l : NULL;
}

static jdict_t *new_dict(rctx_t *c)
{
    jdict_t *d = r_alloc(c, sizeof *d);
    if (d)
        memset(d, 0, sizeof *d);
    return d;
}

/* a string value holding a copy of sb's text */
static int sb_value(rctx_t *c, const jn_t *at, sb_t *b, jv_t *out)
{
    if (b->err) {
        int rc = sb_fail(c, at, b->err);
        free(b->p);
        b->p = NULL;
        return rc;
    }
    char *s = ar_strndup(&c->ar, b->p ? b->p : "", b->n);
    size_t n = b->n;
    free(b->p);
    b->p = NULL;
    if (!s)
        return r_oom(c, at);
    *out = vstr(s, n);
    return 0;
}

static int to_str(rctx_t *c, const jn_t *at, const jv_t *v, jv_t *out)
{
    if (v->t == V_STR) {
        *out = *v;
        return 0;
    }
    sb_t b = {.limit = c->lim.max_output};
    put_str(&b, v, 0);
    return sb_value(c, at, &b, out);
}

static int frame_set(rctx_t *c, frame_t *f, const char *name, jv_t v)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0) {
            f->vals[i] = v;
            return 0;
        }
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        const char **nn = r_alloc(c, cap * sizeof *nn);
        jv_t *nv = r_alloc(c, cap * sizeof *nv);
        if (!nn || !nv)
            return r_oom(c, NULL);
        if (f->n) {
            memcpy(nn, f->names, f->n * sizeof *nn);
            memcpy(nv, f->vals, f->n * sizeof *nv);
        }
        f->names = nn;
        f->vals = nv;
        f->cap = cap;
    }
    f->names[f->n] = name;
    f->vals[f->n] = v;
    f->n++;
    return 0;
}

static const jv_t *frame_get(const frame_t *f, const char *name, size_t n)
{
    for (; f; f = f->parent)
        for (size_t i = f->n; i-- > 0;)
            if (strlen(f->names[i]) == n && memcmp(f->names[i], name, n) == 0)
                return &f->vals[i];
    return NULL;
}

static const char *const BUILTINS[] = {"range", "namespace", "dict", "raise_exception",
                                       "strftime_now", NULL};
static const char *const STR_METHODS[] = {
    "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "rsplit", "upper", "lower",
    "title", "capitalize", "replace", "format", "find", "rfind", "index", "count", "join",
    "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "splitlines",
    "removeprefix", "removesuffix", "swapcase", "center", NULL};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", "copy", NULL};
static const char *const LIST_METHODS[] = {"index", "count", "append", "pop", "insert",
                                           "extend", "remove", "sort", "reverse", "copy",
                                           NULL};

static int in_names(const char *const *names, const char *s, size_t n)
{
    for (size_t i = 0; names[i]; i++)
        if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0)
            return 1;
    return 0;
}

static int make_method(rctx_t *c, const jv_t *self, const char *name, jv_t *out)
{
    jfunc_t *f = r_alloc(c, sizeof *f);
    if (!f)
        return r_oom(c, NULL);
    *f = (jfunc_t){.kind = F_METHOD, .name = name, .self = *self};
    *out = (jv_t){.t = V_FUNC, .u.fn = f};
    return 0;
}

static const char *undef_why(rctx_t *c, const char *fmt, const char *a, size_t an,
                             const char *b, size_t bn)
{
    char tmp[256];
    snprintf(tmp, sizeof tmp, fmt, (int)an, a, (int)bn, b);
    return ar_strndup(&c->ar, tmp, strlen(tmp));
}

static int undef_err(rctx_t *c, const jn_t *at, const jv_t *v)
{
    return r_fail(c, at, "%s", v->x ? v->x : "a value is undefined");
}

static const char *obj_name(const jv_t *v)
{
    switch (v->t) {
    case V_DICT: return "dict object";
    case V_STR: return "str object";
    case V_LIST: return "list object";
    case V_INT: return "int object";
    case V_FLOAT: return "float object";
    case V_BOOL: return "bool object";
    case V_NONE: return "None";
    case V_NS: return "Namespace object";
    default: return "object";
    }
}

static int loop_attr(rctx_t *c, const jn_t *at, const jloop_t *lp, const char *name,
                     jv_t *out)
{
    if (!strcmp(name, "index"))
        *out = vint((long long)lp->i + 1);
    else if (!strcmp(name, "index0"))
        *out = vint((long long)lp->i);
    else if (!strcmp(name, "revindex"))
        *out = vint((long long)(lp->n - lp->i));
    else if (!strcmp(name, "revindex0"))
        *out = vint((long long)(lp->n - lp->i - 1));
    else if (!strcmp(name, "first"))
        *out = vbool(lp->i == 0);
    else if (!strcmp(name, "last"))
        *out = vbool(lp->i + 1 == lp->n);
    else if (!strcmp(name, "length"))
        *out = vint((long long)lp->n);
    else if (!strcmp(name, "depth"))
        *out = vint(1);
    else if (!strcmp(name, "depth0"))
        *out = vint(0);
    else if (!strcmp(name, "previtem"))
        *out = lp->i ? lp->items->v[lp->i - 1] : vundef("there is no previous item");
    else if (!strcmp(name, "nextitem"))
        *out = lp->i + 1 < lp->n ? lp->items->v[lp->i + 1] : vundef("there is no next item");
    else if (!strcmp(name, "cycle")) {
        jv_t self = {.t = V_LOOP, .u.lp = (jloop_t *)lp};
        return make_method(c, &self, "cycle", out);
    } else
        *out = vundef(undef_why(c, "'LoopContext' object has no attribute '%.*s'%.*s", name,
                                strlen(name), "", 0));
    (void)at;
    return 0;
}

/* obj.name (Jinja's getattr: the attribute first, then the item) */
static int get_attr(rctx_t *c, const jn_t *at, const jv_t *obj, const char *name, size_t n,
                    jv_t *out)
{
    const jv_t *v;
    switch (obj->t) {
    case V_UNDEF:
        return undef_err(c, at, obj);
    case V_DICT:
        if (in_names(DICT_METHODS, name, n))
            return make_method(c, obj, ar_strndup(&c->ar, name, n), out);
        if ((v = dict_get(obj->u.d, name, n))) {
            *out = *v;
            return 0;
        }
        break;
    case V_NS:
        if ((v = dict_get(obj->u.d, name, n))) {
            *out = *v;
            return 0;
        }
        break;
    case V_STR:
        if (in_names(STR_METHODS, name, n))
            return make_method(c, obj, ar_strndup(&c->ar, name, n), out);
        break;
    case V_LIST:
        if (in_names(LIST_METHODS, name, n))
            return make_method(c, obj, ar_strndup(&c->ar, name, n), out);
        break;
    case V_LOOP: {
        char tmp[32];
        if (n >= sizeof tmp)
            break;
        memcpy(tmp, name, n);
        tmp[n] = 0;
        return loop_attr(c, at, obj->u.lp, tmp, out);
    }
    default:
        break;
    }
    *out = vundef(undef_why(c, "'%.*s' has no attribute '%.*s'", obj_name(obj),
                            strlen(obj_name(obj)), name, n));
    return 0;
}

static int norm_index(long long i, size_t n, size_t *out)
{
    if (i < 0)
        i += (long long)n;
    if (i < 0 || (unsigned long long)i >= n)
        return -1;
    *out = (size_t)i;
    return 0;
}

/* obj[key] (the item first, then the attribute) */
static int get_item(rctx_t *c, const jn_t *at, const jv_t *obj, const jv_t *key, jv_t *out)
{
    const jv_t *v;
    size_t i;
    switch (obj->t) {
    case V_UNDEF:
        return undef_err(c, at, obj);
    case V_DICT:
    case V_NS:
        if ((v = dict_getv(obj->u.d, key))) {
            *out = *v;
            return 0;
        }
        break;
    case V_LIST:
        if ((key->t == V_INT || key->t == V_BOOL) && !norm_index(num_i(key), obj->u.l->n, &i)) {
            *out = obj->u.l->v[i];
            return 0;
        }
        break;
    case V_STR:
        if (key->t == V_INT || key->t == V_BOOL) {
            size_t cnt = u8_count(obj->u.s.p, obj->u.s.n);
            if (!norm_index(num_i(key), cnt, &i)) {
                size_t a = u8_off(obj->u.s.p, obj->u.s.n, i);
                size_t b = u8_off(obj->u.s.p, obj->u.s.n, i + 1);
                *out = vstr(obj->u.s.p + a, b - a);
                return 0;
            }
        }
        break;
    default:
        break;
    }
    if (key->t == V_STR)
        return get_attr(c, at, obj, key->u.s.p, key->u.s.n, out);
    sb_t b = {0};
    put_str(&b, key, 1);
    *out = vundef(undef_why(c, "'%.*s' has no element %.*s", obj_name(obj),
                            strlen(obj_name(obj)), b.p ? b.p : "", b.n));
    free(b.p);
    return 0;
}

/* Python's slice indices for a sequence of n */
static int slice_idx(rctx_t *c, const jn_t *at, const jv_t *sv, const jv_t *ev, const jv_t *st,
                     size_t n, long long *start, long long *step, size_t *count)
{
    long long step_ = 1;
    if (st && st->t != V_NONE && st->t != V_UNDEF) {
        if (st->t != V_INT)
            return r_fail(c, at, "slice indices must be integers");
        step_ = st->u.i;
        if (!step_)
            return r_fail(c, at, "slice step cannot be zero");
    }
    long long N = (long long)n, lo, hi;
    if (step_ > 0) {
        lo = 0;
        hi = N;
    } else {
        lo = -1;
        hi = N - 1;
    }
    long long s = step_ > 0 ? lo : hi, e = step_ > 0 ? hi : lo;
    if (sv && sv->t != V_NONE && sv->t != V_UNDEF) {
        if (sv->t != V_INT && sv->t != V_BOOL)
            return r_fail(c, at, "slice indices must be integers");
        s = num_i(sv);
        if (s < 0)
            s = s + N < lo ? lo : s + N;
        else if (s > hi)
            s = hi;
    }
    if (ev && ev->t != V_NONE && ev->t != V_UNDEF) {
        if (ev->t != V_INT && ev->t != V_BOOL)
            return r_fail(c, at, "slice indices must be integers");
        e = num_i(ev);
        if (e < 0)
            e = e + N < lo ? lo : e + N;
        else if (e > hi)
            e = hi;
    }
    long long k = 0;
    if (step_ > 0 && e > s)
        k = (e - s + step_ - 1) / step_;
    else if (step_ < 0 && s > e)
        k = (s - e + (-step_) - 1) / (-step_);
    *start = s;
    *step = step_;
    *count = (size_t)k;
    return 0;
}

static int do_slice(rctx_t *c, const jn_t *at, const jv_t *obj, const jv_t *sv, const jv_t *ev,
                    const jv_t *st, jv_t *out)
{
    long long s, step;
    size_t k;
    if (obj->t == V_LIST) {
        if (slice_idx(c, at, sv, ev, st, obj->u.l->n, &s, &step, &k))
            return -EINVAL;
        jlist_t *l = new_list(c, k);
        if (!l)
            return r_oom(c, at);
        for (size_t i = 0; i < k; i++)
            l->v[i] = obj->u.l->v[s + (long long)i * step];
        *out = vlist(l);
        return 0;
    }
    if (obj->t == V_STR) {
        const char *p = obj->u.s.p;
        size_t n = obj->u.s.n, cnt = u8_count(p, n);
        if (slice_idx(c, at, sv, ev, st, cnt, &s, &step, &k))
            return -EINVAL;
        if (step == 1) {
            size_t a = u8_off(p, n, (size_t)s), b = u8_off(p, n, (size_t)s + k);
            *out = vstr(p + a, b - a);
            return 0;
        }
        sb_t b = {.limit = c->lim.max_output};
        for (size_t i = 0; i < k; i++) {
            size_t ci = (size_t)(s + (long long)i * step);
            size_t x = u8_off(p, n, ci), y = u8_off(p, n, ci + 1);
            sb_put(&b, p + x, y - x);
        }
        return sb_value(c, at, &b, out);
    }
    if (obj->t == V_UNDEF)
        return undef_err(c, at, obj);
    return r_fail(c, at, "'%s' object is not subscriptable", type_name(obj));
}

/* the items a for loop, a filter or "in" walks: list items, dict keys, string characters */
static int iter_list(rctx_t *c, const jn_t *at, const jv_t *v, jlist_t **out)
{
    static jlist_t empty = {0, NULL};
    switch (v->t) {
    case V_LIST:
        *out = v->u.l;
        return 0;
    case V_UNDEF:
        *out = &empty;
        return 0;
    case V_DICT: {
        jlist_t *l = new_list(c, v->u.d->n);
        if (!l)
            return r_oom(c, at);
        for (size_t i = 0; i < v->u.d->n; i++)
            l->v[i] = v->u.d->k[i];
        *out = l;
        return 0;
    }
    case V_STR: {
        size_t cnt = u8_count(v->u.s.p, v->u.s.n);
        jlist_t *l = new_list(c, cnt);
        if (!l)
            return r_oom(c, at);
        size_t off = 0;
        for (size_t i = 0; i < cnt; i++) {
            size_t e = off + 1;
            while (e < v->u.s.n && ((unsigned char)v->u.s.p[e] & 0xC0) == 0x80)
                e++;
            l->v[i] = vstr(v->u.s.p + off, e - off);
            off = e;
        }
        *out = l;
        return 0;
    }
    default:
        return r_fail(c, at, "'%s' object is not iterable", type_name(v));
    }
}

static int vlen(rctx_t *c, const jn_t *at, const jv_t *v, size_t *n)
{
    switch (v->t) {
    case V_STR:
        *n = u8_count(v->u.s.p, v->u.s.n);
        return 0;
    case V_LIST:
        *n = v->u.l->n;
        return 0;
    case V_DICT:
    case V_NS:
        *n = v->u.d->n;
        return 0;
    case V_UNDEF:
        *n = 0;
        return 0;
    default:
        return r_fail(c, at, "object of type '%s' has no len()", type_name(v));
    }
}

static int contains(rctx_t *c, const jn_t *at, const jv_t *hay, const jv_t *x, int *out)
{
    if (hay->t == V_STR) {
        if (x->t != V_STR)
            return r_fail(c, at, "'in <string>' requires string as left operand, not %s",
                          type_name(x));
        if (!x->u.s.n) {
            *out = 1;
            return 0;
        }
        *out = 0;
        for (size_t i = 0; i + x->u.s.n <= hay->u.s.n; i++)
            if (memcmp(hay->u.s.p + i, x->u.s.p, x->u.s.n) == 0) {
                *out = 1;
                break;
            }
        return 0;
    }
    if (hay->t == V_DICT || hay->t == V_NS) {
        *out = dict_getv(hay->u.d, x) != NULL;
        return 0;
    }
    jlist_t *l;
    if (hay->t != V_LIST && hay->t != V_UNDEF)
        return r_fail(c, at, "argument of type '%s' is not iterable", type_name(hay));
    if (iter_list(c, at, hay, &l))
        return -EINVAL;
    *out = 0;
    for (size_t i = 0; i < l->n; i++)
        if (veq(&l->v[i], x)) {
            *out = 1;
            break;
        }
    return 0;
}

/* lower-case ASCII copy (sort/unique/dictsort compare strings case-insensitively) */
static int ci_key(rctx_t *c, const jv_t *v, jv_t *out)
{
    if (v->t != V_STR) {
        *out = *v;
        return 0;
    }
    char *s = r_alloc(c, v->u.s.n + 1);
    if (!s)
        return r_oom(c, NULL);
    for (size_t i = 0; i < v->u.s.n; i++)
        s[i] = (char)tolower((unsigned char)v->u.s.p[i]);
    *out = vstr(s, v->u.s.n);
    return 0;
}

/* Python's ordering: numbers with numbers, strings with strings, lists element-wise */
static int vcmp(rctx_t *c, const jn_t *at, const jv_t *a, const jv_t *b, const char *op,
                int *out)
{
    if (is_num(a) && is_num(b)) {
        if (a->t != V_FLOAT && b->t != V_FLOAT && !a->x && !b->x) {
            long long x = num_i(a), y = num_i(b);
            *out = x < y ? -1 : x > y;
        } else {
            double x = num_f(a), y = num_f(b);
            *out = x < y ? -1 : x > y;
        }
        return 0;
    }
    if (a->t == V_STR && b->t == V_STR) {
        size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int r = n ? memcmp(a->u.s.p, b->u.s.p, n) : 0;
        *out = r ? (r < 0 ? -1 : 1) : (a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n);
        return 0;
    }
    if (a->t == V_LIST && b->t == V_LIST) {
        for (size_t i = 0; i < a->u.l->n && i < b->u.l->n; i++) {
            if (veq(&a->u.l->v[i], &b->u.l->v[i]))
                continue;
            return vcmp(c, at, &a->u.l->v[i], &b->u.l->v[i], op, out);
        }
        *out = a->u.l->n < b->u.l->n ? -1 : a->u.l->n > b->u.l->n;
        return 0;
    }
    if (a->t == V_UNDEF)
        return undef_err(c, at, a);
    if (b->t == V_UNDEF)
        return undef_err(c, at, b);
    return r_fail(c, at, "'%s' not supported between instances of '%s' and '%s'", op,
                  type_name(a), type_name(b));
}

static int eval(rctx_t *c, const jn_t *n, frame_t *f, jv_t *out);
static int exec_body(rctx_t *c, jn_t *const *l, size_t n, frame_t *f);
static int call_value(rctx_t *c, const jn_t *at, const jv_t *fn, args_t *a, frame_t *f,
                      jv_t *out);
static int apply_filter(rctx_t *c, const jn_t *at, const char *name, const jv_t *v, args_t *a,
                        frame_t *f, jv_t *out);
static int apply_test(rctx_t *c, const jn_t *at, const char *name, const jv_t *v, args_t *a,
                      frame_t *f, int *out);

static int binop(rctx_t *c, const jn_t *at, int op, const jv_t *a, const jv_t *b, jv_t *out)
{
    static const char *const sym[] = {"", "+", "-", "*", "/", "//", "%", "**", "~"};
    if (op == OP_CAT) {
        jv_t x, y;
        if (to_str(c, at, a, &x) || to_str(c, at, b, &y))
            return -EINVAL;
        char *s = r_alloc(c, x.u.s.n + y.u.s.n + 1);
        if (!s)
            return r_oom(c, at);
        memcpy(s, x.u.s.p, x.u.s.n);
        memcpy(s + x.u.s.n, y.u.s.p, y.u.s.n);
        *out = vstr(s, x.u.s.n + y.u.s.n);
        return 0;
    }
    if (a->t == V_UNDEF)
        return undef_err(c, at, a);
    if (b->t == V_UNDEF)
        return undef_err(c, at, b);
    if (is_num(a) && is_num(b)) {
        int fl = a->t == V_FLOAT || b->t == V_FLOAT || a->x || b->x;
        long long x = num_i(a), y = num_i(b), r;
        double fx = num_f(a), fy = num_f(b);
        switch (op) {
        case OP_ADD:
            if (!fl && !__builtin_add_overflow(x, y, &r)) {
                *out = vint(r);
                return 0;
            }
            *out = vfloat(fx + fy);
            return 0;
        case OP_SUB:
            if (!fl && !__builtin_sub_overflow(x, y, &r)) {
                *out = vint(r);
                return 0;
            }
            *out = vfloat(fx - fy);
            return 0;
        case OP_MUL:
            if (!fl && !__builtin_mul_overflow(x, y, &r)) {
                *out = vint(r);
                return 0;
            }
            *out = vfloat(fx * fy);
            return 0;
        case OP_DIV:
            if (fy == 0)
                return r_fail(c, at, "division by zero");
            *out = vfloat(fx / fy);
            return 0;
        case OP_FDIV:
        case OP_MOD:
            if (fy == 0)
                return r_fail(c, at, "%s by zero", op == OP_MOD ? "modulo" : "integer division");
            if (!fl) {
                long long q = x / y, m = x % y;
                if (m && ((m < 0) != (y < 0))) {
                    q--;
                    m += y;
                }
                *out = vint(op == OP_FDIV ? q : m);
            } else {
                double q = floor(fx / fy), m = fmod(fx, fy);
                if (m && ((m < 0) != (fy < 0)))
                    m += fy;
                *out = vfloat(op == OP_FDIV ? q : m);
            }
            return 0;
        case OP_POW:
            if (!fl && y >= 0) {
                long long acc = 1;
                int ovf = 0;
                for (long long k = 0; k < y && !ovf; k++)
                    ovf = __builtin_mul_overflow(acc, x, &acc);
                if (!ovf) {
                    *out = vint(acc);
                    return 0;
                }
            }
            *out = vfloat(pow(fx, fy));
            return 0;
        }
    }
    if (op == OP_ADD && a->t == V_STR && b->t == V_STR)
        return binop(c, at, OP_CAT, a, b, out);
    if (op == OP_ADD && a->t == V_LIST && b->t == V_LIST) {
        jlist_t *l = new_list(c, a->u.l->n + b->u.l->n);
        if (!l)
            return r_oom(c, at);
        if (a->u.l->n)
            memcpy(l->v, a->u.l->v, a->u.l->n * sizeof *l->v);
        if (b->u.l->n)
            memcpy(l->v + a->u.l->n, b->u.l->v, b->u.l->n * sizeof *l->v);
        *out = vlist(l);
        return 0;
    }
    if (op == OP_MUL &&
        (((a->t == V_STR || a->t == V_LIST) && (b->t == V_INT || b->t == V_BOOL)) ||
         ((b->t == V_STR || b->t == V_LIST) && (a->t == V_INT || a->t == V_BOOL)))) {
        const jv_t *s = a->t == V_STR || a->t == V_LIST ? a : b;
        long long k = num_i(s == a ? b : a);
        if (k < 0)
            k = 0;
        if (s->t == V_STR) {
            sb_t sb = {.limit = c->lim.max_output};
            for (long long i = 0; i < k && !sb.err; i++)
                sb_put(&sb, s->u.s.p, s->u.s.n);
            return sb_value(c, at, &sb, out);
        }
        if ((unsigned long long)k * s->u.l->n > c->lim.max_output)
            return r_fail(c, at, "list repetition too large");
        jlist_t *l = new_list(c, (size_t)k * s->u.l->n);
        if (!l)
            return r_oom(c, at);
        for (long long i = 0; i < k; i++)
            memcpy(l->v + (size_t)i * s->u.l->n, s->u.l->v, s->u.l->n * sizeof *l->v);
        *out = vlist(l);
        return 0;
    }
    if (op == OP_MOD && a->t == V_STR) {
        args_t fa = {0};
        jv_t one = *b;
        if (b->t == V_LIST) {
            fa.pos = b->u.l->v;
            fa.npos = b->u.l->n;
        } else {
            fa.pos = &one;
            fa.npos = 1;
        }
        return apply_filter(c, at, "format", a, &fa, NULL, out);
    }
    return r_fail(c, at, "unsupported operand type(s) for %s: '%s' and '%s'", sym[op],
                  type_name(a), type_name(b));
}

static int compare(rctx_t *c, const jn_t *at, int op, const jv_t *a, const jv_t *b, int *r)
{
    int k;
    switch (op) {
    case OP_EQ:
        *r = veq(a, b);
        return 0;
    case OP_NE:
        *r = !veq(a, b);
        return 0;
    case OP_IN:
    case OP_NOTIN:
        if (contains(c, at, b, a, r))
            return -EINVAL;
        if (op == OP_NOTIN)
            *r = !*r;
        return 0;
    default: {
        const char *sym = op == OP_LT ? "<" : op == OP_LE ? "<=" : op == OP_GT ? ">" : ">=";
        if (vcmp(c, at, a, b, sym, &k))
            return -EINVAL;
        *r = op == OP_LT ? k < 0 : op == OP_LE ? k <= 0 : op == OP_GT ? k > 0 : k >= 0;
        return 0;
    }
    }
}

static int eval_args(rctx_t *c, const jn_t *n, frame_t *f, args_t *a)
{
    memset(a, 0, sizeof *a);
    if (n->nl) {
        a->pos = r_alloc(c, n->nl * sizeof *a->pos);
        if (!a->pos)
            return r_oom(c, n);
        for (size_t i = 0; i < n->nl; i++)
            if (eval(c, n->l[i], f, &a->pos[i]))
                return -EINVAL;
        a->npos = n->nl;
    }
    if (n->nl2) {
        a->kv = r_alloc(c, n->nl2 * sizeof *a->kv);
        if (!a->kv)
            return r_oom(c, n);
        for (size_t i = 0; i < n->nl2; i++)
            if (eval(c, n->l2[i], f, &a->kv[i]))
                return -EINVAL;
        a->kn = n->names;
        a->nkw = n->nl2;
    }
    return 0;
}

/* argument idx (positional) or name (keyword); NULL when not given */
static const jv_t *arg(const args_t *a, size_t idx, const char *name)
{
    if (idx < a->npos)
        return &a->pos[idx];
    for (size_t i = 0; name && i < a->nkw; i++)
        if (strcmp(a->kn[i], name) == 0)
            return &a->kv[i];
    return NULL;
}

static int eval(rctx_t *c, const jn_t *n, frame_t *f, jv_t *out)
{
    jv_t a, b;
    int rc;
    switch (n->k) {
    case N_LIT:
        *out = n->v;
        return 0;
    case N_HOLE:
        *out = c->hole;
        return 0;
    case N_NAME: {
        const jv_t *v = frame_get(f, n->s, n->n);
        if (v) {
            *out = *v;
            return 0;
        }
        if (in_names(BUILTINS, n->s, n->n)) {
            jfunc_t *fn = r_alloc(c, sizeof *fn);
            if (!fn)
                return r_oom(c, n);
            *fn = (jfunc_t){.kind = F_BUILTIN, .name = n->s};
            *out = (jv_t){.t = V_FUNC, .u.fn = fn};
            return 0;
        }
        *out = vundef(undef_why(c, "'%.*s' is undefined%.*s", n->s, n->n, "", 0));
        return 0;
    }
    case N_ATTR:
        if ((rc = eval(c, n->a, f, &a)))
            return rc;
        return get_attr(c, n, &a, n->s, n->n, out);
    case N_ITEM:
        if ((rc = eval(c, n->a, f, &a)) || (rc = eval(c, n->b, f, &b)))
            return rc;
        return get_item(c, n, &a, &b, out);
    case N_SLICE: {
        jv_t s = V_NULL, e = V_NULL, st = V_NULL;
        if ((rc = eval(c, n->a, f, &a)) || (n->b && (rc = eval(c, n->b, f, &s))) ||
            (n->c && (rc = eval(c, n->c, f, &e))) || (n->d && (rc = eval(c, n->d, f, &st))))
            return rc;
        return do_slice(c, n, &a, &s, &e, &st, out);
    }
    case N_CALL: {
        jfunc_t *caller = c->caller_pending;
        c->caller_pending = NULL;
        args_t args;
        if ((rc = eval(c, n->a, f, &a)) || (rc = eval_args(c, n, f, &args)))
            return rc;
        if (caller) {
            jv_t cv = {.t = V_FUNC, .u.fn = caller};
            jv_t *kv = r_alloc(c, (args.nkw + 1) * sizeof *kv);
            const char **kn = r_alloc(c, (args.nkw + 1) * sizeof *kn);
            if (!kv || !kn)
                return r_oom(c, n);
            if (args.nkw) {
                memcpy(kv, args.kv, args.nkw * sizeof *kv);
                memcpy(kn, args.kn, args.nkw * sizeof *kn);
            }
            kv[args.nkw] = cv;
            kn[args.nkw] = "caller";
            args.kv = kv;
            args.kn = kn;
            args.nkw++;
        }
        return call_value(c, n, &a, &args, f, out);
    }
    case N_FILTER: {
        args_t args;
        if ((rc = eval(c, n->a, f, &a)) || (rc = eval_args(c, n, f, &args)))
            return rc;
        return apply_filter(c, n, n->s, &a, &args, f, out);
    }
    case N_TEST: {
        args_t args;
        int r;
        if ((rc = eval(c, n->a, f, &a)) || (rc = eval_args(c, n, f, &args)))
            return rc;
        if ((rc = apply_test(c, n, n->s, &a, &args, f, &r)))
            return rc;
        *out = vbool(n->op ? !r : r);
        return 0;
    }
    case N_BIN:
        if ((rc = eval(c, n->a, f, &a)) || (rc = eval(c, n->b, f, &b)))
            return rc;
        return binop(c, n, n->op, &a, &b, out);
    case N_NEG:
    case N_POS:
        if ((rc = eval(c, n->a, f, &a)))
            return rc;
        if (a.t == V_INT && !a.x) {
            *out = vint(n->k == N_NEG ? -a.u.i : a.u.i);
            return 0;
        }
        if (a.t == V_FLOAT || a.t == V_BOOL || a.t == V_INT) {
            *out = a.t == V_BOOL ? vint(n->k == N_NEG ? -a.u.b : a.u.b)
                                 : vfloat(n->k == N_NEG ? -num_f(&a) : num_f(&a));
            return 0;
        }
        if (a.t == V_UNDEF)
            return undef_err(c, n, &a);
        return r_fail(c, n, "bad operand type for unary %c: '%s'", n->k == N_NEG ? '-' : '+',
                      type_name(&a));
    case N_NOT:
        if ((rc = eval(c, n->a, f, &a)))
            return rc;
        *out = vbool(!truthy(&a));
        return 0;
    case N_AND:
    case N_OR:
        if ((rc = eval(c, n->a, f, &a)))
            return rc;
        if (truthy(&a) == (n->k == N_OR)) {
            *out = a;
            return 0;
        }
        return eval(c, n->b, f, out);
    case N_COND:
        if ((rc = eval(c, n->b, f, &b)))
            return rc;
        if (truthy(&b))
            return eval(c, n->a, f, out);
        if (n->c)
            return eval(c, n->c, f, out);
        *out = vundef("the inline if expression has no else");
        return 0;
    case N_LIST:
    case N_TUPLE: {
        jlist_t *l = new_list(c, n->nl);
        if (!l)
            return r_oom(c, n);
        for (size_t i = 0; i < n->nl; i++)
            if ((rc = eval(c, n->l[i], f, &l->v[i])))
                return rc;
        *out = n->k == N_TUPLE ? vtuple(l) : vlist(l);
        return 0;
    }
    case N_DICT: {
        jdict_t *d = new_dict(c);
        if (!d)
            return r_oom(c, n);
        for (size_t i = 0; i < n->nl; i++) {
            if ((rc = eval(c, n->l[i], f, &a)) || (rc = eval(c, n->l2[i], f, &b)))
                return rc;
            if (dict_set(&c->ar, d, a, b))
                return r_oom(c, n);
        }
        *out = (jv_t){.t = V_DICT, .u.d = d};
        return 0;
    }
    case N_CMP: {
        if ((rc = eval(c, n->a, f, &a)))
            return rc;
        for (size_t i = 0; i < n->nl; i++) {
            int r;
            if ((rc = eval(c, n->l[i], f, &b)) || (rc = compare(c, n, n->ops[i], &a, &b, &r)))
                return rc;
            if (!r) {
                *out = vbool(0);
                return 0;
            }
            a = b;
        }
        *out = vbool(1);
        return 0;
    }
    default:
        return r_fail(c, n, "internal error: node %d is not an expression", n->k);
    }
}

/* ---------------------------------------------------------------- calls */

static int step(rctx_t *c, const jn_t *at)
{
    if (++c->steps > c->lim.max_steps) {
        r_fail(c, at, "the template ran more than %zu loop iterations and calls",
               c->lim.max_steps);
        return FD_ERANGE;
    }
    return 0;
}

/* runs the body of a macro or a call block with its parameters bound */
static int call_macro(rctx_t *c, const jn_t *at, const jfunc_t *fn, args_t *a, jv_t *out)
{
    const jn_t *m = fn->m;
    int rc;
    if ((rc = step(c, at)))
        return rc;
    if (c->depth >= c->lim.max_depth) {
        r_fail(c, at, "macro calls nested more than %zu deep", c->lim.max_depth);
        return FD_ERANGE;
    }
    frame_t fr = {.parent = fn->closure};
    size_t used_pos = a->npos < m->nnames ? a->npos : m->nnames;
    for (size_t i = 0; i < m->nnames; i++) {
        jv_t v;
        const jv_t *given = i < a->npos ? &a->pos[i] : NULL;
        for (size_t k = 0; !given && k < a->nkw; k++)
            if (strcmp(a->kn[k], m->names[i]) == 0)
                given = &a->kv[k];
        if (given)
            v = *given;
        else if (m->l2[i]) {
            if ((rc = eval(c, m->l2[i], &fr, &v)))
                return rc;
        } else
            v = vundef(undef_why(c, "parameter '%.*s' was not given%.*s", m->names[i],
                                 strlen(m->names[i]), "", 0));
        if ((rc = frame_set(c, &fr, m->names[i], v)))
            return rc;
    }
    jlist_t *va = new_list(c, a->npos - used_pos);
    jdict_t *kw = new_dict(c);
    if (!va || !kw)
        return r_oom(c, at);
    for (size_t i = used_pos; i < a->npos; i++)
        va->v[i - used_pos] = a->pos[i];
    for (size_t k = 0; k < a->nkw; k++) {
        size_t i;
        for (i = 0; i < m->nnames; i++)
            if (strcmp(a->kn[k], m->names[i]) == 0)
                break;
        if (i < m->nnames)
            continue;
        if (strcmp(a->kn[k], "caller") == 0) {
            if ((rc = frame_set(c, &fr, "caller", a->kv[k])))
                return rc;
            continue;
        }
        if (dict_set(&c->ar, kw, vstr(a->kn[k], strlen(a->kn[k])), a->kv[k]))
            return r_oom(c, at);
    }
    if ((rc = frame_set(c, &fr, "varargs", vtuple(va))) ||
        (rc = frame_set(c, &fr, "kwargs", (jv_t){.t = V_DICT, .u.d = kw})))
        return rc;
    sb_t b = {.limit = c->lim.max_output};
    sb_t *saved = c->out;
    c->out = &b;
    c->depth++;
    rc = exec_body(c, m->l, m->nl, &fr);
    c->depth--;
    c->out = saved;
    if (rc < 0) {
        free(b.p);
        return rc;
    }
    return sb_value(c, at, &b, out);
}

static int strftime_now(rctx_t *c, const jn_t *at, const jv_t *fmt, jv_t *out)
{
    if (!fmt || fmt->t != V_STR)
        return r_fail(c, at, "strftime_now() takes a format string");
    char f[256], buf[512];
    if (fmt->u.s.n >= sizeof f)
        return r_fail(c, at, "strftime_now(): format too long");
    memcpy(f, fmt->u.s.p, fmt->u.s.n);
    f[fmt->u.s.n] = 0;
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t k = strftime(buf, sizeof buf, f, &tm);
    char *s = ar_strndup(&c->ar, buf, k);
    if (!s)
        return r_oom(c, at);
    *out = vstr(s, k);
    return 0;
}

static int call_builtin(rctx_t *c, const jn_t *at, const char *name, args_t *a, jv_t *out)
{
    if (!strcmp(name, "range")) {
        long long start = 0, stop, stp = 1;
        for (size_t i = 0; i < a->npos; i++)
            if (a->pos[i].t != V_INT && a->pos[i].t != V_BOOL)
                return r_fail(c, at, "range() takes integers, not '%s'", type_name(&a->pos[i]));
        if (a->npos == 1)
            stop = num_i(&a->pos[0]);
        else if (a->npos == 2 || a->npos == 3) {
            start = num_i(&a->pos[0]);
            stop = num_i(&a->pos[1]);
            if (a->npos == 3)
                stp = num_i(&a->pos[2]);
        } else
            return r_fail(c, at, "range() takes 1 to 3 arguments");
        if (!stp)
            return r_fail(c, at, "range() arg 3 must not be zero");
        long long cnt = stp > 0 ? (stop > start ? (stop - start + stp - 1) / stp : 0)
                                : (start > stop ? (start - stop - stp - 1) / -stp : 0);
        if ((unsigned long long)cnt > c->lim.max_steps)
            return r_fail(c, at, "range() too large");
        jlist_t *l = new_list(c, (size_t)cnt);
        if (!l)
            return r_oom(c, at);
        for (long long i = 0; i < cnt; i++)
            l->v[i] = vint(start + i * stp);
        *out = vlist(l);
        return 0;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        jdict_t *d = new_dict(c);
        if (!d)
            return r_oom(c, at);
        for (size_t i = 0; i < a->npos; i++) {
            if (a->pos[i].t != V_DICT)
                return r_fail(c, at, "%s() takes keyword arguments or a dict", name);
            for (size_t k = 0; k < a->pos[i].u.d->n; k++)
                if (dict_set(&c->ar, d, a->pos[i].u.d->k[k], a->pos[i].u.d->v[k]))
                    return r_oom(c, at);
        }
        for (size_t k = 0; k < a->nkw; k++)
            if (dict_set(&c->ar, d, vstr(a->kn[k], strlen(a->kn[k])), a->kv[k]))
                return r_oom(c, at);
        *out = (jv_t){.t = name[0] == 'n' ? V_NS : V_DICT, .u.d = d};
        return 0;
    }
    if (!strcmp(name, "raise_exception")) {
        const jv_t *m = arg(a, 0, "message");
        jv_t s = vstr("", 0);
        if (m && to_str(c, at, m, &s))
            return -EINVAL;
        if (!c->failed) {
            c->failed = 1;
            snprintf(c->err, c->errlen, "%.*s", (int)s.u.s.n, s.u.s.p);
        }
        return -EINVAL;
    }
    return strftime_now(c, at, arg(a, 0, "format"), out);
}

static int call_method(rctx_t *c, const jn_t *at, const jfunc_t *fn, args_t *a, jv_t *out);

static int call_value(rctx_t *c, const jn_t *at, const jv_t *fv, args_t *a, frame_t *f,
                      jv_t *out)
{
    (void)f;
    if (fv->t == V_UNDEF)
        return undef_err(c, at, fv);
    if (fv->t != V_FUNC)
        return r_fail(c, at, "'%s' object is not callable", type_name(fv));
    const jfunc_t *fn = fv->u.fn;
    switch (fn->kind) {
    case F_BUILTIN:
        return call_builtin(c, at, fn->name, a, out);
    case F_METHOD:
        return call_method(c, at, fn, a, out);
    default:
        return call_macro(c, at, fn, a, out);
    }
}

/* ---------------------------------------------------------------- string methods */

static int str_arg(rctx_t *c, const jn_t *at, const jv_t *v, const char *what, jv_t *out)
{
    if (!v || v->t == V_NONE) {
        out->t = V_NONE;
        return 0;
    }
    if (v->t != V_STR)
        return r_fail(c, at, "%s: expected a string, got '%s'", what, type_name(v));
    *out = *v;
    return 0;
}

static int has_char(const jv_t *chars, const char *p, size_t n, size_t i, size_t *w)
{
    size_t e = i + 1;
    while (e < n && ((unsigned char)p[e] & 0xC0) == 0x80)
        e++;
    *w = e - i;
    for (size_t k = 0; k < chars->u.s.n;) {
        size_t ke = k + 1;
        while (ke < chars->u.s.n && ((unsigned char)chars->u.s.p[ke] & 0xC0) == 0x80)
            ke++;
        if (ke - k == *w && memcmp(chars->u.s.p + k, p + i, *w) == 0)
            return 1;
        k = ke;
    }
    return 0;
}

static jv_t strip(const jv_t *s, const jv_t *chars, int left, int right)
{
    const char *p = s->u.s.p;
    size_t a = 0, b = s->u.s.n, w;
    if (chars->t == V_NONE) {
        if (left)
            a = ws_lead(p, b);
        if (right)
            b = a + ws_trail(p + a, b - a);
        return vstr(p + a, b - a);
    }
    while (left && a < b && has_char(chars, p, b, a, &w))
        a += w;
    while (right && b > a) {
        size_t i = b - 1;
        while (i > a && ((unsigned char)p[i] & 0xC0) == 0x80)
            i--;
        if (!has_char(chars, p, b, i, &w))
            break;
        b = i;
    }
    return vstr(p + a, b - a);
}

static int case_map(rctx_t *c, const jn_t *at, const jv_t *s, int mode, jv_t *out)
{
    /* mode: 0 lower, 1 upper, 2 str.title, 3 capitalize, 4 swapcase, 5 Jinja's title */
    char *d = r_alloc(c, s->u.s.n + 1);
    if (!d)
        return r_oom(c, at);
    int prev_cased = 0;
    for (size_t i = 0; i < s->u.s.n; i++) {
        unsigned char ch = (unsigned char)s->u.s.p[i];
        int up;
        switch (mode) {
        case 0: up = 0; break;
        case 1: up = 1; break;
        case 2: up = !prev_cased; break;
        case 3: up = i == 0; break;
        case 4: up = islower(ch); break;
        default: up = i == 0 || strchr("- \t\n\r\f\v({[<", s->u.s.p[i - 1]) != NULL;
        }
        d[i] = (char)(up ? toupper(ch) : tolower(ch));
        if (mode == 5 && !up && i > 0 && strchr("- \t\n\r\f\v({[<", s->u.s.p[i - 1]))
            d[i] = (char)toupper(ch);
        prev_cased = isalpha(ch) || ch >= 0x80;
    }
    *out = vstr(d, s->u.s.n);
    return 0;
}

static size_t find_sub(const char *p, size_t n, const char *q, size_t m, size_t from)
{
    for (size_t i = from; i + m <= n; i++)
        if (!m || memcmp(p + i, q, m) == 0)
            return i;
    return (size_t)-1;
}

static int str_split(rctx_t *c, const jn_t *at, const jv_t *s, const jv_t *sep, long long max,
                     jv_t *out)
{
    jv_t parts[64];
    size_t np = 0, cap = 64;
    jv_t *v = parts;
    const char *p = s->u.s.p;
    size_t n = s->u.s.n, i = 0;
    for (;;) {
        jv_t piece;
        int last = 0;
        if (sep->t == V_NONE) {
            size_t w;
            while (i < n && py_space(p, n, i, &w))
                i += w;
            if (i >= n)
                break;
            size_t st = i;
            if (max >= 0 && (long long)np >= max) {
                piece = vstr(p + st, ws_trail(p + st, n - st));
                last = 1;
            } else {
                while (i < n && !py_space(p, n, i, &w))
                    i++;
                piece = vstr(p + st, i - st);
            }
        } else {
            if (!sep->u.s.n)
                return r_fail(c, at, "empty separator");
            size_t k = max >= 0 && (long long)np >= max
                           ? (size_t)-1 : find_sub(p, n, sep->u.s.p, sep->u.s.n, i);
            if (k == (size_t)-1) {
                piece = vstr(p + i, n - i);
                last = 1;
            } else {
                piece = vstr(p + i, k - i);
                i = k + sep->u.s.n;
            }
        }
        if (np == cap) {
            jv_t *nv = r_alloc(c, cap * 2 * sizeof *nv);
            if (!nv)
                return r_oom(c, at);
            memcpy(nv, v, np * sizeof *nv);
            v = nv;
            cap *= 2;
        }
        v[np++] = piece;
        if (last)
            break;
    }
    jlist_t *l = new_list(c, np);
    if (!l)
        return r_oom(c, at);
    if (np)
        memcpy(l->v, v, np * sizeof *v);
    *out = vlist(l);
    return 0;
}

/* str.format: {} {0} {name} with str() of the value ({{ and }} escape braces) */
static int str_format(rctx_t *c, const jn_t *at, const jv_t *s, args_t *a, jv_t *out)
{
    sb_t b = {.limit = c->lim.max_output};
    size_t auto_i = 0;
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '{' && i + 1 < n && p[i + 1] == '{') {
            sb_putc(&b, '{');
            i++;
        } else if (p[i] == '}' && i + 1 < n && p[i + 1] == '}') {
            sb_putc(&b, '}');
            i++;
        } else if (p[i] == '{') {
            size_t e = i + 1;
            while (e < n && p[e] != '}')
                e++;
            if (e >= n) {
                free(b.p);
                return r_fail(c, at, "format(): single '{' encountered");
            }
            const char *fld = p + i + 1;
            size_t fl = e - i - 1;
            const jv_t *v = NULL;
            if (!fl)
                v = arg(a, auto_i++, NULL);
            else if (isdigit((unsigned char)fld[0]))
                v = arg(a, (size_t)atoi(fld), NULL);
            else
                for (size_t k = 0; k < a->nkw; k++)
                    if (strlen(a->kn[k]) == fl && memcmp(a->kn[k], fld, fl) == 0)
                        v = &a->kv[k];
            if (!v) {
                free(b.p);
                return r_fail(c, at, "format(): no argument for {%.*s}", (int)fl, fld);
            }
            put_str(&b, v, 0);
            i = e;
        } else {
            sb_putc(&b, p[i]);
        }
    }
    return sb_value(c, at, &b, out);
}

static int call_method(rctx_t *c, const jn_t *at, const jfunc_t *fn, args_t *a, jv_t *out)
{
    const jv_t *self = &fn->self;
    const char *m = fn->name;
    const jv_t *a0 = arg(a, 0, NULL), *a1 = arg(a, 1, NULL);
    jv_t x, y;
    if (self->t == V_LOOP) { /* loop.cycle */
        if (!a->npos)
            return r_fail(c, at, "loop.cycle() needs at least one item");
        *out = a->pos[self->u.lp->i % a->npos];
        return 0;
    }
    if (self->t == V_DICT) {
        const jdict_t *d = self->u.d;
        if (!strcmp(m, "get")) {
            if (!a0)
                return r_fail(c, at, "get() takes a key");
            const jv_t *v = dict_getv(d, a0);
            *out = v ? *v : a1 ? *a1 : V_NULL;
            return 0;
        }
        if (!strcmp(m, "copy")) {
            *out = *self;
            return 0;
        }
        jlist_t *l = new_list(c, d->n);
        if (!l)
            return r_oom(c, at);
        for (size_t i = 0; i < d->n; i++) {
            if (!strcmp(m, "keys"))
                l->v[i] = d->k[i];
            else if (!strcmp(m, "values"))
                l->v[i] = d->v[i];
            else {
                jlist_t *pair = new_list(c, 2);
                if (!pair)
                    return r_oom(c, at);
                pair->v[0] = d->k[i];
                pair->v[1] = d->v[i];
                l->v[i] = vtuple(pair);
            }
        }
        *out = vlist(l);
        return 0;
    }
    if (self->t == V_LIST) {
        const jlist_t *l = self->u.l;
        if (!strcmp(m, "index") || !strcmp(m, "count")) {
            if (!a0)
                return r_fail(c, at, "%s() takes one argument", m);
            long long k = 0;
            for (size_t i = 0; i < l->n; i++)
                if (veq(&l->v[i], a0)) {
                    if (m[0] == 'i') {
                        *out = vint((long long)i);
                        return 0;
                    }
                    k++;
                }
            if (m[0] == 'i')
                return r_fail(c, at, "list.index(x): x not in list");
            *out = vint(k);
            return 0;
        }
        if (!strcmp(m, "copy")) {
            *out = *self;
            return 0;
        }
        return r_fail(c, at, "access to attribute '%s' of 'list' object is unsafe.", m);
    }
    /* strings */
    const char *p = self->u.s.p;
    size_t n = self->u.s.n;
    if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
        if (str_arg(c, at, a0, m, &x))
            return -EINVAL;
        *out = strip(self, &x, m[0] != 'r', m[0] != 'l');
        return 0;
    }
    if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
        if (!a0)
            return r_fail(c, at, "%s() takes a string", m);
        const jv_t *alts = a0;
        size_t na = 1;
        if (a0->t == V_LIST) {
            alts = a0->u.l->v;
            na = a0->u.l->n;
        }
        for (size_t i = 0; i < na; i++) {
            if (alts[i].t != V_STR)
                return r_fail(c, at, "%s(): expected a string, got '%s'", m, type_name(&alts[i]));
            size_t k = alts[i].u.s.n;
            if (k <= n && memcmp(m[0] == 's' ? p : p + n - k, alts[i].u.s.p, k) == 0) {
                *out = vbool(1);
                return 0;
            }
        }
        *out = vbool(0);
        return 0;
    }
    if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
        const jv_t *sep = arg(a, 0, "sep"), *mx = arg(a, 1, "maxsplit");
        if (str_arg(c, at, sep, m, &x))
            return -EINVAL;
        long long max = mx && mx->t == V_INT ? mx->u.i : -1;
        if (m[0] == 'r' && max >= 0) {
            /* rsplit with a limit: split all, then join the leading ones back */
            if (str_split(c, at, self, &x, -1, &y))
                return -EINVAL;
            jlist_t *all = y.u.l;
            if ((long long)all->n <= max + 1) {
                *out = y;
                return 0;
            }
            size_t keep = (size_t)max, head = all->n - keep;
            jlist_t *l = new_list(c, keep + 1);
            if (!l)
                return r_oom(c, at);
            const char *hs = all->v[0].u.s.p;
            const char *he = all->v[head - 1].u.s.p + all->v[head - 1].u.s.n;
            l->v[0] = vstr(hs, (size_t)(he - hs));
            for (size_t i = 0; i < keep; i++)
                l->v[i + 1] = all->v[head + i];
            *out = vlist(l);
            return 0;
        }
        return str_split(c, at, self, &x, max, out);
    }
    if (!strcmp(m, "upper") || !strcmp(m, "lower") || !strcmp(m, "title") ||
        !strcmp(m, "capitalize") || !strcmp(m, "swapcase"))
        return case_map(c, at, self,
                        m[0] == 'l' ? 0 : m[0] == 'u' ? 1 : m[0] == 't' ? 2 : m[0] == 'c' ? 3 : 4,
                        out);
    if (!strcmp(m, "replace")) {
        if (!a0 || !a1 || a0->t != V_STR || a1->t != V_STR)
            return r_fail(c, at, "replace() takes two strings");
        const jv_t *cnt = arg(a, 2, "count");
        long long max = cnt && cnt->t == V_INT ? cnt->u.i : -1;
        sb_t b = {.limit = c->lim.max_output};
        size_t i = 0;
        long long done = 0;
        if (!a0->u.s.n) { /* Python inserts between every character */
            for (size_t k = 0; k <= n; k++) {
                if (max < 0 || done < max) {
                    sb_put(&b, a1->u.s.p, a1->u.s.n);
                    done++;
                }
                if (k < n) {
                    size_t e = k + 1;
                    while (e < n && ((unsigned char)p[e] & 0xC0) == 0x80)
                        e++;
                    sb_put(&b, p + k, e - k);
                    k = e - 1;
                }
            }
            return sb_value(c, at, &b, out);
        }
        while (i <= n) {
            size_t k = max >= 0 && done >= max ? (size_t)-1
                                                : find_sub(p, n, a0->u.s.p, a0->u.s.n, i);
            if (k == (size_t)-1) {
                sb_put(&b, p + i, n - i);
                break;
            }
            sb_put(&b, p + i, k - i);
            sb_put(&b, a1->u.s.p, a1->u.s.n);
            i = k + a0->u.s.n;
            done++;
        }
        return sb_value(c, at, &b, out);
    }
    if (!strcmp(m, "format"))
        return str_format(c, at, self, a, out);
    if (!strcmp(m, "find") || !strcmp(m, "rfind") || !strcmp(m, "index") || !strcmp(m, "count")) {
        if (!a0 || a0->t != V_STR)
            return r_fail(c, at, "%s() takes a string", m);
        if (!strcmp(m, "count")) {
            long long k = 0;
            size_t i = 0, w = a0->u.s.n;
            if (!w) {
                *out = vint((long long)u8_count(p, n) + 1);
                return 0;
            }
            while ((i = find_sub(p, n, a0->u.s.p, w, i)) != (size_t)-1) {
                k++;
                i += w;
            }
            *out = vint(k);
            return 0;
        }
        size_t k = (size_t)-1;
        if (m[0] == 'r') {
            for (size_t i = n + 1; i-- > 0;)
                if (i + a0->u.s.n <= n && memcmp(p + i, a0->u.s.p, a0->u.s.n) == 0) {
                    k = i;
                    break;
                }
        } else {
            k = find_sub(p, n, a0->u.s.p, a0->u.s.n, 0);
        }
        if (k == (size_t)-1 && m[0] == 'i')
            return r_fail(c, at, "substring not found");
        *out = vint(k == (size_t)-1 ? -1 : (long long)u8_count(p, k));
        return 0;
    }
    if (!strcmp(m, "join")) {
        jlist_t *l;
        if (!a0 || iter_list(c, at, a0, &l))
            return a0 ? -EINVAL : r_fail(c, at, "join() takes an iterable");
        sb_t b = {.limit = c->lim.max_output};
        for (size_t i = 0; i < l->n; i++) {
            if (l->v[i].t != V_STR) {
                free(b.p);
                return r_fail(c, at, "sequence item %zu: expected str instance, %s found", i,
                              type_name(&l->v[i]));
            }
            if (i)
                sb_put(&b, p, n);
            sb_put(&b, l->v[i].u.s.p, l->v[i].u.s.n);
        }
        return sb_value(c, at, &b, out);
    }
    if (!strncmp(m, "is", 2)) {
        int all = n > 0, any_cased = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)p[i];
            int ok = !strcmp(m, "isdigit") ? isdigit(ch) : !strcmp(m, "isalpha") ? isalpha(ch)
                     : !strcmp(m, "isalnum") ? isalnum(ch) : !strcmp(m, "isspace") ? isspace(ch)
                     : !strcmp(m, "islower") ? !isupper(ch) : !islower(ch);
            any_cased |= isalpha(ch);
            all &= ok != 0;
        }
        if (!strcmp(m, "islower") || !strcmp(m, "isupper"))
            all &= any_cased;
        *out = vbool(all);
        return 0;
    }
    if (!strcmp(m, "splitlines")) {
        jv_t nl = vstr("\n", 1);
        jv_t t = vstr(p, n && p[n - 1] == '\n' ? n - 1 : n);
        if (!t.u.s.n) {
            jlist_t *l = new_list(c, 0);
            if (!l)
                return r_oom(c, at);
            *out = vlist(l);
            return 0;
        }
        return str_split(c, at, &t, &nl, -1, out);
    }
    if (!strcmp(m, "removeprefix") || !strcmp(m, "removesuffix")) {
        if (!a0 || a0->t != V_STR)
            return r_fail(c, at, "%s() takes a string", m);
        size_t k = a0->u.s.n;
        *out = *self;
        if (k <= n && m[6] == 'p' && memcmp(p, a0->u.s.p, k) == 0)
            *out = vstr(p + k, n - k);
        else if (k <= n && m[6] == 's' && memcmp(p + n - k, a0->u.s.p, k) == 0)
            *out = vstr(p, n - k);
        return 0;
    }
    if (!strcmp(m, "center")) {
        long long w = a0 && a0->t == V_INT ? a0->u.i : 0;
        size_t cnt = u8_count(p, n);
        sb_t b = {.limit = c->lim.max_output};
        if (w > (long long)c->lim.max_output)
            w = 0;
        long long pad = w > (long long)cnt ? w - (long long)cnt : 0;
        long long left = pad / 2 + (pad & w & 1);
        for (long long i = 0; i < left; i++)
            sb_putc(&b, ' ');
        sb_put(&b, p, n);
        for (long long i = 0; i < pad - left; i++)
            sb_putc(&b, ' ');
        return sb_value(c, at, &b, out);
    }
    return r_fail(c, at, "'str' object has no method '%s'", m);
}

/* ---------------------------------------------------------------- filters */

/* a dotted attribute path ("function.name", "0") of v, as Jinja's attribute= reads it */
static int get_path(rctx_t *c, const jn_t *at, const jv_t *v, const jv_t *path, jv_t *out)
{
    if (path->t == V_INT)
        return get_item(c, at, v, path, out);
    if (path->t != V_STR)
        return r_fail(c, at, "attribute= takes a string");
    jv_t cur = *v;
    const char *p = path->u.s.p, *end = p + path->u.s.n;
    while (p <= end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        if (!dot)
            dot = end;
        jv_t key = vstr(p, (size_t)(dot - p)), nx;
        if (key.u.s.n && isdigit((unsigned char)p[0])) {
            char tmp[24];
            size_t k = key.u.s.n < sizeof tmp - 1 ? key.u.s.n : sizeof tmp - 1;
            memcpy(tmp, p, k);
            tmp[k] = 0;
            key = vint(atoll(tmp));
        }
        if (get_item(c, at, &cur, &key, &nx))
            return -EINVAL;
        cur = nx;
        p = dot + 1;
    }
    *out = cur;
    return 0;
}

static int html_escape(rctx_t *c, const jn_t *at, const jv_t *v, jv_t *out)
{
    jv_t s;
    if (to_str(c, at, v, &s))
        return -EINVAL;
    sb_t b = {.limit = c->lim.max_output};
    for (size_t i = 0; i < s.u.s.n; i++) {
        char ch = s.u.s.p[i];
        switch (ch) {
        case '&': sb_puts(&b, "&amp;"); break;
        case '<': sb_puts(&b, "&lt;"); break;
        case '>': sb_puts(&b, "&gt;"); break;
        case '"': sb_puts(&b, "&#34;"); break;
        case '\'': sb_puts(&b, "&#39;"); break;
        default: sb_putc(&b, ch);
        }
    }
    return sb_value(c, at, &b, out);
}

/* Python's printf-style "%" formatting (the format filter, str % args) */
static int printf_fmt(rctx_t *c, const jn_t *at, const jv_t *fmt, args_t *a, jv_t *out)
{
    if (fmt->t != V_STR)
        return r_fail(c, at, "format: expected a string, got '%s'", type_name(fmt));
    sb_t b = {.limit = c->lim.max_output};
    const char *p = fmt->u.s.p;
    size_t n = fmt->u.s.n, next = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%') {
            sb_putc(&b, p[i]);
            continue;
        }
        char spec[32];
        size_t sl = 0;
        spec[sl++] = '%';
        i++;
        while (i < n && strchr("-+ 0#", p[i]) && sl < 20)
            spec[sl++] = p[i++];
        while (i < n && (isdigit((unsigned char)p[i]) || p[i] == '.') && sl < 28)
            spec[sl++] = p[i++];
        if (i >= n) {
            free(b.p);
            return r_fail(c, at, "format: incomplete format");
        }
        char conv = p[i];
        if (conv == '%') {
            sb_putc(&b, '%');
            continue;
        }
        const jv_t *v = arg(a, next++, NULL);
        if (!v) {
            free(b.p);
            return r_fail(c, at, "format: not enough arguments for format string");
        }
        char tmp[512];
        if (conv == 's' || conv == 'r') {
            sb_t t = {.limit = c->lim.max_output};
            put_str(&t, v, conv == 'r');
            spec[sl++] = 's';
            spec[sl] = 0;
            if (sl == 2) {
                sb_put(&b, t.p ? t.p : "", t.n);
            } else {
                char *w = malloc(t.n + 600);
                if (w) {
                    snprintf(w, t.n + 600, spec, t.p ? t.p : "");
                    sb_puts(&b, w);
                    free(w);
                } else {
                    b.err = -ENOMEM;
                }
            }
            free(t.p);
        } else if (strchr("dioxXc", conv)) {
            if (!is_num(v)) {
                free(b.p);
                return r_fail(c, at, "format: %%%c requires a number, not %s", conv,
                              type_name(v));
            }
            spec[sl++] = 'l';
            spec[sl++] = 'l';
            spec[sl++] = conv == 'i' ? 'd' : conv == 'c' ? 'd' : conv;
            spec[sl] = 0;
            if (conv == 'c')
                u8_put(&b, (unsigned)num_i(v));
            else {
                snprintf(tmp, sizeof tmp, spec, (long long)(v->t == V_FLOAT ? trunc(v->u.f)
                                                                             : num_i(v)));
                sb_puts(&b, tmp);
            }
        } else if (strchr("feEgGF", conv)) {
            if (!is_num(v)) {
                free(b.p);
                return r_fail(c, at, "format: %%%c requires a number, not %s", conv,
                              type_name(v));
            }
            spec[sl++] = conv;
            spec[sl] = 0;
            snprintf(tmp, sizeof tmp, spec, num_f(v));
            sb_puts(&b, tmp);
        } else {
            free(b.p);
            return r_fail(c, at, "format: unsupported format character '%c'", conv);
        }
    }
    return sb_value(c, at, &b, out);
}

/* a stable merge sort of items by key (keys[i] compared with vcmp) */
static int sort_items(rctx_t *c, const jn_t *at, jv_t *items, jv_t *keys, size_t n, int rev)
{
    if (n < 2)
        return 0;
    jv_t *ti = r_alloc(c, n * sizeof *ti), *tk = r_alloc(c, n * sizeof *tk);
    if (!ti || !tk)
        return r_oom(c, at);
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) {
                int r;
                if (vcmp(c, at, &keys[j], &keys[i], "<", &r))
                    return -EINVAL;
                if (rev ? r > 0 : r < 0) {
                    ti[k] = items[j];
                    tk[k++] = keys[j++];
                } else {
                    ti[k] = items[i];
                    tk[k++] = keys[i++];
                }
            }
            while (i < mid) {
                ti[k] = items[i];
                tk[k++] = keys[i++];
            }
            while (j < hi) {
                ti[k] = items[j];
                tk[k++] = keys[j++];
            }
        }
        memcpy(items, ti, n * sizeof *ti);
        memcpy(keys, tk, n * sizeof *tk);
    }
    return 0;
}

/* arguments from index k on (positional and keyword): for select('test', x), map('f', x) */
static args_t args_from(const args_t *a, size_t k)
{
    args_t r = *a;
    if (k <= a->npos) {
        r.pos = a->pos + k;
        r.npos = a->npos - k;
    } else {
        r.npos = 0;
    }
    return r;
}

static int apply_filter(rctx_t *c, const jn_t *at, const char *name, const jv_t *v, args_t *a,
                        frame_t *f, jv_t *out)
{
    const jv_t *a0 = arg(a, 0, NULL);
    jv_t x;
    jlist_t *l;
    size_t n = 0;
#define IS(s) (strcmp(name, (s)) == 0)
    if (IS("default") || IS("d")) {
        const jv_t *dv = arg(a, 0, "default_value"), *bo = arg(a, 1, "boolean");
        int use = v->t == V_UNDEF || (bo && truthy(bo) && !truthy(v));
        *out = use ? (dv ? *dv : vstr("", 0)) : *v;
        return 0;
    }
    if (IS("length") || IS("count")) {
        if (vlen(c, at, v, &n))
            return -EINVAL;
        *out = vint((long long)n);
        return 0;
    }
    if (IS("string"))
        return to_str(c, at, v, out);
    if (IS("safe"))
        return *out = *v, 0;
    if (IS("escape") || IS("e") || IS("forceescape"))
        return html_escape(c, at, v, out);
    if (IS("tojson")) {
        const jv_t *ind = arg(a, 0, "indent");
        int indent = ind && (ind->t == V_INT) ? (int)ind->u.i : -1;
        if (indent > 64)
            indent = 64;
        const char *bad = NULL;
        sb_t b = {.limit = c->lim.max_output};
        if (json_dump(&b, v, indent, 0, &bad)) {
            free(b.p);
            return v->t == V_UNDEF ? undef_err(c, at, v) : r_fail(c, at, "tojson: %s", bad);
        }
        return sb_value(c, at, &b, out);
    }
    if (IS("upper") || IS("lower") || IS("title") || IS("capitalize")) {
        if (to_str(c, at, v, &x))
            return -EINVAL;
        return case_map(c, at, &x, IS("lower") ? 0 : IS("upper") ? 1 : IS("title") ? 5 : 3, out);
    }
    if (IS("trim")) {
        jv_t chars;
        if (to_str(c, at, v, &x) || str_arg(c, at, arg(a, 0, "chars"), "trim", &chars))
            return -EINVAL;
        *out = strip(&x, &chars, 1, 1);
        return 0;
    }
    if (IS("replace") || IS("format") || IS("center")) {
        if (IS("format"))
            return printf_fmt(c, at, v, a, out);
        jfunc_t fn = {.kind = F_METHOD, .name = name};
        if (to_str(c, at, v, &fn.self))
            return -EINVAL;
        return call_method(c, at, &fn, a, out);
    }
    if (IS("join")) {
        const jv_t *sep = arg(a, 0, "d"), *attr = arg(a, 1, "attribute");
        if (iter_list(c, at, v, &l))
            return -EINVAL;
        jv_t s = vstr("", 0);
        if (sep && to_str(c, at, sep, &s))
            return -EINVAL;
        sb_t b = {.limit = c->lim.max_output};
        for (size_t i = 0; i < l->n; i++) {
            jv_t item = l->v[i];
            if (attr && get_path(c, at, &l->v[i], attr, &item)) {
                free(b.p);
                return -EINVAL;
            }
            if (i)
                sb_put(&b, s.u.s.p, s.u.s.n);
            put_str(&b, &item, 0);
        }
        return sb_value(c, at, &b, out);
    }
    if (IS("int") || IS("float")) {
        const jv_t *dv = arg(a, 0, "default");
        jv_t def = dv ? *dv : IS("int") ? vint(0) : vfloat(0);
        if (v->t == V_INT || v->t == V_BOOL || v->t == V_FLOAT) {
            *out = IS("int") ? (v->t == V_FLOAT ? vint((long long)v->u.f) : vint(num_i(v)))
                             : vfloat(num_f(v));
            return 0;
        }
        if (v->t != V_STR) {
            *out = def;
            return 0;
        }
        char tmp[64];
        jv_t s = strip(v, &V_NULL, 1, 1);
        if (s.u.s.n == 0 || s.u.s.n >= sizeof tmp) {
            *out = def;
            return 0;
        }
        memcpy(tmp, s.u.s.p, s.u.s.n);
        tmp[s.u.s.n] = 0;
        char *end;
        if (IS("int")) {
            errno = 0;
            long long i = strtoll(tmp, &end, 10);
            if (*end == 0 && !errno) {
                *out = vint(i);
                return 0;
            }
        }
        double d = strtod(tmp, &end);
        if (*end || (tmp[0] == '0' && (tmp[1] == 'x' || tmp[1] == 'X')))
            *out = def;
        else
            *out = IS("int") ? vint((long long)d) : vfloat(d);
        return 0;
    }
    if (IS("abs")) {
        if (v->t == V_INT && !v->x)
            *out = vint(v->u.i < 0 ? -v->u.i : v->u.i);
        else if (is_num(v))
            *out = v->t == V_BOOL ? vint(v->u.b) : vfloat(fabs(num_f(v)));
        else
            return r_fail(c, at, "bad operand type for abs(): '%s'", type_name(v));
        return 0;
    }
    if (IS("round")) {
        const jv_t *pr = arg(a, 0, "precision"), *me = arg(a, 1, "method");
        if (!is_num(v))
            return r_fail(c, at, "round: expected a number, got '%s'", type_name(v));
        long long pi = pr && pr->t == V_INT ? pr->u.i : 0;
        double sc = pow(10, (double)pi), d = num_f(v) * sc;
        if (me && str_eq(me, "floor"))
            d = floor(d);
        else if (me && str_eq(me, "ceil"))
            d = ceil(d);
        else
            d = nearbyint(d);
        *out = vfloat(d / sc);
        return 0;
    }
    if (IS("list")) {
        if (iter_list(c, at, v, &l))
            return -EINVAL;
        *out = vlist(l);
        return 0;
    }
    if (IS("items") || IS("dictsort")) {
        if (v->t == V_UNDEF && IS("items")) {
            if (!(l = new_list(c, 0)))
                return r_oom(c, at);
            *out = vlist(l);
            return 0;
        }
        if (v->t != V_DICT)
            return r_fail(c, at, "%s: expected a mapping, got '%s'", name, type_name(v));
        jfunc_t fn = {.kind = F_METHOD, .name = "items", .self = *v};
        args_t none = {0};
        if (call_method(c, at, &fn, &none, out))
            return -EINVAL;
        if (IS("items"))
            return 0;
        const jv_t *cs = arg(a, 0, "case_sensitive"), *by = arg(a, 1, "by"),
                   *rev = arg(a, 2, "reverse");
        l = out->u.l;
        jv_t *keys = r_alloc(c, (l->n ? l->n : 1) * sizeof *keys);
        if (!keys)
            return r_oom(c, at);
        for (size_t i = 0; i < l->n; i++) {
            jv_t k = l->v[i].u.l->v[by && str_eq(by, "value") ? 1 : 0];
            if (!(cs && truthy(cs)) && ci_key(c, &k, &k))
                return -ENOMEM;
            keys[i] = k;
        }
        return sort_items(c, at, l->v, keys, l->n, rev && truthy(rev));
    }
    if (IS("first") || IS("last")) {
        if (iter_list(c, at, v, &l))
            return -EINVAL;
        *out = l->n ? l->v[IS("first") ? 0 : l->n - 1] : vundef("the sequence is empty");
        return 0;
    }
    if (IS("reverse")) {
        if (v->t == V_STR) {
            jv_t st = vint(-1);
            return do_slice(c, at, v, &V_NULL, &V_NULL, &st, out);
        }
        if (iter_list(c, at, v, &l))
            return -EINVAL;
        jlist_t *r = new_list(c, l->n);
        if (!r)
            return r_oom(c, at);
        for (size_t i = 0; i < l->n; i++)
            r->v[i] = l->v[l->n - 1 - i];
        *out = vlist(r);
        return 0;
    }
    if (IS("sort") || IS("unique") || IS("min") || IS("max")) {
        int is_sort = IS("sort");
        const jv_t *rev = is_sort ? arg(a, 0, "reverse") : NULL;
        const jv_t *cs = arg(a, is_sort ? 1 : 0, "case_sensitive");
        const jv_t *attr = arg(a, is_sort ? 2 : 1, "attribute");
        if (iter_list(c, at, v, &l))
            return -EINVAL;
        jlist_t *r = new_list(c, l->n);
        jv_t *keys = r_alloc(c, (l->n ? l->n : 1) * sizeof *keys);
        if (!r || !keys)
            return r_oom(c, at);
        size_t k = 0;
        for (size_t i = 0; i < l->n; i++) {
            jv_t key = l->v[i];
            if (attr && get_path(c, at, &l->v[i], attr, &key))
                return -EINVAL;
            if (!(cs && truthy(cs)) && ci_key(c, &key, &key))
                return -ENOMEM;
            if (IS("unique")) {
                size_t j;
                for (j = 0; j < k; j++)
                    if (veq(&keys[j], &key))
                        break;
                if (j < k)
                    continue;
            }
            r->v[k] = l->v[i];
            keys[k++] = key;
        }
        r->n = k;
        if (IS("unique")) {
            *out = vlist(r);
            return 0;
        }
        if (sort_items(c, at, r->v, keys, k, rev && truthy(rev)))
            return -EINVAL;
        if (is_sort)
            *out = vlist(r);
        else
            *out = !k ? vundef("min/max of an empty sequence") : IS("min") ? r->v[0]
                                                                            : r->v[k - 1];
        return 0;
    }
    if (IS("sum")) {
        const jv_t *attr = arg(a, 0, "attribute"), *start = arg(a, 1, "start");
        if (iter_list(c, at, v, &l))
            return -EINVAL;
        jv_t acc = start ? *start : vint(0);
        for (size_t i = 0; i < l->n; i++) {
            jv_t item = l->v[i];
            if (attr && get_path(c, at, &l->v[i], attr, &item))
                return -EINVAL;
            if (binop(c, at, OP_ADD, &acc, &item, &acc))
                return -EINVAL;
        }
        *out = acc;
        return 0;
    }
    if (IS("attr")) {
        if (!a0 || a0->t != V_STR)
            return r_fail(c, at, "attr: expected a name");
        return get_attr(c, at, v, a0->u.s.p, a0->u.s.n, out);
    }
    if (IS("map") || IS("select") || IS("reject") || IS("selectattr") || IS("rejectattr")) {
        if (iter_list(c, at, v, &l))
            return -EINVAL;
        jlist_t *r = new_list(c, l->n);
        if (!r)
            return r_oom(c, at);
        size_t k = 0;
        int is_map = IS("map"), by_attr = IS("selectattr") || IS("rejectattr");
        int keep_true = IS("select") || IS("selectattr");
        const jv_t *attr = is_map ? arg(a, (size_t)-1, "attribute") : by_attr ? a0 : NULL;
        if (by_attr && !attr)
            return r_fail(c, at, "%s: needs an attribute name", name);
        size_t tix = by_attr ? 1 : 0; /* the test's (or map's filter's) name */
        const jv_t *tname = arg(a, tix, NULL);
        if (tname && tname->t != V_STR)
            return r_fail(c, at, "%s: expected a %s name", name, is_map ? "filter" : "test");
        char tn[64] = "";
        if (tname)
            snprintf(tn, sizeof tn, "%.*s", (int)tname->u.s.n, tname->u.s.p);
        args_t rest = args_from(a, tix + 1);
        if (is_map) {
            rest.nkw = 0;
            if (!attr)
                for (size_t i = 0; i < a->nkw; i++)
                    rest = args_from(a, tix + 1);
        }
        const jv_t *dflt = is_map ? arg(a, (size_t)-1, "default") : NULL;
        for (size_t i = 0; i < l->n; i++) {
            jv_t item = l->v[i], val = item;
            if (attr && get_path(c, at, &item, attr, &val))
                return -EINVAL;
            if (is_map) {
                if (attr) {
                    r->v[k++] = val.t == V_UNDEF && dflt ? *dflt : val;
                } else {
                    if (!tname)
                        return r_fail(c, at, "map: needs a filter name or attribute=");
                    args_t fa = args_from(a, 1);
                    if (apply_filter(c, at, tn, &item, &fa, f, &r->v[k++]))
                        return -EINVAL;
                }
                continue;
            }
            int t;
            if (tname) {
                if (apply_test(c, at, tn, &val, &rest, f, &t))
                    return -EINVAL;
            } else {
                t = truthy(&val);
            }
            if (t == keep_true)
                r->v[k++] = item;
        }
        r->n = k;
        *out = vlist(r);
        return 0;
    }
    if (IS("indent")) {
        const jv_t *w = arg(a, 0, "width"), *first = arg(a, 1, "first"),
                   *blank = arg(a, 2, "blank");
        jv_t ind = vstr("    ", 4);
        if (w && w->t == V_STR)
            ind = *w;
        else if (w && w->t == V_INT) {
            long long k = w->u.i < 0 ? 0 : w->u.i > 256 ? 256 : w->u.i;
            char *s = r_alloc(c, (size_t)k + 1);
            if (!s)
                return r_oom(c, at);
            memset(s, ' ', (size_t)k);
            ind = vstr(s, (size_t)k);
        }
        if (to_str(c, at, v, &x))
            return -EINVAL;
        /* Jinja: s += "\n"; lines = s.splitlines(); indent all but the first (and blank
         * lines only with blank=True) */
        sb_t b = {.limit = c->lim.max_output};
        if (first && truthy(first))
            sb_put(&b, ind.u.s.p, ind.u.s.n);
        const char *p = x.u.s.p;
        size_t len = x.u.s.n, i = 0;
        int line_no = 0;
        while (i <= len) {
            size_t e = i;
            while (e < len && p[e] != '\n' && p[e] != '\r')
                e++;
            if (e >= len && i == len && line_no > 0)
                break; /* the line the added "\n" ends */
            if (line_no > 0) {
                sb_putc(&b, '\n');
                if (e > i || (blank && truthy(blank)))
                    sb_put(&b, ind.u.s.p, ind.u.s.n);
            }
            sb_put(&b, p + i, e - i);
            line_no++;
            if (e >= len)
                break;
            i = e + (p[e] == '\r' && e + 1 < len && p[e + 1] == '\n' ? 2 : 1);
            if (i == len) {
                sb_putc(&b, '\n');
                if (blank && truthy(blank))
                    sb_put(&b, ind.u.s.p, ind.u.s.n);
                break;
            }
        }
        return sb_value(c, at, &b, out);
    }
    if (IS("wordcount")) {
        if (to_str(c, at, v, &x) || str_split(c, at, &x, &V_NULL, -1, out))
            return -EINVAL;
        *out = vint((long long)out->u.l->n);
        return 0;
    }
    return r_fail(c, at, "no filter named '%s'", name);
#undef IS
}

/* ---------------------------------------------------------------- tests */

static int apply_test(rctx_t *c, const jn_t *at, const char *name, const jv_t *v, args_t *a,
                      frame_t *f, int *out)
{
    (void)f;
    const jv_t *a0 = arg(a, 0, NULL);
#define IS(s) (strcmp(name, (s)) == 0)
    if (IS("defined"))
        *out = v->t != V_UNDEF;
    else if (IS("undefined"))
        *out = v->t == V_UNDEF;
    else if (IS("none"))
        *out = v->t == V_NONE;
    else if (IS("string"))
        *out = v->t == V_STR;
    else if (IS("number"))
        *out = is_num(v);
    else if (IS("integer"))
        *out = v->t == V_INT;
    else if (IS("float"))
        *out = v->t == V_FLOAT;
    else if (IS("boolean"))
        *out = v->t == V_BOOL;
    else if (IS("true"))
        *out = v->t == V_BOOL && v->u.b;
    else if (IS("false"))
        *out = v->t == V_BOOL && !v->u.b;
    else if (IS("mapping"))
        *out = v->t == V_DICT;
    else if (IS("iterable"))
        *out = v->t == V_STR || v->t == V_LIST || v->t == V_DICT || v->t == V_UNDEF;
    else if (IS("sequence"))
        *out = v->t == V_STR || v->t == V_LIST || v->t == V_DICT;
    else if (IS("callable"))
        *out = v->t == V_FUNC;
    else if (IS("lower") || IS("upper")) {
        jv_t t;
        jfunc_t fn = {.kind = F_METHOD, .name = IS("lower") ? "islower" : "isupper"};
        args_t none = {0};
        if (to_str(c, at, v, &fn.self) || call_method(c, at, &fn, &none, &t))
            return -EINVAL;
        *out = t.u.b;
    } else if (IS("odd") || IS("even") || IS("divisibleby")) {
        if (v->t != V_INT && v->t != V_BOOL)
            return r_fail(c, at, "test '%s' needs an integer, not '%s'", name, type_name(v));
        long long d = IS("divisibleby") ? (a0 && (a0->t == V_INT) ? a0->u.i : 0) : 2;
        if (!d)
            return r_fail(c, at, "divisibleby needs a non-zero integer");
        long long m = num_i(v) % d;
        *out = IS("odd") ? m != 0 : m == 0;
    } else if (IS("sameas")) {
        if (!a0)
            return r_fail(c, at, "test 'sameas' needs an argument");
        *out = v->t == a0->t && (v->t == V_NONE || v->t == V_UNDEF ||
                                 (v->t == V_BOOL && v->u.b == a0->u.b) ||
                                 (v->t != V_BOOL && memcmp(&v->u, &a0->u, sizeof v->u) == 0));
    } else {
        static const struct {
            const char *name;
            int op;
        } cmps[] = {{"equalto", OP_EQ}, {"eq", OP_EQ}, {"==", OP_EQ}, {"ne", OP_NE},
                    {"!=", OP_NE}, {"lt", OP_LT}, {"lessthan", OP_LT}, {"<", OP_LT},
                    {"le", OP_LE}, {"<=", OP_LE}, {"gt", OP_GT}, {"greaterthan", OP_GT},
                    {">", OP_GT}, {"ge", OP_GE}, {">=", OP_GE}, {"in", OP_IN}};
        for (size_t i = 0; i < FD_ARRAY_LEN(cmps); i++)
            if (IS(cmps[i].name)) {
                if (!a0)
                    return r_fail(c, at, "test '%s' needs an argument", name);
                return compare(c, at, cmps[i].op, v, a0, out);
            }
        return r_fail(c, at, "no test named '%s'", name);
    }
    return 0;
#undef IS
}

/* ---------------------------------------------------------------- statements */

static int assign(rctx_t *c, const jn_t *target, const jv_t *v, frame_t *f)
{
    if (target->k == N_NAME)
        return frame_set(c, f, target->s, *v);
    if (target->k == N_ATTR) {
        const jv_t *ns = frame_get(f, target->a->s, target->a->n);
        if (!ns || ns->t != V_NS)
            return r_fail(c, target, "cannot assign attribute on non-namespace object");
        if (dict_set(&c->ar, ns->u.d, vstr(target->s, target->n), *v))
            return r_oom(c, target);
        return 0;
    }
    /* a tuple of names: unpack */
    jlist_t *l;
    if (v->t != V_LIST) {
        if (v->t == V_STR || v->t == V_DICT) {
            if (iter_list(c, target, v, &l))
                return -EINVAL;
        } else {
            return r_fail(c, target, "cannot unpack non-iterable %s object", type_name(v));
        }
    } else {
        l = v->u.l;
    }
    if (l->n != target->nl)
        return r_fail(c, target, "%s values to unpack (expected %zu, got %zu)",
                      l->n < target->nl ? "not enough" : "too many", target->nl, l->n);
    for (size_t i = 0; i < l->n; i++)
        if (assign(c, target->l[i], &l->v[i], f))
            return -EINVAL;
    return 0;
}

static int capture(rctx_t *c, const jn_t *at, jn_t *const *l, size_t n, frame_t *f, jv_t *out)
{
    sb_t b = {.limit = c->lim.max_output};
    sb_t *saved = c->out;
    c->out = &b;
    int rc = exec_body(c, l, n, f);
    c->out = saved;
    if (rc < 0) {
        free(b.p);
        return rc;
    }
    return sb_value(c, at, &b, out);
}

static int filter_hole(rctx_t *c, const jn_t *chain, const jv_t *in, frame_t *f, jv_t *out)
{
    jv_t saved = c->hole;
    c->hole = *in;
    int rc = eval(c, chain, f, out);
    c->hole = saved;
    return rc;
}

static int exec_for(rctx_t *c, const jn_t *n, frame_t *f)
{
    jv_t it;
    jlist_t *l;
    int rc;
    if ((rc = eval(c, n->b, f, &it)))
        return rc;
    if (it.t == V_NONE || it.t == V_NS)
        return r_fail(c, n->b, "'%s' object is not iterable", type_name(&it));
    if ((rc = iter_list(c, n->b, &it, &l)))
        return rc;
    frame_t fr = {.parent = f};
    if (n->c) { /* for x in xs if cond: the loop sees the kept items only */
        jlist_t *kept = new_list(c, l->n);
        if (!kept)
            return r_oom(c, n);
        size_t k = 0;
        for (size_t i = 0; i < l->n; i++) {
            jv_t t;
            fr.n = 0;
            if ((rc = step(c, n)) || (rc = assign(c, n->a, &l->v[i], &fr)) ||
                (rc = eval(c, n->c, &fr, &t)))
                return rc;
            if (truthy(&t))
                kept->v[k++] = l->v[i];
        }
        kept->n = k;
        l = kept;
    }
    jloop_t lp = {.n = l->n, .items = l};
    jv_t loopv = {.t = V_LOOP, .u.lp = &lp};
    for (size_t i = 0; i < l->n; i++) {
        lp.i = i;
        fr.n = 0; /* each iteration starts afresh: a set in the body lasts one iteration */
        if ((rc = step(c, n)) || (rc = assign(c, n->a, &l->v[i], &fr)) ||
            (rc = frame_set(c, &fr, "loop", loopv)))
            return rc;
        rc = exec_body(c, n->l, n->nl, &fr);
        if (rc == JX_BREAK)
            break;
        if (rc < 0)
            return rc;
    }
    if (!l->n && n->nl2)
        return exec_body(c, n->l2, n->nl2, f);
    return 0;
}

static int exec_one(rctx_t *c, const jn_t *n, frame_t *f)
{
    jv_t v;
    int rc;
    switch (n->k) {
    case N_TEXT:
        sb_put(c->out, n->s, n->n);
        return c->out->err ? sb_fail(c, n, c->out->err) : 0;
    case N_OUT:
        if ((rc = eval(c, n->a, f, &v)))
            return rc;
        put_str(c->out, &v, 0);
        return c->out->err ? sb_fail(c, n, c->out->err) : 0;
    case N_IF:
        if ((rc = eval(c, n->a, f, &v)))
            return rc;
        return truthy(&v) ? exec_body(c, n->l, n->nl, f) : exec_body(c, n->l2, n->nl2, f);
    case N_FOR:
        return exec_for(c, n, f);
    case N_SET:
        if ((rc = eval(c, n->b, f, &v)))
            return rc;
        return assign(c, n->a, &v, f);
    case N_SETBLOCK:
        if ((rc = capture(c, n, n->l, n->nl, f, &v)))
            return rc;
        if (n->b && (rc = filter_hole(c, n->b, &v, f, &v)))
            return rc;
        return assign(c, n->a, &v, f);
    case N_FILTERBLOCK:
        if ((rc = capture(c, n, n->l, n->nl, f, &v)) || (rc = filter_hole(c, n->b, &v, f, &v)))
            return rc;
        put_str(c->out, &v, 0);
        return c->out->err ? sb_fail(c, n, c->out->err) : 0;
    case N_MACRO:
    case N_CALLBLOCK: {
        jfunc_t *fn = r_alloc(c, sizeof *fn);
        if (!fn)
            return r_oom(c, n);
        *fn = (jfunc_t){.kind = n->k == N_MACRO ? F_MACRO : F_CALLER, .m = n, .closure = f};
        if (n->k == N_MACRO)
            return frame_set(c, f, n->s, (jv_t){.t = V_FUNC, .u.fn = fn});
        c->caller_pending = fn;
        rc = eval(c, n->a, f, &v);
        c->caller_pending = NULL;
        if (rc)
            return rc;
        put_str(c->out, &v, 0);
        return c->out->err ? sb_fail(c, n, c->out->err) : 0;
    }
    case N_BREAK:
        return JX_BREAK;
    case N_CONTINUE:
        return JX_CONTINUE;
    default:
        return r_fail(c, n, "internal error: node %d is not a statement", n->k);
    }
}

static int exec_body(rctx_t *c, jn_t *const *l, size_t n, frame_t *f)
{
    for (size_t i = 0; i < n; i++) {
        int rc = exec_one(c, l[i], f);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- API */

int jinja_parse(const char *src, size_t len, jinja_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen)
        err[0] = 0;
    jinja_t *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    int rc = -ENOMEM;
    t->src = ar_alloc(&t->ar, len + 1);
    if (!t->src)
        goto fail;
    /* as jinja2 reads a source: newlines made "\n", one at the very end dropped */
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            t->src[k++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            t->src[k++] = src[i];
        }
    }
    if (k && t->src[k - 1] == '\n')
        k--;
    t->src[k] = 0;
    t->len = k;
    lex_t x = {.t = t, .err = err, .errlen = errlen};
    if ((rc = lex_all(&x))) {
        free(x.toks);
        goto fail;
    }
    parser_t p = {.t = t, .tk = x.toks, .err = err, .errlen = errlen};
    vec_t body = {0};
    rc = p_body(&p, NULL, &body, NULL, NULL);
    free(x.toks);
    if (rc)
        goto fail;
    t->body = (jn_t **)body.p;
    t->n_body = body.n;
    *out = t;
    return 0;
fail:
    if (rc == -ENOMEM && errlen)
        snprintf(err, errlen, "out of memory parsing the template");
    jinja_free(t);
    return rc;
}

void jinja_free(jinja_t *t)
{
    if (!t)
        return;
    ar_free(&t->ar);
    free(t);
}

int jinja_uses(const jinja_t *t, const char *name)
{
    for (size_t i = 0; i < t->n_names; i++)
        if (strcmp(t->names[i], name) == 0)
            return 1;
    return 0;
}

int jinja_render(const jinja_t *t, const char *vars_json, const jinja_limits_t *lim,
                 char **out, size_t *len, char *err, size_t errlen)
{
    static char dummy[1];
    rctx_t c = {.t = t, .err = errlen ? err : dummy, .errlen = errlen ? errlen : 1};
    c.err[0] = 0;
    *out = NULL;
    *len = 0;
    if (lim)
        c.lim = *lim;
    if (!c.lim.max_output)
        c.lim.max_output = 64u << 20;
    if (!c.lim.max_steps)
        c.lim.max_steps = 10000000;
    if (!c.lim.max_depth)
        c.lim.max_depth = 50;
    if (!c.lim.max_memory)
        c.lim.max_memory = 256u << 20;
    c.ar.limit = c.lim.max_memory;
    sb_t o = {.limit = c.lim.max_output};
    c.out = &o;
    frame_t root = {0};
    c.root = &root;
    jv_t vars;
    jin_t j = {.a = &c.ar, .p = vars_json ? vars_json : "{}",
               .end = (vars_json ? vars_json : "{}") + strlen(vars_json ? vars_json : "{}")};
    int rc = jin_value(&j, &vars);
    if (!rc) {
        jin_ws(&j);
        if (j.p != j.end || vars.t != V_DICT)
            rc = -EINVAL;
    }
    if (rc) {
        if (rc == -EINVAL)
            snprintf(c.err, c.errlen, "the template's variables are not a JSON object");
        else
            snprintf(c.err, c.errlen, "out of memory reading the template's variables");
        ar_free(&c.ar);
        return rc;
    }
    for (size_t i = 0; i < vars.u.d->n && !rc; i++)
        rc = frame_set(&c, &root, vars.u.d->k[i].u.s.p, vars.u.d->v[i]);
    if (!rc)
        rc = exec_body(&c, t->body, t->n_body, &root);
    if (rc > 0)
        rc = 0; /* a break outside any loop cannot parse; nothing else is positive */
    if (!rc && o.err)
        rc = sb_fail(&c, NULL, o.err);
    ar_free(&c.ar);
    if (rc) {
        free(o.p);
        return rc;
    }
    if (!o.p) {
        o.p = malloc(1);
        if (!o.p)
            return -ENOMEM;
        o.p[0] = 0;
    }
    *out = o.p;
    *len = o.n;
    return 0;
}
