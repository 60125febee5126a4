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

#include <jansson.h>

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vhpc_image_spec {
    const char *name;           /* e.g. "minimal": [A-Za-z0-9._-], not starting with '.' */
    const char *const *add;     /* host files/dirs to add with their shared-library closure
                                   (NULL-terminated; NULL = none) */
    const char *const *modules; /* extra kernel modules to load at boot, besides the virtio
                                   set (NULL-terminated; NULL = none) */
    const char *const *files;   /* "HOST=IMAGE": a host file put at another path in the
                                   image, with its closure (NULL-terminated; NULL = none) */
    const char *const *env;     /* "KEY=VALUE" lines of /etc/vhpc/env, which the agent puts
                                   into the environment of everything it runs */
    bool with_mpi;              /* vhpc_image_build: also the host's Open MPI and vhpc's
                                   libfabric provider ivc, set up so that `mpirun -np N
                                   prog` uses every VM of the cluster and IVC between them */
};

struct vhpc_image {
    char name[128];        /* the ref it was found by ("" when found by digest) */
    int version;           /* of that name (0 when found by digest) */
    char digest[65];       /* sha256 of the manifest (store.h) */
    char kind[16];         /* "minimal" or "full" */
    char kernel[PATH_MAX]; /* blob paths in the store */
    char initrd[PATH_MAX];
    char rootfs[PATH_MAX]; /* full images: the read-only root file system
                              (squashfs), "" for minimal images */
    char kernel_version[64];
    char os[32];     /* the manifest's "os" ("debian-12"), "" if it names none */
    uint64_t size;   /* all blobs, bytes */
    int64_t created; /* seconds since the epoch, of the ref */
    bool system;     /* found in the system store (read-only to a user) */
};

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

/* Build a minimal image (ensuring the kernel first) and make it the name's
 * current image.  agent_path is the static vhpc-agent that becomes /init;
 * rsh_path (may be NULL) becomes /bin/vhpc-rsh; agent_path NULL: both as
 * vhpc_guest_tools (paths.h) finds them.  The build is deterministic
 * (entries sorted, mtimes 0, owner root): the same inputs give the same
 * digest, and rebuilding an existing digest reuses it.  Busybox comes from
 * $VHPC_BUSYBOX or /bin/busybox and must be statically linked
 * (busybox-static).  Adding a file that needs a library the loader cannot
 * find is an error; for files inside an added directory it is recorded in
 * the manifest ("unresolved") instead, since plugin directories often hold
 * optional parts. */
int vhpc_image_build(const struct vhpc_image_spec *spec, const char *agent_path,
                     const char *rsh_path, struct vhpc_image *out, vhpc_err_t *err);

/* ---- choosing an image (select.c) ---- */

struct vhpc_store;
struct vhpc_req;
struct vhpc_ref;
struct vhpc_candidate;
/* What choosing an image tells its caller as it goes (the library prints
 * nothing); any member may be NULL. */
struct vhpc_select_report {
    /* The candidates of one store for the requirements, best first
     * (vhpc_match); best is 0 when c[0] meets all nreqs of them. */
    void (*matched)(const struct vhpc_candidate *c, size_t nc, int best, size_t nreqs, void *arg);
    /* The own store has none: looking in the system store at root. */
    void (*system_store)(const char *root, void *arg);
    /* None fits: building a full Debian 12 image name with packages. */
    void (*building)(const char *name, const char *const *packages, bool with_mpi, void *arg);
    /* It was built (or found made from the same inputs, reused). */
    void (*built)(const struct vhpc_image *img, bool reused, const char *inputs_digest,
                  bool with_mpi, void *arg);
    void *arg;
};
/* The best image of store st for the requirements (vhpc_match), reported
 * through rep->matched; -ENOENT when none meets them all. */
int vhpc_image_pick(const struct vhpc_store *st, const struct vhpc_req *reqs, size_t n,
                    const struct vhpc_select_report *rep, struct vhpc_ref *chosen, vhpc_err_t *err);
/* The image a run boots: `image` by name (vhpc_image_find; it must also
 * meet reqs), else the best image for reqs in the own store, then the
 * system store, and when none fits and build_missing, a full Debian 12
 * image built into the own store with the packages the requirements name
 * (named auto-<digest of the requirements>).  rep may be NULL. */
int vhpc_image_select(const char *image, const struct vhpc_req *reqs, size_t n, bool build_missing,
                      const struct vhpc_select_report *rep, struct vhpc_image *out,
                      vhpc_err_t *err);

/* Find an image by "name" (its newest version), "name:version",
 * "name@digest-prefix", or a digest prefix (at least 4 hex digits, unique
 * over the store), and mark it used.  A user's own store first, then the
 * system store root keeps (read-only; out->system).  Unknown: -ENOENT and
 * a message naming what the own store has. */
int vhpc_image_find(const char *name_or_digest, struct vhpc_image *out, vhpc_err_t *err);

/* The system store, for a user whose own store is another: -ENOENT when
 * there is none (opening it creates nothing). */
struct vhpc_store;
int vhpc_system_store_open(struct vhpc_store **st, vhpc_err_t *err);
/* The store an image was found in (its own, or the system store). */
int vhpc_image_store_open(const struct vhpc_image *img, struct vhpc_store **st, vhpc_err_t *err);

/* Re-hash every blob of an image (0.1 s for a minimal image).  A damaged
 * blob is removed from the store and -EBADMSG returned: it is never booted;
 * building the same inputs again or pulling the image repairs it. */
int vhpc_image_verify(const struct vhpc_image *img, vhpc_err_t *err);

/* Call fn for every named image version in the store, by name then
 * version; fn returning non-zero stops the walk and is returned. */
int vhpc_image_list(int (*fn)(const struct vhpc_image *img, void *arg), void *arg, vhpc_err_t *err);
/* The same over the system store, for a user whose own store is another
 * (what vhpc_image_find falls back on); 0 when there is none to list, 1
 * when listed. */
int vhpc_image_list_system(int (*fn)(const struct vhpc_image *img, void *arg), void *arg,
                           vhpc_err_t *err);

#endif
