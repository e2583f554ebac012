/* replay.h: one decoder step of a Llama-family model as the fused and unfused plans of
 * fusion/plan.c issue it, replayed into the Corsair timing model from shapes alone (no
 * weights, no values).  It lets bench/corsair-report time 7B..70B shapes that could never be
 * loaded here; tests/test_corsair.c keeps it identical to the real plan by comparing its
 * device time with the corsair backend running stories260K.  Same thread rules as timing.h. */
#ifndef FD_CORSAIR_REPLAY_H
#define FD_CORSAIR_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/corsair/timing.h"

typedef struct cs_llama_shape {
    const char *name;
    int n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab;
    double embd_row_bytes;   /* bytes of one token-embedding row in its file format */
} cs_llama_shape_t;

/* Known shapes by name ("stories260K", "Llama-2-7B", "Llama-3-8B", "Llama-2-70B",
 * "Llama-3-70B"), or NULL. */
const cs_llama_shape_t *cs_llama_shape(const char *name);
const cs_llama_shape_t *cs_llama_shape_at(int i); /* NULL past the end */

/* What the mapping needs: DIMC weights (every matrix but the embedding table, in weight_bytes
 * per weight) and the KV cache of n_seq sequences of n_ctx positions (act_bytes each). */
cs_model_shape_t cs_replay_model_shape(const cs_llama_shape_t *m, const cs_params_t *p,
                                       int n_seq, int64_t n_ctx);

typedef struct cs_step {
    int n_seq;               /* sequences in the step */
    int rows;                /* new tokens per sequence (1: decode; >1: a prefill chunk) */
    int64_t past;            /* positions each sequence already has in its cache */
    bool fused;
    int softmax_mode;        /* fused plan: FB_SOFTMAX_MAXSUM or _SUMONLY */
} cs_step_t;

/* Replays one step (STEP_BEGIN .. STEP_END) and returns its device time in seconds.
 * The mapping must be frozen (cs_sim_map) first, or the step maps with n_layer only. */
double cs_replay_step(cs_sim_t *s, const cs_llama_shape_t *m, const cs_step_t *st);

#endif
