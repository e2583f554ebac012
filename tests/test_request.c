/* test_request.c: proves the request parser: every field of the OpenAI bodies (embeddings
 * too) lands where it belongs, and every bad body (a table) fails with the right HTTP status
 * and `param`. */
#include <math.h>

#include "engine/sampler.h"
#include "server/request.h"
#include "server/reasoning.h"
#include "tests/testutil.h"

static rq_limits_t lim;

static void setup(void)
{
    rq_limits_default(&lim);
}

static int parse(int kind, const char *body, rq_t *r, rq_err_t *e)
{
    return rq_parse(kind, body, strlen(body), &lim, r, e);
}

START_TEST(test_completion_fields)
{
    rq_t r;
    rq_err_t e;
    const char *body =
        "{\"model\":\"m\",\"prompt\":\"Once upon\",\"max_tokens\":7,\"temperature\":0.5,"
        "\"top_p\":0.9,\"top_k\":40,\"min_p\":0.05,\"seed\":42,\"stop\":[\"\\n\",\"The end\"],"
        "\"n\":2,\"stream\":true,\"stream_options\":{\"include_usage\":true},\"logprobs\":3,"
        "\"echo\":true,\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,"
        "\"logit_bias\":{\"13\":-100,\"7\":2.5},\"user\":\"u\",\"unknown_field\":[1,{}]}";
    ck_assert_int_eq(parse(RQ_COMPLETION, body, &r, &e), 0);
    ck_assert_str_eq(r.model, "m");
    ck_assert_uint_eq(r.n_prompts, 1);
    ck_assert_str_eq(r.prompts[0].text, "Once upon");
    ck_assert_uint_eq(r.prompts[0].text_len, 9);
    ck_assert_int_eq(r.max_tokens, 7);
    ck_assert_float_eq(r.sampling.temperature, 0.5f);
    ck_assert_float_eq(r.sampling.top_p, 0.9f);
    ck_assert_int_eq(r.sampling.top_k, 40);
    ck_assert_float_eq(r.sampling.min_p, 0.05f);
    ck_assert(r.sampling.has_seed);
    ck_assert_uint_eq(r.sampling.seed, 42);
    ck_assert_int_eq(r.n_stop, 2);
    ck_assert_str_eq(r.stop[0], "\n");
    ck_assert_str_eq(r.stop[1], "The end");
    ck_assert_int_eq(r.n, 2);
    ck_assert(r.stream && r.include_usage && r.echo);
    ck_assert_int_eq(r.logprobs, 3);
    ck_assert_int_eq(r.sampling.n_probs, 3);
    ck_assert_float_eq(r.sampling.presence_penalty, 0.5f);
    ck_assert_float_eq(r.sampling.frequency_penalty, -0.5f);
    ck_assert_int_eq(r.sampling.n_logit_bias, 2);
    ck_assert_int_eq(r.sampling.logit_bias[0].token, 13);
    ck_assert_float_eq(r.sampling.logit_bias[0].bias, -100.0f);
    ck_assert_int_eq(r.sampling.logit_bias[1].token, 7);
    ck_assert_float_eq(r.sampling.logit_bias[1].bias, 2.5f);
    rq_free(&r);
}
END_TEST

START_TEST(test_completion_defaults)
{
    rq_t r;
    rq_err_t e;
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"\",\"stop\":null,\"seed\":null}", &r, &e),
                     0);
    ck_assert_ptr_null(r.model);
    ck_assert_str_eq(r.prompts[0].text, "");
    ck_assert_int_eq(r.max_tokens, 0);
    ck_assert_int_eq(r.n, 1);
    ck_assert(!r.stream && !r.echo && !r.include_usage);
    ck_assert_int_eq(r.logprobs, -1);
    ck_assert_float_eq(r.sampling.temperature, 1.0f);
    ck_assert_float_eq(r.sampling.top_p, 1.0f);
    ck_assert_int_eq(r.sampling.top_k, 0);
    ck_assert(!r.sampling.has_seed);
    ck_assert_int_eq(r.n_stop, 0);
    ck_assert_int_eq(r.sampling.n_probs, -1);
    int mt = 0;
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 3, 512, &mt, &e), 0);
    ck_assert_int_eq(mt, 16);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 500, 512, &mt, &e), 0);
    ck_assert_int_eq(mt, 12); /* the default shrinks to fit the context */
    rq_free(&r);

    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"top_k\":-1,\"stop\":\"END\"}",
                           &r, &e), 0);
    ck_assert_int_eq(r.sampling.top_k, 0);
    ck_assert_int_eq(r.n_stop, 1);
    ck_assert_str_eq(r.stop[0], "END");
    rq_free(&r);
}
END_TEST

START_TEST(test_prompt_forms)
{
    rq_t r;
    rq_err_t e;
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":[\"a\",\"bc\"]}", &r, &e), 0);
    ck_assert_uint_eq(r.n_prompts, 2);
    ck_assert_str_eq(r.prompts[1].text, "bc");
    rq_free(&r);

    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":[1, 5, 9]}", &r, &e), 0);
    ck_assert_uint_eq(r.n_prompts, 1);
    ck_assert_ptr_null(r.prompts[0].text);
    ck_assert_uint_eq(r.prompts[0].n_ids, 3);
    ck_assert_int_eq(r.prompts[0].ids[2], 9);
    ck_assert_int_eq(rq_check_vocab(&r, 10, &e), 0);
    ck_assert_int_eq(rq_check_vocab(&r, 9, &e), -EINVAL);
    ck_assert_int_eq(e.status, 400);
    ck_assert_str_eq(e.param, "prompt[2]");
    rq_free(&r);

    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":[[1,2],[3]],\"n\":3}", &r, &e), 0);
    ck_assert_uint_eq(r.n_prompts, 2);
    ck_assert_uint_eq(r.prompts[0].n_ids, 2);
    ck_assert_uint_eq(r.prompts[1].n_ids, 1);
    ck_assert_int_eq(r.prompts[1].ids[0], 3);
    ck_assert_int_eq(rq_check_vocab(&r, 3, &e), -EINVAL);
    ck_assert_str_eq(e.param, "prompt[1][0]");
    rq_free(&r);
}
END_TEST

START_TEST(test_chat_fields)
{
    rq_t r;
    rq_err_t e;
    const char *body =
        "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},"
        "{\"type\":\"text\",\"text\":\"there\"}]},{\"role\":\"assistant\",\"content\":null}],"
        "\"max_tokens\":5,\"max_completion_tokens\":9,\"logprobs\":true,\"top_logprobs\":2}";
    ck_assert_int_eq(parse(RQ_CHAT, body, &r, &e), 0);
    ck_assert_uint_eq(r.n_msgs, 3);
    ck_assert_str_eq(r.msgs[0].role, "system");
    ck_assert_str_eq(r.msgs[0].content, "Be brief.");
    ck_assert_str_eq(r.msgs[1].content, "Hi\nthere");
    ck_assert_str_eq(r.msgs[2].role, "assistant");
    ck_assert_str_eq(r.msgs[2].content, "");
    ck_assert_int_eq(r.max_tokens, 9);
    ck_assert_int_eq(r.logprobs, 2);
    int mt = 0;
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 20, 64, &mt, &e), 0);
    ck_assert_int_eq(mt, 9);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 60, 64, &mt, &e), -EINVAL);
    ck_assert_str_eq(e.param, "max_completion_tokens");
    ck_assert_str_eq(e.code, "context_length_exceeded");
    ck_assert_ptr_nonnull(strstr(e.message, "64"));
    ck_assert_ptr_nonnull(strstr(e.message, "69"));
    rq_free(&r);

    /* A chat with max_tokens: the error names max_tokens, the field the client sent. */
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"max_tokens\":50}", &r, &e), 0);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 20, 64, &mt, &e), -EINVAL);
    ck_assert_str_eq(e.param, "max_tokens");
    ck_assert_str_eq(e.code, "context_length_exceeded");
    ck_assert_ptr_nonnull(strstr(e.message, "max_tokens (50)"));
    /* A prompt that fills the context; an empty one is not a context error. */
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 64, 64, &mt, &e), -EINVAL);
    ck_assert_str_eq(e.param, "messages");
    ck_assert_str_eq(e.code, "context_length_exceeded");
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 0, 64, &mt, &e), -EINVAL);
    ck_assert_ptr_null(e.code);
    rq_free(&r);

    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"logprobs\":true}", &r, &e), 0);
    ck_assert_int_eq(r.logprobs, 0);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 20, 64, &mt, &e), 0);
    ck_assert_int_eq(mt, 44); /* chat: the rest of the context */
    rq_free(&r);

    /* reasoning: reasoning_content on assistant messages (null: not given; other roles':
     * ignored), chat_template_kwargs' enable_thinking (other keys ignored), and
     * reasoning_format */
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\","
                                    "\"reasoning_content\":5},{\"role\":\"assistant\","
                                    "\"content\":\"a\",\"reasoning_content\":\"r \\u00fc\"},"
                                    "{\"role\":\"assistant\",\"content\":\"b\","
                                    "\"reasoning_content\":null}],\"chat_template_kwargs\":"
                                    "{\"enable_thinking\":false,\"x\":[1]},"
                                    "\"reasoning_format\":\"none\"}", &r, &e), 0);
    ck_assert_ptr_null(r.msgs[0].reasoning);
    ck_assert_str_eq(r.msgs[1].reasoning, "r \xc3\xbc");
    ck_assert_ptr_null(r.msgs[2].reasoning);
    ck_assert(r.no_thinking);
    ck_assert_int_eq(r.reasoning_format, RSN_NONE);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
                                    "\"chat_template_kwargs\":{\"enable_thinking\":true}}",
                     &r, &e), 0);
    ck_assert(!r.no_thinking);
    ck_assert_int_eq(r.reasoning_format, -1);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],"
                                    "\"chat_template_kwargs\":null,\"reasoning_format\":"
                                    "\"deepseek\"}", &r, &e), 0);
    ck_assert(!r.no_thinking);
    ck_assert_int_eq(r.reasoning_format, RSN_DEEPSEEK);
    rq_free(&r);

    /* Tools that the model may not use ask for text: served, with no tools kept (the
     * deprecated functions are a 400 otherwise, in the table of bad bodies). */
    static const char *const text_only[] = {
        "\"tools\":[]", "\"tools\":null",
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
        "\"tool_choice\":\"none\"",
        "\"functions\":[{}],\"function_call\":\"none\"", "\"tool_choice\":\"auto\"",
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(text_only); i++) {
        char b[256];
        snprintf(b, sizeof b, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s}",
                 text_only[i]);
        ck_assert_msg(parse(RQ_CHAT, b, &r, &e) == 0, "%s: %s", b, e.message);
        ck_assert_ptr_null(r.tools);
        ck_assert_int_eq(r.tool_choice, RQ_TOOLS_NONE);
        rq_free(&r);
    }
}
END_TEST

