/* ref_ops.h: the plain scalar reference of every CPU backend op, written straight from the
 * op's definition in backend.h, with fp64 accumulation wherever a sum runs long.  They are
 * the oracle the fast kernels (cpu/kernels*.c) are tested against and they never change for
 * speed.  Host memory only; pure functions (any thread), except that matmul and get_rows
 * allocate a row of scratch.  Arguments are assumed valid (cpu_backend.c checks them). */
#ifndef FD_CPU_REF_OPS_H
#define FD_CPU_REF_OPS_H

#include <stdint.h>

#include "backends/backend.h"

/* The deferred scale of one row: 1/sqrt(mean(x^2) + eps) (RMS) or 1/sqrt(var(x) + eps)
 * (LAYER, two-pass variance); 1 for FB_NORM_NONE. */
double fcpu_ref_norm_scale(int kind, const float *x, int64_t n, float eps);

/* y = x W^T (+ bias), optionally with x scaled by w->in_scale and the deferred norm scale
 * applied to the outputs (backend.h).  w->src is read directly.  -ENOMEM or 0. */
int fcpu_ref_matmul(const fb_weight_t *w, const float *x, int64_t n_rows, float *y,
                    const fb_defer_t *defer);
void fcpu_ref_rmsnorm(const float *x, int64_t n_rows, int64_t n, const float *gamma,
                      float eps, float *y);
void fcpu_ref_layernorm(const float *x, int64_t n_rows, int64_t n, const float *gamma,
                        const float *beta, float eps, float *y);
void fcpu_ref_rope(float *x, int64_t n_rows, int64_t ld, int n_heads, int head_dim,
                   const int32_t *pos, const fb_rope_t *rope);
/* One sequence, over a cache of any fb_kv_type_valid types, computed as llama.cpp computes
 * over such a cache: rows dequantized as read; the query rounded for the K type
 * (fcpu_ref_kv_query); with an F16 or BF16 V, p normalized and rounded to that type before
 * P.V, in every mode (an F32 cache: exactly as before).  -ENOMEM or 0. */
int fcpu_ref_attention(const fb_attn_t *a);
/* The query of a product with a K cache of type, as that product rounds it (F16, BF16: to
 * the type; block types: int8 blocks of 32 with a float scale, as kernels.h's XQ32), head_dim
 * rounded up to whole blocks in out (zero padded). */
void fcpu_ref_kv_query(int type, const float *q, int hd, float *out);
/* fb_kv_store: each head of each row quantized (type's reference rounding, quants.h) from
 * head_dim floats padded with zeros to whole blocks.  0, -ENOMEM or fq_quantize_row's error. */
int fcpu_ref_kv_store(void *dst, int type, const float *src, int64_t ld_src, int64_t n_rows,
                      int n_head_kv, int head_dim);
void fcpu_ref_silu_mul(const float *gate, const float *up, int64_t n_rows, int64_t n,
                       int64_t ld_in, float *out);
void fcpu_ref_add(float *y, const float *x, int64_t n);
/* GELU's tanh form times up (backend.h fb_ops_t.gelu_mul). */
void fcpu_ref_gelu_mul(const float *gate, const float *up, int64_t n_rows, int64_t n,
                       int64_t ld_in, float *out);
/* gpt-oss's gating (backend.h fb_ops_t.swiglu_oai, llama.cpp's swiglu_oai). */
void fcpu_ref_swiglu_oai(const float *gate, const float *up, int64_t n_rows, int64_t n,
                         int64_t ld_in, float alpha, float limit, float *out);
void fcpu_ref_scale(float *y, int64_t n, float s);
void fcpu_ref_softcap(float *y, int64_t n, float cap);
/* ids must be in range. */
void fcpu_ref_get_rows(const fb_weight_t *w, const int32_t *ids, int64_t n, float *out);
void fcpu_ref_copy2d(float *dst, int64_t ld_dst, const float *src, int64_t ld_src,
                     int64_t n_rows, int64_t n);
/* Mixture-of-experts row movement (backend.h fb_ops_t.gather_rows / scatter_add_rows). */
void fcpu_ref_gather_rows(float *dst, const float *src, int64_t ld_src, const int32_t *ids,
                          int64_t n_rows, int64_t n);
void fcpu_ref_scatter_add_rows(float *dst, int64_t ld_dst, const float *src,
                               const int32_t *ids, const float *w, int64_t n_rows, int64_t n);

#endif
