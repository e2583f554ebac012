/* strbuf.h: a growable byte buffer for building response bodies, SSE frames and the
 * metrics page.  A failed allocation latches: later appends do nothing and sb_failed()
 * says so, so builders check once at the end (request-driven memory never aborts).
 * Owned by one thread at a time; no locks. */
#ifndef FD_STRBUF_H
#define FD_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

#include "common/fd.h"

typedef struct sb {
    char *buf;      /* NUL-terminated while not failed */
    size_t len;
    size_t cap;
    bool failed;
} sb_t;

void sb_init(sb_t *b);
void sb_free(sb_t *b);
void sb_reset(sb_t *b);                 /* empty, keeps the memory */
void sb_add(sb_t *b, const void *p, size_t n);
void sb_adds(sb_t *b, const char *s);
void sb_printf(sb_t *b, const char *fmt, ...) FD_PRINTF(2, 3);
void sb_consume(sb_t *b, size_t n);     /* drops the first n bytes */
/* Hands the buffer to the caller (free() it); b is left empty.  NULL if failed. */
char *sb_take(sb_t *b, size_t *len);
static inline bool sb_failed(const sb_t *b) { return b->failed; }

#endif
