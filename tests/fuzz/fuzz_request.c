/* fuzz_request.c: libFuzzer target for the OpenAI request bodies (server/request.h) and the
 * JSON that answers them (server/openai.h), and llama-server's /infill body with its native
 * answer (server/infill.h).  Byte 0 picks the endpoint (bit 7: /infill) and the limits; the
 * rest is the body.  A parsed request must hold only values in range; the checks that need
 * the model must answer 0 or a 400; a refusal must be a 4xx with a message and a param that
 * serialize to valid JSON and UTF-8.  rq_utf8_valid must agree with the tokenizer's UTF-8
 * decoder, oai_utf8_clean must always give valid UTF-8 and keep valid text unchanged, and a
 * parsed prompt or message must come back unchanged through a response's JSON (and valid
 * through /detokenize's).  Seeds in tests/fuzz/corpus/fuzz_request/, fuzz_request.dict. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/unicode.h"
#include "server/infill.h"
#include "server/native.h"
#include "server/openai.h"
#include "server/request.h"
#include "tests/fuzz/fuzz.h"

static bool utf8_ok(const char *s)
{
    return uni_valid((const uint8_t *)s, strlen(s));
}

/* The error body: valid UTF-8 JSON with the OpenAI error shape. */
static void check_error(const rq_err_t *e)
{
    CHECK(e->status >= 400 && e->status < 600 && e->message[0] && e->type);
    char *js = oai_error_from(e);
    CHECK(js && utf8_ok(js));
    cJSON *root = cJSON_Parse(js);
    CHECK(root);
    const cJSON *er = cJSON_GetObjectItemCaseSensitive(root, "error");
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(er, "message")));
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(er, "type")));
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(er, "param");
    CHECK(e->param[0] ? cJSON_IsString(p) : cJSON_IsNull(p));
    cJSON_Delete(root);
    free(js);
}

/* text must come back unchanged as a completion's choice text. */
static void roundtrip(const char *text, size_t len, int kind)
{
    oai_choice_t ch = {.index = 0, .text = text, .text_len = len, .finish_reason = "stop"};
    oai_resp_t r = {.kind = kind, .id = "cmpl-x", .model = "m", .created = 1,
                    .choices = &ch, .n_choices = 1, .usage = true};
    char *js = oai_response(&r);
    CHECK(js && utf8_ok(js));
    cJSON *root = cJSON_Parse(js);
    CHECK(root);
    const cJSON *c0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0);
    const cJSON *t = kind == RQ_CHAT
                         ? cJSON_GetObjectItemCaseSensitive(
                               cJSON_GetObjectItemCaseSensitive(c0, "message"), "content")
                         : cJSON_GetObjectItemCaseSensitive(c0, "text");
    CHECK(cJSON_IsString(t) && strlen(t->valuestring) == len &&
          memcmp(t->valuestring, text, len) == 0);
    cJSON_Delete(root);
    free(js);
}

