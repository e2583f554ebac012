/* fusion-cli: generates text with a GGUF model from the command line, on the same model,
 * decoder step, fusion plans and sampler as fusiond.  The continuation (not the prompt) goes
 * to stdout as it is generated, UTF-8 safe; prompt and generation speed and the per-op time
 * split go to stderr.  --info prints a model file's metadata and tensors. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/backend.h"
#include "common/fd.h"
#include "engine/engine.h"
#include "engine/grammar.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/ngram.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"

/* The demo model fusiond ships (issue 10), relative to the data directory: what runs when no
 * -m is given, as for fusiond itself. */
#ifndef FD_DATADIR
#define FD_DATADIR "/usr/share/fusiond"
#endif
#ifndef FD_DEMO_MODEL
#define FD_DEMO_MODEL "models/demo.gguf"
#endif

typedef struct cli {
    const char *model, *prompt, *backend, *info;
    int n_gen, threads, n_ctx;
    int draft_max, lookup_min, lookup_max;  /* n-gram speculation (draft_max 0: off) */
    bool fusion, stats, swa_full;
    int softmax_mode;
    int cache_type_k, cache_type_v; /* enum gg_type */
    eng_sampling_t sampling;
    const char *backend_opts[33];   /* --backend-option KEY=VALUE, NULL-terminated */
    int n_backend_opts;
    const char *lora[32];           /* --lora FILE / --lora-scaled FILE SCALE */
    float lora_scale[32];
    int n_lora;
    llm_rope_params_t rope;         /* --rope-* / --yarn-* (llama-server's names) */
    const char *breakers[SMP_MAX_BREAKERS]; /* --dry-sequence-breaker */
    int n_breakers;
    bool no_breakers;               /* --dry-sequence-breaker none */
    eng_logit_bias_t bias[64];      /* -l / --logit-bias */
    int n_bias;
    bool ignore_eos;
    const char *grammar;            /* --grammar TEXT */
    const char *grammar_file;       /* --grammar-file FILE */
} cli_t;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fusion-cli [-m MODEL] [-p PROMPT] [-n N] [options]\n"
            "       fusion-cli --info MODEL\n"
            "\n"
            "Prints the continuation of PROMPT (empty: from the beginning-of-sequence token)\n"
            "to stdout as it is generated, then prompt and generation speed on stderr.\n"
            "\n"
            "  -m, --model FILE     GGUF model (llama, qwen2, qwen3, phi3, gemma, gemma2,\n"
            "                       gemma3, and the mixtures of experts qwen3moe, qwen2moe,\n"
            "                       olmoe, gpt-oss and Mixtral-style llama;\n"
            "                       default: the demo model,\n"
            "                       " FD_DATADIR "/" FD_DEMO_MODEL ")\n"
            "  -p, --prompt TEXT    prompt (default: empty)\n"
            "  -n, --n-predict N    tokens to generate at most (default 128)\n"
            "      --temp T         temperature, 0 = greedy (default 0.8)\n"
            "      --top-k K        keep the K most likely tokens, 0 = off (default 40)\n"
            "      --top-p P        nucleus sampling, 1 = off (default 0.95)\n"
            "      --min-p P        drop tokens below P x the best one's probability (0.05)\n"
            "      --seed N         sampler seed (default: random, printed on stderr)\n"
            "      --repeat-penalty F  penalize repeats of the last tokens (1 = off, default)\n"
            "      --repeat-last-n N  tokens the repeat penalty looks at (64; -1 = context)\n"
            "      --presence-penalty F, --frequency-penalty F  OpenAI's, over the\n"
            "                       generated tokens (0 = off)\n"
            "      --typical P      locally typical sampling (1 = off)\n"
            "      --top-nsigma N   keep logits within N standard deviations of the best\n"
            "                       (-1 = off)\n"
            "      --dynatemp-range R, --dynatemp-exp E  dynamic temperature T +- R by the\n"
            "                       entropy, exponent E (0 = off; E 1)\n"
            "      --xtc-probability P, --xtc-threshold T  exclude top choices (0 = off; T 0.1)\n"
            "      --dry-multiplier M  DRY repetition penalty (0 = off); --dry-base B (1.75),\n"
            "                       --dry-allowed-length N (2), --dry-penalty-last-n N (-1:\n"
            "                       the whole context), --dry-sequence-breaker S (repeatable;\n"
            "                       replaces the defaults \\n : \" *; 'none': no breakers)\n"
            "      --mirostat N     Mirostat 1 or 2 (0 = off), --mirostat-lr ETA (0.1),\n"
            "                       --mirostat-ent TAU (5)\n"
            "      --samplers LIST  the chain's order, names separated by ';' (penalties, dry,\n"
            "                       top_n_sigma, top_k, typ_p, top_p, min_p, xtc, temperature)\n"
            "      --sampling-seq S  the same by letters (e d s k y p m x t)\n"
            "  -l, --logit-bias ID+B  add B (or -B: ID-B; B may be inf) to token ID's logit\n"
            "                       (repeatable)\n"
            "      --ignore-eos     never end at an end-of-generation token\n"
            "      --grammar TEXT   constrain the output by a GBNF grammar (llama.cpp's)\n"
            "      --grammar-file FILE  the same, read from FILE\n"
            "      --threads N      CPU threads, 0 = one per online core (default 0)\n"
            "      --backend NAME   cpu (default), corsair, or cuda (builds --with-cuda)\n"
            "      --backend-option KEY=VALUE  a backend setting (repeatable; corsair:\n"
            "                       docs/corsair.md, cuda: docs/gpu.md)\n"
            "      --fusion on|off  deferred-normalization plan (default on)\n"
            "      --softmax MODE   fused softmax: maxsum (default) or sumonly\n"
            "      --ctx N          context length (default: the model's)\n"
            "  -ctk, --cache-type-k TYPE  KV cache type of K: f32 (default), f16, bf16, q8_0,\n"
            "                       q4_0, q4_1, q5_0, q5_1 (llama.cpp's names)\n"
            "  -ctv, --cache-type-v TYPE  KV cache type of V (the same types)\n"
            "      --rope-scaling none|linear|yarn  RoPE scaling type (default: the model's)\n"
            "      --rope-scale F, --rope-freq-scale S  scaling factor F (S = 1/F)\n"
            "      --rope-freq-base B  RoPE base (default: the model's)\n"
            "      --yarn-orig-ctx N  YaRN's original context (default: the model's)\n"
            "      --yarn-ext-factor X, --yarn-attn-factor A, --yarn-beta-slow B,\n"
            "      --yarn-beta-fast B  YaRN's blend (default 1 with yarn), attention factor,\n"
            "                       ramp ends (default 1 and 32), as llama.cpp's\n"
            "      --swa-full       sliding-window layers (Gemma 2/3) keep every position,\n"
            "                       not a ring of the window plus one batch\n"
            "      --lora FILE      a LoRA adapter (llama.cpp's GGUF adapters), scale 1;\n"
            "                       repeatable\n"
            "      --lora-scaled FILE SCALE  a LoRA adapter at this scale\n"
            "      --draft-max N    n-gram speculative decoding: verify up to N tokens that\n"
            "                       followed the last occurrence of the last tokens in the\n"
            "                       prompt and output, in one step (default 0: off; the\n"
            "                       output is the same, the speed is not)\n"
            "      --lookup-min N, --lookup-max N  n-gram lengths looked up (default 2, 4)\n"
            "      --info FILE      print the model's metadata and tensors, then exit\n"
            "  -h, --help           this text\n");
}

