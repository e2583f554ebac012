# backends/local.mk: the backend interface, the reference number formats, and the backends.
libfusiond_a_SOURCES += backends/backend.h backends/quants.h
libfusiond_a_SOURCES += backends/quants.c
libfusiond_a_SOURCES += backends/backend.c backends/cpu/ref_ops.h backends/cpu/ref_ops.c \
	backends/cpu/cpu_backend.c backends/cpu/pool.h backends/cpu/pool.c \
	backends/cpu/kernels.h backends/cpu/kernels.c backends/cpu/kernels_scalar.c \
	backends/cpu/kernels_avx2.c backends/cpu/kernels_avx512.c
EXTRA_DIST += backends/cpu/kernels_x86.inc
include backends/corsair/local.mk

# The CUDA backend (--with-cuda): two nvcc objects added to the library.  Automake has no
# CUDA language support, so they are plain explicit rules; the sources are distributed either
# way, so `make dist` from a build without CUDA still carries them.
EXTRA_DIST += backends/cuda/cuda_backend.cu backends/cuda/cuda_kernels.cu \
	backends/cuda/cuda_kernels.h
dist_doc_DATA += docs/gpu.md
if HAVE_CUDA
FD_CUDA_OBJS = backends/cuda/cuda_backend.$(OBJEXT) backends/cuda/cuda_kernels.$(OBJEXT)
libfusiond_a_LIBADD = $(FD_CUDA_OBJS)
libfusiond_a_DEPENDENCIES = $(FD_CUDA_OBJS)
FD_LIBS += $(CUDA_LIBS)
CLEANFILES += $(FD_CUDA_OBJS)
FD_NVCC = $(NVCC) $(NVCCFLAGS) -I$(top_srcdir) -I$(top_builddir)
backends/cuda/cuda_backend.$(OBJEXT): $(srcdir)/backends/cuda/cuda_backend.cu \
		$(srcdir)/backends/cuda/cuda_kernels.h $(srcdir)/backends/backend.h
	@$(MKDIR_P) backends/cuda
	$(AM_V_CC)$(FD_NVCC) -c -o $@ $(srcdir)/backends/cuda/cuda_backend.cu
backends/cuda/cuda_kernels.$(OBJEXT): $(srcdir)/backends/cuda/cuda_kernels.cu \
		$(srcdir)/backends/cuda/cuda_kernels.h $(srcdir)/backends/backend.h
	@$(MKDIR_P) backends/cuda
	$(AM_V_CC)$(FD_NVCC) -c -o $@ $(srcdir)/backends/cuda/cuda_kernels.cu
endif
