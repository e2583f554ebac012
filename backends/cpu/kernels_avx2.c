/* kernels_avx2.c: the SIMD kernel table for AVX2 + FMA + F16C (kernels_x86.inc). */
#include "backends/cpu/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c,bmi2")
#define KTABLE_NAME "avx2"
#define KTABLE_ISA FCPU_ISA_AVX2
#include "backends/cpu/kernels_x86.inc"

const fcpu_kern_t *fcpu_kernels_avx2(void)
{
    return &table;
}
#else
const fcpu_kern_t *fcpu_kernels_avx2(void)
{
    return NULL;
}
#endif
