#!/usr/bin/env bash
# The demo: build a minimal image holding a small IVC program, boot a
# virtual cluster of two VMs with `vhpc run`, and have vm0 send 256 MiB to
# vm1 through IVC (shared memory between the VMs, via ivshmem and ivcd)
# while vm1 checks every byte; then the same between two host processes,
# for comparison.  Usage: scripts/demo.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
vhpc=$build/src/vhpc/vhpc
demo=$build/examples/ivc_demo

echo "== building the image 'ivcdemo': Debian's cloud kernel, busybox, vhpc-agent, ivc_demo"
"$vhpc" image build --name ivcdemo --add "$demo"
echo
echo "== vhpc run: 2 VMs; vm0 sends 256 MiB through IVC, vm1 verifies it"
"$vhpc" run --vms 2 --mem 256 --image ivcdemo --each -- \
    sh -c "if [ \$VHPC_VM = 0 ]; then exec $demo --role send --mib 256; else exec $demo --role recv --mib 256; fi"

echo
echo "== the same between two host processes (ivcd + libivc on the host)"
job=$((RANDOM * 32768 + RANDOM + 1))
dir=$(mktemp -d /tmp/vhpc-demo.XXXXXX)
trap '[ -f "$dir/ivcd.pid" ] && kill "$(cat "$dir/ivcd.pid")" 2>/dev/null; sleep 0.2; rm -rf "$dir"' EXIT
"$build/src/ivcd/ivcd" --daemon --socket "$dir/ivc.sock" --job "$job" --size 256M --pidfile "$dir/ivcd.pid"
"$demo" --socket "$dir/ivc.sock" --job "$job" --role recv --mib 256 &
"$demo" --socket "$dir/ivc.sock" --job "$job" --role send --mib 256
wait
echo "== demo ok"
