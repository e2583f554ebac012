/* anthropic.c: the Messages API as a translation to the chat path, and its answers.  A NULL
 * from any cJSON call (out of memory) propagates; nothing here aborts. */
#include <config.h>

#include "server/anthropic.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "server/openai.h"

#define AN_MIN_BUDGET 1024      /* Anthropic's least thinking.budget_tokens */
#define AN_MAX_USER_ID 256      /* metadata.user_id */

/* A 400 whose message opens with the field, as Anthropic's do ("max_tokens: Field
 * required"); param keeps the field for the log and the tests. */
static int bad(rq_err_t *e, const char *param, const char *fmt, ...) FD_PRINTF(3, 4);
static int bad(rq_err_t *e, const char *param, const char *fmt, ...)
{
    char msg[440];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (param && param[0])
        rq_fail(e, 400, "invalid_request_error", param, "%s: %s", param, msg);
    else
        rq_fail(e, 400, "invalid_request_error", NULL, "%s", msg);
    return -EINVAL;
}

static int want_str(const cJSON *v, const char *param, bool nonempty, rq_err_t *e)
{
    if (!cJSON_IsString(v))
        return bad(e, param, "must be a string, not %s", rq_type_name(v));
    if (!rq_utf8_valid(v->valuestring, strlen(v->valuestring)))
        return bad(e, param, "is not valid UTF-8");
    if (nonempty && !v->valuestring[0])
        return bad(e, param, "must not be empty");
    return 0;
}

/* ---------------------------------------------------------------- the request */

/* Top-level fields.  Any other is a 400, as Anthropic answers it ("Extra inputs are not
 * permitted"), so a misspelt one is not silently dropped; count_tokens takes fewer. */
static const struct {
    const char *key;
    bool count;                 /* also in a count_tokens body */
    bool pass;                  /* a fusiond (and vLLM) sampling extension, which the chat
                                   parser checks under the same name */
} fields[] = {
    {"model", true, false}, {"messages", true, false}, {"system", true, false},
    {"tools", true, false}, {"tool_choice", true, false}, {"thinking", true, false},
    {"max_tokens", false, false}, {"stop_sequences", false, false},
    {"temperature", false, false}, {"top_p", false, false}, {"top_k", false, false},
    {"stream", false, false}, {"metadata", false, false}, {"service_tier", false, false},
    {"seed", false, true}, {"min_p", false, true}, {"presence_penalty", false, true},
    {"frequency_penalty", false, true}, {"repetition_penalty", false, true},
    {"logit_bias", false, true}, {"ignore_eos", false, true},
};

/* Fields of Anthropic's that ask for what runs on Anthropic's side: refused by name. */
static const char *const elsewhere[] = {"container", "mcp_servers", "context_management"};

static int check_fields(const cJSON *root, bool count, rq_err_t *e)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        size_t k;
        for (k = 0; k < FD_ARRAY_LEN(fields); k++)
            if (strcmp(it->string, fields[k].key) == 0 && (fields[k].count || !count))
                break;
        if (k < FD_ARRAY_LEN(fields))
            continue;
        for (k = 0; k < FD_ARRAY_LEN(elsewhere); k++)
            if (strcmp(it->string, elsewhere[k]) == 0 && !cJSON_IsNull(it))
                return bad(e, it->string, "is not supported by fusiond (it asks for tools or "
                           "state that run on Anthropic's servers); leave it out");
        if (k == FD_ARRAY_LEN(elsewhere) || !cJSON_IsNull(it))
            return bad(e, it->string, "Extra inputs are not permitted");
    }
    return 0;
}

/* Content blocks fusiond cannot take, with why. */
static const char *refused_block(const char *type)
{
    static const struct {
        const char *type, *why;
    } t[] = {
        {"image", "image blocks are not supported: fusiond serves text-only models"},
        {"document", "document blocks are not supported: fusiond serves text-only models and "
                     "reads no PDFs"},
        {"search_result", "search_result blocks are not supported (citations are Anthropic's)"},
        {"server_tool_use", "server tool blocks are not supported: no server tools run here"},
        {"web_search_tool_result", "server tool blocks are not supported: no server tools run "
                                   "here"},
        {"container_upload", "container blocks are not supported"},
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(t); k++)
        if (strcmp(type, t[k].type) == 0)
            return t[k].why;
    return NULL;
}

/* A block's type (0), else the 400 naming it. */
static int block_type(const cJSON *b, const char *bp, const char **type, rq_err_t *e)
{
    char tp[160];
    snprintf(tp, sizeof tp, "%.100s.type", bp);
    if (!cJSON_IsObject(b))
        return bad(e, bp, "must be a content block object {\"type\": ...}, not %s",
                   rq_type_name(b));
    const cJSON *t = rq_field(b, "type");
    if (!cJSON_IsString(t))
        return bad(e, tp, "Field required (a string such as \"text\")");
    const char *why = refused_block(t->valuestring);
    if (why)
        return bad(e, tp, "%s", why);
    *type = t->valuestring;
    return 0;
}

/* A text block {"type": "text", "text": ...} (cache_control and citations are accepted and
 * have no effect). */
static int text_block(const cJSON *b, const char *bp, rq_err_t *e)
{
    char p[160];
    snprintf(p, sizeof p, "%.100s.text", bp);
    const cJSON *t = rq_field(b, "text");
    if (!t)
        return bad(e, p, "Field required");
    if (want_str(t, p, false, e))
        return -EINVAL;
    if (!t->valuestring[0])
        return bad(e, bp, "text content blocks must be non-empty");
    return 0;
}

