#!/bin/sh
# spec-gpu.sh: n-gram speculative decoding on the CUDA backend, on a GPU machine: builds
# spec-bench and fusion-gguf-gen with gcc and nvcc directly (the GPU image has none of the
# -dev packages configure wants: bench/cuda/compat-blas stands in for OpenBLAS when it is
# missing, as in cuda-all.sh), writes random-weight models with fusion-gguf-gen, then runs
# spec-bench --row-cost (what a step of 1..17 rows costs) and spec-bench off vs on.
# Every log goes under $OUT (default /tmp/spec-gpu).
# Usage: bench/cuda/spec-gpu.sh [PRESET:TYPE]...   (default TinyLlama-1.1B:BF16 Llama-3-8B:BF16)
# Environment: OUT, BUILD (default /tmp/spec-gpu-build), CUDA_HOME, NVCC_ARCH, N (tokens, 128),
# REPS (5).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
OUT=${OUT:-/tmp/spec-gpu}
BUILD=${BUILD:-/tmp/spec-gpu-build}
mkdir -p "$OUT" "$BUILD/bin" "$BUILD/obj"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
PATH=$CUDA_HOME/bin:$PATH
export PATH
NVCC_ARCH=${NVCC_ARCH:--gencode arch=compute_90,code=sm_90}
obj=$BUILD/obj

log() { echo "== $*" >&2; }

libdir=$CUDA_HOME/lib64
for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
    if ls "$d"/libcublas.so* >/dev/null 2>&1; then libdir=$d; break; fi
done

printf '#define HAVE_CUDA 1\n#define PACKAGE_VERSION "spec-gpu"\n' >"$obj/config.h"
CF="-std=gnu11 -O2 -g -I. -I$obj -DHAVE_CONFIG_H -DFD_DATADIR=\"/usr/share/fusiond\" -DFD_SYSCONFDIR=\"/etc\" -pthread"
blas="-lopenblas"
extra=""
if ! echo '#include <cblas.h>
int main(void){openblas_set_num_threads(1);return 0;}' | gcc -x c - -lopenblas -o /dev/null >/dev/null 2>&1; then
    CF="$CF -Ibench/cuda/compat-blas"
    extra=bench/cuda/compat-blas/cblas_lite.c
    blas=""
fi
srcs="common/fd.c common/ggtypes.c common/log.c backends/quants.c backends/backend.c
      backends/cpu/ref_ops.c backends/cpu/cpu_backend.c backends/cpu/pool.c
      backends/cpu/kernels.c backends/cpu/kernels_scalar.c backends/cpu/kernels_avx2.c
      backends/cpu/kernels_avx512.c backends/corsair/bfp.c backends/corsair/corsair_backend.c
      backends/corsair/replay.c backends/corsair/timing.c fusion/fold.c fusion/plan.c
      engine/gguf.c engine/gguf_write.c engine/model.c engine/tokenizer.c engine/unicode.c
      engine/sampler.c engine/grammar.c engine/grammar_mask.c engine/ngram.c engine/engine.c
      engine/engine_llm.c fusion/encoder.c engine/wordpiece.c engine/bert_gen.c $extra"
log "build: gcc $(gcc -dumpversion), $(nvcc --version | tail -1), cuBLAS in $libdir"
{
    for f in $srcs; do
        gcc $CF -c "$f" -o "$obj/$(echo "$f" | tr / _).o" &
    done
    for cu in cuda_backend cuda_kernels; do
        nvcc -O3 -std=c++17 $NVCC_ARCH -I. -c "backends/cuda/$cu.cu" -o "$obj/$cu.o" &
    done
    wait
    L="-L$libdir -Wl,-rpath,$libdir -lcublas -lcudart -lstdc++ $blas -lm -pthread"
    gcc $CF -o "$BUILD/bin/spec-bench" bench/spec-bench.c "$obj"/*.o $L &&
        gcc $CF -o "$BUILD/bin/fusion-gguf-gen" tools/fusion-gguf-gen.c "$obj"/*.o $L
} >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log" >&2; exit 1; }
[ -x "$BUILD/bin/spec-bench" ] || { tail -30 "$OUT/build.log" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/env.txt" 2>&1

N=${N:-128}
REPS=${REPS:-5}
P="The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick brown fox"
for m in ${*:-TinyLlama-1.1B:BF16 Llama-3-8B:BF16}; do
    preset=${m%%:*}
    type=${m#*:}
    model=$BUILD/$preset-$type.gguf
    [ -s "$model" ] || "$BUILD/bin/fusion-gguf-gen" -o "$model" -p "$preset" -t "$type" -s 1 \
        >>"$OUT/gen.log" 2>&1 || { log "cannot write $model"; tail -5 "$OUT/gen.log" >&2; continue; }
    log "$preset $type"
    {
        "$BUILD/bin/spec-bench" --row-cost -m "$model" --backend cuda --threads 1 --reps 20
        for k in 4 8; do
            "$BUILD/bin/spec-bench" -m "$model" --backend cuda --threads 1 -n "$N" --reps "$REPS" \
                --draft-max $k --prompt "$P"
        done
        "$BUILD/bin/spec-bench" -m "$model" --backend cuda --threads 1 -n "$N" --reps "$REPS" \
            --draft-max 8 --temp 1.0 --prompt "Hello"
        "$BUILD/bin/spec-bench" -m "$model" --backend cuda --threads 1 -n "$N" --reps "$REPS" \
            --draft-max 8 --seqs 8 --prompt "$P"
    } >"$OUT/$preset-$type.log" 2>&1
    cat "$OUT/$preset-$type.log" >&2
done
