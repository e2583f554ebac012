/* fusion-bench: measures deferred-normalization fusion, fused against unfused, on a backend.
 *   ops     norm->GEMM (Q|K|V, gate|up, LM head: RMSNorm then the product, against the product
 *           on the raw rows with the scale deferred) and softmax->P.V (normalized, max+sum,
 *           sum-only) at the shapes of known models, batch 1, 8 and 64;
 *   decode  end-to-end decode tokens/s of a model file, fused and unfused plans alternating;
 *   fold    the error of each way to fold a gamma into a quantized matrix (docs/fusion.md);
 *   synth   decode steps and a prefill of a model shape with random weights on the real plans
 *           (any backend; the numbers of docs/gpu.md).
 * Timings are medians of repeated runs; fused and unfused runs alternate within one process,
 * so each ratio compares runs under the same conditions.  Output is one line per case. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "bench/perf.h"
#include "engine/model.h"
#include "fusion/fold.h"
#include "fusion/plan.h"

typedef struct shape {
    const char *name;
    int n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab;
    int n_layer;
    bool tied;               /* the LM head is the token embedding */
    float rope_base;
} shape_t;

static const shape_t shapes[] = {
    { "stories260K", 64, 172, 8, 4, 8, 512, 5, false, 10000.f },
    { "stories110M", 768, 2048, 12, 12, 64, 32000, 12, false, 10000.f },
    { "TinyLlama-1.1B", 2048, 5632, 32, 4, 64, 32000, 22, false, 10000.f },
    { "Llama-3.2-1B", 2048, 8192, 32, 8, 64, 128256, 16, true, 500000.f },
    { "Llama-2-7B", 4096, 11008, 32, 32, 128, 32000, 32, false, 10000.f },
    { "Llama-3-8B", 4096, 14336, 32, 8, 128, 128256, 32, false, 500000.f },
};

typedef struct opts {
    const char *backend, *model_filter, *op_filter, *model_path;
    const char *batches, *ctxs, *sets;
    const char *cache_types, *depths; /* decode: KV cache types and context depths */
    const char *swa;                  /* decode: "ring", "full" or both, comma-separated */
    int type, reps, threads, ctx, n_gen, prefill;
    bool cpu_clock;
    bool steptime;           /* synth: the backend's steptime=1 summary per variant */
} opts_t;

/* The clock: wall time, or (--clock cpu) the process's CPU time, which a shared, loaded
 * machine does not inflate by preempting us; it equals the work done only with --threads 1
 * (idle pool workers that spin would be counted too). */
