#!/usr/bin/env bash
# run_mpi.sh BUILD_DIR - Open MPI over vhpc's libfabric provider ivc against
# Open MPI's own transports, all measured in this one run (the machine is
# shared and noisy, so numbers from different runs are not comparable):
#
#   ivc    pml cm + mtl ofi + provider ivc, every rank attached to one private
#          ivcd region (started here), so the ranks talk through IVC
#   vader  pml ob1 + btl self,vader: Open MPI's native shared memory
#   tcp    pml ob1 + btl self,tcp over loopback
#
# Host part: one-way latency (mpi_pingpong, ping-pong / 2) from 1 B (the
# ping-pong stamps the first and last byte, so it cannot send 0 B) to 4 MiB,
# bandwidth (windows of 64 MPI_Isend, as osu_bw) 1 KiB..4 MiB, and
# MPI_Allreduce latency on 4 ranks, 8 B and 64 KiB (mpi_allreduce), and
# libfabric's fi_pingpong (tagged, 8 B and 64 KiB) over the provider ivc
# and over libfabric's own shm provider, without MPI (fi_pp below).  Each
# program reports per size the median of its repetitions; the three
# configurations run in rounds of alternating order and the tables show the
# median over the rounds.  The 2 ping-pong ranks are pinned to two CPUs, as
# in run_ivc.sh; the 4 Allreduce ranks go round-robin over the first (up to
# 4) CPUs we may use, with mpi_yield_when_idle when they share CPUs.
#
# VM part (BENCH_VMS=0 skips it): the paper's three configurations side by
# side, as ratios only: IVC = `vhpc run` VMs (TCG when there is no KVM) with
# the image's defaults (provider ivc, both VMs in one ivcd region), No-IVC =
# the same VMs with FI_IVC_ENABLE=0 (the provider over TCP between the VMs),
# Native = the host's vader numbers of this run.  A private image store and
# run directory are used and removed at exit (`vhpc gc --all` first).
#
# The raw output of every program is kept in bench/results/.  The last line
# is machine-readable:
#   RESULT lat8_ratio=<ivc/vader> bw64k_ratio=<ivc/vader> bw4m_ratio=<ivc/vader> \
#          tcp_over_ivc_lat8=<tcp/ivc> allreduce_ratio=<ivc/vader> \
#          fi_tagged8_ivc_over_shm=<ivc/shm> fi_tagged64k_ivc_over_shm=<ivc/shm>
#
# Environment:
#   BENCH_QUICK=1        few sizes and iterations, 1 round (smoke run)
#   BENCH_VMS=0          skip the VM part
#   BENCH_REPS=N         repetitions per size (default 7, quick 3)
#   BENCH_REP_MS=MS      duration of one repetition (default 20, quick 2)
#   BENCH_ROUNDS=N       rounds of the host part (default 3, quick 1)
#   BENCH_TIMEOUT=SEC    bound on each host program run (default 600, quick 120)
#   BENCH_VM_TIMEOUT=SEC bound on each `vhpc run` and the image build (default 600)
#   VHPC_KERNEL_CACHE    guest kernel cache (default /var/cache/vhpc-test/kernels)
set -euo pipefail

. "$(dirname "$0")/lib.sh" "$@"

with_vms=${BENCH_VMS:-1}
[ "$with_vms" = 0 ] && with_vms=
vm_timeout=${BENCH_VM_TIMEOUT:-600}
# In the VMs, short: the sizes of the ratios (and 1 KiB, which --quick adds).
vm_pingpong_opts=(--quick --lat-range 8:64K --bw-range 64K:4M --reps 3 --rep-ms 10
    --timeout "$((vm_timeout - 30))")
vm_allreduce_opts=(--quick --reps 3 --rep-ms 10 --timeout "$((vm_timeout - 30))")

mpi_pingpong=$build/bench/mpi_pingpong
mpi_allreduce=$build/bench/mpi_allreduce

bench_provider_setup
for f in "$mpi_pingpong" "$mpi_allreduce"; do
    [ -e "$f" ] || die "$f not built (make build; the MPI programs need mpicc)"
