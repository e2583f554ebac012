# tests/local.mk: one Check program per module (tests/test_<module>.c) and black-box scripts.
EXTRA_DIST += tests/testutil.h

check_PROGRAMS += tests/test_common
tests_test_common_SOURCES = tests/test_common.c
tests_test_common_CFLAGS = $(TEST_CFLAGS)
tests_test_common_LDADD = $(TEST_LIBS)
TESTS += tests/test_common

check_PROGRAMS += tests/test_sampler
tests_test_sampler_SOURCES = tests/test_sampler.c
tests_test_sampler_CFLAGS = $(TEST_CFLAGS)
tests_test_sampler_LDADD = $(TEST_LIBS)
TESTS += tests/test_sampler
