/* quants.h: the weight number formats (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K, ...) in their
 * plain scalar reference form: block layouts, dequantize, quantize and dot products.  This is
 * the oracle every SIMD kernel (cpu/) and every device backend is tested against, and what
 * the GGUF writer uses to quantize.  Layouts are ggml's (docs in quants.c).  Pure functions;
 * any thread. */
#ifndef FD_QUANTS_H
#define FD_QUANTS_H

#include <stdbool.h>
#include <stdint.h>

/* ggml's block layouts (little-endian; fp16 fields are raw IEEE half bits).  A value of a
 * block is always  d * q  (symmetric) or  d * q - m  / d * q + m  (with a minimum); the
 * K-quants group 256 elements in a super-block whose sub-block scales are themselves
 * quantized against the fp16 super-block scales d (and dmin). */
#define FQ_QK 32       /* elements per block of the legacy types (Q4_0 ... Q8_1) */
#define FQ_QK_K 256    /* elements per super-block of the K-quants */

typedef struct { uint16_t d; uint8_t qs[16]; } fq_block_q4_0;          /* (q-8)*d, q 4 bits */
typedef struct { uint16_t d, m; uint8_t qs[16]; } fq_block_q4_1;       /* q*d + m */
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } fq_block_q5_0; /* (q-16)*d */
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } fq_block_q5_1; /* q*d+m */
typedef struct { uint16_t d; int8_t qs[32]; } fq_block_q8_0;           /* q*d */
typedef struct { uint16_t d, s; int8_t qs[32]; } fq_block_q8_1;        /* q*d, s = d*sum q */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } fq_block_q2_K;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } fq_block_q3_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } fq_block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } fq_block_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } fq_block_q6_K;
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } fq_block_q8_K;

/* IQ4_NL, IQ4_XS, MXFP4: 4-bit codes that index a 16-entry table of int8 values
 * (fq_kvalues_iq4nl / fq_kvalues_mxfp4) instead of standing for q - 8.  Byte j of a group of
 * 32 holds element j in its low nibble and element j + 16 in its high one, as in Q4_0.
 *  - IQ4_NL: 32 values = d * kvalues_iq4nl[q], d fp16.
 *  - IQ4_XS: 256 values in 8 sub-blocks of 32; sub-block s has the 6-bit scale
 *    ls = (low nibble s % 2 of scales_l[s / 2]) | (bits 2s..2s+1 of scales_h) << 4, and its
 *    values are d * (ls - 32) * kvalues_iq4nl[q]; its codes are qs[16 s .. 16 s + 16).
 *  - MXFP4 (OCP microscaling FP4): 32 values = 2^(e - 127) * E2M1(q), e an E8M0 byte (a
 *    bare biased exponent) and E2M1 the 4-bit float (sign, 2 exponent bits, 1 mantissa bit:
 *    0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives).  ggml stores the table doubled
 *    (kvalues_mxfp4 = 2 * E2M1, integers) and halves the scale: fq_e8m0_half(e) =
 *    2^(e - 128). */
typedef struct { uint16_t d; uint8_t qs[16]; } fq_block_iq4_nl;
typedef struct { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; } fq_block_iq4_xs;
typedef struct { uint8_t e; uint8_t qs[16]; } fq_block_mxfp4;
extern const int8_t fq_kvalues_iq4nl[16];
extern const int8_t fq_kvalues_mxfp4[16];
/* 2^(e - 128) as a float (exact for every byte: e < 2 gives binary32 subnormals). */
float fq_e8m0_half(uint8_t e);
/* IQ4_XS: the 8 sub-block scales ls - 32 (-32..31). */
void fq_iq4xs_scales(const fq_block_iq4_xs *b, int8_t out[8]);

/* Q4_K / Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes. */
void fq_scale_min_k4(int j, const uint8_t *scales, uint8_t *sc, uint8_t *m);
/* Q6_K: the 6-bit codes (0..63, value + 32) of a block's 256 elements in element order;
 * element e has the sub-block scale scales[e / 16]. */
void fq_q6k_codes(const fq_block_q6_K *b, uint8_t q[256]);
/* Q3_K: the 16 6-bit sub-block scales (biased by 32, returned unbiased: -32..31). */
void fq_q3k_scales(const uint8_t *scales12, int8_t out[16]);

/* fp16 / bf16 <-> fp32 (round to nearest even; NaN and inf kept). */
float fq_f16_to_f32(uint16_t h);
uint16_t fq_f32_to_f16(float f);
float fq_bf16_to_f32(uint16_t h);
uint16_t fq_f32_to_bf16(float f);

/* True when this build can dequantize / compute with type. */
bool fq_type_supported(int type);
/* True when fq_quantize_row can write type. */
bool fq_type_quantizable(int type);

/* dst[0..n) = values of n elements of type at src (n a multiple of the block size). */
int fq_dequantize_row(int type, const void *src, float *dst, int64_t n);
/* Quantizes n floats into type (reference rounding as ggml's *_ref quantizers).  Types:
 * F32, F16, BF16, Q8_0, Q8_1, Q8_K, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K,
 * IQ4_NL, IQ4_XS, MXFP4; FD_EUNSUP for the rest, -EINVAL for n not a multiple of the block
 * size. */
int fq_quantize_row(int type, const float *src, void *dst, int64_t n);
/* sum_i W[i] * x[i] for one row of n elements of type against fp32 x, accumulated in fp64
 * where it matters: the slow oracle. */
double fq_dot_ref(int type, const void *w, const float *x, int64_t n);

#endif
