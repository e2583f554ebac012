/* timing.c: the Corsair timing model (timing.h).
 *
 * Engines.  Work is spread evenly over the slices and cores that hold the current layer, so
 * every slice runs the same schedule; the model keeps the DIMC and SIMD timelines of one
 * representative slice (two resources: a task starts when its inputs are ready and its
 * engine is free).  Network legs (broadcasts, partial-sum reductions, collectives,
 * card-to-card transfers) occupy no engine: they are pure delays between tasks, which is
 * what lets a fused plan's reduction run while the DIMC computes.  Within one step the
 * pipeline stages run one after the other (the engine waits for each step's logits), so the
 * pair of timelines follows the stage that holds the current layer.
 *
 * Costs (symbols: R rows, n inputs, m outputs, T tile edge 64, S slices of a card, C cores
 * of a card, L lanes per SIMD, f clocks; lat/bw per level of the hierarchy):
 *  SIMD task   ceil(elements / (slices * L)) * ops / f_simd + issue
 *  all-reduce  lat_lane + sum over spanned levels (legs * lat_l) + legs * max_l(fan_l *
 *              bytes / bw_l) + (fan - 1) adds per level; legs = 2 (reduce, then broadcast)
 *  broadcast   sum over spanned levels lat_l + max_l(bytes / bw_l) (streamed)
 *  GEMM        convert x (SIMD) -> broadcast x to the cores -> DIMC: ceil(tiles / C) * R *
 *              T*T / MACs cycles (products of one input pack their tiles together),
 *              streamed behind the broadcast, at least weight bytes / LPDDR bandwidth when
 *              the weights do not fit SRAM -> partial sums of the K-tiles (kspread cores
 *              per output tile; a slice's output buffer adds its own cores', the SIMD those
 *              of other slices) -> drain (SIMD), streamed under the DIMC's later tiles;
 *              tensor-parallel row-split weights add a card-level all-reduce.
 *  deferred    beside the GEMM: local sum of squares (SIMD) -> all-reduce of one scalar per
 *              row over the card's slices -> rsqrt; join: one multiply per output (SIMD).
 *  unfused     norm op: local reduce -> all-reduce -> rsqrt + scale (SIMD); the GEMM waits.
 *  attention   each KV head's cache is spread over S/n_head_kv slices; QK and PV on the
 *              DIMC (at least the KV bytes over SRAM or LPDDR bandwidth); softmax on the
 *              SIMD with one all-reduce for the max and one for the sum over those slices.
 * Every number comes from the table below. */
#include "backends/corsair/timing.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"

/* ---- parameters ---- */

static const char *const map_names[] = { "card", "pipeline", "tp", NULL };
static const char *const kv_names[] = { "auto", "sram", "lpddr", NULL };
static const char *const exp_names[] = { "expf", "poly2", NULL };

#define HC25 "Hot Chips 2025 (ServeTheHome); Chips and Cheese"
#define VIK "Vik's Newsletter, d-Matrix in-memory compute"
#define HIER HC25 "; " VIK "; US 11,847,072; US 12,353,985"

