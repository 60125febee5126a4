/*
 * main.c - vhpc-agent: options, start-up (as PID 1: the guest's init, or
 * the boot initramfs of a full image, root.c; with --service: the agent of
 * a full image under systemd; else a test instance), and the one poll()
 * loop that serves every connection and every command.
 *
 *   vhpc-agent [--port PATH | --port-fd FD | --no-port] [--listen-unix PATH]
 *              [--tcp-port N | --tcp-fd FD] [--tcp-any] [--cmdline PATH] [--log PATH]
 *              [--key-file PATH] [--service] [--verbose]
 */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <linux/close_range.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct agent agent = {.port_fd_arg = -1,
                      .tcp_fd = -1,
                      .unix_fd = -1,
                      .cmdline_path = "/proc/cmdline",
                      .key_file = AGENT_KEY_FILE};

static void vlog(const char *fmt, va_list ap)
{
    char line[1024];
    int n = snprintf(line, sizeof(line), "vhpc-agent: ");
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* One write, so lines from the agent and the kernel do not mix. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void agent_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void agent_debug(const char *fmt, ...)
{
    if (!agent.verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

uint64_t agent_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: vhpc-agent [--port PATH | --port-fd FD | --no-port] [--listen-unix PATH]\n"
        "                  [--tcp-port N | --tcp-fd FD] [--tcp-any] [--cmdline PATH]\n"
        "                  [--log PATH] [--key-file PATH] [--service] [--verbose]\n"
        "  --port PATH        the virtio-serial port (default /dev/virtio-ports/" AGENT_PORT_NAME
        ")\n"
        "  --port-fd FD       use an inherited descriptor as the port (tests)\n"
        "  --no-port          serve no port\n"
        "  --listen-unix PATH also serve clients on a UNIX socket (tests)\n"
        "  --tcp-port N       TCP port for vhpc-rsh (default %d, 0: none)\n"
        "  --tcp-fd FD        an inherited listening TCP socket instead\n"
        "  --tcp-any          accept TCP clients from any address, not only\n"
        "                     loopback and the subnets of this machine's interfaces\n"
        "  --cmdline PATH     as PID 1, read the vhpc.* settings from PATH instead\n"
        "                     of /proc/cmdline (tests)\n"
        "  --key-file PATH    where to keep the job key the host sends, for vhpc-rsh\n"
        "                     (default " AGENT_KEY_FILE ")\n"
        "  --log PATH         log to PATH (default: stderr; as PID 1 the console)\n"
        "  --service          the agent of a full image, started by its init: set up\n"
        "                     hostname, network, /etc/hosts and the environment from\n"
        "                     the kernel command line as PID 1 would, and power off\n"
        "                     through init when the host asks\n",
        AGENT_TCP_PORT);
}

static int listen_tcp(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0) {
        agent_log("cannot listen on TCP port %d: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || strlen(path) >= sizeof(a.sun_path)) {
        agent_log("cannot listen on %s: %s", path, fd < 0 ? strerror(errno) : "path too long");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    strcpy(a.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0) {
        agent_log("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* An inherited listening socket: make it ours (non-blocking, close-on-exec). */
static int adopt_fd(int fd)
{
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -1;
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        return -1;
    return fd;
}

/* Bad arguments end a service or test instance, but PID 1 must not exit
 * (the kernel would panic) and gets arguments it does not know from the
 * kernel command line: it logs them and goes on. */
static void bad_args(const char *what)
{
    if (!agent.pid1) {
        if (what)
            agent_log("%s", what);
        usage();
        exit(2);
    }
    if (what)
        agent_log("%s (ignored)", what);
}

static void parse_args(int argc, char **argv, int *tcp_port)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},     {"port-fd", required_argument, NULL, 'P'},
        {"no-port", no_argument, NULL, 'N'},        {"listen-unix", required_argument, NULL, 'u'},
        {"tcp-port", required_argument, NULL, 't'}, {"tcp-fd", required_argument, NULL, 'T'},
        {"tcp-any", no_argument, NULL, 'a'},        {"verbose", no_argument, NULL, 'v'},
        {"cmdline", required_argument, NULL, 'c'},  {"log", required_argument, NULL, 'l'},
        {"key-file", required_argument, NULL, 'k'}, {"service", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},           {0},
    };
    char msg[300];
    int c;
    while ((c = getopt_long(argc, argv, "v", opts, NULL)) != -1) {
        switch (c) {
        case 'p': agent.port_path = optarg; break;
        case 'P': agent.port_fd_arg = atoi(optarg); break;
        case 'N': agent.port_path = NULL; break;
        case 'u':
            if ((agent.unix_fd = listen_unix(optarg)) < 0)
                bad_args(NULL);
            break;
        case 't': *tcp_port = atoi(optarg); break;
        case 'T':
            if ((agent.tcp_fd = adopt_fd(atoi(optarg))) < 0) {
                snprintf(msg, sizeof(msg), "--tcp-fd %s: %s", optarg, strerror(errno));
                bad_args(msg);
            }
            *tcp_port = 0;
            break;
        case 'a': agent.tcp_any = true; break;
        case 'v': agent.verbose = true; break;
        case 'c': agent.cmdline_path = optarg; break;
        case 'k': agent.key_file = optarg; break;
        case 's': agent.service = !agent.pid1; break;
        case 'l': {
            int fd = open(optarg, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0) {
                snprintf(msg, sizeof(msg), "--log %s: %s", optarg, strerror(errno));
                bad_args(msg);
            }
            if (fd > STDERR_FILENO)
                close(fd);
            break;
        }
        case 'h':
            if (!agent.pid1) {
                usage();
                exit(0);
            }
            break;
        default: bad_args(NULL); break;
        }
    }
    if (optind < argc) {
        snprintf(msg, sizeof(msg), "unexpected argument '%s'", argv[optind]);
        bad_args(msg);
    }
}

/* Signals arrive through a signalfd; children get a clean mask (session.c). */
static int setup_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        session_reaped(pid, status);
}

static void on_signals(int sfd)
{
    struct signalfd_siginfo si;
    while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD)
            continue; /* reaped below, once */
        agent_log("signal %d: stopping", (int)si.ssi_signo);
        agent.stopping = true;
        agent.shutdown_kind = AGENT_SHUTDOWN_POWEROFF;
    }
    reap();
}

