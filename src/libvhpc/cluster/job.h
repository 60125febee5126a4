/*
 * job.h - a job's virtual cluster in a few calls: boot it (the cluster up
 * and every VM's agent ready, holding the job's key), run a command in
 * one VM or in each, stop it.  What `vhpc run` and `vhpc vm` are made of,
 * and what the batch-system and migration work build on.
 *
 *   static struct vhpc_job job;
 *   vhpc_job_boot(&job, &spec, BOOT_MS, &err);     // VMs boot in parallel
 *   vhpc_job_run(&job, 0, &req, &io, &status, &err);
 *   vhpc_job_stop(&job, true, &err);                // poweroff, then remove
 *
 * vhpc_job_interrupt and vhpc_job_stop may be called from another thread
 * (a signal handler thread) while the others run; everything else is for
 * one thread at a time.
 */
#ifndef VHPC_JOB_H
#define VHPC_JOB_H

#include "agent_client.h"
#include "cluster.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct vhpc_job {
    struct vhpc_cluster cl;
    agent_client_t *agents[VHPC_MAX_VMS]; /* each VM's agent, once booted */
    int64_t started_ms[VHPC_MAX_VMS];     /* the cluster's start began (vhpc__now_ms) */
    int64_t ready_ms[VHPC_MAX_VMS];       /* its agent answered, holding the key */
    int failed;                           /* the first VM whose boot failed, or -1 */
    atomic_bool interrupted;              /* vhpc_job_interrupt was called */
    pthread_mutex_t lock;                 /* protects up and the teardown */
    bool up;
};

/* Start the cluster of `spec` and wait (at most timeout_ms per VM) for
 * every VM's agent, handing each the job's key.  On a VM's failure its
 * reason (QEMU's own words if it exited) is in *err, job->failed names it
 * and the cluster is still up (its console can be read; vhpc_job_stop
 * removes it).  If the cluster cannot be started, nothing is left. */
int vhpc_job_boot(struct vhpc_job *job, const struct vhpc_cluster_spec *spec, int timeout_ms,
                  vhpc_err_t *err);

/* Connect to VM i of a running cluster (loaded or booted) and wait up to
 * timeout_ms for its agent to be ready; hands it the job's key. */
int vhpc_job_attach(const struct vhpc_cluster *cl, int i, int timeout_ms, agent_client_t **out,
                    vhpc_err_t *err);

/* Run req in VM i (environment: the cluster's VHPC_* variables, unless req
 * has its own), with io; *status gets its exit status (128 + signal). */
int vhpc_job_run(struct vhpc_job *job, int i, const struct agent_exec_req *req,
                 const struct agent_run_io *io, int *status, vhpc_err_t *err);

/* Run req in every VM at once.  For each VM, open(vm, io, arg) fills the
 * output descriptors of *io (stdin is /dev/null) and close(vm, arg) is
 * called once its command has ended.  If a VM's command cannot run (the
 * VM died, the program is missing), the job is broken: the cluster is
 * stopped at once rather than waiting for the others, and that VM is the
 * one reported (*failed).  Fills status[] and r[]/errs[] per VM. */
struct vhpc_job_each {
    int (*open)(int vm, struct agent_run_io *io, void *arg);
    void (*close)(int vm, void *arg);
    void *arg;
    int signal_fd; /* forwarded to every command, as agent_run_io.signal_fd */
    int status[VHPC_MAX_VMS], r[VHPC_MAX_VMS];
    vhpc_err_t errs[VHPC_MAX_VMS];
    int failed; /* the VM whose failure stopped the others, or -1 */
};
int vhpc_job_run_each(struct vhpc_job *job, const struct agent_exec_req *req,
                      struct vhpc_job_each *each, vhpc_err_t *err);

/* Say the job is being stopped from outside (a signal): failures that
 * follow are not reported as the job's own. */
void vhpc_job_interrupt(struct vhpc_job *job);

/* Remove the cluster; once (later calls wait for the first and return).
 * clean: ask every guest to power off and give them VHPC_JOB_GRACE_MS to
 * do so, only when no other thread uses the agents; else QEMU is told to
 * quit, then killed.  What could not be removed is in *err. */
#define VHPC_JOB_GRACE_MS 5000
int vhpc_job_stop(struct vhpc_job *job, bool clean, vhpc_err_t *err);

/* Close the agent connections (after vhpc_job_stop, when no other thread
 * uses them). */
void vhpc_job_close(struct vhpc_job *job);

#endif
