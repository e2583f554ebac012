#!/bin/sh
# test_embeddings.sh: runs the /v1/embeddings HTTP tests
# (test_embeddings.py) against the built fusiond with stories260K from the shared data
# folder; skips (77) when the model or python3 is missing, unless FUSIOND_REQUIRE_SHARED=1.
top_srcdir=${top_srcdir:-$(dirname "$0")/..}
top_builddir=${top_builddir:-.}
model="${FUSIOND_SHARED:-../shared}/models/stories260K.gguf"
missing() {
    if [ "${FUSIOND_REQUIRE_SHARED:-}" = 1 ]; then
        echo "FAIL: $1 (FUSIOND_REQUIRE_SHARED=1)"; exit 1
    fi
    echo "SKIP: $1"; exit 77
}
[ -r "$model" ] || missing "shared test data missing: $model (set FUSIOND_SHARED)"
command -v python3 >/dev/null 2>&1 || missing "python3 not found"
[ -x "$top_builddir/fusiond" ] || { echo "SKIP: $top_builddir/fusiond is not built"; exit 77; }
exec python3 "$top_srcdir/tests/test_embeddings.py" "$top_builddir/fusiond" "$model"
