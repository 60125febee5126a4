#!/usr/bin/env bash
# test_dist_limits.sh BUILD_DIR - what one party can make `vhpc node serve`
# and `vhpc image pull` do (issue 9): sizes a PUSH declares are bounded
# before anything is allocated (a blob claiming 2^44 + 4096 bytes, more
# chunks than the protocol allows, more than the disk has); a puller stores
# what it asked for under the name it asked for, never what a lying node
# answers with; a sender that lies about sizes reserves and evicts nothing;
# idle connections cannot crowd out real ones and are closed; transfers at
# once are capped; a store lock held by another process does not stop the
# node from answering.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@"

dist_setup 3 || { echo "FAIL: setting up namespaces"; exit 1; }
start_node 1 || { echo "FAIL: starting the node"; show_logs; exit 1; }
n1=$(node_list 1)
pid=$(cat "$tmp/n1.pid")
"$tool" mkimage "$(store_of src)" img 3M 1 >/dev/null || fail "mkimage"
tmp_empty() { [ -z "$(ls -A "$(store_of "$1")/store/tmp" 2>/dev/null)" ]; }

# ---- 4: declared sizes are bounded before anything is allocated ----
claim() { in_ns src "$tool" claim "$n1" "$@" 2>&1; }
out=$(claim $((2 ** 44 + 4096)) 4K)
rc=$?
echo "$out"
check "a blob claiming 2^44 + 4096 bytes is refused" [ $rc -eq 0 ]
check "... with an ERROR naming the protocol's limit" grep -q "ERROR.*more than the protocol's limit of 1099511627776" <<<"$out"
out=$(claim 1T 4K)
rc=$?
echo "$out"
check "a 1 TiB blob in 4 KiB chunks (2^28 chunks) is refused" [ $rc -eq 0 ]
check "... saying to use a larger --chunk" grep -q "ERROR.*larger --chunk" <<<"$out"
out=$(claim 1T 1M)
rc=$?
echo "$out"
check "a 1 TiB blob is refused: the disk has less" [ $rc -eq 0 ]
check "... saying so" grep -q "ERROR.*needs 1099511627776 bytes.* free" <<<"$out"
check "nothing was left in the node's tmp" tmp_empty 1
check "the node is still running" kill -0 "$pid"
check "... and a real push still works" push img --nodes "$n1"

# ---- 5: denial of service ----
start_node 2 --budget 100M --max-connections 12 --max-per-peer 8 --max-sessions 3 --idle-timeout 2 ||
    fail "starting node 2"
n2=$(node_list 2)
"$tool" mkimage "$(store_of src)" a 45M 11 >/dev/null
push a --nodes "$n2" >/dev/null || fail "push a to node 2"
tmp_use() { du -s --block-size=1 "$(store_of "$1")/store/tmp" | cut -f1; }
wait_log() { # wait_log FILE PATTERN: until the log says it (10 s at most)
    for _ in $(seq 1 200); do grep -q -- "$2" "$1" && return 0; sleep 0.05; done
    return 1
}
in_ns src "$tool" claim "$n2" 90M 1M 3M 3000 >"$tmp/claim.log" 2>&1 &
claimpid=$!
wait_log "$tmp/claim.log" "claim: STATE" || fail "the liar's PUSH was not answered"
sleep 0.5
use=$(tmp_use 2)
check "a liar claiming 90 MiB: node 2 evicted nothing (a is still there)" verify_on 2 a
check "... and reserved only around what arrived ($use bytes in tmp)" [ "$use" -le $((20 << 20)) ]
wait "$claimpid"
sleep 0.3
use=$(tmp_use 2)
check "... once it left, only what it sent is held ($use bytes)" [ "$use" -le $((4 << 20)) ]
check "... and the node did not evict to make room for it" sh -c "! grep -q evicted '$tmp/n2.log'"

in_ns src "$tool" idle "$n2" 600 3000 >"$tmp/idle.log" 2>&1 &
idlepid=$!
wait_log "$tmp/idle.log" "opened" || fail "the idle connections"
check "600 idle connections: a real push still gets through" push img --nodes "$n2"
wait "$idlepid"
cat "$tmp/idle.log"
check "... and the idle ones were closed" grep -q "idle: 600 closed by the node" "$tmp/idle.log"

for i in 2 3 4 5; do in_ns src "$tool" claim "$n2" ${i}M 1M 1M 3000 >"$tmp/claim$i.log" 2>&1 & done
wait
cat "$tmp"/claim[2-5].log
check "4 transfers at once (--max-sessions 3): at most 3 accepted" [ "$(cat "$tmp"/claim[2-5].log | grep -c "claim: STATE")" -le 3 ]
check "... the others are told the node is busy" grep -q "ERROR.*busy.*--max-sessions" "$tmp"/claim[2-5].log

# A node with few descriptors (96) and no session cap to speak of: 40
# transfers at once get either in or a clear "busy", never "Too many open
# files", and the node answers afterwards.
ip netns exec "$(ns_of 3)" prlimit --nofile=96:96 "$vhpc" node serve --listen "$(addr_of 3)" \
    --store "$(store_of 3)" --pidfile "$tmp/n3.pid" --daemon --log "$tmp/n3.log" \
    --max-sessions 1000 --max-connections 1000 --max-per-peer 1000 || fail "starting node 3"
