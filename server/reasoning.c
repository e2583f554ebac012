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

bool rsn_thinking(const rsn_t *r)
{
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

static void release_reasoning(rsn_t *r, sb_t *out, const char *s, size_t n)
{
    sb_add(out, s, n);
    r->n_reasoning += n;
}

/* Drops hold's leading whitespace (s, n: its text); true when something else follows. */
static bool drop_space(sb_t *h, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && space(s[i]))
        i++;
    sb_consume(h, i);
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
            sb_consume(h, k);
            r->state = ST_LEAD;
            continue;
        }
        case ST_LEAD:
            if (!drop_space(h, s, n))
                return;
            r->state = ST_THINK;
            continue;
        case ST_THINK: {
            const char *close = find(s, n, CLOSE);
            if (close) {
                size_t e = (size_t)(close - s);
                while (e > 0 && space(s[e - 1]))
                    e--;
                release_reasoning(r, reasoning, s, e);
                sb_consume(h, (size_t)(close - s) + sizeof CLOSE - 1);
                r->state = ST_AFTER;
                r->closed = true;
                continue;
            }
            size_t e = n - partial_tag(s, n, CLOSE);
            while (e > 0 && space(s[e - 1]))
                e--;
            release_reasoning(r, reasoning, s, e);
            sb_consume(h, e);
            return;
        }
        case ST_AFTER:
            if (!drop_space(h, s, n))
                return;
            r->state = ST_CONTENT;
            continue;
        default:
            sb_add(content, s, n);
            sb_reset(h);
            return;
        }
    }
}

int rsn_feed(rsn_t *r, const char *text, size_t len, sb_t *reasoning, sb_t *content)
{
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
    if (r->state == ST_START) {
        sb_add(content, h->buf, h->len); /* "<thi": text after all */
    } else if (r->state == ST_THINK) {
        size_t e = h->len; /* an unclosed block: its reasoning is trimmed at the end */
        while (e > 0 && space(h->buf[e - 1]))
            e--;
        release_reasoning(r, reasoning, h->buf, e);
    }
    sb_reset(h);
    r->state = ST_CONTENT;
    return sb_failed(reasoning) || sb_failed(content) ? -ENOMEM : 0;
}
