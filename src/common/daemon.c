/*
 * daemon.c - see daemon.h.
 */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The parent's side: wait for the verdict, exit with it. */
static void wait_for_child(const char *who, pid_t pid, int fd)
{
    char buf[2048];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof(buf) - 1 && (n = read(fd, buf + got, sizeof(buf) - 1 - got)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        got += (size_t)n;
    }
    buf[got] = 0;
    if (got > 0 && buf[0] == 'R')
        _exit(0);
    if (got > 1 && buf[0] == 'E') {
        fprintf(stderr, "%s: %s%s", who, buf + 1, buf[got - 1] == '\n' ? "" : "\n");
        _exit(1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    fprintf(stderr, "%s: the daemon died during start-up (%s %d)\n", who,
            WIFSIGNALED(st) ? "signal" : "exit status",
            WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    _exit(1);
}

int vhpc_daemonize(const char *who, int *ready_fd, vhpc_err_t *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return vhpc_err_set(err, -errno, "creating a pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        return vhpc_err_set(err, -e, "fork");
    }
    if (pid > 0) {
        close(p[1]);
        wait_for_child(who, pid, p[0]);
    }
    close(p[0]);
    *ready_fd = p[1];
    return setsid() < 0 ? 1 : 0;
}

int vhpc_daemon_ready(int ready_fd, int log_fd, vhpc_err_t *err)
{
    int r = 0;
    if (chdir("/") < 0)
        r = vhpc_err_set(err, -errno, "chdir /");
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(log_fd >= 0 ? log_fd : null, 2);
        if (null > 2)
            close(null);
    } else if (r == 0) {
        r = vhpc_err_set(err, -errno, "opening /dev/null");
    }
    if (write(ready_fd, "R", 1) != 1 && r == 0)
        r = vhpc_err_set(err, -errno, "telling the parent we are ready");
    close(ready_fd);
    return r;
}

void vhpc_daemon_fail(int ready_fd, const char *msg)
{
    if (dprintf(ready_fd, "E%s", msg) < 0) {
        /* the parent is gone: nobody to tell */
    }
    close(ready_fd);
}

int vhpc_daemon_path(const char *opt, const char *path, char *buf, size_t len, vhpc_err_t *err)
{
    char cwd[PATH_MAX];
    int n;
    if (!path[0])
        return vhpc_err_setmsg(err, -EINVAL, "%s needs a non-empty path", opt);
    if (path[0] == '/')
        n = snprintf(buf, len, "%s", path);
    else if (!getcwd(cwd, sizeof(cwd)))
        return vhpc_err_set(err, -errno, "%s %s: cannot resolve a relative path", opt, path);
    else
        n = snprintf(buf, len, "%s/%s", cwd, path);
    if (n < 0 || (size_t)n >= len)
        return vhpc_err_setmsg(err, -ENAMETOOLONG, "%s %s: path too long", opt, path);
    return 0;
}