#define TOOL_F "{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\"," \
               "\"parameters\":{\"type\":\"object\"}}}"
#define TOOL_G "{\"type\":\"function\",\"function\":{\"name\":\"g-2_x\"}}"

/* Tools, tool_choice and parallel_tool_calls are parsed to what the server renders; the
 * history's tool calls and tool results keep their ids, names and arguments. */
START_TEST(test_tool_fields)
{
    rq_t r;
    rq_err_t e;
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"tools\":[" TOOL_F "," TOOL_G "]}", &r, &e), 0);
    ck_assert_int_eq(r.tool_choice, RQ_TOOLS_AUTO);
    ck_assert_int_eq(r.n_tools, 2);
    ck_assert_str_eq(r.tool_names[0], "f");
    ck_assert_str_eq(r.tool_names[1], "g-2_x");
    ck_assert(r.parallel_tool_calls);
    ck_assert_str_eq(r.tools, "[" TOOL_F "," TOOL_G "]");
    rq_free(&r);

    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"tools\":[" TOOL_F "," TOOL_G "],\"tool_choice\":{\"type\":"
                                    "\"function\",\"function\":{\"name\":\"g-2_x\"}},"
                                    "\"parallel_tool_calls\":false}", &r, &e), 0);
    ck_assert_int_eq(r.tool_choice, RQ_TOOLS_NAMED);
    ck_assert_str_eq(r.tool_name, "g-2_x");
    ck_assert(!r.parallel_tool_calls);
    /* no parameters: the arguments are held to be an object */
    ck_assert(r.tool_grammar);
    ck_assert_ptr_nonnull(r.grammar);
    ck_assert_ptr_eq(r.sampling.grammar, r.grammar);
    rq_free(&r);
    /* named with a schema: held to it; one outside the compiler's subset: left free */
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"tools\":[" TOOL_F "],\"tool_choice\":{\"type\":\"function\","
                                    "\"function\":{\"name\":\"f\"}}}", &r, &e), 0);
    ck_assert(r.tool_grammar && r.grammar);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
                                    "\"parameters\":{\"type\":\"string\",\"pattern\":\"a\"}}}],"
                                    "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
                                    "\"f\"}}}", &r, &e), 0);
    ck_assert(!r.tool_grammar);
    ck_assert_ptr_null(r.grammar);
    rq_free(&r);
    /* auto and required: no grammar (the call's syntax is the model's to write) */
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"tools\":[" TOOL_F "]}", &r, &e), 0);
    ck_assert(!r.tool_grammar && !r.grammar);
    rq_free(&r);

    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"tools\":[" TOOL_F "],\"tool_choice\":\"required\"}", &r,
                           &e), 0);
    ck_assert_int_eq(r.tool_choice, RQ_TOOLS_REQUIRED);
    rq_free(&r);

    /* the tools as written (1.0 stays 1.0 for the templates), the first of two; a key
     * written with escapes falls back to cJSON's print */
    ck_assert_int_eq(parse(RQ_CHAT, "{ \"n\" : 1 , \"tools\" :\n [ {\"type\": \"function\", "
                                    "\"function\": {\"name\": \"f\", \"parameters\": {\"x\": "
                                    "[1.0, \"]\\\"\"]}}} ] , \"tools\": [], \"messages\":[{\"role\":"
                                    "\"user\",\"content\":\"x\"}]}", &r, &e), 0);
    ck_assert_str_eq(r.tools, "[ {\"type\": \"function\", \"function\": {\"name\": \"f\", "
                              "\"parameters\": {\"x\": [1.0, \"]\\\"\"]}}} ]");
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"tool\\u0073\":[{\"type\":\"function\",\"function\":{"
                                    "\"name\":\"f\",\"parameters\":{\"m\":1.0}}}]}", &r, &e), 0);
    ck_assert_str_eq(r.tools, "[{\"type\":\"function\",\"function\":{\"name\":\"f\","
                              "\"parameters\":{\"m\":1}}}]");
    rq_free(&r);

    /* a round trip: the call (content null, then absent) and its result */
    static const char *const contents[] = {"\"content\":null,", ""};
    for (int k = 0; k < 2; k++) {
        char b[1024];
        snprintf(b, sizeof b, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},"
                 "{\"role\":\"assistant\",%s\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
                 "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\": "
                 "\\\"\\u00fc}\\\"}\"}},{\"id\":\"call_2\",\"function\":{\"name\":\"f\","
                 "\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"call_1\","
                 "\"content\":[{\"type\":\"text\",\"text\":\"ok\"}]}],\"tools\":[" TOOL_F "]}",
                 contents[k]);
        ck_assert_msg(parse(RQ_CHAT, b, &r, &e) == 0, "%s: %s", b, e.message);
        ck_assert_uint_eq(r.n_msgs, 3);
        ck_assert_ptr_null(r.msgs[1].content);
        ck_assert_uint_eq(r.msgs[1].n_calls, 2);
        ck_assert_str_eq(r.msgs[1].calls[0].id, "call_1");
        ck_assert_str_eq(r.msgs[1].calls[0].name, "f");
        ck_assert_str_eq(r.msgs[1].calls[0].arguments, "{\"a\": \"\xc3\xbc}\"}");
        ck_assert_str_eq(r.msgs[1].calls[1].arguments, "{}");
        ck_assert_str_eq(r.msgs[2].role, "tool");
        ck_assert_str_eq(r.msgs[2].tool_call_id, "call_1");
        ck_assert_str_eq(r.msgs[2].content, "ok");
        rq_free(&r);
    }
    /* an assistant message without calls still reads a null content as empty text */
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":null,"
                                    "\"tool_calls\":[]}]}", &r, &e), 0);
    ck_assert_str_eq(r.msgs[0].content, "");
    ck_assert_uint_eq(r.msgs[0].n_calls, 0);
    rq_free(&r);
}
END_TEST

/* Unsupported fields at a value that asks for nothing are served (clients send their
 * defaults), and fields that change nothing in the answer are accepted; the others are 400s
 * with OpenAI's code (the table of bad bodies has one per field). */
