/* test_infill.c: proves the /infill prompt is llama.cpp's token for token (PSM and SPM, the
 * repo-level pattern with FIM_REP/FIM_SEP and the snippet separator without, BOS placement,
 * the prefix/suffix/extra cuts from n_batch, n_ctx and n_predict), OpenAI's suffix prompt,
 * the missing-token message, and the native answer JSON (final, stream frame,
 * response_fields), over a byte-level vocabulary where every byte is its own token. */
#include <config.h>

#include "server/infill.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "tests/testutil.h"

/* ids 0..255: the bytes (GPT-2's byte-to-unicode texts); then the special tokens */
enum { BOS = 256, PRE, SUF, MID, PAD, REP, SEP, NTOK };

static char texts[NTOK][8];
static const char *ptrs[NTOK];
static int32_t types[NTOK];

static tok_t *vocab(bool fim, bool repo, bool bos)
{
    static const char *const specials[] = {"<s>", "<|fim_prefix|>", "<|fim_suffix|>",
                                           "<|fim_middle|>", "<|fim_pad|>", "<|fim_repo|>",
                                           "<|file_sep|>"};
    tu_gpt2_byte_tokens(texts, ptrs, types);
    for (int i = BOS; i < NTOK; i++) {
        /* a vocabulary without FIM (or without REP/SEP) has other texts there */
        bool keep = i == BOS || (fim && (i <= PAD || repo));
        snprintf(texts[i], sizeof texts[i], "%s", keep ? specials[i - BOS] : "<x>");
        if (!keep)
            texts[i][1] = (char)('a' + i - BOS);
        ptrs[i] = keep && i != BOS ? specials[i - BOS] : texts[i];
        types[i] = TOK_T_CONTROL;
    }
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_BPE;
    s.pre = "gpt2";
    s.n_tokens = NTOK;
    s.texts = ptrs;
    s.types = types;
    s.bos = BOS;
    s.add_bos = bos;
    tok_t *t;
    char err[160];
    ck_assert_msg(tok_build(&t, &s, err, sizeof err) == 0, "%s", err);
    return t;
}

typedef struct want {
    int32_t v[512];
    size_t n;
} want_t;

static void w_id(want_t *w, int32_t id) { w->v[w->n++] = id; }
static void w_str(want_t *w, const char *s)
{
    for (; *s; s++)
        w_id(w, (uint8_t)*s);
}

static void expect(const inf_prompt_t *p, const want_t *w)
{
    char got[2048] = "";
    for (size_t i = 0, o = 0; i < p->n && o < sizeof got - 8; i++)
        o += (size_t)snprintf(got + o, sizeof got - o, " %d", p->ids[i]);
    ck_assert_msg(p->n == w->n && memcmp(p->ids, w->v, w->n * sizeof *w->v) == 0,
                  "got %zu ids:%s (want %zu)", p->n, got, w->n);
}

START_TEST(test_psm_repo_level)
{
    tok_t *t = vocab(true, true, false);
    inf_chunk_t ex[2] = {{"a.c", 3, "int a;", 6}, {NULL, 0, "B", 1}};
    inf_input_t in = {.prefix = "def f(", .prefix_len = 6, .suffix = "):\n", .suffix_len = 3,
                      .prompt = "x", .prompt_len = 1, .extra = ex, .n_extra = 2,
                      .n_ctx = 4096, .n_batch = 2048, .n_predict = -1};
    inf_prompt_t p;
    ck_assert_int_eq(inf_build(t, &in, &p), 0);
    want_t w = {.n = 0};
    w_id(&w, REP);
    w_str(&w, "myproject\n");
    w_id(&w, SEP);
    w_str(&w, "a.c\n");
    w_str(&w, "int a;");
    w_id(&w, SEP);
    w_str(&w, "tmp\n"); /* no filename: llama-server's "tmp" */
    w_str(&w, "B");
    w_id(&w, SEP);
    w_str(&w, "filename\n");
    w_id(&w, PRE);
    w_str(&w, "def f(");
    w_str(&w, "x"); /* the prompt follows the prefix, before FIM_SUF */
    w_id(&w, SUF);
    w_str(&w, "):\n");
    w_id(&w, MID);
    expect(&p, &w);
    ck_assert_uint_eq(p.cut_prefix + p.cut_suffix + p.cut_extra, 0);
    inf_prompt_free(&p);

    /* no input_extra: the repository header and the current file's separator remain */
    in.n_extra = 0;
    in.prompt_len = 0;
    ck_assert_int_eq(inf_build(t, &in, &p), 0);
    w.n = 0;
    w_id(&w, REP);
    w_str(&w, "myproject\n");
    w_id(&w, SEP);
    w_str(&w, "filename\n");
    w_id(&w, PRE);
    w_str(&w, "def f(");
    w_id(&w, SUF);
    w_str(&w, "):\n");
    w_id(&w, MID);
    expect(&p, &w);
    inf_prompt_free(&p);
    inf_prompt_free(&p);
    inf_prompt_free(NULL);
    tok_free(t);
}
END_TEST

