/* server.c: libmicrohttpd in external-epoll mode on the daemon's libuv loop, the routes,
 * the request life cycle and the hand-off of engine events.  Everything here runs on the
 * loop thread except on_engine_event (engine thread), which only copies and queues.
 * server/DESIGN.md draws the threads, queues and ownership. */
#include <config.h>

#include "server/server.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/fd.h"
#include "common/log.h"
#include "engine/grammar.h"
#include "engine/sampler.h"
#include "server/anthropic.h"
#include "server/chat.h"
#include "server/jinja.h"
#include "server/toolcall.h"
#include "server/evq.h"
#include "server/infill.h"
#include "server/metrics.h"
#include "server/native.h"
#include "server/openai.h"
#include "server/reasoning.h"
#include "server/request.h"
#include "server/responses.h"
#include "server/strbuf.h"
#include "server/tls.h"

#define TICK_MS 200
/* Inputs of one /v1/embeddings request in the engine at once (embed_next feeds the rest):
 * a full batch of the default max_running, and well below max_waiting. */
#define EMBED_WINDOW 16
#define MAX_DISCARD (64u << 20) /* body bytes read past the limit before hanging up */
#define SHUTDOWN_WAIT_S 10.0
#define INLINE_PREP_BYTES (16u << 10) /* bodies prepared on the loop; larger: thread pool */

enum route {
    R_NONE, R_HEALTH, R_METRICS, R_MODELS, R_MODEL_ONE, R_COMPLETIONS, R_CHAT, R_TOKENIZE,
    R_DETOKENIZE, R_EMBEDDINGS, R_RERANK, R_RESPONSES, R_RESPONSE_ONE, R_RESPONSE_TOKENS, R_INFILL,
    /* llama-server's native API */
    R_NATIVE, R_PROPS, R_PROPS_SET, R_SLOTS, R_SLOT_ACTION, R_APPLY_TEMPLATE,
    R_LORA,
    /* OpenAI's Conversations API (answer_conv) */
    R_CONV, R_CONV_ONE,
    /* Anthropic's Messages API */
    R_MESSAGES, R_MESSAGE_TOKENS
};

static const struct route_def {
    const char *path;
    const char *method;
    int route;
    int ep;                     /* enum met_endpoint */
    bool prefix;
} routes[] = {
    {"/health", "GET", R_HEALTH, MET_EP_HEALTH, false},
    {"/metrics", "GET", R_METRICS, MET_EP_METRICS, false},
    {"/v1/models", "GET", R_MODELS, MET_EP_MODELS, false},
    {"/v1/models/", "GET", R_MODEL_ONE, MET_EP_MODELS, true},
    {"/v1/completions", "POST", R_COMPLETIONS, MET_EP_COMPLETIONS, false},
    {"/v1/chat/completions", "POST", R_CHAT, MET_EP_CHAT, false},
    {"/completions", "POST", R_COMPLETIONS, MET_EP_COMPLETIONS, false},
    {"/chat/completions", "POST", R_CHAT, MET_EP_CHAT, false},
    {"/tokenize", "POST", R_TOKENIZE, MET_EP_TOKENIZE, false},
    {"/detokenize", "POST", R_DETOKENIZE, MET_EP_DETOKENIZE, false},
    {"/v1/embeddings", "POST", R_EMBEDDINGS, MET_EP_EMBEDDINGS, false},
    {"/embeddings", "POST", R_EMBEDDINGS, MET_EP_EMBEDDINGS, false},
    {"/embedding", "POST", R_EMBEDDINGS, MET_EP_EMBEDDINGS, false},
    /* llama-server's reranking (a model with a classification head) */
    {"/rerank", "POST", R_RERANK, MET_EP_RERANK, false},
    {"/v1/rerank", "POST", R_RERANK, MET_EP_RERANK, false},
    {"/reranking", "POST", R_RERANK, MET_EP_RERANK, false},
    {"/v1/reranking", "POST", R_RERANK, MET_EP_RERANK, false},
    {"/infill", "POST", R_INFILL, MET_EP_INFILL, false},
    {"/completion", "POST", R_NATIVE, MET_EP_COMPLETION, false},
    {"/props", "GET", R_PROPS, MET_EP_PROPS, false},
    {"/props", "POST", R_PROPS_SET, MET_EP_PROPS, false},
    {"/slots", "GET", R_SLOTS, MET_EP_SLOTS, false},
    {"/slots/", "POST", R_SLOT_ACTION, MET_EP_SLOTS, true},
    {"/apply-template", "POST", R_APPLY_TEMPLATE, MET_EP_APPLY_TEMPLATE, false},
    {"/v1/responses", "POST", R_RESPONSES, MET_EP_RESPONSES, false},
    {"/responses", "POST", R_RESPONSES, MET_EP_RESPONSES, false},
    /* before the prefix routes below, which the same path also matches */
    {"/v1/responses/input_tokens", "POST", R_RESPONSE_TOKENS, MET_EP_RESPONSES, false},
    {"/responses/input_tokens", "POST", R_RESPONSE_TOKENS, MET_EP_RESPONSES, false},
    {"/v1/responses/", "GET", R_RESPONSE_ONE, MET_EP_RESPONSES, true},
    {"/v1/responses/", "DELETE", R_RESPONSE_ONE, MET_EP_RESPONSES, true},
    {"/responses/", "GET", R_RESPONSE_ONE, MET_EP_RESPONSES, true},
    {"/responses/", "DELETE", R_RESPONSE_ONE, MET_EP_RESPONSES, true},
    /* POST /v1/responses/{id}/cancel (answer_stored); the same route id, so a wrong
     * method on a stored response's path answers 405 with its Allow */
    {"/v1/responses/", "POST", R_RESPONSE_ONE, MET_EP_RESPONSES, true},
    {"/responses/", "POST", R_RESPONSE_ONE, MET_EP_RESPONSES, true},
    {"/v1/conversations", "POST", R_CONV, MET_EP_RESPONSES, false},
    {"/conversations", "POST", R_CONV, MET_EP_RESPONSES, false},
    {"/v1/conversations/", "GET", R_CONV_ONE, MET_EP_RESPONSES, true},
    {"/v1/conversations/", "POST", R_CONV_ONE, MET_EP_RESPONSES, true},
    {"/v1/conversations/", "DELETE", R_CONV_ONE, MET_EP_RESPONSES, true},
    {"/conversations/", "GET", R_CONV_ONE, MET_EP_RESPONSES, true},
    {"/conversations/", "POST", R_CONV_ONE, MET_EP_RESPONSES, true},
    {"/conversations/", "DELETE", R_CONV_ONE, MET_EP_RESPONSES, true},
    /* Anthropic's Messages API (server/anthropic.c) */
    {"/v1/messages", "POST", R_MESSAGES, MET_EP_MESSAGES, false},
    {"/messages", "POST", R_MESSAGES, MET_EP_MESSAGES, false},
    {"/v1/messages/count_tokens", "POST", R_MESSAGE_TOKENS, MET_EP_MESSAGES, false},
    {"/messages/count_tokens", "POST", R_MESSAGE_TOKENS, MET_EP_MESSAGES, false},
    /* llama-server's: list the LoRA adapters with their global scales, and set them */
    {"/lora-adapters", "GET", R_LORA, MET_EP_OTHER, false},
    {"/lora-adapters", "POST", R_LORA, MET_EP_OTHER, false},
};

typedef struct srv_job srv_job_t;

typedef struct srv_choice {
    srv_job_t *job;
    evq_t *q;                   /* read by the engine thread: set before submit */
    int index;
    size_t prompt;              /* which prompt */
    uint64_t eng_id;
    bool running;               /* submitted, DONE not yet processed */
    int finish;
    char error[240];
    sb_t text;                  /* non-streamed: the generated text */
    sb_t tc;                    /* function calling: the call prefill + the generated text */
    size_t tc_sent;             /* streamed: bytes of tc sent as content (the generic format:
                                   of its response's decoded text) */
    bool tc_plain;              /* tc holds a generic response's decoded text: no calls */
    char **tc_ids;              /* streamed: the calls whose first chunk was sent (ids) */
    size_t *tc_args_sent;       /* and the bytes of each one's arguments sent so far */
    size_t tc_heads, tc_cap;
    size_t stream_off;          /* streamed: bytes of text sent so far */
    rsn_t rsn;                  /* the reasoning splitter (job rsn_on) */
    sb_t rsn_text;              /* non-streamed: the reasoning */
    sb_t rsn_r, rsn_c;          /* one token's reasoning and content pieces */
    oai_lp_t *lp;
    size_t n_lp, cap_lp;
    oai_lp_t *plp;              /* the prompt's log-probabilities: positions 1.. */
    size_t n_plp, cap_plp;
    bool head_pending;          /* streamed: the first chunk (echo, role) waits for them */
    int n_gen;
    uint64_t last_ns;
    eng_timings_t t;
    int lost;                   /* output dropped for lack of memory; the engine thread adds
                                   to it too, so every access is atomic (choice_lost) */
    evq_node_t done_node;       /* DONE never waits on malloc */
    int32_t *gen;               /* native answers (/infill, /completion): the generated ids
                                   (stop_type, stopping_word, tokens) */
    size_t tok_sent;            /* native stream: ids of gen sent in frames so far */
    int slot;                   /* /completion: the batch place it ran in (slot_known) */
    bool slot_known;
    size_t n_gen_ids, cap_gen;
    bool has_nl;                /* infill: the output has a newline */
    uint64_t first_ns;          /* when its first token came */
    size_t last_nl;             /* infill: just past the newline n_indent looks at next */
    bool limit_stop;            /* infill: t_max_predict_ms or n_indent cancelled it (a
                                   "limit" stop) */
    float *emb;                 /* embeddings: n_embd floats, written by the engine thread in
                                   its DONE callback before the push (the queue's lock orders
                                   it before the loop's read) */
} srv_choice_t;

struct srv_job {
    srv_t *srv;
    struct MHD_Connection *conn; /* NULL once MHD is done with the request */
    srv_job_t *prev, *next;     /* srv->jobs: jobs with sequences or a response in flight */
    bool listed;
    int refs;                   /* MHD request + stream response + running sequences */
    int route, ep;
    char method[8];
    char path[192];
    uint64_t t0_ns;
    sb_t body;
    size_t discarded;
    bool too_big;
    bool answered;
    bool checked;               /* route, method and auth were decided */
    bool in_upload;             /* answers are held until the body has been read */
    bool in_handler;            /* inside MHD's access handler (where answers are queued) */
    /* tokenization and chat formatting, off the loop on libuv's thread pool */
    uv_work_t work;
    bool preparing;
    int prep_rc;
    rq_err_t prep_err;
    char *prep_body;            /* /tokenize, /detokenize: the answer */
    int *max_tokens;            /* per prompt */
    int status;
    /* generation */
    rq_t rq;
    bool have_rq;
    float lora[RQ_MAX_LORA];    /* the LoRA scales its sequences run under */
    bool admitted;              /* counted in srv->running */
    bool abandoned;             /* answered with an error while sequences still ran */
    bool stream;
    char id[48];
    long long created;
    const char *model;
    int32_t **pids;             /* per prompt: token ids */
    size_t *pn;
    char **echo;                /* per prompt: the prompt text for echo */
    size_t *echo_len;
    size_t n_prompts;
    long long prompt_tokens;
    srv_choice_t *choices;
    int n_choices;
    bool tc_on;                 /* tools offered: calls are parsed out of the output */
    bool rsn_on;                /* the think block is separated (reasoning_format) */
    bool rsn_inside;            /* the prompt opened it (ends in "<think>\n"): the output
                                   starts inside the reasoning */
    bool rsn_harmony;           /* gpt-oss: the output is harmony messages (rsn_init_harmony) */
    bool rsn_inline;            /* harmony with reasoning_format none: analysis in content */
    char *tc_prefill;           /* tool_choice required / named: the call's opening, already
                                   in the prompt, which the output continues */
    /* the reasoning budget (eng_request_t.think_*): the forced tokens (none: no budget) */
    int32_t *think_ids;
    size_t n_think_ids;
    int think_budget;
    const char *think_open, *think_close;
    bool think_inside, think_reopen;
    char *turn;                 /* an assistant prefill: the final turn's text the prompt
                                   ends in (chat_format_prefill), which the output continues:
                                   each choice's splitter reads it first (rsn_prime) */
    size_t turn_len;
    int n_running;
    /* embeddings: inputs go to the engine EMBED_WINDOW at a time, the next as one ends */
    int next_choice;            /* the first not yet submitted */
    int wave_rc;                /* a later submit failed: the answer is that error */
    uint64_t deadline_ns;
    bool client_gone, server_cancel, server_timeout;
    bool suspended;
    uv_poll_t *watch;
    struct MHD_Response *pending; /* non-streamed answer to queue once resumed */
    int pending_status;
    /* /v1/responses: the request as sent (rq is its chat translation), the conversation it
     * continues (previous_response_id's input and output items), its stream's state */
    rs_req_t *rs;
    cJSON *rs_hist;
    rs_stream_t *rss;
    size_t rs_cut;              /* truncation "auto": chat messages before this index, but
                                   the system and developer ones, are left out */
    /* A background response (rs->background) is a stream (rss, detached) whose POST was
     * answered at admission: it runs on without a connection, its readers (its own POST
     * when streamed, GET ?stream=true) follow rss->log, and it is stored when it ends. */
    bool bg;
    bool bg_started;            /* response.in_progress was sent (else it is queued) */
    bool bg_cancel;             /* cancelled (POST .../cancel or DELETE): ends "cancelled" */
    bool bg_deleted;            /* DELETE: not stored at the end */
    char bg_error[240];         /* ends "failed" with this message */
    srv_job_t *src;             /* a reader: the background job it follows (a reference,
                                   unless itself), and how far into its log it has sent */
    size_t src_pos;
    srv_job_t *rnext;           /* src's list of readers (other than itself) */
    srv_job_t *readers;
    /* /v1/messages: the request as sent (rq is its chat translation), its stream's state
     * and how its one choice finished ("stop", "length", "tool_calls") */
    an_req_t *an;
    an_stream_t *ans;
    const char *an_finish;
    sb_t sse;
    bool sse_end;
    bool error_sent;
    uint64_t last_send_ns;
};

struct srv {
    uv_loop_t *loop;
    eng_t *eng;
    const eng_info_t *info;
    const tok_t *tok;
    char *model_id;
    int pooling;                /* embeddings' enum eng_pooling: cfg.pooling, else the model's */
    /* configuration (strings owned) */
    srv_config_t cfg;
    char *host;
    char *chat_template;
    bool tls;                   /* HTTPS: the pair is tls.c's (srv_tls_update replaces it) */
    char **keys;
    int n_keys;
    char **origins;             /* CORS: allowed origins ("*" among them: any) */
    int n_origins;
    rq_limits_t lim;
    /* LoRA: the global scale of each of the engine's adapters (POST /lora-adapters) */
    float lora_scale[RQ_MAX_LORA];
    /* HTTP */
    struct MHD_Daemon *mhd;
    int listen_fd;
    int port;
    uv_poll_t mhd_poll;
    uv_timer_t mhd_timer;
    uv_timer_t tick;
    bool handles_init;
    bool in_mhd, rerun;
    int open_handles;
    evq_t q;
    bool q_init;
    met_t *met;
    srv_job_t *jobs;
    int running;
    bool draining;
    bool closing;               /* srv_destroy has begun */
    int n_preparing;            /* jobs on the thread pool */
    int chat_family;            /* enum chat_family */
    char *jinja_text;           /* the configured template text (chat_template_file, or
                                   chat_template given as text); NULL: the model's */
    jinja_t *jinja;             /* the template chats are rendered with; NULL: chat.c's
                                   built-in formatter of chat_family */
    bool jinja_string_args;     /* chat_jinja_string_args(jinja) */
    bool jinja_typed_content;   /* chat_jinja_typed_content(jinja) */
    /* the tool-call syntax (toolcall.h's family number): chat_family's, or for a template of
     * no known family Qwen's <tool_call> blocks (its text has that marker, as llama-server's
     * Hermes 2 Pro detection) or llama-server's generic JSON (TC_GENERIC) */
    int tc_syntax;
    bool jinja_calls;           /* chat_jinja_renders_calls(jinja) */
    bool jinja_results;         /* chat_jinja_renders_results(jinja) */
    long long loaded_at;        /* "created" of the model in /v1/models */
    uint64_t id_seed, id_ctr;
    rs_store_t *store;          /* finished responses (previous_response_id, GET) */
    rs_store_t *convs;          /* conversations: the object's JSON, its items as input */
};

/* ---------------------------------------------------------------- configuration */

void srv_config_default(srv_config_t *c)
{
    memset(c, 0, sizeof *c);
    c->host = "127.0.0.1";
    c->port = 8080;
    c->listen_fd = -1;
    c->max_body_bytes = 1u << 20;
    c->request_timeout_s = 600;
    c->max_connections = 256;
    c->idle_timeout_s = 60;
    c->retry_after_s = 1;
    c->ping_interval_s = 5;
    c->max_n = 16;
    c->access_log = true;
    c->embeddings = true;
    c->slots = true;
    c->responses_store = 1000;
    c->responses_store_bytes = 64u << 20;
}

static int check_reloadable(const srv_config_t *c, char *err, size_t errlen)
{
    if (c->max_body_bytes < 64) {
        snprintf(err, errlen, "max_body_bytes %zu is too small (at least 64)", c->max_body_bytes);
        return -EINVAL;
    }
    if (!(c->request_timeout_s >= 0)) {
        snprintf(err, errlen, "request_timeout must be >= 0");
        return -EINVAL;
    }
    if (c->retry_after_s < 0 || c->retry_after_s > 86400) {
        snprintf(err, errlen, "retry_after %d is out of range [0, 86400]", c->retry_after_s);
        return -EINVAL;
    }
    if (!(c->ping_interval_s > 0)) {
        snprintf(err, errlen, "ping_interval must be > 0");
        return -EINVAL;
    }
    if (c->max_n < 1 || c->max_n > 256) {
        snprintf(err, errlen, "max_n %d is out of range [1, 256]", c->max_n);
        return -EINVAL;
    }
    for (int i = 0; c->api_keys && c->api_keys[i]; i++) {
        if (!c->api_keys[i][0]) {
            snprintf(err, errlen, "API key %d is empty", i + 1);
            return -EINVAL;
        }
    }
    /* An origin is sent back in a header: nothing that could break the header line. */
    for (int i = 0; c->cors_origins && c->cors_origins[i]; i++) {
        const char *o = c->cors_origins[i];
        bool ok = o[0] != 0;
        for (const char *p = o; *p; p++)
            ok &= *p > 0x20 && *p < 0x7f && *p != ',';
        if (!ok) {
            snprintf(err, errlen, "CORS origin %d ('%.100s') is empty or not printable ASCII",
                     i + 1, o);
            return -EINVAL;
        }
    }
    return 0;
}

static void free_keys(char **keys, int n)
{
    for (int i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

static int copy_keys(const char *const *src, char ***out, int *n_out)
{
    int n = 0;
    while (src && src[n])
        n++;
    char **k = calloc((size_t)n + 1, sizeof *k);
    if (!k)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        k[i] = strdup(src[i]);
        if (!k[i]) {
            free_keys(k, i);
            return -ENOMEM;
        }
    }
    *out = k;
    *n_out = n;
    return 0;
}

static void apply_reloadable(srv_t *s, const srv_config_t *c)
{
    s->cfg.max_body_bytes = c->max_body_bytes;
    s->cfg.request_timeout_s = c->request_timeout_s;
    s->cfg.retry_after_s = c->retry_after_s;
    s->cfg.ping_interval_s = c->ping_interval_s;
    s->cfg.max_n = c->max_n;
    s->cfg.access_log = c->access_log;
    s->lim.max_n = c->max_n;
}

int srv_reconfigure(srv_t *s, const srv_config_t *c, char *err, size_t errlen)
{
    int rc = check_reloadable(c, err, errlen);
    if (rc)
        return rc;
    char **keys, **origins;
    int n, n_origins;
    if ((rc = copy_keys(c->api_keys, &keys, &n))) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    if ((rc = copy_keys(c->cors_origins, &origins, &n_origins))) {
        free_keys(keys, n);
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    free_keys(s->keys, s->n_keys);
    s->keys = keys;
    s->n_keys = n;
    free_keys(s->origins, s->n_origins);
    s->origins = origins;
    s->n_origins = n_origins;
    apply_reloadable(s, c);
    return 0;
}

/* ---------------------------------------------------------------- lifecycle helpers */

static void on_handle_closed(uv_handle_t *h)
{
    srv_t *s = h->data;
    s->open_handles--;
}

static void on_watch_closed(uv_handle_t *h)
{
    free(h);
}

static void job_list_add(srv_job_t *j)
{
    srv_t *s = j->srv;
    if (j->listed)
        return;
    j->prev = NULL;
    j->next = s->jobs;
    if (s->jobs)
        s->jobs->prev = j;
    s->jobs = j;
    j->listed = true;
}

static void job_list_del(srv_job_t *j)
{
    srv_t *s = j->srv;
    if (!j->listed)
        return;
    if (j->prev)
        j->prev->next = j->next;
    else
        s->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->listed = false;
}

static void job_unref(srv_job_t *j);

/* A reader stops following its background job (the job may go with it). */
static void reader_detach(srv_job_t *j)
{
    srv_job_t *src = j->src;
    j->src = NULL;
    if (!src || src == j)
        return;
    for (srv_job_t **p = &src->readers; *p; p = &(*p)->rnext) {
        if (*p == j) {
            *p = j->rnext;
            break;
        }
    }
    job_unref(src);
}

static void job_free(srv_job_t *j)
{
    reader_detach(j);
    job_list_del(j);
    if (j->pending)
        MHD_destroy_response(j->pending);
    for (int i = 0; i < j->n_choices; i++) {
        sb_free(&j->choices[i].text);
        rsn_free(&j->choices[i].rsn);
        sb_free(&j->choices[i].rsn_text);
        sb_free(&j->choices[i].rsn_r);
        sb_free(&j->choices[i].rsn_c);
        sb_free(&j->choices[i].tc);
        for (size_t k = 0; k < j->choices[i].tc_heads; k++)
            free(j->choices[i].tc_ids[k]);
        free(j->choices[i].tc_ids);
        free(j->choices[i].tc_args_sent);
        free(j->choices[i].lp);
        free(j->choices[i].plp);
        free(j->choices[i].emb);
        free(j->choices[i].gen);
    }
    free(j->choices);
    free(j->tc_prefill);
    free(j->turn);
    free(j->think_ids);
    free(j->prep_body);
    free(j->max_tokens);
    for (size_t p = 0; p < j->n_prompts; p++) {
        if (j->pids)
            free(j->pids[p]);
        if (j->echo)
            free(j->echo[p]);
    }
    free(j->pids);
    free(j->pn);
    free(j->echo);
    free(j->echo_len);
    if (j->have_rq)
        rq_free(&j->rq);
    if (j->rs) {
        rs_free(j->rs);
        free(j->rs);
    }
    cJSON_Delete(j->rs_hist);
    if (j->an) {
        an_free(j->an);
        free(j->an);
    }
    free(j->ans);
    if (j->rss) {
        rs_stream_free(j->rss);
        free(j->rss);
    }
    sb_free(&j->body);
    sb_free(&j->sse);
    free(j);
}

static void job_unref(srv_job_t *j)
{
    if (--j->refs == 0)
        job_free(j);
}

/* MHD only runs inside mhd_run, and never re-entrantly. */
static void mhd_run(srv_t *s);

static void on_mhd_timer(uv_timer_t *t)
{
    mhd_run(t->data);
}

static void kick(srv_t *s)
{
    if (s->mhd && s->handles_init)
        uv_timer_start(&s->mhd_timer, on_mhd_timer, 0, 0);
}

static void mhd_run(srv_t *s)
{
    if (!s->mhd)
        return;
    if (s->in_mhd) {
        s->rerun = true;
        return;
    }
    s->in_mhd = true;
    do {
        s->rerun = false;
        /* At the connection limit MHD leaves the listening socket out of its epoll set and
         * puts it back only at the start of a run: when this run closed connections, run
         * again, or nothing would ever accept the clients queued meanwhile. */
        const union MHD_DaemonInfo *di =
            MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        unsigned before = di ? di->num_connections : 0;
        MHD_run(s->mhd);
        di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (di && di->num_connections < before)
            s->rerun = true;
    } while (s->rerun);
    s->in_mhd = false;
    MHD_UNSIGNED_LONG_LONG to = 0;
    if (MHD_get_timeout(s->mhd, &to) == MHD_YES)
        uv_timer_start(&s->mhd_timer, on_mhd_timer, to, 0);
    else
        uv_timer_stop(&s->mhd_timer);
}

static void on_mhd_poll(uv_poll_t *p, int status, int events)
{
    mhd_run(p->data);
}

/* ---------------------------------------------------------------- answers */

static void resume(srv_job_t *j);

static void add_common_headers(srv_t *s, struct MHD_Response *r, int status)
{
    if (status == 503) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", s->cfg.retry_after_s);
        MHD_add_response_header(r, "Retry-After", ra);
    }
    if (s->draining)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
}

static struct MHD_Response *make_response(srv_t *s, int status, const char *ctype, char *body,
                                          size_t len)
{
    static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                              "\"server_error\",\"param\":null,\"code\":null}}";
    struct MHD_Response *r;
    if (body)
        r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    else
        r = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return NULL;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    add_common_headers(s, r, status);
    return r;
}

static void new_id(srv_t *s, const char *prefix, char *out, size_t cap)
{
    uint64_t z = s->id_seed + 0x9e3779b97f4a7c15ull * ++s->id_ctr;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    snprintf(out, cap, "%s%016llx%08llx", prefix, (unsigned long long)z,
             (unsigned long long)(s->id_ctr & 0xffffffffu));
}

/* The request's id: a completion's `id` and every answer's X-Request-Id, which the OpenAI
 * SDKs show as a response's `_request_id` and an error's `requestID`, and the access log
 * prints, so what a client reports names the server's log line.  Made on first use
 * (generation makes it before it answers). */
/* llama-server's native routes answer errors in its shape (native.h). */
static bool native_route(int route)
{
    return route == R_NATIVE || route == R_INFILL || route == R_PROPS || route == R_PROPS_SET ||
           route == R_SLOTS || route == R_SLOT_ACTION || route == R_APPLY_TEMPLATE;
}

/* Anthropic's routes (and any path under them: their 404s) answer errors in its shape. */
static bool anthropic_path(const char *path)
{
    static const char *const roots[] = {"/v1/messages", "/messages"};
    for (size_t k = 0; k < FD_ARRAY_LEN(roots); k++) {
        size_t n = strlen(roots[k]);
        if (strncmp(path, roots[k], n) == 0 && (path[n] == 0 || path[n] == '/'))
            return true;
    }
    return false;
}

static char *err_body(const srv_job_t *j, int status, const char *type, const char *code,
                      const char *param, const char *msg)
{
    if (anthropic_path(j->path))
        return an_error(status, msg);
    return native_route(j->route) ? nat_error(status, type, msg)
                                  : oai_error(status, type, code, param, msg);
}

static const char *job_id(srv_job_t *j)
{
    if (!j->id[0])
        new_id(j->srv, j->route == R_CHAT ? "chatcmpl-" : j->route == R_COMPLETIONS ? "cmpl-"
                       : j->route == R_RESPONSES ? "resp_"
                       : j->route == R_MESSAGES ? "msg_" : "req-",
               j->id, sizeof j->id);
    return j->id;
}

/* CORS (srv_config.cors_origins).  The origin this request's answer is shared with: its
 * Origin header when that is on the list (*any set when the list allows every origin), else
 * NULL: no CORS configured, no Origin (not a browser's cross-origin call), or an origin not
 * allowed, whose page the browser then keeps from reading the answer. */
static const char *cors_origin(const srv_job_t *j, bool *any)
{
    const srv_t *s = j->srv;
    *any = false;
    const char *o = s->n_origins && j->conn
                        ? MHD_lookup_connection_value(j->conn, MHD_HEADER_KIND, "Origin")
                        : NULL;
    if (!o || !*o)
        return NULL;
    for (int i = 0; i < s->n_origins; i++) {
        if (strcmp(s->origins[i], "*") == 0)
            *any = true;
        else if (strcasecmp(s->origins[i], o) == 0)
            return o;
    }
    return *any ? o : NULL;
}

static bool cors_any(const srv_t *s)
{
    for (int i = 0; i < s->n_origins; i++)
        if (strcmp(s->origins[i], "*") == 0)
            return true;
    return false;
}

static void add_cors_headers(srv_job_t *j, struct MHD_Response *r)
{
    srv_t *s = j->srv;
    if (!s->n_origins)
        return;
    bool any;
    const char *o = cors_origin(j, &any);
    /* With a list, the answer depends on the Origin: caches must key on it, whichever
     * origin (or none) this one came from. */
    if (!cors_any(s))
        MHD_add_response_header(r, MHD_HTTP_HEADER_VARY, "Origin");
    if (!o)
        return;
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, any ? "*" : o);
    /* What the OpenAI SDKs read besides the safelisted headers: the request id (a response's
     * _request_id, an error's requestID) and Retry-After (their retries wait it out). */
    MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id, Retry-After");
}

