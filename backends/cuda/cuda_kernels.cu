/* cuda_kernels.cu: the CUDA backend's kernels (cuda_kernels.h).  Each takes one parameter
 * struct by value.  Accumulation is fp32 throughout; RoPE angles are computed in fp64 as the
 * CPU reference computes them.
 *
 * GEMV (decode and small batches): one warp computes OR weight rows against all R activation
 * rows, so each activation value loaded from L1 feeds OR products and each weight value R.
 * Weights stream with 16-byte evict-first loads, U chunks in flight per lane.  With a
 * deferred RMS norm the same loop also accumulates sum(x^2) of the raw rows (the values are
 * in registers already): no extra pass over x and no separate norm kernel; 1/rms multiplies
 * the fp32 accumulator at the end.
 *
 * Attention, decode rows (one query row per sequence, fused modes): k_att_dec, lane groups
 * per cached position with coalesced 16-byte K and V loads, below.  Other rows (prefill,
 * REF): a block takes one KV head, up to FCU_ATT_QB query rows of a sequence
 * and one split of `chunk` cached positions; the query heads that share the KV head share
 * every K and V load.  Fused modes keep exp(s - m) unnormalized through P.V and divide at
 * the end; splits of one row are merged by the block that finishes last, rescaling each
 * split's (m, l, o) by exp(m - M).  The REF path is three kernels: scores to memory, a
 * softmax that normalizes them in place, and P.V of the normalized rows.
 *
 * Typed KV caches (backend.h's fb_kv layout): both attention kernels read F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q5_0 and Q5_1 rows directly (kv_ld4 / kv_ld1 dequantize as quants.c does), with
 * the query rounded as a product with K of the type rounds it (fcpu_ref_kv_query); the decode
 * kernel has a form per type for K and V of one type, the general kernel reads any pair.
 * k_kv_store writes them with quants.c's roundings bit for bit.  Ring caches: a position's row
 * is ring_row(t), the ring's, as it is loaded. */
#include "backends/cuda/cuda_kernels.h"

#include <cuda_bf16.h>
#include <math.h>

extern "C" {
#include "backends/backend.h"
#include "common/ggtypes.h"
}

/* ---- helpers -------------------------------------------------------------------------- */

/* Programmatic dependent launch (sm_90; no-ops below, and when a kernel was not launched
 * that way).  Every kernel lets the next one be scheduled as soon as all of its own blocks
 * have started (pdl_launch), and waits for the previous kernel to finish and its writes to
 * be visible (pdl_wait) before it reads or writes anything another kernel touches: so the
 * next kernel's launch and prologue (the GEMV's first weight loads) overlap this one's tail.
 * The wait is transitive: a kernel that has passed it knows every earlier kernel is done. */
__device__ __forceinline__ void pdl_launch(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ float warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
#pragma unroll
    for (int o = 16; o; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32); every thread gets the result. */
__device__ float block_sum(float v, float *sh)
{
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (l == 0)
        sh[w] = v;
    __syncthreads();
    v = l < nw ? sh[l] : 0.f;
    return warp_sum(v);
}

__device__ __forceinline__ float bf16_lo(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }
__device__ __forceinline__ float2 f16x2(uint32_t u)
{
    __half2 h = *reinterpret_cast<__half2 *>(&u);
    return __half22float2(h);
}

/* ---- weight access by layout ---------------------------------------------------------- */

template <int T> struct WT;

template <> struct WT<FCU_W_F32> {
    static constexpr bool BLOCK = false; /* cvt gives the weights themselves */
    struct raw { float4 a, b; };
    static __device__ __forceinline__ void load(raw &r, const fcu_gemv_p &p, int64_t row, int j)
    {
        const float4 *w = reinterpret_cast<const float4 *>((const float *)p.w + row * p.n_in + j);
        r.a = __ldcs(w);
        r.b = __ldcs(w + 1);
    }
    static __device__ __forceinline__ void cvt(const raw &r, float f[8])
    {
        f[0] = r.a.x; f[1] = r.a.y; f[2] = r.a.z; f[3] = r.a.w;
        f[4] = r.b.x; f[5] = r.b.y; f[6] = r.b.z; f[7] = r.b.w;
    }
    static __device__ __forceinline__ float elem(const void *w, const __half *, int64_t row,
                                                 int n_in, int j)
    {
        return ((const float *)w)[row * n_in + j];
    }
};

template <> struct WT<FCU_W_BF16> {
    static constexpr bool BLOCK = false; /* cvt gives the weights themselves */
    typedef uint4 raw;
    static __device__ __forceinline__ void load(raw &r, const fcu_gemv_p &p, int64_t row, int j)
    {
        r = __ldcs(reinterpret_cast<const uint4 *>((const uint16_t *)p.w + row * p.n_in + j));
    }
    static __device__ __forceinline__ void cvt(const raw &r, float f[8])
    {
        f[0] = bf16_lo(r.x); f[1] = bf16_hi(r.x); f[2] = bf16_lo(r.y); f[3] = bf16_hi(r.y);
        f[4] = bf16_lo(r.z); f[5] = bf16_hi(r.z); f[6] = bf16_lo(r.w); f[7] = bf16_hi(r.w);
    }
    static __device__ __forceinline__ float elem(const void *w, const __half *, int64_t row,
                                                 int n_in, int j)
    {
        return bf16_lo(((const uint16_t *)w)[row * n_in + j]);
    }
};

template <> struct WT<FCU_W_F16> {
    static constexpr bool BLOCK = false; /* cvt gives the weights themselves */
    typedef uint4 raw;
    static __device__ __forceinline__ void load(raw &r, const fcu_gemv_p &p, int64_t row, int j)
    {
        r = __ldcs(reinterpret_cast<const uint4 *>((const uint16_t *)p.w + row * p.n_in + j));
    }
    static __device__ __forceinline__ void cvt(const raw &r, float f[8])
    {
        float2 a = f16x2(r.x), b = f16x2(r.y), c = f16x2(r.z), d = f16x2(r.w);
        f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
        f[4] = c.x; f[5] = c.y; f[6] = d.x; f[7] = d.y;
    }
    static __device__ __forceinline__ float elem(const void *w, const __half *, int64_t row,
                                                 int n_in, int j)
    {
        return __half2float(((const __half *)w)[row * n_in + j]);
    }
};

template <> struct WT<FCU_W_Q8> {
    /* cvt gives the int8 values; the chunk's 8 weights share one block scale, applied once
     * to their dot product (gemv_dot) */
    static constexpr bool BLOCK = true;
    struct raw { uint2 q; float d; };
    static __device__ __forceinline__ void load(raw &r, const fcu_gemv_p &p, int64_t row, int j)
    {
        r.q = __ldcs(reinterpret_cast<const uint2 *>((const int8_t *)p.w + row * p.n_in + j));
        r.d = __half2float(__ldg(p.wscale + row * (p.n_in / 32) + j / 32));
    }
    static __device__ __forceinline__ void cvt(const raw &r, float f[8])
    {
        /* int8 to fp32 without the quarter-rate conversion instruction: the byte with its
         * sign bit flipped (q + 128) becomes the low mantissa byte of 2^23, and subtracting
         * 2^23 + 128 leaves q exactly (a byte permute and an add, both full rate) */
        const uint32_t x = r.q.x ^ 0x80808080u, y = r.q.y ^ 0x80808080u;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            f[k] = __uint_as_float(__byte_perm(x, 0x4b000000u, 0x7540u | k)) - 8388736.f;
            f[4 + k] = __uint_as_float(__byte_perm(y, 0x4b000000u, 0x7540u | k)) - 8388736.f;
        }
    }
    static __device__ __forceinline__ float elem(const void *w, const __half *ws, int64_t row,
                                                 int n_in, int j)
    {
        return (float)((const int8_t *)w)[row * n_in + j] *
               __half2float(ws[row * (n_in / 32) + j / 32]);
    }
};

/* ---- GEMV ----------------------------------------------------------------------------- */

/* The finished output of weight row o for activation row r: the deferred scale, the bias. */
__device__ __forceinline__ float gemv_val(const fcu_gemv_p &p, int o, int r, float acc, float ss)
{
    float s = 1.f;
    if (p.norm == FCU_NORM_RMS) {
        s = __frsqrt_rn(ss / (float)p.n_in + p.eps);
        if (p.scale_out && o == 0)
            p.scale_out[r] = s;
    } else if (p.norm == FCU_NORM_SCALES) {
        s = p.row_scale[r];
    }
    float v = acc * s;
    if (p.bias)
        v += p.bias[o];
    return v;
}

__device__ __forceinline__ void gemv_out(const fcu_gemv_p &p, int o, int r, float acc, float ss)
{
    const float v = gemv_val(p, o, r, acc, ss);
    const int64_t i = (int64_t)r * p.n_out + o;
    p.y[i] = v;
    if (p.add_to)
        p.add_to[i] += v;
}

/* The epilogue of an output pair (o, o + 1) of activation row r (o even): RoPE when the pair
 * lies in a rotated range, then the stores (y, the residual add, the copies). */
__device__ __forceinline__ void gemv_pair(const fcu_gemv_p &p, int o, int r, float v0, float v1,
                                          bool two)
{
    if (two) {
        for (int k = 0; k < p.rope_n; k++) {
            if (o >= p.rope_c0[k] && o < p.rope_c1[k]) {
                const int i = ((o - p.rope_c0[k]) % p.rope_hd) / 2;
                if (2 * i < p.rope_nrot) { /* as k_rope: fp64 angle and rotation */
                    const double th = (double)p.rope_pos[r] * (double)p.rope_scale *
                                      (p.rope_freq ? p.rope_freq[i]
                                                   : pow((double)p.rope_base, -2.0 * i / p.rope_nrot));
                    double sn, cs;
                    sincos(th, &sn, &cs);
                    sn *= p.rope_mscale;
                    cs *= p.rope_mscale;
                    const double a = v0, b = v1;
                    v0 = (float)(a * cs - b * sn);
                    v1 = (float)(a * sn + b * cs);
                }
            }
        }
    }
    const int64_t base = (int64_t)r * p.n_out + o;
    p.y[base] = v0;
    if (two)
        p.y[base + 1] = v1;
    if (p.add_to) {
        p.add_to[base] += v0;
        if (two)
            p.add_to[base + 1] += v1;
    }
    for (int k = 0; k < p.cp_n; k++) {
        float *d = p.cp_dst[k][r];
        if (!d)
            continue;
        if (o >= p.cp_c0[k] && o < p.cp_c1[k])
            d[o - p.cp_c0[k]] = v0;
        if (two && o + 1 >= p.cp_c0[k] && o + 1 < p.cp_c1[k])
            d[o + 1 - p.cp_c0[k]] = v1;
    }
}

/* acc + the dot product of a converted chunk of 8 weights (w of r) with 8 activations; a
 * block-scaled type sums the integers' products first and scales that sum once. */
template <int T>
__device__ __forceinline__ float gemv_dot(const typename WT<T>::raw &r, const float (&wf)[8],
                                          const float *x, float acc)
{
    if constexpr (WT<T>::BLOCK) {
        float t = wf[0] * x[0];
#pragma unroll
        for (int e = 1; e < 8; e++)
            t = fmaf(wf[e], x[e], t);
        return fmaf(r.d, t, acc);
    } else {
#pragma unroll
        for (int e = 0; e < 8; e++)
            acc = fmaf(wf[e], x[e], acc);
        return acc;
    }
}

/* GLU: the warp's OR rows are OR/2 gate rows o0.. and the OR/2 up rows glu_n + o0.., and the
 * epilogue also writes silu(gate) * up: the SiLU-gate rides on the gate|up product.
 * The deferred RMS statistic: warp w of the block accumulates sum(x^2) over every WPB-th
 * chunk of the row (values it loads anyway), and the block adds the WPB parts; so every
 * warp stays to the end, with or without weight rows of its own.  in_scale multiplies the
 * activations (R <= OR) or, cheaper when there are more activation rows, the weights. */
template <int T, int U, int OR>
__device__ __forceinline__ void gemv_load(typename WT<T>::raw (&wr)[U][OR], const fcu_gemv_p &p,
                                          const int64_t (&row)[OR], int j)
{
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
        for (int k = 0; k < OR; k++)
            if (j + u * 256 < p.n_in)
                WT<T>::load(wr[u][k], p, row[k], j + u * 256);
}

