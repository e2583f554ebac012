/* test_reasoning.c: proves the <think> splitter (server/reasoning.c) splits an answer into
 * reasoning and content as llama-server's deepseek reasoning format does (the reasoning
 * trimmed, the content's leading whitespace dropped, an unclosed block all reasoning, no
 * leading "<think>" all content), the same whether the text comes whole, byte by byte or cut
 * anywhere in two or three pieces (a tag split across tokens); counts the think block's
 * tokens; and knows the format names.  Started inside the block (rsn_start_inside, as
 * DeepSeek-R1's prompt opens it), the text up to "</think>" is the reasoning and an output
 * that never closes it is all reasoning.  gpt-oss's harmony messages (rsn_init_harmony): the
 * analysis channel's text is the reasoning, final and commentary text the content, calls
 * passed on in toolcall.h's form, the rest dropped, however the text is cut.  A prefill
 * (rsn_prime) is read as output already written and releases nothing of its own. */
#include "server/reasoning.h"

#include "tests/testutil.h"

static const struct {
    const char *text, *reasoning, *content;
    bool inside; /* the prompt opened the block */
} cases[] = {
    {"<think>\nI think.\n</think>\n\nAnswer.", "I think.", "Answer.", false},
    {"Answer without a block", "", "Answer without a block", false},
    {"<think>", "", "", false},
    {"<thi", "", "<thi", false},
    {"<thinking>x", "", "<thinking>x", false},
    {" <think>x</think>y", "", " <think>x</think>y", false},
    {"<think>\n\n</think>\n\nHi", "", "Hi", false},
    {"<think>a </th b</think> c", "a </th b", "c", false},
    {"<think> unclosed \t\n", "unclosed", "", false},
    {"<think>a</think>b</think>c", "a", "b</think>c", false},
    {"<think>a\n</thi", "a\n</thi", "", false},
    {"<think>x</think>", "x", "", false},
    {"<think>r</think>\n\n<think>again</think>", "r", "<think>again</think>", false},
    {"<think>\xc3\xa9 \xc3\xbc\n</think>\r\n\xc3\xb1 \n", "\xc3\xa9 \xc3\xbc",
     "\xc3\xb1 \n", false},
    {"<think>two\n\nparas \n\n more</think>ok", "two\n\nparas \n\n more", "ok", false},
    {"", "", "", false},
    {"reasoning</think>\n\nanswer", "", "reasoning</think>\n\nanswer", false},
    {"abc</think>\n\nanswer", "abc", "answer", true},
    {"never closes \n", "never closes", "", true},
    {"\n  lead \n</think> x\n", "lead", "x\n", true},
    {"", "", "", true},
    {"</think>", "", "", true},
    {"<think>x</think>y", "<think>x", "y", true},
    {"a</th", "a</th", "", true},
    {"r</think>c</think>d", "r", "c</think>d", true},
};

typedef struct out {
    sb_t r, c;
} out_t;

/* Feeds text cut at a and b (a <= b) and finishes; checks the result. */
static void run_cut(size_t i, size_t a, size_t b)
{
    const char *t = cases[i].text;
    size_t n = strlen(t);
    rsn_t s;
    out_t o;
    sb_init(&o.r);
    sb_init(&o.c);
    rsn_init(&s);
    if (cases[i].inside)
        rsn_start_inside(&s);
    ck_assert_int_eq(rsn_feed(&s, t, a, &o.r, &o.c), 0);
    ck_assert_int_eq(rsn_feed(&s, t + a, b - a, &o.r, &o.c), 0);
    ck_assert_int_eq(rsn_feed(&s, t + b, n - b, &o.r, &o.c), 0);
    ck_assert_int_eq(rsn_finish(&s, &o.r, &o.c), 0);
    ck_assert_msg(o.r.len == strlen(cases[i].reasoning) &&
                      memcmp(o.r.buf ? o.r.buf : "", cases[i].reasoning, o.r.len) == 0,
                  "case %zu cut %zu/%zu: reasoning [%.*s], want [%s]", i, a, b, (int)o.r.len,
                  o.r.buf ? o.r.buf : "", cases[i].reasoning);
    ck_assert_msg(o.c.len == strlen(cases[i].content) &&
                      memcmp(o.c.buf ? o.c.buf : "", cases[i].content, o.c.len) == 0,
                  "case %zu cut %zu/%zu: content [%.*s], want [%s]", i, a, b, (int)o.c.len,
                  o.c.buf ? o.c.buf : "", cases[i].content);
    ck_assert_uint_eq(s.n_reasoning, o.r.len);
    rsn_free(&s);
    sb_free(&o.r);
    sb_free(&o.c);
}

