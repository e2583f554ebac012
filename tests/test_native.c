/* test_native.c: proves llama-server's shapes (server/native.h) hold the values given: the
 * error body and its type mapping, completion_probabilities (ids beside each token and
 * alternative, bytes, the OpenAI logprobs' numbers), the params object (the random seed's
 * 4294967295, stop strings, logit_bias pairs with false for a ban, the samplers in fusiond's
 * order), /slots (busy and idle entries, n_remain) and /props (the tokens left out when
 * unknown), over a byte-level vocabulary where every byte is its own token. */
#include <config.h>

#include "server/native.h"

#include <check.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/sampler.h"
#include "tests/testutil.h"

enum { NTOK = 257 };
static char texts[NTOK][8];
static const char *ptrs[NTOK];
static int32_t types[NTOK];

/* GPT-2's byte-to-unicode texts, then <s> */
static tok_t *vocab(void)
{
    tu_gpt2_byte_tokens(texts, ptrs, types);
    snprintf(texts[256], sizeof texts[256], "<s>");
    ptrs[256] = texts[256];
    types[256] = TOK_T_CONTROL;
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_BPE;
    s.pre = "gpt2";
    s.n_tokens = NTOK;
    s.texts = ptrs;
    s.types = types;
    s.bos = 256;
    tok_t *t;
    char err[160];
    ck_assert_msg(tok_build(&t, &s, err, sizeof err) == 0, "%s", err);
    return t;
}

static cJSON *parse(char *js)
{
    ck_assert_ptr_nonnull(js);
    cJSON *o = cJSON_Parse(js);
    free(js);
    ck_assert_ptr_nonnull(o);
    return o;
}

static double num(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(cJSON_IsNumber(v), "%s is not a number", k);
    return v->valuedouble;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(cJSON_IsString(v), "%s is not a string", k);
    return v->valuestring;
}

START_TEST(test_error)
{
    cJSON *o = parse(nat_error(400, "invalid_request_error", "bad \xff"));
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
    ck_assert_int_eq(cJSON_GetArraySize(e), 3);
    ck_assert_int_eq((int)num(e, "code"), 400);
    ck_assert_str_eq(str(e, "type"), "invalid_request_error");
    ck_assert_str_eq(str(e, "message"), "bad \xef\xbf\xbd"); /* cleaned to UTF-8 */
    cJSON_Delete(o);
    o = parse(nat_error(503, "service_unavailable_error", "busy"));
    ck_assert_str_eq(str(cJSON_GetObjectItemCaseSensitive(o, "error"), "type"),
                     "unavailable_error");
    cJSON_Delete(o);
    o = parse(nat_error(500, NULL, ""));
    ck_assert_str_eq(str(cJSON_GetObjectItemCaseSensitive(o, "error"), "type"), "server_error");
    cJSON_Delete(o);
    /* a prompt beyond the context: llama-server's type, words and numbers */
    o = parse(nat_error_ctx(13392, 8192));
    e = cJSON_GetObjectItemCaseSensitive(o, "error");
    ck_assert_int_eq(cJSON_GetArraySize(e), 5);
    ck_assert_int_eq((int)num(e, "code"), 400);
    ck_assert_str_eq(str(e, "type"), "exceed_context_size_error");
    ck_assert_str_eq(str(e, "message"), "request (13392 tokens) exceeds the available context "
                                        "size (8192 tokens), try increasing it");
    ck_assert_int_eq((int)num(e, "n_prompt_tokens"), 13392);
    ck_assert_int_eq((int)num(e, "n_ctx"), 8192);
    cJSON_Delete(o);
}
END_TEST

