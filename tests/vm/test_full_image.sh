#!/usr/bin/env bash
# test_full_image.sh BUILD_DIR - full images: a Debian 12 root file system by
# debootstrap (minbase + systemd + `hello`), booted under vhpc run with its
# own systemd and vhpc-agent as a service; a command from the package runs;
# each VM has its own copy-on-write view (a write in one is not seen in the
# other, and the stored base is unchanged); the same inputs give the same
# digest without building; another package gives a new version; and
# `vhpc run --require hello --build-missing` finds (or builds) an image;
# and an image --with-mpi, published by root, runs our MPI suite across 2
# VMs over IVC as a normal user (made here), the way users run MPI jobs.
# Downloaded packages are cached in /var/cache/vhpc-test/debs between runs.
# Runs in a mount namespace of its own, where /dev/net/tun is a node of the
# test's, mode 0666 as `vhpc setup` makes it, so the host's stays as it is.
set -uo pipefail
if [ -z "${VHPC_TEST_MNTNS:-}" ]; then
    exec env VHPC_TEST_MNTNS=1 unshare --mount -- "$0" "$@"
fi
. "$(dirname "$0")/lib.sh" "$1" fulltest
export VHPC_DEB_CACHE=${VHPC_DEB_CACHE:-/var/cache/vhpc-test/debs}
mpiuser=vhpcm$$
cleanup_full() {
    pkill -KILL -u "$mpiuser" 2>/dev/null && sleep 0.2
    userdel "$mpiuser" >/dev/null 2>&1
    umount /dev/net/tun "$tmp/dev" 2>/dev/null
    cleanup
}
trap cleanup_full EXIT
chmod 711 "$tmp"
mkdir "$tmp/dev" && mount -t tmpfs -o size=64k,mode=755 vhpc-test-dev "$tmp/dev" &&
    mknod -m 666 "$tmp/dev/tun" c 10 200 && mount --bind "$tmp/dev/tun" /dev/net/tun ||
    { echo "FAIL a private /dev/net/tun"; exit 1; }
useradd -M -d "$tmp/mpiuser" -s /bin/sh "$mpiuser" && mkdir -m 700 "$tmp/mpiuser" "$tmp/mpiuser/run" &&
    chown -R "$mpiuser:" "$tmp/mpiuser" || { echo "FAIL useradd"; exit 1; }
# The user's own store and run directory are theirs; root's test store is
# their system store.
asuser() { runuser -u "$mpiuser" -- env -u VHPC_HOME -u VHPC_RUN_DIR -u VHPC_KERNEL_CACHE \
    HOME="$tmp/mpiuser" XDG_RUNTIME_DIR="$tmp/mpiuser/run" VHPC_SYSTEM_HOME="$VHPC_HOME" "$@"; }

out=$("$vhpc" image build --full --name deb --package hello 2>&1)
rc=$?
echo "$out" | tail -5
[ $rc -eq 0 ] || { echo "FAIL build --full"; echo "0 passed, 1 failed"; exit 1; }
d1=$(digest_of deb)
show=$("$vhpc" image show deb)
grep -q "^kind: *full" <<<"$show" && grep -q "rootfs" <<<"$show" &&
    grep -q "^os: *debian-12" <<<"$show" && pass "a full image: kind, os, a rootfs blob" ||
    fail "show: $show"
"$vhpc" image match --require hello --require systemd --require lib:libc.so.6 >/dev/null 2>&1 &&
    pass "its packages and libraries are in the manifest" || fail "match hello/systemd/libc"

# Boot two VMs; each writes a file, then looks for the other's.
out=$("$vhpc" run --vms 2 --image deb --each -- sh -c \
    'hello; echo "pid1=$(cat /proc/1/comm)"; echo mine > /etc/written-by-$(hostname); sleep 1; ls /etc | grep -c written-by' 2>&1)
rc=$?
echo "$out" | grep -v "^  " | head -20
[ $rc -eq 0 ] && grep -q "^\[vm0\] Hello, world!" <<<"$out" && grep -q "^\[vm1\] Hello, world!" <<<"$out" &&
    pass "a command from the package runs in both VMs" || fail "hello (rc $rc): $out"
grep -q "^\[vm0\] pid1=systemd" <<<"$out" && pass "the image boots its own systemd" || fail "pid 1: $out"
[ "$(grep -c '^\[vm[01]\] 1$' <<<"$out")" = 2 ] &&
    pass "copy-on-write views: each VM sees only its own write" || fail "COW: $out"
out=$("$vhpc" run --vms 1 --image deb -- sh -c 'ls /etc | grep -c written-by' 2>/dev/null)
[ "$out" = 0 ] && pass "the stored base is unchanged by a run" || fail "base changed: $out"
out=$("$vhpc" run --vms 1 --image deb -- sh -c 'exit 7' 2>/dev/null)
[ $? -eq 7 ] && pass "exit status" || fail "exit status"

