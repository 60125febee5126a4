/*
 * testutil.c - see testutil.h.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define T_MAX_CHILDREN 64

static char tmpdir[128];
static pid_t children[T_MAX_CHILDREN];
static int nchildren;
static pid_t owner_pid;

static void cleanup(void)
{
    if (getpid() != owner_pid)
        return;
    for (int i = 0; i < nchildren; i++)
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    if (tmpdir[0]) {
        char cmd[200];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "warning: could not remove %s\n", tmpdir);
        tmpdir[0] = 0;
    }
}

static void on_signal(int sig)
{
    cleanup();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void init_once(void)
{
    if (owner_pid)
        return;
    owner_pid = getpid();
    atexit(cleanup);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGALRM, on_signal);
    signal(SIGPIPE, SIG_IGN);
}

const char *t_tmpdir(void)
{
    init_once();
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/vhpc-test-XXXXXX");
        if (!mkdtemp(tmpdir))
            T_FAIL("mkdtemp: %s", strerror(errno));
    }
    return tmpdir;
}

static void track(pid_t pid)
{
    init_once();
    for (int i = 0; i < nchildren; i++)
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
    if (nchildren == T_MAX_CHILDREN)
        T_FAIL("too many children");
    children[nchildren++] = pid;
}

static void untrack(pid_t pid)
{
    for (int i = 0; i < nchildren; i++)
        if (children[i] == pid)
            children[i] = 0;
}

pid_t t_fork(int (*fn)(void *), void *arg)
{
    init_once();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        T_FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        nchildren = 0;
        owner_pid = 0; /* children never clean up the parent's things */
        int rc = fn(arg);
        fflush(NULL);
        _exit(rc);
    }
    track(pid);
    return pid;
}

int t_wait(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            T_FAIL("waitpid: %s", strerror(errno));
    untrack(pid);
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

int t_wait_bounded(pid_t pid, int ms, const char *who)
{
    uint64_t deadline = t_now_ms() + (uint64_t)ms;
    for (;;) {
        siginfo_t si = {0};
        if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
            return t_wait(pid);
        T_ASSERT(t_now_ms() < deadline, "%s (pid %d) did not finish within %d ms", who, pid, ms);
        usleep(5000);
    }
}

static const char *ivcd_path(void)
{
    const char *p = getenv("IVCD");
    return p ? p : "ivcd";
}

void t_ivcd_start(struct t_ivcd *d, uint64_t magic, const char *const *extra)
{
    static int seq;
    const char *argv[32];
    char magic_s[32];
    int n = 0;

    snprintf(d->sock, sizeof(d->sock), "%s/ivcd%d.sock", t_tmpdir(), seq++);
    snprintf(magic_s, sizeof(magic_s), "%llu", (unsigned long long)magic);
    argv[n++] = ivcd_path();
    argv[n++] = "--foreground";
    argv[n++] = "--socket";
    argv[n++] = d->sock;
    argv[n++] = "--job";
    argv[n++] = magic_s;
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;

    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        T_FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        /* If ctest kills the test, ivcd must not outlive it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    track(pid);
    d->pid = pid;

    /* Wait until the socket accepts connections (at most 10 s). */
    for (int i = 0; i < 1000; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            untrack(pid);
            T_FAIL("ivcd exited during start-up (status %d)", st);
        }
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", d->sock);
        if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            close(s); /* ivcd sees a client come and go: harmless */
            return;
        }
        close(s);
        usleep(10000);
    }
    T_FAIL("ivcd did not listen on %s within 10 s", d->sock);
}

void t_ivcd_stop(struct t_ivcd *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGTERM);
    int st = t_wait(d->pid);
    d->pid = 0;
    T_ASSERT(st == 0, "ivcd exit status %d after SIGTERM", st);
}

int t_ivcd_ctl(const struct t_ivcd *d, char *buf, size_t len, const char *const *args)
{
    int pfd[2];
    const char *argv[32];
    int n = 0;

    if (pipe(pfd) < 0)
        T_FAIL("pipe: %s", strerror(errno));
    argv[n++] = ivcd_path();
    argv[n++] = "ctl";
    argv[n++] = "--socket";
    argv[n++] = d->sock;
    for (int i = 0; args && args[i] && n < 30; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        T_FAIL("fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    track(pid);
    close(pfd[1]);
    size_t got = 0;
    for (;;) {
        ssize_t r = read(pfd[0], buf + got, len - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == len - 1)
            break;
    }
    buf[got] = 0;
    close(pfd[0]);
    return t_wait(pid);
}

void t_put_byte(int fd)
{
    ssize_t r;
    while ((r = write(fd, "x", 1)) < 0 && errno == EINTR)
        ;
    T_ASSERT(r == 1, "write to the control pipe: %s", strerror(errno));
}

void t_wait_eof(int fd)
{
    char c;
    ssize_t r;
    while ((r = read(fd, &c, 1)) < 0 && errno == EINTR)
        ;
    T_ASSERT(r == 0, "expected EOF on the control pipe, got %zd (%s)", r, strerror(errno));
}

void t_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t offset)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = t_byte(seed, offset + i);
}

size_t t_check(const uint8_t *buf, size_t len, uint64_t seed, uint64_t offset)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] != t_byte(seed, offset + i))
            return i;
    return len;
}

uint64_t t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}
