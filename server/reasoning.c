/* reasoning.c: the <think> splitter.  The text is classified as it comes; what cannot be
 * classified yet stays in hold: at the start, a prefix of "<think>"; in the reasoning, a
 * run of whitespace (trimmed if "</think>" or the end follows it) and a prefix of
 * "</think>".  Whitespace is C's isspace set, as llama-server's string_strip and
 * consume_spaces use. */
#include "config.h"

#include "server/reasoning.h"

#include <errno.h>
#include <string.h>

static const char OPEN[] = "<think>";
static const char CLOSE[] = "</think>";

enum {
    ST_START,   /* nothing decided: the output may open with "<think>" */
    ST_LEAD,    /* in the reasoning, dropping its leading whitespace */
    ST_THINK,   /* in the reasoning */
    ST_AFTER,   /* after "</think>", dropping the content's leading whitespace */
    ST_CONTENT, /* the rest is content */
    /* harmony: in a header, an analysis message, a final or commentary one, a call, a
     * message dropped, looking for the next "<|start|>assistant", done */
    HM_HEAD, HM_ANALYSIS, HM_TEXT, HM_CALL, HM_DROP, HM_SEEK, HM_DONE,
};

static const char *const names[] = {[RSN_AUTO] = "auto", [RSN_NONE] = "none",
                                    [RSN_DEEPSEEK] = "deepseek"};

int rsn_format_from_name(const char *name)
{
    for (int i = 0; name && i < (int)FD_ARRAY_LEN(names); i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -EINVAL;
}

const char *rsn_format_name(int format)
{
    return format >= 0 && format < (int)FD_ARRAY_LEN(names) ? names[format] : "?";
}

static const char *find(const char *s, size_t n, const char *p)
{
    size_t k = strlen(p);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(s + i, p, k) == 0)
            return s + i;
    return NULL;
}

static bool space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

void rsn_init(rsn_t *r)
{
    memset(r, 0, sizeof *r);
    sb_init(&r->hold);
    r->state = ST_START;
}

void rsn_free(rsn_t *r)
{
    sb_free(&r->hold);
}

void rsn_start_inside(rsn_t *r)
{
    r->state = ST_LEAD;
}

int rsn_prime(rsn_t *r, const char *text, size_t len)
{
    sb_t junk_r, junk_c;
    sb_init(&junk_r);
    sb_init(&junk_c);
    int rc = rsn_feed(r, text, len, &junk_r, &junk_c);
    sb_free(&junk_r);
    sb_free(&junk_c);
    r->skip = r->hold.len;
    r->n_reasoning = 0;
    r->n_tokens = 0;
    r->n_reasoning_tokens = 0;
    r->pending = 0;
    return rc;
}

bool rsn_in_reasoning(const rsn_t *r)
{
    return r->harmony ? r->state == HM_ANALYSIS : r->state == ST_LEAD || r->state == ST_THINK;
}

bool rsn_thinking(const rsn_t *r)
{
    if (r->harmony)
        return r->state == HM_HEAD || r->state == HM_ANALYSIS || r->state == HM_SEEK;
    return r->state == ST_START || r->state == ST_LEAD || r->state == ST_THINK;
}

/* The longest k < strlen(tag) such that s ends with tag's first k bytes. */
static size_t partial_tag(const char *s, size_t n, const char *tag)
{
    for (size_t k = FD_MIN(n, strlen(tag) - 1); k > 0; k--)
        if (memcmp(s + n - k, tag, k) == 0)
            return k;
    return 0;
}

/* Drops hold's first n bytes, of which the prefill's are counted off (rsn_prime). */
static void eat(rsn_t *r, size_t n)
{
    sb_consume(&r->hold, n);
    r->skip = r->skip > n ? r->skip - n : 0;
}

/* Appends hold's bytes [off, off + n) to out, less those the prefill wrote; returns how
 * many went out. */
