/* kernels_avx512.c: the SIMD kernel table for AVX-512 F/BW/VL/DQ with VNNI
 * (kernels_x86.inc); the CPU check is in kernels.c. */
#include "backends/cpu/kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c,bmi2,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#define KTABLE_NAME "avx512"
#define KTABLE_ISA FCPU_ISA_AVX512
#include "backends/cpu/kernels_x86.inc"

const fcpu_kern_t *fcpu_kernels_avx512(void)
{
    return &table;
}
#else
const fcpu_kern_t *fcpu_kernels_avx512(void)
{
    return NULL;
}
#endif