template <int T, int R, int OR, int U, int WPB, bool GLU, bool PIPE>
__global__ void __launch_bounds__(WPB * 32) k_gemv(const fcu_gemv_p p)
{
    __shared__ float ssh[WPB][R];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int HO = GLU ? OR / 2 : OR;
    const int o0 = (blockIdx.x * WPB + warp) * HO;
    const int lim = GLU ? p.glu_n : p.n_out;
    const bool active = o0 < lim;
    const int n_in = p.n_in;
    const bool rms = p.norm == FCU_NORM_RMS;
    const bool scaled = p.in_scale != NULL;
    constexpr bool WS = R > OR; /* in_scale on the weights */
    int64_t row[OR];
#pragma unroll
    for (int k = 0; k < OR; k++)
        row[k] = GLU ? (k < HO ? min(o0 + k, lim - 1) : p.glu_n + min(o0 + k - HO, lim - 1))
                     : min(o0 + k, p.n_out - 1);
    float acc[OR][R], ss[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        ss[r] = 0.f;
#pragma unroll
        for (int k = 0; k < OR; k++)
            acc[k][r] = 0.f;
    }
    /* One row: the first weight loads go out before the wait (weights are no other kernel's
     * output).  More rows (compute-bound): every batch is loaded at the top of its iteration,
     * the order the compiler schedules best there (measured at 8 rows). */
    constexpr bool PEEL = R == 1;
    typename WT<T>::raw wr[U][OR], wn[U][OR];
    pdl_launch();
    if (PEEL && active)
        gemv_load<T, U, OR>(wr, p, row, lane * 8);
    pdl_wait();
    /* staged (one row; fcu_gemv_p.stage): the block writes x (times in_scale) to shared
     * memory and sums x^2 of the raw row while the first weight loads are in flight */
    extern __shared__ float4 stage_sh[];
    const float *xs = reinterpret_cast<const float *>(stage_sh);
    const bool stage = R == 1 && p.stage;
    if (stage) {
        float4 *d = stage_sh;
        const float4 *x4 = reinterpret_cast<const float4 *>(p.x);
        const float4 *g4 = reinterpret_cast<const float4 *>(p.in_scale);
        float t = 0.f;
        for (int i = threadIdx.x; i < n_in / 4; i += WPB * 32) {
            const float4 a = __ldg(x4 + i), g = scaled ? __ldg(g4 + i) : make_float4(1, 1, 1, 1);
            t = fmaf(a.x, a.x, fmaf(a.y, a.y, fmaf(a.z, a.z, fmaf(a.w, a.w, t))));
            d[i] = make_float4(a.x * g.x, a.y * g.y, a.z * g.z, a.w * g.w);
        }
        if (rms) {
            t = warp_sum(t);
            if (lane == 0)
                ssh[warp][0] = t;
        }
        __syncthreads();
        if (rms) {
            float u = 0.f;
#pragma unroll
            for (int w = 0; w < WPB; w++)
                u += ssh[w][0];
            ss[0] = u;
        }
        if (!active)
            return;
    }
    for (int j = lane * 8; j < n_in; j += 256 * U) {
        if (PIPE) { /* the next chunks' loads in flight while this one is consumed */
            if (active && j + 256 * U < n_in)
                gemv_load<T, U, OR>(wn, p, row, j + 256 * U);
        } else if (active && (!PEEL || j != lane * 8)) {
            gemv_load<T, U, OR>(wr, p, row, j);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int jj = j + u * 256;
            if (jj >= n_in)
                break;
            if (stage) { /* R == 1: the staged, scaled row */
                const float4 a = *reinterpret_cast<const float4 *>(xs + jj);
                const float4 b = *reinterpret_cast<const float4 *>(xs + jj + 4);
                const float xq[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
                for (int k = 0; k < OR; k++) {
                    float wf[8];
                    WT<T>::cvt(wr[u][k], wf);
                    acc[k][0] = gemv_dot<T>(wr[u][k], wf, xq, acc[k][0]);
                }
                continue;
            }
            /* the chunk index is the same for the whole warp */
            const bool my_ss = rms && ((jj - lane * 8) / 256) % WPB == warp;
            if (!active && !my_ss)
                continue;
            float sc[8];
#pragma unroll
            for (int e = 0; e < 8; e++)
                sc[e] = 1.f;
            if (scaled && active) {
                const float4 sa = __ldg(reinterpret_cast<const float4 *>(p.in_scale + jj));
                const float4 sb = __ldg(reinterpret_cast<const float4 *>(p.in_scale + jj) + 1);
                sc[0] = sa.x; sc[1] = sa.y; sc[2] = sa.z; sc[3] = sa.w;
                sc[4] = sb.x; sc[5] = sb.y; sc[6] = sb.z; sc[7] = sb.w;
            }
            float xv[R][8];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float4 *xp = reinterpret_cast<const float4 *>(p.x + (int64_t)r * n_in + jj);
                const float4 a = __ldg(xp), b = __ldg(xp + 1);
                xv[r][0] = a.x; xv[r][1] = a.y; xv[r][2] = a.z; xv[r][3] = a.w;
                xv[r][4] = b.x; xv[r][5] = b.y; xv[r][6] = b.z; xv[r][7] = b.w;
                if (my_ss) {
                    float t = ss[r];
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        t = fmaf(xv[r][e], xv[r][e], t);
                    ss[r] = t;
                }
                if (!WS && scaled) {
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        xv[r][e] *= sc[e];
                }
            }
            if (!active)
                continue;
#pragma unroll
            for (int k = 0; k < OR; k++) {
                float wf[8];
                WT<T>::cvt(wr[u][k], wf);
                if (WS && scaled) {
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        wf[e] *= sc[e];
                }
#pragma unroll
                for (int r = 0; r < R; r++)
                    acc[k][r] = gemv_dot<T>(wr[u][k], wf, xv[r], acc[k][r]);
            }
        }
        if (PIPE) {
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int k = 0; k < OR; k++)
                    wr[u][k] = wn[u][k];
        }
    }
    if (rms && !stage) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float t = warp_sum(ss[r]);
            if (lane == 0)
                ssh[warp][r] = t;
        }
        __syncthreads();
#pragma unroll
        for (int r = 0; r < R; r++) {
            float t = 0.f;
#pragma unroll
            for (int w = 0; w < WPB; w++)
                t += ssh[w][r];
            ss[r] = t;
        }
    }
    if (!active)
        return;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int k = 0; k < OR; k++)
            acc[k][r] = warp_sum(acc[k][r]);
    if constexpr (!GLU) {
        /* pairs of weight rows (o0 is even: OR is), one lane per pair and activation row */
#pragma unroll
        for (int k = 0; k < OR; k += 2)
#pragma unroll
            for (int r = 0; r < R; r++)
                if (lane == ((k / 2) * R + r) % 32 && o0 + k < p.n_out) {
                    const bool two = o0 + k + 1 < p.n_out;
                    const float v0 = gemv_val(p, o0 + k, r, acc[k][r], ss[r]);
                    const float v1 = two ? gemv_val(p, o0 + k + 1, r, acc[k + 1][r], ss[r]) : 0.f;
                    gemv_pair(p, o0 + k, r, v0, v1, two);
                }
    } else {
#pragma unroll
        for (int k = 0; k < HO; k++)
#pragma unroll
            for (int r = 0; r < R; r++)
                if (lane == (k * R + r) % 32 && o0 + k < lim) {
                    const int og = o0 + k, ou = p.glu_n + o0 + k;
                    const float g = gemv_val(p, og, r, acc[k][r], ss[r]);
                    const float u = gemv_val(p, ou, r, acc[HO + k][r], ss[r]);
                    p.y[(int64_t)r * p.n_out + og] = g;
                    p.y[(int64_t)r * p.n_out + ou] = u;
                    p.glu_out[(int64_t)r * p.glu_n + og] = g / (1.f + expf(-g)) * u;
                }
    }
}

