/*
 * vm.h - one QEMU process per VM: q35, direct kernel boot, serial console to
 * a log file, QMP and the agent's virtio-serial port on UNIX sockets in the
 * VM's state directory, optionally a tap NIC and an ivshmem-doorbell device
 * on a hot-pluggable PCIe root port wired to the job's ivcd, and for a full
 * image its root file system as a read-only virtio disk (serial
 * "vhpc-root", which the boot initramfs looks for: src/agent/root.c).
 */
#ifndef VHPC_VM_H
#define VHPC_VM_H

#include "error.h"
#include "vhpc/cluster.h" /* enum vhpc_accel */
#include "qmp.h"

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

/* State directories are short: the sockets in them must fit in a UNIX
 * socket address (108 bytes). */
#define VHPC_DIR_MAX 256

struct vhpc_vm_config {
    const char *name;       /* e.g. "vm0"; also the guest's hostname */
    const char *dir;        /* state directory of this VM (created) */
    const char *kernel;     /* vmlinuz */
    const char *initrd;     /* initramfs */
    const char *rootfs;     /* a full image's root file system (read-only disk), or NULL */
    const char *append;     /* extra kernel command line (vhpc.ip=... etc.), may be NULL */
    int vcpus;              /* >= 1 */
    int mem_mib;            /* >= 64 */
    enum vhpc_accel accel;  /* resolved: KVM or TCG (see vhpc_accel_resolve) */
    const char *ivc_socket; /* ivcd socket of the job, or NULL */
    const char *tap;        /* tap device for the NIC, or NULL */
    const char *mac;        /* its MAC, with tap */
    pid_t netns;            /* keeper of the namespace holding the tap (ns.h), or 0 */
};

struct vhpc_vm {
    char name[64];
    char dir[VHPC_DIR_MAX];
    char qmp_path[VHPC_DIR_MAX + 32];
    char agent_path[VHPC_DIR_MAX + 32];
    char console_path[VHPC_DIR_MAX + 32];
    pid_t pid;
};

/* vhpc_accel_resolve (vhpc/cluster.h) runs this probe: on PVM hosts
 * /dev/kvm exists and even runs it, but a stock kernel hangs, so PVM is
 * out.  Run a tiny real-mode guest on /dev/kvm in a child process: 1 if it ran
 * (wrote its byte to an I/O port and halted) within timeout_ms, else 0 with
 * the reason in why. */
int vhpc_kvm_probe(int timeout_ms, char *why, size_t len);

/* Start QEMU (not waiting for the guest); the pid is written to dir/qemu.pid
 * before anything else can fail, so a crash can always be cleaned up. */
int vhpc_vm_start(const struct vhpc_vm_config *cfg, struct vhpc_vm *vm, vhpc_err_t *err);

/* Wait up to `grace_ms` for QEMU to exit by itself (after the agent's
 * poweroff), then ask QMP to quit, then SIGKILL.  Reaps the process. */
int vhpc_vm_stop(struct vhpc_vm *vm, int grace_ms, vhpc_err_t *err);

/* Has the VM's QEMU exited (or never started)?  Then *why says so with the
 * last lines QEMU wrote to its qemu.log ("QEMU exited: qemu-system-x86_64:
 * Invalid SMP CPUs 100000..."), for an error message that has the cause. */
bool vhpc_vm_exited(const struct vhpc_vm *vm, char *why, size_t len);

/* The last `lines` lines (at most 64) of the VM's serial console into buf,
 * to explain a failed boot; the number of lines it has, or -ENOENT. */
int vhpc_vm_console_tail(const struct vhpc_vm *vm, int lines, char *buf, size_t len);

#endif
