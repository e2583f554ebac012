/* chat.c: one formatter per chat-template family.  Each function below follows its Jinja
 * template statement by statement (the templates are in ../shared/chat-templates, or quoted
 * where shared has none), with add_generation_prompt, and with tools for the three families
 * whose templates have them; the refusals (raise_exception) become -EINVAL with the
 * template's own message.  tojson is Python's json.dumps(ensure_ascii=False), as transformers
 * registers it (not Jinja's own HTML-safe, key-sorting filter). */
#include "config.h"

#include "server/chat.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fd.h"
#include "engine/unicode.h"
#include "server/jinja.h"

static const char *const family_names[CHAT_N_FAMILIES] = {
    [CHAT_PLAIN] = "plain",   [CHAT_LLAMA2] = "llama2",   [CHAT_LLAMA3] = "llama3",
    [CHAT_LLAMA31] = "llama3.1", [CHAT_CHATML] = "chatml", [CHAT_QWEN] = "qwen",
    [CHAT_MISTRAL] = "mistral", [CHAT_GEMMA] = "gemma",   [CHAT_PHI3] = "phi3",
    [CHAT_ZEPHYR] = "zephyr", [CHAT_QWEN3] = "qwen3", [CHAT_DEEPSEEK_R1] = "deepseek-r1",
    [CHAT_MISTRAL3] = "mistral3", [CHAT_GRANITE] = "granite", [CHAT_PHI4MINI] = "phi4-mini",
    [CHAT_GPTOSS] = "gpt-oss", [CHAT_JINJA] = "jinja",
};

static const char *const role_names[] = {"system", "user", "assistant", "tool"};

int chat_role_from_name(const char *name)
{
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, role_names[i]) == 0)
            return i;
    return -EINVAL;
}

const char *chat_role_name(int role)
{
    return role >= 0 && role < 4 ? role_names[role] : "?";
}

int chat_family_from_name(const char *name)
{
    for (int i = 0; name && i < CHAT_N_FAMILIES; i++)
        if (strcmp(name, family_names[i]) == 0)
            return i;
    return -EINVAL;
}

const char *chat_family_name(int family)
{
    return family >= 0 && family < CHAT_N_FAMILIES ? family_names[family] : "?";
}

static bool has(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    if (k > n)
        return false;
    for (size_t i = 0; i + k <= n; i++)
        if (s[i] == needle[0] && memcmp(s + i, needle, k) == 0)
            return true;
    return false;
}

int chat_detect(const char *t, size_t n)
{
    if (!t || n == 0)
        return CHAT_PLAIN;
    /* DeepSeek's full-width turn markers; no other family's template has them */
    if (has(t, n, "<\xef\xbd\x9cUser\xef\xbd\x9c>") &&
        has(t, n, "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"))
        return CHAT_DEEPSEEK_R1;
    if (has(t, n, "<|start_of_role|>") && has(t, n, "<|end_of_role|>"))
        return CHAT_GRANITE;
    /* harmony's channels (llama.cpp tells gpt-oss by this marker alone) */
    if (has(t, n, "<|channel|>"))
        return CHAT_GPTOSS;
    /* most specific markers first: several families share [INST] or <|user|> */
    if (has(t, n, "<|im_start|>")) {
        if (has(t, n, "You are Qwen, created by Alibaba Cloud"))
            return CHAT_QWEN;
        /* Qwen3's reasoning blocks (its enable_thinking switch, or <think> in the history) */
        if (has(t, n, "enable_thinking") || has(t, n, "<think>"))
            return CHAT_QWEN3;
        return CHAT_CHATML;
    }
    if (has(t, n, "<|start_header_id|>"))
        return has(t, n, "Cutting Knowledge Date") ? CHAT_LLAMA31 : CHAT_LLAMA3;
    if (has(t, n, "<start_of_turn>"))
        return CHAT_GEMMA;
    /* Phi-4-mini's tools markers; Phi-3's turns have the same names, with newlines */
    if (has(t, n, "<|tool|>") && has(t, n, "<|/tool|>") && has(t, n, "<|end|>"))
        return CHAT_PHI4MINI;
    if (has(t, n, "<|assistant|>") && has(t, n, "<|end|>"))
        return CHAT_PHI3;
    if (has(t, n, "<|user|>"))
        return CHAT_ZEPHYR;
    /* Mistral's newer call syntax, [TOOL_CALLS]name[ARGS]{...} */
    if (has(t, n, "[INST]") && has(t, n, "[ARGS]") && has(t, n, "[SYSTEM_PROMPT]"))
        return CHAT_MISTRAL3;
    if (has(t, n, "[INST]"))
        return has(t, n, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    return -ENOENT;
}

int chat_select(const char *override, const char *tmpl, size_t len, int *family,
                const char **note)
{
    if (override && *override && strcmp(override, "auto") != 0) {
        int f = chat_family_from_name(override);
        if (f < 0) {
            *note = "unknown chat format name";
            return -EINVAL;
        }
        *family = f;
        *note = "chat format set by configuration";
        return 0;
    }
    int f = chat_detect(tmpl, len);
    if (f == -ENOENT) {
        *family = CHAT_PLAIN;
        *note = "chat template not recognised: plain fallback format";
    } else {
        *family = f;
        *note = f == CHAT_PLAIN ? "model has no chat template: plain fallback format"
                                : "chat format detected from the model's template";
    }
    return 0;
}

/* ---------------------------------------------------------------- output buffer */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool failed;
} buf_t;

static void put(buf_t *b, const char *s, size_t n)
{
    if (b->failed || n == 0)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->len + n + 1) {
            if (nc > SIZE_MAX / 2) {
                b->failed = true;
                return;
            }
            nc *= 2;
        }
        char *q = realloc(b->p, nc);
        if (!q) {
            b->failed = true;
            return;
        }
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf_t *b, const char *s)
{
    if (s)
        put(b, s, strlen(s));
}

static void put_content(buf_t *b, const chat_msg_t *m)
{
    put(b, m->content, m->len);
}

/* Python's str.isspace (Jinja's trim is str.strip): White_Space plus U+001C..U+001F. */
static bool py_space(uint32_t cp)
{
    return uni_is_space(cp) || (cp >= 0x1C && cp <= 0x1F);
}

static void put_trimmed(buf_t *b, const char *text, size_t len)
{
    const uint8_t *s = (const uint8_t *)text;
    size_t a = 0, e = len;
    while (a < e) {
        uint32_t cp;
        int k = uni_scan(s + a, e - a, &cp);
        if (k <= 0 || !py_space(cp))
            break;
        a += (size_t)k;
    }
    while (e > a) {
        /* step back to the start of the last character */
        size_t st = e - 1;
        while (st > a && e - st < 4 && (s[st] & 0xC0) == 0x80)
            st--;
        uint32_t cp;
        int k = uni_scan(s + st, e - st, &cp);
        if (k <= 0 || (size_t)k != e - st || !py_space(cp))
            break;
        e = st;
    }
    put(b, text + a, e - a);
}

static void put_content_trimmed(buf_t *b, const chat_msg_t *m)
{
    put_trimmed(b, m->content, m->len);
}

/* ---------------------------------------------------------------- Python's json.dumps */

/* A JSON string as json.dumps writes it with ensure_ascii=False: the two-character escapes
 * for " \\ \n \r \t \b \f, \u00XX for the other control characters, everything else raw. */
static void pj_string(buf_t *b, const char *s)
{
    puts_(b, "\"");
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        const char *esc = NULL;
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default: break;
        }
        if (esc) {
            puts_(b, esc);
        } else if (c < 0x20) {
            char u[8];
            snprintf(u, sizeof u, "\\u%04x", c);
            puts_(b, u);
        } else {
            put(b, p, 1);
        }
    }
    puts_(b, "\"");
}

/* A number as Python prints it.  json.loads makes an int of a number written without '.',
 * 'e' or 'E' (printed back digit for digit, any size) and a float of the others (printed as
 * the shortest repr that reads back to the same double: "1.0", "1e-05", "1e+16").  lexeme is
 * the number as the JSON text wrote it (pj_lexemes); without it an integral value below
 * 2^53 counts as an int. */
