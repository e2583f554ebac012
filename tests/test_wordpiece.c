/* test_wordpiece.c: proves the WordPiece (BERT) tokenizer normalizes and splits as llama.cpp's
 * WPM does (accents stripped through the first code point of the decomposition, lower case,
 * punctuation, ASCII symbols and CJK ideographs alone, controls dropped, white space), matches
 * words greedily longest-first with ## continuations, gives [UNK] for a word with an
 * unmatched position, adds [CLS] ... [SEP], and loads a "bert" vocabulary from GGUF. */
#include "engine/tokenizer.h"

#include <string.h>

#include "common/fd.h"
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "engine/wordpiece.h"
#include "tests/testutil.h"

/* The vocabulary as convert_hf_to_gguf writes BERT's: word starts with U+2581, "##x" as x. */
#define W "\xE2\x96\x81"
static const char *const vocab[] = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    W "hello", W "world", W "un", "aff", "able", W "cafe", W ",", W "!", W "\xE4\xB8\xAD",
    W "\xE6\x96\x87", W "the", W "a", "b", W "$", W "5", W "re", "rank", "ing", W "rer",
    W "\xCE\xB1", W "i", W "x", "y", W "'", W "s",
};
enum { PAD, UNK, CLS, SEP, MASK, HELLO, WORLD, UN, AFF, ABLE, CAFE, COMMA, BANG, ZHONG, WEN,
       THE, A, B_, DOLLAR, FIVE, RE, RANK, ING, RER, ALPHA, I_, X, Y, APOS, S_ };

static tok_t *build(void)
{
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_WPM;
    s.n_tokens = (int32_t)FD_ARRAY_LEN(vocab);
    s.texts = vocab;
    int32_t types[FD_ARRAY_LEN(vocab)];
    for (size_t i = 0; i < FD_ARRAY_LEN(vocab); i++)
        types[i] = i <= MASK ? TOK_T_CONTROL : TOK_T_NORMAL;
    types[UNK] = TOK_T_UNKNOWN;
    s.types = types;
    s.bos = CLS;
    s.sep = SEP;
    s.unk = UNK;
    s.pad = PAD;
    tok_t *t;
    char err[128];
    ck_assert_msg(tok_build(&t, &s, err, sizeof err) == 0, "%s", err);
    return t;
}


START_TEST(test_words)
{
    uint8_t out[256];
    size_t ends[64];
    const char *in = "  H\xC3\xA9llo,\tW\xC3\x96RLD!\x01x\xE4\xB8\xAD\xE6\x96\x87y $5 ";
    size_t nw = wpm_words((const uint8_t *)in, strlen(in), out, ends);
    const char *want[] = {"hello", ",", "world", "!", "x", "\xE4\xB8\xAD", "\xE6\x96\x87",
                          "y", "$", "5"};
    ck_assert_uint_eq(nw, FD_ARRAY_LEN(want));
    for (size_t k = 0, from = 0; k < nw; from = ends[k++]) {
        ck_assert_uint_eq(ends[k] - from, strlen(want[k]));
        ck_assert_msg(memcmp(out + from, want[k], ends[k] - from) == 0, "word %zu", k);
    }
    /* properties: decomposition's first code point, lower case, classes */
    ck_assert_uint_eq(wpm_nfd(0xE9), 'e');
    ck_assert_uint_eq(wpm_nfd(0x130), 'I');          /* I with dot above */
    ck_assert_uint_eq(wpm_nfd(0xD55C), 0x1112);      /* a Hangul syllable: its consonant */
    ck_assert_uint_eq(wpm_nfd(0x1EA5), 'a');         /* two marks: still the base */
    ck_assert_uint_eq(wpm_lower(0x391), 0x3B1);
    ck_assert_uint_eq(wpm_lower('Q'), 'q');
    ck_assert(wpm_is_punct(0x3001) && wpm_is_punct('-') && !wpm_is_punct('$'));
    ck_assert(wpm_is_control(0x200B) && wpm_is_control(0xE000) && !wpm_is_control('a'));
    ck_assert(wpm_is_space(0x3000) && wpm_is_space('\n') && !wpm_is_space(0x200B));
    ck_assert(wpm_is_cjk(0x4E2D) && !wpm_is_cjk(0x3042) && !wpm_is_cjk(0x2B820));
    /* nothing but white space, controls and ill-formed bytes: no words */
    const char *empty = " \t\x01\xC3\xFF\x80 \xE2\x80\x8B";
    ck_assert_uint_eq(wpm_words((const uint8_t *)empty, strlen(empty), out, ends), 0);
}
END_TEST

