/* test_sampler.c: proves the sampler: greedy, and temperature / top-k / top-p / min-p restrict
 * the support exactly as defined and draw with the softmax's frequencies (fixed seeds, checked
 * against a full-sort reference in double); seeds reproduce; penalties and logit bias change
 * logits by exactly the defined amounts; logprobs equal the log-softmax computed in double;
 * bad parameters are rejected; llama.cpp's samplers (typical, dynamic temperature, top-n-sigma,
 * XTC, DRY, Mirostat, the chain order) leave the survivors and probabilities their
 * definitions give, computed here independently. */
#include <float.h>
#include <math.h>
#include <time.h>

#include "common/fd.h"
#include "engine/sampler.h"
#include "tests/testutil.h"

/* Check records every passing ck_assert (a write to its log), so loops over many draws test
 * with this instead. */
#define REQUIRE(cond, ...)                                                    \
    do {                                                                      \
        if (!(cond))                                                          \
            ck_abort_msg(__VA_ARGS__);                                        \
    } while (0)

/* ---- reference: the truncated distribution by definition, with a full sort ---- */

typedef struct rc {
    double l;
    int id;
} rc_t;

static int rc_cmp(const void *a, const void *b)
{
    const rc_t *x = a, *y = b;
    if (x->l != y->l)
        return x->l > y->l ? -1 : 1;
    return x->id - y->id;
}

/* prob[i] = the probability smp_sample draws token i with, for logits already biased and
 * penalized, under p (temperature > 0). */
static void ref_probs(const float *logits, int V, const eng_sampling_t *p, double *prob)
{
    rc_t *c = malloc((size_t)V * sizeof *c);
    int n = 0;
    for (int i = 0; i < V; i++) {
        prob[i] = 0;
        if (logits[i] != -INFINITY)
            c[n++] = (rc_t){ logits[i], i };
    }
    qsort(c, (size_t)n, sizeof *c, rc_cmp);
    const double mx = c[0].l, T = p->temperature;
    int k = (p->top_k > 0 && p->top_k < n) ? p->top_k : n;
    if (p->top_p < 1) {
        double total = 0, cum = 0;
        for (int i = 0; i < k; i++)
            total += exp((c[i].l - mx) / T);
        int i;
        for (i = 0; i < k; i++) {
            cum += exp((c[i].l - mx) / T);
            if (cum >= (double)p->top_p * total)
                break;
        }
        k = FD_MIN(k, i + 1);
    }
    if (p->min_p > 0) {
        int keep = 0;
        while (keep < k && (c[keep].l - mx) / T >= log((double)p->min_p))
            keep++;
        k = keep;
    }
    double total = 0;
    for (int i = 0; i < k; i++)
        total += exp((c[i].l - mx) / T);
    for (int i = 0; i < k; i++)
        prob[c[i].id] = exp((c[i].l - mx) / T) / total;
    free(c);
}

/* Draws n tokens from fixed logits and checks every draw is in the reference support and
 * each token's frequency is within 5 standard deviations of its reference probability
 * (computed from ref_logits: the logits after the bias the sampler applies). */
static void check_frequencies_ref(const float *logits, const float *ref_logits, int V,
                                  const eng_sampling_t *p, int n, int *n_support)
{
    smp_t *s = NULL;
    ck_assert_int_eq(smp_create(&s, p, V), 0);
    double *prob = malloc((size_t)V * sizeof *prob);
    int *count = calloc((size_t)V, sizeof *count);
    float *work = malloc((size_t)V * sizeof *work);
    ref_probs(ref_logits, V, p, prob);
    for (int i = 0; i < n; i++) {
        memcpy(work, logits, (size_t)V * sizeof *work);
        int32_t t = smp_sample(s, work, NULL, NULL, 0);
        REQUIRE(t >= 0 && t < V, "token %d", t);
        REQUIRE(prob[t] > 0, "token %d drawn outside the support", t);
        count[t]++;
    }
    int support = 0;
    for (int i = 0; i < V; i++) {
        double f = (double)count[i] / n, q = prob[i];
        double tol = 5 * sqrt(q * (1 - q) / n) + 1e-12;
        REQUIRE(fabs(f - q) <= tol, "token %d: frequency %.5f, probability %.5f", i, f, q);
        support += q > 0;
    }
    if (n_support)
        *n_support = support;
    free(work);
    free(count);
    free(prob);
    smp_free(s);
}

static void check_frequencies(const float *logits, int V, const eng_sampling_t *p, int n,
                              int *n_support)
{
    check_frequencies_ref(logits, logits, V, p, n, n_support);
}

static void random_logits(float *l, int V, float scale, uint64_t seed)
{
    for (int i = 0; i < V; i++)
        l[i] = scale * tu_randf(&seed);
}

/* ---- tests ---- */

START_TEST(test_bad_params)
{
    smp_t *s = (smp_t *)1;
    eng_sampling_t p;
    eng_logit_bias_t lb[2] = { { 3, 1.0f }, { 9, 0.0f } };
#define BAD(field_stmt, V)                                                    \
    do {                                                                      \
        eng_sampling_default(&p);                                             \
        field_stmt;                                                           \
        ck_assert_int_eq(smp_create(&s, &p, V), -EINVAL);                    \
        ck_assert_ptr_null(s);                                                \
    } while (0)
    BAD(p.temperature = -0.1f, 10);
    BAD(p.temperature = NAN, 10);
    BAD(p.temperature = INFINITY, 10);
    BAD(p.top_p = 0, 10);
    BAD(p.top_p = 1.01f, 10);
    BAD(p.top_p = NAN, 10);
    BAD(p.top_k = -1, 10);
    BAD(p.min_p = -0.01f, 10);
    BAD(p.min_p = 1.5f, 10);
    BAD(p.presence_penalty = 2.5f, 10);
    BAD(p.frequency_penalty = -2.5f, 10);
    BAD(p.frequency_penalty = NAN, 10);
    BAD(p.repeat_penalty = 0, 10);
    BAD(p.repeat_penalty = -1, 10);
    BAD(p.repeat_penalty = INFINITY, 10);
    BAD(p.repeat_last_n = -2, 10);
    BAD(p.n_probs = 21, 10);
    BAD(p.n_probs = -2, 10);
    BAD((p.logit_bias = lb, p.n_logit_bias = 2), 5);       /* token 9 outside 5 */
    BAD((p.logit_bias = NULL, p.n_logit_bias = 1), 10);
    BAD((p.logit_bias = lb, p.n_logit_bias = -1), 10);
    BAD((lb[1].bias = NAN, p.logit_bias = lb, p.n_logit_bias = 2), 10);
    BAD((lb[1].bias = INFINITY, p.logit_bias = lb, p.n_logit_bias = 2), 10);
    BAD((void)0, 0);
#undef BAD
    /* the edges are fine */
    eng_sampling_default(&p);
    p.top_p = 1;
    p.min_p = 1;
    p.presence_penalty = -2;
    p.frequency_penalty = 2;
    p.repeat_last_n = -1;
    p.n_probs = 20;
    lb[1].bias = -INFINITY;
    p.logit_bias = lb;
    p.n_logit_bias = 2;
    ck_assert_int_eq(smp_create(&s, &p, 10), 0);
    ck_assert_int_eq(smp_accept(s, -1, 0), -EINVAL);
    ck_assert_int_eq(smp_accept(s, 10, 1), -EINVAL);
    ck_assert_int_eq(smp_accept(s, 9, 1), 0);
    float l[10] = { 0 };
    eng_top_t top[21];
    ck_assert_int_eq(smp_sample(s, l, NULL, top, 21), -EINVAL);
    ck_assert_int_eq(smp_sample(s, l, NULL, top, 11), -EINVAL);
    ck_assert_int_eq(smp_sample(s, l, NULL, NULL, 1), -EINVAL);
    ck_assert_int_eq(smp_sample(s, l, NULL, top, -1), -EINVAL);
    smp_free(s);
    smp_free(NULL);
}
END_TEST