static int parse_int(const char *opt, const char *v, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "fusion-cli: %s: '%s' is not an integer in [%d, %d]\n", opt, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int parse_float(const char *opt, const char *v, float lo, float hi, float *out)
{
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "fusion-cli: %s: '%s' is not a number in [%g, %g]\n", opt, v,
                (double)lo, (double)hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* --samplers (names separated by ';', llama.cpp's spellings) or --sampling-seq (letters). */
static int parse_samplers(eng_sampling_t *s, const char *v, bool letters)
{
    int n = 0;
    for (const char *p = v; *p;) {
        int st;
        if (letters) {
            st = smp_step_from_char(*p++);
            if (!st) {
                fprintf(stderr, "fusion-cli: --sampling-seq: '%c' names no sampler (e d s k y p "
                        "m x t)\n", p[-1]);
                return -1;
            }
        } else {
            size_t l = strcspn(p, ";");
            char name[32] = "";
            if (l < sizeof name)
                memcpy(name, p, l);
            name[l < sizeof name ? l : 0] = '\0';
            if (!(st = smp_step_from_name(name))) {
                fprintf(stderr, "fusion-cli: --samplers: '%.*s' is not a sampler (penalties, "
                        "dry, top_n_sigma, top_k, typ_p, top_p, min_p, xtc, temperature)\n",
                        (int)FD_MIN(l, 40), p);
                return -1;
            }
            p += l + (p[l] == ';');
        }
        if (n == SMP_MAX_ORDER) {
            fprintf(stderr, "fusion-cli: at most %d samplers in the chain\n", SMP_MAX_ORDER);
            return -1;
        }
        s->order[n++] = (uint8_t)st;
    }
    if (n == 0) {
        fprintf(stderr, "fusion-cli: %s names no sampler\n", letters ? "--sampling-seq" : "--samplers");
        return -1;
    }
    s->n_order = n;
    return 0;
}

/* 0: run, 1: exit 0 (help), -1: exit 1. */
static int parse_args(cli_t *c, int argc, char **argv)
{
    enum { O_TEMP = 256, O_TOPK, O_TOPP, O_MINP, O_SEED, O_THREADS, O_BACKEND, O_FUSION,
           O_SOFTMAX, O_CTX, O_INFO, O_BACKEND_OPT, O_DRAFT, O_LKMIN, O_LKMAX, O_CTK, O_CTV,
           O_SWA_FULL, O_LORA, O_LORA_SCALED, O_REP_PEN, O_REP_N, O_PRES, O_FREQ, O_TYPICAL,
           O_NSIGMA, O_DYN_RANGE, O_DYN_EXP, O_XTC_P, O_XTC_T, O_DRY_MULT, O_DRY_BASE,
           O_DRY_LEN, O_DRY_LAST, O_DRY_BREAK, O_MIRO, O_MIRO_LR, O_MIRO_ENT, O_SAMPLERS,
           O_SEQ, O_IGNORE_EOS, O_GRAMMAR, O_GRAMMAR_FILE, O_ROPE0 };
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },  { "prompt", required_argument, NULL, 'p' },
        { "n-predict", required_argument, NULL, 'n' }, { "help", no_argument, NULL, 'h' },
        { "temp", required_argument, NULL, O_TEMP }, { "top-k", required_argument, NULL, O_TOPK },
        { "top-p", required_argument, NULL, O_TOPP }, { "min-p", required_argument, NULL, O_MINP },
        { "seed", required_argument, NULL, O_SEED },
        { "threads", required_argument, NULL, O_THREADS },
        { "backend", required_argument, NULL, O_BACKEND },
        { "backend-option", required_argument, NULL, O_BACKEND_OPT },
        { "fusion", required_argument, NULL, O_FUSION },
        { "softmax", required_argument, NULL, O_SOFTMAX },
        { "ctx", required_argument, NULL, O_CTX }, { "info", required_argument, NULL, O_INFO },
        { "draft-max", required_argument, NULL, O_DRAFT },
        { "lookup-min", required_argument, NULL, O_LKMIN },
        { "lookup-max", required_argument, NULL, O_LKMAX },
        { "cache-type-k", required_argument, NULL, O_CTK },
        { "cache-type-v", required_argument, NULL, O_CTV },
        { "swa-full", no_argument, NULL, O_SWA_FULL },
        { "lora", required_argument, NULL, O_LORA },
        { "lora-scaled", required_argument, NULL, O_LORA_SCALED },
        { "rope-scaling", required_argument, NULL, O_ROPE0 },
        { "rope-scale", required_argument, NULL, O_ROPE0 + 1 },
        { "rope-freq-base", required_argument, NULL, O_ROPE0 + 2 },
        { "rope-freq-scale", required_argument, NULL, O_ROPE0 + 3 },
        { "yarn-orig-ctx", required_argument, NULL, O_ROPE0 + 4 },
        { "yarn-ext-factor", required_argument, NULL, O_ROPE0 + 5 },
        { "yarn-attn-factor", required_argument, NULL, O_ROPE0 + 6 },
        { "yarn-beta-slow", required_argument, NULL, O_ROPE0 + 7 },
        { "yarn-beta-fast", required_argument, NULL, O_ROPE0 + 8 },
        { "repeat-penalty", required_argument, NULL, O_REP_PEN },
        { "repeat-last-n", required_argument, NULL, O_REP_N },
        { "presence-penalty", required_argument, NULL, O_PRES },
        { "frequency-penalty", required_argument, NULL, O_FREQ },
        { "typical", required_argument, NULL, O_TYPICAL },
        { "top-nsigma", required_argument, NULL, O_NSIGMA },
        { "dynatemp-range", required_argument, NULL, O_DYN_RANGE },
        { "dynatemp-exp", required_argument, NULL, O_DYN_EXP },
        { "xtc-probability", required_argument, NULL, O_XTC_P },
        { "xtc-threshold", required_argument, NULL, O_XTC_T },
        { "dry-multiplier", required_argument, NULL, O_DRY_MULT },
        { "dry-base", required_argument, NULL, O_DRY_BASE },
        { "dry-allowed-length", required_argument, NULL, O_DRY_LEN },
        { "dry-penalty-last-n", required_argument, NULL, O_DRY_LAST },
        { "dry-sequence-breaker", required_argument, NULL, O_DRY_BREAK },
        { "mirostat", required_argument, NULL, O_MIRO },
        { "mirostat-lr", required_argument, NULL, O_MIRO_LR },
        { "mirostat-ent", required_argument, NULL, O_MIRO_ENT },
        { "samplers", required_argument, NULL, O_SAMPLERS },
        { "sampling-seq", required_argument, NULL, O_SEQ },
        { "logit-bias", required_argument, NULL, 'l' },
        { "ignore-eos", no_argument, NULL, O_IGNORE_EOS },
        { "grammar", required_argument, NULL, O_GRAMMAR },
        { "grammar-file", required_argument, NULL, O_GRAMMAR_FILE },
        { NULL, 0, NULL, 0 },
    };
    /* llama.cpp's single-dash spellings */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-ctk"))
            argv[i] = (char *)"--cache-type-k";
        else if (!strcmp(argv[i], "-ctv"))
            argv[i] = (char *)"--cache-type-v";
    }
    memset(c, 0, sizeof(*c));
    c->prompt = "";
    c->backend = "cpu";
    c->n_gen = 128;
    c->fusion = true;
    c->softmax_mode = FB_SOFTMAX_MAXSUM;
    c->lookup_min = 2;
    c->lookup_max = 4;
    eng_sampling_default(&c->sampling);
    c->sampling.temperature = 0.8f;
    c->sampling.top_k = 40;
    c->sampling.top_p = 0.95f;
    c->sampling.min_p = 0.05f;
    int o;
    while ((o = getopt_long(argc, argv, "m:p:n:hl:", opts, NULL)) != -1) {
        int rc = 0;
        switch (o) {
        case 'm': c->model = optarg; break;
        case 'p': c->prompt = optarg; break;
        case 'n': rc = parse_int("-n", optarg, 0, 1 << 30, &c->n_gen); break;
        case 'h': usage(stdout); return 1;
        case O_TEMP: rc = parse_float("--temp", optarg, 0, 100, &c->sampling.temperature); break;
        case O_TOPK: rc = parse_int("--top-k", optarg, 0, 1 << 30, &c->sampling.top_k); break;
        case O_TOPP: rc = parse_float("--top-p", optarg, 1e-6f, 1, &c->sampling.top_p); break;
        case O_MINP: rc = parse_float("--min-p", optarg, 0, 1, &c->sampling.min_p); break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr, "fusion-cli: --seed: '%s' is not an unsigned integer\n", optarg);
                rc = -1;
            }
            c->sampling.seed = s;
            c->sampling.has_seed = true;
            break;
        }
        case O_THREADS: rc = parse_int("--threads", optarg, 0, 4096, &c->threads); break;
        case O_REP_PEN:
            rc = parse_float("--repeat-penalty", optarg, 1e-6f, 1e6f, &c->sampling.repeat_penalty);
            break;
        case O_REP_N:
            rc = parse_int("--repeat-last-n", optarg, -1, 1 << 30, &c->sampling.repeat_last_n);
            break;
        case O_PRES:
            rc = parse_float("--presence-penalty", optarg, -2, 2, &c->sampling.presence_penalty);
            break;
        case O_FREQ:
            rc = parse_float("--frequency-penalty", optarg, -2, 2, &c->sampling.frequency_penalty);
            break;
        case O_TYPICAL: {
            float typ;
            /* llama.cpp's 1 (or more) is off, 0 keeps the single most typical token (0 is
             * "off" to the sampler, so the smallest positive value stands for it) */
            if (!(rc = parse_float("--typical", optarg, 0, 1e6f, &typ)))
                c->sampling.typical_p = typ >= 1 ? 0 : typ == 0 ? FLT_MIN : typ;
            break;
        }
        case O_NSIGMA: /* llama.cpp's -1 (any value <= 0) is off */
            if (!(rc = parse_float("--top-nsigma", optarg, -1e6f, 1e6f, &c->sampling.top_n_sigma)) &&
                c->sampling.top_n_sigma < 0)
                c->sampling.top_n_sigma = 0;
            break;
        case O_DYN_RANGE:
            rc = parse_float("--dynatemp-range", optarg, 0, 1e6f, &c->sampling.dynatemp_range);
            break;
        case O_DYN_EXP:
            rc = parse_float("--dynatemp-exp", optarg, 0, 1e6f, &c->sampling.dynatemp_exponent);
            break;
        case O_XTC_P:
            rc = parse_float("--xtc-probability", optarg, 0, 1, &c->sampling.xtc_probability);
            break;
        case O_XTC_T:
            rc = parse_float("--xtc-threshold", optarg, 0, 1, &c->sampling.xtc_threshold);
            break;
        case O_DRY_MULT:
            rc = parse_float("--dry-multiplier", optarg, 0, 1e6f, &c->sampling.dry_multiplier);
            break;
        case O_DRY_BASE:
            rc = parse_float("--dry-base", optarg, 1, 1e6f, &c->sampling.dry_base);
            break;
        case O_DRY_LEN:
            rc = parse_int("--dry-allowed-length", optarg, 0, 1 << 30,
                           &c->sampling.dry_allowed_length);
            break;
        case O_DRY_LAST:
            rc = parse_int("--dry-penalty-last-n", optarg, -1, 1 << 30,
                           &c->sampling.dry_penalty_last_n);
            break;
        case O_DRY_BREAK:
            if (strcmp(optarg, "none") == 0) {
                c->no_breakers = true;
            } else if (!optarg[0] || strlen(optarg) > SMP_BREAKER_LEN ||
                       c->n_breakers == SMP_MAX_BREAKERS) {
                fprintf(stderr, "fusion-cli: --dry-sequence-breaker takes a string of 1 to %d "
                        "bytes, %d of them at most\n", SMP_BREAKER_LEN, SMP_MAX_BREAKERS);
                rc = -1;
            } else {
                c->breakers[c->n_breakers++] = optarg;
            }
            break;
        case O_MIRO: rc = parse_int("--mirostat", optarg, 0, 2, &c->sampling.mirostat); break;
        case O_MIRO_LR:
            rc = parse_float("--mirostat-lr", optarg, 0, 1, &c->sampling.mirostat_eta);
            break;
        case O_MIRO_ENT:
            rc = parse_float("--mirostat-ent", optarg, 0, 1e6f, &c->sampling.mirostat_tau);
            break;
        case O_SAMPLERS:
        case O_SEQ: rc = parse_samplers(&c->sampling, optarg, o == O_SEQ); break;
        case 'l': {
            if (c->n_bias == (int)FD_ARRAY_LEN(c->bias)) {
                fprintf(stderr, "fusion-cli: at most %d --logit-bias values\n", c->n_bias);
                rc = -1;
                break;
            }
            /* llama.cpp's TOKEN_ID(+/-)BIAS, e.g. 15043+1 or 15043-inf */
            char *end;
            errno = 0;
            long id = strtol(optarg, &end, 10);
            float b = 0;
            if (errno || end == optarg || id < 0 || id > INT32_MAX || (*end != '+' && *end != '-') ||
                parse_float("--logit-bias", end + 1, 0, INFINITY, &b)) {
                fprintf(stderr, "fusion-cli: --logit-bias takes TOKEN_ID+BIAS or TOKEN_ID-BIAS "
                        "(e.g. 15043+1, 15043-inf), not '%s'\n", optarg);
                rc = -1;
                break;
            }
            c->bias[c->n_bias++] = (eng_logit_bias_t){ (int32_t)id, *end == '-' ? -b : b };
            break;
        }
        case O_IGNORE_EOS: c->ignore_eos = true; break;
        case O_GRAMMAR: c->grammar = optarg; break;
        case O_GRAMMAR_FILE: c->grammar_file = optarg; break;
        case O_BACKEND: c->backend = optarg; break;
        case O_BACKEND_OPT:
            if (c->n_backend_opts == 32 || !strchr(optarg, '=')) {
                fprintf(stderr, "fusion-cli: --backend-option takes KEY=VALUE (32 at most)\n");
                rc = -1;
            } else {
                c->backend_opts[c->n_backend_opts++] = optarg;
            }
            break;
        case O_FUSION:
            if (strcmp(optarg, "on") == 0) {
                c->fusion = true;
            } else if (strcmp(optarg, "off") == 0) {
                c->fusion = false;
            } else {
                fprintf(stderr, "fusion-cli: --fusion takes on or off, not '%s'\n", optarg);
                rc = -1;
            }
            break;
        case O_SOFTMAX:
            if (strcmp(optarg, "maxsum") == 0) {
                c->softmax_mode = FB_SOFTMAX_MAXSUM;
            } else if (strcmp(optarg, "sumonly") == 0) {
                c->softmax_mode = FB_SOFTMAX_SUMONLY;
            } else {
                fprintf(stderr, "fusion-cli: --softmax takes maxsum or sumonly, not '%s'\n",
                        optarg);
                rc = -1;
            }
            break;
        case O_CTX: rc = parse_int("--ctx", optarg, 1, 1 << 24, &c->n_ctx); break;
        case O_INFO: c->info = optarg; break;
        case O_SWA_FULL: c->swa_full = true; break;
        case O_CTK:
        case O_CTV: {
            int t = fb_kv_type_from_name(optarg);
            if (t < 0) {
                fprintf(stderr, "fusion-cli: %s takes f32, f16, bf16, q8_0, q4_0, q4_1, q5_0 or "
                        "q5_1, not '%s'\n", o == O_CTK ? "--cache-type-k" : "--cache-type-v",
                        optarg);
                rc = -1;
            } else {
                *(o == O_CTK ? &c->cache_type_k : &c->cache_type_v) = t;
            }
            break;
        }
        case O_DRAFT: rc = parse_int("--draft-max", optarg, 0, ENG_DRAFT_MAX, &c->draft_max); break;
        case O_LKMIN: rc = parse_int("--lookup-min", optarg, 1, 64, &c->lookup_min); break;
        case O_LKMAX: rc = parse_int("--lookup-max", optarg, 1, 64, &c->lookup_max); break;
        case O_LORA:
        case O_LORA_SCALED:
            if (c->n_lora == (int)FD_ARRAY_LEN(c->lora)) {
                fprintf(stderr, "fusion-cli: at most %d LoRA adapters\n", c->n_lora);
                rc = -1;
                break;
            }
            c->lora_scale[c->n_lora] = 1.0f;
            if (o == O_LORA_SCALED) {
                if (optind >= argc) {
                    fprintf(stderr, "fusion-cli: --lora-scaled takes FILE SCALE\n");
                    rc = -1;
                    break;
                }
                rc = parse_float("--lora-scaled", argv[optind++], -1000, 1000,
                                 &c->lora_scale[c->n_lora]);
            }
            c->lora[c->n_lora++] = optarg;
            break;
        default:
            if (o >= O_ROPE0 && o <= O_ROPE0 + 8) { /* llm_rope_option_names' order */
                char err[160];
                if (llm_rope_option(&c->rope, llm_rope_option_names[o - O_ROPE0], optarg, err,
                                    sizeof(err))) {
                    fprintf(stderr, "fusion-cli: %s\n", err);
                    rc = -1;
                }
                break;
            }
            usage(stderr);
            return -1;
        }
        if (rc)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "fusion-cli: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (c->grammar && c->grammar_file) {
        fprintf(stderr, "fusion-cli: give --grammar or --grammar-file, not both\n");
        return -1;
    }
    if (c->lookup_min > c->lookup_max) {
        fprintf(stderr, "fusion-cli: --lookup-min %d is more than --lookup-max %d\n",
                c->lookup_min, c->lookup_max);
        return -1;
    }
    if (!c->info && !c->model) {
        c->model = FD_DATADIR "/" FD_DEMO_MODEL;
#ifdef FD_SRC_DEMO_MODEL
        /* Not installed yet: run from the build tree, like fusiond does. */
        if (access(c->model, R_OK) != 0 && access(FD_SRC_DEMO_MODEL, R_OK) == 0)
            c->model = FD_SRC_DEMO_MODEL;
#endif
        if (access(c->model, R_OK) != 0) {
            fprintf(stderr, "fusion-cli: no model: give -m MODEL (the demo model %s is not "
                    "installed)\n", c->model);
            return -1;
        }
    }
    return 0;
}

