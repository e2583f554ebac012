/* test_regex.c: proves guided_regex's compiler (server/regex.h): the GBNF it writes accepts
 * exactly the strings the regex matches whole (hand-picked cases, then random strings
 * against POSIX regexec on the same patterns), unsupported constructs are refused by name
 * with their column, malformed patterns are errors, and guided_choice's grammar takes
 * exactly its strings, quotes, backslashes and control bytes included. */
#include <regex.h>

#include "common/fd.h"
#include "engine/gbnf.h"
#include "server/regex.h"
#include "tests/testutil.h"

static gb_grammar_t *compile(const char *re)
{
    char *text = NULL, err[256];
    int rc = rx_to_gbnf(re, strlen(re), &text, err, sizeof err);
    ck_assert_msg(rc == 0, "/%s/: %s", re, err);
    gb_grammar_t *g = NULL;
    rc = gb_parse(&g, text, strlen(text), err, sizeof err);
    ck_assert_msg(rc == 0, "/%s/ -> [%s]: %s", re, text, err);
    free(text);
    return g;
}

START_TEST(test_cases)
{
    static const struct {
        const char *re;
        const char *in[6], *out[6];
    } t[] = {
        { "abc", { "abc" }, { "ab", "abcd", "" } },
        { "^a|b$", { "a", "b" }, { "ab", "" } },
        { "a.c", { "abc", "a c", "aéc" }, { "a\nc", "ac" } },
        { "\\d{2,3}-\\w+\\s?", { "12-a_Z", "123-x ", "99-9\t" }, { "1-a", "12-", "12-a  " } },
        { "[^\\d\\s]+", { "ab", "é-" }, { "a1", "a b", "" } },
        { "\\D\\W\\S", { "a!b", "x x" }, { "1!b", "aab", "a! " } },
        { "(?:ab|c)*(?P<n>d)?", { "", "abcab", "cd", "d" }, { "a", "abd d" } },
        { "a{3}b{,2}c{2,}", { "aaacc", "aaabbccc" }, { "aacc", "aaabbbcc", "aaac" } },
        { "x+?y*?z??", { "x", "xxyyz" }, { "", "yz" } },
        { "[]a]+[a-]", { "]a-", "aa" }, { "-", "]" } },
        { "\\.\\*\\(\\)\\[\\{\\}\\\\\\$\\^\\|\\?\\+", { ".*()[{}\\$^|?+" }, { "" } },
        { "\\x41\\u00e9\\n\\t", { "Aé\n\t" }, { "Ae\n\t" } },
        { "a{2", { "a{2" }, { "aa" } },
        { "a{,}", { "a{,}" }, { "a" } },
        { "é+€", { "éé€" }, { "€" } },
        { "", { "" }, { "a" } },
        { "(|a)b", { "b", "ab" }, { "aab" } },
        { "[\\b]", { "\b" }, { "b" } },
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(t); i++) {
        gb_grammar_t *g = compile(t[i].re);
        for (int k = 0; k < 6 && t[i].in[k]; k++)
            ck_assert_msg(gb_match(g, t[i].in[k], strlen(t[i].in[k])) == 1,
                          "/%s/ should match [%s]", t[i].re, t[i].in[k]);
        for (int k = 0; k < 6 && t[i].out[k]; k++)
            ck_assert_msg(gb_match(g, t[i].out[k], strlen(t[i].out[k])) == 0,
                          "/%s/ should not match [%s]", t[i].re, t[i].out[k]);
        gb_free(g);
    }
}
END_TEST

