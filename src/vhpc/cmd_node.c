/*
 * cmd_node.c - `vhpc node serve`: the per-node service of image
 * distribution.  It receives pushed images into a store (its cache),
 * forwards them down the push's tree while they arrive, answers pulls and
 * "have image X?" (re-hashing the blobs first), and keeps the cache within
 * a size budget by evicting the least recently used images (dist.c).
 */
#include "dist.h"
#include "dist_proto.h"
#include "store.h"
#include "vhpc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static const char node_help[] =
    "Usage: vhpc node serve --listen ADDR[:PORT] [--store DIR] [--budget SIZE]\n"
    "                       [--pidfile FILE] [--daemon] [--log FILE] [--max-connections N]\n"
    "                       [--max-per-peer N] [--max-sessions N] [--idle-timeout S]\n"
    "                       [--allow-uid LIST] [--allow-user LIST] [--munge-socket PATH]\n"
    "Serve images to and from other nodes (vhpc image push / pull): receive pushed\n"
    "images into a cache and forward them while they arrive, answer pulls.  Cached\n"
    "blobs are re-hashed before they are served or counted as present; a damaged one\n"
    "is removed and fetched again.\n"
    "  --listen ADDR[:PORT]  the address to listen on (port default 7470; 0.0.0.0\n"
    "                        for every address)\n"
    "  --store DIR           the cache: an image store under DIR (default $VHPC_HOME,\n"
    "                        else /var/lib/vhpc)\n"
    "  --budget SIZE         keep the cache within SIZE bytes (K, M, G, T suffixes),\n"
    "                        evicting the least recently used images; 0: no limit.\n"
    "                        Kept in the store; without the option the stored one holds\n"
    "  --pidfile FILE        write the service's pid there (removed at exit)\n"
    "  --daemon              detach; return once the service listens\n"
    "  --log FILE            with --daemon: append the log there (else it is dropped)\n"
    "  --max-connections N   connections at once, in all (default 256); at the limit the\n"
    "                        oldest that has not made its request yet is closed\n"
    "  --max-per-peer N      ... from one address (default 32)\n"
    "  --max-sessions N      transfers at once: pushes received, pulls served (default\n"
    "                        16); more are refused (\"busy\", try again)\n"
    "  --idle-timeout S      close a connection that made no request within S seconds,\n"
    "                        or whose sender stays silent that long (default 30)\n"
    "  --allow-uid LIST      uids trusted like root here: they may push any name and\n"
    "                        read every image (comma-separated; may repeat)\n"
    "  --allow-user LIST     the same by user name\n"
    "  --munge-socket PATH   munged's socket (default $VHPC_MUNGE_SOCKET, else munge's)\n"
    "Every request is authenticated with munge (the sender's uid, from a credential\n"
    "bound to the request and this node's address).  Root and the --allow-* users\n"
    "may push any name; another user only names in its namespace, USER.NAME.  A\n"
    "name:version is never rebound (a push of another image under it is refused).\n"
    "Pulls and queries see the images outside every user's namespace, and the\n"
    "user's own (root and --allow-* users: all).\n"
    "SIGTERM or SIGINT stop it (transfers under way are abandoned).\n";

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* Fork; the parent waits for the child's "R" (ready) or "E<message>" and
 * exits with it. */
static int daemonize(int *ready_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        fprintf(stderr, "vhpc node: creating a pipe: %s\n", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "vhpc node: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid > 0) {
        char buf[2048];
        size_t got = 0;
        ssize_t n;
        close(p[1]);
        while (got < sizeof(buf) - 1 && (n = read(p[0], buf + got, sizeof(buf) - 1 - got)) != 0) {
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
            fprintf(stderr, "vhpc: %s\n", buf + 1);
            _exit(1);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        fprintf(stderr, "vhpc node: the service died during start-up\n");
        _exit(1);
    }
    close(p[0]);
    *ready_fd = p[1];
    setsid();
    return 0;
}

static int write_pidfile(const char *path, vhpc_err_t *err)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return vhpc_err_set(err, -errno, "--pidfile %s", path);
    if (write(fd, buf, (size_t)n) != n) {
        int e = errno;
        close(fd);
        return vhpc_err_set(err, -e, "--pidfile %s", path);
    }
    close(fd);
    return 0;
}

