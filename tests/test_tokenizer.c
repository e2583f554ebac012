/* test_tokenizer.c: proves the tokenizers reproduce llama.cpp's vectors for the Llama-2 SPM and
 * GPT-2 BPE vocabularies line for line, decode stories260K's reference ids to its reference
 * text, split like the llama3/qwen2/gpt2 regexes, merge by score/rank, round-trip any bytes,
 * stream whole UTF-8 characters only, and give defined results for bad input. */
#include "engine/tokenizer.h"

#include <cjson/cJSON.h>

#include "common/fd.h"
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "engine/unicode.h"
#include "tests/testutil.h"

typedef struct vocab {
    gguf_t *g;
    tok_t *t;
} vocab_t;

static void vocab_open(vocab_t *v, const char *rel)
{
    const char *path = tu_shared(rel, 1);
    char err[256];
    ck_assert_msg(gguf_open(&v->g, path, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(tok_load(&v->t, v->g, err, sizeof err) == 0, "%s", err);
}

static void vocab_close(vocab_t *v)
{
    tok_free(v->t);
    gguf_close(v->g);
}

/* Encodes into a malloc'd array (exercising the -ENOSPC protocol). */
static int32_t *encode(const tok_t *t, const char *s, size_t len, bool add, bool parse,
                       size_t *n)
{
    int32_t probe[1];
    int rc = tok_encode(t, s, len, add, parse, probe, 0, n);
    ck_assert(rc == 0 || rc == -ENOSPC);
    ck_assert_int_eq(rc, *n > 0 ? -ENOSPC : 0);
    int32_t *ids = malloc((*n + 1) * sizeof *ids);
    size_t n2;
    ck_assert_int_eq(tok_encode(t, s, len, add, parse, ids, *n, &n2), 0);
    ck_assert_uint_eq(n2, *n);
    return ids;
}

static char *decode(const tok_t *t, const int32_t *ids, size_t n, bool strip, size_t *len)
{
    int rc = tok_decode(t, ids, n, false, strip, NULL, 0, len);
    ck_assert(rc == 0 || rc == -ENOSPC);
    char *buf = malloc(*len + 1);
    size_t l2;
    ck_assert_int_eq(tok_decode(t, ids, n, false, strip, buf, *len, &l2), 0);
    ck_assert_uint_eq(l2, *len);
    buf[*len] = '\0';
    return buf;
}

static void escape(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        o += (size_t)snprintf(out + o, cap - o, c < 0x20 || c >= 0x7f ? "\\x%02x" : "%c", c);
    }
    out[o] = '\0';
}

/* The vector files: strings separated by "\n__ggml_vocab_test__\n", one id line each. */
static void check_vectors(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tokenizer-tests/%s", name);
    vocab_t v;
    vocab_open(&v, rel);
    size_t ni, no;
    char path[4096];
    snprintf(path, sizeof path, "%s.inp", tu_shared(rel, 1));
    char *inp = tu_slurp(path, &ni);
    snprintf(path, sizeof path, "%s.out", tu_shared(rel, 1));
    char *outp = tu_slurp(path, &no);
    const char *sep = "\n__ggml_vocab_test__\n";
    char *p = inp, *o = outp;
    int cases = 0, bad = 0;
    for (char *e; (e = strstr(p, sep)) != NULL; p = e + strlen(sep)) {
        char *nl = strchr(o, '\n');
        ck_assert_msg(nl != NULL, "%s: fewer expected lines than test strings", name);
        *nl = '\0';
        size_t n;
        int32_t *ids = encode(v.t, p, (size_t)(e - p), false, true, &n);
        char got[8192] = "";
        size_t gl = 0;
        for (size_t i = 0; i < n && gl + 16 < sizeof got; i++)
            gl += (size_t)snprintf(got + gl, sizeof got - gl, " %d", ids[i]);
        cases++;
        if (strcmp(got, o) != 0) {
            char esc[1024];
            escape(p, (size_t)(e - p), esc, sizeof esc);
            fprintf(stderr, "%s case %d \"%s\"\n  expected:%s\n  got:     %s\n", name, cases,
                    esc, o, got);
            bad++;
        }
        free(ids);
        o = nl + 1;
    }
    ck_assert_int_eq(cases, 46);
    ck_assert_msg(*o == '\0', "%s: more expected lines than test strings", name);
    ck_assert_msg(bad == 0, "%s: %d of %d cases differ", name, bad, cases);
    free(inp);
    free(outp);
    vocab_close(&v);
}

START_TEST(test_vectors_spm)
{
    check_vectors("ggml-vocab-llama-spm.gguf");
}
END_TEST

START_TEST(test_vectors_gpt2)
{
    check_vectors("ggml-vocab-gpt-2.gguf");
}
END_TEST

START_TEST(test_metadata)
{
    vocab_t v;
    vocab_open(&v, "tokenizer-tests/ggml-vocab-llama-spm.gguf");
    ck_assert_int_eq(tok_kind(v.t), TOK_SPM);
    ck_assert_int_eq(tok_n_vocab(v.t), 32000);
    ck_assert_int_eq(tok_bos(v.t), 1);
    ck_assert_int_eq(tok_eos(v.t), 2);
    ck_assert_int_eq(tok_unk(v.t), 0);
    ck_assert_int_eq(tok_eot(v.t), -1);
    ck_assert(tok_add_bos(v.t) && !tok_add_eos(v.t));
    ck_assert(tok_is_eog(v.t, 2) && !tok_is_eog(v.t, 1) && !tok_is_eog(v.t, -1));
    ck_assert_int_eq(tok_find(v.t, "\xE2\x96\x81Hello"), 15043);
    ck_assert_int_eq(tok_find(v.t, "no such piece"), -1);
    ck_assert_int_eq(tok_token_type(v.t, 1), TOK_T_CONTROL);
    ck_assert_int_eq(tok_token_type(v.t, 0), TOK_T_UNKNOWN);
    ck_assert_int_eq(tok_token_type(v.t, 3 + 0x41), TOK_T_BYTE);
    ck_assert_int_eq(tok_token_type(v.t, 32000), -EINVAL);
    ck_assert_str_eq(tok_token_text(v.t, 1), "<s>");
    ck_assert_ptr_null(tok_token_text(v.t, -1));

    /* BOS when asked; special texts only with parse_special; dummy prefix after specials */
    size_t n;
    int32_t *ids = encode(v.t, "Hello", 5, true, false, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 15043);
    free(ids);
    ids = encode(v.t, "<s>Hello", 8, false, true, &n);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 15043);
    free(ids);
    ids = encode(v.t, "<s>Hello", 8, false, false, &n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_ne(ids[i], 1);
    ck_assert_int_eq(ids[n - 1], 10994); /* "Hello" without the dummy space */
    free(ids);

    char buf[16];
    size_t len;
    ck_assert_int_eq(tok_piece(v.t, 15043, false, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, 6);
    ck_assert(memcmp(buf, " Hello", 6) == 0);
    ck_assert_int_eq(tok_piece(v.t, 3 + 0x0A, false, buf, sizeof buf, &len), 0);
    ck_assert(len == 1 && buf[0] == '\n');
    ck_assert_int_eq(tok_piece(v.t, 1, false, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(tok_piece(v.t, 1, true, buf, sizeof buf, &len), 0);
    ck_assert(len == 3 && memcmp(buf, "<s>", 3) == 0);
    ck_assert_int_eq(tok_piece(v.t, 15043, false, buf, 3, &len), -ENOSPC);
    ck_assert_uint_eq(len, 6);
    ck_assert_int_eq(tok_piece(v.t, 32000, false, buf, sizeof buf, &len), -EINVAL);
    vocab_close(&v);

    vocab_open(&v, "tokenizer-tests/ggml-vocab-gpt-2.gguf");
    ck_assert_int_eq(tok_kind(v.t), TOK_BPE);
    ck_assert_int_eq(tok_pre(v.t), TOK_PRE_GPT2);
    ck_assert_int_eq(tok_bos(v.t), 50256);
    ck_assert_int_eq(tok_eos(v.t), 50256);
    ck_assert_int_eq(tok_eot(v.t), 50256); /* found by its text, <|endoftext|> */
    ck_assert(!tok_add_bos(v.t));
    ids = encode(v.t, "a<|endoftext|>b", 15, false, true, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_int_eq(ids[1], 50256);
    free(ids);
    ids = encode(v.t, "a<|endoftext|>b", 15, false, false, &n);
    ck_assert_uint_gt(n, 3);
    free(ids);
    ck_assert_int_eq(tok_piece(v.t, 220, false, buf, sizeof buf, &len), 0); /* "Ġ" */
    ck_assert(len == 1 && buf[0] == ' ');
    vocab_close(&v);
}
END_TEST

/* stories260K: the reference ids decode to the reference text, and the text round-trips. */
START_TEST(test_stories_reference)
{
    const char *files[] = {"models/stories260K.gguf", "models/stories260K-ggml-org.gguf"};
    size_t jl;
    char *json = tu_slurp(tu_shared("models/stories260K.reference.json", 1), &jl);
    cJSON *root = cJSON_Parse(json);
    ck_assert_ptr_nonnull(root);
    const cJSON *gen = cJSON_GetObjectItem(root, "generated_ids");
    const char *text = cJSON_GetStringValue(cJSON_GetObjectItem(root, "text"));
    ck_assert(cJSON_IsArray(gen) && text != NULL);
    size_t ng = (size_t)cJSON_GetArraySize(gen);
    ck_assert_uint_eq(ng, 200);
    int32_t *ref = malloc((ng + 1) * sizeof *ref);
    ref[0] = 1; /* the prompt: BOS only */
    for (size_t i = 0; i < ng; i++)
        ref[i + 1] = (int32_t)cJSON_GetArrayItem(gen, (int)i)->valuedouble;
    for (size_t f = 0; f < FD_ARRAY_LEN(files); f++) {
        vocab_t v;
        vocab_open(&v, files[f]);
        ck_assert_int_eq(tok_n_vocab(v.t), 512);
        size_t len;
        char *out = decode(v.t, ref, ng + 1, true, &len);
        ck_assert_str_eq(out, text);
        free(out);

        /* streamed one id at a time: the same text */
        tok_stream_t st;
        tok_stream_init(&st, v.t, true);
        char *acc = malloc(strlen(text) + 64), chunk[64];
        size_t al = 0, cl;
        for (size_t i = 0; i < ng + 1; i++) {
            ck_assert_int_eq(tok_stream_push(&st, v.t, ref[i], chunk, sizeof chunk, &cl), 0);
            memcpy(acc + al, chunk, cl);
            al += cl;
        }
        ck_assert_int_eq(tok_stream_flush(&st, chunk, sizeof chunk, &cl), 0);
        ck_assert_uint_eq(cl, 0);
        ck_assert_uint_eq(al, strlen(text));
        ck_assert(memcmp(acc, text, al) == 0);
        free(acc);

        size_t n;
        int32_t *ids = encode(v.t, text, strlen(text), true, false, &n);
        ck_assert_int_eq(ids[0], 1);
        ck_assert_uint_lt(n, strlen(text) / 2); /* merges happened */
        out = decode(v.t, ids, n, true, &len);
        ck_assert_str_eq(out, text);
        free(out);
        free(ids);
        vocab_close(&v);
    }
    free(ref);
    cJSON_Delete(root);
    free(json);
}
END_TEST

static const struct {
    const char *s;
    size_t len; /* 0: strlen */
} assorted[] = {
    {"Hello world", 0},
    {" leading and trailing spaces  ", 0},
    {"tabs\tand\nnew\r\nlines\n\n\n", 0},
    {"emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD and ZWJ \xF0\x9F\x91\xA9\xE2\x80\x8D"
     "\xF0\x9F\x92\xBB", 0},
    {"CJK \xE4\xB8\xAD\xE6\x96\x87\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xED\x95\x9C\xEA\xB5\xAD"
     "\xEC\x96\xB4", 0},
    {"invalid \xFF\xFE bytes \xC0\xAF overlong \xED\xA0\x80 surrogate", 0},
    {"truncated \xE2\x82", 0},
    {"\xE2\x82", 0},
    {"\x80", 0},
    {"nul\0inside\0", 11},
    {"\0", 1},
    {"<s></s><unk><|endoftext|> look like specials", 0},
    {"<0x41> byte token text", 0},
    {"it's 'RE' we'll 12345 3.14 x\xC2\xA0y\xE3\x80\x80z", 0},
};

START_TEST(test_roundtrip)
{
    const char *files[] = {"tokenizer-tests/ggml-vocab-llama-spm.gguf",
                           "tokenizer-tests/ggml-vocab-gpt-2.gguf", "models/stories260K.gguf"};
    for (size_t f = 0; f < FD_ARRAY_LEN(files); f++) {
        vocab_t v;
        vocab_open(&v, files[f]);
        for (size_t i = 0; i < FD_ARRAY_LEN(assorted); i++) {
            const char *s = assorted[i].s;
            size_t sl = assorted[i].len ? assorted[i].len : strlen(s), n, len;
            int32_t *ids = encode(v.t, s, sl, false, false, &n);
            char *out = decode(v.t, ids, n, true, &len);
            ck_assert_msg(len == sl && memcmp(out, s, sl) == 0, "%s: case %zu does not round-trip",
                          files[f], i);
            for (size_t j = 0; j < n; j++) /* no control token came out of plain text */
                ck_assert_int_ne(tok_token_type(v.t, ids[j]), TOK_T_CONTROL);
            free(out);
            free(ids);
        }
        /* a literal U+2581 is SentencePiece's space: SPM gives back a space (as sentencepiece
         * does); byte-level BPE gives back the character */
        const char *lit = "a\xE2\x96\x81" "b";
        size_t n, len;
        int32_t *ids = encode(v.t, lit, strlen(lit), false, false, &n);
        char *out = decode(v.t, ids, n, true, &len);
        ck_assert_str_eq(out, tok_kind(v.t) == TOK_SPM ? "a b" : lit);
        free(out);
        free(ids);
        vocab_close(&v);
    }
}
END_TEST

/* Streaming: every chunk is whole characters; chunks + flush == the whole decode with
 * ill-formed parts replaced by U+FFFD. */
START_TEST(test_stream)
{
    vocab_t v;
    vocab_open(&v, "models/stories260K.gguf"); /* 512 pieces: non-ASCII text is byte tokens */
    const char *s = "h\xC3\xA9llo \xF0\x9F\x98\x80 \xE4\xB8\x96\xE7\x95\x8C!";
    size_t n, len;
    int32_t *ids = encode(v.t, s, strlen(s), false, false, &n);
    char *full = decode(v.t, ids, n, true, &len);
    ck_assert_str_eq(full, s);
    int split = 0;
    for (size_t i = 0; i < n; i++)
        split += tok_token_type(v.t, ids[i]) == TOK_T_BYTE;
    ck_assert_int_ge(split, 9); /* the test means something only if characters were split */
    tok_stream_t st;
    tok_stream_init(&st, v.t, true);
    char acc[256], chunk[64];
    size_t al = 0, cl;
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(tok_stream_push(&st, v.t, ids[i], chunk, sizeof chunk, &cl), 0);
        ck_assert(uni_valid((const uint8_t *)chunk, cl));
        memcpy(acc + al, chunk, cl);
        al += cl;
    }
    ck_assert_int_eq(tok_stream_flush(&st, chunk, sizeof chunk, &cl), 0);
    ck_assert_uint_eq(al + cl, len);
    ck_assert(memcmp(acc, full, len) == 0);
    free(full);
    free(ids);

    /* ill-formed byte tokens: <0xFF> alone, a cut sequence at the end, a broken one inside */
    const int32_t B = 3; /* <0x00> */
    int32_t bad[] = {B + 0xFF, B + 'a', B + 0xE2, B + 0x82, B + 'b', B + 0xE2, B + 0x82};
    tok_stream_init(&st, v.t, false);
    al = 0;
    for (size_t i = 0; i < FD_ARRAY_LEN(bad); i++) {
        ck_assert_int_eq(tok_stream_push(&st, v.t, bad[i], chunk, sizeof chunk, &cl), 0);
        memcpy(acc + al, chunk, cl);
        al += cl;
    }
    ck_assert_int_eq(st.n_pend, 2);
    ck_assert_int_eq(tok_stream_flush(&st, chunk, sizeof chunk, &cl), 0);
    memcpy(acc + al, chunk, cl);
    al += cl;
    const char *want = "\xEF\xBF\xBD" "a" "\xEF\xBF\xBD" "b" "\xEF\xBF\xBD";
    ck_assert_uint_eq(al, strlen(want));
    ck_assert(memcmp(acc, want, al) == 0);

    /* a buffer too small leaves the stream as it was */
    tok_stream_init(&st, v.t, false);
    ck_assert_int_eq(tok_stream_push(&st, v.t, B + 0xE4, chunk, sizeof chunk, &cl), 0);
    ck_assert_int_eq(tok_stream_push(&st, v.t, B + 0xB8, chunk, sizeof chunk, &cl), 0);
    ck_assert_uint_eq(cl, 0);
    ck_assert_int_eq(tok_stream_push(&st, v.t, B + 0x96, chunk, 2, &cl), -ENOSPC);
    ck_assert_uint_eq(cl, 3);
    ck_assert_int_eq(st.n_pend, 2);
    ck_assert_int_eq(tok_stream_push(&st, v.t, B + 0x96, chunk, 3, &cl), 0);
    ck_assert(cl == 3 && memcmp(chunk, "\xE4\xB8\x96", 3) == 0);
    ck_assert_int_eq(tok_stream_push(&st, v.t, 512, chunk, sizeof chunk, &cl), -EINVAL);
    vocab_close(&v);
}
END_TEST

START_TEST(test_bad_input)
{
    vocab_t v;
    vocab_open(&v, "tokenizer-tests/ggml-vocab-llama-spm.gguf");
    int32_t ids[8];
    size_t n = 99, len;
    ck_assert_int_eq(tok_encode(v.t, "", 0, false, true, ids, 8, &n), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(tok_encode(v.t, NULL, 0, true, true, ids, 8, &n), 0);
    ck_assert(n == 1 && ids[0] == 1);
    ck_assert_int_eq(tok_encode(v.t, NULL, 3, false, false, ids, 8, &n), -EINVAL);
    ck_assert_int_eq(tok_encode(v.t, "Hello world", 11, false, false, ids, 1, &n), -ENOSPC);
    ck_assert_uint_eq(n, 2);
    ck_assert_int_eq(ids[0], 15043); /* the part that fits is written */
    char buf[8];
    int32_t badids[] = {15043, -1};
    ck_assert_int_eq(tok_decode(v.t, badids, 2, false, false, buf, sizeof buf, &len), -EINVAL);
    badids[1] = 32000;
    ck_assert_int_eq(tok_decode(v.t, badids, 2, false, false, buf, sizeof buf, &len), -EINVAL);
    ck_assert_int_eq(tok_decode(v.t, badids, 1, false, false, buf, 3, &len), -ENOSPC);
    ck_assert_uint_eq(len, 6);
    ck_assert_int_eq(tok_decode(v.t, NULL, 0, false, false, NULL, 0, &len), 0);
    ck_assert_uint_eq(len, 0);

    /* a huge text (1 MiB, one fragment for SPM: no split points) round-trips */
    size_t big = 1u << 20;
    char *s = malloc(big);
    uint64_t seed = 7;
    static const char *words[] = {"the ", "cat ", "\xE4\xB8\xAD", "\n", "sat", "  ", "\xFF",
                                  "\xF0\x9F\x98\x80", "zzz", "0"};
    for (size_t i = 0; i < big;) {
        const char *w = words[tu_rand64(&seed) % FD_ARRAY_LEN(words)];
        size_t wl = strlen(w);
        if (i + wl > big)
            w = "x", wl = 1;
        memcpy(s + i, w, wl);
        i += wl;
    }
    double t0 = fd_now_s();
    int32_t *h = encode(v.t, s, big, false, false, &n);
    double dt = fd_now_s() - t0;
    fprintf(stderr, "SPM: 1 MiB encoded to %zu ids in %.3f s\n", n, dt);
    char *out = decode(v.t, h, n, true, &len);
    ck_assert(len == big && memcmp(out, s, big) == 0);
    free(out);
    free(h);
    /* 128 KiB with nowhere to cut the merge session: the heap keeps it fast */
    char *run = malloc(1u << 17);
    for (size_t i = 0; i < 1u << 17; i++)
        run[i] = "ab cd"[i % 5];
    t0 = fd_now_s();
    h = encode(v.t, run, 1u << 17, false, false, &n);
    fprintf(stderr, "SPM: 128 KiB in one session: %zu ids in %.3f s\n", n, fd_now_s() - t0);
    out = decode(v.t, h, n, true, &len);
    ck_assert(len == 1u << 17 && memcmp(out, run, len) == 0);
    free(out);
    free(h);
    free(run);
    vocab_close(&v);

    vocab_open(&v, "tokenizer-tests/ggml-vocab-gpt-2.gguf");
    t0 = fd_now_s();
    h = encode(v.t, s, big, false, false, &n);
    dt = fd_now_s() - t0;
    fprintf(stderr, "BPE: 1 MiB encoded to %zu ids in %.3f s\n", n, dt);
    out = decode(v.t, h, n, false, &len);
    ck_assert(len == big && memcmp(out, s, big) == 0);
    free(out);
    free(h);
    /* one pre-token of 256 KiB: the heap keeps it fast */
    memset(s, 'a', 1u << 18);
    h = encode(v.t, s, 1u << 18, false, false, &n);
    ck_assert_uint_le(n, 1u << 16);
    free(h);
    vocab_close(&v);
    free(s);
}
END_TEST

/* ---------------------------------------------------------------- vocabularies in memory */

/* GPT-2's byte-to-unicode table, built the way its reference code describes it. */
static void gpt2_bytes(uint32_t cps[256])
{
    bool direct[256] = {false};
    for (int b = '!'; b <= '~'; b++)
        direct[b] = true;
    for (int b = 0xA1; b <= 0xAC; b++)
        direct[b] = true;
    for (int b = 0xAE; b <= 0xFF; b++)
        direct[b] = true;
    uint32_t next = 256;
    for (int b = 0; b < 256; b++)
        cps[b] = direct[b] ? (uint32_t)b : next++;
}

typedef struct mem_vocab {
    char texts[400][32];
    const char *ptr[400];
    float scores[400];
    int32_t types[400];
    int n;
} mem_vocab_t;

static int add_tok(mem_vocab_t *m, const char *s, float score, int type)
{
    snprintf(m->texts[m->n], sizeof m->texts[0], "%s", s);
    m->ptr[m->n] = m->texts[m->n];
    m->scores[m->n] = score;
    m->types[m->n] = type;
    return m->n++;
}

static tok_t *build(mem_vocab_t *m, tok_spec_t *sp)
{
    sp->n_tokens = m->n;
    sp->texts = m->ptr;
    sp->scores = m->scores;
    sp->types = m->types;
    tok_t *t;
    char err[256];
    ck_assert_msg(tok_build(&t, sp, err, sizeof err) == 0, "%s", err);
    return t;
}

static void expect_ids(const tok_t *t, const char *s, bool parse, const int32_t *want, size_t nw)
{
    size_t n;
    int32_t *ids = encode(t, s, strlen(s), false, parse, &n);
    char got[256] = "";
    for (size_t i = 0, o = 0; i < n && o < 200; i++)
        o += (size_t)snprintf(got + o, sizeof got - o, " %d", ids[i]);
    ck_assert_msg(n == nw && memcmp(ids, want, n * sizeof *ids) == 0, "\"%s\": got%s", s, got);
    free(ids);
}

START_TEST(test_spm_merges)
{
    static mem_vocab_t m;
    m.n = 0;
    int unk = add_tok(&m, "<unk>", 0, TOK_T_UNKNOWN);
    add_tok(&m, "<s>", 0, TOK_T_CONTROL);
    add_tok(&m, "</s>", 0, TOK_T_CONTROL);
    int b0 = m.n;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        add_tok(&m, name, 0, TOK_T_BYTE);
    }
    int a = add_tok(&m, "a", -1, TOK_T_NORMAL);
    int b = add_tok(&m, "b", -1, TOK_T_NORMAL);
    int c = add_tok(&m, "c", -1, TOK_T_NORMAL);
    int ab = add_tok(&m, "ab", -3, TOK_T_NORMAL);
    int bc = add_tok(&m, "bc", -2, TOK_T_NORMAL); /* scores higher than ab: merged first */
    int sp = add_tok(&m, "\xE2\x96\x81", -1, TOK_T_NORMAL);
    int xy = add_tok(&m, "xy", 0, TOK_T_UNUSED);  /* merged through, then split again */
    int x = add_tok(&m, "x", -1, TOK_T_NORMAL);
    int y = add_tok(&m, "y", -1, TOK_T_NORMAL);
    int ctl = add_tok(&m, "<|c|>", 0, TOK_T_CONTROL);
    int ctl2 = add_tok(&m, "<|c|>>", 0, TOK_T_CONTROL);
    int usr = add_tok(&m, "<u>", 0, TOK_T_USER_DEFINED);
    int aa = add_tok(&m, "aa", -5, TOK_T_NORMAL);
    int nn = add_tok(&m, "\n\n", -1, TOK_T_NORMAL); /* '\n' is in a piece: no cut there */
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_SPM;
    s.add_space_prefix = 0;
    s.unk = unk;
    tok_t *t = build(&m, &s);
    (void)xy;

    expect_ids(t, "abc", false, (int32_t[]){a, bc}, 2);
    expect_ids(t, "ab", false, (int32_t[]){ab}, 1);
    expect_ids(t, "aaa", false, (int32_t[]){aa, a}, 2); /* equal scores: leftmost first */
    expect_ids(t, "xy", false, (int32_t[]){x, y}, 2);
    expect_ids(t, "a b", false, (int32_t[]){a, sp, b}, 3);
    expect_ids(t, "a\n\n\nb", false, (int32_t[]){a, nn, b0 + '\n', b}, 4);
    expect_ids(t, "a\tb", false, (int32_t[]){a, b0 + '\t', b}, 3); /* a cut at the tab */
    expect_ids(t, "\xC3\xA9", false, (int32_t[]){b0 + 0xC3, b0 + 0xA9}, 2); /* byte fallback */
    expect_ids(t, "a<|c|>>b", true, (int32_t[]){a, ctl2, b}, 3); /* longest special */
    expect_ids(t, "a<|c|>b", true, (int32_t[]){a, ctl, b}, 3);
    expect_ids(t, "a<u>b", false, (int32_t[]){a, usr, b}, 3); /* user-defined: always */
    int32_t plain[] = {b0 + '<', b0 + '|', c, b0 + '|', b0 + '>'};
    expect_ids(t, "<|c|>", false, plain, 5);
    tok_free(t);

    /* with the dummy prefix, it comes back after a special token */
    tok_spec_init(&s);
    s.kind = TOK_SPM;
    t = build(&m, &s);
    ck_assert(tok_add_bos(t));
    expect_ids(t, "a<u>b", false, (int32_t[]){sp, a, usr, sp, b}, 5);
    tok_free(t);

    /* no byte tokens and no <unk>: unknown characters are dropped (documented) */
    m.n = 3; /* <unk>, <s>, </s>, then one letter; s.unk stays -1 */
    a = add_tok(&m, "a", -1, TOK_T_NORMAL);
    tok_spec_init(&s);
    s.kind = TOK_SPM;
    s.add_space_prefix = 0;
    t = build(&m, &s);
    expect_ids(t, "a\xC3\xA9" "a", false, (int32_t[]){a, a}, 2);
    tok_free(t);
}
END_TEST

START_TEST(test_bpe_merges)
{
    static mem_vocab_t m;
    m.n = 0;
    uint32_t cps[256];
    gpt2_bytes(cps);
    int byte_id[256];
    for (int b = 0; b < 256; b++) {
        uint8_t u[5] = {0};
        uni_encode(cps[b], u);
        byte_id[b] = add_tok(&m, (const char *)u, 0, TOK_T_NORMAL);
    }
    int he = add_tok(&m, "he", 0, TOK_T_NORMAL);
    int ll = add_tok(&m, "ll", 0, TOK_T_NORMAL);
    int hell = add_tok(&m, "hell", 0, TOK_T_NORMAL);
    int hello = add_tok(&m, "hello", 0, TOK_T_NORMAL);
    int sp_h = add_tok(&m, "\xC4\xA0h", 0, TOK_T_NORMAL); /* "Ġh" */
    int el = add_tok(&m, "el", 0, TOK_T_NORMAL);
    int eot = add_tok(&m, "<|im_end|>", 0, TOK_T_CONTROL);
    const char *merges[] = {"l l", "h e", "he ll", "hell o", "\xC4\xA0 h", "e l", "bad",
                            "q zz"};
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_BPE;
    s.pre = "gpt2";
    s.merges = merges;
    s.n_merges = FD_ARRAY_LEN(merges);
    tok_t *t = build(&m, &s);
    ck_assert_int_eq(tok_eot(t), eot);
    ck_assert(tok_is_eog(t, eot));
    expect_ids(t, "hello", false, (int32_t[]){hello}, 1);
    expect_ids(t, "hel", false, (int32_t[]){he, byte_id['l']}, 2); /* "h e" ranks above "e l" */
    expect_ids(t, "hell", false, (int32_t[]){hell}, 1);
    expect_ids(t, "xhello", false, (int32_t[]){byte_id['x'], hello}, 2);
    /* "h e" (rank 1) goes before "Ġ h" (rank 4), and nothing joins Ġ to "he" */
    expect_ids(t, " hel", false, (int32_t[]){byte_id[' '], he, byte_id['l']}, 3);
    expect_ids(t, " h", false, (int32_t[]){sp_h}, 1);
    expect_ids(t, "el", false, (int32_t[]){el}, 1);
    expect_ids(t, "\xFF", false, (int32_t[]){byte_id[0xFF]}, 1);
    (void)ll;
    char buf[8];
    size_t len;
    ck_assert_int_eq(tok_piece(t, byte_id[' '], false, buf, sizeof buf, &len), 0);
    ck_assert(len == 1 && buf[0] == ' ');
    ck_assert_int_eq(tok_piece(t, byte_id[0xFF], false, buf, sizeof buf, &len), 0);
    ck_assert(len == 1 && (uint8_t)buf[0] == 0xFF);
    tok_free(t);

    /* llama3 skips merges for a pre-token that is a whole vocabulary entry */
    static const char *merges2[] = {"l l", "h e", "he ll", "e l"}; /* no "hell o" */
    s.pre = "llama3";
    s.merges = merges2;
    s.n_merges = FD_ARRAY_LEN(merges2);
    t = build(&m, &s);
    ck_assert_int_eq(tok_pre(t), TOK_PRE_LLAMA3);
    ck_assert(tok_add_bos(t)); /* llama3's default, but this vocabulary has no BOS */
    ck_assert_int_eq(tok_bos(t), -1);
    expect_ids(t, "hello", false, (int32_t[]){hello}, 1);
    tok_free(t);
    s.pre = "qwen2";
    t = build(&m, &s);
    expect_ids(t, "hello", false, (int32_t[]){hell, byte_id['o']}, 2);
    tok_free(t);
}
END_TEST

/* Splits checked against the regexes themselves (Python's regex module, at development). */
START_TEST(test_splits)
{
    static const struct {
        const char *pre, *text, *pieces;
    } cases[] = {
        {"gpt2", "Hello, y'all! How're you \xF0\x9F\x98\x81 ?",
         "Hello|,| y|'|all|!| How|'re| you| \xF0\x9F\x98\x81| ?"},
        {"gpt2", "it'S 'ReaLLY' 12345678\r\n\r\nb",
         "it|'|S| '|ReaLLY|'| 12345678|\r\n\r|\n|b"},
        {"gpt2", "\t\tfoo  bar   1 \n x", "\t|\t|foo| | bar|  | 1| \n| x"},
        {"llama3", "Hello, y'all! How're you \xF0\x9F\x98\x81 ?",
         "Hello|,| y|'all|!| How|'re| you| \xF0\x9F\x98\x81| ?"},
        {"llama3", "it'S 'ReaLLY' 12345678\r\n\r\nb",
         "it|'S| '|ReaLLY|'| |123|456|78|\r\n\r\n|b"},
        {"llama3", "\t\tfoo  bar   1 \n x", "\t|\tfoo| | bar|  | |1| \n| x"},
        {"llama3", "\xC3\x9Cn\xC3\xAF \xE4\xB8\xAD\xE6\x96\x87\xD9\xA1\xD9\xA2\xD9\xA3 \xC2\xBD!!\n",
         "\xC3\x9Cn\xC3\xAF| \xE4\xB8\xAD\xE6\x96\x87|\xD9\xA1\xD9\xA2\xD9\xA3| |\xC2\xBD|!!\n"},
        {"qwen2", "it'S 'ReaLLY' 12345678\r\n\r\nb",
         "it|'S| '|ReaLLY|'| |1|2|3|4|5|6|7|8|\r\n\r\n|b"},
        {"smollm", "it'S 'ReaLLY' 12345678\r\n\r\nb",
         "it|'|S| '|ReaLLY|'| |1|2|3|4|5|6|7|8|\r\n\r|\n|b"},
        {"smollm", "\t\tfoo  bar   1 \n x", "\t|\t|foo| | bar|   |1| \n| x"},
        /* ill-formed bytes are "other" characters, one byte each */
        {"llama3", "a\xFF\xFE b\xE2\x82", "a|\xFF\xFE| b|\xE2\x82"},
        /* gpt-4o (gpt-oss), derived by hand from llama.cpp's rewritten o200k regex, which
         * std::regex runs leftmost-first over text whose non-ASCII letters all count as
         * both upper and lower case and whose marks are no letters */
        {"gpt-4o", "Hello, y'all! How're you \xF0\x9F\x98\x81 ?",
         "Hello|,| y|'all|!| How're| you| \xF0\x9F\x98\x81| ?"},
        {"gpt-4o", "it'S 'ReaLLY' 12345678\r\n\r\nb",
         "it'S| '|Rea|LLY|'| |123|456|78|\r\n\r\n|b"},
        {"gpt-4o", "XMLHttpRequest camelCase DON'T i'M HELLO'S'T",
         "XMLHttp|Request| camel|Case| DON'T| i'M| HELLO'S|'T"},
        /* an upper run ending in a non-ASCII letter: that letter alone, then the rest */
        {"gpt-4o", "\xC3\x84" "BC \xC3\x84" "Bc a\xC3\x84" "b",
         "\xC3\x84|BC| \xC3\x84" "Bc| a\xC3\x84" "b"},
        {"gpt-4o", "\t\tfoo  bar   1 \n x", "\t|\tfoo| | bar|  | |1| \n| x"},
        {"gpt-4o", "\xC3\x9Cn\xC3\xAF \xE4\xB8\xAD\xE6\x96\x87\xD9\xA1\xD9\xA2\xD9\xA3\xD9\xA4 \xC2\xBD!!\n",
         "\xC3\x9Cn\xC3\xAF| \xE4\xB8\xAD\xE6\x96\x87|\xD9\xA1\xD9\xA2\xD9\xA3|\xD9\xA4| |\xC2\xBD|!!\n"},
        /* digits in threes; punctuation takes line breaks and slashes after it; a mark
         * (U+0301) is punctuation that leads the next word; 'x is a word */
        {"gpt-4o", "a1234567b x!!\n/y e\xCC\x81t 's x 's",
         "a|123|456|7|b| x|!!\n/|y| e|\xCC\x81t| '|s| x| '|s"},
        {"gpt-4o", "'s 'T", "'s| '|T"},
        {"gpt-4o", "\xE4\xB8\xAD" "abc\xE3\x80\x80Z\n\nHi", "\xE4\xB8\xAD" "abc|\xE3\x80\x80Z|\n\n|Hi"},
        {"gpt-4o", "a\xFF\xFE b\xE2\x82", "a|\xFF\xFE| b|\xE2\x82"},
        {"llama4", "camelCase", "camel|Case"},
    };
    static mem_vocab_t m;
    m.n = 0;
    add_tok(&m, "a", 0, TOK_T_NORMAL);
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        tok_spec_t s;
        tok_spec_init(&s);
        s.kind = TOK_BPE;
        s.pre = cases[i].pre;
        tok_t *t = build(&m, &s);
        size_t ends[64], n;
        const char *text = cases[i].text;
        ck_assert_int_eq(tok_split(t, text, strlen(text), ends, 64, &n), 0);
        char joined[256];
        size_t o = 0, prev = 0;
        for (size_t k = 0; k < n; k++) {
            if (k)
                joined[o++] = '|';
            memcpy(joined + o, text + prev, ends[k] - prev);
            o += ends[k] - prev;
            prev = ends[k];
        }
        joined[o] = '\0';
        ck_assert_msg(strcmp(joined, cases[i].pieces) == 0, "%s case %zu: %s", cases[i].pre, i,
                      joined);
        tok_free(t);
    }
}
END_TEST

START_TEST(test_build_errors)
{
    tok_spec_t s;
    tok_t *t = (tok_t *)1;
    char err[128];
    tok_spec_init(&s);
    ck_assert_int_eq(tok_build(&t, &s, err, sizeof err), -EINVAL); /* no kind */
    ck_assert_ptr_null(t);
    s.kind = TOK_SPM;
    ck_assert_int_eq(tok_build(&t, &s, err, sizeof err), FD_EFORMAT); /* no tokens */
    const char *texts[] = {"a", "b"};
    int32_t types[] = {1, 9};
    s.texts = texts;
    s.n_tokens = 2;
    s.types = types;
    ck_assert_int_eq(tok_build(&t, &s, err, sizeof err), FD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err, "type 9"));
    types[1] = TOK_T_NORMAL;
    s.bos = 7; /* out of range: ignored */
    ck_assert_int_eq(tok_build(&t, &s, err, sizeof err), 0);
    ck_assert_int_eq(tok_bos(t), -1);
    tok_free(t);
    tok_free(NULL);
}
END_TEST

/* FIM ids: given by the spec (out of range: an error), else found by llama.cpp's texts (the
 * token becomes a control token); PAD, REP and SEP end a generation. */
/* gpt-oss's harmony markers, as llama.cpp loads them: <|return|> and <|call|> end the
 * generation, <|end|> only a message (rendered, not EOG) when both are there; the markers
 * the chat parser reads are rendered whatever the file types them. */
START_TEST(test_harmony_tokens)
{
    static mem_vocab_t m;
    m.n = 0;
    add_tok(&m, "a", 0, TOK_T_NORMAL);
    int start = add_tok(&m, "<|start|>", 0, TOK_T_CONTROL);
    int chan = add_tok(&m, "<|channel|>", 0, TOK_T_CONTROL);
    int msg = add_tok(&m, "<|message|>", 0, TOK_T_CONTROL);
    int cons = add_tok(&m, "<|constrain|>", 0, TOK_T_CONTROL);
    int end = add_tok(&m, "<|end|>", 0, TOK_T_CONTROL);
    int ret = add_tok(&m, "<|return|>", 0, TOK_T_CONTROL);
    int call = add_tok(&m, "<|call|>", 0, TOK_T_CONTROL);
    tok_spec_t s;
    tok_spec_init(&s);
    s.kind = TOK_BPE;
    s.pre = "gpt-4o";
    s.eos = ret;
    tok_t *t = build(&m, &s);
    ck_assert_int_eq(tok_pre(t), TOK_PRE_GPT4O);
    int shown[] = {start, chan, msg, cons, end};
    char buf[32];
    size_t len;
    for (size_t i = 0; i < FD_ARRAY_LEN(shown); i++) {
        ck_assert_int_eq(tok_token_type(t, shown[i]), TOK_T_USER_DEFINED);
        ck_assert(!tok_is_eog(t, shown[i]));
        ck_assert_int_eq(tok_piece(t, shown[i], false, buf, sizeof buf, &len), 0);
        ck_assert_uint_eq(len, strlen(m.texts[shown[i]]));
        ck_assert(memcmp(buf, m.texts[shown[i]], len) == 0);
    }
    ck_assert(tok_is_eog(t, ret) && tok_is_eog(t, call));
    ck_assert_int_eq(tok_token_type(t, ret), TOK_T_CONTROL);
    ck_assert_int_eq(tok_piece(t, call, false, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, 0);
    /* user-defined: read as markers even without parse_special */
    expect_ids(t, "<|start|>a<|channel|>", false, (int32_t[]){start, 0, chan}, 3);
    tok_free(t);

    /* without <|return|> and <|call|> (Phi-3), <|end|> ends the generation as before */
    m.n = 0;
    add_tok(&m, "a", 0, TOK_T_NORMAL);
    end = add_tok(&m, "<|end|>", 0, TOK_T_CONTROL);
    ret = add_tok(&m, "<|return|>", 0, TOK_T_CONTROL);
    tok_spec_init(&s);
    s.kind = TOK_BPE;
    t = build(&m, &s);
    ck_assert(tok_is_eog(t, end) && tok_is_eog(t, ret));
    ck_assert_int_eq(tok_token_type(t, end), TOK_T_CONTROL);
    ck_assert_int_eq(tok_eot(t), end);
    tok_free(t);
}
END_TEST

START_TEST(test_fim_tokens)
{
    static mem_vocab_t m;
    m.n = 0;
    add_tok(&m, "a", 0, TOK_T_NORMAL);
    int pre = add_tok(&m, "<|fim_prefix|>", 0, TOK_T_NORMAL);
    int suf = add_tok(&m, "<|fim_suffix|>", 0, TOK_T_CONTROL);
    int mid = add_tok(&m, "<|fim_middle|>", 0, TOK_T_CONTROL);
    int pad = add_tok(&m, "<|fim_pad|>", 0, TOK_T_CONTROL);
    int rep = add_tok(&m, "<|repo_name|>", 0, TOK_T_CONTROL);
    int sep = add_tok(&m, "<|file_sep|>", 0, TOK_T_CONTROL);
    int cl = add_tok(&m, "\xE2\x96\x81<PRE>", 0, TOK_T_NORMAL);
    tok_spec_t s;
    tok_spec_init(&s);
    for (int k = 0; k < TOK_FIM_N; k++)
        ck_assert_int_eq(s.fim[k], -1);
    s.kind = TOK_BPE;
    tok_t *t = build(&m, &s);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_PRE), pre); /* the first text of the list wins */
    ck_assert_int_eq(tok_fim(t, TOK_FIM_SUF), suf);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_MID), mid);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_PAD), pad);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_REP), rep);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_SEP), sep);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_N), -1);
    ck_assert_int_eq(tok_fim(t, -1), -1);
    ck_assert_int_eq(tok_token_type(t, pre), TOK_T_CONTROL); /* made control */
    ck_assert_int_eq(tok_token_type(t, cl), TOK_T_NORMAL);
    ck_assert(tok_is_eog(t, pad) && tok_is_eog(t, rep) && tok_is_eog(t, sep));
    ck_assert(!tok_is_eog(t, pre) && !tok_is_eog(t, suf) && !tok_is_eog(t, mid));
    char buf[16];
    size_t len = 9;
    ck_assert_int_eq(tok_piece(t, pre, false, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, 0); /* a control token renders as nothing */
    expect_ids(t, "<|fim_prefix|>", true, (int32_t[]){pre}, 1);
    tok_free(t);

    s.fim[TOK_FIM_PRE] = cl; /* given: kept as it is */
    s.fim[TOK_FIM_SEP] = 0;
    t = build(&m, &s);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_PRE), cl);
    ck_assert_int_eq(tok_token_type(t, cl), TOK_T_NORMAL);
    ck_assert_int_eq(tok_token_type(t, pre), TOK_T_NORMAL);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_SEP), 0);
    ck_assert(tok_is_eog(t, 0) && !tok_is_eog(t, sep));
    tok_free(t);

    s.fim[TOK_FIM_MID] = m.n; /* past the vocabulary */
    char err[160] = "";
    s.n_tokens = m.n;
    ck_assert_int_eq(tok_build(&t, &s, err, sizeof err), FD_EFORMAT);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, "FIM middle token id 8 is past the vocabulary (8 tokens)"), "%s",
                  err);

    /* CodeLlama's SentencePiece texts, and a vocabulary without any */
    m.n = 0;
    add_tok(&m, "<unk>", 0, TOK_T_UNKNOWN);
    int cpre = add_tok(&m, "\xE2\x96\x81<PRE>", 0, TOK_T_CONTROL);
    int cmid = add_tok(&m, "\xE2\x96\x81<MID>", 0, TOK_T_CONTROL);
    int csuf = add_tok(&m, "\xE2\x96\x81<SUF>", 0, TOK_T_CONTROL);
    int ceot = add_tok(&m, "\xE2\x96\x81<EOT>", 0, TOK_T_CONTROL);
    tok_spec_init(&s);
    s.kind = TOK_SPM;
    t = build(&m, &s);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_PRE), cpre);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_SUF), csuf);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_MID), cmid);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_PAD), -1);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_REP), -1);
    ck_assert(!tok_is_eog(t, ceot)); /* "_<EOT>" (ASCII underscore) is llama.cpp's, not this */
    tok_free(t);
}
END_TEST

