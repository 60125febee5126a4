/*
 * main.c - ivcd, the host daemon of one job's inter-VM communication:
 * options, daemonizing, logging, signals and the event loop.
 *
 * One ivcd serves one job: it creates the job's shared region and offers it
 * on a UNIX socket that speaks QEMU's ivshmem-server protocol, so QEMU
 * ivshmem-doorbell devices and libivc host processes attach the same way.
 * Everything runs in one thread around epoll: the job socket (server.c), the
 * control socket (ctl.c), a signalfd for SIGTERM/SIGINT/SIGHUP, and a tick
 * (IVCD_TICK_MS, IVCD_SUSPEND_TICK_MS while a suspend is pending) for the
 * heartbeat in the region and the checks of region.c.
 *
 * With --daemon the parent returns only once both sockets listen (QEMU reads
 * the first protocol messages synchronously when it starts, so callers start
 * it right after), or fails with the daemon's own error message.
 */
#include "daemon.h"
#include "ivcd.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IVCD_VERSION         "0.1.0"
#define DEFAULT_SIZE         (256ULL << 20)
#define DEFAULT_MAX_PEERS    64
#define DEFAULT_MAX_EPS      64
#define DEFAULT_CONNS_PER_EP 64
#define DEFAULT_MODE         0600
#define MAX_EVENTS           64

static struct {
    bool syslog, verbose;
    int ready_fd;   /* daemon start-up: errors also go to the waiting parent */
    bool ready_err; /* the "E" marker was written */
} logger = {.ready_fd = -1};

int ivcd_err_set(struct ivcd_err *err, int errnum, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (errnum && n >= 0 && (size_t)n < sizeof(err->msg))
        snprintf(err->msg + n, sizeof(err->msg) - (size_t)n, ": %s", strerror(errnum));
    return -1;
}

void ivcd_log(int prio, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (prio == LOG_DEBUG && !logger.verbose)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (logger.syslog)
        syslog(prio, "%s", msg);
    else
        fprintf(stderr, "ivcd[%d]: %s\n", (int)getpid(), msg);
    if (prio <= LOG_ERR && logger.ready_fd >= 0) {
        if (!logger.ready_err && write(logger.ready_fd, "E", 1) == 1)
            logger.ready_err = true;
        if (logger.ready_err &&
            (write(logger.ready_fd, msg, strlen(msg)) < 0 || write(logger.ready_fd, "\n", 1) < 0))
            logger.ready_fd = -1; /* the parent is gone; syslog has it */
    }
}

uint64_t ivcd_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- options ------------------------------------------------------------- */

static const char usage_text[] =
    "Usage: ivcd --job MAGIC [--socket PATH] [OPTIONS]\n"
    "       ivcd ctl --socket PATH (status | list | suspend ID [--timeout MS] | resume ID)\n"
    "Serve one job's shared IVC region to QEMU ivshmem-doorbell devices and libivc\n"
    "host processes over the ivshmem-server protocol on the UNIX socket PATH.\n"
    "\n"
    "  -s, --socket PATH             the job's socket (control socket: PATH.ctl;\n"
    "                                default " IVCD_SOCKET_DIR "/ivc-<job>.sock, where\n"
    "                                libivc looks when $IVC_SOCKET is not set)\n"
    "  -j, --job MAGIC               the job id, decimal or 0x hexadecimal (required)\n"
    "      --size SIZE               region size, a power of two >= 1M, suffixes K/M/G\n"
    "                                (default 256M)\n"
    "      --max-peers N             ivshmem peers: VMs plus host processes (default 64,\n"
    "                                at most 4096)\n"
    "      --max-endpoints N         processes registered in the region (default 64,\n"
    "                                at most 4096)\n"
    "      --conns-per-endpoint N    channels each endpoint can open (default 64, at most\n"
    "                                1024)\n"
    "      --vectors N               interrupt vectors (eventfds) per peer, 1..64 (default 1)\n"
    "      --hugetlb                 back the region with huge pages\n"
    "      --mode OCTAL              permissions of PATH (default 0600)\n"
    "  -f, --foreground              stay in the foreground, log to stderr (default)\n"
    "  -d, --daemon                  detach; return once the socket listens; log to syslog\n"
    "      --syslog                  log to syslog\n"
    "      --pidfile PATH            write ivcd's pid there (removed at exit)\n"
    "  -v, --verbose                 log debugging details too\n"
    "  -h, --help                    show this help\n"
    "  -V, --version                 show the version\n"
    "SIGTERM, SIGINT or SIGHUP stop ivcd cleanly: peers are disconnected, the sockets\n"
    "and the pid file removed.  Exit status: 0, 1 on a run-time error, 2 on bad usage.\n";

