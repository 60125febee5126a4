/*
 * cmd_vm.c - `vhpc vm start|exec|console|stop|list`: clusters for
 * interactive use.  A cluster started here has no owning process; it lives
 * until `vhpc vm stop` (or `vhpc gc --all`).
 */
#include "clusteropts.h"
#include "vhpc/job.h"
#include "vhpc/cluster.h"
#include "vhpc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char vm_help[] =
    "Usage: vhpc vm start NAME [--vms N] [--vcpus C] [--mem MIB] [--image I] [--accel A]\n"
    "       vhpc vm exec NAME [--vm I] -- COMMAND [ARGS...]\n"
    "       vhpc vm cp NAME SRC DST      (one of them vmI:PATH, the other a host path)\n"
    "       vhpc vm console NAME [--vm I]\n"
    "       vhpc vm stop NAME\n"
    "       vhpc vm list\n";

static struct vhpc_job *job; /* one per process */

/* --vm I of exec and console. */
static int vm;
static const struct cli_opt vm_opts[] = {
    CLI_OPT("vm", CLI_INT, &vm, "I", "the VM (default 0)", .min = 0, .max = VHPC_MAX_VMS - 1), {0}};

/* Parse a verb's options and its cluster name (in *name), ready the job
 * and, with load, load the cluster into it: CLI_PARSED, or the exit status. */
static int begin(const struct cli_spec *spec, int argc, char **argv, struct cli_args *a,
                 const char **name, bool load)
{
    vhpc_err_t err = {0};
    int st = cli_parse(spec, argc, argv, a);
    if (st != CLI_PARSED)
        return st;
    if (a->npos < 1)
        return cli_usage(spec->cmd, "a cluster name is needed");
    if (vhpc_check_cluster_name(a->pos[0], &err) < 0)
        return cli_usage(spec->cmd, "%s", err.msg);
    *name = a->pos[0];
    if (vhpc_job_new(&job, &err) < 0 || (load && vhpc_job_load(job, *name, &err) < 0))
        return cli_fail(&err);
    return CLI_PARSED;
}

static int vm_start(int argc, char **argv)
{
    static const struct cli_spec spec = {
        "vm start",
        "Usage: vhpc vm start NAME [--vms N] [--vcpus C] [--mem MIB] [--image I] "
        "[--accel A]\nStart a cluster that lives until `vhpc vm stop NAME`.\n",
        NULL, cli_cluster_opts, .max_pos = 1};
    struct cli_args a;
    const char *name;
    int st = begin(&spec, argc, argv, &a, &name, false);
    if (st != CLI_PARSED)
        return st;
    if (!cli_cluster.image)
        cli_cluster.image = "minimal"; /* never built here: vhpc run or image build does */
    if ((st = cli_cluster_check(spec.cmd, 1)) != CLI_PARSED)
        return st;
    struct vhpc_image img;
    struct vhpc_cluster_spec cs;
    vhpc_err_t err = {0};
    if (cli_cluster_prepare(name, &img, &cs, &err) < 0)
        return cli_fail(&err);
    cs.detached = true;                              /* no owning process */
    if (vhpc_job_boot(job, &cs, 120000, &err) < 0) { /* the VMs boot in parallel */
        vhpc_err_t ignore;
        vhpc_job_stop(job, false, &ignore);
        vhpc_job_close(job);
        return cli_fail(&err);
    }
    for (int i = 0; i < vhpc_job_nvms(job); i++) {
        const struct agent_hello *h = vhpc_job_hello(job, i);
        struct vhpc_job_vm v;
        vhpc_job_vm(job, i, &v);
        printf("%s/vm%d ready: %s, kernel %s, %s\n", vhpc_job_name(job), i, h->hostname, h->kernel,
               v.ip);
    }
    vhpc_job_close(job);
    return 0;
}

static int vm_exec(int argc, char **argv)
{
    const struct cli_spec spec = {"vm exec",
                                  "Usage: vhpc vm exec NAME [--vm I] -- COMMAND [ARGS...]\n"
                                  "Run COMMAND in a VM of the cluster, stdin forwarded.\n",
                                  vm_opts, .max_pos = 1, .tail = CLI_TAIL_DASHDASH};
    struct cli_args a;
    const char *name;
    vhpc_err_t err = {0};
    int st = begin(&spec, argc, argv, &a, &name, false);
    if (st != CLI_PARSED)
        return st;
    if (a.ntail < 1)
        return cli_usage(spec.cmd, "no command (vhpc vm exec NAME -- COMMAND ...)");
    if (vhpc_job_load(job, name, &err) < 0 || vhpc_job_connect(job, vm, 10000, &err) < 0)
        return cli_fail(&err);
    struct agent_exec_req req = {.argv = (const char *const *)a.tail, .flags = AGENT_EXEC_STDIN};
    struct agent_run_io io = {.stdin_fd = 0,
                              .stdout_fd = 1,
                              .stderr_fd = 2,
                              .signal_fd = agent_client_signalfd(),
                              .second_signal_ends = true,
                              .timeout_ms = -1};
    int status = 0, r = vhpc_job_run(job, vm, &req, &io, &status, &err);
    vhpc_job_close(job);
    if (r < 0)
        cli_fail(&err);
    return vhpc_job_exit_status(r, status);
}
/* "vm3:/etc/hosts" -> 3 and "/etc/hosts"; -1 for a host path.  Only
 * "vm" + decimal digits + ':' is a guest path. */
