#!/bin/sh
# fusiond-gpu.sh: fusiond itself on a GPU machine whose image lacks libmicrohttpd, cJSON, libuv
# and OpenBLAS (see cuda-all.sh): the Debian packages of those libraries (runtime and -dev,
# fetched beforehand with `apt-get download` into DEBS) are unpacked into a private prefix,
# never into /, and fusiond runs with LD_LIBRARY_PATH pointing there.  It takes a fusiond
# built beforehand (./configure --with-cuda --without-systemd on a machine with nvcc) when that
# one starts here, else compiles one with gcc and nvcc against the prefix.  Then, for each
# model, it serves the same greedy completion (plain and streamed) with --backend cuda
# --backend-option timing=1 (the fused plan, then --fusion=off) and with --backend cpu,
# compares the texts and saves /metrics (device time per op class).
#
# Usage: bench/cuda/fusiond-gpu.sh MODEL.gguf...
# Environment: OUT (logs; default /tmp/fusiond-gpu), DEBS (the .deb files; default
# $top/.debs), FUSIOND (a prebuilt fusiond; default $top/.devxfer/fusiond-gpu/fusiond),
# PREFIX (default /tmp/fddeps), CUDA_HOME, FORCE_BUILD=1, PROMPT, MAX_TOKENS.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
cd "$top" || exit 1
OUT=${OUT:-/tmp/fusiond-gpu}
DEBS=${DEBS:-$top/.debs}
PREFIX=${PREFIX:-/tmp/fddeps}
FUSIOND=${FUSIOND:-$top/.devxfer/fusiond-gpu/fusiond}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
PROMPT=${PROMPT:-Once upon a time}
MAX_TOKENS=${MAX_TOKENS:-64}
PATH=$CUDA_HOME/bin:$PATH
export PATH
mkdir -p "$OUT"
[ $# -gt 0 ] || { echo "usage: $0 MODEL.gguf..." >&2; exit 2; }

log() { echo "== $*" >&2; }

# A .deb is an ar archive holding data.tar.*; dpkg-deb where there is one, else Python's
# standard library reads it.
unpack() {
    if command -v dpkg-deb >/dev/null 2>&1; then
        dpkg-deb -x "$1" "$PREFIX"
    else
        python3 - "$1" "$PREFIX" <<'PY'
import io, sys, tarfile
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"!<arch>\n", "not an ar archive"
pos = 8
while pos < len(data):
    name = data[pos:pos + 16].decode().strip().rstrip("/")
    size = int(data[pos + 48:pos + 58])
    body = data[pos + 60:pos + 60 + size]
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(body)).extractall(sys.argv[2], filter="tar")
    pos += 60 + size + (size & 1)
PY
    fi
}

cuda_libdir() {
    for d in "$CUDA_HOME/lib64" "$CUDA_HOME/lib" $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
        if ls "$d"/libcublas.so* >/dev/null 2>&1; then echo "$d"; return; fi
    done
    echo "$CUDA_HOME/lib64"
}

# The .c files of fusiond: the libraries' and the program's sources in the local.mk fragments.
fusiond_sources() {
    cat Makefile.am $(find backends common engine fusion server -name local.mk) | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' |
        grep -E '^(libfusiond_a|libfusiond_server_a|libfusiond_daemon_a|fusiond)_SOURCES' |
        tr ' \t' '\n\n' | grep '\.c$' | grep -v '^backends/cuda/' | sort -u
}

