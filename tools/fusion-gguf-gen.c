/* fusion-gguf-gen: writes a Llama-shaped GGUF model with seeded random weights (and an
 * SPM-style vocabulary), from a preset shape or explicit hyperparameters, in any of the
 * weight types the engine runs.  For tests and benchmarks: realistic sizes without
 * downloading anything.  The written file is re-opened with the validating reader. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/bert_gen.h"
#include "engine/gguf.h"
#include "engine/gguf_write.h"
#include "engine/lora.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fusion-gguf-gen -o OUT.gguf [options]\n"
            "  -o, --output PATH     file to write (written to PATH.tmp, then renamed)\n"
            "  -p, --preset NAME     shape of a known model (default stories260K):");
    for (const char *const *n = gguf_w_llama_preset_names(); *n; n++)
        fprintf(f, " %s", *n);
    fprintf(f,
            "\n"
            "  -t, --type TYPE       F32 (default), F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,\n"
            "                        Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q4_K_M, Q5_K_M, IQ4_NL,\n"
            "                        IQ4_XS,\n"
            "                        MXFP4, IQ4_XS_MIX (llama-quantize's IQ4_XS recipe),\n"
            "                        MXFP4_MOE (MXFP4 experts, the rest Q8_0), Q2_K_MIX\n"
            "                        (llama-quantize's Q2_K recipe; Q2_K alone: every\n"
            "                        matrix Q2_K), Q2_K_S, Q3_K_S, Q3_K_M, Q3_K_L\n"
            "  -s, --seed N          weights seed (default 1)\n"
            "  -j, --threads N       threads that fill and quantize (default: online CPUs)\n"
            "      --arch NAME       llama, qwen2 (Q/K/V biases), qwen3 (Q/K norms), phi3\n"
            "                        (fused Q|K|V and gate|up tensors), gemma, gemma2,\n"
            "                        gemma3, or the mixtures of experts qwen3moe, qwen2moe\n"
            "                        (a shared expert), olmoe and gpt-oss (attention sinks,\n"
            "                        biases, swiglu_oai; --swa N its window) (default: the\n"
            "                        preset's)\n"
            "      --exp-type TYPE   the expert tensors' type (gpt-oss's files: MXFP4; default\n"
            "                        --type's)\n"
            "      --experts N,K     N experts, K of them per token (qwen3moe, olmoe; llama:\n"
            "                        Mixtral-style); --n-ff is then each expert's width;\n"
            "                        0,0: dense\n"
            "      --n-embd N  --n-layer N  --n-head N  --n-head-kv N  --n-ff N\n"
            "      --head-dim N      attention.key_length (default n_embd / n_head)\n"
            "      --n-vocab N  --n-ctx N  --rope-base F  --eps F\n"
            "      --tied | --untied  output matrix shared with the embedding or not\n"
            "      --rope-freqs      a rope_freqs.weight tensor (Llama 3.1 RoPE factors)\n"
            "      --longrope N,F    Phi-3.5 LongRoPE: short and long factor tensors, original\n"
            "                        context N and attention factor F\n"
            "      --swa N           gemma: the local layers' sliding window (gemma3 512)\n"
            "      --softcap A,F     gemma2: attention and final logit soft-caps\n"
            "      --rope-scale F    linear RoPE scaling by F (rope.scaling.factor)\n"
            "      --rope-scaling linear:F | yarn:F:N[:A]\n"
            "                        linear scaling by F, or YaRN by F from an original\n"
            "                        context of N (rope.scaling.original_context_length)\n"
            "                        and attention factor A (rope.scaling.attn_factor)\n"
            "      --gemma-vocab     a Gemma-style vocabulary (<bos> 2, <eos> 1, user-defined\n"
            "                        pieces, no space prefix)\n"
            "      --name S          general.name\n"
            "      --arch bert       a BERT encoder (WordPiece vocabulary); -p bge-small, -p\n"
            "                        xlmr (XLM-RoBERTa's t5 vocabulary, as bge-m3), the\n"
            "                        shape options, --cls N (a classification head of N\n"
            "                        outputs: a reranker), --pooling N (bert.pooling_type)\n"
            "      --lora BASE.gguf  write a seeded random LoRA adapter for the model BASE\n"
            "                        instead (llama.cpp's adapter format; -t F32, F16, BF16\n"
            "                        or Q8_0, -s seed) with:\n"
            "      --rank R  --alpha A  (default 4 and 8)\n"
            "      --targets LIST    attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,\n"
            "                        ffn_down,output (Phi-3: attn_qkv) or all (default)\n"
            "  -h, --help\n"
            "Matrices whose rows do not fit the type's block size fall back as llama.cpp's\n"
            "quantizer does: IQ4_XS to IQ4_NL, Q2_K/Q3_K to Q4_0, Q4_K to Q5_0, Q5_K to\n"
            "Q5_1, Q6_K to Q8_0, or F16.\n");
}

static int parse_type(const char *s)
{
    if (strcasecmp(s, "Q4_K_M") == 0)
        return GGUF_W_MIX_Q4_K_M;
    if (strcasecmp(s, "Q5_K_M") == 0)
        return GGUF_W_MIX_Q5_K_M;
    if (strcasecmp(s, "IQ4_XS_MIX") == 0)
        return GGUF_W_MIX_IQ4_XS;
    if (strcasecmp(s, "MXFP4_MOE") == 0)
        return GGUF_W_MIX_MXFP4_MOE;
    static const struct { const char *name; int mix; } k23[] = {
        {"Q2_K_MIX", GGUF_W_MIX_Q2_K}, {"Q2_K_S", GGUF_W_MIX_Q2_K_S},
        {"Q3_K_S", GGUF_W_MIX_Q3_K_S}, {"Q3_K_M", GGUF_W_MIX_Q3_K_M},
        {"Q3_K_L", GGUF_W_MIX_Q3_K_L},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(k23); i++)
        if (strcasecmp(s, k23[i].name) == 0)
            return k23[i].mix;
    return gg_type_from_name(s);
}

static int parse_int(const char *opt, const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end || v <= 0 || v > (1 << 30)) {
        fprintf(stderr, "fusion-gguf-gen: %s: '%s' is not a positive integer\n", opt, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_float(const char *opt, const char *s, float *out)
{
    char *end;
    float v = strtof(s, &end);
    if (*s == 0 || *end || !(v > 0)) {
        fprintf(stderr, "fusion-gguf-gen: %s: '%s' is not a positive number\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

enum { O_ARCH = 256, O_EMBD, O_LAYER, O_HEAD, O_HEAD_KV, O_FF, O_VOCAB, O_CTX, O_HEAD_DIM,
       O_ROPE, O_EPS, O_TIED, O_UNTIED, O_NAME, O_ROPE_FREQS, O_LONGROPE, O_SWA, O_SOFTCAP,
       O_GEMMA_VOCAB, O_ROPE_SCALE, O_EXPERTS, O_LORA, O_RANK, O_ALPHA, O_TARGETS,
       O_ROPE_SCALING, O_CLS, O_POOLING, O_EXP_TYPE };

/* --arch bert: a BERT encoder (engine/bert_gen.h); preset bge-small, xlmr (XLM-RoBERTa's
 * unigram vocabulary, one token type: bge-m3's family) or a small default, the
 * shape options, --cls N (a classification head of N outputs: a reranker) and --pooling. */
