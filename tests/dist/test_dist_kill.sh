#!/usr/bin/env bash
# test_dist_kill.sh BUILD_DIR - a node SIGKILLed in the middle of a push
# (links shaped to 300 Mbit/s so the transfer takes seconds, the kill sent
# once the node has written 16 MiB of 96): the push completes for the other
# 7, including the nodes below the dead one (its parent takes them over and
# they continue from what they have), the dead node is reported failed, and
# the exit status is non-zero.  Then the node comes back and a second push
# gives it the image.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@"

dist_setup 8 300mbit || { echo "FAIL: setting up namespaces"; exit 1; }
start_nodes || { echo "FAIL: starting the nodes"; show_logs; exit 1; }
"$tool" mkimage "$(store_of src)" big 96M 7 >/dev/null || { echo "FAIL mkimage"; exit 1; }
want=$("$tool" verify "$(store_of src)" big)

victim=4
push big --nodes "$(all_nodes)" >"$tmp/push.out" 2>&1 &
pusher=$!
# Bytes the victim has written: the blocks allocated under its store's tmp/.
written() { du -s --block-size=1 "$(store_of $victim)/store/tmp" 2>/dev/null | cut -f1; }
for _ in $(seq 1 1500); do
    [ "$(written)" -ge $((16 << 20)) ] 2>/dev/null && break
    sleep 0.02
done
w=$(written)
if [ "${w:-0}" -ge $((16 << 20)) ]; then
    kill -9 "$(cat "$tmp/n$victim.pid")"
    echo "killed node $victim with $w bytes written"
else
    echo "node $victim never got 16 MiB ($w bytes)"
fi
wait $pusher
rc=$?
cat "$tmp/push.out"
check "the kill landed mid-transfer" [ "${w:-0}" -ge $((16 << 20)) ]
check "push exits non-zero" [ $rc -ne 0 ]
check "the dead node is reported failed" grep -q "^  $(addr_of $victim) *FAILED" "$tmp/push.out"
check "... and only it" [ "$(grep -c ' ok ' "$tmp/push.out")" = 7 ]
check "summary: 7 of 8" grep -q "^7 of 8 nodes have big:1" "$tmp/push.out"
for i in 1 2 3 5 6 7 8; do
    check "node $i has big:1, verified" [ "$("$tool" verify "$(store_of "$i")" big:1 2>&1)" = "$want" ]
done
check "node $victim does not have it" sh -c "! '$tool' verify '$(store_of $victim)' big:1 2>/dev/null"
check "its parent took over its children" grep -q "node $(addr_of $victim) failed .*taking over its children" "$tmp/n$((victim - 1)).log"
check "node $((victim + 1)) continued from what it had" grep -q "takes over sending" "$tmp/n$((victim + 1)).log"

# Back up: a second push fills the gap; the others only forward.
start_node $victim || fail "restarting node $victim"
out=$(push big --nodes "$(all_nodes)" 2>&1)
rc=$?
echo "$out"
check "second push: exit 0" [ $rc -eq 0 ]
check "second push: 7 had it" [ "$(grep -c '(had it)' <<<"$out")" = 7 ]
check "node $victim has it now" [ "$("$tool" verify "$(store_of $victim)" big:1 2>&1)" = "$want" ]
[ "$fails" -eq 0 ] || show_logs
finish
