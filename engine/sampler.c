/* sampler.c: the token sampler (see sampler.h for the pipeline and its order).
 *
 * Cost per call for a vocabulary of V: one pass to clean the logits and find the maximum,
 * O(distinct context tokens) for the penalties, and then
 *   greedy:              nothing more;
 *   top-k (k small):     one pass through a k-entry heap (most logits fail the first
 *                        comparison), then a sort of k entries;
 *   top-p without top-k: one exp pass for the normalizer, then a heap selection of the best
 *                        m that grows (x8) until the prefix holds top_p of the mass; peaked
 *                        distributions stop at m = 64;
 *   otherwise:           two passes (normalizer, then the walk to the drawn point).
 * No full sort of the vocabulary unless a flat distribution forces top-p to it.
 * The token history for penalties is a small open-addressing hash of distinct tokens (the
 * context holds far fewer distinct tokens than a 150k vocabulary), with a ring buffer of the
 * last repeat_last_n tokens for the repetition window. */
#include "engine/sampler.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/fd.h"

typedef struct cand {
    float logit;
    int32_t id;
    float w;                    /* exp((logit - max) / T) once computed */
} cand_t;

struct smp {
    eng_sampling_t p;
    eng_logit_bias_t *bias;     /* own copy of p.logit_bias */
    int n_vocab;
    uint64_t seed;
    uint64_t rng[4];            /* xoshiro256** state */

    /* distinct tokens seen: token, times generated, occurrences in the repetition window */
    int32_t *h_tok;
    int32_t *h_gen;
    int32_t *h_win;
    int h_n, h_cap;
    int32_t *h_tab;             /* 2 * h_cap slots (power of two): entry index + 1, 0 = empty */
    int h_tab_cap;

    int32_t *ring;              /* the last repeat_last_n tokens (repeat_last_n > 0) */
    int ring_len, ring_head;

    cand_t *cand;               /* scratch, grown on demand (top-k, the top-p bin, top-N) */
    int cand_cap;
    float *w;                   /* n_vocab weights, allocated at the first draw that needs
                                   them (never for greedy or top-k) */
    double *bsum;               /* walk's block sums, with w */

    /* the chain (llama.cpp's samplers; see sampler.h) */
    int chain;                  /* the chain runs (else the fast path above) */
    uint8_t order[SMP_MAX_ORDER];
    int n_order;
    char **brk;                 /* own copies of p.dry_breakers */
    cand_t *cc;                 /* the candidates: n_vocab entries */
    cand_t *tmp;                /* top-k's heap */
    int32_t *pos;               /* n_vocab entries, -1 except while a step maps tokens */
    int n_post;                 /* survivors of the last draw */
    float mu;                   /* Mirostat */
    bool reference;             /* the chain's plain reference steps (smp_set_reference) */
    float *fw;                  /* the fast softmax's scratch: 2 * n_vocab floats */
    int32_t *ctx;               /* DRY: every token of the context, in order */
    int ctx_n, ctx_cap;
    struct brk { int32_t head; int off, len; } *br; /* breakers by head; tails in br_tail */
    int n_br, br_cap;
    int32_t *br_tail;
    int n_tail, tail_cap;
    int32_t *dry_tok;           /* the tokens DRY penalizes this draw, and by how much */
    float *dry_pen;
    int n_dry;
    int32_t *z;                 /* DRY's Z-array, ctx_cap entries */
};

/* ---- generator: splitmix64 seeds xoshiro256** ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t r = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(smp_t *s)
{
    return (double)(xoshiro_next(s->rng) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t system_seed(const void *salt)
{
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v)
        return v;
    /* No entropy yet (early boot): the clock and an address still differ per request. */
    uint64_t x = fd_now_ns() ^ (uint64_t)(uintptr_t)salt;
    return splitmix64(&x);
}

/* ---- parameters ---- */

#define BAD(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

int smp_check_params(const eng_sampling_t *p, int n_vocab, char *err, size_t errlen)
{
    if (n_vocab < 1)
        return BAD("vocabulary of %d tokens", n_vocab);
    if (!isfinite(p->temperature) || p->temperature < 0)
        return BAD("temperature %g: must be >= 0", (double)p->temperature);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return BAD("top_p %g: must be in (0, 1]", (double)p->top_p);
    if (p->top_k < 0)
        return BAD("top_k %d: must be >= 0", p->top_k);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return BAD("min_p %g: must be in [0, 1]", (double)p->min_p);
    if (!(p->presence_penalty >= -2 && p->presence_penalty <= 2))
        return BAD("presence_penalty %g: must be in [-2, 2]", (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2 && p->frequency_penalty <= 2))
        return BAD("frequency_penalty %g: must be in [-2, 2]", (double)p->frequency_penalty);
    if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0)
        return BAD("repeat_penalty %g: must be > 0", (double)p->repeat_penalty);
    if (p->repeat_last_n < -1)
        return BAD("repeat_last_n %d: must be >= -1", p->repeat_last_n);
    if (p->n_probs < -1 || p->n_probs > SMP_MAX_TOP)
        return BAD("logprobs %d: must be in [0, %d]", p->n_probs, SMP_MAX_TOP);
    if (!(p->typical_p >= 0 && p->typical_p <= 1))
        return BAD("typical_p %g: must be in [0, 1]", (double)p->typical_p);
    if (!(p->dynatemp_range >= 0) || !isfinite(p->dynatemp_range))
        return BAD("dynatemp_range %g: must be >= 0", (double)p->dynatemp_range);
    if (!(p->dynatemp_exponent >= 0) || !isfinite(p->dynatemp_exponent))
        return BAD("dynatemp_exponent %g: must be >= 0", (double)p->dynatemp_exponent);
    if (!(p->xtc_probability >= 0 && p->xtc_probability <= 1))
        return BAD("xtc_probability %g: must be in [0, 1]", (double)p->xtc_probability);
    if (!(p->xtc_threshold >= 0 && p->xtc_threshold <= 1))
        return BAD("xtc_threshold %g: must be in [0, 1]", (double)p->xtc_threshold);
    if (!isfinite(p->top_n_sigma))
        return BAD("top_n_sigma %g: must be a finite number", (double)p->top_n_sigma);
    if (!(p->dry_multiplier >= 0) || !isfinite(p->dry_multiplier))
        return BAD("dry_multiplier %g: must be >= 0", (double)p->dry_multiplier);
    if (p->dry_multiplier > 0 && (!(p->dry_base >= 1) || !isfinite(p->dry_base)))
        return BAD("dry_base %g: must be >= 1", (double)p->dry_base);
    if (p->dry_allowed_length < 0)
        return BAD("dry_allowed_length %d: must be >= 0", p->dry_allowed_length);
    if (p->dry_penalty_last_n < -1)
        return BAD("dry_penalty_last_n %d: must be >= -1", p->dry_penalty_last_n);
    if (p->n_dry_breakers < 0 || p->n_dry_breakers > SMP_MAX_BREAKERS ||
        (p->n_dry_breakers > 0 && !p->dry_breakers))
        return BAD("dry_sequence_breakers: %d of them (at most %d)", p->n_dry_breakers,
                   SMP_MAX_BREAKERS);
    for (int i = 0; i < p->n_dry_breakers; i++)
        if (!p->dry_breakers[i] || !p->dry_breakers[i][0])
            return BAD("dry_sequence_breakers: breaker %d is empty", i);
    if (p->mirostat < 0 || p->mirostat > 2)
        return BAD("mirostat %d: must be 0, 1 or 2", p->mirostat);
    if (p->mirostat && (!(p->mirostat_tau >= 0) || !isfinite(p->mirostat_tau)))
        return BAD("mirostat_tau %g: must be >= 0", (double)p->mirostat_tau);
    if (p->mirostat && !(p->mirostat_eta >= 0 && p->mirostat_eta <= 1))
        return BAD("mirostat_eta %g: must be in [0, 1]", (double)p->mirostat_eta);
    if (p->n_order < 0 || p->n_order > SMP_MAX_ORDER)
        return BAD("samplers: %d steps (at most %d)", p->n_order, SMP_MAX_ORDER);
    for (int i = 0; i < p->n_order; i++)
        if (!smp_step_name(p->order[i]))
            return BAD("samplers: step %d is not a sampler", i);
    if (p->n_logit_bias < 0 || (p->n_logit_bias > 0 && !p->logit_bias))
        return BAD("logit_bias: %d entries", p->n_logit_bias);
    for (int i = 0; i < p->n_logit_bias; i++) {
        const eng_logit_bias_t *b = &p->logit_bias[i];
        if (b->token < 0 || b->token >= n_vocab)
            return BAD("logit_bias: token %d outside the vocabulary (0..%d)", (int)b->token,
                       n_vocab - 1);
        if (isnan(b->bias) || b->bias == INFINITY)
            return BAD("logit_bias: token %d has bias %g", (int)b->token, (double)b->bias);
    }
    return 0;
}

