/* bfp.h: Corsair's number formats as the virtual device computes them: block floating point
 * (one shared 8-bit exponent per block, signed integer mantissas), the integer dot product
 * of the DIMC with fp32 accumulation across blocks, and the SIMD unit's 2nd-order polynomial
 * exp.  The formats are those of d-Matrix's dmx-compressor Corsair configuration:
 * BFP[8|8]{64} (8-bit mantissas, blocks of 64) and BFP[4|8]{128} (4-bit, blocks of 128).
 * Pure functions on host memory; any thread.  Exact semantics (rounding, zero blocks,
 * denormals, inf/NaN, saturation) are written down in bfp.c and docs/corsair.md. */
#ifndef FD_CORSAIR_BFP_H
#define FD_CORSAIR_BFP_H

#include <stdint.h>

/* A format: p-bit two's-complement mantissas (|q| <= 2^(p-1) - 1) sharing one exponent per
 * block of `block` elements.  Element value: q * 2^(E - (p - 2)), E the block exponent. */
typedef struct cs_bfp_fmt {
    int mbits;   /* p: 8 or 4 */
    int block;   /* 64 or 128 (a multiple of CS_BFP_CHUNK) */
} cs_bfp_fmt_t;

extern const cs_bfp_fmt_t cs_bfp8;   /* BFP[8|8]{64}: the DIMC's high-precision format */
extern const cs_bfp_fmt_t cs_bfp4;   /* BFP[4|8]{128}: the low-precision format */

/* The granularity of the integer dot product: one 64-wide DIMC row.  Every block size is a
 * multiple of it, so formats of different block sizes can meet in one dot product. */
#define CS_BFP_CHUNK 64

/* Biased shared exponents: E = e - 127 for e in 1..254 (E in -126..127, fp32's normal
 * range).  Two codes are reserved: */
#define CS_BFP_EXP_ZERO 0      /* every element is (+-)0: the block decodes to +0 */
#define CS_BFP_EXP_SPECIAL 255 /* the block holds inf or NaN; q = +-127 is +-inf, q = -128
                                  NaN, anything else 0 (see bfp.c for why that is exact for
                                  dot products) */

/* Blocks in a row of n elements (the last block may be short: its missing elements count
 * as zeros). */
int64_t cs_bfp_nblocks(const cs_bfp_fmt_t *f, int64_t n);
/* True for the two formats above (mbits 8 or 4, block a positive multiple of 64). */
int cs_bfp_fmt_valid(const cs_bfp_fmt_t *f);
/* "bfp8" / "bfp4" -> format; -EINVAL for other names. */
int cs_bfp_fmt_parse(const char *name, cs_bfp_fmt_t *out);
const char *cs_bfp_fmt_name(const cs_bfp_fmt_t *f);

/* Encodes n floats: q[n] mantissas (one byte each, also for 4-bit mantissas: the host keeps
 * them unpacked), e[cs_bfp_nblocks] exponents.  Round to nearest, ties to even; the largest
 * magnitude of a block saturates at 2^(p-1)-1 when it would round up to 2^(p-1). */
void cs_bfp_encode(const cs_bfp_fmt_t *f, const float *x, int64_t n, int8_t *q, uint8_t *e);
/* x[i] = the value element i encodes (exact in fp32). */
void cs_bfp_decode(const cs_bfp_fmt_t *f, const int8_t *q, const uint8_t *e, int64_t n,
                   float *x);
/* Encode then decode: what a value becomes on its way into the DIMC. */
void cs_bfp_round_trip(const cs_bfp_fmt_t *f, const float *x, int64_t n, float *out);

/* sum_i a[i] * b[i] for two encoded rows of n elements (formats may differ): per 64-wide
 * chunk an exact integer dot product scaled by the two block exponents (exact in fp32 but
 * for under/overflow), accumulated across chunks in fp32 in order, as the DIMC's fp32
 * partial sums are.  Chunks touching a SPECIAL block are computed from decoded values with
 * IEEE fp32 arithmetic. */
float cs_bfp_dot(const cs_bfp_fmt_t *fa, const int8_t *qa, const uint8_t *ea,
                 const cs_bfp_fmt_t *fb, const int8_t *qb, const uint8_t *eb, int64_t n);

/* The SIMD unit's exp: x = k ln2 + r with k = round(x / ln2), |r| <= ln2 / 2, and
 * exp(r) ~= 1 + r (c1 + c2 r) in fp32 (dmx-compressor's poly2exp coefficients).  Returns
 * exp(r) and stores k; exp(x) ~= ret * 2^k.  Relative error at most 2.3e-3 (at r = -ln2/2). */
float cs_poly2_exp_parts(float x, int *k);
/* ret * 2^k in full: overflow gives inf, underflow 0, like expf.  NaN gives NaN. */
float cs_poly2_exp(float x);

#endif