static enum MHD_Result queue(srv_job_t *j, int status, struct MHD_Response *r)
{
    if (!r)
        return MHD_NO;
    /* A held answer passes here twice (held, then queued): its headers go on once. */
    if (!MHD_get_response_header(r, "X-Request-Id")) {
        MHD_add_response_header(r, "X-Request-Id", job_id(j));
        /* the Anthropic SDKs read it from request-id (a message's _request_id) */
        if (anthropic_path(j->path))
            MHD_add_response_header(r, "request-id", job_id(j));
        add_cors_headers(j, r);
    }
    if (j->in_upload || !j->in_handler) {
        /* MHD takes a response only inside the access handler, and there only before or
         * after the body: hold it, and outside the handler wake the connection for it. */
        j->pending = r;
        j->pending_status = status;
        j->answered = true;
        if (!j->in_handler)
            resume(j);
        return MHD_YES;
    }
    enum MHD_Result ok = MHD_queue_response(j->conn, (unsigned)status, r);
    MHD_destroy_response(r);
    j->answered = true;
    j->status = status;
    return ok;
}

static enum MHD_Result answer_json(srv_job_t *j, int status, char *body)
{
    size_t len = body ? strlen(body) : 0;
    return queue(j, body ? status : 500,
                 make_response(j->srv, status, "application/json", body, len));
}

/* The method of route (the first listed: a stored response's also takes DELETE). */
static const char *route_method(int route)
{
    for (size_t i = 0; i < FD_ARRAY_LEN(routes); i++)
        if (routes[i].route == route)
            return routes[i].method;
    return "GET";
}

static enum MHD_Result answer_err(srv_job_t *j, const rq_err_t *e)
{
    struct MHD_Response *r;
    /* llama-server's own shape of a prompt the context cannot hold, on its routes */
    bool ctx = native_route(j->route) && e->n_ctx > 0 && e->code &&
               strcmp(e->code, "context_length_exceeded") == 0;
    char *body = ctx ? nat_error_ctx(e->n_prompt, e->n_ctx)
                     : err_body(j, e->status, e->type, e->code, e->param, e->message);
    r = make_response(j->srv, e->status, "application/json", body, body ? strlen(body) : 0);
    if (r && e->status == 401)
        MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    if (r && e->status == 405)
        MHD_add_response_header(r, "Allow", j->route == R_RESPONSE_ONE ? "GET, DELETE"
                                            : j->route == R_CONV_ONE   ? "GET, POST, DELETE"
                                                                       : route_method(j->route));
    return queue(j, e->status, r);
}

static enum MHD_Result answer_fail(srv_job_t *j, int status, const char *type, const char *code,
                                   const char *param, const char *fmt, ...) FD_PRINTF(6, 7);
static enum MHD_Result answer_fail(srv_job_t *j, int status, const char *type, const char *code,
                                   const char *param, const char *fmt, ...)
{
    rq_err_t e;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    rq_fail(&e, status, type, param, "%s", msg);
    e.code = code;
    return answer_err(j, &e);
}

static enum MHD_Result answer_unavailable(srv_job_t *j, const char *code, const char *msg)
{
    return answer_fail(j, 503, "service_unavailable_error", code, NULL, "%s", msg);
}

/* ---------------------------------------------------------------- suspend / resume */

static void on_watch(uv_poll_t *p, int status, int events);

static void watch_stop(srv_job_t *j)
{
    if (!j->watch)
        return;
    uv_poll_stop(j->watch);
    uv_close((uv_handle_t *)j->watch, on_watch_closed);
    j->watch = NULL;
}

/* MHD does not watch a suspended socket, and a stream is suspended between tokens: a poll
 * for the peer's hang-up, from admission to the end of the request, catches a client that
 * leaves at any moment.  It only asks for UV_DISCONNECT, so it never competes with MHD for
 * the request bytes.  Without it (no memory) a gone client is still found at the next write. */
static void watch_start(srv_job_t *j)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(j->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci || j->watch)
        return;
    uv_poll_t *w = malloc(sizeof *w);
    if (!w)
        return;
    if (uv_poll_init_socket(j->srv->loop, w, ci->connect_fd) != 0) {
        free(w);
        return;
    }
    w->data = j;
    if (uv_poll_start(w, UV_DISCONNECT, on_watch) != 0) {
        uv_close((uv_handle_t *)w, on_watch_closed);
        return;
    }
    j->watch = w;
}

static void suspend(srv_job_t *j)
{
    if (j->suspended || !j->conn)
        return;
    MHD_suspend_connection(j->conn);
    j->suspended = true;
}

static void resume(srv_job_t *j)
{
    if (!j->suspended || !j->conn)
        return;
    j->suspended = false;
    MHD_resume_connection(j->conn);
    kick(j->srv);
}

static void cancel_job(srv_job_t *j)
{
    for (int i = 0; i < j->n_choices; i++)
        if (j->choices[i].running)
            eng_cancel(j->srv->eng, j->choices[i].eng_id);
}

static void on_watch(uv_poll_t *p, int status, int events)
{
    srv_job_t *j = p->data;
    if (status == 0 && !(events & UV_DISCONNECT))
        return;
    j->client_gone = true;
    watch_stop(j);
    cancel_job(j);
    /* Let MHD find the dead socket and finish the request. */
    resume(j);
}

/* ---------------------------------------------------------------- engine events */

static bool choice_lost(const srv_choice_t *c)
{
    return __atomic_load_n(&c->lost, __ATOMIC_RELAXED) != 0;
}

static void choice_lose(srv_choice_t *c)
{
    __atomic_add_fetch(&c->lost, 1, __ATOMIC_RELAXED);
}

static void on_engine_event(void *ud, const eng_event_t *ev)
{
    srv_choice_t *c = ud;
    evq_t *q = c->q;
    if (ev->embedding && c->emb &&
        ev->n_embedding == (c->job->rq.kind == RQ_RERANK ? c->job->srv->info->n_cls_out
                                                         : c->job->srv->info->n_embd))
        memcpy(c->emb, ev->embedding, sizeof(float) * (size_t)ev->n_embedding);
    evq_node_t *n = evq_copy(ev, c, ev->type == ENG_EV_DONE ? &c->done_node : NULL);
    if (!n) {
        choice_lose(c);
        return;
    }
    evq_push(q, n); /* c may be freed by the loop from here on */
}

static const char *finish_reason(int finish)
{
    return finish == ENG_FINISH_STOP ? "stop" : "length";
}

static void job_timings(const srv_job_t *j, oai_timings_t *t)
{
    memset(t, 0, sizeof *t);
    t->queue_ms = t->ttft_ms = -1;
    for (int i = 0; i < j->n_choices; i++) {
        const eng_timings_t *ct = &j->choices[i].t;
        if (t->queue_ms < 0 || ct->queue_s * 1e3 < t->queue_ms)
            t->queue_ms = ct->queue_s * 1e3;
        if (j->choices[i].n_gen && (t->ttft_ms < 0 || ct->ttft_s * 1e3 < t->ttft_ms))
            t->ttft_ms = ct->ttft_s * 1e3;
        t->prompt_ms = FD_MAX(t->prompt_ms, ct->prefill_s * 1e3);
        t->predicted_ms = FD_MAX(t->predicted_ms, ct->decode_s * 1e3);
        t->device_ms = FD_MAX(t->device_ms, ct->device_s * 1e3); /* choices share steps */
        t->prompt_n += ct->n_prompt;
        t->predicted_n += j->choices[i].n_gen;
        t->timed_out |= j->choices[i].finish == ENG_FINISH_TIMEOUT || j->server_timeout;
    }
    if (t->queue_ms < 0)
        t->queue_ms = 0;
    if (t->ttft_ms < 0)
        t->ttft_ms = 0;
    t->total_ms = (double)(fd_now_ns() - j->t0_ns) * 1e-6;
}

/* Usage's prompt tokens served from the prefix cache: per prompt the most any of its
 * choices reused (prompt_tokens counts each prompt once however many choices it has). */
static void job_usage(const srv_job_t *j, oai_resp_t *r)
{
    r->usage = true;
    r->prompt_tokens = j->prompt_tokens;
    r->cached_details = j->srv->cfg.prefix_cache;
    r->cached_tokens = 0;
    for (size_t p = 0; p < j->n_prompts; p++) {
        int most = 0;
        for (int i = 0; i < j->n_choices; i++)
            if (j->choices[i].prompt == p)
                most = FD_MAX(most, j->choices[i].t.n_cached);
        r->cached_tokens += most;
    }
    r->reasoning_details = j->rsn_on && !j->rsn_inline;
    r->reasoning_tokens = 0;
    for (int i = 0; j->rsn_on && i < j->n_choices; i++)
        r->reasoning_tokens += j->choices[i].rsn.n_reasoning_tokens;
}

static void sse_add_json(srv_job_t *j, char *json)
{
    if (!json) {
        j->sse.failed = true;
        return;
    }
    sb_adds(&j->sse, "data: ");
    sb_adds(&j->sse, json);
    sb_adds(&j->sse, "\n\n");
    free(json);
}

static void resp_init(const srv_job_t *j, oai_resp_t *r, bool chunk)
{
    memset(r, 0, sizeof *r);
    r->kind = j->rq.kind;
    r->chunk = chunk;
    r->id = j->id;
    r->model = j->model;
    r->created = j->created;
    r->tok = j->srv->tok;
}

/* Whether the prompt's log-probabilities are asked for: completions with echo and logprobs,
 * or vLLM's prompt_logprobs. */
static bool job_wants_plp(const srv_job_t *j)
{
    return (j->rq.echo && j->rq.logprobs >= 0) || j->rq.prompt_logprobs >= 0;
}

/* Choice c's prompt part of an answer: echoed tokens, their logprobs, prompt_logprobs. */
static void choice_prompt(const srv_job_t *j, const srv_choice_t *c, oai_choice_t *ch)
{
    if (j->rq.echo && j->rq.logprobs >= 0) {
        ch->logprobs = true;
        ch->echo_ids = j->pids[c->prompt];
        ch->n_echo = j->pn[c->prompt];
        ch->echo_top = j->rq.logprobs;
    }
    ch->plp = c->plp;
    ch->n_plp = c->n_plp;
    ch->prompt_logprobs = j->rq.prompt_logprobs >= 0;
    ch->prompt_top = FD_MAX(j->rq.prompt_logprobs, 0);
    ch->plp_ids = j->pids[c->prompt];
    ch->n_plp_ids = j->pn[c->prompt];
}

/* The first streamed chunk of choice c: the role (chat) or the echoed prompt (completions),
 * with the prompt's log-probabilities when they were asked for. */
/* One chunk of a chat or completions stream holding the one choice ch (and timings, or
 * NULL). */
static void sse_choice(srv_job_t *j, const oai_choice_t *ch, const oai_timings_t *t)
{
    oai_resp_t r;
    resp_init(j, &r, true);
    r.choices = ch;
    r.n_choices = 1;
    r.usage_null = j->rq.include_usage;
    r.timings = t;
    sse_add_json(j, oai_response(&r));
}

static void sse_head(srv_job_t *j, srv_choice_t *c)
{
    c->head_pending = false;
    if (j->rss && j->bg) {
        /* created and queued went out at admission; the first token starts it */
        if (!j->bg_started) {
            j->bg_started = true;
            j->rss->res.status = "in_progress";
            rs_stream_status(j->rss, &j->sse, "response.in_progress");
        }
        return;
    }
    if (j->rss) {
        if (j->rss->seq == 0)
            rs_stream_begin(j->rss, &j->sse);
        return;
    }
    if (j->ans) {
        an_stream_begin(j->ans, &j->sse);
        return;
    }
    bool chat = j->rq.kind == RQ_CHAT;
    if (!chat && !j->rq.echo && j->rq.prompt_logprobs < 0)
        return;
    if (!chat && !j->echo_len[c->prompt] && !job_wants_plp(j))
        return;
    oai_choice_t ch = {.index = c->index, .role = chat};
    if (!chat && j->rq.echo) {
        ch.text = j->echo[c->prompt];
        ch.text_len = j->echo_len[c->prompt];
    }
    choice_prompt(j, c, &ch);
    sse_choice(j, &ch, NULL);
}

/* A choice's log-probabilities as the Responses API's output_text logprobs. */
static cJSON *rs_logprobs(const srv_job_t *j, const oai_lp_t *lp, size_t n)
{
    char *t = oai_token_logprobs(j->srv->tok, lp, n);
    cJSON *a = t ? cJSON_Parse(t) : NULL;
    free(t);
    return a;
}

static int decode_text(const tok_t *tok, const int32_t *ids, size_t n, bool render_special,
                       char **out, size_t *len);

/* The stop string that ended choice c, or NULL (the model's end of generation, a length
 * stop): the engine trims a stop string from the text it releases, so the generated ids
 * (kept for native answers and /v1/messages) hold it where the released text ends. */
static const char *stop_matched(srv_job_t *j, const srv_choice_t *c)
{
    if (c->finish != ENG_FINISH_STOP || j->rq.n_stop == 0)
        return NULL;
    char *gen = NULL;
    size_t gen_len = 0;
    const char *hit = NULL;
    if (decode_text(j->srv->tok, c->gen, c->n_gen_ids, false, &gen, &gen_len) == 0)
        for (int i = 0; i < j->rq.n_stop && !hit; i++) {
            size_t sl = strlen(j->rq.stop[i]);
            if (c->stream_off + sl <= gen_len && memcmp(gen + c->stream_off, j->rq.stop[i], sl) == 0)
                hit = j->rq.stop[i];
        }
    free(gen);
    return hit;
}

/* The answer of /infill and /completion is llama-server's native shape. */
static bool native_answer(const srv_job_t *j)
{
    return j->rq.kind == RQ_INFILL || j->rq.kind == RQ_NATIVE;
}

/* A request's settings as llama-server's params object shows them (generation_settings,
 * /slots). */
static void job_params(const srv_job_t *j, nat_params_t *p)
{
    const rq_t *r = &j->rq;
    *p = (nat_params_t){.n_predict = r->max_tokens > 0 ? r->max_tokens : -1,
                        .s = &r->sampling, .stop = (const char *const *)r->stop,
                        .n_stop = r->n_stop, .ignore_eos = r->ignore_eos, .stream = r->stream,
                        .n_probs = r->kind == RQ_NATIVE ? r->n_probs : FD_MAX(r->logprobs, 0),
                        .json_schema = r->grammar != NULL, .grammar = r->grammar_text};
}

/* The native answer for choice c: a stream frame of text (with the ids and probabilities
 * that came since the last frame), or (final) the whole answer with content (streamed: "",
 * the text went out in frames). */
static char *infill_answer(srv_job_t *j, srv_choice_t *c, const char *text, size_t len,
                           bool final, const oai_lp_t *lp)
{
    srv_t *s = j->srv;
    size_t pi = c->prompt;
    inf_answer_t a = {.index = c->index, .content = text, .content_len = len, .stop = final,
                      .model = j->model, .tokens_predicted = c->n_gen,
                      .tokens_evaluated = (long long)j->pn[pi], .slot_known = c->slot_known,
                      .id_slot = c->slot};
    cJSON *probs = NULL, *settings = NULL;
    if (j->stream && !final) {
        /* a frame carries the ids generated since the last one (text may have been held),
         * and, with n_probs, the probabilities of its token */
        a.tokens = c->gen + c->tok_sent;
        a.n_tokens = c->n_gen_ids - c->tok_sent;
        c->tok_sent = c->n_gen_ids;
        if (lp && !(probs = nat_probs(s->tok, lp, 1, j->rq.post_sampling_probs)))
            return NULL;
        a.probs = probs;
    }
    if (!final) {
        char *out = inf_answer_json(&a);
        cJSON_Delete(probs);
        return out;
    }
    oai_timings_t t;
    job_timings(j, &t);
    /* as llama-server counts it: the prefill beyond what the cache served */
    t.prompt_n = c->t.n_prompt - c->t.n_cached;
    /* this completion's own timings */
    t.prompt_ms = c->t.prefill_s * 1e3;
    t.predicted_n = c->n_gen;
    t.predicted_ms = c->t.decode_s * 1e3;
    if (!j->stream && j->rq.return_tokens) {
        a.tokens = c->gen;
        a.n_tokens = c->n_gen_ids;
    }
    nat_params_t np;
    job_params(j, &np);
    if (!(settings = nat_params_json(&np)))
        return NULL;
    a.settings = settings;
    if (!j->stream && j->rq.n_probs > 0) {
        if (!(probs = nat_probs(s->tok, c->lp, c->n_lp, j->rq.post_sampling_probs))) {
            cJSON_Delete(settings);
            return NULL;
        }
        a.probs = probs;
    }
    a.timings = &t;
    a.tokens_cached = (long long)j->pn[pi] + c->n_gen;
    a.cache_n = c->t.n_cached;
    a.has_new_line = c->has_nl;
    bool timeout = c->finish == ENG_FINISH_TIMEOUT || j->server_timeout;
    a.truncated = c->finish == ENG_FINISH_LENGTH &&
                  (long long)j->pn[pi] + c->n_gen >= s->info->n_ctx;
    a.stop_type = c->finish == ENG_FINISH_LENGTH || timeout ? "limit" : "none";
    char *prompt = NULL;
    if (c->finish == ENG_FINISH_STOP) {
        int32_t last = c->n_gen_ids ? c->gen[c->n_gen_ids - 1] : -1;
        a.stop_type = last >= 0 && tok_is_eog(s->tok, last) && !j->rq.ignore_eos ? "eos"
                                                                                 : "word";
        if (strcmp(a.stop_type, "word") == 0)
            a.stopping_word = stop_matched(j, c);
    }
    size_t plen = 0;
    if (decode_text(s->tok, j->pids[pi], j->pn[pi], true, &prompt, &plen) == 0) {
        a.prompt = prompt;
        a.prompt_len = plen;
    }
    a.fields = (const char *const *)j->rq.response_fields;
    a.n_fields = j->rq.n_response_fields;
    char *out = inf_answer_json(&a);
    free(prompt);
    cJSON_Delete(probs);
    cJSON_Delete(settings);
    return out;
}

/* One streamed chunk for choice c: text delta and/or logprobs and/or finish. */
static void sse_chunk(srv_job_t *j, srv_choice_t *c, const char *text, size_t len,
                      const oai_lp_t *lp, const char *finish, bool role, bool timings)
{
    if (j->rss) {
        /* /v1/responses: text deltas of the message item, which the finish closes */
        cJSON *lj = lp ? rs_logprobs(j, lp, 1) : NULL;
        if (len || (lj && j->rss->msg >= 0))
            rs_stream_text(j->rss, &j->sse, text, len, lj);
        else
            cJSON_Delete(lj);
        if (finish)
            rs_stream_close(j->rss, &j->sse, strcmp(finish, "length") == 0);
        return;
    }
    if (j->ans) {
        /* /v1/messages: text deltas of a text block; the finish is message_delta's */
        an_stream_text(j->ans, &j->sse, text, len);
        if (finish)
            j->an_finish = finish;
        return;
    }
    if (native_answer(j)) {
        sse_add_json(j, infill_answer(j, c, finish ? "" : text, finish ? 0 : len, finish != NULL,
                                      lp));
        return;
    }
    oai_choice_t ch = {.index = c->index, .text = text, .text_len = len,
                       .finish_reason = finish, .role = role,
                       .logprobs = lp != NULL, .lp = lp, .n_lp = lp ? 1 : 0};
    oai_timings_t t;
    if (timings)
        job_timings(j, &t);
    sse_choice(j, &ch, timings ? &t : NULL);
}

/* Parses choice c's tool calls (function calling on); 0 and *out filled, else the output is
 * content.  Ids differ per server, request and choice. */
static int choice_calls(srv_job_t *j, const srv_choice_t *c, tc_result_t *out)
{
    const rq_t *r = &j->rq;
    if (!j->tc_on || !c->tc.buf || c->tc_plain)
        return -ENOENT;
    uint64_t seed = j->srv->id_seed ^ fd_now_ns() ^ ((uint64_t)c->index << 40);
    return tc_parse(j->srv->tc_syntax, c->tc.buf, c->tc.len, r->tool_names, r->n_tools,
                    r->parallel_tool_calls, seed, out);
}

/* The generic format's answer, when it is (a prefix of) {"response": "..."}: its decoded text
 * replaces the JSON in c->tc, which is then read as the content (a stream sent its first
 * tc_sent bytes from the same decoding).  Calls or malformed JSON stay as they are: the
 * parse reads the calls, or the whole text is the content. */
static void generic_unwrap(srv_choice_t *c)
{
    char *dec;
    size_t n;
    int rc = c->tc.buf ? tc_generic_content(c->tc.buf, c->tc.len, &dec, &n) : -ENOENT;
    if (rc == -ENOMEM) {
        choice_lose(c);
        return;
    }
    if (rc) {
        if (c->tc_sent) /* decoded text went out: the raw JSON cannot follow it */
            c->tc_sent = c->tc.len;
        return;
    }
    sb_reset(&c->tc);
    sb_add(&c->tc, dec, n);
    free(dec);
    c->tc_plain = true;
}

static void sse_call(srv_job_t *j, const srv_choice_t *c, const oai_tool_call_t *t)
{
    if (j->rss) {
        if (t->id)
            rs_stream_call(j->rss, &j->sse, t->id, t->name);
        if (t->arguments && t->arguments[0])
            rs_stream_args(j->rss, &j->sse, t->arguments);
        return;
    }
    if (j->ans) {
        if (t->id)
            an_stream_tool(j->ans, &j->sse, t->id, t->name);
        an_stream_args(j->ans, &j->sse, t->arguments);
        return;
    }
    oai_choice_t ch = {.index = c->index, .calls = t, .n_calls = 1};
    sse_choice(j, &ch, NULL);
}

/* Streams the calls as far as the held text shows them (toolcall.h's tc_scan): a call's
 * first chunk (index, id, type, name, "" arguments) once its name is complete and offered
 * and its arguments object has begun, then each new piece of the arguments as written. */
static void stream_call_deltas(srv_job_t *j, srv_choice_t *c)
{
    const rq_t *r = &j->rq;
    tc_span_t sp[16];
    size_t n = 0;
    tc_scan(j->srv->tc_syntax, c->tc.buf, c->tc.len, sp, FD_ARRAY_LEN(sp), &n);
    if (!r->parallel_tool_calls)
        n = FD_MIN(n, 1);
    for (size_t k = 0; k < n; k++) {
        const char *name = NULL;
        for (int t = 0; t < r->n_tools && sp[k].name_done; t++)
            if (strlen(r->tool_names[t]) == sp[k].name_len &&
                memcmp(r->tool_names[t], c->tc.buf + sp[k].name_off, sp[k].name_len) == 0)
                name = r->tool_names[t];
        if (k == c->tc_heads) {
            if (!name || !sp[k].args_started || c->tc.buf[sp[k].args_off] != '{')
                return; /* not (yet) a call to stream */
            if (c->tc_heads == c->tc_cap) {
                size_t cap = c->tc_cap ? c->tc_cap * 2 : 4;
                char **ids = realloc(c->tc_ids, cap * sizeof *ids);
                if (ids)
                    c->tc_ids = ids;
                size_t *sent = ids ? realloc(c->tc_args_sent, cap * sizeof *sent) : NULL;
                if (!sent) {
                    choice_lose(c);
                    return;
                }
                c->tc_args_sent = sent;
                c->tc_cap = cap;
            }
            uint64_t st = j->srv->id_seed ^ fd_now_ns() ^ ((uint64_t)c->index << 40) ^ k;
            char *id = tc_make_id(j->srv->tc_syntax, &st);
            if (!id) {
                choice_lose(c);
                return;
            }
            c->tc_ids[k] = id;
            c->tc_args_sent[k] = 0;
            c->tc_heads++;
            oai_tool_call_t head = {.index = (int)k, .id = id, .name = name, .arguments = ""};
            sse_call(j, c, &head);
        }
        if (sp[k].args_len > c->tc_args_sent[k]) {
            char *piece = strndup(c->tc.buf + sp[k].args_off + c->tc_args_sent[k],
                                  sp[k].args_len - c->tc_args_sent[k]);
            if (!piece) {
                choice_lose(c);
                return;
            }
            oai_tool_call_t more = {.index = (int)k, .arguments = piece};
            sse_call(j, c, &more);
            free(piece);
            c->tc_args_sent[k] = sp[k].args_len;
        }
    }
}

