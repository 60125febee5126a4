/*
 * job.c - see vhpc/job.h: a job's cluster booted (one thread per VM), its
 * commands run (one VM with the caller's stdio, or each VM with its output
 * prefixed), the signals a batch system sends taken and passed on, files
 * copied in and out, the cluster stopped, and how long each step took.
 */
#include "job.h"
#include "clock.h"
#include "fs.h"
#include "names.h"
#include "output.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int vhpc_job_new(struct vhpc_job **out, vhpc_err_t *err)
{
    struct vhpc_job *job = calloc(1, sizeof(*job));
    if (!job)
        return vhpc_err_set(err, -ENOMEM, "a job");
    pthread_mutex_init(&job->lock, NULL);
    job->failed = -1;
    job->signal_pipe[0] = job->signal_pipe[1] = -1;
    job->times.init_ms = vhpc_now_ms();
    if (pipe2(job->signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        int e = -errno;
        free(job);
        return vhpc_err_set(err, e, "pipe");
    }
    *out = job;
    return 0;
}

const char *vhpc_job_name(const struct vhpc_job *job)
{
    return job->cl.name;
}

int vhpc_job_nvms(const struct vhpc_job *job)
{
    return job->cl.nvms;
}

int vhpc_job_failed_vm(const struct vhpc_job *job)
{
    return job->failed;
}

int vhpc_job_vm(const struct vhpc_job *job, int i, struct vhpc_job_vm *out)
{
    if (i < 0 || i >= job->cl.nvms)
        return -ERANGE;
    const struct vhpc_vm *vm = &job->cl.vms[i];
    *out = (struct vhpc_job_vm){vm->name, job->cl.ips[i], vm->console_path, vm->pid};
    return 0;
}

const struct agent_hello *vhpc_job_hello(const struct vhpc_job *job, int i)
{
    if (i < 0 || i >= job->cl.nvms || !job->agents[i])
        return NULL;
    return agent_client_hello(job->agents[i]);
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
    job->signal_thread = true;
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

/* Whether VM's QEMU has exited (why: its own last words), after its agent
 * failed with r.  A QEMU that dies closes its sockets a moment before it is
 * a zombie, so a connection that broke gives it up to a second to get
 * there; a wait that timed out found it alive and asks once. */
static bool vm_exited_after(const struct vhpc_vm *vm, int r, char *why, size_t len)
{
    for (int i = 0; i < (r == -ETIMEDOUT ? 1 : 20); i++) {
        if (i)
            vhpc_sleep_ms(50);
        if (vhpc_vm_exited(vm, why, len))
            return true;
    }
    return false;
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
    if (r < 0 && vm_exited_after(vm, r, why, sizeof(why)))
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
    b->job->ready_ms[b->i] = vhpc_now_ms();
    return NULL;
}

int vhpc_job_boot(struct vhpc_job *job, const struct vhpc_cluster_spec *spec, int timeout_ms,
                  vhpc_err_t *err)
{
    job->failed = -1;
    int64_t t0 = vhpc_now_ms(); /* QEMUs start in vhpc_cluster_up */
    job->times.boot_ms = t0;
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
    job->times.up_ms = vhpc_now_ms();
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
        job->times.stop_ms = vhpc_now_ms();
        vhpc_err_t ignore;
        if (clean)
            for (int i = 0; i < job->cl.nvms; i++)
                if (job->agents[i])
                    agent_client_shutdown(job->agents[i], AGENT_SHUTDOWN_POWEROFF, &ignore);
        r = vhpc_cluster_down(&job->cl, clean ? VHPC_JOB_GRACE_MS : 0, err);
        job->up = false;
        job->times.down_ms = vhpc_now_ms();
    }
    pthread_mutex_unlock(&job->lock);
    return r;
}

void vhpc_job_close(struct vhpc_job *job)
{
    if (!job)
        return;
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
    if (job->signal_thread) /* it may still wake up with the job */
        return;
    pthread_mutex_destroy(&job->lock);
    free(job);
}

/* ---- what the caller reports ------------------------------------------------------- */

int vhpc_job_exit_status(int r, int status)
{
    if (r >= 0)
        return status;
    return r == -ENOENT || r == -EACCES ? 127 : 1;
}

int vhpc_job_each_status(const struct vhpc_job *job, const struct vhpc_job_each *each)
{
    int status = 0;
    for (int i = 0; i < job->cl.nvms; i++) {
        if (each->failed >= 0 && i != each->failed)
            continue; /* stopped because of the failed VM */
        if (each->r[i] < 0)
            status = vhpc_job_exit_status(each->r[i], 0);
        else if (each->status[i] && !status)
            status = each->status[i];
    }
    return status;
}

void vhpc_job_phases(const struct vhpc_job *job, struct vhpc_job_phases *p)
{
    const struct vhpc_job_times *t = &job->times;
    memset(p, 0, sizeof(*p));
    p->image_ms = t->boot_ms - t->init_ms;
    p->boot_ms = t->up_ms - t->boot_ms;
    p->run_ms = t->stop_ms - t->up_ms;
    p->teardown_ms = t->down_ms - t->stop_ms;
    p->total_ms = t->down_ms - t->init_ms;
    for (int i = 0; i < job->cl.nvms && i < VHPC_MAX_VMS; i++)
        p->vm_ready_ms[i] = job->ready_ms[i] - job->started_ms[i];
}

int vhpc_job_console_tail(const struct vhpc_job *job, int i, int lines, char *out, size_t len)
{
    char tail[8192];
    if (i < 0 || i >= job->cl.nvms || !len)
        return -EINVAL;
    int r = vhpc_vm_console_tail(&job->cl.vms[i], lines, tail, sizeof(tail));
    if (r < 0)
        return r;
    size_t n = 0;
    out[0] = 0;
    for (char *save, *l = strtok_r(tail, "\n", &save); l && n < len;
         l = strtok_r(NULL, "\n", &save))
        n += (size_t)snprintf(out + n, len - n, "  | %s\n", l);
    return 0;
}

/* ---- a cluster started elsewhere ------------------------------------------------------ */

int vhpc_job_load(struct vhpc_job *job, const char *name, vhpc_err_t *err)
{
    int r = vhpc_cluster_load(name, &job->cl, err);
    pthread_mutex_lock(&job->lock);
    job->up = r == 0;
    pthread_mutex_unlock(&job->lock);
    return r;
}

int vhpc_job_connect(struct vhpc_job *job, int i, int timeout_ms, vhpc_err_t *err)
{
    if (i >= 0 && i < job->cl.nvms && job->agents[i])
        return 0;
    return vhpc_job_attach(&job->cl, i, timeout_ms, &job->agents[i], err);
}

static int cluster_entry(const struct dirent *e)
{
    return vhpc_cluster_name_ok(e->d_name);
}

int vhpc_job_list(int (*fn)(const struct vhpc_job_info *c, void *arg), void *arg, vhpc_err_t *err)
{
    char dir[512];
    struct dirent **names;
    snprintf(dir, sizeof(dir), "%s/clusters", vhpc_run_dir());
    int n = scandir(dir, &names, cluster_entry, alphasort), r = 0;
    if (n < 0 && errno == ENOENT)
        return 0;
    if (n < 0)
        return vhpc_err_setmsg(err, -errno,
                               "cannot read %s: %s (each user's clusters are in a run directory "
                               "of their own; $VHPC_RUN_DIR names another)",
                               dir, strerror(errno));
    for (int i = 0; i < n; i++) {
        static struct vhpc_cluster cl;
        vhpc_err_t ignore;
        char path[600], owner[32] = "?", *text = NULL;
        size_t len;
        if (r == 0 && vhpc_cluster_load(names[i]->d_name, &cl, &ignore) == 0) {
            snprintf(path, sizeof(path), "%s/owner", cl.dir);
            if (vhpc_read_file_max(path, 64, &text, &len, &ignore) == 0)
                sscanf(text, "%31s", owner);
            free(text);
            struct vhpc_job_info info = {cl.name, owner, cl.nvms};
            for (int k = 0; k < cl.nvms; k++)
                info.pid[k] = cl.vms[k].pid;
            r = fn(&info, arg);
        }
        free(names[i]);
    }
    free(names);
    return r;
}

/* ---- files ------------------------------------------------------------------------ */

#define COPY_TIMEOUT_MS 600000

int vhpc_job_copy_in(struct vhpc_job *job, int i, const char *src, const char *dst, vhpc_err_t *err)
{
    int r = vhpc_job_connect(job, i, 10000, err);
    if (r < 0)
        return r;
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        r = vhpc_err_set(err, -errno, "opening %s", src);
    } else if ((r = agent_client_put_file(job->agents[i], fd, dst, st.st_mode & 07777,
                                          COPY_TIMEOUT_MS, err)) < 0) {
        vhpc_err_wrap(err, "copying %s to vm%d:%s", src, i, dst);
    }
    if (fd >= 0)
        close(fd);
    return r;
}

