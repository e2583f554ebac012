/* gbnf.c: the GBNF parser and recognizer (see gbnf.h).
 *
 * Parsing turns each rule into alternatives of elements: a character class or a reference
 * to a rule.  A group becomes a rule of its own, and so does each repetition: x* is
 * R ::= x R | (nothing), x+ is x x*, x? is R ::= x | (nothing), x{m,n} is m copies of x
 * then n - m nested optional ones.  A literal is a sequence of one-character classes.
 *
 * The recognizer keeps every way the text so far can be parsed as a stack of positions:
 * the top is the class the next character must match, each entry below the place to go on
 * from when the rule above it ends.  Stacks are linked lists of interned nodes (position,
 * the node below), so two stacks with the same bottom share it and equal stacks are one id:
 * the set of stacks is a set of ids.  A character advances each stack whose class matches
 * it, then expands the result until every top is a class again (a reference pushes where
 * to go on and opens each of the rule's alternatives; the end of a rule pops).  A reference
 * in tail position pushes nothing, so x* does not grow the stack.  Left recursion would
 * expand forever: the parser refuses it. */
#include "engine/gbnf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/unicode.h"

enum { E_END = 0, E_CHAR, E_REF, E_ALT };

typedef struct gb_elem {
    uint8_t kind;
    int32_t v;                  /* CHAR: class; REF: rule */
} gb_elem_t;

typedef struct gb_range {
    uint32_t lo, hi;
} gb_range_t;

typedef struct gb_class {
    uint32_t first, n;          /* ranges, sorted and merged (none touch) */
    bool neg;
} gb_class_t;

struct gb_grammar {
    gb_elem_t *el;              /* each alternative's elements, then E_END */
    uint32_t n_el;
    uint32_t *alt;              /* where each alternative starts in el */
    uint32_t *rule_alt;         /* rule r's alternatives: alt[rule_alt[r] .. rule_alt[r + 1]) */
    int n_rules, root;
    gb_class_t *cls;
    gb_range_t *rng;
};

/* ---- parsing ---- */

typedef struct prule {
    gb_elem_t *e;               /* alternatives separated by E_ALT */
    uint32_t n, cap;
    char *name;                 /* NULL for a group's or a repetition's rule */
    int origin;                 /* the named rule it was written in */
    bool defined;
    size_t def_off, ref_off;    /* where it is defined, first referenced */
} prule_t;

typedef struct parser {
    const char *s;
    size_t len, pos;
    prule_t *rules;
    int n_rules, cap_rules;
    int *hash;                  /* named rules by name, open addressing, -1 empty */
    uint32_t hmask;
    gb_range_t *rng;
    uint32_t n_rng, cap_rng;
    gb_class_t *cls;
    uint32_t n_cls, cap_cls;
    size_t total;               /* elements in all rules */
    int depth;                  /* groups open */
    char *err;
    size_t errlen;
    int rc;
} parser_t;

#define GB_MAX_NEST 200
#define STR_(x) #x
#define STR(x) STR_(x)

