/* regex.c: guided_regex and guided_choice to GBNF text (see regex.h).
 *
 * A recursive-descent reader of the regex writes the GBNF as it goes: an alternation is
 * GBNF's |, a group a parenthesized group, a character a one-character class (so no
 * quoting can go wrong), a quantifier GBNF's own after the group or class it follows. */
#include "server/regex.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/gbnf.h"
#include "engine/unicode.h"
#include "server/strbuf.h"

#define RX_MAX_NEST 100

typedef struct rx {
    const unsigned char *s;
    size_t len, pos;
    sb_t out;
    int depth;
    char *err;
    size_t errlen;
    int rc;
} rx_t;

static int rx_fail(rx_t *R, int rc, size_t at, const char *fmt, ...) FD_PRINTF(4, 5);
static int rx_fail(rx_t *R, int rc, size_t at, const char *fmt, ...)
{
    if (R->rc)
        return -1;
    size_t col = 1;
    for (size_t i = 0; i < at && i < R->len; i++)
        col += (R->s[i] & 0xC0) != 0x80;
    int k = snprintf(R->err, R->errlen, "column %zu: ", col);
    if (k >= 0 && (size_t)k < R->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(R->err + k, R->errlen - (size_t)k, fmt, ap);
        va_end(ap);
    }
    R->rc = rc;
    return -1;
}

static inline int peek(const rx_t *R)
{
    return R->pos < R->len ? R->s[R->pos] : -1;
}

static inline int peek_at(const rx_t *R, size_t k)
{
    return R->pos + k < R->len ? R->s[R->pos + k] : -1;
}

static void put_cp(sb_t *b, uint32_t cp)
{
    if (cp > 0xFFFF)
        sb_printf(b, "\\U%08X", (unsigned)cp);
    else
        sb_printf(b, "\\u%04X", (unsigned)cp);
}

/* One UTF-8 character of the regex. */
static int read_utf8(rx_t *R, uint32_t *out)
{
    size_t at = R->pos;
    uint32_t v;
    int n = uni_scan(R->s + R->pos, R->len - R->pos, &v);
    if (n <= 0)
        return rx_fail(R, -EINVAL, at, "invalid UTF-8");
    R->pos += (size_t)n;
    *out = v;
    return 0;
}

static int read_hex(rx_t *R, int n, size_t at, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        int h = fd_hex_digit(peek(R));
        if (h < 0)
            return rx_fail(R, -EINVAL, at, "expected %d hexadecimal digits in the escape", n);
        v = v * 16 + (uint32_t)h;
        R->pos++;
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return rx_fail(R, -EINVAL, at, "the escape is not a Unicode character");
    *out = v;
    return 0;
}

/* The ranges of a class shorthand (\d \w \s), as GBNF class items. */
static const char *shorthand(int c)
{
    switch (c) {
    case 'd': return "0-9";
    case 'w': return "0-9A-Za-z_";
    case 's': return " \\t\\n\\r\\x0B\\x0C";
    default: return NULL;
    }
}

/* After a backslash (R->pos is past it): a single character (*cp, return 0), a shorthand
 * (*set, return 1, *neg for \D \W \S), or -1. */
