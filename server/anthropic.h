/* anthropic.h: Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens) on
 * top of the chat path.  A Messages body is checked here with Anthropic's own field names,
 * then translated into the chat completions body that request.c parses (rq_t), so the chat
 * template, tools, reasoning and sampling are the chat endpoint's; the answers (the message
 * object, the stream's typed events, errors in Anthropic's shape) are written here.
 * Pure functions; any thread (the server calls them on its loop).  Layer: server; cJSON. */
#ifndef FD_ANTHROPIC_H
#define FD_ANTHROPIC_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "server/request.h"
#include "server/strbuf.h"

/* A parsed, checked Messages body.  Owns everything. */
typedef struct an_req {
    cJSON *root;                /* the body as sent */
    bool count;                 /* a count_tokens body (no max_tokens, no sampling) */
    bool stream;
} an_req_t;

/* Parses and checks body as a Messages request (count: as a count_tokens request): 0 and
 * *q (free with an_free), or -EINVAL with e filled (400; the message names the field as
 * Anthropic's errors do, "messages.1.content.0.type: ..."), or -ENOMEM (e filled, 500). */
int an_parse(const char *body, size_t len, bool count, an_req_t *q, rq_err_t *e);
void an_free(an_req_t *q);

/* The chat completions body equivalent to q: a malloc'd JSON text in *out.  0, -ENOMEM. */
int an_chat_body(const an_req_t *q, char **out, rq_err_t *e);

/* Renames, in an error from parsing or preparing the translated chat request, the chat
 * fields to the Messages fields they came from (stop -> stop_sequences, tools[i].function
 * .parameters -> tools[i].input_schema, ...). */
void an_map_error(rq_err_t *e);

/* Anthropic's error type for an HTTP status (400 invalid_request_error, 401
 * authentication_error, 403 permission_error, 404 not_found_error, 413 request_too_large,
 * 429 rate_limit_error, 503 and 529 overloaded_error, other 5xx api_error). */
const char *an_error_type(int status);
/* {"type": "error", "error": {"type": ..., "message": ...}} as JSON text (NULL: no memory). */
char *an_error(int status, const char *message);

/* ---- answers */

typedef struct an_result {
    const char *id;             /* "msg_..." */
    const char *model;
    const char *stop_reason;    /* end_turn, max_tokens, stop_sequence, tool_use; NULL: null */
    const char *stop_sequence;  /* with stop_sequence: the one that matched */
    long long input_tokens;     /* the prompt's tokens not served from the prefix cache */
    long long cache_read_tokens; /* those served from it */
    long long output_tokens;
} an_result_t;

/* The stop_reason of a chat finish ("stop", "length", "tool_calls"); stop_seq: the stop
 * string that ended a "stop" (NULL: the model's end of turn). */
const char *an_stop_reason(const char *finish, const char *stop_seq);

/* Content blocks, appended to arr (which owns them).  0, -EINVAL (tool_use: arguments not
 * a JSON object), -ENOMEM. */
int an_add_text(cJSON *arr, const char *text, size_t len);
int an_add_thinking(cJSON *arr, const char *text, size_t len);
int an_add_tool_use(cJSON *arr, const char *id, const char *name, const char *arguments);

/* The message object with content (taken; NULL: []) as JSON text (NULL: no memory). */
char *an_message(const an_result_t *r, cJSON *content);
/* count_tokens' answer {"input_tokens": n}. */
char *an_count(long long n);

/* ---- streaming: Anthropic's events, as SSE frames ("event: T\ndata: J\n\n") */

enum an_block { AN_NONE, AN_TEXT, AN_THINKING, AN_TOOL };

typedef struct an_stream {
    an_result_t res;            /* id, model, input tokens; the rest at the end */
    int next;                   /* index of the next content block */
    int open;                   /* enum an_block of the open block (index next - 1) */
    bool begun, ended;
    bool failed;                /* out of memory: events were lost */
} an_stream_t;

void an_stream_init(an_stream_t *st, const char *id, const char *model, long long input_tokens);
/* message_start (the message with no content, usage so far) and a ping. */
void an_stream_begin(an_stream_t *st, sb_t *out);
/* Text of a text block (opened on first use, after closing another open block) as a
 * text_delta; thinking the same in a thinking block (thinking_delta). */
void an_stream_text(an_stream_t *st, sb_t *out, const char *text, size_t len);
void an_stream_thinking(an_stream_t *st, sb_t *out, const char *text, size_t len);
/* A tool_use block's start (id, name, input {}), closing the open block; then the input's
 * JSON text piece by piece as input_json_delta. */
void an_stream_tool(an_stream_t *st, sb_t *out, const char *id, const char *name);
void an_stream_args(an_stream_t *st, sb_t *out, const char *partial);
/* A ping event. */
void an_stream_ping(sb_t *out);
/* The open block's content_block_stop, message_delta (r's stop_reason, stop_sequence and
 * usage) and message_stop. */
void an_stream_end(an_stream_t *st, sb_t *out, const an_result_t *r);
/* An error event (the stream ends with it). */
void an_stream_error(an_stream_t *st, sb_t *out, int status, const char *message);

#endif