static void pj_number(buf_t *b, double d, const char *lexeme)
{
    char t[40];
    bool is_float = lexeme ? strpbrk(lexeme, ".eE") != NULL
                           : !(d == floor(d) && fabs(d) < 9007199254740992.0);
    if (!isfinite(d)) {
        puts_(b, isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (!is_float) {
        if (lexeme) {
            bool zero = strspn(lexeme + (lexeme[0] == '-'), "0") ==
                        strlen(lexeme + (lexeme[0] == '-'));
            puts_(b, zero ? "0" : lexeme); /* int("-0") is 0 */
        } else {
            snprintf(t, sizeof t, "%.0f", d);
            puts_(b, t);
        }
        return;
    }
    /* the shortest digits that read back, from %.Ne */
    for (int prec = 0; prec <= 16; prec++) {
        snprintf(t, sizeof t, "%.*e", prec, d);
        if (strtod(t, NULL) == d)
            break;
    }
    char *e = strchr(t, 'e');
    int ex = atoi(e + 1);
    *e = 0;
    bool neg = t[0] == '-';
    char dig[24];
    int nd = 0;
    for (const char *q = t + neg; *q && nd < 23; q++)
        if (*q != '.')
            dig[nd++] = *q;
    dig[nd] = 0;
    if (neg)
        puts_(b, "-");
    if (ex >= -4 && ex < 16) {
        if (ex < 0) {
            puts_(b, "0.");
            for (int i = 0; i < -ex - 1; i++)
                puts_(b, "0");
            puts_(b, dig);
        } else {
            for (int i = 0; i <= ex; i++)
                put(b, i < nd ? &dig[i] : "0", 1);
            puts_(b, ".");
            puts_(b, nd > ex + 1 ? &dig[ex + 1] : "0");
        }
    } else {
        put(b, dig, 1);
        if (nd > 1) {
            puts_(b, ".");
            puts_(b, dig + 1);
        }
        snprintf(t, sizeof t, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
        puts_(b, t);
    }
}

static void pj_indent(buf_t *b, int indent, int level)
{
    puts_(b, "\n");
    for (int i = 0; i < indent * level; i++)
        puts_(b, " ");
}

/* json.dumps(v, ensure_ascii=False, indent=indent): separators ", " and ": " on one line
 * (indent < 0), "," and ": " with newlines when indented; empty containers are [] and {}. */
static void pj_value(buf_t *b, const cJSON *v, int indent, int level)
{
    if (cJSON_IsNull(v)) {
        puts_(b, "null");
    } else if (cJSON_IsBool(v)) {
        puts_(b, cJSON_IsTrue(v) ? "true" : "false");
    } else if (cJSON_IsNumber(v)) {
        pj_number(b, v->valuedouble, v->valuestring);
    } else if (cJSON_IsString(v)) {
        pj_string(b, v->valuestring);
    } else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        bool obj = cJSON_IsObject(v);
        puts_(b, obj ? "{" : "[");
        for (const cJSON *it = v->child; it; it = it->next) {
            if (indent >= 0)
                pj_indent(b, indent, level + 1);
            if (obj) {
                pj_string(b, it->string ? it->string : "");
                puts_(b, ": ");
            }
            pj_value(b, it, indent, level + 1);
            if (it->next)
                puts_(b, indent >= 0 ? "," : ", ");
        }
        if (indent >= 0 && v->child)
            pj_indent(b, indent, level);
        puts_(b, obj ? "}" : "]");
    }
}

/* Gives each number of the tree parsed from text its lexeme (in valuestring, which cJSON
 * leaves unused for numbers and frees with the node): the numbers come in the same order
 * in the text as in a pre-order walk of the tree. */
static void pj_assign(cJSON *v, const char **lex, const size_t *lens, size_t n, size_t *k,
                      bool *ok)
{
    for (; v && *ok; v = v->next) {
        if (cJSON_IsNumber(v)) {
            if (*k >= n || !(v->valuestring = strndup(lex[*k], lens[*k]))) {
                *ok = false;
                return;
            }
            (*k)++;
        } else if (v->child) {
            pj_assign(v->child, lex, lens, n, k, ok);
        }
    }
}

static cJSON *pj_parse(const char *text)
{
    cJSON *v = cJSON_Parse(text);
    if (!v)
        return NULL;
    size_t cap = 0, n = 0;
    for (const char *p = text; *p; p++) /* an upper bound on the numbers */
        cap += *p >= '0' && *p <= '9' && (p == text || !(p[-1] >= '0' && p[-1] <= '9'));
    const char **lex = malloc((cap ? cap : 1) * sizeof *lex);
    size_t *lens = malloc((cap ? cap : 1) * sizeof *lens);
    bool ok = lex && lens;
    for (const char *p = text; ok && *p; p++) {
        if (*p == '"') { /* skip the string */
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (!*p)
                break;
        } else if ((*p >= '0' && *p <= '9') || *p == '-') {
            size_t len = strspn(p, "0123456789+-.eE");
            if (n < cap) {
                lex[n] = p;
                lens[n++] = len;
            }
            p += len - 1;
        }
    }
    size_t k = 0;
    if (ok) {
        /* the root itself may be a number */
        cJSON head = {.next = NULL, .child = v};
        pj_assign(&head, lex, lens, n, &k, &ok);
        ok = ok && k == n;
    }
    if (!ok) { /* no lexemes rather than wrong ones */
        cJSON_Delete(v);
        v = cJSON_Parse(text);
    }
    free(lex);
    free(lens);
    return v;
}

int chat_pyjson(const char *json, int indent, char **out)
{
    *out = NULL;
    cJSON *v = json ? pj_parse(json) : NULL;
    if (!v)
        return -EINVAL;
    buf_t b = {0};
    pj_value(&b, v, indent, 0);
    cJSON_Delete(v);
    if (b.failed || !b.p) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    return 0;
}

/* ---------------------------------------------------------------- formatters */

typedef struct ctx {
    const chat_msg_t *m;
    size_t n;
    const chat_opts_t *o;
    buf_t *b;
    char *err;
    size_t errlen;
    const cJSON *tools; /* the parsed tools array, NULL for none */
    size_t turn;        /* where the final message's turn text begins (mark_turn);
                           SIZE_MAX: not marked */
} ctx_t;

/* Message i's turn text begins here: after its header, where the model's own text would
 * begin (chat_format_prefill's *turn, for the final message). */
static void mark_turn(ctx_t *c, size_t i)
{
    if (i + 1 == c->n)
        c->turn = c->b->len;
}

static int refuse(ctx_t *c, const char *msg)
{
    fd_set_err(c->err, c->errlen, "%s", msg);
    return -EINVAL;
}

/* A tool call's arguments through tojson (the caller checked they parse). */
static int put_args(ctx_t *c, const chat_call_t *call, int indent)
{
    cJSON *v = pj_parse(call->arguments);
    if (!v) {
        fd_set_err(c->err, c->errlen, "the arguments of tool call '%.64s' are not JSON",
                   call->name);
        return -EINVAL;
    }
    pj_value(c->b, v, indent, 0);
    cJSON_Delete(v);
    return 0;
}

/* Jinja's length of a string: characters, not bytes. */
static size_t n_chars(const char *s)
{
    size_t n = 0;
    for (; s && *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* The Jinja check (message['role'] == 'user') != (loop.index0 % 2 == 0) over m[from..n). */
static bool alternates(const ctx_t *c, size_t from)
{
    for (size_t i = from; i < c->n; i++)
        if ((c->m[i].role == CHAT_USER) != ((i - from) % 2 == 0))
            return false;
    return true;
}

/* Plain fallback (documented in chat.h). */
static int fmt_plain(ctx_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_SYSTEM) {
            put_content(c->b, m);
            puts_(c->b, "\n\n");
            continue;
        }
        puts_(c->b, m->role == CHAT_USER ? "User: " : "Assistant: ");
        mark_turn(c, i);
        put_content(c->b, m);
        puts_(c->b, "\n");
    }
    if (c->o->add_generation_prompt)
        puts_(c->b, "Assistant:");
    return 0;
}

/* Llama 2 chat (meta-llama/Llama-2-7b-chat-hf):
 *   system first -> loop over the rest, the system text wrapped in <<SYS>> on the first;
 *   roles must alternate user/assistant; user: bos + '[INST] ' + content.strip() + ' [/INST]';
 *   assistant: ' ' + content.strip() + ' ' + eos.  No generation prompt is written. */
static int fmt_llama2(ctx_t *c)
{
    size_t from = c->m[0].role == CHAT_SYSTEM ? 1 : 0;
    if (!alternates(c, from))
        return refuse(c, "Conversation roles must alternate user/assistant/user/assistant/...");
    for (size_t i = from; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_USER) {
            puts_(c->b, c->o->bos);
            puts_(c->b, "[INST] ");
            if (i == from && from == 1) {
                /* content.strip() runs over the whole '<<SYS>>...' string */
                buf_t tmp = {0};
                puts_(&tmp, "<<SYS>>\n");
                put_content(&tmp, &c->m[0]);
                puts_(&tmp, "\n<</SYS>>\n\n");
                put_content(&tmp, m);
                if (tmp.failed) {
                    free(tmp.p);
                    return -ENOMEM;
                }
                put_trimmed(c->b, tmp.p, tmp.len);
                free(tmp.p);
            } else {
                put_content_trimmed(c->b, m);
            }
            puts_(c->b, " [/INST]");
        } else if (m->role == CHAT_ASSISTANT) {
            puts_(c->b, " ");
            mark_turn(c, i);
            put_content_trimmed(c->b, m);
            puts_(c->b, " ");
            puts_(c->b, c->o->eos);
        }
    }
    return 0;
}

/* Llama 3.0: for each message '<|start_header_id|>' + role + '<|end_header_id|>\n\n' +
 * content|trim + '<|eot_id|>', bos before the first; the generation prompt opens an
 * assistant header. */
static void llama3_turn(ctx_t *c, const chat_msg_t *m)
{
    puts_(c->b, "<|start_header_id|>");
    puts_(c->b, chat_role_name(m->role));
    puts_(c->b, "<|end_header_id|>\n\n");
    mark_turn(c, (size_t)(m - c->m));
    put_content_trimmed(c->b, m);
    puts_(c->b, "<|eot_id|>");
}

static int fmt_llama3(ctx_t *c)
{
    puts_(c->b, c->o->bos);
    for (size_t i = 0; i < c->n; i++)
        llama3_turn(c, &c->m[i]);
    if (c->o->add_generation_prompt)
        puts_(c->b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

/* Llama 3.1 (shared/chat-templates/meta-llama-Llama-3.1-8B-Instruct.jinja) at its defaults
 * (tools_in_user_message, no builtin_tools, undefined date_string): bos; a system header
 * always, "Environment: ipython" in it when there are tools, the knowledge and fixed dates,
 * then the first message's text if it is a system message (trimmed).  With tools, the next
 * message (whatever its role) becomes a user turn that lists them (tojson, indent 4) before
 * its trimmed text.  Then the messages as in 3.0, except: one tool call (exactly one) as
 * {"name": ..., "parameters": tojson(arguments)}, and a tool result as an ipython turn whose
 * content goes through tojson (a string is "iterable" to Jinja, so it is quoted). */
static int fmt_llama31(ctx_t *c)
{
    puts_(c->b, c->o->bos);
    puts_(c->b, "<|start_header_id|>system<|end_header_id|>\n\n");
    if (c->tools)
        puts_(c->b, "Environment: ipython\n");
    puts_(c->b, "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n");
    size_t from = 0;
    if (c->m[0].role == CHAT_SYSTEM) {
        put_content_trimmed(c->b, &c->m[0]);
        from = 1;
    }
    puts_(c->b, "<|eot_id|>");
    if (c->tools) {
        if (from >= c->n)
            return refuse(c, "Cannot put tools in the first user message when there's no "
                             "first user message!");
        if (!c->m[from].content)
            return refuse(c, "the message after the system message carries the tools and "
                             "must have text content");
        puts_(c->b, "<|start_header_id|>user<|end_header_id|>\n\n"
                    "Given the following functions, please respond with a JSON for a function "
                    "call with its proper arguments that best answers the given prompt.\n\n"
                    "Respond in the format {\"name\": function name, \"parameters\": "
                    "dictionary of argument name and its value}.Do not use variables.\n\n");
        for (const cJSON *t = c->tools->child; t; t = t->next) {
            pj_value(c->b, t, 4, 0);
            puts_(c->b, "\n\n");
        }
        put_content_trimmed(c->b, &c->m[from]);
        puts_(c->b, "<|eot_id|>");
        from++;
    }
    for (size_t i = from; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->n_calls) {
            if (m->n_calls != 1)
                return refuse(c, "This model only supports single tool-calls at once!");
            puts_(c->b, "<|start_header_id|>assistant<|end_header_id|>\n\n{\"name\": \"");
            puts_(c->b, m->calls[0].name);
            puts_(c->b, "\", \"parameters\": ");
            int rc = put_args(c, &m->calls[0], -1);
            if (rc)
                return rc;
            puts_(c->b, "}<|eot_id|>");
        } else if (m->role == CHAT_TOOL) {
            puts_(c->b, "<|start_header_id|>ipython<|end_header_id|>\n\n");
            buf_t tmp = {0};
            put_content(&tmp, m);
            pj_string(c->b, tmp.p ? tmp.p : "");
            free(tmp.p);
            if (tmp.failed)
                return -ENOMEM;
            puts_(c->b, "<|eot_id|>");
        } else {
            llama3_turn(c, m);
        }
    }
    if (c->o->add_generation_prompt)
        puts_(c->b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

/* The "# Tools" system turn Qwen 2.5 and Qwen3 share, after its opening text. */
static void qwen_tools(ctx_t *c)
{
    puts_(c->b, "# Tools\n\nYou may call one or more functions to assist with the user query."
                "\n\nYou are provided with function signatures within <tools></tools> XML "
                "tags:\n<tools>");
    for (const cJSON *t = c->tools->child; t; t = t->next) {
        puts_(c->b, "\n");
        pj_value(c->b, t, -1, 0);
    }
    puts_(c->b, "\n</tools>\n\nFor each function call, return a json object with function "
                "name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
                "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
                "</tool_call><|im_end|>\n");
}

/* Qwen's call syntax (2.5 and 3): <tool_call>\n{"name": ..., "arguments": tojson}\n</tool_call>. */
static int qwen_call(ctx_t *c, const chat_call_t *call)
{
    puts_(c->b, "<tool_call>\n{\"name\": \"");
    puts_(c->b, call->name);
    puts_(c->b, "\", \"arguments\": ");
    int rc = put_args(c, call, -1);
    if (rc == 0)
        puts_(c->b, "}\n</tool_call>");
    return rc;
}

/* Tool message i of a run (Qwen 2.5 and 3): the run shares one user turn of <tool_response>
 * blocks. */
static void qwen_tool_response(ctx_t *c, size_t i)
{
    if (i == 0 || c->m[i - 1].role != CHAT_TOOL)
        puts_(c->b, "<|im_start|>user");
    puts_(c->b, "\n<tool_response>\n");
    put_content(c->b, &c->m[i]);
    puts_(c->b, "\n</tool_response>");
    if (i + 1 == c->n || c->m[i + 1].role != CHAT_TOOL)
        puts_(c->b, "<|im_end|>\n");
}

/* ChatML, and Qwen 2.5 (shared/chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja): the first
 * message, if system, opens the text (Qwen: else its default system message); with tools
 * (Qwen only) that system turn goes on with the "# Tools" instructions listing each tool
 * (tojson) in <tools>.  Every other message is '<|im_start|>' + role + '\n' + content +
 * '<|im_end|>\n', except (Qwen) an assistant message with tool calls: its content only when
 * not empty, then each call as <tool_call> {"name": ..., "arguments": tojson} </tool_call>;
 * and a run of tool messages, which shares one user turn of <tool_response> blocks. */
static int fmt_chatml(ctx_t *c, bool qwen)
{
    size_t from = 0;
    bool sys = c->m[0].role == CHAT_SYSTEM;
    if (c->tools) {
        puts_(c->b, "<|im_start|>system\n");
        if (sys)
            put_content(c->b, &c->m[0]);
        else
            puts_(c->b, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
        puts_(c->b, "\n\n");
        qwen_tools(c);
        from = sys;
    } else if (sys) {
        puts_(c->b, "<|im_start|>system\n");
        put_content(c->b, &c->m[0]);
        puts_(c->b, "<|im_end|>\n");
        from = 1;
    } else if (qwen) {
        puts_(c->b, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
                    "helpful assistant.<|im_end|>\n");
    }
    for (size_t i = from; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_TOOL) {
            qwen_tool_response(c, i);
            continue;
        }
        puts_(c->b, "<|im_start|>");
        puts_(c->b, chat_role_name(m->role));
        if (m->role == CHAT_ASSISTANT && m->n_calls) {
            if (m->len) {
                puts_(c->b, "\n");
                put_content(c->b, m);
            }
            for (size_t k = 0; k < m->n_calls; k++) {
                puts_(c->b, "\n");
                int rc = qwen_call(c, &m->calls[k]);
                if (rc)
                    return rc;
            }
            puts_(c->b, "<|im_end|>\n");
            continue;
        }
        puts_(c->b, "\n");
        mark_turn(c, i);
        put_content(c->b, m);
        puts_(c->b, "<|im_end|>\n");
    }
    if (c->o->add_generation_prompt)
        puts_(c->b, "<|im_start|>assistant\n");
    return 0;
}

/* Python's s.startswith(p) / s.endswith(p) on len bytes. */
static bool starts(const char *s, size_t n, const char *p)
{
    size_t k = strlen(p);
    return n >= k && memcmp(s, p, k) == 0;
}

static bool ends(const char *s, size_t n, const char *p)
{
    size_t k = strlen(p);
    return n >= k && memcmp(s + n - k, p, k) == 0;
}

/* The first (last: from the end) occurrence of p in s[0..n), or NULL. */
static const char *find(const char *s, size_t n, const char *p, bool last)
{
    size_t k = strlen(p);
    if (k > n)
        return NULL;
    for (size_t i = 0; i + k <= n; i++) {
        size_t at = last ? n - k - i : i;
        if (memcmp(s + at, p, k) == 0)
            return s + at;
    }
    return NULL;
}

/* str.strip('\n') in either direction, on a span */
static void nl_lstrip(const char **s, size_t *n)
{
    while (*n && **s == '\n') {
        (*s)++;
        (*n)--;
    }
}

static void nl_rstrip(const char *s, size_t *n)
{
    while (*n && s[*n - 1] == '\n')
        (*n)--;
}

/* Whether an assistant message's content opens a think block ("<think>" after newlines)
 * and does not close it. */
static bool opens_think(const chat_msg_t *m)
{
    const char *s = m->content ? m->content : "";
    size_t n = m->len;
    nl_lstrip(&s, &n);
    return starts(s, n, "<think>") && !find(s, n, "</think>", false);
}

/* Qwen3 (tests/data/chat-templates/Qwen-Qwen3-0.6B.jinja): with tools, a system turn of the
 * first message's text (if system) + '\n\n' and Qwen's "# Tools" block; without, the first
 * system message alone.  last_query_index is the last user message that is not a
 * "<tool_response>...</tool_response>" wrapper (else the last message).  Users, and system
 * messages after the first, are '<|im_start|>role\n' + content + '<|im_end|>\n'.  An
 * assistant message's reasoning is its reasoning_content, else what content holds before the
 * first "</think>" (after the last "<think>" in that part, newlines trimmed), content then
 * being what follows the last "</think>" (leading newlines trimmed).  After the last query,
 * the final message and any with reasoning get '<think>\n' + reasoning.strip('\n') +
 * '\n</think>\n\n' + content.lstrip('\n'); the others their content alone.  Tool calls
 * follow as Qwen 2.5's (a '\n' before the first only when content is not empty), then
 * '<|im_end|>\n'.  A run of tool messages shares one user turn of <tool_response> blocks.
 * The generation prompt is '<|im_start|>assistant\n', plus an empty think block when
 * enable_thinking is false.  A null content (a message that only calls tools) renders as ""
 * (the template itself cannot take None; vLLM sends "" for it). */
static int fmt_qwen3(ctx_t *c)
{
    bool sys = c->m[0].role == CHAT_SYSTEM;
    if (c->tools) {
        puts_(c->b, "<|im_start|>system\n");
        if (sys) {
            put_content(c->b, &c->m[0]);
            puts_(c->b, "\n\n");
        }
        qwen_tools(c);
    } else if (sys) {
        puts_(c->b, "<|im_start|>system\n");
        put_content(c->b, &c->m[0]);
        puts_(c->b, "<|im_end|>\n");
    }
    size_t last_query = c->n - 1;
    for (size_t k = c->n; k-- > 0;) {
        const chat_msg_t *m = &c->m[k];
        if (m->role == CHAT_USER && !(starts(m->content, m->len, "<tool_response>") &&
                                      ends(m->content, m->len, "</tool_response>"))) {
            last_query = k;
            break;
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_USER || (m->role == CHAT_SYSTEM && i > 0)) {
            puts_(c->b, "<|im_start|>");
            puts_(c->b, chat_role_name(m->role));
            puts_(c->b, "\n");
            put_content(c->b, m);
            puts_(c->b, "<|im_end|>\n");
        } else if (m->role == CHAT_ASSISTANT) {
            const char *content = m->content ? m->content : "";
            size_t clen = m->len;
            const char *rsn = "";
            size_t rlen = 0;
            if (m->reasoning) {
                rsn = m->reasoning;
                rlen = strlen(rsn);
            } else if (find(content, clen, "</think>", false)) {
                const char *first = find(content, clen, "</think>", false);
                const char *last = find(content, clen, "</think>", true);
                rsn = content;
                rlen = (size_t)(first - content);
                nl_rstrip(rsn, &rlen);
                const char *open = find(rsn, rlen, "<think>", true);
                if (open) {
                    rlen -= (size_t)(open + 7 - rsn);
                    rsn = open + 7;
                }
                nl_lstrip(&rsn, &rlen);
                clen -= (size_t)(last + 8 - content);
                content = last + 8;
                nl_lstrip(&content, &clen);
            }
            puts_(c->b, "<|im_start|>assistant\n");
            mark_turn(c, i);
            if (c->o->prefill && i + 1 == c->n && !m->reasoning && opens_think(m)) {
                /* a prefill inside its reasoning, as the model writes it */
                put_content(c->b, m);
                continue;
            }
            if (i > last_query && (i + 1 == c->n || rlen)) {
                puts_(c->b, "<think>\n");
                nl_lstrip(&rsn, &rlen);
                nl_rstrip(rsn, &rlen);
                put(c->b, rsn, rlen);
                puts_(c->b, "\n</think>\n\n");
                const char *body = content;
                size_t blen = clen;
                nl_lstrip(&body, &blen);
                put(c->b, body, blen);
            } else {
                put(c->b, content, clen);
            }
            for (size_t k = 0; k < m->n_calls; k++) {
                if (k > 0 || clen)
                    puts_(c->b, "\n");
                int rc = qwen_call(c, &m->calls[k]);
                if (rc)
                    return rc;
            }
            puts_(c->b, "<|im_end|>\n");
        } else if (m->role == CHAT_TOOL) {
            qwen_tool_response(c, i);
        }
    }
    if (c->o->add_generation_prompt) {
        puts_(c->b, "<|im_start|>assistant\n");
        if (c->o->no_thinking)
            puts_(c->b, "<think>\n\n</think>\n\n");
    }
    return 0;
}

/* DeepSeek's full-width markers (U+FF5C around the names, U+2581 for the spaces) */
#define DS_USER "<\xef\xbd\x9cUser\xef\xbd\x9c>"
#define DS_ASSISTANT "<\xef\xbd\x9c" "Assistant\xef\xbd\x9c>"
#define DS_EOS "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"
#define DS_CALLS_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALLS_END "<\xef\xbd\x9ctool\xe2\x96\x81" "calls\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_CALL_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_CALL_END "<\xef\xbd\x9ctool\xe2\x96\x81" "call\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_SEP "<\xef\xbd\x9ctool\xe2\x96\x81sep\xef\xbd\x9c>"
#define DS_OUTS_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81outputs\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_OUTS_END "<\xef\xbd\x9ctool\xe2\x96\x81outputs\xe2\x96\x81" "end\xef\xbd\x9c>"
#define DS_OUT_BEGIN "<\xef\xbd\x9ctool\xe2\x96\x81output\xe2\x96\x81" "begin\xef\xbd\x9c>"
#define DS_OUT_END "<\xef\xbd\x9ctool\xe2\x96\x81output\xe2\x96\x81" "end\xef\xbd\x9c>"

/* DeepSeek-R1-Distill (tests/data/chat-templates/deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja):
 * bos + the LAST system message's text, then per message: user '<｜User｜>' + content; an
 * assistant's tool calls, the first call of the whole conversation as '<｜Assistant｜>' +
 * calls-begin + call-begin and every later one (in this message or any other: the template's
 * is_first flag is never reset) as '\n' + call-begin, each 'function<｜tool▁sep｜>' + name +
 * '\n```json\n' + arguments (raw text) + '\n```' + call-end, then calls-end + the literal
 * end-of-sentence marker; an assistant's content when not null: right after tool outputs
 * '<｜tool▁outputs▁end｜>' + content + eos-marker, else '<｜Assistant｜>' + what follows the
 * last '</think>' + eos-marker; tool: the first of the conversation (is_output_first is never
 * reset either) outputs-begin + output-begin + content + output-end, later ones '\n' +
 * output-begin + content + output-end.  Ending on tool output closes the outputs (and writes
 * no generation prompt); else the prompt is '<｜Assistant｜><think>\n', + '</think>' when
 * thinking is switched off (not the template's: llama-server does so for this format).
 * With tools, the system text is llama-server's polyfill (below): the tools as
 * json.dumps(indent=2) and an example call in the syntax above. */
static int fmt_deepseek_r1(ctx_t *c)
{
    const chat_msg_t *sys = NULL;
    size_t sys_at = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].role == CHAT_SYSTEM) {
            sys = &c->m[i];
            sys_at = i;
        }
    puts_(c->b, c->o->bos);
    if (c->tools && (!sys || sys_at == 0)) {
        /* The template has no tools list.  llama-server (minja's polyfill) puts one in the
         * system message: the first message's text + "\n\n" when it is a system message,
         * else a new system message first; the template then prints the last system
         * message, so a later one hides the list, as it does there. */
        if (sys) {
            put_content(c->b, sys);
            puts_(c->b, "\n\n");
        }
        puts_(c->b, "You can call any of the following tools to satisfy the user's requests: ");
        pj_value(c->b, c->tools, 2, 0);
        puts_(c->b, "\n\nExample tool call syntax:\n\n" DS_CALLS_BEGIN DS_CALL_BEGIN "function"
                    DS_SEP "tool_name\n```json\n{\"arg1\": \"some_value\"}\n```" DS_CALL_END
                    DS_CALLS_END "\n\n");
    } else if (sys) {
        put_content(c->b, sys);
    }
    bool is_first = false, is_tool = false, is_output_first = true;
    for (size_t i = 0; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_USER) {
            is_tool = false;
            puts_(c->b, DS_USER);
            put_content(c->b, m);
        }
        if (m->role == CHAT_ASSISTANT && m->n_calls) {
            is_tool = false;
            for (size_t k = 0; k < m->n_calls; k++) {
                if (!is_first) {
                    puts_(c->b, DS_ASSISTANT DS_CALLS_BEGIN DS_CALL_BEGIN);
                    is_first = true;
                } else {
                    puts_(c->b, "\n" DS_CALL_BEGIN);
                }
                puts_(c->b, "function" DS_SEP);
                puts_(c->b, m->calls[k].name);
                puts_(c->b, "\n```json\n");
                puts_(c->b, m->calls[k].arguments);
                puts_(c->b, "\n```" DS_CALL_END);
            }
            puts_(c->b, DS_CALLS_END DS_EOS);
        }
        if (m->role == CHAT_ASSISTANT && m->content) {
            if (is_tool) {
                puts_(c->b, DS_OUTS_END);
                mark_turn(c, i);
                put_content(c->b, m);
                puts_(c->b, DS_EOS);
                is_tool = false;
            } else {
                const char *body = m->content;
                size_t blen = m->len;
                const char *last = find(body, blen, "</think>", true);
                if (last) {
                    blen -= (size_t)(last + 8 - body);
                    body = last + 8;
                }
                puts_(c->b, DS_ASSISTANT);
                mark_turn(c, i);
                put(c->b, body, blen);
                puts_(c->b, DS_EOS);
            }
        }
        if (m->role == CHAT_TOOL) {
            is_tool = true;
            if (is_output_first) {
                puts_(c->b, DS_OUTS_BEGIN DS_OUT_BEGIN);
                is_output_first = false;
            } else {
                puts_(c->b, "\n" DS_OUT_BEGIN);
            }
            put_content(c->b, m);
            puts_(c->b, DS_OUT_END);
        }
    }
    if (is_tool)
        puts_(c->b, DS_OUTS_END);
    if (c->o->add_generation_prompt && !is_tool) {
        puts_(c->b, DS_ASSISTANT "<think>\n");
        /* thinking switched off: the template has no switch; llama.cpp closes the block */
        if (c->o->no_thinking)
            puts_(c->b, "</think>");
    }
    return 0;
}

/* [AVAILABLE_TOOLS][...][/AVAILABLE_TOOLS]: each tool's function object key by key (not
 * "return"), a string value written raw between quotes (the template does not escape it),
 * any other value through tojson. */
static int mistral_tools(ctx_t *c)
{
    puts_(c->b, "[AVAILABLE_TOOLS][");
    for (const cJSON *t = c->tools->child; t; t = t->next) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        if (!cJSON_IsObject(fn))
            return refuse(c, "a tool has no 'function' object");
        puts_(c->b, "{\"type\": \"function\", \"function\": {");
        bool first = true;
        for (const cJSON *kv = fn->child; kv; kv = kv->next) {
            if (strcmp(kv->string, "return") == 0)
                continue;
            if (!first)
                puts_(c->b, ", ");
            first = false;
            puts_(c->b, "\"");
            puts_(c->b, kv->string);
            if (cJSON_IsString(kv)) {
                puts_(c->b, "\": \"");
                puts_(c->b, kv->valuestring);
                puts_(c->b, "\"");
            } else {
                puts_(c->b, "\": ");
                pj_value(c->b, kv, -1, 0);
            }
        }
        puts_(c->b, "}}");
        puts_(c->b, t->next ? ", " : "]");
    }
    puts_(c->b, "[/AVAILABLE_TOOLS]");
    return 0;
}

