/* test_gbnf.c: proves the GBNF parser accepts llama.cpp's syntax and refuses bad grammars
 * with the right line and column, that the recognizer accepts exactly the language (each
 * construct by hand, then thousands of random strings against POSIX regular expressions
 * of the same languages), that characters split across bytes work, that limits refuse
 * rather than crash, that the token mask equals the byte-by-byte reference on real
 * vocabularies at random reachable states, and that the engine's output under a grammar
 * (random seeds, temperature 1) is in the language. */
#include <regex.h>

#include "common/fd.h"
#include "engine/engine.h"
#include "engine/gbnf.h"
#include "engine/gguf.h"
#include "engine/grammar.h"
#include "tests/gen_collect.h"
#include "tests/testutil.h"

#define REQUIRE(cond, ...)                                                    \
    do {                                                                      \
        if (!(cond))                                                          \
            ck_abort_msg(__VA_ARGS__);                                        \
    } while (0)

static gb_grammar_t *parse_ok(const char *text)
{
    gb_grammar_t *g = NULL;
    char err[256];
    int rc = gb_parse(&g, text, strlen(text), err, sizeof err);
    REQUIRE(rc == 0, "[%s]: %s", text, err);
    return g;
}

static int match(const gb_grammar_t *g, const char *s)
{
    return gb_match(g, s, strlen(s));
}

/* ---- the parser ---- */

START_TEST(test_parse_ok)
{
    static const char *const ok[] = {
        "root ::= \"a\"",
        "root::=\"a\"",
        "# comment\nroot ::= x # trailing\n\nx ::= \"b\"  # more\n",
        "root ::= (\n  \"a\" # inside\n  | \"b\"\n)\n",
        "root ::= \"a\" |\n  \"b\"",
        "root ::= x\r\nx ::= [a-z]\r\n",
        "root ::= \"\\n\\r\\t\\\\\\\"\\[\\]\\x41\\u00e9\\U0001F600\"",
        "root ::= [\\]\\[\\-a\\x30-\\x39]",
        "root ::= [^\"\\\\] .",
        "root ::= \"a\"{3} \"b\"{1,} \"c\"{0,2} \"d\"{ 2 , 4 }",
        "root ::= \"\"",
        "root ::= ",
        "root ::= my-rule2\nmy-rule2 ::= \"x\"",
        "root ::= a\na ::= b? \"x\"\nb ::= \"y\"",
        "root ::= \"é\" [α-ω]",
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(ok); i++)
        gb_free(parse_ok(ok[i]));
}
END_TEST

