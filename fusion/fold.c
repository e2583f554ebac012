/* fold.c: load-time folding of norm parameters into the following matrices (fold.h).
 *
 * Why quantized matrices keep their bytes (INSCALE) instead of being re-quantized after
 * folding (REQUANT): the model IS its stored weights.  Folding gamma into a Q4_K matrix and
 * quantizing the product again rounds every weight a second time, so the fused product
 * drifts from what the file computes by more than one quantization step: the block scale
 * follows the largest gamma_i * w_i, so inputs with a small gamma lose resolution (measured
 * with `fusion-bench fold`, table in docs/fusion.md: relative error of the product against
 * fp64, Q4_0 1.1e-1, Q8_0 6.6e-3, F16 1.9e-4, against 5e-8 for INSCALE and for the unfused
 * product).  Multiplying x by gamma inside the kernel, before the kernel converts
 * x for its dot product, costs n_in multiplies per row (nothing next to the n_in * n_out of
 * the product), keeps the weights exact and is not a reduction, so the GEMM still starts on
 * the raw row without waiting for the norm's statistic.  F32 matrices are folded outright:
 * the only new error is one fp32 rounding per weight. */
#include "fusion/fold.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"

void fz_fold_rms_f32(const float *w, int64_t n_out, int64_t n_in, const float *gamma,
                     float *dst)
{
    for (int64_t o = 0; o < n_out; o++)
        for (int64_t i = 0; i < n_in; i++)
            dst[o * n_in + i] = w[o * n_in + i] * gamma[i];
}

void fz_fold_layer_f32(const float *w, const float *b, int64_t n_out, int64_t n_in,
                       const float *gamma, const float *beta, float *dst, float *c)
{
    for (int64_t o = 0; o < n_out; o++) {
        const float *wr = w + o * n_in;
        double mean = 0, cb = b ? b[o] : 0.0;
        for (int64_t i = 0; i < n_in; i++) {
            mean += (double)gamma[i] * wr[i];
            if (beta)
                cb += (double)beta[i] * wr[i];
        }
        mean /= (double)n_in;
        /* c is computed from wr before dst (which may alias w) is written */
        c[o] = (float)cb;
        float *dr = dst + o * n_in;
        for (int64_t i = 0; i < n_in; i++)
            dr[i] = (float)((double)gamma[i] * wr[i] - mean);
    }
}

int fz_fold_policy_for(int type, int policy)
{
    if (policy != FZ_FOLD_AUTO)
        return policy;
    return type == GG_F32 ? FZ_FOLD_FOLD : FZ_FOLD_INSCALE;
}

const char *fz_fold_policy_name(int policy)
{
    switch (policy) {
    case FZ_FOLD_AUTO: return "auto";
    case FZ_FOLD_FOLD: return "fold";
    case FZ_FOLD_REQUANT: return "requant";
    case FZ_FOLD_INSCALE: return "inscale";
    }
    return "?";
}

void fz_folded_free(fz_folded_t *f)
{
    if (!f)
        return;
    free(f->data);
    free(f->bias);
    free(f->scale);
    memset(f, 0, sizeof(*f));
}

size_t fz_folded_bytes(const fz_folded_t *f)
{
    return f && f->data ? gg_row_bytes(f->w.type, (uint64_t)f->w.n_in) * (size_t)f->w.n_out : 0;
}

/* Dequantizes row r of w into dst (n_in floats). */
static int row_f32(const fb_weight_t *w, int64_t r, float *dst)
{
    size_t rb = gg_row_bytes(w->type, (uint64_t)w->n_in);
    return fq_dequantize_row(w->type, (const uint8_t *)w->src + (size_t)r * rb, dst, w->n_in);
}

static int concat_bias(const fb_weight_t *parts, int n_parts, int64_t n_out, float **out)
{
    int any = 0;
    for (int p = 0; p < n_parts; p++)
        any |= parts[p].bias != NULL;
    *out = NULL;
    if (!any)
        return 0;
    float *b = calloc((size_t)n_out, sizeof(float));
    if (!b)
        return -ENOMEM;
    int64_t o = 0;
    for (int p = 0; p < n_parts; p++) {
        if (parts[p].bias)
            memcpy(b + o, parts[p].bias, (size_t)parts[p].n_out * sizeof(float));
        o += parts[p].n_out;
    }
    *out = b;
    return 0;
}