/* Any n_in, any alignment: one warp per weight row, one element per lane per step. */
template <int T>
__global__ void __launch_bounds__(128) k_gemv_scalar(const fcu_gemv_p p)
{
    pdl_launch();
    pdl_wait();
    const int lane = threadIdx.x & 31;
    const int o = blockIdx.x * 4 + (threadIdx.x >> 5);
    if (o >= p.n_out)
        return;
    float acc[FCU_GEMV_MAX_ROWS], ss[FCU_GEMV_MAX_ROWS];
#pragma unroll
    for (int r = 0; r < FCU_GEMV_MAX_ROWS; r++)
        acc[r] = ss[r] = 0.f;
    for (int j = lane; j < p.n_in; j += 32) {
        const float w = WT<T>::elem(p.w, p.wscale, o, p.n_in, j);
        const float sc = p.in_scale ? p.in_scale[j] : 1.f;
#pragma unroll
        for (int r = 0; r < FCU_GEMV_MAX_ROWS; r++) {
            if (r < p.rows) {
                const float xv = p.x[(int64_t)r * p.n_in + j];
                ss[r] = fmaf(xv, xv, ss[r]);
                acc[r] = fmaf(w, xv * sc, acc[r]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < FCU_GEMV_MAX_ROWS; r++) {
        if (r < p.rows) {
            acc[r] = warp_sum(acc[r]);
            ss[r] = warp_sum(ss[r]);
            if (lane == r)
                gemv_out(p, o, r, acc[r], ss[r]);
        }
    }
}

/* R activation rows: OR weight rows per warp (register reuse of x), U chunks in flight, WPB
 * warps per block.  Fewer rows per block for larger R keeps enough blocks per SM.  One row
 * (decode), as measured on the H100 (bench/cuda/kbench.cu): rows of up to 2048 inputs are
 * read whole in one batch of loads (U = 8), longer ones in pipelined batches of two chunks
 * by 8 warps a block;
 * the GLU form pipelines batches of two chunks, one gate and one up row per warp. */
#define GEMV_CFG(T, R) k_gemv<T, R, ((R) <= 2 ? 2 : 4), ((R) <= 2 ? 4 : 2), ((R) <= 2 ? 4 : 2), false, false>
#define GLU_CFG(T, R) k_gemv<T, R, 4, ((R) <= 2 ? 4 : 2), 2, true, false>
#define GEMV_ROWS(T)                                                                           \
    {(const void *)GEMV_CFG(T, 1), (const void *)GEMV_CFG(T, 2), (const void *)GEMV_CFG(T, 3),  \
     (const void *)GEMV_CFG(T, 4), (const void *)GEMV_CFG(T, 5), (const void *)GEMV_CFG(T, 6),  \
     (const void *)GEMV_CFG(T, 7), (const void *)GEMV_CFG(T, 8)}

#define GLU_ROWS(T)                                                                            \
    {(const void *)GLU_CFG(T, 1), (const void *)GLU_CFG(T, 2), (const void *)GLU_CFG(T, 3),    \
     (const void *)GLU_CFG(T, 4), (const void *)GLU_CFG(T, 5), (const void *)GLU_CFG(T, 6),    \
     (const void *)GLU_CFG(T, 7), (const void *)GLU_CFG(T, 8)}

#define ONE_ROW(T, OR, U, WPB, GLU, PIPE) (const void *)k_gemv<T, 1, OR, U, WPB, GLU, PIPE>
#define ONE_ROW_ALL(OR, U, WPB, GLU, PIPE)                                                       \
    {ONE_ROW(FCU_W_F32, OR, U, WPB, GLU, PIPE), ONE_ROW(FCU_W_F16, OR, U, WPB, GLU, PIPE),     \
     ONE_ROW(FCU_W_BF16, OR, U, WPB, GLU, PIPE), ONE_ROW(FCU_W_Q8, OR, U, WPB, GLU, PIPE)}

const void *fcu_k_gemv_glu(int wtype, int rows, int n_in, int *rows_per_block, int *threads)
{
    static const void *const tab[FCU_W_COUNT][FCU_GEMV_MAX_ROWS] = {
        GLU_ROWS(FCU_W_F32), GLU_ROWS(FCU_W_F16), GLU_ROWS(FCU_W_BF16), GLU_ROWS(FCU_W_Q8)};
    /* one row: a gate and an up row per warp, 4 warps, pipelined batches of two chunks (kbench
     * with staged activations, round 3: 24.7 against 26.3 us at 1B, 80.1 against 82.3 us at
     * 8B for the configurations before) */
    static const void *const one[FCU_W_COUNT] = ONE_ROW_ALL(2, 2, 4, true, true);
    (void)n_in; /* one configuration at every row length since round 3 */
    if (wtype < 0 || wtype >= FCU_W_COUNT || rows < 1 || rows > FCU_GEMV_MAX_ROWS)
        return NULL;
    *rows_per_block = 4; /* gate rows per block: 2 warps of 2, or 4 warps of 1 */
    *threads = rows == 1 ? 128 : 64;
    return rows == 1 ? one[wtype] : tab[wtype][rows - 1];
}

size_t fcu_gemv_stage_bytes(int rows, int n_in)
{
    const size_t b = (size_t)n_in * sizeof(float);
    return rows == 1 && n_in % 8 == 0 && b <= FCU_STAGE_MAX ? b : 0;
}

cudaError_t fcu_gemv_init(void)
{
    const void *k[] = {
        ONE_ROW(FCU_W_F32, 2, 8, 4, false, false), ONE_ROW(FCU_W_F16, 2, 8, 4, false, false),
        ONE_ROW(FCU_W_BF16, 2, 8, 4, false, false), ONE_ROW(FCU_W_Q8, 2, 8, 4, false, false),
        ONE_ROW(FCU_W_F32, 2, 2, 8, false, true), ONE_ROW(FCU_W_F16, 2, 2, 8, false, true),
        ONE_ROW(FCU_W_BF16, 2, 2, 8, false, true), ONE_ROW(FCU_W_Q8, 2, 2, 8, false, true),
        ONE_ROW(FCU_W_F32, 2, 2, 4, true, true), ONE_ROW(FCU_W_F16, 2, 2, 4, true, true),
        ONE_ROW(FCU_W_BF16, 2, 2, 4, true, true), ONE_ROW(FCU_W_Q8, 2, 2, 4, true, true)};
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        cudaError_t e = cudaFuncSetAttribute(k[i], cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)FCU_STAGE_MAX);
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

const void *fcu_k_gemv(int wtype, int rows, int vec, int n_in, int *rows_per_block, int *threads)
{
    static const void *const tab[FCU_W_COUNT][FCU_GEMV_MAX_ROWS] = {
        GEMV_ROWS(FCU_W_F32), GEMV_ROWS(FCU_W_F16), GEMV_ROWS(FCU_W_BF16), GEMV_ROWS(FCU_W_Q8)};
    static const void *const short1[FCU_W_COUNT] = ONE_ROW_ALL(2, 8, 4, false, false);
    static const void *const long1[FCU_W_COUNT] = ONE_ROW_ALL(2, 2, 8, false, true);
    static const void *const scalar[FCU_W_COUNT] = {
        (const void *)k_gemv_scalar<FCU_W_F32>, (const void *)k_gemv_scalar<FCU_W_F16>,
        (const void *)k_gemv_scalar<FCU_W_BF16>, (const void *)k_gemv_scalar<FCU_W_Q8>};
    if (wtype < 0 || wtype >= FCU_W_COUNT || rows < 1 || rows > FCU_GEMV_MAX_ROWS)
        return NULL;
    if (!vec) {
        *rows_per_block = 4;
        *threads = 128;
        return scalar[wtype];
    }
    int orows = rows <= 2 ? 2 : 4, wpb = rows <= 2 ? 4 : 2;
    *rows_per_block = orows * wpb; /* the short one-row variant too: 4 warps of 2 rows */
    *threads = 32 * wpb;
    if (rows == 1 && n_in > 2048) { /* 8 warps of 2 rows (kbench gemv, round 3) */
        *rows_per_block = 2 * 8;
        *threads = 256;
        return long1[wtype];
    }
    return rows == 1 ? short1[wtype] : tab[wtype][rows - 1];
}

/* ---- multi-row GEMV on the tensor cores ----------------------------------------------- */

/* 2..8 activation rows (k_gemv_mr).  The fp32 GEMV above spends R FMAs per weight, so from
 * about 2 rows on it is bound by its FMAs, not by the weight stream.  Here a warp feeds the
 * weights to mma.m16n8k16 (bf16 in, fp32 out) as the A operand, 16 weight rows by 16 inputs,
 * and the activations as B, 16 inputs by 8 rows (rows past R are zero), so a weight read once
 * serves every row at no extra instruction cost.
 *
 * fp32 accuracy from bf16 operands: each activation x splits exactly into three bf16 parts
 * x = h + m + l (h = bf16(x), m = bf16(x - h), l = x - h - m: 8 + 8 + 8 significant bits);
 * weights split the same way into the parts their type needs (bf16 and Q8_0's int8 values: one,
 * exact; fp16: two, exact; fp32: three).  Every product of a weight part and an activation
 * part whose ranks sum to at most 2 is computed (the ones left out are below 2^-24 relative);
 * products of bf16 values are exact in the tensor core, so the error is the fp32 summation's.
 * The tensor core's own accumulation is not round-to-nearest, so each 32-input tile starts
 * from zero and its 4 results are added to fp32 accumulators with ordinary adds (Q8_0: its one
 * block scale per row multiplies the tile's sum there, as gemv_dot scales each chunk's).
 *
 * Fragment layout (PTX ISA, mma.m16n8k16 .bf16): lane = 4 g + t; A: row g / g + 8 at columns
 * 2t, 2t+1 (registers 0, 1) and 2t+8, 2t+9 (2, 3); B: column (activation row) g at rows 2t,
 * 2t+1 and 2t+8, 2t+9; C: rows g and g + 8 at columns 2t, 2t+1.  A dot product is a sum, so the
 * inputs may be visited in any order as long as A and B agree: lane (g, t) loads 8 consecutive
 * inputs t*8 .. t*8+7 of its weight rows in one 16-byte load (its 4 lanes cover a 32-input
 * tile), and k-step s of the tile takes its inputs 4s .. 4s+3 in the slots 2t, 2t+1, 2t+8,
 * 2t+9; the activations of row g come in at the same inputs.  The A rows are chosen so that
 * the epilogue finds what it needs in one lane: fragment rows g and g + 8 are weight rows o
 * and o + 1 (a RoPE pair), or in the GLU form gate row o and its up row glu_n + o.
 *
 * A block of WPB warps covers MT tiles of 16 weight rows; its warps split the inputs (warp w
 * takes tiles w, w + WPB, ...) with U tiles of loads in flight, and add their partial sums
 * through shared memory at the end, in a fixed order (deterministic).  The deferred RMS
 * statistic comes from the same loads of x. */

__device__ __forceinline__ uint32_t bf2_bits(__nv_bfloat162 h)
{
    return *reinterpret_cast<uint32_t *>(&h);
}

/* 8 floats to NP bf16 parts, packed in pairs: q[k][i] holds elements 2i (low) and 2i+1 of
 * part k; the parts sum to f exactly (for NP = 3 and any finite f; fewer parts where the
 * values have that few significant bits). */
template <int NP>
__device__ __forceinline__ void split_bf16(const float (&f)[8], uint32_t (&q)[NP][4])
{
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float a = f[2 * i], b = f[2 * i + 1];
#pragma unroll
        for (int k = 0; k < NP; k++) {
            const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
            q[k][i] = bf2_bits(h);
            if (k + 1 < NP) {
                a -= __low2float(h);
                b -= __high2float(h);
            }
        }
    }
}

/* Weight access of the multi-row kernel: NW bf16 parts, U tiles in flight. */
template <int T> struct TC;

/* The 16-bit types' loads: 8 weights in one 16-byte load, no scale. */
struct TC16 {
    typedef uint4 raw;
    static __device__ __forceinline__ void load(raw &r, const fcu_gemv_p &p, int64_t row, int j,
                                                bool ok)
    {
        r = ok ? __ldcs(reinterpret_cast<const uint4 *>((const uint16_t *)p.w + row * p.n_in + j))
               : make_uint4(0, 0, 0, 0);
    }
    static __device__ __forceinline__ float scale(const raw &) { return 1.f; }
};

template <> struct TC<FCU_W_BF16> : TC16 {
    static constexpr int NW = 1, U = 4;
    static __device__ __forceinline__ void parts(const raw &r, uint32_t (&q)[NW][4])
    {
        q[0][0] = r.x; q[0][1] = r.y; q[0][2] = r.z; q[0][3] = r.w; /* bf16 pairs already */
    }
};

template <> struct TC<FCU_W_F16> : TC16 {
    static constexpr int NW = 2, U = 4;
    static __device__ __forceinline__ void parts(const raw &r, uint32_t (&q)[NW][4])
    {
        float f[8];
        WT<FCU_W_F16>::cvt(r, f);
        split_bf16<NW>(f, q);
    }
};

template <> struct TC<FCU_W_F32> {
    static constexpr int NW = 3, U = 2;
    typedef WT<FCU_W_F32>::raw raw;
    static __device__ __forceinline__ void load(raw &r, const fcu_gemv_p &p, int64_t row, int j,
                                                bool ok)
    {
        if (ok) {
            WT<FCU_W_F32>::load(r, p, row, j);
        } else {
            r.a = make_float4(0.f, 0.f, 0.f, 0.f);
            r.b = r.a;
        }
    }
    static __device__ __forceinline__ void parts(const raw &r, uint32_t (&q)[NW][4])
    {
        float f[8];
        WT<FCU_W_F32>::cvt(r, f);
        split_bf16<NW>(f, q);
    }
    static __device__ __forceinline__ float scale(const raw &) { return 1.f; }
};

template <> struct TC<FCU_W_Q8> {
    static constexpr int NW = 1, U = 8; /* 8-byte loads: twice the tiles in flight */
    typedef WT<FCU_W_Q8>::raw raw;
    static __device__ __forceinline__ void load(raw &r, const fcu_gemv_p &p, int64_t row, int j,
                                                bool ok)
    {
        if (ok) {
            WT<FCU_W_Q8>::load(r, p, row, j);
        } else {
            r.q = make_uint2(0, 0);
            r.d = 0.f;
        }
    }
    static __device__ __forceinline__ void parts(const raw &r, uint32_t (&q)[NW][4])
    {
        float f[8];
        WT<FCU_W_Q8>::cvt(r, f); /* the int8 values, exact in bf16 */
        split_bf16<NW>(f, q);
    }
    static __device__ __forceinline__ float scale(const raw &r) { return r.d; }
};

/* c += A B for one m16n8k16 step (bf16 operands, fp32 accumulators). */
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                         uint32_t a3, uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
    (void)c; (void)a0; (void)a1; (void)a2; (void)a3; (void)b0; (void)b1;
    __trap(); /* the backend takes this kernel only on sm_80 and later */
#endif
}

/* The U tiles kt, kt + WPB, ... of the lane's weight rows (zeros past n_in). */
template <int T, int MT, int WPB>
__device__ __forceinline__ void mr_load(typename TC<T>::raw (&wr)[TC<T>::U][MT][2],
                                        const fcu_gemv_p &p, const int64_t (&row)[MT][2], int kt,
                                        int t)
{
#pragma unroll
    for (int u = 0; u < TC<T>::U; u++) {
        const int j = (kt + u * WPB) * 32 + t * 8;
        const bool ok = j < p.n_in;
#pragma unroll
        for (int m = 0; m < MT; m++) {
            TC<T>::load(wr[u][m][0], p, row[m][0], j, ok);
            TC<T>::load(wr[u][m][1], p, row[m][1], j, ok);
        }
    }
}

template <int T, int MT, int WPB, bool GLU>
__global__ void __launch_bounds__(WPB * 32) k_gemv_mr(const fcu_gemv_p p)
{
    constexpr int U = TC<T>::U, NW = TC<T>::NW;
    constexpr int RB = GLU ? 8 * MT : 16 * MT; /* weight rows (GLU: gate rows) per block */
    __shared__ float red[WPB][MT][4][32];
    __shared__ float ssh[WPB][8];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int n_in = p.n_in, nkt = (n_in + 31) / 32;
    const int lim = GLU ? p.glu_n : p.n_out;
    const bool rms = p.norm == FCU_NORM_RMS, scaled = p.in_scale != NULL;
    const bool xrow = g < p.rows;
    int64_t row[MT][2];
#pragma unroll
    for (int m = 0; m < MT; m++) {
        if (GLU) {
            const int o = min((int)blockIdx.x * RB + m * 8 + g, lim - 1);
            row[m][0] = o;
            row[m][1] = (int64_t)p.glu_n + o;
        } else {
            const int o = (int)blockIdx.x * RB + m * 16 + 2 * g;
            row[m][0] = min(o, p.n_out - 1);
            row[m][1] = min(o + 1, p.n_out - 1);
        }
    }
    float acc[MT][4], ss = 0.f;
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            acc[m][i] = 0.f;
    typename TC<T>::raw wr[U][MT][2];
    pdl_launch();
    mr_load<T, MT, WPB>(wr, p, row, warp, t); /* weights are no kernel's output */
    pdl_wait();
    const float *xr = p.x + (int64_t)g * n_in;
    for (int kt = warp; kt < nkt; kt += WPB * U) {
        if (kt != warp)
            mr_load<T, MT, WPB>(wr, p, row, kt, t);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int j0 = (kt + u * WPB) * 32;
            if (j0 >= n_in) /* the same for the whole warp */
                break;
            const int j = j0 + t * 8;
            float xv[8];
#pragma unroll
            for (int e = 0; e < 8; e++)
                xv[e] = 0.f;
            if (xrow && j < n_in) {
                const float4 a = __ldg(reinterpret_cast<const float4 *>(xr + j));
                const float4 b = __ldg(reinterpret_cast<const float4 *>(xr + j) + 1);
                xv[0] = a.x; xv[1] = a.y; xv[2] = a.z; xv[3] = a.w;
                xv[4] = b.x; xv[5] = b.y; xv[6] = b.z; xv[7] = b.w;
                if (rms) {
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        ss = fmaf(xv[e], xv[e], ss);
                }
                if (scaled) {
                    const float4 sa = __ldg(reinterpret_cast<const float4 *>(p.in_scale + j));
                    const float4 sb = __ldg(reinterpret_cast<const float4 *>(p.in_scale + j) + 1);
                    xv[0] *= sa.x; xv[1] *= sa.y; xv[2] *= sa.z; xv[3] *= sa.w;
                    xv[4] *= sb.x; xv[5] *= sb.y; xv[6] *= sb.z; xv[7] *= sb.w;
                }
            }
            uint32_t xq[3][4];
            split_bf16<3>(xv, xq);
#pragma unroll
            for (int m = 0; m < MT; m++) {
                uint32_t w0[NW][4], w1[NW][4];
                TC<T>::parts(wr[u][m][0], w0);
                TC<T>::parts(wr[u][m][1], w1);
                float c[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
                for (int s = 0; s < 2; s++)
#pragma unroll
                    for (int pw = NW - 1; pw >= 0; pw--)
#pragma unroll
                        for (int px = 2 - pw; px >= 0; px--) /* the small products first */
                            mma_bf16(c, w0[pw][2 * s], w1[pw][2 * s], w0[pw][2 * s + 1],
                                     w1[pw][2 * s + 1], xq[px][2 * s], xq[px][2 * s + 1]);
                const float d0 = TC<T>::scale(wr[u][m][0]), d1 = TC<T>::scale(wr[u][m][1]);
                acc[m][0] = fmaf(d0, c[0], acc[m][0]);
                acc[m][1] = fmaf(d0, c[1], acc[m][1]);
                acc[m][2] = fmaf(d1, c[2], acc[m][2]);
                acc[m][3] = fmaf(d1, c[3], acc[m][3]);
            }
        }
    }
    /* the warps' partial sums and statistics, added in warp order */
    ss += __shfl_xor_sync(0xffffffffu, ss, 1);
    ss += __shfl_xor_sync(0xffffffffu, ss, 2);
    if (t == 0)
        ssh[warp][g] = ss;
#pragma unroll
    for (int m = 0; m < MT; m++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            red[warp][m][i][lane] = acc[m][i];
    __syncthreads();
    if (warp >= MT)
        return;
    const int m = warp; /* warp m finishes tile m: lane (g, t) holds rows g, g + 8 of it */
    float v[4], s2[2] = {0.f, 0.f};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float a = 0.f;
#pragma unroll
        for (int w = 0; w < WPB; w++)
            a += red[w][m][i][lane];
        v[i] = a;
    }
#pragma unroll
    for (int w = 0; w < WPB; w++) {
        s2[0] += ssh[w][2 * t];
        s2[1] += ssh[w][2 * t + 1];
    }
#pragma unroll
    for (int h = 0; h < 2; h++) { /* activation rows 2t and 2t + 1: C columns */
        const int r = 2 * t + h;
        if (r >= p.rows)
            continue;
        if constexpr (!GLU) {
            const int o = (int)blockIdx.x * RB + m * 16 + 2 * g;
            if (o >= p.n_out)
                continue;
            const bool two = o + 1 < p.n_out;
            const float v0 = gemv_val(p, o, r, v[h], s2[h]);
            const float v1 = two ? gemv_val(p, o + 1, r, v[2 + h], s2[h]) : 0.f;
            gemv_pair(p, o, r, v0, v1, two);
        } else {
            const int og = (int)blockIdx.x * RB + m * 8 + g, ou = p.glu_n + og;
            if (og >= lim)
                continue;
            const float gv = gemv_val(p, og, r, v[h], s2[h]);
            const float uv = gemv_val(p, ou, r, v[2 + h], s2[h]);
            p.y[(int64_t)r * p.n_out + og] = gv;
            p.y[(int64_t)r * p.n_out + ou] = uv;
            p.glu_out[(int64_t)r * p.glu_n + og] = gv / (1.f + expf(-gv)) * uv;
        }
    }
}

/* Two tiles of rows a block where the grid stays large (MR_WIDE rows or more: 128 blocks
 * and up), one below; 8 warps split the inputs. */
#define MR_WPB 8
#define MR_WIDE 4096
#define MR_TAB(MT, GLU)                                                                         \
    {(const void *)k_gemv_mr<FCU_W_F32, MT, MR_WPB, GLU>,                                       \
     (const void *)k_gemv_mr<FCU_W_F16, MT, MR_WPB, GLU>,                                       \
     (const void *)k_gemv_mr<FCU_W_BF16, MT, MR_WPB, GLU>,                                      \
     (const void *)k_gemv_mr<FCU_W_Q8, MT, MR_WPB, GLU>}

const void *fcu_k_gemv_mr(int wtype, int glu, int n_out, int *rows_per_block, int *threads)
{
    static const void *const tab[2][2][FCU_W_COUNT] = {
        {MR_TAB(1, false), MR_TAB(2, false)}, {MR_TAB(1, true), MR_TAB(2, true)}};
    if (wtype < 0 || wtype >= FCU_W_COUNT || n_out < 1)
        return NULL;
    const int mt = n_out >= MR_WIDE ? 2 : 1;
    *rows_per_block = (glu ? 8 : 16) * mt;
    *threads = 32 * MR_WPB;
    return tab[glu ? 1 : 0][mt - 1][wtype];
}

/* ---- statistics + conversion in front of cuBLAS --------------------------------------- */

__global__ void __launch_bounds__(256) k_prep(const fcu_prep_p p)
{
    pdl_launch();
    pdl_wait();
    __shared__ float sh[32];
    const int n = p.n;
    const float *x = p.x + (int64_t)blockIdx.x * n;
    float s = 1.f;
    if (p.norm == FB_NORM_RMS) {
        float a = 0.f;
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            a = fmaf(x[i], x[i], a);
        a = block_sum(a, sh);
        s = __frsqrt_rn(a / (float)n + p.eps);
    } else if (p.norm == FB_NORM_LAYER) {
        float a = 0.f;
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            a += x[i];
        const float mean = block_sum(a, sh) / (float)n;
        float v = 0.f;
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            v = fmaf(x[i] - mean, x[i] - mean, v);
        s = __frsqrt_rn(block_sum(v, sh) / (float)n + p.eps);
    }
    if (p.scale_out && threadIdx.x == 0)
        p.scale_out[blockIdx.x] = s;
    if (!p.out)
        return;
    const int64_t base = (int64_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[i] * s;
        if (p.in_scale)
            v *= p.in_scale[i];
        if (p.out_type == FCU_W_F16)
            ((__half *)p.out)[base + i] = __float2half_rn(v);
        else if (p.out_type == FCU_W_BF16)
            ((__nv_bfloat16 *)p.out)[base + i] = __float2bfloat16_rn(v);
        else
            ((float *)p.out)[base + i] = v;
    }
}

const void *fcu_k_prep(void) { return (const void *)k_prep; }

__global__ void k_deq_q8(const fcu_deq_p p)
{
    pdl_launch();
    pdl_wait();
    const int64_t n = (int64_t)p.rows * p.n_in;
    const int nb = p.n_in / 32;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = p.row0 + i / p.n_in;
        const int j = (int)(i % p.n_in);
        const float v = (float)p.q[r * p.n_in + j] * __half2float(p.scale[r * nb + j / 32]);
        p.out[i] = __float2half_rn(v);
    }
}

