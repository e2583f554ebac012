/* test_openai.c: proves the response builders: OpenAI field names and types for whole answers
 * and stream chunks, tool calls in both (message.tool_calls with a null content, the deltas'
 * indexed pieces), reasoning_content in both, logprobs in both APIs (echo offsets, duplicate
 * spellings), the error body, embeddings (floats, and base64 against hand-encoded
 * little-endian bytes), and that any bytes become valid UTF-8 JSON (U+FFFD for invalid bytes
 * and NULs). */
#include <cjson/cJSON.h>

#include "server/openai.h"
#include "tests/testutil.h"

static cJSON *parse(char *s)
{
    ck_assert_ptr_nonnull(s);
    cJSON *j = cJSON_Parse(s);
    ck_assert_msg(j != NULL, "not JSON: %s", s);
    free(s);
    return j;
}

static const cJSON *at(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(v != NULL, "missing %s", k);
    return v;
}

START_TEST(test_utf8_clean)
{
    char *s = oai_utf8_clean("a\xc3\xa9" "b", 4);
    ck_assert_str_eq(s, "a\xc3\xa9" "b");
    free(s);
    s = oai_utf8_clean("x\xffy", 3);
    ck_assert_str_eq(s, "x\xef\xbf\xbdy");
    free(s);
    s = oai_utf8_clean("\xe2\x82", 2); /* a cut character */
    ck_assert_str_eq(s, "\xef\xbf\xbd\xef\xbf\xbd");
    free(s);
    s = oai_utf8_clean("a\0b", 3);
    ck_assert_str_eq(s, "a\xef\xbf\xbd" "b");
    free(s);
    s = oai_utf8_clean("\xed\xa0\x80", 3); /* a surrogate */
    ck_assert(rq_utf8_valid(s, strlen(s)));
    free(s);
}
END_TEST

