/*
 * vm.c - see vm.h.
 */
#include "vm.h"
#include "clock.h"
#include "guest_abi.h"
#include "ns.h"
#include "proc.h"
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
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

/* ---- the console log -----------------------------------------------------------
 * A process of its own per VM (so it outlives a `vhpc vm start` that
 * returned), reading QEMU's stdout until QEMU is gone: console.log holds the
 * newest output, at most $VHPC_CONSOLE_MAX bytes (default 1 MiB), and
 * console.log.1 the part before; older output is dropped, as virtlogd does. */

#define CONSOLE_MAX_DEFAULT (1u << 20)

static size_t console_max(void)
{
    const char *e = getenv("VHPC_CONSOLE_MAX");
    char *end;
    unsigned long long v = e && *e ? strtoull(e, &end, 10) : 0;
    if (!e || !*e || *end || v < 4096 || v > (1ull << 40))
        return CONSOLE_MAX_DEFAULT;
    return (size_t)v;
}

static void console_loop(int in, const char *path, size_t max)
{
    char old[VHPC_DIR_MAX + 8], buf[16384];
    snprintf(old, sizeof(old), "%s.1", path);
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    size_t size = 0;
    for (;;) {
        ssize_t n = read(in, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (out >= 0 && size + (size_t)n > max) {
            close(out);
            rename(path, old);
            out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
            size = 0;
        }
        for (ssize_t done = 0; out >= 0 && done < n;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break; /* a full disk: keep draining QEMU, lose the text */
            done += w;
        }
        size += (size_t)n;
    }
}

struct logger_args {
    const char *path;
    size_t max;
};

static void logger_main(int fd, void *arg)
{
    const struct logger_args *la = arg;
    console_loop(fd, la->path, la->max);
    _exit(0);
}

/* Start the logger; returns the pipe's write end for QEMU's stdout. */
static int start_console_logger(const char *path, vhpc_err_t *err)
{
    int p[2];
    size_t max = console_max();
    if (pipe2(p, O_CLOEXEC) < 0)
        return vhpc_err_set(err, -errno, "console pipe");
    /* Detached from vhpc and the terminal; holds only the pipe. */
    struct logger_args la = {path, max};
    int r = vhpc__spawn_detached("vhpc-console", p[0], logger_main, &la, err);
    close(p[0]);
    if (r < 0) {
        close(p[1]);
        return vhpc_err_wrap(err, "the console logger");
    }
    return p[1];
}

/* ---- QEMU's configuration (-readconfig) --------------------------------------- */

struct qcfg {
    FILE *f;
    bool bad; /* a value QEMU's config syntax cannot carry */
};

static void section(struct qcfg *q, const char *group, const char *id)
{
    if (id)
        fprintf(q->f, "[%s \"%s\"]\n", group, id);
    else
        fprintf(q->f, "[%s]\n", group);
}

static void set(struct qcfg *q, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set(struct qcfg *q, const char *key, const char *fmt, ...)
{
    char val[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(val, sizeof(val), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(val) || strpbrk(val, "\"\n\\"))
        q->bad = true;
    fprintf(q->f, "  %s = \"%s\"\n", key, val);
}

/* A section and its settings: key, value pairs of plain strings, then NULL. */
static void group(struct qcfg *q, const char *name, const char *id, ...) __attribute__((sentinel));
static void group(struct qcfg *q, const char *name, const char *id, ...)
{
    va_list ap;
    section(q, name, id);
    va_start(ap, id);
    for (const char *key; (key = va_arg(ap, const char *));)
        set(q, key, "%s", va_arg(ap, const char *));
    va_end(ap);
}

static void chardev_socket(struct qcfg *q, const char *id, const char *path, bool server)
{
    group(q, "chardev", id, "backend", "socket", "path", path, NULL);
    if (server) {
        set(q, "server", "on");
        set(q, "wait", "off");
    }
}

/* The whole machine but -cpu/-sandbox/-display, as QEMU's config file. */
static int write_config(const struct vhpc_vm_config *cfg, const struct vhpc_vm *vm, int *fd,
                        vhpc_err_t *err)
{
    char *text = NULL, path[VHPC_DIR_MAX + 16];
    size_t len = 0;
    struct qcfg q = {open_memstream(&text, &len), false};
    if (!q.f)
        return vhpc_err_set(err, -errno, "QEMU config");
    group(&q, "name", NULL, "guest", cfg->name, NULL);
    group(&q, "machine", NULL, "type", "q35", "kernel", cfg->kernel, "initrd", cfg->initrd, NULL);
    set(&q, "append", "console=ttyS0 panic=-1 quiet vhpc.hostname=%s%s%s", cfg->name,
        cfg->append ? " " : "", cfg->append ? cfg->append : "");
    group(&q, "accel", NULL, "accel", cfg->accel == VHPC_ACCEL_KVM ? "kvm" : "tcg", NULL);
    if (cfg->accel != VHPC_ACCEL_KVM)
        set(&q, "thread", "multi");
    section(&q, "smp-opts", NULL);
    set(&q, "cpus", "%d", cfg->vcpus);
    section(&q, "memory", NULL);
    set(&q, "size", "%dM", cfg->mem_mib);
    /* The console goes to QEMU's stdout, a pipe to a logger that keeps
     * console.log within a cap (a chatty guest writes ~300 KB/s). */
    group(&q, "chardev", "con0", "backend", "stdio", "signal", "off", NULL);
    group(&q, "device", "serial0", "driver", "isa-serial", "chardev", "con0", NULL);
    chardev_socket(&q, "qmp0", vm->qmp_path, true);
    group(&q, "mon", "qmp", "mode", "control", "chardev", "qmp0", NULL);
    group(&q, "device", "vser0", "driver", "virtio-serial-pci", NULL);
    chardev_socket(&q, "agent0", vm->agent_path, true);
    group(&q, "device", "agentport", "driver", "virtserialport", "bus", "vser0.0", "chardev",
          "agent0", "name", "org.vhpc.agent", NULL);
    /* A root port for the ivshmem device, so it can be unplugged and
     * plugged again around a migration. */
    group(&q, "device", "rp-ivc", "driver", "pcie-root-port", "chassis", "1", "slot", "1", NULL);
    if (cfg->ivc_socket) {
        chardev_socket(&q, "ivc0", cfg->ivc_socket, false);
        group(&q, "device", "ivshmem0", "driver", "ivshmem-doorbell", "chardev", "ivc0", "vectors",
              "1", "bus", "rp-ivc", NULL);
    }
    if (cfg->rootfs) {
        /* Shared by every VM of the image: read-only for QEMU and the guest
         * (each VM writes to its own tmpfs layer over it). */
        group(&q, "drive", "root", "file", cfg->rootfs, "format", "raw", "readonly", "on", "if",
              "none", NULL);
        group(&q, "device", "rootdisk", "driver", "virtio-blk-pci", "drive", "root", "serial",
              VHPC_ROOT_DISK_SERIAL, NULL);
    }
    if (cfg->tap) {
        group(&q, "netdev", "net0", "type", "tap", "ifname", cfg->tap, "script", "no", "downscript",
              "no", NULL);
        group(&q, "device", "nic0", "driver", "virtio-net-pci", "netdev", "net0", "mac", cfg->mac,
              NULL);
    }
    if (fclose(q.f) != 0) {
        free(text);
        return vhpc_err_set(err, -ENOMEM, "QEMU config");
    }
    if (q.bad) {
        free(text);
        return vhpc_err_setmsg(err, -EINVAL,
                               "a path or setting of the VM contains a quote, backslash or "
                               "newline, which QEMU's configuration cannot carry");
    }
    snprintf(path, sizeof(path), "%s/qemu.cfg", cfg->dir);
    int r = vhpc__write_file(path, text, len, 0600, err);
    free(text);
    if (r < 0)
        return r;
    if ((*fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return vhpc_err_set(err, -errno, "opening %s", path);
    return 0;
}

/* In the child: QEMU with /dev/null, the console logger `con` and `logfd`
 * as 0, 1, 2, a pipe that reports a failed exec as 3 and the configuration
 * as 4; never returns. */
__attribute__((noreturn)) static void exec_qemu(const struct vhpc_vm_config *cfg,
                                                const char *const *argv, int con, int logfd,
                                                int errfd, int cfgfd)
{
    int fd = open("/dev/null", O_RDONLY);
    dup2(fd, 0);
    dup2(con, 1);
    dup2(logfd, 2);
    /* Nothing of ours but the pipe that reports a failed exec (3) and
     * the configuration (4). */
    int ep = fcntl(errfd, F_DUPFD, 10), c = fcntl(cfgfd, F_DUPFD, 10);
    if (ep < 0 || c < 0 || dup2(ep, 3) < 0 || fcntl(3, F_SETFD, FD_CLOEXEC) < 0 || dup2(c, 4) < 0)
        _exit(127);
    vhpc__close_from(5);
    setsid(); /* a Ctrl-C at the terminal goes to vhpc, which powers VMs down */
    /* In the job's namespace (its tap is there), where QEMU keeps no
     * capability (the tap is owned by its uid, so it needs none) and
     * can gain none.  What failed goes back as {step, errno}: 0 exec,
     * 1 the namespace, 2 dropping capabilities. */
    int fail[2] = {1, 0};
    if (cfg->netns > 0 && vhpc__ns_enter(cfg->netns) < 0)
        goto failed;
    fail[0] = 2;
    if (vhpc__drop_privileges() < 0)
        goto failed;
    fail[0] = 0;
    execvp(argv[0], (char *const *)argv);
failed:
    fail[1] = errno;
    if (write(3, fail, sizeof(fail)) < 0)
        _exit(127);
    _exit(127);
}

static void close_fds(int *fd, int n)
{
    for (int i = 0; i < n; i++)
        if (fd[i] >= 0)
            close(fd[i]);
}

int vhpc_vm_start(const struct vhpc_vm_config *cfg, struct vhpc_vm *vm, vhpc_err_t *err)
{
    /* Only what says nothing about the job is on the command line, which
     * every user sees in ps: paths, names, the kernel command line (job id)
     * and the devices go into a 0600 config file read through a descriptor.
     * seccomp: no obsolete system calls, no setuid/setgid, no fork/exec, no
     * scheduler or CPU-affinity changes (QEMU needs none of them here). */
    const char *const argv[] = {
        "qemu-system-x86_64",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
        "-cpu",
        cfg->accel == VHPC_ACCEL_KVM ? "host" : "max",
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-readconfig",
        "/dev/fd/4",
        NULL};
    /* The configuration, qemu.log, the console logger, the exec error pipe. */
    enum { CFG, LOG, CON, ERR_RD, ERR_WR, NFD };
    int fd[NFD] = {-1, -1, -1, -1, -1}, r;

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

    if ((r = write_config(cfg, vm, &fd[CFG], err)) < 0) {
        vhpc_err_wrap(err, "starting VM %s", cfg->name);
        return r;
    }
    char log[VHPC_DIR_MAX + 16];
    snprintf(log, sizeof(log), "%s/qemu.log", cfg->dir);
    if ((fd[LOG] = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
        r = vhpc_err_set(err, -errno, "starting VM %s: creating %s", cfg->name, log);
        goto fail;
    }
    if ((fd[CON] = start_console_logger(vm->console_path, err)) < 0) {
        r = vhpc_err_wrap(err, "starting VM %s", cfg->name);
        goto fail;
    }
    if (pipe2(&fd[ERR_RD], O_CLOEXEC) < 0) {
        r = vhpc_err_set(err, -errno, "starting VM %s: pipe", cfg->name);
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        r = vhpc_err_set(err, -errno, "starting VM %s: fork", cfg->name);
        goto fail;
    }
    if (pid == 0)
        exec_qemu(cfg, argv, fd[CON], fd[LOG], fd[ERR_WR], fd[CFG]);
    close_fds(fd, ERR_RD); /* all but the pipe's read end */
    close(fd[ERR_WR]);
    vm->pid = pid;
    if ((r = write_pidfile(cfg->dir, pid)) < 0) {
        vhpc_err_set(err, r, "starting VM %s: writing %s/qemu.pid", cfg->name, cfg->dir);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        vm->pid = -1;
        close(fd[ERR_RD]);
        return r;
    }
    int fail[2] = {0, 0};
    ssize_t got = read(fd[ERR_RD], fail, sizeof(fail));
    close(fd[ERR_RD]);
    if (got == sizeof(fail)) {
        static const char *const step[] = {"running %s (install qemu-system-x86)",
                                           "entering the job's network namespace for %s",
                                           "dropping every capability before %s"};
        waitpid(pid, NULL, 0);
        vm->pid = -1;
        char what[160];
        snprintf(what, sizeof(what), step[fail[0] >= 0 && fail[0] <= 2 ? fail[0] : 0], argv[0]);
        return vhpc_err_set(err, -fail[1], "starting VM %s: %s", cfg->name, what);
    }
    return 0;
fail:
    close_fds(fd, NFD);
    return r;
}

/* Reap `pid` if it exited; true when gone.  A QEMU started by another vhpc
 * process (vhpc vm stop, vhpc gc) is not our child: look it up instead; a
 * zombie waiting for init to reap it is gone too. */
static int reaped(pid_t pid)
{
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid)
        return 1;
    if (r < 0 && errno == ECHILD) {
        char state = vhpc__proc_state(pid, NULL, 0);
        return !state || state == 'Z' || state == 'X';
    }
    return 0;
}

int vhpc_vm_stop(struct vhpc_vm *vm, int grace_ms, vhpc_err_t *err)
{
    if (vm->pid <= 0)
        return 0;
    for (int t = 0; t < grace_ms; t += 20) {
        if (reaped(vm->pid))
            goto gone;
        vhpc_sleep_ms(20);
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
        vhpc_sleep_ms(20);
    }
    kill(vm->pid, SIGKILL);
    for (int t = 0; t < 5000; t += 20) {
        if (reaped(vm->pid))
            goto gone;
        vhpc_sleep_ms(20);
    }
    return vhpc_err_setmsg(err, -ETIMEDOUT, "QEMU of %s (pid %d) is still there 5 s after SIGKILL",
                           vm->name[0] ? vm->name : "a VM", (int)vm->pid);
gone:
    vm->pid = -1;
    return 0;
}

bool vhpc_vm_exited(const struct vhpc_vm *vm, char *why, size_t len)
{
    if (vm->pid > 0 && kill(vm->pid, 0) == 0) {
        /* Our child that exited is a zombie until reaped: still "there". */
        if (vhpc__proc_state(vm->pid, NULL, 0) != 'Z')
            return false;
    }
    /* QEMU says why on stderr (qemu.log): its last lines. */
    char log[VHPC_DIR_MAX + 16], buf[1024];
    snprintf(log, sizeof(log), "%s/qemu.log", vm->dir);
    snprintf(why, len, "QEMU exited");
    int fd = open(log, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n <= 0)
        return true;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    const char *tail = buf;
    for (int lines = 0, i = (int)n - 1; i >= 0; i--)
        if (buf[i] == '\n' && ++lines == 3) {
            tail = buf + i + 1;
            break;
        }
    snprintf(why, len, "QEMU exited: %s", tail);
    for (char *c = why; *c; c++)
        if (*c == '\n')
            *c = ' ';
    return true;
}

int vhpc_vm_console_tail(const struct vhpc_vm *vm, int lines, char *buf, size_t len)
{
    FILE *f = fopen(vm->console_path, "re");
    if (!f || !len) {
        if (f)
            fclose(f);
        return -ENOENT;
    }
    /* A ring of the last `lines` lines, each at most 511 bytes. */
    char ring[64][512];
    int n = 0;
    if (lines > 64)
        lines = 64;
    while (lines > 0 && fgets(ring[n % lines], sizeof(ring[0]), f))
        n++;
    fclose(f);
    size_t used = 0;
    buf[0] = 0;
    for (int i = n > lines ? n - lines : 0; i < n; i++) {
        const char *l = ring[i % lines];
        size_t ll = strlen(l);
        if (used + ll + 2 > len)
            break;
        memcpy(buf + used, l, ll);
        used += ll;
        if (ll == 0 || l[ll - 1] != '\n')
            buf[used++] = '\n';
        buf[used] = 0;
    }
    return n;
}
