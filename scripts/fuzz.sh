#!/usr/bin/env bash
# Run every fuzzer (or those named) for FUZZ_TIME seconds each (default
# 300), two at a time, from its committed corpus plus what earlier runs
# found (kept in BUILD/fuzz-corpus/<target>, not in the repository).  Inputs
# that crash land in BUILD/fuzz-crashes/<target>/; a fixed one belongs in
# tests/fuzz/crashes/<target>/ (a regression test of every build).
# Usage: scripts/fuzz.sh BUILD_DIR [TARGET...]   (make fuzz)
set -uo pipefail
b=$1
shift
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${FUZZ_TIME:-300}
jobs=${FUZZ_JOBS:-2}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in "$b"/tests/fuzz/fuzz_*; do
        [ -x "$f" ] && targets+=("$(basename "$f" | sed 's/^fuzz_//')")
    done
fi
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run_one() {
    "$here/tests/fuzz/run.sh" "$b/tests/fuzz/fuzz_$1" "$1" "$b/fuzz-crashes/$1" "$secs" \
        "$b/fuzz-corpus/$1" >"$logs/$1" 2>&1
    echo $? >"$logs/$1.rc"
}
echo "fuzzing ${targets[*]}: ${secs}s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
failed=0
for t in "${targets[@]}"; do
    rc=$(cat "$logs/$t.rc" 2>/dev/null || echo 1)
    case $rc in
    0) echo "fuzz_$t: ok ($(grep -oE 'stat::number_of_executed_units: [0-9]+' "$logs/$t" | grep -oE '[0-9]+') runs)" ;;
    77) echo "fuzz_$t: skipped ($(tail -n 1 "$logs/$t"))" ;;
    *)
        echo "fuzz_$t: FAILED"
        sed 's/^/    /' "$logs/$t"
        failed=$((failed + 1))
        ;;
    esac
done
[ "$failed" -eq 0 ]
