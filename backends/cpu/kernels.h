/* kernels.h: the CPU backend's inner loops, one table per instruction set (scalar C, AVX2 +
 * FMA + F16C, AVX-512 F/BW/VL/DQ with VNNI), chosen at run time from CPUID.  BF16 weights
 * are widened exactly (a 16-bit shift) and multiplied in fp32 rather than with AVX512-BF16's
 * vdpbf16ps, which would round the activations to bf16 too; decode is bound by reading the
 * weights either way.  The plain reference of each op stays in ref_ops.c; tests run every
 * table against it.
 *
 * Matrix products read activations in one of four prepared forms (fcpu_xform):
 *   XF32  rows of floats;
 *   XQ32  int8 blocks of 32 with a float scale and the block's sum of codes (for the
 *         32-element weight types: Q8_0, Q4_0);
 *   XQK   int8 super-blocks of 256 with one float scale and the sums of each 16 codes (for
 *         the K-quants: Q4_K, Q5_K, Q6_K);
 *   XQ32I XQ32 with the codes of each pair of blocks (2p, 2p+1) interleaved by halves:
 *         [2p: 0..15][2p+1: 0..15][2p: 16..31][2p+1: 16..31] (a last odd block stays as is),
 *         so that two Q4_0 blocks' low nibbles meet their 32 activations in one vector.
 *   XQ32T XQ32 with each full group of 8 blocks (256 codes) stored as an 8 x 8 matrix of
 *         4-byte words, transposed: word i of block m of the group at byte 32 i + 4 m of
 *         the group (fcpu_xq32t_at); the blocks after the last full group stay as they are.
 *         One 32-byte vector then holds word i of 8 blocks, so a dot product instruction
 *         adds into 8 lanes that each belong to one block (batches, dot8).
 *   XQKT  XQK with each super-block's 256 codes in XQ32T's group order (its 8 sub-blocks of
 *         32 as the 8 blocks), for the K-quants' dot8; in place of the sums of 16 codes it
 *         holds, per sub-block of 32, d times the sum of its codes as a float (the same
 *         bytes), which the min correction of a batch row then takes as it is.
 * A dot kernel multiplies one weight row with nr <= FCPU_NR activation rows.  Pure
 * functions; any thread. */
#ifndef FD_CPU_KERNELS_H
#define FD_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "common/ggtypes.h"

#define FCPU_NR 4  /* activation rows one dot call handles */
#define FCPU_NR8 8 /* activation rows one dot8 call handles */
#define FCPU_FKB 256 /* gemmf: the activation pieces' length */
#define FCPU_FNW 12  /* gemmf: weight rows one call handles at most */

enum fcpu_isa { FCPU_ISA_SCALAR = 0, FCPU_ISA_AVX2 = 1, FCPU_ISA_AVX512 = 2, FCPU_ISA_COUNT };
enum fcpu_xform {
    FCPU_XF32 = 0, FCPU_XQ32 = 1, FCPU_XQK = 2, FCPU_XQ32I = 3, FCPU_XQ32T = 4, FCPU_XQKT = 5
};

/* Bytes of one prepared activation row of n elements (a multiple of 64, so rows stay
 * aligned).  XQ32 (XQ32I, XQ32T) row: int8 qs[n] | float d[n/32] | int32 sum[n/32].
 * XQK row: int8 qs[n] | float d[n/256] | int16 bsum[n/16].  XQKT row: int8 qs[n] |
 * float d[n/256] | float dsum[n/32].  n must be a multiple of the block. */
size_t fcpu_xrow_bytes(int xform, int64_t n);

/* out[r] = sum_i W[i] * X_r[i] for r < nr; w is one row of its type, x the first prepared
 * row, ldx the bytes between prepared rows. */
typedef void (*fcpu_dot_fn)(int64_t n, const void *w, const void *x, size_t ldx, int nr,
                            float *out);