static const cs_param_info_t params[CS_P_COUNT] = {
    [CS_P_MAPPING] = { "mapping", CS_MAP_PIPELINE, 0, 2, "", "assumption",
                       "layers over cards: one card, pipelined (consecutive layers per card) "
                       "or tensor-parallel (every layer split over all cards)", map_names },
    [CS_P_CARDS] = { "cards", 0, 0, 4096, "cards", "assumption",
                     "0: the fewest whose SRAM (sram_fill of it) holds weights and KV cache; a "
                     "pipeline uses at most one card per layer", NULL },
    [CS_P_KV_MEM] = { "kv_mem", CS_KV_AUTO, 0, 2, "", "assumption",
                      "auto: SRAM when weights + KV cache fit it, else LPDDR", kv_names },
    [CS_P_SRAM_FILL] = { "sram_fill", 0.9, 0.05, 1, "", "assumption",
                         "share of SRAM usable for weights and KV (stash, code, activations)",
                         NULL },
    [CS_P_CARDS_PER_SERVER] = { "cards_per_server", 8, 1, 64, "cards", "published",
                                "vendor: 8-card server (Llama3-8B operating point)", NULL },
    [CS_P_CHIPLETS] = { "chiplets", 8, 1, 64, "per card", "published",
                        HIER ": 2 packages x 4 chiplets", NULL },
    [CS_P_QUADS] = { "quads", 4, 1, 64, "per chiplet", "published", HIER, NULL },
    [CS_P_SLICES] = { "slices", 4, 1, 64, "per quad", "published", HIER, NULL },
    [CS_P_CORES] = { "cores", 256, 1, 65536, "DIMC cores per chiplet", "published",
                     HIER ": 256 per chiplet, 2048 per card", NULL },
    [CS_P_DIMC_GHZ] = { "dimc_ghz", 1.144, 0.01, 10, "GHz", "derived",
                        "2.4 PFLOPS MXINT8 / (2048 cores x 512 MAC x 2)", NULL },
    [CS_P_TILE] = { "tile", 64, 8, 1024, "", "published",
                    VIK "; US 11,847,072: a 64x64 INT8 matrix per DIMC core", NULL },
    [CS_P_MACS] = { "macs", 512, 1, 65536, "MAC/cycle/core", "derived",
                    "fits 2.4 PFLOPS at ~1.14 GHz and 150 TB/s SRAM (corsair.md)", NULL },
    [CS_P_DIMC_UTIL] = { "dimc_util", 1.0, 0.01, 1, "", "assumption",
                         "DIMC efficiency on resident tiles (1: every cycle useful)", NULL },
    [CS_P_DIMC_ISSUE_NS] = { "dimc_issue_ns", 10, 0, 1e6, "ns", "assumption",
                             "dispatch of one GEMM by the chiplet's RISC-V engine", NULL },
    [CS_P_SIMD_GHZ] = { "simd_ghz", 1.144, 0.01, 1e9, "GHz", "assumption",
                        "SIMD at the DIMC clock", NULL },
    [CS_P_LANES] = { "lanes", 64, 1, 65536, "fp32 lanes per slice", "assumption",
                     "one SIMD unit per slice (" HC25 "), width not published", NULL },
    [CS_P_SIMD_ISSUE_NS] = { "simd_issue_ns", 10, 0, 1e6, "ns", "assumption",
                             "dispatch of one SIMD kernel", NULL },
    [CS_P_OPS_EXP] = { "ops_exp", 8, 1, 1000, "ops/element", "assumption",
                       "fp32 exp: range reduction, degree-5 polynomial, scale", NULL },
    [CS_P_OPS_POLY2] = { "ops_poly2", 5, 1, 1000, "ops/element", "assumption",
                         "dmx-compressor poly2exp: round, 2 FMA, exponent add", NULL },
    [CS_P_OPS_RSQRT] = { "ops_rsqrt", 8, 1, 1000, "ops", "assumption",
                         "estimate + 2 Newton steps", NULL },
    [CS_P_OPS_RECIP] = { "ops_recip", 6, 1, 1000, "ops", "assumption",
                         "estimate + 2 Newton steps", NULL },
    [CS_P_OPS_CONVERT] = { "ops_convert", 4, 1, 1000, "ops/element", "assumption",
                           "fp32 -> BFP: |x|, block max, shift, round", NULL },
    [CS_P_OPS_SILU] = { "ops_silu", 16, 1, 1000, "ops/element", "assumption",
                        "exp + reciprocal + 2 multiplies", NULL },
    [CS_P_EXP_POLY2] = { "exp", 0, 0, 1, "", "assumption",
                         "softmax exp on the SIMD: fp32 expf (default) or poly2 (dmx-compressor"
                         " Corsair config); the backend computes with the same choice",
                         exp_names },
    [CS_P_WBYTES] = { "weight_bytes", 1.015625, 0.1, 8, "bytes/weight", "derived",
                      "BFP[8|8]{64}: 8-bit mantissa + 8-bit exponent per 64 (dmx-compressor)",
                      NULL },
    [CS_P_ABYTES] = { "act_bytes", 1.015625, 0.1, 8, "bytes/element", "derived",
                      "GEMM inputs and KV cache in BFP[8|8]{64}", NULL },
    [CS_P_SRAM_GB] = { "sram_gb", 2, 0.01, 1e6, "GB per card", "published",
                       HC25 ": 256 MB per chiplet", NULL },
    [CS_P_SRAM_TBS] = { "sram_tbs", 150, 0.01, 1e6, "TB/s per card", "published", HC25,
                        NULL },
    [CS_P_LPDDR_GB] = { "lpddr_gb", 256, 1, 1e6, "GB per card", "published", HC25, NULL },
    [CS_P_LPDDR_GBS] = { "lpddr_gbs", 400, 1, 1e6, "GB/s per card", "published", HC25,
                         NULL },
    [CS_P_LPDDR_NS] = { "lpddr_ns", 100, 0, 1e6, "ns", "assumption", "LPDDR5X access", NULL },
    [CS_P_LAT_LANE_NS] = { "lat_lane_ns", 5, 0, 1e6, "ns", "derived",
                           "log2(64 lanes) = 6 add stages at 1.14 GHz", NULL },
    [CS_P_LAT_QUAD_NS] = { "lat_quad_ns", 10, 0, 1e6, "ns", "assumption",
                           "slice to slice in a quad (all-to-all)", NULL },
    [CS_P_LAT_CHIPLET_NS] = { "lat_chiplet_ns", 25, 0, 1e6, "ns", "assumption",
                              "quad to quad on the chiplet NoC", NULL },
    [CS_P_LAT_D2D_NS] = { "lat_d2d_ns", 115, 0, 1e6, "ns", "published",
                          HC25 ": die-to-die ~115 ns", NULL },
    [CS_P_LAT_CARD_NS] = { "lat_card_ns", 650, 0, 1e7, "ns", "published",
                           HC25 ": card to card through a PCIe switch 650 ns", NULL },
    [CS_P_LAT_NIC_NS] = { "lat_nic_ns", 2000, 0, 1e8, "ns", "published",
                          HC25 ": scale-out NIC ~2 us", NULL },
    [CS_P_BW_NOC_GBS] = { "bw_noc_gbs", 292, 0.1, 1e9, "GB/s per slice", "assumption",
                          "256 B/cycle per slice port", NULL },
    [CS_P_BW_D2D_GBS] = { "bw_d2d_gbs", 1000, 0.1, 1e9, "GB/s", "published",
                          HC25 ": die-to-die ~1 TB/s", NULL },
    [CS_P_BW_CARD_GBS] = { "bw_card_gbs", 512, 0.1, 1e9, "GB/s", "published",
                           HC25 ": card-to-card bridge 512 GB/s", NULL },
    [CS_P_BW_NIC_GBS] = { "bw_nic_gbs", 50, 0.1, 1e9, "GB/s", "assumption",
                          "one 400 Gb/s NIC per card", NULL },
    [CS_P_COLL_LEGS] = { "coll_legs", 2, 1, 2, "", "assumption",
                         "2: reduce then broadcast per level (corsair.md); 1: one all-to-all "
                         "exchange per level", NULL },
    [CS_P_LAT_SCALE] = { "lat_scale", 1, 0, 1000, "", "assumption",
                         "multiplies every network latency (for sweeps)", NULL },
    [CS_P_PCIE_GBS] = { "pcie_gbs", 64, 0.1, 1e6, "GB/s", "published",
                        HC25 ": PCIe Gen5 x16 (64 GB/s by the standard)", NULL },
    [CS_P_LAT_HOST_NS] = { "lat_host_ns", 1000, 0, 1e8, "ns", "assumption",
                           "host <-> card round over PCIe", NULL },
};

