/* evq.h: the hand-off of engine events to the loop thread: a mutex-guarded FIFO of copied
 * events plus a uv_async.  The engine thread copies each event (eng_event_t points into
 * engine memory that is gone once the callback returns) and pushes it; uv_async_send wakes
 * the loop, and because sends coalesce the loop's callback takes the WHOLE queue each time.
 * evq_push may be called from any thread; everything else on the loop thread. */
#ifndef FD_EVQ_H
#define FD_EVQ_H

#include <pthread.h>
#include <stdbool.h>
#include <uv.h>

#include "engine/engine.h"

typedef struct evq_node {
    struct evq_node *next;
    void *target;               /* whom the event is for (the server's choice) */
    eng_event_t ev;             /* text and top point into this node */
    char err[240];              /* DONE: a copy of ev.error */
    bool prealloc;              /* owned by its target, not malloc'd: do not free */
} evq_node_t;

typedef struct evq evq_t;
typedef void (*evq_drain_cb)(evq_t *q, evq_node_t *list, void *ud);

struct evq {
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* signalled on every push (for a blocking evq_wait) */
    evq_node_t *head, *tail;
    uv_async_t async;
    evq_drain_cb drain;
    void *ud;
    uint64_t pushed;
};

int evq_init(evq_t *q, uv_loop_t *loop, evq_drain_cb drain, void *ud);
/* Closes the async handle (close_cb as uv_close's); frees any nodes still queued. */
void evq_close(evq_t *q, uv_close_cb close_cb);

/* Frees the lock and condition once the async handle's close callback has run. */
void evq_fini(evq_t *q);

/* A copy of ev for target: malloc'd, or into prealloc (for DONE, so the last event of a
 * request never depends on an allocation).  NULL when out of memory. */
evq_node_t *evq_copy(const eng_event_t *ev, void *target, evq_node_t *prealloc);
void evq_push(evq_t *q, evq_node_t *n);
void evq_free_node(evq_node_t *n);
/* Takes every queued node (FIFO order), NULL when empty. */
evq_node_t *evq_take(evq_t *q);
/* Blocks until a node is queued or timeout_s passes; true when something is queued.  For
 * shutdown, where the loop waits for the engine's last events without running. */
bool evq_wait(evq_t *q, double timeout_s);

#endif
