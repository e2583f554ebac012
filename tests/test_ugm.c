/* test_ugm.c: proves the unigram (t5/UGM) tokenizer picks the Viterbi path of highest total
 * score (worked out by hand below), gives one unknown piece for a run of uncovered characters
 * (or their bytes when the vocabulary has byte pieces), matches a user-defined piece whole,
 * normalizes through a hand-built double-array charsmap (longest rule wins, replacements with
 * spaces, SentencePiece's white-space rules), adds BOS/EOS as the file says, loads "t5" from
 * GGUF (XLM-RoBERTa's ids and flags), decodes back; and that malformed charsmaps (short,
 * truncated, not whole units, strings without their NUL, units pointing outside the trie or
 * the strings) and vocabularies (no unknown piece, a charsmap that is not bytes) are refused
 * with a clear error and nothing leaked. */
#include "engine/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "engine/ugm.h"
#include "tests/testutil.h"

#define W "\xE2\x96\x81" /* U+2581 */

/* XLM-RoBERTa's layout: <s> <pad> </s> <unk> first. */
static const char *const vocab[] = {
    "<s>", "<pad>", "</s>", "<unk>",
    W, W "a", "a", "b", "ab", W "ab", "c", W "c", "abc", "x", "y", W "x", "<sep>", "[PAD9]",
    "d", "\xC3\xA9", /* é */
};
enum { BOS, PAD, EOS, UNK, SP, SPA, A, B, AB, SPAB, C, SPC, ABC, X, Y, SPX, SEPU, UNUSED, D,
       EACUTE, NV };
static const float scores[NV] = {
    0, 0, 0, 0,
    -2.0f, -3.0f, -2.5f, -2.5f, -4.0f, -4.5f, -3.0f, -3.5f, -9.5f, -3.0f, -3.0f, -4.0f, 0,
    -0.5f, -3.0f, -3.0f,
};

static int32_t types_of(int i)
{
    if (i == UNK)
        return TOK_T_UNKNOWN;
    if (i <= EOS)
        return TOK_T_CONTROL;
    if (i == SEPU)
        return TOK_T_USER_DEFINED;
    if (i == UNUSED)
        return TOK_T_UNUSED;
    return TOK_T_NORMAL;
}

static int build(tok_t **t, const uint8_t *cm, size_t cm_len, char *err, size_t errlen)
{
    int32_t types[NV];
    for (int i = 0; i < NV; i++)
        types[i] = types_of(i);
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_UGM;
    s.n_tokens = NV;
    s.texts = vocab;
    s.scores = scores;
    s.types = types;
    s.bos = BOS;
    s.eos = EOS;
    s.unk = UNK;
    s.pad = PAD;
    s.add_bos = 1;
    s.charsmap = cm;
    s.charsmap_len = cm_len;
    return tok_build(t, &s, err, errlen);
}


/* The paths by hand (normalized "▁abc"):
 *   ▁ab c        -4.5 - 3.0       = -7.5    <- best
 *   ▁a bc?        no piece "bc"
 *   ▁ a b c      -2.0-2.5-2.5-3.0 = -10.0
 *   ▁ ab c       -2.0-4.0-3.0     = -9.0
 *   ▁ abc        -2.0-9.5         = -11.5
 *   ▁a b c       -3.0-2.5-3.0     = -8.5 */
