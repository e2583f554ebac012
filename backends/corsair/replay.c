/* replay.c: fusion/plan.c's decoder step as a stream of timing-model ops (replay.h).  The
 * order of the calls and the ready time of every buffer follow the plan and the corsair
 * backend exactly (the backend tracks readiness per allocation: the plan's activation
 * buffers, and one K and one V cache per layer shared by all sequences), so both give the
 * same device time to the last bit. */
#include "backends/corsair/replay.h"

#include <string.h>

#include "common/fd.h"

static const cs_llama_shape_t shapes[] = {
    { "stories260K", 5, 64, 172, 8, 4, 8, 512, 64 * 4.0 },
    { "Llama-2-7B", 32, 4096, 11008, 32, 32, 128, 32000, 4096 * 2.0 },
    { "Llama-3-8B", 32, 4096, 14336, 32, 8, 128, 128256, 4096 * 2.0 },
    { "Llama-2-70B", 80, 8192, 28672, 64, 8, 128, 32000, 8192 * 2.0 },
    { "Llama-3-70B", 80, 8192, 28672, 64, 8, 128, 128256, 8192 * 2.0 },
};

const cs_llama_shape_t *cs_llama_shape_at(int i)
{
    return i >= 0 && i < (int)FD_ARRAY_LEN(shapes) ? &shapes[i] : NULL;
}

const cs_llama_shape_t *cs_llama_shape(const char *name)
{
    for (size_t i = 0; name && i < FD_ARRAY_LEN(shapes); i++)
        if (strcmp(shapes[i].name, name) == 0)
            return &shapes[i];
    return NULL;
}

cs_model_shape_t cs_replay_model_shape(const cs_llama_shape_t *m, const cs_params_t *p,
                                       int n_seq, int64_t n_ctx)
{
    const double E = m->n_embd, F = m->n_ff, NQ = (double)m->n_head * m->head_dim;
    const double NKV = (double)m->n_head_kv * m->head_dim;
    double per_layer = E * (NQ + 2 * NKV) + NQ * E + 3 * E * F;
    cs_model_shape_t s = {
        .n_layer = m->n_layer,
        .dimc_weight_bytes = (m->n_layer * per_layer + E * m->n_vocab) * p->v[CS_P_WBYTES],
        .kv_bytes = 2.0 * m->n_layer * NKV * (double)n_ctx * n_seq * p->v[CS_P_ABYTES],
    };
    return s;
}

/* Ready times of the plan's buffers (plan.c's names). */
typedef struct bufs {
    double x, xn, qkv, att, tmp, gu, h, hx, hxn, logits;
} bufs_t;

/* An op wrote buffer *b, done at t: the buffer is ready when its last writer is (the unfused
 * plan's Q, K and V products write parts of one buffer), as the backend tracks it. */
static double wrote(double *b, double t)
{
    return *b = FD_MAX(*b, t);
}