done

# Scratch directory, ivcd, the running program and the VM part's private
# store are always cleaned up, on failure too (lib.sh).
bench_scratch mpi

# Of the CPUs we may run on (lib.sh): ping-pong on the first two; the
# Allreduce's 4 ranks round-robin over the first (up to) 4, through a rank
# file (Open MPI's --cpu-set does not bind once oversubscribed).
bench_pin2
if [ ${#cpus[@]} -ge 2 ]; then
    ncpu=${#cpus[@]}
    ((ncpu > 4)) && ncpu=4
    for r in 0 1 2 3; do
        echo "rank $r=$(hostname) slot=${cpus[$((r % ncpu))]}"
    done >"$tmp/rankfile"
    ar_bind=(--oversubscribe --rankfile "$tmp/rankfile" --mca rmaps_rank_file_physical 1)
    ar_pin="${cpus[*]:0:$ncpu}"
    if ((ncpu < 4)); then
        ar_bind+=(--mca mpi_yield_when_idle 1)
        ar_pin="${ar_pin// /,}, $((4 / ncpu)) ranks per CPU"
    fi
else
    ar_pin=none
    ar_bind=(--bind-to none --oversubscribe --mca mpi_yield_when_idle 1)
fi

mkdir -p "$here/results"
stamp=$(date +%Y%m%d-%H%M%S)
raw=$here/results/mpi-$stamp${quick:+-quick}.txt
bench_raw_header "# run_mpi.sh $(date -Is) quick=${quick:-0} reps=$reps rep_ms=$rep_ms rounds=$rounds cpus=$pin allreduce_cpus=$ar_pin vms=${with_vms:-0}" >"$raw"

# The job's region, private to this run.
job=$((2000000 + $$))
bench_ivcd "$ivcd" "$job" 64M

# mpirun options of each configuration.  The provider logs at info level
# (channel setup and, at exit, bytes by TCP and by IVC; nothing per message)
# so that the run can prove it used IVC.
mpi_opts() {
    case $1 in
    ivc) echo "--mca pml cm --mca mtl ofi --mca mtl_ofi_provider_include ivc" \
        "-x FI_PROVIDER_PATH=$fi_dir -x FI_IVC_JOB=$job -x IVC_SOCKET=$tmp/ivcd.sock" \
        "-x FI_LOG_LEVEL=info -x FI_LOG_PROV=ivc" ;;
    vader) echo "--mca pml ob1 --mca btl self,vader" ;;
    tcp) echo "--mca pml ob1 --mca btl self,tcp --mca btl_tcp_if_include lo" ;;
    esac
}

# ivc_moved OUT ERR [SECTION]: the provider's own count of the bytes it sent
# by IVC (logged at exit) covers at least the timed bandwidth messages of a
# ping-pong run (size x messages x repetitions, from its header line), so
# the bandwidth numbers are of data that really went through IVC.  With
# SECTION, only the lines after the "### SECTION" marker and before the next
# marker count.
ivc_moved() {
    awk -v sect="${3:-}" '
        FNR == 1 { f++; on = (sect == "") }
        /^### / { on = ($2 == sect); next }
        !on { next }
        f == 1 && /^# mpi_pingpong / && match($0, /reps=[0-9]+/) { reps = substr($0, RSTART + 5, RLENGTH - 5) }
        f == 1 && /^bw / { want += $2 * $6 * reps }
        f == 2 && /^libfabric:.*:ivc:.*sent [0-9]+ bytes by TCP, [0-9]+ by IVC/ {
            sub(/.*sent [0-9]+ bytes by TCP, /, ""); if ($1 + 0 > got) got = $1 + 0
        }
        END {
            if (want == 0 || got >= want) exit 0
            printf "the provider sent %.0f bytes by IVC, the timed bandwidth messages alone were %.0f\n", got, want > "/dev/stderr"
            exit 1
        }' "$1" "$2"
}

