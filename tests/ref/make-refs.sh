#!/bin/sh
# make-refs.sh: writes tests/data/llamacpp-*.txt, llama.cpp's logits for small random-weight
# models of each architecture and weight type fusiond runs, which test_llamacpp_ref compares
# fusiond's logits with.  Not part of make check: run it by hand after `make` (it needs
# fusion-gguf-gen) when a model is added here, and commit the files it writes:
#   (cd tests/ref && npm install) && tests/ref/make-refs.sh
# Each file's "model" line is the whole recipe: the test writes the same model from it.
# llama.cpp's numbers depend a little on the host (ggml picks its CPU kernels by the CPU's
# features): rewriting every file on an AVX2 host moved the F32 ones by under 1e-6 and the
# Q8_0 ones by up to 1.6e-2 from those written on another, so rewrite (MAKE_REFS_ONLY=NAME,
# a shell pattern, one name or glob a run) only the files whose model changed or is new.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
gen=${FUSION_GGUF_GEN:-$top/fusion-gguf-gen}
ref=$top/tests/ref
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
[ -x "$gen" ] || { echo "make-refs.sh: $gen is missing (run make first)" >&2; exit 1; }
[ -d "$ref/node_modules/node-llama-cpp" ] ||
    { echo "make-refs.sh: run 'npm install' in tests/ref first" >&2; exit 1; }
version=$(node -p "require('$ref/node_modules/node-llama-cpp/package.json').version")
release=$(node -p "const m=require('$ref/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/_nlcBuildMetadata.json');m.buildOptions.llamaCpp.release")

# The prompt: BOS, then ids spread over the vocabulary (all models have 512 tokens).
ids="1 300 45 511 259 400 3 260 77 128"
# Mixtures of experts: a longer one, so that every expert of every layer is chosen somewhere
# (the test checks that it is; with random weights the later layers' rows look alike and
# favour a few experts, so the seeds below are ones where the prompt reaches all 8).  In the
# quantized ones, a row whose 4th and 5th experts score nearly alike can pick another expert
# in fusiond than in llama.cpp when the two round activations differently (its Q8_0 and its
# reference ops' unrounded products do): that row's logits then differ by 0.05 to 0.15, not
# 0.02; their seeds are also ones where no row sits that close to a tie (olmoe-q4_k_m's 39
# and qwen2moe-q4_k_m's 44 did once their attn_k/attn_v became Q8_0, as llama.cpp's recipe
# has them with 8 experts).
moe_ids="$ids 5 200 333 444 17 99 350 480 12 64 150 222 390 500"
# RoPE scaling (YaRN): a 48-token prompt, so that the later positions turn the ramp's pairs
# far from where linear scaling puts them.
long_ids="$moe_ids 7 111 222 303 404 505 6 16 26 36 46 56 66 76 86 96 106 116 126 136 146 156 166 176"

