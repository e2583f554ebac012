/* config.h: fusiond's configuration: ONE declarative option table (config.c) drives the
 * defaults, the file parser (etc/fusiond.conf), the command-line flags, --help,
 * --dump-config and --test-config, and what a SIGHUP reload may change.  The daemon's main()
 * owns the cfg_t; everything runs on the main (event-loop) thread, and other modules get
 * copies of the values they need.  Errors come back as "file:line: reason" (or
 * "--flag: reason") in the caller's buffer with FD_ECONFIG. */
#ifndef FD_CONFIG_H
#define FD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/fd.h"
#include "engine/model.h"

/* A list of strings, NULL-terminated so it can be passed where "const char *const *" is
 * wanted (eng_params.backend_options). */
typedef struct cfg_list {
    char **v;
    int n;
} cfg_list_t;

/* Enumerations: the values are indices into the option's choices in config.c. */
enum cfg_backend { CFG_BACKEND_CPU = 0, CFG_BACKEND_CORSAIR, CFG_BACKEND_CUDA };
enum cfg_softmax { CFG_SOFTMAX_MAXSUM = 0, CFG_SOFTMAX_SUMONLY };
enum cfg_log_level { CFG_LOG_ERROR = 0, CFG_LOG_WARN, CFG_LOG_INFO, CFG_LOG_DEBUG };
enum cfg_log_format { CFG_LOG_AUTO = 0, CFG_LOG_JOURNAL, CFG_LOG_PLAIN };
enum cfg_spec { CFG_SPEC_NONE = 0, CFG_SPEC_NGRAM, CFG_SPEC_DRAFT };

/* What main() should do after cfg_load. */
enum cfg_action { CFG_RUN = 0, CFG_HELP, CFG_VERSION, CFG_DUMP, CFG_TEST };

typedef struct cfg {
    /* model and engine (restart to change) */
    char *model;            /* GGUF path; "" = the demo model (cfg_model_path) */
    char *model_alias;      /* id in /v1/models and responses; "" = from the model */
    char *chat_template;    /* chat format family override; "" = from the model */
    char *chat_template_file; /* Jinja template file instead of the model's; "" = none */
    bool jinja;             /* render every chat through the Jinja interpreter */
    int reasoning_format;   /* enum rsn_format (server/reasoning.h) */
    int reasoning_budget;   /* think-block tokens per answer; -1: no limit, 0: thinking off */
    char *reasoning_budget_message; /* forced before the block's end at the budget; "" none */
    bool prefill_assistant; /* a final assistant message is a prefill the answer continues */
    int backend;            /* enum cfg_backend */
    cfg_list_t backend_options; /* "key=value" strings for the backend */
    bool fusion;
    int softmax;            /* enum cfg_softmax */
    int cache_type_k;       /* KV cache types: indices into cfg_cache_type_name's names */
    int cache_type_v;       /* (llama.cpp's: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1) */
    bool swa_full;          /* sliding-window layers keep every position (no ring) */
    /* RoPE overrides (llama-server's --rope-* and --yarn-*): rope_scaling indexes auto,
     * none, linear, yarn (enum llm_rope_scaling); the strings are numbers or "" (the
     * model's), read by llm_rope_option; cfg_rope fills llm_rope_params_t from them */
    int rope_scaling;
    int yarn_orig_ctx;
    char *rope_scale, *rope_freq_base, *rope_freq_scale;
    char *yarn_ext_factor, *yarn_attn_factor, *yarn_beta_slow, *yarn_beta_fast;
    int threads;            /* 0 = online cores */
    int ctx_size;           /* 0 = the model's */
    int max_running;
    int max_waiting;
    int64_t kv_tokens;      /* 0 = max_running * ctx_size */
    int prefill_chunk;
    bool prefix_cache;      /* keep finished sequences' KV for prompts that extend them */
    int prefix_cache_min;   /* fewest reusable tokens worth a cached slot */
    int ctx_checkpoints;    /* context checkpoints a cached sequence keeps (sliding window) */
    int spec_type;          /* enum cfg_spec: speculative decoding */
    int draft_max;          /* most draft tokens per sequence per step */
    int draft_min;          /* fewest worth verifying */
    int prompt_lookup_max;  /* n-gram lengths looked up (ngram) */
    int prompt_lookup_min;
    char *model_draft;      /* the draft model's GGUF (draft; given alone it means draft) */
    char *draft_p_min;      /* a number in 0..1: the draft's confidence to go on drafting */
    int ctx_size_draft;     /* the draft model's context; 0 = ctx_size's */
    int threads_draft;      /* its CPU threads; 0 = threads' */
    bool embeddings;        /* serve /v1/embeddings */
    bool spm_infill;        /* /infill in Suffix-Prefix-Middle order */
    bool slots;             /* serve GET /slots */
    int pooling;            /* enum eng_pooling; 0 (auto): the model's, else mean */
    cfg_list_t lora;        /* LoRA adapter files at scale 1 (llama-server's --lora) */
    cfg_list_t lora_scaled; /* "FILE SCALE" items (--lora-scaled FILE SCALE): adapter ids
                               are lora's items in order, then these */
    bool lora_init_without_apply; /* load the adapters with global scale 0 */
    /* network (restart to change) */
    char *host;
    int port;               /* 0 = any free port (tests) */
    char *user;             /* drop to this user when started as root; "" = stay */
    int max_connections;
    double idle_timeout;    /* seconds */
    char *tls_cert_file;    /* PEM certificate (chain); with tls_key_file: HTTPS */
    char *tls_key_file;     /* PEM private key of that certificate */
    /* run-time changeable (SIGHUP) */
    double request_timeout; /* seconds, 0 = none */
    int64_t max_body_bytes;
    int max_n;              /* n x prompts per request */
    int retry_after;        /* seconds, in every 503 */
    double sse_ping_interval; /* seconds */
    cfg_list_t api_keys;    /* as configured */
    cfg_list_t cors_origins; /* origins allowed to call from a browser; "*" any; empty none */
    char *api_key_file;     /* one key per line */
    int log_level;          /* enum cfg_log_level */
    int log_format;         /* enum cfg_log_format (restart to change) */
    bool access_log;
    double drain_timeout;   /* seconds */
    int responses_store;    /* finished /v1/responses kept (restart to change) */
    int64_t responses_store_bytes; /* and the most bytes they take */

    /* Derived by cfg_load/cfg_reload: api_keys plus the keys read from api_key_file.  Empty
     * means no authentication. */
    cfg_list_t auth_keys;
    /* Derived at startup: the contents of tls_cert_file and tls_key_file (read before
     * privileges are dropped, so the key may be readable by root alone); NULL without TLS.
     * cfg_tls_reread replaces them. */
    char *tls_cert_pem;
    char *tls_key_pem;
    /* Derived by cfg_load/cfg_reload: one line per llama-server flag that was accepted but
     * has no meaning in fusiond ("-ngl 99: ignored: why"), for main() to log at startup. */
    cfg_list_t ignored_flags;

    /* Bookkeeping (read-only for callers). */
    int action;             /* enum cfg_action */
    bool verbose;           /* --verbose: --dump-config documents every option */
    char *config_path;      /* the file read, NULL when none */
    bool config_explicit;   /* given with -c/--config (then it must exist) */
    bool config_read;       /* the file existed and was read */
    int *src_line;          /* per option: file line that set it, 0 default, -1 flag */
    char **argv;            /* copy of the flags, re-applied over the file on reload */
    int argc;
} cfg_t;