/* A GGUF vocabulary with FIM keys, in memory; key < 0 left out. */
static tok_t *load_fim_gguf(int64_t pre, int64_t old_pre, int64_t mid, int *rc_out, char *err,
                            size_t errlen)
{
    static const char *const toks[] = {"a", "b", "<|fim_prefix|>", "<|fim_middle|>", "x"};
    gguf_w_t *w;
    ck_assert_int_eq(gguf_w_new(&w), 0);
    ck_assert_int_eq(gguf_w_add_str(w, "tokenizer.ggml.model", "gpt2"), 0);
    ck_assert_int_eq(gguf_w_add_str_arr(w, "tokenizer.ggml.tokens", toks, 5), 0);
    static const char *const merges[] = {"a b"};
    ck_assert_int_eq(gguf_w_add_str_arr(w, "tokenizer.ggml.merges", merges, 1), 0);
    if (pre >= 0)
        ck_assert_int_eq(gguf_w_add_u32(w, "tokenizer.ggml.fim_pre_token_id", (uint32_t)pre), 0);
    if (old_pre >= 0)
        ck_assert_int_eq(gguf_w_add_u32(w, "tokenizer.ggml.prefix_token_id", (uint32_t)old_pre),
                         0);
    if (mid >= 0)
        ck_assert_int_eq(gguf_w_add_i32(w, "tokenizer.ggml.middle_token_id", (int32_t)mid), 0);
    uint8_t *mem;
    size_t size;
    ck_assert_int_eq(gguf_w_write_mem(w, &mem, &size, err, errlen), 0);
    gguf_w_free(w);
    gguf_t *g;
    ck_assert_int_eq(gguf_open_mem(&g, mem, size, "fim.gguf", err, errlen), 0);
    tok_t *t = NULL;
    *rc_out = tok_load(&t, g, err, errlen);
    gguf_close(g);
    free(mem);
    return t;
}

