/* metrics.c: fixed-bucket histograms and counters under one mutex; text exposition.
 * Buckets start at 10-100 microseconds because small models step in well under a
 * millisecond, and go as far as vLLM's so dashboards built for it still read. */
#include "server/metrics.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static const double b_ttft[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02,
                                0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
                                20, 40, 80, 160, 640, 2560};
static const double b_itl[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                               0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1,
                               2.5, 5, 7.5, 10, 20, 40, 80};
static const double b_req[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                               0.05, 0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30,
                               40, 50, 60, 120, 240, 480, 960, 1920, 7680};
static const double b_step[] = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                10};

#define MAX_BUCKETS 32

static const struct hist_def {
    const char *name;
    const char *help;
    const double *le;
    int n;
} hist_defs[MET_HIST_COUNT] = {
    [MET_TTFT] = {"fusiond_time_to_first_token_seconds",
                  "Time from a request's arrival to its first generated token.", b_ttft,
                  (int)FD_ARRAY_LEN(b_ttft)},
    [MET_ITL] = {"fusiond_inter_token_latency_seconds",
                 "Time between consecutive generated tokens of a sequence.", b_itl,
                 (int)FD_ARRAY_LEN(b_itl)},
    [MET_E2E] = {"fusiond_e2e_request_latency_seconds",
                 "Time from a sequence's arrival to its last token.", b_req,
                 (int)FD_ARRAY_LEN(b_req)},
    [MET_QUEUE] = {"fusiond_request_queue_time_seconds",
                   "Time a sequence waited before it was first scheduled.", b_req,
                   (int)FD_ARRAY_LEN(b_req)},
    [MET_PREFILL] = {"fusiond_request_prefill_time_seconds",
                     "Time from a sequence's first step to the end of its prompt.", b_req,
                     (int)FD_ARRAY_LEN(b_req)},
    [MET_DECODE] = {"fusiond_request_decode_time_seconds",
                    "Time from a sequence's first generated token to its last.", b_req,
                    (int)FD_ARRAY_LEN(b_req)},
    [MET_STEP] = {"fusiond_step_seconds",
                  "Duration of one engine step (one batched decoder pass).", b_step,
                  (int)FD_ARRAY_LEN(b_step)},
};

struct hist {
    uint64_t counts[MAX_BUCKETS + 1]; /* per bucket (not cumulative); last is +Inf */
    uint64_t count;
    double sum;
};

#define MAX_STATUS 16

/* Everything the lock guards; a scrape copies it and renders outside the lock. */
struct met_data {
    struct hist h[MET_HIST_COUNT];
    /* fusiond_requests_total{endpoint,status}: a small table per endpoint. */
    struct {
        int status;
        uint64_t n;
    } req[MET_EP_COUNT][MAX_STATUS];
    uint64_t finished[ENG_FINISH_ERROR + 1];
    int batch_seqs;
    int batch_tokens;
};

struct met {
    pthread_mutex_t mu;
    struct met_data d;
};

/* Label values are part of the /metrics contract (dashboards and alerts match on them), so
 * they are spelled here rather than borrowed from the engine's and backends' names. */
static const char *const finish_label[ENG_FINISH_ERROR + 1] = {
    [ENG_FINISH_STOP] = "stop", [ENG_FINISH_LENGTH] = "length", [ENG_FINISH_CANCEL] = "cancel",
    [ENG_FINISH_TIMEOUT] = "timeout", [ENG_FINISH_ERROR] = "error"};
static const char *const op_label[FB_OP_CLASS_COUNT] = {
    [FB_OP_NORM] = "norm", [FB_OP_GEMM] = "gemm", [FB_OP_ATTN] = "attention",
    [FB_OP_OTHER] = "other"};

const char *met_endpoint_name(int ep)
{
    static const char *const names[MET_EP_COUNT] = {
        "completions", "chat_completions", "models", "health",
        "metrics", "tokenize", "detokenize", "embeddings", "responses", "infill",
        "completion", "props", "slots", "apply_template", "rerank",
        "messages",
        "other"};
    return ep >= 0 && ep < MET_EP_COUNT ? names[ep] : "other";
}