# run NAME OUT_PREFIX CMD... : run a host program under a timeout; fail
# loudly.  Result lines ("lat|bw|allreduce SIZE VALUE ...") go to $tmp/all
# as "host NAME KIND SIZE VALUE".
run() {
    local name=$1 base=$2 rc=0
    shift 2
    local out=$tmp/$base.out err=$tmp/$base.err
    echo "run_mpi.sh: $base" >&2
    bench_wait "$base" "$out" "$err" "$prog_timeout" "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "--- $base stderr:" >&2
        grep -v '^libfabric:.*<info>' "$err" | tail -n 30 >&2
        die "$base failed (exit status $rc); raw output in $raw"
    fi
    grep -q '^\(lat\|bw\|allreduce\) ' "$out" || die "$base printed no results; raw output in $raw"
    if [ "$name" = ivc ] && ! grep -q 'IVC channel .* up' "$err"; then
        die "$base: the provider ivc opened no IVC channel (it ran over TCP); raw output in $raw"
    fi
    if [ "$name" = ivc ] && ! ivc_moved "$out" "$err"; then
        die "$base: the bandwidth data did not go through IVC; raw output in $raw"
    fi
    sed -n "s/^\(lat\|bw\|allreduce\) /host $name &/p" "$out" >>"$tmp/all"
    bench_ivcd_alive || die "ivcd died during $base"
}

# fi_pp PROV SIZE: libfabric's own ping-pong (fi_pingpong from libfabric-bin,
# tagged messages, RDM), server and client pinned like the MPI ping-pong,
# over the provider ivc (both in this run's ivcd region, checked from its
# log) or libfabric's shm provider; "host fi-PROV fipp SIZE USEC" to
# $tmp/all, usec per transfer as fi_pingpong prints it.  The issue's
# fi_rdm_tagged_pingpong is in fabtests, which Debian 12 does not package;
# fi_pingpong -m tagged runs the same exchange (fi_tsend, fi_trecv, CQ).
fi_pp() {
    local prov=$1 size=$2 p iters=100000 rc=0
    local base=fi-$prov-$size.$round
    ((size >= 65536)) && iters=20000
    [ -n "$quick" ] && iters=$((iters / 10))
    p=$(free_port)
    local env=(env)
    [ "$prov" = ivc ] && env+=(FI_PROVIDER_PATH="$fi_dir" FI_IVC_JOB="$job"
        IVC_SOCKET="$tmp/ivcd.sock" FI_LOG_LEVEL=info FI_LOG_PROV=ivc)
    local opts=(-p "$prov" -e rdm -m tagged -I "$iters" -S "$size")
    echo "run_mpi.sh: $base" >&2
    taskset -c "${cpus[0]}" timeout 60 "${env[@]}" fi_pingpong "${opts[@]}" -B "$p" \
        >"$tmp/$base.srv" 2>&1 &
    local srv=$!
    for _ in $(seq 1 50); do
        ss -ltn | grep -q ":$p " && break
        sleep 0.1
    done
    bench_wait "$base" "$tmp/$base.out" "$tmp/$base.err" 60 taskset -c "${cpus[1]:-${cpus[0]}}" \
        "${env[@]}" fi_pingpong "${opts[@]}" -P "$p" 127.0.0.1 || rc=$?
    local srv_rc=0
    wait "$srv" || srv_rc=$?
    [ "$rc" -eq 0 ] && rc=$srv_rc
    if [ "$rc" -ne 0 ]; then
        tail -n 20 "$tmp/$base.err" "$tmp/$base.srv" >&2
        die "$base failed (exit status $rc); raw output in $raw"
    fi
    if [ "$prov" = ivc ] && ! grep -q 'IVC channel .* up' "$tmp/$base.err"; then
        die "$base: the provider ivc opened no IVC channel (it ran over TCP); raw output in $raw"
    fi
    awk -v s="$size" '$1 ~ /^[0-9]+[kmg]?$/ && NF >= 8 { v = $7 } END { if (v == "") exit 1; print "host fi-" p " fipp " s " " v }' \
        p="$prov" "$tmp/$base.out" >>"$tmp/all" || die "$base printed no result; raw output in $raw"
}

