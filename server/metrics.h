/* metrics.h: fusiond's Prometheus registry: the latency histograms, the request counters
 * and the text exposition of /metrics (format 0.0.4, `promtool check metrics` clean).
 * Owns its counters; engine gauges (running, waiting, KV use, op times) are passed in at
 * render time from eng_stats().  Thread-safe: the engine thread observes steps while the
 * loop thread observes requests and renders; one mutex guards everything. */
#ifndef FD_METRICS_H
#define FD_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "server/strbuf.h"

typedef struct met met_t;

enum met_hist {
    MET_TTFT,       /* fusiond_time_to_first_token_seconds */
    MET_ITL,        /* fusiond_inter_token_latency_seconds */
    MET_E2E,        /* fusiond_e2e_request_latency_seconds */
    MET_QUEUE,      /* fusiond_request_queue_time_seconds */
    MET_PREFILL,    /* fusiond_request_prefill_time_seconds */
    MET_DECODE,     /* fusiond_request_decode_time_seconds */
    MET_STEP,       /* fusiond_step_seconds */
    MET_HIST_COUNT
};

/* The endpoints fusiond_requests_total is labelled with (a fixed set keeps the label
 * cardinality bounded whatever paths clients try). */
enum met_endpoint {
    MET_EP_COMPLETIONS, MET_EP_CHAT, MET_EP_MODELS, MET_EP_HEALTH, MET_EP_METRICS,
    MET_EP_TOKENIZE, MET_EP_DETOKENIZE, MET_EP_EMBEDDINGS, MET_EP_RESPONSES, MET_EP_INFILL,
    MET_EP_COMPLETION, MET_EP_PROPS, MET_EP_SLOTS, MET_EP_APPLY_TEMPLATE, /* llama-server's */
    MET_EP_RERANK,
    MET_EP_MESSAGES,            /* Anthropic's Messages API and its count_tokens */
    MET_EP_OTHER, MET_EP_COUNT
};
const char *met_endpoint_name(int ep);

int met_create(met_t **out);
void met_free(met_t *m);

void met_observe(met_t *m, int hist, double seconds);
/* One engine step (engine thread): fusiond_step_seconds and the batch gauges. */
void met_step(met_t *m, double seconds, int batch_seqs, int batch_tokens);
void met_request(met_t *m, int endpoint, int status);
void met_finished(met_t *m, int reason); /* enum eng_finish */

/* What the engine side contributes to a scrape; NULL members while loading. */
typedef struct met_view {
    const eng_stats_t *stats;
    const eng_info_t *info;
    int http_in_flight;     /* the server's admitted, unfinished requests */
    bool ready;
    bool draining;
    const float *lora_scales;   /* the global scale of each LoRA adapter (info's lora_paths),
                                   n_lora_scales of them; NULL: none */
    int n_lora_scales;
} met_view_t;

/* Appends the whole exposition to b. */
void met_render(met_t *m, const met_view_t *v, sb_t *b);

/* Bucket upper bounds of a histogram (for tests). */
int met_buckets(int hist, const double **le);

#endif