START_TEST(test_greedy)
{
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.temperature = 0;
    p.top_k = 1;           /* ignored when greedy */
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, &p, 6), 0);
    float l[6] = { 0.5f, 2.0f, -1.0f, 2.0f, 1.0f, NAN };
    ck_assert_int_eq(smp_sample(s, l, NULL, NULL, 0), 1); /* tie: the lower id */
    ck_assert(l[5] == -INFINITY);                           /* NaN became -inf */
    float m[6] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY };
    ck_assert_int_eq(smp_sample(s, m, NULL, NULL, 0), FD_ERANGE);
    float o[6] = { -INFINITY, -INFINITY, -5.0f, NAN, -INFINITY, -INFINITY };
    ck_assert_int_eq(smp_sample(s, o, NULL, NULL, 0), 2);
    float q[6] = { 1, 2, INFINITY, 3, 0, 0 };
    ck_assert_int_eq(smp_sample(s, q, NULL, NULL, 0), 2);   /* +inf is the largest */
    smp_free(s);

    /* greedy draws nothing from the generator: any seed gives the arg max */
    for (uint64_t seed = 0; seed < 5; seed++) {
        p.seed = seed;
        p.has_seed = true;
        ck_assert_int_eq(smp_create(&s, &p, 6), 0);
        float r[6] = { 0, 0, 0, 0, 9, 0 };
        ck_assert_int_eq(smp_sample(s, r, NULL, NULL, 0), 4);
        smp_free(s);
    }
}
END_TEST

START_TEST(test_bias)
{
    eng_logit_bias_t lb[5] = {
        { 8, -100.0f },      /* ban */
        { 0, 1.5f },
        { 0, 0.5f },         /* entries add up */
        { 9, -INFINITY },    /* ban */
        { 2, -3.25f },
    };
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.temperature = 0;
    p.logit_bias = lb;
    p.n_logit_bias = 5;
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, &p, 10), 0);
    lb[4].bias = 99;     /* the sampler copied the list */
    float l[10] = { 2.0f, -1.0f, 0.5f, -0.25f, 3.0f, 1.5f, -2.0f, 0.0f, 4.0f, -3.0f };
    float e[10];
    memcpy(e, l, sizeof e);
    e[8] = -INFINITY;
    e[0] = 2.0f + 1.5f + 0.5f;
    e[9] = -INFINITY;
    e[2] = 0.5f - 3.25f;
    ck_assert_int_eq(smp_sample(s, l, NULL, NULL, 0), 0);
    for (int i = 0; i < 10; i++)
        ck_assert_msg(l[i] == e[i], "logit %d: %g, expected %g", i, l[i], e[i]);
    smp_free(s);

    /* a banned token is never drawn, even when it dominates */
    eng_logit_bias_t ban = { 3, -100.0f };
    eng_sampling_default(&p);
    p.logit_bias = &ban;
    p.n_logit_bias = 1;
    p.seed = 7;
    p.has_seed = true;
    float d[5] = { 0, 0, 0, 20, 0 };
    float dref[5] = { 0, 0, 0, -INFINITY, 0 };
    int n_support = 0;
    check_frequencies_ref(d, dref, 5, &p, 20000, &n_support);
    ck_assert_int_eq(n_support, 4);
}
END_TEST

START_TEST(test_penalties)
{
    const float base[10] = { 2.0f, -1.0f, 0.5f, -0.25f, 3.0f, 1.5f, -2.0f, 0.0f, 4.0f, -3.0f };
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.temperature = 0;
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 4;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, &p, 10), 0);
    /* context 0 1 2 | 3 3 4 1 (prompt | generated): window = 3 3 4 1 */
    ck_assert_int_eq(smp_accept(s, 0, 0), 0);
    ck_assert_int_eq(smp_accept(s, 1, 0), 0);
    ck_assert_int_eq(smp_accept(s, 2, 0), 0);
    ck_assert_int_eq(smp_accept(s, 3, 1), 0);
    ck_assert_int_eq(smp_accept(s, 3, 1), 0);
    ck_assert_int_eq(smp_accept(s, 4, 1), 0);
    ck_assert_int_eq(smp_accept(s, 1, 1), 0);
    float l[10], e[10];
    memcpy(l, base, sizeof l);
    memcpy(e, base, sizeof e);
    const float rp = 1.5f, fp = 0.25f, pp = 0.5f;
    e[1] = -1.0f * rp - (1 * fp + pp);   /* in window, generated once */
    e[3] = -0.25f * rp - (2 * fp + pp);  /* in window, generated twice */
    e[4] = 3.0f / rp - (1 * fp + pp);    /* positive: divided */
    /* 0 and 2: prompt tokens out of the window: untouched */
    float lp;
    eng_top_t top[3];
    ck_assert_int_eq(smp_sample(s, l, &lp, top, 3), 8);
    for (int i = 0; i < 10; i++)
        ck_assert_msg(fabsf(l[i] - e[i]) <= 1e-6f, "logit %d: %.7g, expected %.7g", i, l[i],
                      e[i]);
    /* logprobs from the penalized logits, in double */
    double mx = 4.0, sum = 0;
    for (int i = 0; i < 10; i++)
        sum += exp((double)e[i] - mx);
    double lse = mx + log(sum);
    ck_assert_double_eq_tol(lp, 4.0 - lse, 1e-6);
    ck_assert_int_eq(top[0].token, 8);
    ck_assert_int_eq(top[1].token, 0);
    ck_assert_int_eq(top[2].token, 5);
    ck_assert_double_eq_tol(top[2].logprob, 1.5 - lse, 1e-6);

    /* token 1 generated again slides 3 out of the window: 3 keeps only its presence and
     * frequency penalties */
    ck_assert_int_eq(smp_accept(s, 1, 1), 0);   /* window 3 4 1 1 */
    ck_assert_int_eq(smp_accept(s, 5, 1), 0);   /* window 4 1 1 5 */
    memcpy(l, base, sizeof l);
    ck_assert_int_eq(smp_sample(s, l, NULL, NULL, 0), 8);
    ck_assert_float_eq_tol(l[3], -0.25f - (2 * fp + pp), 1e-6f);
    ck_assert_float_eq_tol(l[1], -1.0f * rp - (2 * fp + pp), 1e-6f);
    ck_assert_float_eq_tol(l[5], 1.5f / rp - (1 * fp + pp), 1e-6f);
    ck_assert_float_eq_tol(l[4], 3.0f / rp - (1 * fp + pp), 1e-6f);
    smp_free(s);

    /* repeat_last_n = -1: the whole context, prompt included; 0: off */
    p.presence_penalty = p.frequency_penalty = 0;
    p.repeat_last_n = -1;
    ck_assert_int_eq(smp_create(&s, &p, 10), 0);
    for (int t = 0; t < 3; t++)
        ck_assert_int_eq(smp_accept(s, t, 0), 0);
    memcpy(l, base, sizeof l);
    smp_sample(s, l, NULL, NULL, 0);
    ck_assert_float_eq_tol(l[0], 2.0f / rp, 1e-6f);
    ck_assert_float_eq_tol(l[1], -1.0f * rp, 1e-6f);
    ck_assert_float_eq_tol(l[2], 0.5f / rp, 1e-6f);
    ck_assert(l[3] == base[3]);
    smp_free(s);
    p.repeat_last_n = 0;
    ck_assert_int_eq(smp_create(&s, &p, 10), 0);
    ck_assert_int_eq(smp_accept(s, 0, 1), 0);
    memcpy(l, base, sizeof l);
    smp_sample(s, l, NULL, NULL, 0);
    ck_assert(memcmp(l, base, sizeof l) == 0);
    smp_free(s);

    /* penalties can change the greedy choice: 8 generated many times */
    eng_sampling_default(&p);
    p.temperature = 0;
    p.frequency_penalty = 2;
    ck_assert_int_eq(smp_create(&s, &p, 10), 0);
    smp_accept(s, 8, 1);
    memcpy(l, base, sizeof l);
    ck_assert_int_eq(smp_sample(s, l, NULL, NULL, 0), 4);   /* 4.0 - 2 < 3.0 */
    smp_free(s);
}
END_TEST