static int fail_at(parser_t *P, size_t off, const char *fmt, ...) FD_PRINTF(3, 4);
static int fail_at(parser_t *P, size_t off, const char *fmt, ...)
{
    if (P->rc)
        return -1;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < off && i < P->len; i++) {
        if (P->s[i] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)P->s[i] & 0xC0) != 0x80) {
            col++;
        }
    }
    int k = snprintf(P->err, P->errlen, "line %zu, column %zu: ", line, col);
    if (k >= 0 && (size_t)k < P->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(P->err + k, P->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    P->rc = -EINVAL;
    return -1;
}

static int too_big(parser_t *P, const char *what)
{
    if (P->rc)
        return -1;
    snprintf(P->err, P->errlen, "the grammar is too large: %s", what);
    P->rc = FD_ERANGE;
    return -1;
}

static int nomem(parser_t *P)
{
    if (!P->rc) {
        snprintf(P->err, P->errlen, "out of memory");
        P->rc = -ENOMEM;
    }
    return -1;
}

static int grow(parser_t *P, void **p, uint32_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t c = FD_MAX(need, *cap ? (size_t)*cap * 2 : 8);
    void *q = realloc(*p, c * size);
    if (!q)
        return nomem(P);
    *p = q;
    *cap = (uint32_t)c;
    return 0;
}

static int new_rule(parser_t *P, const char *name, size_t nlen, int origin)
{
    if (P->n_rules >= GB_MAX_RULES)
        return too_big(P, "more than " STR(GB_MAX_RULES) " rules (groups and repetitions "
                       "make rules too)");
    if (P->n_rules == P->cap_rules) {
        int c = P->cap_rules ? P->cap_rules * 2 : 16;
        prule_t *q = realloc(P->rules, (size_t)c * sizeof *q);
        if (!q)
            return nomem(P);
        P->rules = q;
        P->cap_rules = c;
    }
    prule_t *r = &P->rules[P->n_rules];
    memset(r, 0, sizeof *r);
    r->origin = origin < 0 ? P->n_rules : origin;
    if (name) {
        if (!(r->name = malloc(nlen + 1)))
            return nomem(P);
        memcpy(r->name, name, nlen);
        r->name[nlen] = 0;
    }
    return P->n_rules++;
}

static uint32_t name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* The named rule, made (undefined) when new.  -1 on failure. */
static int rule_by_name(parser_t *P, const char *s, size_t n)
{
    uint32_t h = name_hash(s, n) & P->hmask;
    for (;; h = (h + 1) & P->hmask) {
        int id = P->hash[h];
        if (id < 0)
            break;
        if (strlen(P->rules[id].name) == n && memcmp(P->rules[id].name, s, n) == 0)
            return id;
    }
    int id = new_rule(P, s, n, -1);
    if (id < 0)
        return -1;
    P->hash[h] = id;
    return id;
}

static int emit(parser_t *P, int r, int kind, int32_t v)
{
    if (++P->total > GB_MAX_ELEMS)
        return too_big(P, "more than " STR(GB_MAX_ELEMS) " elements");
    prule_t *ru = &P->rules[r];
    if (grow(P, (void **)&ru->e, &ru->cap, (size_t)ru->n + 1, sizeof *ru->e) < 0)
        return -1;
    ru->e[ru->n++] = (gb_elem_t){ (uint8_t)kind, v };
    return 0;
}

static int range_cmp(const void *x, const void *y)
{
    const gb_range_t *a = x, *b = y;
    return (a->lo > b->lo) - (a->lo < b->lo);
}

/* A class of the ranges rng[first ..] (sorted and merged here). */
static int new_class(parser_t *P, uint32_t first, bool neg)
{
    uint32_t n = P->n_rng - first, m = 0;
    gb_range_t *r = n ? P->rng + first : NULL;
    if (n)
        qsort(r, n, sizeof *r, range_cmp);
    for (uint32_t i = 0; i < n; i++) {
        if (m > 0 && r[i].lo <= r[m - 1].hi + 1) {
            r[m - 1].hi = FD_MAX(r[m - 1].hi, r[i].hi);
        } else {
            r[m++] = r[i];
        }
    }
    P->n_rng = first + m;
    if (grow(P, (void **)&P->cls, &P->cap_cls, (size_t)P->n_cls + 1, sizeof *P->cls) < 0)
        return -1;
    P->cls[P->n_cls] = (gb_class_t){ first, m, neg };
    return (int)P->n_cls++;
}

static int add_range(parser_t *P, uint32_t lo, uint32_t hi)
{
    if (P->n_rng >= GB_MAX_ELEMS)
        return too_big(P, "more than " STR(GB_MAX_ELEMS) " character ranges");
    if (grow(P, (void **)&P->rng, &P->cap_rng, (size_t)P->n_rng + 1, sizeof *P->rng) < 0)
        return -1;
    P->rng[P->n_rng++] = (gb_range_t){ lo, hi };
    return 0;
}

static int emit_char(parser_t *P, int r, uint32_t c)
{
    uint32_t first = P->n_rng;
    if (add_range(P, c, c) < 0)
        return -1;
    int k = new_class(P, first, false);
    return k < 0 ? -1 : emit(P, r, E_CHAR, k);
}

static inline int peek(const parser_t *P)
{
    return P->pos < P->len ? (unsigned char)P->s[P->pos] : -1;
}

static inline bool is_word(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-';
}

static void skip_space(parser_t *P, bool newline_ok)
{
    for (;;) {
        int c = peek(P);
        if (c == ' ' || c == '\t') {
            P->pos++;
        } else if (c == '#') {
            while (P->pos < P->len && P->s[P->pos] != '\n' && P->s[P->pos] != '\r')
                P->pos++;
        } else if ((c == '\n' || c == '\r') && newline_ok) {
            P->pos++;
        } else {
            return;
        }
    }
}

static int hex_digits(parser_t *P, int n, uint32_t *out)
{
    uint32_t v = 0;
    size_t at = P->pos;
    for (int i = 0; i < n; i++) {
        int h = fd_hex_digit(peek(P));
        if (h < 0)
            return fail_at(P, P->pos, "expected %d hexadecimal digits after the escape", n);
        v = v * 16 + (uint32_t)h;
        P->pos++;
    }
    if (v > 0x10FFFF)
        return fail_at(P, at, "escape beyond U+10FFFF");
    *out = v;
    return 0;
}

/* One character of a literal or class: an escape or a UTF-8 sequence. */
static int parse_char(parser_t *P, uint32_t *out)
{
    size_t at = P->pos;
    int c = peek(P);
    if (c == '\\') {
        P->pos++;
        c = peek(P);
        P->pos++;
        switch (c) {
        case 'n': *out = '\n'; return 0;
        case 'r': *out = '\r'; return 0;
        case 't': *out = '\t'; return 0;
        case '\\': case '"': case '[': case ']': case '-': *out = (uint32_t)c; return 0;
        case 'x': return hex_digits(P, 2, out);
        case 'u': return hex_digits(P, 4, out);
        case 'U': return hex_digits(P, 8, out);
        case -1: return fail_at(P, at, "unterminated escape at the end of the grammar");
        default:
            if (c >= 0x20 && c < 0x7f)
                return fail_at(P, at, "unknown escape '\\%c'", c);
            return fail_at(P, at, "unknown escape");
        }
    }
    uint32_t v;
    int n = uni_scan((const uint8_t *)P->s + P->pos, P->len - P->pos, &v);
    if (n <= 0)
        return fail_at(P, at, "invalid UTF-8");
    P->pos += (size_t)n;
    *out = v;
    return 0;
}

static int parse_literal(parser_t *P, int r)
{
    size_t open = P->pos++;
    for (;;) {
        int c = peek(P);
        if (c < 0)
            return fail_at(P, open, "unterminated string literal");
        if (c == '"') {
            P->pos++;
            return 0;
        }
        uint32_t v;
        if (parse_char(P, &v) < 0 || emit_char(P, r, v) < 0)
            return -1;
    }
}

static int parse_class(parser_t *P, int r)
{
    size_t open = P->pos++;
    bool neg = false;
    if (peek(P) == '^') {
        neg = true;
        P->pos++;
    }
    uint32_t first = P->n_rng;
    for (;;) {
        int c = peek(P);
        if (c < 0)
            return fail_at(P, open, "unterminated character class");
        if (c == ']') {
            P->pos++;
            break;
        }
        size_t at = P->pos;
        uint32_t lo, hi;
        if (parse_char(P, &lo) < 0)
            return -1;
        hi = lo;
        if (peek(P) == '-' && P->pos + 1 < P->len && P->s[P->pos + 1] != ']') {
            P->pos++;
            if (parse_char(P, &hi) < 0)
                return -1;
            if (hi < lo)
                return fail_at(P, at, "character range out of order (U+%04X after U+%04X)",
                               hi, lo);
        }
        if (add_range(P, lo, hi) < 0)
            return -1;
    }
    int k = new_class(P, first, neg);
    return k < 0 ? -1 : emit(P, r, E_CHAR, k);
}

static int parse_alternates(parser_t *P, int r, bool nested);

static int parse_int(parser_t *P, long *out)
{
    size_t at = P->pos;
    long v = 0;
    if (peek(P) < '0' || peek(P) > '9')
        return fail_at(P, at, "expected a number");
    while (peek(P) >= '0' && peek(P) <= '9') {
        v = v * 10 + (peek(P) - '0');
        P->pos++;
        if (v > GB_MAX_REPEAT)
            return fail_at(P, at, "repetition count above %d", GB_MAX_REPEAT);
    }
    *out = v;
    return 0;
}

/* Replaces the last symbol of rule r (its elements from `from`) with min..max (max < 0: no
 * bound) of it. */
static int repeat(parser_t *P, int r, uint32_t from, long min, long max)
{
    prule_t *ru = &P->rules[r];
    uint32_t n = ru->n - from;
    long copies = min + (max < 0 ? 1 : max - min);
    if ((size_t)n * (size_t)(copies + 1) + P->total > GB_MAX_ELEMS)
        return too_big(P, "repetitions expand past " STR(GB_MAX_ELEMS) " elements");
    gb_elem_t *sym = malloc((size_t)FD_MAX(n, 1u) * sizeof *sym);
    if (!sym)
        return nomem(P);
    if (n)
        memcpy(sym, ru->e + from, (size_t)n * sizeof *sym);
    P->total -= n;
    ru->n = from;
    int origin = ru->origin, rc = 0;
    for (long i = 0; i < min && rc == 0; i++)
        for (uint32_t k = 0; k < n && rc == 0; k++)
            rc = emit(P, r, sym[k].kind, sym[k].v);
    if (rc == 0 && max < 0) {
        int R = new_rule(P, NULL, 0, origin);
        rc = R < 0 ? -1 : 0;
        for (uint32_t k = 0; k < n && rc == 0; k++)
            rc = emit(P, R, sym[k].kind, sym[k].v);
        if (rc == 0 && (rc = emit(P, R, E_REF, R)) == 0 && (rc = emit(P, R, E_ALT, 0)) == 0)
            rc = emit(P, r, E_REF, R);
    } else if (rc == 0 && max > min) {
        int prev = -1;
        for (long j = 0; j < max - min && rc == 0; j++) {
            int O = new_rule(P, NULL, 0, origin);
            rc = O < 0 ? -1 : 0;
            for (uint32_t k = 0; k < n && rc == 0; k++)
                rc = emit(P, O, sym[k].kind, sym[k].v);
            if (rc == 0 && prev >= 0)
                rc = emit(P, O, E_REF, prev);
            if (rc == 0)
                rc = emit(P, O, E_ALT, 0);
            prev = O;
        }
        if (rc == 0)
            rc = emit(P, r, E_REF, prev);
    }
    free(sym);
    return rc;
}

static int parse_sequence(parser_t *P, int r, bool nested)
{
    uint32_t last = UINT32_MAX;     /* where the last symbol starts */
    for (;;) {
        int c = peek(P);
        size_t at = P->pos;
        uint32_t here = P->rules[r].n;
        if (c == '"') {
            if (parse_literal(P, r) < 0)
                return -1;
            last = here;
        } else if (c == '[') {
            if (parse_class(P, r) < 0)
                return -1;
            last = here;
        } else if (c == '.') {
            P->pos++;
            int k = new_class(P, P->n_rng, true);
            if (k < 0 || emit(P, r, E_CHAR, k) < 0)
                return -1;
            last = here;
        } else if (is_word(c)) {
            size_t b = P->pos;
            while (is_word(peek(P)))
                P->pos++;
            int t = rule_by_name(P, P->s + b, P->pos - b);
            if (t < 0)
                return -1;
            if (!P->rules[t].defined && P->rules[t].ref_off == 0)
                P->rules[t].ref_off = b + 1;
            if (emit(P, r, E_REF, t) < 0)
                return -1;
            last = here;
        } else if (c == '(') {
            if (++P->depth > GB_MAX_NEST)
                return fail_at(P, at, "groups nested more than %d deep", GB_MAX_NEST);
            P->pos++;
            skip_space(P, true);
            int sub = new_rule(P, NULL, 0, P->rules[r].origin);
            if (sub < 0 || parse_alternates(P, sub, true) < 0)
                return -1;
            if (peek(P) != ')')
                return peek(P) < 0 ? fail_at(P, at, "unclosed '('")
                                   : fail_at(P, P->pos, "expected ')' or '|'");
            P->pos++;
            P->depth--;
            if (emit(P, r, E_REF, sub) < 0)
                return -1;
            last = here;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            if (last == UINT32_MAX)
                return fail_at(P, at, "'%c' repeats nothing: it must follow a symbol", c);
            long min = 0, max = -1;
            P->pos++;
            if (c == '+') {
                min = 1;
            } else if (c == '?') {
                max = 1;
            } else if (c == '{') {
                skip_space(P, nested);
                if (parse_int(P, &min) < 0)
                    return -1;
                skip_space(P, nested);
                if (peek(P) == ',') {
                    P->pos++;
                    skip_space(P, nested);
                    if (peek(P) >= '0' && peek(P) <= '9') {
                        size_t mat = P->pos;
                        if (parse_int(P, &max) < 0)
                            return -1;
                        if (max < min)
                            return fail_at(P, mat, "repetition maximum %ld below its "
                                           "minimum %ld", max, min);
                    }
                } else {
                    max = min;
                }
                skip_space(P, nested);
                if (peek(P) != '}')
                    return fail_at(P, P->pos, "expected '}' to close the repetition");
                P->pos++;
            }
            if (repeat(P, r, last, min, max) < 0)
                return -1;
            last = UINT32_MAX;
        } else if (c == '<') {
            return fail_at(P, at, "token references (<...>) are not supported");
        } else {
            return 0;
        }
        skip_space(P, nested);
    }
}

static int parse_alternates(parser_t *P, int r, bool nested)
{
    for (;;) {
        if (parse_sequence(P, r, nested) < 0)
            return -1;
        if (peek(P) != '|')
            return 0;
        P->pos++;
        skip_space(P, true);
        if (emit(P, r, E_ALT, 0) < 0)
            return -1;
    }
}

static int parse_rules(parser_t *P)
{
    skip_space(P, true);
    while (P->pos < P->len) {
        size_t at = P->pos;
        if (!is_word(peek(P)))
            return fail_at(P, at, "expected a rule name");
        while (is_word(peek(P)))
            P->pos++;
        int r = rule_by_name(P, P->s + at, P->pos - at);
        if (r < 0)
            return -1;
        if (P->rules[r].defined) {
            size_t def = P->rules[r].def_off;
            parser_t tmp = *P;
            char where[64];
            tmp.err = where;
            tmp.errlen = sizeof where;
            tmp.rc = 0;
            fail_at(&tmp, def, "x");
            *strchr(where, ':') = 0;
            return fail_at(P, at, "rule '%s' defined again (first at %s)", P->rules[r].name,
                           where);
        }
        P->rules[r].defined = true;
        P->rules[r].def_off = at;
        skip_space(P, false);
        if (P->pos + 3 > P->len || memcmp(P->s + P->pos, "::=", 3) != 0)
            return fail_at(P, P->pos, "expected '::=' after the rule name '%s'",
                           P->rules[r].name);
        P->pos += 3;
        skip_space(P, true);
        if (parse_alternates(P, r, false) < 0)
            return -1;
        int c = peek(P);
        if (c == ')')
            return fail_at(P, P->pos, "unmatched ')'");
        if (c >= 0 && c != '\n' && c != '\r')
            return fail_at(P, P->pos, c >= 0x20 && c < 0x7f ? "unexpected '%c'"
                                                          : "unexpected byte 0x%02x", c);
        skip_space(P, true);
    }
    return 0;
}

/* Nullable rules, then the rules each can reach before any character: a cycle there is
 * left recursion. */
static int check_rules(parser_t *P)
{
    const int n = P->n_rules;
    bool *null = calloc((size_t)n, sizeof *null);
    int *state = calloc((size_t)n, sizeof *state), *stk = malloc((size_t)n * 3 * sizeof *stk);
    if (!null || !state || !stk) {
        free(null);
        free(state);
        free(stk);
        return nomem(P);
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (int r = 0; r < n; r++) {
            if (null[r])
                continue;
            const prule_t *ru = &P->rules[r];
            bool all = true;
            for (uint32_t i = 0; i <= ru->n; i++) {
                if (i == ru->n || ru->e[i].kind == E_ALT) {
                    if (all) {
                        null[r] = changed = true;
                        break;
                    }
                    all = true;
                } else if (ru->e[i].kind == E_CHAR ||
                           (ru->e[i].kind == E_REF && !null[ru->e[i].v])) {
                    all = false;
                }
            }
        }
    }
    /* depth-first over "can start with" edges: state 0 new, 1 on the path, 2 done; the
     * stack holds (rule, next element to look at, whether all before it are nullable) */
    int rc = 0;
    for (int s = 0; s < n && rc == 0; s++) {
        if (state[s])
            continue;
        int sp = 0;
        stk[sp++] = s;
        stk[sp++] = 0;
        stk[sp++] = 1;
        state[s] = 1;
        while (sp > 0 && rc == 0) {
            int r = stk[sp - 3];
            uint32_t i = (uint32_t)stk[sp - 2];
            bool head = stk[sp - 1];
            const prule_t *ru = &P->rules[r];
            int next = -1;
            for (; i < ru->n; i++) {
                const gb_elem_t *e = &ru->e[i];
                if (e->kind == E_ALT) {
                    head = true;
                    continue;
                }
                if (head && e->kind == E_REF && next < 0) {
                    next = e->v;
                    head = null[e->v];
                    i++;
                    break;
                }
                if (e->kind == E_CHAR || (e->kind == E_REF && !null[e->v]))
                    head = false;
            }
            stk[sp - 2] = (int)i;
            stk[sp - 1] = head;
            if (next < 0) {
                state[r] = 2;
                sp -= 3;
                continue;
            }
            if (state[next] == 1) {
                const prule_t *o = &P->rules[P->rules[next].origin];
                rc = fail_at(P, o->def_off, "rule '%s' is left-recursive: it can reach "
                             "itself before any character (write it right-recursive; a "
                             "repetition of something that can be empty counts too)",
                             o->name ? o->name : "?");
            } else if (state[next] == 0) {
                state[next] = 1;
                stk[sp++] = next;
                stk[sp++] = 0;
                stk[sp++] = 1;
            }
        }
    }
    free(null);
    free(state);
    free(stk);
    return rc;
}

static int flatten(parser_t *P, gb_grammar_t *g)
{
    size_t n_el = 0, n_alt = 0;
    for (int r = 0; r < P->n_rules; r++) {
        n_alt++;
        for (uint32_t i = 0; i < P->rules[r].n; i++)
            n_alt += P->rules[r].e[i].kind == E_ALT;
        n_el += P->rules[r].n + 1;
    }
    g->el = malloc(n_el * sizeof *g->el);
    g->alt = malloc(n_alt * sizeof *g->alt);
    g->rule_alt = malloc(((size_t)P->n_rules + 1) * sizeof *g->rule_alt);
    g->cls = malloc((size_t)FD_MAX(P->n_cls, 1u) * sizeof *g->cls);
    g->rng = malloc((size_t)FD_MAX(P->n_rng, 1u) * sizeof *g->rng);
    if (!g->el || !g->alt || !g->rule_alt || !g->cls || !g->rng)
        return nomem(P);
    if (P->n_cls)
        memcpy(g->cls, P->cls, (size_t)P->n_cls * sizeof *g->cls);
    if (P->n_rng)
        memcpy(g->rng, P->rng, (size_t)P->n_rng * sizeof *g->rng);
    uint32_t e = 0, a = 0;
    for (int r = 0; r < P->n_rules; r++) {
        g->rule_alt[r] = a;
        g->alt[a++] = e;
        for (uint32_t i = 0; i < P->rules[r].n; i++) {
            gb_elem_t x = P->rules[r].e[i];
            if (x.kind == E_ALT) {
                g->el[e++] = (gb_elem_t){ E_END, 0 };
                g->alt[a++] = e;
            } else {
                g->el[e++] = x;
            }
        }
        g->el[e++] = (gb_elem_t){ E_END, 0 };
    }
    g->rule_alt[P->n_rules] = a;
    g->n_el = e;
    g->n_rules = P->n_rules;
    return 0;
}

void gb_free(gb_grammar_t *g)
{
    if (!g)
        return;
    free(g->el);
    free(g->alt);
    free(g->rule_alt);
    free(g->cls);
    free(g->rng);
    free(g);
}

int gb_n_rules(const gb_grammar_t *g)
{
    return g->n_rules;
}

int gb_parse(gb_grammar_t **out, const char *text, size_t len, char *err, size_t errlen)
{
    *out = NULL;
    parser_t P = { .s = text, .len = len, .err = err, .errlen = errlen };
    if (errlen)
        err[0] = 0;
    if (len > GB_MAX_TEXT) {
        too_big(&P, "more than " STR(GB_MAX_TEXT) " bytes of text");
        return P.rc;
    }
    const char *nul = memchr(text, 0, len);
    if (nul) {
        fail_at(&P, (size_t)(nul - text), "a NUL byte");
        return P.rc;
    }
    P.hmask = 1024 - 1;
    while (P.hmask + 1 < 2u * GB_MAX_RULES && P.hmask + 1 < len)
        P.hmask = P.hmask * 2 + 1;
    P.hash = malloc(((size_t)P.hmask + 1) * sizeof *P.hash);
    gb_grammar_t *g = calloc(1, sizeof *g);
    if (!P.hash || !g) {
        nomem(&P);
        goto done;
    }
    memset(P.hash, 0xff, ((size_t)P.hmask + 1) * sizeof *P.hash);
    if (parse_rules(&P) < 0)
        goto done;
    int root = -1, named = 0;
    for (int r = 0; r < P.n_rules; r++) {
        const prule_t *ru = &P.rules[r];
        if (!ru->name)
            continue;
        named++;
        if (!ru->defined) {
            fail_at(&P, ru->ref_off - 1, "rule '%s' is used but never defined", ru->name);
            goto done;
        }
        if (strcmp(ru->name, "root") == 0)
            root = r;
    }
    if (named == 0) {
        fail_at(&P, len, "the grammar is empty: it needs at least a rule 'root ::= ...'");
        goto done;
    }
    if (root < 0) {
        fail_at(&P, len, "no rule named 'root' (the start of the grammar)");
        goto done;
    }
    if (check_rules(&P) < 0 || flatten(&P, g) < 0)
        goto done;
    g->root = root;
done:
    for (int r = 0; r < P.n_rules; r++) {
        free(P.rules[r].e);
        free(P.rules[r].name);
    }
    free(P.rules);
    free(P.hash);
    free(P.rng);
    free(P.cls);
    if (P.rc) {
        gb_free(g);
        return P.rc;
    }
    *out = g;
    return 0;
}

/* ---- the recognizer ---- */

typedef struct gnode {
    int32_t pos, parent, next;  /* next: the hash chain (older nodes) */
} gnode_t;

struct gb_pool {
    const gb_grammar_t *g;
    gnode_t *nd;
    uint32_t n, cap;
    int32_t *head;              /* hash buckets: the newest node of each chain */
    uint32_t hmask;
    uint32_t *stamp;            /* the advance that last expanded each node */
    uint32_t cur;
    int32_t *work;              /* the expansion's worklist (GB_MAX_WORK) */
    int32_t *map;               /* gb_compact's scratch (cap entries) */
    /* the transition cache (see gb_cache_reset): slots, and an arena of their stacks */
    struct gb_trans *slot;
    int32_t *arena;
    uint32_t n_arena, n_slots_used, gen, floor;
};

/* A cached advance: the stacks in (arena[in_off ..], in_n of them) and character cp give
 * the stacks arena[out_off ..] (out_n, acc).  Only sets of nodes older than the floor are
 * cached: those outlive every rollback the mask makes. */
typedef struct gb_trans {
    uint32_t gen, hash, cp;
    uint32_t in_off, in_n, out_off, out_n;
    bool acc;
} gb_trans_t;

#define GB_CACHE_SLOTS 4096u
#define GB_CACHE_ARENA (1u << 16)

static inline uint32_t node_hash(int32_t pos, int32_t parent)
{
    uint64_t k = (uint64_t)(uint32_t)pos << 32 | (uint32_t)parent;
    k *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(k >> 32);
}

static int rehash(gb_pool_t *p, uint32_t buckets)
{
    int32_t *h = malloc((size_t)buckets * sizeof *h);
    if (!h)
        return -1;
    memset(h, 0xff, (size_t)buckets * sizeof *h);
    free(p->head);
    p->head = h;
    p->hmask = buckets - 1;
    /* oldest first, so each chain runs newest to oldest, as gb_rollback needs */
    for (uint32_t i = 0; i < p->n; i++) {
        uint32_t b = node_hash(p->nd[i].pos, p->nd[i].parent) & p->hmask;
        p->nd[i].next = h[b];
        h[b] = (int32_t)i;
    }
    return 0;
}

/* The node (pos, parent), made when new; -2 past a limit or out of memory. */
static int32_t intern(gb_pool_t *p, int32_t pos, int32_t parent)
{
    uint32_t b = node_hash(pos, parent) & p->hmask;
    for (int32_t i = p->head[b]; i >= 0; i = p->nd[i].next)
        if (p->nd[i].pos == pos && p->nd[i].parent == parent)
            return i;
    if (p->n >= GB_MAX_NODES)
        return -2;
    if (p->n == p->cap) {
        uint32_t c = p->cap * 2;
        gnode_t *nd = realloc(p->nd, (size_t)c * sizeof *nd);
        if (!nd)
            return -2;
        p->nd = nd;
        uint32_t *st = realloc(p->stamp, (size_t)c * sizeof *st);
        if (!st)
            return -2;
        memset(st + p->cap, 0, (size_t)(c - p->cap) * sizeof *st);
        p->stamp = st;
        int32_t *map = realloc(p->map, (size_t)c * sizeof *map);
        if (!map)
            return -2;
        p->map = map;
        p->cap = c;
    }
    int32_t id = (int32_t)p->n++;
    p->nd[id] = (gnode_t){ pos, parent, p->head[b] };
    p->head[b] = id;
    if (p->n > 2 * (p->hmask + 1) && rehash(p, 2 * (p->hmask + 1)) < 0) {
        /* the old table is kept as it was and still finds every node */
    }
    return id;
}

int gb_pool_new(gb_pool_t **out, const gb_grammar_t *g)
{
    *out = NULL;
    gb_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->g = g;
    p->cap = 1024;
    p->nd = malloc(p->cap * sizeof *p->nd);
    p->stamp = calloc(p->cap, sizeof *p->stamp);
    p->map = malloc(p->cap * sizeof *p->map);
    p->work = malloc(GB_MAX_WORK * sizeof *p->work);
    p->gen = 1;
    if (!p->nd || !p->stamp || !p->map || !p->work || rehash(p, 1024) < 0) {
        gb_pool_free(p);
        return -ENOMEM;
    }
    *out = p;
    return 0;
}

void gb_pool_free(gb_pool_t *p)
{
    if (!p)
        return;
    free(p->nd);
    free(p->head);
    free(p->stamp);
    free(p->work);
    free(p->map);
    free(p->slot);
    free(p->arena);
    free(p);
}

void gb_cache_off(gb_pool_t *p)
{
    p->floor = 0;
    p->n_arena = 0;
    p->n_slots_used = 0;
    if (++p->gen == 0) {
        if (p->slot)
            memset(p->slot, 0, GB_CACHE_SLOTS * sizeof *p->slot);
        p->gen = 1;
    }
}

void gb_cache_reset(gb_pool_t *p)
{
    gb_cache_off(p);
    /* made at the first use (a pool that only recognizes, gb_match's, never needs it);
     * without memory there is no cache, only the plain advance */
    if (!p->slot) {
        p->slot = calloc(GB_CACHE_SLOTS, sizeof *p->slot);
        p->arena = malloc(GB_CACHE_ARENA * sizeof *p->arena);
        if (!p->slot || !p->arena) {
            free(p->slot);
            free(p->arena);
            p->slot = NULL;
            p->arena = NULL;
            return;
        }
    }
    p->floor = p->n;
}

static inline uint32_t set_hash(const int32_t *t, uint32_t n, uint32_t cp)
{
    uint32_t h = 2166136261u ^ cp * 0x9E3779B1u;
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ (uint32_t)t[i]) * 16777619u;
    return h ^ n;
}