double cs_replay_step(cs_sim_t *s, const cs_llama_shape_t *m, const cs_step_t *st)
{
    if (!cs_sim_mapped(s)) {
        cs_model_shape_t ms = { .n_layer = m->n_layer };
        cs_sim_map(s, &ms);
    }
    const int64_t R = (int64_t)st->n_seq * st->rows, E = m->n_embd, F = m->n_ff;
    const int64_t NQ = (int64_t)m->n_head * m->head_dim;
    const int64_t NKV = (int64_t)m->n_head_kv * m->head_dim;
    const int defer = st->fused ? FB_NORM_RMS : FB_NORM_NONE;
    const int mode = st->fused ? st->softmax_mode : FB_SOFTMAX_REF;
    const int H = m->n_head, HKV = m->n_head_kv, HD = m->head_dim;
    cs_attn_seq_t seqs[1024];
    const int n_seq = FD_MIN(st->n_seq, (int)FD_ARRAY_LEN(seqs));
    for (int i = 0; i < n_seq; i++)
        seqs[i] = (cs_attn_seq_t){ st->rows, st->past + st->rows - 1 };
    /* every buffer was last written in an earlier step, before the device clock */
    bufs_t b = { 0 };
    double kc = 0, vc = 0, residual = 0;

    const double t0 = cs_sim_now(s);
    cs_sim_step_begin(s, (int)R);
    wrote(&b.x, cs_sim_get_rows(s, cs_sim_now(s), R, m->embd_row_bytes));
    for (int l = 0; l < m->n_layer; l++) {
        cs_sim_layer(s, l, residual);
        kc = vc = 0; /* each layer has its own cache buffers, written in earlier steps */
        double in = b.x;
        if (!st->fused)
            in = wrote(&b.xn, cs_sim_norm(s, b.x, FB_NORM_RMS, R, E));
        if (st->fused) {
            wrote(&b.qkv, cs_sim_matmul(s, in, R, E, NQ + 2 * NKV, defer, false, "attn_qkv"));
        } else {
            wrote(&b.qkv, cs_sim_matmul(s, in, R, E, NQ, defer, false, "attn_q"));
            wrote(&b.qkv, cs_sim_matmul(s, in, R, E, NKV, defer, false, "attn_k"));
            wrote(&b.qkv, cs_sim_matmul(s, in, R, E, NKV, defer, false, "attn_v"));
        }
        wrote(&b.qkv, cs_sim_rope(s, b.qkv, R, H, HD));
        wrote(&b.qkv, cs_sim_rope(s, b.qkv, R, HKV, HD));
        for (int i = 0; i < st->n_seq; i++) {
            wrote(&kc, cs_sim_copy(s, FD_MAX(b.qkv, kc), st->rows, NKV, true));
            wrote(&vc, cs_sim_copy(s, FD_MAX(b.qkv, vc), st->rows, NKV, true));
        }
        double ready = FD_MAX(FD_MAX(kc, vc), b.qkv);
        wrote(&b.att, cs_sim_attention(s, ready, seqs, n_seq, H, HKV, HD, mode));
        wrote(&b.tmp, cs_sim_matmul(s, b.att, R, NQ, E, FB_NORM_NONE, true, "attn_output"));
        wrote(&b.x, cs_sim_add(s, FD_MAX(b.tmp, b.x), R * E));
        residual = (double)(R * E) * sizeof(float);

        in = b.x;
        if (!st->fused)
            in = wrote(&b.xn, cs_sim_norm(s, b.x, FB_NORM_RMS, R, E));
        if (st->fused) {
            wrote(&b.gu, cs_sim_matmul(s, in, R, E, 2 * F, defer, false, "ffn_gate_up"));
        } else {
            wrote(&b.gu, cs_sim_matmul(s, in, R, E, F, defer, false, "ffn_gate"));
            wrote(&b.gu, cs_sim_matmul(s, in, R, E, F, defer, false, "ffn_up"));
        }
        wrote(&b.h, cs_sim_silu_mul(s, b.gu, R, F));
        wrote(&b.tmp, cs_sim_matmul(s, b.h, R, F, E, FB_NORM_NONE, true, "ffn_down"));
        wrote(&b.x, cs_sim_add(s, FD_MAX(b.tmp, b.x), R * E));
    }
    /* the last row of every sequence, gathered, then the LM head */
    for (int i = 0; i < st->n_seq; i++)
        wrote(&b.hx, cs_sim_copy(s, FD_MAX(b.x, b.hx), 1, E, false));
    double in = b.hx;
    if (!st->fused)
        in = wrote(&b.hxn, cs_sim_norm(s, b.hx, FB_NORM_RMS, st->n_seq, E));
    cs_sim_head(s);
    wrote(&b.logits, cs_sim_matmul(s, in, st->n_seq, E, m->n_vocab, defer, false, "output"));
    cs_sim_transfer_host(s, b.logits, (double)st->n_seq * m->n_vocab * sizeof(float));
    cs_sim_step_end(s);
    return cs_sim_now(s) - t0;
}
