#!/usr/bin/env bash
# Install the Debian 12 packages vhpc needs to build, test and benchmark.
# Only runs apt-get (update first) when something is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config iproute2 procps psmisc
      qemu-system-x86 openmpi-bin libopenmpi-dev libfabric-dev libfabric-bin
      libjansson-dev busybox-static cpio debootstrap squashfs-tools
      nftables munge libmunge-dev clang libclang-rt-14-dev
      lammps lammps-examples hpcc)   # the last three: make bench-apps (lmp, melt/peptide inputs)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: need root to install packages (run as root or install: ${missing[*]})" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
