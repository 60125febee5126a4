/*
 * cmd_vm.c - `vhpc vm start|exec|console|stop|list`: clusters for
 * interactive use.  A cluster started here has no owning process; it lives
 * until `vhpc vm stop` (or `vhpc gc --all`).
 */
#include "agent_client.h"
#include "cluster.h"
#include "image.h"
#include "vhpc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char vm_help[] =
    "Usage: vhpc vm start NAME [--vms N] [--vcpus C] [--mem MIB] [--image I] [--accel A]\n"
    "       vhpc vm exec NAME [--vm I] -- COMMAND [ARGS...]\n"
    "       vhpc vm cp NAME SRC DST      (one of them vmI:PATH, the other a host path)\n"
    "       vhpc vm console NAME [--vm I]\n"
    "       vhpc vm stop NAME\n"
    "       vhpc vm list\n";

static int connect_agent(struct vhpc_cluster *cl, int i, agent_client_t **a, int timeout_ms,
                         vhpc_err_t *err)
{
    if (i < 0 || i >= cl->nvms)
        return vhpc_err_setmsg(err, -EINVAL, "cluster %s has no vm%d (it has %d VMs)", cl->name, i,
                               cl->nvms);
    int r = agent_client_connect(cl->vms[i].agent_path, 2000, a, err);
    if (r == 0 && ((r = agent_client_wait_ready(*a, timeout_ms, err)) < 0 ||
                   (r = agent_client_send_key(*a, cl->key, 10000, err)) < 0))
        agent_client_close(*a);
    char why[512];
    if (r < 0 && vhpc_vm_exited(&cl->vms[i], why, sizeof(why)))
        vhpc_err_setmsg(err, r, "%s/vm%d: %s", cl->name, i, why);
    else if (r < 0)
        vhpc_err_wrap(err, "%s/vm%d", cl->name, i);
    return r;
}

static int vm_start(int argc, char **argv)
{
    if (argc < 2)
        return vhpc_usage("vm start", "a cluster name is needed");
    struct vhpc_cluster_spec spec = {
        .name = argv[1], .nvms = 1, .vcpus = 1, .mem_mib = 256, .detached = true};
    const char *image = "minimal", *accel = "auto";
    for (int i = 2; i < argc; i++) {
        if (i + 1 >= argc)
            return vhpc_usage("vm start", "'%s' needs an argument or is unknown", argv[i]);
        if (!strcmp(argv[i], "--vms"))
            spec.nvms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--vcpus"))
            spec.vcpus = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--mem"))
            spec.mem_mib = (int)vhpc_parse_mib(argv[++i]);
        else if (!strcmp(argv[i], "--image"))
            image = argv[++i];
        else if (!strcmp(argv[i], "--accel"))
            accel = argv[++i];
        else
            return vhpc_usage("vm start", "unknown argument '%s'", argv[i]);
    }
    if (spec.mem_mib < 64 || spec.vcpus < 1)
        return vhpc_usage("vm start", "--mem at least 64 MiB, --vcpus at least 1");
    vhpc_err_t err = {0};
    struct vhpc_image img;
    if (vhpc_image_find(image, &img, &err) < 0 || vhpc_image_verify(&img, &err) < 0)
        return vhpc_fail(&err);
    spec.kernel = img.kernel;
    spec.initrd = img.initrd;
    spec.rootfs = img.rootfs[0] ? img.rootfs : NULL;
    enum vhpc_accel want;
    if (vhpc_accel_parse(accel, &want) < 0)
        return vhpc_usage("vm start", "--accel %s: expected auto, kvm or tcg", accel);
    if (vhpc_accel_resolve(want, &spec.accel, &err) < 0)
        return vhpc_fail(&err);
    struct vhpc_cluster cl;
    if (vhpc_cluster_up(&spec, &cl, &err) < 0)
        return vhpc_fail(&err);
    for (int i = 0; i < cl.nvms; i++) {
        agent_client_t *a;
        if (connect_agent(&cl, i, &a, 120000, &err) < 0) {
            vhpc_err_t ignore;
            vhpc_cluster_down(&cl, 0, &ignore);
            return vhpc_fail(&err);
        }
        printf("%s/vm%d ready: %s, kernel %s, %s\n", cl.name, i, agent_client_hello(a)->hostname,
               agent_client_hello(a)->kernel, cl.ips[i]);
        agent_client_close(a);
    }
    return 0;
}