const cs_param_info_t *cs_param_info(int id)
{
    return id >= 0 && id < CS_P_COUNT ? &params[id] : NULL;
}

int cs_param_find(const char *key)
{
    for (int i = 0; key && i < CS_P_COUNT; i++)
        if (strcmp(params[i].key, key) == 0)
            return i;
    return -1;
}

void cs_params_default(cs_params_t *p)
{
    for (int i = 0; i < CS_P_COUNT; i++)
        p->v[i] = params[i].def;
}

int cs_params_set(cs_params_t *p, const char *kv, char *err, size_t errlen)
{
    const char *eq = kv ? strchr(kv, '=') : NULL;
    if (!eq || eq == kv) {
        snprintf(err, errlen, "corsair: option '%s' is not key=value", kv ? kv : "");
        return -EINVAL;
    }
    char key[64];
    size_t kl = (size_t)(eq - kv);
    if (kl >= sizeof(key)) {
        snprintf(err, errlen, "corsair: unknown option '%.*s'", (int)kl, kv);
        return -EINVAL;
    }
    memcpy(key, kv, kl);
    key[kl] = '\0';
    int id = cs_param_find(key);
    if (id < 0) {
        snprintf(err, errlen, "corsair: unknown option '%s'", key);
        return -EINVAL;
    }
    const cs_param_info_t *pi = &params[id];
    const char *val = eq + 1;
    if (pi->names) {
        for (int i = 0; pi->names[i]; i++)
            if (strcmp(pi->names[i], val) == 0) {
                p->v[id] = i;
                return 0;
            }
    }
    char *end;
    double v = strtod(val, &end);
    if (end == val || *end || !isfinite(v) || v < pi->min || v > pi->max ||
        (pi->names && v != floor(v))) {
        snprintf(err, errlen, "corsair: bad value '%s' for %s (%g .. %g%s)", val, key, pi->min,
                 pi->max, pi->names ? ", or a name" : "");
        return -EINVAL;
    }
    p->v[id] = v;
    return 0;
}

void cs_param_format(const cs_params_t *p, int id, char *buf, size_t len)
{
    const cs_param_info_t *pi = cs_param_info(id);
    if (!pi) {
        snprintf(buf, len, "?");
        return;
    }
    if (pi->names) {
        int k = (int)p->v[id];
        int n = 0;
        while (pi->names[n])
            n++;
        snprintf(buf, len, "%s", k >= 0 && k < n ? pi->names[k] : "?");
        return;
    }
    snprintf(buf, len, "%g", p->v[id]);
}

/* ---- the simulator ---- */

/* Levels of the hierarchy: a group of each level is a few groups of the level below,
 * joined by that level's link (lanes of a slice; slices of a quad; quads of a chiplet by its
 * NoC; chiplets of a card die to die; cards of a server by PCIe switch or bridge; servers
 * by NICs). */
enum { LV_LANE, LV_QUAD, LV_CHIPLET, LV_D2D, LV_CARDS, LV_NIC, LV_COUNT };
enum { R_DIMC, R_SIMD, R_COLL, R_XFER };

/* An engine's timeline: its busy intervals, sorted and disjoint.  A task takes the earliest
 * gap that fits after its inputs are ready, so independent work (a deferred norm's rsqrt
 * and a GEMM's drain) runs in whichever order its data arrives, as separate hardware queues
 * would.  Only the latest RES_CAP intervals are kept: an op never reaches further back. */
#define RES_CAP 4096
typedef struct res {
    double a[RES_CAP], b[RES_CAP];
    int n;
} res_t;

static double res_place(res_t *r, double ready, double dur)
{
    if (dur <= 0)
        return ready;
    int lo = 0, hi = r->n; /* first interval ending after ready */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (r->b[mid] > ready)
            hi = mid;
        else
            lo = mid + 1;
    }
    double t = ready;
    int i = lo;
    for (; i < r->n; i++) {
        if (t + dur <= r->a[i])
            break;
        t = FD_MAX(t, r->b[i]);
    }
    if (i > 0 && r->b[i - 1] == t) { /* touches the previous interval: extend it */
        r->b[i - 1] = t + dur;
        if (i < r->n && r->a[i] == t + dur) {
            r->b[i - 1] = r->b[i];
            memmove(&r->a[i], &r->a[i + 1], (size_t)(r->n - i - 1) * sizeof(double));
            memmove(&r->b[i], &r->b[i + 1], (size_t)(r->n - i - 1) * sizeof(double));
            r->n--;
        }
        return t;
    }
    if (r->n == RES_CAP) { /* forget the oldest interval */
        memmove(&r->a[0], &r->a[1], (size_t)(r->n - 1) * sizeof(double));
        memmove(&r->b[0], &r->b[1], (size_t)(r->n - 1) * sizeof(double));
        r->n--;
        i = FD_MAX(i - 1, 0);
    }
    memmove(&r->a[i + 1], &r->a[i], (size_t)(r->n - i) * sizeof(double));
    memmove(&r->b[i + 1], &r->b[i], (size_t)(r->n - i) * sizeof(double));
    r->a[i] = t;
    r->b[i] = t + dur;
    r->n++;
    return t;
}

