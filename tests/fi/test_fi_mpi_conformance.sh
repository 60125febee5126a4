#!/usr/bin/env bash
# test_fi_mpi_conformance.sh DIR - the cases of DIR/mpi_conformance (MPI
# usages that once crashed or hung under the provider ivc; see
# tests/mpi/mpi_conformance.c), each in its own mpirun, 2 ranks attached to
# one private ivcd region, over ivc by Open MPI's pml cm + mtl ofi:
#  - each case passes, but two that meet bugs of Open MPI 4.1 (README,
#    "Known Open MPI limitations"): alltoallw_bottom may instead end with an
#    MPI error on every rank (its persistent sends pass the provider a NULL
#    buffer), cancel_send may crash inside mca_mtl_ofi, never in the
#    provider; never a hang;
#  - the intercommunicator cases again with 4 ranks, and with IVC off;
#  - each case over pml ob1 (btl self,vader,tcp), which shows the program
#    itself right.
# A rank's watchdog ends a hung case within 60 s ("hung in STEP").
set -uo pipefail
prog=$1/mpi_conformance
. "$(dirname "$0")/mpi_region.sh" # $tmp, ivcd, pass/fail, $preload

run() { # OUT NP CASE [MPIRUN OPTIONS...]: the case's output in $tmp/OUT, its status returned
    local out=$1 np=$2 case=$3
    shift 3
    timeout -k 10 120 mpirun -np "$np" --oversubscribe -x FI_PROVIDER_PATH -x FI_IVC_JOB \
        -x IVC_SOCKET "${preload[@]}" "$@" "$prog" "$case" >"$tmp/$out" 2>&1
}
ivc=(--mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include ivc)
ob1=(--mca pml ob1 --mca btl self,vader,tcp)
why() { grep -E "^FAIL|Signal:|Failing at|hung" "$tmp/$1" | head -5 | tr '\n' ' '; }

expect_pass() { # WHAT OUT STATUS CASE
    if [ "$3" -eq 0 ] && grep -q "^PASS $4\$" "$tmp/$2"; then
        pass "$1"
    else
        fail "$1: status $3 (124: hung): $(why "$2")"
    fi
}

for case in alltoallw_bottom alltoallw_bottom_gap intercomm_allgather intercomm_collectives \
    self cancel_send spawn connect_accept; do
    run "$case.ivc" 2 $case "${ivc[@]}"
    st=$?
    out=$tmp/$case.ivc
    if [ $case = alltoallw_bottom ] && [ $st -eq 1 ] &&
        [ "$(grep -c "^FAIL alltoallw_bottom: rank [01]: MPI_Alltoallw(.*): MPI_ERR" "$out")" -eq 2 ] &&
        ! grep -qE "hung|Signal:|SEGV" "$out"; then
        pass "$case over ivc: an MPI error on both ranks, no crash, no hang" \
            "(Open MPI 4.1 sends from address 0: a known limitation)"
    elif [ $case = cancel_send ] && [ $st -ne 0 ] && [ $st -ne 124 ] &&
        grep -qE "Segmentation fault|SEGV" "$out" && grep -q "mca_mtl_ofi.so" "$out" &&
        ! grep -q "libivc-fi" "$out"; then
        pass "$case over ivc: crashes inside mca_mtl_ofi, before any provider call" \
            "(Open MPI 4.1: a known limitation)"
    else
        expect_pass "$case over ivc" "$case.ivc" $st $case
    fi
    run "$case.ob1" 2 $case "${ob1[@]}"
    expect_pass "$case over pml ob1 (the control)" "$case.ob1" $? $case
done

for case in intercomm_allgather intercomm_collectives; do
    run "$case.4" 4 $case "${ivc[@]}"
    expect_pass "$case over ivc, 4 ranks" "$case.4" $? $case
    FI_IVC_ENABLE=0 run "$case.tcp" 2 $case -x FI_IVC_ENABLE "${ivc[@]}"
    expect_pass "$case over ivc, IVC off (FI_IVC_ENABLE=0)" "$case.tcp" $? $case
done

echo "$fails failed"
[ $fails -eq 0 ]
