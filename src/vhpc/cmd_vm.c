/*
 * cmd_vm.c - `vhpc vm start|exec|console|stop|list`: clusters for
 * interactive use.  A cluster started here has no owning process; it lives
 * until `vhpc vm stop` (or `vhpc gc --all`).
 */
#include "agent_client.h"
#include "cluster.h"
#include "job.h"
#include "image.h"
#include "names.h"
#include "parse.h"
#include "vhpc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
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

static int vm_start(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage("vm start", "a cluster name is needed");
    struct vhpc_cluster_spec spec = {
        .name = argv[1], .nvms = 1, .vcpus = 1, .mem_mib = 256, .detached = true};
    const char *image = "minimal", *accel = "auto";
    vhpc_err_t err = {0};
    if (vhpc_check_cluster_name(argv[1], &err) < 0)
        return cli_usage("vm start", "%s", err.msg);
    for (int i = 2; i < argc; i++) {
        long mem;
        if (i + 1 >= argc)
            return cli_usage("vm start", "'%s' needs an argument or is unknown", argv[i]);
        if (!strcmp(argv[i], "--vms")) {
            if (vhpc_parse_int("--vms", argv[++i], 1, VHPC_MAX_VMS, &spec.nvms, &err) < 0)
                return cli_usage("vm start", "%s", err.msg);
        } else if (!strcmp(argv[i], "--vcpus")) {
            if (vhpc_parse_int("--vcpus", argv[++i], 1, VHPC_VCPUS_MAX, &spec.vcpus, &err) < 0)
                return cli_usage("vm start", "%s", err.msg);
        } else if (!strcmp(argv[i], "--mem")) {
            if (vhpc_parse_mib_opt("--mem", argv[++i], VHPC_MEM_MIN_MIB, VHPC_MEM_MAX_MIB, &mem,
                                   &err) < 0)
                return cli_usage("vm start", "%s", err.msg);
            spec.mem_mib = (int)mem;
        } else if (!strcmp(argv[i], "--image"))
            image = argv[++i];
        else if (!strcmp(argv[i], "--accel"))
            accel = argv[++i];
        else
            return cli_usage("vm start", "unknown argument '%s'", argv[i]);
    }
    struct vhpc_image img;
    if (vhpc_cluster_can_start(&err) < 0)
        return cli_fail(&err);
    if (vhpc_image_find(image, &img, &err) < 0 || vhpc_image_verify(&img, &err) < 0)
        return cli_fail(&err);
    spec.kernel = img.kernel;
    spec.initrd = img.initrd;
    spec.rootfs = img.rootfs[0] ? img.rootfs : NULL;
    enum vhpc_accel want;
    if (vhpc_accel_parse(accel, &want) < 0)
        return cli_usage("vm start", "--accel %s: expected auto, kvm or tcg", accel);
    if (vhpc_accel_resolve(want, &spec.accel, &err) < 0)
        return cli_fail(&err);
    static struct vhpc_job job; /* the VMs boot in parallel */
    if (vhpc_cluster_check_memory(spec.nvms, spec.mem_mib, &err) < 0 ||
        vhpc_job_init(&job, &err) < 0)
        return cli_fail(&err);
    if (vhpc_job_boot(&job, &spec, 120000, &err) < 0) {
        vhpc_err_t ignore;
        vhpc_job_stop(&job, false, &ignore);
        vhpc_job_close(&job);
        return cli_fail(&err);
    }
    for (int i = 0; i < job.cl.nvms; i++) {
        const struct agent_hello *h = agent_client_hello(job.agents[i]);
        printf("%s/vm%d ready: %s, kernel %s, %s\n", job.cl.name, i, h->hostname, h->kernel,
               job.cl.ips[i]);
    }
    vhpc_job_close(&job);
    return 0;
}

static int vm_exec(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage("vm exec", "a cluster name is needed");
    int vm = 0, i = 2;
    vhpc_err_t err = {0};
    if (vhpc_check_cluster_name(argv[1], &err) < 0)
        return cli_usage("vm exec", "%s", err.msg);
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--vm") && i + 1 < argc) {
            if (vhpc_parse_int("--vm", argv[++i], 0, VHPC_MAX_VMS - 1, &vm, &err) < 0)
                return cli_usage("vm exec", "%s", err.msg);
        } else {
            return cli_usage("vm exec", "unknown argument '%s'", argv[i]);
        }
    }
    if (i + 1 >= argc)
        return cli_usage("vm exec", "no command (vhpc vm exec NAME -- COMMAND ...)");
    struct vhpc_cluster cl;
    agent_client_t *a;
    if (vhpc_cluster_load(argv[1], &cl, &err) < 0 || vhpc_job_attach(&cl, vm, 10000, &a, &err) < 0)
        return cli_fail(&err);
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
        cli_fail(&err);
        return r == -ENOENT || r == -EACCES ? 127 : 1;
    }
    return status;
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

/* Write what the guest sends into dst without ever losing the file that
 * is there: a new file next to it (O_EXCL, the mode dst has or would get),
 * fsync, then rename over dst.  On failure dst is untouched and the
 * temporary file removed. */
