#!/usr/bin/env bash
# test_fi_pingpong.sh - libfabric's fi_pingpong (Debian's libfabric-bin)
# between two host processes over the provider "ivc": every size from 0 B to
# 6 MiB (-S all), data checked (-c), untagged and tagged; fi_info lists the
# provider with honest attributes; a DGRAM request finds nothing.
# Needs FI_PROVIDER_PATH (set by ctest).
set -uo pipefail
: "${FI_PROVIDER_PATH:?set by ctest}"
export FI_PROVIDER_PATH
preload=${VHPC_PRELOAD:-}
run() { if [ -n "$preload" ]; then LD_PRELOAD=$preload "$@"; else "$@"; fi; }
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d /tmp/fi-pp.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# fi_info: listed, RDM, with the capabilities Open MPI needs.
out=$(run fi_info -p ivc -v 2>&1)
grep -q "type: FI_EP_RDM" <<<"$out" && grep -q "FI_TAGGED" <<<"$out" &&
    grep -q "FI_DIRECTED_RECV" <<<"$out" && grep -q "cq_data_size: 8" <<<"$out" &&
    pass "fi_info -p ivc lists an RDM endpoint with FI_TAGGED, FI_DIRECTED_RECV, cq_data_size 8" ||
    fail "fi_info -p ivc: $out"
out=$(run fi_info -p ivc -t FI_EP_DGRAM 2>&1); st=$?
[ $st -ne 0 ] && ! grep -q "provider: ivc" <<<"$out" &&
    pass "no DGRAM endpoint offered (so no utility provider layers on ivc)" || fail "DGRAM: $out"
out=$(run fi_info -p ivc -c FI_RMA 2>&1); st=$?
[ $st -ne 0 ] && pass "no RMA offered (Open MPI's btl ofi will not pick ivc)" || fail "RMA: $out"

# A free TCP port for fi_pingpong's own out-of-band exchange.
port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 20000))
        ss -ltn | grep -q ":$p " || { echo "$p"; return; }
    done
}

pingpong() { # $1: name, rest: fi_pingpong options
    local name=$1 p
    shift
    p=$(port)
    run fi_pingpong -p ivc -e rdm -B "$p" "$@" >"$tmp/srv.out" 2>&1 &
    local srv=$!
    pids+=("$srv")
    for _ in $(seq 1 50); do
        ss -ltn 2>/dev/null | grep -q ":$p " && break
        sleep 0.1
    done
    run fi_pingpong -p ivc -e rdm -P "$p" "$@" 127.0.0.1 >"$tmp/cli.out" 2>&1
    local cst=$?
    wait "$srv"
    local sst=$?
    local sizes
    sizes=$(grep -cE '^[0-9.]+[kmg]?[[:space:]]+[0-9]+[[:space:]]+=' "$tmp/cli.out")
    if [ $cst -eq 0 ] && [ $sst -eq 0 ] && [ "$sizes" -eq 46 ]; then
        pass "fi_pingpong $name: 46 sizes 0 B..6 MiB, data checked ($(tail -1 "$tmp/cli.out" | awk '{print $1 ": " $6 " MB/s"}'))"
    else
        fail "fi_pingpong $name: client $cst server $sst, $sizes sizes; $(tail -5 "$tmp/cli.out") / $(tail -5 "$tmp/srv.out")"
    fi
}
pingpong "msg" -S all -c -I 10
pingpong "tagged" -m tagged -S all -c -I 10

echo "$fails failed"
[ $fails -eq 0 ]