static size_t emit(rsn_t *r, sb_t *out, size_t off, size_t n)
{
    size_t a = FD_MAX(off, r->skip);
    if (a >= off + n)
        return 0;
    sb_add(out, r->hold.buf + a, off + n - a);
    return off + n - a;
}

/* Text that stands for hold's bytes up to end (a header rewritten): out only when the
 * prefill did not write all of them. */
static void emit_for(rsn_t *r, sb_t *out, const char *text, size_t len, size_t end)
{
    if (end > r->skip)
        sb_add(out, text, len);
}

static void release_reasoning(rsn_t *r, sb_t *out, size_t off, size_t n)
{
    r->n_reasoning += emit(r, out, off, n);
}

/* Drops hold's leading whitespace (s, n: its text); true when something else follows. */
static bool drop_space(rsn_t *r, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && space(s[i]))
        i++;
    eat(r, i);
    return i < n;
}

/* Classifies what hold has, leaving in it only what is still undecided. */
static void step(rsn_t *r, sb_t *reasoning, sb_t *content)
{
    sb_t *h = &r->hold;
    for (;;) {
        const char *s = h->buf;
        size_t n = h->len;
        if (n == 0)
            return;
        switch (r->state) {
        case ST_START: {
            size_t k = FD_MIN(n, sizeof OPEN - 1);
            if (memcmp(s, OPEN, k) != 0) {
                r->state = ST_CONTENT; /* no think block: all of it is content */
                continue;
            }
            if (k < sizeof OPEN - 1)
                return; /* a prefix of the tag so far */
            eat(r, k);
            r->state = ST_LEAD;
            continue;
        }
        case ST_LEAD:
            if (!drop_space(r, s, n))
                return;
            r->state = ST_THINK;
            continue;
        case ST_THINK: {
            const char *close = find(s, n, CLOSE);
            if (close) {
                size_t e = (size_t)(close - s);
                while (e > 0 && space(s[e - 1]))
                    e--;
                release_reasoning(r, reasoning, 0, e);
                eat(r, (size_t)(close - s) + sizeof CLOSE - 1);
                r->state = ST_AFTER;
                r->closed = true;
                continue;
            }
            size_t e = n - partial_tag(s, n, CLOSE);
            while (e > 0 && space(s[e - 1]))
                e--;
            release_reasoning(r, reasoning, 0, e);
            eat(r, e);
            return;
        }
        case ST_AFTER:
            if (!drop_space(r, s, n))
                return;
            r->state = ST_CONTENT;
            continue;
        default:
            emit(r, content, 0, n);
            eat(r, n);
            return;
        }
    }
}

/* ---------------------------------------------------------------- harmony (gpt-oss) */

static const char HM_MESSAGE[] = "<|message|>", HM_END[] = "<|end|>",
                  HM_START[] = "<|start|>assistant", HM_CHANNEL[] = "<|channel|>",
                  HM_TO[] = " to=functions.";

void rsn_init_harmony(rsn_t *r, bool inline_reasoning, bool calls)
{
    r->harmony = true;
    r->inline_reasoning = inline_reasoning;
    r->calls = calls;
    r->state = HM_HEAD;
}

static bool hm_lit(const char *h, size_t n, size_t *i, const char *lit)
{
    size_t k = strlen(lit);
    if (n - *i < k || memcmp(h + *i, lit, k) != 0)
        return false;
    *i += k;
    return true;
}

/* (?: (<|constrain|>)?[a-zA-Z0-9_-]+)? up to the header's end */
static bool hm_type_tail(const char *h, size_t n, size_t i)
{
    if (i == n)
        return true;
    if (h[i] != ' ')
        return false;
    i++;
    hm_lit(h, n, &i, "<|constrain|>");
    size_t j = i;
    while (j < n && ((h[j] >= 'a' && h[j] <= 'z') || (h[j] >= 'A' && h[j] <= 'Z') ||
                     (h[j] >= '0' && h[j] <= '9') || h[j] == '_' || h[j] == '-'))
        j++;
    return j > i && j == n;
}