static int read_escape(rx_t *R, bool in_class, uint32_t *cp, const char **set, bool *neg)
{
    size_t at = R->pos - 1;
    int c = peek(R);
    if (c < 0)
        return rx_fail(R, -EINVAL, at, "a pattern cannot end with a backslash");
    R->pos++;
    switch (c) {
    case 'n': *cp = '\n'; return 0;
    case 't': *cp = '\t'; return 0;
    case 'r': *cp = '\r'; return 0;
    case 'f': *cp = '\f'; return 0;
    case 'v': *cp = '\v'; return 0;
    case 'a': *cp = '\a'; return 0;
    case '0': *cp = 0; return 0;
    case 'x': return read_hex(R, 2, at, cp);
    case 'u': return read_hex(R, 4, at, cp);
    case 'U': return read_hex(R, 8, at, cp);
    case 'd': case 'w': case 's':
    case 'D': case 'W': case 'S':
        *set = shorthand(c | 0x20);
        *neg = c < 'a';
        return 1;
    case 'b':
        if (in_class) {
            *cp = '\b';
            return 0;
        }
        return rx_fail(R, FD_EUNSUP, at, "word boundaries (\\b) are not supported");
    case 'B':
        return rx_fail(R, FD_EUNSUP, at, "word boundaries (\\B) are not supported");
    case 'p': case 'P':
        return rx_fail(R, FD_EUNSUP, at, "Unicode properties (\\%c) are not supported", c);
    case 'A': case 'Z': case 'z': case 'G':
        return rx_fail(R, FD_EUNSUP, at, "the anchor \\%c is only supported as ^ at the "
                       "start or $ at the end", c);
    case 'k':
        return rx_fail(R, FD_EUNSUP, at, "backreferences (\\k) are not supported");
    default:
        if (c >= '1' && c <= '9')
            return rx_fail(R, FD_EUNSUP, at, "backreferences (\\%c) are not supported", c);
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            return rx_fail(R, -EINVAL, at, "unknown escape \\%c", c);
        if (c >= 0x80) {
            R->pos--;
            return read_utf8(R, cp);
        }
        *cp = (uint32_t)c;
        return 0;
    }
}

static int parse_class(rx_t *R)
{
    size_t open = R->pos++;
    sb_t *b = &R->out;
    sb_adds(b, "[");
    if (peek(R) == '^') {
        R->pos++;
        sb_adds(b, "^");
    }
    bool first = true;
    for (;;) {
        int c = peek(R);
        if (c < 0)
            return rx_fail(R, -EINVAL, open, "unterminated character class");
        if (c == ']' && !first)
            break;
        first = false;
        size_t at = R->pos;
        if (c == '[' && peek_at(R, 1) == ':')
            return rx_fail(R, FD_EUNSUP, at, "POSIX classes ([:name:]) are not supported");
        uint32_t lo;
        if (c == '\\') {
            R->pos++;
            const char *set = NULL;
            bool neg = false;
            int k = read_escape(R, true, &lo, &set, &neg);
            if (k < 0)
                return -1;
            if (k == 1) {
                if (neg)
                    return rx_fail(R, FD_EUNSUP, at, "a negated shorthand (\\D, \\W, \\S) "
                                   "inside a class is not supported");
                sb_adds(b, set);
                continue;
            }
        } else if (read_utf8(R, &lo) < 0) {
            return -1;
        }
        put_cp(b, lo);
        if (peek(R) == '-' && peek_at(R, 1) != ']' && peek_at(R, 1) >= 0) {
            R->pos++;
            uint32_t hi;
            size_t hat = R->pos;
            if (peek(R) == '\\') {
                R->pos++;
                const char *set = NULL;
                bool neg = false;
                int k = read_escape(R, true, &hi, &set, &neg);
                if (k < 0)
                    return -1;
                if (k == 1)
                    return rx_fail(R, -EINVAL, hat, "a range cannot end with a shorthand");
            } else if (read_utf8(R, &hi) < 0) {
                return -1;
            }
            if (hi < lo)
                return rx_fail(R, -EINVAL, at, "character range out of order");
            sb_adds(b, "-");
            put_cp(b, hi);
        }
    }
    R->pos++;
    sb_adds(b, "]");
    return 0;
}

static int parse_alt(rx_t *R);

/* A {m}, {m,}, {m,n} or {,n} at R->pos: 1 (and the bounds; max -1 for none), 0 when it is
 * none of them (then "{" is a literal, as in Python), -1. */
