/*
 * cmd_node.c - `vhpc node serve`: the per-node service of image
 * distribution.  It receives pushed images into a store (its cache),
 * forwards them down the push's tree while they arrive, answers pulls and
 * "have image X?" (re-hashing the blobs first), and keeps the cache within
 * a size budget by evicting the least recently used images (src/libvhpc/dist/cache.c).
 */
#include "daemon.h"
#include "vhpc/dist.h"
#include "opts.h"
#include "vhpc/store.h"
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
#include <unistd.h>

static const char node_usage[] =
    "Usage: vhpc node serve --listen ADDR[:PORT] [--store DIR] [--budget SIZE]\n"
    "                       [--pidfile FILE] [--daemon] [--log FILE] [--max-connections N]\n"
    "                       [--max-per-peer N] [--max-sessions N] [--idle-timeout S]\n"
    "                       [--allow-uid LIST] [--allow-user LIST] [--munge-socket PATH]\n"
    "Serve images to and from other nodes (vhpc image push / pull): receive pushed\n"
    "images into a cache and forward them while they arrive, answer pulls.  Cached\n"
    "blobs are re-hashed before they are served or counted as present; a damaged one\n"
    "is removed and fetched again.\n";

static const char node_footer[] =
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

static struct serve_opts {
    const char *listen_on, *store_dir, *pidfile, *logfile, *munge;
    bool daemon, have_budget;
    int idle_s;
    struct vhpc_dist_limits lim;
    uid_t allow[256];
    size_t nallow;
    uint64_t budget;
} o;

/* --allow-uid/--allow-user LIST: add each uid or user name of the list. */
static int parse_allow(const struct cli_opt *opt, const char *list, vhpc_err_t *err)
{
    int by_name = !strcmp(opt->name, "allow-user"), r = 0;
    char *copy = strdup(list), *save = NULL;
    for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t && r == 0;
         t = strtok_r(NULL, ",", &save)) {
        char *end;
        unsigned long u = strtoul(t, &end, 10);
        struct passwd *pw = by_name ? getpwnam(t) : NULL;
        if (o.nallow == sizeof(o.allow) / sizeof(*o.allow))
            r = vhpc_err_setmsg(err, -E2BIG, "--%s: at most %zu users", opt->name, o.nallow);
        else if (pw)
            o.allow[o.nallow++] = pw->pw_uid;
        else if (!by_name && *t && !*end && u < 0x7fffffff)
            o.allow[o.nallow++] = (uid_t)u;
        else
            r = vhpc_err_setmsg(err, -EINVAL, "--%s: '%s' is not a %s", opt->name, t,
                                by_name ? "user here" : "uid");
    }
    free(copy);
    return r;
}

static int parse_budget(const struct cli_opt *opt, const char *val, vhpc_err_t *err)
{
    if (vhpc_parse_bytes(val, &o.budget) < 0)
        return vhpc_err_setmsg(err, -EINVAL, "--budget %s: expected a size such as 500M or 2G",
                               val);
    o.have_budget = true;
    return 0;
}

#define LIMIT(n, d, a, h)                                                                          \
    CLI_OPT(n, CLI_INT, d, a, h, .min = 1, .max = 100000, .expect = "a number from 1 to 100000")
static const struct cli_opt serve_opts[] = {
    CLI_OPT("listen", CLI_STR, &o.listen_on, "ADDR[:PORT]",
            "the address to listen on (port default 7470; 0.0.0.0\nfor every address)"),
    CLI_OPT("store", CLI_STR, &o.store_dir, "DIR",
            "the cache: an image store under DIR (default $VHPC_HOME,\nelse /var/lib/vhpc)"),
    CLI_OPT("budget", CLI_FN, NULL, "SIZE",
            "keep the cache within SIZE bytes (K, M, G, T suffixes),\nevicting the least "
            "recently used images; 0: no limit.\nKept in the store; without the option the "
            "stored one holds",
            .fn = parse_budget),
    CLI_OPT("pidfile", CLI_STR, &o.pidfile, "FILE",
            "write the service's pid there (removed at exit)"),
    CLI_OPT("daemon", CLI_FLAG, &o.daemon, NULL, "detach; return once the service listens"),
    CLI_OPT("log", CLI_STR, &o.logfile, "FILE",
            "with --daemon: append the log there (else it is dropped)"),
    LIMIT("max-connections", &o.lim.max_conns, "N",
          "connections at once, in all (default 256); at the limit the\noldest that has not "
          "made its request yet is closed"),
    LIMIT("max-per-peer", &o.lim.max_per_peer, "N", "... from one address (default 32)"),
    LIMIT("max-sessions", &o.lim.max_sessions, "N",
          "transfers at once: pushes received, pulls served (default\n16); more are refused "
          "(\"busy\", try again)"),
    LIMIT("idle-timeout", &o.idle_s, "S",
          "close a connection that made no request within S seconds,\nor whose sender stays "
          "silent that long (default 30)"),
    CLI_OPT("allow-uid", CLI_FN, NULL, "LIST",
            "uids trusted like root here: they may push any name and\nread every image "
            "(comma-separated; may repeat)",
            .fn = parse_allow),
    CLI_OPT("allow-user", CLI_FN, NULL, "LIST", "the same by user name", .fn = parse_allow),
    CLI_OPT("munge-socket", CLI_STR, &o.munge, "PATH",
            "munged's socket (default $VHPC_MUNGE_SOCKET, else munge's)"),
    {0}};