/* Where copy_out writes: dst, or the file a symlink dst points at; and the
 * mode the new file gets (the old one's, else what umask leaves of 0666). */
static int copy_target(const char *dst, char *target, mode_t *mode, vhpc_err_t *err)
{
    struct stat st;
    if (lstat(dst, &st) == 0 && S_ISLNK(st.st_mode)) {
        if (!realpath(dst, target))
            return vhpc_err_set(err, -errno, "resolving %s", dst);
    } else if (snprintf(target, PATH_MAX, "%s", dst) >= PATH_MAX) {
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "%s: path too long", dst);
    }
    if (stat(target, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return vhpc_err_setmsg(err, -EISDIR, "%s is a directory (give the file's path)", dst);
        if (!S_ISREG(st.st_mode))
            return vhpc_err_setmsg(err, -EINVAL, "%s is not a regular file", dst);
        *mode = st.st_mode & 07777;
    } else {
        mode_t um = umask(0);
        umask(um);
        *mode = 0666 & ~um;
    }
    return 0;
}

/* A new file in dir beside base (O_EXCL): its descriptor, its name in tmp. */
static int open_beside(const char *dir, const char *base, const char *dst, char *tmp, size_t len,
                       vhpc_err_t *err)
{
    for (int tries = 0; tries < 100; tries++) {
        if (snprintf(tmp, len, "%s/.%.64s.vhpc-cp-%d-%d", dir, base, (int)getpid(), tries) >=
            (int)len)
            return vhpc_err_setmsg(err, -ENAMETOOLONG, "%s: path too long", dst);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0)
            return fd;
        if (errno != EEXIST)
            return vhpc_err_set(err, -errno, "creating a file in %s", dir);
    }
    return vhpc_err_setmsg(err, -EEXIST, "creating a temporary file in %s", dir);
}