typedef struct fcpu_kern {
    const char *name;
    int isa;
    /* activations -> XQ32 / XQK rows (n a multiple of 32 / 256) */
    void (*quant_q32)(const float *x, int64_t n, void *dst);
    void (*quant_qk)(const float *x, int64_t n, void *dst);
    void (*quant_q32i)(const float *x, int64_t n, void *dst);
    void (*quant_q32t)(const float *x, int64_t n, void *dst);
    void (*quant_qkt)(const float *x, int64_t n, void *dst);
    /* per weight type: the dot kernel and the activation form it reads (NULL: the backend
     * dequantizes the weight row and uses dot[GG_F32]) */
    fcpu_dot_fn dot[GG_TYPE_COUNT];
    int xform[GG_TYPE_COUNT];
    /* out[j] = W_j . x for the 4 weight rows W_j = w + j * ldw bytes against one activation
     * row in the type's form (NULL: use dot) */
    void (*dot4[GG_TYPE_COUNT])(int64_t n, const void *w, size_t ldw, const void *x, float *out);
    /* float weight types, batches: out[j * FCPU_NR + r] = W_j . X_r for the 2 weight rows
     * W_j = w + j * ldw bytes and nr <= FCPU_NR F32 activation rows (NULL: use dot) */
    void (*dot2[GG_TYPE_COUNT])(int64_t n, const void *w, size_t ldw, const void *x, size_t ldx,
                                int nr, float *out);
    /* batches of the quantized types: out[r] = W . X_r for nr <= FCPU_NR8 activation rows
     * in the form xform8 (XQ32T, XQKT); the work on a weight block (unpacking, transposing)
     * is shared by the rows (NULL: use dot) */
    fcpu_dot_fn dot8[GG_TYPE_COUNT];
    int xform8[GG_TYPE_COUNT];
    /* dot8 on a weight row in the FCPU_REPACK8 layout of fcpu_repack8_row (NULL: none) */
    fcpu_dot_fn dot8r[GG_TYPE_COUNT];
    /* batches on a group of FCPU_G16 weight rows in the FCPU_REPACK16 layout of
     * fcpu_repack16_rows, against nr <= FCPU_NR8 activation rows in the form xform[type]
     * (XQ32 for Q8_0, XQ32I for Q4_0, XQK for the K-quants): y[r * ldy + i] = W_i . X_r for
     * the 16 rows W_i (NULL: none) */
    void (*gemm16[GG_TYPE_COUNT])(int64_t n, const void *w, const void *x, size_t ldx, int nr,
                                  float *y, size_t ldy);
    /* dot8 with its software prefetches at chosen distances: each weight group read is
     * prefetched into L1 pf bytes ahead and into L2 pf2 bytes ahead (0: not); dot8 itself
     * uses its own (2 and 16 KiB).  A batch split along n_in reads a piece of each weight
     * row in turn, and what it reads next is the same piece of the next row: pf = the row
     * stride, pf2 = a few rows ahead */
    void (*dot8pf[GG_TYPE_COUNT])(int64_t n, const void *w, ptrdiff_t pf, ptrdiff_t pf2,
                                  const void *x, size_t ldx, int nr, float *out);
    /* float weight types, batches: out[j * FCPU_NR8 + r] = W_j . X_r for the 2 weight rows
     * W_j = w + j * ldw bytes and nr <= FCPU_NR8 F32 activation rows (NULL: use dot2) */
    void (*dot2x8[GG_TYPE_COUNT])(int64_t n, const void *w, size_t ldw, const void *x,
                                  size_t ldx, int nr, float *out);
    /* float weight types, batches where the registers hold no 2 x 8 tile (AVX2):
     * y[r * ldy + j] = W_j . X_r for nw <= FCPU_FNW weight rows W_j = w + j * ldw bytes and
     * nr <= FCPU_NR8 F32 activation rows given in pieces of FCPU_FKB elements: elements
     * [p FCPU_FKB, (p + 1) FCPU_FKB) of row r at x + p * ldp + r * ldx bytes (NULL: none) */
    void (*gemmf[GG_TYPE_COUNT])(int64_t n, const void *w, size_t ldw, int nw, const float *x,
                                 size_t ldx, size_t ldp, int nr, float *y, size_t ldy);
    /* o[0..hd) = sum_t p[t] V[t * ldv + 0..hd) */
    void (*pv)(const float *p, const float *v, int64_t ldv, int64_t T, int hd, float *o);
    /* KV cache types: o[0..n) = sum_t p[t] V_t, V_t the first n elements of a row of type
     * (F16, BF16: any n; Q8_0, Q4_0: a multiple of 32) at v + t * ldv bytes (NULL: the
     * backend dequantizes each row and uses axpy) */
    void (*pvq[GG_TYPE_COUNT])(const float *p, const void *v, size_t ldv, int64_t T, int n,
                               float *o);
    /* x[i] rounded to type and widened back, round to nearest even (F16, BF16; NULL for the
     * others): the probabilities of P.V over an F16 / BF16 V cache */
    void (*round_to[GG_TYPE_COUNT])(float *x, int64_t n);
    /* vector helpers */
    float (*vdot)(const float *a, const float *b, int64_t n);
    void (*axpy)(float a, const float *x, float *y, int64_t n);      /* y += a x */
    void (*scale)(float *y, float a, int64_t n);                     /* y *= a */
    double (*sumsq)(const float *x, int64_t n);                      /* sum x^2 */
    double (*sum)(const float *x, int64_t n);
    double (*sumsq_dev)(const float *x, int64_t n, float mean);      /* sum (x-mean)^2 */
    float (*vmax)(const float *x, int64_t n);
    /* e[i] = exp(s[i] - m); returns sum e (s may equal e) */
    float (*exp_sum)(const float *s, float m, float *e, int64_t n);
    void (*silu_mul)(const float *g, const float *u, float *out, int64_t n);
    /* out = gelu(g) * u, GELU's tanh form as x / (1 + exp(-2 sqrt(2/pi) (x + 0.044715 x^3)))
     * (the same function: 0.5 (1 + tanh z) = 1 / (1 + exp(-2z))) */
    void (*gelu_mul)(const float *g, const float *u, float *out, int64_t n);
    void (*mul_scale)(const float *x, const float *g, float s, float *y, int64_t n); /* y = x*s*g */
    void (*mul)(const float *x, const float *g, float *y, int64_t n);               /* y = x*g */
    void (*add)(float *y, const float *x, int64_t n);
    /* benchmarks (the read-bandwidth roof): the sum of the n bytes at p (64-byte aligned, n
     * a multiple of 256) as 64-bit words, read with the widest loads: mode 0 one stream,
     * 1 four interleaved streams (the quarters of p), 2 one stream with software prefetch */
    uint64_t (*read_sum)(const void *p, size_t n, int mode);
} fcpu_kern_t;

