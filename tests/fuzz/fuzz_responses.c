/* fuzz_responses.c: libFuzzer target for the Responses API front (server/responses.h).  The
 * input is a /v1/responses body: a refusal must be a 4xx with a message and a param that
 * serialize to valid JSON; an accepted body must translate into a chat completions body that
 * request.c parses (or refuses with a 4xx, renamed back by rs_map_error), also after a
 * stored history (the body's own input items, as previous_response_id would bring them);
 * its response object and its stream's events must be valid JSON.  Seeds in
 * tests/fuzz/corpus/fuzz_responses/. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/openai.h"
#include "server/responses.h"
#include "tests/fuzz/fuzz.h"

static void check_error(const rq_err_t *e)
{
    CHECK(e->status >= 400 && e->status < 600 && e->message[0] && e->type);
    char *js = oai_error_from(e);
    CHECK(js);
    cJSON *root = cJSON_Parse(js);
    CHECK(root);
    cJSON_Delete(root);
    free(js);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    rs_req_t q;
    rq_err_t e;
    memset(&e, 0, sizeof e);
    int rc = rs_parse(body, size, &q, &e);
    if (rc) {
        CHECK(rc == -EINVAL || rc == -ENOMEM);
        check_error(&e);
        return 0;
    }
    rs_name_input(&q, "resp_fuzz");
    rq_limits_t lim;
    rq_limits_default(&lim);
    for (int with_history = 0; with_history < 2; with_history++) {
        char *chat = NULL;
        memset(&e, 0, sizeof e);
        rc = rs_chat_body(&q, with_history ? q.input : NULL, &chat, &e);
        if (rc) {
            CHECK(rc == -EINVAL || rc == -ENOMEM);
            check_error(&e);
            continue;
        }
        rq_t r;
        memset(&e, 0, sizeof e);
        rc = rq_parse(RQ_CHAT, chat, strlen(chat), &lim, &r, &e);
        free(chat);
        if (rc) {
            CHECK(rc == -EINVAL || rc == -ENOMEM);
            rs_map_error(&e);
            check_error(&e);
            continue;
        }
        CHECK(r.n_msgs > 0 && r.n == 1);
        rq_free(&r);
    }
    cJSON *out = cJSON_CreateArray();
    CHECK(out);
    CHECK(rs_add_message(out, "resp_fuzz", body, size, NULL, "completed") == 0);
    rs_result_t res = {.id = "resp_fuzz", .model = "m", .status = "completed", .output = out,
                       .usage = true};
    cJSON *o = rs_response_obj(&q, &res);
    CHECK(o);
    char *t = cJSON_PrintUnformatted(o);
    CHECK(t);
    cJSON *back = cJSON_Parse(t);
    CHECK(back);
    cJSON_Delete(back);
    free(t);
    cJSON_Delete(o);
    cJSON_Delete(out);
    rs_stream_t st;
    sb_t sse;
    sb_init(&sse);
    rs_stream_init(&st, &q, "resp_fuzz", 0, "m");
    rs_stream_begin(&st, &sse);
    rs_stream_text(&st, &sse, body, size, NULL);
    rs_stream_call(&st, &sse, "call_x", "f");
    rs_stream_args(&st, &sse, "{}");
    rs_stream_close(&st, &sse, true);
    st.res.status = "incomplete";
    rs_stream_end(&st, &sse);
    CHECK(!st.failed && !sb_failed(&sse));
    rs_stream_free(&st);
    sb_free(&sse);
    rs_free(&q);
    return 0;
}
