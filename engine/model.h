/* model.h: one loaded Llama-family model (llama, qwen2, qwen3, phi3, gemma2, gemma3, and the
 * mixture-of-experts qwen3moe, qwen2moe, olmoe, gpt-oss and Mixtral-style llama) and its
 * batched decoder step; or a BERT encoder (bert: embedding and reranking models) and its
 * batched encoder step.
 * Owns the GGUF mapping, the hyperparameters, the tokenizer, the backend, the fusion plan
 * (fusion/: folded weights, fused or unfused operators) and the KV cache pool.
 * llm_decode runs one step over several sequences, each at its own position, some in
 * prefill (many tokens) and some in decode (one token): the scheduler's continuous batching
 * runs on it.  Not thread-safe: one thread (the engine thread, or fusion-cli) drives it. */
#ifndef FD_MODEL_H
#define FD_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"
#include "engine/gguf.h"
#include "engine/tokenizer.h"

typedef struct llm_model llm_model_t;

typedef struct llm_hparams {
    char arch[32];              /* "llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3",
                                   "qwen3moe", "qwen2moe", "olmoe" or "gpt-oss" */
    int n_vocab;
    int n_ctx_train;
    int n_ctx;                  /* effective (override or n_ctx_train) */
    int n_embd;
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;
    int n_ff;
    int n_rot;
    float norm_eps;
    float rope_freq_base;
    float rope_freq_scale;      /* 1 / linear scaling factor */
    int rope_mode;              /* enum fb_rope_mode */
    bool tied_output;           /* output.weight absent: token_embd used */
    bool qkv_bias;              /* qwen2 */
    bool qk_norm;               /* qwen3: RMSNorm of each Q and K head before RoPE */
    bool rope_freqs;            /* per-pair RoPE frequency factors: rope_freqs.weight, or
                                   Phi-3.5's rope_factors_short/long.weight */
    bool fused_gate_up;         /* phi3: ffn_up.weight holds gate then up rows */
    float rope_attn_factor;     /* rope.scaling.attn_factor (1: none): scales cos and sin */
    uint32_t n_ctx_orig;        /* rope.scaling.original_context_length (else the training
                                   context): beyond it LongRoPE takes its long factors */
    int pooling;                /* <arch>.pooling_type (llama.cpp's numbering: 0 none, 1 mean,
                                   2 cls, 3 last); -1 when the file has none */
    int64_t n_params;
    /* Gemma 1/2/3 (zero elsewhere): token embeddings times sqrt(n_embd), GELU gating; Gemma
     * 2/3: RMSNorms after attention and after the FFN, local layers with a sliding window */
    bool gemma;
    float attn_scale;           /* of the Q.K scores (llama.cpp's f_attention_scale) */
    float attn_softcap;         /* gemma2.attn_logit_softcapping (0: none) */
    float final_softcap;        /* <arch>.final_logit_softcapping (0: none) */
    int n_swa;                  /* attention.sliding_window (0: every layer global) */
    int swa_period;             /* every swa_period-th layer is global (the others local);
                                   0 when the file lists the local layers one by one */
    int n_swa_layers;           /* local layers */
    float rope_freq_base_swa;   /* RoPE base of the local layers */
    /* mixture of experts (qwen3moe, olmoe, llama with experts: Mixtral); 0 experts: dense */
    int n_expert;               /* <arch>.expert_count */
    int n_expert_used;          /* <arch>.expert_used_count: experts run per token */
    int n_ff_exp;               /* rows of each expert's gate and up */
    bool moe_norm_w;            /* the chosen experts' weights renormalized to sum 1 */
    bool qk_norm_full;          /* olmoe: Q and K RMS-normalized over whole rows */
    int n_ff_shexp;             /* qwen2moe: the shared expert's width (0: none) */
    /* gpt-oss: attention sinks, biases on Q, K, V, O, the router and the experts, the
     * swiglu_oai gating, top-k-then-softmax routing, a sliding window on alternate layers
     * (n_swa, swa_period) whose RoPE keeps the file's base and scale (rope_freq_base_swa,
     * rope_freq_scale_swa) */
    bool gptoss;
    float rope_freq_scale_swa;
    /* RoPE scaling as llama.cpp resolves it from the file and the overrides (the values its
     * context passes to ggml_rope_ext): freq_scale above, and with YaRN (ext_factor not 0)
     * the blend, its ramp's ends and the magnitude; yarn_attn_factor is llama.cpp's
     * attn_factor (rope.scaling.attn_factor included) */
    int rope_scaling;           /* enum llm_rope_scaling in effect (never _FILE) */
    float yarn_ext_factor;
    float yarn_attn_factor;
    float yarn_beta_fast, yarn_beta_slow;
    uint32_t n_ctx_orig_yarn;   /* the override, else n_ctx_orig */
    /* An encoder (arch "bert": fusion/encoder.h): no KV cache, no logits; every batch entry
     * is a whole input (llm_batch_entry_t.enc_pool); n_ctx is at most the position table */
    bool encoder;
    int n_type;                 /* token types (token_types.weight rows; 0: none) */
    int n_cls_out;              /* the classification head's outputs (0: none: no reranking) */
} llm_hparams_t;

