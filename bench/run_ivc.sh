#!/usr/bin/env bash
# run_ivc.sh BUILD_DIR - compare IVC with the other ways two processes on one
# host can talk, all measured in this one run (the machine is shared and
# noisy, so numbers from different runs are not comparable):
#
#   IVC     build/bench/ivc_bench through a private ivcd started here
#   vader   Open MPI's shared memory (pml ob1, btl self,vader), mpi_pingpong
#   vader2  the same without its single-copy (CMA) path: two copies, like IVC
#   UNIX    UNIX stream socket, sock_bench
#   TCP     TCP loopback with TCP_NODELAY, sock_bench
#   MPI/tcp Open MPI over loopback TCP (btl self,tcp), mpi_pingpong
#   memcpy  one core copying each message size (memcpy_bench): the ceiling
#           of streaming (an IVC sender copies into its ring at this speed
#           at best); bandwidth only
#
# One-way latency (ping-pong / 2) for 1 B..4 MiB and streaming bandwidth for
# 1 KiB..4 MiB (MB/s = 1e6 bytes/s).  Each program measures every size in 7
# repetitions of about 20 ms (the count per repetition is calibrated during
# the warm-up) and reports the median; the whole set of transports runs in 3
# rounds, alternating the order, and the tables show the median over the
# rounds (so: median of 3 medians).  The two processes are pinned to two
# different CPUs for every transport.  The raw output is kept in
# bench/results/.  See bench/README.md and bench/bench_common.h.
#
# The last line is machine-readable:
#   RESULT lat8_us=.. vader_lat8_us=.. tcp_lat8_us=.. lat8_ratio=.. bw64k_ratio=.. bw4m_ratio=..
#
# Environment:
#   BENCH_QUICK=1       few sizes and iterations (smoke run, used by ctest)
#   IVC_RING_SIZE=1M    ring size of each direction of the IVC channel
#   BENCH_REPS=N        repetitions per size (default 7, quick 3)
#   BENCH_REP_MS=MS     duration of one repetition (default 20, quick 2)
#   BENCH_ROUNDS=N      run the whole comparison N times (default 3, quick 1)
#   BENCH_TRANSPORTS    subset of "ivc vader vader2 unix tcp mpitcp memcpy" (default all)
#   BENCH_TIMEOUT=SEC   bound on each program run (default 900, quick 120)
set -euo pipefail

. "$(dirname "$0")/lib.sh" "$@"

ring=${IVC_RING_SIZE:-1M}
transports=${BENCH_TRANSPORTS:-ivc vader vader2 unix tcp mpitcp memcpy}

has() { [[ " $transports " == *" $1 "* ]]; }

ivc_bench=$build/bench/ivc_bench
sock_bench=$build/bench/sock_bench
memcpy_bench=$build/bench/memcpy_bench
mpi_pingpong=$build/bench/mpi_pingpong
ivcd=$build/src/ivcd/ivcd

[ -x "$sock_bench" ] || die "$sock_bench not built (make build)"
! has memcpy || [ -x "$memcpy_bench" ] || die "$memcpy_bench not built (make build)"
if has ivc; then
    [ -x "$ivc_bench" ] || die "$ivc_bench not built (is libivc built? make build)"
    [ -x "$ivcd" ] || die "$ivcd not built (make build)"
fi
mpi_ok=1
if has vader || has vader2 || has mpitcp; then
    if [ ! -x "$mpi_pingpong" ] || ! command -v mpirun >/dev/null; then
        echo "run_ivc.sh: WARNING: mpicc/mpirun not found: Open MPI baselines skipped" >&2
        mpi_ok=
    fi
fi

# Two CPUs to pin the two processes to: the first two we may run on.
bench_pin2

# Scratch directory, ivcd and the running program are always cleaned up
# (lib.sh).
bench_scratch ivc

mkdir -p "$here/results"
stamp=$(date +%Y%m%d-%H%M%S)
raw=$here/results/ivc-$stamp${quick:+-quick}.txt
bench_raw_header "# run_ivc.sh $(date -Is) quick=${quick:-0} reps=$reps rep_ms=$rep_ms rounds=$rounds ring=$ring cpus=$pin" >"$raw"

