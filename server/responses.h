/* responses.h: OpenAI's Responses API (POST /v1/responses) on top of the chat path.  A
 * Responses body is checked here with Responses' own field names, then translated into the
 * chat completions body that request.c parses (rq_t), so the chat template, tools, JSON
 * grammar and sampling are the chat endpoint's; the answers (the response object, the
 * stream's typed events) are written here, and finished responses are kept in a bounded
 * store for previous_response_id and GET/DELETE /v1/responses/{id}.
 * Pure functions except the store; everything is called on the server's loop thread (the
 * store has no lock: only that thread touches it).  Layer: server; uses cJSON. */
#ifndef FD_RESPONSES_H
#define FD_RESPONSES_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "server/request.h"
#include "server/strbuf.h"

/* A parsed, checked Responses body.  Owns everything. */
typedef struct rs_req {
    cJSON *root;                /* the body as sent (its parameters are echoed) */
    cJSON *input;               /* the input as items (a string becomes one user message),
                                   each with an id: what input_items lists */
    char *prev_id;              /* previous_response_id, NULL when none */
    char *conv_id;              /* conversation's id, NULL when none */
    bool store;                 /* default true */
    bool stream;
    bool logprobs;              /* top_logprobs given or include has the output logprobs */
    bool background;            /* runs detached from the request (needs store) */
    bool truncate_auto;         /* truncation "auto": the oldest turns are dropped to fit */
} rs_req_t;

/* Gives q's input items without an id one ("msg_..." and so on, from the response's id). */
void rs_name_input(rs_req_t *q, const char *resp_id);
/* The same for any items (ids from resp_id, which must differ per call). */
void rs_name_items(cJSON *items, const char *resp_id);
/* Checks arr (at most max items, named key in errors) as input items (messages,
 * function_call, function_call_output, reasoning): 0 and *out the normalized items (new),
 * or -EINVAL / -ENOMEM with e filled. */
int rs_parse_items(const cJSON *arr, const char *key, int max, cJSON **out, rq_err_t *e);
/* Checks obj's "metadata" (absent or null is fine) as OpenAI limits it: 0 or -EINVAL. */
int rs_check_metadata(const cJSON *obj, rq_err_t *e);
/* A conversation object {id, object, created_at, metadata} as JSON text (NULL: no memory). */
char *rs_conversation_obj(const char *id, long long created_at, const cJSON *metadata);

/* Parses and checks body: 0 and *q (free with rs_free), or -EINVAL with e filled (400
 * naming the field as the Responses API spells it), -ENOMEM (e filled, 500). */
int rs_parse(const char *body, size_t len, rs_req_t *q, rq_err_t *e);
void rs_free(rs_req_t *q);

/* The chat completions body equivalent to q, with history (a stored conversation's items,
 * NULL for none) between the instructions and q's input: a malloc'd JSON text in *out.
 * 0, -EINVAL (e filled: an item the chat path cannot carry), -ENOMEM. */
int rs_chat_body(const rs_req_t *q, const cJSON *history, char **out, rq_err_t *e);

/* Renames, in an error from parsing or preparing the translated chat request, the chat
 * fields to the Responses fields they came from (max_completion_tokens ->
 * max_output_tokens, response_format -> text.format, messages -> input, ...). */
void rs_map_error(rq_err_t *e);

/* ---- answers */

typedef struct rs_result {
    const char *id;             /* "resp_..." */
    long long created_at;
    const char *model;
    const char *status;         /* "completed", "incomplete", "in_progress", "queued",
                                   "cancelled" or "failed" */
    const char *incomplete_reason; /* with "incomplete": "max_output_tokens" */
    const char *error_code;     /* with "failed": the error object (NULL message: null) */
    const char *error_message;
    long long completed_at;     /* with "completed" (0: now) */
    const cJSON *output;        /* the output items (NULL: none yet) */
    bool usage;                 /* include usage (else null) */
    long long input_tokens, cached_tokens, output_tokens;
    long long reasoning_tokens; /* of output_tokens, those of the reasoning */
} rs_result_t;

/* The response object: the result and the request's parameters as OpenAI echoes them. */
cJSON *rs_response_obj(const rs_req_t *q, const rs_result_t *r);

/* Output items, appended to arr (which owns them).  An item id is prefix + the response
 * id's tail + the item's index, so ids are unique per response.  lp: the output_text's
 * logprobs array (taken; NULL: []).  0 or -ENOMEM. */
int rs_add_message(cJSON *arr, const char *resp_id, const char *text, size_t len, cJSON *lp,
                   const char *status);
int rs_add_call(cJSON *arr, const char *resp_id, const char *call_id, const char *name,
                const char *arguments, const char *status);
/* A reasoning item (the model's think block: content [{type: reasoning_text, text}], an
 * empty summary), which comes before the message it led to. */
int rs_add_reasoning(cJSON *arr, const char *resp_id, const char *text, size_t len,
                     const char *status);

/* ---- streaming: the typed events of one response, as SSE frames ("event: T\ndata: J") */

