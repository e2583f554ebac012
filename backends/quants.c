/* quants.c: the weight number formats in plain scalar form (see quants.h).
 *
 * Formats (ggml's; restated from the format definitions, little-endian):
 *  - F16: IEEE binary16.  BF16: the top 16 bits of an IEEE binary32.
 *  - Q8_0: 32 values = d * q, q int8, d fp16.  Q8_1 adds s = d * sum(q) (fp16).
 *  - Q4_0: 32 values = d * (q - 8), q 4 bits; byte j holds element j (low nibble) and
 *    element j + 16 (high nibble).  Q4_1: d * q + m.
 *  - Q5_0 / Q5_1: as Q4_0 / Q4_1 with a fifth bit per element in the 32-bit word qh: bit j
 *    for element j, bit j + 16 for element j + 16; Q5_0 subtracts 16.
 *  - Q2_K (256 values): 16 sub-blocks of 16; scales[i] low nibble = scale, high = min, both
 *    times the fp16 d / dmin; value = d*sc*q - dmin*m, q 2 bits.  Element 128*h + 32*j + l
 *    (h < 2, j < 4, l < 32) is bits 2j..2j+1 of qs[32*h + l], sub-block 8*h + 2*j + l/16.
 *  - Q3_K: as Q2_K's layout for the low two bits, a third bit from hmask (bit 4*h + j of
 *    hmask[l]; a CLEAR bit subtracts 4), 16 signed 6-bit scales packed in 12 bytes (low
 *    nibbles in bytes 0..7, high two bits in bytes 8..11), value = d * (sc - 32) * q.
 *  - Q4_K: 8 sub-blocks of 32 with 6-bit scale and min packed in 12 bytes
 *    (fq_scale_min_k4); value = d*sc*q - dmin*m; elements 64*p + l (l < 32) are the low
 *    nibbles of qs[32*p + l], elements 64*p + 32 + l the high nibbles.
 *  - Q5_K: as Q4_K plus qh: bit 2p of qh[l] is the fifth bit of element 64*p + l, bit 2p+1
 *    that of element 64*p + 32 + l.
 *  - Q6_K: 16 sub-blocks of 16 with int8 scales; value = d * sc * (q - 32), q 6 bits: in
 *    each half h (128 elements) element 32*k + l (k < 4, l < 32) takes its low nibble from
 *    ql[64*h + l + 32*(k & 1)] (low nibble for k < 2, high for k >= 2) and its top two bits
 *    from bits 2k..2k+1 of qh[32*h + l]; sub-block = 8*h + 2*k + l/16.
 *  - Q8_K: 256 values = d * q with a float d, plus the sums of each 16 q (bsums).
 *
 * The K-quant quantizers fit each sub-block's scale (and min) by a weighted least-squares
 * search over a few candidate scales, as ggml's reference quantizers do, then quantize the
 * sub-block scales against the super-block scale and re-round every element with the scale
 * actually stored, so dequantization sees the scale the elements were rounded against. */
#include "backends/quants.h"

#include <math.h>
#include <string.h>

#include "common/fd.h"
#include "common/ggtypes.h"

_Static_assert(sizeof(fq_block_q4_0) == 18, "q4_0");
_Static_assert(sizeof(fq_block_q4_1) == 20, "q4_1");
_Static_assert(sizeof(fq_block_q5_0) == 22, "q5_0");
_Static_assert(sizeof(fq_block_q5_1) == 24, "q5_1");
_Static_assert(sizeof(fq_block_q8_0) == 34, "q8_0");
_Static_assert(sizeof(fq_block_q8_1) == 36, "q8_1");
_Static_assert(sizeof(fq_block_q2_K) == 84, "q2_K");
_Static_assert(sizeof(fq_block_q3_K) == 110, "q3_K");
_Static_assert(sizeof(fq_block_q4_K) == 144, "q4_K");
_Static_assert(sizeof(fq_block_q5_K) == 176, "q5_K");
_Static_assert(sizeof(fq_block_q6_K) == 210, "q6_K");
_Static_assert(sizeof(fq_block_q8_K) == 292, "q8_K");
_Static_assert(sizeof(fq_block_iq4_nl) == 18, "iq4_nl");
_Static_assert(sizeof(fq_block_iq4_xs) == 136, "iq4_xs");
_Static_assert(sizeof(fq_block_mxfp4) == 17, "mxfp4");

/* ---- fp16 / bf16 ---------------------------------------------------------------------- */

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float fq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) {
        /* zero or subnormal: m * 2^-24, exact in binary32 */
        float v = (float)m * 0x1p-24f;
        return u2f(f2u(v) | sign);
    }
    if (e == 31)
        return u2f(sign | 0x7f800000u | (m << 13));
    return u2f(sign | ((e + 112) << 23) | (m << 13));
}

/* Rounds v >> shift to nearest, ties to even (shift 1..31). */
static uint32_t rshift_rne(uint32_t v, unsigned shift)
{
    uint32_t q = v >> shift, rem = v & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return q;
}

uint16_t fq_f32_to_f16(float f)
{
    uint32_t x = f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) /* NaN: keep it quiet and keep the top payload bits */
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u) /* >= 65520 rounds past the largest half (65504): inf */
        return (uint16_t)(sign | 0x7c00);
    uint32_t e = ax >> 23;
    if (ax >= 0x38800000u) {
        /* normal half: rebias the exponent; a mantissa carry correctly bumps it */
        uint32_t v = ((e - 112) << 23) | (ax & 0x7fffff);
        return (uint16_t)(sign | rshift_rne(v, 13));
    }
    /* subnormal half (or zero): round |f| / 2^-24 */
    if (e == 0)
        return sign; /* binary32 subnormals are far below half's smallest subnormal */
    uint32_t m = (ax & 0x7fffff) | 0x800000;
    unsigned shift = 126 - e; /* |f| = m * 2^(e-150); / 2^-24 = m >> (126 - e) */
    if (shift > 24)
        return sign;
    return (uint16_t)(sign | rshift_rne(m, shift));
}