static int read_braces(rx_t *R, long *min, long *max)
{
    size_t p = R->pos + 1;
    long a = -1, b = -1;
    bool comma = false;
    for (; p < R->len && R->s[p] >= '0' && R->s[p] <= '9'; p++) {
        a = (a < 0 ? 0 : a) * 10 + (R->s[p] - '0');
        if (a > 100000)
            a = 100000;
    }
    if (p < R->len && R->s[p] == ',') {
        comma = true;
        for (p++; p < R->len && R->s[p] >= '0' && R->s[p] <= '9'; p++) {
            b = (b < 0 ? 0 : b) * 10 + (R->s[p] - '0');
            if (b > 100000)
                b = 100000;
        }
    }
    if (p >= R->len || R->s[p] != '}' || (a < 0 && b < 0))
        return 0;
    *min = a < 0 ? 0 : a;
    *max = comma ? b : a;
    if (*max >= 0 && *max < *min)
        return rx_fail(R, -EINVAL, R->pos, "repetition maximum below its minimum");
    if (*min > GB_MAX_REPEAT || *max > GB_MAX_REPEAT)
        return rx_fail(R, FD_EUNSUP, R->pos, "repetition bounds above %d are not supported",
                       GB_MAX_REPEAT);
    R->pos = p + 1;
    return 1;
}

static int parse_seq(rx_t *R)
{
    sb_t *b = &R->out;
    bool atom = false;          /* a quantifier may follow */
    for (;;) {
        int c = peek(R);
        size_t at = R->pos;
        if (c < 0 || c == '|' || c == ')')
            return 0;
        if (c == '*' || c == '+' || c == '?' || c == '{') {
            long min = 0, max = -1;
            if (c == '{') {
                int k = read_braces(R, &min, &max);
                if (k < 0)
                    return -1;
                if (k == 0)
                    goto literal;
            } else {
                R->pos++;
                min = c == '+';
                max = c == '?' ? 1 : -1;
            }
            if (!atom)
                return rx_fail(R, -EINVAL, at, "nothing to repeat");
            if (peek(R) == '?')
                R->pos++;       /* lazy: the same strings */
            else if (peek(R) == '+')
                return rx_fail(R, FD_EUNSUP, R->pos, "possessive quantifiers are not "
                               "supported");
            if (max < 0)
                sb_printf(b, min == 0 ? "*" : min == 1 ? "+" : "{%ld,}", min);
            else if (min == 0 && max == 1)
                sb_adds(b, "?");
            else
                sb_printf(b, "{%ld,%ld}", min, max);
            atom = false;
            if (peek(R) == '*' || peek(R) == '+' || peek(R) == '?')
                return rx_fail(R, -EINVAL, R->pos, "multiple repeat");
            continue;
        }
        sb_adds(b, " ");
        atom = true;
        if (c == '(') {
            R->pos++;
            if (peek(R) == '?') {
                int d = peek_at(R, 1), e = peek_at(R, 2);
                if (d == ':') {
                    R->pos += 2;
                } else if ((d == 'P' && e == '<') || (d == '<' && e != '=' && e != '!')) {
                    size_t q = R->pos + (d == 'P' ? 3 : 2);
                    while (q < R->len && R->s[q] != '>')
                        q++;
                    if (q >= R->len)
                        return rx_fail(R, -EINVAL, at, "unterminated group name");
                    R->pos = q + 1;
                } else if (d == '=' || d == '!' || (d == '<' && (e == '=' || e == '!'))) {
                    return rx_fail(R, FD_EUNSUP, at, "lookaround (%s) is not supported",
                                   d == '<' ? "lookbehind" : "lookahead");
                } else if (d == 'P' && e == '=') {
                    return rx_fail(R, FD_EUNSUP, at, "backreferences ((?P=name)) are not "
                                   "supported");
                } else if (d == '#') {
                    return rx_fail(R, FD_EUNSUP, at, "comments ((?#...)) are not supported");
                } else if (d == '(') {
                    return rx_fail(R, FD_EUNSUP, at, "conditionals are not supported");
                } else {
                    return rx_fail(R, FD_EUNSUP, at, "inline flags ((?...)) are not "
                                   "supported");
                }
            }
            if (++R->depth > RX_MAX_NEST)
                return rx_fail(R, FD_EUNSUP, at, "groups nested more than %d deep",
                               RX_MAX_NEST);
            sb_adds(b, "(");
            if (parse_alt(R) < 0)
                return -1;
            if (peek(R) != ')')
                return rx_fail(R, -EINVAL, at, "missing ), unterminated group");
            R->pos++;
            R->depth--;
            sb_adds(b, " )");
            continue;
        }
        if (c == '[') {
            if (parse_class(R) < 0)
                return -1;
            continue;
        }
        if (c == '.') {
            R->pos++;
            sb_adds(b, "[^\\n]");
            continue;
        }
        if (c == '^' || c == '$') {
            return rx_fail(R, FD_EUNSUP, at, "the anchor %c is only supported at the %s of "
                           "the pattern", c, c == '^' ? "start" : "end");
        }
        if (c == '\\') {
            R->pos++;
            uint32_t cp;
            const char *set = NULL;
            bool neg = false;
            int k = read_escape(R, false, &cp, &set, &neg);
            if (k < 0)
                return -1;
            if (k == 1)
                sb_printf(b, "[%s%s]", neg ? "^" : "", set);
            else {
                sb_adds(b, "[");
                put_cp(b, cp);
                sb_adds(b, "]");
            }
            continue;
        }
literal:
        {
            uint32_t cp;
            if (read_utf8(R, &cp) < 0)
                return -1;
            if (c == '{')
                sb_adds(b, " ");
            sb_adds(b, "[");
            put_cp(b, cp);
            sb_adds(b, "]");
            atom = true;
        }
    }
}