START_TEST(test_fim_gguf_keys)
{
    char err[200];
    int rc;
    tok_t *t = load_fim_gguf(-1, -1, -1, &rc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_PRE), 2); /* by text */
    ck_assert_int_eq(tok_fim(t, TOK_FIM_MID), 3);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_SUF), -1);
    tok_free(t);
    t = load_fim_gguf(4, -1, 1, &rc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_PRE), 4);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_MID), 1); /* the older key */
    tok_free(t);
    t = load_fim_gguf(4, 0, -1, &rc, err, sizeof err);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(tok_fim(t, TOK_FIM_PRE), 0); /* the older key wins, as in llama.cpp */
    tok_free(t);
    t = load_fim_gguf(5, -1, -1, &rc, err, sizeof err);
    ck_assert_int_eq(rc, FD_EFORMAT);
    ck_assert_ptr_null(t);
    ck_assert_msg(strstr(err, "FIM prefix token id 5 is past the vocabulary (5 tokens)"), "%s",
                  err);
    t = load_fim_gguf(-1, -1, 77, &rc, err, sizeof err);
    ck_assert_int_eq(rc, FD_EFORMAT);
    ck_assert_msg(strstr(err, "FIM middle token id 77"), "%s", err);
}
END_TEST

static const char *const shared_files[] = {
    "tokenizer-tests/ggml-vocab-llama-spm.gguf", "tokenizer-tests/ggml-vocab-llama-spm.gguf.inp",
    "tokenizer-tests/ggml-vocab-llama-spm.gguf.out", "tokenizer-tests/ggml-vocab-gpt-2.gguf",
    "tokenizer-tests/ggml-vocab-gpt-2.gguf.inp", "tokenizer-tests/ggml-vocab-gpt-2.gguf.out",
    "models/stories260K.gguf", "models/stories260K-ggml-org.gguf",
    "models/stories260K.reference.json",
};

