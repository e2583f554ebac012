/* test_responses.c: proves server/responses.c without a server: a Responses body becomes the
 * chat completions body it means (instructions first, the stored history, message /
 * function_call / function_call_output items, flat tools nested, text.format as
 * response_format, max_output_tokens, logprobs), bad bodies are 400s naming the Responses
 * field, chat errors are renamed back, the response object echoes the request, the stream's
 * events come in OpenAI's order with increasing sequence numbers, and the store keeps at most
 * its count and bytes, dropping the least recently used. */
#include <cjson/cJSON.h>
#include <string.h>

#include "server/responses.h"
#include "tests/testutil.h"

static void parse_ok(const char *body, rs_req_t *q)
{
    rq_err_t e;
    int rc = rs_parse(body, strlen(body), q, &e);
    ck_assert_msg(rc == 0, "%s: %s (%s)", body, e.message, e.param);
}

/* body translated (with history) equals want (both JSON texts). */
static void translates(const char *body, const char *history, const char *want)
{
    rs_req_t q;
    parse_ok(body, &q);
    cJSON *h = history ? cJSON_Parse(history) : NULL;
    char *out = NULL;
    rq_err_t e;
    int rc = rs_chat_body(&q, h, &out, &e);
    ck_assert_msg(rc == 0, "%s: %s", body, e.message);
    cJSON *got = cJSON_Parse(out), *exp = cJSON_Parse(want);
    ck_assert_ptr_nonnull(exp);
    ck_assert_msg(cJSON_Compare(got, exp, true), "%s\n got %s\nwant %s", body, out, want);
    cJSON_Delete(got);
    cJSON_Delete(exp);
    cJSON_Delete(h);
    free(out);
    rs_free(&q);
}