static int info(const char *path)
{
    gguf_t *g;
    char err[512];
    int rc = gguf_open(&g, path, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "fusion-cli: %s\n", err);
        return 1;
    }
    gguf_dump(g, stdout);
    gguf_close(g);
    return 0;
}

/* Tokens of the prompt; empty text is the BOS token alone. */
static int encode_prompt(const tok_t *t, const char *text, int32_t **ids, size_t *n)
{
    size_t len = strlen(text), cap = len + 8;
    *ids = NULL;
    *n = 0;
    if (len == 0) {
        if (tok_bos(t) < 0) {
            fprintf(stderr, "fusion-cli: empty prompt and the vocabulary has no BOS token\n");
            return -1;
        }
        *ids = malloc(sizeof(int32_t));
        if (!*ids)
            return -1;
        (*ids)[0] = tok_bos(t);
        *n = 1;
        return 0;
    }
    for (;;) {
        int32_t *p = realloc(*ids, cap * sizeof(int32_t));
        if (!p) {
            free(*ids);
            *ids = NULL;
            return -1;
        }
        *ids = p;
        int rc = tok_encode(t, text, len, true, false, *ids, cap, n);
        if (rc == -ENOSPC) {
            cap = *n;
            continue;
        }
        if (rc) {
            fprintf(stderr, "fusion-cli: cannot tokenize the prompt: %s\n", fd_strerror(rc));
            return -1;
        }
        return 0;
    }
}