START_TEST(test_logprobs)
{
    enum { V = 1000 };
    float l[V], orig[V];
    random_logits(orig, V, 6.0f, 42);
    orig[17] = orig[18] = 7.5f;    /* a tie at the top: lower id first */
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.temperature = 0.8f;
    p.seed = 3;
    p.has_seed = true;
    p.n_probs = 20;
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, &p, V), 0);
    for (int round = 0; round < 50; round++) {
        memcpy(l, orig, sizeof l);
        float lp;
        eng_top_t top[20];
        int32_t t = smp_sample(s, l, &lp, top, 20);
        ck_assert_int_ge(t, 0);
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < V; i++)
            mx = fmax(mx, orig[i]);
        for (int i = 0; i < V; i++)
            sum += exp((double)orig[i] - mx);
        double lse = mx + log(sum);
        ck_assert_double_eq_tol(lp, (double)orig[t] - lse, 1e-5);
        rc_t *c = malloc(V * sizeof *c);
        for (int i = 0; i < V; i++)
            c[i] = (rc_t){ orig[i], i };
        qsort(c, V, sizeof *c, rc_cmp);
        for (int i = 0; i < 20; i++) {
            ck_assert_int_eq(top[i].token, c[i].id);
            ck_assert_double_eq_tol(top[i].logprob, c[i].l - lse, 1e-5);
        }
        ck_assert_int_eq(top[0].token, 17);
        ck_assert_int_eq(top[1].token, 18);
        free(c);
    }
    smp_free(s);

    /* fewer finite tokens than asked: banned ones follow at -inf */
    eng_sampling_default(&p);
    eng_logit_bias_t bans[3] = { { 0, -100 }, { 1, -100 }, { 3, -100 } };
    p.logit_bias = bans;
    p.n_logit_bias = 3;
    ck_assert_int_eq(smp_create(&s, &p, 4), 0);
    float m[4] = { 1, 2, 3, 4 };
    eng_top_t top[4];
    float lp;
    ck_assert_int_eq(smp_sample(s, m, &lp, top, 4), 2);
    ck_assert_float_eq_tol(lp, 0.0f, 1e-7f);
    ck_assert_int_eq(top[0].token, 2);
    ck_assert(top[1].logprob == -INFINITY && top[1].token == 0);
    ck_assert(top[3].logprob == -INFINITY && top[3].token == 3);
    smp_free(s);
}
END_TEST

START_TEST(test_temperature_freq)
{
    enum { V = 16 };
    float l[V];
    random_logits(l, V, 2.0f, 1);
    l[5] = -INFINITY;
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.seed = 11;
    p.has_seed = true;
    const float temps[] = { 1.0f, 0.5f, 2.0f, 0.05f };
    for (size_t i = 0; i < FD_ARRAY_LEN(temps); i++) {
        p.temperature = temps[i];
        int support;
        check_frequencies(l, V, &p, 40000, &support);
        if (temps[i] >= 0.5f)
            ck_assert_int_eq(support, V - 1);
    }
}
END_TEST

START_TEST(test_topk_freq)
{
    enum { V = 50 };
    float l[V];
    random_logits(l, V, 2.0f, 2);
    l[10] = l[11] = 3.0f;     /* a tie decided by id */
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.seed = 12;
    p.has_seed = true;
    const int ks[] = { 1, 2, 5, 13, 49, 50, 1000 };
    for (size_t i = 0; i < FD_ARRAY_LEN(ks); i++) {
        p.top_k = ks[i];
        p.temperature = 0.9f;
        int support;
        check_frequencies(l, V, &p, 30000, &support);
        ck_assert_int_eq(support, FD_MIN(ks[i], V));
    }
    /* top_k 1 is the arg max whatever the temperature: the tie goes to 10 */
    p.top_k = 1;
    p.temperature = 5;
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, &p, V), 0);
    for (int i = 0; i < 100; i++) {
        float w[V];
        memcpy(w, l, sizeof w);
        REQUIRE(smp_sample(s, w, NULL, NULL, 0) == 10, "top-k 1 draw %d", i);
    }
    smp_free(s);
}
END_TEST

START_TEST(test_topp_minp_freq)
{
    enum { V = 40 };
    float l[V];
    random_logits(l, V, 3.0f, 3);
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.seed = 13;
    p.has_seed = true;
    struct { float T, top_p, min_p; int top_k; } cases[] = {
        { 1.0f, 0.5f, 0, 0 },
        { 1.0f, 0.9f, 0, 0 },
        { 0.7f, 0.95f, 0, 0 },
        { 1.0f, 1.0f, 0.1f, 0 },
        { 1.5f, 1.0f, 0.3f, 0 },
        { 1.0f, 0.8f, 0.05f, 10 },
        { 0.6f, 0.7f, 0.2f, 5 },
        { 1.0f, 0.05f, 0, 0 },      /* only the best survives */
        { 1.0f, 1.0f, 1.0f, 0 },    /* min_p 1: only the best */
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        p.temperature = cases[i].T;
        p.top_p = cases[i].top_p;
        p.min_p = cases[i].min_p;
        p.top_k = cases[i].top_k;
        int support;
        check_frequencies(l, V, &p, 30000, &support);
        ck_assert_int_ge(support, 1);
        if (i >= 7)
            ck_assert_int_eq(support, 1);
        else
            ck_assert_int_gt(support, 1);
        ck_assert_int_lt(support, V);
    }
}
END_TEST