static bool use_cpu_clock;
static double now_s(void)
{
    return bench_now_s(use_cpu_clock);
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int parse_list(const char *s, int *out, int cap);

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void *xalloc(fb_backend_t *be, size_t bytes)
{
    void *p = fb_alloc(be, bytes);
    if (!p) {
        fprintf(stderr, "fusion-bench: cannot allocate %zu bytes on %s\n", bytes, fb_name(be));
        exit(1);
    }
    return p;
}

/* A random n_out x n_in matrix of type (host bytes, caller frees). */
static void *rand_matrix(int type, int64_t n_out, int64_t n_in)
{
    size_t rb = gg_row_bytes(type, (uint64_t)n_in);
    uint8_t *q = malloc(rb * (size_t)n_out);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    if (!q || !row) {
        fprintf(stderr, "fusion-bench: out of memory (%lld x %lld)\n", (long long)n_out,
                (long long)n_in);
        exit(1);
    }
    float a = 1.0f / sqrtf((float)n_in);
    for (int64_t o = 0; o < n_out; o++) {
        for (int64_t i = 0; i < n_in; i++)
            row[i] = a * frand();
        fq_quantize_row(type, row, q + (size_t)o * rb, n_in);
    }
    free(row);
    return q;
}

/* ---- ops: norm -> GEMM ---- */

static void bench_norm_gemm(fb_backend_t *be, const opts_t *o, const shape_t *s, const char *op,
                            int64_t n_out)
{
    int64_t n_in = s->n_embd;
    int type = o->type;
    if (gg_row_bytes(type, (uint64_t)n_in) == 0)
        type = n_in % 32 == 0 ? GG_Q8_0 : GG_F32; /* the row does not fit the block */
    void *wq = rand_matrix(type, n_out, n_in);
    float *gamma = malloc(sizeof(float) * (size_t)n_in);
    for (int64_t i = 0; i < n_in; i++)
        gamma[i] = 1.0f + 0.2f * frand();
    fb_weight_t w = { .type = type, .n_in = n_in, .n_out = n_out, .src = wq, .name = op };
    fb_weight_t g = { .type = GG_F32, .n_in = n_in, .n_out = 1, .src = gamma, .name = "gamma" };
    fz_folded_t f;
    char err[256];
    if (fz_fold_rms(&w, 1, gamma, FZ_FOLD_AUTO, op, &f, err, sizeof(err)) ||
        fb_weight_prepare(be, &w) || fb_weight_prepare(be, &g) || fb_weight_prepare(be, &f.w)) {
        fprintf(stderr, "fusion-bench: %s %s: cannot prepare (%s)\n", s->name, op, err);
        exit(1);
    }
    static const int batches[] = { 1, 8, 64 };
    for (size_t b = 0; b < FD_ARRAY_LEN(batches); b++) {
        int rows = batches[b];
        size_t nx = (size_t)rows * (size_t)n_in;
        float *hx = malloc(sizeof(float) * nx);
        for (size_t i = 0; i < nx; i++)
            hx[i] = 3.0f * frand();
        float *x = xalloc(be, sizeof(float) * nx), *xn = xalloc(be, sizeof(float) * nx);
        float *y = xalloc(be, sizeof(float) * (size_t)rows * (size_t)n_out);
        fb_to_device(be, x, hx, sizeof(float) * nx);
        fb_defer_t d = { .kind = FB_NORM_RMS, .eps = 1e-5f };
        double *tu = malloc(sizeof(double) * (size_t)o->reps);
        double *tf = malloc(sizeof(double) * (size_t)o->reps);
        double *ratio = malloc(sizeof(double) * (size_t)o->reps);
        int rc = 0;
        for (int r = -1; r < o->reps; r++) { /* r = -1 warms caches and pages */
            double t0 = now_s();
            rc |= fb_rmsnorm(be, x, rows, n_in, &g, 1e-5f, xn);
            rc |= fb_matmul(be, &w, xn, rows, y, NULL);
            rc |= fb_sync(be);
            double t1 = now_s();
            rc |= fb_matmul(be, &f.w, x, rows, y, &d);
            rc |= fb_sync(be);
            double t2 = now_s();
            if (r >= 0) {
                tu[r] = t1 - t0;
                tf[r] = t2 - t1;
                ratio[r] = tu[r] / tf[r];
            }
        }
        if (rc) {
            fprintf(stderr, "fusion-bench: %s %s: backend error\n", s->name, op);
            exit(1);
        }
        double mu = median(tu, o->reps), mf = median(tf, o->reps), mr = median(ratio, o->reps);
        printf("ops  %-15s %-8s %-5s %6lldx%-6lld batch %2d  unfused %10.1f us  fused %10.1f us"
               "  unfused/fused %.3f\n", s->name, op, gg_type_name(type), (long long)n_out,
               (long long)n_in, rows, mu * 1e6, mf * 1e6, mr);
        fflush(stdout);
        free(tu); free(tf); free(ratio); free(hx);
        fb_free(be, x); fb_free(be, xn); fb_free(be, y);
    }
    fb_weight_release(be, &w);
    fb_weight_release(be, &g);
    fb_weight_release(be, &f.w);
    fz_folded_free(&f);
    free(wq);
    free(gamma);
}

/* ---- ops: softmax -> P.V (decode: batch sequences, one query each, ctx cached rows) ---- */

static void bench_attention(fb_backend_t *be, const opts_t *o, const shape_t *s)
{
    static const int batches[] = { 1, 8, 64 };
    int nq = s->n_head * s->head_dim, nkv = s->n_head_kv * s->head_dim, T = o->ctx;
    for (size_t b = 0; b < FD_ARRAY_LEN(batches); b++) {
        int n_seq = batches[b];
        size_t kvn = (size_t)T * (size_t)nkv;
        float *h = malloc(sizeof(float) * FD_MAX(kvn, (size_t)nq));
        fb_attn_t *a = calloc((size_t)n_seq, sizeof(*a));
        int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_seq);
        float *k = xalloc(be, sizeof(float) * kvn), *v = xalloc(be, sizeof(float) * kvn);
        float *q = xalloc(be, sizeof(float) * (size_t)n_seq * (size_t)nq);
        float *out = xalloc(be, sizeof(float) * (size_t)n_seq * (size_t)nq);
        for (size_t i = 0; i < kvn; i++)
            h[i] = frand();
        fb_to_device(be, k, h, sizeof(float) * kvn);
        for (size_t i = 0; i < kvn; i++)
            h[i] = frand();
        fb_to_device(be, v, h, sizeof(float) * kvn);
        for (int i = 0; i < n_seq; i++) {
            for (int j = 0; j < nq; j++)
                h[j] = frand();
            fb_to_device(be, q + (size_t)i * (size_t)nq, h, sizeof(float) * (size_t)nq);
            /* sequences share one cache here: the cost is the same as separate ones */
            pos[i] = T - 1;
            a[i] = (fb_attn_t){ .q = q + (size_t)i * (size_t)nq, .ldq = nq, .k = k, .v = v,
                                .ldkv = nkv, .out = out + (size_t)i * (size_t)nq, .ldo = nq,
                                .n_q = 1, .pos = &pos[i], .n_head = s->n_head,
                                .n_head_kv = s->n_head_kv, .head_dim = s->head_dim,
                                .scale = 1.0f / sqrtf((float)s->head_dim) };
        }
        static const int modes[3] = { FB_SOFTMAX_REF, FB_SOFTMAX_MAXSUM, FB_SOFTMAX_SUMONLY };
        double *t[3], *rm = malloc(sizeof(double) * (size_t)o->reps);
        double *rs = malloc(sizeof(double) * (size_t)o->reps);
        for (int m = 0; m < 3; m++)
            t[m] = malloc(sizeof(double) * (size_t)o->reps);
        int rc = 0;
        for (int r = -1; r < o->reps; r++) {
            for (int m = 0; m < 3; m++) {
                for (int i = 0; i < n_seq; i++)
                    a[i].mode = modes[m];
                double t0 = now_s();
                rc |= fb_attention(be, a, n_seq);
                rc |= fb_sync(be);
                if (r >= 0)
                    t[m][r] = now_s() - t0;
            }
            if (r >= 0) {
                rm[r] = t[0][r] / t[1][r];
                rs[r] = t[0][r] / t[2][r];
            }
        }
        if (rc) {
            fprintf(stderr, "fusion-bench: %s attention: backend error\n", s->name);
            exit(1);
        }
        double m0 = median(t[0], o->reps), m1 = median(t[1], o->reps), m2 = median(t[2], o->reps);
        printf("ops  %-15s attn     ctx %-5d heads %2d/%-2d x %-3d batch %2d  ref %10.1f us  "
               "maxsum %10.1f us  sumonly %10.1f us  ref/maxsum %.3f  ref/sumonly %.3f\n",
               s->name, T, s->n_head, s->n_head_kv, s->head_dim, n_seq, m0 * 1e6, m1 * 1e6,
               m2 * 1e6, median(rm, o->reps), median(rs, o->reps));
        fflush(stdout);
        for (int m = 0; m < 3; m++)
            free(t[m]);
        free(rm); free(rs); free(h); free(a); free(pos);
        fb_free(be, k); fb_free(be, v); fb_free(be, q); fb_free(be, out);
    }
}

