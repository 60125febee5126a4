#!/usr/bin/env bash
# run_boot.sh BUILD_DIR - how fast a minimal-image VM is ready and how small
# it is: QEMU start -> agent ready (median of 5 single-VM runs), guest memory
# at idle (MemTotal - MemAvailable inside the guest), QEMU's RSS per VM, and
# 1, 2 and 4 VMs booted at once (time until all are ready).  Everything is
# measured in this run; the last line is machine-readable:
#   RESULT boot_s=.. mem_idle_mib=.. qemu_rss_mib=.. boot4_s=.. accel=..
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
vhpc=$build/src/vhpc/vhpc
runs=${BENCH_BOOT_RUNS:-5}
export VHPC_RUN_DIR=$(mktemp -d /tmp/vhpc-bench-boot.XXXXXX)
trap '"$vhpc" gc --all >/dev/null 2>&1; rm -rf "$VHPC_RUN_DIR"' EXIT

"$vhpc" image build >/dev/null
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# "QEMU start -> agent ready vm0    3.265 s" / "boot (all VMs ready)  3.265 s"
field() { sed -n "s/^ *$1 *\([0-9.]*\) s$/\1/p" | head -n1; }

boots=()
for i in $(seq 1 "$runs"); do
    t=$("$vhpc" run --vms 1 -- true 2>&1 | field 'QEMU start -> agent ready vm0')
    boots+=("$t")
done
boot=$(printf '%s\n' "${boots[@]}" | median)
accel=$("$vhpc" run --vms 1 -- true 2>&1 | sed -n 's/.*MiB, \([a-z]*\), image.*/\1/p')

"$vhpc" vm start idle >/dev/null
sleep 2 # let the guest settle
mem=$("$vhpc" vm exec idle -- sh -c "awk '/MemTotal/ {t=\$2} /MemAvailable/ {a=\$2} END {printf \"%.1f\", (t-a)/1024}' /proc/meminfo")
qpid=$(cat "$VHPC_RUN_DIR/clusters/idle/vm0/qemu.pid")
rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$qpid/status")
"$vhpc" vm stop idle >/dev/null

declare -A all
for n in 1 2 4; do
    all[$n]=$("$vhpc" run --vms "$n" -- true 2>&1 | field 'boot (all VMs ready)')
done

printf '\nvhpc boot benchmark (minimal image, %s, 1 vCPU, 256 MiB per VM)\n' "$accel"
printf '  %-40s %8s s   (runs: %s)\n' "QEMU start -> agent ready, median of $runs" "$boot" "${boots[*]}"
printf '  %-40s %8s MiB\n' "guest memory at idle (MemTotal-MemAvailable)" "$mem"
printf '  %-40s %8s MiB\n' "QEMU RSS per VM at idle" "$rss"
for n in 1 2 4; do
    printf '  %-40s %8s s\n' "$n VM(s) booted at once: all ready" "${all[$n]}"
done
printf '  goals: boot <= 3 s under TCG (0.3 s under KVM), guest memory <= 24 MiB\n\n'
echo "RESULT boot_s=$boot mem_idle_mib=$mem qemu_rss_mib=$rss boot4_s=${all[4]} accel=$accel"
