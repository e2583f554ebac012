/* kernels_scalar.c: the portable kernel table (plain C; the compiler may vectorize it).  Used
 * where the CPU has no AVX2, and tested like the SIMD tables.  Integer dot products of the
 * quantized types are exact; their scales are applied once per block as in the SIMD tables,
 * so all three tables agree to float rounding. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "backends/cpu/kernels.h"
#include "backends/quants.h"

/* ---- activations ---------------------------------------------------------------------- */

static void quant_q32(const float *x, int64_t n, void *dst)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int32_t *sum = (int32_t *)(d + n / 32);
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[32 * b + j]));
        float id = amax > 0 ? 127.f / amax : 0.f;
        int s = 0;
        for (int j = 0; j < 32; j++) {
            int q = (int)lrintf(x[32 * b + j] * id);
            qs[32 * b + j] = (int8_t)q;
            s += q;
        }
        d[b] = amax / 127.f;
        sum[b] = s;
    }
}

static void quant_qk(const float *x, int64_t n, void *dst)
{
    int8_t *qs = dst;
    float *d = (float *)(qs + n);
    int16_t *bsum = (int16_t *)(d + n / 256);
    for (int64_t b = 0; b < n / 256; b++) {
        float amax = 0;
        for (int j = 0; j < 256; j++)
            amax = fmaxf(amax, fabsf(x[256 * b + j]));
        float id = amax > 0 ? 127.f / amax : 0.f;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int j = 0; j < 16; j++) {
                int q = (int)lrintf(x[256 * b + 16 * g + j] * id);
                qs[256 * b + 16 * g + j] = (int8_t)q;
                s += q;
            }
            bsum[16 * b + g] = (int16_t)s;
        }
        d[b] = amax / 127.f;
    }
}

/* ---- dot kernels ---------------------------------------------------------------------- */

#define XROW(x, ldx, r) ((const void *)((const uint8_t *)(x) + (size_t)(r) * (ldx)))

static void dot_f32(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    const float *w = vw;
    for (int r = 0; r < nr; r++) {
        const float *xr = XROW(x, ldx, r);
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int64_t i = 0;
        for (; i + 4 <= n; i += 4) {
            a0 += w[i] * xr[i];
            a1 += w[i + 1] * xr[i + 1];
            a2 += w[i + 2] * xr[i + 2];
            a3 += w[i + 3] * xr[i + 3];
        }
        for (; i < n; i++)
            a0 += w[i] * xr[i];
        out[r] = (a0 + a1) + (a2 + a3);
    }
}

static void dot_f16(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    const uint16_t *w = vw;
    for (int r = 0; r < nr; r++) {
        const float *xr = XROW(x, ldx, r);
        float a = 0;
        for (int64_t i = 0; i < n; i++)
            a += fq_f16_to_f32(w[i]) * xr[i];
        out[r] = a;
    }
}

static void dot_bf16(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    const uint16_t *w = vw;
    for (int r = 0; r < nr; r++) {
        const float *xr = XROW(x, ldx, r);
        float a = 0;
        for (int64_t i = 0; i < n; i++)
            a += fq_bf16_to_f32(w[i]) * xr[i];
        out[r] = a;
    }
}

static void dot_q8_0(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    const fq_block_q8_0 *w = vw;
    for (int r = 0; r < nr; r++) {
        const void *row = XROW(x, ldx, r);
        const int8_t *q = fcpu_x_qs(row);
        const float *d = fcpu_xq32_d(row, n);
        float a = 0;
        for (int64_t b = 0; b < n / 32; b++) {
            int s = 0;
            for (int j = 0; j < 32; j++)
                s += w[b].qs[j] * q[32 * b + j];
            a += fq_f16_to_f32(w[b].d) * d[b] * (float)s;
        }
        out[r] = a;
    }
}

static void dot_q4_0(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    const fq_block_q4_0 *w = vw;
    for (int r = 0; r < nr; r++) {
        const void *row = XROW(x, ldx, r);
        const int8_t *q = fcpu_x_qs(row);
        const float *d = fcpu_xq32_d(row, n);
        const int32_t *sum = fcpu_xq32_sum(row, n);
        float a = 0;
        for (int64_t b = 0; b < n / 32; b++) {
            int s = 0;
            for (int j = 0; j < 16; j++)
                s += (w[b].qs[j] & 15) * q[32 * b + j] + (w[b].qs[j] >> 4) * q[32 * b + 16 + j];
            a += fq_f16_to_f32(w[b].d) * d[b] * (float)(s - 8 * sum[b]);
        }
        out[r] = a;
    }
}

