/* chat.h: turns chat messages into the prompt text a model was trained on.  Recognises the
 * family of a GGUF tokenizer.chat_template by its markers and formats with a built-in C
 * formatter per family that renders exactly what that template renders, tools and tool calls
 * included for the families whose template has them; any other template (or every one, with
 * --jinja) is rendered by the Jinja interpreter (server/jinja.h) from chat_opts_t.jinja.
 * Pure functions (Granite's default system text carries today's local date, as its
 * template's strftime_now): any thread (the HTTP handlers, fusion-cli) may call them.
 * Layer: server; uses engine/unicode.h and cJSON (for the JSON the templates print). */
#ifndef FD_CHAT_H
#define FD_CHAT_H

#include <stdbool.h>
#include <stddef.h>

enum chat_family {
    CHAT_PLAIN = 0, /* fallback for models without a template (format below) */
    CHAT_LLAMA2,    /* [INST] <<SYS>> ... [/INST] (Llama 2 chat) */
    CHAT_LLAMA3,    /* <|start_header_id|>role<|end_header_id|> (Llama 3.0) */
    CHAT_LLAMA31,   /* Llama 3.1/3.2: the same plus the fixed system header with dates */
    CHAT_CHATML,    /* <|im_start|>role ... <|im_end|> */
    CHAT_QWEN,      /* ChatML with Qwen 2.5's default system message */
    CHAT_MISTRAL,   /* [INST]...[/INST] as Mistral Nemo (v3 tekken): system on the last user */
    CHAT_GEMMA,     /* <start_of_turn>user / model */
    CHAT_PHI3,      /* <|user|> ... <|end|> */
    CHAT_ZEPHYR,    /* <|user|> ... EOS */
    CHAT_QWEN3,     /* ChatML as Qwen3: <think> reasoning blocks, Qwen's tool syntax */
    CHAT_DEEPSEEK_R1, /* DeepSeek-R1-Distill: <｜User｜>/<｜Assistant｜>, the prompt opens <think> */
    CHAT_MISTRAL3,  /* Mistral Small 3.2, Devstral, Magistral: [SYSTEM_PROMPT], calls as
                       [TOOL_CALLS]name[ARGS]{...} */
    CHAT_GRANITE,   /* IBM Granite 3.x: <|start_of_role|>role<|end_of_role|>...<|end_of_text|> */
    CHAT_PHI4MINI,  /* Phi-4-mini: <|role|>...<|end|> without newlines, tools in
                       <|tool|>...<|/tool|>, calls as functools[{...}, ...] */
    CHAT_GPTOSS,    /* gpt-oss's harmony format: <|start|>role<|channel|>...<|message|>...,
                       reasoning in the analysis channel, calls to=functions.NAME */
    CHAT_JINJA,     /* a template no family matches, rendered by server/jinja.c
                       (chat_opts_t.jinja); its tool calls are read as Qwen's <tool_call>
                       blocks when the template has that marker, else in llama-server's
                       generic JSON format (toolcall.h's TC_GENERIC) */
    CHAT_N_FAMILIES
};

enum chat_role { CHAT_SYSTEM = 0, CHAT_USER = 1, CHAT_ASSISTANT = 2, CHAT_TOOL = 3 };

typedef struct chat_call {   /* one tool call of an assistant message */
    const char *id;          /* NUL-terminated; Mistral's template requires 9 characters */
    const char *name;
    const char *arguments;   /* JSON text of an object, as OpenAI sends it */
} chat_call_t;

typedef struct chat_msg {
    int role;            /* enum chat_role */
    const char *content; /* len bytes (need not be NUL-terminated); NULL with len 0 is the
                            null content of an assistant message that only calls tools */
    size_t len;
    const chat_call_t *calls; /* assistant: the tool calls it made (n_calls of them) */
    size_t n_calls;
    const char *call_id; /* tool: the tool_call_id it answers (NUL-terminated) */
    /* assistant: the message's reasoning_content (NUL-terminated); NULL when not given
     * (Qwen3 then splits it from content at "</think>", as its template does).  Only
     * CHAT_QWEN3 renders it; the other families' templates ignore it. */
    const char *reasoning;
} chat_msg_t;