static bool old_nodes(const gb_pool_t *p, const int32_t *t, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (t[i] >= (int32_t)p->floor)
            return false;
    return true;
}

uint32_t gb_mark(const gb_pool_t *p)
{
    return p->n;
}

uint32_t gb_pool_nodes(const gb_pool_t *p)
{
    return p->n;
}

void gb_rollback(gb_pool_t *p, uint32_t mark)
{
    if (mark < p->floor)
        gb_cache_off(p);
    while (p->n > mark) {
        int32_t id = (int32_t)--p->n;
        uint32_t b = node_hash(p->nd[id].pos, p->nd[id].parent) & p->hmask;
        p->head[b] = p->nd[id].next;    /* it is the newest of its chain */
    }
}

static inline bool class_has(const gb_grammar_t *g, const gb_class_t *c, uint32_t cp)
{
    const gb_range_t *r = g->rng + c->first;
    uint32_t lo = 0, hi = c->n;
    while (lo < hi) {
        uint32_t m = lo + (hi - lo) / 2;
        if (r[m].hi < cp)
            lo = m + 1;
        else
            hi = m;
    }
    bool in = lo < c->n && r[lo].lo <= cp;
    return in != c->neg;
}

/* Whether the class has a character in [a, b] (the ranges are merged, so the complement
 * misses [a, b] only when one range covers it). */
