/* kbench.cu: kernel-level timings of the CUDA backend's GEMV configurations and decode
 * attention kernels at the Llama-3.2-1B and Llama-3-8B decode shapes (bf16 weights, one
 * activation row, deferred RMS statistic), so one GPU run can compare variants that the
 * backend does not expose as options.  Each case is a CUDA graph of 24 launches in a chain
 * (programmatic dependent launch on or off), the weights rotating over copies larger than
 * L2; prints microseconds per launch (median of 7 replays) and the weight read bandwidth.
 * Every variant's output is compared with the first variant's (max relative difference).
 * `kbench rows` (bench/cuda/gemv-rows.sh): the products of one decode step of TinyLlama-1.1B
 * and Llama-3-8B (BF16, Q8_0, and Q4_0 as the backend keeps it: F16) at R = 1, 2, 3, 4, 6, 8
 * activation rows, the old path (the fp32 multi-row GEMV, cuBLAS from 5 rows of 16-bit
 * weights) against the multi-row tensor-core kernel, after a check of the new kernel's
 * outputs against the old GEMV's.
 * Build: nvcc -O3 -std=c++17 -arch=sm_90 -I. bench/cuda/kbench.cu -lcublas -o kbench */
#include "backends/cuda/cuda_kernels.cu"

#include <algorithm>
#include <cublas_v2.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#define CK(x)                                                                                  \
    do {                                                                                       \
        cudaError_t e_ = (x);                                                                  \
        if (e_ != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static cudaStream_t st;
static int n_sm;
#define CHAIN 24

/* Instantiates graph g, replays it reps times on st and returns the GPU time of each replay
 * after the first skip (warm-up), in ms, sorted; g is destroyed. */
static std::vector<float> replay_sorted(cudaGraph_t g, int reps, int skip)
{
    cudaGraphExec_t ge;
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<float> t;
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(a, st));
        CK(cudaGraphLaunch(ge, st));
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        if (r >= skip)
            t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return t;
}

/* Times a graph of CHAIN launches of f with params ps[i % ps.size()]; us per launch. */
template <typename P>
static double time_chain(const void *f, dim3 grid, dim3 block, const std::vector<P> &ps, bool pdl,
                         size_t smem = 0)
{
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < CHAIN; i++) {
        P p = ps[i % ps.size()];
        void *args[1] = {&p};
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t cfg = {grid, block, smem, st, at, (unsigned)(pdl && i > 0 ? 1 : 0)};
        CK(cudaLaunchKernelExC(&cfg, f, args));
    }
    CK(cudaStreamEndCapture(st, &g));
    std::vector<float> t = replay_sorted(g, 9, 2);
    return t[t.size() / 2] * 1e3 / CHAIN;
}

struct gv {
    const char *name;
    const void *f;
    int rpb, threads; /* weight rows (GLU: gate rows) per block */
};

#define GV(OR, U, WPB, PIPE) {#OR "x" #U "x" #WPB " " #PIPE, (const void *)k_gemv<FCU_W_BF16, 1, OR, U, WPB, false, PIPE>, OR * WPB, 32 * WPB}
#define GG(OR, U, WPB, PIPE) {"glu" #OR "x" #U "x" #WPB " " #PIPE, (const void *)k_gemv<FCU_W_BF16, 1, OR, U, WPB, true, PIPE>, OR / 2 * WPB, 32 * WPB}

static const gv plain[] = {GV(2, 4, 4, false), GV(2, 8, 4, false), GV(2, 4, 4, true),
                           GV(4, 4, 2, false), GV(2, 2, 4, true),  GV(4, 2, 4, true),
                           GV(2, 8, 2, false), GV(2, 4, 8, false), GV(4, 4, 4, true),
                           GV(4, 2, 2, true),  GV(2, 2, 8, true),  GV(4, 8, 2, false)};
static const gv glu[] = {GG(4, 4, 2, false), GG(4, 4, 2, true), GG(4, 2, 4, true),
                         GG(4, 8, 2, false), GG(4, 4, 4, false), GG(4, 2, 2, true),
                         GG(8, 2, 2, true),  GG(8, 4, 2, false), GG(4, 2, 8, true),
                         GG(2, 4, 4, false), GG(2, 2, 4, true)};

