/*
 * test_ivcd_bad.c - ivcd and `ivcd ctl` facing bad input: wrong options
 * (exit 2 with a message naming the problem), a socket already served or
 * not a socket, stale sockets, clients that send garbage, half messages,
 * fds or vanish, garbage and floods on the control socket, ctl without an
 * ivcd; through all of it ivcd stays up and serves a proper client.  Then
 * --daemon start-up (returns once listening, reports the daemon's errors)
 * and clean exit on SIGTERM (sockets and pid file removed).
 */
#include "ivshmem_proto.h"
#include "test_ivcd_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[65536];
static pid_t daemon_pid;

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void expect_usage_error(const char *needle, const char *const *args)
{
    int st = run_ivcd(out, sizeof(out), args);
    T_ASSERT(st == 2, "exit %d, wanted 2 (args starting %s %s): %s", st, args[0],
             args[1] ? args[1] : "", out);
    T_ASSERT(strstr(out, needle), "message lacks '%s': %s", needle, out);
}

static void test_options(void)
{
    char sock[256];
    snprintf(sock, sizeof(sock), "%s/bad.sock", t_tmpdir());
    expect_usage_error("power of two", (const char *const[]){"--socket", sock, "--job", "1",
                                                             "--size", "3000000", NULL});
    T_ASSERT(strstr(out, "try 4M"), "no suggestion: %s", out);
    expect_usage_error("--job", (const char *const[]){"--socket", sock, NULL});
    expect_usage_error("--socket needs a path",
                       (const char *const[]){"--socket", "", "--job", "1", NULL});
    expect_usage_error(
        "minimum", (const char *const[]){"--socket", sock, "--job", "1", "--size", "512K", NULL});
    expect_usage_error(
        "not a size", (const char *const[]){"--socket", sock, "--job", "1", "--size", "12X", NULL});
    expect_usage_error("try --size 2M",
                       (const char *const[]){"--socket", sock, "--job", "1", "--size", "1M", NULL});
    expect_usage_error(
        "--vectors", (const char *const[]){"--socket", sock, "--job", "1", "--vectors", "0", NULL});
    expect_usage_error("--vectors", (const char *const[]){"--socket", sock, "--job", "1",
                                                          "--vectors", "65", NULL});
    expect_usage_error("--max-peers", (const char *const[]){"--socket", sock, "--job", "1",
                                                            "--max-peers", "4097", NULL});
    expect_usage_error("--max-endpoints", (const char *const[]){"--socket", sock, "--job", "1",
                                                                "--max-endpoints", "0", NULL});
    expect_usage_error(
        "--mode", (const char *const[]){"--socket", sock, "--job", "1", "--mode", "999", NULL});
    expect_usage_error("not a job id",
                       (const char *const[]){"--socket", sock, "--job", "abc", NULL});
    expect_usage_error("not a job id",
                       (const char *const[]){"--socket", sock, "--job", "-1", NULL});
    expect_usage_error("not a job id",
                       (const char *const[]){"--socket", sock, "--job", "0x", NULL});
    expect_usage_error("unrecognized option", (const char *const[]){"--bogus", NULL});
    expect_usage_error("unexpected argument",
                       (const char *const[]){"--socket", sock, "--job", "1", "extra", NULL});
    expect_usage_error("exclude", (const char *const[]){"--socket", sock, "--job", "1", "--daemon",
                                                        "--foreground", NULL});
    T_ASSERT(!exists(sock), "a refused start left %s behind", sock);

    /* A path that is not a socket is never replaced. */
    int fd = open(sock, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    T_ASSERT(fd >= 0, "creating %s: %s", sock, strerror(errno));
    close(fd);
    int st =
        run_ivcd(out, sizeof(out), (const char *const[]){"--socket", sock, "--job", "1", NULL});
    T_ASSERT(st == 1 && strstr(out, "not a socket"), "exit %d: %s", st, out);
    T_ASSERT(exists(sock), "the regular file was removed");
    unlink(sock);

    /* ctl usage errors and no ivcd at all */
    static const struct t_ivcd nobody = {.pid = 0, .sock = "/nonexistent/vhpc/ivcd.sock"};
    st = ctl_run(&nobody, out, sizeof(out), (const char *const[]){"status", NULL});
    T_ASSERT(st == 2 &&
                 strstr(out, "cannot connect to ivcd control socket "
                             "/nonexistent/vhpc/ivcd.sock.ctl: No such file or directory") &&
                 strstr(out, "is ivcd running"),
             "exit %d: %s", st, out);
    st = ctl_run(&nobody, out, sizeof(out), (const char *const[]){"bogus", NULL});
    T_ASSERT(st == 2 && strstr(out, "unknown command"), "exit %d: %s", st, out);
    st = ctl_run(&nobody, out, sizeof(out), (const char *const[]){"suspend", NULL});
    T_ASSERT(st == 2, "exit %d: %s", st, out);
    st = ctl_run(&nobody, out, sizeof(out), (const char *const[]){"suspend", "x", NULL});
    T_ASSERT(st == 2 && strstr(out, "not a peer id"), "exit %d: %s", st, out);
    st = ctl_run(&nobody, out, sizeof(out),
                 (const char *const[]){"suspend", "1", "--timeout", "0", NULL});
    T_ASSERT(st == 2 && strstr(out, "--timeout"), "exit %d: %s", st, out);
    st = run_ivcd(out, sizeof(out), (const char *const[]){"ctl", "status", NULL});
    T_ASSERT(st == 2 && strstr(out, "--socket"), "exit %d: %s", st, out);
}

/* A socket file nobody listens on, as a crashed ivcd leaves. */
static void make_stale_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    T_ASSERT(strlen(path) < sizeof(sa.sun_path), "%s is too long", path);
    memcpy(sa.sun_path, path, strlen(path));
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    T_ASSERT(s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind %s: %s", path,
             strerror(errno));
    close(s);
}