START_TEST(test_probs)
{
    tok_t *t = vocab();
    oai_lp_t lp[2];
    memset(lp, 0, sizeof lp);
    lp[0] = (oai_lp_t){.token = 'h', .logprob = -0.25f, .n_top = 2};
    lp[0].top[0] = (eng_top_t){'h', -0.25f};
    lp[0].top[1] = (eng_top_t){'j', -1.5f};
    lp[1] = (oai_lp_t){.token = 0xC3, .logprob = -3.0f, .n_top = 0};
    cJSON *a = nat_probs(t, lp, 2, false);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(cJSON_GetArraySize(a), 2);
    const cJSON *e0 = cJSON_GetArrayItem(a, 0), *e1 = cJSON_GetArrayItem(a, 1);
    ck_assert_int_eq((int)num(e0, "id"), 'h');
    ck_assert_str_eq(str(e0, "token"), "h");
    ck_assert(fabs(num(e0, "logprob") + 0.25) < 1e-6);
    const cJSON *tops = cJSON_GetObjectItemCaseSensitive(e0, "top_logprobs");
    ck_assert_int_eq(cJSON_GetArraySize(tops), 2);
    ck_assert_int_eq((int)num(cJSON_GetArrayItem(tops, 1), "id"), 'j');
    ck_assert(fabs(num(cJSON_GetArrayItem(tops, 1), "logprob") + 1.5) < 1e-6);
    ck_assert_str_eq(str(cJSON_GetArrayItem(tops, 1), "token"), "j");
    /* a lone byte of a UTF-8 sequence: its bytes tell it */
    ck_assert_int_eq((int)num(e1, "id"), 0xC3);
    const cJSON *by = cJSON_GetObjectItemCaseSensitive(e1, "bytes");
    ck_assert_int_eq(cJSON_GetArraySize(by), 1);
    ck_assert_int_eq(cJSON_GetArrayItem(by, 0)->valueint, 0xC3);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(e1, "top_logprobs")), 0);
    cJSON_Delete(a);
    a = nat_probs(t, lp, 0, false);
    ck_assert(cJSON_IsArray(a) && cJSON_GetArraySize(a) == 0);
    cJSON_Delete(a);
    /* post_sampling_probs: prob and top_probs, the probabilities themselves */
    a = nat_probs(t, lp, 2, true);
    ck_assert_ptr_nonnull(a);
    e0 = cJSON_GetArrayItem(a, 0);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(e0, "logprob"));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(e0, "top_logprobs"));
    ck_assert(fabs(num(e0, "prob") - exp(-0.25)) < 1e-6);
    tops = cJSON_GetObjectItemCaseSensitive(e0, "top_probs");
    ck_assert_int_eq(cJSON_GetArraySize(tops), 2);
    ck_assert_int_eq((int)num(cJSON_GetArrayItem(tops, 1), "id"), 'j');
    ck_assert(fabs(num(cJSON_GetArrayItem(tops, 1), "prob") - exp(-1.5)) < 1e-6);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tops, 1), "logprob"));
    cJSON_Delete(a);
    tok_free(t);
}
END_TEST

START_TEST(test_params)
{
    eng_logit_bias_t bias[2] = {{5, 1.5f}, {7, -INFINITY}};
    eng_sampling_t s = {.temperature = 0.5f, .top_k = 3, .top_p = 0.9f, .min_p = 0.1f,
                        .repeat_penalty = 1.1f, .repeat_last_n = -1, .logit_bias = bias,
                        .n_logit_bias = 2};
    const char *stop[] = {"\n", "END"};
    nat_params_t p = {.n_predict = -1, .s = &s, .stop = stop, .n_stop = 2, .stream = true,
                      .n_probs = 4};
    cJSON *o = nat_params_json(&p);
    ck_assert_ptr_nonnull(o);
    ck_assert(num(o, "seed") == 4294967295.0); /* random */
    ck_assert_int_eq((int)num(o, "n_predict"), -1);
    ck_assert_int_eq((int)num(o, "top_k"), 3);
    ck_assert(fabs(num(o, "temperature") - 0.5) < 1e-6);
    ck_assert_int_eq((int)num(o, "repeat_last_n"), -1);
    ck_assert_int_eq((int)num(o, "n_probs"), 4);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "stream")));
    ck_assert_str_eq(str(o, "grammar"), "");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "stop");
    ck_assert_int_eq(cJSON_GetArraySize(st), 2);
    ck_assert_str_eq(cJSON_GetArrayItem(st, 1)->valuestring, "END");
    const cJSON *lb = cJSON_GetObjectItemCaseSensitive(o, "logit_bias");
    ck_assert_int_eq(cJSON_GetArraySize(lb), 2);
    ck_assert_int_eq(cJSON_GetArrayItem(cJSON_GetArrayItem(lb, 0), 0)->valueint, 5);
    ck_assert(fabs(cJSON_GetArrayItem(cJSON_GetArrayItem(lb, 0), 1)->valuedouble - 1.5) < 1e-6);
    ck_assert(cJSON_IsFalse(cJSON_GetArrayItem(cJSON_GetArrayItem(lb, 1), 1)));
    char *smp = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, "samplers"));
    ck_assert_str_eq(smp, "[\"penalties\",\"dry\",\"temperature\",\"top_n_sigma\",\"top_k\","
                          "\"typ_p\",\"top_p\",\"min_p\",\"xtc\"]");
    free(smp);
    /* the samplers that are off show llama-server's "off" values */
    ck_assert(num(o, "top_n_sigma") == -1);
    ck_assert(num(o, "typical_p") == 1);
    ck_assert(num(o, "mirostat") == 0);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(o, "post_sampling_probs")));
    smp = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, "dry_sequence_breakers"));
    ck_assert_str_eq(smp, "[\"\\n\",\":\",\"\\\"\",\"*\"]");
    free(smp);
    cJSON_Delete(o);
    /* the request's own: its chain, its values */
    const char *brk[] = {"."};
    s.typical_p = 0.9f;
    s.dry_multiplier = 0.8f;
    s.dry_base = 1.75f;
    s.dry_allowed_length = 2;
    s.dry_penalty_last_n = -1;
    s.dry_breakers = brk;
    s.n_dry_breakers = 1;
    s.top_n_sigma = 2;
    s.mirostat = 2;
    s.mirostat_tau = 5;
    s.post_probs = true;
    s.order[0] = SMP_TOP_K;
    s.order[1] = SMP_TEMPERATURE;
    s.n_order = 2;
    o = nat_params_json(&p);
    ck_assert(fabs(num(o, "typical_p") - 0.9) < 1e-6);
    ck_assert(fabs(num(o, "dry_multiplier") - 0.8) < 1e-6);
    ck_assert(num(o, "top_n_sigma") == 2);
    ck_assert(num(o, "mirostat") == 2);
    ck_assert(num(o, "mirostat_tau") == 5);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "post_sampling_probs")));
    smp = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, "samplers"));
    ck_assert_str_eq(smp, "[\"top_k\",\"temperature\"]");
    free(smp);
    smp = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(o, "dry_sequence_breakers"));
    ck_assert_str_eq(smp, "[\".\"]");
    free(smp);
    cJSON_Delete(o);
    memset(&s, 0, sizeof s);
    s = (eng_sampling_t){.temperature = 0.5f, .top_k = 3, .top_p = 0.9f, .min_p = 0.1f,
                         .repeat_penalty = 1.1f, .repeat_last_n = -1, .logit_bias = bias,
                         .n_logit_bias = 2};
    s.has_seed = true;
    s.seed = 42;
    p.json_schema = true;
    o = nat_params_json(&p);
    ck_assert(num(o, "seed") == 42);
    ck_assert_str_ne(str(o, "grammar"), "");
    cJSON_Delete(o);
}
END_TEST