# The region: 256M, or larger for big rings (ivcd splits the ring pool into
# 64 endpoint shares; a share must hold both rings an endpoint allocates).
case $ring in
*[kK]) ring_bytes=$((${ring%?} << 10)) ;;
*[mM]) ring_bytes=$((${ring%?} << 20)) ;;
*) ring_bytes=$ring ;;
esac
region=$((256 << 20))
((ring_bytes * 128 > region)) && region=$((ring_bytes * 128))

magic=$((1000000 + $$))
has ivc && bench_ivcd "$ivcd" "$magic" "$region"

# run NAME ROUND CMD... : run one benchmark program, keep its output.
run() {
    local name=$1 round=$2 rc=0
    shift 2
    local out=$tmp/$name.$round.out err=$tmp/$name.$round.err
    echo "run_ivc.sh: round $round: $name" >&2
    timeout -k 5 "$prog_timeout" "$@" >"$out" 2>"$err" &
    cur_pid=$!
    wait "$cur_pid" || rc=$?
    cur_pid=
    {
        echo "### $name round $round: $*"
        cat "$out"
        sed 's/^/# stderr: /' "$err"
    } >>"$raw"
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && echo "run_ivc.sh: $name timed out after $prog_timeout s" >&2
        echo "--- $name stderr:" >&2
        cat "$err" >&2
        if [ -f "$tmp/ivcd.pid" ]; then
            echo "--- ivcd log:" >&2
            tail -n 20 "$tmp/ivcd.log" >&2
        fi
        die "$name failed (exit status $rc); raw output in $raw"
    fi
    grep -q '^lat \|^bw ' "$out" || die "$name printed no results; raw output in $raw"
    sed -n "s/^\(lat\|bw\) /$name &/p" "$out" >>"$tmp/all"
    if [ -f "$tmp/ivcd.pid" ] && ! bench_ivcd_alive; then
        cat "$tmp/ivcd.log" >&2
        die "ivcd died during $name"
    fi
}

mpirun_cmd=(mpirun --allow-run-as-root -np 2 "${mpi_bind[@]}" --mca pml ob1)
order=(ivc vader vader2 unix tcp mpitcp memcpy)
: >"$tmp/all"
for ((round = 1; round <= rounds; round++)); do
    mapfile -t list < <(bench_order "$round" "${order[@]}")
    for t in "${list[@]}"; do
        has "$t" || continue
        case $t in
        ivc) run ivc "$round" "$ivc_bench" --socket "$tmp/ivcd.sock" --magic "$magic" \
            --ring-size "$ring" --cpus "$pin" "${common[@]}" ;;
        unix) run unix "$round" "$sock_bench" --transport unix --cpus "$pin" "${common[@]}" ;;
        memcpy) run memcpy "$round" "$memcpy_bench" --cpus "$pin" "${common[@]}" ;;
        tcp) run tcp "$round" "$sock_bench" --transport tcp --cpus "$pin" "${common[@]}" ;;
        vader)
            [ -n "$mpi_ok" ] || continue
            run vader "$round" "${mpirun_cmd[@]}" --mca btl self,vader "$mpi_pingpong" "${common[@]}"
            ;;
        vader2)
            # vader without its single-copy path (CMA, slow in VMs): copies
            # through its own shared buffers, as IVC must.
            [ -n "$mpi_ok" ] || continue
            run vader2 "$round" "${mpirun_cmd[@]}" --mca btl self,vader \
                --mca btl_vader_single_copy_mechanism none "$mpi_pingpong" "${common[@]}"
            ;;
        mpitcp)
            [ -n "$mpi_ok" ] || continue
            run mpitcp "$round" "${mpirun_cmd[@]}" --mca btl self,tcp --mca btl_tcp_if_include lo \
                "$mpi_pingpong" "${common[@]}"
            ;;
        esac
    done
done

