/* test_toolcall.c: proves tool calls are read back out of generated text per family (Qwen
 * 2.5's <tool_call> blocks after prose, Llama 3.1's JSON object, Mistral Nemo's array,
 * DeepSeek R1's and V3.1's marker-delimited calls after prose, Mistral Small 3.2's
 * [TOOL_CALLS]name[ARGS]{...} with or without its control tokens, Granite's <|tool_call|>
 * array, Phi-4-mini's functools[...] after prose or its bare array) with
 * the arguments intact (escaped quotes, braces inside strings, unicode), that anything not
 * entirely well-formed calls to offered functions stays content, that parallel_tool_calls
 * false keeps one call, that ids have each family's shape, that the streaming hold-back
 * never releases a marker and never takes back what it released, and that the incremental
 * scan grows toward exactly the calls and argument texts of the whole parse.  llama-server's
 * generic JSON answer (a template of no known family): calls, parallel calls and responses
 * read whole and as they grow (a response's content decoded, escapes and surrogate pairs
 * included, never shrinking), anything malformed content, and its grammar (tools, parallel,
 * required, a named function) accepting exactly that shape with each function's arguments
 * held to its schema. */
#include <ctype.h>
#include <errno.h>

#include "common/fd.h"
#include "engine/grammar.h"
#include "server/chat.h"
#include "server/toolcall.h"
#include "tests/testutil.h"

static char *names[] = {"get_weather", "clock"};

/* DeepSeek's markers (U+FF5C, U+2581) */
#define DSM(x) "<\xef\xbd\x9ctool\xe2\x96\x81" x "\xef\xbd\x9c>"
#define CALLS_B DSM("calls\xe2\x96\x81" "begin")
#define CALLS_E DSM("calls\xe2\x96\x81" "end")
#define CALL_B DSM("call\xe2\x96\x81" "begin")
#define CALL_E DSM("call\xe2\x96\x81" "end")
#define SEP DSM("sep")
#define R1_CALL(name, args) CALL_B "function" SEP name "\n```json\n" args "\n```" CALL_E
#define V31_CALL(name, args) CALL_B name SEP args CALL_E

static int parse(int fam, const char *text, bool parallel, tc_result_t *r)
{
    return tc_parse(fam, text, strlen(text), names, 2, parallel, 42, r);
}

/* Each of the n texts in bad is no call for family fam: -ENOENT and an empty result. */
static void assert_no_calls(int fam, const char *const *bad, size_t n)
{
    tc_result_t r;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(parse(fam, bad[i], true, &r) == -ENOENT, "case %zu: %s", i, bad[i]);
        ck_assert_uint_eq(r.n_calls, 0);
        ck_assert_ptr_null(r.calls);
    }
}

