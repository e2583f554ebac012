/* toolcall.c: tool-call syntax per chat family.  The model's text is trusted for nothing: a
 * call must parse as JSON, name a function the request offered and carry an arguments
 * object, and nothing but whitespace may follow the calls; anything else is content. */
#include "config.h"

#include "server/toolcall.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "server/chat.h"

static const char QWEN_OPEN[] = "<tool_call>", QWEN_CLOSE[] = "</tool_call>";
static const char LLAMA_TAG[] = "<|python_tag|>", MISTRAL_TAG[] = "[TOOL_CALLS]";

static bool ws(char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static size_t skip_ws(const char *s, size_t i, size_t len)
{
    while (i < len && ws(s[i]))
        i++;
    return i;
}

static bool starts(const char *s, size_t i, size_t len, const char *lit)
{
    size_t k = strlen(lit);
    return len - i >= k && memcmp(s + i, lit, k) == 0;
}

/* s[i..len) is a proper prefix of lit (the marker may still be arriving). */
static bool partial(const char *s, size_t i, size_t len, const char *lit)
{
    size_t k = strlen(lit);
    return len - i < k && memcmp(s + i, lit, len - i) == 0;
}

/* Parses one JSON value at s[*i..len), moving *i past it; NULL if there is none. */
static cJSON *json_at(const char *s, size_t *i, size_t len)
{
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(s + *i, len - *i, &end, 0);
    if (v)
        *i = (size_t)(end - s);
    return v;
}

static uint64_t next_rand(uint64_t *st)
{
    /* xorshift64*: ids need to differ, not to be secret */
    uint64_t x = *st ? *st : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *st = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static char *make_id(int family, uint64_t *st)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    bool mistral = family == CHAT_MISTRAL;
    size_t n = mistral ? 9 : 24, pre = mistral ? 0 : 5;
    char *id = malloc(pre + n + 1);
    if (!id)
        return NULL;
    memcpy(id, "call_", pre);
    for (size_t k = 0; k < n; k++)
        id[pre + k] = al[next_rand(st) % (sizeof al - 1)];
    id[pre + n] = 0;
    return id;
}

/* Appends the call in object o (name + the arguments under key, or alt) to r. */
static int add_call(tc_result_t *r, const cJSON *o, const char *key, const char *alt,
                    char *const *names, int n_names, int family, uint64_t *st)
{
    if (!cJSON_IsObject(o))
        return -ENOENT;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    const cJSON *args = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!args && alt)
        args = cJSON_GetObjectItemCaseSensitive(o, alt);
    if (!cJSON_IsString(name) || !cJSON_IsObject(args))
        return -ENOENT;
    bool known = false;
    for (int k = 0; k < n_names && !known; k++)
        known = strcmp(names[k], name->valuestring) == 0;
    if (!known)
        return -ENOENT;
    tc_call_t *c = realloc(r->calls, (r->n_calls + 1) * sizeof *c);
    if (!c)
        return -ENOMEM;
    r->calls = c;
    c = &r->calls[r->n_calls];
    c->id = make_id(family, st);
    c->name = strdup(name->valuestring);
    c->arguments = cJSON_PrintUnformatted(args);
    r->n_calls++;
    return c->id && c->name && c->arguments ? 0 : -ENOMEM;
}

static int parse_llama(const char *s, size_t len, tc_result_t *r, char *const *names,
                       int n_names, uint64_t *st)
{
    size_t i = skip_ws(s, 0, len);
    if (starts(s, i, len, LLAMA_TAG))
        i = skip_ws(s, i + strlen(LLAMA_TAG), len);
    if (i >= len || s[i] != '{')
        return -ENOENT;
    cJSON *o = json_at(s, &i, len);
    if (!o)
        return -ENOENT;
    int rc = add_call(r, o, "parameters", "arguments", names, n_names, CHAT_LLAMA31, st);
    cJSON_Delete(o);
    if (rc)
        return rc;
    return skip_ws(s, i, len) == len ? 0 : -ENOENT;
}

static const char *find(const char *s, size_t len, const char *lit)
{
    size_t k = strlen(lit);
    for (size_t i = 0; i + k <= len; i++)
        if (s[i] == lit[0] && memcmp(s + i, lit, k) == 0)
            return s + i;
    return NULL;
}

