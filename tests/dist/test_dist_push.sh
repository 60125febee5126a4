#!/usr/bin/env bash
# test_dist_push.sh BUILD_DIR - vhpc image push to 8 nodes (network
# namespaces on a bridge, each running vhpc node serve with its own store):
# every node gets the image, verified and under its name; a second push finds
# it everywhere and sends nothing; the other modes (fanout 2, binomial,
# central) and a small chunk size deliver the same.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@"

dist_setup 8 || { echo "FAIL: setting up namespaces"; exit 1; }
start_nodes || { echo "FAIL: starting the nodes"; show_logs; exit 1; }
"$tool" mkimage "$(store_of src)" img 24M 1 >/dev/null || { echo "FAIL mkimage"; exit 1; }
want=$("$tool" verify "$(store_of src)" img)

out=$(push img --nodes "$(all_nodes)" 2>&1)
rc=$?
echo "$out"
check "push to 8 nodes: exit 0" [ $rc -eq 0 ]
check "push to 8 nodes: 8 ok lines" [ "$(grep -c ' ok ' <<<"$out")" = 8 ]
check "push to 8 nodes: summary" grep -q "^8 of 8 nodes have img:1" <<<"$out"
for i in $(seq 1 8); do
    got=$("$tool" verify "$(store_of "$i")" img:1 2>&1)
    check "node $i has img:1, every blob verified" [ "$got" = "$want" ]
done

out=$(push img --nodes "$(all_nodes)" 2>&1)
rc=$?
echo "$out"
check "push again: exit 0, all 8 had it" [ $rc -eq 0 -a "$(grep -c '(had it)' <<<"$out")" = 8 ]

n=2
for mode in "--fanout 2" "--mode binomial" "--mode central" "--chunk 64K --fanout 3"; do
    "$tool" mkimage "$(store_of src)" "img$n" 6M "$n" >/dev/null
    want=$("$tool" verify "$(store_of src)" "img$n")
    out=$(push "img$n" --nodes "$(all_nodes)" $mode 2>&1)
    rc=$?
    echo "$out"
    ok=1
    for i in $(seq 1 8); do
        [ "$("$tool" verify "$(store_of "$i")" "img$n" 2>&1)" = "$want" ] || ok=0
    done
    check "push $mode: exit 0 and every node has it, verified" [ $rc -eq 0 -a $ok = 1 ]
    n=$((n + 1))
done

# The nodes say what they did.
check "node logs name the transfers" grep -q "received 25165824 bytes" "$tmp/n8.log"
[ "$fails" -eq 0 ] || show_logs
finish