/* A tool_result's content: a string or text blocks. */
static int result_content(const cJSON *c, const char *cp, rq_err_t *e)
{
    if (!c || cJSON_IsString(c))
        return c ? want_str(c, cp, false, e) : 0;
    if (!cJSON_IsArray(c))
        return bad(e, cp, "must be a string or an array of text blocks, not %s", rq_type_name(c));
    int i = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, c)
    {
        char bp[160];
        const char *type;
        snprintf(bp, sizeof bp, "%.100s.%d", cp, i++);
        if (block_type(b, bp, &type, e))
            return -EINVAL;
        if (strcmp(type, "text") != 0)
            return bad(e, bp, "a tool_result's content holds text blocks, not '%.40s'", type);
        if (text_block(b, bp, e))
            return -EINVAL;
    }
    return 0;
}

static int check_block(const cJSON *b, const char *bp, bool assistant, rq_err_t *e)
{
    const char *type;
    if (block_type(b, bp, &type, e))
        return -EINVAL;
    char p[200];
    if (strcmp(type, "text") == 0)
        return text_block(b, bp, e);
    if (strcmp(type, "tool_use") == 0) {
        if (!assistant)
            return bad(e, bp, "tool_use blocks belong in assistant messages");
        static const char *const strs[] = {"id", "name"};
        for (size_t k = 0; k < FD_ARRAY_LEN(strs); k++) {
            snprintf(p, sizeof p, "%.100s.%s", bp, strs[k]);
            const cJSON *v = rq_field(b, strs[k]);
            if (!v)
                return bad(e, p, "Field required");
            if (want_str(v, p, true, e))
                return -EINVAL;
        }
        snprintf(p, sizeof p, "%.100s.input", bp);
        const cJSON *in = rq_field(b, "input");
        if (!cJSON_IsObject(in))
            return bad(e, p, in ? "must be an object, not %s" : "Field required%s",
                       in ? rq_type_name(in) : "");
        return 0;
    }
    if (strcmp(type, "tool_result") == 0) {
        if (assistant)
            return bad(e, bp, "tool_result blocks belong in user messages");
        snprintf(p, sizeof p, "%.100s.tool_use_id", bp);
        const cJSON *v = rq_field(b, "tool_use_id");
        if (!v)
            return bad(e, p, "Field required");
        if (want_str(v, p, true, e))
            return -EINVAL;
        snprintf(p, sizeof p, "%.100s.is_error", bp);
        v = rq_field(b, "is_error");
        if (v && !cJSON_IsBool(v))
            return bad(e, p, "must be a boolean, not %s", rq_type_name(v));
        snprintf(p, sizeof p, "%.100s.content", bp);
        return result_content(rq_field(b, "content"), p, e);
    }
    if (strcmp(type, "thinking") == 0 || strcmp(type, "redacted_thinking") == 0) {
        if (!assistant)
            return bad(e, bp, "%s blocks belong in assistant messages", type);
        const char *key = type[0] == 't' ? "thinking" : "data";
        snprintf(p, sizeof p, "%.100s.%s", bp, key);
        const cJSON *v = rq_field(b, key);
        if (!v)
            return bad(e, p, "Field required");
        return want_str(v, p, false, e);
    }
    snprintf(p, sizeof p, "%.100s.type", bp);
    return bad(e, p, "unknown content block type '%.40s' (text, tool_use, tool_result, "
               "thinking, redacted_thinking)", type);
}

/* A final assistant message (a prefill) whose text ends in whitespace, which Anthropic's
 * API refuses: its last text block's, or the string's. */
static bool trailing_space(const cJSON *c)
{
    const cJSON *t = cJSON_IsString(c) ? c : NULL, *b;
    const cJSON *arr = cJSON_IsArray(c) ? c : NULL;
    cJSON_ArrayForEach(b, arr)
        if (rq_is_str(rq_field(b, "type"), "text") && cJSON_IsString(rq_field(b, "text")))
            t = rq_field(b, "text");
    size_t n = t ? strlen(t->valuestring) : 0;
    return n && strchr(" \t\n\r\v\f", t->valuestring[n - 1]);
}

static int check_messages(const cJSON *root, rq_err_t *e)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages");
    if (!msgs)
        return bad(e, "messages", "Field required");
    if (!cJSON_IsArray(msgs))
        return bad(e, "messages", "must be an array of messages, not %s", rq_type_name(msgs));
    int n = cJSON_GetArraySize(msgs);
    if (n == 0)
        return bad(e, "messages", "at least one message is required");
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs)
    {
        char mp[64], p[96];
        snprintf(mp, sizeof mp, "messages.%d", i++);
        if (!cJSON_IsObject(m))
            return bad(e, mp, "must be an object {\"role\", \"content\"}, not %s", rq_type_name(m));
        const cJSON *role = rq_field(m, "role");
        snprintf(p, sizeof p, "%.100s.role", mp);
        if (!role)
            return bad(e, p, "Field required");
        if (!rq_is_str(role, "user") && !rq_is_str(role, "assistant"))
            return bad(e, p, "must be \"user\" or \"assistant\" (the system prompt is the "
                       "top-level 'system')");
        bool assistant = rq_is_str(role, "assistant");
        if (assistant && i == n && trailing_space(rq_field(m, "content")))
            return bad(e, mp, "final assistant content cannot end with trailing whitespace");
        const cJSON *c = rq_field(m, "content");
        snprintf(p, sizeof p, "%.100s.content", mp);
        if (!c)
            return bad(e, p, "Field required");
        if (cJSON_IsString(c)) {
            if (want_str(c, p, true, e))
                return -EINVAL;
            continue;
        }
        if (!cJSON_IsArray(c))
            return bad(e, p, "must be a string or an array of content blocks, not %s",
                       rq_type_name(c));
        if (!c->child)
            return bad(e, p, "must not be empty");
        int k = 0;
        const cJSON *b;
        cJSON_ArrayForEach(b, c)
        {
            char bp[128];
            snprintf(bp, sizeof bp, "%.100s.%d", p, k++);
            if (check_block(b, bp, assistant, e))
                return -EINVAL;
        }
    }
    return 0;
}