float fq_bf16_to_f32(uint16_t h)
{
    return u2f((uint32_t)h << 16);
}

uint16_t fq_f32_to_bf16(float f)
{
    uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40); /* quiet NaN stays NaN after truncation */
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* ---- small helpers --------------------------------------------------------------------- */

#define H2F(h) fq_f16_to_f32(h)

static int nearest(float v)
{
    return (int)lrintf(v);
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

void fq_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void fq_q3k_scales(const uint8_t *s, int8_t out[16])
{
    for (int i = 0; i < 16; i++) {
        int lo = i < 8 ? (s[i] & 0xf) : (s[i - 8] >> 4);
        int hi = (s[8 + (i & 3)] >> (2 * (i >> 2))) & 3;
        out[i] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

/* ---- dequantization, one block -------------------------------------------------------- */

static void dq_q4_0(const void *vb, float *y)
{
    const fq_block_q4_0 *b = vb;
    float d = H2F(b->d);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((b->qs[j] & 0xf) - 8);
        y[j + 16] = d * (float)((b->qs[j] >> 4) - 8);
    }
}

static void dq_q4_1(const void *vb, float *y)
{
    const fq_block_q4_1 *b = vb;
    float d = H2F(b->d), m = H2F(b->m);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)(b->qs[j] & 0xf) + m;
        y[j + 16] = d * (float)(b->qs[j] >> 4) + m;
    }
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void dq_q5_0(const void *vb, float *y)
{
    const fq_block_q5_0 *b = vb;
    float d = H2F(b->d);
    uint32_t qh = le32(b->qh);
    for (int j = 0; j < 16; j++) {
        int q0 = (b->qs[j] & 0xf) | (int)(((qh >> j) & 1) << 4);
        int q1 = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)(q0 - 16);
        y[j + 16] = d * (float)(q1 - 16);
    }
}

static void dq_q5_1(const void *vb, float *y)
{
    const fq_block_q5_1 *b = vb;
    float d = H2F(b->d), m = H2F(b->m);
    uint32_t qh = le32(b->qh);
    for (int j = 0; j < 16; j++) {
        int q0 = (b->qs[j] & 0xf) | (int)(((qh >> j) & 1) << 4);
        int q1 = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        y[j] = d * (float)q0 + m;
        y[j + 16] = d * (float)q1 + m;
    }
}

static void dq_q8_0(const void *vb, float *y)
{
    const fq_block_q8_0 *b = vb;
    float d = H2F(b->d);
    for (int j = 0; j < 32; j++)
        y[j] = d * (float)b->qs[j];
}

static void dq_q8_1(const void *vb, float *y)
{
    const fq_block_q8_1 *b = vb;
    float d = H2F(b->d);
    for (int j = 0; j < 32; j++)
        y[j] = d * (float)b->qs[j];
}

static void dq_q2_K(const void *vb, float *y)
{
    const fq_block_q2_K *b = vb;
    float d = H2F(b->d), dmin = H2F(b->dmin);
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                int sb = 8 * h + 2 * j + l / 16;
                int q = (b->qs[32 * h + l] >> (2 * j)) & 3;
                y[128 * h + 32 * j + l] = d * (float)(b->scales[sb] & 0xf) * (float)q -
                                          dmin * (float)(b->scales[sb] >> 4);
            }
}

static void dq_q3_K(const void *vb, float *y)
{
    const fq_block_q3_K *b = vb;
    float d = H2F(b->d);
    int8_t sc[16];
    fq_q3k_scales(b->scales, sc);
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 32; l++) {
                int sb = 8 * h + 2 * j + l / 16;
                int q = (b->qs[32 * h + l] >> (2 * j)) & 3;
                if (!(b->hmask[l] & (1u << (4 * h + j))))
                    q -= 4;
                y[128 * h + 32 * j + l] = d * (float)sc[sb] * (float)q;
            }
}

static void dq_q4_K(const void *vb, float *y)
{
    const fq_block_q4_K *b = vb;
    float d = H2F(b->d), dmin = H2F(b->dmin);
    for (int p = 0; p < 4; p++) {
        uint8_t s0, m0, s1, m1;
        fq_scale_min_k4(2 * p, b->scales, &s0, &m0);
        fq_scale_min_k4(2 * p + 1, b->scales, &s1, &m1);
        for (int l = 0; l < 32; l++) {
            y[64 * p + l] = d * s0 * (float)(b->qs[32 * p + l] & 0xf) - dmin * m0;
            y[64 * p + 32 + l] = d * s1 * (float)(b->qs[32 * p + l] >> 4) - dmin * m1;
        }
    }
}

static void dq_q5_K(const void *vb, float *y)
{
    const fq_block_q5_K *b = vb;
    float d = H2F(b->d), dmin = H2F(b->dmin);
    for (int p = 0; p < 4; p++) {
        uint8_t s0, m0, s1, m1;
        fq_scale_min_k4(2 * p, b->scales, &s0, &m0);
        fq_scale_min_k4(2 * p + 1, b->scales, &s1, &m1);
        for (int l = 0; l < 32; l++) {
            int q0 = (b->qs[32 * p + l] & 0xf) | (((b->qh[l] >> (2 * p)) & 1) << 4);
            int q1 = (b->qs[32 * p + l] >> 4) | (((b->qh[l] >> (2 * p + 1)) & 1) << 4);
            y[64 * p + l] = d * s0 * (float)q0 - dmin * m0;
            y[64 * p + 32 + l] = d * s1 * (float)q1 - dmin * m1;
        }
    }
}