/* " to=functions.NAME" at *i: the name's span ([^<\s]+) */
static bool hm_recipient(const char *h, size_t n, size_t *i, size_t *name, size_t *name_len)
{
    if (!hm_lit(h, n, i, HM_TO))
        return false;
    size_t j = *i;
    while (j < n && h[j] != '<' && !space(h[j]))
        j++;
    if (j == *i)
        return false;
    *name = *i;
    *name_len = j - *i;
    *i = j;
    return true;
}

static bool hm_call_channel(const char *h, size_t n, size_t *i)
{
    return hm_lit(h, n, i, "analysis") || hm_lit(h, n, i, "commentary");
}

/* What a header h[0..n) opens: HM_ANALYSIS, HM_TEXT, HM_CALL (the name's span set) or
 * HM_SEEK (unknown), as llama-server's gpt-oss regexes match it whole. */
static int hm_classify(const char *h, size_t n, size_t *name, size_t *name_len)
{
    size_t i = 0;
    if (hm_recipient(h, n, &i, name, name_len))
        return hm_lit(h, n, &i, HM_CHANNEL) && hm_call_channel(h, n, &i) &&
               hm_type_tail(h, n, i) ? HM_CALL : HM_SEEK;
    i = 0;
    if (!hm_lit(h, n, &i, HM_CHANNEL))
        return HM_SEEK;
    size_t c = i;
    if (hm_call_channel(h, n, &c) && hm_recipient(h, n, &c, name, name_len))
        return hm_type_tail(h, n, c) ? HM_CALL : HM_SEEK;
    if (n - i == 8 && memcmp(h + i, "analysis", 8) == 0)
        return HM_ANALYSIS;
    if (n - i == 10 && memcmp(h + i, "commentary", 10) == 0)
        return HM_TEXT;
    if (hm_lit(h, n, &i, "final") && hm_type_tail(h, n, i))
        return HM_TEXT;
    return HM_SEEK;
}

/* Reasoning text of an analysis message (hold's first n bytes): its leading whitespace
 * dropped (r->lead). */
static void hm_reason(rsn_t *r, sb_t *out, size_t n)
{
    const char *s = r->hold.buf;
    size_t i = 0;
    while (r->lead && i < n && space(s[i]))
        i++;
    if (i < n) {
        r->lead = false;
        release_reasoning(r, out, i, n - i);
    }
}

/* Classifies what hold has, as step does for <think>; at_end: the output is over.  Returns
 * whether an analysis message was open at some point. */
