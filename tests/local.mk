# tests/local.mk: one Check program per module (tests/test_<module>.c) and black-box scripts.
EXTRA_DIST += tests/testutil.h

check_PROGRAMS += tests/test_common
tests_test_common_SOURCES = tests/test_common.c
tests_test_common_CFLAGS = $(TEST_CFLAGS)
tests_test_common_LDADD = $(TEST_LIBS)
TESTS += tests/test_common

check_PROGRAMS += tests/test_gguf
tests_test_gguf_SOURCES = tests/test_gguf.c
tests_test_gguf_CFLAGS = $(TEST_CFLAGS)
tests_test_gguf_LDADD = $(TEST_LIBS)
TESTS += tests/test_gguf
