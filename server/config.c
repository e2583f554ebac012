/* config.c: the option table and everything it drives (see config.h).
 *
 * File syntax (documented again at the top of etc/fusiond.conf):
 *   - one "name = value" per line; blank lines are ignored; spaces around '=' are optional;
 *   - '#' starts a comment at the start of a line or after whitespace;
 *   - a value is either bare (runs to the comment or the end of the line, trailing spaces
 *     dropped) or double-quoted with \" \\ \n \t escapes (then only a comment may follow);
 *   - unknown names, bad values and repeated names (except repeatable options) are errors. */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "engine/engine.h"

#ifndef FD_SYSCONFDIR
#define FD_SYSCONFDIR "/etc"
#endif
#ifndef FD_DATADIR
#define FD_DATADIR "/usr/share/fusiond"
#endif
/* The demo model shipped with fusiond, relative to the data directory (issue 10). */
#ifndef FD_DEMO_MODEL
#define FD_DEMO_MODEL "models/demo.gguf"
#endif

enum opt_type {
    T_STR,  /* char * */
    T_INT,  /* int */
    T_I64,  /* int64_t */
    T_SIZE, /* int64_t bytes, with an optional K/M/G (binary) suffix */
    T_SECS, /* double seconds */
    T_BOOL, /* bool: on/off, yes/no, true/false, 1/0 */
    T_ENUM, /* int index into choices */
    T_LIST, /* cfg_list_t: comma- or space-separated, or one item per line (F_REPEAT) */
};

#define F_RELOAD 1u /* a SIGHUP applies a new value */
#define F_REPEAT 2u /* may be given several times; each gives one list item */
#define F_SECRET 4u /* never logged */

typedef int (*opt_check_fn)(const char *v, char *why, size_t whylen);

typedef struct opt {
    const char *name;   /* key in the file; the flag is --name with '-' for '_' */
    char shrt;          /* short flag or 0 */
    int type;
    size_t off;         /* field in cfg_t */
    const char *def;    /* default, in file syntax */
    double min, max;    /* numeric range (inclusive) */
    const char *const *choices; /* T_ENUM, NULL-terminated */
    unsigned flags;
    opt_check_fn check; /* extra validation of a string or list item */
    const char *group;  /* heading in --help and the documented file */
    const char *meta;   /* argument name in --help */
    const char *help;
} opt_t;

static const char *const backend_names[] = {"cpu", "corsair", "cuda", NULL};
static const char *const softmax_names[] = {"maxsum", "sumonly", NULL};
/* backend.h's KV cache types, by llama.cpp's names */
static const char *const cache_type_names[] = {"f32", "f16", "bf16", "q8_0", "q4_0",
                                               "q4_1", "q5_0", "q5_1", NULL};
static const char *const level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const format_names[] = {"auto", "journal", "plain", NULL};
/* indices are server/reasoning.h's enum rsn_format */
static const char *const reasoning_names[] = {"auto", "none", "deepseek", NULL};
/* indices are enum eng_pooling's values, auto in NONE's place */
static const char *const pooling_names[] = {"auto", "mean", "cls", "last", NULL};
static const char *const spec_names[] = {"none", "ngram", "draft", NULL};
/* indices are enum llm_rope_scaling's, auto for the model's */
static const char *const rope_scaling_names[] = {"auto", "none", "linear", "yarn", NULL};

static int check_host(const char *v, char *why, size_t n);
static int check_backend_option(const char *v, char *why, size_t n);
static int check_api_key(const char *v, char *why, size_t n);
static int check_user(const char *v, char *why, size_t n);
static int check_cors_origin(const char *v, char *why, size_t n);
static int check_lora(const char *v, char *why, size_t n);
static int check_p_min(const char *v, char *why, size_t n);
static int check_lora_scaled(const char *v, char *why, size_t n);

/* A RoPE number ("" unset) as llm_rope_option reads its flag. */
static int check_rope(const char *flag, const char *v, char *why, size_t n)
{
    llm_rope_params_t r = {0};
    char err[160];
    if (!*v || llm_rope_option(&r, flag, v, err, sizeof(err)) == 0)
        return 0;
    snprintf(why, n, "%s", strchr(err, ' ') ? strchr(err, ' ') + 1 : err);
    return -1;
}
#define CHECK_ROPE(fn, flag) \
    static int fn(const char *v, char *why, size_t n) { return check_rope(flag, v, why, n); }
CHECK_ROPE(check_rope_scale, "rope-scale")
CHECK_ROPE(check_rope_freq_base, "rope-freq-base")
CHECK_ROPE(check_rope_freq_scale, "rope-freq-scale")
CHECK_ROPE(check_yarn_ext, "yarn-ext-factor")
CHECK_ROPE(check_yarn_attn, "yarn-attn-factor")
CHECK_ROPE(check_yarn_beta_slow, "yarn-beta-slow")
CHECK_ROPE(check_yarn_beta_fast, "yarn-beta-fast")

/* The KV cache type by default: f32 keeps every shipped reference output (BENCHMARKS.md
 * has the measurements behind the choice) */
#define CFG_CACHE_TYPE_DEFAULT "f32"

#define O(field) offsetof(cfg_t, field)
#define BIG 1e18