#undef BAD

int smp_create(smp_t **out, const eng_sampling_t *params, int n_vocab)
{
    *out = NULL;
    char err[8];
    if (!params || smp_check_params(params, n_vocab, err, sizeof err) < 0)
        return -EINVAL;
    smp_t *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->p = *params;
    s->n_vocab = n_vocab;
    if (params->n_logit_bias > 0) {
        s->bias = malloc((size_t)params->n_logit_bias * sizeof *s->bias);
        if (!s->bias)
            goto fail;
        memcpy(s->bias, params->logit_bias, (size_t)params->n_logit_bias * sizeof *s->bias);
    }
    s->p.logit_bias = s->bias;
    s->p.grammar = NULL;        /* the engine's: the sampler only sees its mask */
    s->p.dry_breakers = NULL;
    if (params->n_dry_breakers > 0) {
        if (!(s->brk = calloc((size_t)params->n_dry_breakers, sizeof *s->brk)))
            goto fail;
        for (int i = 0; i < params->n_dry_breakers; i++)
            if (!(s->brk[i] = strdup(params->dry_breakers[i])))
                goto fail;
    }
    s->n_order = smp_chain_order(params, s->order);
    const eng_sampling_t *q = params;
    s->chain = q->n_order > 0 || (q->typical_p > 0 && q->typical_p < 1) ||
               q->dynatemp_range > 0 || q->xtc_probability > 0 || q->top_n_sigma > 0 ||
               q->dry_multiplier > 0 || q->mirostat || q->post_probs;
    s->mu = 2 * q->mirostat_tau;
    if (s->chain) {
        s->cc = malloc((size_t)n_vocab * sizeof *s->cc);
        s->tmp = malloc((size_t)n_vocab * sizeof *s->tmp);
        s->pos = malloc((size_t)n_vocab * sizeof *s->pos);
        s->fw = malloc((size_t)n_vocab * 2 * sizeof *s->fw);
        if (!s->cc || !s->tmp || !s->pos || !s->fw)
            goto fail;
        for (int i = 0; i < n_vocab; i++)
            s->pos[i] = -1;
    }
    if (params->repeat_last_n > 0) {
        s->ring = malloc((size_t)params->repeat_last_n * sizeof *s->ring);
        if (!s->ring)
            goto fail;
    }
    s->seed = params->has_seed ? params->seed : system_seed(s);
    uint64_t x = s->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return 0;
fail:
    smp_free(s);
    return -ENOMEM;
}

void smp_free(smp_t *s)
{
    if (!s)
        return;
    free(s->cand);
    free(s->w);
    free(s->bsum);
    free(s->ring);
    free(s->h_tab);
    free(s->h_tok);
    free(s->h_gen);
    free(s->h_win);
    free(s->bias);
    if (s->brk)
        for (int i = 0; i < s->p.n_dry_breakers; i++)
            free(s->brk[i]);
    free(s->brk);
    free(s->cc);
    free(s->tmp);
    free(s->pos);
    free(s->fw);
    free(s->ctx);
    free(s->br);
    free(s->br_tail);
    free(s->dry_tok);
    free(s->dry_pen);
    free(s->z);
    free(s);
}

uint64_t smp_seed(const smp_t *s)
{
    return s->seed;
}

/* ---- token history ---- */

static inline uint32_t hash_tok(int32_t t)
{
    return (uint32_t)t * 2654435761u;
}

static void hist_insert_index(smp_t *s, int idx)
{
    uint32_t mask = (uint32_t)s->h_tab_cap - 1;
    uint32_t i = hash_tok(s->h_tok[idx]) & mask;
    while (s->h_tab[i])
        i = (i + 1) & mask;
    s->h_tab[i] = idx + 1;
}

/* Resizes the int32 array *p to cap entries (its contents kept); 0 or -ENOMEM (*p as it
 * was). */
static int grow_i32(int32_t **p, int cap)
{
    int32_t *q = realloc(*p, (size_t)cap * sizeof *q);
    if (!q)
        return -ENOMEM;
    *p = q;
    return 0;
}

/* Index of token's entry, created when absent; -ENOMEM. */
static int hist_entry(smp_t *s, int32_t token)
{
    if (s->h_tab_cap) {
        uint32_t mask = (uint32_t)s->h_tab_cap - 1;
        for (uint32_t i = hash_tok(token) & mask; s->h_tab[i]; i = (i + 1) & mask)
            if (s->h_tok[s->h_tab[i] - 1] == token)
                return s->h_tab[i] - 1;
    }
    if (s->h_n == s->h_cap) {
        int cap = s->h_cap ? s->h_cap * 2 : 64;
        if (grow_i32(&s->h_tok, cap) || grow_i32(&s->h_gen, cap) || grow_i32(&s->h_win, cap))
            return -ENOMEM;
        int32_t *tab = calloc((size_t)cap * 2, sizeof *tab);
        if (!tab)
            return -ENOMEM;
        free(s->h_tab);
        s->h_tab = tab;
        s->h_tab_cap = cap * 2;
        s->h_cap = cap;
        for (int i = 0; i < s->h_n; i++)
            hist_insert_index(s, i);
    }
    int idx = s->h_n++;
    s->h_tok[idx] = token;
    s->h_gen[idx] = 0;
    s->h_win[idx] = 0;
    hist_insert_index(s, idx);
    return idx;
}

int smp_accept(smp_t *s, int32_t token, int generated)
{
    if (token < 0 || token >= s->n_vocab)
        return -EINVAL;
    if (s->p.dry_multiplier > 0 && s->p.dry_penalty_last_n != 0) {
        if (s->ctx_n == s->ctx_cap) {
            int cap = s->ctx_cap ? s->ctx_cap * 2 : 256;
            if (grow_i32(&s->ctx, cap) || grow_i32(&s->z, cap))
                return -ENOMEM;
            s->ctx_cap = cap;
        }
        s->ctx[s->ctx_n++] = token;
    }
    int idx = hist_entry(s, token);
    if (idx < 0)
        return idx;
    if (generated)
        s->h_gen[idx]++;
    int n = s->p.repeat_last_n;
    if (n < 0) {
        s->h_win[idx]++;
    } else if (n > 0) {
        if (s->ring_len == n) {
            /* the oldest token leaves the window; its entry exists since it was counted */
            int old = hist_entry(s, s->ring[s->ring_head]);
            s->h_win[old]--;
            s->ring[s->ring_head] = token;
            s->ring_head = (s->ring_head + 1) % n;
        } else {
            s->ring[(s->ring_head + s->ring_len) % n] = token;
            s->ring_len++;
        }
        s->h_win[idx]++;
    }
    return 0;
}

/* ---- weights: exp(x) for x <= 0 ----
 * The sampler's one costly operation is an exp per vocabulary entry.  smp_exp runs Cephes'
 * expf (range reduction by ln 2, a degree-5 polynomial: relative error about 1e-7) four
 * lanes at a time with the compiler's generic vectors (SSE2 on x86-64, NEON on arm64, plain
 * code elsewhere); the reference is libm's expf (tests/test_sampler.c compares them).
 * Below -87 it returns a value under 2e-38 instead of a denormal or 0: such a weight is
 * never drawn (the draw's resolution is 2^-53 of the total, which is >= 1). */
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));
#define F4(c) ((f4){ (c), (c), (c), (c) })

static inline f4 exp4(f4 x)
{
    const i4 dead = x == F4(-INFINITY);
    const i4 low = x < F4(-87.0f);
    x = (f4)(((i4)x & ~low) | ((i4)F4(-87.0f) & low));
    /* n = round(x / ln 2), by the 1.5 * 2^23 trick (exact for |n| < 2^22) */
    f4 n = (x * F4(1.44269504088896341f) + F4(12582912.0f)) - F4(12582912.0f);
    f4 r = x - n * F4(0.693359375f);
    r = r - n * F4(-2.12194440e-4f);
    f4 p = F4(1.9875691500e-4f);
    p = p * r + F4(1.3981999507e-3f);
    p = p * r + F4(8.3334519073e-3f);
    p = p * r + F4(4.1665795894e-2f);
    p = p * r + F4(1.6666665459e-1f);
    p = p * r + F4(5.0000001201e-1f);
    p = p * (r * r) + r + F4(1.0f);
    i4 e = (__builtin_convertvector(n, i4) + 127) << 23;
    f4 y = p * (f4)e;
    return (f4)((i4)y & ~dead);
}

