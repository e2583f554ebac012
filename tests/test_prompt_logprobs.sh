#!/bin/sh
# test_prompt_logprobs.sh: runs the prompt log-probability HTTP tests (test_prompt_logprobs.py) against the built fusiond
# with stories260K from the shared data folder (tests/model_test.sh says when it skips).
. "${top_srcdir:-$(dirname "$0")/..}/tests/model_test.sh"
run_model_test test_prompt_logprobs.py
