/* encoder.h: the operator plan of a BERT-family encoder (bert: bge, all-MiniLM, e5, and the
 * BERT cross-encoders that rerank) on one backend: token + position (+ token type)
 * embeddings and their LayerNorm, then per layer Q, K, V with biases, attention of every row
 * over every row of its own input (non-causal: no cache, each input whole in one forward),
 * the output product + bias, residual, LayerNorm, the GELU feed-forward (up + bias, GELU,
 * down + bias), residual, LayerNorm: llama.cpp's build_bert.  Pooling happens here too: the
 * sum of chosen rows, the first row, or the classification head (dense + tanh, then the
 * output dense) over the first row, llama.cpp's rank pooling.
 * Post-LayerNorm blocks need every normalized row explicitly (it is also the residual), so
 * deferring the LayerNorm past the next product (docs/fusion.md) saves nothing: this plan
 * is the same with fusion on or off.  Owns the prepared weights and the activation scratch.
 * Called by engine/model.c (and the tests) on the thread that drives the backend. */
#ifndef FD_ENCODER_H
#define FD_ENCODER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"

typedef struct fz_enc fz_enc_t;

typedef struct fz_enc_layer_src {
    fb_weight_t wq, wk, wv, wo;      /* each with its bias (n_out floats) */
    const float *attn_ln_g, *attn_ln_b;  /* attn_output_norm: after attention + residual */
    fb_weight_t up, down;            /* with biases */
    const float *out_ln_g, *out_ln_b;    /* layer_output_norm: after the FFN + residual */
} fz_enc_layer_src_t;

typedef struct fz_enc_src {
    int n_layer, n_embd, n_head, head_dim, n_ff, n_vocab;
    int n_pos;                       /* rows of pos_embd: the longest input */
    float eps;                       /* LayerNorm epsilon */
    fb_weight_t tok_embd, pos_embd;
    fb_weight_t type_embd;           /* token types (src NULL: none) */
    const float *emb_ln_g, *emb_ln_b;
    const fz_enc_layer_src_t *layers;
    /* classification head (src NULL: none): cls (n_embd -> n_embd) then tanh, then cls_out
     * (-> n_cls_out; src NULL: cls's own outputs are the scores) */
    fb_weight_t cls, cls_out;
} fz_enc_src_t;

/* What a sequence of a forward gives back. */
enum fz_enc_pool {
    FZ_ENC_SUM = 0,    /* the sum of its last `want` rows' states ADDED into out (n_embd) */
    FZ_ENC_FIRST = 1,  /* its first row's state ADDED into out (n_embd) */
    FZ_ENC_RANK = 2    /* the classification head over its first row WRITTEN to out
                          (fz_enc_n_cls_out floats) */
};

typedef struct fz_enc_seq {
    int n_rows;                      /* the whole input: rows attend to all n_rows */
    int pool;                        /* enum fz_enc_pool */
    int want;                        /* FZ_ENC_SUM: 0..n_rows */
    float *out;                      /* host */
} fz_enc_seq_t;

/* max_rows: most rows of one forward (every input must fit in one); max_seqs likewise. */
int fz_enc_create(fz_enc_t **out, fb_backend_t *be, const fz_enc_src_t *src, int max_rows,
                  int max_seqs, char *err, size_t errlen);
void fz_enc_free(fz_enc_t *e);
int fz_enc_n_cls_out(const fz_enc_t *e);  /* 0 without a classification head */

/* Runs the encoder over n_rows tokens, the rows of seqs[0], then seqs[1], ... (each row's
 * position is its index inside its sequence; types: each row's token type, or NULL for 0)
 * and pools as each sequence asks.  Preconditions (the caller validates): ids and types in
 * range, each sequence at most n_pos rows, n_rows <= max_rows, n_seqs <= max_seqs, RANK only
 * with a head.  0 or a backend error. */
int fz_enc_forward(fz_enc_t *e, const int32_t *tokens, const int32_t *types, int n_rows,
                   const fz_enc_seq_t *seqs, int n_seqs);

#endif
