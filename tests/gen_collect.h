/* gen_collect.h: one engine request's output gathered by its event callback, for the
 * suites that run constrained generation on a real model (test_grammar, test_schema).
 * Test-only; the engine thread writes a gen_t, the test's thread waits on it. */
#ifndef FD_GEN_COLLECT_H
#define FD_GEN_COLLECT_H

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "engine/engine.h"

typedef struct gen {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, finish, n_tok;
    char text[8192];            /* the text, cut at the size (NUL-terminated by gen_wait) */
    size_t n_text;
    bool bad_logprob;           /* a token's logprob was not finite or above 0 */
} gen_t;

static inline void gen_init(gen_t *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
}

/* eng_request_t.on_event, with ud the gen_t. */
static inline void gen_event(void *ud, const eng_event_t *ev)
{
    gen_t *g = ud;
    pthread_mutex_lock(&g->mu);
    if (ev->type == ENG_EV_TOKEN) {
        if (g->n_text + ev->text_len < sizeof g->text) {
            memcpy(g->text + g->n_text, ev->text, ev->text_len);
            g->n_text += ev->text_len;
        }
        g->n_tok++;
        if (!isfinite(ev->logprob) || ev->logprob > 0)
            g->bad_logprob = true;
    } else {
        g->finish = ev->finish;
        g->done = 1;
        pthread_cond_signal(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
}

/* Waits for the request's end; the gen_t's lock and condition are then destroyed. */
static inline void gen_wait(gen_t *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->done)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    g->text[g->n_text] = 0;
}

#endif