static void __attribute__((noreturn, format(printf, 1, 2))) usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("ivcd: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'ivcd --help' for more information.\n", stderr);
    exit(2);
}

/* A size as people write it: 4194304, 4096K, 4M, 1G. */
static const char *size_str(uint64_t v, char *buf, size_t len)
{
    static const char units[] = "GMK";
    for (int i = 0; i < 3; i++) {
        uint64_t u = 1ULL << (10 * (3 - i));
        if (v >= u && v % u == 0) {
            snprintf(buf, len, "%" PRIu64 "%c", v / u, units[i]);
            return buf;
        }
    }
    snprintf(buf, len, "%" PRIu64, v);
    return buf;
}

static uint64_t parse_size(const char *s)
{
    char *end, b1[32], b2[32];
    int shift = 0;

    if (s[0] < '0' || s[0] > '9')
        usage_error("--size '%s' is not a size (a number with an optional K, M or G suffix, "
                    "e.g. 256M)",
                    s);
    errno = 0;
    uint64_t v = strtoull(s, &end, 10);
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        end++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        end++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        end++;
        break;
    default: break;
    }
    if (errno || *end)
        usage_error("--size '%s' is not a size (a number with an optional K, M or G suffix, "
                    "e.g. 256M)",
                    s);
    if (v > (IVC_REGION_MAX >> shift))
        usage_error("--size %s is larger than the maximum %s", s,
                    size_str(IVC_REGION_MAX, b1, sizeof(b1)));
    v <<= shift;
    if (v & (v - 1) || v == 0) {
        uint64_t p = IVC_REGION_MIN;
        while (p < v)
            p <<= 1;
        usage_error("--size %s is not a power of two (the ivshmem BAR must be one); try %s", s,
                    size_str(p, b1, sizeof(b1)));
    }
    if (v < IVC_REGION_MIN)
        usage_error("--size %s is smaller than the minimum %s", s,
                    size_str(IVC_REGION_MIN, b2, sizeof(b2)));
    return v;
}

static uint64_t parse_magic(const char *s)
{
    char *end;
    int base = 10;
    const char *p = s;

    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    }
    errno = 0;
    uint64_t v = strtoull(p, &end, base);
    if (!((base == 10 && *p >= '0' && *p <= '9') || (base == 16 && isxdigit((unsigned char)*p))) ||
        errno || *end)
        usage_error("--job '%s' is not a job id (a decimal or 0x-prefixed hexadecimal "
                    "64-bit number)",
                    s);
    return v;
}

static uint32_t parse_count(const char *opt, const char *s, uint32_t min, uint32_t max)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || errno || *end || v < min || v > max)
        usage_error("%s '%s' is not a number from %u to %u", opt, s, min, max);
    return (uint32_t)v;
}

static mode_t parse_mode(const char *s)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 8);
    if (s[0] < '0' || s[0] > '7' || errno || *end || v > 0777)
        usage_error("--mode '%s' is not an octal permission mode (e.g. 0660)", s);
    return (mode_t)v;
}

/* An absolute version of `path` (the daemon changes to /), malloc'd. */
static char *absolute(const char *opt, const char *path)
{
    char buf[PATH_MAX], *out;
    vhpc_err_t err = {0};

    if (vhpc_daemon_path(opt, path, buf, sizeof(buf), &err) < 0)
        usage_error("%s", err.msg);
    if (!(out = strdup(buf))) {
        fprintf(stderr, "ivcd: out of memory\n");
        exit(1);
    }
    return out;
}