static const opt_t opts[] = {
    /* name, short, type, field, default, min, max, choices, flags, check, group, meta, help */
    {"model", 'm', T_STR, O(model), "", 0, 0, NULL, 0, NULL, "Model and engine", "PATH",
     "GGUF model file to serve; empty: the demo model installed in fusiond's data directory, "
     "else the one in the source tree it was built from (fusiond --version shows which)."},
    {"model_alias", 0, T_STR, O(model_alias), "", 0, 0, NULL, 0, NULL, "Model and engine",
     "NAME", "Model id in /v1/models and in responses; empty: the model's general.name, else "
     "its file name."},
    {"chat_template", 0, T_STR, O(chat_template), "", 0, 0, NULL, 0, NULL, "Model and engine",
     "FAMILY", "Chat prompt format for /v1/chat/completions: a family name (llama2, llama3, "
     "llama3.1, chatml, qwen, qwen3, mistral, gemma, phi3, zephyr, deepseek-r1, mistral3, "
     "granite, phi4-mini, gpt-oss; jinja: the model's template through the Jinja "
     "interpreter) or Jinja template text (rendered by the interpreter); empty: the model's "
     "tokenizer.chat_template."},
    {"chat_template_file", 0, T_STR, O(chat_template_file), "", 0, 0, NULL, 0, NULL,
     "Model and engine", "PATH", "A file holding the Jinja chat template to render chats "
     "with instead of the model's tokenizer.chat_template (llama-server's "
     "--chat-template-file), through the Jinja interpreter."},
    {"jinja", 0, T_BOOL, O(jinja), "off", 0, 0, NULL, 0, NULL, "Model and engine", NULL,
     "Render every chat with its Jinja template through fusiond's interpreter (llama-server's "
     "--jinja), also when a built-in formatter knows the template's family (whose tool-call "
     "and reasoning reading then still apply); off: the built-in formatter where one "
     "matches, the interpreter for any other template."},
    {"reasoning_format", 0, T_ENUM, O(reasoning_format), "auto", 0, 0, reasoning_names, 0,
     NULL, "Model and engine", NULL, "Where a chat answer's \"<think>...</think>\" block "
     "goes (llama-server's --reasoning-format): deepseek: message.reasoning_content "
     "(delta.reasoning_content when streamed), the rest in content; none: left in content; "
     "auto: deepseek for the qwen3 and deepseek-r1 chat formats (deepseek-r1's generation "
     "prompt opens the block: the answer starts inside it), none for the others.  A request's "
     "reasoning_format overrides it."},
    {"reasoning_budget", 0, T_INT, O(reasoning_budget), "-1", -1, 1 << 30, NULL, 0, NULL,
     "Model and engine", "N", "Tokens a chat answer may think (llama-server's "
     "--reasoning-budget): once its think block (qwen3, deepseek-r1; gpt-oss's analysis "
     "channel) has this many, \"</think>\\n\\n\" (gpt-oss: the final channel's header) is "
     "forced and the answer follows; -1: no limit; 0: thinking off (qwen3 and deepseek-r1 "
     "as enable_thinking false).  A request's reasoning_budget_tokens (or "
     "thinking_budget_tokens, Anthropic's thinking.budget_tokens) overrides it."},
    {"reasoning_budget_message", 0, T_STR, O(reasoning_budget_message), "", 0, 0, NULL, 0,
     NULL, "Model and engine", "TEXT", "Text forced into the reasoning before its end when "
     "reasoning_budget runs out (llama-server's --reasoning-budget-message), e.g. \"Time is "
     "up: I must answer now.\"; empty: none.  A request's reasoning_budget_message overrides "
     "it."},
    {"prefill_assistant", 0, T_BOOL, O(prefill_assistant), "on", 0, 0, NULL, 0, NULL,
     "Model and engine", NULL, "A chat that ends in an assistant message: on: the answer "
     "continues that message (a prefill: the prompt is cut after its content); off: it is a "
     "whole turn, and the answer a new one (llama-server's --no-prefill-assistant)."},
    {"backend", 'b', T_ENUM, O(backend), "cpu", 0, 0, backend_names, 0, NULL,
     "Model and engine", NULL, "Compute backend."},
    {"backend_option", 0, T_LIST, O(backend_options), "", 0, 0, NULL, F_REPEAT,
     check_backend_option, "Model and engine", "KEY=VALUE",
     "A backend parameter (for example a Corsair constant); repeat the line for several."},
    {"fusion", 0, T_BOOL, O(fusion), "on", 0, 0, NULL, 0, NULL, "Model and engine", NULL,
     "Deferred-normalization fused operators (off: the plain reference plan)."},
    {"softmax", 0, T_ENUM, O(softmax), "maxsum", 0, 0, softmax_names, 0, NULL,
     "Model and engine", NULL, "Fused attention softmax variant (with fusion on)."},
    {"cache_type_k", 0, T_ENUM, O(cache_type_k), CFG_CACHE_TYPE_DEFAULT, 0, 0,
     cache_type_names, 0, NULL, "Model and engine", NULL,
     "KV cache type of K (llama-server's --cache-type-k, also -ctk): f16 and bf16 halve "
     "the cache, q8_0 about quarters it, q4_0 stores about an eighth; f32 is exact.  The "
     "cpu and cuda backends take every type, corsair f32 f16 bf16 q8_0 q4_0."},
    {"cache_type_v", 0, T_ENUM, O(cache_type_v), CFG_CACHE_TYPE_DEFAULT, 0, 0,
     cache_type_names, 0, NULL, "Model and engine", NULL,
     "KV cache type of V (llama-server's --cache-type-v, also -ctv)."},
    {"swa_full", 0, T_BOOL, O(swa_full), "off", 0, 0, NULL, 0, NULL, "Model and engine", NULL,
     "Keep every position in the KV cache of sliding-window layers too (llama-server's "
     "--swa-full).  Off: Gemma 2/3's local layers keep a ring of the window plus one step's "
     "tokens, and a cached prefix is reused only while the ring still holds the window it "
     "needs (else the prompt is prefilled again)."},
    {"rope_scaling", 0, T_ENUM, O(rope_scaling), "auto", 0, 0, rope_scaling_names, 0, NULL,
     "Model and engine", NULL, "RoPE scaling type (llama-server's --rope-scaling): auto: the "
     "model's rope.scaling.type; yarn as llama.cpp computes it (Qwen2.5/Qwen3 long-context "
     "files say yarn)."},
    {"rope_scale", 0, T_STR, O(rope_scale), "", 0, 0, NULL, 0, check_rope_scale,
     "Model and engine", "F", "RoPE context scaling factor (llama-server's --rope-scale; the "
     "frequency scale becomes 1/F); empty or 0: the model's."},
    {"rope_freq_base", 0, T_STR, O(rope_freq_base), "", 0, 0, NULL, 0, check_rope_freq_base,
     "Model and engine", "B", "RoPE base frequency (--rope-freq-base); empty or 0: the "
     "model's."},
    {"rope_freq_scale", 0, T_STR, O(rope_freq_scale), "", 0, 0, NULL, 0,
     check_rope_freq_scale, "Model and engine", "S", "RoPE frequency scale, 1 / the scaling "
     "factor (--rope-freq-scale); empty or 0: the model's."},
    {"yarn_orig_ctx", 0, T_INT, O(yarn_orig_ctx), "0", 0, 1 << 30, NULL, 0, NULL,
     "Model and engine", "TOKENS", "YaRN's original context (--yarn-orig-ctx); 0: the "
     "model's rope.scaling.original_context_length, else its training context."},
    {"yarn_ext_factor", 0, T_STR, O(yarn_ext_factor), "", 0, 0, NULL, 0, check_yarn_ext,
     "Model and engine", "X", "YaRN's extrapolation mix (--yarn-ext-factor, >= 0); empty or "
     "negative: 1 with yarn scaling, else 0."},
    {"yarn_attn_factor", 0, T_STR, O(yarn_attn_factor), "", 0, 0, NULL, 0, check_yarn_attn,
     "Model and engine", "A", "Attention factor (--yarn-attn-factor, > 0); llama.cpp (and "
     "fusiond) replace it by YaRN's own magnitude where the mix is not 0."},
    {"yarn_beta_slow", 0, T_STR, O(yarn_beta_slow), "", 0, 0, NULL, 0, check_yarn_beta_slow,
     "Model and engine", "B", "YaRN's high correction dim, in turns (--yarn-beta-slow, > 0); "
     "empty: 1."},
    {"yarn_beta_fast", 0, T_STR, O(yarn_beta_fast), "", 0, 0, NULL, 0, check_yarn_beta_fast,
     "Model and engine", "B", "YaRN's low correction dim, in turns (--yarn-beta-fast, > 0); "
     "empty: 32."},
    {"threads", 't', T_INT, O(threads), "0", 0, 4096, NULL, 0, NULL, "Model and engine", "N",
     "CPU worker threads; 0: one per online core."},
    {"ctx_size", 0, T_INT, O(ctx_size), "0", 0, 16777216, NULL, 0, NULL, "Model and engine",
     "TOKENS", "Context length per sequence; 0: the model's trained context."},
    {"max_running", 0, T_INT, O(max_running), "16", 1, 4096, NULL, 0, NULL,
     "Model and engine", "N", "Sequences decoded together in one batch."},
    {"max_waiting", 0, T_INT, O(max_waiting), "64", 0, 1000000, NULL, 0, NULL,
     "Model and engine", "N",
     "Requests queued behind the running ones; more are refused with 503 and Retry-After."},
    {"kv_tokens", 0, T_I64, O(kv_tokens), "0", 0, 1e12, NULL, 0, NULL, "Model and engine",
     "TOKENS", "KV cache capacity in tokens over all sequences; 0: max_running * ctx_size."},
    {"prefill_chunk", 0, T_INT, O(prefill_chunk), "256", 1, 1048576, NULL, 0, NULL,
     "Model and engine", "TOKENS",
     "Prompt tokens per sequence per step, so long prompts do not stall running streams."},
    {"prefix_cache", 0, T_BOOL, O(prefix_cache), "off", 0, 0, NULL, 0, NULL,
     "Model and engine", NULL,
     "Keep a finished request's KV cache slot: a later prompt that starts with the same "
     "tokens (the next turn of a chat) prefills only the rest.  Cached slots give way to "
     "any request that needs their room."},
    {"prefix_cache_min", 0, T_INT, O(prefix_cache_min), "16", 1, 16777216, NULL, 0, NULL,
     "Model and engine", "TOKENS",
     "Fewest prompt tokens worth reusing from a cached slot (with prefix_cache on)."},
    {"ctx_checkpoints", 0, T_INT, O(ctx_checkpoints), "8", 0, 1024, NULL, 0, NULL,
     "Model and engine", "N",
     "Context checkpoints a cached sequence keeps (llama-server's --ctx-checkpoints, "
     "-ctxcp, --swa-checkpoints; 0: none), with prefix_cache on a model whose sliding-window "
     "layers keep rings (Gemma 2/3 without swa_full): copies of the window the rings hold at "
     "the end of each prompt and where a prompt left a cached sequence before its end, so a "
     "later prompt that leaves a cached sequence long before its end (a "
     "regenerated answer, another question after a shared system prompt) still reuses it up "
     "to there.  Each takes at most the window's rows of every local layer in host memory "
     "(the startup log gives the bytes)."},
    {"spec_type", 0, T_ENUM, O(spec_type), "none", 0, 0, spec_names, 0, NULL,
     "Model and engine", NULL,
     "Speculative decoding: ngram drafts the tokens that followed the last earlier "
     "occurrence of a sequence's last few tokens in its own prompt and output (prompt "
     "lookup: no draft model); draft runs model_draft, a smaller model of the same "
     "vocabulary, greedily (the default when model_draft is given).  The drafts are "
     "verified in the same step; the output is exactly what decoding without them gives.  "
     "ngram is faster where the output repeats its context (summaries, code edits, "
     "quotes); draft wherever the small model guesses the large one well."},
    {"draft_max", 0, T_INT, O(draft_max), "8", 1, ENG_DRAFT_MAX, NULL, 0, NULL,
     "Model and engine", "TOKENS",
     "Most draft tokens verified per sequence per step (with spec_type ngram or draft)."},
    {"draft_min", 0, T_INT, O(draft_min), "1", 1, ENG_DRAFT_MAX, NULL, 0, NULL,
     "Model and engine", "TOKENS",
     "Fewest draft tokens worth verifying; at most draft_max (with spec_type ngram or "
     "draft)."},
    {"model_draft", 0, T_STR, O(model_draft), "", 0, 0, NULL, 0, NULL, "Model and engine",
     "PATH",
     "Draft model for speculative decoding (llama-server's --model-draft, -md): a GGUF file "
     "with the model's vocabulary (checked as llama.cpp checks it), run on the same backend "
     "with its own KV cache; given alone it sets spec_type draft."},
    {"draft_p_min", 0, T_STR, O(draft_p_min), "0.75", 0, 0, NULL, 0, check_p_min,
     "Model and engine", "P",
     "Stop drafting where the draft model's most likely token has a probability below P "
     "(with spec_type draft; llama-server's --draft-p-min)."},
    {"ctx_size_draft", 0, T_INT, O(ctx_size_draft), "0", 0, 16777216, NULL, 0, NULL,
     "Model and engine", "TOKENS",
     "The draft model's context per sequence (llama-server's --ctx-size-draft, -cd); 0: "
     "ctx_size's.  Sequences longer than it are not drafted for."},
    {"threads_draft", 0, T_INT, O(threads_draft), "0", 0, 1024, NULL, 0, NULL,
     "Model and engine", "N",
     "CPU threads of the draft model (llama-server's --threads-draft, -td); 0: threads'."},
    {"prompt_lookup_max", 0, T_INT, O(prompt_lookup_max), "4", 1, 64, NULL, 0, NULL,
     "Model and engine", "TOKENS",
     "Longest n-gram of the last tokens looked up in the history (with spec_type ngram)."},
    {"prompt_lookup_min", 0, T_INT, O(prompt_lookup_min), "2", 1, 64, NULL, 0, NULL,
     "Model and engine", "TOKENS",
     "Shortest n-gram looked up; at most prompt_lookup_max (with spec_type ngram)."},
    {"lora", 0, T_LIST, O(lora), "", 0, 0, NULL, F_REPEAT, check_lora, "Model and engine",
     "FILE", "A LoRA adapter (GGUF, as llama.cpp's convert_lora_to_gguf.py writes it) applied "
     "at scale 1 (llama-server's --lora); repeat for several.  Adapter ids (GET /lora-adapters)"
     " are these in order, then lora_scaled's."},
    {"lora_scaled", 0, T_LIST, O(lora_scaled), "", 0, 0, NULL, F_REPEAT, check_lora_scaled,
     "Model and engine", "FILE SCALE", "A LoRA adapter and its global scale (llama-server's "
     "--lora-scaled FILE SCALE; in the file \"lora_scaled = FILE SCALE\"); repeatable."},
    {"lora_init_without_apply", 0, T_BOOL, O(lora_init_without_apply), "off", 0, 0, NULL, 0,
     NULL, "Model and engine", NULL, "Load the LoRA adapters with global scale 0 (POST "
     "/lora-adapters sets the scales; llama-server's --lora-init-without-apply)."},
    {"embeddings", 0, T_BOOL, O(embeddings), "on", 0, 0, NULL, 0, NULL, "Model and engine",
     NULL, "Serve /v1/embeddings: an embedding request only prefills its input, beside the "
     "generating requests, so it costs nothing while unused (off: 404)."},
    {"spm_infill", 0, T_BOOL, O(spm_infill), "off", 0, 0, NULL, 0, NULL, "Model and engine",
     NULL, "/infill puts the suffix before the prefix (Suffix-Prefix-Middle), for code "
     "models trained so (llama-server's --spm-infill); off: Prefix-Suffix-Middle."},
    {"slots", 0, T_BOOL, O(slots), "on", 0, 0, NULL, 0, NULL, "Model and engine", NULL,
     "Serve GET /slots, llama-server's view of the batch slots and the requests in them "
     "(llama-server's --slots / --no-slots, on by default there too); off: 501."},
    {"pooling", 0, T_ENUM, O(pooling), "auto", 0, 0, pooling_names, 0, NULL,
     "Model and engine", NULL, "How /v1/embeddings pools the input's final hidden states: "
     "the mean over its tokens, its first (cls) or last token; auto: the model's "
     "pooling_type, else mean."},

    {"host", 0, T_STR, O(host), "127.0.0.1", 0, 0, NULL, 0, check_host, "Network", "ADDR",
     "Address to listen on (0.0.0.0 or :: for all; keep the default unless a proxy or "
     "firewall guards the port)."},
    {"port", 'p', T_INT, O(port), "8080", 0, 65535, NULL, 0, NULL, "Network", "PORT",
     "TCP port; 0: any free port (logged)."},
    {"user", 0, T_STR, O(user), "", 0, 0, NULL, 0, check_user, "Network", "NAME",
     "When started as root: switch to this user after binding the port and opening the "
     "model; empty: keep running as started."},

    {"max_connections", 0, T_INT, O(max_connections), "256", 1, 1000000, NULL, 0, NULL,
     "Network", "N", "Open HTTP connections at most."},
    {"idle_timeout", 0, T_SECS, O(idle_timeout), "60", 1, 86400, NULL, 0, NULL, "Network",
     "SECONDS", "A keep-alive connection idle this long is closed."},
    {"tls_cert_file", 0, T_STR, O(tls_cert_file), "", 0, 0, NULL, 0, NULL, "Network", "PATH",
     "HTTPS: the server's certificate in PEM (followed by its chain, if any); set together "
     "with tls_key_file.  Empty: plain HTTP."},
    {"tls_key_file", 0, T_STR, O(tls_key_file), "", 0, 0, NULL, 0, NULL, "Network", "PATH",
     "HTTPS: the certificate's private key in PEM, unencrypted; read at startup before "
     "privileges are dropped, so it may be readable by root alone.  SIGHUP reads both files "
     "again and serves a renewed pair if the daemon's user can read them (a new path: "
     "restart)."},

    {"request_timeout", 0, T_SECS, O(request_timeout), "600", 0, 1e9, NULL, F_RELOAD, NULL,
     "Limits", "SECONDS", "Time limit per request, counted from its arrival; 0: none."},
    {"max_n", 0, T_INT, O(max_n), "16", 1, 1024, NULL, F_RELOAD, NULL, "Limits", "N",
     "Largest n (choices) times prompts in one request."},
    {"retry_after", 0, T_INT, O(retry_after), "1", 0, 3600, NULL, F_RELOAD, NULL, "Limits",
     "SECONDS", "Retry-After of every 503 (queue full, loading, draining)."},
    {"sse_ping_interval", 0, T_SECS, O(sse_ping_interval), "5", 0.1, 3600, NULL, F_RELOAD,
     NULL, "Limits", "SECONDS",
     "A stream silent this long (a long prefill) gets an SSE comment ping, so proxies keep "
     "it open."},
    {"max_body_bytes", 0, T_SIZE, O(max_body_bytes), "4M", 1024, 1073741824, NULL, F_RELOAD,
     NULL, "Limits", "BYTES", "Largest request body (K, M, G suffixes); larger ones get 413."},
    {"drain_timeout", 0, T_SECS, O(drain_timeout), "30", 0, 1e6, NULL, F_RELOAD, NULL,
     "Limits", "SECONDS",
     "On SIGTERM/SIGINT, how long running requests may finish before they are cancelled."},
    {"responses_store", 0, T_INT, O(responses_store), "1000", 0, 10000000, NULL, 0, NULL,
     "Limits", "N",
     "Finished /v1/responses answers kept in memory for previous_response_id and GET "
     "/v1/responses/{id} (requests with store false are not kept); the least recently used "
     "go first; 0: none is kept (and no background responses nor conversations).  "
     "/v1/conversations are kept in a store of their own with the same bounds."},
    {"responses_store_bytes", 0, T_SIZE, O(responses_store_bytes), "64M", 0, 1099511627776.0,
     NULL, 0, NULL, "Limits", "BYTES",
     "Most memory (their JSON) the stored responses take; older ones make room."},

    {"api_keys", 0, T_LIST, O(api_keys), "", 0, 0, NULL, F_RELOAD | F_SECRET, check_api_key,
     "Authentication", "KEY,...",
     "API keys accepted as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY' (comma "
     "separated); none here or in api_key_file: no authentication.  /health stays open."},
    {"api_key_file", 0, T_STR, O(api_key_file), "", 0, 0, NULL, F_RELOAD, NULL,
     "Authentication", "PATH",
     "File with more API keys, one per line ('#' comments); keep it unreadable to others."},

    {"cors_origins", 0, T_LIST, O(cors_origins), "", 0, 0, NULL, F_RELOAD, check_cors_origin,
     "Authentication", "ORIGIN,...",
     "Web pages that may call the API from a browser (CORS), by origin: scheme://host[:port] "
     "as the browser sends it (http://localhost:3000), comma separated, or * for any page; "
     "their requests still need an API key when keys are set.  Empty: no CORS headers, so "
     "browsers keep other sites' pages from using the server (any page a user opens could "
     "otherwise call a local server)."},

    {"log_level", 'l', T_ENUM, O(log_level), "info", 0, 0, level_names, F_RELOAD, NULL,
     "Logging", NULL, "Messages at this level and more severe are logged (to stderr)."},
    {"log_format", 0, T_ENUM, O(log_format), "auto", 0, 0, format_names, 0, NULL, "Logging",
     NULL, "journal: syslog priority prefixes for journald; plain: timestamps; auto: journal "
     "when stderr is connected to the journal."},
    {"access_log", 0, T_BOOL, O(access_log), "on", 0, 0, NULL, F_RELOAD, NULL, "Logging", NULL,
     "One info line per request: method, path, status, tokens and latencies."},
};