int vhpc_job_copy_out(struct vhpc_job *job, int i, const char *src, const char *dst,
                      vhpc_err_t *err)
{
    char target[PATH_MAX], dirbuf[PATH_MAX], basebuf[PATH_MAX], tmp[PATH_MAX + 32];
    mode_t mode = 0600;
    int r = vhpc_job_connect(job, i, 10000, err);
    if (r < 0 || (r = copy_target(dst, target, &mode, err)) < 0)
        return r;
    snprintf(dirbuf, sizeof(dirbuf), "%s", target);
    snprintf(basebuf, sizeof(basebuf), "%s", target);
    const char *dir = dirname(dirbuf), *base = basename(basebuf);
    int fd = open_beside(dir, base, dst, tmp, sizeof(tmp), err);
    if (fd < 0)
        return fd;
    r = agent_client_get_file(job->agents[i], src, fd, COPY_TIMEOUT_MS, err);
    if (r == 0 && fchmod(fd, mode) < 0)
        r = vhpc_err_set(err, -errno, "chmod %s", tmp);
    if (r == 0 && fsync(fd) < 0)
        r = vhpc_err_set(err, -errno, "writing %s", tmp);
    if (close(fd) < 0 && r == 0)
        r = vhpc_err_set(err, -errno, "writing %s", tmp);
    if (r == 0 && rename(tmp, target) < 0)
        r = vhpc_err_set(err, -errno, "renaming %s to %s", tmp, target);
    if (r < 0) {
        unlink(tmp);
        return vhpc_err_wrap(err, "copying vm%d:%s to %s (%s is unchanged)", i, src, dst, dst);
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---- the whole job ---------------------------------------------------------------- */

/* The command of a booted job, in vm0 or each VM: res->ran and res->status. */
static void run_command(struct vhpc_job *job, const struct vhpc_job_command *cmd,
                        struct vhpc_job_result *res)
{
    struct vhpc_job_each *ev = &res->ran;
    struct agent_exec_req req = {.argv = (const char *const *)cmd->argv};
    *ev = (struct vhpc_job_each){.out_fd = cmd->stdout_fd,
                                 .err_fd = cmd->stderr_fd,
                                 .signal_fd = vhpc_job_signal_fd(job),
                                 .failed = -1};
    vhpc_job_set_running(job, true);
    if (cmd->each) {
        int r = vhpc_job_run_each(job, &req, ev, &ev->errs[0]);
        if (r < 0) { /* could not even start: reported as vm0's */
            ev->failed = 0;
            ev->r[0] = r;
        }
        res->status = vhpc_job_each_status(job, ev);
    } else {
        req.flags = AGENT_EXEC_STDIN;
        struct agent_run_io io = {.stdin_fd = cmd->stdin_fd,
                                  .stdout_fd = cmd->stdout_fd,
                                  .stderr_fd = cmd->stderr_fd,
                                  .signal_fd = ev->signal_fd,
                                  .timeout_ms = -1};
        ev->r[0] = vhpc_job_run(job, 0, &req, &io, &ev->status[0], &ev->errs[0]);
        res->status = vhpc_job_exit_status(ev->r[0], ev->status[0]);
    }
    vhpc_job_set_running(job, false);
}

int vhpc_job_execute(struct vhpc_job *job, const struct vhpc_cluster_spec *spec, int timeout_ms,
                     const struct vhpc_job_command *cmd, struct vhpc_job_result *res,
                     vhpc_err_t *err)
{
    memset(res, 0, sizeof(*res));
    res->ran.failed = -1;
    int r = vhpc_job_boot(job, spec, timeout_ms, &res->boot_err);
    if (r < 0 && job->failed < 0) { /* nothing was started */
        *err = res->boot_err;
        return r;
    }
    res->booted = r == 0;
    if (!res->booted &&
        vhpc_job_console_tail(job, job->failed, 20, res->console, sizeof(res->console)) < 0)
        res->console[0] = 0;
    if (res->booted && !vhpc_job_stopped_by(job))
        run_command(job, cmd, res);
    else if (!res->booted)
        res->status = 1;
    /* Waits for the signal thread's stop, if any. */
    res->stop_r = vhpc_job_stop(job, true, &res->stop_err);
    return 0;
}