typedef struct rs_stream {
    const rs_req_t *q;
    rs_result_t res;            /* id, created_at, model; status and usage at the end */
    int seq;                    /* sequence_number of the next event */
    cJSON *output;              /* the items so far (owned) */
    int msg;                    /* output index of the open message item, -1 none */
    sb_t text;                  /* its text so far */
    cJSON *lps;                 /* its logprobs so far */
    int call;                   /* output index of the open function call, -1 none */
    sb_t args;                  /* its arguments so far */
    int rsn;                    /* output index of the open reasoning item, -1 none */
    sb_t rtext;                 /* its text so far */
    bool failed;                /* out of memory: events were lost */
    /* detached (background): events go to log when keep, else nowhere, never to out */
    bool detached, keep;
    sb_t log;                   /* the events so far, as SSE frames */
    size_t *ends;               /* ends[k]: where event k (sequence_number k) ends in log */
    int n_ends, cap_ends;
} rs_stream_t;

void rs_stream_init(rs_stream_t *st, const rs_req_t *q, const char *id, long long created,
                    const char *model);
void rs_stream_free(rs_stream_t *st);
/* From now on the events are not written to out: they are kept in st->log (keep), to be
 * replayed from any sequence number (a background stream's readers), or dropped. */
void rs_stream_detach(rs_stream_t *st, bool keep);
/* Where in st->log the events after sequence number after begin (-1: all): 0 and *off;
 * -ERANGE when after is not an event sent so far (nor -1), -ENOENT when nothing is kept. */
int rs_stream_since(const rs_stream_t *st, long long after, size_t *off);
/* response.created, response.in_progress. */
void rs_stream_begin(rs_stream_t *st, sb_t *out);
/* One event of type carrying the response as st->res says it is (response.queued, ...). */
void rs_stream_status(rs_stream_t *st, sb_t *out, const char *type);
/* Text of the assistant message (opened on first use: output_item.added,
 * content_part.added, after closing an open reasoning item) as an output_text.delta; lp
 * (taken, may be NULL) its logprobs. */
void rs_stream_text(rs_stream_t *st, sb_t *out, const char *text, size_t len, cJSON *lp);
/* Reasoning text (the item opened on first use: output_item.added, content_part.added) as a
 * reasoning_text.delta. */
void rs_stream_reasoning(rs_stream_t *st, sb_t *out, const char *text, size_t len);
/* A function call's first event (output_item.added), closing an open message first. */
void rs_stream_call(rs_stream_t *st, sb_t *out, const char *call_id, const char *name);
void rs_stream_args(rs_stream_t *st, sb_t *out, const char *delta);
/* The output so far (new): the items, the open ones with their text (or arguments) so
 * far and, when open_status is given, that status; NULL when out of memory. */
cJSON *rs_stream_output(const rs_stream_t *st, const char *open_status);
/* Closes the open items (their .done events); incomplete marks them so. */
void rs_stream_close(rs_stream_t *st, sb_t *out, bool incomplete);
/* response.completed, .incomplete, .cancelled or .failed as st->res.status says (it
 * carries the usage too). */
void rs_stream_end(rs_stream_t *st, sb_t *out);
/* An "error" event. */
void rs_stream_error(rs_stream_t *st, sb_t *out, const char *code, const char *message);

/* ---- the store of finished responses (loop thread only) */

typedef struct rs_store rs_store_t;

/* At most max_count responses and max_bytes of their JSON; the least recently used go
 * first.  max_count 0: nothing is stored.  0 or -ENOMEM. */
int rs_store_create(rs_store_t **out, int max_count, size_t max_bytes);
void rs_store_free(rs_store_t *s);
/* Keeps response (the object's JSON text) with its input items (the history it continued
 * and its own input) and output items, all copied, under id (replacing one of that id).
 * 0 (also when max_count is 0: nothing is kept), -E2BIG (larger than max_bytes: not kept,
 * one of that id left as it was) or -ENOMEM. */
int rs_store_put(rs_store_t *s, const char *id, const char *response, const cJSON *input,
                 const cJSON *output);
/* The stored response's JSON text, input and output items (borrowed until the next store
 * call; any out pointer may be NULL), marking it recently used; -ENOENT when unknown. */
int rs_store_get(rs_store_t *s, const char *id, const char **response, const cJSON **input,
                 const cJSON **output);
/* Keeps a background stream's events (SSE frames, sequence numbers 0, 1, ...) with the
 * stored response id, making room among the others; -ENOENT (no such response), -E2BIG
 * (with them it would exceed max_bytes: not kept), -ENOMEM. */
int rs_store_set_events(rs_store_t *s, const char *id, const char *events, size_t len);
/* The kept events (borrowed as rs_store_get's); -ENOENT, or -ENODATA when none were kept. */
int rs_store_events(rs_store_t *s, const char *id, const char **events, size_t *len);
/* Where in events (as kept) the frames after sequence number after begin (-1: all): 0, or
 * -ERANGE when there is no such event. */
int rs_events_since(const char *events, size_t len, long long after, size_t *off);
/* 0, or -ENOENT. */
int rs_store_del(rs_store_t *s, const char *id);
int rs_store_count(const rs_store_t *s);
size_t rs_store_bytes(const rs_store_t *s);

/* GET /v1/responses/{id}/input_items: the list object of the input items, newest first
 * when desc (OpenAI's default order), at most limit of them, starting after the item whose
 * id is after (NULL: from the first); NULL when out of memory. */
char *rs_input_items(const cJSON *input, bool desc, int limit, const char *after);

#endif