# name | arch n_embd n_layer n_head n_head_kv head_dim n_ff type tied seed rope_freqs
#        orig_ctx attn_factor (orig_ctx > 0: Phi-3.5 LongRoPE; the context is 256)
#        [swa attn_softcap final_softcap rope_base [rope_scale]] (gemma2/gemma3 only: the
#        sliding window, gemma2's soft-caps, the RoPE base, a linear RoPE scaling factor; a
#        window shorter than the prompt, so it matters)
#        [N,K] (the other architectures: a mixture of N experts, K per token, n_ff each)
#        [yarn:F:N[:A]] (the other architectures: YaRN by F from an original context of N,
#        rope.scaling.attn_factor A)
#        [N,K W [yarn:F:N]] (gpt-oss: N experts, K per token, the sliding window W of its
#        even layers, YaRN; the 48-token prompt, so the window matters from position W on)
# A name ending in -kv-TYPE (f16, q8_0, ...): llama.cpp's KV cache (K and V) of that type,
# written on a "cache" line; else f32.
# MAKE_REFS_ONLY='gemma*' (a shell pattern) rewrites only the files of the names it matches.
while IFS='|' read -r name spec; do
    case $name in ${MAKE_REFS_ONLY:-*}) ;; *) continue ;; esac
    set -- $spec
    arch=$1 embd=$2 layer=$3 head=$4 headkv=$5 hd=$6 ff=$7 type=$8 tied=$9 seed=${10} rf=${11}
    orig=${12} af=${13} swa=${14:-0} acap=${15:-0} fcap=${16:-0} base=${17:-10000}
    rscale=${18:-0}
    case $name in *-kv-*) cache=${name##*-kv-};; *) cache=f32;; esac
    gflags=; gkeys=; pids=$ids
    case $arch in
    gemma*)
        gflags="--rope-base $base"
        [ "$swa" != 0 ] && gflags="$gflags --swa $swa"
        [ "$acap" != 0 ] && gflags="$gflags --softcap $acap,$fcap"
        gkeys=" n_swa=$swa attn_softcap=$acap final_softcap=$fcap rope_base=$base"
        [ "$rscale" != 0 ] && gflags="$gflags --rope-scale $rscale" &&
            gkeys="$gkeys rope_scale=$rscale";;
    gpt-oss)
        gflags="--experts ${14} --swa ${15}"
        gkeys=" n_expert=${14%,*} n_expert_used=${14#*,} n_swa=${15}"
        pids=$long_ids
        case ${16:-} in yarn:*)
            gflags="$gflags --rope-scaling ${16}"
            gkeys="$gkeys rope_scaling=${16}";;
        esac;;
    *)
        case ${14:-} in yarn:*)
            gflags="--rope-scaling ${14}"
            gkeys=" rope_scaling=${14}"
            pids=$long_ids;;
        esac
        if [ -n "${14:-}" ] && [ -z "$gflags" ]; then
            gflags="--experts ${14}"
            gkeys=" n_expert=${14%,*} n_expert_used=${14#*,}"
            pids=$moe_ids
        fi;;
    esac
    model=$tmp/$name.gguf
    tflag=--untied; [ "$tied" = 1 ] && tflag=--tied
    hdflag=; [ "$hd" != 0 ] && hdflag="--head-dim $hd"
    rfflag=; [ "$rf" = 1 ] && rfflag=--rope-freqs
    lrflag=; [ "$orig" != 0 ] && lrflag="--longrope $orig,$af"
    "$gen" -o "$model" --arch "$arch" --n-embd "$embd" --n-layer "$layer" \
        --n-head "$head" --n-head-kv "$headkv" $hdflag --n-ff "$ff" --n-vocab 512 \
        --n-ctx 256 -t "$type" $tflag $rfflag $lrflag $gflags -s "$seed" -j 1 >/dev/null
    out=$top/tests/data/llamacpp-$name.txt
    {
        echo "# llama.cpp's next-token logits after each prompt position, for the random model"
        echo "# the model line describes (fusion-gguf-gen's weights), written by tests/ref/make-refs.sh"
        echo "# with node-llama-cpp $version (llama.cpp tag $release, prebuilt CPU binaries, 1 thread)"
        echo "model arch=$arch n_embd=$embd n_layer=$layer n_head=$head n_head_kv=$headkv" \
             "head_dim=$hd n_ff=$ff n_vocab=512 n_ctx=256 type=$type tied=$tied seed=$seed" \
             "rope_freqs=$rf orig_ctx=$orig attn_factor=$af$gkeys"
        [ "$cache" = f32 ] || echo "cache $cache $cache"
        echo "ids $pids"
        LLAMACPP_CACHE_TYPE=$cache node "$ref/llamacpp-logits.mjs" "$model" $pids
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "wrote $out"
done <<'MODELS'
llama-f32|llama 64 2 4 2 0 160 F32 0 11 0 0 0
qwen2-f32|qwen2 64 2 4 2 0 160 F32 1 12 0 0 0
qwen3-f32|qwen3 64 2 4 2 32 160 F32 0 13 0 0 0
llama-q8_0|llama 256 2 4 2 0 512 Q8_0 0 14 0 0 0
llama-q4_0|llama 256 2 4 2 0 512 Q4_0 1 15 0 0 0
llama-q4_k_m|llama 256 2 4 2 0 512 Q4_K_M 0 16 0 0 0
llama-q5_k_m|llama 256 2 4 2 0 512 Q5_K_M 0 17 0 0 0
llama-q6_k|llama 256 2 4 2 0 512 Q6_K 0 18 0 0 0
qwen3-q4_k_m|qwen3 256 2 4 2 128 512 Q4_K_M 1 19 0 0 0
llama-f16|llama 64 2 4 2 0 160 F16 0 20 0 0 0
llama-bf16|llama 64 2 4 2 0 160 BF16 0 21 0 0 0
llama3-ropefreqs-f32|llama 64 2 4 2 0 160 F32 1 22 1 0 0
llama3-ropefreqs-q4_k_m|llama 256 2 4 2 0 512 Q4_K_M 1 23 1 0 0
phi3-f32|phi3 64 2 4 2 0 160 F32 0 24 0 0 0
phi3-longrope-short-f32|phi3 64 2 4 2 0 160 F32 0 25 0 4096 1.1902
phi3-longrope-long-f32|phi3 64 2 4 2 0 160 F32 1 26 0 128 1.1902
phi3-q4_k_m|phi3 256 2 4 2 0 512 Q4_K_M 0 27 0 0 0
gemma2-f32|gemma2 64 2 4 2 32 160 F32 1 28 0 0 0 4 2.5 4 10000
gemma3-f32|gemma3 64 6 4 2 32 160 F32 1 29 0 0 0 4 0 0 1000000
gemma2-q8_0|gemma2 256 2 4 2 64 512 Q8_0 1 30 0 0 0 4 2.5 4 10000
gemma3-q8_0|gemma3 256 6 4 1 128 512 Q8_0 1 31 0 0 0 4 0 0 1000000
gemma2-q4_k_m|gemma2 256 2 4 2 64 512 Q4_K_M 1 32 0 0 0 4 2.5 4 10000
gemma3-q4_k_m|gemma3 256 6 4 1 128 512 Q4_K_M 1 33 0 0 0 4 0 0 1000000
gemma3-ropescale-f32|gemma3 64 6 4 2 32 160 F32 1 35 0 0 0 4 0 0 1000000 8
gemma-f32|gemma 64 2 4 1 32 160 F32 1 36 0 0 0 0 0 0 10000
gemma-q4_k_m|gemma 256 2 4 1 128 512 Q4_K_M 1 37 0 0 0 0 0 0 10000
qwen3moe-f32|qwen3moe 64 2 4 2 32 96 F32 0 31 0 0 0 8,4
qwen3moe-q8_0|qwen3moe 256 2 4 2 64 256 Q8_0 0 32 0 0 0 8,4
qwen3moe-q4_k_m|qwen3moe 256 2 4 2 64 256 Q4_K_M 0 42 0 0 0 8,4
olmoe-f32|olmoe 64 2 4 4 0 96 F32 0 34 0 0 0 8,4
olmoe-q4_k_m|olmoe 256 2 4 4 0 256 Q4_K_M 0 50 0 0 0 8,4
mixtral-f32|llama 64 2 4 2 0 96 F32 0 41 0 0 0 8,2
mixtral-q4_0|llama 256 2 4 2 0 256 Q4_0 1 39 0 0 0 8,2
qwen2moe-f32|qwen2moe 64 2 4 2 0 96 F32 0 44 0 0 0 8,4
qwen2moe-q4_k_m|qwen2moe 256 2 4 2 0 256 Q4_K_M 0 69 0 0 0 8,4
qwen3-f32-kv-f16|qwen3 64 2 4 2 32 160 F32 0 13 0 0 0
qwen3-f32-kv-q8_0|qwen3 64 2 4 2 32 160 F32 0 13 0 0 0
llama-hd64-f32-kv-f16|llama 128 2 4 2 64 256 F32 0 28 0 0 0
llama-hd64-f32-kv-q8_0|llama 128 2 4 2 64 256 F32 0 28 0 0 0
llama-hd64-f32|llama 128 2 4 2 64 256 F32 0 28 0 0 0
llama-yarn-f32|llama 64 2 4 2 0 160 F32 0 45 0 0 0 yarn:4:4096
qwen2-yarn-f32|qwen2 64 2 4 2 0 160 F32 1 46 0 0 0 yarn:8:32
qwen3-yarn-f32|qwen3 64 2 4 2 32 160 F32 0 47 0 0 0 yarn:4:4096
qwen3-yarn-q8_0|qwen3 256 2 4 2 64 512 Q8_0 1 48 0 0 0 yarn:4:32768
qwen3-yarn-af-f32|qwen3 64 2 4 2 32 160 F32 0 49 0 0 0 yarn:8:2048:0.75
llama-q4_1|llama 256 2 4 2 0 512 Q4_1 0 50 0 0 0
llama-q5_0|llama 256 2 4 2 0 512 Q5_0 1 51 0 0 0
llama-q5_1|llama 256 2 4 2 0 512 Q5_1 0 52 0 0 0
llama-q2_k|llama 256 2 4 2 0 512 Q2_K 0 53 0 0 0
llama-q3_k|llama 256 2 4 2 0 512 Q3_K 1 54 0 0 0
llama-iq4_nl|llama 256 2 4 2 0 512 IQ4_NL 0 55 0 0 0
llama-iq4_xs|llama 256 2 4 2 0 512 IQ4_XS 1 56 0 0 0
llama-mxfp4|llama 256 2 4 2 0 512 MXFP4 0 57 0 0 0
llama-iq4_xs_mix|llama 256 2 8 2 0 640 IQ4_XS_MIX 0 58 0 0 0
qwen3moe-mxfp4_moe|qwen3moe 256 2 4 2 64 256 MXFP4_MOE 0 42 0 0 0 8,4
gpt-oss-f32|gpt-oss 64 2 4 2 32 96 F32 0 60 0 0 0 8,3 16 yarn:32:4096
gpt-oss-mxfp4_moe|gpt-oss 128 2 4 2 32 128 MXFP4_MOE 0 73 0 0 0 8,3 16 yarn:32:4096
MODELS

# LoRA adapters (fusion-gguf-gen --lora: seeded random A and B) applied by llama.cpp:
# name | arch n_embd n_layer n_head n_head_kv head_dim n_ff type tied seed | adapters, each
#        "rank alpha seed type targets scale", separated by ';'
while IFS='|' read -r name spec adapters; do
    case $name in ${MAKE_REFS_ONLY:-*}) ;; *) continue ;; esac
    set -- $spec
    arch=$1 embd=$2 layer=$3 head=$4 headkv=$5 hd=$6 ff=$7 type=$8 tied=$9 seed=${10}
    model=$tmp/$name.gguf
    tflag=--untied; [ "$tied" = 1 ] && tflag=--tied
    hdflag=; [ "$hd" != 0 ] && hdflag="--head-dim $hd"
    "$gen" -o "$model" --arch "$arch" --n-embd "$embd" --n-layer "$layer" \
        --n-head "$head" --n-head-kv "$headkv" $hdflag --n-ff "$ff" --n-vocab 512 \
        --n-ctx 256 -t "$type" $tflag -s "$seed" -j 1 >/dev/null
    lines= lora= k=0
    IFS=';'
    for a in $adapters; do
        IFS=' '
        set -- $a
        f=$tmp/$name-a$k.gguf
        "$gen" --lora "$model" -o "$f" --rank "$1" --alpha "$2" -s "$3" -t "$4" \
            --targets "$5" >/dev/null
        lines="${lines}lora rank=$1 alpha=$2 seed=$3 type=$4 targets=$5 scale=$6
