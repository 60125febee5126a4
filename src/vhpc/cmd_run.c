/*
 * cmd_run.c - `vhpc run`: boot a virtual cluster, run a command in it,
 * stream its output, tear everything down, exit with the command's status,
 * and print how long each step took.
 *
 * SIGINT/SIGTERM/SIGHUP (what a batch scheduler sends) are taken by a
 * thread of their own.  While the command runs, the signal is passed on to
 * it (in every VM); once it has ended, the guests are powered off cleanly as
 * after any run, and vhpc run exits 128 + the signal.  A command still
 * running STOP_GRACE_S later, a second signal, or a signal while the VMs
 * boot make the thread stop QEMU at once instead.
 */
#include "agent_client.h"
#include "clock.h"
#include "cluster.h"
#include "job.h"
#include "image.h"
#include "match.h"
#include "names.h"
#include "parse.h"
#include "vhpc.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <sys/signalfd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BOOT_TIMEOUT_MS 120000 /* TCG on a busy host: generous */
#define STOP_GRACE_S    10     /* from a signal passed on to the command to QEMU stopped */

static const char run_help[] =
    "Usage: vhpc run --vms N [--vcpus C] [--mem MIB] [--image IMAGE | --require REQ...]\n"
    "                [--build-missing] [--name NAME] [--accel auto|kvm|tcg] [--each]\n"
    "                [--job FILE] -- COMMAND [ARGS...]\n"
    "Boot N VMs of the image (default 'minimal', built if missing) in parallel, run\n"
    "COMMAND in vm0 (with --each: in every VM, output prefixed by the VM's name),\n"
    "tear everything down and exit with COMMAND's status.  Timings go to stderr.\n"
    "  --vcpus C       vCPUs per VM (default 1)\n"
    "  --mem MIB       memory per VM, e.g. 256 or 1G (default 256)\n"
    "  --image IMAGE   NAME, NAME:VERSION or a digest prefix (vhpc image list)\n"
    "  --require REQ   pick the best stored image meeting every REQ: os=debian-12,\n"
    "                  kernel>=6.1, PACKAGE[OP VERSION] (e.g. openmpi>=4.1), lib:SONAME;\n"
    "                  says which image and why, or what each one misses\n"
    "  --build-missing when no image meets the requirements, build a full Debian one\n"
    "  --job FILE      options from FILE, one per line ('vms 4', 'require openmpi>=4.1',\n"
    "                  'command mpirun -np 4 prog'); command-line options win\n"
    "  --accel A       kvm only with hardware virtualization; auto picks (default)\n"
    "  --name NAME     cluster name (default run-PID); state in /run/vhpc/clusters/NAME\n";

/* ---- the job, shared with the signal thread ---------------------------------- */

static struct vhpc_job job;
static atomic_int stop_signal; /* set by the signal thread before it stops the job */
static atomic_bool running;    /* commands are running: signals are passed on to them */
static int stop_pipe[2];       /* struct signalfd_siginfo records for the commands */

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig;
    if (sigwait(set, &sig) != 0)
        return NULL;
    atomic_store(&stop_signal, sig);
    vhpc_job_interrupt(&job);
    if (atomic_load(&running)) {
        fprintf(stderr, "vhpc: %s: passing it on to the command (again to stop the VMs now)\n",
                strsignal(sig));
        struct signalfd_siginfo si = {.ssi_signo = (uint32_t)sig};
        for (int i = 0; i < VHPC_MAX_VMS; i++) /* one for each command's thread */
            if (write(stop_pipe[1], &si, sizeof(si)) < 0)
                break;
        struct timespec grace = {.tv_sec = STOP_GRACE_S};
        if (sigtimedwait(set, NULL, &grace) < 0)
            fprintf(stderr, "vhpc: the command still runs %d s after the signal\n", STOP_GRACE_S);
    }
    fprintf(stderr, "vhpc: %s: stopping the cluster\n", strsignal(sig));
    vhpc_err_t ignore;
    vhpc_job_stop(&job, false, &ignore); /* waits for a clean stop already under way */
    _exit(128 + sig);
}

/* ---- --each: output prefixed with the VM's name ------------------------------------ */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

struct prefixer {
    int fd;   /* read end */
    FILE *to; /* stdout or stderr */
    char name[16];
    pthread_t th;
    bool running;
};

