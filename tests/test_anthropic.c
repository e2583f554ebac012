/* test_anthropic.c: proves server/anthropic.c without a server: a Messages body becomes the
 * chat completions body it means (system first, text blocks joined, tool_result blocks as
 * tool messages, tool_use as tool_calls, thinking as reasoning_content, tools and
 * tool_choice in the chat shape, thinking as the template switch), every bad body is a 400
 * naming its field in Anthropic's style, chat errors are renamed back, errors have
 * Anthropic's shape and types, the message object is built as Anthropic's, and the stream's
 * events come in Anthropic's order with the right block indexes. */
#include <cjson/cJSON.h>
#include <string.h>

#include "server/anthropic.h"
#include "tests/testutil.h"

static void parse_ok(const char *body, bool count, an_req_t *q)
{
    rq_err_t e;
    int rc = an_parse(body, strlen(body), count, q, &e);
    ck_assert_msg(rc == 0, "%s: %s (%s)", body, e.message, e.param);
}

/* body translated equals want (both JSON texts). */
static void translates(const char *body, const char *want)
{
    an_req_t q;
    parse_ok(body, false, &q);
    char *out = NULL;
    rq_err_t e;
    int rc = an_chat_body(&q, &out, &e);
    ck_assert_msg(rc == 0, "%s: %s", body, e.message);
    cJSON *got = cJSON_Parse(out), *exp = cJSON_Parse(want);
    ck_assert_ptr_nonnull(exp);
    ck_assert_msg(cJSON_Compare(got, exp, true), "%s\n got %s\nwant %s", body, out, want);
    cJSON_Delete(got);
    cJSON_Delete(exp);
    free(out);
    an_free(&q);
}

#define HEAD "\"model\": \"m\", \"max_tokens\": 9, "