/* Say which size would fit when the tables do not. */
static void check_geometry(const struct ivcd_config *cfg)
{
    struct ivc_geometry g;
    char b1[32], b2[32];

    if (ivc_geometry_compute(&g, cfg->size, cfg->max_peers, cfg->max_eps, cfg->conns_per_ep) == 0)
        return;
    uint64_t fit = cfg->size;
    while (fit < IVC_REGION_MAX &&
           ivc_geometry_compute(&g, fit, cfg->max_peers, cfg->max_eps, cfg->conns_per_ep) < 0)
        fit <<= 1;
    if (ivc_geometry_compute(&g, fit, cfg->max_peers, cfg->max_eps, cfg->conns_per_ep) < 0)
        usage_error("--max-endpoints %u with --conns-per-endpoint %u needs a region larger "
                    "than the maximum; lower them",
                    cfg->max_eps, cfg->conns_per_ep);
    usage_error("--size %s is too small for --max-peers %u --max-endpoints %u "
                "--conns-per-endpoint %u (the tables take %" PRIu64
                " KiB and every endpoint needs at least %u KiB of ring memory); "
                "try --size %s, or fewer endpoints or connections per endpoint",
                size_str(cfg->size, b1, sizeof(b1)), cfg->max_peers, cfg->max_eps,
                cfg->conns_per_ep, g.pool_off >> 10, 2 * IVC_PAGE >> 10,
                size_str(fit, b2, sizeof(b2)));
}

