/* spec-bench: decode speed with speculative decoding off and on, in one process: n-gram
 * drafts, or a draft model's (--model-draft).
 * Two engines on the same model file (draft_max 0 and draft_max K) run the same requests in
 * turn, run after run, so both see the same machine load; each run submits --seqs copies of
 * the prompt at once.  Reported per variant: the median over runs of the decode tokens/s
 * (generated tokens after the first, over the time from the first token to the last, summed
 * over the sequences of a run), the steps the engine took, and with speculation the drafted
 * and accepted tokens (the acceptance rate).  The outputs of both variants are compared token
 * by token (they must be equal: greedy, or a seeded sampler).  --clock cpu times the engine
 * thread's CPU time instead of the wall clock (events are delivered on the engine thread):
 * on a shared, loaded machine preemption then inflates nothing; it is the work done only with
 * --threads 1 (the backend computes on the engine thread).
 * --row-cost: instead, the time of one llm_decode step of one sequence feeding 1, 2, 3, 4, 5,
 * 9 and 17 tokens with every row's logits (what verifying 0..16 drafts costs), best of
 * --reps, against one row. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fd.h"
#include "engine/engine.h"
#include "engine/model.h"

enum { MAX_SEQS = 64, MAX_GEN = 4096 };

typedef struct seq {
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *left;
    int32_t tok[MAX_GEN];
    int n;
    int finish;
    eng_timings_t t;
    uint64_t t_first, t_last;
} seq_t;

static bool cpu_clock;

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_event(void *ud, const eng_event_t *ev)
{
    seq_t *s = ud;
    pthread_mutex_lock(s->mu);
    if (ev->type == ENG_EV_TOKEN) {
        if (s->n < MAX_GEN)
            s->tok[s->n] = ev->token;
        s->n++;
        uint64_t t = cpu_clock ? thread_cpu_ns() : ev->t_ns;
        if (!s->t_first)
            s->t_first = t;
        s->t_last = t;
    } else {
        s->finish = ev->finish;
        s->t = ev->timings;
        if (--*s->left == 0)
            pthread_cond_signal(s->cv);
    }
    pthread_mutex_unlock(s->mu);
}

typedef struct result {
    double tok_s;               /* decode tokens/s of the run (all its sequences) */
    uint64_t steps, drafted, accepted, gen;
} result_t;

/* One run: seqs copies of the prompt at once; out receives them. */
static int run_once(eng_t *e, const int32_t *prompt, int n_prompt, int n_gen, int seqs,
                    const eng_sampling_t *smp, seq_t *out, result_t *res)
{
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
    int left = seqs;
    eng_stats_t s0, s1;
    eng_stats(e, &s0);
    for (int i = 0; i < seqs; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].mu = &mu;
        out[i].cv = &cv;
        out[i].left = &left;
        eng_request_t q;
        memset(&q, 0, sizeof q);
        q.prompt = prompt;
        q.n_prompt = (size_t)n_prompt;
        q.max_tokens = n_gen;
        q.sampling = *smp;
        q.sampling.seed += (uint64_t)i;
        q.ignore_eos = true;
        q.on_event = on_event;
        q.ud = &out[i];
        char err[256];
        int rc = eng_submit(e, &q, NULL, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "spec-bench: submit: %s\n", err);
            return rc;
        }
    }
    pthread_mutex_lock(&mu);
    while (left > 0)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    eng_stats(e, &s1);
    uint64_t first = 0, last = 0, gen = 0;
    for (int i = 0; i < seqs; i++) {
        if (!first || out[i].t_first < first)
            first = out[i].t_first;
        if (out[i].t_last > last)
            last = out[i].t_last;
        gen += (uint64_t)(out[i].n - 1);
    }
    res->tok_s = last > first ? (double)gen / ((double)(last - first) * 1e-9) : 0;
    res->steps = s1.steps - s0.steps;
    res->drafted = s1.draft_tokens - s0.draft_tokens;
    res->accepted = s1.draft_accepted - s0.draft_accepted;
    res->gen = s1.gen_tokens - s0.gen_tokens;
    return 0;
}