/* Element 128 h + 32 k + l (h < 2, k < 4, l < 32): the low 4 bits in ql[64 h + l + 32 (k & 1)]
 * (low nibble for k < 2, high for k >= 2), the top 2 in bits 2k of qh[32 h + l]. */
void fq_q6k_codes(const fq_block_q6_K *b, uint8_t q[256])
{
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 4; k++)
            for (int l = 0; l < 32; l++) {
                const uint8_t lb = b->ql[64 * h + l + 32 * (k & 1)];
                q[128 * h + 32 * k + l] = (uint8_t)((k < 2 ? lb & 0xf : lb >> 4) |
                                                    ((b->qh[32 * h + l] >> (2 * k)) & 3) << 4);
            }
}

static void dq_q6_K(const void *vb, float *y)
{
    const fq_block_q6_K *b = vb;
    float d = H2F(b->d);
    uint8_t q[256];
    fq_q6k_codes(b, q);
    for (int e = 0; e < 256; e++)
        y[e] = d * (float)b->scales[e / 16] * (float)((int)q[e] - 32);
}

static void dq_q8_K(const void *vb, float *y)
{
    const fq_block_q8_K *b = vb;
    for (int j = 0; j < 256; j++)
        y[j] = b->d * (float)b->qs[j];
}

static void dq_f32(const void *vb, float *y)
{
    memcpy(y, vb, 4);
}

static void dq_f16(const void *vb, float *y)
{
    uint16_t h;
    memcpy(&h, vb, 2);
    *y = fq_f16_to_f32(h);
}

static void dq_bf16(const void *vb, float *y)
{
    uint16_t h;
    memcpy(&h, vb, 2);
    *y = fq_bf16_to_f32(h);
}

/* ---- IQ4_NL, IQ4_XS, MXFP4: dequantization (layouts in quants.h) ---------------------- */

/* ggml's non-linear 4-bit grid for IQ4_NL / IQ4_XS (denser near zero) */
const int8_t fq_kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                     1,    13,   25,  38,  53,  69,  89,  113};
/* 2 x E2M1: codes 0..7 are +0, 0.5, 1, 1.5, 2, 3, 4, 6; code 8 + c is minus code c */
const int8_t fq_kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

float fq_e8m0_half(uint8_t e)
{
    return ldexpf(1.f, (int)e - 128);
}

void fq_iq4xs_scales(const fq_block_iq4_xs *b, int8_t out[8])
{
    for (int s = 0; s < 8; s++) {
        int lo = (b->scales_l[s / 2] >> (4 * (s % 2))) & 0xf;
        int hi = (b->scales_h >> (2 * s)) & 3;
        out[s] = (int8_t)((lo | (hi << 4)) - 32);
    }
}

/* 32 values = scale * table[code] from 16 bytes of nibbles (Q4_0's order) */
static void dq_nibbles_table(const uint8_t *qs, const int8_t *table, float scale, float *y)
{
    for (int j = 0; j < 16; j++) {
        y[j] = scale * (float)table[qs[j] & 0xf];
        y[j + 16] = scale * (float)table[qs[j] >> 4];
    }
}

static void dq_iq4_nl(const void *vb, float *y)
{
    const fq_block_iq4_nl *b = vb;
    dq_nibbles_table(b->qs, fq_kvalues_iq4nl, H2F(b->d), y);
}

static void dq_iq4_xs(const void *vb, float *y)
{
    const fq_block_iq4_xs *b = vb;
    float d = H2F(b->d);
    int8_t ls[8];
    fq_iq4xs_scales(b, ls);
    for (int s = 0; s < 8; s++)
        dq_nibbles_table(b->qs + 16 * s, fq_kvalues_iq4nl, d * (float)ls[s], y + 32 * s);
}

static void dq_mxfp4(const void *vb, float *y)
{
    const fq_block_mxfp4 *b = vb;
    dq_nibbles_table(b->qs, fq_kvalues_mxfp4, fq_e8m0_half(b->e), y);
}

typedef void (*dq_fn)(const void *, float *);

static dq_fn dq_for(int type)
{
    switch (type) {
    case GG_F32: return dq_f32;
    case GG_F16: return dq_f16;
    case GG_BF16: return dq_bf16;
    case GG_Q4_0: return dq_q4_0;
    case GG_Q4_1: return dq_q4_1;
    case GG_Q5_0: return dq_q5_0;
    case GG_Q5_1: return dq_q5_1;
    case GG_Q8_0: return dq_q8_0;
    case GG_Q8_1: return dq_q8_1;
    case GG_Q2_K: return dq_q2_K;
    case GG_Q3_K: return dq_q3_K;
    case GG_Q4_K: return dq_q4_K;
    case GG_Q5_K: return dq_q5_K;
    case GG_Q6_K: return dq_q6_K;
    case GG_Q8_K: return dq_q8_K;
    case GG_IQ4_NL: return dq_iq4_nl;
    case GG_IQ4_XS: return dq_iq4_xs;
    case GG_MXFP4: return dq_mxfp4;
    default: return NULL;
    }
}

bool fq_type_supported(int type)
{
    return dq_for(type) != NULL;
}

int fq_dequantize_row(int type, const void *src, float *dst, int64_t n)
{
    dq_fn f = dq_for(type);
    if (!f)
        return FD_EUNSUP;
    int64_t be = gg_block_elems(type), bb = gg_block_bytes(type);
    if (n < 0 || n % be)
        return -EINVAL;
    if (type == GG_F32) {
        memcpy(dst, src, (size_t)n * 4);
        return 0;
    }
    const uint8_t *p = src;
    for (int64_t i = 0; i < n / be; i++)
        f(p + i * bb, dst + i * be);
    return 0;
}

