/*
 * lock.c - see lock.h.
 */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void (*lock_notice)(const char *msg);

void vhpc_set_lock_notice(void (*fn)(const char *msg))
{
    lock_notice = fn;
}

/* The pid holding a flock on the file open as fd, from /proc/locks (0 if
 * it cannot be told). */
static int lock_holder(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    FILE *f = fopen("/proc/locks", "re");
    if (!f)
        return 0;
    char line[256];
    int pid = 0;
    while (!pid && fgets(line, sizeof(line), f)) {
        char kind[16];
        int p;
        unsigned long long ino;
        char *s = strchr(line, ':');
        if (!s || strstr(line, "->")) /* "->": a waiter, not the holder */
            continue;
        if (sscanf(s + 1, " %15s %*s %*s %d %*x:%*x:%llu", kind, &p, &ino) == 3 &&
            !strcmp(kind, "FLOCK") && ino == (unsigned long long)st.st_ino && p != getpid())
            pid = p;
    }
    fclose(f);
    return pid;
}

int vhpc__lock_timeout_s(void)
{
    const char *t = getenv("VHPC_LOCK_TIMEOUT");
    char *end;
    long v = t && t[0] ? strtol(t, &end, 10) : -1;
    return t && t[0] && !*end && v >= 0 && v <= 86400 ? (int)v : VHPC_LOCK_TIMEOUT_S;
}

int vhpc__lock_open(const char *path, const char *what, int *fd_out, vhpc_err_t *err)
{
    char dir[PATH_MAX];
    struct stat st;
    /* Whoever can write the directory can replace the lock file with one
     * of their own and hold it. */
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir)
        *slash = 0;
    else
        snprintf(dir, sizeof(dir), "%s", slash ? "/" : ".");
    if (stat(dir, &st) == 0 && (st.st_mode & 022))
        return vhpc_err_setmsg(err, -EPERM,
                               "the %s lock %s is in a directory other users can write (chmod "
                               "go-w %s)",
                               what, path, dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    if (fd < 0)
        return vhpc_err_set(err, -errno, "opening the %s lock %s", what, path);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return vhpc_err_setmsg(err, -EINVAL, "the %s lock %s is not a regular file", what, path);
    }
    if (st.st_uid != geteuid() && st.st_uid != 0) {
        close(fd);
        return vhpc_err_setmsg(err, -EPERM, "the %s lock %s belongs to another user (uid %u)", what,
                               path, (unsigned)st.st_uid);
    }
    /* Lock files of older versions were 0644: anyone could flock them
     * through a read-only open and stall every writer. */
    if ((st.st_mode & 077) && st.st_uid == geteuid() && fchmod(fd, 0600) < 0) {
        int e = -errno;
        close(fd);
        return vhpc_err_set(err, e, "making the %s lock %s private", what, path);
    }
    *fd_out = fd;
    return 0;
}

int vhpc__lock_wait(int fd, const char *path, const char *what, vhpc_err_t *err)
{
    int timeout_s = vhpc__lock_timeout_s(), told = 0, holder = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno != EWOULDBLOCK)
            return vhpc_err_set(err, -errno, "locking the %s lock %s", what, path);
        if (!holder)
            holder = lock_holder(fd);
        if (!told && lock_notice) {
            char msg[PATH_MAX + 200];
            if (holder)
                snprintf(msg, sizeof(msg), "waiting for the %s lock %s held by pid %d...", what,
                         path, holder);
            else
                snprintf(msg, sizeof(msg), "waiting for the %s lock %s...", what, path);
            lock_notice(msg);
        }
        told = 1;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t ms =
            (int64_t)(now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
        if (ms >= (int64_t)timeout_s * 1000) {
            char by[32] = "";
            if (holder)
                snprintf(by, sizeof(by), " held by pid %d", holder);
            return vhpc_err_setmsg(err, -ETIMEDOUT,
                                   "timed out after %d s waiting for the %s lock %s%s (if that "
                                   "process is stuck, stop it; VHPC_LOCK_TIMEOUT=SECONDS waits "
                                   "longer)",
                                   timeout_s, what, path, by);
        }
        struct timespec nap = {0, 50 * 1000 * 1000};
        nanosleep(&nap, NULL);
    }
}
