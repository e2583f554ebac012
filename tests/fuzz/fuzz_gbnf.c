/* fuzz_gbnf.c: libFuzzer target for the GBNF parser and recognizer (engine/gbnf.h).  The
 * input is a grammar, a NUL byte, then a text (no NUL: the grammar alone).  A refused
 * grammar must say where ("line L, column C: ") or that it is too large; a compiled one
 * must take the text byte by byte within its bounds, and gb_match must agree with the
 * byte-by-byte run on the whole text.  Seeds in tests/fuzz/corpus/fuzz_gbnf. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/gbnf.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t n_gr = nul ? (size_t)(nul - data) : size;
    gb_grammar_t *g = NULL;
    char err[256];
    int rc = gb_parse(&g, (const char *)data, n_gr, err, sizeof err);
    if (rc < 0) {
        CHECK(!g && (rc == -EINVAL || rc == FD_ERANGE || rc == -ENOMEM));
        CHECK(rc != -EINVAL || strncmp(err, "line ", 5) == 0);
        CHECK(rc != FD_ERANGE || strstr(err, "too large"));
        return 0;
    }
    CHECK(g && gb_n_rules(g) > 0);
    const uint8_t *text = nul ? nul + 1 : data;
    size_t n = nul ? size - n_gr - 1 : 0;
    gb_pool_t *p = NULL;
    int32_t *bufs = malloc(2 * GB_MAX_STACKS * sizeof *bufs);
    if (!bufs || gb_pool_new(&p, g) < 0)
        goto out;
    gb_set_t a, b;
    int c = 0;
    bool ok = gb_start(p, &a, bufs) == 0;
    /* the byte-by-byte run goes through the transition cache; gb_match does not */
    gb_cache_reset(p);
    for (size_t i = 0; ok && i < n; i++) {
        int32_t *other = bufs + (1 - c) * GB_MAX_STACKS;
        uint32_t mark = gb_mark(p);
        ok = gb_feed(p, &a, &b, other, text[i]) == 0;
        if (!ok)
            break;
        CHECK(b.n <= GB_MAX_STACKS && gb_pool_nodes(p) <= GB_MAX_NODES);
        /* a byte tried and rolled back, then fed again, gives the same stacks */
        gb_set_t again;
        int32_t *tmp = malloc(GB_MAX_STACKS * sizeof *tmp);
        if (tmp && b.top != a.top) {
            memcpy(tmp, b.top, b.n * sizeof *tmp);
            gb_rollback(p, mark);
            CHECK(gb_feed(p, &a, &again, other, text[i]) == 0 && again.n == b.n);
            CHECK(memcmp(tmp, again.top, b.n * sizeof *tmp) == 0);
            b = again;
        }
        free(tmp);
        if (b.top == other)
            c = 1 - c;
        a = b;
        if ((i & 7) == 7 && a.need == 0) {
            if (a.top != bufs + c * GB_MAX_STACKS) {
                memcpy(bufs + c * GB_MAX_STACKS, a.top, a.n * sizeof *a.top);
                a.top = bufs + c * GB_MAX_STACKS;
            }
            CHECK(gb_compact(p, &a, bufs + c * GB_MAX_STACKS) == 0);
            gb_cache_reset(p);
        }
    }
    int m = gb_match(g, text, n);
    if (m >= 0)
        CHECK(m == (ok && gb_accepting(&a)));
out:
    free(bufs);
    gb_pool_free(p);
    gb_free(g);
    return 0;
}