static bool same_text(const chat_msg_t *a, const chat_msg_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->content, b->content, a->len) == 0);
}

/* Mistral Nemo (shared/chat-templates/mistralai-Mistral-Nemo-Instruct-2407.jinja): an
 * optional first system message; the rest, tool messages and tool-calling messages left out,
 * must alternate user/assistant; bos; user: the tools block first when there are tools and
 * the message equals the last user message (Jinja compares the dicts, so an earlier copy of
 * it gets the tools too), then '[INST]' + content + '[/INST]', the system text + '\n\n'
 * going before the content only when it is the last message; tool calls: '[TOOL_CALLS][' +
 * each call's {"name", "arguments"} through tojson with ', "id": "<id>"' spliced in before
 * its closing brace + ']' + eos; assistant: content + eos; tool: [TOOL_RESULTS] with the
 * content raw and the call id.  Ids must be 9 characters.  Any other system message is
 * refused.  No generation prompt is written (the text ends in [/INST] or [/TOOL_RESULTS]). */
static int fmt_mistral(ctx_t *c)
{
    static const char bad_id[] = "Tool call IDs should be alphanumeric strings with length 9!";
    const chat_msg_t *sys = c->m[0].role == CHAT_SYSTEM ? &c->m[0] : NULL;
    size_t from = sys ? 1 : 0;
    const chat_msg_t *last_user = NULL;
    size_t k = 0;
    for (size_t i = from; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_USER)
            last_user = m;
        if (m->role == CHAT_TOOL || m->n_calls)
            continue;
        if ((m->role == CHAT_USER) != (k % 2 == 0))
            return refuse(c, "After the optional system message, conversation roles must "
                             "alternate user/assistant/user/assistant/...");
        k++;
    }
    puts_(c->b, c->o->bos);
    for (size_t i = from; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_USER) {
            if (c->tools && same_text(m, last_user)) {
                int rc = mistral_tools(c);
                if (rc)
                    return rc;
            }
            puts_(c->b, "[INST]");
            if (i == c->n - 1 && sys) {
                put_content(c->b, sys);
                puts_(c->b, "\n\n");
            }
            put_content(c->b, m);
            puts_(c->b, "[/INST]");
        } else if (m->n_calls) {
            puts_(c->b, "[TOOL_CALLS][");
            for (size_t j = 0; j < m->n_calls; j++) {
                const chat_call_t *call = &m->calls[j];
                puts_(c->b, "{\"name\": ");
                pj_string(c->b, call->name);
                puts_(c->b, ", \"arguments\": ");
                int rc = put_args(c, call, -1);
                if (rc)
                    return rc;
                if (n_chars(call->id) != 9)
                    return refuse(c, bad_id);
                puts_(c->b, ", \"id\": \"");
                puts_(c->b, call->id);
                puts_(c->b, "\"}");
                if (j + 1 < m->n_calls)
                    puts_(c->b, ", ");
                else {
                    puts_(c->b, "]");
                    puts_(c->b, c->o->eos);
                }
            }
        } else if (m->role == CHAT_ASSISTANT) {
            mark_turn(c, i);
            put_content(c->b, m);
            puts_(c->b, c->o->eos);
        } else if (m->role == CHAT_TOOL) {
            puts_(c->b, "[TOOL_RESULTS]{\"content\": ");
            put_content(c->b, m);
            puts_(c->b, ", ");
            if (n_chars(m->call_id) != 9)
                return refuse(c, bad_id);
            puts_(c->b, "\"call_id\": \"");
            puts_(c->b, m->call_id);
            puts_(c->b, "\"}[/TOOL_RESULTS]");
        } else {
            return refuse(c, "Only user and assistant roles are supported, with the exception "
                             "of an initial optional system message!");
        }
    }
    return 0;
}