/* Connect and misbehave in one of several ways. */
static void garbage_client(const char *path, unsigned round)
{
    uint8_t junk[300];
    int s = raw_connect(path);

    t_fill(junk, sizeof(junk), round, 0);
    switch (round % 6) {
    case 0: /* vanish at once */ break;
    case 1: /* random bytes */
        T_ASSERT(send(s, junk, 1 + round % sizeof(junk), MSG_NOSIGNAL) >= 0 || errno == EPIPE ||
                     errno == ECONNRESET,
                 "send: %s", strerror(errno));
        break;
    case 2: /* half a message */
        T_ASSERT(send(s, junk, 3, MSG_NOSIGNAL) >= 0 || errno == EPIPE || errno == ECONNRESET,
                 "send: %s", strerror(errno));
        break;
    case 3: { /* a well-formed message with an fd attached */
        int e = eventfd(0, EFD_CLOEXEC);
        int r = ivshm_send(s, 42, e);
        T_ASSERT(r == 0 || r == -EPIPE || r == -ECONNRESET, "ivshm_send: %d", r);
        close(e);
        break;
    }
    case 4: { /* read part of the greeting, then leave */
        int64_t v;
        int fd;
        raw_recv(s, &v, &fd);
        if (fd >= 0)
            close(fd);
        break;
    }
    case 5: { /* garbage, then make sure ivcd hangs up on us */
        T_ASSERT(send(s, "hello\n", 6, MSG_NOSIGNAL) == 6, "send: %s", strerror(errno));
        int64_t v;
        int fd, r;
        uint64_t deadline = t_now_ms() + 5000;
        while ((r = ivshm_recv(s, &v, &fd)) == 0) {
            if (fd >= 0)
                close(fd);
            T_ASSERT(t_now_ms() < deadline, "ivcd kept a client that sent garbage");
        }
        T_ASSERT(r == -EPIPE || r == -ECONNRESET, "expected EOF, got %d", r);
        break;
    }
    }
    close(s);
}