/* w[i] = exp((l[i] - max) * inv_t), i < n, or 0 where that is below floor (min-p) or
 * l[i] is -inf. */
static inline f4 weight4(f4 x, float max, float inv_t, float floor)
{
    f4 y = exp4((x - F4(max)) * F4(inv_t));
    return (f4)((i4)y & (y >= F4(floor)));
}

static void weights(const float *l, int n, float max, float inv_t, float floor, float *w)
{
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        f4 x;
        memcpy(&x, l + i, sizeof x);
        f4 y = weight4(x, max, inv_t, floor);
        memcpy(w + i, &y, sizeof y);
    }
    if (i < n) {
        float t[4] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY };
        memcpy(t, l + i, (size_t)(n - i) * sizeof *t);
        f4 x;
        memcpy(&x, t, sizeof x);
        f4 y = weight4(x, max, inv_t, floor);
        memcpy(w + i, &y, (size_t)(n - i) * sizeof *w);
    }
}

static float weight1(float l, float max, float inv_t)
{
    float w;
    weights(&l, 1, max, inv_t, 0.0f, &w);
    return w;
}

void smp_exp(const float *x, float *y, int n)
{
    weights(x, n, 0.0f, 1.0f, 0.0f, y);
}

typedef double d4 __attribute__((vector_size(32)));

/* Sum of w[0..n) in double, over four lanes: no add waits on the one before it. */
static double sum_d(const float *w, int n)
{
    d4 acc = { 0, 0, 0, 0 };
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        f4 x;
        memcpy(&x, w + i, sizeof x);
        acc += __builtin_convertvector(x, d4);
    }
    double t = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (; i < n; i++)
        t += w[i];
    return t;
}

static inline int any4(i4 m)
{
    return (m[0] | m[1] | m[2] | m[3]) != 0;
}

/* ---- selection ---- */

static inline int cand_better(cand_t a, cand_t b)
{
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

static int cand_cmp(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

typedef int (*cand_before_fn)(cand_t a, cand_t b);

static int before_logit(cand_t a, cand_t b)
{
    return cand_better(a, b);
}

/* Heaps on an order `before`, its root the entry that comes last (the worst one kept). */
static inline void heap_down(cand_t *h, int n, int i, cand_before_fn before)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && before(h[w], h[l]))
            w = l;
        if (r < n && before(h[w], h[r]))
            w = r;
        if (w == i)
            return;
        cand_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static inline void heap_up(cand_t *h, int i, cand_before_fn before)
{
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!before(h[p], h[i]))
            return;
        cand_t t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

/* Offers c to a heap of *m entries that keeps the first cap (> 0) in the order `before`. */
static inline void heap_offer(cand_t *h, int *m, int cap, cand_t c, cand_before_fn before)
{
    if (*m < cap) {
        h[*m] = c;
        heap_up(h, (*m)++, before);
    } else if (before(c, h[0])) {
        h[0] = c;
        heap_down(h, *m, 0, before);
    }
}

/* Sorts a heap of m entries in place into the order `before` (first first). */
static inline void heap_drain(cand_t *h, int m, cand_before_fn before)
{
    for (int end = m - 1; end > 0; end--) {
        cand_t t = h[0];
        h[0] = h[end];
        h[end] = t;
        heap_down(h, end, 0, before);
    }
}

/* Writes the k best entries of x (best first; -inf entries only when keep_neg_inf) to out
 * and returns how many there were. */
static int select_top(const float *x, int n, int k, int keep_neg_inf, cand_t *out)
{
    int m = 0;
    if (k <= 0)
        return 0;
    for (int i = 0; i < n; i++) {
        /* once the heap is full, skip four at a time while none beats its worst: the scan
         * goes in id order, so an equal logit later on never does */
        if (m == k && (i & 3) == 0) {
            while (i + 4 <= n) {
                f4 v;
                memcpy(&v, x + i, sizeof v);
                if (any4(v > F4(out[0].logit)))
                    break;
                i += 4;
            }
            if (i >= n)
                break;
        }
        cand_t c = { x[i], i, 0 };
        if (!keep_neg_inf && c.logit == -INFINITY)
            continue;
        heap_offer(out, &m, k, c, before_logit);
    }
    heap_drain(out, m, before_logit);
    return m;
}

static int cand_reserve(smp_t *s, int n)
{
    if (n <= s->cand_cap)
        return 0;
    int cap = FD_MAX(n, FD_MIN(s->n_vocab, FD_MAX(64, s->cand_cap * 2)));
    cand_t *c = realloc(s->cand, (size_t)cap * sizeof *c);
    if (!c)
        return -ENOMEM;
    s->cand = c;
    s->cand_cap = cap;
    return 0;
}

/* ---- sampling ---- */

/* Step 1 and 1b of the pipeline (sparse: only the biased and banned tokens). */
static void apply_bias_mask(smp_t *s, float *logits, const uint32_t *allow)
{
    for (int i = 0; i < s->p.n_logit_bias; i++) {
        const eng_logit_bias_t *b = &s->bias[i];
        if (b->bias <= -100)
            logits[b->token] = -INFINITY;
        else
            logits[b->token] += b->bias;
    }
    if (allow) {
        for (int w = 0; w * 32 < s->n_vocab; w++) {
            uint32_t ban = ~allow[w];
            while (ban) {
                int i = w * 32 + __builtin_ctz(ban);
                ban &= ban - 1;
                if (i >= s->n_vocab)
                    break;
                logits[i] = -INFINITY;
            }
        }
    }
}

/* Steps 2-3 of the pipeline on logits indexed by token (sparse: only the seen tokens). */
static void apply_penalties(smp_t *s, float *logits)
{
    const float rp = s->p.repeat_penalty;
    const float fp = s->p.frequency_penalty, pp = s->p.presence_penalty;
    const int do_rep = rp != 1.0f && s->p.repeat_last_n != 0;
    const int do_pf = fp != 0.0f || pp != 0.0f;
    if (!do_rep && !do_pf)
        return;
    for (int i = 0; i < s->h_n; i++) {
        float *l = &logits[s->h_tok[i]];
        if (do_rep && s->h_win[i] > 0)
            *l = *l > 0 ? *l / rp : *l * rp;
        if (do_pf && s->h_gen[i] > 0)
            *l -= (float)s->h_gen[i] * fp + pp;
    }
}

/* Log-sum-exp of the logits (max is their maximum, finite), summed in double. */
static double log_sum_exp(const float *logits, int n, float max)
{
    float w[256];
    double sum = 0;
    for (int i = 0; i < n; i += 256) {
        int m = FD_MIN(256, n - i);
        weights(logits + i, m, max, 1.0f, 0.0f, w);
        sum += sum_d(w, m);
    }
    return (double)max + log(sum);
}

/* Top-p without top-k buckets z = (logit - max) / T into SMP_BINS bins of width
 * 1 / SMP_BIN_SCALE (the last one takes everything below), sums each bin's mass, finds the
 * bin where the best-first cumulative mass crosses top_p, and sorts only that bin. */
#define SMP_BINS 1024
#define SMP_TOP_P_FIRST 64
#define SMP_BIN_SCALE 32.0f

static inline int z_bin(float z)
{
    float b = -z * SMP_BIN_SCALE;
    return b < (float)(SMP_BINS - 1) ? (int)b : SMP_BINS - 1;
}

/* One draw in proportion to the weights w[0..V) (0: not a survivor), in id order, then the
 * n_extra entries of extra.  Sums of blocks of SMP_WALK_BLOCK weights find the block of the
 * drawn point; only that block is walked one weight at a time. */
#define SMP_WALK_BLOCK 256

static int32_t walk(smp_t *s, const float *w, int V, const cand_t *extra, int n_extra,
                    double u)
{
    const int nb = (V + SMP_WALK_BLOCK - 1) / SMP_WALK_BLOCK;
    double total = 0;
    for (int b = 0; b < nb; b++) {
        int i0 = b * SMP_WALK_BLOCK;
        s->bsum[b] = sum_d(w + i0, FD_MIN(SMP_WALK_BLOCK, V - i0));
        total += s->bsum[b];
    }
    for (int i = 0; i < n_extra; i++)
        total += extra[i].w;
    const double target = u * total;
    double cum = 0;
    int b = 0;
    while (b < nb && cum + s->bsum[b] <= target)
        cum += s->bsum[b++];
    /* rounding (the block sums add in another order) may carry past the block found */
    for (int i = b * SMP_WALK_BLOCK; i < V; i++) {
        cum += w[i];
        if (cum > target && w[i] > 0)
            return i;
    }
    for (int i = 0; i < n_extra; i++) {
        cum += extra[i].w;
        if (cum > target)
            return extra[i].id;
    }
    if (n_extra > 0)
        return extra[n_extra - 1].id;
    for (int i = V - 1; i >= 0; i--)
        if (w[i] > 0)
            return i;
    return -1;
}

/* Draws from the survivors of top-k / top-p / min-p at temperature T > 0.  A survivor's
 * weight is w = exp(z), z = (logit - max) / T, so the best token has w = 1 and min-p keeps
 * w >= min_p. */
static int32_t sample_dist(smp_t *s, const float *logits, float max)
{
    const int V = s->n_vocab;
    const float inv_t = (float)(1.0 / (double)s->p.temperature);
    const float min_p = s->p.min_p;
    const double top_p = s->p.top_p;
    const int top_k = s->p.top_k < V ? s->p.top_k : 0;
    const double u = rng_uniform(s);

    if (top_k > 0) {
        /* best-first list of k: top-p and min-p each keep a prefix */
        if (cand_reserve(s, top_k) < 0)
            return -ENOMEM;
        cand_t *c = s->cand;
        int n = select_top(logits, V, top_k, 0, c);
        double total = 0;
        for (int i = 0; i < n; i++) {
            c[i].w = weight1(c[i].logit, max, inv_t);
            total += c[i].w;
        }
        if (top_p < 1) {
            double cum = 0;
            int i;
            for (i = 0; i < n - 1; i++) {
                cum += c[i].w;
                if (cum >= top_p * total)
                    break;
            }
            n = i + 1;
        }
        int keep = 1;
        while (keep < n && c[keep].w >= min_p)
            keep++;
        return walk(s, NULL, 0, c, keep, u);
    }

    if (!s->w) {
        s->w = malloc((size_t)V * sizeof *s->w);
        s->bsum = malloc((size_t)(V / SMP_WALK_BLOCK + 1) * sizeof *s->bsum);
        if (!s->w || !s->bsum) {
            free(s->w);
            s->w = NULL;
            return -ENOMEM;
        }
    }
    float *w = s->w;
    if (top_p >= 1) {
        weights(logits, V, max, inv_t, min_p, w);
        return walk(s, w, V, NULL, 0, u);
    }
    weights(logits, V, max, inv_t, 0.0f, w);

    /* a peaked distribution (the usual case) reaches top_p within its best SMP_TOP_P_FIRST:
     * one heap pass finds them */
    const double total_w = sum_d(w, V);
    if (cand_reserve(s, SMP_TOP_P_FIRST) < 0)
        return -ENOMEM;
    int n_first = select_top(logits, V, SMP_TOP_P_FIRST, 0, s->cand);
    double cum_first = 0;
    for (int i = 0; i < n_first; i++) {
        cand_t *c = &s->cand[i];
        c->w = w[c->id];
        cum_first += c->w;
        if (cum_first >= top_p * total_w) {
            int keep = 1;
            while (keep < i + 1 && s->cand[keep].w >= min_p)
                keep++;
            return walk(s, NULL, 0, s->cand, keep, u);
        }
    }

    double mass[SMP_BINS] = { 0 };
    double total = 0;
    for (int i = 0; i < V; i++)
        if (w[i] != 0)
            mass[z_bin((logits[i] - max) * inv_t)] += w[i];
    for (int b = 0; b < SMP_BINS; b++)
        total += mass[b];
    /* the first bin where the best-first mass reaches need; when rounding leaves the sum of
     * the bins short of need, the last non-empty bin, taken whole */
    double need = top_p * total, cum = 0, cum_last = 0;
    int cross = -1, last = 0;
    for (int b = 0; b < SMP_BINS; b++) {
        if (mass[b] == 0)
            continue;
        if (cum + mass[b] >= need) {
            cross = b;
            break;
        }
        last = b;
        cum_last = cum;
        cum += mass[b];
    }
    if (cross < 0) {
        cross = last;
        cum = cum_last;
        need = INFINITY;
    }
    /* the crossing bin, sorted; bins above it survive whole, bins below not at all */
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (w[i] == 0)
            continue;
        int b = z_bin((logits[i] - max) * inv_t);
        if (b == cross)
            n++;
    }
    if (cand_reserve(s, n) < 0)
        return -ENOMEM;
    cand_t *c = s->cand;
    n = 0;
    for (int i = 0; i < V; i++) {
        if (w[i] == 0)
            continue;
        int b = z_bin((logits[i] - max) * inv_t);
        if (b == cross)
            c[n++] = (cand_t){ logits[i], i, w[i] };
        if (b >= cross || w[i] < min_p)
            w[i] = 0;
    }
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    int keep = 0;
    while (keep < n) {
        cum += c[keep].w;
        keep++;
        if (cum >= need)
            break;
    }
    /* min-p keeps a best-first prefix of the sorted part (when cross is bin 0, its first
     * entry is the best token, w = 1) */
    int kept = 0;
    while (kept < keep && c[kept].w >= min_p)
        kept++;
    return walk(s, w, V, c, kept, u);
}