START_TEST(test_completion_whole)
{
    oai_lp_t lp[2] = {{.token = 7, .logprob = -0.5f, .n_top = 2, .text_offset = 5},
                      {.token = 8, .logprob = -1.0f, .n_top = 0, .text_offset = 6}};
    lp[0].top[0] = (eng_top_t){7, -0.5f};
    lp[0].top[1] = (eng_top_t){9, -1.5f};
    int32_t echo[2] = {3, 4};
    oai_choice_t ch = {.index = 0, .text = "hi\xff", .text_len = 3, .finish_reason = "stop",
                       .logprobs = true, .lp = lp, .n_lp = 2, .echo_ids = echo, .n_echo = 2};
    oai_timings_t t = {.queue_ms = 1, .prompt_ms = 2, .ttft_ms = 3, .predicted_ms = 10,
                       .total_ms = 14, .prompt_n = 4, .predicted_n = 5};
    oai_resp_t r = {.kind = RQ_COMPLETION, .id = "cmpl-x", .model = "m", .created = 42,
                    .choices = &ch, .n_choices = 1, .usage = true, .prompt_tokens = 4,
                    .completion_tokens = 5, .timings = &t};
    cJSON *j = parse(oai_response(&r));
    ck_assert_str_eq(at(j, "object")->valuestring, "text_completion");
    ck_assert_str_eq(at(j, "id")->valuestring, "cmpl-x");
    ck_assert_int_eq(at(j, "created")->valueint, 42);
    const cJSON *c = cJSON_GetArrayItem(at(j, "choices"), 0);
    ck_assert_str_eq(at(c, "text")->valuestring, "hi\xef\xbf\xbd");
    ck_assert_str_eq(at(c, "finish_reason")->valuestring, "stop");
    const cJSON *l = at(c, "logprobs");
    ck_assert_int_eq(cJSON_GetArraySize(at(l, "tokens")), 4); /* 2 echoed + 2 generated */
    ck_assert_str_eq(cJSON_GetArrayItem(at(l, "tokens"), 0)->valuestring, "<3>");
    ck_assert(cJSON_IsNull(cJSON_GetArrayItem(at(l, "token_logprobs"), 1)));
    ck_assert(cJSON_IsNull(cJSON_GetArrayItem(at(l, "top_logprobs"), 0)));
    ck_assert_double_eq(cJSON_GetArrayItem(at(l, "token_logprobs"), 2)->valuedouble, -0.5);
    ck_assert_int_eq(cJSON_GetArrayItem(at(l, "text_offset"), 1)->valueint, 3);
    ck_assert_int_eq(cJSON_GetArrayItem(at(l, "text_offset"), 3)->valueint, 6);
    const cJSON *top = cJSON_GetArrayItem(at(l, "top_logprobs"), 2);
    ck_assert_int_eq(cJSON_GetArraySize(top), 2);
    ck_assert_double_eq(at(top, "<9>")->valuedouble, -1.5);
    const cJSON *u = at(j, "usage");
    ck_assert_int_eq(at(u, "total_tokens")->valueint, 9);
    ck_assert_ptr_null(cJSON_GetObjectItem(u, "prompt_tokens_details")); /* cache off */
    const cJSON *tm = at(j, "timings");
    ck_assert_double_eq(at(tm, "predicted_per_second")->valuedouble, 500);
    ck_assert_double_eq(at(tm, "prompt_per_token_ms")->valuedouble, 0.5);
    ck_assert_ptr_null(cJSON_GetObjectItem(tm, "timed_out"));
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_chat_chunks)
{
    oai_choice_t ch = {.index = 1, .text = "", .text_len = 0, .role = true};
    oai_resp_t r = {.kind = RQ_CHAT, .chunk = true, .id = "chatcmpl-y", .model = "m",
                    .choices = &ch, .n_choices = 1};
    cJSON *j = parse(oai_response(&r));
    ck_assert_str_eq(at(j, "object")->valuestring, "chat.completion.chunk");
    const cJSON *c = cJSON_GetArrayItem(at(j, "choices"), 0);
    const cJSON *d = at(c, "delta");
    ck_assert_str_eq(at(d, "role")->valuestring, "assistant");
    ck_assert_str_eq(at(d, "content")->valuestring, "");
    ck_assert(cJSON_GetObjectItem(d, "refusal") == NULL); /* a delta's refusal is optional */
    ck_assert(cJSON_IsNull(at(c, "finish_reason")));
    ck_assert(cJSON_GetObjectItem(j, "usage") == NULL);
    cJSON_Delete(j);
    /* With include_usage, the chunks before the usage one carry "usage": null. */
    r.usage_null = true;
    j = parse(oai_response(&r));
    ck_assert(cJSON_IsNull(at(j, "usage")));
    cJSON_Delete(j);
    r.usage_null = false;

    ch.role = false;
    ch.finish_reason = "length";
    j = parse(oai_response(&r));
    d = at(cJSON_GetArrayItem(at(j, "choices"), 0), "delta");
    ck_assert_int_eq(cJSON_GetArraySize(d), 0); /* the closing delta is empty */
    cJSON_Delete(j);

    /* The include_usage chunk: no choices. */
    r.n_choices = 0;
    r.usage = true;
    r.usage_null = true; /* the usage chunk's own usage wins */
    r.prompt_tokens = 3;
    j = parse(oai_response(&r));
    ck_assert_int_eq(cJSON_GetArraySize(at(j, "choices")), 0);
    ck_assert_int_eq(at(at(j, "usage"), "prompt_tokens")->valueint, 3);
    cJSON_Delete(j);
    /* With the prefix cache on: OpenAI's prompt_tokens_details.cached_tokens, 0 included. */
    r.cached_details = true;
    r.cached_tokens = 2;
    j = parse(oai_response(&r));
    ck_assert_int_eq(at(at(at(j, "usage"), "prompt_tokens_details"), "cached_tokens")->valueint,
                     2);
    cJSON_Delete(j);
    r.cached_tokens = 0;
    j = parse(oai_response(&r));
    ck_assert_int_eq(at(at(at(j, "usage"), "prompt_tokens_details"), "cached_tokens")->valueint,
                     0);
    cJSON_Delete(j);
    r.cached_details = false;

    /* Chat logprobs carry bytes and their alternatives. */
    oai_lp_t lp = {.token = 65, .logprob = -0.25f, .n_top = 1};
    lp.top[0] = (eng_top_t){65, -0.25f};
    oai_choice_t c2 = {.text = "A", .text_len = 1, .logprobs = true, .lp = &lp, .n_lp = 1,
                       .finish_reason = "stop"};
    oai_resp_t r2 = {.kind = RQ_CHAT, .id = "chatcmpl-z", .model = "m", .choices = &c2,
                     .n_choices = 1};
    j = parse(oai_response(&r2));
    const cJSON *m = at(cJSON_GetArrayItem(at(j, "choices"), 0), "message");
    ck_assert_str_eq(at(m, "role")->valuestring, "assistant");
    ck_assert_str_eq(at(m, "content")->valuestring, "A");
    ck_assert(cJSON_IsNull(at(m, "refusal"))); /* required by the SDKs' types */
    ck_assert(cJSON_IsNull(at(at(cJSON_GetArrayItem(at(j, "choices"), 0), "logprobs"),
                              "refusal")));
    const cJSON *e = cJSON_GetArrayItem(at(at(cJSON_GetArrayItem(at(j, "choices"), 0),
                                              "logprobs"), "content"), 0);
    ck_assert_str_eq(at(e, "token")->valuestring, "<65>");
    ck_assert_int_eq(cJSON_GetArraySize(at(e, "bytes")), 4); /* "<65>" */
    ck_assert_int_eq(cJSON_GetArraySize(at(e, "top_logprobs")), 1);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_tool_calls)
{
    const oai_tool_call_t calls[] = {
        {0, "call_a", "get_weather", "{\"city\":\"Z\xc3\xbcrich \\\"x\\\"\"}"},
        {1, "call_b", "clock", "{}"},
    };
    oai_choice_t ch = {.index = 0, .text = "", .text_len = 0, .finish_reason = "tool_calls",
                       .content_null = true, .calls = calls, .n_calls = 2};
    oai_resp_t r = {.kind = RQ_CHAT, .id = "chatcmpl-t", .model = "m", .choices = &ch,
                    .n_choices = 1};
    cJSON *j = parse(oai_response(&r));
    const cJSON *c = cJSON_GetArrayItem(at(j, "choices"), 0);
    const cJSON *m = at(c, "message");
    ck_assert(cJSON_IsNull(at(m, "content")));
    ck_assert_str_eq(at(c, "finish_reason")->valuestring, "tool_calls");
    const cJSON *tc = at(m, "tool_calls");
    ck_assert_int_eq(cJSON_GetArraySize(tc), 2);
    const cJSON *t0 = cJSON_GetArrayItem(tc, 0);
    ck_assert(cJSON_GetObjectItem(t0, "index") == NULL); /* a message's calls have none */
    ck_assert_str_eq(at(t0, "id")->valuestring, "call_a");
    ck_assert_str_eq(at(t0, "type")->valuestring, "function");
    ck_assert_str_eq(at(at(t0, "function"), "name")->valuestring, "get_weather");
    /* arguments are a string holding JSON, as OpenAI sends them */
    const cJSON *args = at(at(t0, "function"), "arguments");
    ck_assert(cJSON_IsString(args));
    ck_assert_str_eq(args->valuestring, "{\"city\":\"Z\xc3\xbcrich \\\"x\\\"\"}");
    ck_assert_str_eq(at(cJSON_GetArrayItem(tc, 1), "id")->valuestring, "call_b");
    cJSON_Delete(j);

    /* text before the calls (Qwen) is the content */
    ch.content_null = false;
    ch.text = "Checking.";
    ch.text_len = 9;
    j = parse(oai_response(&r));
    m = at(cJSON_GetArrayItem(at(j, "choices"), 0), "message");
    ck_assert_str_eq(at(m, "content")->valuestring, "Checking.");
    cJSON_Delete(j);

    /* chunks: the head (index, id, type, name, empty arguments), then arguments alone */
    r.chunk = true;
    oai_tool_call_t head = {1, "call_b", "clock", ""}, more = {1, NULL, NULL, "{}"};
    oai_choice_t d = {.index = 0, .text = "", .calls = &head, .n_calls = 1};
    r.choices = &d;
    j = parse(oai_response(&r));
    const cJSON *dl = at(cJSON_GetArrayItem(at(j, "choices"), 0), "delta");
    ck_assert(cJSON_GetObjectItem(dl, "content") == NULL);
    t0 = cJSON_GetArrayItem(at(dl, "tool_calls"), 0);
    ck_assert_int_eq(at(t0, "index")->valueint, 1);
    ck_assert_str_eq(at(t0, "id")->valuestring, "call_b");
    ck_assert_str_eq(at(t0, "type")->valuestring, "function");
    ck_assert_str_eq(at(at(t0, "function"), "name")->valuestring, "clock");
    ck_assert_str_eq(at(at(t0, "function"), "arguments")->valuestring, "");
    cJSON_Delete(j);
    d.calls = &more;
    j = parse(oai_response(&r));
    t0 = cJSON_GetArrayItem(at(at(cJSON_GetArrayItem(at(j, "choices"), 0), "delta"),
                               "tool_calls"), 0);
    ck_assert_int_eq(at(t0, "index")->valueint, 1);
    ck_assert(cJSON_GetObjectItem(t0, "id") == NULL);
    ck_assert(cJSON_GetObjectItem(t0, "type") == NULL);
    ck_assert(cJSON_GetObjectItem(at(t0, "function"), "name") == NULL);
    ck_assert_str_eq(at(at(t0, "function"), "arguments")->valuestring, "{}");
    cJSON_Delete(j);
}
END_TEST