const void *fcu_k_deq_q8(void) { return (const void *)k_deq_q8; }

__global__ void k_bias_rows(const fcu_rows_p p)
{
    pdl_launch();
    pdl_wait();
    const int64_t n = (int64_t)p.rows * p.n;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        p.y[i] = p.bias[i % p.n];
}

const void *fcu_k_bias_rows(void) { return (const void *)k_bias_rows; }

/* ---- the unfused norms ---------------------------------------------------------------- */

__global__ void __launch_bounds__(256) k_rmsnorm(const fcu_norm_p p)
{
    pdl_launch();
    pdl_wait();
    __shared__ float sh[32];
    const int n = p.n;
    const float *x = p.x + (int64_t)blockIdx.x * n;
    float *y = p.y + (int64_t)blockIdx.x * n;
    float a = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        a = fmaf(x[i], x[i], a);
    const float s = __frsqrt_rn(block_sum(a, sh) / (float)n + p.eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        y[i] = x[i] * s * p.gamma[i];
}

const void *fcu_k_rmsnorm(void) { return (const void *)k_rmsnorm; }

__global__ void __launch_bounds__(256) k_layernorm(const fcu_norm_p p)
{
    pdl_launch();
    pdl_wait();
    __shared__ float sh[32];
    const int n = p.n;
    const float *x = p.x + (int64_t)blockIdx.x * n;
    float *y = p.y + (int64_t)blockIdx.x * n;
    float a = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        a += x[i];
    const float mean = block_sum(a, sh) / (float)n;
    float v = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        v = fmaf(x[i] - mean, x[i] - mean, v);
    const float s = __frsqrt_rn(block_sum(v, sh) / (float)n + p.eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        y[i] = (x[i] - mean) * s * p.gamma[i] + (p.beta ? p.beta[i] : 0.f);
}

const void *fcu_k_layernorm(void) { return (const void *)k_layernorm; }

/* ---- RoPE, element-wise, rows --------------------------------------------------------- */

__global__ void k_rope_freq(double *f, int n_rot, float base, const float *factors,
                            float scale, float ext, float lo, float hi)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_rot / 2)
        return;
    f[i] = pow((double)base, -2.0 * i / n_rot) / (factors ? (double)factors[i] : 1.0);
    if (ext != 0.0f) { /* the ramp in float, as fb_rope_yarn_mix (backend.c) */
        float y = ((float)i - lo) / fmaxf(0.001f, hi - lo);
        y = fminf(1.0f, fmaxf(0.0f, y));
        const double mix = (double)((1 - y) * ext);
        f[i] *= (double)scale * (1 - mix) + mix;
    }
}

cudaError_t fcu_rope_freq(double *freq, int n_rot, float base, const float *factors,
                          float scale, float ext_factor, float corr0, float corr1,
                          cudaStream_t st)
{
    k_rope_freq<<<(n_rot / 2 + 127) / 128, 128, 0, st>>>(freq, n_rot, base, factors, scale,
                                                         ext_factor, corr0, corr1);
    return cudaGetLastError();
}

__global__ void k_rope(const fcu_rope_p p)
{
    pdl_launch();
    pdl_wait();
    const int half = p.n_rot / 2;
    const int64_t total1 = (int64_t)p.rows * p.n_heads * half;
    const int64_t total = total1 + (int64_t)p.rows * p.n_heads2 * half;
    int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (idx >= total)
        return;
    const bool second = idx >= total1;
    if (second)
        idx -= total1;
    const int nh = second ? p.n_heads2 : p.n_heads;
    const int i = (int)(idx % half);
    const int64_t t = idx / half;
    const int h = (int)(t % nh);
    const int r = (int)(t / nh);
    float *v = second ? p.x2 + r * p.ld2 + (int64_t)h * p.head_dim
                      : p.x + r * p.ld + (int64_t)h * p.head_dim;
    /* theta_i = p * scale * base^(-2i / n_rot), in fp64 like the CPU reference */
    const double th = (double)p.pos[r] * (double)p.scale *
                      (p.freq ? p.freq[i] : pow((double)p.base, -2.0 * i / p.n_rot));
    double s, c;
    sincos(th, &s, &c);
    s *= p.mscale;
    c *= p.mscale;
    const int a = p.mode == FB_ROPE_NEOX ? i : 2 * i;
    const int b = p.mode == FB_ROPE_NEOX ? i + half : 2 * i + 1;
    const double va = v[a], vb = v[b];
    v[a] = (float)(va * c - vb * s);
    v[b] = (float)(va * s + vb * c);
}

const void *fcu_k_rope(void) { return (const void *)k_rope; }

__global__ void k_add(const fcu_ew_p p)
{
    pdl_launch();
    pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n;
         i += (int64_t)gridDim.x * blockDim.x)
        p.y[i] += p.a[i];
}

__global__ void k_add4(const fcu_ew_p p)
{
    pdl_launch();
    pdl_wait();
    float4 *y = reinterpret_cast<float4 *>(p.y);
    const float4 *a = reinterpret_cast<const float4 *>(p.a);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n / 4;
         i += (int64_t)gridDim.x * blockDim.x) {
        float4 u = y[i], v = a[i];
        u.x += v.x; u.y += v.y; u.z += v.z; u.w += v.w;
        y[i] = u;
    }
}

const void *fcu_k_add(int vec4) { return vec4 ? (const void *)k_add4 : (const void *)k_add; }

/* y[r][i] = silu(a[r][i]) * b[r][i]; a and b rows have stride ld_a, y rows n. */
__global__ void k_silu_mul(const fcu_ew_p p)
{
    pdl_launch();
    pdl_wait();
    const int64_t total = p.rows * p.n;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = idx / p.n, i = idx % p.n;
        const float g = p.a[r * p.ld_a + i];
        p.y[idx] = g / (1.f + expf(-g)) * p.b[r * p.ld_a + i];
    }
}

const void *fcu_k_silu_mul(void) { return (const void *)k_silu_mul; }

/* y[r][i] = gelu(a[r][i]) * b[r][i], GELU's tanh form; strides as k_silu_mul's. */
__global__ void k_gelu_mul(const fcu_ew_p p)
{
    pdl_launch();
    pdl_wait();
    const int64_t total = p.rows * p.n;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = idx / p.n, i = idx % p.n;
        const float g = p.a[r * p.ld_a + i];
        const float z = 0.7978845608f * fmaf(0.044715f * g, g * g, g); /* sqrt(2/pi) */
        p.y[idx] = 0.5f * g * (1.f + tanhf(z)) * p.b[r * p.ld_a + i];
    }
}

const void *fcu_k_gelu_mul(void) { return (const void *)k_gelu_mul; }

/* gpt-oss: y = g / (1 + exp(-alpha g)) * (u + 1), g = min(a, limit), u = b clamped to
 * [-limit, limit]; strides as k_silu_mul's. */