START_TEST(test_viterbi)
{
    tok_t *t;
    char err[256];
    ck_assert_msg(build(&t, NULL, 0, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(tok_kind(t), TOK_UGM);
    TU_EXPECT_IDS(t, "abc", false, SPAB, C);
    TU_EXPECT_IDS(t, "abc", true, BOS, SPAB, C, EOS); /* add_bos set; add_eos the UGM default */
    /* "▁xy": ▁x y (-7) beats ▁ x y (-8) */
    TU_EXPECT_IDS(t, "xy", false, SPX, Y);
    /* white space: leading and trailing dropped, runs made one */
    TU_EXPECT_IDS(t, "  ab   c ", false, SPAB, SPC);
    /* unknowns: q and z are no piece: one <unk> for the run "qz"; é is a piece */
    TU_EXPECT_IDS(t, "aqzb", false, SPA, UNK, B);
    TU_EXPECT_IDS(t, "q", false, SP, UNK);
    TU_EXPECT_IDS(t, "\xC3\xA9q\xC3\xA9", false, SP, EACUTE, UNK, EACUTE);
    /* an ill-formed byte reads as U+FFFD (no piece: unknown) */
    TU_EXPECT_IDS(t, "a\xFF", false, SPA, UNK);
    /* the user-defined piece wins inside the search (score about -0.1); the unused one
     * ([PAD9], score -0.5) is never chosen */
    TU_EXPECT_IDS(t, "a<sep>b", false, SPA, SEPU, B);
    TU_EXPECT_IDS(t, "[PAD9]", false, SP, UNK);
    /* control texts are special only when parsed; then each side is its own text, with its
     * own dummy space (as llama.cpp) */
    int32_t ids[16];
    size_t n;
    ck_assert_int_eq(tok_encode(t, "a</s>b", 6, false, true, ids, 16, &n), 0);
    ck_assert_int_eq(n, 4);
    ck_assert(ids[0] == SPA && ids[1] == EOS && ids[2] == SP && ids[3] == B);
    ck_assert_int_eq(tok_encode(t, "", 0, false, false, ids, 16, &n), 0);
    ck_assert_int_eq(n, 0);
    /* decoding: U+2581 back to spaces, the dummy one dropped, specials silent */
    const int32_t d[] = {BOS, SPAB, SPC, UNK, EACUTE, EOS};
    char buf[64];
    size_t len;
    ck_assert_int_eq(tok_decode(t, d, FD_ARRAY_LEN(d), false, true, buf, sizeof buf, &len), 0);
    ck_assert_int_eq(len, 6);
    ck_assert(memcmp(buf, "ab c\xC3\xA9", 6) == 0);
    tok_free(t);
}
END_TEST

/* Byte fallback: with <0xXX> pieces, each unknown character becomes its UTF-8 bytes. */
START_TEST(test_byte_fallback)
{
    const char *texts[4 + 256 + 2];
    char names[256][8];
    float sc[4 + 256 + 2];
    int32_t ty[4 + 256 + 2];
    int n = 0;
    const char *head[] = {"<unk>", "<s>", "</s>"};
    for (int i = 0; i < 3; i++) {
        texts[n] = head[i];
        sc[n] = 0;
        ty[n++] = i == 0 ? TOK_T_UNKNOWN : TOK_T_CONTROL;
    }
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        texts[n] = names[b];
        sc[n] = 0;
        ty[n++] = TOK_T_BYTE;
    }
    texts[n] = W;
    sc[n] = -1;
    ty[n++] = TOK_T_NORMAL;
    texts[n] = "a";
    sc[n] = -1;
    ty[n++] = TOK_T_NORMAL;
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_UGM;
    s.n_tokens = n;
    s.texts = texts;
    s.scores = sc;
    s.types = ty;
    s.unk = 0;
    tok_t *t;
    char err[256];
    ck_assert_msg(tok_build(&t, &s, err, sizeof err) == 0, "%s", err);
    /* "▁a☃☃a": ☃ is E2 98 83 */
    TU_EXPECT_IDS(t, "a\xE2\x98\x83\xE2\x98\x83" "a", false, 259, 260, 3 + 0xE2, 3 + 0x98,
           3 + 0x83, 3 + 0xE2, 3 + 0x98, 3 + 0x83, 260);
    char buf[64];
    size_t len;
    int32_t ids[16];
    size_t ni;
    ck_assert_int_eq(tok_encode(t, "a\xE2\x98\x83", 4, false, false, ids, 16, &ni), 0);
    ck_assert_int_eq(tok_decode(t, ids, ni, false, true, buf, sizeof buf, &len), 0);
    ck_assert_int_eq(len, 4);
    ck_assert(memcmp(buf, "a\xE2\x98\x83", 4) == 0);
    tok_free(t);
}
END_TEST

/* A charsmap by hand, as SentencePiece lays it out: the trie's byte size (u32 LE), a Darts
 * double array of 1024 units, the strings "a\0x y\0".  Rules: "A" -> "a", "AB" -> "x y".
 *   root (unit 0): offset 256, so its children sit at 256 ^ label
 *   'A' at 256 ^ 0x41 = 321: label 0x41, has a value, offset 833 -> node 321 ^ 833 = 512,
 *       whose unit is the value (bit 31) 0 ("a")
 *   'B' at 512 ^ 0x42 = 578: label 0x42, has a value, offset 322 -> node 768, value 2 */
enum { NU = 1024 };
static size_t make_charsmap(uint8_t *out)
{
    static uint32_t u[NU];
    memset(u, 0, sizeof u);
    u[0] = 256u << 10;
    u[321] = 833u << 10 | 1u << 8 | 0x41;
    u[512] = 1u << 31 | 0;
    u[578] = 322u << 10 | 1u << 8 | 0x42;
    u[768] = 1u << 31 | 2;
    const uint32_t size = NU * 4;
    memcpy(out, &size, 4); /* the tests run little-endian, as the format is */
    memcpy(out + 4, u, sizeof u);
    memcpy(out + 4 + sizeof u, "a\0x y\0", 6);
    return 4 + sizeof u + 6;
}

static void expect_norm(const ugm_t *u, const char *in, const char *want)
{
    uint8_t *out;
    size_t n;
    ck_assert_int_eq(ugm_normalize(u, (const uint8_t *)in, strlen(in), &out, &n), 0);
    ck_assert_msg(n == strlen(want) && memcmp(out, want, n) == 0, "'%s' -> '%.*s', want '%s'",
                  in, (int)n, (const char *)out, want);
    free(out);
}

START_TEST(test_charsmap)
{
    static uint8_t cm[4 + NU * 4 + 6];
    size_t len = make_charsmap(cm);
    const char *texts[] = {"<unk>", W, "a", "x", "y", "B"};
    ugm_spec_t s = {.n_tokens = 6, .texts = texts, .unk = 0, .charsmap = cm,
                    .charsmap_len = len, .add_dummy_prefix = true,
                    .remove_extra_whitespaces = true, .escape_whitespaces = true};
    ugm_t *u;
    char err[256];
    ck_assert_msg(ugm_build(&u, &s, err, sizeof err) == 0, "%s", err);
    /* "AB" is the longer rule; its space is escaped; " A B" keeps one space each */
    expect_norm(u, "ABA B", W "x" W "ya" W "B");
    expect_norm(u, "  AB", W "x" W "y");
    expect_norm(u, "A", W "a");
    expect_norm(u, "AAB", W "ax" W "y");
    expect_norm(u, "", "");
    expect_norm(u, "   ", "");
    ugm_free(u);
    /* without remove_extra_whitespaces: every space stays, the dummy one first */
    s.remove_extra_whitespaces = false;
    ck_assert_msg(ugm_build(&u, &s, err, sizeof err) == 0, "%s", err);
    expect_norm(u, " AB ", W W "x" W "y" W);
    ugm_free(u);
    /* white space as suffix, unescaped */
    s.remove_extra_whitespaces = true;
    s.ws_as_suffix = true;
    s.escape_whitespaces = false;
    ck_assert_msg(ugm_build(&u, &s, err, sizeof err) == 0, "%s", err);
    expect_norm(u, " A  B ", "a B ");
    ugm_free(u);
}
END_TEST

static void refused(const uint8_t *cm, size_t len, const char *what)
{
    tok_t *t = NULL;
    char err[256] = "";
    int rc = build(&t, cm, len, err, sizeof err);
    ck_assert_msg(rc == FD_EFORMAT, "%s: rc %d (%s)", what, rc, err);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, "precompiled_charsmap") && strstr(err, what), "'%s' lacks '%s'",
                  err, what);
}