static int check_system(const cJSON *root, rq_err_t *e)
{
    const cJSON *s = rq_field(root, "system");
    if (!s || cJSON_IsString(s))
        return s ? want_str(s, "system", false, e) : 0;
    if (!cJSON_IsArray(s))
        return bad(e, "system", "must be a string or an array of text blocks, not %s",
                   rq_type_name(s));
    int i = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, s)
    {
        char bp[64];
        const char *type;
        snprintf(bp, sizeof bp, "system.%d", i++);
        if (block_type(b, bp, &type, e))
            return -EINVAL;
        if (strcmp(type, "text") != 0)
            return bad(e, bp, "the system prompt holds text blocks, not '%.40s'", type);
        if (text_block(b, bp, e))
            return -EINVAL;
    }
    return 0;
}

static int check_tools(const cJSON *root, rq_err_t *e)
{
    const cJSON *tools = rq_field(root, "tools");
    if (tools && !cJSON_IsArray(tools))
        return bad(e, "tools", "must be an array of tools, not %s", rq_type_name(tools));
    int i = 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, tools)
    {
        char tp[48], p[80];
        snprintf(tp, sizeof tp, "tools.%d", i++);
        if (!cJSON_IsObject(t))
            return bad(e, tp, "must be an object {\"name\", \"description\", "
                       "\"input_schema\"}, not %s", rq_type_name(t));
        const cJSON *type = rq_field(t, "type");
        snprintf(p, sizeof p, "%.100s.type", tp);
        if (type && !rq_is_str(type, "custom"))
            return bad(e, p, "'%.60s' is not supported: Anthropic's server and client tools "
                       "(web search, bash, text editor, computer use) do not run here; "
                       "describe a custom tool with name and input_schema",
                       cJSON_IsString(type) ? type->valuestring : rq_type_name(type));
        snprintf(p, sizeof p, "%.100s.name", tp);
        const cJSON *v = rq_field(t, "name");
        if (!v)
            return bad(e, p, "Field required");
        if (want_str(v, p, true, e))
            return -EINVAL;
        snprintf(p, sizeof p, "%.100s.description", tp);
        if ((v = rq_field(t, "description")) && want_str(v, p, false, e))
            return -EINVAL;
        snprintf(p, sizeof p, "%.100s.input_schema", tp);
        v = rq_field(t, "input_schema");
        if (!v)
            return bad(e, p, "Field required");
        if (!cJSON_IsObject(v))
            return bad(e, p, "must be a JSON Schema object, not %s", rq_type_name(v));
        const cJSON *st = rq_field(v, "type");
        if (st && !rq_is_str(st, "object"))
            return bad(e, p, "the input schema's type must be \"object\"");
    }
    const cJSON *tc = rq_field(root, "tool_choice");
    if (!tc)
        return 0;
    if (!cJSON_IsObject(tc))
        return bad(e, "tool_choice", "must be an object {\"type\": \"auto\" | \"any\" | "
                   "\"tool\" | \"none\"}, not %s", rq_type_name(tc));
    const cJSON *ty = rq_field(tc, "type");
    if (!ty)
        return bad(e, "tool_choice.type", "Field required");
    if (!rq_is_str(ty, "auto") && !rq_is_str(ty, "any") && !rq_is_str(ty, "tool") &&
        !rq_is_str(ty, "none"))
        return bad(e, "tool_choice.type", "must be \"auto\", \"any\", \"tool\" or \"none\"");
    const cJSON *dp = rq_field(tc, "disable_parallel_tool_use");
    if (dp && !cJSON_IsBool(dp))
        return bad(e, "tool_choice.disable_parallel_tool_use", "must be a boolean, not %s",
                   rq_type_name(dp));
    if (!rq_is_str(ty, "none") && !(tools && tools->child))
        return bad(e, "tool_choice", "needs 'tools': a tool choice of type '%s' has no tool to "
                   "choose", ty->valuestring);
    const cJSON *name = rq_field(tc, "name");
    if (!rq_is_str(ty, "tool"))
        return name ? bad(e, "tool_choice.name", "is only for a tool choice of type \"tool\"")
                    : 0;
    if (!name)
        return bad(e, "tool_choice.name", "Field required");
    if (want_str(name, "tool_choice.name", true, e))
        return -EINVAL;
    cJSON_ArrayForEach(t, tools)
    {
        if (rq_is_str(rq_field(t, "name"), name->valuestring))
            return 0;
    }
    return bad(e, "tool_choice.name", "'%.100s' is not one of the tools", name->valuestring);
}