/* FCPU_REPACK8 (Q8_0, Q4_0): each full group of 8 blocks of a row, in the group's own
 * bytes (8 * block size), becomes its codes in XQ32T order followed by the 8 fp16 scales.
 * Q8_0: 8 vectors of 32 bytes, vector i's 4-byte lane m = bytes 4i..4i+3 of block m, each
 * code + 128 (unsigned).  Q4_0: 4 vectors of 32 bytes, vector j byte 4m + k = code
 * 4(2j) + k of block m in the low nibble and code 4(2j+1) + k in the high one, codes in
 * element order (0..15 the low nibbles of the block's bytes, 16..31 the high ones).  Blocks
 * after the last full group stay as they were.  Returns 0, or FD_EUNSUP for other types;
 * dst holds gg_row_bytes(type, n) bytes. */
int fcpu_repack8_row(int type, int64_t n, const void *src, void *dst);

/* FCPU_REPACK16 (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K): FCPU_G16 rows of n elements (row i at
 * src + i * ld) interleaved, so that one 512-bit vector holds the same 4 inputs of all 16 rows
 * (a lane per row) and a batch kernel reads each weight byte once for all its activation rows.  For each
 * block j of 32 inputs, 16 block sizes (the rows' own bytes for that block): Q8_0: 8
 * vectors of 64 bytes, vector s byte 4i + k = code 4s + k of row i's block j + 128
 * (unsigned); Q4_0: 4 vectors of 64 bytes, vector s byte 4i + k = qs[4s + k] of row i's
 * block j (codes 4s + k in the low nibble, 16 + 4s + k in the high one); then the 16 rows'
 * fp16 scales.  Q4_K, for each super-block j of 256 inputs, 16 x 144 bytes: the 16 rows' fp16
 * d (bytes 2i), then their fp16 dmin (32 + 2i), then 3 vectors of 64 bytes, vector k byte
 * 4i + t = scales[4k + t] of row i (the packed 6-bit scales and mins as they are), then 32
 * vectors of 64 bytes, vector v byte 4i + t = qs[4v + t] of row i (vector 8p + s: inputs
 * 4s..4s+3 of sub-block 2p in the low nibbles, of sub-block 2p + 1 in the high ones).
 * Q5_K, 16 x 176 bytes: Q4_K's 2304, then 8 vectors of 64 bytes, vector s byte 4i + t =
 * qh[4s + t] of row i (the fifth bits of inputs 4s + t of every sub-block: bit j for
 * sub-block j).
 * Q6_K, for each super-block j, 16 x 210 bytes: the 16 rows' fp16 d (32 bytes) last when j is
 * even and first when j is odd (so that the vectors of both stay 64-byte aligned when the
 * group is), around 4 vectors of 64 bytes, vector k byte 4i + t = scales[4k + t] of row i,
 * then per sub-block s of 16 inputs 3 vectors of 64 bytes: byte 4i + t of vector m (m < 3)
 * holds the 6-bit code (value + 32) of input 16s + 4m + t of row i in its low 6 bits and
 * bits 2m, 2m + 1 of the code of input 16s + 12 + t in its top two.  Each copy has the
 * source's size.  Returns 0, or FD_EUNSUP for other types; dst holds FCPU_G16 *
 * gg_row_bytes(type, n) bytes. */
