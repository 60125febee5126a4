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

/* ---- internal helpers shared with image.c (not for the CLI) ---------- */

/* <root>: $VHPC_HOME; else for root the system root /var/lib/vhpc
 * ($VHPC_SYSTEM_HOME in tests); else the user's own
 * $XDG_DATA_HOME/vhpc or ~/.local/share/vhpc.  The kernel cache: see above. */
const char *vhpc__store_root(void);
const char *vhpc__system_root(void);
/* 1 when the stores this process creates are private to its user (every
 * user but root): directories 0700.  Root's (the system store) has 0755
 * directories so that what root publishes can be read; its files are
 * still private unless published (store.h). */
int vhpc__private_store(void);
/* Locks (flock(2)) on a lock file: created 0600 (an older 0644 one of ours
 * is made 0600), O_NOFOLLOW, a regular file.  vhpc__lock_wait waits at most
 * $VHPC_LOCK_TIMEOUT seconds (default VHPC_LOCK_TIMEOUT_S), says once
 * through the notice hook (vhpc_set_lock_notice, store.h) which pid holds
 * it, and fails with -ETIMEDOUT naming the file.  `what` names the lock in
 * messages ("store", "guest kernel cache"). */
#define VHPC_LOCK_TIMEOUT_S 600
int vhpc__lock_timeout_s(void);
int vhpc__lock_open(const char *path, const char *what, int *fd, vhpc_err_t *err);
int vhpc__lock_wait(int fd, const char *path, const char *what, vhpc_err_t *err);
/* A module's name from its file's path: base name up to the first '.',
 * with '-' as '_' (the kernel's spelling). */
void vhpc__modname(const char *path, char *out, size_t len);
void vhpc__kernel_cache_dir(char *buf, size_t len);
/* snprintf for paths: -ENAMETOOLONG (err set) if it does not fit. */
int vhpc__pathf(vhpc_err_t *err, char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* mkdir -p (mode for the directories it creates). */
int vhpc__mkdirs(const char *path, unsigned mode, vhpc_err_t *err);
/* Call fn for root and, if it is a directory, everything under it
 * (pre-order, names sorted, symlinks not followed); fn returning < 0 (with
 * err set) stops the walk and is returned. */
int vhpc__walk(const char *root, int (*fn)(const char *path, const struct stat *st, void *arg),
               void *arg, vhpc_err_t *err);
/* rm -rf; a missing path is not an error. */
int vhpc__rm_tree(const char *path, vhpc_err_t *err);
/* Run argv (PATH lookup), stdin from /dev/null, and collect its stdout into
 * out (NUL-terminated, truncated to outlen - 1; may be NULL) and its stderr
 * into errbuf (same, without trailing newlines).  Returns the exit status (0..255), 128 + signal,
 * or a negative errno if it could not be started (err set). */
int vhpc__run(const char *const argv[], const char *cwd, char *out, size_t outlen, char *errbuf,
              size_t errlen, vhpc_err_t *err);
/* The same with the environment envp. */
int vhpc__run_env(const char *const argv[], const char *const envp[], const char *cwd, char *out,
                  size_t outlen, char *errbuf, size_t errlen, vhpc_err_t *err);
/* Write a whole file (created with `mode`, replaced atomically through a
 * temporary file in the same directory). */
int vhpc__write_file(const char *path, const void *data, size_t len, unsigned mode,
                     vhpc_err_t *err);
/* The same, durable: the data and the rename are on disk (fsync of the
 * file, then of its directory) before it returns; keep (may be NULL) names
 * where the file being replaced is kept (a hard link). */
int vhpc__write_file_sync(const char *path, const void *data, size_t len, unsigned mode,
                          const char *keep, vhpc_err_t *err);
/* Read a whole file into a malloc'd, NUL-terminated buffer. */
int vhpc__read_file(const char *path, char **data, size_t *len, vhpc_err_t *err);

#endif
