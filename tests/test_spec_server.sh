#!/bin/sh
# test_spec_server.sh: runs the speculative-decoding HTTP tests (test_spec_server.py) against the
# built fusiond with stories260K from the shared data folder (tests/model_test.sh says when it
# skips).
. "${top_srcdir:-$(dirname "$0")/..}/tests/model_test.sh"
run_model_test test_spec_server.py