START_TEST(test_parse_errors)
{
    static const struct {
        const char *text, *want;
    } bad[] = {
        { "", "line 1, column 1: the grammar is empty" },
        { "# only a comment\n", "line 2, column 1: the grammar is empty" },
        { "x ::= \"a\"", "line 1, column 10: no rule named 'root'" },
        { "root ::= x", "line 1, column 10: rule 'x' is used but never defined" },
        { "root ::= \"a\"\nroot ::= \"b\"", "line 2, column 1: rule 'root' defined again "
                                             "(first at line 1" },
        { "root ::= \"abc", "line 1, column 10: unterminated string literal" },
        { "root ::= [abc", "line 1, column 10: unterminated character class" },
        { "root ::= [z-a]", "line 1, column 11: character range out of order" },
        { "root ::= \"\\q\"", "line 1, column 11: unknown escape '\\q'" },
        { "root ::= \"\\x4\"", "line 1, column 14: expected 2 hexadecimal digits" },
        { "root ::= \"\\U00110000\"", "line 1, column 13: escape beyond U+10FFFF" },
        { "root ::= (\"a\"", "line 1, column 10: unclosed '('" },
        { "root ::= (\"a\" ]", "line 1, column 15: expected ')' or '|'" },
        { "root ::= \"a\")", "line 1, column 13: unmatched ')'" },
        { "root ::= * \"a\"", "line 1, column 10: '*' repeats nothing" },
        { "root ::= \"a\" | +", "line 1, column 16: '+' repeats nothing" },
        { "root ::= \"a\"{2", "line 1, column 15: expected '}'" },
        { "root ::= \"a\"{3,2}", "line 1, column 16: repetition maximum 2 below" },
        { "root ::= \"a\"{5000}", "line 1, column 14: repetition count above 1000" },
        { "root ::= \"a\"{x}", "line 1, column 14: expected a number" },
        { "root \"a\"", "line 1, column 6: expected '::=' after the rule name 'root'" },
        { "root ::= \"a\"\n  ::= \"b\"", "line 2, column 3: expected a rule name" },
        { "root ::= \"a\" \"b\" ; x", "line 1, column 18: unexpected ';'" },
        { "root ::= <think>", "line 1, column 10: token references" },
        { "root ::= root \"a\" | \"b\"", "line 1, column 1: rule 'root' is left-recursive" },
        { "root ::= x\nx ::= y \"a\"\ny ::= \"b\"? x", "line 2, column 1: rule 'x' is "
                                                     "left-recursive" },
        { "root ::= (\"a\"?)*", "line 1, column 1: rule 'root' is left-recursive" },
        { "root ::= \"\xff\"", "line 1, column 11: invalid UTF-8" },
        { "root ::= \"\xc3\"", "line 1, column 11: invalid UTF-8" },
        { "root ::= \"\xed\xa0\x80\"", "line 1, column 11: invalid UTF-8" },
        { "\xc3\xa9 ::= \"a\"", "line 1, column 1: expected a rule name" },
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(bad); i++) {
        gb_grammar_t *g = NULL;
        char err[256];
        int rc = gb_parse(&g, bad[i].text, strlen(bad[i].text), err, sizeof err);
        REQUIRE(rc == -EINVAL && !g, "[%s]: rc %d", bad[i].text, rc);
        REQUIRE(strncmp(err, bad[i].want, strlen(bad[i].want)) == 0,
                "[%s]: got \"%s\", want \"%s...\"", bad[i].text, err, bad[i].want);
    }
    /* a NUL inside the text */
    gb_grammar_t *g = NULL;
    char err[256];
    ck_assert_int_eq(gb_parse(&g, "root ::= \"a\0\"", 13, err, sizeof err), -EINVAL);
    ck_assert_str_eq(err, "line 1, column 12: a NUL byte");
    /* sizes */
    size_t n = GB_MAX_TEXT + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    ck_assert_int_eq(gb_parse(&g, big, n, err, sizeof err), FD_ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "too large"));
    free(big);
    /* a repetition's expansion counts: 300 characters a thousand times */
    char rep[512] = "root ::= \"";
    for (int i = 0; i < 300; i++)
        strcat(rep, "x");
    strcat(rep, "\"{1000}");
    ck_assert_int_eq(gb_parse(&g, rep, strlen(rep), err, sizeof err), FD_ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "repetitions expand past"));
    /* nested groups repeat a reference, not a copy: this one is small */
    const char *nest = "root ::= ((((\"abcdefgh\"{1000}){1000}){1000}){1000})";
    ck_assert_int_eq(gb_parse(&g, nest, strlen(nest), err, sizeof err), 0);
    gb_free(g);
    /* deep nesting is refused, not a stack overflow */
    char *deep = malloc(20000);
    strcpy(deep, "root ::= ");
    for (int i = 0; i < 5000; i++)
        strcat(deep, "(");
    ck_assert_int_eq(gb_parse(&g, deep, strlen(deep), err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "nested more than"));
    free(deep);
}
END_TEST

/* ---- the recognizer, construct by construct ---- */

