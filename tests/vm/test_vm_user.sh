#!/usr/bin/env bash
# test_vm_user.sh BUILD_DIR - vhpc as normal users (issue 9), two of them
# (made here, removed at exit) on one host, each attacking the other's job.
# Runs in a mount and network namespace of its own: /dev/net/tun is a node
# of the test's own, mode 0600 as on this host, so that `vhpc setup` (which
# makes it 0666) changes nothing outside, and the files setup writes under
# /etc land in scratch directories.  The users' run directories are the
# default /tmp/vhpc-UID, removed at exit.
#   - an unprepared host: a clear error naming `vhpc setup`, nothing left;
#   - root's one `vhpc setup`, then each user starts VMs with no sudo: QEMU
#     runs as that user, with no capability, in the job's own user and
#     network namespace; a user without an image of their own boots root's
#     (the system store);
#   - each user against the other's job: cannot list, exec in, stop or
#     enter it, reach its VMs (from the host or from their own VMs), read
#     its store or take its locks; a run directory someone else made is
#     refused; a failed run leaves nothing; vm stop leaves no process.
set -uo pipefail
if [ -z "${VHPC_TEST_NS:-}" ]; then
    exec env VHPC_TEST_NS=1 unshare --mount --net -- "$0" "$@"
fi
ip link set lo up
. "$(dirname "$0")/lib.sh" "$1" user
chmod 755 "$tmp"
mkdir "$tmp/dev" && mount -t tmpfs -o size=64k,mode=755 vhpc-test-dev "$tmp/dev" &&
    mknod -m 600 "$tmp/dev/tun" c 10 200 && mount --bind "$tmp/dev/tun" /dev/net/tun ||
    { echo "FAIL a private /dev/net/tun"; exit 1; }
for d in /etc/udev/rules.d /etc/sysctl.d; do
    [ -d "$d" ] && mkdir -p "$tmp/etc$d" && mount --bind "$tmp/etc$d" "$d"
done
sys=$tmp/system # the system store root keeps; its kernels are the test cache
mkdir -p "$sys" "$VHPC_KERNEL_CACHE" && ln -s "$VHPC_KERNEL_CACHE" "$sys/kernels"
export VHPC_SYSTEM_HOME=$sys
unset VHPC_HOME # root's store is the system store here
ua=vua$$ ub=vub$$
cleanup_users() {
    for u in "$ua" "$ub"; do
        id "$u" >/dev/null 2>&1 || continue
        pkill -KILL -u "$u" 2>/dev/null
        sleep 0.2
        rm -rf "/tmp/vhpc-$(id -u "$u")"
        userdel -r "$u" >/dev/null 2>&1
    done
    umount /dev/net/tun "$tmp/dev" 2>/dev/null
    cleanup
}
trap cleanup_users EXIT
useradd -m -d "$tmp/home-a" -s /bin/sh "$ua" && useradd -m -d "$tmp/home-b" -s /bin/sh "$ub" ||
    { echo "FAIL useradd"; exit 1; }
ida=$(id -u "$ua") idb=$(id -u "$ub")
# As the user, with a user's PATH (no /usr/sbin, where ip and nft are).
as() {
    local u=$1
    shift
    runuser -u "$u" -- env -u VHPC_RUN_DIR -u VHPC_HOME -u VHPC_KERNEL_CACHE PATH=/usr/bin:/bin \
        VHPC_SYSTEM_HOME="$sys" VHPC_PROGRESS=0 "$@"
}
procs() { pgrep -u "$1" | wc -l; }
gone() { [ ! -e "/proc/$1" ] || grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; } # zombies too

# ---- an unprepared host ----
out=$(as "$ua" "$vhpc" run --vms 1 -- true 2>&1); st=$?
[ $st -ne 0 ] && grep -q "vhpc setup" <<<"$out" && grep -q "/dev/net/tun" <<<"$out" &&
    [ ! -e "/tmp/vhpc-$ida" ] && [ "$(procs "$ua")" = 0 ] &&
    pass "unprepared host: '$out', nothing left" || fail "unprepared host: status $st '$out'"
out=$(as "$ua" "$vhpc" setup 2>&1); st=$?
[ $st -eq 2 ] && grep -q "for root" <<<"$out" && pass "a user's vhpc setup is refused: $out" ||
    fail "a user's vhpc setup: status $st '$out'"
out=$(as "$ua" "$vhpc" setup --check 2>&1); st=$?
[ $st -eq 1 ] && grep -q "MISSING.*/dev/net/tun" <<<"$out" && pass "vhpc setup --check names /dev/net/tun" ||
    fail "setup --check before setup: status $st '$out'"

# ---- root prepares the host once ----
out=$("$vhpc" setup 2>&1); st=$?
[ $st -eq 0 ] && [ "$(stat -c %a /dev/net/tun)" = 666 ] && pass "root's vhpc setup" ||
    fail "vhpc setup: status $st '$out'"
check "after it, a user's vhpc setup --check passes" as "$ua" "$vhpc" setup --check
"$vhpc" image build --public >/dev/null || fail "root's image build --public"

