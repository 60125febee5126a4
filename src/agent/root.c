/*
 * root.c - the boot initramfs of a *full* image (full.h): vhpc-agent, as
 * PID 1, mounts the image's root file system and hands the machine to the
 * image's own init (systemd), which starts vhpc-agent again as a service
 * (`--service`, init.c).
 *
 * The signal is a file in the initramfs, /etc/vhpc/root, written when the
 * image is built; a minimal image has none, and nothing here happens.  Its
 * "key=value" lines:
 *   serial=vhpc-root     virtio-blk serial of the disk that holds the root
 *                        (QEMU: -device virtio-blk-pci,...,serial=vhpc-root)
 *   fstype=squashfs      its file system
 *   size=BYTES           the root image's size: a smaller disk is not it
 *   sha256=HEX           its digest (logged; the host checks the blob)
 *   init=/sbin/init      what to run once the root is in place
 * The file also makes each full image's boot initramfs unique to its root.
 *
 * Each VM gets its own copy-on-write view; the shared base is never
 * writable (the disk is read-only, the file system too):
 *   /run/vhpc/base       the squashfs, read-only
 *   /run/vhpc/cow        a tmpfs: upper/ (what this VM changed), work/
 *   /                    overlayfs: upper/ over base
 * /dev, /proc, /sys and /run (with the two mounts above) move into the new
 * root as they are (systemd leaves API file systems that are already
 * mounted alone), the initramfs's files are deleted (they would hold RAM),
 * and init is executed as PID 1.  Any failure is logged on the console and
 * powers the VM off: the host sees the VM end during boot and shows the
 * console.
 */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define ROOT_CONF "/etc/vhpc/root"
#define NEWROOT   "/sysroot"
#define BASE      "/run/vhpc/base"
#define COW       "/run/vhpc/cow"

struct root_conf {
    char serial[64];
    char fstype[32];
    unsigned long long size;
    char sha256[65];
    char init[256];
};

static int read_conf(struct root_conf *rc)
{
    FILE *f = fopen(ROOT_CONF, "re");
    char line[512];
    if (!f)
        return -1;
    snprintf(rc->serial, sizeof(rc->serial), "vhpc-root");
    snprintf(rc->fstype, sizeof(rc->fstype), "squashfs");
    snprintf(rc->init, sizeof(rc->init), "/sbin/init");
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = 0;
        char *eq = strchr(line, '=');
        if (!eq || line[0] == '#')
            continue;
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(line, "serial"))
            snprintf(rc->serial, sizeof(rc->serial), "%s", v);
        else if (!strcmp(line, "fstype"))
            snprintf(rc->fstype, sizeof(rc->fstype), "%s", v);
        else if (!strcmp(line, "size"))
            rc->size = strtoull(v, NULL, 10);
        else if (!strcmp(line, "sha256"))
            snprintf(rc->sha256, sizeof(rc->sha256), "%s", v);
        else if (!strcmp(line, "init"))
            snprintf(rc->init, sizeof(rc->init), "%s", v);
    }
    fclose(f);
    return 0;
}

/* A small sysfs attribute, without its trailing newline. */
static int read_attr(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, len - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    buf[strcspn(buf, "\n")] = 0;
    return 0;
}

/* The block device whose serial is rc->serial, waiting up to 10 s for it
 * (virtio_blk probes while its module loads; this covers slow hosts). */
static bool find_disk(const struct root_conf *rc, char *dev, size_t len, unsigned long long *bytes)
{
    for (int t = 0; t < 1000; t++) {
        DIR *d = opendir("/sys/block");
        struct dirent *e;
        bool found = false;
        while (d && !found && (e = readdir(d))) {
            char path[300], serial[128], size[32];
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "/sys/block/%s/serial", e->d_name);
            if (read_attr(path, serial, sizeof(serial)) < 0 || strcmp(serial, rc->serial) != 0)
                continue;
            snprintf(path, sizeof(path), "/sys/block/%s/size", e->d_name);
            *bytes = read_attr(path, size, sizeof(size)) == 0 ? strtoull(size, NULL, 10) * 512 : 0;
            snprintf(dev, len, "/dev/%s", e->d_name);
            found = true;
        }
        if (d)
            closedir(d);
        if (found)
            return true;
        usleep(10000);
    }
    return false;
}