static bool wanted(const char *filter, const char *name)
{
    if (!filter)
        return true;
    size_t n = strlen(name);
    for (const char *p = filter; (p = strstr(p, name)); p += n)
        if ((p == filter || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

static int cmd_ops(const opts_t *o)
{
    fb_backend_t *be;
    char err[256];
    fb_config_t cfg = { .threads = o->threads };
    if (fb_create(o->backend, &cfg, &be, err, sizeof(err))) {
        fprintf(stderr, "fusion-bench: %s\n", err);
        return 1;
    }
    char desc[256] = "";
    if (be->ops->describe)
        be->ops->describe(be, desc, sizeof(desc));
    printf("# fusion-bench ops: backend %s %s, weights %s, %d reps (medians), %s time\n",
           fb_name(be), desc, gg_type_name(o->type), o->reps, o->cpu_clock ? "cpu" : "wall");
    for (size_t i = 0; i < FD_ARRAY_LEN(shapes); i++) {
        const shape_t *s = &shapes[i];
        if (!wanted(o->model_filter, s->name))
            continue;
        int64_t nqkv = (int64_t)(s->n_head + 2 * s->n_head_kv) * s->head_dim;
        if (wanted(o->op_filter, "qkv"))
            bench_norm_gemm(be, o, s, "qkv", nqkv);
        if (wanted(o->op_filter, "gate_up"))
            bench_norm_gemm(be, o, s, "gate_up", 2 * (int64_t)s->n_ff);
        if (wanted(o->op_filter, "head"))
            bench_norm_gemm(be, o, s, "head", s->n_vocab);
        if (wanted(o->op_filter, "attn"))
            bench_attention(be, o, s);
    }
    fb_destroy(be);
    return 0;
}

/* ---- decode: end to end ---- */

static int decode_run(llm_model_t *m, int n_gen, double *tok_s)
{
    int V = llm_hparams(m)->n_vocab, slot, rc;
    float *logits = malloc(sizeof(float) * (size_t)V);
    if (!logits || (rc = llm_seq_alloc(m, &slot))) {
        free(logits);
        return -ENOMEM;
    }
    int32_t t = tok_bos(llm_tok(m)) >= 0 ? tok_bos(llm_tok(m)) : 0;
    double t0 = 0;
    for (int i = 0; i <= n_gen; i++) {
        if (i == 1)
            t0 = now_s(); /* the first step fills caches: not counted */
        llm_batch_entry_t e = { .slot = slot, .tokens = &t, .n_tokens = 1, .want_logits = true };
        if ((rc = llm_decode(m, &e, 1, logits)))
            break;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best])
                best = v;
        t = best;
    }
    *tok_s = n_gen / (now_s() - t0);
    llm_seq_free(m, slot);
    free(logits);
    return rc;
}

/* The process's resident set in MiB (VmRSS of /proc/self/status), or -1. */
static double rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = atof(line + 6);
    if (f)
        fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

/* `decode --cache-types f32,f16,q8_0 --depths 2048,4096`: for each KV cache type (K and V
 * alike) the fused model is loaded alone, a prompt of random tokens is prefilled to each
 * depth in turn, and n_gen greedy tokens are decoded from there reps times (the slot cut
 * back to the depth between runs): the median tokens/s, the cache's bytes and the resident
 * set after the deepest run (the cache is written as far as that depth).  --swa ring,full
 * loads each type twice, with sliding-window rings (the default) and with swa_full: one
 * process, so the resident sets of the ring runs come first, before the full caches. */
static int cmd_decode_cache(const opts_t *o)
{
    int depths[8], nd = parse_list(o->depths ? o->depths : "2048,4096", depths, 8);
    if (nd < 1) {
        fprintf(stderr, "fusion-bench: bad --depths\n");
        return 1;
    }
    int max_d = 0;
    for (int i = 0; i < nd; i++)
        max_d = FD_MAX(max_d, depths[i]);
    printf("# fusion-bench decode: %s, backend %s, %d threads, %d tokens per run, %d runs "
           "(medians), %s time\n", o->model_path, o->backend, o->threads, o->n_gen, o->reps,
           o->cpu_clock ? "cpu" : "wall");
    char list[128], swal[32];
    snprintf(swal, sizeof(swal), "%s", o->swa ? o->swa : "ring");
    for (char *ss = NULL, *swa = strtok_r(swal, ",", &ss); swa; swa = strtok_r(NULL, ",", &ss)) {
        if (strcmp(swa, "ring") && strcmp(swa, "full")) {
            fprintf(stderr, "fusion-bench: --swa: '%s' is neither ring nor full\n", swa);
            return 1;
        }
        snprintf(list, sizeof(list), "%s", o->cache_types);
        for (char *save = NULL, *name = strtok_r(list, ",", &save); name;
             name = strtok_r(NULL, ",", &save)) {
            int type = fb_kv_type_from_name(name);
            if (type < 0) {
                fprintf(stderr, "fusion-bench: --cache-types: '%s' is no cache type\n", name);
                return 1;
            }
            llm_load_params_t p;
            llm_load_params_default(&p);
            p.path = o->model_path;
            p.backend = o->backend;
            p.threads = o->threads;
            p.n_ctx = max_d + o->n_gen + 8;
            p.cache_type_k = p.cache_type_v = type;
            p.swa_full = strcmp(swa, "full") == 0;
            llm_model_t *m;
            char err[512];
            if (llm_load(&m, &p, err, sizeof(err))) {
                fprintf(stderr, "fusion-bench: %s\n", err);
                return 1;
            }
            const int V = llm_hparams(m)->n_vocab, B = llm_n_batch_max(m);
            float *logits = malloc(sizeof(float) * (size_t)V);
            int32_t *toks = malloc(sizeof(int32_t) * (size_t)FD_MAX(B, 1));
            double *ts = malloc(sizeof(double) * (size_t)o->reps);
            int slot, rc = logits && toks && ts ? llm_seq_alloc(m, &slot) : -ENOMEM;
            for (int di = 0; di < nd && rc == 0; di++) {
                /* prefill from where the slot is to this depth, in batches */
                int len = llm_seq_len(m, slot);
                while (rc == 0 && len < depths[di]) {
                    int n = FD_MIN(B, depths[di] - len);
                    for (int i = 0; i < n; i++)
                        toks[i] = (int32_t)((frand() * 0.5 + 0.5) * (V - 1));
                    llm_batch_entry_t e = { .slot = slot, .tokens = toks, .n_tokens = n };
                    rc = llm_decode(m, &e, 1, NULL);
                    len = llm_seq_len(m, slot);
                }
                for (int r = 0; r < o->reps && rc == 0; r++) {
                    rc = llm_seq_truncate(m, slot, depths[di]);
                    int32_t t = 1;
                    double t0 = now_s();
                    for (int i = 0; i < o->n_gen && rc == 0; i++) {
                        llm_batch_entry_t e = { .slot = slot, .tokens = &t, .n_tokens = 1,
                                                .want_logits = true };
                        rc = llm_decode(m, &e, 1, logits);
                        int best = 0;
                        for (int v = 1; v < V; v++)
                            if (logits[v] > logits[best])
                                best = v;
                        t = best;
                    }
                    ts[r] = o->n_gen / (now_s() - t0);
                }
                if (rc == 0)
                    printf("decode cache %-5s swa %s depth %5d %8.2f tok/s  cache %8.1f MiB  "
                           "rss %8.1f MiB\n", name, swa, depths[di], median(ts, o->reps),
                           (double)llm_cache_bytes(m) / (1024.0 * 1024.0), rss_mib());
                rc = rc ? rc : llm_seq_truncate(m, slot, depths[di]);
                fflush(stdout);
            }
            if (rc)
                fprintf(stderr, "fusion-bench: decode: %s\n", fd_strerror(rc));
            free(logits);
            free(toks);
            free(ts);
            llm_free(m);
            if (rc)
                return 1;
        }
    }
    return 0;
}

static int cmd_decode(const opts_t *o)
{
    if (o->cache_types && o->model_path)
        return cmd_decode_cache(o);
    if (!o->model_path) {
        fprintf(stderr, "fusion-bench decode: give -m MODEL (fusion-gguf-gen writes one)\n");
        return 1;
    }
    llm_model_t *m[2];
    char err[512];
    for (int f = 0; f < 2; f++) {
        llm_load_params_t p;
        llm_load_params_default(&p);
        p.path = o->model_path;
        p.backend = o->backend;
        p.threads = o->threads;
        p.fusion = f == 1;
        p.n_ctx = o->n_gen + 8;
        if (llm_load(&m[f], &p, err, sizeof(err))) {
            fprintf(stderr, "fusion-bench: %s\n", err);
            if (f)
                llm_free(m[0]);
            return 1;
        }
    }
    printf("# fusion-bench decode: %s, backend %s, %d threads, %d tokens per run, %d runs "
           "(medians), %s time\n", o->model_path, o->backend, o->threads, o->n_gen, o->reps,
           o->cpu_clock ? "cpu" : "wall");
    double *tu = malloc(sizeof(double) * (size_t)o->reps), *tf = malloc(sizeof(double) * (size_t)o->reps);
    double *ratio = malloc(sizeof(double) * (size_t)o->reps);
    int rc = 0;
    for (int r = 0; r < o->reps && rc == 0; r++) {
        rc = decode_run(m[0], o->n_gen, &tu[r]);
        if (rc == 0)
            rc = decode_run(m[1], o->n_gen, &tf[r]);
        ratio[r] = tf[r] / tu[r];
    }
    if (rc == 0)
        printf("decode %-40s unfused %8.1f tok/s  fused %8.1f tok/s  fused/unfused %.3f\n",
               o->model_path, median(tu, o->reps), median(tf, o->reps), median(ratio, o->reps));
    else
        fprintf(stderr, "fusion-bench: decode: %s\n", fd_strerror(rc));
    free(tu); free(tf); free(ratio);
    llm_free(m[0]);
    llm_free(m[1]);
    return rc ? 1 : 0;
}

/* ---- synth: decode and prefill steps of a model shape with random weights ---- */

/* A random matrix pool for one weight role: big enough for the matrix plus n_layer shifts of
 * SYNTH_SHIFT bytes, so each layer's src is distinct (a backend keeps one copy per src) while
 * the host holds one buffer per role.  A block of random rows is tiled over the pool: the
 * values repeat, which costs nothing in a timing (every row is still read from its own
 * memory) and saves generating gigabytes of random numbers. */
#define SYNTH_SHIFT 272 /* a multiple of the F16/BF16 element and the Q8_0 block */

static uint8_t *synth_pool(int type, int64_t n_out, int64_t n_in, int n_layer)
{
    size_t rb = gg_row_bytes(type, (uint64_t)n_in);
    size_t bytes = rb * (size_t)n_out + (size_t)n_layer * SYNTH_SHIFT;
    uint8_t *p = malloc(bytes);
    int64_t tile_rows = FD_MIN(n_out, (int64_t)64);
    float *row = malloc(sizeof(float) * (size_t)n_in);
    if (!p || !row) {
        fprintf(stderr, "fusion-bench: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    float a = 1.0f / sqrtf((float)n_in);
    for (int64_t o = 0; o < tile_rows; o++) {
        for (int64_t i = 0; i < n_in; i++)
            row[i] = a * frand();
        fq_quantize_row(type, row, p + (size_t)o * rb, n_in);
    }
    size_t tile = rb * (size_t)tile_rows;
    for (size_t off = tile; off < bytes; off += tile)
        memcpy(p + off, p, FD_MIN(tile, bytes - off));
    free(row);
    return p;
}

static fb_weight_t synth_w(int type, int64_t n_out, int64_t n_in, const uint8_t *pool, int l,
                           const char *name)
{
    fb_weight_t w = { .type = type, .n_in = n_in, .n_out = n_out,
                      .src = pool + (size_t)l * SYNTH_SHIFT, .name = name };
    return w;
}

static int parse_list(const char *s, int *out, int cap)
{
    int n = 0;
    while (s && *s && n < cap) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 1 << 20)
            return -1;
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

typedef struct synth_run {
    fb_backend_t *be;
    fz_plan_t *plan[2];     /* unfused, fused */
    fz_kv_t kv;
    int n_vocab;
    bool nonorm;            /* the backend takes nonorm=1 */
    bool steptime;          /* the backend takes steptime=1 (logs where a step's time goes) */
} synth_run_t;

/* Wall time of one step of variant v (0 unfused, 1 fused, 2 fused with the norms deleted). */
static double synth_step(synth_run_t *r, int v, const int32_t *tok, const int32_t *pos, int rows,
                         const fz_seq_t *seqs, int n_seqs, float *logits)
{
    if (v == 2 && fb_set_option(r->be, "nonorm=1"))
        return NAN;
    double t0 = fd_now_s();
    int rc = fz_forward(r->plan[v == 0 ? 0 : 1], &r->kv, tok, pos, rows, seqs, n_seqs, logits);
    double t = fd_now_s() - t0;
    if (v == 2)
        fb_set_option(r->be, "nonorm=0");
    if (rc) {
        fprintf(stderr, "fusion-bench: synth step failed: %s\n", fd_strerror(rc));
        exit(1);
    }
    return t;
}

/* Medians over reps of the three variants, interleaved step by step. */
static void synth_case(synth_run_t *r, const opts_t *o, const char *name, const char *what, int rows,
                       const fz_seq_t *seqs, int n_seqs, const int32_t *tok, const int32_t *pos,
                       int reps, double weight_gb)
{
    int nv = r->nonorm ? 3 : 2;
    float *logits = fb_host_alloc(r->be, sizeof(float) * (size_t)n_seqs * (size_t)r->n_vocab);
    double *t[3], med[3];
    for (int v = 0; v < nv; v++)
        t[v] = malloc(sizeof(double) * (size_t)reps);
    if (!logits || !t[0] || !t[1] || (nv == 3 && !t[2])) {
        fprintf(stderr, "fusion-bench: out of host memory\n");
        exit(1);
    }
    for (int w = 0; w < 3; w++) /* warm-up: caches, and the graphs of repeated steps */
        for (int v = 0; v < nv; v++)
            synth_step(r, v, tok, pos, rows, seqs, n_seqs, logits);
    fb_stats_t s0, s1;
    fb_stats_get(r->be, &s0);
    for (int k = 0; k < reps; k++)
        for (int v = 0; v < nv; v++)
            t[v][k] = synth_step(r, v, tok, pos, rows, seqs, n_seqs, logits);
    fb_stats_get(r->be, &s1);
    for (int v = 0; v < nv && r->steptime; v++) { /* after the timed steps: each variant alone */
        fprintf(stderr, "synth %s %s variant %s:\n", name, what,
                v == 0 ? "unfused" : v == 1 ? "fused" : "nonorm");
        fb_set_option(r->be, "steptime=1");
        for (int k = 0; k < reps; k++)
            synth_step(r, v, tok, pos, rows, seqs, n_seqs, logits);
        fb_set_option(r->be, "steptime=0");
    }
    for (int v = 0; v < nv; v++)
        med[v] = median(t[v], reps) * 1e3;
    printf("synth %-14s %-5s %-26s unfused %8.3f ms  fused %8.3f ms", name,
           gg_type_name(o->type), what, med[0], med[1]);
    if (nv == 3)
        printf("  nonorm %8.3f ms", med[2]);
    printf("  unfused/fused %.3f", med[0] / med[1]);
    if (nv == 3)
        printf("  fused/nonorm %.3f", med[1] / med[2]);
    printf("  weights %.3f GB", weight_gb);
    if (s1.dev_total_s > s0.dev_total_s) { /* device time per class (timing=1), all variants */
        printf("  device ms/step:");
        for (int k = 0; k < FB_OP_CLASS_COUNT; k++)
            printf(" %s %.3f", fb_op_class_name(k), (s1.dev_s[k] - s0.dev_s[k]) * 1e3 / (reps * nv));
    }
    printf("\n");
    fflush(stdout);
    for (int v = 0; v < nv; v++)
        free(t[v]);
    fb_host_free(r->be, logits);
}

/* Every decode case (batch x context) and the prefill, on the plans of r. */
static void synth_cases(synth_run_t *r, const opts_t *o, const shape_t *sh, const int *batches,
                        int nb, const int *ctxs, int nc, double wgb)
{
    int max_b = 1;
    for (int i = 0; i < nb; i++)
        max_b = FD_MAX(max_b, batches[i]);
    int n_tok = FD_MAX(max_b, o->prefill);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n_tok);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n_tok);
    fz_seq_t *seqs = calloc((size_t)max_b, sizeof(*seqs));
    for (int i = 0; i < n_tok; i++)
        tok[i] = (int32_t)((frand() * 0.5 + 0.5) * (sh->n_vocab - 1));
    char what[64];
    for (int ci = 0; ci < nc; ci++)
        for (int bi = 0; bi < nb; bi++) {
            int B = batches[bi], C = ctxs[ci];
            for (int i = 0; i < B; i++) {
                seqs[i] = (fz_seq_t){ .slot = i, .n_rows = 1, .want_logits = true };
                pos[i] = C - 1;
            }
            snprintf(what, sizeof(what), "decode batch %d ctx %d", B, C);
            synth_case(r, o, sh->name, what, B, seqs, B, tok, pos, o->reps, wgb);
        }
    if (o->prefill > 0) {
        for (int i = 0; i < o->prefill; i++)
            pos[i] = i;
        seqs[0] = (fz_seq_t){ .slot = 0, .n_rows = o->prefill, .want_logits = true };
        snprintf(what, sizeof(what), "prefill %d", o->prefill);
        synth_case(r, o, sh->name, what, o->prefill, seqs, 1, tok, pos, FD_MAX(3, o->reps / 4),
                   wgb);
    }
    free(tok);
    free(pos);
    free(seqs);
}

static int synth_shape(const opts_t *o, const shape_t *sh)
{
    int batches[8], ctxs[8];
    int nb = parse_list(o->batches ? o->batches : "1,8", batches, 8);
    int nc = parse_list(o->ctxs ? o->ctxs : "512,4096", ctxs, 8);
    if (nb < 1 || nc < 1) {
        fprintf(stderr, "fusion-bench: bad --batches or --ctxs\n");
        return 1;
    }
    int max_b = 1, max_c = o->prefill;
    for (int i = 0; i < nb; i++)
        max_b = FD_MAX(max_b, batches[i]);
    for (int i = 0; i < nc; i++)
        max_c = FD_MAX(max_c, ctxs[i]);
    const int type = o->type, L = sh->n_layer, E = sh->n_embd, F = sh->n_ff;
    const int nq = sh->n_head * sh->head_dim, nkv = sh->n_head_kv * sh->head_dim;
    if (gg_row_bytes(type, (uint64_t)E) == 0 || gg_row_bytes(type, (uint64_t)F) == 0) {
        fprintf(stderr, "fusion-bench: %s rows do not fit %s blocks\n", sh->name,
                gg_type_name(type));
        return 1;
    }
    double t0 = fd_now_s();
    uint8_t *pq = synth_pool(type, nq, E, L), *pk = synth_pool(type, nkv, E, L);
    uint8_t *pv = synth_pool(type, nkv, E, L), *po = synth_pool(type, E, nq, L);
    uint8_t *pg = synth_pool(type, F, E, L), *pu = synth_pool(type, F, E, L);
    uint8_t *pd = synth_pool(type, E, F, L), *pe = synth_pool(type, sh->n_vocab, E, 1);
    uint8_t *ph = sh->tied ? pe : synth_pool(type, sh->n_vocab, E, 1);
    float *norms = malloc(sizeof(float) * (size_t)(2 * L + 1) * (size_t)E);
    for (size_t i = 0; i < (size_t)(2 * L + 1) * (size_t)E; i++)
        norms[i] = 1.0f + 0.1f * frand();
    fz_layer_src_t *ls = calloc((size_t)L, sizeof(*ls));
    for (int l = 0; l < L; l++) {
        ls[l].attn_norm = norms + (size_t)(2 * l) * E;
        ls[l].ffn_norm = norms + (size_t)(2 * l + 1) * E;
        ls[l].wq = synth_w(type, nq, E, pq, l, "attn_q");
        ls[l].wk = synth_w(type, nkv, E, pk, l, "attn_k");
        ls[l].wv = synth_w(type, nkv, E, pv, l, "attn_v");
        ls[l].wo = synth_w(type, E, nq, po, l, "attn_output");
        ls[l].w_gate = synth_w(type, F, E, pg, l, "ffn_gate");
        ls[l].w_up = synth_w(type, F, E, pu, l, "ffn_up");
        ls[l].w_down = synth_w(type, E, F, pd, l, "ffn_down");
    }
    fz_model_src_t src = {
        .n_layer = L, .n_embd = E, .n_head = sh->n_head, .n_head_kv = sh->n_head_kv,
        .head_dim = sh->head_dim, .n_ff = F, .n_vocab = sh->n_vocab, .eps = 1e-5f,
        .rope = { .mode = FB_ROPE_ADJACENT, .n_rot = sh->head_dim, .freq_base = sh->rope_base,
                  .freq_scale = 1.0f },
        .tok_embd = synth_w(type, sh->n_vocab, E, pe, 0, "token_embd"),
        .out_norm = norms + (size_t)(2 * L) * E,
        .output = synth_w(type, sh->n_vocab, E, ph, 0, sh->tied ? "token_embd" : "output"),
        .layers = ls,
    };
    synth_run_t r = { .n_vocab = sh->n_vocab };
    char err[512];
    fb_config_t cfg = { .threads = o->threads };
    if (fb_create(o->backend, &cfg, &r.be, err, sizeof(err))) {
        fprintf(stderr, "fusion-bench: %s\n", err);
        return 1;
    }
    r.nonorm = fb_set_option(r.be, "nonorm=0") == 0;
    r.steptime = o->steptime && fb_set_option(r.be, "steptime=0") == 0;
    for (int f = 0; f < 2; f++) {
        fz_plan_opts_t po2 = { .fused = f == 1, .softmax_mode = FB_SOFTMAX_MAXSUM,
                               .fold_policy = FZ_FOLD_AUTO,
                               .max_rows = FD_MAX(max_b, o->prefill), .max_seqs = max_b };
        if (fz_plan_create(&r.plan[f], r.be, &src, &po2, err, sizeof(err))) {
            fprintf(stderr, "fusion-bench: plan: %s\n", err);
            return 1;
        }
    }
    /* the KV cache: max_b slots of max_c positions, zeroed */
    size_t stride = (size_t)max_c * (size_t)nkv, kvb = stride * (size_t)max_b * sizeof(float);
    void **kc = calloc((size_t)L, sizeof(void *)), **vc = calloc((size_t)L, sizeof(void *));
    size_t zn = FD_MIN(kvb, (size_t)64 << 20);
    void *zero = calloc(1, zn);
    for (int l = 0; l < L; l++) {
        kc[l] = xalloc(r.be, kvb);
        vc[l] = xalloc(r.be, kvb);
        for (size_t off = 0; off < kvb; off += zn) {
            fb_to_device(r.be, (uint8_t *)kc[l] + off, zero, FD_MIN(zn, kvb - off));
            fb_to_device(r.be, (uint8_t *)vc[l] + off, zero, FD_MIN(zn, kvb - off));
        }
    }
    free(zero);
    fb_sync(r.be);
    r.kv = (fz_kv_t){ .k = kc, .v = vc, .n_ctx = max_c };
    double rb = (double)gg_row_bytes(type, 1024) / 1024.0; /* bytes per weight */
    double wgb = rb * ((double)L * ((double)E * (nq + 2 * nkv) + (double)nq * E + 3.0 * E * F) +
                       (double)sh->n_vocab * E) / 1e9;
    char desc[512] = "";
    if (r.be->ops->describe)
        r.be->ops->describe(r.be, desc, sizeof(desc));
    printf("# synth %s (%d layers, tied %d) %s on %s; ready in %.1f s; reps %d (medians)\n",
           sh->name, L, sh->tied, gg_type_name(type), desc, fd_now_s() - t0, o->reps);
    fflush(stdout);

    /* option sets ("a=1,b=2|c=3"): each runs every case after fb_set_option of its options */
    char sets[512];
    snprintf(sets, sizeof(sets), "%s", o->sets ? o->sets : "");
    char *save_set = NULL, *set = strtok_r(sets, "|", &save_set);
    int rc = 0;
    do {
        if (set && *set) {
            char opts[256], *save_kv = NULL;
            snprintf(opts, sizeof(opts), "%s", set);
            for (char *kv = strtok_r(opts, ",", &save_kv); kv && rc == 0;
                 kv = strtok_r(NULL, ",", &save_kv))
                if ((rc = fb_set_option(r.be, kv)))
                    fprintf(stderr, "fusion-bench: %s does not take option %s\n", o->backend, kv);
            printf("# options %s\n", set);
        }
        if (rc == 0)
            synth_cases(&r, o, sh, batches, nb, ctxs, nc, wgb);
    } while (rc == 0 && (set = strtok_r(NULL, "|", &save_set)));
    if (r.be->ops->describe) {
        r.be->ops->describe(r.be, desc, sizeof(desc));
        printf("# %s\n", desc);
    }
    for (int l = 0; l < L; l++) {
        fb_free(r.be, kc[l]);
        fb_free(r.be, vc[l]);
    }
    fz_plan_free(r.plan[0]);
    fz_plan_free(r.plan[1]);
    fb_destroy(r.be);
    free(kc); free(vc); free(ls); free(norms);
    free(pq); free(pk); free(pv); free(po); free(pg); free(pu); free(pd);
    if (ph != pe)
        free(ph);
    free(pe);
    return rc;
}

static int cmd_synth(const opts_t *o)
{
    int rc = 0, n = 0;
    for (size_t i = 0; i < FD_ARRAY_LEN(shapes) && rc == 0; i++)
        if (o->model_filter && wanted(o->model_filter, shapes[i].name)) {
            rc = synth_shape(o, &shapes[i]);
            n++;
        }
    if (n == 0) {
        fprintf(stderr, "fusion-bench synth: give --models (one or more of the shapes)\n");
        return 1;
    }
    return rc;
}

/* ---- fold: the error of each fold policy ---- */

static int cmd_fold(const opts_t *o)
{
    static const int types[] = { GG_F16, GG_BF16, GG_Q8_0, GG_Q6_K, GG_Q4_K, GG_Q4_0 };
    const int64_t n_in = 4096, n_out = 64;
    const int rows = 16;
    printf("# fusion-bench fold: relative L2 error against fp64, %lld x %lld, %d rows "
           "(every fourth x1e3), gamma in [e^-1.5, e^1.5]\n", (long long)n_out, (long long)n_in,
           rows);
    printf("%-6s %12s %12s %12s\n", "type", "unfused", "inscale", "requant");
    float *x = malloc(sizeof(float) * rows * n_in), *g = malloc(sizeof(float) * n_in);
    float *wd = malloc(sizeof(float) * n_out * n_in), *t = malloc(sizeof(float) * n_in);
    float *xn = malloc(sizeof(float) * n_in), *xs = malloc(sizeof(float) * n_in);
    for (int64_t i = 0; i < n_in; i++)
        g[i] = expf(1.5f * frand());
    for (int r = 0; r < rows; r++)
        for (int64_t i = 0; i < n_in; i++)
            x[r * n_in + i] = frand() * (r % 4 == 3 ? 1e3f : 1.0f) * (i % 61 == 7 ? 20.0f : 1.0f);
    for (size_t k = 0; k < FD_ARRAY_LEN(types); k++) {
        int type = types[k];
        size_t rb = gg_row_bytes(type, (uint64_t)n_in);
        uint8_t *wq = rand_matrix(type, n_out, n_in), *wr = malloc(rb * n_out);
        for (int64_t r = 0; r < n_out; r++) {
            fq_dequantize_row(type, wq + r * rb, wd + r * n_in, n_in);
            for (int64_t i = 0; i < n_in; i++)
                t[i] = wd[r * n_in + i] * g[i];
            fq_quantize_row(type, t, wr + r * rb, n_in);
        }
        double e[3][2] = { { 0 } }; /* unfused, inscale, requant: sum sq err, sum sq ref */
        for (int r = 0; r < rows; r++) {
            const float *xr = x + r * n_in;
            double ss = 0;
            for (int64_t i = 0; i < n_in; i++)
                ss += (double)xr[i] * xr[i];
            double inv = 1.0 / sqrt(ss / n_in + 1e-5);
            float inv32 = (float)inv;
            for (int64_t i = 0; i < n_in; i++) {
                xn[i] = xr[i] * inv32 * g[i];
                xs[i] = xr[i] * g[i];
            }
            for (int64_t oo = 0; oo < n_out; oo++) {
                double ref = 0;
                for (int64_t i = 0; i < n_in; i++)
                    ref += (double)xr[i] * inv * g[i] * wd[oo * n_in + i];
                double y[3] = { (float)fq_dot_ref(type, wq + oo * rb, xn, n_in),
                                (float)fq_dot_ref(type, wq + oo * rb, xs, n_in) * inv32,
                                (float)fq_dot_ref(type, wr + oo * rb, xr, n_in) * inv32 };
                for (int j = 0; j < 3; j++) {
                    e[j][0] += (y[j] - ref) * (y[j] - ref);
                    e[j][1] += ref * ref;
                }
            }
        }
        printf("%-6s %12.2e %12.2e %12.2e\n", gg_type_name(type), sqrt(e[0][0] / e[0][1]),
               sqrt(e[1][0] / e[1][1]), sqrt(e[2][0] / e[2][1]));
        free(wq);
        free(wr);
    }
    free(x); free(g); free(wd); free(t); free(xn); free(xs);
    (void)o;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: fusion-bench ops [--backend B] [--type T] [--models a,b] [--ops qkv,gate_up,head,attn]\n"
            "                        [--reps N] [--threads N] [--ctx N]\n"
            "       fusion-bench decode -m MODEL [--backend B] [--threads N] [--reps N] [-n N]\n"
            "                          [--cache-types f32,f16,q8_0 [--depths 2048,4096]\n"
            "                          [--swa ring,full]]\n"
            "         (with --cache-types: the fused model per KV cache type, decode at each\n"
            "         context depth, cache bytes and resident memory)\n"
            "       fusion-bench fold\n"
            "       fusion-bench schedule --backend corsair [--model NAME | -m FILE] [--batch N]\n"
            "                          [--ctx N] [--prefill N] [--all-blocks] [-o KEY=VALUE]\n"
            "         per-block schedule of the simulated Corsair device: DIMC busy, SIMD\n"
            "         busy, collective, exposed time, fused and unfused\n"
            "       fusion-bench synth --models M [--backend B] [--type T] [--batches 1,8]\n"
            "                          [--ctxs 512,4096] [--prefill 512] [--reps N]\n"
            "                          [--sets 'k=v,k=v|k=v']  (backend option sets, in turn)\n"
            "                          [--steptime 1]  (then each variant alone with the\n"
            "                          backend's steptime=1: where a step's wall time goes)\n"
            "         decode steps (ms/token) and a prefill of a model shape with random\n"
            "         weights: unfused, fused, and fused with the norms deleted (a lower\n"
            "         bound, on backends that take nonorm=1)\n"
            "models: stories260K, stories110M, TinyLlama-1.1B, Llama-3.2-1B, Llama-2-7B,\n"
            "        Llama-3-8B\n"
            "       --clock wall|cpu: wall time (default) or process CPU time (use with --threads 1\n"
            "       on a shared machine)\n"
            "defaults: backend cpu, type Q8_0, reps 21, threads 0 (all cores), ctx 512, n 64\n");
    perf_usage(f);
}