/* RoPE scaling types (GGUF <arch>.rope.scaling.type; llama-server's --rope-scaling) */
enum llm_rope_scaling {
    LLM_ROPE_SCALING_FILE = 0, /* as the file says (an override's "unset") */
    LLM_ROPE_SCALING_NONE,
    LLM_ROPE_SCALING_LINEAR,
    LLM_ROPE_SCALING_YARN
};
/* llm_rope_params_t.set: which yarn_* overrides are given */
enum { LLM_YARN_EXT = 1, LLM_YARN_ATTN = 2, LLM_YARN_BETA_FAST = 4, LLM_YARN_BETA_SLOW = 8 };
/* "none", "linear", "yarn" to enum llm_rope_scaling (never _FILE); -EINVAL otherwise. */
int llm_rope_scaling_parse(const char *s, int *out);
const char *llm_rope_scaling_name(int type);

/* RoPE overrides, llama-server's --rope-scaling, --rope-freq-base, --rope-freq-scale,
 * --yarn-orig-ctx and the other --yarn-* (0 keeps the file's; the four yarn_* floats count
 * only with their bit in set, since 0 is a value they may take) */
typedef struct llm_rope_params {
    int scaling;                /* enum llm_rope_scaling */
    float freq_base;
    float freq_scale;           /* 1 / the scaling factor */
    int yarn_orig_ctx;
    unsigned set;               /* LLM_YARN_* bits */
    float yarn_ext_factor;      /* >= 0 (llama.cpp's default: 1 with YaRN, else 0) */
    float yarn_attn_factor;     /* > 0; llama.cpp uses it only where ext_factor is 0 */
    float yarn_beta_fast;       /* > 0 (32) */
    float yarn_beta_slow;       /* > 0 (1) */
} llm_rope_params_t;

/* One RoPE override by llama-server's flag name without the dashes: rope-scaling
 * (none|linear|yarn), rope-scale (the factor F: freq_scale 1/F), rope-freq-base,
 * rope-freq-scale, yarn-orig-ctx, yarn-ext-factor, yarn-attn-factor, yarn-beta-slow,
 * yarn-beta-fast; a negative yarn-* float unsets it (llama.cpp's -1).  0, -ENOENT for
 * another name, or -EINVAL with a message naming the flag and the values it takes. */
int llm_rope_option(llm_rope_params_t *r, const char *name, const char *value, char *err,
                    size_t errlen);
extern const char *const llm_rope_option_names[]; /* the nine, NULL-terminated */

typedef struct llm_load_params {
    const char *path;
    const char *backend;        /* default "cpu" */
    const char *const *backend_options;
    int threads;
    bool fusion;                /* fused plan (default on) */
    int softmax_mode;           /* enum fb_softmax_mode for the fused plan */
    int n_ctx;                  /* 0 = from the file */
    int n_seq_max;              /* KV cache slots (sequences at once; 0 = 1) */
    int n_batch_max;            /* most rows the backend runs at once (0 = 512): sizes the
                                   activation buffers; llm_decode splits larger calls */
    int cache_type_k;           /* KV cache element types (enum gg_type, fb_kv_type_valid:
                                   0 = F32); a backend that cannot attend over them fails */
    int cache_type_v;           /* the load with FD_EUNSUP and a message */
    llm_rope_params_t rope;     /* RoPE overrides (all zero: the file's) */
    /* Sliding-window layers (Gemma 2/3's local layers) keep a ring of the window plus
     * n_batch_max - 1 positions a slot (llm_swa_ring), where the backend reads rings and that
     * is less than n_ctx; true keeps every position there too (llama.cpp's --swa-full). */
    bool swa_full;
    /* Context checkpoints a slot keeps (llm_seq_checkpoint; 0: none), where it has rings
     * (llama-server's --ctx-checkpoints) */
    int n_ckpt;
    /* LoRA adapter files (engine/lora.h), adapter i being lora[i]: each checked against the
     * model (a bad one fails the load with a message naming file and tensor); whether and
     * how much each applies is per batch entry (llm_batch_entry_t.lora) */
    const char *const *lora;
    int n_lora;
} llm_load_params_t;

