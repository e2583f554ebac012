/* corsair-report: the tables of docs/corsair.md, reproducibly.
 *   table     Llama-2-7B, Llama-3-8B, Llama-3-70B: decode (batch 1 and 64, contexts 512,
 *             2048, 8192) and a 512-token prefill, unfused and fused simulated latency, the
 *             reduction, and the share of the unfused latency spent in collectives;
 *   schedule  the per-block schedule of one step (DIMC busy, SIMD busy, collective time,
 *             exposed time), fused and unfused, from shapes; or with -m FILE the backend's own
 *             schedule of a real model's decode step;
 *   sweep     the reduction under changed constants (collective latency per level, SIMD
 *             throughput, dispatch overheads, mapping): where the paper's claim holds;
 *   numerics  fused vs unfused error against fp64 per op under BFP, and stories260K greedy
 *             agreement with the CPU backend token by token;
 *   params    the timing model's parameter table with its sources;
 *   all       every table above, in order.
 * Every timing-model constant can be overridden with -o KEY=VALUE (repeatable). */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/corsair/corsair.h"
#include "backends/corsair/replay.h"
#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/model.h"
#include "fusion/fold.h"

typedef struct opts {
    const char *overrides[64];
    int n_over;
    const char *model, *file, *stories;
    int batch, prefill;
    int64_t ctx;
    bool all_blocks;
} opts_t;

static void die(const char *msg)
{
    fprintf(stderr, "corsair-report: %s\n", msg);
    exit(1);
}

static void params_with(const opts_t *o, const char *const *extra, cs_params_t *p)
{
    char err[256];
    cs_params_default(p);
    for (int i = 0; i < o->n_over; i++)
        if (cs_params_set(p, o->overrides[i], err, sizeof(err)))
            die(err);
    for (int i = 0; extra && extra[i]; i++)
        if (cs_params_set(p, extra[i], err, sizeof(err)))
            die(err);
}

/* One step of a shape on a fresh simulator, mapped for its batch and context. */
typedef struct run {
    double t;             /* step time on the device, host I/O excluded, s */
    double host;          /* the host I/O on the step's critical path: token ids in, logits out */
    cs_acct_t total;
    cs_hw_t hw;
} run_t;

static run_t run_step(const cs_params_t *p, const cs_llama_shape_t *m, int batch, int rows,
                      int64_t past, bool fused, int mode, cs_sim_t **keep)
{
    cs_sim_t *s;
    if (cs_sim_create(&s, p))
        die("out of memory");
    cs_model_shape_t ms = cs_replay_model_shape(m, p, batch, past + rows);
    cs_sim_map(s, &ms);
    cs_step_t st = { .n_seq = batch, .rows = rows, .past = past, .fused = fused,
                     .softmax_mode = mode };
    run_t r = { .t = cs_replay_step(s, m, &st), .hw = *cs_sim_hw(s) };
    cs_sim_totals(s, NULL, &r.total);
    int n;
    const cs_op_rec_t *ops = cs_sim_ops(s, &n);
    for (int i = 0; i < n; i++)
        if (strcmp(ops[i].name, "to_host") == 0 || strcmp(ops[i].name, "get_rows") == 0)
            r.host += ops[i].a.exposed_s;
    r.t -= r.host;
    if (keep)
        *keep = s;
    else
        cs_sim_free(s);
    return r;
}

static const char *map_name(const cs_hw_t *h, char *buf, size_t len)
{
    static const char *const names[] = { "1 card", "pipeline", "tensor-parallel" };
    if (h->mapping == CS_MAP_CARD)
        snprintf(buf, len, "1 card%s", h->weights_lpddr ? " (weights in LPDDR)" : "");
    else
        snprintf(buf, len, "%s, %d cards%s", names[h->mapping], h->n_cards,
                 h->weights_lpddr ? " (weights in LPDDR)" : "");
    return buf;
}

static const char *const headline_models[] = { "Llama-2-7B", "Llama-3-8B", "Llama-3-70B" };

/* ---- table ---- */

