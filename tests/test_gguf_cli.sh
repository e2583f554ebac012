#!/bin/sh
# test_gguf_cli.sh: proves `fusion-cli --info` prints a readable dump (header, metadata with
# long arrays abbreviated, the tensor table) of the real stories260K and of generated Q4_K_M
# and Q3_K_M models, that fusion-gguf-gen refuses a bad shape and an unknown type, and that
# fusion-cli refuses damaged files with the file, the problem and where, exit 1.
set -u
build=${top_builddir:-.}
cli=$build/fusion-cli
gen=$build/fusion-gguf-gen
shared=${FUSIOND_SHARED:-../shared}
model=$shared/models/stories260K.gguf
if [ ! -r "$model" ]; then
    if [ "${FUSIOND_REQUIRE_SHARED:-}" = 1 ]; then
        echo "FAIL: shared test data missing: $model (FUSIOND_REQUIRE_SHARED=1)"
        exit 1
    fi
    echo "SKIP: shared test data missing: $model (set FUSIOND_SHARED)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; failures=$((failures + 1)); }
# has FILE ERE WHAT: a line of FILE matches the extended regular expression
has() { if grep -Eq -- "$2" "$1"; then ok "$3"; else bad "$3: no line matching /$2/ in"; sed 's/^/    /' "$1" | head -40; fi; }

"$cli" --info "$model" >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -eq 0 ] && ok "--info stories260K exits 0" || bad "--info stories260K exits $rc: $(cat "$tmp/err")"
has "$tmp/out" "^$model: GGUF v3, 1185376 bytes, 19 metadata keys, 48 tensors, alignment 32, data at offset 14176\$" "header line"
has "$tmp/out" '^ +5  general\.architecture +STRING += "llama"$' "architecture"
has "$tmp/out" '^ +13  llama\.embedding_length +UINT32 += 64$' "embedding_length"
has "$tmp/out" '^ +17  llama\.block_count +UINT32 += 5$' "block_count"
has "$tmp/out" '^ +19  llama\.attention\.layer_norm_rms_epsilon +FLOAT32 += 9\.99999975e-06$' "eps"
has "$tmp/out" '^ +1  tokenizer\.ggml\.tokens +\[STRING x 512\] += \["<unk>", "<s>", "</s>", "<0x00>", .*, \.\.\. \(512 total\)\]$' "token array abbreviated"
has "$tmp/out" '^ +#  name +shape +type +offset +bytes$' "tensor table header"
has "$tmp/out" '^ +1  token_embd\.weight +64 x 512 +F32 +0 +131072$' "token_embd row"
has "$tmp/out" '^ +10  blk\.0\.ffn_down\.weight +172 x 64 +F32 +355840 +44032$' "ffn_down row"
has "$tmp/out" '^ +48  blk\.4\.ffn_norm\.weight +64 +F32 +1170944 +256$' "last tensor row"
has "$tmp/out" '^48 tensors, 292800 elements, 1171200 bytes of tensor data$' "totals"
n=$(grep -Ec '^ +[0-9]+  [a-z_.0-9]+\.weight +[0-9]' "$tmp/out")
[ "$n" = 48 ] && ok "48 tensor rows" || bad "48 tensor rows: $n"
[ -s "$tmp/err" ] && bad "stderr not empty: $(cat "$tmp/err")" || ok "nothing on stderr"

# a generated Q4_K_M model: the type mix shows in the table
if "$gen" -o "$tmp/q.gguf" --n-embd 256 --n-ff 512 --n-vocab 300 --n-layer 2 --n-head 4 \
        --n-head-kv 2 -t Q4_K_M -s 3 >"$tmp/gen" 2>&1; then
    ok "fusion-gguf-gen Q4_K_M"
    has "$tmp/gen" '^21 tensors, 1334528 parameters, ' "generator summary"
    "$cli" --info "$tmp/q.gguf" >"$tmp/out" 2>&1
    has "$tmp/out" 'general\.file_type +UINT32 += 15$' "file_type Q4_K_M"
    has "$tmp/out" 'fusiond\.seed +UINT64 += 3$' "seed recorded"
    has "$tmp/out" '^ +3  output\.weight +256 x 300 +Q6_K ' "output Q6_K"
    has "$tmp/out" ' blk\.0\.attn_q\.weight +256 x 256 +Q4_K +[0-9]+ +36864$' "attn_q Q4_K"
    has "$tmp/out" ' blk\.1\.ffn_down\.weight +512 x 256 +Q6_K ' "last ffn_down Q6_K"