START_TEST(test_translate)
{
    translates("{\"input\": \"Hi\", \"model\": \"m\"}",
               NULL, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"model\": \"m\"}");
    translates("{\"input\": \"Hi\", \"instructions\": \"Be kind.\", \"max_output_tokens\": 7, "
               "\"temperature\": 0, \"seed\": 3, \"stream\": true, \"top_logprobs\": 2}", NULL,
               "{\"messages\": [{\"role\": \"system\", \"content\": \"Be kind.\"}, {\"role\": "
               "\"user\", \"content\": \"Hi\"}], \"temperature\": 0, \"seed\": 3, \"stream\": "
               "true, \"max_completion_tokens\": 7, \"logprobs\": true, \"top_logprobs\": 2}");
    /* parts joined with newlines; consecutive calls one assistant turn after its text */
    translates("{\"input\": [{\"role\": \"developer\", \"content\": [{\"type\": \"input_text\", "
               "\"text\": \"a\"}, {\"type\": \"input_text\", \"text\": \"b\"}]}, {\"type\": "
               "\"message\", \"role\": \"assistant\", \"content\": [{\"type\": \"output_text\", "
               "\"text\": \"t\", \"annotations\": []}]}, {\"type\": \"function_call\", "
               "\"call_id\": \"c1\", \"name\": \"f\", \"arguments\": \"{}\"}, {\"type\": "
               "\"function_call\", \"call_id\": \"c2\", \"name\": \"g\", \"arguments\": "
               "\"{\\\"x\\\": 1}\"}, {\"type\": \"function_call_output\", \"call_id\": \"c1\", "
               "\"output\": \"ok\"}], \"include\": [\"message.output_text.logprobs\"]}", NULL,
               "{\"messages\": [{\"role\": \"developer\", \"content\": \"a\\nb\"}, {\"role\": "
               "\"assistant\", \"content\": \"t\", \"tool_calls\": [{\"id\": \"c1\", \"type\": "
               "\"function\", \"function\": {\"name\": \"f\", \"arguments\": \"{}\"}}, {\"id\": "
               "\"c2\", \"type\": \"function\", \"function\": {\"name\": \"g\", \"arguments\": "
               "\"{\\\"x\\\": 1}\"}}]}, {\"role\": \"tool\", \"tool_call_id\": \"c1\", "
               "\"content\": \"ok\"}], \"logprobs\": true}");
    /* a call with no text before it: content null */
    translates("{\"input\": [{\"type\": \"function_call\", \"call_id\": \"c\", \"name\": \"f\", "
               "\"arguments\": \"{}\"}]}", NULL,
               "{\"messages\": [{\"role\": \"assistant\", \"content\": null, \"tool_calls\": "
               "[{\"id\": \"c\", \"type\": \"function\", \"function\": {\"name\": \"f\", "
               "\"arguments\": \"{}\"}}]}]}");
    /* tools nested, tool_choice named, text.format json_schema */
    translates("{\"input\": \"x\", \"tools\": [{\"type\": \"function\", \"name\": \"f\", "
               "\"description\": \"d\", \"parameters\": {\"type\": \"object\"}, \"strict\": "
               "true}], \"tool_choice\": {\"type\": \"function\", \"name\": \"f\"}, "
               "\"parallel_tool_calls\": false}", NULL,
               "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"parallel_tool_calls\": "
               "false, \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", "
               "\"description\": \"d\", \"parameters\": {\"type\": \"object\"}, \"strict\": "
               "true}}], \"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": "
               "\"f\"}}}");
    translates("{\"input\": \"x\", \"text\": {\"format\": {\"type\": \"json_schema\", \"name\": "
               "\"p\", \"schema\": {\"type\": \"object\"}, \"strict\": true}}}", NULL,
               "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response_format\": "
               "{\"type\": \"json_schema\", \"json_schema\": {\"name\": \"p\", \"schema\": "
               "{\"type\": \"object\"}, \"strict\": true}}}");
    /* history between the instructions and the input; no input with a history is fine */
    translates("{\"input\": \"more\", \"instructions\": \"I\", \"previous_response_id\": "
               "\"resp_1\"}",
               "[{\"type\": \"message\", \"role\": \"user\", \"content\": [{\"type\": "
               "\"input_text\", \"text\": \"first\"}]}, {\"id\": \"msg_1\", \"type\": "
               "\"message\", \"status\": \"completed\", \"role\": \"assistant\", \"content\": "
               "[{\"type\": \"output_text\", \"text\": \"reply\", \"annotations\": [], "
               "\"logprobs\": []}]}]",
               "{\"messages\": [{\"role\": \"system\", \"content\": \"I\"}, {\"role\": \"user\", "
               "\"content\": \"first\"}, {\"role\": \"assistant\", \"content\": \"reply\"}, "
               "{\"role\": \"user\", \"content\": \"more\"}]}");
    translates("{\"previous_response_id\": \"resp_1\"}",
               "[{\"type\": \"message\", \"role\": \"user\", \"content\": \"q\"}]",
               "{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}");
}
END_TEST

