/* test_engine.c: proves the scheduler core: requests batched together give exactly what each
 * gives alone (and what a plain sequential reference gives); seeds reproduce; stop strings
 * match across token boundaries and are trimmed; EOS; cancellation frees the slot at once;
 * batch places (eng_slots) are the lowest free one, held to the end and named by events;
 * the queue bound, the context and KV bounds and bad requests are refused with their
 * numbers; time limits; chunked prefill interleaves with running decodes under the per-step
 * token cap; the engine sleeps when idle; invariants hold after every step.  A scripted model
 * (a driver whose logits hash the whole sequence, so any mix-up of tokens, positions or slots
 * changes the output) runs the scheduler; then stories260K through eng_open: greedy equals
 * the reference continuation, 16 concurrent requests equal each alone, and the same bounds,
 * stop strings, cancellation, time limit and prefill interleaving on the real model.  The
 * prefix cache: a prompt extending a finished one (or equal to it, or a prefix of it)
 * prefills only what the cached slot lacks and answers as without the cache; least recently
 * cached slots are evicted for new requests and for KV tokens, never making a request wait;
 * no reuse after a failed step; a cancelled one's valid KV is reused; the same on
 * stories260K against an engine without the cache.  Embedding requests (stories260K, fused
 * and unfused): mean, CLS and last pooling, normalized or not, equal the model's hidden
 * states of each token fed alone, pooled and normalized here; they share steps with
 * generating requests, are chunked, neither reuse nor break the prefix cache, and bad ones
 * (pooling out of range, max_tokens, prompt log-probabilities, a model without hidden
 * states) are refused.  Sliding-window rings (a gemma3 random model): the prefix cache
 * reuses a slot only while its ring holds the window the prefix needs (ring misses counted)
 * or a context checkpoint covers the prefix (a regenerated answer, a shared system prompt:
 * checkpoint hits counted, bytes accounted; a next turn branches nowhere), and speculative drafts are dropped from a ring,
 * all answering as full caches do. */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <time.h>

#include "common/fd.h"
#include "common/ggtypes.h"
#include "engine/engine.h"
#include "engine/gguf_write.h"
#include "tests/testutil.h"

/* ---- the scripted model ---- */

enum { FK_VOCAB = 48, FK_CTX = 512, FK_SLOTS = 16, FK_EOS = 0, FK_LOG = 4096 };

static const char *const fk_piece[FK_VOCAB] = {
    "", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p",
    "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", " ", "\xc3\xa9", "\xe2\x82\xac", "th",
    "e ", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "ab", "ba", ".", "\n",
    "\xc3\xbc", "xyz",
};

typedef struct fk_step {
    int n;
    int slot[FK_SLOTS];
    int n_tokens[FK_SLOTS];
    int pos[FK_SLOTS];      /* first position */
    bool want[FK_SLOTS];
} fk_step_t;

typedef struct fake {
    pthread_mutex_t mu;     /* the log and counters, read by the test thread */
    int32_t seq[FK_SLOTS][FK_CTX];
    int len[FK_SLOTS];
    bool used[FK_SLOTS];
    int n_slots;
    int sleep_us;           /* per decode call */
    int fail_at_step;       /* decode returns FD_EBACKEND at this step (1-based), 0 = never */
    int max_tokens_seen;    /* largest batch */
    char violation[200];    /* first contract violation seen */
    fk_step_t log[FK_LOG];
    int n_log;
    int n_closed;
    bool gate_closed;       /* decode waits until the test opens the gate */
    pthread_cond_t gate;
    double dev_per_step;    /* simulated device time */
    fb_stats_t stats;
    int n_host_alloc, n_host_free; /* the logits buffer through the driver */
    void *host_block;
    bool host_free_late;    /* freed after close, or not the block it handed out */
} fake_t;

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The next-token logits after seq: a hash of the whole sequence; EOS is unlikely. */
static void fk_logits(const int32_t *seq, int len, float *out)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < len; i++)
        h = (h ^ (uint64_t)(uint32_t)seq[i]) * 1099511628211ull;
    for (int t = 0; t < FK_VOCAB; t++)
        out[t] = (float)(mix64(h + (uint64_t)t) >> 40) * (8.0f / 16777216.0f);
    out[FK_EOS] = -50.0f;
}

static void fk_violation(fake_t *f, const char *what, int a, int b)
{
    if (!f->violation[0])
        snprintf(f->violation, sizeof f->violation, "%s (%d, %d)", what, a, b);
}

static int fk_seq_alloc(void *ctx, int *slot)
{
    fake_t *f = ctx;
    for (int s = 0; s < f->n_slots; s++) {
        if (!f->used[s]) {
            f->used[s] = true;
            f->len[s] = 0;
            *slot = s;
            return 0;
        }
    }
    return FD_EFULL;
}

static void fk_seq_free(void *ctx, int slot)
{
    fake_t *f = ctx;
    if (slot < 0 || slot >= f->n_slots || !f->used[slot])
        fk_violation(f, "free of a free slot", slot, 0);
    else
        f->used[slot] = false;
}

static int fk_seq_len(void *ctx, int slot)
{
    fake_t *f = ctx;
    return f->len[slot];
}

static int fk_seq_truncate(void *ctx, int slot, int len)
{
    fake_t *f = ctx;
    if (slot < 0 || slot >= f->n_slots || !f->used[slot] || len < 0 || len > f->len[slot]) {
        fk_violation(f, "bad truncate", slot, len);
        return -EINVAL;
    }
    f->len[slot] = len;
    return 0;
}

static int fk_decode(void *ctx, const llm_batch_entry_t *e, int n, float *logits)
{
    fake_t *f = ctx;
    pthread_mutex_lock(&f->mu);
    while (f->gate_closed)
        pthread_cond_wait(&f->gate, &f->mu);
    int step = f->n_log + 1;
    fk_step_t rec = { .n = n };
    int total = 0;
    bool bad = false;
    for (int i = 0; i < n; i++) {
        int s = e[i].slot;
        if (s < 0 || s >= f->n_slots || !f->used[s] || e[i].n_tokens < 1 ||
            f->len[s] + e[i].n_tokens > FK_CTX) {
            fk_violation(f, "bad entry", s, e[i].n_tokens);
            bad = true;
        }
        for (int j = 0; j < i; j++)
            if (e[j].slot == s) {
                fk_violation(f, "slot twice in one batch", s, step);
                bad = true;
            }
        if (i < FK_SLOTS) {
            rec.slot[i] = s;
            rec.n_tokens[i] = e[i].n_tokens;
            rec.pos[i] = bad ? -1 : f->len[s];
            rec.want[i] = e[i].want_logits;
        }
        total += e[i].n_tokens;
    }
    if (f->n_log < FK_LOG)
        f->log[f->n_log++] = rec;
    f->max_tokens_seen = FD_MAX(f->max_tokens_seen, total);
    int fail = bad || step == f->fail_at_step;
    pthread_mutex_unlock(&f->mu);
    if (f->sleep_us)
        usleep((useconds_t)f->sleep_us);
    if (fail)
        return bad ? -EINVAL : FD_EBACKEND;
    int li = 0;
    for (int i = 0; i < n; i++) {
        int s = e[i].slot;
        for (int j = 0; j < e[i].n_tokens; j++) {
            if (e[i].tokens[j] < 0 || e[i].tokens[j] >= FK_VOCAB)
                fk_violation(f, "token out of range", s, e[i].tokens[j]);
            f->seq[s][f->len[s]++] = e[i].tokens[j];
        }
        if (e[i].want_logits)
            fk_logits(f->seq[s], f->len[s], logits + (size_t)li++ * FK_VOCAB);
    }
    pthread_mutex_lock(&f->mu);
    f->stats.dev_total_s += f->dev_per_step;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static bool fk_is_eog(void *ctx, int32_t t)
{
    return t == FK_EOS;
}

static void fk_stream_init(void *ctx, tok_stream_t *s, int32_t last)
{
    memset(s, 0, sizeof *s);
}

static int fk_stream_push(void *ctx, tok_stream_t *s, int32_t t, char *out, size_t cap,
                          size_t *len)
{
    size_t n = strlen(fk_piece[t]);
    *len = n;
    if (n > cap)
        return -ENOSPC;
    memcpy(out, fk_piece[t], n);
    return 0;
}

static int fk_stream_flush(void *ctx, tok_stream_t *s, char *out, size_t cap, size_t *len)
{
    *len = 0;
    return 0;
}

static void fk_stats(void *ctx, fb_stats_t *out)
{
    fake_t *f = ctx;
    pthread_mutex_lock(&f->mu);
    *out = f->stats;
    pthread_mutex_unlock(&f->mu);
}

static void *fk_host_alloc(void *ctx, size_t bytes)
{
    fake_t *f = ctx;
    f->n_host_alloc++;
    f->host_block = malloc(bytes);
    return f->host_block;
}

static void fk_host_free(void *ctx, void *p)
{
    fake_t *f = ctx;
    f->n_host_free++;
    if (f->n_closed || p != f->host_block)
        f->host_free_late = true;
    free(p);
}

static void fk_close(void *ctx)
{
    fake_t *f = ctx;
    f->n_closed++;
}

static fake_t *fk_new(void)
{
    fake_t *f = calloc(1, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->gate, NULL);
    f->n_slots = FK_SLOTS;
    return f;
}

static void fk_gate(fake_t *f, bool closed)
{
    pthread_mutex_lock(&f->mu);
    f->gate_closed = closed;
    pthread_cond_broadcast(&f->gate);
    pthread_mutex_unlock(&f->mu);
}

static void fk_delete(fake_t *f)
{
    ck_assert_msg(!f->violation[0], "the scheduler broke the model's contract: %s",
                  f->violation);
    for (int s = 0; s < f->n_slots; s++)
        ck_assert_msg(!f->used[s], "slot %d still allocated after eng_close", s);
    ck_assert_int_eq(f->n_closed, 1);
    pthread_cond_destroy(&f->gate);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static int n_check_failures;
static char check_msg[256];

static void on_step_check(void *ud, double seconds, int seqs, int tokens)
{
    eng_t **ep = ud;
    char err[256];
    if (*ep && eng_check(*ep, err, sizeof err) < 0) {
        n_check_failures++;
        snprintf(check_msg, sizeof check_msg, "%s", err);
    }
}

/* One engine over f; *slot receives the handle (for on_step_check). */
static eng_t *open_fake(fake_t *f, eng_params_t *p, eng_t **slot)
{
    eng_driver_t d = {
        .ctx = f, .n_vocab = FK_VOCAB, .n_ctx = FK_CTX, .n_slots = f->n_slots,
        .seq_alloc = fk_seq_alloc, .seq_free = fk_seq_free, .seq_len = fk_seq_len,
        .seq_truncate = fk_seq_truncate,
        .decode = fk_decode, .is_eog = fk_is_eog, .stream_init = fk_stream_init,
        .stream_push = fk_stream_push, .stream_flush = fk_stream_flush, .stats = fk_stats,
        .host_alloc = fk_host_alloc, .host_free = fk_host_free, .close = fk_close,
    };
    p->check = true;
    p->on_step = on_step_check;
    p->on_step_ud = slot;
    *slot = NULL;
    char err[256];
    eng_t *e = NULL;
    int rc = eng_open_driver(&e, p, &d, err, sizeof err);
    ck_assert_msg(rc == 0, "eng_open_driver: %s", err);
    *slot = e;
    return e;
}

/* Closes an engine open_fake opened and its fake, then asserts that eng_check held after
 * every step it ran. */
static void close_fake(eng_t *e, fake_t *f)
{
    eng_close(e);
    fk_delete(f);
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}

/* ---- collecting a request's events ---- */

enum { CO_MAX = 600 };

typedef struct coll {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t id;
    int32_t tok[CO_MAX];
    float lp[CO_MAX];
    eng_top_t top[CO_MAX][4];
    int n_top[CO_MAX];
    bool prompt[CO_MAX];     /* a prompt log-probability event */
    int rank[CO_MAX];
    int n;
    char text[8 * CO_MAX];
    size_t n_text;
    bool done;
    int finish;
    char error[200];
    eng_timings_t t;
    float emb[256];          /* DONE's embedding (embedding requests) */
    int n_emb;
    int after_done;          /* events after DONE: must stay 0 */
    bool bad_utf8;
    eng_t *cancel_eng;       /* cancel itself from the callback after cancel_after tokens */
    int cancel_after;
    eng_stats_t stats_at_done;
    eng_t *stats_eng;
    /* hold_at > 0: the callback of token hold_at blocks the engine thread until
     * coll_release, so the test can act while the engine is in a known state */
    int hold_at;
    bool holding, released;
    int slot, done_slot;     /* the batch place the last TOKEN and the DONE named */
} coll_t;

static bool utf8_complete(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n)
            return false;
        for (size_t j = 1; j < k; j++)
            if (((unsigned char)s[i + j] & 0xC0) != 0x80)
                return false;
        i += k;
    }
    return true;
}

