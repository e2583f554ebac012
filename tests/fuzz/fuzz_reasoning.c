/* fuzz_reasoning.c: libFuzzer target: arbitrary bytes as a model's output, fed to the think
 * splitter whole and in pieces cut where the first bytes say, must not fault and must give
 * the same reasoning and content either way; neither is longer than the text, and the
 * reasoning never begins or ends with whitespace.  The first byte's low bit starts the
 * splitter inside the block (a prompt that opened it, as DeepSeek-R1's does). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/reasoning.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void split(const char *t, size_t n, const uint8_t *cuts, size_t n_cuts, bool inside,
                  sb_t *r, sb_t *c)
{
    rsn_t s;
    rsn_init(&s);
    if (inside)
        rsn_start_inside(&s);
    size_t at = 0;
    for (size_t k = 0; k < n_cuts && at < n; k++) {
        size_t step = FD_MIN((size_t)cuts[k] % 9, n - at);
        if (rsn_feed(&s, t + at, step, r, c))
            abort();
        at += step;
    }
    if (rsn_feed(&s, t + at, n - at, r, c) || rsn_finish(&s, r, c))
        abort();
    rsn_free(&s);
}

static bool space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\v' || ch == '\f' || ch == '\r';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    size_t n_cuts = FD_MIN((size_t)data[0], size - 1);
    const uint8_t *cuts = data + 1;
    const char *t = (const char *)data + 1;
    size_t n = size - 1;
    sb_t r1, c1, r2, c2;
    sb_init(&r1);
    sb_init(&c1);
    sb_init(&r2);
    sb_init(&c2);
    bool inside = data[0] & 1;
    split(t, n, NULL, 0, inside, &r1, &c1);
    split(t, n, cuts, n_cuts, inside, &r2, &c2);
    if (r1.len != r2.len || c1.len != c2.len || r1.len + c1.len > n ||
        (r1.len && memcmp(r1.buf, r2.buf, r1.len) != 0) ||
        (c1.len && memcmp(c1.buf, c2.buf, c1.len) != 0) ||
        (r1.len && (space(r1.buf[0]) || space(r1.buf[r1.len - 1]))))
        abort();
    sb_free(&r1);
    sb_free(&c1);
    sb_free(&r2);
    sb_free(&c2);
    return 0;
}
