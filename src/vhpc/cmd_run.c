/*
 * cmd_run.c - `vhpc run`: boot a virtual cluster, run a command in it,
 * stream its output, tear everything down, exit with the command's status,
 * and print how long each step took.
 *
 * The work is the job API's (cluster/job.h): this file parses options,
 * picks the image, and prints.  SIGINT/SIGTERM/SIGHUP (what a batch
 * scheduler sends) are the job's: while the command runs, the signal is
 * passed on to it (in every VM); once it has ended, the guests are powered
 * off cleanly as after any run, and vhpc run exits 128 + the signal.  A
 * command still running VHPC_JOB_STOP_GRACE_S later, a second signal, or a
 * signal while the VMs boot stop QEMU at once instead.
 */
#include "agent_client.h"
#include "clock.h"
#include "cluster.h"
#include "image.h"
#include "job.h"
#include "match.h"
#include "names.h"
#include "parse.h"
#include "vhpc.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BOOT_TIMEOUT_MS 120000 /* TCG on a busy host: generous */

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

/* The options, the job file's first (the command line's win). */
struct run_opts {
    int nvms, vcpus;
    long mem;
    const char *image, *name;
    enum vhpc_accel want;
    bool each, build_missing;
    struct vhpc_req reqs[64];
    size_t nreqs;
    char **argv; /* the command */
};

/* 0, or the exit status of a usage error or --help (printed). */
static int parse_options(int argc, char **argv, struct run_opts *o, int *exit_status)
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
    char *job_command = NULL;
    struct vhpc_req *reqs = o->reqs;
    size_t nreqs = 0;
    vhpc_err_t err = {0};
#define RETURN(x) return (*exit_status = (x), -1)

    /* A job file's options go first, so the command line's win. */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], "--job") != 0 && strncmp(argv[i], "--job=", 6) != 0)
            continue;
        const char *file = argv[i][5] == '=' ? argv[i] + 6 : i + 1 < argc ? argv[i + 1] : "";
        char **jargs;
        int nj;
        if (cli_job_file(file, &jargs, &nj, &job_command, &err) < 0)
            RETURN(cli_fail(&err));
        char **all = calloc((size_t)(argc + nj + 1), sizeof(*all));
        if (!all)
            RETURN(cli_usage("run", "out of memory"));
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
                RETURN(cli_usage("run", "%s", err.msg));
            break;
        case 'c':
            if (vhpc_parse_int("--vcpus", optarg, 1, VHPC_VCPUS_MAX, &vcpus, &err) < 0)
                RETURN(cli_usage("run", "%s", err.msg));
            break;
        case 'm':
            if (vhpc_parse_mib_opt("--mem", optarg, VHPC_MEM_MIN_MIB, VHPC_MEM_MAX_MIB, &mem,
                                   &err) < 0)
                RETURN(cli_usage("run", "%s", err.msg));
            break;
        case 'i': image = optarg; break;
        case 'N':
            if (vhpc_check_cluster_name(optarg, &err) < 0)
                RETURN(cli_usage("run", "--name: %s", err.msg));
            name = optarg;
            break;
        case 'a': accel_s = optarg; break;
        case 'e': each = true; break;
        case 'B': build_missing = true; break;
        case 'j': break; /* read above */
        case 'r':
            if (nreqs == sizeof(o->reqs) / sizeof(o->reqs[0]))
                RETURN(cli_usage("run", "at most %zu --require", nreqs));
            if (vhpc_req_parse(optarg, &reqs[nreqs++], &err) < 0)
                RETURN(cli_fail(&err));
            break;
        case 'h': fputs(run_help, stdout); RETURN(0);
        default: RETURN(cli_usage("run", "unknown option '%s'", argv[optind - 1]));
        }
    }
    if (nvms < 1)
        RETURN(cli_usage("run", "--vms N is required, 1 to %d", VHPC_MAX_VMS));
    static char *job_argv[] = {"/bin/sh", "-c", NULL, NULL};
    if (optind >= argc && job_command) {
        job_argv[2] = job_command;
        argv = job_argv;
        argc = 3;
        optind = 0;
    }
    if (optind >= argc)
        RETURN(cli_usage("run", "no command given (vhpc run --vms N -- COMMAND ...)"));
    if (build_missing && !nreqs)
        RETURN(cli_usage("run", "--build-missing needs --require (what to build)"));
    if (build_missing && image)
        RETURN(cli_usage("run", "--build-missing and --image exclude each other"));
    if (vhpc_accel_parse(accel_s, &o->want) < 0)
        RETURN(cli_usage("run", "--accel %s: expected auto, kvm or tcg", accel_s));
    if (vhpc_cluster_check_memory(nvms, mem, &err) < 0)
        RETURN(cli_fail(&err));
    o->nvms = nvms; /* o->reqs and o->want are filled in place */
    o->vcpus = vcpus;
    o->mem = mem;
    o->image = image;
    o->name = name;
    o->each = each;
    o->build_missing = build_missing;
    o->nreqs = nreqs;
    o->argv = argv + optind;
    return 0;
