/* ref_ops.c: the plain scalar reference ops (see ref_ops.h). */
#include "backends/cpu/ref_ops.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"

double fcpu_ref_norm_scale(int kind, const float *x, int64_t n, float eps)
{
    if (kind == FB_NORM_RMS) {
        double ss = 0;
        for (int64_t i = 0; i < n; i++)
            ss += (double)x[i] * x[i];
        return 1.0 / sqrt(ss / (double)n + eps);
    }
    if (kind == FB_NORM_LAYER) {
        double s = 0, v = 0;
        for (int64_t i = 0; i < n; i++)
            s += x[i];
        double mean = s / (double)n;
        for (int64_t i = 0; i < n; i++)
            v += (x[i] - mean) * (x[i] - mean);
        return 1.0 / sqrt(v / (double)n + eps);
    }
    return 1.0;
}

int fcpu_ref_matmul(const fb_weight_t *w, const float *x, int64_t n_rows, float *y,
                    const fb_defer_t *defer)
{
    const int64_t n_in = w->n_in, n_out = w->n_out;
    const uint64_t rb = gg_row_bytes(w->type, (uint64_t)n_in);
    int kind = defer ? defer->kind : FB_NORM_NONE;
    float *wrow = malloc((size_t)n_in * sizeof(float));
    double *scale = malloc((size_t)n_rows * sizeof(double));
    if (!wrow || !scale) {
        free(wrow);
        free(scale);
        return -ENOMEM;
    }
    for (int64_t r = 0; r < n_rows; r++) {
        scale[r] = fcpu_ref_norm_scale(kind, x + r * n_in, n_in, defer ? defer->eps : 0);
        if (kind != FB_NORM_NONE && defer->scale_out)
            defer->scale_out[r] = (float)scale[r];
    }
    for (int64_t o = 0; o < n_out; o++) {
        fq_dequantize_row(w->type, (const uint8_t *)w->src + (uint64_t)o * rb, wrow, n_in);
        for (int64_t r = 0; r < n_rows; r++) {
            const float *xr = x + r * n_in;
            double acc = 0;
            if (w->in_scale)
                for (int64_t i = 0; i < n_in; i++)
                    acc += (double)wrow[i] * ((double)xr[i] * w->in_scale[i]);
            else
                for (int64_t i = 0; i < n_in; i++)
                    acc += (double)wrow[i] * xr[i];
            acc *= scale[r];
            if (w->bias)
                acc += w->bias[o];
            y[r * n_out + o] = (float)acc;
        }
    }
    free(wrow);
    free(scale);
    return 0;
}

void fcpu_ref_rmsnorm(const float *x, int64_t n_rows, int64_t n, const float *gamma,
                      float eps, float *y)
{
    for (int64_t r = 0; r < n_rows; r++) {
        double s = fcpu_ref_norm_scale(FB_NORM_RMS, x + r * n, n, eps);
        for (int64_t i = 0; i < n; i++)
            y[r * n + i] = (float)(x[r * n + i] * s * gamma[i]);
    }
}

void fcpu_ref_layernorm(const float *x, int64_t n_rows, int64_t n, const float *gamma,
                        const float *beta, float eps, float *y)
{
    for (int64_t r = 0; r < n_rows; r++) {
        const float *xr = x + r * n;
        double sum = 0;
        for (int64_t i = 0; i < n; i++)
            sum += xr[i];
        double mean = sum / (double)n;
        double s = fcpu_ref_norm_scale(FB_NORM_LAYER, xr, n, eps);
        for (int64_t i = 0; i < n; i++)
            y[r * n + i] = (float)((xr[i] - mean) * s * gamma[i] + (beta ? beta[i] : 0.0));
    }
}

void fcpu_ref_rope(float *x, int64_t n_rows, int64_t ld, int n_heads, int head_dim,
                   const int32_t *pos, const fb_rope_t *rope)
{
    const int half = rope->n_rot / 2;
    const float *ff = rope->freq_factors ? rope->freq_factors->src : NULL;
    float dims[2];
    fb_rope_corr_dims(rope, dims);
    const double m = fb_rope_mscale(rope);
    for (int64_t r = 0; r < n_rows; r++)
        for (int h = 0; h < n_heads; h++) {
            float *v = x + r * ld + (int64_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                /* theta_i = p * scale * base^(-2i / n_rot) / factor_i; YaRN blends it with
                 * the unscaled angle by its ramp */
                double th = (double)pos[r] * rope->freq_scale *
                            pow(rope->freq_base, -2.0 * i / rope->n_rot) / (ff ? ff[i] : 1.0);
                double mix = fb_rope_yarn_mix(rope, dims, i);
                if (mix != 0) {
                    double ext = (double)pos[r] * pow(rope->freq_base, -2.0 * i / rope->n_rot) /
                                 (ff ? ff[i] : 1.0);
                    th = th * (1 - mix) + ext * mix;
                }
                double c = cos(th) * m, s = sin(th) * m;
                int a = rope->mode == FB_ROPE_NEOX ? i : 2 * i;
                int b = rope->mode == FB_ROPE_NEOX ? i + half : 2 * i + 1;
                double va = v[a], vb = v[b];
                v[a] = (float)(va * c - vb * s);
                v[b] = (float)(va * s + vb * c);
            }
        }
}

