/*
 * cluster.h - a virtual cluster on this host: N VMs of one image, a bridge
 * and a tap per VM, and the job's ivcd, all recorded under one state
 * directory (<run dir>/clusters/<name>/, vhpc_run_dir in paths.h)
 * before they are created, so that `vhpc gc` can always remove what a
 * crashed run left behind.
 *
 *   <dir>/owner        pid of the vhpc process that runs the cluster, or
 *                      "detached" (vhpc vm start)
 *   <dir>/job          the IVC job id
 *   <dir>/ivcd.pid, ivc.sock(.ctl)
 *   <dir>/bridge       the bridge's name (written before it is created)
 *   <dir>/vmN/         tap (name), qemu.pid, qmp.sock, agent.sock, console.log, qemu.log
 */
#ifndef VHPC_CLUSTER_H
#define VHPC_CLUSTER_H

#include "error.h"
#include "vhpc/cluster.h" /* the public part */
#include "paths.h"        /* vhpc_run_dir, vhpc_tool_path */
#include "net.h"
#include "vm.h"

#include <stdbool.h>
#include <stdint.h>

struct vhpc_cluster {
    char name[64];
    char dir[VHPC_DIR_MAX - 32];
    uint64_t job;
    uint8_t key[32]; /* the job's key: agents admit vhpc-rsh clients that hold it (job.key, 0600) */
    struct vhpc_net net;
    int nvms;
    struct vhpc_vm vms[VHPC_MAX_VMS];
    char ips[VHPC_MAX_VMS][32];
};

/* Create the state directory, ivcd, bridge, taps and start every QEMU (not
 * waiting for the guests).  On failure everything created is removed. */
int vhpc_cluster_up(const struct vhpc_cluster_spec *spec, struct vhpc_cluster *cl, vhpc_err_t *err);

/* Stop the VMs (waiting `grace_ms` for them to power off by themselves),
 * then the namespace keeper (the bridge and taps go with it), ivcd and the
 * state directory.  Goes on past a failure and returns the first (*err
 * says what is left; the state directory is then kept, for vhpc gc). */
int vhpc_cluster_down(struct vhpc_cluster *cl, int grace_ms, vhpc_err_t *err);

/* Load a running cluster's description from its state directory. */
int vhpc_cluster_load(const char *name, struct vhpc_cluster *cl, vhpc_err_t *err);

/* The environment a command in VM `i` gets: VHPC_CLUSTER, VHPC_JOB (the IVC
 * job id, what ivc_register() must be given), VHPC_VM (its index) and
 * VHPC_NVMS.  Fills env[0..3] (pointing into *buf) and env[4] = NULL. */
struct vhpc_env_buf {
    char s[4][96];
};
void vhpc_cluster_env(const struct vhpc_cluster *cl, int i, struct vhpc_env_buf *buf,
                      const char *env[5]);

#endif
