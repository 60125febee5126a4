# lib.sh - what the run_*.sh benchmarks share; sourced, after `set -euo
# pipefail`, with the script's arguments:  . "$(dirname "$0")/lib.sh" "$@"
#
# Sets: me (the script's name, for messages), here (bench/), build (the
# build directory given as $1), quick, reps, rep_ms, rounds, prog_timeout
# and common (the options every benchmark program gets) from BENCH_QUICK,
# BENCH_REPS, BENCH_REP_MS, BENCH_ROUNDS, BENCH_TIMEOUT; cpus (the CPUs we
# may run on, in order); and lets Open MPI run as root.  Then defines what
# the scripts do alike: the raw file's header (bench_raw_header), pinning
# two ranks (bench_pin2), a scratch directory with traps that clean up on
# every exit (bench_scratch), a private ivcd (bench_ivcd), a program run
# under a timeout and kept in the raw file (bench_wait, bench_keep), and
# the VM part's private store (bench_vm_store), a free TCP port (free_port).

me=$(basename "$0")
die() {
    echo "$me: $*" >&2
    exit 1
}

[ $# -ge 1 ] || die "usage: $0 BUILD_DIR"
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" 2>/dev/null && pwd) || die "build directory '$1' not found"

quick=${BENCH_QUICK:-0}
[ "$quick" = 0 ] && quick=
if [ -n "$quick" ]; then
    reps=${BENCH_REPS:-3}
    rep_ms=${BENCH_REP_MS:-2}
    rounds=${BENCH_ROUNDS:-1}
    prog_timeout=${BENCH_TIMEOUT:-120}
else
    reps=${BENCH_REPS:-7}
    rep_ms=${BENCH_REP_MS:-20}
    rounds=${BENCH_ROUNDS:-3}
    prog_timeout=${BENCH_TIMEOUT:-600}
fi
common=(--reps "$reps" --rep-ms "$rep_ms" --timeout "$((prog_timeout - 5))")
[ -n "$quick" ] && common+=(--quick)

if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

cpu_list=$(taskset -pc $$ 2>/dev/null | sed 's/.*: //') || cpu_list=
cpus=()
for part in ${cpu_list//,/ }; do
    if [[ $part == *-* ]]; then
        for ((c = ${part%-*}; c <= ${part#*-}; c++)); do cpus+=("$c"); done
    else
        cpus+=("$part")
    fi
done

# bench_raw_header FIRST_LINE: the top of a raw results file: FIRST_LINE
# (the script and its settings), the host, the git commit.
bench_raw_header() {
    echo "$1"
    echo "# host: $(uname -srm), $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
    echo "# git: $(git -C "$here/.." rev-parse --short HEAD 2>/dev/null || echo unknown)"
}

# bench_pin2: the two CPUs two ranks are pinned to, the first two we may run
# on: pin ("A,B", or none) and mpi_bind (mpirun's options for it).
bench_pin2() {
    if [ ${#cpus[@]} -ge 2 ]; then
        pin="${cpus[0]},${cpus[1]}"
        mpi_bind=(--bind-to core --cpu-set "$pin")
    else
        echo "$me: WARNING: fewer than 2 CPUs: processes not pinned" >&2
        pin=none
        mpi_bind=(--bind-to none --oversubscribe)
    fi
}

# bench_scratch NAME: a scratch directory $tmp (/tmp/vhpc-bench-NAME.*) and
# traps that, on every exit (failure, SIGINT and SIGTERM too), stop the
# program whose pid is in $cur_pid, remove the VM part's private store and
# run directory ($vm_home, $vm_run; `$vhpc gc --all` first), stop the ivcd
# of bench_ivcd, and remove $tmp.
bench_scratch() {
    tmp=$(mktemp -d "/tmp/vhpc-bench-$1.XXXXXX")
    cur_pid='' vm_home='' vm_run=''
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

bench_cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    if [ -n "$cur_pid" ]; then
        kill -TERM "$cur_pid" 2>/dev/null || true
        wait "$cur_pid" 2>/dev/null || true
    fi
    if [ -n "$vm_run" ]; then
        VHPC_HOME=$vm_home VHPC_RUN_DIR=$vm_run timeout -k 5 120 "$vhpc" gc --all >/dev/null 2>&1 ||
            echo "$me: WARNING: vhpc gc --all failed" >&2
        rm -rf "$vm_run"
    fi
    [ -n "$vm_home" ] && rm -rf "$vm_home"
    if [ -f "$tmp/ivcd.pid" ]; then
        pid=$(cat "$tmp/ivcd.pid")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$me: WARNING: ivcd did not exit on SIGTERM; killed" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$tmp"
    exit "$rc"
}

# bench_ivcd IVCD JOB SIZE: start a private ivcd (the binary IVCD) for job
# JOB with a SIZE region on $tmp/ivcd.sock; its pid in $tmp/ivcd.pid, for
# bench_cleanup.
bench_ivcd() {
    timeout 30 "$1" --job "$2" --socket "$tmp/ivcd.sock" --size "$3" --daemon \
        --pidfile "$tmp/ivcd.pid" >"$tmp/ivcd.log" 2>&1 || {
        cat "$tmp/ivcd.log" >&2
        die "ivcd did not start"
    }
    [ -S "$tmp/ivcd.sock" ] || die "ivcd did not create $tmp/ivcd.sock"
}

# bench_ivcd_alive: whether the ivcd of bench_ivcd still runs.
bench_ivcd_alive() {
    kill -0 "$(cat "$tmp/ivcd.pid")" 2>/dev/null
}

# bench_keep NAME OUT ERR CMD... : append a program's output to the raw
# file $raw (of the provider's log only its own lines).
bench_keep() {
    local name=$1 out=$2 err=$3
    shift 3
    {
        echo "### $name: $*"
        cat "$out"
        awk '!/^libfabric:/ || /:ivc:ep_ctrl:/ { print "# stderr: " $0 }' "$err"
    } >>"$raw"
}

# bench_vm_store: a private image store and run directory for a VM part
# ($vm_home, $vm_run, removed by bench_cleanup) and the shared guest kernel
# cache (VHPC_KERNEL_CACHE, default /var/cache/vhpc-test/kernels).
bench_vm_store() {
    export VHPC_KERNEL_CACHE=${VHPC_KERNEL_CACHE:-/var/cache/vhpc-test/kernels}
    vm_home=$(mktemp -d /tmp/vhpc-bench-home.XXXXXX)
    vm_run=$(mktemp -d /tmp/vhpc-bench-run.XXXXXX)
}

# bench_wait NAME OUT ERR TIMEOUT CMD... : run CMD under a timeout, its
# output in OUT and ERR, its pid in $cur_pid while it runs (so that
# bench_cleanup stops it); kept in the raw file.  Returns its exit status,
# with a note when the timeout stopped it.
bench_wait() {
    local name=$1 out=$2 err=$3 secs=$4 rc=0
    shift 4
    timeout -k 20 "$secs" "$@" >"$out" 2>"$err" &
    cur_pid=$!
    wait "$cur_pid" || rc=$?
    cur_pid=
    bench_keep "$name" "$out" "$err" "$@"
    [ "$rc" -eq 124 ] && echo "$me: $name timed out after $secs s" >&2
    return "$rc"
}

# bench_order ROUND WORD...: the WORDs in their order for odd rounds,
# reversed for even ones (so that no configuration always runs first).
bench_order() {
    local round=$1 i
    shift
    local words=("$@")
    if ((round % 2 == 0)); then
        for ((i = ${#words[@]} - 1; i >= 0; i--)); do echo "${words[$i]}"; done
    else
        printf '%s\n' "${words[@]}"
    fi
}

# bench_awk: awk functions for the scripts' reports, to put before their
# own program text:  awk "$bench_awk"'...'.  med(KEY) is the median of the
# values val[KEY, 1..cnt[KEY]] ("" when there is none).
bench_awk='
function med(key,   n, i, j, a, t) {
    n = cnt[key]
    if (n == 0) return ""
    for (i = 1; i <= n; i++) a[i] = val[key, i]
    for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}'

# bench_provider_setup: for the benchmarks of the provider ivc under Open
# MPI: sets ivcd, fi_dir (the provider's directory) and vhpc from the build
# directory and dies unless mpirun, ivcd, the provider and (when $with_vms
# is set) vhpc are there; then clears the caller's provider settings, which
# local ranks would inherit from mpirun's environment: nothing of the
# caller's may switch IVC off or pick another provider.
bench_provider_setup() {
    ivcd=$build/src/ivcd/ivcd
    fi_dir=$build/src/fi
    vhpc=$build/src/vhpc/vhpc
    command -v mpirun >/dev/null || die "mpirun not found (apt-get install openmpi-bin)"
    for f in "$ivcd" "$fi_dir/libivc-fi.so"; do
        [ -e "$f" ] || die "$f not built (make build)"
    done
    [ -z "$with_vms" ] || [ -x "$vhpc" ] || die "$vhpc not built (make build)"
    unset FI_IVC_ENABLE FI_PROVIDER FI_IVC_JOB IVC_SOCKET FI_LOG_LEVEL FI_LOG_PROV
}

# free_port: a TCP port for a program's own exchange (fi_pingpong's).
. "$here/../scripts/free_port.sh"