static float *dev_rand(size_t n, float a)
{
    std::vector<float> h(n);
    for (size_t i = 0; i < n; i++)
        h[i] = a * ((float)rand() / RAND_MAX * 2.f - 1.f);
    float *d;
    CK(cudaMalloc(&d, n * 4));
    CK(cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
    return d;
}

/* scaled: with in_scale, staged in shared memory, as the backend runs its normed products */
static void gemv_case(const char *shape, int n_in, int n_out, bool is_glu, bool scaled)
{
    /* n_out: all rows of the matrix (GLU: gate + up) */
    const size_t wbytes = (size_t)n_in * n_out * 2;
    const int copies = (int)std::max<size_t>(2, (size_t)(400u << 20) / wbytes + 1);
    std::vector<uint16_t *> w(copies);
    {
        /* 64 random rows tiled over the matrix: every row still comes from its own memory */
        std::vector<uint16_t> h((size_t)n_in * n_out);
        const size_t tile = (size_t)n_in * 64;
        for (size_t i = 0; i < tile; i++) {
            float f = ((float)rand() / RAND_MAX * 2.f - 1.f) / 32.f;
            uint32_t u;
            memcpy(&u, &f, 4);
            h[i] = (uint16_t)(u >> 16);
        }
        for (size_t off = tile; off < h.size(); off += tile)
            memcpy(&h[off], &h[0], std::min(tile, h.size() - off) * 2);
        for (int k = 0; k < copies; k++) {
            CK(cudaMalloc(&w[k], wbytes));
            CK(cudaMemcpy(w[k], h.data(), wbytes, cudaMemcpyHostToDevice));
        }
    }
    float *x = dev_rand(n_in, 1.f), *gam = dev_rand(n_in, 1.f), *y, *go;
    CK(cudaMalloc(&y, (size_t)n_out * 4));
    CK(cudaMalloc(&go, (size_t)n_out * 4));
    std::vector<float> hy(n_out), hr(n_out);
    const gv *vs = is_glu ? glu : plain;
    const int nv = is_glu ? (int)(sizeof(glu) / sizeof(glu[0])) : (int)(sizeof(plain) / sizeof(plain[0]));
    for (int v = 0; v < nv; v++) {
        std::vector<fcu_gemv_p> ps(copies);
        for (int k = 0; k < copies; k++) {
            fcu_gemv_p &p = ps[k];
            memset(&p, 0, sizeof(p));
            p.w = w[k];
            p.x = x;
            p.y = y;
            p.n_in = n_in;
            p.n_out = n_out;
            p.rows = 1;
            p.norm = FCU_NORM_RMS;
            p.eps = 1e-5f;
            if (is_glu) {
                p.glu_out = go;
                p.glu_n = n_out / 2;
            }
            if (scaled) {
                p.in_scale = gam;
                p.stage = 1;
            }
        }
        const size_t smem = scaled ? fcu_gemv_stage_bytes(1, n_in) : 0;
        const int lim = is_glu ? n_out / 2 : n_out;
        dim3 grid((lim + vs[v].rpb - 1) / vs[v].rpb), block(vs[v].threads);
        double t0 = time_chain(vs[v].f, grid, block, ps, false, smem);
        double t1 = time_chain(vs[v].f, grid, block, ps, true, smem);
        CK(cudaMemcpy(hy.data(), is_glu ? go : y, (size_t)lim * 4, cudaMemcpyDeviceToHost));
        double md = 0;
        if (v == 0) {
            hr = hy;
        } else {
            for (int i = 0; i < lim; i++)
                md = std::max(md, (double)fabsf(hy[i] - hr[i]) / (fabsf(hr[i]) + 1e-3));
        }
        printf("gemv %-10s%s %6d x %-6d %-14s nopdl %7.2f us %6.0f GB/s   pdl %7.2f us %6.0f GB/s  diff %.1e\n",
               shape, scaled ? " staged" : "", n_out, n_in, vs[v].name, t0, wbytes / t0 * 1e-3, t1, wbytes / t1 * 1e-3, md);
        fflush(stdout);
    }
    for (int k = 0; k < copies; k++)
        CK(cudaFree(w[k]));
    CK(cudaFree(x));
    CK(cudaFree(gam));
    CK(cudaFree(y));
    CK(cudaFree(go));
}

static void att_case(const char *shape, int H, int Hkv, int hd, int ctx, int nseq)
{
    const int64_t ldkv = (int64_t)Hkv * hd;
    const int copies = 8;
    std::vector<float *> kc(copies), vc(copies);
    for (int k = 0; k < copies; k++) {
        kc[k] = dev_rand((size_t)nseq * ctx * ldkv, 1.f);
        vc[k] = dev_rand((size_t)nseq * ctx * ldkv, 1.f);
    }
    float *q = dev_rand((size_t)nseq * H * hd, 1.f), *out, *part;
    int *cnt, *pos;
    CK(cudaMalloc(&out, (size_t)nseq * H * hd * 4));
    CK(cudaMalloc(&part, (size_t)nseq * H * 64 * (hd + 4) * 4));
    CK(cudaMalloc(&cnt, (size_t)nseq * Hkv * 4));
    CK(cudaMemset(cnt, 0, (size_t)nseq * Hkv * 4));
    std::vector<int> hp(nseq, ctx - 1);
    CK(cudaMalloc(&pos, nseq * 4));
    CK(cudaMemcpy(pos, hp.data(), nseq * 4, cudaMemcpyHostToDevice));
    std::vector<float> ref((size_t)nseq * H * hd), got(ref.size());
    const double kvbytes = 2.0 * nseq * ctx * ldkv * 4;
    for (int variant = 0; variant < 4; variant++) {
        std::vector<fcu_att_p> ps(copies);
        dim3 grid;
        const void *f;
        for (int k = 0; k < copies; k++) {
            fcu_att_p &p = ps[k];
            memset(&p, 0, sizeof(p));
            p.n_seq = nseq;
            for (int s = 0; s < nseq; s++) {
                p.s[s].q = q + (size_t)s * H * hd;
                p.s[s].k = kc[k] + (size_t)s * ctx * ldkv;
                p.s[s].v = vc[k] + (size_t)s * ctx * ldkv;
                p.s[s].out = out + (size_t)s * H * hd;
                p.s[s].pos = pos + s;
                p.s[s].ldq = H * hd;
                p.s[s].ldkv = (int)ldkv;
                p.s[s].ldo = H * hd;
                p.s[s].n_q = 1;
                p.s[s].row0 = s;
                p.s[s].grp0 = s;
                p.s[s].T = ctx;
            }
            p.part = part;
            p.counter = cnt;
            p.n_head = H;
            p.n_head_kv = Hkv;
            p.head_dim = hd;
            p.mode = FB_SOFTMAX_MAXSUM;
            p.vec4 = 1;
            p.scale = 1.f / sqrtf((float)hd);
            p.t_max = ctx;
            if (variant == 0) { /* the old kernel, the backend's old split policy */
                int chunk = 128;
                while (chunk > 32 && (int64_t)Hkv * nseq * ((ctx + chunk - 1) / chunk) < n_sm)
                    chunk /= 2;
                p.chunk = chunk;
                p.max_split = (ctx + chunk - 1) / chunk;
                grid = dim3(Hkv, nseq, p.max_split);
                f = fcu_k_attention(0);
            } else { /* new kernel, the backend's policy with split caps 16, 32, 64 */
                const int cap = 8 << variant, nc = hd / 4, nv = nc <= 32 ? 1 : 2;
                int lg = 1;
                while (lg < 32 && lg * nv < nc)
                    lg *= 2;
                int64_t per = (int64_t)Hkv * nseq;
                int64_t want = (4 * n_sm + per - 1) / per;
                want = std::min<int64_t>(want, (ctx + 31) / 32);
                want = std::max<int64_t>(want, (ctx + 255) / 256);
                want = std::max<int64_t>(1, std::min<int64_t>(want, cap));
                p.lg = lg;
                p.chunk = (int)((ctx + want - 1) / want);
                p.max_split = (ctx + p.chunk - 1) / p.chunk;
                grid = dim3(Hkv, nseq, p.max_split);
                f = fcu_k_attention_dec(nv, H / Hkv, (int64_t)Hkv * nseq * p.max_split <= 2 * n_sm);
            }
        }
        double t1 = time_chain(f, grid, dim3(128), ps, true);
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(got.data(), out, got.size() * 4, cudaMemcpyDeviceToHost));
        double md = 0;
        if (variant == 0)
            ref = got;
        else
            for (size_t i = 0; i < got.size(); i++)
                md = std::max(md, (double)fabsf(got[i] - ref[i]) / (fabsf(ref[i]) + 1e-2));
        printf("attn %-10s ctx %5d seqs %d %-12s splits %3d  %7.2f us  %6.0f GB/s  diff %.1e\n", shape,
               ctx, nseq, variant == 0 ? "old" : variant == 1 ? "dec cap16" : variant == 2 ? "dec cap32" : "dec cap64",
               ps[0].max_split, t1, kvbytes / t1 * 1e-3, md);
        fflush(stdout);
    }
    for (int k = 0; k < copies; k++) {
        CK(cudaFree(kc[k]));
        CK(cudaFree(vc[k]));
    }
    CK(cudaFree(q));
    CK(cudaFree(out));
    CK(cudaFree(part));
    CK(cudaFree(cnt));
    CK(cudaFree(pos));
}