/* Reasoning: message.reasoning_content after content (invalid bytes cleaned), a chunk's
 * delta.reasoning_content alone, usage.completion_tokens_details; left out when not set. */
START_TEST(test_reasoning)
{
    oai_choice_t ch = {.index = 0, .text = "A.", .text_len = 2, .finish_reason = "stop",
                       .reasoning = "why\xff", .reasoning_len = 4};
    oai_resp_t r = {.kind = RQ_CHAT, .id = "chatcmpl-r", .model = "m", .choices = &ch,
                    .n_choices = 1, .usage = true, .prompt_tokens = 3, .completion_tokens = 5,
                    .reasoning_details = true, .reasoning_tokens = 4};
    cJSON *j = parse(oai_response(&r));
    const cJSON *m = at(cJSON_GetArrayItem(at(j, "choices"), 0), "message");
    ck_assert_str_eq(at(m, "content")->valuestring, "A.");
    ck_assert_str_eq(at(m, "reasoning_content")->valuestring, "why\xef\xbf\xbd");
    ck_assert_ptr_eq(m->child->next->next, at(m, "reasoning_content")); /* role, content, */
    ck_assert_int_eq(at(at(at(j, "usage"), "completion_tokens_details"),
                        "reasoning_tokens")->valueint, 4);
    cJSON_Delete(j);
    ch.reasoning = NULL;
    r.reasoning_details = false;
    j = parse(oai_response(&r));
    m = at(cJSON_GetArrayItem(at(j, "choices"), 0), "message");
    ck_assert(cJSON_GetObjectItem(m, "reasoning_content") == NULL);
    ck_assert(cJSON_GetObjectItem(at(j, "usage"), "completion_tokens_details") == NULL);
    cJSON_Delete(j);
    /* a chunk: the reasoning piece, no content key */
    oai_choice_t d = {.index = 1, .reasoning = "step", .reasoning_len = 4};
    oai_resp_t c = {.kind = RQ_CHAT, .chunk = true, .id = "chatcmpl-r", .model = "m",
                    .choices = &d, .n_choices = 1};
    j = parse(oai_response(&c));
    const cJSON *dl = at(cJSON_GetArrayItem(at(j, "choices"), 0), "delta");
    ck_assert_str_eq(at(dl, "reasoning_content")->valuestring, "step");
    ck_assert(cJSON_GetObjectItem(dl, "content") == NULL);
    ck_assert(cJSON_GetObjectItem(dl, "role") == NULL);
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_error_body)
{
    rq_err_t e;
    rq_fail(&e, 400, "invalid_request_error", "stop[1]", "bad \"%s\"", "x\n");
    cJSON *j = parse(oai_error_from(&e));
    const cJSON *er = at(j, "error");
    ck_assert_str_eq(at(er, "message")->valuestring, "bad \"x\n\"");
    ck_assert_str_eq(at(er, "type")->valuestring, "invalid_request_error");
    ck_assert_str_eq(at(er, "param")->valuestring, "stop[1]");
    /* No specific code: null, as OpenAI's (not the status as a string). */
    ck_assert(cJSON_IsNull(at(er, "code")));
    ck_assert_ptr_null(cJSON_GetObjectItem(er, "status"));
    cJSON_Delete(j);
    e.code = "unsupported_parameter";
    j = parse(oai_error_from(&e));
    ck_assert_str_eq(at(at(j, "error"), "code")->valuestring, "unsupported_parameter");
    cJSON_Delete(j);
    j = parse(oai_error(500, "server_error", NULL, NULL, "boom"));
    ck_assert(cJSON_IsNull(at(at(j, "error"), "code")));
    ck_assert(cJSON_IsNull(at(at(j, "error"), "param")));
    cJSON_Delete(j);
    j = parse(oai_error(503, "service_unavailable_error", "overloaded", NULL, "busy"));
    er = at(j, "error");
    ck_assert(cJSON_IsNull(at(er, "param")));
    ck_assert_str_eq(at(er, "code")->valuestring, "overloaded");
    cJSON_Delete(j);
}
END_TEST

