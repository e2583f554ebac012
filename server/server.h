/* server.h: fusiond's HTTP front end: the OpenAI-compatible endpoints, SSE streaming,
 * /metrics and the access log, served by libmicrohttpd on the daemon's ONE libuv loop.
 * Owns the listening socket, every connection and every in-flight request; borrows the
 * engine (eng_t, owned by the daemon) and submits to it.  Called by the daemon main only.
 * Every srv_* function runs on the loop thread (the one that runs uv_run on the loop given
 * to srv_create), except srv_on_step, which the engine thread calls.  Tokenization and chat
 * formatting run on libuv's thread pool (uv_queue_work; UV_THREADPOOL_SIZE, default 4).
 * Threads, queues and ownership: server/DESIGN.md. */
#ifndef FD_SERVER_H
#define FD_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "engine/engine.h"

typedef struct srv srv_t;

/* Everything the server takes from the daemon's configuration.  Strings and the key array
 * are copied by srv_create / srv_reconfigure: the caller may free them afterwards.
 * (R) marks a field srv_reconfigure applies at run time; the others need a restart. */
typedef struct srv_config {
    const char *host;           /* bind address (default "127.0.0.1"); "0.0.0.0", "::" */
    int port;                   /* default 8080; 0 = any free port (srv_port tells which) */
    int listen_fd;              /* >= 0: an already bound, listening TCP socket (socket
                                   activation, or bound before dropping privileges); host
                                   and port are then ignored.  Default -1. */
    const char *model_id;       /* the "model" the API shows and accepts (default: the
                                   engine's model_id); requests naming another model: 404 */
    const char *chat_template;  /* chat format family instead of the one detected from the
                                   GGUF's tokenizer.chat_template: a server/chat.h name
                                   ("plain", "llama2", "llama3", "llama3.1", "chatml",
                                   "qwen", "qwen3", "mistral", "gemma", "phi3", "zephyr",
                                   "deepseek-r1", "mistral3", "granite", "phi4-mini";
                                   "jinja": the model's template through the interpreter),
                                   or Jinja template text (with "{{" or "{%": rendered by
                                   the interpreter); NULL, "" or "auto" = detect.
                                   srv_create: -EINVAL for others */
    const char *chat_template_file; /* a file with the Jinja template to use instead of
                                   the model's (read by srv_create: -EINVAL when it cannot
                                   be read or parsed); NULL = none */
    bool jinja;                 /* render every chat with the Jinja interpreter, not only
                                   templates that no built-in formatter knows */
    int reasoning_format;       /* enum rsn_format (server/reasoning.h): where a chat
                                   answer's think block goes, unless the request says;
                                   default RSN_AUTO.  srv_create: -EINVAL out of range */
    /* think-block tokens per chat answer: reasoning_budget (0: thinking off) when
     * has_reasoning_budget, else no limit.  A request's reasoning_budget_tokens overrides it */
    bool has_reasoning_budget;
    int reasoning_budget;
    const char *reasoning_budget_message; /* written into the reasoning before its forced end
                                             (NULL: none); a request's overrides it */
    bool no_prefill_assistant;  /* a chat ending in an assistant message is a whole turn
                                   (false: the answer continues it, a prefill) */
    /* (R) API keys: NULL-terminated array; NULL or empty = no authentication.  When set,
     * every route but /health needs "Authorization: Bearer KEY" or "X-Api-Key: KEY". */
    const char *const *api_keys;
    size_t max_body_bytes;      /* (R) request bodies above this answer 413 (default 1 MiB) */
    double request_timeout_s;   /* (R) per-request time limit from arrival; 0 = none
                                   (default 600).  What the client sees: README "API" */
    int max_connections;        /* open HTTP connections (default 256) */
    double idle_timeout_s;      /* keep-alive connection idle limit (default 60) */
    int retry_after_s;          /* (R) Retry-After of every 503 (default 1) */
    double ping_interval_s;     /* (R) SSE comment ping after this much silence (default 5) */
    int max_n;                  /* (R) upper bound of a request's n x prompts (default 16) */
    bool access_log;            /* (R) one log line per request (default on) */
    /* (R) CORS: NULL-terminated origins ("http://localhost:3000", compared without regard
     * to case) whose pages may call the server from a browser, or "*" for any; NULL or empty
     * = no CORS headers at all (browsers then keep other sites' pages out).  A request
     * from an allowed origin gets Access-Control-Allow-Origin (its origin with Vary:
     * Origin, or "*") on every answer, streams included; a preflight (OPTIONS with
     * Access-Control-Request-Method) on a known route is answered 204 without an API key. */
    const char *const *cors_origins;
    bool prefix_cache;          /* the engine runs with eng_params.prefix_cache: usage
                                   reports prompt_tokens_details.cached_tokens */
    bool embeddings;            /* serve /v1/embeddings (default on; off: 404) */
    bool spm_infill;            /* /infill's prompt in Suffix-Prefix-Middle order (default
                                   off: Prefix-Suffix-Middle) */
    bool slots;                 /* serve GET /slots (default on; off: 501, as llama-server's
                                   --no-slots) */
    int pooling;                /* enum eng_pooling for embeddings; ENG_POOL_NONE (auto,
                                   the default): the model's pooling type, else mean */
    /* HTTPS: the certificate (chain) and its unencrypted private key, PEM texts; both or
     * neither (srv_create: -EINVAL).  NULL: plain HTTP.  A certificate or key GnuTLS cannot
     * read fails srv_create; the pair itself is the configuration's to check (a key of
     * another certificate fails every handshake).  One HTTPS server per process (-EBUSY). */
    const char *tls_cert_pem;
    const char *tls_key_pem;
    /* /v1/responses' store of finished responses (previous_response_id, GET and DELETE
     * /v1/responses/{id}): at most this many (default 1000; 0: none is kept) and this many
     * bytes of their JSON (default 64 MiB), the least recently used dropped first. */
    int responses_store;
    size_t responses_store_bytes;
    /* LoRA: the global scales of the engine's adapters at start (copied; n_lora of them,
     * the engine's eng_info_t.n_lora; missing ones start at 0).  GET /lora-adapters lists
     * them, POST /lora-adapters sets them, and a request without "lora" runs under them. */
    const float *lora_scales;
    int n_lora;
} srv_config_t;