int main(void)
{
    /* the in-memory cases always run; the shared-data ones only when it is there, and a
     * missing file then skips (or fails under FUSIOND_REQUIRE_SHARED=1) the whole program */
    const char *missing = NULL;
    for (size_t i = 0; i < FD_ARRAY_LEN(shared_files); i++)
        if (!tu_shared(shared_files[i], 0))
            missing = shared_files[i];
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("in memory");
    tcase_add_test(tc, test_spm_merges);
    tcase_add_test(tc, test_bpe_merges);
    tcase_add_test(tc, test_splits);
    tcase_add_test(tc, test_build_errors);
    tcase_add_test(tc, test_harmony_tokens);
    tcase_add_test(tc, test_fim_tokens);
    tcase_add_test(tc, test_fim_gguf_keys);
    suite_add_tcase(s, tc);
    if (!missing) {
        tc = tcase_create("real vocabularies");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_vectors_spm);
        tcase_add_test(tc, test_vectors_gpt2);
        tcase_add_test(tc, test_metadata);
        tcase_add_test(tc, test_stories_reference);
        tcase_add_test(tc, test_roundtrip);
        tcase_add_test(tc, test_stream);
        tcase_add_test(tc, test_bad_input);
        suite_add_tcase(s, tc);
    }
    int rc = tu_run(s);
    if (rc == EXIT_SUCCESS && missing)
        tu_shared(missing, 1);
    return rc;
}
