/*
 * full.h - full images: a Debian root file system made by debootstrap
 * that boots its own systemd, with vhpc-agent as a service (the "AS4"
 * analogue of DESIGN.md 2.5; minimal images are image.h).
 *
 * A full image has three blobs:
 *   kernel   Debian's cloud kernel (kernel.h), as for minimal images
 *   initrd   the boot initramfs (vhpc_initrd_build): vhpc-agent as /init,
 *            busybox, the virtio modules + squashfs + overlay, and
 *            /etc/vhpc/root, which tells the agent to mount the root and
 *            switch to it (src/agent/root.c documents the protocol)
 *   rootfs   the root file system, squashfs, attached read-only to every
 *            VM (virtio-blk, serial "vhpc-root"); each VM writes to its own
 *            tmpfs layer (overlayfs), the base is never writable
 *
 * The root file system is `debootstrap --variant=minbase
 * --include=systemd,systemd-sysv,<packages> SUITE ROOT MIRROR`, then:
 *   /usr/lib/vhpc/vhpc-agent   + vhpc-agent.service (sysinit.target, started
 *                              at once, Restart=always), /usr/bin/vhpc-rsh
 *   /etc/vhpc/env              the KEY=VALUE lines given
 *   /etc/vhpc/image            kernel and suite it was made for
 *   the "HOST=IMAGE" files     (an ELF file whose libraries the root lacks is
 *                              an error naming them)
 *   systemd set up for a job VM: multi-user.target; no getty (the console is
 *   a log file), no first-boot wizard, no apt/dpkg/e2scrub/fstrim timers,
 *   no logind without D-Bus; journal in RAM; /etc/.updated so no
 *   update-on-boot units run
 *   empty /etc/machine-id (a fresh id per boot), empty /etc/resolv.conf (no
 *   DNS on the cluster network), /etc/hostname "localhost" (the agent names
 *   the VM), sources.list pointing at the mirror
 * and trimmed (VHPC_FULL_TRIMMED lists what goes; /etc/dpkg/dpkg.cfg.d/
 * vhpc-trim makes packages installed later inside a VM follow suit): apt's
 * package lists and caches (`apt-get update` restores them), docs except
 * copyright files, man and info pages, translations, logs, /dev, /run and
 * /tmp contents, dpkg/debconf backups.  For a build as reproducible as is
 * cheap, every time stamp later than the suite's Release date is set to it
 * (files from packages keep theirs, so e.g. Python's .pyc stay valid) and
 * mksquashfs uses that date and its reproducible mode.  What can still
 * differ between two builds of the same inputs: /etc/shadow's password-change
 * day and whatever a maintainer script writes at random.
 *
 * Same inputs, same image: the inputs (suite, mirror, sorted package list,
 * sha256 of agent, rsh and each file, env, kernel, compression, recipe
 * version) are a canonical JSON whose sha256 is looked up in the store
 * first; when an image has it, nothing is built.  The archive's state is
 * not an input: to pick up newer packages, change an input or remove the
 * image.
 *
 * Building needs root, debootstrap and mksquashfs (squashfs-tools), and the
 * mirror's network.  .deb files are kept in $VHPC_DEB_CACHE (default
 * <store root>/cache/debs), so building again downloads only indices.
 */
#ifndef VHPC_FULL_H
#define VHPC_FULL_H

#include "error.h"
#include "image.h"
#include "vhpc/image.h" /* the public part */

#include <stdbool.h>

#define VHPC_FULL_COMP "lz4" /* squashfs compression (see full.c) */
#define VHPC_FULL_TRIMMED                                                                          \
    "/var/lib/apt/lists/*, /var/cache/apt/*.bin, /var/cache/apt/archives/*.deb, "                  \
    "/usr/share/doc/* (copyright files kept), /usr/share/man/*, /usr/share/info/*, "               \
    "/usr/share/locale/*/, /usr/share/lintian/*, /var/log/*, /var/cache/ldconfig/aux-cache, "      \
    "/var/lib/dpkg/*-old, /var/cache/debconf/*-old, /dev/*, /run/*, /tmp/*"

#endif