/* Writes the folded rows of all parts, converted to out_type (F32 for FOLD, the parts' type
 * for REQUANT), into dst. */
static int fold_rows(const fb_weight_t *parts, int n_parts, const float *gamma, int out_type,
                     uint8_t *dst, char *err, size_t errlen)
{
    int64_t n_in = parts[0].n_in;
    size_t ob = gg_row_bytes(out_type, (uint64_t)n_in);
    float *row = malloc((size_t)n_in * sizeof(float));
    if (!row)
        return -ENOMEM;
    int rc = 0;
    for (int p = 0; p < n_parts && rc == 0; p++) {
        for (int64_t r = 0; r < parts[p].n_out; r++) {
            rc = row_f32(&parts[p], r, row);
            if (rc == 0 && gamma)
                fz_fold_rms_f32(row, 1, n_in, gamma, row);
            if (rc == 0)
                rc = fq_quantize_row(out_type, row, dst, n_in);
            if (rc) {
                snprintf(err, errlen, "folding %s: cannot convert %s rows (%s)",
                         parts[p].name ? parts[p].name : "weight",
                         gg_type_name(parts[p].type) ? gg_type_name(parts[p].type) : "?",
                         fd_strerror(rc));
                break;
            }
            dst += ob;
        }
    }
    free(row);
    return rc;
}

bool fz_parts_adjacent(const fb_weight_t *parts, int n_parts)
{
    for (int p = 0; p + 1 < n_parts; p++) {
        size_t rb = gg_row_bytes(parts[p].type, (uint64_t)parts[p].n_in);
        if (parts[p + 1].type != parts[0].type || parts[p + 1].n_in != parts[0].n_in ||
            (const uint8_t *)parts[p].src + rb * (size_t)parts[p].n_out !=
                (const uint8_t *)parts[p + 1].src)
            return false;
    }
    return true;
}

int fz_fold_rms(const fb_weight_t *parts, int n_parts, const float *gamma, int policy,
                const char *name, fz_folded_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (n_parts < 1 || !parts) {
        snprintf(err, errlen, "folding %s: no weights", name ? name : "?");
        return -EINVAL;
    }
    int type = parts[0].type;
    int64_t n_in = parts[0].n_in, n_out = 0;
    for (int p = 0; p < n_parts; p++) {
        if (parts[p].type != type || parts[p].n_in != n_in || parts[p].n_out < 1) {
            snprintf(err, errlen, "folding %s: %s (%s, %lld inputs) does not match %s "
                     "(%s, %lld inputs)", name ? name : "?",
                     parts[p].name ? parts[p].name : "?",
                     gg_type_name(parts[p].type) ? gg_type_name(parts[p].type) : "?",
                     (long long)parts[p].n_in, parts[0].name ? parts[0].name : "?",
                     gg_type_name(type) ? gg_type_name(type) : "?", (long long)n_in);
            return -EINVAL;
        }
        n_out += parts[p].n_out;
    }
    policy = fz_fold_policy_for(type, policy);
    if (!gamma)
        policy = FZ_FOLD_INSCALE; /* nothing to fold: only concatenate */
    if (!fq_type_supported(type)) {
        snprintf(err, errlen, "folding %s: weight type %s is not supported", name ? name : "?",
                 gg_type_name(type) ? gg_type_name(type) : "?");
        return FD_EUNSUP;
    }

    int out_type = policy == FZ_FOLD_FOLD ? GG_F32 : type;
    size_t rb = gg_row_bytes(out_type, (uint64_t)n_in), total;
    if (rb == 0 || fd_mul_size(rb, (size_t)n_out, &total)) {
        snprintf(err, errlen, "folding %s: size overflow", name ? name : "?");
        return FD_ERANGE;
    }
    int rc = concat_bias(parts, n_parts, n_out, &out->bias);
    if (rc)
        goto fail;

    const void *src;
    if (policy == FZ_FOLD_INSCALE) {
        /* parts that follow each other in memory (as attn_q, attn_k, attn_v often do in a
         * GGUF file) already are their concatenation: the mapped bytes are used as they are */
        if (fz_parts_adjacent(parts, n_parts)) {
            src = parts[0].src;
        } else {
            uint8_t *d = malloc(total);
            if (!d) {
                rc = -ENOMEM;
                goto fail;
            }
            out->data = d;
            for (int p = 0; p < n_parts; p++) {
                size_t nb = rb * (size_t)parts[p].n_out;
                memcpy(d, parts[p].src, nb);
                d += nb;
            }
            src = out->data;
        }
        if (gamma) {
            out->scale = malloc((size_t)n_in * sizeof(float));
            if (!out->scale) {
                rc = -ENOMEM;
                goto fail;
            }
            memcpy(out->scale, gamma, (size_t)n_in * sizeof(float));
        }
    } else if (policy == FZ_FOLD_FOLD || policy == FZ_FOLD_REQUANT) {
        out->data = malloc(total);
        if (!out->data) {
            rc = -ENOMEM;
            goto fail;
        }
        rc = fold_rows(parts, n_parts, gamma, out_type, out->data, err, errlen);
        if (rc)
            goto fail;
        src = out->data;
    } else {
        snprintf(err, errlen, "folding %s: unknown policy %d", name ? name : "?", policy);
        rc = -EINVAL;
        goto fail;
    }

    out->w.type = out_type;
    out->w.n_in = n_in;
    out->w.n_out = n_out;
    out->w.src = src;
    out->w.bias = out->bias;
    out->w.name = name;
    out->w.in_scale = out->scale;
    return 0;
fail:
    if (rc == -ENOMEM)
        snprintf(err, errlen, "folding %s: out of memory", name ? name : "?");
    fz_folded_free(out);
    return rc;
}