START_TEST(test_constructs)
{
    static const struct {
        const char *grammar;
        const char *in[6], *out[6];
    } t[] = {
        { "root ::= \"ab\"", { "ab" }, { "", "a", "abc", "b" } },
        { "root ::= \"a\" | \"bc\" | \"\"", { "a", "bc", "" }, { "b", "abc", "aa" } },
        { "root ::= [a-c] [^a-c]", { "az", "c\n", "bé" }, { "aa", "zz", "a" } },
        { "root ::= . .", { "ab", "é\xe2\x82\xac", "\n\t" }, { "a", "abc" } },
        { "root ::= \"x\"*", { "", "x", "xxxxxxxx" }, { "y", "xxy" } },
        { "root ::= \"xy\"+", { "xy", "xyxy" }, { "", "x", "xyx" } },
        { "root ::= \"a\"? \"b\"", { "b", "ab" }, { "aab", "a" } },
        { "root ::= [0-9]{3}", { "123" }, { "12", "1234" } },
        { "root ::= [0-9]{2,}", { "12", "12345" }, { "1" } },
        { "root ::= [0-9]{1,3}", { "1", "12", "123" }, { "", "1234" } },
        { "root ::= \"a\"{0}", { "" }, { "a" } },
        { "root ::= (\"a\" | \"b\")* \"c\"", { "c", "abbac" }, { "ab", "abcc" } },
        { "root ::= x\nx ::= \"(\" x \")\" | \"\"", { "", "()", "((()))" }, { "(", "())", ")(" } },
        { "root ::= e\ne ::= t (\"+\" t)*\nt ::= [0-9]+ | \"(\" e \")\"",
          { "1+2", "(1+(2+3))+4" }, { "1+", "(1", "+1" } },
        { "root ::= \"\\x41\\u00e9\\U0001F600\\n\"", { "Aé\xf0\x9f\x98\x80\n" }, { "A" } },
        { "root ::= [\\x00-\\x7f]*", { "abc", "" }, { "é" } },
        { "root ::= [é-ë]", { "é", "ê", "ë" }, { "e", "ì" } },
        { "root ::= a b\na ::= \"x\"?\nb ::= \"y\"?", { "", "x", "y", "xy" }, { "yx" } },
        { "root ::= (\"a\" | \"ab\") (\"bc\" | \"c\")", { "abc", "abbc", "ac" }, { "ab" } },
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(t); i++) {
        gb_grammar_t *g = parse_ok(t[i].grammar);
        for (int k = 0; k < 6 && t[i].in[k]; k++)
            REQUIRE(match(g, t[i].in[k]) == 1, "[%s] should take [%s]", t[i].grammar,
                    t[i].in[k]);
        for (int k = 0; k < 6 && t[i].out[k]; k++)
            REQUIRE(match(g, t[i].out[k]) == 0, "[%s] should refuse [%s]", t[i].grammar,
                    t[i].out[k]);
        gb_free(g);
    }
}
END_TEST

/* Feeds text byte by byte: how many bytes were taken; *acc whether the result accepts. */
static size_t feed_all(const gb_grammar_t *g, const char *s, size_t n, bool *acc)
{
    gb_pool_t *p;
    ck_assert_int_eq(gb_pool_new(&p, g), 0);
    int32_t *bufs = malloc(2 * GB_MAX_STACKS * sizeof *bufs);
    gb_set_t a, b;
    int c = 0;
    ck_assert_int_eq(gb_start(p, &a, bufs), 0);
    size_t i = 0;
    for (; i < n; i++) {
        int32_t *other = bufs + (1 - c) * GB_MAX_STACKS;
        if (gb_feed(p, &a, &b, other, (uint8_t)s[i]) < 0)
            break;
        if (b.top == other)
            c = 1 - c;
        a = b;
    }
    *acc = i == n && gb_accepting(&a);
    free(bufs);
    gb_pool_free(p);
    return i;
}

START_TEST(test_partial_utf8)
{
    gb_grammar_t *g = parse_ok("root ::= \"é\" [€-€] \"\xf0\x9f\x98\x80\"");
    const char *s = "é€\xf0\x9f\x98\x80";
    bool acc;
    /* every prefix, split anywhere, is taken; only the whole accepts */
    for (size_t k = 0; k <= strlen(s); k++) {
        ck_assert_uint_eq(feed_all(g, s, k, &acc), k);
        ck_assert(acc == (k == strlen(s)));
    }
    /* a lead byte no class can complete is refused at once, so is a wrong continuation */
    ck_assert_uint_eq(feed_all(g, "\xc3\xa8", 2, &acc), 1);     /* è: same lead as é */
    ck_assert_uint_eq(feed_all(g, "\xe2", 1, &acc), 0);         /* no 3-byte char first */
    ck_assert_uint_eq(feed_all(g, "é\xe2\x82\xad", 5, &acc), 4); /* ₭, not € */
    ck_assert_uint_eq(feed_all(g, "é\xe3", 3, &acc), 2);        /* U+3000.. cannot be € */
    gb_free(g);
    /* invalid UTF-8 is never taken, even by "any character" */
    g = parse_ok("root ::= .*");
    ck_assert_uint_eq(feed_all(g, "a\xff", 2, &acc), 1);
    ck_assert_uint_eq(feed_all(g, "a\xc0\x80", 3, &acc), 1);
    ck_assert_uint_eq(feed_all(g, "a\xed\xa0\x80", 4, &acc), 2);
    ck_assert_uint_eq(feed_all(g, "a\xf4\x90\x80\x80", 5, &acc), 2);
    ck_assert_uint_eq(feed_all(g, "\xf4\x8f\xbf\xbf", 4, &acc), 4);
    ck_assert(acc);
    gb_free(g);
    /* a negated class: only a range covering every completion refuses the prefix */
    g = parse_ok("root ::= [^\\u0800-\\u0fff]");
    ck_assert_uint_eq(feed_all(g, "\xe0\xa0\x80", 3, &acc), 0);
    ck_assert_uint_eq(feed_all(g, "\xe1\x80\x80", 3, &acc), 3);
    gb_free(g);
}
END_TEST