START_TEST(test_splits)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        size_t n = strlen(cases[i].text);
        for (size_t a = 0; a <= n; a++)
            for (size_t b = a; b <= n; b++)
                run_cut(i, a, b);
    }
}
END_TEST

/* Byte by byte: nothing is released that a later byte could change. */
START_TEST(test_bytewise)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        const char *t = cases[i].text;
        rsn_t s;
        out_t o;
        sb_init(&o.r);
        sb_init(&o.c);
        rsn_init(&s);
        if (cases[i].inside)
            rsn_start_inside(&s);
        for (size_t k = 0; t[k]; k++) {
            ck_assert_int_eq(rsn_feed(&s, t + k, 1, &o.r, &o.c), 0);
            /* what was released so far is a prefix of the final fields */
            ck_assert(o.r.len <= strlen(cases[i].reasoning));
            ck_assert(o.c.len <= strlen(cases[i].content));
            ck_assert(memcmp(o.r.buf ? o.r.buf : "", cases[i].reasoning, o.r.len) == 0);
            ck_assert(memcmp(o.c.buf ? o.c.buf : "", cases[i].content, o.c.len) == 0);
        }
        ck_assert_int_eq(rsn_finish(&s, &o.r, &o.c), 0);
        ck_assert_str_eq(o.r.buf ? o.r.buf : "", cases[i].reasoning);
        ck_assert_str_eq(o.c.buf ? o.c.buf : "", cases[i].content);
        ck_assert_int_eq(s.n_tokens, (long long)strlen(t));
        rsn_free(&s);
        sb_free(&o.r);
        sb_free(&o.c);
    }
}
END_TEST

/* The think block's tokens: up to the one that completes "</think>", the tags included. */
START_TEST(test_token_count)
{
    static const struct {
        const char *toks[12];
        long long want;
        bool thinking; /* still in the block (or undecided) at the end */
        bool inside;   /* started inside it */
    } tc[] = {
        {{"<", "think", ">\n", "r1", " r2", "\n</", "think", ">\n\n", "A", "B"}, 8,
         false, false},
        {{"Hello", "<think>", "x"}, 0, false, false},
        {{"<", "thi"}, 0, true, false},
        {{"<think>", "a", "b"}, 3, true, false},
        {{"<think>", "</think>", "\n\n", "A"}, 2, false, false},
        {{"<think>x</thi", "nk>", "y"}, 2, false, false},
        {{"ab", "c</think>", "\n\n", "d"}, 2, false, true},
        {{"ab", "cd"}, 2, true, true},
        {{"</think>", "d"}, 1, false, true},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(tc); i++) {
        rsn_t s;
        sb_t r, c;
        sb_init(&r);
        sb_init(&c);
        rsn_init(&s);
        if (tc[i].inside)
            rsn_start_inside(&s);
        for (size_t k = 0; k < 12 && tc[i].toks[k]; k++)
            ck_assert_int_eq(rsn_feed(&s, tc[i].toks[k], strlen(tc[i].toks[k]), &r, &c), 0);
        ck_assert_msg(s.n_reasoning_tokens == tc[i].want, "case %zu: %lld reasoning tokens",
                      i, s.n_reasoning_tokens);
        ck_assert_int_eq(rsn_thinking(&s), tc[i].thinking);
        rsn_free(&s);
        sb_free(&r);
        sb_free(&c);
    }
}
END_TEST

/* gpt-oss's harmony output (rsn_init_harmony), as llama-server's gpt-oss parser splits it;
 * the expected fields are written from its rules (reasoning.h). */
