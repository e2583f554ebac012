/* request.c: OpenAI request bodies -> rq_t.  Every field is optional unless OpenAI requires
 * it; null counts as absent (clients send it for "not given"); unknown fields are ignored.
 * Every error names the field in `param` with the path a user would write ("stop[1]"). */
#include "server/request.h"

#include "engine/grammar.h"
#include "engine/sampler.h"
#include "server/regex.h"
#include "server/reasoning.h"
#include "server/schema.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RQ_MAX_LOGPROBS 20
#define RQ_MAX_ID 0x7fffffff

void rq_limits_default(rq_limits_t *l)
{
    l->max_n = 16;
    l->max_stop = 16;
    l->max_stop_len = 256;
    l->max_logit_bias = 1024;
    l->max_inputs = 2048;
}

int rq_fail(rq_err_t *e, int status, const char *type, const char *param, const char *fmt,
            ...)
{
    va_list ap;
    e->status = status;
    e->type = type;
    e->code = NULL;
    e->n_prompt = 0;    /* set by the context-length check alone */
    e->n_ctx = 0;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* A 400 invalid_request_error about param, with OpenAI's code (NULL: none). */
static int vbad(rq_err_t *e, const char *code, const char *param, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static int vbad(rq_err_t *e, const char *code, const char *param, const char *fmt, va_list ap)
{
    char msg[400];
    vsnprintf(msg, sizeof msg, fmt, ap);
    rq_fail(e, 400, "invalid_request_error", param, "%s", msg);
    e->code = code;
    return -EINVAL;
}

static int bad(rq_err_t *e, const char *param, const char *fmt, ...) FD_PRINTF(3, 4);
static int bad(rq_err_t *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vbad(e, NULL, param, fmt, ap);
    va_end(ap);
    return rc;
}

bool rq_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int n;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i <= (size_t)n)
            return false;
        for (int k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += (size_t)n + 1;
    }
    return true;
}

/* The field's value, NULL when absent or null. */
const cJSON *rq_field(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

const char *rq_type_name(const cJSON *v)
{
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    return "null";
}

bool rq_is_str(const cJSON *v, const char *s)
{
    return cJSON_IsString(v) && strcmp(v->valuestring, s) == 0;
}

int rq_oom(rq_err_t *e)
{
    rq_fail(e, 500, "server_error", NULL, "out of memory while reading the request");
    return -ENOMEM;
}

/* Replaces every from with to in s (cap bytes). */
static void replace_all(char *s, size_t cap, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to);
    char *p = s;
    while ((p = strstr(p, from))) {
        size_t rest = strlen(p + fl);
        if ((size_t)(p - s) + tl + rest + 1 > cap)
            return;
        memmove(p + tl, p + fl, rest + 1);
        memcpy(p, to, tl);
        p += tl;
    }
}

void rq_err_rename(rq_err_t *e, const char *const (*map)[2], size_t n)
{
    for (size_t k = 0; k < n; k++) {
        replace_all(e->param, sizeof e->param, map[k][0], map[k][1]);
        replace_all(e->message, sizeof e->message, map[k][0], map[k][1]);
    }
}

static int get_bool(const cJSON *o, const char *key, bool *out, rq_err_t *e)
{
    const cJSON *v = rq_field(o, key);
    if (!v)
        return 0;
    if (!cJSON_IsBool(v))
        return bad(e, key, "'%s' must be a boolean, not %s", key, rq_type_name(v));
    *out = cJSON_IsTrue(v);
    return 0;
}

static int get_num(const cJSON *o, const char *key, double lo, double hi, bool lo_open,
                   float *out, rq_err_t *e)
{
    const cJSON *v = rq_field(o, key);
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v))
        return bad(e, key, "'%s' must be a number, not %s", key, rq_type_name(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d > hi || d < lo || (lo_open && d == lo))
        return bad(e, key, "'%s' is %g; it must be in %s%g, %g]", key, d, lo_open ? "(" : "[",
                   lo, hi);
    *out = (float)d;
    return 0;
}

static bool is_int(const cJSON *v, double lo, double hi)
{
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) &&
           v->valuedouble == floor(v->valuedouble) &&
           v->valuedouble >= lo && v->valuedouble <= hi;
}

static int get_int(const cJSON *o, const char *key, long long lo, long long hi, bool *present,
                   long long *out, rq_err_t *e)
{
    const cJSON *v = rq_field(o, key);
    if (present)
        *present = v != NULL;
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
        v->valuedouble != floor(v->valuedouble))
        return bad(e, key, "'%s' must be an integer, not %s", key,
                   cJSON_IsNumber(v) ? "a fraction" : rq_type_name(v));
    /* (double)hi rounds LLONG_MAX up to 2^63, which would pass and not fit a long long */
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi ||
        v->valuedouble >= 9223372036854775808.0)
        return bad(e, key, "'%s' is %.0f; it must be in [%lld, %lld]", key, v->valuedouble, lo,
                   hi);
    *out = (long long)v->valuedouble;
    return 0;
}

/* llama-server's "lora": an array of {"id": integer >= 0, "scale": number}. */
static int parse_lora(const cJSON *root, rq_t *r, rq_err_t *e)
{
    const cJSON *l = rq_field(root, "lora"), *it;
    if (!l)
        return 0;
    if (!cJSON_IsArray(l))
        return bad(e, "lora", "'lora' must be an array of {\"id\", \"scale\"} objects, not %s",
                   rq_type_name(l));
    int n = cJSON_GetArraySize(l);
    if (n > RQ_MAX_LORA)
        return bad(e, "lora", "'lora' has %d entries; at most %d", n, RQ_MAX_LORA);
    r->has_lora = true;
    if (n == 0)
        return 0;
    if (!(r->lora = calloc((size_t)n, sizeof *r->lora)))
        return -ENOMEM;
    cJSON_ArrayForEach(it, l)
    {
        char p[32];
        snprintf(p, sizeof p, "lora[%d]", r->n_lora);
        if (!cJSON_IsObject(it))
            return bad(e, p, "'%s' must be an object with \"id\" and \"scale\", not %s", p,
                       rq_type_name(it));
        const cJSON *id = rq_field(it, "id"), *sc = rq_field(it, "scale");
        if (!id || !is_int(id, 0, 1e9))
            return bad(e, p, "'%s.id' must be an adapter id (an integer >= 0)", p);
        if (!sc || !cJSON_IsNumber(sc) || !isfinite(sc->valuedouble) ||
            fabs(sc->valuedouble) > 1e6)
            return bad(e, p, "'%s.scale' must be a finite number", p);
        r->lora[r->n_lora++] = (struct rq_lora){ (int)id->valuedouble, (float)sc->valuedouble };
    }
    return 0;
}

/* A copy of a JSON string checked to be UTF-8. */
static int dup_str(const cJSON *v, const char *param, char **out, size_t *len, rq_err_t *e)
{
    size_t n = strlen(v->valuestring);
    if (!rq_utf8_valid(v->valuestring, n))
        return bad(e, param, "'%s' is not valid UTF-8", param);
    char *s = malloc(n + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, v->valuestring, n + 1);
    *out = s;
    if (len)
        *len = n;
    return 0;
}

/* Token ids from a JSON array of integers (already known to be an array). */
static int parse_ids(const cJSON *arr, const char *param, bool allow_empty, int32_t **ids,
                     size_t *n, rq_err_t *e)
{
    int cnt = cJSON_GetArraySize(arr);
    if (cnt == 0 && !allow_empty)
        return bad(e, param, "'%s' is an empty list of token ids", param);
    int32_t *out = malloc(sizeof *out * (size_t)(cnt ? cnt : 1));
    if (!out)
        return -ENOMEM;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (!is_int(it, 0, RQ_MAX_ID)) {
            char p[128];
            snprintf(p, sizeof p, "%.80s[%d]", param, i);
            free(out);
            return bad(e, p, "'%s' must be a token id (an integer >= 0), not %s", p,
                       cJSON_IsNumber(it) ? "this number" : rq_type_name(it));
        }
        out[i++] = (int32_t)it->valuedouble;
    }
    *ids = out;
    *n = (size_t)cnt;
    return 0;
}

static int parse_prompt(const cJSON *root, const char *key, rq_t *r, rq_err_t *e)
{
    const cJSON *p = rq_field(root, key);
    if (!p)
        return bad(e, key, "'%s' is required", key);
    if (cJSON_IsString(p)) {
        r->prompts = calloc(1, sizeof *r->prompts);
        if (!r->prompts)
            return -ENOMEM;
        r->n_prompts = 1;
        return dup_str(p, key, &r->prompts[0].text, &r->prompts[0].text_len, e);
    }
    if (!cJSON_IsArray(p))
        return bad(e, key, "'%s' must be a string, an array of strings, an array of token ids "
                   "or an array of arrays of token ids, not %s", key, rq_type_name(p));
    int cnt = cJSON_GetArraySize(p);
    if (cnt == 0)
        return bad(e, key, "'%s' is an empty array", key);
    const cJSON *first = p->child;
    if (cJSON_IsNumber(first)) {
        r->prompts = calloc(1, sizeof *r->prompts);
        if (!r->prompts)
            return -ENOMEM;
        r->n_prompts = 1;
        return parse_ids(p, key, false, &r->prompts[0].ids, &r->prompts[0].n_ids, e);
    }
    r->prompts = calloc((size_t)cnt, sizeof *r->prompts);
    if (!r->prompts)
        return -ENOMEM;
    r->n_prompts = (size_t)cnt;
    bool strings = cJSON_IsString(first);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, p)
    {
        char pp[128];
        snprintf(pp, sizeof pp, "%.80s[%d]", key, i);
        int rc;
        if (strings && cJSON_IsString(it))
            rc = dup_str(it, pp, &r->prompts[i].text, &r->prompts[i].text_len, e);
        else if (!strings && cJSON_IsArray(it))
            rc = parse_ids(it, pp, false, &r->prompts[i].ids, &r->prompts[i].n_ids, e);
        else
            rc = bad(e, pp, "'%s' must be %s like the first element, not %s", pp,
                     strings ? "a string" : "an array of token ids", rq_type_name(it));
        if (rc)
            return rc;
        i++;
    }
    return 0;
}

static int parse_stop(const cJSON *root, const rq_limits_t *lim, rq_t *r, rq_err_t *e)
{
    const cJSON *s = rq_field(root, "stop");
    if (!s)
        return 0;
    int cnt;
    if (cJSON_IsString(s))
        cnt = 1;
    else if (cJSON_IsArray(s))
        cnt = cJSON_GetArraySize(s);
    else
        return bad(e, "stop", "'stop' must be a string or an array of strings, not %s",
                   rq_type_name(s));
    if (cnt > lim->max_stop)
        return bad(e, "stop", "'stop' has %d strings; at most %d are allowed", cnt,
                   lim->max_stop);
    if (cnt == 0)
        return 0;
    r->stop = calloc((size_t)cnt, sizeof *r->stop);
    if (!r->stop)
        return -ENOMEM;
    const cJSON *it = cJSON_IsString(s) ? s : s->child;
    for (int i = 0; i < cnt; i++, it = it->next) {
        char pp[128];
        if (cJSON_IsString(s))
            snprintf(pp, sizeof pp, "stop");
        else
            snprintf(pp, sizeof pp, "stop[%d]", i);
        if (!cJSON_IsString(it))
            return bad(e, pp, "'%s' must be a string, not %s", pp, rq_type_name(it));
        size_t n = strlen(it->valuestring);
        if (n == 0)
            return bad(e, pp, "'%s' is an empty string", pp);
        if (n > (size_t)lim->max_stop_len)
            return bad(e, pp, "'%s' is %zu bytes long; the limit is %d", pp, n,
                       lim->max_stop_len);
        int rc = dup_str(it, pp, &r->stop[i], NULL, e);
        if (rc)
            return rc;
        r->n_stop = i + 1;
    }
    return 0;
}

static int unsupported_param(rq_err_t *e, const char *param, const char *fmt, ...)
    FD_PRINTF(3, 4);

