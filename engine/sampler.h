/* sampler.h: turns one sequence's logits into the next token: logit bias, repetition /
 * presence / frequency penalties, temperature, top-k, top-p, min-p, and a per-request seeded
 * generator (reproducible); greedy when temperature is 0.  Also the log-probabilities of the
 * chosen token and the top-N alternatives (of the distribution after bias and penalties, at
 * temperature 1: see smp_sample).  One smp_t per sequence; not shared between threads (the
 * engine thread, or fusion-cli's main thread).
 *
 * The pipeline, in order (each step on what the previous one left):
 *   1. logit bias: logits[t] += bias; a bias <= -100 (or -inf) bans t (logit = -inf).
 *      Several entries for one token add up.
 *   1b. the allowed set (constrained decoding, smp_sample_masked): every token outside it
 *      is banned (logit = -inf), so every later step and the logprobs see only what the
 *      constraint allows.
 *   2. repetition penalty (llama.cpp): each distinct token among the last repeat_last_n
 *      tokens of the context (prompt and generated; -1 = the whole context, 0 = off):
 *      logit > 0 ? logit / repeat_penalty : logit * repeat_penalty.
 *   3. presence / frequency penalties (OpenAI), over generated tokens only, c = times the
 *      token was generated so far: logit -= c * frequency_penalty + (c > 0) * presence_penalty.
 *   -- logits now hold what smp_sample leaves in them, and what logprobs are computed from.
 *   4. temperature 0: the arg max (lowest id on ties).  Otherwise z = (logit - max) / T and:
 *   5. top-k: the k highest (ties to the lower id);
 *   6. top-p: the smallest best-first prefix whose probability (renormalized over what step 5
 *      kept) is >= top_p;
 *   7. min-p: keep tokens whose probability is >= min_p times the best one's;
 *   8. one uniform draw from the seeded generator (xoshiro256**, seeded through splitmix64)
 *      picks a token in proportion to exp(z) over the survivors.
 * Temperature first, then truncation, as vLLM and HF transformers do. */
#ifndef FD_SAMPLER_H
#define FD_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct smp smp_t;

#define SMP_MAX_TOP 20

/* Copies params (including the logit bias list).  -EINVAL on out-of-range values:
 * temperature < 0 or not finite, top_p outside (0, 1], top_k < 0, min_p outside [0, 1],
 * presence/frequency penalties outside [-2, 2], repeat_penalty <= 0 or not finite,
 * repeat_last_n < -1, n_probs outside [-1, SMP_MAX_TOP], a logit-bias token outside
 * [0, n_vocab) or a bias that is NaN or +inf, n_vocab < 1.  -ENOMEM. */
int smp_create(smp_t **out, const eng_sampling_t *params, int n_vocab);
/* The same checks: 0, or -EINVAL with a message naming the field in err. */
int smp_check_params(const eng_sampling_t *p, int n_vocab, char *err, size_t errlen);
void smp_free(smp_t *s);
/* The seed in use: params->seed when has_seed, else the one drawn from the system (so a
 * caller can report it and replay the request). */
uint64_t smp_seed(const smp_t *s);
/* Records a token that is part of the context for penalties (prompt: generated = 0, or
 * generated).  0, -EINVAL (token outside the vocabulary), -ENOMEM. */
int smp_accept(smp_t *s, int32_t token, int generated);
/* Samples from logits (n_vocab floats).  On return the logits hold the values after bias and
 * penalties (steps 1-3 above; NaN became -inf).  When logprob != NULL, writes the chosen
 * token's log-probability there; when n_top > 0, writes the n_top best alternatives (best
 * first, ties to the lower id) to top.  Both come from the log-softmax of those logits
 * (temperature 1), computed in double.  Returns the token id, or -EINVAL (n_top outside
 * [0, min(SMP_MAX_TOP, n_vocab)]), FD_ERANGE (no token has a finite logit: all banned),
 * -ENOMEM (scratch space is allocated at the first draw that needs it: n_vocab floats
 * unless top-k is set; nothing for greedy). */
int32_t smp_sample(smp_t *s, float *logits, float *logprob, eng_top_t *top, int n_top);
/* As smp_sample with step 1b: allow is a bit set of n_vocab bits (32 per word, LSB first;
 * NULL: every token).  Alternatives in top that are banned have logprob -inf (when fewer
 * than n_top tokens are allowed).  FD_ERANGE when no allowed token has a finite logit. */
int32_t smp_sample_masked(smp_t *s, float *logits, const uint32_t *allow, float *logprob,
                          eng_top_t *top, int n_top);

/* The log-probability of token tok under the model's own distribution: the log-softmax of
 * the raw logits at temperature 1, before any bias, penalty, mask or truncation (what vLLM
 * reports for prompt tokens, and what a perplexity needs).  *rank: 1 + the number of tokens
 * with a higher logit.  n_top alternatives as smp_sample gives them.  The logits are
 * cleaned as smp_sample cleans them (NaN -> -inf, +inf -> FLT_MAX), nothing else changes.
 * Returns 0, -EINVAL (tok outside the vocabulary, n_top out of range), FD_ERANGE (no
 * finite logit), -ENOMEM. */
int smp_logprobs(smp_t *s, float *logits, int32_t tok, float *logprob, int *rank,
                 eng_top_t *top, int n_top);

/* The sampler's exp kernel, for its test: y[i] = e^x[i] for x[i] <= 0 (relative error about
 * 1e-7; below -87 a value under 2e-38; -inf gives 0).  Any thread. */
void smp_exp(const float *x, float *y, int n);

#endif