typedef struct chat_opts {
    const char *bos;     /* the vocabulary's BOS / EOS text (e.g. "<s>"), as the template's */
    const char *eos;     /* bos_token / eos_token; NULL: "" */
    bool add_generation_prompt;
    /* A system message the template rejects (Gemma 2): false merges it into the first user
     * turn ("system\n\nuser", as Gemma 3's template and llama.cpp do); true is an error. */
    bool strict;
    /* The request's tools as the JSON text of OpenAI's array ([{"type": "function",
     * "function": {...}}]); NULL or "" for none.  Only the families chat_has_tools() names
     * accept them (else -ENOTSUP). */
    const char *tools;
    /* chat_template_kwargs {"enable_thinking": false}: Qwen3's generation prompt then
     * closes an empty <think> block, and DeepSeek-R1's "<think>\n" gets "</think>" (its
     * template has no switch; llama-server does this).  false (zeroed options) keeps the
     * template's default, thinking on; the other families ignore it. */
    bool no_thinking;
    /* gpt-oss: the system message's "Reasoning: " level ("low", "medium", "high"; NULL:
     * the template's default, medium); the other families ignore it. */
    const char *reasoning_effort;
    /* Assistant prefill (llama-server's default when a conversation ends in an assistant
     * message): the last message, an assistant's without tool calls, is the start of the
     * answer.  The conversation is rendered whole without a generation prompt and cut right
     * after that message's content (the end-of-turn markup the template writes after it is
     * dropped), so the model continues the message.  The content is cut as given: trailing
     * whitespace a template would trim stays.  Qwen3: a content that opens "<think>" and
     * does not close it (without reasoning_content) is written as the model would have
     * written it, right after the turn's header (its template would put it after an empty
     * think block), so the model continues its reasoning.  Errors: -EINVAL when the last
     * message is not the assistant's, -ENOTSUP when it has tool calls. */
    bool prefill;
    /* The parsed template: when set, chat_format renders the chat with it whatever the family
     * (the variables: chat_jinja_vars), and its errors (raise_exception's message) come back
     * in err with -EINVAL. */
    const struct jinja *jinja;
    bool jinja_string_args; /* chat_jinja_string_args(jinja) */
    bool jinja_typed_content; /* chat_jinja_typed_content(jinja) */
    /* The request's chat_template_kwargs as the JSON text of an object (NULL: none): its
     * keys become template variables too (enable_thinking, reasoning_effort, ...). */
    const char *kwargs;
} chat_opts_t;

/* "system", "user", "assistant", "tool" -> enum chat_role; -EINVAL otherwise. */
int chat_role_from_name(const char *name);
const char *chat_role_name(int role);

/* Family names, as accepted in the configuration: "plain", "llama2", "llama3", "llama3.1",
 * "chatml", "qwen", "qwen3", "mistral", "gemma", "phi3", "zephyr", "deepseek-r1",
 * "mistral3", "granite", "phi4-mini", "gpt-oss".  -EINVAL for others. */
int chat_family_from_name(const char *name);
const char *chat_family_name(int family);

/* The family of a chat template: CHAT_PLAIN when tmpl is NULL or empty, -ENOENT when there
 * is a template but no known family's markers are in it. */
int chat_detect(const char *tmpl, size_t len);

/* What the server uses: override ("auto", NULL or a family name) else the detected family,
 * else plain.  *note is set to a static sentence saying how it was chosen (for the log).
 * -EINVAL for an unknown override name. */
int chat_select(const char *override, const char *tmpl, size_t len, int *family,
                const char **note);

/* Whether the family's template renders tools, tool calls and tool results: Llama 3.1,
 * Qwen 2.5, Qwen3, Mistral Nemo, Mistral Small 3.2 (mistral3), Granite, Phi-4-mini (whose
 * template takes the tools from a system message and has no place for calls: chat_format
 * writes them as the model does) and DeepSeek-R1 (whose template renders the calls and
 * results but no tools list: chat_format puts the tools in its system text as llama-server
 * does) and gpt-oss. */
bool chat_has_tools(int family);

/* Whether the family's models write their reasoning as "<think>...</think>" before the
 * answer (Qwen3, DeepSeek-R1): what reasoning_format "auto" separates. */
bool chat_has_thinking(int family);

/* The text a model of the family writes to open a tool call, for the server to append to
 * the generation prompt when the request demands a call (tool_choice "required", or a named
 * function when name is not NULL: then the text runs up to where the arguments begin).
 * A malloc'd string in *out, or -ENOTSUP for a family without tool calls, -ENOMEM. */
int chat_tool_prefill(int family, const char *name, char **out);

/* What closes the call that chat_tool_prefill(family, name) opened, once its arguments are
 * written ("}\n</tool_call>", "}", "}]", DeepSeek's "\n```" + call-end + calls-end,
 * mistral3's "": its arguments end the call); NULL for a family without tool calls. */
const char *chat_tool_close(int family);