static void on_event(void *ud, const eng_event_t *ev)
{
    coll_t *c = ud;
    pthread_mutex_lock(&c->mu);
    if (c->done) {
        c->after_done++;
    } else if (ev->type == ENG_EV_TOKEN) {
        if (c->n < CO_MAX) {
            c->tok[c->n] = ev->token;
            c->lp[c->n] = ev->logprob;
            c->n_top[c->n] = ev->n_top;
            c->prompt[c->n] = ev->prompt;
            c->rank[c->n] = ev->rank;
            c->slot = ev->slot;
            for (int i = 0; i < ev->n_top && i < 4; i++)
                c->top[c->n][i] = ev->top[i];
            c->n++;
        }
        if (!utf8_complete(ev->text, ev->text_len))
            c->bad_utf8 = true;
        if (c->n_text + ev->text_len <= sizeof c->text) {
            memcpy(c->text + c->n_text, ev->text, ev->text_len);
            c->n_text += ev->text_len;
        }
        if (c->cancel_eng && c->n == c->cancel_after)
            eng_cancel(c->cancel_eng, ev->id);
        if (c->hold_at > 0 && c->n == c->hold_at) {
            /* bounded, so a test that fails while holding cannot hang the engine forever */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 120;
            c->holding = true;
            pthread_cond_broadcast(&c->cv);
            while (!c->released)
                if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
                    break;
            c->holding = false;
        }
    } else {
        if (c->stats_eng)
            eng_stats(c->stats_eng, &c->stats_at_done);
        c->done = true;
        c->finish = ev->finish;
        c->done_slot = ev->slot;
        c->t = ev->timings;
        if (ev->embedding && ev->n_embedding <= 256) {
            memcpy(c->emb, ev->embedding, sizeof(float) * (size_t)ev->n_embedding);
            c->n_emb = ev->n_embedding;
        }
        if (ev->error)
            snprintf(c->error, sizeof c->error, "%s", ev->error);
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

static coll_t *coll_new(void)
{
    coll_t *c = calloc(1, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    return c;
}

static void coll_wait(coll_t *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(30 * tu_time_scale());
    pthread_mutex_lock(&c->mu);
    while (!c->done) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    }
    bool done = c->done;
    pthread_mutex_unlock(&c->mu);
    ck_assert_msg(done, "request %llu never finished", (unsigned long long)c->id);
}

/* Waits until the engine thread is held in c's callback (c->hold_at). */
static void coll_wait_held(coll_t *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60;
    pthread_mutex_lock(&c->mu);
    while (!c->holding && !c->done)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    bool holding = c->holding;
    pthread_mutex_unlock(&c->mu);
    ck_assert_msg(holding, "request %llu: the engine never reached token %d",
                  (unsigned long long)c->id, c->hold_at);
}

static void coll_release(coll_t *c)
{
    pthread_mutex_lock(&c->mu);
    c->released = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void coll_free(coll_t *c)
{
    ck_assert_int_eq(c->after_done, 0);
    ck_assert(!c->bad_utf8);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static int submit(eng_t *e, const int32_t *prompt, int n_prompt, int max_tokens,
                  const eng_sampling_t *smp, coll_t *c)
{
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = (size_t)n_prompt;
    q.max_tokens = max_tokens;
    if (smp)
        q.sampling = *smp;
    else {
        eng_sampling_default(&q.sampling);
        q.sampling.temperature = 0;
    }
    q.on_event = on_event;
    q.ud = c;
    char err[256];
    int rc = eng_submit(e, &q, &c->id, err, sizeof err);
    ck_assert_msg(rc == 0, "eng_submit: %s (%s)", fd_strerror(rc), err);
    return rc;
}

/* The plain sequential reference: greedy on the scripted logits. */
static void ref_greedy(const int32_t *prompt, int n_prompt, int max_tokens, int32_t *out)
{
    int32_t seq[FK_CTX];
    float lg[FK_VOCAB];
    memcpy(seq, prompt, (size_t)n_prompt * sizeof *seq);
    int len = n_prompt;
    for (int k = 0; k < max_tokens; k++) {
        fk_logits(seq, len, lg);
        int best = 0;
        for (int t = 1; t < FK_VOCAB; t++)
            if (lg[t] > lg[best])
                best = t;
        out[k] = best;
        seq[len++] = best;
    }
}

static void make_prompt(int32_t *p, int n, uint64_t seed)
{
    for (int i = 0; i < n; i++)
        p[i] = 1 + (int32_t)(tu_rand64(&seed) % (FK_VOCAB - 1));
}

/* ---- tests ---- */

START_TEST(test_batched_equals_alone)
{
    enum { N = 16 };
    int32_t prompts[N][64];
    int n_prompt[N], max_tok[N];
    int32_t ref[N][64];
    for (int i = 0; i < N; i++) {
        n_prompt[i] = 1 + (i * 7) % 60;
        max_tok[i] = 5 + (i * 13) % 50;
        make_prompt(prompts[i], n_prompt[i], 1000 + (uint64_t)i);
        ref_greedy(prompts[i], n_prompt[i], max_tok[i], ref[i]);
    }
    /* alone, one at a time */
    int32_t alone[N][64];
    {
        fake_t *f = fk_new();
        eng_params_t p;
        eng_params_default(&p);
        p.prefill_chunk = 16;
        eng_t *e, *slot;
        e = open_fake(f, &p, &slot);
        for (int i = 0; i < N; i++) {
            coll_t *c = coll_new();
            submit(e, prompts[i], n_prompt[i], max_tok[i], NULL, c);
            coll_wait(c);
            ck_assert_int_eq(c->finish, ENG_FINISH_LENGTH);
            ck_assert_int_eq(c->n, max_tok[i]);
            memcpy(alone[i], c->tok, (size_t)c->n * sizeof(int32_t));
            for (int k = 0; k < max_tok[i]; k++)
                ck_assert_int_eq(alone[i][k], ref[i][k]);
            coll_free(c);
        }
        eng_close(e);
        fk_delete(f);
    }
    /* all at once (the model held back until all are queued), with 16 running places and
     * room for every prompt's chunk in one step, and with 5 places (the rest queue) and a
     * tight per-step token cap */
    const int places[] = { 16, 5 }, batch[] = { 1000, 12 };
    for (size_t pi = 0; pi < FD_ARRAY_LEN(places); pi++) {
        fake_t *f = fk_new();
        eng_params_t p;
        eng_params_default(&p);
        p.max_running = places[pi];
        p.prefill_chunk = 7;
        p.max_batch_tokens = batch[pi];
        eng_t *e, *slot;
        e = open_fake(f, &p, &slot);
        coll_t *c[N];
        fk_gate(f, true);
        for (int i = 0; i < N; i++) {
            c[i] = coll_new();
            submit(e, prompts[i], n_prompt[i], max_tok[i], NULL, c[i]);
        }
        fk_gate(f, false);
        uint64_t want_prompt = 0, want_gen = 0;
        for (int i = 0; i < N; i++) {
            coll_wait(c[i]);
            ck_assert_int_eq(c[i]->finish, ENG_FINISH_LENGTH);
            ck_assert_int_eq(c[i]->n, max_tok[i]);
            for (int k = 0; k < max_tok[i]; k++)
                ck_assert_msg(c[i]->tok[k] == alone[i][k],
                              "places %d, request %d, token %d: %d batched, %d alone",
                              places[pi], i, k, c[i]->tok[k], alone[i][k]);
            /* the text is the pieces of the tokens */
            char want[512] = "";
            for (int k = 0; k < max_tok[i]; k++)
                strcat(want, fk_piece[alone[i][k]]);
            ck_assert_uint_eq(c[i]->n_text, strlen(want));
            ck_assert(memcmp(c[i]->text, want, c[i]->n_text) == 0);
            ck_assert_int_eq(c[i]->t.n_prompt, n_prompt[i]);
            ck_assert_int_eq(c[i]->t.n_gen, max_tok[i]);
            ck_assert(c[i]->t.queue_s <= c[i]->t.ttft_s && c[i]->t.ttft_s <= c[i]->t.total_s);
            want_prompt += (uint64_t)n_prompt[i];
            want_gen += (uint64_t)max_tok[i];
            coll_free(c[i]);
        }
        eng_stats_t st;
        eng_stats(e, &st);
        ck_assert_uint_eq(st.prompt_tokens, want_prompt);
        ck_assert_uint_eq(st.gen_tokens, want_gen);
        ck_assert_int_eq(st.running, 0);
        ck_assert_int_eq(st.waiting, 0);
        ck_assert_int_eq(st.kv_used, 0);
        ck_assert_int_eq(st.kv_reserved, 0);
        ck_assert_int_eq(st.kv_total, (int64_t)places[pi] * FK_CTX);
        ck_assert_int_le(f->max_tokens_seen, batch[pi]);
        /* some step held a sequence in every place */
        int most = 0;
        for (int s = 0; s < f->n_log; s++)
            most = FD_MAX(most, f->log[s].n);
        ck_assert_int_eq(most, places[pi]);
        eng_close(e);
        fk_delete(f);
    }
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}
END_TEST

START_TEST(test_seed)
{
    fake_t *f = fk_new();
    eng_params_t p;
    eng_params_default(&p);
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    int32_t prompt[5] = { 3, 1, 4, 1, 5 };
    eng_sampling_t s;
    eng_sampling_default(&s);
    s.temperature = 1.5f;
    s.seed = 42;
    s.has_seed = true;
    coll_t *a = coll_new(), *b = coll_new(), *c = coll_new();
    submit(e, prompt, 5, 100, &s, a);
    submit(e, prompt, 5, 100, &s, b);   /* batched with a: same tokens still */
    s.seed = 43;
    submit(e, prompt, 5, 100, &s, c);
    coll_wait(a);
    coll_wait(b);
    coll_wait(c);
    ck_assert_int_eq(a->n, 100);
    ck_assert(memcmp(a->tok, b->tok, sizeof(int32_t) * 100) == 0);
    ck_assert(memcmp(a->tok, c->tok, sizeof(int32_t) * 100) != 0);
    /* and the greedy path is not what a temperature of 1.5 gives */
    int32_t ref[100];
    ref_greedy(prompt, 5, 100, ref);
    ck_assert(memcmp(a->tok, ref, sizeof ref) != 0);
    coll_free(a);
    coll_free(b);
    coll_free(c);
    eng_close(e);
    /* the logits lived in the driver's memory, given back once and before close */
    ck_assert_int_eq(f->n_host_alloc, 1);
    ck_assert_int_eq(f->n_host_free, 1);
    ck_assert(!f->host_free_late);
    fk_delete(f);
}
END_TEST

/* Runs prompt greedily with the given stop strings; returns the collector. */
static coll_t *run_stop(eng_t *e, const int32_t *prompt, int n_prompt, int max_tokens,
                        const char *const *stop, int n_stop)
{
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = (size_t)n_prompt;
    q.max_tokens = max_tokens;
    eng_sampling_default(&q.sampling);
    q.sampling.temperature = 0;
    q.stop = stop;
    q.n_stop = n_stop;
    coll_t *c = coll_new();
    q.on_event = on_event;
    q.ud = c;
    char err[256];
    ck_assert_int_eq(eng_submit(e, &q, &c->id, err, sizeof err), 0);
    coll_wait(c);
    return c;
}

START_TEST(test_stop_strings)
{
    fake_t *f = fk_new();
    eng_params_t p;
    eng_params_default(&p);
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    int32_t prompt[3] = { 7, 8, 9 };
    enum { M = 80 };
    int32_t ref[M];
    ref_greedy(prompt, 3, M, ref);
    /* the full text, and each token's start offset */
    char full[1024] = "";
    size_t start[M + 1];
    for (int k = 0; k < M; k++) {
        start[k] = strlen(full);
        strcat(full, fk_piece[ref[k]]);
    }
    start[M] = strlen(full);
    /* a stop string across a boundary: the last byte of one token's text and the first two
     * of what follows */
#define ASCII(i) ((unsigned char)full[i] < 0x80)
    int k0 = -1;
    for (int k = 10; k < M - 3 && k0 < 0; k++)
        if (start[k + 1] - start[k] >= 1 && start[k + 2] - start[k + 1] >= 1 &&
            start[M] - start[k + 1] >= 2 && ASCII(start[k + 1] - 1) && ASCII(start[k + 1]) &&
            ASCII(start[k + 1] + 1))
            k0 = k;
    ck_assert_int_ge(k0, 0);
    char stop1[8];
    size_t at = start[k0 + 1] - 1;
    memcpy(stop1, full + at, 3);
    stop1[3] = 0;
    size_t first = (size_t)(strstr(full, stop1) - full);   /* earliest occurrence */
    const char *const s1[] = { stop1 };
    coll_t *c = run_stop(e, prompt, 3, M, s1, 1);
    ck_assert_int_eq(c->finish, ENG_FINISH_STOP);
    ck_assert_uint_eq(c->n_text, first);
    ck_assert(memcmp(c->text, full, first) == 0);
    /* generation stopped at the token that completed the match */
    int k_end = 0;
    while (start[k_end + 1] < first + 3)
        k_end++;
    ck_assert_int_eq(c->n, k_end + 1);
    coll_free(c);

    /* two stop strings: the earlier match wins; a string never completed is released */
    char stop2[8];
    int k2 = 5;
    while (!ASCII(start[k2]) || !ASCII(start[k2] + 1))
        k2++;
    memcpy(stop2, full + start[k2], 2);
    stop2[2] = 0;
    size_t first2 = (size_t)(strstr(full, stop2) - full);
    const char *const s2[] = { stop1, stop2, "never-there" };
    c = run_stop(e, prompt, 3, M, s2, 3);
    ck_assert_int_eq(c->finish, ENG_FINISH_STOP);
    ck_assert_uint_eq(c->n_text, FD_MIN(first, first2));
    ck_assert(memcmp(c->text, full, c->n_text) == 0);
    coll_free(c);

    /* a stop string whose start appears but which never completes: all text, LENGTH */
    char stop3[64];
    size_t k3 = start[M] - 1;
    while (!ASCII(k3))
        k3--;
    snprintf(stop3, sizeof stop3, "%c\x01", full[k3]);
    const char *const s3[] = { stop3 };
    c = run_stop(e, prompt, 3, M, s3, 1);
    ck_assert_int_eq(c->finish, ENG_FINISH_LENGTH);
    ck_assert_uint_eq(c->n_text, start[M]);
    ck_assert(memcmp(c->text, full, start[M]) == 0);
    coll_free(c);

    /* a stop string that starts with the text's very first bytes: nothing is released */
    char stop4[8];
    memcpy(stop4, full, 2);
    stop4[2] = 0;
    const char *const s4[] = { stop4 };
    c = run_stop(e, prompt, 3, M, s4, 1);
    ck_assert_int_eq(c->finish, ENG_FINISH_STOP);
    ck_assert_uint_eq(c->n_text, 0);
    coll_free(c);

    /* Regression (fuzz_stream): a stop string that is not valid UTF-8, starting with the last
     * byte of a character, holds that whole character back (text is released in whole
     * characters); eng_check allowed only the stop string's length less one byte of held
     * text, so the check (on in debug builds and here) aborted the engine.  Never completed:
     * all text, LENGTH. */
    size_t k5 = 0;
    while (k5 < start[M] && (unsigned char)full[k5] < 0xC0)
        k5++;
    ck_assert_uint_lt(k5, start[M]);
    while (((unsigned char)full[k5 + 1] & 0xC0) == 0x80)
        k5++;
    char stop5[3] = { full[k5], '\x01', 0 };
    const char *const s5[] = { stop5 };
    c = run_stop(e, prompt, 3, M, s5, 1);
    ck_assert_int_eq(c->finish, ENG_FINISH_LENGTH);
    ck_assert_uint_eq(c->n_text, start[M]);
    ck_assert(memcmp(c->text, full, start[M]) == 0);
    coll_free(c);
#undef ASCII
    eng_close(e);
    fk_delete(f);
}
END_TEST

START_TEST(test_eos_and_logprobs)
{
    fake_t *f = fk_new();
    eng_params_t p;
    eng_params_default(&p);
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    int32_t prompt[2] = { 5, 6 };
    int32_t ref[30];
    ref_greedy(prompt, 2, 30, ref);

    /* EOS forced after the first token by a bias: STOP, the EOS has its own event */
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = 2;
    q.max_tokens = 30;
    eng_sampling_default(&q.sampling);
    q.sampling.temperature = 0;
    eng_logit_bias_t lb = { FK_EOS, 99.0f };
    q.sampling.logit_bias = &lb;
    q.sampling.n_logit_bias = 1;
    q.sampling.frequency_penalty = 2;   /* after one EOS: -50 + 99 - 2.5 still wins */
    q.sampling.presence_penalty = 0.5f;
    coll_t *c = coll_new();
    q.on_event = on_event;
    q.ud = c;
    ck_assert_int_eq(eng_submit(e, &q, &c->id, NULL, 0), 0);
    coll_wait(c);
    ck_assert_int_eq(c->finish, ENG_FINISH_STOP);
    ck_assert_int_eq(c->n, 1);
    ck_assert_int_eq(c->tok[0], FK_EOS);
    ck_assert_uint_eq(c->n_text, 0);
    coll_free(c);

    /* ignore_eos: the same request runs to max_tokens */
    q.ignore_eos = true;
    c = coll_new();
    q.ud = c;
    ck_assert_int_eq(eng_submit(e, &q, &c->id, NULL, 0), 0);
    coll_wait(c);
    ck_assert_int_eq(c->finish, ENG_FINISH_LENGTH);
    ck_assert_int_eq(c->n, 30);
    coll_free(c);

    /* logprobs: the chosen token is the best alternative, log-softmax of the logits */
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = 2;
    q.max_tokens = 30;
    eng_sampling_default(&q.sampling);
    q.sampling.temperature = 0;
    q.sampling.n_probs = 3;
    c = coll_new();
    q.on_event = on_event;
    q.ud = c;
    ck_assert_int_eq(eng_submit(e, &q, &c->id, NULL, 0), 0);
    coll_wait(c);
    ck_assert_int_eq(c->n, 30);
    int32_t seq[40];
    memcpy(seq, prompt, sizeof prompt);
    for (int k = 0; k < 30; k++) {
        ck_assert_int_eq(c->tok[k], ref[k]);
        ck_assert_int_eq(c->n_top[k], 3);
        ck_assert_int_eq(c->top[k][0].token, ref[k]);
        float lg[FK_VOCAB];
        fk_logits(seq, 2 + k, lg);
        double mx = lg[ref[k]], sum = 0;
        for (int t = 0; t < FK_VOCAB; t++)
            sum += exp((double)lg[t] - mx);
        ck_assert_double_eq_tol(c->lp[k], -log(sum), 1e-5);
        ck_assert_double_eq_tol(c->top[k][0].logprob, c->lp[k], 1e-7);
        ck_assert(c->top[k][1].logprob <= c->top[k][0].logprob);
        ck_assert(c->top[k][2].logprob <= c->top[k][1].logprob);
        seq[2 + k] = ref[k];
    }
    coll_free(c);
    eng_close(e);
    fk_delete(f);
}
END_TEST

START_TEST(test_cancel)
{
    fake_t *f = fk_new();
    f->sleep_us = 1000;
    eng_params_t p;
    eng_params_default(&p);
    p.max_running = 1;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    int32_t prompt[4] = { 1, 2, 3, 4 };

    /* cancelled from another thread mid-generation */
    coll_t *a = coll_new(), *b = coll_new();
    a->stats_eng = e;
    a->hold_at = 3;     /* the engine waits in a's third token until the cancels are in */
    submit(e, prompt, 4, 400, NULL, a);
    submit(e, prompt, 4, 400, NULL, b);      /* waits behind a */
    coll_wait_held(a);
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_int_eq(st.running, 1);
    ck_assert_int_eq(st.waiting, 1);
    ck_assert_int_gt(st.kv_used, 0);
    ck_assert_int_eq(eng_cancel(e, b->id), 0);   /* the waiting one */
    ck_assert_int_eq(eng_cancel(e, a->id), 0);
    ck_assert_int_eq(eng_cancel(e, a->id), 0);   /* twice before it is done: fine */
    coll_release(a);
    coll_wait(b);
    ck_assert_int_eq(b->finish, ENG_FINISH_CANCEL);
    ck_assert_int_eq(b->n, 0);
    coll_wait(a);
    ck_assert_int_eq(a->finish, ENG_FINISH_CANCEL);
    ck_assert_int_eq(a->n, 3);
    /* as DONE is delivered the slot and its KV are already free */
    ck_assert_int_eq(a->stats_at_done.running, 0);
    ck_assert_int_eq(a->stats_at_done.kv_used, 0);
    ck_assert_int_eq(a->stats_at_done.kv_reserved, 0);
    ck_assert_int_eq(eng_cancel(e, a->id), -ENOENT);
    ck_assert_int_eq(eng_cancel(e, 999999), -ENOENT);
    eng_stats(e, &st);
    ck_assert_int_eq(st.running, 0);
    ck_assert_int_eq(st.kv_used, 0);
    pthread_mutex_lock(&f->mu);
    ck_assert(!f->used[0]);
    pthread_mutex_unlock(&f->mu);
    coll_free(a);
    coll_free(b);

    /* cancelled from its own callback after 5 tokens: no token after the next step */
    coll_t *c = coll_new();
    c->cancel_eng = e;
    c->cancel_after = 5;
    submit(e, prompt, 4, 400, NULL, c);
    coll_wait(c);
    ck_assert_int_eq(c->finish, ENG_FINISH_CANCEL);
    ck_assert_int_eq(c->n, 5);
    coll_free(c);

    /* eng_cancel_all: everything ends as cancelled */
    coll_t *d[3];
    for (int i = 0; i < 3; i++) {
        d[i] = coll_new();
        d[i]->hold_at = i == 0 ? 1 : 0;
        submit(e, prompt, 4, 400, NULL, d[i]);
    }
    coll_wait_held(d[0]);
    eng_cancel_all(e);
    coll_release(d[0]);
    for (int i = 0; i < 3; i++) {
        coll_wait(d[i]);
        ck_assert_int_eq(d[i]->finish, ENG_FINISH_CANCEL);
        coll_free(d[i]);
    }
    eng_close(e);
    fk_delete(f);
}
END_TEST

/* eng_slots: a running request holds the lowest free batch place from admission to its end,
 * its events name it, and a request that never ran names none. */
START_TEST(test_batch_places)
{
    fake_t *f = fk_new();
    f->sleep_us = 1000;
    eng_params_t p;
    eng_params_default(&p);
    p.max_running = 2;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    int32_t prompt[4] = { 1, 2, 3, 4 };
    eng_slot_t out[4];
    ck_assert_int_eq(eng_slots(e, out, 4), 0);
    ck_assert_int_eq(eng_info(e)->max_running, 2);

    coll_t *a = coll_new(), *b = coll_new(), *c = coll_new(), *d = coll_new();
    a->hold_at = 5;
    submit(e, prompt, 4, 400, NULL, a);
    submit(e, prompt, 4, 400, NULL, b);
    coll_wait_held(a);
    submit(e, prompt, 4, 400, NULL, c);     /* both places taken: c and d wait */
    submit(e, prompt, 4, 400, NULL, d);
    ck_assert_int_eq(eng_slots(e, out, 4), 2);
    ck_assert(out[0].id == a->id && out[1].id == b->id);  /* admission order */
    ck_assert_int_eq(out[0].slot, 0);
    ck_assert_int_eq(out[1].slot, 1);
    ck_assert_int_eq(eng_slots(e, out, 1), 2);           /* cap: the count still */
    pthread_mutex_lock(&a->mu);
    ck_assert_int_eq(a->slot, 0);
    pthread_mutex_unlock(&a->mu);
    ck_assert_int_eq(eng_cancel(e, d->id), 0);          /* never runs */
    ck_assert_int_eq(eng_cancel(e, b->id), 0);          /* frees place 1 for c */
    coll_release(a);
    coll_wait(d);
    ck_assert_int_eq(d->done_slot, -1);
    coll_wait(b);
    ck_assert_int_eq(b->done_slot, 1);
    /* c takes the place b left, a keeps its own */
    struct timespec ts = { 0, 1000000 };
    for (int i = 0; i < 20000; i++) {
        pthread_mutex_lock(&c->mu);
        int n = c->n;
        pthread_mutex_unlock(&c->mu);
        if (n > 0)
            break;
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&c->mu);
    ck_assert_int_gt(c->n, 0);
    ck_assert_int_eq(c->slot, 1);
    pthread_mutex_unlock(&c->mu);
    int n = eng_slots(e, out, 4);
    ck_assert_int_le(n, 2);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(out[i].slot, out[i].id == a->id ? 0 : 1);
    eng_cancel(e, a->id);
    eng_cancel(e, c->id);
    coll_wait(a);
    coll_wait(c);
    ck_assert_int_eq(a->done_slot, 0);
    ck_assert_int_eq(c->done_slot, 1);
    ck_assert_int_eq(eng_slots(e, out, 4), 0);
    coll_free(a);
    coll_free(b);
    coll_free(c);
    coll_free(d);
    close_fake(e, f);
}
END_TEST

START_TEST(test_bounds_and_bad_requests)
{
    fake_t *f = fk_new();
    f->sleep_us = 500;
    eng_params_t p;
    eng_params_default(&p);
    p.max_running = 1;
    p.max_waiting = 2;
    p.kv_tokens = 300;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    int32_t prompt[FK_CTX + 1];
    make_prompt(prompt, FK_CTX + 1, 5);
    char err[256];
    eng_request_t q;
    memset(&q, 0, sizeof q);
    {
        /* a scripted model has no hidden states: an embedding request is refused */
        coll_t *c = coll_new();
        eng_request_t qe = { .prompt = prompt, .n_prompt = 4, .pooling = ENG_POOL_MEAN,
                             .on_event = on_event, .ud = c };
        eng_sampling_default(&qe.sampling);
        ck_assert_int_eq(eng_submit(e, &qe, &c->id, err, sizeof err), -EINVAL);
        ck_assert_msg(strstr(err, "embeddings"), "%s", err);
        coll_free(c);
    }
    eng_sampling_default(&q.sampling);
    q.on_event = on_event;
    coll_t *c[4];
    for (int i = 0; i < 4; i++)
        c[i] = coll_new();

    /* one running place and two waiting: the fourth is refused, whatever the timing */
    q.prompt = prompt;
    q.n_prompt = 10;
    q.max_tokens = 200;
    for (int i = 0; i < 3; i++) {
        q.ud = c[i];
        ck_assert_int_eq(eng_submit(e, &q, &c[i]->id, err, sizeof err), 0);
    }
    q.ud = c[3];
    ck_assert_int_eq(eng_submit(e, &q, &c[3]->id, err, sizeof err), FD_EFULL);
    ck_assert_msg(strstr(err, "max_waiting 2"), "%s", err);

    /* the context and the KV budget, with the numbers */
    q.n_prompt = 500;
    q.max_tokens = 13;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), FD_ECTX);
    ck_assert_msg(strstr(err, "500") && strstr(err, "13") && strstr(err, "513") &&
                  strstr(err, "512"), "%s", err);
    q.n_prompt = 250;
    q.max_tokens = 51;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), FD_ECTX);
    ck_assert_msg(strstr(err, "301") && strstr(err, "300"), "%s", err);

    /* bad fields */
    q.n_prompt = 4;
    q.max_tokens = -1;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "max_tokens"));
    q.max_tokens = 4;
    q.n_prompt = 0;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "empty prompt"));
    q.n_prompt = 4;
    int32_t bad_prompt[4] = { 1, 2, FK_VOCAB, 3 };
    q.prompt = bad_prompt;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    ck_assert_msg(strstr(err, "token 2 is 48"), "%s", err);
    bad_prompt[2] = -1;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    q.prompt = prompt;
    q.sampling.temperature = -1;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "temperature"));
    q.sampling.temperature = 1;
    const char *const empty_stop[] = { "ok", "" };
    q.stop = empty_stop;
    q.n_stop = 2;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    q.n_stop = ENG_MAX_STOP + 1;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    q.n_stop = 0;
    q.timeout_s = -1;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    q.timeout_s = NAN;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    q.timeout_s = INFINITY;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    q.timeout_s = 0;
    q.on_event = NULL;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    ck_assert_int_eq(eng_submit(e, NULL, NULL, err, sizeof err), -EINVAL);

    for (int i = 0; i < 3; i++)
        eng_cancel(e, c[i]->id);
    for (int i = 0; i < 3; i++) {
        coll_wait(c[i]);
        coll_free(c[i]);
    }
    coll_free(c[3]);     /* refused: never called */
    eng_close(e);
    fk_delete(f);
}
END_TEST