static bool class_meets(const gb_grammar_t *g, const gb_class_t *c, uint32_t a, uint32_t b)
{
    const gb_range_t *r = g->rng + c->first;
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->neg && r[i].lo <= a && r[i].hi >= b)
            return false;
        if (!c->neg && r[i].lo <= b && r[i].hi >= a)
            return true;
    }
    return c->neg;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Expands the nodes on the worklist until every stack's top is a class (or the stack is
 * empty) into out.  -1 past a limit. */
static int expand(gb_pool_t *p, uint32_t nw, gb_set_t *out, int32_t *buf)
{
    const gb_grammar_t *g = p->g;
    out->top = buf;
    out->n = 0;
    out->acc = false;
    out->need = 0;
    uint32_t work = 0;
    while (nw > 0) {
        int32_t x = p->work[--nw];
        if (x == -1) {
            if (!out->acc) {
                if (out->n >= GB_MAX_STACKS)
                    return -1;
                buf[out->n++] = -1;
                out->acc = true;
            }
            continue;
        }
        if (x < 0 || p->stamp[x] == p->cur)
            continue;
        p->stamp[x] = p->cur;
        if (++work > GB_MAX_WORK)
            return -1;
        const int32_t pos = p->nd[x].pos, parent = p->nd[x].parent;
        const gb_elem_t *e = &g->el[pos];
        if (e->kind == E_CHAR) {
            if (out->n >= GB_MAX_STACKS)
                return -1;
            buf[out->n++] = x;
        } else if (e->kind == E_END) {
            if (nw >= GB_MAX_WORK)
                return -1;
            p->work[nw++] = parent;
        } else {
            int32_t cont = g->el[pos + 1].kind == E_END ? parent : intern(p, pos + 1, parent);
            if (cont < -1)
                return -1;
            for (uint32_t a = g->rule_alt[e->v]; a < g->rule_alt[e->v + 1]; a++) {
                int32_t y = intern(p, (int32_t)g->alt[a], cont);
                if (y < -1 || nw >= GB_MAX_WORK)
                    return -1;
                p->work[nw++] = y;
            }
        }
    }
    /* in order, so equal sets are equal arrays (the cache compares them so) */
    if (out->n > 16) {
        qsort(buf, out->n, sizeof *buf, cmp_i32);
    } else {
        for (uint32_t i = 1; i < out->n; i++) {
            int32_t v = buf[i];
            uint32_t j = i;
            for (; j > 0 && buf[j - 1] > v; j--)
                buf[j] = buf[j - 1];
            buf[j] = v;
        }
    }
    return 0;
}

