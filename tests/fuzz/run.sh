#!/usr/bin/env bash
# Run one libFuzzer fuzzer for a bounded time from a copy of its committed
# corpus (tests/fuzz/corpus/TARGET and the reproducers in crashes/TARGET;
# the dictionary TARGET.dict where there is one), so that a run never
# changes the repository.  A crash, leak, timeout or
# out-of-memory fails (exit 1) and its input is copied to CRASH_DIR.
# Usage: run.sh FUZZER TARGET CRASH_DIR SECONDS [KEEP_CORPUS_DIR]
#   KEEP_CORPUS_DIR (make fuzz): new inputs are kept there between runs.
set -uo pipefail
exe=$1 t=$2 crashes=$3 secs=$4 keep=${5:-}
here=$(cd "$(dirname "$0")" && pwd)
# On tmpfs when there is one: the store fuzzers write (and fsync) files.
base=/dev/shm
[ -d "$base" ] && [ -w "$base" ] || base=${TMPDIR:-/tmp}
work=$(mktemp -d "$base/fuzz-$t.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/art" "$work/tmp"
# Everything the harness creates goes under $TMPDIR (fuzz_util.h), removed
# with $work even when the fuzzer dies.
export TMPDIR=$work/tmp
for d in "$here/corpus/$t" "$here/crashes/$t"; do
    [ -d "$d" ] && find "$d" -maxdepth 1 -type f -exec cp -t "$work/corpus" {} +
done
dirs=("$work/corpus")
if [ -n "$keep" ]; then
    mkdir -p "$keep"
    dirs=("$keep" "$work/corpus")
fi
# A target's dictionary (TARGET.dict, from gen_corpus.py), where it has one.
dict=()
[ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
# libFuzzer's own exit code for a crash is 77, ctest's "skipped" here (a
# harness exits 77 when this machine cannot run it): crashes exit 1.
"$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -max_len=65536 \
    -error_exitcode=1 -print_final_stats=1 -artifact_prefix="$work/art/" "${dict[@]}" \
    "${dirs[@]}" >"$work/log" 2>&1
rc=$?
arts=$(find "$work/art" -type f | wc -l)
if [ "$rc" -eq 77 ] && [ "$arts" -eq 0 ]; then
    tail -n 3 "$work/log"
    exit 77
fi
grep -E '^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$work/log"
if [ "$rc" -ne 0 ] || [ "$arts" -gt 0 ]; then
    echo "fuzz_$t: FAILED (exit $rc)"
    grep -E -A 40 '^==[0-9]+==|^SUMMARY|ERROR: libFuzzer|runtime error' "$work/log" | head -n 80
    mkdir -p "$crashes"
    for f in "$work/art"/*; do
        [ -f "$f" ] || continue
        cp "$f" "$crashes/"
        echo "input: $crashes/$(basename "$f") (reproduce: $exe $crashes/$(basename "$f"))"
    done
    exit 1
fi
echo "fuzz_$t: no crash in ${secs}s"