#define N_OPTS ((int)FD_ARRAY_LEN(opts))

/* ---- small helpers ---- */

static void *field(cfg_t *c, const opt_t *o)
{
    return (char *)c + o->off;
}
static const void *cfield(const cfg_t *c, const opt_t *o)
{
    return (const char *)c + o->off;
}

static size_t type_size(int t)
{
    switch (t) {
    case T_STR: return sizeof(char *);
    case T_INT: case T_ENUM: return sizeof(int);
    case T_I64: case T_SIZE: return sizeof(int64_t);
    case T_SECS: return sizeof(double);
    case T_BOOL: return sizeof(bool);
    default: return sizeof(cfg_list_t);
    }
}

static int opt_index(const char *name, size_t len)
{
    for (int i = 0; i < N_OPTS; i++)
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return i;
    return -1;
}

static int seterr(char *err, size_t errlen, const char *fmt, ...) FD_PRINTF(3, 4);
static int seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return FD_ECONFIG;
}

/* Edit distance, for "did you mean" on unknown names. */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = FD_MIN(sub, FD_MIN(del, ins));
        }
    return d[la][lb];
}

static const char *suggest(const char *name)
{
    const char *best = NULL;
    int bd = 3;
    for (int i = 0; i < N_OPTS; i++) {
        int dd = edit_distance(name, opts[i].name);
        if (dd < bd) {
            bd = dd;
            best = opts[i].name;
        }
    }
    return best;
}

static void list_clear(cfg_list_t *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void list_add(cfg_list_t *l, const char *s, size_t len)
{
    l->v = realloc(l->v, (size_t)(l->n + 2) * sizeof(char *));
    if (!l->v) {
        fprintf(stderr, "fusiond: out of memory reading the configuration\n");
        abort();
    }
    char *p = fd_xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = 0;
    l->v[l->n++] = p;
    l->v[l->n] = NULL;
}

static bool list_has(const cfg_list_t *l, const char *s)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return true;
    return false;
}

/* ---- validators ---- */

static int check_host(const char *v, char *why, size_t n)
{
    if (!*v)
        return seterr(why, n, "must not be empty");
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(".:-_%[]", *p))
            return seterr(why, n, "'%s' is not an address or host name", v);
    return 0;
}

static int check_backend_option(const char *v, char *why, size_t n)
{
    const char *eq = strchr(v, '=');
    if (!eq || eq == v)
        return seterr(why, n, "'%s' is not KEY=VALUE", v);
    for (const char *p = v; p < eq; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._-", *p))
            return seterr(why, n, "'%.*s' is not a valid key", (int)(eq - v), v);
    return 0;
}

/* draft_p_min: a probability */
static int check_p_min(const char *v, char *why, size_t n)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= 0 && x <= 1))
        return seterr(why, n, "'%s' is not a probability (a number from 0 to 1)", v);
    return 0;
}

static int check_lora(const char *v, char *why, size_t n)
{
    if (!*v || strlen(v) > 4000)
        return seterr(why, n, "a LoRA adapter is a file path (1 to 4000 characters)");
    return 0;
}

/* "FILE SCALE": the scale after the last blank. */
static int split_lora_scaled(const char *v, size_t *path_len, float *scale)
{
    const char *sp = strrchr(v, ' '), *tab = strrchr(v, '\t');
    if (!sp || (tab && tab > sp))
        sp = tab;
    if (!sp || sp == v)
        return -1;
    char *end;
    errno = 0;
    double d = strtod(sp + 1, &end);
    if (end == sp + 1 || *end || errno || !isfinite(d) || fabs(d) > 1e6)
        return -1;
    size_t k = (size_t)(sp - v);
    while (k > 0 && (v[k - 1] == ' ' || v[k - 1] == '\t'))
        k--;
    if (k == 0)
        return -1;
    *path_len = k;
    *scale = (float)d;
    return 0;
}

static int check_lora_scaled(const char *v, char *why, size_t n)
{
    size_t k;
    float s;
    if (strlen(v) > 4000 || split_lora_scaled(v, &k, &s) != 0)
        return seterr(why, n, "'%.200s' is not FILE SCALE (a path, a blank, a number)", v);
    return 0;
}

int cfg_lora(const cfg_t *c, char ***paths, float **scales, int *n)
{
    int total = c->lora.n + c->lora_scaled.n;
    *paths = NULL;
    *scales = NULL;
    *n = 0;
    if (total == 0)
        return 0;
    char **p = calloc((size_t)total, sizeof *p);
    float *s = calloc((size_t)total, sizeof *s);
    if (!p || !s)
        goto nomem;
    for (int i = 0; i < c->lora.n; i++) {
        if (!(p[i] = strdup(c->lora.v[i])))
            goto nomem;
        s[i] = 1.0f;
    }
    for (int i = 0; i < c->lora_scaled.n; i++) {
        size_t k = 0;
        float sc = 1.0f;
        if (split_lora_scaled(c->lora_scaled.v[i], &k, &sc) != 0)
            k = strlen(c->lora_scaled.v[i]);
        if (!(p[c->lora.n + i] = strndup(c->lora_scaled.v[i], k)))
            goto nomem;
        s[c->lora.n + i] = sc;
    }
    if (c->lora_init_without_apply)
        for (int i = 0; i < total; i++)
            s[i] = 0.0f;
    *paths = p;
    *scales = s;
    *n = total;
    return 0;
nomem:
    for (int i = 0; p && i < total; i++)
        free(p[i]);
    free(p);
    free(s);
    return -ENOMEM;
}

static int check_api_key(const char *v, char *why, size_t n)
{
    size_t len = strlen(v);
    if (len == 0 || len > 512)
        return seterr(why, n, "an API key has 1 to 512 characters");
    for (const char *p = v; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || *p == ',')
            return seterr(why, n, "an API key is printable ASCII without spaces or commas");
    return 0;
}

/* What a browser sends as Origin: scheme "://" host [":" port], no path, no trailing slash
 * (a copied URL's "/" would never match), or "*". */
static int check_cors_origin(const char *v, char *why, size_t n)
{
    if (strcmp(v, "*") == 0)
        return 0;
    const char *p = v;
    while (isalnum((unsigned char)*p) || (p > v && *p && strchr("+.-", *p)))
        p++;
    bool ok = p > v && isalpha((unsigned char)*v) && strncmp(p, "://", 3) == 0;
    const char *host = ok ? p + 3 : p;
    const char *end = host + strlen(host);
    const char *port = NULL;
    if (ok && *host == '[') { /* IPv6 literal */
        const char *rb = strchr(host, ']');
        ok = rb && rb > host + 1;
        for (const char *q = host + 1; ok && q < rb; q++)
            ok = isxdigit((unsigned char)*q) || *q == ':' || *q == '.';
        if (ok && rb[1]) {
            ok = rb[1] == ':';
            port = rb + 2;
        }
    } else if (ok) {
        const char *colon = strchr(host, ':');
        const char *hend = colon ? colon : end;
        ok = hend > host;
        for (const char *q = host; ok && q < hend; q++)
            ok = isalnum((unsigned char)*q) || *q == '-' || *q == '.' || *q == '_';
        port = colon ? colon + 1 : NULL;
    }
    if (ok && port) {
        ok = *port && strlen(port) <= 5;
        for (const char *q = port; ok && *q; q++)
            ok = isdigit((unsigned char)*q);
        ok = ok && atoi(port) <= 65535;
    }
    if (!ok)
        return seterr(why, n, "'%s' is not an origin: write scheme://host[:port] with no path "
                      "or trailing slash (for example http://localhost:3000), or * for any",
                      v);
    return 0;
}