static void parse_options(int argc, char **argv, struct ivcd_config *cfg)
{
    enum {
        OPT_SIZE = 256,
        OPT_MAX_PEERS,
        OPT_MAX_EPS,
        OPT_CONNS,
        OPT_VECTORS,
        OPT_HUGETLB,
        OPT_SYSLOG,
        OPT_PIDFILE,
        OPT_MODE,
    };
    static const struct option opts[] = {
        {"socket", required_argument, NULL, 's'},
        {"job", required_argument, NULL, 'j'},
        {"size", required_argument, NULL, OPT_SIZE},
        {"max-peers", required_argument, NULL, OPT_MAX_PEERS},
        {"max-endpoints", required_argument, NULL, OPT_MAX_EPS},
        {"conns-per-endpoint", required_argument, NULL, OPT_CONNS},
        {"vectors", required_argument, NULL, OPT_VECTORS},
        {"hugetlb", no_argument, NULL, OPT_HUGETLB},
        {"foreground", no_argument, NULL, 'f'},
        {"daemon", no_argument, NULL, 'd'},
        {"syslog", no_argument, NULL, OPT_SYSLOG},
        {"pidfile", required_argument, NULL, OPT_PIDFILE},
        {"mode", required_argument, NULL, OPT_MODE},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *sock = NULL, *pidfile = NULL;
    bool have_job = false, foreground = false;
    int c;

    *cfg = (struct ivcd_config){
        .size = DEFAULT_SIZE,
        .max_peers = DEFAULT_MAX_PEERS,
        .max_eps = DEFAULT_MAX_EPS,
        .conns_per_ep = DEFAULT_CONNS_PER_EP,
        .vectors = 1,
        .mode = DEFAULT_MODE,
    };
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":s:j:fdvhV", opts, NULL)) != -1) {
        switch (c) {
        case 's': sock = optarg; break;
        case 'j':
            cfg->magic = parse_magic(optarg);
            have_job = true;
            break;
        case OPT_SIZE: cfg->size = parse_size(optarg); break;
        case OPT_MAX_PEERS:
            cfg->max_peers = parse_count("--max-peers", optarg, 1, IVC_MAX_CLIENTS_LIMIT);
            break;
        case OPT_MAX_EPS:
            cfg->max_eps = parse_count("--max-endpoints", optarg, 1, IVC_MAX_EPS_LIMIT);
            break;
        case OPT_CONNS:
            cfg->conns_per_ep =
                parse_count("--conns-per-endpoint", optarg, 1, IVC_CONNS_PER_EP_LIMIT);
            break;
        case OPT_VECTORS:
            cfg->vectors = parse_count("--vectors", optarg, 1, IVCD_MAX_VECTORS);
            break;
        case OPT_HUGETLB: cfg->hugetlb = true; break;
        case 'f': foreground = true; break;
        case 'd': cfg->daemon = true; break;
        case OPT_SYSLOG: cfg->syslog = true; break;
        case OPT_PIDFILE: pidfile = optarg; break;
        case OPT_MODE: cfg->mode = parse_mode(optarg); break;
        case 'v': cfg->verbose = true; break;
        case 'h': fputs(usage_text, stdout); exit(0);
        case 'V': printf("ivcd %s (region layout %d)\n", IVCD_VERSION, IVC_LAYOUT_VERSION); exit(0);
        case ':': usage_error("option '%s' requires an argument", argv[optind - 1]);
        default: usage_error("unrecognized option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (foreground && cfg->daemon)
        usage_error("--foreground and --daemon exclude each other");
    if (sock && !*sock)
        usage_error("--socket needs a path (or leave it out for " IVCD_SOCKET_DIR
                    "/ivc-<job>.sock)");
    if (!have_job)
        usage_error("--job MAGIC is required (the job's id, decimal or 0x hexadecimal)");
    check_geometry(cfg);

    /* Without --socket: where libivc looks by default for this job. */
    char defsock[128];
    if (!sock) {
        snprintf(defsock, sizeof(defsock), IVCD_SOCKET_DIR "/ivc-%" PRIu64 ".sock", cfg->magic);
        sock = defsock;
    }
    cfg->socket_path = absolute("--socket", sock);
    if (asprintf(&cfg->ctl_path, "%s.ctl", cfg->socket_path) < 0) {
        fprintf(stderr, "ivcd: out of memory\n");
        exit(1);
    }
    if (strlen(cfg->ctl_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        usage_error("--socket %s is too long: %s.ctl must fit in a UNIX socket address "
                    "(%zu bytes)",
                    cfg->socket_path, cfg->socket_path,
                    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    if (pidfile)
        cfg->pidfile = absolute("--pidfile", pidfile);
    if (cfg->daemon)
        cfg->syslog = true;
}

static void free_config(struct ivcd_config *cfg)
{
    free(cfg->socket_path);
    free(cfg->ctl_path);
    free(cfg->pidfile);
}

/* ---- daemon -------------------------------------------------------------- */

/* Fork (daemon.h): the parent waits for the child's verdict and exits with
 * it; its errors reach the parent through the logger's ready_fd. */
static void daemonize(void)
{
    vhpc_err_t err = {0};
    int r = vhpc_daemonize("ivcd", &logger.ready_fd, &err);
    if (r < 0) {
        fprintf(stderr, "ivcd: %s\n", err.msg);
        exit(1);
    }
    if (r > 0)
        log_warn("setsid: %s", strerror(errno));
}

/* Start-up is complete: release a waiting parent. */
static void ready(const struct ivcd_config *cfg)
{
    vhpc_err_t err = {0};
    if (!cfg->daemon)
        return;
    if (vhpc_daemon_ready(logger.ready_fd, -1, &err) < 0)
        log_warn("%s", err.msg);
    logger.ready_fd = -1;
}

static int write_pidfile(const char *path, struct ivcd_err *err)
{
    char buf[32];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return ivcd_err_set(err, errno, "writing pid file %s", path);
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (write(fd, buf, (size_t)n) != n) {
        int e = errno;
        close(fd);
        unlink(path);
        return ivcd_err_set(err, e, "writing pid file %s", path);
    }
    close(fd);
    return 0;
}

/* Every peer needs `vectors` eventfds and a socket. */
static void raise_fd_limit(const struct ivcd_config *cfg)
{
    struct rlimit rl;
    uint64_t need = (uint64_t)cfg->max_peers * (cfg->vectors + 1) + 64;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("raising the open file limit: %s", strerror(errno));
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
        log_warn("--max-peers %u with --vectors %u may need %" PRIu64
                 " file descriptors but the limit is %llu; peers beyond it will be refused",
                 cfg->max_peers, cfg->vectors, need, (unsigned long long)rl.rlim_cur);
}

/* ---- event loop ---------------------------------------------------------- */

static int setup(struct ivcd *d, int sigfd, struct ivcd_err *err)
{
    raise_fd_limit(&d->cfg);
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (d->epfd < 0)
        return ivcd_err_set(err, errno, "epoll_create1");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = IVCD_EV(EV_SIGNAL, 0)};
    if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, sigfd, &ev) < 0)
        return ivcd_err_set(err, errno, "watching signals");
    if (region_create(&d->region, &d->cfg, err) < 0)
        return -1;
    /* Refuse early if another ivcd serves the job socket.  Then the control
     * socket first: once the job socket accepts, `ivcd ctl` works. */
    if (ivcd_clear_stale(d->cfg.socket_path, err) < 0 || ctl_init(d, err) < 0 ||
        server_init(d, err) < 0)
        return -1;
    if (d->cfg.pidfile && write_pidfile(d->cfg.pidfile, err) < 0)
        return -1;
    return 0;
}

static void teardown(struct ivcd *d, bool pidfile_written)
{
    ctl_fini(d);
    server_fini(d);
    region_destroy(&d->region);
    if (d->epfd >= 0)
        close(d->epfd);
    if (pidfile_written)
        unlink(d->cfg.pidfile);
}

static void on_signal(struct ivcd *d, int sigfd)
{
    struct signalfd_siginfo si;

    while (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        log_info("received %s; shutting down", strsignal((int)si.ssi_signo));
        d->stopping = true;
    }
}

static int run(struct ivcd *d, int sigfd)
{
    struct epoll_event evs[MAX_EVENTS];
    uint64_t next_tick = 0;
    bool suspending = false;

    while (!d->stopping) {
        uint64_t now = ivcd_now_ms();
        if (now >= next_tick) {
            region_tick(&d->region, now);
            suspending = ctl_poll(d, now);
            next_tick = now + (suspending ? IVCD_SUSPEND_TICK_MS : IVCD_TICK_MS);
        }
        int n = epoll_wait(d->epfd, evs, MAX_EVENTS, (int)(next_tick - now));
        if (n < 0 && errno != EINTR) {
            log_err("epoll_wait: %s", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            uint32_t kind = (uint32_t)(evs[i].data.u64 >> 32);
            uint32_t idx = (uint32_t)evs[i].data.u64;
            switch (kind) {
            case EV_SIGNAL: on_signal(d, sigfd); break;
            case EV_LISTEN: server_accept(d); break;
            case EV_CLIENT: server_client_event(d, idx, evs[i].events); break;
            case EV_CTL_LISTEN: ctl_accept(d); break;
            case EV_CTL: ctl_conn_event(d, idx, evs[i].events); break;
            default: break;
            }
            server_reap(d);
        }
        /* Suspends are also checked at every wakeup, and tick fast. */
        now = ivcd_now_ms();
        suspending = ctl_poll(d, now);
        if (suspending && next_tick > now + IVCD_SUSPEND_TICK_MS)
            next_tick = now + IVCD_SUSPEND_TICK_MS;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct ivcd d = {.epfd = -1, .listen_fd = -1, .ctl_fd = -1, .region.fd = -1};
    struct ivcd_err err = {{0}};
    sigset_t sigs;

    if (argc > 1 && strcmp(argv[1], "ctl") == 0)
        return ctl_client_main(argc - 1, argv + 1);
    parse_options(argc, argv, &d.cfg);
    logger.syslog = d.cfg.syslog;
    logger.verbose = d.cfg.verbose;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);

    if (d.cfg.daemon)
        daemonize();
    if (logger.syslog)
        openlog("ivcd", LOG_PID, LOG_DAEMON);

    int rc = 1;
    bool started = false;
    int sigfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigfd < 0)
        ivcd_err_set(&err, errno, "signalfd");
    else if (setup(&d, sigfd, &err) == 0)
        started = true;
    if (!started) {
        log_err("%s", err.msg);
    } else {
        char sz[32];
        log_info("serving job %" PRIu64 " (0x%" PRIx64 ") on %s: %s region, up to %u peers, "
                 "%u endpoints with %u channels each",
                 d.cfg.magic, d.cfg.magic, d.cfg.socket_path, size_str(d.cfg.size, sz, sizeof(sz)),
                 d.cfg.max_peers, d.cfg.max_eps, d.cfg.conns_per_ep);
        ready(&d.cfg);
        rc = run(&d, sigfd);
    }
    teardown(&d, started && d.cfg.pidfile);
    if (sigfd >= 0)
        close(sigfd);
    if (started)
        log_info("exiting");
    free_config(&d.cfg);
    if (logger.syslog)
        closelog();
    return rc;
}
