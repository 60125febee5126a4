/*
 * vm.c - see vm.h.
 */
#include "vm.h"
#include "fullimg.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *vhpc_accel_name(enum vhpc_accel a)
{
    return a == VHPC_ACCEL_KVM ? "kvm" : a == VHPC_ACCEL_TCG ? "tcg" : "auto";
}

int vhpc_accel_parse(const char *s, enum vhpc_accel *out)
{
    static const enum vhpc_accel all[] = {VHPC_ACCEL_AUTO, VHPC_ACCEL_KVM, VHPC_ACCEL_TCG};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (!strcmp(s, vhpc_accel_name(all[i]))) {
            *out = all[i];
            return 0;
        }
    return -EINVAL;
}

#define KVM_PROBE_MS 3000

static int kvm_usable(char *why, size_t len)
{
    if (access("/sys/module/kvm_intel", F_OK) != 0 && access("/sys/module/kvm_amd", F_OK) != 0) {
        if (access("/sys/module/kvm_pvm", F_OK) == 0)
            snprintf(why, len, "/dev/kvm is PVM (kvm_pvm), on which stock guest kernels hang");
        else
            snprintf(why, len,
                     "neither kvm_intel nor kvm_amd is loaded (no hardware virtualization)");
        return 0;
    }
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, len, "cannot open /dev/kvm: %s", strerror(errno));
        return 0;
    }
    close(fd);
    return vhpc_kvm_probe(KVM_PROBE_MS, why, len);
}

int vhpc_accel_resolve(enum vhpc_accel want, enum vhpc_accel *out, vhpc_err_t *err)
{
    char why[256];
    int kvm = kvm_usable(why, sizeof(why));
    if (want == VHPC_ACCEL_KVM && !kvm)
        return vhpc_err_setmsg(err, -ENODEV, "--accel kvm: %s; use --accel tcg (or auto)", why);
    *out = want == VHPC_ACCEL_AUTO ? (kvm ? VHPC_ACCEL_KVM : VHPC_ACCEL_TCG) : want;
    return 0;
}