/* ---- the prefix cache ---- */

/* Runs one greedy request to its end and checks it against the sequential reference; returns
 * the collector (the caller frees it) and the prompt tokens the engine prefilled for it. */
static coll_t *pc_run(eng_t *e, const int32_t *prompt, int n_prompt, int max_tokens,
                      uint64_t *prefilled)
{
    eng_stats_t a, b;
    eng_stats(e, &a);
    coll_t *c = coll_new();
    submit(e, prompt, n_prompt, max_tokens, NULL, c);
    coll_wait(c);
    eng_stats(e, &b);
    ck_assert_int_eq(c->finish, ENG_FINISH_LENGTH);
    ck_assert_int_eq(c->n, max_tokens);
    int32_t ref[128];
    ref_greedy(prompt, n_prompt, max_tokens, ref);
    for (int k = 0; k < max_tokens; k++)
        ck_assert_msg(c->tok[k] == ref[k], "token %d: %d, reference %d (%d cached)", k,
                      c->tok[k], ref[k], c->t.n_cached);
    *prefilled = b.prompt_tokens - a.prompt_tokens;
    ck_assert_uint_eq(*prefilled + (uint64_t)c->t.n_cached, (uint64_t)n_prompt);
    return c;
}

/* The most sequences in one step since step log0 (the engine may take the first of two
 * requests submitted together before the second is queued: they still overlap). */
static int fk_most_seqs(fake_t *f, int log0)
{
    int most = 0;
    pthread_mutex_lock(&f->mu);
    for (int s = log0; s < f->n_log; s++)
        most = FD_MAX(most, f->log[s].n);
    pthread_mutex_unlock(&f->mu);
    return most;
}

static void pc_params(eng_params_t *p)
{
    eng_params_default(p);
    p->prefix_cache = true;
    p->prefix_cache_min = 4;
    p->prefill_chunk = 8;
}