/* Q4_1, Q5_0, Q5_1: codes q (4 or 5 bits, unsigned) with value d q + m (Q5_0: d (q - 16)),
 * so a block's dot is dw dx (sum q x) + m dx (sum x), sum x being the activation block's
 * sum of codes.  Q5_x's fifth bit of element j is bit j of the 32-bit qh. */
static int legacy_code(const uint8_t *qs, uint32_t qh, int five, int j)
{
    int c = j < 16 ? qs[j] & 15 : qs[j - 16] >> 4;
    return five ? c | (int)((qh >> j) & 1) << 4 : c;
}

static void dot_legacy(int64_t n, const uint8_t *w, int type, const void *x, size_t ldx,
                       int nr, float *out)
{
    const int five = type != GG_Q4_1, has_m = type != GG_Q5_0;
    const size_t bb = (size_t)gg_block_bytes(type), qs_at = bb - 16;
    for (int r = 0; r < nr; r++) {
        const void *row = XROW(x, ldx, r);
        const int8_t *q = fcpu_x_qs(row);
        const float *d = fcpu_xq32_d(row, n);
        const int32_t *sum = fcpu_xq32_sum(row, n);
        float a = 0;
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *blk = w + (size_t)b * bb;
            uint16_t dh, mh = 0;
            uint32_t qh = 0;
            memcpy(&dh, blk, 2);
            if (has_m)
                memcpy(&mh, blk + 2, 2);
            if (five)
                memcpy(&qh, blk + qs_at - 4, 4);
            int s = 0;
            for (int j = 0; j < 32; j++)
                s += legacy_code(blk + qs_at, qh, five, j) * q[32 * b + j];
            if (has_m)
                a += d[b] * (fq_f16_to_f32(dh) * (float)s + fq_f16_to_f32(mh) * (float)sum[b]);
            else
                a += fq_f16_to_f32(dh) * d[b] * (float)(s - 16 * sum[b]);
        }
        out[r] = a;
    }
}

static void dot_q4_1(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    dot_legacy(n, vw, GG_Q4_1, x, ldx, nr, out);
}

static void dot_q5_0(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    dot_legacy(n, vw, GG_Q5_0, x, ldx, nr, out);
}

static void dot_q5_1(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    dot_legacy(n, vw, GG_Q5_1, x, ldx, nr, out);
}

/* Q4_K and Q5_K: the same super-block head (d, dmin, 12 bytes of scales and mins) and nibble
 * order; Q5_K adds the fifth bit of element l of sub-block j as bit j of qh[l].  w holds
 * blocks of bb bytes with qh (qh_at 0: none) and qs at those offsets. */
static void dot_kmin(int64_t n, const uint8_t *w, size_t bb, size_t qh_at, size_t qs_at,
                     const void *x, size_t ldx, int nr, float *out)
{
    for (int r = 0; r < nr; r++) {
        const void *row = XROW(x, ldx, r);
        const int8_t *q = fcpu_x_qs(row);
        const float *d = fcpu_xqk_d(row, n);
        const int16_t *bs = fcpu_xqk_bsum(row, n);
        float a = 0;
        for (int64_t b = 0; b < n / 256; b++) {
            const fq_block_q4_K *wb = (const fq_block_q4_K *)(const void *)(w + (size_t)b * bb);
            const uint8_t *qs = w + (size_t)b * bb + qs_at, *qh = w + (size_t)b * bb + qh_at;
            const int8_t *qb = q + 256 * b;
            int isum = 0, msum = 0;
            for (int j = 0; j < 8; j++) {
                uint8_t sc, m;
                fq_scale_min_k4(j, wb->scales, &sc, &m);
                int s = 0, sh = (j & 1) * 4;
                for (int l = 0; l < 32; l++) {
                    int c = (qs[32 * (j / 2) + l] >> sh) & 15;
                    if (qh_at)
                        c |= ((qh[l] >> j) & 1) << 4;
                    s += c * qb[32 * j + l];
                }
                isum += sc * s;
                msum += m * (bs[16 * b + 2 * j] + bs[16 * b + 2 * j + 1]);
            }
            a += d[b] * (fq_f16_to_f32(wb->d) * (float)isum - fq_f16_to_f32(wb->dmin) * (float)msum);
        }
        out[r] = a;
    }
}

