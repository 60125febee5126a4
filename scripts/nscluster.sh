# nscluster.sh - a cluster of network namespaces on a bridge, what the image
# distribution tests (tests/dist/lib.sh) and benchmark (bench/run_dist.sh)
# run their nodes in.  Sourced after setting
#   ns_id   a prefix unique to the run (e.g. vdt<pid in hex>): the bridge is
#           ${ns_id}b, namespaces ${ns_id}s (src) and ${ns_id}n1.., veths ${ns_id}h..
#   ns_net  the first three octets of the /24 (src is .1, node i is .10+i)
#   ns_tmp  the run's directory (node pid files: $ns_tmp/n<i>.pid; munged's
#           files: $ns_tmp/munge)
# The bridge has no address, so nothing of the host's routing changes.

ns_of() { [ "$1" = src ] && echo "${ns_id}s" || echo "${ns_id}n$1"; }
ip_of() { [ "$1" = src ] && echo "$ns_net.1" || echo "$ns_net.$((10 + $1))"; }

# ns_bridge: the bridge the namespaces hang on.
ns_bridge() {
    ip link add "${ns_id}b" type bridge || return 1
    ip link set "${ns_id}b" up
}

# add_ns WHO [RATE]: a namespace on the bridge; RATE (e.g. 1gbit) shapes
# both directions of its link.
add_ns() {
    local who=$1 rate=${2:-} ns h=${ns_id}h$1
    ns=$(ns_of "$who")
    ip netns add "$ns" || return 1
    ip link add "$h" type veth peer name eth0 netns "$ns" || return 1
    ip link set "$h" master "${ns_id}b" up
    ip -n "$ns" addr add "$(ip_of "$who")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    if [ -n "$rate" ]; then
        tc qdisc add dev "$h" root tbf rate "$rate" burst 512kb latency 50ms
        ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 512kb latency 50ms
    fi
}

# stop_nodes: SIGTERM every node with a pid file, wait up to 10 s for them.
stop_nodes() {
    local f pids=() p alive
    for f in "$ns_tmp"/n*.pid; do
        [ -f "$f" ] && pids+=("$(cat "$f")") && kill -TERM "${pids[-1]}" 2>/dev/null
    done
    for _ in $(seq 1 200); do
        alive=0
        for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.05
    done
}

# ns_cleanup: kill what runs in the namespaces, remove them and the bridge
# (the veths go with their namespaces).
ns_cleanup() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk -v p="$ns_id" 'index($1, p) == 1 {print $1}'); do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    ip link del "${ns_id}b" 2>/dev/null
}

# Nodes authenticate every request with munge: ns_munged_start runs a
# munged of the run's own (key, socket, pid, log and seed in $ns_tmp/munge)
# and exports VHPC_MUNGE_SOCKET, which the nodes and clients use (a unix
# socket: the same from every namespace); ns_munged_stop stops it.
ns_munged_start() {
    local d=$ns_tmp/munge
    command -v munged >/dev/null || { echo "munged is missing (apt-get install munge)" >&2; return 1; }
    mkdir -p "$d" && chmod 755 "$d" || return 1
    head -c 1024 /dev/urandom >"$d/key" && chmod 600 "$d/key" || return 1
    munged --force --key-file="$d/key" --socket="$d/sock" --pid-file="$d/pid" \
        --log-file="$d/log" --seed-file="$d/seed" || return 1
    export VHPC_MUNGE_SOCKET=$d/sock
}
ns_munged_stop() {
    local pid
    [ -f "$ns_tmp/munge/pid" ] || return 0
    pid=$(cat "$ns_tmp/munge/pid")
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
}
