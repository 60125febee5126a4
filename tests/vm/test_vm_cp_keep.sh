#!/usr/bin/env bash
# test_vm_cp_keep.sh BUILD_DIR - `vhpc vm cp` from a guest never loses the
# host file it replaces: a failed copy (no such file in the guest) leaves
# the old file as it was and no temporary file behind; a good copy replaces
# it whole and keeps its mode.  Boots one small TCG VM in a private network
# namespace (the test re-executes itself under `unshare -n`).
set -uo pipefail
if [ -z "${VHPC_TEST_NETNS:-}" ]; then
    exec unshare -n env VHPC_TEST_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
. "$(dirname "$0")/lib.sh" "$1" vmcp

"$vhpc" image build >/dev/null || { echo "FAIL image build"; exit 1; }
"$vhpc" vm start cp1 --mem 128 >/dev/null || { echo "FAIL vm start"; exit 1; }
mkdir "$tmp/out"
printf 'my thesis\n' >"$tmp/out/thesis.txt"
chmod 640 "$tmp/out/thesis.txt"

out=$("$vhpc" vm cp cp1 vm0:/no/such/file "$tmp/out/thesis.txt" 2>&1)
rc=$?
check "a failed copy fails" [ $rc -ne 0 ]
check "... says which file and that the old one is unchanged" \
    grep -q "/no/such/file.*thesis.txt is unchanged" <<<"$out"
check "... and keeps the old file" [ "$(cat "$tmp/out/thesis.txt")" = "my thesis" ]
check "... with its mode" [ "$(stat -c %a "$tmp/out/thesis.txt")" = 640 ]
check "... and leaves no temporary file" [ "$(ls -A "$tmp/out")" = thesis.txt ]

"$vhpc" vm cp cp1 vm0:/etc/hosts "$tmp/out/thesis.txt" >/dev/null 2>&1
check "a good copy replaces the file" grep -q localhost "$tmp/out/thesis.txt"
check "... keeping its mode" [ "$(stat -c %a "$tmp/out/thesis.txt")" = 640 ]
(umask 022 && "$vhpc" vm cp cp1 vm0:/etc/hosts "$tmp/out/new" >/dev/null 2>&1)
check "a new file gets 0666 less the umask" [ "$(stat -c %a "$tmp/out/new" 2>&1)" = 644 ]
check "no temporary file is left" [ "$(ls -A "$tmp/out" | sort | tr '\n' ' ')" = "new thesis.txt " ]
out=$("$vhpc" vm cp cp1 vm0:/etc/hosts "$tmp/out" 2>&1)
check "a directory as destination is refused" grep -q "is a directory" <<<"$out"

"$vhpc" vm stop cp1 >/dev/null
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
