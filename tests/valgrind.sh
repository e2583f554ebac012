#!/bin/bash
# valgrind.sh: runs Check suites under valgrind memcheck (make check-valgrind).  Each suite
# runs in one process (CK_FORK=no, so valgrind sees every test and its leaks) and fails on any
# memory error or a definite or indirect leak.  Arguments: the suites (paths to the built test
# programs; default: every tests/test_* program built here).  Exit 77 from a suite (shared
# data missing) is a skip.  Ends with "N passed, N failed, N skipped".
set -u
if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind.sh: valgrind not found (apt-get install valgrind)"
    exit 1
fi
suites=("$@")
if [ ${#suites[@]} -eq 0 ]; then
    for t in tests/test_*; do
        [ -f "$t" ] && [ -x "$t" ] && [[ "$t" != *.* ]] && suites+=("$t")
    done
fi
export CK_FORK=no
export OPENBLAS_NUM_THREADS=1   # OpenBLAS's own threads only slow valgrind down
export CK_DEFAULT_TIMEOUT=${CK_DEFAULT_TIMEOUT:-3600}
mkdir -p tests/valgrind-logs
pass=0 fail=0 skip=0
for t in "${suites[@]}"; do
    n=$(basename "$t")
    log=tests/valgrind-logs/$n.log
    start=$(date +%s)
    valgrind -q --leak-check=full --show-leak-kinds=definite,indirect \
        --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --track-origins=no \
        "$t" >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then
        pass=$((pass + 1))
        echo "PASS: $n (${secs}s under valgrind)"
    elif [ $rc -eq 77 ]; then
        skip=$((skip + 1))
        echo "SKIP: $n"
    else
        fail=$((fail + 1))
        echo "FAIL: $n (exit $rc, ${secs}s; log in $log)"
        grep -E '^==[0-9]+==|Failures|Errors' "$log" | head -n 60
    fi
done
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
