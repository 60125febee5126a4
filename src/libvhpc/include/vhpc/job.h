/*
 * vhpc/job.h - a job's virtual cluster in a few calls: boot it (the cluster up
 * and every VM's agent ready, holding the job's key), run a command in
 * one VM or in each, stop it.  What `vhpc run` and `vhpc vm` are made of,
 * and what the batch-system and migration work build on.
 *
 *   struct vhpc_job *job;
 *   vhpc_job_new(&job, &err);
 *   vhpc_job_take_signals(job, on_stopped, &err);  // optional: SIGINT etc.
 *   vhpc_job_boot(job, &spec, BOOT_MS, &err);     // VMs boot in parallel
 *   vhpc_job_run(job, 0, &req, &io, &status, &err);
 *   vhpc_job_stop(job, true, &err);                // poweroff, then remove
 *   vhpc_job_phases(job, &times);                  // how long each step took
 *
 * A cluster that lives on between commands (`vhpc vm`) is reached by name
 * with vhpc_job_load and vhpc_job_connect instead of vhpc_job_boot.
 *
 * vhpc_job_interrupt and vhpc_job_stop may be called from another thread
 * (a signal handler thread) while the others run; everything else is for
 * one thread at a time.  What the job has to say (a signal passed on) goes
 * to the program's output sink (vhpc_set_output, vhpc/util.h).
 */
#ifndef VHPC_PUBLIC_JOB_H
#define VHPC_PUBLIC_JOB_H

#include "agent_client.h" /* src/common: exec requests, run I/O */
#include "error.h"
#include "vhpc/cluster.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* A job (opaque): one cluster and what was done with it. */
struct vhpc_job;

/* A new job, ready for the calls below (before anything else: signals may
 * come while the image is still being prepared). */
int vhpc_job_new(struct vhpc_job **job, vhpc_err_t *err);

/* What a job's cluster is (booted or loaded). */
const char *vhpc_job_name(const struct vhpc_job *job);
int vhpc_job_nvms(const struct vhpc_job *job);
/* The first VM whose boot failed (vhpc_job_boot), or -1. */
int vhpc_job_failed_vm(const struct vhpc_job *job);
struct vhpc_job_vm {
    const char *name;    /* "vm0", also its hostname */
    const char *ip;      /* on the job's network */
    const char *console; /* the file its serial console is written to */
    pid_t pid;           /* its QEMU (0: none) */
};
/* VM i of the job's cluster; -ERANGE when there is none. */
int vhpc_job_vm(const struct vhpc_job *job, int i, struct vhpc_job_vm *out);

/* What VM i's agent said when it was connected (booted or
 * vhpc_job_connect): hostname, kernel...; NULL when it is not. */
const struct agent_hello *vhpc_job_hello(const struct vhpc_job *job, int i);

/* Take SIGINT, SIGTERM and SIGHUP (what a batch system sends) in a thread
 * of the job's.  While commands run (vhpc_job_set_running), the first is
 * passed on to them (every command given vhpc_job_signal_fd) and the
 * cluster is stopped once they end (the caller does that), or at once at a
 * second signal or VHPC_JOB_STOP_GRACE_S later; at any other time the
 * cluster is stopped at once.  Then on_stopped(sig) is called from that
 * thread (it should exit, with 128 + sig).  Call before other threads are
 * started, so that they block the signals too. */
#define VHPC_JOB_STOP_GRACE_S 10
int vhpc_job_take_signals(struct vhpc_job *job, void (*on_stopped)(int sig), vhpc_err_t *err);
void vhpc_job_set_running(struct vhpc_job *job, bool running);
int vhpc_job_signal_fd(const struct vhpc_job *job);
/* The signal that stopped the job (0: none). */
int vhpc_job_stopped_by(const struct vhpc_job *job);

/* Start the cluster of `spec` (a new job) and wait (at most timeout_ms per
 * VM) for every VM's agent, handing each the job's key.  On a VM's failure
 * its reason (QEMU's own words if it exited) is in *err, vhpc_job_failed_vm
 * names it and the cluster is still up (its console can be read;
 * vhpc_job_stop removes it).  If the cluster cannot be started, nothing is
 * left. */
int vhpc_job_boot(struct vhpc_job *job, const struct vhpc_cluster_spec *spec, int timeout_ms,
                  vhpc_err_t *err);

/* The steps of a finished job, in ms: image (init to boot: what the
 * caller did first), boot, run (boot's end to the stop), teardown, total,
 * and each VM's time from its QEMU's start to its agent's answer. */
struct vhpc_job_phases {
    int64_t image_ms, boot_ms, run_ms, teardown_ms, total_ms;
    int64_t vm_ready_ms[VHPC_MAX_VMS];
};
void vhpc_job_phases(const struct vhpc_job *job, struct vhpc_job_phases *p);

/* The last `lines` lines of VM i's console, each as "  | LINE\n", for a
 * boot failure's report (a VM that never booted says why there).  0, or
 * negative when the console cannot be read. */
int vhpc_job_console_tail(const struct vhpc_job *job, int i, int lines, char *out, size_t len);

/* Load the running cluster `name` (started by vhpc_job_boot of another
 * process, e.g. `vhpc vm start`) into a new job, as if
 * booted here; its agents are connected with vhpc_job_connect. */