# ---- host part -------------------------------------------------------------
order=(ivc vader tcp)
: >"$tmp/all"
t_host=$(date +%s)
for ((round = 1; round <= rounds; round++)); do
    mapfile -t list < <(bench_order "$round" "${order[@]}")
    for c in "${list[@]}"; do
        read -r -a opts <<<"$(mpi_opts "$c")"
        run "$c" "$c.pingpong.$round" mpirun -np 2 "${mpi_bind[@]}" "${opts[@]}" \
            "$mpi_pingpong" "${common[@]}"
        run "$c" "$c.allreduce.$round" mpirun -np 4 "${ar_bind[@]}" "${opts[@]}" \
            "$mpi_allreduce" "${common[@]}"
    done
    mapfile -t list < <(bench_order "$round" ivc shm)
    for prov in "${list[@]}"; do
        for size in 8 65536; do
            for ((k = 1; k <= (quick ? 1 : 3); k++)); do fi_pp "$prov" "$size"; done
        done
    done
done
t_host=$(($(date +%s) - t_host))

# The tables and the RESULT line, from $tmp/all ("where config kind size
# value" lines; over the host rounds the median is taken).  PART: host, vm
# or result.
report() {
    awk -v part="$1" -v reps="$reps" -v rep_ms="$rep_ms" -v rounds="$rounds" \
        -v quick="${quick:-0}" -v pin="$pin" -v ar_pin="$ar_pin" -v accel="${accel:-}" \
        -v secs="${t_host}" "$bench_awk"'
function get(where, cfg, kind, s) { return med(where SUBSEP cfg SUBSEP kind SUBSEP s) }
function fmt(v) { return v == "" ? "-" : sprintf("%.3f", v) }
function num(v) { return v == "" ? "nan" : sprintf("%.3f", v) }
function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "" : a / b }
function human(s) { return s >= 1048576 ? (s / 1048576) "M" : s >= 1024 ? (s / 1024) "K" : s }
{
    key = $1 SUBSEP $2 SUBSEP $3 SUBSEP $4
    val[key, ++cnt[key]] = $5
    if ($1 == "host") sizes[$3, $4] = 1
}
# A host table: the three configurations, ivc/vader, and tcp against ivc
# (as a time ratio tcp/ivc for latencies, ivc/tcp for bandwidth).
function table(kind, title, last,   n, i, j, t, list, s, k, p, v, r) {
    n = 0
    for (k in sizes) { split(k, p, SUBSEP); if (p[1] == kind) list[++n] = p[2] + 0 }
    for (i = 2; i <= n; i++) { t = list[i]; for (j = i - 1; j >= 1 && list[j] > t; j--) list[j + 1] = list[j]; list[j + 1] = t }
    printf "\n%s\n", title
    printf "%8s %10s %10s %10s %10s %10s\n", "size", "ivc", "vader", "tcp", "ivc/vader", last
    for (i = 1; i <= n; i++) {
        s = list[i]
        v["ivc"] = get("host", "ivc", kind, s); v["vader"] = get("host", "vader", kind, s)
        v["tcp"] = get("host", "tcp", kind, s)
        r = (last == "ivc/tcp") ? ratio(v["ivc"], v["tcp"]) : ratio(v["tcp"], v["ivc"])
        printf "%8s %10s %10s %10s %10s %10s\n", human(s), fmt(v["ivc"]), fmt(v["vader"]),
            fmt(v["tcp"]), fmt(ratio(v["ivc"], v["vader"])), fmt(r)
    }
}
function vmrow(label, kind, s,   nat, ivc, noivc) {
    nat = get("host", "vader", kind, s)
    ivc = get("vm", "ivc", kind, s)
    noivc = get("vm", "noivc", kind, s)
    printf "  %-34s %12s %14s %11s\n", label, fmt(ratio(ivc, nat)), fmt(ratio(noivc, nat)),
        fmt(ratio(noivc, ivc))
}
END {
    if (part == "host") {
        printf "MPI benchmark, host: Open MPI over the provider ivc (IVC through a private ivcd) vs btl vader vs btl tcp (loopback)\n"
        printf "Each value: median of %s repetitions of ~%s ms%s%s; took %d s\n", reps, rep_ms,
            (rounds > 1 ? sprintf(", then the median over %d rounds in alternating order", rounds) : ""),
            (quick != 0 ? " (QUICK smoke run)" : ""), secs
        printf "Ping-pong: 2 ranks pinned to CPUs %s; Allreduce: 4 ranks on CPUs %s\n", pin, ar_pin
        table("lat", "One-way latency, ping-pong / 2 (usec, lower is better; from 1 B: mpi_pingpong cannot send 0 B, it stamps the first and last byte)", "tcp/ivc")
        table("bw", "Bandwidth, windows of 64 MPI_Isend as osu_bw (MB/s = 1e6 bytes/s, higher is better)", "ivc/tcp")
        table("allreduce", "MPI_Allreduce, 4 ranks, sum of MPI_DOUBLEs (usec per call, mean over the ranks, lower is better)", "tcp/ivc")
        printf "\nlibfabric fi_pingpong -e rdm -m tagged (usec per transfer as it prints it, lower is better), provider ivc vs libfabric shm\n"
        printf "%8s %10s %10s %10s\n", "size", "ivc", "shm", "ivc/shm"
        for (i = 1; i <= 2; i++) {
            s = i == 1 ? 8 : 65536
            printf "%8s %10s %10s %10s\n", human(s), fmt(get("host", "fi-ivc", "fipp", s)),
                fmt(get("host", "fi-shm", "fipp", s)),
                fmt(ratio(get("host", "fi-ivc", "fipp", s), get("host", "fi-shm", "fipp", s)))
        }
    } else if (part == "vm") {
        printf "\nMPI benchmark, VMs (%s, 1 vCPU each), ratios only: IVC = provider ivc between the VMs (one ivcd region),\n", accel
        printf "No-IVC = the provider over TCP between the VMs (FI_IVC_ENABLE=0), native = host vader above\n"
        printf "  %-34s %12s %14s %11s\n", "", "IVC/native", "No-IVC/native", "No-IVC/IVC"
        vmrow("lat 8 B (time, >1 = slower)", "lat", 8)
        vmrow("lat 64K (time, >1 = slower)", "lat", 65536)
        vmrow("bw 64K (MB/s, <1 = slower)", "bw", 65536)
        vmrow("bw 4M (MB/s, <1 = slower)", "bw", 4194304)
        vmrow("allreduce 8 B, 4 VMs (time)", "allreduce", 8)
        vmrow("allreduce 64K, 4 VMs (time)", "allreduce", 65536)
    } else {
        printf "RESULT lat8_ratio=%s bw64k_ratio=%s bw4m_ratio=%s tcp_over_ivc_lat8=%s allreduce_ratio=%s fi_tagged8_ivc_over_shm=%s fi_tagged64k_ivc_over_shm=%s\n",
            num(ratio(get("host", "ivc", "lat", 8), get("host", "vader", "lat", 8))),
            num(ratio(get("host", "ivc", "bw", 65536), get("host", "vader", "bw", 65536))),
            num(ratio(get("host", "ivc", "bw", 4194304), get("host", "vader", "bw", 4194304))),
            num(ratio(get("host", "tcp", "lat", 8), get("host", "ivc", "lat", 8))),
            num(ratio(get("host", "ivc", "allreduce", 8), get("host", "vader", "allreduce", 8))),
            num(ratio(get("host", "fi-ivc", "fipp", 8), get("host", "fi-shm", "fipp", 8))),
            num(ratio(get("host", "fi-ivc", "fipp", 65536), get("host", "fi-shm", "fipp", 65536)))
    }
}' "$tmp/all"
}

