/* responses.c: the Responses API as a translation to the chat path, its answers and its
 * store.  A NULL from any cJSON call (out of memory) propagates; nothing here aborts. */
#include <config.h>

#include "server/responses.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fd.h"
#include "server/openai.h"

#define RS_MAX_META 16          /* OpenAI's metadata limits */
#define RS_MAX_META_KEY 64
#define RS_MAX_META_VAL 512

static int bad(rq_err_t *e, const char *code, const char *param, const char *fmt, ...)
    FD_PRINTF(4, 5);
static int bad(rq_err_t *e, const char *code, const char *param, const char *fmt, ...)
{
    char msg[480];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rq_fail(e, 400, "invalid_request_error", param, "%s", msg);
    e->code = code;
    return -EINVAL;
}

/* ---------------------------------------------------------------- the request */

/* Top-level fields and what becomes of them.  Any other field is a 400 (OpenAI's answer to
 * an unknown parameter), so a misspelt one is not silently dropped. */
enum fkind {
    F_OWN,      /* checked and translated here */
    F_PASS,     /* a fusiond sampling extension the chat parser checks under the same name */
    F_NEUTRAL,  /* accepted at values that ask for nothing (checked here) */
};

static const struct {
    const char *key;
    int kind;
} fields[] = {
    {"model", F_OWN}, {"input", F_OWN}, {"instructions", F_OWN}, {"max_output_tokens", F_OWN},
    {"temperature", F_PASS}, {"top_p", F_PASS}, {"tools", F_OWN}, {"tool_choice", F_OWN},
    {"parallel_tool_calls", F_OWN}, {"text", F_OWN}, {"metadata", F_OWN}, {"user", F_OWN},
    {"top_logprobs", F_OWN}, {"include", F_OWN}, {"stream", F_OWN},
    {"stream_options", F_OWN}, {"store", F_OWN}, {"previous_response_id", F_OWN},
    {"service_tier", F_OWN}, {"safety_identifier", F_OWN}, {"prompt_cache_key", F_OWN},
    {"prompt_cache_retention", F_OWN}, {"truncation", F_NEUTRAL}, {"background", F_NEUTRAL},
    {"reasoning", F_NEUTRAL}, {"conversation", F_OWN}, {"prompt", F_NEUTRAL},
    {"context_management", F_NEUTRAL}, {"max_tool_calls", F_NEUTRAL},
    /* fusiond's (and vLLM's) sampling extensions, as on the chat endpoint */
    {"seed", F_PASS}, {"top_k", F_PASS}, {"min_p", F_PASS}, {"presence_penalty", F_PASS},
    {"frequency_penalty", F_PASS}, {"repetition_penalty", F_PASS}, {"stop", F_PASS},
    {"logit_bias", F_PASS}, {"ignore_eos", F_PASS},
    /* llama-server's per-request LoRA scales, as on the chat endpoint */
    {"lora", F_PASS},
};

static int check_fields(const cJSON *root, rq_err_t *e)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        size_t k;
        for (k = 0; k < FD_ARRAY_LEN(fields); k++)
            if (strcmp(it->string, fields[k].key) == 0)
                break;
        if (k == FD_ARRAY_LEN(fields))
            return bad(e, "unknown_parameter", it->string, "Unknown parameter: '%.100s'.",
                       it->string);
        if (fields[k].kind != F_NEUTRAL || cJSON_IsNull(it))
            continue;
        const char *key = it->string;
        if (strcmp(key, "truncation") == 0) {
            if (!rq_is_str(it, "disabled") && !rq_is_str(it, "auto"))
                return bad(e, NULL, key, "'truncation' must be \"auto\" or \"disabled\"");
            continue;
        }
        if (strcmp(key, "background") == 0) {
            if (!cJSON_IsBool(it))
                return bad(e, NULL, key, "'background' must be a boolean, not %s",
                           rq_type_name(it));
            continue;
        }
        bool ok = strcmp(key, "reasoning") == 0 && cJSON_IsObject(it);
        for (const cJSON *r = ok ? it->child : NULL; r; r = r->next) {
            /* the effort is gpt-oss's reasoning level (the chat field reasoning_effort) */
            if (strcmp(r->string, "effort") == 0 && !cJSON_IsNull(r)) {
                if (!rq_is_str(r, "low") && !rq_is_str(r, "medium") && !rq_is_str(r, "high"))
                    return bad(e, NULL, "reasoning.effort", "'reasoning.effort' must be low, "
                               "medium or high");
            } else if (!cJSON_IsNull(r)) {
                ok = false;
            }
        }
        if (!ok)
            return bad(e, "unsupported_parameter", key, "'%s' is not supported by fusiond "
                       "(%s); leave it out", key,
                       strcmp(key, "reasoning") == 0  ? "of it only effort is read"
                       : strcmp(key, "prompt") == 0 ? "there are no stored prompt templates"
                                                    : "no built-in tools run here");
    }
    return 0;
}

static int want_str(const cJSON *v, const char *param, rq_err_t *e)
{
    if (!cJSON_IsString(v))
        return bad(e, NULL, param, "'%s' must be a string, not %s", param, rq_type_name(v));
    if (!rq_utf8_valid(v->valuestring, strlen(v->valuestring)))
        return bad(e, NULL, param, "'%s' is not valid UTF-8", param);
    return 0;
}

/* A message's content: a string, or text parts (input_text; output_text and refusal in an
 * assistant's).  The text, parts joined with newlines as the chat endpoint joins them, goes
 * to *text (malloc'd); *parts gets the content as a parts array (for input_items). */
static int message_content(const cJSON *c, const char *pp, bool assistant, char **text,
                           cJSON **parts, rq_err_t *e)
{
    const char *ptype = assistant ? "output_text" : "input_text";
    *parts = cJSON_CreateArray();
    if (!*parts)
        return rq_oom(e);
    if (cJSON_IsString(c)) {
        if (want_str(c, pp, e))
            return -EINVAL;
        cJSON *p = cJSON_CreateObject();
        if (!oai_put(*parts, NULL, p) || !oai_put(p, "type", cJSON_CreateString(ptype)) ||
            !oai_put(p, "text", cJSON_CreateString(c->valuestring)) ||
            (assistant && !oai_put(p, "annotations", cJSON_CreateArray())))
            return rq_oom(e);
        *text = strdup(c->valuestring);
        return *text ? 0 : rq_oom(e);
    }
    if (!cJSON_IsArray(c))
        return bad(e, NULL, pp, "'%s' must be a string or an array of content parts, not %s",
                   pp, rq_type_name(c));
    sb_t b;
    sb_init(&b);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, c)
    {
        char ip[128], tp[140];
        snprintf(ip, sizeof ip, "%.100s[%d]", pp, i);
        snprintf(tp, sizeof tp, "%s.type", ip);
        if (!cJSON_IsObject(it)) {
            sb_free(&b);
            return bad(e, NULL, ip, "'%s' must be an object {\"type\": \"%s\", \"text\": ...}, "
                       "not %s", ip, ptype, rq_type_name(it));
        }
        const cJSON *t = rq_field(it, "type");
        if (!cJSON_IsString(t)) {
            sb_free(&b);
            return bad(e, NULL, tp, "'%s' is required: a string such as \"%s\"", tp, ptype);
        }
        const char *tv = t->valuestring;
        bool text_part = strcmp(tv, "input_text") == 0 || strcmp(tv, "output_text") == 0 ||
                         strcmp(tv, "refusal") == 0 || strcmp(tv, "text") == 0;
        if (!text_part) {
            sb_free(&b);
            bool known = strcmp(tv, "input_image") == 0 || strcmp(tv, "input_file") == 0 ||
                         strcmp(tv, "input_audio") == 0;
            return bad(e, known ? "unsupported_parameter" : NULL, tp,
                       known ? "'%s' is \"%.40s\": fusiond serves text models; only "
                               "\"input_text\" parts are supported"
                             : "'%s' is \"%.40s\"; it must be \"input_text\" (or "
                               "\"output_text\" in an assistant message)", tp, tv);
        }
        const char *key = strcmp(tv, "refusal") == 0 ? "refusal" : "text";
        char xp[150];
        snprintf(xp, sizeof xp, "%s.%s", ip, key);
        const cJSON *x = rq_field(it, key);
        if (!x) {
            sb_free(&b);
            return bad(e, NULL, xp, "'%s' is required", xp);
        }
        if (want_str(x, xp, e)) {
            sb_free(&b);
            return -EINVAL;
        }
        if (i)
            sb_adds(&b, "\n");
        sb_adds(&b, x->valuestring);
        cJSON *p = oai_dup(it);
        if (!oai_put(*parts, NULL, p)) {
            sb_free(&b);
            return rq_oom(e);
        }
        i++;
    }
    size_t n;
    *text = sb_take(&b, &n);
    if (!*text && !sb_failed(&b))
        *text = strdup("");
    return *text ? 0 : rq_oom(e);
}