START_TEST(test_snippets_bos_spm)
{
    tok_t *t = vocab(true, false, true);
    inf_chunk_t ex[1] = {{"a.c", 3, "E", 1}};
    inf_input_t in = {.prefix = "P", .prefix_len = 1, .suffix = "S", .suffix_len = 1,
                      .extra = ex, .n_extra = 1, .n_ctx = 4096, .n_batch = 2048,
                      .n_predict = -1};
    inf_prompt_t p;
    ck_assert_int_eq(inf_build(t, &in, &p), 0);
    want_t w = {.n = 0};
    w_str(&w, "\n\n--- snippet ---\n\nE"); /* no FIM_SEP: a separator, no file name */
    w_id(&w, BOS);                          /* BOS after the extra context, as llama.cpp */
    w_id(&w, PRE);
    w_str(&w, "P");
    w_id(&w, SUF);
    w_str(&w, "S");
    w_id(&w, MID);
    expect(&p, &w);
    inf_prompt_free(&p);

    in.spm = true;
    in.prompt = "q";
    in.prompt_len = 1;
    ck_assert_int_eq(inf_build(t, &in, &p), 0);
    w.n = 0;
    w_str(&w, "\n\n--- snippet ---\n\nE");
    w_id(&w, BOS);
    w_id(&w, SUF);
    w_str(&w, "S");
    w_id(&w, PRE);
    w_str(&w, "Pq");
    w_id(&w, MID);
    expect(&p, &w);
    inf_prompt_free(&p);
    tok_free(t);
}
END_TEST

/* The cuts: the prefix keeps its last 3*(n_batch/4) tokens, the suffix its first
 * n_batch/4 - 2 - prompt, the extra context its last n_ctx - n_batch - 2*n_predict. */
START_TEST(test_cuts)
{
    tok_t *t = vocab(true, true, false);
    inf_chunk_t ex[1] = {{"f", 1, "0123456789", 10}};
    inf_input_t in = {.prefix = "abcdefghijklmnop", .prefix_len = 16,
                      .suffix = "ABCDEFGHIJ", .suffix_len = 10, .prompt = "z", .prompt_len = 1,
                      .extra = ex, .n_extra = 1, .n_ctx = 60, .n_batch = 32, .n_predict = 10};
    inf_prompt_t p;
    ck_assert_int_eq(inf_build(t, &in, &p), 0);
    /* prefix: 3*8 = 24 >= 16, all; suffix: 8 - 3 = 5; extra: 60 - 32 - 20 = 8 of
     * REP "myproject\n" SEP "f\n" "0123456789" SEP "filename\n" (34) */
    want_t w = {.n = 0};
    /* the run is 34 tokens; its last 8 are the end of the current file's name */
    w_str(&w, "ilename\n");
    w_id(&w, PRE);
    w_str(&w, "abcdefghijklmnop");
    w_str(&w, "z");
    w_id(&w, SUF);
    w_str(&w, "ABCDE");
    w_id(&w, MID);
    expect(&p, &w);
    ck_assert_uint_eq(p.cut_prefix, 0);
    ck_assert_uint_eq(p.cut_suffix, 5);
    ck_assert_uint_eq(p.cut_extra, 34 - 8);
    inf_prompt_free(&p);

    /* a small batch: the prefix keeps its end, the suffix nothing (8/4 - 3 < 0), and no
     * n_predict limit gives the extra context n_ctx - n_batch + 2 */
    in.n_batch = 8;
    in.n_ctx = 12;
    in.n_predict = -1;
    ck_assert_int_eq(inf_build(t, &in, &p), 0);
    w.n = 0;
    w_str(&w, "ename\n"); /* 12 - 8 + 2 = 6 */
    w_id(&w, PRE);
    w_str(&w, "klmnop"); /* 3 * (8/4) = 6 */
    w_str(&w, "z");
    w_id(&w, SUF);
    w_id(&w, MID);
    expect(&p, &w);
    ck_assert_uint_eq(p.cut_prefix, 10);
    ck_assert_uint_eq(p.cut_suffix, 10);
    inf_prompt_free(&p);

    /* n_ctx below n_batch: no extra context at all */
    in.n_ctx = 4;
    ck_assert_int_eq(inf_build(t, &in, &p), 0);
    ck_assert_int_eq(p.ids[0], PRE);
    ck_assert_uint_eq(p.cut_extra, 34);
    inf_prompt_free(&p);
    tok_free(t);
}
END_TEST

