#!/usr/bin/env bash
# test_vm_run.sh BUILD_DIR - `vhpc run` and `vhpc vm` with real VMs (TCG
# here): the guest's kernel, exit statuses, separate stdout/stderr, 10 MiB of
# output intact, stdin, bad input, and that SIGTERM, kill -9 + `vhpc gc`
# leave no QEMU, tap, bridge, ivcd or state file behind.
set -uo pipefail
build=$(cd "$1" && pwd)
vhpc=$build/src/vhpc/vhpc
export VHPC_RUN_DIR=$(mktemp -d /tmp/vhpc-vmtest.XXXXXX)
# A private image store (the user's stays untouched); the kernel cache is
# shared with the image tests so it is downloaded once per machine.
export VHPC_HOME=$VHPC_RUN_DIR/home
export VHPC_KERNEL_CACHE=${VHPC_KERNEL_CACHE:-/var/cache/vhpc-test/kernels}
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
cleanup() {
    "$vhpc" gc --all >/dev/null 2>&1
    rm -rf "$VHPC_RUN_DIR"
}
trap cleanup EXIT

# Nothing of a cluster may remain: processes, links, files.
leftovers() { # $1: cluster name
    local dir=$VHPC_RUN_DIR/clusters/$1
    [ -e "$dir" ] && echo "state dir $dir"
    # QEMU's command line names nothing of the cluster (its settings are in
    # qemu.cfg); its stderr is the cluster's vmN/qemu.log.
    local p
    for p in $(pgrep -x qemu-system-x86); do
        readlink "/proc/$p/fd/2" 2>/dev/null | grep -q "^$VHPC_RUN_DIR/clusters/$1/" && echo "qemu $p of $1"
    done
    pgrep -af "ivcd.*$VHPC_RUN_DIR/clusters/$1/" && echo "ivcd of $1"
    return 0
}
links_before=$(ip -o link | grep -c 'vh[bt]')

"$vhpc" image build >/dev/null || { echo "FAIL image build"; exit 1; }
kver=$("$vhpc" image show minimal | sed -n 's/^kernel: *\([^ ]*\).*/\1/p')

# Wait (up to 120 s) until FILE has COUNT (default 1) lines matching PATTERN.
until_seen() { # FILE PATTERN [COUNT]
    for _ in $(seq 1 600); do
        [ "$(grep -c -- "$2" "$1" 2>/dev/null)" -ge "${3:-1}" ] && return 0
        sleep 0.2
    done
    return 1
}
# Wait (up to 30 s) until process PID has exited.
until_gone() {
    for _ in $(seq 1 150); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
    return 1
}

# ---- one interactive cluster for the quick checks ----
"$vhpc" vm start t1 >/dev/null || { echo "FAIL vm start"; exit 1; }
out=$("$vhpc" vm exec t1 -- uname -r)
[ "$out" = "$kver" ] && pass "uname -r in the guest = cached kernel ($kver)" || fail "uname -r: '$out' != '$kver'"

out=$("$vhpc" vm exec t1 -- sh -c 'echo to-out; echo to-err >&2' 2>/tmp/vmtest.err.$$)
err=$(cat /tmp/vmtest.err.$$); rm -f /tmp/vmtest.err.$$
[ "$out" = "to-out" ] && [ "$err" = "to-err" ] && pass "stdout and stderr arrive separately" || fail "stdout '$out' stderr '$err'"

want=$(yes abcdefghijklmnopqrstuvwxyz | head -c 10485760 | sha256sum | cut -d' ' -f1)
got=$("$vhpc" vm exec t1 -- sh -c 'yes abcdefghijklmnopqrstuvwxyz | head -c 10485760' | sha256sum | cut -d' ' -f1)
[ "$want" = "$got" ] && pass "10 MiB of output intact" || fail "10 MiB checksum $got != $want"

out=$(printf 'line1\nline2\n' | "$vhpc" vm exec t1 -- cat)
[ "$out" = $'line1\nline2' ] && pass "stdin is forwarded" || fail "stdin: '$out'"

"$vhpc" vm exec t1 -- no-such-command 2>/tmp/vmtest.err.$$; st=$?
msg=$(cat /tmp/vmtest.err.$$); rm -f /tmp/vmtest.err.$$
[ $st -eq 127 ] && grep -q "no-such-command" <<<"$msg" && pass "missing command: exit 127, '$msg'" || fail "missing command: status $st, '$msg'"

