/* bert_gen.c: seeded random BERT GGUF models (bert_gen.h). */
#include "engine/bert_gen.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "common/ggtypes.h"

void bert_gen_bge_small(bert_gen_t *p)
{
    *p = (bert_gen_t){ .n_embd = 384, .n_layer = 12, .n_head = 12, .n_ff = 1536,
                       .n_vocab = 30522, .n_ctx = 512, .n_types = 2, .n_cls_out = 0,
                       .pooling = 2, .type = GG_F32, .seed = 1, .eps = 1e-12f };
}

void bert_gen_xlmr_small(bert_gen_t *p)
{
    *p = (bert_gen_t){ .n_embd = 64, .n_layer = 2, .n_head = 4, .n_ff = 96, .n_vocab = 300,
                       .n_ctx = 128, .n_types = 1, .t5_vocab = 1, .n_cls_out = 0,
                       .pooling = 2, .type = GG_F32, .seed = 1, .eps = 1e-5f };
}

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

float bert_gen_value(const bert_gen_t *p, const char *name, int64_t row, int64_t i)
{
    uint64_t h = 1469598103934665603ull ^ p->seed;
    for (const char *c = name; *c; c++)
        h = (h ^ (uint8_t)*c) * 1099511628211ull;
    uint64_t r = mix(h ^ mix((uint64_t)row * 0x100000001B3ull + (uint64_t)i));
    float u = (float)((double)(r >> 11) / 9007199254740992.0) * 2.0f - 1.0f; /* [-1, 1) */
    size_t n = strlen(name);
    bool bias = n > 5 && strcmp(name + n - 5, ".bias") == 0;
    if (strstr(name, "norm.weight"))
        return 1.0f + 0.1f * u;            /* LayerNorm gammas near 1 */
    if (strstr(name, "norm.bias") || bias)
        return 0.05f * u;
    if (strstr(name, "embd") || strstr(name, "token_types"))
        return 0.5f * u;
    return u / sqrtf((float)(strstr(name, "ffn_down") ? p->n_ff : p->n_embd));
}

static int fill(void *ud, const char *name, int64_t row, float *dst, int64_t n)
{
    const bert_gen_t *p = ud;
    for (int64_t i = 0; i < n; i++)
        dst[i] = bert_gen_value(p, name, row, i);
    return 0;
}

static int add_t(gguf_w_t *w, const bert_gen_t *p, const char *name, int type, int64_t n_in,
                 int64_t n_out)
{
    int64_t ne[2] = { n_in, n_out };
    /* rows the type cannot hold (not a whole number of blocks) stay F32 */
    if (type != GG_F32 && n_in % gg_block_elems(type))
        type = GG_F32;
    /* the writer keeps p until the write: the caller's bert_gen_t must outlive it */
    return gguf_w_add_tensor(w, name, type, n_out > 1 ? 2 : 1, ne, NULL, fill, (void *)p);
}

/* No word is a single letter: the letters' word starts are pieces already, and a vocabulary
 * with a piece twice is refused by llama.cpp (tests/ref reads these files). */
static const char *const words[] = { "the", "cat", "sat", "on", "mat", "dog", "is", "an",
                                     "what", "capital", "of", "france", "paris", "ing",
                                     "hello", "world" };

