/* gguf_write.h: the GGUF v3 writer, and a generator of Llama-shaped models with seeded random
 * weights built on it.  A writer collects metadata (every value type, string arrays, arrays
 * of arrays) and tensor declarations, then streams the file: tensors come from caller bytes
 * or from a row callback whose floats are converted/quantized (backends/quants.h) as they
 * are written, so models far larger than memory can be produced.  For tests, benchmarks and
 * tools (fusion-gguf-gen); one writer per thread. */
#ifndef FD_GGUF_WRITE_H
#define FD_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/gguf.h"

typedef struct gguf_w gguf_w_t;

int gguf_w_new(gguf_w_t **out);
void gguf_w_free(gguf_w_t *w);

/* Data alignment (a power of two, default 32).  A value other than 32 is also recorded as
 * general.alignment when the file is written.  Call before adding tensors. */
int gguf_w_set_alignment(gguf_w_t *w, uint32_t alignment);
/* Threads that fill and quantize rows of callback tensors (default 1). */
int gguf_w_set_threads(gguf_w_t *w, int threads);

/* Metadata, in the order added.  Keys are copied; FD_EDUP for a key already present,
 * -EINVAL for an empty key or one with a NUL inside (strn). */
int gguf_w_add_u8(gguf_w_t *w, const char *key, uint8_t v);
int gguf_w_add_i8(gguf_w_t *w, const char *key, int8_t v);
int gguf_w_add_u16(gguf_w_t *w, const char *key, uint16_t v);
int gguf_w_add_i16(gguf_w_t *w, const char *key, int16_t v);
int gguf_w_add_u32(gguf_w_t *w, const char *key, uint32_t v);
int gguf_w_add_i32(gguf_w_t *w, const char *key, int32_t v);
int gguf_w_add_u64(gguf_w_t *w, const char *key, uint64_t v);
int gguf_w_add_i64(gguf_w_t *w, const char *key, int64_t v);
int gguf_w_add_f32(gguf_w_t *w, const char *key, float v);
int gguf_w_add_f64(gguf_w_t *w, const char *key, double v);
int gguf_w_add_bool(gguf_w_t *w, const char *key, bool v);
int gguf_w_add_str(gguf_w_t *w, const char *key, const char *s);
int gguf_w_add_strn(gguf_w_t *w, const char *key, const char *s, uint64_t len);
/* An array of n fixed-size values of elem_type, given as the matching C array (uint8_t ..
 * double; GGUF_BOOL as uint8_t 0/1). */
int gguf_w_add_arr(gguf_w_t *w, const char *key, int elem_type, const void *data, uint64_t n);
int gguf_w_add_str_arr(gguf_w_t *w, const char *key, const char *const *s, uint64_t n);
/* An array of n arrays of inner_type: inner[i] is a C array as above (or const char *const *
 * for GGUF_STRING) of inner_n[i] elements. */
int gguf_w_add_arr_arr(gguf_w_t *w, const char *key, int inner_type, uint64_t n,
                       const void *const *inner, const uint64_t *inner_n);
int64_t gguf_w_n_kv(const gguf_w_t *w);

/* Fills row `row` (0 .. nelems/ne[0]) of a tensor with ne[0] floats; nonzero aborts the
 * write with that code.  With several writer threads it is called concurrently for
 * different rows. */
typedef int (*gguf_w_fill_fn)(void *ud, const char *name, int64_t row, float *dst, int64_t n);

/* Declares a tensor of any ggml type (common/ggtypes.h) and shape (ne[0] contiguous, a
 * multiple of the type's block size).  Its bytes come from data (kept by pointer: it must
 * stay valid until the write) or, when data is NULL, from fill, converted to type with
 * fq_quantize_row (FD_EUNSUP at add time if type cannot be quantized).  Returns 0, FD_EDUP,
 * FD_ESHAPE, FD_EUNSUP or FD_ERANGE. */