/* One input item, checked and normalized (into *out: what input_items lists). */
/* parts (at pp) must be an array of {"type": type, "text": string} objects. */
static int text_parts(const cJSON *parts, const char *pp, const char *type, rq_err_t *e)
{
    char kp[160];
    if (!cJSON_IsArray(parts))
        return bad(e, NULL, pp, "'%s' must be an array of %s parts, not %s", pp, type,
                   rq_type_name(parts));
    int i = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, parts)
    {
        snprintf(kp, sizeof kp, "%s[%d]", pp, i++);
        if (!cJSON_IsObject(p) || !rq_is_str(rq_field(p, "type"), type))
            return bad(e, NULL, kp, "'%s' must be a {\"type\": \"%s\", \"text\": ...} "
                       "object", kp, type);
        snprintf(kp, sizeof kp, "%s[%d].text", pp, i - 1);
        if (want_str(rq_field(p, "text"), kp, e))
            return -EINVAL;
    }
    return 0;
}

/* A reasoning item given back (an earlier answer's think block): its summary and
 * content parts are kept; encrypted reasoning cannot be read here. */
static int reasoning_input(const cJSON *it, const char *pp, cJSON *o, rq_err_t *e)
{
    char kp[160];
    const cJSON *summary = rq_field(it, "summary"), *content = rq_field(it, "content");
    const cJSON *enc = rq_field(it, "encrypted_content");
    snprintf(kp, sizeof kp, "%s.encrypted_content", pp);
    if (enc && !cJSON_IsNull(enc))
        return bad(e, "unsupported_parameter", kp, "'%s': encrypted reasoning is not "
                   "supported (send the reasoning item as fusiond returned it)", kp);
    snprintf(kp, sizeof kp, "%s.summary", pp);
    if (!summary)
        return bad(e, NULL, kp, "'%s' is required", kp);
    int rc = text_parts(summary, kp, "summary_text", e);
    snprintf(kp, sizeof kp, "%s.content", pp);
    if (!rc && content && !cJSON_IsNull(content))
        rc = text_parts(content, kp, "reasoning_text", e);
    if (rc)
        return rc;
    if (!oai_put(o, "type", cJSON_CreateString("reasoning")) ||
        !oai_put(o, "summary", oai_dup(summary)) ||
        (content && !cJSON_IsNull(content) && !oai_put(o, "content", oai_dup(content))))
        return rq_oom(e);
    const cJSON *st = rq_field(it, "status");
    return st && !oai_put(o, "status", oai_dup(st)) ? rq_oom(e) : 0;
}

static int input_item(const cJSON *it, const char *pp, cJSON **out, rq_err_t *e)
{
    char kp[160];
    if (!cJSON_IsObject(it))
        return bad(e, NULL, pp, "'%s' must be an object (a message, a function_call or a "
                   "function_call_output item), not %s", pp, rq_type_name(it));
    const cJSON *type = rq_field(it, "type");
    snprintf(kp, sizeof kp, "%s.type", pp);
    if (type && !cJSON_IsString(type))
        return bad(e, NULL, kp, "'%s' must be a string, not %s", kp, rq_type_name(type));
    const char *tv = type ? type->valuestring : "message";
    const cJSON *id = rq_field(it, "id");
    snprintf(kp, sizeof kp, "%s.id", pp);
    if (id && want_str(id, kp, e))
        return -EINVAL;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return rq_oom(e);
    *out = o;
    if (id && !oai_put(o, "id", oai_dup(id)))
        return rq_oom(e);
    if (strcmp(tv, "message") == 0) {
        const cJSON *role = rq_field(it, "role"), *content = rq_field(it, "content");
        snprintf(kp, sizeof kp, "%s.role", pp);
        if (!role)
            return bad(e, NULL, kp, "'%s' is required", kp);
        if (!rq_is_str(role, "user") && !rq_is_str(role, "system") &&
            !rq_is_str(role, "developer") && !rq_is_str(role, "assistant"))
            return bad(e, NULL, kp, "'%s' must be \"user\", \"system\", \"developer\" or "
                       "\"assistant\"%s", kp, cJSON_IsString(role) ? "" : ", not a string");
        snprintf(kp, sizeof kp, "%s.content", pp);
        if (!content)
            return bad(e, NULL, kp, "'%s' is required", kp);
        char *text = NULL;
        cJSON *parts = NULL;
        int rc = message_content(content, kp, rq_is_str(role, "assistant"), &text, &parts, e);
        free(text);
        if (rc) {
            cJSON_Delete(parts);
            return rc;
        }
        if (!oai_put(o, "type", cJSON_CreateString("message")) ||
            !oai_put(o, "role", oai_dup(role)) || !oai_put(o, "content", parts))
            return rq_oom(e);
        const cJSON *st = rq_field(it, "status");
        if (st && !oai_put(o, "status", oai_dup(st)))
            return rq_oom(e);
        return 0;
    }
    if (strcmp(tv, "function_call") == 0) {
        static const char *const keys[] = {"call_id", "name", "arguments"};
        if (!oai_put(o, "type", cJSON_CreateString("function_call")))
            return rq_oom(e);
        for (size_t k = 0; k < FD_ARRAY_LEN(keys); k++) {
            const cJSON *v = rq_field(it, keys[k]);
            snprintf(kp, sizeof kp, "%s.%s", pp, keys[k]);
            if (!v)
                return bad(e, NULL, kp, "'%s' is required", kp);
            if (want_str(v, kp, e))
                return -EINVAL;
            if (k < 2 && !v->valuestring[0])
                return bad(e, NULL, kp, "'%s' is an empty string", kp);
            if (k == 2) {
                cJSON *a = cJSON_Parse(v->valuestring);
                bool obj = cJSON_IsObject(a);
                cJSON_Delete(a);
                if (!obj)
                    return bad(e, NULL, kp, "'%s' must be the JSON text of an object", kp);
            }
            if (!oai_put(o, keys[k], oai_dup(v)))
                return rq_oom(e);
        }
        const cJSON *st = rq_field(it, "status");
        return st && !oai_put(o, "status", oai_dup(st)) ? rq_oom(e) : 0;
    }
    if (strcmp(tv, "function_call_output") == 0) {
        const cJSON *cid = rq_field(it, "call_id"), *output = rq_field(it, "output");
        snprintf(kp, sizeof kp, "%s.call_id", pp);
        if (!cid)
            return bad(e, NULL, kp, "'%s' is required", kp);
        if (want_str(cid, kp, e))
            return -EINVAL;
        if (!cid->valuestring[0])
            return bad(e, NULL, kp, "'%s' is an empty string", kp);
        snprintf(kp, sizeof kp, "%s.output", pp);
        if (!output)
            return bad(e, NULL, kp, "'%s' is required", kp);
        if (!cJSON_IsString(output)) {
            /* output as text parts: checked (and joined) as a user message's content */
            char *text = NULL;
            cJSON *parts = NULL;
            int rc = message_content(output, kp, false, &text, &parts, e);
            free(text);
            cJSON_Delete(parts);
            if (rc)
                return rc;
        } else if (want_str(output, kp, e)) {
            return -EINVAL;
        }
        if (!oai_put(o, "type", cJSON_CreateString("function_call_output")) ||
            !oai_put(o, "call_id", oai_dup(cid)) || !oai_put(o, "output", oai_dup(output)))
            return rq_oom(e);
        return 0;
    }
    if (strcmp(tv, "reasoning") == 0)
        return reasoning_input(it, pp, o, e);
    snprintf(kp, sizeof kp, "%s.type", pp);
    return bad(e, "unsupported_parameter", kp, "'%s' is \"%.40s\": fusiond takes message, "
               "function_call, function_call_output and reasoning items", kp, tv);
}

int rs_parse_items(const cJSON *arr, const char *key, int max, cJSON **out, rq_err_t *e)
{
    *out = NULL;
    if (!cJSON_IsArray(arr))
        return bad(e, NULL, key, "'%s' must be an array of items, not %s", key, rq_type_name(arr));
    if (cJSON_GetArraySize(arr) > max)
        return bad(e, NULL, key, "'%s' has %d items; at most %d are allowed", key,
                   cJSON_GetArraySize(arr), max);
    cJSON *items = cJSON_CreateArray();
    if (!items)
        return rq_oom(e);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        char pp[48];
        snprintf(pp, sizeof pp, "%.20s[%d]", key, i++);
        cJSON *o = NULL;
        int rc = input_item(it, pp, &o, e);
        if (o && !oai_put(items, NULL, o) && !rc)
            rc = rq_oom(e);
        if (rc) {
            cJSON_Delete(items);
            return rc;
        }
    }
    *out = items;
    return 0;
}

static int parse_input(const cJSON *root, rs_req_t *q, rq_err_t *e)
{
    const cJSON *in = rq_field(root, "input");
    q->input = cJSON_CreateArray();
    if (!q->input)
        return rq_oom(e);
    if (!in) {
        if (!q->prev_id)
            return bad(e, "missing_required_parameter", "input", "'input' is required");
        return 0;
    }
    if (cJSON_IsString(in)) {
        if (want_str(in, "input", e))
            return -EINVAL;
        cJSON *o = cJSON_CreateObject(), *parts = cJSON_CreateArray(), *p = cJSON_CreateObject();
        bool ok = oai_put(q->input, NULL, o) && oai_put(o, "type", cJSON_CreateString("message")) &&
                  oai_put(o, "role", cJSON_CreateString("user"));
        if (!ok || !oai_put(o, "content", parts)) {
            cJSON_Delete(parts);
            cJSON_Delete(p);
            return rq_oom(e);
        }
        if (!oai_put(parts, NULL, p) || !oai_put(p, "type", cJSON_CreateString("input_text")) ||
            !oai_put(p, "text", cJSON_CreateString(in->valuestring)))
            return rq_oom(e);
        return 0;
    }
    if (!cJSON_IsArray(in))
        return bad(e, NULL, "input", "'input' must be a string or an array of input items, "
                   "not %s", rq_type_name(in));
    if (!in->child && !q->prev_id)
        return bad(e, NULL, "input", "'input' is an empty array");
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, in)
    {
        char pp[48];
        snprintf(pp, sizeof pp, "input[%d]", i++);
        cJSON *o = NULL;
        int rc = input_item(it, pp, &o, e);
        if (o && !oai_put(q->input, NULL, o) && !rc)
            rc = rq_oom(e);
        if (rc)
            return rc;
    }
    return 0;
}