static void next_stamp(gb_pool_t *p)
{
    if (++p->cur == 0) {
        memset(p->stamp, 0, (size_t)p->cap * sizeof *p->stamp);
        p->cur = 1;
    }
}

int gb_start(gb_pool_t *p, gb_set_t *s, int32_t *buf)
{
    const gb_grammar_t *g = p->g;
    next_stamp(p);
    uint32_t nw = 0;
    for (uint32_t a = g->rule_alt[g->root]; a < g->rule_alt[g->root + 1]; a++) {
        int32_t y = intern(p, (int32_t)g->alt[a], -1);
        if (y < -1 || nw >= GB_MAX_WORK)
            return -1;
        p->work[nw++] = y;
    }
    return expand(p, nw, s, buf);
}

static int advance_plain(gb_pool_t *p, const gb_set_t *in, gb_set_t *out, int32_t *buf,
                         uint32_t cp)
{
    const gb_grammar_t *g = p->g;
    next_stamp(p);
    uint32_t nw = 0;
    for (uint32_t i = 0; i < in->n; i++) {
        int32_t t = in->top[i];
        if (t < 0)
            continue;
        const int32_t pos = p->nd[t].pos, parent = p->nd[t].parent;
        if (!class_has(g, &g->cls[g->el[pos].v], cp))
            continue;
        int32_t y = intern(p, pos + 1, parent);
        if (y < -1)
            return -1;
        p->work[nw++] = y;
    }
    if (nw == 0)
        return -1;
    return expand(p, nw, out, buf);
}

