/* cuda_backend.cu: the CUDA backend (backend.h's vtable on one NVIDIA GPU).
 *
 * Memory: fb_alloc is device memory (cudaMalloc), so activations and the KV cache never leave
 * the GPU; fb_to_host is the one copy back per step (the logits).  Weights are uploaded once
 * by fb_weight_prepare: F32, F16 and BF16 as they are, Q8_0 re-laid as an int8 matrix plus
 * fp16 block scales (16-byte loads), every other type dequantized to F16 (F32 when a value
 * exceeds F16's range).  Weights with the same host bytes, type and shape share one device
 * copy (the LM head of a tied model is the token embedding).  Small host int arrays (token
 * ids, positions) go through a pinned staging area, each array copied once per step however
 * many ops read it.
 *
 * Products: up to gemm_rows-1 activation rows run on the GEMV kernels of cuda_kernels.cu,
 * which compute a deferred RMS statistic in the product's own pass; more rows run on cuBLAS
 * (cublasGemmEx, fp32 accumulation) after one fused pass that reduces each row to its
 * statistic and converts x * in_scale * s to the weights' 16-bit type (the scale is applied
 * before the conversion, where unnormalized activations could overflow fp16), with Q8_0
 * tiles dequantized to fp16 on the way.
 *
 * The multi-row kernel (sm_80 and later) feeds each weight tile once to the tensor cores for
 * all of 2..GEMV_MR_MAX rows (activations split into three bf16 parts: fp32 accuracy).  On an
 * H200 (bench/cuda/gemv-rows.sh, BENCHMARKS.md) it runs at 1.55-2.2x one row's time for any
 * row count: ahead of the fp32 multi-row GEMV for Q8_0 weights from 6 rows (0.61-0.95x its
 * time), behind it at 2-4 rows (1.0-1.5x), and behind cuBLAS for 16-bit weights of the 8B
 * shape (1.07-1.33x).  So option mr=1 (the default) gives it Q8_0 products of MR_FROM_Q8..
 * GEMV_MR_MAX rows only; mr=2 gives it every type's 2..GEMV_MR_MAX rows (for measuring), mr=0
 * none.  Otherwise gemm_rows is by default 5 for 16-bit weights (the fp32 multi-row GEMV of
 * 5-8 rows is bound by its FMAs: at 8 rows on an H200 cuBLAS takes 0.55x its time, 1B and 8B)
 * and 9 for the others (Q8_0 tiles would be dequantized for every step; F32 is for tests).
 *
 * CUDA graphs: between FB_MARK_STEP_BEGIN and _END, with fewer rows than gemm_rows, the ops
 * are recorded instead of launched: every launch is a kernel, a grid and the bytes of one
 * parameter struct, so a step is a list of such records.  The first time a step shape repeats
 * the records become a graph (a chain of kernel and copy nodes); later steps compare each new
 * record with the graph's and only patch the nodes whose parameters changed (the KV-cache
 * write position, the attention split count) before launching the graph.  A record that does
 * not fit (another plan, another batch layout) switches to another graph of the same shape or
 * builds a new one from the records so far.  The step is cut into segments (layer 0, then
 * every graph_layers layers), so the GPU runs segment k while the host checks segment k+1.  Anything
 * that needs results on the host (fb_to_host, fb_sync) or memory freed launches what was
 * recorded first.
 *
 * Launch merging: a GEMV launch is held back one op, so that a residual add of its output
 * becomes part of its epilogue, and a SiLU-gate over the two halves of a gate|up product makes
 * it the GLU form (each warp computes matching gate and up rows and writes silu(g) * u); RoPE
 * of Q and then K (same rows, positions and parameters) is one launch, and so are the copies
 * of K and V into the cache (up to FCU_COPY_MAX, every sequence of a batch).  When the held GEMV is the Q|K|V product itself, RoPE
 * (adjacent pairs: a warp computes both rows of a pair) and the cache writes become part of
 * its epilogue instead.  Each merge checks that the buffers cannot overlap.  In a Llama
 * decoder layer of the fused plan this leaves five launches: Q|K|V (+ RoPE + cache write),
 * attention, O (+ add), gate|up (+ SiLU), down (+ add).
 *
 * KV caches of every fb_kv type (kv_check, kv_store): stores are rounded on the device as
 * quants.c rounds (the cache holds the CPU backend's bytes), K and V of a layer's sequences
 * queued as one launch (PEND_KVST); attention reads the typed rows itself (cuda_kernels.cu).
 * Ring caches (attn_ring: a sliding-window layer keeps window + batch - 1 rows): the kernels
 * map each position to its ring row as they load it.
 *
 * Programmatic dependent launch (option pdl, sm_90): consecutive kernels of ours are
 * launched (or linked in a graph) so that the next one starts while the previous one drains
 * and issues its first weight loads before it waits for the previous one's results (the
 * kernels' pdl_wait).  By default (pdl=2) only in steps of one row, and only into kernels of
 * at least two blocks per SM: a batch of 8 rows loses 8-9% with it, and so do products of
 * few, large blocks (the 8B down product 19% on an H200), whose blocks start early on the
 * SMs the previous kernel frees first and so land unevenly (docs/gpu.md); pdl=1 everywhere,
 * pdl=0 never.
 *
 * Errors: every CUDA and cuBLAS call is checked; a failure is logged with the call, the error
 * name and the line, and the op returns FD_EBACKEND.  Errors that poison the context (an
 * illegal address, say) make every later op fail too.
 *
 * Options: gemm_rows=N|auto (cuBLAS from N rows; default auto: GEMV_MR_MAX + 1 with mr=2,
 * else 5 for 16-bit weights, 9 for others), mr=0|1|2 (which rows take the multi-row
 * tensor-core kernel, see above; default 1, in effect where the device has bf16 tensor cores),
 * graphs=0|1 (default 1), graph_layers=N (segment length; 0 = whole step; default 2),
 * timing=1 (device time of every op by class into fb_stats_t.dev_s, with CUDA events;
 * turns graphs off), nonorm=1 (benchmarks only: skips every normalization, a lower bound that
 * is not a valid model), pdl=0|1|2 (default 2), pdl_blocks=N (with pdl=2, the smallest grid
 * that starts early; default two blocks per SM), attn_splits=N (at most N splits of a decode
 * row's context; default 32), stage=0|1|2 (one-row products that stage x in shared memory:
 * none, those with in_scale, all; default 1, measured in docs/gpu.md), steptime=0|1 (log
 * where each step's wall time goes: GPU time, the logits copy, the host's lead; a summary each
 * time the option is set). */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <type_traits>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backends/backend.h"
#include "backends/quants.h"
#include "common/fd.h"
#include "common/ggtypes.h"
#include "common/log.h"
}
#include "backends/cuda/cuda_kernels.h"

#define MAX_BLOB 1280
#define MAX_GRAPHS 128
#define MAX_UPLOADS 16
#define STAGE_BYTES ((size_t)8 << 20)
#define PIN_BYTES ((size_t)32 << 20)
#define DEQ_ELEMS ((int64_t)32 << 20) /* fp16 elements of one dequantized Q8_0 tile */
#define MAX_SEGS 64                     /* graph launches a step timed by steptime=1 */
#define DH_PIECES 8                    /* device-to-host copies in flight (fb_to_host) */

enum { OP_KERNEL, OP_COPY };
enum { MODE_EAGER, MODE_BUILD, MODE_REPLAY };

/* One launch or host-to-device copy, as issued and as a graph node. */
typedef struct op_rec {
    int kind;
    const void *func;
    dim3 grid, block;
    unsigned smem, len;
    void *dst;
    const void *src;
    size_t bytes;
    cudaGraphNode_t node;
    alignas(16) unsigned char blob[MAX_BLOB];
} op_rec_t;

typedef struct graph {
    uint64_t key;            /* rows | segment << 20 | variant << 40; 0 = free slot */
    cudaGraph_t g;
    cudaGraphExec_t exec;
    op_rec_t *ops;
    int n_ops, cap;
    uint64_t used;
} graph_t;

/* One device copy of a weight's bytes, shared by weights with the same src/type/shape. */
typedef struct wdev {
    const void *src;
    int type;
    int64_t n_in, n_out;
    int wtype;               /* enum fcu_wtype */
    void *d;
    __half *scale;           /* Q8 block scales */
    int refs;
} wdev_t;

typedef struct fcuda_weight {
    wdev_t *dev;
    float *bias, *in_scale;
} fcuda_weight_t;

typedef struct tev {
    cudaEvent_t a, b;
    int cls;
} tev_t;

/* A launch held back one op, so the next op can join it (module comment). */
enum { PEND_NONE, PEND_GEMV, PEND_ROPE, PEND_COPY, PEND_KVST };
typedef struct pend {
    int kind;
    const void *func;
    dim3 grid, block;
    int wtype;
    union {
        fcu_gemv_p g;
        fcu_rope_p r;
        fcu_copy_p c;
        fcu_kvst_p k;
    } u;
} pend_t;

typedef struct fcuda {
    fb_backend_t base;
    int dev;
    cudaDeviceProp prop;
    cudaStream_t st;
    cublasHandle_t blas;
    int err;                 /* sticky FD_EBACKEND after a context-poisoning error */
    /* options */
    int gemm_rows;           /* 0: by weight type (gemm_from) */
    int mr;                  /* option mr: 0, 1 (Q8_0's MR_FROM_Q8..GEMV_MR_MAX rows on the
                                multi-row kernel) or 2 (every type's 2..GEMV_MR_MAX rows) */
    bool tc;                 /* the device has bf16 tensor cores (sm_80 and later) */
    int graph_layers, attn_splits;
    int stage;               /* one-row products staging x in shared memory: 0 none, 1 with
                                in_scale, 2 all */
    int pdl;                 /* programmatic dependent launch: 0 never, 1 always, 2 in
                                steps of one row, into grids of pdl_blocks or more */
    int pdl_blocks;          /* -1: two per SM */
    bool graphs, timing, nonorm;
    bool chain;              /* the stream's last op was a kernel launched by exec_eager */
    /* staging of host int arrays, and pinned bounce buffers for bulk copies */
    unsigned char *stage_h, *stage_d;
    size_t stage_off;
    struct { const unsigned char *h; size_t n, off; } up[MAX_UPLOADS];
    int n_up, up_next;
    unsigned char *pin[2];
    cudaEvent_t pin_ev[2];
    int pin_next;
    cudaEvent_t dh_ev[DH_PIECES];
    /* scratch (device), grown on demand */
    void *conv; size_t conv_n;
    void *deq; size_t deq_n;
    float *scales; size_t scales_n;
    float *part; size_t part_n;
    int *cnt; size_t cnt_n;
    float *scores; size_t scores_n;
    /* graphs */
    int mode;
    bool pending, in_step;
    int step_rows, last_rows, seg;
    graph_t gr[MAX_GRAPHS];
    graph_t *cur;
    uint64_t stamp;
    op_rec_t *log;
    int n_log, cap_log;
    op_rec_t tmp;            /* the record being issued */
    pend_t pend;
    uint64_t n_launch, n_patch, n_build;
    /* timing */
    tev_t *tev;
    int n_tev, cap_tev;
    cudaEvent_t *evpool;
    int n_ev, cap_ev, ev_used;
    int tcls;
    cudaEvent_t t0;
    /* weights */
    wdev_t **wc;
    int n_wc, cap_wc;
    /* RoPE tables, by (n_rot, base, the factors' values: hf, a host copy, or NULL, and
     * YaRN's scale, blend and ramp ends); a model needs one or two (Gemma's local and global
     * bases), test_rope's YaRN cases a dozen */
    struct { int n_rot; float base; float *hf; double *d; float yarn[4]; } rf[16];
    int n_rf;
    /* steptime=1: where a step's wall time goes (summary logged when the option is set) */
    bool steptime, st_on;
    cudaEvent_t st_ev[2 + MAX_SEGS], st_d2h;
    int st_seg;
    double st_h0, st_first, st_rec;
    struct { uint64_t n, starved, segs, ops; double wall, gpu, d2h, first, rec, seg[MAX_SEGS]; } sts;
} fcuda_t;

/* ---- errors --------------------------------------------------------------------------- */

static int cuda_fail(fcuda_t *c, const char *what, cudaError_t e, int line)
{
    fd_log(FD_LOG_ERROR, "cuda backend: %s failed: %s (%s) [cuda_backend.cu:%d]", what,
           cudaGetErrorName(e), cudaGetErrorString(e), line);
    /* these leave the context usable; anything else (a kernel fault) poisons it */
    if (e != cudaErrorMemoryAllocation && e != cudaErrorInvalidValue &&
        e != cudaErrorInvalidConfiguration && e != cudaErrorLaunchOutOfResources)
        c->err = FD_EBACKEND;
    cudaGetLastError();
    return FD_EBACKEND;
}

static int blas_fail(const char *what, cublasStatus_t s, int line)
{
    fd_log(FD_LOG_ERROR, "cuda backend: %s failed: %s (%s) [cuda_backend.cu:%d]", what,
           cublasGetStatusName(s), cublasGetStatusString(s), line);
    return FD_EBACKEND;
}

#define CK(call)                                                                               \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess)                                                                 \
            return cuda_fail(c, #call, e_, __LINE__);                                          \
    } while (0)