/* top-p over more than the first 64 candidates (the binned path), with and without min-p:
 * frequencies against the reference. */
START_TEST(test_topp_binned_freq)
{
    enum { V = 300 };
    float l[V];
    random_logits(l, V, 1.0f, 4);
    l[7] = -INFINITY;
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.seed = 14;
    p.has_seed = true;
    const struct { float T, top_p, min_p; } cases[] = {
        { 1.0f, 0.9f, 0 }, { 0.5f, 0.8f, 0 }, { 2.0f, 0.97f, 0.3f }, { 1.0f, 0.6f, 0.5f },
    };
    for (size_t i = 0; i < FD_ARRAY_LEN(cases); i++) {
        p.temperature = cases[i].T;
        p.top_p = cases[i].top_p;
        p.min_p = cases[i].min_p;
        int support;
        check_frequencies(l, V, &p, 30000, &support);
        ck_assert_int_gt(support, 64);
        ck_assert_int_lt(support, V - 1);
    }
}
END_TEST

/* A 150k vocabulary: top-p without top-k on a peaked and on a flat distribution (the
 * selection that grows), top-k, min-p; every draw inside the reference support. */
START_TEST(test_large_vocab)
{
    enum { V = 150000 };
    float *l = malloc(V * sizeof *l), *w = malloc(V * sizeof *w);
    double *prob = malloc(V * sizeof *prob);
    eng_sampling_t p;
    for (int pass = 0; pass < 6; pass++) {
        random_logits(l, V, pass == 1 ? 0.5f : 4.0f, 100 + pass);
        if (pass == 0)
            for (int i = 0; i < 30; i++)
                l[i * 4999] = 14.0f + (float)i * 0.1f;
        eng_sampling_default(&p);
        p.seed = 5;
        p.has_seed = true;
        p.top_p = pass < 2 ? 0.9f : pass == 4 ? 0.7f : pass == 5 ? 0.99f : 1.0f;
        p.top_k = pass == 2 ? 40 : 0;
        p.min_p = pass == 3 ? 0.02f : pass == 4 ? 0.01f : 0;
        p.temperature = pass == 5 ? 0.3f : 1.0f;
        ref_probs(l, V, &p, prob);
        int support = 0;
        for (int i = 0; i < V; i++)
            support += prob[i] > 0;
        smp_t *s;
        ck_assert_int_eq(smp_create(&s, &p, V), 0);
        int distinct = 0;
        char *seen = calloc(V, 1);
        for (int i = 0; i < 150; i++) {
            memcpy(w, l, V * sizeof *w);
            int32_t t = smp_sample(s, w, NULL, NULL, 0);
            REQUIRE(t >= 0, "pass %d: %d", pass, t);
            REQUIRE(prob[t] > 0, "pass %d: token %d outside the support", pass, t);
            distinct += !seen[t];
            seen[t] = 1;
        }
        ck_assert_int_gt(distinct, 5);
        ck_assert_int_lt(support, V);
        free(seen);
        smp_free(s);
    }
    free(prob);
    free(w);
    free(l);
}
END_TEST

START_TEST(test_seed)
{
    enum { V = 300, N = 200 };
    float l[V], w[V];
    random_logits(l, V, 3.0f, 9);
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.temperature = 1.2f;
    p.top_k = 50;
    p.top_p = 0.95f;
    p.seed = 1234;
    p.has_seed = true;
    int32_t a[N], b[N], c[N];
    smp_t *s1, *s2, *s3;
    ck_assert_int_eq(smp_create(&s1, &p, V), 0);
    ck_assert_int_eq(smp_create(&s2, &p, V), 0);
    p.seed = 1235;
    ck_assert_int_eq(smp_create(&s3, &p, V), 0);
    ck_assert_uint_eq(smp_seed(s1), 1234);
    int differ = 0;
    for (int i = 0; i < N; i++) {
        memcpy(w, l, sizeof w);
        a[i] = smp_sample(s1, w, NULL, NULL, 0);
        memcpy(w, l, sizeof w);
        b[i] = smp_sample(s2, w, NULL, NULL, 0);
        memcpy(w, l, sizeof w);
        c[i] = smp_sample(s3, w, NULL, NULL, 0);
        REQUIRE(a[i] == b[i], "draw %d: %d and %d", i, a[i], b[i]);
        differ += a[i] != c[i];
    }
    ck_assert_int_gt(differ, N / 4);
    smp_free(s1);
    smp_free(s2);
    smp_free(s3);

    /* top_k at or above the vocabulary is the same as off, draw for draw */
    p.seed = 77;
    p.top_p = 1;
    p.top_k = 0;
    ck_assert_int_eq(smp_create(&s1, &p, V), 0);
    p.top_k = V;
    ck_assert_int_eq(smp_create(&s2, &p, V), 0);
    for (int i = 0; i < N; i++) {
        memcpy(w, l, sizeof w);
        int32_t x = smp_sample(s1, w, NULL, NULL, 0);
        memcpy(w, l, sizeof w);
        REQUIRE(smp_sample(s2, w, NULL, NULL, 0) == x, "draw %d", i);
    }
    smp_free(s1);
    smp_free(s2);

    /* without a seed, each sampler draws its own */
    p.has_seed = false;
    ck_assert_int_eq(smp_create(&s1, &p, V), 0);
    ck_assert_int_eq(smp_create(&s2, &p, V), 0);
    ck_assert_uint_ne(smp_seed(s1), smp_seed(s2));
    smp_free(s1);
    smp_free(s2);
}
END_TEST

/* The exp kernel against libm's expf on awkward lengths and the whole range it serves. */
/* ---- llama.cpp's samplers (the chain): each against its definition computed here ---- */

/* The chain's distribution for logits under p: survivors (ids) and probabilities. */
static int chain_dist(const eng_sampling_t *p, const float *logits, int V, int32_t *ids,
                      double *probs)
{
    smp_t *s = NULL;
    ck_assert_int_eq(smp_create(&s, p, V), 0);
    int n = smp_dist(s, logits, ids, probs, V);
    smp_free(s);
    return n;
}

/* Expects exactly the survivors want[0..n) (most probable first) with probabilities
 * proportional to exp(z[id]) over them (z: the logits at the scale the last step left). */
static void expect_dist(const int32_t *ids, const double *probs, int n, const int *want,
                        int n_want, const double *z)
{
    ck_assert_int_eq(n, n_want);
    double total = 0;
    for (int i = 0; i < n_want; i++)
        total += exp(z[want[i]]);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(ids[i], want[i]);
        ck_assert_double_eq_tol(probs[i], exp(z[want[i]]) / total, 1e-6);
    }
}

static eng_sampling_t chain_params(void)
{
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.post_probs = true;        /* the chain, with fusiond's default order */
    return p;
}