# Same inputs: the same digest, nothing built; another package: version 2.
t0=$(date +%s)
out=$("$vhpc" image build --full --name deb --package hello 2>&1)
[ "$(digest_of deb)" = "$d1" ] && [ "$("$vhpc" image list | grep -c '^deb:')" = 1 ] &&
    pass "same inputs, same digest, no new version" || fail "rebuild: $out"
grep -q "debootstrap" <<<"$out" && fail "the rebuild ran debootstrap again: $out" ||
    pass "... found without building"

# --build-missing: a requirement no image meets is built, then chosen.
out=$("$vhpc" run --vms 1 --require 'hello>=2.10' --require lib:libc.so.6 --require cowsay \
    --build-missing -- /usr/games/cowsay moo 2>&1)
rc=$?
echo "$out" | grep -v "^debootstrap\|^squashfs" | head -20
[ $rc -eq 0 ] && grep -q "moo" <<<"$out" && grep -q "meets all 3 requirements" <<<"$out" &&
    pass "--build-missing builds an image with the package and runs it" || fail "build-missing (rc $rc): $out"
# A changed input (more packages) under the same name: version 2, the old
# one kept (the inputs are those --build-missing used: no second build).
"$vhpc" image build --full --name deb --package hello --package libc6 --package cowsay >/dev/null 2>&1
"$vhpc" image list
[ "$(digest_of deb:1)" = "$d1" ] && [ -n "$(digest_of deb:2)" ] && [ "$(digest_of deb:2)" != "$d1" ] &&
    pass "a changed input: deb:2, deb:1 kept" || fail "versions"

# MPI across full-image VMs: --with-mpi installs Debian's Open MPI and our
# provider as in minimal images; our MPI suite over IVC between 2 VMs.
if [ -x "$build/tests/mpi_suite" ]; then
    extra=()
    if [ -n "${VHPC_PRELOAD:-}" ]; then
        # ASan build: the suite and the provider are sanitized, so the
        # runtimes go in too (their Debian packages), preloaded into every
        # guest process.
        pre=
        for l in ${VHPC_PRELOAD//:/ }; do
            l=$(readlink -f "$l")
            extra+=(--package "$(dpkg -S "$l" | head -1 | cut -d: -f1)")
            pre=$pre${pre:+:}$(basename "$l")
        done
        extra+=(--env "LD_PRELOAD=$pre" --env ASAN_OPTIONS=detect_leaks=0)
    fi
    out=$("$vhpc" image build --full --name debmpi --with-mpi --public \
        --file "$build/tests/mpi_suite=/usr/local/bin/mpi_suite" "${extra[@]}" 2>&1)
    rc=$?
    echo "$out" | tail -2
    out=$("$vhpc" image match --require 'openmpi-bin>=4.1' --require lib:libfabric.so.1 2>&1)
    grep -q "debmpi" <<<"$out" && pass "--with-mpi: Open MPI and libfabric in the manifest" ||
        fail "--with-mpi manifest (build rc $rc): $out"
    out=$(asuser "$vhpc" run --vms 2 --image debmpi -- mpirun -np 2 -x FI_LOG_LEVEL=info -x FI_LOG_PROV=ivc \
        /usr/local/bin/mpi_suite 2>&1)
    rc=$?
    ups=$(grep -c "IVC channel .* up" <<<"$out")
    [ $rc -eq 0 ] && grep -qE "^[0-9]+ passed, 0 failed" <<<"$out" && [ "$ups" -ge 2 ] &&
        pass "as user $mpiuser, MPI suite across 2 full-image VMs over IVC: $(grep -E '^[0-9]+ passed' <<<"$out") ($ups channel ends up)" ||
        {
            fail "$mpiuser's MPI suite across 2 full-image VMs (rc $rc, $ups channels): $(grep -E '^FAIL|passed|rror|vhpc:' <<<"$out" | head -10)"
            # All of it: what failed once in 15 runs must be readable the next time.
            echo "--- the run's output (last 80 lines, libfabric info lines left out):"
            grep -v '^libfabric:.*<info>' <<<"$out" | tail -n 80
        }
    # (gone once init has reaped them: vhpc's helpers are init's children)
    for _ in $(seq 1 50); do [ -z "$(pgrep -u "$mpiuser")" ] && break; sleep 0.1; done
    [ -z "$(pgrep -u "$mpiuser")" ] && [ -z "$(ls -A "$tmp/mpiuser/run/vhpc/clusters" 2>/dev/null)" ] &&
        pass "nothing of $mpiuser's run is left" || fail "left of $mpiuser's run: $(pgrep -a -u "$mpiuser")"
fi

echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