static bool hm_step(rsn_t *r, sb_t *reasoning, sb_t *content, bool at_end)
{
    sb_t *h = &r->hold;
    bool analysis = r->state == HM_ANALYSIS;
    for (;;) {
        const char *s = h->buf;
        size_t n = h->len;
        if (n == 0 && !at_end)
            return analysis;
        switch (r->state) {
        case HM_HEAD: {
            const char *m = find(s, n, HM_MESSAGE);
            if (!m) {
                if (at_end) { /* no (complete) header: the text as written */
                    emit(r, content, 0, n);
                    eat(r, n);
                    r->state = HM_DONE;
                }
                return analysis;
            }
            size_t hl = (size_t)(m - s), name = 0, name_len = 0;
            int kind = hm_classify(s, hl, &name, &name_len);
            if (kind == HM_SEEK) {
                r->state = HM_SEEK; /* from the header's start, as llama-server looks */
                r->pending = 0;
                continue;
            }
            if (kind == HM_ANALYSIS) {
                analysis = true;
                if (r->inline_reasoning)
                    emit(r, content, 0, hl + sizeof HM_MESSAGE - 1);
                else
                    r->n_reasoning_tokens += r->pending;
                r->lead = true;
            } else if (kind == HM_CALL) {
                if (r->calls) {
                    static const char A[] = "<|channel|>commentary to=functions.",
                                      B[] = " <|constrain|>json<|message|>";
                    size_t end = hl + sizeof HM_MESSAGE - 1;
                    emit_for(r, content, A, sizeof A - 1, end);
                    emit_for(r, content, s + name, name_len, end);
                    emit_for(r, content, B, sizeof B - 1, end);
                } else {
                    kind = HM_DROP;
                }
            }
            r->pending = 0;
            r->state = kind;
            eat(r, hl + sizeof HM_MESSAGE - 1);
            continue;
        }
        case HM_ANALYSIS:
        case HM_TEXT:
        case HM_CALL:
        case HM_DROP: {
            const char *end = find(s, n, HM_END);
            bool sep = r->state == HM_ANALYSIS && !r->inline_reasoning;
            size_t e = end ? (size_t)(end - s) : at_end ? n : n - partial_tag(s, n, HM_END);
            if (sep) {
                size_t out = e; /* trailing whitespace: dropped when the message ends here,
                                   else held until more text decides */
                while (out > 0 && space(s[out - 1]))
                    out--;
                if (!end && !at_end)
                    e = out;
                hm_reason(r, reasoning, out);
            } else if (r->state != HM_DROP) {
                emit(r, content, 0, e);
                if (end && r->state == HM_ANALYSIS)
                    emit_for(r, content, HM_END, sizeof HM_END - 1, e + sizeof HM_END - 1);
            }
            if (!end) {
                eat(r, e);
                if (at_end)
                    r->state = HM_DONE;
                return analysis;
            }
            eat(r, (size_t)(end - s) + sizeof HM_END - 1);
            r->state = HM_SEEK;
            continue;
        }
        case HM_SEEK: {
            const char *st = find(s, n, HM_START);
            if (!st) { /* outside a message: dropped, but for a marker's start */
                eat(r, at_end ? n : n - partial_tag(s, n, HM_START));
                if (at_end)
                    r->state = HM_DONE;
                return analysis;
            }
            eat(r, (size_t)(st - s) + sizeof HM_START - 1);
            r->state = HM_HEAD;
            continue;
        }
        default:
            eat(r, n);
            return analysis;
        }
    }
}

int rsn_feed(rsn_t *r, const char *text, size_t len, sb_t *reasoning, sb_t *content)
{
    if (r->harmony) {
        r->n_tokens++;
        sb_add(&r->hold, text, len);
        bool analysis = hm_step(r, reasoning, content, false);
        if (analysis && !r->inline_reasoning)
            r->n_reasoning_tokens++;
        else if (r->state == HM_HEAD || r->state == HM_SEEK)
            r->pending++;
        return sb_failed(&r->hold) || sb_failed(reasoning) || sb_failed(content) ? -ENOMEM : 0;
    }
    bool was_closed = r->closed;
    r->n_tokens++;
    sb_add(&r->hold, text, len);
    step(r, reasoning, content);
    /* a block's tokens, its tags and those before an undecided start included, up to the
     * one that closed it */
    if (r->state == ST_LEAD || r->state == ST_THINK || (r->closed && !was_closed))
        r->n_reasoning_tokens = r->n_tokens;
    return sb_failed(&r->hold) || sb_failed(reasoning) || sb_failed(content) ? -ENOMEM : 0;
}

int rsn_finish(rsn_t *r, sb_t *reasoning, sb_t *content)
{
    sb_t *h = &r->hold;
    if (r->harmony) {
        hm_step(r, reasoning, content, true);
        eat(r, h->len);
        return sb_failed(reasoning) || sb_failed(content) ? -ENOMEM : 0;
    }
    if (r->state == ST_START) {
        emit(r, content, 0, h->len); /* "<thi": text after all */
    } else if (r->state == ST_THINK) {
        size_t e = h->len; /* an unclosed block: its reasoning is trimmed at the end */
        while (e > 0 && space(h->buf[e - 1]))
            e--;
        release_reasoning(r, reasoning, 0, e);
    }
    eat(r, h->len);
    r->state = ST_CONTENT;
    return sb_failed(reasoning) || sb_failed(content) ? -ENOMEM : 0;
}
