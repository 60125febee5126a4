#!/usr/bin/env bash
# test_store_perms.sh BUILD_DIR - the image store between users (issue 9):
# what root builds is private unless --public, nobody else can flock the
# store's or the kernel cache's lock, a busy lock is waited for a bounded
# time with a message that names the file and the pid, a user's own store
# is ~/.local/share/vhpc (0700) and finds the kernel in the system cache,
# and a damaged index makes list and gc fail with nothing deleted.
# Runs as root; creates (and removes) an unprivileged user.
set -uo pipefail
build=$(cd "$1" && pwd)
vhpc=$build/src/vhpc/vhpc
tmp=$(mktemp -d /tmp/vhpc-store-perms.XXXXXX)
user=vhpct$$
holder=
cleanup() {
    [ -n "$holder" ] && kill "$holder" 2>/dev/null && wait "$holder" 2>/dev/null
    userdel "$user" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
useradd -M -r -s /usr/sbin/nologin "$user" || { echo "FAIL useradd"; exit 1; }
# Only the store's own modes may protect it: the scratch directory is open.
chmod 755 "$tmp"
export VHPC_HOME=$tmp/home VHPC_RUN_DIR=$tmp/run VHPC_PROGRESS=0
export VHPC_KERNEL_CACHE=${VHPC_KERNEL_CACHE:-/var/cache/vhpc-test/kernels}
store=$VHPC_HOME/store
fails=0 passes=0
pass() { echo "PASS $*"; passes=$((passes + 1)); }
fail() { echo "FAIL $*"; fails=$((fails + 1)); }
as_user() { runuser -u "$user" -- env -i PATH=/usr/bin:/bin HOME="$tmp/uhome" VHPC_PROGRESS=0 "$@"; }

# ---- root's build with a secret: not readable by another user ----
secret=API_TOKEN=s3cret-$$
"$vhpc" image build --name secret --env "$secret" >/dev/null || { echo "FAIL build"; exit 1; }
n=0 leaked=0
for f in "$store"/blobs/* "$store"/images/*.json; do
    n=$((n + 1))
    as_user cat "$f" >/dev/null 2>&1 && { leaked=1; echo "readable by $user: $f ($(stat -c %a "$f"))"; }
done
[ $n -ge 3 ] && [ $leaked = 0 ] && pass "blobs and manifest of root's build are private" ||
    fail "another user can read the image ($n files)"
as_user grep -rqs "s3cret-$$" "$VHPC_HOME" && fail "the secret is readable" || pass "... the secret is not"

# ---- the lock files: nobody else can flock them ----
as_user flock -n "$store/lock" true 2>/dev/null && fail "$user can flock the store lock" ||
    pass "the store lock cannot be taken by another user"
[ "$(stat -c %a "$store/lock")" = 600 ] && pass "the store lock is 0600" || fail "lock mode $(stat -c %a "$store/lock")"
as_user flock -n "$VHPC_KERNEL_CACHE/.lock" true 2>/dev/null &&
    fail "$user can flock the kernel cache lock" || pass "the kernel cache lock cannot be taken by another user"

# ---- a busy lock: bounded wait, named file and pid ----
# The holder is the sleep itself (fd 9 holds the lock), so killing it frees it.
(exec 9<"$store/lock" && flock 9 && exec sleep 300) &
holder=$!
for _ in $(seq 200); do flock -n "$store/lock" true || break; sleep 0.05; done
out=$(VHPC_LOCK_TIMEOUT=1 timeout 60 "$vhpc" image tag secret other 2>&1)
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "waiting for the store lock $store/lock held by pid [0-9]" <<<"$out" &&
    grep -q "timed out after 1 s waiting for the store lock $store/lock" <<<"$out"; then
    pass "a busy store lock: a message, then a timeout naming the file"
else
    fail "busy lock (status $rc): $out"
fi
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null
holder=
"$vhpc" image tag secret other >/dev/null && pass "... and once free, tag works" || fail "tag after the lock"

# ---- --public: readable by everyone; the private image stays private ----
"$vhpc" image build --name pub --public --env PUBLIC=1 >/dev/null || fail "build --public"
initrd_of() { "$vhpc" image show "$1" | awk '$1 == "initrd" { print $NF }'; }
pubd=$(initrd_of pub) secd=$(initrd_of secret)
if [ -f "$pubd" ] && as_user cat "$pubd" >/dev/null 2>&1 && [ -f "$secd" ] &&
    ! as_user cat "$secd" >/dev/null 2>&1; then
    pass "--public: the published initramfs is readable, the private one is not"
else
    fail "--public ($pubd / $secd)"
fi

# ---- a user's own store ----
mkdir -p "$tmp/uhome" && chown "$user" "$tmp/uhome"
as_user "$vhpc" image list >/dev/null 2>&1
ustore=$tmp/uhome/.local/share/vhpc/store
[ -d "$ustore" ] && [ "$(stat -c %a "$ustore")" = 700 ] && pass "a user's store is ~/.local/share/vhpc, 0700" ||
    fail "user store: $(ls -ld "$ustore" 2>&1)"
out=$(as_user "$vhpc" image build --public 2>&1)
[ $? -eq 2 ] && grep -q "for root" <<<"$out" && pass "--public is for root" || fail "user --public: $out"
# The kernel from the system cache that root keeps (here a copy of the test
# cache as VHPC_SYSTEM_HOME), not fetched again into the user's own cache.
mkdir -p "$tmp/sys/kernels"
if cp -al "$VHPC_KERNEL_CACHE"/. "$tmp/sys/kernels/" 2>/dev/null; then
    rm -f "$tmp/sys/kernels/.lock"
    out=$(as_user VHPC_SYSTEM_HOME="$tmp/sys" "$vhpc" image build --name mine 2>&1)
    if [ $? -eq 0 ] && [ -z "$(ls "$tmp/uhome/.local/share/vhpc/kernels" | grep -v resolved)" ] &&
        [ "$(stat -c %U "$ustore/images/"*.json)" = "$user" ]; then
        pass "a user's build uses the system kernel cache, into the user's store"
    else
        fail "user build: $out"
    fi
else
    echo "SKIP user build with the system kernel cache (cannot hard-link the kernel cache)"
fi

# ---- a damaged index: list and gc fail, gc deletes nothing ----
before=$(ls "$store/blobs" "$store/images" | wc -l)
touch -d '3 hours ago' "$store"/blobs/* "$store"/images/*
echo '{"secret": [{"version": 1, "dig' >"$store/refs.json"
out=$("$vhpc" image list 2>&1)
[ $? -ne 0 ] && grep -q "refs.json is damaged" <<<"$out" && grep -q "cp -p $store/refs.json.prev" <<<"$out" &&
    pass "list: a damaged index is an error naming it and the way back" || fail "list: $out"
out=$("$vhpc" image gc 2>&1)
[ $? -ne 0 ] && [ "$(ls "$store/blobs" "$store/images" | wc -l)" = "$before" ] &&
    pass "gc: refuses, deletes nothing" || fail "gc: $out"
# Root reads any file: an unreadable index is checked in the user's store.
as_user sh -c "echo garbage >'$ustore/refs.json'; chmod 000 '$ustore/refs.json'"
out=$(as_user "$vhpc" image list 2>&1)
[ $? -ne 0 ] && grep -q "refs.json cannot be read (Permission denied)" <<<"$out" &&
    pass "an unreadable index is an error too" || fail "unreadable index: $out"
cp -p "$store/refs.json.prev" "$store/refs.json" && "$vhpc" image list | grep -q "^secret:1" &&
    pass "refs.json.prev restores the index" || fail "restore from refs.json.prev"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
