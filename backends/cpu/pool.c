/* pool.c: persistent workers with a generation counter as the start signal and a pending
 * count as the finish signal (see pool.h).  Waiting is spin-then-futex: spinning keeps the
 * hand-off at well under a microsecond while ops follow each other; after SPIN_NS without
 * work a thread sleeps in futex_wait.  Every sleeper announces itself in a counter before
 * re-checking the condition, and every waker changes the condition before reading that
 * counter (both sequentially consistent), so a wake-up is never lost. */
#include "backends/cpu/pool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/fd.h"

#define SPIN_NS 200000 /* 0.2 ms: longer than the gaps inside a step, short next to idle */

/* gen holds a run counter above NTH_BITS and the run's thread count below: a worker learns
 * which run woke it and whether it takes part in one load.  With the count in a field of its
 * own, a worker that sat out one run but was slow to look (preempted between reading gen and
 * the count) could read the next run's count, join that run under the old gen, and then run
 * it a second time when its gen came: a task twice on one thread, pending miscounted, the
 * caller let go while another worker still ran.  Counter wrap-around is harmless: a worker
 * that sees an old word again also sees the count it decided on then. */
#define NTH_BITS 12
#define NTH_MASK ((1u << NTH_BITS) - 1)
#define POOL_MAX_THREADS ((int)NTH_MASK)

/* Tests define this to widen the window between a worker seeing a run and acting on it. */
#ifndef FCPU_POOL_TEST_HOOK
#define FCPU_POOL_TEST_HOOK(ith) ((void)(ith))
#endif

struct worker {
    fcpu_pool_t *pool;
    int ith;
    pthread_t th;
};

struct fcpu_pool {
    int n;
    struct worker *w;
    int n_started;

    fcpu_task_fn fn;                /* the current task, published by the gen bump */
    void *ctx;
    _Atomic uint32_t gen;           /* start signal (futex word): run << NTH_BITS | nth */
    _Atomic int stop;
    _Atomic int pending;            /* workers still in the current task */
    _Atomic uint32_t done;          /* finish signal (futex word): runs completed */
    uint32_t runs;                  /* runs started (the driving thread's own count) */
    _Atomic int sleepers;           /* workers in futex_wait on gen */
    _Atomic int main_sleeping;

    _Atomic int bar_count;          /* in-task barrier */
    _Atomic uint32_t bar_gen;
    _Atomic int bar_sleepers;
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline void relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits until *word != val or SPIN_NS pass; returns the last value seen.  The first few
 * microseconds spin on pause; after that each round yields the core, so that when there
 * are more runnable threads than cores (another process, an oversubscribed pool) the
 * thread we wait for gets to run. */
static uint32_t spin_while_eq(_Atomic uint32_t *word, uint32_t val)
{
    uint64_t t0 = 0;
    for (unsigned i = 1;; i++) {
        uint32_t v = atomic_load_explicit(word, memory_order_acquire);
        if (v != val)
            return v;
        if (i < 4096) {
            relax();
            continue;
        }
        sched_yield();
        uint64_t t = fd_now_ns();
        if (!t0)
            t0 = t;
        else if (t - t0 > SPIN_NS)
            return val;
    }
}

static void *worker_main(void *arg)
{
    struct worker *me = arg;
    fcpu_pool_t *p = me->pool;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = spin_while_eq(&p->gen, seen);
        while (g == seen) {
            atomic_fetch_add(&p->sleepers, 1);
            futex_wait(&p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
            g = spin_while_eq(&p->gen, seen);
        }
        seen = g;
        FCPU_POOL_TEST_HOOK(me->ith);
        if (atomic_load(&p->stop))
            return NULL;
        /* taking part, this worker holds the run open: fn and ctx are still this run's */
        int nth = (int)(g & NTH_MASK);
        if (me->ith >= nth)
            continue;
        p->fn(p->ctx, me->ith, nth);
        if (atomic_fetch_sub(&p->pending, 1) == 1) {
            atomic_fetch_add(&p->done, 1);
            if (atomic_load(&p->main_sleeping))
                futex_wake(&p->done);
        }
    }
}

int fcpu_pool_create(fcpu_pool_t **out, int n)
{
    if (n < 1 || n > POOL_MAX_THREADS)
        return -EINVAL;
    fcpu_pool_t *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->n = n;
    p->w = calloc((size_t)n, sizeof(*p->w));
    if (!p->w)
        goto fail_workers;
    for (int i = 1; i < n; i++) {
        p->w[i].pool = p;
        p->w[i].ith = i;
        int rc = pthread_create(&p->w[i].th, NULL, worker_main, &p->w[i]);
        if (rc) {
            fcpu_pool_destroy(p);
            return -rc;
        }
        p->n_started = i;
    }
    *out = p;
    return 0;

fail_workers:
    free(p);
    return -ENOMEM;
}

void fcpu_pool_destroy(fcpu_pool_t *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1u << NTH_BITS);
    futex_wake(&p->gen);
    for (int i = 1; i <= p->n_started; i++)
        pthread_join(p->w[i].th, NULL);
    free(p->w);
    free(p);
}

int fcpu_pool_size(const fcpu_pool_t *p)
{
    return p->n;
}

void fcpu_pool_run(fcpu_pool_t *p, int n_threads, fcpu_task_fn fn, void *ctx)
{
    int nth = FD_MAX(1, FD_MIN(n_threads, p->n));
    if (nth == 1) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->pending, nth - 1);
    /* only this thread writes gen; the store publishes fn/ctx (seq_cst includes release) */
    uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed);
    atomic_store(&p->gen, (((g >> NTH_BITS) + 1) << NTH_BITS) | (uint32_t)nth);
    if (atomic_load(&p->sleepers))
        futex_wake(&p->gen);
    fn(ctx, 0, nth);
    /* the last worker bumps done once per run: wait for it to reach this run's number */
    uint32_t before = p->runs++;
    while (spin_while_eq(&p->done, before) == before) {
        atomic_store(&p->main_sleeping, 1);
        if (atomic_load(&p->done) == before)
            futex_wait(&p->done, before);
        atomic_store(&p->main_sleeping, 0);
    }
}

void fcpu_pool_barrier(fcpu_pool_t *p, int nth)
{
    if (nth <= 1)
        return;
    uint32_t g = atomic_load(&p->bar_gen);
    if (atomic_fetch_add(&p->bar_count, 1) == nth - 1) {
        atomic_store(&p->bar_count, 0);
        atomic_fetch_add(&p->bar_gen, 1);
        if (atomic_load(&p->bar_sleepers))
            futex_wake(&p->bar_gen);
        return;
    }
    uint32_t v = spin_while_eq(&p->bar_gen, g);
    while (v == g) {
        atomic_fetch_add(&p->bar_sleepers, 1);
        futex_wait(&p->bar_gen, g);
        atomic_fetch_sub(&p->bar_sleepers, 1);
        v = spin_while_eq(&p->bar_gen, g);
    }
}