#define AN "<|channel|>analysis<|message|>"
#define FI "<|channel|>final<|message|>"
#define EN "<|end|>"
#define ST "<|start|>assistant"
#define MARK "<|channel|>commentary to=functions."
static const struct {
    const char *text, *reasoning, *content;
    bool inl, calls;
} hcases[] = {
    {AN "  Think hard. \n" EN ST FI "The answer.", "Think hard.", "The answer.", false, true},
    {FI "Just answer", "", "Just answer", false, true},
    {AN "cut off mid  ", "cut off mid", "", false, true},
    {AN "a" EN ST AN " b " EN ST FI "c", "ab", "c", false, true},
    {"Hello world", "", "Hello world", false, true},
    {AN "x" EN ST "<|channel|>fin", "x", "<|channel|>fin", false, true},
    {"<|channel|>weird<|message|>zzz" EN ST FI "ok", "", "ok", false, true},
    {"<|channel|>commentary<|message|>Let me check." EN ST
     "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"c\":1}", "",
     "Let me check." MARK "get_weather <|constrain|>json<|message|>{\"c\":1}", false, true},
    {AN "need tool" EN ST " to=functions.clock<|channel|>commentary json<|message|>{}",
     "need tool", MARK "clock <|constrain|>json<|message|>{}", false, true},
    {AN "need tool" EN ST " to=functions.clock<|channel|>commentary json<|message|>{}",
     "need tool", "", false, false},
    {AN " x " EN ST FI "y", "", AN " x " EN "y", true, true},
    {"<|channel|>final <|constrain|>json<|message|>{\"a\":1}", "", "{\"a\":1}", false, true},
    {FI "a" EN "junk\n", "", "a", false, true},
    {FI "a<|en", "", "a<|en", false, true},
    {AN "a <|en b" EN ST FI "c", "a <|en b", "c", false, true},
    {"<|channel|>analysis to=functions.f json<|message|>{}", "",
     MARK "f <|constrain|>json<|message|>{}", false, true},
    {"", "", "", false, true},
    {"<|channel|>x" ST "<|channel|>final<|message|>ok", "", "ok", false, true},
    /* a header llama-server's regexes do not match whole: skipped */
    {"<|channel|>final json extra<|message|>no" EN ST FI "yes", "", "yes", false, true},
    {"<|channel|>commentary to=functions.<|message|>{}" EN ST FI "z", "", "z", false, true},
    {AN "\xc3\xa9 \xe4\xb8\xad" EN ST FI "\xf0\x9f\x98\x81", "\xc3\xa9 \xe4\xb8\xad",
     "\xf0\x9f\x98\x81", false, true},
};

static void hrun(size_t i, const size_t *cuts, size_t ncuts, bool prefix)
{
    const char *t = hcases[i].text;
    size_t n = strlen(t), at = 0;
    rsn_t s;
    out_t o;
    sb_init(&o.r);
    sb_init(&o.c);
    rsn_init(&s);
    rsn_init_harmony(&s, hcases[i].inl, hcases[i].calls);
    for (size_t k = 0; k <= ncuts; k++) {
        size_t e = k < ncuts ? cuts[k] : n;
        ck_assert_int_eq(rsn_feed(&s, t + at, e - at, &o.r, &o.c), 0);
        at = e;
        if (prefix) { /* nothing released that a later byte could change */
            ck_assert_msg(o.r.len <= strlen(hcases[i].reasoning) &&
                              memcmp(o.r.buf ? o.r.buf : "", hcases[i].reasoning, o.r.len) == 0,
                          "case %zu at %zu: reasoning [%.*s]", i, at, (int)o.r.len, o.r.buf);
            ck_assert_msg(o.c.len <= strlen(hcases[i].content) &&
                              memcmp(o.c.buf ? o.c.buf : "", hcases[i].content, o.c.len) == 0,
                          "case %zu at %zu: content [%.*s]", i, at, (int)o.c.len, o.c.buf);
        }
    }
    ck_assert_int_eq(rsn_finish(&s, &o.r, &o.c), 0);
    ck_assert_msg(strcmp(o.r.buf ? o.r.buf : "", hcases[i].reasoning) == 0,
                  "case %zu: reasoning [%s], want [%s]", i, o.r.buf ? o.r.buf : "",
                  hcases[i].reasoning);
    ck_assert_msg(strcmp(o.c.buf ? o.c.buf : "", hcases[i].content) == 0,
                  "case %zu: content [%s], want [%s]", i, o.c.buf ? o.c.buf : "",
                  hcases[i].content);
    ck_assert_uint_eq(s.n_reasoning, o.r.len);
    rsn_free(&s);
    sb_free(&o.r);
    sb_free(&o.c);
}