/* Head g of cache row t as floats: the F32 row itself, or the typed row dequantized into
 * buf (head_dim rounded up to whole blocks). */
static const float *kv_head(int type, const void *base, int64_t ld, int64_t t, int g, int hd,
                            int n_head_kv, float *buf)
{
    if (type == GG_F32)
        return (const float *)base + t * ld + (int64_t)g * hd;
    const size_t hb = fb_kv_head_bytes(type, hd);
    const int be = gg_block_elems(type);
    const uint8_t *row = (const uint8_t *)base + (size_t)t * hb * (size_t)n_head_kv;
    fq_dequantize_row(type, row + (size_t)g * hb, buf, (int64_t)(hd + be - 1) / be * be);
    return buf;
}

/* The query as a product with K of type multiplies it (llama.cpp's dot type of the K type):
 * F16 and BF16 round it to their own type; the block types to int8 blocks of 32 with a float
 * scale amax / 127 (cpu/kernels.h's XQ32: codes lrintf(x * 127 / amax)), zero padded to whole
 * blocks; F32 keeps it.  out holds head_dim rounded up to whole blocks. */
void fcpu_ref_kv_query(int type, const float *q, int hd, float *out)
{
    const int be = gg_block_elems(type), hp = (hd + be - 1) / be * be;
    for (int j = 0; j < hp; j++)
        out[j] = j < hd ? q[j] : 0.f;
    if (type == GG_F16 || type == GG_BF16) {
        for (int j = 0; j < hd; j++)
            out[j] = type == GG_F16 ? fq_f16_to_f32(fq_f32_to_f16(q[j]))
                                    : fq_bf16_to_f32(fq_f32_to_bf16(q[j]));
    } else if (type != GG_F32) {
        for (int b = 0; b < hp; b += 32) {
            float amax = 0;
            for (int j = b; j < b + 32; j++)
                amax = fmaxf(amax, fabsf(out[j]));
            /* d in fp16, as llama.cpp's q8_0 blocks (and the fast path) keep it */
            const float id = amax > 0 ? 127.f / amax : 0.f;
            const float d = fq_f16_to_f32(fq_f32_to_f16(amax / 127.f));
            for (int j = b; j < b + 32; j++)
                out[j] = (float)lrintf(out[j] * id) * d;
        }
    }
}

int fcpu_ref_attention(const fb_attn_t *a)
{
    const int hd = a->head_dim, group = a->n_head / a->n_head_kv;
    int64_t n_ctx = 0;
    for (int i = 0; i < a->n_q; i++)
        n_ctx = FD_MAX(n_ctx, (int64_t)a->pos[i] + 1);
    double *s = malloc((size_t)(n_ctx ? n_ctx : 1) * sizeof(double));
    double *o = malloc((size_t)hd * sizeof(double));
    float *buf = malloc(((size_t)hd + 256) * sizeof(float));
    float *qr = malloc(((size_t)hd + 256) * sizeof(float));
    if (!s || !o || !buf || !qr) {
        free(s);
        free(o);
        free(buf);
        free(qr);
        return -ENOMEM;
    }
    /* an F16 / BF16 V multiplies p in its own type, normalized first (llama.cpp's F16 P.V) */
    const bool p_round = a->type_v == GG_F16 || a->type_v == GG_BF16;
    for (int i = 0; i < a->n_q; i++) {
        int64_t T = (int64_t)a->pos[i] + 1;
        /* the sliding window: cache rows t with pos - t < window */
        int64_t t0 = a->window > 0 ? FD_MAX((int64_t)0, T - a->window) : 0;
        for (int h = 0; h < a->n_head; h++) {
            const float *q = a->q + (int64_t)i * a->ldq + (int64_t)h * hd;
            if (a->type_k != GG_F32) {
                fcpu_ref_kv_query(a->type_k, q, hd, qr);
                q = qr;
            }
            int g = h / group;
            double mx = -INFINITY;
            for (int64_t t = t0; t < T; t++) {
                const float *k = kv_head(a->type_k, a->k_data, a->ldkv, fb_attn_row(a, t), g,
                                         hd, a->n_head_kv, buf);
                double d = 0;
                for (int j = 0; j < hd; j++)
                    d += (double)q[j] * k[j];
                s[t] = d * a->scale;
                if (a->softcap > 0.0f)
                    s[t] = a->softcap * tanh(s[t] / a->softcap);
                mx = fmax(mx, s[t]);
            }
            /* a sink is one more logit in the max and the denominator, with no V row */
            const double sink = a->sinks ? (double)a->sinks[h] : -INFINITY;
            double m = a->mode == FB_SOFTMAX_SUMONLY ? 0.0 : fmax(mx, sink), l = 0;
            for (int64_t t = t0; t < T; t++) {
                s[t] = exp(s[t] - m);
                l += s[t];
            }
            if (a->sinks)
                l += exp(sink - m);
            if (a->mode == FB_SOFTMAX_REF || p_round) /* normalize p first, then P.V */
                for (int64_t t = t0; t < T; t++)
                    s[t] /= l;
            if (p_round)
                for (int64_t t = t0; t < T; t++)
                    s[t] = a->type_v == GG_F16 ? fq_f16_to_f32(fq_f32_to_f16((float)s[t]))
                                               : fq_bf16_to_f32(fq_f32_to_bf16((float)s[t]));
            for (int j = 0; j < hd; j++)
                o[j] = 0;
            for (int64_t t = t0; t < T; t++) {
                const float *v = kv_head(a->type_v, a->v_data, a->ldkv, fb_attn_row(a, t), g,
                                         hd, a->n_head_kv, buf);
                for (int j = 0; j < hd; j++)
                    o[j] += s[t] * v[j];
            }
            float *out = a->out + (int64_t)i * a->ldo + (int64_t)h * hd;
            for (int j = 0; j < hd; j++)
                out[j] = (float)(a->mode == FB_SOFTMAX_REF || p_round ? o[j] : o[j] / l);
        }
    }
    free(s);
    free(o);
    free(buf);
    free(qr);
    return 0;
}