START_TEST(test_unsupported_fields)
{
    static const struct { int kind; const char *extra; } neutral[] = {
        {RQ_COMPLETION, "\"suffix\":null"}, {RQ_COMPLETION, "\"suffix\":\"\""},
        {RQ_COMPLETION, "\"best_of\":1"}, {RQ_COMPLETION, "\"best_of\":null"},
        {RQ_COMPLETION, "\"n\":3,\"best_of\":3"}, {RQ_COMPLETION, "\"n\":3,\"best_of\":1"},
        {RQ_COMPLETION, "\"logit_bias\":{}"}, {RQ_COMPLETION, "\"min_tokens\":0"},
        {RQ_COMPLETION, "\"use_beam_search\":false"}, {RQ_COMPLETION, "\"grammar\":\"\""},
        {RQ_COMPLETION, "\"metadata\":{\"a\":\"b\"},\"store\":true"},
        {RQ_COMPLETION, "\"response_format\":{\"type\":\"text\"},\"prompt_logprobs\":null"},
        /* llama-server's web UI sends its samplers' "off" values. */
        {RQ_CHAT, "\"n_probs\":0,\"mirostat\":0,\"typical_p\":1,\"dynatemp_range\":0,"
                  "\"xtc_probability\":0,\"dry_multiplier\":0,\"min_tokens\":0"},
        {RQ_CHAT, "\"echo\":false"}, {RQ_CHAT, "\"audio\":null"},
        {RQ_CHAT, "\"modalities\":[\"text\"]"}, {RQ_CHAT, "\"json_schema\":{}"},
        {RQ_CHAT, "\"guided_choice\":[]"}, {RQ_CHAT, "\"response_format\":{\"type\":\"text\"}"},
        {RQ_CHAT, "\"parallel_tool_calls\":false,\"store\":false,\"metadata\":{},"
                  "\"service_tier\":\"auto\",\"user\":\"u\""},
    };
    rq_t r;
    rq_err_t e;
    for (size_t i = 0; i < FD_ARRAY_LEN(neutral); i++) {
        char b[256];
        snprintf(b, sizeof b, neutral[i].kind == RQ_CHAT
                 ? "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],%s}"
                 : "{\"prompt\":\"x\",%s}", neutral[i].extra);
        ck_assert_msg(parse(neutral[i].kind, b, &r, &e) == 0, "%s: %s", b, e.message);
        rq_free(&r);
    }
    /* a suffix is parsed (the server builds the FIM prompt, or refuses without FIM tokens) */
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"!\"}", &r, &e), 0);
    ck_assert_str_eq(r.suffix, "!");
    ck_assert_uint_eq(r.suffix_len, 1);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\"\"}", &r, &e), 0);
    ck_assert_ptr_null(r.suffix);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"n\":2,\"best_of\":4}", &r,
                           &e), -EINVAL);
    ck_assert_str_eq(e.code, "unsupported_parameter");
    ck_assert_ptr_nonnull(strstr(e.message, "(4)"));
    /* best_of below n is wrong rather than unsupported (OpenAI refuses it too). */
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"n\":3,\"best_of\":2}", &r,
                           &e), -EINVAL);
    ck_assert_ptr_null(e.code);
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"response_format\":{\"type\":\"yaml\"}}", &r, &e),
                     -EINVAL);
    ck_assert_str_eq(e.code, "unsupported_value");
    ck_assert_str_eq(e.param, "response_format.type");
    /* json_object: a spec the request owns, handed to the engine through sampling */
    for (int kind = RQ_COMPLETION; kind <= RQ_CHAT; kind++) {
        const char *body = kind == RQ_CHAT
                               ? "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                 "\"response_format\":{\"type\":\"json_object\"}}"
                               : "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\"}}";
        ck_assert_int_eq(parse(kind, body, &r, &e), 0);
        ck_assert_ptr_nonnull(r.grammar);
        ck_assert_ptr_eq(r.sampling.grammar, r.grammar);
        rq_free(&r);
    }
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
                                    "{\"name\":\"n\",\"schema\":{\"type\":\"string\",\"pattern\":"
                                    "\"a\"}}}}", &r, &e), -EINVAL);
    ck_assert_str_eq(e.code, "unsupported_parameter");
    ck_assert_ptr_nonnull(strstr(e.message, "pattern"));
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":"
                                    "{\"name\":\"n\",\"strict\":true,\"schema\":{\"type\":"
                                    "\"string\"}}}}", &r, &e), 0);
    ck_assert_ptr_nonnull(r.sampling.grammar);
    rq_free(&r);
    /* vLLM's guided_json (an object or its JSON text) and llama-server's json_schema */
    static const char *const extra[] = {
        "{\"prompt\":\"x\",\"guided_json\":{\"type\":\"object\"}}",
        "{\"prompt\":\"x\",\"guided_json\":\"{\\\"type\\\":\\\"integer\\\"}\"}",
        "{\"prompt\":\"x\",\"json_schema\":{\"enum\":[1,2]}}",
        "{\"prompt\":\"x\",\"structured_outputs\":{\"json\":{\"type\":\"array\"}}}",
        "{\"prompt\":\"x\",\"structured_outputs\":{\"json\":\"{}\",\"regex\":null}}",
        "{\"prompt\":\"x\",\"structured_outputs\":{\"json_object\":true}}",
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(extra); i++) {
        ck_assert_msg(parse(RQ_COMPLETION, extra[i], &r, &e) == 0, "%s: %s", extra[i], e.message);
        ck_assert_ptr_nonnull(r.sampling.grammar);
        rq_free(&r);
    }
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"response_format\":{\"type\":"
                                          "\"text\"}}", &r, &e), 0);
    ck_assert_ptr_null(r.sampling.grammar);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"functions\":[{\"name\":\"f\"}]}", &r, &e), -EINVAL);
    ck_assert_str_eq(e.code, "unsupported_parameter");
    /* A wrong type or range is a plain 400 with no code. */
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"temperature\":9}", &r, &e),
                     -EINVAL);
    ck_assert_ptr_null(e.code);
}
END_TEST

START_TEST(test_embeddings_bodies)
{
    rq_t r;
    rq_err_t e;
    ck_assert_int_eq(parse(RQ_EMBEDDINGS, "{\"input\":\"hi\",\"model\":\"m\",\"user\":\"u\"}",
                           &r, &e), 0);
    ck_assert_uint_eq(r.n_prompts, 1);
    ck_assert_str_eq(r.prompts[0].text, "hi");
    ck_assert_str_eq(r.model, "m");
    ck_assert(!r.base64);
    ck_assert_int_eq(r.dimensions, 0);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_EMBEDDINGS, "{\"input\":[[1,2],[3]],\"encoding_format\":"
                           "\"base64\",\"dimensions\":64}", &r, &e), 0);
    ck_assert_uint_eq(r.n_prompts, 2);
    ck_assert_uint_eq(r.prompts[1].n_ids, 1);
    ck_assert(r.base64);
    ck_assert_int_eq(r.dimensions, 64);
    ck_assert_int_eq(rq_check_vocab(&r, 3, &e), -EINVAL);
    ck_assert_str_eq(e.param, "input[1][0]");
    rq_free(&r);
    /* max_inputs inputs (more than max_n: they are not choices) are served, one more is
     * refused */
    char *body = malloc(16 + 4 * (size_t)(lim.max_inputs + 1));
    ck_assert_ptr_nonnull(body);
    strcpy(body, "{\"input\":[\"a\"");
    for (int i = 1; i < lim.max_inputs; i++)
        strcat(body, ",\"a\"");
    strcat(body, "]}");
    ck_assert_int_gt(lim.max_inputs, lim.max_n);
    ck_assert_int_eq(parse(RQ_EMBEDDINGS, body, &r, &e), 0);
    ck_assert_uint_eq(r.n_prompts, (size_t)lim.max_inputs);
    rq_free(&r);
    body[strlen(body) - 2] = 0;
    strcat(body, ",\"a\"]}");
    ck_assert_int_eq(parse(RQ_EMBEDDINGS, body, &r, &e), -EINVAL);
    ck_assert_str_eq(e.param, "input");
    free(body);
}
END_TEST

START_TEST(test_tokenize_bodies)
{
    rq_t r;
    rq_err_t e;
    ck_assert_int_eq(parse(RQ_TOKENIZE, "{\"content\":\"hello\",\"add_special\":false}", &r, &e),
                     0);
    ck_assert_str_eq(r.prompts[0].text, "hello");
    ck_assert(!r.add_special);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_TOKENIZE, "{\"prompt\":\"hi\"}", &r, &e), 0);
    ck_assert_str_eq(r.prompts[0].text, "hi");
    ck_assert(r.add_special);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_DETOKENIZE, "{\"tokens\":[]}", &r, &e), 0);
    ck_assert_uint_eq(r.prompts[0].n_ids, 0);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_DETOKENIZE, "{\"tokens\":[4,5]}", &r, &e), 0);
    ck_assert_uint_eq(r.prompts[0].n_ids, 2);
    ck_assert_int_eq(rq_check_vocab(&r, 5, &e), -EINVAL);
    ck_assert_str_eq(e.param, "tokens[1]");
    rq_free(&r);
}
END_TEST