/* whole, cut anywhere in two or three pieces (a marker split across tokens), byte by byte */
START_TEST(test_harmony)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(hcases); i++) {
        size_t n = strlen(hcases[i].text);
        hrun(i, NULL, 0, false);
        for (size_t a = 0; a <= n; a++)
            for (size_t b = a; b <= n; b += 3) {
                size_t cuts[2] = {a, b};
                hrun(i, cuts, 2, false);
            }
        size_t *cuts = malloc((n ? n : 1) * sizeof *cuts);
        ck_assert_ptr_nonnull(cuts);
        for (size_t k = 0; k < n; k++)
            cuts[k] = k + 1;
        hrun(i, cuts, n ? n - 1 : 0, true);
        free(cuts);
    }
}
END_TEST

/* harmony's reasoning tokens: an analysis message's, its header and <|end|> included */
START_TEST(test_harmony_tokens)
{
    static const char *const toks[] = {"<|channel|>", "analysis", "<|message|>", "Th", "ink",
                                       "<|end|>", "<|start|>", "assistant", "<|channel|>",
                                       "final", "<|message|>", "A", NULL};
    rsn_t s;
    sb_t r, c;
    sb_init(&r);
    sb_init(&c);
    rsn_init(&s);
    rsn_init_harmony(&s, false, false);
    for (size_t k = 0; toks[k]; k++) {
        ck_assert_int_eq(rsn_feed(&s, toks[k], strlen(toks[k]), &r, &c), 0);
        ck_assert_int_eq(rsn_thinking(&s), k < 10);
    }
    ck_assert_int_eq(s.n_reasoning_tokens, 6);
    ck_assert_int_eq(rsn_finish(&s, &r, &c), 0);
    ck_assert_str_eq(r.buf, "Think");
    ck_assert_str_eq(c.buf, "A");
    rsn_free(&s);
    sb_free(&r);
    sb_free(&c);
}
END_TEST

/* An assistant prefill (rsn_prime): the splitter reads it as output already written, and
 * releases only what the output adds; bytes the prefill left undecided (a whitespace run, a
 * tag's start) count as its own. */
static const struct {
    bool harmony;
    const char *prefill, *output, *reasoning, *content;
} pcases[] = {
    {false, "<think>\nabc ", "def</think>\n\nAns", "def", "Ans"},
    {false, "<think>\nabc ", "</think>x", "", "x"},
    {false, "<think>\nabc", " def \n", " def", ""},
    {false, "<thi", "nk>r</think>c", "r", "c"},
    {false, "<thi", "s is", "", "s is"},
    {false, "", "<think>a</think>b", "a", "b"},
    {false, "Hello", " world", "", " world"},
    {false, "<think>\n\n</think>\n\nHello", ", there", "", ", there"},
    {false, "<think>\n\n</think>\n", "\nHi", "", "Hi"},
    {false, "<think>a</th", "ink>b", "", "b"},
    {false, "<think>a</th", "e end", "e end", ""},
    {true, "<|channel|>final<|message|>Hel", "lo<|end|>", "", "lo"},
    {true, "<|channel|>analysis<|message|>thinking ",
     "more<|end|><|start|>assistant<|channel|>final<|message|>ok", "more", "ok"},
    {true, "<|channel|>analysis<|message|>x<|en", "d|><|start|>assistant<|channel|>final"
     "<|message|>y", "", "y"},
};