/* A streamed choice's end with function calling on: when the whole output is well-formed
 * calls, what is left of them is sent and the finish reason is "tool_calls".  Otherwise the
 * held text goes out as content, unless part of a call was streamed already: that cannot be
 * taken back, and the choice ends with the reason it stopped for. */
static const char *stream_calls(srv_job_t *j, srv_choice_t *c, const char *finish)
{
    tc_result_t res;
    if (choice_calls(j, c, &res) != 0) {
        if (c->tc_heads == 0 && c->tc.len > c->tc_sent)
            sse_chunk(j, c, c->tc.buf + c->tc_sent, c->tc.len - c->tc_sent, NULL, NULL, false,
                      false);
        c->tc_sent = c->tc.len;
        return finish;
    }
    tc_free(&res);
    stream_call_deltas(j, c);
    return "tool_calls";
}

static void sse_error(srv_job_t *j, int status, const char *type, const char *code,
                      const char *msg)
{
    if (j->error_sent)
        return;
    j->error_sent = true;
    snprintf(j->bg_error, sizeof j->bg_error, "%s", msg);
    if (j->rss) {
        rs_stream_error(j->rss, &j->sse, code ? code : type, msg);
        return;
    }
    if (j->ans) {
        an_stream_error(j->ans, &j->sse, status, msg);
        return;
    }
    sse_add_json(j, err_body(j, status, type, code, NULL, msg));
}

static void sse_flush(srv_job_t *j)
{
    if (j->bg) {
        /* the events are in the log: every reader has something to send */
        resume(j);
        for (srv_job_t *r = j->readers; r; r = r->rnext)
            resume(r);
        return;
    }
    if (j->sse.len || j->sse_end)
        resume(j);
}

static void responses_stream_done(srv_job_t *j);
static void messages_result(srv_job_t *j, const srv_choice_t *c, const char *finish,
                            an_result_t *r);

static void stream_done(srv_job_t *j)
{
    if (j->rss) {
        /* the Responses API's stream ends with its last event, without [DONE] */
        responses_stream_done(j);
        j->sse_end = true;
        return;
    }
    if (j->ans) {
        /* Anthropic's stream ends with message_stop (after an error event, nothing) */
        if (!j->error_sent) {
            an_result_t r;
            messages_result(j, &j->choices[0], j->an_finish, &r);
            an_stream_end(j->ans, &j->sse, &r);
        }
        j->sse_end = true;
        return;
    }
    if (native_answer(j)) { /* llama-server's native stream has no [DONE] */
        j->sse_end = true;
        return;
    }
    if (j->rq.include_usage) {
        oai_resp_t r;
        oai_timings_t t;
        resp_init(j, &r, true);
        job_usage(j, &r);
        for (int i = 0; i < j->n_choices; i++)
            r.completion_tokens += j->choices[i].n_gen;
        job_timings(j, &t);
        r.timings = &t;
        sse_add_json(j, oai_response(&r));
    }
    sb_adds(&j->sse, "data: [DONE]\n\n");
    j->sse_end = true;
}

/* The whole native answer: one completion's object, or (several prompts or n_cmpl) an
 * array of them in order, as llama-server answers. */
static char *native_final(srv_job_t *j)
{
    if (j->n_choices == 1) {
        srv_choice_t *c = &j->choices[0];
        return infill_answer(j, c, c->text.buf ? c->text.buf : "", c->text.len, true, NULL);
    }
    sb_t b;
    sb_init(&b);
    sb_adds(&b, "[");
    for (int i = 0; i < j->n_choices; i++) {
        srv_choice_t *c = &j->choices[i];
        char *one = infill_answer(j, c, c->text.buf ? c->text.buf : "", c->text.len, true, NULL);
        if (!one) {
            sb_free(&b);
            return NULL;
        }
        if (i)
            sb_adds(&b, ",");
        sb_adds(&b, one);
        free(one);
    }
    sb_adds(&b, "]");
    if (sb_failed(&b)) {
        sb_free(&b);
        return NULL;
    }
    size_t len;
    return sb_take(&b, &len);
}

/* true when any of the job's inputs timed out (embeddings and rerank): *body is then the 503
 * that says so, "the request timed out before every <what> (server busy)" (NULL when out of
 * memory). */
static bool timed_out(const srv_job_t *j, const char *what, char **body, int *status)
{
    for (int i = 0; i < j->n_choices; i++)
        if (j->choices[i].finish != ENG_FINISH_STOP) {
            char msg[128];
            snprintf(msg, sizeof msg, "the request timed out before every %s (server busy)",
                     what);
            *status = 503;
            *body = oai_error(503, "service_unavailable_error", "timeout", NULL, msg);
            return true;
        }
    return false;
}

/* The non-streamed answer once every choice is done. */
/* The /v1/embeddings answer once every input ended without an error or a cancel: all of
 * them, or a 503 when any timed out (a partial list would drop inputs silently). */
static char *embeddings_body(const srv_job_t *j, int *status)
{
    const float **vecs = calloc((size_t)j->n_choices, sizeof *vecs);
    if (!vecs) {
        *status = 500;
        return NULL;
    }
    char *err;
    if (timed_out(j, "input was embedded", &err, status)) {
        free(vecs);
        return err;
    }
    for (int i = 0; i < j->n_choices; i++)
        vecs[i] = j->choices[i].emb;
    char *body = oai_embeddings(j->model, vecs, j->n_choices, j->srv->info->n_embd,
                                j->rq.base64, j->prompt_tokens);
    free(vecs);
    *status = body ? 200 : 500;
    return body;
}

/* The /rerank answer (llama-server's): every document's score (the head's first output),
 * best first, the top_n of them; Jina's {"results": [{"index", "relevance_score"}]} (with
 * "document": {"text"} under return_text), or TEI's [{"index", "score"[, "text"]}] when the
 * documents came as "texts".  A timed-out document makes it a 503, as for embeddings. */
typedef struct rank_item {
    int index;
    float score;
} rank_item_t;

static int rank_cmp(const void *a, const void *b)
{
    const rank_item_t *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return x->index - y->index;
}

static char *rerank_body(const srv_job_t *j, int *status)
{
    const rq_t *r = &j->rq;
    rank_item_t *it = calloc((size_t)j->n_choices, sizeof *it);
    if (!it) {
        *status = 500;
        return NULL;
    }
    char *err;
    if (timed_out(j, "document was scored", &err, status)) {
        free(it);
        return err;
    }
    for (int i = 0; i < j->n_choices; i++)
        it[i] = (rank_item_t){ .index = i, .score = j->choices[i].emb[0] };
    qsort(it, (size_t)j->n_choices, sizeof *it, rank_cmp);
    cJSON *root = r->tei ? cJSON_CreateArray() : cJSON_CreateObject(), *res = root;
    bool ok = root != NULL;
    if (ok && !r->tei) {
        cJSON *u = cJSON_AddObjectToObject(root, "usage");
        ok = cJSON_AddStringToObject(root, "model", j->model) &&
             cJSON_AddStringToObject(root, "object", "list") && u &&
             cJSON_AddNumberToObject(u, "prompt_tokens", (double)j->prompt_tokens) &&
             cJSON_AddNumberToObject(u, "total_tokens", (double)j->prompt_tokens) &&
             (res = cJSON_AddArrayToObject(root, "results")) != NULL;
    }
    const int n = FD_MIN(r->top_n, j->n_choices);
    for (int k = 0; ok && k < n; k++) {
        const rq_prompt_t *d = &r->prompts[it[k].index];
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(res, o) &&
             cJSON_AddNumberToObject(o, "index", it[k].index) &&
             cJSON_AddNumberToObject(o, r->tei ? "score" : "relevance_score",
                                     (double)it[k].score);
        if (ok && r->return_text) {
            char *clean = oai_utf8_clean(d->text, d->text_len);
            cJSON *at = r->tei ? o : cJSON_AddObjectToObject(o, "document");
            ok = clean && at && cJSON_AddStringToObject(at, "text", clean) != NULL;
            free(clean);
        }
    }
    char *body = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    free(it);
    *status = body ? 200 : 500;
    return body;
}

/* ---- /v1/responses answers (the generation is the chat request's) */

static bool choice_incomplete(const srv_job_t *j, const srv_choice_t *c)
{
    return c->finish != ENG_FINISH_STOP;
}

/* Keeps a finished response for previous_response_id and GET /v1/responses/{id}: its
 * input items (the conversation it continued, then its own) and output items. */
/* A response's input items: the conversation it continued, then its own (NULL: out of
 * memory). */
static cJSON *responses_input(const srv_job_t *j)
{
    cJSON *in = j->rs_hist ? cJSON_Duplicate(j->rs_hist, true) : cJSON_CreateArray();
    const cJSON *it;
    bool ok = in != NULL;
    cJSON_ArrayForEach(it, j->rs->input)
    {
        cJSON *d = ok ? cJSON_Duplicate(it, true) : NULL;
        ok = d && cJSON_AddItemToArray(in, d);
        if (!ok)
            cJSON_Delete(d);
    }
    if (!ok) {
        cJSON_Delete(in);
        return NULL;
    }
    return in;
}

/* A response run in a conversation adds its input and output items to it, when it ended
 * with an answer (completed or incomplete), whether stored or not, as OpenAI does.  A
 * conversation deleted meanwhile is left gone. */
static void responses_converse(srv_job_t *j, const cJSON *output)
{
    srv_t *s = j->srv;
    const char *cid = j->rs->conv_id;
    const char *obj = NULL;
    const cJSON *old = NULL, *it;
    if (!cid || j->bg_cancel || j->error_sent ||
        rs_store_get(s->convs, cid, &obj, &old, NULL) != 0)
        return;
    cJSON *items = cJSON_Duplicate(old, true);
    char *keep = strdup(obj);
    bool ok = items && keep;
    const cJSON *parts[] = {j->rs->input, output};
    for (size_t k = 0; ok && k < FD_ARRAY_LEN(parts); k++) {
        cJSON_ArrayForEach(it, parts[k])
        {
            cJSON *d = ok ? cJSON_Duplicate(it, true) : NULL;
            ok = d && cJSON_AddItemToArray(items, d);
            if (!ok)
                cJSON_Delete(d);
        }
    }
    int rc = ok ? rs_store_put(s->convs, cid, keep, items, NULL) : -ENOMEM;
    if (rc)
        fd_log_warn("responses: %s not added to conversation %s: %s", j->id, cid,
                    rc == -E2BIG ? "it would exceed the store's bytes" : "out of memory");
    cJSON_Delete(items);
    free(keep);
}

static void responses_store(srv_job_t *j, const char *body, const cJSON *output)
{
    responses_converse(j, output);
    if (!j->rs->store)
        return;
    cJSON *in = responses_input(j);
    int rc = in ? rs_store_put(j->srv->store, j->id, body, in, output) : -ENOMEM;
    if (rc)
        fd_log_warn("responses: %s not stored: %s", j->id,
                    rc == -E2BIG ? "larger than the store's bytes" : "out of memory");
    cJSON_Delete(in);
}

/* A running background response as it stands: its status (or status when given), the
 * output items so far, no usage yet.  A malloc'd JSON text, NULL when out of memory. */
static char *responses_live(srv_job_t *j, const char *status)
{
    rs_result_t r = j->rss->res;
    /* a cancelled one's open items end incomplete, as its stream closes them */
    cJSON *out = rs_stream_output(j->rss, status ? "incomplete" : NULL);
    r.output = out;
    r.usage = false;
    if (status)
        r.status = status;
    cJSON *o = out ? rs_response_obj(j->rs, &r) : NULL;
    char *body = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    cJSON_Delete(out);
    return body;
}

static void responses_result(const srv_job_t *j, const srv_choice_t *c, const cJSON *output,
                             rs_result_t *r)
{
    oai_resp_t u;
    resp_init(j, &u, false);
    job_usage(j, &u);
    bool inc = choice_incomplete(j, c);
    *r = (rs_result_t){.id = j->id, .created_at = j->created, .model = j->model,
                       .status = inc ? "incomplete" : "completed",
                       .incomplete_reason = inc ? "max_output_tokens" : NULL,
                       .output = output, .usage = true, .input_tokens = j->prompt_tokens,
                       .cached_tokens = u.cached_tokens, .output_tokens = c->n_gen,
                       .reasoning_tokens = j->rsn_on ? c->rsn.n_reasoning_tokens : 0};
}

/* The response object of a non-streamed /v1/responses request (one choice). */
static char *responses_body(srv_job_t *j, int *status)
{
    srv_choice_t *c = &j->choices[0];
    const char *st = choice_incomplete(j, c) ? "incomplete" : "completed";
    cJSON *out = cJSON_CreateArray();
    int rc = out ? 0 : -ENOMEM;
    tc_result_t res;
    int trc = -ENOENT;
    if (!rc && j->tc_on) {
        trc = choice_calls(j, c, &res);
        if (trc == -ENOMEM || sb_failed(&c->tc))
            rc = -ENOMEM;
    }
    /* the think block (reasoning_format) is an item of its own, before what it led to */
    if (!rc && j->rsn_on && c->rsn_text.len)
        rc = rs_add_reasoning(out, j->id, c->rsn_text.buf, c->rsn_text.len, "completed");
    if (!rc && trc == 0) {
        if (res.content_len)
            rc = rs_add_message(out, j->id, c->tc.buf, res.content_len, NULL, st);
        for (size_t k = 0; !rc && k < res.n_calls; k++)
            rc = rs_add_call(out, j->id, res.calls[k].id, res.calls[k].name,
                             res.calls[k].arguments, "completed");
    } else if (!rc) {
        const sb_t *t = j->tc_on ? &c->tc : &c->text;
        /* the message's logprobs are its own tokens': the reasoning item's come first */
        size_t skip = j->rsn_on ? FD_MIN((size_t)c->rsn.n_reasoning_tokens, c->n_lp) : 0;
        cJSON *lp = j->rq.logprobs >= 0 ? rs_logprobs(j, c->lp + skip, c->n_lp - skip) : NULL;
        if (j->rq.logprobs >= 0 && !lp)
            rc = -ENOMEM;
        else
            rc = rs_add_message(out, j->id, t->buf ? t->buf : "", t->len, lp, st);
    }
    if (trc == 0)
        tc_free(&res);
    char *body = NULL;
    if (!rc) {
        rs_result_t r;
        responses_result(j, c, out, &r);
        cJSON *o = rs_response_obj(j->rs, &r);
        body = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        if (body)
            responses_store(j, body, out);
    }
    cJSON_Delete(out);
    *status = body ? 200 : 500;
    return body;
}

/* The end of a /v1/responses stream: response.completed (or .incomplete) with the whole
 * response, which is then stored; after an error event, nothing more. */
static void responses_stream_done(srv_job_t *j)
{
    rs_stream_t *st = j->rss;
    if (j->error_sent && !j->bg)
        return;
    srv_choice_t *c = &j->choices[0];
    rs_result_t r;
    responses_result(j, c, st->output, &r);
    if (j->bg_cancel) {
        r.status = "cancelled";
        r.incomplete_reason = NULL;
    } else if (j->error_sent) {
        /* a background response ends "failed" with the error, which its readers saw */
        r.status = "failed";
        r.incomplete_reason = NULL;
        r.error_code = "server_error";
        r.error_message = j->bg_error;
    }
    st->res = r;
    rs_stream_end(st, &j->sse);
    cJSON *o = rs_response_obj(j->rs, &r);
    char *body = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (body && !st->failed && !j->bg_deleted) {
        responses_store(j, body, st->output);
        /* a streamed background response can be replayed from the store */
        if (j->bg && st->keep && !sb_failed(&st->log)) {
            int rc = rs_store_set_events(j->srv->store, j->id, st->log.buf ? st->log.buf : "",
                                         st->log.len);
            if (rc && rc != -ENOENT)
                fd_log_warn("responses: the events of %s not kept: %s", j->id,
                            rc == -E2BIG ? "larger than the store" : fd_strerror(rc));
        }
    }
    free(body);
}

/* ---- /v1/messages answers (the generation is the chat request's) */

/* The message's stop and usage for its one choice c, which finished as finish says ("stop",
 * "length", "tool_calls"; NULL: from c's finish).  Anthropic's input_tokens leaves out the
 * prompt tokens read from the (prefix) cache, which cache_read_input_tokens counts. */
static void messages_result(srv_job_t *j, const srv_choice_t *c, const char *finish,
                            an_result_t *r)
{
    oai_resp_t u;
    resp_init(j, &u, false);
    job_usage(j, &u);
    bool length = c->finish == ENG_FINISH_LENGTH || c->finish == ENG_FINISH_TIMEOUT ||
                  j->server_timeout;
    if (!finish)
        finish = length ? "length" : "stop";
    const char *seq = strcmp(finish, "stop") == 0 ? stop_matched(j, c) : NULL;
    *r = (an_result_t){.id = j->id, .model = j->model, .stop_reason = an_stop_reason(finish, seq),
                       .stop_sequence = seq,
                       .input_tokens = j->prompt_tokens - u.cached_tokens,
                       .cache_read_tokens = u.cached_tokens, .output_tokens = c->n_gen};
}

/* The message object of a non-streamed /v1/messages request (one choice): the thinking,
 * the text, the tool calls, as blocks in that order. */
static char *messages_body(srv_job_t *j, int *status)
{
    srv_choice_t *c = &j->choices[0];
    cJSON *content = cJSON_CreateArray();
    int rc = content ? 0 : -ENOMEM;
    tc_result_t res;
    int trc = -ENOENT;
    if (!rc && j->tc_on) {
        trc = choice_calls(j, c, &res);
        if (trc == -ENOMEM || sb_failed(&c->tc))
            rc = -ENOMEM;
    }
    if (!rc && j->rsn_on && c->rsn_text.len)
        rc = an_add_thinking(content, c->rsn_text.buf, c->rsn_text.len);
    const sb_t *t = j->tc_on ? &c->tc : &c->text;
    size_t text_len = trc == 0 ? res.content_len : t->len;
    if (!rc && text_len)
        rc = an_add_text(content, t->buf, text_len);
    for (size_t k = 0; !rc && trc == 0 && k < res.n_calls; k++)
        rc = an_add_tool_use(content, res.calls[k].id, res.calls[k].name,
                             res.calls[k].arguments);
    if (trc == 0)
        tc_free(&res);
    char *body = NULL;
    if (!rc) {
        an_result_t r;
        messages_result(j, c, trc == 0 ? "tool_calls" : NULL, &r);
        body = an_message(&r, content);
        content = NULL;
    }
    cJSON_Delete(content);
    *status = body ? 200 : 500;
    if (!body)
        return an_error(500, rc == -EINVAL ? "the model's tool call arguments are not a JSON "
                                             "object" : "out of memory building the answer");
    return body;
}

static void build_final(srv_job_t *j)
{
    srv_t *s = j->srv;
    int status = 200;
    char *body = NULL;
    bool any_gen = false, all_timeout = true;
    const srv_choice_t *err = NULL, *cancelled = NULL;
    for (int i = 0; i < j->n_choices; i++) {
        const srv_choice_t *c = &j->choices[i];
        any_gen |= c->n_gen > 0;
        bool timed_out = c->finish == ENG_FINISH_TIMEOUT ||
                         (j->server_timeout && c->finish == ENG_FINISH_CANCEL);
        if (!timed_out)
            all_timeout = false;
        if (c->finish == ENG_FINISH_ERROR || choice_lost(c))
            err = c;
        else if (c->finish == ENG_FINISH_CANCEL && !j->server_timeout)
            cancelled = c;
    }
    if (j->wave_rc == FD_EFULL || j->wave_rc == -ESHUTDOWN || j->wave_rc == -ETIMEDOUT) {
        status = 503;
        body = err_body(j, 503, "service_unavailable_error",
                         j->wave_rc == FD_EFULL ? "overloaded"
                         : j->wave_rc == -ESHUTDOWN ? "shutting_down" : "timeout", NULL,
                         j->wave_rc == FD_EFULL
                             ? "the server is busy: the request queue is full; retry later"
                         : j->wave_rc == -ESHUTDOWN ? "the server is shutting down"
                                                    : "the request timed out before every "
                                                      "input was embedded (server busy)");
    } else if (j->wave_rc) {
        char msg[160];
        snprintf(msg, sizeof msg, "cannot start an input: %s", fd_strerror(j->wave_rc));
        status = 500;
        body = err_body(j, 500, "server_error", NULL, NULL, msg);
    } else if (err) {
        status = 500;
        body = err_body(j, 500, "server_error", NULL, NULL,
                         choice_lost(err) ? "out of memory while collecting the output"
                                   : (err->error[0] ? err->error : "engine error"));
    } else if (cancelled) {
        status = 503;
        body = err_body(j, 503, "service_unavailable_error", "cancelled", NULL,
                         j->server_cancel ? "the request was cancelled: the server is shutting down"
                                          : "the request was cancelled");
    } else if (all_timeout && !any_gen) {
        status = 503;
        body = err_body(j, 503, "service_unavailable_error", "timeout", NULL,
                         "the request timed out before its first token (server busy)");
    } else if (j->rq.kind == RQ_EMBEDDINGS) {
        body = embeddings_body(j, &status);
    } else if (j->rq.kind == RQ_RERANK) {
        body = rerank_body(j, &status);
    } else if (j->rs) {
        body = responses_body(j, &status);
    } else if (j->an) {
        body = messages_body(j, &status);
    } else if (native_answer(j)) {
        body = native_final(j);
        if (!body)
            status = 500;
    } else {
        oai_choice_t *ch = calloc((size_t)j->n_choices, sizeof *ch);
        char **texts = calloc((size_t)j->n_choices, sizeof *texts);
        tc_result_t *res = calloc((size_t)j->n_choices, sizeof *res);
        oai_tool_call_t **calls = calloc((size_t)j->n_choices, sizeof *calls);
        bool ok = ch && texts && res && calls;
        oai_resp_t r;
        oai_timings_t t;
        resp_init(j, &r, false);
        for (int i = 0; ok && i < j->n_choices; i++) {
            srv_choice_t *c = &j->choices[i];
            sb_t full;
            sb_init(&full);
            if (j->rq.echo)
                sb_add(&full, j->echo[c->prompt], j->echo_len[c->prompt]);
            sb_add(&full, c->text.buf ? c->text.buf : "", c->text.len);
            size_t len = 0;
            texts[i] = sb_take(&full, &len);
            ok = texts[i] != NULL;
            ch[i] = (oai_choice_t){.index = c->index, .text = texts[i], .text_len = len,
                                   .finish_reason = finish_reason(c->finish),
                                   .logprobs = j->rq.logprobs >= 0, .lp = c->lp, .n_lp = c->n_lp};
            choice_prompt(j, c, &ch[i]);
            if (j->rsn_on && c->rsn_text.len) {
                ch[i].reasoning = c->rsn_text.buf;
                ch[i].reasoning_len = c->rsn_text.len;
            }
            r.completion_tokens += c->n_gen;
            if (ok && j->tc_on) {
                /* the output continues the prefill: both are the model's message */
                ch[i].text = c->tc.buf ? c->tc.buf : "";
                ch[i].text_len = c->tc.len;
                int rc = choice_calls(j, c, &res[i]);
                ok = rc != -ENOMEM && !sb_failed(&c->tc);
                if (ok && rc == 0) {
                    calls[i] = calloc(res[i].n_calls, sizeof **calls);
                    ok = calls[i] != NULL;
                    for (size_t k = 0; ok && k < res[i].n_calls; k++)
                        calls[i][k] = (oai_tool_call_t){(int)k, res[i].calls[k].id,
                                                        res[i].calls[k].name,
                                                        res[i].calls[k].arguments};
                    ch[i].calls = calls[i];
                    ch[i].n_calls = res[i].n_calls;
                    ch[i].text_len = res[i].content_len;
                    ch[i].content_null = res[i].content_len == 0;
                    ch[i].finish_reason = "tool_calls";
                }
            }
        }
        if (ok) {
            r.choices = ch;
            r.n_choices = j->n_choices;
            job_usage(j, &r);
            job_timings(j, &t);
            r.timings = &t;
            body = oai_response(&r);
        }
        for (int i = 0; texts && i < j->n_choices; i++)
            free(texts[i]);
        for (int i = 0; res && calls && i < j->n_choices; i++) {
            tc_free(&res[i]);
            free(calls[i]);
        }
        free(res);
        free(calls);
        free(texts);
        free(ch);
        if (!body)
            status = 500;
    }
    j->pending = make_response(s, status, "application/json", body, body ? strlen(body) : 0);
    j->pending_status = status;
}

/* A zeroed entry at the end of a choice's logprobs array (generated or prompt), or NULL
 * when it cannot grow (the choice is then lost). */
static oai_lp_t *lp_push(srv_choice_t *c, oai_lp_t **arr, size_t *n, size_t *cap)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        oai_lp_t *p = realloc(*arr, ncap * sizeof *p);
        if (!p) {
            choice_lose(c);
            return NULL;
        }
        *arr = p;
        *cap = ncap;
    }
    oai_lp_t *lp = &(*arr)[(*n)++];
    memset(lp, 0, sizeof *lp);
    return lp;
}

/* A prompt position's log-probabilities (they come first, in order). */
static void on_prompt_token(srv_job_t *j, srv_choice_t *c, const eng_event_t *ev)
{
    if (j->abandoned || j->client_gone)
        return;
    oai_lp_t *lp = lp_push(c, &c->plp, &c->n_plp, &c->cap_plp);
    if (!lp)
        return;
    lp->token = ev->token;
    lp->logprob = ev->logprob;
    lp->rank = ev->rank;
    lp->n_top = FD_MIN(ev->n_top, OAI_MAX_TOP);
    if (lp->n_top > 0)
        memcpy(lp->top, ev->top, (size_t)lp->n_top * sizeof *lp->top);
    if (j->stream && c->head_pending && c->n_plp + 1 >= j->pn[c->prompt]) {
        sse_head(j, c);
        sse_flush(j);
    }
}