int fz_fold_layer(const fb_weight_t *w, const float *b, const float *gamma, const float *beta,
                  int policy, const char *name, fz_folded_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (policy != FZ_FOLD_REQUANT)
        policy = FZ_FOLD_FOLD; /* mean-centering is not a per-input scale: no INSCALE */
    if (!fq_type_supported(w->type)) {
        snprintf(err, errlen, "folding %s: weight type %s is not supported", name ? name : "?",
                 gg_type_name(w->type) ? gg_type_name(w->type) : "?");
        return FD_EUNSUP;
    }
    int out_type = policy == FZ_FOLD_REQUANT ? w->type : GG_F32;
    int64_t n_in = w->n_in, n_out = w->n_out;
    size_t ob = gg_row_bytes(out_type, (uint64_t)n_in), total;
    if (ob == 0 || fd_mul_size(ob, (size_t)n_out, &total)) {
        snprintf(err, errlen, "folding %s: size overflow", name ? name : "?");
        return FD_ERANGE;
    }
    int rc = -ENOMEM;
    float *row = malloc((size_t)n_in * sizeof(float));
    out->data = malloc(total);
    out->bias = malloc((size_t)n_out * sizeof(float));
    if (!row || !out->data || !out->bias)
        goto fail;
    uint8_t *dst = out->data;
    for (int64_t o = 0; o < n_out; o++) {
        rc = row_f32(w, o, row);
        if (rc == 0) {
            fz_fold_layer_f32(row, b ? b + o : NULL, 1, n_in, gamma, beta, row, out->bias + o);
            rc = fq_quantize_row(out_type, row, dst, n_in);
        }
        if (rc) {
            snprintf(err, errlen, "folding %s: cannot convert rows (%s)", name ? name : "?",
                     fd_strerror(rc));
            goto fail;
        }
        dst += ob;
    }
    free(row);
    out->w.type = out_type;
    out->w.n_in = n_in;
    out->w.n_out = n_out;
    out->w.src = out->data;
    out->w.bias = out->bias;
    out->w.name = name;
    return 0;
fail:
    if (rc == -ENOMEM)
        snprintf(err, errlen, "folding %s: out of memory", name ? name : "?");
    free(row);
    fz_folded_free(out);
    return rc;
}