# Tables and the RESULT line.  $tmp/all has "transport kind size value ..."
# lines; over rounds, the median is taken.
awk -v reps="$reps" -v rep_ms="$rep_ms" -v rounds="$rounds" -v ring="$ring" -v quick="${quick:-0}" "$bench_awk"'
function goal(r, op, x) {
    if (r == "") return "n/a"
    return ((op == "le" && r + 0 <= x) || (op == "ge" && r + 0 >= x)) ? "met" : "NOT met"
}
function fmt(v) { return v == "" ? "-" : sprintf("%.3f", v) }
function num(v) { return v == "" ? "nan" : sprintf("%.3f", v) }
function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "" : a / b }
function human(s) { return s >= 1048576 ? (s / 1048576) "M" : s >= 1024 ? (s / 1024) "K" : s }
{
    key = $1 SUBSEP $2 SUBSEP $3
    val[key, ++cnt[key]] = $4
    sizes[$2, $3] = 1
}
function table(kind, title, unit,   s, n, i, list, t, line, v) {
    n = 0
    for (k in sizes) { split(k, p, SUBSEP); if (p[1] == kind) list[++n] = p[2] + 0 }
    for (i = 2; i <= n; i++) { t = list[i]; for (j = i - 1; j >= 1 && list[j] > t; j--) list[j + 1] = list[j]; list[j + 1] = t }
    printf "\n%s (%s)\n", title, unit
    printf "%8s %10s %10s %10s %10s %10s %10s %10s %10s %10s %10s\n", "size", "IVC", "vader", "vader2", "UNIX", "TCP", "MPI/tcp", "memcpy", "ivc/vader", "ivc/vader2", "ivc/memcpy"
    for (i = 1; i <= n; i++) {
        s = list[i]
        printf "%8s", human(s)
        split("ivc vader vader2 unix tcp mpitcp memcpy", ts, " ")
        for (t = 1; t <= 7; t++) printf " %10s", fmt(med(ts[t] SUBSEP kind SUBSEP s))
        printf " %10s", fmt(ratio(med("ivc" SUBSEP kind SUBSEP s), med("vader" SUBSEP kind SUBSEP s)))
        printf " %10s", fmt(ratio(med("ivc" SUBSEP kind SUBSEP s), med("vader2" SUBSEP kind SUBSEP s)))
        printf " %10s\n", fmt(ratio(med("ivc" SUBSEP kind SUBSEP s), med("memcpy" SUBSEP kind SUBSEP s)))
    }
}
END {
    lat8 = med("ivc" SUBSEP "lat" SUBSEP 8)
    vlat8 = med("vader" SUBSEP "lat" SUBSEP 8)
    tlat8 = med("tcp" SUBSEP "lat" SUBSEP 8)
    r_lat8 = ratio(lat8, vlat8)
    r_bw64k = ratio(med("ivc" SUBSEP "bw" SUBSEP 65536), med("vader" SUBSEP "bw" SUBSEP 65536))
    r_bw4m = ratio(med("ivc" SUBSEP "bw" SUBSEP 4194304), med("vader" SUBSEP "bw" SUBSEP 4194304))
    printf "IVC benchmark: IVC ring %s per direction; each value is the median of %s repetitions of ~%s ms%s%s\n",
        ring, reps, rep_ms, (rounds > 1 ? sprintf(", then the median over %d rounds", rounds) : ""),
        (quick != 0 ? " (QUICK smoke run)" : "")
    printf "Goals: lat8_ratio <= 1.0 (%s), bw64k_ratio >= 1.0 (%s), bw4m_ratio >= 0.8 (%s)\n",
        goal(r_lat8, "le", 1.0), goal(r_bw64k, "ge", 1.0), goal(r_bw4m, "ge", 0.8)
    table("lat", "One-way latency, ping-pong / 2", "usec, lower is better")
    table("bw", "Streaming bandwidth", "MB/s = 1e6 bytes/s, higher is better")
    printf "\nRESULT lat8_us=%s vader_lat8_us=%s tcp_lat8_us=%s lat8_ratio=%s bw64k_ratio=%s bw4m_ratio=%s\n",
        num(lat8), num(vlat8), num(tlat8), num(r_lat8), num(r_bw64k), num(r_bw4m)
}' "$tmp/all" >"$tmp/table"

result=$(tail -n 1 "$tmp/table")
{
    echo
    cat "$tmp/table"
} >>"$raw"
sed '$d' "$tmp/table"
echo "(raw output: ${raw#"$(dirname "$here")/"})"
echo "$result"

# With every transport selected and available, every value must be a number.
if has ivc && has vader && has tcp && [ -n "$mpi_ok" ]; then
    num='[0-9]+\.[0-9]{3}'
    [[ $result =~ ^RESULT\ lat8_us=$num\ vader_lat8_us=$num\ tcp_lat8_us=$num\ lat8_ratio=$num\ bw64k_ratio=$num\ bw4m_ratio=$num$ ]] ||
        die "RESULT line has missing values"
fi
