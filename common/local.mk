# common/local.mk: the lowest layer (errors, clocks, type tables, logging).
libfusiond_a_SOURCES += common/fd.h common/fd.c common/ggtypes.h common/ggtypes.c
FUZZ_SRCS += common/fd.c common/ggtypes.c
libfusiond_a_SOURCES += common/log.h common/log.c
FUZZ_SRCS += common/log.c
