#!/usr/bin/env bash
# test_dist_node.sh BUILD_DIR - vhpc node serve against clients that speak
# garbage (random bytes, wrong magic, huge lengths, half frames, bad JSON,
# lying manifests, hundreds of connections) and a sender whose copy is
# damaged: it stays up, answers, and stores nothing damaged; wrong
# input to push, pull and node serve gets a clear error; unreachable nodes
# are reported; SIGTERM stops the service and removes its pid file.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@"

dist_setup 1 || { echo "FAIL: setting up namespaces"; exit 1; }
start_node 1 || { echo "FAIL: starting the node"; show_logs; exit 1; }
n1=$(node_list 1)
pid=$(cat "$tmp/n1.pid")
"$tool" mkimage "$(store_of src)" img 3M 1 >/dev/null || fail "mkimage"

# ---- garbage ----
out=$(in_ns src "$tool" garbage "$n1" 2>&1)
echo "$out"
check "garbage: the client's own checks (lying manifest, bad tree refused)" grep -q "garbage: done" <<<"$out"
check "garbage: the node is still running" kill -0 "$pid"
check "garbage: and still works" sh -c "ip netns exec $(ns_of src) env VHPC_HOME=$(store_of src) '$vhpc' image push img --nodes $n1 >/dev/null"
check "garbage: its answers are right" sh -c "ip netns exec $(ns_of src) '$tool' query $n1 img | grep -q '\"have\": *true'"

# ---- a sender whose copy is damaged: every chunk's CRC-32C matches what it
# sends, one byte differs from the image; the blob's SHA-256 catches it ----
bad=$("$tool" mkimage "$(store_of src)" bad 5M 9) || fail "mkimage bad"
out=$(in_ns src "$tool" liar "$n1" "$(store_of src)" bad 2>&1)
check "a damaged sender's image is refused: $out" grep -q "liar: refused" <<<"$out"
check "... it is not in the node's store" sh -c "! '$tool' verify '$(store_of 1)' $bad >/dev/null 2>&1"
check "... the node's log says why" grep -q "hash to" "$tmp/n1.log"
check "... and a good push of it then succeeds" sh -c "ip netns exec $(ns_of src) env VHPC_HOME=$(store_of src) '$vhpc' image push bad --nodes $n1 >/dev/null && '$tool' verify '$(store_of 1)' $bad >/dev/null"

# ---- wrong input: push ----
expect() { # DESCRIPTION STATUS PATTERN COMMAND... : exits STATUS and says PATTERN
    local what=$1 want=$2 pat=$3 out rc
    shift 3
    out=$("$@" 2>&1)
    rc=$?
    if [ $rc -eq "$want" ] && grep -q -- "$pat" <<<"$out"; then
        pass "$what"
    else
        fail "$what (exit $rc, wanted $want and '$pat'): $out"
    fi
}
expect "push --help" 0 "Usage: vhpc image push" push --help
expect "push without nodes" 2 "no nodes" push img
expect "push without an image" 2 "which image" push --nodes "$n1"
expect "push of an unknown image" 1 "unknown image 'zzz'" push zzz --nodes "$n1"
expect "push to an unknown host" 1 "cannot resolve 'no-such-node.invalid'" push img --nodes no-such-node.invalid
expect "push to a bad port" 1 "port must be a number" push img --nodes 10.99.0.11:99999
expect "push to the same node twice" 1 "are the same" push img --nodes "$n1,$n1"
expect "push --chunk 3" 2 "expected a size from 4K to 64M" push img --nodes "$n1" --chunk 3
expect "push --chunk 1X" 2 "expected a size" push img --nodes "$n1" --chunk 1X
expect "push --mode fast" 2 "expected pipeline, binomial or central" push img --nodes "$n1" --mode fast
expect "push --fanout 0" 2 "expected a number from 1" push img --nodes "$n1" --fanout 0
expect "push --timeout -1" 2 "expected seconds" push img --nodes "$n1" --timeout -1
expect "push to a port nobody listens on: reported" 1 "FAILED.*Connection refused" push img --nodes 10.99.0.11:7471
expect "push to an address nobody has: reported" 1 "FAILED.*\(No route to host\|no connection\)" \
    push img --nodes 10.99.0.99 --timeout 4
expect "push to a dead node and a live one: the live one gets it" 1 "1 of 2 nodes have img:1" \
    push img --nodes "10.99.0.11:7471,$n1"

# ---- wrong input: pull ----
pull() { ip netns exec "$(ns_of src)" env VHPC_HOME="$tmp/puller" "$vhpc" image pull "$@"; }
expect "pull --help" 0 "Usage: vhpc image pull" pull --help
expect "pull without --from" 2 "no nodes" pull img
expect "pull from an unknown host" 1 "cannot resolve" pull img --from no-such-node.invalid
expect "pull from nobody listening" 1 "Connection refused" pull img --from 10.99.0.11:7471
expect "pull works" 0 "pulled img:1" pull img --from "10.99.0.11:7471,$n1"

# ---- wrong input: node serve ----
serve() { ip netns exec "$(ns_of 1)" "$vhpc" node serve "$@"; }
expect "node --help" 0 "Usage: vhpc node serve" "$vhpc" node --help
expect "node without a subcommand" 2 "Usage" "$vhpc" node
expect "node serve without --listen" 2 "where to listen" serve --store "$tmp"
expect "node serve --budget lots" 2 "expected a size" serve --listen "$n1" --budget lots
expect "node serve on a busy port" 1 "Address already in use" serve --listen "$n1" --store "$(store_of 1)"
expect "node serve on an address it does not have" 1 "listening on 10.99.0.77:7470" serve --listen 10.99.0.77
expect "node serve --store that does not exist" 1 "no-such-dir" serve --listen "$n1" --store "$tmp/no-such-dir"

# ---- SIGTERM ----
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
check "SIGTERM stops the service" sh -c "! kill -0 $pid 2>/dev/null"
check "... and removes its pid file" [ ! -e "$tmp/n1.pid" ]
check "... and says so" grep -q "stopped" "$tmp/n1.log"
[ "$fails" -eq 0 ] || show_logs
finish
