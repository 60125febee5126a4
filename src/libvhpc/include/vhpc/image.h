/*
 * vhpc/image.h - guest images: build them, choose the one a run boots,
 * find, verify and list them.  A *minimal* image is Debian's cloud kernel
 * plus an initramfs with static busybox and vhpc-agent as /init (what is
 * inside: image/image.h); a *full* image is a Debian root file system made
 * by debootstrap that boots its own systemd, through a small initramfs
 * (how it is made: image/full.h).  Images live in the content-addressed
 * store (vhpc/store.h): an image's digest is the sha256 of its manifest,
 * names and versions are refs to digests.
 */
#ifndef VHPC_PUBLIC_IMAGE_H
#define VHPC_PUBLIC_IMAGE_H

#include "error.h"
#include "vhpc/store.h"

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

/* ---- full images ---- */

#define VHPC_FULL_SUITE  "bookworm"
#define VHPC_FULL_MIRROR "http://deb.debian.org/debian"

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
 * showing progress through the output sink (vhpc_set_output).  Errors say what was wrong and
 * what to do: an unknown package names it and how to search (apt-cache
 * search), an unreachable mirror says so. */
int vhpc_full_image_build(const struct vhpc_full_spec *spec, const char *name,
                          struct vhpc_full_image *out, vhpc_err_t *err);

/* ---- requirements: choosing a stored image (the ICS'06 image manager's
 * matching step) ----
 *
 * A requirement is KEY [OP VALUE], OP one of = == != >= <= > < >> << (> and
 * >> mean the same, strictly greater, as do < and <<; = and == are equal):
 *   os=debian-12          the image's OS (ID-VERSION_ID from os-release);
 *                         with an order operator the IDs must be equal and
 *                         the versions compare ("os>=debian-12")
 *   kernel>=6.1           the guest kernel release ("6.1.0-56-cloud-amd64"
 *                         compares as 6.1.0-56; = also accepts the full
 *                         release string)
 *   lib:libfftw3.so.3     a shared library by soname in the image;
 *                         "lib:libfftw3" accepts any libfftw3.so*
 *   openmpi>=4.1          a package: a binary package of that name, else a
 *                         source package (openmpi-bin comes from openmpi),
 *                         whose version satisfies the constraint; no OP
 *                         means installed in any version
 * Versions compare by Debian's rules (image/debver.h): 1.10 > 1.9, epochs, ~.
 *
 * The best image meets every requirement; among those the smallest wins,
 * then the newest.
 */

enum vhpc_req_kind { VHPC_REQ_OS, VHPC_REQ_KERNEL, VHPC_REQ_LIB, VHPC_REQ_PKG };
enum vhpc_req_op {
    VHPC_OP_ANY,
    VHPC_OP_EQ,
    VHPC_OP_NE,
    VHPC_OP_GE,
    VHPC_OP_LE,
    VHPC_OP_GT,
    VHPC_OP_LT
};

struct vhpc_req {
    enum vhpc_req_kind kind;
    enum vhpc_req_op op;
    char key[128]; /* package, soname, or "os" / "kernel" */
    char value[128];
    char text[300]; /* as written, for messages */
};

/* Parse one requirement; -EINVAL with a message that shows the syntax. */
int vhpc_req_parse(const char *s, struct vhpc_req *r, vhpc_err_t *err);

struct vhpc_candidate {
    struct vhpc_ref ref; /* the image's newest ref */
    char kind[16];
    uint64_t size;
    int unmet;         /* requirements not met */
    char report[2048]; /* one line per unmet requirement ("  - ..."), or the met ones */
};

/* ---- choosing, finding, listing ---- */

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
