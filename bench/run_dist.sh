#!/usr/bin/env bash
# run_dist.sh BUILD_DIR - `make bench-dist`: how fast an image reaches 1, 2,
# 4 and 8 nodes.  Every node is a network namespace on a bridge whose link is
# shaped to 1 Gbit/s in each direction (tc tbf on both ends of its veth); the
# pusher sits in one more such namespace, so it has one 1 Gbit/s link like
# everybody else.  Each node runs `vhpc node serve` with an empty store; the
# image (100 MB of pseudo-random blobs: kernel 5 %, initramfs 15 %, root file
# system 80 %) is pushed with
#   pipelined  --mode pipeline (chunks of 1 MiB down a chain, forwarded while
#              they arrive)
#   binomial   --mode binomial (whole image, store and forward, round r:
#              every holder sends to one more node)
#   central    --mode central  (the pusher sends to every node at once)
# One point-to-point copy is the push to 1 node.  Times are wall clock of the
# push command (start to every node's report back), median of BENCH_REPS
# runs (3, and 4 more for pipelined; BENCH_QUICK=1: 1 and 5).
#
# Memory: this VM's balloon driver hands memory freed in the guest back to
# the host after a few seconds, and the next touch of such a page costs a
# fault in the host (~3 ms per MB here, 15 times a memory copy).  Eight
# nodes on two vCPUs writing 8 x 100 MB of fresh page cache pay that eight
# times over, which separate machines would not; so each timed run is
# preceded by writing and deleting as much data as the run will store
# ("warm").  One run of 8 nodes without it is shown too ("cold").
#
# Ends with:
#   RESULT push8_over_p2p=.. central8_over_push8=.. binomial8_over_push8=..
# (goals: push8_over_p2p <= 1.3, central8_over_push8 >= 4).
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"

vhpc=$build/src/vhpc/vhpc
tool=$build/tests/dist_tool
rate=${BENCH_DIST_RATE:-1gbit}
size=${BENCH_DIST_BYTES:-100000000}
dreps=${BENCH_REPS:-3}
[ -n "$quick" ] && dreps=${BENCH_REPS:-1}
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, tc)"
[ -x "$vhpc" ] && [ -x "$tool" ] || die "build first (make build): $vhpc, $tool"
command -v tc >/dev/null || die "tc is missing (apt-get install iproute2)"