double fq_dot_ref(int type, const void *w, const float *x, int64_t n)
{
    dq_fn f = dq_for(type);
    int64_t be = gg_block_elems(type), bb = gg_block_bytes(type);
    if (!f || n < 0 || n % be)
        return NAN;
    const uint8_t *p = w;
    float tmp[FQ_QK_K];
    double acc = 0;
    for (int64_t i = 0; i < n / be; i++) {
        f(p + i * bb, tmp);
        for (int64_t j = 0; j < be; j++)
            acc += (double)tmp[j] * (double)x[i * be + j];
    }
    return acc;
}

/* ---- quantization --------------------------------------------------------------------- */

static void q_q8_0(const float *x, void *vb)
{
    fq_block_q8_0 *b = vb;
    float amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.f, id = d != 0 ? 1.f / d : 0.f;
    b->d = fq_f32_to_f16(d);
    for (int j = 0; j < 32; j++)
        b->qs[j] = (int8_t)roundf(x[j] * id);
}

static void q_q8_1(const float *x, void *vb)
{
    fq_block_q8_1 *b = vb;
    float amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.f, id = d != 0 ? 1.f / d : 0.f;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        b->qs[j] = (int8_t)roundf(x[j] * id);
        sum += b->qs[j];
    }
    b->d = fq_f32_to_f16(d);
    b->s = fq_f32_to_f16(d * (float)sum);
}

/* The element of largest magnitude, with its sign (the symmetric formats map it to the
 * most negative code, which has one more step than the positive side). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    return max;
}

static void q_q4_0(const float *x, void *vb)
{
    fq_block_q4_0 *b = vb;
    float d = signed_absmax(x, 32) / -8.f, id = d != 0 ? 1.f / d : 0.f;
    b->d = fq_f32_to_f16(d);
    for (int j = 0; j < 16; j++) {
        int q0 = FD_MIN(15, (int)(x[j] * id + 8.5f));
        int q1 = FD_MIN(15, (int)(x[j + 16] * id + 8.5f));
        b->qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
}

static void min_max(const float *x, int n, float *lo, float *hi)
{
    *lo = x[0];
    *hi = x[0];
    for (int j = 1; j < n; j++) {
        *lo = fminf(*lo, x[j]);
        *hi = fmaxf(*hi, x[j]);
    }
}

static void q_q4_1(const float *x, void *vb)
{
    fq_block_q4_1 *b = vb;
    float lo, hi;
    min_max(x, 32, &lo, &hi);
    float d = (hi - lo) / 15.f, id = d != 0 ? 1.f / d : 0.f;
    b->d = fq_f32_to_f16(d);
    b->m = fq_f32_to_f16(lo);
    for (int j = 0; j < 16; j++) {
        int q0 = FD_MIN(15, (int)((x[j] - lo) * id + 0.5f));
        int q1 = FD_MIN(15, (int)((x[j + 16] - lo) * id + 0.5f));
        b->qs[j] = (uint8_t)(q0 | (q1 << 4));
    }
}

static void put_qh(uint8_t qh[4], uint32_t v)
{
    for (int i = 0; i < 4; i++)
        qh[i] = (uint8_t)(v >> (8 * i));
}

static void q_q5_0(const float *x, void *vb)
{
    fq_block_q5_0 *b = vb;
    float d = signed_absmax(x, 32) / -16.f, id = d != 0 ? 1.f / d : 0.f;
    b->d = fq_f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int q0 = FD_MIN(31, (int)(x[j] * id + 16.5f));
        int q1 = FD_MIN(31, (int)(x[j + 16] * id + 16.5f));
        b->qs[j] = (uint8_t)((q0 & 0xf) | ((q1 & 0xf) << 4));
        qh |= (uint32_t)(q0 >> 4) << j;
        qh |= (uint32_t)(q1 >> 4) << (j + 16);
    }
    put_qh(b->qh, qh);
}

static void q_q5_1(const float *x, void *vb)
{
    fq_block_q5_1 *b = vb;
    float lo, hi;
    min_max(x, 32, &lo, &hi);
    float d = (hi - lo) / 31.f, id = d != 0 ? 1.f / d : 0.f;
    b->d = fq_f32_to_f16(d);
    b->m = fq_f32_to_f16(lo);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        int q0 = FD_MIN(31, (int)((x[j] - lo) * id + 0.5f));
        int q1 = FD_MIN(31, (int)((x[j + 16] - lo) * id + 0.5f));
        b->qs[j] = (uint8_t)((q0 & 0xf) | ((q1 & 0xf) << 4));
        qh |= (uint32_t)(q0 >> 4) << j;
        qh |= (uint32_t)(q1 >> 4) << (j + 16);
    }
    put_qh(b->qh, qh);
}

static void q_q8_K(const float *x, void *vb)
{
    fq_block_q8_K *b = vb;
    float max = signed_absmax(x, 256);
    if (max == 0) {
        memset(b, 0, sizeof(*b));
        return;
    }
    float iscale = -127.f / max;
    for (int j = 0; j < 256; j++)
        b->qs[j] = (int8_t)FD_MIN(127, nearest(iscale * x[j]));
    for (int i = 0; i < 16; i++) {
        int s = 0;
        for (int j = 0; j < 16; j++)
            s += b->qs[16 * i + j];
        b->bsums[i] = (int16_t)s;
    }
    b->d = 1.f / iscale;
}

/* Fits x ~ scale * q - mn (q in 0..nmax, mn >= 0) minimizing sum w (scale q - mn - x)^2:
 * tries scales around nmax / (max - min), solves the 2x2 least-squares system for (scale,
 * offset) given each candidate's codes, keeps the best.  Codes in L. */
