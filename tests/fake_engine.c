/* fake_engine.c: a test double for engine.h and the tokenizer calls the server makes, so
 * test_http can drive the HTTP layer deterministically: one engine thread, a step every
 * fake_step_us, token k of a sequence is byte 'a' + (prompt length + k) % 26, and knobs for
 * a slow first token, the queue capacity and an engine error.  Test-only; linked before
 * libfusiond.a so its definitions win. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/fd.h"
#include "engine/engine.h"
#include "tests/fake_engine.h"

struct fseq {
    struct fseq *next;
    uint64_t id;
    eng_request_t r;
    int32_t *prompt;
    int gen;
    bool cancel;
    bool started;
    uint64_t t_submit, t_start, t_first;
    double deadline;
};

struct eng {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    struct fseq *seqs;
    uint64_t next_id;
    eng_info_t info;
    uint64_t gen_total, prompt_total, steps;
};

int fake_step_us = 200;
int fake_first_token_ms = 0;
int fake_capacity = 64;
int fake_error_token = -1;
int fake_paused = 0;

static int count(eng_t *e)
{
    int n = 0;
    for (struct fseq *s = e->seqs; s; s = s->next)
        n++;
    return n;
}

static void emit_done(struct fseq *s, int finish, const char *error)
{
    eng_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.slot = -1;
    ev.type = ENG_EV_DONE;
    ev.id = s->id;
    ev.t_ns = fd_now_ns();
    ev.finish = finish;
    ev.error = error;
    ev.timings.n_prompt = (int)s->r.n_prompt;
    ev.timings.n_gen = s->gen;
    ev.timings.queue_s = s->t_start ? (double)(s->t_start - s->t_submit) * 1e-9 : 0;
    ev.timings.ttft_s = s->t_first ? (double)(s->t_first - s->t_submit) * 1e-9 : 0;
    ev.timings.prefill_s = s->t_first && s->t_start ? (double)(s->t_first - s->t_start) * 1e-9 : 0;
    ev.timings.decode_s = s->t_first ? (double)(ev.t_ns - s->t_first) * 1e-9 : 0;
    ev.timings.total_s = (double)(ev.t_ns - s->t_submit) * 1e-9;
    s->r.on_event(s->r.ud, &ev);
}

/* One step for one sequence; true when it finished. */
static bool step(eng_t *e, struct fseq *s)
{
    uint64_t now = fd_now_ns();
    if (!s->started) {
        s->started = true;
        s->t_start = now;
    }
    if (s->cancel) {
        emit_done(s, ENG_FINISH_CANCEL, NULL);
        return true;
    }
    if (s->deadline > 0 && fd_now_s() > s->deadline) {
        emit_done(s, ENG_FINISH_TIMEOUT, NULL);
        return true;
    }
    if (s->gen == 0 && fake_first_token_ms > 0 &&
        now - s->t_start < (uint64_t)fake_first_token_ms * 1000000ull)
        return false;
    int32_t tok = 'a' + (int32_t)((s->r.n_prompt + (size_t)s->gen) % 26);
    if (s->r.prompt && s->r.n_prompt && s->prompt[s->r.n_prompt - 1] == fake_error_token) {
        emit_done(s, ENG_FINISH_ERROR, "fake engine failure");
        return true;
    }
    char text[2] = {(char)tok, 0};
    eng_top_t top[20];
    eng_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.slot = -1;
    ev.type = ENG_EV_TOKEN;
    ev.id = s->id;
    ev.t_ns = now;
    ev.token = tok;
    ev.text = text;
    ev.text_len = 1;
    if (s->r.sampling.n_probs >= 0) {
        ev.logprob = -0.25f;
        for (int k = 0; k < s->r.sampling.n_probs && k < 20; k++) {
            top[k].token = tok + k;
            top[k].logprob = -0.25f - (float)k;
        }
        ev.top = top;
        ev.n_top = s->r.sampling.n_probs;
    }
    if (!s->t_first)
        s->t_first = now;
    s->gen++;
    e->gen_total++;
    s->r.on_event(s->r.ud, &ev);
    if (s->gen >= s->r.max_tokens) {
        emit_done(s, ENG_FINISH_LENGTH, NULL);
        return true;
    }
    return false;
}