START_TEST(test_chain_default_matches_fast)
{
    /* the chain with the new samplers off is the fast path's distribution */
    enum { V = 300 };
    float l[V];
    double ref[V], probs[V];
    int32_t ids[V];
    random_logits(l, V, 6.0f, 77);
    static const struct { float t, top_p, min_p; int k; } cases[] = {
        { 1.0f, 1.0f, 0.0f, 0 }, { 0.7f, 0.9f, 0.0f, 0 }, { 1.3f, 0.8f, 0.05f, 40 },
        { 0.5f, 1.0f, 0.1f, 7 }, { 2.0f, 0.5f, 0.0f, 100 },
    };
    for (size_t c = 0; c < FD_ARRAY_LEN(cases); c++) {
        eng_sampling_t p = chain_params();
        p.temperature = cases[c].t;
        p.top_p = cases[c].top_p;
        p.min_p = cases[c].min_p;
        p.top_k = cases[c].k;
        ref_probs(l, V, &p, ref);
        int n = chain_dist(&p, l, V, ids, probs);
        int support = 0;
        for (int i = 0; i < V; i++)
            support += ref[i] > 0;
        ck_assert_int_eq(n, support);
        for (int i = 0; i < n; i++)
            ck_assert_double_eq_tol(probs[i], ref[ids[i]], 1e-6);
    }
}
END_TEST

START_TEST(test_typical)
{
    enum { V = 6 };
    const double q0[V] = { 0.4, 0.14, 0.13, 0.12, 0.11, 0.10 };
    float l[V];
    for (int i = 0; i < V; i++)
        l[i] = (float)log(q0[i]) + 1.0f;
    double q[V], h = 0, z[V];
    double mx = l[0], sum = 0;
    for (int i = 0; i < V; i++)
        sum += exp(l[i] - mx);
    for (int i = 0; i < V; i++) {
        q[i] = exp(l[i] - mx) / sum;
        h -= q[i] * log(q[i]);
        z[i] = l[i];
    }
    /* by hand: sort by |-ln q - H|, keep until the mass exceeds typical_p */
    int idx[V] = { 0, 1, 2, 3, 4, 5 };
    for (int i = 0; i < V; i++)
        for (int j = i + 1; j < V; j++)
            if (fabs(-log(q[idx[j]]) - h) < fabs(-log(q[idx[i]]) - h)) {
                int t = idx[i];
                idx[i] = idx[j];
                idx[j] = t;
            }
    const float tp = 0.3f;
    int keep = 0;
    double cum = 0;
    while (keep < V && cum <= tp)
        cum += q[idx[keep++]];
    /* the survivors, most probable first */
    int want[V];
    for (int i = 0; i < keep; i++)
        want[i] = idx[i];
    for (int i = 0; i < keep; i++)
        for (int j = i + 1; j < keep; j++)
            if (l[want[j]] > l[want[i]]) {
                int t = want[i];
                want[i] = want[j];
                want[j] = t;
            }
    ck_assert_int_lt(keep, V);
    ck_assert_int_ne(want[0], 0);       /* here the most probable token is not typical */
    eng_sampling_t p = chain_params();
    p.typical_p = tp;
    int32_t ids[V];
    double probs[V];
    int n = chain_dist(&p, l, V, ids, probs);
    expect_dist(ids, probs, n, want, keep, z);
}
END_TEST

START_TEST(test_dynatemp)
{
    enum { V = 5 };
    const float l[V] = { 3.0f, 2.0f, 1.0f, 0.5f, -1.0f };
    const float T = 1.0f, range = 0.5f, ex = 2.0f;
    double q[V], h = 0, sum = 0, z[V];
    for (int i = 0; i < V; i++)
        sum += exp(l[i]);
    for (int i = 0; i < V; i++) {
        q[i] = exp(l[i]) / sum;
        h -= q[i] * log(q[i]);
    }
    double t = (T - range) + (2 * range) * pow(h / log(V), ex);
    for (int i = 0; i < V; i++)
        z[i] = l[i] / t;
    eng_sampling_t p = chain_params();
    p.temperature = T;
    p.dynatemp_range = range;
    p.dynatemp_exponent = ex;
    int32_t ids[V];
    double probs[V];
    const int want[V] = { 0, 1, 2, 3, 4 };
    expect_dist(ids, probs, chain_dist(&p, l, V, ids, probs), want, V, z);
    /* exponent 0: the top of the range */
    p.dynatemp_exponent = 0;
    for (int i = 0; i < V; i++)
        z[i] = l[i] / (T + range);
    expect_dist(ids, probs, chain_dist(&p, l, V, ids, probs), want, V, z);
}
END_TEST

START_TEST(test_top_n_sigma)
{
    enum { V = 6 };
    const float l[V] = { 4.0f, 3.5f, 1.0f, 0.0f, -0.5f, -2.0f };
    double mean = 0, var = 0, z[V];
    for (int i = 0; i < V; i++)
        mean += l[i] / (double)V;
    for (int i = 0; i < V; i++)
        var += (l[i] - mean) * (l[i] - mean) / V;
    const float ns = 1.0f;
    double cut = 4.0 - ns * sqrt(var);  /* 4 - 2.0 ... = about 1.93 */
    int want[V], nw = 0;
    for (int i = 0; i < V; i++) {
        z[i] = l[i] / 0.8;
        if (l[i] >= cut)
            want[nw++] = i;
    }
    ck_assert_int_eq(nw, 2);
    eng_sampling_t p = chain_params();
    p.temperature = 0.8f;
    p.top_n_sigma = ns;
    int32_t ids[V];
    double probs[V];
    expect_dist(ids, probs, chain_dist(&p, l, V, ids, probs), want, nw, z);
    /* a banned token does not count in the deviation */
    float l2[V + 1];
    memcpy(l2, l, sizeof l);
    l2[V] = -INFINITY;
    int32_t ids2[V + 1];
    double probs2[V + 1];
    expect_dist(ids2, probs2, chain_dist(&p, l2, V + 1, ids2, probs2), want, nw, z);
}
END_TEST

START_TEST(test_xtc)
{
    enum { V = 5 };
    /* probabilities 0.4, 0.3, 0.15, 0.1, 0.05 */
    const double q[V] = { 0.4, 0.3, 0.15, 0.1, 0.05 };
    float l[V];
    double z[V];
    for (int i = 0; i < V; i++)
        z[i] = l[i] = (float)log(q[i]);
    eng_sampling_t p = chain_params();
    p.xtc_probability = 1;
    p.xtc_threshold = 0.12f;
    int32_t ids[V];
    double probs[V];
    /* 0, 1 and 2 reach 0.12: 0 and 1 go, 2 (the least probable of them) stays */
    const int want[] = { 2, 3, 4 };
    expect_dist(ids, probs, chain_dist(&p, l, V, ids, probs), want, 3, z);
    /* only one reaches it: nothing removed; threshold above 0.5: XTC off */
    p.xtc_threshold = 0.35f;
    const int all[] = { 0, 1, 2, 3, 4 };
    expect_dist(ids, probs, chain_dist(&p, l, V, ids, probs), all, V, z);
    p.xtc_threshold = 0.6f;
    expect_dist(ids, probs, chain_dist(&p, l, V, ids, probs), all, V, z);
    /* probability 0.5: about half of the draws remove them, reproducibly for a seed */
    p.xtc_threshold = 0.12f;
    p.xtc_probability = 0.5f;
    p.has_seed = true;
    p.seed = 1234;
    smp_t *a, *b;
    ck_assert_int_eq(smp_create(&a, &p, V), 0);
    ck_assert_int_eq(smp_create(&b, &p, V), 0);
    int cut = 0;
    for (int i = 0; i < 2000; i++) {
        int na = smp_dist(a, l, ids, probs, V);
        REQUIRE(na == smp_dist(b, l, ids, probs, V), "draw %d differs between the seeds", i);
        cut += na == 3;
    }
    ck_assert_int_gt(cut, 850);
    ck_assert_int_lt(cut, 1150);
    smp_free(a);
    smp_free(b);
}
END_TEST

