/* kernels.c: run-time choice of the kernel table (see kernels.h). */
#include "backends/cpu/kernels.h"

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "backends/quants.h"
#include "common/fd.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

size_t fcpu_xrow_bytes(int xform, int64_t n)
{
    size_t b;
    switch (xform) {
    case FCPU_XQ32: case FCPU_XQ32I: case FCPU_XQ32T: b = (size_t)n + 8 * (size_t)(n / 32); break;
    case FCPU_XQK: case FCPU_XQKT: b = (size_t)n + 4 * (size_t)(n / 256) + 2 * (size_t)(n / 16); break;
    default: b = 4 * (size_t)n; break;
    }
    return (b + 63) & ~(size_t)63;
}

/* Code e (0..31) of block m of a group, as the unsigned value the batch kernels multiply */
static uint8_t group_code(int type, const uint8_t *g, int m, int e)
{
    if (type == GG_Q8_0) {
        const fq_block_q8_0 *b = (const fq_block_q8_0 *)(const void *)g + m;
        return (uint8_t)(b->qs[e] + 128);
    }
    const fq_block_q4_0 *b = (const fq_block_q4_0 *)(const void *)g + m;
    return e < 16 ? b->qs[e] & 15 : b->qs[e - 16] >> 4;
}

int fcpu_repack8_row(int type, int64_t n, const void *src, void *dst)
{
    if (type != GG_Q8_0 && type != GG_Q4_0)
        return FD_EUNSUP;
    const size_t bs = type == GG_Q8_0 ? sizeof(fq_block_q8_0) : sizeof(fq_block_q4_0);
    const int64_t nb = n / 32, full = nb / 8 * 8;
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int64_t b = 0; b < full; b += 8) {
        const uint8_t *g = s + (size_t)b * bs;
        uint8_t *o = d + (size_t)b * bs;
        for (int m = 0; m < 8; m++)
            for (int i = 0; i < 8; i++)
                for (int k = 0; k < 4; k++) {
                    uint8_t c = group_code(type, g, m, 4 * i + k);
                    if (type == GG_Q8_0)
                        o[32 * i + 4 * m + k] = c;
                    else if (i % 2 == 0)
                        o[32 * (i / 2) + 4 * m + k] = c;
                    else
                        o[32 * (i / 2) + 4 * m + k] |= (uint8_t)(c << 4);
                }
        uint8_t *sc = o + 8 * (bs - 2);
        for (int m = 0; m < 8; m++) /* each block's d is its first two bytes */
            memcpy(sc + 2 * m, g + (size_t)m * bs, 2);
    }
    memcpy(d + (size_t)full * bs, s + (size_t)full * bs, (size_t)(nb - full) * bs);
    return 0;
}

