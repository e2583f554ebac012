/* lora.h: LoRA adapter files as llama.cpp's convert_lora_to_gguf.py writes them (GGUF with
 * general.type "adapter", adapter.type "lora", adapter.lora.alpha, and per adapted matrix
 * "<base tensor>.lora_a" [n_in, rank] and "<base tensor>.lora_b" [rank, n_out]), checked
 * against the model they adapt and turned into the plan's fz_lora_mat_t.  Owns the adapter's
 * mapping and its matrix list.  Called by engine/model.c at load time (one thread), and by
 * the tests; lora_write_random writes seeded adapters for tests (fusion-gguf-gen --lora). */
#ifndef FD_LORA_H
#define FD_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "fusion/plan.h"

typedef struct lora_file {
    gguf_t *g;
    float alpha;                     /* adapter.lora.alpha (0: absent, scale = user scale) */
    fz_lora_mat_t *mats;             /* n_mats, adapter index `index` */
    int n_mats;
} lora_file_t;

/* What an adapter is checked against: the model's file, architecture and shapes.  A fused
 * Q|K|V tensor (Phi-3's attn_qkv) or gate|up tensor (ffn_up with fused_gate_up) becomes one
 * matrix pair per part, B split by rows. */
typedef struct lora_base {
    const gguf_t *g;
    const char *arch;
    int n_layer, n_q, n_kv, n_ff;
    bool fused_gate_up;
    bool moe;                        /* its feed-forward tensors take no adapter */
} lora_base_t;

/* Opens path and validates everything against base: general.type, adapter.type, the
 * architecture, each tensor's suffix, pairing, base tensor, shapes, rank and type (F32,
 * F16, BF16, Q8_0).  Each problem is an error naming the file and the tensor. */
int lora_open(lora_file_t *out, const char *path, int index, const lora_base_t *base,
              char *err, size_t errlen);
void lora_close(lora_file_t *f);

/* A seeded random adapter for the model file base_path: every matrix of `targets` (a
 * comma-separated list of attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down,
 * output, or "all") of every layer gets A (uniform, variance 1 / n_in) and B (uniform,
 * variance 1 / rank) of the given rank and type, and adapter.lora.alpha = alpha. */
typedef struct lora_gen {
    const char *base_path;
    const char *targets;             /* NULL: all */
    int rank;
    float alpha;
    int type;                        /* GG_F32, GG_F16, GG_BF16 or GG_Q8_0 */
    uint64_t seed;
} lora_gen_t;
int lora_write_random(const lora_gen_t *o, const char *path, char *err, size_t errlen);

#endif
