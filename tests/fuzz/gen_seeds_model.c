/* gen_seeds_model.c: writes the seed corpus of fuzz_model (tests/fuzz/corpus/fuzz_model/):
 * tiny models that llm_load accepts, between them covering both architectures (llama, qwen2
 * with its Q/K/V biases), tied and separate output matrices, grouped-query attention, every
 * weight type the CPU backend runs on rows this short, an SPM and a byte-level BPE vocabulary
 * (merges, pre-tokenizer, special tokens), and RoPE scaling.  Built with the tests; run by
 * hand:  tests/fuzz/gen_seeds_model DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/gguf_write.h"

typedef struct seed {
    const char *file;
    const char *arch;
    int n_embd, n_ff, n_layer, n_head, n_head_kv;
    int wtype;
    bool tied, bias, bpe, scaling;
} seed_t;

static int fill(void *ud, const char *name, int64_t row, float *dst, int64_t n)
{
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(row + 1);
    for (const char *c = name; *c; c++)
        s = s * 131 + (uint8_t)*c;
    bool norm = strstr(name, "norm") != NULL;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        float u = (float)(s >> 40) / (float)(1u << 24) * 2.0f - 1.0f;
        dst[i] = norm ? 1.0f + 0.1f * u : u * 0.5f;
    }
    return 0;
}

/* The vocabulary: SPM (<unk> <s> </s>, 256 byte tokens, a few pieces) or byte-level BPE (the
 * 256 byte characters, merged pieces, two specials).  Returns n_vocab. */
static int vocab(gguf_w_t *w, bool bpe)
{
    static char names[300][16];
    static const char *toks[300];
    float scores[300];
    int32_t types[300];
    int n = 0;
    int rc = 0;
    if (!bpe) {
        for (; n < 259; n++) {
            if (n < 3)
                snprintf(names[n], 16, "%s", n == 0 ? "<unk>" : n == 1 ? "<s>" : "</s>");
            else
                snprintf(names[n], 16, "<0x%02X>", n - 3);
            types[n] = n == 0 ? 2 : n < 3 ? 3 : 6;
        }
        static const char *pieces[] = {"\xe2\x96\x81", "\xe2\x96\x81t", "\xe2\x96\x81the", "e",
                                       "h", "t", "th", "he", "the", "\xe4\xb8\xad"};
        for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++, n++) {
            snprintf(names[n], 16, "%s", pieces[i]);
            types[n] = 1;
        }
        for (int i = 0; i < n; i++)
            scores[i] = -(float)i;
        rc |= gguf_w_add_str(w, "tokenizer.ggml.model", "llama");
        rc |= gguf_w_add_arr(w, "tokenizer.ggml.scores", GGUF_FLOAT32, scores, (uint64_t)n);
        rc |= gguf_w_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
        rc |= gguf_w_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    } else {
        /* GPT-2's byte-to-character map: printable bytes stand for themselves, the others
         * become U+0100 upwards, in byte order. */
        int next = 256;
        for (int b = 0; b < 256; b++, n++) {
            bool direct = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            unsigned cp = direct ? (unsigned)b : (unsigned)next++;
            if (cp < 0x80) {
                names[n][0] = (char)cp;
                names[n][1] = 0;
            } else {
                names[n][0] = (char)(0xC0 | (cp >> 6));
                names[n][1] = (char)(0x80 | (cp & 0x3F));
                names[n][2] = 0;
            }
            types[n] = 1;
        }
        static const char *pieces[] = {"th", "the", "\xc4\xa0t", "\xc4\xa0the", "in", "ing",
                                       "12"};
        for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++, n++) {
            snprintf(names[n], 16, "%s", pieces[i]);
            types[n] = 1;
        }
        snprintf(names[n], 16, "<|endoftext|>");
        types[n++] = 3;
        snprintf(names[n], 16, "<|im_start|>");
        types[n++] = 4;
        static const char *merges[] = {"t h", "th e", "\xc4\xa0 t", "\xc4\xa0t he", "i n",
                                       "in g", "1 2"};
        rc |= gguf_w_add_str(w, "tokenizer.ggml.model", "gpt2");
        rc |= gguf_w_add_str(w, "tokenizer.ggml.pre", "qwen2");
        rc |= gguf_w_add_str_arr(w, "tokenizer.ggml.merges", merges,
                                 sizeof merges / sizeof merges[0]);
        rc |= gguf_w_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)n - 2);
        rc |= gguf_w_add_bool(w, "tokenizer.ggml.add_bos_token", false);
        rc |= gguf_w_add_str(w, "tokenizer.chat_template", "{{ '<|im_start|>' }}");
    }
    for (int i = 0; i < n; i++)
        toks[i] = names[i];
    rc |= gguf_w_add_str_arr(w, "tokenizer.ggml.tokens", toks, (uint64_t)n);
    rc |= gguf_w_add_arr(w, "tokenizer.ggml.token_type", GGUF_INT32, types, (uint64_t)n);
    return rc ? -1 : n;
}