#define CKB(call)                                                                              \
    do {                                                                                       \
        cublasStatus_t s_ = (call);                                                            \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                       \
            return blas_fail(#call, s_, __LINE__);                                             \
    } while (0)

/* ---- timing (option timing=1) --------------------------------------------------------- */

static cudaEvent_t ev_get(fcuda_t *c)
{
    if (c->ev_used == c->n_ev) {
        if (c->n_ev == c->cap_ev) {
            int cap = c->cap_ev ? 2 * c->cap_ev : 256;
            cudaEvent_t *p = (cudaEvent_t *)realloc(c->evpool, sizeof(*p) * (size_t)cap);
            if (!p)
                return NULL;
            c->evpool = p;
            c->cap_ev = cap;
        }
        if (cudaEventCreate(&c->evpool[c->n_ev]) != cudaSuccess)
            return NULL;
        c->n_ev++;
    }
    return c->evpool[c->ev_used++];
}

static void time_begin(fcuda_t *c, int cls)
{
    if (!c->timing)
        return;
    c->tcls = cls;
    c->chain = false;
    c->t0 = ev_get(c);
    if (c->t0)
        cudaEventRecord(c->t0, c->st);
}

static void time_end(fcuda_t *c)
{
    if (!c->timing || !c->t0)
        return;
    cudaEvent_t b = ev_get(c);
    if (!b)
        return;
    cudaEventRecord(b, c->st);
    if (c->n_tev == c->cap_tev) {
        int cap = c->cap_tev ? 2 * c->cap_tev : 256;
        tev_t *p = (tev_t *)realloc(c->tev, sizeof(*p) * (size_t)cap);
        if (!p)
            return;
        c->tev = p;
        c->cap_tev = cap;
    }
    c->tev[c->n_tev++] = (tev_t){c->t0, b, c->tcls};
    c->t0 = NULL;
}

/* After a stream synchronization: every recorded op's device time into the stats. */
static void time_collect(fcuda_t *c)
{
    for (int i = 0; i < c->n_tev; i++) {
        float ms = 0.f;
        if (cudaEventElapsedTime(&ms, c->tev[i].a, c->tev[i].b) == cudaSuccess) {
            c->base.stats.dev_s[c->tev[i].cls] += ms * 1e-3;
            c->base.stats.dev_total_s += ms * 1e-3;
        }
    }
    c->n_tev = 0;
    c->ev_used = 0;
}

/* ---- issuing: eager, recorded into a graph, or checked against one ---------------------- */

static bool same_shape(const op_rec_t *a, const op_rec_t *b)
{
    return a->kind == b->kind && (a->kind == OP_COPY ? a->bytes == b->bytes
                                                     : a->func == b->func && a->len == b->len);
}

static bool same_params(const op_rec_t *a, const op_rec_t *b)
{
    if (a->kind == OP_COPY)
        return a->dst == b->dst && a->src == b->src && a->bytes == b->bytes;
    return a->grid.x == b->grid.x && a->grid.y == b->grid.y && a->grid.z == b->grid.z &&
           a->block.x == b->block.x && a->block.y == b->block.y && a->smem == b->smem &&
           memcmp(a->blob, b->blob, a->len) == 0;
}

static void rec_copy(op_rec_t *dst, const op_rec_t *src)
{
    memcpy((void *)dst, (const void *)src, offsetof(op_rec_t, blob));
    if (src->kind == OP_KERNEL)
        memcpy(dst->blob, src->blob, src->len);
}

/* Programmatic dependent launch between consecutive kernels of ours: sm_90 and later, not
 * while timing every op (its events sit between the kernels anyway); with pdl=2 only inside a
 * step of one row (the graph key holds the answer, so a step's graphs never mix the two). */
static bool pdl_on(const fcuda_t *c)
{
    if (c->prop.major < 9 || c->timing)
        return false;
    return c->pdl == 1 || (c->pdl == 2 && c->in_step && c->step_rows == 1);
}

/* Whether kernel op starts behind the previous one (pdl_on): with pdl=2, only a grid of at
 * least pdl_blocks blocks (default two per SM).  A graph fixes the edge when it is built; a
 * later change of the grid only patches the node, which is correct either way (every kernel
 * waits in pdl_wait). */
static bool pdl_edge(const fcuda_t *c, const op_rec_t *op)
{
    if (!pdl_on(c))
        return false;
    const uint64_t min = c->pdl_blocks >= 0 ? (uint64_t)c->pdl_blocks
                                            : 2 * (uint64_t)c->prop.multiProcessorCount;
    return c->pdl == 1 || (uint64_t)op->grid.x * op->grid.y * op->grid.z >= min;
}

/* ---- steptime=1: a step's wall time split into host and GPU parts ---------------------- */

/* Before a launch in a timed step: the host's first launch time, and whether the GPU had
 * already finished everything launched before (it waited for the host). */
static void st_launch(fcuda_t *c)
{
    if (!c->st_on)
        return;
    if (c->st_first == 0)
        c->st_first = fd_now_s();
    if (c->st_seg > 0 && c->st_seg <= MAX_SEGS &&
        cudaEventQuery(c->st_ev[1 + c->st_seg]) == cudaSuccess)
        c->sts.starved++;
}

static void st_launched(fcuda_t *c)
{
    if (c->st_on && c->st_seg < MAX_SEGS)
        cudaEventRecord(c->st_ev[2 + c->st_seg], c->st);
    if (c->st_on) {
        c->sts.ops += (uint64_t)c->n_log;
        c->st_seg++;
    }
}

static void st_report(fcuda_t *c)
{
    if (c->sts.n)
        fd_log(FD_LOG_INFO, "cuda backend: steptime over %llu steps, per step: wall %.3f ms, "
               "GPU %.3f ms (step begin to logits copy), logits copy %.3f ms, host to the first "
               "launch %.1f us, host until the logits copy %.3f ms, %.1f graph launches of "
               "which %.2f found the GPU idle", (unsigned long long)c->sts.n,
               c->sts.wall * 1e3 / c->sts.n, c->sts.gpu * 1e3 / c->sts.n, c->sts.d2h * 1e3 / c->sts.n,
               c->sts.first * 1e6 / c->sts.n, c->sts.rec * 1e3 / c->sts.n,
               (double)c->sts.segs / c->sts.n, (double)c->sts.starved / c->sts.n);
    if (c->sts.n) {
        char b[1024];
        int o = snprintf(b, sizeof(b), "cuda backend: steptime: %.1f recorded ops per step; GPU "
                         "us per graph launch:", (double)c->sts.ops / c->sts.n);
        for (uint64_t k = 0; k < c->sts.segs / c->sts.n && k < MAX_SEGS && o < 1000; k++)
            o += snprintf(b + o, sizeof(b) - (size_t)o, " %.1f", c->sts.seg[k] * 1e6 / c->sts.n);
        fd_log(FD_LOG_INFO, "%s", b);
    }
    memset(&c->sts, 0, sizeof(c->sts));
}

static int exec_eager(fcuda_t *c, const op_rec_t *op)
{
    if (c->st_on && c->st_first == 0)
        c->st_first = fd_now_s();
    if (op->kind == OP_COPY) {
        c->chain = false;
        CK(cudaMemcpyAsync(op->dst, op->src, op->bytes, cudaMemcpyHostToDevice, c->st));
    } else if (c->chain && pdl_edge(c, op)) {
        /* programmatic dependent launch behind the previous kernel (kernels: pdl_wait) */
        void *args[1] = {(void *)op->blob};
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cudaLaunchConfig_t cfg = {op->grid, op->block, op->smem, c->st, at, 1};
        CK(cudaLaunchKernelExC(&cfg, op->func, args));
    } else {
        void *args[1] = {(void *)op->blob};
        CK(cudaLaunchKernel(op->func, op->grid, op->block, args, op->smem, c->st));
        c->chain = true;
    }
    c->pending = true;
    return 0;
}

static int node_params(fcuda_t *c, graph_t *g, op_rec_t *slot, const op_rec_t *op)
{
    if (op->kind == OP_COPY) {
        CK(cudaGraphExecMemcpyNodeSetParams1D(g->exec, slot->node, op->dst, op->src, op->bytes,
                                              cudaMemcpyHostToDevice));
    } else {
        void *args[1] = {(void *)op->blob};
        cudaKernelNodeParams kp = {(void *)op->func, op->grid, op->block, op->smem, args, NULL};
        CK(cudaGraphExecKernelNodeSetParams(g->exec, slot->node, &kp));
    }
    cudaGraphNode_t node = slot->node;
    rec_copy(slot, op);
    slot->node = node;
    c->n_patch++;
    return 0;
}

static void graph_drop(graph_t *g)
{
    if (g->exec)
        cudaGraphExecDestroy(g->exec);
    if (g->g)
        cudaGraphDestroy(g->g);
    free(g->ops);
    memset(g, 0, sizeof(*g));
}

/* Appends op as the next node of the graph under construction. */
static int build_add(fcuda_t *c, graph_t *g, const op_rec_t *op)
{
    if (g->n_ops == g->cap) {
        int cap = g->cap ? 2 * g->cap : 64;
        op_rec_t *p = (op_rec_t *)realloc(g->ops, sizeof(*p) * (size_t)cap);
        if (!p)
            return -ENOMEM;
        g->ops = p;
        g->cap = cap;
    }
    op_rec_t *slot = &g->ops[g->n_ops];
    const op_rec_t *pr = g->n_ops ? &g->ops[g->n_ops - 1] : NULL;
    cudaGraphNode_t prev = pr ? pr->node : NULL;
    size_t ndep = prev ? 1 : 0;
    if (op->kind == OP_COPY) {
        CK(cudaGraphAddMemcpyNode1D(&slot->node, g->g, prev ? &prev : NULL, ndep, op->dst, op->src,
                                    op->bytes, cudaMemcpyHostToDevice));
    } else if (pr && pr->kind == OP_KERNEL && pdl_edge(c, op)) {
        /* a programmatic edge: this kernel may start once every block of the previous one has
         * started (they call pdl_launch first); it waits for the results in pdl_wait */
        void *args[1] = {(void *)op->blob};
        cudaKernelNodeParams kp = {(void *)op->func, op->grid, op->block, op->smem, args, NULL};
        CK(cudaGraphAddKernelNode(&slot->node, g->g, NULL, 0, &kp));
        cudaGraphEdgeData ed;
        memset(&ed, 0, sizeof(ed));
        ed.from_port = cudaGraphKernelNodePortProgrammatic;
        ed.type = cudaGraphDependencyTypeProgrammatic;
        CK(cudaGraphAddDependencies(g->g, &prev, &slot->node, &ed, 1));
    } else {
        void *args[1] = {(void *)op->blob};
        cudaKernelNodeParams kp = {(void *)op->func, op->grid, op->block, op->smem, args, NULL};
        CK(cudaGraphAddKernelNode(&slot->node, g->g, prev ? &prev : NULL, ndep, &kp));
    }
    cudaGraphNode_t node = slot->node;
    rec_copy(slot, op);
    slot->node = node;
    g->n_ops++;
    return 0;
}

/* The fewest activation rows that go to cuBLAS for weights of wtype, and the fewest for any
 * type (a step of fewer rows has no cuBLAS call, so it can be a graph).  GEMV_MR_MAX is the
 * multi-row kernel's limit (8 activation rows, the n of one mma.m16n8k16); MR_FROM_Q8 where it
 * overtakes the fp32 multi-row GEMV on Q8_0 weights (measured at 6 and 8 rows: 0.61-0.95x;
 * 4 rows: 1.0-1.2x); the GEMM_ROWS_* are the fp32 multi-row GEMV's crossovers with cuBLAS. */
#define GEMV_MR_MAX 8
static_assert(GEMV_MR_MAX <= FCU_GEMV_MAX_ROWS, "the multi-row kernel's rows are one launch's");
#define MR_FROM_Q8 6
#define GEMM_ROWS_16 5
#define GEMM_ROWS_OTHER 9
static bool mr_all(const fcuda_t *c) { return c->mr == 2 && c->tc; }

/* The fewest rows of weights of wtype that take the multi-row kernel (above GEMV_MR_MAX:
 * none). */
static int mr_from(const fcuda_t *c, int wtype)
{
    if (!c->tc || c->mr == 0)
        return GEMV_MR_MAX + 1;
    return c->mr == 2 ? 2 : wtype == FCU_W_Q8 ? MR_FROM_Q8 : GEMV_MR_MAX + 1;
}

static int gemm_from(const fcuda_t *c, int wtype)
{
    if (c->gemm_rows > 0)
        return c->gemm_rows;
    if (mr_all(c))
        return GEMV_MR_MAX + 1;
    return wtype == FCU_W_F16 || wtype == FCU_W_BF16 ? GEMM_ROWS_16 : GEMM_ROWS_OTHER;
}

static int gemm_min(const fcuda_t *c)
{
    return c->gemm_rows > 0 ? c->gemm_rows : mr_all(c) ? GEMV_MR_MAX + 1 : GEMM_ROWS_16;
}

/* The product kernel for R activation rows (vec: n_in % 8 == 0, aligned rows); glu: the GLU
 * form, n_out its gate rows. */
static const void *gemv_kernel(const fcuda_t *c, int wtype, int R, bool vec, bool glu, int n_in,
                               int n_out, int *rpb, int *threads)
{
    if (vec && R >= mr_from(c, wtype) && R <= GEMV_MR_MAX)
        return fcu_k_gemv_mr(wtype, glu, n_out, rpb, threads);
    return glu ? fcu_k_gemv_glu(wtype, R, n_in, rpb, threads)
               : fcu_k_gemv(wtype, R, vec, n_in, rpb, threads);
}

static uint64_t seg_key(const fcuda_t *c)
{
    return (uint64_t)c->step_rows | (uint64_t)c->seg << 20 | (uint64_t)(c->nonorm ? 1 : 0) << 40 |
           (uint64_t)(pdl_on(c) ? 1 : 0) << 41 | (uint64_t)1 << 48;
}

/* A new, empty graph for the current segment (the least recently used one goes if full). */
static int graph_new(fcuda_t *c, graph_t **out)
{
    graph_t *g = NULL;
    for (int i = 0; i < MAX_GRAPHS && !g; i++)
        if (!c->gr[i].key)
            g = &c->gr[i];
    if (!g) {
        g = &c->gr[0];
        for (int i = 1; i < MAX_GRAPHS; i++)
            if (c->gr[i].used < g->used)
                g = &c->gr[i];
        graph_drop(g);
    }
    CK(cudaGraphCreate(&g->g, 0));
    g->key = seg_key(c);
    g->used = ++c->stamp;
    *out = g;
    c->n_build++;
    return 0;
}

/* Leaves graph mode for the rest of the segment: the records not yet launched run eagerly. */
static int divert(fcuda_t *c)
{
    if (c->mode == MODE_BUILD && c->cur)
        graph_drop(c->cur);
    c->mode = MODE_EAGER;
    c->cur = NULL;
    int rc = 0;
    for (int i = 0; i < c->n_log && rc == 0; i++)
        rc = exec_eager(c, &c->log[i]);
    c->n_log = 0;
    return rc;
}

static int log_push(fcuda_t *c, const op_rec_t *op)
{
    if (c->n_log == c->cap_log) {
        int cap = c->cap_log ? 2 * c->cap_log : 128;
        op_rec_t *p = (op_rec_t *)realloc(c->log, sizeof(*p) * (size_t)cap);
        if (!p)
            return -ENOMEM;
        c->log = p;
        c->cap_log = cap;
    }
    rec_copy(&c->log[c->n_log++], op);
    return 0;
}

/* REPLAY found op i different in shape from the current graph's: another graph of the same
 * segment whose records 0..i have this segment's shapes, with its parameters brought up to
 * date; else a new graph built from the records so far. */
static int replay_switch(fcuda_t *c)
{
    const int n = c->n_log;
    uint64_t key = seg_key(c);
    for (int k = 0; k < MAX_GRAPHS; k++) {
        graph_t *g = &c->gr[k];
        if (g->key != key || g == c->cur || g->n_ops < n)
            continue;
        int i = 0;
        while (i < n && same_shape(&g->ops[i], &c->log[i]))
            i++;
        if (i < n)
            continue;
        for (i = 0; i < n; i++)
            if (!same_params(&g->ops[i], &c->log[i])) {
                int rc = node_params(c, g, &g->ops[i], &c->log[i]);
                if (rc)
                    return rc;
            }
        c->cur = g;
        g->used = ++c->stamp;
        return 0;
    }
    graph_t *g;
    int rc = graph_new(c, &g);
    for (int i = 0; i < n && rc == 0; i++)
        rc = build_add(c, g, &c->log[i]);
    if (rc) {
        graph_drop(g);
        c->cur = NULL;
        c->mode = MODE_EAGER;
        return divert(c);
    }
    c->cur = g;
    c->mode = MODE_BUILD;
    return 0;
}

static int issue(fcuda_t *c, const op_rec_t *op)
{
    if (c->err)
        return c->err;
    if (c->mode == MODE_EAGER)
        return exec_eager(c, op);
    int rc = log_push(c, op);
    if (rc)
        return divert(c) ? c->err : rc;
    if (c->mode == MODE_BUILD) {
        rc = build_add(c, c->cur, op);
        return rc ? divert(c) : 0;
    }
    const int i = c->n_log - 1;
    graph_t *g = c->cur;
    if (i < g->n_ops && same_shape(&g->ops[i], op))
        return same_params(&g->ops[i], op) ? 0 : node_params(c, g, &g->ops[i], op);
    rc = replay_switch(c);
    return rc;
}

static int pend_flush(fcuda_t *c);

/* Launches what the segment recorded (or runs it eagerly if it cannot be a graph) and leaves
 * graph mode until the next segment begins. */
static int flush(fcuda_t *c)
{
    int rc = pend_flush(c);
    if (rc)
        return rc;
    if (c->mode == MODE_BUILD) {
        graph_t *g = c->cur;
        if (c->n_log == 0) {
            graph_drop(g);
        } else {
            cudaError_t e = cudaGraphInstantiate(&g->exec, g->g, 0);
            if (e != cudaSuccess) {
                fd_log(FD_LOG_WARN, "cuda backend: cudaGraphInstantiate: %s; running the step "
                       "without a graph", cudaGetErrorString(e));
                cudaGetLastError();
                c->cur = g;
                return divert(c);
            }
        }
    } else if (c->mode == MODE_REPLAY && c->n_log != c->cur->n_ops) {
        graph_drop(c->cur); /* the step ended early: this graph no longer describes it */
        c->cur = NULL;
        c->mode = MODE_EAGER;
        return divert(c);
    }
    if (c->mode != MODE_EAGER && c->n_log > 0) {
        c->cur->used = ++c->stamp;
        c->chain = false;
        st_launch(c);
        cudaError_t e = cudaGraphLaunch(c->cur->exec, c->st);
        if (e != cudaSuccess)
            rc = cuda_fail(c, "cudaGraphLaunch", e, __LINE__);
        else
            st_launched(c);
        c->pending = true;
        c->n_launch++;
    }
    c->mode = MODE_EAGER;
    c->cur = NULL;
    c->n_log = 0;
    return rc;
}

static void segment_begin(fcuda_t *c)
{
    c->mode = MODE_EAGER;
    c->cur = NULL;
    c->n_log = 0;
    if (!c->in_step || !c->graphs || c->timing || c->step_rows >= gemm_min(c) || c->err)
        return;
    uint64_t key = seg_key(c);
    graph_t *best = NULL;
    for (int k = 0; k < MAX_GRAPHS; k++)
        if (c->gr[k].key == key && c->gr[k].exec && (!best || c->gr[k].used > best->used))
            best = &c->gr[k];
    if (best) {
        c->mode = MODE_REPLAY;
        c->cur = best;
    } else if (c->last_rows == c->step_rows && graph_new(c, &c->cur) == 0) {
        c->mode = MODE_BUILD; /* the shape repeats: worth a graph */
    }
}

/* ---- memory ---------------------------------------------------------------------------- */

static void *cuda_alloc(fb_backend_t *, size_t bytes)
{
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaGetLastError();
        cudaMemGetInfo(&fr, &tot);
        fd_log(FD_LOG_ERROR, "cuda backend: cannot allocate %zu bytes of device memory (%s; "
               "%zu of %zu bytes free)", bytes, cudaGetErrorString(e), fr, tot);
        return NULL;
    }
    return p;
}