START_TEST(test_models_and_tokens)
{
    eng_info_t info;
    memset(&info, 0, sizeof info);
    info.backend = "cpu";
    info.fusion = true;
    info.n_ctx = 512;
    cJSON *j = parse(oai_models(&info, "m1", 7, false));
    const cJSON *m = cJSON_GetArrayItem(at(j, "data"), 0);
    ck_assert_str_eq(at(m, "id")->valuestring, "m1");
    ck_assert_int_eq(at(at(m, "fusiond"), "context_length")->valueint, 512);
    ck_assert(cJSON_IsTrue(at(at(m, "fusiond"), "fusion")));
    cJSON_Delete(j);
    int32_t ids[3] = {1, 2, 3};
    j = parse(oai_tokenize(NULL, ids, 3, false, 512));
    ck_assert_int_eq(at(j, "count")->valueint, 3);
    ck_assert_int_eq(cJSON_GetArrayItem(at(j, "tokens"), 2)->valueint, 3);
    cJSON_Delete(j);
    j = parse(oai_detokenize("a\0b", 3));
    ck_assert_str_eq(at(j, "content")->valuestring, "a\xef\xbf\xbd" "b");
    cJSON_Delete(j);
}
END_TEST

/* /v1/embeddings: the shape, floats as numbers, and base64 of little-endian float32 checked
 * against hand-encoded bytes (1.0f = 00 00 80 3f, -2.0f = 00 00 00 c0: "AACAPwAAAMA="; one
 * float leaves padding: "AACAPw=="). */