/* Room for cnt logit_bias entries in r->bias (none, left NULL, for 0), within the limit. */
static int alloc_bias(int cnt, const rq_limits_t *lim, rq_t *r, rq_err_t *e)
{
    if (cnt > lim->max_logit_bias)
        return bad(e, "logit_bias", "'logit_bias' has %d entries; at most %d are allowed", cnt,
                   lim->max_logit_bias);
    if (cnt && !(r->bias = calloc((size_t)cnt, sizeof *r->bias)))
        return -ENOMEM;
    return 0;
}

/* llama-server's form of logit_bias: [[token id, bias], ...], false for a bias bans the
 * token.  Its string form (["text", bias]: every token of the text) is refused by name. */
static int parse_bias_pairs(const cJSON *b, const rq_limits_t *lim, rq_t *r, rq_err_t *e)
{
    int rc = alloc_bias(cJSON_GetArraySize(b), lim, r, e);
    if (rc || !r->bias)
        return rc;
    const cJSON *it;
    cJSON_ArrayForEach(it, b)
    {
        char pp[64];
        snprintf(pp, sizeof pp, "logit_bias[%d]", r->n_bias);
        const cJSON *id = cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 ? it->child : NULL;
        const cJSON *v = id ? id->next : NULL;
        if (id && cJSON_IsString(id))
            return unsupported_param(e, pp, "'%s': a text key is not supported; give token "
                                     "ids", pp);
        if (!id || !is_int(id, 0, RQ_MAX_ID) ||
            !(cJSON_IsFalse(v) || (cJSON_IsNumber(v) && isfinite(v->valuedouble))))
            return bad(e, pp, "'%s' must be a pair [token id, bias] (a number, or false to "
                       "ban the token)", pp);
        if (cJSON_IsNumber(v) && (v->valuedouble < -100 || v->valuedouble > 100))
            return bad(e, pp, "'%s' has the bias %g; it must be in [-100, 100]", pp,
                       v->valuedouble);
        r->bias[r->n_bias].token = (int32_t)id->valuedouble;
        r->bias[r->n_bias].bias = cJSON_IsFalse(v) ? -INFINITY : (float)v->valuedouble;
        r->n_bias++;
    }
    r->sampling.logit_bias = r->bias;
    r->sampling.n_logit_bias = r->n_bias;
    return 0;
}

static int parse_logit_bias(const cJSON *root, int kind, const rq_limits_t *lim, rq_t *r,
                            rq_err_t *e)
{
    const cJSON *b = rq_field(root, "logit_bias");
    if (!b)
        return 0;
    if (cJSON_IsArray(b) && (kind == RQ_NATIVE || kind == RQ_INFILL))
        return parse_bias_pairs(b, lim, r, e);
    if (!cJSON_IsObject(b))
        return bad(e, "logit_bias", "'logit_bias' must be an object mapping token ids to "
                   "biases, not %s", rq_type_name(b));
    int rc = alloc_bias(cJSON_GetArraySize(b), lim, r, e);
    if (rc || !r->bias)
        return rc;
    const cJSON *it;
    cJSON_ArrayForEach(it, b)
    {
        char pp[128];
        snprintf(pp, sizeof pp, "logit_bias.%.60s", it->string);
        char *end;
        errno = 0;
        long id = strtol(it->string, &end, 10);
        if (!it->string[0] || *end || errno || id < 0 || id > RQ_MAX_ID)
            return bad(e, pp, "'logit_bias' keys must be token ids (integers >= 0), not "
                       "\"%.60s\"", it->string);
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
            return bad(e, pp, "'%s' must be a number, not %s", pp, rq_type_name(it));
        if (it->valuedouble < -100 || it->valuedouble > 100)
            return bad(e, pp, "'%s' is %g; it must be in [-100, 100]", pp, it->valuedouble);
        r->bias[r->n_bias].token = (int32_t)id;
        r->bias[r->n_bias].bias = (float)it->valuedouble;
        r->n_bias++;
    }
    r->sampling.logit_bias = r->bias;
    r->sampling.n_logit_bias = r->n_bias;
    return 0;
}

static const char *const chat_roles[] = {"system", "developer", "user", "assistant", "tool"};
enum { ROLE_ASSISTANT = 3, ROLE_TOOL = 4 };

bool rq_fn_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* A required string member of o: a UTF-8 copy in *out, or a 400 naming pp.key. */
static int member_str(const cJSON *o, const char *pp, const char *key, bool nonempty,
                      char **out, rq_err_t *e)
{
    char kp[128];
    snprintf(kp, sizeof kp, "%.100s.%s", pp, key);
    const cJSON *v = rq_field(o, key);
    if (!v)
        return bad(e, kp, "'%s' is required", kp);
    if (!cJSON_IsString(v))
        return bad(e, kp, "'%s' must be a string, not %s", kp, rq_type_name(v));
    if (nonempty && !v->valuestring[0])
        return bad(e, kp, "'%s' is an empty string", kp);
    return dup_str(v, kp, out, NULL, e);
}

/* An assistant message's tool_calls: [{"id", "type": "function", "function": {"name",
 * "arguments": JSON text of an object}}]. */
static int parse_tool_calls(const cJSON *tc, const char *pp, rq_msg_t *msg, rq_err_t *e)
{
    char tp[128];
    snprintf(tp, sizeof tp, "%.80s.tool_calls", pp);
    if (!cJSON_IsArray(tc))
        return bad(e, tp, "'%s' must be an array, not %s", tp, rq_type_name(tc));
    int cnt = cJSON_GetArraySize(tc);
    if (cnt == 0)
        return 0;
    msg->calls = calloc((size_t)cnt, sizeof *msg->calls);
    if (!msg->calls)
        return -ENOMEM;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, tc)
    {
        char cp[128], fp[140];
        snprintf(cp, sizeof cp, "%.100s[%d]", tp, i);
        snprintf(fp, sizeof fp, "%.100s.function", cp);
        if (!cJSON_IsObject(it))
            return bad(e, cp, "'%s' must be an object, not %s", cp, rq_type_name(it));
        rq_call_t *c = &msg->calls[i];
        msg->n_calls = (size_t)i + 1;
        const cJSON *type = rq_field(it, "type"), *fn = rq_field(it, "function");
        if (type && (!cJSON_IsString(type) || strcmp(type->valuestring, "function") != 0))
            return bad(e, cp, "'%s.type' must be \"function\"", cp);
        if (!fn)
            return bad(e, fp, "'%s' is required", fp);
        if (!cJSON_IsObject(fn))
            return bad(e, fp, "'%s' must be an object, not %s", fp, rq_type_name(fn));
        int rc;
        if ((rc = member_str(it, cp, "id", true, &c->id, e)) ||
            (rc = member_str(fn, fp, "name", true, &c->name, e)) ||
            (rc = member_str(fn, fp, "arguments", false, &c->arguments, e)))
            return rc;
        cJSON *args = cJSON_Parse(c->arguments);
        bool obj = cJSON_IsObject(args);
        cJSON_Delete(args);
        if (!obj)
            return bad(e, fp, "'%s.arguments' must be the JSON text of an object", fp);
        i++;
    }
    return 0;
}

static int parse_content(const cJSON *c, const char *pp, char **out, rq_err_t *e)
{
    if (cJSON_IsString(c))
        return dup_str(c, pp, out, NULL, e);
    if (!cJSON_IsArray(c))
        return bad(e, pp, "'%s' must be a string or an array of text parts, not %s", pp,
                   rq_type_name(c));
    /* Text parts are joined with newlines, as vLLM does. */
    size_t total = 1;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, c)
    {
        char ip[128];
        snprintf(ip, sizeof ip, "%.80s[%d]", pp, i);
        const cJSON *t = cJSON_IsObject(it) ? rq_field(it, "type") : NULL;
        const cJSON *x = cJSON_IsObject(it) ? rq_field(it, "text") : NULL;
        if (!cJSON_IsObject(it))
            return bad(e, ip, "'%s' must be an object {\"type\": \"text\", \"text\": ...}, "
                       "not %s", ip, rq_type_name(it));
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") != 0) {
            char tp[128];
            snprintf(tp, sizeof tp, "%.80s.type", ip);
            return bad(e, tp, "'%s' must be \"text\": only text content parts are supported",
                       tp);
        }
        if (!cJSON_IsString(x)) {
            char tp[128];
            snprintf(tp, sizeof tp, "%.80s.text", ip);
            return bad(e, tp, "'%s' must be a string", tp);
        }
        if (!rq_utf8_valid(x->valuestring, strlen(x->valuestring))) {
            char tp[128];
            snprintf(tp, sizeof tp, "%.80s.text", ip);
            return bad(e, tp, "'%s' is not valid UTF-8", tp);
        }
        total += strlen(x->valuestring) + 1;
        i++;
    }
    char *s = malloc(total);
    if (!s)
        return -ENOMEM;
    size_t off = 0;
    cJSON_ArrayForEach(it, c)
    {
        size_t n = strlen(rq_field(it, "text")->valuestring);
        if (off)
            s[off++] = '\n';
        memcpy(s + off, rq_field(it, "text")->valuestring, n);
        off += n;
    }
    s[off] = 0;
    *out = s;
    return 0;
}

/* A reasoning effort (gpt-oss's system message level): low, medium or high; the other
 * families' templates do not use it, and null counts as absent. */
static int parse_effort(const cJSON *v, const char *param, rq_t *r, rq_err_t *e)
{
    static const char *const levels[] = {"low", "medium", "high"};
    if (!v)
        return 0;
    for (size_t i = 0; cJSON_IsString(v) && i < FD_ARRAY_LEN(levels); i++)
        if (strcmp(v->valuestring, levels[i]) == 0) {
            r->reasoning_effort = levels[i];
            return 0;
        }
    if (!cJSON_IsString(v))
        return bad(e, param, "'%s' must be a string (low, medium or high), not %s", param,
                   rq_type_name(v));
    return bad(e, param, "'%s' is \"%.40s\"; it must be low, medium or high", param,
               v->valuestring);
}

/* chat_template_kwargs (an object: enable_thinking must be a boolean, reasoning_effort as
 * parse_effort reads it, other keys are
 * ignored as vLLM's templates ignore variables they do not use) and reasoning_format
 * (llama-server's per-request override: none, deepseek or auto). */
static int parse_reasoning(const cJSON *root, rq_t *r, rq_err_t *e)
{
    const cJSON *kw = rq_field(root, "chat_template_kwargs");
    if (kw) {
        if (!cJSON_IsObject(kw))
            return bad(e, "chat_template_kwargs", "'chat_template_kwargs' must be an object, "
                       "not %s", rq_type_name(kw));
        const cJSON *th = rq_field(kw, "enable_thinking");
        if (th && !cJSON_IsBool(th))
            return bad(e, "chat_template_kwargs.enable_thinking", "'chat_template_kwargs."
                       "enable_thinking' must be a boolean, not %s", rq_type_name(th));
        r->no_thinking = th && cJSON_IsFalse(th);
        free(r->template_kwargs);
        r->template_kwargs = cJSON_PrintUnformatted(kw);
        if (!r->template_kwargs)
            return rq_fail(e, 500, "server_error", NULL, "out of memory");
        int rc = parse_effort(rq_field(kw, "reasoning_effort"),
                              "chat_template_kwargs.reasoning_effort", r, e);
        if (rc)
            return rc;
    }
    int rc = parse_effort(rq_field(root, "reasoning_effort"), "reasoning_effort", r, e);
    if (rc)
        return rc;
    const cJSON *rf = rq_field(root, "reasoning_format");
    if (rf) {
        if (!cJSON_IsString(rf))
            return bad(e, "reasoning_format", "'reasoning_format' must be a string (none, "
                       "deepseek or auto), not %s", rq_type_name(rf));
        int f = rsn_format_from_name(rf->valuestring);
        if (f < 0)
            return bad(e, "reasoning_format", "'reasoning_format' is \"%.40s\"; it must be "
                       "none, deepseek or auto", rf->valuestring);
        r->reasoning_format = f;
    }
    /* llama-server's per-request reasoning budget, under either of the names its clients
     * send (the first wins) */
    static const char *const budget_keys[] = {"reasoning_budget_tokens",
                                              "thinking_budget_tokens"};
    for (size_t i = 0; i < FD_ARRAY_LEN(budget_keys); i++) {
        bool present = false;
        long long b = 0;
        const cJSON *v = rq_field(root, budget_keys[i]);
        if (v && cJSON_IsNull(v))
            continue;
        if ((rc = get_int(root, budget_keys[i], -1, 1 << 30, &present, &b, e)))
            return rc;
        if (present) {
            r->reasoning_budget = (int)b;
            break;
        }
    }
    const cJSON *msg = rq_field(root, "reasoning_budget_message");
    if (msg && !cJSON_IsNull(msg)) {
        if (!cJSON_IsString(msg))
            return bad(e, "reasoning_budget_message", "'reasoning_budget_message' must be a "
                       "string, not %s", rq_type_name(msg));
        if (!(r->reasoning_budget_message = strdup(msg->valuestring)))
            return -ENOMEM;
    }
    return 0;
}