report host | tee -a "$raw"

# ---- VM part ---------------------------------------------------------------
# vm_run NAME NVMS MEM CMD...: `vhpc run` of a shell command in vm0 that runs
# the IVC and the No-IVC variant of one program, each preceded by a marker
# line on stdout and stderr.  Result lines go to $tmp/all as "vm ivc|noivc ...".
vm_run() {
    local name=$1 nvms=$2 mem=$3 rc=0
    shift 3
    local out=$tmp/vm.$name.out err=$tmp/vm.$name.err
    echo "run_mpi.sh: VMs: $name ($nvms VMs)" >&2
    VHPC_HOME=$vm_home VHPC_RUN_DIR=$vm_run bench_wait "vm.$name" "$out" "$err" "$vm_timeout" \
        "$vhpc" run --vms "$nvms" --mem "$mem" --image bench-mpi -- sh -ec "$*" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "--- vhpc run ($name) stderr:" >&2
        grep -v '^libfabric:.*<info>' "$err" | tail -n 40 >&2
        die "VMs: $name failed (exit status $rc); raw output in $raw"
    fi
    accel=$(sed -n 's/^vhpc run: .*MiB, \([a-z]*\), image.*/\1/p' "$err" | head -1)
    # IVC must have been used in the first variant and not in the second.
    awk '/^### noivc/ { v = "noivc" } /^### ivc/ { v = "ivc" }
         /IVC channel .* up/ { up[v]++ }
         END { exit !(up["ivc"] > 0 && up["noivc"] == 0) }' "$err" ||
        die "VMs: $name: IVC not used by the IVC variant, or used with FI_IVC_ENABLE=0; raw output in $raw"
    ivc_moved "$out" "$err" ivc || die "VMs: $name: the bandwidth data did not go through IVC; raw output in $raw"
    awk '/^### noivc/ { v = "noivc" } /^### ivc/ { v = "ivc" }
         v != "" && /^(lat|bw|allreduce) / { print "vm", v, $0 }' "$out" >>"$tmp/all"
    for v in ivc noivc; do
        grep -q "^vm $v " "$tmp/all" || die "VMs: $name ($v) printed no results; raw output in $raw"
    done
}

