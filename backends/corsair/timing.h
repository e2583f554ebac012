/* timing.h: the Corsair timing model.  A discrete-event model of the hardware that charges
 * every operator the time Corsair's engines would take: the DIMC (matrix) and SIMD (vector,
 * collective) engines run on separate timelines, collectives climb the hierarchy (lanes ->
 * slice -> quad -> chiplet -> card -> server) with a latency and a bandwidth per level, and
 * a mapping (one card, pipelined over cards, tensor-parallel over cards) decides which cores
 * hold which layer.  Every constant is one entry of the parameter table (cs_param_table) with
 * its public source or marked as an assumption; every entry can be overridden by a
 * "key=value" string.  The model knows shapes only, never values, so it is driven both by
 * the corsair backend (one call per op) and by bench/corsair-report (model shapes without
 * weights).  Owns nothing outside its cs_sim_t; one thread drives a cs_sim_t. */
#ifndef FD_CORSAIR_TIMING_H
#define FD_CORSAIR_TIMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backends/backend.h"

/* ---- the parameter table ---- */

enum cs_param {
    /* mapping */
    CS_P_MAPPING, CS_P_CARDS, CS_P_KV_MEM, CS_P_SRAM_FILL,
    /* hierarchy */
    CS_P_CARDS_PER_SERVER, CS_P_CHIPLETS, CS_P_QUADS, CS_P_SLICES, CS_P_CORES,
    /* DIMC */
    CS_P_DIMC_GHZ, CS_P_TILE, CS_P_MACS, CS_P_DIMC_UTIL, CS_P_DIMC_ISSUE_NS,
    /* SIMD */
    CS_P_SIMD_GHZ, CS_P_LANES, CS_P_SIMD_ISSUE_NS, CS_P_OPS_EXP, CS_P_OPS_POLY2,
    CS_P_OPS_RSQRT, CS_P_OPS_RECIP, CS_P_OPS_CONVERT, CS_P_OPS_SILU, CS_P_EXP_POLY2,
    /* memory and formats */
    CS_P_WBYTES, CS_P_ABYTES, CS_P_SRAM_GB, CS_P_SRAM_TBS, CS_P_LPDDR_GB, CS_P_LPDDR_GBS,
    CS_P_LPDDR_NS,
    /* interconnect: latency per level, bandwidth per level */
    CS_P_LAT_LANE_NS, CS_P_LAT_QUAD_NS, CS_P_LAT_CHIPLET_NS, CS_P_LAT_D2D_NS,
    CS_P_LAT_CARD_NS, CS_P_LAT_NIC_NS,
    CS_P_BW_NOC_GBS, CS_P_BW_D2D_GBS, CS_P_BW_CARD_GBS, CS_P_BW_NIC_GBS,
    CS_P_COLL_LEGS, CS_P_LAT_SCALE,
    /* host link */
    CS_P_PCIE_GBS, CS_P_LAT_HOST_NS,
    CS_P_COUNT
};

enum cs_mapping { CS_MAP_CARD = 0, CS_MAP_PIPELINE = 1, CS_MAP_TP = 2 };
enum cs_kv_mem { CS_KV_AUTO = 0, CS_KV_SRAM = 1, CS_KV_LPDDR = 2 };

typedef struct cs_param_info {
    const char *key;
    double def;
    double min, max;
    const char *unit;
    const char *kind;      /* "published", "derived" or "assumption" */
    const char *source;    /* where the number comes from, or why it was chosen */
    const char *const *names; /* keyword values (NULL-terminated) for enumerations, or NULL */
} cs_param_info_t;

typedef struct cs_params {
    double v[CS_P_COUNT];
} cs_params_t;

const cs_param_info_t *cs_param_info(int id);
int cs_param_find(const char *key);          /* index or -1 */
void cs_params_default(cs_params_t *p);
/* Applies one "key=value" (a number, or a keyword of an enumeration).  -EINVAL with a
 * message for an unknown key, a malformed value or one outside [min, max]. */
int cs_params_set(cs_params_t *p, const char *kv, char *err, size_t errlen);
/* Formats the value of parameter id (keyword or number). */
void cs_param_format(const cs_params_t *p, int id, char *buf, size_t len);

/* ---- what the mapping needs to know about a model ---- */

typedef struct cs_model_shape {
    int n_layer;                 /* decoder blocks (0: unknown, one stage) */
    double dimc_weight_bytes;    /* weights the DIMC computes with, in their device format */
    double kv_bytes;             /* KV cache (and activations) the device must hold */
} cs_model_shape_t;

/* The hardware after the mapping is applied. */
typedef struct cs_hw {
    int mapping, n_cards, n_stages, cards_per_stage;
    int slices_per_card, cores_per_card;
    double stage_slices, stage_cores;
    bool weights_lpddr;          /* capacity mode: weights stream from LPDDR */
    bool kv_lpddr;
    double bytes_per_card;       /* weights per card */
} cs_hw_t;