/* A piece of a choice's answer text (the content when the reasoning is separated): held for
 * the tool-call parse, streamed, or kept for the whole answer; lp is the token's
 * log-probabilities, for the chunk when streamed. */
static void choice_text(srv_job_t *j, srv_choice_t *c, const char *text, size_t len,
                        const oai_lp_t *lp)
{
    srv_t *s = j->srv;
    if (j->tc_on) {
        sb_add(&c->tc, text, len);
        if (sb_failed(&c->tc)) {
            choice_lose(c);
            return;
        }
    }
    if (j->stream && j->tc_on) {
        /* what may be a tool call is held back: sent as calls as they take shape, or as
         * content at the end when it turns out to be none */
        size_t safe = tc_stream_safe(s->tc_syntax, c->tc.buf, c->tc.len);
        char *dec = NULL;
        size_t dn = 0;
        if (s->tc_syntax == TC_GENERIC && tc_generic_content(c->tc.buf, c->tc.len, &dec, &dn) == 0)
            safe = dn; /* the response's text so far, decoded: tc_sent counts its bytes */
        const char *from = dec ? dec : c->tc.buf;
        size_t n = safe > c->tc_sent ? safe - c->tc_sent : 0;
        if (n || lp)
            sse_chunk(j, c, from + c->tc_sent, n, lp, NULL, false, false);
        free(dec);
        c->tc_sent += n;
        if (safe < c->tc.len)
            stream_call_deltas(j, c);
        c->n_lp = 0;
        sse_flush(j);
    } else if (j->stream) {
        if (len || lp)
            sse_chunk(j, c, text, len, lp, NULL, false, false);
        c->n_lp = 0; /* streamed logprobs left with their chunk */
        sse_flush(j);
    } else {
        sb_add(&c->text, text, len);
        if (sb_failed(&c->text))
            choice_lose(c);
    }
}

/* A piece of a choice's reasoning: a delta.reasoning_content chunk, or kept for
 * message.reasoning_content. */
static void choice_reasoning(srv_job_t *j, srv_choice_t *c, const char *text, size_t len,
                             const oai_lp_t *lp)
{
    if (j->stream && j->rss) {
        /* /v1/responses: the reasoning item's text (its tokens' logprobs are not sent) */
        rs_stream_reasoning(j->rss, &j->sse, text, len);
        c->n_lp = 0;
        sse_flush(j);
    } else if (j->stream && j->ans) {
        an_stream_thinking(j->ans, &j->sse, text, len);
        sse_flush(j);
    } else if (j->stream) {
        oai_choice_t ch = {.index = c->index, .reasoning = text, .reasoning_len = len,
                           .logprobs = lp != NULL, .lp = lp, .n_lp = lp ? 1 : 0};
        sse_choice(j, &ch, NULL);
        c->n_lp = 0;
        sse_flush(j);
    } else {
        sb_add(&c->rsn_text, text, len);
        if (sb_failed(&c->rsn_text))
            choice_lose(c);
    }
}

/* The end of a choice's output: what the reasoning splitter still held. */
static void choice_rsn_finish(srv_job_t *j, srv_choice_t *c)
{
    if (!j->rsn_on || j->abandoned || j->client_gone || j->bg_cancel)
        return;
    sb_reset(&c->rsn_r);
    sb_reset(&c->rsn_c);
    if (rsn_finish(&c->rsn, &c->rsn_r, &c->rsn_c)) {
        choice_lose(c);
        return;
    }
    if (c->rsn_r.len)
        choice_reasoning(j, c, c->rsn_r.buf, c->rsn_r.len, NULL);
    if (c->rsn_c.len)
        choice_text(j, c, c->rsn_c.buf, c->rsn_c.len, NULL);
}

/* llama-server's n_indent and t_max_predict_ms, after each token of an /infill answer: a
 * stop cancels the sequence, which then ends as a "limit" stop (on_done).  n_indent: once a
 * line has ended, the next line that has text and is indented less than n_indent ends the
 * answer, whose text (whole answers; a stream has sent it) is cut after that line's
 * indentation; the newline looked at moves one line per token, as llama-server's does. */
static void infill_limits(srv_job_t *j, srv_choice_t *c, const eng_event_t *ev)
{
    srv_t *s = j->srv;
    bool stop = false;
    if (j->stream && ev->text_len) /* the text n_indent reads (a whole answer has it) */
        sb_add(&c->text, ev->text, ev->text_len);
    if (j->rq.n_indent > 0 && c->text.buf) {
        const char *g = c->text.buf;
        size_t n = c->text.len, pos = c->last_nl;
        if (pos > 0) {
            int ind = 0;
            while (pos < n && (g[pos] == ' ' || g[pos] == '\t')) {
                ind++;
                pos++;
            }
            if (pos < n && ind < j->rq.n_indent) {
                stop = true;
                if (!j->stream) {
                    c->text.len = pos;
                    c->text.buf[pos] = '\0';
                }
            }
        }
        const char *nl = c->last_nl < n ? memchr(g + c->last_nl, '\n', n - c->last_nl) : NULL;
        if (nl)
            c->last_nl = (size_t)(nl - g) + 1;
    }
    if (j->rq.t_max_predict_ms > 0 && ev->text_len && memchr(ev->text, '\n', ev->text_len) &&
        (double)(ev->t_ns - c->first_ns) * 1e-6 > j->rq.t_max_predict_ms)
        stop = true;
    if (stop && !c->limit_stop) {
        c->limit_stop = true;
        eng_cancel(s->eng, c->eng_id);
    }
}

static void on_token(srv_job_t *j, srv_choice_t *c, const eng_event_t *ev)
{
    srv_t *s = j->srv;
    if (ev->prompt) {
        /* a native n_predict 0 evaluates the prompt with no use for its log-probabilities */
        if (!native_answer(j) || job_wants_plp(j))
            on_prompt_token(j, c, ev);
        return;
    }
    if (c->limit_stop || j->bg_cancel)
        return; /* a token the engine had sampled before the cancel: dropped */
    if (j->stream && c->head_pending && !j->abandoned && !j->client_gone)
        sse_head(j, c);
    c->n_gen++;
    if (c->n_gen == 1) {
        c->first_ns = ev->t_ns;
        met_observe(s->met, MET_TTFT, (double)(ev->t_ns - j->t0_ns) * 1e-9);
    } else {
        met_observe(s->met, MET_ITL, (double)(ev->t_ns - c->last_ns) * 1e-9);
    }
    c->last_ns = ev->t_ns;
    if (j->abandoned || j->client_gone)
        return;
    if (native_answer(j) || j->an) { /* /v1/messages: which stop sequence matched */
        if (c->n_gen_ids == c->cap_gen) {
            size_t cap = c->cap_gen ? c->cap_gen * 2 : 64;
            int32_t *g = realloc(c->gen, cap * sizeof *g);
            if (!g) {
                choice_lose(c);
                return;
            }
            c->gen = g;
            c->cap_gen = cap;
        }
        c->gen[c->n_gen_ids++] = ev->token;
    }
    c->has_nl |= ev->text_len && memchr(ev->text, '\n', ev->text_len) != NULL;
    if (ev->slot >= 0) {
        c->slot = ev->slot;
        c->slot_known = true;
    }

    oai_lp_t *lp = NULL;
    if (j->rq.logprobs >= 0) {
        if (!(lp = lp_push(c, &c->lp, &c->n_lp, &c->cap_lp)))
            return;
        lp->token = ev->token;
        lp->logprob = ev->logprob;
        lp->n_top = FD_MIN(ev->n_top, FD_MIN(j->rq.logprobs, OAI_MAX_TOP));
        if (lp->n_top > 0)
            memcpy(lp->top, ev->top, (size_t)lp->n_top * sizeof *lp->top);
        size_t echo = j->rq.echo ? j->echo_len[c->prompt] : 0;
        lp->text_offset = echo + (j->stream ? c->stream_off : c->text.len);
    }
    const char *text = ev->text;
    size_t len = ev->text_len;
    if (j->rsn_on) {
        /* the think block goes out as reasoning; the rest goes on as the token's text */
        sb_reset(&c->rsn_r);
        sb_reset(&c->rsn_c);
        if (rsn_feed(&c->rsn, text, len, &c->rsn_r, &c->rsn_c)) {
            choice_lose(c);
            return;
        }
        if (c->rsn_r.len) {
            choice_reasoning(j, c, c->rsn_r.buf, c->rsn_r.len, lp);
            lp = NULL;
        }
        text = c->rsn_c.buf;
        len = c->rsn_c.len;
    }
    choice_text(j, c, text, len, lp);
    c->stream_off += ev->text_len;
    if (native_answer(j) && (j->rq.n_indent > 0 || j->rq.t_max_predict_ms > 0))
        infill_limits(j, c, ev);
}

static void embed_next(srv_job_t *j, int finish);

static void on_done(srv_job_t *j, srv_choice_t *c, const eng_event_t *ev)
{
    srv_t *s = j->srv;
    c->running = false;
    c->finish = ev->finish;
    if (c->limit_stop && c->finish == ENG_FINISH_CANCEL && !j->server_cancel)
        c->finish = ENG_FINISH_LENGTH;
    c->t = ev->timings;
    if (ev->error)
        snprintf(c->error, sizeof c->error, "%s", ev->error);
    met_finished(s->met, ev->finish);
    met_observe(s->met, MET_E2E, ev->timings.total_s);
    met_observe(s->met, MET_QUEUE, ev->timings.queue_s);
    met_observe(s->met, MET_PREFILL, ev->timings.prefill_s);
    if (c->n_gen > 0)
        met_observe(s->met, MET_DECODE, ev->timings.decode_s);
    j->n_running--;
    embed_next(j, ev->finish);
    choice_rsn_finish(j, c);
    /* A named call's arguments, held to its schema, ended the document: the call is closed
     * as the family closes it, for the parse below to read the whole call. */
    if (j->tc_on && j->rq.tool_grammar && ev->finish == ENG_FINISH_STOP) {
        const char *close = chat_tool_close(s->tc_syntax);
        if (close)
            sb_adds(&c->tc, close);
    }
    if (j->tc_on && s->tc_syntax == TC_GENERIC)
        generic_unwrap(c);

    if (!j->abandoned && (j->conn || j->bg)) {
        if (j->stream) {
            int f = c->finish;
            bool timeout = f == ENG_FINISH_TIMEOUT || (f == ENG_FINISH_CANCEL && j->server_timeout);
            if (c->head_pending && !j->client_gone && !j->bg_cancel)
                sse_head(j, c); /* ended before its prompt was evaluated: what there is */
            if (j->bg_cancel) {
                rs_stream_close(j->rss, &j->sse, true); /* what it had written, unfinished */
            } else if (f == ENG_FINISH_STOP || f == ENG_FINISH_LENGTH || timeout) {
                const char *fr = finish_reason(timeout ? ENG_FINISH_LENGTH : f);
                if (j->tc_on)
                    fr = stream_calls(j, c, fr);
                sse_chunk(j, c, "", 0, NULL, fr, false, j->n_running == 0 && !j->rq.include_usage);
            } else if (f == ENG_FINISH_CANCEL) {
                sse_error(j, 503, "service_unavailable_error", "cancelled",
                          j->server_cancel
                              ? "the request was cancelled: the server is shutting down"
                              : "the request was cancelled");
            } else {
                sse_error(j, 500, "server_error", NULL, c->error[0] ? c->error : "engine error");
            }
            if (choice_lost(c))
                sse_error(j, 500, "server_error", NULL, "out of memory: output was lost");
            if (j->n_running == 0)
                stream_done(j);
            if (sb_failed(&j->sse)) {
                /* Nothing sensible can be sent any more: end the stream. */
                sb_reset(&j->sse);
                j->sse_end = true;
            }
            if (j->bg && j->n_running == 0 && j->admitted) {
                /* a background job is a running request until its generation ends */
                j->admitted = false;
                s->running--;
            }
            sse_flush(j);
        } else if (j->n_running == 0) {
            build_final(j);
            resume(j);
        }
    }
    job_unref(j); /* the sequence's reference */
}

static void on_events(evq_t *q, evq_node_t *list, void *ud)
{
    (void)q;
    (void)ud;
    while (list) {
        evq_node_t *next = list->next;
        srv_choice_t *c = list->target;
        /* A DONE node lives inside its choice, which on_done may free with its job. */
        bool prealloc = list->prealloc;
        if (list->ev.type == ENG_EV_TOKEN)
            on_token(c->job, c, &list->ev);
        else if (list->ev.type == ENG_EV_DONE)
            on_done(c->job, c, &list->ev);
        if (!prealloc)
            evq_free_node(list);
        list = next;
    }
}

/* ---------------------------------------------------------------- streaming reader */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    srv_job_t *j = cls;
    (void)pos;
    if (j->sse.len) {
        size_t n = FD_MIN(max, j->sse.len);
        memcpy(buf, j->sse.buf, n);
        sb_consume(&j->sse, n);
        j->last_send_ns = fd_now_ns();
        return (ssize_t)n;
    }
    if (j->src) {
        /* a background response's reader: its log from where this reader is */
        const sb_t *log = &j->src->rss->log;
        if (j->src_pos < log->len) {
            size_t n = FD_MIN(max, log->len - j->src_pos);
            memcpy(buf, log->buf + j->src_pos, n);
            j->src_pos += n;
            j->last_send_ns = fd_now_ns();
            return (ssize_t)n;
        }
        if (j->src->sse_end || sb_failed(log))
            return MHD_CONTENT_READER_END_OF_STREAM;
        suspend(j);
        return 0;
    }
    if (j->sse_end)
        return MHD_CONTENT_READER_END_OF_STREAM;
    suspend(j);
    return 0;
}

static void sse_free(void *cls)
{
    job_unref(cls);
}

/* ---------------------------------------------------------------- routes */

static bool authorized(srv_t *s, struct MHD_Connection *conn)
{
    if (s->n_keys == 0)
        return true;
    const char *key = NULL;
    const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        key = auth + 7;
        while (*key == ' ')
            key++;
    }
    if (!key)
        key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Api-Key");
    if (!key)
        return false;
    size_t kl = strlen(key);
    bool ok = false;
    for (int i = 0; i < s->n_keys; i++) {
        /* Compare every byte of equal-length keys so timing does not leak a prefix. */
        size_t n = strlen(s->keys[i]);
        unsigned char diff = (unsigned char)(n != kl);
        for (size_t b = 0; b < n; b++)
            diff |= (unsigned char)(s->keys[i][b] ^ (b < kl ? key[b] : 0));
        ok |= diff == 0;
    }
    return ok;
}

static enum MHD_Result answer_health(srv_job_t *j)
{
    srv_t *s = j->srv;
    const char *st = !s->eng ? "loading" : s->draining ? "draining" : "ok";
    int status = !s->eng || s->draining ? 503 : 200;
    char *body = malloc(64);
    if (body)
        snprintf(body, 64, "{\"status\":\"%s\"}", st);
    return answer_json(j, status, body);
}

static enum MHD_Result answer_metrics(srv_job_t *j)
{
    srv_t *s = j->srv;
    eng_stats_t st;
    met_view_t v = {.info = s->info, .http_in_flight = s->running, .ready = s->eng != NULL,
                    .draining = s->draining, .lora_scales = s->lora_scale,
                    .n_lora_scales = s->info ? FD_MIN(s->info->n_lora, RQ_MAX_LORA) : 0};
    if (s->eng) {
        eng_stats(s->eng, &st);
        v.stats = &st;
    }
    sb_t b;
    sb_init(&b);
    met_render(s->met, &v, &b);
    size_t len = 0;
    char *body = sb_take(&b, &len);
    if (!body)
        return answer_json(j, 500, NULL);
    return queue(j, 200, make_response(s, 200, "text/plain; version=0.0.4; charset=utf-8", body,
                                       len));
}

static enum MHD_Result answer_models(srv_job_t *j, const char *url)
{
    srv_t *s = j->srv;
    if (j->route == R_MODEL_ONE) {
        const char *id = url + strlen("/v1/models/");
        if (strcmp(id, s->model_id) != 0)
            return answer_fail(j, 404, "not_found_error", "model_not_found", "model",
                               "the model '%.100s' does not exist; this server serves '%.100s'",
                               id, s->model_id);
    }
    return answer_json(j, 200, oai_models(s->info, s->model_id, s->loaded_at,
                                          j->route == R_MODEL_ONE));
}

/* The defaults /completion runs with, as llama-server's params (its sampling defaults). */
static void default_params(nat_params_t *p, eng_sampling_t *smp)
{
    *smp = (eng_sampling_t){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                            .repeat_penalty = 1.0f, .repeat_last_n = 64, .n_probs = -1};
    smp_default_extras(smp);
    *p = (nat_params_t){.n_predict = -1, .s = smp};
}

static const char *token_text(const tok_t *t, int32_t id)
{
    return id >= 0 ? tok_token_text(t, id) : NULL;
}

/* GET /props: llama-server's server properties, from what the model and server know. */
static enum MHD_Result answer_props(srv_job_t *j)
{
    srv_t *s = j->srv;
    eng_sampling_t smp;
    nat_params_t dp;
    default_params(&dp, &smp);
    nat_server_t sv = {.n_ctx = s->info->n_ctx, .speculative = s->info->draft_max > 0};
    nat_props_t p = {.sv = &sv, .defaults = &dp, .total_slots = s->info->max_running,
                     .model_path = s->info->model_path, .model_alias = s->model_id,
                     .chat_template = s->info->chat_template,
                     .bos_token = token_text(s->tok, tok_bos(s->tok)),
                     .eos_token = token_text(s->tok, tok_eos(s->tok)),
                     .build_info = "fusiond " PACKAGE_VERSION};
    return answer_json(j, 200, nat_props(&p));
}

/* The choice the engine runs as request id (loop thread: the jobs list is the loop's). */
static srv_choice_t *choice_of(srv_t *s, uint64_t id)
{
    for (srv_job_t *j = s->jobs; j; j = j->next)
        for (int i = 0; i < j->n_choices; i++)
            if (j->choices[i].running && j->choices[i].eng_id == id)
                return &j->choices[i];
    return NULL;
}

/* GET /slots: one entry per batch place, from the engine's own list of what runs where
 * (eng_slots, under its lock) and the server's state of each request (this thread's). */
static enum MHD_Result answer_slots(srv_job_t *j)
{
    srv_t *s = j->srv;
    if (!s->cfg.slots)
        return answer_fail(j, 501, "not_supported_error", NULL, NULL,
                           "This server does not support slots endpoint. Start it with "
                           "`--slots`");
    int n = FD_MAX(s->info->max_running, 1);
    eng_slot_t *run = calloc((size_t)n, sizeof *run);
    nat_slot_t *sl = calloc((size_t)n, sizeof *sl);
    nat_params_t *pp = calloc((size_t)n, sizeof *pp);
    if (!run || !sl || !pp) {
        free(run);
        free(sl);
        free(pp);
        return answer_json(j, 500, NULL);
    }
    eng_sampling_t smp;
    nat_params_t dp;
    default_params(&dp, &smp);
    int n_run = FD_MIN(eng_slots(s->eng, run, n), n);
    for (int k = 0; k < n; k++)
        sl[k] = (nat_slot_t){.id = k, .id_task = -1, .params = &dp, .n_remain = -1};
    for (int i = 0; i < n_run; i++) {
        int k = run[i].slot;
        srv_choice_t *c = k >= 0 && k < n ? choice_of(s, run[i].id) : NULL;
        if (!c)
            continue;
        srv_job_t *cj = c->job;
        job_params(cj, &pp[k]);
        long long max = cj->max_tokens ? cj->max_tokens[c->prompt] : -1;
        if (cj->rq.max_tokens == 0 && max >= 0) /* the endpoint's default, as resolved */
            pp[k].n_predict = (int)max;
        sl[k] = (nat_slot_t){.id = k, .busy = true, .id_task = (long long)run[i].id,
                             .params = &pp[k], .n_decoded = c->n_gen,
                             .n_remain = max >= 0 ? FD_MAX(max - c->n_gen, 0) : -1,
                             .has_new_line = c->has_nl};
    }
    /* ?fail_on_no_slot=1: a 503 when every place is taken (llama-server's probe) */
    const char *fail = MHD_lookup_connection_value(j->conn, MHD_GET_ARGUMENT_KIND,
                                                   "fail_on_no_slot");
    if (fail && strcmp(fail, "0") != 0 && n_run >= n) {
        free(run);
        free(sl);
        free(pp);
        return answer_fail(j, 503, "service_unavailable_error", NULL, NULL,
                           "no slot available");
    }
    nat_server_t sv = {.n_ctx = s->info->n_ctx, .speculative = s->info->draft_max > 0};
    char *body = nat_slots(&sv, sl, n);
    free(run);
    free(sl);
    free(pp);
    return answer_json(j, 200, body);
}

/* The background response id while it runs (not ended, not deleted), or NULL. */
static srv_job_t *live_bg(srv_t *s, const char *id)
{
    for (srv_job_t *j = s->jobs; j; j = j->next)
        if (j->bg && !j->sse_end && !j->bg_deleted && strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

/* ?stream=true on GET /v1/responses/{id}: whether it is asked, and ?starting_after (-1 when
 * absent) in *after; -EINVAL (answered) for a malformed one. */
static int stream_args(srv_job_t *j, bool *stream, long long *after)
{
    const char *st = MHD_lookup_connection_value(j->conn, MHD_GET_ARGUMENT_KIND, "stream");
    const char *sa = MHD_lookup_connection_value(j->conn, MHD_GET_ARGUMENT_KIND,
                                                 "starting_after");
    *stream = st && (strcmp(st, "true") == 0 || strcmp(st, "1") == 0);
    *after = -1;
    if (st && !*stream && strcmp(st, "false") != 0 && strcmp(st, "0") != 0) {
        answer_fail(j, 400, "invalid_request_error", NULL, "stream",
                    "'stream' must be true or false");
        return -EINVAL;
    }
    if (!sa)
        return 0;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(sa, &end, 10);
    if (!*sa || *end || errno || v < 0) {
        answer_fail(j, 400, "invalid_request_error", NULL, "starting_after",
                    "'starting_after' must be a sequence number (an integer >= 0)");
        return -EINVAL;
    }
    if (!*stream) {
        answer_fail(j, 400, "invalid_request_error", NULL, "starting_after",
                    "'starting_after' needs 'stream=true'");
        return -EINVAL;
    }
    *after = v;
    return 0;
}

static enum MHD_Result bad_starting_after(srv_job_t *j, long long after, int n_events)
{
    return answer_fail(j, 400, "invalid_request_error", NULL, "starting_after",
                       "'starting_after' %lld is not the sequence number of an event sent so "
                       "far (this response has events 0 to %d)", after, n_events - 1);
}

/* GET ?stream=true of a running background response: an SSE answer that sends its log from
 * off and follows it until the response ends (j keeps src until then). */
static enum MHD_Result answer_follow(srv_job_t *j, srv_job_t *src, size_t off)
{
    srv_t *s = j->srv;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                  sse_read, j, sse_free);
    if (!resp)
        return answer_json(j, 500, NULL);
    j->refs++;
    j->src = src;
    src->refs++;
    j->src_pos = off;
    j->rnext = src->readers;
    src->readers = j;
    j->stream = true;
    j->last_send_ns = fd_now_ns();
    job_list_add(j); /* pinged while it waits; resumed at shutdown */
    watch_start(j);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    add_common_headers(s, resp, 200);
    return queue(j, 200, resp);
}

/* {"id", "object", "deleted": true}: what a DELETE of a stored response or conversation says. */
static enum MHD_Result answer_deleted(srv_job_t *j, const char *id, const char *object)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", object);
    cJSON_AddBoolToObject(o, "deleted", true);
    char *body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return answer_json(j, 200, body);
}

static enum MHD_Result answer_items(srv_job_t *j, const cJSON *in)
{
    const char *order = MHD_lookup_connection_value(j->conn, MHD_GET_ARGUMENT_KIND, "order");
    const char *lim = MHD_lookup_connection_value(j->conn, MHD_GET_ARGUMENT_KIND, "limit");
    const char *after = MHD_lookup_connection_value(j->conn, MHD_GET_ARGUMENT_KIND, "after");
    if (order && strcmp(order, "asc") != 0 && strcmp(order, "desc") != 0)
        return answer_fail(j, 400, "invalid_request_error", NULL, "order",
                           "'order' must be \"asc\" or \"desc\"");
    char *end = NULL;
    long limit = lim ? strtol(lim, &end, 10) : 20;
    if (lim && (!*lim || *end || limit < 1 || limit > 100))
        return answer_fail(j, 400, "invalid_request_error", NULL, "limit",
                           "'limit' must be an integer in [1, 100]");
    return answer_json(j, 200, rs_input_items(in, !order || strcmp(order, "desc") == 0,
                                              (int)limit, after && *after ? after : NULL));
}

/* A running background response: GET (as it stands, or its events with ?stream=true),
 * input_items, cancel (it ends "cancelled" with what it had written) and DELETE (cancelled
 * and never stored). */
static enum MHD_Result answer_live(srv_job_t *j, srv_job_t *b, bool items, bool cancel,
                                   bool del)
{
    if (cancel || del) {
        if (!b->bg_cancel) {
            b->bg_cancel = true;
            cancel_job(b);
        }
        b->bg_deleted |= del;
        return del ? answer_deleted(j, b->id, "response")
                   : answer_json(j, 200, responses_live(b, "cancelled"));
    }
    if (items) {
        cJSON *in = responses_input(b);
        if (!in)
            return answer_json(j, 500, NULL);
        enum MHD_Result rc = answer_items(j, in);
        cJSON_Delete(in);
        return rc;
    }
    bool stream;
    long long after;
    if (stream_args(j, &stream, &after))
        return MHD_YES;
    if (!stream)
        return answer_json(j, 200, responses_live(b, NULL));
    size_t off = 0;
    int rc = rs_stream_since(b->rss, after, &off);
    if (rc == -ERANGE)
        return bad_starting_after(j, after, b->rss->n_ends);
    if (rc)
        return answer_fail(j, 400, "invalid_request_error", NULL, "stream",
                           "response '%.100s' was not created with 'stream': true (or its "
                           "events could not be kept): it cannot be streamed", b->id);
    return answer_follow(j, b, off);
}

/* GET /v1/responses/{id} (the stored response; ?stream=true replays a streamed background
 * response's events), GET /v1/responses/{id}/input_items, DELETE /v1/responses/{id}, POST
 * /v1/responses/{id}/cancel; a background response still running is answered by
 * answer_live. */
