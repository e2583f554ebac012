#!/bin/sh
# cuda-all.sh: one run of the CUDA backend on a GPU machine: the environment, the build, the
# GPU tests (tests/test_cuda), the read-bandwidth probe, fusion-bench synth for the
# Llama-3.2-1B and Llama-3-8B shapes and the PyTorch reference, every log under $OUT.
#
# The GPU machine's image has nvcc and PyTorch but none of the -dev packages configure wants
# (libmicrohttpd, cJSON, libuv, Check, OpenBLAS), so this builds only what it needs with gcc
# and nvcc directly: the library sources, the test and the benchmarks, with
# bench/cuda/compat-check (a small Check-compatible header) and bench/cuda/compat-blas (a
# plain sgemm) standing in for what is missing.  The same build can run beforehand on a
# machine with nvcc but no GPU ("build DIR"), and the run then uses those binaries if they
# start (they need glibc 2.34 and CUDA 13's libraries there).
#
# Usage: bench/cuda/cuda-all.sh build DIR      build into DIR/bin (and DIR/obj)
#        bench/cuda/cuda-all.sh run [DIR] [tests|cputests|bench|kbench|torch|kv|all]...
#        (cputests: tests/test_cpu_backend on the GPU host's CPU, for its AVX-512 kernels)
#        (kv: decode tok/s by KV cache type at long contexts, not part of all)
# Environment: OUT (logs; default /tmp/cuda-all), CUDA_HOME, FUSIOND_SHARED, NVCC_ARCH,
# KBENCH=0 (build without kbench, which compiles cuda_kernels.cu a second time),
# FORCE_COMPAT=1 (the stand-ins even where Check and OpenBLAS exist: binaries built here then
# start on the GPU machine; a run builds again only if they do not start there).
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top" || exit 1
OUT=${OUT:-/tmp/cuda-all}
mkdir -p "$OUT"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
PATH=$CUDA_HOME/bin:$PATH
export PATH
NVCC_ARCH=${NVCC_ARCH:--gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90}

log() { echo "== $*" >&2; }

# The directory holding libcublas (the toolkit's, else a pip wheel's).
cuda_libdir() {
    for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
        if ls "$d"/libcublas.so* >/dev/null 2>&1; then echo "$d"; return; fi
    done
    echo "$CUDA_HOME/lib64"
}