#undef RETURN
}
/* ---- the job ---------------------------------------------------------------------- */

static struct vhpc_job job;

/* A signal stopped the job (job.c says so): exit as the signal's victim. */
static void on_stopped(int sig)
{
    _exit(128 + sig);
}

/* The image the run boots: named, by requirements, or the default (built
 * on first use). */
static int pick_image(const struct run_opts *o, struct vhpc_image *img, vhpc_err_t *err)
{
    if (o->image || o->nreqs)
        return cli_select_image(o->image, o->reqs, o->nreqs, o->build_missing, img, err);
    if (vhpc_image_find("minimal", img, err) == 0)
        return 0;
    fprintf(stderr, "vhpc: building the minimal image (first use)\n");
    return cli_build_minimal(img, err);
}

/* The command in vm0 (stdin forwarded) or, --each, in every VM; its status. */
static int run_command(const struct run_opts *o)
{
    vhpc_err_t err = {0};
    struct agent_exec_req req = {.argv = (const char *const *)o->argv};
    int status = 0, sig = vhpc_job_signal_fd(&job);
    if (!o->each) {
        req.flags = AGENT_EXEC_STDIN;
        struct agent_run_io io = {
            .stdin_fd = 0, .stdout_fd = 1, .stderr_fd = 2, .signal_fd = sig, .timeout_ms = -1};
        int r = vhpc_job_run(&job, 0, &req, &io, &status, &err);
        if (r < 0 && !vhpc_job_stopped_by(&job)) {
            cli_fail(&err);
            status = r == -ENOENT || r == -EACCES ? 127 : 1;
        }
        return status;
    }
    static struct vhpc_job_each ev;
    ev = (struct vhpc_job_each){.out_fd = 1, .err_fd = 2, .signal_fd = sig};
    if (vhpc_job_run_each(&job, &req, &ev, &err) < 0)
        return cli_fail(&err);
    if (ev.failed >= 0)
        fprintf(stderr, "vhpc: vm%d failed; the cluster was stopped\n", ev.failed);
    for (int i = 0; i < o->nvms; i++) {
        if (ev.failed >= 0 && i != ev.failed)
            continue; /* stopped because of the failed VM */
        if (ev.r[i] < 0) {
            status = ev.r[i] == -ENOENT || ev.r[i] == -EACCES ? 127 : 1;
            if (!vhpc_job_stopped_by(&job))
                cli_fail(&ev.errs[i]);
        } else if (ev.status[i] && !status) {
            status = ev.status[i];
        }
    }
    return status;
}