/* ---- random strings against POSIX regular expressions of the same languages ---- */

START_TEST(test_regex_oracle)
{
    static const struct {
        const char *grammar, *ere, *alphabet;
    } t[] = {
        { "root ::= [a-c]+ (\"-\" [0-9]{2,3})? \"!\"", "^[a-c]+(-[0-9]{2,3})?!$", "a-09!" },
        { "root ::= (\"ab\" | \"a\" | \"ba\")* \"b\"?", "^(ab|a|ba)*b?$", "ab" },
        { "root ::= x y\nx ::= \"a\"* \ny ::= (\"ab\")+ | \"b\"", "^a*((ab)+|b)$", "ab" },
        { "root ::= [^ab]{1,2} (\" \" [^ ]{2})*", "^[^ab]{1,2}( [^ ]{2})*$", "ab c" },
        { "root ::= (\"x\" | \"y\" \"z\"?){2,4} \".\"?", "^(x|yz?){2,4}\\.?$", "xyz." },
        { "root ::= e\ne ::= [0-9] ([+*] e)?", "^[0-9]([+*][0-9])*$", "12+*" },
    };
    uint64_t rng = 42;
    for (size_t i = 0; i < FD_ARRAY_LEN(t); i++) {
        gb_grammar_t *g = parse_ok(t[i].grammar);
        regex_t re;
        ck_assert_int_eq(regcomp(&re, t[i].ere, REG_EXTENDED | REG_NOSUB), 0);
        const size_t na = strlen(t[i].alphabet);
        int yes = 0;
        for (int k = 0; k < 20000; k++) {
            char s[16];
            size_t len = tu_rand64(&rng) % 12;
            for (size_t j = 0; j < len; j++)
                s[j] = t[i].alphabet[tu_rand64(&rng) % na];
            s[len] = 0;
            int want = regexec(&re, s, 0, NULL, 0) == 0;
            int got = match(g, s);
            REQUIRE(got == want, "[%s] on [%s]: %d, regex %d", t[i].grammar, s, got, want);
            /* every prefix of a sentence is taken */
            if (want) {
                bool acc;
                ck_assert_uint_eq(feed_all(g, s, len, &acc), len);
                yes++;
            }
        }
        REQUIRE(yes > 50, "[%s]: only %d random sentences: the test proves little",
                t[i].grammar, yes);
        regfree(&re);
        gb_free(g);
    }
}
END_TEST

/* ---- limits: an ambiguous grammar is refused past its bounds, never a crash ---- */

START_TEST(test_limits)
{
    /* every split of a run of a's: the stacks double per character without the dedupe */
    gb_grammar_t *g = parse_ok("root ::= x*\nx ::= \"a\" | \"aa\" | \"aaa\"");
    char s[4096];
    memset(s, 'a', sizeof s - 1);
    s[sizeof s - 1] = 0;
    ck_assert_int_eq(match(g, s), 1);
    gb_free(g);
    /* nesting grows the stack: deep is fine within the node bound */
    g = parse_ok("root ::= \"(\" root \")\" | \"\"");
    char *d = malloc(200001);
    for (int i = 0; i < 100000; i++) {
        d[i] = '(';
        d[100000 + i] = ')';
    }
    d[200000] = 0;
    ck_assert_int_eq(match(g, d), 1);
    d[199999] = 0;
    ck_assert_int_eq(match(g, d), 0);
    free(d);
    gb_free(g);
    /* very many live stacks at once: refused, not blown up */
    g = parse_ok("root ::= a*\na ::= [a-z] | [a-z] [a-z] | b\nb ::= [a-m] c\n"
                 "c ::= [a-z]? [a-z]? [a-z]?");
    memset(s, 'c', 300);
    s[300] = 0;
    ck_assert_int_ge(match(g, s), 0);
    gb_free(g);
}
END_TEST