static int vm_exec(int argc, char **argv)
{
    if (argc < 2)
        return vhpc_usage("vm exec", "a cluster name is needed");
    int vm = 0, i = 2;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--vm") && i + 1 < argc)
            vm = atoi(argv[++i]);
        else
            return vhpc_usage("vm exec", "unknown argument '%s'", argv[i]);
    }
    if (i + 1 >= argc)
        return vhpc_usage("vm exec", "no command (vhpc vm exec NAME -- COMMAND ...)");
    vhpc_err_t err = {0};
    struct vhpc_cluster cl;
    agent_client_t *a;
    if (vhpc_cluster_load(argv[1], &cl, &err) < 0 || connect_agent(&cl, vm, &a, 10000, &err) < 0)
        return vhpc_fail(&err);
    struct vhpc_env_buf eb;
    const char *env[5];
    vhpc_cluster_env(&cl, vm, &eb, env);
    struct agent_exec_req req = {
        .argv = (const char *const *)argv + i + 1, .env = env, .flags = AGENT_EXEC_STDIN};
    struct agent_run_io io = {.stdin_fd = 0,
                              .stdout_fd = 1,
                              .stderr_fd = 2,
                              .signal_fd = agent_client_signalfd(),
                              .second_signal_ends = true,
                              .timeout_ms = -1};
    int status = 0, r = agent_client_run(a, &req, &io, &status, &err);
    agent_client_close(a);
    if (r < 0) {
        vhpc_fail(&err);
        return r == -ENOENT || r == -EACCES ? 127 : 1;
    }
    return status;
}

/* "vm3:/etc/hosts" -> 3 and "/etc/hosts"; -1 for a host path. */
static int guest_path(const char *arg, const char **path)
{
    int vm, n = 0;
    if (sscanf(arg, "vm%d:%n", &vm, &n) == 1 && n > 0 && vm >= 0) {
        *path = arg + n;
        return vm;
    }
    *path = arg;
    return -1;
}

static int vm_cp(int argc, char **argv)
{
    if (argc != 4)
        return vhpc_usage("vm cp", "expected NAME SRC DST (e.g. vhpc vm cp c1 ./in vm0:/tmp/in)");
    const char *src, *dst;
    int svm = guest_path(argv[2], &src), dvm = guest_path(argv[3], &dst);
    if ((svm < 0) == (dvm < 0))
        return vhpc_usage("vm cp", "exactly one of SRC and DST must be vmI:PATH");
    vhpc_err_t err = {0};
    struct vhpc_cluster cl;
    agent_client_t *a;
    int vm = svm >= 0 ? svm : dvm;
    if (vhpc_cluster_load(argv[1], &cl, &err) < 0 || connect_agent(&cl, vm, &a, 10000, &err) < 0)
        return vhpc_fail(&err);
    int r;
    if (dvm >= 0) { /* host -> guest */
        int fd = open(src, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
            r = vhpc_err_set(&err, -errno, "opening %s", src);
        } else {
            r = agent_client_put_file(a, fd, dst, st.st_mode & 07777, 600000, &err);
            if (r < 0)
                vhpc_err_wrap(&err, "copying %s to vm%d:%s", src, vm, dst);
        }
        if (fd >= 0)
            close(fd);
    } else { /* guest -> host */
        int fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            r = vhpc_err_set(&err, -errno, "creating %s", dst);
        } else {
            r = agent_client_get_file(a, src, fd, 600000, &err);
            if (close(fd) < 0 && r == 0)
                r = vhpc_err_set(&err, -errno, "writing %s", dst);
            if (r < 0) {
                vhpc_err_wrap(&err, "copying vm%d:%s to %s", vm, src, dst);
                unlink(dst); /* no half file left behind */
            }
        }
    }
    agent_client_close(a);
    return r < 0 ? vhpc_fail(&err) : 0;
}