static int get_to_host(agent_client_t *a, int vm, const char *src, const char *dst, vhpc_err_t *err)
{
    char target[PATH_MAX], dirbuf[PATH_MAX], tmp[PATH_MAX + 32];
    struct stat st;
    mode_t mode;
    /* A symlink stays a symlink: the file it points at is replaced. */
    if (lstat(dst, &st) == 0 && S_ISLNK(st.st_mode)) {
        if (!realpath(dst, target))
            return vhpc_err_set(err, -errno, "resolving %s", dst);
    } else if (snprintf(target, sizeof(target), "%s", dst) >= (int)sizeof(target)) {
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "%s: path too long", dst);
    }
    if (stat(target, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return vhpc_err_setmsg(err, -EISDIR, "%s is a directory (give the file's path)", dst);
        if (!S_ISREG(st.st_mode))
            return vhpc_err_setmsg(err, -EINVAL, "%s is not a regular file", dst);
        mode = st.st_mode & 07777;
    } else {
        mode_t um = umask(0);
        umask(um);
        mode = 0666 & ~um;
    }
    char basebuf[PATH_MAX];
    snprintf(dirbuf, sizeof(dirbuf), "%s", target);
    snprintf(basebuf, sizeof(basebuf), "%s", target);
    const char *dir = dirname(dirbuf), *base = basename(basebuf);
    int fd = -1, r = 0;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        if (snprintf(tmp, sizeof(tmp), "%s/.%.64s.vhpc-cp-%d-%d", dir, base, (int)getpid(),
                     tries) >= (int)sizeof(tmp))
            return vhpc_err_setmsg(err, -ENAMETOOLONG, "%s: path too long", dst);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0 && errno != EEXIST)
            return vhpc_err_set(err, -errno, "creating a file in %s", dir);
    }
    if (fd < 0)
        return vhpc_err_setmsg(err, -EEXIST, "creating a temporary file in %s", dir);
    r = agent_client_get_file(a, src, fd, 600000, err);
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
        return vhpc_err_wrap(err, "copying vm%d:%s to %s (%s is unchanged)", vm, src, dst, dst);
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static int vm_cp(int argc, char **argv)
{
    if (argc != 4)
        return cli_usage("vm cp", "expected NAME SRC DST (e.g. vhpc vm cp c1 ./in vm0:/tmp/in)");
    const char *src, *dst;
    int svm = guest_path(argv[2], &src), dvm = guest_path(argv[3], &dst);
    if ((svm < 0) == (dvm < 0))
        return cli_usage("vm cp", "exactly one of SRC and DST must be vmI:PATH");
    vhpc_err_t err = {0};
    if (vhpc_check_cluster_name(argv[1], &err) < 0)
        return cli_usage("vm cp", "%s", err.msg);
    struct vhpc_cluster cl;
    agent_client_t *a;
    int vm = svm >= 0 ? svm : dvm;
    if (vhpc_cluster_load(argv[1], &cl, &err) < 0 || vhpc_job_attach(&cl, vm, 10000, &a, &err) < 0)
        return cli_fail(&err);
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
        r = get_to_host(a, vm, src, dst, &err);
    }
    agent_client_close(a);
    return r < 0 ? cli_fail(&err) : 0;
}

static int vm_console(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage("vm console", "a cluster name is needed");
    int vm = 0;
    vhpc_err_t err = {0};
    if (vhpc_check_cluster_name(argv[1], &err) < 0)
        return cli_usage("vm console", "%s", err.msg);
    if (argc == 4 && !strcmp(argv[2], "--vm")) {
        if (vhpc_parse_int("--vm", argv[3], 0, VHPC_MAX_VMS - 1, &vm, &err) < 0)
            return cli_usage("vm console", "%s", err.msg);
    } else if (argc != 2) {
        return cli_usage("vm console", "expected NAME [--vm I]");
    }
    struct vhpc_cluster cl;
    if (vhpc_cluster_load(argv[1], &cl, &err) < 0)
        return cli_fail(&err);
    if (vm < 0 || vm >= cl.nvms) {
        vhpc_err_setmsg(&err, -EINVAL, "cluster %s has no vm%d", cl.name, vm);
        return cli_fail(&err);
    }
    int fd = open(cl.vms[vm].console_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        vhpc_err_set(&err, -errno, "opening %s", cl.vms[vm].console_path);
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
    if (argc != 2)
        return cli_usage("vm stop", "expected one cluster name");
    vhpc_err_t err = {0};
    if (vhpc_check_cluster_name(argv[1], &err) < 0)
        return cli_usage("vm stop", "%s", err.msg);
    struct vhpc_cluster cl;
    if (vhpc_cluster_load(argv[1], &cl, &err) < 0)
        return cli_fail(&err);
    for (int i = 0; i < cl.nvms; i++) {
        agent_client_t *a;
        vhpc_err_t ignore;
        if (vhpc_job_attach(&cl, i, 2000, &a, &ignore) == 0) {
            agent_client_shutdown(a, AGENT_SHUTDOWN_POWEROFF, &ignore);
            agent_client_close(a);
        }
    }
    if (vhpc_cluster_down(&cl, 5000, &err) < 0)
        return cli_fail(&err); /* what is left stays recorded, for vhpc gc */
    printf("stopped %s\n", cl.name);
    return 0;
}

static int vm_list(void)
{
    char clusters[512];
    snprintf(clusters, sizeof(clusters), "%s/clusters", vhpc_run_dir());
    DIR *d = opendir(clusters);
    if (!d && errno != ENOENT) {
        fprintf(stderr,
                "vhpc vm list: cannot read %s: %s (each user's clusters are in a run "
                "directory of their own; $VHPC_RUN_DIR names another)\n",
                clusters, strerror(errno));
        return 1;
    }
    printf("%-20s %-4s %-10s %s\n", "CLUSTER", "VMS", "OWNER", "VM PIDS");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!vhpc_cluster_name_ok(e->d_name))
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
    return cli_usage("vm", "unknown subcommand '%s'", argv[1]);
}