static int parse_messages(const cJSON *root, rq_t *r, rq_err_t *e)
{
    const cJSON *m = rq_field(root, "messages");
    if (!m)
        return bad(e, "messages", "'messages' is required");
    if (!cJSON_IsArray(m))
        return bad(e, "messages", "'messages' must be an array of messages, not %s",
                   rq_type_name(m));
    int cnt = cJSON_GetArraySize(m);
    if (cnt == 0)
        return bad(e, "messages", "'messages' is an empty array");
    r->msgs = calloc((size_t)cnt, sizeof *r->msgs);
    if (!r->msgs)
        return -ENOMEM;
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, m)
    {
        char pp[128];
        snprintf(pp, sizeof pp, "messages[%d]", i);
        if (!cJSON_IsObject(it))
            return bad(e, pp, "'%s' must be an object with 'role' and 'content', not %s", pp,
                       rq_type_name(it));
        r->n_msgs = (size_t)i + 1;
        const cJSON *role = rq_field(it, "role");
        char rp[128];
        snprintf(rp, sizeof rp, "%.80s.role", pp);
        if (!role)
            return bad(e, rp, "'%s' is required", rp);
        if (!cJSON_IsString(role))
            return bad(e, rp, "'%s' must be a string, not %s", rp, rq_type_name(role));
        size_t k;
        for (k = 0; k < FD_ARRAY_LEN(chat_roles); k++)
            if (strcmp(role->valuestring, chat_roles[k]) == 0)
                break;
        if (k == FD_ARRAY_LEN(chat_roles))
            return bad(e, rp, "'%s' is \"%.40s\"; it must be system, developer, user, "
                       "assistant or tool", rp, role->valuestring);
        r->msgs[i].role = strdup(chat_roles[k]);
        if (!r->msgs[i].role)
            return -ENOMEM;
        int rc;
        const cJSON *tc = rq_field(it, "tool_calls");
        if (tc && k != ROLE_ASSISTANT) {
            snprintf(rp, sizeof rp, "%.80s.tool_calls", pp);
            return bad(e, rp, "'%s' is only for assistant messages", rp);
        }
        if (tc && (rc = parse_tool_calls(tc, pp, &r->msgs[i], e)))
            return rc;
        if (k == ROLE_TOOL && (rc = member_str(it, pp, "tool_call_id", true,
                                               &r->msgs[i].tool_call_id, e)))
            return rc;
        /* vLLM's and llama-server's field for an assistant turn's reasoning (the others'
         * is ignored, as those servers do) */
        const cJSON *rs = rq_field(it, "reasoning_content");
        if (rs && k == ROLE_ASSISTANT) {
            snprintf(rp, sizeof rp, "%.80s.reasoning_content", pp);
            if (!cJSON_IsString(rs))
                return bad(e, rp, "'%s' must be a string or null, not %s", rp, rq_type_name(rs));
            if ((rc = dup_str(rs, rp, &r->msgs[i].reasoning, NULL, e)))
                return rc;
        }
        const cJSON *c = rq_field(it, "content");
        snprintf(rp, sizeof rp, "%.80s.content", pp);
        if (!c) {
            if (k != ROLE_ASSISTANT)
                return bad(e, rp, "'%s' is required for a %s message", rp, chat_roles[k]);
            /* null content: a message that only calls tools keeps it null (Qwen's template
             * tells it from ""); a plain one is empty text */
            if (!r->msgs[i].n_calls) {
                r->msgs[i].content = strdup("");
                rc = r->msgs[i].content ? 0 : -ENOMEM;
            } else {
                rc = 0;
            }
        } else {
            rc = parse_content(c, rp, &r->msgs[i].content, e);
        }
        if (rc)
            return rc;
        i++;
    }
    return 0;
}

/* Fields fusiond does not implement and whose value would change what the client gets.
 * Each is accepted only at a value that asks for nothing (null always; "neutral" below),
 * else a 400 naming it: a plain answer would otherwise pass for the one asked for.  Fields
 * that change nothing in the text (user, metadata, store, service_tier, parallel_tool_calls
 * with no tools, prediction) are left to the rule that unknown fields are ignored. */
enum neutral {
    NEU_NULL,  /* only null (absent) */
    NEU_EMPTY, /* null, "", {} or [] */
    NEU_FALSE, /* null or false */
    NEU_NUM,   /* null or the number `num` (a sampler's "off") */
};

#define K_CMPL (1u << RQ_COMPLETION)
#define K_CHAT (1u << RQ_CHAT)
#define K_INF (1u << RQ_INFILL)
#define K_NAT (1u << RQ_NATIVE)

static const struct unsupported {
    const char *key;
    unsigned kinds;
    int neutral;
    double num;         /* NEU_NUM's value */
    const char *what;   /* what the field asks for */
} unsupported[] = {
    {"echo", K_CHAT, NEU_FALSE, 0, "echoing the last message (vLLM's chat echo)"},
    {"audio", K_CHAT, NEU_NULL, 0, "audio output"},
    {"web_search_options", K_CHAT, NEU_NULL, 0, "web search"},
    {"use_beam_search", K_CMPL | K_CHAT | K_INF | K_NAT, NEU_FALSE, 0, "beam search"},
    {"min_tokens", K_CMPL | K_CHAT | K_INF | K_NAT, NEU_NUM, 0, "a minimum number of generated tokens"},
};

static bool is_neutral(const cJSON *v, int neutral, double num)
{
    switch (neutral) {
    case NEU_EMPTY:
        return (cJSON_IsString(v) && !v->valuestring[0]) ||
               ((cJSON_IsObject(v) || cJSON_IsArray(v)) && !v->child);
    case NEU_FALSE:
        return cJSON_IsFalse(v);
    case NEU_NUM:
        return cJSON_IsNumber(v) && v->valuedouble == num;
    default:
        return false;
    }
}

/* A 400 with OpenAI's code for a parameter this server does not support. */
static int unsupported_param(rq_err_t *e, const char *param, const char *fmt, ...)
    FD_PRINTF(3, 4);
static int unsupported_param(rq_err_t *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vbad(e, "unsupported_parameter", param, fmt, ap);
    va_end(ap);
    return rc;
}

static int check_unsupported(const cJSON *root, int kind, const rq_t *r, rq_err_t *e)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(unsupported); i++) {
        const struct unsupported *u = &unsupported[i];
        const cJSON *v = rq_field(root, u->key);
        if (!(u->kinds & (1u << kind)) || !v || is_neutral(v, u->neutral, u->num))
            continue;
        return unsupported_param(e, u->key, "'%s' (%s) is not supported by fusiond; leave it "
                                 "out", u->key, u->what);
    }
    if (kind == RQ_COMPLETION) {
        /* best_of == n returns every choice generated, which is what n alone does. */
        long long b = 0;
        bool have = false;
        int rc = get_int(root, "best_of", 1, 0x7fffffff, &have, &b, e);
        if (rc)
            return rc;
        if (have && b != 1 && b != r->n)
            return b < r->n ? bad(e, "best_of", "'best_of' (%lld) must be at least 'n' (%d)",
                                  b, r->n)
                            : unsupported_param(e, "best_of", "'best_of' (%lld) above 'n' "
                                                "(%d) is not supported: fusiond returns every "
                                                "choice it generates (ask for n = %lld "
                                                "instead)", b, r->n, b);
    } else if (kind == RQ_CHAT) {
        const cJSON *m = rq_field(root, "modalities");
        if (m) {
            bool text_only = cJSON_IsArray(m);
            const cJSON *it;
            cJSON_ArrayForEach(it, m)
            {
                text_only &= cJSON_IsString(it) && strcmp(it->valuestring, "text") == 0;
            }
            if (!text_only)
                return unsupported_param(e, "modalities", "'modalities' other than "
                                         "[\"text\"] is not supported: fusiond answers with "
                                         "text only");
        }
    }
    return 0;
}

/* One llama-server prompt that is an array (pp names it): token ids alone, or ids and
 * strings mixed ([12, "text", 34]: segments, tokenized in order by the server). */
static int parse_mixed(const cJSON *arr, const char *pp, rq_prompt_t *out, rq_err_t *e)
{
    int cnt = cJSON_GetArraySize(arr);
    if (cnt == 0)
        return bad(e, pp, "'%s' is an empty array", pp);
    bool text = false;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        text |= cJSON_IsString(it);
    }
    if (!text)
        return parse_ids(arr, pp, false, &out->ids, &out->n_ids, e);
    /* a run of ids is one segment, each string another */
    if (!(out->segs = calloc((size_t)cnt, sizeof *out->segs)))
        return -ENOMEM;
    int i = 0;
    cJSON_ArrayForEach(it, arr)
    {
        char ip[160];
        snprintf(ip, sizeof ip, "%.100s[%d]", pp, i++);
        rq_seg_t *sg = out->n_segs ? &out->segs[out->n_segs - 1] : NULL;
        if (cJSON_IsString(it)) {
            sg = &out->segs[out->n_segs++];
            int rc = dup_str(it, ip, &sg->text, &sg->text_len, e);
            if (rc)
                return rc;
            continue;
        }
        if (!is_int(it, 0, RQ_MAX_ID))
            return bad(e, ip, "'%s' must be a token id (an integer >= 0) or a string, not %s",
                       ip, cJSON_IsNumber(it) ? "this number" : rq_type_name(it));
        if (!sg || sg->text) {
            sg = &out->segs[out->n_segs++];
            if (!(sg->ids = malloc((size_t)cnt * sizeof *sg->ids)))
                return -ENOMEM;
        }
        sg->ids[sg->n_ids++] = (int32_t)it->valuedouble;
    }
    return 0;
}

/* llama-server's /completion prompt: a string, token ids, ids and strings mixed, an object
 * {"prompt_string": ...} (its multimodal form, text only here), or an array of those
 * (several prompts, answered as an array).  An array with a number at its top level is one
 * prompt, as llama-server reads it. */
static int parse_native_one(const cJSON *v, const char *pp, rq_prompt_t *out, rq_err_t *e)
{
    if (cJSON_IsObject(v)) {
        const cJSON *md = rq_field(v, "multimodal_data");
        if (md && !is_neutral(md, NEU_EMPTY, 0))
            return unsupported_param(e, pp, "'%s': multimodal_data is not supported: fusiond "
                                     "serves text models", pp);
        v = rq_field(v, "prompt_string");
        if (!v || !cJSON_IsString(v))
            return bad(e, pp, "'%s' must hold a \"prompt_string\" string", pp);
    }
    if (cJSON_IsString(v))
        return dup_str(v, pp, &out->text, &out->text_len, e);
    if (cJSON_IsArray(v))
        return parse_mixed(v, pp, out, e);
    return bad(e, pp, "'%s' must be a string, an array of token ids and strings, or an "
               "object with \"prompt_string\", not %s", pp, rq_type_name(v));
}