/* ---- accounting ---- */

typedef struct cs_acct {
    double dimc_s;       /* DIMC busy */
    double simd_s;       /* SIMD busy */
    double coll_s;       /* collective legs (norm / softmax reductions, TP all-reduces) */
    double xfer_s;       /* other data movement on the critical path's chain */
    double exposed_s;    /* growth of the critical path */
    int n_ops;
} cs_acct_t;

/* One op of the current step. */
typedef struct cs_op_rec {
    char name[24];
    int cls;             /* enum fb_op_class */
    int block;           /* layer, or CS_BLOCK_PRE / CS_BLOCK_HEAD */
    double start_s, end_s;
    cs_acct_t a;
} cs_op_rec_t;

enum { CS_BLOCK_PRE = -1, CS_BLOCK_HEAD = -2 };

typedef struct cs_sim cs_sim_t;

/* ---- lifecycle ---- */

int cs_sim_create(cs_sim_t **out, const cs_params_t *p);
void cs_sim_free(cs_sim_t *s);
/* Freezes the mapping for a model (idempotent once frozen; cs_sim_reset unfreezes). */
void cs_sim_map(cs_sim_t *s, const cs_model_shape_t *m);
bool cs_sim_mapped(const cs_sim_t *s);
const cs_hw_t *cs_sim_hw(const cs_sim_t *s);
const cs_params_t *cs_sim_params(const cs_sim_t *s);
/* Forgets all time and accounting (the mapping too). */
void cs_sim_reset(cs_sim_t *s);

/* ---- markers ---- */

void cs_sim_step_begin(cs_sim_t *s, int rows);
void cs_sim_step_end(cs_sim_t *s);
/* The ops that follow belong to decoder block `layer` (may move to another pipeline stage:
 * the residual rows x row_bytes move card to card). */
void cs_sim_layer(cs_sim_t *s, int layer, double residual_bytes);
/* The ops that follow are the LM head. */
void cs_sim_head(cs_sim_t *s);

/* ---- ops: each takes the time its inputs are ready and returns when its output is ---- */

/* Unfused norm: reduce -> scale (kind FB_NORM_RMS or FB_NORM_LAYER). */
double cs_sim_norm(cs_sim_t *s, double ready, int kind, int64_t rows, int64_t n);
/* y = x W^T: rows x n_in -> n_out.  defer_kind != FB_NORM_NONE: the norm's reduction runs
 * beside the GEMM and joins on the outputs.  row_parallel: under tensor parallelism the
 * weight is split along n_in (attn_output, ffn_down) and the outputs are all-reduced. */
double cs_sim_matmul(cs_sim_t *s, double ready, int64_t rows, int64_t n_in, int64_t n_out,
                     int defer_kind, bool row_parallel, const char *name);

typedef struct cs_attn_seq {
    int n_q;             /* query rows */
    int64_t pos_last;    /* position of the last query (context pos_last + 1) */
} cs_attn_seq_t;
double cs_sim_attention(cs_sim_t *s, double ready, const cs_attn_seq_t *seqs, int n_seq,
                        int n_head, int n_head_kv, int head_dim, int mode);
double cs_sim_rope(cs_sim_t *s, double ready, int64_t rows, int n_heads, int head_dim);
double cs_sim_silu_mul(cs_sim_t *s, double ready, int64_t rows, int64_t n);
double cs_sim_add(cs_sim_t *s, double ready, int64_t n);
/* A copy of rows x n floats; to_kv: a KV cache write, which also pays the LPDDR write when
 * the cache lives there. */
double cs_sim_copy(cs_sim_t *s, double ready, int64_t rows, int64_t n, bool to_kv);
/* Bytes per element of the KV cache's K and V as the device stores them (a typed cache:
 * its row bytes over head_dim); 0: act_bytes, the BFP activations (the default). */
void cs_sim_set_kv_bytes(cs_sim_t *s, double k_bytes, double v_bytes);
double cs_sim_get_rows(cs_sim_t *s, double ready, int64_t rows, double row_bytes);
double cs_sim_transfer_host(cs_sim_t *s, double ready, double bytes);

/* ---- results ---- */

/* Since the last reset: per op class (exposed time, summing to total.exposed_s) and total. */
void cs_sim_totals(const cs_sim_t *s, cs_acct_t cls[FB_OP_CLASS_COUNT], cs_acct_t *total);
/* The last (or current) step: its ops in issue order. */
const cs_op_rec_t *cs_sim_ops(const cs_sim_t *s, int *n);
/* Device time of the last finished step and the number of steps so far. */
double cs_sim_last_step_s(const cs_sim_t *s);
/* The critical path's end so far (the device clock). */
double cs_sim_now(const cs_sim_t *s);
/* Per-block sums of the last step: blocks 0..n_layer-1, then PRE, then HEAD.  Returns the
 * number written (at most cap). */
int cs_sim_blocks(const cs_sim_t *s, cs_acct_t *out, int *block_id, int cap);

#endif