/* Gemma 2 (shared/chat-templates/google-gemma-2-2b-it.jinja): bos; a system message is
 * refused (strict) or merged as Gemma 3's template does: its text + '\n\n' before the first
 * user message's trimmed content; roles must alternate starting with user; each turn
 * '<start_of_turn>' + (assistant -> 'model') + '\n' + content|trim + '<end_of_turn>\n'. */
static int fmt_gemma(ctx_t *c)
{
    const chat_msg_t *sys = NULL;
    size_t from = 0;
    if (c->m[0].role == CHAT_SYSTEM) {
        if (c->o->strict)
            return refuse(c, "System role not supported");
        sys = &c->m[0];
        from = 1;
    }
    if (!alternates(c, from))
        return refuse(c, "Conversation roles must alternate user/assistant/user/assistant/...");
    puts_(c->b, c->o->bos);
    for (size_t i = from; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        puts_(c->b, "<start_of_turn>");
        puts_(c->b, m->role == CHAT_ASSISTANT ? "model" : chat_role_name(m->role));
        puts_(c->b, "\n");
        mark_turn(c, i);
        if (i == from && sys) {
            put_content(c->b, sys);
            puts_(c->b, "\n\n");
        }
        put_content_trimmed(c->b, m);
        puts_(c->b, "<end_of_turn>\n");
    }
    if (sys && c->n == 1) { /* only a system message: it still reaches the model */
        puts_(c->b, "<start_of_turn>user\n");
        put_content(c->b, sys);
        puts_(c->b, "\n\n<end_of_turn>\n");
    }
    if (c->o->add_generation_prompt)
        puts_(c->b, "<start_of_turn>model\n");
    return 0;
}

