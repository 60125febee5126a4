/*
 * image.h - guest images.  A *minimal* image is Debian's cloud kernel plus
 * an uncompressed cpio initramfs with static busybox, vhpc-agent as /init,
 * the kernel modules the guest needs and the shared-library closure of
 * whatever the caller adds.  A *full* image (full.h) is a Debian root
 * file system booted through a small initramfs.  Images live in the
 * content-addressed store (store.h): the digest of an image is the sha256 of
 * its manifest, names and versions are refs to digests.
 *
 * Inside the initramfs (merged /usr like the host when the host is):
 *   /init                    vhpc-agent
 *   /bin/busybox + applets   e.g. /bin/sh, /sbin/ip (symlinks to /bin/busybox)
 *   /bin/vhpc-rsh            if given
 *   /lib/modules/<v>/...     the modules, plain .ko files
 *   /etc/vhpc/modules        the .ko paths to load, one per line, dependencies first
 *   /etc/vhpc/image          "kernel_version=<v>\nkernel_sha256=<sha>\n"
 *   /etc/passwd, group, hosts, nsswitch.conf; /dev/console, /dev/null
 *   /proc /sys /dev /tmp /run /mnt /root (empty)
 *   the added files with their libraries and the dynamic loader, at their host paths
 */
#ifndef VHPC_IMAGE_H
#define VHPC_IMAGE_H

#include "error.h"
#include "vhpc/image.h" /* the public part */

#include <jansson.h>

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Write a minimal image's initramfs for kernel k to out_path (no store
 * involved): what vhpc_image_build stores, and the boot initramfs of full
 * images.  Describes what went in. */
struct vhpc_initrd {
    char digest[65]; /* sha256 of the cpio */
    uint64_t size;
    json_t *inputs;     /* [{"role", "path", "type", "sha256"}] */
    json_t *modules;    /* module paths loaded at boot */
    json_t *libs;       /* shared libraries added (host paths) */
    json_t *unresolved; /* libraries not found (inside added directories) */
    json_t *host_files; /* the host files copied in */
};
struct vhpc_kernel;
int vhpc_initrd_build(const struct vhpc_image_spec *spec, const char *agent_path,
                      const char *rsh_path, const struct vhpc_kernel *k, const char *out_path,
                      struct vhpc_initrd *out, vhpc_err_t *err);
void vhpc_initrd_free(struct vhpc_initrd *i);

/* A fresh directory under the store's tmp/ for building (files built there
 * are moved, not copied, into the store).  The caller removes it. */
int vhpc_image_workdir(char *path, size_t len, vhpc_err_t *err);

/* Register built files as an image: each paths[i] becomes the blob of
 * roles[i] ("kernel", "initrd", "rootfs"; NULL-terminated), moved when it
 * is under the store's tmp/ and copied otherwise; manifest (consumed) gets
 * "blobs", "size", "schema", "arch" and "parent" (null unless set) filled
 * in and is stored; name gets a new version unless its newest version is
 * this same digest.  The caller sets at least "kind", "os", "kernel",
 * "packages", "libs", "inputs_digest" (store.h). */
int vhpc_image_commit(const char *name, json_t *manifest, const char *const roles[],
                      const char *const paths[], struct vhpc_image *out, vhpc_err_t *err);

/* The sha256 of a JSON value's canonical form (sorted keys, compact). */
void vhpc_json_digest(json_t *v, char hex[65]);
/* "debian-12" (ID-VERSION_ID) and PRETTY_NAME from an os-release file. */
void vhpc_os_release(const char *path, char *id, size_t idlen, char *pretty, size_t plen);
/* Add name -> {"version", "source", "source_version"} to pkgs for the
 * installed packages (all when names is NULL) of a dpkg database (admindir
 * NULL = the host's). */
int vhpc_dpkg_packages(const char *admindir, const char *const *names, json_t *pkgs,
                       vhpc_err_t *err);

/* The modules every minimal image loads, in this order of request (those
 * the kernel lacks are skipped when marked optional in modules.c). */
extern const char *const vhpc_image_default_modules[];

#endif
