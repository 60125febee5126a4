#!/usr/bin/env bash
# test_cli_input.sh BUILD_DIR - bad input on the command line and in job
# files gets a clear error and touches nothing (no VM is booted: every case
# is refused before that).
set -uo pipefail
vhpc=$(cd "$1" && pwd)/src/vhpc/vhpc
tmp=$(mktemp -d /tmp/vhpc-cli-input.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
export VHPC_RUN_DIR=$tmp/run VHPC_HOME=$tmp/home VHPC_PROGRESS=0
fails=0 passes=0
pass() { echo "PASS $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
# refused DESCRIPTION PATTERN COMMAND...: COMMAND exits non-zero (and not by a
# signal) and says PATTERN on stderr.
refused() {
    local what=$1 pat=$2
    shift 2
    local out rc
    out=$(timeout 30 "$@" 2>&1 >/dev/null)
    rc=$?
    if [ $rc -ne 0 ] && [ $rc -lt 124 ] && grep -q -- "$pat" <<<"$out"; then
        pass "$what"
    else
        fail "$what (status $rc): $out"
    fi
}

# ---- numbers: whole strings, ranges, no wrap ----
refused "--vms 1x" "--vms 1x: expected a whole number from 1 to 64" "$vhpc" run --vms 1x -- true
refused "--vcpus 2x" "--vcpus 2x: expected a whole number from 1 to 64" \
    "$vhpc" run --vms 1 --vcpus 2x -- true
refused "--mem 4294967360 does not wrap to 64 MiB" "--mem 4294967360: expected a size in MiB" \
    "$vhpc" run --vms 1 --mem 4294967360 -- true
refused "--mem 9223372036854775807G does not overflow" "--mem .*from 64 to" \
    "$vhpc" run --vms 1 --mem 9223372036854775807G -- true
refused "vm start --vms 1x" "--vms 1x" "$vhpc" vm start c1 --vms 1x
refused "vm start --mem 1x" "--mem 1x" "$vhpc" vm start c1 --mem 1x
refused "vm exec --vm 1x" "--vm 1x" "$vhpc" vm exec c1 --vm 1x -- true

# ---- cluster names: never a path outside the run directory ----
mkdir -p "$tmp/run/clusters" "$tmp/precious/vm0"
echo thesis >"$tmp/precious/keep"
echo 7 >"$tmp/precious/job" # what a cluster directory has
for verb in "exec ../../precious -- true" "console ../../precious" \
    "cp ../../precious vm0:/etc/hosts $tmp/out" "stop ../../precious"; do
    # shellcheck disable=SC2086
    refused "vm $verb refuses the name" "bad cluster name" "$vhpc" vm $verb
done
[ -f "$tmp/precious/keep" ] && pass "... and deletes nothing" || fail "precious was removed"
refused "vm start a/b" "bad cluster name" "$vhpc" vm start a/b
refused "run --name ../x" "bad cluster name" "$vhpc" run --vms 1 --name ../x -- true

# ---- job files ----
# Not a regular file (with a memory limit: the old code read /dev/zero until
# memory ran out; ASan reserves terabytes of address space, so not there).
limit="ulimit -v 1000000;"
case $(ldd "$vhpc" 2>/dev/null) in *libasan*) limit= ;; esac # no pipe: grep -q + pipefail races
refused "--job /dev/zero" "not a regular file" bash -c "$limit exec '$vhpc' run --job /dev/zero"
mkfifo "$tmp/fifo"
refused "--job FIFO" "not a regular file" "$vhpc" run --job "$tmp/fifo"
{ for i in $(seq 3000); do echo "# padding line $i of a job file that is too big"; done; echo "vms 1"; } >"$tmp/big"
refused "--job of more than 64 KiB" "larger than 64 KiB" "$vhpc" run --job "$tmp/big"
printf 'vms 1\0\n' >"$tmp/nul"
refused "--job with NUL bytes" "not a text file" "$vhpc" run --job "$tmp/nul"
# A file that is no job file: its content is never echoed.
echo "API_TOKEN=hunter2-secret" >"$tmp/secret"
out=$("$vhpc" run --job "$tmp/secret" 2>&1)
rc=$?
if [ $rc -ne 0 ] && grep -q "secret:1: .*expected KEY VALUE" <<<"$out" && ! grep -q hunter2 <<<"$out"; then
    pass "a non-job file: line number and keywords, no content"
else
    fail "non-job file (status $rc): $out"
fi
# A job file with a typo after good lines: a short printable excerpt.
printf 'vms 1\nmem 128\nvcpu 2\n' >"$tmp/typo"
refused "a typo in a job file names line 3 and shows it" "typo:3: 'vcpu 2': expected" \
    "$vhpc" run --job "$tmp/typo"
printf 'vms 1x\n' >"$tmp/badnum"
refused "a job file's numbers are parsed strictly too" "--vms 1x" "$vhpc" run --job "$tmp/badnum"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