static int check_user(const char *v, char *why, size_t n)
{
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._-$", *p))
            return seterr(why, n, "'%s' is not a user name", v);
    return 0;
}

/* ---- values ---- */

static int parse_i64(const char *v, long long *out, char *why, size_t n)
{
    char *end;
    errno = 0;
    if (!*v || isspace((unsigned char)*v))
        return seterr(why, n, "'%s' is not an integer", v);
    long long x = strtoll(v, &end, 10);
    if (errno == ERANGE)
        return seterr(why, n, "'%s' is out of range", v);
    if (*end)
        return seterr(why, n, "'%s' is not an integer", v);
    *out = x;
    return 0;
}

static int parse_size(const char *v, long long *out, char *why, size_t n)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*v))
        return seterr(why, n, "'%s' is not a size (bytes, or with K, M, G)", v);
    long long x = strtoll(v, &end, 10);
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (shift && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0))
        end += strlen(end);
    if (*end)
        return seterr(why, n, "'%s' is not a size (bytes, or with K, M, G)", v);
    if (errno == ERANGE || x > (LLONG_MAX >> shift))
        return seterr(why, n, "'%s' is out of range", v);
    *out = x << shift;
    return 0;
}

static int parse_bool(const char *v, bool *out, char *why, size_t n)
{
    static const char *const yes[] = {"on", "yes", "true", "1"};
    static const char *const no[] = {"off", "no", "false", "0"};
    for (size_t i = 0; i < FD_ARRAY_LEN(yes); i++) {
        if (strcmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return seterr(why, n, "'%s' is not on or off", v);
}

static void choices_text(const opt_t *o, char *buf, size_t n, const char *sep)
{
    size_t pos = 0;
    buf[0] = 0;
    for (int i = 0; o->choices[i] && pos < n; i++)
        pos += (size_t)snprintf(buf + pos, n - pos, "%s%s", i ? sep : "", o->choices[i]);
}

static void range_text(const opt_t *o, char *buf, size_t n)
{
    snprintf(buf, n, "%.15g..%.15g", o->min, o->max);
}

/* Sets option o from text v.  first_flag: the first flag for a list option, which replaces
 * what the file said.  why gets the reason on error (without location). */
static int set_value(cfg_t *c, const opt_t *o, const char *v, bool replace_list, char *why,
                     size_t n)
{
    void *f = field(c, o);
    long long x = 0;
    char tmp[160];
    int rc;
    switch (o->type) {
    case T_STR:
        if (o->check && (rc = o->check(v, why, n)) != 0)
            return rc;
        free(*(char **)f);
        *(char **)f = fd_xstrdup(v);
        return 0;
    case T_INT:
    case T_I64:
    case T_SIZE:
        rc = o->type == T_SIZE ? parse_size(v, &x, why, n) : parse_i64(v, &x, why, n);
        if (rc)
            return rc;
        if ((double)x < o->min || (double)x > o->max) {
            range_text(o, tmp, sizeof(tmp));
            return seterr(why, n, "%s is out of range %s", v, tmp);
        }
        if (o->type == T_INT)
            *(int *)f = (int)x;
        else
            *(int64_t *)f = x;
        return 0;
    case T_SECS: {
        char *end;
        double d = strtod(v, &end);
        if (!*v || *end || !isfinite(d) || isspace((unsigned char)*v))
            return seterr(why, n, "'%s' is not a number of seconds", v);
        if (d < o->min || d > o->max) {
            range_text(o, tmp, sizeof(tmp));
            return seterr(why, n, "%s is out of range %s", v, tmp);
        }
        *(double *)f = d;
        return 0;
    }
    case T_BOOL:
        return parse_bool(v, (bool *)f, why, n);
    case T_ENUM:
        for (int i = 0; o->choices[i]; i++)
            if (strcmp(v, o->choices[i]) == 0) {
                *(int *)f = i;
                return 0;
            }
        choices_text(o, tmp, sizeof(tmp), ", ");
        return seterr(why, n, "'%s' is not one of %s", v, tmp);
    case T_LIST: {
        cfg_list_t *l = f;
        cfg_list_t nl = {0};
        if (o->flags & F_REPEAT) {
            /* An empty value empties the list (as systemd's empty assignments do). */
            if (!*v) {
                list_clear(l);
                return 0;
            }
            if (o->check && (rc = o->check(v, why, n)) != 0)
                return rc;
            list_add(&nl, v, strlen(v));
        } else {
            const char *p = v;
            while (*p) {
                size_t k = strcspn(p, ", \t");
                if (k) {
                    char item[520];
                    if (k >= sizeof(item)) {
                        list_clear(&nl);
                        return seterr(why, n, "an item longer than %zu characters",
                                      sizeof(item) - 1);
                    }
                    memcpy(item, p, k);
                    item[k] = 0;
                    if (o->check && (rc = o->check(item, why, n)) != 0) {
                        list_clear(&nl);
                        return rc;
                    }
                    list_add(&nl, p, k);
                }
                p += k;
                p += strspn(p, ", \t");
            }
        }
        if (replace_list || !(o->flags & F_REPEAT)) {
            list_clear(l);
            *l = nl;
        } else {
            for (int i = 0; i < nl.n; i++)
                list_add(l, nl.v[i], strlen(nl.v[i]));
            list_clear(&nl);
        }
        return 0;
    }
    default:
        return seterr(why, n, "internal: unknown option type");
    }
}

static void free_value(cfg_t *c, const opt_t *o)
{
    if (o->type == T_STR) {
        free(*(char **)field(c, o));
        *(char **)field(c, o) = NULL;
    } else if (o->type == T_LIST) {
        list_clear(field(c, o));
    }
}

/* ---- init / fini ---- */

void cfg_init(cfg_t *c)
{
    memset(c, 0, sizeof(*c));
    c->src_line = fd_xcalloc(N_OPTS, sizeof(int));
    for (int i = 0; i < N_OPTS; i++) {
        char why[256];
        if (set_value(c, &opts[i], opts[i].def, true, why, sizeof(why)) != 0) {
            fprintf(stderr, "fusiond: bad built-in default for %s: %s\n", opts[i].name, why);
            abort();
        }
    }
}

void cfg_fini(cfg_t *c)
{
    for (int i = 0; i < N_OPTS; i++)
        free_value(c, &opts[i]);
    list_clear(&c->auth_keys);
    list_clear(&c->ignored_flags);
    free(c->tls_cert_pem);
    free(c->tls_key_pem);
    free(c->config_path);
    free(c->src_line);
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    memset(c, 0, sizeof(*c));
}

/* ---- the file ---- */

/* Parses one line (NUL-free, without its newline).  Returns 0, or FD_ECONFIG with the reason
 * (no location) in why. */
static int parse_line(cfg_t *c, char *line, int lineno, char *why, size_t n)
{
    char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p || *p == '#')
        return 0;
    char *name = p;
    while (isalnum((unsigned char)*p) || *p == '_' || *p == '-')
        p++;
    size_t nlen = (size_t)(p - name);
    if (nlen == 0)
        return seterr(why, n, "expected an option name, found '%c'", *p);
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p != '=') {
        if (!*p || *p == '#')
            return seterr(why, n, "'%.*s' has no value (expected name = value)", (int)nlen,
                          name);
        return seterr(why, n, "expected '=' after '%.*s'", (int)nlen, name);
    }
    p++;
    name[nlen] = 0;
    int idx = opt_index(name, nlen);
    if (idx < 0) {
        const char *s = suggest(name);
        if (s)
            return seterr(why, n, "unknown option '%s' (did you mean '%s'?)", name, s);
        return seterr(why, n, "unknown option '%s'", name);
    }
    const opt_t *o = &opts[idx];
    if (c->src_line[idx] > 0 && !(o->flags & F_REPEAT))
        return seterr(why, n, "duplicate option '%s' (first set on line %d)", o->name,
                      c->src_line[idx]);

    while (*p == ' ' || *p == '\t')
        p++;
    char *val;
    if (*p == '"') {
        /* Quoted: unescape in place. */
        char *r = p + 1, *w = p + 1;
        val = w;
        for (;;) {
            if (!*r)
                return seterr(why, n, "unterminated quoted value");
            if (*r == '"')
                break;
            if (*r == '\\') {
                r++;
                switch (*r) {
                case '"': *w++ = '"'; break;
                case '\\': *w++ = '\\'; break;
                case 'n': *w++ = '\n'; break;
                case 't': *w++ = '\t'; break;
                default:
                    return seterr(why, n, "unknown escape '\\%c' in quoted value",
                                  *r ? *r : ' ');
                }
                r++;
            } else {
                *w++ = *r++;
            }
        }
        *w = 0;
        r++;
        while (*r == ' ' || *r == '\t')
            r++;
        if (*r && *r != '#')
            return seterr(why, n, "unexpected text after the quoted value");
    } else {
        val = p;
        char *end = p;
        for (char *q = p; *q; q++) {
            if (*q == '#' && (q == p || q[-1] == ' ' || q[-1] == '\t'))
                break;
            if (*q == '"')
                return seterr(why, n, "a '\"' inside a bare value (quote the whole value)");
            if (*q != ' ' && *q != '\t')
                end = q + 1;
        }
        *end = 0;
    }
    for (const char *q = val; *q; q++)
        if ((unsigned char)*q < 0x20 && *q != '\t' && *q != '\n')
            return seterr(why, n, "control character in the value");

    char vwhy[384];
    if (set_value(c, o, val, c->src_line[idx] <= 0, vwhy, sizeof(vwhy)) != 0)
        return seterr(why, n, "%s: %s", o->name, vwhy);
    c->src_line[idx] = lineno;
    return 0;
}

int cfg_parse_text(cfg_t *c, const char *name, const char *text, size_t len, char *err,
                   size_t errlen)
{
    int lineno = 0;
    size_t pos = 0;
    while (pos < len) {
        lineno++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
        if (memchr(text + pos, 0, ll))
            return seterr(err, errlen, "%s:%d: NUL byte in the line", name, lineno);
        char *line = fd_xmalloc(ll + 1);
        memcpy(line, text + pos, ll);
        line[ll] = 0;
        if (ll && line[ll - 1] == '\r')
            line[ll - 1] = 0;
        char why[512];
        int rc = parse_line(c, line, lineno, why, sizeof(why));
        free(line);
        if (rc)
            return seterr(err, errlen, "%s:%d: %s", name, lineno, why);
        pos += ll + (nl ? 1 : 0);
    }
    return 0;
}

/* Reads a whole file; NULL and errno on failure. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = fd_xmalloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            if (cap >= ((size_t)16 << 20)) {
                free(buf);
                fclose(f);
                errno = EFBIG;
                return NULL;
            }
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                errno = ENOMEM;
                return NULL;
            }
            buf = nb;
        }
    }
    int bad = ferror(f) ? (errno ? errno : EIO) : 0; /* EISDIR for a directory */
    fclose(f);
    if (bad) {
        free(buf);
        errno = bad;
        return NULL;
    }
    buf[n] = '\0'; /* the loop leaves n < cap: text readers (the PEM checks) may use str* */
    *len = n;
    return buf;
}