struct cs_sim {
    cs_params_t p;
    cs_hw_t hw;
    bool mapped;
    cs_model_shape_t shape;
    double group[LV_COUNT];   /* slices in one group of each level */
    double lat[LV_COUNT], bw[LV_COUNT];
    res_t dimc, simd;
    double now, floor;        /* the device clock; no input is ready before floor */
    /* the last GEMM input converted and broadcast: (ready time, rows, n) and when it
     * reached the cores (first row, all rows) */
    double bc_ready, bc_first, bc_all, bc_tiles, bc_compute, bc_start;
    int64_t bc_rows, bc_n;
    int stage, block;
    bool in_step;
    double step_t0, last_step_s;
    cs_acct_t cls[FB_OP_CLASS_COUNT], total;
    cs_op_rec_t *ops;
    int n_ops, cap_ops;
    double kv_k_bytes, kv_v_bytes; /* bytes per cached K / V element (0: act_bytes) */
};

#define P(id) (s->p.v[CS_P_##id])

void cs_sim_set_kv_bytes(cs_sim_t *s, double k_bytes, double v_bytes)
{
    s->kv_k_bytes = k_bytes;
    s->kv_v_bytes = v_bytes;
}

int cs_sim_create(cs_sim_t **out, const cs_params_t *p)
{
    cs_sim_t *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->p = *p;
    *out = s;
    return 0;
}

void cs_sim_free(cs_sim_t *s)
{
    if (s) {
        free(s->ops);
        free(s);
    }
}

void cs_sim_reset(cs_sim_t *s)
{
    cs_params_t p = s->p;
    cs_op_rec_t *ops = s->ops;
    int cap = s->cap_ops;
    memset(s, 0, sizeof(*s));
    s->p = p;
    s->ops = ops;
    s->cap_ops = cap;
}

bool cs_sim_mapped(const cs_sim_t *s) { return s->mapped; }
const cs_hw_t *cs_sim_hw(const cs_sim_t *s) { return &s->hw; }
const cs_params_t *cs_sim_params(const cs_sim_t *s) { return &s->p; }
double cs_sim_now(const cs_sim_t *s) { return s->now; }
double cs_sim_last_step_s(const cs_sim_t *s) { return s->last_step_s; }

void cs_sim_map(cs_sim_t *s, const cs_model_shape_t *m)
{
    if (s->mapped)
        return;
    s->shape = *m;
    cs_hw_t *h = &s->hw;
    memset(h, 0, sizeof(*h));
    h->mapping = (int)P(MAPPING);
    h->slices_per_card = (int)(P(CHIPLETS) * P(QUADS) * P(SLICES));
    h->cores_per_card = (int)(P(CHIPLETS) * P(CORES));
    const double cap = P(SRAM_GB) * 1e9 * P(SRAM_FILL);
    int cards = (int)P(CARDS);
    if (h->mapping == CS_MAP_CARD)
        cards = 1;
    else if (cards <= 0) /* the fewest cards whose SRAM holds weights and KV cache, and no
                            more than a pipeline has layers to place */
        cards = (int)FD_MAX(1.0, ceil((m->dimc_weight_bytes + m->kv_bytes) / cap));
    if (h->mapping == CS_MAP_PIPELINE && m->n_layer > 0 && (int)P(CARDS) <= 0)
        cards = FD_MIN(cards, m->n_layer);
    h->n_cards = cards;
    h->n_stages = h->mapping == CS_MAP_PIPELINE ? FD_MIN(cards, FD_MAX(1, m->n_layer)) : 1;
    h->cards_per_stage = h->mapping == CS_MAP_TP ? cards : 1;
    h->stage_slices = (double)h->slices_per_card * h->cards_per_stage;
    h->stage_cores = (double)h->cores_per_card * h->cards_per_stage;
    /* pipeline stages use one card each; cards beyond the stages hold nothing */
    double used = h->mapping == CS_MAP_PIPELINE ? h->n_stages : cards;
    h->bytes_per_card = m->dimc_weight_bytes / used;
    h->weights_lpddr = h->bytes_per_card > cap;
    int kv = (int)P(KV_MEM);
    h->kv_lpddr = kv == CS_KV_LPDDR ||
                  (kv == CS_KV_AUTO && h->bytes_per_card + m->kv_bytes / used > cap);

    double spq = P(SLICES), spc = spq * P(QUADS), spcard = spc * P(CHIPLETS);
    double g[LV_COUNT] = { 1, spq, spc, spcard, spcard * P(CARDS_PER_SERVER), INFINITY };
    memcpy(s->group, g, sizeof(g));
    double lat[LV_COUNT] = { P(LAT_LANE_NS), P(LAT_QUAD_NS), P(LAT_CHIPLET_NS), P(LAT_D2D_NS),
                             P(LAT_CARD_NS), P(LAT_NIC_NS) };
    double bw[LV_COUNT] = { INFINITY, P(BW_NOC_GBS), P(BW_NOC_GBS), P(BW_D2D_GBS),
                            P(BW_CARD_GBS), P(BW_NIC_GBS) };
    for (int l = 0; l < LV_COUNT; l++) {
        s->lat[l] = lat[l] * 1e-9 * P(LAT_SCALE);
        s->bw[l] = bw[l] * 1e9;
    }
    s->mapped = true;
}

static void ensure_mapped(cs_sim_t *s)
{
    if (!s->mapped) {
        cs_model_shape_t m = { 0 };
        cs_sim_map(s, &m);
    }
}

