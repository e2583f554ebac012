/* evq.c: the locked event FIFO between the engine thread and the loop. */
#include "server/evq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void on_async(uv_async_t *h)
{
    evq_t *q = h->data;
    evq_node_t *list = evq_take(q);
    if (list)
        q->drain(q, list, q->ud);
}

int evq_init(evq_t *q, uv_loop_t *loop, evq_drain_cb drain, void *ud)
{
    memset(q, 0, sizeof *q);
    q->drain = drain;
    q->ud = ud;
    int rc = pthread_mutex_init(&q->mu, NULL);
    if (rc)
        return -rc;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) {
        rc = -rc;
        goto fail_cond;
    }
    rc = uv_async_init(loop, &q->async, on_async); /* negative errno already */
    if (rc)
        goto fail_async;
    q->async.data = q;
    return 0;
fail_async:
    pthread_cond_destroy(&q->cv);
fail_cond:
    pthread_mutex_destroy(&q->mu);
    return rc;
}

void evq_close(evq_t *q, uv_close_cb close_cb)
{
    /* Taking the lock waits out a push still inside uv_async_send (see evq_push). */
    evq_node_t *n = evq_take(q);
    while (n) {
        evq_node_t *next = n->next;
        evq_free_node(n);
        n = next;
    }
    uv_close((uv_handle_t *)&q->async, close_cb);
}

void evq_fini(evq_t *q)
{
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

evq_node_t *evq_copy(const eng_event_t *ev, void *target, evq_node_t *prealloc)
{
    size_t text = ev->type == ENG_EV_TOKEN ? ev->text_len : 0;
    size_t ntop = ev->type == ENG_EV_TOKEN && ev->top && ev->n_top > 0 ? (size_t)ev->n_top : 0;
    evq_node_t *n;
    if (prealloc && text == 0 && ntop == 0) {
        n = prealloc;
        memset(n, 0, sizeof *n);
        n->prealloc = true;
    } else {
        n = malloc(sizeof *n + ntop * sizeof(eng_top_t) + text + 1);
        if (!n)
            return NULL;
        memset(n, 0, sizeof *n);
    }
    n->target = target;
    n->ev = *ev;
    eng_top_t *top = (eng_top_t *)(n + 1);
    char *t = (char *)(top + ntop);
    if (ntop)
        memcpy(top, ev->top, ntop * sizeof *top);
    n->ev.top = ntop ? top : NULL;
    n->ev.n_top = (int)ntop;
    if (n->prealloc) {
        n->ev.text = "";
    } else {
        if (text)
            memcpy(t, ev->text, text);
        t[text] = 0;
        n->ev.text = t;
    }
    n->ev.text_len = text;
    n->ev.error = NULL;
    if (ev->type == ENG_EV_DONE && ev->error) {
        size_t len = strlen(ev->error);
        if (len >= sizeof n->err)
            len = sizeof n->err - 1;
        memcpy(n->err, ev->error, len);
        n->err[len] = 0;
        n->ev.error = n->err;
    }
    return n;
}

void evq_free_node(evq_node_t *n)
{
    if (n && !n->prealloc)
        free(n);
}

void evq_push(evq_t *q, evq_node_t *n)
{
    n->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    q->pushed++;
    pthread_cond_broadcast(&q->cv);
    /* Sent under the lock so that once the loop has seen a request's last event and closes
     * the queue, no engine thread can still be inside uv_async_send on it. */
    uv_async_send(&q->async);
    pthread_mutex_unlock(&q->mu);
}

evq_node_t *evq_take(evq_t *q)
{
    pthread_mutex_lock(&q->mu);
    evq_node_t *n = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return n;
}

bool evq_wait(evq_t *q, double timeout_s)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_nsec + (long long)(timeout_s * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    pthread_mutex_lock(&q->mu);
    while (!q->head) {
        if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT)
            break;
    }
    bool any = q->head != NULL;
    pthread_mutex_unlock(&q->mu);
    return any;
}