#define FCPU_G16 16
int fcpu_repack16_rows(int type, int64_t n, const void *src, size_t ld, void *dst);

/* The table for isa, or NULL when this CPU (or build) lacks it. */
const fcpu_kern_t *fcpu_kernels(int isa);
/* The best table this CPU runs. */
const fcpu_kern_t *fcpu_kernels_best(void);
const char *fcpu_isa_name(int isa);

/* The per-ISA tables (kernels_*.c); NULL-returning on builds without the compiler support. */
const fcpu_kern_t *fcpu_kernels_scalar(void);
const fcpu_kern_t *fcpu_kernels_avx2(void);
const fcpu_kern_t *fcpu_kernels_avx512(void);

/* Views into prepared activation rows (see fcpu_xrow_bytes). */
static inline const int8_t *fcpu_x_qs(const void *row)
{
    return (const int8_t *)row;
}
static inline const float *fcpu_xq32_d(const void *row, int64_t n)
{
    return (const float *)((const int8_t *)row + n);
}
static inline const int32_t *fcpu_xq32_sum(const void *row, int64_t n)
{
    return (const int32_t *)((const int8_t *)row + n + 4 * (n / 32));
}
/* Byte offset of code e (0..31) of block b in the qs of an XQ32T row of nb blocks. */
static inline size_t fcpu_xq32t_at(int64_t b, int e, int64_t nb)
{
    if (b >= nb / 8 * 8)
        return (size_t)(32 * b + e);
    return (size_t)(256 * (b / 8) + 32 * (e / 4) + 4 * (b % 8) + e % 4);
}
static inline const float *fcpu_xqk_d(const void *row, int64_t n)
{
    return (const float *)((const int8_t *)row + n);
}
static inline const int16_t *fcpu_xqk_bsum(const void *row, int64_t n)
{
    return (const int16_t *)((const int8_t *)row + n + 4 * (n / 256));
}
static inline const float *fcpu_xqkt_dsum(const void *row, int64_t n)
{
    return (const float *)((const int8_t *)row + n + 4 * (n / 256));
}

#endif