int fcpu_repack16_rows(int type, int64_t n, const void *src, size_t ld, void *dst)
{
    if (type != GG_Q8_0 && type != GG_Q4_0 && type != GG_Q4_K && type != GG_Q5_K &&
        type != GG_Q6_K)
        return FD_EUNSUP;
    const int64_t nb = n / 32;
    uint8_t *d = dst;
    if (type == GG_Q6_K) {
        for (int64_t j = 0; j < n / 256; j++, d += FCPU_G16 * sizeof(fq_block_q6_K)) {
            /* the fp16 d's at the end of an even super-block and the start of an odd one, so
             * that every vector of a pair of super-blocks (3360 bytes each) is 64-byte aligned */
            uint8_t *dd = d + (j % 2 ? 0 : FCPU_G16 * sizeof(fq_block_q6_K) - 32);
            uint8_t *v = d + (j % 2 ? 32 : 0);
            for (int i = 0; i < FCPU_G16; i++) {
                const fq_block_q6_K *b = (const fq_block_q6_K *)(const void *)((const uint8_t *)src + (size_t)i * ld) + j;
                uint8_t c[256];
                fq_q6k_codes(b, c); /* a block at once: one code at a time was 10x slower */
                memcpy(dd + 2 * i, &b->d, 2);
                for (int k = 0; k < 4; k++)
                    memcpy(v + 64 * k + 4 * i, b->scales + 4 * k, 4);
                for (int sb = 0; sb < 16; sb++)
                    for (int t = 0; t < 4; t++) {
                        /* codes 16 sb + t, + 4, + 8 in 6 bits each, code 16 sb + 12 + t in their
                         * top two bits, two bits a byte */
                        const uint8_t *e = c + 16 * sb + t;
                        uint8_t *o = v + 256 + 192 * sb + 4 * i + t;
                        o[0] = (uint8_t)(e[0] | (e[12] & 3) << 6);
                        o[64] = (uint8_t)(e[4] | (e[12] >> 2 & 3) << 6);
                        o[128] = (uint8_t)(e[8] | (e[12] >> 4) << 6);
                    }
            }
        }
        return 0;
    }
    if (type == GG_Q4_K || type == GG_Q5_K) {
        /* every byte moved as it is (4 at a time), so the copy is the source's size: the
         * kernel unpacks the 6-bit scales of 16 rows with a few vector ops per super-block.
         * Both blocks start with d, dmin and the scales; Q5_K's qh comes before its qs. */
        const bool five = type == GG_Q5_K;
        const size_t bb = five ? sizeof(fq_block_q5_K) : sizeof(fq_block_q4_K);
        const size_t qs_at = five ? offsetof(fq_block_q5_K, qs) : offsetof(fq_block_q4_K, qs);
        for (int64_t j = 0; j < n / 256; j++, d += FCPU_G16 * bb)
            for (int i = 0; i < FCPU_G16; i++) {
                const fq_block_q4_K *b = (const fq_block_q4_K *)(const void *)((const uint8_t *)src + (size_t)i * ld + (size_t)j * bb);
                memcpy(d + 2 * i, &b->d, 2);
                memcpy(d + 32 + 2 * i, &b->dmin, 2);
                for (int k = 0; k < 3; k++)
                    memcpy(d + 64 + 64 * k + 4 * i, b->scales + 4 * k, 4);
                for (int v = 0; v < 32; v++)
                    memcpy(d + 256 + 64 * v + 4 * i, (const uint8_t *)b + qs_at + 4 * v, 4);
                if (five)
                    for (int v = 0; v < 8; v++)
                        memcpy(d + 2304 + 64 * v + 4 * i,
                               (const uint8_t *)b + offsetof(fq_block_q5_K, qh) + 4 * v, 4);
            }
        return 0;
    }
    if (type == GG_Q4_0) {
        for (int64_t j = 0; j < nb; j++, d += FCPU_G16 * sizeof(fq_block_q4_0))
            for (int i = 0; i < FCPU_G16; i++) {
                const fq_block_q4_0 *b = (const fq_block_q4_0 *)(const void *)((const uint8_t *)src + (size_t)i * ld) + j;
                for (int k = 0; k < 4; k++) /* bytes as they are: the kernel splits the nibbles */
                    memcpy(d + 64 * k + 4 * i, b->qs + 4 * k, 4);
                memcpy(d + 256 + 2 * i, b, 2);
            }
        return 0;
    }
    for (int64_t j = 0; j < nb; j++, d += FCPU_G16 * sizeof(fq_block_q8_0)) {
        for (int i = 0; i < FCPU_G16; i++) {
            const fq_block_q8_0 *b = (const fq_block_q8_0 *)(const void *)((const uint8_t *)src + (size_t)i * ld) + j;
            for (int k = 0; k < 8; k++) { /* 4 codes at a time; + 128 flips each sign bit */
                uint32_t v;
                memcpy(&v, b->qs + 4 * k, 4);
                v ^= 0x80808080u;
                memcpy(d + 64 * k + 4 * i, &v, 4);
            }
            memcpy(d + 512 + 2 * i, b, 2); /* the block's d is its first two bytes */
        }
    }
    return 0;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* F16C from CPUID leaf 1 (ECX bit 29): clang before 15 has no "f16c" for
 * __builtin_cpu_supports, and the fuzz targets (make fuzz) build this file with clang. */
static bool has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
#endif

static bool cpu_has(int isa)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (isa == FCPU_ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    if (isa == FCPU_ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma") &&
               has_f16c();
#endif
    return isa == FCPU_ISA_SCALAR;
}

const fcpu_kern_t *fcpu_kernels(int isa)
{
    if (isa < 0 || isa >= FCPU_ISA_COUNT || !cpu_has(isa))
        return NULL;
    switch (isa) {
    case FCPU_ISA_AVX512: return fcpu_kernels_avx512();
    case FCPU_ISA_AVX2: return fcpu_kernels_avx2();
    default: return fcpu_kernels_scalar();
    }
}

const fcpu_kern_t *fcpu_kernels_best(void)
{
    for (int isa = FCPU_ISA_COUNT - 1; isa > 0; isa--) {
        const fcpu_kern_t *k = fcpu_kernels(isa);
        if (k)
            return k;
    }
    return fcpu_kernels_scalar();
}

const char *fcpu_isa_name(int isa)
{
    static const char *const n[FCPU_ISA_COUNT] = {"scalar", "avx2", "avx512"};
    return isa >= 0 && isa < FCPU_ISA_COUNT ? n[isa] : "unknown";
}