static void cmd_table(const opts_t *o)
{
    cs_params_t p;
    params_with(o, NULL, &p);
    printf("### Simulated step latency, unfused vs fused\n\n");
    printf("Decode: one new token for each of `batch` sequences that already hold `ctx - 1`\n"
           "positions; prefill: 512 prompt tokens of one sequence in one step.  \"fused\" is\n"
           "the max+sum softmax (the safe default), \"sum-only\" the paper's softmax without a\n"
           "max.  \"collectives\" is the share of the unfused step spent in norm and softmax\n"
           "reductions (and tensor-parallel all-reduces), all of which sit on its critical\n"
           "path.  \"no-collective\" is the reduction left when collectives and SIMD cost\n"
           "nothing: what the fused plan gains without hiding any reduction (fewer kernels\n"
           "to dispatch and drain).  Latencies are the device's: the host I/O\n"
           "of the step (token ids in, fp32 logits of every sequence out over PCIe), the same\n"
           "in both plans, is left out and shown in its own column.\n\n");
    printf("| model | mapping | KV | phase | batch | ctx | unfused | fused | reduction | "
           "sum-only | collectives | no-collective | host I/O |\n");
    printf("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    static const char *const zero[] = { "lat_scale=0", "simd_ghz=1e9", "simd_issue_ns=0",
                                        NULL };
    cs_params_t pz;
    params_with(o, zero, &pz);
    static const int batches[] = { 1, 64 };
    static const int64_t ctxs[] = { 512, 2048, 8192 };
    for (size_t mi = 0; mi < FD_ARRAY_LEN(headline_models); mi++) {
        const cs_llama_shape_t *m = cs_llama_shape(headline_models[mi]);
        for (int ph = 0; ph < 7; ph++) {
            bool prefill = ph == 6;
            int B = prefill ? 1 : batches[ph / 3], rows = prefill ? 512 : 1;
            int64_t ctx = prefill ? 512 : ctxs[ph % 3], past = prefill ? 0 : ctx - 1;
            run_t u = run_step(&p, m, B, rows, past, false, 0, NULL);
            run_t f = run_step(&p, m, B, rows, past, true, FB_SOFTMAX_MAXSUM, NULL);
            run_t so = run_step(&p, m, B, rows, past, true, FB_SOFTMAX_SUMONLY, NULL);
            run_t zu = run_step(&pz, m, B, rows, past, false, 0, NULL);
            run_t zf = run_step(&pz, m, B, rows, past, true, FB_SOFTMAX_MAXSUM, NULL);
            char mp[64];
            const char *unit = u.t < 1e-3 ? "us" : "ms";
            double k = u.t < 1e-3 ? 1e6 : 1e3;
            printf("| %s | %s | %s | %s | %d | %lld | %.1f %s | %.1f %s | %.1f%% | %.1f%% | "
                   "%.1f%% | %.1f%% | %.1f us |\n", m->name, map_name(&u.hw, mp, sizeof(mp)),
                   u.hw.kv_lpddr ? "LPDDR" : "SRAM", prefill ? "prefill 512" : "decode", B,
                   (long long)ctx, u.t * k, unit, f.t * k, unit, 100 * (u.t - f.t) / u.t,
                   100 * (u.t - so.t) / u.t, 100 * u.total.coll_s / u.t,
                   100 * (zu.t - zf.t) / zu.t, u.host * 1e6);
        }
    }
    printf("\n");
}

/* ---- schedule ---- */

static void print_blocks(const char *plan, cs_sim_t *s, bool all)
{
    cs_acct_t b[1024];
    int id[1024];
    int n = cs_sim_blocks(s, b, id, 1024);
    cs_acct_t sum = { 0 };
    for (int i = 0; i < n; i++) {
        sum.dimc_s += b[i].dimc_s;
        sum.simd_s += b[i].simd_s;
        sum.coll_s += b[i].coll_s;
        sum.xfer_s += b[i].xfer_s;
        sum.exposed_s += b[i].exposed_s;
        if (!all && id[i] >= 2 && id[i] != CS_BLOCK_PRE && id[i] != CS_BLOCK_HEAD)
            continue;
        char name[16];
        if (id[i] == CS_BLOCK_PRE)
            snprintf(name, sizeof(name), "embed");
        else if (id[i] == CS_BLOCK_HEAD)
            snprintf(name, sizeof(name), "head");
        else
            snprintf(name, sizeof(name), "block %d", id[i]);
        printf("| %s | %s | %.3f | %.3f | %.3f | %.3f | %.3f |\n", plan, name,
               b[i].dimc_s * 1e6, b[i].simd_s * 1e6, b[i].coll_s * 1e6, b[i].xfer_s * 1e6,
               b[i].exposed_s * 1e6);
    }
    printf("| %s | **step** | %.3f | %.3f | %.3f | %.3f | **%.3f** |\n", plan, sum.dimc_s * 1e6,
           sum.simd_s * 1e6, sum.coll_s * 1e6, sum.xfer_s * 1e6, sum.exposed_s * 1e6);
}