START_TEST(test_translate)
{
    translates("{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}",
               "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"model\": \"m\", "
               "\"max_tokens\": 9}");
    /* system blocks and text blocks joined; sampling and stop_sequences carried over */
    translates("{" HEAD "\"system\": [{\"type\": \"text\", \"text\": \"A\", \"cache_control\": "
               "{\"type\": \"ephemeral\"}}, {\"type\": \"text\", \"text\": \"B\"}], "
               "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
               "\"text\": \"x\"}, {\"type\": \"text\", \"text\": \"y\"}]}], \"temperature\": 0, "
               "\"top_p\": 0.5, \"top_k\": 3, \"stop_sequences\": [\"Z\"], \"stream\": true, "
               "\"metadata\": {\"user_id\": \"u\"}}",
               "{\"messages\": [{\"role\": \"system\", \"content\": \"A\\nB\"}, {\"role\": "
               "\"user\", \"content\": \"x\\ny\"}], \"model\": \"m\", \"max_tokens\": 9, "
               "\"temperature\": 0, \"top_p\": 0.5, \"top_k\": 3, \"stream\": true, \"stop\": "
               "[\"Z\"]}");
    /* a tool round trip: tool_use -> tool_calls (thinking as reasoning_content), the
     * results -> tool messages (an error says so), the text after them a user message */
    translates("{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": \"w?\"}, {\"role\": "
               "\"assistant\", \"content\": [{\"type\": \"thinking\", \"thinking\": \"hm\", "
               "\"signature\": \"\"}, {\"type\": \"text\", \"text\": \"ok\"}, {\"type\": "
               "\"tool_use\", \"id\": \"t1\", \"name\": \"f\", \"input\": {\"a\": 1}}, {\"type\": "
               "\"tool_use\", \"id\": \"t2\", \"name\": \"g\", \"input\": {}}]}, {\"role\": "
               "\"user\", \"content\": [{\"type\": \"tool_result\", \"tool_use_id\": \"t1\", "
               "\"content\": \"3\"}, {\"type\": \"tool_result\", \"tool_use_id\": \"t2\", "
               "\"is_error\": true, \"content\": [{\"type\": \"text\", \"text\": \"no\"}]}, "
               "{\"type\": \"text\", \"text\": \"and?\"}]}]}",
               "{\"messages\": [{\"role\": \"user\", \"content\": \"w?\"}, {\"role\": "
               "\"assistant\", \"content\": \"ok\", \"reasoning_content\": \"hm\", "
               "\"tool_calls\": [{\"id\": \"t1\", \"type\": \"function\", \"function\": "
               "{\"name\": \"f\", \"arguments\": \"{\\\"a\\\":1}\"}}, {\"id\": \"t2\", \"type\": "
               "\"function\", \"function\": {\"name\": \"g\", \"arguments\": \"{}\"}}]}, "
               "{\"role\": \"tool\", \"content\": \"3\", \"tool_call_id\": \"t1\"}, {\"role\": "
               "\"tool\", \"content\": \"Error: no\", \"tool_call_id\": \"t2\"}, {\"role\": "
               "\"user\", \"content\": \"and?\"}], \"model\": \"m\", \"max_tokens\": 9}");
    /* only calls: content null; redacted thinking left out; a result without content */
    translates("{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": "
               "\"assistant\", \"content\": [{\"type\": \"redacted_thinking\", \"data\": "
               "\"xx\"}, {\"type\": \"tool_use\", \"id\": \"t\", \"name\": \"f\", \"input\": "
               "{}}]}, {\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", "
               "\"tool_use_id\": \"t\"}]}]}",
               "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": "
               "\"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"t\", \"type\": "
               "\"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}]}, "
               "{\"role\": \"tool\", \"content\": \"\", \"tool_call_id\": \"t\"}], \"model\": "
               "\"m\", \"max_tokens\": 9}");
    /* tools and each tool_choice */
    static const struct {
        const char *choice, *want;
    } tc[] = {
        {"{\"type\": \"auto\"}", "\"tool_choice\": \"auto\""},
        {"{\"type\": \"any\", \"disable_parallel_tool_use\": true}",
         "\"tool_choice\": \"required\", \"parallel_tool_calls\": false"},
        {"{\"type\": \"none\"}", "\"tool_choice\": \"none\""},
        {"{\"type\": \"tool\", \"name\": \"f\"}",
         "\"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"f\"}}"},
    };
    for (size_t i = 0; i < sizeof tc / sizeof tc[0]; i++) {
        char body[600], want[700];
        snprintf(body, sizeof body, "{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": "
                 "\"q\"}], \"tools\": [{\"name\": \"f\", \"description\": \"d\", "
                 "\"input_schema\": {\"type\": \"object\"}, \"cache_control\": {\"type\": "
                 "\"ephemeral\"}}], \"tool_choice\": %s}", tc[i].choice);
        snprintf(want, sizeof want, "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], "
                 "\"model\": \"m\", \"max_tokens\": 9, \"tools\": [{\"type\": \"function\", "
                 "\"function\": {\"name\": \"f\", \"description\": \"d\", \"parameters\": "
                 "{\"type\": \"object\"}}}], %s}", tc[i].want);
        translates(body, want);
    }
    /* thinking: on separates the think block and holds it to the budget; off asks the
     * template to leave it out */
    translates("{\"model\": \"m\", \"max_tokens\": 2000, \"messages\": [{\"role\": \"user\", "
               "\"content\": \"q\"}], \"thinking\": {\"type\": \"enabled\", \"budget_tokens\": "
               "1024}}",
               "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"model\": \"m\", "
               "\"max_tokens\": 2000, \"chat_template_kwargs\": {\"enable_thinking\": true}, "
               "\"reasoning_format\": \"deepseek\", \"reasoning_budget_tokens\": 1024}");
    /* a final assistant message is a prefill, passed on as the last chat message */
    translates("{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, "
               "{\"role\": \"assistant\", \"content\": \"The\"}]}",
               "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": "
               "\"assistant\", \"content\": \"The\"}], \"model\": \"m\", \"max_tokens\": 9}");
    translates("{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], "
               "\"thinking\": {\"type\": \"disabled\"}}",
               "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"model\": \"m\", "
               "\"max_tokens\": 9, \"chat_template_kwargs\": {\"enable_thinking\": false}}");
    /* count_tokens: no max_tokens */
    an_req_t q;
    parse_ok("{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"q\"}], "
             "\"system\": \"s\"}", true, &q);
    ck_assert(q.count && !q.stream);
    an_free(&q);
}
END_TEST

