/* toolcall.c: tool-call syntax per chat family.  The model's text is trusted for nothing: a
 * call must parse as JSON, name a function the request offered (exactly as written, no
 * escapes) and carry an arguments object, and nothing but whitespace may follow the calls;
 * anything else is content.  The arguments are returned as the model wrote them: a stream
 * sends them as they come, before the call is complete, and the two must agree. */
#include "config.h"

#include "server/toolcall.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/grammar.h"
#include "server/chat.h"
#include "server/schema.h"

static const char QWEN_OPEN[] = "<tool_call>", QWEN_CLOSE[] = "</tool_call>";
static const char LLAMA_TAG[] = "<|python_tag|>", MISTRAL_TAG[] = "[TOOL_CALLS]",
                  GRANITE_TAG[] = "<|tool_call|>", PHI4_OPEN[] = "functools[";

/* DeepSeek's markers: full-width bars (U+FF5C) around the names, U+2581 for the spaces */
#define DS_MARK(x) "<\xef\xbd\x9ctool\xe2\x96\x81" x "\xef\xbd\x9c>"
static const char DS_CALLS_END[] = DS_MARK("calls\xe2\x96\x81" "end"),
                  DS_CALL_BEGIN[] = DS_MARK("call\xe2\x96\x81" "begin"),
                  DS_CALL_END[] = DS_MARK("call\xe2\x96\x81" "end"),
                  DS_SEP[] = DS_MARK("sep");
/* calls-begin as the R1 distills also write it (llama-server takes these too) */
static const char *const DS_OPENS[] = {
    DS_MARK("calls\xe2\x96\x81" "begin"), "<\xef\xbd\x9ctool_calls_begin\xef\xbd\x9c>",
    "<\xef\xbd\x9ctool calls begin\xef\xbd\x9c>", "<\xef\xbd\x9ctool\\_calls\\_begin\xef\xbd\x9c>",
    DS_MARK("calls"), NULL};

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