static int write_bert(const char *out, const char *preset, const char *const *shape_arg,
                      const char *type, const char *seed, int threads, int n_cls, int pooling)
{
    bert_gen_t p = { .n_embd = 64, .n_layer = 2, .n_head = 4, .n_ff = 96, .n_vocab = 256,
                     .n_ctx = 128, .n_types = 2, .pooling = 1, .type = GG_F32, .seed = 1,
                     .eps = 1e-12f };
    if (preset && strcmp(preset, "bge-small") == 0) {
        bert_gen_bge_small(&p);
    } else if (preset && strcmp(preset, "xlmr") == 0) {
        bert_gen_xlmr_small(&p);
    } else if (preset) {
        fprintf(stderr, "fusion-gguf-gen: bert presets: bge-small, xlmr\n");
        return 2;
    }
    const struct { int opt; const char *name; int *field; } shape[] = {
        {O_EMBD, "--n-embd", &p.n_embd}, {O_LAYER, "--n-layer", &p.n_layer},
        {O_HEAD, "--n-head", &p.n_head}, {O_FF, "--n-ff", &p.n_ff},
        {O_VOCAB, "--n-vocab", &p.n_vocab}, {O_CTX, "--n-ctx", &p.n_ctx},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(shape); i++)
        if (shape_arg[shape[i].opt] && parse_int(shape[i].name, shape_arg[shape[i].opt],
                                                 shape[i].field))
            return 2;
    if (n_cls >= 0)
        p.n_cls_out = n_cls;
    if (pooling >= -1)
        p.pooling = pooling;
    if ((p.type = gg_type_from_name(type)) < 0) {
        fprintf(stderr, "fusion-gguf-gen: bert: type '%s' unknown\n", type);
        return 2;
    }
    if (seed)
        p.seed = strtoull(seed, NULL, 10);
    char err[256];
    double t0 = fd_now_s();
    int rc = bert_gen_write(&p, out, threads, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "fusion-gguf-gen: %s\n", err);
        return 1;
    }
    printf("%s: bert, n_embd %d, n_layer %d, n_head %d, n_ff %d, n_vocab %d, n_ctx %d, "
           "classification head %d, pooling %d, type %s, seed %llu, written in %.1f s\n", out,
           p.n_embd, p.n_layer, p.n_head, p.n_ff, p.n_vocab, p.n_ctx, p.n_cls_out, p.pooling,
           gg_type_name(p.type), (unsigned long long)p.seed, fd_now_s() - t0);
    return 0;
}