static int check_thinking(const cJSON *root, bool count, rq_err_t *e)
{
    const cJSON *th = rq_field(root, "thinking");
    if (!th)
        return 0;
    if (!cJSON_IsObject(th))
        return bad(e, "thinking", "must be an object {\"type\": \"enabled\", "
                   "\"budget_tokens\": N} or {\"type\": \"disabled\"}, not %s", rq_type_name(th));
    const cJSON *ty = rq_field(th, "type");
    if (!ty)
        return bad(e, "thinking.type", "Field required");
    if (rq_is_str(ty, "disabled"))
        return 0;
    if (!rq_is_str(ty, "enabled"))
        return bad(e, "thinking.type", "must be \"enabled\" or \"disabled\"");
    const cJSON *b = rq_field(th, "budget_tokens");
    if (!b)
        return bad(e, "thinking.budget_tokens", "Field required");
    if (!cJSON_IsNumber(b) || b->valuedouble != floor(b->valuedouble) ||
        b->valuedouble < AN_MIN_BUDGET || b->valuedouble > 0x7fffffff)
        return bad(e, "thinking.budget_tokens", "must be an integer of at least %d",
                   AN_MIN_BUDGET);
    const cJSON *mt = rq_field(root, "max_tokens");
    if (!count && cJSON_IsNumber(mt) && b->valuedouble >= mt->valuedouble)
        return bad(e, "thinking.budget_tokens", "must be less than max_tokens");
    return 0;
}

static int check_sampling(const cJSON *root, rq_err_t *e)
{
    const cJSON *v = rq_field(root, "max_tokens");
    if (!v)
        return bad(e, "max_tokens", "Field required");
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 1 ||
        v->valuedouble > 0x7fffffff)
        return bad(e, "max_tokens", "must be an integer of at least 1, not %s",
                   cJSON_IsNumber(v) ? "this number" : rq_type_name(v));
    static const char *const unit[] = {"temperature", "top_p"};
    for (size_t k = 0; k < FD_ARRAY_LEN(unit); k++) {
        v = rq_field(root, unit[k]);
        if (v && (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble <= 1)))
            return bad(e, unit[k], "must be a number in [0, 1]");
    }
    v = rq_field(root, "top_k");
    if (v && (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
              v->valuedouble < 0 || v->valuedouble > 0x7fffffff))
        return bad(e, "top_k", "must be an integer of at least 0");
    v = rq_field(root, "stream");
    if (v && !cJSON_IsBool(v))
        return bad(e, "stream", "must be a boolean, not %s", rq_type_name(v));
    v = rq_field(root, "stop_sequences");
    if (v && !cJSON_IsArray(v))
        return bad(e, "stop_sequences", "must be an array of strings, not %s", rq_type_name(v));
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        char p[48];
        snprintf(p, sizeof p, "stop_sequences.%d", i++);
        if (want_str(it, p, true, e))
            return -EINVAL;
    }
    v = rq_field(root, "metadata");
    if (v && !cJSON_IsObject(v))
        return bad(e, "metadata", "must be an object, not %s", rq_type_name(v));
    cJSON_ArrayForEach(it, v)
    {
        if (strcmp(it->string, "user_id") != 0) {
            char p[120];
            snprintf(p, sizeof p, "metadata.%.80s", it->string);
            return bad(e, p, "Extra inputs are not permitted");
        }
        if (!cJSON_IsNull(it) &&
            (want_str(it, "metadata.user_id", false, e) ||
             (strlen(it->valuestring) > AN_MAX_USER_ID &&
              bad(e, "metadata.user_id", "must be at most %d characters", AN_MAX_USER_ID))))
            return -EINVAL;
    }
    v = rq_field(root, "service_tier");
    if (v && !rq_is_str(v, "auto") && !rq_is_str(v, "standard_only"))
        return bad(e, "service_tier", "must be \"auto\" or \"standard_only\"");
    return 0;
}

int an_parse(const char *body, size_t len, bool count, an_req_t *q, rq_err_t *e)
{
    memset(q, 0, sizeof *q);
    q->count = count;
    if (len == 0)
        return bad(e, NULL, "the request body is empty; a JSON object is expected");
    const char *end = NULL;
    q->root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!q->root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return bad(e, NULL, "malformed JSON near byte %zu of %zu", at, len);
    }
    const cJSON *root = q->root;
    int rc;
    if (!cJSON_IsObject(root)) {
        rc = bad(e, NULL, "the request body must be a JSON object, not %s", rq_type_name(root));
        goto fail;
    }
    const cJSON *model = rq_field(root, "model");
    if ((rc = check_fields(root, count, e)))
        goto fail;
    if (!model) {
        rc = bad(e, "model", "Field required");
        goto fail;
    }
    if ((rc = want_str(model, "model", true, e)) || (rc = check_system(root, e)) ||
        (rc = check_messages(root, e)) || (rc = check_tools(root, e)) ||
        (rc = check_thinking(root, count, e)) || (!count && (rc = check_sampling(root, e))))
        goto fail;
    q->stream = cJSON_IsTrue(rq_field(root, "stream"));
    return 0;
fail:
    an_free(q);
    return rc;
}

void an_free(an_req_t *q)
{
    if (!q)
        return;
    cJSON_Delete(q->root);
    memset(q, 0, sizeof *q);
}

/* The text of text blocks (or a string), joined with newlines as the chat endpoint joins
 * content parts; prefix goes first.  NULL when out of memory. */