/* advance_plain through the cache: the mask feeds the same stacks the same character again
 * and again (inside a repetition the stacks after a character are the ones before it). */
static int advance(gb_pool_t *p, const gb_set_t *in, gb_set_t *out, int32_t *buf, uint32_t cp)
{
    if (p->floor == 0 || !old_nodes(p, in->top, in->n))
        return advance_plain(p, in, out, buf, cp);
    const uint32_t h = set_hash(in->top, in->n, cp);
    uint32_t k = h & (GB_CACHE_SLOTS - 1);
    for (int probe = 0; probe < 8; probe++, k = (k + 1) & (GB_CACHE_SLOTS - 1)) {
        const gb_trans_t *e = &p->slot[k];
        if (e->gen != p->gen)
            break;
        if (e->hash == h && e->cp == cp && e->in_n == in->n &&
            memcmp(p->arena + e->in_off, in->top, in->n * sizeof *in->top) == 0) {
            out->top = p->arena + e->out_off;
            out->n = e->out_n;
            out->acc = e->acc;
            out->need = 0;
            return 0;
        }
    }
    int rc = advance_plain(p, in, out, buf, cp);
    if (rc < 0 || !old_nodes(p, out->top, out->n) || p->floor == 0 ||
        p->n_slots_used >= GB_CACHE_SLOTS / 2 ||
        p->n_arena + in->n + out->n > GB_CACHE_ARENA)
        return rc;
    for (int probe = 0; probe < 8; probe++) {
        gb_trans_t *e = &p->slot[(h + (uint32_t)probe) & (GB_CACHE_SLOTS - 1)];
        if (e->gen == p->gen)
            continue;
        *e = (gb_trans_t){ p->gen, h, cp, p->n_arena, in->n, p->n_arena + in->n, out->n,
                           out->acc };
        memcpy(p->arena + p->n_arena, in->top, in->n * sizeof *in->top);
        memcpy(p->arena + p->n_arena + in->n, out->top, out->n * sizeof *out->top);
        p->n_arena += in->n + out->n;
        p->n_slots_used++;
        break;
    }
    return rc;
}