# A run directory made by someone else is refused.
as "$ub" mkdir -m 777 "/tmp/vhpc-$ida"
out=$(as "$ua" "$vhpc" vm start ajob 2>&1); st=$?
[ $st -ne 0 ] && grep -q "not a directory of yours" <<<"$out" && [ "$(procs "$ua")" = 0 ] &&
    pass "a run directory another user made is refused: $out" || fail "squatted run directory: status $st '$out'"
rm -rf "/tmp/vhpc-$ida"

# ---- each user's job ----
check "$ua builds an image in their own store" as "$ua" "$vhpc" image build
out=$(as "$ua" "$vhpc" vm start ajob --vms 2 2>&1) || fail "$ua's vm start: $out"
out=$(as "$ub" "$vhpc" vm start bjob 2>&1) || fail "$ub's vm start: $out"
[ -z "$(ls "$tmp/home-b/.local/share/vhpc/store/blobs" 2>/dev/null)" ] && grep -q ready <<<"$out" &&
    pass "$ub, with no image of their own, boots root's (the system store)" || fail "$ub's boot from the system store: $out"
out=$(as "$ub" "$vhpc" image list 2>&1)
grep -A1 -- "-- the system store" <<<"$out" | grep -q "^minimal:1 " && pass "$ub's image list shows the system store's minimal" ||
    fail "$ub's image list: $out"
ca=/tmp/vhpc-$ida/clusters/ajob cb=/tmp/vhpc-$idb/clusters/bjob
ka=$(cat "$ca/netns.pid") kb=$(cat "$cb/netns.pid") qa=$(cat "$ca/vm0/qemu.pid")
st=$(cat "/proc/$qa/status")
caps=$(awk '/^Cap(Inh|Prm|Eff|Bnd|Amb):/ {print $2}' <<<"$st" | sort -u)
[ "$(stat -c %u "/proc/$qa")" = "$ida" ] && [ "$caps" = 0000000000000000 ] &&
    grep -q '^NoNewPrivs:[[:space:]]*1' <<<"$st" && grep -q '^Seccomp:[[:space:]]*2' <<<"$st" &&
    pass "$ua's QEMU runs as $ua, with no capabilities, no_new_privs and seccomp" ||
    fail "$ua's QEMU: uid $(stat -c %u "/proc/$qa") $(grep -E '^(Cap|NoNewPrivs|Seccomp)' <<<"$st" | tr '\n' ' ')"
[ "$(stat -c %u "/proc/$ka")" = "$ida" ] && [ "$(readlink "/proc/$ka/ns/user")" != "$(readlink /proc/self/ns/user)" ] &&
    [ "$(readlink "/proc/$ka/ns/net")" != "$(readlink "/proc/$kb/ns/net")" ] &&
    [ "$(readlink "/proc/$ka/ns/net")" != "$(readlink /proc/self/ns/net)" ] &&
    pass "each job has its own user and network namespace, owned by its user" || fail "the jobs' namespaces"
br=$(cat "$ca/bridge")
check "$ua's bridge is not in the host's network namespace" sh -c "! ip link show '$br' >/dev/null 2>&1"
out=$(as "$ua" "$vhpc" vm exec ajob --vm 0 -- vhpc-rsh vm1 'hostname; id -u' 2>&1); st=$?
[ "$out" = $'vm1\n0' ] && [ $st -eq 0 ] && pass "$ua is root in their VMs; vhpc-rsh between them works" ||
    fail "$ua's vhpc-rsh: status $st '$out'"

as "$ua" "$vhpc" vm exec ajob --vm 1 -- sh -c 'hostname > /tmp/h' &&
    as "$ua" "$vhpc" vm cp ajob vm1:/tmp/h "$tmp/home-a/h" && [ "$(cat "$tmp/home-a/h")" = vm1 ] &&
    [ "$(stat -c %u "$tmp/home-a/h")" = "$ida" ] && pass "$ua's vm cp" || fail "$ua's vm cp"

# ---- each against the other ----
for pair in "$ub:$ua:ajob:$ka:/tmp/vhpc-$ida" "$ua:$ub:bjob:$kb:/tmp/vhpc-$idb"; do
    IFS=: read -r me them job keeper rundir <<<"$pair"
    out=$(as "$me" "$vhpc" vm list 2>&1)
    ! grep -q "$job" <<<"$out" && pass "$me's vm list does not show $them's $job" || fail "$me's vm list: $out"
    out=$(as "$me" env VHPC_RUN_DIR="$rundir" "$vhpc" vm exec "$job" -- id 2>&1); st=$?
    [ $st -ne 0 ] && grep -q "cannot read its state" <<<"$out" && ! grep -q "uid=" <<<"$out" &&
        pass "$me cannot exec in $them's $job: $out" || fail "$me's vm exec $job: status $st '$out'"
    out=$(as "$me" env VHPC_RUN_DIR="$rundir" "$vhpc" vm stop "$job" 2>&1); st=$?
    [ $st -ne 0 ] && kill -0 "$keeper" 2>/dev/null && pass "$me cannot stop $them's $job: $out" ||
        fail "$me's vm stop $job: status $st '$out'"
    out=$(as "$me" "$vhpc" vm stop "../../vhpc-$(id -u "$them")/clusters/$job" 2>&1); st=$?
    [ $st -ne 0 ] && [ -d "$rundir/clusters/$job" ] && pass "$me's vm stop ../../... is refused: $out" ||
        fail "vm stop with a path: status $st '$out'"
    check "$me cannot enter $them's namespaces" sh -c "! runuser -u '$me' -- nsenter -t '$keeper' -U -n true 2>/dev/null"
    check "$me cannot reach $them's agent sockets" sh -c "! runuser -u '$me' -- test -e '$rundir/clusters/$job/vm0/agent.sock'"
    out=$(as "$me" "$build/src/agent/vhpc-rsh" 10.213.1.10 id 2>&1); st=$?
    [ $st -ne 0 ] && ! grep -q "uid=" <<<"$out" && pass "$me's vhpc-rsh from the host reaches no VM: $out" ||
        fail "$me's vhpc-rsh from the host: status $st '$out'"