START_TEST(test_slots_props)
{
    eng_sampling_t s = {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                        .repeat_penalty = 1, .repeat_last_n = 64};
    nat_params_t dp = {.n_predict = -1, .s = &s}, rp = {.n_predict = 100, .s = &s};
    nat_slot_t sl[2] = {{.id = 0, .params = &dp, .id_task = 9, .n_remain = -1},
                        {.id = 1, .busy = true, .id_task = 12, .params = &rp, .n_decoded = 30,
                         .n_remain = 70, .has_new_line = true}};
    nat_server_t sv = {.n_ctx = 512, .speculative = true};
    cJSON *a = parse(nat_slots(&sv, sl, 2));
    ck_assert_int_eq(cJSON_GetArraySize(a), 2);
    const cJSON *idle = cJSON_GetArrayItem(a, 0), *busy = cJSON_GetArrayItem(a, 1);
    ck_assert_int_eq((int)num(idle, "id_task"), -1); /* an idle slot has no task */
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(idle, "is_processing")));
    ck_assert_int_eq((int)num(busy, "id"), 1);
    ck_assert_int_eq((int)num(busy, "id_task"), 12);
    ck_assert_int_eq((int)num(busy, "n_ctx"), 512);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(busy, "speculative")));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(busy, "is_processing")));
    ck_assert_int_eq((int)num(cJSON_GetObjectItemCaseSensitive(busy, "params"), "n_predict"),
                     100);
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(busy, "next_token");
    ck_assert_int_eq((int)num(nt, "n_decoded"), 30);
    ck_assert_int_eq((int)num(nt, "n_remain"), 70);
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(nt, "has_new_line")));
    ck_assert(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(nt, "has_next_token")));
    cJSON_Delete(a);
    a = parse(nat_slots(&sv, sl, 0));
    ck_assert(cJSON_IsArray(a) && cJSON_GetArraySize(a) == 0);
    cJSON_Delete(a);

    nat_props_t p = {.sv = &sv, .defaults = &dp, .total_slots = 4, .model_path = "/m.gguf",
                     .model_alias = "m", .bos_token = "<s>", .build_info = "fusiond 1"};
    cJSON *o = parse(nat_props(&p));
    ck_assert_int_eq((int)num(o, "total_slots"), 4);
    ck_assert_str_eq(str(o, "model_path"), "/m.gguf");
    ck_assert_str_eq(str(o, "chat_template"), "");
    ck_assert_str_eq(str(o, "bos_token"), "<s>");
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(o, "eos_token")); /* unknown: out */
    const cJSON *dgs = cJSON_GetObjectItemCaseSensitive(o, "default_generation_settings");
    ck_assert_int_eq((int)num(dgs, "n_ctx"), 512);
    ck_assert_str_eq(str(dgs, "prompt"), "");
    ck_assert(fabs(num(cJSON_GetObjectItemCaseSensitive(dgs, "params"), "top_p") - 0.95) < 1e-6);
    ck_assert(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(o, "modalities"), "vision")));
    cJSON_Delete(o);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("native");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_error);
    tcase_add_test(tc, test_probs);
    tcase_add_test(tc, test_params);
    tcase_add_test(tc, test_slots_props);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