static void check_parsed(const rq_t *r, const rq_limits_t *lim, int kind)
{
    CHECK(r->kind == kind);
    CHECK(!r->model || utf8_ok(r->model));
    if (kind == RQ_COMPLETION || kind == RQ_TOKENIZE || kind == RQ_DETOKENIZE)
        CHECK(r->n_prompts >= 1 && r->prompts);
    for (size_t i = 0; i < r->n_prompts; i++) {
        const rq_prompt_t *p = &r->prompts[i];
        if (p->text) {
            CHECK(strlen(p->text) == p->text_len && utf8_ok(p->text));
            roundtrip(p->text, p->text_len, RQ_COMPLETION);
            char *j = oai_detokenize(p->text, p->text_len);
            CHECK(j && utf8_ok(j));
            free(j);
        } else if (p->segs) {
            /* /completion's mixed prompt: texts and runs of ids, none empty */
            CHECK(kind == RQ_NATIVE && p->n_segs > 0 && !p->ids);
            for (size_t k = 0; k < p->n_segs; k++) {
                const rq_seg_t *sg = &p->segs[k];
                CHECK(sg->text ? strlen(sg->text) == sg->text_len && utf8_ok(sg->text) && !sg->ids
                               : sg->ids && sg->n_ids > 0);
                for (size_t t = 0; !sg->text && t < sg->n_ids; t++)
                    CHECK(sg->ids[t] >= 0);
            }
        } else {
            CHECK(p->ids || p->n_ids == 0);
            CHECK(p->n_ids > 0 || kind == RQ_DETOKENIZE);
            for (size_t k = 0; k < p->n_ids; k++)
                CHECK(p->ids[k] >= 0);
        }
    }
    if (kind == RQ_CHAT) {
        CHECK(r->n_msgs >= 1 && r->msgs);
        for (size_t i = 0; i < r->n_msgs; i++) {
            CHECK(r->msgs[i].role && r->msgs[i].content && utf8_ok(r->msgs[i].content));
            roundtrip(r->msgs[i].content, strlen(r->msgs[i].content), RQ_CHAT);
        }
    }
    if (kind == RQ_NATIVE) {
        CHECK(r->n_prompts >= 1 && r->prompts && r->n_probs >= 0 && r->n_probs <= 20);
        CHECK(r->logprobs == (r->n_probs > 0 ? r->n_probs : -1) && !r->echo);
        CHECK(r->max_tokens != 0);
        /* its settings object prints, for any parsed request */
        nat_params_t np = {.n_predict = r->max_tokens > 0 ? r->max_tokens : -1,
                           .s = &r->sampling, .stop = (const char *const *)r->stop,
                           .n_stop = r->n_stop, .n_probs = r->n_probs};
        cJSON *o = nat_params_json(&np);
        CHECK(cJSON_IsObject(o));
        cJSON_Delete(o);
    }
    if (kind == RQ_INFILL) {
        CHECK(r->n_prompts == 1 && r->prompts[0].text && r->input_prefix && r->input_suffix);
        CHECK(strlen(r->input_prefix) == r->input_prefix_len && utf8_ok(r->input_prefix));
        CHECK(strlen(r->input_suffix) == r->input_suffix_len && utf8_ok(r->input_suffix));
        CHECK(r->n_extra <= RQ_MAX_EXTRA && (r->n_extra == 0 || r->extra));
        for (size_t i = 0; i < r->n_extra; i++) {
            const rq_extra_t *x = &r->extra[i];
            CHECK(x->text && strlen(x->text) == x->text_len && utf8_ok(x->text));
            CHECK(!x->filename || (strlen(x->filename) == x->filename_len &&
                                   utf8_ok(x->filename)));
        }
        CHECK(r->n_response_fields >= 0 && r->n_response_fields <= RQ_MAX_RESPONSE_FIELDS);
        CHECK(r->n == 1 && r->logprobs == -1 && !r->echo && r->max_tokens != 0);
        /* the native answer with the client's fields: valid JSON, an object */
        inf_answer_t a = {.content = r->input_prefix, .content_len = r->input_prefix_len,
                          .stop = true, .model = "m", .stop_type = "eos",
                          .fields = (const char *const *)r->response_fields,
                          .n_fields = r->n_response_fields};
        char *js = inf_answer_json(&a);
        CHECK(js && utf8_ok(js));
        cJSON *o = cJSON_Parse(js);
        CHECK(cJSON_IsObject(o));
        cJSON_Delete(o);
        free(js);
    } else if (kind != RQ_COMPLETION && kind != RQ_CHAT && kind != RQ_NATIVE) {
        return;
    }
    const eng_sampling_t *s = &r->sampling;
    CHECK(r->max_tokens >= 0 || r->max_tokens == RQ_TO_CONTEXT ||
          r->max_tokens == RQ_PROMPT_ONLY);
    CHECK(r->n >= 1 && (size_t)r->n * (r->n_prompts ? r->n_prompts : 1) <= (size_t)lim->max_n);
    CHECK(s->temperature >= 0 && (s->temperature <= 2 || kind == RQ_NATIVE));
    CHECK(s->top_p > 0 && s->top_p <= 1 && s->min_p >= 0 && s->min_p <= 1);
    CHECK(fabsf(s->presence_penalty) <= 2 && fabsf(s->frequency_penalty) <= 2);
    CHECK(s->repeat_penalty > 0 && s->repeat_penalty <= 10 && s->top_k >= 0);
    CHECK(s->repeat_last_n >= -1);
    CHECK(r->logprobs >= -1 && r->logprobs <= 20 && s->n_probs == r->logprobs);
    CHECK(r->n_stop >= 0 && r->n_stop <= lim->max_stop && (r->n_stop == 0 || r->stop));
    for (int i = 0; i < r->n_stop; i++) {
        size_t n = strlen(r->stop[i]);
        CHECK(n > 0 && n <= (size_t)lim->max_stop_len && utf8_ok(r->stop[i]));
    }
    CHECK(r->n_bias >= 0 && r->n_bias <= lim->max_logit_bias);
    CHECK(s->n_logit_bias == r->n_bias && (r->n_bias == 0 || s->logit_bias == r->bias));
    for (int i = 0; i < r->n_bias; i++)
        CHECK(r->bias[i].token >= 0 && (fabsf(r->bias[i].bias) <= 100 ||
                                         r->bias[i].bias == -INFINITY));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    /* UTF-8: the request validator against the tokenizer's decoder; the cleaner. */
    CHECK(rq_utf8_valid(body, len) == uni_valid((const uint8_t *)body, len));
    char *clean = oai_utf8_clean(body, len);
    CHECK(clean && utf8_ok(clean));
    if (uni_valid((const uint8_t *)body, len) && !memchr(body, 0, len))
        CHECK(strlen(clean) == len && memcmp(clean, body, len) == 0);
    free(clean);

    int kind = data[0] & 0x80 ? (data[0] & 0x40 ? RQ_NATIVE : RQ_INFILL)
                              : RQ_COMPLETION + (data[0] & 3);
    rq_limits_t lim;
    rq_limits_default(&lim);
    if (data[0] & 4) { /* tight limits */
        lim.max_n = 2;
        lim.max_stop = 2;
        lim.max_stop_len = 4;
        lim.max_logit_bias = 2;
    }
    rq_t r;
    rq_err_t e;
    memset(&e, 0, sizeof e);
    int rc = rq_parse(kind, body, len, &lim, &r, &e);
    if (rc) {
        CHECK(rc == -EINVAL || rc == -ENOMEM);
        CHECK(r.prompts == NULL && r.msgs == NULL && r.stop == NULL && r.bias == NULL);
        check_error(&e);
        CHECK(e.status == 400 || rc == -ENOMEM);
        return 0;
    }
    check_parsed(&r, &lim, kind);

    /* The model-dependent checks, on a 260-token vocabulary and a context of 64. */
    memset(&e, 0, sizeof e);
    if (rq_check_vocab(&r, 260, &e) == 0) {
        for (size_t i = 0; i < r.n_prompts; i++)
            for (size_t k = 0; !r.prompts[i].text && k < r.prompts[i].n_ids; k++)
                CHECK(r.prompts[i].ids[k] < 260);
    } else {
        CHECK(e.status == 400);
        check_error(&e);
    }
    if (kind == RQ_COMPLETION || kind == RQ_CHAT || kind == RQ_INFILL || kind == RQ_NATIVE) {
        size_t n_prompt = (size_t)((data[0] >> 3) & 15) * 6; /* 0 .. 90 tokens */
        int mt = -1;
        memset(&e, 0, sizeof e);
        if (rq_resolve_max_tokens(&r, n_prompt, 64, &mt, &e) == 0) {
            CHECK(n_prompt > 0 && mt >= (r.max_tokens == RQ_PROMPT_ONLY ? 0 : 1) &&
                  n_prompt + (size_t)mt <= 64);
            CHECK(r.max_tokens == 0 || r.max_tokens == RQ_TO_CONTEXT || mt == r.max_tokens ||
                  (r.max_tokens == RQ_PROMPT_ONLY && mt == 0) ||
                  ((kind == RQ_INFILL || kind == RQ_NATIVE) && r.max_tokens > mt));
        } else {
            CHECK(e.status == 400);
            check_error(&e);
        }
    }
    rq_free(&r);
    return 0;
}
