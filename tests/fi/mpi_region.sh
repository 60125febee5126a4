# mpi_region.sh - sourced by the tests that run Open MPI over the provider
# ivc with every rank attached to one private ivcd region (test_fi_mpi.sh,
# test_fi_mpi_conformance.sh): PASS/FAIL lines and their count ($fails), a
# temporary directory ($tmp, removed at exit, after the caller's `on_exit`
# if it defines one), ivcd started in it with FI_IVC_JOB and IVC_SOCKET
# exported for mpirun's -x, and $preload: the mpirun options that carry the
# ASan runtime into the ranks in the sanitized build.
: "${FI_PROVIDER_PATH:?set by ctest}" "${IVCD:?set by ctest}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fails=0
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d /tmp/fi-mpi.XXXXXX)
region_cleanup() {
    if declare -F on_exit >/dev/null; then on_exit; fi
    [ -f "$tmp/ivcd.pid" ] && kill "$(cat "$tmp/ivcd.pid")" 2>/dev/null
    rm -rf "$tmp"
}
trap region_cleanup EXIT

job=$((RANDOM * 1000 + 13))
"$IVCD" --job $job --socket "$tmp/ivc.sock" --size 128M --daemon --pidfile "$tmp/ivcd.pid" ||
    fail "ivcd did not start"
export FI_IVC_JOB=$job IVC_SOCKET=$tmp/ivc.sock
preload=()
[ -n "${VHPC_PRELOAD:-}" ] && preload=(-x LD_PRELOAD="$VHPC_PRELOAD" -x ASAN_OPTIONS)