id=vdb$(printf %x $$)
tmp=$(mktemp -d /tmp/vhpc-bench-dist.XXXXXX)
ns_id=$id ns_net=10.98.0 ns_tmp=$tmp
. "$here/../scripts/nscluster.sh"
cleanup() {
    ns_cleanup
    ns_munged_stop
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ns_munged_start || die "cannot start munged"

store_of() { echo "$tmp/store-$1"; }

ns_bridge
for who in src 1 2 3 4 5 6 7 8; do
    add_ns "$who" "$rate"
    mkdir -p "$(store_of "$who")"
done
"$tool" mkimage "$(store_of src)" bench "$size" 1 >/dev/null
export VHPC_PROGRESS=0

# push_time K MODE [cold]: seconds for one push of the image to nodes 1..K
# whose stores are empty.
push_time() {
    local k=$1 mode=$2 cold=${3:-} list= i t0 t1
    stop_nodes
    for i in $(seq 1 8); do
        rm -rf "$(store_of "$i")"
        mkdir -p "$(store_of "$i")"
    done
    for i in $(seq 1 "$k"); do
        ip netns exec "$(ns_of "$i")" "$vhpc" node serve --listen "$(ip_of "$i")" \
            --store "$(store_of "$i")" --pidfile "$tmp/n$i.pid" --daemon --log "$tmp/n$i.log"
        list=$list${list:+,}$(ip_of "$i")
    done
    if [ -z "$cold" ]; then
        dd if=/dev/zero of="$tmp/warm" bs=1M count=$(((k + 1) * size / 1000000 + 100)) 2>/dev/null
        rm -f "$tmp/warm"
    fi
    local s0 s1
    s0=$(awk '/^cpu / {print $9}' /proc/stat)
    t0=$(date +%s.%N)
    if ! ip netns exec "$(ns_of src)" env VHPC_HOME="$(store_of src)" \
        "$vhpc" image push bench --nodes "$list" --mode "$mode" >"$tmp/push.out" 2>&1; then
        cat "$tmp/push.out" >&2
        die "push to $k nodes ($mode) failed"
    fi
    t1=$(date +%s.%N)
    s1=$(awk '/^cpu / {print $9}' /proc/stat)
    grep -q "^$k of $k nodes have" "$tmp/push.out" || die "push to $k nodes: not every node has it"
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f\n", b - a}'
    echo "$((s1 - s0))" >>"$tmp/steal"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
fmt() { printf '%.2f' "$1"; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.4f\n", a / b}'; }

mkdir -p "$here/results"
raw=$here/results/dist-$(date +%Y%m%d-%H%M%S)${quick:+-quick}.txt
bench_raw_header "# run_dist.sh: $size bytes, links $rate, median of $dreps" >"$raw"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$raw"

# Cold first: after a pause the memory the last runs freed is the host's again.
sleep 8
cold=$(push_time 8 pipeline cold)
echo "8 pipeline-cold $cold" >>"$raw"

declare -A t stolen
for k in 1 2 4 8; do
    for mode in pipeline binomial central; do
        runs=()
        : >"$tmp/steal"
        n=$dreps
        [ "$mode" = pipeline ] && n=$((dreps + 4)) # the two numbers the goals divide
        for _ in $(seq 1 "$n"); do runs+=("$(push_time "$k" "$mode")"); done
        t[$k,$mode]=$(printf '%s\n' "${runs[@]}" | median)
        echo "$k $mode ${runs[*]}  (steal ticks: $(tr '\n' ' ' <"$tmp/steal"))" >>"$raw"
        stolen[$k,$mode]=$(awk '$1 > 5 {n++} END {print n + 0}' "$tmp/steal")
    done
done
p2p=${t[1,pipeline]}
push8=${t[8,pipeline]}
r_push=$(div "$push8" "$p2p")
r_central=$(div "${t[8,central]}" "$push8")
r_binomial=$(div "${t[8,binomial]}" "$push8")

printf '\nvhpc image push: %s MB to N nodes, every link %s each way (seconds, median of %s runs, pipelined %s)\n' \
    "$((size / 1000000))" "$rate" "$dreps" "$((dreps + 4))"
printf '  %-6s %10s %10s %10s\n' nodes pipelined binomial central
for k in 1 2 4 8; do
    printf '  %-6s %10s %10s %10s\n' "$k" "$(fmt "${t[$k,pipeline]}")" \
        "$(fmt "${t[$k,binomial]}")" "$(fmt "${t[$k,central]}")"
done
printf '  one point-to-point copy (push to 1 node): %s s\n' "$(fmt "$p2p")"
printf '  pipelined to 8 nodes: runs %s s; %s of %s had the hypervisor steal CPU time\n' \
    "$(grep '^8 pipeline ' "$raw" | awk '{min = $3; max = $3; for (i = 3; i <= NF && $i ~ /^[0-9.]+$/; i++) {if ($i < min) min = $i; if ($i > max) max = $i}; printf "%.2f-%.2f", min, max}')" \
    "${stolen[8,pipeline]}" "$((dreps + 4))"
printf '  pipelined to 8 nodes with cold memory (see the top of run_dist.sh): %s s\n' "$(fmt "$cold")"
printf '  pipelined 8 / one copy     %5.2f   (goal <= 1.3)\n' "$r_push"
printf '  central 8 / pipelined 8    %5.2f   (goal >= 4)\n' "$r_central"
printf '  binomial 8 / pipelined 8   %5.2f\n' "$r_binomial"
printf '  raw runs: %s\n\n' "$raw"
echo "RESULT push8_over_p2p=$(fmt "$r_push") central8_over_push8=$(fmt "$r_central") binomial8_over_push8=$(fmt "$r_binomial")" |
    tee -a "$raw"