static int serve(int argc, char **argv)
{
    const char *cmd = "node serve", *listen_on = NULL, *store_dir = NULL, *pidfile = NULL,
               *logfile = NULL;
    int daemon = 0, have_budget = 0;
    struct vhpc_dist_limits lim = {0};
    uid_t allow[256];
    size_t nallow = 0;
    uint64_t budget = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(node_help, stdout);
            return 0;
        }
        if (!strcmp(a, "--daemon")) {
            daemon = 1;
            continue;
        }
        if (i + 1 >= argc)
            return cli_usage(cmd, "'%s' needs an argument or is unknown", a);
        if (!strcmp(a, "--listen"))
            listen_on = argv[++i];
        else if (!strcmp(a, "--store"))
            store_dir = argv[++i];
        else if (!strcmp(a, "--pidfile"))
            pidfile = argv[++i];
        else if (!strcmp(a, "--log"))
            logfile = argv[++i];
        else if (!strcmp(a, "--munge-socket"))
            setenv("VHPC_MUNGE_SOCKET", argv[++i], 1);
        else if (!strcmp(a, "--allow-uid") || !strcmp(a, "--allow-user")) {
            char *copy = strdup(argv[++i]), *save = NULL;
            for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t;
                 t = strtok_r(NULL, ",", &save)) {
                char *end;
                unsigned long u = strtoul(t, &end, 10);
                struct passwd *pw = !strcmp(a, "--allow-user") ? getpwnam(t) : NULL;
                if (nallow == sizeof(allow) / sizeof(*allow)) {
                    free(copy);
                    return cli_usage(cmd, "%s: at most %zu users", a, nallow);
                }
                if (pw)
                    allow[nallow++] = pw->pw_uid;
                else if (!strcmp(a, "--allow-uid") && *t && !*end && u < 0x7fffffff)
                    allow[nallow++] = (uid_t)u;
                else {
                    int r = cli_usage(cmd, "%s: '%s' is not a %s", a, t,
                                      strcmp(a, "--allow-uid") ? "user here" : "uid");
                    free(copy);
                    return r;
                }
            }
            free(copy);
        } else if (!strcmp(a, "--max-connections") || !strcmp(a, "--max-per-peer") ||
                   !strcmp(a, "--max-sessions") || !strcmp(a, "--idle-timeout")) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 100000)
                return cli_usage(cmd, "%s %s: expected a number from 1 to 100000", a, argv[i]);
            if (!strcmp(a, "--max-connections"))
                lim.max_conns = (int)v;
            else if (!strcmp(a, "--max-per-peer"))
                lim.max_per_peer = (int)v;
            else if (!strcmp(a, "--max-sessions"))
                lim.max_sessions = (int)v;
            else
                lim.idle_ms = (int)(v * 1000);
        } else if (!strcmp(a, "--budget")) {
            if (vhpc_parse_bytes(argv[++i], &budget) < 0)
                return cli_usage(cmd, "--budget %s: expected a size such as 500M or 2G", argv[i]);
            have_budget = 1;
        } else
            return cli_usage(cmd, "unknown argument '%s'", a);
    }
    if (!listen_on)
        return cli_usage(cmd, "where to listen? --listen ADDR[:PORT] (e.g. 0.0.0.0:%d)",
                         VHPC_DIST_PORT);
    if (logfile && !daemon)
        return cli_usage(cmd, "--log goes with --daemon (otherwise the log is stderr)");

    /* Paths are made absolute: the daemon changes to /. */
    char store_abs[PATH_MAX], pid_abs[PATH_MAX], log_abs[PATH_MAX];
    vhpc_err_t err = {0};
    if (store_dir) {
        if (!realpath(store_dir, store_abs)) {
            vhpc_err_set(&err, -errno, "--store %s", store_dir);
            return cli_fail(&err);
        }
        store_dir = store_abs;
    }
    if (pidfile && pidfile[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)) ||
            snprintf(pid_abs, sizeof(pid_abs), "%s/%s", cwd, pidfile) >= (int)sizeof(pid_abs))
            return cli_usage(cmd, "--pidfile %s: path too long", pidfile);
        pidfile = pid_abs;
    }
    if (logfile && logfile[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)) ||
            snprintf(log_abs, sizeof(log_abs), "%s/%s", cwd, logfile) >= (int)sizeof(log_abs))
            return cli_usage(cmd, "--log %s: path too long", logfile);
        logfile = log_abs;
    }

    struct vhpc_store *st = NULL;
    struct vhpc_dist_server *srv = NULL;
    if (vhpc_store_open(store_dir, &st, &err) < 0)
        return cli_fail(&err);
    if (have_budget && vhpc_store_set_budget(st, budget, &err) < 0) {
        vhpc_store_close(st);
        return cli_fail(&err);
    }
    if (vhpc_dist_server_new(st, listen_on, &srv, &err) < 0) {
        vhpc_store_close(st);
        return cli_fail(&err);
    }
    vhpc_dist_server_limits(srv, &lim);
    if (vhpc_dist_server_allow(srv, allow, nallow, &err) < 0) {
        vhpc_dist_server_free(srv);
        vhpc_store_close(st);
        return cli_fail(&err);
    }
    /* Descriptors: as many as we may (each transfer needs a few per blob). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "vhpc node %s", vhpc_dist_server_addr(srv));
    vhpc_dist_server_log(srv, prefix);

    int ready_fd = -1, rc = 1;
    if (daemon && daemonize(&ready_fd) < 0)
        goto out;
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (pidfile && write_pidfile(pidfile, &err) < 0) {
        if (ready_fd >= 0) {
            dprintf(ready_fd, "E%s", err.msg);
            close(ready_fd);
        } else {
            cli_fail(&err);
        }
        pidfile = NULL;
        goto out;
    }
    uint64_t b = vhpc_store_budget(st);
    char budget_s[32] = "none";
    if (b)
        snprintf(budget_s, sizeof(budget_s), "%.1f MB", (double)b / 1e6);
    if (ready_fd >= 0) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        int logfd = logfile ? open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
        if (chdir("/") < 0) {
            /* not fatal: every path was made absolute */
        }
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(logfd >= 0 ? logfd : null, 2);
            close(null);
        }
        if (logfd >= 0)
            close(logfd);
        if (write(ready_fd, "R", 1) != 1) {
            /* the parent is gone: nobody to tell */
        }
        close(ready_fd);
    }
    fprintf(stderr, "%s: serving the store %s (budget %s), pid %d\n", prefix, vhpc_store_dir(st),
            budget_s, (int)getpid());
    vhpc_dist_server_run(srv, &stop_flag, &err);
    fprintf(stderr, "%s: stopped\n", prefix);
    rc = 0;
out:
    if (pidfile)
        unlink(pidfile);
    vhpc_dist_server_free(srv);
    vhpc_store_close(st);
    return rc;
}

int cmd_node(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(node_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "serve"))
        return serve(argc - 1, argv + 1);
    return cli_usage("node", "unknown subcommand '%s' (vhpc node --help)", argv[1]);
}
