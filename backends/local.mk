# backends/local.mk: the backend interface, the reference number formats, and the backends.
libfusiond_a_SOURCES += backends/backend.h backends/quants.h
libfusiond_a_SOURCES += backends/quants.c
libfusiond_a_SOURCES += backends/backend.c backends/cpu/ref_ops.h backends/cpu/ref_ops.c \
	backends/cpu/cpu_backend.c backends/cpu/pool.h backends/cpu/pool.c \
	backends/cpu/kernels.h backends/cpu/kernels.c backends/cpu/kernels_scalar.c \
	backends/cpu/kernels_avx2.c backends/cpu/kernels_avx512.c
EXTRA_DIST += backends/cpu/kernels_x86.inc
include backends/corsair/local.mk
