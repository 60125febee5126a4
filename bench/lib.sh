# lib.sh - what the run_*.sh benchmarks share; sourced, after `set -euo
# pipefail`, with the script's arguments:  . "$(dirname "$0")/lib.sh" "$@"
#
# Sets: me (the script's name, for messages), here (bench/), build (the
# build directory given as $1), quick, reps, rep_ms, rounds, prog_timeout
# and common (the options every benchmark program gets) from BENCH_QUICK,
# BENCH_REPS, BENCH_REP_MS, BENCH_ROUNDS, BENCH_TIMEOUT; cpus (the CPUs we
# may run on, in order); and lets Open MPI run as root.

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
