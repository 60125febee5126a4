/*
 * job.c - see job.h.
 */
#include "job.h"
#include "clock.h"
#include "output.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

int vhpc_job_init(struct vhpc_job *job, vhpc_err_t *err)
{
    memset(job, 0, sizeof(*job));
    pthread_mutex_init(&job->lock, NULL);
    job->failed = -1;
    job->signal_pipe[0] = job->signal_pipe[1] = -1;
    if (pipe2(job->signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return vhpc_err_set(err, -errno, "pipe");
    return 0;
}

/* ---- signals ---------------------------------------------------------------------- */

static void *signal_thread(void *arg)
{
    struct vhpc_job *job = arg;
    int sig;
    if (sigwait(&job->signals, &sig) != 0)
        return NULL;
    atomic_store(&job->stop_signal, sig);
    vhpc_job_interrupt(job);
    if (atomic_load(&job->running)) {
        vhpc__say("vhpc: %s: passing it on to the command (again to stop the VMs now)\n",
                  strsignal(sig));
        struct signalfd_siginfo si = {.ssi_signo = (uint32_t)sig};
        for (int i = 0; i < VHPC_MAX_VMS; i++) /* one for each command's wait */
            if (write(job->signal_pipe[1], &si, sizeof(si)) < 0)
                break;
        struct timespec grace = {.tv_sec = VHPC_JOB_STOP_GRACE_S};
        if (sigtimedwait(&job->signals, NULL, &grace) < 0)
            vhpc__say("vhpc: the command still runs %d s after the signal\n",
                      VHPC_JOB_STOP_GRACE_S);
    }
    vhpc__say("vhpc: %s: stopping the cluster\n", strsignal(sig));
    vhpc_err_t ignore;
    vhpc_job_stop(job, false, &ignore); /* waits for a clean stop already under way */
    if (job->on_stopped)
        job->on_stopped(sig);
    return NULL;
}

int vhpc_job_take_signals(struct vhpc_job *job, void (*on_stopped)(int sig), vhpc_err_t *err)
{
    sigemptyset(&job->signals);
    sigaddset(&job->signals, SIGINT);
    sigaddset(&job->signals, SIGTERM);
    sigaddset(&job->signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &job->signals, NULL);
    job->on_stopped = on_stopped;
    pthread_t th;
    int e = pthread_create(&th, NULL, signal_thread, job);
    if (e)
        return vhpc_err_set(err, -e, "starting the signal thread");
    pthread_detach(th);
    return 0;
}

void vhpc_job_set_running(struct vhpc_job *job, bool running)
{
    atomic_store(&job->running, running);
}

int vhpc_job_signal_fd(const struct vhpc_job *job)
{
    return job->signal_pipe[0];
}

int vhpc_job_stopped_by(const struct vhpc_job *job)
{
    return atomic_load(&job->stop_signal);
}

int vhpc_job_attach(const struct vhpc_cluster *cl, int i, int timeout_ms, agent_client_t **out,
                    vhpc_err_t *err)
{
    agent_client_t *a = NULL;
    if (i < 0 || i >= cl->nvms)
        return vhpc_err_setmsg(err, -EINVAL, "cluster %s has no vm%d (it has %d VMs)", cl->name, i,
                               cl->nvms);
    const struct vhpc_vm *vm = &cl->vms[i];
    int r = agent_client_connect(vm->agent_path, 10000, &a, err);
    /* Before any command: vhpc-rsh between the VMs needs the key. */
    if (r == 0 && ((r = agent_client_wait_ready(a, timeout_ms, err)) < 0 ||
                   (r = agent_client_send_key(a, cl->key, 10000, err)) < 0)) {
        agent_client_close(a);
        a = NULL;
    }
    char why[512];
    if (r < 0 && vhpc_vm_exited(vm, why, sizeof(why)))
        vhpc_err_setmsg(err, r, "%s/%s: %s", cl->name, vm->name, why);
    else if (r < 0)
        vhpc_err_wrap(err, "%s/%s: waiting for its agent (console: %s)", cl->name, vm->name,
                      vm->console_path);
    *out = a;
    return r;
}

/* ---- boot: one thread per VM ---------------------------------------------------- */

struct boot {
    struct vhpc_job *job;
    int i, timeout_ms, r;
    vhpc_err_t err;
};

static void *boot_thread(void *arg)
{
    struct boot *b = arg;
    b->r = vhpc_job_attach(&b->job->cl, b->i, b->timeout_ms, &b->job->agents[b->i], &b->err);
    b->job->ready_ms[b->i] = vhpc__now_ms();
    return NULL;
}

int vhpc_job_boot(struct vhpc_job *job, const struct vhpc_cluster_spec *spec, int timeout_ms,
                  vhpc_err_t *err)
{
    job->failed = -1;
    int64_t t0 = vhpc__now_ms(); /* QEMUs start in vhpc_cluster_up */
    pthread_mutex_lock(&job->lock);
    int r = vhpc_cluster_up(spec, &job->cl, err);
    job->up = r == 0;
    pthread_mutex_unlock(&job->lock);
    if (r < 0)
        return r;
    struct boot boots[VHPC_MAX_VMS];
    pthread_t th[VHPC_MAX_VMS];
    bool have[VHPC_MAX_VMS];
    int n = job->cl.nvms;
    for (int i = 0; i < n; i++) {
        boots[i] = (struct boot){.job = job, .i = i, .timeout_ms = timeout_ms};
        job->started_ms[i] = t0;
        int e = pthread_create(&th[i], NULL, boot_thread, &boots[i]);
        have[i] = e == 0;
        if (e)
            boots[i].r =
                vhpc_err_set(&boots[i].err, -e, "%s/vm%d: starting a thread", job->cl.name, i);
    }
    for (int i = 0; i < n; i++) {
        if (have[i])
            pthread_join(th[i], NULL);
        if (boots[i].r < 0 && job->failed < 0) {
            job->failed = i;
            r = boots[i].r;
            if (err)
                *err = boots[i].err;
        }
    }
    return r;
}

int vhpc_job_run(struct vhpc_job *job, int i, const struct agent_exec_req *req,
                 const struct agent_run_io *io, int *status, vhpc_err_t *err)
{
    if (i < 0 || i >= job->cl.nvms || !job->agents[i])
        return vhpc_err_setmsg(err, -EINVAL, "%s has no booted vm%d", job->cl.name, i);
    struct vhpc_env_buf eb;
    const char *env[5];
    struct agent_exec_req r = *req;
    if (!r.env) {
        vhpc_cluster_env(&job->cl, i, &eb, env);
        r.env = env;
    }
    int rc = agent_client_run(job->agents[i], &r, io, status, err);
    if (rc < 0)
        vhpc_err_wrap(err, "vm%d", i);
    return rc;
}

/* ---- each: one thread per VM, its output prefixed ------------------------------------ */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* Copy whole lines from `in` to `out`, each prefixed with "[vmN] ". */
struct prefixer {
    int in, out, vm;
    pthread_t th;
    bool running;
};

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void *prefix_thread(void *arg)
{
    struct prefixer *p = arg;
    FILE *in = fdopen(p->in, "r");
    char *line = NULL, pre[16];
    size_t cap = 0;
    ssize_t n;
    int pl = snprintf(pre, sizeof(pre), "[vm%d] ", p->vm);
    while (in && (n = getline(&line, &cap, in)) > 0) {
        pthread_mutex_lock(&out_lock);
        write_all(p->out, pre, (size_t)pl);
        write_all(p->out, line, (size_t)n);
        if (line[n - 1] != '\n')
            write_all(p->out, "\n", 1);
        pthread_mutex_unlock(&out_lock);
    }
    free(line);
    if (in)
        fclose(in);
    else
        close(p->in);
    return NULL;
}

struct each_one {
    struct vhpc_job *job;
    struct vhpc_job_each *each;
    const struct agent_exec_req *req;
    int i, done_fd;
};

static void *each_thread(void *arg)
{
    struct each_one *o = arg;
    struct vhpc_job_each *e = o->each;
    struct agent_run_io io = {.stdin_fd = -1,
                              .stdout_fd = -1,
                              .stderr_fd = -1,
                              .signal_fd = e->signal_fd,
                              .timeout_ms = -1};
    int i = o->i, to[2] = {e->out_fd, e->err_fd}, wr[2] = {-1, -1};
    struct prefixer px[2] = {{0}, {0}};
    e->r[i] = 0;
    for (int k = 0; k < 2 && e->r[i] == 0; k++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) {
            e->r[i] = vhpc_err_set(&e->errs[i], -errno, "vm%d: pipe", i);
            break;
        }
        px[k] = (struct prefixer){.in = p[0], .out = to[k], .vm = i};
        wr[k] = p[1];
        int err = pthread_create(&px[k].th, NULL, prefix_thread, &px[k]);
        if (err) {
            close(p[0]);
            e->r[i] = vhpc_err_set(&e->errs[i], -err, "vm%d: starting a thread", i);
        }
        px[k].running = err == 0;
    }
    io.stdout_fd = wr[0];
    io.stderr_fd = wr[1];
    if (e->r[i] == 0)
        e->r[i] = vhpc_job_run(o->job, i, o->req, &io, &e->status[i], &e->errs[i]);
    for (int k = 0; k < 2; k++) {
        if (wr[k] >= 0)
            close(wr[k]);
        if (px[k].running)
            pthread_join(px[k].th, NULL);
    }
    if (write(o->done_fd, &i, sizeof(i)) < 0) {
        /* the caller joins every thread anyway */
    }
    return NULL;
}

int vhpc_job_run_each(struct vhpc_job *job, const struct agent_exec_req *req,
                      struct vhpc_job_each *each, vhpc_err_t *err)
{
    int n = job->cl.nvms, done[2];
    struct each_one one[VHPC_MAX_VMS];
    pthread_t th[VHPC_MAX_VMS];
    bool have[VHPC_MAX_VMS];
    each->failed = -1;
    if (pipe2(done, O_CLOEXEC) < 0)
        return vhpc_err_set(err, -errno, "pipe");
    int started = 0;
    for (int i = 0; i < n; i++) {
        one[i] =
            (struct each_one){.job = job, .each = each, .req = req, .i = i, .done_fd = done[1]};
        each->status[i] = 0;
        int e = pthread_create(&th[i], NULL, each_thread, &one[i]);
        have[i] = e == 0;
        if (e) {
            each->r[i] = vhpc_err_set(&each->errs[i], -e, "vm%d: starting a thread", i);
            if (each->failed < 0)
                each->failed = i;
        } else {
            started++;
        }
    }
    /* The first command that cannot run breaks the job: stop the whole
     * cluster rather than wait for the others. */
    for (int left = started; left > 0 && each->failed < 0; left--) {
        int i;
        if (read(done[0], &i, sizeof(i)) != sizeof(i) || i < 0 || i >= n)
            break;
        if (each->r[i] < 0 && !atomic_load(&job->interrupted))
            each->failed = i;
    }
    if (each->failed >= 0) {
        vhpc_err_t ignore;
        vhpc_job_stop(job, false, &ignore);
    }
    for (int i = 0; i < n; i++)
        if (have[i])
            pthread_join(th[i], NULL);
    close(done[0]);
    close(done[1]);
    return 0;
}

void vhpc_job_interrupt(struct vhpc_job *job)
{
    atomic_store(&job->interrupted, true);
}

int vhpc_job_stop(struct vhpc_job *job, bool clean, vhpc_err_t *err)
{
    int r = 0;
    pthread_mutex_lock(&job->lock);
    if (job->up) {
        vhpc_err_t ignore;
        if (clean)
            for (int i = 0; i < job->cl.nvms; i++)
                if (job->agents[i])
                    agent_client_shutdown(job->agents[i], AGENT_SHUTDOWN_POWEROFF, &ignore);
        r = vhpc_cluster_down(&job->cl, clean ? VHPC_JOB_GRACE_MS : 0, err);
        job->up = false;
    }
    pthread_mutex_unlock(&job->lock);
    return r;
}

void vhpc_job_close(struct vhpc_job *job)
{
    for (int i = 0; i < VHPC_MAX_VMS; i++) {
        if (job->agents[i])
            agent_client_close(job->agents[i]);
        job->agents[i] = NULL;
    }
    for (int k = 0; k < 2; k++) {
        if (job->signal_pipe[k] >= 0)
            close(job->signal_pipe[k]);
        job->signal_pipe[k] = -1;
    }
}