/* ---- the token mask against the reference, on real vocabularies ---- */

static const char *const mask_grammars[] = {
    "root ::= [a-z ]+ \".\"",
    "root ::= (\"yes\" | \"no\" | \"maybe not\") \"\\n\"",
    "root ::= \"{\" ws \"\\\"name\\\"\" ws \":\" ws str ws \"}\"\nstr ::= \"\\\"\" [^\"\\\\]* "
    "\"\\\"\"\nws ::= [ \\n]{0,3}",
    "root ::= item (\", \" item)*\nitem ::= [A-Z] [a-z]{1,8} | [0-9]+ (\".\" [0-9]+)?",
    "root ::= [é-ü€😀]+ \"!\"",
    "root ::= .{1,40}",
};

static void check_masks(const tu_vocab_t *f, int walks, int steps)
{
    const int32_t V = gr_vocab_n(f->v);
    const size_t words = ((size_t)V + 31) / 32;
    uint32_t *a = calloc(words, sizeof *a), *b = calloc(words, sizeof *b);
    uint64_t rng = 7;
    for (size_t gi = 0; gi < FD_ARRAY_LEN(mask_grammars); gi++) {
        gr_spec_t *g;
        char err[256];
        ck_assert_msg(gr_spec_gbnf(&g, mask_grammars[gi], strlen(mask_grammars[gi]), err,
                                   sizeof err) == 0, "%s", err);
        gb_grammar_t *ref = parse_ok(mask_grammars[gi]);
        for (int w = 0; w < walks; w++) {
            gr_matcher_t *m;
            ck_assert_int_eq(gr_matcher_new(&m, g, f->v), 0);
            char text[4096];
            size_t n_text = 0;
            for (int s = 0; s < steps; s++) {
                int na = gr_matcher_mask(m, a), nb = gr_matcher_mask_ref(m, b);
                for (size_t k = 0; k < words; k++)
                    REQUIRE(a[k] == b[k], "[%s] after [%.*s]: mask word %zu %08x, reference "
                            "%08x", mask_grammars[gi], (int)n_text, text, k, a[k], b[k]);
                ck_assert_int_eq(na, nb);
                if (na == 0)
                    break;
                /* a random allowed token (an end of generation ends the walk) */
                int pick = (int)(tu_rand64(&rng) % (uint64_t)na);
                int32_t t = -1;
                for (int32_t k = 0; k < V; k++)
                    if (((a[k >> 5] >> (k & 31)) & 1) && pick-- == 0)
                        t = k;
                if (gr_vocab_is_eog(f->v, t)) {
                    ck_assert(gr_matcher_accepting(m));
                    text[n_text] = 0;
                    REQUIRE(gb_match(ref, text, n_text) == 1, "[%s]: [%s] ended but is not a "
                            "sentence", mask_grammars[gi], text);
                    break;
                }
                size_t len;
                const uint8_t *bytes = gr_vocab_bytes(f->v, t, &len);
                if (n_text + len >= sizeof text)
                    break;
                /* a token the mask refused is refused by accept too */
                for (int32_t k = (int32_t)(tu_rand64(&rng) % (uint64_t)V), tries = 0;
                     tries < V; k = (k + 1) % V, tries++) {
                    if (!((a[k >> 5] >> (k & 31)) & 1)) {
                        ck_assert_int_eq(gr_matcher_accept(m, k), -EINVAL);
                        break;
                    }
                }
                ck_assert_int_eq(gr_matcher_accept(m, t), 0);
                memcpy(text + n_text, bytes, len);
                n_text += len;
            }
            gr_matcher_free(m);
        }
        gb_free(ref);
        gr_spec_unref(g);
    }
    free(a);
    free(b);
}

/* check_masks on the vocabulary of the shared file rel. */
static void check_masks_on(const char *rel, int walks, int steps)
{
    tu_vocab_t f;
    tu_vocab_load(&f, rel);
    check_masks(&f, walks, steps);
    tu_vocab_free(&f);
}

