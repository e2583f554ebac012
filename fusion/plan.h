/* plan.h: the operator plans of a Llama-family decoder (llama, qwen2, qwen3) on one backend.
 * The unfused plan is the reference: RMSNorm, separate Q, K, V products, RoPE, attention
 * with a normalized softmax, ...  The fused plan is ../shared/design/fusion.md: norm gammas
 * folded at load (fold.h), one concatenated Q|K|V product and one gate|up product on the
 * RAW rows with the RMS scale deferred to their outputs (fb_defer_t), the softmax
 * denominator deferred past P.V, and the LM head likewise.  Owns the prepared backend
 * weights (folded copies included: none on the CPU backend, fb_host_weights) and the
 * activation scratch.  Called by engine/model.c
 * (and the tests) on one thread: the thread that drives the backend. */
#ifndef FD_PLAN_H
#define FD_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"

typedef struct fz_plan fz_plan_t;

/* A model's weights as the file holds them (host memory that outlives the plan).  Each
 * fb_weight_t carries type, n_in, n_out, src, name and (qwen2 Q/K/V) bias. */
typedef struct fz_layer_src {
    const float *attn_norm;          /* n_embd */
    fb_weight_t wq, wk, wv, wo;
    const float *q_norm, *k_norm;    /* head_dim each (qwen3: every Q and K head is
                                        RMS-normalized with these before RoPE), or NULL */
    const float *ffn_norm;           /* n_embd */
    fb_weight_t w_gate, w_up, w_down; /* dense layers (n_expert 0) */
    /* Gemma 2/3: RMSNorms of the attention block's and the feed-forward block's outputs
     * before each residual add (n_embd each), or NULL */
    const float *post_attn_norm, *post_ffn_norm;
    bool swa;                        /* a local layer: sliding-window attention (n_swa) and
                                        fz_model_src_t.rope_swa */
    /* Mixture of experts (fz_model_src_t.n_expert > 0): the router (n_expert rows of
     * n_embd) and each expert's gate, up (n_ff_exp rows of n_embd) and down (n_embd rows of
     * n_ff_exp), n_expert of each, views of the file's 3-D tensors */
    fb_weight_t router;
    const fb_weight_t *exp_gate, *exp_up, *exp_down;
    /* qwen2moe: a shared expert every row runs (w_gate, w_up, w_down, n_ff wide), its output
     * scaled by sigmoid(x . shexp_gate) (one output row of n_embd); src NULL: none */
    fb_weight_t shexp_gate;
    /* gpt-oss: n_head attention sinks (fb_attn_t.sinks; host, copied to the backend), or
     * NULL.  Its other parts are biases (fb_weight_t.bias of Q, K, V, O, the router and each
     * expert's gate, up and down), fz_model_src_t.act and .moe_gating. */
    const float *attn_sinks;
} fz_layer_src_t;

/* LoRA: one adapted matrix of one adapter.  Its product adds scale * u * B (A x) to the
 * base matrix's outputs, u being the adapter's scale of each row's sequence (fz_seq_t
 * .lora); A has the base matrix's n_in and `rank` outputs, B rank inputs and the base's
 * n_out.  In the fused plan A gets the same gamma (folded or in_scale) and the same deferred
 * row scale as the base product: B is linear, so the deferred 1/r passes through it. */
enum fz_lora_target {
    FZ_LORA_Q = 0, FZ_LORA_K, FZ_LORA_V, FZ_LORA_O, FZ_LORA_GATE, FZ_LORA_UP, FZ_LORA_DOWN,
    FZ_LORA_OUTPUT, FZ_LORA_N_TARGETS
};
typedef struct fz_lora_mat {
    int adapter;                     /* index into fz_seq_t.lora */
    int layer;                       /* ignored for FZ_LORA_OUTPUT */
    int target;                      /* enum fz_lora_target */
    fb_weight_t a, b;
    float scale;                     /* alpha / rank (1 without alpha), llama.cpp's rule */
} fz_lora_mat_t;

/* The feed-forward activation of gate times up.  SWIGLU_OAI: gpt-oss's (fb_swiglu_oai with
 * llama.cpp's constants below). */
enum fz_act { FZ_ACT_SILU = 0, FZ_ACT_GELU = 1, FZ_ACT_SWIGLU_OAI = 2 };
#define FZ_SWIGLU_OAI_ALPHA 1.702f
#define FZ_SWIGLU_OAI_LIMIT 7.0f

/* How the router's logits become expert weights (llama.cpp's build_moe_ffn): probabilities
 * by softmax over all experts (or a sigmoid each), the top n_expert_used of them chosen, their
 * probabilities renormalized to sum 1 when norm_w, then multiplied by w_scale (0 or 1:
 * not).  SOFTMAX_WEIGHT (gpt-oss): the top n_expert_used logits chosen, their weights the
 * softmax over those chosen only. */
enum fz_moe_gating { FZ_GATING_SOFTMAX = 0, FZ_GATING_SIGMOID = 1, FZ_GATING_SOFTMAX_WEIGHT = 2 };