START_TEST(test_prime)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(pcases); i++) {
        const char *o = pcases[i].output;
        for (size_t cut = 0; cut <= strlen(o); cut++) {
            rsn_t s;
            out_t out;
            sb_init(&out.r);
            sb_init(&out.c);
            rsn_init(&s);
            if (pcases[i].harmony)
                rsn_init_harmony(&s, false, false);
            ck_assert_int_eq(rsn_prime(&s, pcases[i].prefill, strlen(pcases[i].prefill)), 0);
            ck_assert_int_eq(s.n_tokens, 0);
            ck_assert_int_eq(s.n_reasoning_tokens, 0);
            ck_assert_int_eq(rsn_feed(&s, o, cut, &out.r, &out.c), 0);
            ck_assert_int_eq(rsn_feed(&s, o + cut, strlen(o) - cut, &out.r, &out.c), 0);
            ck_assert_int_eq(rsn_finish(&s, &out.r, &out.c), 0);
            ck_assert_msg(out.r.len == strlen(pcases[i].reasoning) &&
                              memcmp(out.r.buf ? out.r.buf : "", pcases[i].reasoning,
                                     out.r.len) == 0,
                          "prime case %zu cut %zu: reasoning [%.*s], want [%s]", i, cut,
                          (int)out.r.len, out.r.buf ? out.r.buf : "", pcases[i].reasoning);
            ck_assert_msg(out.c.len == strlen(pcases[i].content) &&
                              memcmp(out.c.buf ? out.c.buf : "", pcases[i].content,
                                     out.c.len) == 0,
                          "prime case %zu cut %zu: content [%.*s], want [%s]", i, cut,
                          (int)out.c.len, out.c.buf ? out.c.buf : "", pcases[i].content);
            rsn_free(&s);
            sb_free(&out.r);
            sb_free(&out.c);
        }
    }
}
END_TEST

/* Where a prefill leaves it: inside the reasoning or not. */
START_TEST(test_prime_inside)
{
    static const struct {
        bool harmony;
        const char *prefill;
        bool inside;
    } c[] = {
        {false, "<think>\nabc", true}, {false, "<think>", true}, {false, "", false},
        {false, "<think>a</think>b", false}, {false, "Hi", false},
        {true, "<|channel|>analysis<|message|>x", true},
        {true, "<|channel|>final<|message|>x", false},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(c); i++) {
        rsn_t s;
        rsn_init(&s);
        if (c[i].harmony)
            rsn_init_harmony(&s, false, false);
        ck_assert_int_eq(rsn_prime(&s, c[i].prefill, strlen(c[i].prefill)), 0);
        ck_assert_msg(rsn_in_reasoning(&s) == c[i].inside, "inside case %zu", i);
        rsn_free(&s);
    }
}
END_TEST

START_TEST(test_names)
{
    ck_assert_int_eq(rsn_format_from_name("auto"), RSN_AUTO);
    ck_assert_int_eq(rsn_format_from_name("none"), RSN_NONE);
    ck_assert_int_eq(rsn_format_from_name("deepseek"), RSN_DEEPSEEK);
    ck_assert_int_eq(rsn_format_from_name("deepseek-legacy"), -EINVAL);
    ck_assert_int_eq(rsn_format_from_name("DeepSeek"), -EINVAL);
    ck_assert_int_eq(rsn_format_from_name(NULL), -EINVAL);
    for (int f = RSN_AUTO; f <= RSN_DEEPSEEK; f++)
        ck_assert_int_eq(rsn_format_from_name(rsn_format_name(f)), f);
    ck_assert_str_eq(rsn_format_name(9), "?");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("reasoning");
    TCase *tc = tcase_create("split");
    tcase_add_test(tc, test_splits);
    tcase_add_test(tc, test_bytewise);
    tcase_add_test(tc, test_token_count);
    tcase_add_test(tc, test_harmony);
    tcase_add_test(tc, test_harmony_tokens);
    tcase_add_test(tc, test_prime);
    tcase_add_test(tc, test_prime_inside);
    tcase_add_test(tc, test_names);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
