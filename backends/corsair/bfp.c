/* bfp.c: block floating point as the Corsair virtual device defines it (bfp.h).
 *
 * Encoding one block of a row (fmt p bits, block size b; the last block may be short):
 *  1. If any element is inf or NaN the block is SPECIAL (e = 255): +inf -> q = +127,
 *     -inf -> -127, NaN -> -128 (a code no finite value uses), finite elements -> 0.  A
 *     finite element would be absorbed by the infinity in any dot product that uses the
 *     block (inf + finite = inf; inf * 0 = NaN either way), so products stay what IEEE
 *     arithmetic gives; only an element-wise decode loses the finite values.  dmx-compressor
 *     passes non-finite values through unchanged; hardware with one exponent per block
 *     cannot, and this is the closest definition that keeps dot products right.
 *  2. If every element is +-0 the block is ZERO (e = 0, q = 0): it decodes to +0.
 *  3. Else E = floor(log2(max |x|)), clamped below at -126: a block whose largest element is
 *     an fp32 denormal keeps the smallest normal exponent, so its step is 2^(-126-(p-2)) and
 *     elements below half a step round to zero (no separate flush-to-zero rule is needed).
 *     q = round_to_nearest_even(x * 2^((p-2) - E)), computed in double (exact: a power-of-two
 *     scaling of a float), then clamped to +-(2^(p-1) - 1): the largest element lies in
 *     [2^(p-2), 2^(p-1)) steps and rounds up to 2^(p-1) only from the top half-step, where
 *     it saturates (error < 1 step instead of <= 1/2).  dmx-compressor's QPyTorch kernel
 *     (block_quantize_nearest) uses the same exponent and clamp; it breaks ties away from
 *     zero, the device is specified here with ties to even.
 * Error bound (finite blocks): |x - x^| <= 2^(E-(p-2)) / 2 = 2^(E-p+1) for every element
 * but a saturated maximum (< 2^(E-(p-2))); relative to the block's largest magnitude
 * (>= 2^E) that is 2^-(p-1) = 1/128 for 8-bit mantissas, 1/8 for 4-bit.
 *
 * The dot product mirrors the DIMC: per 64-wide chunk an integer sum of q_a * q_b (|sum| <=
 * 64 * 128 * 128 = 2^20 fits fp32's 24-bit significand, so it is exact), times the power of
 * two of the two exponents (exact in double, then rounded once to fp32), added to an fp32
 * accumulator in chunk order. */
#include "backends/corsair/bfp.h"

#include <errno.h>
#include <math.h>
#include <string.h>

const cs_bfp_fmt_t cs_bfp8 = { 8, 64 };
const cs_bfp_fmt_t cs_bfp4 = { 4, 128 };

int64_t cs_bfp_nblocks(const cs_bfp_fmt_t *f, int64_t n)
{
    return (n + f->block - 1) / f->block;
}

int cs_bfp_fmt_valid(const cs_bfp_fmt_t *f)
{
    return f && (f->mbits == 8 || f->mbits == 4) && f->block > 0 &&
           f->block % CS_BFP_CHUNK == 0;
}

int cs_bfp_fmt_parse(const char *name, cs_bfp_fmt_t *out)
{
    if (name && strcmp(name, "bfp8") == 0)
        *out = cs_bfp8;
    else if (name && strcmp(name, "bfp4") == 0)
        *out = cs_bfp4;
    else
        return -EINVAL;
    return 0;
}

const char *cs_bfp_fmt_name(const cs_bfp_fmt_t *f)
{
    if (f->mbits == 8 && f->block == 64)
        return "bfp8";
    if (f->mbits == 4 && f->block == 128)
        return "bfp4";
    return "bfp?";
}

static void encode_block(int p, const float *x, int64_t n, int8_t *q, uint8_t *e)
{
    float amax = 0;
    int special = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            special = 1;
        else if (fabsf(x[i]) > amax)
            amax = fabsf(x[i]);
    }
    if (special) {
        for (int64_t i = 0; i < n; i++)
            q[i] = isnan(x[i]) ? -128 : isinf(x[i]) ? (x[i] > 0 ? 127 : -127) : 0;
        *e = CS_BFP_EXP_SPECIAL;
        return;
    }
    if (amax == 0) {
        memset(q, 0, (size_t)n);
        *e = CS_BFP_EXP_ZERO;
        return;
    }
    int k;
    frexpf(amax, &k);                 /* amax = f * 2^k, f in [0.5, 1): floor(log2) = k-1 */
    int E = k - 1 < -126 ? -126 : k - 1;
    const double scale = ldexp(1.0, (p - 2) - E);
    const double qmax = (double)((1 << (p - 1)) - 1);
    for (int64_t i = 0; i < n; i++) {
        double v = nearbyint((double)x[i] * scale); /* default rounding: ties to even */
        q[i] = (int8_t)(v > qmax ? qmax : v < -qmax ? -qmax : v);
    }
    *e = (uint8_t)(E + 127);
}