/* Bad bodies: kind, body, expected status and param. */
static const struct bad_case {
    int kind;
    const char *body;
    int status;
    const char *param;
} bad_cases[] = {
    {RQ_COMPLETION, "", 400, ""},
    {RQ_COMPLETION, "{", 400, ""},
    {RQ_COMPLETION, "{\"prompt\":\"x\",}", 400, ""},
    {RQ_COMPLETION, "{\"prompt\":\"x\"} trailing", 400, ""},
    {RQ_COMPLETION, "[1,2]", 400, ""},
    {RQ_COMPLETION, "\"just a string\"", 400, ""},
    {RQ_COMPLETION, "{}", 400, "prompt"},
    {RQ_COMPLETION, "{\"prompt\":null}", 400, "prompt"},
    {RQ_COMPLETION, "{\"prompt\":5}", 400, "prompt"},
    {RQ_COMPLETION, "{\"prompt\":[]}", 400, "prompt"},
    {RQ_COMPLETION, "{\"prompt\":[\"a\",3]}", 400, "prompt[1]"},
    {RQ_COMPLETION, "{\"prompt\":[1,\"a\"]}", 400, "prompt[1]"},
    {RQ_COMPLETION, "{\"prompt\":[1,-2]}", 400, "prompt[1]"},
    {RQ_COMPLETION, "{\"prompt\":[1,2.5]}", 400, "prompt[1]"},
    {RQ_COMPLETION, "{\"prompt\":[[1],[]]}", 400, "prompt[1]"},
    {RQ_COMPLETION, "{\"prompt\":[[1],[2,\"x\"]]}", 400, "prompt[1][1]"},
    {RQ_COMPLETION, "{\"prompt\":[[1],\"x\"]}", 400, "prompt[1]"},
    {RQ_COMPLETION, "{\"prompt\":\"\xff\xfe\"}", 400, "prompt"},
    {RQ_COMPLETION, "{\"prompt\":\"\xed\xa0\x80\"}", 400, "prompt"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"model\":3}", 400, "model"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":\"16\"}", 400, "max_tokens"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":0}", 400, "max_tokens"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":-1}", 400, "max_tokens"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":1.5}", 400, "max_tokens"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":1e12}", 400, "max_tokens"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"temperature\":\"hot\"}", 400, "temperature"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"temperature\":-0.1}", 400, "temperature"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"temperature\":2.5}", 400, "temperature"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"top_p\":0}", 400, "top_p"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"top_p\":1.01}", 400, "top_p"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"top_k\":-2}", 400, "top_k"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"top_k\":true}", 400, "top_k"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"min_p\":1.5}", 400, "min_p"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"seed\":\"42\"}", 400, "seed"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"seed\":0.5}", 400, "seed"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stop\":5}", 400, "stop"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"a\",7]}", 400, "stop[1]"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"a\",\"\"]}", 400, "stop[1]"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stop\":\"\"}", 400, "stop"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\","
                    "\"8\",\"9\",\"10\",\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
     400, "stop"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"n\":0}", 400, "n"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"n\":17}", 400, "n"},
    {RQ_COMPLETION, "{\"prompt\":[\"a\",\"b\",\"c\"],\"n\":6}", 400, "n"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stream\":\"yes\"}", 400, "stream"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stream\":1}", 400, "stream"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stream_options\":true}", 400, "stream_options"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stream_options\":{\"include_usage\":1}}", 400,
     "stream_options.include_usage"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":21}", 400, "logprobs"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"logprobs\":true}", 400, "logprobs"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"echo\":\"no\"}", 400, "echo"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"presence_penalty\":3}", 400, "presence_penalty"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"frequency_penalty\":-2.5}", 400, "frequency_penalty"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":[1]}", 400, "logit_bias"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"abc\":1}}", 400, "logit_bias.abc"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"-1\":1}}", 400, "logit_bias.-1"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":\"a\"}}", 400, "logit_bias.5"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"logit_bias\":{\"5\":101}}", 400, "logit_bias.5"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"user\":5}", 400, "user"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"repetition_penalty\":0}", 400, "repetition_penalty"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"ignore_eos\":\"1\"}", 400, "ignore_eos"},
    {RQ_CHAT, "{}", 400, "messages"},
    {RQ_CHAT, "{\"messages\":\"hi\"}", 400, "messages"},
    {RQ_CHAT, "{\"messages\":[]}", 400, "messages"},
    {RQ_CHAT, "{\"messages\":[5]}", 400, "messages[0]"},
    {RQ_CHAT, "{\"messages\":[{\"content\":\"x\"}]}", 400, "messages[0].role"},
    {RQ_CHAT, "{\"messages\":[{\"role\":7,\"content\":\"x\"}]}", 400, "messages[0].role"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"wizard\",\"content\":\"x\"}]}", 400,
     "messages[0].role"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", 400,
     "messages[0].tool_call_id"},
    /* reasoning: reasoning_content, chat_template_kwargs, reasoning_format */
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\","
              "\"content\":\"y\",\"reasoning_content\":5}]}", 400, "messages[1].reasoning_content"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"y\",\"reasoning_content\":"
              "[\"a\"]}]}", 400, "messages[0].reasoning_content"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"content\":\"y\",\"reasoning_content\":"
              "\"\xff\"}]}", 400, "messages[0].reasoning_content"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":"
              "true}", 400, "chat_template_kwargs"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":"
              "[]}", 400, "chat_template_kwargs"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":"
              "{\"enable_thinking\":\"false\"}}", 400, "chat_template_kwargs.enable_thinking"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template_kwargs\":"
              "{\"enable_thinking\":0}}", 400, "chat_template_kwargs.enable_thinking"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_format\":"
              "\"deepseek-legacy\"}", 400, "reasoning_format"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"reasoning_format\":"
              "true}", 400, "reasoning_format"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"\",\"content\":\"x\"}]}",
     400, "messages[0].tool_call_id"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"c\"}]}", 400,
     "messages[0].content"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}", 400,
     "messages[0].tool_calls"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":{}}]}", 400,
     "messages[0].tool_calls"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[5]}]}", 400,
     "messages[0].tool_calls[0]"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{"
              "\"name\":\"f\",\"arguments\":\"{}\"}}]}]}", 400, "messages[0].tool_calls[0].id"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\"}]}]}", 400,
     "messages[0].tool_calls[0].function"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
              "\"function\":{\"arguments\":\"{}\"}}]}]}", 400,
     "messages[0].tool_calls[0].function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
              "\"function\":{\"name\":\"f\",\"arguments\":{}}}]}]}", 400,
     "messages[0].tool_calls[0].function.arguments"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
              "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]}]}", 400,
     "messages[0].tool_calls[0].function"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
              "\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}", 400,
     "messages[0].tool_calls[0].function"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"c\","
              "\"type\":\"code\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}]}", 400,
     "messages[0].tool_calls[0]"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\"}]}", 400, "messages[0].content"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\","
              "\"content\":5}]}", 400, "messages[1].content"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
              "\"image_url\":{\"url\":\"x\"}}]}]}", 400, "messages[0].content[0].type"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}", 400,
     "messages[0].content[0].text"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":[\"x\"]}]}", 400,
     "messages[0].content[0]"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":3}", 400,
     "logprobs"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":3}", 400,
     "top_logprobs"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":true,"
              "\"top_logprobs\":30}", 400, "top_logprobs"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"max_completion_tokens\":0}", 400, "max_completion_tokens"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"response_format\":{\"type\":\"grammar\"}}", 400, "response_format.type"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"response_format\":\"json_object\"}", 400, "response_format"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{}}}}",
     400, "response_format.json_schema.name"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_schema\","
                    "\"json_schema\":{\"name\":\"n\",\"schema\":{\"not\":{}}}}}",
     400, "response_format.json_schema.schema"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"response_format\":{\"type\":\"json_object\","
                    "\"schema\":{\"type\":\"object\",\"minProperties\":1}}}",
     400, "response_format.schema"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"response_format\":{\"type\":null}}", 400, "response_format.type"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{}],"
              "\"tool_choice\":\"auto\"}", 400, "tools[0].type"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[7]}", 400,
     "tools[0]"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"retrieval\"}]}", 400, "tools[0].type"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\"}]}", 400, "tools[0].function"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":\"f\"}]}", 400, "tools[0].function"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":{}}]}", 400, "tools[0].function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":{\"name\":5}}]}", 400, "tools[0].function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":{\"name\":\"a b\"}}]}", 400, "tools[0].function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":{\"name\":\"a\\\"}\"}}]}", 400, "tools[0].function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
              "aaaaaaaaaaaaaaa\"}}]}", 400, "tools[0].function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F ","
              TOOL_F "]}", 400, "tools[1].function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":{\"name\":\"f\",\"parameters\":\"{}\"}}]}", 400,
     "tools[0].function.parameters"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":{\"name\":\"f\",\"description\":[]}}]}", 400,
     "tools[0].function.description"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
              "\"function\",\"function\":{\"name\":\"f\",\"strict\":\"yes\"}}]}", 400,
     "tools[0].function.strict"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"tool_choice\":\"any\"}", 400, "tool_choice"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"tool_choice\":3}", 400, "tool_choice"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"tool_choice\":\"required\"}", 400, "tool_choice"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"g\"}}}", 400,
     "tool_choice.function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}", 400,
     "tool_choice.function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"tool_choice\":{\"type\":\"function\",\"function\":{}}}", 400,
     "tool_choice.function.name"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"tool_choice\":{\"type\":\"tool\",\"function\":{\"name\":\"f\"}}}", 400,
     "tool_choice.type"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"tool_choice\":{\"type\":\"function\"}}", 400, "tool_choice.function"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"parallel_tool_calls\":\"no\"}", 400, "parallel_tool_calls"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"response_format\":{\"type\":\"json_object\"}}", 400, "tools"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"guided_json\":{\"type\":\"object\"}}", 400, "tools"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[" TOOL_F "],"
              "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}},"
              "\"response_format\":{\"type\":\"json_object\"}}", 400, "tools"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}", 400,
     "tools"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"functions\":[{}]}",
     400, "functions"},
    /* Fields fusiond does not implement, at a value that asks for something. */
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"suffix\":\" end\",\"echo\":true}", 400, "suffix"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"suffix\":5}", 400, "suffix"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"best_of\":3}", 400, "best_of"},
    /* /infill, with llama-server's messages */
    {RQ_INFILL, "{}", 400, "input_prefix"},
    {RQ_INFILL, "{\"input_prefix\":\"a\"}", 400, "input_suffix"},
    {RQ_INFILL, "{\"input_prefix\":1,\"input_suffix\":\"\"}", 400, "input_prefix"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":[]}", 400, "input_suffix"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"prompt\":[1]}", 400, "prompt"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"input_extra\":{}}", 400,
     "input_extra"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"input_extra\":[\"x\"]}", 400,
     "input_extra[0]"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"input_extra\":[{\"text\":\"a\"},"
                "{\"filename\":\"f\"}]}", 400, "input_extra[1]"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"input_extra\":[{\"text\":\"a\","
                "\"filename\":3}]}", 400, "input_extra[0]"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"response_fields\":\"content\"}",
     400, "response_fields"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"response_fields\":[1]}", 400,
     "response_fields[0]"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"n\":2}", 400, "n"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"logprobs\":2}", 400, "logprobs"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"echo\":true}", 400, "echo"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"max_tokens\":-2}", 400,
     "max_tokens"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"n_predict\":\"8\"}", 400,
     "n_predict"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"mirostat\":3}", 400,
     "mirostat"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"n_indent\":-1}", 400,
     "n_indent"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"t_max_predict_ms\":\"1\"}",
     400, "t_max_predict_ms"},
    {RQ_NATIVE, "{}", 400, "prompt"},
    {RQ_NATIVE, "{\"prompt\":5}", 400, "prompt"},
    {RQ_NATIVE, "{\"prompt\":[]}", 400, "prompt"},
    {RQ_NATIVE, "{\"prompt\":[1,-2]}", 400, "prompt[1]"},
    {RQ_NATIVE, "{\"prompt\":[1,\"a\",true]}", 400, "prompt[2]"},
    {RQ_NATIVE, "{\"prompt\":[\"a\",[]]}", 400, "prompt[1]"},
    {RQ_NATIVE, "{\"prompt\":[\"a\",{\"x\":1}]}", 400, "prompt[1]"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"n_probs\":21}", 400, "n_probs"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"max_tokens\":-2}", 400, "max_tokens"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"return_tokens\":1}", 400, "return_tokens"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"cache_prompt\":\"yes\"}", 400, "cache_prompt"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"repeat_last_n\":-2}", 400, "repeat_last_n"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"n_cmpl\":0}", 400, "n_cmpl"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"logit_bias\":[[1,\"a\"]]}", 400, "logit_bias[0]"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"logit_bias\":[[1,200]]}", 400, "logit_bias[0]"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"post_sampling_probs\":1}", 400,
     "post_sampling_probs"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"grammar\":\"root ::= x\"}", 400, "grammar"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"n\":2,\"best_of\":3}", 400, "best_of"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"n\":3,\"best_of\":2}", 400, "best_of"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"best_of\":0}", 400, "best_of"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"best_of\":\"2\"}", 400, "best_of"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"min_tokens\":4}", 400, "min_tokens"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"use_beam_search\":true}", 400, "use_beam_search"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"grammar\":\"root ::= [z-a]\"}", 400, "grammar"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"grammar\":5}", 400, "grammar"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"guided_grammar\":\"x ::= \\\"a\\\"\"}", 400,
     "guided_grammar"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"guided_regex\":\"(?=a)b\"}", 400, "guided_regex"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"guided_regex\":\"a(\"}", 400, "guided_regex"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"guided_choice\":\"a\"}", 400, "guided_choice"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"grammar\":\"root ::= \\\"a\\\"\",\"response_format\":"
                    "{\"type\":\"json_object\"}}", 400, "grammar"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"grammar\":\"root ::= \\\"a\\\"\",\"guided_regex\":"
                    "\"a\"}", 400, "guided_regex"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"grammar\":\"root ::= \\\"a\\\"\",\"json_schema\":"
                "{\"type\":\"string\"}}", 400, "grammar"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"regex\":\"a\",\"choice\":"
                    "[\"a\"]}}", 400, "structured_outputs"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"grammar\":\"root ::=\"},"
                    "\"guided_choice\":[\"a\"]}", 400, "guided_choice"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"structural_tag\":\"a\"}}",
     400, "structured_outputs.structural_tag"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"response_format\":{\"type\":[\"json_object\"]}}",
     400, "response_format.type"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"prompt_logprobs\":21}", 400, "prompt_logprobs"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"prompt_logprobs\":-1}", 400, "prompt_logprobs"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"prompt_logprobs\":\"2\"}", 400, "prompt_logprobs"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":0,\"echo\":false}", 400, "max_tokens"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":0}", 400,
     "max_tokens"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"prompt_logprobs\":"
              "25}", 400, "prompt_logprobs"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"n_probs\":21}", 400, "n_probs"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"n_probs\":-1}", 400,
     "n_probs"},
    {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\",\"n_probs\":\"2\"}", 400,
     "n_probs"},
    /* llama.cpp's samplers: out-of-range values and wrong types, by name */
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"mirostat\":-1}", 400, "mirostat"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"mirostat\":1.5}", 400, "mirostat"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"mirostat_eta\":2}", 400, "mirostat_eta"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"mirostat_tau\":-1}", 400, "mirostat_tau"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"typical_p\":1.1}", 400, "typical_p"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"top_n_sigma\":\"2\"}", 400, "top_n_sigma"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"dry_multiplier\":-1}",
     400, "dry_multiplier"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"dry_base\":0.5}",
     400, "dry_base"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"dry_allowed_length\":-1}", 400, "dry_allowed_length"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"dry_penalty_last_n\":-2}", 400, "dry_penalty_last_n"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"dry_sequence_breakers\":[]}", 400, "dry_sequence_breakers"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"dry_sequence_breakers\":[\"a\",\"\"]}", 400, "dry_sequence_breakers"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"dry_sequence_breakers\":\"\\n\"}", 400, "dry_sequence_breakers"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"xtc_probability\":"
              "1.5}", 400, "xtc_probability"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"xtc_threshold\":"
              "-0.1}", 400, "xtc_threshold"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"dynatemp_exponent\":-1}", 400, "dynatemp_exponent"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"samplers\":[\"top_k\",\"bogus\"]}", 400, "samplers"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"samplers\":\"kq\"}", 400, "samplers"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"samplers\":[1]}", 400, "samplers"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"samplers\":{}}", 400, "samplers"},
    {RQ_NATIVE, "{\"prompt\":\"x\",\"samplers\":[]}", 400, "samplers"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"dynatemp_range\":"
              "\"1\"}", 400, "dynatemp_range"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"echo\":true}", 400,
     "echo"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"json_schema\":"
              "{\"type\":\"object\",\"maxProperties\":2}}", 400, "json_schema"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guided_json\":"
              "\"{\\\"type\\\":\"}", 400, "guided_json"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guided_json\":"
              "{\"type\":\"object\"},\"response_format\":{\"type\":\"json_object\"}}", 400,
     "guided_json"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"guided_json\":\"[1]\"}", 400, "guided_json"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"regex\":\"a\\\\1\"}}", 400,
     "structured_outputs.regex"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"choice\":[]}}", 400,
     "structured_outputs.choice"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":5}", 400, "structured_outputs"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"json\":{\"format\":\"uri\"}}}",
     400, "structured_outputs.json"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"json\":{},\"json_object\":"
                    "true}}", 400, "structured_outputs"},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"json_object\":true},"
                    "\"response_format\":{\"type\":\"json_object\"}}", 400, "structured_outputs"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guided_choice\":"
              "[\"a\",1]}", 400, "guided_choice"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guided_choice\":"
              "[\"a\"],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}", 400,
     "tools"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"audio\":"
              "{\"voice\":\"alloy\",\"format\":\"wav\"}}", 400, "audio"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"modalities\":"
              "[\"text\",\"audio\"]}", 400, "modalities"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"modalities\":"
              "\"text\"}", 400, "modalities"},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
              "\"web_search_options\":{}}", 400, "web_search_options"},
    {RQ_TOKENIZE, "{}", 400, "content"},
    {RQ_TOKENIZE, "{\"content\":[1]}", 400, "content"},
    {RQ_TOKENIZE, "{\"content\":\"x\",\"add_special\":\"no\"}", 400, "add_special"},
    {RQ_EMBEDDINGS, "{}", 400, "input"},
    {RQ_EMBEDDINGS, "{\"input\":\"\"}", 400, "input"},
    {RQ_EMBEDDINGS, "{\"input\":[]}", 400, "input"},
    {RQ_EMBEDDINGS, "{\"input\":[\"a\",\"\"]}", 400, "input[1]"},
    {RQ_EMBEDDINGS, "{\"input\":[[1],[]]}", 400, "input[1]"},
    {RQ_EMBEDDINGS, "{\"input\":[\"a\",[1]]}", 400, "input[1]"},
    {RQ_EMBEDDINGS, "{\"input\":{\"text\":\"a\"}}", 400, "input"},
    {RQ_EMBEDDINGS, "{\"input\":[-1]}", 400, "input[0]"},
    {RQ_EMBEDDINGS, "{\"input\":\"a\",\"encoding_format\":\"int8\"}", 400,
     "encoding_format"},
    {RQ_EMBEDDINGS, "{\"input\":\"a\",\"encoding_format\":true}", 400, "encoding_format"},
    {RQ_EMBEDDINGS, "{\"input\":\"a\",\"dimensions\":0}", 400, "dimensions"},
    {RQ_EMBEDDINGS, "{\"input\":\"a\",\"dimensions\":1.5}", 400, "dimensions"},
    {RQ_EMBEDDINGS, "{\"input\":\"a\",\"user\":[]}", 400, "user"},
    {RQ_EMBEDDINGS, "{\"input\":\"a\",\"model\":1}", 400, "model"},
    {RQ_DETOKENIZE, "{}", 400, "tokens"},
    {RQ_DETOKENIZE, "{\"tokens\":\"1 2\"}", 400, "tokens"},
    {RQ_DETOKENIZE, "{\"tokens\":[1,null]}", 400, "tokens[1]"},
    /* Regression (bad-input battery): cJSON cut strings at \u0000, so these prompts, stop
     * strings and messages once lost everything after it without a word. */
    {RQ_COMPLETION, "{\"prompt\":\"a\\u0000b\"}", 400, ""},
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"stop\":[\"\\\\\\u0000\"]}", 400, ""},
    {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"\\u0000\"}]}", 400, ""},
    {RQ_TOKENIZE, "{\"content\":\"\\u0000\"}", 400, ""},
    /* Regression (fuzz_request): 2^63 passed the check against (double)LLONG_MAX, which
     * rounds to 2^63, and its conversion to long long was undefined. */
    {RQ_COMPLETION, "{\"prompt\":\"x\",\"seed\":9223372036854775808}", 400, "seed"},
};