/* The fused plan's decode step at batch 1 as the backend launches it (Q|K|V with RoPE and
 * the cache writes in its epilogue, attention, O + residual, gate|up + SiLU, down + residual;
 * the LM head), every kernel chosen by the backend's getters, random weights: GPU time
 * alone, no host. */
static void step_case(const char *shape, int E, int F, int H, int Hkv, int hd, int L, int ctx)
{
    const int V = 128256, nq = (H + 2 * Hkv) * hd;
    std::vector<void *> wq(L), wo(L), wgu(L), wd(L), kc(L), vc(L);
    /* random bf16 values (a 1 MiB random tile repeated): constant bytes read faster */
    std::vector<uint16_t> tile(1 << 19);
    for (size_t i = 0; i < tile.size(); i++) {
        float f = ((float)rand() / RAND_MAX * 2.f - 1.f) / 32.f;
        uint32_t u;
        memcpy(&u, &f, 4);
        tile[i] = (uint16_t)(u >> 16);
    }
    void *dtile;
    CK(cudaMalloc(&dtile, tile.size() * 2));
    CK(cudaMemcpy(dtile, tile.data(), tile.size() * 2, cudaMemcpyHostToDevice));
    auto alloc_bf16 = [&](size_t n) {
        void *d;
        CK(cudaMalloc(&d, n * 2));
        for (size_t off = 0; off < n; off += tile.size())
            CK(cudaMemcpy((uint16_t *)d + off, dtile, std::min(tile.size(), n - off) * 2,
                          cudaMemcpyDeviceToDevice));
        return d;
    };
    for (int l = 0; l < L; l++) {
        wq[l] = alloc_bf16((size_t)nq * E);
        wo[l] = alloc_bf16((size_t)E * H * hd);
        wgu[l] = alloc_bf16((size_t)2 * F * E);
        wd[l] = alloc_bf16((size_t)E * F);
        kc[l] = dev_rand((size_t)ctx * Hkv * hd, 1.f);
        vc[l] = dev_rand((size_t)ctx * Hkv * hd, 1.f);
    }
    void *wh = alloc_bf16((size_t)V * E);
    float *x = dev_rand(E, 1.f), *qkv, *att, *y, *gu, *act, *logits, *part;
    int *cnt, *pos;
    CK(cudaMalloc(&qkv, nq * 4));
    CK(cudaMalloc(&att, H * hd * 4));
    CK(cudaMalloc(&y, (size_t)std::max(E, 2 * F) * 4));
    CK(cudaMalloc(&gu, (size_t)2 * F * 4));
    CK(cudaMalloc(&act, (size_t)F * 4));
    CK(cudaMalloc(&logits, (size_t)V * 4));
    CK(cudaMalloc(&part, (size_t)H * 64 * (hd + 4) * 4));
    CK(cudaMalloc(&cnt, Hkv * 4));
    CK(cudaMemset(cnt, 0, Hkv * 4));
    int hp = ctx - 1;
    CK(cudaMalloc(&pos, 4));
    CK(cudaMemcpy(pos, &hp, 4, cudaMemcpyHostToDevice));
    struct L1 { const void *f; dim3 grid, block; fcu_gemv_p g; fcu_att_p a; bool att; };
    std::vector<L1> ls;
    auto gemv = [&](const void *w, int n_in, int n_out, float *xin, float *out, float *add, bool rms) {
        L1 r = {};
        int rpb, th;
        r.f = fcu_k_gemv(FCU_W_BF16, 1, 1, n_in, &rpb, &th);
        r.grid = dim3((n_out + rpb - 1) / rpb);
        r.block = dim3(th);
        r.g.w = w;
        r.g.x = xin;
        r.g.y = out;
        r.g.add_to = add;
        r.g.n_in = n_in;
        r.g.n_out = n_out;
        r.g.rows = 1;
        r.g.norm = rms ? FCU_NORM_RMS : FCU_NORM_NONE;
        r.g.eps = 1e-5f;
        return r;
    };
    for (int l = 0; l < L; l++) {
        L1 r = gemv(wq[l], E, nq, x, qkv, NULL, true);
        r.g.rope_n = 2;
        r.g.rope_c0[0] = 0;
        r.g.rope_c1[0] = H * hd;
        r.g.rope_c0[1] = H * hd;
        r.g.rope_c1[1] = (H + Hkv) * hd;
        r.g.rope_hd = hd;
        r.g.rope_nrot = hd;
        r.g.rope_base = 500000.f;
        r.g.rope_scale = 1.f;
        r.g.rope_pos = pos;
        r.g.cp_n = 2;
        r.g.cp_c0[0] = H * hd;
        r.g.cp_c1[0] = (H + Hkv) * hd;
        r.g.cp_c0[1] = (H + Hkv) * hd;
        r.g.cp_c1[1] = nq;
        r.g.cp_dst[0][0] = (float *)kc[l] + (size_t)(ctx - 1) * Hkv * hd;
        r.g.cp_dst[1][0] = (float *)vc[l] + (size_t)(ctx - 1) * Hkv * hd;
        ls.push_back(r);
        L1 a = {};
        a.att = true;
        fcu_att_p &p = a.a;
        p.n_seq = 1;
        p.s[0] = fcu_att_seq{qkv, qkv + H * hd, qkv + (H + Hkv) * hd, att, pos, nq, Hkv * hd, H * hd, 1, 0, 0, ctx};
        p.s[0].k = (const float *)kc[l];
        p.s[0].v = (const float *)vc[l];
        p.part = part;
        p.counter = cnt;
        p.n_head = H;
        p.n_head_kv = Hkv;
        p.head_dim = hd;
        p.mode = FB_SOFTMAX_MAXSUM;
        p.vec4 = 1;
        p.scale = 0.125f;
        p.t_max = ctx;
        const int nc = hd / 4, nv = nc <= 32 ? 1 : 2;
        int lg = 1;
        while (lg < 32 && lg * nv < nc)
            lg *= 2;
        int64_t want = (4 * n_sm + Hkv - 1) / Hkv;
        want = std::min<int64_t>(want, (ctx + 31) / 32);
        want = std::max<int64_t>(want, (ctx + 255) / 256);
        want = std::max<int64_t>(1, std::min<int64_t>(want, 32));
        p.lg = lg;
        p.chunk = (int)((ctx + want - 1) / want);
        p.max_split = (ctx + p.chunk - 1) / p.chunk;
        a.f = fcu_k_attention_dec(nv, H / Hkv, (int64_t)Hkv * p.max_split <= 2 * n_sm);
        a.grid = dim3(Hkv, 1, p.max_split);
        a.block = dim3(128);
        ls.push_back(a);
        ls.push_back(gemv(wo[l], H * hd, E, att, y, x, false));
        L1 g = gemv(wgu[l], E, 2 * F, x, gu, NULL, true);
        int rpb, th;
        g.f = fcu_k_gemv_glu(FCU_W_BF16, 1, E, &rpb, &th);
        g.grid = dim3((F + rpb - 1) / rpb);
        g.block = dim3(th);
        g.g.glu_out = act;
        g.g.glu_n = F;
        ls.push_back(g);
        ls.push_back(gemv(wd[l], F, E, act, y, x, false));
    }
    ls.push_back(gemv(wh, E, V, x, logits, NULL, true));
    float *gam = dev_rand(E, 1.f);
    const char *only = getenv("KBENCH_PASSES"); /* e.g. "2": only the in_scale pass (profilers) */
    auto smem = [](const L1 &r) {
        return r.att ? (size_t)0 : fcu_gemv_stage_bytes(r.g.stage ? 1 : 0, r.g.n_in);
    };
    /* KBENCH_PDL=1: each selected pass three times, without programmatic dependent launch,
     * with it into every kernel (pdl 1), and only into grids of two blocks per SM or more
     * (pdl 2, the backend's default rule) */
    const bool both = getenv("KBENCH_PDL") && !strcmp(getenv("KBENCH_PDL"), "1");
    CK(fcu_gemv_init());
    for (int run = 0; run < (both ? 18 : 6); run++) {
        const int pass = both ? run / 3 : run;
        const int pdl = both ? run % 3 : pass == 1;
        /* pass 2: the fused plan's bf16 products with gamma as an input scale (INSCALE), as
         * before staging; pass 3: the same staged in shared memory, as the backend runs it */
        if (pass >= 2 && (!both || pdl == 0)) /* pass 4: every product staged; 5: also Q|K|V without its RoPE and
                        * cache-write epilogue (not a valid step: the epilogue's cost) */
            for (L1 &r : ls) {
                if (!r.att && r.g.norm == FCU_NORM_RMS) {
                    r.g.in_scale = gam;
                    r.g.stage = pass >= 3;
                }
                if (!r.att && pass >= 4)
                    r.g.stage = 1;
                if (!r.att && pass == 5)
                    r.g.rope_n = r.g.cp_n = 0;
            }
        if (only && !strchr(only, '0' + pass))
            continue;
        cudaGraph_t gr;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        for (size_t i = 0; i < ls.size(); i++) {
            void *args[1] = {ls[i].att ? (void *)&ls[i].a : (void *)&ls[i].g};
            cudaLaunchAttribute at[1];
            at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
            at[0].val.programmaticStreamSerializationAllowed = 1;
            const bool edge = pdl == 1 || (pdl == 2 && ls[i].grid.x * ls[i].grid.y * ls[i].grid.z >=
                                                          2u * (unsigned)n_sm);
            cudaLaunchConfig_t cfg = {ls[i].grid, ls[i].block, smem(ls[i]), st, at, (unsigned)(edge && i > 0 ? 1 : 0)};
            CK(cudaLaunchKernelExC(&cfg, ls[i].f, args));
        }
        CK(cudaStreamEndCapture(st, &gr));
        std::vector<float> t = replay_sorted(gr, 15, 3);
        static const char *const sname[6] = {"", "", "", " staged", " all staged",
                                             " all staged, no Q|K|V epilogue"};
        printf("step %-4s ctx %d batch 1: %zu kernels, pdl %d, in_scale %d%s: %.3f ms of GPU time (median), min %.3f\n",
               shape, ctx, ls.size(), pdl, pass >= 2, sname[pass], t[t.size() / 2], t[0]);
        fflush(stdout);
    }
    for (int l = 0; l < L; l++) {
        CK(cudaFree(wq[l]));
        CK(cudaFree(wo[l]));
        CK(cudaFree(wgu[l]));
        CK(cudaFree(wd[l]));
        CK(cudaFree(kc[l]));
        CK(cudaFree(vc[l]));
    }
    void *fr[] = {wh, x, qkv, att, y, gu, act, logits, part, cnt, pos, gam, dtile};
    for (void *f : fr)
        CK(cudaFree(f));
}

