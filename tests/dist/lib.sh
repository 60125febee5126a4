# lib.sh - what the image distribution tests share; sourced after
# `set -uo pipefail` with BUILD_DIR as $1:  . "$(dirname "$0")/lib.sh" "$@"
#
# A test cluster (scripts/nscluster.sh) is a bridge in the root namespace
# (no address, so nothing of the host's routing changes) and network
# namespaces on it, each with a veth: "src" (where the pusher runs, 10.99.0.1) and n1..nK (10.99.0.11..),
# each node running `vhpc node serve` on port 7470 with its own store.
# Names start with vdt<pid in hex>, so concurrent runs cannot collide, and
# everything (processes, namespaces, links, files) is removed on exit, also
# when the test fails or is killed (trap).
build=$(cd "$1" && pwd)
vhpc=$build/src/vhpc/vhpc
tool=$build/tests/dist_tool
id=vdt$(printf %x $$)
tmp=$(mktemp -d /tmp/vhpc-$id.XXXXXX)
ns_id=$id ns_net=10.99.0 ns_tmp=$tmp
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/nscluster.sh"
export VHPC_PROGRESS=0
fails=0 passes=0
nodes=0
pass() { echo "PASS $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { # DESCRIPTION COMMAND... : passes when COMMAND succeeds
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
# finish: stop the nodes with SIGTERM (so a sanitizer build reports leaks
# into their logs), fail on any sanitizer report, print the tally.
finish() {
    stop_nodes
    if grep -l -e "Sanitizer" -e "runtime error" "$tmp"/n*.log 2>/dev/null; then
        fail "sanitizer reports in the node logs"
        grep -h -A30 -e "Sanitizer" -e "runtime error" "$tmp"/n*.log | head -100
    fi
    echo "$passes passed, $fails failed"
    [ "$fails" -eq 0 ]
}

dist_cleanup() {
    ns_cleanup
    ns_munged_stop
    rm -rf "$tmp"
}

trap 'dist_cleanup' EXIT
trap 'exit 1' INT TERM

[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 0; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "FAIL: needs ip and tc (iproute2)"; exit 1; }
command -v munged >/dev/null || { echo "FAIL: needs munged (package munge)"; exit 1; }
ns_munged_start || { echo "FAIL: starting munged"; exit 1; }

addr_of() { echo "$(ip_of "$1"):7470"; }
store_of() { echo "$tmp/store-$1"; }

# dist_setup K [RATE]: the bridge, src and nodes n1..nK (not started).
dist_setup() {
    nodes=$1
    ns_bridge || return 1
    add_ns src "${2:-}" || return 1
    mkdir -p "$(store_of src)"
    for i in $(seq 1 "$nodes"); do
        add_ns "$i" "${2:-}" || return 1
        mkdir -p "$(store_of "$i")"
    done
}

# start_node I [ARGS...]: vhpc node serve in namespace I (returns once it listens).
start_node() {
    local i=$1
    shift
    ip netns exec "$(ns_of "$i")" "$vhpc" node serve --listen "$(addr_of "$i")" \
        --store "$(store_of "$i")" --pidfile "$tmp/n$i.pid" --daemon --log "$tmp/n$i.log" "$@"
}
start_nodes() {
    local i
    for i in $(seq 1 "$nodes"); do start_node "$i" "$@" || return 1; done
}
stop_node() { [ -f "$tmp/n$1.pid" ] && kill "$(cat "$tmp/n$1.pid")" 2>/dev/null; }
node_list() { # node_list I J ... -> "10.99.0.11:7470,..."
    local out= i
    for i in "$@"; do out=$out${out:+,}$(addr_of "$i"); done
    echo "$out"
}
all_nodes() { node_list $(seq 1 "$nodes"); }

# in_ns WHO CMD...: run CMD in WHO's namespace with WHO's store as VHPC_HOME.
in_ns() {
    local who=$1
    shift
    ip netns exec "$(ns_of "$who")" env VHPC_HOME="$(store_of "$who")" "$@"
}
push() { in_ns src "$vhpc" image push "$@"; }
verify_on() { "$tool" verify "$(store_of "$1")" "$2" >/dev/null 2>&1; }
show_logs() {
    local f
    for f in "$tmp"/n*.log; do [ -f "$f" ] && sed "s|^|  $(basename "$f" .log): |" "$f"; done
}