/* NaN becomes -inf and +inf FLT_MAX (so every later difference is a number); returns the
 * arg max (lowest id on ties) and its value, or -1 when every logit is -inf. */
static int32_t clean_argmax(float *l, int V, float *max_out)
{
    f4 m = F4(-INFINITY);
    i4 bad = { 0, 0, 0, 0 };
    int i = 0;
    for (; i + 4 <= V; i += 4) {
        f4 x;
        memcpy(&x, l + i, sizeof x);
        bad |= (x != x) | (x == F4(INFINITY));
        i4 gt = x > m;
        m = (f4)(((i4)x & gt) | ((i4)m & ~gt));
    }
    float max = -INFINITY;
    for (int j = 0; j < 4; j++)
        max = m[j] > max ? m[j] : max;
    for (; i < V; i++) {
        if (isnan(l[i]) || l[i] == INFINITY)
            bad[0] = 1;
        else if (l[i] > max)
            max = l[i];
    }
    if (FD_UNLIKELY(any4(bad))) {
        max = -INFINITY;
        for (i = 0; i < V; i++) {
            if (isnan(l[i]))
                l[i] = -INFINITY;
            else if (l[i] == INFINITY)
                l[i] = FLT_MAX;
            max = l[i] > max ? l[i] : max;
        }
    }
    *max_out = max;
    if (max == -INFINITY)
        return -1;
    for (i = 0; i < V; i++)
        if (l[i] == max)
            return i;
    return -1;
}

/* The n_top best tokens of logits (best first, ties to the lower id) with their
 * log-probabilities, lse being the log of the sum of exp(logits). */
static int fill_top(smp_t *s, const float *logits, double lse, eng_top_t *top, int n_top)
{
    if (cand_reserve(s, n_top) < 0)
        return -ENOMEM;
    select_top(logits, s->n_vocab, n_top, 1, s->cand);
    for (int i = 0; i < n_top; i++) {
        top[i].token = s->cand[i].id;
        top[i].logprob = (float)((double)s->cand[i].logit - lse);
    }
    return 0;
}

/* ---- the chain: llama.cpp's samplers over a candidate list ----
 * The plain reference of each step: one pass (or a sort) over the candidates, written as
 * the definition in sampler.h reads.  Candidates start as the whole vocabulary in id order
 * (banned tokens at -inf, which no step keeps once probabilities are taken); "sorted" says
 * they are best first. */

static const struct {
    char c;
    const char *name;
} step_names[] = {
    [SMP_PENALTIES] = { 'e', "penalties" },   [SMP_DRY] = { 'd', "dry" },
    [SMP_TOP_N_SIGMA] = { 's', "top_n_sigma" }, [SMP_TOP_K] = { 'k', "top_k" },
    [SMP_TYPICAL] = { 'y', "typ_p" },         [SMP_TOP_P] = { 'p', "top_p" },
    [SMP_MIN_P] = { 'm', "min_p" },           [SMP_XTC] = { 'x', "xtc" },
    [SMP_TEMPERATURE] = { 't', "temperature" },
};