/* ---- cost helpers (seconds) ---- */

static double simd_dur(const cs_sim_t *s, double elems, double ops, double slices)
{
    double cyc = ceil(elems / (slices * P(LANES))) * ops;
    return cyc / (P(SIMD_GHZ) * 1e9) + P(SIMD_ISSUE_NS) * 1e-9;
}

/* Levels a group of g slices spans beyond the slice itself, and the fan-in at each. */
static double fan_at(const cs_sim_t *s, double g, int l)
{
    if (l == LV_LANE || g <= s->group[l - 1])
        return 0;
    double below = s->group[l - 1], size = s->group[l] / below;
    return FD_MIN(ceil(g / below), size);
}

/* All-reduce of `bytes` (vals values) held by each of g slices. */
static double allreduce_dur(const cs_sim_t *s, double g, double bytes, double vals)
{
    const double legs = P(COLL_LEGS);
    double t = s->lat[LV_LANE], tx = 0, adds = 0;
    for (int l = LV_QUAD; l < LV_COUNT; l++) {
        double fan = fan_at(s, g, l);
        if (fan < 2)
            continue;
        t += legs * s->lat[l];
        tx = FD_MAX(tx, fan * bytes / s->bw[l]);
        adds += fan - 1;
    }
    return t + legs * tx + adds * ceil(vals / P(LANES)) / (P(SIMD_GHZ) * 1e9);
}

/* Latency and streaming time of moving `bytes` to every slice of a group of g slices. */
static void bcast_parts(const cs_sim_t *s, double g, double bytes, double *lat, double *tx)
{
    *lat = 0;
    *tx = 0;
    for (int l = LV_QUAD; l < LV_COUNT; l++) {
        if (fan_at(s, g, l) < 2)
            continue;
        *lat += s->lat[l];
        *tx = FD_MAX(*tx, bytes / s->bw[l]);
    }
}

/* All-reduce of `bytes` per card across n cards (tensor parallelism): through the card
 * links, and the NIC when the cards span servers. */
static double card_allreduce_dur(const cs_sim_t *s, int n, double bytes, double vals_per_slice)
{
    if (n < 2)
        return 0;
    const double legs = P(COLL_LEGS);
    bool nic = n > P(CARDS_PER_SERVER);
    double lat = s->lat[LV_CARDS] + (nic ? s->lat[LV_NIC] : 0);
    double bw = nic ? s->bw[LV_NIC] : s->bw[LV_CARDS];
    double adds = (n - 1) * ceil(vals_per_slice / P(LANES)) / (P(SIMD_GHZ) * 1e9);
    return legs * lat + legs * bytes * (n - 1) / n / bw + adds;
}

/* ---- op bookkeeping ---- */

typedef struct opctx {
    cs_sim_t *s;
    cs_op_rec_t r;
} opctx_t;

/* Starts an op; returns its inputs' ready time (not before the stage's data arrived). */
static double op_begin(opctx_t *o, cs_sim_t *s, const char *name, int cls, double ready)
{
    ensure_mapped(s);
    memset(o, 0, sizeof(*o));
    o->s = s;
    snprintf(o->r.name, sizeof(o->r.name), "%s", name);
    o->r.cls = cls;
    o->r.block = s->block;
    o->r.start_s = FD_MAX(ready, s->floor);
    return o->r.start_s;
}

static double task(opctx_t *o, int res, double ready, double dur)
{
    cs_sim_t *s = o->s;
    switch (res) {
    case R_DIMC:
        o->r.a.dimc_s += dur;
        return res_place(&s->dimc, ready, dur) + dur;
    case R_SIMD:
        o->r.a.simd_s += dur;
        return res_place(&s->simd, ready, dur) + dur;
    case R_COLL:
        o->r.a.coll_s += dur;
        return ready + dur;
    default:
        o->r.a.xfer_s += dur;
        return ready + dur;
    }
}

static void acct_add(cs_acct_t *a, const cs_acct_t *b)
{
    a->dimc_s += b->dimc_s;
    a->simd_s += b->simd_s;
    a->coll_s += b->coll_s;
    a->xfer_s += b->xfer_s;
    a->exposed_s += b->exposed_s;
    a->n_ops += b->n_ops;
}

static double op_end(opctx_t *o, double end)
{
    cs_sim_t *s = o->s;
    o->r.end_s = end;
    o->r.a.exposed_s = FD_MAX(0.0, end - s->now);
    o->r.a.n_ops = 1;
    s->now = FD_MAX(s->now, end);
    acct_add(&s->cls[o->r.cls], &o->r.a);
    acct_add(&s->total, &o->r.a);
    if (s->n_ops == s->cap_ops && s->cap_ops < (1 << 20)) {
        int cap = s->cap_ops ? 2 * s->cap_ops : 256;
        cs_op_rec_t *n = realloc(s->ops, (size_t)cap * sizeof(*n));
        if (n) {
            s->ops = n;
            s->cap_ops = cap;
        }
    }
    if (s->n_ops < s->cap_ops)
        s->ops[s->n_ops++] = o->r;
    return end;
}

/* ---- markers ---- */

void cs_sim_step_begin(cs_sim_t *s, int rows)
{
    ensure_mapped(s);
    s->in_step = true;
    s->step_t0 = s->now;
    s->floor = s->now; /* the host submits the step after the last one's logits */
    s->dimc.n = s->simd.n = 0;
    s->bc_n = 0;
    s->n_ops = 0;
    s->block = CS_BLOCK_PRE;
    s->stage = 0;
    (void)rows;
}

