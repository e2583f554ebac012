/* quants.h: the weight number formats (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K, ...) in their
 * plain scalar reference form: block layouts, dequantize, quantize and dot products.  This is
 * the oracle every SIMD kernel (cpu/) and every device backend is tested against, and what
 * the GGUF writer uses to quantize.  Layouts are ggml's (docs in quants.c).  Pure functions;
 * any thread. */
#ifndef FD_QUANTS_H
#define FD_QUANTS_H

#include <stdbool.h>
#include <stdint.h>

/* fp16 / bf16 <-> fp32 (round to nearest even; NaN and inf kept). */
float fq_f16_to_f32(uint16_t h);
uint16_t fq_f32_to_f16(float f);
float fq_bf16_to_f32(uint16_t h);
uint16_t fq_f32_to_bf16(float f);

/* True when this build can dequantize / compute with type. */
bool fq_type_supported(int type);

/* dst[0..n) = values of n elements of type at src (n a multiple of the block size). */
int fq_dequantize_row(int type, const void *src, float *dst, int64_t n);
/* Quantizes n floats into type (reference rounding as ggml's *_ref quantizers). */
int fq_quantize_row(int type, const float *src, void *dst, int64_t n);
/* sum_i W[i] * x[i] for one row of n elements of type against fp32 x, accumulated in fp64
 * where it matters: the slow oracle. */
double fq_dot_ref(int type, const void *w, const float *x, int64_t n);

#endif