/* Mistral Small 3.2 / Devstral / Magistral (tests/data/chat-templates/
 * unsloth-mistral-Devstral-Small-2507.jinja): bos; a first system message as
 * '[SYSTEM_PROMPT]' + text + '[/SYSTEM_PROMPT]' (without one the template writes its model's
 * own default system text, which differs per model and is left out here); with tools
 * '[AVAILABLE_TOOLS]' + tojson(tools) + '[/AVAILABLE_TOOLS]'; then per message: user
 * '[INST]' + content + '[/INST]'; a later system message as the first; assistant: content,
 * each call '[TOOL_CALLS]' + name + '[ARGS]' + arguments (the text as given), eos; tool:
 * '[TOOL_RESULTS]' + content + '[/TOOL_RESULTS]'.  No order is enforced and there is no
 * generation prompt: the model answers after '[/INST]' or '[/TOOL_RESULTS]'. */
static int fmt_mistral3(ctx_t *c)
{
    puts_(c->b, c->o->bos);
    size_t from = 0;
    if (c->m[0].role == CHAT_SYSTEM) {
        puts_(c->b, "[SYSTEM_PROMPT]");
        put_content(c->b, &c->m[0]);
        puts_(c->b, "[/SYSTEM_PROMPT]");
        from = 1;
    }
    if (c->tools) {
        puts_(c->b, "[AVAILABLE_TOOLS]");
        pj_value(c->b, c->tools, -1, 0);
        puts_(c->b, "[/AVAILABLE_TOOLS]");
    }
    for (size_t i = from; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        switch (m->role) {
        case CHAT_USER:
            puts_(c->b, "[INST]");
            put_content(c->b, m);
            puts_(c->b, "[/INST]");
            break;
        case CHAT_SYSTEM:
            puts_(c->b, "[SYSTEM_PROMPT]");
            put_content(c->b, m);
            puts_(c->b, "[/SYSTEM_PROMPT]");
            break;
        case CHAT_ASSISTANT:
            mark_turn(c, i);
            put_content(c->b, m);
            for (size_t k = 0; k < m->n_calls; k++) {
                puts_(c->b, "[TOOL_CALLS]");
                puts_(c->b, m->calls[k].name);
                puts_(c->b, "[ARGS]");
                puts_(c->b, m->calls[k].arguments);
            }
            puts_(c->b, c->o->eos);
            break;
        default:
            puts_(c->b, "[TOOL_RESULTS]");
            put_content(c->b, m);
            puts_(c->b, "[/TOOL_RESULTS]");
            break;
        }
    }
    return 0;
}

/* IBM Granite 3.3 (tests/data/chat-templates/ibm-granite-granite-3.3-2B-Instruct.jinja; 3.1
 * and 3.2 word the default system text a little differently): a system turn with the first
 * message's text if it is a system message, else the default "Knowledge Cutoff Date: April
 * 2024. Today's Date: " + today ("%B %d, %Y") + ". You are Granite, developed by IBM." + the
 * tools sentence when there are tools, else " You are a helpful AI assistant."; with tools
 * an available_tools turn of tojson(indent=4); then every message as
 * '<|start_of_role|>' + role + '<|end_of_role|>' + content + '<|end_of_text|>\n' (an
 * assistant's tool calls are not written: the template has no place for them), the
 * generation prompt after the last one. */
static int fmt_granite(ctx_t *c)
{
    size_t from = 0;
    puts_(c->b, "<|start_of_role|>system<|end_of_role|>");
    if (c->m[0].role == CHAT_SYSTEM) {
        put_content(c->b, &c->m[0]);
        from = 1;
    } else {
        char day[64] = "";
        time_t now = time(NULL);
        struct tm tm;
        if (localtime_r(&now, &tm))
            strftime(day, sizeof day, "%B %d, %Y", &tm);
        puts_(c->b, "Knowledge Cutoff Date: April 2024. Today's Date: ");
        puts_(c->b, day);
        puts_(c->b, ". You are Granite, developed by IBM.");
        puts_(c->b, c->tools ? " You are a helpful assistant with access to the following tools. "
                               "When a tool is required to answer the user's query, respond only "
                               "with <|tool_call|> followed by a JSON list of tools used. If a "
                               "tool does not exist in the provided list of tools, notify the "
                               "user that you do not have the ability to fulfill the request."
                             : " You are a helpful AI assistant.");
    }
    puts_(c->b, "<|end_of_text|>\n");
    if (c->tools) {
        puts_(c->b, "<|start_of_role|>available_tools<|end_of_role|>");
        pj_value(c->b, c->tools, 4, 0);
        puts_(c->b, "<|end_of_text|>\n");
    }
    for (size_t i = from; i < c->n; i++) {
        puts_(c->b, "<|start_of_role|>");
        puts_(c->b, chat_role_name(c->m[i].role));
        puts_(c->b, "<|end_of_role|>");
        mark_turn(c, i);
        put_content(c->b, &c->m[i]);
        puts_(c->b, "<|end_of_text|>\n");
        if (i + 1 == c->n && c->o->add_generation_prompt)
            puts_(c->b, "<|start_of_role|>assistant<|end_of_role|>");
    }
    return 0;
}

/* Phi-4-mini (tests/data/chat-templates/microsoft-Phi-4-mini-instruct.jinja): every message
 * as '<|' + role + '|>' + content + '<|end|>', no newlines, then '<|assistant|>' (else EOS).
 * The template takes the tools from a system message's own "tools" field, a JSON text that
 * it writes as '<|tool|>' + tools + '<|/tool|>' after that message's content; fusiond gives
 * them to the first message when it is a system message, else to a system message of its
 * own put first, with the model card's text.  The list is the model card's: the tools'
 * function objects, [{"name", "description", "parameters"}, ...] (tojson).  The template
 * has no place for an assistant's tool calls (nor does it take a null content): they are
 * written into the content the way the model writes them, after a space when there is text:
 * functools[{"name": ..., "arguments": ...}, ...].  A tool result is a "tool" turn. */
static const char PHI4_SYSTEM[] = "You are a helpful assistant with some tools.";

static void phi4_tools(ctx_t *c)
{
    puts_(c->b, "<|tool|>[");
    for (const cJSON *t = c->tools->child; t; t = t->next) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        if (t != c->tools->child)
            puts_(c->b, ", ");
        pj_value(c->b, cJSON_IsObject(f) ? f : t, -1, 0);
    }
    puts_(c->b, "]<|/tool|>");
}

static int fmt_phi4mini(ctx_t *c)
{
    bool sys0 = c->m[0].role == CHAT_SYSTEM;
    if (c->tools && !sys0) {
        puts_(c->b, "<|system|>");
        puts_(c->b, PHI4_SYSTEM);
        phi4_tools(c);
        puts_(c->b, "<|end|>");
    }
    for (size_t i = 0; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        puts_(c->b, "<|");
        puts_(c->b, chat_role_name(m->role));
        puts_(c->b, "|>");
        mark_turn(c, i);
        put_content(c->b, m);
        if (i == 0 && sys0 && c->tools)
            phi4_tools(c);
        if (m->n_calls) {
            puts_(c->b, m->len ? " functools[" : "functools[");
            for (size_t k = 0; k < m->n_calls; k++) {
                puts_(c->b, k ? ", {\"name\": \"" : "{\"name\": \"");
                puts_(c->b, m->calls[k].name);
                puts_(c->b, "\", \"arguments\": ");
                int rc = put_args(c, &m->calls[k], -1);
                if (rc)
                    return rc;
                puts_(c->b, "}");
            }
            puts_(c->b, "]");
        }
        puts_(c->b, "<|end|>");
    }
    puts_(c->b, c->o->add_generation_prompt ? "<|assistant|>" : c->o->eos);
    return 0;
}

/* Phi 3.5 (shared/chat-templates/microsoft-Phi-3.5-mini-instruct.jinja): '<|role|>\n' +
 * content + '<|end|>\n' per message, system messages only when not empty; then
 * '<|assistant|>\n', or eos without a generation prompt. */
static int fmt_phi3(ctx_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_SYSTEM && m->len == 0)
            continue;
        puts_(c->b, "<|");
        puts_(c->b, chat_role_name(m->role));
        puts_(c->b, "|>\n");
        mark_turn(c, i);
        put_content(c->b, m);
        puts_(c->b, "<|end|>\n");
    }
    puts_(c->b, c->o->add_generation_prompt ? "<|assistant|>\n" : c->o->eos);
    return 0;
}

/* Zephyr (HuggingFaceH4/zephyr-7b-beta, rendered with trim_blocks as transformers does):
 * '<|role|>\n' + content + eos + '\n' per message, then '<|assistant|>\n'. */
static int fmt_zephyr(ctx_t *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        puts_(c->b, "<|");
        puts_(c->b, chat_role_name(m->role));
        puts_(c->b, "|>\n");
        mark_turn(c, i);
        put_content(c->b, m);
        puts_(c->b, c->o->eos);
        puts_(c->b, "\n");
    }
    if (c->o->add_generation_prompt)
        puts_(c->b, "<|assistant|>\n");
    return 0;
}

/* ---------------------------------------------------------------- gpt-oss (harmony) */

/* Python's truth value of a JSON value, as Jinja's if tests it. */
static bool py_truthy(const cJSON *v)
{
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v))
        return false;
    if (cJSON_IsString(v))
        return v->valuestring[0] != '\0';
    if (cJSON_IsNumber(v))
        return v->valuedouble != 0;
    if (cJSON_IsArray(v) || cJSON_IsObject(v))
        return v->child != NULL;
    return true;
}

static bool is_str(const cJSON *v, const char *s)
{
    return cJSON_IsString(v) && strcmp(v->valuestring, s) == 0;
}

/* str(x) for a scalar, as Jinja's join and + print it (strings raw, True/False/None);
 * containers as tojson. */
static void py_str(buf_t *b, const cJSON *v)
{
    if (cJSON_IsString(v))
        puts_(b, v->valuestring);
    else if (cJSON_IsBool(v))
        puts_(b, cJSON_IsTrue(v) ? "True" : "False");
    else if (!v || cJSON_IsNull(v))
        puts_(b, "None");
    else
        pj_value(b, v, -1, 0);
}

/* name in required: a list's element, or (Python's in on a string) a substring of it */
static bool py_in(const char *name, const cJSON *required)
{
    if (cJSON_IsString(required))
        return strstr(required->valuestring, name) != NULL;
    for (const cJSON *it = cJSON_IsArray(required) ? required->child : NULL; it; it = it->next)
        if (is_str(it, name))
            return true;
    return false;
}

#define GO_INDENT16 "\n                "

/* The template's render_typescript_type(spec): a JSON schema as a TypeScript-like type,
 * whitespace and all (its nested-object and oneOf branches print the template's own line
 * breaks and indentation; Jinja's set inside a for loop does not leak out, so the template's
 * has_object_variants test is always false and every oneOf is written out). */
