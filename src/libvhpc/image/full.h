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

#include <stdbool.h>

#define VHPC_FULL_SUITE  "bookworm"
#define VHPC_FULL_MIRROR "http://deb.debian.org/debian"
#define VHPC_FULL_COMP   "lz4" /* squashfs compression (see full.c) */
#define VHPC_FULL_TRIMMED                                                                          \
    "/var/lib/apt/lists/*, /var/cache/apt/*.bin, /var/cache/apt/archives/*.deb, "                  \
    "/usr/share/doc/* (copyright files kept), /usr/share/man/*, /usr/share/info/*, "               \
    "/usr/share/locale/*/, /usr/share/lintian/*, /var/log/*, /var/cache/ldconfig/aux-cache, "      \
    "/var/lib/dpkg/*-old, /var/cache/debconf/*-old, /dev/*, /run/*, /tmp/*"

struct vhpc_full_spec {
    const char *suite;           /* NULL: VHPC_FULL_SUITE */
    const char *mirror;          /* NULL: $VHPC_MIRROR, else VHPC_FULL_MIRROR */
    const char *deb_cache;       /* NULL: $VHPC_DEB_CACHE, else <store root>/cache/debs */
    const char *compression;     /* NULL: $VHPC_FULL_COMPRESSION, else VHPC_FULL_COMP */
    const char *const *packages; /* besides systemd and systemd-sysv (NULL-terminated) */
    const char *const *files;    /* "HOST=IMAGE": a host file at an absolute image path */
    const char *const *env;      /* "KEY=VALUE" lines of /etc/vhpc/env */
    const char *agent_path;      /* the static vhpc-agent (NULL: vhpc_guest_tools finds it
                                    and vhpc-rsh, and rsh_path is not used) */
    const char *rsh_path;        /* vhpc-rsh (NULL: none) */
    bool with_mpi;               /* Open MPI (openmpi-bin, libfabric1) and vhpc's provider
                                    ivc, set up as in minimal images */
};

struct vhpc_full_image {
    struct vhpc_image img; /* the image, under the name it was built for */
    /* Made before from the same inputs: nothing was built, the image got
     * the name too. */
    bool reused;
    char inputs_digest[65];
};

/* Build a full image and make it the name's current image, in the store
 * the way vhpc_image_build stores a minimal one (vhpc_image_commit),
 * showing progress on stderr (progress.h).  Errors say what was wrong and
 * what to do: an unknown package names it and how to search (apt-cache
 * search), an unreachable mirror says so. */
int vhpc_full_image_build(const struct vhpc_full_spec *spec, const char *name,
                          struct vhpc_full_image *out, vhpc_err_t *err);

#endif
