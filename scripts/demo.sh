#!/usr/bin/env bash
# The demo: an ivcd for one job and two host processes exchanging data
# through IVC (shared memory served the way QEMU's ivshmem-server serves it).
# Usage: scripts/demo.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
job=$((RANDOM * 32768 + RANDOM + 1))
dir=$(mktemp -d /tmp/vhpc-demo.XXXXXX)
sock=$dir/ivc-$job.sock
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [ -f "$dir/ivcd.pid" ]; then kill "$(cat "$dir/ivcd.pid")" 2>/dev/null || true; fi
    sleep 0.2
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

echo "== starting ivcd for job $job (region 256 MiB, socket $sock)"
"$build/src/ivcd/ivcd" --daemon --socket "$sock" --job "$job" --size 256M --pidfile "$dir/ivcd.pid"
echo "== two host processes join the job and talk through IVC"
"$build/examples/ivc_demo" --socket "$sock" --job "$job" --role recv --mib 256 &
pids+=($!)
"$build/examples/ivc_demo" --socket "$sock" --job "$job" --role send --mib 256
wait "${pids[0]}"
pids=()
echo "== ivcd's view after both left"
"$build/src/ivcd/ivcd" ctl --socket "$sock" status
echo "== demo ok"