/* Fills c with the defaults from the table; every other cfg_* call needs a c made by it.
 * cfg_fini frees everything. */
void cfg_init(cfg_t *c);
void cfg_fini(cfg_t *c);

/* The whole start-up sequence: defaults, then the config file (-c/--config, else
 * FD_SYSCONFDIR/fusiond.conf if it exists), then the flags over it, then the checks.
 * Sets c->action.  --help and --version return before reading any file.  Returns 0 or
 * FD_ECONFIG with "file:line: reason" (or "--flag: reason") in err. */
int cfg_load(cfg_t *c, int argc, char *const *argv, char *err, size_t errlen);

/* Parses config text as if it were the file `name` (for tests, and used by cfg_load). */
int cfg_parse_text(cfg_t *c, const char *name, const char *text, size_t len, char *err,
                   size_t errlen);

/* SIGHUP: reads the file again and re-applies the original flags.  If the result is valid,
 * the run-time options (log level, API keys, limits, access log) take their new values and
 * each change is logged; changes to other options are logged as needing a restart and
 * ignored.  If not valid, c is untouched and err says why.  *changed counts the options
 * that took a new value. */
int cfg_reload(cfg_t *c, int *changed, char *err, size_t errlen);

/* SIGHUP with HTTPS on: reads tls_cert_file and tls_key_file again (as the user the daemon
 * now runs as) and checks the pair as at startup.  A valid pair that differs from the one in
 * use replaces tls_cert_pem/tls_key_pem (*changed set); a file that cannot be read or a pair
 * that does not fit leaves them as they are, with err saying why (-1).  0 without HTTPS. */
int cfg_tls_reread(cfg_t *c, bool *changed, char *err, size_t errlen);

/* The model to load: c->model, or the demo model when that is empty.  NULL (errno set) when
 * that is not readable. */
const char *cfg_model_path(const cfg_t *c);
/* The demo model: DATADIR/models/demo.gguf once installed, else the source tree's copy (a
 * build run from its tree); NULL when neither is readable. */
const char *cfg_demo_model_path(void);

/* "cpu", "corsair", "cuda" etc.: the names of enumerated values. */
const char *cfg_backend_name(int backend);
const char *cfg_softmax_name(int softmax);
/* "f32", "f16", ... for a cache_type_k / cache_type_v value ("?" out of range): the name
 * backends/backend.h's fb_kv_type_from_name takes. */
const char *cfg_cache_type_name(int cache_type);
/* The RoPE overrides of c (rope_scaling ... yarn_beta_fast) for llm_load_params_t.rope. */
void cfg_rope(const cfg_t *c, llm_rope_params_t *r);
/* The LoRA adapters configured, in id order (lora, then lora_scaled): *n of them; path[i]
 * points into c (or into *paths' own copies), scale[i] is the global scale it starts with
 * (0 for all with lora_init_without_apply).  Both arrays malloc'd (free them); -ENOMEM. */
int cfg_lora(const cfg_t *c, char ***paths, float **scales, int *n);
/* The common/log.h level for c->log_level and format for c->log_format. */
int cfg_fd_log_level(const cfg_t *c);
int cfg_fd_log_format(const cfg_t *c);

/* CONFIG GET: option `name`'s value in file syntax (lists comma-joined, repeatable ones
 * newline-joined).  0, or -ENOENT for an unknown name. */
int cfg_get(const cfg_t *c, const char *name, char *buf, size_t buflen);

/* --help, generated from the table. */
void cfg_print_help(FILE *f, const char *prog);
/* --dump-config: the effective configuration as a valid config file.  verbose documents
 * every option and comments out those at their default (etc/fusiond.conf is this output
 * for the defaults). */
void cfg_dump(const cfg_t *c, FILE *f, bool verbose);

#endif