void cs_sim_step_end(cs_sim_t *s)
{
    if (s->in_step)
        s->last_step_s = s->now - s->step_t0;
    s->in_step = false;
}

static int stage_of(const cs_sim_t *s, int layer)
{
    const cs_hw_t *h = &s->hw;
    if (h->n_stages <= 1 || s->shape.n_layer <= 0)
        return 0;
    int st = (int)((int64_t)layer * h->n_stages / s->shape.n_layer);
    return FD_MIN(FD_MAX(st, 0), h->n_stages - 1);
}

void cs_sim_layer(cs_sim_t *s, int layer, double residual_bytes)
{
    ensure_mapped(s);
    int st = stage_of(s, layer);
    s->block = layer;
    if (st == s->stage)
        return;
    opctx_t o;
    (void)op_begin(&o, s, "stage_xfer", FB_OP_OTHER, s->now);
    /* the residual leaves when the old card is done with it */
    bool nic = (int)(st / P(CARDS_PER_SERVER)) != (int)(s->stage / P(CARDS_PER_SERVER));
    double lat = nic ? s->lat[LV_NIC] : s->lat[LV_CARDS];
    double bw = nic ? s->bw[LV_NIC] : s->bw[LV_CARDS];
    double end = task(&o, R_XFER, s->now, lat + residual_bytes / bw);
    s->floor = end; /* every input of the next card's ops arrives with it */
    s->stage = st;
    s->bc_n = 0;
    op_end(&o, end);
}

void cs_sim_head(cs_sim_t *s)
{
    s->block = CS_BLOCK_HEAD;
}

/* ---- ops ---- */

/* The slices an element-wise op over one card's copy runs on: replicated data (the residual
 * stream under tensor parallelism) is processed whole on each card's slices. */
static double card_slices(const cs_sim_t *s) { return (double)s->hw.slices_per_card; }

double cs_sim_norm(cs_sim_t *s, double ready, int kind, int64_t rows, int64_t n)
{
    opctx_t o;
    ready = op_begin(&o, s, kind == FB_NORM_LAYER ? "layernorm" : "rmsnorm", FB_OP_NORM, ready);
    const double S = card_slices(s), R = (double)rows;
    const double nstat = kind == FB_NORM_LAYER ? 2 : 1;
    double t = task(&o, R_SIMD, ready, simd_dur(s, R * n, 1 + nstat, S));
    t = task(&o, R_COLL, t, allreduce_dur(s, S, R * nstat * 4, R * nstat));
    t = task(&o, R_SIMD, t, simd_dur(s, R, P(OPS_RSQRT), 1));
    t = task(&o, R_SIMD, t, simd_dur(s, R * n, 2 + (kind == FB_NORM_LAYER), S));
    return op_end(&o, t);
}

double cs_sim_matmul(cs_sim_t *s, double ready, int64_t rows, int64_t n_in, int64_t n_out,
                     int defer_kind, bool row_parallel, const char *name)
{
    opctx_t o;
    ready = op_begin(&o, s, name ? name : "matmul", FB_OP_GEMM, ready);
    const cs_hw_t *h = &s->hw;
    const int N = h->cards_per_stage;
    const double R = (double)rows, S = card_slices(s), C = h->cores_per_card;
    const double T = P(TILE), cps = C / S;
    const double n = row_parallel ? ceil((double)n_in / N) : (double)n_in;
    const double m = row_parallel ? (double)n_out : ceil((double)n_out / N);
    const double Kt = ceil(n / T), Mt = ceil(m / T);
    /* Products of one input (the unfused plan's Q, K, V; gate, up) share the cores: their
     * tiles pack together as one concatenated product's would. */
    const bool reuse = s->bc_n == (int64_t)n && s->bc_rows == rows && s->bc_ready == ready &&
                       ready > 0;
    const double before = reuse ? s->bc_tiles : 0;
    const double per_core = ceil((before + Kt * Mt) / C) - ceil(before / C);
    double compute = per_core * R * (T * T / P(MACS)) / (P(DIMC_GHZ) * 1e9 * P(DIMC_UTIL));
    if (h->weights_lpddr)
        compute = FD_MAX(compute, n * m * P(WBYTES) / (P(LPDDR_GBS) * 1e9));
    compute += P(DIMC_ISSUE_NS) * 1e-9;
    const double kspread = C >= Mt ? FD_MIN(Kt, floor(C / Mt)) : 1;

    /* convert x to BFP on the SIMD; a deferred norm's reduction follows it there and then
     * crosses the network while the DIMC computes.  Products of one input convert and
     * broadcast it once: every core already holds it. */
    double cv = reuse ? ready : task(&o, R_SIMD, ready, simd_dur(s, R * n, P(OPS_CONVERT), S));
    double scale_at = 0;
    if (defer_kind != FB_NORM_NONE) {
        const double nstat = defer_kind == FB_NORM_LAYER ? 2 : 1;
        double r = task(&o, R_SIMD, cv, simd_dur(s, R * n, 1 + nstat, S));
        r = task(&o, R_COLL, r, allreduce_dur(s, S, R * nstat * 4, R * nstat));
        scale_at = task(&o, R_SIMD, r, simd_dur(s, R, P(OPS_RSQRT), 1));
    }
    /* x streams to the cores: the DIMC starts on the first row after the broadcast latency
     * and never outruns the stream */
    double first, all;
    double group = compute; /* DIMC work on this input so far, this product included */
    if (reuse) {
        first = s->bc_first;
        all = s->bc_all;
        s->bc_tiles += Kt * Mt;
        group = s->bc_compute += compute;
    } else {
        double blat, btx;
        bcast_parts(s, S, R * n * P(ABYTES), &blat, &btx);
        first = task(&o, R_XFER, cv, blat);
        o.r.a.xfer_s += btx;
        all = first + btx;
        s->bc_ready = ready;
        s->bc_rows = rows;
        s->bc_n = (int64_t)n;
        s->bc_first = first;
        s->bc_all = all;
        s->bc_tiles = Kt * Mt;
        s->bc_compute = compute;
    }
    /* The DIMC computes each row as it arrives.  Products of one input interleave their
     * rows: together they finish as one product of their summed work would, from the
     * first one's start. */
    double d_end = task(&o, R_DIMC, first, compute);
    if (reuse) {
        d_end = FD_MAX(all + group / R, s->bc_start + group);
    } else {
        s->bc_start = d_end - compute;
        d_end = FD_MAX(d_end, all + compute / R);
    }
    const double d_start = d_end - compute;

    /* piece by piece (a row through one of a core's tiles), the K-tiles' partial sums meet
     * (across slices when kspread exceeds a slice's cores) and the SIMD drains the outputs;
     * early pieces leave while the DIMC computes later ones.  Fused: the join's multiply
     * rides in the same pass, which cannot start before the scale is known. */
    double ps_slices = ceil(kspread / cps), plat = 0, ptx = 0;
    if (ps_slices > 1)
        bcast_parts(s, ps_slices, R * m * 4 * kspread / S, &plat, &ptx);
    o.r.a.xfer_s += plat + ptx;
    const double pieces = R * FD_MAX(1.0, per_core);
    const double per_piece = plat + ptx / pieces;
    /* a slice's output buffer accumulates its own cores' partial sums as they land
     * (assumption); the SIMD adds those of the other slices and drains */
    const double drain = simd_dur(s, R * m * (ps_slices + (defer_kind != FB_NORM_NONE)), 1, S);
    double dr_ready = FD_MAX(d_start + compute / pieces + per_piece,
                             d_end + per_piece + drain / pieces - drain);
    double t = task(&o, R_SIMD, FD_MAX(dr_ready, scale_at), drain);
    if (row_parallel && N > 1)
        t = task(&o, R_COLL, t, card_allreduce_dur(s, N, R * m * 4, R * m / S));
    return op_end(&o, t);
}

