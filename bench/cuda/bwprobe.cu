/* bwprobe.cu: the GPU's sustained device-memory read bandwidth, the floor under a decode step
 * (weight bytes / this bandwidth).  Streams a buffer larger than L2 with 16-byte loads, many
 * in flight per thread, and reports the best and the median of repeated timed passes.
 * Usage: bwprobe [GiB] (default 4).  Part of bench/cuda/cuda-all.sh's device run. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

__global__ void __launch_bounds__(512) k_read(const uint4 *__restrict__ src, long long n,
                                              unsigned *sink)
{
    unsigned acc = 0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        uint4 a = __ldcs(src + i), b = __ldcs(src + i + stride);
        uint4 c = __ldcs(src + i + 2 * stride), d = __ldcs(src + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^
               d.y ^ d.z ^ d.w;
    }
    for (; i < n; i += stride) {
        uint4 a = __ldcs(src + i);
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    if (acc == 0x12345678u) /* never in practice: keeps the loads */
        sink[blockIdx.x] = acc;
}

static int cmp(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    double gib = argc > 1 ? atof(argv[1]) : 4.0;
    size_t bytes = (size_t)(gib * 1073741824.0) & ~(size_t)15;
    void *buf;
    unsigned *sink;
    cudaDeviceProp pr;
    if (cudaGetDeviceProperties(&pr, 0) != cudaSuccess || cudaMalloc(&buf, bytes) != cudaSuccess ||
        cudaMalloc(&sink, 1 << 20) != cudaSuccess) {
        fprintf(stderr, "bwprobe: no GPU or no memory\n");
        return 1;
    }
    cudaMemset(buf, 1, bytes);
    const int reps = 20, blocks = pr.multiProcessorCount * 4;
    float ms[20];
    cudaEvent_t a, b;
    cudaEventCreate(&a);
    cudaEventCreate(&b);
    for (int r = -2; r < reps; r++) {
        cudaEventRecord(a);
        k_read<<<blocks, 512>>>((const uint4 *)buf, (long long)(bytes / 16), sink);
        cudaEventRecord(b);
        cudaEventSynchronize(b);
        if (r >= 0)
            cudaEventElapsedTime(&ms[r], a, b);
    }
    if (cudaGetLastError() != cudaSuccess) {
        fprintf(stderr, "bwprobe: kernel failed\n");
        return 1;
    }
    qsort(ms, reps, sizeof(float), cmp);
    printf("bwprobe: %s, %.2f GiB read: best %.0f GB/s, median %.0f GB/s\n", pr.name,
           bytes / 1073741824.0, bytes / (ms[0] * 1e-3) / 1e9, bytes / (ms[reps / 2] * 1e-3) / 1e9);
    return 0;
}