/* XLM-RoBERTa's layout as the converter realigns it: <s> <pad> </s> <unk> first. */
static int vocab_t5(gguf_w_t *w, const bert_gen_t *p)
{
    const int n = p->n_vocab;
    char **t = calloc((size_t)n, sizeof(*t));
    int32_t *ty = calloc((size_t)n, sizeof(*ty));
    float *sc = calloc((size_t)n, sizeof(*sc));
    int rc = -ENOMEM;
    if (!t || !ty || !sc)
        goto done;
    static const char *const sp[] = { "<s>", "<pad>", "</s>", "<unk>" };
    for (int i = 0; i < n; i++) {
        char b[32];
        int k = i - 5;
        float score = -12.0f;
        if (i < 4) {
            snprintf(b, sizeof(b), "%s", sp[i]);
            score = 0.0f;
        } else if (i == 4) {
            snprintf(b, sizeof(b), "\xE2\x96\x81");
            score = -3.0f;
        } else if (k < 26) {
            snprintf(b, sizeof(b), "\xE2\x96\x81%c", 'a' + k);
            score = -6.0f;
        } else if (k < 52) {
            snprintf(b, sizeof(b), "%c", 'a' + k - 26);
            score = -5.0f;
        } else if (k < 52 + (int)FD_ARRAY_LEN(words)) {
            snprintf(b, sizeof(b), "\xE2\x96\x81%s", words[k - 52]);
            score = -4.0f - 0.01f * (float)(k - 52);
        } else {
            snprintf(b, sizeof(b), "\xE2\x96\x81w%d", i);
        }
        if (!(t[i] = strdup(b)))
            goto done;
        ty[i] = i == 3 ? 2 : i < 3 ? 3 : 1;
        sc[i] = score;
    }
    if ((rc = gguf_w_add_str(w, "tokenizer.ggml.model", "t5")) ||
        (rc = gguf_w_add_str(w, "tokenizer.ggml.pre", "default")) ||
        (rc = gguf_w_add_str_arr(w, "tokenizer.ggml.tokens", (const char *const *)t,
                                 (uint64_t)n)) ||
        (rc = gguf_w_add_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, sc, (uint64_t)n)) ||
        (rc = gguf_w_add_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, ty, (uint64_t)n)) ||
        (rc = gguf_w_add_bool(w, "tokenizer.ggml.add_space_prefix", true)) ||
        (rc = gguf_w_add_bool(w, "tokenizer.ggml.remove_extra_whitespaces", true)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.token_type_count", (uint32_t)p->n_types)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.bos_token_id", 0)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.padding_token_id", 1)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.eos_token_id", 2)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.unknown_token_id", 3)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.seperator_token_id", 2)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.cls_token_id", 0)) ||
        (rc = gguf_w_add_bool(w, "tokenizer.ggml.add_bos_token", true)) ||
        (rc = gguf_w_add_bool(w, "tokenizer.ggml.add_eos_token", true)) ||
        (rc = gguf_w_add_bool(w, "tokenizer.ggml.add_sep_token", true)))
        goto done;
done:
    for (int i = 0; t && i < n; i++)
        free(t[i]);
    free(t);
    free(ty);
    free(sc);
    return rc;
}

static int vocab(gguf_w_t *w, const bert_gen_t *p)
{
    if (p->t5_vocab)
        return vocab_t5(w, p);
    const int n = p->n_vocab;
    char **t = calloc((size_t)n, sizeof(*t));
    int32_t *ty = calloc((size_t)n, sizeof(*ty));
    int rc = -ENOMEM;
    if (!t || !ty)
        goto done;
    static const char *const sp[] = { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" };
    for (int i = 0; i < n; i++) {
        char b[32];
        int k = i - 5;
        if (i < 5)
            snprintf(b, sizeof(b), "%s", sp[i]);
        else if (k < 26)
            snprintf(b, sizeof(b), "\xE2\x96\x81%c", 'a' + k);
        else if (k < 52)
            snprintf(b, sizeof(b), "%c", 'a' + k - 26);
        else if (k < 52 + (int)FD_ARRAY_LEN(words))
            snprintf(b, sizeof(b), "\xE2\x96\x81%s", words[k - 52]);
        else
            snprintf(b, sizeof(b), "\xE2\x96\x81w%d", i);
        if (!(t[i] = strdup(b)))
            goto done;
        ty[i] = i == 1 ? 2 : i < 5 ? 3 : 1;
    }
    if ((rc = gguf_w_add_str(w, "tokenizer.ggml.model", "bert")) ||
        (rc = gguf_w_add_str_arr(w, "tokenizer.ggml.tokens", (const char *const *)t,
                                 (uint64_t)n)) ||
        (rc = gguf_w_add_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, ty, (uint64_t)n)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.cls_token_id", 2)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.seperator_token_id", 3)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.unknown_token_id", 1)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.padding_token_id", 0)) ||
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.mask_token_id", 4)) ||
        /* as convert_hf_to_gguf writes type_vocab_size (llama.cpp requires it) */
        (rc = gguf_w_add_u32(w, "tokenizer.ggml.token_type_count", (uint32_t)p->n_types)))
        goto done;
done:
    for (int i = 0; t && i < n; i++)
        free(t[i]);
    free(t);
    free(ty);
    return rc;
}

