#!/usr/bin/env bash
# test_fi_mpi.sh DIR - MPI programs of ours (DIR/mpi_suite, DIR/mpi_kill,
# built with Debian's mpicc) run by Open MPI over the provider ivc on this
# host, every rank attached to one ivcd region (so pairs use IVC):
#  - mpi_suite with 2, 4 and 8 ranks: point-to-point (blocking, non-blocking,
#    ANY_SOURCE/ANY_TAG, ordering, Probe/Iprobe/Mprobe, Ssend, cancel,
#    truncation, 0 B..16 MiB) and collectives, each checked;
#  - the same over TCP only (FI_IVC_ENABLE=0) with 4 ranks, and with tiny
#    eager and credit limits;
#  - a rank that kills itself mid-exchange: mpirun fails, in bounded time,
#    and no rank is left running.
set -uo pipefail
dir=$1
on_exit() { pkill -9 -f "$dir/mpi_(suite|kill)" 2>/dev/null; }
. "$(dirname "$0")/mpi_region.sh" # $tmp, ivcd, pass/fail, $preload
mpi() { # NP PROGRAM [ARGS] (with any extra -x before NP via MPI_EXTRA)
    local np=$1
    shift
    timeout 300 mpirun -np "$np" --oversubscribe -x FI_PROVIDER_PATH -x FI_IVC_JOB -x IVC_SOCKET \
        ${MPI_EXTRA:-} "${preload[@]}" --mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include ivc \
        --mca btl self,vader "$@"
}

for np in 2 4 8; do
    FI_LOG_LEVEL=info FI_LOG_PROV=ivc MPI_EXTRA="-x FI_LOG_LEVEL -x FI_LOG_PROV" \
        mpi $np "$dir/mpi_suite" >"$tmp/suite$np.out" 2>&1
    st=$?
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp/suite$np.out")
    ivc=$(grep -c "IVC channel .* up" "$tmp/suite$np.out")
    if [ $st -eq 0 ] && [[ "$summary" == *" 0 failed" ]] && [ "$ivc" -gt 0 ]; then
        pass "mpi_suite, $np ranks over ivc: $summary ($ivc IVC channel ends up)"
    else
        fail "mpi_suite, $np ranks: status $st, '$summary', $ivc IVC channels: $(grep -E '^FAIL|warn' "$tmp/suite$np.out" | head -10)"
    fi
done

FI_IVC_ENABLE=0 MPI_EXTRA="-x FI_IVC_ENABLE" mpi 4 "$dir/mpi_suite" >"$tmp/tcp.out" 2>&1
st=$?
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp/tcp.out")
[ $st -eq 0 ] && [[ "$summary" == *" 0 failed" ]] &&
    pass "mpi_suite, 4 ranks, IVC off (FI_IVC_ENABLE=0): $summary" ||
    fail "mpi_suite with IVC off: status $st, '$summary': $(grep -E '^FAIL' "$tmp/tcp.out" | head -10)"

# Tiny eager and credit limits: injected messages larger than the eager
# limit (copied before being announced) and senders out of credit (small
# messages announced; a receiver never stops reading a stream).
FI_IVC_EAGER_MAX=1000 FI_IVC_CREDIT=4096 MPI_EXTRA="-x FI_IVC_EAGER_MAX -x FI_IVC_CREDIT" \
    mpi 4 "$dir/mpi_suite" >"$tmp/small.out" 2>&1
st=$?
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp/small.out")
[ $st -eq 0 ] && [[ "$summary" == *" 0 failed" ]] &&
    pass "mpi_suite, 4 ranks, FI_IVC_EAGER_MAX=1000 FI_IVC_CREDIT=4096: $summary" ||
    fail "mpi_suite with tiny limits: status $st, '$summary': $(grep -E '^FAIL' "$tmp/small.out" | head -10)"

# A rank dies: mpirun must fail within the bound and leave nothing running.
start=$SECONDS
mpi 4 "$dir/mpi_kill" >"$tmp/kill.out" 2>&1
st=$?
took=$((SECONDS - start))
sleep 3
left=$(pgrep -f "$dir/mpi_kill" | wc -l)
[ $st -ne 0 ] && [ $st -ne 124 ] && [ "$left" -eq 0 ] && grep -q "killing myself" "$tmp/kill.out" &&
    pass "a rank killed mid-job: mpirun fails (status $st after ${took}s), no rank left" ||
    fail "killed rank: mpirun status $st after ${took}s (124 = hung), $left ranks left: $(tail -5 "$tmp/kill.out")"

echo "$fails failed"
[ $fails -eq 0 ]