START_TEST(test_bad_bodies)
{
    static const struct {
        const char *body, *param, *code;
    } bad[] = {
        {"", "", NULL},
        {"[1]", "", NULL},
        {"{\"input\": \"x\"", "", NULL},
        {"{}", "input", "missing_required_parameter"},
        {"{\"input\": true}", "input", NULL},
        {"{\"input\": []}", "input", NULL},
        {"{\"input\": [\"x\"]}", "input[0]", NULL},
        {"{\"input\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "input[0].role", NULL},
        {"{\"input\": [{\"role\": \"user\", \"content\": [{\"type\": \"input_file\"}]}]}",
         "input[0].content[0].type", "unsupported_parameter"},
        {"{\"input\": [{\"role\": \"user\", \"content\": [{\"type\": \"input_text\", "
         "\"text\": 1}]}]}", "input[0].content[0].text", NULL},
        {"{\"input\": [{\"type\": \"item_reference\", \"id\": \"x\"}]}", "input[0].type",
         "unsupported_parameter"},
        {"{\"input\": [{\"type\": \"function_call\", \"call_id\": \"c\", \"name\": \"\", "
         "\"arguments\": \"{}\"}]}", "input[0].name", NULL},
        {"{\"input\": [{\"type\": \"function_call_output\", \"call_id\": \"c\", \"output\": "
         "5}]}", "input[0].output", NULL},
        {"{\"input\": \"x\", \"nope\": 1}", "nope", "unknown_parameter"},
        {"{\"input\": \"x\", \"max_output_tokens\": 1.5}", "max_output_tokens", NULL},
        {"{\"input\": \"x\", \"top_logprobs\": -1}", "top_logprobs", NULL},
        {"{\"input\": \"x\", \"include\": \"a\"}", "include", NULL},
        {"{\"input\": \"x\", \"stream_options\": {}}", "stream_options", NULL},
        {"{\"input\": \"x\", \"tools\": [{\"type\": \"file_search\"}]}", "tools[0].type",
         "unsupported_parameter"},
        {"{\"input\": \"x\", \"tools\": [{\"type\": \"function\", \"name\": \"f\", "
         "\"parameters\": 1}]}", "tools[0].parameters", NULL},
        {"{\"input\": \"x\", \"tool_choice\": {\"type\": \"function\"}}", "tool_choice.name",
         NULL},
        {"{\"input\": \"x\", \"text\": {\"format\": {\"type\": \"json_schema\", \"name\": "
         "\"n\"}}}", "text.format.schema", "missing_required_parameter"},
        {"{\"input\": \"x\", \"text\": {\"verbosity\": \"low\"}}", "text.verbosity",
         "unsupported_parameter"},
        {"{\"input\": \"x\", \"text\": {\"other\": 1}}", "text.other", "unknown_parameter"},
        {"{\"input\": \"x\", \"metadata\": {\"k\": true}}", "metadata.k", NULL},
        {"{\"input\": \"x\", \"conversation\": 5}", "conversation", NULL},
        {"{\"input\": \"x\", \"conversation\": {\"id\": \"\"}}", "conversation", NULL},
        {"{\"input\": \"x\", \"conversation\": \"c\", \"previous_response_id\": \"r\"}",
         "conversation", NULL},
        {"{\"input\": \"x\", \"user\": 3}", "user", NULL},
        {"{\"input\": \"x\", \"background\": true, \"store\": false}", "background", NULL},
        {"{\"input\": \"x\", \"background\": 1}", "background", NULL},
        {"{\"input\": \"x\", \"truncation\": \"middle\"}", "truncation", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rs_req_t q;
        rq_err_t e;
        int rc = rs_parse(bad[i].body, strlen(bad[i].body), &q, &e);
        ck_assert_msg(rc == -EINVAL && e.status == 400, "%s: rc %d", bad[i].body, rc);
        ck_assert_msg(strcmp(e.param, bad[i].param) == 0, "%s: param %s", bad[i].body, e.param);
        ck_assert_msg(e.message[0], "%s: a message", bad[i].body);
        ck_assert_msg(bad[i].code ? e.code && strcmp(e.code, bad[i].code) == 0 : !e.code,
                      "%s: code %s", bad[i].body, e.code ? e.code : "(null)");
    }
    /* neutral values are accepted */
    rs_req_t q;
    parse_ok("{\"input\": \"x\", \"background\": false, \"reasoning\": {}, \"truncation\": "
             "\"disabled\", \"conversation\": null, \"store\": false, \"stream\": true, "
             "\"stream_options\": {\"include_obfuscation\": false}}", &q);
    ck_assert(!q.store && q.stream && !q.logprobs && !q.background && !q.truncate_auto);
    rs_free(&q);
    parse_ok("{\"input\": \"x\", \"background\": true, \"truncation\": \"auto\"}", &q);
    ck_assert(q.store && q.background && q.truncate_auto && !q.conv_id);
    rs_free(&q);
    parse_ok("{\"input\": \"x\", \"conversation\": \"conv_1\"}", &q);
    ck_assert_str_eq(q.conv_id, "conv_1");
    rs_free(&q);
    parse_ok("{\"input\": \"x\", \"conversation\": {\"id\": \"conv_2\"}}", &q);
    ck_assert_str_eq(q.conv_id, "conv_2");
    rs_free(&q);
    /* a conversation's items are checked as input items, at most max of them */
    cJSON *arr = cJSON_Parse("[{\"role\": \"user\", \"content\": \"a\"}, {\"type\": "
                             "\"function_call_output\", \"call_id\": \"c\", \"output\": \"o\"}]");
    cJSON *out = NULL;
    rq_err_t e;
    ck_assert_int_eq(rs_parse_items(arr, "items", 20, &out, &e), 0);
    ck_assert_int_eq(cJSON_GetArraySize(out), 2);
    rs_name_items(out, "resp_x");
    const cJSON *id0 = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(out, 0), "id");
    const cJSON *id1 = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(out, 1), "id");
    ck_assert_str_eq(id0->valuestring, "msg_x8000");
    ck_assert_str_eq(id1->valuestring, "fco_x8001");
    cJSON_Delete(out);
    ck_assert_int_eq(rs_parse_items(arr, "items", 1, &out, &e), -EINVAL);
    ck_assert_str_eq(e.param, "items");
    cJSON_Delete(arr);
    arr = cJSON_Parse("[{\"role\": \"robot\", \"content\": \"a\"}]");
    ck_assert_int_eq(rs_parse_items(arr, "items", 20, &out, &e), -EINVAL);
    ck_assert_str_eq(e.param, "items[0].role");
    ck_assert_ptr_null(out);
    cJSON_Delete(arr);
}
END_TEST

