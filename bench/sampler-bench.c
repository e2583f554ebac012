/* sampler-bench: the cost of the token sampler per call on realistic vocabularies, and the
 * scheduler's own cost per step (a model driver that does no work), so both can be set
 * against a decode step's time.  Prints medians of repeated runs.
 *   sampler-bench [reps]        (default 7) */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fd.h"
#include "engine/engine.h"
#include "engine/sampler.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Logits shaped like a language model's: a Gaussian bulk and a few strong candidates. */
static void lm_logits(float *l, int V, uint64_t seed)
{
    for (int i = 0; i < V; i += 2) {
        double u1 = ((double)(rng(&seed) >> 11) + 1) / 9007199254740993.0;
        double u2 = (double)(rng(&seed) >> 11) / 9007199254740992.0;
        double r = sqrt(-2 * log(u1));
        l[i] = (float)(2.5 * r * cos(2 * M_PI * u2));
        if (i + 1 < V)
            l[i + 1] = (float)(2.5 * r * sin(2 * M_PI * u2));
    }
    for (int k = 0; k < 8; k++)
        l[rng(&seed) % (uint64_t)V] = 12.0f + (float)k;
}

static void bench_sampler(int reps)
{
    static const int vocabs[] = { 32000, 128256, 151936 };
    static const struct {
        const char *name;
        float T, top_p, min_p;
        int top_k, n_probs;
        int extra;      /* llama.cpp's samplers (the chain): 0 none, else below */
    } cfg[] = {
        { "greedy", 0, 1, 0, 0, -1, 0 },
        { "greedy + 5 logprobs", 0, 1, 0, 0, 5, 0 },
        { "temperature 0.8", 0.8f, 1, 0, 0, -1, 0 },
        { "top-k 40", 0.8f, 1, 0, 40, -1, 0 },
        { "top-p 0.95", 0.8f, 0.95f, 0, 0, -1, 0 },
        { "min-p 0.05", 0.8f, 1, 0.05f, 0, -1, 0 },
        { "top-k 40, top-p 0.95, min-p 0.05", 0.8f, 0.95f, 0.05f, 40, -1, 0 },
        { "chain: the same (samplers edkypmxt)", 0.8f, 0.95f, 0.05f, 40, -1, 1 },
        { "chain: + DRY, 4096-token context", 0.8f, 0.95f, 0.05f, 40, -1, 2 },
        { "chain: typical 0.95, no top-k", 0.8f, 1, 0, 0, -1, 3 },
        { "  the same, reference steps", 0.8f, 1, 0, 0, -1, 13 },
        { "chain: mirostat 2", 0.8f, 1, 0, 0, -1, 4 },
        { "  the same, reference steps", 0.8f, 1, 0, 0, -1, 14 },
        { "chain: top-p 0.95, min-p 0.05", 0.8f, 0.95f, 0.05f, 0, -1, 6 },
        { "  the same, reference steps", 0.8f, 0.95f, 0.05f, 0, -1, 16 },
        { "chain: greedy + DRY, 4096 context", 0, 1, 0, 0, -1, 5 },
    };
    enum { N = 64 };
    printf("sampler: microseconds per call (median of %d runs of %d calls; the copy of the "
           "logits each call needs is included)\n", reps, N);
    printf("%-36s", "");
    for (size_t v = 0; v < FD_ARRAY_LEN(vocabs); v++)
        printf(" %9s%-3d", "V=", vocabs[v]);
    printf("\n");
    for (size_t c = 0; c < FD_ARRAY_LEN(cfg); c++) {
        printf("%-36s", cfg[c].name);
        for (size_t v = 0; v < FD_ARRAY_LEN(vocabs); v++) {
            const int V = vocabs[v];
            float *l = malloc((size_t)V * sizeof *l), *w = malloc((size_t)V * sizeof *w);
            lm_logits(l, V, 7);
            eng_sampling_t p;
            eng_sampling_default(&p);
            p.temperature = cfg[c].T;
            p.top_p = cfg[c].top_p;
            p.top_k = cfg[c].top_k;
            p.min_p = cfg[c].min_p;
            p.n_probs = cfg[c].n_probs;
            p.seed = 1;
            p.has_seed = true;
            static const uint8_t web[] = { SMP_PENALTIES, SMP_DRY, SMP_TOP_K, SMP_TYPICAL,
                                           SMP_TOP_P, SMP_MIN_P, SMP_XTC, SMP_TEMPERATURE };
            if (cfg[c].extra == 1 || cfg[c].extra == 2) {
                memcpy(p.order, web, sizeof web);
                p.n_order = (int)sizeof web;
            }
            if (cfg[c].extra == 2 || cfg[c].extra == 5)
                p.dry_multiplier = 0.8f;
            const int ex = cfg[c].extra % 10;
            if (ex == 3)
                p.typical_p = 0.95f;
            if (ex == 4)
                p.mirostat = 2;
            if (ex == 6)
                p.post_probs = true;        /* the chain with fusiond's default order */
            smp_t *s;
            if (smp_create(&s, &p, V) < 0) {
                fprintf(stderr, "smp_create failed\n");
                exit(1);
            }
            smp_set_reference(s, cfg[c].extra >= 10);
            /* a context of text-like tokens: a small working set, some repeats */
            uint64_t cs = 3;
            for (int i = 0; cfg[c].extra && i < 4096; i++)
                smp_accept(s, (int32_t)(rng(&cs) % 2000), i >= 2048);
            double t[64];
            eng_top_t top[SMP_MAX_TOP];
            for (int r = 0; r < reps && r < 64; r++) {
                double t0 = fd_now_s();
                for (int i = 0; i < N; i++) {
                    memcpy(w, l, (size_t)V * sizeof *w);
                    float lp;
                    int n_top = p.n_probs > 0 ? p.n_probs : 0;
                    if (smp_sample(s, w, p.n_probs >= 0 ? &lp : NULL, top, n_top) < 0)
                        exit(1);
                }
                t[r] = (fd_now_s() - t0) / N * 1e6;
            }
            printf(" %12.1f", median(t, FD_MIN(reps, 64)));
            smp_free(s);
            free(w);
            free(l);
        }
        printf("\n");
    }
}