static void dot_q4_K(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    dot_kmin(n, vw, sizeof(fq_block_q4_K), 0, offsetof(fq_block_q4_K, qs), x, ldx, nr, out);
}

static void dot_q5_K(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    dot_kmin(n, vw, sizeof(fq_block_q5_K), offsetof(fq_block_q5_K, qh),
             offsetof(fq_block_q5_K, qs), x, ldx, nr, out);
}

static void dot_q6_K(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    const fq_block_q6_K *w = vw;
    for (int r = 0; r < nr; r++) {
        const void *row = XROW(x, ldx, r);
        const int8_t *q = fcpu_x_qs(row);
        const float *d = fcpu_xqk_d(row, n);
        float a = 0;
        for (int64_t b = 0; b < n / 256; b++) {
            const fq_block_q6_K *wb = &w[b];
            const int8_t *qb = q + 256 * b;
            uint8_t c[256];
            fq_q6k_codes(wb, c);
            int isum = 0;
            for (int sb = 0; sb < 16; sb++) {
                int s = 0;
                for (int l = 16 * sb; l < 16 * sb + 16; l++)
                    s += ((int)c[l] - 32) * qb[l];
                isum += wb->scales[sb] * s;
            }
            a += d[b] * fq_f16_to_f32(wb->d) * (float)isum;
        }
        out[r] = a;
    }
}

/* Q2_K and Q3_K: 16 sub-blocks of 16 elements; element e = 128 h + 32 j + l has its two low
 * bits at bits 2j of qs[32 h + l] and belongs to sub-block e / 16.  Q2_K: the value is
 * d sc q - dmin m (4-bit scale and min of the sub-block), so the dot is
 * dx (d sum_s sc_s (q . x)_s - dmin sum_s m_s (sum of x)_s), the second from the
 * activations' sums of 16 codes.  Q3_K: the code q | 4 h (h bit 4 h + j of hmask[l]) is
 * 0..7 for the value q' - 4, times the signed 6-bit scale (fq_q3k_scales): the -4 comes off
 * as -4 sc_s (sum of x)_s from the same sums. */
static int q23_code(const uint8_t *qs, const uint8_t *hmask, int e)
{
    int c = (qs[32 * (e / 128) + e % 32] >> (2 * (e / 32 % 4))) & 3;
    if (hmask)
        c |= ((hmask[e % 32] >> (e / 32)) & 1) << 2;
    return c;
}

static void dot_q2_K(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    const fq_block_q2_K *w = vw;
    for (int r = 0; r < nr; r++) {
        const void *row = XROW(x, ldx, r);
        const int8_t *q = fcpu_x_qs(row);
        const float *d = fcpu_xqk_d(row, n);
        const int16_t *bs = fcpu_xqk_bsum(row, n);
        float a = 0;
        for (int64_t b = 0; b < n / 256; b++) {
            const fq_block_q2_K *wb = &w[b];
            int isum = 0, msum = 0;
            for (int sb = 0; sb < 16; sb++) {
                int s = 0;
                for (int e = 16 * sb; e < 16 * sb + 16; e++)
                    s += q23_code(wb->qs, NULL, e) * q[256 * b + e];
                isum += (wb->scales[sb] & 15) * s;
                msum += (wb->scales[sb] >> 4) * bs[16 * b + sb];
            }
            a += d[b] * (fq_f16_to_f32(wb->d) * (float)isum - fq_f16_to_f32(wb->dmin) * (float)msum);
        }
        out[r] = a;
    }
}

static void dot_q3_K(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    const fq_block_q3_K *w = vw;
    for (int r = 0; r < nr; r++) {
        const void *row = XROW(x, ldx, r);
        const int8_t *q = fcpu_x_qs(row);
        const float *d = fcpu_xqk_d(row, n);
        const int16_t *bs = fcpu_xqk_bsum(row, n);
        float a = 0;
        for (int64_t b = 0; b < n / 256; b++) {
            const fq_block_q3_K *wb = &w[b];
            int8_t sc[16];
            fq_q3k_scales(wb->scales, sc);
            int isum = 0;
            for (int sb = 0; sb < 16; sb++) {
                int s = 0;
                for (int e = 16 * sb; e < 16 * sb + 16; e++)
                    s += q23_code(wb->qs, wb->hmask, e) * q[256 * b + e];
                isum += sc[sb] * (s - 4 * bs[16 * b + sb]);
            }
            a += d[b] * fq_f16_to_f32(wb->d) * (float)isum;
        }
        out[r] = a;
    }
}