int met_buckets(int hist, const double **le)
{
    if (hist < 0 || hist >= MET_HIST_COUNT)
        return -EINVAL;
    *le = hist_defs[hist].le;
    return hist_defs[hist].n;
}

int met_create(met_t **out)
{
    met_t *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    int rc = pthread_mutex_init(&m->mu, NULL);
    if (rc) {
        free(m);
        return -rc;
    }
    *out = m;
    return 0;
}

void met_free(met_t *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static void observe_locked(met_t *m, int hist, double s)
{
    const struct hist_def *d = &hist_defs[hist];
    struct hist *h = &m->d.h[hist];
    if (!(s >= 0))
        s = 0; /* NaN or a clock hiccup must not corrupt the sum */
    int i = 0;
    while (i < d->n && s > d->le[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += s;
}

void met_observe(met_t *m, int hist, double seconds)
{
    if (hist < 0 || hist >= MET_HIST_COUNT)
        return;
    pthread_mutex_lock(&m->mu);
    observe_locked(m, hist, seconds);
    pthread_mutex_unlock(&m->mu);
}

void met_step(met_t *m, double seconds, int batch_seqs, int batch_tokens)
{
    pthread_mutex_lock(&m->mu);
    observe_locked(m, MET_STEP, seconds);
    m->d.batch_seqs = batch_seqs;
    m->d.batch_tokens = batch_tokens;
    pthread_mutex_unlock(&m->mu);
}

void met_request(met_t *m, int ep, int status)
{
    if (ep < 0 || ep >= MET_EP_COUNT)
        ep = MET_EP_OTHER;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < MAX_STATUS; i++) {
        if (m->d.req[ep][i].status == status || m->d.req[ep][i].status == 0) {
            m->d.req[ep][i].status = status;
            m->d.req[ep][i].n++;
            break;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

void met_finished(met_t *m, int reason)
{
    if (reason <= ENG_FINISH_NONE || reason > ENG_FINISH_ERROR)
        return;
    pthread_mutex_lock(&m->mu);
    m->d.finished[reason]++;
    pthread_mutex_unlock(&m->mu);
}

static void header(sb_t *b, const char *name, const char *type, const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with \, " and newline escaped as the exposition format requires. */
static void label_value(sb_t *b, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\')
            sb_adds(b, "\\\\");
        else if (*s == '"')
            sb_adds(b, "\\\"");
        else if (*s == '\n')
            sb_adds(b, "\\n");
        else
            sb_add(b, s, 1);
    }
}

void met_render(met_t *m, const met_view_t *v, sb_t *b)
{
    const eng_stats_t *st = v->stats;
    const eng_info_t *info = v->info;

    pthread_mutex_lock(&m->mu);
    struct met_data snap = m->d; /* render outside the lock: the engine must not wait on us */
    pthread_mutex_unlock(&m->mu);

    if (info) {
        header(b, "fusiond_model_info", "gauge", "The served model and how it runs (value 1).");
        sb_adds(b, "fusiond_model_info{model=\"");
        label_value(b, info->model_id);
        sb_adds(b, "\",arch=\"");
        label_value(b, info->arch);
        sb_adds(b, "\",backend=\"");
        label_value(b, info->backend);
        sb_printf(b, "\",fusion=\"%s\",n_ctx=\"%d\"", info->fusion ? "true" : "false",
                  info->n_ctx);
        if (info->cache_type_k && info->cache_type_v) {
            sb_adds(b, ",cache_type_k=\"");
            label_value(b, info->cache_type_k);
            sb_adds(b, "\",cache_type_v=\"");
            label_value(b, info->cache_type_v);
            sb_adds(b, "\"");
        }
        sb_adds(b, "} 1\n");
        header(b, "fusiond_kv_cache_bytes", "gauge",
               "Bytes the KV cache holds (every layer's K and V, at its cache types).");
        sb_printf(b, "fusiond_kv_cache_bytes %llu\n", (unsigned long long)info->cache_bytes);
        if (v->lora_scales && v->n_lora_scales > 0 && info->lora_paths) {
            header(b, "fusiond_lora_adapter_scale", "gauge",
                   "The global scale of each loaded LoRA adapter (GET /lora-adapters).");
            for (int i = 0; i < FD_MIN(v->n_lora_scales, info->n_lora); i++) {
                sb_printf(b, "fusiond_lora_adapter_scale{id=\"%d\",path=\"", i);
                label_value(b, info->lora_paths[i]);
                sb_printf(b, "\"} %g\n", (double)v->lora_scales[i]);
            }
        }
    }
    /* Every single-valued metric, its name written once.  Unsigned 64-bit counters stay
     * far below 2^63, so one signed integer type holds them all; the usage ratio is the one
     * fraction and is written on its own. */
    static const eng_stats_t none;
    const eng_stats_t *s = st ? st : &none;
    const struct {
        const char *name, *type, *help;
        long long v;
    } rows[] = {
        {"fusiond_ready", "gauge", "1 when the model is loaded and the server not draining.",
         v->ready && !v->draining},
        {"fusiond_requests_running", "gauge", "Sequences in the running batch.", s->running},
        {"fusiond_requests_waiting", "gauge", "Requests queued, waiting for a batch slot.",
         s->waiting},
        {"fusiond_http_requests_in_flight", "gauge",
         "Generating HTTP requests admitted and not yet answered.", v->http_in_flight},
        {"fusiond_kv_cache_tokens", "gauge", "KV cache capacity in tokens.", s->kv_total},
        {"fusiond_batch_size", "gauge", "Sequences in the last engine step.", snap.batch_seqs},
        {"fusiond_batch_tokens", "gauge", "Tokens processed by the last engine step.",
         snap.batch_tokens},
        {"fusiond_prompt_tokens_total", "counter", "Prompt tokens processed.",
         (long long)s->prompt_tokens},
        {"fusiond_prefix_cache_hits_total", "counter",
         "Requests that reused a cached KV cache slot (prefix_cache).", (long long)s->cache_hits},
        {"fusiond_prefix_cache_cached_tokens_total", "counter",
         "Prompt tokens whose KV came from the prefix cache: prefill saved.",
         (long long)s->cached_tokens},
        {"fusiond_prefix_cache_evictions_total", "counter",
         "Cached KV cache slots dropped to make room for admitted requests.",
         (long long)s->cache_evictions},
        {"fusiond_prefix_cache_ring_misses_total", "counter",
         "Admissions whose cached common prefix could not be reused because a sliding-window "
         "layer's ring no longer held the window it needs (prefilled again).",
         (long long)s->cache_ring_misses},
        {"fusiond_prefix_cache_checkpoint_hits_total", "counter",
         "Admissions that reused a cached slot from a context checkpoint (ctx_checkpoints), "
         "its ring no longer holding the window they needed.", (long long)s->cache_ckpt_hits},
        {"fusiond_ctx_checkpoints_total", "counter",
         "Context checkpoints made (copies of the sliding-window layers' window).",
         (long long)s->ckpt_saved},
        {"fusiond_ctx_checkpoint_bytes", "gauge",
         "Host bytes the context checkpoints take now.", (long long)s->ckpt_bytes},
        {"fusiond_prefix_cache_slots", "gauge", "KV cache slots kept for reuse.", s->cached_slots},
        {"fusiond_prefix_cache_tokens", "gauge",
         "Tokens held by the cached slots (given up whenever a request needs them).",
         s->kv_cached},
        {"fusiond_generation_tokens_total", "counter", "Tokens generated.",
         (long long)s->gen_tokens},
        {"fusiond_spec_draft_tokens_total", "counter",
         "Draft tokens verified by speculative decoding (spec_type ngram or draft).",
         (long long)s->draft_tokens},
        {"fusiond_spec_accepted_tokens_total", "counter",
         "Draft tokens the sampler accepted: over fusiond_spec_draft_tokens_total, the "
         "acceptance rate.", (long long)s->draft_accepted},
        {"fusiond_spec_draft_passes_total", "counter",
         "Draft model passes (spec_type draft): each drafts a token for every drafting "
         "sequence at once.", (long long)s->draft_steps},
        {"fusiond_steps_total", "counter", "Engine steps run.", (long long)s->steps},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        header(b, rows[i].name, rows[i].type, rows[i].help);
        sb_printf(b, "%s %lld\n", rows[i].name, rows[i].v);
    }
    header(b, "fusiond_kv_cache_usage_ratio", "gauge", "Fraction of the KV cache in use (0-1).");
    sb_printf(b, "fusiond_kv_cache_usage_ratio %.6g\n",
              s->kv_total > 0 ? (double)s->kv_used / (double)s->kv_total : 0.0);

    header(b, "fusiond_requests_total", "counter",
           "HTTP requests answered, by endpoint and status code.");
    for (int ep = 0; ep < MET_EP_COUNT; ep++)
        for (int i = 0; i < MAX_STATUS && snap.req[ep][i].status; i++)
            sb_printf(b, "fusiond_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
                      met_endpoint_name(ep), snap.req[ep][i].status,
                      (unsigned long long)snap.req[ep][i].n);
    header(b, "fusiond_requests_finished_total", "counter",
           "Sequences finished, by reason (a request with n choices counts n).");
    for (int r = ENG_FINISH_STOP; r <= ENG_FINISH_ERROR; r++)
        sb_printf(b, "fusiond_requests_finished_total{reason=\"%s\"} %llu\n", finish_label[r],
                  (unsigned long long)snap.finished[r]);

    if (st) {
        const char *fused = info && info->fusion ? "true" : "false";
        header(b, "fusiond_op_seconds_total", "counter",
               "Host time spent in each operator class; fused tells whether the deferred-"
               "normalization plan ran.");
        for (int c = 0; c < FB_OP_CLASS_COUNT; c++)
            sb_printf(b, "fusiond_op_seconds_total{op=\"%s\",fused=\"%s\"} %.9f\n",
                      op_label[c], fused, (double)st->ops.host_ns[c] * 1e-9);
        header(b, "fusiond_op_calls_total", "counter", "Operator calls per class.");
        for (int c = 0; c < FB_OP_CLASS_COUNT; c++)
            sb_printf(b, "fusiond_op_calls_total{op=\"%s\",fused=\"%s\"} %llu\n",
                      op_label[c], fused, (unsigned long long)st->ops.calls[c]);
        if (st->ops.dev_total_s > 0) {
            const char *be = info && info->backend ? info->backend : "unknown";
            header(b, "fusiond_device_seconds_total", "counter",
                   "Device time (measured or simulated) on the critical path.");
            sb_adds(b, "fusiond_device_seconds_total{backend=\"");
            label_value(b, be);
            sb_printf(b, "\"} %.9f\n", st->ops.dev_total_s);
            header(b, "fusiond_op_device_seconds_total", "counter",
                   "Device time per operator class.");
            for (int c = 0; c < FB_OP_CLASS_COUNT; c++) {
                sb_printf(b, "fusiond_op_device_seconds_total{op=\"%s\",fused=\"%s\",backend=\"",
                          op_label[c], fused);
                label_value(b, be);
                sb_printf(b, "\"} %.9f\n", st->ops.dev_s[c]);
            }
        }
    }

    for (int k = 0; k < MET_HIST_COUNT; k++) {
        const struct hist_def *d = &hist_defs[k];
        const struct hist *h = &snap.h[k];
        header(b, d->name, "histogram", d->help);
        uint64_t cum = 0;
        for (int i = 0; i < d->n; i++) {
            cum += h->counts[i];
            sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", d->name, d->le[i],
                      (unsigned long long)cum);
        }
        sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", d->name, (unsigned long long)h->count);
        sb_printf(b, "%s_sum %.9g\n", d->name, h->sum);
        sb_printf(b, "%s_count %llu\n", d->name, (unsigned long long)h->count);
    }
}
