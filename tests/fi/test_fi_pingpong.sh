#!/usr/bin/env bash
# test_fi_pingpong.sh - libfabric's fi_pingpong (Debian's libfabric-bin)
# between two host processes over the provider "ivc": every size from 0 B to
# 6 MiB (-S all), data checked (-c), untagged and tagged, first over TCP
# only, then with both attached to one ivcd region, where the data must go
# through the IVC channel; fi_info lists the provider with honest
# attributes; a DGRAM request finds nothing.
# Needs FI_PROVIDER_PATH and IVCD (set by ctest).
set -uo pipefail
: "${FI_PROVIDER_PATH:?set by ctest}" "${IVCD:?set by ctest}"
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
    [ -f "$tmp/ivcd.pid" ] && kill "$(cat "$tmp/ivcd.pid")" 2>/dev/null
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

# free_port: a TCP port for fi_pingpong's own out-of-band exchange.
. "$(dirname "$0")/../../scripts/free_port.sh"

pingpong() { # $1: name, $2: sizes expected, rest: fi_pingpong options
    local name=$1 want=$2 p srv cst sst
    shift 2
    # Another program may still take the port between the check and the
    # bind: then the server says so and the pair runs again on another.
    for _ in 1 2 3; do
        p=$(free_port)
        run fi_pingpong -p ivc -e rdm -B "$p" "$@" >"$tmp/srv.out" 2>&1 &
        srv=$!
        pids+=("$srv")
        for _ in $(seq 1 50); do
            ss -ltn 2>/dev/null | grep -q ":$p " && break
            sleep 0.1
        done
        run fi_pingpong -p ivc -e rdm -P "$p" "$@" 127.0.0.1 >"$tmp/cli.out" 2>&1
        cst=$?
        wait "$srv"
        sst=$?
        grep -q "Address already in use" "$tmp/srv.out" || break
        echo "port $p was taken: again on another"
    done
    local sizes
    sizes=$(grep -cE '^[0-9.]+[kmg]?[[:space:]]+[0-9]+[[:space:]]+=' "$tmp/cli.out")
    if [ $cst -eq 0 ] && [ $sst -eq 0 ] && [ "$sizes" -eq "$want" ]; then
        pass "fi_pingpong $name: $want size(s), data checked ($(tail -1 "$tmp/cli.out" | awk '{print $1 ": " $6 " MB/s"}'))"
    else
        fail "fi_pingpong $name: client $cst server $sst, $sizes sizes; $(tail -5 "$tmp/cli.out") / $(tail -5 "$tmp/srv.out")"
    fi
}
# Bytes the client sent by TCP and by IVC (its FI_LOG_LEVEL=info summary).
bytes_by() { # $1: TCP or IVC
    sed -n "s/.*sent \([0-9]*\) bytes by TCP, \([0-9]*\) by IVC.*/\1 \2/p" "$tmp/cli.out" |
        awk -v w="$1" '{s += (w == "TCP" ? $1 : $2)} END {print s + 0}'
}

# TCP only: no IVC job.
unset FI_IVC_JOB VHPC_JOB IVC_SOCKET
pingpong "msg over TCP" 46 -S all -c -I 10
pingpong "tagged over TCP" 46 -m tagged -S all -c -I 10

# Both endpoints in one ivcd region: the stream moves to IVC.
job=$((RANDOM * 1000 + 7))
"$IVCD" --job $job --socket "$tmp/ivc.sock" --size 64M --daemon --pidfile "$tmp/ivcd.pid" ||
    fail "ivcd did not start"
export FI_IVC_JOB=$job IVC_SOCKET=$tmp/ivc.sock FI_LOG_LEVEL=info FI_LOG_PROV=ivc
pingpong "msg over IVC" 46 -S all -c -I 10
tcp=$(bytes_by TCP) ivc=$(bytes_by IVC)
[ "$ivc" -gt 100000000 ] && [ "$tcp" -lt 1000000 ] &&
    pass "the data went by IVC ($ivc bytes), TCP carried $tcp bytes (set-up, first messages)" ||
    fail "IVC carried $ivc bytes, TCP $tcp"
pingpong "tagged over IVC" 46 -m tagged -S all -c -I 10
tcp=$(bytes_by TCP) ivc=$(bytes_by IVC)
[ "$ivc" -gt 100000000 ] && [ "$tcp" -lt 1000000 ] &&
    pass "tagged: the data went by IVC ($ivc bytes, TCP $tcp)" || fail "tagged: IVC $ivc, TCP $tcp"
# FI_IVC_ENABLE=0 turns IVC off even inside a region.
FI_IVC_ENABLE=0 pingpong "msg with FI_IVC_ENABLE=0" 1 -S 1048576 -c -I 10
[ "$(bytes_by IVC)" -eq 0 ] && pass "FI_IVC_ENABLE=0: nothing by IVC" || fail "FI_IVC_ENABLE=0: $(bytes_by IVC) bytes by IVC"

echo "$fails failed"
[ $fails -eq 0 ]
