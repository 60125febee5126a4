#!/usr/bin/env bash
# test_dist_lowat.sh BUILD_DIR - a receiving node never waits for bytes that
# will not come.  A node sets SO_RCVLOWAT while inside a big chunk so that it
# wakes once per good part of it; the mark must always fit the frame it is
# inside.  With VHPC_DIST_READ_BUDGET=1 every loop turn of the nodes ends
# after one read, the case where a mark left from the previous chunk outlived
# it (the last, smaller chunk then sat in the socket until the sender timed
# out).  Images of several sizes, so their last chunks differ, each pushed
# along a chain of 3 nodes with a short timeout: each must arrive whole.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@"

dist_setup 3 || { echo "FAIL: setting up namespaces"; exit 1; }
VHPC_DIST_READ_BUDGET=1 start_nodes || { echo "FAIL: starting the nodes"; show_logs; exit 1; }
n=1
for size in 3M 5100K 7M 9300K 12M 15700K; do
    "$tool" mkimage "$(store_of src)" "img$n" "$size" "$n" >/dev/null || { echo "FAIL mkimage"; exit 1; }
    want=$("$tool" verify "$(store_of src)" "img$n")
    out=$(push "img$n" --nodes "$(all_nodes)" --timeout 2 2>&1)
    rc=$?
    ok=1
    for i in 1 2 3; do
        [ "$("$tool" verify "$(store_of "$i")" "img$n" 2>&1)" = "$want" ] || ok=0
    done
    [ $rc -eq 0 -a $ok = 1 ] || echo "$out"
    check "push of $size, one read per turn: every node has it, verified" [ $rc -eq 0 -a $ok = 1 ]
    n=$((n + 1))
done
[ "$fails" -eq 0 ] || show_logs
finish
