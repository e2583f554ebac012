/* strbuf.c: growable buffer; doubling growth, latched failure. */
#include "server/strbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_init(sb_t *b)
{
    memset(b, 0, sizeof *b);
}

void sb_free(sb_t *b)
{
    free(b->buf);
    sb_init(b);
}

void sb_reset(sb_t *b)
{
    b->len = 0;
    b->failed = false;
    if (b->buf)
        b->buf[0] = 0;
}

static bool grow(sb_t *b, size_t extra)
{
    if (b->failed)
        return false;
    size_t need;
    if (fd_add_size(b->len, extra + 1, &need)) {
        b->failed = true;
        return false;
    }
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    char *p = realloc(b->buf, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->buf = p;
    b->cap = cap;
    return true;
}

void sb_add(sb_t *b, const void *p, size_t n)
{
    if (!grow(b, n))
        return;
    if (n)
        memcpy(b->buf + b->len, p, n);
    b->len += n;
    b->buf[b->len] = 0;
}

void sb_adds(sb_t *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

void sb_printf(sb_t *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        sb_add(b, small, (size_t)n);
        return;
    }
    if (!grow(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sb_consume(sb_t *b, size_t n)
{
    if (n >= b->len) {
        sb_reset(b);
        return;
    }
    memmove(b->buf, b->buf + n, b->len - n + 1);
    b->len -= n;
}

char *sb_take(sb_t *b, size_t *len)
{
    if (b->failed) {
        sb_free(b);
        return NULL;
    }
    if (!b->buf && !grow(b, 0))
        return NULL;
    char *p = b->buf;
    if (len)
        *len = b->len;
    sb_init(b);
    return p;
}