int smp_step_from_name(const char *name)
{
    /* llama.cpp's alternative spellings (common_sampler_types_from_names) */
    static const struct { const char *alt; int step; } alts[] = {
        {"top-k", SMP_TOP_K}, {"top-p", SMP_TOP_P}, {"nucleus", SMP_TOP_P},
        {"typical_p", SMP_TYPICAL}, {"typical", SMP_TYPICAL}, {"typ-p", SMP_TYPICAL},
        {"typ", SMP_TYPICAL}, {"min-p", SMP_MIN_P}, {"temp", SMP_TEMPERATURE},
        {"top-n-sigma", SMP_TOP_N_SIGMA},
    };
    for (int i = 1; i < (int)FD_ARRAY_LEN(step_names); i++)
        if (strcmp(name, step_names[i].name) == 0)
            return i;
    for (size_t i = 0; i < FD_ARRAY_LEN(alts); i++)
        if (strcmp(name, alts[i].alt) == 0)
            return alts[i].step;
    return 0;
}

int smp_step_from_char(char c)
{
    for (int i = 1; i < (int)FD_ARRAY_LEN(step_names); i++)
        if (c == step_names[i].c)
            return i;
    return 0;
}

const char *smp_step_name(int step)
{
    return step >= 1 && step < (int)FD_ARRAY_LEN(step_names) ? step_names[step].name : NULL;
}

int smp_chain_order(const eng_sampling_t *p, uint8_t *order)
{
    static const uint8_t def[] = { SMP_PENALTIES, SMP_DRY, SMP_TEMPERATURE, SMP_TOP_N_SIGMA,
                                   SMP_TOP_K, SMP_TYPICAL, SMP_TOP_P, SMP_MIN_P, SMP_XTC };
    if (p->mirostat) {
        order[0] = SMP_TEMPERATURE;
        return 1;
    }
    if (p->n_order > 0) {
        int n = FD_MIN(p->n_order, SMP_MAX_ORDER);
        memcpy(order, p->order, (size_t)n);
        return n;
    }
    memcpy(order, def, sizeof def);
    return (int)sizeof def;
}

void smp_set_reference(smp_t *s, bool on)
{
    s->reference = on;
}

float smp_mirostat_mu(const smp_t *s)
{
    return s->mu;
}

int smp_post_count(const smp_t *s)
{
    return s->n_post;
}

/* -- DRY's breakers -- */

static int brk_cmp(const void *a, const void *b)
{
    const struct brk *x = a, *y = b;
    return (x->head > y->head) - (x->head < y->head);
}

int smp_add_breaker(smp_t *s, int32_t head, const int32_t *tail, int n_tail)
{
    if (head < 0 || head >= s->n_vocab || n_tail < 0)
        return -EINVAL;
    for (int i = 0; i < s->n_br; i++)   /* the same sequence once */
        if (s->br[i].head == head && s->br[i].len == n_tail &&
            (n_tail == 0 || memcmp(s->br_tail + s->br[i].off, tail,
                                   (size_t)n_tail * sizeof *tail) == 0))
            return 0;
    if (s->n_br == s->br_cap) {
        int cap = s->br_cap ? s->br_cap * 2 : 64;
        struct brk *b = realloc(s->br, (size_t)cap * sizeof *b);
        if (!b)
            return -ENOMEM;
        s->br = b;
        s->br_cap = cap;
    }
    if (s->n_tail + n_tail > s->tail_cap) {
        int cap = FD_MAX(s->n_tail + n_tail, s->tail_cap * 2 + 16);
        if (grow_i32(&s->br_tail, cap))
            return -ENOMEM;
        s->tail_cap = cap;
    }
    if (n_tail > 0)
        memcpy(s->br_tail + s->n_tail, tail, (size_t)n_tail * sizeof *tail);
    s->br[s->n_br++] = (struct brk){ head, s->n_tail, n_tail };
    s->n_tail += n_tail;
    /* kept sorted by head for the lookup (insertion sort: breakers are added once) */
    for (int i = s->n_br - 1; i > 0 && brk_cmp(&s->br[i - 1], &s->br[i]) > 0; i--) {
        struct brk t = s->br[i];
        s->br[i] = s->br[i - 1];
        s->br[i - 1] = t;
    }
    return 0;
}

/* The first breaker entry whose head is tok, or -1. */
static int brk_find(const smp_t *s, int32_t tok)
{
    int lo = 0, hi = s->n_br;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (s->br[mid].head < tok)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->n_br && s->br[lo].head == tok ? lo : -1;
}

/* -- DRY's penalties -- */

/* One entry per vocabulary token at most: allocated at the first draw that needs them. */
static int dry_reserve(smp_t *s)
{
    if (!s->dry_tok)
        s->dry_tok = malloc((size_t)s->n_vocab * sizeof *s->dry_tok);
    if (!s->dry_pen)
        s->dry_pen = malloc((size_t)s->n_vocab * sizeof *s->dry_pen);
    return s->dry_tok && s->dry_pen ? 0 : -ENOMEM;
}

/* The longest repeat, for each token that would extend one, of the context's last N tokens
 * (s->dry_tok / dry_pen: the penalties).  Uses pos as a token -> entry map (reset after). */
static int dry_compute(smp_t *s)
{
    const eng_sampling_t *p = &s->p;
    s->n_dry = 0;
    if (!(p->dry_multiplier > 0) || p->dry_base < 1 || p->dry_penalty_last_n == 0)
        return 0;
    int N = p->dry_penalty_last_n < 0 ? s->ctx_n : FD_MIN(p->dry_penalty_last_n, s->ctx_n);
    const int allowed = p->dry_allowed_length;
    if (N <= allowed)
        return 0;
    const int32_t *x = s->ctx + s->ctx_n - N;

    /* a repeat does not reach back across the latest breaker */
    int limit = N;
    for (int i = 0; i < N; i++) {
        int b = brk_find(s, x[N - 1 - i]);
        if (b < 0)
            continue;
        int longest = -1;
        for (; b < s->n_br && s->br[b].head == x[N - 1 - i]; b++) {
            int len = s->br[b].len;
            if (len <= longest || len > i)
                continue;
            const int32_t *t = s->br_tail + s->br[b].off;
            int o = 0;
            while (o < len && t[o] == x[N - i + o])
                o++;
            if (o == len)
                longest = len;
        }
        if (longest >= 0) {
            limit = i - longest;
            break;
        }
    }
    if (limit < allowed)
        return 0;

    /* the Z-array of the reversed window r[j] = x[N-1-j]: z[k] is how many tokens of the
     * context's end also end at x[N-1-k] */
    int32_t *z = s->z;
#define R(j) x[N - 1 - (j)]
    z[0] = N;
    for (int k = 1, l = 0, r = 0; k < N; k++) {
        int v = k < r ? FD_MIN(r - k, z[k - l]) : 0;
        while (k + v < N && R(v) == R(k + v))
            v++;
        z[k] = v;
        if (k + v > r) {
            l = k;
            r = k + v;
        }
    }
#undef R
    int rc = dry_reserve(s);
    if (rc < 0)
        return rc;
    /* the token after each earlier end of a repeat would extend it: the longest per token */
    for (int e = 0; e < N - 1; e++) {
        int len = FD_MIN(z[N - 1 - e], limit);
        if (len < allowed)
            continue;
        int32_t t = x[e + 1];
        int j = s->pos[t];
        if (j < 0) {
            s->pos[t] = j = s->n_dry++;
            s->dry_tok[j] = t;
            s->dry_pen[j] = (float)len;
        } else if (s->dry_pen[j] < (float)len) {
            s->dry_pen[j] = (float)len;
        }
    }
    /* no penalty for a token that is a breaker by itself; the exponent capped so that the
     * power stays a float (ln FLT_MAX = 88.72) */
    int max_exp = p->dry_base > 1.000001f ? (int)(88.7228391f / logf(p->dry_base)) : 0;
    int m = 0;
    for (int j = 0; j < s->n_dry; j++) {
        int32_t t = s->dry_tok[j];
        s->pos[t] = -1;
        bool single = false;
        for (int b = brk_find(s, t); b >= 0 && b < s->n_br && s->br[b].head == t; b++)
            single |= s->br[b].len == 0;
        if (single)
            continue;
        int ex = (int)s->dry_pen[j] - allowed;
        if (max_exp > 0 && ex > max_exp)
            ex = max_exp;
        s->dry_tok[m] = t;
        s->dry_pen[m++] = p->dry_multiplier * powf(p->dry_base, (float)ex);
    }
    s->n_dry = m;
    return 0;
}