static int do_mount(const char *src, const char *dir, const char *type, unsigned long flags,
                    const char *data)
{
    mkdir(dir, 0755);
    if (mount(src, dir, type, flags, data) == 0)
        return 0;
    agent_log("full image: mounting %s (%s) on %s: %s", src, type ? type : "move", dir,
              strerror(errno));
    return -1;
}

/* Delete the initramfs's files (everything on the device `dev` under
 * `path`, not crossing into other mounts): what busybox switch_root does. */
static void delete_tree(int dirfd, dev_t dev)
{
    DIR *d = fdopendir(dirfd);
    struct dirent *e;
    if (!d) {
        close(dirfd);
        return;
    }
    while ((e = readdir(d))) {
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (fstatat(dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev)
            continue;
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0)
                delete_tree(sub, dev);
            unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
        } else {
            unlinkat(dirfd, e->d_name, 0);
        }
    }
    closedir(d);
}

/* The root is mounted at NEWROOT: move the kernel file systems in, empty
 * the initramfs, make NEWROOT the root and execute init.  Returns only on
 * failure. */
static void switch_root(const struct root_conf *rc)
{
    static const char *const keep[] = {"/dev", "/proc", "/sys", "/run"};
    char to[300];
    struct stat st;
    /* The initramfs's own /tmp tmpfs (init_early) is not wanted any more. */
    umount2("/tmp", MNT_DETACH);
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) {
        snprintf(to, sizeof(to), NEWROOT "%s", keep[i]);
        if (do_mount(keep[i], to, NULL, MS_MOVE, NULL) < 0)
            return;
    }
    snprintf(to, sizeof(to), NEWROOT "%s", rc->init);
    if (lstat(to, &st) < 0) {
        agent_log("full image: no %s in the root file system: %s", rc->init, strerror(errno));
        return;
    }
    if (chdir(NEWROOT) < 0 || stat("/", &st) < 0) {
        agent_log("full image: chdir %s: %s", NEWROOT, strerror(errno));
        return;
    }
    int rootfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd >= 0)
        delete_tree(rootfd, st.st_dev);
    if (mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
        agent_log("full image: switching the root: %s", strerror(errno));
        return;
    }
    /* init starts with what the kernel would have given it: the console as
     * stdio, no blocked signals, the kernel's environment. */
    int fd = open("/dev/console", O_RDWR | O_NOCTTY);
    if (fd >= 0) {
        for (int i = 0; i < 3; i++)
            dup2(fd, i);
        if (fd > 2)
            close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    char *const argv[] = {(char *)rc->init, NULL};
    char *const envp[] = {"HOME=/", "TERM=linux", NULL};
    execve(rc->init, argv, envp);
    agent_log("full image: executing %s: %s", rc->init, strerror(errno));
}

bool root_wanted(void)
{
    return access(ROOT_CONF, F_OK) == 0;
}

void root_switch(void)
{
    struct root_conf rc = {0};
    char dev[300], opts[256];
    unsigned long long bytes = 0;
    if (read_conf(&rc) < 0) {
        agent_log("full image: %s: %s", ROOT_CONF, strerror(errno));
        goto fail;
    }
    if (!find_disk(&rc, dev, sizeof(dev), &bytes)) {
        agent_log("full image: no disk with serial '%s' appeared in 10 s: the host must attach "
                  "the image's root file system (virtio-blk, serial=%s)",
                  rc.serial, rc.serial);
        goto fail;
    }
    if (rc.size && bytes < rc.size) {
        agent_log("full image: %s has %llu bytes, the root file system %llu: not this image's root",
                  dev, bytes, rc.size);
        goto fail;
    }
    agent_debug("full image: root %s on %s (%llu bytes)", rc.sha256, dev, bytes);
    mkdir("/run/vhpc", 0755);
    if (do_mount(dev, BASE, rc.fstype, MS_RDONLY, NULL) < 0 ||
        do_mount("tmpfs", COW, "tmpfs", 0, "mode=0755") < 0)
        goto fail;
    mkdir(COW "/upper", 0755);
    mkdir(COW "/work", 0755);
    snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", BASE, COW, COW);
    if (do_mount("overlay", NEWROOT, "overlay", 0, opts) < 0)
        goto fail;
    switch_root(&rc);
fail:
    agent_log("full image: cannot boot the root file system; powering off");
    init_poweroff(AGENT_SHUTDOWN_POWEROFF);
}