typedef struct fz_model_src {
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab;
    float eps;                       /* RMSNorm epsilon */
    float rope_attn_factor;          /* multiplies RoPE's cos and sin (Phi-3.5's LongRoPE; 0
                                        or 1: none): attention scores scale by its square */
    fb_rope_t rope;                  /* its freq_factors are the plan's own (rope_freqs) */
    const float *rope_freqs;         /* n_rot / 2 RoPE frequency factors, or NULL */
    fb_weight_t tok_embd;            /* n_vocab rows of n_embd */
    const float *out_norm;           /* n_embd */
    fb_weight_t output;              /* LM head; tok_embd's bytes when the model ties them */
    const fz_layer_src_t *layers;    /* n_layer */
    /* Gemma's parts (all zero for the other families) */
    int act;                         /* enum fz_act */
    float embd_scale;                /* token embeddings multiplied by this (0: not) */
    float attn_scale;                /* of the Q.K scores (0: 1/sqrt(head_dim)) */
    float attn_softcap;              /* fb_attn_t.softcap of every layer (0: none) */
    float final_softcap;             /* logits become c tanh(logit / c) (0: none) */
    int n_swa;                       /* the local layers' window (fb_attn_t.window) */
    fb_rope_t rope_swa;              /* the local layers' RoPE (freq_factors unused) */
    bool qk_norm_full;               /* OLMoE: q_norm / k_norm normalize each whole Q row
                                        (n_head * head_dim) and K row, not each head */
    int n_expert, n_expert_used;     /* 0: dense feed-forward */
    int n_ff_exp;                    /* rows of each expert's gate and up */
    int moe_gating;                  /* enum fz_moe_gating */
    bool moe_norm_w;
    float moe_w_scale;
    /* LoRA adapters (0: none): n_lora adapters whose n_lora_mats matrices are here; the
     * plan prepares its own copies of the weights (the bytes must outlive the plan) */
    int n_lora, n_lora_mats;
    const fz_lora_mat_t *lora;
} fz_model_src_t;

typedef struct fz_plan_opts {
    bool fused;
    int softmax_mode;                /* fused plan: FB_SOFTMAX_MAXSUM or _SUMONLY; the
                                        unfused plan always uses FB_SOFTMAX_REF */
    int fold_policy;                 /* enum fz_fold_policy (FZ_FOLD_AUTO: in_scale for
                                        every type on a backend with host_weights, else
                                        fold.c's choice) */
    int max_rows;                    /* most rows (tokens) in one fz_forward */
    int max_seqs;                    /* most sequences in one fz_forward */
} fz_plan_opts_t;

int fz_plan_create(fz_plan_t **out, fb_backend_t *be, const fz_model_src_t *src,
                   const fz_plan_opts_t *opts, char *err, size_t errlen);
void fz_plan_free(fz_plan_t *p);
bool fz_plan_fused(const fz_plan_t *p);
int fz_plan_softmax_mode(const fz_plan_t *p);
/* Bytes of weight copies the plan holds (folded or concatenated matrices); 0 when every
 * product reads the model's own bytes, as the fused plan's do on the CPU backend. */
size_t fz_plan_weight_copies(const fz_plan_t *p);
/* Mixture of experts: how many times each expert of each layer was chosen since the plan was
 * created (n_layer * n_expert counts, layer-major), or NULL for a dense model. */
const uint64_t *fz_plan_expert_counts(const fz_plan_t *p);

/* The KV cache the forward writes and attends to (backend memory, owned by the caller):
 * layer l, slot s, position t is row s * n_ctx + t of k[l] (and of v[l]), each row n_head_kv
 * heads in the layout of backend.h's typed caches: fb_kv_row_bytes(type_k, n_head_kv,
 * head_dim) bytes (F32: kv_dim = n_head_kv * head_dim floats).  A local layer may keep a
 * ring instead (ring[l] > 0 rows a slot): position t is row s * ring[l] + t % ring[l], so it
 * holds the last ring[l] positions written; ring[l] must be at least the window plus the
 * most rows a sequence has in one forward, minus 1 (what the first row's window and the
 * last row reach together), and the backend must read rings (fb_attn_ring). */
typedef struct fz_kv {
    void *const *k;
    void *const *v;
    int type_k, type_v;              /* enum gg_type, fb_kv_type_valid (0: F32) */
    int64_t n_ctx;                   /* rows per slot */
    const int64_t *ring;             /* n_layer ring sizes (0: n_ctx rows), or NULL: none */
} fz_kv_t;

/* One sequence's share of a forward: n_rows consecutive rows of the batch (sequences in
 * order) at consecutive positions given by the batch's pos array. */
typedef struct fz_seq {
    int slot;
    int n_rows;
    int want_logits;                 /* the logits of its last want_logits rows (0..n_rows;
                                        true: the last row's) */
    int want_hidden;                 /* its last want_hidden rows' final hidden states
                                        (0..n_rows): each row after the output RMSNorm and
                                        its gamma, the vector the LM head multiplies ... */
    float *hidden;                   /* ... ADDED into these n_embd host floats (a sum, so
                                        a pooled mean accumulates row by row and chunk by
                                        chunk; the caller zeroes it first) */
    const float *lora;               /* fz_model_src_t.n_lora scales of this sequence's
                                        adapters (0: not applied), or NULL: none applied */
} fz_seq_t;

/* Runs every layer over n_rows tokens (host ids and positions), writes each row's K and V
 * into the cache at its slot and position, lets row i attend to positions 0..pos[i] of its
 * slot, and writes the logits of the rows that want them (the last want_logits rows of
 * a sequence) to logits (host, n_vocab floats each, in row
 * order), and adds the normalized hidden states of the rows that want them into their
 * sequence's hidden sum (both plans compute that normalization explicitly: the fused plan's
 * head defers it into its GEMM, which an embedding cannot).  Any number of rows up to n_rows may want logits: the LM head runs over them in
 * groups of max_seqs rows, so its scratch stays max_seqs rows of n_vocab.  Returns after the backend is done.
 * Preconditions (the caller validates): n_rows <= max_rows, n_seqs <= max_seqs, ids in
 * range, positions inside the cache. */
int fz_forward(fz_plan_t *p, const fz_kv_t *kv, const int32_t *tokens, const int32_t *pos,
               int n_rows, const fz_seq_t *seqs, int n_seqs, float *logits);

#endif