int gb_feed(gb_pool_t *p, const gb_set_t *in, gb_set_t *out, int32_t *buf, uint8_t b)
{
    if (in->need == 0) {
        if (b < 0x80)
            return advance(p, in, out, buf, b);
        uint8_t need, lo = 0x80, hi = 0xBF;
        uint32_t cp;
        if (b >= 0xC2 && b <= 0xDF) {
            need = 1;
            cp = b & 0x1Fu;
        } else if (b >= 0xE0 && b <= 0xEF) {
            need = 2;
            cp = b & 0x0Fu;
            if (b == 0xE0)
                lo = 0xA0;      /* no overlong forms */
            else if (b == 0xED)
                hi = 0x9F;      /* no surrogates */
        } else if (b >= 0xF0 && b <= 0xF4) {
            need = 3;
            cp = b & 0x07u;
            if (b == 0xF0)
                lo = 0x90;
            else if (b == 0xF4)
                hi = 0x8F;      /* nothing above U+10FFFF */
        } else {
            return -1;
        }
        *out = *in;
        out->need = need;
        out->cp = cp;
        out->lo = lo;
        out->hi = hi;
    } else {
        if (b < in->lo || b > in->hi)
            return -1;
        uint32_t cp = in->cp << 6 | (b & 0x3Fu);
        if (in->need == 1) {
            gb_set_t whole = *in;
            whole.need = 0;
            return advance(p, &whole, out, buf, cp);
        }
        *out = *in;
        out->cp = cp;
        out->need = (uint8_t)(in->need - 1);
        out->lo = 0x80;
        out->hi = 0xBF;
    }
    /* some stack must take a character that starts with these bytes: they complete to the
     * code points [a, z], all valid */
    const unsigned k = 6u * out->need;
    const uint32_t a = out->cp << k | (uint32_t)(out->lo & 0x3F) << (k - 6);
    const uint32_t z = out->cp << k | (uint32_t)(out->hi & 0x3F) << (k - 6) |
                       ((1u << (k - 6)) - 1);
    const gb_grammar_t *g = p->g;
    for (uint32_t i = 0; i < out->n; i++) {
        int32_t t = out->top[i];
        if (t >= 0 && class_meets(g, &g->cls[g->el[p->nd[t].pos].v], a, z))
            return 0;
    }
    return -1;
}

