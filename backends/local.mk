# backends/local.mk: the backend interface, the reference number formats, and the backends.
libfusiond_a_SOURCES += backends/backend.h backends/quants.h
libfusiond_a_SOURCES += backends/quants.c
libfusiond_a_SOURCES += backends/backend.c backends/cpu/ref_ops.h backends/cpu/ref_ops.c \
	backends/cpu/cpu_backend.c
include backends/corsair/local.mk
