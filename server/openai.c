/* openai.c: OpenAI-shaped JSON with cJSON.  A NULL from any cJSON call (out of memory)
 * propagates to a NULL result; nothing here aborts. */
#include <config.h>

#include "server/openai.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *oai_utf8_clean(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    /* Worst case every byte becomes the 3-byte U+FFFD. */
    char *out = malloc(len * 3 + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    while (i < len) {
        size_t n = 1;
        unsigned c = s[i];
        if (c >= 0xc2 && c <= 0xdf)
            n = 2;
        else if (c >= 0xe0 && c <= 0xef)
            n = 3;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 4;
        if (c != 0 && (c < 0x80 || (n > 1 && i + n <= len && rq_utf8_valid(str + i, n)))) {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    return out;
}

cJSON *oai_dup(const cJSON *v)
{
    return cJSON_Duplicate(v, true);
}

cJSON *oai_str_n(const char *s, size_t len)
{
    char *c = oai_utf8_clean(s ? s : "", s ? len : 0);
    if (!c)
        return NULL;
    cJSON *j = cJSON_CreateString(c);
    free(c);
    return j;
}

bool oai_put(cJSON *obj, const char *key, cJSON *item)
{
    if (!item)
        return false;
    if (key ? cJSON_AddItemToObject(obj, key, item) : cJSON_AddItemToArray(obj, item))
        return true;
    cJSON_Delete(item);
    return false;
}

char *oai_print(cJSON *obj, bool ok)
{
    char *s = ok ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return s;
}

/* A token's bytes (render special tokens, so "</s>" shows as itself). */
static size_t token_bytes(const tok_t *tok, int32_t id, char *buf, size_t cap)
{
    size_t len = 0;
    if (!tok || tok_piece(tok, id, true, buf, cap, &len) != 0)
        len = (size_t)snprintf(buf, cap, "<%d>", (int)id);
    return len < cap ? len : cap - 1;
}

static cJSON *token_string(const tok_t *tok, int32_t id)
{
    char buf[512];
    size_t n = token_bytes(tok, id, buf, sizeof buf);
    return oai_str_n(buf, n);
}

static cJSON *bytes_array(const tok_t *tok, int32_t id)
{
    char buf[512];
    size_t n = token_bytes(tok, id, buf, sizeof buf);
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && i < n; i++)
        if (!oai_put(a, NULL, cJSON_CreateNumber((unsigned char)buf[i]))) {
            cJSON_Delete(a);
            return NULL;
        }
    return a;
}

/* A completions top_logprobs entry: {"<token text>": logprob} of the n best alternatives
 * (best first), and with self the token itself when it is not among them. */
static bool top_put(const oai_resp_t *r, cJSON *t, int32_t id, float logprob)
{
    char buf[512];
    size_t n = token_bytes(r->tok, id, buf, sizeof buf);
    char *key = oai_utf8_clean(buf, n);
    bool ok = key && !cJSON_GetObjectItemCaseSensitive(t, key)
                  ? oai_put(t, key, cJSON_CreateNumber(logprob))
                  : key != NULL; /* two ids with one spelling: keep the better one */
    free(key);
    return ok;
}

static cJSON *top_object(const oai_resp_t *r, const oai_lp_t *lp, int n, bool self)
{
    cJSON *t = cJSON_CreateObject();
    bool ok = t != NULL, have_self = false;
    for (int k = 0; ok && k < n; k++) {
        ok = top_put(r, t, lp->top[k].token, lp->top[k].logprob);
        have_self |= lp->top[k].token == lp->token;
    }
    if (ok && self && !have_self)
        ok = top_put(r, t, lp->token, lp->logprob);
    if (!ok) {
        cJSON_Delete(t);
        return NULL;
    }
    return t;
}

/* vLLM's prompt_logprobs: [null, {"<id>": {"logprob", "rank", "decoded_token"}, ...}, ...]
 * over the prompt's positions: the prompt token, then the best n alternatives (rank k + 1). */
static bool plp_put(const oai_resp_t *r, cJSON *d, int32_t id, float logprob, int rank)
{
    char key[16];
    snprintf(key, sizeof key, "%d", (int)id);
    if (cJSON_GetObjectItemCaseSensitive(d, key))
        return true;
    cJSON *o = cJSON_CreateObject();
    return oai_put(d, key, o) && oai_put(o, "logprob", cJSON_CreateNumber(logprob)) &&
           oai_put(o, "rank", cJSON_CreateNumber(rank)) &&
           oai_put(o, "decoded_token", token_string(r->tok, id));
}

static cJSON *prompt_logprobs(const oai_resp_t *r, const oai_choice_t *c)
{
    cJSON *a = cJSON_CreateArray();
    bool ok = a != NULL;
    for (size_t i = 0; ok && i < c->n_plp_ids; i++) {
        const oai_lp_t *pl = i >= 1 && i - 1 < c->n_plp ? &c->plp[i - 1] : NULL;
        if (!pl) {
            ok = oai_put(a, NULL, cJSON_CreateNull());
            continue;
        }
        cJSON *d = cJSON_CreateObject();
        ok = oai_put(a, NULL, d) && plp_put(r, d, pl->token, pl->logprob, pl->rank);
        for (int k = 0; ok && k < FD_MIN(pl->n_top, c->prompt_top); k++)
            ok = plp_put(r, d, pl->top[k].token, pl->top[k].logprob, k + 1);
    }
    if (!ok) {
        cJSON_Delete(a);
        return NULL;
    }
    return a;
}

/* Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}. */
static cJSON *completion_logprobs(const oai_resp_t *r, const oai_choice_t *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *toks = cJSON_CreateArray(), *lps = cJSON_CreateArray(), *tops = cJSON_CreateArray(),
          *offs = cJSON_CreateArray();
    bool ok = oai_put(o, "tokens", toks) && oai_put(o, "token_logprobs", lps) &&
              oai_put(o, "top_logprobs", tops) && oai_put(o, "text_offset", offs);
    size_t off = 0;
    for (size_t i = 0; ok && i < c->n_echo; i++) {
        char buf[512];
        size_t n = token_bytes(r->tok, c->echo_ids[i], buf, sizeof buf);
        const oai_lp_t *pl = i >= 1 && i - 1 < c->n_plp ? &c->plp[i - 1] : NULL;
        ok = oai_put(toks, NULL, oai_str_n(buf, n)) &&
             oai_put(lps, NULL, pl ? cJSON_CreateNumber(pl->logprob) : cJSON_CreateNull()) &&
             oai_put(tops, NULL, pl ? top_object(r, pl, FD_MIN(pl->n_top, c->echo_top), true)
                                : cJSON_CreateNull()) &&
             oai_put(offs, NULL, cJSON_CreateNumber((double)off));
        off += n;
    }
    for (size_t i = 0; ok && i < c->n_lp; i++) {
        const oai_lp_t *lp = &c->lp[i];
        ok = oai_put(toks, NULL, token_string(r->tok, lp->token)) &&
             oai_put(lps, NULL, cJSON_CreateNumber(lp->logprob)) &&
             oai_put(offs, NULL, cJSON_CreateNumber((double)lp->text_offset));
        ok = ok && oai_put(tops, NULL, top_object(r, lp, lp->n_top, false));
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *chat_token(const tok_t *tok, int32_t id, float logprob)
{
    cJSON *o = cJSON_CreateObject();
    if (oai_put(o, "token", token_string(tok, id)) &&
        oai_put(o, "logprob", cJSON_CreateNumber(logprob)) &&
        oai_put(o, "bytes", bytes_array(tok, id)))
        return o;
    cJSON_Delete(o);
    return NULL;
}

/* Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": null}
 * (the SDKs' types require "refusal"; fusiond never refuses). */
static cJSON *chat_logprobs(const oai_resp_t *r, const oai_choice_t *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *content = cJSON_CreateArray();
    bool ok = oai_put(o, "content", content) && oai_put(o, "refusal", cJSON_CreateNull());
    for (size_t i = 0; ok && i < c->n_lp; i++) {
        const oai_lp_t *lp = &c->lp[i];
        cJSON *t = chat_token(r->tok, lp->token, lp->logprob);
        cJSON *tops = cJSON_CreateArray();
        ok = oai_put(content, NULL, t) && oai_put(t, "top_logprobs", tops);
        for (int k = 0; ok && k < lp->n_top; k++)
            ok = oai_put(tops, NULL, chat_token(r->tok, lp->top[k].token, lp->top[k].logprob));
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

char *oai_token_logprobs(const tok_t *tok, const oai_lp_t *lp, size_t n)
{
    oai_resp_t r = {.tok = tok};
    oai_choice_t c = {.lp = lp, .n_lp = n};
    cJSON *o = chat_logprobs(&r, &c);
    cJSON *content = cJSON_DetachItemFromObjectCaseSensitive(o, "content");
    cJSON_Delete(o);
    return oai_print(content, content != NULL);
}

static cJSON *timings_obj(const oai_timings_t *t)
{
    cJSON *o = cJSON_CreateObject();
    double prompt_per_s = t->prompt_ms > 0 ? 1e3 * (double)t->prompt_n / t->prompt_ms : 0;
    double pred_per_s = t->predicted_ms > 0 ? 1e3 * (double)t->predicted_n / t->predicted_ms : 0;
    bool ok = oai_put(o, "queue_ms", cJSON_CreateNumber(t->queue_ms)) &&
              oai_put(o, "prompt_n", cJSON_CreateNumber((double)t->prompt_n)) &&
              oai_put(o, "prompt_ms", cJSON_CreateNumber(t->prompt_ms)) &&
              oai_put(o, "prompt_per_token_ms",
                  cJSON_CreateNumber(t->prompt_n ? t->prompt_ms / (double)t->prompt_n : 0)) &&
              oai_put(o, "prompt_per_second", cJSON_CreateNumber(prompt_per_s)) &&
              oai_put(o, "ttft_ms", cJSON_CreateNumber(t->ttft_ms)) &&
              oai_put(o, "predicted_n", cJSON_CreateNumber((double)t->predicted_n)) &&
              oai_put(o, "predicted_ms", cJSON_CreateNumber(t->predicted_ms)) &&
              oai_put(o, "predicted_per_token_ms",
                  cJSON_CreateNumber(t->predicted_n ? t->predicted_ms / (double)t->predicted_n
                                                    : 0)) &&
              oai_put(o, "predicted_per_second", cJSON_CreateNumber(pred_per_s)) &&
              oai_put(o, "total_ms", cJSON_CreateNumber(t->total_ms));
    if (ok && t->device_ms > 0)
        ok = oai_put(o, "device_ms", cJSON_CreateNumber(t->device_ms));
    if (ok && t->timed_out)
        ok = oai_put(o, "timed_out", cJSON_CreateTrue());
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* [{"index"?, "id", "type": "function", "function": {"name", "arguments"}}]: whole in a
 * message (no index), in pieces with their index in a chunk. */
static cJSON *tool_calls(const oai_choice_t *c, bool chunk)
{
    cJSON *a = cJSON_CreateArray();
    bool ok = a != NULL;
    for (size_t i = 0; ok && i < c->n_calls; i++) {
        const oai_tool_call_t *t = &c->calls[i];
        cJSON *o = cJSON_CreateObject();
        ok = oai_put(a, NULL, o);
        if (ok && chunk)
            ok = oai_put(o, "index", cJSON_CreateNumber(t->index));
        if (ok && t->id)
            ok = oai_put(o, "id", cJSON_CreateString(t->id)) &&
                 oai_put(o, "type", cJSON_CreateString("function"));
        cJSON *fn = ok ? cJSON_CreateObject() : NULL;
        ok = ok && oai_put(o, "function", fn);
        if (ok && t->name)
            ok = oai_put(fn, "name", cJSON_CreateString(t->name));
        if (ok && t->arguments)
            ok = oai_put(fn, "arguments", oai_str_n(t->arguments, strlen(t->arguments)));
    }
    if (!ok) {
        cJSON_Delete(a);
        return NULL;
    }
    return a;
}

static cJSON *choice_obj(const oai_resp_t *r, const oai_choice_t *c)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = oai_put(o, "index", cJSON_CreateNumber(c->index));
    if (r->kind == RQ_CHAT) {
        cJSON *m = cJSON_CreateObject();
        ok = ok && oai_put(o, r->chunk ? "delta" : "message", m);
        if (ok && (!r->chunk || c->role))
            ok = oai_put(m, "role", cJSON_CreateString("assistant"));
        if (ok && (!r->chunk || c->role || c->text_len))
            ok = oai_put(m, "content", c->content_null && !r->chunk ? cJSON_CreateNull()
                                                                : oai_str_n(c->text, c->text_len));
        if (ok && c->reasoning)
            ok = oai_put(m, "reasoning_content", oai_str_n(c->reasoning, c->reasoning_len));
        if (ok && c->n_calls)
            ok = oai_put(m, "tool_calls", tool_calls(c, r->chunk));
        /* A whole message's "refusal" is required by the SDKs' types (openai-node's
         * ChatCompletionMessage): null, as OpenAI sends when the model answered. */
        if (ok && !r->chunk)
            ok = oai_put(m, "refusal", cJSON_CreateNull());
    } else {
        ok = ok && oai_put(o, "text", oai_str_n(c->text, c->text_len));
    }
    if (ok) {
        cJSON *lp = !c->logprobs ? cJSON_CreateNull()
                    : r->kind == RQ_CHAT ? chat_logprobs(r, c)
                                         : completion_logprobs(r, c);
        ok = oai_put(o, "logprobs", lp);
    }
    if (ok && r->kind != RQ_CHAT && c->prompt_logprobs)
        ok = oai_put(o, "prompt_logprobs", prompt_logprobs(r, c));
    if (ok)
        ok = oai_put(o, "finish_reason", c->finish_reason ? cJSON_CreateString(c->finish_reason)
                                                      : cJSON_CreateNull());
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

char *oai_response(const oai_resp_t *r)
{
    cJSON *root = cJSON_CreateObject();
    const char *object = r->kind == RQ_CHAT ? (r->chunk ? "chat.completion.chunk"
                                                        : "chat.completion")
                                            : "text_completion";
    bool ok = oai_put(root, "id", cJSON_CreateString(r->id)) &&
              oai_put(root, "object", cJSON_CreateString(object)) &&
              oai_put(root, "created", cJSON_CreateNumber((double)r->created)) &&
              oai_put(root, "model", cJSON_CreateString(r->model)) &&
              oai_put(root, "system_fingerprint", cJSON_CreateString("fusiond-" PACKAGE_VERSION));
    cJSON *choices = ok ? cJSON_CreateArray() : NULL;
    ok = ok && oai_put(root, "choices", choices);
    for (int i = 0; ok && i < r->n_choices; i++)
        ok = oai_put(choices, NULL, choice_obj(r, &r->choices[i]));
    if (ok && r->kind == RQ_CHAT && r->n_choices > 0 && r->choices[0].prompt_logprobs)
        ok = oai_put(root, "prompt_logprobs", prompt_logprobs(r, &r->choices[0]));
    if (ok && !r->usage && r->usage_null)
        ok = oai_put(root, "usage", cJSON_CreateNull());
    if (ok && r->usage) {
        cJSON *u = cJSON_CreateObject();
        ok = oai_put(root, "usage", u) &&
             oai_put(u, "prompt_tokens", cJSON_CreateNumber((double)r->prompt_tokens)) &&
             oai_put(u, "completion_tokens", cJSON_CreateNumber((double)r->completion_tokens)) &&
             oai_put(u, "total_tokens",
                 cJSON_CreateNumber((double)(r->prompt_tokens + r->completion_tokens)));
        if (ok && r->cached_details) {
            cJSON *d = cJSON_CreateObject();
            ok = oai_put(u, "prompt_tokens_details", d) &&
                 oai_put(d, "cached_tokens", cJSON_CreateNumber((double)r->cached_tokens));
        }
        if (ok && r->reasoning_details) {
            cJSON *d = cJSON_CreateObject();
            ok = oai_put(u, "completion_tokens_details", d) &&
                 oai_put(d, "reasoning_tokens", cJSON_CreateNumber((double)r->reasoning_tokens));
        }
    }
    if (ok && r->timings)
        ok = oai_put(root, "timings", timings_obj(r->timings));
    return oai_print(root, ok);
}

char *oai_error(int status, const char *type, const char *code, const char *param,
                const char *message)
{
    (void)status; /* OpenAI's body has no status: the HTTP status line carries it */
    cJSON *root = cJSON_CreateObject();
    cJSON *e = cJSON_CreateObject();
    /* No specific code is null, as OpenAI sends it: clients branch on `code` being one of
     * OpenAI's strings (context_length_exceeded, ...), and "400" would be none of them. */
    bool ok = oai_put(root, "error", e) &&
              oai_put(e, "message", oai_str_n(message, strlen(message))) &&
              oai_put(e, "type", cJSON_CreateString(type ? type : "invalid_request_error")) &&
              oai_put(e, "param",
                      param && *param ? oai_str_n(param, strlen(param)) : cJSON_CreateNull()) &&
              oai_put(e, "code", code ? cJSON_CreateString(code) : cJSON_CreateNull());
    return oai_print(root, ok);
}

char *oai_error_from(const rq_err_t *e)
{
    return oai_error(e->status, e->type, e->code, e->param, e->message);
}

static cJSON *model_obj(const eng_info_t *info, const char *id, long long created)
{
    cJSON *m = cJSON_CreateObject();
    bool ok = oai_put(m, "id", cJSON_CreateString(id)) &&
              oai_put(m, "object", cJSON_CreateString("model")) &&
              oai_put(m, "created", cJSON_CreateNumber((double)created)) &&
              oai_put(m, "owned_by", cJSON_CreateString("fusiond"));
    if (ok && info) {
        cJSON *f = cJSON_CreateObject();
        ok = oai_put(m, "fusiond", f) &&
             oai_put(f, "backend", cJSON_CreateString(info->backend ? info->backend : "")) &&
             oai_put(f, "fusion", cJSON_CreateBool(info->fusion)) &&
             oai_put(f, "softmax_mode",
                 cJSON_CreateString(info->softmax_mode ? info->softmax_mode : "")) &&
             oai_put(f, "arch", cJSON_CreateString(info->arch ? info->arch : "")) &&
             oai_put(f, "context_length", cJSON_CreateNumber(info->n_ctx)) &&
             oai_put(f, "context_length_train", cJSON_CreateNumber(info->n_ctx_train)) &&
             oai_put(f, "n_vocab", cJSON_CreateNumber(info->n_vocab)) &&
             oai_put(f, "n_params", cJSON_CreateNumber((double)info->n_params)) &&
             oai_put(f, "file_bytes", cJSON_CreateNumber((double)info->file_bytes)) &&
             oai_put(f, "threads", cJSON_CreateNumber(info->threads));
        /* vLLM's name for the context length, which some clients read. */
        ok = ok && oai_put(m, "max_model_len", cJSON_CreateNumber(info->n_ctx));
    }
    if (!ok) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

char *oai_models(const eng_info_t *info, const char *model_id, long long created, bool single)
{
    if (single)
        return oai_print(model_obj(info, model_id, created), true);
    cJSON *root = cJSON_CreateObject();
    cJSON *data = cJSON_CreateArray();
    bool ok = oai_put(root, "object", cJSON_CreateString("list")) && oai_put(root, "data", data) &&
              oai_put(data, NULL, model_obj(info, model_id, created));
    return oai_print(root, ok);
}

char *oai_tokenize(const tok_t *tok, const int32_t *ids, size_t n, bool with_pieces, int n_ctx)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *arr = cJSON_CreateArray();
    bool ok = oai_put(root, "tokens", arr);
    for (size_t i = 0; ok && i < n; i++) {
        if (!with_pieces) {
            ok = oai_put(arr, NULL, cJSON_CreateNumber(ids[i]));
            continue;
        }
        /* llama-server's piece: the text when the token's bytes are valid UTF-8 (a byte or
         * part of a character is not), else the bytes */
        char buf[512];
        size_t nb = token_bytes(tok, ids[i], buf, sizeof buf);
        bool text = rq_utf8_valid(buf, nb) && !memchr(buf, 0, nb);
        cJSON *o = cJSON_CreateObject();
        ok = oai_put(arr, NULL, o) && oai_put(o, "id", cJSON_CreateNumber(ids[i])) &&
             oai_put(o, "piece", text ? oai_str_n(buf, nb) : bytes_array(tok, ids[i]));
    }
    ok = ok && oai_put(root, "count", cJSON_CreateNumber((double)n)) &&
         oai_put(root, "max_model_len", cJSON_CreateNumber(n_ctx));
    return oai_print(root, ok);
}

/* Base64 (RFC 4648, padded) of dim floats as little-endian float32, whatever the host order. */
static cJSON *base64_floats(const float *v, int dim)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = (size_t)dim * 4;
    uint8_t *b = malloc(n ? n : 1);
    char *out = malloc((n + 2) / 3 * 4 + 1);
    cJSON *s = NULL;
    if (b && out) {
        for (int i = 0; i < dim; i++) {
            uint32_t u;
            memcpy(&u, &v[i], 4);
            for (int k = 0; k < 4; k++)
                b[(size_t)i * 4 + (size_t)k] = (uint8_t)(u >> (8 * k));
        }
        size_t o = 0;
        for (size_t i = 0; i < n; i += 3) {
            uint32_t w = (uint32_t)b[i] << 16 | (i + 1 < n ? (uint32_t)b[i + 1] << 8 : 0) |
                         (i + 2 < n ? b[i + 2] : 0);
            out[o++] = abc[w >> 18 & 63];
            out[o++] = abc[w >> 12 & 63];
            out[o++] = i + 1 < n ? abc[w >> 6 & 63] : '=';
            out[o++] = i + 2 < n ? abc[w & 63] : '=';
        }
        out[o] = 0;
        s = cJSON_CreateString(out);
    }
    free(b);
    free(out);
    return s;
}

char *oai_embeddings(const char *model, const float *const *vecs, int n, int dim, bool base64,
                     long long prompt_tokens)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *data = cJSON_CreateArray();
    bool ok = oai_put(root, "data", data) && oai_put(root, "object", cJSON_CreateString("list"));
    for (int i = 0; ok && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        ok = oai_put(data, NULL, o) && oai_put(o, "object", cJSON_CreateString("embedding")) &&
             oai_put(o, "index", cJSON_CreateNumber(i)) &&
             oai_put(o, "embedding", base64 ? base64_floats(vecs[i], dim)
                                        : cJSON_CreateFloatArray(vecs[i], dim));
    }
    cJSON *usage = NULL;
    ok = ok && oai_put(root, "model", cJSON_CreateString(model)) &&
         oai_put(root, "usage", usage = cJSON_CreateObject()) &&
         oai_put(usage, "prompt_tokens", cJSON_CreateNumber((double)prompt_tokens)) &&
         oai_put(usage, "total_tokens", cJSON_CreateNumber((double)prompt_tokens));
    return oai_print(root, ok);
}

char *oai_detokenize(const char *text, size_t len)
{
    cJSON *root = cJSON_CreateObject();
    bool ok = oai_put(root, "content", oai_str_n(text, len)) &&
              oai_put(root, "prompt", oai_str_n(text, len));
    return oai_print(root, ok);
}