__global__ void k_swiglu_oai(const fcu_oai_p p)
{
    pdl_launch();
    pdl_wait();
    const int64_t total = p.e.rows * p.e.n;
    for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = idx / p.e.n, i = idx % p.e.n;
        const float g = fminf(p.e.a[r * p.e.ld_a + i], p.limit);
        const float u = fmaxf(fminf(p.e.b[r * p.e.ld_a + i], p.limit), -p.limit);
        p.e.y[idx] = g / (1.f + expf(-p.alpha * g)) * (u + 1.f);
    }
}

const void *fcu_k_swiglu_oai(void) { return (const void *)k_swiglu_oai; }

__global__ void k_scale(const fcu_scal_p p)
{
    pdl_launch();
    pdl_wait();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n;
         i += (int64_t)gridDim.x * blockDim.x)
        p.y[i] *= p.s;
}

const void *fcu_k_scale(void) { return (const void *)k_scale; }

__global__ void k_softcap(const fcu_scal_p p)
{
    pdl_launch();
    pdl_wait();
    const float inv = 1.f / p.s;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < p.n;
         i += (int64_t)gridDim.x * blockDim.x)
        p.y[i] = p.s * tanhf(p.y[i] * inv);
}

const void *fcu_k_softcap(void) { return (const void *)k_softcap; }

/* grid: x covers n, y = rows, z = which copy */
__global__ void k_copy2d(const fcu_copy_p p)
{
    pdl_launch();
    pdl_wait();
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int z = blockIdx.z;
    if (i < p.n && (int)blockIdx.y < p.rows[z])
        p.dst[z][blockIdx.y * p.ld_dst[z] + i] = p.src[z][blockIdx.y * p.ld_src[z] + i];
}

const void *fcu_k_copy2d(void) { return (const void *)k_copy2d; }

/* dst[r][i] = src[ids[r] * ld + i] */
__global__ void k_gather_rows(const fcu_moe_p p)
{
    pdl_launch();
    pdl_wait();
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= p.n)
        return;
    for (int r = blockIdx.y; r < p.rows; r += gridDim.y)
        p.dst[(int64_t)r * p.n + i] = p.src[(int64_t)p.ids[r] * p.ld + i];
}

const void *fcu_k_gather_rows(void) { return (const void *)k_gather_rows; }

/* dst[ids[r] * ld + i] += w[r] * src[r][i], r in order: one thread owns column i of every
 * destination row, so rows that share a destination add without atomics, in the order the
 * host (and the CPU backend) adds them */
__global__ void k_scatter_add_rows(const fcu_moe_p p)
{
    pdl_launch();
    pdl_wait();
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (i >= p.n)
        return;
    for (int r = 0; r < p.rows; r++)
        p.dst[(int64_t)p.ids[r] * p.ld + i] += p.w[r] * p.src[(int64_t)r * p.n + i];
}

const void *fcu_k_scatter_add_rows(void) { return (const void *)k_scatter_add_rows; }

template <int T>
__global__ void k_get_rows(const fcu_getrows_p p)
{
    pdl_launch();
    pdl_wait();
    const int64_t row = p.ids[blockIdx.x];
    float *out = p.out + (int64_t)blockIdx.x * p.n_in;
    for (int j = blockIdx.y * blockDim.x + threadIdx.x; j < p.n_in; j += blockDim.x * gridDim.y)
        out[j] = WT<T>::elem(p.w, p.wscale, row, p.n_in, j);
}

const void *fcu_k_get_rows(int wtype)
{
    static const void *const tab[FCU_W_COUNT] = {
        (const void *)k_get_rows<FCU_W_F32>, (const void *)k_get_rows<FCU_W_F16>,
        (const void *)k_get_rows<FCU_W_BF16>, (const void *)k_get_rows<FCU_W_Q8>};
    return wtype >= 0 && wtype < FCU_W_COUNT ? tab[wtype] : NULL;
}

/* ---- typed KV caches (backend.h's layout: a row holds n_head_kv heads, each head_dim values
 * rounded up to whole blocks) ------------------------------------------------------------ */

/* Bytes of a block of 32 values of a block type (0 for the others). */
__host__ __device__ constexpr int kv_bb(int t)
{
    return t == GG_Q8_0 ? 34 : t == GG_Q4_0 ? 18 : t == GG_Q4_1 ? 20 : t == GG_Q5_0 ? 22
         : t == GG_Q5_1 ? 24 : 0;
}

/* Bytes of one head of hd values of type t (fb_kv_head_bytes). */
__device__ __forceinline__ int64_t kv_head_bytes(int t, int hd)
{
    return t == GG_F32 ? 4 * (int64_t)hd : t == GG_F16 || t == GG_BF16 ? 2 * (int64_t)hd
         : (int64_t)((hd + 31) / 32) * kv_bb(t);
}

/* The stored row of position t: a ring's (fcu_att_seq.ring_start), or t itself. */
__device__ __forceinline__ int ring_row(int t, int rs, int ring)
{
    const int r = t + rs;
    return ring > 0 && r >= ring ? r - ring : r;
}

__device__ __forceinline__ float ld_f16(const uint8_t *p)
{
    return __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short *>(p))));
}

/* 32 bits at a 2-byte aligned address (blocks of 18, 22 and 34 bytes align no better) */
__device__ __forceinline__ uint32_t ld_u32h(const uint8_t *p)
{
    const unsigned short *s = reinterpret_cast<const unsigned short *>(p);
    return (uint32_t)__ldg(s) | (uint32_t)__ldg(s + 1) << 16;
}

/* Q4_1 / Q5_1: d * q + m as quants.c computes it (two roundings, no FMA). */
__device__ __forceinline__ float dqm(float d, int q, float m) { return __fadd_rn(__fmul_rn(d, (float)q), m); }

/* Values 4 ci .. 4 ci + 3 of the head at h, dequantized exactly as quants.c's
 * fq_dequantize_row (F32: 16-byte aligned; F16, BF16: 8-byte; block types: 2-byte). */
template <int T>
__device__ __forceinline__ float4 kv_ld4(const uint8_t *h, int ci)
{
    if constexpr (T == GG_F32) {
        return __ldg(reinterpret_cast<const float4 *>(h) + ci);
    } else if constexpr (T == GG_F16) {
        const uint2 u = __ldg(reinterpret_cast<const uint2 *>(h) + ci);
        const float2 a = f16x2(u.x), b = f16x2(u.y);
        return make_float4(a.x, a.y, b.x, b.y);
    } else if constexpr (T == GG_BF16) {
        const uint2 u = __ldg(reinterpret_cast<const uint2 *>(h) + ci);
        return make_float4(bf16_lo(u.x), bf16_hi(u.x), bf16_lo(u.y), bf16_hi(u.y));
    } else {
        const int e = (ci & 7) * 4; /* the first value's place in its block */
        const uint8_t *b = h + (ci >> 3) * kv_bb(T);
        const float d = ld_f16(b);
        if constexpr (T == GG_Q8_0) {
            const uint32_t u = ld_u32h(b + 2 + e);
            return make_float4(d * (float)(int8_t)u, d * (float)(int8_t)(u >> 8),
                               d * (float)(int8_t)(u >> 16), d * (float)(int8_t)(u >> 24));
        } else {
            /* values 0..15 are the low nibbles of the 16 bytes, 16..31 the high ones */
            constexpr int qs = T == GG_Q4_0 ? 2 : T == GG_Q4_1 ? 4 : T == GG_Q5_0 ? 6 : 8;
            const uint32_t u = ld_u32h(b + qs + (e & 15)) >> (e & 16 ? 4 : 0);
            int q0 = u & 15, q1 = (u >> 8) & 15, q2 = (u >> 16) & 15, q3 = (u >> 24) & 15;
            if constexpr (T == GG_Q5_0 || T == GG_Q5_1) { /* bit j of qh: value j's fifth */
                const uint32_t hb = ld_u32h(b + (T == GG_Q5_0 ? 2 : 4)) >> e;
                q0 |= (int)(hb & 1) << 4;
                q1 |= (int)((hb >> 1) & 1) << 4;
                q2 |= (int)((hb >> 2) & 1) << 4;
                q3 |= (int)((hb >> 3) & 1) << 4;
            }
            if constexpr (T == GG_Q4_0 || T == GG_Q5_0) {
                constexpr int z = T == GG_Q4_0 ? 8 : 16;
                return make_float4(d * (float)(q0 - z), d * (float)(q1 - z), d * (float)(q2 - z),
                                   d * (float)(q3 - z));
            } else {
                const float m = ld_f16(b + 2);
                return make_float4(dqm(d, q0, m), dqm(d, q1, m), dqm(d, q2, m), dqm(d, q3, m));
            }
        }
    }
}

/* Value j of the head at h (kv_ld4's, one at a time; any alignment of 2 bytes). */
template <int T>
__device__ __forceinline__ float kv_ld1(const uint8_t *h, int j)
{
    if constexpr (T == GG_F32) {
        return __ldg(reinterpret_cast<const float *>(h) + j);
    } else if constexpr (T == GG_F16) {
        return __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short *>(h) + j)));
    } else if constexpr (T == GG_BF16) {
        return __uint_as_float((uint32_t)__ldg(reinterpret_cast<const unsigned short *>(h) + j) << 16);
    } else {
        const int e = j & 31;
        const uint8_t *b = h + (j >> 5) * kv_bb(T);
        const float d = ld_f16(b);
        if constexpr (T == GG_Q8_0) {
            return d * (float)(int8_t)__ldg(b + 2 + e);
        } else {
            constexpr int qs = T == GG_Q4_0 ? 2 : T == GG_Q4_1 ? 4 : T == GG_Q5_0 ? 6 : 8;
            int q = (__ldg(b + qs + (e & 15)) >> (e & 16 ? 4 : 0)) & 15;
            if constexpr (T == GG_Q5_0 || T == GG_Q5_1)
                q |= (int)((ld_u32h(b + (T == GG_Q5_0 ? 2 : 4)) >> e) & 1) << 4;
            if constexpr (T == GG_Q4_0)
                return d * (float)(q - 8);
            else if constexpr (T == GG_Q5_0)
                return d * (float)(q - 16);
            else
                return dqm(d, q, ld_f16(b + 2));
        }
    }
}

/* The query value x as a product with a K cache of type t rounds it (fcpu_ref_kv_query):
 * F16 and BF16 to their type (q_round16); block types to an int8 code of its block of 32's
 * scale amax / 127 kept in fp16 (q_round8, amax of the block's values). */
__device__ __forceinline__ float q_round16(int t, float x)
{
    return t == GG_F16 ? __half2float(__float2half_rn(x))
         : t == GG_BF16 ? __bfloat162float(__float2bfloat16_rn(x)) : x;
}

__device__ __forceinline__ float q_round8(float x, float amax)
{
    /* d in fp16, as llama.cpp's q8_0 blocks keep it (and the CPU backend since 3f53be9) */
    const float id = amax > 0.f ? __fdiv_rn(127.f, amax) : 0.f;
    const float d = __half2float(__float2half_rn(__fdiv_rn(amax, 127.f)));
    return __fmul_rn((float)__float2int_rn(__fmul_rn(x, id)), d);
}

__device__ __forceinline__ bool kv_blocked(int t) { return kv_bb(t) != 0; }

/* quants.c's fq_f32_to_f16 and fq_f32_to_bf16, bit for bit (NaN payloads included). */
__device__ __forceinline__ uint32_t rshift_rne(uint32_t v, unsigned shift)
{
    uint32_t q = v >> shift, rem = v & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    return q;
}

__device__ uint16_t f32_to_f16_ref(float f)
{
    const uint32_t x = __float_as_uint(f);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00);
    const uint32_t e = ax >> 23;
    if (ax >= 0x38800000u)
        return (uint16_t)(sign | rshift_rne(((e - 112) << 23) | (ax & 0x7fffff), 13));
    if (e == 0)
        return sign;
    const unsigned shift = 126 - e;
    if (shift > 24)
        return sign;
    return (uint16_t)(sign | rshift_rne((ax & 0x7fffff) | 0x800000, shift));
}

