/* perf.h: fusion-bench's throughput commands (bench/perf.c): the machine's limits measured in
 * the same run (read bandwidth, OpenBLAS sgemm), GEMV/GEMM throughput per weight type and
 * model shape against them, and llama-bench-style prompt / decode tokens per second of a
 * model file.  Called from fusion-bench's main on its one thread. */
#ifndef FD_BENCH_PERF_H
#define FD_BENCH_PERF_H

#include <stdbool.h>

/* True when argv[1] names one of these commands; perf_main then runs it. */
bool perf_command(const char *cmd);
int perf_main(int argc, char **argv);
void perf_usage(void *file);
/* Seconds on the wall clock, or (cpu) the process's CPU time, which preemption by other
 * processes does not inflate (with N threads it sums their CPU time). */
double bench_now_s(bool cpu);

#endif