#define MSG "\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]"

START_TEST(test_bad_bodies)
{
    static const struct {
        const char *body, *param, *says;
    } bad[] = {
        {"", "", "empty"},
        {"[1]", "", "JSON object"},
        {"{\"model\": \"m\"", "", "malformed JSON"},
        {"{\"max_tokens\": 5, " MSG "}", "model", "model: Field required"},
        {"{\"model\": \"m\", " MSG "}", "max_tokens", "max_tokens: Field required"},
        {"{\"model\": 3, \"max_tokens\": 5, " MSG "}", "model", "must be a string"},
        {"{" HEAD "\"x\": 1, " MSG "}", "x", "x: Extra inputs are not permitted"},
        {"{" HEAD "\"mcp_servers\": [], " MSG "}", "mcp_servers", "not supported"},
        {"{\"model\": \"m\", \"max_tokens\": 0, " MSG "}", "max_tokens", "at least 1"},
        {"{\"model\": \"m\", \"max_tokens\": 2.5, " MSG "}", "max_tokens", "integer"},
        {"{" HEAD "\"temperature\": 1.5, " MSG "}", "temperature", "[0, 1]"},
        {"{" HEAD "\"top_p\": \"a\", " MSG "}", "top_p", "[0, 1]"},
        {"{" HEAD "\"top_k\": -1, " MSG "}", "top_k", "integer"},
        {"{" HEAD "\"stream\": 1, " MSG "}", "stream", "boolean"},
        {"{" HEAD "\"stop_sequences\": \"x\", " MSG "}", "stop_sequences", "array"},
        {"{" HEAD "\"stop_sequences\": [\"a\", \"\"], " MSG "}", "stop_sequences.1", "empty"},
        {"{" HEAD "\"metadata\": {\"k\": 1}, " MSG "}", "metadata.k", "Extra inputs"},
        {"{" HEAD "\"metadata\": {\"user_id\": 1}, " MSG "}", "metadata.user_id", "string"},
        {"{" HEAD "\"service_tier\": \"priority\", " MSG "}", "service_tier", "auto"},
        {"{\"model\": \"m\", \"max_tokens\": 9}", "messages", "Field required"},
        {"{" HEAD "\"messages\": {}}", "messages", "array"},
        {"{" HEAD "\"messages\": []}", "messages", "at least one"},
        {"{" HEAD "\"messages\": [1]}", "messages.0", "object"},
        {"{" HEAD "\"messages\": [{\"content\": \"x\"}]}", "messages.0.role", "Field required"},
        {"{" HEAD "\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}",
         "messages.0.role", "top-level 'system'"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\"}]}", "messages.0.content",
         "Field required"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": \"\"}]}",
         "messages.0.content", "empty"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": []}]}",
         "messages.0.content", "empty"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": 5}]}",
         "messages.0.content", "string or an array"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": "
         "\"assistant\", \"content\": \"The \"}]}", "messages.1", "trailing whitespace"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\", "
         "\"source\": {}}]}]}", "messages.0.content.0.type", "image blocks are not supported"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"document\"}]}]}",
         "messages.0.content.0.type", "document"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"video\"}]}]}",
         "messages.0.content.0.type", "unknown content block type"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"text\": \"a\"}]}]}",
         "messages.0.content.0.type", "Field required"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [\"a\"]}]}",
         "messages.0.content.0", "content block object"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}]}",
         "messages.0.content.0.text", "Field required"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
         "\"text\": \"\"}]}]}", "messages.0.content.0", "non-empty"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_use\", "
         "\"id\": \"t\", \"name\": \"f\", \"input\": {}}]}]}", "messages.0.content.0",
         "assistant messages"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": "
         "\"assistant\", \"content\": [{\"type\": \"tool_use\", \"id\": \"t\", \"name\": \"f\", "
         "\"input\": []}]}, {\"role\": \"user\", \"content\": \"b\"}]}",
         "messages.1.content.0.input", "object"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": "
         "\"assistant\", \"content\": [{\"type\": \"tool_use\", \"name\": \"f\", \"input\": "
         "{}}]}, {\"role\": \"user\", \"content\": \"b\"}]}", "messages.1.content.0.id",
         "Field required"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\"}]}]}",
         "messages.0.content.0.tool_use_id", "Field required"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", "
         "\"tool_use_id\": \"t\", \"is_error\": \"yes\"}]}]}", "messages.0.content.0.is_error",
         "boolean"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", "
         "\"tool_use_id\": \"t\", \"content\": [{\"type\": \"image\"}]}]}]}",
         "messages.0.content.0.content.0.type", "image blocks are not supported"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"tool_result\", "
         "\"tool_use_id\": \"t\", \"content\": 7}]}]}", "messages.0.content.0.content",
         "string or an array"},
        {"{" HEAD "\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"thinking\", "
         "\"thinking\": \"a\"}]}]}", "messages.0.content.0", "assistant messages"},
        {"{" HEAD "\"system\": 5, " MSG "}", "system", "string or an array"},
        {"{" HEAD "\"system\": [{\"type\": \"image\"}], " MSG "}", "system.0.type", "image"},
        {"{" HEAD "\"tools\": {}, " MSG "}", "tools", "array"},
        {"{" HEAD "\"tools\": [{\"name\": \"f\"}], " MSG "}", "tools.0.input_schema",
         "Field required"},
        {"{" HEAD "\"tools\": [{\"input_schema\": {}}], " MSG "}", "tools.0.name",
         "Field required"},
        {"{" HEAD "\"tools\": [{\"type\": \"web_search_20250305\", \"name\": \"web_search\"}], "
         MSG "}", "tools.0.type", "do not run here"},
        {"{" HEAD "\"tools\": [{\"name\": \"f\", \"input_schema\": {\"type\": \"array\"}}], "
         MSG "}", "tools.0.input_schema", "\"object\""},
        {"{" HEAD "\"tool_choice\": {\"type\": \"auto\"}, " MSG "}", "tool_choice",
         "needs 'tools'"},
        {"{" HEAD "\"tools\": [{\"name\": \"f\", \"input_schema\": {}}], \"tool_choice\": "
         "\"auto\", " MSG "}", "tool_choice", "object"},
        {"{" HEAD "\"tools\": [{\"name\": \"f\", \"input_schema\": {}}], \"tool_choice\": "
         "{\"type\": \"required\"}, " MSG "}", "tool_choice.type", "\"any\""},
        {"{" HEAD "\"tools\": [{\"name\": \"f\", \"input_schema\": {}}], \"tool_choice\": "
         "{\"type\": \"tool\"}, " MSG "}", "tool_choice.name", "Field required"},
        {"{" HEAD "\"tools\": [{\"name\": \"f\", \"input_schema\": {}}], \"tool_choice\": "
         "{\"type\": \"tool\", \"name\": \"g\"}, " MSG "}", "tool_choice.name", "not one of"},
        {"{" HEAD "\"tools\": [{\"name\": \"f\", \"input_schema\": {}}], \"tool_choice\": "
         "{\"type\": \"auto\", \"disable_parallel_tool_use\": 1}, " MSG "}",
         "tool_choice.disable_parallel_tool_use", "boolean"},
        {"{" HEAD "\"thinking\": true, " MSG "}", "thinking", "object"},
        {"{" HEAD "\"thinking\": {\"type\": \"on\"}, " MSG "}", "thinking.type", "enabled"},
        {"{" HEAD "\"thinking\": {\"type\": \"enabled\"}, " MSG "}", "thinking.budget_tokens",
         "Field required"},
        {"{" HEAD "\"thinking\": {\"type\": \"enabled\", \"budget_tokens\": 100}, " MSG "}",
         "thinking.budget_tokens", "at least 1024"},
        {"{\"model\": \"m\", \"max_tokens\": 1500, \"thinking\": {\"type\": \"enabled\", "
         "\"budget_tokens\": 2000}, " MSG "}", "thinking.budget_tokens", "less than max_tokens"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        an_req_t q;
        rq_err_t e;
        int rc = an_parse(bad[i].body, strlen(bad[i].body), false, &q, &e);
        ck_assert_msg(rc == -EINVAL && e.status == 400, "%s: rc %d", bad[i].body, rc);
        ck_assert_msg(strcmp(e.param, bad[i].param) == 0, "%s: param %s", bad[i].body, e.param);
        ck_assert_msg(strstr(e.message, bad[i].says), "%s: message '%s' lacks '%s'",
                      bad[i].body, e.message, bad[i].says);
        ck_assert_ptr_null(q.root);
    }
    /* count_tokens takes no generation fields, and needs no max_tokens */
    an_req_t q;
    rq_err_t e;
    const char *b = "{\"model\": \"m\", \"max_tokens\": 5, " MSG "}";
    ck_assert_int_eq(an_parse(b, strlen(b), true, &q, &e), -EINVAL);
    ck_assert_str_eq(e.param, "max_tokens");
    b = "{\"model\": \"m\", \"thinking\": {\"type\": \"enabled\", \"budget_tokens\": 4096}, " MSG "}";
    parse_ok(b, true, &q);
    an_free(&q);
}
END_TEST