START_TEST(test_map_error)
{
    rq_err_t e;
    rq_fail(&e, 400, "invalid_request_error", "max_completion_tokens",
            "the prompt plus max_completion_tokens (9) is too long");
    rs_map_error(&e);
    ck_assert_str_eq(e.param, "max_output_tokens");
    ck_assert_str_eq(e.message, "the prompt plus max_output_tokens (9) is too long");
    rq_fail(&e, 400, "invalid_request_error", "response_format.json_schema.schema", "x");
    rs_map_error(&e);
    ck_assert_str_eq(e.param, "text.format.schema");
    rq_fail(&e, 400, "invalid_request_error", "tools[1].function.parameters", "'%s' bad",
            "tools[1].function.parameters");
    rs_map_error(&e);
    ck_assert_str_eq(e.param, "tools[1].parameters");
    ck_assert_str_eq(e.message, "'tools[1].parameters' bad");
    rq_fail(&e, 400, "invalid_request_error", "tool_choice.function.name", "x");
    rs_map_error(&e);
    ck_assert_str_eq(e.param, "tool_choice.name");
    rq_fail(&e, 400, "invalid_request_error", "messages", "x");
    rs_map_error(&e);
    ck_assert_str_eq(e.param, "input");
}
END_TEST

static const cJSON *at(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(v != NULL, "missing %s", k);
    return v;
}

START_TEST(test_response_object)
{
    rs_req_t q;
    parse_ok("{\"input\": \"x\", \"instructions\": \"I\", \"max_output_tokens\": 5, "
             "\"metadata\": {\"a\": \"b\"}, \"tool_choice\": \"none\"}", &q);
    rs_name_input(&q, "resp_abc");
    ck_assert_str_eq(at(cJSON_GetArrayItem(q.input, 0), "id")->valuestring, "msg_abc8000");
    cJSON *out = cJSON_CreateArray();
    ck_assert_int_eq(rs_add_message(out, "resp_abc", "hi\xff", 3, NULL, "incomplete"), 0);
    ck_assert_int_eq(rs_add_call(out, "resp_abc", "call_1", "f", "{}", "completed"), 0);
    rs_result_t r = {.id = "resp_abc", .created_at = 7, .model = "m", .status = "incomplete",
                     .incomplete_reason = "max_output_tokens", .output = out, .usage = true,
                     .input_tokens = 4, .cached_tokens = 1, .output_tokens = 5};
    cJSON *o = rs_response_obj(&q, &r);
    ck_assert_ptr_nonnull(o);
    ck_assert_str_eq(at(o, "object")->valuestring, "response");
    ck_assert_str_eq(at(o, "status")->valuestring, "incomplete");
    ck_assert_str_eq(at(at(o, "incomplete_details"), "reason")->valuestring, "max_output_tokens");
    ck_assert_str_eq(at(o, "instructions")->valuestring, "I");
    ck_assert_int_eq(at(o, "max_output_tokens")->valueint, 5);
    ck_assert_str_eq(at(at(o, "metadata"), "a")->valuestring, "b");
    ck_assert_str_eq(at(o, "tool_choice")->valuestring, "none");
    ck_assert(cJSON_IsTrue(at(o, "parallel_tool_calls")) && cJSON_IsTrue(at(o, "store")));
    ck_assert(cJSON_IsNull(at(o, "previous_response_id")) && cJSON_IsNull(at(o, "error")));
    ck_assert_str_eq(at(at(at(o, "text"), "format"), "type")->valuestring, "text");
    const cJSON *u = at(o, "usage");
    ck_assert_int_eq(at(u, "input_tokens")->valueint, 4);
    ck_assert_int_eq(at(at(u, "input_tokens_details"), "cached_tokens")->valueint, 1);
    ck_assert_int_eq(at(u, "output_tokens")->valueint, 5);
    ck_assert_int_eq(at(at(u, "output_tokens_details"), "reasoning_tokens")->valueint, 0);
    ck_assert_int_eq(at(u, "total_tokens")->valueint, 9);
    const cJSON *m = cJSON_GetArrayItem(at(o, "output"), 0);
    ck_assert_str_eq(at(m, "id")->valuestring, "msg_abc0000");
    ck_assert_str_eq(at(m, "role")->valuestring, "assistant");
    const cJSON *part = cJSON_GetArrayItem(at(m, "content"), 0);
    ck_assert_str_eq(at(part, "type")->valuestring, "output_text");
    ck_assert_str_eq(at(part, "text")->valuestring, "hi\xef\xbf\xbd"); /* not UTF-8: U+FFFD */
    ck_assert_int_eq(cJSON_GetArraySize(at(part, "annotations")), 0);
    const cJSON *c = cJSON_GetArrayItem(at(o, "output"), 1);
    ck_assert_str_eq(at(c, "id")->valuestring, "fc_abc0001");
    ck_assert_str_eq(at(c, "type")->valuestring, "function_call");
    ck_assert_str_eq(at(c, "call_id")->valuestring, "call_1");
    cJSON_Delete(o);
    cJSON_Delete(out);
    rs_free(&q);
}
END_TEST