static void *prefix_thread(void *arg)
{
    struct prefixer *p = arg;
    FILE *in = fdopen(p->fd, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) > 0) {
        pthread_mutex_lock(&out_lock);
        fprintf(p->to, "[%s] %s%s", p->name, line, line[n - 1] == '\n' ? "" : "\n");
        fflush(p->to);
        pthread_mutex_unlock(&out_lock);
    }
    free(line);
    fclose(in);
    return NULL;
}

/* Per VM: a pipe and a prefixing thread for stdout and for stderr. */
struct prefixed {
    struct prefixer p[2];
    int wr[2];
};
static struct prefixed prefixed[VHPC_MAX_VMS];

static int prefix_open(int vm, struct agent_run_io *io, void *arg)
{
    (void)arg;
    struct prefixed *x = &prefixed[vm];
    FILE *to[2] = {stdout, stderr};
    for (int k = 0; k < 2; k++) {
        int p[2];
        x->wr[k] = -1;
        if (pipe2(p, O_CLOEXEC) < 0)
            return -errno;
        x->p[k] = (struct prefixer){.fd = p[0], .to = to[k]};
        snprintf(x->p[k].name, sizeof(x->p[k].name), "vm%d", vm);
        x->wr[k] = p[1];
        int e = pthread_create(&x->p[k].th, NULL, prefix_thread, &x->p[k]);
        if (e) {
            close(p[0]);
            return -e;
        }
        x->p[k].running = true;
    }
    io->stdout_fd = x->wr[0];
    io->stderr_fd = x->wr[1];
    return 0;
}

static void prefix_close(int vm, void *arg)
{
    (void)arg;
    struct prefixed *x = &prefixed[vm];
    for (int k = 0; k < 2; k++) {
        if (x->wr[k] >= 0)
            close(x->wr[k]);
        if (x->p[k].running)
            pthread_join(x->p[k].th, NULL);
    }
}

/* The last lines of a VM's serial console, to explain a failed boot. */
static void print_console_tail(const struct vhpc_vm *vm)
{
    FILE *f = fopen(vm->console_path, "r");
    char *lines[20] = {0}, buf[512];
    int n = 0;
    if (!f)
        return;
    while (fgets(buf, sizeof(buf), f)) {
        free(lines[n % 20]);
        lines[n % 20] = strdup(buf);
        n++;
    }
    fclose(f);
    fprintf(stderr, "vhpc: last lines of %s's console:\n", vm->name);
    for (int i = n > 20 ? n - 20 : 0; i < n; i++) {
        fprintf(stderr, "  | %s", lines[i % 20] ? lines[i % 20] : "\n");
        free(lines[i % 20]);
        lines[i % 20] = NULL;
    }
}

/* Memory the host can give, in MiB (MemAvailable). */
static long host_mem_mib(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb < 0 ? -1 : kb / 1024;
}