START_TEST(test_embeddings_body)
{
    const float a[2] = {1.0f, -2.0f}, b[2] = {0.5f, 0.25f};
    const float *v[2] = {a, b};
    cJSON *j = parse(oai_embeddings("m1", v, 2, 2, false, 7));
    ck_assert_str_eq(at(j, "object")->valuestring, "list");
    ck_assert_str_eq(at(j, "model")->valuestring, "m1");
    ck_assert_int_eq(cJSON_GetArraySize(at(j, "data")), 2);
    const cJSON *d1 = cJSON_GetArrayItem(at(j, "data"), 1);
    ck_assert_str_eq(at(d1, "object")->valuestring, "embedding");
    ck_assert_int_eq(at(d1, "index")->valueint, 1);
    ck_assert(cJSON_GetArrayItem(at(d1, "embedding"), 1)->valuedouble == 0.25);
    ck_assert_int_eq(at(at(j, "usage"), "prompt_tokens")->valueint, 7);
    ck_assert_int_eq(at(at(j, "usage"), "total_tokens")->valueint, 7);
    cJSON_Delete(j);
    j = parse(oai_embeddings("m1", v, 1, 2, true, 3));
    ck_assert_str_eq(at(cJSON_GetArrayItem(at(j, "data"), 0), "embedding")->valuestring,
                     "AACAPwAAAMA=");
    cJSON_Delete(j);
    j = parse(oai_embeddings("m1", v, 1, 1, true, 3));
    ck_assert_str_eq(at(cJSON_GetArrayItem(at(j, "data"), 0), "embedding")->valuestring,
                     "AACAPw==");
    cJSON_Delete(j);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("openai");
    TCase *tc = tcase_create("json");
    tcase_add_test(tc, test_utf8_clean);
    tcase_add_test(tc, test_completion_whole);
    tcase_add_test(tc, test_chat_chunks);
    tcase_add_test(tc, test_tool_calls);
    tcase_add_test(tc, test_reasoning);
    tcase_add_test(tc, test_error_body);
    tcase_add_test(tc, test_models_and_tokens);
    tcase_add_test(tc, test_embeddings_body);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