void cs_bfp_encode(const cs_bfp_fmt_t *f, const float *x, int64_t n, int8_t *q, uint8_t *e)
{
    for (int64_t b = 0, i = 0; i < n; b++, i += f->block)
        encode_block(f->mbits, x + i, n - i < f->block ? n - i : f->block, q + i, &e[b]);
}

static float decode_one(int p, int8_t q, uint8_t e)
{
    if (e == CS_BFP_EXP_ZERO)
        return 0.0f;
    if (e == CS_BFP_EXP_SPECIAL)
        return q == -128 ? NAN : q == 127 ? INFINITY : q == -127 ? -INFINITY : 0.0f;
    return (float)ldexp((double)q, (int)e - 127 - (p - 2));
}

void cs_bfp_decode(const cs_bfp_fmt_t *f, const int8_t *q, const uint8_t *e, int64_t n,
                   float *x)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = decode_one(f->mbits, q[i], e[i / f->block]);
}

void cs_bfp_round_trip(const cs_bfp_fmt_t *f, const float *x, int64_t n, float *out)
{
    int8_t q[128];
    uint8_t e;
    for (int64_t i = 0; i < n; i += f->block) {
        int64_t len = n - i < f->block ? n - i : f->block;
        encode_block(f->mbits, x + i, len, q, &e);
        for (int64_t j = 0; j < len; j++)
            out[i + j] = decode_one(f->mbits, q[j], e);
    }
}

/* 2^k as a double, built from its bits: every exponent sum a dot product can produce
 * (-2*(126+6) .. 2*127) is a normal double. */
static inline double pow2(int k)
{
    union { uint64_t u; double d; } v = { .u = (uint64_t)(k + 1023) << 52 };
    return v.d;
}

static inline int32_t idot64(const int8_t *a, const int8_t *b)
{
    int32_t s = 0;
    for (int i = 0; i < CS_BFP_CHUNK; i++) /* fixed trip count: the compiler vectorizes it */
        s += (int32_t)a[i] * b[i];
    return s;
}

float cs_bfp_dot(const cs_bfp_fmt_t *fa, const int8_t *qa, const uint8_t *ea,
                 const cs_bfp_fmt_t *fb, const int8_t *qb, const uint8_t *eb, int64_t n)
{
    float acc = 0.0f;
    for (int64_t i = 0; i < n; i += CS_BFP_CHUNK) {
        const int64_t len = n - i < CS_BFP_CHUNK ? n - i : CS_BFP_CHUNK;
        const uint8_t xa = ea[i / fa->block], xb = eb[i / fb->block];
        if (xa == CS_BFP_EXP_SPECIAL || xb == CS_BFP_EXP_SPECIAL) {
            float s = 0.0f;
            for (int64_t j = 0; j < len; j++)
                s += decode_one(fa->mbits, qa[i + j], xa) * decode_one(fb->mbits, qb[i + j], xb);
            acc += s;
            continue;
        }
        if (xa == CS_BFP_EXP_ZERO || xb == CS_BFP_EXP_ZERO)
            continue;
        int32_t s;
        if (len == CS_BFP_CHUNK) {
            s = idot64(qa + i, qb + i);
        } else {
            s = 0;
            for (int64_t j = 0; j < len; j++)
                s += (int32_t)qa[i + j] * qb[i + j];
        }
        const int k = (int)xa - 127 - (fa->mbits - 2) + (int)xb - 127 - (fb->mbits - 2);
        acc += (float)((double)s * pow2(k));
    }
    return acc;
}

float cs_poly2_exp_parts(float x, int *k)
{
    const float c1 = 1.015082f, c2 = 0.503765f;
    *k = 0;
    if (isnan(x))
        return NAN;
    if (x > 1e5f) /* far past fp32's range either way: inf and 0, as expf gives */
        return INFINITY;
    if (x < -1e5f)
        return 0.0f;
    /* the range reduction of a Cody-Waite split, done in double on the host */
    double kd = nearbyint((double)x * 1.4426950408889634);
    float r = (float)((double)x - kd * 0.69314718055994531);
    *k = (int)kd;
    return 1.0f + r * (c1 + c2 * r);
}

float cs_poly2_exp(float x)
{
    int k;
    float m = cs_poly2_exp_parts(x, &k);
    return ldexpf(m, k);
}