int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"vms", 1, 0, 'n'},           {"vcpus", 1, 0, 'c'}, {"mem", 1, 0, 'm'},
        {"image", 1, 0, 'i'},         {"name", 1, 0, 'N'},  {"accel", 1, 0, 'a'},
        {"each", 0, 0, 'e'},          {"help", 0, 0, 'h'},  {"require", 1, 0, 'r'},
        {"build-missing", 0, 0, 'B'}, {"job", 1, 0, 'j'},   {0, 0, 0, 0}};
    int nvms = 0, vcpus = 1, c;
    long mem = 256;
    const char *image = NULL, *name = NULL, *accel_s = "auto";
    bool each = false, build_missing = false;
    char defname[32], *job_command = NULL;
    static struct vhpc_req reqs[64];
    size_t nreqs = 0;
    vhpc_err_t err = {0};

    /* A job file's options go first, so the command line's win. */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--job") != 0 && strncmp(argv[i], "--job=", 6) != 0)
            continue;
        const char *file = argv[i][5] == '=' ? argv[i] + 6 : i + 1 < argc ? argv[i + 1] : "";
        char **jargs;
        int nj;
        if (cli_job_file(file, &jargs, &nj, &job_command, &err) < 0)
            return cli_fail(&err);
        char **all = calloc((size_t)(argc + nj + 1), sizeof(*all));
        if (!all)
            return cli_usage("run", "out of memory");
        all[0] = argv[0];
        memcpy(all + 1, jargs, (size_t)nj * sizeof(*all));
        memcpy(all + 1 + nj, argv + 1, (size_t)(argc - 1) * sizeof(*all));
        argc += nj;
        argv = all; /* lives as long as the process */
        break;
    }

    optind = 1;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (vhpc_parse_int("--vms", optarg, 1, VHPC_MAX_VMS, &nvms, &err) < 0)
                return cli_usage("run", "%s", err.msg);
            break;
        case 'c':
            if (vhpc_parse_int("--vcpus", optarg, 1, VHPC_VCPUS_MAX, &vcpus, &err) < 0)
                return cli_usage("run", "%s", err.msg);
            break;
        case 'm':
            if (vhpc_parse_mib_opt("--mem", optarg, VHPC_MEM_MIN_MIB, VHPC_MEM_MAX_MIB, &mem,
                                   &err) < 0)
                return cli_usage("run", "%s", err.msg);
            break;
        case 'i': image = optarg; break;
        case 'N':
            if (vhpc_check_cluster_name(optarg, &err) < 0)
                return cli_usage("run", "--name: %s", err.msg);
            name = optarg;
            break;
        case 'a': accel_s = optarg; break;
        case 'e': each = true; break;
        case 'B': build_missing = true; break;
        case 'j': break; /* read above */
        case 'r':
            if (nreqs == sizeof(reqs) / sizeof(*reqs))
                return cli_usage("run", "at most %zu --require", nreqs);
            if (vhpc_req_parse(optarg, &reqs[nreqs++], &err) < 0)
                return cli_fail(&err);
            break;
        case 'h': fputs(run_help, stdout); return 0;
        default: return cli_usage("run", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (nvms < 1)
        return cli_usage("run", "--vms N is required, 1 to %d", VHPC_MAX_VMS);
    char *job_argv[] = {"/bin/sh", "-c", job_command, NULL};
    if (optind >= argc && job_command) {
        argv = job_argv;
        argc = 3;
        optind = 0;
    }
    if (optind >= argc)
        return cli_usage("run", "no command given (vhpc run --vms N -- COMMAND ...)");
    if (build_missing && !nreqs)
        return cli_usage("run", "--build-missing needs --require (what to build)");
    if (build_missing && image)
        return cli_usage("run", "--build-missing and --image exclude each other");
    enum vhpc_accel want;
    if (vhpc_accel_parse(accel_s, &want) < 0)
        return cli_usage("run", "--accel %s: expected auto, kvm or tcg", accel_s);
    long avail = host_mem_mib();
    if (avail > 0 && mem * nvms > avail) {
        vhpc_err_setmsg(&err, -ENOMEM,
                        "%d VMs of %ld MiB need %ld MiB but the host has %ld MiB available; "
                        "use fewer VMs or less --mem",
                        nvms, mem, mem * nvms, avail);
        return cli_fail(&err);
    }
    if (!name) {
        snprintf(defname, sizeof(defname), "run-%d", (int)getpid());
        name = defname;
    }

    /* Signals go to the signal thread only, from here on. */
    static sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        vhpc_err_set(&err, -errno, "pipe");
        return cli_fail(&err);
    }
    pthread_t sigthr;
    int e = pthread_create(&sigthr, NULL, signal_thread, &set);
    if (e) {
        vhpc_err_set(&err, -e, "starting the signal thread");
        return cli_fail(&err);
    }

    int64_t t0 = vhpc__now_ms();
    if (vhpc_cluster_can_start(&err) < 0)
        return cli_fail(&err);
    struct vhpc_image img;
    if (image || nreqs) {
        if (cli_select_image(image, reqs, nreqs, build_missing, &img, &err) < 0)
            return cli_fail(&err);
    } else if (vhpc_image_find("minimal", &img, &err) < 0) {
        /* The default image is built on first use. */
        fprintf(stderr, "vhpc: building the minimal image (first use)\n");
        if (cli_build_minimal(&img, &err) < 0)
            return cli_fail(&err);
    }
    /* Never boot damaged bytes (a damaged blob is removed; rebuilding or
     * pulling the image brings it back). */
    if (vhpc_image_verify(&img, &err) < 0)
        return cli_fail(&err);
    int64_t t_image = vhpc__now_ms();

    struct vhpc_cluster_spec cs = {.name = name,
                                   .nvms = nvms,
                                   .vcpus = vcpus,
                                   .mem_mib = (int)mem,
                                   .kernel = img.kernel,
                                   .initrd = img.initrd,
                                   .rootfs = img.rootfs[0] ? img.rootfs : NULL};
    if (vhpc_accel_resolve(want, &cs.accel, &err) < 0)
        return cli_fail(&err);
    int status = 0;
    int r = vhpc_job_boot(&job, &cs, BOOT_TIMEOUT_MS, &err);
    if (r < 0 && job.failed < 0)
        return cli_fail(&err); /* nothing was started */
    int64_t t_boot = vhpc__now_ms();
    if (r < 0 && !atomic_load(&stop_signal)) {
        status = cli_fail(&err);
        print_console_tail(&job.cl.vms[job.failed]); /* its directory is removed below */
    }

    int64_t t_run0 = vhpc__now_ms();
    if (r == 0 && !atomic_load(&stop_signal)) {
        atomic_store(&running, true);
        struct agent_exec_req req = {.argv = (const char *const *)argv + optind};
        if (each) {
            static struct vhpc_job_each ev;
            ev = (struct vhpc_job_each){
                .open = prefix_open, .close = prefix_close, .signal_fd = stop_pipe[0]};
            if (vhpc_job_run_each(&job, &req, &ev, &err) < 0)
                return cli_fail(&err);
            if (ev.failed >= 0)
                fprintf(stderr, "vhpc: vm%d failed; the cluster was stopped\n", ev.failed);
            for (int i = 0; i < nvms; i++) {
                if (ev.failed >= 0 && i != ev.failed)
                    continue; /* stopped because of the failed VM */
                if (ev.r[i] < 0) {
                    status = ev.r[i] == -ENOENT || ev.r[i] == -EACCES ? 127 : 1;
                    if (!atomic_load(&stop_signal))
                        cli_fail(&ev.errs[i]);
                } else if (ev.status[i] && !status) {
                    status = ev.status[i];
                }
            }
        } else {
            req.flags = AGENT_EXEC_STDIN;
            struct agent_run_io io = {.stdin_fd = 0,
                                      .stdout_fd = 1,
                                      .stderr_fd = 2,
                                      .signal_fd = stop_pipe[0],
                                      .timeout_ms = -1};
            r = vhpc_job_run(&job, 0, &req, &io, &status, &err);
            if (r < 0 && !atomic_load(&stop_signal)) {
                cli_fail(&err);
                status = r == -ENOENT || r == -EACCES ? 127 : 1;
            }
        }
    }
    atomic_store(&running, false);
    int64_t t_run = vhpc__now_ms();
    vhpc_err_t derr = {0};
    if (vhpc_job_stop(&job, true, &derr) < 0) /* waits for the signal thread's stop, if any */
        cli_fail(&derr);
    int sig = atomic_load(&stop_signal);
    if (sig)
        _exit(128 + sig); /* the VMs died of the signal, not of the command */
    vhpc_job_close(&job);
    int64_t t_down = vhpc__now_ms();

#define SECS(a, b) ((double)((b) - (a)) / 1000.0)
    fprintf(stderr, "\nvhpc run: %d VM%s (%d vCPU, %ld MiB, %s, image %s %.12s)\n", nvms,
            nvms == 1 ? "" : "s", vcpus, mem, vhpc_accel_name(cs.accel), img.name, img.digest);
    fprintf(stderr, "  %-28s %8.3f s\n", "image prepare", SECS(t0, t_image));
    for (int i = 0; i < nvms; i++) {
        char what[40];
        snprintf(what, sizeof(what), "QEMU start -> agent ready vm%d", i);
        fprintf(stderr, "  %-28s %8.3f s\n", what, SECS(job.started_ms[i], job.ready_ms[i]));
    }
    fprintf(stderr, "  %-28s %8.3f s\n", "boot (all VMs ready)", SECS(t_image, t_boot));
    fprintf(stderr, "  %-28s %8.3f s\n", "run", SECS(t_run0, t_run));
    fprintf(stderr, "  %-28s %8.3f s\n", "teardown", SECS(t_run, t_down));
    fprintf(stderr, "  %-28s %8.3f s\n", "total", SECS(t0, t_down));
    return status;
}