static int parse_native_prompt(const cJSON *root, rq_t *r, rq_err_t *e)
{
    const cJSON *p = rq_field(root, "prompt"), *it;
    if (!p)
        return bad(e, "prompt", "\"prompt\" is required");
    bool several = cJSON_IsArray(p);
    for (it = several ? p->child : NULL; it; it = it->next)
        several &= !cJSON_IsNumber(it);
    if (several && cJSON_GetArraySize(p) == 0)
        return bad(e, "prompt", "'prompt' is an empty array");
    int cnt = several ? cJSON_GetArraySize(p) : 1;
    if (!(r->prompts = calloc((size_t)cnt, sizeof *r->prompts)))
        return -ENOMEM;
    if (!several) {
        r->n_prompts = 1;
        return parse_native_one(p, "prompt", &r->prompts[0], e);
    }
    cJSON_ArrayForEach(it, p)
    {
        char pp[48];
        snprintf(pp, sizeof pp, "prompt[%zu]", r->n_prompts);
        int rc = parse_native_one(it, pp, &r->prompts[r->n_prompts++], e);
        if (rc)
            return rc;
    }
    return 0;
}

/* The constraint of a schema (absent: any JSON value): param names the field it is in. */
static int compile_schema(const cJSON *schema, const char *param, rq_t *r, rq_err_t *e)
{
    int rc;
    if (!schema) {
        rc = gr_spec_json(&r->grammar, false);
    } else {
        if (!cJSON_IsObject(schema) && !cJSON_IsBool(schema))
            return bad(e, param, "'%s' must be a JSON Schema object, not %s", param,
                       rq_type_name(schema));
        char why[256], where[256];
        rc = sch_compile(schema, &r->grammar, why, sizeof why, where, sizeof where);
        if (rc == FD_EUNSUP || rc == -EINVAL) {
            bad(e, param, "'%s'%s%s: %s", param, where[0] ? " at " : "", where, why);
            if (rc == FD_EUNSUP)
                e->code = "unsupported_parameter";
            return -EINVAL;
        }
    }
    if (rc < 0)
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    r->sampling.grammar = r->grammar;
    return 0;
}

/* tools, tool_choice, parallel_tool_calls (chat).  Whether the model's chat format has a
 * tool syntax is the server's check: it knows the model. */
static int parse_tools(const cJSON *root, rq_t *r, rq_err_t *e)
{
    const cJSON *t = rq_field(root, "tools"), *tc = rq_field(root, "tool_choice");
    int rc;
    r->parallel_tool_calls = true;
    if ((rc = get_bool(root, "parallel_tool_calls", &r->parallel_tool_calls, e)))
        return rc;
    /* The legacy functions API (functions / function_call) is not served: only "none". */
    const cJSON *fns = rq_field(root, "functions"), *fc = rq_field(root, "function_call");
    if (fns && !cJSON_IsArray(fns))
        return bad(e, "functions", "'functions' must be an array, not %s", rq_type_name(fns));
    if (fns && cJSON_GetArraySize(fns) > 0 &&
        !(cJSON_IsString(fc) && strcmp(fc->valuestring, "none") == 0))
        return unsupported_param(e, "functions", "'functions' (the deprecated function "
                                 "calling API) is not supported: send 'tools' instead");
    if (t && !cJSON_IsArray(t))
        return bad(e, "tools", "'tools' must be an array, not %s", rq_type_name(t));
    int n = t ? cJSON_GetArraySize(t) : 0;
    if (n > 0) {
        r->tool_names = calloc((size_t)n, sizeof *r->tool_names);
        if (!r->tool_names)
            return -ENOMEM;
    }
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, t)
    {
        char tp[64], fp[80];
        snprintf(tp, sizeof tp, "tools[%d]", i);
        snprintf(fp, sizeof fp, "tools[%d].function", i);
        if (!cJSON_IsObject(it))
            return bad(e, tp, "'%s' must be an object {\"type\": \"function\", \"function\": "
                       "{...}}, not %s", tp, rq_type_name(it));
        const cJSON *type = rq_field(it, "type"), *fn = rq_field(it, "function");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") != 0) {
            char kp[80];
            snprintf(kp, sizeof kp, "%s.type", tp);
            return bad(e, kp, "'%s' must be \"function\" (the only tool type fusiond serves)",
                       kp);
        }
        if (!fn)
            return bad(e, fp, "'%s' is required", fp);
        if (!cJSON_IsObject(fn))
            return bad(e, fp, "'%s' must be an object, not %s", fp, rq_type_name(fn));
        char *name = NULL;
        if ((rc = member_str(fn, fp, "name", true, &name, e)))
            return rc;
        r->tool_names[i] = name;
        r->n_tools = i + 1;
        char kp[100];
        snprintf(kp, sizeof kp, "%s.name", fp);
        if (!rq_fn_name_ok(name))
            return bad(e, kp, "'%s' (\"%.70s\") must be 1 to 64 letters, digits, '_' or '-'",
                       kp, name);
        for (int k = 0; k < i; k++)
            if (strcmp(r->tool_names[k], name) == 0)
                return bad(e, kp, "'%s': the function name \"%s\" is also tools[%d]'s", kp,
                           name, k);
        const cJSON *d = rq_field(fn, "description"), *pa = rq_field(fn, "parameters"),
                    *st = rq_field(fn, "strict");
        snprintf(kp, sizeof kp, "%s.description", fp);
        if (d && !cJSON_IsString(d))
            return bad(e, kp, "'%s' must be a string, not %s", kp, rq_type_name(d));
        if (d && !rq_utf8_valid(d->valuestring, strlen(d->valuestring)))
            return bad(e, kp, "'%s' is not valid UTF-8", kp);
        snprintf(kp, sizeof kp, "%s.parameters", fp);
        if (pa && !cJSON_IsObject(pa))
            return bad(e, kp, "'%s' must be a JSON Schema object, not %s", kp, rq_type_name(pa));
        snprintf(kp, sizeof kp, "%s.strict", fp);
        if (st && !cJSON_IsBool(st))
            return bad(e, kp, "'%s' must be a boolean, not %s", kp, rq_type_name(st));
        i++;
    }
    r->tool_choice = n > 0 ? RQ_TOOLS_AUTO : RQ_TOOLS_NONE;
    if (cJSON_IsString(tc)) {
        const char *v = tc->valuestring;
        if (strcmp(v, "none") == 0)
            r->tool_choice = RQ_TOOLS_NONE;
        else if (strcmp(v, "auto") == 0)
            r->tool_choice = n > 0 ? RQ_TOOLS_AUTO : RQ_TOOLS_NONE;
        else if (strcmp(v, "required") == 0)
            r->tool_choice = RQ_TOOLS_REQUIRED;
        else
            return bad(e, "tool_choice", "'tool_choice' is \"%.40s\"; it must be \"none\", "
                       "\"auto\", \"required\" or {\"type\": \"function\", \"function\": "
                       "{\"name\": ...}}", v);
    } else if (cJSON_IsObject(tc)) {
        const cJSON *type = rq_field(tc, "type"), *fn = rq_field(tc, "function");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") != 0)
            return bad(e, "tool_choice.type", "'tool_choice.type' must be \"function\"");
        if (!cJSON_IsObject(fn))
            return bad(e, "tool_choice.function", "'tool_choice.function' must be an object "
                       "with the function's name");
        if ((rc = member_str(fn, "tool_choice.function", "name", true, &r->tool_name, e)))
            return rc;
        r->tool_choice = RQ_TOOLS_NAMED;
        bool known = false;
        for (int k = 0; k < r->n_tools; k++)
            known |= strcmp(r->tool_names[k], r->tool_name) == 0;
        if (!known)
            return bad(e, "tool_choice.function.name", "'tool_choice.function.name' is "
                       "\"%.64s\", which is not a function in 'tools'", r->tool_name);
    } else if (tc) {
        return bad(e, "tool_choice", "'tool_choice' must be a string or an object, not %s",
                   rq_type_name(tc));
    }
    if (r->tool_choice == RQ_TOOLS_REQUIRED && n == 0)
        return bad(e, "tool_choice", "'tool_choice' \"required\" needs 'tools'");
    if (r->tool_choice == RQ_TOOLS_NAMED && !r->grammar) {
        /* The server writes the call up to its arguments; the grammar makes the arguments
         * an object that fits the function's parameters.  A schema outside the compiler's
         * subset leaves them free (the call is then only as good as the model). */
        const cJSON *params = NULL;
        cJSON_ArrayForEach(it, t)
        {
            const cJSON *fn = rq_field(it, "function"), *nm = rq_field(fn, "name");
            if (strcmp(nm->valuestring, r->tool_name) == 0)
                params = rq_field(fn, "parameters");
        }
        gr_spec_t *g = NULL;
        char why[160], where[96];
        int grc = params && params->child
                      ? sch_compile(params, &g, why, sizeof why, where, sizeof where)
                      : gr_spec_json(&g, true);
        if (grc == -ENOMEM)
            return -ENOMEM;
        if (grc == 0) {
            r->grammar = g;
            r->sampling.grammar = g;
            r->tool_grammar = true;
        }
    }
    if (r->tool_choice != RQ_TOOLS_NONE) {
        r->tools = cJSON_PrintUnformatted(t);
        if (!r->tools)
            return -ENOMEM;
    }
    return 0;
}

/* response_format: OpenAI's chat field; vLLM and llama-server take it on completions too.
 * {"type": "text"} is free text; "json_object" constrains the output to one JSON object
 * (llama-server's "schema" beside it, to that schema); "json_schema" to
 * json_schema.schema (server/schema.h says which keywords). */