"$vhpc" vm start t1 2>/tmp/vmtest.err.$$ >/dev/null; st=$?
msg=$(cat /tmp/vmtest.err.$$); rm -f /tmp/vmtest.err.$$
[ $st -ne 0 ] && grep -q "already exists" <<<"$msg" && pass "second cluster with the same name refused: '$msg'" || fail "same name: status $st '$msg'"

head -c 3145728 /dev/urandom >"$VHPC_RUN_DIR/blob"
"$vhpc" vm cp t1 "$VHPC_RUN_DIR/blob" vm0:/root.blob &&
    "$vhpc" vm exec t1 -- sh -c 'cat /root.blob > /copy.blob' &&
    "$vhpc" vm cp t1 vm0:/copy.blob "$VHPC_RUN_DIR/back" &&
    cmp -s "$VHPC_RUN_DIR/blob" "$VHPC_RUN_DIR/back" && pass "3 MiB file copied in and out intact" || fail "vm cp round trip"
"$vhpc" vm cp t1 vm0:/no/such/file "$VHPC_RUN_DIR/none" 2>/tmp/vmtest.err.$$; st=$?
msg=$(cat /tmp/vmtest.err.$$); rm -f /tmp/vmtest.err.$$
[ $st -ne 0 ] && [ ! -e "$VHPC_RUN_DIR/none" ] && grep -q "/no/such/file" <<<"$msg" && pass "copying a missing file: '$msg'" || fail "vm cp missing: $st '$msg'"

"$vhpc" vm stop t1 >/dev/null
l=$(leftovers t1); [ -z "$l" ] && pass "vm stop leaves nothing" || fail "after vm stop: $l"

# ---- two VMs: IVC between them and with the host, TCP, vhpc-rsh ----
demo=$build/examples/ivc_demo
"$vhpc" image build --name ivcdemo --add "$demo" >/dev/null || fail "image build --add $demo"
"$vhpc" vm start t2 --vms 2 --image ivcdemo >/dev/null || fail "vm start t2 --vms 2"
"$vhpc" vm exec t2 --vm 1 -- "$demo" --role recv --mib 64 >/dev/null 2>&1 &
recv=$!
out=$("$vhpc" vm exec t2 --vm 0 -- "$demo" --role send --mib 64 2>&1); st=$?
wait $recv; rst=$?
[ $st -eq 0 ] && [ $rst -eq 0 ] && grep -q "checksum: .*: match" <<<"$out" &&
    pass "two VMs exchange 64 MiB through IVC ($(grep latency <<<"$out"))" || fail "VM-VM IVC: $st/$rst $out"

job=$(cat "$VHPC_RUN_DIR/clusters/t2/job")
"$demo" --socket "$VHPC_RUN_DIR/clusters/t2/ivc.sock" --job "$job" --role recv --mib 16 >/dev/null 2>&1 &
recv=$!
out=$("$vhpc" vm exec t2 --vm 0 -- "$demo" --role send --mib 16 2>&1); st=$?
wait $recv; rst=$?
[ $st -eq 0 ] && [ $rst -eq 0 ] && grep -q "checksum: .*: match" <<<"$out" &&
    pass "a guest process and a host process exchange data through IVC" || fail "guest-host IVC: $st/$rst $out"

"$vhpc" vm exec t2 --vm 1 -- sh -c 'nc -l -p 5000 > /tmp/got; cat /tmp/got' >"$VHPC_RUN_DIR/nc.out" 2>&1 &
ncpid=$!
for _ in $(seq 1 50); do
    "$vhpc" vm exec t2 --vm 0 -- sh -c 'echo over-the-bridge | nc vm1 5000' 2>/dev/null && break
    sleep 0.2
done
wait $ncpid
grep -q over-the-bridge "$VHPC_RUN_DIR/nc.out" && pass "VM-to-VM TCP over the bridge" || fail "TCP: $(cat "$VHPC_RUN_DIR/nc.out")"

out=$("$vhpc" vm exec t2 --vm 0 -- vhpc-rsh vm1 'hostname; exit 5'); st=$?
[ "$out" = vm1 ] && [ $st -eq 5 ] && pass "vhpc-rsh runs a command in the other VM (output, status 5)" || fail "rsh: '$out' status $st"
"$vhpc" vm stop t2 >/dev/null
l=$(leftovers t2); [ -z "$l" ] && pass "vm stop of 2 VMs leaves nothing" || fail "after vm stop t2: $l"