/* ---- kbench rows: a decode step's products at R activation rows, old path against new ---- */

/* Random weights in place (a hash of the index: no host copy of 16 GB): kind 0 bf16, 1 fp16,
 * values in +-1/32; 2 int8 codes; 3 fp16 block scales of 1/(32 * 127). */
__global__ void k_fill(uint16_t *p, int64_t n16, uint32_t seed, int kind)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n16;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 0x9e3779b1u ^ seed ^ (uint32_t)(i >> 32) * 0x85ebca6bu;
        h ^= h >> 15; h *= 0x2c1b3c6du; h ^= h >> 12; h *= 0x297a2d39u; h ^= h >> 15;
        const float f = ((float)(h >> 8) * (1.f / 8388608.f) - 1.f) / 32.f;
        uint16_t v;
        if (kind == 0) {
            v = __bfloat16_as_ushort(__float2bfloat16_rn(f));
        } else if (kind == 1) {
            v = __half_as_ushort(__float2half_rn(f));
        } else if (kind == 2) { /* two int8 codes in -127..127 */
            const uint32_t a = h % 255u, b = (h >> 16) % 255u;
            v = (uint16_t)(((a - 127u) & 0xffu) | (((b - 127u) & 0xffu) << 8));
        } else {
            v = __half_as_ushort(__float2half_rn(1.f / (32.f * 127.f)));
        }
        p[i] = v;
    }
}