n3=$(node_list 3)
for i in $(seq 1 40); do in_ns src "$tool" claim "$n3" $((i + 1))M 1M 1M 3000 >"$tmp/fd$i.log" 2>&1 & done
wait
took=$(cat "$tmp"/fd*.log | grep -c "claim: STATE")
busy=$(cat "$tmp"/fd*.log | grep -c "ERROR.*busy.*descriptors")
echo "40 transfers at once on 96 descriptors: $took taken, $busy told busy"
check "... each was taken or told the node is busy" [ $((took + busy)) -eq 40 ]
check "... some were taken, some refused" [ "$took" -gt 0 -a "$busy" -gt 0 ]
check "... the node never ran out of descriptors mid-request" sh -c "! grep -q 'Too many open files' '$tmp/n3.log'"
check "... and serves a push afterwards" push img --nodes "$n3"

# ---- 8: a store lock held by another process ----
"$tool" mkimage "$(store_of src)" img8 2M 8 >/dev/null
(exec 9>>"$(store_of 2)/store/lock" && flock 9 && echo locked >"$tmp/lock.log" && exec sleep 60) &
lockpid=$!
wait_log "$tmp/lock.log" locked || fail "taking the store's lock"
push img8 --nodes "$n2" >"$tmp/push8.log" 2>&1 &
pushpid=$!
wait_log "$tmp/n2.log" "locked by another process; waiting" || fail "the node never waited for the lock"
out=$(in_ns src "$tool" query "$n2" a 2>&1)
check "while the store is locked, the node answers a QUERY: $out" grep -q '"have": *true' <<<"$out"
kill "$lockpid"
wait "$pushpid"
rc=$?
check "... and the push waiting for the lock completes once it is released" [ $rc -eq 0 ]
check "... the image is there" verify_on 2 img8

# ---- 17: the progress line counts the bytes that moved ----
"$tool" mkimage "$(store_of src)" prog 18M 7 >/dev/null
out=$(in_ns src env VHPC_PROGRESS=2 "$vhpc" image push prog --nodes "$n1" 2>&1 >/dev/null)
echo "$out"
check "push: the progress line's total is 18.9 MB" grep -q "^push prog: 18.9 MB in" <<<"$out"
out=$(ip netns exec "$(ns_of src)" env VHPC_HOME="$tmp/puller2" VHPC_PROGRESS=2 "$vhpc" image pull prog --from "$n1" 2>&1 >/dev/null)
echo "$out"
check "pull: the progress line's total is 18.9 MB" grep -q "^pull prog: 18.9 MB in" <<<"$out"

# ---- 3: the puller decides the name; a reply for another image is refused ----
mkdir -p "$tmp/puller"
mine=$("$tool" mkimage "$tmp/puller" minimal 1M 5)
evil=$("$tool" mkimage "$(store_of src)" evil 2M 6)
fake() { # fake NAME VERSION: a lying node on n1's port 7471 for one pull
    rm -f "$tmp/fake.log"
    ip netns exec "$(ns_of 1)" "$tool" fakenode "$(ip_of 1):7471" "$(store_of src)" evil "$1" "$2" \
        >"$tmp/fake.log" 2>&1 &
    fakepid=$!
    for _ in $(seq 1 100); do grep -q listening "$tmp/fake.log" && return 0; sleep 0.05; done
    return 1
}
pull() { ip netns exec "$(ns_of src)" env VHPC_HOME="$tmp/puller" "$vhpc" image pull "$@" 2>&1; }
fake minimal 1001 || fail "starting the lying node"
out=$(pull ivcdemo --from "$(ip_of 1):7471" --timeout 5)
rc=$?
wait "$fakepid"
echo "$out"
check "a pull of ivcdemo answered with minimal:1001 fails" [ $rc -ne 0 ]
check "... saying the node answered with another image" grep -q "answered a pull of 'ivcdemo' with another image, minimal:1001" <<<"$out"
check "... the puller's minimal is still its own" [ "$("$tool" verify "$tmp/puller" minimal 2>/dev/null)" = "$mine" ]
fake minimal 3 || fail "starting the lying node"
out=$(pull minimal:2 --from "$(ip_of 1):7471" --timeout 5)
rc=$?
wait "$fakepid"
check "a pull of minimal:2 answered with minimal:3 fails: $out" [ $rc -ne 0 -a -n "$(grep "another image, minimal:3" <<<"$out")" ]
fake ivcdemo 1 || fail "starting the lying node"
out=$(pull "ivcdemo@0000" --from "$(ip_of 1):7471" --timeout 5)
rc=$?
wait "$fakepid"
check "a pull of ivcdemo@0000 answered with another digest fails: $out" [ $rc -ne 0 ]
fake ivcdemo 7 || fail "starting the lying node"
out=$(pull "${evil:0:12}" --from "$(ip_of 1):7471" --timeout 5)
rc=$?
wait "$fakepid"
check "a pull by digest alone says to name it: $out" [ $rc -ne 0 -a -n "$(grep "NAME@${evil:0:12}" <<<"$out")" ]
fake ivcdemo 7 || fail "starting the lying node"
out=$(pull "ivcdemo@${evil:0:12}" --from "$(ip_of 1):7471" --timeout 5)
rc=$?
wait "$fakepid"
check "a pull of ivcdemo@DIGEST answered with that works: $out" [ $rc -eq 0 -a -n "$(grep "pulled ivcdemo:7" <<<"$out")" ]
check "... and only ivcdemo is new in the puller's store" [ "$("$tool" verify "$tmp/puller" minimal 2>/dev/null)" = "$mine" ]

[ "$fails" -eq 0 ] || show_logs
finish