/* llama.vim's request, whole: its fields are read, its unknown ones ignored, and the
 * sampling defaults are llama-server's. */
/* body asks for the prompt alone (n_predict or max_tokens 0): no token to generate. */
static void assert_prompt_only(int kind, const char *body)
{
    rq_t r;
    rq_err_t e;
    int mt = -1;
    ck_assert_msg(parse(kind, body, &r, &e) == 0, "%s: %s", body, e.message);
    ck_assert_int_eq(r.max_tokens, RQ_PROMPT_ONLY);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 10, 64, &mt, &e), 0);
    ck_assert_int_eq(mt, 0);
    rq_free(&r);
}

START_TEST(test_infill_body)
{
    rq_t r;
    rq_err_t e;
    const char *vim =
        "{\"input_prefix\":\"def f():\\n\",\"input_suffix\":\"\\n\",\"prompt\":\"    re\","
        "\"input_extra\":[{\"filename\":\"a.py\",\"text\":\"x = 1\\n\"},{\"text\":\"y\"}],"
        "\"n_predict\":128,\"stop\":[],\"n_indent\":4,\"top_k\":40,\"top_p\":0.99,"
        "\"samplers\":[\"top_k\",\"top_p\",\"infill\"],\"stream\":false,\"cache_prompt\":true,"
        "\"t_max_prompt_ms\":500,\"t_max_predict_ms\":1000,\"id_slot\":-1,"
        "\"response_fields\":[\"content\",\"timings/prompt_n\",\"truncated\"]}";
    ck_assert_msg(parse(RQ_INFILL, vim, &r, &e) == 0, "%s", e.message);
    ck_assert_int_eq(r.kind, RQ_INFILL);
    ck_assert_str_eq(r.input_prefix, "def f():\n");
    ck_assert_uint_eq(r.input_prefix_len, 9);
    ck_assert_str_eq(r.input_suffix, "\n");
    ck_assert_uint_eq(r.n_prompts, 1);
    ck_assert_str_eq(r.prompts[0].text, "    re");
    ck_assert_uint_eq(r.n_extra, 2);
    ck_assert_str_eq(r.extra[0].filename, "a.py");
    ck_assert_str_eq(r.extra[0].text, "x = 1\n");
    ck_assert_ptr_null(r.extra[1].filename);
    ck_assert_int_eq(r.max_tokens, 128);
    ck_assert_int_eq(r.sampling.top_k, 40);
    ck_assert_float_eq_tol(r.sampling.top_p, 0.99f, 1e-6f);
    ck_assert_float_eq_tol(r.sampling.temperature, 0.8f, 1e-6f);
    ck_assert_float_eq_tol(r.sampling.min_p, 0.05f, 1e-6f);
    ck_assert_int_eq(r.n_response_fields, 3);
    ck_assert_str_eq(r.response_fields[1], "timings/prompt_n");
    ck_assert_int_eq(r.logprobs, -1);
    ck_assert_int_eq(r.n_indent, 4);
    ck_assert_float_eq_tol(r.t_max_predict_ms, 1000.0f, 1e-3f);
    rq_free(&r);
    /* the least: no prompt ("" then), no n_predict (to the end of the context) */
    ck_assert_int_eq(parse(RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\"}", &r, &e), 0);
    ck_assert_str_eq(r.prompts[0].text, "");
    ck_assert_int_eq(r.max_tokens, RQ_TO_CONTEXT);
    ck_assert_uint_eq(r.n_extra, 0);
    int mt = 0;
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 10, 64, &mt, &e), 0);
    ck_assert_int_eq(mt, 54);
    rq_free(&r);
    /* n_predict past the context is cut to it (llama-server stops there) */
    ck_assert_int_eq(parse(RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\","
                                      "\"n_predict\":500}", &r, &e), 0);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 10, 64, &mt, &e), 0);
    ck_assert_int_eq(mt, 54);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 64, 64, &mt, &e), -EINVAL);
    ck_assert_str_eq(e.param, "input_prefix");
    ck_assert_str_eq(e.code, "context_length_exceeded");
    rq_free(&r);
    /* n_predict 0 (llama.vim warms its extra context so), or max_tokens 0: the prompt alone */
    assert_prompt_only(RQ_INFILL, "{\"input_prefix\":\"a\",\"input_suffix\":\"\","
                                  "\"n_predict\":0}");
    assert_prompt_only(RQ_INFILL, "{\"input_prefix\":\"a\",\"input_suffix\":\"\","
                                  "\"max_tokens\":0}");
}
END_TEST