int gguf_w_add_tensor(gguf_w_t *w, const char *name, int type, int n_dims, const int64_t *ne,
                      const void *data, gguf_w_fill_fn fill, void *ud);
int64_t gguf_w_n_tensors(const gguf_w_t *w);
/* The type of the i-th tensor declared (0 ..), its name and number of dimensions; -1 when
 * there is none.  What a model generator chose, known without writing the file. */
int gguf_w_tensor_at(const gguf_w_t *w, int64_t i, const char **name, int *n_dims);
uint64_t gguf_w_data_bytes(const gguf_w_t *w); /* tensor data incl. alignment padding */

/* Writes the whole file.  _file writes to path.tmp and renames it into place (nothing is left
 * behind on failure); _mem returns a malloc'd buffer.  err gets a message on failure. */
int gguf_w_write(gguf_w_t *w, FILE *f, char *err, size_t errlen);
int gguf_w_write_file(gguf_w_t *w, const char *path, char *err, size_t errlen);
int gguf_w_write_mem(gguf_w_t *w, uint8_t **out, size_t *size, char *err, size_t errlen);

/* ---- Llama-shaped random models ------------------------------------------------------- */

/* Weight type for the matrices: a GG_* type, or this mix (llama.cpp's Q4_K_M recipe: Q4_K,
 * with Q6_K for output.weight (the token embedding when tied) and for attn_v / attn_qkv /
 * ffn_down / ffn_down_exps / ffn_down_shexp of the first and last eighth of the layers and
 * every third layer between; with 8 experts, Q8_0 for attn_v and attn_k and Q5_K for
 * attn_output).  Every type, mixed or not, takes llama.cpp's fallback (n_fallback) where its
 * block does not fit a row. */
#define GGUF_W_MIX_Q4_K_M 1000
/* The same recipe on Q5_K (llama.cpp's Q5_K_M). */
#define GGUF_W_MIX_Q5_K_M 1001
/* llama.cpp's IQ4_XS recipe (llama-quantize IQ4_XS, no importance matrix): IQ4_XS, with
 * Q6_K for output.weight (Q8_0 when its rows are not a multiple of 256; the token embedding
 * too when tied), Q5_K for attn_v / attn_qkv when n_head / n_head_kv >= 4 and for ffn_down
 * (and ffn_down_exps) of the first eighth of the layers; with 8 experts, Q8_0 for attn_v
 * and attn_k and Q5_K for attn_output; ffn_down_shexp as ffn_down.  Rows not a multiple of 256 fall back
 * to IQ4_NL (IQ4_XS), Q5_1 (Q5_K) or Q8_0 (Q6_K) as llama.cpp's do. */
#define GGUF_W_MIX_IQ4_XS 1010
/* llama.cpp's MXFP4_MOE recipe: the 3-D expert tensors (ffn_*_exps) MXFP4, every other
 * matrix Q8_0 (F16 for rows not a multiple of 32). */
#define GGUF_W_MIX_MXFP4_MOE 1011
/* llama.cpp's 2- and 3-bit K recipes (llama-quantize Q2_K, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L;
 * no importance matrix).  Every one: output.weight (the token embedding when tied) Q6_K, or
 * Q8_0 when its rows are not a multiple of 256; with 8 experts, Q8_0 for attn_v / attn_qkv
 * and attn_k.  Then, by recipe (n_gqa = n_head / n_head_kv, il the layer of n):
 *   Q2_K:   Q2_K; attn_v Q4_K if n_gqa >= 4 else Q3_K; ffn_down Q3_K; attn_output Q3_K
 *           (Q5_K with 8 experts)
 *   Q2_K_S: Q2_K; attn_v Q4_K if n_gqa >= 4; ffn_down Q4_K for il < n/8 (llama.cpp refuses
 *           this one without an importance matrix; the types do not depend on it)
 *   Q3_K_S: Q3_K; attn_output Q5_K with 8 experts
 *   Q3_K_M: Q3_K; attn_v Q5_K in layers 0-1, else Q4_K; ffn_down Q5_K for il < n/16, else
 *           Q4_K; attn_output Q4_K (Q5_K with 8 experts)
 *   Q3_K_L: Q3_K; attn_v, ffn_down and attn_output Q5_K (attn_output stays Q3_K with 8
 *           experts)
 * ffn_down includes ffn_down_exps and ffn_down_shexp.  As llama.cpp's "70B" models (llama
 * with 80 layers, grouped-query attention and not 8 experts; qwen2 with 80 layers), a Q3_K or
 * Q4_K attn_v becomes Q5_K (in Q4_K_M too).  Rows not a multiple of 256 fall back as every
 * type's do (n_fallback). */