/* --row-cost: one sequence 64 tokens deep, a step of R rows timed and rolled back. */
static int row_cost(const char *model, const char *backend, int threads, int reps)
{
    llm_load_params_t lp;
    llm_load_params_default(&lp);
    lp.path = model;
    lp.backend = backend;
    lp.threads = threads;
    lp.n_ctx = 128;
    char err[512];
    llm_model_t *m;
    if (llm_load(&m, &lp, err, sizeof err) < 0) {
        fprintf(stderr, "spec-bench: %s\n", err);
        return 1;
    }
    const int V = llm_hparams(m)->n_vocab;
    float *lg = malloc(sizeof(float) * (size_t)V * 17);
    int32_t tok[96];
    for (int i = 0; i < 96; i++)
        tok[i] = (int32_t)((i * 37 + 11) % (V - 3)) + 3;
    int slot, rc = lg ? llm_seq_alloc(m, &slot) : -ENOMEM;
    llm_batch_entry_t e = { .slot = slot, .tokens = tok, .n_tokens = 64, .want_logits = 1 };
    if (rc == 0)
        rc = llm_decode(m, &e, 1, lg);
    static const int rows[] = { 1, 2, 3, 4, 5, 9, 17 };
    double one = 0;
    printf("# spec-bench --row-cost: %s, backend %s, %d threads, best of %d %s\n", model,
           backend, threads, reps, cpu_clock ? "(thread cpu time)" : "(wall time)");
    for (size_t i = 0; i < sizeof rows / sizeof rows[0] && rc == 0; i++) {
        double best = 1e30;
        for (int r = 0; r < reps && rc == 0; r++) {
            e.tokens = tok + 64;
            e.n_tokens = e.want_logits = rows[i];
            uint64_t t0 = cpu_clock ? thread_cpu_ns() : fd_now_ns();
            rc = llm_decode(m, &e, 1, lg);
            uint64_t t1 = cpu_clock ? thread_cpu_ns() : fd_now_ns();
            if (rc == 0)
                rc = llm_seq_truncate(m, slot, 64);
            best = FD_MIN(best, (double)(t1 - t0) * 1e-6);
        }
        if (rows[i] == 1)
            one = best;
        if (rc == 0)
            printf("rows %2d  %9.3f ms  %5.2f x one row\n", rows[i], best, best / one);
    }
    if (rc < 0)
        fprintf(stderr, "spec-bench: %s\n", fd_strerror(rc));
    free(lg);
    llm_free(m);
    return rc < 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static const char repeat_prompt[] =
    "Lily and Ben went to the park. They saw a big red ball. Lily said, \"Look, a big red "
    "ball!\" Ben said, \"Let's play with the big red ball!\" Lily and Ben went to the park. "
    "They saw a big red ball. Lily said,";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: spec-bench -m MODEL [--prompt TEXT | --prompt-file FILE] [-n TOKENS]\n"
            "                  [--reps N] [--seqs N] [--threads N] [--backend B]\n"
            "                  [--draft-max K] [--draft-min N] [--lookup-min N] [--lookup-max N]\n"
            "                  [--temp T] [--seed N] [--clock wall|cpu]\n"
            "                  [--model-draft FILE [--draft-p-min P] [--threads-draft N]]\n"
            "       spec-bench --row-cost -m MODEL [--reps N] [--threads N] [--clock wall|cpu]\n"
            "  decode tokens/s with speculation off and on (n-gram drafts, or a draft\n"
            "  model's with --model-draft) (medians of --reps runs,\n"
            "  alternating), acceptance rate, and whether the outputs are equal.\n"
            "  defaults: a repetitive story prompt, n 128, reps 5, seqs 1, threads 1,\n"
            "  draft-max 8, lookup 2..4, temp 0 (greedy), wall clock (cpu: the engine\n"
            "  thread's CPU time, with --threads 1 on a loaded machine)\n");
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(1 << 20);
    size_t n = buf ? fread(buf, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = 0;
    return buf;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *prompt_text = repeat_prompt, *backend = "cpu";
    char *file_text = NULL;
    int n_gen = 128, reps = 5, seqs = 1, threads = 1;
    eng_params_t on_p;
    eng_params_default(&on_p);
    on_p.draft_max = 8;
    bool rows = false;
    eng_sampling_t smp;
    eng_sampling_default(&smp);
    smp.temperature = 0;
    smp.has_seed = true;
    smp.seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--row-cost")) {
            rows = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "spec-bench: %s needs a value\n", a);
            return 1;
        }
        i++;
        if (!strcmp(a, "-m"))
            model = v;
        else if (!strcmp(a, "--prompt"))
            prompt_text = v;
        else if (!strcmp(a, "--prompt-file")) {
            if (!(file_text = read_file(v))) {
                fprintf(stderr, "spec-bench: cannot read %s\n", v);
                return 1;
            }
            prompt_text = file_text;
        } else if (!strcmp(a, "-n"))
            n_gen = atoi(v);
        else if (!strcmp(a, "--reps"))
            reps = atoi(v);
        else if (!strcmp(a, "--seqs"))
            seqs = atoi(v);
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--backend"))
            backend = v;
        else if (!strcmp(a, "--draft-max"))
            on_p.draft_max = atoi(v);
        else if (!strcmp(a, "--draft-min"))
            on_p.draft_min = atoi(v);
        else if (!strcmp(a, "--lookup-min"))
            on_p.lookup_min = atoi(v);
        else if (!strcmp(a, "--lookup-max"))
            on_p.lookup_max = atoi(v);
        else if (!strcmp(a, "--model-draft") || !strcmp(a, "-md"))
            on_p.draft_model = v;
        else if (!strcmp(a, "--draft-p-min"))
            on_p.draft_p_min = strtof(v, NULL);
        else if (!strcmp(a, "--threads-draft"))
            on_p.draft_threads = atoi(v);
        else if (!strcmp(a, "--temp"))
            smp.temperature = strtof(v, NULL);
        else if (!strcmp(a, "--seed"))
            smp.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "--clock") && (!strcmp(v, "wall") || !strcmp(v, "cpu")))
            cpu_clock = !strcmp(v, "cpu");
        else {
            fprintf(stderr, "spec-bench: unknown option %s\n", a);
            usage(stderr);
            return 1;
        }
    }
    if (!model || n_gen < 2 || n_gen > MAX_GEN || reps < 1 || seqs < 1 || seqs > MAX_SEQS ||
        threads < 0 || on_p.draft_max < 1) {
        usage(stderr);
        return 1;
    }
    if (rows)
        return row_cost(model, backend, threads, reps);
    eng_t *eng[2] = { NULL, NULL };
    char err[512];
    for (int v = 0; v < 2; v++) {
        eng_params_t p = on_p;
        p.model_path = model;
        p.backend = backend;
        p.threads = threads;
        p.max_running = seqs;
        p.max_batch_tokens = seqs * (on_p.draft_max + 1) + 256;
        if (v == 0) {
            p.draft_max = p.draft_min = 0;
            p.draft_model = NULL;
        }
        if (eng_open(&eng[v], &p, err, sizeof err) < 0) {
            fprintf(stderr, "spec-bench: %s\n", err);
            eng_close(eng[0]);
            return 1;
        }
    }
    int32_t *prompt = malloc(sizeof *prompt * 65536);
    size_t n_prompt = 0;
    if (!prompt || tok_encode(eng_tokenizer(eng[0]), prompt_text, strlen(prompt_text), true,
                              false, prompt, 65536, &n_prompt) < 0 || n_prompt == 0) {
        fprintf(stderr, "spec-bench: cannot tokenize the prompt\n");
        return 1;
    }
    int n_ctx = eng_info(eng[0])->n_ctx;
    if ((int)n_prompt + n_gen > n_ctx)
        n_gen = n_ctx - (int)n_prompt;
    printf("# spec-bench: %s, backend %s, %d threads, prompt %zu tokens, %d generated x %d "
           "seqs, %d runs (medians), draft_max %d, lookup %d..%d, temp %g, %s time\n", model, backend,
           threads, n_prompt, n_gen, seqs, reps, on_p.draft_max,
           on_p.lookup_min ? on_p.lookup_min : 2, on_p.lookup_max ? on_p.lookup_max : 4,
           (double)smp.temperature, cpu_clock ? "engine-thread cpu" : "wall");
    if (on_p.draft_model)
        printf("# draft model %s, draft_p_min %g (lookup does not apply)\n", on_p.draft_model,
               (double)on_p.draft_p_min);
    static seq_t out[2][MAX_SEQS];
    double *ts[2] = { calloc((size_t)reps, sizeof(double)), calloc((size_t)reps, sizeof(double)) };
    double *speedup = calloc((size_t)reps, sizeof(double));
    result_t tot[2];
    memset(tot, 0, sizeof tot);
    bool same = true;
    /* a warm-up run of each, not counted */
    for (int v = 0; v < 2; v++) {
        result_t r;
        if (run_once(eng[v], prompt, (int)n_prompt, n_gen, seqs, &smp, out[v], &r) < 0)
            return 1;
    }
    for (int rep = 0; rep < reps; rep++) {
        for (int v = 0; v < 2; v++) {
            result_t r;
            if (run_once(eng[v], prompt, (int)n_prompt, n_gen, seqs, &smp, out[v], &r) < 0)
                return 1;
            ts[v][rep] = r.tok_s;
            tot[v].steps += r.steps;
            tot[v].drafted += r.drafted;
            tot[v].accepted += r.accepted;
            tot[v].gen += r.gen;
        }
        speedup[rep] = ts[0][rep] > 0 ? ts[1][rep] / ts[0][rep] : 0;
        for (int i = 0; i < seqs; i++) {
            same = same && out[0][i].n == out[1][i].n;
            for (int k = 0; same && k < out[0][i].n && k < MAX_GEN; k++)
                same = out[0][i].tok[k] == out[1][i].tok[k];
        }
    }
    double m_off = median(ts[0], reps), m_on = median(ts[1], reps);
    printf("off  %9.1f tok/s  %.3f steps/token\n", m_off,
           (double)tot[0].steps / (double)(tot[0].gen ? tot[0].gen : 1));
    printf("on   %9.1f tok/s  %.3f steps/token  drafted %llu accepted %llu (%.1f%%)  "
           "%.2f tokens/sequence-step\n", m_on,
           (double)tot[1].steps / (double)(tot[1].gen ? tot[1].gen : 1),
           (unsigned long long)tot[1].drafted, (unsigned long long)tot[1].accepted,
           tot[1].drafted ? 100.0 * (double)tot[1].accepted / (double)tot[1].drafted : 0.0,
           (double)tot[1].gen * 1.0 / (double)(tot[1].steps ? tot[1].steps : 1) / seqs);
    printf("speedup on/off %.3f (median of per-run ratios)  outputs %s\n",
           median(speedup, reps), same ? "equal" : "DIFFER");
    free(ts[0]);
    free(ts[1]);
    free(speedup);
    free(prompt);
    free(file_text);
    eng_close(eng[1]);
    eng_close(eng[0]);
    return same ? 0 : 2;
}
