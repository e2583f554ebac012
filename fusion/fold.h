/* fold.h: load-time folding of a normalization's parameters into the linear layer that
 * follows it (../shared/design/fusion.md), so that at run time the product starts on the raw
 * row and the norm's per-row scalar is applied to its outputs (fb_defer_t).
 *   RMSNorm:   W* = W diag(gamma)                          (row o of W: W[o][i] * gamma[i])
 *   LayerNorm: W' = W diag(gamma) (I - E/n),  c = W beta + b  (rows mean-centred, a bias)
 * Owns nothing beyond the fz_folded_t it fills.  Called by fusion/plan.c at load time (on
 * the engine thread) and by the tests; no shared state. */
#ifndef FD_FOLD_H
#define FD_FOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"

/* The plain scalar kernels, on fp32 rows (W is n_out rows of n_in, as fb_weight_t).
 * RMS: dst[o][i] = w[o][i] * gamma[i]; dst may equal w. */
void fz_fold_rms_f32(const float *w, int64_t n_out, int64_t n_in, const float *gamma,
                     float *dst);
/* LayerNorm: dst[o][i] = gamma[i] w[o][i] - mean_j(gamma[j] w[o][j]) (mean in fp64), and
 * c[o] = sum_i beta[i] w[o][i] + b[o].  beta and b may be NULL (zero).  dst may equal w. */
void fz_fold_layer_f32(const float *w, const float *b, int64_t n_out, int64_t n_in,
                       const float *gamma, const float *beta, float *dst, float *c);

/* How a gamma is folded into a matrix of a given type.
 *  FOLD:     dequantize, multiply, store fp32 (exact to fp32 rounding; for F32 weights this is
 *            plain folding, for others it costs 4 bytes per weight).
 *  REQUANT:  dequantize, multiply, quantize back to the same type (a second rounding of
 *            every weight: measured in docs/fusion.md and rejected for quantized types).
 *  INSCALE:  keep the weights' bytes, attach gamma as fb_weight_t.in_scale so the kernel
 *            multiplies x by gamma before its own conversion of x.  The bytes are copied
 *            only to concatenate parts that do not already follow each other in memory.
 * FZ_FOLD_AUTO picks FOLD for F32 and INSCALE for every other type: the choice the numbers
 * in docs/fusion.md support (INSCALE is as accurate as the unfused product; REQUANT adds an
 * error the size of the format's own quantization error). */
enum fz_fold_policy { FZ_FOLD_AUTO = 0, FZ_FOLD_FOLD, FZ_FOLD_REQUANT, FZ_FOLD_INSCALE };

/* One folded (and possibly concatenated) weight and the host buffers it owns. */
typedef struct fz_folded {
    fb_weight_t w;       /* src, bias and in_scale point into the buffers below (or into
                            the original tensors' bytes when nothing had to change) */
    void *data;          /* owned weight bytes, or NULL */
    float *bias;         /* owned concatenated bias, or NULL */
    float *scale;        /* owned copy of gamma used as in_scale, or NULL */
} fz_folded_t;

/* Folds an RMSNorm gamma (n_in floats, host) into the concatenation of n_parts weights (rows
 * of parts[0], then parts[1], ...), which must share n_in and type; biases are concatenated
 * (a part without one contributes zeros).  The result feeds fb_matmul with an FB_NORM_RMS
 * defer.  gamma may be NULL (no norm weight: only concatenation).  name is copied by
 * reference.  Errors: -EINVAL (mismatched parts), FD_EUNSUP (type the policy cannot handle),
 * -ENOMEM; err gets a message naming the part. */
int fz_fold_rms(const fb_weight_t *parts, int n_parts, const float *gamma, int policy,
                const char *name, fz_folded_t *out, char *err, size_t errlen);

/* Folds a LayerNorm (gamma, beta: n_in floats; beta may be NULL) into one weight with bias b
 * (n_out floats or NULL), for an FB_NORM_LAYER defer.  Mean-centering cannot be expressed as
 * a per-input scale, so the result is always fp32 (FOLD) or re-quantized (REQUANT). */
int fz_fold_layer(const fb_weight_t *w, const float *b, const float *gamma, const float *beta,
                  int policy, const char *name, fz_folded_t *out, char *err, size_t errlen);

void fz_folded_free(fz_folded_t *f);

/* Whether the parts (same type and n_in) follow each other in memory, so that their
 * concatenation is a view of their bytes (INSCALE copies nothing then). */
bool fz_parts_adjacent(const fb_weight_t *parts, int n_parts);
/* Bytes of weight data f owns (a folded or concatenated copy), 0 for a view. */
size_t fz_folded_bytes(const fz_folded_t *f);

/* The policy FZ_FOLD_AUTO resolves to for a weight type. */
int fz_fold_policy_for(int type, int policy);
const char *fz_fold_policy_name(int policy);

#endif