static char *join_text(const cJSON *c, const char *type, const char *key, const char *prefix)
{
    sb_t b;
    sb_init(&b);
    sb_adds(&b, prefix);
    if (cJSON_IsString(c)) {
        sb_adds(&b, c->valuestring);
    } else {
        int n = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, c)
        {
            if (!rq_is_str(rq_field(it, "type"), type))
                continue;
            if (n++)
                sb_adds(&b, "\n");
            sb_adds(&b, rq_field(it, key)->valuestring);
        }
    }
    size_t n;
    char *s = sb_take(&b, &n);
    return s || sb_failed(&b) ? s : strdup("");
}

/* {"role": role, "content": text} appended to msgs (text taken); false: no memory. */
static bool add_msg(cJSON *msgs, const char *role, char *text, cJSON **made)
{
    cJSON *m = text ? cJSON_CreateObject() : NULL;
    bool ok = oai_put(msgs, NULL, m) && oai_put(m, "role", cJSON_CreateString(role)) &&
              oai_put(m, "content", cJSON_CreateString(text));
    free(text);
    if (made)
        *made = ok ? m : NULL;
    return ok;
}

/* A user message's blocks: each tool_result a tool message, the text between them user
 * messages, in order. */
static bool user_msgs(const cJSON *c, cJSON *msgs)
{
    if (cJSON_IsString(c))
        return add_msg(msgs, "user", strdup(c->valuestring), NULL);
    sb_t text;
    sb_init(&text);
    bool have = false, ok = true;
    const cJSON *b;
    for (b = c->child;; b = b->next) {
        bool result = b && rq_is_str(rq_field(b, "type"), "tool_result");
        if ((!b || result) && have) {
            size_t n;
            char *t = sb_take(&text, &n);
            ok = ok && add_msg(msgs, "user", t ? t : strdup(""), NULL);
            sb_init(&text);
            have = false;
        }
        if (!b)
            break;
        if (result) {
            /* an error result says so: the chat has no field for it */
            const char *pre = cJSON_IsTrue(rq_field(b, "is_error")) ? "Error: " : "";
            const cJSON *rc = rq_field(b, "content");
            cJSON *m = NULL;
            ok = ok && add_msg(msgs, "tool", rc ? join_text(rc, "text", "text", pre)
                                                : strdup(pre), &m) &&
                 oai_put(m, "tool_call_id", oai_dup(rq_field(b, "tool_use_id")));
        } else if (rq_is_str(rq_field(b, "type"), "text")) {
            if (have)
                sb_adds(&text, "\n");
            sb_adds(&text, rq_field(b, "text")->valuestring);
            have = true;
        }
    }
    ok = ok && !sb_failed(&text);
    sb_free(&text);
    return ok;
}

/* An assistant message's blocks: the text, the thinking as reasoning_content, the tool_use
 * blocks as tool_calls (content null when it has only calls). */
static bool assistant_msg(const cJSON *c, cJSON *msgs)
{
    if (cJSON_IsString(c))
        return add_msg(msgs, "assistant", strdup(c->valuestring), NULL);
    cJSON *m = cJSON_CreateObject();
    if (!oai_put(msgs, NULL, m) || !oai_put(m, "role", cJSON_CreateString("assistant")))
        return false;
    bool has_text = false, has_think = false;
    const cJSON *b;
    cJSON_ArrayForEach(b, c)
    {
        has_text |= rq_is_str(rq_field(b, "type"), "text");
        has_think |= rq_is_str(rq_field(b, "type"), "thinking");
    }
    char *text = has_text ? join_text(c, "text", "text", "") : NULL;
    bool ok = has_text ? text && oai_put(m, "content", cJSON_CreateString(text))
                       : oai_put(m, "content", cJSON_CreateNull());
    free(text);
    if (ok && has_think) {
        char *t = join_text(c, "thinking", "thinking", "");
        ok = t && oai_put(m, "reasoning_content", cJSON_CreateString(t));
        free(t);
    }
    cJSON *calls = NULL;
    cJSON_ArrayForEach(b, c)
    {
        if (!ok || !rq_is_str(rq_field(b, "type"), "tool_use"))
            continue;
        if (!calls && !oai_put(m, "tool_calls", calls = cJSON_CreateArray()))
            return false;
        cJSON *call = cJSON_CreateObject(), *fn = cJSON_CreateObject();
        char *args = cJSON_PrintUnformatted(rq_field(b, "input"));
        ok = oai_put(calls, NULL, call) && oai_put(call, "id", oai_dup(rq_field(b, "id"))) &&
             oai_put(call, "type", cJSON_CreateString("function"));
        if (!ok || !oai_put(call, "function", fn)) {
            if (ok)
                fn = NULL;
            cJSON_Delete(fn);
            free(args);
            return false;
        }
        ok = args && oai_put(fn, "name", oai_dup(rq_field(b, "name"))) &&
             oai_put(fn, "arguments", cJSON_CreateString(args));
        free(args);
    }
    return ok;
}

