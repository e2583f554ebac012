/* testutil.h: helpers every Check suite shares: where ../shared is, how to skip clearly when
 * it is missing (exit 77; a failure when FUSIOND_REQUIRE_SHARED=1, as in CI), seeded random
 * numbers, a real vocabulary for the grammar masks, checking a tokenization's ids, and running
 * a suite.  Test-only. */
#ifndef FD_TESTUTIL_H
#define FD_TESTUTIL_H

#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/gguf.h"
#include "engine/grammar.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"

/* Path of a file under the shared data folder, or NULL (with a clear message, and exit 77 or
 * 1 when need is set) when it is missing. */
static inline const char *tu_shared(const char *rel, int need)
{
    static char buf[8][4096];
    static int slot;
    const char *dir = getenv("FUSIOND_SHARED");
    if (!dir || !*dir)
        dir = "../shared";
    char *p = buf[slot++ & 7];
    snprintf(p, 4096, "%s/%s", dir, rel);
    if (access(p, R_OK) == 0)
        return p;
    if (!need)
        return NULL;
    const char *req = getenv("FUSIOND_REQUIRE_SHARED");
    if (req && strcmp(req, "1") == 0) {
        fprintf(stderr, "FAIL: shared test data missing: %s (FUSIOND_REQUIRE_SHARED=1)\n", p);
        exit(1);
    }
    fprintf(stderr, "SKIP: shared test data missing: %s (set FUSIOND_SHARED)\n", p);
    exit(77);
}

/* Whether the shared file for an optional part of a suite is there: true if so; false (and a
 * line saying that part is skipped) if not, except under FUSIOND_REQUIRE_SHARED=1, where a
 * missing file fails the run as tu_shared(rel, 1) does. */
static inline int tu_shared_part(const char *rel, const char *part)
{
    if (tu_shared(rel, 0))
        return 1;
    const char *req = getenv("FUSIOND_REQUIRE_SHARED");
    if (req && strcmp(req, "1") == 0)
        tu_shared(rel, 1);
    fprintf(stderr, "SKIP: %s (shared test data missing: %s)\n", part, rel);
    return 0;
}

/* FUSIOND_TEST_TIME_SCALE (>= 1; make check sets 4 in --enable-asan builds): multiplies the
 * time bounds that only a slow build or a loaded machine can reach.  Prefer waiting for an
 * observable state; scale what is honestly a time bound. */
static inline double tu_time_scale(void)
{
    const char *s = getenv("FUSIOND_TEST_TIME_SCALE");
    double v = s ? strtod(s, NULL) : 1.0;
    return v >= 1.0 ? v : 1.0;
}