__device__ __forceinline__ uint16_t f32_to_bf16_ref(float f)
{
    uint32_t x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

__device__ __forceinline__ void st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* One block of 32 values (zero padded) into o, as quants.c's q_* functions round it: the
 * same float operations in the same order, no contraction. */
__device__ void kv_quant_block(int t, const float *v, uint8_t *o)
{
    if (t == GG_Q8_0) {
        float amax = 0.f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(v[j]));
        const float d = __fdiv_rn(amax, 127.f), id = d != 0.f ? __fdiv_rn(1.f, d) : 0.f;
        st16(o, f32_to_f16_ref(d));
        for (int j = 0; j < 32; j++)
            o[2 + j] = (uint8_t)(int8_t)roundf(__fmul_rn(v[j], id));
        return;
    }
    const bool sym = t == GG_Q4_0 || t == GG_Q5_0, five = t == GG_Q5_0 || t == GG_Q5_1;
    const int top = five ? 31 : 15;
    float d, lo = 0.f;
    if (sym) { /* the value of largest magnitude, with its sign, maps to the lowest code */
        float amax = 0.f, mx = 0.f;
        for (int j = 0; j < 32; j++)
            if (fabsf(v[j]) > amax) {
                amax = fabsf(v[j]);
                mx = v[j];
            }
        d = __fdiv_rn(mx, five ? -16.f : -8.f);
    } else {
        float hi = v[0];
        lo = v[0];
        for (int j = 1; j < 32; j++) {
            lo = fminf(lo, v[j]);
            hi = fmaxf(hi, v[j]);
        }
        d = __fdiv_rn(__fsub_rn(hi, lo), five ? 31.f : 15.f);
    }
    const float id = d != 0.f ? __fdiv_rn(1.f, d) : 0.f;
    const float bias = sym ? (five ? 16.5f : 8.5f) : 0.5f;
    st16(o, f32_to_f16_ref(d));
    if (!sym)
        st16(o + 2, f32_to_f16_ref(lo));
    uint8_t *qs = o + (t == GG_Q4_0 ? 2 : t == GG_Q4_1 ? 4 : t == GG_Q5_0 ? 6 : 8);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        const float x0 = sym ? v[j] : __fsub_rn(v[j], lo), x1 = sym ? v[j + 16] : __fsub_rn(v[j + 16], lo);
        const int q0 = min(top, (int)__fadd_rn(__fmul_rn(x0, id), bias));
        const int q1 = min(top, (int)__fadd_rn(__fmul_rn(x1, id), bias));
        qs[j] = (uint8_t)((q0 & 0xf) | ((q1 & 0xf) << 4));
        qh |= (uint32_t)(q0 >> 4) << j;
        qh |= (uint32_t)(q1 >> 4) << (j + 16);
    }
    if (five) {
        uint8_t *h = o + (t == GG_Q5_0 ? 2 : 4);
        for (int i = 0; i < 4; i++)
            h[i] = (uint8_t)(qh >> (8 * i));
    }
}

__global__ void k_kv_store(const fcu_kvst_p p)
{
    pdl_launch();
    pdl_wait();
    const int k = blockIdx.y, t = p.type[k], hd = p.head_dim, nkv = p.n_head_kv;
    const bool el = !kv_blocked(t); /* F16, BF16: a thread per value */
    const int per = el ? hd : (hd + 31) / 32;
    const int64_t total = (int64_t)p.rows[k] * nkv * per, hb = kv_head_bytes(t, hd);
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < total;
         u += (int64_t)gridDim.x * blockDim.x) {
        const int b = (int)(u % per);
        const int64_t rg = u / per, r = rg / nkv;
        const int g = (int)(rg % nkv);
        const float *x = p.src[k] + r * p.ld_src[k] + (int64_t)g * hd;
        uint8_t *h = (uint8_t *)p.dst[k] + rg * hb;
        if (el) {
            st16(h + 2 * b, t == GG_F16 ? f32_to_f16_ref(x[b]) : f32_to_bf16_ref(x[b]));
            continue;
        }
        float v[32];
#pragma unroll
        for (int j = 0; j < 32; j++)
            v[j] = b * 32 + j < hd ? x[b * 32 + j] : 0.f;
        kv_quant_block(t, v, h + (int64_t)b * kv_bb(t));
    }
}

const void *fcu_k_kv_store(void) { return (const void *)k_kv_store; }

int64_t fcu_kvst_units(int type, int rows, int n_head_kv, int head_dim)
{
    return (int64_t)rows * n_head_kv *
           (type == GG_F16 || type == GG_BF16 ? head_dim : (head_dim + 31) / 32);
}

/* ---- attention ------------------------------------------------------------------------ */

enum { ATT_FUSED = 0, ATT_REF_SCORES = 1, ATT_REF_SOFTMAX = 2, ATT_REF_PV = 3 };
#define ATT_THREADS 128
#define ATT_MAX_CHUNK 128
#define ATT_MAX_HD 256

/* The general kernel over typed caches: a[h] = sq[h] . K row kt for the group's heads, and
 * o[h] = sum over its positions of sp[h][t] V[t][j]; one instantiation per type, chosen once
 * per row (att_dot_t, att_pv_t) rather than per value. */
template <int T>
__device__ __forceinline__ void att_dot(const uint8_t *kt, const float *sq, int hd, int grp, bool vec,
                                        float (&a)[FCU_ATT_MAX_GROUP])
{
    if (vec) {
        for (int j = 0; j < hd; j += 4) {
            const float4 kv = kv_ld4<T>(kt, j >> 2);
#pragma unroll
            for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
                if (h < grp) {
                    const float4 qv = *reinterpret_cast<const float4 *>(&sq[h * hd + j]);
                    a[h] = fmaf(qv.x, kv.x, a[h]);
                    a[h] = fmaf(qv.y, kv.y, a[h]);
                    a[h] = fmaf(qv.z, kv.z, a[h]);
                    a[h] = fmaf(qv.w, kv.w, a[h]);
                }
        }
    } else {
        for (int j = 0; j < hd; j++) {
            const float kv = kv_ld1<T>(kt, j);
#pragma unroll
            for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
                if (h < grp)
                    a[h] = fmaf(sq[h * hd + j], kv, a[h]);
        }
    }
}

__device__ __forceinline__ void att_dot_t(int t, const uint8_t *kt, const float *sq, int hd, int grp,
                                       bool vec, float (&a)[FCU_ATT_MAX_GROUP])
{
    switch (t) {
    case GG_F16: att_dot<GG_F16>(kt, sq, hd, grp, vec, a); break;
    case GG_BF16: att_dot<GG_BF16>(kt, sq, hd, grp, vec, a); break;
    case GG_Q8_0: att_dot<GG_Q8_0>(kt, sq, hd, grp, vec, a); break;
    case GG_Q4_0: att_dot<GG_Q4_0>(kt, sq, hd, grp, vec, a); break;
    case GG_Q4_1: att_dot<GG_Q4_1>(kt, sq, hd, grp, vec, a); break;
    case GG_Q5_0: att_dot<GG_Q5_0>(kt, sq, hd, grp, vec, a); break;
    case GG_Q5_1: att_dot<GG_Q5_1>(kt, sq, hd, grp, vec, a); break;
    default: att_dot<GG_F32>(kt, sq, hd, grp, vec, a); break;
    }
}

template <int T>
__device__ __forceinline__ void att_pv(const uint8_t *vb, int64_t rsv, int t0, int n, int rs,
                                       int ring, int part, int parts, int j, int grp,
                                       const float (*sp)[ATT_MAX_CHUNK], float (&o)[FCU_ATT_MAX_GROUP])
{
#pragma unroll 4
    for (int t = part; t < n; t += parts) {
        const float vv = kv_ld1<T>(vb + (int64_t)ring_row(t0 + t, rs, ring) * rsv, j);
#pragma unroll
        for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
            if (h < grp)
                o[h] = fmaf(sp[h][t], vv, o[h]);
    }
}

__device__ __forceinline__ void att_pv_t(int t, const uint8_t *vb, int64_t rsv, int t0, int n, int rs,
                                      int ring, int part, int parts, int j, int grp,
                                      const float (*sp)[ATT_MAX_CHUNK], float (&o)[FCU_ATT_MAX_GROUP])
{
    switch (t) {
#define PV_CASE(T) case T: att_pv<T>(vb, rsv, t0, n, rs, ring, part, parts, j, grp, sp, o); break;
    PV_CASE(GG_F16) PV_CASE(GG_BF16) PV_CASE(GG_Q8_0) PV_CASE(GG_Q4_0) PV_CASE(GG_Q4_1)
    PV_CASE(GG_Q5_0) PV_CASE(GG_Q5_1)
#undef PV_CASE
    default: att_pv<GG_F32>(vb, rsv, t0, n, rs, ring, part, parts, j, grp, sp, o); break;
    }
}

__device__ __forceinline__ int att_seq_of_group(const fcu_att_p &p, int grp_index)
{
    int si = 0;
    while (si + 1 < p.n_seq && grp_index >= p.s[si + 1].grp0)
        si++;
    return si;
}

/* Called by every thread of a block once its split's part is written: whether this block is
 * the last split of its (row, KV group) to arrive, the one that merges them.  The last one
 * resets the counter for the next launch, and its reads after this see every split's writes.
 * flag: a __shared__ int of the block. */
__device__ __forceinline__ bool split_last(int *cnt, int nsplit, int tid, int *flag)
{
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        *flag = atomicAdd(cnt, 1) == nsplit - 1;
        if (*flag)
            *cnt = 0;
    }
    __syncthreads();
    const bool last = *flag;
    if (last)
        __threadfence();
    return last;
}

/* gpt-oss: head h's sink as a term of a softmax denominator taken relative to M (the
 * scores' max, or 0 in SUMONLY): exp(sink - M); 0 without sinks */
__device__ __forceinline__ float att_sink(const fcu_att_p &p, int h, float M)
{
    return p.sinks ? expf(__ldg(p.sinks + h) - M) : 0.f;
}