/* -- the steps --
 * ref_*: the plain reference of a step (a full sort where the definition sorts); the fast
 * versions beside them select only the best-first prefix a step reads (a heap of m entries,
 * m growing x8) or filter in place, and leave the same survivors with the same
 * probabilities (test_sampler compares the two on random inputs). */

static inline float penalize(const smp_t *s, int h, float l)
{
    const float rp = s->p.repeat_penalty;
    if (rp != 1.0f && s->p.repeat_last_n != 0 && s->h_win[h] > 0)
        l = l > 0 ? l / rp : l * rp;
    if (s->h_gen[h] > 0 && (s->p.frequency_penalty != 0.0f || s->p.presence_penalty != 0.0f))
        l -= (float)s->h_gen[h] * s->p.frequency_penalty + s->p.presence_penalty;
    return l;
}

/* Maps the candidates' tokens to their index in pos (dense: the identity needs none). */
static void pos_map(smp_t *s, const cand_t *c, int n, bool set)
{
    for (int i = 0; i < n; i++)
        s->pos[c[i].id] = set ? i : -1;
}

static void step_penalties(smp_t *s, cand_t *c, int n, bool dense)
{
    if (!dense)
        pos_map(s, c, n, true);
    for (int h = 0; h < s->h_n; h++) {
        int j = dense ? s->h_tok[h] : s->pos[s->h_tok[h]];
        if (j >= 0)
            c[j].logit = penalize(s, h, c[j].logit);
    }
    if (!dense)
        pos_map(s, c, n, false);
}

static void step_dry(smp_t *s, cand_t *c, int n, bool dense)
{
    if (!dense)
        pos_map(s, c, n, true);
    for (int k = 0; k < s->n_dry; k++) {
        int j = dense ? s->dry_tok[k] : s->pos[s->dry_tok[k]];
        if (j >= 0)
            c[j].logit -= s->dry_pen[k];
    }
    if (!dense)
        pos_map(s, c, n, false);
}

/* c[i].w = the softmax of the logits (in double, stored as float; -inf gives 0); returns
 * the entropy when want_h. */
static double softmax(cand_t *c, int n, bool want_h)
{
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        max = c[i].logit > max ? c[i].logit : max;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp((double)c[i].logit - (double)max);
    double h = 0;
    for (int i = 0; i < n; i++) {
        double q = exp((double)c[i].logit - (double)max) / sum;
        c[i].w = (float)q;
        if (want_h && q > 0)
            h -= q * log(q);
    }
    return h;
}

static void sort_best(cand_t *c, int n, bool *sorted)
{
    if (!*sorted)
        qsort(c, (size_t)n, sizeof *c, cand_cmp);
    *sorted = true;
}

/* The k best (best first), by a k-entry heap over the candidates. */
static int step_top_k(smp_t *s, cand_t *c, int n, int k, bool *sorted)
{
    if (k <= 0 || k >= n)
        return n;
    if (!*sorted) {
        cand_t *h = s->tmp;
        int m = 0;
        for (int i = 0; i < n; i++)
            heap_offer(h, &m, k, c[i], before_logit);
        heap_drain(h, m, before_logit);
        memcpy(c, h, (size_t)k * sizeof *c);
        *sorted = true;
    }
    return k;
}

static int ref_top_p(cand_t *c, int n, double top_p, bool *sorted)
{
    if (top_p >= 1)
        return n;
    sort_best(c, n, sorted);
    softmax(c, n, false);
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += c[i].w;
        if (cum >= top_p)
            return i + 1;
    }
    return n;
}

static int ref_min_p(cand_t *c, int n, double min_p, bool *sorted)
{
    if (min_p <= 0)
        return n;
    sort_best(c, n, sorted);
    softmax(c, n, false);
    int keep = 1;
    while (keep < n && (double)c[keep].w >= min_p * (double)c[0].w)
        keep++;
    return keep;
}

static int step_top_n_sigma(cand_t *c, int n, double nsig, bool *sorted)
{
    if (nsig <= 0 || n <= 1)
        return n;
    double max = -INFINITY, sum = 0;
    int cnt = 0;
    for (int i = 0; i < n; i++) {
        if (c[i].logit == -INFINITY)
            continue;
        max = FD_MAX(max, (double)c[i].logit);
        sum += c[i].logit;
        cnt++;
    }
    if (cnt == 0)
        return n;
    double mean = sum / cnt, acc = 0;
    for (int i = 0; i < n; i++)
        if (c[i].logit != -INFINITY)
            acc += ((double)c[i].logit - mean) * ((double)c[i].logit - mean);
    double cut = max - nsig * sqrt(acc / cnt);
    int m = 0;
    for (int i = 0; i < n; i++)
        if ((double)c[i].logit >= cut)
            c[m++] = c[i];
    (void)sorted;               /* order kept */
    return m;
}

static int typ_cmp(const void *a, const void *b)
{
    /* w holds the shifted score here; ties keep the lower id first */
    const cand_t *x = a, *y = b;
    if (x->w != y->w)
        return x->w < y->w ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int ref_typical(cand_t *c, int n, double typ, bool *sorted)
{
    if (typ <= 0 || typ >= 1)
        return n;
    double h = softmax(c, n, true);
    /* w: |-ln p - H| for the sort; the probability is computed again after it */
    for (int i = 0; i < n; i++)
        c[i].w = c[i].w > 0 ? (float)fabs(-log((double)c[i].w) - h) : INFINITY;
    qsort(c, (size_t)n, sizeof *c, typ_cmp);
    softmax(c, n, false);
    double cum = 0;
    int keep = n;
    for (int i = 0; i < n; i++) {
        cum += c[i].w;
        if (cum > typ) {
            keep = i + 1;
            break;
        }
    }
    *sorted = false;
    return keep;
}

static int ref_xtc(smp_t *s, cand_t *c, int n, bool *sorted)
{
    const double prob = s->p.xtc_probability, thr = s->p.xtc_threshold;
    if (prob <= 0 || thr > 0.5 || n < 2)
        return n;
    if (rng_uniform(s) >= prob)
        return n;
    sort_best(c, n, sorted);
    softmax(c, n, false);
    int last = 0;
    while (last + 1 < n && c[last + 1].w >= thr)
        last++;
    if (c[0].w < thr || last == 0)
        return n;
    memmove(c, c + last, (size_t)(n - last) * sizeof *c);
    return n - last;
}

static int step_temperature(cand_t *c, int n, const eng_sampling_t *p, bool *sorted)
{
    double t = p->temperature;
    /* Mirostat's temperature is the plain one */
    if (p->dynatemp_range > 0 && !p->mirostat) {
        if (n <= 1)
            return n;
        double lo = FD_MAX(0.0, t - p->dynatemp_range), hi = t + p->dynatemp_range;
        double h = softmax(c, n, true);
        t = lo + (hi - lo) * pow(h / log((double)n), (double)p->dynatemp_exponent);
        if (!(t > 0)) {
            /* a zero temperature keeps the best alone */
            sort_best(c, n, sorted);
            return 1;
        }
    }
    const float inv = (float)(1.0 / t);
    for (int i = 0; i < n; i++)
        c[i].logit *= inv;
    return n;
}

/* Mirostat (v1)'s k: the Zipf exponent estimated from the best 100 probabilities (c best
 * first in its first min(n, 100) entries, w their probabilities), then the k that makes the
 * expected surprise mu; n when that k is not below n. */
static int mirostat1_k(const smp_t *s, const cand_t *c, int n)
{
    const int m = 100;
    double sum_tb = 0, sum_tt = 0;
    for (int i = 0; i < m - 1 && i < n - 1; i++) {
        double ti = log((double)(i + 2) / (double)(i + 1));
        double bi = log((double)c[i].w / (double)c[i + 1].w);
        sum_tb += ti * bi;
        sum_tt += ti * ti;
    }
    double sh = sum_tb / sum_tt, eps = sh - 1;
    double k = pow(eps * pow(2.0, s->mu) / (1 - pow((double)s->n_vocab, -eps)), 1 / sh);
    return isfinite(k) && k < (double)n ? FD_MAX((int)k, 1) : n;
}

/* Mirostat's truncation of c (softmax taken, best first). */
static int ref_mirostat(smp_t *s, cand_t *c, int n, bool *sorted)
{
    sort_best(c, n, sorted);
    softmax(c, n, false);
    if (s->p.mirostat == 2) {
        int keep = 0;
        while (keep < n && -log2((double)c[keep].w) <= s->mu)
            keep++;
        return FD_MAX(keep, 1);
    }
    int ki = mirostat1_k(s, c, n);
    return step_top_k(s, c, n, ki, sorted);
}


/* -- the fast steps -- */

/* The softmax as softmax() computes it, with the sampler's vector exp kernel over the
 * logits gathered into s->fw, and ln p = logit - max - ln(sum) (no log per entry).  *lse
 * (when not NULL): max + ln(sum); returns the entropy when want_h. */
static double softmax_fast(smp_t *s, cand_t *c, int n, bool want_h, double *lse)
{
    float *x = s->fw, *y = s->fw + n;
    float max = -INFINITY;
    for (int i = 0; i < n; i++) {
        x[i] = c[i].logit;
        max = x[i] > max ? x[i] : max;
    }
    if (max == -INFINITY) {
        if (lse)
            *lse = -INFINITY;
        return softmax(c, n, want_h);
    }
    weights(x, n, max, 1.0f, 0.0f, y);
    const double sum = sum_d(y, n), inv = 1.0 / sum, lsum = log(sum);
    double h = 0;
    for (int i = 0; i < n; i++) {
        double q = (double)y[i] * inv;
        c[i].w = (float)q;
        if (want_h && q > 0)
            h -= q * ((double)x[i] - (double)max - lsum);
    }
    if (lse)
        *lse = (double)max + lsum;
    return h;
}

/* typical's order: the shifted score (in w) ascending, ties to the lower id */
static int before_score(cand_t a, cand_t b)
{
    return a.w < b.w || (a.w == b.w && a.id < b.id);
}

/* Whether a fast step may reorder the candidates without dropping any. */
static bool moves(int step)
{
    return step == SMP_TYPICAL || step == SMP_TOP_P;
}

/* Moves the first m (< n) candidates in the order `before` to the front of c, in that
 * order; the others follow in no order.  A heap of m entries (its root: the last kept). */
static void select_prefix(smp_t *s, cand_t *c, int n, int m, cand_before_fn before)
{
    cand_t *h = s->tmp;
    int k = 0;
    for (int i = 0; i < n; i++)
        heap_offer(h, &k, m, c[i], before);
    heap_drain(h, m, before);
    const cand_t last = h[m - 1];
    int r = m;
    for (int i = 0; i < n; i++)
        if (before(last, c[i]))
            h[r++] = c[i];
    memcpy(c, h, (size_t)n * sizeof *c);
}

#define SMP_PREFIX_FIRST 64

static int fast_top_p(smp_t *s, cand_t *c, int n, double top_p, bool *sorted)
{
    if (top_p >= 1)
        return n;
    softmax_fast(s, c, n, false, NULL);
    for (int m = SMP_PREFIX_FIRST; !*sorted; m *= 8) {
        if (m >= n) {
            sort_best(c, n, sorted);
            break;
        }
        select_prefix(s, c, n, m, before_logit);
        double cum = 0;
        for (int i = 0; i < m; i++) {
            cum += c[i].w;
            if (cum >= top_p) {
                *sorted = true;     /* the kept prefix is best first */
                return i + 1;
            }
        }
    }
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += c[i].w;
        if (cum >= top_p)
            return i + 1;
    }
    return n;
}