/* The ops of one block; runs of the same op (the per-sequence KV writes) on one line. */
static void print_ops(const char *plan, cs_sim_t *s, int block)
{
    int n;
    const cs_op_rec_t *r = cs_sim_ops(s, &n);
    double t0 = -1;
    for (int i = 0; i < n; i++) {
        if (r[i].block != block)
            continue;
        if (t0 < 0)
            t0 = r[i].start_s;
        cs_op_rec_t a = r[i];
        int k = 1;
        while (i + 1 < n && r[i + 1].block == block && strcmp(r[i + 1].name, a.name) == 0) {
            i++;
            k++;
            a.end_s = FD_MAX(a.end_s, r[i].end_s);
            a.a.dimc_s += r[i].a.dimc_s;
            a.a.simd_s += r[i].a.simd_s;
            a.a.coll_s += r[i].a.coll_s;
            a.a.xfer_s += r[i].a.xfer_s;
            a.a.exposed_s += r[i].a.exposed_s;
        }
        char name[40];
        snprintf(name, sizeof(name), k > 1 ? "%s x%d" : "%s", a.name, k);
        printf("| %s | %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", plan, name,
               (a.start_s - t0) * 1e6, (a.end_s - t0) * 1e6, a.a.dimc_s * 1e6,
               a.a.simd_s * 1e6, a.a.coll_s * 1e6, a.a.xfer_s * 1e6, a.a.exposed_s * 1e6);
    }
}

static void schedule_header(void)
{
    printf("| plan | block | DIMC busy | SIMD busy | collective | other transfer | exposed |\n");
    printf("|---|---|---:|---:|---:|---:|---:|\n");
}

static int schedule_file(const opts_t *o)
{
    printf("### Per-block schedule of %s on the corsair backend (us)\n\n", o->file);
    printf("The last of 8 decode steps after a 4-token prompt, batch 1.\n\n");
    schedule_header();
    for (int fused = 0; fused < 2; fused++) {
        llm_load_params_t lp;
        llm_load_params_default(&lp);
        lp.path = o->file;
        lp.backend = "corsair";
        lp.fusion = fused;
        lp.n_ctx = 64;
        const char *bo[66];
        for (int i = 0; i < o->n_over; i++)
            bo[i] = o->overrides[i];
        bo[o->n_over] = NULL;
        lp.backend_options = bo;
        llm_model_t *m;
        char err[512];
        if (llm_load(&m, &lp, err, sizeof(err)))
            die(err);
        int slot, V = llm_hparams(m)->n_vocab;
        float *lg = malloc(sizeof(float) * V);
        int32_t toks[12] = { 1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315 };
        if (!lg || llm_seq_alloc(m, &slot))
            die("cannot start a sequence");
        for (int t = 0; t < 9; t++) {
            llm_batch_entry_t e = { .slot = slot, .tokens = toks + (t ? t + 3 : 0),
                                    .n_tokens = t ? 1 : 4, .want_logits = true };
            for (int i = 0; i < e.n_tokens; i++)
                toks[(t ? t + 3 : 0) + i] %= V;
            if (llm_decode(m, &e, 1, lg))
                die("decode failed");
        }
        print_blocks(fused ? "fused" : "unfused", fb_corsair_sim(llm_backend(m)), true);
        free(lg);
        llm_free(m);
    }
    printf("\n");
    return 0;
}

