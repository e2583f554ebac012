/* fuzz_anthropic.c: libFuzzer target for the Messages API front (server/anthropic.h).  The
 * input is a /v1/messages body (also read as a count_tokens body): a refusal must be a 4xx
 * with a message, whose Anthropic error body is valid JSON; an accepted body must translate
 * into a chat completions body that request.c parses (or refuses with a 4xx, renamed back by
 * an_map_error); the message object and the stream's events built around the input's bytes
 * must be valid JSON.  Seeds in tests/fuzz/corpus/fuzz_anthropic/. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/anthropic.h"
#include "tests/fuzz/fuzz.h"

static void check_json(char *js)
{
    CHECK(js);
    cJSON *root = cJSON_Parse(js);
    CHECK(root);
    cJSON_Delete(root);
    free(js);
}

static void check_error(const rq_err_t *e)
{
    CHECK(e->status >= 400 && e->status < 600 && e->message[0] && e->type);
    check_json(an_error(e->status, e->message));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    rq_limits_t lim;
    rq_limits_default(&lim);
    for (int count = 0; count < 2; count++) {
        an_req_t q;
        rq_err_t e;
        memset(&e, 0, sizeof e);
        int rc = an_parse(body, size, count, &q, &e);
        if (rc) {
            CHECK(rc == -EINVAL || rc == -ENOMEM);
            check_error(&e);
            continue;
        }
        char *chat = NULL;
        rc = an_chat_body(&q, &chat, &e);
        if (rc) {
            CHECK(rc == -ENOMEM);
            an_free(&q);
            continue;
        }
        rq_t r;
        memset(&e, 0, sizeof e);
        rc = rq_parse(RQ_CHAT, chat, strlen(chat), &lim, &r, &e);
        free(chat);
        if (rc) {
            CHECK(rc == -EINVAL || rc == -ENOMEM);
            an_map_error(&e);
            check_error(&e);
        } else {
            CHECK(r.n_msgs > 0);
            rq_free(&r);
        }
        an_free(&q);
    }
    cJSON *c = cJSON_CreateArray();
    CHECK(c);
    CHECK(an_add_thinking(c, body, size) == 0 && an_add_text(c, body, size) == 0);
    char *args = strndup(body, size);
    CHECK(args);
    int trc = an_add_tool_use(c, "call_x", "f", args);
    CHECK(trc == 0 || trc == -EINVAL);
    an_result_t res = {.id = "msg_fuzz", .model = "m", .stop_reason = "end_turn"};
    check_json(an_message(&res, c));
    an_stream_t st;
    sb_t sse;
    sb_init(&sse);
    an_stream_init(&st, "msg_fuzz", "m", 3);
    an_stream_begin(&st, &sse);
    an_stream_thinking(&st, &sse, body, size);
    an_stream_text(&st, &sse, body, size);
    an_stream_tool(&st, &sse, "call_x", "f");
    an_stream_args(&st, &sse, args);
    an_stream_end(&st, &sse, &res);
    CHECK(!st.failed && !sb_failed(&sse));
    free(args);
    sb_free(&sse);
    return 0;
}