START_TEST(test_refused)
{
    static const struct {
        const char *re;
        int rc;
        const char *want;
    } t[] = {
        { "(a)\\1", FD_EUNSUP, "column 4: backreferences" },
        { "(?P<x>a)(?P=x)", FD_EUNSUP, "column 9: backreferences" },
        { "a(?=b)", FD_EUNSUP, "column 2: lookaround (lookahead)" },
        { "a(?!b)", FD_EUNSUP, "column 2: lookaround (lookahead)" },
        { "(?<=a)b", FD_EUNSUP, "column 1: lookaround (lookbehind)" },
        { "(?<!a)b", FD_EUNSUP, "column 1: lookaround (lookbehind)" },
        { "\\bword", FD_EUNSUP, "column 1: word boundaries" },
        { "(?i)a", FD_EUNSUP, "column 1: inline flags" },
        { "a*+", FD_EUNSUP, "column 3: possessive" },
        { "a^b", FD_EUNSUP, "column 2: the anchor ^" },
        { "a$b", FD_EUNSUP, "column 2: the anchor $" },
        { "[[:alpha:]]", FD_EUNSUP, "column 2: POSIX classes" },
        { "\\p{L}", FD_EUNSUP, "column 1: Unicode properties" },
        { "a{1001}", FD_EUNSUP, "column 2: repetition bounds above" },
        { "*a", -EINVAL, "column 1: nothing to repeat" },
        { "a**", -EINVAL, "column 3: multiple repeat" },
        { "(a", -EINVAL, "column 1: missing )" },
        { "a)", -EINVAL, "column 2: unbalanced parenthesis" },
        { "[a-", -EINVAL, "column 1: unterminated character class" },
        { "[z-a]", -EINVAL, "column 2: character range out of order" },
        { "a{3,2}", -EINVAL, "column 2: repetition maximum below" },
        { "\\q", -EINVAL, "column 1: unknown escape" },
        { "a\\", -EINVAL, "column 2: a pattern cannot end" },
        { "\\xZZ", -EINVAL, "column 1: expected 2 hexadecimal" },
        { "\xff", -EINVAL, "column 1: invalid UTF-8" },
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(t); i++) {
        char *text = (char *)"x", err[256];
        int rc = rx_to_gbnf(t[i].re, strlen(t[i].re), &text, err, sizeof err);
        ck_assert_msg(rc == t[i].rc && !text, "/%s/: rc %d", t[i].re, rc);
        ck_assert_msg(strncmp(err, t[i].want, strlen(t[i].want)) == 0, "/%s/: \"%s\", want "
                      "\"%s...\"", t[i].re, err, t[i].want);
    }
    /* deep nesting is refused, not a stack overflow */
    char deep[400];
    memset(deep, '(', 300);
    deep[300] = 0;
    char *text = NULL, err[256];
    ck_assert_int_eq(rx_to_gbnf(deep, 300, &text, err, sizeof err), FD_EUNSUP);
}
END_TEST

/* Random strings: the compiled grammar agrees with POSIX regexec on the same pattern. */
START_TEST(test_posix_oracle)
{
    static const struct {
        const char *re, *alphabet;
    } t[] = {
        { "(ab|a)(c|bcd)(d*)", "abcd" },
        { "[a-c]{2,4}(x|yz?)*", "abcxyz" },
        { "(a|b)*abb", "ab" },
        { "((a|)b?)c?", "abc" },
        { "[^a]b{0,2}[.]", "ab.c" },
    };
    uint64_t rng = 3;
    for (size_t i = 0; i < FD_ARRAY_LEN(t); i++) {
        gb_grammar_t *g = compile(t[i].re);
        char anchored[128];
        snprintf(anchored, sizeof anchored, "^(%s)$", t[i].re);
        regex_t re;
        ck_assert_int_eq(regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB), 0);
        size_t na = strlen(t[i].alphabet);
        int yes = 0;
        for (int k = 0; k < 20000; k++) {
            char s[16];
            size_t len = tu_rand64(&rng) % 9;
            for (size_t j = 0; j < len; j++)
                s[j] = t[i].alphabet[tu_rand64(&rng) % na];
            s[len] = 0;
            int want = regexec(&re, s, 0, NULL, 0) == 0;
            ck_assert_msg(gb_match(g, s, len) == want, "/%s/ on [%s]: regexec %d", t[i].re, s,
                          want);
            yes += want;
        }
        ck_assert_msg(yes > 50, "/%s/: only %d matches", t[i].re, yes);
        regfree(&re);
        gb_free(g);
    }
}
END_TEST

START_TEST(test_choice)
{
    const char *s[] = { "yes", "no", "a \"quoted\\\" one\n", "", "é€😀", "y" };
    size_t lens[FD_ARRAY_LEN(s)];
    for (size_t i = 0; i < FD_ARRAY_LEN(s); i++)
        lens[i] = strlen(s[i]);
    char *text = NULL, err[256];
    ck_assert_int_eq(rx_choice_gbnf(s, lens, (int)FD_ARRAY_LEN(s), &text), 0);
    gb_grammar_t *g = NULL;
    ck_assert_msg(gb_parse(&g, text, strlen(text), err, sizeof err) == 0, "%s", err);
    free(text);
    for (size_t i = 0; i < FD_ARRAY_LEN(s); i++)
        ck_assert_int_eq(gb_match(g, s[i], lens[i]), 1);
    static const char *const out[] = { "ye", "yess", "a \"quoted\\\" one", "no\n", "é€" };
    for (size_t i = 0; i < FD_ARRAY_LEN(out); i++)
        ck_assert_msg(gb_match(g, out[i], strlen(out[i])) == 0, "[%s]", out[i]);
    gb_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("regex");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_cases);
    tcase_add_test(tc, test_refused);
    tcase_add_test(tc, test_posix_oracle);
    tcase_add_test(tc, test_choice);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