/* IQ4_NL, MXFP4 (blocks of 32) and IQ4_XS (super-blocks of 256 with 8 signed 6-bit
 * sub-block scales): each code indexes a 16-entry int8 table, so a block's dot is
 * scale * dx * sum(table[code] x) with an exact integer sum. */
static int dot_table32(const uint8_t *qs, const int8_t *table, const int8_t *q)
{
    int s = 0;
    for (int j = 0; j < 16; j++)
        s += table[qs[j] & 15] * q[j] + table[qs[j] >> 4] * q[j + 16];
    return s;
}

/* IQ4_NL (an fp16 scale) and MXFP4 (an E8M0 byte): 32 codes of 4 bits after the scale. */
static void dot_t32(int64_t n, const uint8_t *w, bool mx, const void *x, size_t ldx, int nr,
                    float *out)
{
    const size_t bb = mx ? sizeof(fq_block_mxfp4) : sizeof(fq_block_iq4_nl);
    const int8_t *table = mx ? fq_kvalues_mxfp4 : fq_kvalues_iq4nl;
    for (int r = 0; r < nr; r++) {
        const void *row = XROW(x, ldx, r);
        const int8_t *q = fcpu_x_qs(row);
        const float *d = fcpu_xq32_d(row, n);
        float a = 0;
        for (int64_t b = 0; b < n / 32; b++) {
            const uint8_t *blk = w + (size_t)b * bb;
            uint16_t h;
            memcpy(&h, blk, 2);
            const float sc = mx ? fq_e8m0_half(blk[0]) : fq_f16_to_f32(h);
            a += sc * d[b] * (float)dot_table32(blk + bb - 16, table, q + 32 * b);
        }
        out[r] = a;
    }
}

static void dot_iq4_nl(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    dot_t32(n, vw, false, x, ldx, nr, out);
}

static void dot_mxfp4(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    dot_t32(n, vw, true, x, ldx, nr, out);
}

static void dot_iq4_xs(int64_t n, const void *vw, const void *x, size_t ldx, int nr, float *out)
{
    const fq_block_iq4_xs *w = vw;
    for (int r = 0; r < nr; r++) {
        const void *row = XROW(x, ldx, r);
        const int8_t *q = fcpu_x_qs(row);
        const float *d = fcpu_xqk_d(row, n);
        float a = 0;
        for (int64_t b = 0; b < n / 256; b++) {
            int8_t ls[8];
            fq_iq4xs_scales(&w[b], ls);
            int isum = 0;
            for (int s = 0; s < 8; s++)
                isum += ls[s] * dot_table32(w[b].qs + 16 * s, fq_kvalues_iq4nl, q + 256 * b + 32 * s);
            a += d[b] * fq_f16_to_f32(w[b].d) * (float)isum;
        }
        out[r] = a;
    }
}

/* The table types' batch slots, the plain references of the SIMD ones: dot8 is the per-row
 * dot above (it takes any number of rows), dot4 that dot on each of the four weight rows. */
static void dot4_rows(fcpu_dot_fn dot, int64_t n, const void *w, size_t ldw, const void *x,
                      float *out)
{
    for (int i = 0; i < 4; i++)
        dot(n, (const uint8_t *)w + (size_t)i * ldw, x, 0, 1, out + i);
}

static void dot4_iq4_nl(int64_t n, const void *w, size_t ldw, const void *x, float *out)
{
    dot4_rows(dot_iq4_nl, n, w, ldw, x, out);
}

static void dot4_iq4_xs(int64_t n, const void *w, size_t ldw, const void *x, float *out)
{
    dot4_rows(dot_iq4_xs, n, w, ldw, x, out);
}

static void dot4_mxfp4(int64_t n, const void *w, size_t ldw, const void *x, float *out)
{
    dot4_rows(dot_mxfp4, n, w, ldw, x, out);
}

static void pv(const float *p, const float *v, int64_t ldv, int64_t T, int hd, float *o)
{
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int64_t t = 0; t < T; t++)
        for (int i = 0; i < hd; i++)
            o[i] += p[t] * v[t * ldv + i];
}

/* ---- vector helpers ------------------------------------------------------------------- */

static float vdot(const float *a, const float *b, int64_t n)
{
    float s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static void axpy(float a, const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void scale(float *y, float a, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] *= a;
}

static double sumsq(const float *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

static double sum(const float *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

static double sumsq_dev(const float *x, int64_t n, float mean)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)(x[i] - mean) * (x[i] - mean);
    return s;
}

static float vmax(const float *x, int64_t n)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        m = fmaxf(m, x[i]);
    return m;
}