/* A filter in place (the order kept): p >= min_p * p_max is logit >= max + ln min_p. */
static int fast_min_p(cand_t *c, int n, double min_p)
{
    if (min_p <= 0)
        return n;
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        max = c[i].logit > max ? c[i].logit : max;
    const double cut = (double)max + log(min_p);
    int m = 0;
    for (int i = 0; i < n; i++)
        if ((double)c[i].logit >= cut)
            c[m++] = c[i];
    return m;
}

static int fast_typical(smp_t *s, cand_t *c, int n, double typ, bool *sorted)
{
    if (typ <= 0 || typ >= 1)
        return n;
    double lse;
    double h = softmax_fast(s, c, n, true, &lse);
    /* w: |-ln p - H|, ln p = logit - lse; the probability is taken again after the sort */
    for (int i = 0; i < n; i++)
        c[i].w = c[i].w > 0 ? (float)fabs(-((double)c[i].logit - lse) - h) : INFINITY;
    *sorted = false;
    for (int m = SMP_PREFIX_FIRST;; m *= 8) {
        if (m >= n) {
            qsort(c, (size_t)n, sizeof *c, typ_cmp);
            m = n;
        } else {
            select_prefix(s, c, n, m, before_score);
        }
        double cum = 0;
        for (int i = 0; i < m; i++) {
            cum += exp((double)c[i].logit - lse);
            if (cum > typ || i == n - 1) {
                softmax_fast(s, c, n, false, NULL);
                return i + 1;
            }
        }
    }
}

static int fast_xtc(smp_t *s, cand_t *c, int n)
{
    const double prob = s->p.xtc_probability, thr = s->p.xtc_threshold;
    if (prob <= 0 || thr > 0.5 || n < 2)
        return n;
    if (rng_uniform(s) >= prob)
        return n;
    softmax_fast(s, c, n, false, NULL);
    /* every candidate that reaches the threshold goes but the least probable of them */
    int cnt = 0, keep = -1;
    for (int i = 0; i < n; i++) {
        if ((double)c[i].w < thr)
            continue;
        cnt++;
        if (keep < 0 || cand_better(c[keep], c[i]))
            keep = i;
    }
    if (cnt < 2)
        return n;
    int m = 0;
    for (int i = 0; i < n; i++)
        if (i == keep || (double)c[i].w < thr)
            c[m++] = c[i];
    return m;
}

static int fast_mirostat(smp_t *s, cand_t *c, int n, bool *sorted)
{
    if (s->p.mirostat == 2) {
        /* surprise <= mu: a filter (the surprise only grows down the best-first list) */
        softmax_fast(s, c, n, false, NULL);
        int m = 0, best = 0;
        for (int i = 0; i < n; i++) {
            if (cand_better(c[i], c[best]))
                best = i;
        }
        cand_t top = c[best];
        /* -log2 p <= mu: p >= 2^-mu */
        const double floor_p = exp2(-(double)s->mu);
        for (int i = 0; i < n; i++)
            if ((double)c[i].w >= floor_p)
                c[m++] = c[i];
        if (m == 0)
            c[m++] = top;
        return m;
    }
    /* v1 reads the best 100 probabilities */
    softmax_fast(s, c, n, false, NULL);
    if (!*sorted) {
        if (n > 100)
            select_prefix(s, c, n, 100, before_logit);
        else
            sort_best(c, n, sorted);
    }
    int ki = mirostat1_k(s, c, n);
    if (ki <= FD_MIN(n, 100)) {
        *sorted = true;
        return ki;
    }
    return step_top_k(s, c, n, ki, sorted);
}

/* Runs the chain on logits (biased, masked, clean; temperature > 0) into s->cc: returns
 * the number of candidates left, their probabilities in w. */
static int chain_run(smp_t *s, const float *logits)
{
    const int V = s->n_vocab;
    const eng_sampling_t *p = &s->p;
    cand_t *c = s->cc;
    for (int i = 0; i < V; i++)
        c[i] = (cand_t){ logits[i], i, 0 };
    int n = V;
    bool sorted = false, dense = true;
    for (int k = 0; k < s->n_order; k++) {
        int before = n;
        const bool ref = s->reference;
        switch (s->order[k]) {
        case SMP_PENALTIES: step_penalties(s, c, n, dense); break;
        case SMP_DRY: step_dry(s, c, n, dense); break;
        case SMP_TOP_N_SIGMA: n = step_top_n_sigma(c, n, p->top_n_sigma, &sorted); break;
        case SMP_TOP_K: n = step_top_k(s, c, n, p->top_k, &sorted); break;
        case SMP_TYPICAL:
            n = ref ? ref_typical(c, n, p->typical_p, &sorted)
                    : fast_typical(s, c, n, p->typical_p, &sorted);
            break;
        case SMP_TOP_P:
            n = ref ? ref_top_p(c, n, p->top_p, &sorted)
                    : fast_top_p(s, c, n, p->top_p, &sorted);
            break;
        case SMP_MIN_P:
            n = ref ? ref_min_p(c, n, p->min_p, &sorted) : fast_min_p(c, n, p->min_p);
            break;
        case SMP_XTC: n = ref ? ref_xtc(s, c, n, &sorted) : fast_xtc(s, c, n); break;
        case SMP_TEMPERATURE: n = step_temperature(c, n, p, &sorted); break;
        }
        /* a step that moved or dropped entries ends the identity map (the fast steps that
         * select a prefix move entries but leave n: their sorted flag may stay false) */
        dense = dense && n == before && !sorted && (ref || !moves(s->order[k]));
    }
    if (p->mirostat)
        n = s->reference ? ref_mirostat(s, c, n, &sorted) : fast_mirostat(s, c, n, &sorted);
    if (s->reference)
        softmax(c, n, false);
    else
        softmax_fast(s, c, n, false, NULL);
    return n;
}