static float fit_asym(int n, int nmax, const float *x, const float *w, uint8_t *L, float *mn)
{
    float lo, hi;
    min_max(x, n, &lo, &hi);
    if (lo > 0)
        lo = 0;
    if (hi <= lo) {
        memset(L, 0, (size_t)n);
        *mn = -lo;
        return 0;
    }
    double sw = 0, sx = 0;
    for (int i = 0; i < n; i++) {
        sw += w[i];
        sx += w[i] * x[i];
    }
    float scale = (hi - lo) / (float)nmax, off = lo;
    double best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest((x[i] - lo) / scale), 0, nmax);
        double e = scale * L[i] + lo - x[i];
        best += w[i] * e * e;
    }
    uint8_t cand[FQ_QK_K];
    /* with 32 levels (Q5_K) a sub-block of 32 often uses fewer than its range holds; the
     * candidates k / (max - min), k < nmax - 1, find those grids (so that values on one
     * re-quantize exactly) */
    const int extra = nmax > 15 ? nmax / 2 : 0;
    for (int s = 0; s <= 20 + extra; s++) {
        float iscale = s <= 20 ? ((float)nmax - 1.f + 0.1f * (float)s) / (hi - lo)
                               : (float)(nmax - 1 - (s - 20)) / (hi - lo);
        double sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            cand[i] = (uint8_t)clampi(nearest(iscale * (x[i] - lo)), 0, nmax);
            sl += w[i] * cand[i];
            sl2 += w[i] * cand[i] * cand[i];
            sxl += w[i] * cand[i] * x[i];
        }
        double det = sw * sl2 - sl * sl;
        if (det <= 0)
            continue;
        double a = (sw * sxl - sx * sl) / det, c = (sl2 * sx - sl * sxl) / det;
        if (c > 0) { /* the offset must stay <= 0 (stored as a non-negative min) */
            c = 0;
            a = sxl / sl2;
        }
        double err = 0;
        for (int i = 0; i < n; i++) {
            double e = a * cand[i] + c - x[i];
            err += w[i] * e * e;
        }
        if (err < best) {
            best = err;
            scale = (float)a;
            off = (float)c;
            memcpy(L, cand, (size_t)n);
        }
    }
    *mn = -off;
    return scale;
}

/* The shared part of Q4_K and Q5_K (nmax 15 / 31): fits each sub-block of 32, writes the
 * fp16 d and dmin and the 12 packed bytes of 6-bit scales and mins at b (the first 16 bytes
 * of both layouts), and leaves the codes, rounded with the stored scales, in L. */
static void q_kmin(const float *x, int nmax, uint8_t *b, uint8_t L[256])
{
    float sc[8], mn[8], w[32];
    float max_sc = 0, max_mn = 0;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float s2 = 0;
        for (int l = 0; l < 32; l++)
            s2 += xs[l] * xs[l];
        float av = sqrtf(s2 / 32);
        for (int l = 0; l < 32; l++)
            w[l] = av + fabsf(xs[l]);
        sc[j] = fit_asym(32, nmax, xs, w, L + 32 * j, &mn[j]);
        max_sc = fmaxf(max_sc, sc[j]);
        max_mn = fmaxf(max_mn, mn[j]);
    }
    float isc = max_sc > 0 ? 63.f / max_sc : 0, imn = max_mn > 0 ? 63.f / max_mn : 0;
    uint8_t *scales = b + 4;
    memset(scales, 0, 12);
    for (int j = 0; j < 8; j++) {
        int ls = clampi(nearest(isc * sc[j]), 0, 63), lm = clampi(nearest(imn * mn[j]), 0, 63);
        if (j < 4) {
            scales[j] = (uint8_t)ls;
            scales[j + 4] = (uint8_t)lm;
        } else {
            scales[j + 4] = (uint8_t)((ls & 0xf) | ((lm & 0xf) << 4));
            scales[j - 4] |= (uint8_t)((ls >> 4) << 6);
            scales[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    uint16_t hd = fq_f32_to_f16(max_sc / 63.f), hm = fq_f32_to_f16(max_mn / 63.f);
    memcpy(b, &hd, 2);
    memcpy(b + 2, &hm, 2);
    float d = H2F(hd), dmin = H2F(hm);
    for (int j = 0; j < 8; j++) {
        uint8_t s, m;
        fq_scale_min_k4(j, scales, &s, &m);
        float dd = d * s, dm = dmin * m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = dd != 0 ? (uint8_t)clampi(nearest((x[32 * j + l] + dm) / dd), 0, nmax) : 0;
    }
}

static void q_q4_K(const float *x, void *vb)
{
    fq_block_q4_K *b = vb;
    uint8_t L[256];
    q_kmin(x, 15, vb, L);
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < 32; l++)
            b->qs[32 * p + l] = (uint8_t)(L[64 * p + l] | (L[64 * p + 32 + l] << 4));
}

static void q_q5_K(const float *x, void *vb)
{
    fq_block_q5_K *b = vb;
    uint8_t L[256];
    q_kmin(x, 31, vb, L);
    memset(b->qh, 0, sizeof(b->qh));
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < 32; l++) {
            int q0 = L[64 * p + l], q1 = L[64 * p + 32 + l];
            b->qs[32 * p + l] = (uint8_t)((q0 & 0xf) | ((q1 & 0xf) << 4));
            b->qh[l] |= (uint8_t)(((q0 >> 4) << (2 * p)) | ((q1 >> 4) << (2 * p + 1)));
        }
}

/* Symmetric fit x ~ scale * q, q in -nmax..nmax-1, weights x^2 (large elements matter
 * most), over candidate scales around the one that maps the largest element to -nmax. */