"
        lora="$lora$f:$6;"
        k=$((k + 1))
        IFS=';'
    done
    IFS=' '
    out=$top/tests/data/llamacpp-$name.txt
    {
        echo "# llama.cpp's next-token logits after each prompt position, for the random model"
        echo "# the model line describes with the LoRA adapters of the lora lines applied at their"
        echo "# scales (fusion-gguf-gen's weights, fusion-gguf-gen --lora's adapters), written by"
        echo "# tests/ref/make-refs.sh with node-llama-cpp $version (llama.cpp tag $release,"
        echo "# prebuilt CPU binaries, 1 thread)"
        echo "model arch=$arch n_embd=$embd n_layer=$layer n_head=$head n_head_kv=$headkv" \
             "head_dim=$hd n_ff=$ff n_vocab=512 n_ctx=256 type=$type tied=$tied seed=$seed" \
             "rope_freqs=0 orig_ctx=0 attn_factor=0"
        printf '%s' "$lines"
        echo "ids $ids"
        LLAMACPP_LORA=$lora node "$ref/llamacpp-logits.mjs" "$model" $ids
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "wrote $out"
done <<'LORAS'
lora-llama-f32|llama 64 2 4 2 0 160 F32 0 11|4 8 51 F32 all 1
lora-llama-f32-scaled|llama 64 2 4 2 0 160 F32 0 11|4 8 51 F32 all 0.4;8 4 52 F16 attn_q,attn_v,ffn_down,output -1.5
lora-qwen2-f32|qwen2 64 2 4 2 0 160 F32 1 12|4 16 53 BF16 all 0.7
lora-phi3-f32|phi3 64 2 4 2 0 160 F32 0 24|4 8 54 F32 all 1
lora-llama-q8_0|llama 256 2 4 2 0 512 Q8_0 0 14|32 32 55 Q8_0 all 1
lora-llama-q4_k_m|llama 256 2 4 2 0 512 Q4_K_M 0 16|8 16 56 F16 all 0.5
LORAS

# The Gemma-style vocabulary (fusion-gguf-gen --gemma-vocab) tokenized by llama.cpp: texts with
# spaces and runs of them, newlines, tabs, user-defined and control pieces, UTF-8 that falls
# back to bytes; each without and with special-token parsing, no BOS added.
case tok-gemma in ${MAKE_REFS_ONLY:-*})
    model=$tmp/tok-gemma.gguf
    "$gen" -o "$model" --arch gemma3 --n-embd 64 --n-layer 1 --n-head 2 --n-head-kv 1 \
        --head-dim 32 --n-ff 64 --n-vocab 512 --n-ctx 256 -t F32 --tied --swa 4 \
        --rope-base 1000000 --gemma-vocab -s 34 -j 1 >/dev/null
    hex() { printf '%b' "$1" | od -An -v -tx1 | tr -d ' \n'; }
    set --
    for t in 'Hello world' ' Hello  world' 'a  b   c    d     e' 'line\n\nbreak\n' \
             'tab\t\tx\t' '<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n' \
             '<b>bold</b> <bos> <eos> <pad> <unk> <mask>' 'Gr\303\274\303\237e, \344\270\226\347\225\214! \360\237\231\202' \
             ' ' '\n' 'x<end_of_turn>y<start_of_turn>z'; do
        set -- "$@" "$(hex "$t")"
    done
    set -- "$@" -
    out=$top/tests/data/llamacpp-tok-gemma.txt
    {
        echo "# llama.cpp's token ids for texts (hex UTF-8; - is the empty text) in the Gemma-style"
        echo "# vocabulary of the model line (fusion-gguf-gen --gemma-vocab), without (0) and with (1)"
        echo "# special-token parsing, no BOS added; written by tests/ref/make-refs.sh with"
        echo "# node-llama-cpp $version (llama.cpp tag $release)"
        echo "model arch=gemma3 n_embd=64 n_layer=1 n_head=2 n_head_kv=1 head_dim=32 n_ff=64" \
             "n_vocab=512 n_ctx=256 type=F32 tied=1 seed=34 rope_freqs=0 orig_ctx=0 attn_factor=0" \
             "n_swa=4 attn_softcap=0 final_softcap=0 rope_base=1000000 gemma_vocab=1"
        node "$ref/llamacpp-tokens.mjs" "$model" "$@"
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "wrote $out";;
esac

# BERT-family encoders (fusion-gguf-gen --arch bert: WordPiece, or -p xlmr's unigram
# vocabulary) through llama.cpp's embedding path: the pooled output of each input (ids as
# they are, llama.cpp's token types all 0) for the file's pooling_type (1 mean, 2 CLS,
# 3 last; raw, not normalized), the classification head's first output (rank pooling) where
# the model has one, and the token ids of a few texts in its vocabulary.
# name | fusion-gguf-gen options | model line keys
bert_inputs() { # $1: CLS/<s> id, $2: SEP/</s> id
    echo "$1,17,40,99,$2 $1,$2 $1,5,31,60,77,90,101,120,140,161,180,199,210,230,250,7,9,11,13,$2" \
         "$1,12,70,71,$2,88,23,45,46,47,$2"
}
while IFS='|' read -r name opts keys; do
    case $name in ${MAKE_REFS_ONLY:-*}) ;; *) continue ;; esac
    model=$tmp/$name.gguf
    "$gen" -o "$model" --arch bert $opts -j 1 >/dev/null
    case $keys in *t5_vocab=1*) inputs=$(bert_inputs 0 2);; *) inputs=$(bert_inputs 2 3);; esac
    hex() { printf '%b' "$1" | od -An -v -tx1 | tr -d ' \n'; }
    set --
    for t in 'Hello world' 'the cat sat on the mat' 'Paris is the capital of France!' \
             'CAF\303\211 caf\303\251  na\303\257ve' "what's up? 123-45" 'a  b\tc\nd' \
             '[CLS] the [SEP] dog [MASK]' 'xyzzy qqq' '\345\214\227\344\272\254 hello' \
             '<s> is </s> a' ' '; do
        set -- "$@" "$(hex "$t")"
    done
    out=$top/tests/data/llamacpp-$name.txt
    {
        echo "# llama.cpp's pooled encoder outputs (embd: the file's pooling, not normalized; rank:"
        echo "# the classification head's first output) for the ids of each input, and the token ids"
        echo "# of texts (hex UTF-8) without (0) and with (1) special-token parsing, no [CLS]/[SEP]"
        echo "# added, for the random model of the model line (fusion-gguf-gen --arch bert $opts);"
        echo "# written by tests/ref/make-refs.sh with node-llama-cpp $version (llama.cpp tag"
        echo "# $release, prebuilt CPU binaries, 1 thread)"
        echo "model $keys"
        node "$ref/llamacpp-embed.mjs" "$model" embd $inputs
        case $keys in *cls=1*) node "$ref/llamacpp-embed.mjs" "$model" rank $inputs;; esac
        node "$ref/llamacpp-tokens.mjs" "$model" "$@"
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "wrote $out"
done <<'BERTS'
bert-mean-f32|--pooling 1 --cls 1 -s 61|t5_vocab=0 n_embd=64 n_layer=2 n_head=4 n_ff=96 n_vocab=256 n_ctx=128 n_types=2 cls=1 pooling=1 type=F32 seed=61
bert-cls-f32|--pooling 2 -s 62|t5_vocab=0 n_embd=64 n_layer=2 n_head=4 n_ff=96 n_vocab=256 n_ctx=128 n_types=2 cls=0 pooling=2 type=F32 seed=62
bert-last-f32|--pooling 3 -s 63|t5_vocab=0 n_embd=64 n_layer=2 n_head=4 n_ff=96 n_vocab=256 n_ctx=128 n_types=2 cls=0 pooling=3 type=F32 seed=63
bert-mean-q8_0|--pooling 1 --cls 1 -t Q8_0 -s 64|t5_vocab=0 n_embd=64 n_layer=2 n_head=4 n_ff=96 n_vocab=256 n_ctx=128 n_types=2 cls=1 pooling=1 type=Q8_0 seed=64
bert-cls-f16|--pooling 2 --cls 1 -t F16 -s 66|t5_vocab=0 n_embd=64 n_layer=2 n_head=4 n_ff=96 n_vocab=256 n_ctx=128 n_types=2 cls=1 pooling=2 type=F16 seed=66
xlmr-cls-f32|-p xlmr --cls 1 -s 65|t5_vocab=1 n_embd=64 n_layer=2 n_head=4 n_ff=96 n_vocab=300 n_ctx=128 n_types=1 cls=1 pooling=2 type=F32 seed=65
BERTS