/* The n most probable of c (best first, ties to the lower id) moved to its front. */
static void order_by_prob(cand_t *c, int n)
{
    for (int i = 0; i < n; i++)
        c[i].logit = c[i].w;   /* sort by probability through cand_cmp */
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
}

/* Penalties and DRY on the full logits array, in the chain's order (greedy's arg max and
 * the log-probabilities see them so). */
static void chain_modifiers(smp_t *s, float *logits)
{
    for (int k = 0; k < s->n_order; k++) {
        if (s->order[k] == SMP_PENALTIES)
            apply_penalties(s, logits);
        else if (s->order[k] == SMP_DRY)
            for (int j = 0; j < s->n_dry; j++)
                logits[s->dry_tok[j]] -= s->dry_pen[j];
    }
}

int smp_dist(smp_t *s, const float *logits, int32_t *ids, double *probs, int cap)
{
    const int V = s->n_vocab;
    if (!s->cc) {
        s->cc = malloc((size_t)V * sizeof *s->cc);
        s->tmp = malloc((size_t)V * sizeof *s->tmp);
        s->pos = malloc((size_t)V * sizeof *s->pos);
        s->fw = malloc((size_t)V * 2 * sizeof *s->fw);
        if (!s->cc || !s->tmp || !s->pos || !s->fw)
            return -ENOMEM;
        for (int i = 0; i < V; i++)
            s->pos[i] = -1;
    }
    float *l = malloc((size_t)V * sizeof *l);
    if (!l)
        return -ENOMEM;
    memcpy(l, logits, (size_t)V * sizeof *l);
    apply_bias_mask(s, l, NULL);
    float max;
    int n = 0;
    int rc = dry_compute(s);
    if (rc < 0)
        goto out;
    if (clean_argmax(l, V, &max) < 0) {
        rc = FD_ERANGE;
        goto out;
    }
    if (s->p.temperature == 0.0f) {
        chain_modifiers(s, l);
        s->cc[0] = (cand_t){ 0, clean_argmax(l, V, &max), 1.0f };
        n = 1;
    } else {
        n = chain_run(s, l);
        order_by_prob(s->cc, n);
        while (n > 0 && s->cc[n - 1].w == 0)
            n--;
    }
    for (int i = 0; i < n && i < cap; i++) {
        ids[i] = s->cc[i].id;
        probs[i] = s->cc[i].w;
    }
    rc = n;
out:
    free(l);
    return rc;
}

/* smp_sample_masked when the chain runs. */
static int32_t chain_sample(smp_t *s, float *logits, const uint32_t *allow, float *logprob,
                            eng_top_t *top, int n_top)
{
    const int V = s->n_vocab;
    apply_bias_mask(s, logits, allow);
    float max;
    if (clean_argmax(logits, V, &max) < 0)
        return FD_ERANGE;
    int rc = s->p.mirostat ? 0 : dry_compute(s);
    if (rc < 0)
        return rc;
    int32_t tok;
    int n = 0;
    if (s->p.temperature == 0.0f) {
        if (!s->p.mirostat)
            chain_modifiers(s, logits);
        tok = clean_argmax(logits, V, &max);
        s->cc[0] = (cand_t){ 1, tok, 1.0f };
        n = 1;
    } else {
        n = chain_run(s, logits);
        double u = rng_uniform(s), total = 0, cum = 0;
        for (int i = 0; i < n; i++)
            total += s->cc[i].w;
        int pick = n - 1;
        for (int i = 0; i < n; i++) {
            cum += s->cc[i].w;
            if (cum > u * total && s->cc[i].w > 0) {
                pick = i;
                break;
            }
        }
        while (pick > 0 && s->cc[pick].w == 0)
            pick--;
        tok = s->cc[pick].id;
        if (s->p.mirostat)
            s->mu -= s->p.mirostat_eta * (float)(-log2((double)s->cc[pick].w) -
                                                 (double)s->p.mirostat_tau);
        if (!s->p.mirostat)
            chain_modifiers(s, logits);
        clean_argmax(logits, V, &max);
    }
    if (s->p.post_probs) {
        if (s->p.temperature != 0.0f) {
            order_by_prob(s->cc, n);
            while (n > 0 && s->cc[n - 1].w == 0)
                n--;
        }
        s->n_post = n;
        if (logprob) {
            *logprob = -INFINITY;
            for (int i = 0; i < n; i++)
                if (s->cc[i].id == tok)
                    *logprob = logf(s->cc[i].w);
        }
        for (int i = 0; i < n_top; i++)
            top[i] = i < n ? (eng_top_t){ s->cc[i].id, logf(s->cc[i].w) }
                           : (eng_top_t){ s->cc[0].id, -INFINITY };
        return tok;
    }
    if (logprob || n_top > 0) {
        double lse = log_sum_exp(logits, V, max);
        if (logprob)
            *logprob = (float)((double)logits[tok] - lse);
        if (n_top > 0 && fill_top(s, logits, lse, top, n_top) < 0)
            return -ENOMEM;
    }
    return tok;
}

int32_t smp_sample(smp_t *s, float *logits, float *logprob, eng_top_t *top, int n_top)
{
    return smp_sample_masked(s, logits, NULL, logprob, top, n_top);
}

int32_t smp_sample_masked(smp_t *s, float *logits, const uint32_t *allow, float *logprob,
                          eng_top_t *top, int n_top)
{
    const int V = s->n_vocab;
    if (n_top < 0 || n_top > SMP_MAX_TOP || n_top > V || (n_top > 0 && !top))
        return -EINVAL;
    if (s->chain)
        return chain_sample(s, logits, allow, logprob, top, n_top);
    apply_bias_mask(s, logits, allow);
    apply_penalties(s, logits);

    float max;
    int32_t best = clean_argmax(logits, V, &max);
    if (best < 0)
        return FD_ERANGE;

    int32_t tok = s->p.temperature == 0.0f ? best : sample_dist(s, logits, max);
    if (tok < 0)
        return tok;

    if (logprob || n_top > 0) {
        double lse = log_sum_exp(logits, V, max);
        if (logprob)
            *logprob = (float)((double)logits[tok] - lse);
        if (n_top > 0 && fill_top(s, logits, lse, top, n_top) < 0)
            return -ENOMEM;
    }
    return tok;
}

int smp_logprobs(smp_t *s, float *logits, int32_t tok, float *logprob, int *rank,
                 eng_top_t *top, int n_top)
{
    const int V = s->n_vocab;
    if (tok < 0 || tok >= V || n_top < 0 || n_top > SMP_MAX_TOP || n_top > V ||
        (n_top > 0 && !top))
        return -EINVAL;
    float max;
    if (clean_argmax(logits, V, &max) < 0)
        return FD_ERANGE;
    double lse = log_sum_exp(logits, V, max);
    *logprob = (float)((double)logits[tok] - lse);
    int above = 0;
    for (int i = 0; i < V; i++)
        above += logits[i] > logits[tok];
    *rank = above + 1;
    if (n_top > 0 && fill_top(s, logits, lse, top, n_top) < 0)
        return -ENOMEM;
    return 0;
}

/* OpenAI's defaults (temperature 1, nothing truncated, no penalties): what a client that
 * sets nothing expects.  repeat_last_n only matters once repeat_penalty != 1. */
void eng_sampling_default(eng_sampling_t *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 1.0f;
    s->top_p = 1.0f;
    s->top_k = 0;
    s->min_p = 0.0f;
    s->repeat_penalty = 1.0f;
    s->repeat_last_n = 64;
    s->n_probs = -1;
    smp_default_extras(s);
}

void smp_default_extras(eng_sampling_t *s)
{
    /* llama.cpp's secondary values, used once their sampler is switched on */
    s->dynatemp_exponent = 1.0f;
    s->xtc_threshold = 0.1f;
    s->dry_base = 1.75f;
    s->dry_allowed_length = 2;
    s->dry_penalty_last_n = -1;
    s->mirostat_tau = 5.0f;
    s->mirostat_eta = 0.1f;
}