static float fit_sym(int n, int nmax, const float *x, int8_t *L)
{
    float max = signed_absmax(x, n);
    if (fabsf(max) < 1e-30f) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float best_scale = 0;
    double best = -1;
    int8_t cand[16];
    for (int s = -9; s <= 9; s++) {
        float iscale = -((float)nmax + 0.1f * (float)s) / max;
        double sxl = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
            cand[i] = (int8_t)clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
            double w = (double)x[i] * x[i];
            sxl += w * x[i] * cand[i];
            sl2 += w * cand[i] * cand[i];
        }
        /* with the optimal scale sxl/sl2 the weighted error is sum w x^2 - sxl^2/sl2 */
        if (sl2 > 0 && sxl * sxl / sl2 > best) {
            best = sxl * sxl / sl2;
            best_scale = (float)(sxl / sl2);
            memcpy(L, cand, (size_t)n);
        }
    }
    return best_scale;
}

static void q_q6_K(const float *x, void *vb)
{
    fq_block_q6_K *b = vb;
    float sc[16];
    int8_t Ls[256];
    uint8_t L[256];
    float max_sc = 0, amax_sc = 0;
    for (int i = 0; i < 16; i++) {
        sc[i] = fit_sym(16, 32, x + 16 * i, Ls + 16 * i);
        if (fabsf(sc[i]) > amax_sc) {
            amax_sc = fabsf(sc[i]);
            max_sc = sc[i];
        }
    }
    if (amax_sc == 0) { /* d = 0: every element decodes to zero */
        memset(b, 0, sizeof(*b));
        return;
    }
    float iscale = -128.f / max_sc;
    b->d = fq_f32_to_f16(1.f / iscale);
    for (int i = 0; i < 16; i++)
        b->scales[i] = (int8_t)FD_MIN(127, nearest(iscale * sc[i]));
    float d = H2F(b->d);
    for (int i = 0; i < 16; i++) {
        float dd = d * b->scales[i];
        for (int l = 0; l < 16; l++) {
            int q = dd != 0 ? clampi(nearest(x[16 * i + l] / dd), -32, 31) : 0;
            L[16 * i + l] = (uint8_t)(q + 32);
        }
    }
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *q = L + 128 * h + l;
            b->ql[64 * h + l] = (uint8_t)((q[0] & 0xf) | ((q[64] & 0xf) << 4));
            b->ql[64 * h + 32 + l] = (uint8_t)((q[32] & 0xf) | ((q[96] & 0xf) << 4));
            b->qh[32 * h + l] = (uint8_t)((q[0] >> 4) | ((q[32] >> 4) << 2) | ((q[64] >> 4) << 4) |
                                          ((q[96] >> 4) << 6));
        }
}

/* ---- Q2_K and Q3_K --------------------------------------------------------------------
 * Q2_K (ggml's make_qkx2_quants with 3 levels): each sub-block of 16 gets x ~ scale * q - mn
 * fitted by least squares over 16 candidate scales (nmax - 0.5 + 0.1 k) / (max - min), the
 * candidate kept being the one of least weighted ABSOLUTE error (weights |x|: with 4 levels
 * the squared error lets outliers pull the grid off the bulk).  Sub-block scales and mins are
 * quantized to 4 bits against fp16 d = max scale / 15 and dmin = max min / 15.
 * Q3_K (ggml's make_q3_quants): symmetric codes -4..3 from the scale that maps the largest
 * element to -4, refined by up to 5 passes that move one code at a time while the weighted
 * (x^2) fit improves; 6-bit signed sub-block scales against d = -(max scale) / 32. */

static float fit_q2k(const float *x, uint8_t *L, float *mn)
{
    const int n = 16, nmax = 3;
    float lo, hi, w[16];
    min_max(x, n, &lo, &hi);
    if (lo > 0)
        lo = 0;
    if (hi == lo) {
        memset(L, 0, (size_t)n);
        *mn = -lo;
        return 0;
    }
    float sw = 0, sx = 0;
    for (int i = 0; i < n; i++) {
        w[i] = fabsf(x[i]);
        sw += w[i];
        sx += w[i] * x[i];
    }
    float scale = (hi - lo) / (float)nmax, off = lo, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)clampi(nearest((x[i] - lo) / scale), 0, nmax);
        best += w[i] * fabsf(scale * L[i] + lo - x[i]);
    }
    uint8_t cand[16];
    for (int s = 0; s <= 15; s++) {
        float iscale = ((float)nmax - 0.5f + 0.1f * (float)s) / (hi - lo);
        float sl = 0, sl2 = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            cand[i] = (uint8_t)clampi(nearest(iscale * (x[i] - lo)), 0, nmax);
            sl += w[i] * cand[i];
            sl2 += w[i] * cand[i] * cand[i];
            sxl += w[i] * cand[i] * x[i];
        }
        float det = sw * sl2 - sl * sl;
        if (det <= 0)
            continue;
        float a = (sw * sxl - sx * sl) / det, c = (sl2 * sx - sl * sxl) / det;
        if (c > 0) { /* the offset must stay <= 0 (stored as a non-negative min) */
            c = 0;
            a = sxl / sl2;
        }
        float err = 0;
        for (int i = 0; i < n; i++)
            err += w[i] * fabsf(a * cand[i] + c - x[i]);
        if (err < best) {
            best = err;
            scale = a;
            off = c;
            memcpy(L, cand, (size_t)n);
        }
    }
    *mn = -off;
    return scale;
}