struct rmat {
    void *w;
    __half *s;
    int n_in, n_out;
};

static rmat rows_mat(int wtype, int n_in, int n_out, uint32_t seed)
{
    rmat m = {NULL, NULL, n_in, n_out};
    const int64_t n = (int64_t)n_in * n_out;
    if (wtype == FCU_W_Q8) {
        CK(cudaMalloc(&m.w, (size_t)n));
        CK(cudaMalloc((void **)&m.s, (size_t)(n / 32) * 2));
        k_fill<<<1024, 256, 0, st>>>((uint16_t *)m.w, n / 2, seed, 2);
        k_fill<<<1024, 256, 0, st>>>((uint16_t *)m.s, n / 32, seed, 3);
    } else {
        CK(cudaMalloc(&m.w, (size_t)n * 2));
        k_fill<<<1024, 256, 0, st>>>((uint16_t *)m.w, n, seed, wtype == FCU_W_BF16 ? 0 : 1);
    }
    CK(cudaGetLastError());
    return m;
}

/* One launch of a step: a GEMV kernel (f) or, with blas, the old path's cuBLAS product (its
 * prep pass, cublasGemmEx, then the SiLU-gate or residual add as separate kernels). */
struct rl {
    const void *f;
    dim3 grid, block;
    size_t smem;
    fcu_gemv_p g;
    bool blas;
};