START_TEST(test_qwen)
{
    tc_result_t r;
    const char *t = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                    "{\"city\": \"Z\\u00fcrich \\\"old\\\" {town}\", \"days\": 3}}\n"
                    "</tool_call>\n<tool_call>\n{\"name\": \"clock\", \"arguments\": {}}\n"
                    "</tool_call>";
    ck_assert_int_eq(parse(CHAT_QWEN, t, true, &r), 0);
    ck_assert_uint_eq(r.content_len, strlen("Let me check."));
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_str_eq(r.calls[0].name, "get_weather");
    /* the arguments as written: what a stream sends piece by piece */
    ck_assert_str_eq(r.calls[0].arguments,
                     "{\"city\": \"Z\\u00fcrich \\\"old\\\" {town}\", \"days\": 3}");
    ck_assert_str_eq(r.calls[1].name, "clock");
    ck_assert_str_eq(r.calls[1].arguments, "{}");
    ck_assert_uint_eq(strlen(r.calls[0].id), 29);
    ck_assert(strncmp(r.calls[0].id, "call_", 5) == 0);
    ck_assert_str_ne(r.calls[0].id, r.calls[1].id);
    tc_free(&r);

    ck_assert_int_eq(parse(CHAT_QWEN, t, false, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    ck_assert_str_eq(r.calls[0].name, "get_weather");
    tc_free(&r);

    /* no prose; the last block cut before its closing tag */
    ck_assert_int_eq(parse(CHAT_QWEN, "<tool_call>\n{\"name\": \"clock\", \"arguments\": "
                                      "{\"tz\": \"\xe6\x9d\xb1\xe4\xba\xac\"}}\n", true, &r), 0);
    ck_assert_uint_eq(r.content_len, 0);
    ck_assert_str_eq(r.calls[0].arguments, "{\"tz\": \"\xe6\x9d\xb1\xe4\xba\xac\"}");
    tc_free(&r);

    static const char *const malformed[] = {
        "just text",
        "<tool_call>\n{\"name\": \"clock\", \"arguments\": {}\n</tool_call>",     /* JSON cut */
        "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>",    /* not offered */
        "<tool_call>\n{\"name\": \"clock\"}\n</tool_call>",                       /* no args */
        "<tool_call>\n{\"name\": \"clock\", \"arguments\": \"{}\"}\n</tool_call>", /* a string */
        "<tool_call>\n{\"name\": 7, \"arguments\": {}}\n</tool_call>",
        "<tool_call>\n[{\"name\": \"clock\", \"arguments\": {}}]\n</tool_call>",
        "<tool_call>\n{\"name\": \"clock\", \"arguments\": {}}\n</tool_call> and more text",
        "<tool_call>\n{\"name\": \"clock\", \"arguments\": {}} trailing\n</tool_call>",
        "<tool_call>",
        "<tool_call>\n{\"name\": \"clock\", \"arguments\": {\"a\": 1,}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"clock\", \"arguments\": {\"a\": [1}]}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"clock\", \"arguments\": {}, \"x\": tru}\n</tool_call>",
        "<tool_call>\n{\"name\": \"cl\\u006fck\", \"arguments\": {}}\n</tool_call>",
    };
    assert_no_calls(CHAT_QWEN, malformed, FD_ARRAY_LEN(malformed));
}
END_TEST

START_TEST(test_llama)
{
    tc_result_t r;
    ck_assert_int_eq(parse(CHAT_LLAMA31, " {\"name\": \"get_weather\", \"parameters\": "
                                         "{\"city\": \"}{\\\\\"}} \n", true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    ck_assert_uint_eq(r.content_len, 0);
    ck_assert_str_eq(r.calls[0].arguments, "{\"city\": \"}{\\\\\"}");
    tc_free(&r);
    ck_assert_int_eq(parse(CHAT_LLAMA31, "<|python_tag|>{\"name\": \"clock\", \"arguments\": "
                                         "{\"n\": [1, 2.5, null, true]}}", true, &r), 0);
    ck_assert_str_eq(r.calls[0].arguments, "{\"n\": [1, 2.5, null, true]}");
    tc_free(&r);
    static const char *const malformed[] = {
        "The weather is {\"name\": \"clock\", \"parameters\": {}}",
        "{\"name\": \"clock\", \"parameters\": {}} and so on",
        "{\"name\": \"clock\", \"parameters\": {}}; {\"name\": \"clock\", \"parameters\": {}}",
        "{\"name\": \"clock\", \"parameters\": []}",
        "{\"name\": \"clocks\", \"parameters\": {}}",
        "{\"name\": \"clock\", \"parameters\": {}",
        "",
    };
    assert_no_calls(CHAT_LLAMA31, malformed, FD_ARRAY_LEN(malformed));
}
END_TEST

START_TEST(test_mistral)
{
    tc_result_t r;
    const char *t = "[TOOL_CALLS][{\"name\": \"clock\", \"arguments\": {}}, {\"name\": "
                    "\"get_weather\", \"arguments\": {\"city\": \"Oslo\"}, \"id\": \"abc\"}]";
    ck_assert_int_eq(parse(CHAT_MISTRAL, t, true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_str_eq(r.calls[1].arguments, "{\"city\": \"Oslo\"}");
    for (int k = 0; k < 2; k++) {
        ck_assert_uint_eq(strlen(r.calls[k].id), 9); /* what the template takes back */
        for (const char *p = r.calls[k].id; *p; p++)
            ck_assert(isalnum((unsigned char)*p));
    }
    tc_free(&r);
    /* the control token itself is not in the detokenized text */
    ck_assert_int_eq(parse(CHAT_MISTRAL, t + strlen("[TOOL_CALLS]"), false, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    tc_free(&r);
    static const char *const malformed[] = {
        "[]", "[1, 2]", "[TOOL_CALLS]{\"name\": \"clock\", \"arguments\": {}}",
        "[{\"name\": \"clock\", \"arguments\": {}}] ok?", "[{\"name\": \"clock\"}]",
        "Sure: [{\"name\": \"clock\", \"arguments\": {}}]",
    };
    assert_no_calls(CHAT_MISTRAL, malformed, FD_ARRAY_LEN(malformed));
    ck_assert_int_eq(parse(CHAT_GEMMA, t, true, &r), -ENOTSUP);
    ck_assert_int_eq(parse(CHAT_CHATML, "<tool_call>\n{}", true, &r), -ENOTSUP);
}
END_TEST

START_TEST(test_deepseek)
{
    tc_result_t r;
    /* R1: prose, then two calls as its template renders them */
    const char *t = "Let me check.\n\n" CALLS_B R1_CALL("get_weather", "{\"city\": \"}\\\"`\", "
                    "\"days\": 3}") "\n" R1_CALL("clock", "{}") CALLS_E;
    ck_assert_int_eq(parse(CHAT_DEEPSEEK_R1, t, true, &r), 0);
    ck_assert_uint_eq(r.content_len, strlen("Let me check."));
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_str_eq(r.calls[0].name, "get_weather");
    ck_assert_str_eq(r.calls[0].arguments, "{\"city\": \"}\\\"`\", \"days\": 3}");
    ck_assert_str_eq(r.calls[1].name, "clock");
    ck_assert_str_eq(r.calls[1].arguments, "{}");
    ck_assert_uint_eq(strlen(r.calls[0].id), 29);
    ck_assert_str_ne(r.calls[0].id, r.calls[1].id);
    tc_free(&r);
    ck_assert_int_eq(parse(CHAT_DEEPSEEK_R1, t, false, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    ck_assert_str_eq(r.calls[0].name, "get_weather");
    tc_free(&r);
    /* V3.1's form, no prose, stopped before the end markers; whitespace around the fence */
    ck_assert_int_eq(parse(CHAT_DEEPSEEK_R1, CALLS_B V31_CALL("clock", "{\"tz\": \"\xe6\x9d\xb1\"}")
                                             CALL_B "get_weather" SEP " {\"city\": \"Oslo\"} ",
                           true, &r), 0);
    ck_assert_uint_eq(r.content_len, 0);
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_str_eq(r.calls[0].name, "clock");
    ck_assert_str_eq(r.calls[0].arguments, "{\"tz\": \"\xe6\x9d\xb1\"}");
    ck_assert_str_eq(r.calls[1].arguments, "{\"city\": \"Oslo\"}");
    tc_free(&r);
    ck_assert_int_eq(parse(CHAT_DEEPSEEK_R1, CALLS_B CALL_B "function" SEP "clock\n```json\n"
                                             "{}  \n```\n" CALL_E "\n" CALLS_E "\n", true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    tc_free(&r);
    /* the distills' other spellings of calls-begin, and call-begin left out */
    static const char *const opens[] = {
        "<\xef\xbd\x9ctool_calls_begin\xef\xbd\x9c>", "<\xef\xbd\x9ctool calls begin\xef\xbd\x9c>",
        "<\xef\xbd\x9ctool\\_calls\\_begin\xef\xbd\x9c>", DSM("calls"),
    };
    char buf[256];
    for (size_t i = 0; i < FD_ARRAY_LEN(opens); i++) {
        snprintf(buf, sizeof buf, "Hm. %s" R1_CALL("clock", "{}") CALLS_E, opens[i]);
        ck_assert_msg(parse(CHAT_DEEPSEEK_R1, buf, true, &r) == 0, "%s", buf);
        ck_assert_uint_eq(r.content_len, 3);
        ck_assert_str_eq(r.calls[0].name, "clock");
        tc_free(&r);
        /* held back from the stream like the canonical marker */
        ck_assert_uint_eq(tc_stream_safe(CHAT_DEEPSEEK_R1, buf, strlen(buf)), 3);
    }
    ck_assert_int_eq(parse(CHAT_DEEPSEEK_R1, CALLS_B "function" SEP "clock\n```json\n{}\n```"
                                             CALL_E CALLS_E, true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    tc_free(&r);
    static const char *const malformed[] = {
        "just text",
        CALLS_B,
        CALLS_B CALLS_E,
        CALLS_B "fun" SEP "clock\n```json\n{}\n```" CALL_E CALLS_E,
        CALLS_B R1_CALL("rm_rf", "{}") CALLS_E,                          /* not offered */
        CALLS_B R1_CALL("clock", "[]") CALLS_E,                          /* not an object */
        CALLS_B R1_CALL("clock", "{\"a\": 1,}") CALLS_E,                 /* not JSON */
        CALLS_B R1_CALL("clock", "{\"a\": ") CALLS_E,                    /* cut */
        CALLS_B R1_CALL("clock", "{}") CALLS_E " and more text",
        CALLS_B CALL_B "function" SEP "clock\n{}\n" CALL_E CALLS_E,      /* no fence */
        CALLS_B CALL_B "function" SEP "clock\n```json\n{}" CALL_E CALLS_E, /* fence unclosed */
        CALLS_B CALL_B "function" SEP "\n```json\n{}\n```" CALL_E CALLS_E, /* no name */
        CALLS_B CALL_B "clock {}" CALL_E CALLS_E,                          /* no separator */
        CALLS_B CALL_B "cl ock" SEP "{}" CALL_E CALLS_E,
        CALLS_B R1_CALL("clock", "{}") " x " CALLS_E,
        CALLS_B "text" R1_CALL("clock", "{}") CALLS_E,
        CALL_B "function" SEP "clock\n```json\n{}\n```" CALL_E,      /* no calls-begin */
        CALLS_B R1_CALL("clock", "{}") R1_CALL("clock", "{}") CALLS_E "\x01",
    };
    assert_no_calls(CHAT_DEEPSEEK_R1, malformed, FD_ARRAY_LEN(malformed));
}
END_TEST

START_TEST(test_mistral3)
{
    tc_result_t r;
    /* the markers rendered, two calls, a call id before the arguments */
    const char *t = "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"}[ARGS]{\\\"\"}"
                    "[TOOL_CALLS]clock[CALL_ID]a1B2c3D4e[ARGS]{}";
    ck_assert_int_eq(parse(CHAT_MISTRAL3, t, true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_uint_eq(r.content_len, 0);
    ck_assert_str_eq(r.calls[0].name, "get_weather");
    ck_assert_str_eq(r.calls[0].arguments, "{\"city\": \"}[ARGS]{\\\"\"}");
    ck_assert_str_eq(r.calls[1].name, "clock");
    ck_assert_str_eq(r.calls[1].arguments, "{}");
    ck_assert_uint_eq(strlen(r.calls[0].id), 9);
    tc_free(&r);
    ck_assert_int_eq(parse(CHAT_MISTRAL3, t, false, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    tc_free(&r);
    /* the control tokens left out by the detokenizer: name{...}name{...} */
    ck_assert_int_eq(parse(CHAT_MISTRAL3, " get_weather{\"city\": \"Oslo\"}\nclock{} ", true,
                           &r), 0);
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_str_eq(r.calls[0].arguments, "{\"city\": \"Oslo\"}");
    ck_assert_str_eq(r.calls[1].name, "clock");
    tc_free(&r);
    /* prose, then a rendered marker */
    ck_assert_int_eq(parse(CHAT_MISTRAL3, "Let me check. [TOOL_CALLS]clock[ARGS]{\"a\": [1]}",
                           true, &r), 0);
    ck_assert_uint_eq(r.content_len, strlen("Let me check."));
    ck_assert_str_eq(r.calls[0].arguments, "{\"a\": [1]}");
    tc_free(&r);
    static const char *const malformed[] = {
        "just text",
        "clock",
        "[TOOL_CALLS]",
        "[TOOL_CALLS]clock[ARGS]",
        "[TOOL_CALLS]rm_rf[ARGS]{}",
        "[TOOL_CALLS]clock[ARGS][]",
        "[TOOL_CALLS]clock[ARGS]{\"a\": 1,}",
        "[TOOL_CALLS]clock[ARGS]{\"a\": ",
        "[TOOL_CALLS]clock[ARGS]{} and more",
        "[TOOL_CALLS]clock[ARG]{}",
        "[TOOL_CALLS]clock[CALL_ID]x-y[ARGS]{}",
        "[TOOL_CALLS] [ARGS]{}",
        "clock{}get_weather",
        "Sure{\"a\": 1}",
        "Hello, clock{}",
    };
    assert_no_calls(CHAT_MISTRAL3, malformed, FD_ARRAY_LEN(malformed));
}
END_TEST

START_TEST(test_granite)
{
    tc_result_t r;
    const char *t = "<|tool_call|>[{\"name\": \"clock\", \"arguments\": {}}, {\"name\": "
                    "\"get_weather\", \"arguments\": {\"city\": \"]}\"}}]";
    ck_assert_int_eq(parse(CHAT_GRANITE, t, true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_str_eq(r.calls[1].arguments, "{\"city\": \"]}\"}");
    ck_assert_uint_eq(strlen(r.calls[0].id), 29);
    tc_free(&r);
    /* the tag a control token the text leaves out */
    ck_assert_int_eq(parse(CHAT_GRANITE, t + strlen("<|tool_call|>"), false, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    tc_free(&r);
    static const char *const malformed[] = {
        "[]", "<|tool_call|>", "<|tool_call|>{\"name\": \"clock\", \"arguments\": {}}",
        "<|tool_call|>[{\"name\": \"clock\", \"arguments\": {}}] ok?",
        "Sure: <|tool_call|>[{\"name\": \"clock\", \"arguments\": {}}]",
        "[TOOL_CALLS][{\"name\": \"clock\", \"arguments\": {}}]",
    };
    assert_no_calls(CHAT_GRANITE, malformed, FD_ARRAY_LEN(malformed));
}
END_TEST

/* Phi-4-mini: "functools[...]" after optional text, or the array alone (its <|tool_call|>
 * control token left out, or written). */
START_TEST(test_phi4mini)
{
    tc_result_t r;
    const char *t = "functools[{\"name\": \"clock\", \"arguments\": {}}, {\"name\": "
                    "\"get_weather\", \"arguments\": {\"city\": \"]}functools[\"}}]\n";
    ck_assert_int_eq(parse(CHAT_PHI4MINI, t, true, &r), 0);
    ck_assert_uint_eq(r.content_len, 0);
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_str_eq(r.calls[0].name, "clock");
    ck_assert_str_eq(r.calls[1].arguments, "{\"city\": \"]}functools[\"}");
    ck_assert_uint_eq(strlen(r.calls[0].id), 29);
    ck_assert_str_ne(r.calls[0].id, r.calls[1].id);
    tc_free(&r);
    ck_assert_int_eq(parse(CHAT_PHI4MINI, t, false, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    tc_free(&r);
    /* text before the call is content, less the whitespace before it */
    const char *p = "Let me look that up.\n functools[{\"name\": \"get_weather\", "
                    "\"arguments\": {\"city\": \"Lima\"}}]";
    ck_assert_int_eq(parse(CHAT_PHI4MINI, p, true, &r), 0);
    ck_assert_uint_eq(r.content_len, strlen("Let me look that up."));
    ck_assert_uint_eq(r.n_calls, 1);
    ck_assert_str_eq(r.calls[0].arguments, "{\"city\": \"Lima\"}");
    tc_free(&r);
    /* the array alone, with or without the control token's text */
    ck_assert_int_eq(parse(CHAT_PHI4MINI, t + strlen("functools"), true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 2);
    tc_free(&r);
    ck_assert_int_eq(parse(CHAT_PHI4MINI, "<|tool_call|> [{\"name\": \"clock\", \"arguments\": "
                                          "{}}]", true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    ck_assert_uint_eq(r.content_len, 0);
    tc_free(&r);
    static const char *const malformed[] = {
        "", "functools[]", "functools", "functools[{\"name\": \"clock\", \"arguments\": {}}",
        "functools[{\"name\": \"clock\", \"arguments\": {}}] and more",
        "functools[{\"name\": \"nope\", \"arguments\": {}}]",
        "functools[{\"name\": \"clock\", \"arguments\": []}]",
        "functools[{\"name\": \"clock\"}]", "functools{\"name\": \"clock\", \"arguments\": {}}",
        "functools [{\"name\": \"clock\", \"arguments\": {}}]",
        "import functools\nfunctools.reduce(f, [1, 2])", "[1, 2]",
        "[{\"a\": 1}]", "Sure: [{\"name\": \"clock\", \"arguments\": {}}]",
        "<|tool_call|>", "[TOOL_CALLS][{\"name\": \"clock\", \"arguments\": {}}]",
    };
    assert_no_calls(CHAT_PHI4MINI, malformed, FD_ARRAY_LEN(malformed));
}
END_TEST

/* gpt-oss: the call messages as the harmony splitter passes them on (reasoning.h), after the
 * final/commentary text, or after chat_tool_prefill's opening with the model's own header. */
#define GM "<|channel|>commentary to=functions."
START_TEST(test_gptoss)
{
    tc_result_t r;
    const char *t = "Let me check. \n" GM "get_weather <|constrain|>json<|message|>{\"city\": "
                    "\"<|end|>}\"}" GM "clock <|constrain|>json<|message|> {} \n";
    ck_assert_int_eq(parse(CHAT_GPTOSS, t, true, &r), 0);
    ck_assert_uint_eq(r.content_len, strlen("Let me check."));
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_str_eq(r.calls[0].name, "get_weather");
    ck_assert_str_eq(r.calls[0].arguments, "{\"city\": \"<|end|>}\"}");
    ck_assert_str_eq(r.calls[1].name, "clock");
    ck_assert_str_eq(r.calls[1].arguments, "{}");
    tc_free(&r);
    ck_assert_int_eq(parse(CHAT_GPTOSS, t, false, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    tc_free(&r);
    /* a forced call's model writes its own header after the prefill: any type, or none */
    ck_assert_int_eq(parse(CHAT_GPTOSS, GM "clock json<|message|>{\"a\": [1]}", true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    ck_assert_uint_eq(r.content_len, 0);
    tc_free(&r);
    ck_assert_int_eq(parse(CHAT_GPTOSS, GM "clock<|message|>{}", true, &r), 0);
    tc_free(&r);
    /* no call: content as it is (llama-server drops a call whose arguments do not parse and
     * takes any name; fusiond returns the text, as for its other families) */
    static const char *const malformed[] = {
        "", "Just text.", GM, GM "clock", GM "clock <|constrain|>json",
        GM "clock <|constrain|>json<|message|>", GM "clock <|constrain|>json<|message|>{",
        GM "clock <|constrain|>json<|message|>{\"a\": }",
        GM "clock <|constrain|>json<|message|>[1]", GM "nope <|constrain|>json<|message|>{}",
        GM "clock <|constrain|>json<|message|>{} trailing", GM "<|message|>{}",
        GM "clock <|constrain|>json!<|message|>{}", GM "clock <|end|><|message|>{}",
    };
    assert_no_calls(CHAT_GPTOSS, malformed, FD_ARRAY_LEN(malformed));
}
END_TEST

/* tc_scan over every prefix of a streamed output: a call appears once its object begins, its
 * name once complete, its arguments grow as the text does and end as tc_parse's. */
START_TEST(test_scan)
{
    static const struct {
        int fam;
        const char *text;
    } cases[] = {
        {CHAT_QWEN, "Two.\n<tool_call>\n{\"name\": \"clock\", \"arguments\": {}}\n</tool_call>\n"
                    "<tool_call>\n{\"arguments\": {\"city\": \"O\\\"}{slo\", \"n\": [1, {\"a\": 2}]}, "
                    "\"name\": \"get_weather\"}\n</tool_call>"},
        {CHAT_QWEN3, "<tool_call>\n{\"name\": \"clock\", \"arguments\": {\"a\": [1]}}\n"
                     "</tool_call>"},
        {CHAT_LLAMA31, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"\xc3\xbc\", \"d\": 3}}"},
        {CHAT_MISTRAL, "[{\"name\": \"clock\", \"arguments\": {\"t\": -1.5e3}}, {\"name\": "
                       "\"get_weather\", \"arguments\": {\"city\": \"Rome\"}}]"},
        {CHAT_DEEPSEEK_R1, "Two.\n" CALLS_B R1_CALL("clock", "{\"t\": [1, {\"a\": \"}\"}]}") "\n"
                           R1_CALL("get_weather", "{\"city\": \"O\\\"slo\"}") CALLS_E},
        {CHAT_MISTRAL3, "[TOOL_CALLS]clock[ARGS]{\"t\": [1, {\"a\": \"}[\"}]}[TOOL_CALLS]get_weather"
                        "[CALL_ID]abcdefghi[ARGS] {\"city\": \"O\\\"slo\"}"},
        {CHAT_MISTRAL3, "get_weather{\"city\": \"\xc3\xbc\"}clock{}"},
        {CHAT_MISTRAL3, "Two. [TOOL_CALLS]clock[ARGS]{}"},
        {CHAT_PHI4MINI, "Two. functools[{\"name\": \"clock\", \"arguments\": {\"t\": [1]}}, "
                        "{\"arguments\": {\"city\": \"O\\\"}]slo\"}, \"name\": \"get_weather\"}]"},
        {CHAT_PHI4MINI, "[{\"name\": \"clock\", \"arguments\": {\"\xc3\xbc\": 1}}]"},
        {CHAT_GRANITE, "<|tool_call|>[{\"name\": \"clock\", \"arguments\": {\"t\": [1]}}, "
                       "{\"arguments\": {\"city\": \"Rome\"}, \"name\": \"get_weather\"}]"},
        {CHAT_DEEPSEEK_R1, "<\xef\xbd\x9ctool_calls_begin\xef\xbd\x9c>function" SEP "clock\n```json\n"
                           "{\"a\": 1}\n```" CALL_E CALLS_E},
        {CHAT_DEEPSEEK_R1, CALLS_B V31_CALL("get_weather", "{\"city\": \"\xc3\xbc\", \"d\": 3}")
                           V31_CALL("clock", "{}") CALLS_E},
        {CHAT_GPTOSS, "Two. " GM "clock <|constrain|>json<|message|>{\"t\": [1, {\"a\": \"}\"}]}"
                      GM "get_weather json<|message|>{\"city\": \"O\\\"slo\"}"},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        const char *t = cases[i].text;
        size_t len = strlen(t);
        tc_result_t whole;
        ck_assert_int_eq(parse(cases[i].fam, t, true, &whole), 0);
        tc_span_t prev[4];
        size_t n_prev = 0;
        for (size_t n = 0; n <= len; n++) {
            tc_span_t sp[4];
            size_t ns = 0;
            ck_assert_msg(tc_scan(cases[i].fam, t, n, sp, 4, &ns) == 0, "case %zu at %zu", i, n);
            ck_assert(ns >= n_prev && ns <= whole.n_calls);
            for (size_t k = 0; k < n_prev; k++) {
                ck_assert(sp[k].name_len >= prev[k].name_len || !prev[k].name_len);
                ck_assert(!prev[k].name_done || sp[k].name_done);
                ck_assert(sp[k].args_len >= prev[k].args_len);
                ck_assert(!prev[k].args_started || sp[k].args_off == prev[k].args_off);
                /* what could have been streamed is a prefix of the final arguments */
                if (sp[k].args_started && k < whole.n_calls)
                    ck_assert(strncmp(t + sp[k].args_off, whole.calls[k].arguments,
                                      sp[k].args_len) == 0);
            }
            memcpy(prev, sp, sizeof sp);
            n_prev = ns;
        }
        ck_assert_uint_eq(n_prev, whole.n_calls);
        for (size_t k = 0; k < whole.n_calls; k++) {
            ck_assert(prev[k].name_done && prev[k].args_done);
            ck_assert_uint_eq(prev[k].args_len, strlen(whole.calls[k].arguments));
            ck_assert(strncmp(t + prev[k].name_off, whole.calls[k].name, prev[k].name_len) == 0);
        }
        tc_free(&whole);
    }
    /* once the text cannot be calls, the scan says so */
    tc_span_t sp[4];
    size_t ns;
    ck_assert_int_eq(tc_scan(CHAT_LLAMA31, "{\"name\": \"clock\"} no", 20, sp, 4, &ns), -ENOENT);
    ck_assert_uint_eq(ns, 1);
    ck_assert_int_eq(tc_scan(CHAT_QWEN, "hi <tool_call> [", 16, sp, 4, &ns), -ENOENT);
    ck_assert_int_eq(tc_scan(CHAT_QWEN, "plain text", 10, sp, 4, &ns), 0);
    ck_assert_uint_eq(ns, 0);
    ck_assert_int_eq(tc_scan(CHAT_GEMMA, "x", 1, sp, 4, &ns), -ENOTSUP);
    const char *bad = CALLS_B CALL_B "function" SEP "clock\n{";
    ck_assert_int_eq(tc_scan(CHAT_DEEPSEEK_R1, bad, strlen(bad), sp, 4, &ns), -ENOENT);
    ck_assert_uint_eq(ns, 1);
    ck_assert(sp[0].name_done && !sp[0].args_started);
}
END_TEST

START_TEST(test_generic)
{
    tc_result_t r;
    const char *one = " {\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": "
                      "\"O\\\"}slo\", \"d\": [1, {\"a\": 2}]}}}\n";
    ck_assert_int_eq(parse(TC_GENERIC, one, true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    ck_assert_uint_eq(r.content_len, 0);
    ck_assert_str_eq(r.calls[0].name, "get_weather");
    ck_assert_str_eq(r.calls[0].arguments, "{\"city\": \"O\\\"}slo\", \"d\": [1, {\"a\": 2}]}");
    ck_assert_uint_eq(strlen(r.calls[0].id), 29);
    tc_free(&r);
    const char *two = "{\"tool_calls\": [{\"name\": \"clock\", \"arguments\": {}, \"id\": "
                      "\"call_1___\"}, {\"id\": \"x2345\", \"arguments\": {\"city\": \"Rome\"}, "
                      "\"name\": \"get_weather\"}]}";
    ck_assert_int_eq(parse(TC_GENERIC, two, true, &r), 0);
    ck_assert_uint_eq(r.n_calls, 2);
    ck_assert_str_eq(r.calls[0].name, "clock");
    ck_assert_str_eq(r.calls[1].arguments, "{\"city\": \"Rome\"}");
    /* the model's own ids are not the call ids */
    ck_assert(strncmp(r.calls[0].id, "call_", 5) == 0 && strlen(r.calls[0].id) == 29);
    ck_assert_str_ne(r.calls[0].id, r.calls[1].id);
    tc_free(&r);
    ck_assert_int_eq(parse(TC_GENERIC, two, false, &r), 0);
    ck_assert_uint_eq(r.n_calls, 1);
    tc_free(&r);
    static const char *const malformed[] = {
        "{\"response\": \"hi\"}",
        "hello",
        "",
        "{\"tool_call\": {\"name\": \"clock\", \"arguments\": {}}",          /* cut */
        "{\"tool_call\": {\"name\": \"clock\", \"arguments\": {}}} more",    /* trailing */
        "{\"tool_call\": {\"name\": \"rm\", \"arguments\": {}}}",            /* not offered */
        "{\"tool_call\": {\"name\": \"clock\", \"arguments\": \"{}\"}}",      /* a string */
        "{\"tool_call\": {\"name\": \"clock\"}}",
        "{\"tool_call\": [{\"name\": \"clock\", \"arguments\": {}}]}",
        "{\"tool_calls\": {\"name\": \"clock\", \"arguments\": {}}}",
        "{\"tool_calls\": []}",
        "{\"tool_calls\": [{\"name\": \"clock\", \"arguments\": {}},]}",
        "{\"tool_call\": {\"name\": \"clock\", \"arguments\": {\"a\": tru}}}",
        "{\"tool_call\": {\"name\": \"clock\", \"arguments\": {}}, \"response\": \"x\"}",
        "{\"call\": {\"name\": \"clock\", \"arguments\": {}}}",
        "[{\"name\": \"clock\", \"arguments\": {}}]",
    };
    assert_no_calls(TC_GENERIC, malformed, FD_ARRAY_LEN(malformed));

    /* the response's content, whole and as it grows */
    const char *resp = "{ \"response\" : \"H\\u00e9 \\\"q\\\"\\n\\ud83d\\ude00 \xc3\xbc\\/\" }";
    const char *want = "H\xc3\xa9 \"q\"\n\xf0\x9f\x98\x80 \xc3\xbc/";
    char *c;
    size_t n, prev = 0;
    ck_assert_int_eq(tc_generic_content(resp, strlen(resp), &c, &n), 0);
    ck_assert_str_eq(c, want);
    ck_assert_uint_eq(n, strlen(want));
    free(c);
    for (size_t k = 0; k <= strlen(resp); k++) {
        int rc = tc_generic_content(resp, k, &c, &n);
        if (k < strlen("{ \"response\" : \"")) {
            ck_assert_int_eq(rc, -ENOENT);
            continue;
        }
        ck_assert_msg(rc == 0, "prefix %zu", k);
        ck_assert_msg(n >= prev && strncmp(c, want, n) == 0, "prefix %zu: %s", k, c);
        prev = n;
        free(c);
    }
    ck_assert_uint_eq(prev, strlen(want));
    static const char *const not_content[] = {
        "{\"response\": \"a\\x\"}", "{\"response\": \"a\"} b", "{\"response\": 5}",
        "{\"response\": \"\\udc00\"}", "{\"response\": \"\\ud800\\u0041\"}",
        "{\"response\": \"a\nb\"}", "{\"response\": \"\\u0000\"}", "{\"respond\": \"a\"}",
        "{\"tool_call\": {}}", "plain", "{\"response\": \"a\", \"x\": 1}",
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(not_content); k++) {
        ck_assert_msg(tc_generic_content(not_content[k], strlen(not_content[k]), &c, &n) ==
                      -ENOENT, "%s", not_content[k]);
        ck_assert_ptr_null(c);
    }
    /* streamed: no raw text is released; the scan grows toward the whole parse */
    ck_assert_uint_eq(tc_stream_safe(TC_GENERIC, one, strlen(one)), 0);
    for (int w = 0; w < 2; w++) {
        const char *t = w ? two : one;
        tc_result_t whole;
        ck_assert_int_eq(parse(TC_GENERIC, t, true, &whole), 0);
        size_t last = 0;
        for (size_t k = 0; k <= strlen(t); k++) {
            tc_span_t sp[4];
            size_t ns;
            ck_assert_msg(tc_scan(TC_GENERIC, t, k, sp, 4, &ns) == 0, "prefix %zu", k);
            ck_assert(ns >= last && ns <= whole.n_calls);
            for (size_t q = 0; q < ns; q++)
                if (sp[q].args_started)
                    ck_assert(strncmp(t + sp[q].args_off, whole.calls[q].arguments,
                                      sp[q].args_len) == 0);
            last = ns;
        }
        ck_assert_uint_eq(last, whole.n_calls);
        tc_free(&whole);
    }
}
END_TEST

/* Runs text through the spec: 1 a complete document, 0 a valid prefix, -1 refused. */
static int gr_run(const gr_spec_t *g, const char *text)
{
    gr_state_t st;
    gr_start(g, &st);
    if (gr_feed_bytes(g, &st, text, strlen(text)) < 0)
        return -1;
    return gr_accepting(g, &st) ? 1 : 0;
}

START_TEST(test_generic_grammar)
{
    const char *tools =
        "[{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"parameters\": "
        "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}, \"unit\": "
        "{\"enum\": [\"c\", \"f\"]}}, \"required\": [\"city\"]}}}, {\"type\": \"function\", "
        "\"function\": {\"name\": \"clock\"}}, {\"type\": \"function\", \"function\": {\"name\": "
        "\"odd\", \"parameters\": {\"type\": \"object\", \"properties\": {\"p\": {\"type\": "
        "\"string\", \"pattern\": \"^a\"}}}}}]";
    gr_spec_t *g;
    char err[160];
    ck_assert_int_eq(tc_generic_grammar(tools, false, false, NULL, &g, err, sizeof err), 0);
    static const char *const good[] = {
        "{\"response\": \"hi \\\"there\\\"\"}",
        "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}}",
        "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"O\", "
        "\"unit\": \"f\"}}}",
        "{\"tool_call\": {\"name\": \"clock\", \"arguments\": {\"anything\": [1, null]}}}",
        /* a schema outside the subset: any object */
        "{\"tool_call\": {\"name\": \"odd\", \"arguments\": {\"p\": 5}}}",
    };
    static const char *const bad[] = {
        "{}", "{\"response\": 5}", "[]", "\"x\"",
        "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {}}}",
        "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"O\", "
        "\"unit\": \"k\"}}}",
        "{\"tool_call\": {\"name\": \"nope\", \"arguments\": {}}}",
        "{\"tool_call\": {\"arguments\": {}, \"name\": \"clock\"}}",
        "{\"tool_calls\": [{\"name\": \"clock\", \"arguments\": {}}]}",
        "{\"tool_call\": {\"name\": \"clock\", \"arguments\": {}}, \"response\": \"x\"}",
        "{\"tool_call\": {\"name\": \"clock\", \"arguments\": {}, \"id\": \"abcd\"}}",
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(good); k++) {
        ck_assert_msg(gr_run(g, good[k]) == 1, "refused %s", good[k]);
        /* and what the grammar lets through, the parser reads */
        tc_result_t r;
        char *c;
        size_t n;
        if (parse(TC_GENERIC, good[k], true, &r) == 0) {
            tc_free(&r);
        } else if (strstr(good[k], "get_weather") || strstr(good[k], "clock")) {
            ck_abort_msg("not parsed: %s", good[k]);
        }
        if (tc_generic_content(good[k], strlen(good[k]), &c, &n) == 0)
            free(c);
    }
    for (size_t k = 0; k < FD_ARRAY_LEN(bad); k++)
        ck_assert_msg(gr_run(g, bad[k]) == -1, "accepted %s", bad[k]);
    gr_spec_unref(g);

    /* parallel and required: only {"tool_calls": [...]} with ids, at least one call */
    ck_assert_int_eq(tc_generic_grammar(tools, true, true, NULL, &g, err, sizeof err), 0);
    ck_assert_int_eq(gr_run(g, "{\"tool_calls\": [{\"name\": \"clock\", \"arguments\": {}, "
                               "\"id\": \"a1\"}, {\"name\": \"get_weather\", \"arguments\": "
                               "{\"city\": \"x\"}, \"id\": \"a2\"}]}"), 1);
    ck_assert_int_eq(gr_run(g, "{\"tool_calls\": [{\"name\": \"clock\", \"arguments\": {}}]}"),
                     -1);
    ck_assert_int_eq(gr_run(g, "{\"tool_calls\": []}"), -1);
    ck_assert_int_eq(gr_run(g, "{\"response\": \"x\"}"), -1);
    gr_spec_unref(g);

    /* a named function: its calls only */
    ck_assert_int_eq(tc_generic_grammar(tools, false, true, "clock", &g, err, sizeof err), 0);
    ck_assert_int_eq(gr_run(g, "{\"tool_call\": {\"name\": \"clock\", \"arguments\": {}}}"), 1);
    ck_assert_int_eq(gr_run(g, "{\"tool_call\": {\"name\": \"get_weather\""), -1);
    gr_spec_unref(g);

    ck_assert_int_eq(tc_generic_grammar("{}", false, false, NULL, &g, err, sizeof err), -EINVAL);
    ck_assert_int_eq(tc_generic_grammar("[]", false, false, NULL, &g, err, sizeof err), -EINVAL);
    ck_assert_int_eq(tc_generic_grammar(tools, false, true, "zz", &g, err, sizeof err), -EINVAL);
    ck_assert_ptr_null(g);
}
END_TEST

/* Every prefix of each text: safe never exceeds the prefix, never shrinks as text grows, and
 * what it releases never contains the start of a call. */
START_TEST(test_stream_safe)
{
    static const struct {
        int fam;
        const char *text;
        size_t content; /* bytes released once all of it is there */
    } cases[] = {
        {CHAT_QWEN, "Hi <tool! <tool_call>\n{\"name\": \"clock\", \"arguments\": {}}", 9},
        {CHAT_QWEN, "no call at all, <tool_cal", 15}, /* the end is held until it ends */
        {CHAT_QWEN, "spaces \n \t", 6},
        {CHAT_QWEN, "<tool_call>", 0},
        {CHAT_QWEN3, "Hi <tool! <tool_call>\n{\"name\": \"clock\", \"arguments\": {}}", 9},
        {CHAT_QWEN3, "no call, <tool_cal", 8},
        {CHAT_LLAMA31, "  {\"name\": \"clock\", \"parameters\": {}}", 0},
        {CHAT_LLAMA31, "<|python_tag|>{\"name\": \"clock\"", 0},
        {CHAT_LLAMA31, "<|pyt", 0},
        {CHAT_LLAMA31, "Sunny {today}", 13},
        {CHAT_MISTRAL, "[TOOL_CALLS][{\"name\": \"clock\"}]", 0},
        {CHAT_MISTRAL, " [ {\"name\"", 0},
        {CHAT_MISTRAL, "[1, 2, 3]", 9},
        {CHAT_MISTRAL, "[TOOLS are] fine", 16},
        {CHAT_DEEPSEEK_R1, "Hi <\xef\xbd\x9ctool! \n" CALLS_B R1_CALL("clock", "{}"), 12},
        {CHAT_DEEPSEEK_R1, "no call, <\xef\xbd\x9ctool\xe2\x96\x81" "calls", 8},
        {CHAT_DEEPSEEK_R1, CALLS_B, 0},
        {CHAT_DEEPSEEK_R1, "plain", 5},
        {CHAT_DEEPSEEK_R1, "a <\xef\xbd\x9ctool_calls_beg", 1},
        {CHAT_DEEPSEEK_R1, "b <\xef\xbd\x9ctool calls begin\xef\xbd\x9c> x", 1},
        {CHAT_MISTRAL3, "[TOOL_CALLS]clock[ARGS]{}", 0},
        {CHAT_MISTRAL3, "clock{\"a\": 1}", 0},
        {CHAT_MISTRAL3, " clock", 0},
        {CHAT_MISTRAL3, "Hello there [TOOL_CALLS]clock[ARGS]{}", 11},
        {CHAT_MISTRAL3, "Hello there [TOOL_CA", 11},
        {CHAT_MISTRAL3, "[1, 2]", 6},
        {CHAT_MISTRAL3, "Sure{x} y", 0},
        {CHAT_GRANITE, "<|tool_call|>[{\"name\": \"clock\"", 0},
        {CHAT_GRANITE, "<|tool_c", 0},
        {CHAT_GRANITE, " [{", 0},
        {CHAT_GRANITE, "Sunny [1]", 9},
        {CHAT_PHI4MINI, "Sure. functools[{\"name\": \"clock\"", 5},
        {CHAT_PHI4MINI, "Sure. functoo", 5},
        {CHAT_PHI4MINI, "import functools", 6},
        {CHAT_PHI4MINI, "functools.reduce", 16},
        {CHAT_PHI4MINI, " [{", 0},
        {CHAT_PHI4MINI, "<|tool_c", 0},
        {CHAT_PHI4MINI, "[1] is a list", 13},
        {CHAT_PHI4MINI, "  ", 0},
        {CHAT_GPTOSS, "Sure. " GM "clock <|constrain|>json<|message|>{}", 5},
        {CHAT_GPTOSS, "Sure. <|channel|>comm", 5},
        {CHAT_GPTOSS, "a <|channel|>final", 18},
        {CHAT_GPTOSS, GM, 0},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        const char *t = cases[i].text;
        size_t len = strlen(t), prev = 0;
        for (size_t n = 0; n <= len; n++) {
            size_t s = tc_stream_safe(cases[i].fam, t, n);
            ck_assert_msg(s <= n && s >= prev, "case %zu at %zu: %zu after %zu", i, n, s, prev);
            prev = s;
        }
        ck_assert_msg(prev == cases[i].content, "case %zu: %zu released, want %zu", i, prev,
                      cases[i].content);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("toolcall");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_qwen);
    tcase_add_test(tc, test_llama);
    tcase_add_test(tc, test_mistral);
    tcase_add_test(tc, test_deepseek);
    tcase_add_test(tc, test_mistral3);
    tcase_add_test(tc, test_granite);
    tcase_add_test(tc, test_phi4mini);
    tcase_add_test(tc, test_gptoss);
    tcase_add_test(tc, test_stream_safe);
    tcase_add_test(tc, test_scan);
    tcase_add_test(tc, test_generic);
    tcase_add_test(tc, test_generic_grammar);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
