#!/usr/bin/env bash
# test_image_cli.sh BUILD_DIR - the image manager as a user drives it:
# vhpc image build/list/show/tag/rm/gc/match, same inputs -> same digest,
# a changed input -> a new version with the old one kept, vhpc run
# --require choosing an image and saying why (one small TCG VM), a job
# file, and wrong input getting clear errors.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$1" imgcli

# ---- build: same inputs, same digest; a changed input, a new version ----
mkdir -p "$tmp/app"
echo "v1" >"$tmp/app/data"
head -c 100000 /dev/urandom >"$tmp/app/blob" # app is bigger than minimal
"$vhpc" image build --name app --add "$tmp/app" >/dev/null || { echo "FAIL build"; exit 1; }
d1=$(digest_of app)
"$vhpc" image build --name app --add "$tmp/app" >/dev/null
check "same inputs, same digest" [ "$(digest_of app)" = "$d1" ]
check "... and no new version" [ "$("$vhpc" image list | grep -c '^app:')" = 1 ]
echo "v2" >"$tmp/app/data"
"$vhpc" image build --name app --add "$tmp/app" >/dev/null
d2=$(digest_of app)
check "a changed input, a new digest" [ -n "$d2" -a "$d2" != "$d1" ]
check "as version 2, version 1 kept" [ "$(digest_of app:1)" = "$d1" -a "$(digest_of app:2)" = "$d2" ]
out=$("$vhpc" image list)
echo "$out"
check "list shows both versions with kind and OS" \
    grep -q "^app:1 .*minimal *debian-12" <<<"$out"
out=$("$vhpc" image show app)
check "show: kind, os, kernel, packages, blobs" \
    grep -q "^kind: *minimal" <<<"$out"
grep -q "^packages: *[1-9]" <<<"$out" && grep -q "initrd" <<<"$out" || fail "show lacks packages/blobs: $out"
check "show --json is the manifest" sh -c "'$vhpc' image show --json app | grep -q '\"inputs_digest\"'"

# ---- tag, rm, gc ----
"$vhpc" image tag app:1 stable >/dev/null
check "tag: another name, same digest" [ "$(digest_of stable)" = "$d1" ]
"$vhpc" image rm app:1 >/dev/null
check "rm app:1: stable still has the content" [ "$(digest_of stable)" = "$d1" ]
out=$("$vhpc" image rm stable)
check "rm the last name frees the content" grep -q "freed" <<<"$out"
check "app:1 is gone" sh -c "! '$vhpc' image show app:1 2>/dev/null"
out=$("$vhpc" image gc)
check "gc has nothing left to do" grep -q "removed 0 images, 0 blobs" <<<"$out"

# ---- matching ----
# minimal (busybox) < app:2 (busybox + 100 kB) < tools (+ sha256sum and glibc)
"$vhpc" image build >/dev/null
"$vhpc" image build --name tools --add /usr/bin/sha256sum >/dev/null
out=$("$vhpc" image match --require os=debian-12 --require 'busybox>=1:1.30' 2>&1)
echo "$out"
check "match: three fit, the smallest (minimal) is chosen and why" \
    grep -q "image minimal:1 .* meets all 2 requirements" <<<"$out"
grep -q "busybox 1:1[.0-9]*-.* >= 1:1.30" <<<"$out" && grep -q "chosen over 2 others" <<<"$out" ||
    fail "match does not say why: $out"
out=$("$vhpc" image match --require 'coreutils>=9' --require lib:libc.so.6 2>&1)
echo "$out"
check "match: only tools has coreutils and glibc" grep -q "image tools:1 .* meets all 2" <<<"$out"
out=$("$vhpc" image match --require 'libc6>=99' --require lib:libfftw3.so.3 2>&1)
rc=$?
echo "$out"
check "unsatisfiable: non-zero, each candidate's misses" [ $rc -ne 0 ]
grep -q "does not satisfy >=99" <<<"$out" && grep -q "no library libfftw3.so.3" <<<"$out" &&
    grep -q -- "--build-missing" <<<"$out" || fail "unsatisfiable report: $out"

# ---- vhpc run --require, and a job file (one small VM each) ----
out=$("$vhpc" run --vms 1 --mem 128 --require os=debian-12 --require lib:libc.so.6 -- sha256sum /etc/hosts 2>&1)
echo "$out" | tail -12
grep -q "image tools:1 .* meets all 2 requirements" <<<"$out" && grep -q "^[0-9a-f]\{64\}  /etc/hosts" <<<"$out" &&
    pass "vhpc run --require picks the image, says why, runs" || fail "run --require: $out"
cat >"$tmp/job" <<'EOF'
# a job file: the same options, one per line
vms 1
mem 128
require lib:libc.so.6
command echo job-ran-on-$(hostname) $(echo x | sha256sum)
EOF
out=$("$vhpc" run --job "$tmp/job" 2>&1)
grep -q "job-ran-on-vm0" <<<"$out" && pass "a job file" || fail "job file: $out"

# ---- wrong input ----
expect_error() { # DESCRIPTION PATTERN COMMAND...
    local what=$1 pat=$2
    shift 2
    local o
    o=$("$@" 2>&1)
    local rc=$?
    if [ $rc -ne 0 ] && grep -q -- "$pat" <<<"$o"; then pass "$what: $o"; else fail "$what (rc $rc): $o"; fi
}
expect_error "unknown image names what exists" "the store has: app, minimal, tools" "$vhpc" image show nope
expect_error "unknown version" "app has app:2" "$vhpc" image show app:9
expect_error "bad requirement" "expected KEY\[OP VALUE\]" "$vhpc" image match --require '>=4'
expect_error "bad version" "not a version" "$vhpc" run --vms 1 --require 'openmpi>=x' -- true
expect_error "no package to build" "no package 'nosuchpkg'" "$vhpc" run --vms 1 --require nosuchpkg --build-missing -- true
expect_error "named image that misses a requirement" "does not meet 'openmpi'" \
    "$vhpc" run --vms 1 --image minimal --require openmpi -- true
printf 'vms 1\nbogus 2\n' >"$tmp/badjob"
expect_error "bad job file line" "badjob:2: 'bogus 2'" "$vhpc" run --job "$tmp/badjob"
expect_error "missing job file" "job file" "$vhpc" run --job "$tmp/nonexistent"
expect_error "bad tag name" "invalid image name" "$vhpc" image tag app '../x'
expect_error "unknown subcommand" "unknown subcommand" "$vhpc" image frobnicate
check "no build leftovers in the store" [ -z "$(ls "$VHPC_HOME/store/tmp")" ]

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