build() {
    dir=$1
    mkdir -p "$dir/obj"
    inc=$PREFIX/usr/include
    lib=$PREFIX/usr/lib/x86_64-linux-gnu
    printf '#define HAVE_CUDA 1\n#define PACKAGE_VERSION "fusiond-gpu"\n#define PACKAGE_STRING "fusiond fusiond-gpu"\n#define PACKAGE "fusiond"\n#define VERSION "fusiond-gpu"\n' >"$dir/obj/config.h"
    CF="-std=gnu11 -O2 -g -I. -I$dir/obj -DHAVE_CONFIG_H -DFD_DATADIR=\"$top/models\" -DFD_SYSCONFDIR=\"/etc\" -pthread -I$inc -I$inc/x86_64-linux-gnu/openblas-pthread -I$inc/x86_64-linux-gnu"
    cudalib=$(cuda_libdir)
    log "build: gcc $(gcc -dumpversion), nvcc $(nvcc --version | tail -1), cuBLAS in $cudalib"
    for cu in backends/cuda/*.cu; do
        nvcc -O3 -std=c++17 -gencode arch=compute_90,code=sm_90 -I. -c "$cu" \
            -o "$dir/obj/$(basename "$cu" .cu).o" &
    done
    for f in $(fusiond_sources); do
        gcc $CF -c "$f" -o "$dir/obj/$(echo "$f" | tr / _).o" &
    done
    wait
    for f in $(fusiond_sources); do [ -s "$dir/obj/$(echo "$f" | tr / _).o" ] || return 1; done
    for cu in backends/cuda/*.cu; do [ -s "$dir/obj/$(basename "$cu" .cu).o" ] || return 1; done
    gcc -o "$dir/fusiond" "$dir"/obj/*.o -L"$lib" -L"$lib/openblas-pthread" \
        -L"$cudalib" -Wl,-rpath,"$cudalib" -lmicrohttpd -lcjson -luv -lopenblas \
        -lcublas -lcudart -lstdc++ -lm -pthread -ldl -lrt
}

{
    nvidia-smi
    nvcc --version | tail -2
    gcc --version | head -1
    ldd --version | head -1
    cat /etc/os-release
    for l in libmicrohttpd.so.12 libcjson.so.1 libuv.so.1 libopenblas.so.0 libgnutls.so.30; do
        echo "$l: $(ldconfig -p | grep -c "$l ") in the system's cache"
    done
} >"$OUT/env.txt" 2>&1

log "unpacking $(ls "$DEBS"/*.deb | wc -l) packages into $PREFIX"
mkdir -p "$PREFIX"
for d in "$DEBS"/*.deb; do unpack "$d" || { log "cannot unpack $d"; exit 1; }; done
lib=$PREFIX/usr/lib/x86_64-linux-gnu
LD_LIBRARY_PATH=$lib:$lib/openblas-pthread:$PREFIX/lib/x86_64-linux-gnu:$(cuda_libdir)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH

bin=$FUSIOND
if [ "${FORCE_BUILD:-0}" = 1 ] || ! "$bin" --version >"$OUT/version.txt" 2>&1; then
    log "the prebuilt fusiond does not start here ($(tail -1 "$OUT/version.txt" 2>/dev/null)): building"
    build /tmp/fusiond-gpu-build >"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log" >&2; exit 1; }
    bin=/tmp/fusiond-gpu-build/fusiond
    "$bin" --version >"$OUT/version.txt" 2>&1
fi
ldd "$bin" >"$OUT/ldd.txt" 2>&1
log "fusiond: $bin ($(grep -c 'not found' "$OUT/ldd.txt") libraries not found)"

port=18431
status=0
for model in "$@"; do
    m=$(basename "$model" .gguf)
    for be in cuda cuda-unfused cpu; do
        set -- --model "$model" --backend "${be%-unfused}" --host 127.0.0.1 --port "$port"
        case $be in
        cuda) set -- "$@" --backend-option timing=1 ;;
        cuda-unfused) set -- "$@" --backend-option timing=1 --fusion=off ;;
        esac
        "$bin" "$@" >"$OUT/fusiond-$be-$m.log" 2>&1 &
        pid=$!
        if python3 "$here/fusiond-client.py" "$port" "$OUT/answer-$be-$m.json" \
            --prompt "$PROMPT" --max-tokens "$MAX_TOKENS" --pid "$pid" >"$OUT/client-$be-$m.txt" 2>&1; then
            python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1]).read().decode())' \
                "$port" >"$OUT/metrics-$be-$m.txt" 2>&1
        else
            status=1
        fi
        kill -TERM "$pid" 2>/dev/null
        wait "$pid"
        echo "exit $?" >>"$OUT/fusiond-$be-$m.log"
        log "$m on $be: $(cat "$OUT/client-$be-$m.txt")"
        port=$((port + 1))
    done
    python3 - "$m" "$OUT"/answer-cuda-"$m".json "$OUT"/answer-cuda-unfused-"$m".json \
        "$OUT"/answer-cpu-"$m".json <<'PY' >>"$OUT/summary.txt" || status=1
import json, sys
try:
    g, u, c = (json.load(open(p)) for p in sys.argv[2:5])
except (OSError, ValueError) as e:
    print("%s: missing answer: %s" % (sys.argv[1], e))
    sys.exit(1)
same = g["text"] == c["text"] == u["text"]
print("%s: greedy text of cuda, cuda --fusion off and cpu %s; streamed = plain: %s %s %s; %s" %
      (sys.argv[1], "IDENTICAL" if same else "DIFFERENT", g["stream_equal"],
       u["stream_equal"], c["stream_equal"], json.dumps(g["text"])))
ok = same and g["stream_equal"] and u["stream_equal"] and c["stream_equal"]
sys.exit(0 if ok else 1)
PY
    for v in cuda cuda-unfused; do
        grep -E '^fusiond_(op_)?device_seconds_total' "$OUT/metrics-$v-$m.txt" 2>/dev/null |
            sed "s/^/$v: /" >>"$OUT/summary.txt"
    done
done
cat "$OUT/summary.txt" >&2
exit $status