int vhpc_job_load(struct vhpc_job *job, const char *name, vhpc_err_t *err);
/* Connect to VM i of the job's cluster (vhpc_job_attach) and keep the
 * connection for the calls below. */
int vhpc_job_connect(struct vhpc_job *job, int i, int timeout_ms, vhpc_err_t *err);

/* Every cluster of this user (in the run directory), in name order, to
 * fn; stops at fn's first non-zero return.  An unreadable run directory is
 * an error; a missing one holds no clusters. */
struct vhpc_job_info {
    const char *name;
    const char *owner; /* a vhpc process's pid, "detached", or "?" */
    int nvms;
    pid_t pid[VHPC_MAX_VMS]; /* each VM's QEMU */
};
int vhpc_job_list(int (*fn)(const struct vhpc_job_info *c, void *arg), void *arg, vhpc_err_t *err);

/* Copy the host file src into VM i as dst (its mode src's). */
int vhpc_job_copy_in(struct vhpc_job *job, int i, const char *src, const char *dst,
                     vhpc_err_t *err);
/* Copy VM i's file src to the host path dst without ever losing the file
 * that is there: a new file beside it (the mode dst has or would get),
 * synced, then renamed over dst; a symlink dst stays one (its target is
 * replaced).  On failure dst is untouched. */
int vhpc_job_copy_out(struct vhpc_job *job, int i, const char *src, const char *dst,
                      vhpc_err_t *err);

/* Run req in VM i (environment: the cluster's VHPC_* variables, unless req
 * has its own), with io; *status gets its exit status (128 + signal). */
int vhpc_job_run(struct vhpc_job *job, int i, const struct agent_exec_req *req,
                 const struct agent_run_io *io, int *status, vhpc_err_t *err);

/* Run req in every VM at once (stdin /dev/null).  Each line a command
 * writes goes to out_fd (its stdout) or err_fd (its stderr), prefixed with
 * "[vmN] ", whole lines never mixed.  If a VM's command cannot run (the VM
 * died, the program is missing), the job is broken: the cluster is stopped
 * at once rather than waiting for the others, and that VM is the one
 * reported (failed).  Fills status[] and r[]/errs[] per VM. */
struct vhpc_job_each {
    int out_fd, err_fd;
    int signal_fd; /* forwarded to every command, as agent_run_io.signal_fd */
    int status[VHPC_MAX_VMS], r[VHPC_MAX_VMS];
    vhpc_err_t errs[VHPC_MAX_VMS];
    int failed; /* the VM whose failure stopped the others, or -1 */
};
int vhpc_job_run_each(struct vhpc_job *job, const struct agent_exec_req *req,
                      struct vhpc_job_each *each, vhpc_err_t *err);

/* The exit status of a command whose run returned r (vhpc_job_run): its
 * own, or as a shell says it: 127 when the program is missing or cannot be
 * executed, 1 for any other failure. */
int vhpc_job_exit_status(int r, int status);
/* The same for a run in each VM: the failed VM's (if one stopped the
 * others), else the last VM's that could not run, else the first non-zero. */
int vhpc_job_each_status(const struct vhpc_job *job, const struct vhpc_job_each *each);

/* The whole job in one call (what `vhpc run` is): boot the cluster of
 * spec, run the command in vm0 or each VM once every agent is ready, stop
 * the cluster (cleanly), and say in *res what happened at each step.
 * Returns 0 once the cluster was started (whatever failed later is in
 * *res), or negative when it could not be (nothing is left; *err says why).
 * With vhpc_job_take_signals, a signal may stop it at any step. */
struct vhpc_job_command {
    char *const *argv;
    bool each; /* in every VM (stdin /dev/null, lines prefixed), else in vm0 */
    int stdin_fd, stdout_fd, stderr_fd;
};
struct vhpc_job_result {
    bool booted;              /* every VM's agent was ready (else boot_err, vhpc_job_failed_vm) */
    vhpc_err_t boot_err;      /* why vhpc_job_failed_vm did not boot */
    char console[10240];      /* ... and the end of its console (vhpc_job_console_tail) */
    struct vhpc_job_each ran; /* the command's run (not each: vm0's in [0]) */
    int status;               /* the exit status it gives (vhpc_job_exit_status) */
    int stop_r;               /* vhpc_job_stop's, with stop_err */
    vhpc_err_t stop_err;
};
int vhpc_job_execute(struct vhpc_job *job, const struct vhpc_cluster_spec *spec, int timeout_ms,
                     const struct vhpc_job_command *cmd, struct vhpc_job_result *res,
                     vhpc_err_t *err);

/* Say the job is being stopped from outside (a signal): failures that
 * follow are not reported as the job's own. */
void vhpc_job_interrupt(struct vhpc_job *job);

/* Remove the cluster; once (later calls wait for the first and return).
 * clean: ask every guest to power off and give them VHPC_JOB_GRACE_MS to
 * do so, only when no other thread uses the agents; else QEMU is told to
 * quit, then killed.  What could not be removed is in *err. */
#define VHPC_JOB_GRACE_MS 5000
int vhpc_job_stop(struct vhpc_job *job, bool clean, vhpc_err_t *err);

/* Close the agent connections and free the job (after vhpc_job_stop,
 * when no other thread uses it).  A job that took the process's signals
 * (vhpc_job_take_signals) stays allocated for its signal thread, until the
 * process exits. */
void vhpc_job_close(struct vhpc_job *job);

#endif