done
# The stores: private to their user, locks included (items 7 and 8).
sa=$tmp/home-a/.local/share/vhpc
out=$(as "$ub" env VHPC_HOME="$sa" "$vhpc" image list 2>&1); st=$?
[ $st -ne 0 ] && ! grep -q minimal <<<"$out" && pass "$ub cannot list $ua's store: $out" ||
    fail "$ub lists $ua's store: status $st '$out'"
check "$ub cannot read $ua's blobs" sh -c "! runuser -u '$ub' -- cat '$sa'/store/blobs/* >/dev/null 2>&1"
check "$ub cannot take $ua's store lock" sh -c "! runuser -u '$ub' -- flock -n '$sa/store/lock' true 2>/dev/null"
check "$ub cannot take $ua's kernel cache lock" sh -c "! runuser -u '$ub' -- flock -n '$sa/kernels/.lock' true 2>/dev/null"
# From inside their own VM, bob reaches nothing of alice's: her vm1's
# address (10.213.1.11) does not exist on his network.
out=$(as "$ub" "$vhpc" vm exec bjob -- sh -c 'nc -w 3 10.213.1.11 7420 </dev/null && echo CONNECTED; echo done' 2>&1)
grep -q done <<<"$out" && ! grep -q CONNECTED <<<"$out" && pass "$ub's VM cannot reach $ua's VMs" ||
    fail "$ub's VM to $ua's: '$out'"

# ---- a failed run leaves nothing; vhpc run works ----
n0=$(procs "$ua")
out=$(as "$ua" "$vhpc" run --vms 1 --vcpus 100000 -- true 2>&1); st=$?
[ $st -ne 0 ] && [ "$(ls "/tmp/vhpc-$ida/clusters")" = ajob ] && [ "$(procs "$ua")" = "$n0" ] &&
    pass "$ua's failed run leaves nothing: $(tail -1 <<<"$out")" ||
    fail "failed run: status $st, clusters $(ls "/tmp/vhpc-$ida/clusters" | tr '\n' ' '), $(procs "$ua") processes (was $n0): $out"
out=$(as "$ua" "$vhpc" run --vms 2 -- vhpc-rsh vm1 hostname 2>/dev/null); st=$?
[ $st -eq 0 ] && [ "$out" = vm1 ] && pass "$ua's vhpc run --vms 2" || fail "$ua's vhpc run: status $st '$out'"

# ---- stopping leaves no process of either user ----
# A teardown says what it could not remove, keeps the record for vhpc gc,
# and stops everything else: here a directory root planted in the state.
mkdir "$ca/vm0/planted" && touch "$ca/vm0/planted/by-root"
out=$(as "$ua" "$vhpc" vm stop ajob 2>&1); st=$?
[ $st -ne 0 ] && grep -q "removing cluster .*planted/by-root: Permission denied" <<<"$out" && [ -d "$ca" ] &&
    gone "$qa" && gone "$ka" &&
    pass "a teardown that cannot remove everything says so and keeps the record: $out" ||
    fail "teardown failure: status $st '$out'"
rm -rf "$ca/vm0/planted"
out=$(as "$ua" "$vhpc" gc --all 2>&1)
grep -q "removed cluster ajob" <<<"$out" && [ ! -e "$ca" ] && pass "vhpc gc then removes it" ||
    fail "gc after a failed teardown: $out"
as "$ub" "$vhpc" vm stop bjob >/dev/null || fail "$ub's vm stop"
for _ in $(seq 1 50); do [ "$(procs "$ua")$(procs "$ub")" = 00 ] && break; sleep 0.1; done
[ "$(procs "$ua")$(procs "$ub")" = 00 ] && [ -z "$(ls -A "/tmp/vhpc-$ida/clusters")$(ls -A "/tmp/vhpc-$idb/clusters")" ] &&
    pass "vm stop leaves no process and no state of either user" ||
    fail "left after vm stop: $(pgrep -a -u "$ua,$ub" | tr '\n' ';') $(ls "/tmp/vhpc-$ida/clusters" "/tmp/vhpc-$idb/clusters")"
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