static int parse_file(cfg_t *c, char *err, size_t errlen)
{
    size_t len = 0;
    char *text = read_file(c->config_path, &len);
    if (!text) {
        if (errno == ENOENT && !c->config_explicit)
            return 0;
        return seterr(err, errlen, "%s: cannot read: %s", c->config_path, strerror(errno));
    }
    int rc = cfg_parse_text(c, c->config_path, text, len, err, errlen);
    free(text);
    c->config_read = rc == 0;
    return rc;
}

/* ---- flags ---- */

enum { META_NONE = 0, META_CONFIG, META_HELP, META_VERSION, META_DUMP, META_TEST, META_VERBOSE };

static const struct {
    const char *name;
    char shrt;
    int meta;
    const char *arg;
    const char *help;
} meta_flags[] = {
    {"config", 'c', META_CONFIG, "FILE",
     "configuration file (default " FD_SYSCONFDIR "/fusiond.conf, if present)"},
    {"test-config", 0, META_TEST, NULL,
     "check the configuration and the model file, then exit: 0 if valid, else 1 with "
     "file:line: reason"},
    {"dump-config", 0, META_DUMP, NULL,
     "print the effective configuration as a config file and exit"},
    {"verbose", 0, META_VERBOSE, NULL,
     "with --dump-config: document every option, defaults commented out"},
    {"help", 'h', META_HELP, NULL, "show this help and exit"},
    {"version", 'V', META_VERSION, NULL, "show the version and directories and exit"},
};

/* Matches "--name" (with '-' or '_') against a table name (with '_'). */
static bool flag_eq(const char *flag, size_t len, const char *name)
{
    size_t i = 0;
    for (; i < len && name[i]; i++) {
        char a = flag[i] == '-' ? '_' : flag[i];
        char b = name[i] == '-' ? '_' : name[i];
        if (a != b)
            return false;
    }
    return i == len && !name[i];
}

/* llama-server's flags (tools/server/README.md) for settings fusiond has under another
 * name, or that have no meaning here, so its command lines start fusiond unchanged.  Its
 * -c (--ctx-size) and -b (--batch-size) are fusiond's --config and --backend: those two
 * letters keep fusiond's meaning, and walk_flags names the long spelling when a number
 * reaches them. */
enum { LC_ALIAS = 0, LC_IGNORE, LC_REFUSE };
enum { LC_NOARG = 0, LC_ARG, LC_OPTARG };

static const struct compat {
    const char *flag, *flag2; /* spellings, with their dashes (flag2 may be NULL) */
    int kind;
    const char *name;         /* LC_ALIAS: the table option it sets */
    int arg;                  /* LC_IGNORE/LC_REFUSE: whether it takes a value */
    const char *why;          /* LC_IGNORE/LC_REFUSE: the reason, logged or reported */
} compat[] = {
    {"-a", "--alias", LC_ALIAS, "model_alias", 0, NULL},
    {"-np", "--parallel", LC_ALIAS, "max_running", 0, NULL},
    {"--api-key", NULL, LC_ALIAS, "api_keys", 0, NULL},
    {"--ssl-cert-file", NULL, LC_ALIAS, "tls_cert_file", 0, NULL},
    {"--ssl-key-file", NULL, LC_ALIAS, "tls_key_file", 0, NULL},
    {"-ctk", NULL, LC_ALIAS, "cache_type_k", 0, NULL},
    {"-ctxcp", "--swa-checkpoints", LC_ALIAS, "ctx_checkpoints", 0, NULL},
    {"-ctv", NULL, LC_ALIAS, "cache_type_v", 0, NULL},
    {"-md", NULL, LC_ALIAS, "model_draft", 0, NULL},
    {"--draft", "--draft-n", LC_ALIAS, "draft_max", 0, NULL},
    {"--draft-n-min", NULL, LC_ALIAS, "draft_min", 0, NULL},
    {"-cd", NULL, LC_ALIAS, "ctx_size_draft", 0, NULL},
    {"-td", NULL, LC_ALIAS, "threads_draft", 0, NULL},
    {"-tb", "--threads-batch", LC_IGNORE, NULL, LC_ARG,
     "fusiond's --threads serve prompt processing and generation alike"},
    {"--batch-size", NULL, LC_IGNORE, NULL, LC_ARG,
     "fusiond batches every running sequence each step (--max-running, --prefill-chunk)"},
    {"-ub", "--ubatch-size", LC_IGNORE, NULL, LC_ARG,
     "fusiond batches every running sequence each step; --prefill-chunk caps one "
     "sequence's prompt tokens per step"},
    {"-ngl", "--n-gpu-layers", LC_IGNORE, NULL, LC_ARG,
     "--backend runs every layer (cpu, corsair or cuda); there is no partial offload"},
    {"--gpu-layers", NULL, LC_IGNORE, NULL, LC_ARG,
     "--backend runs every layer (cpu, corsair or cuda); there is no partial offload"},
    {"-fa", "--flash-attn", LC_IGNORE, NULL, LC_OPTARG,
     "attention is always fusiond's own fused kernel (see --fusion)"},
    {"--mlock", NULL, LC_IGNORE, NULL, LC_NOARG,
     "the model file is mapped read-only and not locked in RAM"},
    {"--no-mmap", NULL, LC_IGNORE, NULL, LC_NOARG, "the model file is always mapped read-only"},
    {"-cb", "--cont-batching", LC_IGNORE, NULL, LC_NOARG,
     "continuous batching is always on"},
    {"--metrics", NULL, LC_IGNORE, NULL, LC_NOARG, "GET /metrics is always served"},
    {"--no-webui", NULL, LC_IGNORE, NULL, LC_NOARG, "fusiond has no web UI"},
    {"-nocb", "--no-cont-batching", LC_REFUSE, NULL, LC_NOARG,
     "fusiond always batches continuously; --max-running=1 runs one request at a time"},
};

/* The compat entry argument a names ("--flag" or "--flag=value" for long spellings, the
 * exact word for single-dash ones), with *spelling its matched spelling and *val the text
 * after '=' (else NULL); NULL when none. */
static const struct compat *compat_find(const char *a, const char **spelling,
                                        const char **val)
{
    const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
    size_t len = eq ? (size_t)(eq - a) : strlen(a);
    for (size_t i = 0; i < FD_ARRAY_LEN(compat); i++) {
        const char *sp[2] = {compat[i].flag, compat[i].flag2};
        for (int k = 0; k < 2; k++)
            if (sp[k] && strlen(sp[k]) == len && !strncmp(a, sp[k], len)) {
                *spelling = sp[k];
                *val = eq ? eq + 1 : NULL;
                return &compat[i];
            }
    }
    return NULL;
}

static bool all_digits(const char *v)
{
    if (!*v)
        return false;
    for (; *v; v++)
        if (*v < '0' || *v > '9')
            return false;
    return true;
}

/* One pass over the flags.  apply=false: meta flags only (config path, action); apply=true:
 * the table's options.  Both passes check the syntax so errors surface early. */
static int walk_flags(cfg_t *c, int argc, char *const *argv, bool apply, char *err,
                      size_t errlen)
{
    if (apply)
        list_clear(&c->ignored_flags);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        int idx = -1, meta = META_NONE;
        bool negated = false;
        char shown[96];

        if (strcmp(a, "--") == 0) {
            if (i + 1 < argc)
                return seterr(err, errlen, "unexpected argument '%s'", argv[i + 1]);
            break;
        }
        const struct compat *lc = NULL;
        const char *spelling = NULL;
        if (a[0] == '-' && (lc = compat_find(a, &spelling, &val)) != NULL) {
            snprintf(shown, sizeof(shown), "%s", spelling);
            if (lc->kind == LC_ALIAS) {
                for (int k = 0; k < N_OPTS; k++)
                    if (!strcmp(opts[k].name, lc->name))
                        idx = k;
            } else {
                if (lc->arg == LC_NOARG && val)
                    return seterr(err, errlen, "%s takes no value", shown);
                if (lc->arg == LC_ARG && !val) {
                    if (i + 1 >= argc)
                        return seterr(err, errlen, "%s needs a value", shown);
                    val = argv[++i];
                }
                /* llama-server's -fa takes on|off|auto now and took none before */
                if (lc->arg == LC_OPTARG && !val && i + 1 < argc &&
                    (!strcmp(argv[i + 1], "on") || !strcmp(argv[i + 1], "off") ||
                     !strcmp(argv[i + 1], "auto")))
                    val = argv[++i];
                if (lc->kind == LC_REFUSE)
                    return seterr(err, errlen, "%s: %s", shown, lc->why);
                if (apply) {
                    char note[384];
                    int nl = snprintf(note, sizeof(note), "%s%s%.60s: ignored: %s", shown,
                                      val ? " " : "", val ? val : "", lc->why);
                    list_add(&c->ignored_flags, note, (size_t)FD_MIN(nl, (int)sizeof(note) - 1));
                }
                continue;
            }
        } else if (a[0] == '-' && a[1] == '-') {
            const char *nm = a + 2;
            const char *eq = strchr(nm, '=');
            size_t nlen = eq ? (size_t)(eq - nm) : strlen(nm);
            if (eq)
                val = eq + 1;
            snprintf(shown, sizeof(shown), "--%.*s", (int)FD_MIN(nlen, 80), nm);
            for (size_t m = 0; m < FD_ARRAY_LEN(meta_flags); m++)
                if (flag_eq(nm, nlen, meta_flags[m].name))
                    meta = meta_flags[m].meta;
            for (int k = 0; meta == META_NONE && k < N_OPTS; k++)
                if (flag_eq(nm, nlen, opts[k].name))
                    idx = k;
            if (meta == META_NONE && idx < 0 && nlen > 3 && strncmp(nm, "no-", 3) == 0) {
                for (int k = 0; k < N_OPTS; k++)
                    if (opts[k].type == T_BOOL && flag_eq(nm + 3, nlen - 3, opts[k].name)) {
                        idx = k;
                        negated = true;
                    }
                if (negated && val)
                    return seterr(err, errlen, "%s takes no value", shown);
            }
            if (meta == META_NONE && idx < 0) {
                char nb[64];
                snprintf(nb, sizeof(nb), "%.*s", (int)FD_MIN(nlen, 63), nm);
                for (char *q = nb; *q; q++)
                    if (*q == '-')
                        *q = '_';
                const char *s = suggest(nb);
                if (s) {
                    char sf[64];
                    snprintf(sf, sizeof(sf), "%s", s);
                    for (char *q = sf; *q; q++)
                        if (*q == '_')
                            *q = '-';
                    return seterr(err, errlen, "unknown option %s (did you mean --%s?)",
                                  shown, sf);
                }
                return seterr(err, errlen, "unknown option %s (see --help)", shown);
            }
        } else if (a[0] == '-' && a[1] && a[1] != '-') {
            snprintf(shown, sizeof(shown), "-%c", a[1]);
            for (size_t m = 0; m < FD_ARRAY_LEN(meta_flags); m++)
                if (meta_flags[m].shrt == a[1])
                    meta = meta_flags[m].meta;
            for (int k = 0; meta == META_NONE && k < N_OPTS; k++)
                if (opts[k].shrt && opts[k].shrt == a[1])
                    idx = k;
            if (meta == META_NONE && idx < 0)
                return seterr(err, errlen, "unknown option %s (see --help)", shown);
            if (a[2])
                val = a + 2;
        } else {
            return seterr(err, errlen, "unexpected argument '%s' (options are --name=value)",
                          a);
        }

        bool takes_arg = meta == META_CONFIG || (idx >= 0 && opts[idx].type != T_BOOL);
        if (meta != META_NONE && meta != META_CONFIG && val)
            return seterr(err, errlen, "%s takes no value", shown);
        char joined[4100];
        if (takes_arg && !val) {
            if (i + 1 >= argc)
                return seterr(err, errlen, "%s needs a value", shown);
            val = argv[++i];
            /* llama-server's --lora-scaled FILE SCALE: two arguments */
            if (idx >= 0 && opts[idx].off == O(lora_scaled)) {
                if (i + 1 >= argc)
                    return seterr(err, errlen, "%s needs FILE SCALE", shown);
                snprintf(joined, sizeof joined, "%s %s", val, argv[++i]);
                val = joined;
            }
        }
        if (idx >= 0 && opts[idx].type == T_BOOL && !val)
            val = negated ? "off" : "on";

        /* llama-server's -c N and -b N: say where those settings are */
        if (val && a[0] == '-' && a[1] == 'c' && meta == META_CONFIG && all_digits(val) &&
            access(val, F_OK) != 0)
            return seterr(err, errlen, "-c %.20s: -c is fusiond's --config FILE; "
                          "llama-server's context size is --ctx-size %.20s", val, val);
        if (val && a[0] == '-' && a[1] == 'b' && idx >= 0 && opts[idx].shrt == 'b' &&
            all_digits(val))
            return seterr(err, errlen, "-b %.20s: -b is fusiond's --backend; llama-server's "
                          "batch size is --batch-size (accepted and ignored)", val);

        if (!apply) {
            switch (meta) {
            case META_CONFIG:
                free(c->config_path);
                c->config_path = fd_xstrdup(val);
                c->config_explicit = true;
                break;
            case META_HELP: c->action = CFG_HELP; return 0;
            case META_VERSION: c->action = CFG_VERSION; return 0;
            case META_DUMP: if (c->action == CFG_RUN) c->action = CFG_DUMP; break;
            case META_TEST: if (c->action == CFG_RUN) c->action = CFG_TEST; break;
            case META_VERBOSE: c->verbose = true; break;
            default: break;
            }
            continue;
        }
        if (idx < 0)
            continue;
        char why[384];
        bool replace = c->src_line[idx] != -1;
        if (set_value(c, &opts[idx], val, replace, why, sizeof(why)) != 0)
            return seterr(err, errlen, "%s: %s", shown, why);
        c->src_line[idx] = -1;
    }
    return 0;
}