static enum MHD_Result answer_stored(srv_job_t *j, const char *url, const char *method)
{
    srv_t *s = j->srv;
    const char *p = strstr(url, "responses/") + strlen("responses/");
    const char *slash = strchr(p, '/');
    char id[128];
    snprintf(id, sizeof id, "%.*s", (int)(slash ? (size_t)(slash - p) : strlen(p)), p);
    bool items = slash && strcmp(slash, "/input_items") == 0;
    bool cancel = slash && strcmp(slash, "/cancel") == 0;
    bool del = strcmp(method, "DELETE") == 0, post = strcmp(method, "POST") == 0;
    bool get = !del && !post;
    if ((slash && !items && !cancel) || (items && !get) || cancel != post)
        return answer_fail(j, 404, "not_found_error", "not_found", NULL,
                           "no route for %.8s %.100s", method, url);
    srv_job_t *b = live_bg(s, id);
    if (b)
        return answer_live(j, b, items, cancel, del);
    const char *resp = NULL;
    const cJSON *in = NULL;
    if (rs_store_get(s->store, id, &resp, &in, NULL) != 0)
        return answer_fail(j, 404, "invalid_request_error", "not_found", NULL,
                           "Response with id '%.100s' not found.", id);
    if (cancel) {
        /* OpenAI's answers: a foreground response was never cancellable, a background one
         * that ended otherwise cannot be any more, a cancelled one is answered again (cancel
         * is idempotent) */
        cJSON *o = cJSON_Parse(resp);
        bool background = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "background"));
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "status");
        char status[32];
        snprintf(status, sizeof status, "%s", cJSON_IsString(st) ? st->valuestring : "?");
        cJSON_Delete(o);
        if (!background)
            return answer_fail(j, 400, "invalid_request_error", NULL, NULL,
                               "Cannot cancel a synchronous response: only a response created "
                               "with 'background': true can be cancelled.");
        if (strcmp(status, "cancelled") != 0)
            return answer_fail(j, 400, "invalid_request_error", NULL, NULL,
                               "Cannot cancel a%s %s response.",
                               strcmp(status, "incomplete") == 0 ? "n" : "", status);
        return answer_json(j, 200, strdup(resp));
    }
    if (del) {
        rs_store_del(s->store, id);
        return answer_deleted(j, id, "response");
    }
    if (items)
        return answer_items(j, in);
    bool stream;
    long long after;
    if (stream_args(j, &stream, &after))
        return MHD_YES;
    if (!stream)
        return answer_json(j, 200, strdup(resp));
    const char *ev = NULL;
    size_t len = 0, off = 0;
    if (rs_store_events(s->store, id, &ev, &len) != 0)
        return answer_fail(j, 400, "invalid_request_error", NULL, "stream",
                           "response '%.100s' has no stored events to stream: only a response "
                           "created with 'background' and 'stream' true keeps them (while "
                           "they fit in the store)", id);
    if (rs_events_since(ev, len, after, &off) != 0) {
        int n = 0;
        for (size_t i = 0; i + 1 < len; i++)
            n += ev[i] == '\n' && ev[i + 1] == '\n';
        return bad_starting_after(j, after, n);
    }
    char *body = malloc(len - off + 1);
    if (body)
        memcpy(body, ev + off, len - off);
    struct MHD_Response *r = make_response(s, 200, "text/event-stream", body, len - off);
    if (r)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return queue(j, body ? 200 : 500, r);
}

/* ---- OpenAI's Conversations API: a conversation is its object (id, created_at,
 * metadata) and its items, kept in srv->convs (bounded as the response store, and by the
 * same settings).  A response with "conversation" reads its items before its input and
 * adds its input and output items when it ends (responses_converse). */

#define CONV_MAX_ITEMS 20 /* OpenAI's limit of items per create or add */

/* The body as a JSON object with only the keys allowed (NULL-terminated); an empty body is
 * {}.  NULL (answered) when it is not. */
static cJSON *conv_body(srv_job_t *j, const char *const *allowed)
{
    if (!j->body.len)
        return cJSON_CreateObject();
    cJSON *o = cJSON_ParseWithLength(j->body.buf, j->body.len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        answer_fail(j, 400, "invalid_request_error", NULL, NULL,
                    "the body must be a JSON object");
        return NULL;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, o)
    {
        size_t k = 0;
        while (allowed[k] && strcmp(allowed[k], it->string) != 0)
            k++;
        if (!allowed[k]) {
            answer_fail(j, 400, "invalid_request_error", "unknown_parameter", it->string,
                        "Unknown parameter: '%.100s'.", it->string);
            cJSON_Delete(o);
            return NULL;
        }
    }
    return o;
}

/* Keeps the conversation id (its object text and items); answers what put says when it
 * cannot (a conversation over the store's bytes is refused, the old one kept). */
static int conv_put(srv_job_t *j, const char *id, const char *obj, const cJSON *items)
{
    int rc = obj ? rs_store_put(j->srv->convs, id, obj, items, NULL) : -ENOMEM;
    if (rc == -E2BIG)
        answer_fail(j, 400, "invalid_request_error", NULL, "items", "the conversation would "
                    "be larger than the store allows (responses_store_bytes)");
    else if (rc)
        answer_json(j, 500, NULL);
    return rc;
}

/* A list object of items (as input_items lists them). */
static char *conv_list(const cJSON *items)
{
    return rs_input_items(items, false, INT_MAX, NULL);
}

static enum MHD_Result answer_conv(srv_job_t *j, const char *url, const char *method)
{
    srv_t *s = j->srv;
    rq_err_t e;
    const char *p = strstr(url, "conversations") + strlen("conversations");
    if (s->cfg.responses_store <= 0)
        return answer_fail(j, 400, "invalid_request_error", NULL, NULL, "conversations need "
                           "the response store, which this server keeps off "
                           "(--responses-store 0)");
    if (!*p) { /* POST /v1/conversations {items, metadata} */
        static const char *const keys[] = {"items", "metadata", NULL};
        cJSON *b = conv_body(j, keys), *items = NULL;
        if (!b)
            return MHD_YES;
        const cJSON *in = cJSON_GetObjectItemCaseSensitive(b, "items");
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(b, "metadata");
        int rc = rs_check_metadata(b, &e);
        if (!rc && in && !cJSON_IsNull(in))
            rc = rs_parse_items(in, "items", CONV_MAX_ITEMS, &items, &e);
        if (rc) {
            cJSON_Delete(b);
            return answer_err(j, &e);
        }
        if (!items)
            items = cJSON_CreateArray();
        char id[64], seed[64];
        new_id(s, "conv_", id, sizeof id);
        new_id(s, "resp_", seed, sizeof seed);
        rs_name_items(items, seed);
        char *obj = rs_conversation_obj(id, (long long)time(NULL),
                                        cJSON_IsNull(meta) ? NULL : meta);
        rc = items ? conv_put(j, id, obj, items) : (answer_json(j, 500, NULL), -ENOMEM);
        cJSON_Delete(b);
        cJSON_Delete(items);
        return rc ? (free(obj), MHD_YES) : answer_json(j, 200, obj);
    }
    /* /{id}, /{id}/items, /{id}/items/{item_id} */
    p++;
    const char *slash = strchr(p, '/');
    char id[128], item[128] = "";
    snprintf(id, sizeof id, "%.*s", (int)(slash ? (size_t)(slash - p) : strlen(p)), p);
    bool items_route = slash && strncmp(slash, "/items", 6) == 0 &&
                       (!slash[6] || (slash[6] == '/' && slash[7]));
    if (items_route && slash[6])
        snprintf(item, sizeof item, "%s", slash + 7);
    bool del = strcmp(method, "DELETE") == 0, post = strcmp(method, "POST") == 0;
    if ((slash && !items_route) || (items_route && !item[0] && del) ||
        (item[0] && post) || strchr(item, '/'))
        return answer_fail(j, 404, "not_found_error", "not_found", NULL,
                           "no route for %.8s %.100s", method, url);
    const char *obj = NULL;
    const cJSON *items = NULL;
    if (rs_store_get(s->convs, id, &obj, &items, NULL) != 0)
        return answer_fail(j, 404, "invalid_request_error", "not_found", NULL,
                           "Conversation with id '%.100s' not found.", id);
    if (!items_route) {
        if (del) {
            rs_store_del(s->convs, id);
            return answer_deleted(j, id, "conversation.deleted");
        }
        if (!post)
            return answer_json(j, 200, strdup(obj));
        /* POST /{id} {metadata}: the metadata replaced */
        static const char *const keys[] = {"metadata", NULL};
        cJSON *b = conv_body(j, keys);
        if (!b)
            return MHD_YES;
        if (rs_check_metadata(b, &e)) {
            cJSON_Delete(b);
            return answer_err(j, &e);
        }
        cJSON *cur = cJSON_Parse(obj);
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(b, "metadata");
        const cJSON *created = cJSON_GetObjectItemCaseSensitive(cur, "created_at");
        char *next = rs_conversation_obj(id, created ? (long long)created->valuedouble : 0,
                                         meta && !cJSON_IsNull(meta) ? meta : NULL);
        cJSON *copy = cJSON_Duplicate(items, true);
        int rc = copy ? conv_put(j, id, next, copy) : (answer_json(j, 500, NULL), -ENOMEM);
        cJSON_Delete(cur);
        cJSON_Delete(copy);
        cJSON_Delete(b);
        return rc ? (free(next), MHD_YES) : answer_json(j, 200, next);
    }
    if (item[0]) { /* GET or DELETE /{id}/items/{item_id} */
        const cJSON *it, *found = NULL;
        int at = 0, k = 0;
        cJSON_ArrayForEach(it, items)
        {
            const cJSON *iid = cJSON_GetObjectItemCaseSensitive(it, "id");
            if (cJSON_IsString(iid) && strcmp(iid->valuestring, item) == 0) {
                found = it;
                at = k;
            }
            k++;
        }
        if (!found)
            return answer_fail(j, 404, "invalid_request_error", "not_found", NULL,
                               "Item with id '%.100s' not found in conversation '%.100s'.",
                               item, id);
        if (!del)
            return answer_json(j, 200, cJSON_PrintUnformatted(found));
        /* DELETE answers the conversation, as OpenAI does */
        cJSON *copy = cJSON_Duplicate(items, true);
        char *keep = strdup(obj);
        if (copy)
            cJSON_DeleteItemFromArray(copy, at);
        int rc = copy && keep ? conv_put(j, id, keep, copy) : (answer_json(j, 500, NULL), -ENOMEM);
        cJSON_Delete(copy);
        return rc ? (free(keep), MHD_YES) : answer_json(j, 200, keep);
    }
    if (!post) { /* GET /{id}/items: as input_items (order, limit, after) */
        cJSON *copy = cJSON_Duplicate(items, true);
        if (!copy)
            return answer_json(j, 500, NULL);
        enum MHD_Result rc = answer_items(j, copy);
        cJSON_Delete(copy);
        return rc;
    }
    /* POST /{id}/items {items}: appended; the answer lists the ones added */
    static const char *const keys[] = {"items", NULL};
    cJSON *b = conv_body(j, keys), *add = NULL;
    if (!b)
        return MHD_YES;
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(b, "items");
    int rc = in ? rs_parse_items(in, "items", CONV_MAX_ITEMS, &add, &e)
                : rq_fail(&e, 400, "invalid_request_error", "items", "'items' is required");
    cJSON_Delete(b);
    if (rc)
        return answer_err(j, &e);
    char seed[64];
    new_id(s, "resp_", seed, sizeof seed);
    rs_name_items(add, seed);
    cJSON *all = cJSON_Duplicate(items, true);
    char *keep = strdup(obj);
    const cJSON *it;
    bool ok = all && keep;
    cJSON_ArrayForEach(it, add)
    {
        cJSON *d = ok ? cJSON_Duplicate(it, true) : NULL;
        ok = d && cJSON_AddItemToArray(all, d);
        if (!ok)
            cJSON_Delete(d);
    }
    rc = ok ? conv_put(j, id, keep, all) : (answer_json(j, 500, NULL), -ENOMEM);
    cJSON_Delete(all);
    free(keep);
    char *list = rc ? NULL : conv_list(add);
    cJSON_Delete(add);
    return rc ? MHD_YES : answer_json(j, 200, list);
}

/* Text -> token ids; -ENOMEM or a tokenizer error. */
/* /tokenize's parse_special false: special-token texts stay text. */
static int encode_parse(const tok_t *tok, const char *text, size_t len, bool add_special,
                        bool parse_special, int32_t **ids, size_t *n)
{
    size_t cap = len + 8;
    for (int tries = 0; tries < 3; tries++) {
        int32_t *buf = malloc(cap * sizeof *buf);
        if (!buf)
            return -ENOMEM;
        size_t need = 0;
        int rc = tok_encode(tok, text, len, add_special, parse_special, buf, cap, &need);
        if (rc == 0) {
            *ids = buf;
            *n = need;
            return 0;
        }
        free(buf);
        if (rc != -ENOSPC)
            return rc;
        cap = need + 8;
    }
    return -ENOSPC;
}

static int encode(const tok_t *tok, const char *text, size_t len, bool add_special,
                  int32_t **ids, size_t *n)
{
    return encode_parse(tok, text, len, add_special, true, ids, n);
}

static int decode_text(const tok_t *tok, const int32_t *ids, size_t n, bool render_special,
                       char **out, size_t *len)
{
    size_t cap = n * 8 + 16;
    for (int tries = 0; tries < 3; tries++) {
        char *buf = malloc(cap);
        if (!buf)
            return -ENOMEM;
        size_t need = 0;
        int rc = tok_decode(tok, ids, n, render_special, false, buf, cap, &need);
        if (rc == 0 && need < cap) {
            buf[need] = 0;
            *out = buf;
            *len = need;
            return 0;
        }
        free(buf);
        if (rc != 0 && rc != -ENOSPC)
            return rc;
        cap = need + 16;
    }
    return -ENOSPC;
}

/* /tokenize and /detokenize (thread pool): the answer's body, or an error in j->prep_err. */
static int prepare_tokenize(srv_job_t *j)
{
    srv_t *s = j->srv;
    rq_t *r = &j->rq;
    rq_err_t *e = &j->prep_err;
    if (r->kind == RQ_TOKENIZE) {
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = encode_parse(s->tok, r->prompts[0].text, r->prompts[0].text_len,
                              r->add_special, r->parse_special, &ids, &n);
        if (rc)
            return rq_fail(e, rc == -ENOMEM ? 500 : 400, "invalid_request_error", "content",
                           "cannot tokenize the text: %s", fd_strerror(rc));
        j->prep_body = oai_tokenize(s->tok, ids, n, r->with_pieces, s->info->n_ctx);
        free(ids);
    } else {
        if (rq_check_vocab(r, s->info->n_vocab, e))
            return -EINVAL;
        char *text = NULL;
        size_t len = 0;
        int rc = decode_text(s->tok, r->prompts[0].ids, r->prompts[0].n_ids, false, &text,
                             &len);
        if (rc)
            return rq_fail(e, rc == -ENOMEM ? 500 : 400, "invalid_request_error", "tokens",
                           "cannot detokenize: %s", fd_strerror(rc));
        j->prep_body = oai_detokenize(text, len);
        free(text);
    }
    return j->prep_body ? 0 : rq_fail(e, 500, "server_error", NULL, "out of memory");
}

/* The request's reasoning budget (think-block tokens): its own, else the configuration's;
 * -1: no limit. */
static int chat_budget(const srv_job_t *j)
{
    if (j->rq.reasoning_budget >= -1)
        return j->rq.reasoning_budget;
    return j->srv->cfg.has_reasoning_budget ? j->srv->cfg.reasoning_budget : -1;
}

/* The reasoning budget of a chat whose model thinks (qwen3, deepseek-r1, reasoning_format
 * deepseek: a <think> block; gpt-oss: its analysis messages), unless thinking is off (budget
 * 0 switches it off in the template where the family has the switch), the answer is a
 * forced call or a constraint holds it: the texts and the tokens the engine forces once
 * the budget is spent, and whether the prompt (its generation prompt, or a prefill) left
 * the output inside the reasoning. */
static int think_setup(srv_job_t *j, bool no_thinking, bool forced, rq_err_t *e)
{
    srv_t *s = j->srv;
    const rq_t *r = &j->rq;
    int fam = s->chat_family;
    int budget = chat_budget(j);
    int rf = r->reasoning_format >= 0 ? r->reasoning_format : s->cfg.reasoning_format;
    bool harmony = fam == CHAT_GPTOSS;
    bool think = chat_has_thinking(fam) || rf == RSN_DEEPSEEK;
    free(j->think_ids);
    j->think_ids = NULL;
    j->n_think_ids = 0;
    if (budget < 0 || no_thinking || forced || r->sampling.grammar || (!think && !harmony))
        return 0;
    const char *end = harmony ? "<|end|><|start|>assistant<|channel|>final<|message|>"
                              : "</think>\n\n";
    const char *msg = r->reasoning_budget_message ? r->reasoning_budget_message
                                                  : s->cfg.reasoning_budget_message;
    char *force = malloc((msg ? strlen(msg) : 0) + strlen(end) + 1);
    if (!force)
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    strcpy(force, msg ? msg : "");
    strcat(force, end);
    j->think_open = harmony ? "<|channel|>analysis<|message|>" : "<think>";
    j->think_close = harmony ? "<|end|>" : "</think>";
    j->think_reopen = harmony;
    j->think_budget = budget;
    /* where the prompt leaves the output: a splitter read through it tells */
    rsn_t t;
    rsn_init(&t);
    if (harmony)
        rsn_init_harmony(&t, false, false);
    else if (j->rsn_inside)
        rsn_start_inside(&t);
    int rc = j->turn ? rsn_prime(&t, j->turn, j->turn_len) : 0;
    j->think_inside = rsn_in_reasoning(&t);
    rsn_free(&t);
    if (rc == 0)
        rc = encode_parse(s->tok, force, strlen(force), false, true, &j->think_ids,
                          &j->n_think_ids);
    free(force);
    if (rc)
        return rq_fail(e, 500, "server_error", NULL, "cannot prepare the reasoning budget: %s",
                       fd_strerror(rc));
    return 0;
}

/* An assistant prefill's checks: the answer cannot be a forced call, and with tools the
 * prefill must not open a call (the call parser reads the output alone). */
static int prefill_check(srv_job_t *j, const chat_msg_t *last, rq_err_t *e)
{
    const rq_t *r = &j->rq;
    if (r->tools && (r->tool_choice == RQ_TOOLS_REQUIRED || r->tool_choice == RQ_TOOLS_NAMED))
        return rq_fail(e, 400, "invalid_request_error", "tool_choice", "a final assistant "
                       "message (a prefill the answer continues) cannot be combined with "
                       "'tool_choice' \"required\" or a named function, which start the "
                       "answer with a call");
    if (r->tools && last->len && j->srv->tc_syntax != TC_GENERIC &&
        tc_stream_safe(j->srv->tc_syntax, last->content, last->len) < last->len)
        return rq_fail(e, 400, "invalid_request_error", "messages", "the final assistant "
                       "message (a prefill the answer continues) opens a tool call, which "
                       "fusiond cannot continue: end the prefill before the call's markup");
    return 0;
}

/* llama-server's additions to the messages of a template of no known family (its generic
 * format and minja's polyfills), in m[0..*n) (room for one more), the strings made kept in
 * own[0..*n) (each NULL or the malloc'd text of that message): with tools, the generic format's instruction and, when the template does not print
 * the tools, the tools (and an example call) in the system message (the first one, after
 * its text and a blank line, or a new one); the calls of a history's assistant messages
 * written as JSON text when the template does not print calls, and tool results as user
 * messages {"tool_response": ...} when it does not print them.  0 or -ENOMEM. */
static int jinja_polyfill(const srv_t *s, const rq_t *r, chat_msg_t *m, size_t *n, char **own)
{
    bool generic = s->tc_syntax == TC_GENERIC;
    sb_t add;
    sb_init(&add);
    if (r->tools && generic)
        sb_adds(&add, "Respond in JSON format, either with `tool_call` (a request to call "
                "tools) or with `response` reply to the user's request");
    if (r->tools && !jinja_uses(s->jinja, "tools")) {
        char *tj = NULL;
        if (chat_pyjson(r->tools, 2, &tj) == -ENOMEM) {
            sb_free(&add);
            return -ENOMEM;
        }
        sb_printf(&add, "%sYou can call any of the following tools to satisfy the user's "
                  "requests: %s", add.len ? "\n\n" : "", tj ? tj : r->tools);
        free(tj);
        if (generic)
            sb_adds(&add, r->parallel_tool_calls
                              ? "\n\nExample tool call syntax:\n\n{\n  \"tool_calls\": [\n    {\n"
                                "      \"name\": \"tool_name\",\n      \"arguments\": {\n"
                                "        \"arg1\": \"some_value\"\n      },\n      \"id\": "
                                "\"call_1___\"\n    }\n  ]\n}\n\n"
                              : "\n\nExample tool call syntax:\n\n{\n  \"tool_call\": {\n"
                                "    \"name\": \"tool_name\",\n    \"arguments\": {\n"
                                "      \"arg1\": \"some_value\"\n    }\n  }\n}\n\n");
    }
    int rc = sb_failed(&add) ? -ENOMEM : 0;
    if (!rc && add.len) {
        sb_t sys;
        sb_init(&sys);
        if (*n && m[0].role == CHAT_SYSTEM) {
            sb_add(&sys, m[0].content, m[0].len);
            sb_adds(&sys, "\n\n");
        } else {
            memmove(m + 1, m, *n * sizeof *m);
            memset(m, 0, sizeof *m);
            m[0].role = CHAT_SYSTEM;
            (*n)++;
        }
        sb_add(&sys, add.buf, add.len);
        own[0] = sb_take(&sys, &m[0].len);
        m[0].content = own[0];
        rc = own[0] ? 0 : -ENOMEM;
    }
    sb_free(&add);
    for (size_t i = 0; !rc && i < *n; i++) {
        chat_msg_t *q = &m[i];
        bool calls = q->n_calls && !s->jinja_calls;
        bool result = q->role == CHAT_TOOL && !s->jinja_results;
        if (!calls && !result)
            continue;
        cJSON *o = cJSON_CreateObject(), *in = NULL;
        if (calls) {
            cJSON *arr = cJSON_AddArrayToObject(o, "tool_calls");
            for (size_t k = 0; arr && k < q->n_calls; k++) {
                cJSON *tc = cJSON_CreateObject(), *args = cJSON_Parse(q->calls[k].arguments);
                cJSON_AddItemToArray(arr, tc);
                cJSON_AddStringToObject(tc, "name", q->calls[k].name);
                if (args)
                    cJSON_AddItemToObject(tc, "arguments", args);
                else
                    cJSON_AddStringToObject(tc, "arguments", q->calls[k].arguments);
                if (q->calls[k].id)
                    cJSON_AddStringToObject(tc, "id", q->calls[k].id);
            }
            if (q->content && q->len) {
                char *t = strndup(q->content, q->len);
                cJSON_AddStringToObject(o, "content", t ? t : "");
                free(t);
            }
            q->n_calls = 0;
        } else {
            in = cJSON_AddObjectToObject(o, "tool_response");
            char *t = strndup(q->content ? q->content : "", q->len);
            cJSON_AddStringToObject(in, "content", t ? t : "");
            free(t);
            if (q->call_id)
                cJSON_AddStringToObject(in, "tool_call_id", q->call_id);
            q->role = CHAT_USER;
            q->call_id = NULL;
        }
        char *flat = cJSON_PrintUnformatted(o), *pretty = NULL;
        cJSON_Delete(o);
        rc = flat ? chat_pyjson(flat, 2, &pretty) : -ENOMEM;
        free(flat);
        if (!rc) {
            own[i] = pretty;
            q->content = pretty;
            q->len = strlen(pretty);
        }
    }
    return rc < 0 ? -ENOMEM : 0;
}

/* The chat prompt as text in the model's template family (server/chat.h), and whether the
 * tokenizer should add BOS (not when the template already wrote it).  With tools and
 * tool_choice "required" or a named function, the family's call opening follows the
 * generation prompt (also kept in j->tc_prefill): the model is made to write a call by
 * starting it (a named function's arguments are then held to its schema: rq_t.tool_grammar). */
