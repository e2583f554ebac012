# bench/local.mk: included from the top-level Makefile.am.

# fusion-bench: fused vs unfused, op level (norm->GEMM, softmax->P.V) and end to end.
noinst_PROGRAMS += fusion-bench
fusion_bench_SOURCES = bench/fusion-bench.c
fusion_bench_LDADD = $(FD_LIBS)

# serve-bench: the serving load generator (python3, stdlib only); BENCHMARKS.md has runs.
EXTRA_DIST += bench/serve-bench
