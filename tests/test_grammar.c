/* test_grammar.c: proves the JSON recognizer accepts exactly the valid documents and their
 * prefixes (hand-picked cases, then thousands of random and mutated strings against a strict
 * reference parser written here and against cJSON), the depth and whitespace bounds, that
 * json_object mode wants an object, that spec building refuses bad input, that the token
 * mask equals a brute-force check of every token on real vocabularies (stories260K, llama
 * SPM, GPT-2 byte-level BPE), and that the sampler's ban step honours the mask. */
#include <cjson/cJSON.h>
#include <math.h>

#include "common/fd.h"
#include "engine/gguf.h"
#include "engine/grammar.h"
#include "engine/sampler.h"
#include "tests/gen_collect.h"
#include "tests/testutil.h"

#define REQUIRE(cond, ...)                                                    \
    do {                                                                      \
        if (!(cond))                                                          \
            ck_abort_msg(__VA_ARGS__);                                        \
    } while (0)

/* ---- reference: a strict recursive-descent JSON parser with the same bounds ---- */

typedef struct ref {
    const unsigned char *s;
    size_t n, i;
    int depth;
} ref_t;

static bool ref_ws(ref_t *r)
{
    int k = 0;
    while (r->i < r->n && strchr(" \t\n\r", r->s[r->i]) && r->s[r->i]) {
        r->i++;
        if (++k > GR_MAX_WS)
            return false;
    }
    return true;
}

static bool ref_value(ref_t *r);