/* ---- checks after everything is read ---- */

/* Names where option idx was set, for messages: "file:line: name", "--flag" or "name". */
static void where(const cfg_t *c, int idx, char *buf, size_t n)
{
    int l = c->src_line[idx];
    if (l > 0) {
        snprintf(buf, n, "%s:%d: %s", c->config_path, l, opts[idx].name);
    } else if (l < 0) {
        snprintf(buf, n, "--%s", opts[idx].name);
        for (char *q = buf + 2; *q; q++)
            if (*q == '_')
                *q = '-';
    } else {
        snprintf(buf, n, "%s", opts[idx].name);
    }
}

static int idx_of(const char *name)
{
    return opt_index(name, strlen(name));
}

/* auth_keys = api_keys + the keys in api_key_file. */
static int load_keys(cfg_t *c, char *err, size_t errlen)
{
    list_clear(&c->auth_keys);
    for (int i = 0; i < c->api_keys.n; i++)
        if (!list_has(&c->auth_keys, c->api_keys.v[i]))
            list_add(&c->auth_keys, c->api_keys.v[i], strlen(c->api_keys.v[i]));
    if (!*c->api_key_file)
        return 0;
    char loc[600];
    where(c, idx_of("api_key_file"), loc, sizeof(loc));
    size_t len = 0;
    char *text = read_file(c->api_key_file, &len);
    if (!text)
        return seterr(err, errlen, "%s: cannot read %s: %s", loc, c->api_key_file,
                      strerror(errno));
    struct stat st;
    if (stat(c->api_key_file, &st) == 0 && (st.st_mode & S_IROTH))
        fd_log_warn("%s is readable by every user: chmod o-r it", c->api_key_file);
    int lineno = 0, rc = 0;
    size_t pos = 0;
    while (pos < len && rc == 0) {
        lineno++;
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (text + pos)) : len - pos;
        char key[600];
        const char *s = text + pos;
        while (ll && (*s == ' ' || *s == '\t'))
            s++, ll--;
        while (ll && (s[ll - 1] == ' ' || s[ll - 1] == '\t' || s[ll - 1] == '\r'))
            ll--;
        pos = nl ? (size_t)(nl - text) + 1 : len;
        if (ll == 0 || *s == '#')
            continue;
        char why[256];
        snprintf(key, sizeof(key), "%.*s", (int)FD_MIN(ll, sizeof(key) - 1), s);
        if (ll >= sizeof(key) || memchr(s, 0, ll) || check_api_key(key, why, sizeof(why))) {
            rc = seterr(err, errlen, "%s:%d: %s", c->api_key_file, lineno,
                        ll >= sizeof(key) ? "an API key has 1 to 512 characters" : why);
            break;
        }
        if (!list_has(&c->auth_keys, key))
            list_add(&c->auth_keys, key, strlen(key));
    }
    free(text);
    return rc;
}

/* Whether a PEM text has a block whose label ends in `label` (a key's label may be
 * "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"). */
static bool pem_has(const char *text, const char *label)
{
    static const char begin[] = "-----BEGIN ";
    size_t ll = strlen(label);
    for (const char *p = strstr(text, begin); p; p = strstr(p + 1, begin)) {
        const char *l = p + strlen(begin), *end = strstr(l, "-----");
        if (end && !memchr(l, '\n', (size_t)(end - l)) && (size_t)(end - l) >= ll &&
            memcmp(end - ll, label, ll) == 0)
            return true;
    }
    return false;
}

/* One of the TLS files, read whole: a PEM text with a `label` block.  The key must not be
 * encrypted (PKCS#8's ENCRYPTED PRIVATE KEY, or OpenSSL's "Proc-Type: 4,ENCRYPTED"
 * header): there is no one to type a passphrase.  It is secret: a warning when others may
 * read it. */
static int load_pem(cfg_t *c, const char *opt, const char *path, const char *label,
                    char **out, char *err, size_t errlen)
{
    char loc[600];
    where(c, idx_of(opt), loc, sizeof(loc));
    size_t len = 0;
    char *text = read_file(path, &len);
    if (!text)
        return seterr(err, errlen, "%s: cannot read %s: %s", loc, path, strerror(errno));
    bool key = strcmp(label, "PRIVATE KEY") == 0;
    int rc = 0;
    if (memchr(text, 0, len) || !pem_has(text, label))
        rc = seterr(err, errlen, "%s: %s is not a PEM file with a %s (no '-----BEGIN %s-----' "
                    "line)", loc, path, key ? "private key" : "certificate", label);
    else if (key && (pem_has(text, "ENCRYPTED PRIVATE KEY") || strstr(text, ",ENCRYPTED")))
        rc = seterr(err, errlen, "%s: %s holds an encrypted private key; fusiond needs it "
                    "unencrypted (openssl pkey -in %s -out NEWFILE), readable by root alone",
                    loc, path, path);
    if (rc) {
        free(text);
        return rc;
    }
    struct stat st;
    if (key && stat(path, &st) == 0 && (st.st_mode & S_IROTH))
        fd_log_warn("%s is readable by every user: chmod o-r it", path);
    free(*out);
    *out = text;
    return 0;
}

/* Reads the TLS pair into *cert and *key (malloc'd) and checks what libmicrohttpd will do
 * with them, so that the error names the file: read each (GnuTLS 3.7 leaks what it had
 * parsed when the pair call below meets a bad certificate, so each is read on its own
 * first), then check that the key is the certificate's. */
