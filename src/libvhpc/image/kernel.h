/*
 * kernel.h - the guest kernel: Debian's cloud kernel (linux-image-cloud-amd64,
 * bookworm: 6.1), fetched with apt, unpacked and kept in a local cache that
 * every minimal image and VM uses.  No kernel is ever part of the repository.
 *
 * Cache layout (one directory per kernel release, created atomically):
 *   <cache>/<version>/vmlinuz         the kernel image (boot/vmlinuz-<version>)
 *   <cache>/<version>/config          its build configuration
 *   <cache>/<version>/modules/        lib/modules/<version>/ of the package:
 *                                     kernel/ tree, modules.builtin, modules.order,
 *                                     plus modules.dep that vhpc writes itself
 *                                     (depmod format) from each module's .modinfo
 *   <cache>/<version>/manifest.json   package, version, sha256 of vmlinuz, fetched
 *   <cache>/resolved                  the last answer of apt-cache, kept while apt's
 *                                     lists are unchanged (apt-cache takes ~1 s)
 *   <cache>/.lock                     serialises fetches
 * <cache> is $VHPC_KERNEL_CACHE if set, else <root>/kernels, with <root> =
 * $VHPC_HOME or /var/lib/vhpc.  Modules shipped compressed (.ko.xz, .ko.zst,
 * .ko.gz) are decompressed when the kernel is cached, so images and the
 * guest agent only ever see plain .ko files (finit_module()).
 */
#ifndef VHPC_KERNEL_H
#define VHPC_KERNEL_H

#include "error.h"

#include <limits.h>
#include <stddef.h>
#include <sys/stat.h>

struct vhpc_kernel {
    char version[64];           /* kernel release, e.g. "6.1.0-56-cloud-amd64" */
    char vmlinuz[PATH_MAX];     /* path of the cached kernel image */
    char modules_dir[PATH_MAX]; /* the cached lib/modules/<version> (has modules.dep) */
    char sha256[65];            /* of vmlinuz */
};

/* Make sure Debian's cloud kernel is cached and return it.  The package
 * (linux-image-cloud-amd64, or $VHPC_KERNEL_PACKAGE) is resolved to its
 * versioned package with apt-cache (local, no network; remembered while apt's
 * lists are unchanged); if that kernel is
 * cached and its vmlinuz matches the manifest's sha256, it is returned
 * without running apt-get.  Otherwise it is fetched with `apt-get download`
 * (after one `apt-get update` if resolving or downloading fails), unpacked
 * with dpkg-deb into a temporary directory next to the cache and renamed into
 * place; a cached kernel whose checksum fails is replaced.  When apt knows no
 * such package and apt-get update does not help, the newest valid cached
 * kernel is used.  Concurrent callers are serialised by a lock file. */
int vhpc_kernel_ensure(struct vhpc_kernel *k, vhpc_err_t *err);

/* Look up a cached kernel by release without touching apt; verifies the
 * checksum.  -ENOENT if it is not cached. */
int vhpc_kernel_get(const char *version, struct vhpc_kernel *k, vhpc_err_t *err);

/* A module's name from its file's path: base name up to the first '.',
 * with '-' as '_' (the kernel's spelling). */
void vhpc__modname(const char *path, char *out, size_t len);

#endif
