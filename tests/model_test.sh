# model_test.sh: sourced by the black-box HTTP test wrappers (test_server.sh,
# test_prompt_logprobs.sh, test_embeddings.sh): run_model_test SCRIPT runs tests/SCRIPT with
# the built fusiond and stories260K from the shared data folder; skips (77) when the model,
# python3 or fusiond is missing, unless FUSIOND_REQUIRE_SHARED=1 (CI), where a missing model
# or python3 is a failure.
top_srcdir=${top_srcdir:-$(dirname "$0")/..}
top_builddir=${top_builddir:-.}

missing() {
    if [ "${FUSIOND_REQUIRE_SHARED:-}" = 1 ]; then
        echo "FAIL: $1 (FUSIOND_REQUIRE_SHARED=1)"; exit 1
    fi
    echo "SKIP: $1"; exit 77
}

run_model_test() {
    model="${FUSIOND_SHARED:-../shared}/models/stories260K.gguf"
    [ -r "$model" ] || missing "shared test data missing: $model (set FUSIOND_SHARED)"
    command -v python3 >/dev/null 2>&1 || missing "python3 not found"
    [ -x "$top_builddir/fusiond" ] || { echo "SKIP: $top_builddir/fusiond is not built"; exit 77; }
    exec python3 "$top_srcdir/tests/$1" "$top_builddir/fusiond" "$model"
}