static int parse_response_format(const cJSON *root, rq_t *r, rq_err_t *e)
{
    const cJSON *rf = rq_field(root, "response_format");
    if (!rf)
        return 0;
    if (!cJSON_IsObject(rf))
        return bad(e, "response_format", "'response_format' must be an object, not %s",
                   rq_type_name(rf));
    const cJSON *t = rq_field(rf, "type");
    if (!t)
        return bad(e, "response_format.type", "'response_format.type' is required");
    if (!cJSON_IsString(t))
        return bad(e, "response_format.type", "'response_format.type' must be a string, not "
                   "%s", rq_type_name(t));
    if (strcmp(t->valuestring, "text") == 0)
        return 0;
    if (strcmp(t->valuestring, "json_object") == 0) {
        const cJSON *schema = rq_field(rf, "schema");
        if (schema)
            return compile_schema(schema, "response_format.schema", r, e);
        if (gr_spec_json(&r->grammar, true) < 0)
            return rq_fail(e, 500, "server_error", NULL, "out of memory");
        r->sampling.grammar = r->grammar;
        return 0;
    }
    if (strcmp(t->valuestring, "json_schema") == 0) {
        const cJSON *js = rq_field(rf, "json_schema");
        if (!js)
            return bad(e, "response_format.json_schema", "'response_format.json_schema' is "
                       "required when 'type' is \"json_schema\"");
        if (!cJSON_IsObject(js))
            return bad(e, "response_format.json_schema", "'response_format.json_schema' must "
                       "be an object, not %s", rq_type_name(js));
        const cJSON *name = rq_field(js, "name");
        if (!name)
            return bad(e, "response_format.json_schema.name",
                       "'response_format.json_schema.name' is required");
        size_t nl = cJSON_IsString(name) ? strlen(name->valuestring) : 0;
        bool name_ok = nl >= 1 && nl <= 64 &&
                       strspn(name->valuestring, "abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == nl;
        if (!name_ok)
            return bad(e, "response_format.json_schema.name",
                       "'response_format.json_schema.name' must be 1 to 64 letters, digits, "
                       "underscores or dashes");
        const cJSON *desc = rq_field(js, "description"), *strict = rq_field(js, "strict");
        if (desc && !cJSON_IsString(desc))
            return bad(e, "response_format.json_schema.description",
                       "'response_format.json_schema.description' must be a string, not %s",
                       rq_type_name(desc));
        if (strict && !cJSON_IsBool(strict))
            return bad(e, "response_format.json_schema.strict",
                       "'response_format.json_schema.strict' must be a boolean, not %s",
                       rq_type_name(strict));
        return compile_schema(rq_field(js, "schema"), "response_format.json_schema.schema", r, e);
    }
    bad(e, "response_format.type", "'response_format.type' \"%.64s\" is not supported: "
        "fusiond takes \"text\", \"json_object\" and \"json_schema\"", t->valuestring);
    e->code = "unsupported_value";
    return -EINVAL;
}

/* ---- GBNF constraints: llama-server's grammar, vLLM's guided_grammar, guided_regex,
 * guided_choice and their structured_outputs forms ---- */

/* Refuses a second constraint: param is the field that asks for one. */
static int one_constraint(const rq_t *r, const char *param, rq_err_t *e)
{
    if (!r->grammar)
        return 0;
    return bad(e, param, "'%s' and another constraint (response_format, json_schema, "
               "guided_json, grammar, guided_grammar, guided_regex, guided_choice or "
               "structured_outputs) both constrain the output: send one", param);
}

/* The constraint of GBNF text (what param asked for, compiled or given). */
static int use_gbnf(char *text, const char *param, rq_t *r, rq_err_t *e)
{
    char why[256];
    gr_spec_t *g = NULL;
    int rc = gr_spec_gbnf(&g, text, strlen(text), why, sizeof why);
    if (rc == -ENOMEM) {
        free(text);
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    }
    if (rc < 0) {
        free(text);
        return bad(e, param, "'%s' is not a grammar fusiond can use: %s", param, why);
    }
    r->grammar = g;
    r->sampling.grammar = g;
    r->grammar_text = text;
    return 0;
}

static int gbnf_field(const cJSON *v, const char *param, rq_t *r, rq_err_t *e)
{
    if (!cJSON_IsString(v))
        return bad(e, param, "'%s' must be a string (a GBNF grammar), not %s", param,
                   rq_type_name(v));
    int rc = one_constraint(r, param, e);
    if (rc)
        return rc;
    char *text = strdup(v->valuestring);
    if (!text)
        return -ENOMEM;
    return use_gbnf(text, param, r, e);
}

static int regex_field(const cJSON *v, const char *param, rq_t *r, rq_err_t *e)
{
    if (!cJSON_IsString(v))
        return bad(e, param, "'%s' must be a string (a regular expression), not %s", param,
                   rq_type_name(v));
    int rc = one_constraint(r, param, e);
    if (rc)
        return rc;
    char why[256], *text = NULL;
    rc = rx_to_gbnf(v->valuestring, strlen(v->valuestring), &text, why, sizeof why);
    if (rc == -ENOMEM)
        return -ENOMEM;
    if (rc < 0) {
        bad(e, param, "'%s' at %s", param, why);
        if (rc == FD_EUNSUP)
            e->code = "unsupported_parameter";
        return -EINVAL;
    }
    return use_gbnf(text, param, r, e);
}

/* At most this many choices (each one a parse stack while its prefix matches). */
#define RQ_MAX_CHOICES 512

static int choice_field(const cJSON *v, const char *param, rq_t *r, rq_err_t *e)
{
    int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
    if (!cJSON_IsArray(v) || n < 1)
        return bad(e, param, "'%s' must be a non-empty array of strings", param);
    if (n > RQ_MAX_CHOICES)
        return bad(e, param, "'%s' has %d choices: at most %d", param, n, RQ_MAX_CHOICES);
    int rc = one_constraint(r, param, e);
    if (rc)
        return rc;
    const char **s = calloc((size_t)n, sizeof *s);
    size_t *lens = calloc((size_t)n, sizeof *lens);
    if (!s || !lens) {
        free(s);
        free(lens);
        return -ENOMEM;
    }
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v)
    {
        if (!cJSON_IsString(it)) {
            free(s);
            free(lens);
            return bad(e, param, "'%s[%d]' must be a string, not %s", param, i,
                       rq_type_name(it));
        }
        s[i] = it->valuestring;
        lens[i++] = strlen(it->valuestring);
    }
    char *text = NULL;
    rc = rx_choice_gbnf(s, lens, n, &text);
    free(s);
    free(lens);
    if (rc < 0)
        return -ENOMEM;
    return use_gbnf(text, param, r, e);
}

/* llama-server's grammar, vLLM's guided_grammar, guided_regex and guided_choice; "", []
 * and null ask for nothing. */
static int parse_grammar_fields(const cJSON *root, rq_t *r, rq_err_t *e)
{
    static const struct {
        const char *key;
        int (*fn)(const cJSON *, const char *, rq_t *, rq_err_t *);
    } f[] = {
        { "grammar", gbnf_field },
        { "guided_grammar", gbnf_field },
        { "guided_regex", regex_field },
        { "guided_choice", choice_field },
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(f); i++) {
        const cJSON *v = rq_field(root, f[i].key);
        if (!v || cJSON_IsNull(v) || is_neutral(v, NEU_EMPTY, 0))
            continue;
        int rc = f[i].fn(v, f[i].key, r, e);
        if (rc)
            return rc;
    }
    return 0;
}

/* vLLM's structured_outputs (its newer form of the guided_* fields): "json" (a schema or
 * its JSON text), "json_object": true, "regex", "choice" and "grammar", one of them; its
 * structural_tag is refused by name. */
static int parse_structured_outputs(const cJSON *so, rq_t *r, rq_err_t *e)
{
    if (!cJSON_IsObject(so))
        return bad(e, "structured_outputs", "'structured_outputs' must be an object, not %s",
                   rq_type_name(so));
    static const char *const kinds[] = { "json", "regex", "choice", "grammar" };
    const cJSON *it;
    int asked = 0;
    cJSON_ArrayForEach(it, so)
    {
        char param[96];
        snprintf(param, sizeof param, "structured_outputs.%.60s", it->string);
        if (cJSON_IsNull(it))
            continue;
        bool known = false;
        for (size_t k = 0; k < FD_ARRAY_LEN(kinds); k++)
            known |= strcmp(it->string, kinds[k]) == 0;
        if (known) {
            asked++;
            continue;
        }
        if (strcmp(it->string, "json_object") == 0) {
            if (!cJSON_IsBool(it))
                return bad(e, param, "'%s' must be a boolean, not %s", param, rq_type_name(it));
            asked += cJSON_IsTrue(it);
            continue;
        }
        return unsupported_param(e, param, "'%s' is not supported: fusiond constrains output "
                                 "with 'json', 'json_object', 'regex', 'choice' or 'grammar'",
                                 param);
    }
    if (asked > 1)
        return bad(e, "structured_outputs", "'structured_outputs' asks for more than one of "
                   "'json', 'json_object', 'regex', 'choice' and 'grammar': send one");
    if (asked == 0)
        return 0;
    const cJSON *js = rq_field(so, "json"), *jo = rq_field(so, "json_object");
    if (js && cJSON_IsNull(js))
        js = NULL;
    if (!js && !cJSON_IsTrue(jo)) {
        const cJSON *v;
        if ((v = rq_field(so, "regex")) && !cJSON_IsNull(v))
            return regex_field(v, "structured_outputs.regex", r, e);
        if ((v = rq_field(so, "choice")) && !cJSON_IsNull(v))
            return choice_field(v, "structured_outputs.choice", r, e);
        v = rq_field(so, "grammar");
        return gbnf_field(v, "structured_outputs.grammar", r, e);
    }
    if (r->grammar)
        return bad(e, "structured_outputs", "'structured_outputs' and 'response_format' both "
                   "constrain the output: send one");
    if (!js) {
        if (gr_spec_json(&r->grammar, true) < 0)
            return rq_fail(e, 500, "server_error", NULL, "out of memory");
        r->sampling.grammar = r->grammar;
        return 0;
    }
    cJSON *parsed = NULL;
    if (cJSON_IsString(js)) {
        if (!(parsed = cJSON_Parse(js->valuestring)))
            return bad(e, "structured_outputs.json", "'structured_outputs.json' is a string "
                       "that is not JSON");
        js = parsed;
    }
    int rc = compile_schema(js, "structured_outputs.json", r, e);
    cJSON_Delete(parsed);
    return rc;
}

/* vLLM's guided_json and structured_outputs, llama-server's json_schema: a schema as a
 * top-level field (an object, or, as vLLM also takes it, the JSON text of one).  "", {} and
 * [] ask for nothing, as before fusiond served them. */
static int parse_schema_field(const cJSON *root, rq_t *r, rq_err_t *e)
{
    static const char *const keys[] = { "guided_json", "json_schema" };
    for (size_t i = 0; i < FD_ARRAY_LEN(keys); i++) {
        const cJSON *v = rq_field(root, keys[i]);
        if (!v || is_neutral(v, NEU_EMPTY, 0))
            continue;
        if (r->grammar)
            return bad(e, keys[i], "'%s' and %s both constrain the output: send one",
                       keys[i], i == 0 ? "'response_format'" : "'response_format' or "
                       "'guided_json'");
        cJSON *parsed = NULL;
        if (cJSON_IsString(v)) {
            if (!(parsed = cJSON_Parse(v->valuestring)))
                return bad(e, keys[i], "'%s' is a string that is not JSON", keys[i]);
            v = parsed;
        }
        int rc = compile_schema(v, keys[i], r, e);
        cJSON_Delete(parsed);
        if (rc)
            return rc;
    }
    const cJSON *so = rq_field(root, "structured_outputs");
    if (so && !is_neutral(so, NEU_EMPTY, 0))
        return parse_structured_outputs(so, r, e);
    return 0;
}

/* llama-server's "samplers": an array of names or a string of their letters (its web UI
 * sends "edkypmxt").  "infill" ('i'), llama.cpp's sampler for fill-in-the-middle that
 * llama.vim lists, is skipped: fusiond does not have it, and an editor's answer does not
 * need it.  Any other unknown name is a 400. */
static int parse_samplers(const cJSON *v, eng_sampling_t *s, rq_err_t *e)
{
    int n = 0;
    if (cJSON_IsString(v)) {
        for (const char *c = v->valuestring; *c; c++) {
            int st = smp_step_from_char(*c);
            if (*c == 'i')
                continue;
            if (!st)
                return bad(e, "samplers", "'samplers' has the letter '%c', which names no "
                           "sampler (e d s k y p m x t)", *c);
            if (n == SMP_MAX_ORDER)
                return bad(e, "samplers", "'samplers' lists more than %d samplers",
                           SMP_MAX_ORDER);
            s->order[n++] = (uint8_t)st;
        }
    } else if (cJSON_IsArray(v)) {
        const cJSON *it;
        cJSON_ArrayForEach(it, v)
        {
            if (!cJSON_IsString(it))
                return bad(e, "samplers", "'samplers' must be an array of sampler names, not "
                           "of %s", rq_type_name(it));
            const char *nm = it->valuestring;
            int st = smp_step_from_name(nm);
            if (strcmp(nm, "infill") == 0)
                continue;
            if (!st)
                return bad(e, "samplers", "'samplers' has \"%.40s\", which is not a sampler: "
                           "penalties, dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc, "
                           "temperature", nm);
            if (n == SMP_MAX_ORDER)
                return bad(e, "samplers", "'samplers' lists more than %d samplers",
                           SMP_MAX_ORDER);
            s->order[n++] = (uint8_t)st;
        }
    } else {
        return bad(e, "samplers", "'samplers' must be an array of names or a string of "
                   "letters, not %s", rq_type_name(v));
    }
    if (n == 0)
        return bad(e, "samplers", "'samplers' names no sampler that fusiond runs (an empty "
                   "chain is not served)");
    s->n_order = n;
    return 0;
}

/* llama.cpp's other samplers (engine/sampler.h defines them), under llama-server's names
 * and with its defaults (smp_default_extras). */
