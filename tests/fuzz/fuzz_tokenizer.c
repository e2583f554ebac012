/* fuzz_tokenizer.c: libFuzzer target: random bytes through the tokenizer kinds (small
 * vocabularies built in memory, stories260K-like: byte fallback, scored merges, specials;
 * and a unigram one) must encode without fault, decode back to the same bytes (the unigram
 * vocabulary: well-formed text), and stream whole characters; and random bytes as a unigram
 * vocabulary's precompiled_charsmap are refused or normalize text without fault. */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"
#include "engine/ugm.h"
#include "engine/unicode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NT 400
static char texts[NT][16];
static const char *ptrs[NT];
static float scores[NT];
static int32_t types[NT];
static tok_t *vocab[5]; /* SPM, BPE gpt2, BPE llama3, BPE digits, UGM */

static int add(int *n, const char *s, float sc, int ty)
{
    snprintf(texts[*n], sizeof texts[0], "%s", s);
    ptrs[*n] = texts[*n];
    scores[*n] = sc;
    types[*n] = ty;
    return (*n)++;
}

static void setup(void)
{
    static const char *pieces[] = {"e", "t", "a", "o", "n", "h", "th", "he", "the", "an", "nd",
                                   "and", "\xE2\x96\x81t", "\xE2\x96\x81the", "\xE2\x96\x81",
                                   "\xE4\xB8\xAD", "in", "ing", "\xE2\x96\x81" "a"};
    int n = 0;
    add(&n, "<unk>", 0, TOK_T_UNKNOWN);
    add(&n, "<s>", 0, TOK_T_CONTROL);
    add(&n, "</s>", 0, TOK_T_CONTROL);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        add(&n, name, 0, TOK_T_BYTE);
    }
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++)
        add(&n, pieces[i], -(float)i, TOK_T_NORMAL);
    add(&n, "nt", 0, TOK_T_UNUSED);
    add(&n, "<|x|>", 0, TOK_T_CONTROL);
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_SPM;
    s.n_tokens = n;
    s.texts = ptrs;
    s.scores = scores;
    s.types = types;
    s.bos = 1;
    s.eos = 2;
    s.unk = 0;
    char err[128];
    if (tok_build(&vocab[0], &s, err, sizeof err))
        abort();

    /* byte-level: the 256 mapped bytes, a few merges, two specials */
    static char bl[NT][8];
    static const char *bp[NT];
    int m = 0, next = 256;
    for (int b = 0; b < 256; b++) {
        bool direct = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        uint8_t u[4];
        int k = uni_encode(direct ? (uint32_t)b : (uint32_t)next++, u);
        memcpy(bl[m], u, (size_t)k);
        bp[m] = bl[m];
        m++;
    }
    static const char *extra[] = {"th", "the", "\xC4\xA0t", "\xC4\xA0the", "in", "ing", "12",
                                  "<|x|>", "<u>"};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        bp[m++] = extra[i];
    int32_t bt[NT];
    for (int i = 0; i < m; i++)
        bt[i] = TOK_T_NORMAL;
    bt[m - 2] = TOK_T_CONTROL;
    bt[m - 1] = TOK_T_USER_DEFINED;
    static const char *merges[] = {"t h", "th e", "\xC4\xA0 t", "\xC4\xA0t he", "\xC4\xA0t h",
                                   "i n", "in g", "1 2"};
    /* the SPM vocabulary's pieces as a unigram one: identity normalization, spaces kept,
     * so a well-formed text decodes back to itself */
    tok_spec_init(&s);
    s.kind = TOK_UGM;
    s.n_tokens = n;
    s.texts = ptrs;
    s.scores = scores;
    s.types = types;
    s.bos = 1;
    s.eos = 2;
    s.unk = 0;
    s.remove_extra_ws = 0;
    if (tok_build(&vocab[4], &s, err, sizeof err))
        abort();
    static const char *pre[] = {"gpt2", "llama3", "smollm"};
    for (int v = 0; v < 3; v++) {
        tok_spec_init(&s);
        s.kind = TOK_BPE;
        s.pre = pre[v];
        s.n_tokens = m;
        s.texts = bp;
        s.types = bt;
        s.merges = merges;
        s.n_merges = sizeof merges / sizeof merges[0];
        if (tok_build(&vocab[1 + v], &s, err, sizeof err))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!vocab[0])
        setup();
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    if ((sel & 0x30) == 0x30) { /* the rest as a charsmap */
        const char *texts[] = {"<unk>", "\xE2\x96\x81", "a", " "};
        ugm_spec_t us = {.n_tokens = 4, .texts = texts, .unk = 0, .charsmap = data + 1,
                         .charsmap_len = size - 1, .add_dummy_prefix = true,
                         .remove_extra_whitespaces = sel & 0x40, .escape_whitespaces = true};
        ugm_t *u;
        char err[256];
        if (ugm_build(&u, &us, err, sizeof err) == 0) {
            uint8_t *out;
            size_t on;
            if (ugm_normalize(u, data, size, &out, &on) != 0)
                abort();
            free(out);
            ugm_free(u);
        }
        return 0;
    }
    const tok_t *t = vocab[sel & 0x10 ? 4 : sel & 3];
    bool parse = sel & 4, add = sel & 8;
    const char *text = (const char *)data + 1;
    size_t len = size - 1, n;
    if (tok_encode(t, text, len, add, parse, NULL, 0, &n) != (n ? -ENOSPC : 0))
        abort();
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    size_t n2;
    if (!ids || tok_encode(t, text, len, add, parse, ids, n, &n2) != 0 || n2 != n)
        abort();
    size_t dl;
    tok_decode(t, ids, n, true, true, NULL, 0, &dl);
    char *dec = malloc(dl + 1);
    size_t dl2;
    if (!dec || tok_decode(t, ids, n, true, true, dec, dl, &dl2) != 0 || dl2 != dl)
        abort();
    /* exact round trip where the format promises one: byte-level BPE always (specials
     * rendered); SPM for plain text (no specials, no literal U+2581, no BOS) */
    bool spm = tok_kind(t) == TOK_SPM, ugm = tok_kind(t) == TOK_UGM;
    bool plain = !parse && !add && !memmem(text, len, "\xE2\x96\x81", 3);
    if (add && !spm && tok_bos(t) >= 0)
        plain = false;
    if (ugm && !uni_valid((const uint8_t *)text, len))
        plain = false; /* ill-formed bytes read as U+FFFD, as SentencePiece reads them */
    if (((!spm && !ugm) || plain) && (dl != len || memcmp(dec, text, len) != 0))
        abort();

    /* streaming: whole characters only; equal to the decode when that is well-formed */
    tok_stream_t st;
    tok_stream_init(&st, t, true);
    st.render_special = true;
    char *acc = malloc(3 * (dl + 8) + 64);
    size_t al = 0;
    for (size_t i = 0; i < n; i++) {
        char chunk[256];
        size_t cl;
        int rc = tok_stream_push(&st, t, ids[i], chunk, sizeof chunk, &cl);
        if (rc == -ENOSPC) {
            char *big = malloc(cl);
            if (tok_stream_push(&st, t, ids[i], big, cl, &cl) != 0)
                abort();
            memcpy(acc + al, big, cl);
            free(big);
        } else if (rc == 0) {
            memcpy(acc + al, chunk, cl);
        } else {
            abort();
        }
        if (!uni_valid((const uint8_t *)acc + al, cl))
            abort();
        al += cl;
    }
    size_t cl;
    if (tok_stream_flush(&st, acc + al, 3, &cl) != 0)
        abort();
    al += cl;
    if (uni_valid((const uint8_t *)dec, dl) && (al != dl || memcmp(acc, dec, dl) != 0))
        abort();
    free(acc);
    free(dec);
    free(ids);
    return 0;
}