START_TEST(test_prefix_cache_reuse)
{
    fake_t *f = fk_new();
    eng_params_t p;
    pc_params(&p);
    p.max_running = 4;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    uint64_t pre;
    int32_t p1[20], p2[64];
    make_prompt(p1, 20, 77);
    coll_t *a = pc_run(e, p1, 20, 10, &pre);
    ck_assert_int_eq(a->t.n_cached, 0);
    ck_assert_uint_eq(pre, 20);
    eng_stats_t st;
    eng_stats(e, &st);
    /* the last sampled token never went into the KV cache */
    ck_assert_int_eq(st.cached_slots, 1);
    ck_assert_int_eq(st.kv_cached, 29);
    ck_assert_int_eq(st.kv_used, 0);
    ck_assert_int_eq(st.kv_reserved, 0);

    /* the next turn: prompt, answer and 5 new tokens: only the last 6 are prefilled */
    memcpy(p2, p1, sizeof p1);
    memcpy(p2 + 20, a->tok, 10 * sizeof *p2);
    make_prompt(p2 + 30, 5, 78);
    coll_t *b = pc_run(e, p2, 35, 12, &pre);
    ck_assert_int_eq(b->t.n_cached, 29);
    ck_assert_uint_eq(pre, 6);
    eng_stats(e, &st);
    ck_assert_uint_eq(st.cache_hits, 1);
    ck_assert_uint_eq(st.cached_tokens, 29);
    ck_assert_int_eq(st.cached_slots, 1);
    ck_assert_int_eq(st.kv_cached, 35 + 12 - 1);

    /* the same prompt again: everything but its last token is reused */
    coll_t *c = pc_run(e, p2, 35, 3, &pre);
    ck_assert_int_eq(c->t.n_cached, 34);
    ck_assert_uint_eq(pre, 1);
    /* a prefix of a cached sequence: the slot is cut back to it */
    coll_t *d = pc_run(e, p1, 12, 6, &pre);
    ck_assert_int_eq(d->t.n_cached, 11);
    ck_assert_uint_eq(pre, 1);
    /* too little in common (3 < prefix_cache_min): a fresh slot, the cached one stays */
    int32_t p3[16];
    make_prompt(p3, 16, 79);
    memcpy(p3, p1, 3 * sizeof *p3);
    p3[3] = p1[3] % (FK_VOCAB - 2) + 1;
    coll_t *g = pc_run(e, p3, 16, 5, &pre);
    ck_assert_int_eq(g->t.n_cached, 0);
    ck_assert_uint_eq(pre, 16);
    /* nothing in common: a fresh slot */
    int32_t p4[9];
    make_prompt(p4, 9, 80);
    p4[0] = p1[0] % (FK_VOCAB - 2) + 1;
    coll_t *h = pc_run(e, p4, 9, 5, &pre);
    ck_assert_int_eq(h->t.n_cached, 0);
    eng_stats(e, &st);
    ck_assert_int_eq(st.cached_slots, 3);
    ck_assert_uint_eq(st.cache_hits, 3);
    ck_assert_uint_eq(st.cache_evictions, 0);
    ck_assert_int_eq(st.kv_cached, (12 + 6 - 1) + (16 + 5 - 1) + (9 + 5 - 1));
    /* a one-token prompt can reuse nothing (its only token must be computed) */
    coll_t *k = pc_run(e, p1, 1, 4, &pre);
    ck_assert_int_eq(k->t.n_cached, 0);
    coll_t *all[] = { a, b, c, d, g, h, k };
    for (size_t i = 0; i < FD_ARRAY_LEN(all); i++)
        coll_free(all[i]);
    eng_close(e);
    fk_delete(f);

    /* off by default: nothing is kept */
    f = fk_new();
    eng_params_default(&p);
    e = open_fake(f, &p, &slot);
    coll_t *x = pc_run(e, p1, 20, 10, &pre);
    coll_t *y = pc_run(e, p2, 35, 4, &pre);
    ck_assert_int_eq(y->t.n_cached, 0);
    ck_assert_uint_eq(pre, 35);
    eng_stats(e, &st);
    ck_assert_int_eq(st.cached_slots, 0);
    ck_assert_uint_eq(st.cache_hits, 0);
    coll_free(x);
    coll_free(y);
    close_fake(e, f);
}
END_TEST

START_TEST(test_prefix_cache_eviction)
{
    fake_t *f = fk_new();
    f->n_slots = 2;
    eng_params_t p;
    pc_params(&p);
    p.max_running = 2;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    uint64_t pre;
    int32_t pa[40], pb[40], pc[12], pd[12];
    make_prompt(pa, 40, 91);
    make_prompt(pb, 40, 92);
    make_prompt(pc, 12, 93);
    make_prompt(pd, 12, 94);
    pb[0] = pa[0] % (FK_VOCAB - 2) + 1;
    pc[0] = pb[0] % (FK_VOCAB - 2) + 1;
    pd[0] = pc[0] % (FK_VOCAB - 2) + 1;
    coll_t *a = pc_run(e, pa, 30, 5, &pre);
    coll_t *b = pc_run(e, pb, 30, 5, &pre);
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_int_eq(st.cached_slots, 2);     /* every slot cached */
    /* a new prompt: the least recently cached (a's) goes */
    coll_t *c = pc_run(e, pc, 12, 5, &pre);
    eng_stats(e, &st);
    ck_assert_uint_eq(st.cache_evictions, 1);
    ck_assert_int_eq(st.cached_slots, 2);
    coll_t *b2 = pc_run(e, pb, 40, 5, &pre);
    ck_assert_int_eq(b2->t.n_cached, 30);
    coll_t *a2 = pc_run(e, pa, 40, 5, &pre);
    ck_assert_int_eq(a2->t.n_cached, 0);
    /* two new prompts while both slots are cached: both run together */
    fk_gate(f, true);
    int log0 = f->n_log;
    coll_t *x = coll_new(), *y = coll_new();
    submit(e, pc, 12, 5, NULL, x);
    submit(e, pd, 12, 5, NULL, y);
    fk_gate(f, false);
    coll_wait(x);
    coll_wait(y);
    ck_assert_int_eq(x->finish, ENG_FINISH_LENGTH);
    ck_assert_int_eq(y->finish, ENG_FINISH_LENGTH);
    ck_assert_int_eq(fk_most_seqs(f, log0), 2);
    coll_t *all[] = { a, b, c, b2, a2, x, y };
    for (size_t i = 0; i < FD_ARRAY_LEN(all); i++)
        coll_free(all[i]);
    eng_close(e);
    fk_delete(f);

    /* one slot, no waiting room: a cached slot never makes a request FD_EFULL */
    f = fk_new();
    f->n_slots = 1;
    pc_params(&p);
    p.max_running = 1;
    p.max_waiting = 0;
    e = open_fake(f, &p, &slot);
    a = pc_run(e, pa, 30, 5, &pre);
    b = pc_run(e, pb, 30, 5, &pre);
    ck_assert_int_eq(b->t.n_cached, 0);
    eng_stats(e, &st);
    ck_assert_uint_eq(st.cache_evictions, 1);
    coll_free(a);
    coll_free(b);
    close_fake(e, f);
}
END_TEST

START_TEST(test_prefix_cache_kv_budget)
{
    /* 100 KV tokens: a finished request leaves 59 cached; requests that fit the budget
     * without the cache are admitted at once, evicting it */
    fake_t *f = fk_new();
    eng_params_t p;
    pc_params(&p);
    p.max_running = 4;
    p.kv_tokens = 100;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    uint64_t pre;
    int32_t pa[64], pb[64], pc[64];
    make_prompt(pa, 64, 101);
    make_prompt(pb, 64, 102);
    make_prompt(pc, 64, 103);
    pb[0] = pa[0] % (FK_VOCAB - 2) + 1;
    pc[0] = pb[0] % (FK_VOCAB - 2) + 1;
    coll_t *a = pc_run(e, pa, 30, 30, &pre);
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_int_eq(st.kv_cached, 59);
    /* the whole budget in one request */
    coll_t *b = pc_run(e, pb, 50, 50, &pre);
    eng_stats(e, &st);
    ck_assert_uint_eq(st.cache_evictions, 1);
    ck_assert_int_eq(st.kv_cached, 99);
    /* two that fit together run together */
    fk_gate(f, true);
    int log0 = f->n_log;
    coll_t *x = coll_new(), *y = coll_new();
    submit(e, pa, 20, 30, NULL, x);
    submit(e, pc, 20, 30, NULL, y);
    fk_gate(f, false);
    coll_wait(x);
    coll_wait(y);
    ck_assert_int_eq(x->finish, ENG_FINISH_LENGTH);
    ck_assert_int_eq(y->finish, ENG_FINISH_LENGTH);
    ck_assert_int_eq(fk_most_seqs(f, log0), 2);
    /* a reused prefix moves from the cache to the request's reservation: a prompt
     * extending a cached one as large as the budget still fits */
    eng_stats(e, &st);
    int32_t big[64];
    memcpy(big, pa, 20 * sizeof *big);
    memcpy(big + 20, x->tok, 30 * sizeof *big);
    coll_t *z = pc_run(e, big, 50, 50, &pre);
    ck_assert_int_eq(z->t.n_cached, 49);
    eng_stats(e, &st);
    ck_assert_int_le(st.kv_cached + st.kv_reserved, 100);
    coll_t *all[] = { a, b, x, y, z };
    for (size_t i = 0; i < FD_ARRAY_LEN(all); i++)
        coll_free(all[i]);
    close_fake(e, f);
}
END_TEST

START_TEST(test_prefix_cache_cancel_and_error)
{
    fake_t *f = fk_new();
    eng_params_t p;
    pc_params(&p);
    p.max_running = 2;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    uint64_t pre;
    int32_t pa[40];
    make_prompt(pa, 40, 111);

    /* a failed step: its slot is not kept, the same prompt is prefilled in full */
    f->fail_at_step = f->n_log + 3;
    coll_t *a = coll_new();
    submit(e, pa, 30, 20, NULL, a);
    coll_wait(a);
    ck_assert_int_eq(a->finish, ENG_FINISH_ERROR);
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_int_eq(st.cached_slots, 0);
    ck_assert_int_eq(st.kv_cached, 0);
    coll_t *b = pc_run(e, pa, 30, 5, &pre);
    ck_assert_int_eq(b->t.n_cached, 0);
    ck_assert_uint_eq(pre, 30);

    /* cancelled in the middle of its prefill (the model held in its first chunk): the
     * chunk that went in is valid and reused, the rest is prefilled */
    int32_t pb[40];
    make_prompt(pb, 40, 112);
    pb[0] = pa[0] % (FK_VOCAB - 2) + 1;
    fk_gate(f, true);
    coll_t *c = coll_new();
    submit(e, pb, 40, 5, NULL, c);
    /* admitted (published before its first step, which waits at the gate) */
    for (int i = 0; i < 5000; i++) {
        eng_stats(e, &st);
        if (st.running == 1)
            break;
        usleep(1000);
    }
    ck_assert_int_eq(st.running, 1);
    ck_assert_int_eq(eng_cancel(e, c->id), 0);
    fk_gate(f, false);
    coll_wait(c);
    ck_assert_int_eq(c->finish, ENG_FINISH_CANCEL);
    ck_assert_int_eq(c->n, 0);
    eng_stats(e, &st);
    ck_assert_int_eq(st.kv_cached, 30 + 5 - 1 + 8);
    coll_t *d = pc_run(e, pb, 40, 5, &pre);
    ck_assert_int_eq(d->t.n_cached, 8);
    ck_assert_uint_eq(pre, 32);

    /* cancelled mid-generation: prompt and the tokens decoded so far are reused */
    coll_t *g = coll_new();
    g->hold_at = 4;
    submit(e, pa, 20, 100, NULL, g);
    coll_wait_held(g);
    ck_assert_int_eq(eng_cancel(e, g->id), 0);
    coll_release(g);
    coll_wait(g);
    ck_assert_int_eq(g->finish, ENG_FINISH_CANCEL);
    int32_t next[64];
    memcpy(next, pa, 20 * sizeof *next);
    memcpy(next + 20, g->tok, (size_t)g->n * sizeof *next);
    make_prompt(next + 20 + g->n, 6, 113);
    coll_t *h = pc_run(e, next, 26 + g->n, 5, &pre);
    ck_assert_int_eq(h->t.n_cached, 20 + g->n - 1);
    coll_t *all[] = { a, b, c, d, g, h };
    for (size_t i = 0; i < FD_ARRAY_LEN(all); i++)
        coll_free(all[i]);
    close_fake(e, f);
}
END_TEST

START_TEST(test_prefix_cache_params)
{
    fake_t *f = fk_new();
    eng_params_t p;
    pc_params(&p);
    p.prefix_cache_min = -1;
    eng_driver_t d = {
        .ctx = f, .n_vocab = FK_VOCAB, .n_ctx = FK_CTX, .n_slots = f->n_slots,
        .seq_alloc = fk_seq_alloc, .seq_free = fk_seq_free, .seq_len = fk_seq_len,
        .decode = fk_decode, .is_eog = fk_is_eog, .stream_init = fk_stream_init,
        .stream_push = fk_stream_push, .stream_flush = fk_stream_flush, .close = fk_close,
    };
    eng_t *e = NULL;
    char err[256];
    ck_assert_int_eq(eng_open_driver(&e, &p, &d, err, sizeof err), FD_ECONFIG);
    ck_assert_msg(strstr(err, "prefix_cache_min -1"), "%s", err);
    ck_assert_ptr_null(e);
    /* a driver that cannot truncate: the cache stays off */
    p.prefix_cache_min = 4;
    f->n_closed = 0;
    ck_assert_int_eq(eng_open_driver(&e, &p, &d, err, sizeof err), 0);
    int32_t pa[20];
    make_prompt(pa, 20, 121);
    uint64_t pre;
    coll_t *a = pc_run(e, pa, 20, 5, &pre);
    coll_t *b = pc_run(e, pa, 20, 5, &pre);
    ck_assert_int_eq(b->t.n_cached, 0);
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_int_eq(st.cached_slots, 0);
    coll_free(a);
    coll_free(b);
    eng_close(e);
    fk_delete(f);
}
END_TEST

START_TEST(test_bad_engine_params)
{
    fake_t *f = fk_new();
    eng_driver_t d = {
        .ctx = f, .n_vocab = FK_VOCAB, .n_ctx = FK_CTX, .n_slots = FK_SLOTS,
        .seq_alloc = fk_seq_alloc, .seq_free = fk_seq_free, .decode = fk_decode,
        .is_eog = fk_is_eog, .stream_init = fk_stream_init, .stream_push = fk_stream_push,
        .stream_flush = fk_stream_flush, .close = fk_close,
    };
    char err[256];
    eng_params_t p;
    eng_t *e = (eng_t *)1;
    int cases = 0;
    for (int k = 0; k < 5; k++) {
        eng_params_default(&p);
        if (k == 0) p.max_running = 0;
        if (k == 1) p.max_waiting = -1;
        if (k == 2) p.prefill_chunk = 0;
        if (k == 3) p.kv_tokens = -5;
        if (k == 4) p.max_batch_tokens = -1;
        ck_assert_int_eq(eng_open_driver(&e, &p, &d, err, sizeof err), FD_ECONFIG);
        ck_assert_ptr_null(e);
        cases++;
    }
    ck_assert_int_eq(f->n_closed, cases);
    eng_driver_t bad = d;
    bad.decode = NULL;
    ck_assert_int_eq(eng_open_driver(&e, &p, &bad, err, sizeof err), -EINVAL);
    ck_assert_int_eq(f->n_closed, cases + 1);
    pthread_mutex_destroy(&f->mu);
    free(f);
}
END_TEST

