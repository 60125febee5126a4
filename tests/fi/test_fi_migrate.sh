#!/usr/bin/env bash
# test_fi_migrate.sh MPI_STORM - Open MPI over the provider ivc with 4 ranks
# in two ivcd regions of one job (as on two hosts): ranks 0,1 in region A,
# ranks 2,3 in region B, so 0-1 and 2-3 talk through IVC and the other
# pairs through TCP.  While every rank streams numbered messages to every
# other one (mpi_storm), rank 1 is suspended by `ivcd ctl suspend` again
# and again; it re-attaches by itself.  Every message must arrive once, in
# order, intact; the channels must come back after each suspend but those
# in rank 1's last 2 s (it may end before it re-attaches).
set -uo pipefail
storm=$1
: "${FI_PROVIDER_PATH:?set by ctest}" "${IVCD:?set by ctest}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d /tmp/fi-mig.XXXXXX)
cleanup() {
    [ -n "${mpid:-}" ] && kill -9 "$mpid" 2>/dev/null
    pkill -9 -f "$tmp/" 2>/dev/null
    for r in a b; do [ -f "$tmp/ivcd-$r.pid" ] && kill "$(cat "$tmp/ivcd-$r.pid")" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

job=$((RANDOM * 1000 + 11))
for r in a b; do
    "$IVCD" --job $job --socket "$tmp/ivc-$r.sock" --size 64M --daemon --pidfile "$tmp/ivcd-$r.pid" ||
        fail "ivcd $r did not start"
done
cat >"$tmp/rank.sh" <<WRAP
#!/bin/sh
# Ranks 0,1 on "host" A, 2,3 on "host" B.
if [ "\$OMPI_COMM_WORLD_RANK" -lt 2 ]; then export IVC_SOCKET=$tmp/ivc-a.sock; else export IVC_SOCKET=$tmp/ivc-b.sock; fi
[ -n "\${VHPC_PRELOAD:-}" ] && export LD_PRELOAD=\$VHPC_PRELOAD
$storm 8 &
echo \$! > $tmp/rank\$OMPI_COMM_WORLD_RANK.pid
wait \$!
st=\$?
echo \$((\$(date +%s%N) / 1000000)) > $tmp/end\$OMPI_COMM_WORLD_RANK
exit \$st
WRAP
chmod +x "$tmp/rank.sh"

FI_IVC_JOB=$job FI_LOG_LEVEL=info FI_LOG_PROV=ivc timeout 120 mpirun -np 4 --oversubscribe \
    -x FI_PROVIDER_PATH -x FI_IVC_JOB -x FI_LOG_LEVEL -x FI_LOG_PROV -x VHPC_PRELOAD -x ASAN_OPTIONS \
    --mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include ivc --mca btl self,vader \
    "$tmp/rank.sh" >"$tmp/out" 2>&1 &
mpid=$!

# Rank 1's ivshmem peer id in region A (it changes with every re-attach).
peer_of_rank1() {
    local pid
    pid=$(cat "$tmp/rank1.pid" 2>/dev/null) || return 1
    "$IVCD" ctl --socket "$tmp/ivc-a.sock" list |
        awk -v pid="$pid" '$1 == "client" && $3 == "pid=" pid && $4 == "state=live" {sub("id=", "", $2); print $2; exit}'
}
# The suspends start once rank 1's first IVC channel is up: a suspend while
# MPI_Init is still running (4 ranks on a busy machine can take longer than
# any fixed wait) comes before any channel, and the count below would be
# one short although every channel came back.
rank1_up() {
    local pid
    pid=$(cat "$tmp/rank1.pid" 2>/dev/null) && grep -q "^libfabric:$pid:.*IVC channel .* up" "$tmp/out"
}
for i in $(seq 1 200); do rank1_up && break; sleep 0.05; done
suspended=0
at=() # when each suspend took (ms)
now_ms() { echo $(($(date +%s%N) / 1000000)); }
for k in $(seq 1 8); do
    id=$(peer_of_rank1)
    if [ -n "$id" ] && "$IVCD" ctl --socket "$tmp/ivc-a.sock" suspend "$id" --timeout 10000 | grep -q "^ok suspended"; then
        suspended=$((suspended + 1))
        at+=("$(now_ms)")
    fi
    sleep 0.6
done
wait $mpid
st=$?
mpid=
# A suspend in rank 1's last 2 s may see it end before it re-attaches (the
# last suspends come about when the 8 s storm ends): only the earlier ones
# must bring the channel back.  The end is rank 1's own (its wrapper says
# when it ended), not mpirun's, whose teardown takes seconds more under load.
end=$(cat "$tmp/end1" 2>/dev/null || now_ms)
early=0
for t in "${at[@]}"; do ((t < end - 2000)) && early=$((early + 1)); done
ok=$(grep -c "in order, 0 errors" "$tmp/out")
[ $st -eq 0 ] && [ "$ok" -eq 4 ] &&
    pass "storm across 2 regions, rank 1 suspended $suspended times: all messages once, in order, intact ($(grep -o 'received [0-9]* messages' "$tmp/out" | awk '{s += $2} END {print s}') in all)" ||
    fail "storm: mpirun $st, $ok ranks clean: $(grep -E 'storm|rank [0-9]:|warn' "$tmp/out" | head -20)"
[ $suspended -ge 4 ] && pass "rank 1 was suspended $suspended times mid-storm" || fail "only $suspended suspends took"

r1=$(cat "$tmp/rank1.pid")
ups=$(grep -c "^libfabric:$r1:.*IVC channel .* up" "$tmp/out")
[ "$ups" -gt "$early" ] &&
    pass "rank 1's IVC channel came back after every suspend ($ups channels up for $suspended suspends, $early of them 2 s before the end)" ||
    fail "rank 1: $ups channels up for $suspended suspends ($early of them 2 s before the end)"
# Rank 0: IVC to rank 1 (same region), TCP to ranks 2 and 3.
r0=$(cat "$tmp/rank0.pid")
ivc0=$(sed -n "s/^libfabric:$r0:.*sent [0-9]* bytes by TCP, \([0-9]*\) by IVC.*/\1/p" "$tmp/out" | sort -n | tail -1)
tcp0=$(sed -n "s/^libfabric:$r0:.*sent \([0-9]*\) bytes by TCP, 0 by IVC.*/\1/p" "$tmp/out" | wc -l)
[ "${ivc0:-0}" -gt 1000000 ] && [ "$tcp0" -eq 2 ] &&
    pass "rank 0 reached rank 1 by IVC ($ivc0 bytes) and ranks 2, 3 by TCP only" ||
    fail "rank 0: IVC bytes ${ivc0:-0}, peers with TCP only: $tcp0"
echo "$fails failed"
[ $fails -eq 0 ]