static void cmd_schedule(const opts_t *o)
{
    if (o->file) {
        schedule_file(o);
        return;
    }
    cs_params_t p;
    params_with(o, NULL, &p);
    const cs_llama_shape_t *m = cs_llama_shape(o->model);
    if (!m)
        die("unknown --model (stories260K, Llama-2-7B, Llama-3-8B, Llama-2-70B, Llama-3-70B)");
    int rows = o->prefill ? o->prefill : 1;
    int64_t past = o->prefill ? 0 : o->ctx - 1;
    cs_sim_t *su, *sf;
    run_t u = run_step(&p, m, o->batch, rows, past, false, 0, &su);
    run_t f = run_step(&p, m, o->batch, rows, past, true, FB_SOFTMAX_MAXSUM, &sf);
    char mp[64];
    printf("### Per-block schedule: %s, %s, batch %d, %s (us)\n\n", m->name,
           map_name(&u.hw, mp, sizeof(mp)), o->batch, o->prefill ? "prefill" : "decode");
    if (o->prefill)
        printf("A %d-token prefill.\n", o->prefill);
    else
        printf("One decode step at context %lld.\n", (long long)o->ctx);
    printf("Busy times add the work of each engine; \"exposed\" is the block's share of the\n"
           "critical path (blocks sum to the step, host I/O included: %.3f us).  Device step,\n"
           "host I/O excluded: unfused %.3f us, fused %.3f us (%.1f%% less).\n\n",
           u.host * 1e6, u.t * 1e6, f.t * 1e6, 100 * (u.t - f.t) / u.t);
    schedule_header();
    print_blocks("unfused", su, o->all_blocks);
    print_blocks("fused", sf, o->all_blocks);
    printf("\nThe ops of block 1 (times from the block's first op, us):\n\n");
    printf("| plan | op | start | end | DIMC | SIMD | collective | transfer | exposed |\n");
    printf("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    print_ops("unfused", su, 1);
    print_ops("fused", sf, 1);
    printf("\n");
    cs_sim_free(su);
    cs_sim_free(sf);
}

/* ---- sweep ---- */

typedef struct scenario {
    const char *label;
    const char *opts[6];
} scenario_t;

static const scenario_t scenarios[] = {
    { "default", { NULL } },
    { "every network latency x0 (lat_scale=0)", { "lat_scale=0", NULL } },
    { "every network latency x0.25", { "lat_scale=0.25", NULL } },
    { "every network latency x0.5", { "lat_scale=0.5", NULL } },
    { "every network latency x2", { "lat_scale=2", NULL } },
    { "every network latency x4", { "lat_scale=4", NULL } },
    { "every network latency x8", { "lat_scale=8", NULL } },
    { "die-to-die 0 ns (on-chiplet levels only)", { "lat_d2d_ns=0", NULL } },
    { "die-to-die 230 ns (2x published)", { "lat_d2d_ns=230", NULL } },
    { "quad 40 ns, chiplet NoC 100 ns (4x)", { "lat_quad_ns=40", "lat_chiplet_ns=100", NULL } },
    { "one all-to-all exchange per level (coll_legs=1)", { "coll_legs=1", NULL } },
    { "SIMD 16 lanes per slice", { "lanes=16", NULL } },
    { "SIMD 256 lanes per slice", { "lanes=256", NULL } },
    { "SIMD dispatch 0 ns", { "simd_issue_ns=0", NULL } },
    { "SIMD dispatch 50 ns", { "simd_issue_ns=50", NULL } },
    { "DIMC dispatch 50 ns", { "dimc_issue_ns=50", NULL } },
    { "DIMC efficiency 0.5", { "dimc_util=0.5", NULL } },
    { "slice port 73 GB/s (64 B/cycle)", { "bw_noc_gbs=73", NULL } },
    { "softmax exp poly2", { "exp=poly2", NULL } },
    { "zero-cost collectives and SIMD", { "lat_scale=0", "simd_ghz=1e9", "simd_issue_ns=0",
                                          "dimc_issue_ns=0", NULL } },
    { "mapping: 1 card (weights in LPDDR)", { "mapping=card", NULL } },
    { "mapping: pipeline over 8 cards", { "mapping=pipeline", "cards=8", NULL } },
    { "mapping: tensor-parallel, auto cards", { "mapping=tp", NULL } },
    { "mapping: tensor-parallel over 8 cards", { "mapping=tp", "cards=8", NULL } },
    { "mapping: tensor-parallel over 16 cards", { "mapping=tp", "cards=16", NULL } },
};

static void sweep_model(const opts_t *o, const cs_llama_shape_t *m)
{
    printf("#### %s\n\n", m->name);
    printf("| constants | decode b1 c2048 | reduction | collectives | decode b64 c2048 | "
           "reduction | prefill 512 | reduction |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < FD_ARRAY_LEN(scenarios); i++) {
        cs_params_t p;
        params_with(o, scenarios[i].opts, &p);
        run_t u1 = run_step(&p, m, 1, 1, 2047, false, 0, NULL);
        run_t f1 = run_step(&p, m, 1, 1, 2047, true, FB_SOFTMAX_MAXSUM, NULL);
        run_t u64 = run_step(&p, m, 64, 1, 2047, false, 0, NULL);
        run_t f64 = run_step(&p, m, 64, 1, 2047, true, FB_SOFTMAX_MAXSUM, NULL);
        run_t up = run_step(&p, m, 1, 512, 0, false, 0, NULL);
        run_t fp = run_step(&p, m, 1, 512, 0, true, FB_SOFTMAX_MAXSUM, NULL);
        printf("| %s | %.1f us | %.1f%% | %.1f%% | %.1f us | %.1f%% | %.2f ms | %.1f%% |\n",
               scenarios[i].label, u1.t * 1e6, 100 * (u1.t - f1.t) / u1.t,
               100 * u1.total.coll_s / u1.t, u64.t * 1e6, 100 * (u64.t - f64.t) / u64.t,
               up.t * 1e3, 100 * (up.t - fp.t) / up.t);
    }
    printf("\n");
}

static void cmd_sweep(const opts_t *o)
{
    printf("### Sensitivity of the reduction to the assumed constants\n\n");
    printf("Each row changes the named constants from the defaults of the parameter table;\n"
           "\"collectives\" is their share of the unfused batch-1 step.\n\n");
    if (o->model) {
        const cs_llama_shape_t *m = cs_llama_shape(o->model);
        if (!m)
            die("unknown --model");
        sweep_model(o, m);
        return;
    }
    sweep_model(o, cs_llama_shape("Llama-3-8B"));
    sweep_model(o, cs_llama_shape("Llama-3-70B"));
}

/* ---- numerics ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

static fb_backend_t *make_corsair(const char *const *opts)
{
    fb_backend_t *be;
    char err[256];
    fb_config_t cfg = { .threads = 1, .options = opts };
    if (fb_create("corsair", &cfg, &be, err, sizeof(err)))
        die(err);
    return be;
}

/* relative L2 error of y against ref */
static double l2(const float *y, const double *ref, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += (y[i] - ref[i]) * (y[i] - ref[i]);
        s += ref[i] * ref[i];
    }
    return sqrt(e / s);
}