static float exp_sum(const float *s, float m, float *e, int64_t n)
{
    float t = 0;
    for (int64_t i = 0; i < n; i++) {
        e[i] = expf(s[i] - m);
        t += e[i];
    }
    return t;
}

static void silu_mul(const float *g, const float *u, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = g[i] / (1.f + expf(-g[i])) * u[i];
}

static void gelu_mul(const float *g, const float *u, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float x = g[i];
        float z = -1.5957691216057308f * (x + 0.044715f * x * x * x); /* -2 sqrt(2/pi) (.) */
        out[i] = x / (1.f + expf(z)) * u[i];
    }
}

static void mul_scale(const float *x, const float *g, float s, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * s * g[i];
}

static void mul(const float *x, const float *g, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * g[i];
}

static void add(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

static uint64_t read_sum(const void *p, size_t n, int mode)
{
    const uint64_t *q = p;
    uint64_t a[4] = {0};
    for (size_t i = 0; i + 4 <= n / 8; i += 4)
        for (int j = 0; j < 4; j++)
            a[j] += q[i + j];
    return a[0] + a[1] + a[2] + a[3];
}

static void round_f16(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = fq_f16_to_f32(fq_f32_to_f16(x[i]));
}

static void round_bf16(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = fq_bf16_to_f32(fq_f32_to_bf16(x[i]));
}

static const fcpu_kern_t table = {
    .name = "scalar",
    .isa = FCPU_ISA_SCALAR,
    .quant_q32 = quant_q32,
    .quant_qk = quant_qk,
    .dot = {[GG_F32] = dot_f32, [GG_F16] = dot_f16, [GG_BF16] = dot_bf16, [GG_Q8_0] = dot_q8_0,
            [GG_Q4_0] = dot_q4_0, [GG_Q4_K] = dot_q4_K, [GG_Q5_K] = dot_q5_K,
            [GG_Q6_K] = dot_q6_K,
            [GG_Q2_K] = dot_q2_K,
            [GG_Q3_K] = dot_q3_K,
            [GG_Q4_1] = dot_q4_1,
            [GG_Q5_0] = dot_q5_0,
            [GG_Q5_1] = dot_q5_1,
            [GG_IQ4_NL] = dot_iq4_nl,
            [GG_IQ4_XS] = dot_iq4_xs,
            [GG_MXFP4] = dot_mxfp4,
    },
    .dot4 = {[GG_IQ4_NL] = dot4_iq4_nl,
             [GG_IQ4_XS] = dot4_iq4_xs,
             [GG_MXFP4] = dot4_mxfp4,
    },
    .dot8 = {[GG_IQ4_NL] = dot_iq4_nl,
             [GG_IQ4_XS] = dot_iq4_xs,
             [GG_MXFP4] = dot_mxfp4,
    },
    .xform8 = {[GG_IQ4_NL] = FCPU_XQ32,
               [GG_IQ4_XS] = FCPU_XQK,
               [GG_MXFP4] = FCPU_XQ32,
    },
    .pv = pv,
    .round_to = {[GG_F16] = round_f16, [GG_BF16] = round_bf16},
    .xform = {[GG_Q8_0] = FCPU_XQ32, [GG_Q4_0] = FCPU_XQ32, [GG_Q4_K] = FCPU_XQK,
              [GG_Q5_K] = FCPU_XQK, [GG_Q6_K] = FCPU_XQK,
              [GG_Q2_K] = FCPU_XQK,
              [GG_Q3_K] = FCPU_XQK,
              [GG_Q4_1] = FCPU_XQ32,
              [GG_Q5_0] = FCPU_XQ32,
              [GG_Q5_1] = FCPU_XQ32,
              [GG_IQ4_NL] = FCPU_XQ32,
              [GG_IQ4_XS] = FCPU_XQK,
              [GG_MXFP4] = FCPU_XQ32,
    },
    .vdot = vdot,
    .axpy = axpy,
    .scale = scale,
    .sumsq = sumsq,
    .sum = sum,
    .sumsq_dev = sumsq_dev,
    .vmax = vmax,
    .exp_sum = exp_sum,
    .silu_mul = silu_mul,
    .gelu_mul = gelu_mul,
    .mul_scale = mul_scale,
    .mul = mul,
    .add = add,
    .read_sum = read_sum,
};

const fcpu_kern_t *fcpu_kernels_scalar(void)
{
    return &table;
}