# Both variants of one program in one cluster: "### ivc" then "### noivc".
both() {
    local np=$1
    shift
    local log="-x FI_LOG_LEVEL=info -x FI_LOG_PROV=ivc"
    echo "echo '### ivc'; echo '### ivc' >&2; mpirun -np $np $log $*;" \
        "echo '### noivc'; echo '### noivc' >&2; mpirun -np $np $log -x FI_IVC_ENABLE=0 $*"
}

accel=
if [ -n "$with_vms" ]; then
    t_vm=$(date +%s)
    bench_vm_store
    echo "run_mpi.sh: VMs: building image bench-mpi" >&2
    VHPC_HOME=$vm_home VHPC_RUN_DIR=$vm_run timeout -k 5 "$vm_timeout" "$vhpc" image build \
        --name bench-mpi --with-mpi --add "$mpi_pingpong" --add "$mpi_allreduce" \
        >"$tmp/image.log" 2>&1 || {
        cat "$tmp/image.log" >&2
        die "vhpc image build failed"
    }
    cat "$tmp/image.log" >>"$raw"
    vm_run pingpong 2 256 "$(both 2 "$mpi_pingpong" "${vm_pingpong_opts[*]}")"
    vm_run allreduce 4 256 "$(both 4 "$mpi_allreduce" "${vm_allreduce_opts[*]}")"
    t_vm=$(($(date +%s) - t_vm))
    report vm | tee -a "$raw"
    echo "  (VM part took $t_vm s)" | tee -a "$raw"
fi

result=$(report result)
echo "$result" >>"$raw"
echo
echo "(raw output: ${raw#"$(dirname "$here")/"})"
echo "$result"

num='[0-9]+\.[0-9]{3}'
[[ $result =~ ^RESULT\ lat8_ratio=$num\ bw64k_ratio=$num\ bw4m_ratio=$num\ tcp_over_ivc_lat8=$num\ allreduce_ratio=$num\ fi_tagged8_ivc_over_shm=$num\ fi_tagged64k_ivc_over_shm=$num$ ]] ||
    die "RESULT line has missing values"