/* The event types of an SSE text, checking each frame's data names the same type and the
 * sequence numbers count from 0. */
static int frames(const char *sse, char types[][48], int max)
{
    int n = 0;
    const char *p = sse;
    while (*p && n < max) {
        ck_assert_msg(strncmp(p, "event: ", 7) == 0, "frame at %s", p);
        const char *nl = strchr(p, '\n');
        snprintf(types[n], 48, "%.*s", (int)(nl - p - 7), p + 7);
        ck_assert(strncmp(nl + 1, "data: ", 6) == 0);
        const char *end = strstr(nl, "\n\n");
        char *data = strndup(nl + 7, (size_t)(end - nl - 7));
        cJSON *j = cJSON_Parse(data);
        ck_assert_msg(j != NULL, "data %s", data);
        ck_assert_str_eq(at(j, "type")->valuestring, types[n]);
        ck_assert_int_eq(at(j, "sequence_number")->valueint, n);
        cJSON_Delete(j);
        free(data);
        n++;
        p = end + 2;
    }
    return n;
}

START_TEST(test_stream_events)
{
    rs_req_t q;
    parse_ok("{\"input\": \"x\", \"stream\": true}", &q);
    rs_stream_t st;
    sb_t out;
    sb_init(&out);
    rs_stream_init(&st, &q, "resp_s", 1, "m");
    rs_stream_begin(&st, &out);
    rs_stream_text(&st, &out, "He", 2, NULL);
    rs_stream_text(&st, &out, "llo", 3, cJSON_Parse("[{\"token\": \"llo\"}]"));
    rs_stream_call(&st, &out, "call_9", "f");
    rs_stream_args(&st, &out, "{\"a\"");
    rs_stream_args(&st, &out, ": 1}");
    rs_stream_close(&st, &out, false);
    st.res.status = "completed";
    st.res.usage = true;
    rs_stream_end(&st, &out);
    ck_assert(!st.failed && !sb_failed(&out));
    char *sse = strndup(out.buf, out.len);
    char t[32][48];
    int n = frames(sse, t, 32);
    static const char *const want[] = {
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"};
    ck_assert_int_eq(n, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(t[i], want[i]);
    ck_assert_ptr_null(strstr(sse, "[DONE]"));
    /* the final response holds the whole message and the call */
    const char *last = strstr(sse, "event: response.completed\ndata: ") + 32;
    cJSON *j = cJSON_Parse(last);
    const cJSON *o = at(at(j, "response"), "output");
    ck_assert_int_eq(cJSON_GetArraySize(o), 2);
    const cJSON *part = cJSON_GetArrayItem(at(cJSON_GetArrayItem(o, 0), "content"), 0);
    ck_assert_str_eq(at(part, "text")->valuestring, "Hello");
    ck_assert_int_eq(cJSON_GetArraySize(at(part, "logprobs")), 1);
    ck_assert_str_eq(at(cJSON_GetArrayItem(o, 1), "arguments")->valuestring, "{\"a\": 1}");
    ck_assert_str_eq(at(cJSON_GetArrayItem(o, 1), "status")->valuestring, "completed");
    ck_assert_str_eq(at(at(j, "response"), "status")->valuestring, "completed");
    cJSON_Delete(j);
    free(sse);
    rs_stream_free(&st);
    sb_free(&out);
    rs_free(&q);
}
END_TEST

/* A detached stream (background): nothing goes to out; kept, its events replay from any
 * sequence number, as the store's copy does; not kept, they are dropped. */
START_TEST(test_stream_log)
{
    rs_req_t q;
    parse_ok("{\"input\": \"x\", \"stream\": true, \"background\": true}", &q);
    rs_stream_t st, drop;
    sb_t out;
    sb_init(&out);
    rs_stream_init(&st, &q, "resp_b", 1, "m");
    rs_stream_init(&drop, &q, "resp_c", 1, "m");
    rs_stream_detach(&st, true);
    rs_stream_detach(&drop, false);
    size_t off = 99;
    ck_assert_int_eq(rs_stream_since(&st, -1, &off), 0);
    ck_assert_uint_eq(off, 0);
    ck_assert_int_eq(rs_stream_since(&st, 0, &off), -ERANGE);
    for (rs_stream_t *p = &st; p; p = p == &st ? &drop : NULL) {
        p->res.status = "queued";
        rs_stream_status(p, &out, "response.created");
        rs_stream_status(p, &out, "response.queued");
        p->res.status = "in_progress";
        rs_stream_status(p, &out, "response.in_progress");
        rs_stream_text(p, &out, "Hi", 2, NULL);
        /* the output so far: the open message with its text, its status as asked */
        for (int k = 0; k < 2; k++) {
            cJSON *so = rs_stream_output(p, k ? "incomplete" : NULL);
            const cJSON *m = cJSON_GetArrayItem(so, 0);
            ck_assert_int_eq(cJSON_GetArraySize(so), 1);
            ck_assert_str_eq(at(m, "status")->valuestring, k ? "incomplete" : "in_progress");
            ck_assert_str_eq(at(cJSON_GetArrayItem(at(m, "content"), 0), "text")->valuestring,
                             "Hi");
            cJSON_Delete(so);
        }
        ck_assert_int_eq(cJSON_GetArraySize(at(cJSON_GetArrayItem(p->output, 0), "content")),
                         0); /* the stream's own items are untouched */
        rs_stream_close(p, &out, true);
        p->res.status = "cancelled";
        rs_stream_end(p, &out);
    }
    ck_assert_uint_eq(out.len, 0);
    ck_assert_int_eq(drop.seq, st.seq);
    ck_assert_int_eq(rs_stream_since(&drop, -1, &off), -ENOENT);
    ck_assert_int_eq(st.n_ends, st.seq);
    char *log = strndup(st.log.buf, st.log.len);
    char t[32][48];
    int n = frames(log, t, 32);
    static const char *const want[] = {
        "response.created", "response.queued", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.cancelled"};
    ck_assert_int_eq(n, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < n; i++)
        ck_assert_str_eq(t[i], want[i]);
    /* after k: the frame of sequence number k + 1 starts there, in the log and in a copy */
    for (int k = -1; k < n; k++) {
        size_t a, b;
        ck_assert_int_eq(rs_stream_since(&st, k, &a), k < n ? 0 : -ERANGE);
        ck_assert_int_eq(rs_events_since(log, st.log.len, k, &b), 0);
        ck_assert_uint_eq(a, b);
        if (k + 1 < n) {
            char seq[48];
            snprintf(seq, sizeof seq, "\"sequence_number\":%d}\n\n", k + 1);
            const char *end = strstr(log + a, "\n\n");
            ck_assert_int_eq(memcmp(end - strlen(seq) + 2, seq, strlen(seq)), 0);
        } else {
            ck_assert_uint_eq(a, st.log.len);
        }
    }
    ck_assert_int_eq(rs_stream_since(&st, n, &off), -ERANGE);
    ck_assert_int_eq(rs_events_since(log, st.log.len, n, &off), -ERANGE);
    ck_assert_int_eq(rs_events_since(log, st.log.len, -2, &off), -ERANGE);
    /* the final event is the cancelled response, background true, no error */
    const char *last = strstr(log, "event: response.cancelled\ndata: ") + 32;
    cJSON *j = cJSON_Parse(last);
    ck_assert_str_eq(at(at(j, "response"), "status")->valuestring, "cancelled");
    ck_assert(cJSON_IsTrue(at(at(j, "response"), "background")));
    ck_assert(cJSON_IsNull(at(at(j, "response"), "error")));
    ck_assert_str_eq(at(cJSON_GetArrayItem(at(at(j, "response"), "output"), 0),
                        "status")->valuestring, "incomplete");
    cJSON_Delete(j);

    /* the store keeps the events with their response while they fit its bytes */
    rs_store_t *s;
    ck_assert_int_eq(rs_store_create(&s, 10, 2 * st.log.len + 2000), 0);
    const char *ev = NULL;
    size_t len = 0;
    ck_assert_int_eq(rs_store_set_events(s, "resp_b", log, st.log.len), -ENOENT);
    ck_assert_int_eq(rs_store_put(s, "a", "{}", NULL, NULL), 0);
    ck_assert_int_eq(rs_store_put(s, "resp_b", "{}", NULL, NULL), 0);
    ck_assert_int_eq(rs_store_events(s, "resp_b", &ev, &len), -ENODATA);
    size_t before = rs_store_bytes(s);
    ck_assert_int_eq(rs_store_set_events(s, "resp_b", log, st.log.len), 0);
    ck_assert_uint_eq(rs_store_bytes(s), before + st.log.len);
    ck_assert_int_eq(rs_store_events(s, "resp_b", &ev, &len), 0);
    ck_assert(len == st.log.len && memcmp(ev, log, len) == 0);
    ck_assert_int_eq(rs_store_put(s, "c", "{}", NULL, NULL), 0);
    /* more than the whole store: -E2BIG; else the others make room */
    char *twice = malloc(2 * st.log.len + 2000);
    memset(twice, 'e', 2 * st.log.len + 2000);
    ck_assert_int_eq(rs_store_set_events(s, "c", twice, 2 * st.log.len + 2000), -E2BIG);
    ck_assert_int_eq(rs_store_set_events(s, "c", twice, st.log.len + 1900), 0);
    ck_assert(rs_store_bytes(s) <= 2 * st.log.len + 2000);
    ck_assert_int_eq(rs_store_get(s, "a", NULL, NULL, NULL), -ENOENT); /* the oldest went */
    ck_assert_int_eq(rs_store_get(s, "c", NULL, NULL, NULL), 0);
    ck_assert_int_eq(rs_store_del(s, "c"), 0);
    rs_store_free(s);
    free(twice);
    free(log);
    rs_stream_free(&st);
    rs_stream_free(&drop);
    sb_free(&out);
    rs_free(&q);
}
END_TEST

static cJSON *items(int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        char id[16];
        snprintf(id, sizeof id, "i%d", i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", id);
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

START_TEST(test_store)
{
    rs_store_t *s;
    ck_assert_int_eq(rs_store_create(&s, 2, 1 << 20), 0);
    cJSON *in = items(1);
    ck_assert_int_eq(rs_store_put(s, "a", "{\"id\":\"a\"}", in, NULL), 0);
    ck_assert_int_eq(rs_store_put(s, "b", "{\"id\":\"b\"}", in, NULL), 0);
    const char *body;
    const cJSON *gi, *go;
    ck_assert_int_eq(rs_store_get(s, "a", &body, &gi, &go), 0); /* a is now the newest */
    ck_assert_str_eq(body, "{\"id\":\"a\"}");
    ck_assert(cJSON_Compare(gi, in, true) && cJSON_GetArraySize(go) == 0);
    ck_assert_int_eq(rs_store_put(s, "c", "{\"id\":\"c\"}", in, NULL), 0);
    ck_assert_int_eq(rs_store_count(s), 2);
    ck_assert_int_eq(rs_store_get(s, "b", NULL, NULL, NULL), -ENOENT);
    ck_assert_int_eq(rs_store_get(s, "a", NULL, NULL, NULL), 0);
    ck_assert_int_eq(rs_store_del(s, "a"), 0);
    ck_assert_int_eq(rs_store_del(s, "a"), -ENOENT);
    ck_assert_int_eq(rs_store_count(s), 1);
    rs_store_free(s);

    /* bytes: each entry below is about 1 KiB; 3 KiB hold at most two of them */
    char big[1001];
    memset(big, 'x', 1000);
    big[1000] = 0;
    ck_assert_int_eq(rs_store_create(&s, 100, 3000), 0);
    for (int i = 0; i < 10; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        ck_assert_int_eq(rs_store_put(s, id, big, in, NULL), 0);
        ck_assert(rs_store_bytes(s) <= 3000);
    }
    ck_assert_int_eq(rs_store_count(s), 2);
    ck_assert_int_eq(rs_store_get(s, "r9", NULL, NULL, NULL), 0);
    ck_assert_int_eq(rs_store_get(s, "r7", NULL, NULL, NULL), -ENOENT);
    char huge[4000];
    memset(huge, 'y', sizeof huge - 1);
    huge[sizeof huge - 1] = 0;
    ck_assert_int_eq(rs_store_put(s, "h", huge, in, NULL), -E2BIG); /* larger than all */
    ck_assert_int_eq(rs_store_get(s, "h", NULL, NULL, NULL), -ENOENT);
    ck_assert_int_eq(rs_store_put(s, "r9", huge, in, NULL), -E2BIG); /* the old one stays */
    ck_assert_int_eq(rs_store_get(s, "r9", &body, NULL, NULL), 0);
    ck_assert_str_eq(body, big);
    ck_assert_int_eq(rs_store_count(s), 2);
    rs_store_free(s);

    ck_assert_int_eq(rs_store_create(&s, 0, 1 << 20), 0); /* keeps none */
    ck_assert_int_eq(rs_store_put(s, "a", "{}", in, NULL), 0);
    ck_assert_int_eq(rs_store_count(s), 0);
    rs_store_free(s);
    cJSON_Delete(in);
}
END_TEST

START_TEST(test_input_items)
{
    cJSON *in = items(5);
    char *t = rs_input_items(in, true, 2, NULL);
    cJSON *j = cJSON_Parse(t);
    ck_assert_str_eq(at(j, "first_id")->valuestring, "i4");
    ck_assert_str_eq(at(j, "last_id")->valuestring, "i3");
    ck_assert(cJSON_IsTrue(at(j, "has_more")));
    cJSON_Delete(j);
    free(t);
    t = rs_input_items(in, false, 20, "i2");
    j = cJSON_Parse(t);
    ck_assert_int_eq(cJSON_GetArraySize(at(j, "data")), 2);
    ck_assert_str_eq(at(j, "first_id")->valuestring, "i3");
    ck_assert(cJSON_IsFalse(at(j, "has_more")));
    cJSON_Delete(j);
    free(t);
    t = rs_input_items(in, false, 20, "nope");
    j = cJSON_Parse(t);
    ck_assert_int_eq(cJSON_GetArraySize(at(j, "data")), 0);
    ck_assert(cJSON_IsNull(at(j, "first_id")));
    cJSON_Delete(j);
    free(t);
    cJSON_Delete(in);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("responses");
    TCase *tc = tcase_create("responses");
    tcase_add_test(tc, test_translate);
    tcase_add_test(tc, test_stream_log);
    tcase_add_test(tc, test_bad_bodies);
    tcase_add_test(tc, test_map_error);
    tcase_add_test(tc, test_response_object);
    tcase_add_test(tc, test_stream_events);
    tcase_add_test(tc, test_store);
    tcase_add_test(tc, test_input_items);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(suite());
}