static void cuda_free(fb_backend_t *be, void *p)
{
    fcuda_t *c = (fcuda_t *)be;
    flush(c); /* a recorded op may still use p */
    cudaError_t e = cudaFree(p);
    if (e != cudaSuccess)
        cuda_fail(c, "cudaFree", e, __LINE__);
}

/* Host to device through the two pinned buffers: the host copy of one chunk overlaps the
 * transfer of the other; src may be reused when this returns. */
static int upload_big(fcuda_t *c, void *dst, const void *src, size_t bytes)
{
    for (size_t off = 0; off < bytes;) {
        size_t n = FD_MIN(PIN_BYTES, bytes - off);
        int k = c->pin_next;
        c->pin_next ^= 1;
        CK(cudaEventSynchronize(c->pin_ev[k]));
        memcpy(c->pin[k], (const unsigned char *)src + off, n);
        c->chain = false;
        CK(cudaMemcpyAsync((unsigned char *)dst + off, c->pin[k], n, cudaMemcpyHostToDevice, c->st));
        CK(cudaEventRecord(c->pin_ev[k], c->st));
        c->pending = true;
        off += n;
    }
    return 0;
}

static int cuda_to_device(fb_backend_t *be, void *dst, const void *src, size_t bytes)
{
    fcuda_t *c = (fcuda_t *)be;
    int rc = flush(c);
    if (rc || c->err)
        return rc ? rc : c->err;
    time_begin(c, FB_OP_OTHER);
    rc = upload_big(c, dst, src, bytes);
    time_end(c);
    return rc;
}

static int cuda_to_host(fb_backend_t *be, void *dst, const void *src, size_t bytes)
{
    fcuda_t *c = (fcuda_t *)be;
    int rc = flush(c);
    if (rc || c->err)
        return rc ? rc : c->err;
    const bool timed = c->st_on;
    if (timed) {
        c->st_rec = fd_now_s();
        CK(cudaEventRecord(c->st_ev[1], c->st));
    }
    /* page-locked dst (fb_host_alloc): one transfer straight into it */
    cudaPointerAttributes pa;
    const bool pinned = cudaPointerGetAttributes(&pa, dst) == cudaSuccess &&
                        pa.type == cudaMemoryTypeHost;
    cudaGetLastError();
    if (pinned) {
        time_begin(c, FB_OP_OTHER);
        c->chain = false;
        CK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->st));
        time_end(c);
        if (timed)
            CK(cudaEventRecord(c->st_d2h, c->st));
    }
    /* else in pieces with an event each, so the host copies a piece out of the pinned buffer
     * while the next ones are still crossing the bus */
    for (size_t off = 0; off < bytes && !pinned;) {
        const size_t n = FD_MIN(PIN_BYTES, bytes - off);
        const size_t piece = FD_MAX((size_t)64 << 10, (n + DH_PIECES - 1) / DH_PIECES);
        int k = 0;
        time_begin(c, FB_OP_OTHER);
        c->chain = false;
        for (size_t o = 0; o < n; o += piece, k++) {
            CK(cudaMemcpyAsync(c->pin[0] + o, (const unsigned char *)src + off + o,
                               FD_MIN(piece, n - o), cudaMemcpyDeviceToHost, c->st));
            CK(cudaEventRecord(c->dh_ev[k], c->st));
        }
        time_end(c);
        if (timed)
            CK(cudaEventRecord(c->st_d2h, c->st));
        k = 0;
        for (size_t o = 0; o < n; o += piece, k++) {
            CK(cudaEventSynchronize(c->dh_ev[k]));
            memcpy((unsigned char *)dst + off + o, c->pin[0] + o, FD_MIN(piece, n - o));
        }
        off += n;
    }
    CK(cudaStreamSynchronize(c->st));
    c->pending = false;
    if (timed) {
        float g = 0, d = 0;
        CK(cudaEventElapsedTime(&g, c->st_ev[0], c->st_ev[1]));
        CK(cudaEventElapsedTime(&d, c->st_ev[1], c->st_d2h));
        c->sts.n++;
        c->sts.gpu += g * 1e-3;
        c->sts.d2h += d * 1e-3;
        c->sts.first += c->st_first ? c->st_first - c->st_h0 : 0;
        c->sts.rec += c->st_rec - c->st_h0;
        c->sts.wall += fd_now_s() - c->st_h0;
        c->sts.segs += (uint64_t)c->st_seg;
        for (int k = 0; k < c->st_seg && k < MAX_SEGS; k++) {
            float e = 0;
            CK(cudaEventElapsedTime(&e, c->st_ev[k ? 1 + k : 0], c->st_ev[2 + k]));
            c->sts.seg[k] += e * 1e-3;
        }
        c->st_on = false;
    }
    return 0;
}