# ---- MPI across VMs: an image --with-mpi, daemons through vhpc-rsh, IVC ----
if command -v mpicc >/dev/null; then
    mpicc -o "$VHPC_RUN_DIR/mpi_hello" "$(dirname "$0")/mpi_hello.c"
    asan=()
    if [ -n "${VHPC_PRELOAD:-}" ]; then
        # ASan build: the provider in the image is sanitized, so its runtime
        # goes in too, preloaded into every guest process.
        for l in ${VHPC_PRELOAD//:/ }; do asan+=(--add "$l"); done
        asan+=(--env "LD_PRELOAD=$VHPC_PRELOAD" --env ASAN_OPTIONS=detect_leaks=0)
    fi
    "$vhpc" image build --name mpi --with-mpi --add "$VHPC_RUN_DIR/mpi_hello" \
        --add "$build/tests/mpi_suite" "${asan[@]}" >/dev/null || fail "image build --with-mpi"
    out=$("$vhpc" run --vms 2 --image mpi -- mpirun -np 2 "$VHPC_RUN_DIR/mpi_hello" 2>&1)
    grep -q "rank 0 of 2 on vm0, sum 1" <<<"$out" && grep -q "rank 1 of 2 on vm1, sum 1" <<<"$out" &&
        pass "image --with-mpi: plain 'mpirun -np 2' puts a rank in each VM (daemon through vhpc-rsh)" ||
        fail "mpirun across VMs: $out"
    # Our MPI suite across 4 VMs, IVC between them ...
    out=$("$vhpc" run --vms 4 --image mpi -- mpirun -np 4 -x FI_LOG_LEVEL=info -x FI_LOG_PROV=ivc \
        "$build/tests/mpi_suite" 2>&1)
    ups=$(grep -c "IVC channel .* up" <<<"$out")
    grep -qE "^[0-9]+ passed, 0 failed" <<<"$out" && [ "$ups" -ge 12 ] &&
        pass "MPI suite across 4 VMs over IVC: $(grep -E '^[0-9]+ passed' <<<"$out") ($ups channel ends up)" ||
        fail "MPI suite across 4 VMs: $ups channels, $(grep -E '^FAIL|passed|rror' <<<"$out" | head -10)"
    # ... and with IVC turned off (the provider over TCP between the VMs).
    out=$("$vhpc" run --vms 4 --image mpi -- mpirun -np 4 -x FI_IVC_ENABLE=0 -x FI_LOG_LEVEL=info \
        -x FI_LOG_PROV=ivc "$build/tests/mpi_suite" 2>&1)
    ups=$(grep -c "IVC channel .* up" <<<"$out")
    grep -qE "^[0-9]+ passed, 0 failed" <<<"$out" && [ "$ups" -eq 0 ] &&
        pass "MPI suite across 4 VMs with IVC off (FI_IVC_ENABLE=0): $(grep -E '^[0-9]+ passed' <<<"$out")" ||
        fail "MPI suite, IVC off: $ups channels, $(grep -E '^FAIL|passed|rror' <<<"$out" | head -10)"
fi

# ---- vhpc run ----
"$vhpc" run --vms 1 --name r1 -- sh -c 'exit 3' 2>/dev/null; st=$?
[ $st -eq 3 ] && pass "exit 3 inside: vhpc run exits 3" || fail "exit status $st"
l=$(leftovers r1); [ -z "$l" ] && pass "run leaves nothing" || fail "after run: $l"

"$vhpc" run --vms 1 --image nosuch -- true 2>/tmp/vmtest.err.$$; st=$?
msg=$(cat /tmp/vmtest.err.$$); rm -f /tmp/vmtest.err.$$
[ $st -ne 0 ] && grep -q "unknown image" <<<"$msg" && pass "unknown image: '$msg'" || fail "unknown image: $st '$msg'"

"$vhpc" run --vms 2 --mem 100000 -- true 2>/tmp/vmtest.err.$$; st=$?
msg=$(cat /tmp/vmtest.err.$$); rm -f /tmp/vmtest.err.$$
[ $st -ne 0 ] && grep -q "available" <<<"$msg" && pass "too much memory: '$msg'" || fail "too much memory: $st '$msg'"
[ -z "$(ls "$VHPC_RUN_DIR/clusters" 2>/dev/null)" ] && pass "bad input leaves nothing" || fail "bad input left $(ls "$VHPC_RUN_DIR/clusters")"

if [ ! -e /sys/module/kvm_intel ] && [ ! -e /sys/module/kvm_amd ]; then
    "$vhpc" run --vms 1 --accel kvm -- true 2>/tmp/vmtest.err.$$; st=$?
    msg=$(cat /tmp/vmtest.err.$$); rm -f /tmp/vmtest.err.$$
    [ $st -ne 0 ] && grep -q -- "--accel kvm" <<<"$msg" && pass "--accel kvm without VT-x/AMD-V: '$msg'" || fail "--accel kvm: $st '$msg'"
fi

# SIGTERM while the command runs: the command gets it, then the VMs go down
"$vhpc" run --vms 1 --name r2 -- sh -c 'trap "echo got-term; exit 7" TERM; echo started; sleep 600 & wait' >"$VHPC_RUN_DIR/r2.out" 2>&1 &
pid=$!
until_seen "$VHPC_RUN_DIR/r2.out" started
kill -TERM $pid
until_gone $pid
wait $pid; st=$?
l=$(leftovers r2)
[ $st -eq 143 ] && [ -z "$l" ] && grep -q got-term "$VHPC_RUN_DIR/r2.out" &&
    pass "SIGTERM: the command gets it, exit 143, nothing left" || fail "SIGTERM: status $st, left: $l, $(cat "$VHPC_RUN_DIR/r2.out")"

# A command that ignores SIGTERM is stopped after the grace period, with --each
"$vhpc" run --vms 1 --name r5 --each -- sh -c 'trap "" TERM; echo started; while :; do sleep 1; done' >"$VHPC_RUN_DIR/r5.out" 2>&1 &
pid=$!
until_seen "$VHPC_RUN_DIR/r5.out" started
kill -TERM $pid
until_gone $pid
wait $pid; st=$?
l=$(leftovers r5)
[ $st -eq 143 ] && [ -z "$l" ] && grep -q "still runs" "$VHPC_RUN_DIR/r5.out" &&
    pass "SIGTERM ignored inside: stopped after the grace period, nothing left" || fail "SIGTERM ignored: status $st, left: $l, $(cat "$VHPC_RUN_DIR/r5.out")"

# A VM that dies mid-job stops the whole job (not a hang on the others)
"$vhpc" run --vms 2 --name r4 --each -- sh -c 'echo up; exec sleep 600' >"$VHPC_RUN_DIR/r4.out" 2>&1 &
pid=$!
until_seen "$VHPC_RUN_DIR/r4.out" '] up' 2
kill -KILL "$(cat "$VHPC_RUN_DIR/clusters/r4/vm1/qemu.pid")"
until_gone $pid
kill -0 $pid 2>/dev/null && { fail "vhpc run still waits after vm1 died"; kill -TERM $pid; }
wait $pid; st=$?
l=$(leftovers r4)
[ $st -ne 0 ] && [ -z "$l" ] && grep -q "vm1 failed" "$VHPC_RUN_DIR/r4.out" &&
    pass "a killed VM ends the job (status $st) and nothing is left" || fail "VM death: status $st, left: $l, $(cat "$VHPC_RUN_DIR/r4.out")"

# kill -9, then vhpc gc
"$vhpc" run --vms 1 --name r3 -- sh -c 'echo started; exec sleep 600' >"$VHPC_RUN_DIR/r3.out" 2>&1 &
pid=$!
until_seen "$VHPC_RUN_DIR/r3.out" started
kill -KILL $pid; wait $pid 2>/dev/null
[ -n "$(leftovers r3)" ] && pass "kill -9 leaves the cluster behind (for gc)" || fail "nothing left after kill -9?"
"$vhpc" gc >/dev/null
l=$(leftovers r3); [ -z "$l" ] && pass "vhpc gc removes it all" || fail "after gc: $l"

links_after=$(ip -o link | grep -c 'vh[bt]')
[ "$links_after" -eq "$links_before" ] && pass "no tap or bridge left" || fail "links: $links_before before, $links_after after"

echo "$fails failed"
[ $fails -eq 0 ]
