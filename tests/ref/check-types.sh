#!/bin/sh
# check-types.sh: checks that fusion-gguf-gen's mixes (Q4_K_M, Q5_K_M, IQ4_XS_MIX, MXFP4_MOE,
# Q2_K_MIX, Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L) and its fallback for rows a type's block does not
# fit give every tensor the type llama.cpp's quantizer gives it: each model is written in F32, quantized by llama_model_quantize of
# node-llama-cpp's prebuilt libllama (quantize.c, built against the llama.h of the package's
# llama.cpp source bundle), and its types compared with fusion-gguf-gen's file of that type
# (gguf-types.py).  Not part of make check; run by hand after `make` and
# `(cd tests/ref && npm install)` when the writer's recipes change.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
gen=${FUSION_GGUF_GEN:-$top/fusion-gguf-gen}
ref=$top/tests/ref
nlc=$ref/node_modules/node-llama-cpp
bins=$ref/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
[ -x "$gen" ] || { echo "check-types.sh: $gen is missing (run make first)" >&2; exit 1; }
[ -d "$bins" ] || { echo "check-types.sh: run 'npm install' in tests/ref first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
git clone -q "$nlc/llama/gitRelease.bundle" "$tmp/llama.cpp" 2>/dev/null
cc -O1 -I"$tmp/llama.cpp/include" -I"$tmp/llama.cpp/ggml/include" "$ref/quantize.c" \
    -o "$tmp/quantize" "$bins"/libllama.v*.so "$bins"/libggml.v*.so "$bins/libggml-base.so" \
    -Wl,-rpath,"$bins"

# name | llama_ftype | fusion-gguf-gen type | shape options (pure: llama-quantize --pure;
# imatrix: an importance matrix of ones, which llama.cpp requires for Q2_K_S)
fail=0 n=0
while IFS='|' read -r name ftype type opts; do
    set -- $ftype
    "$gen" -o "$tmp/f32.gguf" -t F32 $opts --n-vocab 512 --n-ctx 256 -s 5 -j 1 >/dev/null
    "$gen" -o "$tmp/fu.gguf" -t "$type" $opts --n-vocab 512 --n-ctx 256 -s 5 -j 1 >/dev/null
    "$tmp/quantize" "$tmp/f32.gguf" "$tmp/lc.gguf" $ftype >"$tmp/log" 2>&1 ||
        { cat "$tmp/log" >&2; exit 1; }
    n=$((n + 1))
    if python3 "$ref/gguf-types.py" "$tmp/fu.gguf" "$tmp/lc.gguf"; then
        echo "ok   $name"
    else
        echo "FAIL $name"
        fail=1
    fi
done <<'CASES'
llama-q4_k_m|15|Q4_K_M|--arch llama --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
llama16-q5_k_m|17|Q5_K_M|--arch llama --n-embd 256 --n-layer 16 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
qwen2-896-q4_k_m|15|Q4_K_M|--arch qwen2 --n-embd 896 --n-layer 2 --n-head 14 --n-head-kv 2 --n-ff 512 --tied
qwen2-896-q5_k_m|17|Q5_K_M|--arch qwen2 --n-embd 896 --n-layer 3 --n-head 14 --n-head-kv 2 --n-ff 640 --tied
phi3-q4_k_m|15|Q4_K_M|--arch phi3 --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
gemma3-q4_k_m|15|Q4_K_M|--arch gemma3 --n-embd 256 --n-layer 6 --n-head 4 --n-head-kv 1 --head-dim 128 --n-ff 512 --tied --swa 4
qwen3moe-q4_k_m|15|Q4_K_M|--arch qwen3moe --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --head-dim 64 --n-ff 256 --experts 8,4 --untied
qwen3moe16-q4_k_m|15|Q4_K_M|--arch qwen3moe --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --head-dim 64 --n-ff 256 --experts 16,4 --untied
qwen3moe-q5_k_m|17|Q5_K_M|--arch qwen3moe --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --head-dim 64 --n-ff 256 --experts 8,4 --untied
olmoe-q4_k_m|15|Q4_K_M|--arch olmoe --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 4 --n-ff 256 --experts 8,4 --untied
qwen2moe-q4_k_m|15|Q4_K_M|--arch qwen2moe --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 256 --experts 8,4 --untied
mixtral-q4_k_m|15|Q4_K_M|--arch llama --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 256 --experts 8,2 --tied
llama-iq4_xs|30|IQ4_XS_MIX|--arch llama --n-embd 256 --n-layer 8 --n-head 8 --n-head-kv 2 --n-ff 512 --untied
qwen2-896-iq4_xs|30|IQ4_XS_MIX|--arch qwen2 --n-embd 896 --n-layer 8 --n-head 14 --n-head-kv 2 --n-ff 640 --tied
qwen2moe-iq4_xs|30|IQ4_XS_MIX|--arch qwen2moe --n-embd 256 --n-layer 8 --n-head 4 --n-head-kv 2 --n-ff 256 --experts 8,4 --untied
phi3-iq4_xs|30|IQ4_XS_MIX|--arch phi3 --n-embd 256 --n-layer 2 --n-head 8 --n-head-kv 2 --n-ff 512 --untied
qwen3moe-mxfp4_moe|38|MXFP4_MOE|--arch qwen3moe --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --head-dim 64 --n-ff 256 --experts 8,4 --tied
gpt-oss-mxfp4_moe|38|MXFP4_MOE|-p gpt-oss-tiny
llama-288-q3_k-pure|12 pure|Q3_K|--arch llama --n-embd 288 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
llama-288-q2_k-pure|10 pure|Q2_K|--arch llama --n-embd 288 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
llama-288-iq4_xs-pure|30 pure|IQ4_XS|--arch llama --n-embd 288 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
llama-96-q5_k-pure|17 pure|Q5_K|--arch llama --n-embd 96 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 100 --untied
llama16-q2_k|10|Q2_K_MIX|--arch llama --n-embd 256 --n-layer 16 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
llama16-q2_k_s|21 imatrix|Q2_K_S|--arch llama --n-embd 256 --n-layer 16 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
llama16-q3_k_s|11|Q3_K_S|--arch llama --n-embd 256 --n-layer 16 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
llama16-q3_k_m|12|Q3_K_M|--arch llama --n-embd 256 --n-layer 16 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
llama16-q3_k_l|13|Q3_K_L|--arch llama --n-embd 256 --n-layer 16 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
llama-gqa4-q2_k|10|Q2_K_MIX|--arch llama --n-embd 256 --n-layer 8 --n-head 8 --n-head-kv 2 --n-ff 512 --tied
llama-gqa4-q2_k_s|21 imatrix|Q2_K_S|--arch llama --n-embd 256 --n-layer 8 --n-head 8 --n-head-kv 2 --n-ff 512 --tied
qwen2-896-q2_k|10|Q2_K_MIX|--arch qwen2 --n-embd 896 --n-layer 3 --n-head 14 --n-head-kv 2 --n-ff 640 --tied
qwen2-896-q3_k_m|12|Q3_K_M|--arch qwen2 --n-embd 896 --n-layer 3 --n-head 14 --n-head-kv 2 --n-ff 640 --tied
qwen3moe-q2_k|10|Q2_K_MIX|--arch qwen3moe --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --head-dim 64 --n-ff 256 --experts 8,4 --untied
qwen3moe-q2_k_s|21 imatrix|Q2_K_S|--arch qwen3moe --n-embd 256 --n-layer 8 --n-head 4 --n-head-kv 2 --head-dim 64 --n-ff 256 --experts 8,4 --untied
qwen3moe-q3_k_m|12|Q3_K_M|--arch qwen3moe --n-embd 256 --n-layer 16 --n-head 4 --n-head-kv 2 --head-dim 64 --n-ff 256 --experts 8,4 --untied
qwen3moe-q3_k_l|13|Q3_K_L|--arch qwen3moe --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --head-dim 64 --n-ff 256 --experts 8,4 --untied
qwen3moe16-q3_k_m|12|Q3_K_M|--arch qwen3moe --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --head-dim 64 --n-ff 256 --experts 16,4 --untied
mixtral-q3_k_s|11|Q3_K_S|--arch llama --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 256 --experts 8,2 --tied
qwen2moe-q3_k_m|12|Q3_K_M|--arch qwen2moe --n-embd 256 --n-layer 16 --n-head 4 --n-head-kv 2 --n-ff 256 --experts 4,2 --untied
phi3-q2_k|10|Q2_K_MIX|--arch phi3 --n-embd 256 --n-layer 2 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
phi3-q3_k_m|12|Q3_K_M|--arch phi3 --n-embd 256 --n-layer 4 --n-head 4 --n-head-kv 2 --n-ff 512 --untied
gemma3-q3_k_l|13|Q3_K_L|--arch gemma3 --n-embd 256 --n-layer 6 --n-head 4 --n-head-kv 1 --head-dim 128 --n-ff 512 --tied --swa 4
gpt-oss-q2_k|10|Q2_K_MIX|-p gpt-oss-tiny
llama80-q3_k_m|12|Q3_K_M|--arch llama --n-embd 256 --n-layer 80 --n-head 4 --n-head-kv 2 --n-ff 256 --untied
llama80-q4_k_m|15|Q4_K_M|--arch llama --n-embd 256 --n-layer 80 --n-head 4 --n-head-kv 2 --n-ff 256 --untied
llama80-mha-q3_k_s|11|Q3_K_S|--arch llama --n-embd 256 --n-layer 80 --n-head 4 --n-head-kv 4 --n-ff 256 --untied
qwen2-80-q2_k|10|Q2_K_MIX|--arch qwen2 --n-embd 256 --n-layer 80 --n-head 4 --n-head-kv 4 --n-ff 256 --tied
CASES
echo "$n models compared with llama.cpp's quantizer"
exit $fail
