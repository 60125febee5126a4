/*
 * cmd_run.c - `vhpc run`: boot a virtual cluster, run a command in it,
 * stream its output, tear everything down, exit with the command's status,
 * and print how long each step took.
 *
 * The work is the job API's (vhpc_job_execute): this file parses options,
 * picks the image, and prints.  SIGINT/SIGTERM/SIGHUP are the job's: while
 * the command runs, the signal is passed on to it (in every VM); once it
 * has ended, the guests are powered off cleanly and vhpc run exits 128 +
 * the signal.  A command still running VHPC_JOB_STOP_GRACE_S later, a
 * second signal, or a signal while the VMs boot stop QEMU at once.
 */
#include "clusteropts.h"
#include "vhpc/job.h"
#include "vhpc.h"

#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#define BOOT_TIMEOUT_MS 120000 /* TCG on a busy host: generous */

static const char *name, *job_file;
static bool each;

static const struct cli_opt opts[] = {
    CLI_OPT("require", CLI_LIST, cli_cluster.req_text, "REQ",
            "pick the best stored image meeting every REQ: os=debian-12,\nkernel>=6.1, PACKAGE[OP "
            "VERSION] (e.g. openmpi>=4.1), lib:SONAME;\nsays which image and why, or what each one "
            "misses",
            .max = CLI_MAX_REQS, .count = &cli_cluster.nreqs),
    CLI_OPT("build-missing", CLI_FLAG, &cli_cluster.build_missing, NULL,
            "when no image meets the requirements, build a full Debian one"),
    CLI_OPT(
        "job", CLI_STR, &job_file, "FILE",
        "options from FILE, one per line ('vms 4', 'require openmpi>=4.1',\n'command mpirun -np 4 "
        "prog'); command-line options win"),
    CLI_OPT("name", CLI_FN, &name, "NAME",
            "cluster name (default run-PID); state in /run/vhpc/clusters/NAME",
            .fn = cli_opt_cluster_name),
    CLI_OPT("each", CLI_FLAG, &each, NULL, "run COMMAND in every VM, each line prefixed [vmN]"),
    {0}};

static const struct cli_spec spec = {
    "run",
    "Usage: vhpc run --vms N [--vcpus C] [--mem MIB] [--image IMAGE | --require REQ...]\n"
    "                [--build-missing] [--name NAME] [--accel auto|kvm|tcg] [--each]\n"
    "                [--job FILE] -- COMMAND [ARGS...]\n"
    "Boot N VMs of the image (default 'minimal', built if missing) in parallel, run\n"
    "COMMAND in vm0 (with --each: in every VM, output prefixed by the VM's name),\n"
    "tear everything down and exit with COMMAND's status.  Timings go to stderr.\n",
    opts,
    cli_cluster_opts,
    .tail = CLI_TAIL_AT_ARG,
    .file_opt = "job",
    .load = cli_job_file};

/* The options (a job file's first: the command line's win) into cli_cluster
 * and the statics above, the command into *cmd; CLI_PARSED, or the exit
 * status of --help or an error. */
static int parse(int argc, char **argv, char ***cmd)
{
    struct cli_args a;
    int st = cli_parse(&spec, argc, argv, &a);
    if (st != CLI_PARSED || (st = cli_cluster_check("run", 0)) != CLI_PARSED)
        return st;
    static char *job_argv[] = {"/bin/sh", "-c", NULL, NULL};
    *cmd = a.ntail > 0 ? a.tail : a.file_command ? (job_argv[2] = a.file_command, job_argv) : NULL;
    return *cmd ? CLI_PARSED
                : cli_usage("run", "no command given (vhpc run --vms N -- COMMAND ...)");
}

static struct vhpc_job *job;

/* A signal stopped the job (job.c says so): exit as the signal's victim. */
static void on_stopped(int sig)
{
    _exit(128 + sig);
}

/* What failed, unless a signal stopped the job (then that is the story). */
static int report(const struct vhpc_job_result *res)
{
    const struct vhpc_job_each *ev = &res->ran;
    if (vhpc_job_stopped_by(job))
        return res->status;
    if (!res->booted) {
        cli_fail(&res->boot_err);
        struct vhpc_job_vm vm;
        if (res->console[0] && vhpc_job_vm(job, vhpc_job_failed_vm(job), &vm) == 0)
            fprintf(stderr, "vhpc: last lines of %s's console:\n%s", vm.name, res->console);
    }
    if (each && ev->failed >= 0)
        fprintf(stderr, "vhpc: vm%d failed; the cluster was stopped\n", ev->failed);
    for (int i = 0; res->booted && i < vhpc_job_nvms(job); i++)
        if (ev->r[i] < 0 && (ev->failed < 0 || i == ev->failed))
            cli_fail(&ev->errs[i]);
    return res->status;
}

static void print_times(const struct vhpc_image *img, const struct vhpc_cluster_spec *cs)
{
    struct vhpc_job_phases p;
    vhpc_job_phases(job, &p);
    fprintf(stderr, "\nvhpc run: %d VM%s (%d vCPU, %d MiB, %s, image %s %.12s)\n", cs->nvms,
            cs->nvms == 1 ? "" : "s", cs->vcpus, cs->mem_mib, vhpc_accel_name(cs->accel), img->name,
            img->digest);
    fprintf(stderr, "  %-28s %8.3f s\n", "image prepare", (double)p.image_ms / 1000);
    for (int i = 0; i < vhpc_job_nvms(job); i++)
        fprintf(stderr, "  QEMU start -> agent ready vm%d %8.3f s\n", i,
                (double)p.vm_ready_ms[i] / 1000);
    const char *what[] = {"boot (all VMs ready)", "run", "teardown", "total"};
    int64_t ms[] = {p.boot_ms, p.run_ms, p.teardown_ms, p.total_ms};
    for (int i = 0; i < 4; i++)
        fprintf(stderr, "  %-28s %8.3f s\n", what[i], (double)ms[i] / 1000);
}

int cmd_run(int argc, char **argv)
{
    char **cmd, defname[32];
    int status = parse(argc, argv, &cmd);
    if (status != CLI_PARSED)
        return status;
    snprintf(defname, sizeof(defname), "run-%d", (int)getpid());
    vhpc_err_t err = {0};
    signal(SIGPIPE, SIG_IGN);
    /* Signals go to the job's thread from here on, the image's build included. */
    if (vhpc_job_new(&job, &err) < 0 || vhpc_job_take_signals(job, on_stopped, &err) < 0)
        return cli_fail(&err);
    struct vhpc_image img;
    struct vhpc_cluster_spec cs;
    if (cli_cluster_prepare(name ? name : defname, &img, &cs, &err) < 0)
        return cli_fail(&err);
    static struct vhpc_job_result res;
    struct vhpc_job_command c = {cmd, each, .stdin_fd = 0, .stdout_fd = 1, .stderr_fd = 2};
    if (vhpc_job_execute(job, &cs, BOOT_TIMEOUT_MS, &c, &res, &err) < 0)
        return cli_fail(&err); /* nothing was started */
    status = report(&res);
    if (res.stop_r < 0)
        cli_fail(&res.stop_err);
    if (vhpc_job_stopped_by(job))
        _exit(128 + vhpc_job_stopped_by(job)); /* the VMs died of the signal, not the command */
    print_times(&img, &cs);
    vhpc_job_close(job);
    return status;
}