static bool put_tools(const cJSON *root, cJSON *c)
{
    const cJSON *tools = rq_field(root, "tools"), *t;
    if (!tools || !tools->child)
        return true;
    cJSON *arr = cJSON_CreateArray();
    if (!oai_put(c, "tools", arr))
        return false;
    cJSON_ArrayForEach(t, tools)
    {
        cJSON *o = cJSON_CreateObject(), *fn = cJSON_CreateObject();
        if (!oai_put(arr, NULL, o) || !oai_put(o, "type", cJSON_CreateString("function"))) {
            cJSON_Delete(fn);
            return false;
        }
        if (!oai_put(o, "function", fn) || !oai_put(fn, "name", oai_dup(rq_field(t, "name"))) ||
            (rq_field(t, "description") &&
             !oai_put(fn, "description", oai_dup(rq_field(t, "description")))) ||
            !oai_put(fn, "parameters", oai_dup(rq_field(t, "input_schema"))))
            return false;
    }
    const cJSON *tc = rq_field(root, "tool_choice");
    if (!tc)
        return true;
    const char *ty = rq_field(tc, "type")->valuestring;
    cJSON *v;
    if (strcmp(ty, "tool") == 0) {
        cJSON *f = cJSON_CreateObject();
        v = cJSON_CreateObject();
        if (!oai_put(v, "type", cJSON_CreateString("function")) || !oai_put(v, "function", f) ||
            !oai_put(f, "name", oai_dup(rq_field(tc, "name")))) {
            cJSON_Delete(v);
            v = NULL;
        }
    } else {
        v = cJSON_CreateString(strcmp(ty, "any") == 0 ? "required" : ty);
    }
    if (!oai_put(c, "tool_choice", v))
        return false;
    return !cJSON_IsTrue(rq_field(tc, "disable_parallel_tool_use")) ||
           oai_put(c, "parallel_tool_calls", cJSON_CreateFalse());
}

/* thinking: enabled separates the think block (as thinking blocks), asks the template for
 * it and holds it to budget_tokens (the chat request's reasoning_budget_tokens); disabled
 * asks the template to leave it out.  Absent: the model's default. */
static bool put_thinking(const cJSON *root, cJSON *c)
{
    const cJSON *th = rq_field(root, "thinking");
    if (!th)
        return true;
    bool on = rq_is_str(rq_field(th, "type"), "enabled");
    cJSON *kw = cJSON_CreateObject();
    const cJSON *b = rq_field(th, "budget_tokens");
    return oai_put(c, "chat_template_kwargs", kw) &&
           oai_put(kw, "enable_thinking", cJSON_CreateBool(on)) &&
           (!on || oai_put(c, "reasoning_format", cJSON_CreateString("deepseek"))) &&
           (!on || !cJSON_IsNumber(b) ||
            oai_put(c, "reasoning_budget_tokens", cJSON_CreateNumber(b->valuedouble)));
}

int an_chat_body(const an_req_t *q, char **out, rq_err_t *e)
{
    const cJSON *root = q->root;
    cJSON *c = cJSON_CreateObject(), *msgs = cJSON_CreateArray();
    if (!c)
        cJSON_Delete(msgs);
    bool ok = c && oai_put(c, "messages", msgs);
    if (!ok) {
        cJSON_Delete(c);
        c = NULL;
    }
    const cJSON *v = rq_field(root, "system");
    if (ok && v) {
        char *t = join_text(v, "text", "text", "");
        ok = add_msg(msgs, "system", t, NULL);
    }
    const cJSON *m, *all = ok ? rq_field(root, "messages") : NULL;
    cJSON_ArrayForEach(m, all)
    {
        const cJSON *content = rq_field(m, "content");
        ok = rq_is_str(rq_field(m, "role"), "user") ? user_msgs(content, msgs)
                                               : assistant_msg(content, msgs);
        if (!ok)
            break;
    }
    static const char *const same[] = {"model", "max_tokens", "temperature", "top_p", "top_k",
                                       "stream"};
    for (size_t k = 0; ok && k < FD_ARRAY_LEN(same); k++) {
        v = rq_field(root, same[k]);
        ok = !v || oai_put(c, same[k], oai_dup(v));
    }
    for (size_t k = 0; ok && k < FD_ARRAY_LEN(fields); k++) {
        v = rq_field(root, fields[k].key);
        ok = !v || !fields[k].pass || oai_put(c, fields[k].key, oai_dup(v));
    }
    v = rq_field(root, "stop_sequences");
    if (ok && v && v->child)
        ok = oai_put(c, "stop", oai_dup(v));
    ok = ok && put_tools(root, c) && put_thinking(root, c);
    *out = ok ? cJSON_PrintUnformatted(c) : NULL;
    cJSON_Delete(c);
    return *out ? 0 : rq_oom(e);
}

void an_map_error(rq_err_t *e)
{
    static const char *const map[][2] = {
        {"'stop'", "'stop_sequences'"},
        {"stop[", "stop_sequences["},
        {"tool_choice.function.name", "tool_choice.name"},
        {"].function.parameters", "].input_schema"},
        {"].function", "]"},
        {"parallel_tool_calls", "tool_choice.disable_parallel_tool_use"},
        {"chat_template_kwargs.enable_thinking", "thinking"},
    };
    rq_err_rename(e, map, FD_ARRAY_LEN(map));
    if (strcmp(e->param, "stop") == 0)
        snprintf(e->param, sizeof e->param, "stop_sequences");
}