static int write_seed(const char *dir, const seed_t *sd)
{
    gguf_w_t *w;
    if (gguf_w_new(&w))
        return 1;
    char k[128], err[256], path[1024];
    const char *a = sd->arch;
    int rc = gguf_w_add_str(w, "general.architecture", a);
    rc |= gguf_w_add_str(w, "general.name", sd->file);
#define KEY(suffix, v)                                                       \
    do {                                                                     \
        snprintf(k, sizeof(k), "%s.%s", a, suffix);                          \
        rc |= gguf_w_add_u32(w, k, (uint32_t)(v));                           \
    } while (0)
    KEY("context_length", 64);
    KEY("embedding_length", sd->n_embd);
    KEY("block_count", sd->n_layer);
    KEY("feed_forward_length", sd->n_ff);
    KEY("attention.head_count", sd->n_head);
    KEY("attention.head_count_kv", sd->n_head_kv);
#undef KEY
    snprintf(k, sizeof(k), "%s.attention.layer_norm_rms_epsilon", a);
    rc |= gguf_w_add_f32(w, k, 1e-5f);
    snprintf(k, sizeof(k), "%s.rope.freq_base", a);
    rc |= gguf_w_add_f32(w, k, 10000.0f);
    if (sd->scaling) {
        snprintf(k, sizeof(k), "%s.rope.scaling.type", a);
        rc |= gguf_w_add_str(w, k, "linear");
        snprintf(k, sizeof(k), "%s.rope.scaling.factor", a);
        rc |= gguf_w_add_f32(w, k, 2.0f);
    }
    int V = vocab(w, sd->bpe);
    if (rc || V < 0)
        goto fail;

    int hd = sd->n_embd / sd->n_head, nq = sd->n_head * hd, nkv = sd->n_head_kv * hd;
    struct { const char *name; int64_t ne0, ne1; bool matrix; } t[] = {
        {"attn_norm.weight", sd->n_embd, 1, false}, {"attn_q.weight", sd->n_embd, nq, true},
        {"attn_k.weight", sd->n_embd, nkv, true},   {"attn_v.weight", sd->n_embd, nkv, true},
        {"attn_output.weight", nq, sd->n_embd, true}, {"ffn_norm.weight", sd->n_embd, 1, false},
        {"ffn_gate.weight", sd->n_embd, sd->n_ff, true}, {"ffn_up.weight", sd->n_embd, sd->n_ff, true},
        {"ffn_down.weight", sd->n_ff, sd->n_embd, true}, {"attn_q.bias", nq, 1, false},
        {"attn_k.bias", nkv, 1, false}, {"attn_v.bias", nkv, 1, false},
    };
    char tn[64];
    int64_t ne[2];
    ne[0] = sd->n_embd;
    ne[1] = V;
    rc |= gguf_w_add_tensor(w, "token_embd.weight", sd->wtype, 2, ne, NULL, fill, NULL);
    rc |= gguf_w_add_tensor(w, "output_norm.weight", GG_F32, 1, ne, NULL, fill, NULL);
    if (!sd->tied)
        rc |= gguf_w_add_tensor(w, "output.weight", sd->wtype, 2, ne, NULL, fill, NULL);
    for (int l = 0; l < sd->n_layer; l++)
        for (int i = 0; i < (sd->bias ? 12 : 9); i++) {
            snprintf(tn, sizeof(tn), "blk.%d.%s", l, t[i].name);
            ne[0] = t[i].ne0;
            ne[1] = t[i].ne1;
            rc |= gguf_w_add_tensor(w, tn, t[i].matrix ? sd->wtype : GG_F32, t[i].matrix ? 2 : 1,
                                    ne, NULL, fill, NULL);
        }
    if (rc)
        goto fail;
    uint8_t *b;
    size_t n;
    if (gguf_w_write_mem(w, &b, &n, err, sizeof(err))) {
        fprintf(stderr, "gen_seeds_model: %s: %s\n", sd->file, err);
        gguf_w_free(w);
        return 1;
    }
    gguf_w_free(w);
    snprintf(path, sizeof(path), "%s/%s", dir, sd->file);
    FILE *f = fopen(path, "wb");
    rc = !f || fwrite(b, 1, n, f) != n;
    if (f && fclose(f))
        rc = 1;
    free(b);
    if (rc)
        fprintf(stderr, "gen_seeds_model: cannot write %s\n", path);
    else
        printf("%s: %zu bytes\n", path, n);
    return rc;
fail:
    fprintf(stderr, "gen_seeds_model: %s: the writer refused a key or tensor\n", sd->file);
    gguf_w_free(w);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds_model DIR\n");
        return 2;
    }
    static const seed_t seeds[] = {
        {"llama-f32.gguf", "llama", 16, 32, 1, 2, 2, GG_F32, false, false, false, false},
        {"llama-f16-tied-gqa.gguf", "llama", 16, 32, 2, 4, 2, GG_F16, true, false, false, false},
        {"llama-bf16-mqa.gguf", "llama", 16, 16, 1, 4, 1, GG_BF16, false, false, false, false},
        {"llama-q8_0-bpe.gguf", "llama", 32, 64, 1, 2, 1, GG_Q8_0, false, false, true, false},
        {"llama-q4_0-scaled.gguf", "llama", 32, 32, 1, 4, 4, GG_Q4_0, true, false, false, true},
        {"qwen2-f32-bpe.gguf", "qwen2", 16, 32, 1, 2, 1, GG_F32, false, true, true, true},
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        rc |= write_seed(argv[1], &seeds[i]);
    return rc;
}