void llm_load_params_default(llm_load_params_t *p);
int llm_load(llm_model_t **out, const llm_load_params_t *p, char *err, size_t errlen);
void llm_free(llm_model_t *m);

const llm_hparams_t *llm_hparams(const llm_model_t *m);
const tok_t *llm_tok(const llm_model_t *m);
const gguf_t *llm_gguf(const llm_model_t *m);
fb_backend_t *llm_backend(const llm_model_t *m);
bool llm_fusion(const llm_model_t *m);
int llm_softmax_mode(const llm_model_t *m);  /* enum fb_softmax_mode in use (REF unfused) */
int llm_n_seq_max(const llm_model_t *m);     /* KV cache slots */
int llm_n_batch_max(const llm_model_t *m);   /* rows per internal sub-batch */
int llm_cache_type_k(const llm_model_t *m);  /* enum gg_type of the KV cache */
int llm_cache_type_v(const llm_model_t *m);
size_t llm_cache_bytes(const llm_model_t *m); /* bytes of the KV cache (K and V, all layers) */
/* Positions a slot keeps on each sliding-window layer (a ring: window + n_batch_max - 1), or
 * 0 when every layer keeps n_ctx (no local layers, swa_full, a backend without rings, or a
 * ring no smaller than n_ctx). */
int llm_swa_ring(const llm_model_t *m);
/* Context checkpoints a slot keeps (llm_load_params_t.n_ckpt where the model has rings,
 * else 0); the host bytes their copies take now, at most one takes, and at most all take. */
int llm_ctx_checkpoints(const llm_model_t *m);
size_t llm_ckpt_bytes(const llm_model_t *m);
size_t llm_ckpt_bytes_each(const llm_model_t *m);
size_t llm_ckpt_bytes_max(const llm_model_t *m);
/* Mixture of experts: how often each expert of each layer was chosen since loading
 * (n_layer * n_expert counts, layer-major), or NULL for a dense model. */
const uint64_t *llm_expert_counts(const llm_model_t *m);
/* LoRA adapters loaded (llm_load_params_t.lora), each file's path, adapter.lora.alpha (0:
 * absent) and number of adapted matrices. */
int llm_n_lora(const llm_model_t *m);
const char *llm_lora_path(const llm_model_t *m, int i);
float llm_lora_alpha(const llm_model_t *m, int i);
int llm_lora_n_mats(const llm_model_t *m, int i);

/* KV cache slots: each holds one sequence of up to n_ctx tokens at positions 0..len-1. */
int llm_seq_alloc(llm_model_t *m, int *slot);        /* FD_EFULL when none is free */
void llm_seq_free(llm_model_t *m, int slot);
int llm_seq_len(const llm_model_t *m, int slot);
/* Forgets positions >= len.  With rings (llm_swa_ring) a sequence can go on from len only
 * while its local layers still hold the window before len (positions len - n_swa + 1 ..
 * len - 1), or when one of its checkpoints covers len: then the window is copied back from
 * it into the rings and the result is 1.  Otherwise FD_ERANGE and nothing changes.  A
 * step's own rows can always be dropped again (the ring is sized for it), and len 0 always
 * works.  Checkpoints keep only positions up to len (one wholly past it goes).  0 or 1, or
 * -EINVAL, FD_ERANGE, or a backend error copying a checkpoint back (the sequence is then
 * empty: length 0, no checkpoints). */
