/*
 * job.h - what a job is inside (the public calls are vhpc/job.h): its
 * cluster, the agents, when each step began and ended, the signal state.
 */
#ifndef VHPC_JOB_H
#define VHPC_JOB_H

#include "agent_client.h"
#include "cluster.h"
#include "vhpc/job.h" /* the public part */

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* When each step began and ended (vhpc_now_ms; 0: not yet). */
struct vhpc_job_times {
    int64_t init_ms; /* vhpc_job_new: the caller prepares the image from here */
    int64_t boot_ms; /* vhpc_job_boot began */
    int64_t up_ms;   /* ... and ended: every agent ready, or a VM failed */
    int64_t stop_ms; /* vhpc_job_stop began (the call that did the work) */
    int64_t down_ms; /* ... and ended */
};

struct vhpc_job {
    struct vhpc_cluster cl;
    struct vhpc_job_times times;
    agent_client_t *agents[VHPC_MAX_VMS]; /* each VM's agent, once booted */
    int64_t started_ms[VHPC_MAX_VMS];     /* the cluster's start began (vhpc_now_ms) */
    int64_t ready_ms[VHPC_MAX_VMS];       /* its agent answered, holding the key */
    int failed;                           /* the first VM whose boot failed, or -1 */
    atomic_bool interrupted;              /* vhpc_job_interrupt was called */
    pthread_mutex_t lock;                 /* protects up and the teardown */
    bool up;
    /* signals (vhpc_job_take_signals) */
    atomic_int stop_signal; /* the signal that stopped the job, or 0 */
    atomic_bool running;    /* commands run: a signal is passed on to them */
    int signal_pipe[2];     /* struct signalfd_siginfo records for the commands */
    void (*on_stopped)(int sig);
    sigset_t signals;
    bool signal_thread; /* started: it holds the job until the process exits */
};

/* Connect to VM i of a running cluster (loaded or booted) and wait up to
 * timeout_ms for its agent to be ready; hands it the job's key. */
int vhpc_job_attach(const struct vhpc_cluster *cl, int i, int timeout_ms, agent_client_t **out,
                    vhpc_err_t *err);

#endif