/* DRY's penalty for each token by definition (a naive search): the longest len such that
 * the context's last len tokens also end at an earlier position e, the token after e then
 * losing mult * base^(len - allowed) when len >= allowed. */
static void dry_ref(const int32_t *x, int N, int allowed, double mult, double base, int V,
                    double *pen)
{
    for (int t = 0; t < V; t++)
        pen[t] = 0;
    int best[64];
    for (int t = 0; t < 64; t++)
        best[t] = -1;
    for (int e = 0; e < N - 1; e++) {
        int len = 0;
        while (len <= e && x[e - len] == x[N - 1 - len])
            len++;
        if (len >= allowed && len > best[x[e + 1]])
            best[x[e + 1]] = len;
    }
    /* (allowed_length 0 makes every token that followed anything a repeat of length 0, as
     * in llama.cpp) */
    for (int t = 0; t < V; t++)
        if (best[t] >= 0)
            pen[t] = mult * pow(base, best[t] - allowed);
}

/* What a fresh sampler of p that has seen ctx[0..n) (token `breaker` a sequence breaker
 * when >= 0) samples from the V logits l; got holds the logits it left. */
static int32_t dry_fresh(const eng_sampling_t *p, int32_t breaker, const int32_t *ctx, int n,
                         const float *l, float *got, int V)
{
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, p, V), 0);
    if (breaker >= 0)
        ck_assert_int_eq(smp_add_breaker(s, breaker, NULL, 0), 0);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(smp_accept(s, ctx[i], 0), 0);
    memcpy(got, l, (size_t)V * sizeof *got);
    int32_t tok = smp_sample(s, got, NULL, NULL, 0);
    smp_free(s);
    return tok;
}

START_TEST(test_dry)
{
    enum { V = 10 };
    /* ... 1 2 3 4 5 ... 1 2 3 4: the repeat 1 2 3 4 (len 4) would go on with 5; the
     * shorter repeats "4" (after 7 4, len 1) and "3 4" do not reach allowed_length 2 with
     * another token */
    const int32_t ctx[] = { 7, 1, 2, 3, 4, 5, 6, 7, 4, 8, 1, 2, 3, 4 };
    const int N = (int)FD_ARRAY_LEN(ctx);
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.temperature = 0;
    p.dry_multiplier = 0.8f;
    p.dry_base = 1.75f;
    p.dry_allowed_length = 2;
    p.post_probs = true;
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, &p, V), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(smp_accept(s, ctx[i], i >= 10), 0);
    double pen[V];
    dry_ref(ctx, N, 2, 0.8, 1.75, V, pen);
    ck_assert_double_eq_tol(pen[5], 0.8 * pow(1.75, 4 - 2), 1e-9);
    for (int t = 0; t < V; t++)
        if (t != 5)
            ck_assert_double_eq(pen[t], 0);
    float l[V], got[V];
    for (int t = 0; t < V; t++)
        l[t] = (float)t * 0.1f;
    l[5] = 3.0f;               /* the repeat's continuation is the greedy choice... */
    memcpy(got, l, sizeof l);
    int32_t tok = smp_sample(s, got, NULL, NULL, 0);
    /* ...until DRY takes exactly 0.8 * 1.75^2 = 2.45 from it: 3 - 2.45 = 0.55 */
    ck_assert_float_eq_tol(got[5], 3.0f - 2.45f, 1e-5f);
    for (int t = 0; t < V; t++)
        if (t != 5)
            ck_assert_float_eq(got[t], l[t]);
    ck_assert_int_eq(tok, 9);
    smp_free(s);

    /* a sequence breaker (token 3) cuts the repeat: 4 after it is a repeat of len 1 */
    ck_assert_int_eq(dry_fresh(&p, 3, ctx, N, l, got, V), 5);
    ck_assert_float_eq(got[5], 3.0f);

    /* dry_penalty_last_n 6 sees only 7 4 8 1 2 3 4 minus one: 4 8 1 2 3 4 -> no repeat of 2 */
    p.dry_penalty_last_n = 6;
    ck_assert_int_eq(dry_fresh(&p, -1, ctx, N, l, got, V), 5);
    /* 0: off */
    p.dry_penalty_last_n = 0;
    ck_assert_int_eq(dry_fresh(&p, -1, ctx, N, l, got, V), 5);

    /* random contexts over a small alphabet: every token's penalty as the naive search */
    uint64_t seed = 5;
    for (int round = 0; round < 200; round++) {
        int32_t x[60];
        int n = 20 + (int)((tu_randf(&seed) + 1) * 20);
        for (int i = 0; i < n; i++)
            x[i] = (int32_t)((tu_randf(&seed) + 1) * 1.5);   /* 0..2 */
        p.dry_penalty_last_n = -1;
        p.dry_allowed_length = round % 4;
        p.dry_base = 1.1f;
        ck_assert_int_eq(smp_create(&s, &p, V), 0);
        for (int i = 0; i < n; i++)
            ck_assert_int_eq(smp_accept(s, x[i], 0), 0);
        for (int t = 0; t < V; t++)
            got[t] = 0;
        smp_sample(s, got, NULL, NULL, 0);
        dry_ref(x, n, p.dry_allowed_length, 0.8, 1.1, V, pen);
        for (int t = 0; t < V; t++)
            REQUIRE(fabs(-got[t] - pen[t]) <= 1e-4 * (1 + pen[t]),
                    "round %d token %d: penalty %g, expected %g", round, t, -got[t], pen[t]);
        smp_free(s);
    }
}
END_TEST

START_TEST(test_mirostat)
{
    enum { V = 6 };
    const float l[V] = { 2.0f, 1.0f, 0.5f, 0.0f, -1.0f, -2.0f };
    double sum = 0, q[V];
    for (int i = 0; i < V; i++)
        sum += exp(l[i]);
    for (int i = 0; i < V; i++)
        q[i] = exp(l[i]) / sum;
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.mirostat = 2;
    p.mirostat_tau = 1.5f;       /* mu = 3: keeps surprise -log2 q <= 3, q >= 0.125 */
    p.mirostat_eta = 0.1f;
    p.has_seed = true;
    p.seed = 9;
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, &p, V), 0);
    ck_assert_float_eq(smp_mirostat_mu(s), 3.0f);
    int32_t ids[V];
    double probs[V];
    int keep = 0;
    while (keep < V && -log2(q[keep]) <= 3.0)
        keep++;
    int n = smp_dist(s, l, ids, probs, V);
    const int want[] = { 0, 1, 2, 3 };
    double z[V];
    for (int i = 0; i < V; i++)
        z[i] = l[i];
    expect_dist(ids, probs, n, want, keep, z);
    float w[V];
    memcpy(w, l, sizeof l);
    int32_t tok = smp_sample(s, w, NULL, NULL, 0);
    ck_assert_int_lt(tok, keep);
    double kept = 0;
    for (int i = 0; i < keep; i++)
        kept += q[i];
    double mu = 3.0 - 0.1 * (-log2(q[tok] / kept) - 1.5);
    ck_assert_float_eq_tol(smp_mirostat_mu(s), (float)mu, 1e-5f);
    smp_free(s);

    /* v1: the Zipf fit; for a Zipf distribution q_i ~ 1/i^s the fit gives s exactly, and
     * k = ((s-1) 2^mu / (1 - V^(1-s)))^(1/s) */
    enum { W = 200 };
    float lz[W];
    const double sz = 1.2;
    for (int i = 0; i < W; i++)
        lz[i] = (float)(-sz * log(i + 1.0));
    p.mirostat = 1;
    p.mirostat_tau = 2.0f;
    ck_assert_int_eq(smp_create(&s, &p, W), 0);
    double k = pow((sz - 1) * pow(2, 4.0) / (1 - pow(W, 1 - sz)), 1 / sz);
    int32_t idz[W];
    double pz[W];
    ck_assert_int_eq(smp_dist(s, lz, idz, pz, W), (int)k);
    smp_free(s);
}
END_TEST