START_TEST(test_timeout)
{
    fake_t *f = fk_new();
    f->sleep_us = 2000;
    eng_params_t p;
    eng_params_default(&p);
    p.max_running = 1;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    int32_t prompt[4] = { 9, 8, 7, 6 };
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = 4;
    q.max_tokens = 400;
    eng_sampling_default(&q.sampling);
    q.sampling.temperature = 0;
    /* a's first token must come before its limit (a bound only a loaded machine reaches:
     * scaled), and its 400 tokens cannot (2 ms each: 0.8 s), so a is cut */
    const double limit = 0.3;
    q.timeout_s = limit;
    q.on_event = on_event;
    coll_t *a = coll_new(), *b = coll_new();
    q.ud = a;
    ck_assert_int_eq(eng_submit(e, &q, &a->id, NULL, 0), 0);
    q.timeout_s = 0.03;     /* queued behind a the whole time */
    q.ud = b;
    ck_assert_int_eq(eng_submit(e, &q, &b->id, NULL, 0), 0);
    coll_wait(b);
    ck_assert_int_eq(b->finish, ENG_FINISH_TIMEOUT);
    ck_assert_int_eq(b->n, 0);
    ck_assert_double_ge(b->t.total_s, 0.03);
    coll_wait(a);
    ck_assert_int_eq(a->finish, ENG_FINISH_TIMEOUT);
    ck_assert_int_gt(a->n, 0);
    ck_assert_int_lt(a->n, 400);
    ck_assert_double_ge(a->t.total_s, limit);
    ck_assert_double_lt(a->t.total_s, limit + 0.7 * tu_time_scale());
    /* what was delivered is the start of the greedy text */
    int32_t ref[400];
    ref_greedy(prompt, 4, a->n, ref);
    ck_assert(memcmp(a->tok, ref, (size_t)a->n * sizeof(int32_t)) == 0);
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_int_eq(st.running, 0);
    ck_assert_int_eq(st.kv_reserved, 0);
    coll_free(a);
    coll_free(b);
    eng_close(e);
    fk_delete(f);
}
END_TEST

/* A long prompt admitted while a stream runs: it prefills in chunks, and the running stream
 * gets its token in every one of those steps. */
START_TEST(test_chunked_prefill_interleaves)
{
    fake_t *f = fk_new();
    f->sleep_us = 300;
    f->dev_per_step = 0.001;
    eng_params_t p;
    eng_params_default(&p);
    p.max_running = 3;
    p.prefill_chunk = 8;
    p.max_batch_tokens = 12;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    int32_t pa[3] = { 1, 2, 3 }, pb[100], pc[30];
    make_prompt(pb, 100, 77);
    make_prompt(pc, 30, 78);
    coll_t *a = coll_new(), *b = coll_new(), *c = coll_new();
    a->hold_at = 2;     /* a loaded machine must not let a finish before b and c are queued */
    submit(e, pa, 3, 120, NULL, a);
    coll_wait_held(a);
    submit(e, pb, 100, 5, NULL, b);
    submit(e, pc, 30, 5, NULL, c);
    coll_release(a);
    coll_wait(b);
    coll_wait(c);
    coll_wait(a);
    ck_assert_int_eq(a->n, 120);
    int32_t ref[120];
    ref_greedy(pa, 3, 120, ref);
    ck_assert(memcmp(a->tok, ref, sizeof ref) == 0);
    /* a's slot is 0 (first admitted); b and c take 1 and 2 */
    pthread_mutex_lock(&f->mu);
    int prefill_steps_b = 0, steps_with_both = 0, a_steps = 0, a_first = -1, a_last = -1;
    for (int s = 0; s < f->n_log; s++) {
        const fk_step_t *st = &f->log[s];
        int total = 0;
        bool has_a = false, b_prefill = false;
        for (int i = 0; i < st->n; i++) {
            total += st->n_tokens[i];
            if (st->slot[i] == 0) {
                has_a = true;
                if (st->pos[i] >= 3) {
                    ck_assert_int_eq(st->n_tokens[i], 1);
                    a_steps++;
                    if (a_first < 0)
                        a_first = s;
                    a_last = s;
                }
            }
            if (st->slot[i] == 1 && st->pos[i] < 100) {
                b_prefill = true;
                prefill_steps_b++;
                ck_assert_int_le(st->n_tokens[i], 8);
                ck_assert(st->want[i] == (st->pos[i] + st->n_tokens[i] == 100));
            }
        }
        ck_assert_int_le(total, 12);
        if (b_prefill) {
            ck_assert_msg(has_a, "step %d: b prefills, a has no token", s);
            steps_with_both += has_a;
        }
    }
    /* a decoded in every step from its first decode to its last */
    ck_assert_int_eq(a_steps, a_last - a_first + 1);
    /* b's 100 prompt tokens took at least ceil(100 / 8) steps, each with a's token */
    ck_assert_int_ge(prefill_steps_b, 13);
    ck_assert_int_eq(steps_with_both, prefill_steps_b);
    pthread_mutex_unlock(&f->mu);
    /* device time: every step a request took part in */
    ck_assert_double_ge(a->t.device_s, 0.001 * 120 - 1e-9);
    ck_assert_double_gt(b->t.prefill_s, 0);
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_double_gt(st.ops.dev_total_s, 0);
    ck_assert_int_le(st.last_batch_tokens, 12);
    coll_free(a);
    coll_free(b);
    coll_free(c);
    close_fake(e, f);
}
END_TEST

START_TEST(test_decode_error)
{
    fake_t *f = fk_new();
    f->fail_at_step = 4;
    eng_params_t p;
    eng_params_default(&p);
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    int32_t prompt[2] = { 1, 2 };
    coll_t *a = coll_new(), *b = coll_new();
    a->stats_eng = e;
    submit(e, prompt, 2, 50, NULL, a);
    coll_wait(a);
    ck_assert_int_eq(a->finish, ENG_FINISH_ERROR);
    ck_assert_msg(strstr(a->error, "backend error"), "%s", a->error);
    ck_assert_int_eq(a->n, 3);
    ck_assert_int_eq(a->stats_at_done.running, 0);
    /* the engine goes on */
    submit(e, prompt, 2, 5, NULL, b);
    coll_wait(b);
    ck_assert_int_eq(b->finish, ENG_FINISH_LENGTH);
    coll_free(a);
    coll_free(b);
    eng_close(e);
    fk_delete(f);
}
END_TEST

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *close_engine(void *e)
{
    eng_close(e);
    return NULL;
}

START_TEST(test_idle_and_close)
{
    fake_t *f = fk_new();
    f->sleep_us = 1000;
    eng_params_t p;
    eng_params_default(&p);
    p.max_running = 2;
    p.max_waiting = 2;
    eng_t *e, *slot;
    e = open_fake(f, &p, &slot);
    /* idle: no steps, (almost) no CPU */
    double c0 = cpu_seconds();
    usleep(200000);
    double used = cpu_seconds() - c0;
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_uint_eq(st.steps, 0);
    ck_assert_msg(used < 0.05, "idle engine used %.3f s of CPU in 0.2 s", used);
    /* eng_close ends running and waiting requests as cancelled, then frees everything */
    int32_t prompt[3] = { 4, 5, 6 };
    coll_t *c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = coll_new();
        c[i]->hold_at = i == 0 ? 2 : 0;
        submit(e, prompt, 3, 300, NULL, c[i]);
    }
    /* The engine waits in c[0]'s second token while eng_close (on another thread) asks it
     * to stop: a submit answers -ESHUTDOWN from then on (FD_EFULL before: the queue is
     * full), and only then is the engine let go, so nothing can finish on its own. */
    coll_wait_held(c[0]);
    pthread_t closer;
    ck_assert_int_eq(pthread_create(&closer, NULL, close_engine, e), 0);
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = 3;
    q.max_tokens = 5;
    eng_sampling_default(&q.sampling);
    q.on_event = on_event;
    int rc;
    while ((rc = eng_submit(e, &q, NULL, NULL, 0)) == FD_EFULL)
        usleep(1000);
    ck_assert_int_eq(rc, -ESHUTDOWN);
    coll_release(c[0]);
    pthread_join(closer, NULL);
    for (int i = 0; i < 4; i++) {
        ck_assert(c[i]->done);
        ck_assert_int_eq(c[i]->finish, ENG_FINISH_CANCEL);
        coll_free(c[i]);
    }
    fk_delete(f);
}
END_TEST


/* ---- the real model: stories260K ---- */

/* Parameters for stories260K on one thread (the tests set the rest). */
static void stories_params(eng_params_t *p)
{
    eng_params_default(p);
    p->model_path = tu_shared("models/stories260K.gguf", 1);
    p->threads = 1;
}

/* Opens an engine with p, eng_check run after every step (its failures counted in
 * n_check_failures; *slot is the engine the hook checks). */
static eng_t *open_checked(eng_params_t *p, eng_t **slot)
{
    p->check = true;
    p->on_step = on_step_check;
    p->on_step_ud = slot;
    *slot = NULL;
    char err[512];
    eng_t *e = NULL;
    int rc = eng_open(&e, p, err, sizeof err);
    ck_assert_msg(rc == 0, "eng_open: %s", err);
    *slot = e;
    return e;
}

static eng_t *open_model(int max_running, int max_waiting, int prefill_chunk, int max_batch,
                         eng_t **slot)
{
    eng_params_t p;
    stories_params(&p);
    p.max_running = max_running;
    p.max_waiting = max_waiting;
    p.prefill_chunk = prefill_chunk;
    p.max_batch_tokens = max_batch;
    return open_checked(&p, slot);
}

/* The reference ids and text of stories260K.reference.json. */
static int load_reference(int32_t *ids, int cap, char *text, size_t text_cap)
{
    const char *path = tu_shared("models/stories260K.reference.json", 1);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    ck_assert_ptr_nonnull(j);
    const cJSON *gen = cJSON_GetObjectItem(j, "generated_ids");
    const cJSON *txt = cJSON_GetObjectItem(j, "text");
    ck_assert(cJSON_IsArray(gen) && cJSON_IsString(txt));
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, gen)
    {
        ck_assert_int_lt(k, cap);
        ids[k++] = (int32_t)it->valueint;
    }
    snprintf(text, text_cap, "%s", txt->valuestring);
    cJSON_Delete(j);
    return k;
}

static int encode(const tok_t *t, const char *text, int32_t *ids, size_t cap)
{
    size_t n = 0;
    ck_assert_int_eq(tok_encode(t, text, strlen(text), true, false, ids, cap, &n), 0);
    return (int)n;
}

START_TEST(test_model_reference)
{
    eng_t *e, *slot;
    e = open_model(4, 8, 256, 0, &slot);
    const eng_info_t *info = eng_info(e);
    ck_assert_str_eq(info->arch, "llama");
    ck_assert_str_eq(info->backend, "cpu");
    ck_assert_int_eq(info->n_vocab, 512);
    ck_assert_int_gt(info->n_ctx, 200);
    ck_assert(info->model_id && info->model_id[0]);
    const tok_t *tok = eng_tokenizer(e);
    ck_assert_ptr_nonnull(tok);
    int32_t ref[256];
    static char ref_text[8192];
    int n_ref = load_reference(ref, 256, ref_text, sizeof ref_text);
    ck_assert_int_eq(n_ref, 200);
    int32_t bos = tok_bos(tok);
    ck_assert_int_eq(bos, 1);
    coll_t *c = coll_new();
    submit(e, &bos, 1, 200, NULL, c);
    coll_wait(c);
    ck_assert_int_eq(c->finish, ENG_FINISH_LENGTH);
    ck_assert_int_eq(c->n, 200);
    for (int k = 0; k < 200; k++)
        ck_assert_msg(c->tok[k] == ref[k], "token %d: %d, reference %d", k, c->tok[k], ref[k]);
    ck_assert_uint_eq(c->n_text, strlen(ref_text));
    ck_assert(memcmp(c->text, ref_text, c->n_text) == 0);
    ck_assert_double_gt(c->t.ttft_s, 0);
    ck_assert_double_ge(c->t.decode_s, 0);
    ck_assert_int_eq(c->t.n_prompt, 1);
    coll_free(c);

    /* a stop string across token boundaries: trimmed, generation ends there */
    const char *const stop[] = { "little girl" };
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = &bos;
    q.n_prompt = 1;
    q.max_tokens = 200;
    eng_sampling_default(&q.sampling);
    q.sampling.temperature = 0;
    q.stop = stop;
    q.n_stop = 1;
    c = coll_new();
    q.on_event = on_event;
    q.ud = c;
    ck_assert_int_eq(eng_submit(e, &q, &c->id, NULL, 0), 0);
    coll_wait(c);
    ck_assert_int_eq(c->finish, ENG_FINISH_STOP);
    const char *want = "Once upon a time, there was a ";
    ck_assert_uint_eq(c->n_text, strlen(want));
    ck_assert(memcmp(c->text, want, c->n_text) == 0);
    ck_assert_int_lt(c->n, 20);
    for (int k = 0; k < c->n; k++)
        ck_assert_int_eq(c->tok[k], ref[k]);
    coll_free(c);
    eng_close(e);
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}
END_TEST

START_TEST(test_model_concurrent_equals_alone)
{
    enum { N = 16 };
    static const char *const texts[N] = {
        "Once upon a time", "The cat", "Lily and Ben went to the park", "One day",
        "Tom had a big red ball. He", "The sun was shining and the birds", "Mom said",
        "There was a little dog named Max", "A boy", "She", "The little girl wanted to play",
        "They were happy", "Tim saw a bird in the sky. The bird", "It was a cold day",
        "Sue liked to", "The end",
    };
    eng_t *e, *slot;
    e = open_model(16, 32, 8, 64, &slot);
    const tok_t *tok = eng_tokenizer(e);
    int32_t prompts[N][64];
    int n_prompt[N], max_tok[N];
    coll_t *alone[N];
    for (int i = 0; i < N; i++) {
        n_prompt[i] = encode(tok, texts[i], prompts[i], 64);
        max_tok[i] = 20 + (i * 17) % 60;
        alone[i] = coll_new();
        submit(e, prompts[i], n_prompt[i], max_tok[i], NULL, alone[i]);
        coll_wait(alone[i]);
    }
    coll_t *c[N];
    for (int i = 0; i < N; i++) {
        c[i] = coll_new();
        submit(e, prompts[i], n_prompt[i], max_tok[i], NULL, c[i]);
    }
    int most_running = 0;
    for (int i = 0; i < N; i++) {
        coll_wait(c[i]);
        ck_assert_int_eq(c[i]->finish, alone[i]->finish);
        ck_assert_int_eq(c[i]->n, alone[i]->n);
        for (int k = 0; k < c[i]->n; k++)
            ck_assert_msg(c[i]->tok[k] == alone[i]->tok[k],
                          "request %d token %d: %d together, %d alone", i, k, c[i]->tok[k],
                          alone[i]->tok[k]);
        ck_assert_uint_eq(c[i]->n_text, alone[i]->n_text);
        ck_assert(memcmp(c[i]->text, alone[i]->text, c[i]->n_text) == 0);
        coll_free(c[i]);
        coll_free(alone[i]);
    }
    (void)most_running;
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_int_eq(st.running, 0);
    ck_assert_int_eq(st.kv_used, 0);
    ck_assert_uint_gt(st.steps, 0);
    ck_assert_uint_gt(st.ops.calls[FB_OP_GEMM], 0);
    eng_close(e);
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}
END_TEST

