# tests/local.mk: one Check program per module (tests/test_<module>.c) and black-box scripts.
EXTRA_DIST += tests/testutil.h

check_PROGRAMS += tests/test_common
tests_test_common_SOURCES = tests/test_common.c
tests_test_common_CFLAGS = $(TEST_CFLAGS)
tests_test_common_LDADD = $(TEST_LIBS)
TESTS += tests/test_common

check_PROGRAMS += tests/test_quants
tests_test_quants_SOURCES = tests/test_quants.c
tests_test_quants_CFLAGS = $(TEST_CFLAGS)
tests_test_quants_LDADD = $(TEST_LIBS)
TESTS += tests/test_quants

check_PROGRAMS += tests/test_log
tests_test_log_SOURCES = tests/test_log.c
tests_test_log_CFLAGS = $(TEST_CFLAGS)
tests_test_log_LDADD = $(TEST_LIBS)
TESTS += tests/test_log

check_PROGRAMS += tests/test_request
tests_test_request_SOURCES = tests/test_request.c
tests_test_request_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS)
tests_test_request_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_request

check_PROGRAMS += tests/test_metrics
tests_test_metrics_SOURCES = tests/test_metrics.c
tests_test_metrics_CFLAGS = $(TEST_CFLAGS)
tests_test_metrics_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_metrics

# test_http drives the real HTTP layer against tests/fake_engine.c (linked before the
# libraries, so its engine and tokenizer definitions are the ones used).
check_PROGRAMS += tests/test_http
tests_test_http_SOURCES = tests/test_http.c tests/fake_engine.c tests/fake_engine.h
tests_test_http_CFLAGS = $(TEST_CFLAGS) $(CJSON_CFLAGS) $(UV_CFLAGS)
tests_test_http_LDADD = $(SRV_LIBS) $(CHECK_LIBS)
TESTS += tests/test_http