static int check_tools(const cJSON *root, rq_err_t *e)
{
    const cJSON *t = rq_field(root, "tools");
    if (t && !cJSON_IsArray(t))
        return bad(e, NULL, "tools", "'tools' must be an array, not %s", rq_type_name(t));
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, t)
    {
        char tp[32], kp[64];
        snprintf(tp, sizeof tp, "tools[%d]", i++);
        if (!cJSON_IsObject(it))
            return bad(e, NULL, tp, "'%s' must be an object {\"type\": \"function\", \"name\": "
                       "...}, not %s", tp, rq_type_name(it));
        const cJSON *type = rq_field(it, "type");
        snprintf(kp, sizeof kp, "%s.type", tp);
        if (!type)
            return bad(e, NULL, kp, "'%s' is required", kp);
        if (!cJSON_IsString(type))
            return bad(e, NULL, kp, "'%s' must be a string, not %s", kp, rq_type_name(type));
        if (strcmp(type->valuestring, "function") != 0)
            return bad(e, "unsupported_parameter", kp, "'%s' is \"%.40s\": fusiond runs no "
                       "built-in tools; only \"function\" tools (which the client runs) are "
                       "supported", kp, type->valuestring);
        if (rq_field(it, "function"))
            return bad(e, NULL, tp, "'%s' is in the chat completions shape; the Responses "
                       "API takes {\"type\": \"function\", \"name\", \"description\", "
                       "\"parameters\", \"strict\"} without \"function\"", tp);
        const cJSON *name = rq_field(it, "name"), *d = rq_field(it, "description"),
                    *pa = rq_field(it, "parameters"), *st = rq_field(it, "strict");
        snprintf(kp, sizeof kp, "%s.name", tp);
        if (!name)
            return bad(e, NULL, kp, "'%s' is required", kp);
        if (want_str(name, kp, e))
            return -EINVAL;
        if (!rq_fn_name_ok(name->valuestring))
            return bad(e, NULL, kp, "'%s' (\"%.70s\") must be 1 to 64 letters, digits, '_' or "
                       "'-'", kp, name->valuestring);
        snprintf(kp, sizeof kp, "%s.description", tp);
        if (d && want_str(d, kp, e))
            return -EINVAL;
        snprintf(kp, sizeof kp, "%s.parameters", tp);
        if (pa && !cJSON_IsObject(pa))
            return bad(e, NULL, kp, "'%s' must be a JSON Schema object, not %s", kp,
                       rq_type_name(pa));
        snprintf(kp, sizeof kp, "%s.strict", tp);
        if (st && !cJSON_IsBool(st))
            return bad(e, NULL, kp, "'%s' must be a boolean, not %s", kp, rq_type_name(st));
    }
    const cJSON *tc = rq_field(root, "tool_choice");
    if (!tc || cJSON_IsString(tc))
        return 0; /* the chat parser checks the value */
    if (!cJSON_IsObject(tc))
        return bad(e, NULL, "tool_choice", "'tool_choice' must be a string or an object, not "
                   "%s", rq_type_name(tc));
    const cJSON *type = rq_field(tc, "type");
    if (!rq_is_str(type, "function"))
        return bad(e, "unsupported_parameter", "tool_choice.type", "'tool_choice.type' must "
                   "be \"function\" (fusiond runs no built-in tools)");
    const cJSON *name = rq_field(tc, "name");
    if (!name)
        return bad(e, NULL, "tool_choice.name", "'tool_choice.name' is required");
    return want_str(name, "tool_choice.name", e);
}

static int check_text(const cJSON *root, rq_err_t *e)
{
    const cJSON *t = rq_field(root, "text");
    if (!t)
        return 0;
    if (!cJSON_IsObject(t))
        return bad(e, NULL, "text", "'text' must be an object, not %s", rq_type_name(t));
    const cJSON *it;
    cJSON_ArrayForEach(it, t)
    {
        if (strcmp(it->string, "format") != 0 && strcmp(it->string, "verbosity") != 0) {
            char kp[96];
            snprintf(kp, sizeof kp, "text.%.60s", it->string);
            return bad(e, "unknown_parameter", kp, "Unknown parameter: '%s'.", kp);
        }
    }
    const cJSON *v = rq_field(t, "verbosity");
    if (v && !rq_is_str(v, "medium"))
        return bad(e, "unsupported_parameter", "text.verbosity", "'text.verbosity' other "
                   "than \"medium\" is not supported by fusiond");
    const cJSON *f = rq_field(t, "format");
    if (!f)
        return 0;
    if (!cJSON_IsObject(f))
        return bad(e, NULL, "text.format", "'text.format' must be an object, not %s",
                   rq_type_name(f));
    const cJSON *ty = rq_field(f, "type");
    if (!ty)
        return bad(e, NULL, "text.format.type", "'text.format.type' is required");
    if (!rq_is_str(ty, "text") && !rq_is_str(ty, "json_object") && !rq_is_str(ty, "json_schema"))
        return bad(e, NULL, "text.format.type", "'text.format.type' must be \"text\", "
                   "\"json_object\" or \"json_schema\"");
    if (!rq_is_str(ty, "json_schema"))
        return 0;
    const cJSON *name = rq_field(f, "name"), *schema = rq_field(f, "schema"),
                *strict = rq_field(f, "strict");
    if (!name)
        return bad(e, "missing_required_parameter", "text.format.name",
                   "'text.format.name' is required");
    if (want_str(name, "text.format.name", e))
        return -EINVAL;
    if (!schema)
        return bad(e, "missing_required_parameter", "text.format.schema",
                   "'text.format.schema' is required");
    if (!cJSON_IsObject(schema))
        return bad(e, NULL, "text.format.schema", "'text.format.schema' must be a JSON Schema "
                   "object, not %s", rq_type_name(schema));
    if (strict && !cJSON_IsBool(strict))
        return bad(e, NULL, "text.format.strict", "'text.format.strict' must be a boolean, "
                   "not %s", rq_type_name(strict));
    return 0;
}

int rs_check_metadata(const cJSON *root, rq_err_t *e)
{
    const cJSON *m = rq_field(root, "metadata");
    if (!m)
        return 0;
    if (!cJSON_IsObject(m))
        return bad(e, NULL, "metadata", "'metadata' must be an object of strings, not %s",
                   rq_type_name(m));
    if (cJSON_GetArraySize(m) > RS_MAX_META)
        return bad(e, NULL, "metadata", "'metadata' has %d keys; at most %d are allowed",
                   cJSON_GetArraySize(m), RS_MAX_META);
    const cJSON *it;
    cJSON_ArrayForEach(it, m)
    {
        char kp[96];
        snprintf(kp, sizeof kp, "metadata.%.64s", it->string);
        if (strlen(it->string) > RS_MAX_META_KEY)
            return bad(e, NULL, "metadata", "a 'metadata' key is longer than %d characters",
                       RS_MAX_META_KEY);
        if (want_str(it, kp, e))
            return -EINVAL;
        if (strlen(it->valuestring) > RS_MAX_META_VAL)
            return bad(e, NULL, kp, "'%s' is longer than %d characters", kp, RS_MAX_META_VAL);
    }
    return 0;
}