/* ---- scheduler overhead: a driver whose decode writes fixed logits and nothing else ---- */

enum { NV = 256, NCTX = 4096, NSLOTS = 64 };

typedef struct nd {
    bool used[NSLOTS];
    int len[NSLOTS];
} nd_t;

static int nd_alloc(void *ctx, int *slot)
{
    nd_t *d = ctx;
    for (int s = 0; s < NSLOTS; s++)
        if (!d->used[s]) {
            d->used[s] = true;
            d->len[s] = 0;
            *slot = s;
            return 0;
        }
    return FD_EFULL;
}

static void nd_free(void *ctx, int slot)
{
    ((nd_t *)ctx)->used[slot] = false;
}

static int nd_decode(void *ctx, const llm_batch_entry_t *e, int n, float *logits)
{
    nd_t *d = ctx;
    int li = 0;
    for (int i = 0; i < n; i++) {
        d->len[e[i].slot] += e[i].n_tokens;
        if (e[i].want_logits) {
            float *l = logits + (size_t)li++ * NV;
            for (int t = 0; t < NV; t++)
                l[t] = (float)((t * 7 + d->len[e[i].slot]) % 13);
        }
    }
    return 0;
}

static bool nd_eog(void *ctx, int32_t t)
{
    return false;
}

static void nd_sinit(void *ctx, tok_stream_t *s, int32_t last)
{
    memset(s, 0, sizeof *s);
}

static int nd_spush(void *ctx, tok_stream_t *s, int32_t t, char *out, size_t cap, size_t *len)
{
    *len = 2;
    out[0] = (char)('a' + t % 26);
    out[1] = ' ';
    return 0;
}

static int nd_sflush(void *ctx, tok_stream_t *s, char *out, size_t cap, size_t *len)
{
    *len = 0;
    return 0;
}

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left;
} waiter_t;