#define GGUF_W_MIX_Q2_K 1002
#define GGUF_W_MIX_Q2_K_S 1003
#define GGUF_W_MIX_Q3_K_S 1004
#define GGUF_W_MIX_Q3_K_M 1005
#define GGUF_W_MIX_Q3_K_L 1006

typedef struct gguf_w_llama {
    const char *name;        /* general.name */
    const char *arch;        /* general.architecture: "llama" (NULL too), "qwen2" (Q/K/V
                                biases, NEOX RoPE), "qwen3" (per-head RMSNorm of Q and K
                                before RoPE, NEOX RoPE), "phi3" (one attn_qkv tensor, and
                                ffn_up holding gate then up rows; NEOX RoPE), "gemma2" or
                                "gemma3" (see n_swa), or the mixtures of experts "qwen3moe",
                                "qwen2moe" and "olmoe" (n_expert below); the keys are
                                "<arch>.*" */
    int head_dim;            /* attention.key_length; 0: n_embd / n_head (qwen3 models have
                                n_head * head_dim != n_embd) */
    int n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx;
    float rope_base;         /* llama.rope.freq_base */
    float norm_eps;          /* llama.attention.layer_norm_rms_epsilon */
    bool tied;               /* no output.weight: the embedding is the output matrix */
    bool rope_freqs;         /* a rope_freqs.weight tensor (Llama 3.1's per-pair RoPE
                                frequency factors), values in [1, 8) */
    int orig_ctx;            /* > 0: Phi-3.5's LongRoPE: rope_factors_short/long.weight
                                (values in [1, 8)), rope.scaling.original_context_length =
                                orig_ctx and rope.scaling.attn_factor = attn_factor */
    float attn_factor;
    /* gemma2 / gemma3: attention.sliding_window (gemma3 needs one; llama.cpp's pattern:
     * gemma2 local layers 0, 2, 4 ..., gemma3 five local to one global) and gemma2's
     * attn_logit_softcapping / final_logit_softcapping (0: keys absent, llama.cpp's 50 and
     * 30 apply).  Every gemma model has post_attention_norm and post_ffw_norm tensors, gemma3
     * attn_q_norm / attn_k_norm too; the token embedding is its output (tied) unless untied. */
    int n_swa;
    float attn_softcap, final_softcap;
    /* A Gemma-style SentencePiece vocabulary in place of the default one: <pad> <eos> <bos>
     * <unk> (ids 0-3: BOS 2, EOS 1), <mask> (control), <start_of_turn>, <end_of_turn>,
     * "\n\n", "\t\t", "<b>" (user-defined, so always matched whole), the byte tokens, then
     * the default generator's pieces with runs of spaces ("\u2581\u2581", four of them)
     * among the best-scored, and tokenizer.ggml.add_space_prefix false. */
    bool gemma_vocab;
    /* > 0: linear RoPE scaling by this factor (rope.scaling.type "linear" and
     * rope.scaling.factor, as Gemma 3 4B-27B files have it) */
    float rope_scale;
    /* > 0 with rope_scale: YaRN instead (rope.scaling.type "yarn", rope.scaling.factor, and
     * rope.scaling.original_context_length = yarn_orig_ctx, as Qwen2.5/Qwen3 long-context
     * files have them), and rope.scaling.attn_factor = attn_factor if that is > 0; not with
     * orig_ctx */
    int yarn_orig_ctx;
    int wtype;               /* GG_F32, GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_K, GG_Q5_K,
                                GG_Q6_K, GG_IQ4_NL, GG_IQ4_XS, GG_MXFP4, GGUF_W_MIX_Q4_K_M,
                                GGUF_W_MIX_Q5_K_M, GGUF_W_MIX_IQ4_XS, GGUF_W_MIX_MXFP4_MOE or
                                a GGUF_W_MIX_Q2_K .. GGUF_W_MIX_Q3_K_L mix */
    uint64_t seed;
    /* Mixture of experts: n_expert > 0 replaces each layer's ffn_gate/up/down by a router
     * (ffn_gate_inp, F32, n_expert rows, as llama.cpp's quantizer keeps it) and 3-D
     * ffn_gate_exps / ffn_up_exps / ffn_down_exps of n_expert matrices of the dense shapes
     * (n_ff is each expert's width), n_expert_used of which run per token.  Required by
     * "qwen3moe" (qwen3's head norms), "qwen2moe" (qwen2's biases, and a shared expert of
     * width n_ff: ffn_gate/up/down_shexp and its gate vector ffn_gate_inp_shexp) and "olmoe"
     * (Q and K RMS-normalized over whole rows), allowed for "llama" (Mixtral). */
    int n_expert, n_expert_used;
    /* The 3-D expert tensors' type where it is not 0 (gpt-oss's released files: GG_MXFP4, the
     * rest Q8_0 or F16), else wtype's; rows must be whole blocks of it (FD_ESHAPE) */
    int exp_wtype;
    /* out: matrices whose row length does not fit the block size of the requested type
     * (filled in by gguf_w_llama_add); they take llama.cpp's fallback: IQ4_XS -> IQ4_NL,
     * Q2_K / Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, a type of 32-blocks
     * kept, and F16 when the row is not a multiple of 32. */
    int n_fallback;
} gguf_w_llama_t;