START_TEST(test_order)
{
    /* min-p then temperature (llama.cpp's default) vs temperature then min-p (fusiond's) */
    enum { V = 4 };
    const float l[V] = { 1.0f, 0.0f, -1.0f, -2.5f };
    eng_sampling_t p = chain_params();
    p.temperature = 2.0f;
    p.min_p = 0.2f;   /* e^-1 = 0.37, e^-2 = 0.14, at T 2: e^-0.5 = 0.61, e^-1 = 0.37 */
    int32_t ids[V];
    double probs[V], z[V];
    for (int i = 0; i < V; i++)
        z[i] = l[i] / 2.0;
    const int three[] = { 0, 1, 2 }, two[] = { 0, 1 };
    expect_dist(ids, probs, chain_dist(&p, l, V, ids, probs), three, 3, z);
    p.order[0] = SMP_MIN_P;
    p.order[1] = SMP_TEMPERATURE;
    p.n_order = 2;
    expect_dist(ids, probs, chain_dist(&p, l, V, ids, probs), two, 2, z);
    /* names and letters */
    ck_assert_int_eq(smp_step_from_name("typ_p"), SMP_TYPICAL);
    ck_assert_int_eq(smp_step_from_name("nope"), 0);
    ck_assert_int_eq(smp_step_from_char('x'), SMP_XTC);
    ck_assert_str_eq(smp_step_name(SMP_TOP_N_SIGMA), "top_n_sigma");
    uint8_t o[SMP_MAX_ORDER];
    p.n_order = 0;
    ck_assert_int_eq(smp_chain_order(&p, o), 9);
    ck_assert_int_eq(o[2], SMP_TEMPERATURE);
    p.mirostat = 2;
    ck_assert_int_eq(smp_chain_order(&p, o), 1);
}
END_TEST

START_TEST(test_chain_bad_params)
{
    smp_t *s = (smp_t *)1;
    eng_sampling_t p;
    const char *empty[] = { "" };
#define BAD(field_stmt)                                                       \
    do {                                                                      \
        eng_sampling_default(&p);                                             \
        field_stmt;                                                           \
        ck_assert_int_eq(smp_create(&s, &p, 10), -EINVAL);                   \
        ck_assert_ptr_null(s);                                                \
    } while (0)
    BAD(p.typical_p = -0.1f);
    BAD(p.typical_p = 1.5f);
    BAD(p.dynatemp_range = -1);
    BAD(p.dynatemp_exponent = NAN);
    BAD(p.xtc_probability = 2);
    BAD(p.xtc_threshold = -0.5f);
    BAD(p.top_n_sigma = INFINITY);
    BAD(p.dry_multiplier = -1);
    BAD((p.dry_multiplier = 1, p.dry_base = 0.5f));
    BAD(p.dry_allowed_length = -1);
    BAD(p.dry_penalty_last_n = -2);
    BAD((p.dry_breakers = empty, p.n_dry_breakers = 1));
    BAD(p.n_dry_breakers = 1);
    BAD(p.mirostat = 3);
    BAD((p.mirostat = 1, p.mirostat_eta = 1.5f));
    BAD((p.mirostat = 2, p.mirostat_tau = -1));
    BAD((p.n_order = 1, p.order[0] = 0));
    BAD((p.n_order = 1, p.order[0] = 42));
    BAD(p.n_order = 17);
#undef BAD
    char err[128];
    eng_sampling_default(&p);
    p.dry_penalty_last_n = -7;
    ck_assert_int_eq(smp_check_params(&p, 10, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "dry_penalty_last_n"));
}
END_TEST

START_TEST(test_chain_greedy_and_seed)
{
    /* temperature 0 stays the arg max whatever the truncating samplers say */
    enum { V = 50 };
    float l[V], w[V];
    random_logits(l, V, 4.0f, 3);
    int best = 0;
    for (int i = 1; i < V; i++)
        best = l[i] > l[best] ? i : best;
    eng_sampling_t p;
    eng_sampling_default(&p);
    p.temperature = 0;
    p.typical_p = 0.2f;
    p.xtc_probability = 1;
    p.xtc_threshold = 0.01f;
    p.top_n_sigma = 0.5f;
    smp_t *s;
    ck_assert_int_eq(smp_create(&s, &p, V), 0);
    memcpy(w, l, sizeof l);
    ck_assert_int_eq(smp_sample(s, w, NULL, NULL, 0), best);
    smp_free(s);
    /* a seed replays every sampler's draws */
    p.temperature = 1.1f;
    p.xtc_probability = 0.5f;
    p.xtc_threshold = 0.05f;
    p.dynatemp_range = 0.3f;
    p.has_seed = true;
    p.seed = 42;
    int32_t seq[2][64];
    for (int r = 0; r < 2; r++) {
        ck_assert_int_eq(smp_create(&s, &p, V), 0);
        for (int i = 0; i < 64; i++) {
            memcpy(w, l, sizeof l);
            seq[r][i] = smp_sample(s, w, NULL, NULL, 0);
            ck_assert_int_ge(seq[r][i], 0);
        }
        smp_free(s);
    }
    ck_assert_mem_eq(seq[0], seq[1], sizeof seq[0]);
}
END_TEST

/* Sorts the pairs (ids[i], probs[i]) by id. */
static void by_id(int32_t *ids, double *probs, int n)
{
    for (int i = 1; i < n; i++) {
        int32_t t = ids[i];
        double q = probs[i];
        int j = i - 1;
        for (; j >= 0 && ids[j] > t; j--) {
            ids[j + 1] = ids[j];
            probs[j + 1] = probs[j];
        }
        ids[j + 1] = t;
        probs[j + 1] = q;
    }
}