/* RMSNorm -> GEMM, n = 4096 -> 512, 16 rows (every fourth x1e3; with outliers: 1 element in
 * 61 is 20x), gamma in [e^-1.5, e^1.5]: unfused and fused errors against fp64. */
static void numerics_gemm(const char *wfmt, int type, int policy, bool outliers,
                          const char *label)
{
    const int64_t n = 4096, m = 512, R = 16;
    const char *opts[] = { wfmt, NULL };
    fb_backend_t *be = make_corsair(opts);
    size_t rb = gg_row_bytes(type, (uint64_t)n);
    uint8_t *wq = malloc(rb * m);
    float *wd = malloc(sizeof(float) * n * m), *g = malloc(sizeof(float) * n);
    float *x = malloc(sizeof(float) * n * R);
    double *ref = malloc(sizeof(double) * m * R);
    for (int64_t o = 0; o < m; o++) {
        for (int64_t i = 0; i < n; i++)
            wd[o * n + i] = frand() / 64;
        fq_quantize_row(type, wd + o * n, wq + o * rb, n);
        fq_dequantize_row(type, wq + o * rb, wd + o * n, n);
    }
    for (int64_t i = 0; i < n; i++)
        g[i] = expf(1.5f * frand());
    for (int64_t r = 0; r < R; r++)
        for (int64_t i = 0; i < n; i++)
            x[r * n + i] = frand() * (outliers && i % 61 == 7 ? 20.0f : 1.0f) *
                           (r % 4 == 3 ? 1e3f : 1.0f);
    for (int64_t r = 0; r < R; r++) {
        double ss = 0;
        for (int64_t i = 0; i < n; i++)
            ss += (double)x[r * n + i] * x[r * n + i];
        double s = 1.0 / sqrt(ss / n + 1e-5);
        for (int64_t o = 0; o < m; o++) {
            double acc = 0;
            for (int64_t i = 0; i < n; i++)
                acc += (double)wd[o * n + i] * g[i] * x[r * n + i] * s;
            ref[r * m + o] = acc;
        }
    }
    fb_weight_t w = { .type = type, .n_in = n, .n_out = m, .src = wq, .name = "w" };
    fb_weight_t gw = { .type = GG_F32, .n_in = n, .n_out = 1, .src = g, .name = "g" };
    fz_folded_t f;
    char err[256];
    if (fz_fold_rms(&w, 1, g, policy, "wf", &f, err, sizeof(err)) || fb_weight_prepare(be, &w) ||
        fb_weight_prepare(be, &gw) || fb_weight_prepare(be, &f.w))
        die("cannot prepare the GEMM weights");
    float *dx = fb_alloc(be, sizeof(float) * n * R), *dxn = fb_alloc(be, sizeof(float) * n * R);
    float *yu = fb_alloc(be, sizeof(float) * m * R), *yf = fb_alloc(be, sizeof(float) * m * R);
    memcpy(dx, x, sizeof(float) * n * R);
    fb_defer_t d = { .kind = FB_NORM_RMS, .eps = 1e-5f };
    if (fb_rmsnorm(be, dx, R, n, &gw, 1e-5f, dxn) || fb_matmul(be, &w, dxn, R, yu, NULL) ||
        fb_matmul(be, &f.w, dx, R, yf, &d))
        die("GEMM failed");
    printf("| RMSNorm -> GEMM 4096 -> 512, %s, %s | %s | %.2e | %.2e |\n", label,
           outliers ? "x with 20x outliers" : "x uniform", wfmt + strlen("weights="),
           l2(yu, ref, m * R), l2(yf, ref, m * R));
    fb_free(be, dx); fb_free(be, dxn); fb_free(be, yu); fb_free(be, yf);
    fb_weight_release(be, &w);
    fb_weight_release(be, &gw);
    fb_weight_release(be, &f.w);
    fz_folded_free(&f);
    fb_destroy(be);
    free(wq); free(wd); free(g); free(x); free(ref);
}

/* Softmax -> P.V, one sequence: 4 queries, 8 heads (2 KV heads) of 128 at context 2048,
 * scores of standard deviation ~3 (amp 1) and ~10 (amp 3): each mode against fp64. */