/* splitmix64: a small seeded generator for reproducible random inputs. */
static inline uint64_t tu_rand64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline float tu_randf(uint64_t *s) /* uniform in [-1, 1) */
{
    return (float)((double)(tu_rand64(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

/* max |a - b| over max |b|: how far logits (or any vector) are from a reference, relative
 * to its scale. */
static inline double tu_rel_diff(const float *a, const float *b, size_t n)
{
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / s;
}

/* A suite's scratch folder under $TMPDIR (or /tmp): tu_tmp_make(prefix) in main() before
 * the (forked) tests run, tu_tmp_path(name) for a file in it (16 at a time), tu_tmp_remove()
 * after. */
static inline char *tu_tmpdir(void)
{
    static char dir[256];
    return dir;
}
static inline void tu_tmp_make(const char *prefix)
{
    const char *t = getenv("TMPDIR");
    char *dir = tu_tmpdir();
    snprintf(dir, 256, "%s/%s-XXXXXX", t && *t ? t : "/tmp", prefix);
    if (!mkdtemp(dir)) {
        perror(dir);
        exit(1);
    }
}
static inline const char *tu_tmp_path(const char *name)
{
    static char buf[16][512];
    static int k;
    char *p = buf[k++ & 15];
    snprintf(p, 512, "%s/%s", tu_tmpdir(), name);
    return p;
}
static inline void tu_tmp_remove(void)
{
    const char *dir = tu_tmpdir();
    if (!dir[0])
        return;
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* A whole file, NUL-terminated (not counted in *len); fails the test when it cannot be read. */
static inline char *tu_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    ck_assert_int_ge(n, 0);
    rewind(f);
    char *b = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = '\0';
    *len = (size_t)n;
    return b;
}

/* Path of a file of the source tree (make check sets $top_srcdir; else the current folder). */
static inline const char *tu_src(const char *rel)
{
    static char buf[4][4096];
    static int slot;
    const char *top = getenv("top_srcdir");
    char *p = buf[slot++ & 3];
    snprintf(p, 4096, "%s/%s", top && *top ? top : ".", rel);
    return p;
}

/* Line-oriented reference files: the next line from *cur that is neither blank nor a '#'
 * comment, cut in place at its newline, *cur moved past it; NULL at the end. */
static inline char *tu_next_line(char **cur)
{
    while (*cur && **cur) {
        char *line = *cur, *nl = strchr(line, '\n');
        *cur = nl ? nl + 1 : NULL;
        if (nl)
            *nl = '\0';
        if (line[0] != '#' && line[0])
            return line;
    }
    return NULL;
}

/* The 256 byte tokens of a GPT-2 byte-level vocabulary, ids 0..255: texts[b] is byte b under
 * GPT-2's byte-to-unicode map (printable Latin-1 bytes as themselves, the others from U+0100
 * on), UTF-8 and NUL-ended; ptrs[b] points at it and types[b] is TOK_T_NORMAL. */
static inline void tu_gpt2_byte_tokens(char (*texts)[8], const char **ptrs, int32_t *types)
{
    int next = 256;
    for (int b = 0; b < 256; b++) {
        bool direct = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        uint8_t u[4];
        int k = uni_encode(direct ? (uint32_t)b : (uint32_t)next++, u);
        memcpy(texts[b], u, (size_t)k);
        texts[b][k] = '\0';
        ptrs[b] = texts[b];
        types[b] = TOK_T_NORMAL;
    }
}

/* A shared-data vocabulary opened for the grammar masks: its file, tokenizer and gr_vocab. */
typedef struct tu_vocab {
    gguf_t *gg;
    tok_t *t;
    gr_vocab_t *v;
} tu_vocab_t;

/* Opens the vocabulary of the shared file rel (skipping clearly when it is missing). */
static inline void tu_vocab_load(tu_vocab_t *f, const char *rel)
{
    const char *path = tu_shared(rel, 1);
    char err[256];
    memset(f, 0, sizeof *f);
    ck_assert_msg(gguf_open(&f->gg, path, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(tok_load(&f->t, f->gg, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(gr_vocab_build(&f->v, f->t), 0);
}

static inline void tu_vocab_free(tu_vocab_t *f)
{
    gr_vocab_free(f->v);
    tok_free(f->t);
    gguf_close(f->gg);
}

/* Encodes text with t (special: parse special-token text) and fails the test, printing both
 * lists, unless the ids are exactly want[0..nw). */
static inline void tu_expect_ids(const tok_t *t, const char *text, bool special,
                                 const int32_t *want, size_t nw)
{
    int32_t ids[64];
    size_t n;
    ck_assert_int_eq(tok_encode(t, text, strlen(text), special, false, ids, 64, &n), 0);
    bool same = n == nw;
    for (size_t i = 0; same && i < n; i++)
        same = ids[i] == want[i];
    if (!same) {
        char got[256] = "", exp[256] = "";
        for (size_t i = 0; i < n; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[i]);
        for (size_t i = 0; i < nw; i++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), " %d", want[i]);
        ck_abort_msg("'%s': got%s, want%s", text, got, exp);
    }
}
#define TU_EXPECT_IDS(t, text, special, ...)                                            \
    do {                                                                                \
        const int32_t w_[] = {__VA_ARGS__};                                             \
        tu_expect_ids(t, text, special, w_, sizeof w_ / sizeof w_[0]);                  \
    } while (0)

/* Runs one suite; returns the process exit status. */
static inline int tu_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