START_TEST(test_chain_fast_vs_reference)
{
    /* the fast steps leave the survivors and probabilities of the reference (full sorts) */
    static const int vocabs[] = { 2, 7, 63, 64, 65, 600, 5000 };
    uint64_t seed = 21;
    int32_t *ia = malloc(5000 * sizeof *ia), *ib = malloc(5000 * sizeof *ib);
    double *pa = malloc(5000 * sizeof *pa), *pb = malloc(5000 * sizeof *pb);
    float *l = malloc(5000 * sizeof *l);
    for (int round = 0; round < 300; round++) {
        const int V = vocabs[round % (int)FD_ARRAY_LEN(vocabs)];
        random_logits(l, V, round % 3 == 0 ? 1.0f : 8.0f, seed++);
        if (round % 5 == 0)
            l[round % V] = -INFINITY;
        eng_sampling_t p = chain_params();
        double u = (tu_randf(&seed) + 1) / 2;
        p.temperature = 0.3f + 1.5f * (float)u;
        switch (round % 6) {
        case 0: p.top_p = 0.5f + 0.5f * (float)u; break;
        case 1: p.min_p = 0.2f * (float)u; break;
        case 2: p.typical_p = 0.2f + 0.79f * (float)u; break;
        case 3: p.xtc_probability = 1; p.xtc_threshold = 0.5f * (float)u; break;
        case 4: p.mirostat = 1 + round % 2; p.mirostat_tau = 1 + 6 * (float)u; break;
        case 5:
            p.typical_p = 0.9f;
            p.top_p = 0.9f;
            p.min_p = 0.01f;
            p.xtc_probability = 1;
            p.xtc_threshold = 0.1f;
            break;
        }
        p.has_seed = true;
        p.seed = (uint64_t)round;
        smp_t *a, *b;
        ck_assert_int_eq(smp_create(&a, &p, V), 0);
        ck_assert_int_eq(smp_create(&b, &p, V), 0);
        smp_set_reference(b, true);
        int na = smp_dist(a, l, ia, pa, V), nb = smp_dist(b, l, ib, pb, V);
        REQUIRE(na == nb, "round %d (V %d, case %d): %d survivors, the reference %d", round, V,
                round % 6, na, nb);
        /* by id: the two may order near-equal probabilities differently */
        by_id(ia, pa, na);
        by_id(ib, pb, nb);
        for (int i = 0; i < na; i++)
            REQUIRE(ia[i] == ib[i] && fabs(pa[i] - pb[i]) < 1e-6,
                    "round %d: survivor %d is %d (%g), the reference's %d (%g)", round, i,
                    ia[i], pa[i], ib[i], pb[i]);
        smp_free(a);
        smp_free(b);
    }
    free(ia);
    free(ib);
    free(pa);
    free(pb);
    free(l);
}
END_TEST

START_TEST(test_exp_kernel)
{
    enum { N = 4099 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint64_t seed = 21;
    for (int len = 0; len <= 13; len++) {
        for (int i = 0; i < len; i++)
            x[i] = -20.0f * (tu_randf(&seed) + 1.0f);
        for (int i = 0; i < len + 1; i++)
            y[i] = 123.0f;
        smp_exp(x, y, len);
        for (int i = 0; i < len; i++)
            REQUIRE(fabsf(y[i] - expf(x[i])) <= 3e-7f * expf(x[i]), "exp(%g) = %g", x[i], y[i]);
        ck_assert(y[len] == 123.0f);    /* nothing written past n */
    }
    double worst = 0;
    for (int i = 0; i < N; i++)
        x[i] = -87.0f * (float)i / (N - 1);
    x[17] = 0.0f;
    x[18] = -0.0f;
    x[19] = -1e-30f;
    x[20] = -INFINITY;
    x[21] = -87.5f;
    x[22] = -1000.0f;
    x[23] = -FLT_MAX;
    smp_exp(x, y, N);
    for (int i = 0; i < N; i++) {
        if (i >= 20 && i <= 23)
            continue;
        double ref = exp((double)x[i]);
        worst = fmax(worst, fabs(y[i] - ref) / ref);
    }
    ck_assert_msg(worst < 3e-7, "worst relative error %g", worst);
    ck_assert(y[17] == 1.0f && y[18] == 1.0f);    /* the best token weighs exactly 1 */
    ck_assert(y[20] == 0.0f);
    ck_assert(y[21] > 0 && y[21] < 2e-38f);
    ck_assert(y[22] > 0 && y[22] < 2e-38f);
    ck_assert(y[23] > 0 && y[23] < 2e-38f);
    free(y);
    free(x);
}
END_TEST

/* Informational: cost per call on a 150k vocabulary (printed, not asserted: CI machines vary). */
START_TEST(test_speed)
{
    enum { V = 151936, N = 20 };
    float *l = malloc(V * sizeof *l), *w = malloc(V * sizeof *w);
    random_logits(l, V, 8.0f, 5);
    struct { const char *name; float T, top_p; int top_k; float min_p; } cfg[] = {
        { "greedy", 0, 1, 0, 0 },
        { "temperature", 0.8f, 1, 0, 0 },
        { "top-k 40", 0.8f, 1, 40, 0 },
        { "top-p 0.95", 0.8f, 0.95f, 0, 0 },
        { "top-k 40 top-p 0.95 min-p 0.05", 0.8f, 0.95f, 40, 0.05f },
    };
    for (size_t c = 0; c < FD_ARRAY_LEN(cfg); c++) {
        eng_sampling_t p;
        eng_sampling_default(&p);
        p.temperature = cfg[c].T;
        p.top_p = cfg[c].top_p;
        p.top_k = cfg[c].top_k;
        p.min_p = cfg[c].min_p;
        p.seed = 1;
        p.has_seed = true;
        smp_t *s;
        ck_assert_int_eq(smp_create(&s, &p, V), 0);
        double t0 = fd_now_s();
        for (int i = 0; i < N; i++) {
            memcpy(w, l, V * sizeof *w);
            REQUIRE(smp_sample(s, w, NULL, NULL, 0) >= 0, "sample failed");
        }
        fprintf(stderr, "sampler, V=%d, %-32s %8.1f us/token\n", V, cfg[c].name,
                (fd_now_s() - t0) / N * 1e6);
        smp_free(s);
    }
    free(w);
    free(l);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sampler");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_bad_params);
    tcase_add_test(tc, test_greedy);
    tcase_add_test(tc, test_bias);
    tcase_add_test(tc, test_penalties);
    tcase_add_test(tc, test_logprobs);
    tcase_add_test(tc, test_temperature_freq);
    tcase_add_test(tc, test_topk_freq);
    tcase_add_test(tc, test_topp_minp_freq);
    tcase_add_test(tc, test_topp_binned_freq);
    tcase_add_test(tc, test_large_vocab);
    tcase_add_test(tc, test_seed);
    tcase_add_test(tc, test_exp_kernel);
    tcase_add_test(tc, test_chain_default_matches_fast);
    tcase_add_test(tc, test_typical);
    tcase_add_test(tc, test_dynatemp);
    tcase_add_test(tc, test_top_n_sigma);
    tcase_add_test(tc, test_xtc);
    tcase_add_test(tc, test_dry);
    tcase_add_test(tc, test_mirostat);
    tcase_add_test(tc, test_order);
    tcase_add_test(tc, test_chain_bad_params);
    tcase_add_test(tc, test_chain_greedy_and_seed);
    tcase_add_test(tc, test_chain_fast_vs_reference);
    tcase_add_test(tc, test_speed);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