int rs_parse(const char *body, size_t len, rs_req_t *q, rq_err_t *e)
{
    memset(q, 0, sizeof *q);
    q->store = true;
    if (len == 0)
        return bad(e, NULL, NULL, "the request body is empty; a JSON object is expected");
    const char *end = NULL;
    q->root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    int rc = 0;
    if (!q->root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return bad(e, NULL, NULL, "malformed JSON near byte %zu of %zu", at, len);
    }
    const cJSON *root = q->root;
    if (!cJSON_IsObject(root)) {
        rc = bad(e, NULL, NULL, "the request body must be a JSON object, not %s",
                 rq_type_name(root));
        goto fail;
    }
    if ((rc = check_fields(root, e)))
        goto fail;
    static const char *const strs[] = {"model", "instructions", "user", "service_tier",
                                       "safety_identifier", "prompt_cache_key",
                                       "prompt_cache_retention", "previous_response_id"};
    for (size_t k = 0; k < FD_ARRAY_LEN(strs); k++) {
        const cJSON *v = rq_field(root, strs[k]);
        if (v && (rc = want_str(v, strs[k], e)))
            goto fail;
    }
    static const char *const bools[] = {"stream", "store", "parallel_tool_calls"};
    for (size_t k = 0; k < FD_ARRAY_LEN(bools); k++) {
        const cJSON *v = rq_field(root, bools[k]);
        if (v && !cJSON_IsBool(v)) {
            rc = bad(e, NULL, bools[k], "'%s' must be a boolean, not %s", bools[k],
                     rq_type_name(v));
            goto fail;
        }
    }
    const cJSON *v = rq_field(root, "previous_response_id");
    if (v && !(q->prev_id = strdup(v->valuestring))) {
        rc = rq_oom(e);
        goto fail;
    }
    v = rq_field(root, "conversation");
    if (v) {
        const cJSON *cid = cJSON_IsObject(v) ? rq_field(v, "id") : v;
        if (!cJSON_IsString(cid) || !cid->valuestring[0]) {
            rc = bad(e, NULL, "conversation", "'conversation' must be a conversation id or "
                     "{\"id\": \"conv_...\"}");
            goto fail;
        }
        if (q->prev_id) {
            rc = bad(e, NULL, "conversation", "'conversation' and 'previous_response_id' "
                     "cannot be used together");
            goto fail;
        }
        if (!(q->conv_id = strdup(cid->valuestring))) {
            rc = rq_oom(e);
            goto fail;
        }
    }
    q->stream = cJSON_IsTrue(rq_field(root, "stream"));
    v = rq_field(root, "store");
    q->store = !v || cJSON_IsTrue(v);
    q->background = cJSON_IsTrue(rq_field(root, "background"));
    q->truncate_auto = rq_is_str(rq_field(root, "truncation"), "auto");
    if (q->background && !q->store) {
        /* its result is only ever read back from the store */
        rc = bad(e, NULL, "background", "'background': true needs 'store': true (a "
                 "background response is read back with GET /v1/responses/{id})");
        goto fail;
    }
    v = rq_field(root, "max_output_tokens");
    if (v && (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
              v->valuedouble < 1 || v->valuedouble > 0x7fffffff)) {
        rc = bad(e, NULL, "max_output_tokens", "'max_output_tokens' must be an integer of at "
                 "least 1, not %s", cJSON_IsNumber(v) ? "this number" : rq_type_name(v));
        goto fail;
    }
    v = rq_field(root, "top_logprobs");
    if (v && (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
              v->valuedouble < 0 || v->valuedouble > 20)) {
        rc = bad(e, NULL, "top_logprobs", "'top_logprobs' must be an integer in [0, 20]");
        goto fail;
    }
    q->logprobs = v != NULL;
    v = rq_field(root, "include");
    if (v && !cJSON_IsArray(v)) {
        rc = bad(e, NULL, "include", "'include' must be an array of strings, not %s",
                 rq_type_name(v));
        goto fail;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        if (!cJSON_IsString(it)) {
            rc = bad(e, NULL, "include", "'include' must be an array of strings");
            goto fail;
        }
        /* the others ask for the output of built-in tools, which never run here */
        q->logprobs |= strcmp(it->valuestring, "message.output_text.logprobs") == 0;
    }
    v = rq_field(root, "stream_options");
    if (v && !cJSON_IsObject(v)) {
        rc = bad(e, NULL, "stream_options", "'stream_options' must be an object, not %s",
                 rq_type_name(v));
        goto fail;
    }
    if (v && !q->stream) {
        rc = bad(e, NULL, "stream_options", "'stream_options' needs 'stream': true");
        goto fail;
    }
    if ((rc = parse_input(root, q, e)) || (rc = check_tools(root, e)) ||
        (rc = check_text(root, e)) || (rc = rs_check_metadata(root, e)))
        goto fail;
    return 0;
fail:
    if (rc == -ENOMEM)
        rq_oom(e);
    rs_free(q);
    return rc;
}

void rs_free(rs_req_t *q)
{
    if (!q)
        return;
    cJSON_Delete(q->root);
    cJSON_Delete(q->input);
    free(q->prev_id);
    free(q->conv_id);
    memset(q, 0, sizeof *q);
}

/* The text of a content (a string, or parts joined with newlines). */
static char *content_text(const cJSON *c)
{
    if (cJSON_IsString(c))
        return strdup(c->valuestring);
    sb_t b;
    sb_init(&b);
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, c)
    {
        const cJSON *x = rq_field(it, "text");
        if (!x)
            x = rq_field(it, "refusal");
        if (i++)
            sb_adds(&b, "\n");
        if (cJSON_IsString(x))
            sb_adds(&b, x->valuestring);
    }
    size_t n;
    char *s = sb_take(&b, &n);
    return s || sb_failed(&b) ? s : strdup("");
}

/* Appends the chat messages of items to msgs.  Consecutive function calls, and the calls
 * right after an assistant message, are one assistant message's tool_calls: the turn in
 * which the model wrote them.  A reasoning item is the reasoning_content of the assistant
 * message that follows it (its content parts, else its summary); it is left out when no
 * assistant message follows. */
static int items_to_messages(const cJSON *items, cJSON *msgs, rq_err_t *e)
{
    const cJSON *it, *reasoning = NULL;
    cJSON_ArrayForEach(it, items)
    {
        const cJSON *type = rq_field(it, "type");
        const char *tv = cJSON_IsString(type) ? type->valuestring : "message";
        cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
        cJSON *m = NULL;
        if (strcmp(tv, "reasoning") == 0) {
            reasoning = it;
            continue;
        }
        if (strcmp(tv, "message") == 0) {
            char *text = content_text(rq_field(it, "content"));
            m = cJSON_CreateObject();
            bool ok = text && oai_put(msgs, NULL, m) &&
                      oai_put(m, "role", oai_dup(rq_field(it, "role"))) &&
                      oai_put(m, "content", cJSON_CreateString(text));
            free(text);
            if (!ok)
                return rq_oom(e);
        } else if (strcmp(tv, "function_call") == 0) {
            bool join = last && rq_is_str(rq_field(last, "role"), "assistant");
            if (!join) {
                m = cJSON_CreateObject();
                if (!oai_put(msgs, NULL, m) ||
                    !oai_put(m, "role", cJSON_CreateString("assistant")) ||
                    !oai_put(m, "content", cJSON_CreateNull()))
                    return rq_oom(e);
                last = m;
            }
            cJSON *calls = cJSON_GetObjectItemCaseSensitive(last, "tool_calls");
            if (!calls && !oai_put(last, "tool_calls", calls = cJSON_CreateArray()))
                return rq_oom(e);
            cJSON *c = cJSON_CreateObject(), *fn = cJSON_CreateObject();
            bool ok = oai_put(calls, NULL, c) &&
                      oai_put(c, "id", oai_dup(rq_field(it, "call_id"))) &&
                      oai_put(c, "type", cJSON_CreateString("function"));
            if (!ok || !oai_put(c, "function", fn)) {
                if (ok)
                    cJSON_Delete(fn);
                return rq_oom(e);
            }
            if (!oai_put(fn, "name", oai_dup(rq_field(it, "name"))) ||
                !oai_put(fn, "arguments", oai_dup(rq_field(it, "arguments"))))
                return rq_oom(e);
        } else if (strcmp(tv, "function_call_output") == 0) {
            char *text = content_text(rq_field(it, "output"));
            m = cJSON_CreateObject();
            bool ok = text && oai_put(msgs, NULL, m) &&
                      oai_put(m, "role", cJSON_CreateString("tool")) &&
                      oai_put(m, "tool_call_id", oai_dup(rq_field(it, "call_id"))) &&
                      oai_put(m, "content", cJSON_CreateString(text));
            free(text);
            if (!ok)
                return rq_oom(e);
        }
        if (m && reasoning) {
            if (rq_is_str(rq_field(m, "role"), "assistant")) {
                const cJSON *parts = rq_field(reasoning, "content");
                char *t = content_text(parts ? parts : rq_field(reasoning, "summary"));
                bool ok = t && oai_put(m, "reasoning_content", cJSON_CreateString(t));
                free(t);
                if (!ok)
                    return rq_oom(e);
            }
            reasoning = NULL;
        }
    }
    return 0;
}