static int parse_llama_samplers(const cJSON *root, int kind, rq_t *r, rq_err_t *e)
{
    eng_sampling_t *s = &r->sampling;
    long long v = 0;
    bool have = false;
    float typ = 1;
    int rc;
    if ((rc = get_num(root, "typical_p", 0, 1, false, &typ, e)) ||
        (rc = get_num(root, "dynatemp_range", 0, 1e6, false, &s->dynatemp_range, e)) ||
        (rc = get_num(root, "dynatemp_exponent", 0, 1e6, false, &s->dynatemp_exponent, e)) ||
        (rc = get_num(root, "xtc_probability", 0, 1, false, &s->xtc_probability, e)) ||
        (rc = get_num(root, "xtc_threshold", 0, 1, false, &s->xtc_threshold, e)) ||
        (rc = get_num(root, "top_n_sigma", -1e6, 1e6, false, &s->top_n_sigma, e)) ||
        (rc = get_num(root, "dry_multiplier", 0, 1e6, false, &s->dry_multiplier, e)) ||
        (rc = get_num(root, "dry_base", 1, 1e6, false, &s->dry_base, e)) ||
        (rc = get_num(root, "mirostat_tau", 0, 1e6, false, &s->mirostat_tau, e)) ||
        (rc = get_num(root, "mirostat_eta", 0, 1, false, &s->mirostat_eta, e)))
        return rc;
    /* 0 keeps the single most typical token, as in llama.cpp (0 is "off" to the engine) */
    s->typical_p = typ == 0 ? FLT_MIN : typ;
    if (s->top_n_sigma < 0)
        s->top_n_sigma = 0;
    if ((rc = get_int(root, "dry_allowed_length", 0, 1 << 30, &have, &v, e)))
        return rc;
    if (have)
        s->dry_allowed_length = (int)v;
    if ((rc = get_int(root, "dry_penalty_last_n", -1, 1 << 30, &have, &v, e)))
        return rc;
    if (have)
        s->dry_penalty_last_n = (int)v;
    if ((rc = get_int(root, "mirostat", 0, 2, &have, &v, e)))
        return rc;
    if (have)
        s->mirostat = (int)v;
    const cJSON *br = rq_field(root, "dry_sequence_breakers");
    if (br) {
        int n = cJSON_IsArray(br) ? cJSON_GetArraySize(br) : 0;
        if (n == 0)
            return bad(e, "dry_sequence_breakers", "'dry_sequence_breakers' must be a "
                       "non-empty array of strings");
        if (n > SMP_MAX_BREAKERS)
            return bad(e, "dry_sequence_breakers", "'dry_sequence_breakers' has %d strings; "
                       "at most %d", n, SMP_MAX_BREAKERS);
        if (!(r->dry_breakers = calloc((size_t)n, sizeof *r->dry_breakers)))
            return -ENOMEM;
        const cJSON *it;
        cJSON_ArrayForEach(it, br)
        {
            if (!cJSON_IsString(it) || !it->valuestring[0])
                return bad(e, "dry_sequence_breakers", "'dry_sequence_breakers' must be an "
                           "array of non-empty strings");
            if (!(r->dry_breakers[r->n_dry_breakers++] = strdup(it->valuestring)))
                return -ENOMEM;
        }
        s->dry_breakers = (const char *const *)r->dry_breakers;
        s->n_dry_breakers = r->n_dry_breakers;
    }
    const cJSON *sm = rq_field(root, "samplers");
    if (sm && !cJSON_IsNull(sm) && (rc = parse_samplers(sm, s, e)))
        return rc;
    if (kind == RQ_NATIVE || kind == RQ_INFILL) {
        bool post = false;
        if ((rc = get_bool(root, "post_sampling_probs", &post, e)))
            return rc;
        r->post_sampling_probs = post;
    }
    return 0;
}

static int parse_generation(const cJSON *root, int kind, const rq_limits_t *lim, rq_t *r,
                            rq_err_t *e)
{
    int rc;
    long long v = 0;
    bool have = false;
    eng_sampling_t *s = &r->sampling;

    const char *mt = "max_tokens";
    if (kind == RQ_CHAT && rq_field(root, "max_completion_tokens"))
        mt = "max_completion_tokens";
    if (kind == RQ_NATIVE || kind == RQ_INFILL) {
        /* llama-server reads n_predict, else max_tokens, both with its -1 */
        mt = rq_field(root, "n_predict") || !rq_field(root, "max_tokens") ? "n_predict"
                                                                            : "max_tokens";
        if ((rc = get_int(root, mt, -1, 0x7fffffff, &have, &v, e)))
            return rc;
        /* 0 evaluates the prompt alone (into the prefix cache: llama.vim warms it so, on
         * /infill) */
        if (have) {
            r->max_tokens = v < 0 ? RQ_TO_CONTEXT : v == 0 ? RQ_PROMPT_ONLY : (int)v;
            r->max_tokens_field = mt;
        }
    } else if ((rc = get_int(root, mt, 0, 0x7fffffff, &have, &v, e))) {
        return rc;
    } else if (have) {
        /* 0 is only the prompt-alone request of echo, checked once echo is known */
        r->max_tokens = v == 0 ? RQ_PROMPT_ONLY : (int)v;
        r->max_tokens_field = mt;
    } else if (rq_field(root, "n_predict")) {
        /* llama-server's name for it, which its clients send to the OpenAI endpoints too;
         * -1 there means "until the context is full" (0 there evaluates the prompt only,
         * which a completion endpoint here does not do). */
        if ((rc = get_int(root, "n_predict", -1, 0x7fffffff, &have, &v, e)))
            return rc;
        if (v == 0)
            return bad(e, "n_predict", "'n_predict' must be -1 (until the context is full) "
                       "or at least 1");
        r->max_tokens = v < 0 ? RQ_TO_CONTEXT : (int)v;
        r->max_tokens_field = "n_predict";
    }
    /* llama-server's /completion names it n_cmpl */
    const char *nk = kind == RQ_NATIVE ? "n_cmpl" : "n";
    if ((rc = get_int(root, nk, 1, lim->max_n, &have, &v, e)))
        return rc;
    if (have)
        r->n = (int)v;
    if ((size_t)r->n * (r->n_prompts ? r->n_prompts : 1) > (size_t)lim->max_n)
        return bad(e, nk, "'%s' (%d) times the number of prompts (%zu) is more than %d", nk,
                   r->n, r->n_prompts, lim->max_n);

    if (kind == RQ_NATIVE) {
        /* llama-server: any temperature, <= 0 greedy; its penalty names; a negative top_k
         * or repeat_last_n -1 (the whole context) as its sampler reads them */
        if ((rc = get_num(root, "temperature", -1e6, 1e6, false, &s->temperature, e)) ||
            (rc = get_num(root, "repeat_penalty", 0, 10, true, &s->repeat_penalty, e)))
            return rc;
        s->temperature = FD_MAX(s->temperature, 0.0f);
        if ((rc = get_int(root, "repeat_last_n", -1, 1 << 30, &have, &v, e)))
            return rc;
        if (have)
            s->repeat_last_n = (int)v;
    } else if ((rc = get_num(root, "temperature", 0, 2, false, &s->temperature, e))) {
        return rc;
    }
    if ((rc = get_num(root, "top_p", 0, 1, true, &s->top_p, e)) ||
        (rc = get_num(root, "min_p", 0, 1, false, &s->min_p, e)) ||
        (rc = get_num(root, "presence_penalty", -2, 2, false, &s->presence_penalty, e)) ||
        (rc = get_num(root, "frequency_penalty", -2, 2, false, &s->frequency_penalty, e)) ||
        (rc = get_num(root, "repetition_penalty", 0, 10, true, &s->repeat_penalty, e)))
        return rc;
    if ((rc = get_int(root, "top_k", -1, 1 << 30, &have, &v, e)))
        return rc;
    if (have)
        s->top_k = v < 0 ? 0 : (int)v;
    /* Seeds beyond 2^53 lose bits in a JSON double anyway; any integer is accepted. */
    if ((rc = get_int(root, "seed", -9223372036854775807LL, 9223372036854775807LL, &have, &v,
                      e)))
        return rc;
    /* llama-server's -1 (and its default 0xFFFFFFFF, which /props shows) is a random seed */
    if (have && !(kind == RQ_NATIVE && (v == -1 || v == 0xFFFFFFFFLL))) {
        s->seed = (uint64_t)v;
        s->has_seed = true;
    }
    if ((rc = parse_stop(root, lim, r, e)) || (rc = parse_logit_bias(root, kind, lim, r, e)) ||
        (rc = parse_llama_samplers(root, kind, r, e)))
        return rc;

    /* vLLM's -1 (the whole vocabulary at every position) is not served: 20 at most */
    if ((rc = get_int(root, "prompt_logprobs", 0, RQ_MAX_LOGPROBS, &have, &v, e)))
        return rc;
    if (have)
        r->prompt_logprobs = (int)v;

    if ((rc = get_bool(root, "stream", &r->stream, e)) ||
        (rc = get_bool(root, "ignore_eos", &r->ignore_eos, e)) ||
        (rc = parse_lora(root, r, e)))
        return rc;
    const cJSON *so = rq_field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so))
            return bad(e, "stream_options", "'stream_options' must be an object, not %s",
                       rq_type_name(so));
        const cJSON *iu = rq_field(so, "include_usage");
        if (iu && !cJSON_IsBool(iu))
            return bad(e, "stream_options.include_usage",
                       "'stream_options.include_usage' must be a boolean, not %s",
                       rq_type_name(iu));
        r->include_usage = iu && cJSON_IsTrue(iu);
    }
    const cJSON *user = rq_field(root, "user");
    if (user && !cJSON_IsString(user))
        return bad(e, "user", "'user' must be a string, not %s", rq_type_name(user));

    if ((rc = parse_response_format(root, r, e)) || (rc = parse_schema_field(root, r, e)) ||
        (rc = parse_grammar_fields(root, r, e)))
        return rc;

    /* llama-server's n_probs, the number of alternatives for each token's log-probability
     * (0: none), which its clients send to every endpoint: the native answers' own, and on
     * the OpenAI ones what logprobs asks for when logprobs is not given */
    long long n_probs = 0;
    if ((rc = get_int(root, "n_probs", 0, RQ_MAX_LOGPROBS, &have, &n_probs, e)))
        return rc;
    if (kind == RQ_NATIVE) {
        /* the native answer has its own log-probabilities (n_probs) and no usage chunk:
         * OpenAI's fields are not its and are ignored, as llama-server ignores them */
        r->n_probs = (int)n_probs;
        r->logprobs = r->n_probs > 0 ? r->n_probs : -1;
        /* only with probabilities to show (the chain runs for it) */
        s->post_probs = r->post_sampling_probs && r->n_probs > 0;
        r->prompt_logprobs = -1;
        r->include_usage = false;
        r->echo = false;
    } else if (kind == RQ_INFILL) {
        /* the native answer has none of these */
        static const char *const no[] = {"echo", "logprobs", "prompt_logprobs",
                                         "stream_options"};
        for (size_t i = 0; i < FD_ARRAY_LEN(no); i++)
            if (rq_field(root, no[i]) && !is_neutral(rq_field(root, no[i]), NEU_FALSE, 0) &&
                !is_neutral(rq_field(root, no[i]), NEU_EMPTY, 0))
                return unsupported_param(e, no[i], "'%s' is not supported on /infill; leave "
                                         "it out (n_probs asks for log-probabilities)", no[i]);
        r->n_probs = (int)n_probs;
        r->logprobs = r->n_probs > 0 ? r->n_probs : -1;
        s->post_probs = r->post_sampling_probs && r->n_probs > 0;
        r->prompt_logprobs = -1;
        r->include_usage = false;
        if (r->n != 1)
            return unsupported_param(e, "n", "'n' must be 1 on /infill (it answers one "
                                     "completion)");
    } else if (kind == RQ_COMPLETION) {
        if ((rc = get_bool(root, "echo", &r->echo, e)))
            return rc;
        if ((rc = get_int(root, "logprobs", 0, RQ_MAX_LOGPROBS, &have, &v, e)))
            return rc;
        if (have)
            r->logprobs = (int)v;
        else if (n_probs > 0)
            r->logprobs = (int)n_probs;
        if (r->max_tokens == RQ_PROMPT_ONLY && !r->echo)
            return bad(e, mt, "'%s' is 0: it must be at least 1 (0 only with 'echo': true, "
                       "for the prompt alone)", mt);
        const cJSON *sf = rq_field(root, "suffix");
        if (sf && !cJSON_IsString(sf))
            return bad(e, "suffix", "'suffix' must be a string, not %s", rq_type_name(sf));
        if (sf && sf->valuestring[0]) {
            if (r->echo)
                return bad(e, "suffix", "'suffix' cannot be combined with 'echo': the echoed "
                           "prompt would not be the text the completion goes after");
            if ((rc = dup_str(sf, "suffix", &r->suffix, &r->suffix_len, e)))
                return rc;
        }
    } else {
        bool lp = false;
        if ((rc = get_bool(root, "logprobs", &lp, e)))
            return rc;
        if ((rc = get_int(root, "top_logprobs", 0, RQ_MAX_LOGPROBS, &have, &v, e)))
            return rc;
        if (have && !lp)
            return bad(e, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        if (lp)
            r->logprobs = have ? (int)v : 0;
        else if (!rq_field(root, "logprobs") && n_probs > 0)
            r->logprobs = (int)n_probs; /* logprobs true, top_logprobs n_probs */
        if (r->max_tokens == RQ_PROMPT_ONLY)
            return bad(e, mt, "'%s' is 0: it must be at least 1", mt);
        if ((rc = get_bool(root, "add_generation_prompt", &r->add_generation_prompt, e)))
            return rc;
        if ((rc = parse_tools(root, r, e)) || (rc = parse_reasoning(root, r, e)))
            return rc;
        /* The JSON constraint would forbid the call syntax of Qwen (<tool_call>) and
         * Mistral ([TOOL_CALLS]); fusiond does not mix the two. */
        if (r->tools && r->grammar && !r->tool_grammar)
            return unsupported_param(e, "tools", "'tools' cannot be combined with a "
                                     "constraint on the output (response_format, "
                                     "json_schema, guided_json, structured_outputs, grammar, "
                                     "guided_grammar, guided_regex or guided_choice): set "
                                     "'tool_choice' to \"none\" for a constrained answer");
    }
    s->n_probs = r->logprobs;
    return check_unsupported(root, kind, r, e);
}

