/*
 * vhpc/cluster.h - the shape of a virtual cluster (N VMs of one image on
 * this host) and what is checked before one starts: a safe name, the
 * memory, the accelerator, whether this user may make a job's network
 * namespace here.  Booting and running one is vhpc/job.h; how a cluster is
 * laid out on the host (state directory, namespace, bridge, taps, ivcd) is
 * cluster/cluster.h.
 */
#ifndef VHPC_PUBLIC_CLUSTER_H
#define VHPC_PUBLIC_CLUSTER_H

#include "error.h"

#include <stdbool.h>

#define VHPC_MAX_VMS 64
/* Cluster names: 1 to this many letters, digits, '-' or '_' (a name
 * becomes a path under the run directory: "../x" or "a/b" never do). */
#define VHPC_CLUSTER_NAME_MAX 32

/* 0, or -EINVAL with a message that says the rule. */
int vhpc_check_cluster_name(const char *name, vhpc_err_t *err);

/* KVM only with hardware virtualization (kvm_intel or kvm_amd loaded and a
 * probe guest running on /dev/kvm: a PVM host's /dev/kvm is not used), else
 * TCG; AUTO decides so. */
enum vhpc_accel { VHPC_ACCEL_AUTO = 0, VHPC_ACCEL_KVM, VHPC_ACCEL_TCG };
/* "auto", "kvm" or "tcg"; -EINVAL for anything else. */
int vhpc_accel_parse(const char *s, enum vhpc_accel *out);
const char *vhpc_accel_name(enum vhpc_accel a);
/* KVM or TCG for want; a forced choice that cannot work is an error that
 * says why. */
int vhpc_accel_resolve(enum vhpc_accel want, enum vhpc_accel *out, vhpc_err_t *err);

struct vhpc_cluster_spec {
    const char *name;
    int nvms, vcpus, mem_mib;
    const char *kernel, *initrd; /* from the image (struct vhpc_image) */
    const char *rootfs;          /* a full image's root file system (NULL: a minimal
                                    image) */
    enum vhpc_accel accel;       /* resolved */
    bool detached;               /* owned by no process (vhpc vm start) */
};

/* Do nvms VMs of mem_mib fit in the memory the host has available? */
int vhpc_cluster_check_memory(int nvms, long mem_mib, vhpc_err_t *err);

/* 0 if this process may start clusters, else why not and what to do
 * (before anything is built or created). */
int vhpc_cluster_can_start(vhpc_err_t *err);

/* Why this user cannot make a job's namespaces here (0: they can), and
 * what root does once to fix it (vhpc setup). */
int vhpc_ns_check(vhpc_err_t *err);

/* Remove clusters whose owner is gone (every QEMU, tap, bridge, ivcd and
 * file of theirs); `all` also removes detached ones.  Calls `report` with a
 * line per thing removed.  Returns the number of clusters removed. */
int vhpc_gc(bool all, void (*report)(const char *line, void *arg), void *arg, vhpc_err_t *err);

#endif