static int parse_qwen(const char *s, size_t len, tc_result_t *r, char *const *names,
                      int n_names, uint64_t *st)
{
    const char *first = find(s, len, QWEN_OPEN);
    if (!first)
        return -ENOENT;
    size_t i = (size_t)(first - s), c = i;
    while (c > 0 && ws(s[c - 1]))
        c--;
    r->content_len = c;
    while (i < len) {
        if (!starts(s, i, len, QWEN_OPEN))
            return -ENOENT;
        i += strlen(QWEN_OPEN);
        cJSON *o = json_at(s, &i, len);
        if (!o)
            return -ENOENT;
        int rc = add_call(r, o, "arguments", NULL, names, n_names, CHAT_QWEN, st);
        cJSON_Delete(o);
        if (rc)
            return rc;
        i = skip_ws(s, i, len);
        if (i == len) /* the last block may end without its closing tag (stopped there) */
            break;
        if (!starts(s, i, len, QWEN_CLOSE))
            return -ENOENT;
        i = skip_ws(s, i + strlen(QWEN_CLOSE), len);
    }
    return 0;
}

static int parse_mistral(const char *s, size_t len, tc_result_t *r, char *const *names,
                         int n_names, uint64_t *st)
{
    size_t i = skip_ws(s, 0, len);
    /* [TOOL_CALLS] is a control token that the server's detokenizer leaves out, so the
     * array alone counts too */
    if (starts(s, i, len, MISTRAL_TAG))
        i = skip_ws(s, i + strlen(MISTRAL_TAG), len);
    if (i >= len || s[i] != '[')
        return -ENOENT;
    cJSON *a = json_at(s, &i, len);
    if (!cJSON_IsArray(a) || !a->child) {
        cJSON_Delete(a);
        return -ENOENT;
    }
    int rc = 0;
    for (const cJSON *o = a->child; o && !rc; o = o->next)
        rc = add_call(r, o, "arguments", NULL, names, n_names, CHAT_MISTRAL, st);
    cJSON_Delete(a);
    if (rc)
        return rc;
    return skip_ws(s, i, len) == len ? 0 : -ENOENT;
}

void tc_free(tc_result_t *r)
{
    if (!r)
        return;
    for (size_t k = 0; k < r->n_calls; k++) {
        free(r->calls[k].id);
        free(r->calls[k].name);
        free(r->calls[k].arguments);
    }
    free(r->calls);
    memset(r, 0, sizeof *r);
}

int tc_parse(int family, const char *text, size_t len, char *const *names, int n_names,
             bool parallel, uint64_t seed, tc_result_t *out)
{
    memset(out, 0, sizeof *out);
    uint64_t st = seed;
    int rc;
    switch (family) {
    case CHAT_LLAMA31: rc = parse_llama(text, len, out, names, n_names, &st); break;
    case CHAT_QWEN: rc = parse_qwen(text, len, out, names, n_names, &st); break;
    case CHAT_MISTRAL: rc = parse_mistral(text, len, out, names, n_names, &st); break;
    default: return -ENOTSUP;
    }
    if (rc) {
        tc_free(out);
        return rc;
    }
    while (!parallel && out->n_calls > 1) {
        tc_call_t *c = &out->calls[--out->n_calls];
        free(c->id);
        free(c->name);
        free(c->arguments);
    }
    return 0;
}

size_t tc_stream_safe(int family, const char *s, size_t len)
{
    if (family == CHAT_QWEN) {
        const char *open = find(s, len, QWEN_OPEN);
        size_t safe = open ? (size_t)(open - s) : len;
        /* hold a tail that could be the marker's beginning */
        for (size_t k = open ? 0 : FD_MIN(len, sizeof QWEN_OPEN - 2); k > 0; k--) {
            if (memcmp(s + len - k, QWEN_OPEN, k) == 0) {
                safe = len - k;
                break;
            }
        }
        /* and the whitespace before it, which tc_parse leaves out of the content when a
         * call follows: streamed and whole answers then carry the same text */
        while (safe > 0 && ws(s[safe - 1]))
            safe--;
        return safe;
    }
    /* Llama 3.1 and Mistral: a call is the whole output, so the first visible character
     * decides: until it comes nothing is sent, after a call's opening everything is held */
    size_t i = skip_ws(s, 0, len);
    if (i == len)
        return 0;
    if (family == CHAT_LLAMA31)
        return s[i] == '{' || starts(s, i, len, LLAMA_TAG) || partial(s, i, len, LLAMA_TAG)
                   ? 0 : len;
    if (family == CHAT_MISTRAL) {
        if (starts(s, i, len, MISTRAL_TAG) || partial(s, i, len, MISTRAL_TAG))
            return 0;
        if (s[i] == '[') {
            size_t j = skip_ws(s, i + 1, len);
            if (j == len || s[j] == '{')
                return 0;
        }
        return len;
    }
    return len;
}