static void go_type(buf_t *b, const cJSON *spec)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(spec, "type");
    const cJSON *nullable = cJSON_GetObjectItemCaseSensitive(spec, "nullable");
    const cJSON *oneof = cJSON_GetObjectItemCaseSensitive(spec, "oneOf");
    if (is_str(type, "array")) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(spec, "items");
        if (py_truthy(items)) {
            const cJSON *it = cJSON_GetObjectItemCaseSensitive(items, "type");
            if (is_str(it, "string")) {
                puts_(b, "string[]");
            } else if (is_str(it, "number") || is_str(it, "integer")) {
                puts_(b, "number[]");
            } else if (is_str(it, "boolean")) {
                puts_(b, "boolean[]");
            } else {
                buf_t in = {0};
                go_type(&in, items);
                if (in.failed) {
                    b->failed = true;
                } else if ((in.p && strcmp(in.p, "object | object") == 0) ||
                           n_chars(in.p) > 50) {
                    puts_(b, "any[]");
                } else {
                    puts_(b, in.p);
                    puts_(b, "[]");
                }
                free(in.p);
            }
        } else {
            puts_(b, "any[]");
        }
        if (py_truthy(nullable))
            puts_(b, " | null");
    } else if (cJSON_IsArray(type) && type->child) {
        for (const cJSON *t = type->child; t; t = t->next) {
            if (t != type->child)
                puts_(b, " | ");
            py_str(b, t);
        }
    } else if (py_truthy(oneof)) {
        for (const cJSON *v = oneof->child; v; v = v->next) {
            go_type(b, v);
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(v, "description");
            if (py_truthy(d)) {
                puts_(b, "// ");
                py_str(b, d);
            }
            const cJSON *df = cJSON_GetObjectItemCaseSensitive(v, "default");
            if (df) {
                puts_(b, "                    // default: ");
                pj_value(b, df, -1, 0);
            }
            if (v->next)
                puts_(b, " | \n");
        }
    } else if (is_str(type, "string")) {
        const cJSON *en = cJSON_GetObjectItemCaseSensitive(spec, "enum");
        if (py_truthy(en)) {
            puts_(b, "\"");
            for (const cJSON *e = cJSON_IsArray(en) ? en->child : NULL; e; e = e->next) {
                if (e != en->child)
                    puts_(b, "\" | \"");
                py_str(b, e);
            }
            puts_(b, "\"");
        } else {
            puts_(b, "string");
            if (py_truthy(nullable))
                puts_(b, " | null");
        }
    } else if (is_str(type, "number") || is_str(type, "integer")) {
        puts_(b, "number");
    } else if (is_str(type, "boolean")) {
        puts_(b, "boolean");
    } else if (is_str(type, "object")) {
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(spec, "properties");
        if (py_truthy(props) && cJSON_IsObject(props)) {
            const cJSON *req = cJSON_GetObjectItemCaseSensitive(spec, "required");
            puts_(b, "{\n");
            for (const cJSON *p = props->child; p; p = p->next) {
                puts_(b, p->string);
                if (!py_in(p->string, req))
                    puts_(b, "?");
                puts_(b, ": " GO_INDENT16);
                go_type(b, p);
                if (p->next)
                    puts_(b, ", ");
            }
            puts_(b, "}");
        } else {
            puts_(b, "object");
        }
    } else {
        puts_(b, "any");
    }
}

/* The template's render_tool_namespace("functions", tools). */
static void go_tools(ctx_t *c)
{
    buf_t *b = c->b;
    puts_(b, "## functions\n\nnamespace functions {\n\n");
    for (const cJSON *t = c->tools->child; t; t = t->next) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *desc = cJSON_GetObjectItemCaseSensitive(f, "description");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(f, "parameters");
        const cJSON *props = cJSON_GetObjectItemCaseSensitive(params, "properties");
        puts_(b, "// ");
        if (desc)
            py_str(b, desc);
        puts_(b, "\ntype ");
        if (name)
            py_str(b, name);
        puts_(b, " = ");
        if (!py_truthy(params) || !py_truthy(props) || !cJSON_IsObject(props)) {
            puts_(b, "() => any;\n\n");
            continue;
        }
        const cJSON *req = cJSON_GetObjectItemCaseSensitive(params, "required");
        puts_(b, "(_: {\n");
        for (const cJSON *p = props->child; p; p = p->next) {
            const cJSON *pd = cJSON_GetObjectItemCaseSensitive(p, "description");
            if (py_truthy(pd)) {
                puts_(b, "// ");
                py_str(b, pd);
                puts_(b, "\n");
            }
            puts_(b, p->string);
            if (!py_in(p->string, req))
                puts_(b, "?");
            puts_(b, ": ");
            go_type(b, p);
            const cJSON *df = cJSON_GetObjectItemCaseSensitive(p, "default");
            if (df) {
                /* with an enum or a oneOf the template adds the default as a string (+):
                 * a string prints raw; others (where jinja2 would fail) as JSON */
                bool raw = py_truthy(cJSON_GetObjectItemCaseSensitive(p, "enum")) ||
                           py_truthy(cJSON_GetObjectItemCaseSensitive(p, "oneOf"));
                puts_(b, py_truthy(cJSON_GetObjectItemCaseSensitive(p, "enum")) ||
                         !raw ? ", // default: " : "// default: ");
                if (raw && cJSON_IsString(df))
                    puts_(b, df->valuestring);
                else
                    pj_value(b, df, -1, 0);
            }
            puts_(b, ",\n");
        }
        puts_(b, "}) => any;\n\n");
    }
    puts_(b, "} // namespace functions");
}

static bool has_channel_tags(const char *s, size_t n)
{
    return s && (has(s, n, "<|channel|>analysis<|message|>") ||
                 has(s, n, "<|channel|>final<|message|>"));
}

/* gpt-oss (tests/data/chat-templates/openai-gpt-oss-120b.jinja, the harmony format) as
 * llama-server renders it: the system message (model identity, knowledge cutoff, today's
 * date as the template's strftime_now("%Y-%m-%d") writes it, "Reasoning: " + effort, the
 * valid channels, the tools sentence); a first system (developer) message's text as the
 * developer message's "# Instructions", with the tools as a TypeScript namespace; later
 * system messages are not written.  Users: '<|start|>user<|message|>' + content + '<|end|>'.
 * Assistants: the answer in the final channel (earlier reasoning dropped, as the template
 * drops it); one with tool calls writes its first call only (the template assumes one per
 * message) as '<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>' +
 * tojson(arguments, parsed as llama-server parses them) + '<|call|>', after its reasoning
 * (llama-server passes reasoning_content as the template's "thinking" for these messages
 * only; the content, when there is one, takes its place) in the analysis channel unless an
 * answer without calls follows later.  Tool results: '<|start|>functions.NAME
 * to=assistant<|channel|>commentary<|message|>' + tojson(content) + '<|end|>', NAME the last
 * call's.  The generation prompt is '<|start|>assistant'; without it, a last assistant
 * message ends in '<|end|>' where the template writes '<|return|>' (llama-server's change:
 * the model must not read its end of generation). */
static int fmt_gptoss(ctx_t *c)
{
    buf_t *b = c->b;
    char day[32] = "";
    time_t now = time(NULL);
    struct tm tm;
    if (localtime_r(&now, &tm))
        strftime(day, sizeof day, "%Y-%m-%d", &tm);
    puts_(b, "<|start|>system<|message|>You are ChatGPT, a large language model trained by "
             "OpenAI.\nKnowledge cutoff: 2024-06\nCurrent date: ");
    puts_(b, day);
    puts_(b, "\n\nReasoning: ");
    puts_(b, c->o->reasoning_effort ? c->o->reasoning_effort : "medium");
    puts_(b, "\n\n# Valid channels: analysis, commentary, final. Channel must be included for "
             "every message.");
    if (c->tools)
        puts_(b, "\nCalls to these tools must go to the commentary channel: 'functions'.");
    puts_(b, "<|end|>");
    size_t from = 0;
    if (c->m[0].role == CHAT_SYSTEM)
        from = 1;
    bool dev = from && c->m[0].len > 0;
    if (dev || c->tools) {
        puts_(b, "<|start|>developer<|message|>");
        if (dev) {
            puts_(b, "# Instructions\n\n");
            put_content(b, &c->m[0]);
            puts_(b, "\n\n");
        }
        if (c->tools) {
            puts_(b, "# Tools\n\n");
            go_tools(c);
        }
        puts_(b, "<|end|>");
    }
    const char *last_call = NULL;
    for (size_t i = from; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_USER) {
            puts_(b, "<|start|>user<|message|>");
            put_content(b, m);
            puts_(b, "<|end|>");
        } else if (m->role == CHAT_TOOL) {
            if (!last_call)
                return refuse(c, "Message has tool role, but there was no previous assistant "
                                 "message with a tool call!");
            puts_(b, "<|start|>functions.");
            puts_(b, last_call);
            puts_(b, " to=assistant<|channel|>commentary<|message|>");
            char *txt = strndup(m->content ? m->content : "", m->len);
            if (!txt)
                return -ENOMEM;
            pj_string(b, txt);
            free(txt);
            puts_(b, "<|end|>");
        } else if (m->role == CHAT_ASSISTANT) {
            const char *think = m->n_calls ? m->reasoning : NULL;
            if (has_channel_tags(m->content, m->len))
                return refuse(c, "You have passed a message containing <|channel|> tags in "
                                 "the content field. Instead of doing this, you should pass "
                                 "analysis messages (the string between '<|message|>' and "
                                 "'<|end|>') in the 'thinking' field, and final messages (the "
                                 "string between '<|message|>' and '<|end|>') in the "
                                 "'content' field.");
            if (think && has_channel_tags(think, strlen(think)))
                return refuse(c, "You have passed a message containing <|channel|> tags in "
                                 "the thinking field. Instead of doing this, you should pass "
                                 "analysis messages (the string between '<|message|>' and "
                                 "'<|end|>') in the 'thinking' field, and final messages (the "
                                 "string between '<|message|>' and '<|end|>') in the "
                                 "'content' field.");
            if (m->n_calls) {
                bool later_final = false;
                for (size_t k = i + 1; k < c->n; k++)
                    later_final |= c->m[k].role == CHAT_ASSISTANT && c->m[k].n_calls == 0;
                if (m->len && think && *think)
                    return refuse(c, "Cannot pass both content and thinking in an assistant "
                                     "message with tool calls! Put the analysis message in "
                                     "one or the other, but not both.");
                if ((m->len || (think && *think)) && !later_final) {
                    puts_(b, "<|start|>assistant<|channel|>analysis<|message|>");
                    if (m->len)
                        put_content(b, m);
                    else
                        puts_(b, think);
                    puts_(b, "<|end|>");
                }
                const chat_call_t *call = &m->calls[0];
                puts_(b, "<|start|>assistant to=functions.");
                puts_(b, call->name);
                puts_(b, "<|channel|>commentary json<|message|>");
                int rc = put_args(c, call, -1);
                if (rc)
                    return rc;
                puts_(b, "<|call|>");
                last_call = call->name;
            } else {
                puts_(b, "<|start|>assistant");
                mark_turn(c, i);
                puts_(b, "<|channel|>final<|message|>");
                put_content(b, m);
                puts_(b, "<|end|>");
                last_call = NULL;
            }
        }
    }
    if (c->o->add_generation_prompt)
        puts_(b, "<|start|>assistant");
    return 0;
}

bool chat_has_tools(int family)
{
    return family == CHAT_LLAMA31 || family == CHAT_QWEN || family == CHAT_QWEN3 ||
           family == CHAT_MISTRAL || family == CHAT_DEEPSEEK_R1 || family == CHAT_MISTRAL3 ||
           family == CHAT_GRANITE || family == CHAT_PHI4MINI || family == CHAT_GPTOSS;
}