static void on_ev(void *ud, const eng_event_t *ev)
{
    waiter_t *w = ud;
    if (ev->type != ENG_EV_DONE)
        return;
    pthread_mutex_lock(&w->mu);
    if (--w->left == 0)
        pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void bench_scheduler(int reps)
{
    static const int running[] = { 1, 16, 64 };
    enum { GEN = 200 };
    printf("\nscheduler: microseconds per step with a driver that does no work (vocabulary "
           "%d, greedy, 2 stop strings, %d tokens per request, median of %d runs)\n", NV, GEN,
           reps);
    for (size_t k = 0; k < FD_ARRAY_LEN(running); k++) {
        double per_step[64], per_tok[64];
        for (int r = 0; r < reps && r < 64; r++) {
            nd_t d;
            memset(&d, 0, sizeof d);
            eng_driver_t drv = {
                .ctx = &d, .n_vocab = NV, .n_ctx = NCTX, .n_slots = NSLOTS,
                .seq_alloc = nd_alloc, .seq_free = nd_free, .decode = nd_decode,
                .is_eog = nd_eog, .stream_init = nd_sinit, .stream_push = nd_spush,
                .stream_flush = nd_sflush,
            };
            eng_params_t p;
            eng_params_default(&p);
            p.max_running = running[k];
            p.max_waiting = running[k];
            char err[256];
            eng_t *e;
            if (eng_open_driver(&e, &p, &drv, err, sizeof err) < 0) {
                fprintf(stderr, "%s\n", err);
                exit(1);
            }
            waiter_t w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, running[k] };
            int32_t prompt[8] = { 1, 2, 3, 4, 5, 6, 7, 8 };
            const char *const stop[] = { "zz zz", "qq" };
            double t0 = fd_now_s();
            for (int i = 0; i < running[k]; i++) {
                eng_request_t q;
                memset(&q, 0, sizeof q);
                q.prompt = prompt;
                q.n_prompt = 8;
                q.max_tokens = GEN;
                eng_sampling_default(&q.sampling);
                q.sampling.temperature = 0;
                q.stop = stop;
                q.n_stop = 2;
                q.on_event = on_ev;
                q.ud = &w;
                if (eng_submit(e, &q, NULL, err, sizeof err) < 0) {
                    fprintf(stderr, "%s\n", err);
                    exit(1);
                }
            }
            pthread_mutex_lock(&w.mu);
            while (w.left > 0)
                pthread_cond_wait(&w.cv, &w.mu);
            pthread_mutex_unlock(&w.mu);
            double dt = fd_now_s() - t0;
            eng_stats_t st;
            eng_stats(e, &st);
            per_step[r] = dt / (double)st.steps * 1e6;
            per_tok[r] = dt / (double)st.gen_tokens * 1e6;
            eng_close(e);
        }
        int n = FD_MIN(reps, 64);
        printf("  %2d running: %7.2f us/step, %6.2f us/token\n", running[k],
               median(per_step, n), median(per_tok, n));
    }
}

/* The exp kernel against its reference, libm's expf, over one vocabulary of weights. */
static void bench_exp(int reps)
{
    enum { V = 151936, N = 64 };
    float *x = malloc(V * sizeof *x), *y = malloc(V * sizeof *y);
    lm_logits(x, V, 3);
    for (int i = 0; i < V; i++)
        x[i] -= 20.0f;
    double tr[64], tf[64], sink = 0;
    for (int r = 0; r < reps && r < 64; r++) {
        double t0 = fd_now_s();
        for (int k = 0; k < N; k++) {
            for (int i = 0; i < V; i++)
                y[i] = expf(x[i]);
            sink += y[k];
        }
        tr[r] = (fd_now_s() - t0) / N * 1e6;
        t0 = fd_now_s();
        for (int k = 0; k < N; k++) {
            smp_exp(x, y, V);
            sink += y[k];
        }
        tf[r] = (fd_now_s() - t0) / N * 1e6;
    }
    int n = FD_MIN(reps, 64);
    printf("\nexp over %d weights: libm expf %.1f us, smp_exp %.1f us (checksum %g)\n", V,
           median(tr, n), median(tf, n), sink);
    free(y);
    free(x);
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 7;
    if (reps < 1)
        reps = 1;
    bench_sampler(reps);
    bench_exp(reps);
    bench_scheduler(reps);
    return 0;
}