START_TEST(test_map_error)
{
    rq_err_t e;
    rq_fail(&e, 400, "invalid_request_error", "stop", "'stop' has more than 16 strings");
    an_map_error(&e);
    ck_assert_str_eq(e.param, "stop_sequences");
    ck_assert_str_eq(e.message, "'stop_sequences' has more than 16 strings");
    rq_fail(&e, 400, "invalid_request_error", "tools[1].function.parameters", "'%s' bad",
            "tools[1].function.parameters");
    an_map_error(&e);
    ck_assert_str_eq(e.param, "tools[1].input_schema");
    ck_assert_str_eq(e.message, "'tools[1].input_schema' bad");
    rq_fail(&e, 400, "invalid_request_error", "tools[0].function.name", "x");
    an_map_error(&e);
    ck_assert_str_eq(e.param, "tools[0].name");
    rq_fail(&e, 400, "invalid_request_error", "tool_choice.function.name", "x");
    an_map_error(&e);
    ck_assert_str_eq(e.param, "tool_choice.name");
    rq_fail(&e, 400, "invalid_request_error", "max_tokens", "max_tokens too large");
    an_map_error(&e);
    ck_assert_str_eq(e.param, "max_tokens");
}
END_TEST

static const cJSON *at(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(v != NULL, "missing %s", k);
    return v;
}