const char *an_error_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503:
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static cJSON *error_obj(int status, const char *message)
{
    cJSON *o = cJSON_CreateObject(), *err = cJSON_CreateObject();
    if (!oai_put(o, "type", cJSON_CreateString("error"))) {
        cJSON_Delete(err);
        cJSON_Delete(o);
        return NULL;
    }
    if (!oai_put(o, "error", err)) {
        cJSON_Delete(o);
        return NULL;
    }
    if (!oai_put(err, "type", cJSON_CreateString(an_error_type(status))) ||
        !oai_put(err, "message", cJSON_CreateString(message ? message : ""))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

char *an_error(int status, const char *message)
{
    cJSON *o = error_obj(status, message);
    return o ? oai_print(o, true) : NULL;
}

/* ---------------------------------------------------------------- answers */

const char *an_stop_reason(const char *finish, const char *stop_seq)
{
    if (finish && strcmp(finish, "tool_calls") == 0)
        return "tool_use";
    if (finish && strcmp(finish, "length") == 0)
        return "max_tokens";
    return stop_seq ? "stop_sequence" : "end_turn";
}

static int add_block(cJSON *arr, const char *type, const char *key, const char *text,
                     size_t len)
{
    cJSON *b = cJSON_CreateObject();
    bool ok = oai_put(arr, NULL, b) && oai_put(b, "type", cJSON_CreateString(type)) &&
              oai_put(b, key, oai_str_n(text, len));
    /* no signature can vouch for a local model's thinking: an empty one */
    if (ok && strcmp(type, "thinking") == 0)
        ok = oai_put(b, "signature", cJSON_CreateString(""));
    return ok ? 0 : -ENOMEM;
}

int an_add_text(cJSON *arr, const char *text, size_t len)
{
    return add_block(arr, "text", "text", text, len);
}

int an_add_thinking(cJSON *arr, const char *text, size_t len)
{
    return add_block(arr, "thinking", "thinking", text, len);
}

int an_add_tool_use(cJSON *arr, const char *id, const char *name, const char *arguments)
{
    cJSON *in = cJSON_Parse(arguments ? arguments : "");
    if (!cJSON_IsObject(in)) {
        cJSON_Delete(in);
        return -EINVAL;
    }
    cJSON *b = cJSON_CreateObject();
    if (!oai_put(arr, NULL, b)) {
        cJSON_Delete(in);
        return -ENOMEM;
    }
    bool ok = oai_put(b, "type", cJSON_CreateString("tool_use")) &&
              oai_put(b, "id", cJSON_CreateString(id)) &&
              oai_put(b, "name", cJSON_CreateString(name)) && oai_put(b, "input", in);
    return ok ? 0 : -ENOMEM;
}

static cJSON *usage_obj(const an_result_t *r)
{
    cJSON *u = cJSON_CreateObject();
    bool ok = oai_put(u, "input_tokens", cJSON_CreateNumber((double)r->input_tokens)) &&
              oai_put(u, "cache_creation_input_tokens", cJSON_CreateNumber(0)) &&
              oai_put(u, "cache_read_input_tokens",
                      cJSON_CreateNumber((double)r->cache_read_tokens)) &&
              oai_put(u, "output_tokens", cJSON_CreateNumber((double)r->output_tokens));
    if (!ok) {
        cJSON_Delete(u);
        return NULL;
    }
    return u;
}

static cJSON *nullable(const char *s)
{
    return s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

static cJSON *message_obj(const an_result_t *r, cJSON *content)
{
    cJSON *o = cJSON_CreateObject();
    if (!content)
        content = cJSON_CreateArray();
    bool ok = oai_put(o, "id", cJSON_CreateString(r->id)) &&
              oai_put(o, "type", cJSON_CreateString("message")) &&
              oai_put(o, "role", cJSON_CreateString("assistant")) &&
              oai_put(o, "model", cJSON_CreateString(r->model));
    if (ok) {
        ok = oai_put(o, "content", content); /* taken either way */
        content = NULL;
    }
    ok = ok && oai_put(o, "stop_reason", nullable(r->stop_reason)) &&
         oai_put(o, "stop_sequence", nullable(r->stop_sequence)) &&
         oai_put(o, "usage", usage_obj(r));
    cJSON_Delete(content);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

char *an_message(const an_result_t *r, cJSON *content)
{
    cJSON *o = message_obj(r, content);
    return o ? oai_print(o, true) : NULL;
}

char *an_count(long long n)
{
    char *s = malloc(48);
    if (s)
        snprintf(s, 48, "{\"input_tokens\":%lld}", n);
    return s;
}

/* ---------------------------------------------------------------- streaming */

void an_stream_init(an_stream_t *st, const char *id, const char *model, long long input_tokens)
{
    memset(st, 0, sizeof *st);
    st->res.id = id;
    st->res.model = model;
    st->res.input_tokens = input_tokens;
}

/* One event: ev (taken) as "event: T\ndata: J\n\n". */
static void emit(an_stream_t *st, sb_t *out, const char *type, cJSON *ev)
{
    bool ok = ev && (cJSON_GetObjectItemCaseSensitive(ev, "type") ||
                     cJSON_AddStringToObject(ev, "type", type));
    char *json = ok ? cJSON_PrintUnformatted(ev) : NULL;
    cJSON_Delete(ev);
    if (!json) {
        st->failed = true;
        return;
    }
    sb_printf(out, "event: %s\ndata: %s\n\n", type, json);
    free(json);
    if (sb_failed(out))
        st->failed = true;
}

/* {"type": type, "index": i} with its type first, as Anthropic writes them. */
static cJSON *indexed(const char *type, int index)
{
    cJSON *o = cJSON_CreateObject();
    if (!oai_put(o, "type", cJSON_CreateString(type)) ||
        !oai_put(o, "index", cJSON_CreateNumber(index))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

void an_stream_ping(sb_t *out)
{
    sb_adds(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

void an_stream_begin(an_stream_t *st, sb_t *out)
{
    if (st->begun)
        return;
    st->begun = true;
    an_result_t r = st->res;
    r.stop_reason = r.stop_sequence = NULL;
    r.output_tokens = 0;
    cJSON *ev = cJSON_CreateObject();
    if (!oai_put(ev, "type", cJSON_CreateString("message_start")) ||
        !oai_put(ev, "message", message_obj(&r, NULL))) {
        cJSON_Delete(ev);
        ev = NULL;
    }
    emit(st, out, "message_start", ev);
    an_stream_ping(out);
}

static void close_block(an_stream_t *st, sb_t *out)
{
    if (st->open == AN_NONE)
        return;
    emit(st, out, "content_block_stop", indexed("content_block_stop", st->next - 1));
    st->open = AN_NONE;
}

/* Opens a block of kind with its starting object cb (taken). */
static void open_block(an_stream_t *st, sb_t *out, int kind, cJSON *cb)
{
    close_block(st, out);
    cJSON *ev = indexed("content_block_start", st->next);
    if (!oai_put(ev, "content_block", cb)) {
        cJSON_Delete(ev);
        ev = NULL;
    }
    emit(st, out, "content_block_start", ev);
    st->next++;
    st->open = kind;
}

static cJSON *empty_block(const char *type, const char *key)
{
    cJSON *b = cJSON_CreateObject();
    bool ok = oai_put(b, "type", cJSON_CreateString(type)) &&
              oai_put(b, key, cJSON_CreateString(""));
    if (ok && strcmp(type, "thinking") == 0)
        ok = oai_put(b, "signature", cJSON_CreateString(""));
    if (!ok) {
        cJSON_Delete(b);
        return NULL;
    }
    return b;
}

static void delta(an_stream_t *st, sb_t *out, const char *dtype, const char *key,
                  cJSON *value)
{
    cJSON *ev = indexed("content_block_delta", st->next - 1), *d = cJSON_CreateObject();
    if (!oai_put(ev, "delta", d)) {
        cJSON_Delete(value);
        cJSON_Delete(ev);
        ev = NULL;
    } else if (!oai_put(d, "type", cJSON_CreateString(dtype)) || !oai_put(d, key, value)) {
        cJSON_Delete(ev);
        ev = NULL;
    }
    emit(st, out, "content_block_delta", ev);
}

static void stream_piece(an_stream_t *st, sb_t *out, int kind, const char *text, size_t len)
{
    if (!len || st->ended)
        return;
    const char *type = kind == AN_TEXT ? "text" : "thinking";
    if (st->open != kind)
        open_block(st, out, kind, empty_block(type, type));
    delta(st, out, kind == AN_TEXT ? "text_delta" : "thinking_delta", type, oai_str_n(text, len));
}

void an_stream_text(an_stream_t *st, sb_t *out, const char *text, size_t len)
{
    stream_piece(st, out, AN_TEXT, text, len);
}

void an_stream_thinking(an_stream_t *st, sb_t *out, const char *text, size_t len)
{
    stream_piece(st, out, AN_THINKING, text, len);
}

void an_stream_tool(an_stream_t *st, sb_t *out, const char *id, const char *name)
{
    if (st->ended)
        return;
    cJSON *b = cJSON_CreateObject();
    if (!oai_put(b, "type", cJSON_CreateString("tool_use")) ||
        !oai_put(b, "id", cJSON_CreateString(id)) ||
        !oai_put(b, "name", cJSON_CreateString(name)) ||
        !oai_put(b, "input", cJSON_CreateObject())) {
        cJSON_Delete(b);
        b = NULL;
    }
    open_block(st, out, AN_TOOL, b);
}

void an_stream_args(an_stream_t *st, sb_t *out, const char *partial)
{
    if (st->ended || st->open != AN_TOOL || !partial || !partial[0])
        return;
    delta(st, out, "input_json_delta", "partial_json", oai_str_n(partial, strlen(partial)));
}

void an_stream_end(an_stream_t *st, sb_t *out, const an_result_t *r)
{
    if (st->ended)
        return;
    an_stream_begin(st, out);
    close_block(st, out);
    st->ended = true;
    cJSON *ev = cJSON_CreateObject(), *d = cJSON_CreateObject();
    if (!oai_put(ev, "type", cJSON_CreateString("message_delta"))) {
        cJSON_Delete(d);
        cJSON_Delete(ev);
        ev = NULL;
    } else if (!oai_put(ev, "delta", d)) {
        cJSON_Delete(ev);
        ev = NULL;
    } else if (!oai_put(d, "stop_reason", nullable(r->stop_reason)) ||
               !oai_put(d, "stop_sequence", nullable(r->stop_sequence)) ||
               !oai_put(ev, "usage", usage_obj(r))) {
        cJSON_Delete(ev);
        ev = NULL;
    }
    emit(st, out, "message_delta", ev);
    cJSON *stop = cJSON_CreateObject();
    emit(st, out, "message_stop", stop);
}

void an_stream_error(an_stream_t *st, sb_t *out, int status, const char *message)
{
    if (st->ended)
        return;
    st->ended = true;
    emit(st, out, "error", error_obj(status, message));
}