int llm_seq_truncate(llm_model_t *m, int slot, int len);
/* The longest prefix of slot's sequence, at most len, it can be truncated to and continued
 * from: len itself, or less when a ring has overwritten positions the window at len needs
 * (the largest position <= len a checkpoint covers, else 0; -EINVAL for a bad slot or
 * len). */
int llm_seq_reusable(const llm_model_t *m, int slot, int len);

/* Context checkpoints (llama-server's, for sliding-window models): a host copy (fb_to_host)
 * of the rows slot's local layers hold for the window before each position of
 * [first, last], last <= its length, so that llm_seq_truncate can go back to any of those
 * positions after the rings have moved on (the global layers keep every position).  The
 * span is cut to its last LLM_CKPT_SPAN positions and to those whose window the rings still
 * hold.  With llm_ctx_checkpoints of them already, the oldest goes; they go with the slot
 * (llm_seq_free) and with truncations past them.  1 when saved; 0 when nothing needs one
 * (no rings, checkpoints off, last 0) or one already covers the span; FD_ERANGE when the
 * rings no longer hold the window before last; -EINVAL, -ENOMEM or a backend error (nothing
 * saved). */
#define LLM_CKPT_SPAN 8
int llm_seq_checkpoint(llm_model_t *m, int slot, int first, int last);
int llm_seq_n_checkpoints(const llm_model_t *m, int slot); /* held by slot (-EINVAL) */

/* One batch entry: n_tokens new tokens appended to slot's sequence at positions
 * len..len+n_tokens-1.  want_logits: how many of its LAST tokens produce logits, 0 to
 * n_tokens: true (1) is the last token's, the next token's distribution; more serve
 * prompt log-probabilities, which need every row's. */
typedef struct llm_batch_entry {
    int slot;
    const int32_t *tokens;
    int n_tokens;
    int want_logits;
    /* Embeddings: the final hidden states (after the output RMSNorm and its gamma: the
     * vector the LM head multiplies) of its last want_hidden rows, 0 to n_tokens, are ADDED
     * into hidden (n_embd host floats the caller zeroed): with 1 the last token's state, with
     * n_tokens the sum a mean pools, over chunks too.  hidden may be NULL when want_hidden
     * is 0. */
    int want_hidden;
    float *hidden;
    /* llm_n_lora scales, one per adapter: y = W x + scale * alpha / rank * B (A x) on every
     * adapted matrix (0: that adapter not applied; entries of one call may differ), or NULL:
     * the base model */
    const float *lora;
    /* Encoders (llm_hparams_t.encoder) only, where n_tokens is the whole input (the slot's
     * length is ignored and becomes n_tokens) and nothing gives logits: enum llm_enc_pool,
     * what goes into hidden.  LLM_ENC_SUM: the last want_hidden rows' states added (as for
     * decoders); LLM_ENC_FIRST: the first row's added (CLS); LLM_ENC_RANK: the input is a
     * pair [CLS] query [SEP] document [SEP], its rows after the first [SEP] of token type 1
     * (Hugging Face's pair encoding; with a t5 vocabulary, XLM-RoBERTa's <s> query </s></s>
     * document </s>, every row type 0), and the classification head's n_cls_out scores over
     * the first row are WRITTEN to hidden.  Plain embeddings use token type 0 throughout, as
     * llama.cpp does. */
    int enc_pool;
} llm_batch_entry_t;

enum llm_enc_pool { LLM_ENC_SUM = 0, LLM_ENC_FIRST = 1, LLM_ENC_RANK = 2 };

/* Runs one step.  logits receives n_vocab floats per row that wants them (want_logits
 * rows an entry), entry after entry, each entry's rows in order (host memory; may be
 * NULL when no entry wants logits).  Entries name distinct allocated
 * slots (at most n_seq_max entries), each with n_tokens >= 1.  Any number of tokens may be
 * passed: rows beyond n_batch_max run as further sub-batches inside the call.
 * Errors: -EINVAL (bad slot/token id, empty or duplicate entry, want_logits or want_hidden
 * outside [0, n_tokens], want_hidden without hidden), FD_ECTX (past n_ctx),
 * FD_EBACKEND or -ENOMEM from the backend.  On error no sequence's length changes. */
int llm_decode(llm_model_t *m, const llm_batch_entry_t *e, int n_entries, float *logits);

#endif