static int guest_path(const char *arg, const char **path)
{
    size_t n = strncmp(arg, "vm", 2) == 0 ? strspn(arg + 2, "0123456789") : 0;
    if (n > 0 && n <= 3 && arg[2 + n] == ':') {
        *path = arg + 3 + n;
        return atoi(arg + 2); /* at most 3 digits: no overflow */
    }
    *path = arg;
    return -1;
}

static int vm_cp(int argc, char **argv)
{
    static const struct cli_spec spec = {
        "vm cp",
        "Usage: vhpc vm cp NAME SRC DST\nCopy a file into a VM or out of it: one of SRC and DST "
        "is vmI:PATH, the\nother a host path.  A host file copied over is replaced whole or "
        "not at all.\n",
        NULL, .max_pos = 3};
    struct cli_args a;
    const char *name, *src, *dst;
    vhpc_err_t err = {0};
    int st = begin(&spec, argc, argv, &a, &name, false);
    if (st != CLI_PARSED)
        return st;
    if (a.npos != 3)
        return cli_usage("vm cp", "expected NAME SRC DST (e.g. vhpc vm cp c1 ./in vm0:/tmp/in)");
    int svm = guest_path(a.pos[1], &src), dvm = guest_path(a.pos[2], &dst);
    if ((svm < 0) == (dvm < 0))
        return cli_usage("vm cp", "exactly one of SRC and DST must be vmI:PATH");
    if (vhpc_job_load(job, name, &err) < 0)
        return cli_fail(&err);
    int r = dvm >= 0 ? vhpc_job_copy_in(job, dvm, src, dst, &err)
                     : vhpc_job_copy_out(job, svm, src, dst, &err);
    vhpc_job_close(job);
    return r < 0 ? cli_fail(&err) : 0;
}

static int vm_console(int argc, char **argv)
{
    static const struct cli_spec spec = {
        "vm console", "Usage: vhpc vm console NAME [--vm I]\nA VM's console output so far.\n",
        vm_opts, .max_pos = 1};
    struct cli_args a;
    const char *name;
    vhpc_err_t err = {0};
    int st = begin(&spec, argc, argv, &a, &name, true);
    if (st != CLI_PARSED)
        return st;
    if (vm >= vhpc_job_nvms(job)) {
        vhpc_err_setmsg(&err, -EINVAL, "cluster %s has no vm%d", vhpc_job_name(job), vm);
        return cli_fail(&err);
    }
    struct vhpc_job_vm v;
    vhpc_job_vm(job, vm, &v);
    int fd = open(v.console, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        vhpc_err_set(&err, -errno, "opening %s", v.console);
        return cli_fail(&err);
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        if (write(1, buf, (size_t)n) != n)
            break;
    close(fd);
    return 0;
}

static int vm_stop(int argc, char **argv)
{
    static const struct cli_spec spec = {
        "vm stop", "Usage: vhpc vm stop NAME\nPower the cluster's VMs off and remove it.\n", NULL,
        .max_pos = 1};
    struct cli_args a;
    const char *name;
    int st = begin(&spec, argc, argv, &a, &name, true);
    if (st != CLI_PARSED)
        return st;
    vhpc_err_t err = {0}, ignore;
    for (int i = 0; i < vhpc_job_nvms(job); i++)
        vhpc_job_connect(job, i, 2000, &ignore); /* those that answer power off cleanly */
    int r = vhpc_job_stop(job, true, &err);
    if (r == 0)
        printf("stopped %s\n", vhpc_job_name(job));
    vhpc_job_close(job);
    return r < 0 ? cli_fail(&err) : 0; /* what is left stays recorded, for vhpc gc */
}

/* Each cluster's line of vm list, after the header. */
static int list_one(const struct vhpc_job_info *c, void *arg)
{
    bool *header = arg;
    if (!*header)
        *header = printf("%-20s %-4s %-10s %s\n", "CLUSTER", "VMS", "OWNER", "VM PIDS") > 0;
    if (!c)
        return 0;
    printf("%-20s %-4d %-10s", c->name, c->nvms, c->owner);
    for (int i = 0; i < c->nvms; i++)
        printf(" vm%d:%d%s", i, (int)c->pid[i],
               c->pid[i] > 0 && kill(c->pid[i], 0) == 0 ? "" : "(dead)");
    printf("\n");
    return 0;
}

static int vm_list(int argc, char **argv)
{
    static const struct cli_spec spec = {
        "vm list",
        "Usage: vhpc vm list\nEvery cluster of this user: its VMs and their QEMU pids.\n",
        .opts = NULL};
    struct cli_args a;
    int st = cli_parse(&spec, argc, argv, &a);
    if (st != CLI_PARSED)
        return st;
    vhpc_err_t err = {0};
    bool header = false;
    if (vhpc_job_list(list_one, &header, &err) < 0) {
        fprintf(stderr, "vhpc vm list: %s\n", err.msg);
        return 1;
    }
    return list_one(NULL, &header); /* the header alone: no cluster */
}

int cmd_vm(int argc, char **argv)
{
    static const struct cli_sub subs[] = {
        {"start", vm_start}, {"exec", vm_exec}, {"cp", vm_cp}, {"console", vm_console},
        {"stop", vm_stop},   {"list", vm_list}, {NULL, NULL}};
    return cli_dispatch("vm", subs, vm_help, argc, argv);
}