static void write_out(const char *s, size_t n)
{
    if (n) {
        fwrite(s, 1, n, stdout);
        fflush(stdout);
    }
}

/* A --grammar-file's text (malloc'd, NUL-terminated, *len without the NUL), or NULL after
 * a message on stderr. */
static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fusion-cli: --grammar-file %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 == cap) {
            char *nb = cap > ((size_t)1 << 24) ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                fprintf(stderr, "fusion-cli: --grammar-file %s: larger than 32 MiB or out of "
                        "memory\n", path);
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                fprintf(stderr, "fusion-cli: --grammar-file %s: read error\n", path);
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

/* The sampler of c's settings for the model: the logit biases (with every end-of-generation
 * token banned under --ignore-eos), DRY's breakers in the model's vocabulary, checked with
 * the messages fusiond gives (naming the field).  0, or -1 after a message. */
static int make_sampler(const cli_t *c, const tok_t *tk, int n_vocab, smp_t **out)
{
    eng_sampling_t sp = c->sampling;
    eng_logit_bias_t *bias = malloc(sizeof *bias * ((size_t)c->n_bias + (size_t)n_vocab));
    if (!bias) {
        fprintf(stderr, "fusion-cli: out of memory\n");
        return -1;
    }
    int nb = c->n_bias;
    memcpy(bias, c->bias, sizeof *bias * (size_t)nb);
    for (int32_t id = 0; c->ignore_eos && id < n_vocab && id < tok_n_vocab(tk); id++)
        if (tok_is_eog(tk, id))
            bias[nb++] = (eng_logit_bias_t){ id, -INFINITY };
    sp.logit_bias = bias;
    sp.n_logit_bias = nb;
    sp.dry_breakers = c->n_breakers ? c->breakers : NULL;
    sp.n_dry_breakers = c->n_breakers;
    char err[256];
    int rc = smp_check_params(&sp, n_vocab, err, sizeof err);
    if (rc) {
        fprintf(stderr, "fusion-cli: bad sampling parameters: %s\n", err);
    } else if ((rc = smp_create(out, &sp, n_vocab))) {
        fprintf(stderr, "fusion-cli: sampler: %s\n", fd_strerror(rc));
    } else if (!c->no_breakers && (rc = eng_dry_breakers(*out, &sp, tk)) < 0) {
        fprintf(stderr, "fusion-cli: DRY sequence breakers: %s\n", fd_strerror(rc));
        smp_free(*out);
        *out = NULL;
    }
    free(bias); /* smp_create copies the list */
    return rc ? -1 : 0;
}

/* The matcher of --grammar / --grammar-file for tk's vocabulary (*gv built for it), with its
 * mask's bit set; -1 after a message (line and column of a grammar error). */
static int make_grammar(const cli_t *c, const tok_t *tk, int n_vocab, gr_vocab_t **gv,
                        gr_matcher_t **gm, uint32_t **allow)
{
    size_t len = 0;
    char *text = c->grammar_file ? read_text(c->grammar_file, &len) : NULL;
    const char *g = c->grammar_file ? text : c->grammar;
    if (!g)
        return -1;
    if (!c->grammar_file)
        len = strlen(g);
    char err[256];
    gr_spec_t *spec = NULL;
    int rc = gr_spec_gbnf(&spec, g, len, err, sizeof err);
    free(text);
    if (rc) {
        fprintf(stderr, "fusion-cli: %s: %s\n", c->grammar_file ? c->grammar_file : "--grammar",
                rc == -ENOMEM ? "out of memory" : err);
        return -1;
    }
    if ((rc = gr_vocab_build(gv, tk)) == 0 && (rc = gr_matcher_new(gm, spec, *gv)) == 0) {
        size_t bits = (size_t)FD_MAX(n_vocab, gr_vocab_n(*gv));
        if (!(*allow = calloc((bits + 31) / 32, sizeof **allow)))
            rc = -ENOMEM;
    }
    gr_spec_unref(spec); /* the matcher holds its own reference */
    if (rc) {
        fprintf(stderr, "fusion-cli: grammar: %s\n", fd_strerror(rc));
        return -1;
    }
    return 0;
}

static int generate(const cli_t *c)
{
    llm_load_params_t lp;
    llm_load_params_default(&lp);
    lp.path = c->model;
    lp.backend = c->backend;
    lp.backend_options = c->backend_opts;
    lp.threads = c->threads;
    lp.fusion = c->fusion;
    lp.softmax_mode = c->softmax_mode;
    lp.n_ctx = c->n_ctx;
    lp.cache_type_k = c->cache_type_k;
    lp.cache_type_v = c->cache_type_v;
    lp.swa_full = c->swa_full;
    lp.lora = c->lora;
    lp.n_lora = c->n_lora;
    lp.rope = c->rope;
    char err[512];
    llm_model_t *m = NULL;
    smp_t *smp = NULL;
    gr_vocab_t *gv = NULL;
    gr_matcher_t *gm = NULL;
    uint32_t *allow = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    int rc = llm_load(&m, &lp, err, sizeof(err)), ret = 1, slot;
    if (rc) {
        fprintf(stderr, "fusion-cli: cannot load %s: %s\n", c->model, err);
        return 1;
    }
    const tok_t *tk = llm_tok(m);
    const llm_hparams_t *hp = llm_hparams(m);
    if (hp->encoder) {
        fprintf(stderr, "fusion-cli: %s is an encoder (%s): it gives embeddings and rerank "
                "scores (fusiond's /v1/embeddings and /rerank), not text\n", c->model,
                hp->arch);
        goto out;
    }
    size_t n_prompt;
    if (encode_prompt(tk, c->prompt, &ids, &n_prompt))
        goto out;
    if (n_prompt > (size_t)hp->n_ctx) {
        fprintf(stderr, "fusion-cli: the prompt is %zu tokens, longer than the context (%d "
                "tokens; --ctx sets it)\n", n_prompt, hp->n_ctx);
        goto out;
    }
    if (make_sampler(c, tk, hp->n_vocab, &smp))
        goto out;
    if ((c->grammar || c->grammar_file) && make_grammar(c, tk, hp->n_vocab, &gv, &gm, &allow))
        goto out;
    for (size_t i = 0; i < n_prompt; i++)
        smp_accept(smp, ids[i], 0);
    /* the history (prompt, output, then the draft being verified) and a logits row for the
     * last token and each draft token */
    const int K = c->draft_max;
    int32_t *hist = malloc(sizeof *hist * (n_prompt + (size_t)c->n_gen + (size_t)K + 1));
    logits = malloc(sizeof(float) * (size_t)hp->n_vocab * (size_t)(K + 1));
    if (!hist || !logits || llm_seq_alloc(m, &slot)) {
        fprintf(stderr, "fusion-cli: out of memory\n");
        free(hist);
        goto out;
    }
    memcpy(hist, ids, sizeof *hist * n_prompt);
    int n_hist = (int)n_prompt;

    double t0 = fd_now_s();
    llm_batch_entry_t e = { .slot = slot, .tokens = ids, .n_tokens = (int)n_prompt,
                            .want_logits = true, .lora = c->n_lora ? c->lora_scale : NULL };
    if ((rc = llm_decode(m, &e, 1, logits))) {
        fprintf(stderr, "fusion-cli: prompt: %s\n", fd_strerror(rc));
        free(hist);
        goto out;
    }
    double t1 = fd_now_s();

    tok_stream_t ts;
    tok_stream_init(&ts, tk, c->prompt[0] == '\0');
    char piece[256];
    size_t len;
    int n_out = 0, nd = 0, n_steps = 0;
    long long drafted = 0, accepted = 0;
    const char *stop = NULL;
    while (n_out < c->n_gen && !stop) {
        /* the rows of the last step: sample each while it picks the draft token after it */
        int32_t t = -1;
        int taken = 0;
        for (int j = 0; j <= nd; j++) {
            if (gm && gr_matcher_mask(gm, allow) == 0) {
                stop = "the grammar cannot go on with this vocabulary";
                break;
            }
            t = smp_sample_masked(smp, logits + (size_t)j * (size_t)hp->n_vocab, allow, NULL,
                                  NULL, 0);
            if (t == FD_ERANGE && gm) {
                stop = "every token the grammar allows is banned";
                break;
            }
            if (t < 0) {
                fprintf(stderr, "fusion-cli: sampling: %s\n", fd_strerror(t));
                free(hist);
                goto out;
            }
            bool hit = j < nd && t == hist[n_hist];
            if (tok_is_eog(tk, t)) {
                stop = "end of text";
                break;
            }
            if (gm && gr_matcher_accept(gm, t) < 0) { /* the mask allowed it: cannot happen */
                fprintf(stderr, "fusion-cli: the grammar refused token %d\n", (int)t);
                free(hist);
                goto out;
            }
            n_out++;
            taken += hit;
            smp_accept(smp, t, 1);
            hist[n_hist++] = t;
            if (tok_stream_push(&ts, tk, t, piece, sizeof(piece), &len) == 0)
                write_out(piece, len);
            if (gm && gr_matcher_finished(gm)) {
                stop = "the grammar is complete";
                break;
            }
            if (!hit || n_out == c->n_gen)
                break;
        }
        drafted += nd;
        accepted += taken;
        /* the KV cache keeps the fed token and the drafts taken */
        if (nd > taken && (rc = llm_seq_truncate(m, slot, llm_seq_len(m, slot) - (nd - taken)))) {
            fprintf(stderr, "\nfusion-cli: truncate: %s\n", fd_strerror(rc));
            free(hist);
            goto out;
        }
        if (stop || n_out == c->n_gen)
            break;
        if (llm_seq_len(m, slot) >= hp->n_ctx) {
            stop = "context full";
            break;
        }
        /* a step never passes -n or the context end: at most nd + 1 tokens come out of it */
        nd = FD_MIN(K, c->n_gen - n_out - 1);
        nd = FD_MIN(nd, hp->n_ctx - llm_seq_len(m, slot) - 1);
        nd = nd > 0 ? ngram_draft(hist, n_hist, c->lookup_min, c->lookup_max, nd,
                                  hist + n_hist)
                    : 0;
        e.tokens = &hist[n_hist - 1];
        e.n_tokens = e.want_logits = 1 + nd;
        n_steps++;
        if ((rc = llm_decode(m, &e, 1, logits))) {
            fprintf(stderr, "\nfusion-cli: decode: %s\n", fd_strerror(rc));
            free(hist);
            goto out;
        }
    }
    free(hist);
    if (tok_stream_flush(&ts, piece, sizeof(piece), &len) == 0)
        write_out(piece, len);
    double t2 = fd_now_s();

    if (isatty(STDOUT_FILENO))
        fputc('\n', stderr);
    if (stop)
        fprintf(stderr, "fusion-cli: stopped after %d tokens: %s\n", n_out, stop);
    if (K > 0)
        fprintf(stderr, "speculation: %d steps, %lld draft tokens, %lld accepted (%.1f%%)\n",
                n_steps, drafted, accepted, drafted ? 100.0 * (double)accepted / (double)drafted
                                                    : 0.0);
    fprintf(stderr, "prompt: %zu tokens in %.3f s (%.1f tokens/s); generation: %d tokens in "
            "%.3f s (%.1f tokens/s)\n", n_prompt, t1 - t0, (double)n_prompt / (t1 - t0),
            n_out, t2 - t1, n_out > 0 ? (double)n_out / (t2 - t1) : 0.0);
    fb_stats_t st;
    fb_stats_get(llm_backend(m), &st);
    fprintf(stderr, "ops (%s, fusion %s, seed %llu):", fb_name(llm_backend(m)),
            c->fusion ? "on" : "off", (unsigned long long)smp_seed(smp));
    for (int k = 0; k < FB_OP_CLASS_COUNT; k++)
        fprintf(stderr, " %s %.1f ms (%llu)", fb_op_class_name(k), (double)st.host_ns[k] / 1e6,
                (unsigned long long)st.calls[k]);
    fputc('\n', stderr);
    if (st.dev_total_s > 0) { /* a simulated or measured device adds its own time */
        fprintf(stderr, "device (%s): %.3f ms on the critical path:", fb_name(llm_backend(m)),
                st.dev_total_s * 1e3);
        for (int k = 0; k < FB_OP_CLASS_COUNT; k++)
            fprintf(stderr, " %s %.3f ms", fb_op_class_name(k), st.dev_s[k] * 1e3);
        fputc('\n', stderr);
    }
    ret = 0;
out:
    free(logits);
    free(ids);
    free(allow);
    gr_matcher_free(gm);
    gr_vocab_free(gv);
    smp_free(smp);
    llm_free(m);
    return ret;
}

int main(int argc, char **argv)
{
    cli_t c;
    int rc = parse_args(&c, argc, argv);
    if (rc)
        return rc > 0 ? 0 : 1;
    if (c.info)
        return info(c.info);
    return generate(&c);
}