START_TEST(test_model_seed_cancel_bounds)
{
    eng_t *e, *slot;
    e = open_model(1, 1, 256, 0, &slot);
    const tok_t *tok = eng_tokenizer(e);
    int32_t prompt[32];
    int n = encode(tok, "Once upon a time", prompt, 32);
    eng_sampling_t s;
    eng_sampling_default(&s);
    s.temperature = 0.9f;
    s.top_p = 0.95f;
    s.top_k = 40;
    s.seed = 2026;
    s.has_seed = true;
    coll_t *a = coll_new(), *b = coll_new(), *c = coll_new();
    submit(e, prompt, n, 60, &s, a);
    submit(e, prompt, n, 60, &s, b);
    coll_wait(a);
    coll_wait(b);
    s.seed = 2027;
    submit(e, prompt, n, 60, &s, c);
    coll_wait(c);
    ck_assert_int_eq(a->n, b->n);
    ck_assert(memcmp(a->tok, b->tok, (size_t)a->n * sizeof(int32_t)) == 0);
    ck_assert(a->n_text == b->n_text && memcmp(a->text, b->text, a->n_text) == 0);
    ck_assert(a->n != c->n || memcmp(a->tok, c->tok, (size_t)a->n * sizeof(int32_t)) != 0);
    coll_free(a);
    coll_free(b);
    coll_free(c);

    /* one running, one waiting: a third is refused */
    char err[256];
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = (size_t)n;
    q.max_tokens = 400;
    eng_sampling_default(&q.sampling);
    q.sampling.temperature = 0;
    q.sampling.n_probs = 2;
    q.on_event = on_event;
    coll_t *r1 = coll_new(), *r2 = coll_new();
    r1->cancel_eng = e;
    r1->cancel_after = 10;    /* cancels itself mid-generation */
    r1->stats_eng = e;
    /* r1 holds the engine at its first token: left to run, it could reach its cancel and
     * let r2 in before the third submit, which would then find room */
    r1->hold_at = 1;
    q.ud = r1;
    ck_assert_int_eq(eng_submit(e, &q, &r1->id, err, sizeof err), 0);
    coll_wait_held(r1);
    q.ud = r2;
    ck_assert_int_eq(eng_submit(e, &q, &r2->id, err, sizeof err), 0);
    eng_stats_t st;
    eng_stats(e, &st);
    ck_assert_int_eq(st.running, 1);
    ck_assert_int_eq(st.waiting, 1);
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), FD_EFULL);
    ck_assert_msg(strstr(err, "1 requests waiting, 1 running"), "%s", err);
    /* beyond the context, with the numbers */
    const eng_info_t *info = eng_info(e);
    q.max_tokens = info->n_ctx - n + 1;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), FD_ECTX);
    char num[32];
    snprintf(num, sizeof num, "%d", info->n_ctx);
    ck_assert_msg(strstr(err, num) && strstr(err, "context window"), "%s", err);
    coll_release(r1);
    coll_wait(r1);
    ck_assert_int_eq(r1->finish, ENG_FINISH_CANCEL);
    ck_assert_int_eq(r1->n, 10);
    ck_assert_int_eq(r1->n_top[0], 2);
    ck_assert(r1->lp[0] <= 0 && r1->top[0][0].logprob == r1->lp[0]);
    /* r2 is admitted at the step that ends r1: running stays 1 (r2), r1's KV is gone */
    ck_assert_int_le(r1->stats_at_done.running, 1);
    ck_assert_int_eq(r1->stats_at_done.kv_reserved, r1->stats_at_done.running ? n + 400 : 0);
    ck_assert_int_eq(eng_cancel(e, r2->id), 0);
    coll_wait(r2);
    ck_assert_int_eq(r2->finish, ENG_FINISH_CANCEL);
    eng_stats(e, &st);
    ck_assert_int_eq(st.running, 0);
    ck_assert_int_eq(st.waiting, 0);
    ck_assert_int_eq(st.kv_used, 0);
    ck_assert_int_eq(st.kv_reserved, 0);
    coll_free(r1);
    coll_free(r2);

    /* a time limit shorter than the generation: the engine is held at the first token until
     * the limit has passed (a fast machine could otherwise finish all 450 in time), so the
     * next step must end it */
    q.max_tokens = 450;
    q.timeout_s = 0.02;
    coll_t *t = coll_new();
    t->hold_at = 1;
    q.ud = t;
    ck_assert_int_eq(eng_submit(e, &q, &t->id, err, sizeof err), 0);
    double t_submitted = fd_now_s();    /* not before the engine's own submit time */
    coll_wait_held(t);
    while (fd_now_s() - t_submitted < 0.025)
        usleep(2000);
    coll_release(t);
    coll_wait(t);
    ck_assert_int_eq(t->finish, ENG_FINISH_TIMEOUT);
    ck_assert_int_eq(t->n, 1);
    ck_assert_double_ge(t->t.total_s, 0.02);
    coll_free(t);
    eng_close(e);
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}
END_TEST

/* Step log for the interleaving test: (sequences, tokens) per step, and the step each token
 * of the running stream arrived in. */
static int ml_steps;
static int ml_seqs[4096], ml_tok[4096];
static eng_t *ml_eng;

static void ml_on_step(void *ud, double seconds, int seqs, int tokens)
{
    if (ml_steps < 4096) {
        ml_seqs[ml_steps] = seqs;
        ml_tok[ml_steps] = tokens;
    }
    ml_steps++;
    on_step_check(&ml_eng, seconds, seqs, tokens);
}

typedef struct stamp {
    coll_t c;
    int step_of[CO_MAX];
} stamp_t;

static void on_event_stamp(void *ud, const eng_event_t *ev)
{
    stamp_t *s = ud;
    if (ev->type == ENG_EV_TOKEN && s->c.n < CO_MAX)
        s->step_of[s->c.n] = ml_steps;   /* tokens of step k arrive before its on_step */
    on_event(&s->c, ev);
}

START_TEST(test_model_prefill_interleaves)
{
    const char *path = tu_shared("models/stories260K.gguf", 1);
    eng_params_t p;
    eng_params_default(&p);
    p.model_path = path;
    p.threads = 1;
    p.max_running = 2;
    p.prefill_chunk = 16;
    p.max_batch_tokens = 17;
    p.check = true;
    p.on_step = ml_on_step;
    char err[512];
    ck_assert_int_eq(eng_open(&ml_eng, &p, err, sizeof err), 0);
    eng_t *e = ml_eng;
    const tok_t *tok = eng_tokenizer(e);
    int32_t pa[16], pb[400];
    int na = encode(tok, "Once upon a time", pa, 16);
    /* a long prompt: the reference story's ids, 300 of them */
    static char ref_text[8192];
    int32_t ref[256];
    load_reference(ref, 256, ref_text, sizeof ref_text);
    pb[0] = tok_bos(tok);
    for (int i = 1; i < 300; i++)
        pb[i] = ref[(i - 1) % 200];
    stamp_t *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    pthread_mutex_init(&a->c.mu, NULL);
    pthread_cond_init(&a->c.cv, NULL);
    pthread_mutex_init(&b->c.mu, NULL);
    pthread_cond_init(&b->c.cv, NULL);
    eng_request_t q;
    memset(&q, 0, sizeof q);
    eng_sampling_default(&q.sampling);
    q.sampling.temperature = 0;
    q.ignore_eos = true;
    q.on_event = on_event_stamp;
    q.prompt = pa;
    q.n_prompt = (size_t)na;
    q.max_tokens = 150;
    q.ud = a;
    /* the engine waits at a's third token until b is queued: a loaded machine could
     * otherwise let a run far ahead, leaving b's chunks too few steps beside it */
    a->c.hold_at = 3;
    ck_assert_int_eq(eng_submit(e, &q, &a->c.id, err, sizeof err), 0);
    coll_wait_held(&a->c);
    q.prompt = pb;
    q.n_prompt = 300;
    q.max_tokens = 3;
    q.ud = b;
    ck_assert_int_eq(eng_submit(e, &q, &b->c.id, err, sizeof err), 0);
    coll_release(&a->c);
    coll_wait(&b->c);
    coll_wait(&a->c);
    ck_assert_int_eq(a->c.n, 150);
    ck_assert_int_eq(b->c.n, 3);
    /* a got one token in every step of its life */
    for (int k = 1; k < a->c.n; k++)
        ck_assert_int_eq(a->step_of[k], a->step_of[k - 1] + 1);
    /* b's prompt went in chunks of 16 beside a's token: 2 sequences, 17 tokens a step */
    int b_first = b->step_of[0], chunk_steps = 0;
    for (int s = 0; s < b_first && s < 4096; s++) {
        ck_assert_int_le(ml_tok[s], 17);
        if (ml_seqs[s] == 2)
            chunk_steps++;
    }
    ck_assert_int_ge(chunk_steps, 300 / 16);
    ck_assert_int_gt(b_first, a->step_of[0] + 300 / 16);
    ck_assert_int_lt(b_first, a->step_of[a->c.n - 1]);
    ck_assert_double_gt(b->c.t.prefill_s, 0);
    eng_close(e);
    ml_eng = NULL;
    for (int i = 0; i < 2; i++) {
        stamp_t *s = i ? b : a;
        ck_assert_int_eq(s->c.after_done, 0);
        pthread_cond_destroy(&s->c.cv);
        pthread_mutex_destroy(&s->c.mu);
        free(s);
    }
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}
END_TEST

/* A three-turn conversation on stories260K with and without the prefix cache: each turn's
 * prompt is the previous prompt and answer plus new text.  Greedy answers must be the same
 * token for token; the logprobs agree to 1e-4 (prefilling the reused prefix in other
 * batches changes nothing but the summation order, if anything). */
START_TEST(test_model_prefix_cache)
{
    static const char *const turns[] = { "Once upon a time", " The cat", " Lily said" };
    eng_t *slot_a, *slot_b;
    eng_t *plain = open_model(2, 4, 8, 0, &slot_a);
    eng_params_t p;
    stories_params(&p);
    p.max_running = 2;
    p.prefill_chunk = 8;
    p.prefix_cache = true;
    p.prefix_cache_min = 4;
    eng_t *cached = open_checked(&p, &slot_b);
    const tok_t *tok = eng_tokenizer(cached);
    static int32_t conv[512];
    int n = 0, expect_cached = 0, n1_first = 0;
    eng_sampling_t smp;
    eng_sampling_default(&smp);
    smp.temperature = 0;
    smp.n_probs = 2;
    for (int t = 0; t < 3; t++) {
        int32_t ids[64];
        size_t k = 0;
        ck_assert_int_eq(tok_encode(tok, turns[t], strlen(turns[t]), t == 0, false, ids, 64,
                                    &k), 0);
        memcpy(conv + n, ids, k * sizeof *ids);
        n += (int)k;
        if (t == 0)
            n1_first = n;
        coll_t *a = coll_new(), *b = coll_new();
        eng_stats_t s0, s1;
        eng_stats(cached, &s0);
        submit(plain, conv, n, 24, &smp, a);
        submit(cached, conv, n, 24, &smp, b);
        coll_wait(a);
        coll_wait(b);
        eng_stats(cached, &s1);
        ck_assert_int_eq(a->t.n_cached, 0);
        ck_assert_int_eq(b->t.n_cached, expect_cached);
        ck_assert_uint_eq(s1.prompt_tokens - s0.prompt_tokens, (uint64_t)(n - expect_cached));
        ck_assert_int_eq(b->finish, a->finish);
        ck_assert_int_eq(b->n, a->n);
        for (int i = 0; i < a->n; i++) {
            ck_assert_msg(b->tok[i] == a->tok[i], "turn %d token %d: %d cached, %d not", t,
                          i, b->tok[i], a->tok[i]);
            ck_assert_msg(fabsf(b->lp[i] - a->lp[i]) < 1e-4f, "turn %d token %d: logprob %g "
                          "cached, %g not", t, i, b->lp[i], a->lp[i]);
        }
        ck_assert_uint_eq(b->n_text, a->n_text);
        ck_assert(memcmp(b->text, a->text, a->n_text) == 0);
        /* the next turn reuses this prompt and the answer's tokens but the last */
        memcpy(conv + n, a->tok, (size_t)a->n * sizeof *conv);
        n += a->n;
        expect_cached = n - 1;
        coll_free(a);
        coll_free(b);
    }
    /* back to the first turn's prompt (a prefix of the cached conversation: cut back), the
     * same again (all but its last token reused), then the conversation diverging after
     * its first 8 tokens */
    int n1 = n1_first;
    int32_t div[64];
    memcpy(div, conv, 8 * sizeof *div);
    div[8] = conv[8] == 100 ? 101 : 100;
    const struct { const int32_t *ids; int n, want_cached; } more[] = {
        { conv, n1, n1 - 1 }, { conv, n1, n1 - 1 }, { div, 9, 8 },
    };
    for (size_t m = 0; m < FD_ARRAY_LEN(more); m++) {
        coll_t *a = coll_new(), *b = coll_new();
        submit(plain, more[m].ids, more[m].n, 24, &smp, a);
        submit(cached, more[m].ids, more[m].n, 24, &smp, b);
        coll_wait(a);
        coll_wait(b);
        ck_assert_int_eq(b->t.n_cached, more[m].want_cached);
        ck_assert_int_eq(b->n, a->n);
        for (int i = 0; i < a->n; i++)
            ck_assert_msg(b->tok[i] == a->tok[i] && fabsf(b->lp[i] - a->lp[i]) < 1e-4f,
                          "prompt %zu token %d: %d (%g) cached, %d (%g) not", m, i, b->tok[i],
                          b->lp[i], a->tok[i], a->lp[i]);
        coll_free(a);
        coll_free(b);
    }
    eng_stats_t st;
    eng_stats(cached, &st);
    ck_assert_uint_eq(st.cache_hits, 5);
    eng_close(plain);
    eng_close(cached);
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}
END_TEST

/* stories260K at the model layer (no engine), one sequence allocated in *slot: the reference
 * the engine's outputs are compared with (n_batch_max 0: the default). */
