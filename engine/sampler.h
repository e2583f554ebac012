/* sampler.h: turns one sequence's logits into the next token: logit bias, repetition /
 * presence / frequency penalties, temperature, top-k, top-p, min-p, and a per-request seeded
 * generator (reproducible); greedy when temperature is 0.  Also the log-probabilities of the
 * chosen token and the top-N alternatives (of the distribution before truncation, after
 * penalties and temperature... see smp_sample).  One smp_t per sequence; not shared between
 * threads. */
#ifndef FD_SAMPLER_H
#define FD_SAMPLER_H

#include <stdint.h>

#include "engine/engine.h"

typedef struct smp smp_t;

/* Copies params (including the logit bias list).  -EINVAL on out-of-range values. */
int smp_create(smp_t **out, const eng_sampling_t *params, int n_vocab);
void smp_free(smp_t *s);
/* Records a token that is part of the context for penalties (prompt or generated). */
void smp_accept(smp_t *s, int32_t token, int generated);
/* Samples from logits (n_vocab floats, modified in place).  When top != NULL, writes the
 * chosen token's log-probability to *logprob and the n_top best alternatives (n_top <= 20)
 * to top, from the log-softmax of the logits after bias and penalties (temperature 1). */
int32_t smp_sample(smp_t *s, float *logits, float *logprob, eng_top_t *top, int n_top);

#endif