/* i less the whitespace just before it: where the content ends when a call begins at i. */
static size_t trim_back(const char *s, size_t i)
{
    while (i > 0 && ws(s[i - 1]))
        i--;
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

static const char *find(const char *s, size_t len, const char *lit)
{
    size_t k = strlen(lit);
    for (size_t i = 0; i + k <= len; i++)
        if (s[i] == lit[0] && memcmp(s + i, lit, k) == 0)
            return s + i;
    return NULL;
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

char *tc_make_id(int family, uint64_t *st)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    bool mistral = family == CHAT_MISTRAL || family == CHAT_MISTRAL3;
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

/* ---------------------------------------------------------------- the scanner
 * One pass over the text that finds each call's object, its name and its arguments value
 * without needing the text to be complete: the stream asks it after every token, and
 * tc_parse uses the same spans (then checks each object with cJSON), so the arguments a
 * stream sends piece by piece are the text a whole answer returns. */

enum { SC_OK = 0, SC_MORE = 1, SC_BAD = -1 };

typedef struct sc_call {
    tc_span_t sp;
    size_t obj_off, obj_end;    /* the call's object, when closed (obj_end > obj_off) */
} sc_call_t;

typedef struct scan {
    const char *s;
    size_t len;
    sc_call_t *calls;
    size_t n, cap;
    size_t content_len;
    bool nomem;
} scan_t;

static int scan_string(const char *s, size_t i, size_t len, size_t *end)
{
    for (size_t j = i + 1; j < len; j++) {
        if (s[j] == '\\') {
            j++;
            continue;
        }
        if (s[j] == '"') {
            *end = j + 1;
            return SC_OK;
        }
    }
    return SC_MORE;
}

/* The end of the JSON value at s[i] (brackets and strings matched; its validity is cJSON's
 * to judge once it is complete). */
static int skip_value(const char *s, size_t i, size_t len, size_t *end)
{
    char c = s[i];
    if (c == '"')
        return scan_string(s, i, len, end);
    if (c == '{' || c == '[') {
        int depth = 0;
        for (size_t j = i; j < len; j++) {
            if (s[j] == '"') {
                size_t e;
                if (scan_string(s, j, len, &e) != SC_OK)
                    return SC_MORE;
                j = e - 1;
            } else if (s[j] == '{' || s[j] == '[') {
                depth++;
            } else if ((s[j] == '}' || s[j] == ']') && --depth == 0) {
                *end = j + 1;
                return SC_OK;
            }
        }
        return SC_MORE;
    }
    if (!strchr("-0123456789tfn", c) || c == 0)
        return SC_BAD;
    size_t j = i;
    while (j < len && (isalnum((unsigned char)s[j]) || s[j] == '.' || s[j] == '+' ||
                       s[j] == '-'))
        j++;
    if (j == len)
        return SC_MORE; /* a number may go on */
    *end = j;
    return SC_OK;
}

static bool key_is(const char *s, size_t k0, size_t k1, const char *key)
{
    return key && k1 - k0 == strlen(key) && memcmp(s + k0, key, k1 - k0) == 0;
}

/* The call object at s[i] == '{': its name (a string) and its arguments (under key, or alt),
 * as far as the text goes. */
static sc_call_t *new_call(scan_t *sc)
{
    if (sc->n == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 4;
        sc_call_t *c = realloc(sc->calls, cap * sizeof *c);
        if (!c) {
            sc->nomem = true;
            return NULL;
        }
        sc->calls = c;
        sc->cap = cap;
    }
    sc_call_t *c = &sc->calls[sc->n++];
    memset(c, 0, sizeof *c);
    return c;
}

static int scan_call(scan_t *sc, size_t i, const char *key, const char *alt, size_t *end)
{
    const char *s = sc->s;
    size_t len = sc->len;
    sc_call_t *c = new_call(sc);
    if (!c)
        return SC_BAD;
    c->obj_off = i;
    i++;
    for (bool first = true;; first = false) {
        i = skip_ws(s, i, len);
        if (i == len)
            return SC_MORE;
        if (s[i] == '}' && first)
            break; /* {} */
        if (s[i] != '"')
            return SC_BAD;
        size_t k0 = i + 1, k1;
        if (scan_string(s, i, len, &i) != SC_OK)
            return SC_MORE;
        k1 = i - 1;
        i = skip_ws(s, i, len);
        if (i == len)
            return SC_MORE;
        if (s[i] != ':')
            return SC_BAD;
        i = skip_ws(s, i + 1, len);
        if (i == len)
            return SC_MORE;
        size_t e;
        int rc;
        /* a repeated key is skipped: the first one counts, as in cJSON, and what was
         * streamed of it stays right */
        if (key_is(s, k0, k1, "name") && !c->sp.name_off) {
            if (s[i] != '"')
                return SC_BAD;
            c->sp.name_off = i + 1;
            rc = scan_string(s, i, len, &e);
            c->sp.name_done = rc == SC_OK;
            c->sp.name_len = (rc == SC_OK ? e - 1 : len) - (i + 1);
        } else if ((key_is(s, k0, k1, key) || key_is(s, k0, k1, alt)) && !c->sp.args_started) {
            c->sp.args_off = i;
            c->sp.args_started = true;
            rc = skip_value(s, i, len, &e);
            c->sp.args_done = rc == SC_OK;
            c->sp.args_len = (rc == SC_OK ? e : len) - i;
        } else {
            rc = skip_value(s, i, len, &e);
        }
        if (rc != SC_OK)
            return rc;
        i = skip_ws(s, e, len);
        if (i == len)
            return SC_MORE;
        if (s[i] == '}')
            break;
        if (s[i] != ',')
            return SC_BAD;
        i++;
    }
    c->obj_end = i + 1;
    *end = i + 1;
    return SC_OK;
}

static int scan_qwen(scan_t *sc)
{
    const char *s = sc->s;
    size_t len = sc->len;
    const char *first = find(s, len, QWEN_OPEN);
    if (!first)
        return SC_OK; /* no call (yet) */
    size_t i = (size_t)(first - s);
    sc->content_len = trim_back(s, i);
    while (i < len) {
        if (!starts(s, i, len, QWEN_OPEN))
            return partial(s, i, len, QWEN_OPEN) ? SC_MORE : SC_BAD;
        i = skip_ws(s, i + strlen(QWEN_OPEN), len);
        if (i == len)
            return SC_MORE;
        if (s[i] != '{')
            return SC_BAD;
        int rc = scan_call(sc, i, "arguments", NULL, &i);
        if (rc != SC_OK)
            return rc;
        i = skip_ws(s, i, len);
        if (i == len) /* the last block may end without its closing tag (stopped there) */
            break;
        if (!starts(s, i, len, QWEN_CLOSE))
            return partial(s, i, len, QWEN_CLOSE) ? SC_MORE : SC_BAD;
        i = skip_ws(s, i + strlen(QWEN_CLOSE), len);
    }
    return SC_OK;
}

static int scan_array(scan_t *sc, size_t i);

/* Llama 3.1 (one object) and Mistral (an array of them): the call is the whole output. */
static int scan_whole(scan_t *sc, int family)
{
    /* Granite's <|tool_call|> + array is Mistral Nemo's syntax with another tag */
    bool mistral = family != CHAT_LLAMA31;
    const char *s = sc->s,
               *tag = family == CHAT_MISTRAL ? MISTRAL_TAG
                      : family == CHAT_GRANITE ? GRANITE_TAG : LLAMA_TAG;
    size_t len = sc->len;
    size_t i = skip_ws(s, 0, len);
    if (i == len)
        return SC_OK;
    /* [TOOL_CALLS] is a control token that the server's detokenizer leaves out, so the
     * array alone counts too; Llama's <|python_tag|> likewise */
    if (starts(s, i, len, tag))
        i = skip_ws(s, i + strlen(tag), len);
    else if (partial(s, i, len, tag))
        return SC_MORE;
    if (i == len)
        return SC_MORE;
    if (!mistral) {
        if (s[i] != '{')
            return SC_BAD;
        int rc = scan_call(sc, i, "parameters", "arguments", &i);
        if (rc != SC_OK)
            return rc;
        return skip_ws(s, i, len) == len ? SC_OK : SC_BAD;
    }
    return scan_array(sc, i);
}

/* A JSON array of {"name", "arguments"} call objects at s[i]: SC_OK with *end past its ']'. */
static int scan_call_list(scan_t *sc, size_t i, size_t *end)
{
    const char *s = sc->s;
    size_t len = sc->len;
    if (s[i] != '[')
        return SC_BAD;
    i++;
    for (;;) {
        i = skip_ws(s, i, len);
        if (i == len)
            return SC_MORE;
        if (s[i] != '{')
            return SC_BAD;
        int rc = scan_call(sc, i, "arguments", NULL, &i);
        if (rc != SC_OK)
            return rc;
        i = skip_ws(s, i, len);
        if (i == len)
            return SC_MORE;
        if (s[i] == ']') {
            *end = i + 1;
            return SC_OK;
        }
        if (s[i] != ',')
            return SC_BAD;
        i++;
    }
}

/* A call array at s[i], nothing but whitespace after it (Mistral Nemo, Granite, Phi-4-mini). */
static int scan_array(scan_t *sc, size_t i)
{
    int rc = scan_call_list(sc, i, &i);
    if (rc != SC_OK)
        return rc;
    return skip_ws(sc->s, i, sc->len) == sc->len ? SC_OK : SC_BAD;
}

/* s[i..) must be lit: SC_OK past it in *i, SC_MORE while the text ends inside it. */
static int expect(const char *s, size_t *i, size_t len, const char *lit)
{
    if (starts(s, *i, len, lit)) {
        *i += strlen(lit);
        return SC_OK;
    }
    return partial(s, *i, len, lit) ? SC_MORE : SC_BAD;
}

/* A call's arguments object, whitespace before it allowed, as the call's whole object (the
 * formats that write the arguments bare after the name); its end in *end once closed. */
static int scan_bare_args(const char *s, size_t i, size_t len, sc_call_t *c, size_t *end)
{
    tc_span_t *sp = &c->sp;
    i = skip_ws(s, i, len);
    if (i == len)
        return SC_MORE;
    if (s[i] != '{')
        return SC_BAD;
    size_t e;
    sp->args_off = c->obj_off = i;
    sp->args_started = true;
    int rc = skip_value(s, i, len, &e);
    sp->args_done = rc == SC_OK;
    sp->args_len = (rc == SC_OK ? e : len) - i;
    if (rc != SC_OK)
        return rc;
    c->obj_end = *end = e;
    return SC_OK;
}

/* One DeepSeek call after its call-begin marker at s[i]: R1's 'function<｜tool▁sep｜>NAME\n'
 * + '```json\n' + arguments + '\n```', or V3.1's 'NAME<｜tool▁sep｜>' + arguments.  The name
 * is raw text (no quotes), so it ends at the newline (R1) or the separator (V3.1); the
 * arguments are a JSON value whose end the brackets tell. */
static int scan_ds_call(scan_t *sc, size_t i, size_t *end)
{
    const char *s = sc->s;
    size_t len = sc->len;
    sc_call_t *c = new_call(sc);
    if (!c)
        return SC_BAD;
    tc_span_t *sp = &c->sp;
    sp->name_off = i;
    /* R1's "function" and its separator still arriving: no name yet (a V3.1 name read
     * from it would then shrink) */
    if (partial(s, i, len, "function") ||
        (starts(s, i, len, "function") && partial(s, i + 8, len, DS_SEP)))
        return SC_MORE;
    bool r1 = starts(s, i, len, "function") && starts(s, i + 8, len, DS_SEP);
    size_t j = r1 ? i + 8 + strlen(DS_SEP) : i;
    sp->name_off = j;
    while (j < len && s[j] != '\n' && s[j] != '<' && !(!r1 && ws(s[j])))
        j++;
    sp->name_len = j - sp->name_off;
    if (j == len)
        return SC_MORE;
    int rc;
    if (r1) {
        if (s[j] != '\n' || j == sp->name_off)
            return SC_BAD;
        sp->name_done = true;
        i = j + 1;
        if ((rc = expect(s, &i, len, "```json")) != SC_OK)
            return rc;
    } else {
        if (s[j] != '<' || j == sp->name_off)
            return SC_BAD;
        i = j;
        if ((rc = expect(s, &i, len, DS_SEP)) != SC_OK)
            return rc;
        sp->name_done = true;
    }
    size_t e;
    if ((rc = scan_bare_args(s, i, len, c, &e)) != SC_OK)
        return rc;
    i = skip_ws(s, e, len);
    if (r1) {
        if (i == len)
            return SC_MORE;
        if ((rc = expect(s, &i, len, "```")) != SC_OK)
            return rc;
        i = skip_ws(s, i, len);
    }
    *end = i;
    return SC_OK;
}

/* DeepSeek R1 / V3 / V3.1: optional text, then calls-begin, call-begin + call + call-end for
 * each call (whitespace between them), calls-end.  The text may stop after a whole call
 * before its end markers (the model ended there). */
/* The first of the markers in s[0..len) (its length in *k), or NULL. */
static const char *find_any(const char *s, size_t len, const char *const *marks, size_t *k)
{
    const char *best = NULL;
    for (size_t m = 0; marks[m]; m++) {
        size_t n = best ? FD_MIN(len, (size_t)(best - s) + strlen(marks[m])) : len;
        const char *p = find(s, n, marks[m]);
        if (p && (!best || p < best)) {
            best = p;
            *k = strlen(marks[m]);
        }
    }
    return best;
}

static int scan_deepseek(scan_t *sc)
{
    const char *s = sc->s;
    size_t len = sc->len, k = 0;
    const char *first = find_any(s, len, DS_OPENS, &k);
    if (!first)
        return SC_OK; /* no call (yet) */
    size_t i = (size_t)(first - s);
    sc->content_len = trim_back(s, i);
    i += k;
    for (;;) {
        i = skip_ws(s, i, len);
        if (i == len)
            return SC_OK;
        if (starts(s, i, len, DS_CALLS_END))
            return skip_ws(s, i + strlen(DS_CALLS_END), len) == len ? SC_OK : SC_BAD;
        int rc = expect(s, &i, len, DS_CALL_BEGIN);
        /* the distills may leave call-begin out before "function<｜tool▁sep｜>" */
        if (rc == SC_BAD && (starts(s, i, len, "function") || partial(s, i, len, "function")))
            rc = SC_OK;
        if (rc != SC_OK)
            return rc == SC_MORE || partial(s, i, len, DS_CALLS_END) ? SC_MORE : SC_BAD;
        if ((rc = scan_ds_call(sc, i, &i)) != SC_OK)
            return rc;
        if (i == len)
            return SC_OK;
        if ((rc = expect(s, &i, len, DS_CALL_END)) != SC_OK)
            return rc;
    }
}

/* mistral3's names: what the requests allow (letters, digits, '_', '-') and '.' */
static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.';
}

/* Where mistral3's calls begin: at the first visible character when the text opens with
 * [TOOL_CALLS] (or a part of it) or with a name run that ends the text or meets '{' / '['
 * (the detokenizer leaves the control tokens [TOOL_CALLS] and [ARGS] out, so a call may be
 * just "name{...}"); else at the first [TOOL_CALLS] after prose, or nowhere (len). */
static size_t m3_start(const char *s, size_t len, bool *at_front)
{
    size_t i = skip_ws(s, 0, len);
    *at_front = true;
    if (i == len || starts(s, i, len, MISTRAL_TAG) || partial(s, i, len, MISTRAL_TAG))
        return i;
    size_t j = i;
    while (j < len && name_char(s[j]))
        j++;
    if (j > i && (j == len || s[j] == '{' || s[j] == '['))
        return i;
    *at_front = false;
    const char *m = find(s, len, MISTRAL_TAG);
    return m ? (size_t)(m - s) : len;
}

/* Mistral Small 3.2 / Devstral: each call '[TOOL_CALLS]' + name + '[ARGS]' + arguments
 * (markers optional, as above; a '[CALL_ID]' + id before '[ARGS]' is taken too). */
static int scan_mistral3(scan_t *sc)
{
    const char *s = sc->s;
    size_t len = sc->len;
    bool front;
    size_t i = m3_start(s, len, &front);
    if (i == len)
        return SC_OK; /* no call (yet) */
    sc->content_len = front ? 0 : trim_back(s, i);
    for (;;) {
        i = skip_ws(s, i, len);
        if (i == len)
            return SC_OK;
        if (starts(s, i, len, MISTRAL_TAG))
            i += strlen(MISTRAL_TAG);
        else if (partial(s, i, len, MISTRAL_TAG))
            return SC_MORE;
        size_t j = i;
        while (j < len && name_char(s[j]))
            j++;
        if (j == len)
            return SC_MORE; /* the name may go on (a call appears once it ends) */
        if (j == i)
            return SC_BAD;
        sc_call_t *call = new_call(sc);
        if (!call)
            return SC_BAD;
        tc_span_t *sp = &call->sp;
        sp->name_off = i;
        sp->name_len = j - i;
        if (s[j] == '[') {
            if (partial(s, j, len, "[CALL_ID]"))
                return SC_MORE;
            if (starts(s, j, len, "[CALL_ID]")) {
                j += strlen("[CALL_ID]");
                while (j < len && isalnum((unsigned char)s[j]))
                    j++;
                if (j == len)
                    return SC_MORE;
            }
            int rc = expect(s, &j, len, "[ARGS]");
            if (rc != SC_OK)
                return rc;
        } else if (s[j] != '{') {
            return SC_BAD;
        }
        sp->name_done = true;
        int rc = scan_bare_args(s, j, len, call, &i);
        if (rc != SC_OK)
            return rc;
    }
}

/* Where Phi-4-mini's calls begin: at the first visible character when the text opens with
 * its <|tool_call|> tag (or a part of it) or with '[' followed by '{' or nothing yet (that
 * tag is a control token the detokenizer leaves out: the model's documented
 * "functools[...]" then also comes as a bare array); else at the first "functools[" after
 * prose, or nowhere (len). */
static size_t phi4_start(const char *s, size_t len, bool *at_front)
{
    size_t i = skip_ws(s, 0, len);
    *at_front = true;
    if (i == len || starts(s, i, len, GRANITE_TAG) || partial(s, i, len, GRANITE_TAG))
        return i;
    if (s[i] == '[') {
        size_t j = skip_ws(s, i + 1, len);
        if (j == len || s[j] == '{')
            return i;
    }
    *at_front = false;
    const char *m = find(s, len, PHI4_OPEN);
    return m ? (size_t)(m - s) : len;
}

/* Phi-4-mini: optional text, then "functools" + the array of {"name", "arguments"} calls;
 * or, as the whole output, the array after an optional <|tool_call|>. */
static int scan_phi4(scan_t *sc)
{
    const char *s = sc->s;
    size_t len = sc->len;
    bool front;
    size_t i = phi4_start(s, len, &front);
    if (i == len)
        return SC_OK; /* no call (yet) */
    if (!front) {
        sc->content_len = trim_back(s, i);
        return scan_array(sc, i + strlen(PHI4_OPEN) - 1);
    }
    if (starts(s, i, len, GRANITE_TAG))
        i = skip_ws(s, i + strlen(GRANITE_TAG), len);
    else if (partial(s, i, len, GRANITE_TAG))
        return SC_MORE;
    return i == len ? SC_MORE : scan_array(sc, i);
}

/* gpt-oss: the reasoning splitter (reasoning.h, harmony) passes each call message on as
 * GPTOSS_MARK + NAME + ' <|constrain|>json<|message|>' + arguments, whatever header the
 * model wrote, and chat_tool_prefill opens a forced call the same way; the content it sends
 * (final and commentary messages) comes before.  The header's rest may be any
 * ' [<|constrain|>]TYPE' (a forced call's model writes its own). */
static const char GPTOSS_MARK[] = "<|channel|>commentary to=functions.";

static bool gptoss_type_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

static int scan_gptoss(scan_t *sc)
{
    const char *s = sc->s;
    size_t len = sc->len;
    const char *m = find(s, len, GPTOSS_MARK);
    if (!m)
        return SC_OK; /* no call (yet) */
    size_t i = (size_t)(m - s);
    sc->content_len = trim_back(s, i);
    for (;;) {
        int rc = expect(s, &i, len, GPTOSS_MARK);
        if (rc != SC_OK)
            return rc;
        size_t j = i; /* the name: [^<\s]+, as llama.cpp's recipient */
        while (j < len && s[j] != '<' && !ws(s[j]))
            j++;
        if (j == i)
            return i == len ? SC_MORE : SC_BAD;
        sc_call_t *call = new_call(sc);
        if (!call)
            return SC_BAD;
        call->sp.name_off = i;
        call->sp.name_len = j - i;
        if (j == len)
            return SC_MORE;
        call->sp.name_done = true;
        if (s[j] == ' ') {
            j++;
            if (partial(s, j, len, "<|constrain|>"))
                return SC_MORE;
            if (starts(s, j, len, "<|constrain|>"))
                j += strlen("<|constrain|>");
            while (j < len && gptoss_type_char(s[j]))
                j++;
        }
        if ((rc = expect(s, &j, len, "<|message|>")) != SC_OK)
            return rc;
        if ((rc = scan_bare_args(s, j, len, call, &i)) != SC_OK)
            return rc;
        i = skip_ws(s, i, len);
        if (i == len)
            return SC_OK;
    }
}

/* The generic answer's opening: '{', whitespace, its one key.  SC_OK with the key's span
 * and i past the ':' and the whitespace after it; SC_MORE while it is still arriving. */
static int generic_key(const char *s, size_t len, size_t *k0, size_t *k1, size_t *i)
{
    size_t j = skip_ws(s, 0, len);
    if (j == len)
        return SC_MORE;
    if (s[j] != '{')
        return SC_BAD;
    j = skip_ws(s, j + 1, len);
    if (j == len)
        return SC_MORE;
    if (s[j] != '"')
        return SC_BAD;
    size_t e;
    if (scan_string(s, j, len, &e) != SC_OK)
        return SC_MORE;
    *k0 = j + 1;
    *k1 = e - 1;
    j = skip_ws(s, e, len);
    if (j == len)
        return SC_MORE;
    if (s[j] != ':')
        return SC_BAD;
    *i = skip_ws(s, j + 1, len);
    return SC_OK;
}

/* The object's end: whitespace, '}', whitespace, nothing else. */
static int generic_end(const char *s, size_t i, size_t len)
{
    i = skip_ws(s, i, len);
    if (i == len)
        return SC_MORE;
    if (s[i] != '}')
        return SC_BAD;
    return skip_ws(s, i + 1, len) == len ? SC_OK : SC_BAD;
}

/* llama-server's generic answer: {"tool_call": CALL}, {"tool_calls": [CALL, ...]} or
 * {"response": ...} (no calls: tc_generic_content reads it). */
static int scan_generic(scan_t *sc)
{
    const char *s = sc->s;
    size_t len = sc->len, k0, k1, i;
    int rc = generic_key(s, len, &k0, &k1, &i);
    if (rc != SC_OK)
        return rc == SC_MORE && skip_ws(s, 0, len) == len ? SC_OK : rc;
    if (i == len)
        return SC_MORE;
    if (key_is(s, k0, k1, "response"))
        return SC_BAD; /* content, not calls */
    if (key_is(s, k0, k1, "tool_call")) {
        if (s[i] != '{')
            return SC_BAD;
        if ((rc = scan_call(sc, i, "arguments", NULL, &i)) != SC_OK)
            return rc;
        return generic_end(s, i, len);
    }
    if (!key_is(s, k0, k1, "tool_calls"))
        return SC_BAD;
    if ((rc = scan_call_list(sc, i, &i)) != SC_OK)
        return rc;
    return generic_end(s, i, len);
}

static int scan_text(int family, const char *text, size_t len, scan_t *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->s = text;
    sc->len = len;
    switch (family) {
    case CHAT_QWEN:
    case CHAT_QWEN3: return scan_qwen(sc);
    case CHAT_LLAMA31:
    case CHAT_MISTRAL:
    case CHAT_GRANITE: return scan_whole(sc, family);
    case CHAT_DEEPSEEK_R1: return scan_deepseek(sc);
    case CHAT_MISTRAL3: return scan_mistral3(sc);
    case CHAT_PHI4MINI: return scan_phi4(sc);
    case CHAT_GPTOSS: return scan_gptoss(sc);
    case TC_GENERIC: return scan_generic(sc);
    default: return SC_BAD;
    }
}

int tc_scan(int family, const char *text, size_t len, tc_span_t *spans, size_t max,
            size_t *n)
{
    *n = 0;
    if (!chat_has_tools(family) && family != TC_GENERIC)
        return -ENOTSUP;
    scan_t sc;
    int rc = scan_text(family, text, len, &sc);
    for (size_t k = 0; k < sc.n && k < max; k++)
        spans[(*n)++] = sc.calls[k].sp;
    free(sc.calls);
    if (sc.nomem)
        return -ENOMEM;
    return rc == SC_BAD ? -ENOENT : 0;
}

/* The name as written is one of the offered functions. */
static const char *offered(const char *s, const tc_span_t *sp, char *const *names, int n)
{
    for (int k = 0; k < n; k++)
        if (strlen(names[k]) == sp->name_len &&
            memcmp(names[k], s + sp->name_off, sp->name_len) == 0)
            return names[k];
    return NULL;
}

/* A complete call: its object is JSON, its name an offered function, its arguments an
 * object. */
static bool call_ok(const char *s, const sc_call_t *c, char *const *names, int n_names)
{
    if (c->obj_end <= c->obj_off || !c->sp.name_done || !c->sp.args_done ||
        !offered(s, &c->sp, names, n_names))
        return false;
    /* cJSON reads a NUL byte as whitespace; arguments go out as a C string */
    if (memchr(s + c->obj_off, 0, c->obj_end - c->obj_off))
        return false;
    cJSON *o = cJSON_ParseWithLength(s + c->obj_off, c->obj_end - c->obj_off);
    cJSON *a = cJSON_ParseWithLength(s + c->sp.args_off, c->sp.args_len);
    bool ok = cJSON_IsObject(o) && cJSON_IsObject(a);
    cJSON_Delete(o);
    cJSON_Delete(a);
    return ok;
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
    if (!chat_has_tools(family) && family != TC_GENERIC)
        return -ENOTSUP;
    scan_t sc;
    int rc = scan_text(family, text, len, &sc);
    if (sc.nomem) {
        free(sc.calls);
        return -ENOMEM;
    }
    bool ok = rc == SC_OK && sc.n > 0;
    for (size_t k = 0; ok && k < sc.n; k++)
        ok = call_ok(text, &sc.calls[k], names, n_names);
    size_t n = parallel ? sc.n : FD_MIN(sc.n, 1);
    if (ok && !(out->calls = calloc(n, sizeof *out->calls)))
        rc = -ENOMEM;
    uint64_t st = seed;
    for (size_t k = 0; ok && out->calls && k < n; k++) {
        const tc_span_t *sp = &sc.calls[k].sp;
        tc_call_t *c = &out->calls[out->n_calls++];
        c->id = tc_make_id(family, &st);
        c->name = strdup(offered(text, sp, names, n_names));
        c->arguments = strndup(text + sp->args_off, sp->args_len);
        if (!c->id || !c->name || !c->arguments)
            rc = -ENOMEM;
    }
    out->content_len = sc.content_len;
    free(sc.calls);
    if (rc == -ENOMEM || !ok) {
        tc_free(out);
        return rc == -ENOMEM ? -ENOMEM : -ENOENT;
    }
    return 0;
}

/* Qwen, DeepSeek, mistral3, Phi-4-mini: the text before the calls' opening marker (any of
 * marks) is content. */
static size_t safe_before_any(const char *s, size_t len, const char *const *marks)
{
    size_t safe = len;
    for (size_t m = 0; marks[m]; m++) {
        const char *mark = marks[m];
        size_t k0 = strlen(mark);
        const char *open = find(s, len, mark);
        size_t here = open ? (size_t)(open - s) : len;
        /* hold a tail that could be the marker's beginning */
        for (size_t k = open ? 0 : FD_MIN(len, k0 - 1); k > 0; k--) {
            if (memcmp(s + len - k, mark, k) == 0) {
                here = len - k;
                break;
            }
        }
        safe = FD_MIN(safe, here);
    }
    /* and the whitespace before it, which tc_parse leaves out of the content when a call
     * follows: streamed and whole answers then carry the same text */
    return trim_back(s, safe);
}

static size_t safe_before(const char *s, size_t len, const char *mark)
{
    const char *marks[] = {mark, NULL};
    return safe_before_any(s, len, marks);
}

size_t tc_stream_safe(int family, const char *s, size_t len)
{
    if (family == CHAT_QWEN || family == CHAT_QWEN3)
        return safe_before(s, len, QWEN_OPEN);
    if (family == CHAT_DEEPSEEK_R1)
        return safe_before_any(s, len, DS_OPENS);
    if (family == CHAT_GPTOSS)
        return safe_before(s, len, GPTOSS_MARK);
    if (family == TC_GENERIC)
        return 0; /* JSON throughout: its content is tc_generic_content's */
    if (family == CHAT_MISTRAL3) {
        bool front;
        m3_start(s, len, &front);
        return front ? 0 : safe_before(s, len, MISTRAL_TAG);
    }
    if (family == CHAT_PHI4MINI) {
        bool front;
        phi4_start(s, len, &front);
        return front ? 0 : safe_before(s, len, PHI4_OPEN);
    }
    /* Llama 3.1, Mistral and Granite: a call is the whole output, so the first visible character
     * decides: until it comes nothing is sent, after a call's opening everything is held */
    size_t i = skip_ws(s, 0, len);
    if (i == len)
        return 0;
    if (family == CHAT_LLAMA31)
        return s[i] == '{' || starts(s, i, len, LLAMA_TAG) || partial(s, i, len, LLAMA_TAG)
                   ? 0 : len;
    if (family == CHAT_MISTRAL || family == CHAT_GRANITE) {
        const char *tag = family == CHAT_MISTRAL ? MISTRAL_TAG : GRANITE_TAG;
        if (starts(s, i, len, tag) || partial(s, i, len, tag))
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

/* ---------------------------------------------------------------- the generic format */

static void put_utf8(char *o, size_t *n, uint32_t cp)
{
    if (cp < 0x80) {
        o[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*n)++] = (char)(0xC0 | cp >> 6);
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        o[(*n)++] = (char)(0xE0 | cp >> 12);
        o[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        o[(*n)++] = (char)(0xF0 | cp >> 18);
        o[(*n)++] = (char)(0x80 | (cp >> 12 & 0x3F));
        o[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
}

/* Four hex digits at s[i]: the value, or -1 (not hex), -2 (the text ends first). */
static long hex4(const char *s, size_t i, size_t len)
{
    long v = 0;
    for (size_t k = 0; k < 4; k++) {
        if (i + k >= len)
            return -2;
        int h = fd_hex_digit((uint8_t)s[i + k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

int tc_generic_content(const char *s, size_t len, char **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    size_t k0, k1, i;
    if (generic_key(s, len, &k0, &k1, &i) != SC_OK || !key_is(s, k0, k1, "response") ||
        i == len || s[i] != '"')
        return -ENOENT;
    char *o = malloc(len - i + 1); /* decoding never lengthens */
    if (!o)
        return -ENOMEM;
    size_t m = 0;
    bool closed = false;
    for (i++; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            closed = true;
            i++;
            break;
        }
        if (c < 0x20 || c == 0)
            goto bad;
        if (c != '\\') {
            o[m++] = (char)c;
            continue;
        }
        if (i + 1 == len)
            break; /* the escape is still arriving */
        char e = s[++i];
        const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
        const char *p = e ? strchr(from, e) : NULL;
        if (p) {
            o[m++] = to[p - from];
            continue;
        }
        if (e != 'u')
            goto bad;
        long cp = hex4(s, i + 1, len);
        if (cp == -2)
            break;
        if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
            goto bad;
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) { /* a high surrogate: its low half must follow */
            if (i + 1 == len)
                break;
            if (s[i + 1] != '\\')
                goto bad;
            if (i + 2 == len)
                break;
            if (s[i + 2] != 'u')
                goto bad;
            long lo = hex4(s, i + 3, len);
            if (lo == -2)
                break;
            if (lo < 0xDC00 || lo > 0xDFFF)
                goto bad;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            i += 6;
        }
        if (cp == 0)
            goto bad; /* the content goes out as a C string */
        put_utf8(o, &m, (uint32_t)cp);
    }
    if (closed && generic_end(s, i, len) == SC_BAD)
        goto bad;
    /* a multi-byte character cut by the text's end is held back like an escape */
    size_t keep = m, back = 0;
    while (back < 3 && back < keep && ((unsigned char)o[keep - 1 - back] & 0xC0) == 0x80)
        back++;
    if (back < keep) {
        unsigned char lead = (unsigned char)o[keep - 1 - back];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (need > back + 1)
            keep -= back + 1;
    }
    o[keep] = 0;
    *out = o;
    *n = keep;
    return 0;
bad:
    free(o);
    return -ENOENT;
}

/* A call's object for one function: {"name": "<name>", "arguments": <its schema>[, "id":
 * string]}; its name's JSON text in tag. */
static int generic_call_node(gr_build_t *b, const cJSON *fn, bool parallel, char **tag,
                             int *node)
{
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fn, "name"),
                *pa = cJSON_GetObjectItemCaseSensitive(fn, "parameters");
    if (!cJSON_IsString(nm))
        return -EINVAL;
    if (!(*tag = cJSON_PrintUnformatted(nm)))
        return -ENOMEM;
    size_t tl = strlen(*tag);
    const char *lt[] = { *tag };
    int lit = gr_node_literals(b, 1, lt, &tl);
    if (lit < 0)
        return lit;
    int args = -1;
    char err[160], path[96];
    if (cJSON_IsObject(pa) && pa->child) {
        int rc = sch_compile_node(b, pa, &args, err, sizeof err, path, sizeof path);
        if (rc == -ENOMEM)
            return rc;
        if (rc < 0)
            args = -1; /* outside the subset: any object, the call only as good as the model */
    }
    if (args < 0) {
        int any = gr_node_any(b);
        if (any < 0)
            return any;
        if ((args = gr_node_object(b, 0, NULL, NULL, NULL, any)) < 0)
            return args;
    }
    static const char *const keys[] = { "name", "arguments", "id" };
    static const bool req[] = { true, true, true };
    int id = parallel ? gr_node_string(b) : 0;
    if (id < 0)
        return id;
    int values[] = { lit, args, id };
    int o = gr_node_object(b, parallel ? 3 : 2, keys, values, req, -1);
    if (o < 0)
        return o;
    *node = o;
    return 0;
}

int tc_generic_grammar(const char *tools, bool parallel, bool required, const char *name,
                       struct gr_spec **out, char *err, size_t errlen)
{
    *out = NULL;
    cJSON *t = tools ? cJSON_Parse(tools) : NULL;
    if (!cJSON_IsArray(t)) {
        cJSON_Delete(t);
        snprintf(err, errlen, "the tools are not a JSON array");
        return -EINVAL;
    }
    int n = cJSON_GetArraySize(t), k = 0, rc = 0;
    gr_build_t *b = NULL;
    char **tags = calloc((size_t)FD_MAX(n, 1), sizeof *tags);
    size_t *lens = calloc((size_t)FD_MAX(n, 1), sizeof *lens);
    int *objs = calloc((size_t)FD_MAX(n, 1), sizeof *objs);
    if (!tags || !lens || !objs || gr_build_new(&b) < 0) {
        rc = -ENOMEM;
        goto out;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, t)
    {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(it, "function"),
                    *nm = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!cJSON_IsString(nm)) {
            snprintf(err, errlen, "a tool without a function name");
            rc = -EINVAL;
            goto out;
        }
        if (name && strcmp(nm->valuestring, name) != 0)
            continue;
        if ((rc = generic_call_node(b, fn, parallel, &tags[k], &objs[k])) < 0) {
            if (rc == -EINVAL)
                snprintf(err, errlen, "a tool without a function name");
            goto out;
        }
        lens[k] = strlen(tags[k]);
        k++;
    }
    if (k == 0) {
        snprintf(err, errlen, "no function to call");
        rc = -EINVAL;
        goto out;
    }
    int call = gr_node_tagged(b, k, (const char *const *)tags, lens, objs, err, errlen);
    if (call < 0) {
        rc = call;
        goto out;
    }
    int calls = parallel ? gr_node_array(b, call, 1, -1) : call;
    if (calls < 0) {
        rc = calls;
        goto out;
    }
    const char *keys[] = { parallel ? "tool_calls" : "tool_call", "response" };
    int values[] = { calls, gr_node_string(b) };
    int top = values[1] < 0 ? values[1] : gr_node_object_one(b, required ? 1 : 2, keys, values);
    if (top < 0) {
        rc = top;
        goto out;
    }
    rc = gr_build_finish(b, top, out, err, errlen);
out:
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    for (int i = 0; tags && i < k; i++)
        free(tags[i]);
    if (tags && k < n)
        free(tags[k]); /* a call node that failed after its tag */
    free(tags);
    free(lens);
    free(objs);
    gr_build_free(b);
    cJSON_Delete(t);
    return rc;
}