static llm_model_t *load_stories_model(const char *backend, bool fusion, int n_batch_max,
                                       int *slot)
{
    llm_load_params_t lp;
    llm_load_params_default(&lp);
    lp.path = tu_shared("models/stories260K.gguf", 1);
    lp.backend = backend;
    lp.fusion = fusion;
    lp.threads = 1;
    lp.n_seq_max = 2;
    lp.n_batch_max = n_batch_max;
    llm_model_t *m = NULL;
    char err[256];
    ck_assert_msg(llm_load(&m, &lp, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(llm_seq_alloc(m, slot), 0);
    return m;
}

/* Prompt log-probabilities: for every prompt position i >= 1 a TOKEN event (prompt set), in
 * order and before the first generated token, whose logprob, rank and top 3 equal the
 * log-softmax (in double, here) of the logits the model gives feeding the prompt one token
 * at a time, within 1e-4 nats.  A 30-token prompt, prefill chunks of 7 and sub-batches of 9
 * rows (both shorter), CPU fused and unfused; the request's logit_bias (+5 on prompt[5])
 * and repetition penalty leave the prompt's values alone (the raw model distribution); a
 * cached prefix of the same prompt is not reused (n_cached 0); max_tokens 0 gives the
 * prompt's alone and ends with "length"; bad requests are refused.
 * On the corsair backend a chunk rounds differently from single steps (V's BFP blocks cover
 * the cache at the call: test_corsair's all-rows test bounds that), so there the reference
 * is the model run on the same 7-token chunks with every row's logits, and the request runs
 * alone (no other sequence reshapes its steps): the engine must deliver exactly those
 * values at the right positions. */
static void prompt_logprobs_match(const char *backend, bool fusion)
{
    const bool corsair = strcmp(backend, "cpu") != 0;
    enum { N = 30, V = 512, TOP = 3 };
    int32_t prompt[N];
    for (int i = 0; i < N; i++)
        prompt[i] = i ? 2 + (i * 37) % 500 : 1;
    /* the reference: one token a time, log-softmax in double */
    static double ref[N][V];
    {
        int slot;
        llm_model_t *m = load_stories_model(backend, fusion, 9, &slot);
        static float lgs[N][V];
        for (int i = 0; i < N; i += corsair ? 7 : 1) {
            int n = corsair ? FD_MIN(7, N - i) : 1;
            llm_batch_entry_t e = { .slot = slot, .tokens = &prompt[i], .n_tokens = n, .want_logits = n };
            ck_assert_int_eq(llm_decode(m, &e, 1, lgs[i]), 0);
        }
        for (int i = 0; i < N; i++) {
            const float *lg = lgs[i];
            double mx = lg[0], sum = 0;
            for (int v = 1; v < V; v++)
                mx = fmax(mx, lg[v]);
            for (int v = 0; v < V; v++)
                sum += exp((double)lg[v] - mx);
            for (int v = 0; v < V; v++)
                ref[i][v] = (double)lg[v] - mx - log(sum);
        }
        llm_free(m);
    }
    eng_t *slot_e;
    eng_params_t p;
    stories_params(&p);
    p.fusion = fusion;
    p.backend = backend;
    p.max_running = 2;
    p.prefill_chunk = 7;
    p.max_batch_tokens = 9;
    p.prefix_cache = true;
    p.prefix_cache_min = 4;
    eng_t *e = open_checked(&p, &slot_e);
    char err[256];
    /* the same prompt first without: its slot goes to the prefix cache */
    coll_t *plain = coll_new();
    submit(e, prompt, N, 2, NULL, plain);
    coll_wait(plain);
    ck_assert_int_eq(plain->n, 2);

    eng_logit_bias_t bias = { prompt[5], 5.0f };
    for (int mt = 0; mt <= 2; mt += 2) {
        eng_request_t q;
        memset(&q, 0, sizeof q);
        q.prompt = prompt;
        q.n_prompt = N;
        q.max_tokens = mt;
        eng_sampling_default(&q.sampling);
        q.sampling.temperature = 0;
        q.sampling.n_probs = 1;
        q.sampling.logit_bias = &bias;
        q.sampling.n_logit_bias = 1;
        q.sampling.repeat_penalty = 1.3f;
        q.prompt_logprobs = true;
        q.prompt_top = TOP;
        q.on_event = on_event;
        coll_t *c = coll_new();
        q.ud = c;
        ck_assert_msg(eng_submit(e, &q, &c->id, err, sizeof err) == 0, "%s", err);
        /* a plain request beside it, sharing the steps */
        coll_t *other = coll_new();
        if (!corsair)
            submit(e, prompt + 3, 11, 3, NULL, other);
        coll_wait(c);
        if (!corsair) {
            coll_wait(other);
            ck_assert_int_eq(other->n, 3);
        }
        ck_assert_msg(c->finish == ENG_FINISH_LENGTH, "finish %d", c->finish);
        ck_assert_int_eq(c->t.n_cached, 0);
        ck_assert_int_eq(c->n, N - 1 + mt);
        double worst = 0;
        for (int i = 1; i < N; i++) {
            int k = i - 1;
            const double *r = ref[i - 1];
            ck_assert(c->prompt[k]);
            ck_assert_int_eq(c->tok[k], prompt[i]);
            worst = fmax(worst, fabs(c->lp[k] - r[prompt[i]]));
            ck_assert_msg(fabs(c->lp[k] - r[prompt[i]]) <= 1e-4, "pos %d: %g, reference %g",
                          i, (double)c->lp[k], r[prompt[i]]);
            /* ranks: the reference's, up to tokens within 1e-4 of the token (near ties) */
            int lo = 1, hi = 1;
            for (int v = 0; v < V; v++) {
                lo += r[v] > r[prompt[i]] + 1e-4;
                hi += r[v] > r[prompt[i]] - 1e-4;
            }
            ck_assert_msg(c->rank[k] >= lo && c->rank[k] <= hi, "pos %d: rank %d, reference "
                          "%d..%d", i, c->rank[k], lo, hi);
            ck_assert_int_eq(c->n_top[k], TOP);
            for (int t = 0; t < TOP; t++) {
                int better = 0, close = 0;
                for (int v = 0; v < V; v++) {
                    better += r[v] > r[c->top[k][t].token] + 1e-4;
                    close += r[v] > r[c->top[k][t].token] - 1e-4;
                }
                ck_assert_msg(better <= t && close >= t, "pos %d alternative %d is rank %d..%d",
                              i, t, better + 1, close + 1);
                ck_assert(fabs(c->top[k][t].logprob - r[c->top[k][t].token]) <= 1e-4);
            }
        }
        for (int g = 0; g < mt; g++)
            ck_assert(!c->prompt[N - 1 + g]);
        printf("prompt logprobs (%s, fusion %d, max_tokens %d): worst %.3g nats off the "
               "reference\n", backend, fusion, mt, worst);
        coll_free(c);
        coll_free(other);
    }
    /* bad requests */
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = N;
    q.max_tokens = -1;
    eng_sampling_default(&q.sampling);
    q.on_event = on_event;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    ck_assert_msg(strstr(err, "max_tokens"), "%s", err);
    q.max_tokens = 0;
    q.prompt_logprobs = true;
    q.prompt_top = 21;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    q.prompt_top = -1;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    q.max_tokens = -1;
    q.prompt_top = 0;
    ck_assert_int_eq(eng_submit(e, &q, NULL, err, sizeof err), -EINVAL);
    coll_free(plain);
    eng_close(e);
    ck_assert_msg(n_check_failures == 0, "invariant: %s", check_msg);
}

START_TEST(test_model_prompt_logprobs_fused) { prompt_logprobs_match("cpu", true); }
END_TEST

START_TEST(test_model_prompt_logprobs_unfused) { prompt_logprobs_match("cpu", false); }
END_TEST

START_TEST(test_model_prompt_logprobs_corsair)
{
    prompt_logprobs_match("corsair", true);
    prompt_logprobs_match("corsair", false);
}
END_TEST

static int submit_embed(eng_t *e, const int32_t *prompt, int n, int pooling, bool norm,
                        int max_tokens, bool plp, coll_t *c, char *err, size_t errlen)
{
    eng_request_t q;
    memset(&q, 0, sizeof q);
    q.prompt = prompt;
    q.n_prompt = (size_t)n;
    q.max_tokens = max_tokens;
    eng_sampling_default(&q.sampling);
    q.pooling = pooling;
    q.normalize = norm;
    q.prompt_logprobs = plp;
    q.on_event = on_event;
    q.ud = c;
    return eng_submit(e, &q, &c->id, err, errlen);
}

/* Embeddings through the engine against the model's per-token hidden states (one token a
 * step, want_hidden 1 each: an independent path through llm_decode), pooled and normalized
 * here in double.  The engine runs the 30-token prompt in chunks of 7 beside a generating
 * request, with the prefix cache on and the same prompt cached by an earlier request. */
static void embeddings_match(bool fusion)
{
    enum { N = 30, E = 64 };
    int32_t prompt[N];
    for (int i = 0; i < N; i++)
        prompt[i] = i ? 2 + (i * 53) % 500 : 1;
    static float h[N][E];
    {
        int slot;
        llm_model_t *m = load_stories_model("cpu", fusion, 0, &slot);
        ck_assert_int_eq(llm_hparams(m)->n_embd, E);
        memset(h, 0, sizeof h);
        for (int i = 0; i < N; i++) {
            llm_batch_entry_t b = { .slot = slot, .tokens = &prompt[i], .n_tokens = 1,
                                    .want_hidden = 1, .hidden = h[i] };
            ck_assert_int_eq(llm_decode(m, &b, 1, NULL), 0);
        }
        llm_free(m);
    }
    /* the references: mean, cls, last; each raw and L2-normalized */
    double want[4][2][E];
    for (int j = 0; j < E; j++) {
        double sum = 0;
        for (int i = 0; i < N; i++)
            sum += h[i][j];
        want[ENG_POOL_MEAN][0][j] = sum / N;
        want[ENG_POOL_CLS][0][j] = h[0][j];
        want[ENG_POOL_LAST][0][j] = h[N - 1][j];
    }
    for (int k = 1; k <= 3; k++) {
        double ss = 0;
        for (int j = 0; j < E; j++)
            ss += want[k][0][j] * want[k][0][j];
        for (int j = 0; j < E; j++)
            want[k][1][j] = want[k][0][j] / sqrt(ss);
    }

    eng_t *slot_e;
    eng_params_t p;
    stories_params(&p);
    p.fusion = fusion;
    p.max_running = 3;
    p.prefill_chunk = 7;
    p.max_batch_tokens = 12;
    p.prefix_cache = true;
    p.prefix_cache_min = 4;
    eng_t *e = open_checked(&p, &slot_e);
    char err[256];
    ck_assert_int_eq(eng_info(e)->n_embd, E);
    ck_assert_int_eq(eng_info(e)->pooling, -1);  /* stories260K names none */
    /* the same prompt generated first: its slot is cached, and must not be reused */
    coll_t *plain = coll_new();
    submit(e, prompt, N, 4, NULL, plain);
    coll_wait(plain);
    ck_assert_int_eq(plain->n, 4);

    for (int k = 1; k <= 3; k++) {
        for (int norm = 0; norm < 2; norm++) {
            coll_t *c = coll_new(), *other = coll_new();
            ck_assert_msg(submit_embed(e, prompt, N, k, norm, 0, false, c, err,
                                       sizeof err) == 0, "%s", err);
            submit(e, prompt + 2, 9, 3, NULL, other);   /* shares the steps */
            coll_wait(c);
            coll_wait(other);
            ck_assert_int_eq(other->n, 3);
            ck_assert_msg(c->finish == ENG_FINISH_STOP, "finish %d: %s", c->finish, c->error);
            ck_assert_int_eq(c->n, 0);                   /* nothing generated */
            ck_assert_int_eq(c->t.n_gen, 0);
            ck_assert_int_eq(c->t.n_prompt, N);
            ck_assert_int_eq(c->t.n_cached, 0);
            ck_assert_int_eq(c->n_emb, E);
            double worst = 0, ss = 0;
            for (int j = 0; j < E; j++) {
                worst = fmax(worst, fabs(c->emb[j] - want[k][norm][j]));
                ss += (double)c->emb[j] * c->emb[j];
            }
            ck_assert_msg(worst <= 1e-5, "pooling %d norm %d fusion %d: off by %g", k, norm,
                          fusion, worst);
            if (norm)
                ck_assert(fabs(ss - 1) <= 1e-5);
            coll_free(c);
            coll_free(other);
        }
    }
    /* the cache the embeddings left: the generating request still answers as before */
    coll_t *again = coll_new();
    submit(e, prompt, N, 4, NULL, again);
    coll_wait(again);
    ck_assert_int_eq(again->n, 4);
    ck_assert_mem_eq(again->tok, plain->tok, 4 * sizeof(int32_t));

    /* bad embedding requests: refused at submit, no callback */
    coll_t *bad = coll_new();
    ck_assert_int_eq(submit_embed(e, prompt, N, 4, true, 0, false, bad, err, sizeof err),
                     -EINVAL);
    ck_assert_int_eq(submit_embed(e, prompt, N, -1, true, 0, false, bad, err, sizeof err),
                     -EINVAL);
    ck_assert_int_eq(submit_embed(e, prompt, N, ENG_POOL_MEAN, true, 1, false, bad, err,
                                  sizeof err), -EINVAL);
    ck_assert_int_eq(submit_embed(e, prompt, N, ENG_POOL_MEAN, true, 0, true, bad, err,
                                  sizeof err), -EINVAL);
    ck_assert_int_eq(submit_embed(e, prompt, 0, ENG_POOL_MEAN, true, 0, false, bad, err,
                                  sizeof err), -EINVAL);
    ck_assert(!bad->done);
    coll_free(bad);
    coll_free(again);
    coll_free(plain);
    eng_close(e);
}

START_TEST(test_model_embeddings_fused) { embeddings_match(true); }
END_TEST

START_TEST(test_model_embeddings_unfused) { embeddings_match(false); }
END_TEST

START_TEST(test_model_open_errors)
{
    eng_params_t p;
    eng_params_default(&p);
    char err[512];
    eng_t *e = (eng_t *)1;
    p.model_path = "/nonexistent/model.gguf";
    ck_assert_int_lt(eng_open(&e, &p, err, sizeof err), 0);
    ck_assert_ptr_null(e);
    ck_assert_msg(strstr(err, "/nonexistent/model.gguf"), "%s", err);
    p.model_path = NULL;
    ck_assert_int_eq(eng_open(&e, &p, err, sizeof err), FD_ECONFIG);
    p.model_path = tu_shared("models/stories260K.gguf", 1);
    p.max_running = 0;
    ck_assert_int_eq(eng_open(&e, &p, err, sizeof err), FD_ECONFIG);
    p.max_running = 2;
    p.max_waiting = -1;
    ck_assert_int_eq(eng_open(&e, &p, err, sizeof err), FD_ECONFIG);
    ck_assert_ptr_null(e);
}
END_TEST

/* The gemma3 random model of the ring tests (window 8, 5 of 6 layers local) written to a
 * fresh file made from the mkstemp template path. */
static void write_swa_model(char *path, uint64_t seed)
{
    char err[256];
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    gguf_w_llama_t sp = { .name = "swa", .arch = "gemma3", .n_embd = 64, .n_layer = 6,
                          .n_head = 4, .n_head_kv = 2, .head_dim = 32, .n_ff = 160,
                          .n_vocab = 512, .n_ctx = 256, .rope_base = 1e6f, .norm_eps = 1e-6f,
                          .tied = true, .wtype = GG_F32, .seed = seed, .n_swa = 8 };
    ck_assert_msg(gguf_w_llama_write(&sp, path, 1, err, sizeof(err)) == 0, "%s", err);
}

/* The ring tests' engine: one thread, one request at a time, 8-token prefill chunks; full
 * keeps every position (swa_full), otherwise the sliding-window layers keep rings. */
static void swa_params(eng_params_t *p, const char *path, bool full)
{
    eng_params_default(p);
    p->model_path = path;
    p->threads = 1;
    p->max_running = 1;
    p->prefill_chunk = 8;
    p->swa_full = full;
}

/* A full cache's answer and a ring's: n greedy tokens each, the same tokens, their
 * log-probabilities within 1e-4; what names the case in a failure. */
static void assert_same_answer(const coll_t *full, const coll_t *ring, int n, const char *what)
{
    ck_assert_int_eq(full->n, n);
    ck_assert_int_eq(ring->n, n);
    for (int k = 0; k < n; k++)
        ck_assert_msg(full->tok[k] == ring->tok[k] && fabsf(full->lp[k] - ring->lp[k]) < 1e-4f,
                      "%stoken %d: %d (%g) full, %d (%g) ring", what, k, full->tok[k],
                      full->lp[k], ring->tok[k], ring->lp[k]);
}

/* The prefix cache over sliding-window rings: a gemma3 random model (window 8, 5 of 6 layers
 * local; 17-token steps, so rings of 8 + 17 - 1 = 24 positions) served with and without
 * swa_full, both with the prefix cache.  A prompt of 40 tokens, then that prompt and its
 * answer (the ring still holds the window the 63-token common prefix needs: reused whole
 * by both), then the first prompt again: its 39-token common prefix needs positions 32..38,
 * long overwritten in the ring of the cached 87-token conversation, so the ring engine
 * prefills all of it (a ring miss, counted) and the full one reuses 39.  Every answer is the
 * same greedy tokens, log-probabilities within 1e-4 (the CPU's kernels read a wrapped ring in
 * two runs: rounding). */
START_TEST(test_prefix_cache_ring)
{
    char path[] = "/tmp/fusiond-engine-swa-XXXXXX", err[256];
    write_swa_model(path, 78);
    eng_t *eng[2], *slot[2];
    for (int i = 0; i < 2; i++) {
        eng_params_t p;
        swa_params(&p, path, i == 0);
        p.prefix_cache = true;
        p.prefix_cache_min = 4;
        p.ctx_checkpoints = 0;  /* the ring alone (test_prefix_cache_ckpt: with them) */
        eng[i] = open_checked(&p, &slot[i]);
    }
    ck_assert_uint_eq(eng_info(eng[0])->swa_ring, 0);
    ck_assert_int_eq(eng_info(eng[1])->ctx_checkpoints, 0);
    ck_assert_int_eq(eng_info(eng[1])->swa_ring, 24);
    ck_assert_uint_lt(eng_info(eng[1])->cache_bytes, eng_info(eng[0])->cache_bytes);
    eng_sampling_t smp;
    eng_sampling_default(&smp);
    smp.temperature = 0;
    smp.n_probs = 1;
    static int32_t conv[128];
    for (int i = 0; i < 40; i++)
        conv[i] = (int32_t)(5 + 29 * i) % 512;
    const struct { int n, want_full, want_ring; uint64_t misses; } turn[3] = {
        { 40, 0, 0, 0 }, { 64, 63, 63, 0 }, { 40, 39, 0, 1 },
    };
    for (int t = 0; t < 3; t++) {
        coll_t *c[2];
        for (int i = 0; i < 2; i++) {
            c[i] = coll_new();
            eng_request_t q = { .prompt = conv, .n_prompt = (size_t)turn[t].n, .max_tokens = 24,
                                .sampling = smp, .ignore_eos = true, .on_event = on_event,
                                .ud = c[i] };
            ck_assert_int_eq(eng_submit(eng[i], &q, &c[i]->id, err, sizeof err), 0);
            coll_wait(c[i]);
        }
        ck_assert_int_eq(c[0]->t.n_cached, turn[t].want_full);
        ck_assert_int_eq(c[1]->t.n_cached, turn[t].want_ring);
        eng_stats_t st;
        eng_stats(eng[1], &st);
        ck_assert_uint_eq(st.cache_ring_misses, turn[t].misses);
        char what[16];
        snprintf(what, sizeof what, "turn %d ", t);
        assert_same_answer(c[0], c[1], 24, what);
        if (t == 0)
            memcpy(conv + 40, c[0]->tok, 24 * sizeof *conv);
        coll_free(c[0]);
        coll_free(c[1]);
    }
    eng_close(eng[0]);
    eng_close(eng[1]);
    unlink(path);
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}
END_TEST

/* Context checkpoints over sliding-window rings: the gemma3 model of test_prefix_cache_ring
 * (rings of 24, window 8, 8-token chunks) served three ways: full caches with the prefix
 * cache, rings with the prefix cache and its 8 checkpoints a sequence (the default), and
 * rings without the prefix cache (cold: every prompt prefilled whole).  Four prompts of 40
 * tokens, 24 greedy tokens each: (1) P; (2) P again, a regenerated answer: the cached
 * 64-token sequence's rings hold 40..63, not the window before 39, but the checkpoint made
 * at P's end does: 39 tokens reused (a checkpoint hit, no ring miss), as the full caches do;
 * (3) P's first 24 tokens (a shared system prompt) and another question: no checkpoint
 * covers 24, so it is prefilled whole (a ring miss), and a checkpoint is made at 24 where it
 * left the cached sequence; (4) the same 24 and a third question: 24 reused from that
 * checkpoint; (5) the next turn of (4): its prompt, answer and 8 tokens, 63 reused from the
 * rings, and only its end checkpointed (it leaves no cached sequence before its end).  On
 * the reference ops (every row computed alone, so a ring, a checkpoint or
 * the step a row ran in changes no rounding) every answer is bitwise the full caches' and
 * the cold engine's, tokens and log-probabilities (test_model compares the CPU's kernels).
 * The checkpoints' host bytes: each 14 rows (window 8 - 1, span 8 - 1) of K and V of 5
 * local layers at most, and the gauge follows what is held. */
START_TEST(test_prefix_cache_ckpt)
{
    static const char *const ref_opts[] = { "ref=1", NULL };
    char path[] = "/tmp/fusiond-engine-ckpt-XXXXXX", err[256];
    write_swa_model(path, 80);
    eng_t *eng[3], *slot[3];
    for (int i = 0; i < 3; i++) {
        eng_params_t p;
        swa_params(&p, path, i == 0);
        p.prefix_cache = i < 2;
        p.prefix_cache_min = 4;
        p.backend_options = ref_opts;
        eng[i] = open_checked(&p, &slot[i]);
    }
    const size_t row = 5 * 2 * 2 * 32 * sizeof(float);
    ck_assert_int_eq(eng_info(eng[0])->ctx_checkpoints, 0);
    ck_assert_int_eq(eng_info(eng[1])->ctx_checkpoints, 8);
    ck_assert_int_eq(eng_info(eng[2])->ctx_checkpoints, 0);
    ck_assert_uint_eq(eng_info(eng[1])->ckpt_bytes_each, 14 * row);
    ck_assert_uint_eq(eng_info(eng[1])->ckpt_bytes_max, 8 * 14 * row);
    eng_sampling_t smp;
    eng_sampling_default(&smp);
    smp.temperature = 0;
    smp.n_probs = 1;
    int32_t prompt[5][72];
    for (int t = 0; t < 5; t++)
        for (int i = 0; i < 40; i++)
            prompt[t][i] = i < 24 || t < 2 ? (int32_t)(5 + 29 * i) % 512
                                            : (int32_t)(100 + 31 * t + 13 * i) % 512;
    const struct { int full, ckpt; uint64_t hits, misses, saved; size_t rows; } want[5] = {
        { 0, 0, 0, 0, 1, 14 },
        { 39, 39, 1, 0, 2, 14 + 8 },
        { 24, 0, 1, 1, 4, 7 + 14 },
        { 24, 24, 2, 1, 5, 7 + 14 },
        { 63, 63, 2, 1, 6, 7 + 14 + 14 },
    };
    for (int t = 0; t < 5; t++) {
        const int n = t < 4 ? 40 : 72;
        coll_t *c[3];
        for (int i = 0; i < 3; i++) {
            c[i] = coll_new();
            eng_request_t q = { .prompt = prompt[t], .n_prompt = (size_t)n, .max_tokens = 24,
                                .sampling = smp, .ignore_eos = true, .on_event = on_event,
                                .ud = c[i] };
            ck_assert_int_eq(eng_submit(eng[i], &q, &c[i]->id, err, sizeof err), 0);
            coll_wait(c[i]);
        }
        eng_stats_t st;
        eng_stats(eng[1], &st);
        fprintf(stderr, "checkpoints, prompt %d: reused %d (full %d), prefilled %llu in all, "
                "%llu checkpoint hits, %llu ring misses, %llu made, %llu bytes\n", t,
                c[1]->t.n_cached, c[0]->t.n_cached, (unsigned long long)st.prompt_tokens,
                (unsigned long long)st.cache_ckpt_hits,
                (unsigned long long)st.cache_ring_misses, (unsigned long long)st.ckpt_saved,
                (unsigned long long)st.ckpt_bytes);
        ck_assert_int_eq(c[0]->t.n_cached, want[t].full);
        ck_assert_int_eq(c[1]->t.n_cached, want[t].ckpt);
        ck_assert_int_eq(c[2]->t.n_cached, 0);
        ck_assert_uint_eq(st.cache_ckpt_hits, want[t].hits);
        ck_assert_uint_eq(st.cache_ring_misses, want[t].misses);
        ck_assert_uint_eq(st.ckpt_saved, want[t].saved);
        ck_assert_uint_eq(st.ckpt_bytes, want[t].rows * row);
        ck_assert_int_eq(c[0]->n, 24);
        for (int i = 1; i < 3; i++) {
            ck_assert_int_eq(c[i]->n, 24);
            for (int k = 0; k < 24; k++)
                ck_assert_msg(c[0]->tok[k] == c[i]->tok[k] && c[0]->lp[k] == c[i]->lp[k],
                              "prompt %d token %d: %d (%.9g) full, %d (%.9g) %s", t, k,
                              c[0]->tok[k], c[0]->lp[k], c[i]->tok[k], c[i]->lp[k],
                              i == 1 ? "checkpoint" : "cold");
        }
        if (t == 3) {
            /* the next turn: this prompt, its answer and 8 more tokens */
            memcpy(prompt[4], prompt[3], 40 * sizeof **prompt);
            memcpy(prompt[4] + 40, c[0]->tok, 24 * sizeof **prompt);
            for (int i = 64; i < 72; i++)
                prompt[4][i] = (int32_t)(7 * i) % 512;
        }
        for (int i = 0; i < 3; i++)
            coll_free(c[i]);
    }
    for (int i = 0; i < 3; i++)
        eng_close(eng[i]);
    unlink(path);
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}
END_TEST

/* Speculative decoding over sliding-window rings: the gemma3 model of test_prefix_cache_ring
 * (rings of 24: 17-row steps, window 8) decodes a prompt repeating a 5-token pattern with
 * n-gram drafts of up to 6 tokens, with rings and with swa_full; drafts are fed (the pattern
 * proposes them) and some rejected (random weights do not follow it), so the rejected rows
 * are dropped from a ring that just wrote them.  The 48 greedy tokens are the same, their
 * log-probabilities within 1e-4. */
START_TEST(test_spec_ring)
{
    char path[] = "/tmp/fusiond-engine-swaspec-XXXXXX", err[256];
    write_swa_model(path, 79);
    int32_t prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = (int32_t)(11 + 53 * (i % 5));
    eng_sampling_t smp;
    eng_sampling_default(&smp);
    smp.temperature = 0;
    smp.n_probs = 1;
    coll_t *c[2];
    eng_stats_t st[2];
    for (int i = 0; i < 2; i++) {
        eng_params_t p;
        swa_params(&p, path, i == 0);
        p.draft_max = 6;
        eng_t *slot, *e = open_checked(&p, &slot);
        ck_assert_int_eq(eng_info(e)->swa_ring, i ? 24 : 0);
        c[i] = coll_new();
        eng_request_t q = { .prompt = prompt, .n_prompt = 40, .max_tokens = 48, .sampling = smp,
                            .ignore_eos = true, .on_event = on_event, .ud = c[i] };
        ck_assert_int_eq(eng_submit(e, &q, &c[i]->id, err, sizeof err), 0);
        coll_wait(c[i]);
        eng_stats(e, &st[i]);
        eng_close(e);
    }
    fprintf(stderr, "spec over rings: %llu draft tokens, %llu accepted\n",
            (unsigned long long)st[1].draft_tokens, (unsigned long long)st[1].draft_accepted);
    ck_assert_uint_gt(st[1].draft_tokens, st[1].draft_accepted);
    assert_same_answer(c[0], c[1], 48, "");
    coll_free(c[0]);
    coll_free(c[1]);
    unlink(path);
    ck_assert_msg(n_check_failures == 0, "eng_check: %s", check_msg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("scheduler");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_batched_equals_alone);
    tcase_add_test(tc, test_seed);
    tcase_add_test(tc, test_stop_strings);
    tcase_add_test(tc, test_eos_and_logprobs);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_batch_places);
    tcase_add_test(tc, test_bounds_and_bad_requests);
    tcase_add_test(tc, test_bad_engine_params);
    tcase_add_test(tc, test_timeout);
    tcase_add_test(tc, test_chunked_prefill_interleaves);
    tcase_add_test(tc, test_decode_error);
    tcase_add_test(tc, test_idle_and_close);
    tcase_add_test(tc, test_prefix_cache_reuse);
    tcase_add_test(tc, test_prefix_cache_eviction);
    tcase_add_test(tc, test_prefix_cache_kv_budget);
    tcase_add_test(tc, test_prefix_cache_cancel_and_error);
    tcase_add_test(tc, test_prefix_cache_params);
    tcase_add_test(tc, test_prefix_cache_ring);
    tcase_add_test(tc, test_spec_ring);
    tcase_add_test(tc, test_prefix_cache_ckpt);
    suite_add_tcase(s, tc);
    /* the model tests only where the shared models are (tu_shared fails under CI's
     * FUSIOND_REQUIRE_SHARED=1); the scheduler tests run regardless */
    if (tu_shared_part("models/stories260K.gguf", "the model tests")) {
        TCase *tm = tcase_create("model");
        tcase_set_timeout(tm, 300);
        tcase_add_test(tm, test_model_reference);
        tcase_add_test(tm, test_model_concurrent_equals_alone);
        tcase_add_test(tm, test_model_seed_cancel_bounds);
        tcase_add_test(tm, test_model_prefill_interleaves);
        tcase_add_test(tm, test_model_open_errors);
        tcase_add_test(tm, test_model_prefix_cache);
        tcase_add_test(tm, test_model_prompt_logprobs_fused);
        tcase_add_test(tm, test_model_prompt_logprobs_unfused);
        tcase_add_test(tm, test_model_prompt_logprobs_corsair);
        tcase_add_test(tm, test_model_embeddings_fused);
        tcase_add_test(tm, test_model_embeddings_unfused);
        suite_add_tcase(s, tm);
    } else {
        fprintf(stderr, "SKIP: the stories260K tests: shared test data missing (set "
                        "FUSIOND_SHARED)\n");
    }
    return tu_run(s);
}