static int parse_tokenize(const cJSON *root, rq_t *r, rq_err_t *e)
{
    const char *key = rq_field(root, "content") ? "content" : "prompt";
    const cJSON *c = rq_field(root, key);
    if (!c)
        return bad(e, "content", "'content' (or 'prompt') is required");
    if (!cJSON_IsString(c))
        return bad(e, key, "'%s' must be a string, not %s", key, rq_type_name(c));
    r->prompts = calloc(1, sizeof *r->prompts);
    if (!r->prompts)
        return -ENOMEM;
    r->n_prompts = 1;
    int rc = dup_str(c, key, &r->prompts[0].text, &r->prompts[0].text_len, e);
    if (rc)
        return rc;
    r->parse_special = true;
    if ((rc = get_bool(root, "add_special", &r->add_special, e)) ||
        (rc = get_bool(root, "add_special_tokens", &r->add_special, e)) ||
        (rc = get_bool(root, "parse_special", &r->parse_special, e)) ||
        (rc = get_bool(root, "with_pieces", &r->with_pieces, e)))
        return rc;
    return 0;
}

static int parse_detokenize(const cJSON *root, rq_t *r, rq_err_t *e)
{
    const cJSON *t = rq_field(root, "tokens");
    if (!t)
        return bad(e, "tokens", "'tokens' is required");
    if (!cJSON_IsArray(t))
        return bad(e, "tokens", "'tokens' must be an array of token ids, not %s", rq_type_name(t));
    r->prompts = calloc(1, sizeof *r->prompts);
    if (!r->prompts)
        return -ENOMEM;
    r->n_prompts = 1;
    return parse_ids(t, "tokens", true, &r->prompts[0].ids, &r->prompts[0].n_ids, e);
}

/* The end of the JSON value at s[i] in a text cJSON accepted (strings and brackets matched). */
static size_t value_end(const char *s, size_t i, size_t len)
{
    int depth = 0;
    for (; i < len; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < len && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            if (depth == 0)
                return i + 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) /* the end of the enclosing object: a number or literal ends */
                return i;
            if (--depth == 0)
                return i + 1;
        } else if (depth == 0 && (c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t')) {
            return i;
        }
    }
    return len;
}

/* The text of the top-level member key of the object body (which cJSON parsed), as the
 * client wrote it: the first one, as cJSON finds it; NULL when the key is written with
 * escapes (the caller then prints the parsed value). */
static char *member_text(const char *s, size_t len, const char *key)
{
    size_t i = 0, k = strlen(key);
    while (i < len && s[i] != '{')
        i++;
    i++;
    while (i < len) {
        while (i < len && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t' ||
                           s[i] == ','))
            i++;
        if (i >= len || s[i] != '"')
            return NULL;
        size_t k0 = i + 1, e = value_end(s, i, len);
        bool hit = e - k0 == k + 1 && memcmp(s + k0, key, k) == 0;
        i = e;
        while (i < len && s[i] != ':')
            i++;
        i++;
        while (i < len && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t'))
            i++;
        size_t v0 = i;
        i = value_end(s, i, len);
        if (hit)
            return strndup(s + v0, i - v0);
    }
    return NULL;
}

/* True when the body holds the JSON escape \u0000 (an odd run of backslashes before it). */
static bool has_nul_escape(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\')
            continue;
        size_t j = i;
        while (j < len && s[j] == '\\')
            j++;
        if ((j - i) % 2 && len - j >= 5 && memcmp(s + j, "u0000", 5) == 0)
            return true;
        i = j - 1;
    }
    return false;
}

/* /v1/embeddings: input in any of the prompt forms, none empty (OpenAI refuses those); at
 * most max_inputs of them (OpenAI's 2048: clients such as LangChain send hundreds at once;
 * the server feeds them to the engine a few at a time); encoding_format, dimensions; user
 * is the client's own tag and ignored. */
static int parse_embeddings(const cJSON *root, const rq_limits_t *lim, rq_t *r, rq_err_t *e)
{
    int rc = parse_prompt(root, "input", r, e);
    if (rc)
        return rc;
    for (size_t i = 0; i < r->n_prompts; i++) {
        if (r->prompts[i].text && r->prompts[i].text_len == 0) {
            char pp[32];
            snprintf(pp, sizeof pp, r->n_prompts > 1 ? "input[%zu]" : "input", i);
            return bad(e, pp, "'%s' is an empty string", pp);
        }
    }
    if (r->n_prompts > (size_t)lim->max_inputs)
        return bad(e, "input", "'input' has %zu inputs; at most %d are accepted", r->n_prompts,
                   lim->max_inputs);
    const cJSON *f = rq_field(root, "encoding_format");
    if (f && !cJSON_IsNull(f)) {
        if (!cJSON_IsString(f) ||
            (strcmp(f->valuestring, "float") != 0 && strcmp(f->valuestring, "base64") != 0))
            return bad(e, "encoding_format", "'encoding_format' must be \"float\" or "
                       "\"base64\"");
        r->base64 = strcmp(f->valuestring, "base64") == 0;
    }
    long long v = 0;
    bool have = false;
    if ((rc = get_int(root, "dimensions", 1, 1 << 20, &have, &v, e)))
        return rc;
    r->dimensions = have ? (int)v : 0;
    const cJSON *u = rq_field(root, "user");
    if (u && !cJSON_IsString(u) && !cJSON_IsNull(u))
        return bad(e, "user", "'user' must be a string, not %s", rq_type_name(u));
    return 0;
}

/* /rerank (llama-server's, Jina's and Cohere's shape): a non-empty query string and a
 * non-empty array of document strings ("documents", or TEI's "texts", which also selects
 * TEI's answer), at most max_inputs of them; top_n >= 1 (more than the documents: all);
 * return_text. */
static int parse_rerank(const cJSON *root, const rq_limits_t *lim, rq_t *r, rq_err_t *e)
{
    const cJSON *q = rq_field(root, "query");
    if (!q)
        return bad(e, "query", "'query' is required: the text the documents are ranked for");
    if (!cJSON_IsString(q))
        return bad(e, "query", "'query' must be a string, not %s", rq_type_name(q));
    if (!q->valuestring[0])
        return bad(e, "query", "'query' is an empty string");
    const char *key = "documents";
    const cJSON *d = rq_field(root, key);
    if (!d && (d = rq_field(root, "texts"))) {
        key = "texts";
        r->tei = true;
    }
    if (!d)
        return bad(e, "documents", "'documents' is required: an array of strings to rank");
    if (!cJSON_IsArray(d))
        return bad(e, key, "'%s' must be an array of strings, not %s", key, rq_type_name(d));
    int n = cJSON_GetArraySize(d);
    if (n == 0)
        return bad(e, key, "'%s' is empty: nothing to rank", key);
    if (n > lim->max_inputs)
        return bad(e, key, "'%s' has %d documents; at most %d are accepted", key, n,
                   lim->max_inputs);
    if (!(r->query = strdup(q->valuestring)))
        return -ENOMEM;
    r->query_len = strlen(r->query);
    if (!(r->prompts = calloc((size_t)n, sizeof *r->prompts)))
        return -ENOMEM;
    const cJSON *it;
    cJSON_ArrayForEach(it, d) {
        if (!cJSON_IsString(it))
            return bad(e, key, "'%s[%zu]' must be a string, not %s", key, r->n_prompts,
                       rq_type_name(it));
        rq_prompt_t *p = &r->prompts[r->n_prompts];
        if (!(p->text = strdup(it->valuestring)))
            return -ENOMEM;
        p->text_len = strlen(p->text);
        r->n_prompts++;
    }
    long long v = 0;
    bool have = false;
    int rc;
    if ((rc = get_int(root, "top_n", 1, 1LL << 30, &have, &v, e)))
        return rc;
    r->top_n = have ? (int)FD_MIN(v, (long long)n) : n;
    return get_bool(root, "return_text", &r->return_text, e);
}

/* The fields /infill and /completion share: response_fields, and the editors' stops
 * t_max_predict_ms and n_indent. */
static int parse_native_common(const cJSON *root, rq_t *r, rq_err_t *e)
{
    int rc, cnt;
    const cJSON *it;
    const cJSON *rf = rq_field(root, "response_fields");
    if (rf) {
        if (!cJSON_IsArray(rf))
            return bad(e, "response_fields", "'response_fields' must be an array of strings, "
                       "not %s", rq_type_name(rf));
        cnt = cJSON_GetArraySize(rf);
        if (cnt > RQ_MAX_RESPONSE_FIELDS)
            return bad(e, "response_fields", "'response_fields' has %d entries; at most %d are "
                       "accepted", cnt, RQ_MAX_RESPONSE_FIELDS);
        if (cnt && !(r->response_fields = calloc((size_t)cnt, sizeof *r->response_fields)))
            return -ENOMEM;
        cJSON_ArrayForEach(it, rf)
        {
            char pp[64];
            snprintf(pp, sizeof pp, "response_fields[%d]", r->n_response_fields);
            if (!cJSON_IsString(it))
                return bad(e, pp, "'%s' must be a string, not %s", pp, rq_type_name(it));
            if ((rc = dup_str(it, pp, &r->response_fields[r->n_response_fields], NULL, e)))
                return rc;
            r->n_response_fields++;
        }
    }
    long long ni = 0;
    bool have = false;
    r->cache_prompt = true;
    if ((rc = get_bool(root, "cache_prompt", &r->cache_prompt, e)) ||
        (rc = get_bool(root, "return_tokens", &r->return_tokens, e)) ||
        (rc = get_num(root, "t_max_predict_ms", 0, 1e9f, false, &r->t_max_predict_ms, e)) ||
        (rc = get_int(root, "n_indent", 0, 1 << 20, &have, &ni, e)))
        return rc;
    r->n_indent = (int)ni;
    return 0;
}

/* llama-server's sampling defaults for its native endpoints (/completion, /infill), and
 * n_predict -1: until the context is full. */
static void native_defaults(rq_t *r)
{
    r->sampling.temperature = 0.8f;
    r->sampling.top_k = 40;
    r->sampling.top_p = 0.95f;
    r->sampling.min_p = 0.05f;
    r->max_tokens = RQ_TO_CONTEXT;
}