void srv_config_default(srv_config_t *c);

/* Creates the server on loop; does not listen yet.  eng may be NULL: until srv_set_engine,
 * /health and every model route answer 503 "loading model" (the daemon can listen while it
 * loads).  0, or -EINVAL / -ENOMEM with a message in err. */
int srv_create(srv_t **out, uv_loop_t *loop, eng_t *eng, const srv_config_t *cfg,
               char *err, size_t errlen);

/* Hands over the loaded engine: the server is ready from now on.  Call at most once, and
 * only when srv_create got NULL. */
void srv_set_engine(srv_t *s, eng_t *eng);

/* Binds (or adopts listen_fd) and starts accepting connections.  Errors: -EADDRINUSE,
 * -EACCES, ... (negative errno) with a message in err. */
int srv_listen(srv_t *s, char *err, size_t errlen);
/* The port actually bound (useful with port 0), or -1 before srv_listen. */
int srv_port(const srv_t *s);
/* "https" when the server has a certificate, else "http" (for log lines and URLs). */
const char *srv_scheme(const srv_t *s);
/* HTTPS: makes cert_pem / key_pem (PEM texts, a pair the configuration has checked) the
 * certificate new handshakes get; connections already made keep theirs.  0, or -EINVAL (err
 * says why; the current pair kept, or the server has no HTTPS) / -ENOMEM.  Loop thread. */
int srv_tls_update(srv_t *s, const char *cert_pem, const char *key_pem, char *err,
                   size_t errlen);

/* Graceful drain: from now on /health and every new model request answer 503 with
 * Retry-After, and responses ask clients to close their connection; requests already
 * admitted run to completion.  Idempotent; there is no undrain. */
void srv_drain(srv_t *s);
bool srv_draining(const srv_t *s);
/* Requests admitted and not yet finished (the daemon exits its drain when this is 0). */
int srv_running(const srv_t *s);
/* Ends every admitted request now (eng_cancel): non-streamed ones answer 503, streams get
 * an error frame and [DONE].  For the end of a drain timeout. */
void srv_cancel_all(srv_t *s);

/* Applies the (R) fields of cfg; the other fields are ignored (they need a restart).
 * 0, or -EINVAL with the reason in err and the old settings kept. */
int srv_reconfigure(srv_t *s, const srv_config_t *cfg, char *err, size_t errlen);

/* Step observer for the engine: set eng_params.on_step = srv_on_step and on_step_ud = the
 * srv_t before eng_open (so create the server first, with eng NULL).  Thread-safe: feeds
 * fusiond_step_seconds and fusiond_batch_size. */
void srv_on_step(void *srv, double seconds, int batch_seqs, int batch_tokens);

/* Stops listening, cancels what is still running (waiting for the engine to confirm),
 * closes every connection and frees the server.  Call it OUTSIDE uv_run (after uv_run has
 * returned): it closes its libuv handles and runs the loop (UV_RUN_NOWAIT) until they are
 * closed.  Call it before eng_close.  NULL is a no-op. */
void srv_destroy(srv_t *s);

#endif