static int read_tls(cfg_t *c, char **cert_pem, char **key_pem, char *err, size_t errlen)
{
    *cert_pem = *key_pem = NULL;
    int rc = load_pem(c, "tls_cert_file", c->tls_cert_file, "CERTIFICATE", cert_pem, err,
                      errlen);
    if (rc || (rc = load_pem(c, "tls_key_file", c->tls_key_file, "PRIVATE KEY", key_pem, err,
                             errlen)))
        goto fail;
    char loc[600];
    gnutls_datum_t cert = {(unsigned char *)*cert_pem, (unsigned int)strlen(*cert_pem)};
    gnutls_datum_t key = {(unsigned char *)*key_pem, (unsigned int)strlen(*key_pem)};
    gnutls_x509_crt_t *crts = NULL;
    unsigned n_crts = 0;
    int g = gnutls_x509_crt_list_import2(&crts, &n_crts, &cert, GNUTLS_X509_FMT_PEM, 0);
    for (unsigned i = 0; g >= 0 && i < n_crts; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    if (g < 0) {
        where(c, idx_of("tls_cert_file"), loc, sizeof(loc));
        rc = seterr(err, errlen, "%s: %s: cannot read the certificate: %s", loc,
                    c->tls_cert_file, gnutls_strerror(g));
        goto fail;
    }
    gnutls_x509_privkey_t pk;
    if (gnutls_x509_privkey_init(&pk) < 0) {
        rc = seterr(err, errlen, "out of memory checking the TLS key");
        goto fail;
    }
    g = gnutls_x509_privkey_import2(pk, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_x509_privkey_deinit(pk);
    where(c, idx_of("tls_key_file"), loc, sizeof(loc));
    if (g < 0) {
        rc = seterr(err, errlen, "%s: %s: cannot read the private key: %s", loc,
                    c->tls_key_file, gnutls_strerror(g));
        goto fail;
    }
    gnutls_certificate_credentials_t cred;
    if (gnutls_certificate_allocate_credentials(&cred) < 0) {
        rc = seterr(err, errlen, "out of memory checking the TLS certificate");
        goto fail;
    }
    g = gnutls_certificate_set_x509_key_mem2(cred, &cert, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
    gnutls_certificate_free_credentials(cred);
    if (g < 0) {
        rc = seterr(err, errlen, "%s: %s and %s cannot serve HTTPS together: %s", loc,
                    c->tls_cert_file, c->tls_key_file, gnutls_strerror(g));
        goto fail;
    }
    return 0;
fail:
    free(*cert_pem);
    free(*key_pem);
    *cert_pem = *key_pem = NULL;
    return rc;
}

static int check_tls(cfg_t *c, char *err, size_t errlen)
{
    if (!*c->tls_cert_file && !*c->tls_key_file)
        return 0;
    if (!*c->tls_cert_file || !*c->tls_key_file) {
        char loc[600];
        where(c, idx_of(*c->tls_cert_file ? "tls_cert_file" : "tls_key_file"), loc,
              sizeof(loc));
        return seterr(err, errlen, "%s: HTTPS needs both tls_cert_file and tls_key_file; "
                      "%s is not set", loc, *c->tls_cert_file ? "tls_key_file"
                                                               : "tls_cert_file");
    }
    char *cert, *key;
    int rc = read_tls(c, &cert, &key, err, errlen);
    if (rc)
        return rc;
    free(c->tls_cert_pem);
    free(c->tls_key_pem);
    c->tls_cert_pem = cert;
    c->tls_key_pem = key;
    return 0;
}

int cfg_tls_reread(cfg_t *c, bool *changed, char *err, size_t errlen)
{
    *changed = false;
    if (!c->tls_cert_pem)
        return 0;
    char *cert, *key;
    if (read_tls(c, &cert, &key, err, errlen))
        return -1;
    if (strcmp(cert, c->tls_cert_pem) == 0 && strcmp(key, c->tls_key_pem) == 0) {
        free(cert);
        free(key);
        return 0;
    }
    free(c->tls_cert_pem);
    free(c->tls_key_pem);
    c->tls_cert_pem = cert;
    c->tls_key_pem = key;
    *changed = true;
    return 0;
}

static int check_all(cfg_t *c, bool startup, char *err, size_t errlen)
{
    char loc[600];
    int rc = load_keys(c, err, errlen);
    if (rc)
        return rc;
    if (*c->model_draft && c->spec_type == CFG_SPEC_NONE && c->src_line[idx_of("spec_type")] == 0)
        c->spec_type = CFG_SPEC_DRAFT;  /* a draft model alone asks for it */
    if (!startup || (c->action != CFG_RUN && c->action != CFG_TEST))
        return 0;
    const char *model = cfg_model_path(c);
    int mi = idx_of("model");
    where(c, mi, loc, sizeof(loc));
    if (!model) {
        if (*c->model)
            return seterr(err, errlen, "%s: cannot read %s: %s", loc, c->model,
                          strerror(errno));
        return seterr(err, errlen,
                      "no model configured and no demo model in %s: set model in %s or pass "
                      "--model PATH",
                      FD_DATADIR, c->config_path);
    }
    if (c->draft_min > c->draft_max) {
        where(c, idx_of("draft_min"), loc, sizeof(loc));
        return seterr(err, errlen, "%s: %d is more than draft_max (%d)", loc, c->draft_min,
                      c->draft_max);
    }
    int si = idx_of("spec_type");
    if (c->spec_type == CFG_SPEC_DRAFT && !*c->model_draft) {
        where(c, si, loc, sizeof(loc));
        return seterr(err, errlen, "%s: draft needs a draft model: set model_draft (--model-draft "
                      "PATH, -md PATH)", loc);
    }
    if (c->spec_type == CFG_SPEC_NGRAM && *c->model_draft) {
        where(c, idx_of("model_draft"), loc, sizeof(loc));
        return seterr(err, errlen, "%s: a draft model with spec_type ngram: drafts come from "
                      "one or the other (spec_type draft, or no model_draft)", loc);
    }
    if (c->spec_type == CFG_SPEC_DRAFT) {
        struct stat ds;
        where(c, idx_of("model_draft"), loc, sizeof(loc));
        if (access(c->model_draft, R_OK) != 0)
            return seterr(err, errlen, "%s: cannot read %s: %s", loc, c->model_draft,
                          strerror(errno));
        if (stat(c->model_draft, &ds) != 0 || !S_ISREG(ds.st_mode))
            return seterr(err, errlen, "%s: %s is not a regular file", loc, c->model_draft);
    }
    if (c->prompt_lookup_min > c->prompt_lookup_max) {
        where(c, idx_of("prompt_lookup_min"), loc, sizeof(loc));
        return seterr(err, errlen, "%s: %d is more than prompt_lookup_max (%d)", loc,
                      c->prompt_lookup_min, c->prompt_lookup_max);
    }
    struct stat st;
    if (stat(model, &st) != 0 || !S_ISREG(st.st_mode))
        return seterr(err, errlen, "%s: %s is not a regular file", loc, model);
    if (*c->user && !getpwnam(c->user)) {
        where(c, idx_of("user"), loc, sizeof(loc));
        return seterr(err, errlen, "%s: no such user '%s'", loc, c->user);
    }
    return check_tls(c, err, errlen);
}

const char *cfg_model_path(const cfg_t *c)
{
    if (*c->model)
        return access(c->model, R_OK) == 0 ? c->model : NULL;
    return cfg_demo_model_path();
}

const char *cfg_demo_model_path(void)
{
    static const char installed[] = FD_DATADIR "/" FD_DEMO_MODEL;
    if (access(installed, R_OK) == 0)
        return installed;
#ifdef FD_SRC_DEMO_MODEL
    /* Not installed yet: the build runs from its tree (./bootstrap && ./fusiond). */
    if (access(FD_SRC_DEMO_MODEL, R_OK) == 0)
        return FD_SRC_DEMO_MODEL;
#endif
    errno = ENOENT;
    return NULL;
}

/* Defaults, file, flags, checks: shared by cfg_load and cfg_reload. */
static int load_all(cfg_t *c, bool startup, char *err, size_t errlen)
{
    int rc = parse_file(c, err, errlen);
    if (rc == 0)
        rc = walk_flags(c, c->argc, c->argv, true, err, errlen);
    if (rc == 0)
        rc = check_all(c, startup, err, errlen);
    return rc;
}

int cfg_load(cfg_t *c, int argc, char *const *argv, char *err, size_t errlen)
{
    c->argc = argc > 1 ? argc - 1 : 0;
    c->argv = fd_xcalloc((size_t)c->argc + 1, sizeof(char *));
    for (int i = 0; i < c->argc; i++)
        c->argv[i] = fd_xstrdup(argv[i + 1]);
    c->action = CFG_RUN;
    int rc = walk_flags(c, c->argc, c->argv, false, err, errlen);
    if (rc || c->action == CFG_HELP || c->action == CFG_VERSION)
        return rc;
    if (!c->config_path)
        c->config_path = fd_xstrdup(FD_SYSCONFDIR "/fusiond.conf");
    return load_all(c, true, err, errlen);
}

/* ---- reload ---- */

/* Formats option o's value in file syntax (quoted when needed).  Repeatable lists are
 * joined with newlines and are only compared, never printed, through this. */
static void format_value(const cfg_t *c, const opt_t *o, char *buf, size_t n);

int cfg_reload(cfg_t *c, int *changed, char *err, size_t errlen)
{
    cfg_t nc;
    cfg_init(&nc);
    nc.config_path = fd_xstrdup(c->config_path);
    nc.config_explicit = c->config_explicit;
    nc.argc = c->argc;
    nc.argv = fd_xcalloc((size_t)c->argc + 1, sizeof(char *));
    for (int i = 0; i < c->argc; i++)
        nc.argv[i] = fd_xstrdup(c->argv[i]);
    nc.action = c->action;
    int rc = load_all(&nc, false, err, errlen);
    if (rc) {
        cfg_fini(&nc);
        return rc;
    }
    int n = 0;
    char *a = fd_xmalloc(8192), *b = fd_xmalloc(8192);
    for (int i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        format_value(c, o, a, 8192);
        format_value(&nc, o, b, 8192);
        c->src_line[i] = nc.src_line[i];
        if (strcmp(a, b) == 0)
            continue;
        if (!(o->flags & F_RELOAD)) {
            fd_log_warn("reload: %s changed (%s -> %s) but needs a restart; keeping %s",
                        o->name, a, b, a);
            continue;
        }
        if (o->flags & F_SECRET)
            fd_log_info("reload: %s changed", o->name);
        else
            fd_log_info("reload: %s: %s -> %s", o->name, a, b);
        /* Swap the storage: the old value is freed with nc. */
        char tmp[sizeof(cfg_list_t) > sizeof(double) ? sizeof(cfg_list_t) : sizeof(double)];
        size_t sz = type_size(o->type);
        memcpy(tmp, field(c, o), sz);
        memcpy(field(c, o), field(&nc, o), sz);
        memcpy(field(&nc, o), tmp, sz);
        n++;
    }
    /* The key file's contents may change without its name changing. */
    bool keys_same = c->auth_keys.n == nc.auth_keys.n;
    for (int i = 0; keys_same && i < c->auth_keys.n; i++)
        keys_same = strcmp(c->auth_keys.v[i], nc.auth_keys.v[i]) == 0;
    if (!keys_same) {
        cfg_list_t t = c->auth_keys;
        c->auth_keys = nc.auth_keys;
        nc.auth_keys = t;
        fd_log_info("reload: %d API key(s) now accepted", c->auth_keys.n);
        n++;
    }
    free(a);
    free(b);
    cfg_fini(&nc);
    if (changed)
        *changed = n;
    return 0;
}

/* ---- names ---- */

const char *cfg_backend_name(int backend)
{
    return backend >= 0 && backend < (int)FD_ARRAY_LEN(backend_names) - 1
               ? backend_names[backend] : "?";
}

const char *cfg_cache_type_name(int cache_type)
{
    return cache_type >= 0 && cache_type < (int)FD_ARRAY_LEN(cache_type_names) - 1
               ? cache_type_names[cache_type] : "?";
}

void cfg_rope(const cfg_t *c, llm_rope_params_t *r)
{
    memset(r, 0, sizeof(*r));
    r->scaling = c->rope_scaling;
    r->yarn_orig_ctx = c->yarn_orig_ctx;
    const char *const v[] = {c->rope_scale, c->rope_freq_base, c->rope_freq_scale,
                             c->yarn_ext_factor, c->yarn_attn_factor, c->yarn_beta_slow,
                             c->yarn_beta_fast};
    static const char *const flag[] = {"rope-scale", "rope-freq-base", "rope-freq-scale",
                                       "yarn-ext-factor", "yarn-attn-factor", "yarn-beta-slow",
                                       "yarn-beta-fast"};
    char err[160];
    /* the values passed their checks when the configuration was read */
    for (size_t i = 0; i < FD_ARRAY_LEN(flag); i++)
        if (v[i] && *v[i])
            llm_rope_option(r, flag[i], v[i], err, sizeof(err));
}

const char *cfg_softmax_name(int softmax)
{
    return softmax >= 0 && softmax < (int)FD_ARRAY_LEN(softmax_names) - 1
               ? softmax_names[softmax] : "?";
}

int cfg_fd_log_level(const cfg_t *c)
{
    static const int map[] = {FD_LOG_ERROR, FD_LOG_WARN, FD_LOG_INFO, FD_LOG_DEBUG};
    return map[c->log_level];
}

int cfg_fd_log_format(const cfg_t *c)
{
    static const int map[] = {FD_LOG_AUTO, FD_LOG_JOURNAL, FD_LOG_PLAIN};
    return map[c->log_format];
}

/* ---- output: --help and --dump-config ---- */

static bool needs_quotes(const char *s)
{
    if (!*s || *s == ' ' || *s == '\t' || s[strlen(s) - 1] == ' ' || s[strlen(s) - 1] == '\t')
        return true;
    for (const char *p = s; *p; p++)
        if (*p == '"' || *p == '#' || *p == '\\' || (unsigned char)*p < 0x20)
            return true;
    return false;
}

static void quote(const char *s, char *buf, size_t n)
{
    if (!needs_quotes(s)) {
        snprintf(buf, n, "%s", s);
        return;
    }
    size_t pos = 0;
    if (n < 4) {
        buf[0] = 0;
        return;
    }
    buf[pos++] = '"';
    for (const char *p = s; *p && pos + 4 < n; p++) {
        switch (*p) {
        case '"': buf[pos++] = '\\'; buf[pos++] = '"'; break;
        case '\\': buf[pos++] = '\\'; buf[pos++] = '\\'; break;
        case '\n': buf[pos++] = '\\'; buf[pos++] = 'n'; break;
        case '\t': buf[pos++] = '\\'; buf[pos++] = 't'; break;
        default: buf[pos++] = *p; break;
        }
    }
    buf[pos++] = '"';
    buf[pos] = 0;
}

static void format_size(int64_t v, char *buf, size_t n)
{
    static const char suf[] = "GMK";
    for (int i = 0; i < 3; i++) {
        int shift = 30 - 10 * i;
        if (v && v % ((int64_t)1 << shift) == 0) {
            snprintf(buf, n, "%lld%c", (long long)(v >> shift), suf[i]);
            return;
        }
    }
    snprintf(buf, n, "%lld", (long long)v);
}

static void format_value(const cfg_t *c, const opt_t *o, char *buf, size_t n)
{
    const void *f = cfield(c, o);
    switch (o->type) {
    case T_STR: quote(*(char *const *)f, buf, n); break;
    case T_INT: snprintf(buf, n, "%d", *(const int *)f); break;
    case T_I64: snprintf(buf, n, "%lld", (long long)*(const int64_t *)f); break;
    case T_SIZE: format_size(*(const int64_t *)f, buf, n); break;
    case T_SECS: snprintf(buf, n, "%.15g", *(const double *)f); break;
    case T_BOOL: snprintf(buf, n, "%s", *(const bool *)f ? "on" : "off"); break;
    case T_ENUM: snprintf(buf, n, "%s", o->choices[*(const int *)f]); break;
    case T_LIST: {
        const cfg_list_t *l = f;
        size_t pos = 0;
        char *joined = fd_xmalloc(n);
        joined[0] = 0;
        for (int i = 0; i < l->n && pos < n; i++)
            pos += (size_t)snprintf(joined + pos, n - pos, "%s%s",
                                    i ? ((o->flags & F_REPEAT) ? "\n" : ",") : "", l->v[i]);
        if (o->flags & F_REPEAT)
            snprintf(buf, n, "%s", joined);
        else
            quote(joined, buf, n);
        free(joined);
        break;
    }
    default: buf[0] = 0; break;
    }
}

int cfg_get(const cfg_t *c, const char *name, char *buf, size_t buflen)
{
    int i = idx_of(name);
    if (i < 0)
        return -ENOENT;
    format_value(c, &opts[i], buf, buflen);
    return 0;
}

/* Writes text wrapped at width, each line starting with prefix. */
static void wrap(FILE *f, const char *prefix, int first_col, const char *text, int width)
{
    int col = first_col;
    const char *p = text;
    bool line_start = true;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t w = strcspn(p, " ");
        if (!w)
            break;
        if (!line_start && col + 1 + (int)w > width) {
            fprintf(f, "\n%s", prefix);
            col = (int)strlen(prefix);
            line_start = true;
        }
        if (!line_start) {
            fputc(' ', f);
            col++;
        }
        fprintf(f, "%.*s", (int)w, p);
        col += (int)w;
        line_start = false;
        p += w;
    }
    fputc('\n', f);
}

/* The text after an option's help: its values, default and reload behaviour. */
static void option_notes(const opt_t *o, char *buf, size_t n, bool for_file)
{
    char tmp[160];
    size_t pos = 0;
    buf[0] = 0;
    if (o->type == T_ENUM) {
        choices_text(o, tmp, sizeof(tmp), ", ");
        pos += (size_t)snprintf(buf + pos, n - pos, " One of: %s.", tmp);
    } else if (o->type == T_INT || o->type == T_I64 || o->type == T_SIZE ||
               o->type == T_SECS) {
        range_text(o, tmp, sizeof(tmp));
        pos += (size_t)snprintf(buf + pos, n - pos, " Range %s.", tmp);
    } else if (o->type == T_BOOL) {
        pos += (size_t)snprintf(buf + pos, n - pos, " on or off.");
    }
    if (!for_file && *o->def)
        pos += (size_t)snprintf(buf + pos, n - pos, " Default: %s.", o->def);
    if (o->flags & F_RELOAD)
        pos += (size_t)snprintf(buf + pos, n - pos, " Applied on reload (SIGHUP).");
    else if (for_file)
        pos += (size_t)snprintf(buf + pos, n - pos, " Restart to apply.");
    if (for_file) {
        char fl[64];
        snprintf(fl, sizeof(fl), "%s", o->name);
        for (char *q = fl; *q; q++)
            if (*q == '_')
                *q = '-';
        if (o->shrt)
            snprintf(buf + pos, n - pos, " Flag: -%c, --%s.", o->shrt, fl);
        else
            snprintf(buf + pos, n - pos, " Flag: --%s.", fl);
    }
}

void cfg_print_help(FILE *f, const char *prog)
{
    fprintf(f,
            "Usage: %s [OPTION]...\n"
            "Serve a GGUF model over an OpenAI-compatible HTTP API.\n\n",
            prog);
    char left[256], notes[512], text[1024];
    for (size_t m = 0; m < FD_ARRAY_LEN(meta_flags); m++) {
        if (meta_flags[m].shrt)
            snprintf(left, sizeof(left), "  -%c, --%s%s%s", meta_flags[m].shrt,
                     meta_flags[m].name, meta_flags[m].arg ? "=" : "",
                     meta_flags[m].arg ? meta_flags[m].arg : "");
        else
            snprintf(left, sizeof(left), "      --%s%s%s", meta_flags[m].name,
                     meta_flags[m].arg ? "=" : "", meta_flags[m].arg ? meta_flags[m].arg : "");
        fprintf(f, "%-30s", left);
        if (strlen(left) >= 30)
            fprintf(f, "\n%30s", "");
        wrap(f, "                              ", 30, meta_flags[m].help, 79);
    }
    fprintf(f, "\nEvery option below may also be set in the configuration file as\n"
               "name = value (with '_' for '-'); flags win over the file.\n");
    const char *group = NULL;
    for (int i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        if (!group || strcmp(group, o->group) != 0) {
            group = o->group;
            fprintf(f, "\n%s:\n", group);
        }
        char fl[64], meta[96];
        snprintf(fl, sizeof(fl), "%s", o->name);
        for (char *q = fl; *q; q++)
            if (*q == '_')
                *q = '-';
        if (o->type == T_ENUM)
            choices_text(o, meta, sizeof(meta), "|");
        else
            snprintf(meta, sizeof(meta), "%s", o->meta ? o->meta : "");
        if (o->type == T_BOOL)
            snprintf(left, sizeof(left), "      --[no-]%s", fl);
        else if (o->shrt)
            snprintf(left, sizeof(left), "  -%c, --%s=%s", o->shrt, fl, meta);
        else
            snprintf(left, sizeof(left), "      --%s=%s", fl, meta);
        option_notes(o, notes, sizeof(notes), false);
        snprintf(text, sizeof(text), "%s%s", o->help, notes);
        fprintf(f, "%-30s", left);
        if (strlen(left) >= 30)
            fprintf(f, "\n%30s", "");
        wrap(f, "                              ", 30, text, 79);
    }
    fprintf(f, "\nllama-server compatibility (its flags for the same settings):\n");
    char list[1024];
    size_t pos = 0;
    list[0] = 0;
    for (size_t i = 0; i < FD_ARRAY_LEN(compat); i++) {
        const struct compat *lc = &compat[i];
        if (lc->kind == LC_ALIAS) {
            snprintf(left, sizeof(left), "  %s%s%s", lc->flag, lc->flag2 ? ", " : "",
                     lc->flag2 ? lc->flag2 : "");
            snprintf(text, sizeof(text), "= --%s", lc->name);
            for (char *q = text; *q; q++)
                if (*q == '_')
                    *q = '-';
            fprintf(f, "%-30s%s\n", left, text);
        } else if (lc->kind == LC_IGNORE && pos < sizeof(list)) {
            pos += (size_t)snprintf(list + pos, sizeof(list) - pos, "%s%s%s%s", pos ? ", " : "",
                                    lc->flag, lc->flag2 ? ", " : "",
                                    lc->flag2 ? lc->flag2 : "");
        }
    }
    snprintf(text, sizeof(text), "Accepted and ignored, with a startup log line saying why: "
             "%s.  Refused: -nocb, --no-cont-batching.  -c and -b stay fusiond's --config and "
             "--backend: use --ctx-size and --batch-size.  --ctx-size, --threads, --host, "
             "--port, --model, --lora, --cache-type-k and the other same-named flags are "
             "fusiond's own.", list);
    fputs("  ", f);
    wrap(f, "  ", 2, text, 79);
    fprintf(f, "\nSignals: SIGHUP reloads the file (the options marked so); SIGTERM or\n"
               "SIGINT drain (running requests finish, up to drain_timeout); a second\n"
               "SIGINT exits at once.\n");
}

static const char file_header[] =
    "# fusiond.conf: the configuration of fusiond, the fusiond inference server.\n"
    "#\n"
    "# Every option is listed with its documentation; those at their default are commented\n"
    "# out.  This file is the output of `fusiond --config=/dev/null --dump-config --verbose`.\n"
    "#\n"
    "# Syntax: one `name = value` per line.  `#` starts a comment at the start of a line or\n"
    "# after a space.  Values with spaces, `#` or quotes are written in double quotes, with\n"
    "# \\\" \\\\ \\n \\t escapes.  Unknown names, bad values and repeated names are errors,\n"
    "# reported as file:line (check with `fusiond --test-config`).  Every option is also a\n"
    "# command-line flag (`fusiond --help`); flags win over this file.  `systemctl reload\n"
    "# fusiond` (SIGHUP) re-reads this file and applies the options marked so; the others\n"
    "# need a restart.  An invalid file at reload is logged and the old configuration kept.\n";

void cfg_dump(const cfg_t *c, FILE *f, bool verbose)
{
    cfg_t d;
    cfg_init(&d);
    char *val = fd_xmalloc(8192), *def = fd_xmalloc(8192);
    char notes[512], text[1024], line[96];
    const char *group = NULL;
    if (verbose)
        fputs(file_header, f);
    for (int i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        if (verbose && (!group || strcmp(group, o->group) != 0)) {
            group = o->group;
            snprintf(line, sizeof(line), "# ---- %s ", group);
            fprintf(f, "\n%s", line);
            for (size_t k = strlen(line); k < 90; k++)
                fputc('-', f);
            fputc('\n', f);
        }
        format_value(c, o, val, 8192);
        format_value(&d, o, def, 8192);
        bool at_default = strcmp(val, def) == 0;
        if (verbose) {
            option_notes(o, notes, sizeof(notes), true);
            snprintf(text, sizeof(text), "%s%s", o->help, notes);
            fprintf(f, "\n# ");
            wrap(f, "# ", 2, text, 90);
        }
        const char *cm = verbose && at_default ? "#" : "";
        if ((o->flags & F_REPEAT)) {
            const cfg_list_t *l = cfield(c, o);
            if (l->n == 0 && verbose)
                fprintf(f, "#%s = %s\n", o->name, o->meta ? o->meta : "VALUE");
            for (int k = 0; k < l->n; k++) {
                char q[1100];
                quote(l->v[k], q, sizeof(q));
                fprintf(f, "%s = %s\n", o->name, q);
            }
            continue;
        }
        fprintf(f, "%s%s = %s\n", cm, o->name, val);
    }
    free(val);
    free(def);
    cfg_fini(&d);
}