double cs_sim_attention(cs_sim_t *s, double ready, const cs_attn_seq_t *seqs, int n_seq,
                        int n_head, int n_head_kv, int head_dim, int mode)
{
    opctx_t o;
    ready = op_begin(&o, s, mode == FB_SOFTMAX_REF ? "attn(ref)" : mode == FB_SOFTMAX_MAXSUM ?
             "attn(maxsum)" : "attn(sumonly)", FB_OP_ATTN, ready);
    const cs_hw_t *h = &s->hw;
    const double T = P(TILE), SS = h->stage_slices, group = (double)n_head / n_head_kv;
    const double sph = FD_MAX(1.0, floor(SS / n_head_kv));
    const double hd_t = ceil(head_dim / T);
    double rows = 0, scores = 0, vec_tiles = 0, kv_bytes = 0;
    for (int i = 0; i < n_seq; i++) {
        const cs_attn_seq_t *q = &seqs[i];
        for (int j = 0; j < q->n_q; j++) {
            double ctx = (double)(q->pos_last - (q->n_q - 1 - j)) + 1;
            scores += ctx * n_head;
            vec_tiles += n_head_kv * ceil(ctx / T) * hd_t * group;
        }
        rows += q->n_q;
        kv_bytes += (double)(q->pos_last + 1) * n_head_kv * head_dim *
                    ((s->kv_k_bytes > 0 ? s->kv_k_bytes : P(ABYTES)) +
                     (s->kv_v_bytes > 0 ? s->kv_v_bytes : P(ABYTES)));
    }
    if (n_seq <= 0 || rows <= 0)
        return op_end(&o, ready);
    /* QK and PV each: vec_tiles tile-vectors over all the stage's cores, at least the K (or
     * V) bytes over the memory that holds the cache */
    double mem_bw = h->kv_lpddr ? P(LPDDR_GBS) * 1e9 : P(SRAM_TBS) * 1e12;
    double mm = vec_tiles * (T * T / P(MACS)) / h->stage_cores /
                (P(DIMC_GHZ) * 1e9 * P(DIMC_UTIL));
    mm = FD_MAX(mm, kv_bytes / 2 / (mem_bw * h->cards_per_stage) +
                        (h->kv_lpddr ? P(LPDDR_NS) * 1e-9 : 0)) +
         P(DIMC_ISSUE_NS) * 1e-9;
    const double ops_exp = P(EXP_POLY2) >= 0.5 ? P(OPS_POLY2) : P(OPS_EXP);
    const double nrow = rows * n_head;              /* softmax rows */
    const double vals = ceil(nrow / FD_MIN(SS, (double)n_head_kv)) ; /* per slice group */

    double blat, btx;
    bcast_parts(s, sph, rows * n_head * head_dim * P(ABYTES) / n_head_kv, &blat, &btx);
    double t = task(&o, R_XFER, ready, blat + btx);
    t = task(&o, R_DIMC, t, mm);                              /* S = Q K^T */
    if (mode != FB_SOFTMAX_SUMONLY) {                           /* the row max */
        t = task(&o, R_SIMD, t, simd_dur(s, scores, 1, SS));
        t = task(&o, R_COLL, t, allreduce_dur(s, sph, vals * 4, vals));
    }
    /* exp(s - max) and the local sums in one pass */
    double e = task(&o, R_SIMD, t, simd_dur(s, scores, ops_exp + 2, SS));
    double l = task(&o, R_COLL, e, allreduce_dur(s, sph, vals * 4, vals));
    l = task(&o, R_SIMD, l, simd_dur(s, nrow, P(OPS_RECIP), SS));
    double pv_in;
    if (mode == FB_SOFTMAX_REF) /* normalize p, then P.V */
        pv_in = task(&o, R_SIMD, l, simd_dur(s, scores, 1 + P(OPS_CONVERT), SS));
    else
        pv_in = task(&o, R_SIMD, e, simd_dur(s, scores, P(OPS_CONVERT), SS));
    double pv = task(&o, R_DIMC, pv_in, mm);                  /* P V */
    double plat, ptx;
    bcast_parts(s, sph, nrow * head_dim * 4 / n_head_kv, &plat, &ptx);
    pv = task(&o, R_XFER, pv, plat + ptx);
    pv = task(&o, R_SIMD, pv, simd_dur(s, nrow * head_dim * sph, 1, SS));
    if (mode != FB_SOFTMAX_REF) /* join: divide by the deferred sum */
        pv = task(&o, R_SIMD, FD_MAX(pv, l), simd_dur(s, nrow * head_dim, 1, SS));
    return op_end(&o, pv);
}