int cmd_run(int argc, char **argv)
{
    static struct run_opts o;
    int status = 0;
    if (parse_options(argc, argv, &o, &status) < 0)
        return status;
    char defname[32];
    if (!o.name) {
        snprintf(defname, sizeof(defname), "run-%d", (int)getpid());
        o.name = defname;
    }
    vhpc_err_t err = {0};
    signal(SIGPIPE, SIG_IGN);
    /* Signals go to the job's thread from here on, the image's build included. */
    if (vhpc_job_init(&job, &err) < 0 || vhpc_job_take_signals(&job, on_stopped, &err) < 0)
        return cli_fail(&err);

    int64_t t0 = vhpc__now_ms();
    struct vhpc_image img;
    if (vhpc_cluster_can_start(&err) < 0 || pick_image(&o, &img, &err) < 0 ||
        vhpc_image_verify(&img, &err) < 0) /* never boot damaged bytes */
        return cli_fail(&err);
    int64_t t_image = vhpc__now_ms();
    struct vhpc_cluster_spec cs = {.name = o.name,
                                   .nvms = o.nvms,
                                   .vcpus = o.vcpus,
                                   .mem_mib = (int)o.mem,
                                   .kernel = img.kernel,
                                   .initrd = img.initrd,
                                   .rootfs = img.rootfs[0] ? img.rootfs : NULL};
    if (vhpc_accel_resolve(o.want, &cs.accel, &err) < 0)
        return cli_fail(&err);
    int r = vhpc_job_boot(&job, &cs, BOOT_TIMEOUT_MS, &err);
    if (r < 0 && job.failed < 0)
        return cli_fail(&err); /* nothing was started */
    int64_t t_boot = vhpc__now_ms();
    if (r < 0 && !vhpc_job_stopped_by(&job)) {
        status = cli_fail(&err);
        char tail[8192];
        if (vhpc_vm_console_tail(&job.cl.vms[job.failed], 20, tail, sizeof(tail)) >= 0) {
            fprintf(stderr, "vhpc: last lines of %s's console:\n", job.cl.vms[job.failed].name);
            for (char *save, *l = strtok_r(tail, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
                fprintf(stderr, "  | %s\n", l);
        }
    }
    if (r == 0 && !vhpc_job_stopped_by(&job)) {
        vhpc_job_set_running(&job, true);
        status = run_command(&o);
        vhpc_job_set_running(&job, false);
    }
    int64_t t_run = vhpc__now_ms();
    vhpc_err_t derr = {0};
    if (vhpc_job_stop(&job, true, &derr) < 0) /* waits for the signal thread's stop, if any */
        cli_fail(&derr);
    if (vhpc_job_stopped_by(&job))
        _exit(128 + vhpc_job_stopped_by(&job)); /* the VMs died of the signal, not the command */
    vhpc_job_close(&job);
    int64_t t_down = vhpc__now_ms();

#define SECS(a, b) ((double)((b) - (a)) / 1000.0)
    fprintf(stderr, "\nvhpc run: %d VM%s (%d vCPU, %ld MiB, %s, image %s %.12s)\n", o.nvms,
            o.nvms == 1 ? "" : "s", o.vcpus, o.mem, vhpc_accel_name(cs.accel), img.name,
            img.digest);
    fprintf(stderr, "  %-28s %8.3f s\n", "image prepare", SECS(t0, t_image));
    for (int i = 0; i < o.nvms; i++) {
        char what[40];
        snprintf(what, sizeof(what), "QEMU start -> agent ready vm%d", i);
        fprintf(stderr, "  %-28s %8.3f s\n", what, SECS(job.started_ms[i], job.ready_ms[i]));
    }
    fprintf(stderr, "  %-28s %8.3f s\n", "boot (all VMs ready)", SECS(t_image, t_boot));
    fprintf(stderr, "  %-28s %8.3f s\n", "run", SECS(t_boot, t_run));
    fprintf(stderr, "  %-28s %8.3f s\n", "teardown", SECS(t_run, t_down));
    fprintf(stderr, "  %-28s %8.3f s\n", "total", SECS(t0, t_down));
    return status;
}