START_TEST(test_native_body)
{
    rq_t r;
    rq_err_t e;
    /* the defaults: llama-server's sampling, n_predict -1, no probabilities */
    ck_assert_int_eq(parse(RQ_NATIVE, "{\"prompt\":\"hi\"}", &r, &e), 0);
    ck_assert_int_eq(r.kind, RQ_NATIVE);
    ck_assert_int_eq(r.max_tokens, RQ_TO_CONTEXT);
    ck_assert_float_eq_tol(r.sampling.temperature, 0.8f, 1e-6f);
    ck_assert_int_eq(r.sampling.top_k, 40);
    ck_assert_int_eq(r.n_probs, 0);
    ck_assert_int_eq(r.logprobs, -1);
    ck_assert(r.cache_prompt && !r.return_tokens && !r.sampling.has_seed);
    ck_assert_str_eq(r.prompts[0].text, "hi");
    rq_free(&r);
    /* mixed: a run of ids and each string are segments, in order */
    ck_assert_msg(parse(RQ_NATIVE, "{\"prompt\":[1,2,\"ab\",3],\"n_probs\":2,\"seed\":-1,"
                                   "\"temperature\":-1,\"return_tokens\":true,"
                                   "\"max_tokens\":-1,\"repeat_last_n\":-1,"
                                   "\"logit_bias\":[[5,false],[6,2.5]]}", &r, &e) == 0,
                  "%s", e.message);
    ck_assert_uint_eq(r.n_prompts, 1);
    ck_assert_ptr_null(r.prompts[0].text);
    ck_assert_uint_eq(r.prompts[0].n_segs, 3);
    ck_assert_uint_eq(r.prompts[0].segs[0].n_ids, 2);
    ck_assert_int_eq(r.prompts[0].segs[0].ids[1], 2);
    ck_assert_str_eq(r.prompts[0].segs[1].text, "ab");
    ck_assert_int_eq(r.prompts[0].segs[2].ids[0], 3);
    ck_assert_int_eq(r.n_probs, 2);
    ck_assert_int_eq(r.logprobs, 2);
    ck_assert_int_eq(r.sampling.n_probs, 2);
    ck_assert(!r.sampling.has_seed && r.return_tokens);
    ck_assert_float_eq(r.sampling.temperature, 0.0f);
    ck_assert_int_eq(r.max_tokens, RQ_TO_CONTEXT);
    ck_assert_int_eq(r.sampling.repeat_last_n, -1);
    ck_assert_int_eq(r.n_bias, 2);
    ck_assert(isinf(r.bias[0].bias) && r.bias[0].bias < 0 && r.bias[1].token == 6);
    ck_assert_int_eq(rq_check_vocab(&r, 7, &e), 0);
    ck_assert_int_eq(rq_check_vocab(&r, 3, &e), -EINVAL); /* id 3 in the last segment */
    ck_assert_str_eq(e.param, "prompt");
    rq_free(&r);
    /* several prompts (no number at the top level), n_cmpl each; a seed is kept */
    ck_assert_int_eq(parse(RQ_NATIVE, "{\"prompt\":[\"a\",[1,2],[3,\"b\"],"
                                      "{\"prompt_string\":\"c\"}],\"n_cmpl\":2,\"seed\":7,"
                                      "\"n_predict\":500}", &r, &e), 0);
    ck_assert_uint_eq(r.n_prompts, 4);
    ck_assert_int_eq(r.n, 2);
    ck_assert_str_eq(r.prompts[0].text, "a");
    ck_assert_uint_eq(r.prompts[1].n_ids, 2);
    ck_assert_uint_eq(r.prompts[2].n_segs, 2);
    ck_assert_str_eq(r.prompts[3].text, "c");
    ck_assert(r.sampling.has_seed && r.sampling.seed == 7);
    int mt = 0;
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 10, 64, &mt, &e), 0);
    ck_assert_int_eq(mt, 54); /* cut to the context, as llama-server stops there */
    rq_free(&r);
    /* n_predict 0: the prompt alone */
    assert_prompt_only(RQ_NATIVE, "{\"prompt\":\"a\",\"n_predict\":0}");
}
END_TEST

/* grammar, guided_grammar, guided_regex, guided_choice and structured_outputs' forms of
 * them: each sets a GBNF constraint (its text shown by /props); errors say where. */