static int ref_hex4(ref_t *r)
{
    if (r->i + 4 > r->n)
        return -1;
    int v = 0;
    for (int k = 0; k < 4; k++) {
        int c = r->s[r->i++], h;
        if (c >= '0' && c <= '9')
            h = c - '0';
        else if (c >= 'a' && c <= 'f')
            h = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            h = c - 'A' + 10;
        else
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static bool ref_string(ref_t *r)
{
    if (r->i >= r->n || r->s[r->i] != '"')
        return false;
    r->i++;
    while (r->i < r->n) {
        unsigned c = r->s[r->i++];
        if (c == '"')
            return true;
        if (c < 0x20)
            return false;
        if (c == '\\') {
            if (r->i >= r->n)
                return false;
            c = r->s[r->i++];
            if (c == 'u') {
                int v = ref_hex4(r);
                if (v < 0 || (v >= 0xDC00 && v <= 0xDFFF))
                    return false;
                if (v >= 0xD800 && v <= 0xDBFF) {
                    if (r->i + 2 > r->n || r->s[r->i] != '\\' || r->s[r->i + 1] != 'u')
                        return false;
                    r->i += 2;
                    int w = ref_hex4(r);
                    if (w < 0xDC00 || w > 0xDFFF)
                        return false;
                }
            } else if (!c || !strchr("\"\\/bfnrt", (int)c)) {
                return false;
            }
            continue;
        }
        if (c < 0x80)
            continue;
        /* UTF-8 by code point value: no overlongs, surrogates or values past U+10FFFF */
        int extra;
        uint32_t cp;
        if (c >= 0xC0 && c < 0xE0) {
            extra = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c < 0xF0) {
            extra = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c < 0xF8) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (int k = 0; k < extra; k++) {
            if (r->i >= r->n || (r->s[r->i] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (r->s[r->i++] & 0x3F);
        }
        static const uint32_t min[] = { 0, 0x80, 0x800, 0x10000 };
        if (cp < min[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
    }
    return false;
}

static bool ref_digits(ref_t *r)
{
    size_t k = r->i;
    while (r->i < r->n && r->s[r->i] >= '0' && r->s[r->i] <= '9')
        r->i++;
    return r->i > k;
}

static bool ref_number(ref_t *r)
{
    if (r->i < r->n && r->s[r->i] == '-')
        r->i++;
    if (r->i < r->n && r->s[r->i] == '0')
        r->i++;
    else if (!(r->i < r->n && r->s[r->i] >= '1' && r->s[r->i] <= '9') || !ref_digits(r))
        return false;
    if (r->i < r->n && r->s[r->i] == '.') {
        r->i++;
        if (!ref_digits(r))
            return false;
    }
    if (r->i < r->n && (r->s[r->i] == 'e' || r->s[r->i] == 'E')) {
        r->i++;
        if (r->i < r->n && (r->s[r->i] == '+' || r->s[r->i] == '-'))
            r->i++;
        if (!ref_digits(r))
            return false;
    }
    return true;
}

static bool ref_lit(ref_t *r, const char *w)
{
    size_t l = strlen(w);
    if (r->i + l > r->n || memcmp(r->s + r->i, w, l) != 0)
        return false;
    r->i += l;
    return true;
}

static bool ref_value(ref_t *r)
{
    if (r->i >= r->n)
        return false;
    unsigned c = r->s[r->i];
    if (c == '{' || c == '[') {
        if (++r->depth > GR_MAX_DEPTH)
            return false;
        r->i++;
        char close = c == '{' ? '}' : ']';
        if (!ref_ws(r))
            return false;
        if (r->i < r->n && r->s[r->i] == (unsigned char)close) {
            r->i++;
            r->depth--;
            return true;
        }
        for (;;) {
            if (c == '{') {
                if (!ref_string(r) || !ref_ws(r) || r->i >= r->n || r->s[r->i++] != ':' ||
                    !ref_ws(r))
                    return false;
            }
            if (!ref_value(r) || !ref_ws(r) || r->i >= r->n)
                return false;
            unsigned d = r->s[r->i++];
            if (d == (unsigned char)close) {
                r->depth--;
                return true;
            }
            if (d != ',' || !ref_ws(r))
                return false;
        }
    }
    if (c == '"')
        return ref_string(r);
    if (c == '-' || (c >= '0' && c <= '9'))
        return ref_number(r);
    return ref_lit(r, "true") || ref_lit(r, "false") || ref_lit(r, "null");
}

/* A whole document: leading whitespace allowed, nothing after the value. */
static bool ref_doc(const char *s, size_t n, bool object_only)
{
    ref_t r = { (const unsigned char *)s, n, 0, 0 };
    if (!ref_ws(&r))
        return false;
    if (object_only && (r.i >= n || s[r.i] != '{'))
        return false;
    return ref_value(&r) && r.i == n;
}

/* ---- helpers ---- */

static gr_spec_t *json_spec(bool object_only)
{
    gr_spec_t *g;
    ck_assert_int_eq(gr_spec_json(&g, object_only), 0);
    return g;
}

/* 1: a complete document; 0: a valid prefix only; -1 refused (at *at). */
static int run(const gr_spec_t *g, const char *s, size_t n, size_t *at)
{
    gr_state_t st;
    gr_start(g, &st);
    for (size_t i = 0; i < n; i++) {
        if (gr_feed(g, &st, (uint8_t)s[i]) < 0) {
            if (at)
                *at = i;
            return -1;
        }
    }
    return gr_accepting(g, &st) ? 1 : 0;
}

static const char *const valid_docs[] = {
    "{}", "[]", "0", "-0", "1e5", "-1.25E-3", "0.5", "1E+2", "123", "\"\"", "true", "false",
    "null", "  {\"a\" : [1, 2.5, {\"b\":null}], \"c\":\"x\\ny\\u00e9\\\"\"}",
    "[\"\\ud83d\\ude00\", \"\\u0000\", \"\\/\\b\\f\\r\\t\"]", "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\"",
    "{\"k\":{\"k\":{\"k\":[[[]]]}}}", "[true,false,null]", "[ ]", "{ }", "\"\xef\xbf\xbf\"",
    "\"\xf4\x8f\xbf\xbf\"", "[-0.0e-0]",
};

static const char *const invalid_docs[] = {
    "01", "-", "1.", ".5", "+1", "1e", "1e+", "--1", "[1,]", "[,1]", "{\"a\"}", "{\"a\":}",
    "{a:1}", "{\"a\":1,}", "[1 2]", "tru", "truex", "nul", "\"abc", "\"\\x\"", "\"\\u12\"",
    "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"",
    "\"\xf4\x90\x80\x80\"", "\"\xe0\x80\xaf\"", "\"\x80\"", "\"a\tb\"", "{} ", "{}{}", "[1]]",
    "", "   ", "{\"a\":1 \"b\":2}", "[1,2", "\"\xc3\"", "NaN", "Infinity", "[01]", "-01",
    "{\"a\" 1}", "'a'", "[\"a\" , ]",
};

START_TEST(test_documents)
{
    gr_spec_t *g = json_spec(false);
    for (size_t k = 0; k < FD_ARRAY_LEN(valid_docs); k++) {
        const char *d = valid_docs[k];
        size_t n = strlen(d), at = 0;
        ck_assert_msg(ref_doc(d, n, false), "reference refuses %s", d);
        ck_assert_msg(run(g, d, n, &at) == 1, "refused valid %s (at %zu)", d, at);
        /* every proper prefix is a valid prefix, complete only where a number could end */
        for (size_t p = 0; p < n; p++)
            ck_assert_msg(run(g, d, p, NULL) >= 0, "refused prefix %zu of %s", p, d);
    }
    for (size_t k = 0; k < FD_ARRAY_LEN(invalid_docs); k++) {
        const char *d = invalid_docs[k];
        size_t n = strlen(d);
        ck_assert_msg(!ref_doc(d, n, false), "reference accepts %s", d);
        ck_assert_msg(run(g, d, n, NULL) != 1, "accepted invalid %s", d);
    }
    /* refusal comes at the first byte that no valid document could have */
    size_t at = 99;
    ck_assert_int_eq(run(g, "[1,]", 4, &at), -1);
    ck_assert_uint_eq(at, 3);
    ck_assert_int_eq(run(g, "01", 2, &at), -1);
    ck_assert_uint_eq(at, 1);
    ck_assert_int_eq(run(g, "\"\\udc00\"", 8, &at), -1);
    ck_assert_uint_eq(at, 4);
    ck_assert_int_eq(run(g, "{}", 2, NULL), 1);
    ck_assert_int_eq(run(g, "12", 2, NULL), 1);  /* top-level number: complete, may go on */
    ck_assert_int_eq(run(g, "-", 1, NULL), 0);
    gr_spec_unref(g);

    g = json_spec(true);
    ck_assert_int_eq(run(g, " {\"a\":[1]}", 10, NULL), 1);
    ck_assert_int_eq(run(g, "[1]", 3, &at), -1);
    ck_assert_int_eq(run(g, "\"s\"", 3, NULL), -1);
    ck_assert_int_eq(run(g, "1", 1, NULL), -1);
    gr_state_t st;
    gr_start(g, &st);
    ck_assert(!gr_accepting(g, &st));
    ck_assert_int_eq(gr_feed_bytes(g, &st, "{}", 2), 0);
    ck_assert(gr_accepting(g, &st) && gr_finished(&st));
    ck_assert_int_eq(gr_feed(g, &st, ' '), -1); /* nothing after the value, not even a space */
    gr_spec_unref(g);
}
END_TEST

START_TEST(test_bounds)
{
    gr_spec_t *g = json_spec(false);
    char buf[256];
    memset(buf, '[', GR_MAX_DEPTH);
    memset(buf + GR_MAX_DEPTH, ']', GR_MAX_DEPTH);
    ck_assert_int_eq(run(g, buf, 2 * GR_MAX_DEPTH, NULL), 1);
    memset(buf, '[', GR_MAX_DEPTH + 1);
    size_t at = 0;
    ck_assert_int_eq(run(g, buf, GR_MAX_DEPTH + 1, &at), -1);
    ck_assert_uint_eq(at, GR_MAX_DEPTH);
    /* whitespace: GR_MAX_WS in a row anywhere between tokens, not one more */
    int n = snprintf(buf, sizeof buf, "[%*s1%*s]", GR_MAX_WS, "", GR_MAX_WS, "");
    ck_assert_int_eq(run(g, buf, (size_t)n, NULL), 1);
    n = snprintf(buf, sizeof buf, "[1%*s]", GR_MAX_WS + 1, "");
    ck_assert_int_eq(run(g, buf, (size_t)n, &at), -1);
    ck_assert_uint_eq(at, 2 + GR_MAX_WS);
    n = snprintf(buf, sizeof buf, "%*s{}", GR_MAX_WS + 1, "");
    ck_assert_int_eq(run(g, buf, (size_t)n, NULL), -1);
    /* whitespace inside strings is text, not counted */
    n = snprintf(buf, sizeof buf, "\"%*s\"", 100, "");
    ck_assert_int_eq(run(g, buf, (size_t)n, NULL), 1);
    /* a state copy carries on exactly as the original */
    gr_state_t a, b;
    gr_start(g, &a);
    ck_assert_int_eq(gr_feed_bytes(g, &a, "{\"x\":[{\"y\":\"\\u", 14), 0);
    gr_state_copy(&b, &a);
    ck_assert_int_eq(gr_feed_bytes(g, &b, "00e9\"}]}", 8), 0);
    ck_assert(gr_finished(&b));
    ck_assert_int_eq(gr_feed_bytes(g, &a, "00e9\"}]}", 8), 0);
    ck_assert(gr_finished(&a));
    gr_spec_unref(g);
}
END_TEST

/* Random strings from JSON-ish pieces, and valid documents with one byte changed, inserted
 * or deleted: the recognizer agrees with the reference on every one, and with cJSON
 * wherever cJSON is strict (what cJSON refuses, the recognizer refuses too; what the
 * recognizer accepts, cJSON parses, to the same value type). */
START_TEST(test_random_oracle)
{
    static const char *const pieces[] = {
        "{", "}", "[", "]", ",", ":", " ", "\n", "\"", "\"a\"", "\"k\":", "1", "0", "-",
        ".", "e", "E", "+", "5", "true", "false", "null", "\\", "\\u", "00e9", "d83d",
        "\\ude00", "\xc3\xa9", "\xe2\x82", "\xac", "\xff", "\t", "x", "01", "1.5e-3",
    };
    gr_spec_t *g = json_spec(false), *go = json_spec(true);
    uint64_t seed = 42;
    char buf[512];
    int n_valid = 0, n_total = 0;
    for (int it = 0; it < 60000; it++) {
        size_t n = 0;
        if (it % 3 == 0) {
            const char *d = valid_docs[tu_rand64(&seed) % FD_ARRAY_LEN(valid_docs)];
            n = strlen(d);
            memcpy(buf, d, n);
            size_t pos = n ? tu_rand64(&seed) % (n + 1) : 0;
            uint8_t c = (uint8_t)tu_rand64(&seed);
            switch (tu_rand64(&seed) % 3) {
            case 0:
                if (pos < n)
                    buf[pos] = (char)c;
                break;
            case 1:
                memmove(buf + pos + 1, buf + pos, n - pos);
                buf[pos] = (char)c;
                n++;
                break;
            default:
                if (pos < n) {
                    memmove(buf + pos, buf + pos + 1, n - pos - 1);
                    n--;
                }
            }
        } else {
            int k = 1 + (int)(tu_rand64(&seed) % 12);
            for (int j = 0; j < k; j++) {
                const char *p = pieces[tu_rand64(&seed) % FD_ARRAY_LEN(pieces)];
                size_t l = strlen(p);
                memcpy(buf + n, p, l);
                n += l;
            }
        }
        buf[n] = 0;
        bool nul = memchr(buf, 0, n) != NULL;
        bool want = ref_doc(buf, n, false);
        size_t at = 0;
        int got = run(g, buf, n, &at);
        REQUIRE((got == 1) == want, "recognizer %d, reference %d on [%.*s]", got, want, (int)n,
                buf);
        REQUIRE((run(go, buf, n, NULL) == 1) == ref_doc(buf, n, true),
                "json_object mode disagrees on [%.*s]", (int)n, buf);
        /* refused at byte at: the reference also refuses every extension of that prefix
         * that is a short valid completion ("0", "]", "}", "\"") */
        if (got < 0) {
            static const char *const tails[] = { "", "0", "\"", "]", "}", "\"]", "0]", "0}",
                                                 "\":0}", "]]", "}]" };
            for (size_t t = 0; t < FD_ARRAY_LEN(tails); t++) {
                char tmp[600];
                size_t tl = strlen(tails[t]);
                memcpy(tmp, buf, at + 1);
                memcpy(tmp + at + 1, tails[t], tl);
                REQUIRE(!ref_doc(tmp, at + 1 + tl, false), "refused [%.*s] at %zu but "
                        "[%.*s] is valid", (int)n, buf, at, (int)(at + 1 + tl), tmp);
            }
        }
        if (!nul) {
            const char *end = NULL;
            cJSON *c = cJSON_ParseWithOpts(buf, &end, 1);
            if (!c)
                REQUIRE(got != 1, "cJSON refuses [%s], the recognizer accepts", buf);
            if (got == 1) {
                REQUIRE(c, "the recognizer accepts [%s], cJSON refuses", buf);
                const char *p = buf + strspn(buf, " \t\n\r");
                bool same = (*p == '{') == cJSON_IsObject(c) &&
                            (*p == '[') == cJSON_IsArray(c) &&
                            (*p == '"') == cJSON_IsString(c);
                REQUIRE(same, "cJSON reads [%s] as another type", buf);
            }
            cJSON_Delete(c);
        }
        n_valid += want;
        n_total++;
    }
    /* the generator must produce both kinds in number, or the test proves little */
    ck_assert_msg(n_valid > 2000 && n_total - n_valid > 20000, "%d valid of %d", n_valid,
                  n_total);
    gr_spec_unref(g);
    gr_spec_unref(go);
}
END_TEST

START_TEST(test_build_errors)
{
    gr_build_t *b;
    ck_assert_int_eq(gr_build_new(&b), 0);
    char err[160];
    int s = gr_node_string(b), i = gr_node_number(b, true), num = gr_node_number(b, false);
    int nul = gr_node_null(b);
    ck_assert(s >= 0 && i >= 0 && num >= 0 && nul >= 0);
    /* literals must be JSON values */
    const char *bad_lit[] = { "abc" };
    size_t bl[] = { 3 };
    ck_assert_int_lt(gr_node_literals(b, 1, bad_lit, bl), 0);
    const char *lits[] = { "\"b\"", "1", "\"a\"", "12", "[1,\"x\"]" };
    size_t ll[] = { 3, 1, 3, 2, 7 };
    int lit = gr_node_literals(b, 5, lits, ll);
    ck_assert_int_ge(lit, 0);
    /* choices whose alternatives start alike are refused, number with integer is fine */
    int ok[] = { s, num, i, nul };
    int ch = gr_node_choice(b, 4, ok, err, sizeof err);
    ck_assert_int_ge(ch, 0);
    int clash[] = { s, lit };
    ck_assert_int_eq(gr_node_choice(b, 2, clash, err, sizeof err), -EINVAL);
    ck_assert(strstr(err, "same character"));
    /* duplicate keys, bad array bounds */
    const char *keys[] = { "a", "a" };
    int vals[] = { s, s };
    ck_assert_int_eq(gr_node_object(b, 2, keys, vals, NULL, -1), -EINVAL);
    ck_assert_int_eq(gr_node_array(b, s, 3, 2), -EINVAL);
    /* an unresolved reference */
    int ref = gr_node_ref(b);
    int arr = gr_node_array(b, ref, 0, -1);
    gr_spec_t *g;
    ck_assert_int_eq(gr_build_finish(b, arr, &g, err, sizeof err), -EINVAL);
    ck_assert_int_eq(gr_node_set_ref(b, ref, ref), 0);
    ck_assert_int_eq(gr_build_finish(b, arr, &g, err, sizeof err), -EINVAL);
    ck_assert_int_eq(gr_node_set_ref(b, ref, lit), 0);
    ck_assert_int_eq(gr_build_finish(b, arr, &g, err, sizeof err), 0);
    /* an array of the literals: an enum is matched byte for byte */
    ck_assert_int_eq(run(g, "[\"a\",12,1,[1,\"x\"]]", 18, NULL), 1);
    ck_assert_int_eq(run(g, "[\"c\"]", 5, NULL), -1);
    ck_assert_int_eq(run(g, "[13]", 4, NULL), -1);
    ck_assert_int_eq(run(g, "[[1, \"x\"]]", 10, NULL), -1);
    gr_spec_unref(g);
    /* the choice as a root: a top-level integer or null, not a float */
    ck_assert_int_eq(gr_build_finish(b, ch, &g, err, sizeof err), 0);
    ck_assert_int_eq(run(g, "null", 4, NULL), 1);
    ck_assert_int_eq(run(g, "1.5", 3, NULL), 1); /* number stands for both */
    ck_assert_int_eq(run(g, "\"s\"", 3, NULL), 1);
    gr_spec_unref(g);
    gr_build_free(b);

    /* a long enum with shared prefixes (numbers that are prefixes of each other, strings):
     * each value is accepted, complete exactly at its end, and a near miss is refused */
    ck_assert_int_eq(gr_build_new(&b), 0);
    enum { NE = 600 };
    char *texts[NE];
    size_t lens[NE];
    for (int q = 0; q < NE; q++) {
        char buf[32];
        int n = q % 2 ? snprintf(buf, sizeof buf, "%d", q * 7) : snprintf(buf, sizeof buf,
                                                                          "\"v%d\"", q);
        texts[q] = strdup(buf);
        lens[q] = (size_t)n;
    }
    int big = gr_node_literals(b, NE, (const char *const *)texts, lens);
    ck_assert_int_ge(big, 0);
    ck_assert_int_eq(gr_build_finish(b, big, &g, err, sizeof err), 0);
    for (int q = 0; q < NE; q++) {
        ck_assert_msg(run(g, texts[q], lens[q], NULL) == 1, "refused %s", texts[q]);
        char miss[40];
        snprintf(miss, sizeof miss, q % 2 ? "%d9" : "\"v%dx\"", q % 2 ? q * 7 : q);
        bool listed = false;
        for (int k = 0; k < NE; k++)
            listed |= strcmp(texts[k], miss) == 0;
        ck_assert_msg(listed || run(g, miss, strlen(miss), NULL) != 1, "accepted %s", miss);
    }
    ck_assert_int_eq(run(g, "7", 1, NULL), 1);   /* i = 1 */
    ck_assert_int_eq(run(g, "70", 2, NULL), 0);  /* a prefix of 707 (i = 101) */
    ck_assert_int_eq(run(g, "\"v1\"", 4, NULL), -1);
    gr_spec_unref(g);
    for (int q = 0; q < NE; q++)
        free(texts[q]);
    gr_build_free(b);
}
END_TEST

/* An object with properties in order, one optional; arrays with bounds. */
START_TEST(test_object_props)
{
    gr_build_t *b;
    ck_assert_int_eq(gr_build_new(&b), 0);
    int s = gr_node_string(b), i = gr_node_number(b, true), bo = gr_node_boolean(b);
    int arr = gr_node_array(b, i, 1, 2);
    const char *keys[] = { "name", "age", "tags", "ok\"q" };
    int vals[] = { s, i, arr, bo };
    bool req[] = { true, false, false, true };
    int o = gr_node_object(b, 4, keys, vals, req, -1);
    gr_spec_t *g;
    char err[128];
    ck_assert_int_eq(gr_build_finish(b, o, &g, err, sizeof err), 0);
    static const char *const good[] = {
        "{\"name\":\"x\",\"age\":3,\"tags\":[1,2],\"ok\\\"q\":true}",
        "{\"name\":\"x\",\"ok\\\"q\":false}",
        "{ \"name\" : \"x\" , \"tags\" : [ 7 ] , \"ok\\\"q\" : true }",
    };
    static const char *const badd[] = {
        "{}", "{\"name\":\"x\"}", "{\"age\":3,\"name\":\"x\",\"ok\\\"q\":true}",
        "{\"name\":\"x\",\"tags\":[],\"ok\\\"q\":true}",
        "{\"name\":\"x\",\"tags\":[1,2,3],\"ok\\\"q\":true}",
        "{\"name\":\"x\",\"age\":3.5,\"ok\\\"q\":true}",
        "{\"name\":\"x\",\"extra\":1,\"ok\\\"q\":true}",
        "{\"name\":\"x\",\"ok\\\"q\":true,}", "{\"name\":1,\"ok\\\"q\":true}",
        "{\"name\":\"x\",\"name\":\"y\",\"ok\\\"q\":true}",
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(good); k++)
        ck_assert_msg(run(g, good[k], strlen(good[k]), NULL) == 1, "refused %s", good[k]);
    for (size_t k = 0; k < FD_ARRAY_LEN(badd); k++)
        ck_assert_msg(run(g, badd[k], strlen(badd[k]), NULL) != 1, "accepted %s", badd[k]);
    gr_spec_unref(g);
    /* an object without properties: any keys with values of one node, or only {} */
    int free_obj = gr_node_object(b, 0, NULL, NULL, NULL, i);
    ck_assert_int_eq(gr_build_finish(b, free_obj, &g, err, sizeof err), 0);
    ck_assert_int_eq(run(g, "{\"a\":1,\"a\":2}", 13, NULL), 1);
    ck_assert_int_eq(run(g, "{\"a\":\"s\"}", 9, NULL), -1);
    gr_spec_unref(g);
    int empty = gr_node_object(b, 0, NULL, NULL, NULL, -1);
    ck_assert_int_eq(gr_build_finish(b, empty, &g, err, sizeof err), 0);
    ck_assert_int_eq(run(g, "{ }", 3, NULL), 1);
    ck_assert_int_eq(run(g, "{\"", 2, NULL), -1);
    gr_spec_unref(g);
    gr_build_free(b);
}
END_TEST

/* Exactly-one objects and objects told apart by a tag: llama-server's generic tool-call
 * shape {"tool_call": {"name": N, "arguments": <N's schema>}} or {"response": "..."}. */
START_TEST(test_one_and_tagged)
{
    gr_build_t *b;
    ck_assert_int_eq(gr_build_new(&b), 0);
    char err[160];
    int s = gr_node_string(b), i = gr_node_number(b, true), bo = gr_node_boolean(b);
    static const char *const nk[] = { "name", "arguments" };
    const char *t1[] = { "\"clock\"" }, *t2[] = { "\"add\"" }, *t3[] = { "\"adder\"" };
    size_t l1 = 7, l2 = 5, l3 = 7;
    int n1 = gr_node_literals(b, 1, t1, &l1), n2 = gr_node_literals(b, 1, t2, &l2),
        n3 = gr_node_literals(b, 1, t3, &l3);
    static const char *const ak[] = { "a", "b" };
    int av[] = { i, i };
    bool ar[] = { true, false };
    int args_add = gr_node_object(b, 2, ak, av, ar, -1);
    static const char *const ck[] = { "utc" };
    int cv[] = { bo };
    int args_clock = gr_node_object(b, 1, ck, cv, NULL, -1);
    int args_adder = gr_node_object(b, 2, ak, av, NULL, -1);
    bool req2[] = { true, true };
    int v_clock[] = { n1, args_clock }, v_add[] = { n2, args_add }, v_adder[] = { n3, args_adder };
    int objs[] = { gr_node_object(b, 2, nk, v_clock, req2, -1),
                   gr_node_object(b, 2, nk, v_add, req2, -1),
                   gr_node_object(b, 2, nk, v_adder, req2, -1) };
    const char *tags[] = { t1[0], t2[0], t3[0] };
    size_t tl[] = { l1, l2, l3 };
    int call = gr_node_tagged(b, 3, tags, tl, objs, err, sizeof err);
    ck_assert_int_ge(call, 0);
    static const char *const ok[] = { "tool_call", "response" };
    int ov[] = { call, s };
    int top = gr_node_object_one(b, 2, ok, ov);
    ck_assert_int_ge(top, 0);
    gr_spec_t *g;
    ck_assert_int_eq(gr_build_finish(b, top, &g, err, sizeof err), 0);
    static const char *const good[] = {
        "{\"response\":\"hi\"}",
        "{ \"tool_call\" : {\"name\": \"clock\", \"arguments\": {\"utc\": true}} }",
        "{\"tool_call\":{\"name\":\"clock\",\"arguments\":{}}}",
        "{\"tool_call\":{\"name\":\"add\",\"arguments\":{\"a\":1,\"b\":2}}}",
        "{\"tool_call\":{\"name\":\"adder\",\"arguments\":{\"b\":2}}}",
    };
    static const char *const bad[] = {
        "{}", "{\"response\":\"hi\",\"tool_call\":{}}", "{\"response\":1}",
        "{\"tool_call\":{\"name\":\"clock\",\"arguments\":{\"a\":1}}}",
        "{\"tool_call\":{\"name\":\"add\",\"arguments\":{\"utc\":true}}}",
        "{\"tool_call\":{\"name\":\"add\",\"arguments\":{\"b\":2}}}",
        "{\"tool_call\":{\"name\":\"adde\",\"arguments\":{}}}",
        "{\"tool_call\":{\"arguments\":{},\"name\":\"clock\"}}",
        "{\"tool_call\":{\"name\":\"clock\"}}",
        "{\"tool_call\":{\"name\":\"clock\",\"arguments\":{},\"x\":1}}",
        "{\"tool_calls\":[]}",
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(good); k++) {
        size_t at = 0;
        ck_assert_msg(run(g, good[k], strlen(good[k]), &at) == 1, "refused %s at %zu", good[k],
                      at);
    }
    for (size_t k = 0; k < FD_ARRAY_LEN(bad); k++)
        ck_assert_msg(run(g, bad[k], strlen(bad[k]), NULL) != 1, "accepted %s", bad[k]);
    gr_spec_unref(g);
    /* mismatched variants and equal tags are refused */
    int plain = gr_node_object(b, 0, NULL, NULL, NULL, -1);
    int mixed[] = { objs[0], plain };
    ck_assert_int_eq(gr_node_tagged(b, 2, tags, tl, mixed, err, sizeof err), -EINVAL);
    int wrong_key = gr_node_object(b, 1, ck, cv, req2, -1);
    int mk[] = { objs[0], wrong_key };
    ck_assert_int_eq(gr_node_tagged(b, 2, tags, tl, mk, err, sizeof err), -EINVAL);
    const char *same[] = { t1[0], t1[0] };
    size_t sl[] = { l1, l1 };
    int two[] = { objs[0], objs[1] };
    ck_assert_int_eq(gr_node_tagged(b, 2, same, sl, two, err, sizeof err), -EINVAL);
    ck_assert_int_eq(gr_node_object_one(b, 0, NULL, NULL), -EINVAL);
    gr_build_free(b);
}
END_TEST

/* ---- the mask against every token, one by one ---- */

/* The states reached by these texts (each a valid prefix) cover every kind of frame. */
static const char *const prefixes[] = {
    "", " ", "{", "{\"", "{\"ab", "{\"a\"", "{\"a\":", "{\"a\": 1", "{\"a\": 1,", "[", "[1",
    "[1.", "[1.5e", "[\"x", "[\"\\", "[\"\\u00", "[\"\\ud83d", "[\"\xc3", "[tr", "[[[[",
    "{\"a\":[{\"b\":\"c\"}", "{\"a\":{}}", "-", "0", "12", "\"text with spaces ",
    "{\"a\":\"\xe2\x82",
};

static void check_mask(const tu_vocab_t *f, gr_spec_t *g, int n_prefixes)
{
    const int32_t V = gr_vocab_n(f->v);
    uint32_t *allow = calloc(((size_t)V + 31) / 32, sizeof *allow);
    gr_matcher_t *m;
    for (int p = 0; p < n_prefixes; p++) {
        ck_assert_int_eq(gr_matcher_new(&m, g, f->v), 0);
        const char *pre = prefixes[p];
        /* reach the state by accepting byte tokens where the vocabulary has them, else by
         * feeding the state directly through a one-byte token of the same byte */
        gr_state_t st;
        gr_start(g, &st);
        if (gr_feed_bytes(g, &st, pre, strlen(pre)) < 0) {
            gr_matcher_free(m);
            continue;   /* not a prefix under this spec (json_object and "[") */
        }
        for (const char *c = pre; *c; c++) {
            int32_t id = -1;
            for (int32_t t = 0; t < V && id < 0; t++) {
                size_t len;
                const uint8_t *b = gr_vocab_bytes(f->v, t, &len);
                if (b && len == 1 && b[0] == (uint8_t)*c)
                    id = t;
            }
            REQUIRE(id >= 0, "no one-byte token for %02x", (uint8_t)*c);
            REQUIRE(gr_matcher_accept(m, id) == 0, "token %d refused in [%s]", id, pre);
        }
        int count = gr_matcher_mask(m, allow);
        const gr_state_t *ms = gr_matcher_state(m);
        int brute = 0;
        for (int32_t t = 0; t < V; t++) {
            bool want;
            size_t len;
            const uint8_t *b = gr_vocab_bytes(f->v, t, &len);
            if (gr_vocab_is_eog(f->v, t)) {
                want = gr_accepting(g, ms);
            } else if (!b) {
                want = false;
            } else {
                gr_state_t c = *ms;
                want = gr_feed_bytes(g, &c, b, len) == 0;
            }
            bool got = (allow[t >> 5] >> (t & 31)) & 1;
            REQUIRE(got == want, "prefix [%s]: token %d (%s) mask %d, brute force %d", pre, t,
                    tok_token_text(f->t, t), got, want);
            brute += want;
        }
        ck_assert_int_eq(count, brute);
        /* a refused token leaves the matcher as it was */
        for (int32_t t = 0; t < V; t++) {
            if (!((allow[t >> 5] >> (t & 31)) & 1)) {
                gr_state_t before = *gr_matcher_state(m);
                ck_assert_int_eq(gr_matcher_accept(m, t), -EINVAL);
                ck_assert_int_eq(memcmp(&before, gr_matcher_state(m),
                                        offsetof(gr_state_t, f) +
                                            before.depth * sizeof(gr_frame_t)), 0);
                break;
            }
        }
        gr_matcher_free(m);
    }
    free(allow);
}

static void mask_suite(const char *rel)
{
    tu_vocab_t f;
    tu_vocab_load(&f, rel);
    ck_assert_int_gt(gr_vocab_trie_nodes(f.v), (size_t)gr_vocab_n(f.v) / 2);
    fprintf(stderr, "%s: %d tokens, %zu trie nodes\n", rel, (int)gr_vocab_n(f.v), gr_vocab_trie_nodes(f.v));
    gr_spec_t *g = json_spec(false), *go = json_spec(true);
    check_mask(&f, g, (int)FD_ARRAY_LEN(prefixes));
    check_mask(&f, go, (int)FD_ARRAY_LEN(prefixes));
    /* control tokens are never allowed, EOS only when the document is complete */
    int32_t eos = tok_eos(f.t);
    ck_assert(eos >= 0 && gr_vocab_is_eog(f.v, eos));
    size_t len;
    ck_assert_ptr_null(gr_vocab_bytes(f.v, eos, &len));
    gr_spec_unref(g);
    gr_spec_unref(go);
    tu_vocab_free(&f);
}

START_TEST(test_mask_stories)
{
    mask_suite("models/stories260K.gguf");
}
END_TEST

START_TEST(test_mask_spm)
{
    mask_suite("tokenizer-tests/ggml-vocab-llama-spm.gguf");
}
END_TEST

START_TEST(test_mask_gpt2)
{
    mask_suite("tokenizer-tests/ggml-vocab-gpt-2.gguf");
}
END_TEST

/* The sampler's step 1b: banned tokens are never drawn, greedy picks the best allowed one,
 * logprobs are those of the allowed distribution, and nothing allowed is FD_ERANGE. */
START_TEST(test_sampler_mask)
{
    enum { V = 100 };
    float l[V], base[V];
    uint32_t allow[(V + 31) / 32] = { 0 };
    uint64_t seed = 7;
    for (int i = 0; i < V; i++)
        base[i] = tu_randf(&seed) * 4;
    base[50] = 10; /* the best overall, banned */
    int ok[] = { 3, 17, 64, 99 };
    for (size_t k = 0; k < FD_ARRAY_LEN(ok); k++)
        allow[ok[k] >> 5] |= 1u << (ok[k] & 31);
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.temperature = 0;
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, &p, V), 0);
    memcpy(l, base, sizeof l);
    float lp;
    eng_top_t top[5];
    int32_t t = smp_sample_masked(s, l, allow, &lp, top, 5);
    int best = ok[0];
    for (size_t k = 1; k < FD_ARRAY_LEN(ok); k++)
        if (base[ok[k]] > base[best])
            best = ok[k];
    ck_assert_int_eq(t, best);
    double z = 0;
    for (size_t k = 0; k < FD_ARRAY_LEN(ok); k++)
        z += exp((double)base[ok[k]]);
    ck_assert_double_eq_tol(lp, base[best] - log(z), 1e-4);
    ck_assert(isinf(top[4].logprob) && top[4].logprob < 0); /* only 4 allowed */
    smp_free(s);
    p.temperature = 1.5f;
    p.seed = 1;
    p.has_seed = true;
    ck_assert_int_eq(smp_create(&s, &p, V), 0);
    for (int d = 0; d < 2000; d++) {
        memcpy(l, base, sizeof l);
        t = smp_sample_masked(s, l, allow, NULL, NULL, 0);
        REQUIRE(t == 3 || t == 17 || t == 64 || t == 99, "drew banned %d", t);
    }
    uint32_t none[(V + 31) / 32] = { 0 };
    memcpy(l, base, sizeof l);
    ck_assert_int_eq(smp_sample_masked(s, l, none, NULL, NULL, 0), FD_ERANGE);
    smp_free(s);
}
END_TEST

/* ---- the engine with stories260K: constrained generation end to end ---- */

#include "engine/engine.h"

static eng_t *open_stories(bool prefix_cache)
{
    eng_params_t p;
    eng_params_default(&p);
    p.model_path = tu_shared("models/stories260K.gguf", 1);
    p.threads = 1;
    p.max_running = 8;
    p.check = true;
    p.prefix_cache = prefix_cache;
    char err[256];
    eng_t *e;
    ck_assert_msg(eng_open(&e, &p, err, sizeof err) == 0, "%s", err);
    return e;
}

static int32_t find_piece(const tok_t *t, const char *text, const char *byte_form)
{
    int32_t id = tok_find(t, text);
    return id >= 0 ? id : tok_find(t, byte_form);
}

/* Runs n requests (seeds 1..n, temperature 1) constrained by g; results in out[].
 * stories260K writes stories, so a string or a run of whitespace goes on until its bound:
 * a logit bias towards closing quotes and braces (which the mask still bans wherever they
 * would be invalid) lets enough documents finish within max_tokens. */
static void generate(eng_t *e, gr_spec_t *g, int n, int max_tokens, const char *stop,
                     gen_t *out)
{
    const tok_t *t = eng_tokenizer(e);
    eng_logit_bias_t bias[] = { { find_piece(t, "}", "<0x7D>"), 10 },
                                { find_piece(t, "]", "<0x5D>"), 10 },
                                { find_piece(t, "\"", "<0x22>"), 5 } };
    for (size_t i = 0; i < FD_ARRAY_LEN(bias); i++)
        ck_assert_int_ge(bias[i].token, 0);
    int32_t ids[64];
    size_t n_ids;
    const char *prompt = "Once upon a time, there was a little girl";
    ck_assert_int_eq(tok_encode(t, prompt, strlen(prompt), true, false, ids, 64, &n_ids), 0);
    for (int i = 0; i < n; i++) {
        gen_t *o = &out[i];
        gen_init(o);
        eng_request_t q;
        memset(&q, 0, sizeof q);
        q.prompt = ids;
        q.n_prompt = n_ids;
        q.max_tokens = max_tokens;
        eng_sampling_default(&q.sampling);
        q.sampling.seed = (uint64_t)i + 1;
        q.sampling.has_seed = true;
        q.sampling.n_probs = 2;
        q.sampling.grammar = g;
        q.sampling.logit_bias = bias;
        q.sampling.n_logit_bias = (int)FD_ARRAY_LEN(bias);
        q.on_event = gen_event;
        q.ud = o;
        q.stop = &stop;
        q.n_stop = stop ? 1 : 0;
        char err[256];
        uint64_t id;
        ck_assert_msg(eng_submit(e, &q, &id, err, sizeof err) == 0, "%s", err);
    }
    for (int i = 0; i < n; i++)
        gen_wait(&out[i]);
}

START_TEST(test_engine_json_object)
{
    enum { N = 48 };
    gen_t *out = calloc(N, sizeof *out);
    gr_spec_t *g = json_spec(true);
    for (int cache = 0; cache < 2; cache++) {
        eng_t *e = open_stories(cache);
        generate(e, g, N, 128, NULL, out);
        int stops = 0;
        for (int i = 0; i < N; i++) {
            gen_t *o = &out[i];
            REQUIRE(!o->bad_logprob, "seed %d: a logprob that is not finite", i + 1);
            if (o->finish == ENG_FINISH_STOP) {
                stops++;
                REQUIRE(ref_doc(o->text, o->n_text, true), "seed %d: [%.*s] is no object",
                        i + 1, (int)o->n_text, o->text);
                cJSON *c = cJSON_Parse(o->text);
                REQUIRE(c && cJSON_IsObject(c), "cJSON: [%s] is no object", o->text);
                cJSON_Delete(c);
            } else {
                REQUIRE(o->finish == ENG_FINISH_LENGTH && o->n_tok == 128,
                        "seed %d: finish %d after %d tokens", i + 1, o->finish, o->n_tok);
                REQUIRE(run(g, o->text, o->n_text, NULL) >= 0, "seed %d: [%.*s] is no prefix",
                        i + 1, (int)o->n_text, o->text);
            }
        }
        fprintf(stderr, "json_object, stories260K, prefix cache %d: %d of %d stopped\n", cache,
                stops, N);
        /* a test that never sees a complete object proves nothing */
        ck_assert_int_ge(stops, N / 8);
        eng_close(e);
    }
    gr_spec_unref(g);
    free(out);
}
END_TEST

/* A stop string still ends the output where it appears, even inside the JSON value: the
 * text is then a valid prefix without it (as vLLM does; the client checks finish_reason). */
START_TEST(test_engine_stop_string)
{
    enum { N = 8 };
    gen_t *out = calloc(N, sizeof *out);
    gr_spec_t *g = json_spec(true);
    eng_t *e = open_stories(false);
    generate(e, g, N, 128, "\"", out);
    int cut = 0;
    for (int i = 0; i < N; i++) {
        gen_t *o = &out[i];
        REQUIRE(!memchr(o->text, '"', o->n_text), "seed %d: the stop string is in [%.*s]",
                i + 1, (int)o->n_text, o->text);
        REQUIRE(run(g, o->text, o->n_text, NULL) >= 0, "seed %d: [%.*s] is no prefix", i + 1,
                (int)o->n_text, o->text);
        if (o->finish == ENG_FINISH_STOP && run(g, o->text, o->n_text, NULL) == 0)
            cut++;
    }
    /* the first key starts with the stop string: every answer that got that far was cut */
    ck_assert_int_ge(cut, N / 2);
    eng_close(e);
    gr_spec_unref(g);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("grammar");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_documents);
    tcase_add_test(tc, test_bounds);
    tcase_add_test(tc, test_random_oracle);
    tcase_add_test(tc, test_build_errors);
    tcase_add_test(tc, test_object_props);
    tcase_add_test(tc, test_one_and_tagged);
    tcase_add_test(tc, test_sampler_mask);
    tcase_add_test(tc, test_mask_stories);
    tcase_add_test(tc, test_mask_spm);
    tcase_add_test(tc, test_mask_gpt2);
    tcase_add_test(tc, test_engine_json_object);
    tcase_add_test(tc, test_engine_stop_string);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
