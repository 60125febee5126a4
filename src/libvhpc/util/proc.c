/*
 * proc.c - see proc.h.
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int vhpc__run(const char *const argv[], const char *cwd, char *out, size_t outlen, char *errbuf,
              size_t errlen, vhpc_err_t *err)
{
    return vhpc__run_env(argv, (const char *const *)environ, cwd, out, outlen, errbuf, errlen, err);
}

int vhpc__run_env(const char *const argv[], const char *const envp[], const char *cwd, char *out,
                  size_t outlen, char *errbuf, size_t errlen, vhpc_err_t *err)
{
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int r;
    if (out && outlen)
        out[0] = 0;
    if (errbuf && errlen)
        errbuf[0] = 0;
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0) {
        r = vhpc_err_set(err, -errno, "running %s: pipe", argv[0]);
        goto close_pipes;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, po[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
    if (cwd)
        posix_spawn_file_actions_addchdir_np(&fa, cwd);
    r = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, (char *const *)envp);
    posix_spawn_file_actions_destroy(&fa);
    close(po[1]);
    close(pe[1]);
    po[1] = pe[1] = -1;
    if (r != 0) {
        r = vhpc_err_set(err, -r, "running %s", argv[0]);
        goto close_pipes;
    }
    struct pollfd pfd[2] = {{.fd = po[0], .events = POLLIN}, {.fd = pe[0], .events = POLLIN}};
    size_t used[2] = {0, 0};
    char *bufs[2] = {out, errbuf};
    size_t lens[2] = {out ? outlen : 0, errbuf ? errlen : 0};
    int open_fds = 2;
    while (open_fds) {
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pfd[i].fd < 0 || !pfd[i].revents)
                continue;
            char tmp[4096];
            ssize_t n = read(pfd[i].fd, tmp, sizeof(tmp));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
                open_fds--;
                continue;
            }
            if (lens[i] > 1 && used[i] < lens[i] - 1) {
                size_t k = lens[i] - 1 - used[i] < (size_t)n ? lens[i] - 1 - used[i] : (size_t)n;
                memcpy(bufs[i] + used[i], tmp, k);
                used[i] += k;
                bufs[i][used[i]] = 0;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (pfd[i].fd >= 0)
            close(pfd[i].fd);
    po[0] = pe[0] = -1;
    /* Messages read better without the trailing newline. */
    while (used[1] && (errbuf[used[1] - 1] == '\n' || errbuf[used[1] - 1] == ' '))
        errbuf[--used[1]] = 0;
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return vhpc_err_set(err, -errno, "waiting for %s", argv[0]);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
close_pipes:
    for (int i = 0; i < 2; i++) {
        if (po[i] >= 0)
            close(po[i]);
        if (pe[i] >= 0)
            close(pe[i]);
    }
    return r;
}

int vhpc__spawn_detached(const char *name, int keep, void (*fn)(int fd, void *arg), void *arg,
                         vhpc_err_t *err)
{
    pid_t pid = fork();
    if (pid < 0)
        return vhpc_err_set(err, -errno, "starting %s: fork", name);
    if (pid == 0) {
        setsid();
        if (fork() != 0)
            _exit(0);
        prctl(PR_SET_NAME, name);
        signal(SIGINT, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        signal(SIGPIPE, SIG_IGN);
        int nul = open("/dev/null", O_RDWR);
        if (nul < 0 || dup2(keep, 3) < 0)
            _exit(1);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(nul, 2);
        vhpc__close_from(4);
        fn(3, arg);
        _exit(1);
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return 0;
}

int vhpc__run_lines(const char *const argv[], const char *const env[], int private_mounts,
                    const char *log, vhpc_line_fn fn, void *arg, vhpc_err_t *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return vhpc_err_set(err, -errno, "pipe");
    int logfd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        if (logfd >= 0)
            close(logfd);
        return vhpc_err_set(err, -e, "fork");
    }
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        dup2(p[1], 1);
        dup2(p[1], 2);
        for (size_t i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        if (private_mounts &&
            (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)) {
            fprintf(stderr, "E: private mount namespace: %s\n", strerror(errno));
            _exit(126);
        }
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "E: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    char buf[8192], line[4096];
    size_t used = 0;
    ssize_t n;
    while ((n = read(p[0], buf, sizeof(buf))) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (logfd >= 0 && write(logfd, buf, (size_t)n) < 0) {
            close(logfd);
            logfd = -1;
        }
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];
            if (c == '\n' || c == '\r') {
                line[used] = 0;
                if (used && fn)
                    fn(line, arg);
                used = 0;
            } else if (used < sizeof(line) - 1) {
                line[used++] = c;
            }
        }
    }
    if (used && fn) {
        line[used] = 0;
        fn(line, arg);
    }
    close(p[0]);
    if (logfd >= 0)
        close(logfd);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return vhpc_err_set(err, -errno, "waiting for %s", argv[0]);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

char vhpc__proc_state(pid_t pid, char *comm, size_t len)
{
    char path[64], st[512];
    if (comm && len)
        comm[0] = 0;
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, st, sizeof(st) - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    st[n] = 0;
    /* "pid (comm) S ...": comm may hold anything, ')' too. */
    char *open_paren = strchr(st, '('), *close_paren = strrchr(st, ')');
    if (!open_paren || !close_paren || close_paren < open_paren || close_paren[1] != ' ' ||
        !close_paren[2])
        return 0;
    if (comm && len)
        snprintf(comm, len, "%.*s", (int)(close_paren - open_paren - 1), open_paren + 1);
    return close_paren[2];
}