static cublasHandle_t blas_h;
static void *blas_conv;

static void rows_issue(const rl &l, int wtype)
{
    if (!l.blas) {
        void *args[1] = {(void *)&l.g};
        cudaLaunchConfig_t cfg = {l.grid, l.block, l.smem, st, NULL, 0};
        CK(cudaLaunchKernelExC(&cfg, l.f, args));
        return;
    }
    /* as cuda_backend.cu's mm_blas for 16-bit weights, then its silu_mul / add */
    const fcu_gemv_p &g = l.g;
    const int ct = wtype; /* FCU_W_F16 or FCU_W_BF16 */
    fcu_prep_p q;
    memset(&q, 0, sizeof(q));
    q.x = g.x;
    q.out = blas_conv;
    q.in_scale = g.in_scale;
    q.n = g.n_in;
    q.norm = g.norm == FCU_NORM_RMS ? FB_NORM_RMS : FB_NORM_NONE;
    q.out_type = ct;
    q.eps = g.eps;
    void *qa[1] = {&q};
    CK(cudaLaunchKernel(fcu_k_prep(), dim3(g.rows), dim3(256), qa, 0, st));
    const float alpha = 1.f, beta = 0.f;
    const cudaDataType dt = ct == FCU_W_F16 ? CUDA_R_16F : CUDA_R_16BF;
    if (cublasGemmEx(blas_h, CUBLAS_OP_T, CUBLAS_OP_N, g.n_out, g.rows, g.n_in, &alpha, g.w, dt,
                     g.n_in, blas_conv, dt, g.n_in, &beta, g.y, CUDA_R_32F, g.n_out,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasGemmEx failed\n");
        exit(1);
    }
    const int64_t cap = (int64_t)n_sm * 16;
    if (g.glu_out) {
        fcu_ew_p e = {g.glu_out, g.y, g.y + g.glu_n, g.glu_n, g.rows, g.n_out, g.glu_n};
        void *ea[1] = {&e};
        const int64_t b = std::min(cap, ((int64_t)g.rows * g.glu_n + 255) / 256);
        CK(cudaLaunchKernel(fcu_k_silu_mul(), dim3((unsigned)b), dim3(256), ea, 0, st));
    } else if (g.add_to) {
        const int64_t n = (int64_t)g.rows * g.n_out;
        fcu_ew_p e = {g.add_to, g.y, NULL, n, 1, 0, 0};
        void *ea[1] = {&e};
        const int64_t b = std::min(cap, (n / 4 + 255) / 256);
        CK(cudaLaunchKernel(fcu_k_add(1), dim3((unsigned)b), dim3(256), ea, 0, st));
    }
}

/* GPU ms of one step (median of 15 after 3 warm-ups): a graph when it has no cuBLAS call (as
 * the backend runs such steps), else launched directly (the backend does not graph them). */
static double rows_time(const std::vector<rl> &ls, int wtype, bool eager)
{
    if (!eager) {
        cudaGraph_t gr;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        for (const rl &l : ls)
            rows_issue(l, wtype);
        CK(cudaStreamEndCapture(st, &gr));
        std::vector<float> t = replay_sorted(gr, 18, 3);
        return t[t.size() / 2];
    }
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<float> t;
    for (int r = 0; r < 18; r++) {
        CK(cudaEventRecord(a, st));
        for (const rl &l : ls)
            rows_issue(l, wtype);
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        if (r >= 3)
            t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    return t[t.size() / 2];
}

struct rshape {
    const char *name;
    int E, F, H, Hkv, hd, L, V;
};

/* The products of one decode step of shape s (Q|K|V and gate|up normed, with gamma as
 * in_scale; O and down adding into the residual; the LM head) for R rows; mr: the multi-row
 * kernel for 2..8 rows, else the old path (the fp32 multi-row GEMV, cuBLAS from 5 rows of
 * 16-bit weights).  One row is the same one-row kernels either way (staged where normed). */
static void rows_case(const rshape &s, const char *tname, int wtype)
{
    const int nq = (s.H + 2 * s.Hkv) * s.hd, ho = s.H * s.hd, R8 = FCU_GEMV_MAX_ROWS;
    std::vector<rmat> wq(s.L), wo(s.L), wgu(s.L), wd(s.L);
    uint32_t seed = 1;
    for (int l = 0; l < s.L; l++) {
        wq[l] = rows_mat(wtype, s.E, nq, seed++);
        wo[l] = rows_mat(wtype, ho, s.E, seed++);
        wgu[l] = rows_mat(wtype, s.E, 2 * s.F, seed++);
        wd[l] = rows_mat(wtype, s.F, s.E, seed++);
    }
    rmat wh = rows_mat(wtype, s.E, s.V, seed++);
    CK(cudaStreamSynchronize(st));
    const double bpw = wtype == FCU_W_Q8 ? 1.0 + 2.0 / 32 : 2.0;
    const double wbytes = bpw * ((double)s.L * ((double)nq * s.E + (double)s.E * ho +
                                                2.0 * s.F * s.E + (double)s.E * s.F) +
                                 (double)s.V * s.E);
    float *x = dev_rand((size_t)R8 * s.E, 1.f), *gam = dev_rand(s.E, 1.f);
    float *att = dev_rand((size_t)R8 * ho, 1.f), *qkv, *gu, *act, *y, *logits;
    CK(cudaMalloc(&qkv, (size_t)R8 * nq * 4));
    CK(cudaMalloc(&gu, (size_t)R8 * 2 * s.F * 4));
    CK(cudaMalloc(&act, (size_t)R8 * s.F * 4));
    CK(cudaMalloc(&y, (size_t)R8 * s.E * 4));
    CK(cudaMalloc(&logits, (size_t)R8 * s.V * 4));
    CK(cudaMalloc(&blas_conv, (size_t)R8 * std::max(s.E, s.F) * 2));
    static const int rows[] = {1, 2, 3, 4, 6, 8};
    double one[2] = {0, 0};
    for (int R : rows) {
        double ms[2];
        bool eager[2];
        for (int path = 0; path < 2; path++) { /* 0 old, 1 new */
            const bool blas = path == 0 && R >= 5 && wtype != FCU_W_Q8;
            std::vector<rl> ls;
            auto prod = [&](const rmat &m, const float *xin, float *out, float *add, bool norm,
                            float *glu) {
                rl l = {};
                fcu_gemv_p &g = l.g;
                g.w = m.w;
                g.wscale = m.s;
                g.x = xin;
                g.y = out;
                g.add_to = add;
                g.n_in = m.n_in;
                g.n_out = m.n_out;
                g.rows = R;
                g.norm = norm ? FCU_NORM_RMS : FCU_NORM_NONE;
                g.eps = 1e-5f;
                g.in_scale = norm ? gam : NULL;
                g.stage = R == 1 && norm; /* the backend's default stage=1 */
                g.glu_out = glu;
                g.glu_n = glu ? m.n_out / 2 : 0;
                l.blas = blas;
                int rpb = 1, th = 32;
                const int lim = glu ? m.n_out / 2 : m.n_out;
                if (blas)
                    l.f = NULL;
                else if (path == 1 && R >= 2)
                    l.f = fcu_k_gemv_mr(wtype, glu != NULL, lim, &rpb, &th);
                else if (glu)
                    l.f = fcu_k_gemv_glu(wtype, R, m.n_in, &rpb, &th);
                else
                    l.f = fcu_k_gemv(wtype, R, 1, m.n_in, &rpb, &th);
                l.grid = dim3((unsigned)((lim + rpb - 1) / rpb));
                l.block = dim3(th);
                l.smem = g.stage ? fcu_gemv_stage_bytes(1, m.n_in) : 0;
                ls.push_back(l);
            };
            for (int l = 0; l < s.L; l++) {
                prod(wq[l], x, qkv, NULL, true, NULL);
                prod(wo[l], att, y, x, false, NULL);
                prod(wgu[l], x, gu, NULL, true, act);
                prod(wd[l], act, y, x, false, NULL);
            }
            prod(wh, x, logits, NULL, true, NULL);
            eager[path] = blas;
            ms[path] = rows_time(ls, wtype, blas);
            if (R == 1)
                one[path] = ms[path];
        }
        printf("rows %-15s %-5s R=%d  old %8.3f ms %5.2fx %6.0f GB/s%s   new %8.3f ms %5.2fx %6.0f GB/s   new/old %.2f\n",
               s.name, tname, R, ms[0], ms[0] / one[0], wbytes / ms[0] * 1e-6,
               eager[0] ? " (cuBLAS)" : "         ", ms[1], ms[1] / one[1],
               wbytes / ms[1] * 1e-6, ms[1] / ms[0]);
        fflush(stdout);
    }
    for (int l = 0; l < s.L; l++) {
        rmat *ms4[4] = {&wq[l], &wo[l], &wgu[l], &wd[l]};
        for (rmat *m : ms4) {
            CK(cudaFree(m->w));
            CK(cudaFree(m->s));
        }
    }
    CK(cudaFree(wh.w));
    CK(cudaFree(wh.s));
    void *fr[] = {x, gam, att, qkv, gu, act, y, logits, blas_conv};
    for (void *f : fr)
        CK(cudaFree(f));
}

/* Every output of the multi-row kernel against the fp32 multi-row GEMV at the same inputs
 * (8B gate|up and down shapes, bf16 / q8 / fp16 weights, 2..8 rows): max relative difference,
 * a smoke check in the same run as the timings (tests/test_cuda.c checks against the CPU). */
static void rows_check(void)
{
    const int wts[3] = {FCU_W_BF16, FCU_W_Q8, FCU_W_F16};
    const char *wn[3] = {"BF16", "Q8_0", "F16"};
    const int shp[2][2] = {{4096, 2 * 14336}, {14336, 4096}};
    for (int t = 0; t < 3; t++)
        for (int k = 0; k < 2; k++) {
            const int n_in = shp[k][0], n_out = shp[k][1];
            rmat m = rows_mat(wts[t], n_in, n_out, 77);
            float *x = dev_rand((size_t)8 * n_in, 1.f), *gam = dev_rand(n_in, 1.f), *ya, *yb;
            CK(cudaMalloc(&ya, (size_t)8 * n_out * 4));
            CK(cudaMalloc(&yb, (size_t)8 * n_out * 4));
            std::vector<float> ha((size_t)8 * n_out), hb(ha.size());
            double worst = 0;
            for (int R = 2; R <= 8; R++) {
                for (int path = 0; path < 2; path++) {
                    fcu_gemv_p g;
                    memset(&g, 0, sizeof(g));
                    g.w = m.w;
                    g.wscale = m.s;
                    g.x = x;
                    g.y = path ? yb : ya;
                    g.n_in = n_in;
                    g.n_out = n_out;
                    g.rows = R;
                    g.norm = FCU_NORM_RMS;
                    g.eps = 1e-5f;
                    g.in_scale = gam;
                    int rpb, th;
                    const void *f = path ? fcu_k_gemv_mr(wts[t], 0, n_out, &rpb, &th)
                                         : fcu_k_gemv(wts[t], R, 1, n_in, &rpb, &th);
                    void *args[1] = {&g};
                    CK(cudaLaunchKernel(f, dim3((n_out + rpb - 1) / rpb), dim3(th), args, 0, st));
                }
                CK(cudaStreamSynchronize(st));
                CK(cudaMemcpy(ha.data(), ya, (size_t)R * n_out * 4, cudaMemcpyDeviceToHost));
                CK(cudaMemcpy(hb.data(), yb, (size_t)R * n_out * 4, cudaMemcpyDeviceToHost));
                double e2 = 0, r2 = 0;
                for (size_t i = 0; i < (size_t)R * n_out; i++) {
                    const double d = (double)hb[i] - ha[i];
                    e2 += d * d;
                    r2 += (double)ha[i] * ha[i];
                    if (!std::isfinite(hb[i]))
                        e2 = INFINITY;
                }
                worst = std::max(worst, sqrt(e2 / std::max(r2, 1e-30)));
            }
            printf("check %-4s %6d x %-6d rows 2..8: new against old, relative L2 %.2e %s\n", wn[t],
                   n_out, n_in, worst, worst <= 3e-6 ? "ok" : "FAIL");
            fflush(stdout);
            CK(cudaFree(m.w));
            CK(cudaFree(m.s));
            void *fr[] = {x, gam, ya, yb};
            for (void *f : fr)
                CK(cudaFree(f));
        }
}

static void rows_all(void)
{
    static const rshape shapes[] = {{"TinyLlama-1.1B", 2048, 5632, 32, 4, 64, 22, 32000},
                                    {"Llama-3-8B", 4096, 14336, 32, 8, 128, 32, 128256}};
    static const struct { const char *name; int wtype; } types[] = {
        {"BF16", FCU_W_BF16}, {"Q8_0", FCU_W_Q8}, {"Q4_0", FCU_W_F16}};
    if (cublasCreate(&blas_h) != CUBLAS_STATUS_SUCCESS || cublasSetStream(blas_h, st) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cuBLAS: cannot create a handle\n");
        exit(1);
    }
    rows_check();
    for (const rshape &s : shapes)
        for (const auto &t : types)
            rows_case(s, t.name, t.wtype);
    cublasDestroy(blas_h);
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "all";
    CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    CK(cudaDeviceGetAttribute(&n_sm, cudaDevAttrMultiProcessorCount, 0));
    CK(fcu_gemv_init());
    if (!strcmp(what, "rows")) { /* only on request: it allocates up to 16 GB */
        rows_all();
        return 0;
    }
    if (strstr(what, "att") || !strcmp(what, "all")) {
        att_case("1B", 32, 8, 64, 512, 1);
        att_case("1B", 32, 8, 64, 4096, 1);
        att_case("1B", 32, 8, 64, 512, 8);
        att_case("8B", 32, 8, 128, 512, 1);
        att_case("8B", 32, 8, 128, 4096, 1);
        att_case("8B", 32, 8, 128, 512, 8);
        att_case("1B", 32, 8, 64, 4096, 8);
        att_case("8B", 32, 8, 128, 4096, 8);
    }
    if (strstr(what, "step") || !strcmp(what, "all")) {
        if (!strstr(what, "8B"))
            step_case("1B", 2048, 8192, 32, 8, 64, 16, 512);
        if (!strstr(what, "1B"))
            step_case("8B", 4096, 14336, 32, 8, 128, 32, 512);
    }
    if (strstr(what, "gemv") || !strcmp(what, "all")) {
        /* as the fused plan runs them: the normed products with in_scale, staged */
        gemv_case("1B qkv", 2048, 3072, false, true);
        gemv_case("1B o", 2048, 2048, false, false);
        gemv_case("1B down", 8192, 2048, false, false);
        gemv_case("1B gu", 2048, 16384, true, true);
        gemv_case("8B qkv", 4096, 6144, false, true);
        gemv_case("8B o", 4096, 4096, false, false);
        gemv_case("8B down", 14336, 4096, false, false);
        gemv_case("8B gu", 4096, 28672, true, true);
        if (strstr(what, "head")) {
            gemv_case("1B head", 2048, 128256, false, true);
            gemv_case("8B head", 4096, 128256, false, true);
        }
    }
    return 0;
}