static int chat_prompt(srv_job_t *j, char **text, size_t *len, bool *add_special, rq_err_t *e)
{
    srv_t *s = j->srv;
    const rq_t *r = &j->rq;
    int fam = s->chat_family;
    if (r->tools && !(s->jinja ? s->chat_family == CHAT_JINJA || jinja_uses(s->jinja, "tools")
                               : chat_has_tools(fam))) {
        rq_fail(e, 400, "invalid_request_error", "tools", "'tools' cannot be used with this "
                "model: its chat format (%s) has no tool calling (fusiond renders tools for "
                "the llama3.1, qwen, qwen3, mistral, deepseek-r1, mistral3, granite and phi4-mini "
                "formats); leave "
                "'tools' out or set 'tool_choice' to \"none\"", chat_family_name(fam));
        e->code = "unsupported_parameter";
        return -EINVAL;
    }
    size_t n_calls = 0;
    for (size_t i = 0; i < r->n_msgs; i++)
        n_calls += r->msgs[i].n_calls;
    chat_msg_t *m = calloc(r->n_msgs + 1, sizeof *m); /* + 1: jinja_polyfill's system */
    chat_call_t *calls = calloc(n_calls ? n_calls : 1, sizeof *calls);
    char **own = calloc(r->n_msgs + 1, sizeof *own);
    if (!m || !calls || !own) {
        free(m);
        free(calls);
        free(own);
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    }
    chat_call_t *next = calls;
    size_t n = 0;
    for (size_t i = 0; i < r->n_msgs; i++) {
        const rq_msg_t *q = &r->msgs[i];
        /* OpenAI's "developer" is the newer name of "system". */
        const char *role = strcmp(q->role, "developer") == 0 ? "system" : q->role;
        if (i < j->rs_cut && strcmp(role, "system") != 0)
            continue; /* truncation "auto" left it out */
        m[n].role = chat_role_from_name(role);
        m[n].content = q->content;
        m[n].len = q->content ? strlen(q->content) : 0;
        m[n].call_id = q->tool_call_id;
        m[n].reasoning = q->reasoning;
        m[n].calls = next;
        m[n].n_calls = q->n_calls;
        for (size_t k = 0; k < q->n_calls; k++, next++)
            *next = (chat_call_t){q->calls[k].id, q->calls[k].name, q->calls[k].arguments};
        n++;
    }
    int rc = s->chat_family == CHAT_JINJA && s->jinja ? jinja_polyfill(s, r, m, &n, own) : 0;
    const tok_t *tok = s->tok;
    int32_t bos = tok_bos(tok), eos = tok_eos(tok);
    chat_opts_t o = {.bos = bos >= 0 ? tok_token_text(tok, bos) : NULL,
                     .eos = eos >= 0 ? tok_token_text(tok, eos) : NULL,
                     .add_generation_prompt = r->add_generation_prompt,
                     .tools = r->tools,
                     .no_thinking = r->no_thinking ||
                                    (chat_budget(j) == 0 && chat_has_thinking(fam)),
                     .reasoning_effort = r->reasoning_effort, .jinja = s->jinja,
                     .jinja_string_args = s->jinja_string_args,
                     .jinja_typed_content = s->jinja_typed_content, .kwargs = r->template_kwargs};
    char err[256] = "";
    /* a conversation that ends in the assistant's message: the answer continues it */
    bool prefill = !s->cfg.no_prefill_assistant && n && m[n - 1].role == CHAT_ASSISTANT;
    size_t turn = 0;
    if (rc)
        rc = rq_fail(e, 500, "server_error", NULL, "out of memory");
    else if (prefill)
        rc = prefill_check(j, &m[n - 1], e);
    if (rc) {
        free(m);
        free(calls);
        for (size_t i = 0; i <= r->n_msgs; i++)
            free(own[i]);
        free(own);
        return rc;
    }
    rc = prefill ? chat_format_prefill(fam, m, n, &o, text, len, &turn, err, sizeof err)
                 : chat_format(fam, m, n, &o, text, len, err, sizeof err);
    free(m);
    free(calls);
    for (size_t i = 0; i <= r->n_msgs; i++)
        free(own[i]);
    free(own);
    free(j->turn); /* truncation "auto" formats the chat again */
    j->turn = NULL;
    j->turn_len = 0;
    if (rc == 0 && prefill) {
        j->turn_len = *len - turn;
        if (!(j->turn = malloc(j->turn_len + 1))) {
            free(*text);
            *text = NULL;
            return rq_fail(e, 500, "server_error", NULL, "out of memory");
        }
        memcpy(j->turn, *text + turn, j->turn_len);
        j->turn[j->turn_len] = '\0';
    }
    if (rc == -ENOMEM)
        return rq_fail(e, 500, "server_error", NULL, "out of memory formatting the chat");
    if (rc && s->jinja) { /* the template's own message (raise_exception's), as llama-server */
        return rq_fail(e, 400, "invalid_request_error", "messages", "%s",
                       err[0] ? err : fd_strerror(rc));
    }
    if (rc) {
        rq_fail(e, 400, "invalid_request_error", "messages", "the %s chat format refuses "
                "these messages: %s", chat_family_name(fam), err[0] ? err : fd_strerror(rc));
        if (rc == -ENOTSUP)
            e->code = "unsupported_parameter";
        return -EINVAL;
    }
    size_t bl = o.bos ? strlen(o.bos) : 0;
    *add_special = tok_add_bos(tok) && !(bl && *len >= bl && memcmp(*text, o.bos, bl) == 0);
    j->tc_on = r->tools != NULL;
    if (r->tools && s->tc_syntax == TC_GENERIC) {
        /* llama-server's generic format: the answer is held to its JSON shape */
        gr_spec_t *g = NULL;
        char why[160];
        bool named = r->tool_choice == RQ_TOOLS_NAMED;
        rc = tc_generic_grammar(r->tools, r->parallel_tool_calls,
                                named || r->tool_choice == RQ_TOOLS_REQUIRED,
                                named ? r->tool_name : NULL, &g, why, sizeof why);
        if (rc) {
            free(*text);
            *text = NULL;
            if (rc == -ENOMEM)
                return rq_fail(e, 500, "server_error", NULL, "out of memory");
            return rq_fail(e, 400, "invalid_request_error", "tools", "%s", why);
        }
        gr_spec_unref(j->rq.grammar);
        j->rq.grammar = g;
        j->rq.sampling.grammar = g;
        j->rq.tool_grammar = false;
    }
    /* The think block is separated (a /v1/responses answer: as a reasoning item) unless the
     * format says none, thinking was switched off (the prompt closed an empty block), or the
     * answer is a forced call (prefilled below). */
    int rf = r->reasoning_format >= 0 ? r->reasoning_format : s->cfg.reasoning_format;
    bool forced = r->tools && (r->tool_choice == RQ_TOOLS_REQUIRED ||
                               r->tool_choice == RQ_TOOLS_NAMED);
    j->rsn_on = (rf == RSN_DEEPSEEK || (rf == RSN_AUTO && chat_has_thinking(fam))) &&
                !o.no_thinking && !forced;
    /* gpt-oss always answers in harmony messages, which are read whatever the format (none
     * leaves the analysis in the content, as llama-server does); its template has no
     * thinking switch */
    j->rsn_harmony = fam == CHAT_GPTOSS && !forced;
    j->rsn_inline = j->rsn_harmony && rf == RSN_NONE;
    if (j->rsn_harmony)
        j->rsn_on = true;
    j->rsn_inside = j->rsn_on && !j->turn && *len >= 8 &&
                    memcmp(*text + *len - 8, "<think>\n", 8) == 0;
    if ((rc = think_setup(j, o.no_thinking, forced, e)) < 0) {
        free(*text);
        *text = NULL;
        return rc;
    }
    if (r->tools && (r->tool_choice == RQ_TOOLS_REQUIRED || r->tool_choice == RQ_TOOLS_NAMED) &&
        chat_has_tools(s->tc_syntax)) { /* the generic format: its grammar forces the call */
        free(j->tc_prefill); /* truncation "auto" formats the chat again */
        j->tc_prefill = NULL;
        rc = chat_tool_prefill(s->tc_syntax, r->tool_choice == RQ_TOOLS_NAMED ? r->tool_name : NULL,
                               &j->tc_prefill);
        /* a prompt that opened the think block (DeepSeek-R1's) has it closed first: the
         * call is the answer, after the reasoning, not inside it */
        const char *close = *len >= 8 && memcmp(*text + *len - 8, "<think>\n", 8) == 0
                                ? "</think>\n\n" : "";
        size_t cl = strlen(close);
        char *t = rc ? NULL : realloc(*text, *len + cl + strlen(j->tc_prefill) + 1);
        if (!t) {
            free(*text);
            *text = NULL;
            return rq_fail(e, 500, "server_error", NULL, "out of memory");
        }
        memcpy(t + *len, close, cl);
        memcpy(t + *len + cl, j->tc_prefill, strlen(j->tc_prefill) + 1);
        *len += cl + strlen(j->tc_prefill);
        *text = t;
    }
    return 0;
}

/* Tokenizes the prompts (or the chat), checks them against the model, and fills j->pids. */
/* The /infill prompt (llama.cpp's layout and cuts) as prompt 0.  The cuts are sized from
 * llama-server's default batch of 2048 tokens, but at most half the context (llama-server
 * keeps 2048 there, so that below 4096 its prefix and suffix alone can fill the context),
 * and from the request's n_predict (llama-server uses its own -n default, -1), so that the
 * extra context leaves room for what is asked (without one, for INFILL_RESERVE tokens).
 * The prompt then always fits: at most n_ctx + 2 - 2 * n_predict tokens. */
#define INFILL_RESERVE 16
static int infill_prompt(srv_job_t *j, rq_err_t *e)
{
    srv_t *s = j->srv;
    const rq_t *r = &j->rq;
    char msg[200];
    if (inf_check(s->tok, msg, sizeof msg))   /* llama-server's status and type */
        return rq_fail(e, 501, "not_supported_error", NULL, "%s", msg);
    inf_chunk_t *ch = calloc(r->n_extra ? r->n_extra : 1, sizeof *ch);
    if (!ch)
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    for (size_t i = 0; i < r->n_extra; i++)
        ch[i] = (inf_chunk_t){r->extra[i].filename, r->extra[i].filename_len, r->extra[i].text,
                              r->extra[i].text_len};
    int n_ctx = s->info->n_ctx;
    inf_input_t in = {.prefix = r->input_prefix, .prefix_len = r->input_prefix_len,
                      .suffix = r->input_suffix, .suffix_len = r->input_suffix_len,
                      .prompt = r->prompts[0].text, .prompt_len = r->prompts[0].text_len,
                      .extra = ch, .n_extra = r->n_extra, .spm = s->cfg.spm_infill,
                      .n_ctx = n_ctx, .n_batch = FD_MIN(2048, n_ctx / 2),
                      .n_predict = r->max_tokens > 0 ? r->max_tokens : INFILL_RESERVE};
    inf_prompt_t ip;
    int rc = inf_build(s->tok, &in, &ip);
    free(ch);
    if (rc)
        return rq_fail(e, rc == -ENOMEM ? 500 : 400, "invalid_request_error", "input_prefix",
                       "cannot tokenize the infill input: %s", fd_strerror(rc));
    if (ip.cut_prefix || ip.cut_suffix || ip.cut_extra)
        fd_log_debug("infill: %zu prefix, %zu suffix and %zu extra tokens left out to fit",
                     ip.cut_prefix, ip.cut_suffix, ip.cut_extra);
    j->pids[0] = ip.ids;
    j->pn[0] = ip.n;
    return 0;
}

/* A mixed prompt ([12, "text", 34]) as one run of ids: each text tokenized alone, BOS
 * before the first only when it opens the prompt (llama-server's rule: a prompt that starts
 * with a string gets BOS where the model adds it). */
static int encode_mixed(const tok_t *tok, const rq_prompt_t *pr, int32_t **ids, size_t *n)
{
    int32_t *all = NULL;
    size_t len = 0;
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < pr->n_segs; k++) {
        const rq_seg_t *sg = &pr->segs[k];
        int32_t *part = NULL;
        size_t np = 0;
        if (sg->text) {
            rc = encode(tok, sg->text, sg->text_len, k == 0, &part, &np);
        } else if (!(part = malloc(sg->n_ids * sizeof *part))) {
            rc = -ENOMEM;
        } else {
            memcpy(part, sg->ids, sg->n_ids * sizeof *part);
            np = sg->n_ids;
        }
        int32_t *grown = rc ? NULL : realloc(all, (len + np + 1) * sizeof *all);
        if (!rc && !grown)
            rc = -ENOMEM;
        if (!rc) {
            all = grown;
            if (np)
                memcpy(all + len, part, np * sizeof *part);
            len += np;
        }
        free(part);
    }
    if (rc) {
        free(all);
        return rc;
    }
    *ids = all;
    *n = len;
    return 0;
}

/* The chat prompt, formatted and tokenized as prompt 0. */
static int chat_tokens(srv_job_t *j, rq_err_t *e)
{
    char *text = NULL;
    size_t len = 0;
    bool add_special = true;
    int rc = chat_prompt(j, &text, &len, &add_special, e);
    if (rc)
        return rc;
    free(j->pids[0]);
    j->pids[0] = NULL;
    j->pn[0] = 0;
    rc = encode(j->srv->tok, text, len, add_special, &j->pids[0], &j->pn[0]);
    free(text);
    if (rc)
        return rq_fail(e, rc == -ENOMEM ? 500 : 400, "invalid_request_error", "messages",
                       "cannot tokenize the chat: %s", fd_strerror(rc));
    return 0;
}

/* Whether prompt 0 and the output asked for fit the context. */
static bool chat_fits(srv_job_t *j)
{
    int mt;
    rq_err_t e;
    return rq_resolve_max_tokens(&j->rq, j->pn[0], j->srv->info->n_ctx, &mt, &e) == 0;
}

/* /v1/responses' truncation "auto": when the conversation and max_output_tokens do not fit
 * the context, the oldest turns are left out until they do, the system and developer
 * messages (the instructions) kept.  The kept part starts at a user message (a turn is left
 * out whole: a call with its results, an answer with its question), and the last user
 * message is always kept; the fewest turns that fit are found by bisection (dropping more
 * only shortens the prompt).  If even that is too long, the prompt stays at the shortest
 * and the context check refuses it as before. */
