/* pool.h: the CPU backend's persistent worker threads.  fcpu_pool_run hands one task to all
 * n threads (the caller is thread 0 and works too) and returns when every thread is done:
 * no thread is created per op.  Idle workers spin for a short while (an op follows the
 * previous one within microseconds during a decode step) and then sleep on a futex, so an
 * idle server costs no CPU.  Owned by one CPU backend; fcpu_pool_run is called by the one
 * thread that drives that backend. */
#ifndef FD_CPU_POOL_H
#define FD_CPU_POOL_H

typedef struct fcpu_pool fcpu_pool_t;

/* fn(ctx, ith, nth) runs once on each thread ith = 0..nth-1. */
typedef void (*fcpu_task_fn)(void *ctx, int ith, int nth);

/* n threads in all, 1..4095 (n - 1 workers are started).  -EINVAL, -ENOMEM / -errno or 0. */
int fcpu_pool_create(fcpu_pool_t **out, int n);
void fcpu_pool_destroy(fcpu_pool_t *p);
int fcpu_pool_size(const fcpu_pool_t *p);

/* Runs fn on nth = min(n_threads, pool size) threads (nth <= 1: inline, no hand-off). */
void fcpu_pool_run(fcpu_pool_t *p, int n_threads, fcpu_task_fn fn, void *ctx);

/* Inside a task: waits until all nth threads of the current run reach it. */
void fcpu_pool_barrier(fcpu_pool_t *p, int nth);

#endif
