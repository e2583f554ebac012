# bench/local.mk: included from the top-level Makefile.am.

# fusion-bench: fused vs unfused, op level (norm->GEMM, softmax->P.V) and end to end.
noinst_PROGRAMS += fusion-bench
fusion_bench_SOURCES = bench/fusion-bench.c bench/perf.h bench/perf.c bench/corsair-report.c
fusion_bench_CPPFLAGS = $(AM_CPPFLAGS) -DCORSAIR_REPORT_NO_MAIN
fusion_bench_LDADD = $(FD_LIBS)

# serve-bench: the serving load generator (python3, stdlib only); BENCHMARKS.md has runs.
EXTRA_DIST += bench/serve-bench bench/cpu-bench bench/plp-bench.py bench/embed-bench.py
# ugm-bench.py: the unigram tokenizer against SentencePiece (python3-sentencepiece).
EXTRA_DIST += bench/ugm-bench.py

# sampler-bench: the sampler's cost per call on large vocabularies, the scheduler's per step.
noinst_PROGRAMS += sampler-bench
sampler_bench_SOURCES = bench/sampler-bench.c
sampler_bench_LDADD = $(FD_LIBS)

# grammar-bench: constrained decoding's per-step token mask on a model's vocabulary.
noinst_PROGRAMS += grammar-bench
grammar_bench_SOURCES = bench/grammar-bench.c
grammar_bench_LDADD = $(FD_LIBS)

# corsair-report: the tables of docs/corsair.md (simulated Corsair latency, fused vs unfused,
# sensitivity sweep, BFP numerics).
noinst_PROGRAMS += corsair-report
corsair_report_SOURCES = bench/corsair-report.c
corsair_report_LDADD = $(FD_LIBS)
EXTRA_DIST += bench/serve-bench

# The CUDA backend's device run (bench/cuda/cuda-all.sh: build without configure on a GPU
# machine, test_cuda, the bandwidth probe, fusion-bench synth, the PyTorch reference).
EXTRA_DIST += bench/cuda/cuda-all.sh bench/cuda/bwprobe.cu bench/cuda/torch_ref.py \
	bench/cuda/compat-check/check.h bench/cuda/compat-blas/cblas.h \
	bench/cuda/compat-blas/cblas_lite.c bench/cuda/kbench.cu
# fusiond itself on the GPU machine (Debian packages unpacked into a private prefix).
EXTRA_DIST += bench/cuda/fusiond-gpu.sh bench/cuda/fusiond-client.py

# spec-bench: decode tokens/s with n-gram speculative decoding off and on (BENCHMARKS.md).
noinst_PROGRAMS += spec-bench
spec_bench_SOURCES = bench/spec-bench.c
spec_bench_LDADD = $(FD_LIBS)
# ... and on the CUDA backend of a GPU machine (built there without configure).
EXTRA_DIST += bench/cuda/spec-gpu.sh
# The decode step's products at 1-8 activation rows, old path against the multi-row kernel.
EXTRA_DIST += bench/cuda/gemv-rows.sh