static const struct cli_spec serve_spec = {"node serve", node_usage, serve_opts,
                                           .footer = node_footer};

/* CLI_PARSED to serve, else the exit status of --help or a usage error. */
static int parse_serve(int argc, char **argv)
{
    struct cli_args a;
    int st = cli_parse(&serve_spec, argc, argv, &a);
    if (st != CLI_PARSED)
        return st;
    if (o.munge)
        setenv("VHPC_MUNGE_SOCKET", o.munge, 1);
    if (o.idle_s)
        o.lim.idle_ms = o.idle_s * 1000;
    if (!o.listen_on)
        return cli_usage("node serve", "where to listen? --listen ADDR[:PORT] (e.g. 0.0.0.0:%d)",
                         VHPC_DIST_PORT);
    if (o.logfile && !o.daemon)
        return cli_usage("node serve", "--log goes with --daemon (otherwise the log is stderr)");
    return CLI_PARSED;
}

/* Make *path absolute (the daemon changes to /), in buf. */
static int absolute(const char *opt, const char **path, char *buf, size_t len)
{
    vhpc_err_t err = {0};
    if (!*path)
        return 0;
    if (vhpc_daemon_path(opt, *path, buf, len, &err) < 0)
        return cli_usage("node serve", "%s", err.msg);
    *path = buf;
    return 0;
}

/* The daemon's last step of start-up: stdio to /dev/null (stderr to the
 * log), then tell the waiting parent it is ready. */
static void detach_stdio(int ready_fd, const char *logfile)
{
    int logfd = logfile ? open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644) : -1;
    vhpc_err_t ignore; /* nobody to tell: every path was made absolute */
    vhpc_daemon_ready(ready_fd, logfd, &ignore);
    if (logfd > 2)
        close(logfd);
}

/* Open the store and a dist server on it, as the options say. */
static int open_server(const struct serve_opts *so, struct vhpc_store **st,
                       struct vhpc_dist_server **srv, vhpc_err_t *err)
{
    if (vhpc_store_open(so->store_dir, st, err) < 0)
        return -1;
    if ((so->have_budget && vhpc_store_set_budget(*st, so->budget, err) < 0) ||
        vhpc_dist_server_new(*st, so->listen_on, srv, err) < 0)
        return -1;
    vhpc_dist_server_limits(*srv, &so->lim);
    return vhpc_dist_server_allow(*srv, so->allow, so->nallow, err);
}

static int serve(int argc, char **argv)
{
    int r = parse_serve(argc, argv);
    if (r != CLI_PARSED)
        return r;

    char store_abs[PATH_MAX], pid_abs[PATH_MAX], log_abs[PATH_MAX];
    vhpc_err_t err = {0};
    if (o.store_dir) {
        if (!realpath(o.store_dir, store_abs)) {
            vhpc_err_set(&err, -errno, "--store %s", o.store_dir);
            return cli_fail(&err);
        }
        o.store_dir = store_abs;
    }
    if ((r = absolute("--pidfile", &o.pidfile, pid_abs, sizeof(pid_abs))) ||
        (r = absolute("--log", &o.logfile, log_abs, sizeof(log_abs))))
        return r;

    struct vhpc_store *st = NULL;
    struct vhpc_dist_server *srv = NULL;
    const char *pidfile = NULL;
    int ready_fd = -1, rc = 1;
    if (open_server(&o, &st, &srv, &err) < 0) {
        cli_fail(&err);
        goto out;
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

    if (o.daemon && vhpc_daemonize("vhpc", &ready_fd, &err) < 0) {
        fprintf(stderr, "vhpc node: %s\n", err.msg);
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (o.pidfile && write_pidfile(o.pidfile, &err) < 0) {
        if (ready_fd >= 0) {
            vhpc_daemon_fail(ready_fd, err.msg);
        } else {
            cli_fail(&err);
        }
        goto out;
    }
    pidfile = o.pidfile;
    uint64_t b = vhpc_store_budget(st);
    char budget_s[32] = "none";
    if (b)
        snprintf(budget_s, sizeof(budget_s), "%.1f MB", (double)b / 1e6);
    if (ready_fd >= 0)
        detach_stdio(ready_fd, o.logfile);
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
    static const struct cli_sub subs[] = {{"serve", serve}, {NULL, NULL}};
    char *help = NULL;
    size_t len;
    FILE *f = open_memstream(&help, &len);
    if (!f)
        return 1;
    cli_help(&serve_spec, f); /* the only subcommand's */
    fclose(f);
    int r = cli_dispatch("node", subs, help, argc, argv);
    free(help);
    return r;
}
