/*
 * cmd_setup.c - `vhpc setup [--check]`: what root does once so that normal
 * users can run VMs, and a check of it that anyone can run.
 *
 * Each job's network lives in a user and network namespace of its own user
 * (ns.h), so nothing of vhpc runs as root and nothing is setuid.  A host
 * needs only what a stock Debian 12 already has, which some hosts change:
 *   - /dev/net/tun open to everyone (mode 0666, Debian's udev default): a
 *     tap can only be made in a network namespace where one holds
 *     CAP_NET_ADMIN, that is one's own;
 *   - unprivileged user namespaces (kernel.unprivileged_userns_clone = 1,
 *     user.max_user_namespaces > 0, Debian's defaults);
 *   - the system image store and kernel cache directories, 0755 root, that
 *     root fills (`vhpc image build --public`) and users read.
 * /dev/kvm is left as it is: members of its group (kvm) get KVM, others
 * TCG.  Every change is also written where it survives a reboot.
 */
#include "vhpc/cluster.h"
#include "opts.h"
#include "vhpc.h"
#include "vhpc/util.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define TUN_RULE    "/etc/udev/rules.d/60-vhpc-tun.rules"
#define SYSCTL_CONF "/etc/sysctl.d/60-vhpc-userns.conf"

static int read_long(const char *path, long *v)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    int ok = fscanf(f, "%ld", v) == 1;
    fclose(f);
    return ok ? 0 : -EINVAL;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "we");
    if (!f)
        return -errno;
    int bad = fputs(text, f) < 0;
    return fclose(f) != 0 || bad ? -EIO : 0;
}