START_TEST(test_malformed)
{
    static uint8_t cm[4 + NU * 4 + 6];
    const size_t len = make_charsmap(cm);
    tok_t *t;
    char err[256];
    ck_assert_msg(build(&t, cm, len, err, sizeof err) == 0, "%s", err);
    TU_EXPECT_IDS(t, "ABc", false, SPX, SP, Y, C); /* "▁x▁yc": ▁x ▁ y c (-12) beats ▁ x ▁ y c */
    tok_free(t);
    refused(cm, 3, "shorter");
    refused(cm, len - 7, "truncated"); /* the strings and a trie unit gone */
    refused(cm, 4 + 100, "truncated");
    uint8_t *bad = malloc(len);
    ck_assert_ptr_nonnull(bad);
    memcpy(bad, cm, len);
    bad[0] = 0x02; /* 1026 bytes: not whole units */
    refused(bad, len, "whole number");
    memcpy(bad, cm, len);
    bad[len - 1] = 'z';
    refused(bad, len, "NUL");
    memcpy(bad, cm, len);
    uint32_t v = 1u << 31 | 6; /* the value unit of "A" past the 6 bytes of strings */
    memcpy(bad + 4 + 512 * 4, &v, 4);
    refused(bad, len, "past the 6 bytes");
    memcpy(bad, cm, len);
    v = 2000u << 10 | 1u << 8 | 0x41; /* 'A' pointing past the 1024 units */
    memcpy(bad + 4 + 321 * 4, &v, 4);
    refused(bad, len, "past the trie");
    free(bad);
    /* an empty trie with no strings: no rules */
    const uint8_t empty[4] = {0};
    refused(empty, 4, "whole number");
    /* no unknown piece at all */
    const char *texts[] = {"a", "b"};
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_UGM;
    s.n_tokens = 2;
    s.texts = texts;
    t = NULL;
    ck_assert_int_eq(tok_build(&t, &s, err, sizeof err), FD_EFORMAT);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, "unknown token") != NULL, "%s", err);
}
END_TEST