START_TEST(test_missing_and_psm)
{
    tok_t *t = vocab(false, false, true);
    char msg[160];
    ck_assert_int_eq(inf_check(t, msg, sizeof msg), -ENOENT);
    ck_assert_str_eq(msg, "Infill is not supported by this model: prefix token is missing. "
                          "suffix token is missing. middle token is missing. ");
    inf_input_t in = {.prefix = "a", .prefix_len = 1, .n_ctx = 10, .n_batch = 8};
    inf_prompt_t p;
    ck_assert_int_eq(inf_build(t, &in, &p), -ENOENT);
    ck_assert_ptr_null(p.ids);
    int32_t *ids = (int32_t *)1;
    size_t n = 9;
    ck_assert_int_eq(inf_psm(t, true, NULL, 0, "s", 1, &ids, &n), -ENOENT);
    ck_assert_ptr_null(ids);
    ck_assert_uint_eq(n, 0);
    tok_free(t);

    t = vocab(true, false, true);
    ck_assert_int_eq(inf_check(t, msg, sizeof msg), 0);
    ck_assert_str_eq(msg, "");
    int32_t pre[2] = {'h', 'i'};
    ck_assert_int_eq(inf_psm(t, true, pre, 2, "yo", 2, &ids, &n), 0);
    int32_t want[] = {BOS, PRE, 'h', 'i', SUF, 'y', 'o', MID};
    ck_assert_uint_eq(n, FD_ARRAY_LEN(want));
    ck_assert(memcmp(ids, want, sizeof want) == 0);
    free(ids);
    ck_assert_int_eq(inf_psm(t, false, pre, 2, "", 0, &ids, &n), 0);
    int32_t want2[] = {PRE, 'h', 'i', SUF, MID};
    ck_assert_uint_eq(n, FD_ARRAY_LEN(want2));
    ck_assert(memcmp(ids, want2, sizeof want2) == 0);
    free(ids);
    tok_free(t);
}
END_TEST

START_TEST(test_answer_json)
{
    oai_timings_t tm = {.prompt_ms = 20, .predicted_ms = 50, .prompt_n = 10, .predicted_n = 5};
    inf_answer_t a = {.content = "x = 1\n", .content_len = 6, .stop = true, .model = "m",
                      .tokens_predicted = 5, .tokens_evaluated = 10, .tokens_cached = 15,
                      .prompt = "<p>", .prompt_len = 3, .stop_type = "word",
                      .stopping_word = "\n\n", .has_new_line = true, .timings = &tm};
    char *js = inf_answer_json(&a);
    cJSON *o = cJSON_Parse(js);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(cJSON_GetObjectItem(o, "content")->valuestring, "x = 1\n");
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(o, "stop")));
    ck_assert_str_eq(cJSON_GetObjectItem(o, "stop_type")->valuestring, "word");
    ck_assert_str_eq(cJSON_GetObjectItem(o, "stopping_word")->valuestring, "\n\n");
    ck_assert_int_eq(cJSON_GetObjectItem(o, "tokens_predicted")->valueint, 5);
    ck_assert_int_eq(cJSON_GetObjectItem(o, "tokens_evaluated")->valueint, 10);
    ck_assert_int_eq(cJSON_GetObjectItem(o, "tokens_cached")->valueint, 15);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(o, "truncated")));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(o, "has_new_line")));
    const cJSON *t = cJSON_GetObjectItem(o, "timings");
    ck_assert_double_eq_tol(cJSON_GetObjectItem(t, "prompt_per_second")->valuedouble, 500, 1e-9);
    ck_assert_double_eq_tol(cJSON_GetObjectItem(t, "predicted_per_token_ms")->valuedouble, 10,
                            1e-9);
    ck_assert_int_eq(cJSON_GetObjectItem(t, "predicted_n")->valueint, 5);
    cJSON_Delete(o);
    free(js);

    /* response_fields: each path under its own name; unknown ones left out */
    static const char *const f[] = {"content", "timings/prompt_n", "timings/nope", "truncated",
                                    "content"};
    a.fields = f;
    a.n_fields = 5;
    js = inf_answer_json(&a);
    ck_assert_str_eq(js, "{\"content\":\"x = 1\\n\",\"timings/prompt_n\":10,\"truncated\":false}");
    free(js);

    /* a stream frame: the short form, invalid UTF-8 cleaned */
    inf_answer_t fr = {.content = "a\xff", .content_len = 2, .tokens_predicted = 1,
                       .tokens_evaluated = 7};
    js = inf_answer_json(&fr);
    ck_assert_str_eq(js, "{\"index\":0,\"content\":\"a\xef\xbf\xbd\",\"tokens\":[],"
                         "\"id_slot\":-1,\"stop\":false,\"tokens_predicted\":1,"
                         "\"tokens_evaluated\":7}");
    free(js);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("infill");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_psm_repo_level);
    tcase_add_test(tc, test_snippets_bos_spm);
    tcase_add_test(tc, test_cuts);
    tcase_add_test(tc, test_missing_and_psm);
    tcase_add_test(tc, test_answer_json);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