START_TEST(test_mask_stories)
{
    check_masks_on("models/stories260K.gguf", 12, 40);
}
END_TEST

START_TEST(test_mask_spm)
{
    check_masks_on("tokenizer-tests/ggml-vocab-llama-spm.gguf", 2, 12);
}
END_TEST

START_TEST(test_mask_gpt2)
{
    check_masks_on("tokenizer-tests/ggml-vocab-gpt-2.gguf", 2, 12);
}
END_TEST

/* ---- the engine with stories260K: every answer is in the language ---- */

START_TEST(test_engine_gbnf)
{
    enum { N = 32, MAX = 48 };
    static const struct {
        const char *grammar, *ere;
    } t[] = {
        { "root ::= (\"yes\" | \"no\" | \"the dragon\") \".\"", "^(yes|no|the dragon)\\.$" },
        { "root ::= [A-Z] [a-z]+ (\" \" [a-z]+){0,3} \"!\"", "^[A-Z][a-z]+( [a-z]+){0,3}!$" },
    };
    eng_params_t p;
    eng_params_default(&p);
    p.model_path = tu_shared("models/stories260K.gguf", 1);
    p.threads = 1;
    p.max_running = 8;
    p.check = true;
    char err[256];
    eng_t *e;
    ck_assert_msg(eng_open(&e, &p, err, sizeof err) == 0, "%s", err);
    const tok_t *tk = eng_tokenizer(e);
    int32_t ids[64];
    size_t n_ids;
    const char *prompt = "Once upon a time";
    ck_assert_int_eq(tok_encode(tk, prompt, strlen(prompt), true, false, ids, 64, &n_ids), 0);
    gen_t *out = calloc(N, sizeof *out);
    for (size_t gi = 0; gi < FD_ARRAY_LEN(t); gi++) {
        gr_spec_t *g;
        ck_assert_int_eq(gr_spec_gbnf(&g, t[gi].grammar, strlen(t[gi].grammar), err,
                                      sizeof err), 0);
        regex_t re;
        ck_assert_int_eq(regcomp(&re, t[gi].ere, REG_EXTENDED | REG_NOSUB), 0);
        for (int i = 0; i < N; i++) {
            gen_init(&out[i]);
            eng_request_t q;
            memset(&q, 0, sizeof q);
            q.prompt = ids;
            q.n_prompt = n_ids;
            q.max_tokens = MAX;
            eng_sampling_default(&q.sampling);
            q.sampling.temperature = 1;
            q.sampling.seed = (uint64_t)i + 1;
            q.sampling.has_seed = true;
            q.sampling.grammar = g;
            q.on_event = gen_event;
            q.ud = &out[i];
            uint64_t id;
            ck_assert_msg(eng_submit(e, &q, &id, err, sizeof err) == 0, "%s", err);
        }
        int stops = 0;
        for (int i = 0; i < N; i++) {
            gen_t *o = &out[i];
            gen_wait(o);
            char *s = strndup(o->text, o->n_text);
            if (o->finish == ENG_FINISH_STOP) {
                stops++;
                REQUIRE(regexec(&re, s, 0, NULL, 0) == 0, "[%s] seed %d: [%s] not in the "
                        "language", t[gi].grammar, i + 1, s);
            } else {
                REQUIRE(o->finish == ENG_FINISH_LENGTH, "seed %d: finish %d", i + 1,
                        o->finish);
                bool acc;
                ck_assert_uint_eq(feed_all(gr_spec_grammar(g), s, o->n_text, &acc), o->n_text);
            }
            free(s);
        }
        fprintf(stderr, "[%s]: %d of %d answers complete\n", t[gi].grammar, stops, N);
        ck_assert_int_ge(stops, N / 4);
        regfree(&re);
        gr_spec_unref(g);
    }
    free(out);
    eng_close(e);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gbnf");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_parse_ok);
    tcase_add_test(tc, test_parse_errors);
    tcase_add_test(tc, test_constructs);
    tcase_add_test(tc, test_partial_utf8);
    tcase_add_test(tc, test_regex_oracle);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_mask_stories);
    tcase_add_test(tc, test_mask_spm);
    tcase_add_test(tc, test_mask_gpt2);
    tcase_add_test(tc, test_engine_gbnf);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