/* What poll() reports on: index i of the pollfd array is described by ref[i]. */
enum ref_kind { R_SIGNAL, R_LISTEN_TCP, R_LISTEN_UNIX, R_CONN, R_OUT, R_ERR, R_IN };
struct ref {
    enum ref_kind kind;
    void *obj;
};

struct pollset {
    struct pollfd *fds;
    struct ref *refs;
    size_t n, cap;
};

static void add(struct pollset *ps, int fd, short events, enum ref_kind kind, void *obj)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 64;
        struct pollfd *f = realloc(ps->fds, cap * sizeof(*f));
        struct ref *r = f ? realloc(ps->refs, cap * sizeof(*r)) : NULL;
        if (f)
            ps->fds = f;
        if (!r)
            return; /* out of memory: that fd waits for the next round */
        ps->refs = r;
        ps->cap = cap;
    }
    ps->fds[ps->n] = (struct pollfd){.fd = fd, .events = events};
    ps->refs[ps->n++] = (struct ref){kind, obj};
}

/* Build the poll set; returns the timeout the pending work needs. */
static int build(struct pollset *ps, int sfd)
{
    int timeout = sessions_finish();
    int auth = conns_expire();
    if (auth >= 0 && (timeout < 0 || auth < timeout))
        timeout = auth;
    ps->n = 0;
    add(ps, sfd, POLLIN, R_SIGNAL, NULL);
    if (agent.tcp_fd >= 0)
        add(ps, agent.tcp_fd, POLLIN, R_LISTEN_TCP, NULL);
    if (agent.unix_fd >= 0)
        add(ps, agent.unix_fd, POLLIN, R_LISTEN_UNIX, NULL);
    for (struct conn *c = agent.conns; c; c = c->next) {
        if (c->fd < 0 || (c->kind == CONN_PORT && !c->host_present)) {
            /* A port that is absent or whose host side is away cannot be
             * polled (it reports POLLHUP all the time): probe it. */
            if (timeout < 0 || timeout > 50)
                timeout = 50;
            continue;
        }
        short ev = conn_input_blocked(c) ? 0 : POLLIN;
        if (agent_buf_pending(&c->out))
            ev |= POLLOUT;
        add(ps, c->fd, ev, R_CONN, c);
        bool room = conn_can_send(c);
        for (struct session *s = c->sessions; s; s = s->next) {
            if (s->kind == S_CMD) {
                if (room && s->out_fd >= 0)
                    add(ps, s->out_fd, POLLIN, R_OUT, s);
                if (room && s->err_fd >= 0)
                    add(ps, s->err_fd, POLLIN, R_ERR, s);
                if (s->in_fd >= 0 && agent_buf_pending(&s->stdin_q))
                    add(ps, s->in_fd, POLLOUT, R_IN, s);
            } else if (s->kind == S_GET && room) {
                timeout = 0; /* a regular file is always readable */
            }
        }
    }
    return timeout;
}