static int responses_truncate(srv_job_t *j, rq_err_t *e)
{
    const rq_t *r = &j->rq;
    if (!j->rs || !j->rs->truncate_auto || chat_fits(j))
        return 0;
    size_t *cuts = calloc(r->n_msgs ? r->n_msgs : 1, sizeof *cuts), n = 0;
    if (!cuts)
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    bool seen = false;
    for (size_t i = 0; i < r->n_msgs; i++) {
        const char *role = r->msgs[i].role;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0)
            continue;
        if (seen && strcmp(role, "user") == 0)
            cuts[n++] = i;
        seen = true;
    }
    int rc = 0;
    size_t lo = 0, hi = n, best = n; /* the search is over cuts[0..n); n: none fits */
    while (rc == 0 && lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        j->rs_cut = cuts[mid];
        if ((rc = chat_tokens(j, e)))
            break;
        if (chat_fits(j)) {
            best = mid;
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if (rc == 0 && n) {
        size_t pick = best < n ? best : n - 1;
        if (j->rs_cut != cuts[pick]) {
            j->rs_cut = cuts[pick];
            rc = chat_tokens(j, e);
        }
        fd_log_debug("responses %s: truncation auto left out the turns before message %zu "
                     "(the instructions kept)", j->id, cuts[pick]);
    }
    free(cuts);
    return rc;
}

static int prepare_prompts(srv_job_t *j, rq_err_t *e)
{
    srv_t *s = j->srv;
    rq_t *r = &j->rq;
    size_t np = r->kind == RQ_CHAT ? 1 : r->n_prompts;
    j->pids = calloc(np, sizeof *j->pids);
    j->pn = calloc(np, sizeof *j->pn);
    j->echo = calloc(np, sizeof *j->echo);
    j->echo_len = calloc(np, sizeof *j->echo_len);
    if (!j->pids || !j->pn || !j->echo || !j->echo_len)
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    j->n_prompts = np;
    int rc;
    if (r->kind == RQ_CHAT) {
        if ((rc = chat_tokens(j, e)) || (rc = responses_truncate(j, e)))
            return rc;
    } else if (r->kind == RQ_INFILL) {
        if ((rc = rq_check_vocab(r, s->info->n_vocab, e)) || (rc = infill_prompt(j, e)))
            return rc;
    } else {
        if ((rc = rq_check_vocab(r, s->info->n_vocab, e)))
            return rc;
        const char *key = r->kind == RQ_EMBEDDINGS ? "input" : "prompt";
        for (size_t p = 0; p < np; p++) {
            rq_prompt_t *pr = &r->prompts[p];
            char pp[32];
            snprintf(pp, sizeof pp, np > 1 ? "%s[%zu]" : "%s", key, p);
            if (pr->segs) {
                rc = encode_mixed(s->tok, pr, &j->pids[p], &j->pn[p]);
            } else if (pr->text) {
                /* with a suffix, BOS goes before the FIM prefix token (below) */
                rc = encode(s->tok, pr->text, pr->text_len, !r->suffix, &j->pids[p], &j->pn[p]);
                if (!rc && r->echo) {
                    j->echo[p] = strdup(pr->text);
                    j->echo_len[p] = pr->text_len;
                    if (!j->echo[p])
                        rc = -ENOMEM;
                }
            } else {
                j->pids[p] = malloc(pr->n_ids * sizeof(int32_t));
                rc = j->pids[p] ? 0 : -ENOMEM;
                if (!rc) {
                    memcpy(j->pids[p], pr->ids, pr->n_ids * sizeof(int32_t));
                    j->pn[p] = pr->n_ids;
                }
                if (!rc && r->echo)
                    rc = decode_text(s->tok, pr->ids, pr->n_ids, false, &j->echo[p],
                                     &j->echo_len[p]);
            }
            if (!rc && r->suffix) {
                int32_t *fim = NULL;
                size_t nf = 0;
                rc = inf_psm(s->tok, pr->text && tok_add_bos(s->tok), j->pids[p], j->pn[p],
                             r->suffix, r->suffix_len, &fim, &nf);
                if (rc == -ENOENT) {
                    rq_fail(e, 400, "invalid_request_error", "suffix",
                            "'suffix' needs a model with fill-in-the-middle tokens; this "
                            "model's vocabulary has no FIM prefix, suffix and middle tokens");
                    e->code = "unsupported_parameter";
                    return -EINVAL;
                }
                if (!rc) {
                    free(j->pids[p]);
                    j->pids[p] = fim;
                    j->pn[p] = nf;
                }
            }
            if (rc)
                return rq_fail(e, rc == -ENOMEM ? 500 : 400, "invalid_request_error", pp,
                               "cannot tokenize '%s': %s", pp, fd_strerror(rc));
        }
    }
    for (size_t p = 0; p < np; p++)
        j->prompt_tokens += (long long)j->pn[p];
    return 0;
}

/* /rerank (thread pool): each document paired with the query (the query and documents
 * tokenized without specials), none past the context.  WordPiece: [CLS] query [SEP] document
 * [SEP], Hugging Face's pair encoding.  Others, as llama-server's format_prompt_rerank: BOS
 * query EOS SEP document EOS, each special only where the vocabulary's add_bos, add_eos and
 * add_sep say (XLM-RoBERTa: <s> query </s></s> document </s>, again Hugging Face's pair). */
static int prepare_rerank(srv_job_t *j)
{
    srv_t *s = j->srv;
    rq_t *r = &j->rq;
    rq_err_t *e = &j->prep_err;
    const size_t np = r->n_prompts;
    const tok_t *tk = s->tok;
    int32_t frame[4]; /* before the query, after it (two), after the document; -1: none */
    if (tok_kind(tk) == TOK_WPM) {
        const int32_t sep = tok_sep(tk) >= 0 ? tok_sep(tk) : tok_eos(tk);
        frame[0] = tok_bos(tk);
        frame[1] = frame[3] = sep;
        frame[2] = -1;
        if (frame[0] < 0 || sep < 0)
            return rq_fail(e, 501, "not_supported_error", NULL,
                           "this model's vocabulary has no [CLS] and [SEP] tokens to pair a "
                           "query with a document");
    } else {
        const int32_t eos = tok_eos(tk) >= 0 ? tok_eos(tk) : tok_sep(tk);
        frame[0] = tok_add_bos(tk) ? tok_bos(tk) : -1;
        frame[1] = frame[3] = tok_add_eos(tk) ? eos : -1;
        frame[2] = tok_add_sep(tk) ? tok_sep(tk) : -1;
        if ((tok_add_bos(tk) && tok_bos(tk) < 0) || (tok_add_eos(tk) && eos < 0) ||
            (tok_add_sep(tk) && tok_sep(tk) < 0))
            return rq_fail(e, 501, "not_supported_error", NULL,
                           "this model's vocabulary asks for BOS, EOS or a separator that it "
                           "does not have, to pair a query with a document");
    }
    size_t nframe = 0;
    for (int k = 0; k < 4; k++)
        nframe += frame[k] >= 0;
    j->pids = calloc(np, sizeof *j->pids);
    j->pn = calloc(np, sizeof *j->pn);
    j->echo = calloc(np, sizeof *j->echo);
    j->echo_len = calloc(np, sizeof *j->echo_len);
    j->max_tokens = calloc(np, sizeof *j->max_tokens);
    if (!j->pids || !j->pn || !j->echo || !j->echo_len || !j->max_tokens)
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    j->n_prompts = np;
    int32_t *q = NULL, *d = NULL;
    size_t nq = 0, nd = 0;
    int rc = encode(s->tok, r->query, r->query_len, false, &q, &nq);
    if (rc)
        return rq_fail(e, rc == -ENOMEM ? 500 : 400, "invalid_request_error", "query",
                       "cannot tokenize 'query': %s", fd_strerror(rc));
    const char *key = r->tei ? "texts" : "documents";
    for (size_t p = 0; p < np && rc == 0; p++) {
        char pp[32];
        snprintf(pp, sizeof pp, "%s[%zu]", key, p);
        if ((rc = encode(s->tok, r->prompts[p].text, r->prompts[p].text_len, false, &d, &nd))) {
            rc = rq_fail(e, rc == -ENOMEM ? 500 : 400, "invalid_request_error", pp,
                         "cannot tokenize '%s': %s", pp, fd_strerror(rc));
            break;
        }
        const size_t n = nq + nd + nframe;
        if (n > (size_t)s->info->n_ctx) {
            rc = rq_fail(e, 400, "invalid_request_error", pp,
                         "the query and '%s' make %zu tokens, more than the context length %d",
                         pp, n, s->info->n_ctx);
            e->code = "context_length_exceeded";
            break;
        }
        int32_t *ids = malloc(n * sizeof *ids);
        if (!ids) {
            rc = rq_fail(e, 500, "server_error", NULL, "out of memory");
            break;
        }
        size_t o = 0;
        if (frame[0] >= 0)
            ids[o++] = frame[0];
        memcpy(ids + o, q, nq * sizeof *ids);
        o += nq;
        for (int k = 1; k <= 2; k++)
            if (frame[k] >= 0)
                ids[o++] = frame[k];
        memcpy(ids + o, d, nd * sizeof *ids);
        o += nd;
        if (frame[3] >= 0)
            ids[o++] = frame[3];
        j->pids[p] = ids;
        j->pn[p] = n;
        j->prompt_tokens += (long long)n;
        free(d);
        d = NULL;
    }
    free(d);
    free(q);
    return rc;
}

/* Generation requests (thread pool): prompts tokenized, lengths resolved. */
/* llama-server's ignore_eos (/completion, /infill) bans every end-of-generation token (a
 * -inf logit bias each, after the client's), so the text runs on as the model writes it
 * without them.  The OpenAI routes keep vLLM's ignore_eos: the engine samples them and goes
 * on.  Under a grammar neither bans: a complete document may still end.  0 or an error. */
static int ban_eog(srv_job_t *j, rq_err_t *e)
{
    rq_t *r = &j->rq;
    const tok_t *tk = j->srv->tok;
    const int32_t V = j->srv->info->n_vocab;
    int n = 0;
    for (int32_t id = 0; id < V; id++)
        n += tok_is_eog(tk, id);
    if (n == 0)
        return 0;
    eng_logit_bias_t *b = realloc(r->bias, sizeof *b * ((size_t)r->n_bias + (size_t)n));
    if (!b)
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    r->bias = b;
    for (int32_t id = 0; id < V; id++)
        if (tok_is_eog(tk, id))
            b[r->n_bias++] = (eng_logit_bias_t){ id, -INFINITY };
    r->sampling.logit_bias = r->bias;
    r->sampling.n_logit_bias = r->n_bias;
    return 0;
}

static int prepare_generation(srv_job_t *j)
{
    srv_t *s = j->srv;
    rq_t *r = &j->rq;
    rq_err_t *e = &j->prep_err;
    if (r->kind == RQ_RERANK)
        return prepare_rerank(j);
    int rc = prepare_prompts(j, e);
    if (rc)
        return rc;
    j->max_tokens = calloc(j->n_prompts, sizeof *j->max_tokens);
    if (!j->max_tokens)
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    if (r->kind == RQ_EMBEDDINGS) {
        /* an input is prefilled alone: the whole context is its room */
        if (r->dimensions && r->dimensions != s->info->n_embd)
            return rq_fail(e, 400, "invalid_request_error", "dimensions",
                           "'dimensions' %d is not supported: this model's embeddings have %d "
                           "dimensions (leave it out, or send %d)", r->dimensions,
                           s->info->n_embd, s->info->n_embd);
        for (size_t p = 0; p < j->n_prompts; p++) {
            if (j->pn[p] <= (size_t)s->info->n_ctx && j->pn[p] > 0)
                continue;
            char pp[32];
            snprintf(pp, sizeof pp, j->n_prompts > 1 ? "input[%zu]" : "input", p);
            if (j->pn[p] == 0)
                return rq_fail(e, 400, "invalid_request_error", pp,
                               "'%s' is empty after tokenization", pp);
            rc = rq_fail(e, 400, "invalid_request_error", pp,
                         "'%s' has %zu tokens, more than the context length %d", pp, j->pn[p],
                         s->info->n_ctx);
            e->code = "context_length_exceeded";
            return rc;
        }
        return 0;
    }
    if (r->ignore_eos && (r->kind == RQ_NATIVE || r->kind == RQ_INFILL) && !r->sampling.grammar &&
        (rc = ban_eog(j, e)))
        return rc;
    for (size_t p = 0; p < j->n_prompts; p++) {
        if ((rc = rq_resolve_max_tokens(r, j->pn[p], s->info->n_ctx, &j->max_tokens[p], e))) {
            if (j->n_prompts > 1 && strcmp(e->param, "prompt") == 0)
                snprintf(e->param, sizeof e->param, "prompt[%zu]", p);
            return rc;
        }
    }
    return 0;
}

/* POST /v1/responses/input_tokens (thread pool): the prompt the request would run, counted
 * (a prompt beyond the context is counted too: the client asks in order to know). */
static int prepare_count(srv_job_t *j)
{
    int rc = prepare_prompts(j, &j->prep_err);
    if (rc)
        return rc;
    if (j->an) { /* /v1/messages/count_tokens */
        if (!(j->prep_body = an_count(j->prompt_tokens)))
            return rq_fail(&j->prep_err, 500, "server_error", NULL, "out of memory");
        return 0;
    }
    j->prep_body = malloc(96);
    if (!j->prep_body)
        return rq_fail(&j->prep_err, 500, "server_error", NULL, "out of memory");
    snprintf(j->prep_body, 96, "{\"object\":\"response.input_tokens\",\"input_tokens\":%lld}",
             j->prompt_tokens);
    return 0;
}

/* POST /apply-template (thread pool): the chat prompt /v1/chat/completions would run, as
 * text, in llama-server's {"prompt": ...}. */
static int prepare_template(srv_job_t *j)
{
    char *text = NULL;
    size_t len = 0;
    bool add_special = true;
    int rc = chat_prompt(j, &text, &len, &add_special, &j->prep_err);
    if (rc)
        return rc;
    cJSON *o = cJSON_CreateObject();
    char *clean = oai_utf8_clean(text, len);
    free(text);
    if (o && clean && cJSON_AddStringToObject(o, "prompt", clean))
        j->prep_body = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    free(clean);
    if (!j->prep_body)
        return rq_fail(&j->prep_err, 500, "server_error", NULL, "out of memory");
    return 0;
}

static void prep_work(uv_work_t *w)
{
    srv_job_t *j = w->data;
    bool tok = j->rq.kind == RQ_TOKENIZE || j->rq.kind == RQ_DETOKENIZE;
    j->prep_rc = tok                                ? prepare_tokenize(j)
                 : j->route == R_RESPONSE_TOKENS || j->route == R_MESSAGE_TOKENS
                     ? prepare_count(j)
                 : j->route == R_APPLY_TEMPLATE  ? prepare_template(j)
                                                 : prepare_generation(j);
}

/* Submits every choice and starts the answer (loop thread, prepared job). */
/* Hands choice i to the engine; timeout is what is left of request_timeout (0: none). */
static int submit_choice(srv_job_t *j, int i, double timeout, char *err, size_t errlen)
{
    srv_t *s = j->srv;
    const rq_t *r = &j->rq;
    const bool embed = r->kind == RQ_EMBEDDINGS || r->kind == RQ_RERANK;
    srv_choice_t *c = &j->choices[i];
    eng_request_t er;
    memset(&er, 0, sizeof er);
    er.prompt = j->pids[c->prompt];
    er.n_prompt = j->pn[c->prompt];
    er.max_tokens = j->max_tokens[c->prompt];
    er.sampling = r->sampling;
    /* Choices of one request differ; the same request with the same seed repeats. */
    if (er.sampling.has_seed)
        er.sampling.seed += (uint64_t)(i % r->n);
    er.stop = (const char *const *)r->stop;
    er.n_stop = r->n_stop;
    er.ignore_eos = r->ignore_eos;
    /* max_tokens 0: the prompt alone; echo's answer carries the prompt's log-probabilities,
     * /completion's and /infill's (n_predict 0, to warm the prefix cache) nothing, so they
     * reuse and leave the cache without computing every row's logits */
    er.prompt_logprobs = job_wants_plp(j) || (er.max_tokens == 0 && r->kind == RQ_COMPLETION);
    er.prompt_top = FD_MAX(r->prompt_logprobs, r->echo ? r->logprobs : 0);
    er.prompt_top = FD_MAX(er.prompt_top, 0);
    if (embed) {
        er.prompt_logprobs = false;
        er.max_tokens = 0;
        er.pooling = s->pooling;
        er.normalize = true;     /* OpenAI's embeddings have length 1 */
        if (r->kind == RQ_RERANK) {
            er.pooling = ENG_POOL_RANK;
            er.normalize = false;
        }
    }
    /* /completion's and /infill's cache_prompt false: the whole prompt prefilled */
    er.no_cache_reuse = (r->kind == RQ_NATIVE || r->kind == RQ_INFILL) && !r->cache_prompt;
    if (s->info->n_lora > 0) {
        er.lora = j->lora;
        er.n_lora = FD_MIN(s->info->n_lora, RQ_MAX_LORA);
    }
    if (j->n_think_ids && !embed) {
        er.think_budget = j->think_budget;
        er.think_open = j->think_open;
        er.think_close = j->think_close;
        er.think_force = j->think_ids;
        er.n_think_force = (int)j->n_think_ids;
        er.think_inside = j->think_inside;
        er.think_reopen = j->think_reopen;
    }
    er.timeout_s = timeout;
    er.on_event = on_engine_event;
    er.ud = c;
    int rc = eng_submit(s->eng, &er, &c->eng_id, err, errlen);
    if (rc)
        return rc;
    c->running = true;
    j->n_running++;
    j->refs++;
    return 0;
}

/* An embeddings job's next inputs, once one has ended well: each request keeps at most
 * EMBED_WINDOW inputs in the engine, so a batch of hundreds neither fills the engine's queue
 * (503 for everyone) nor waits on it.  A full queue while some of its inputs still run is
 * no error: the next one to end tries again. */
static void embed_next(srv_job_t *j, int finish)
{
    if ((j->rq.kind != RQ_EMBEDDINGS && j->rq.kind != RQ_RERANK) || j->wave_rc ||
        j->abandoned || j->client_gone ||
        finish != ENG_FINISH_STOP)
        return;
    while (j->next_choice < j->n_choices && j->n_running < EMBED_WINDOW) {
        double timeout = 0;
        if (j->deadline_ns) {
            uint64_t now = fd_now_ns();
            if (now >= j->deadline_ns) {
                j->wave_rc = -ETIMEDOUT;
                return;
            }
            timeout = FD_MAX((double)(j->deadline_ns - now) * 1e-9, 0.001);
        }
        char err[256] = "";
        int rc = submit_choice(j, j->next_choice, timeout, err, sizeof err);
        if (rc == FD_EFULL && j->n_running > 0)
            return;
        if (rc) {
            j->wave_rc = rc;
            fd_log_warn("embeddings: input %d of %d not started: %s", j->next_choice,
                        j->n_choices, err[0] ? err : fd_strerror(rc));
            return;
        }
        j->next_choice++;
    }
}

static enum MHD_Result start_generation(srv_job_t *j)
{
    srv_t *s = j->srv;
    rq_t *r = &j->rq;
    const bool embed = r->kind == RQ_EMBEDDINGS || r->kind == RQ_RERANK;
    j->n_choices = (int)j->n_prompts * (embed ? 1 : r->n);
    j->choices = calloc((size_t)j->n_choices, sizeof *j->choices);
    if (!j->choices)
        return answer_json(j, 500, NULL);
    const bool bg = j->rs && j->rs->background;
    /* a background response is built as a stream (its output so far is readable) */
    j->stream = r->stream || bg;
    j->model = s->model_id;
    j->created = (long long)time(NULL);
    job_id(j);
    if (j->an && j->stream) {
        if (!(j->ans = calloc(1, sizeof *j->ans)))
            return answer_json(j, 500, NULL);
        an_stream_init(j->ans, j->id, j->model, j->prompt_tokens);
    }
    if (j->rs && j->stream) {
        if (!(j->rss = calloc(1, sizeof *j->rss)))
            return answer_json(j, 500, NULL);
        rs_stream_init(j->rss, j->rs, j->id, j->created, j->model);
        if (bg) {
            rs_stream_detach(j->rss, r->stream); /* a streamed one keeps its events */
            j->rss->res.status = "queued";
        }
    }
    double timeout = 0;
    if (s->cfg.request_timeout_s > 0) {
        double spent = (double)(fd_now_ns() - j->t0_ns) * 1e-9;
        timeout = FD_MAX(s->cfg.request_timeout_s - spent, 0.001);
        j->deadline_ns = j->t0_ns + (uint64_t)(s->cfg.request_timeout_s * 1e9);
    }

    int rc = 0;
    char err[256] = "";
    for (int i = 0; i < j->n_choices; i++) {
        srv_choice_t *c = &j->choices[i];
        c->job = j;
        c->q = &s->q;
        c->index = i;
        c->prompt = (size_t)i / (size_t)r->n;
        sb_init(&c->text);
        sb_init(&c->tc);
        rsn_init(&c->rsn);
        if (j->rsn_inside)
            rsn_start_inside(&c->rsn);
        if (j->rsn_harmony)
            rsn_init_harmony(&c->rsn, j->rsn_inline, j->tc_on);
        if (j->turn && j->rsn_on && rsn_prime(&c->rsn, j->turn, j->turn_len) < 0) {
            rc = -ENOMEM;
            break;
        }
        sb_init(&c->rsn_text);
        sb_init(&c->rsn_r);
        sb_init(&c->rsn_c);
        if (embed && !(c->emb = calloc((size_t)FD_MAX(s->info->n_embd, s->info->n_cls_out),
                                       sizeof *c->emb))) {
            rc = -ENOMEM;
            break;
        }
        if (j->tc_prefill)
            sb_adds(&c->tc, j->tc_prefill);
    }
    /* embeddings: a first window of inputs, fewer when the engine's queue fills first (the
     * rest follow as these end: embed_next) */
    int first = embed ? FD_MIN(j->n_choices, EMBED_WINDOW) : j->n_choices;
    for (j->next_choice = 0; rc == 0 && j->next_choice < first; j->next_choice++) {
        rc = submit_choice(j, j->next_choice, timeout, err, sizeof err);
        if (rc == FD_EFULL && embed && j->next_choice > 0) {
            rc = 0;
            break;
        }
    }
    job_list_add(j);
    j->admitted = true;
    s->running++;
    if (!bg)
        watch_start(j);
    else
        watch_stop(j); /* one from the thread-pool step: its client may leave now */
    if (rc) {
        /* What was already submitted is cancelled; its DONE events only drop references. */
        j->abandoned = true;
        cancel_job(j);
        if (rc == FD_EFULL)
            return answer_unavailable(j, "overloaded",
                                      "the server is busy: the request queue is full; retry later");
        if (rc == -ESHUTDOWN)
            return answer_unavailable(j, "shutting_down", "the server is shutting down");
        if (rc == FD_ECTX || rc == -EINVAL)
            return answer_fail(j, 400, "invalid_request_error",
                               rc == FD_ECTX ? "context_length_exceeded" : NULL,
                               rc == FD_ECTX ? (embed ? "input" : "prompt") : NULL, "%s",
                               err[0] ? err : fd_strerror(rc));
        return answer_fail(j, 500, "server_error", NULL, NULL, "cannot start the request: %s",
                           err[0] ? err : fd_strerror(rc));
    }

    if (bg) {
        j->bg = true;
        rs_stream_status(j->rss, &j->sse, "response.created");
        rs_stream_status(j->rss, &j->sse, "response.queued");
        for (int i = 0; i < j->n_choices; i++)
            j->choices[i].head_pending = true; /* in_progress comes with the first token */
        if (!r->stream)
            return answer_json(j, 200, responses_live(j, NULL));
        j->src = j; /* its POST reads its log as any reader */
    } else if (!j->stream) {
        suspend(j);
        return MHD_YES;
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                                  sse_read, j, sse_free);
    if (!resp) {
        j->abandoned = true;
        cancel_job(j);
        return answer_json(j, 500, NULL);
    }
    j->refs++; /* the response's reader holds the job until MHD frees the response */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    add_common_headers(s, resp, 200);
    j->last_send_ns = fd_now_ns();
    for (int i = 0; i < j->n_choices && !bg; i++) {
        srv_choice_t *c = &j->choices[i];
        /* with the prompt's log-probabilities the head waits for them (on_prompt_token) */
        if (job_wants_plp(j) && j->pn[c->prompt] > 1)
            c->head_pending = true;
        else
            sse_head(j, c);
    }
    return queue(j, 200, resp);
}

/* Answers or admits a prepared job (in the handler, or from prep_done outside it). */
static enum MHD_Result finish_prep(srv_job_t *j)
{
    srv_t *s = j->srv;
    if (j->prep_rc) {
        if (j->rs)
            rs_map_error(&j->prep_err);
        if (j->an)
            an_map_error(&j->prep_err);
        return answer_err(j, &j->prep_err);
    }
    if (j->rq.kind == RQ_TOKENIZE || j->rq.kind == RQ_DETOKENIZE ||
        j->route == R_RESPONSE_TOKENS || j->route == R_APPLY_TEMPLATE ||
        j->route == R_MESSAGE_TOKENS) {
        char *body = j->prep_body;
        j->prep_body = NULL;
        return answer_json(j, 200, body);
    }
    if (s->closing || s->draining)
        return answer_unavailable(j, "shutting_down", "the server is shutting down");
    return start_generation(j);
}

static void prep_done(uv_work_t *w, int status)
{
    srv_job_t *j = w->data;
    j->preparing = false;
    j->srv->n_preparing--;
    if (j->conn && !j->client_gone) {
        if (status != 0)
            rq_fail(&j->prep_err, 503, "service_unavailable_error", NULL,
                    "the request was cancelled: the server is shutting down");
        j->prep_rc = j->prep_rc ? j->prep_rc : status;
        finish_prep(j);
    }
    job_unref(j);
}

/* A /v1/responses body -> the chat completions body of the same request (*chat), with the
 * conversation previous_response_id names before its input.  0, or -EINVAL with e. */
static int responses_translate(srv_job_t *j, char **chat, rq_err_t *e)
{
    srv_t *s = j->srv;
    if (!(j->rs = calloc(1, sizeof *j->rs)))
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    if (rs_parse(j->body.buf ? j->body.buf : "", j->body.len, j->rs, e)) {
        free(j->rs);
        j->rs = NULL;
        return -EINVAL;
    }
    job_id(j);
    rs_name_input(j->rs, j->id);
    if (j->rs->background && s->cfg.responses_store <= 0)
        return rq_fail(e, 400, "invalid_request_error", "background", "'background': true "
                       "needs the response store, which this server keeps off "
                       "(--responses-store 0)");
    const char *prev = j->rs->prev_id;
    if (prev && live_bg(s, prev)) {
        rq_fail(e, 400, "invalid_request_error", "previous_response_id", "Previous response "
                "with id '%.100s' is still in progress; continue it once it has ended", prev);
        return -EBUSY;
    }
    if (j->rs->conv_id) {
        /* the conversation's items come before the input, as a previous response's do */
        const cJSON *items = NULL;
        if (rs_store_get(s->convs, j->rs->conv_id, NULL, &items, NULL) != 0) {
            rq_fail(e, 404, "invalid_request_error", "conversation",
                    "Conversation with id '%.100s' not found.", j->rs->conv_id);
            e->code = "not_found";
            return -ENOENT;
        }
        if (!(j->rs_hist = cJSON_Duplicate(items, true)))
            return rq_fail(e, 500, "server_error", NULL, "out of memory");
    }
    if (prev) {
        const cJSON *in = NULL, *out = NULL, *it;
        if (rs_store_get(s->store, prev, NULL, &in, &out) != 0) {
            rq_fail(e, 404, "invalid_request_error", "previous_response_id",
                    "Previous response with id '%.100s' not found.", prev);
            e->code = "previous_response_not_found";
            return -ENOENT;
        }
        j->rs_hist = cJSON_Duplicate(in, true);
        bool ok = j->rs_hist != NULL;
        cJSON_ArrayForEach(it, out)
        {
            cJSON *d = ok ? cJSON_Duplicate(it, true) : NULL;
            ok = d && cJSON_AddItemToArray(j->rs_hist, d);
            if (!ok)
                cJSON_Delete(d);
        }
        if (!ok)
            return rq_fail(e, 500, "server_error", NULL, "out of memory");
    }
    return rs_chat_body(j->rs, j->rs_hist, chat, e);
}

/* A /v1/messages (or count_tokens) body -> the chat completions body of the same request
 * (*chat).  0, or -EINVAL / -ENOMEM with e. */
static int messages_translate(srv_job_t *j, char **chat, rq_err_t *e)
{
    if (!(j->an = calloc(1, sizeof *j->an)))
        return rq_fail(e, 500, "server_error", NULL, "out of memory");
    int rc = an_parse(j->body.buf ? j->body.buf : "", j->body.len,
                      j->route == R_MESSAGE_TOKENS, j->an, e);
    if (rc) {
        free(j->an);
        j->an = NULL;
        return rc;
    }
    return an_chat_body(j->an, chat, e);
}

/* ---- LoRA adapters (llama-server's /lora-adapters and per-request "lora") ---- */

static int lora_count(const srv_t *s)
{
    return s->info ? FD_MIN(s->info->n_lora, RQ_MAX_LORA) : 0;
}

/* GET /lora-adapters: [{"id", "path", "scale"}] with the global scales. */
static enum MHD_Result answer_lora_list(srv_job_t *j)
{
    srv_t *s = j->srv;
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < lora_count(s); i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(a, o)) {
            cJSON_Delete(o);
            cJSON_Delete(a);
            a = NULL;
            break;
        }
        cJSON_AddNumberToObject(o, "id", i);
        cJSON_AddStringToObject(o, "path", s->info->lora_paths[i]);
        cJSON_AddNumberToObject(o, "scale", s->lora_scale[i]);
    }
    char *body = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return answer_json(j, body ? 200 : 500, body);
}

/* [{"id": N, "scale": S}, ...] into scales (n_lora of them, the unlisted ones 0): 0, or
 * -EINVAL with e (a 400). */
static int lora_parse_list(const srv_t *s, const cJSON *arr, float *scales, rq_err_t *e)
{
    const int n = lora_count(s);
    if (!cJSON_IsArray(arr))
        return rq_fail(e, 400, "invalid_request_error", NULL,
                       "the body must be an array of {\"id\", \"scale\"} objects");
    for (int i = 0; i < n; i++)
        scales[i] = 0.0f;
    const cJSON *it;
    int k = 0;
    cJSON_ArrayForEach(it, arr)
    {
        const cJSON *id = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "id") : NULL;
        const cJSON *sc = cJSON_IsObject(it) ? cJSON_GetObjectItemCaseSensitive(it, "scale")
                                             : NULL;
        if (!cJSON_IsNumber(id) || id->valuedouble != floor(id->valuedouble) ||
            id->valuedouble < 0 || id->valuedouble >= n)
            return rq_fail(e, 400, "invalid_request_error", "id",
                           "entry %d: invalid adapter id (%d adapters loaded: 0..%d)", k, n,
                           n - 1);
        if (!cJSON_IsNumber(sc) || !isfinite(sc->valuedouble) || fabs(sc->valuedouble) > 1e6)
            return rq_fail(e, 400, "invalid_request_error", "scale",
                           "entry %d: the scale must be a finite number", k);
        scales[(int)id->valuedouble] = (float)sc->valuedouble;
        k++;
    }
    return 0;
}

/* POST /lora-adapters: sets every global scale (the adapters not listed: 0). */
static enum MHD_Result answer_lora_set(srv_job_t *j)
{
    srv_t *s = j->srv;
    if (!s->eng)
        return answer_unavailable(j, "loading", "the model is loading; retry shortly");
    rq_err_t e;
    cJSON *root = cJSON_ParseWithLength(j->body.buf ? j->body.buf : "", j->body.len);
    if (!root) {
        rq_fail(&e, 400, "invalid_request_error", NULL, "the body is not valid JSON");
        return answer_err(j, &e);
    }
    float scales[RQ_MAX_LORA];
    int rc = lora_parse_list(s, root, scales, &e);
    cJSON_Delete(root);
    if (rc)
        return answer_err(j, &e);
    for (int i = 0; i < lora_count(s); i++)
        s->lora_scale[i] = scales[i];
    fd_log_info("LoRA adapters: global scales set by POST /lora-adapters");
    char *body = strdup("{\"success\":true}");
    return answer_json(j, body ? 200 : 500, body);
}

/* The scales a generation request runs under: its "lora" (unlisted adapters 0), else the
 * global ones at arrival. */
static int lora_of_request(srv_job_t *j, rq_err_t *e)
{
    srv_t *s = j->srv;
    const int n = lora_count(s);
    if (!j->rq.has_lora) {
        memcpy(j->lora, s->lora_scale, sizeof(float) * (size_t)n);
        return 0;
    }
    memset(j->lora, 0, sizeof j->lora);
    for (int i = 0; i < j->rq.n_lora; i++) {
        if (j->rq.lora[i].id >= n)
            return rq_fail(e, 400, "invalid_request_error", "lora",
                           "lora[%d]: invalid adapter id %d (%d adapters loaded)", i,
                           j->rq.lora[i].id, n);
        j->lora[j->rq.lora[i].id] = j->rq.lora[i].scale;
    }
    return 0;
}

static enum MHD_Result on_body_complete(srv_job_t *j)
{
    srv_t *s = j->srv;
    if (j->too_big)
        return answer_fail(j, 413, "invalid_request_error", "request_too_large", NULL,
                           "the request body is larger than the limit of %zu bytes",
                           s->cfg.max_body_bytes);
    if (j->route == R_LORA)
        return answer_lora_set(j);
    if (j->route == R_CONV || j->route == R_CONV_ONE)
        return answer_conv(j, j->path, j->method);
    int kind = j->route == R_COMPLETIONS ? RQ_COMPLETION
               : j->route == R_INFILL ? RQ_INFILL
               : j->route == R_NATIVE ? RQ_NATIVE
               : j->route == R_CHAT || j->route == R_RESPONSES ||
                       j->route == R_RESPONSE_TOKENS || j->route == R_APPLY_TEMPLATE ||
                       j->route == R_MESSAGES || j->route == R_MESSAGE_TOKENS ? RQ_CHAT
               : j->route == R_TOKENIZE  ? RQ_TOKENIZE
               : j->route == R_EMBEDDINGS ? RQ_EMBEDDINGS
               : j->route == R_RERANK     ? RQ_RERANK
                                         : RQ_DETOKENIZE;
    rq_err_t e;
    char *chat = NULL;
    if ((j->route == R_RESPONSES || j->route == R_RESPONSE_TOKENS) &&
        responses_translate(j, &chat, &e))
        return answer_err(j, &e);
    if ((j->route == R_MESSAGES || j->route == R_MESSAGE_TOKENS) &&
        messages_translate(j, &chat, &e))
        return answer_err(j, &e);
    int prc = chat ? rq_parse(kind, chat, strlen(chat), &s->lim, &j->rq, &e)
                   : rq_parse(kind, j->body.buf ? j->body.buf : "", j->body.len, &s->lim,
                              &j->rq, &e);
    free(chat);
    if (prc) {
        if (j->rs)
            rs_map_error(&e);
        if (j->an)
            an_map_error(&e);
        return answer_err(j, &e);
    }
    j->have_rq = true;
    if ((prc = lora_of_request(j, &e)))
        return answer_err(j, &e);
    size_t body_len = j->body.len;
    sb_free(&j->body);
    if (j->rq.model && strcmp(j->rq.model, s->model_id) != 0 &&
        (kind == RQ_COMPLETION || kind == RQ_CHAT || kind == RQ_EMBEDDINGS ||
         kind == RQ_RERANK))
        return answer_fail(j, 404, "not_found_error", "model_not_found", "model",
                           "the model '%.100s' does not exist; this server serves '%.100s'",
                           j->rq.model, s->model_id);
    /* Tokenizing a prompt of megabytes takes a while: not on the loop.  A small body is
     * prepared here at once (a few milliseconds at most), sparing the common request two
     * thread hand-offs, which a loaded machine can make slow. */
    j->work.data = j;
    if (body_len <= INLINE_PREP_BYTES ||
        uv_queue_work(s->loop, &j->work, prep_work, prep_done) != 0) {
        prep_work(&j->work);
        return finish_prep(j);
    }
    j->preparing = true;
    j->refs++;
    s->n_preparing++;
    suspend(j);
    watch_start(j);
    return MHD_YES;
}

/* A header value made of HTTP token characters, commas and spaces only (a list of header
 * names), short enough to send back. */
static bool header_list_ok(const char *v)
{
    size_t n = 0;
    for (; v[n]; n++)
        if (!(isalnum((unsigned char)v[n]) || strchr("!#$%&'*+-.^_`|~, ", v[n])))
            return false;
    return n > 0 && n <= 1024;
}

/* A CORS preflight from an allowed origin: 204 with what the browser asked to use.  No API
 * key is needed (browsers never send one on a preflight); the real request still needs it. */
static enum MHD_Result answer_preflight(srv_job_t *j, const struct route_def *path_route)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"",
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    bool get = strcmp(path_route->method, "GET") == 0;
    MHD_add_response_header(r, "Access-Control-Allow-Methods",
                            path_route->route == R_RESPONSE_ONE || path_route->route == R_CONV_ONE
                                ? "GET, HEAD, POST, DELETE, OPTIONS"
                            : get                               ? "GET, HEAD, OPTIONS"
                                                                : "POST, OPTIONS");
    /* The headers asked for, echoed: the OpenAI SDKs send X-Stainless-* ones (OS, Arch,
     * Runtime, Retry-Count, Timeout, ...) that change between versions, and Authorization,
     * which a wildcard "*" would not cover. */
    const char *want = MHD_lookup_connection_value(j->conn, MHD_HEADER_KIND,
                                                   "Access-Control-Request-Headers");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            want && header_list_ok(want) ? want
                                : "Authorization, Content-Type, X-Api-Key, "
                                  "Anthropic-Version, Anthropic-Beta");
    MHD_add_response_header(r, "Access-Control-Max-Age", "7200");
    /* Chrome's Private Network Access: a public page calling a server on this machine or
     * the LAN asks for this too; an allowed origin may. */
    const char *pna = MHD_lookup_connection_value(j->conn, MHD_HEADER_KIND,
                                                  "Access-Control-Request-Private-Network");
    if (pna && strcasecmp(pna, "true") == 0)
        MHD_add_response_header(r, "Access-Control-Allow-Private-Network", "true");
    add_common_headers(j->srv, r, 204);
    return queue(j, 204, r);
}