/* One line of the report: "ok" or "MISSING", then what. */
static void report(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(int ok, const char *fmt, ...)
{
    va_list ap;
    printf("%-8s ", ok ? "ok" : "MISSING");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* /dev/net/tun: 0666. */
static int tun(int fix)
{
    struct stat st;
    if (stat("/dev/net/tun", &st) < 0) {
        if (!fix) {
            report(0, "/dev/net/tun does not exist (modprobe tun)");
            return 1;
        }
        mkdir("/dev/net", 0755);
        if (mknod("/dev/net/tun", S_IFCHR | 0666, makedev(10, 200)) < 0) {
            fprintf(stderr, "vhpc setup: creating /dev/net/tun: %s\n", strerror(errno));
            return 1;
        }
        stat("/dev/net/tun", &st);
    }
    if ((st.st_mode & 0777) != 0666 && fix) {
        if (chmod("/dev/net/tun", 0666) < 0) {
            fprintf(stderr, "vhpc setup: chmod 0666 /dev/net/tun: %s\n", strerror(errno));
            return 1;
        }
        if (access("/etc/udev/rules.d", F_OK) == 0)
            write_text(TUN_RULE, "# vhpc setup: every user may make taps in namespaces of "
                                 "their own (Debian's default)\nKERNEL==\"tun\", MODE=\"0666\"\n");
        stat("/dev/net/tun", &st);
    }
    int ok = (st.st_mode & 0777) == 0666;
    report(ok, "/dev/net/tun is mode %04o%s", (unsigned)(st.st_mode & 07777),
           ok ? "" : " (normal users need 0666 to make taps in their jobs' namespaces)");
    return !ok;
}

/* Unprivileged user namespaces. */
static int userns(int fix)
{
    long clone = 1, max = 1;
    int have_clone = read_long("/proc/sys/kernel/unprivileged_userns_clone", &clone) == 0;
    read_long("/proc/sys/user/max_user_namespaces", &max);
    if (fix && (clone == 0 || max == 0)) {
        if (have_clone && clone == 0)
            write_text("/proc/sys/kernel/unprivileged_userns_clone", "1\n");
        if (max == 0)
            write_text("/proc/sys/user/max_user_namespaces", "15000\n");
        if (access("/etc/sysctl.d", F_OK) == 0)
            write_text(SYSCTL_CONF, have_clone
                                        ? "# vhpc setup\nkernel.unprivileged_userns_clone = "
                                          "1\nuser.max_user_namespaces = 15000\n"
                                        : "# vhpc setup\nuser.max_user_namespaces = 15000\n");
        read_long("/proc/sys/kernel/unprivileged_userns_clone", &clone);
        read_long("/proc/sys/user/max_user_namespaces", &max);
    }
    int ok = clone != 0 && max > 0;
    report(ok,
           "user namespaces for normal users (unprivileged_userns_clone %s, "
           "max_user_namespaces %ld)",
           have_clone ? (clone ? "1" : "0") : "not in this kernel", max);
    return !ok;
}

/* The system store and kernel cache: root's, 0755. */
static int system_dirs(int fix)
{
    char kernels[4096];
    snprintf(kernels, sizeof(kernels), "%s/kernels", vhpc_system_root());
    const char *dirs[] = {vhpc_system_root(), kernels};
    int bad = 0;
    for (int i = 0; i < 2; i++) {
        struct stat st;
        if (fix && stat(dirs[i], &st) < 0) {
            vhpc_err_t err = {0};
            if (vhpc_mkdirs(dirs[i], 0755, &err) < 0)
                fprintf(stderr, "vhpc setup: %s\n", err.msg);
        }
        if (fix && stat(dirs[i], &st) == 0 && st.st_uid == 0 && (st.st_mode & 0777) != 0755)
            chmod(dirs[i], 0755);
        int ok = stat(dirs[i], &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0 &&
                 !(st.st_mode & 022) && (st.st_mode & 05) == 05;
        report(ok, "%s: %s", dirs[i],
               ok ? "root's, readable by every user"
                  : "must be a directory of root's that users may read and not write");
        bad |= !ok;
    }
    return bad;
}

static void kvm(void)
{
    struct stat st;
    if (stat("/dev/kvm", &st) < 0) {
        printf("%-8s /dev/kvm does not exist: every VM runs under TCG\n", "note");
        return;
    }
    struct group *g = getgrgid(st.st_gid);
    printf("%-8s /dev/kvm is mode %04o, group %s: %s\n", "note", (unsigned)(st.st_mode & 07777),
           g ? g->gr_name : "?",
           st.st_mode & 060 ? "members of that group get KVM, other users TCG"
                            : "only root gets KVM, other users TCG");
}

int cmd_setup(int argc, char **argv)
{
    static bool check;
    static const struct cli_opt opts[] = {
        CLI_OPT("check", CLI_FLAG, &check, NULL,
                "only report (any user may run it); exit status 1 if something\nis missing"),
        {0}};
    char usage[1024];
    snprintf(usage, sizeof(usage),
             "Usage: vhpc setup [--check]\n"
             "Prepare this host, once and as root, so that normal users can run VMs:\n"
             "/dev/net/tun mode 0666 and unprivileged user namespaces (Debian's\n"
             "defaults; each job's network lives in namespaces of its own user), and the\n"
             "system image store and kernel cache (%s) readable by all.\n"
             "Changes are also written to %s and %s.\n",
             vhpc_system_root(), TUN_RULE, SYSCTL_CONF);
    const struct cli_spec spec = {"setup", usage, opts, .more = NULL};
    struct cli_args a;
    int st = cli_parse(&spec, argc, argv, &a);
    if (st != CLI_PARSED)
        return st;
    if (!check && geteuid() != 0)
        return cli_usage("setup", "changing the host is for root (sudo vhpc setup); "
                                  "`vhpc setup --check` tells what is missing");
    int bad = tun(!check) | userns(!check) | system_dirs(!check);
    kvm();
    if (!bad && geteuid() != 0) {
        vhpc_err_t err = {0};
        if (vhpc_ns_check(&err) < 0) {
            printf("%-8s %s\n", "MISSING", err.msg);
            bad = 1;
        }
    }
    printf(bad ? "This host is not ready for normal users: as root, run vhpc setup.\n"
               : "Normal users can run VMs on this host.\n");
    return bad ? 1 : 0;
}