/* /infill's own fields, with llama-server's messages. */
static int parse_infill(const cJSON *root, rq_t *r, rq_err_t *e)
{
    static const char *const req[2] = {"input_prefix", "input_suffix"};
    char **dst[2] = {&r->input_prefix, &r->input_suffix};
    size_t *lens[2] = {&r->input_prefix_len, &r->input_suffix_len};
    int rc;
    for (int k = 0; k < 2; k++) {
        const cJSON *v = rq_field(root, req[k]);
        if (!v)
            return bad(e, req[k], "\"%s\" is required", req[k]);
        if (!cJSON_IsString(v))
            return bad(e, req[k], "\"%s\" must be a string, not %s", req[k], rq_type_name(v));
        if ((rc = dup_str(v, req[k], dst[k], lens[k], e)))
            return rc;
    }
    r->prompts = calloc(1, sizeof *r->prompts);
    if (!r->prompts)
        return -ENOMEM;
    r->n_prompts = 1;
    const cJSON *p = rq_field(root, "prompt");
    if (p && !cJSON_IsString(p))
        return bad(e, "prompt", "\"prompt\" must be a string, not %s", rq_type_name(p));
    if ((rc = p ? dup_str(p, "prompt", &r->prompts[0].text, &r->prompts[0].text_len, e)
                : ((r->prompts[0].text = strdup("")) ? 0 : -ENOMEM)))
        return rc;
    const cJSON *x = rq_field(root, "input_extra");
    if (x && !cJSON_IsArray(x))
        return bad(e, "input_extra", "\"input_extra\" must be an array of {\"filename\": "
                   "string, \"text\": string}");
    int cnt = x ? cJSON_GetArraySize(x) : 0;
    if (cnt > RQ_MAX_EXTRA)
        return bad(e, "input_extra", "'input_extra' has %d chunks; at most %d are accepted", cnt,
                   RQ_MAX_EXTRA);
    if (cnt && !(r->extra = calloc((size_t)cnt, sizeof *r->extra)))
        return -ENOMEM;
    const cJSON *it;
    cJSON_ArrayForEach(it, x)
    {
        char pp[64];
        size_t i = r->n_extra;
        snprintf(pp, sizeof pp, "input_extra[%zu]", i);
        const cJSON *t = cJSON_IsObject(it) ? rq_field(it, "text") : NULL;
        if (!t || !cJSON_IsString(t))
            return bad(e, pp, "extra_context chunk must contain a \"text\" field with a string "
                       "value (%s)", pp);
        const cJSON *fn = rq_field(it, "filename");
        if (fn && !cJSON_IsString(fn))
            return bad(e, pp, "extra_context chunk's \"filename\" field must be a string (%s)",
                       pp);
        r->n_extra++;
        if ((rc = dup_str(t, pp, &r->extra[i].text, &r->extra[i].text_len, e)) ||
            (fn && (rc = dup_str(fn, pp, &r->extra[i].filename, &r->extra[i].filename_len, e))))
            return rc;
    }
    if ((rc = parse_native_common(root, r, e)))
        return rc;
    native_defaults(r);
    return 0;
}

/* llama-server's /completion: its prompt forms, its defaults (sampling as its
 * default_generation_settings, n_predict -1: until the context is full), its own fields. */
static int parse_native(const cJSON *root, rq_t *r, rq_err_t *e)
{
    int rc;
    if ((rc = parse_native_prompt(root, r, e)) || (rc = parse_native_common(root, r, e)))
        return rc;
    native_defaults(r);
    return 0;
}

int rq_parse(int kind, const char *body, size_t len, const rq_limits_t *lim, rq_t *r,
             rq_err_t *e)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->n = 1;
    r->logprobs = -1;
    r->prompt_logprobs = -1;
    r->add_special = true;
    r->add_generation_prompt = true;
    r->reasoning_format = -1;
    r->reasoning_budget = -2;
    /* OpenAI's defaults, which are the API's business rather than the engine's. */
    r->sampling.temperature = 1.0f;
    r->sampling.top_p = 1.0f;
    r->sampling.repeat_penalty = 1.0f;
    r->sampling.repeat_last_n = 64;
    r->sampling.n_probs = -1;
    smp_default_extras(&r->sampling);

    if (len == 0)
        return bad(e, NULL, "the request body is empty; a JSON object is expected");
    /* cJSON ends a string at a decoded U+0000: "a\u0000b" would silently become "a". */
    if (has_nul_escape(body, len))
        return bad(e, NULL, "a JSON string holds \\u0000 (NUL), which is not accepted");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root) {
        size_t at = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        return bad(e, NULL, "malformed JSON near byte %zu of %zu", at, len);
    }
    /* Trailing bytes after the object are an error, except whitespace. */
    for (const char *p = end; p && p < body + len; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(root);
            return bad(e, NULL, "malformed JSON: unexpected data at byte %zu after the object",
                       (size_t)(p - body));
        }
    }
    int rc = 0;
    if (!cJSON_IsObject(root)) {
        rc = bad(e, NULL, "the request body must be a JSON object, not %s", rq_type_name(root));
        goto out;
    }
    const cJSON *model = rq_field(root, "model");
    if (model) {
        if (!cJSON_IsString(model)) {
            rc = bad(e, "model", "'model' must be a string, not %s", rq_type_name(model));
            goto out;
        }
        if ((rc = dup_str(model, "model", &r->model, NULL, e)))
            goto out;
    }
    switch (kind) {
    case RQ_COMPLETION:
        if ((rc = parse_prompt(root, "prompt", r, e)))
            goto out;
        rc = parse_generation(root, kind, lim, r, e);
        break;
    case RQ_CHAT:
        if ((rc = parse_messages(root, r, e)))
            goto out;
        rc = parse_generation(root, kind, lim, r, e);
        if (rc == 0 && r->tools) {
            /* the tools as the client wrote them: the templates print their numbers as
             * Python does, which tells 1.0 from 1 (cJSON does not) */
            char *raw = member_text(body, len, "tools");
            if (raw) {
                free(r->tools);
                r->tools = raw;
            }
        }
        break;
    case RQ_INFILL:
        if ((rc = parse_infill(root, r, e)))
            goto out;
        rc = parse_generation(root, kind, lim, r, e);
        break;
    case RQ_NATIVE:
        if ((rc = parse_native(root, r, e)))
            goto out;
        rc = parse_generation(root, kind, lim, r, e);
        break;
    case RQ_TOKENIZE:
        rc = parse_tokenize(root, r, e);
        break;
    case RQ_EMBEDDINGS:
        rc = parse_embeddings(root, lim, r, e);
        break;
    case RQ_RERANK:
        rc = parse_rerank(root, lim, r, e);
        break;
    case RQ_DETOKENIZE:
        rc = parse_detokenize(root, r, e);
        break;
    default:
        rc = bad(e, NULL, "unknown request kind %d", kind);
    }
out:
    cJSON_Delete(root);
    if (rc == -ENOMEM)
        rq_fail(e, 500, "server_error", NULL, "out of memory while parsing the request");
    if (rc)
        rq_free(r);
    return rc;
}

void rq_free(rq_t *r)
{
    if (!r)
        return;
    gr_spec_unref(r->grammar);
    free(r->grammar_text);
    free(r->template_kwargs);
    free(r->lora);
    free(r->model);
    for (int i = 0; i < r->n_dry_breakers; i++)
        free(r->dry_breakers[i]);
    free(r->dry_breakers);
    for (size_t i = 0; i < r->n_prompts && r->prompts; i++) {
        free(r->prompts[i].text);
        free(r->prompts[i].ids);
        for (size_t k = 0; k < r->prompts[i].n_segs; k++) {
            free(r->prompts[i].segs[k].text);
            free(r->prompts[i].segs[k].ids);
        }
        free(r->prompts[i].segs);
    }
    free(r->prompts);
    free(r->suffix);
    free(r->query);
    free(r->input_prefix);
    free(r->input_suffix);
    for (size_t i = 0; i < r->n_extra; i++) {
        free(r->extra[i].filename);
        free(r->extra[i].text);
    }
    free(r->extra);
    for (int i = 0; i < r->n_response_fields; i++)
        free(r->response_fields[i]);
    free(r->response_fields);
    for (size_t i = 0; i < r->n_msgs && r->msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
        for (size_t k = 0; k < r->msgs[i].n_calls; k++) {
            free(r->msgs[i].calls[k].id);
            free(r->msgs[i].calls[k].name);
            free(r->msgs[i].calls[k].arguments);
        }
        free(r->msgs[i].calls);
        free(r->msgs[i].tool_call_id);
        free(r->msgs[i].reasoning);
    }
    free(r->msgs);
    free(r->tools);
    for (int i = 0; i < r->n_tools; i++)
        free(r->tool_names[i]);
    free(r->tool_names);
    free(r->tool_name);
    free(r->reasoning_budget_message);
    for (int i = 0; i < r->n_stop && r->stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->bias);
    memset(r, 0, sizeof *r);
}

int rq_check_vocab(const rq_t *r, int32_t n_vocab, rq_err_t *e)
{
    const char *key = r->kind == RQ_DETOKENIZE ? "tokens"
                      : r->kind == RQ_EMBEDDINGS ? "input"
                                                 : "prompt";
    for (size_t p = 0; p < r->n_prompts; p++) {
        const rq_prompt_t *pr = &r->prompts[p];
        if (pr->text)
            continue;
        /* a mixed prompt's ids are checked segment by segment (i counts its ids) */
        size_t n_seg = pr->segs ? pr->n_segs : 1, i = 0;
        for (size_t k = 0; k < n_seg; k++) {
            const int32_t *ids = pr->segs ? pr->segs[k].ids : pr->ids;
            size_t n = pr->segs ? pr->segs[k].n_ids : pr->n_ids;
            for (size_t t = 0; t < n; t++, i++) {
                if (ids[t] < n_vocab)
                    continue;
                char pp[128];
                if (pr->segs)
                    snprintf(pp, sizeof pp, r->n_prompts > 1 ? "%.80s[%zu]" : "%.80s", key, p);
                else if (r->n_prompts > 1)
                    snprintf(pp, sizeof pp, "%.80s[%zu][%zu]", key, p, i);
                else
                    snprintf(pp, sizeof pp, "%.80s[%zu]", key, i);
                return bad(e, pp, "token id %d %s '%s' is not in the vocabulary (%d tokens: "
                           "0..%d)", ids[t], pr->segs ? "in" : "at", pp, n_vocab, n_vocab - 1);
            }
        }
    }
    for (int i = 0; i < r->n_bias; i++) {
        if (r->bias[i].token < n_vocab)
            continue;
        char pp[128];
        snprintf(pp, sizeof pp, "logit_bias.%d", r->bias[i].token);
        return bad(e, pp, "logit_bias token id %d is not in the vocabulary (%d tokens)",
                   r->bias[i].token, n_vocab);
    }
    return 0;
}

int rq_resolve_max_tokens(const rq_t *r, size_t n_prompt, int n_ctx, int *max_tokens,
                          rq_err_t *e)
{
    const char *pkey = r->kind == RQ_CHAT ? "messages"
                       : r->kind == RQ_INFILL ? "input_prefix" : "prompt";
    /* The field the client sent: a chat request may use either name. */
    const char *mkey = r->max_tokens_field ? r->max_tokens_field : "max_tokens";
    if (n_prompt == 0)
        return bad(e, pkey, "the prompt is empty after tokenization");
    /* OpenAI's code for both overflows: clients (the SDKs' users, LangChain) test it to
     * shorten the prompt and retry. */
    if (n_prompt >= (size_t)n_ctx) {
        bad(e, pkey, "the prompt has %zu tokens; the context length is %d, so at most %d "
            "prompt tokens leave room for one generated token", n_prompt, n_ctx, n_ctx - 1);
        e->code = "context_length_exceeded";
        e->n_prompt = (long long)n_prompt;
        e->n_ctx = n_ctx;
        return -EINVAL;
    }
    int room = n_ctx - (int)n_prompt;
    if (r->max_tokens == RQ_PROMPT_ONLY) {
        *max_tokens = 0;
    } else if (r->max_tokens == RQ_TO_CONTEXT) {
        *max_tokens = room;
    } else if (r->max_tokens > 0) {
        if (r->max_tokens > room && (r->kind == RQ_INFILL || r->kind == RQ_NATIVE)) {
            *max_tokens = room;
            return 0;
        }
        if (r->max_tokens > room) {
            bad(e, mkey, "the prompt (%zu tokens) plus %s (%d) is %lld tokens, more than the "
                "context length %d", n_prompt, mkey, r->max_tokens,
                (long long)n_prompt + r->max_tokens, n_ctx);
            e->code = "context_length_exceeded";
            return -EINVAL;
        }
        *max_tokens = r->max_tokens;
    } else {
        *max_tokens = r->kind == RQ_CHAT ? room : FD_MIN(16, room);
    }
    return 0;
}