/* Python's json.dumps(json.loads(json), ensure_ascii=False[, indent=N]) (what the
 * templates' tojson prints, as transformers defines it): numbers written with '.', 'e' or 'E'
 * print as Python floats (1.0, 1e-05), others as ints, digit for digit.  malloc'd in *out,
 * or -EINVAL when json is not JSON, -ENOMEM.  indent < 0: on one line.  The tools and the
 * tool call arguments given to chat_format are printed the same way, so pass them as the
 * client wrote them. */
int chat_pyjson(const char *json, int indent, char **out);

/* What a Jinja template is rendered with, as the JSON text of an object (malloc'd in *out;
 * -ENOMEM, -EINVAL for kwargs that are not an object): messages (role, content as a string,
 * "" for a null one, or as [{"type": "text", "text": ...}] with opts->jinja_typed_content, tool_calls [{id, type "function", function {name, arguments}}] with the
 * arguments as parsed objects or, with string_args, the JSON text as sent, tool_call_id,
 * reasoning_content), tools (the request's, as sent), add_generation_prompt, bos_token,
 * eos_token, the kwargs' keys, enable_thinking false when opts->no_thinking and
 * reasoning_effort when set: what llama-server gives the template. */
int chat_jinja_vars(const chat_msg_t *msgs, size_t n, const chat_opts_t *opts, bool string_args,
                    char **out);

/* Whether the template needs each message's content as a list of typed parts
 * ([{"type": "text", "text": ...}]): llama-server's probe, a user message's string content
 * does not show in the output and the same text as a part does.  chat_jinja_vars then gives
 * every content so. */
bool chat_jinja_typed_content(const struct jinja *t);

/* Whether the template prints tool call arguments given as JSON text (llama-server's probe:
 * a call rendered with its arguments as a string shows them); false: give them as objects. */
bool chat_jinja_string_args(const struct jinja *t);

/* Whether the template shows an assistant message's tool calls (their arguments, given as
 * text or as objects) and a tool message's content: minja's probes, which llama-server
 * uses to decide whether to write the calls and results into the messages' text itself
 * (server.c does, for the generic tool format of a template of no known family). */
bool chat_jinja_renders_calls(const struct jinja *t);
bool chat_jinja_renders_results(const struct jinja *t);

/* Formats n messages into a malloc'd NUL-terminated string (*out, *len bytes; the caller
 * frees it).  The text contains the family's special-token texts (BOS included where the
 * template writes bos_token): tokenize it with parse_special, and add BOS only where the
 * vocabulary asks for one and the text does not already begin with it.
 * Errors (message in err): -EINVAL for no messages, an unknown role, NULL content, or a
 * conversation the template refuses (roles not alternating, a system message where none is
 * allowed under strict, a Mistral tool call id that is not 9 characters), -ENOTSUP for tools,
 * tool calls or tool messages given to a family without them, -ENOMEM.
 *
 * CHAT_PLAIN renders "<system>\n\n" for each system message, "User: <content>\n" and
 * "Assistant: <content>\n" for the others, and "Assistant:" as the generation prompt. */
int chat_format(int family, const chat_msg_t *msgs, size_t n, const chat_opts_t *opts,
                char **out, size_t *len, char *err, size_t errlen);

/* chat_format with opts->prefill set, and *turn the offset in *out where the final
 * assistant turn's own text begins: right after the header that opens it (what the
 * generation prompt would have written up to the model's first token), so out[*turn..len)
 * is what the model is taken to have written already ("<think>\n\n</think>\n\nHello" for
 * Qwen3, "<|channel|>final<|message|>Hello" for gpt-oss): the server reads it as output
 * already emitted (reasoning, tool calls).  Same errors. */
int chat_format_prefill(int family, const chat_msg_t *msgs, size_t n, const chat_opts_t *opts,
                        char **out, size_t *len, size_t *turn, char *err, size_t errlen);

/* The turn offset chat_format_prefill gives when the renderer marks none (a Jinja
 * template), for text (len bytes) the prefill's prompt: where the rendering of the messages
 * before the prefill, with a generation prompt, stops agreeing with it, less a "<think>" it
 * ends in (DeepSeek-R1's prompt opens the block: the model's own text); where the final
 * content begins when there is no such rendering or it differs sooner (the history renders
 * otherwise once a prefill follows it).  Tests compare it with the built-in formatters'
 * marks. */
size_t chat_guess_turn(int family, const chat_msg_t *msgs, size_t n, const chat_opts_t *opts,
                       const char *text, size_t len);

#endif