/* `fusion-bench schedule --backend corsair [options]`: the per-block schedule of the
 * simulated Corsair device (DIMC busy, SIMD busy, collective, exposed time; fused and
 * unfused), from bench/corsair-report.c, which is linked in.  Only the corsair backend
 * simulates a device schedule. */
int corsair_report_main(int argc, char **argv);
static int schedule_main(int argc, char **argv)
{
    char *args[argc + 1];
    int n = 0;
    args[n++] = argv[0];
    args[n++] = argv[1];
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
            if (strcmp(argv[i + 1], "corsair") != 0) {
                fprintf(stderr, "fusion-bench: schedule: only --backend corsair simulates a "
                        "device schedule (got %s)\n", argv[i + 1]);
                return 1;
            }
            i++;
            continue;
        }
        args[n++] = argv[i];
    }
    args[n] = NULL;
    return corsair_report_main(n, args);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2;
    }
    if (perf_command(argv[1]))
        return perf_main(argc, argv);
    if (strcmp(argv[1], "schedule") == 0)
        return schedule_main(argc, argv);
    opts_t o = { .backend = "cpu", .type = GG_Q8_0, .reps = 21, .ctx = 512, .n_gen = 64,
                 .prefill = 512 };
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "fusion-bench: %s needs a value\n", a);
            return 1;
        }
        i++;
        if (strcmp(a, "--backend") == 0)
            o.backend = v;
        else if (strcmp(a, "--type") == 0)
            o.type = gg_type_from_name(v);
        else if (strcmp(a, "--models") == 0)
            o.model_filter = v;
        else if (strcmp(a, "--ops") == 0)
            o.op_filter = v;
        else if (strcmp(a, "--reps") == 0)
            o.reps = atoi(v);
        else if (strcmp(a, "--threads") == 0)
            o.threads = atoi(v);
        else if (strcmp(a, "--ctx") == 0)
            o.ctx = atoi(v);
        else if (strcmp(a, "-n") == 0)
            o.n_gen = atoi(v);
        else if (strcmp(a, "-m") == 0)
            o.model_path = v;
        else if (strcmp(a, "--batches") == 0)
            o.batches = v;
        else if (strcmp(a, "--ctxs") == 0)
            o.ctxs = v;
        else if (strcmp(a, "--prefill") == 0)
            o.prefill = atoi(v);
        else if (strcmp(a, "--sets") == 0)
            o.sets = v;
        else if (strcmp(a, "--cache-types") == 0)
            o.cache_types = v;
        else if (strcmp(a, "--depths") == 0)
            o.depths = v;
        else if (strcmp(a, "--swa") == 0)
            o.swa = v;
        else if (strcmp(a, "--steptime") == 0)
            o.steptime = atoi(v) != 0;
        else if (strcmp(a, "--clock") == 0 && (!strcmp(v, "wall") || !strcmp(v, "cpu")))
            o.cpu_clock = strcmp(v, "cpu") == 0;
        else {
            fprintf(stderr, "fusion-bench: unknown option %s\n", a);
            usage(stderr);
            return 1;
        }
    }
    if (o.type < 0 || !fq_type_supported(o.type) || o.reps < 1 || o.ctx < 1 || o.n_gen < 1 ||
        o.threads < 0) {
        fprintf(stderr, "fusion-bench: bad --type, --reps, --ctx, -n or --threads\n");
        return 1;
    }
    use_cpu_clock = o.cpu_clock;
    if (strcmp(argv[1], "ops") == 0)
        return cmd_ops(&o);
    if (strcmp(argv[1], "decode") == 0)
        return cmd_decode(&o);
    if (strcmp(argv[1], "fold") == 0)
        return cmd_fold(&o);
    if (strcmp(argv[1], "synth") == 0)
        return o.prefill < 0 ? 1 : cmd_synth(&o);
    fprintf(stderr, "fusion-bench: unknown command %s\n", argv[1]);
    usage(stderr);
    return 1;
}
