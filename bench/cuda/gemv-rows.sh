#!/bin/sh
# gemv-rows.sh: what a decode step's matrix products cost at R = 1, 2, 3, 4, 6, 8 activation
# rows on the CUDA backend's kernels, the old path against the multi-row tensor-core kernel, in
# one device call (about a minute of build on a 16-core host and well under one of running).
#
# The one command (repository root, on the GPU machine; $OUT is where the log goes):
#     OUT=$OUT bench/cuda/gemv-rows.sh
# It builds bench/cuda/kbench.cu with nvcc alone (sm_90; it includes the backend's kernels,
# so no configure and none of the -dev packages), runs `kbench rows`, and prints (and writes to
# $OUT/gemv-rows.log):
#   - six "check" lines: the multi-row kernel's outputs against the fp32 multi-row GEMV's at
#     the Llama-3-8B gate|up and down shapes, 2..8 rows, BF16 / Q8_0 / F16, with in_scale and
#     the deferred RMS scale: relative L2 difference, "ok" at 3e-6 or less;
#   - then for TinyLlama-1.1B and Llama-3-8B, each in BF16, Q8_0 and Q4_0 (kept as F16 on the
#     device, as the backend keeps it), one "rows" line per R: the GPU time of the step's
#     products (every layer's Q|K|V and gate|up with the deferred RMS and gamma as in_scale,
#     O and down adding into the residual, the LM head; no attention, no RoPE) on the old path
#     (one row: the one-row kernels; 2-4 rows: the fp32 multi-row GEMV; 5-8 rows of BF16 and
#     F16: cuBLAS as the backend runs it, with its prep pass and the SiLU-gate and add kernels,
#     marked "(cuBLAS)") and on the new one (2-8 rows: the multi-row kernel), each with its
#     ratio to R=1 on the same path and the weight bytes read per second; last, new/old.
# Weights are random bytes written on the device (fusion-gguf-gen's files would add minutes
# of writing and loading 8B models for the same bytes); steps without cuBLAS are CUDA graphs,
# medians of 15 replays; steps with cuBLAS are launched directly, as the backend runs them.
# Environment: OUT (default /tmp/gemv-rows), BUILD (default /tmp/gemv-rows-build), CUDA_HOME,
# NVCC_ARCH.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
OUT=${OUT:-/tmp/gemv-rows}
BUILD=${BUILD:-/tmp/gemv-rows-build}
mkdir -p "$OUT" "$BUILD"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
PATH=$CUDA_HOME/bin:$PATH
export PATH
NVCC_ARCH=${NVCC_ARCH:--gencode arch=compute_90,code=sm_90}
libdir=$CUDA_HOME/lib64
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
    if ls "$d"/libcublas.so* >/dev/null 2>&1; then libdir=$d; break; fi
done
echo "== build: $(nvcc --version | tail -1), cuBLAS in $libdir" >&2
t0=$(date +%s)
nvcc -O3 -std=c++17 $NVCC_ARCH -I. bench/cuda/kbench.cu -L"$libdir" -Xlinker -rpath \
    -Xlinker "$libdir" -lcublas -o "$BUILD/kbench" >"$OUT/build.log" 2>&1 ||
    { cat "$OUT/build.log" >&2; exit 1; }
echo "== built in $(($(date +%s) - t0)) s" >&2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/env.txt" 2>&1
timeout 400 "$BUILD/kbench" rows 2>&1 | tee "$OUT/gemv-rows.log"