static void free_dead_conns(void)
{
    for (struct conn **pc = &agent.conns; *pc;) {
        struct conn *c = *pc;
        if (c->dead) {
            *pc = c->next;
            agent_buf_free(&c->in);
            agent_buf_free(&c->out);
            free(c);
        } else {
            pc = &c->next;
        }
    }
}

/* Stop: every command gets SIGTERM, then SIGKILL after a grace period; what
 * is queued for the host is flushed for a moment; then power off (PID 1) or
 * exit. */
static void finish_for(uint64_t t0, uint64_t ms)
{
    while (sessions_any_cmd() && agent_now_ms() - t0 < ms) {
        usleep(10000);
        reap();
        sessions_pump_all();
        sessions_finish();
    }
}

static void stop(void)
{
    uint64_t t0 = agent_now_ms();
    sessions_kill_all(SIGTERM);
    finish_for(t0, 2000);
    sessions_kill_all(SIGKILL);
    finish_for(t0, 2500);
    for (struct conn *c = agent.conns; c; c = c->next) {
        while (c->fd >= 0 && agent_buf_pending(&c->out) && agent_now_ms() - t0 < 3000) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            if (poll(&p, 1, 100) > 0)
                conn_flush(c);
        }
    }
    if (agent.pid1)
        init_poweroff(agent.shutdown_kind);
    if (agent.service && agent.host_shutdown)
        init_service_poweroff(agent.shutdown_kind);
    agent_log("stopped");
    exit(0);
}