/* Send raw bytes to the control socket; returns the reply (until EOF). */
static const char *ctl_raw(const struct t_ivcd *d, const void *req, size_t len)
{
    char path[300];
    snprintf(path, sizeof(path), "%s.ctl", d->sock);
    int s = raw_connect(path);
    T_ASSERT(send(s, req, len, MSG_NOSIGNAL) == (ssize_t)len, "send: %s", strerror(errno));
    size_t got = 0;
    ssize_t n;
    while ((n = recv(s, out + got, sizeof(out) - 1 - got, 0)) > 0)
        got += (size_t)n;
    /* ivcd reads one line; closing with more unread makes the kernel reset
     * the connection after the reply. */
    T_ASSERT(n == 0 || (got > 0 && errno == ECONNRESET), "reading the control reply: %s",
             strerror(errno));
    out[got] = 0;
    close(s);
    return out;
}

static void test_ctl_garbage(const struct t_ivcd *d)
{
    char big[2000];
    static const char nul[] = "sta\0tus\n";
    uint8_t junk[200];

    T_ASSERT(strncmp(ctl_raw(d, "bogus 1 2\n", 10), "error: unknown command 'bogus'", 30) == 0,
             "%s", out);
    T_ASSERT(strncmp(ctl_raw(d, "\n", 1), "error: empty request", 20) == 0, "%s", out);
    T_ASSERT(strncmp(ctl_raw(d, nul, sizeof(nul) - 1), "error: unknown command", 22) == 0, "%s",
             out);
    memset(big, 'a', sizeof(big));
    T_ASSERT(strncmp(ctl_raw(d, big, sizeof(big)), "error: request line too long", 28) == 0, "%s",
             out);
    for (unsigned i = 0; i < 20; i++) {
        t_fill(junk, sizeof(junk), 1000 + i, 0);
        junk[sizeof(junk) - 1] = '\n';
        ctl_raw(d, junk, sizeof(junk));
        T_ASSERT(strncmp(out, "error:", 6) == 0, "garbage got: %s", out);
    }
    static const char *const bad[] = {
        "suspend abc\n",           "suspend 99999\n",       "suspend 60\n",
        "suspend 0 --timeout 0\n", "suspend 0 --timeout\n", "resume\n",
        "resume 70000\n",          "status extra\n",        "list x\n",
        "a b c d e f g h i j k\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ctl_raw(d, bad[i], strlen(bad[i]));
        T_ASSERT(strncmp(out, "error:", 6) == 0 && !strchr(out, '\n')[1], "'%s' got: %s", bad[i],
                 out);
    }
    T_ASSERT(strstr(ctl_raw(d, "suspend 60\n", 11), "no peer 60 is connected"), "%s", out);

    /* Half requests, vanishing clients, and more connections than allowed
     * while one sits idle: the others are answered, the extra ones told. */
    char path[300];
    snprintf(path, sizeof(path), "%s.ctl", d->sock);
    close(raw_connect(path));
    int half = raw_connect(path);
    T_ASSERT(send(half, "sta", 3, MSG_NOSIGNAL) == 3, "send");
    close(half);
    int idle = raw_connect(path);
    int flood[40];
    for (int i = 0; i < 40; i++)
        flood[i] = raw_connect(path);
    /* Answers come as the daemon gets to them (later on a loaded machine):
     * wait for them, up to 10 s, not a fixed pause. */
    int told = 0;
    bool seen[40] = {false};
    for (uint64_t end = t_now_ms() + 10000; told < 8 && t_now_ms() < end;) {
        struct pollfd p[40];
        for (int i = 0; i < 40; i++)
            p[i] = (struct pollfd){.fd = seen[i] ? -1 : flood[i], .events = POLLIN};
        if (poll(p, 40, 100) <= 0)
            continue;
        for (int i = 0; i < 40; i++) {
            char buf[128];
            if (!(p[i].revents & (POLLIN | POLLHUP)))
                continue;
            seen[i] = true;
            if (recv(flood[i], buf, sizeof(buf), 0) > 0 &&
                strncmp(buf, "error: too many control connections", 35) == 0)
                told++;
        }
    }
    for (int i = 0; i < 40; i++)
        close(flood[i]);
    T_ASSERT(told >= 8, "only %d of 40 extra control connections were told off", told);
    int st = ctl_run(d, out, sizeof(out), (const char *const[]){"status", NULL});
    T_ASSERT(st == 0 && strstr(out, "\nok\n"), "status with an idle control client: %d %s", st,
             out);
    /* The idle one is dropped after IVCD_CTL_IDLE_MS (5 s); not timed
     * closer than that, a loaded machine may run the daemon late. */
    struct timeval tv = {.tv_sec = 30};
    setsockopt(idle, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char c;
    T_ASSERT(recv(idle, &c, 1, 0) == 0, "the idle control connection was not closed: %s",
             strerror(errno));
    close(idle);
}

static void kill_daemon(void)
{
    if (daemon_pid > 0) {
        kill(daemon_pid, SIGKILL);
        waitpid(daemon_pid, NULL, 0);
    }
}

/* The daemon left the case's process group: at the case's timeout, exit
 * through the atexit handlers so that kill_daemon() ends it. */
static void on_alarm(int sig)
{
    static const char msg[] = "FAIL: the daemon case took too long\n";
    (void)sig;
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(1);
    exit(1); /* run the atexit cleanups: kill the daemon, ivcd, remove files */
}

static void test_daemon(void)
{
    char sock[200], pidfile[256], sock2[256];

    snprintf(sock, sizeof(sock), "%s/run/vhpc/d.sock", t_tmpdir()); /* parents missing */
    snprintf(pidfile, sizeof(pidfile), "%s/d.pid", t_tmpdir());
    /* Adopt the daemon when its parent exits, to reap it and see its status. */
    T_ASSERT(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    atexit(kill_daemon);
    signal(SIGALRM, on_alarm); /* after t_tmpdir(), which installs testutil's */

    const char *const args[] = {"--daemon", "--socket", sock,        "--job", "0x77",
                                "--size",   "4M",       "--pidfile", pidfile, NULL};
    int st = run_ivcd(out, sizeof(out), args);
    T_ASSERT(st == 0, "ivcd --daemon exited %d: %s", st, out);
    FILE *f = fopen(pidfile, "r");
    T_ASSERT(f && fscanf(f, "%d", &daemon_pid) == 1 && daemon_pid > 0, "pid file %s", pidfile);
    fclose(f);
    T_ASSERT(alive(daemon_pid), "the daemon %d is not running", (int)daemon_pid);

    /* Ready means ready: the greeting comes right away. */
    struct raw_client c;
    raw_attach(&c, sock, 1);
    T_ASSERT(c.id == 0 && c.size == (4u << 20), "id %lld size %zu", (long long)c.id, c.size);
    T_ASSERT(rc_hdr(&c)->job_magic == 0x77, "magic");
    raw_close(&c);
    struct stat sst;
    T_ASSERT(stat(sock, &sst) == 0 && (sst.st_mode & 0777) == 0600, "socket mode %o",
             sst.st_mode & 0777);
    snprintf(sock2, sizeof(sock2), "%s.ctl", sock);
    T_ASSERT(stat(sock2, &sst) == 0 && (sst.st_mode & 0777) == 0600, "ctl socket mode %o",
             sst.st_mode & 0777);

    /* A second daemon's error reaches its caller. */
    st = run_ivcd(out, sizeof(out), args);
    T_ASSERT(st == 1 && strstr(out, "another ivcd is already serving"), "exit %d: %s", st, out);
    T_ASSERT(alive(daemon_pid), "the first daemon died");

    T_ASSERT(kill(daemon_pid, SIGTERM) == 0, "kill: %s", strerror(errno));
    T_ASSERT(waitpid(daemon_pid, &st, 0) == daemon_pid, "waitpid: %s", strerror(errno));
    daemon_pid = 0;
    T_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "daemon status 0x%x after SIGTERM", st);
    T_ASSERT(!exists(sock) && !exists(sock2) && !exists(pidfile), "files left after the daemon");
}

/* A stale socket is replaced; --pidfile and --mode are honoured; a second
 * ivcd on a served socket is refused; SIGTERM removes every file. */
static void test_stale_socket_and_files(void)
{
    char pidfile[256], stale[256];
    struct t_ivcd d;

    /* t_ivcd_start's first socket is ivcd0.sock: leave a stale one there. */
    snprintf(stale, sizeof(stale), "%s/ivcd0.sock", t_tmpdir());
    make_stale_socket(stale);
    snprintf(pidfile, sizeof(pidfile), "%s/ivcd.pid", t_tmpdir());
    t_ivcd_start(
        &d, 9, (const char *const[]){"--size", "4M", "--pidfile", pidfile, "--mode", "0660", NULL});
    T_ASSERT(strcmp(d.sock, stale) == 0, "t_ivcd_start used %s", d.sock);
    struct stat sst;
    T_ASSERT(stat(d.sock, &sst) == 0 && (sst.st_mode & 0777) == 0660, "socket mode %o",
             sst.st_mode & 0777);
    FILE *f = fopen(pidfile, "r");
    int pid = 0;
    T_ASSERT(f && fscanf(f, "%d", &pid) == 1 && pid == d.pid, "pid file says %d, ivcd is %d", pid,
             (int)d.pid);
    fclose(f);

    int st =
        run_ivcd(out, sizeof(out),
                 (const char *const[]){"--socket", d.sock, "--job", "9", "--size", "4M", NULL});
    T_ASSERT(st == 1 && strstr(out, "another ivcd is already serving"), "exit %d: %s", st, out);
    T_ASSERT(alive(d.pid), "ivcd died when a second one tried its socket");

    char ctl[300];
    snprintf(ctl, sizeof(ctl), "%s.ctl", d.sock);
    t_ivcd_stop(&d); /* asserts exit status 0 after SIGTERM */
    T_ASSERT(!exists(d.sock) && !exists(ctl) && !exists(pidfile),
             "socket, control socket or pid file left after SIGTERM");
}

/* Garbage clients, many times over, some still connected while the
 * control socket gets garbage too; then a proper client is served. */
static void test_garbage_clients(void)
{
    struct t_ivcd d;

    t_ivcd_start(&d, 9, (const char *const[]){"--size", "4M", NULL});
    for (unsigned round = 0; round < 300; round++)
        garbage_client(d.sock, round);
    int silent[8];
    for (int i = 0; i < 8; i++)
        silent[i] = raw_connect(d.sock); /* connected, never reading */
    test_ctl_garbage(&d);
    T_ASSERT(alive(d.pid), "ivcd died");

    int st = ctl_run(&d, out, sizeof(out), (const char *const[]){"status", NULL});
    T_ASSERT(st == 0 && strstr(out, "clients=8\n"), "status: %d %s", st, out);
    st = ctl_run(&d, out, sizeof(out), (const char *const[]){"resume", "12", NULL});
    T_ASSERT(st == 1 && strstr(out, "error: no peer 12 is connected"), "exit %d: %s", st, out);
    for (int i = 0; i < 8; i++)
        close(silent[i]);
    T_ASSERT(wait_list(&d, "client id=", false, 5000), "silent clients not reaped");

    struct raw_client c;
    raw_attach(&c, d.sock, 1);
    T_ASSERT(c.id == 0 && rc_hdr(&c)->job_magic == 9, "id %lld", (long long)c.id);
    raw_close(&c);
    t_ivcd_stop(&d);
}

static const struct t_case cases[] = {
    {"options", test_options, 60},
    {"stale_socket_and_files", test_stale_socket_and_files, 30},
    {"garbage_clients", test_garbage_clients, 90},
    {"daemon", test_daemon, 30},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