static void q_q2_K(const float *x, void *vb)
{
    fq_block_q2_K *b = vb;
    uint8_t L[256];
    float sc[16], mn[16], max_sc = 0, max_mn = 0;
    for (int j = 0; j < 16; j++) {
        sc[j] = fit_q2k(x + 16 * j, L + 16 * j, &mn[j]);
        max_sc = fmaxf(max_sc, sc[j]);
        max_mn = fmaxf(max_mn, mn[j]);
    }
    float isc = max_sc > 0 ? 15.f / max_sc : 0, imn = max_mn > 0 ? 15.f / max_mn : 0;
    for (int j = 0; j < 16; j++)
        b->scales[j] = (uint8_t)(clampi(nearest(isc * sc[j]), 0, 15) |
                                 clampi(nearest(imn * mn[j]), 0, 15) << 4);
    b->d = fq_f32_to_f16(max_sc / 15.f);
    b->dmin = fq_f32_to_f16(max_mn / 15.f);
    float d = H2F(b->d), dmin = H2F(b->dmin);
    for (int j = 0; j < 16; j++) {
        float dd = d * (float)(b->scales[j] & 0xf), dm = dmin * (float)(b->scales[j] >> 4);
        if (dd == 0) /* the sub-block's codes stay as fitted: they only meet a zero scale */
            continue;
        for (int l = 0; l < 16; l++)
            L[16 * j + l] = (uint8_t)clampi(nearest((x[16 * j + l] + dm) / dd), 0, 3);
    }
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *q = L + 128 * h + l;
            b->qs[32 * h + l] = (uint8_t)(q[0] | q[32] << 2 | q[64] << 4 | q[96] << 6);
        }
}

/* Codes in -4..3 (L) and the scale of a sub-block of 16 (weights x^2). */
static float fit_q3k(const float *x, int8_t *L)
{
    const int n = 16, nmax = 4;
    float max = signed_absmax(x, n);
    if (fabsf(max) < 1e-15f) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float iscale = -(float)nmax / max, sxl = 0, sl2 = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (int8_t)clampi(nearest(iscale * x[i]), -nmax, nmax - 1);
        float w = x[i] * x[i];
        sxl += w * x[i] * L[i];
        sl2 += w * L[i] * L[i];
    }
    /* one code at a time: the best code of element i for the other codes' fit, kept when
     * the fit's explained part sxl^2 / sl2 grows */
    for (int pass = 0; pass < 5; pass++) {
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sxl - w * x[i] * L[i];
            if (slx <= 0)
                continue;
            float s2 = sl2 - w * L[i] * L[i];
            int nl = clampi(nearest(x[i] * s2 / slx), -nmax, nmax - 1);
            if (nl == L[i])
                continue;
            slx += w * x[i] * nl;
            s2 += w * nl * nl;
            if (s2 > 0 && slx * slx * sl2 > sxl * sxl * s2) {
                L[i] = (int8_t)nl;
                sxl = slx;
                sl2 = s2;
                changed++;
            }
        }
        if (!changed)
            break;
    }
    return sl2 > 0 ? sxl / sl2 : 0;
}

static void q_q3_K(const float *x, void *vb)
{
    fq_block_q3_K *b = vb;
    int8_t Ls[256];
    uint8_t L[256];
    float sc[16], max_sc = 0, amax_sc = 0;
    for (int j = 0; j < 16; j++) {
        sc[j] = fit_q3k(x + 16 * j, Ls + 16 * j);
        if (fabsf(sc[j]) > amax_sc) {
            amax_sc = fabsf(sc[j]);
            max_sc = sc[j];
        }
    }
    memset(b, 0, sizeof(*b));
    if (max_sc == 0) /* d = 0: every element decodes to zero (codes 0 -> -4 * 0) */
        return;
    float iscale = -32.f / max_sc;
    for (int j = 0; j < 16; j++) {
        int l = clampi(nearest(iscale * sc[j]), -32, 31) + 32;
        if (j < 8)
            b->scales[j] = (uint8_t)(l & 0xf);
        else
            b->scales[j - 8] |= (uint8_t)((l & 0xf) << 4);
        b->scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
    }
    b->d = fq_f32_to_f16(1.f / iscale);
    float d = H2F(b->d);
    int8_t s[16];
    fq_q3k_scales(b->scales, s);
    for (int j = 0; j < 16; j++) {
        float dd = d * (float)s[j];
        for (int l = 0; l < 16; l++) {
            int q = dd != 0 ? clampi(nearest(x[16 * j + l] / dd), -4, 3) : Ls[16 * j + l];
            L[16 * j + l] = (uint8_t)(q + 4);
        }
    }
    for (int e = 0; e < 256; e++) /* the third bit of element e: bit e / 32 of hmask[e % 32] */
        if (L[e] > 3) {
            b->hmask[e % 32] |= (uint8_t)(1u << (e / 32));
            L[e] -= 4;
        }
    for (int h = 0; h < 2; h++)
        for (int l = 0; l < 32; l++) {
            const uint8_t *q = L + 128 * h + l;
            b->qs[32 * h + l] = (uint8_t)(q[0] | q[32] << 2 | q[64] << 4 | q[96] << 6);
        }
}

static void q_f32(const float *x, void *vb)
{
    memcpy(vb, x, 4);
}

static void q_f16(const float *x, void *vb)
{
    uint16_t h = fq_f32_to_f16(*x);
    memcpy(vb, &h, 2);
}

static void q_bf16(const float *x, void *vb)
{
    uint16_t h = fq_f32_to_bf16(*x);
    memcpy(vb, &h, 2);
}

/* ---- IQ4_NL, IQ4_XS, MXFP4: quantization -----------------------------------------------
 * IQ4_NL / IQ4_XS follow the search of ggml's quantize_row_iq4_nl_impl (without an
 * importance matrix: weights x^2): for each sub-block of 32, codes for the scale that maps
 * the element of largest magnitude to -127, then 15 candidate scales (that element mapped
 * to -127 + t, t = -7..7), each scored by its least-squares optimum sum(w q x)^2 / sum(w q^2);
 * the best optimum is the sub-block's scale.  IQ4_XS then stores d = -max_scale / 32 and
 * each sub-block's scale as a 6-bit multiple of it.  Every element is finally re-rounded to
 * the grid with the scale actually stored. */

/* The index of the grid value nearest to v (table ascending; a tie takes the larger). */
static int iq4_nearest(float v)
{
    const int8_t *t = fq_kvalues_iq4nl;
    if (v <= t[0])
        return 0;
    if (v >= t[15])
        return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (v < t[mid])
            hi = mid;
        else
            lo = mid;
    }
    return v - t[lo] < t[hi] - v ? lo : hi;
}

