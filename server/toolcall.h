/* toolcall.h: reads the tool calls a model wrote, in its chat family's syntax, out of the
 * generated text: Llama 3.1's one JSON object {"name", "parameters"}, Qwen 2.5's and
 * Qwen3's <tool_call> blocks after optional text, Mistral Nemo's [TOOL_CALLS] JSON array,
 * DeepSeek R1's (and V3.1's) <｜tool▁calls▁begin｜> blocks after optional text, Mistral Small
 * 3.2's [TOOL_CALLS]name[ARGS]{...} (its control tokens possibly left out: name{...}),
 * Granite's <|tool_call|> JSON array, Phi-4-mini's functools[...] array after optional text
 * (or the array alone, its <|tool_call|> control token left out), gpt-oss's call messages
 * as the harmony splitter (reasoning.h) passes them on, after optional text; and for a template
 * of no known family, llama-server's generic JSON answer (TC_GENERIC).  Whole (tc_parse, at
 * the end of a choice) or while it streams (tc_stream_safe: how much is certainly text;
 * tc_scan: how far each call has come, to stream its name and arguments as they arrive).
 * Pure functions; any thread.  Layer: server (uses server/chat.h's family numbers, cJSON, and
 * server/schema.h for the generic format's grammar). */
#ifndef FD_TOOLCALL_H
#define FD_TOOLCALL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gr_spec;

/* The family number the functions below take for llama-server's "Generic" format, what a
 * chat template of no known family answers in when the request has tools: one JSON object,
 * {"tool_call": {"name": N, "arguments": {...}}}, {"tool_calls": [{"name", "arguments",
 * "id"}, ...]} (parallel_tool_calls) or {"response": "..."}, held to that shape by
 * tc_generic_grammar.  Call ids are made as for the other families ("call_" + 24): the
 * model's own "id" (the grammar asks for one, as llama-server's) is not returned. */
#define TC_GENERIC 1000

typedef struct tc_call {
    char *id;                   /* "call_" + 24 letters and digits; Mistral: 9 of them, the
                                   length its template requires when the call comes back */
    char *name;
    char *arguments;            /* the arguments object as the model wrote it (JSON text) */
} tc_call_t;

typedef struct tc_result {
    size_t content_len;         /* text[0..content_len) is text the model wrote before the
                                   calls (Qwen, DeepSeek, mistral3, Phi-4-mini), trailing
                                   whitespace left out;
                                   0: none */
    tc_call_t *calls;
    size_t n_calls;
} tc_result_t;

/* Parses text[0..len) as family's tool calls to the functions names[0..n_names): 0 and *out
 * filled (free with tc_free) when the text after any leading prose is nothing but well-formed
 * calls to those functions; -ENOENT when it is not (it is then ordinary content), -ENOTSUP
 * for a family without tool calls, -ENOMEM.  parallel false keeps the first call only.
 * seed makes the call ids (each call's id differs). */
int tc_parse(int family, const char *text, size_t len, char *const *names, int n_names,
             bool parallel, uint64_t seed, tc_result_t *out);
void tc_free(tc_result_t *r);

/* A new call id in family's shape from the generator state *st (any value to start). */
char *tc_make_id(int family, uint64_t *st);

/* For a stream: of the text generated so far, the length of the prefix that is certainly
 * content, whatever follows; the rest may be (the start of) a tool call and is held back.
 * Never shrinks as text grows, so what was sent stays right. */
size_t tc_stream_safe(int family, const char *text, size_t len);

typedef struct tc_span {        /* one call as far as the text so far shows it */
    size_t name_off, name_len;  /* the name as written, between its quotes (DeepSeek: its
                                   raw text, up to the newline or the separator) */
    bool name_done;             /* its closing quote (newline, separator) has come */
    size_t args_off, args_len;  /* the arguments value as written so far */
    bool args_started;          /* its first character has come */
    bool args_done;             /* it is complete */
} tc_span_t;

/* The calls in text[0..len) so far, in order (at most max in spans, *n of them; a call
 * appears once its object has begun).  The offsets only grow as the text does, and a
 * complete text that tc_parse accepts has the same calls with the same argument texts.
 * 0 while the text is, so far, well-formed calls after the prose; -ENOENT once it cannot
 * be (the spans found until then stay valid); -ENOTSUP for a family without tool calls. */
int tc_scan(int family, const char *text, size_t len, tc_span_t *spans, size_t max,
            size_t *n);

/* TC_GENERIC: the content of a {"response": "..."} answer, as far as text[0..len) shows it:
 * 0 and the string decoded (a malloc'd NUL-terminated copy in *out, *n bytes; an escape
 * still arriving is left out, so it only grows with the text) when the text is a prefix of
 * such a document (the whole one, or one cut short: its end, whitespace and nothing else
 * after it); -ENOENT when it is not (a call, another shape, malformed JSON, or too little
 * yet to tell), -ENOMEM. */
int tc_generic_content(const char *text, size_t len, char **out, size_t *n);

/* The grammar of a TC_GENERIC answer (engine/grammar.h) for the request's tools (the JSON
 * text of OpenAI's array): a call to one of them, each call's arguments held to its
 * parameters schema (one outside server/schema.h's subset: any object), as
 * {"tool_calls": [...]} (at least one call, each with an "id") when parallel, else
 * {"tool_call": ...}; or, unless required, {"response": "<text>"}.  name not NULL: a call
 * to that function only (a named tool_choice).  0 and *out (one reference), -EINVAL (err
 * says why: tools that are not such an array, no function left), -ENOMEM. */
int tc_generic_grammar(const char *tools, bool parallel, bool required, const char *name,
                       struct gr_spec **out, char *err, size_t errlen);

#endif