START_TEST(test_grammar_fields)
{
    static const struct {
        int kind;
        const char *body, *text;
    } ok[] = {
        {RQ_NATIVE, "{\"prompt\":\"x\",\"grammar\":\"root ::= [ab]+\"}", "root ::= [ab]+"},
        {RQ_INFILL, "{\"input_prefix\":\"x\",\"input_suffix\":\"y\",\"grammar\":\"root ::= [ab]+\"}", "root ::= [ab]+"},
        {RQ_COMPLETION, "{\"prompt\":\"x\",\"guided_grammar\":\"root ::= \\\"a\\\"\"}",
         "root ::= \"a\""},
        {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guided_regex\":"
                  "\"^a\\\\d?$\"}", "root ::= [\\u0061] [0-9]?\n"},
        {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guided_choice\":"
                  "[\"yes\",\"n\\\"o\"]}", "root ::= \"yes\" | \"n\\x22o\"\n"},
        {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"regex\":\"a|b\"}}",
         "root ::= [\\u0061] | [\\u0062]\n"},
        {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"choice\":[\"a\"]}}",
         "root ::= \"a\"\n"},
        {RQ_COMPLETION, "{\"prompt\":\"x\",\"structured_outputs\":{\"grammar\":\"root ::= \\\"b\\\"\"}}",
         "root ::= \"b\""},
    };
    rq_t r;
    rq_err_t e;
    for (size_t i = 0; i < FD_ARRAY_LEN(ok); i++) {
        ck_assert_msg(parse(ok[i].kind, ok[i].body, &r, &e) == 0, "%s: %s", ok[i].body,
                      e.message);
        ck_assert_ptr_nonnull(r.grammar);
        ck_assert_ptr_eq(r.sampling.grammar, r.grammar);
        ck_assert_msg(r.grammar_text && strcmp(r.grammar_text, ok[i].text) == 0,
                      "%s: text [%s], want [%s]", ok[i].body,
                      r.grammar_text ? r.grammar_text : "(null)", ok[i].text);
        rq_free(&r);
    }
    /* errors name the place */
    ck_assert_int_eq(parse(RQ_NATIVE, "{\"prompt\":\"x\",\"grammar\":\"root ::= a\\nb ::= "
                           "\\\"(\"}", &r, &e), -EINVAL);
    ck_assert_str_eq(e.param, "grammar");
    ck_assert_msg(strstr(e.message, "line 2, column 7: unterminated string literal"), "%s",
                  e.message);
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"guided_regex\":\"ab(?<=x)\"}",
                           &r, &e), -EINVAL);
    ck_assert_str_eq(e.code, "unsupported_parameter");
    ck_assert_msg(strstr(e.message, "column 3: lookaround (lookbehind)"), "%s", e.message);
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"guided_regex\":\"a**\"}",
                           &r, &e), -EINVAL);
    ck_assert_msg(strstr(e.message, "column 3: multiple repeat"), "%s", e.message);
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"grammar\":\"root ::= x\","
                           "\"guided_json\":{\"type\":\"string\"}}", &r, &e), -EINVAL);
    ck_assert_msg(strstr(e.message, "both constrain the output"), "%s", e.message);
}
END_TEST

/* llama-server's n_probs: /infill's own (as /completion's); on the OpenAI endpoints the
 * logprobs it stands for when logprobs is not given. */
START_TEST(test_n_probs)
{
    static const struct {
        int kind;
        const char *fields;
        int logprobs, n_probs;
    } cases[] = {
        {RQ_COMPLETION, "\"n_probs\":4", 4, 0},
        {RQ_COMPLETION, "\"n_probs\":0", -1, 0},
        {RQ_COMPLETION, "\"n_probs\":4,\"logprobs\":1", 1, 0},
        {RQ_COMPLETION, "\"n_probs\":4,\"logprobs\":0", 0, 0},
        {RQ_CHAT, "\"n_probs\":2", 2, 0},
        {RQ_CHAT, "\"n_probs\":2,\"logprobs\":false", -1, 0},
        {RQ_CHAT, "\"n_probs\":2,\"logprobs\":true", 0, 0},
        {RQ_CHAT, "\"n_probs\":2,\"logprobs\":true,\"top_logprobs\":5", 5, 0},
        {RQ_CHAT, "\"n_probs\":0", -1, 0},
        {RQ_INFILL, "\"n_probs\":3", 3, 3},
        {RQ_INFILL, "\"n_probs\":0", -1, 0},
        {RQ_NATIVE, "\"n_probs\":20", 20, 20},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        char b[256];
        const char *head = cases[i].kind == RQ_CHAT ? "\"messages\":[{\"role\":\"user\","
                                                      "\"content\":\"x\"}]"
                           : cases[i].kind == RQ_INFILL ? "\"input_prefix\":\"a\","
                                                          "\"input_suffix\":\"b\""
                                                        : "\"prompt\":\"x\"";
        snprintf(b, sizeof b, "{%s,%s}", head, cases[i].fields);
        rq_t r;
        rq_err_t e;
        ck_assert_msg(parse(cases[i].kind, b, &r, &e) == 0, "%s: %s", b, e.message);
        ck_assert_msg(r.logprobs == cases[i].logprobs && r.n_probs == cases[i].n_probs &&
                      r.sampling.n_probs == cases[i].logprobs, "%s: logprobs %d, n_probs %d",
                      b, r.logprobs, r.n_probs);
        rq_free(&r);
    }
}
END_TEST

START_TEST(test_bad_bodies)
{
    const struct bad_case *c = &bad_cases[_i];
    rq_t r;
    rq_err_t e;
    memset(&e, 0, sizeof e);
    int rc = parse(c->kind, c->body, &r, &e);
    ck_assert_msg(rc == -EINVAL, "case %d (%s): rc %d", _i, c->body, rc);
    ck_assert_msg(e.status == c->status, "case %d (%s): status %d", _i, c->body, e.status);
    ck_assert_msg(strcmp(e.param, c->param) == 0, "case %d (%s): param '%s', expected '%s'", _i,
                  c->body, e.param, c->param);
    ck_assert_str_eq(e.type, "invalid_request_error");
    ck_assert(e.message[0] != 0);
}
END_TEST

/* An escaped backslash followed by "u0000" is text, not a NUL. */
START_TEST(test_nul_escape_text)
{
    rq_t r;
    rq_err_t e;
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"a\\\\u0000b\"}", &r, &e), 0);
    ck_assert_str_eq(r.prompts[0].text, "a\\u0000b");
    ck_assert_uint_eq(r.prompts[0].text_len, 8);
    rq_free(&r);
}
END_TEST

START_TEST(test_deep_nesting)
{
    /* cJSON's nesting limit turns a pathological body into a plain 400, not a crash. */
    size_t n = 5000;
    char *body = malloc(2 * n + 32);
    strcpy(body, "{\"prompt\":");
    size_t off = strlen(body);
    for (size_t i = 0; i < n; i++)
        body[off++] = '[';
    for (size_t i = 0; i < n; i++)
        body[off++] = ']';
    body[off++] = '}';
    rq_t r;
    rq_err_t e;
    ck_assert_int_eq(rq_parse(RQ_COMPLETION, body, off, &lim, &r, &e), -EINVAL);
    ck_assert_int_eq(e.status, 400);
    free(body);
}
END_TEST

START_TEST(test_prompt_length_check)
{
    rq_t r;
    rq_err_t e;
    int mt = 0;
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":100}", &r, &e), 0);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 10, 512, &mt, &e), 0);
    ck_assert_int_eq(mt, 100);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 500, 512, &mt, &e), -EINVAL);
    ck_assert_str_eq(e.param, "max_tokens");
    ck_assert_ptr_nonnull(strstr(e.message, "500"));
    ck_assert_ptr_nonnull(strstr(e.message, "512"));
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 512, 512, &mt, &e), -EINVAL);
    ck_assert_str_eq(e.param, "prompt");
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 0, 512, &mt, &e), -EINVAL);
    ck_assert_str_eq(e.param, "prompt");
    rq_free(&r);
    /* max_tokens 0 with echo: the prompt alone (lm-evaluation-harness), vLLM's
     * prompt_logprobs taken */
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":[1,2,3],\"max_tokens\":0,\"echo\":true,"
                                          "\"logprobs\":1,\"prompt_logprobs\":2}", &r, &e), 0);
    ck_assert_int_eq(r.max_tokens, RQ_PROMPT_ONLY);
    ck_assert_int_eq(r.prompt_logprobs, 2);
    ck_assert_int_eq(r.logprobs, 1);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 10, 512, &mt, &e), 0);
    ck_assert_int_eq(mt, 0);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\"}", &r, &e), 0);
    ck_assert_int_eq(r.prompt_logprobs, -1);
    rq_free(&r);
}
END_TEST