template <int KIND>
__global__ void __launch_bounds__(ATT_THREADS) k_att(const fcu_att_p p)
{
    pdl_launch();
    pdl_wait();
    __shared__ __align__(16) float sq[FCU_ATT_MAX_GROUP * ATT_MAX_HD];
    __shared__ float sp[FCU_ATT_MAX_GROUP][ATT_MAX_CHUNK];
    __shared__ float so[FCU_ATT_MAX_GROUP * ATT_MAX_HD];
    __shared__ float sm[FCU_ATT_MAX_GROUP], sl[FCU_ATT_MAX_GROUP];
    __shared__ int last;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = blockIdx.x, c = blockIdx.z;
    const fcu_att_seq &S = p.s[att_seq_of_group(p, blockIdx.y)];
    const int grp = p.n_head / p.n_head_kv, hd = p.head_dim, ng = grp * hd;
    const int i0 = (blockIdx.y - S.grp0) * FCU_ATT_QB;
    const int t0 = c * p.chunk;
    const float *kb = S.k + (int64_t)g * hd, *vb = S.v + (int64_t)g * hd;
    const bool vec = p.vec4;
    /* typed caches: the bytes of kv head g's first row, and the bytes between rows */
    const bool tk = p.type_k != GG_F32, tv = p.type_v != GG_F32;
    const int64_t hbk = kv_head_bytes(p.type_k, hd), hbv = kv_head_bytes(p.type_v, hd);
    const int64_t rsk = hbk * p.n_head_kv, rsv = hbv * p.n_head_kv;
    const uint8_t *kbb = reinterpret_cast<const uint8_t *>(S.k) + g * hbk;
    const uint8_t *vbb = reinterpret_cast<const uint8_t *>(S.v) + g * hbv;

    for (int ii = 0; ii < FCU_ATT_QB; ii++) {
        const int i = i0 + ii;
        if (i >= S.n_q)
            break;
        const int T = S.pos[i] + 1;
        if (t0 >= T)
            continue;
        const int n = min(T - t0, p.chunk);
        const int nsplit = (T + p.chunk - 1) / p.chunk;
        const int row = S.row0 + i;

        if (KIND != ATT_REF_PV) {
            const float *q = S.q + (int64_t)i * S.ldq + (int64_t)g * ng;
            for (int idx = tid; idx < ng; idx += ATT_THREADS)
                sq[idx] = q_round16(p.type_k, q[idx]);
            __syncthreads();
            if (kv_blocked(p.type_k)) { /* the query as int8 blocks of 32 (fcpu_ref_kv_query) */
                const int nb = (hd + 31) / 32;
                for (int u = tid; u < grp * nb; u += ATT_THREADS) {
                    float *qh = sq + (u / nb) * hd;
                    const int j0 = (u % nb) * 32, j1 = min(j0 + 32, hd);
                    float am = 0.f;
                    for (int j = j0; j < j1; j++)
                        am = fmaxf(am, fabsf(qh[j]));
                    for (int j = j0; j < j1; j++)
                        qh[j] = q_round8(qh[j], am);
                }
                __syncthreads();
            }
            /* one cached position per thread: its whole K row against the group's queries
             * (broadcast from shared memory); no reduction across lanes */
            for (int t = tid; t < n; t += ATT_THREADS) {
                const int r = ring_row(t0 + t, S.ring_start, p.ring);
                const float *kt = kb + (int64_t)r * S.ldkv;
                float a[FCU_ATT_MAX_GROUP];
#pragma unroll
                for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
                    a[h] = 0.f;
                if (tk) {
                    att_dot_t(p.type_k, kbb + (int64_t)r * rsk, sq, hd, grp, vec, a);
                } else if (vec) {
                    for (int j = 0; j < hd; j += 4) {
                        const float4 kv = __ldg(reinterpret_cast<const float4 *>(kt + j));
#pragma unroll
                        for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
                            if (h < grp) {
                                const float4 qv = *reinterpret_cast<const float4 *>(&sq[h * hd + j]);
                                a[h] = fmaf(qv.x, kv.x, a[h]);
                                a[h] = fmaf(qv.y, kv.y, a[h]);
                                a[h] = fmaf(qv.z, kv.z, a[h]);
                                a[h] = fmaf(qv.w, kv.w, a[h]);
                            }
                    }
                } else {
                    for (int j = 0; j < hd; j++) {
                        const float kv = __ldg(kt + j);
#pragma unroll
                        for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
                            if (h < grp)
                                a[h] = fmaf(sq[h * hd + j], kv, a[h]);
                    }
                }
                /* Gemma: the soft-cap of each scaled score, and the sliding window's mask
                 * (row position T - 1 sees t0 + t when T - 1 - (t0 + t) < window) */
                const bool masked = p.window > 0 && T - 1 - (t0 + t) >= p.window;
#pragma unroll
                for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
                    if (h < grp) {
                        float sc = a[h] * p.scale;
                        if (p.softcap > 0.f)
                            sc = p.softcap * tanhf(sc / p.softcap);
                        sp[h][t] = masked ? -INFINITY : sc;
                    }
            }
            __syncthreads();
        }
        if (KIND == ATT_REF_SCORES) {
            for (int idx = tid; idx < grp * n; idx += ATT_THREADS) {
                const int h = idx / n, t = idx % n;
                p.scores[((int64_t)row * p.n_head + g * grp + h) * p.t_max + t0 + t] = sp[h][t];
            }
            __syncthreads();
            continue;
        }
        if (KIND == ATT_FUSED) {
            /* this split's softmax numerator, unnormalized: exp(s - m), l = sum */
            for (int h = warp; h < grp; h += ATT_THREADS / 32) {
                float m = 0.f;
                if (p.mode != FB_SOFTMAX_SUMONLY) {
                    m = -INFINITY;
                    for (int t = lane; t < n; t += 32)
                        m = fmaxf(m, sp[h][t]);
                    m = warp_max(m);
                }
                float l = 0.f;
                for (int t = lane; t < n; t += 32) {
                    /* a split the window masks whole has m = -inf: it weighs nothing (the
                     * merge's exp(m - M) is 0 for it; the row's own position is never
                     * masked, so a row of one split always has a finite m) */
                    const float e = m == -INFINITY ? 0.f : expf(sp[h][t] - m);
                    sp[h][t] = e;
                    l += e;
                }
                l = warp_sum(l);
                if (lane == 0) {
                    sm[h] = m;
                    sl[h] = l;
                }
            }
        } else { /* REF P.V: the probabilities, already normalized by k_att_softmax */
            for (int idx = tid; idx < grp * n; idx += ATT_THREADS) {
                const int h = idx / n, t = idx % n;
                sp[h][t] = p.scores[((int64_t)row * p.n_head + g * grp + h) * p.t_max + t0 + t];
            }
        }
        __syncthreads();

        /* P.V: thread (part, j); parts split the positions when head_dim < ATT_THREADS */
        const int parts = hd <= ATT_THREADS ? ATT_THREADS / hd : 1;
        for (int jt = tid; jt < (hd <= ATT_THREADS ? parts * hd : hd); jt += ATT_THREADS) {
            const int j = hd <= ATT_THREADS ? jt % hd : jt;
            const int part = hd <= ATT_THREADS ? jt / hd : 0;
            float o[FCU_ATT_MAX_GROUP];
#pragma unroll
            for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
                o[h] = 0.f;
            if (tv) {
                att_pv_t(p.type_v, vbb, rsv, t0, n, S.ring_start, p.ring, part, parts, j, grp, sp, o);
            } else {
#pragma unroll 4
                for (int t = part; t < n; t += parts) {
                    const float vv = __ldg(vb + (int64_t)ring_row(t0 + t, S.ring_start, p.ring) * S.ldkv + j);
#pragma unroll
                    for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
                        if (h < grp)
                            o[h] = fmaf(sp[h][t], vv, o[h]);
                }
            }
#pragma unroll
            for (int h = 0; h < FCU_ATT_MAX_GROUP; h++)
                if (h < grp)
                    so[(part * grp + h) * hd + j] = o[h];
        }
        __syncthreads();
        for (int idx = tid; idx < ng; idx += ATT_THREADS) {
            const int h = idx / hd, j = idx % hd;
            float o = 0.f;
            for (int part = 0; part < parts; part++)
                o += so[(part * grp + h) * hd + j];
            float *out = S.out + (int64_t)i * S.ldo + (int64_t)(g * grp + h) * hd + j;
            if (nsplit == 1) {
                *out = KIND == ATT_FUSED ? o / (sl[h] + att_sink(p, g * grp + h, sm[h])) : o;
            } else {
                float *pp = p.part + (((int64_t)row * p.n_head + g * grp + h) * p.max_split + c) *
                                         (hd + 2);
                if (j == 0) {
                    pp[0] = KIND == ATT_FUSED ? sm[h] : 0.f;
                    pp[1] = KIND == ATT_FUSED ? sl[h] : 1.f;
                }
                pp[2 + j] = o;
            }
        }
        if (nsplit > 1) {
            if (split_last(p.counter + (int64_t)row * p.n_head_kv + g, nsplit, tid, &last)) {
                const int st = hd + 2;
                if (KIND == ATT_FUSED) {
                    /* M and L of every head, one warp per head, lanes over the splits */
                    for (int h = warp; h < grp; h += ATT_THREADS / 32) {
                        const float *ph = p.part + ((int64_t)row * p.n_head + g * grp + h) *
                                                       p.max_split * st;
                        float M = -INFINITY;
                        for (int k = lane; k < nsplit; k += 32)
                            M = fmaxf(M, __ldcg(ph + k * st));
                        M = warp_max(M);
                        float L = 0.f;
                        for (int k = lane; k < nsplit; k += 32)
                            L = fmaf(__ldcg(ph + k * st + 1), expf(__ldcg(ph + k * st) - M), L);
                        L = warp_sum(L);
                        if (lane == 0) {
                            sm[h] = M;
                            sl[h] = L + att_sink(p, g * grp + h, M);
                        }
                    }
                    __syncthreads();
                }
                for (int idx = tid; idx < ng; idx += ATT_THREADS) {
                    const int h = idx / hd, j = idx % hd;
                    const float *ph = p.part + ((int64_t)row * p.n_head + g * grp + h) *
                                                   p.max_split * st;
                    float o = 0.f;
                    if (KIND == ATT_FUSED) {
                        const float M = sm[h];
#pragma unroll 4
                        for (int k = 0; k < nsplit; k++)
                            o = fmaf(__ldcg(ph + k * st + 2 + j), expf(__ldcg(ph + k * st) - M), o);
                        o /= sl[h];
                    } else {
#pragma unroll 4
                        for (int k = 0; k < nsplit; k++)
                            o += __ldcg(ph + k * st + 2 + j);
                    }
                    S.out[(int64_t)i * S.ldo + (int64_t)(g * grp + h) * hd + j] = o;
                }
            }
        }
        __syncthreads();
    }
}

/* Decode attention, fused modes, every sequence of the launch one query row.  Grid: x = KV
 * head, y = sequence, z = split of `chunk` cached positions.  A lane group of p.lg lanes takes
 * one position at a time, each lane NV 16-byte pieces of its K and V rows (coalesced), and
 * keeps the group's own softmax state (m, l, o) for each of the G >= grp query heads of the KV
 * head.  A batch of P positions per group is loaded before any is used (K and V together),
 * scored, and folded in with one rescale per batch; the group's P.V needs no shared memory.
 * The groups' states are merged with the log-sum-exp rescale: lanes, then warps through
 * shared memory, then splits by the block that arrives last.  SUMONLY keeps m = 0, so every
 * rescale is 1.  The context length comes in the parameters (S.T), not through memory. */
#define ATTD_P(NV) ((NV) == 1 ? 8 : 4)
#define ATTD_NW (ATT_THREADS / 32)
#define ATTD_MB 16 /* split partials a merging thread loads at once */

/* exp(a - M), 0 for a state that saw no position (a = -inf) */
__device__ __forceinline__ float att_w(float a, float M) { return a == -INFINITY ? 0.f : expf(a - M); }

__device__ __forceinline__ void f4_fma(float4 &o, float a, const float4 &v, float b)
{
    o.x = fmaf(o.x, a, b * v.x);
    o.y = fmaf(o.y, a, b * v.y);
    o.z = fmaf(o.z, a, b * v.z);
    o.w = fmaf(o.w, a, b * v.w);
}

/* K and V pieces of P positions t, t + ng, ... (zero past t1 or past the row): kb / vb the
 * bytes of the KV head's first stored row, rsk / rsv the bytes between rows, each position
 * at its stored row (a ring's, ring_row) */
template <int P, int NV, int TK, int TV>
__device__ __forceinline__ void attd_load(float4 (&kr)[P][NV], float4 (&vr)[P][NV], const uint8_t *kb,
                                          const uint8_t *vb, int64_t rsk, int64_t rsv, int t,
                                          int ng, int t1, int sub, int lg, int nc, int rs, int ring)
{
    const float4 z4 = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int pp = 0; pp < P; pp++) {
        const int tp = t + pp * ng;
        const int64_t r = ring_row(tp, rs, ring);
#pragma unroll
        for (int v = 0; v < NV; v++) {
            const int ci = sub + v * lg;
            const bool ok = tp < t1 && ci < nc;
            kr[pp][v] = ok ? kv_ld4<TK>(kb + r * rsk, ci) : z4;
            vr[pp][v] = ok ? kv_ld4<TV>(vb + r * rsv, ci) : z4;
        }
    }
}