int main(int argc, char **argv)
{
    int tcp_port = AGENT_TCP_PORT;
    struct utsname u;
    struct pollset ps = {0};

    agent.pid1 = getpid() == 1;
    agent.port_path = "/dev/virtio-ports/" AGENT_PORT_NAME;
    if (agent.pid1)
        init_early(); /* mounts first: the console is on devtmpfs */
    /* Descriptors 0-2 must be taken, or a pipe could land there and be
     * clobbered by the dup2()s that set up a command's stdio. */
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
            break;
    /* What we inherited beyond them is not for the commands we start
     * (--port-fd and --tcp-fd are adopted, close-on-exec too). */
    if (syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC) < 0)
        for (int fd = 3; fd < 1024; fd++)
            fcntl(fd, F_SETFD, FD_CLOEXEC);
    int sfd = setup_signals(); /* before the sockets: a client may SIGTERM at once */
    if (sfd < 0) {
        agent_log("signalfd: %s", strerror(errno));
        if (!agent.pid1)
            return 1;
    }
    parse_args(argc, argv, &tcp_port);
    /* Children find the guest's ivshmem device (libivc's discovery order:
     * $IVC_SOCKET, then the device); an empty value means "not a socket". */
    setenv("IVC_SOCKET", "", 1);
    if (!getenv("PATH"))
        setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin", 1);
    if (agent.pid1)
        init_system();
    else if (agent.service)
        init_service();
    if (uname(&u) == 0) {
        snprintf(agent.kernel, sizeof(agent.kernel), "%s", u.release);
        snprintf(agent.hostname, sizeof(agent.hostname), "%s", u.nodename);
    }
    if (tcp_port > 0)
        agent.tcp_fd = listen_tcp(tcp_port);

    agent.port_wait_from = agent_now_ms();
    if (agent.port_fd_arg >= 0) {
        if (adopt_fd(agent.port_fd_arg) < 0) {
            agent_log("--port-fd %d: %s", agent.port_fd_arg, strerror(errno));
            if (!agent.pid1)
                return 1;
        } else if ((agent.port = conn_new(CONN_PORT, agent.port_fd_arg, "port"))) {
            conn_send_hello(agent.port);
        }
    } else if (agent.port_path) {
        agent.port = conn_new(CONN_PORT, -1, "port");
        conn_port_try_open();
    }
    agent_log("ready (kernel %s, host %s%s)", agent.kernel, agent.hostname,
              agent.pid1      ? ", PID 1"
              : agent.service ? ", service"
                              : "");

    for (;;) {
        if (agent.stopping)
            stop();
        int timeout = build(&ps, sfd);
        if (sfd < 0) { /* no signalfd: look for exited children now and then */
            reap();
            if (timeout < 0 || timeout > 100)
                timeout = 100;
        }
        int n = poll(ps.fds, ps.n, timeout);
        if (n < 0 && errno != EINTR) {
            agent_log("poll: %s", strerror(errno));
            usleep(100000);
        }
        for (size_t i = 0; n > 0 && i < ps.n; i++) {
            short re = ps.fds[i].revents;
            struct ref *r = &ps.refs[i];
            if (!re)
                continue;
            switch (r->kind) {
            case R_SIGNAL: on_signals(sfd); break;
            case R_LISTEN_TCP: conn_accept(agent.tcp_fd, true); break;
            case R_LISTEN_UNIX: conn_accept(agent.unix_fd, false); break;
            case R_CONN: {
                struct conn *c = r->obj;
                if (c->dead || c->fd != ps.fds[i].fd)
                    break;
                if (re & POLLOUT)
                    conn_flush(c);
                if (!c->dead && c->fd >= 0 && (re & (POLLIN | POLLHUP | POLLERR)))
                    conn_on_readable(c);
                break;
            }
            default: break; /* session pipes: below */
            }
        }
        /* Session pipes in a second pass: a connection handled above may have
         * freed sessions, so each is looked up again.  Should a new session
         * reuse the address and fd of a freed one, the extra non-blocking
         * read or write finds nothing to do. */
        for (size_t i = 0; n > 0 && i < ps.n; i++) {
            struct ref *r = &ps.refs[i];
            if (!ps.fds[i].revents || r->kind < R_OUT)
                continue;
            for (struct conn *c = agent.conns; c; c = c->next) {
                for (struct session *s = c->dead ? NULL : c->sessions; s; s = s->next) {
                    if (s != r->obj)
                        continue;
                    if (r->kind == R_IN && s->in_fd == ps.fds[i].fd)
                        session_pump_stdin(s);
                    else if (r->kind == R_OUT && s->out_fd == ps.fds[i].fd)
                        session_pump_output(s, s->out_fd);
                    else if (r->kind == R_ERR && s->err_fd == ps.fds[i].fd)
                        session_pump_output(s, s->err_fd);
                }
            }
        }
        for (struct conn *c = agent.conns; c; c = c->next) {
            for (struct session *s = c->dead ? NULL : c->sessions, *next; s; s = next) {
                next = s->next;
                if (s->kind == S_GET && conn_can_send(c))
                    session_pump_get(s);
            }
            if (!c->dead && c->fd >= 0 && agent_buf_pending(&c->out))
                conn_flush(c); /* most writes go out at once, without a poll round */
        }
        if (agent.port)
            conn_port_probe();
        free_dead_conns();
    }
}