START_TEST(test_utf8)
{
    ck_assert(rq_utf8_valid("plain", 5));
    ck_assert(rq_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
    ck_assert(!rq_utf8_valid("\xc3", 1));             /* truncated */
    ck_assert(!rq_utf8_valid("\xc0\xaf", 2));         /* overlong */
    ck_assert(!rq_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    ck_assert(!rq_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    ck_assert(!rq_utf8_valid("\xf4\x90\x80\x80", 4)); /* above U+10FFFF */
    ck_assert(!rq_utf8_valid("\x80", 1));
}
END_TEST

/* llama-server's n_predict on the OpenAI endpoints: a count, or -1 for the rest of the
 * context; max_tokens wins when both are sent; the context errors name the field sent. */
START_TEST(test_n_predict)
{
    rq_t r;
    rq_err_t e;
    int mt = 0;
    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"n_predict\":-1}", &r, &e), 0);
    ck_assert_int_eq(r.max_tokens, RQ_TO_CONTEXT);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 20, 64, &mt, &e), 0);
    ck_assert_int_eq(mt, 44); /* not the completion default of 16 */
    rq_free(&r);

    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"n_predict\":7}", &r, &e), 0);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 20, 64, &mt, &e), 0);
    ck_assert_int_eq(mt, 7);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 60, 64, &mt, &e), -EINVAL);
    ck_assert_str_eq(e.param, "n_predict");
    ck_assert_str_eq(e.code, "context_length_exceeded");
    rq_free(&r);

    ck_assert_int_eq(parse(RQ_COMPLETION, "{\"prompt\":\"x\",\"max_tokens\":5,\"n_predict\":9}",
                           &r, &e), 0);
    ck_assert_int_eq(r.max_tokens, 5);
    ck_assert_str_eq(r.max_tokens_field, "max_tokens");
    rq_free(&r);

    ck_assert_int_eq(parse(RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                                    "\"n_predict\":3,\"top_n_sigma\":-1}", &r, &e), 0);
    ck_assert_int_eq(rq_resolve_max_tokens(&r, 20, 64, &mt, &e), 0);
    ck_assert_int_eq(mt, 3);
    rq_free(&r);

    static const char *const bad_bodies[] = {
        "{\"prompt\":\"x\",\"n_predict\":0}", "{\"prompt\":\"x\",\"n_predict\":-2}",
        "{\"prompt\":\"x\",\"n_predict\":\"5\"}", "{\"prompt\":\"x\",\"n_predict\":1.5}",
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(bad_bodies); i++) {
        ck_assert_msg(parse(RQ_COMPLETION, bad_bodies[i], &r, &e) != 0, "%s", bad_bodies[i]);
        ck_assert_int_eq(e.status, 400);
        ck_assert_str_eq(e.param, "n_predict");
    }
}
END_TEST

/* llama.cpp's samplers reach the engine's parameters on every generating endpoint, with
 * llama.cpp's defaults for what is not given. */
START_TEST(test_llama_samplers)
{
    rq_t r;
    rq_err_t e;
    static const struct { int kind; const char *head; } kinds[] = {
        {RQ_COMPLETION, "{\"prompt\":\"x\","},
        {RQ_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"},
        {RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\","},
        {RQ_NATIVE, "{\"prompt\":\"x\","},
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(kinds); k++) {
        char body[1024];
        snprintf(body, sizeof body, "%s\"typical_p\":0.9,\"dynatemp_range\":0.5,"
                 "\"dynatemp_exponent\":2,\"xtc_probability\":0.3,\"xtc_threshold\":0.2,"
                 "\"top_n_sigma\":1.5,\"dry_multiplier\":0.8,\"dry_base\":2,"
                 "\"dry_allowed_length\":3,\"dry_penalty_last_n\":128,"
                 "\"dry_sequence_breakers\":[\".\",\"?\"],\"mirostat\":2,"
                 "\"mirostat_tau\":4,\"mirostat_eta\":0.2,\"samplers\":[\"dry\",\"top_k\","
                 "\"typ_p\",\"temperature\"]}", kinds[k].head);
        ck_assert_msg(parse(kinds[k].kind, body, &r, &e) == 0, "%s: %s", body, e.message);
        const eng_sampling_t *s = &r.sampling;
        ck_assert_float_eq_tol(s->typical_p, 0.9f, 1e-6f);
        ck_assert_float_eq_tol(s->dynatemp_range, 0.5f, 1e-6f);
        ck_assert_float_eq_tol(s->dynatemp_exponent, 2.0f, 1e-6f);
        ck_assert_float_eq_tol(s->xtc_probability, 0.3f, 1e-6f);
        ck_assert_float_eq_tol(s->xtc_threshold, 0.2f, 1e-6f);
        ck_assert_float_eq_tol(s->top_n_sigma, 1.5f, 1e-6f);
        ck_assert_float_eq_tol(s->dry_multiplier, 0.8f, 1e-6f);
        ck_assert_float_eq_tol(s->dry_base, 2.0f, 1e-6f);
        ck_assert_int_eq(s->dry_allowed_length, 3);
        ck_assert_int_eq(s->dry_penalty_last_n, 128);
        ck_assert_int_eq(s->n_dry_breakers, 2);
        ck_assert_str_eq(s->dry_breakers[1], "?");
        ck_assert_int_eq(s->mirostat, 2);
        ck_assert_float_eq_tol(s->mirostat_tau, 4.0f, 1e-6f);
        ck_assert_float_eq_tol(s->mirostat_eta, 0.2f, 1e-6f);
        ck_assert_int_eq(s->n_order, 4);
        ck_assert_int_eq(s->order[0], SMP_DRY);
        ck_assert_int_eq(s->order[2], SMP_TYPICAL);
        ck_assert_int_eq(s->order[3], SMP_TEMPERATURE);
        char err[128];
        ck_assert_int_eq(smp_check_params(s, 100, err, sizeof err), 0);
        rq_free(&r);
        /* llama.cpp's defaults, every sampler off */
        snprintf(body, sizeof body, "%s\"seed\":1}", kinds[k].head);
        ck_assert_int_eq(parse(kinds[k].kind, body, &r, &e), 0);
        ck_assert_float_eq(r.sampling.typical_p, 1);
        ck_assert_float_eq(r.sampling.dry_multiplier, 0);
        ck_assert_float_eq_tol(r.sampling.dry_base, 1.75f, 1e-6f);
        ck_assert_int_eq(r.sampling.dry_allowed_length, 2);
        ck_assert_int_eq(r.sampling.dry_penalty_last_n, -1);
        ck_assert_float_eq_tol(r.sampling.xtc_threshold, 0.1f, 1e-6f);
        ck_assert_float_eq_tol(r.sampling.mirostat_tau, 5.0f, 1e-6f);
        ck_assert_float_eq_tol(r.sampling.mirostat_eta, 0.1f, 1e-6f);
        ck_assert_float_eq(r.sampling.dynatemp_exponent, 1);
        ck_assert_int_eq(r.sampling.n_order, 0);
        ck_assert(!r.sampling.post_probs);
        rq_free(&r);
    }
    /* the letters; 'i' (infill) and "infill" are skipped; top_n_sigma -1 is off;
     * typical_p 0 keeps one token (a tiny positive mass, not the engine's "off") */
    ck_assert_int_eq(parse(RQ_NATIVE, "{\"prompt\":\"x\",\"samplers\":\"edkyipmxt\","
                                      "\"top_n_sigma\":-1,\"typical_p\":0}", &r, &e), 0);
    static const uint8_t web[] = {SMP_PENALTIES, SMP_DRY, SMP_TOP_K, SMP_TYPICAL, SMP_TOP_P,
                                  SMP_MIN_P, SMP_XTC, SMP_TEMPERATURE};
    ck_assert_int_eq(r.sampling.n_order, 8);
    ck_assert_mem_eq(r.sampling.order, web, sizeof web);
    ck_assert_float_eq(r.sampling.top_n_sigma, 0);
    ck_assert(r.sampling.typical_p > 0 && r.sampling.typical_p < 1e-30f);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_INFILL, "{\"input_prefix\":\"\",\"input_suffix\":\"\","
                                      "\"samplers\":[\"top_k\",\"top_p\",\"infill\"]}", &r, &e), 0);
    ck_assert_int_eq(r.sampling.n_order, 2);
    rq_free(&r);
    /* post_sampling_probs: /completion's, and only with n_probs */
    ck_assert_int_eq(parse(RQ_NATIVE, "{\"prompt\":\"x\",\"post_sampling_probs\":true,"
                                      "\"n_probs\":3}", &r, &e), 0);
    ck_assert(r.post_sampling_probs && r.sampling.post_probs);
    rq_free(&r);
    ck_assert_int_eq(parse(RQ_NATIVE, "{\"prompt\":\"x\",\"post_sampling_probs\":true}", &r,
                           &e), 0);
    ck_assert(!r.sampling.post_probs);
    rq_free(&r);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("request");
    TCase *tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_completion_fields);
    tcase_add_test(tc, test_completion_defaults);
    tcase_add_test(tc, test_prompt_forms);
    tcase_add_test(tc, test_chat_fields);
    tcase_add_test(tc, test_tool_fields);
    tcase_add_test(tc, test_unsupported_fields);
    tcase_add_test(tc, test_tokenize_bodies);
    tcase_add_test(tc, test_infill_body);
    tcase_add_test(tc, test_grammar_fields);
    tcase_add_loop_test(tc, test_bad_bodies, 0, (int)FD_ARRAY_LEN(bad_cases));
    tcase_add_test(tc, test_deep_nesting);
    tcase_add_test(tc, test_nul_escape_text);
    tcase_add_test(tc, test_prompt_length_check);
    tcase_add_test(tc, test_utf8);
    tcase_add_test(tc, test_n_predict);
    tcase_add_test(tc, test_llama_samplers);
    tcase_add_test(tc, test_native_body);
    tcase_add_test(tc, test_n_probs);
    tcase_add_test(tc, test_embeddings_bodies);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