int bert_gen_add(gguf_w_t *w, const bert_gen_t *p, char *err, size_t errlen)
{
    if (p->n_embd < 1 || p->n_head < 1 || p->n_embd % p->n_head || p->n_layer < 1 ||
        p->n_ff < 1 || p->n_vocab < 100 || p->n_ctx < 1 || p->n_types < 0 || p->n_cls_out < 0) {
        snprintf(err, errlen, "bert: bad shape (n_embd a multiple of n_head, n_vocab >= 100)");
        return -EINVAL;
    }
    const int64_t E = p->n_embd, F = p->n_ff;
    int rc;
    if ((rc = gguf_w_add_str(w, "general.architecture", "bert")) ||
        (rc = gguf_w_add_str(w, "general.name", "bert-random")) ||
        (rc = gguf_w_add_u32(w, "bert.context_length", (uint32_t)p->n_ctx)) ||
        (rc = gguf_w_add_u32(w, "bert.embedding_length", (uint32_t)E)) ||
        (rc = gguf_w_add_u32(w, "bert.feed_forward_length", (uint32_t)F)) ||
        (rc = gguf_w_add_u32(w, "bert.block_count", (uint32_t)p->n_layer)) ||
        (rc = gguf_w_add_u32(w, "bert.attention.head_count", (uint32_t)p->n_head)) ||
        (rc = gguf_w_add_f32(w, "bert.attention.layer_norm_epsilon", p->eps)) ||
        (rc = gguf_w_add_bool(w, "bert.attention.causal", false)) ||
        (p->pooling >= 0 &&
         (rc = gguf_w_add_u32(w, "bert.pooling_type", (uint32_t)p->pooling))) ||
        (rc = vocab(w, p)))
        goto fail;
    if ((rc = add_t(w, p, "token_embd.weight", p->type, E, p->n_vocab)) ||
        (rc = add_t(w, p, "position_embd.weight", GG_F32, E, p->n_ctx)) ||
        (p->n_types && (rc = add_t(w, p, "token_types.weight", GG_F32, E, p->n_types))) ||
        (rc = add_t(w, p, "token_embd_norm.weight", GG_F32, E, 1)) ||
        (rc = add_t(w, p, "token_embd_norm.bias", GG_F32, E, 1)))
        goto fail;
    for (int l = 0; l < p->n_layer; l++) {
        static const char *const m[6] = { "attn_q", "attn_k", "attn_v", "attn_output",
                                          "ffn_up", "ffn_down" };
        for (int i = 0; i < 6; i++) {
            char wn[64], bn[64];
            snprintf(wn, sizeof(wn), "blk.%d.%s.weight", l, m[i]);
            snprintf(bn, sizeof(bn), "blk.%d.%s.bias", l, m[i]);
            int64_t in = i == 5 ? F : E, out = i == 4 ? F : E;
            if ((rc = add_t(w, p, wn, p->type, in, out)) ||
                (rc = add_t(w, p, bn, GG_F32, out, 1)))
                goto fail;
        }
        static const char *const nm[2] = { "attn_output_norm", "layer_output_norm" };
        for (int i = 0; i < 2; i++) {
            char gn[64], bn[64];
            snprintf(gn, sizeof(gn), "blk.%d.%s.weight", l, nm[i]);
            snprintf(bn, sizeof(bn), "blk.%d.%s.bias", l, nm[i]);
            if ((rc = add_t(w, p, gn, GG_F32, E, 1)) || (rc = add_t(w, p, bn, GG_F32, E, 1)))
                goto fail;
        }
    }
    if (p->n_cls_out > 0 &&
        ((rc = add_t(w, p, "cls.weight", p->type, E, E)) ||
         (rc = add_t(w, p, "cls.bias", GG_F32, E, 1)) ||
         (rc = add_t(w, p, "cls.output.weight", GG_F32, E, p->n_cls_out)) ||
         (rc = add_t(w, p, "cls.output.bias", GG_F32, p->n_cls_out, 1))))
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "bert: cannot declare the model: %s", fd_strerror(rc));
    return rc;
}

int bert_gen_write(const bert_gen_t *p, const char *path, int threads, char *err,
                   size_t errlen)
{
    gguf_w_t *w;
    int rc = gguf_w_new(&w);
    if (rc)
        return rc;
    if (threads > 0)
        gguf_w_set_threads(w, threads);
    if ((rc = bert_gen_add(w, p, err, errlen)) == 0)
        rc = gguf_w_write_file(w, path, err, errlen);
    gguf_w_free(w);
    return rc;
}
