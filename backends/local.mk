# backends/local.mk: the backend interface, the reference number formats, and the backends.
libfusiond_a_SOURCES += backends/backend.h backends/quants.h
libfusiond_a_SOURCES += backends/quants.c