else
    bad "fusion-gguf-gen Q4_K_M: $(cat "$tmp/gen")"
fi
# llama-quantize's Q3_K_M recipe: attn_v Q5_K in layers 0-1, ffn_down and attn_output Q4_K
if "$gen" -o "$tmp/q3.gguf" --n-embd 256 --n-ff 512 --n-vocab 300 --n-layer 2 --n-head 4 \
        --n-head-kv 2 -t Q3_K_M -s 3 >"$tmp/gen" 2>&1; then
    ok "fusion-gguf-gen Q3_K_M"
    "$cli" --info "$tmp/q3.gguf" >"$tmp/out" 2>&1
    has "$tmp/out" 'general\.file_type +UINT32 += 12$' "file_type Q3_K_M"
    has "$tmp/out" '^ +3  output\.weight +256 x 300 +Q6_K ' "Q3_K_M output Q6_K"
    has "$tmp/out" ' blk\.0\.attn_q\.weight +256 x 256 +Q3_K ' "Q3_K_M attn_q Q3_K"
    has "$tmp/out" ' blk\.1\.attn_v\.weight +256 x 128 +Q5_K ' "Q3_K_M attn_v Q5_K"
    has "$tmp/out" ' blk\.1\.ffn_down\.weight +512 x 256 +Q4_K ' "Q3_K_M ffn_down Q4_K"
else
    bad "fusion-gguf-gen Q3_K_M: $(cat "$tmp/gen")"
fi
# an unknown type name: exit 2, the name and where to look, no file
"$gen" -o "$tmp/u.gguf" -t Q3_K_XL >"$tmp/gen" 2>&1
rc=$?
[ $rc -eq 2 ] && grep -Fq "unknown weight type 'Q3_K_XL' (see --help" "$tmp/gen" && [ ! -e "$tmp/u.gguf" ] &&
    ok "generator refuses an unknown type" || bad "generator unknown type: rc $rc $(cat "$tmp/gen")"
"$gen" -o "$tmp/x.gguf" --n-head 7 >"$tmp/gen" 2>&1
rc=$?
[ $rc -eq 1 ] && grep -q "n_head 7" "$tmp/gen" && [ ! -e "$tmp/x.gguf" ] && ok "generator refuses a bad shape" || bad "generator bad shape: rc $rc $(cat "$tmp/gen")"

# damaged files: exit 1, nothing on stdout, "fusion-cli: FILE: what (where)" on stderr
refuse() { # FILE PHRASE WHAT
    "$cli" --info "$1" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    if [ $rc -eq 1 ] && [ ! -s "$tmp/out" ] && grep -Fq "fusion-cli: $1: " "$tmp/err" && grep -Fq -- "$2" "$tmp/err"; then
        ok "$3"
    else
        bad "$3: rc $rc, stderr: $(cat "$tmp/err")"
    fi
}
head -c 5000 "$model" >"$tmp/cut.gguf"
refuse "$tmp/cut.gguf" "truncated: array string at offset 4996 needs 8 bytes, only 4 remain in the file (5000 bytes) (key 'tokenizer.ggml.tokens', array element 370)" "cut in the vocabulary"
head -c 1185000 "$model" >"$tmp/cut2.gguf"
refuse "$tmp/cut2.gguf" "runs past the end of the file (1185000 bytes) (tensor 'blk.4.ffn_up.weight')" "cut in the tensor data"
head -c 20 "$model" >"$tmp/cut3.gguf"
refuse "$tmp/cut3.gguf" "truncated: metadata count at offset 16 needs 8 bytes, only 4 remain" "cut in the header"
printf 'GGML\003\000\000\000' >"$tmp/magic.gguf"
refuse "$tmp/magic.gguf" "bad magic (first bytes 47 47 4d 4c), not a GGUF file" "bad magic"
{ printf 'GGUF\007\000\000\000'; head -c 16 /dev/zero; } >"$tmp/v7.gguf"
refuse "$tmp/v7.gguf" "GGUF version 7 is not supported" "version 7"
: >"$tmp/empty.gguf"
refuse "$tmp/empty.gguf" "the file is 0 bytes" "empty file"
refuse "$tmp" "not a regular file" "a directory"
refuse "$tmp/missing.gguf" "cannot open: No such file or directory" "a missing file"

[ $failures -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
exit 0
