/*
 * ns.c - see ns.h.
 */
#include "ns.h"
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEEPER_NAME "vhpc-netns"

/* Write a short text to a /proc file; 0 or an errno value.  Between fork
 * and exec: only system calls. */
static int put(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    size_t len = strlen(text);
    int e = write(fd, text, len) == (ssize_t)len ? 0 : errno ? errno : EIO;
    close(fd);
    return e;
}

/* Bring the namespace's loopback up (local addresses, the bridge's
 * included, are reached through it); 0 or an errno value. */
static int loopback_up(void)
{
    struct ifreq ifr;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), e = 0;
    if (s < 0)
        return errno;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        e = errno;
    ifr.ifr_flags |= IFF_UP;
    if (!e && ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        e = errno;
    close(s);
    return e;
}

/* The keeper: make the namespaces, report (errno or 0, then its pid), drop
 * every capability and sleep until killed. */
struct keeper_args {
    bool user;
    const char *uid_map, *gid_map;
};

static int keeper_setup(const struct keeper_args *ka)
{
    int e;
    if (chdir("/") < 0) /* holds no directory of the caller's */
        return errno;
    if (unshare(ka->user ? CLONE_NEWUSER | CLONE_NEWNET : CLONE_NEWNET) < 0)
        return errno;
    if (ka->user && ((e = put("/proc/self/setgroups", "deny")) ||
                     (e = put("/proc/self/uid_map", ka->uid_map)) ||
                     (e = put("/proc/self/gid_map", ka->gid_map))))
        return e;
    if ((e = loopback_up()))
        return e;
    return vhpc__drop_privileges() < 0 ? errno : 0;
}

static void keeper_main(int ready, void *arg)
{
    int e = keeper_setup(arg);
    pid_t self = getpid();
    if (write(ready, &e, sizeof(e)) != sizeof(e) ||
        write(ready, &self, sizeof(self)) != sizeof(self))
        _exit(1);
    close(ready);
    if (e)
        _exit(1);
    for (;;)
        pause();
}

int vhpc_ns_create(pid_t *out, vhpc_err_t *err)
{
    bool user = geteuid() != 0;
    char uid_map[32], gid_map[32];
    snprintf(uid_map, sizeof(uid_map), "0 %u 1\n", (unsigned)geteuid());
    snprintf(gid_map, sizeof(gid_map), "0 %u 1\n", (unsigned)getegid());
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return vhpc_err_set(err, -errno, "the job's network namespace: pipe");
    /* Detached from vhpc and its terminal, a child of init: it lives as
     * long as the cluster, also a detached one. */
    struct keeper_args ka = {user, uid_map, gid_map};
    int r = vhpc__spawn_detached(KEEPER_NAME, p[1], keeper_main, &ka, err);
    close(p[1]);
    if (r < 0) {
        close(p[0]);
        return r;
    }
    int e = 0;
    pid_t k = -1;
    ssize_t a = read(p[0], &e, sizeof(e)), b = read(p[0], &k, sizeof(k));
    close(p[0]);
    if (a != sizeof(e) || b != sizeof(k))
        return vhpc_err_setmsg(err, -EIO, "the job's network namespace: its keeper died at start");
    if (e) {
        if (user)
            return vhpc_err_set(err, -e,
                                "making the job's user and network namespaces (unshare -Urn "
                                "fails the same way; as root, run once: vhpc setup)");
        return vhpc_err_set(err, -e, "making the job's network namespace");
    }
    *out = k;
    return 0;
}

bool vhpc_ns_alive(pid_t keeper)
{
    char path[64], comm[32] = "";
    if (keeper <= 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)keeper);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, comm, sizeof(comm) - 1);
    close(fd);
    if (n <= 0)
        return false;
    comm[n] = 0;
    if (comm[n - 1] == '\n')
        comm[n - 1] = 0;
    /* A zombie keeps its name: only a live keeper holds the namespaces. */
    snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)keeper);
    return strcmp(comm, KEEPER_NAME) == 0 && access(path, F_OK) == 0;
}

static int enter(pid_t keeper, const char *ns, int type)
{
    char path[64];
    struct stat mine, theirs;
    snprintf(path, sizeof(path), "/proc/%d/ns/%s", (int)keeper, ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    snprintf(path, sizeof(path), "/proc/self/ns/%s", ns);
    if (fstat(fd, &theirs) == 0 && stat(path, &mine) == 0 && mine.st_ino == theirs.st_ino &&
        mine.st_dev == theirs.st_dev) {
        close(fd);
        return 0; /* already there (root: the user namespace is ours) */
    }
    int r = setns(fd, type);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

int vhpc__ns_enter(pid_t keeper)
{
    if (keeper <= 0) {
        errno = ESRCH;
        return -1;
    }
    if (enter(keeper, "user", CLONE_NEWUSER) < 0)
        return -1;
    return enter(keeper, "net", CLONE_NEWNET);
}

int vhpc_ns_stop(pid_t keeper, vhpc_err_t *err)
{
    if (!vhpc_ns_alive(keeper))
        return 0;
    kill(keeper, SIGKILL);
    struct timespec ts = {0, 10000000L};
    for (int t = 0; t < 200 && vhpc_ns_alive(keeper); t++)
        nanosleep(&ts, NULL);
    if (vhpc_ns_alive(keeper))
        return vhpc_err_setmsg(err, -ETIMEDOUT,
                               "the job's namespace keeper (pid %d) is still there 2 s after "
                               "SIGKILL",
                               (int)keeper);
    return 0;
}

int vhpc_ns_check(vhpc_err_t *err)
{
    if (geteuid() == 0)
        return 0;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        struct stat st;
        char mode[16] = "?";
        if (stat("/dev/net/tun", &st) == 0)
            snprintf(mode, sizeof(mode), "%04o", (unsigned)(st.st_mode & 07777));
        if (e == ENOENT)
            return vhpc_err_setmsg(err, -ENOENT,
                                   "/dev/net/tun does not exist, and each job's network needs "
                                   "tap devices.  As root, run once: vhpc setup");
        return vhpc_err_setmsg(err, -e,
                               "normal users cannot open /dev/net/tun here (%s, mode %s), and "
                               "each job's network needs tap devices in its own namespace.  As "
                               "root, run once: vhpc setup (it gives /dev/net/tun mode 0666, "
                               "Debian's default)",
                               strerror(e), mode);
    }
    close(fd);
    /* Try what the keeper will do, in a child that exits at once. */
    pid_t pid = fork();
    if (pid < 0)
        return vhpc_err_set(err, -errno, "fork");
    if (pid == 0)
        _exit(unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0 ? 1 : 0);
    int st;
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return vhpc_err_setmsg(err, -EPERM,
                               "normal users cannot create user namespaces on this host "
                               "(kernel.unprivileged_userns_clone or user.max_user_namespaces), "
                               "and each job's network lives in one.  As root, run once: "
                               "vhpc setup");
    return 0;
}