int rs_chat_body(const rs_req_t *q, const cJSON *history, char **out, rq_err_t *e)
{
    const cJSON *root = q->root;
    cJSON *c = cJSON_CreateObject(), *msgs = cJSON_CreateArray();
    if (!c || !oai_put(c, "messages", msgs)) {
        cJSON_Delete(c);
        cJSON_Delete(msgs);
        return rq_oom(e);
    }
    int rc = 0;
    const cJSON *v = rq_field(root, "instructions");
    if (v) {
        cJSON *m = cJSON_CreateObject();
        if (!oai_put(msgs, NULL, m) || !oai_put(m, "role", cJSON_CreateString("system")) ||
            !oai_put(m, "content", oai_dup(v))) {
            rc = rq_oom(e);
            goto out;
        }
    }
    if ((history && (rc = items_to_messages(history, msgs, e))) ||
        (rc = items_to_messages(q->input, msgs, e)))
        goto out;
    if (!msgs->child) {
        rc = bad(e, NULL, "input", "the conversation is empty: send 'input'");
        goto out;
    }
    for (size_t k = 0; k < FD_ARRAY_LEN(fields); k++) {
        v = rq_field(root, fields[k].key);
        if (v && fields[k].kind == F_PASS && !oai_put(c, fields[k].key, oai_dup(v))) {
            rc = rq_oom(e);
            goto out;
        }
    }
    static const char *const same[] = {"model", "stream", "parallel_tool_calls", "user"};
    for (size_t k = 0; k < FD_ARRAY_LEN(same); k++) {
        v = rq_field(root, same[k]);
        if (v && !oai_put(c, same[k], oai_dup(v))) {
            rc = rq_oom(e);
            goto out;
        }
    }
    v = rq_field(root, "max_output_tokens");
    if (v && !oai_put(c, "max_completion_tokens", oai_dup(v)))
        rc = rq_oom(e);
    v = rq_field(rq_field(root, "reasoning"), "effort");
    if (!rc && v && !oai_put(c, "reasoning_effort", oai_dup(v)))
        rc = rq_oom(e);
    if (!rc && q->logprobs) {
        v = rq_field(root, "top_logprobs");
        if (!oai_put(c, "logprobs", cJSON_CreateTrue()) ||
            (v && !oai_put(c, "top_logprobs", oai_dup(v))))
            rc = rq_oom(e);
    }
    /* tools: the chat shape nests each function under "function" */
    const cJSON *tools = rq_field(root, "tools"), *it;
    if (!rc && tools && tools->child) {
        cJSON *arr = cJSON_CreateArray();
        if (!oai_put(c, "tools", arr))
            rc = rq_oom(e);
        cJSON_ArrayForEach(it, tools)
        {
            cJSON *t = cJSON_CreateObject(), *fn = cJSON_CreateObject();
            if (rc || !oai_put(arr, NULL, t) ||
                !oai_put(t, "type", cJSON_CreateString("function"))) {
                cJSON_Delete(fn);
                rc = rq_oom(e);
                break;
            }
            if (!oai_put(t, "function", fn)) {
                rc = rq_oom(e);
                break;
            }
            static const char *const keys[] = {"name", "description", "parameters", "strict"};
            for (size_t k = 0; k < FD_ARRAY_LEN(keys) && !rc; k++) {
                const cJSON *x = rq_field(it, keys[k]);
                if (x && !oai_put(fn, keys[k], oai_dup(x)))
                    rc = rq_oom(e);
            }
        }
    }
    v = rq_field(root, "tool_choice");
    if (!rc && v) {
        cJSON *tc = NULL;
        if (cJSON_IsString(v)) {
            tc = oai_dup(v);
        } else {
            cJSON *fn = cJSON_CreateObject();
            tc = cJSON_CreateObject();
            if (!oai_put(tc, "type", cJSON_CreateString("function")) ||
                !oai_put(tc, "function", fn) ||
                !oai_put(fn, "name", oai_dup(rq_field(v, "name")))) {
                cJSON_Delete(tc);
                tc = NULL;
            }
        }
        if (!oai_put(c, "tool_choice", tc))
            rc = rq_oom(e);
    }
    v = rq_field(rq_field(root, "text"), "format");
    if (!rc && v) {
        cJSON *rf = cJSON_CreateObject();
        const cJSON *ty = rq_field(v, "type");
        bool ok = oai_put(c, "response_format", rf) && oai_put(rf, "type", oai_dup(ty));
        if (ok && rq_is_str(ty, "json_schema")) {
            cJSON *js = cJSON_CreateObject();
            ok = oai_put(rf, "json_schema", js);
            static const char *const keys[] = {"name", "schema", "strict", "description"};
            for (size_t k = 0; ok && k < FD_ARRAY_LEN(keys); k++) {
                const cJSON *x = rq_field(v, keys[k]);
                ok = !x || oai_put(js, keys[k], oai_dup(x));
            }
        }
        if (!ok)
            rc = rq_oom(e);
    }
out:
    if (!rc) {
        *out = cJSON_PrintUnformatted(c);
        if (!*out)
            rc = rq_oom(e);
    }
    cJSON_Delete(c);
    return rc;
}

void rs_map_error(rq_err_t *e)
{
    static const char *const map[][2] = {
        {"max_completion_tokens", "max_output_tokens"},
        {"response_format.json_schema.schema", "text.format.schema"},
        {"response_format.json_schema.name", "text.format.name"},
        {"response_format.json_schema.strict", "text.format.strict"},
        {"response_format.json_schema", "text.format"},
        {"response_format", "text.format"},
        {"tool_choice.function.name", "tool_choice.name"},
        {"].function", "]"},
        {"top_logprobs", "top_logprobs"},
        {"'logprobs'", "'top_logprobs'"},
        {"refuses these messages", "refuses this conversation"},
        {"messages", "input"},
    };
    rq_err_rename(e, map, FD_ARRAY_LEN(map));
    if (strcmp(e->param, "logprobs") == 0)
        snprintf(e->param, sizeof e->param, "top_logprobs");
}

/* ---------------------------------------------------------------- answers */

static void item_id(char *out, size_t cap, const char *prefix, const char *resp_id, int index)
{
    const char *tail = strncmp(resp_id, "resp_", 5) == 0 ? resp_id + 5 : resp_id;
    snprintf(out, cap, "%s%s%04x", prefix, tail, (unsigned)index);
}

void rs_name_input(rs_req_t *q, const char *resp_id)
{
    rs_name_items(q->input, resp_id);
}

void rs_name_items(cJSON *items, const char *resp_id)
{
    int k = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        const cJSON *type = rq_field(it, "type");
        const char *prefix = rq_is_str(type, "function_call")          ? "fc_"
                             : rq_is_str(type, "function_call_output") ? "fco_"
                             : rq_is_str(type, "reasoning")            ? "rs_"
                                                                    : "msg_";
        char id[80];
        /* inputs count from 0x8000, outputs from 0: the ids of one response never meet */
        item_id(id, sizeof id, prefix, resp_id, 0x8000 + k++);
        if (!rq_field(it, "id")) {
            cJSON *s = cJSON_CreateString(id);
            if (s && !cJSON_AddItemToObject(it, "id", s))
                cJSON_Delete(s);
        }
    }
}