bool chat_has_thinking(int family)
{
    return family == CHAT_QWEN3 || family == CHAT_DEEPSEEK_R1;
}

int chat_tool_prefill(int family, const char *name, char **out)
{
    /* each family's call up to the function name, or with a name up to the arguments */
    const char *open, *args;
    switch (family) {
    case CHAT_LLAMA31: open = "{\"name\": \""; args = "\", \"parameters\": "; break;
    case CHAT_QWEN:
    case CHAT_QWEN3: open = "<tool_call>\n{\"name\": \""; args = "\", \"arguments\": "; break;
    case CHAT_MISTRAL: open = "[TOOL_CALLS][{\"name\": \""; args = "\", \"arguments\": "; break;
    case CHAT_MISTRAL3: open = "[TOOL_CALLS]"; args = "[ARGS]"; break;
    case CHAT_GRANITE: open = "<|tool_call|>[{\"name\": \""; args = "\", \"arguments\": "; break;
    case CHAT_PHI4MINI: open = "functools[{\"name\": \""; args = "\", \"arguments\": "; break;
    case CHAT_GPTOSS:
        open = "<|channel|>commentary to=functions.";
        args = " <|constrain|>json<|message|>";
        break;
    case CHAT_DEEPSEEK_R1:
        open = DS_CALLS_BEGIN DS_CALL_BEGIN "function" DS_SEP;
        args = "\n```json\n";
        break;
    default: *out = NULL; return -ENOTSUP;
    }
    buf_t b = {0};
    puts_(&b, open);
    if (name) {
        puts_(&b, name);
        puts_(&b, args);
    }
    if (b.failed || !b.p) {
        free(b.p);
        *out = NULL;
        return -ENOMEM;
    }
    *out = b.p;
    return 0;
}

const char *chat_tool_close(int family)
{
    switch (family) {
    case CHAT_LLAMA31: return "}";
    case CHAT_QWEN:
    case CHAT_QWEN3: return "}\n</tool_call>";
    case CHAT_MISTRAL: return "}]";
    case CHAT_DEEPSEEK_R1: return "\n```" DS_CALL_END DS_CALLS_END;
    case CHAT_MISTRAL3:
    case CHAT_GPTOSS: return ""; /* the arguments end the call (<|call|> ends generation) */
    case CHAT_GRANITE:
    case CHAT_PHI4MINI: return "}]";
    default: return NULL;
    }
}

/* ---------------------------------------------------------------- Jinja */

static void js_str(buf_t *b, const char *s, size_t n)
{
    puts_(b, "\"");
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(b, s + run, i - run);
        run = i + 1;
        char u[8];
        switch (c) {
        case '"': puts_(b, "\\\""); break;
        case '\\': puts_(b, "\\\\"); break;
        case '\n': puts_(b, "\\n"); break;
        case '\r': puts_(b, "\\r"); break;
        case '\t': puts_(b, "\\t"); break;
        default:
            snprintf(u, sizeof u, "\\u%04x", c);
            puts_(b, u);
        }
    }
    put(b, s + run, n - run);
    puts_(b, "\"");
}

static bool is_json_object(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    bool ok = cJSON_IsObject(j);
    cJSON_Delete(j);
    return ok;
}

int chat_jinja_vars(const chat_msg_t *msgs, size_t n, const chat_opts_t *o, bool string_args,
                    char **out)
{
    *out = NULL;
    buf_t b = {0};
    puts_(&b, "{");
    if (o->kwargs && *o->kwargs) { /* first: the variables below win over the same keys */
        const char *k = o->kwargs;
        while (*k == ' ' || *k == '\t' || *k == '\n' || *k == '\r')
            k++;
        size_t kl = strlen(k);
        while (kl && (k[kl - 1] == ' ' || k[kl - 1] == '\n' || k[kl - 1] == '\r' ||
                      k[kl - 1] == '\t'))
            kl--;
        if (*k != '{' || kl < 2 || !is_json_object(o->kwargs)) {
            free(b.p);
            return -EINVAL;
        }
        size_t inner = kl - 2, a = 1;
        while (inner && (k[a] == ' ' || k[a] == '\n' || k[a] == '\t' || k[a] == '\r')) {
            a++;
            inner--;
        }
        if (inner) {
            put(&b, k + a, inner);
            puts_(&b, ", ");
        }
    }
    puts_(&b, "\"messages\": [");
    for (size_t i = 0; i < n; i++) {
        const chat_msg_t *m = &msgs[i];
        puts_(&b, i ? ", {\"role\": " : "{\"role\": ");
        puts_(&b, "\"");
        puts_(&b, chat_role_name(m->role));
        puts_(&b, "\", \"content\": ");
        if (o->jinja_typed_content && m->content) {
            puts_(&b, "[{\"type\": \"text\", \"text\": ");
            js_str(&b, m->content, m->len);
            puts_(&b, "}]");
        } else {
            js_str(&b, m->content ? m->content : "", m->content ? m->len : 0);
        }
        if (m->n_calls) {
            puts_(&b, ", \"tool_calls\": [");
            for (size_t k = 0; k < m->n_calls; k++) {
                const chat_call_t *c = &m->calls[k];
                puts_(&b, k ? ", {\"id\": " : "{\"id\": ");
                js_str(&b, c->id ? c->id : "", c->id ? strlen(c->id) : 0);
                puts_(&b, ", \"type\": \"function\", \"function\": {\"name\": ");
                js_str(&b, c->name ? c->name : "", c->name ? strlen(c->name) : 0);
                puts_(&b, ", \"arguments\": ");
                const char *args = c->arguments ? c->arguments : "{}";
                cJSON *parsed = string_args ? NULL : cJSON_Parse(args);
                if (parsed) /* as sent: the numbers keep their spelling (1.0 stays a float) */
                    puts_(&b, args);
                else
                    js_str(&b, args, strlen(args));
                cJSON_Delete(parsed);
                puts_(&b, "}}");
            }
            puts_(&b, "]");
        }
        if (m->call_id) {
            puts_(&b, ", \"tool_call_id\": ");
            js_str(&b, m->call_id, strlen(m->call_id));
        }
        if (m->reasoning) {
            puts_(&b, ", \"reasoning_content\": ");
            js_str(&b, m->reasoning, strlen(m->reasoning));
        }
        puts_(&b, "}");
    }
    puts_(&b, "]");
    if (o->tools && *o->tools) {
        cJSON *t = cJSON_Parse(o->tools);
        bool ok = cJSON_IsArray(t);
        cJSON_Delete(t);
        if (!ok) {
            free(b.p);
            return -EINVAL;
        }
        puts_(&b, ", \"tools\": ");
        puts_(&b, o->tools);
    }
    puts_(&b, o->add_generation_prompt ? ", \"add_generation_prompt\": true"
                                       : ", \"add_generation_prompt\": false");
    puts_(&b, ", \"bos_token\": ");
    js_str(&b, o->bos ? o->bos : "", o->bos ? strlen(o->bos) : 0);
    puts_(&b, ", \"eos_token\": ");
    js_str(&b, o->eos ? o->eos : "", o->eos ? strlen(o->eos) : 0);
    if (o->no_thinking)
        puts_(&b, ", \"enable_thinking\": false");
    if (o->reasoning_effort) {
        puts_(&b, ", \"reasoning_effort\": ");
        js_str(&b, o->reasoning_effort, strlen(o->reasoning_effort));
    }
    puts_(&b, "}");
    if (b.failed) {
        free(b.p);
        return -ENOMEM;
    }
    *out = b.p;
    return 0;
}

bool chat_jinja_string_args(const struct jinja *t)
{
    static const chat_call_t call = {"call_1___", "ipython",
                                     "{\"argument_needle\": \"print('Hello, World!')\"}"};
    const chat_msg_t msgs[] = {{.role = CHAT_USER, .content = "Hey", .len = 3},
                               {.role = CHAT_ASSISTANT, .calls = &call, .n_calls = 1}};
    chat_opts_t o = {.bos = "", .eos = ""};
    char *vars = NULL, *text = NULL, err[64];
    size_t len;
    bool shown = false;
    if (chat_jinja_vars(msgs, 2, &o, true, &vars) == 0 &&
        jinja_render(t, vars, NULL, &text, &len, err, sizeof err) == 0)
        shown = strstr(text, "\"argument_needle\":") || strstr(text, "'argument_needle':");
    free(vars);
    free(text);
    return shown;
}

/* Whether the needle shows when the template renders msgs (arguments as objects or text). */
static bool renders(const struct jinja *t, const chat_msg_t *msgs, size_t n, bool string_args,
                    const char *needle)
{
    chat_opts_t o = {.bos = "", .eos = ""};
    char *vars = NULL, *text = NULL, err[64];
    size_t len;
    bool shown = false;
    if (chat_jinja_vars(msgs, n, &o, string_args, &vars) == 0 &&
        jinja_render(t, vars, NULL, &text, &len, err, sizeof err) == 0)
        shown = strstr(text, needle) != NULL;
    free(vars);
    free(text);
    return shown;
}

bool chat_jinja_renders_calls(const struct jinja *t)
{
    static const chat_call_t call = {"call_1___", "ipython", "{\"argument_needle\": 1}"};
    const chat_msg_t msgs[] = {{.role = CHAT_USER, .content = "Hey", .len = 3},
                               {.role = CHAT_ASSISTANT, .calls = &call, .n_calls = 1}};
    return renders(t, msgs, 2, true, "argument_needle") ||
           renders(t, msgs, 2, false, "argument_needle");
}

bool chat_jinja_renders_results(const struct jinja *t)
{
    static const chat_call_t call = {"call_1___", "test_tool1", "{}"};
    static const char needle[] = "Some response!";
    const chat_msg_t msgs[] = {{.role = CHAT_USER, .content = "Hey", .len = 3},
                               {.role = CHAT_ASSISTANT, .calls = &call, .n_calls = 1},
                               {.role = CHAT_TOOL, .content = needle, .len = sizeof needle - 1,
                                .call_id = "call_911_"}};
    return renders(t, msgs, 3, false, needle) || renders(t, msgs, 3, true, needle);
}

/* whether the needle shows when the template renders a user message, its content as a
 * string or as a typed part */
static bool shows_user_content(const struct jinja *t, bool typed)
{
    static const char needle[] = "<User Needle>";
    const chat_msg_t msg = {.role = CHAT_USER, .content = needle, .len = sizeof needle - 1};
    chat_opts_t o = {.bos = "", .eos = "", .jinja_typed_content = typed};
    char *vars = NULL, *text = NULL, err[64];
    size_t len;
    bool shown = false;
    if (chat_jinja_vars(&msg, 1, &o, false, &vars) == 0 &&
        jinja_render(t, vars, NULL, &text, &len, err, sizeof err) == 0)
        shown = strstr(text, needle) != NULL;
    free(vars);
    free(text);
    return shown;
}

bool chat_jinja_typed_content(const struct jinja *t)
{
    return !shows_user_content(t, false) && shows_user_content(t, true);
}