static int write_pidfile(const char *dir, pid_t pid)
{
    char path[VHPC_DIR_MAX + 16], tmp[VHPC_DIR_MAX + 32];
    snprintf(path, sizeof(path), "%s/qemu.pid", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -errno;
    fprintf(f, "%d\n", (int)pid);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return -errno;
    return 0;
}

#define ARG(...)                                                                                   \
    do {                                                                                           \
        if (n >= (int)(sizeof(argv) / sizeof(argv[0])) - 1)                                        \
            return vhpc_err_setmsg(err, -E2BIG, "starting VM %s: too many QEMU arguments",         \
                                   cfg->name);                                                     \
        if (asprintf(&argv[n++], __VA_ARGS__) < 0)                                                 \
            return vhpc_err_set(err, -ENOMEM, "starting VM %s", cfg->name);                        \
    } while (0)

int vhpc_vm_start(const struct vhpc_vm_config *cfg, struct vhpc_vm *vm, vhpc_err_t *err)
{
    char *argv[64] = {0};
    int n = 0, r;

    memset(vm, 0, sizeof(*vm));
    vm->pid = -1;
    if (strlen(cfg->dir) > VHPC_DIR_MAX - 32)
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "starting VM %s: state directory %s too long",
                               cfg->name, cfg->dir);
    snprintf(vm->name, sizeof(vm->name), "%s", cfg->name);
    snprintf(vm->dir, sizeof(vm->dir), "%s", cfg->dir);
    snprintf(vm->qmp_path, sizeof(vm->qmp_path), "%s/qmp.sock", cfg->dir);
    snprintf(vm->agent_path, sizeof(vm->agent_path), "%s/agent.sock", cfg->dir);
    snprintf(vm->console_path, sizeof(vm->console_path), "%s/console.log", cfg->dir);
    if (mkdir(cfg->dir, 0700) < 0 && errno != EEXIST)
        return vhpc_err_set(err, -errno, "starting VM %s: creating %s", cfg->name, cfg->dir);
    if (cfg->accel != VHPC_ACCEL_KVM && cfg->accel != VHPC_ACCEL_TCG)
        return vhpc_err_setmsg(err, -EINVAL, "starting VM %s: accelerator not resolved", cfg->name);

    ARG("qemu-system-x86_64");
    ARG("-name");
    ARG("%s", cfg->name);
    ARG("-M");
    ARG("q35");
    ARG("-accel");
    ARG("%s", cfg->accel == VHPC_ACCEL_KVM ? "kvm" : "tcg,thread=multi");
    ARG("-cpu");
    ARG("%s", cfg->accel == VHPC_ACCEL_KVM ? "host" : "max");
    ARG("-smp");
    ARG("%d", cfg->vcpus);
    ARG("-m");
    ARG("%d", cfg->mem_mib);
    ARG("-nodefaults");
    ARG("-no-user-config");
    ARG("-no-reboot");
    ARG("-display");
    ARG("none");
    ARG("-kernel");
    ARG("%s", cfg->kernel);
    ARG("-initrd");
    ARG("%s", cfg->initrd);
    ARG("-append");
    ARG("console=ttyS0 panic=-1 quiet vhpc.hostname=%s%s%s", cfg->name, cfg->append ? " " : "",
        cfg->append ? cfg->append : "");
    ARG("-serial");
    ARG("file:%s", vm->console_path);
    ARG("-qmp");
    ARG("unix:%s,server=on,wait=off", vm->qmp_path);
    ARG("-device");
    ARG("virtio-serial-pci,id=vser0");
    ARG("-chardev");
    ARG("socket,path=%s,server=on,wait=off,id=agent0", vm->agent_path);
    ARG("-device");
    ARG("virtserialport,bus=vser0.0,chardev=agent0,name=org.vhpc.agent");
    /* A root port for the ivshmem device, so it can be unplugged and
     * plugged again around a migration. */
    ARG("-device");
    ARG("pcie-root-port,id=rp-ivc,chassis=1,slot=1");
    if (cfg->ivc_socket) {
        ARG("-chardev");
        ARG("socket,path=%s,id=ivc0", cfg->ivc_socket);
        ARG("-device");
        ARG("ivshmem-doorbell,id=ivshmem0,chardev=ivc0,vectors=1,bus=rp-ivc");
    }
    if (cfg->rootfs) {
        /* Shared by every VM of the image: read-only for QEMU and the guest
         * (each VM writes to its own tmpfs layer over it). */
        ARG("-drive");
        ARG("file=%s,format=raw,readonly=on,if=none,id=root", cfg->rootfs);
        ARG("-device");
        ARG("virtio-blk-pci,drive=root,serial=" VHPC_FULL_SERIAL);
    }
    if (cfg->tap) {
        ARG("-netdev");
        ARG("tap,id=net0,ifname=%s,script=no,downscript=no", cfg->tap);
        ARG("-device");
        ARG("virtio-net-pci,netdev=net0,mac=%s", cfg->mac);
    }
    argv[n] = NULL;

    char log[VHPC_DIR_MAX + 16];
    snprintf(log, sizeof(log), "%s/qemu.log", cfg->dir);
    int logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0) {
        r = vhpc_err_set(err, -errno, "starting VM %s: creating %s", cfg->name, log);
        goto out;
    }
    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0) {
        r = vhpc_err_set(err, -errno, "starting VM %s: pipe", cfg->name);
        close(logfd);
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        r = vhpc_err_set(err, -errno, "starting VM %s: fork", cfg->name);
        close(logfd);
        close(errpipe[0]);
        close(errpipe[1]);
        goto out;
    }
    if (pid == 0) {
        int fd = open("/dev/null", O_RDONLY);
        dup2(fd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        setsid(); /* a Ctrl-C at the terminal goes to vhpc, which powers VMs down */
        execvp(argv[0], argv);
        int e = errno;
        if (write(errpipe[1], &e, sizeof(e)) < 0)
            _exit(127);
        _exit(127);
    }
    close(logfd);
    close(errpipe[1]);
    vm->pid = pid;
    if ((r = write_pidfile(cfg->dir, pid)) < 0) {
        vhpc_err_set(err, r, "starting VM %s: writing %s/qemu.pid", cfg->name, cfg->dir);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        vm->pid = -1;
        close(errpipe[0]);
        goto out;
    }
    int e = 0;
    ssize_t got = read(errpipe[0], &e, sizeof(e));
    close(errpipe[0]);
    if (got == sizeof(e)) {
        waitpid(pid, NULL, 0);
        vm->pid = -1;
        r = vhpc_err_set(err, -e, "starting VM %s: running %s (install qemu-system-x86)", cfg->name,
                         argv[0]);
        goto out;
    }
    r = 0;
out:
    for (int i = 0; i < n; i++)
        free(argv[i]);
    return r;
}

/* Reap `pid` if it exited; true when gone.  A QEMU started by another vhpc
 * process (vhpc vm stop, vhpc gc) is not our child: look it up instead. */
static int reaped(pid_t pid)
{
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
        return 1;
    if (r < 0 && errno == ECHILD)
        return kill(pid, 0) < 0 && errno == ESRCH;
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int vhpc_vm_stop(struct vhpc_vm *vm, int grace_ms, vhpc_err_t *err)
{
    if (vm->pid <= 0)
        return 0;
    for (int t = 0; t < grace_ms; t += 20) {
        if (reaped(vm->pid))
            goto gone;
        sleep_ms(20);
    }
    /* Still there: ask QEMU to quit, then insist. */
    struct qmp q;
    vhpc_err_t ignore;
    if (qmp_connect(&q, vm->qmp_path, 500, &ignore) == 0) {
        qmp_command(&q, "quit", NULL, NULL, 1000, &ignore);
        qmp_close(&q);
    }
    for (int t = 0; t < 2000; t += 20) {
        if (reaped(vm->pid))
            goto gone;
        sleep_ms(20);
    }
    kill(vm->pid, SIGKILL);
    for (int t = 0; t < 5000 && !reaped(vm->pid); t += 20)
        sleep_ms(20);
gone:
    vm->pid = -1;
    (void)err;
    return 0;
}