/* The least-squares scale of a sub-block of 32 on the IQ4 grid (0 for an all-zero one). */
static float iq4_fit32(const float *x)
{
    float w[32], amax = 0, max = 0;
    for (int j = 0; j < 32; j++) {
        w[j] = x[j] * x[j];
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    if (amax < 1e-15f)
        return 0;
    float best_d = 0, best = -1;
    for (int t = -8; t <= 7; t++) {
        /* t = -8 stands for the first guess: max onto +127, i.e. -max onto the grid's -127
         * mirrored; the rest map max onto -127 + t */
        float id = t == -8 ? 127.f / max : ((float)t - 127.f) / max;
        float sqx = 0, sq2 = 0;
        for (int j = 0; j < 32; j++) {
            float q = (float)fq_kvalues_iq4nl[iq4_nearest(id * x[j])];
            sqx += w[j] * q * x[j];
            sq2 += w[j] * q * q;
        }
        if (sq2 > 0 && (best < 0 || sqx * sqx > best * sq2)) {
            best_d = sqx / sq2;
            best = best_d * sqx;
        }
    }
    return best_d;
}

/* Codes of 32 elements against scale d, packed in Q4_0's nibble order. */
static void iq4_pack32(const float *x, float d, uint8_t *qs)
{
    float id = d != 0 ? 1.f / d : 0.f;
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)(iq4_nearest(id * x[j]) | iq4_nearest(id * x[j + 16]) << 4);
}

static void q_iq4_nl(const float *x, void *vb)
{
    fq_block_iq4_nl *b = vb;
    b->d = fq_f32_to_f16(iq4_fit32(x));
    iq4_pack32(x, H2F(b->d), b->qs);
}

static void q_iq4_xs(const float *x, void *vb)
{
    fq_block_iq4_xs *b = vb;
    float sc[8], max_sc = 0, amax_sc = 0;
    for (int s = 0; s < 8; s++) {
        sc[s] = iq4_fit32(x + 32 * s);
        if (fabsf(sc[s]) > amax_sc) {
            amax_sc = fabsf(sc[s]);
            max_sc = sc[s];
        }
    }
    b->d = fq_f32_to_f16(-max_sc / 32.f);
    float d = H2F(b->d), id = d != 0 ? 1.f / d : 0.f;
    b->scales_h = 0;
    memset(b->scales_l, 0, sizeof(b->scales_l));
    for (int s = 0; s < 8; s++) {
        int l = clampi(nearest(id * sc[s]), -32, 31);
        iq4_pack32(x + 32 * s, d * (float)l, b->qs + 16 * s);
        l += 32;
        b->scales_l[s / 2] |= (uint8_t)((l & 0xf) << (4 * (s % 2)));
        b->scales_h |= (uint16_t)((l >> 4) << (2 * s));
    }
}

/* MXFP4 as ggml's reference quantizer: the block's exponent puts its largest magnitude in
 * [4, 8) times 2^(e - 127), i.e. e = floor(log2 amax) - 2 + 127 (the largest element may
 * clip to 6: the E2M1 grid tops out at 6), then each element takes its nearest grid value
 * (the first of equals, so a zero is +0). */
static void q_mxfp4(const float *x, void *vb)
{
    fq_block_mxfp4 *b = vb;
    float amax = 0;
    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    int e = 0;
    if (amax > 0) {
        int ex;
        frexpf(amax, &ex); /* amax = m 2^ex, m in [0.5, 1): floor(log2 amax) = ex - 1 */
        e = clampi(ex - 1 - 2 + 127, 0, 255);
    }
    b->e = (uint8_t)e;
    float d = fq_e8m0_half(b->e);
    for (int j = 0; j < 32; j++) {
        int best = 0;
        float best_err = fabsf(x[j]);
        for (int c = 1; c < 16; c++) {
            float err = fabsf((float)fq_kvalues_mxfp4[c] * d - x[j]);
            if (err < best_err) {
                best = c;
                best_err = err;
            }
        }
        if (j < 16)
            b->qs[j] = (uint8_t)best;
        else
            b->qs[j - 16] |= (uint8_t)(best << 4);
    }
}

typedef void (*q_fn)(const float *, void *);

static q_fn q_for(int type)
{
    switch (type) {
    case GG_F32: return q_f32;
    case GG_F16: return q_f16;
    case GG_BF16: return q_bf16;
    case GG_Q4_0: return q_q4_0;
    case GG_Q4_1: return q_q4_1;
    case GG_Q5_0: return q_q5_0;
    case GG_Q5_1: return q_q5_1;
    case GG_Q8_0: return q_q8_0;
    case GG_Q8_1: return q_q8_1;
    case GG_Q2_K: return q_q2_K;
    case GG_Q3_K: return q_q3_K;
    case GG_Q4_K: return q_q4_K;
    case GG_Q5_K: return q_q5_K;
    case GG_Q6_K: return q_q6_K;
    case GG_Q8_K: return q_q8_K;
    case GG_IQ4_NL: return q_iq4_nl;
    case GG_IQ4_XS: return q_iq4_xs;
    case GG_MXFP4: return q_mxfp4;
    default: return NULL;
    }
}

bool fq_type_quantizable(int type)
{
    return q_for(type) != NULL;
}

int fq_quantize_row(int type, const float *src, void *dst, int64_t n)
{
    q_fn f = q_for(type);
    if (!f)
        return FD_EUNSUP;
    int64_t be = gg_block_elems(type), bb = gg_block_bytes(type);
    if (n < 0 || n % be)
        return -EINVAL;
    uint8_t *p = dst;
    for (int64_t i = 0; i < n / be; i++)
        f(src + i * be, p + i * bb);
    return 0;
}