/* The first call for a request: everything decided from the request line and headers. */
static enum MHD_Result on_headers(srv_job_t *j, const char *url, const char *method)
{
    srv_t *s = j->srv;
    const struct route_def *rd = NULL, *path_route = NULL;
    bool path_known = false;
    for (size_t i = 0; i < FD_ARRAY_LEN(routes); i++) {
        bool match = routes[i].prefix ? strncmp(url, routes[i].path, strlen(routes[i].path)) == 0 &&
                                            url[strlen(routes[i].path)]
                                      : strcmp(url, routes[i].path) == 0;
        if (!match)
            continue;
        path_known = true;
        path_route = &routes[i];
        j->route = routes[i].route;
        j->ep = routes[i].ep;
        bool head = strcmp(method, "HEAD") == 0 && strcmp(routes[i].method, "GET") == 0;
        if (strcmp(method, routes[i].method) == 0 || head) {
            rd = &routes[i];
            break;
        }
    }
    if (!path_known) {
        j->route = R_NONE;
        j->ep = MET_EP_OTHER;
        return answer_fail(j, 404, "not_found_error", "not_found", NULL,
                           "no route for %.8s %.100s", method, url);
    }
    bool any;
    if (!rd && strcmp(method, "OPTIONS") == 0 && cors_origin(j, &any) &&
        MHD_lookup_connection_value(j->conn, MHD_HEADER_KIND, "Access-Control-Request-Method"))
        return answer_preflight(j, path_route);
    if (!rd)
        return answer_fail(j, 405, "invalid_request_error", "method_not_allowed", NULL,
                           "%.8s is not allowed on %.100s", method, url);
    if (j->route != R_HEALTH && !authorized(s, j->conn))
        return answer_fail(j, 401, "authentication_error", "invalid_api_key", NULL,
                           "a valid API key is required (Authorization: Bearer KEY or "
                           "X-Api-Key: KEY)");
    if (j->route == R_HEALTH)
        return answer_health(j);
    if (j->route == R_METRICS)
        return answer_metrics(j);
    if (!s->eng)
        return answer_unavailable(j, "loading", "the model is loading; retry shortly");
    if (j->route == R_MODELS || j->route == R_MODEL_ONE)
        return answer_models(j, url);
    if (j->route == R_LORA && strcmp(method, "POST") != 0)
        return answer_lora_list(j);
    if (j->route == R_RESPONSE_ONE)
        return answer_stored(j, url, method);
    if (j->route == R_CONV_ONE && strcmp(method, "POST") != 0)
        return answer_conv(j, url, method);
    if (j->route == R_PROPS)
        return answer_props(j);
    if (j->route == R_SLOTS)
        return answer_slots(j);
    if (j->route == R_SLOT_ACTION)
        return answer_fail(j, 501, "not_supported_error", NULL, NULL,
                           "slot actions (save, restore, erase) are not supported: fusiond "
                           "keeps no per-slot prompt cache files");
    if (j->route == R_PROPS_SET)
        return answer_fail(j, 501, "not_supported_error", NULL, NULL,
                           "This server does not support changing global properties: fusiond "
                           "has no POST /props (llama-server needs --props for it)");
    if (j->route == R_EMBEDDINGS && !s->cfg.embeddings)
        return answer_fail(j, 404, "not_found_error", "not_found", NULL,
                           "embeddings are off on this server (the embeddings option)");
    if (j->route == R_RERANK && s->info->n_cls_out < 1)
        return answer_fail(j, 501, "not_supported_error", NULL, NULL,
                           "This server does not support reranking: the model has no "
                           "classification head (serve a reranker such as bge-reranker or a "
                           "cross-encoder)");
    if (s->info->encoder &&
        (j->route == R_COMPLETIONS || j->route == R_CHAT || j->route == R_INFILL ||
         j->route == R_NATIVE || j->route == R_RESPONSES || j->route == R_RESPONSE_TOKENS ||
         j->route == R_MESSAGES || j->route == R_MESSAGE_TOKENS))
        return answer_fail(j, 501, "not_supported_error", NULL, NULL,
                           "this model (%s) is an encoder: it serves embeddings (/v1/embeddings)"
                           " and reranking (/rerank), not text generation", s->info->arch);
    if (s->draining)
        return answer_unavailable(j, "draining", "the server is shutting down (draining)");
    return MHD_YES;
}

static enum MHD_Result handle_request(srv_t *s, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *upload_data,
                                     size_t *upload_size, void **con_cls)
{
    srv_job_t *j = *con_cls;
    if (!j) {
        j = calloc(1, sizeof *j);
        if (!j)
            return MHD_NO;
        j->srv = s;
        j->conn = conn;
        j->refs = 1;
        j->in_handler = true;
        j->t0_ns = fd_now_ns();
        snprintf(j->method, sizeof j->method, "%s", method);
        snprintf(j->path, sizeof j->path, "%s", url);
        sb_init(&j->body);
        sb_init(&j->sse);
        *con_cls = j;
        /* Only an oversized Content-Length is answered before the body: that answer closes
         * the connection, which is what a body we refuse to read deserves.  Everything else
         * waits for the end of the request so keep-alive connections stay usable. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno || *end || v > s->cfg.max_body_bytes) {
                j->checked = true;
                j->ep = MET_EP_OTHER;
                for (size_t i = 0; i < FD_ARRAY_LEN(routes); i++)
                    if (strcmp(url, routes[i].path) == 0)
                        j->ep = routes[i].ep;
                return answer_fail(j, 413, "invalid_request_error", "request_too_large", NULL,
                                   "the request body (%s bytes) is larger than the limit of %zu "
                                   "bytes", cl, s->cfg.max_body_bytes);
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (!j->checked) {
            j->checked = true;
            j->in_upload = true;
            on_headers(j, url, method);
            j->in_upload = false;
        }
        if (j->answered || j->too_big || j->body.len + n > s->cfg.max_body_bytes) {
            j->too_big = true;
            sb_free(&j->body);
            j->discarded += n;
            return j->discarded > MAX_DISCARD ? MHD_NO : MHD_YES;
        }
        sb_add(&j->body, upload_data, n);
        if (sb_failed(&j->body))
            return MHD_NO;
        return MHD_YES;
    }
    if (!j->checked) {
        j->checked = true;
        enum MHD_Result rc = on_headers(j, url, method);
        if (j->answered || rc != MHD_YES)
            return rc;
    }
    if (j->pending) { /* a held answer, or a resumed request whose answer is ready */
        struct MHD_Response *r = j->pending;
        j->pending = NULL;
        j->answered = false;
        return queue(j, j->pending_status, r);
    }
    if (j->answered)
        return MHD_YES;
    if (j->admitted || j->preparing) /* resumed without an answer (client gone) */
        return MHD_NO;
    return on_body_complete(j);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
    srv_job_t *j = *con_cls;
    if (j)
        j->in_handler = true;
    enum MHD_Result rc = handle_request(cls, conn, url, method, upload_data, upload_size,
                                        con_cls);
    j = *con_cls;
    if (j)
        j->in_handler = false;
    return rc;
}

static void access_log(srv_job_t *j)
{
    long long gen = 0;
    double queue_ms = 0, ttft_ms = 0, tpot_ms = 0;
    const char *finish = "-";
    if (j->n_choices) {
        oai_timings_t t;
        job_timings(j, &t);
        gen = t.predicted_n;
        queue_ms = t.queue_ms;
        ttft_ms = t.ttft_ms;
        tpot_ms = gen > 1 ? t.predicted_ms / (double)(gen - 1) : 0;
        int f = j->choices[0].finish;
        finish = f == ENG_FINISH_STOP ? "stop" : f == ENG_FINISH_LENGTH ? "length"
                 : f == ENG_FINISH_CANCEL ? "cancel" : f == ENG_FINISH_TIMEOUT ? "timeout"
                 : f == ENG_FINISH_ERROR ? "error" : "-";
    }
    double total_ms = (double)(fd_now_ns() - j->t0_ns) * 1e-6;
    fd_log_info("access: %s %s %d prompt_tokens=%lld gen_tokens=%lld queue_ms=%.2f ttft_ms=%.2f "
                "tpot_ms=%.3f total_ms=%.2f finish=%s%s id=%s",
                j->method, j->path, j->status,
                j->preparing ? 0LL : j->prompt_tokens, /* the thread pool may be writing it */
                gen, queue_ms, ttft_ms, tpot_ms, total_ms, finish,
                j->client_gone ? " client_gone" : "", j->id[0] ? j->id : "-");
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    srv_t *s = cls;
    srv_job_t *j = *con_cls;
    if (!j)
        return;
    *con_cls = NULL;
    /* a background job runs on without its POST's connection */
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK &&
        toe != MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN && !j->bg)
        j->client_gone = true;
    watch_stop(j);
    if (!j->bg)
        cancel_job(j);
    if (!j->answered)
        j->status = 499; /* nginx's "client closed request": nothing was sent */
    met_request(s->met, j->ep, j->status);
    /* Successful scrapes and health probes would drown the log. */
    bool probe = (j->route == R_METRICS || j->route == R_HEALTH) && j->status == 200;
    if (s->cfg.access_log && !probe)
        access_log(j);
    if (j->admitted && !j->bg) {
        j->admitted = false;
        s->running--;
    }
    j->conn = NULL;
    job_unref(j);
}

static void on_tick(uv_timer_t *t)
{
    srv_t *s = t->data;
    uint64_t now = fd_now_ns();
    uint64_t ping_ns = (uint64_t)(s->cfg.ping_interval_s * 1e9);
    for (srv_job_t *j = s->jobs; j; j = j->next) {
        if (j->n_running > 0 && j->deadline_ns && now > j->deadline_ns + 2000000000ull &&
            !j->server_timeout) {
            /* The engine ends timed-out requests itself; this is the safety net. */
            j->server_timeout = true;
            cancel_job(j);
        }
        if (j->stream && j->conn && !j->sse_end && !j->abandoned && j->sse.len == 0 &&
            (!j->bg || j->src) && now - j->last_send_ns >= ping_ns) {
            /* An SSE comment keeps proxies from dropping a stream during a long prefill
             * (Anthropic's stream has ping events for it). */
            if (j->ans)
                an_stream_ping(&j->sse);
            else
                sb_adds(&j->sse, ": ping\n\n");
            j->last_send_ns = now;
            sse_flush(j);
        }
    }
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    if (!fd_log_enabled(FD_LOG_DEBUG))
        return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    fd_log_debug("http: %s", msg);
}

/* ---------------------------------------------------------------- public API */

/* The template text the configuration gives instead of the model's: chat_template_file's
 * contents, or chat_template when it is template text (then no family name); it must parse. */
static int load_template_text(srv_t *s, const srv_config_t *cfg, char *err, size_t errlen)
{
    const char *ct = s->chat_template;
    if (ct && (strstr(ct, "{{") || strstr(ct, "{%"))) {
        s->jinja_text = s->chat_template;
        s->chat_template = NULL;
    }
    if (cfg->chat_template_file && cfg->chat_template_file[0]) {
        FILE *f = fopen(cfg->chat_template_file, "rb");
        char *text = NULL;
        size_t len = 0;
        if (f) {
            fseek(f, 0, SEEK_END);
            long n = ftell(f);
            fseek(f, 0, SEEK_SET);
            text = n >= 0 && n < (64l << 20) ? malloc((size_t)n + 1) : NULL;
            if (text && fread(text, 1, (size_t)n, f) == (size_t)n) {
                text[n] = 0;
                len = (size_t)n;
            } else {
                free(text);
                text = NULL;
            }
            fclose(f);
        }
        if (!text) {
            snprintf(err, errlen, "chat_template_file %s: cannot read it%s%s",
                     cfg->chat_template_file, f ? "" : ": ", f ? "" : strerror(errno));
            free(s->jinja_text);
            s->jinja_text = NULL;
            return -EINVAL;
        }
        if (strlen(text) != len) {
            snprintf(err, errlen, "chat_template_file %s: the file holds a NUL byte",
                     cfg->chat_template_file);
            free(text);
            free(s->jinja_text);
            s->jinja_text = NULL;
            return -EINVAL;
        }
        free(s->jinja_text);
        s->jinja_text = text;
    }
    if (s->jinja_text) {
        jinja_t *t;
        char why[256];
        int rc = jinja_parse(s->jinja_text, strlen(s->jinja_text), &t, why, sizeof why);
        if (rc) {
            snprintf(err, errlen, "the configured chat template does not parse: %s", why);
            free(s->jinja_text);
            s->jinja_text = NULL;
            return rc;
        }
        jinja_free(t);
    }
    return 0;
}

/* The chat format of the model: the configured family, else the template's (the configured
 * text's, else the model's), rendered by the Jinja interpreter when the configuration says
 * so (jinja, chat_template "jinja", a configured text) or when no built-in formatter knows
 * the template; a model template that does not parse falls back to the plain format with a
 * warning, as llama-server does. */
static void select_template(srv_t *s)
{
    const char *tmpl = s->jinja_text ? s->jinja_text : s->info->chat_template;
    size_t len = tmpl ? strlen(tmpl) : 0;
    const char *ov = s->chat_template;
    bool auto_ = !ov || !ov[0] || strcmp(ov, "auto") == 0;
    bool ov_jinja = !auto_ && strcmp(ov, "jinja") == 0;
    int det = chat_detect(tmpl, len);
    bool want = len && (s->jinja_text || ov_jinja || (auto_ && (s->cfg.jinja || det == -ENOENT)));
    jinja_free(s->jinja);
    s->jinja = NULL;
    const char *note = "";
    if (want) {
        char why[256];
        if (jinja_parse(tmpl, len, &s->jinja, why, sizeof why) == 0) {
            s->jinja_string_args = chat_jinja_string_args(s->jinja);
            s->jinja_typed_content = chat_jinja_typed_content(s->jinja);
            note = "rendered by the Jinja interpreter";
        } else {
            fd_log_warn("server: the chat template does not parse (%s): falling back to %s",
                        why, det >= 0 ? chat_family_name(det) : "the plain format");
            note = "the template does not parse";
        }
    }
    if (!auto_ && !ov_jinja) {
        s->chat_family = chat_family_from_name(ov);
        if (s->chat_family < 0)
            s->chat_family = CHAT_PLAIN; /* srv_create checked it */
        if (!s->jinja)
            note = "chat format set by configuration";
    } else if (det >= 0) {
        s->chat_family = det;
        if (!s->jinja)
            note = det == CHAT_PLAIN ? "no chat template: plain format"
                                     : "chat template recognised by its markers";
    } else {
        s->chat_family = s->jinja ? CHAT_JINJA : CHAT_PLAIN;
        if (!s->jinja)
            note = "chat template not recognised: plain fallback format";
    }
    s->tc_syntax = s->chat_family;
    if (s->chat_family == CHAT_JINJA)
        s->tc_syntax = tmpl && strstr(tmpl, "<tool_call>") ? CHAT_QWEN : TC_GENERIC;
    s->jinja_calls = s->jinja && chat_jinja_renders_calls(s->jinja);
    s->jinja_results = s->jinja_calls && chat_jinja_renders_results(s->jinja); /* as minja */
    fd_log_info("server: model '%s', chat format %s (%s)%s", s->model_id,
                chat_family_name(s->chat_family), note,
                s->chat_family != CHAT_JINJA ? ""
                : s->tc_syntax == CHAT_QWEN ? "; tool calls as <tool_call> blocks"
                                            : "; tool calls in the generic JSON format");
}

int srv_create(srv_t **out, uv_loop_t *loop, eng_t *eng, const srv_config_t *cfg, char *err,
               size_t errlen)
{
    int rc = check_reloadable(cfg, err, errlen);
    if (rc)
        return rc;
    if (cfg->max_connections < 1 || !(cfg->idle_timeout_s >= 0)) {
        snprintf(err, errlen, "max_connections must be >= 1 and idle_timeout >= 0");
        return -EINVAL;
    }
    if (cfg->chat_template && cfg->chat_template[0] && strcmp(cfg->chat_template, "auto") != 0 &&
        chat_family_from_name(cfg->chat_template) < 0 && !strstr(cfg->chat_template, "{{") &&
        !strstr(cfg->chat_template, "{%")) {
        snprintf(err, errlen, "unknown chat template family '%s' (plain, llama2, llama3, "
                 "llama3.1, chatml, qwen, qwen3, mistral, gemma, phi3, zephyr, deepseek-r1, "
                 "mistral3, granite, phi4-mini, gpt-oss, jinja or auto, or Jinja template text)",
                 cfg->chat_template);
        return -EINVAL;
    }
    if (strcmp(rsn_format_name(cfg->reasoning_format), "?") == 0) {
        snprintf(err, errlen, "reasoning_format %d is not one of auto, none, deepseek",
                 cfg->reasoning_format);
        return -EINVAL;
    }
    if (!cfg->tls_cert_pem != !cfg->tls_key_pem) {
        snprintf(err, errlen, "HTTPS needs both a certificate and its private key");
        return -EINVAL;
    }
    if (cfg->tls_cert_pem && !MHD_is_feature_supported(MHD_FEATURE_TLS)) {
        snprintf(err, errlen, "this libmicrohttpd was built without TLS: HTTPS is not "
                 "available (leave tls_cert_file and tls_key_file empty, or put a TLS proxy "
                 "in front)");
        return -EINVAL;
    }
    srv_t *s = calloc(1, sizeof *s);
    if (!s)
        goto fail_alloc;
    s->loop = loop;
    s->cfg = *cfg;
    s->listen_fd = -1;
    s->port = -1;
    rq_limits_default(&s->lim);
    apply_reloadable(s, cfg);
    s->host = strdup(cfg->host ? cfg->host : "127.0.0.1");
    s->chat_template = cfg->chat_template ? strdup(cfg->chat_template) : NULL;
    s->model_id = cfg->model_id && cfg->model_id[0] ? strdup(cfg->model_id) : NULL;
    if (!s->host || (cfg->chat_template && !s->chat_template) ||
        (cfg->model_id && cfg->model_id[0] && !s->model_id))
        goto fail_strings;
    if ((rc = load_template_text(s, cfg, err, errlen))) {
        free(s->host);
        free(s->chat_template);
        free(s->model_id);
        free(s);
        return rc;
    }
    s->cfg.host = s->host;
    s->cfg.tls_cert_pem = s->cfg.tls_key_pem = NULL;
    s->cfg.chat_template = s->chat_template;
    s->cfg.model_id = s->model_id;
    s->cfg.api_keys = NULL;
    s->cfg.cors_origins = NULL;
    for (int i = 0; cfg->lora_scales && i < FD_MIN(cfg->n_lora, RQ_MAX_LORA); i++)
        s->lora_scale[i] = cfg->lora_scales[i];
    s->cfg.lora_scales = NULL;
    if (cfg->tls_cert_pem) {
        char why[256];
        rc = tls_count() > 0 ? -EBUSY : tls_set(cfg->tls_cert_pem, cfg->tls_key_pem, why,
                                                 sizeof why);
        if (rc) {
            snprintf(err, errlen, "HTTPS: %s", rc == -EBUSY ? "another server of this "
                     "process serves it" : why);
            free(s->host);
            free(s->chat_template);
            free(s->jinja_text);
            free(s->model_id);
            free(s);
            return rc;
        }
        s->tls = true;
    }
    if (copy_keys(cfg->api_keys, &s->keys, &s->n_keys))
        goto fail_strings;
    if (copy_keys(cfg->cors_origins, &s->origins, &s->n_origins))
        goto fail_origins;
    if (rs_store_create(&s->store, FD_MAX(cfg->responses_store, 0),
                        cfg->responses_store_bytes))
        goto fail_store;
    if (rs_store_create(&s->convs, FD_MAX(cfg->responses_store, 0),
                        cfg->responses_store_bytes)) {
        rs_store_free(s->store);
        goto fail_store;
    }
    if (met_create(&s->met))
        goto fail_met;
    if ((rc = evq_init(&s->q, loop, on_events, s)))
        goto fail_evq;
    s->q_init = true;
    uv_timer_init(loop, &s->mhd_timer);
    uv_timer_init(loop, &s->tick);
    s->mhd_timer.data = s;
    s->tick.data = s;
    s->handles_init = true;
    if (getrandom(&s->id_seed, sizeof s->id_seed, 0) != (ssize_t)sizeof s->id_seed)
        s->id_seed = fd_now_ns() ^ ((uint64_t)getpid() << 32);
    if (eng)
        srv_set_engine(s, eng);
    *out = s;
    return 0;

fail_evq:
    met_free(s->met);
fail_met:
    rs_store_free(s->convs);
    rs_store_free(s->store);
fail_store:
    free_keys(s->origins, s->n_origins);
fail_origins:
    free_keys(s->keys, s->n_keys);
fail_strings:
    if (s->tls)
        tls_clear();
    free(s->host);
    free(s->chat_template);
    free(s->jinja_text);
    free(s->model_id);
    free(s);
fail_alloc:
    snprintf(err, errlen, "out of memory creating the server");
    return -ENOMEM;
}

void srv_set_engine(srv_t *s, eng_t *eng)
{
    s->info = eng_info(eng);
    s->tok = eng_tokenizer(eng);
    /* the file's pooling_type (llama.cpp writes it for embedding models), unless the config
     * says otherwise; none or "none" in the file: mean, which suits any model */
    s->pooling = s->cfg.pooling != ENG_POOL_NONE ? s->cfg.pooling
                 : s->info->pooling >= ENG_POOL_MEAN && s->info->pooling <= ENG_POOL_LAST
                     ? s->info->pooling
                     : ENG_POOL_MEAN;
    if (!s->model_id)
        s->model_id = fd_xstrdup(s->info->model_id ? s->info->model_id : "model");
    select_template(s);
    s->loaded_at = (long long)time(NULL);
    s->eng = eng;
}

static int open_listener(srv_t *s, char *err, size_t errlen)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->cfg.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(s->host[0] ? s->host : NULL, port, &hints, &res);
    if (gai) {
        snprintf(err, errlen, "cannot resolve host '%s': %s", s->host, gai_strerror(gai));
        return -EINVAL;
    }
    int rc = -EADDRNOTAVAIL;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 511) == 0) {
            s->listen_fd = fd;
            rc = 0;
            break;
        }
        rc = -errno;
        close(fd);
    }
    freeaddrinfo(res);
    if (rc)
        snprintf(err, errlen, "cannot listen on %s:%d: %s", s->host, s->cfg.port, strerror(-rc));
    return rc;
}

int srv_listen(srv_t *s, char *err, size_t errlen)
{
    int rc;
    if (s->mhd) {
        snprintf(err, errlen, "already listening");
        return -EALREADY;
    }
    if (s->cfg.listen_fd >= 0) {
        s->listen_fd = s->cfg.listen_fd;
        int fl = fcntl(s->listen_fd, F_GETFL);
        if (fl >= 0)
            fcntl(s->listen_fd, F_SETFL, fl | O_NONBLOCK);
    } else if ((rc = open_listener(s, err, errlen))) {
        return rc;
    }
    /* HTTPS: each handshake asks tls.c for the current pair, so a renewed certificate is
     * served without a restart (srv_tls_update) */
    struct MHD_OptionItem tls[] = {
        {MHD_OPTION_HTTPS_CERT_CALLBACK, 0, tls_callback()},
        {MHD_OPTION_END, 0, NULL},
    };
    s->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
            (s->tls ? MHD_USE_TLS : 0), 0, NULL, NULL, on_request,
        s, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)s->listen_fd, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, s, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)s->cfg.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)(s->cfg.idle_timeout_s + 0.5),
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, s,
        MHD_OPTION_ARRAY, s->tls ? tls : tls + 1, MHD_OPTION_END);
    if (!s->mhd) {
        if (s->tls)
            snprintf(err, errlen, "libmicrohttpd could not start HTTPS with this "
                     "certificate and key");
        else
            snprintf(err, errlen, "libmicrohttpd failed to start on the listening socket");
        if (s->cfg.listen_fd < 0)
            close(s->listen_fd);
        s->listen_fd = -1;
        return -EIO;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_EPOLL_FD);
    if (!di || (rc = uv_poll_init(s->loop, &s->mhd_poll, di->epoll_fd)) != 0) {
        snprintf(err, errlen, "cannot watch libmicrohttpd's epoll descriptor");
        MHD_stop_daemon(s->mhd);
        s->mhd = NULL;
        s->listen_fd = -1;
        return -EIO;
    }
    s->mhd_poll.data = s;
    uv_poll_start(&s->mhd_poll, UV_READABLE, on_mhd_poll);
    uv_timer_start(&s->tick, on_tick, TICK_MS, TICK_MS);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(s->listen_fd, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    mhd_run(s);
    return 0;
}

int srv_port(const srv_t *s)
{
    return s->port;
}

const char *srv_scheme(const srv_t *s)
{
    return s->tls ? "https" : "http";
}

int srv_tls_update(srv_t *s, const char *cert_pem, const char *key_pem, char *err,
                   size_t errlen)
{
    if (!s->tls) {
        snprintf(err, errlen, "the server does not serve HTTPS");
        return -EINVAL;
    }
    return tls_set(cert_pem, key_pem, err, errlen);
}

void srv_drain(srv_t *s)
{
    s->draining = true;
}

bool srv_draining(const srv_t *s)
{
    return s->draining;
}

int srv_running(const srv_t *s)
{
    return s->running;
}

void srv_cancel_all(srv_t *s)
{
    for (srv_job_t *j = s->jobs; j; j = j->next) {
        if (j->n_running > 0) {
            j->server_cancel = true;
            cancel_job(j);
        }
    }
}

void srv_on_step(void *ud, double seconds, int batch_seqs, int batch_tokens)
{
    srv_t *s = ud;
    met_step(s->met, seconds, batch_seqs, batch_tokens);
}

static int jobs_running(const srv_t *s)
{
    int n = 0;
    for (const srv_job_t *j = s->jobs; j; j = j->next)
        n += j->n_running;
    return n;
}

void srv_destroy(srv_t *s)
{
    if (!s)
        return;
    s->draining = true;
    s->closing = true;
    /* Jobs on the thread pool come back (and are answered 503) first. */
    while (s->n_preparing > 0)
        uv_run(s->loop, UV_RUN_ONCE);
    /* Every sequence must report DONE before its job (the engine's callback target) and the
     * queue go away. */
    srv_cancel_all(s);
    double until = fd_now_s() + SHUTDOWN_WAIT_S;
    while (s->q_init && jobs_running(s) > 0) {
        evq_node_t *list = evq_take(&s->q);
        if (list) {
            on_events(&s->q, list, s);
            continue;
        }
        double left = until - fd_now_s();
        if (left <= 0 || !evq_wait(&s->q, left))
            break;
    }
    if (jobs_running(s) > 0) {
        /* The engine did not answer: freeing now would hand it dangling pointers. */
        fd_log_error("server: %d sequences did not finish within %.0f s; leaking the server "
                     "state rather than freeing memory the engine may still use",
                     jobs_running(s), SHUTDOWN_WAIT_S);
        return;
    }
    if (s->mhd) {
        for (srv_job_t *j = s->jobs; j; j = j->next)
            resume(j); /* MHD must not be stopped with suspended connections */
        uv_poll_stop(&s->mhd_poll);
        MHD_stop_daemon(s->mhd); /* completes (and frees) every request; closes the socket */
        s->mhd = NULL;
        s->open_handles++;
        uv_close((uv_handle_t *)&s->mhd_poll, on_handle_closed);
    }
    if (s->handles_init) {
        s->open_handles += 2;
        uv_close((uv_handle_t *)&s->mhd_timer, on_handle_closed);
        uv_close((uv_handle_t *)&s->tick, on_handle_closed);
    }
    if (s->q_init) {
        s->open_handles++;
        s->q.async.data = s;
        evq_close(&s->q, on_handle_closed);
    }
    while (s->open_handles > 0)
        uv_run(s->loop, UV_RUN_NOWAIT);
    /* what is left is freed whatever its references: readers let go of their jobs first */
    for (srv_job_t *j = s->jobs; j; j = j->next)
        j->src = NULL;
    while (s->jobs)
        job_free(s->jobs);
    if (s->q_init)
        evq_fini(&s->q);
    met_free(s->met);
    rs_store_free(s->convs);
    rs_store_free(s->store);
    free_keys(s->keys, s->n_keys);
    free_keys(s->origins, s->n_origins);
    free(s->host);
    free(s->chat_template);
    free(s->jinja_text);
    jinja_free(s->jinja);
    free(s->model_id);
    if (s->tls)
        tls_clear();
    free(s);
}