static void *run(void *arg)
{
    eng_t *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        if (!e->seqs) {
            pthread_cond_wait(&e->cv, &e->mu);
            continue;
        }
        if (__atomic_load_n(&fake_paused, __ATOMIC_ACQUIRE)) {
            pthread_mutex_unlock(&e->mu);
            usleep(1000);
            pthread_mutex_lock(&e->mu);
            continue;
        }
        struct fseq **pp = &e->seqs;
        while (*pp) {
            struct fseq *s = *pp;
            if (step(e, s)) {
                *pp = s->next;
                free(s->prompt);
                free(s);
            } else {
                pp = &s->next;
            }
        }
        e->steps++;
        pthread_mutex_unlock(&e->mu);
        usleep((useconds_t)fake_step_us);
        pthread_mutex_lock(&e->mu);
    }
    while (e->seqs) {
        struct fseq *s = e->seqs;
        e->seqs = s->next;
        emit_done(s, ENG_FINISH_CANCEL, NULL);
        free(s->prompt);
        free(s);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

int fake_open(eng_t **out)
{
    eng_t *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->info.model_id = "fake-model";
    e->info.model_path = "/nonexistent/fake.gguf";
    e->info.arch = "llama";
    e->info.backend = "cpu";
    e->info.fusion = true;
    e->info.softmax_mode = "maxsum";
    e->info.n_ctx = 128;
    e->info.n_ctx_train = 128;
    e->info.n_vocab = 256;
    e->info.threads = 1;
    pthread_create(&e->th, NULL, run, e);
    *out = e;
    return 0;
}

void fake_close(eng_t *e)
{
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->th, NULL);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

int fake_live(eng_t *e)
{
    pthread_mutex_lock(&e->mu);
    int n = count(e);
    pthread_mutex_unlock(&e->mu);
    return n;
}

const eng_info_t *eng_info(const eng_t *e)
{
    return &e->info;
}

const tok_t *eng_tokenizer(const eng_t *e)
{
    return (const tok_t *)e; /* the fake tokenizer below needs no state */
}

int eng_submit(eng_t *e, const eng_request_t *r, uint64_t *id, char *err, size_t errlen)
{
    if (!r->n_prompt || r->max_tokens <= 0) {
        snprintf(err, errlen, "bad request");
        return -EINVAL;
    }
    if (r->n_prompt + (size_t)r->max_tokens > (size_t)e->info.n_ctx) {
        snprintf(err, errlen, "prompt %zu + max_tokens %d > n_ctx %d", r->n_prompt,
                 r->max_tokens, e->info.n_ctx);
        return FD_ECTX;
    }
    struct fseq *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->prompt = malloc(r->n_prompt * sizeof *s->prompt);
    memcpy(s->prompt, r->prompt, r->n_prompt * sizeof *s->prompt);
    s->r = *r;
    s->r.prompt = s->prompt;
    s->r.stop = NULL;
    s->r.sampling.logit_bias = NULL;
    s->t_submit = fd_now_ns();
    s->deadline = r->timeout_s > 0 ? fd_now_s() + r->timeout_s : 0;
    pthread_mutex_lock(&e->mu);
    if (count(e) >= fake_capacity) {
        pthread_mutex_unlock(&e->mu);
        free(s->prompt);
        free(s);
        return FD_EFULL;
    }
    s->id = ++e->next_id;
    e->prompt_total += r->n_prompt;
    struct fseq **pp = &e->seqs;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    *id = s->id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

int eng_cancel(eng_t *e, uint64_t id)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&e->mu);
    for (struct fseq *s = e->seqs; s; s = s->next)
        if (s->id == id) {
            s->cancel = true;
            rc = 0;
        }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

void eng_cancel_all(eng_t *e)
{
    pthread_mutex_lock(&e->mu);
    for (struct fseq *s = e->seqs; s; s = s->next)
        s->cancel = true;
    pthread_mutex_unlock(&e->mu);
}

/* The started sequences in submission order, each in the place of its rank. */
int eng_slots(eng_t *e, eng_slot_t *out, int cap)
{
    int n = 0;
    pthread_mutex_lock(&e->mu);
    for (struct fseq *s = e->seqs; s; s = s->next) {
        if (!s->started)
            continue;
        if (n < cap)
            out[n] = (eng_slot_t){n, s->id};
        n++;
    }
    pthread_mutex_unlock(&e->mu);
    return n;
}

void eng_stats(eng_t *e, eng_stats_t *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&e->mu);
    for (struct fseq *s = e->seqs; s; s = s->next) {
        if (s->started)
            out->running++;
        else
            out->waiting++;
    }
    out->kv_total = 1024;
    out->gen_tokens = e->gen_total;
    out->prompt_tokens = e->prompt_total;
    out->steps = e->steps;
    pthread_mutex_unlock(&e->mu);
}

/* The fake tokenizer: one token per byte; BOS (id 1) first when add_special. */
int tok_encode(const tok_t *t, const char *text, size_t len, bool add_special,
               bool parse_special, int32_t *ids, size_t cap, size_t *n)
{
    size_t need = len + (add_special ? 1 : 0);
    *n = need;
    if (need > cap)
        return -ENOSPC;
    size_t o = 0;
    if (add_special)
        ids[o++] = 1;
    for (size_t i = 0; i < len; i++)
        ids[o++] = (unsigned char)text[i];
    return 0;
}

int tok_piece(const tok_t *t, int32_t id, bool render_special, char *buf, size_t cap,
              size_t *len)
{
    *len = 1;
    if (cap < 1)
        return -ENOSPC;
    buf[0] = (char)id;
    return 0;
}

int tok_decode(const tok_t *t, const int32_t *ids, size_t n, bool render_special,
               bool strip_leading_space, char *buf, size_t cap, size_t *len)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == 1)
            continue;
        if (o < cap)
            buf[o] = (char)ids[i];
        o++;
    }
    *len = o;
    return o > cap ? -ENOSPC : 0;
}

int32_t tok_bos(const tok_t *t)
{
    return 1;
}

int32_t tok_eos(const tok_t *t)
{
    return 2;
}

int32_t tok_sep(const tok_t *t) /* a WordPiece vocabulary's; this one has none */
{
    return -1;
}

int tok_kind(const tok_t *t) /* SentencePiece-like */
{
    return TOK_SPM;
}

bool tok_add_eos(const tok_t *t)
{
    return false;
}

bool tok_add_sep(const tok_t *t)
{
    return false;
}

bool tok_add_bos(const tok_t *t)
{
    return true;
}

/* no fill-in-the-middle tokens: /infill answers its 400 */
int32_t tok_fim(const tok_t *t, int which)
{
    return -1;
}

bool tok_is_eog(const tok_t *t, int32_t id)
{
    return id == 2;
}

const char *tok_token_text(const tok_t *t, int32_t id)
{
    return id == 1 ? "<s>" : id == 2 ? "</s>" : "?";
}