static cJSON *text_part(const char *text, size_t len, cJSON *lp)
{
    cJSON *p = cJSON_CreateObject();
    if (!lp)
        lp = cJSON_CreateArray();
    if (!oai_put(p, "logprobs", lp)) {
        cJSON_Delete(p);
        return NULL;
    }
    bool ok = oai_put(p, "type", cJSON_CreateString("output_text")) &&
              oai_put(p, "annotations", cJSON_CreateArray()) &&
              oai_put(p, "text", oai_str_n(text, len));
    if (!ok) {
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

/* An output item {id, type, status, content: [part]} (part taken, may be NULL). */
static cJSON *content_item(const char *id, const char *type, const char *status, cJSON *part)
{
    cJSON *m = cJSON_CreateObject(), *content = cJSON_CreateArray();
    bool ok = oai_put(m, "id", cJSON_CreateString(id)) &&
              oai_put(m, "type", cJSON_CreateString(type)) &&
              oai_put(m, "status", cJSON_CreateString(status));
    if (!ok || !oai_put(m, "content", content)) {
        if (ok)
            content = NULL; /* put freed it */
        cJSON_Delete(content);
        cJSON_Delete(m);
        cJSON_Delete(part);
        return NULL;
    }
    if (part && !oai_put(content, NULL, part)) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

static cJSON *message_item(const char *id, const char *status, cJSON *part)
{
    cJSON *m = content_item(id, "message", status, part);
    if (m && !oai_put(m, "role", cJSON_CreateString("assistant"))) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

static cJSON *call_item(const char *id, const char *call_id, const char *name,
                        const char *args, const char *status)
{
    cJSON *c = cJSON_CreateObject();
    if (oai_put(c, "id", cJSON_CreateString(id)) &&
        oai_put(c, "type", cJSON_CreateString("function_call")) &&
        oai_put(c, "status", cJSON_CreateString(status)) &&
        oai_put(c, "arguments", oai_str_n(args, strlen(args))) &&
        oai_put(c, "call_id", cJSON_CreateString(call_id)) &&
        oai_put(c, "name", oai_str_n(name, strlen(name))))
        return c;
    cJSON_Delete(c);
    return NULL;
}

int rs_add_message(cJSON *arr, const char *resp_id, const char *text, size_t len, cJSON *lp,
                   const char *status)
{
    char id[80];
    item_id(id, sizeof id, "msg_", resp_id, cJSON_GetArraySize(arr));
    cJSON *part = text_part(text, len, lp);
    return part && oai_put(arr, NULL, message_item(id, status, part)) ? 0 : -ENOMEM;
}

/* A reasoning item's content part. */
static cJSON *reasoning_part(const char *text, size_t len)
{
    cJSON *p = cJSON_CreateObject();
    if (!oai_put(p, "type", cJSON_CreateString("reasoning_text")) ||
        !oai_put(p, "text", oai_str_n(text, len))) {
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

static cJSON *reasoning_item(const char *id, const char *status, cJSON *part)
{
    cJSON *r = content_item(id, "reasoning", status, part);
    if (r && !oai_put(r, "summary", cJSON_CreateArray())) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

int rs_add_reasoning(cJSON *arr, const char *resp_id, const char *text, size_t len,
                     const char *status)
{
    char id[80];
    item_id(id, sizeof id, "rs_", resp_id, cJSON_GetArraySize(arr));
    cJSON *part = reasoning_part(text, len);
    return part && oai_put(arr, NULL, reasoning_item(id, status, part)) ? 0 : -ENOMEM;
}

int rs_add_call(cJSON *arr, const char *resp_id, const char *call_id, const char *name,
                const char *arguments, const char *status)
{
    char id[80];
    item_id(id, sizeof id, "fc_", resp_id, cJSON_GetArraySize(arr));
    return oai_put(arr, NULL, call_item(id, call_id, name, arguments, status)) ? 0 : -ENOMEM;
}

/* A member of the request echoed as given, or def (a new value, taken) when absent. */
static bool echo(cJSON *o, const cJSON *root, const char *key, cJSON *def)
{
    const cJSON *v = rq_field(root, key);
    if (v) {
        cJSON_Delete(def);
        return oai_put(o, key, oai_dup(v));
    }
    return oai_put(o, key, def);
}

/* {"id": conv_id}, or null without one. */
static cJSON *conversation_ref(const char *conv_id)
{
    if (!conv_id)
        return cJSON_CreateNull();
    cJSON *c = cJSON_CreateObject();
    if (!oai_put(c, "id", cJSON_CreateString(conv_id))) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

char *rs_conversation_obj(const char *id, long long created_at, const cJSON *metadata)
{
    cJSON *o = cJSON_CreateObject();
    char *t = NULL;
    if (oai_put(o, "id", cJSON_CreateString(id)) &&
        oai_put(o, "object", cJSON_CreateString("conversation")) &&
        oai_put(o, "created_at", cJSON_CreateNumber((double)created_at)) &&
        oai_put(o, "metadata", metadata ? oai_dup(metadata) : cJSON_CreateObject()))
        t = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return t;
}

cJSON *rs_response_obj(const rs_req_t *q, const rs_result_t *r)
{
    const cJSON *root = q->root;
    cJSON *o = cJSON_CreateObject();
    bool done = strcmp(r->status, "in_progress") != 0 && strcmp(r->status, "queued") != 0;
    bool ok = oai_put(o, "id", cJSON_CreateString(r->id)) &&
              oai_put(o, "object", cJSON_CreateString("response")) &&
              oai_put(o, "created_at", cJSON_CreateNumber((double)r->created_at)) &&
              oai_put(o, "status", cJSON_CreateString(r->status)) &&
              oai_put(o, "background", cJSON_CreateBool(q->background)) &&
              oai_put(o, "completed_at", strcmp(r->status, "completed") == 0
                                         ? cJSON_CreateNumber((double)(r->completed_at
                                                                           ? r->completed_at
                                                                           : time(NULL)))
                                         : cJSON_CreateNull());
    if (ok && r->error_message) {
        cJSON *er = cJSON_CreateObject();
        ok = oai_put(o, "error", er) &&
             oai_put(er, "code", cJSON_CreateString(r->error_code ? r->error_code
                                                                  : "server_error")) &&
             oai_put(er, "message", cJSON_CreateString(r->error_message));
    } else if (ok) {
        ok = oai_put(o, "error", cJSON_CreateNull());
    }
    if (ok && r->incomplete_reason) {
        cJSON *d = cJSON_CreateObject();
        ok = oai_put(o, "incomplete_details", d) &&
             oai_put(d, "reason", cJSON_CreateString(r->incomplete_reason));
    } else if (ok) {
        ok = oai_put(o, "incomplete_details", cJSON_CreateNull());
    }
    ok = ok && echo(o, root, "instructions", cJSON_CreateNull()) &&
         echo(o, root, "max_output_tokens", cJSON_CreateNull()) &&
         oai_put(o, "max_tool_calls", cJSON_CreateNull()) &&
         oai_put(o, "model", cJSON_CreateString(r->model)) &&
         oai_put(o, "output", r->output ? oai_dup(r->output) : cJSON_CreateArray()) &&
         echo(o, root, "parallel_tool_calls", cJSON_CreateTrue()) &&
         echo(o, root, "previous_response_id", cJSON_CreateNull()) &&
         oai_put(o, "conversation", conversation_ref(q->conv_id)) &&
         echo(o, root, "prompt_cache_key", cJSON_CreateNull()) &&
         echo(o, root, "safety_identifier", cJSON_CreateNull()) &&
         oai_put(o, "service_tier", cJSON_CreateString("default")) &&
         oai_put(o, "store", cJSON_CreateBool(q->store)) &&
         echo(o, root, "temperature", cJSON_CreateNumber(1.0)) &&
         echo(o, root, "tool_choice", cJSON_CreateString("auto")) &&
         echo(o, root, "tools", cJSON_CreateArray()) &&
         echo(o, root, "top_logprobs", cJSON_CreateNumber(0)) &&
         echo(o, root, "top_p", cJSON_CreateNumber(1.0)) &&
         oai_put(o, "truncation", cJSON_CreateString(q->truncate_auto ? "auto" : "disabled")) &&
         echo(o, root, "user", cJSON_CreateNull()) &&
         echo(o, root, "metadata", cJSON_CreateObject());
    if (ok) {
        cJSON *reason = cJSON_CreateObject();
        const cJSON *eff = rq_field(rq_field(root, "reasoning"), "effort");
        ok = oai_put(o, "reasoning", reason) &&
             oai_put(reason, "effort", eff ? cJSON_CreateString(eff->valuestring)
                                           : cJSON_CreateNull()) &&
             oai_put(reason, "summary", cJSON_CreateNull());
    }
    if (ok) {
        /* text: the format as given (default text) and the verbosity */
        cJSON *t = cJSON_CreateObject();
        const cJSON *f = rq_field(rq_field(root, "text"), "format");
        cJSON *fmt = f ? oai_dup(f) : cJSON_CreateObject();
        ok = oai_put(o, "text", t) && oai_put(t, "format", fmt) &&
             (f || oai_put(fmt, "type", cJSON_CreateString("text"))) &&
             oai_put(t, "verbosity", cJSON_CreateString("medium"));
    }
    if (ok && done && r->usage) {
        cJSON *u = cJSON_CreateObject(), *id = cJSON_CreateObject(), *od = cJSON_CreateObject();
        bool uo = oai_put(o, "usage", u);
        ok = uo && oai_put(u, "input_tokens", cJSON_CreateNumber((double)r->input_tokens));
        if (!uo)
            id = od = (cJSON_Delete(id), cJSON_Delete(od), NULL);
        ok = ok && oai_put(u, "input_tokens_details", id) &&
             oai_put(id, "cached_tokens", cJSON_CreateNumber((double)r->cached_tokens)) &&
             oai_put(u, "output_tokens", cJSON_CreateNumber((double)r->output_tokens)) &&
             oai_put(u, "output_tokens_details", od) &&
             oai_put(od, "reasoning_tokens", cJSON_CreateNumber((double)r->reasoning_tokens)) &&
             oai_put(u, "total_tokens",
                 cJSON_CreateNumber((double)(r->input_tokens + r->output_tokens)));
    } else if (ok) {
        ok = oai_put(o, "usage", cJSON_CreateNull());
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---------------------------------------------------------------- streaming */

void rs_stream_init(rs_stream_t *st, const rs_req_t *q, const char *id, long long created,
                    const char *model)
{
    memset(st, 0, sizeof *st);
    st->q = q;
    st->res.id = id;
    st->res.created_at = created;
    st->res.model = model;
    st->res.status = "in_progress";
    st->output = cJSON_CreateArray();
    st->failed = !st->output;
    st->msg = st->call = st->rsn = -1;
    sb_init(&st->text);
    sb_init(&st->args);
    sb_init(&st->rtext);
    sb_init(&st->log);
}

void rs_stream_detach(rs_stream_t *st, bool keep)
{
    st->detached = true;
    st->keep = keep;
}

void rs_stream_free(rs_stream_t *st)
{
    cJSON_Delete(st->output);
    cJSON_Delete(st->lps);
    sb_free(&st->text);
    sb_free(&st->args);
    sb_free(&st->rtext);
    sb_free(&st->log);
    free(st->ends);
    memset(st, 0, sizeof *st);
}

/* Sends ev (taken) as an SSE frame with the next sequence number. */
static void emit(rs_stream_t *st, sb_t *out, const char *type, cJSON *ev)
{
    bool ok = ev && oai_put(ev, "type", cJSON_CreateString(type)) &&
              oai_put(ev, "sequence_number", cJSON_CreateNumber(st->seq));
    char *json = ok ? cJSON_PrintUnformatted(ev) : NULL;
    cJSON_Delete(ev);
    if (!json) {
        st->failed = true;
        return;
    }
    st->seq++;
    if (st->detached) {
        out = st->keep ? &st->log : NULL;
        if (out && st->n_ends == st->cap_ends) {
            int cap = st->cap_ends ? st->cap_ends * 2 : 64;
            size_t *e = realloc(st->ends, (size_t)cap * sizeof *e);
            if (e) {
                st->ends = e;
                st->cap_ends = cap;
            } else {
                st->log.failed = true;
            }
        }
        if (out && sb_failed(out)) {
            /* a log with a hole could not be replayed: it is dropped (rs_stream_since) */
            st->failed = true;
            out = NULL;
        }
    }
    if (!out) {
        free(json);
        return;
    }
    sb_adds(out, "event: ");
    sb_adds(out, type);
    sb_adds(out, "\ndata: ");
    sb_adds(out, json);
    sb_adds(out, "\n\n");
    free(json);
    if (out == &st->log)
        st->ends[st->n_ends++] = st->log.len;
}

int rs_stream_since(const rs_stream_t *st, long long after, size_t *off)
{
    if (!st->keep || sb_failed(&st->log))
        return -ENOENT;
    if (after < -1 || after >= st->n_ends)
        return -ERANGE;
    *off = after < 0 ? 0 : st->ends[after];
    return 0;
}

static cJSON *ev_response(rs_stream_t *st)
{
    cJSON *ev = cJSON_CreateObject();
    st->res.output = st->output;
    if (!oai_put(ev, "response", rs_response_obj(st->q, &st->res))) {
        cJSON_Delete(ev);
        return NULL;
    }
    return ev;
}

void rs_stream_begin(rs_stream_t *st, sb_t *out)
{
    emit(st, out, "response.created", ev_response(st));
    emit(st, out, "response.in_progress", ev_response(st));
}

/* An event about output item idx (output_index, and item_id unless with_item). */
static cJSON *ev_item(rs_stream_t *st, int idx, bool with_item, bool content)
{
    cJSON *ev = cJSON_CreateObject();
    const cJSON *item = cJSON_GetArrayItem(st->output, idx);
    bool ok = item && oai_put(ev, "output_index", cJSON_CreateNumber(idx));
    if (ok && with_item)
        ok = oai_put(ev, "item", oai_dup(item));
    else if (ok)
        ok = oai_put(ev, "item_id", oai_dup(rq_field(item, "id")));
    if (ok && content)
        ok = oai_put(ev, "content_index", cJSON_CreateNumber(0));
    if (!ok) {
        cJSON_Delete(ev);
        return NULL;
    }
    return ev;
}

/* Adds item (taken; NULL: out of memory) to the output and sends output_item.added and
 * content_part.added with empty (taken); its output index, or -1. */
static int open_item(rs_stream_t *st, sb_t *out, cJSON *item, cJSON *empty)
{
    if (!oai_put(st->output, NULL, item)) {
        st->failed = true;
        cJSON_Delete(empty);
        return -1;
    }
    int idx = cJSON_GetArraySize(st->output) - 1;
    emit(st, out, "response.output_item.added", ev_item(st, idx, true, false));
    cJSON *ev = ev_item(st, idx, false, true);
    if (ev && !oai_put(ev, "part", empty))
        ev = (cJSON_Delete(ev), NULL);
    else if (!ev)
        cJSON_Delete(empty);
    emit(st, out, "response.content_part.added", ev);
    return idx;
}

/* After an item's text .done event: content_part.done with part (taken), the part in the
 * item, its status, and output_item.done. */
static void finish_item(rs_stream_t *st, sb_t *out, int idx, cJSON *part, const char *status)
{
    cJSON *item = cJSON_GetArrayItem(st->output, idx);
    cJSON *ev = ev_item(st, idx, false, true);
    if (ev && !oai_put(ev, "part", oai_dup(part)))
        ev = (cJSON_Delete(ev), NULL);
    emit(st, out, "response.content_part.done", ev);
    cJSON *content = cJSON_GetObjectItemCaseSensitive(item, "content");
    if (!part || !oai_put(content, NULL, part))
        st->failed = true;
    cJSON_ReplaceItemInObjectCaseSensitive(item, "status", cJSON_CreateString(status));
    emit(st, out, "response.output_item.done", ev_item(st, idx, true, false));
}

static void close_reasoning(rs_stream_t *st, sb_t *out, const char *status)
{
    if (st->rsn < 0)
        return;
    const char *text = st->rtext.buf ? st->rtext.buf : "";
    cJSON *ev = ev_item(st, st->rsn, false, true);
    if (ev && !oai_put(ev, "text", oai_str_n(text, st->rtext.len)))
        ev = (cJSON_Delete(ev), NULL);
    emit(st, out, "response.reasoning_text.done", ev);
    finish_item(st, out, st->rsn, reasoning_part(text, st->rtext.len), status);
    st->rsn = -1;
    sb_reset(&st->rtext);
}

void rs_stream_reasoning(rs_stream_t *st, sb_t *out, const char *text, size_t len)
{
    if (st->rsn < 0) {
        char id[80];
        item_id(id, sizeof id, "rs_", st->res.id, cJSON_GetArraySize(st->output));
        st->rsn = open_item(st, out, reasoning_item(id, "in_progress", NULL),
                            reasoning_part("", 0));
        if (st->rsn < 0)
            return;
    }
    sb_add(&st->rtext, text, len);
    cJSON *ev = ev_item(st, st->rsn, false, true);
    if (ev && !oai_put(ev, "delta", oai_str_n(text, len)))
        ev = (cJSON_Delete(ev), NULL);
    emit(st, out, "response.reasoning_text.delta", ev);
}

void rs_stream_text(rs_stream_t *st, sb_t *out, const char *text, size_t len, cJSON *lp)
{
    close_reasoning(st, out, "completed");
    if (st->msg < 0) {
        char id[80];
        item_id(id, sizeof id, "msg_", st->res.id, cJSON_GetArraySize(st->output));
        st->msg = open_item(st, out, message_item(id, "in_progress", NULL),
                            text_part("", 0, NULL));
        if (st->msg < 0) {
            cJSON_Delete(lp);
            return;
        }
        st->lps = cJSON_CreateArray();
    }
    sb_add(&st->text, text, len);
    cJSON *ev = ev_item(st, st->msg, false, true);
    if (!oai_put(ev, "delta", oai_str_n(text, len)) ||
        !oai_put(ev, "logprobs", lp ? oai_dup(lp) : cJSON_CreateArray()))
        ev = (cJSON_Delete(ev), NULL);
    /* the tokens' logprobs are kept for the .done events and the final response */
    for (cJSON *x = lp ? lp->child : NULL; x && st->lps; x = x->next)
        if (!oai_put(st->lps, NULL, oai_dup(x)))
            st->failed = true;
    cJSON_Delete(lp);
    emit(st, out, "response.output_text.delta", ev);
}

static void close_msg(rs_stream_t *st, sb_t *out, const char *status)
{
    if (st->msg < 0)
        return;
    const char *text = st->text.buf ? st->text.buf : "";
    cJSON *ev = ev_item(st, st->msg, false, true);
    if (ev && (!oai_put(ev, "text", oai_str_n(text, st->text.len)) ||
               !oai_put(ev, "logprobs", st->lps ? oai_dup(st->lps) : cJSON_CreateArray())))
        ev = (cJSON_Delete(ev), NULL);
    emit(st, out, "response.output_text.done", ev);
    finish_item(st, out, st->msg, text_part(text, st->text.len, st->lps), status);
    st->lps = NULL;
    st->msg = -1;
    sb_reset(&st->text);
}

static void close_call(rs_stream_t *st, sb_t *out, const char *status)
{
    if (st->call < 0)
        return;
    cJSON *item = cJSON_GetArrayItem(st->output, st->call);
    const char *args = st->args.buf ? st->args.buf : "";
    cJSON *ev = ev_item(st, st->call, false, false);
    if (ev && (!oai_put(ev, "arguments", oai_str_n(args, st->args.len)) ||
               !oai_put(ev, "name", oai_dup(rq_field(item, "name")))))
        ev = (cJSON_Delete(ev), NULL);
    emit(st, out, "response.function_call_arguments.done", ev);
    cJSON_ReplaceItemInObjectCaseSensitive(item, "arguments", oai_str_n(args, st->args.len));
    cJSON_ReplaceItemInObjectCaseSensitive(item, "status", cJSON_CreateString(status));
    emit(st, out, "response.output_item.done", ev_item(st, st->call, true, false));
    st->call = -1;
    sb_reset(&st->args);
}

void rs_stream_call(rs_stream_t *st, sb_t *out, const char *call_id, const char *name)
{
    close_reasoning(st, out, "completed");
    close_msg(st, out, "completed");
    close_call(st, out, "completed");
    char id[80];
    item_id(id, sizeof id, "fc_", st->res.id, cJSON_GetArraySize(st->output));
    if (!oai_put(st->output, NULL, call_item(id, call_id, name, "", "in_progress"))) {
        st->failed = true;
        return;
    }
    st->call = cJSON_GetArraySize(st->output) - 1;
    emit(st, out, "response.output_item.added", ev_item(st, st->call, true, false));
}

void rs_stream_args(rs_stream_t *st, sb_t *out, const char *delta)
{
    if (st->call < 0)
        return;
    sb_adds(&st->args, delta);
    cJSON *ev = ev_item(st, st->call, false, false);
    if (ev && !oai_put(ev, "delta", oai_str_n(delta, strlen(delta))))
        ev = (cJSON_Delete(ev), NULL);
    emit(st, out, "response.function_call_arguments.delta", ev);
}

cJSON *rs_stream_output(const rs_stream_t *st, const char *open_status)
{
    cJSON *out = oai_dup(st->output);
    bool ok = out != NULL;
    if (ok && st->msg >= 0) {
        cJSON *item = cJSON_GetArrayItem(out, st->msg);
        cJSON *part = text_part(st->text.buf ? st->text.buf : "", st->text.len,
                                st->lps ? oai_dup(st->lps) : NULL);
        ok = part && oai_put(cJSON_GetObjectItemCaseSensitive(item, "content"), NULL, part);
        if (ok && open_status)
            cJSON_ReplaceItemInObjectCaseSensitive(item, "status",
                                                   cJSON_CreateString(open_status));
    }
    if (ok && st->rsn >= 0) {
        cJSON *item = cJSON_GetArrayItem(out, st->rsn);
        cJSON *part = reasoning_part(st->rtext.buf ? st->rtext.buf : "", st->rtext.len);
        ok = part && oai_put(cJSON_GetObjectItemCaseSensitive(item, "content"), NULL, part);
        if (ok && open_status)
            cJSON_ReplaceItemInObjectCaseSensitive(item, "status",
                                                   cJSON_CreateString(open_status));
    }
    if (ok && st->call >= 0) {
        cJSON *item = cJSON_GetArrayItem(out, st->call);
        cJSON_ReplaceItemInObjectCaseSensitive(item, "arguments",
                                               oai_str_n(st->args.buf, st->args.len));
        if (open_status)
            cJSON_ReplaceItemInObjectCaseSensitive(item, "status",
                                                   cJSON_CreateString(open_status));
    }
    if (!ok) {
        cJSON_Delete(out);
        return NULL;
    }
    return out;
}

void rs_stream_close(rs_stream_t *st, sb_t *out, bool incomplete)
{
    const char *status = incomplete ? "incomplete" : "completed";
    close_reasoning(st, out, status);
    close_msg(st, out, status);
    close_call(st, out, status);
}

void rs_stream_status(rs_stream_t *st, sb_t *out, const char *type)
{
    emit(st, out, type, ev_response(st));
}

void rs_stream_end(rs_stream_t *st, sb_t *out)
{
    const char *s = st->res.status;
    emit(st, out, strcmp(s, "incomplete") == 0  ? "response.incomplete"
                  : strcmp(s, "cancelled") == 0 ? "response.cancelled"
                  : strcmp(s, "failed") == 0    ? "response.failed"
                                                : "response.completed",
         ev_response(st));
}

void rs_stream_error(rs_stream_t *st, sb_t *out, const char *code, const char *message)
{
    cJSON *ev = cJSON_CreateObject();
    if (!oai_put(ev, "code", code ? cJSON_CreateString(code) : cJSON_CreateNull()) ||
        !oai_put(ev, "message", cJSON_CreateString(message)) ||
        !oai_put(ev, "param", cJSON_CreateNull()))
        ev = (cJSON_Delete(ev), NULL);
    emit(st, out, "error", ev);
}

/* ---------------------------------------------------------------- the store */

typedef struct rs_entry {
    struct rs_entry *prev, *next; /* most recently used first */
    char *id;
    char *response;
    cJSON *input, *output;
    char *events;               /* a background stream's events (NULL: none kept) */
    size_t events_len;
    size_t bytes;
} rs_entry_t;

struct rs_store {
    rs_entry_t *head, *tail;
    int count, max_count;
    size_t bytes, max_bytes;
};

int rs_store_create(rs_store_t **out, int max_count, size_t max_bytes)
{
    rs_store_t *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->max_count = max_count;
    s->max_bytes = max_bytes;
    *out = s;
    return 0;
}

static void unlink_entry(rs_store_t *s, rs_entry_t *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        s->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        s->tail = x->prev;
    x->prev = x->next = NULL;
}

static void push_front(rs_store_t *s, rs_entry_t *x)
{
    x->prev = NULL;
    x->next = s->head;
    if (s->head)
        s->head->prev = x;
    s->head = x;
    if (!s->tail)
        s->tail = x;
}

static void drop(rs_store_t *s, rs_entry_t *x)
{
    unlink_entry(s, x);
    s->count--;
    s->bytes -= x->bytes;
    free(x->id);
    free(x->response);
    free(x->events);
    cJSON_Delete(x->input);
    cJSON_Delete(x->output);
    free(x);
}

void rs_store_free(rs_store_t *s)
{
    if (!s)
        return;
    while (s->head)
        drop(s, s->head);
    free(s);
}

static rs_entry_t *find(rs_store_t *s, const char *id)
{
    for (rs_entry_t *x = s->head; x; x = x->next)
        if (strcmp(x->id, id) == 0)
            return x;
    return NULL;
}

static size_t json_size(const cJSON *v)
{
    char *t = cJSON_PrintUnformatted(v);
    size_t n = t ? strlen(t) : 0;
    free(t);
    return n;
}

int rs_store_put(rs_store_t *s, const char *id, const char *response, const cJSON *input,
                 const cJSON *output)
{
    if (s->max_count <= 0)
        return 0;
    size_t bytes = strlen(id) + strlen(response) + json_size(input) + json_size(output) +
                   sizeof(rs_entry_t);
    if (bytes > s->max_bytes)
        return -E2BIG;
    rs_entry_t *old = find(s, id);
    if (old)
        drop(s, old);
    rs_entry_t *x = calloc(1, sizeof *x);
    if (!x)
        return -ENOMEM;
    x->id = strdup(id);
    x->response = strdup(response);
    x->input = input ? oai_dup(input) : cJSON_CreateArray();
    x->output = output ? oai_dup(output) : cJSON_CreateArray();
    x->bytes = bytes;
    if (!x->id || !x->response || !x->input || !x->output) {
        free(x->id);
        free(x->response);
        cJSON_Delete(x->input);
        cJSON_Delete(x->output);
        free(x);
        return -ENOMEM;
    }
    while (s->tail && (s->count >= s->max_count || s->bytes + bytes > s->max_bytes))
        drop(s, s->tail);
    push_front(s, x);
    s->count++;
    s->bytes += bytes;
    return 0;
}

int rs_store_get(rs_store_t *s, const char *id, const char **response, const cJSON **input,
                 const cJSON **output)
{
    rs_entry_t *x = find(s, id);
    if (!x)
        return -ENOENT;
    unlink_entry(s, x);
    push_front(s, x);
    if (response)
        *response = x->response;
    if (input)
        *input = x->input;
    if (output)
        *output = x->output;
    return 0;
}

int rs_store_set_events(rs_store_t *s, const char *id, const char *events, size_t len)
{
    rs_entry_t *x = find(s, id);
    if (!x)
        return -ENOENT;
    if (x->bytes + len > s->max_bytes)
        return -E2BIG;
    char *copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, events, len);
    copy[len] = 0;
    /* room is made among the others (x is the newest: it goes last) */
    while (s->tail && s->tail != x && s->bytes + len > s->max_bytes)
        drop(s, s->tail);
    free(x->events);
    x->events = copy;
    x->events_len = len;
    x->bytes += len;
    s->bytes += len;
    return 0;
}

int rs_store_events(rs_store_t *s, const char *id, const char **events, size_t *len)
{
    rs_entry_t *x = find(s, id);
    if (!x)
        return -ENOENT;
    if (!x->events)
        return -ENODATA;
    *events = x->events;
    *len = x->events_len;
    return 0;
}

int rs_events_since(const char *events, size_t len, long long after, size_t *off)
{
    /* a frame is "event: T\ndata: J\n\n" and J (unformatted JSON) holds no newline */
    size_t at = 0;
    long long k = -1;
    if (after < -1)
        return -ERANGE;
    while (k < after) {
        size_t i = at;
        while (i + 1 < len && !(events[i] == '\n' && events[i + 1] == '\n'))
            i++;
        if (i + 1 >= len)
            return -ERANGE;
        at = i + 2;
        k++;
    }
    *off = at;
    return 0;
}

int rs_store_del(rs_store_t *s, const char *id)
{
    rs_entry_t *x = find(s, id);
    if (!x)
        return -ENOENT;
    drop(s, x);
    return 0;
}

int rs_store_count(const rs_store_t *s)
{
    return s->count;
}

size_t rs_store_bytes(const rs_store_t *s)
{
    return s->bytes;
}

char *rs_input_items(const cJSON *input, bool desc, int limit, const char *after)
{
    int n = cJSON_GetArraySize(input);
    cJSON *o = cJSON_CreateObject(), *data = cJSON_CreateArray();
    bool ok = oai_put(o, "object", cJSON_CreateString("list")) && oai_put(o, "data", data);
    if (!ok)
        cJSON_Delete(data);
    bool started = after == NULL, more = false;
    for (int k = 0; ok && k < n; k++) {
        const cJSON *it = cJSON_GetArrayItem(input, desc ? n - 1 - k : k);
        if (!started) {
            started = rq_is_str(rq_field(it, "id"), after);
            continue;
        }
        if (cJSON_GetArraySize(data) >= limit) {
            more = true;
            break;
        }
        ok = oai_put(data, NULL, oai_dup(it));
    }
    int m = ok ? cJSON_GetArraySize(data) : 0;
    const cJSON *first = m ? cJSON_GetArrayItem(data, 0) : NULL;
    const cJSON *last = m ? cJSON_GetArrayItem(data, m - 1) : NULL;
    ok = ok &&
         oai_put(o, "first_id", first ? oai_dup(rq_field(first, "id")) : cJSON_CreateNull()) &&
         oai_put(o, "last_id", last ? oai_dup(rq_field(last, "id")) : cJSON_CreateNull()) &&
         oai_put(o, "has_more", cJSON_CreateBool(more));
    char *s = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}