static int parse_alt(rx_t *R)
{
    for (;;) {
        if (parse_seq(R) < 0)
            return -1;
        if (peek(R) != '|')
            return 0;
        R->pos++;
        sb_adds(&R->out, " |");
    }
}

int rx_to_gbnf(const char *re, size_t len, char **out, char *err, size_t errlen)
{
    *out = NULL;
    rx_t R = { .s = (const unsigned char *)re, .len = len, .err = err, .errlen = errlen };
    if (errlen)
        err[0] = 0;
    sb_init(&R.out);
    /* ^ at the start and $ at the end (not escaped) change nothing: the whole output
     * matches */
    if (R.len > 0 && R.s[0] == '^')
        R.pos = 1;
    if (R.len > R.pos && R.s[R.len - 1] == '$') {
        size_t bs = 0;
        for (size_t i = R.len - 1; i > R.pos && R.s[i - 1] == '\\'; i--)
            bs++;
        if (bs % 2 == 0)
            R.len--;
    }
    sb_adds(&R.out, "root ::=");
    if (parse_alt(&R) == 0 && R.pos < R.len)
        rx_fail(&R, -EINVAL, R.pos, "unbalanced parenthesis");
    sb_adds(&R.out, "\n");
    if (!R.rc && sb_failed(&R.out))
        R.rc = -ENOMEM;
    if (R.rc) {
        sb_free(&R.out);
        return R.rc;
    }
    *out = sb_take(&R.out, NULL);
    return *out ? 0 : -ENOMEM;
}

int rx_choice_gbnf(const char *const *s, const size_t *lens, int n, char **out)
{
    sb_t b;
    sb_init(&b);
    sb_adds(&b, "root ::=");
    for (int i = 0; i < n; i++) {
        sb_adds(&b, i ? " | \"" : " \"");
        for (size_t k = 0; k < lens[i]; k++) {
            unsigned char c = (unsigned char)s[i][k];
            /* bytes over 0x7F go through as they are (the caller checked the UTF-8) */
            if (c == '"' || c == '\\' || c < 0x20 || c == 0x7F)
                sb_printf(&b, "\\x%02X", c);
            else
                sb_add(&b, &c, 1);
        }
        sb_adds(&b, "\"");
    }
    sb_adds(&b, "\n");
    if (sb_failed(&b)) {
        sb_free(&b);
        return -ENOMEM;
    }
    *out = sb_take(&b, NULL);
    return *out ? 0 : -ENOMEM;
}
