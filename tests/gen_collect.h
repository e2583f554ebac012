/* gen_collect.h: one engine request's output gathered by its event callback (tokens, their
 * logprobs and first alternatives, text, finish, timings), for the suites that run requests
 * on a real model and compare what came out (test_grammar, test_schema, test_spec).
 * Test-only; the engine thread writes a gen_t, the test's thread waits on it. */
#ifndef FD_GEN_COLLECT_H
#define FD_GEN_COLLECT_H

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "tests/testutil.h"

enum { GEN_MAX = 400 };         /* tokens kept (the text and the count go on) */

typedef struct gen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t id;                /* eng_submit's, for the messages */
    bool done;
    int finish;
    eng_timings_t t;            /* DONE's */
    int n_tok;                  /* TOKEN events */
    int n;                      /* tokens kept below: min(n_tok, GEN_MAX) */
    int32_t tok[GEN_MAX];
    float lp[GEN_MAX];
    eng_top_t top[GEN_MAX][3];
    int n_top[GEN_MAX];
    char text[8192];            /* the text, cut at the size (NUL-terminated by gen_wait) */
    size_t n_text;
    bool bad_logprob;           /* a token's logprob was not finite or above 0 */
    int after_done;             /* events after DONE: an engine that broke its contract */
    eng_t *cancel_eng;          /* not NULL: eng_cancel from the callback once cancel_after */
    int cancel_after;           /*   tokens have come */
} gen_t;

static inline void gen_init(gen_t *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

static inline gen_t *gen_new(void)
{
    gen_t *g = malloc(sizeof *g);
    ck_assert_ptr_nonnull(g);
    gen_init(g);
    return g;
}

/* eng_request_t.on_event, with ud the gen_t. */
static inline void gen_event(void *ud, const eng_event_t *ev)
{
    gen_t *g = ud;
    pthread_mutex_lock(&g->mu);
    if (g->done) {
        g->after_done++;
    } else if (ev->type == ENG_EV_TOKEN) {
        if (g->n < GEN_MAX) {
            g->tok[g->n] = ev->token;
            g->lp[g->n] = ev->logprob;
            g->n_top[g->n] = ev->n_top;
            for (int i = 0; i < ev->n_top && i < 3; i++)
                g->top[g->n][i] = ev->top[i];
            g->n++;
        }
        if (g->n_text + ev->text_len < sizeof g->text) {
            memcpy(g->text + g->n_text, ev->text, ev->text_len);
            g->n_text += ev->text_len;
        }
        g->n_tok++;
        if (!isfinite(ev->logprob) || ev->logprob > 0)
            g->bad_logprob = true;
        if (g->cancel_eng && g->n_tok == g->cancel_after)
            eng_cancel(g->cancel_eng, ev->id);
    } else {
        g->done = true;
        g->finish = ev->finish;
        g->t = ev->timings;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Waits for the request's end (a minute, times the time scale: else the test fails), then
 * destroys the gen_t's lock and condition; DONE is the last event, so none comes after. */
static inline void gen_wait(gen_t *g)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(60 * tu_time_scale());
    pthread_mutex_lock(&g->mu);
    while (!g->done)
        if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) == ETIMEDOUT)
            break;
    bool done = g->done;
    pthread_mutex_unlock(&g->mu);
    ck_assert_msg(done, "request %llu never finished", (unsigned long long)g->id);
    ck_assert_int_eq(g->after_done, 0);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    g->text[g->n_text] = 0;
}

#endif
