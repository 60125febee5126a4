# lib.sh - what the image distribution tests share; sourced after
# `set -uo pipefail` with BUILD_DIR as $1:  . "$(dirname "$0")/lib.sh" "$@"
#
# A test cluster is a bridge in the root namespace (no address, so nothing
# of the host's routing changes) and network namespaces on it, each with a
# veth: "src" (where the pusher runs, 10.99.0.1) and n1..nK (10.99.0.11..),
# each node running `vhpc node serve` on port 7470 with its own store.
# Names start with vdt<pid in hex>, so concurrent runs cannot collide, and
# everything (processes, namespaces, links, files) is removed on exit, also
# when the test fails or is killed (trap).
build=$(cd "$1" && pwd)
vhpc=$build/src/vhpc/vhpc
tool=$build/tests/dist_tool
id=vdt$(printf %x $$)
tmp=$(mktemp -d /tmp/vhpc-$id.XXXXXX)
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
    local f pids=()
    for f in "$tmp"/n*.pid; do
        [ -f "$f" ] && pids+=("$(cat "$f")") && kill -TERM "${pids[-1]}" 2>/dev/null
    done
    local alive=1 p
    for _ in $(seq 1 200); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.05
    done
    if grep -l -e "Sanitizer" -e "runtime error" "$tmp"/n*.log 2>/dev/null; then
        fail "sanitizer reports in the node logs"
        grep -h -A30 -e "Sanitizer" -e "runtime error" "$tmp"/n*.log | head -100
    fi
    echo "$passes passed, $fails failed"
    [ "$fails" -eq 0 ]
}

dist_cleanup() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk -v p="$id" 'index($1, p) == 1 {print $1}'); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    ip link del "${id}b" 2>/dev/null
    rm -rf "$tmp"
}
trap 'dist_cleanup' EXIT
trap 'exit 1' INT TERM

[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 0; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "FAIL: needs ip and tc (iproute2)"; exit 1; }

ns_of() { [ "$1" = src ] && echo "${id}s" || echo "${id}n$1"; }
ip_of() { [ "$1" = src ] && echo 10.99.0.1 || echo "10.99.0.$((10 + $1))"; }
addr_of() { echo "$(ip_of "$1"):7470"; }
store_of() { echo "$tmp/store-$1"; }

# add_ns WHO [RATE]: a namespace on the bridge; RATE (e.g. 1gbit) shapes
# both directions of its link.
add_ns() {
    local who=$1 rate=${2:-} ns h=${id}h$1
    ns=$(ns_of "$who")
    ip netns add "$ns" || return 1
    ip link add "$h" type veth peer name eth0 netns "$ns" || return 1
    ip link set "$h" master "${id}b" up
    ip -n "$ns" addr add "$(ip_of "$who")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    if [ -n "$rate" ]; then
        tc qdisc add dev "$h" root tbf rate "$rate" burst 512kb latency 50ms
        ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 512kb latency 50ms
    fi
}

# dist_setup K [RATE]: the bridge, src and nodes n1..nK (not started).
dist_setup() {
    nodes=$1
    ip link add "${id}b" type bridge || return 1
    ip link set "${id}b" up
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