START_TEST(test_errors)
{
    static const struct {
        int status;
        const char *type;
    } t[] = {{400, "invalid_request_error"}, {401, "authentication_error"},
             {403, "permission_error"}, {404, "not_found_error"}, {405, "invalid_request_error"},
             {413, "request_too_large"}, {429, "rate_limit_error"}, {500, "api_error"},
             {501, "api_error"}, {503, "overloaded_error"}, {529, "overloaded_error"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char *s = an_error(t[i].status, "m \"q\"");
        cJSON *j = cJSON_Parse(s);
        ck_assert_str_eq(at(j, "type")->valuestring, "error");
        ck_assert_str_eq(at(at(j, "error"), "type")->valuestring, t[i].type);
        ck_assert_str_eq(at(at(j, "error"), "message")->valuestring, "m \"q\"");
        ck_assert_int_eq(cJSON_GetArraySize(j), 2);
        cJSON_Delete(j);
        free(s);
    }
}
END_TEST

START_TEST(test_message_object)
{
    ck_assert_str_eq(an_stop_reason("stop", NULL), "end_turn");
    ck_assert_str_eq(an_stop_reason("stop", "Z"), "stop_sequence");
    ck_assert_str_eq(an_stop_reason("length", NULL), "max_tokens");
    ck_assert_str_eq(an_stop_reason("tool_calls", NULL), "tool_use");
    cJSON *c = cJSON_CreateArray();
    ck_assert_int_eq(an_add_thinking(c, "hm", 2), 0);
    ck_assert_int_eq(an_add_text(c, "Hi\xff", 3), 0); /* invalid UTF-8 becomes U+FFFD */
    ck_assert_int_eq(an_add_tool_use(c, "call_1", "f", "{\"a\": [1, 2]}"), 0);
    ck_assert_int_eq(an_add_tool_use(c, "call_2", "f", "[1]"), -EINVAL);
    ck_assert_int_eq(an_add_tool_use(c, "call_2", "f", "{bad"), -EINVAL);
    an_result_t r = {.id = "msg_1", .model = "m", .stop_reason = "tool_use",
                     .input_tokens = 7, .cache_read_tokens = 3, .output_tokens = 5};
    char *s = an_message(&r, c);
    cJSON *j = cJSON_Parse(s);
    ck_assert_str_eq(at(j, "id")->valuestring, "msg_1");
    ck_assert_str_eq(at(j, "type")->valuestring, "message");
    ck_assert_str_eq(at(j, "role")->valuestring, "assistant");
    ck_assert_str_eq(at(j, "model")->valuestring, "m");
    ck_assert_str_eq(at(j, "stop_reason")->valuestring, "tool_use");
    ck_assert(cJSON_IsNull(at(j, "stop_sequence")));
    const cJSON *u = at(j, "usage");
    ck_assert_int_eq(at(u, "input_tokens")->valueint, 7);
    ck_assert_int_eq(at(u, "cache_read_input_tokens")->valueint, 3);
    ck_assert_int_eq(at(u, "cache_creation_input_tokens")->valueint, 0);
    ck_assert_int_eq(at(u, "output_tokens")->valueint, 5);
    const cJSON *ct = at(j, "content");
    ck_assert_int_eq(cJSON_GetArraySize(ct), 3);
    const cJSON *b0 = cJSON_GetArrayItem(ct, 0), *b1 = cJSON_GetArrayItem(ct, 1),
                *b2 = cJSON_GetArrayItem(ct, 2);
    ck_assert_str_eq(at(b0, "type")->valuestring, "thinking");
    ck_assert_str_eq(at(b0, "thinking")->valuestring, "hm");
    ck_assert_str_eq(at(b0, "signature")->valuestring, "");
    ck_assert_str_eq(at(b1, "type")->valuestring, "text");
    ck_assert_str_eq(at(b1, "text")->valuestring, "Hi\xef\xbf\xbd");
    ck_assert_str_eq(at(b2, "type")->valuestring, "tool_use");
    ck_assert_str_eq(at(b2, "id")->valuestring, "call_1");
    ck_assert_str_eq(at(b2, "name")->valuestring, "f");
    ck_assert_int_eq(cJSON_GetArrayItem(at(at(b2, "input"), "a"), 1)->valueint, 2);
    cJSON_Delete(j);
    free(s);
    /* no content: [] */
    an_result_t r2 = {.id = "msg_2", .model = "m", .stop_reason = "stop_sequence",
                      .stop_sequence = "Z"};
    s = an_message(&r2, NULL);
    j = cJSON_Parse(s);
    ck_assert_int_eq(cJSON_GetArraySize(at(j, "content")), 0);
    ck_assert_str_eq(at(j, "stop_sequence")->valuestring, "Z");
    cJSON_Delete(j);
    free(s);
    s = an_count(42);
    ck_assert_str_eq(s, "{\"input_tokens\":42}");
    free(s);
}
END_TEST

/* The events of an SSE text: their names in types (at most max) and the data of each
 * (parsed, in datas); the count. */
static int frames(const char *sse, char types[][32], cJSON **datas, int max)
{
    int n = 0;
    const char *p = sse;
    while (*p && n < max) {
        ck_assert_msg(strncmp(p, "event: ", 7) == 0, "frame at '%.40s'", p);
        const char *nl = strchr(p, '\n');
        snprintf(types[n], 32, "%.*s", (int)(nl - p - 7), p + 7);
        ck_assert(strncmp(nl + 1, "data: ", 6) == 0);
        const char *end = strstr(nl, "\n\n");
        ck_assert_ptr_nonnull(end);
        char *data = strndup(nl + 7, (size_t)(end - nl - 7));
        datas[n] = cJSON_Parse(data);
        ck_assert_msg(datas[n] != NULL, "data %s", data);
        ck_assert_str_eq(at(datas[n], "type")->valuestring, types[n]);
        free(data);
        n++;
        p = end + 2;
    }
    return n;
}

START_TEST(test_stream_events)
{
    an_stream_t st;
    sb_t out;
    sb_init(&out);
    an_stream_init(&st, "msg_s", "m", 12);
    an_stream_begin(&st, &out);
    an_stream_thinking(&st, &out, "hm", 2);
    an_stream_text(&st, &out, "", 0); /* nothing: no block */
    an_stream_text(&st, &out, "He", 2);
    an_stream_text(&st, &out, "llo", 3);
    an_stream_tool(&st, &out, "call_9", "f");
    an_stream_args(&st, &out, "{\"a\"");
    an_stream_args(&st, &out, ": 1}");
    an_stream_ping(&out);
    an_stream_tool(&st, &out, "call_10", "g");
    an_result_t r = {.id = "msg_s", .model = "m", .stop_reason = "tool_use", .input_tokens = 10,
                     .cache_read_tokens = 2, .output_tokens = 9};
    an_stream_end(&st, &out, &r);
    an_stream_text(&st, &out, "late", 4); /* after the end: nothing */
    ck_assert(!st.failed && !sb_failed(&out));
    char *sse = strndup(out.buf, out.len);
    char t[32][32];
    cJSON *d[32];
    int n = frames(sse, t, d, 32);
    static const struct {
        const char *type;
        int index;
    } want[] = {
        {"message_start", -1}, {"ping", -1},
        {"content_block_start", 0}, {"content_block_delta", 0}, {"content_block_stop", 0},
        {"content_block_start", 1}, {"content_block_delta", 1}, {"content_block_delta", 1},
        {"content_block_stop", 1},
        {"content_block_start", 2}, {"content_block_delta", 2}, {"content_block_delta", 2},
        {"ping", -1}, {"content_block_stop", 2},
        {"content_block_start", 3}, {"content_block_stop", 3},
        {"message_delta", -1}, {"message_stop", -1}};
    ck_assert_int_eq(n, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < n; i++) {
        ck_assert_str_eq(t[i], want[i].type);
        if (want[i].index >= 0)
            ck_assert_int_eq(at(d[i], "index")->valueint, want[i].index);
    }
    const cJSON *m = at(d[0], "message");
    ck_assert_str_eq(at(m, "id")->valuestring, "msg_s");
    ck_assert_int_eq(cJSON_GetArraySize(at(m, "content")), 0);
    ck_assert(cJSON_IsNull(at(m, "stop_reason")));
    ck_assert_int_eq(at(at(m, "usage"), "input_tokens")->valueint, 12);
    ck_assert_int_eq(at(at(m, "usage"), "output_tokens")->valueint, 0);
    ck_assert_str_eq(at(at(d[2], "content_block"), "type")->valuestring, "thinking");
    ck_assert_str_eq(at(at(d[3], "delta"), "type")->valuestring, "thinking_delta");
    ck_assert_str_eq(at(at(d[3], "delta"), "thinking")->valuestring, "hm");
    ck_assert_str_eq(at(at(d[5], "content_block"), "text")->valuestring, "");
    ck_assert_str_eq(at(at(d[6], "delta"), "type")->valuestring, "text_delta");
    ck_assert_str_eq(at(at(d[7], "delta"), "text")->valuestring, "llo");
    const cJSON *tb = at(d[9], "content_block");
    ck_assert_str_eq(at(tb, "type")->valuestring, "tool_use");
    ck_assert_str_eq(at(tb, "id")->valuestring, "call_9");
    ck_assert_str_eq(at(tb, "name")->valuestring, "f");
    ck_assert(cJSON_IsObject(at(tb, "input")));
    ck_assert_str_eq(at(at(d[10], "delta"), "type")->valuestring, "input_json_delta");
    ck_assert_str_eq(at(at(d[11], "delta"), "partial_json")->valuestring, ": 1}");
    const cJSON *md = d[16];
    ck_assert_str_eq(at(at(md, "delta"), "stop_reason")->valuestring, "tool_use");
    ck_assert(cJSON_IsNull(at(at(md, "delta"), "stop_sequence")));
    ck_assert_int_eq(at(at(md, "usage"), "output_tokens")->valueint, 9);
    ck_assert_int_eq(at(at(md, "usage"), "input_tokens")->valueint, 10);
    ck_assert_int_eq(at(at(md, "usage"), "cache_read_input_tokens")->valueint, 2);
    for (int i = 0; i < n; i++)
        cJSON_Delete(d[i]);
    free(sse);
    sb_free(&out);

    /* an error ends the stream: nothing after it */
    sb_init(&out);
    an_stream_init(&st, "msg_e", "m", 1);
    an_stream_begin(&st, &out);
    an_stream_text(&st, &out, "a", 1);
    an_stream_error(&st, &out, 503, "cancelled");
    an_stream_end(&st, &out, &r);
    sse = strndup(out.buf, out.len);
    n = frames(sse, t, d, 32);
    ck_assert_int_eq(n, 5);
    ck_assert_str_eq(t[4], "error");
    ck_assert_str_eq(at(at(d[4], "error"), "type")->valuestring, "overloaded_error");
    ck_assert_str_eq(at(at(d[4], "error"), "message")->valuestring, "cancelled");
    for (int i = 0; i < n; i++)
        cJSON_Delete(d[i]);
    free(sse);
    sb_free(&out);

    /* an empty answer: message_start, ping, message_delta, message_stop */
    sb_init(&out);
    an_stream_init(&st, "msg_z", "m", 1);
    an_result_t rz = {.id = "msg_z", .model = "m", .stop_reason = "end_turn"};
    an_stream_end(&st, &out, &rz);
    sse = strndup(out.buf, out.len);
    n = frames(sse, t, d, 32);
    ck_assert_int_eq(n, 4);
    ck_assert_str_eq(t[0], "message_start");
    ck_assert_str_eq(t[2], "message_delta");
    for (int i = 0; i < n; i++)
        cJSON_Delete(d[i]);
    free(sse);
    sb_free(&out);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("anthropic");
    TCase *tc = tcase_create("anthropic");
    tcase_add_test(tc, test_translate);
    tcase_add_test(tc, test_bad_bodies);
    tcase_add_test(tc, test_map_error);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_message_object);
    tcase_add_test(tc, test_stream_events);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