/* "t5" from GGUF, as convert_hf_to_gguf writes XLM-RoBERTa's vocabulary. */
static int load_gguf(tok_t **t, int variant, char *err, size_t errlen)
{
    static uint8_t cm[4 + NU * 4 + 6];
    const size_t len = make_charsmap(cm);
    int32_t types[NV];
    for (int i = 0; i < NV; i++)
        types[i] = types_of(i);
    gguf_w_t *w;
    ck_assert_int_eq(gguf_w_new(&w), 0);
    gguf_w_add_str(w, "tokenizer.ggml.model", "t5");
    gguf_w_add_str(w, "tokenizer.ggml.pre", "default");
    gguf_w_add_str_arr(w, "tokenizer.ggml.tokens", vocab, NV);
    gguf_w_add_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, NV);
    gguf_w_add_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, NV);
    gguf_w_add_bool(w, "tokenizer.ggml.add_space_prefix", true);
    gguf_w_add_bool(w, "tokenizer.ggml.remove_extra_whitespaces", true);
    if (variant == 1)
        gguf_w_add_str_arr(w, "tokenizer.ggml.precompiled_charsmap", vocab, 2);
    else if (variant == 2)
        gguf_w_add_arr(w, "tokenizer.ggml.precompiled_charsmap", GGUF_UINT8, cm, len - 7);
    else
        gguf_w_add_arr(w, "tokenizer.ggml.precompiled_charsmap", GGUF_UINT8, cm, len);
    gguf_w_add_u32(w, "tokenizer.ggml.bos_token_id", BOS);
    gguf_w_add_u32(w, "tokenizer.ggml.eos_token_id", EOS);
    gguf_w_add_u32(w, "tokenizer.ggml.unknown_token_id", UNK);
    gguf_w_add_u32(w, "tokenizer.ggml.padding_token_id", PAD);
    gguf_w_add_u32(w, "tokenizer.ggml.seperator_token_id", EOS);
    gguf_w_add_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_w_add_bool(w, "tokenizer.ggml.add_eos_token", true);
    gguf_w_add_bool(w, "tokenizer.ggml.add_sep_token", true);
    uint8_t *mem;
    size_t size;
    ck_assert_int_eq(gguf_w_write_mem(w, &mem, &size, err, errlen), 0);
    gguf_w_free(w);
    gguf_t *g;
    ck_assert_int_eq(gguf_open_mem(&g, mem, size, "xlmr.gguf", err, errlen), 0);
    int rc = tok_load(t, g, err, errlen);
    gguf_close(g); /* the tokenizer copies what it keeps */
    free(mem);
    return rc;
}

START_TEST(test_gguf)
{
    tok_t *t = NULL;
    char err[256];
    ck_assert_msg(load_gguf(&t, 0, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(tok_kind(t), TOK_UGM);
    ck_assert_int_eq(tok_bos(t), BOS);
    ck_assert_int_eq(tok_eos(t), EOS);
    ck_assert_int_eq(tok_unk(t), UNK);
    ck_assert_int_eq(tok_pad(t), PAD);
    ck_assert_int_eq(tok_sep(t), EOS);
    ck_assert(tok_add_bos(t) && tok_add_eos(t) && tok_add_sep(t));
    TU_EXPECT_IDS(t, "AB abc", true, BOS, SPX, SP, Y, SPAB, C, EOS);
    tok_free(t);
    t = NULL;
    ck_assert_int_eq(load_gguf(&t, 1, err, sizeof err), FD_EFORMAT);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, "not of bytes") != NULL, "%s", err);
    ck_assert_int_eq(load_gguf(&t, 2, err, sizeof err), FD_EFORMAT);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, "truncated") != NULL, "%s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ugm");
    TCase *tc = tcase_create("ugm");
    tcase_add_test(tc, test_viterbi);
    tcase_add_test(tc, test_byte_fallback);
    tcase_add_test(tc, test_charsmap);
    tcase_add_test(tc, test_malformed);
    tcase_add_test(tc, test_gguf);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