static void numerics_attention(bool poly2, float amp)
{
    const int hd = 128, nh = 8, nkv = 2, nq = 4, T = 2048;
    const char *opts[] = { poly2 ? "exp=poly2" : "exp=expf", NULL };
    fb_backend_t *be = make_corsair(opts);
    const int nqd = nh * hd, nkvd = nkv * hd;
    float *q = fb_alloc(be, sizeof(float) * nq * nqd), *k = fb_alloc(be, sizeof(float) * T * nkvd);
    float *v = fb_alloc(be, sizeof(float) * T * nkvd), *out = fb_alloc(be, sizeof(float) * nq * nqd);
    double *ref = malloc(sizeof(double) * nq * nqd), *s = malloc(sizeof(double) * T);
    for (int i = 0; i < nq * nqd; i++)
        q[i] = frand() * 1.7f * amp;
    for (int i = 0; i < T * nkvd; i++) {
        k[i] = frand() * 1.7f;
        v[i] = frand();
    }
    int32_t pos[4] = { T - 4, T - 3, T - 2, T - 1 };
    const float scale = 1.0f / sqrtf((float)hd);
    for (int i = 0; i < nq; i++)
        for (int h = 0; h < nh; h++) {
            int g = h / (nh / nkv), Ti = pos[i] + 1;
            double mx = -INFINITY, l = 0;
            for (int t = 0; t < Ti; t++) {
                double d = 0;
                for (int j = 0; j < hd; j++)
                    d += (double)q[i * nqd + h * hd + j] * k[t * nkvd + g * hd + j];
                s[t] = d * scale;
                mx = fmax(mx, s[t]);
            }
            for (int t = 0; t < Ti; t++)
                l += s[t] = exp(s[t] - mx);
            for (int j = 0; j < hd; j++) {
                double o = 0;
                for (int t = 0; t < Ti; t++)
                    o += s[t] * v[t * nkvd + g * hd + j];
                ref[i * nqd + h * hd + j] = o / l;
            }
        }
    static const int modes[] = { FB_SOFTMAX_REF, FB_SOFTMAX_MAXSUM, FB_SOFTMAX_SUMONLY };
    double e[3];
    for (int md = 0; md < 3; md++) {
        fb_attn_t a = { .q = q, .ldq = nqd, .k = k, .v = v, .ldkv = nkvd, .out = out,
                        .ldo = nqd, .n_q = nq, .pos = pos, .n_head = nh, .n_head_kv = nkv,
                        .head_dim = hd, .scale = scale, .mode = modes[md] };
        if (fb_attention(be, &a, 1))
            die("attention failed");
        e[md] = l2(out, ref, nq * nqd);
    }
    printf("| softmax -> P.V, ctx 2048, score sd ~%.0f, %s | bfp8 | %.2e | %.2e (max+sum), "
           "%.2e (sum-only) |\n", 3.0 * amp, poly2 ? "poly2 exp" : "expf", e[0], e[1], e[2]);
    fb_free(be, q); fb_free(be, k); fb_free(be, v); fb_free(be, out);
    free(ref);
    free(s);
    fb_destroy(be);
}

