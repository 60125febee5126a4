# lib.sh - what the image tests with VMs share; sourced after
# `set -uo pipefail` with BUILD_DIR and a name for the scratch directory:
#   . "$(dirname "$0")/lib.sh" "$1" NAME
# Sets build, vhpc and tmp (/tmp/vhpc-NAME.*, holding a private image store
# and run directory; removed at exit after `vhpc gc --all`); the kernel
# cache is shared with the other VM tests, so it is downloaded once per
# machine.  pass/fail/check count into passes and fails.
build=$(cd "$1" && pwd)
vhpc=$build/src/vhpc/vhpc
tmp=$(mktemp -d "/tmp/vhpc-$2.XXXXXX")
export VHPC_RUN_DIR=$tmp/run VHPC_HOME=$tmp/home VHPC_PROGRESS=0
export VHPC_KERNEL_CACHE=${VHPC_KERNEL_CACHE:-/var/cache/vhpc-test/kernels}
fails=0 passes=0
pass() { echo "PASS $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
check() { # DESCRIPTION COMMAND... : passes when COMMAND succeeds
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
cleanup() {
    "$vhpc" gc --all >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
digest_of() { "$vhpc" image show "$1" | sed -n 's/^digest: *//p'; }