static void *cuda_host_alloc(fb_backend_t *, size_t bytes)
{
    void *p = NULL;
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fd_log(FD_LOG_ERROR, "cuda backend: cannot allocate %zu bytes of page-locked host "
               "memory (%s)", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_host_free(fb_backend_t *, void *p)
{
    cudaFreeHost(p);
}

static int cuda_sync(fb_backend_t *be)
{
    fcuda_t *c = (fcuda_t *)be;
    int rc = flush(c);
    if (c->err)
        return c->err;
    CK(cudaStreamSynchronize(c->st));
    c->pending = false;
    time_collect(c);
    return rc;
}

/* Device scratch of at least bytes (grown by half again); nothing recorded may use the old. */
static int scratch(fcuda_t *c, void **p, size_t *have, size_t bytes, bool zero)
{
    if (*have >= bytes)
        return 0;
    int rc = flush(c);
    if (rc)
        return rc;
    size_t n = FD_MAX(bytes, *have + *have / 2);
    if (*p)
        CK(cudaFree(*p));
    *p = NULL;
    *have = 0;
    CK(cudaMalloc(p, n));
    if (zero) {
        c->chain = false;
        CK(cudaMemsetAsync(*p, 0, n, c->st));
    }
    *have = n;
    return 0;
}

/* A host int array on the device for the ops of this step.  Arrays already copied (the same
 * host range with the same contents) are not copied again. */
static int upload_ints(fcuda_t *c, const int32_t *h, int64_t n, const int32_t **out)
{
    const size_t bytes = (size_t)n * sizeof(int32_t);
    const unsigned char *hb = (const unsigned char *)h;
    for (int k = 0; k < c->n_up; k++) {
        const unsigned char *b = c->up[k].h;
        if (hb >= b && hb + bytes <= b + c->up[k].n &&
            memcmp(c->stage_h + c->up[k].off + (hb - b), hb, bytes) == 0) {
            *out = (const int32_t *)(c->stage_d + c->up[k].off + (hb - b));
            return 0;
        }
    }
    if (bytes > STAGE_BYTES) {
        fd_log(FD_LOG_ERROR, "cuda backend: %lld indices in one op (at most %zu)", (long long)n,
               STAGE_BYTES / sizeof(int32_t));
        return -E2BIG;
    }
    size_t off = (c->stage_off + 255) & ~(size_t)255;
    if (off + bytes > STAGE_BYTES) { /* full: wait until every earlier copy has run */
        int rc = flush(c);
        if (rc)
            return rc;
        CK(cudaStreamSynchronize(c->st));
        c->pending = false;
        c->n_up = c->up_next = 0;
        off = 0;
    }
    memcpy(c->stage_h + off, h, bytes);
    op_rec_t *op = &c->tmp;
    op->kind = OP_COPY;
    op->dst = c->stage_d + off;
    op->src = c->stage_h + off;
    op->bytes = bytes;
    op->len = 0;
    op->func = NULL;
    int rc = issue(c, op);
    if (rc)
        return rc;
    int k = c->n_up < MAX_UPLOADS ? c->n_up++ : c->up_next++ % MAX_UPLOADS;
    c->up[k].h = hb;
    c->up[k].n = bytes;
    c->up[k].off = off;
    c->stage_off = off + bytes;
    *out = (const int32_t *)(c->stage_d + off);
    return 0;
}

/* Issues kernel func over grid x block with the parameter struct p. */
template <typename P>
static int launch(fcuda_t *c, const void *func, dim3 grid, dim3 block, const P &p)
{
    static_assert(sizeof(P) <= MAX_BLOB, "kernel parameters too large");
    op_rec_t *op = &c->tmp;
    op->kind = OP_KERNEL;
    op->func = func;
    op->grid = grid;
    op->block = block;
    op->smem = 0;
    if constexpr (std::is_same<P, fcu_gemv_p>::value) /* a staged one-row product */
        op->smem = (unsigned)fcu_gemv_stage_bytes(p.stage ? 1 : 0, p.n_in);
    op->len = sizeof(P);
    op->dst = NULL;
    op->src = NULL;
    op->bytes = 0;
    memcpy(op->blob, &p, sizeof(P));
    return issue(c, op);
}

static int pend_flush(fcuda_t *c)
{
    pend_t *q = &c->pend;
    int kind = q->kind;
    q->kind = PEND_NONE;
    switch (kind) {
    case PEND_GEMV: return launch(c, q->func, q->grid, q->block, q->u.g);
    case PEND_ROPE: return launch(c, q->func, q->grid, q->block, q->u.r);
    case PEND_COPY: return launch(c, q->func, q->grid, q->block, q->u.c);
    case PEND_KVST: return launch(c, q->func, q->grid, q->block, q->u.k);
    }
    return 0;
}

/* Whether the floats of rows x n at a (row stride lda) and at b (ldb) may overlap: compares
 * their spans, so it may say yes for rows that interleave without touching. */
static bool spans_overlap(const float *a, int64_t lda, const float *b, int64_t ldb,
                          int64_t rows, int64_t n)
{
    const float *ea = a + (rows - 1) * lda + n, *eb = b + (rows - 1) * ldb + n;
    return a < eb && b < ea;
}

/* Whether [a, a + na) and [b, b + nb) (floats) overlap. */
static bool overlap(const float *a, int64_t na, const float *b, int64_t nb)
{
    return a < b + nb && b < a + na;
}

static unsigned blocks_for(const fcuda_t *c, int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads, cap = (int64_t)c->prop.multiProcessorCount * 16;
    return (unsigned)FD_MAX((int64_t)1, FD_MIN(b, cap));
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Whether the kernels may read 4 values of a typed cache at once (cuda_kernels.cu's kv_ld4):
 * F32 rows 16-byte aligned, F16 and BF16 8-byte, block types 2-byte (head_dim % 4 == 0 is
 * the caller's to check). */
static bool kv_aligned(int type, const void *p)
{
    const uintptr_t u = (uintptr_t)p;
    return type == GG_F32 ? (u & 15) == 0 : type == GG_F16 || type == GG_BF16 ? (u & 7) == 0
                                                                              : (u & 1) == 0;
}

/* ---- weights --------------------------------------------------------------------------- */

static int upload_weight(fcuda_t *c, const fb_weight_t *w, wdev_t *d)
{
    const int64_t n_in = w->n_in, n_out = w->n_out;
    const size_t n = (size_t)n_in * (size_t)n_out;
    const uint64_t rb = gg_row_bytes(w->type, (uint64_t)n_in);
    void *host = NULL, *host2 = NULL;
    size_t bytes = 0, bytes2 = 0;
    int rc = 0;
    if (w->type == GG_F32 || n_out == 1) {
        d->wtype = FCU_W_F32;
        bytes = n * sizeof(float);
        if (w->type != GG_F32) {
            if (!(host = malloc(bytes)))
                return -ENOMEM;
            fq_dequantize_row(w->type, w->src, (float *)host, n_in);
        }
    } else if (w->type == GG_F16 || w->type == GG_BF16) {
        d->wtype = w->type == GG_F16 ? FCU_W_F16 : FCU_W_BF16;
        bytes = n * 2;
    } else if (w->type == GG_Q8_0) {
        d->wtype = FCU_W_Q8;
        bytes = n;
        bytes2 = n / FQ_QK * sizeof(uint16_t);
        int8_t *q = (int8_t *)malloc(bytes);
        uint16_t *s = (uint16_t *)malloc(bytes2);
        if (!q || !s) {
            free(q);
            free(s);
            return -ENOMEM;
        }
        const fq_block_q8_0 *b = (const fq_block_q8_0 *)w->src;
        for (size_t k = 0; k < n / FQ_QK; k++) {
            s[k] = b[k].d;
            memcpy(q + k * FQ_QK, b[k].qs, FQ_QK);
        }
        host = q;
        host2 = s;
    } else {
        /* other formats: dequantized once, kept as F16 unless a value does not fit */
        float *row = (float *)malloc((size_t)n_in * sizeof(float));
        uint16_t *h = (uint16_t *)malloc(n * 2);
        if (!row || !h) {
            free(row);
            free(h);
            return -ENOMEM;
        }
        bool fits = true;
        for (int64_t o = 0; o < n_out && fits; o++) {
            fq_dequantize_row(w->type, (const uint8_t *)w->src + (uint64_t)o * rb, row, n_in);
            for (int64_t i = 0; i < n_in; i++) {
                if (!(fabsf(row[i]) <= 65504.f)) {
                    fits = false;
                    break;
                }
                h[o * n_in + i] = fq_f32_to_f16(row[i]);
            }
        }
        free(row);
        if (fits) {
            d->wtype = FCU_W_F16;
            host = h;
            bytes = n * 2;
        } else {
            free(h);
            d->wtype = FCU_W_F32;
            bytes = n * sizeof(float);
            float *f = (float *)malloc(bytes);
            if (!f)
                return -ENOMEM;
            for (int64_t o = 0; o < n_out; o++)
                fq_dequantize_row(w->type, (const uint8_t *)w->src + (uint64_t)o * rb,
                                  f + o * n_in, n_in);
            host = f;
        }
    }
    cudaError_t e = cudaMalloc(&d->d, bytes);
    if (e == cudaSuccess && bytes2)
        e = cudaMalloc((void **)&d->scale, bytes2);
    if (e != cudaSuccess) {
        cudaGetLastError();
        fd_log(FD_LOG_ERROR, "cuda backend: no device memory for weight %s (%zu bytes): %s",
               w->name ? w->name : "?", bytes + bytes2, cudaGetErrorString(e));
        rc = -ENOMEM;
    }
    if (rc == 0)
        rc = upload_big(c, d->d, host ? host : w->src, bytes);
    if (rc == 0 && bytes2)
        rc = upload_big(c, d->scale, host2, bytes2);
    if (rc == 0 && (host || host2)) { /* the host buffers go: wait for their last chunks */
        e = cudaStreamSynchronize(c->st);
        if (e != cudaSuccess)
            rc = cuda_fail(c, "cudaStreamSynchronize", e, __LINE__);
    }
    free(host);
    free(host2);
    if (rc) {
        cudaFree(d->d);
        cudaFree(d->scale);
        d->d = NULL;
        d->scale = NULL;
    }
    return rc;
}

static int upload_vec(fcuda_t *c, const float *h, int64_t n, float **out)
{
    *out = NULL;
    if (!h)
        return 0;
    CK(cudaMalloc((void **)out, (size_t)n * sizeof(float)));
    return upload_big(c, *out, h, (size_t)n * sizeof(float));
}

static void wdev_put(fcuda_t *c, wdev_t *d)
{
    if (!d || --d->refs > 0)
        return;
    for (int i = 0; i < c->n_wc; i++)
        if (c->wc[i] == d) {
            c->wc[i] = c->wc[--c->n_wc];
            break;
        }
    cudaFree(d->d);
    cudaFree(d->scale);
    free(d);
}

static void cuda_weight_release(fb_backend_t *be, fb_weight_t *w)
{
    fcuda_t *c = (fcuda_t *)be;
    fcuda_weight_t *cw = (fcuda_weight_t *)w->impl;
    if (!cw)
        return;
    flush(c);
    cudaFree(cw->bias);
    cudaFree(cw->in_scale);
    wdev_put(c, cw->dev);
    free(cw);
}

static int cuda_weight_prepare(fb_backend_t *be, fb_weight_t *w)
{
    fcuda_t *c = (fcuda_t *)be;
    int rc = fb_weight_check(w);
    if (rc)
        return rc;
    if (w->n_in > INT32_MAX || w->n_out > INT32_MAX)
        return -EINVAL; /* the kernels index a weight's rows and columns in 32 bits */
    rc = flush(c);
    if (rc || c->err)
        return rc ? rc : c->err;
    fcuda_weight_t *cw = (fcuda_weight_t *)calloc(1, sizeof(*cw));
    if (!cw)
        return -ENOMEM;
    for (int i = 0; i < c->n_wc && !cw->dev; i++) {
        wdev_t *d = c->wc[i];
        if (d->src == w->src && d->type == w->type && d->n_in == w->n_in && d->n_out == w->n_out)
            cw->dev = d;
    }
    if (cw->dev) {
        cw->dev->refs++;
    } else {
        if (c->n_wc == c->cap_wc) {
            int cap = c->cap_wc ? 2 * c->cap_wc : 64;
            wdev_t **p = (wdev_t **)realloc(c->wc, sizeof(*p) * (size_t)cap);
            if (!p) {
                free(cw);
                return -ENOMEM;
            }
            c->wc = p;
            c->cap_wc = cap;
        }
        wdev_t *d = (wdev_t *)calloc(1, sizeof(*d));
        if (!d) {
            free(cw);
            return -ENOMEM;
        }
        *d = (wdev_t){w->src, w->type, w->n_in, w->n_out, 0, NULL, NULL, 1};
        if ((rc = upload_weight(c, w, d))) {
            free(d);
            free(cw);
            return rc;
        }
        c->wc[c->n_wc++] = d;
        cw->dev = d;
    }
    if ((rc = upload_vec(c, w->bias, w->n_out, &cw->bias)) ||
        (rc = upload_vec(c, w->in_scale, w->n_in, &cw->in_scale))) {
        w->impl = cw;
        cuda_weight_release(be, w);
        w->impl = NULL;
        return rc;
    }
    w->impl = cw;
    return 0;
}

static const fcuda_weight_t *weight_of(const fcuda_t *c, const fb_weight_t *w)
{
    return w && w->owner == &c->base ? (const fcuda_weight_t *)w->impl : NULL;
}

/* ---- matmul ---------------------------------------------------------------------------- */

static int mm_gemv(fcuda_t *c, const fb_weight_t *w, const fcuda_weight_t *cw, const float *x,
                   int64_t n_rows, float *y, int kind, float eps, float *scale_out)
{
    const wdev_t *d = cw->dev;
    const int n_in = (int)w->n_in, n_out = (int)w->n_out;
    for (int64_t r0 = 0; r0 < n_rows; r0 += FCU_GEMV_MAX_ROWS) {
        const int R = (int)FD_MIN((int64_t)FCU_GEMV_MAX_ROWS, n_rows - r0);
        fcu_gemv_p p;
        memset(&p, 0, sizeof(p));
        p.w = d->d;
        p.wscale = d->scale;
        p.x = x + r0 * n_in;
        p.y = y + r0 * n_out;
        p.in_scale = cw->in_scale;
        p.bias = cw->bias;
        p.n_in = n_in;
        p.n_out = n_out;
        p.rows = R;
        p.eps = eps;
        int rc;
        if (kind == FB_NORM_RMS) {
            p.norm = FCU_NORM_RMS;
            p.scale_out = scale_out ? scale_out + r0 : NULL;
        } else if (kind == FB_NORM_LAYER) {
            /* two-pass variance: a statistics pass in front, scales read by the GEMV */
            float *s = scale_out ? scale_out + r0 : NULL;
            if (!s) {
                if ((rc = scratch(c, (void **)&c->scales, &c->scales_n, 64 * sizeof(float), false)))
                    return rc;
                s = c->scales;
            }
            fcu_prep_p q;
            memset(&q, 0, sizeof(q));
            q.x = p.x;
            q.scale_out = s;
            q.n = n_in;
            q.norm = FB_NORM_LAYER;
            q.eps = eps;
            if ((rc = launch(c, fcu_k_prep(), dim3(R), dim3(256), q)))
                return rc;
            p.norm = FCU_NORM_SCALES;
            p.row_scale = s;
        }
        const bool vec = n_in % 8 == 0 && aligned16(p.x);
        p.stage = vec && (c->stage == 2 || (c->stage == 1 && p.in_scale)) &&
                  fcu_gemv_stage_bytes(R, n_in) > 0;
        int rpb, threads;
        const void *f = gemv_kernel(c, d->wtype, R, vec, false, n_in, n_out, &rpb, &threads);
        dim3 grid((unsigned)((n_out + rpb - 1) / rpb)), block(threads);
        if (vec && n_rows == R && !c->timing) { /* a following add or SiLU may join it */
            c->pend = (pend_t){PEND_GEMV, f, grid, block, d->wtype, {p}};
            return 0;
        }
        if ((rc = launch(c, f, grid, block, p)))
            return rc;
    }
    return 0;
}

static int mm_blas(fcuda_t *c, const fb_weight_t *w, const fcuda_weight_t *cw, const float *x,
                   int64_t n_rows, float *y, int kind, float eps, float *scale_out)
{
    const wdev_t *d = cw->dev;
    const int n_in = (int)w->n_in, n_out = (int)w->n_out;
    int rc = flush(c); /* cuBLAS launches directly: nothing recorded may be left behind */
    if (rc)
        return rc;
    const int ctype = d->wtype == FCU_W_Q8 ? FCU_W_F16 : d->wtype;
    const cudaDataType dt = ctype == FCU_W_F32 ? CUDA_R_32F
                            : ctype == FCU_W_F16 ? CUDA_R_16F : CUDA_R_16BF;
    const size_t esz = ctype == FCU_W_F32 ? 4 : 2;
    const void *xin = x;
    if (ctype != FCU_W_F32 || cw->in_scale || kind != FB_NORM_NONE) {
        if ((rc = scratch(c, &c->conv, &c->conv_n, (size_t)n_rows * (size_t)n_in * esz, false)))
            return rc;
        fcu_prep_p q;
        memset(&q, 0, sizeof(q));
        q.x = x;
        q.out = c->conv;
        q.scale_out = scale_out;
        q.in_scale = cw->in_scale;
        q.n = n_in;
        q.norm = kind;
        q.out_type = ctype;
        q.eps = eps;
        if ((rc = launch(c, fcu_k_prep(), dim3((unsigned)n_rows), dim3(256), q)))
            return rc;
        xin = c->conv;
    }
    float beta = 0.f;
    const float alpha = 1.f;
    if (cw->bias) {
        fcu_rows_p b = {y, cw->bias, n_out, (int)n_rows};
        if ((rc = launch(c, fcu_k_bias_rows(), dim3(blocks_for(c, n_rows * n_out, 256)), dim3(256), b)))
            return rc;
        beta = 1.f;
    }
    int64_t tile = n_out;
    if (d->wtype == FCU_W_Q8) {
        tile = FD_MAX((int64_t)1, FD_MIN((int64_t)n_out, DEQ_ELEMS / n_in));
        if ((rc = scratch(c, &c->deq, &c->deq_n, (size_t)tile * (size_t)n_in * 2, false)))
            return rc;
    }
    for (int64_t o0 = 0; o0 < n_out; o0 += tile) {
        const int m = (int)FD_MIN(tile, (int64_t)n_out - o0);
        const void *a = d->d;
        if (d->wtype == FCU_W_Q8) {
            fcu_deq_p q = {(const int8_t *)d->d, d->scale, (__half *)c->deq, o0, n_in, m};
            if ((rc = launch(c, fcu_k_deq_q8(), dim3(blocks_for(c, (int64_t)m * n_in, 256)),
                             dim3(256), q)))
                return rc;
            a = c->deq;
        }
        c->chain = false;
        CKB(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, (int)n_rows, n_in, &alpha, a, dt,
                         n_in, xin, dt, n_in, &beta, y + o0, CUDA_R_32F, n_out,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        c->pending = true;
    }
    return 0;
}

static int cuda_matmul(fb_backend_t *be, const fb_weight_t *w, const float *x, int64_t n_rows,
                       float *y, const fb_defer_t *defer)
{
    fcuda_t *c = (fcuda_t *)be;
    const fcuda_weight_t *cw = weight_of(c, w);
    if (!cw)
        return -EINVAL; /* weights must be prepared on this backend */
    if (c->err)
        return c->err;
    int kind = defer ? defer->kind : FB_NORM_NONE;
    if (kind != FB_NORM_NONE && !(defer->eps >= 0))
        return -EINVAL;
    if (c->nonorm)
        kind = FB_NORM_NONE;
    float eps = kind != FB_NORM_NONE ? defer->eps : 0.f;
    float *so = kind != FB_NORM_NONE ? defer->scale_out : NULL;
    int rc = pend_flush(c);
    if (rc)
        return rc;
    time_begin(c, FB_OP_GEMM);
    rc = n_rows < gemm_from(c, cw->dev->wtype) ? mm_gemv(c, w, cw, x, n_rows, y, kind, eps, so)
                                   : mm_blas(c, w, cw, x, n_rows, y, kind, eps, so);
    time_end(c);
    return rc;
}

/* ---- norms ----------------------------------------------------------------------------- */

static const float *vec_of(const fcuda_t *c, const fb_weight_t *w, int64_t n)
{
    const fcuda_weight_t *cw = weight_of(c, w);
    if (!cw || w->n_in * w->n_out != n || n > INT32_MAX)
        return NULL;
    return (const float *)cw->dev->d;
}

static int cuda_rmsnorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                        const fb_weight_t *gamma, float eps, float *y)
{
    fcuda_t *c = (fcuda_t *)be;
    const float *g = vec_of(c, gamma, n);
    if (!g || !(eps >= 0))
        return -EINVAL;
    if (n_rows == 0 || c->nonorm)
        return c->err;
    fcu_norm_p p = {x, y, g, NULL, (int)n, eps};
    int rc = pend_flush(c);
    if (rc)
        return rc;
    time_begin(c, FB_OP_NORM);
    rc = launch(c, fcu_k_rmsnorm(), dim3((unsigned)n_rows), dim3(256), p);
    time_end(c);
    return rc;
}

static int cuda_layernorm(fb_backend_t *be, const float *x, int64_t n_rows, int64_t n,
                          const fb_weight_t *gamma, const fb_weight_t *beta, float eps, float *y)
{
    fcuda_t *c = (fcuda_t *)be;
    const float *g = vec_of(c, gamma, n), *b = NULL;
    if (!g || !(eps >= 0) || (beta && !(b = vec_of(c, beta, n))))
        return -EINVAL;
    if (n_rows == 0 || c->nonorm)
        return c->err;
    fcu_norm_p p = {x, y, g, b, (int)n, eps};
    int rc = pend_flush(c);
    if (rc)
        return rc;
    time_begin(c, FB_OP_NORM);
    rc = launch(c, fcu_k_layernorm(), dim3((unsigned)n_rows), dim3(256), p);
    time_end(c);
    return rc;
}

/* ---- rope, attention, element-wise ----------------------------------------------------- */

/* The device table base^(-2i / n_rot) / factor_i for the RoPE kernels (hf: the rope's
 * frequency factors on the host, df the same on the device, or both NULL), made once (by a
 * kernel launched straight on the stream, ahead of anything recorded that reads it) for each
 * (n_rot, base, factor values); NULL if it cannot be made: without factors the kernels then
 * compute each value themselves, with the same result; with factors the rope fails. */
static const double *rope_table(fcuda_t *c, int n_rot, float base, const float *hf,
                                const float *df, const float yarn[4])
{
    const size_t fb = sizeof(float) * (size_t)(n_rot / 2);
    for (int k = 0; k < c->n_rf; k++)
        if (c->rf[k].n_rot == n_rot && c->rf[k].base == base && !c->rf[k].hf == !hf &&
            (!hf || memcmp(c->rf[k].hf, hf, fb) == 0) &&
            memcmp(c->rf[k].yarn, yarn, sizeof(c->rf[k].yarn)) == 0)
            return c->rf[k].d;
    double *d = NULL;
    float *copy = NULL;
    if (c->n_rf == (int)FD_ARRAY_LEN(c->rf) || (hf && !(copy = (float *)malloc(fb))) ||
        cudaMalloc((void **)&d, sizeof(double) * (size_t)(n_rot / 2)) != cudaSuccess) {
        cudaGetLastError();
        free(copy);
        return NULL;
    }
    if (copy)
        memcpy(copy, hf, fb);
    if (fcu_rope_freq(d, n_rot, base, df, yarn[0], yarn[1], yarn[2], yarn[3], c->st) !=
        cudaSuccess) {
        cudaGetLastError();
        cudaFree(d);
        free(copy);
        return NULL;
    }
    c->chain = false;
    c->pending = true;
    c->rf[c->n_rf].n_rot = n_rot;
    c->rf[c->n_rf].base = base;
    c->rf[c->n_rf].hf = copy;
    memcpy(c->rf[c->n_rf].yarn, yarn, sizeof(c->rf[c->n_rf].yarn));
    c->rf[c->n_rf++].d = d;
    return d;
}

static int cuda_rope(fb_backend_t *be, float *x, int64_t n_rows, int64_t ld, int n_heads,
                     int head_dim, const int32_t *pos, const fb_rope_t *rope)
{
    fcuda_t *c = (fcuda_t *)be;
    if (fb_rope_check(rope, head_dim) || n_rows > INT32_MAX)
        return -EINVAL;
    for (int64_t r = 0; r < n_rows; r++)
        if (pos[r] < 0)
            return -EINVAL;
    if (n_rows == 0)
        return c->err;
    const int32_t *dpos;
    int rc = upload_ints(c, pos, n_rows, &dpos);
    if (rc)
        return rc;
    const int half = rope->n_rot / 2;
    const float *factors = NULL;
    if (rope->freq_factors && !(factors = vec_of(c, rope->freq_factors, half)))
        return -EINVAL;
    /* YaRN: the table carries each pair's blend of the scale, and the kernels a scale of
     * 1 and the magnitude */
    const bool yarn = rope->ext_factor != 0.0f;
    float yv[4] = { 0, 0, 0, 0 }, dims[2];
    if (yarn) {
        fb_rope_corr_dims(rope, dims);
        yv[0] = rope->freq_scale;
        yv[1] = rope->ext_factor;
        yv[2] = dims[0];
        yv[3] = dims[1];
    }
    const float scale = yarn ? 1.0f : rope->freq_scale, mscale = fb_rope_mscale(rope);
    const double *freq = rope_table(c, rope->n_rot, rope->freq_base,
                                    factors ? (const float *)rope->freq_factors->src : NULL,
                                    factors, yv);
    if ((factors || yarn) && !freq) {
        fd_log(FD_LOG_ERROR, "cuda backend: cannot make the RoPE frequency table (%d factors%s)",
               half, yarn ? ", YaRN" : "");
        return FD_EBACKEND;
    }
    fcu_gemv_p *g = &c->pend.u.g;
    if (c->pend.kind == PEND_GEMV && !g->glu_out && !g->add_to && g->cp_n == 0 &&
        g->rope_n < 2 && rope->mode == FB_ROPE_ADJACENT && ld == g->n_out && n_rows == g->rows &&
        x >= g->y && x + (int64_t)n_heads * head_dim <= g->y + g->n_out &&
        (x - g->y) % 2 == 0 && head_dim % 2 == 0 &&
        (g->rope_n == 0 || (g->rope_pos == dpos && g->rope_hd == head_dim &&
                            g->rope_nrot == rope->n_rot && g->rope_base == rope->freq_base &&
                            g->rope_scale == scale && g->rope_freq == freq &&
                            g->rope_mscale == mscale &&
                            (x - g->y >= g->rope_c1[0] ||
                             x - g->y + (int64_t)n_heads * head_dim <= g->rope_c0[0])))) {
        /* Q|K|V product then RoPE of its Q (and K) columns: the product's epilogue rotates */
        int k = g->rope_n++;
        g->rope_c0[k] = (int)(x - g->y);
        g->rope_c1[k] = g->rope_c0[k] + n_heads * head_dim;
        g->rope_hd = head_dim;
        g->rope_nrot = rope->n_rot;
        g->rope_base = rope->freq_base;
        g->rope_scale = scale;
        g->rope_pos = dpos;
        g->rope_freq = freq;
        g->rope_mscale = mscale;
        return 0;
    }
    fcu_rope_p *q = &c->pend.u.r;
    if (c->pend.kind == PEND_ROPE && !q->x2 && q->pos == dpos && q->rows == n_rows &&
        q->head_dim == head_dim && q->mode == rope->mode && q->n_rot == rope->n_rot &&
        q->base == rope->freq_base && q->scale == scale && q->freq == freq &&
        q->mscale == mscale) {
        /* Q then K of the same rows: one launch, if the heads cannot overlap */
        const int64_t w1 = (int64_t)q->n_heads * head_dim, w2 = (int64_t)n_heads * head_dim;
        const int64_t dlt = x - q->x;
        bool apart = ld == q->ld ? (dlt >= w1 && dlt + w2 <= ld) || (-dlt >= w2 && -dlt + w1 <= ld)
                                 : !spans_overlap(x, ld, q->x, q->ld, n_rows, FD_MAX(w1, w2));
        if (apart) {
            q->x2 = x;
            q->ld2 = ld;
            q->n_heads2 = n_heads;
            int64_t total = n_rows * (q->n_heads + n_heads) * half;
            c->pend.grid = dim3((unsigned)((total + 255) / 256));
            return pend_flush(c);
        }
    }
    if ((rc = pend_flush(c)))
        return rc;
    fcu_rope_p p;
    memset(&p, 0, sizeof(p));
    p.x = x;
    p.pos = dpos;
    p.ld = ld;
    p.rows = (int)n_rows;
    p.n_heads = n_heads;
    p.head_dim = head_dim;
    p.mode = rope->mode;
    p.n_rot = rope->n_rot;
    p.base = rope->freq_base;
    p.scale = scale;
    p.freq = freq;
    p.mscale = mscale;
    dim3 grid((unsigned)((n_rows * n_heads * half + 255) / 256));
    if (!c->timing) {
        c->pend.kind = PEND_ROPE;
        c->pend.func = fcu_k_rope();
        c->pend.grid = grid;
        c->pend.block = dim3(256);
        c->pend.u.r = p;
        return 0;
    }
    time_begin(c, FB_OP_OTHER);
    rc = launch(c, fcu_k_rope(), grid, dim3(256), p);
    time_end(c);
    return rc;
}

/* This backend's limits (fb_attention has made the checks every backend needs): strides
 * the kernels hold in 32 bits, and the group and head sizes they were written for. */
static int check_attn(const fb_attn_t *a)
{
    if (a->ldq > INT32_MAX || a->ldo > INT32_MAX || a->ldkv > INT32_MAX || a->ring > INT32_MAX)
        return -EINVAL;
    /* typed caches: their rows are read in 16-bit pieces at least (an F32 cache: floats) */
    if ((a->type_k != GG_F32 && ((uintptr_t)a->k_data & 1)) ||
        (a->type_v != GG_F32 && ((uintptr_t)a->v_data & 1))) {
        fd_log(FD_LOG_ERROR, "cuda backend: attention over a typed cache at an odd address");
        return FD_EUNSUP;
    }
    if (a->n_head / a->n_head_kv > FCU_ATT_MAX_GROUP || a->head_dim > 256) {
        fd_log(FD_LOG_ERROR, "cuda backend: attention with %d query heads per KV head and "
               "head_dim %d (at most %d and 256)", a->n_head / a->n_head_kv, a->head_dim,
               FCU_ATT_MAX_GROUP);
        return FD_EUNSUP;
    }
    return 0;
}

/* The decode kernel (one query row per sequence, fused modes): splits of the context so that
 * the grid has about four blocks per SM with at least 32 positions each, more when a split
 * would hold over 256 positions, at most attn_splits (the best of those measured on the
 * H100, bench/cuda/kbench.cu); a lane group of lg lanes per position (head_dim / 4 pieces of
 * 16 bytes, nv per lane).  1: not for this kernel (a split would hold over 256 positions: the
 * general kernel streams very long contexts better). */
static int attn_dec(fcuda_t *c, fcu_att_p *p, int rows, int t_max)
{
    const int nc = p->head_dim / 4, nv = nc <= 32 ? 1 : 2;
    int lg = 1;
    while (lg < 32 && lg * nv < nc)
        lg *= 2;
    const int64_t per_split = (int64_t)p->n_head_kv * rows;
    int64_t want = (4 * (int64_t)c->prop.multiProcessorCount + per_split - 1) / per_split;
    want = FD_MIN(want, (int64_t)(t_max + 31) / 32);
    want = FD_MAX(want, (int64_t)(t_max + 255) / 256);
    want = FD_MAX((int64_t)1, FD_MIN(want, (int64_t)c->attn_splits));
    const int chunk = (int)((t_max + want - 1) / want);
    if (chunk > 256)
        return 1;
    p->lg = lg;
    p->chunk = chunk;
    p->max_split = (t_max + p->chunk - 1) / p->chunk;
    int rc;
    if (p->max_split > 1) {
        if ((rc = scratch(c, (void **)&c->part, &c->part_n,
                          (size_t)rows * p->n_head * p->max_split * (p->head_dim + 4) * sizeof(float),
                          false)) ||
            (rc = scratch(c, (void **)&c->cnt, &c->cnt_n,
                          (size_t)rows * p->n_head_kv * sizeof(int), true)))
            return rc;
    }
    p->part = c->part;
    p->counter = c->cnt;
    dim3 grid((unsigned)p->n_head_kv, (unsigned)rows, (unsigned)p->max_split);
    /* the prefetching kernel where the launch has at most two blocks per SM (its registers
     * allow two; at 8 sequences the plain one is faster: docs/gpu.md) */
    const int pf = (int64_t)p->n_head_kv * rows * p->max_split <= 2 * c->prop.multiProcessorCount;
    const int grp = p->n_head / p->n_head_kv;
    if (p->type_k != GG_F32)
        return launch(c, fcu_k_attention_dec_typed(p->type_k, nv, grp), grid, dim3(128), *p);
    return launch(c, fcu_k_attention_dec(nv, grp, pf), grid, dim3(128), *p);
}

/* Sequences [s0, s1) sharing head counts and mode: one launch (REF: three). */
static int attn_launch(fcuda_t *c, const fb_attn_t *a, int s0, int s1)
{
    fcu_att_p p;
    memset(&p, 0, sizeof(p));
    const fb_attn_t *a0 = &a[s0];
    int rows = 0, groups = 0, t_max = 1, rc;
    for (int s = s0; s < s1; s++) {
        fcu_att_seq *q = &p.s[s - s0];
        q->q = a[s].q;
        q->k = a[s].k;
        q->v = a[s].v;
        q->out = a[s].out;
        q->ldq = (int)a[s].ldq;
        q->ldkv = (int)a[s].ldkv;
        q->ldo = (int)a[s].ldo;
        q->n_q = a[s].n_q;
        q->row0 = rows;
        q->grp0 = groups;
        if ((rc = upload_ints(c, a[s].pos, a[s].n_q, &q->pos)))
            return rc;
        for (int i = 0; i < a[s].n_q; i++)
            t_max = FD_MAX(t_max, a[s].pos[i] + 1);
        q->T = a[s].n_q == 1 ? a[s].pos[0] + 1 : 0;
        q->ring_start = (int)a[s].ring_start;
        rows += a[s].n_q;
        groups += (a[s].n_q + FCU_ATT_QB - 1) / FCU_ATT_QB;
    }
    if (rows == 0)
        return 0;
    p.n_seq = s1 - s0;
    p.n_head = a0->n_head;
    p.n_head_kv = a0->n_head_kv;
    p.head_dim = a0->head_dim;
    p.mode = a0->mode;
    p.scale = a0->scale;
    p.window = a0->window;
    p.softcap = a0->softcap;
    p.ring = (int)a0->ring;
    p.type_k = a0->type_k;
    p.type_v = a0->type_v;
    p.sinks = a0->sinks;
    /* a window: the general kernel, which masks (both kernels soft-cap) */
    const bool gemma = p.window > 0;
    p.t_max = t_max;
    const bool typed = p.type_k != GG_F32 || p.type_v != GG_F32;
    if (p.mode != FB_SOFTMAX_REF && rows == s1 - s0 && p.head_dim % 4 == 0 && !gemma &&
        (!typed || (p.type_k == p.type_v && fcu_k_attention_dec_typed(p.type_k, 1, 1)))) {
        bool ok = true;
        for (int s = s0; s < s1; s++)
            ok &= a[s].n_q == 1 && aligned16(a[s].q) &&
                  (typed ? kv_aligned(p.type_k, a[s].k_data) && kv_aligned(p.type_v, a[s].v_data)
                         : a[s].ldkv % 4 == 0 && aligned16(a[s].k) && aligned16(a[s].v));
        if (ok && (rc = attn_dec(c, &p, rows, t_max)) <= 0)
            return rc;
    }
    /* splits of the context: smaller ones while the grid would leave SMs idle */
    int chunk = 128;
    while (chunk > 32 && (int64_t)p.n_head_kv * groups * ((t_max + chunk - 1) / chunk) <
                             (int64_t)c->prop.multiProcessorCount)
        chunk /= 2;
    p.vec4 = p.head_dim % 4 == 0;
    for (int s = s0; s < s1; s++)
        p.vec4 &= p.type_k == GG_F32 ? a[s].ldkv % 4 == 0 && aligned16(a[s].k) && aligned16(a[s].q)
                                     : kv_aligned(p.type_k, a[s].k_data);
    p.chunk = chunk;
    p.max_split = (t_max + chunk - 1) / chunk;
    const int hd = p.head_dim;
    if (p.max_split > 1) {
        if ((rc = scratch(c, (void **)&c->part, &c->part_n,
                          (size_t)rows * p.n_head * p.max_split * (hd + 2) * sizeof(float), false)) ||
            (rc = scratch(c, (void **)&c->cnt, &c->cnt_n,
                          (size_t)rows * p.n_head_kv * sizeof(int), true)))
            return rc;
    }
    if (p.mode == FB_SOFTMAX_REF &&
        (rc = scratch(c, (void **)&c->scores, &c->scores_n,
                      (size_t)rows * p.n_head * t_max * sizeof(float), false)))
        return rc;
    p.part = c->part;
    p.counter = c->cnt;
    p.scores = c->scores;
    dim3 grid((unsigned)p.n_head_kv, (unsigned)groups, (unsigned)p.max_split);
    if (p.mode != FB_SOFTMAX_REF)
        return launch(c, fcu_k_attention(0), grid, dim3(128), p);
    if ((rc = launch(c, fcu_k_attention(1), grid, dim3(128), p)) ||
        (rc = launch(c, fcu_k_attention(2), dim3((unsigned)p.n_head, (unsigned)rows), dim3(128), p)))
        return rc;
    return launch(c, fcu_k_attention(3), grid, dim3(128), p);
}

static int cuda_attention(fb_backend_t *be, const fb_attn_t *a, int n_seq)
{
    fcuda_t *c = (fcuda_t *)be;
    for (int s = 0; s < n_seq; s++) {
        int rc = check_attn(&a[s]);
        if (rc)
            return rc;
    }
    int rc = pend_flush(c);
    if (rc || c->err)
        return rc ? rc : c->err;
    time_begin(c, FB_OP_ATTN);
    for (int s0 = 0; s0 < n_seq && rc == 0;) {
        int s1 = s0 + 1;
        while (s1 < n_seq && s1 - s0 < FCU_ATT_MAX_SEQ && a[s1].n_head == a[s0].n_head &&
               a[s1].n_head_kv == a[s0].n_head_kv && a[s1].head_dim == a[s0].head_dim &&
               a[s1].mode == a[s0].mode && a[s1].scale == a[s0].scale &&
               a[s1].window == a[s0].window && a[s1].softcap == a[s0].softcap &&
               a[s1].ring == a[s0].ring && a[s1].type_k == a[s0].type_k &&
               a[s1].type_v == a[s0].type_v && a[s1].sinks == a[s0].sinks)
            s1++;
        rc = attn_launch(c, a, s0, s1);
        s0 = s1;
    }
    time_end(c);
    return rc;
}

/* out = act(gate) * up as a launch of its own (fcu_ew_p's layout), after what is pending. */
static int glu_launch(fcuda_t *c, const void *func, const float *gate, const float *up,
                      int64_t n_rows, int64_t n, int64_t ld_in, float *out)
{
    int rc = pend_flush(c);
    if (rc)
        return rc;
    fcu_ew_p p = {out, gate, up, n, n_rows, ld_in, n};
    time_begin(c, FB_OP_OTHER);
    rc = launch(c, func, dim3(blocks_for(c, n_rows * n, 256)), dim3(256), p);
    time_end(c);
    return rc;
}

static int cuda_silu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                         int64_t n, int64_t ld_in, float *out)
{
    fcuda_t *c = (fcuda_t *)be;
    if (n_rows * n == 0)
        return c->err;
    fcu_gemv_p *g = &c->pend.u.g;
    if (c->pend.kind == PEND_GEMV && !g->add_to && !g->rope_n && !g->cp_n && g->rows == n_rows &&
        gate == g->y &&
        up == g->y + n && ld_in == g->n_out && 2 * n == g->n_out &&
        !overlap(out, n_rows * n, g->x, (int64_t)g->rows * g->n_in) &&
        !overlap(out, n_rows * n, g->y, (int64_t)g->rows * g->n_out)) {
        /* the gate|up product writes silu(gate) * up itself */
        int rpb, threads;
        g->glu_out = out;
        g->glu_n = (int)n;
        c->pend.func = gemv_kernel(c, c->pend.wtype, (int)n_rows, true, true, g->n_in, (int)n,
                                   &rpb, &threads);
        c->pend.grid = dim3((unsigned)((n + rpb - 1) / rpb));
        c->pend.block = dim3(threads);
        return pend_flush(c);
    }
    return glu_launch(c, fcu_k_silu_mul(), gate, up, n_rows, n, ld_in, out);
}

/* Gemma's gating: a launch of its own (the gate|up product's GLU epilogue is SiLU's). */
static int cuda_gelu_mul(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                         int64_t n, int64_t ld_in, float *out)
{
    fcuda_t *c = (fcuda_t *)be;
    if (n_rows * n == 0)
        return c->err;
    return glu_launch(c, fcu_k_gelu_mul(), gate, up, n_rows, n, ld_in, out);
}

/* gpt-oss's gating: a launch of its own. */
static int cuda_swiglu_oai(fb_backend_t *be, const float *gate, const float *up, int64_t n_rows,
                           int64_t n, int64_t ld_in, float alpha, float limit, float *out)
{
    fcuda_t *c = (fcuda_t *)be;
    if (n_rows * n == 0)
        return c->err;
    int rc = pend_flush(c);
    if (rc)
        return rc;
    fcu_oai_p p = {{out, gate, up, n, n_rows, ld_in, n}, alpha, limit};
    time_begin(c, FB_OP_OTHER);
    rc = launch(c, fcu_k_swiglu_oai(), dim3(blocks_for(c, n_rows * n, 256)), dim3(256), p);
    time_end(c);
    return rc;
}

/* The embedding scale (which = 0) and the logits' soft-cap (1). */
static int scal_launch(fcuda_t *c, int which, float *y, int64_t n, float s)
{
    if (n == 0)
        return c->err;
    int rc = pend_flush(c);
    if (rc)
        return rc;
    fcu_scal_p p = {y, n, s};
    time_begin(c, FB_OP_OTHER);
    rc = launch(c, which ? fcu_k_softcap() : fcu_k_scale(), dim3(blocks_for(c, n, 256)),
                dim3(256), p);
    time_end(c);
    return rc;
}

static int cuda_scale(fb_backend_t *be, float *y, int64_t n, float s)
{
    return scal_launch((fcuda_t *)be, 0, y, n, s);
}

static int cuda_softcap(fb_backend_t *be, float *y, int64_t n, float cap)
{
    return scal_launch((fcuda_t *)be, 1, y, n, cap);
}

static int cuda_add(fb_backend_t *be, float *y, const float *x, int64_t n)
{
    fcuda_t *c = (fcuda_t *)be;
    if (n == 0)
        return c->err;
    fcu_gemv_p *g = &c->pend.u.g;
    if (c->pend.kind == PEND_GEMV && !g->add_to && !g->glu_out && !g->rope_n && !g->cp_n &&
        x == g->y && n == (int64_t)g->rows * g->n_out &&
        !overlap(y, n, g->y, n) && !overlap(y, n, g->x, (int64_t)g->rows * g->n_in)) {
        g->add_to = y; /* the residual add rides on the product's epilogue */
        return pend_flush(c);
    }
    int rc = pend_flush(c);
    if (rc)
        return rc;
    const bool v4 = n % 4 == 0 && aligned16(x) && aligned16(y);
    fcu_ew_p p = {y, x, NULL, n, 1, 0, 0};
    time_begin(c, FB_OP_OTHER);
    rc = launch(c, fcu_k_add(v4), dim3(blocks_for(c, v4 ? n / 4 : n, 256)), dim3(256), p);
    time_end(c);
    return rc;
}

static int cuda_get_rows(fb_backend_t *be, const fb_weight_t *w, const int32_t *ids, int64_t n,
                         float *out)
{
    fcuda_t *c = (fcuda_t *)be;
    const fcuda_weight_t *cw = weight_of(c, w);
    if (!cw || n > INT32_MAX)
        return -EINVAL;
    for (int64_t r = 0; r < n; r++)
        if (ids[r] < 0 || ids[r] >= w->n_out)
            return -EINVAL;
    if (n == 0)
        return c->err;
    int rc = pend_flush(c);
    if (rc)
        return rc;
    time_begin(c, FB_OP_OTHER);
    const int32_t *dids;
    rc = upload_ints(c, ids, n, &dids);
    if (rc == 0) {
        fcu_getrows_p p = {cw->dev->d, cw->dev->scale, dids, out, (int)w->n_in};
        /* a row over several blocks (1024 elements each): one row is a whole decode step's
         * get_rows, and one block of it took 9 us at 4096 wide */
        const unsigned by = (unsigned)FD_MIN((w->n_in + 1023) / 1024, (int64_t)64);
        rc = launch(c, fcu_k_get_rows(cw->dev->wtype), dim3((unsigned)n, by), dim3(256), p);
    }
    time_end(c);
    return rc;
}

/* Mixture of experts (fusion/plan.c): the ids (and weights) go up through the staging area
 * as get_rows' ids do; the wrappers (backend.c) checked them. */
static int cuda_gather_rows(fb_backend_t *be, float *dst, const float *src, int64_t ld_src,
                            const int32_t *ids, int64_t n_rows, int64_t n)
{
    fcuda_t *c = (fcuda_t *)be;
    if (n_rows > INT32_MAX)
        return -EINVAL;
    int rc = pend_flush(c);
    if (rc)
        return rc;
    time_begin(c, FB_OP_OTHER);
    const int32_t *dids;
    rc = upload_ints(c, ids, n_rows, &dids);
    if (rc == 0) {
        fcu_moe_p p = {dst, src, dids, NULL, ld_src, n, (int)n_rows};
        dim3 grid((unsigned)((n + 255) / 256), (unsigned)FD_MIN(n_rows, (int64_t)65535));
        rc = launch(c, fcu_k_gather_rows(), grid, dim3(256), p);
    }
    time_end(c);
    return rc;
}

static int cuda_scatter_add_rows(fb_backend_t *be, float *dst, int64_t ld_dst,
                                 const float *src, const int32_t *ids, const float *w,
                                 int64_t n_rows, int64_t n)
{
    fcuda_t *c = (fcuda_t *)be;
    if (n_rows > INT32_MAX)
        return -EINVAL;
    int rc = pend_flush(c);
    if (rc)
        return rc;
    time_begin(c, FB_OP_OTHER);
    const int32_t *dids, *dw;
    static_assert(sizeof(float) == sizeof(int32_t), "weights staged as 32-bit words");
    rc = upload_ints(c, ids, n_rows, &dids);
    if (rc == 0)
        rc = upload_ints(c, (const int32_t *)(const void *)w, n_rows, &dw);
    if (rc == 0) {
        fcu_moe_p p = {dst, src, dids, (const float *)(const void *)dw, ld_dst, n, (int)n_rows};
        rc = launch(c, fcu_k_scatter_add_rows(), dim3((unsigned)((n + 127) / 128)), dim3(128),
                    p);
    }
    time_end(c);
    return rc;
}

/* Whether copy (dst, src) may be merged after the copies already held in q: no copy may read
 * what another writes, nor two write the same floats. */
static bool copy_independent(const fcu_copy_p *q, int nseg, const float *dst, int64_t ld_dst,
                             const float *src, int64_t ld_src, int64_t rows, int64_t n)
{
    for (int k = 0; k < nseg; k++) {
        int64_t r = FD_MAX(rows, (int64_t)q->rows[k]);
        if (spans_overlap(src, ld_src, q->dst[k], q->ld_dst[k], r, n) ||
            spans_overlap(dst, ld_dst, q->src[k], q->ld_src[k], r, n) ||
            spans_overlap(dst, ld_dst, q->dst[k], q->ld_dst[k], r, n))
            return false;
    }
    return true;
}

static int cuda_copy2d(fb_backend_t *be, float *dst, int64_t ld_dst, const float *src,
                       int64_t ld_src, int64_t n_rows, int64_t n)
{
    fcuda_t *c = (fcuda_t *)be;
    if (n_rows * n == 0)
        return c->err;
    fcu_gemv_p *g = &c->pend.u.g;
    const int64_t off = src - g->y, r0 = off >= 0 ? off / FD_MAX(g->n_out, 1) : -1;
    const int64_t c0 = off >= 0 ? off % FD_MAX(g->n_out, 1) : -1;
    if (c->pend.kind == PEND_GEMV && !g->glu_out && !g->add_to && off >= 0 &&
        ld_src == g->n_out && r0 + n_rows <= g->rows && c0 + n <= g->n_out &&
        !overlap(dst, (n_rows - 1) * ld_dst + n, g->y, (int64_t)g->rows * g->n_out) &&
        !overlap(dst, (n_rows - 1) * ld_dst + n, g->x, (int64_t)g->rows * g->n_in)) {
        int k = 0;
        while (k < g->cp_n && !(g->cp_c0[k] == c0 && g->cp_c1[k] == c0 + n))
            k++;
        bool free_rows = k < 2;
        for (int64_t r = r0; free_rows && k < g->cp_n && r < r0 + n_rows; r++)
            free_rows = !g->cp_dst[k][r];
        if (free_rows) {
            /* K and V rows into the cache, written by the product's epilogue */
            if (k == g->cp_n) {
                g->cp_n++;
                g->cp_c0[k] = (int)c0;
                g->cp_c1[k] = (int)(c0 + n);
            }
            for (int64_t r = r0; r < r0 + n_rows; r++)
                g->cp_dst[k][r] = dst + (r - r0) * ld_dst;
            return 0;
        }
    }
    fcu_copy_p *q = &c->pend.u.c;
    const int nseg = (int)c->pend.grid.z;
    if (c->pend.kind == PEND_COPY && nseg < FCU_COPY_MAX && q->n == n && n_rows <= 65535 &&
        copy_independent(q, nseg, dst, ld_dst, src, ld_src, n_rows, n)) {
        q->dst[nseg] = dst; /* the K and V rows of every sequence: one launch */
        q->src[nseg] = src;
        q->ld_dst[nseg] = ld_dst;
        q->ld_src[nseg] = ld_src;
        q->rows[nseg] = (int)n_rows;
        c->pend.grid.z = nseg + 1;
        c->pend.grid.y = (unsigned)FD_MAX((int64_t)c->pend.grid.y, n_rows);
        return 0;
    }
    int rc = pend_flush(c);
    if (rc)
        return rc;
    time_begin(c, FB_OP_OTHER);
    for (int64_t r0b = 0; r0b < n_rows && rc == 0; r0b += 65535) {
        int64_t rows = FD_MIN((int64_t)65535, n_rows - r0b);
        fcu_copy_p p;
        memset(&p, 0, sizeof(p));
        p.dst[0] = dst + r0b * ld_dst;
        p.src[0] = src + r0b * ld_src;
        p.ld_dst[0] = ld_dst;
        p.ld_src[0] = ld_src;
        p.rows[0] = (int)rows;
        p.n = n;
        dim3 grid((unsigned)((n + 255) / 256), (unsigned)rows, 1);
        if (n_rows == rows && !c->timing) {
            c->pend.kind = PEND_COPY;
            c->pend.func = fcu_k_copy2d();
            c->pend.grid = grid;
            c->pend.block = dim3(256);
            c->pend.u.c = p;
            break;
        }
        rc = launch(c, fcu_k_copy2d(), grid, dim3(256), p);
    }
    time_end(c);
    return rc;
}

/* ---- typed KV caches ------------------------------------------------------------------- */

/* Every cache type at any head size: the kernels read each type (cuda_kernels.cu's kv_ld4 and
 * kv_ld1), the decode kernel K and V of one type, other pairs the general kernel. */
static int cuda_kv_check(fb_backend_t *be, int type_k, int type_v, int head_dim)
{
    (void)be;
    return fb_kv_type_valid(type_k) && fb_kv_type_valid(type_v) && head_dim > 0 &&
                   head_dim <= 256
               ? 0
               : FD_EUNSUP;
}

/* Rounded on the device as quants.c rounds (k_kv_store), so the cache holds the CPU's bytes.
 * The stores of one layer (K and V of every sequence of a batch) wait as one launch until an
 * op that is not such a store, as cuda_copy2d's copies do. */
static int cuda_kv_store(fb_backend_t *be, void *dst, int type, const float *src, int64_t ld_src,
                         int64_t n_rows, int n_head_kv, int head_dim)
{
    fcuda_t *c = (fcuda_t *)be;
    if (n_rows == 0)
        return c->err;
    if (n_rows > INT32_MAX / 2 || head_dim > 256 ||
        fcu_kvst_units(type, (int)n_rows, n_head_kv, head_dim) > ((int64_t)1 << 40))
        return -EINVAL;
    const size_t bytes = (size_t)n_rows * fb_kv_row_bytes(type, n_head_kv, head_dim);
    const int64_t src_n = (n_rows - 1) * ld_src + (int64_t)n_head_kv * head_dim;
    const int64_t units = fcu_kvst_units(type, (int)n_rows, n_head_kv, head_dim);
    const unsigned gx = blocks_for(c, units, 128);
    fcu_kvst_p *q = &c->pend.u.k;
    const int np = (int)c->pend.grid.y;
    if (c->pend.kind == PEND_KVST && np < FCU_KVST_MAX && q->n_head_kv == n_head_kv &&
        q->head_dim == head_dim) {
        /* one launch, as long as no part reads what another writes */
        bool indep = true;
        for (int k = 0; k < np && indep; k++) {
            const size_t kb = (size_t)q->rows[k] * fb_kv_row_bytes(q->type[k], n_head_kv, head_dim);
            const int64_t kn = (q->rows[k] - 1) * q->ld_src[k] + (int64_t)n_head_kv * head_dim;
            const char *d0 = (const char *)dst, *d1 = (const char *)q->dst[k];
            indep = !(d0 < d1 + kb && d1 < d0 + bytes) &&
                    !overlap((const float *)dst, (int64_t)((bytes + 3) / 4), q->src[k], kn) &&
                    !overlap((const float *)q->dst[k], (int64_t)((kb + 3) / 4), src, src_n);
        }
        if (indep) {
            q->dst[np] = dst;
            q->src[np] = src;
            q->ld_src[np] = ld_src;
            q->rows[np] = (int)n_rows;
            q->type[np] = type;
            c->pend.grid.y = np + 1;
            c->pend.grid.x = FD_MAX(c->pend.grid.x, gx);
            return 0;
        }
    }
    int rc = pend_flush(c);
    if (rc)
        return rc;
    fcu_kvst_p p;
    memset(&p, 0, sizeof(p));
    p.dst[0] = dst;
    p.src[0] = src;
    p.ld_src[0] = ld_src;
    p.rows[0] = (int)n_rows;
    p.type[0] = type;
    p.n_head_kv = n_head_kv;
    p.head_dim = head_dim;
    if (!c->timing) {
        c->pend.kind = PEND_KVST;
        c->pend.func = fcu_k_kv_store();
        c->pend.grid = dim3(gx, 1);
        c->pend.block = dim3(128);
        c->pend.u.k = p;
        return 0;
    }
    time_begin(c, FB_OP_OTHER);
    rc = launch(c, fcu_k_kv_store(), dim3(gx, 1), dim3(128), p);
    time_end(c);
    return rc;
}

/* ---- markers, options, object ---------------------------------------------------------- */

static void cuda_mark(fb_backend_t *be, int what, int arg)
{
    fcuda_t *c = (fcuda_t *)be;
    if (what == FB_MARK_STEP_BEGIN) {
        flush(c);
        if (c->pending && cudaStreamSynchronize(c->st) == cudaSuccess)
            c->pending = false; /* the staging area is reused from its start */
        if (!c->pending) {
            c->stage_off = 0;
            c->n_up = c->up_next = 0;
        }
        c->in_step = true;
        c->step_rows = arg;
        c->seg = 0;
        c->st_on = c->steptime && !c->pending && cudaEventRecord(c->st_ev[0], c->st) == cudaSuccess;
        if (c->st_on) {
            c->st_h0 = fd_now_s();
            c->st_first = 0;
            c->st_seg = 0;
        }
        segment_begin(c);
    } else if (what == FB_MARK_LAYER) {
        /* the first segment ends after layer 0, the others every graph_layers layers from
         * there: the GPU starts on a short segment while the host records the next one */
        if (c->in_step && c->graph_layers > 0 && arg > 0 &&
            (arg == 1 || (arg - 1) % c->graph_layers == 0)) {
            flush(c);
            c->seg++;
            segment_begin(c);
        }
    } else if (what == FB_MARK_STEP_END) {
        flush(c);
        c->in_step = false;
        c->last_rows = c->step_rows;
    }
}

static int parse_option(fcuda_t *c, const char *o, char *err, size_t errlen)
{
    const char *eq = strchr(o, '=');
    const char *v = eq ? eq + 1 : "";
    size_t kl = eq ? (size_t)(eq - o) : strlen(o);
    char *end = NULL;
    long n = strtol(v, &end, 10);
    bool num = *v && !*end, b01 = num && (n == 0 || n == 1);
    if (kl == 9 && !strncmp(o, "gemm_rows", kl) && num && n >= 1 && n <= 1 << 20) {
        c->gemm_rows = (int)n;
    } else if (kl == 9 && !strncmp(o, "gemm_rows", kl) && !strcmp(v, "auto")) {
        c->gemm_rows = 0;
    } else if (kl == 2 && !strncmp(o, "mr", kl) && num && n >= 0 && n <= 2) {
        c->mr = (int)n;
    } else if (kl == 6 && !strncmp(o, "graphs", kl) && b01) {
        c->graphs = n;
    } else if (kl == 12 && !strncmp(o, "graph_layers", kl) && num && n >= 0 && n <= 1 << 20) {
        c->graph_layers = (int)n;
    } else if (kl == 6 && !strncmp(o, "timing", kl) && b01) {
        c->timing = n;
    } else if (kl == 6 && !strncmp(o, "nonorm", kl) && b01) {
        c->nonorm = n;
    } else if (kl == 3 && !strncmp(o, "pdl", kl) && num && n >= 0 && n <= 2) {
        c->pdl = (int)n;
    } else if (kl == 10 && !strncmp(o, "pdl_blocks", kl) && num && n >= 0 && n <= 1 << 20) {
        c->pdl_blocks = (int)n;
    } else if (kl == 5 && !strncmp(o, "stage", kl) && num && n >= 0 && n <= 2) {
        c->stage = (int)n;
    } else if (kl == 8 && !strncmp(o, "steptime", kl) && b01) {
        st_report(c);
        c->steptime = n;
    } else if (kl == 11 && !strncmp(o, "attn_splits", kl) && num && n >= 1 &&
               n <= FCU_ATTD_MAX_SPLIT) {
        c->attn_splits = (int)n;
    } else {
        snprintf(err, errlen, "cuda backend: bad option \"%s\" (gemm_rows=N|auto, mr=0|1|2, "
                 "graphs=0|1, graph_layers=N, timing=0|1, nonorm=0|1, pdl=0|1|2, pdl_blocks=N, "
                 "stage=0|1|2, steptime=0|1, attn_splits=1..%d)", o,
                 FCU_ATTD_MAX_SPLIT);
        return FD_ECONFIG;
    }
    return 0;
}

static int cuda_set_option(fb_backend_t *be, const char *kv)
{
    fcuda_t *c = (fcuda_t *)be;
    char err[200];
    int rc = flush(c);
    if (rc)
        return rc;
    const int pdl = c->pdl, pdl_blocks = c->pdl_blocks;
    const int mr = c->mr;
    rc = parse_option(c, kv, err, sizeof(err));
    if (rc)
        fd_log(FD_LOG_WARN, "%s", err);
    /* a graph's edges follow the launch rule it was built under, and its kernels the mr
     * option, which its key does not hold; flush ended the segment, so no graph is in use */
    if (c->pdl != pdl || c->pdl_blocks != pdl_blocks || c->mr != mr)
        for (int i = 0; i < MAX_GRAPHS; i++)
            graph_drop(&c->gr[i]);
    return rc;
}

static void cuda_describe(fb_backend_t *be, char *buf, size_t len)
{
    const fcuda_t *c = (const fcuda_t *)be;
    char from[96];
    if (c->gemm_rows > 0)
        snprintf(from, sizeof(from), "%d rows", c->gemm_rows);
    else if (mr_all(c))
        snprintf(from, sizeof(from), "%d rows (2-%d on the multi-row kernel)", GEMV_MR_MAX + 1,
                 GEMV_MR_MAX);
    else if (c->mr && c->tc)
        snprintf(from, sizeof(from), "%d rows (16-bit weights) or %d (Q8_0's %d-%d on the "
                 "multi-row kernel)", GEMM_ROWS_16, GEMM_ROWS_OTHER, MR_FROM_Q8, GEMV_MR_MAX);
    else
        snprintf(from, sizeof(from), "%d rows (16-bit weights) or %d", GEMM_ROWS_16,
                 GEMM_ROWS_OTHER);
    snprintf(buf, len, "cuda: device %d %s (sm_%d%d, %d SMs, %.1f GiB), cuBLAS from %s, "
             "graphs %s (segments of %d layers; %llu built, %llu launched, %llu nodes patched)%s",
             c->dev, c->prop.name, c->prop.major, c->prop.minor, c->prop.multiProcessorCount,
             c->prop.totalGlobalMem / 1073741824.0, from,
             c->graphs && !c->timing ? "on" : "off", c->graph_layers,
             (unsigned long long)c->n_build, (unsigned long long)c->n_launch,
             (unsigned long long)c->n_patch, c->timing ? ", timing every op" : "");
}

static void cuda_destroy(fb_backend_t *be)
{
    fcuda_t *c = (fcuda_t *)be;
    flush(c);
    cudaStreamSynchronize(c->st);
    for (int i = 0; i < MAX_GRAPHS; i++)
        graph_drop(&c->gr[i]);
    for (int i = 0; i < c->n_wc; i++) {
        cudaFree(c->wc[i]->d);
        cudaFree(c->wc[i]->scale);
        free(c->wc[i]);
    }
    free(c->wc);
    for (int k = 0; k < c->n_rf; k++) {
        cudaFree(c->rf[k].d);
        free(c->rf[k].hf);
    }
    void *dev[] = {c->stage_d, c->conv, c->deq, c->scales, c->part, c->cnt, c->scores};
    for (size_t i = 0; i < FD_ARRAY_LEN(dev); i++)
        cudaFree(dev[i]);
    cudaFreeHost(c->stage_h);
    for (int k = 0; k < 2; k++) {
        cudaFreeHost(c->pin[k]);
        if (c->pin_ev[k])
            cudaEventDestroy(c->pin_ev[k]);
    }
    for (int k = 0; k < DH_PIECES; k++)
        if (c->dh_ev[k])
            cudaEventDestroy(c->dh_ev[k]);
    for (int k = 0; k < 2 + MAX_SEGS; k++)
        if (c->st_ev[k])
            cudaEventDestroy(c->st_ev[k]);
    if (c->st_d2h)
        cudaEventDestroy(c->st_d2h);
    for (int i = 0; i < c->n_ev; i++)
        cudaEventDestroy(c->evpool[i]);
    free(c->evpool);
    free(c->tev);
    free(c->log);
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->st)
        cudaStreamDestroy(c->st);
    free(c);
}

static const fb_ops_t cuda_ops = {
    /* .name = */ "cuda",
    /* .destroy = */ cuda_destroy,
    /* .alloc = */ cuda_alloc,
    /* .free = */ cuda_free,
    /* .to_device = */ cuda_to_device,
    /* .to_host = */ cuda_to_host,
    /* .sync = */ cuda_sync,
    /* .weight_prepare = */ cuda_weight_prepare,
    /* .weight_release = */ cuda_weight_release,
    /* .matmul = */ cuda_matmul,
    /* .rmsnorm = */ cuda_rmsnorm,
    /* .layernorm = */ cuda_layernorm,
    /* .rope = */ cuda_rope,
    /* .attention = */ cuda_attention,
    /* .silu_mul = */ cuda_silu_mul,
    /* .add = */ cuda_add,
    /* .get_rows = */ cuda_get_rows,
    /* .copy2d = */ cuda_copy2d,
    /* .mark = */ cuda_mark,
    /* .describe = */ cuda_describe,
    /* .set_option = */ cuda_set_option,
    /* .host_weights = */ false,
    /* .roof = */ NULL,
    /* .host_alloc = */ cuda_host_alloc,
    /* .host_free = */ cuda_host_free,
    /* .gelu_mul = */ cuda_gelu_mul,
    /* .scale = */ cuda_scale,
    /* .softcap = */ cuda_softcap,
    /* .attn_window = */ true,
    /* .gather_rows = */ cuda_gather_rows,
    /* .scatter_add_rows = */ cuda_scatter_add_rows,
    /* .kv_check = */ cuda_kv_check,
    /* .kv_store = */ cuda_kv_store,
    /* .matmul_group = */ NULL,
    /* .attn_ring = */ true,
    /* .attn_sinks = */ true,
    /* .swiglu_oai = */ cuda_swiglu_oai,
};

#define CKC(call)                                                                              \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            snprintf(err, errlen, "cuda backend: %s failed: %s", #call, cudaGetErrorString(e_)); \
            rc = FD_EBACKEND;                                                                  \
            goto fail;                                                                         \
        }                                                                                      \
    } while (0)

extern "C" int fb_cuda_create(const fb_config_t *cfg, fb_backend_t **out, char *err,
                              size_t errlen)
{
    char ebuf[1];
    if (!err || !errlen) {
        err = ebuf;
        errlen = sizeof(ebuf);
    }
    int n_dev = 0, rc = 0;
    cudaError_t e = cudaGetDeviceCount(&n_dev);
    if (e != cudaSuccess || n_dev == 0) {
        cudaGetLastError();
        snprintf(err, errlen, "cuda backend: no CUDA device (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return FD_EBACKEND;
    }
    int dev = cfg ? cfg->device : 0;
    if (dev < 0 || dev >= n_dev) {
        snprintf(err, errlen, "cuda backend: no device %d (this machine has %d)", dev, n_dev);
        return FD_ECONFIG;
    }
    fcuda_t *c = (fcuda_t *)calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->base.ops = &cuda_ops;
    c->dev = dev;
    c->gemm_rows = 0;
    c->mr = 1;
    c->graphs = true;
    c->graph_layers = 2;
    c->pdl = 2; /* measured: a gain in one-row steps, a loss at 8 rows (docs/gpu.md) */
    c->pdl_blocks = -1;
    c->attn_splits = 32;
    c->stage = 1;
    for (const char *const *o = cfg ? cfg->options : NULL; o && *o; o++)
        if ((rc = parse_option(c, *o, err, errlen)))
            goto fail;
    CKC(cudaSetDevice(dev));
    CKC(cudaGetDeviceProperties(&c->prop, dev));
    c->tc = c->prop.major >= 8;
    CKC(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking));
    CKC(fcu_gemv_init());
    CKC(cudaHostAlloc((void **)&c->stage_h, STAGE_BYTES, cudaHostAllocDefault));
    CKC(cudaMalloc((void **)&c->stage_d, STAGE_BYTES));
    for (int k = 0; k < 2; k++) {
        CKC(cudaHostAlloc((void **)&c->pin[k], PIN_BYTES, cudaHostAllocDefault));
        CKC(cudaEventCreateWithFlags(&c->pin_ev[k], cudaEventDisableTiming));
    }
    for (int k = 0; k < DH_PIECES; k++)
        CKC(cudaEventCreateWithFlags(&c->dh_ev[k], cudaEventDisableTiming));
    for (int k = 0; k < 2 + MAX_SEGS; k++)
        CKC(cudaEventCreate(&c->st_ev[k]));
    CKC(cudaEventCreate(&c->st_d2h));
    {
        cublasStatus_t s = cublasCreate(&c->blas);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasSetStream(c->blas, c->st);
        if (s != CUBLAS_STATUS_SUCCESS) {
            snprintf(err, errlen, "cuda backend: cuBLAS: %s", cublasGetStatusString(s));
            rc = FD_EBACKEND;
            goto fail;
        }
    }
    *out = &c->base;
    return 0;

fail:
    cuda_destroy(&c->base);
    return rc;
}