build() {
    dir=$1
    obj=$dir/obj
    mkdir -p "$dir/bin" "$obj"
    printf '#define HAVE_CUDA 1\n#define PACKAGE_VERSION "cuda-all"\n' >"$obj/config.h"
    CF="-std=gnu11 -O2 -g -I. -I$obj -DHAVE_CONFIG_H -DFB_HAVE_CORSAIR -DFD_DATADIR=\"/usr/share/fusiond\" -DFD_SYSCONFDIR=\"/etc\" -pthread"
    extra=""
    blas="-lopenblas"
    if [ "${FORCE_COMPAT:-0}" = 1 ] || ! echo '#include <check.h>' | gcc -E -x c - >/dev/null 2>&1; then
        CF="$CF -Ibench/cuda/compat-check"
        check=""
    else
        check="-lcheck -lsubunit -lrt"
    fi
    if [ "${FORCE_COMPAT:-0}" = 1 ] || ! echo '#include <cblas.h>
int main(void){openblas_set_num_threads(1);return 0;}' | gcc -x c - -lopenblas -o /dev/null >/dev/null 2>&1; then
        CF="$CF -Ibench/cuda/compat-blas"
        extra=bench/cuda/compat-blas/cblas_lite.c
        blas=""
    fi
    libdir=$(cuda_libdir)
    srcs="common/fd.c common/ggtypes.c common/log.c backends/quants.c backends/backend.c
          backends/cpu/ref_ops.c backends/cpu/cpu_backend.c backends/cpu/pool.c
          backends/cpu/kernels.c backends/cpu/kernels_scalar.c backends/cpu/kernels_avx2.c
          backends/cpu/kernels_avx512.c fusion/fold.c fusion/plan.c engine/gguf.c
          engine/gguf_write.c engine/model.c engine/lora.c engine/tokenizer.c engine/unicode.c
          engine/sampler.c backends/corsair/bfp.c backends/corsair/corsair_backend.c
          backends/corsair/replay.c backends/corsair/timing.c bench/perf.c
          fusion/encoder.c engine/wordpiece.c engine/bert_gen.c engine/ugm.c $extra"
    log "build: gcc $(gcc -dumpversion), nvcc $(nvcc --version | tail -1), cuBLAS in $libdir"
    fail=0
    for f in $srcs; do
        o=$obj/$(echo "$f" | tr / _).o
        gcc $CF -c "$f" -o "$o" &
    done
    for cu in cuda_backend cuda_kernels; do
        if [ -s "$obj/$cu.o" ] && [ "$obj/$cu.o" -nt "backends/cuda/$cu.cu" ]; then continue; fi
        nvcc -O3 -std=c++17 $NVCC_ARCH -I. -c "backends/cuda/$cu.cu" -o "$obj/$cu.o" &
    done
    nvcc -O3 $NVCC_ARCH -cudart static bench/cuda/bwprobe.cu -o "$dir/bin/bwprobe" &
    if [ "${KBENCH:-1}" = 1 ]; then
        nvcc -O3 -std=c++17 $NVCC_ARCH -I. -I"$obj" bench/cuda/kbench.cu -lcublas -L"$(cuda_libdir)" -Xlinker -rpath -Xlinker "$(cuda_libdir)" -o "$dir/bin/kbench" &
    fi
    wait
    for f in $srcs; do [ -s "$obj/$(echo "$f" | tr / _).o" ] || fail=1; done
    [ -s "$obj/cuda_backend.o" ] && [ -s "$obj/cuda_kernels.o" ] || fail=1
    [ $fail = 0 ] || { log "build: compilation failed"; return 1; }
    objs=$(ls "$obj"/*.o)
    L="-L$libdir -Wl,-rpath,$libdir -lcublas -lcudart -lstdc++ $blas $check -lm -pthread"
    gcc $CF -o "$dir/bin/test_cuda" tests/test_cuda.c $objs $L &&
        gcc $CF -DCORSAIR_REPORT_NO_MAIN -o "$dir/bin/fusion-bench" bench/fusion-bench.c \
            bench/corsair-report.c $objs $L &&
        gcc $CF -o "$dir/bin/fusion-gguf-gen" tools/fusion-gguf-gen.c $objs $L &&
        gcc $CF -o "$dir/bin/test_cpu_backend" tests/test_cpu_backend.c $objs $L || return 1
    log "build: done"
}

what_run() {
    dir=${1:-/tmp/fdcuda}
    shift || true
    todo=${*:-all}
    {
        nvidia-smi
        nvcc --version | tail -2
        gcc --version | head -1
        ldd --version | head -1
        python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
        nproc
    } >"$OUT/env.txt" 2>&1
    bin=$dir/bin
    if ! { [ -x "$bin/fusion-bench" ] && "$bin/fusion-bench" -h >/dev/null 2>&1 &&
           [ -x "$bin/test_cuda" ] && [ -x "$bin/bwprobe" ] && [ -x "$bin/test_cpu_backend" ]; }; then
        log "prebuilt binaries missing or not runnable here: building"
        ldd "$bin/fusion-bench" 2>&1 | grep -i "not found" >&2
        rm -f "$dir/obj/cuda_backend.o.skip"
        build "$dir" >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log" >&2; exit 1; }
    fi
    export FUSIOND_SHARED=${FUSIOND_SHARED:-$top/.devxfer/cuda/shared}
    for w in $todo; do
        case $w in
        tests|all)
            log "tests"
            timeout 400 "$bin/test_cuda" >"$OUT/test_cuda.log" 2>&1
            echo "test_cuda exit $?" >>"$OUT/test_cuda.log"
            tail -25 "$OUT/test_cuda.log" >&2
            ;;
        esac
        case $w in
        cputests|all)
            # the CPU kernels on the GPU host's CPU (a Xeon with AVX-512 VNNI, which the team
            # machine lacks): every kernel table the host runs against the scalar references
            log "cputests ($(grep -o 'avx512[a-z_]*' /proc/cpuinfo | sort -u | tr '\n' ' '))"
            timeout 400 "$bin/test_cpu_backend" >"$OUT/test_cpu_backend.log" 2>&1
            echo "test_cpu_backend exit $?" >>"$OUT/test_cpu_backend.log"
            tail -5 "$OUT/test_cpu_backend.log" >&2
            ;;
        esac
        case $w in
        bench|all)
            log "bench"
            {
                "$bin/bwprobe" 4
                for m in Llama-3.2-1B Llama-3-8B; do
                    timeout 200 "$bin/fusion-bench" synth --backend cuda --models $m --type BF16 \
                        --batches 1,8 --ctxs 512,4096 --prefill 512 --reps ${REPS:-30}
                done
                timeout 100 "$bin/fusion-bench" ops --backend cuda --type BF16 \
                    --models Llama-3.2-1B,Llama-3-8B --ops qkv,gate_up,head,attn --reps 30
            } >"$OUT/bench.log" 2>&1
            cat "$OUT/bench.log" >&2
            ;;
        esac
        case $w in
        kv)
            # decode tok/s at long contexts by KV cache type (TinyLlama-1.1B's shape, Q8_0
            # weights, random; KV_DEPTHS, KV_TYPES, KV_REPS override)
            log "kv"
            {
                "$bin/fusion-gguf-gen" -o /tmp/kv-tinyllama.gguf -p TinyLlama-1.1B -t Q8_0 \
                    --n-ctx 32768 >/dev/null &&
                    timeout 400 "$bin/fusion-bench" decode --backend cuda -m /tmp/kv-tinyllama.gguf \
                        --cache-types ${KV_TYPES:-f32,f16,q8_0,q4_0} --depths ${KV_DEPTHS:-4096,16384} \
                        -n 64 --reps ${KV_REPS:-5}
            } >"$OUT/kv.log" 2>&1
            cat "$OUT/kv.log" >&2
            ;;
        esac
        case $w in
        kbench|all)
            log "kbench"
            timeout 200 "$bin/kbench" >"$OUT/kbench.log" 2>&1
            cat "$OUT/kbench.log" >&2
            ;;
        esac
        case $w in
        torch|all)
            log "torch"
            : >"$OUT/torch.log"
            for b in ${TORCH_BATCHES:-1 8}; do
                PYTHONUNBUFFERED=1 timeout 200 python3 bench/cuda/torch_ref.py 1b 8b --batch $b >>"$OUT/torch.log" 2>&1
            done
            cat "$OUT/torch.log" >&2
            ;;
        esac
    done
}

case ${1:-} in
build) build "${2:?build DIR}" ;;
run) shift; what_run "$@" ;;
*) echo "usage: $0 build DIR | run [DIR] [tests|cputests|bench|kbench|torch|kv|all]..." >&2; exit 2 ;;
esac
