#!/usr/bin/env bash
# run_images_mgmt.sh BUILD_DIR - the ICS'06 image-management table, here:
# a minimal image and a full Debian image with the same software (Open MPI
# and the provider ivc, both --with-mpi), each measured in this run:
#   image size          all blobs (kernel + initramfs [+ squashfs root])
#   boot                QEMU start -> agent ready (median of BENCH_BOOT_RUNS)
#   idle memory         MemTotal - MemAvailable in the guest, settled
#   shutdown            vhpc run's teardown: poweroff request -> QEMU gone
# Last line: RESULT full_over_min_boot=.. min_mem_mib=.. full_mem_mib=..
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
vhpc=$build/src/vhpc/vhpc
runs=${BENCH_BOOT_RUNS:-5}
tmp=$(mktemp -d /tmp/vhpc-bench-images.XXXXXX)
export VHPC_RUN_DIR=$tmp/run VHPC_PROGRESS=0
# The user's store (so the full image is built once per machine); the
# packages are cached like the tests' when that cache exists.
[ -d /var/cache/vhpc-test/debs ] && export VHPC_DEB_CACHE=${VHPC_DEB_CACHE:-/var/cache/vhpc-test/debs}
trap '"$vhpc" gc --all >/dev/null 2>&1; rm -rf "$tmp"' EXIT

"$vhpc" image build --name bench-min --with-mpi >/dev/null
"$vhpc" image build --full --name bench-full --with-mpi >/dev/null

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/^ *$1 *\([0-9.]*\) s$/\1/p" | head -n1; }

declare -A size boot mem down
for kind in min full; do
    img=bench-$kind
    size[$kind]=$("$vhpc" image show "$img" | sed -n 's/^size: *\([0-9.]*\) MB/\1/p')
    boots=() downs=()
    for _ in $(seq 1 "$runs"); do
        out=$("$vhpc" run --vms 1 --image "$img" -- true 2>&1)
        boots+=("$(field 'QEMU start -> agent ready vm0' <<<"$out")")
        downs+=("$(field teardown <<<"$out")")
    done
    boot[$kind]=$(printf '%s\n' "${boots[@]}" | median)
    down[$kind]=$(printf '%s\n' "${downs[@]}" | median)
    "$vhpc" vm start "idle-$kind" --image "$img" >/dev/null
    sleep 5 # let the guest settle (systemd starts its timers)
    mem[$kind]=$("$vhpc" vm exec "idle-$kind" -- sh -c "awk '/MemTotal/ {t=\$2} /MemAvailable/ {a=\$2} END {printf \"%.1f\", (t-a)/1024}' /proc/meminfo")
    "$vhpc" vm stop "idle-$kind" >/dev/null
done

accel=$("$vhpc" run --vms 1 --image bench-min -- true 2>&1 | sed -n 's/.*MiB, \([a-z]*\), image.*/\1/p')
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
fb=$(ratio "${boot[full]}" "${boot[min]}")
printf '\nimages with Open MPI + provider ivc (%s, 1 vCPU, 256 MiB; medians of %s runs)\n' "$accel" "$runs"
printf '  %-34s %12s %12s %8s\n' "" "minimal" "full Debian" "full/min"
printf '  %-34s %9s MB %9s MB %8s\n' "image size" "${size[min]}" "${size[full]}" "$(ratio "${size[full]}" "${size[min]}")"
printf '  %-34s %10s s %10s s %8s\n' "boot: QEMU start -> agent ready" "${boot[min]}" "${boot[full]}" "$fb"
printf '  %-34s %8s MiB %8s MiB %8s\n' "guest memory at idle" "${mem[min]}" "${mem[full]}" "$(ratio "${mem[full]}" "${mem[min]}")"
printf '  %-34s %10s s %10s s %8s\n' "shutdown (poweroff -> QEMU gone)" "${down[min]}" "${down[full]}" "$(ratio "${down[full]}" "${down[min]}")"
printf '  goal: the minimal image boots >= 5x faster than a full one (ICS'"'"'06: 4.5x)\n\n'
echo "RESULT full_over_min_boot=$fb min_mem_mib=${mem[min]} full_mem_mib=${mem[full]}"