START_TEST(test_encode)
{
    tok_t *t = build();
    ck_assert_int_eq(tok_kind(t), TOK_WPM);
    ck_assert_int_eq(tok_sep(t), SEP);
    ck_assert(tok_add_bos(t) && tok_add_sep(t));
    TU_EXPECT_IDS(t, "Hello, world!", true, CLS, HELLO, COMMA, WORLD, BANG, SEP);
    TU_EXPECT_IDS(t, "Hello, world!", false, HELLO, COMMA, WORLD, BANG);
    TU_EXPECT_IDS(t, "", true, CLS, SEP);
    /* precomposed accents go (NFD's first code point), upper case lowers */
    TU_EXPECT_IDS(t, "CAF\xC3\x89 caf\xC3\xA9", false, CAFE, CAFE);
    /* a combining mark typed as such stays in the word: no piece has it, so [UNK] (llama.cpp) */
    TU_EXPECT_IDS(t, "cafe\xCC\x81", false, UNK);
    /* longest first, continuations */
    TU_EXPECT_IDS(t, "unaffable", false, UN, AFF, ABLE);
    /* greedy, no backtracking: "rer" wins, then "anking" has no piece: the word is [UNK]
     * although re + rank + ing would spell it */
    TU_EXPECT_IDS(t, "reranking re", false, UNK, RE);
    /* a word far longer than any piece */
    TU_EXPECT_IDS(t, "the supercalifragilisticexpialidocious a", false, THE, UNK, A);
    /* CJK ideographs one per word (a missing one is its own [UNK]); Greek lower-cased */
    TU_EXPECT_IDS(t, "\xE4\xB8\xAD\xE6\x96\x87\xE5\xAD\x97 \xCE\x91", false, ZHONG, WEN, UNK, ALPHA);
    /* ASCII symbols split, controls vanish inside a word, odd white space separates */
    TU_EXPECT_IDS(t, "$5 a\x01" "b x\xC2\xA0y\xE3\x80\x80x", false, DOLLAR, FIVE, A, B_, X, UNK, X);
    /* punctuation inside a word: apostrophes split */
    TU_EXPECT_IDS(t, "x's", false, X, APOS, S_);
    /* ill-formed bytes are dropped, as llama.cpp's U+FFFD */
    TU_EXPECT_IDS(t, "x\xFFy", true, CLS, X, Y, SEP);
    /* the I with a dot above: its base I, lowered */
    TU_EXPECT_IDS(t, "\xC4\xB0", false, I_);
    /* special texts stay text unless parse_special */
    int32_t ids[16];
    size_t n;
    ck_assert_int_eq(tok_encode(t, "[SEP]x", 6, false, true, ids, 16, &n), 0);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], SEP);
    ck_assert_int_eq(ids[1], X);
    ck_assert_int_eq(tok_encode(t, "a a a", 5, true, false, ids, 2, &n), -ENOSPC);
    ck_assert_uint_eq(n, 5);
    /* pieces render with the U+2581 as a space */
    char buf[32];
    size_t len;
    ck_assert_int_eq(tok_piece(t, HELLO, false, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, 6);
    ck_assert(memcmp(buf, " hello", 6) == 0);
    tok_free(t);
}
END_TEST

/* A "bert" vocabulary in GGUF: [CLS] from cls_token_id, [SEP] from llama.cpp's
 * seperator_token_id, [UNK] found by its text. */
START_TEST(test_gguf_load)
{
    for (int variant = 0; variant < 3; variant++) {
        gguf_w_t *w;
        ck_assert_int_eq(gguf_w_new(&w), 0);
        gguf_w_add_str(w, "tokenizer.ggml.model", variant == 2 ? "wordpiece" : "bert");
        gguf_w_add_str_arr(w, "tokenizer.ggml.tokens", vocab, FD_ARRAY_LEN(vocab));
        if (variant == 0) {
            gguf_w_add_u32(w, "tokenizer.ggml.cls_token_id", CLS);
            gguf_w_add_u32(w, "tokenizer.ggml.seperator_token_id", SEP);
        }
        uint8_t *mem;
        size_t size;
        char err[256];
        ck_assert_int_eq(gguf_w_write_mem(w, &mem, &size, err, sizeof err), 0);
        gguf_w_free(w);
        gguf_t *g;
        ck_assert_int_eq(gguf_open_mem(&g, mem, size, "vocab.gguf", err, sizeof err), 0);
        tok_t *t = NULL;
        int rc = tok_load(&t, g, err, sizeof err);
        if (variant == 2) {
            ck_assert_int_eq(rc, FD_EUNSUP);
            ck_assert_msg(strstr(err, "bert") != NULL, "%s", err);
        } else {
            ck_assert_msg(rc == 0, "%s", err);
            ck_assert_int_eq(tok_bos(t), CLS); /* by key, or by the text "[CLS]" */
            ck_assert_int_eq(tok_sep(t), SEP);
            ck_assert_int_eq(tok_unk(t), UNK);
            TU_EXPECT_IDS(t, "Hello!", true, CLS, HELLO, BANG, SEP);
        }
        tok_free(t);
        gguf_close(g);
        free(mem);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wordpiece");
    TCase *tc = tcase_create("wordpiece");
    tcase_add_test(tc, test_words);
    tcase_add_test(tc, test_encode);
    tcase_add_test(tc, test_gguf_load);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
