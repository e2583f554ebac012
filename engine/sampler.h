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
 * Temperature first, then truncation, as vLLM and HF transformers do.
 *
 * llama.cpp's other samplers, and its chain order (eng_sampling_t.order, llama-server's
 * "samplers"), run on a candidate list as llama.cpp's chain does (llama-sampling.cpp's
 * definitions; our own code).  They are used when any of them is on, an order is given or
 * post_probs asks for the chain's distribution; fusiond's default chain is then
 *   penalties, dry, temperature, top_n_sigma, top_k, typ_p, top_p, min_p, xtc
 * (steps 2-7 above with the new ones where llama.cpp puts them relative to each other),
 * so a request that sets none of them samples as before.  Each step, on what is left:
 *   penalties:   steps 2-3 above.
 *   dry:         DRY ("don't repeat yourself") over the last dry_penalty_last_n tokens of
 *                the context (-1: all of it; 0: off): when the context ends with a sequence
 *                of len >= dry_allowed_length tokens that also occurs earlier, the token that
 *                followed that earlier occurrence loses dry_multiplier * dry_base^(len -
 *                dry_allowed_length) from its logit (the longest such len per token; the
 *                exponent is capped so the power stays finite).  A repeat does not reach
 *                back across a sequence breaker (each breaker string is matched as llama.cpp
 *                does: any token whose text holds it, or a token that ends with its start
 *                followed by the tokenization of its rest), and a token that alone holds a
 *                breaker is never penalized.
 *   temperature: logits / T; with dynatemp_range d > 0, T' = lo + (hi - lo) * (H / ln n)^
 *                dynatemp_exponent, lo = max(0, T - d), hi = T + d, H the entropy of the
 *                candidates' softmax, n their count (n <= 1: unchanged).
 *   top_n_sigma: keeps logits >= max - top_n_sigma * sigma (sigma: the population standard
 *                deviation of the finite candidate logits).
 *   top_k, top_p, min_p: as steps 5-7, on the candidates' softmax at their current scale.
 *   typ_p:       locally typical: sorts by |-ln p - H| and keeps the shortest prefix whose
 *                mass exceeds typical_p (strictly).
 *   xtc:         with probability xtc_probability (one draw of the request's generator),
 *                removes every candidate whose probability is >= xtc_threshold except the
 *                least probable of them (nothing when fewer than two reach it).
 * Mirostat (1 or 2) replaces the chain with temperature, then Mirostat (penalties and the
 * other samplers do not run, as in llama.cpp), with mu = 2 * tau at the start:
 *   v1: s = the Zipf exponent fitted to the best 100 probabilities, k = ((s-1) 2^mu /
 *       (1 - V^(1-s)))^(1/s), top-k by max(k, 1);  v2: keeps the best-first prefix of
 *       candidates whose surprise -log2 p <= mu (at least one);
 *   then the draw, and mu -= eta * (-log2 p(chosen) - tau), p renormalized over the kept.
 * The last step is one draw from the survivors in proportion to their probabilities.
 * Temperature 0 stays greedy: the arg max after bias, mask, penalties and DRY (whatever
 * else the chain holds does not run). */
#ifndef FD_SAMPLER_H
#define FD_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct smp smp_t;

#define SMP_MAX_TOP 20

/* The chain's steps (eng_sampling_t.order), under llama.cpp's names. */
enum smp_step {
    SMP_PENALTIES = 1, SMP_DRY, SMP_TOP_N_SIGMA, SMP_TOP_K, SMP_TYPICAL, SMP_TOP_P, SMP_MIN_P,
    SMP_XTC, SMP_TEMPERATURE,
};
#define SMP_MAX_ORDER 16
#define SMP_MAX_BREAKERS 64     /* DRY sequence breakers, each at most 40 bytes as llama.cpp */
#define SMP_BREAKER_LEN 40

/* The step named name ("penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p",
 * "min_p", "xtc", "temperature": llama-server's names, or llama.cpp's other spellings
 * "top-k", "top-p", "nucleus", "typical_p", "typical", "typ-p", "typ", "min-p", "temp",
 * "top-n-sigma"), or by its letter (e d s k y p m x t); 0 when none.  smp_step_name: the
 * name, NULL for a bad step.  Any thread. */
int smp_step_from_name(const char *name);
int smp_step_from_char(char c);
const char *smp_step_name(int step);
/* The chain p runs (p->order, or the default above; Mirostat's is temperature alone, the
 * Mirostat step having no name): writes up to SMP_MAX_ORDER steps, returns how many. */
int smp_chain_order(const eng_sampling_t *p, uint8_t *order);

/* Sets llama.cpp's secondary values of the samplers that are off (dynatemp_exponent 1,
 * xtc_threshold 0.1, dry_base 1.75, dry_allowed_length 2, dry_penalty_last_n -1,
 * mirostat_tau 5, mirostat_eta 0.1), leaving every sampler off. */
void smp_default_extras(eng_sampling_t *s);
/* Copies params (including the logit bias list).  -EINVAL on out-of-range values:
 * temperature < 0 or not finite, top_p outside (0, 1], top_k < 0, min_p outside [0, 1],
 * presence/frequency penalties outside [-2, 2], repeat_penalty <= 0 or not finite,
 * repeat_last_n < -1, n_probs outside [-1, SMP_MAX_TOP], a logit-bias token outside
 * [0, n_vocab) or a bias that is NaN or +inf, n_vocab < 1; typical_p outside [0, 1],
 * dynatemp_range < 0, dynatemp_exponent < 0 (or any not finite), xtc_probability or
 * xtc_threshold outside [0, 1], top_n_sigma not finite, dry_multiplier < 0, dry_base < 1,
 * dry_allowed_length < 0, dry_penalty_last_n < -1, more than SMP_MAX_BREAKERS breakers or
 * an empty one, mirostat not 0, 1 or 2, mirostat_tau < 0, mirostat_eta outside [0, 1], an
 * order of more than SMP_MAX_ORDER steps or an unknown step.  -ENOMEM. */
int smp_create(smp_t **out, const eng_sampling_t *params, int n_vocab);
/* The same checks: 0, or -EINVAL with a message naming the field in err. */
int smp_check_params(const eng_sampling_t *p, int n_vocab, char *err, size_t errlen);
void smp_free(smp_t *s);
/* The seed in use: params->seed when has_seed, else the one drawn from the system (so a
 * caller can report it and replay the request). */
uint64_t smp_seed(const smp_t *s);
/* One DRY sequence breaker: head followed by n_tail tokens (the engine matches each breaker
 * string in its vocabulary and adds what it finds; without any, DRY runs without breakers).
 * The same sequence twice is kept once.  0, -EINVAL (head outside the vocabulary), -ENOMEM. */
int smp_add_breaker(smp_t *s, int32_t head, const int32_t *tail, int n_tail);
/* The chain runs its plain reference steps (full sorts) instead of the fast ones (tests). */
void smp_set_reference(smp_t *s, bool on);
/* Mirostat's mu now (2 * tau before the first draw). */
float smp_mirostat_mu(const smp_t *s);
/* The distribution the chain leaves for logits (a copy is used; the generator advances by
 * XTC's draw, Mirostat's mu does not change): its survivors, most probable first (ties to
 * the lower id), at most cap of them, with their probabilities.  Returns their number (all
 * of them, even beyond cap), FD_ERANGE (every logit banned), -ENOMEM.  Temperature 0: the
 * arg max alone, probability 1.  For tests and post_probs. */
int smp_dist(smp_t *s, const float *logits, int32_t *ids, double *probs, int cap);
/* post_probs: the number of survivors of the last draw (top holds at most that many). */
int smp_post_count(const smp_t *s);
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
