/* chat.c: one formatter per chat-template family.  Each function below follows its Jinja
 * template statement by statement (the templates are in ../shared/chat-templates, or quoted
 * where shared has none), with add_generation_prompt and no tools; the refusals
 * (raise_exception) become -EINVAL with the template's own message. */
#include "config.h"

#include "server/chat.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/unicode.h"

static const char *const family_names[CHAT_N_FAMILIES] = {
    [CHAT_PLAIN] = "plain",   [CHAT_LLAMA2] = "llama2",   [CHAT_LLAMA3] = "llama3",
    [CHAT_LLAMA31] = "llama3.1", [CHAT_CHATML] = "chatml", [CHAT_QWEN] = "qwen",
    [CHAT_MISTRAL] = "mistral", [CHAT_GEMMA] = "gemma",   [CHAT_PHI3] = "phi3",
    [CHAT_ZEPHYR] = "zephyr",
};

static const char *const role_names[] = {"system", "user", "assistant"};

int chat_role_from_name(const char *name)
{
    for (int i = 0; name && i < 3; i++)
        if (strcmp(name, role_names[i]) == 0)
            return i;
    return -EINVAL;
}

const char *chat_role_name(int role)
{
    return role >= 0 && role < 3 ? role_names[role] : "?";
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
    /* most specific markers first: several families share [INST] or <|user|> */
    if (has(t, n, "<|im_start|>"))
        return has(t, n, "You are Qwen, created by Alibaba Cloud") ? CHAT_QWEN : CHAT_CHATML;
    if (has(t, n, "<|start_header_id|>"))
        return has(t, n, "Cutting Knowledge Date") ? CHAT_LLAMA31 : CHAT_LLAMA3;
    if (has(t, n, "<start_of_turn>"))
        return CHAT_GEMMA;
    if (has(t, n, "<|assistant|>") && has(t, n, "<|end|>"))
        return CHAT_PHI3;
    if (has(t, n, "<|user|>"))
        return CHAT_ZEPHYR;
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

static void set_err(char *err, size_t errlen, const char *fmt, ...) FD_PRINTF(3, 4);
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- formatters */

typedef struct ctx {
    const chat_msg_t *m;
    size_t n;
    const chat_opts_t *o;
    buf_t *b;
    char *err;
    size_t errlen;
} ctx_t;

static int refuse(ctx_t *c, const char *msg)
{
    set_err(c->err, c->errlen, "%s", msg);
    return -EINVAL;
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

/* Llama 3.1 (shared/chat-templates/meta-llama-Llama-3.1-8B-Instruct.jinja), no tools: bos;
 * a system header always, with the knowledge and (undefined date_string) fixed dates, then
 * the first message's text if it is a system message (trimmed); then the other messages as
 * in 3.0. */
static int fmt_llama31(ctx_t *c)
{
    puts_(c->b, c->o->bos);
    puts_(c->b, "<|start_header_id|>system<|end_header_id|>\n\n"
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n");
    size_t from = 0;
    if (c->m[0].role == CHAT_SYSTEM) {
        put_content_trimmed(c->b, &c->m[0]);
        from = 1;
    }
    puts_(c->b, "<|eot_id|>");
    for (size_t i = from; i < c->n; i++)
        llama3_turn(c, &c->m[i]);
    if (c->o->add_generation_prompt)
        puts_(c->b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

/* ChatML, and Qwen 2.5 (shared/chat-templates/Qwen-Qwen2.5-7B-Instruct.jinja), no tools:
 * the first message, if system, opens the text (Qwen: else its default system message);
 * every other message is '<|im_start|>' + role + '\n' + content + '<|im_end|>\n'. */
static int fmt_chatml(ctx_t *c, bool qwen)
{
    size_t from = 0;
    if (c->m[0].role == CHAT_SYSTEM) {
        puts_(c->b, "<|im_start|>system\n");
        put_content(c->b, &c->m[0]);
        puts_(c->b, "<|im_end|>\n");
        from = 1;
    } else if (qwen) {
        puts_(c->b, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a "
                    "helpful assistant.<|im_end|>\n");
    }
    for (size_t i = from; i < c->n; i++) {
        puts_(c->b, "<|im_start|>");
        puts_(c->b, chat_role_name(c->m[i].role));
        puts_(c->b, "\n");
        put_content(c->b, &c->m[i]);
        puts_(c->b, "<|im_end|>\n");
    }
    if (c->o->add_generation_prompt)
        puts_(c->b, "<|im_start|>assistant\n");
    return 0;
}

/* Mistral Nemo (shared/chat-templates/mistralai-Mistral-Nemo-Instruct-2407.jinja), no tools:
 * an optional first system message; the rest must alternate user/assistant; bos; user:
 * '[INST]' + content + '[/INST]', the system text + '\n\n' going before the content of the
 * user message only when it is the last message; assistant: content + eos.  Any other
 * system message is refused.  No generation prompt is written (the text ends in [/INST]). */
static int fmt_mistral(ctx_t *c)
{
    const chat_msg_t *sys = c->m[0].role == CHAT_SYSTEM ? &c->m[0] : NULL;
    size_t from = sys ? 1 : 0;
    if (!alternates(c, from))
        return refuse(c, "After the optional system message, conversation roles must "
                         "alternate user/assistant/user/assistant/...");
    puts_(c->b, c->o->bos);
    for (size_t i = from; i < c->n; i++) {
        const chat_msg_t *m = &c->m[i];
        if (m->role == CHAT_USER) {
            puts_(c->b, "[INST]");
            if (i == c->n - 1 && sys) {
                put_content(c->b, sys);
                puts_(c->b, "\n\n");
            }
            put_content(c->b, m);
            puts_(c->b, "[/INST]");
        } else if (m->role == CHAT_ASSISTANT) {
            put_content(c->b, m);
            puts_(c->b, c->o->eos);
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
        put_content(c->b, m);
        puts_(c->b, c->o->eos);
        puts_(c->b, "\n");
    }
    if (c->o->add_generation_prompt)
        puts_(c->b, "<|assistant|>\n");
    return 0;
}

int chat_format(int family, const chat_msg_t *msgs, size_t n, const chat_opts_t *opts,
                char **out, size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    chat_opts_t dflt = {.add_generation_prompt = true};
    chat_opts_t o = opts ? *opts : dflt;
    if (!o.bos)
        o.bos = "";
    if (!o.eos)
        o.eos = "";
    if (family < 0 || family >= CHAT_N_FAMILIES) {
        set_err(err, errlen, "unknown chat format %d", family);
        return -EINVAL;
    }
    if (n == 0 || !msgs) {
        set_err(err, errlen, "no messages");
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].role < CHAT_SYSTEM || msgs[i].role > CHAT_ASSISTANT) {
            set_err(err, errlen, "message %zu: unknown role", i);
            return -EINVAL;
        }
        if (!msgs[i].content && msgs[i].len) {
            set_err(err, errlen, "message %zu: no content", i);
            return -EINVAL;
        }
    }
    buf_t b = {0};
    ctx_t c = {msgs, n, &o, &b, err, errlen};
    int rc;
    switch (family) {
    case CHAT_LLAMA2: rc = fmt_llama2(&c); break;
    case CHAT_LLAMA3: rc = fmt_llama3(&c); break;
    case CHAT_LLAMA31: rc = fmt_llama31(&c); break;
    case CHAT_CHATML: rc = fmt_chatml(&c, false); break;
    case CHAT_QWEN: rc = fmt_chatml(&c, true); break;
    case CHAT_MISTRAL: rc = fmt_mistral(&c); break;
    case CHAT_GEMMA: rc = fmt_gemma(&c); break;
    case CHAT_PHI3: rc = fmt_phi3(&c); break;
    case CHAT_ZEPHYR: rc = fmt_zephyr(&c); break;
    default: rc = fmt_plain(&c); break;
    }
    if (rc == 0 && b.failed)
        rc = -ENOMEM;
    if (rc == 0 && !b.p) { /* nothing written (e.g. Llama 2 with a lone system message) */
        b.p = calloc(1, 1);
        if (!b.p)
            rc = -ENOMEM;
    }
    if (rc) {
        if (rc == -ENOMEM)
            set_err(err, errlen, "out of memory formatting the chat");
        free(b.p);
        return rc;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}
