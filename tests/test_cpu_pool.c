/* test_cpu_pool.c: proves the CPU pool's hand-off when workers are slow to act on a run (as a
 * preempted worker is on a loaded machine): whatever the thread counts of the runs before,
 * each run executes its task exactly once on each of its nth threads and on no other.
 * pool.c is built into this test with its hook delaying every worker between seeing a run
 * and acting on it; the pool of libfusiond.a is not linked. */
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static _Atomic int hook_delay;

/* A few microseconds, different for each worker and call. */
static void pool_hook(int ith)
{
    static _Thread_local uint64_t seed;
    if (!atomic_load(&hook_delay))
        return;
    seed = seed * 6364136223846793005ull + 1442695040888963407ull + (uint64_t)ith;
    usleep((useconds_t)(seed >> 59)); /* 0..31 us */
}

#define FCPU_POOL_TEST_HOOK(ith) pool_hook(ith)
#include "backends/cpu/pool.c"

#include "tests/testutil.h"

enum { NT = 4, RUNS = 600 };

typedef struct count_ctx {
    _Atomic long hits[NT];
    _Atomic int bad_nth;
    int nth;
} count_ctx_t;

static void count_task(void *arg, int ith, int nth)
{
    count_ctx_t *c = arg;
    if (nth != c->nth)
        atomic_store(&c->bad_nth, 1);
    atomic_fetch_add(&c->hits[ith], 1);
}

START_TEST(test_late_workers)
{
    /* a worker that sits out a run and then takes part in the next is the case that broke */
    static const int pattern[] = {2, 4, 3, 4, 1, 4, 2, 3};
    fcpu_pool_t *p = NULL;
    ck_assert_int_eq(fcpu_pool_create(&p, NT), 0);
    count_ctx_t c;
    memset(&c, 0, sizeof c);
    long want[NT] = {0};
    atomic_store(&hook_delay, 1);
    for (int run = 0; run < RUNS; run++) {
        c.nth = pattern[run % (int)(sizeof pattern / sizeof pattern[0])];
        fcpu_pool_run(p, c.nth, count_task, &c);
        for (int i = 0; i < c.nth; i++)
            want[i]++;
        /* every worker of this run is done when run returns, and no other may start it */
        for (int i = 0; i < NT; i++)
            ck_assert_msg(atomic_load(&c.hits[i]) == want[i],
                          "run %d (nth %d): thread %d ran the task %ld times in all, expected %ld",
                          run, c.nth, i, atomic_load(&c.hits[i]), want[i]);
        ck_assert_msg(!atomic_load(&c.bad_nth), "run %d: a thread was given another run's nth",
                      run);
    }
    atomic_store(&hook_delay, 0);
    fcpu_pool_destroy(p);
}
END_TEST

START_TEST(test_bad_sizes)
{
    fcpu_pool_t *p = NULL;
    ck_assert_int_eq(fcpu_pool_create(&p, 0), -EINVAL);
    ck_assert_int_eq(fcpu_pool_create(&p, POOL_MAX_THREADS + 1), -EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(fcpu_pool_create(&p, 1), 0);
    ck_assert_int_eq(fcpu_pool_size(p), 1);
    count_ctx_t c;
    memset(&c, 0, sizeof c);
    c.nth = 1;
    fcpu_pool_run(p, 8, count_task, &c); /* capped to the pool: inline on the caller */
    ck_assert_int_eq(atomic_load(&c.hits[0]), 1);
    fcpu_pool_destroy(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cpu_pool");
    TCase *tc = tcase_create("handoff");
    tcase_add_test(tc, test_late_workers);
    tcase_add_test(tc, test_bad_sizes);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
