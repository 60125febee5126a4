#!/usr/bin/env bash
# test_layers.sh BUILD PROBE:WANT... - build each probe target of
# tests/layers.cmake and check that it compiles ("builds") or is refused
# ("fails") for the reason we mean: its header is not on that include path.
set -uo pipefail
build=$1
shift
passed=0 failed=0
for pw in "$@"; do
    t=${pw%%:*} want=${pw##*:}
    out=$(cmake --build "$build" --target "$t" 2>&1)
    rc=$?
    if [ "$want" = builds ] && [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
    elif [ "$want" = fails ] && [ "$rc" -ne 0 ] && grep -q 'No such file or directory' <<<"$out"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "FAIL $t: wanted it to $want (rc $rc)"
        tail -n 15 <<<"$out"
    fi
done
echo "$passed passed, $failed failed, 0 skipped"
[ "$failed" -eq 0 ]