static int render_jinja(const chat_msg_t *msgs, size_t n, const chat_opts_t *o, char **out,
                        size_t *len, char *err, size_t errlen)
{
    char *vars;
    int rc = chat_jinja_vars(msgs, n, o, o->jinja_string_args, &vars);
    if (rc) {
        fd_set_err(err, errlen, "%s", rc == -ENOMEM ? "out of memory formatting the chat"
                                                 : "chat_template_kwargs or tools are not JSON");
        return rc;
    }
    rc = jinja_render(o->jinja, vars, NULL, out, len, err, errlen);
    free(vars);
    if (rc == FD_ERANGE)
        rc = -EINVAL; /* a runaway template is the request's problem: its 400 says why */
    return rc;
}

static int format(int family, const chat_msg_t *msgs, size_t n, const chat_opts_t *opts,
                  char **out, size_t *len, size_t *turn, char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    *turn = SIZE_MAX; /* a renderer that marks no turn leaves it so (format_prefill) */
    chat_opts_t dflt = {.add_generation_prompt = true};
    chat_opts_t o = opts ? *opts : dflt;
    if (!o.bos)
        o.bos = "";
    if (!o.eos)
        o.eos = "";
    if (family < 0 || family >= CHAT_N_FAMILIES) {
        fd_set_err(err, errlen, "unknown chat format %d", family);
        return -EINVAL;
    }
    if (n == 0 || !msgs) {
        fd_set_err(err, errlen, "no messages");
        return -EINVAL;
    }
    if (o.jinja)
        return render_jinja(msgs, n, &o, out, len, err, errlen);
    if (family == CHAT_JINJA) {
        fd_set_err(err, errlen, "the jinja chat format needs a template");
        return -EINVAL;
    }
    bool tooled = chat_has_tools(family);
    for (size_t i = 0; i < n; i++) {
        const chat_msg_t *m = &msgs[i];
        if (m->role < CHAT_SYSTEM || m->role > CHAT_TOOL) {
            fd_set_err(err, errlen, "message %zu: unknown role", i);
            return -EINVAL;
        }
        if (!m->content && m->len) {
            fd_set_err(err, errlen, "message %zu: no content", i);
            return -EINVAL;
        }
        if (!tooled && (m->role == CHAT_TOOL || m->n_calls)) {
            fd_set_err(err, errlen, "message %zu: the %s chat format has no tool calls or tool "
                       "results", i, chat_family_name(family));
            return -ENOTSUP;
        }
        if (m->role == CHAT_TOOL && (!m->content || !m->call_id)) {
            fd_set_err(err, errlen, "message %zu: a tool message needs content and call_id", i);
            return -EINVAL;
        }
        if (m->n_calls && m->role != CHAT_ASSISTANT) {
            fd_set_err(err, errlen, "message %zu: only assistant messages make tool calls", i);
            return -EINVAL;
        }
        for (size_t k = 0; k < m->n_calls; k++) {
            if (!m->calls[k].name || !m->calls[k].arguments || !m->calls[k].id) {
                fd_set_err(err, errlen, "message %zu: tool call %zu is incomplete", i, k);
                return -EINVAL;
            }
        }
    }
    cJSON *tools = NULL;
    if (o.tools && *o.tools) {
        if (!chat_has_tools(family)) {
            fd_set_err(err, errlen, "the %s chat format has no tool calling",
                       chat_family_name(family));
            return -ENOTSUP;
        }
        tools = pj_parse(o.tools);
        if (!cJSON_IsArray(tools)) {
            cJSON_Delete(tools);
            fd_set_err(err, errlen, "the tools are not a JSON array");
            return -EINVAL;
        }
        if (!tools->child) { /* an empty list offers nothing, as no list */
            cJSON_Delete(tools);
            tools = NULL;
        }
    }
    buf_t b = {0};
    ctx_t c = {msgs, n, &o, &b, err, errlen, tools, SIZE_MAX};
    int rc;
    switch (family) {
    case CHAT_LLAMA2: rc = fmt_llama2(&c); break;
    case CHAT_LLAMA3: rc = fmt_llama3(&c); break;
    case CHAT_LLAMA31: rc = fmt_llama31(&c); break;
    case CHAT_CHATML: rc = fmt_chatml(&c, false); break;
    case CHAT_QWEN: rc = fmt_chatml(&c, true); break;
    case CHAT_QWEN3: rc = fmt_qwen3(&c); break;
    case CHAT_DEEPSEEK_R1: rc = fmt_deepseek_r1(&c); break;
    case CHAT_MISTRAL3: rc = fmt_mistral3(&c); break;
    case CHAT_GRANITE: rc = fmt_granite(&c); break;
    case CHAT_PHI4MINI: rc = fmt_phi4mini(&c); break;
    case CHAT_GPTOSS: rc = fmt_gptoss(&c); break;
    case CHAT_MISTRAL: rc = fmt_mistral(&c); break;
    case CHAT_GEMMA: rc = fmt_gemma(&c); break;
    case CHAT_PHI3: rc = fmt_phi3(&c); break;
    case CHAT_ZEPHYR: rc = fmt_zephyr(&c); break;
    default: rc = fmt_plain(&c); break;
    }
    cJSON_Delete(tools);
    if (rc == 0 && b.failed)
        rc = -ENOMEM;
    if (rc == 0 && !b.p) { /* nothing written (e.g. Llama 2 with a lone system message) */
        b.p = calloc(1, 1);
        if (!b.p)
            rc = -ENOMEM;
    }
    if (rc) {
        if (rc == -ENOMEM)
            fd_set_err(err, errlen, "out of memory formatting the chat");
        free(b.p);
        return rc;
    }
    *out = b.p;
    *len = b.len;
    *turn = c.turn;
    return 0;
}

/* Marks the end of a prefill's content in the rendering: text no template trims, between
 * two U+10FFFF (a noncharacter: no message holds it by chance), valid UTF-8 so that it passes
 * through a Jinja template's variables too. */
static const char PREFILL_END[] = "\xf4\x8f\xbf\xbf" "fusiond-prefill-end" "\xf4\x8f\xbf\xbf";

size_t chat_guess_turn(int family, const chat_msg_t *msgs, size_t n, const chat_opts_t *opts,
                       const char *text, size_t len)
{
    const chat_msg_t *last = &msgs[n - 1];
    size_t fallback = len > last->len ? len - last->len : 0;
    if (n < 2 || msgs[n - 1].role != CHAT_ASSISTANT)
        return fallback;
    chat_opts_t o = *opts;
    o.add_generation_prompt = true;
    o.prefill = false;
    char *g = NULL, err[8];
    size_t gl = 0, turn = 0;
    if (format(family, msgs, n - 1, &o, &g, &gl, &turn, err, sizeof err) != 0)
        return fallback;
    size_t k = 0;
    while (k < gl && k < len && g[k] == text[k])
        k++;
    /* the generation prompt must lead into the prefill, but for the start of a think block
     * it opens (the model's own text); else the history renders otherwise once a prefill
     * follows it (Mistral Nemo's system text goes before a last user message) */
    bool leads = gl - k <= 8 && ends(g, gl, "<think>\n" + 8 - (gl - k));
    free(g);
    if (!leads)
        return fallback;
    if (k >= 8 && memcmp(text + k - 8, "<think>\n", 8) == 0)
        k -= 8;
    else if (k >= 7 && memcmp(text + k - 7, "<think>", 7) == 0)
        k -= 7;
    return k;
}

/* A template that writes an empty think block before the final answer (Qwen3's) put it
 * before a prefill that opens its own: the block goes, so the prefill is where the model
 * writes it.  text ends with the rendered content. */
static void drop_empty_think(const chat_msg_t *last, char *text, size_t *len)
{
    static const char EMPTY[] = "<think>\n\n</think>\n\n";
    const size_t el = sizeof EMPTY - 1;
    if (last->reasoning || !opens_think(last))
        return;
    const char *at = find(text, *len, EMPTY, true);
    if (!at)
        return;
    const char *rest = at + el, *want = last->content;
    size_t rl = *len - (size_t)(rest - text), wl = last->len;
    nl_lstrip(&rest, &rl);
    nl_lstrip(&want, &wl);
    if (rl != wl || memcmp(rest, want, wl) != 0)
        return;
    size_t off = (size_t)(at - text);
    memmove(text + off, text + off + el, *len - off - el + 1);
    *len -= el;
}

/* The prefill (chat_opts_t.prefill): the conversation rendered whole with PREFILL_END after
 * the final content, and cut there. */
static int format_prefill(int family, const chat_msg_t *msgs, size_t n, const chat_opts_t *opts,
                          char **out, size_t *len, size_t *turn, char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    *turn = 0;
    if (n == 0 || !msgs || msgs[n - 1].role != CHAT_ASSISTANT) {
        fd_set_err(err, errlen, "an assistant prefill needs the assistant's message last");
        return -EINVAL;
    }
    const chat_msg_t *last = &msgs[n - 1];
    if (last->n_calls) {
        fd_set_err(err, errlen, "the final assistant message (a prefill the answer continues) "
                   "cannot have tool calls: end with the tool results instead");
        return -ENOTSUP;
    }
    if (!last->content && last->len) {
        fd_set_err(err, errlen, "message %zu: no content", n - 1);
        return -EINVAL;
    }
    size_t kl = sizeof PREFILL_END - 1;
    chat_msg_t *m = malloc(n * sizeof *m);
    char *text = malloc(last->len + kl + 1);
    if (!m || !text) {
        free(m);
        free(text);
        fd_set_err(err, errlen, "out of memory formatting the chat");
        return -ENOMEM;
    }
    memcpy(m, msgs, n * sizeof *m);
    if (last->len)
        memcpy(text, last->content, last->len);
    memcpy(text + last->len, PREFILL_END, kl + 1);
    m[n - 1].content = text;
    m[n - 1].len = last->len + kl;
    chat_opts_t o = *opts;
    o.add_generation_prompt = false;
    int rc = format(family, m, n, &o, out, len, turn, err, errlen);
    free(m);
    free(text);
    if (rc)
        return rc;
    const char *at = find(*out, *len, PREFILL_END, true);
    if (!at) { /* no family drops an assistant message; a safeguard */
        free(*out);
        *out = NULL;
        *len = 0;
        fd_set_err(err, errlen, "the %s chat format does not write the final assistant message",
                   chat_family_name(family));
        return -EINVAL;
    }
    *len = (size_t)(at - *out);
    (*out)[*len] = '\0';
    if (*turn == SIZE_MAX) {
        drop_empty_think(last, *out, len);
        *turn = chat_guess_turn(family, msgs, n, opts, *out, *len);
    }
    if (*turn > *len)
        *turn = *len;
    return 0;
}

int chat_format(int family, const chat_msg_t *msgs, size_t n, const chat_opts_t *opts,
                char **out, size_t *len, char *err, size_t errlen)
{
    size_t turn;
    if (opts && opts->prefill)
        return format_prefill(family, msgs, n, opts, out, len, &turn, err, errlen);
    return format(family, msgs, n, opts, out, len, &turn, err, errlen);
}

int chat_format_prefill(int family, const chat_msg_t *msgs, size_t n, const chat_opts_t *opts,
                        char **out, size_t *len, size_t *turn, char *err, size_t errlen)
{
    chat_opts_t o = {.add_generation_prompt = false};
    if (opts)
        o = *opts;
    o.prefill = true;
    return format_prefill(family, msgs, n, &o, out, len, turn, err, errlen);
}
