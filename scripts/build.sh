#!/usr/bin/env bash
# build.sh DIR [CMAKE OPTIONS...] - configure and build one build tree,
# its output into DIR/build.log: one line when it works, the log's end
# (the errors) when it does not.  Installs nothing (scripts/deps.sh does).
set -uo pipefail
dir=$1
shift
mkdir -p "$dir"
log=$dir/build.log
if cmake -S . -B "$dir" "$@" >"$log" 2>&1 && cmake --build "$dir" -j "${JOBS:-$(nproc)}" >>"$log" 2>&1; then
    echo "built $dir (log: $log)"
    exit 0
fi
grep -E "error|Error|warning" "$log" | grep -v "^\[ *[0-9]*%\]" | head -40
echo "--- end of $log:"
tail -15 "$log"
echo "build of $dir failed (full log: $log; missing packages? make deps installs them)"
exit 1