static int vm_console(int argc, char **argv)
{
    if (argc < 2)
        return vhpc_usage("vm console", "a cluster name is needed");
    int vm = argc >= 4 && !strcmp(argv[2], "--vm") ? atoi(argv[3]) : 0;
    vhpc_err_t err = {0};
    struct vhpc_cluster cl;
    if (vhpc_cluster_load(argv[1], &cl, &err) < 0)
        return vhpc_fail(&err);
    if (vm < 0 || vm >= cl.nvms) {
        vhpc_err_setmsg(&err, -EINVAL, "cluster %s has no vm%d", cl.name, vm);
        return vhpc_fail(&err);
    }
    int fd = open(cl.vms[vm].console_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        vhpc_err_set(&err, -errno, "opening %s", cl.vms[vm].console_path);
        return vhpc_fail(&err);
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
    if (argc != 2)
        return vhpc_usage("vm stop", "expected one cluster name");
    vhpc_err_t err = {0};
    struct vhpc_cluster cl;
    if (vhpc_cluster_load(argv[1], &cl, &err) < 0)
        return vhpc_fail(&err);
    for (int i = 0; i < cl.nvms; i++) {
        agent_client_t *a;
        vhpc_err_t ignore;
        if (connect_agent(&cl, i, &a, 2000, &ignore) == 0) {
            agent_client_shutdown(a, AGENT_SHUTDOWN_POWEROFF, &ignore);
            agent_client_close(a);
        }
    }
    vhpc_cluster_down(&cl, 5000, &err);
    printf("stopped %s\n", cl.name);
    return 0;
}

static int vm_list(void)
{
    char clusters[512];
    snprintf(clusters, sizeof(clusters), "%s/clusters", vhpc_run_dir());
    DIR *d = opendir(clusters);
    printf("%-20s %-4s %-10s %s\n", "CLUSTER", "VMS", "OWNER", "VM PIDS");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        struct vhpc_cluster cl;
        vhpc_err_t err;
        if (vhpc_cluster_load(e->d_name, &cl, &err) < 0)
            continue;
        char owner[32] = "?", path[600];
        snprintf(path, sizeof(path), "%s/owner", cl.dir);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fscanf(f, "%31s", owner) != 1)
                strcpy(owner, "?");
            fclose(f);
        }
        printf("%-20s %-4d %-10s", cl.name, cl.nvms, owner);
        for (int i = 0; i < cl.nvms; i++)
            printf(" vm%d:%d%s", i, (int)cl.vms[i].pid,
                   cl.vms[i].pid > 0 && kill(cl.vms[i].pid, 0) == 0 ? "" : "(dead)");
        printf("\n");
    }
    closedir(d);
    return 0;
}

int cmd_vm(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fputs(vm_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "start"))
        return vm_start(argc - 1, argv + 1);
    if (!strcmp(argv[1], "exec"))
        return vm_exec(argc - 1, argv + 1);
    if (!strcmp(argv[1], "cp"))
        return vm_cp(argc - 1, argv + 1);
    if (!strcmp(argv[1], "console"))
        return vm_console(argc - 1, argv + 1);
    if (!strcmp(argv[1], "stop"))
        return vm_stop(argc - 1, argv + 1);
    if (!strcmp(argv[1], "list"))
        return vm_list();
    return vhpc_usage("vm", "unknown subcommand '%s'", argv[1]);
}