/* Shapes of known models: "stories260K", "stories110M", "TinyLlama-1.1B", "Llama-2-7B",
 * "Llama-3-8B", "Qwen3-0.6B", "Gemma-3-270M", "Gemma-3-1B", "Gemma-2-2B", and the mixtures
 * of experts "Qwen3-30B-A3B", "OLMoE-1B-7B", "Mixtral-8x7B" and "Qwen3-MoE-tiny" (a small
 * qwen3moe for tests) (case-insensitive).  Type F32, seed 1.  -ENOENT for an unknown name. */
int gguf_w_llama_preset(const char *name, gguf_w_llama_t *p);
const char *const *gguf_w_llama_preset_names(void); /* NULL-terminated */
/* Checks the shape (FD_ESHAPE / FD_EUNSUP with a message). */
int gguf_w_llama_check(const gguf_w_llama_t *p, char *err, size_t errlen);
/* Adds the metadata, an SPM-style vocabulary (<unk>, <s>, </s>, the 256 byte tokens, then
 * generated pieces) and every tensor, with weights drawn from p->seed: matrices uniform with
 * variance 1/ne[0] (so activations keep unit scale), norms 1 +- 0.1, biases uniform in
 * +-0.5, RoPE frequency factors uniform in [1, 8).  A phi3 model's fused tensors hold the
 * same values as the llama model's separate ones would only by name, not by value.  A given tensor's
 * values depend only on seed and name, not on its type: F32 and quantized files of one seed
 * hold the same model up to quantization. */
int gguf_w_llama_add(gguf_w_t *w, gguf_w_llama_t *p, char *err, size_t errlen);
/* The value of element i of row `row` of tensor `name`, as written (before quantization). */
float gguf_w_llama_value(const gguf_w_llama_t *p, const char *name, int64_t row, int64_t i,
                         int64_t ne0);
/* Writes a whole model file, filling and quantizing on `threads` threads. */
int gguf_w_llama_write(gguf_w_llama_t *p, const char *path, int threads, char *err,
                       size_t errlen);

#endif