static int argmax(const float *v, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

static llm_model_t *load(const char *path, const char *backend, bool fused, int mode,
                         const char *const *bo)
{
    llm_load_params_t lp;
    llm_load_params_default(&lp);
    lp.path = path;
    lp.backend = backend;
    lp.fusion = fused;
    lp.softmax_mode = mode;
    lp.threads = 1;
    lp.n_ctx = 256;
    lp.backend_options = bo;
    llm_model_t *m;
    char err[512];
    if (llm_load(&m, &lp, err, sizeof(err)))
        die(err);
    return m;
}

static void numerics_stories(const char *path)
{
    const int N = 200;
    llm_model_t *c = load(path, "cpu", true, FB_SOFTMAX_MAXSUM, NULL);
    const int V = llm_hparams(c)->n_vocab;
    float *lc = malloc(sizeof(float) * V * N), *lg = malloc(sizeof(float) * V);
    int32_t ref[201];
    int slot;
    if (!lc || !lg || llm_seq_alloc(c, &slot))
        die("out of memory");
    ref[0] = 1;
    for (int i = 0; i < N; i++) {
        llm_batch_entry_t e = { .slot = slot, .tokens = &ref[i], .n_tokens = 1, .want_logits = true };
        if (llm_decode(c, &e, 1, lc + (size_t)i * V))
            die("cpu decode failed");
        ref[i + 1] = argmax(lc + (size_t)i * V, V);
    }
    llm_free(c);
    printf("\n#### stories260K on the corsair backend against the CPU backend\n\n");
    printf("Greedy decoding from the BOS token, 200 positions.  Teacher-forced: both backends\n"
           "read the CPU's tokens and their top-1 choices are compared at every position;\n"
           "\"largest gap\" is the CPU's logit lead of its own choice over corsair's choice\n"
           "where they differ (a near tie when small).  Free-running: the first position\n"
           "where corsair's own greedy text leaves the CPU's.\n\n");
    printf("| plan | weights | exp | teacher-forced agreement | largest gap | free-running: "
           "first difference |\n|---|---|---|---:|---:|---:|\n");
    static const struct { bool fused; int mode; const char *w, *x; } cfgs[] = {
        { false, FB_SOFTMAX_REF, "weights=bfp8", "exp=expf" },
        { true, FB_SOFTMAX_MAXSUM, "weights=bfp8", "exp=expf" },
        { true, FB_SOFTMAX_SUMONLY, "weights=bfp8", "exp=expf" },
        { false, FB_SOFTMAX_REF, "weights=bfp8", "exp=poly2" },
        { true, FB_SOFTMAX_MAXSUM, "weights=bfp8", "exp=poly2" },
        { false, FB_SOFTMAX_REF, "weights=bfp4", "exp=expf" },
        { true, FB_SOFTMAX_MAXSUM, "weights=bfp4", "exp=expf" },
    };
    for (size_t k = 0; k < FD_ARRAY_LEN(cfgs); k++) {
        const char *bo[] = { cfgs[k].w, cfgs[k].x, NULL };
        llm_model_t *m = load(path, "corsair", cfgs[k].fused, cfgs[k].mode, bo);
        int s2, agree = 0, first = -1;
        double gap = 0;
        if (llm_seq_alloc(m, &s2))
            die("no slot");
        for (int i = 0; i < N; i++) {
            llm_batch_entry_t e = { .slot = s2, .tokens = &ref[i], .n_tokens = 1, .want_logits = true };
            if (llm_decode(m, &e, 1, lg))
                die("corsair decode failed");
            int a = argmax(lg, V);
            if (a == ref[i + 1])
                agree++;
            else
                gap = fmax(gap, lc[(size_t)i * V + ref[i + 1]] - lc[(size_t)i * V + a]);
        }
        llm_seq_free(m, s2);
        llm_seq_alloc(m, &s2);
        int32_t t = 1;
        for (int i = 0; i < N && first < 0; i++) {
            llm_batch_entry_t e = { .slot = s2, .tokens = &t, .n_tokens = 1, .want_logits = true };
            if (llm_decode(m, &e, 1, lg))
                die("corsair decode failed");
            t = argmax(lg, V);
            if (t != ref[i + 1])
                first = i;
        }
        char fd[16];
        snprintf(fd, sizeof(fd), first < 0 ? "none" : "%d", first);
        printf("| %s | %s | %s | %d/%d (%.1f%%) | %.3f | %s |\n",
               !cfgs[k].fused ? "unfused" : cfgs[k].mode == FB_SOFTMAX_MAXSUM ?
               "fused (max+sum)" : "fused (sum-only)", cfgs[k].w + 8, cfgs[k].x + 4, agree, N,
               100.0 * agree / N, gap, fd);
        llm_free(m);
    }
    free(lc);
    free(lg);
}

static const char *stories_path(const opts_t *o)
{
    static char buf[4096];
    if (o->stories)
        return o->stories;
    const char *sh = getenv("FUSIOND_SHARED");
    snprintf(buf, sizeof(buf), "%s/models/stories260K.gguf", sh && *sh ? sh : "../shared");
    return buf;
}

static void cmd_numerics(const opts_t *o)
{
    printf("### Numerics: error against fp64 per op under block floating point\n\n");
    printf("Relative L2 error of each op's output against an fp64 computation from the same\n"
           "(file-format) weights and fp32 inputs; inputs 8-bit BFP (64) throughout.  Fused:\n"
           "the gamma folded as fusion/ folds it (policy in the row), the RMS scale deferred;\n"
           "attention: normalized P (unfused) against exp(s - max) (max+sum) and exp(s)\n"
           "(sum-only) with the sum deferred.\n\n");
    printf("| op | weights | unfused | fused |\n|---|---|---:|---:|\n");
    for (int ol = 0; ol < 2; ol++) {
        numerics_gemm("weights=bfp8", GG_F32, FZ_FOLD_FOLD, ol, "F32, gamma folded (AUTO)");
        numerics_gemm("weights=bfp8", GG_F32, FZ_FOLD_INSCALE, ol, "F32, gamma as in_scale");
        numerics_gemm("weights=bfp8", GG_Q8_0, FZ_FOLD_AUTO, ol, "Q8_0, in_scale (AUTO)");
        numerics_gemm("weights=bfp8", GG_Q4_K, FZ_FOLD_AUTO, ol, "Q4_K, in_scale (AUTO)");
        numerics_gemm("weights=bfp4", GG_F32, FZ_FOLD_INSCALE, ol, "F32, gamma as in_scale");
    }
    numerics_attention(false, 1);
    numerics_attention(false, 3);
    numerics_attention(true, 1);
    numerics_attention(true, 3);
    const char *sp = stories_path(o);
    FILE *f = fopen(sp, "rb");
    if (!f) {
        printf("\n(stories260K not found at %s: give --stories FILE)\n", sp);
        return;
    }
    fclose(f);
    numerics_stories(sp);
    printf("\n");
}

/* ---- params ---- */

static void cmd_params(const opts_t *o)
{
    cs_params_t p;
    params_with(o, NULL, &p);
    printf("### The timing model's parameters\n\n");
    printf("Every constant of backends/corsair/timing.c; any of them is a backend option\n"
           "(`backend_option = KEY=VALUE` in fusiond.conf, `--backend-option KEY=VALUE` in\n"
           "fusion-cli, `-o KEY=VALUE` in corsair-report).\n\n");
    printf("| key | value | unit | kind | source or reason |\n|---|---:|---|---|---|\n");
    for (int i = 0; i < CS_P_COUNT; i++) {
        const cs_param_info_t *pi = cs_param_info(i);
        char v[32];
        cs_param_format(&p, i, v, sizeof(v));
        printf("| `%s` | %s | %s | %s | %s |\n", pi->key, v, pi->unit, pi->kind, pi->source);
    }
    printf("\n");
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: corsair-report table|schedule|sweep|numerics|params|all [options]\n"
            "  -o KEY=VALUE     a timing-model parameter (repeatable; see params)\n"
            "  --model NAME     schedule, sweep: stories260K, Llama-2-7B, Llama-3-8B (default),\n"
            "                   Llama-2-70B, Llama-3-70B\n"
            "  --batch N        schedule: sequences (default 1)\n"
            "  --ctx N          schedule: context of the decode step (default 2048)\n"
            "  --prefill N      schedule: an N-token prefill instead of a decode step\n"
            "  --all-blocks     schedule: every block, not the first two\n"
            "  -m FILE          schedule: a GGUF model through the corsair backend\n"
            "  --stories FILE   numerics: stories260K (default $FUSIOND_SHARED/models/...)\n");
}