double cs_sim_rope(cs_sim_t *s, double ready, int64_t rows, int n_heads, int head_dim)
{
    opctx_t o;
    ready = op_begin(&o, s, "rope", FB_OP_OTHER, ready);
    double t = task(&o, R_SIMD, ready,
                    simd_dur(s, (double)rows * n_heads * head_dim, 3, s->hw.stage_slices));
    return op_end(&o, t);
}

double cs_sim_silu_mul(cs_sim_t *s, double ready, int64_t rows, int64_t n)
{
    opctx_t o;
    ready = op_begin(&o, s, "silu_mul", FB_OP_OTHER, ready);
    double t = task(&o, R_SIMD, ready,
                    simd_dur(s, (double)rows * n, P(OPS_SILU) + 1, s->hw.stage_slices));
    return op_end(&o, t);
}

double cs_sim_add(cs_sim_t *s, double ready, int64_t n)
{
    opctx_t o;
    ready = op_begin(&o, s, "add", FB_OP_OTHER, ready);
    double t = task(&o, R_SIMD, ready, simd_dur(s, (double)n, 1, card_slices(s)));
    return op_end(&o, t);
}

/* bytes per element of a KV write: the cache's K and V types alike (their mean) */
static double kv_write_bytes(const cs_sim_t *s)
{
    return ((s->kv_k_bytes > 0 ? s->kv_k_bytes : P(ABYTES)) +
            (s->kv_v_bytes > 0 ? s->kv_v_bytes : P(ABYTES))) / 2;
}

double cs_sim_copy(cs_sim_t *s, double ready, int64_t rows, int64_t n, bool to_kv)
{
    opctx_t o;
    ready = op_begin(&o, s, to_kv ? "kv_write" : "copy", FB_OP_OTHER, ready);
    const double e = (double)rows * n;
    double t = task(&o, R_SIMD, ready, simd_dur(s, e, 1, s->hw.stage_slices));
    if (to_kv && s->hw.kv_lpddr)
        t = task(&o, R_XFER, t, P(LPDDR_NS) * 1e-9 +
                 e * kv_write_bytes(s) / (P(LPDDR_GBS) * 1e9 * s->hw.cards_per_stage));
    return op_end(&o, t);
}

double cs_sim_get_rows(cs_sim_t *s, double ready, int64_t rows, double row_bytes)
{
    opctx_t o;
    ready = op_begin(&o, s, "get_rows", FB_OP_OTHER, ready);
    double t = task(&o, R_XFER, ready, P(LAT_HOST_NS) * 1e-9 + P(LPDDR_NS) * 1e-9 +
                    (double)rows * row_bytes / (P(LPDDR_GBS) * 1e9));
    return op_end(&o, t);
}

double cs_sim_transfer_host(cs_sim_t *s, double ready, double bytes)
{
    opctx_t o;
    ready = op_begin(&o, s, "to_host", FB_OP_OTHER, ready);
    double t = task(&o, R_XFER, ready, P(LAT_HOST_NS) * 1e-9 + bytes / (P(PCIE_GBS) * 1e9));
    return op_end(&o, t);
}

/* ---- results ---- */

void cs_sim_totals(const cs_sim_t *s, cs_acct_t cls[FB_OP_CLASS_COUNT], cs_acct_t *total)
{
    if (cls)
        memcpy(cls, s->cls, sizeof(s->cls));
    if (total)
        *total = s->total;
}

const cs_op_rec_t *cs_sim_ops(const cs_sim_t *s, int *n)
{
    *n = s->n_ops;
    return s->ops;
}

int cs_sim_blocks(const cs_sim_t *s, cs_acct_t *out, int *block_id, int cap)
{
    int max_layer = -1;
    for (int i = 0; i < s->n_ops; i++)
        max_layer = FD_MAX(max_layer, s->ops[i].block);
    int n = 0;
    for (int b = 0; b <= max_layer + 2 && n < cap; b++) {
        int id = b <= max_layer ? b : b == max_layer + 1 ? CS_BLOCK_PRE : CS_BLOCK_HEAD;
        cs_acct_t a = { 0 };
        bool any = false;
        for (int i = 0; i < s->n_ops; i++)
            if (s->ops[i].block == id) {
                acct_add(&a, &s->ops[i].a);
                any = true;
            }
        if (!any)
            continue;
        out[n] = a;
        block_id[n++] = id;
    }
    return n;
}
