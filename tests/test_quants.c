/* test_quants.c: proves the number formats (backends/quants.c): fp16/bf16 conversions round
 * to nearest even and keep inf/NaN; every block type decodes to the value its format
 * definition gives (blocks are packed here, element by element, from known codes and
 * scales, and the expected values are computed here from those codes); fq_dot_ref matches;
 * quantize -> dequantize stays within the error bound the format allows; bad input fails. */
#include <float.h>
#include <math.h>

#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "tests/testutil.h"

/* Check's ck_assert reports every PASSING check to the runner (a write per call): inside
 * loops over thousands of elements these report failures only. */
#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond))                                                                           \
            ck_abort_msg("check failed: %s", #cond);                                           \
    } while (0)
#define CHECKM(cond, fmt, ...)                                                                 \
    do {                                                                                       \
        if (!(cond))                                                                           \
            ck_abort_msg(fmt, ##__VA_ARGS__);                                                  \
    } while (0)

/* An fp16 decoder written from the definition (sign, 5-bit exponent, 10-bit fraction),
 * independent of the library's bit shuffling. */
static double half_val(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = ldexp(m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

static uint16_t f2u16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

START_TEST(test_f16_cases)
{
    ck_assert_uint_eq(fq_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(fq_f32_to_f16(-2.0f), 0xc000);
    ck_assert_uint_eq(fq_f32_to_f16(0.0f), 0x0000);
    ck_assert_uint_eq(fq_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(fq_f32_to_f16(65504.0f), 0x7bff);   /* largest finite */
    ck_assert_uint_eq(fq_f32_to_f16(65519.0f), 0x7bff);   /* below the midpoint */
    ck_assert_uint_eq(fq_f32_to_f16(65520.0f), 0x7c00);   /* tie, odd -> rounds up to inf */
    ck_assert_uint_eq(fq_f32_to_f16(1e10f), 0x7c00);
    ck_assert_uint_eq(fq_f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(fq_f32_to_f16(-INFINITY), 0xfc00);
    /* ties to even at 1: 1 + 2^-11 is halfway between 0x3c00 (even) and 0x3c01 */
    ck_assert_uint_eq(fq_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);
    ck_assert_uint_eq(fq_f32_to_f16(1.0f + 3 * 0x1p-11f), 0x3c02);
    ck_assert_uint_eq(fq_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
    /* subnormals: 2^-24 is the smallest; 2^-25 ties to 0 (even), 3*2^-25 ties to 2 */
    ck_assert_uint_eq(fq_f32_to_f16(0x1p-24f), 0x0001);
    ck_assert_uint_eq(fq_f32_to_f16(0x1p-25f), 0x0000);
    ck_assert_uint_eq(fq_f32_to_f16(0x1.000002p-25f), 0x0001);
    ck_assert_uint_eq(fq_f32_to_f16(3 * 0x1p-25f), 0x0002);
    ck_assert_uint_eq(fq_f32_to_f16(-0x1p-24f), 0x8001);
    ck_assert_uint_eq(fq_f32_to_f16(0x1p-14f), 0x0400);   /* smallest normal */
    ck_assert_uint_eq(fq_f32_to_f16(0x1.ffcp-15f), 0x0400); /* 1023.5 * 2^-24: tie, up to it */
    ck_assert_uint_eq(fq_f32_to_f16(0x1.ff8p-15f), 0x03ff); /* exactly 1023 * 2^-24 */
    ck_assert_uint_eq(fq_f32_to_f16(1e-30f), 0x0000);
    ck_assert_uint_eq(fq_f32_to_f16(bits_f(0x00000001u)), 0x0000);
    uint16_t n = fq_f32_to_f16(NAN);
    ck_assert_uint_eq(n & 0x7c00, 0x7c00);
    ck_assert_uint_ne(n & 0x3ff, 0);
    /* a signalling NaN whose payload lives only in low bits must stay a NaN */
    n = fq_f32_to_f16(bits_f(0x7f800001u));
    ck_assert_uint_ne(n & 0x3ff, 0);
    CHECK(isnan(fq_f16_to_f32(0x7e00)));
    CHECK(isinf(fq_f16_to_f32(0xfc00)) && fq_f16_to_f32(0xfc00) < 0);
    CHECK(fq_f16_to_f32(0x0001) == 0x1p-24f);
    CHECK(fq_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(signbit(fq_f16_to_f32(0x8000)));
}
END_TEST

/* Every half decodes to the value the definition gives, and encodes back to itself. */
START_TEST(test_f16_all)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fq_f16_to_f32((uint16_t)h);
        double want = half_val((uint16_t)h);
        if (isnan(want)) {
            CHECK(isnan(f));
            continue;
        }
        CHECKM((double)f == want, "h=%04x", h);
        uint16_t back = fq_f32_to_f16(f);
        CHECKM(back == h, "h=%04x back=%04x", h, back);
    }
}
END_TEST

/* Random floats: the encoded half is the nearest one (ties to even), checked by comparing
 * distances to both neighbours in double. */
START_TEST(test_f16_random)
{
    uint64_t s = 11;
    for (int i = 0; i < 200000; i++) {
        uint32_t u = (uint32_t)tu_rand64(&s);
        /* exponents around half's range, including subnormal and overflow territory */
        u = (u & 0x807fffffu) | ((uint32_t)(100 + (int)(tu_rand64(&s) % 45)) << 23);
        float f = bits_f(u);
        uint16_t h = fq_f32_to_f16(f);
        double v = half_val(h);
        if (isinf(v)) {
            CHECK(fabs((double)f) >= 65520.0);
            continue;
        }
        double err = fabs(v - (double)f);
        /* neighbours of h toward and away from zero */
        uint16_t up = (uint16_t)(h + 1), dn = (uint16_t)(h - 1);
        if ((h & 0x7fff) != 0x7bff) {
            double e2 = fabs(half_val(up) - (double)f);
            CHECKM(err < e2 || (err == e2 && !(h & 1)), "f=%a h=%04x", (double)f, h);
        }
        if ((h & 0x7fff) != 0) {
            double e2 = fabs(half_val(dn) - (double)f);
            CHECKM(err < e2 || (err == e2 && !(h & 1)), "f=%a h=%04x", (double)f, h);
        }
    }
#ifdef __FLT16_MAX__
    /* and agrees with the compiler's own conversion where it has one */
    s = 12;
    for (int i = 0; i < 100000; i++) {
        float f = bits_f((uint32_t)tu_rand64(&s));
        if (isnan(f))
            continue;
        _Float16 c = (_Float16)f;
        uint16_t cb;
        memcpy(&cb, &c, 2);
        CHECKM(fq_f32_to_f16(f) == cb, "f=%a", (double)f);
    }
#endif
}
END_TEST

START_TEST(test_bf16)
{
    ck_assert_uint_eq(fq_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(fq_f32_to_bf16(bits_f(0x3f808000u)), 0x3f80); /* tie -> even */
    ck_assert_uint_eq(fq_f32_to_bf16(bits_f(0x3f818000u)), 0x3f82); /* tie -> even (up) */
    ck_assert_uint_eq(fq_f32_to_bf16(bits_f(0x3f808001u)), 0x3f81);
    ck_assert_uint_eq(fq_f32_to_bf16(bits_f(0x3f807fffu)), 0x3f80);
    ck_assert_uint_eq(fq_f32_to_bf16(INFINITY), 0x7f80);
    ck_assert_uint_eq(fq_f32_to_bf16(-INFINITY), 0xff80);
    ck_assert_uint_eq(fq_f32_to_bf16(FLT_MAX), 0x7f80); /* rounds past the largest: inf */
    ck_assert_uint_eq(fq_f32_to_bf16(-0.0f), 0x8000);
    uint16_t n = fq_f32_to_bf16(bits_f(0x7f800001u)); /* would truncate to inf */
    CHECK(isnan(fq_bf16_to_f32(n)));
    CHECK(isnan(fq_bf16_to_f32(fq_f32_to_bf16(NAN))));
    CHECK(fq_bf16_to_f32(0x4049) == 3.140625f);
    uint64_t s = 5;
    for (int i = 0; i < 100000; i++) {
        float f = bits_f((uint32_t)tu_rand64(&s) & 0xbfffffffu); /* finite, |f| < 2 */
        if (fabsf(f) < FLT_MIN)
            continue; /* subnormals keep fewer bits: the relative bound does not hold */
        uint16_t b = fq_f32_to_bf16(f);
        double err = fabs((double)fq_bf16_to_f32(b) - (double)f);
        CHECK(err <= ldexp(fabs((double)f), -8));
        ck_assert_uint_eq(b, fq_f32_to_bf16(fq_bf16_to_f32(b)));
        (void)f2u16;
    }
}
END_TEST

/* ---- blocks packed from known codes --------------------------------------------------- */

/* Random fp16 scale with a value of magnitude 2^lo..2^hi. */
static uint16_t rand_half(uint64_t *s, int lo, int hi, int allow_neg)
{
    int e = lo + (int)(tu_rand64(s) % (uint64_t)(hi - lo + 1));
    uint16_t h = (uint16_t)(((e + 15) << 10) | (tu_rand64(s) & 1023));
    if (allow_neg && (tu_rand64(s) & 1))
        h |= 0x8000;
    return h;
}

static int rint_(uint64_t *s, int lo, int hi)
{
    return lo + (int)(tu_rand64(s) % (uint64_t)(hi - lo + 1));
}

static void set_nib(uint8_t *p, int hi, int v)
{
    *p = hi ? (uint8_t)((*p & 0x0f) | (v << 4)) : (uint8_t)((*p & 0xf0) | v);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* IQ4_NL / IQ4_XS's 16 grid values, as ggml's kvalues_iq4nl lists them. */
static const int iq4_grid[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                 1, 13, 25, 38, 53, 69, 89, 113};

/* An E2M1 (OCP FP4) decoder from the definition: bit 3 sign, bits 2..1 exponent (bias 1),
 * bit 0 mantissa; exponent 0 is subnormal (0 or 0.5). */
static double e2m1_val(int q)
{
    int sg = q >> 3, ex = (q >> 1) & 3, m = q & 1;
    double v = ex == 0 ? 0.5 * m : ldexp(1.0 + 0.5 * m, ex - 1);
    return sg ? -v : v;
}

/* Packs one random block of type into blk and writes its elements' values (computed from
 * the codes by the format definition) to want.  Layout offsets are ggml's block structs. */
static void make_block(int type, uint64_t *s, uint8_t *blk, double *want)
{
    memset(blk, 0, (size_t)gg_block_bytes(type));
    switch (type) {
    case GG_Q4_0: case GG_Q4_1: case GG_Q5_0: case GG_Q5_1: {
        int has_m = type == GG_Q4_1 || type == GG_Q5_1, five = type == GG_Q5_0 || type == GG_Q5_1;
        uint16_t d = rand_half(s, -12, 2, 1), m = rand_half(s, -8, 1, 1);
        put16(blk, d);
        if (has_m)
            put16(blk + 2, m);
        uint8_t *qh = blk + (has_m ? 4 : 2), *qs = qh + (five ? 4 : 0);
        for (int i = 0; i < 32; i++) {
            int q = rint_(s, 0, five ? 31 : 15);
            set_nib(&qs[i % 16], i / 16, q & 15);
            if (five && (q & 16))
                qh[i / 8] |= (uint8_t)(1u << (i % 8)); /* bit i of the LE 32-bit word */
            double off = has_m ? 0 : (five ? 16 : 8);
            want[i] = half_val(d) * (q - off) + (has_m ? half_val(m) : 0);
        }
        break;
    }
    case GG_Q8_0: case GG_Q8_1: {
        uint16_t d = rand_half(s, -12, 2, 1);
        put16(blk, d);
        int8_t *qs = (int8_t *)(blk + (type == GG_Q8_1 ? 4 : 2));
        for (int i = 0; i < 32; i++) {
            qs[i] = (int8_t)rint_(s, -128, 127);
            want[i] = half_val(d) * qs[i];
        }
        break;
    }
    case GG_Q8_K: {
        float d = ldexpf((float)rint_(s, 1, 1000), -rint_(s, 10, 20));
        memcpy(blk, &d, 4);
        int8_t *qs = (int8_t *)(blk + 4);
        for (int i = 0; i < 256; i++) {
            qs[i] = (int8_t)rint_(s, -128, 127);
            want[i] = (double)d * qs[i];
        }
        break;
    }
    case GG_Q2_K: case GG_Q3_K: {
        /* Q2_K: scales[16] qs[64] d dmin.  Q3_K: hmask[32] qs[64] scales[12] d. */
        int three = type == GG_Q3_K;
        uint8_t *hm = blk, *qs = three ? blk + 32 : blk + 16;
        uint16_t d = rand_half(s, -12, -4, 1), dmin = rand_half(s, -12, -4, 0);
        put16(three ? blk + 108 : blk + 80, d);
        if (!three)
            put16(blk + 82, dmin);
        int sc[16], mn[16];
        for (int b = 0; b < 16; b++) {
            sc[b] = rint_(s, 0, three ? 63 : 15);
            mn[b] = rint_(s, 0, 15);
            if (three) {
                uint8_t *S = blk + 96;
                set_nib(&S[b % 8], b / 8, sc[b] & 15);
                S[8 + b % 4] |= (uint8_t)((sc[b] >> 4) << (2 * (b / 4)));
            } else {
                blk[b] = (uint8_t)(sc[b] | (mn[b] << 4));
            }
        }
        for (int i = 0; i < 256; i++) {
            int q = rint_(s, 0, three ? 7 : 3);
            int h = i / 128, j = (i % 128) / 32, l = i % 32;
            qs[32 * h + l] |= (uint8_t)((q & 3) << (2 * j));
            if (three && (q & 4))
                hm[l] |= (uint8_t)(1u << (i / 32));
            int b = i / 16;
            want[i] = three ? half_val(d) * (sc[b] - 32) * (q - 4)
                            : half_val(d) * sc[b] * q - half_val(dmin) * mn[b];
        }
        break;
    }
    case GG_Q4_K: case GG_Q5_K: {
        /* d dmin scales[12] (qh[32]) qs[128] */
        int five = type == GG_Q5_K;
        uint16_t d = rand_half(s, -12, -4, 1), dmin = rand_half(s, -12, -4, 0);
        put16(blk, d);
        put16(blk + 2, dmin);
        uint8_t *S = blk + 4, *qh = blk + 16, *qs = blk + (five ? 48 : 16);
        int sc[8], mn[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = rint_(s, 0, 63);
            mn[j] = rint_(s, 0, 63);
            if (j < 4) {
                S[j] |= (uint8_t)sc[j];
                S[j + 4] |= (uint8_t)mn[j];
            } else {
                S[j + 4] |= (uint8_t)((sc[j] & 15) | ((mn[j] & 15) << 4));
                S[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
                S[j] |= (uint8_t)((mn[j] >> 4) << 6);
            }
        }
        for (int i = 0; i < 256; i++) {
            int q = rint_(s, 0, five ? 31 : 15);
            int p = i / 64, hi = (i / 32) & 1, l = i % 32;
            set_nib(&qs[32 * p + l], hi, q & 15);
            if (five && (q & 16))
                qh[l] |= (uint8_t)(1u << (i / 32));
            want[i] = half_val(d) * sc[i / 32] * q - half_val(dmin) * mn[i / 32];
        }
        break;
    }
    case GG_Q6_K: {
        /* ql[128] qh[64] scales[16] d */
        uint16_t d = rand_half(s, -14, -6, 1);
        put16(blk + 208, d);
        int8_t *sc = (int8_t *)(blk + 192);
        for (int b = 0; b < 16; b++)
            sc[b] = (int8_t)rint_(s, -128, 127);
        for (int i = 0; i < 256; i++) {
            int q = rint_(s, 0, 63);
            int h = i / 128, k = (i % 128) / 32, l = i % 32;
            set_nib(&blk[64 * h + l + 32 * (k & 1)], k >= 2, q & 15);
            blk[128 + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
            want[i] = half_val(d) * sc[i / 16] * (q - 32);
        }
        break;
    }
    case GG_IQ4_NL: case GG_IQ4_XS: {
        /* IQ4_NL: d qs[16].  IQ4_XS: d scales_h(16 bits) scales_l[4] qs[128]. */
        int xs = type == GG_IQ4_XS;
        uint16_t d = rand_half(s, -12, -4, 1);
        put16(blk, d);
        int ls[8] = {33, 33, 33, 33, 33, 33, 33, 33}; /* IQ4_NL: d itself (33 - 32 = 1) */
        uint8_t *qs = blk + (xs ? 8 : 2);
        if (xs) {
            uint16_t sh = 0;
            for (int j = 0; j < 8; j++) {
                ls[j] = rint_(s, 0, 63);
                set_nib(&blk[4 + j / 2], j % 2, ls[j] & 15);
                sh |= (uint16_t)((ls[j] >> 4) << (2 * j));
            }
            put16(blk + 2, sh);
        }
        for (int i = 0; i < (xs ? 256 : 32); i++) {
            int q = rint_(s, 0, 15), sb = i / 32, l = i % 32;
            set_nib(&qs[16 * sb + l % 16], l / 16, q);
            want[i] = half_val(d) * (ls[sb] - 32) * iq4_grid[q];
        }
        break;
    }
    case GG_MXFP4: {
        /* e qs[16]; the scale 2^(e-127) times the E2M1 value of each code */
        int e = rint_(s, 100, 160);
        blk[0] = (uint8_t)e;
        for (int i = 0; i < 32; i++) {
            int q = rint_(s, 0, 15);
            set_nib(&blk[1 + i % 16], i / 16, q);
            want[i] = ldexp(e2m1_val(q), e - 127);
        }
        break;
    }
    case GG_F16: {
        uint16_t h = rand_half(s, -14, 15, 1);
        put16(blk, h);
        want[0] = half_val(h);
        break;
    }
    case GG_BF16: {
        uint16_t h = (uint16_t)(tu_rand64(s) & 0xbfff); /* finite */
        put16(blk, h);
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        want[0] = f;
        break;
    }
    case GG_F32: {
        float f = tu_randf(s) * 100;
        memcpy(blk, &f, 4);
        want[0] = f;
        break;
    }
    default:
        ck_abort_msg("no block maker for %d", type);
    }
}

static const int dq_types[] = {GG_F32, GG_F16, GG_BF16, GG_Q8_0, GG_Q8_1, GG_Q4_0, GG_Q4_1,
                               GG_Q5_0, GG_Q5_1, GG_Q2_K, GG_Q3_K, GG_Q4_K, GG_Q5_K, GG_Q6_K,
                               GG_Q8_K,
                               GG_IQ4_NL, GG_IQ4_XS, GG_MXFP4};

START_TEST(test_dequant_known)
{
    int type = dq_types[_i];
    CHECK(fq_type_supported(type));
    uint64_t s = 1000 + (uint64_t)type;
    int be = gg_block_elems(type), bb = gg_block_bytes(type);
    int nblk = be == 1 ? 300 : 7;
    int64_t n = (int64_t)nblk * be;
    uint8_t *raw = malloc((size_t)nblk * (size_t)bb);
    double *want = malloc((size_t)n * sizeof(double));
    float *got = malloc((size_t)n * sizeof(float)), *x = malloc((size_t)n * sizeof(float));
    for (int b = 0; b < nblk; b++)
        make_block(type, &s, raw + (size_t)b * (size_t)bb, want + (int64_t)b * be);
    ck_assert_int_eq(fq_dequantize_row(type, raw, got, n), 0);
    double dot = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) {
        /* each value is a product of at most three exact factors: float keeps it to 2^-23 */
        double tol = fabs(want[i]) * 0x1p-22 + 1e-30;
        CHECKM(fabs((double)got[i] - want[i]) <= tol, "%s elem %lld: got %.9g want %.9g",
                      gg_type_name(type), (long long)i, (double)got[i], want[i]);
        x[i] = tu_randf(&s);
        dot += want[i] * x[i];
        mag += fabs(want[i] * x[i]);
    }
    double d = fq_dot_ref(type, raw, x, n);
    CHECKM(fabs(d - dot) <= mag * 1e-6 + 1e-30, "%s dot %.12g want %.12g",
                  gg_type_name(type), d, dot);
    free(raw);
    free(want);
    free(got);
    free(x);
}
END_TEST

/* ---- quantize -> dequantize bounds ---------------------------------------------------- */

/* Inputs: smooth random values with a few large outliers, and per-block magnitudes that vary
 * over several orders (as weight rows do). */
static void fill_input(uint64_t *s, float *x, int64_t n, int group)
{
    float mag = 1;
    for (int64_t i = 0; i < n; i++) {
        if (i % group == 0)
            mag = ldexpf(1.f, rint_(s, -6, 4)); /* keeps fp16 scales normal */
        x[i] = tu_randf(s) * mag;
        if (tu_rand64(s) % 97 == 0)
            x[i] *= 6;
    }
}

static float blk_absmax(const float *x, int n)
{
    float m = 0;
    for (int i = 0; i < n; i++)
        m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* fp16 keeps 11 significant bits: relative rounding of a stored scale <= 2^-11. */
#define H_REL 0x1p-11

START_TEST(test_roundtrip_legacy)
{
    uint64_t s = 77;
    const int64_t n = 32 * 64;
    float x[32 * 64], y[32 * 64];
    uint8_t buf[64 * 36];
    static const int types[] = {GG_Q8_0, GG_Q8_1, GG_Q4_0, GG_Q4_1, GG_Q5_0, GG_Q5_1};
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        int type = types[t];
        fill_input(&s, x, n, 32);
        ck_assert_int_eq(fq_quantize_row(type, x, buf, n), 0);
        ck_assert_int_eq(fq_dequantize_row(type, buf, y, n), 0);
        for (int b = 0; b < n / 32; b++) {
            const float *xb = x + 32 * b;
            float amax = blk_absmax(xb, 32), lo = xb[0], hi = xb[0];
            for (int i = 1; i < 32; i++) {
                lo = fminf(lo, xb[i]);
                hi = fmaxf(hi, xb[i]);
            }
            double bound;
            switch (type) {
            case GG_Q8_0: case GG_Q8_1:
                /* step d = amax/127: rounding costs d/2; the fp16 d is off by <= d*2^-11,
                 * times |q| <= 127 */
                bound = amax / 127.0 * (0.5 + 127 * H_REL);
                break;
            case GG_Q4_0:
                /* d = amax/8 maps the extreme to -8; the opposite extreme (+8) clamps to +7,
                 * a full step: d, plus 8 steps of fp16 error in d */
                bound = amax / 8.0 * (1.0 + 8 * H_REL);
                break;
            case GG_Q5_0:
                bound = amax / 16.0 * (1.0 + 16 * H_REL);
                break;
            default: { /* Q4_1, Q5_1: d = range/levels, half a step, fp16 error of d and m */
                double lv = type == GG_Q4_1 ? 15 : 31, d = (hi - lo) / lv;
                bound = d * (0.5 + lv * H_REL) + fabs(lo) * H_REL;
                break;
            }
            }
            bound = bound * (1 + 1e-5) + 1e-30;
            for (int i = 0; i < 32; i++)
                CHECKM(fabs((double)y[32 * b + i] - xb[i]) <= bound,
                              "%s blk %d: x=%g y=%g bound %g", gg_type_name(type), b,
                              (double)xb[i], (double)y[32 * b + i], bound);
        }
    }
}
END_TEST

START_TEST(test_roundtrip_kquants)
{
    uint64_t s = 78;
    const int64_t n = 256 * 24;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    uint8_t *buf = malloc((size_t)(n / 256) * 292);
    static const int types[] = {GG_Q4_K, GG_Q5_K, GG_Q6_K, GG_Q8_K};
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        int type = types[t];
        /* magnitudes vary per super-block, as between weight rows (within one, a sub-block
         * 1000x smaller than the largest gets scale code 0: a property of the format) */
        fill_input(&s, x, n, 256);
        ck_assert_int_eq(fq_quantize_row(type, x, buf, n), 0);
        ck_assert_int_eq(fq_dequantize_row(type, buf, y, n), 0);
        double se = 0, sx = 0, snoise = 0;
        for (int64_t b = 0; b < n / 256; b++) {
            const uint8_t *blk = buf + b * gg_block_bytes(type);
            for (int i = 0; i < 256; i++) {
                int64_t k = 256 * b + i;
                double err = fabs((double)y[k] - x[k]), step = 0, lo = 0, hi = 0;
                if (type == GG_Q4_K || type == GG_Q5_K) {
                    /* the same head: d, dmin, scales[12] */
                    const fq_block_q4_K *q = (const fq_block_q4_K *)blk;
                    uint8_t sc, m;
                    fq_scale_min_k4(i / 32, q->scales, &sc, &m);
                    step = half_val(q->d) * sc;
                    lo = -half_val(q->dmin) * m;
                    hi = lo + (type == GG_Q4_K ? 15 : 31) * step;
                } else if (type == GG_Q6_K) {
                    const fq_block_q6_K *q = (const fq_block_q6_K *)blk;
                    double dd = half_val(q->d) * q->scales[i / 16];
                    step = fabs(dd);
                    lo = fmin(-32 * dd, 31 * dd);
                    hi = fmax(-32 * dd, 31 * dd);
                } else {
                    const fq_block_q8_K *q = (const fq_block_q8_K *)blk;
                    step = fabs(q->d);
                    lo = -128 * step;
                    hi = 127 * step;
                }
                double tol = step * 1e-5 + fabs(x[k]) * 1e-6 + 1e-30;
                /* inside the code range an element is rounded to the nearest step of its
                 * sub-block's stored scale (half a step at most); outside it, it becomes the
                 * nearer end of the range */
                if (x[k] < lo - step / 2)
                    CHECKM(fabs(y[k] - lo) <= tol, "%s elem %lld below range", gg_type_name(type), (long long)k);
                else if (x[k] > hi + step / 2)
                    CHECKM(fabs(y[k] - hi) <= tol, "%s elem %lld above range", gg_type_name(type), (long long)k);
                else
                    CHECKM(err <= step * 0.5 + tol, "%s elem %lld err %g step %g",
                                  gg_type_name(type), (long long)k, err, step);
                se += err * err;
                sx += (double)x[k] * x[k];
                snoise += step * step / 12;
            }
        }
        /* rounding to a grid of step h leaves uniform noise of variance h^2/12: the
         * squared error must be about the sum of that over elements (clamped extremes add
         * a little; 1.3x allows for them) */
        CHECKM(se <= 1.3 * 1.3 * snoise, "%s error %g above rounding noise %g",
                      gg_type_name(type), sqrt(se), sqrt(snoise));
        /* and the fit is good: the relative RMS error of uniform rounding with a step of
         * about range/15 (Q4_K), range/31 (Q5_K), range/63 (Q6_K), range/254 (Q8_K), for a
         * range of +-amax and rms(x) = amax/sqrt(3), is 2/levels/sqrt(12)*sqrt(3) =
         * 1/levels: 0.067, 0.032, 0.016, 0.004.  The 6x outliers (about 1 in 97 elements)
         * widen the range: Q8_K's one scale per 256 nearly always holds one (up to 6x:
         * 0.024); the small sub-blocks of Q4_K / Q5_K (32) and Q6_K (16) less often (allow
         * 1.5x and 2x: 0.1, 0.05, 0.03). */
        double rel = sqrt(se / sx);
        double lim = type == GG_Q4_K ? 0.1 : type == GG_Q5_K ? 0.05 : type == GG_Q6_K ? 0.03 : 0.024;
        CHECKM(rel <= lim, "%s rms rel err %g > %g", gg_type_name(type), rel, lim);
    }
    free(x);
    free(y);
    free(buf);
}
END_TEST

/* Values that a format can represent come back from quantizing: dequantized blocks
 * re-quantize to the same values (the scale fit finds the grid it was given).  Exactly for
 * Q4_K; Q5_K's sub-blocks of 32 elements on 32 levels often leave the lowest code unused,
 * and the fit then takes the lowest value for the min, whose 6-bit code differs from the
 * grid's (3% of the sub-blocks here), so it is held to 90% of its sub-blocks.  A mistake in
 * packing Q5_K's fifth bit (qh, apart from the nibbles) moves nearly every sub-block. */
START_TEST(test_requantize_exact)
{
    static const int types[] = {GG_Q4_K, GG_Q5_K};
    uint64_t s = 80;
    const int64_t n = 256 * 16;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    float *z = malloc(sizeof(float) * (size_t)n);
    uint8_t *buf = malloc((size_t)(n / 256) * 292);
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        int type = types[t];
        fill_input(&s, x, n, 256);
        ck_assert_int_eq(fq_quantize_row(type, x, buf, n), 0);
        ck_assert_int_eq(fq_dequantize_row(type, buf, y, n), 0);
        ck_assert_int_eq(fq_quantize_row(type, y, buf, n), 0);
        ck_assert_int_eq(fq_dequantize_row(type, buf, z, n), 0);
        int64_t bad = 0;
        for (int64_t j = 0; j < n / 32; j++)
            for (int l = 0; l < 32; l++)
                if (z[32 * j + l] != y[32 * j + l]) {
                    bad++;
                    break;
                }
        CHECKM(bad <= (type == GG_Q4_K ? 0 : n / 32 / 10), "%s: %lld of %lld sub-blocks moved "
               "on re-quantizing", gg_type_name(type), (long long)bad, (long long)(n / 32));
    }
    free(x);
    free(y);
    free(z);
    free(buf);
}
END_TEST

/* MXFP4's scale byte over its whole range, at the edges too (e < 2: the products are binary32
 * subnormals; 252 is the largest e whose 6 x scale stays finite): every code decodes exactly to
 * the E2M1 value times 2^(e - 127), both computed here from the definitions. */
START_TEST(test_mxfp4_scales)
{
    for (int e = 0; e < 256; e++)
        CHECKM((double)fq_e8m0_half((uint8_t)e) == ldexp(1.0, e - 128), "e8m0 %d", e);
    static const int es[] = {0, 1, 2, 3, 100, 126, 127, 128, 200, 251, 252};
    for (size_t k = 0; k < FD_ARRAY_LEN(es); k++) {
        uint8_t blk[17];
        float y[32];
        blk[0] = (uint8_t)es[k];
        for (int i = 0; i < 16; i++)
            blk[1 + i] = (uint8_t)(i | (15 - i) << 4); /* every code, twice */
        ck_assert_int_eq(fq_dequantize_row(GG_MXFP4, blk, y, 32), 0);
        for (int i = 0; i < 32; i++) {
            int q = i < 16 ? i : 15 - (i - 16);
            double want = ldexp(e2m1_val(q), es[k] - 127);
            CHECKM((double)y[i] == want, "e %d code %d: got %a want %a", es[k], q,
                   (double)y[i], want);
        }
    }
}
END_TEST

/* The decoded value of element i of a quantized IQ4_NL / IQ4_XS / MXFP4 block's grid entry
 * v (0..15), and the block's scale, read from the bytes with the test's own decoders. */
static double iq_scale(int type, const uint8_t *blk, int i)
{
    if (type == GG_MXFP4)
        return ldexp(1.0, blk[0] - 127);
    uint16_t d = (uint16_t)(blk[0] | blk[1] << 8);
    if (type == GG_IQ4_NL)
        return half_val(d);
    int sb = i / 32;
    int ls = ((blk[4 + sb / 2] >> (4 * (sb % 2))) & 15) | (((blk[2] | blk[3] << 8) >> (2 * sb)) & 3) << 4;
    return half_val(d) * (ls - 32);
}

static double iq_grid(int type, int v)
{
    return type == GG_MXFP4 ? e2m1_val(v) : iq4_grid[v];
}

/* Quantizing to IQ4_NL, IQ4_XS and MXFP4: every element takes the grid value nearest to it
 * for the scale its block stores (so the stored scale is the one the codes were rounded
 * against); MXFP4's exponent is floor(log2 amax) - 2 (ggml's choice: the largest element
 * lands in [4, 8) x 2^(e-127), and may clip to 6); and the fit is good: the RMS error of
 * IQ4_NL is well below Q4_0's on the same data (the non-linear grid and the scale search
 * are what it exists for: 0.76x here), IQ4_XS's too and within 5% of IQ4_NL's (its 6-bit
 * sub-block scales cost little), and MXFP4's (a power-of-two scale, up to 2x coarser than
 * needed, and a grid with steps of 2 at its top) within 1.6x of Q4_0's (1.18x here). */
START_TEST(test_roundtrip_iq)
{
    uint64_t s = 81;
    const int64_t n = 256 * 32;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    uint8_t *buf = malloc((size_t)(n / 32) * 40);
    static const int types[] = {GG_IQ4_NL, GG_IQ4_XS, GG_MXFP4};
    fill_input(&s, x, n, 256);
    double rel[3];
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        int type = types[t], be = gg_block_elems(type), bb = gg_block_bytes(type);
        ck_assert_int_eq(fq_quantize_row(type, x, buf, n), 0);
        ck_assert_int_eq(fq_dequantize_row(type, buf, y, n), 0);
        double se = 0, sx = 0;
        for (int64_t k = 0; k < n; k++) {
            const uint8_t *blk = buf + (k / be) * bb;
            double sc = iq_scale(type, blk, (int)(k % be)), best = INFINITY;
            for (int v = 0; v < 16; v++)
                best = fmin(best, fabs(sc * iq_grid(type, v) - x[k]));
            double err = fabs((double)y[k] - x[k]);
            CHECKM(err <= best * (1 + 1e-6) + fabs(sc) * 1e-6 + 1e-30,
                   "%s elem %lld: err %g, nearest grid value %g away", gg_type_name(type),
                   (long long)k, err, best);
            se += err * err;
            sx += (double)x[k] * x[k];
        }
        if (type == GG_MXFP4)
            for (int64_t b = 0; b < n / 32; b++) {
                double amax = blk_absmax(x + 32 * b, 32);
                int want = (int)floor(log2(amax)) - 2 + 127;
                CHECKM(buf[b * bb] == want, "MXFP4 block %lld: e %d want %d", (long long)b,
                       buf[b * bb], want);
            }
        rel[t] = sqrt(se / sx);
    }
    ck_assert_int_eq(fq_quantize_row(GG_Q4_0, x, buf, n), 0);
    ck_assert_int_eq(fq_dequantize_row(GG_Q4_0, buf, y, n), 0);
    double se = 0, sx = 0;
    for (int64_t k = 0; k < n; k++) {
        se += ((double)y[k] - x[k]) * ((double)y[k] - x[k]);
        sx += (double)x[k] * x[k];
    }
    double q40 = sqrt(se / sx); /* 0.123 here; IQ4_NL 0.094, IQ4_XS 0.095, MXFP4 0.145 */
    CHECKM(rel[0] < 0.85 * q40, "IQ4_NL rms rel err %g, Q4_0 %g", rel[0], q40);
    CHECKM(rel[1] < 0.85 * q40 && rel[1] < 1.05 * rel[0], "IQ4_XS rms rel err %g, Q4_0 %g, "
           "IQ4_NL %g", rel[1], q40, rel[0]);
    CHECKM(rel[2] < 1.6 * q40, "MXFP4 rms rel err %g, Q4_0 %g", rel[2], q40);
    free(x);
    free(y);
    free(buf);
}
END_TEST

/* Q2_K and Q3_K: every element is its sub-block's nearest grid point under the stored
 * scales (so the packing of codes, third bits and scales agrees with dequantization), and
 * the scale search pays: the relative RMS error is below that of the plain grid (Q2_K: min
 * to max in 3 steps, Q3_K: the largest element at -4 steps) even with float scales, and
 * within bounds measured on this input (ggml's reference quantizers give about the same:
 * 0.24 / 0.125 on uniform, 0.30 / 0.15 on normal inputs). */
START_TEST(test_roundtrip_q23k)
{
    static const int types[] = {GG_Q2_K, GG_Q3_K};
    uint64_t s = 81;
    const int64_t n = 256 * 32;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    uint8_t *buf = malloc((size_t)(n / 256) * 110);
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        const int type = types[t], three = type == GG_Q3_K;
        for (int dist = 0; dist < 2; dist++) {
            if (dist == 0) {
                fill_input(&s, x, n, 256);
            } else { /* normal (Box-Muller), the shape of most weight rows */
                for (int64_t i = 0; i < n; i++) {
                    double u1 = (tu_randf(&s) + 1) / 2 + 1e-12, u2 = (tu_randf(&s) + 1) / 2;
                    x[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
                }
            }
            ck_assert_int_eq(fq_quantize_row(type, x, buf, n), 0);
            ck_assert_int_eq(fq_dequantize_row(type, buf, y, n), 0);
            double se = 0, sx = 0, snaive = 0;
            for (int64_t b = 0; b < n / 256; b++) {
                const uint8_t *blk = buf + b * gg_block_bytes(type);
                int8_t sc3[16];
                if (three)
                    fq_q3k_scales(((const fq_block_q3_K *)blk)->scales, sc3);
                for (int j = 0; j < 16; j++) {
                    double step, lo, hi;
                    if (three) {
                        double dd = half_val(((const fq_block_q3_K *)blk)->d) * sc3[j];
                        step = fabs(dd);
                        lo = fmin(-4 * dd, 3 * dd);
                        hi = fmax(-4 * dd, 3 * dd);
                    } else {
                        const fq_block_q2_K *q = (const fq_block_q2_K *)blk;
                        step = half_val(q->d) * (q->scales[j] & 15);
                        lo = -half_val(q->dmin) * (q->scales[j] >> 4);
                        hi = lo + 3 * step;
                    }
                    const float *xs = x + 256 * b + 16 * j, *ys = y + 256 * b + 16 * j;
                    float mn = 0, mx = 0, amax = 0, smax = 0;
                    for (int l = 0; l < 16; l++) {
                        double err = fabs((double)ys[l] - xs[l]);
                        double tol = step * 1e-5 + fabs(xs[l]) * 1e-6 + 1e-30;
                        if (step == 0)
                            CHECKM(fabs(ys[l] - lo) <= tol, "%s elem %d: zero step", gg_type_name(type), l);
                        else if (xs[l] < lo - step / 2)
                            CHECKM(fabs(ys[l] - lo) <= tol, "%s blk %lld sub %d below range",
                                   gg_type_name(type), (long long)b, j);
                        else if (xs[l] > hi + step / 2)
                            CHECKM(fabs(ys[l] - hi) <= tol, "%s blk %lld sub %d above range",
                                   gg_type_name(type), (long long)b, j);
                        else
                            CHECKM(err <= step * 0.5 + tol, "%s blk %lld sub %d err %g step %g",
                                   gg_type_name(type), (long long)b, j, err, step);
                        se += err * err;
                        sx += (double)xs[l] * xs[l];
                        mn = fminf(mn, xs[l]);
                        mx = fmaxf(mx, xs[l]);
                        if (fabsf(xs[l]) > amax) {
                            amax = fabsf(xs[l]);
                            smax = xs[l];
                        }
                    }
                    for (int l = 0; l < 16; l++) { /* the plain grid, float scales */
                        double v = xs[l], e;
                        if (three) {
                            double d = smax / -4.0;
                            e = d != 0 ? fmin(3, fmax(-4, nearbyint(v / d))) * d - v : v;
                        } else {
                            double d = (mx - mn) / 3.0;
                            e = d != 0 ? fmin(3, fmax(0, nearbyint((v - mn) / d))) * d + mn - v : v;
                        }
                        snaive += e * e;
                    }
                }
            }
            double rel = sqrt(se / sx), naive = sqrt(snaive / sx);
            /* measured: Q2_K 0.305 / 0.293, Q3_K 0.156 / 0.151 (fill_input with its 6x
             * outliers / normal); the plain grid 0.327 / 0.329, 0.164 / 0.154 */
            double lim = three ? (dist ? 0.158 : 0.164) : (dist ? 0.308 : 0.32);
            CHECKM(rel <= lim, "%s input %d: rms rel err %g > %g", gg_type_name(type), dist, rel, lim);
            CHECKM(rel < naive, "%s input %d: rms rel err %g, the plain grid's %g",
                   gg_type_name(type), dist, rel, naive);
        }
    }
    free(x);
    free(y);
    free(buf);
}
END_TEST

START_TEST(test_roundtrip_float)
{
    uint64_t s = 79;
    float x[513], y[513];
    uint16_t h[513];
    for (int i = 0; i < 513; i++)
        x[i] = tu_randf(&s) * ldexpf(1, rint_(&s, -10, 10));
    ck_assert_int_eq(fq_quantize_row(GG_F16, x, h, 513), 0);
    ck_assert_int_eq(fq_dequantize_row(GG_F16, h, y, 513), 0);
    for (int i = 0; i < 513; i++) /* normal range: half an ulp of 11 bits */
        CHECK(fabs((double)y[i] - x[i]) <= fabs((double)x[i]) * 0x1p-11);
    ck_assert_int_eq(fq_quantize_row(GG_BF16, x, h, 513), 0);
    ck_assert_int_eq(fq_dequantize_row(GG_BF16, h, y, 513), 0);
    for (int i = 0; i < 513; i++)
        CHECK(fabs((double)y[i] - x[i]) <= fabs((double)x[i]) * 0x1p-8);
    float z[513];
    ck_assert_int_eq(fq_quantize_row(GG_F32, x, z, 513), 0);
    ck_assert_int_eq(memcmp(x, z, sizeof(z)), 0);
}
END_TEST

/* All-zero blocks stay zero (no division by a zero scale). */
START_TEST(test_zero_blocks)
{
    static const int types[] = {GG_Q8_0, GG_Q4_0, GG_Q4_1, GG_Q5_0, GG_Q5_1, GG_Q4_K, GG_Q5_K,
                                GG_Q6_K, GG_Q8_K,
                                GG_IQ4_NL, GG_IQ4_XS, GG_MXFP4,
                                GG_Q2_K, GG_Q3_K};
    float x[256] = {0}, y[256];
    uint8_t buf[300];
    for (size_t t = 0; t < FD_ARRAY_LEN(types); t++) {
        ck_assert_int_eq(fq_quantize_row(types[t], x, buf, 256), 0);
        ck_assert_int_eq(fq_dequantize_row(types[t], buf, y, 256), 0);
        for (int i = 0; i < 256; i++)
            CHECKM(y[i] == 0, "%s", gg_type_name(types[t]));
    }
}
END_TEST

START_TEST(test_bad_input)
{
    float x[64] = {0};
    uint8_t buf[300] = {0};
    ck_assert_int_eq(fq_dequantize_row(GG_Q8_0, buf, x, 33), -EINVAL);
    ck_assert_int_eq(fq_dequantize_row(GG_Q4_K, buf, x, 32), -EINVAL);
    ck_assert_int_eq(fq_dequantize_row(GG_I8, buf, x, 32), FD_EUNSUP);
    ck_assert_int_eq(fq_dequantize_row(4, buf, x, 32), FD_EUNSUP);
    ck_assert_int_eq(fq_dequantize_row(-1, buf, x, 32), FD_EUNSUP);
    ck_assert_int_eq(fq_quantize_row(GG_Q8_0, x, buf, 31), -EINVAL);
    ck_assert_int_eq(fq_quantize_row(GG_I8, x, buf, 256), FD_EUNSUP);
    ck_assert_int_eq(fq_quantize_row(GG_Q2_K, x, buf, 255), -EINVAL);
    ck_assert_int_eq(fq_quantize_row(GG_I32, x, buf, 1), FD_EUNSUP);
    ck_assert_int_eq(fq_quantize_row(GG_IQ4_XS, x, buf, 32), -EINVAL);
    ck_assert_int_eq(fq_dequantize_row(GG_MXFP4, buf, x, 48), -EINVAL);
    CHECK(isnan(fq_dot_ref(GG_Q8_0, buf, x, 40)));
    CHECK(isnan(fq_dot_ref(GG_I8, buf, x, 4)));
    CHECK(!fq_type_supported(GG_I8));
    CHECK(!fq_type_supported(GG_TYPE_COUNT));
    CHECK(fq_type_quantizable(GG_Q6_K));
    CHECK(fq_type_quantizable(GG_Q3_K));
    CHECK(!fq_type_quantizable(GG_I16));
    ck_assert_int_eq(fq_dequantize_row(GG_Q8_0, buf, x, 0), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("quants");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_f16_cases);
    tcase_add_test(tc, test_f16_all);
    tcase_add_test(tc, test_f16_random);
    tcase_add_test(tc, test_bf16);
    tcase_add_loop_test(tc, test_dequant_known, 0, (int)FD_ARRAY_LEN(dq_types));
    tcase_add_test(tc, test_roundtrip_legacy);
    tcase_add_test(tc, test_roundtrip_kquants);
    tcase_add_test(tc, test_requantize_exact);
    tcase_add_test(tc, test_mxfp4_scales);
    tcase_add_test(tc, test_roundtrip_iq);
    tcase_add_test(tc, test_roundtrip_q23k);
    tcase_add_test(tc, test_roundtrip_float);
    tcase_add_test(tc, test_zero_blocks);
    tcase_add_test(tc, test_bad_input);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
