# backends/corsair/local.mk: the Corsair virtual device (block floating point numerics and a
# timing model); included from backends/local.mk.  FB_HAVE_CORSAIR registers it in
# backends/backend.c.
libfusiond_a_SOURCES += backends/corsair/bfp.h backends/corsair/bfp.c \
	backends/corsair/corsair.h backends/corsair/corsair_backend.c \
	backends/corsair/timing.h backends/corsair/timing.c \
	backends/corsair/replay.h backends/corsair/replay.c
AM_CPPFLAGS += -DFB_HAVE_CORSAIR
dist_doc_DATA += docs/corsair.md