/* Also linked into fusion-bench, whose `schedule` command (`fusion-bench schedule --backend
 * corsair ...`) is this program's `schedule`. */
int corsair_report_main(int argc, char **argv);
int corsair_report_main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2;
    }
    opts_t o = { .model = NULL, .batch = 1, .ctx = 2048 };
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--all-blocks") == 0) {
            o.all_blocks = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v) {
            fprintf(stderr, "corsair-report: %s needs a value\n", a);
            return 1;
        }
        if (strcmp(a, "-o") == 0 && o.n_over < 64)
            o.overrides[o.n_over++] = v;
        else if (strcmp(a, "--model") == 0)
            o.model = v;
        else if (strcmp(a, "--batch") == 0)
            o.batch = atoi(v);
        else if (strcmp(a, "--ctx") == 0)
            o.ctx = atoll(v);
        else if (strcmp(a, "--prefill") == 0)
            o.prefill = atoi(v);
        else if (strcmp(a, "-m") == 0)
            o.file = v;
        else if (strcmp(a, "--stories") == 0)
            o.stories = v;
        else {
            fprintf(stderr, "corsair-report: unknown option %s\n", a);
            usage(stderr);
            return 1;
        }
    }
    if (o.batch < 1 || o.batch > 1024 || o.ctx < 1 || o.prefill < 0) {
        fprintf(stderr, "corsair-report: --batch is 1..1024, --ctx and --prefill positive\n");
        return 1;
    }
    const char *cmd = argv[1];
    bool all = strcmp(cmd, "all") == 0;
    if (!o.model && strcmp(cmd, "schedule") == 0)
        o.model = "Llama-3-8B";
    if (all || strcmp(cmd, "params") == 0)
        cmd_params(&o);
    if (all || strcmp(cmd, "table") == 0)
        cmd_table(&o);
    if (all) {
        opts_t s = o;
        s.model = "Llama-3-8B";
        s.batch = 1;
        cmd_schedule(&s);
        s.batch = 64;
        cmd_schedule(&s);
    } else if (strcmp(cmd, "schedule") == 0) {
        cmd_schedule(&o);
    }
    if (all || strcmp(cmd, "sweep") == 0)
        cmd_sweep(&o);
    if (all || strcmp(cmd, "numerics") == 0)
        cmd_numerics(&o);
    if (!all && strcmp(cmd, "params") && strcmp(cmd, "table") && strcmp(cmd, "schedule") &&
        strcmp(cmd, "sweep") && strcmp(cmd, "numerics")) {
        fprintf(stderr, "corsair-report: unknown command %s\n", cmd);
        usage(stderr);
        return 1;
    }
    return 0;
}

#ifndef CORSAIR_REPORT_NO_MAIN
int main(int argc, char **argv)
{
    return corsair_report_main(argc, argv);
}
#endif