int gb_compact(gb_pool_t *p, gb_set_t *s, int32_t *buf)
{
    gb_cache_off(p);
    int32_t *map = p->map;
    for (uint32_t i = 0; i < p->n; i++)
        map[i] = -1;
    /* mark the live nodes: every stack's chain */
    for (uint32_t i = 0; i < s->n; i++)
        for (int32_t t = s->top[i]; t >= 0 && map[t] == -1; t = p->nd[t].parent)
            map[t] = 0;
    /* a parent is always older than its child: renumbering in order keeps that, and the
     * new ids never pass the old ones, so it is done in place */
    uint32_t m = 0;
    for (uint32_t i = 0; i < p->n; i++) {
        if (map[i] < 0)
            continue;
        map[i] = (int32_t)m;
        int32_t par = p->nd[i].parent;
        p->nd[m].pos = p->nd[i].pos;
        p->nd[m].parent = par >= 0 ? map[par] : par;
        m++;
    }
    for (uint32_t i = 0; i < s->n; i++)
        buf[i] = s->top[i] >= 0 ? map[s->top[i]] : -1;
    s->top = buf;
    p->n = m;
    uint32_t buckets = 1024;
    while (buckets < m)
        buckets *= 2;
    if (buckets == p->hmask + 1) {
        memset(p->head, 0xff, (size_t)buckets * sizeof *p->head);
        for (uint32_t i = 0; i < m; i++) {
            uint32_t b = node_hash(p->nd[i].pos, p->nd[i].parent) & p->hmask;
            p->nd[i].next = p->head[b];
            p->head[b] = (int32_t)i;
        }
        return 0;
    }
    if (rehash(p, buckets) == 0)
        return 0;
    /* keep the old size: rebuild its chains */
    memset(p->head, 0xff, ((size_t)p->hmask + 1) * sizeof *p->head);
    for (uint32_t i = 0; i < m; i++) {
        uint32_t b = node_hash(p->nd[i].pos, p->nd[i].parent) & p->hmask;
        p->nd[i].next = p->head[b];
        p->head[b] = (int32_t)i;
    }
    return 0;
}

int gb_match(const gb_grammar_t *g, const void *text, size_t len)
{
    gb_pool_t *p;
    if (gb_pool_new(&p, g) < 0)
        return -ENOMEM;
    int32_t *bufs = malloc(2 * GB_MAX_STACKS * sizeof *bufs);
    if (!bufs) {
        gb_pool_free(p);
        return -ENOMEM;
    }
    gb_set_t s, t;
    int c = 0, ok = gb_start(p, &s, bufs) == 0;
    const uint8_t *b = text;
    for (size_t i = 0; ok && i < len; i++) {
        int32_t *other = bufs + (1 - c) * GB_MAX_STACKS;
        ok = gb_feed(p, &s, &t, other, b[i]) == 0;
        if (ok && t.top == other)
            c = 1 - c;
        s = t;
    }
    ok = ok && gb_accepting(&s);
    free(bufs);
    gb_pool_free(p);
    return ok;
}