static int write_lora(const char *base, const char *out, const char *type, const char *seed,
                      int rank, float alpha, const char *targets)
{
    lora_gen_t g = { .base_path = base, .targets = targets, .rank = rank, .alpha = alpha,
                     .type = gg_type_from_name(type), .seed = 1 };
    if (seed) {
        char *end;
        g.seed = strtoull(seed, &end, 0);
        if (!*seed || *end) {
            fprintf(stderr, "fusion-gguf-gen: --seed: '%s' is not a number\n", seed);
            return 2;
        }
    }
    char err[512];
    int rc = lora_write_random(&g, out, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "fusion-gguf-gen: %s\n", err);
        return 1;
    }
    printf("%s: LoRA adapter for %s, rank %d, alpha %g, type %s, seed %" PRIu64 "\n", out,
           base, rank, (double)alpha, type, g.seed);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'}, {"preset", required_argument, 0, 'p'},
        {"type", required_argument, 0, 't'}, {"seed", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'}, {"threads", required_argument, 0, 'j'}, {"arch", required_argument, 0, O_ARCH},
        {"n-embd", required_argument, 0, O_EMBD}, {"n-layer", required_argument, 0, O_LAYER},
        {"n-head", required_argument, 0, O_HEAD}, {"n-head-kv", required_argument, 0, O_HEAD_KV},
        {"n-ff", required_argument, 0, O_FF}, {"n-vocab", required_argument, 0, O_VOCAB},
        {"n-ctx", required_argument, 0, O_CTX}, {"rope-base", required_argument, 0, O_ROPE},
        {"eps", required_argument, 0, O_EPS}, {"tied", no_argument, 0, O_TIED},
        {"untied", no_argument, 0, O_UNTIED}, {"name", required_argument, 0, O_NAME},
        {"head-dim", required_argument, 0, O_HEAD_DIM},
        {"rope-freqs", no_argument, 0, O_ROPE_FREQS},
        {"longrope", required_argument, 0, O_LONGROPE},
        {"swa", required_argument, 0, O_SWA}, {"softcap", required_argument, 0, O_SOFTCAP},
        {"gemma-vocab", no_argument, 0, O_GEMMA_VOCAB},
        {"rope-scale", required_argument, 0, O_ROPE_SCALE},
        {"rope-scaling", required_argument, 0, O_ROPE_SCALING},
        {"experts", required_argument, 0, O_EXPERTS},
        {"exp-type", required_argument, 0, O_EXP_TYPE},
        {"lora", required_argument, 0, O_LORA}, {"rank", required_argument, 0, O_RANK},
        {"alpha", required_argument, 0, O_ALPHA}, {"targets", required_argument, 0, O_TARGETS},
        {"cls", required_argument, 0, O_CLS}, {"pooling", required_argument, 0, O_POOLING},
        {0, 0, 0, 0},
    };
    const char *out = NULL, *preset = "stories260K", *type = "F32", *seed = NULL;
    const char *exp_type = NULL;
    const char *name = NULL, *arch = NULL;
    bool preset_set = false;
    int n_cls = -1, pooling = -2;
    /* Explicit shape options apply after the preset, whatever their order. */
    const char *shape_arg[O_HEAD_DIM + 1] = {0};
    int tied = -1;
    bool rope_freqs = false;
    int orig_ctx = 0;
    float attn_factor = 0;
    int n_swa = 0;
    bool gemma_vocab = false;
    float softcap[2] = { -1, -1 };
    int n_expert = -1, n_used = 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = ncpu > 0 ? (int)FD_MIN(ncpu, 256) : 1;
    float rope = 0, eps = 0, rope_scale = 0;
    int yarn_orig = 0;
    gguf_w_llama_t p;
    const char *lora_base = NULL, *targets = NULL;
    int rank = 4;
    float alpha = 8.0f;
    int c;
    while ((c = getopt_long(argc, argv, "o:p:t:s:j:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'p': preset = optarg; preset_set = true; break;
        case 't': type = optarg; break;
        case 's': seed = optarg; break;
        case 'j': if (parse_int("--threads", optarg, &threads)) return 2; break;
        case 'h': usage(stdout); return 0;
        case O_ARCH:
            if (strcmp(optarg, "llama") && strcmp(optarg, "qwen2") && strcmp(optarg, "qwen3") &&
                strcmp(optarg, "phi3") && strcmp(optarg, "gemma") && strcmp(optarg, "gemma2") &&
                strcmp(optarg, "gemma3") && strcmp(optarg, "qwen3moe") && strcmp(optarg, "olmoe") &&
                strcmp(optarg, "qwen2moe") && strcmp(optarg, "bert") &&
                strcmp(optarg, "gpt-oss")) {
                fprintf(stderr, "fusion-gguf-gen: architecture '%s' not supported (llama, "
                        "qwen2, qwen3, phi3, gemma, gemma2, gemma3, qwen3moe, qwen2moe, "
                        "olmoe, bert, gpt-oss)\n", optarg);
                return 2;
            }
            arch = optarg;
            break;
        case O_EMBD: case O_LAYER: case O_HEAD: case O_HEAD_KV: case O_FF: case O_VOCAB:
        case O_CTX: case O_HEAD_DIM:
            shape_arg[c] = optarg;
            break;
        case O_ROPE: if (parse_float("--rope-base", optarg, &rope)) return 2; break;
        case O_EPS: if (parse_float("--eps", optarg, &eps)) return 2; break;
        case O_TIED: tied = 1; break;
        case O_UNTIED: tied = 0; break;
        case O_NAME: name = optarg; break;
        case O_ROPE_FREQS: rope_freqs = true; break;
        case O_LONGROPE: {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (end == optarg || *end != ',' || n <= 0 || n > (1L << 30) ||
                parse_float("--longrope", end + 1, &attn_factor))
                return fprintf(stderr, "fusion-gguf-gen: --longrope: N,F with N > 0 and F > 0\n"), 2;
            orig_ctx = (int)n;
            break;
        }
        case O_EXPERTS: {
            char *end, *end2;
            long n = strtol(optarg, &end, 10), k = *end == ',' ? strtol(end + 1, &end2, 10) : -1;
            if (end == optarg || *end != ',' || end2 == end + 1 || *end2 || n < 0 || n > 1024 ||
                k < 0 || k > n || (n > 0 && k == 0))
                return fprintf(stderr, "fusion-gguf-gen: --experts: N,K with 1 <= K <= N <= "
                               "1024 (or 0,0)\n"), 2;
            n_expert = (int)n;
            n_used = (int)k;
            break;
        }
        case O_EXP_TYPE: exp_type = optarg; break;
        case O_SWA: if (parse_int("--swa", optarg, &n_swa)) return 2; break;
        case O_GEMMA_VOCAB: gemma_vocab = true; break;
        case O_ROPE_SCALE: if (parse_float("--rope-scale", optarg, &rope_scale)) return 2; break;
        case O_ROPE_SCALING: {
            char *end = NULL;
            long n = 0;
            bool yarn = strncmp(optarg, "yarn:", 5) == 0;
            if (yarn || strncmp(optarg, "linear:", 7) == 0)
                rope_scale = strtof(optarg + (yarn ? 5 : 7), &end);
            if (end && yarn && *end == ':')
                n = strtol(end + 1, &end, 10);
            if (end && yarn && *end == ':') { /* rope.scaling.attn_factor */
                attn_factor = strtof(end + 1, &end);
                if (!(attn_factor > 0) || !isfinite(attn_factor))
                    end = NULL;
            }
            if (!end || end == optarg || *end || !(rope_scale > 0) || !isfinite(rope_scale) ||
                (yarn && (n <= 0 || n > (1L << 30))))
                return fprintf(stderr, "fusion-gguf-gen: --rope-scaling: linear:F or "
                               "yarn:F:N[:A] with F > 0, N > 0 and A > 0\n"), 2;
            yarn_orig = (int)n;
            break;
        }
        case O_SOFTCAP: {
            char *end;
            softcap[0] = strtof(optarg, &end);
            if (end == optarg || *end != ',' || !(softcap[0] > 0) ||
                parse_float("--softcap", end + 1, &softcap[1]))
                return fprintf(stderr, "fusion-gguf-gen: --softcap: A,F both > 0\n"), 2;
            break;
        }
        case O_LORA: lora_base = optarg; break;
        case O_RANK: if (parse_int("--rank", optarg, &rank)) return 2; break;
        case O_ALPHA: if (parse_float("--alpha", optarg, &alpha)) return 2; break;
        case O_TARGETS: targets = optarg; break;
        case O_CLS: if (parse_int("--cls", optarg, &n_cls)) return 2; break;
        case O_POOLING: if (parse_int("--pooling", optarg, &pooling)) return 2; break;
        default: usage(stderr); return 2;
        }
    }
    if (lora_base && out && optind == argc)
        return write_lora(lora_base, out, type, seed, rank, alpha, targets);
    if (!out || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (arch && strcmp(arch, "bert") == 0)
        return write_bert(out, preset_set ? preset : NULL, shape_arg, type, seed, threads, n_cls,
                          pooling);
    if (gguf_w_llama_preset(preset, &p)) {
        fprintf(stderr, "fusion-gguf-gen: unknown preset '%s' (see --help)\n", preset);
        return 2;
    }
    const struct { int opt; const char *name; int *field; } shape[] = {
        {O_EMBD, "--n-embd", &p.n_embd}, {O_LAYER, "--n-layer", &p.n_layer},
        {O_HEAD, "--n-head", &p.n_head}, {O_HEAD_KV, "--n-head-kv", &p.n_head_kv},
        {O_FF, "--n-ff", &p.n_ff}, {O_VOCAB, "--n-vocab", &p.n_vocab},
        {O_CTX, "--n-ctx", &p.n_ctx}, {O_HEAD_DIM, "--head-dim", &p.head_dim},
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(shape); i++)
        if (shape_arg[shape[i].opt] && parse_int(shape[i].name, shape_arg[shape[i].opt],
                                                 shape[i].field))
            return 2;
    if (rope > 0)
        p.rope_base = rope;
    if (eps > 0)
        p.norm_eps = eps;
    if (tied >= 0)
        p.tied = tied;
    if (arch)
        p.arch = arch;
    if (n_expert >= 0) {
        p.n_expert = n_expert;
        p.n_expert_used = n_used;
    }
    p.rope_freqs = rope_freqs;
    p.gemma_vocab = gemma_vocab;
    if (rope_scale > 0)
        p.rope_scale = rope_scale;
    p.yarn_orig_ctx = yarn_orig;
    if (n_swa > 0)
        p.n_swa = n_swa;
    else if (p.n_swa == 0 && p.arch && strcmp(p.arch, "gemma3") == 0)
        p.n_swa = 512;
    if (softcap[0] > 0) {
        p.attn_softcap = softcap[0];
        p.final_softcap = softcap[1];
    }
    p.orig_ctx = orig_ctx;
    p.attn_factor = attn_factor;
    char defname[64];
    snprintf(defname, sizeof(defname), "random-%s", p.name);
    p.name = name ? name : defname;
    if ((p.wtype = parse_type(type)) < 0) {
        fprintf(stderr, "fusion-gguf-gen: unknown weight type '%s' (see --help for the "
                "types and mixes)\n", type);
        return 2;
    }
    if (exp_type && (p.exp_wtype = gg_type_from_name(exp_type)) <= 0) {
        fprintf(stderr, "fusion-gguf-gen: --exp-type: unknown or F32 type '%s'\n", exp_type);
        return 2;
    }
    if (seed) {
        char *end;
        p.seed = strtoull(seed, &end, 0);
        if (!*seed || *end) {
            fprintf(stderr, "fusion-gguf-gen: --seed: '%s' is not a number\n", seed);
            return 2;
        }
    }

    char err[512];
    double t0 = fd_now_s();
    int rc = gguf_w_llama_write(&p, out, threads, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "fusion-gguf-gen: %s\n", err);
        return 1;
    }
    double dt = fd_now_s() - t0;
    gguf_t *g;
    if ((rc = gguf_open(&g, out, err, sizeof(err)))) {
        fprintf(stderr, "fusion-gguf-gen: the written file does not read back: %s\n", err);
        return 1;
    }
    int64_t params = 0;
    for (int64_t i = 0; i < gguf_n_tensors(g); i++)
        params += gguf_tensor_nelems(gguf_tensor_at(g, i));
    printf("%s: %s-shaped %s, n_embd %d, n_layer %d, n_head %d/%d, head_dim %d, n_ff %d, "
           "n_vocab %d, n_ctx %d, %s, type %s, seed %" PRIu64 "\n",
           out, preset, p.arch ? p.arch : "llama", p.n_embd, p.n_layer, p.n_head, p.n_head_kv,
           p.head_dim ? p.head_dim : p.n_embd / p.n_head, p.n_ff, p.n_vocab, p.n_ctx,
           p.tied ? "tied output" : "separate output", type, p.seed);
    if (p.n_expert)
        printf("%d experts, %d per token (n_ff is each expert's)\n", p.n_expert,
               p.n_expert_used);
    printf("%" PRId64 " tensors, %" PRId64 " parameters, %" PRIu64 " bytes, written in %.1f s",
           gguf_n_tensors(g), params, gguf_file_size(g), dt);
    if (p.n_fallback)
        printf("; %d matrices in a fallback type (rows not a multiple of the block size)",
               p.n_fallback);
    printf("\n");
    gguf_close(g);
    return 0;
}
