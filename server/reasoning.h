/* reasoning.h: separates a reasoning model's "<think>...</think>" block (or gpt-oss's harmony
 * analysis messages, rsn_init_harmony) from its answer, as
 * llama-server's --reasoning-format deepseek does: the text after a leading "<think>" up to
 * "</think>" is the reasoning, whitespace-trimmed, and the rest, leading whitespace dropped,
 * the content (an output without the leading tag is all content; an unclosed block is all
 * reasoning; rsn_start_inside: the prompt opened the block, and the output starts in it).  Fed piece by
 * piece as tokens arrive (rsn_feed), it releases each byte once it is sure where it goes, so
 * streamed deltas add up to the whole answer's fields.  Pure; one splitter per choice, used
 * by one thread at a time.  Layer: server (uses server/strbuf.h). */
#ifndef FD_REASONING_H
#define FD_REASONING_H

#include <stdbool.h>
#include <stddef.h>

#include "server/strbuf.h"

/* reasoning_format (configuration and per request).  RSN_AUTO: deepseek for the chat
 * families whose models think (chat_has_thinking), none for the others. */
enum rsn_format { RSN_AUTO = 0, RSN_NONE, RSN_DEEPSEEK };

/* "auto", "none", "deepseek" -> enum rsn_format; -EINVAL otherwise. */
int rsn_format_from_name(const char *name);
const char *rsn_format_name(int format);

typedef struct rsn {
    int state;          /* where the next byte goes (reasoning.c) */
    sb_t hold;          /* bytes not yet released: a possible tag, or whitespace that may
                           still be trimmed */
    size_t n_reasoning; /* bytes released as reasoning so far */
    bool closed;        /* "</think>" was seen */
    long long n_tokens; /* rsn_feed calls (one per generated token) */
    long long n_reasoning_tokens; /* of them, the think block's: every token up to the one
                                     that completed "</think>" (the tags' included), all of
                                     them while it is open, 0 when the output has none
                                     (harmony: the analysis messages' tokens, headers and
                                     <|end|> included) */
    /* harmony (rsn_init_harmony) */
    bool harmony;
    bool inline_reasoning;   /* analysis messages stay in the content, as written */
    bool calls;              /* call messages go on to the content (toolcall.h reads them) */
    bool lead;               /* an analysis message's leading whitespace is still dropped */
    long long pending;       /* tokens of the header not yet classified */
    size_t skip;             /* hold's first bytes that an assistant prefill wrote
                                (rsn_prime): never released */
} rsn_t;

void rsn_init(rsn_t *r);
void rsn_free(rsn_t *r);

/* Feeds one token's len bytes of output; appends what is now certain to *reasoning and *content.
 * -ENOMEM when a buffer could not grow (the outputs are then incomplete). */
int rsn_feed(rsn_t *r, const char *text, size_t len, sb_t *reasoning, sb_t *content);

/* The output has ended: releases what was held (trailing whitespace of the reasoning, which
 * is trimmed, is dropped; a partial tag is what it is, text). */
int rsn_finish(rsn_t *r, sb_t *reasoning, sb_t *content);

/* The prompt already opened the block (DeepSeek-R1's generation prompt ends in "<think>\n"):
 * the output starts inside the reasoning, so "abc</think>answer" is reasoning "abc" and
 * content "answer", and an output that never closes it is all reasoning.  Call right after
 * rsn_init, before the first rsn_feed. */
void rsn_start_inside(rsn_t *r);

/* An assistant prefill (chat_format_prefill): the prompt ends in len bytes of the answer
 * that the output continues (from the final turn's header on).  They are read as output
 * already written, so the splitter is where they leave it (inside the think block, in the
 * content, in a harmony message), but nothing of theirs is released: the fields get only
 * what the output adds (bytes the prefill left undecided, a whitespace run or the start of
 * a tag, count as its own).  Token counts start at 0.  Call after rsn_init (and
 * rsn_init_harmony or rsn_start_inside), before the first rsn_feed; -ENOMEM. */
int rsn_prime(rsn_t *r, const char *text, size_t len);

/* gpt-oss's harmony output, as llama-server's gpt-oss parser reads it (the generation
 * prompt ended in "<|start|>assistant", so it starts with a message header): each message is
 * a header up to "<|message|>" and a body up to "<|end|>" (the last one up to the end of the
 * output: <|return|> and <|call|> end the generation), the next one after
 * "<|start|>assistant".  Headers, as llama-server's regexes match them whole:
 * "<|channel|>analysis": the body is reasoning, whitespace-trimmed at both ends per message
 * (inline_reasoning, reasoning_format none: header, body and "<|end|>" go to the content as
 * written); "<|channel|>final" (an optional " [<|constrain|>]TYPE" after it) and
 * "<|channel|>commentary": the body is content; a call, " to=functions.NAME<|channel|>CH" or
 * "<|channel|>CH to=functions.NAME" (CH analysis or commentary, then the optional type): with
 * calls, the content gets "<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>"
 * and the body (toolcall.h's gpt-oss format), else the message is dropped (llama-server adds
 * no call for a request without tools); any other header: skipped to the next
 * "<|start|>assistant".  Text outside a message is dropped; a header the output ends in (an
 * output with no harmony markup at all) is content, as written.  Call right after rsn_init. */
void rsn_init_harmony(rsn_t *r, bool inline_reasoning, bool calls);

/* Whether the splitter is still inside (or before) the reasoning. */
bool rsn_thinking(const rsn_t *r);

/* Whether it is inside the reasoning: in the think block (not before it), in an analysis
 * message's text. */
bool rsn_in_reasoning(const rsn_t *r);

#endif