int fcpu_ref_kv_store(void *dst, int type, const float *src, int64_t ld_src, int64_t n_rows,
                      int n_head_kv, int head_dim)
{
    return fb_kv_quantize(dst, type, src, ld_src, n_rows, n_head_kv, head_dim);
}

void fcpu_ref_silu_mul(const float *gate, const float *up, int64_t n_rows, int64_t n,
                       int64_t ld_in, float *out)
{
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) {
            double g = gate[r * ld_in + i];
            out[r * n + i] = (float)(g / (1.0 + exp(-g)) * up[r * ld_in + i]);
        }
}

void fcpu_ref_gelu_mul(const float *gate, const float *up, int64_t n_rows, int64_t n,
                       int64_t ld_in, float *out)
{
    const double c = 0.79788456080286535588; /* sqrt(2 / pi) */
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) {
            double g = gate[r * ld_in + i];
            double gl = 0.5 * g * (1.0 + tanh(c * (g + 0.044715 * g * g * g)));
            out[r * n + i] = (float)(gl * up[r * ld_in + i]);
        }
}

void fcpu_ref_swiglu_oai(const float *gate, const float *up, int64_t n_rows, int64_t n,
                         int64_t ld_in, float alpha, float limit, float *out)
{
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++) {
            double g = fmin((double)gate[r * ld_in + i], limit);
            double u = fmax(fmin((double)up[r * ld_in + i], limit), -(double)limit);
            out[r * n + i] = (float)(g / (1.0 + exp(-(double)alpha * g)) * (u + 1.0));
        }
}

void fcpu_ref_scale(float *y, int64_t n, float s)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)((double)y[i] * s);
}

void fcpu_ref_softcap(float *y, int64_t n, float cap)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)(cap * tanh((double)y[i] / cap));
}

void fcpu_ref_add(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}

void fcpu_ref_get_rows(const fb_weight_t *w, const int32_t *ids, int64_t n, float *out)
{
    const uint64_t rb = gg_row_bytes(w->type, (uint64_t)w->n_in);
    for (int64_t r = 0; r < n; r++)
        fq_dequantize_row(w->type, (const uint8_t *)w->src + (uint64_t)ids[r] * rb,
                          out + r * w->n_in, w->n_in);
}

void fcpu_ref_copy2d(float *dst, int64_t ld_dst, const float *src, int64_t ld_src,
                     int64_t n_rows, int64_t n)
{
    for (int64_t r = 0; r < n_rows; r++)
        memmove(dst + r * ld_dst, src + r * ld_src, (size_t)n * sizeof(float));
}

void fcpu_ref_gather_rows(float *dst, const float *src, int64_t ld_src, const int32_t *ids,
                          int64_t n_rows, int64_t n)
{
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++)
            dst[r * n + i] = src[(int64_t)ids[r] * ld_src + i];
}

void fcpu_ref_scatter_add_rows(float *dst, int64_t ld_dst, const float *src,
                               const int32_t *ids, const float *w, int64_t n_rows, int64_t n)
{
    for (int64_t r = 0; r < n_rows; r++)
        for (int64_t i = 0; i < n; i++)
            dst[(int64_t)ids[r] * ld_dst + i] += w[r] * src[r * n + i];
}
