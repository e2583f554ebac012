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
        int32_t *tok = realloc(s->h_tok, (size_t)cap * sizeof *tok);
        if (!tok)
            return -ENOMEM;
        s->h_tok = tok;
        int32_t *gen = realloc(s->h_gen, (size_t)cap * sizeof *gen);
        if (!gen)
            return -ENOMEM;
        s->h_gen = gen;
        int32_t *win = realloc(s->h_win, (size_t)cap * sizeof *win);
        if (!win)
            return -ENOMEM;
        s->h_win = win;
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

/* Min-heap on "better": the root is the worst entry kept. */
static void heap_down(cand_t *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_better(h[w], h[l]))
            w = l;
        if (r < n && cand_better(h[w], h[r]))
            w = r;
        if (w == i)
            return;
        cand_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_up(cand_t *h, int i)
{
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!cand_better(h[p], h[i]))
            return;
        cand_t t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
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
        if (m < k) {
            out[m] = c;
            heap_up(out, m++);
        } else if (cand_better(c, out[0])) {
            out[0] = c;
            heap_down(out, m, 0);
        }
    }
    for (int end = m - 1; end > 0; end--) {
        cand_t t = out[0];
        out[0] = out[end];
        out[end] = t;
        heap_down(out, end, 0);
    }
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

/* Steps 1-3 of the pipeline (bias and penalties sparse: only the biased and seen tokens). */
static void apply_bias_penalties(smp_t *s, float *logits, const uint32_t *allow)
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
    apply_bias_penalties(s, logits, allow);

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
}
