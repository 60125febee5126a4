#!/usr/bin/env bash
# test_dist_cache.sh BUILD_DIR - a node's cache: within a budget of 100 MiB,
# three pushed images of 45 MiB leave the two used last (the least recently
# used one is evicted, not simply the oldest); a flipped byte in a cached
# blob is found when the node is asked for the image (the blob is removed
# and reported missing), a push sends just that blob again; a pull goes to
# the first node with a verified copy, past one whose copy is damaged.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@"

dist_setup 2 || { echo "FAIL: setting up namespaces"; exit 1; }
start_node 1 --budget 100M && start_node 2 || { echo "FAIL: starting the nodes"; show_logs; exit 1; }
n1=$(node_list 1) n2=$(node_list 2)
for img in a b c; do
    "$tool" mkimage "$(store_of src)" "$img" 45M "$(printf %d "'$img")" >/dev/null || fail "mkimage $img"
done
has() { verify_on "$1" "$2"; }

# ---- eviction, least recently used first ----
push a --nodes "$n1" >/dev/null && push b --nodes "$n1" >/dev/null
check "a and b fit in 100 MiB" sh -c "'$tool' verify '$(store_of 1)' a >/dev/null && '$tool' verify '$(store_of 1)' b >/dev/null"
sleep 0.05
out=$(push a --nodes "$n1" 2>&1) # a is used again (the node had it): b is now the LRU one
check "pushing a again: it had it" grep -q "(had it)" <<<"$out"
out=$(push c --nodes "$n1" 2>&1)
rc=$?
echo "$out"
check "c pushed into the full cache" [ $rc -eq 0 ]
check "c is there" has 1 c
check "a (used recently) is kept" has 1 a
check "b (least recently used) was evicted" sh -c "! '$tool' verify '$(store_of 1)' b 2>/dev/null"
check "the node says it evicted" grep -q "evicted 1 images" "$tmp/n1.log"
usage=$(du -s --block-size=1 "$(store_of 1)/store/blobs" | cut -f1)
check "the cache is within its budget ($usage bytes)" [ "$usage" -le $((100 << 20)) ]
out=$(push big --nodes "$n1" 2>&1)
check "an unknown image: clear error" grep -q "unknown image 'big'" <<<"$out"
"$tool" mkimage "$(store_of src)" huge 120M 9 >/dev/null
out=$(push huge --nodes "$n1" 2>&1)
rc=$?
echo "$out"
check "an image bigger than the budget: the node refuses it, push fails" \
    [ $rc -ne 0 -a -n "$(grep 'FAILED.*budget' <<<"$out")" ]

# ---- a damaged blob ----
push a --nodes "$n2" >/dev/null || fail "push a to node 2"
blob=$("$tool" blob "$(store_of 2)" a rootfs)
flip() {
    chmod u+w "$1"
    printf '\xff' | dd of="$1" bs=1 seek=1000000 conv=notrunc 2>/dev/null
}
flip "$blob"
out=$(in_ns src "$tool" query "$n2" a)
echo "query: $out"
check "asked for a, the node finds the damage" grep -q '"have": *false.*damaged' <<<"$out"
check "... and removes the blob" [ ! -e "$blob" ]
out=$(push a --nodes "$n2" 2>&1)
rc=$?
echo "$out"
check "push again repairs it: exit 0" [ $rc -eq 0 ]
check "... sending just the rootfs blob (37.7 MB)" grep -q " ok  *37.7 MB" <<<"$out"
check "... and node 2 has a, verified" has 2 a

# ---- pull ----
flip "$blob"
mkdir -p "$tmp/puller"
pull() { ip netns exec "$(ns_of src)" env VHPC_HOME="$tmp/puller" "$vhpc" image pull "$@"; }
out=$(pull a --from "$n2,$n1" 2>&1)
rc=$?
echo "$out"
check "pull: node 2's copy is damaged, node 1 gives it" [ $rc -eq 0 -a -n "$(grep "pulled a:1 .* from $n1" <<<"$out")" ]
check "the pulled image verifies" sh -c "'$tool' verify '$tmp/puller' a:1 >/dev/null"
check "node 2 said why it refused" grep -q "damaged" "$tmp/n2.log"
out=$(pull a --from "$n1" 2>&1)
check "pull again: nothing to fetch" [ $? -eq 0 ]
out=$(pull nothere --from "$n1,$n2" 2>&1)
rc=$?
echo "$out"
check "pull of an image nobody has: exit 1, each node's answer" \
    [ $rc -eq 1 -a "$(grep -c "unknown image 'nothere'" <<<"$out")" = 2 ]
[ "$fails" -eq 0 ] || show_logs
finish