template <int NV, int G, bool PFOK, int TK = GG_F32, int TV = GG_F32>
__global__ void __launch_bounds__(ATT_THREADS) k_att_dec(const fcu_att_p p)
{
    constexpr int P = ATTD_P(NV);
    __shared__ __align__(16) float so[ATTD_NW][G * ATT_MAX_HD];
    __shared__ float smw[ATTD_NW][G], slw[ATTD_NW][G];
    __shared__ float sw[G][FCU_ATTD_MAX_SPLIT];
    __shared__ int last;
    pdl_launch();
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = blockIdx.x, c = blockIdx.z;
    const fcu_att_seq &S = p.s[blockIdx.y];
    const int grp = p.n_head / p.n_head_kv, hd = p.head_dim, nc = hd / 4;
    const int lg = p.lg, gpw = 32 / lg, ng = ATTD_NW * gpw;
    const int sub = lane & (lg - 1), gi = lane / lg;
    const int T = S.T, t0 = c * p.chunk;
    if (t0 >= T)
        return;
    const int t1 = min(T, t0 + p.chunk), nsplit = (T + p.chunk - 1) / p.chunk;
    const bool maxsum = p.mode != FB_SOFTMAX_SUMONLY;
    const int64_t hbk = kv_head_bytes(TK, hd), hbv = kv_head_bytes(TV, hd);
    const int64_t rsk = TK == GG_F32 ? (int64_t)S.ldkv * 4 : hbk * p.n_head_kv;
    const int64_t rsv = TV == GG_F32 ? (int64_t)S.ldkv * 4 : hbv * p.n_head_kv;
    const uint8_t *kb = reinterpret_cast<const uint8_t *>(S.k) + g * hbk;
    const uint8_t *vb = reinterpret_cast<const uint8_t *>(S.v) + g * hbv;
    const int rs = S.ring_start, ring = p.ring;
    const float *qb = S.q + (int64_t)g * grp * hd;
    const float4 z4 = make_float4(0.f, 0.f, 0.f, 0.f);
    pdl_wait();

    float4 q[G][NV], o[G][NV];
    float m[G], l[G];
#pragma unroll
    for (int h = 0; h < G; h++) {
        m[h] = maxsum ? -INFINITY : 0.f;
        l[h] = 0.f;
#pragma unroll
        for (int v = 0; v < NV; v++) {
            const int ci = sub + v * lg;
            q[h][v] = h < grp && ci < nc ? __ldg(reinterpret_cast<const float4 *>(qb + h * hd) + ci) : z4;
            o[h][v] = z4;
            if constexpr (TK == GG_F16 || TK == GG_BF16) {
                q[h][v].x = q_round16(TK, q[h][v].x);
                q[h][v].y = q_round16(TK, q[h][v].y);
                q[h][v].z = q_round16(TK, q[h][v].z);
                q[h][v].w = q_round16(TK, q[h][v].w);
            } else if constexpr (TK != GG_F32) {
                /* int8 blocks of 32 (fcpu_ref_kv_query): a block's 8 pieces lie in lanes
                 * that differ in their 3 low bits (lg >= 8), or it is the head's only block
                 * and every lane holds pieces of it (lg < 8) */
                float am = fmaxf(fmaxf(fabsf(q[h][v].x), fabsf(q[h][v].y)),
                                 fmaxf(fabsf(q[h][v].z), fabsf(q[h][v].w)));
#pragma unroll
                for (int off = 1; off < 8; off <<= 1)
                    am = fmaxf(am, __shfl_xor_sync(0xffffffffu, am, off));
                q[h][v].x = q_round8(q[h][v].x, am);
                q[h][v].y = q_round8(q[h][v].y, am);
                q[h][v].z = q_round8(q[h][v].z, am);
                q[h][v].w = q_round8(q[h][v].w, am);
            }
        }
    }
    /* PF (chosen by the launch: few blocks; one piece per lane, up to 4 heads a group, as in
     * the Llama shapes): the next batch's K and V are loaded while this one is scored, so a
     * block's batches do not each wait for memory in turn; more heads or pieces would not fit
     * the registers twice */
    constexpr bool PF = PFOK && NV == 1 && G <= 4 && TK == GG_F32 && TV == GG_F32;
    float4 kr[P][NV], vr[P][NV], kn[PF ? P : 1][NV], vn[PF ? P : 1][NV];
    int tw = t0 + warp * gpw;
    if (PF && tw < t1)
        attd_load<P, NV, TK, TV>(kr, vr, kb, vb, rsk, rsv, tw + gi, ng, t1, sub, lg, nc, rs, ring);
    for (; tw < t1; tw += ng * P) { /* warp-uniform bounds */
        if constexpr (PF) {
            if (tw + ng * P < t1)
                attd_load<P, NV, TK, TV>(kn, vn, kb, vb, rsk, rsv, tw + ng * P + gi, ng, t1, sub, lg, nc, rs, ring);
        } else {
            attd_load<P, NV, TK, TV>(kr, vr, kb, vb, rsk, rsv, tw + gi, ng, t1, sub, lg, nc, rs, ring);
        }
        float sc[P][G];
#pragma unroll
        for (int pp = 0; pp < P; pp++)
#pragma unroll
            for (int h = 0; h < G; h++) {
                float a = 0.f;
#pragma unroll
                for (int v = 0; v < NV; v++) {
                    a = fmaf(q[h][v].x, kr[pp][v].x, a);
                    a = fmaf(q[h][v].y, kr[pp][v].y, a);
                    a = fmaf(q[h][v].z, kr[pp][v].z, a);
                    a = fmaf(q[h][v].w, kr[pp][v].w, a);
                }
                sc[pp][h] = a;
            }
        for (int off = lg >> 1; off; off >>= 1)
#pragma unroll
            for (int pp = 0; pp < P; pp++)
#pragma unroll
                for (int h = 0; h < G; h++)
                    sc[pp][h] += __shfl_xor_sync(0xffffffffu, sc[pp][h], off);
        /* the scaled scores, soft-capped when asked (Gemma 2) */
#pragma unroll
        for (int pp = 0; pp < P; pp++)
#pragma unroll
            for (int h = 0; h < G; h++) {
                const float sv = sc[pp][h] * p.scale;
                sc[pp][h] = p.softcap > 0.f ? p.softcap * tanhf(sv / p.softcap) : sv;
            }
        const int nv_pos = min(P, (t1 - tw - gi + ng - 1) / ng); /* valid positions, may be <= 0 */
#pragma unroll
        for (int h = 0; h < G; h++) {
            if (h >= grp || nv_pos <= 0)
                continue;
            float mx = m[h];
            if (maxsum) {
#pragma unroll
                for (int pp = 0; pp < P; pp++)
                    if (pp < nv_pos)
                        mx = fmaxf(mx, sc[pp][h]);
            }
            /* one rescale per batch; m = -inf (nothing seen yet) gives 0 */
            const float corr = maxsum ? att_w(m[h], mx) : 1.f;
            float lh = l[h] * corr;
#pragma unroll
            for (int v = 0; v < NV; v++) {
                o[h][v].x *= corr;
                o[h][v].y *= corr;
                o[h][v].z *= corr;
                o[h][v].w *= corr;
            }
#pragma unroll
            for (int pp = 0; pp < P; pp++) {
                if (pp < nv_pos) {
                    const float e = expf(sc[pp][h] - mx);
                    lh += e;
#pragma unroll
                    for (int v = 0; v < NV; v++)
                        f4_fma(o[h][v], 1.f, vr[pp][v], e);
                }
            }
            l[h] = lh;
            m[h] = mx;
        }
        if constexpr (PF) {
#pragma unroll
            for (int pp = 0; pp < P; pp++)
#pragma unroll
                for (int v = 0; v < NV; v++) {
                    kr[pp][v] = kn[pp][v];
                    vr[pp][v] = vn[pp][v];
                }
        }
    }
    /* the groups of a warp, then the warps */
    for (int off = lg; off < 32; off <<= 1) {
#pragma unroll
        for (int h = 0; h < G; h++) {
            if (h >= grp)
                continue;
            const float mo = __shfl_xor_sync(0xffffffffu, m[h], off);
            const float lo = __shfl_xor_sync(0xffffffffu, l[h], off);
            const float M = fmaxf(m[h], mo), a = att_w(m[h], M), b = att_w(mo, M);
            l[h] = l[h] * a + lo * b;
            m[h] = M;
#pragma unroll
            for (int v = 0; v < NV; v++) {
                float4 t = o[h][v];
                t.x = t.x * a + __shfl_xor_sync(0xffffffffu, t.x, off) * b;
                t.y = t.y * a + __shfl_xor_sync(0xffffffffu, t.y, off) * b;
                t.z = t.z * a + __shfl_xor_sync(0xffffffffu, t.z, off) * b;
                t.w = t.w * a + __shfl_xor_sync(0xffffffffu, t.w, off) * b;
                o[h][v] = t;
            }
        }
    }
    if (gi == 0) {
#pragma unroll
        for (int h = 0; h < G; h++) {
            if (h >= grp)
                continue;
            if (sub == 0) {
                smw[warp][h] = m[h];
                slw[warp][h] = l[h];
            }
#pragma unroll
            for (int v = 0; v < NV; v++) {
                const int ci = sub + v * lg;
                if (ci < nc)
                    *reinterpret_cast<float4 *>(&so[warp][h * hd + 4 * ci]) = o[h][v];
            }
        }
    }
    __syncthreads();
    const int row = S.row0, st = hd + 4;
    float *part = p.part + ((int64_t)row * p.n_head + g * grp) * p.max_split * st;
    for (int idx = tid; idx < grp * nc; idx += ATT_THREADS) {
        const int h = idx / nc, ci = idx % nc;
        float M = smw[0][h];
#pragma unroll
        for (int w = 1; w < ATTD_NW; w++)
            M = fmaxf(M, smw[w][h]);
        float L = 0.f;
        float4 O = z4;
#pragma unroll
        for (int w = 0; w < ATTD_NW; w++) {
            const float a = att_w(smw[w][h], M);
            L = fmaf(slw[w][h], a, L);
            f4_fma(O, 1.f, *reinterpret_cast<const float4 *>(&so[w][h * hd + 4 * ci]), a);
        }
        if (nsplit == 1) {
            float *out = S.out + (int64_t)(g * grp + h) * hd + 4 * ci;
            L += att_sink(p, g * grp + h, M);
            out[0] = O.x / L;
            out[1] = O.y / L;
            out[2] = O.z / L;
            out[3] = O.w / L;
        } else {
            float *pe = part + ((int64_t)h * p.max_split + c) * st;
            if (ci == 0) {
                pe[0] = M;
                pe[1] = L;
            }
            *reinterpret_cast<float4 *>(pe + 4 + 4 * ci) = O;
        }
    }
    if (nsplit == 1 || !split_last(p.counter + (int64_t)row * p.n_head_kv + g, nsplit, tid, &last))
        return;
    /* each split's weight exp(m_k - M) / L: a warp per head, lanes over the splits */
    for (int h = warp; h < grp; h += ATTD_NW) {
        const float *ph = part + (int64_t)h * p.max_split * st;
        float mk[FCU_ATTD_MAX_SPLIT / 32], lk[FCU_ATTD_MAX_SPLIT / 32];
        float M = -INFINITY;
#pragma unroll
        for (int u = 0; u < FCU_ATTD_MAX_SPLIT / 32; u++) {
            const int k = lane + 32 * u;
            mk[u] = k < nsplit ? __ldcg(ph + (int64_t)k * st) : -INFINITY;
            lk[u] = k < nsplit ? __ldcg(ph + (int64_t)k * st + 1) : 0.f;
            M = fmaxf(M, mk[u]);
        }
        M = warp_max(M);
        float L = 0.f;
#pragma unroll
        for (int u = 0; u < FCU_ATTD_MAX_SPLIT / 32; u++)
            L = fmaf(lk[u], att_w(mk[u], M), L);
        L = warp_sum(L) + att_sink(p, g * grp + h, M);
#pragma unroll
        for (int u = 0; u < FCU_ATTD_MAX_SPLIT / 32; u++)
            if (lane + 32 * u < nsplit)
                sw[h][lane + 32 * u] = att_w(mk[u], M) / L;
    }
    __syncthreads();
    for (int idx = tid; idx < grp * nc; idx += ATT_THREADS) {
        const int h = idx / nc, ci = idx % nc;
        const float *ph = part + (int64_t)h * p.max_split * st + 4 + 4 * ci;
        float4 O = z4;
        for (int k0 = 0; k0 < nsplit; k0 += ATTD_MB) {
            float4 t[ATTD_MB];
#pragma unroll
            for (int u = 0; u < ATTD_MB; u++)
                t[u] = k0 + u < nsplit ? __ldcg(reinterpret_cast<const float4 *>(ph + (int64_t)(k0 + u) * st)) : z4;
#pragma unroll
            for (int u = 0; u < ATTD_MB; u++)
                if (k0 + u < nsplit)
                    f4_fma(O, 1.f, t[u], sw[h][k0 + u]);
        }
        float *out = S.out + (int64_t)(g * grp + h) * hd + 4 * ci;
        out[0] = O.x;
        out[1] = O.y;
        out[2] = O.z;
        out[3] = O.w;
    }
}

const void *fcu_k_attention_dec(int nv, int grp, int prefetch)
{
    if (grp < 1 || grp > FCU_ATT_MAX_GROUP)
        return NULL;
    if (nv == 1 && grp <= 4)
        return prefetch ? (const void *)k_att_dec<1, 4, true> : (const void *)k_att_dec<1, 4, false>;
    if (nv == 1)
        return (const void *)k_att_dec<1, 8, false>;
    if (nv == 2)
        return grp <= 4 ? (const void *)k_att_dec<2, 4, false> : (const void *)k_att_dec<2, 8, false>;
    return NULL;
}

const void *fcu_k_attention_dec_typed(int type, int nv, int grp)
{
    if (grp < 1 || grp > FCU_ATT_MAX_GROUP || nv < 1 || nv > 2)
        return NULL;
    const int gi = grp <= 4 ? 0 : 1, vi = nv - 1;
#define DEC_T(T) { (const void *)k_att_dec<1, 4, false, T, T>, (const void *)k_att_dec<1, 8, false, T, T>, \
                   (const void *)k_att_dec<2, 4, false, T, T>, (const void *)k_att_dec<2, 8, false, T, T> }
    static const void *const tab[][4] = { DEC_T(GG_F16), DEC_T(GG_BF16), DEC_T(GG_Q8_0), DEC_T(GG_Q4_0),
                                          DEC_T(GG_Q4_1), DEC_T(GG_Q5_0), DEC_T(GG_Q5_1) };
#undef DEC_T
    static const int types[] = { GG_F16, GG_BF16, GG_Q8_0, GG_Q4_0, GG_Q4_1, GG_Q5_0, GG_Q5_1 };
    for (int i = 0; i < 7; i++)
        if (types[i] == type)
            return tab[i][vi * 2 + gi];
    return NULL;
}

/* REF: normalizes one (row, head) score row in place.  grid: x = n_head, y = rows. */
__global__ void __launch_bounds__(ATT_THREADS) k_att_softmax(const fcu_att_p p)
{
    pdl_launch();
    pdl_wait();
    __shared__ float sh[32];
    int si = 0;
    while (si + 1 < p.n_seq && (int)blockIdx.y >= p.s[si + 1].row0)
        si++;
    const fcu_att_seq &S = p.s[si];
    const int T = S.pos[blockIdx.y - S.row0] + 1;
    float *s = p.scores + ((int64_t)blockIdx.y * p.n_head + blockIdx.x) * p.t_max;
    float m = -INFINITY;
    for (int t = threadIdx.x; t < T; t += ATT_THREADS)
        m = fmaxf(m, s[t]);
    m = warp_max(m);
    __syncthreads();
    if ((threadIdx.x & 31) == 0)
        sh[threadIdx.x >> 5] = m;
    __syncthreads();
    m = sh[0];
    for (int w = 1; w < ATT_THREADS / 32; w++)
        m = fmaxf(m, sh[w]);
    float l = 0.f;
    for (int t = threadIdx.x; t < T; t += ATT_THREADS) {
        const float e = expf(s[t] - m);
        s[t] = e;
        l += e;
    }
    l = block_sum(l, sh) + att_sink(p, blockIdx.x, m);
    /* the unfused order: p normalized before P.V; an F16 / BF16 V multiplies p rounded to
     * its type (fcpu_ref_attention) */
    for (int t = threadIdx.x; t < T; t += ATT_THREADS)
        s[t] = q_round16(p.type_v, s[t] / l);
}

const void *fcu_k_attention(int which)
{
    switch (which) {
    case ATT_FUSED: return (const void *)k_att<ATT_FUSED>;
    case ATT_REF_SCORES: return (const void *)k_att<ATT_REF_SCORES>;
    case ATT_REF_SOFTMAX: return (const void *)k_att_softmax;
    case ATT_REF_PV: return (const void *)k_att<ATT_REF_PV>;
    }
    return NULL;
}
