/*
 * test_agent_init - vhpc-agent as PID 1, without a VM: it runs as /init of a
 * busybox root in new PID, mount, UTS and network namespaces (its mounts
 * never reach the host's), with the kernel command line read from a file.
 * Checks the mounts, the hostname, the network (a veth as eth0), /etc/hosts,
 * the environment of commands, orphans reaped, and that SHUTDOWN ends it
 * (reboot() in a PID namespace ends the namespace), and its log.  Its cases
 * are skipped where namespaces cannot be made (not root) or busybox is
 * missing.
 */
#include "test_agent_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char root[256];

static void write_file(const char *rel, const char *content, mode_t mode)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    T_ASSERT(fd >= 0, "create %s: %s", path, strerror(errno));
    T_ASSERT(write(fd, content, strlen(content)) == (ssize_t)strlen(content), "write %s", path);
    close(fd);
}

static void copy_file(const char *from, const char *rel, mode_t mode)
{
    int in = open(from, O_RDONLY);
    T_ASSERT(in >= 0, "open %s: %s", from, strerror(errno));
    size_t len;
    char *data = t_slurp(in, &len);
    close(in);
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    T_ASSERT(fd >= 0 && write(fd, data, len) == (ssize_t)len, "write %s", path);
    close(fd);
    free(data);
}

static void make_root(void)
{
    static const char *const dirs[] = {"bin", "sbin", "etc", "etc/vhpc", "sock", "root"};
    static const char *const applets[] = {"sh", "cat",  "echo", "sleep", "hostname",
                                          "ip", "grep", "ls",   "env",   "true"};
    char path[512];
    snprintf(root, sizeof(root), "%s/root", t_tmpdir());
    T_ASSERT(mkdir(root, 0755) == 0, "mkdir %s", root);
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", root, dirs[i]);
        T_ASSERT(mkdir(path, 0755) == 0, "mkdir %s", path);
    }
    copy_file("/bin/busybox", "bin/busybox", 0755);
    for (size_t i = 0; i < sizeof(applets) / sizeof(applets[0]); i++) {
        snprintf(path, sizeof(path), "%s/bin/%s", root, applets[i]);
        T_ASSERT(symlink("busybox", path) == 0, "symlink %s", path);
    }
    copy_file(getenv("VHPC_AGENT"), "init", 0755);
    /* A module that does not exist: logged, not fatal. */
    write_file("etc/vhpc/modules", "# test\n/lib/modules/none/no_such.ko\n", 0644);
    write_file("cmdline",
               "console=ttyS0 quiet vhpc.hostname=node7 vhpc.ip=10.11.12.13/24 vhpc.gw=10.11.12.1 "
               "vhpc.iface=eth0 vhpc.hosts=node7:10.11.12.13,node8:10.11.12.14\n",
               0644);
}

/* The namespaces' parent: unshare, then fork the PID 1 that execs /init.
 * Exits with what ended PID 1 (128 + signal, or its code). */
static int ns_parent(void *arg)
{
    if (unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWIPC) < 0)
        return 77;
    /* Nothing mounted in here may propagate to the host. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return 77;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (system("ip link add eth0 type veth peer name eth1 >/dev/null 2>&1") != 0)
            _exit(78);
        if (chroot(root) < 0 || chdir("/") < 0)
            _exit(79);
        /* What the kernel gives init: a word it did not know, a tiny env. */
        char *const env[] = {"HOME=/", "TERM=linux", NULL};
        execle("/init", "/init", "--cmdline", "/cmdline", "--listen-unix", "/sock/agent.sock",
               "--log", "/agent.log", "single", (char *)NULL, env);
        _exit(80);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return 81;
    return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

static void run_expect(agent_client_t *c, const char *script, const char *expect)
{
    struct t_out o;
    t_run(c, ARGV("sh", "-c", script), NULL, NULL, NULL, 0, &o);
    T_ASSERT(o.rc == 0 && o.status == 0, "'%s': rc %d status %d: %s %s", script, o.rc, o.status,
             o.e.msg, o.err);
    T_ASSERT(strstr(o.out, expect), "'%s' printed '%s', not '%s'", script, o.out, expect);
    t_out_free(&o);
}

/* A busybox root with the agent as /init in new namespaces; returns a
 * client connected to it (past HELLO and READY) and the namespaces'
 * parent in *ns.  Skips the case where that cannot be done here. */
static agent_client_t *boot(pid_t *ns)
{
    if (geteuid() != 0)
        T_SKIP("needs root (to make PID, mount, UTS and network namespaces)");
    if (access("/bin/busybox", X_OK) < 0)
        T_SKIP("needs /bin/busybox (apt-get install busybox-static)");
    make_root();
    *ns = t_fork(ns_parent, NULL);

    char sock[300];
    agent_client_t *c;
    vhpc_err_t e;
    snprintf(sock, sizeof(sock), "%s/sock/agent.sock", root);
    if (agent_client_connect(sock, 10000, &c, &e) < 0) {
        int st = t_wait_bounded(*ns, 1000, "namespace parent");
        if (st == 77)
            T_SKIP("cannot create namespaces here (unshare or a private / refused)");
        T_FAIL("%s (namespace parent: %d)", e.msg, st);
    }
    T_ASSERT(agent_client_wait_ready(c, 10000, &e) == 0, "%s", e.msg);
    const struct agent_hello *h = agent_client_hello(c);
    T_ASSERT(strcmp(h->hostname, "node7") == 0, "hostname in HELLO: %s", h->hostname);
    return c;
}

/* Mounts, hostname, network, /etc/hosts and the environment of commands. */
static void test_pid1_system(void)
{
    pid_t ns;
    agent_client_t *c = boot(&ns);
    run_expect(c, "echo $$ $PPID", " 1\n");
    run_expect(c, "cat /proc/mounts", "devtmpfs /dev devtmpfs");
    run_expect(c,
               "grep -c -E '^(proc /proc|sysfs /sys|devpts /dev/pts|tmpfs /dev/shm|tmpfs "
               "/tmp|tmpfs /run) ' /proc/mounts",
               "6\n");
    run_expect(c, "ls -l /dev/null /dev/console >/dev/null && echo ok", "ok");
    run_expect(c, "hostname", "node7\n");
    run_expect(c, "ip -4 addr show dev eth0", "inet 10.11.12.13/24");
    run_expect(c, "ip link show dev lo", "UP");
    run_expect(c, "ip route", "default via 10.11.12.1 dev eth0");
    run_expect(c, "cat /etc/hosts", "10.11.12.14\tnode8\n");
    run_expect(c, "cat /etc/hosts", "127.0.0.1\tlocalhost\n");
    run_expect(c, "echo \"[$PATH] [${IVC_SOCKET-unset}]\"",
               "[/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin] []");
    agent_client_close(c);
}

/* Orphans are PID 1's to reap: none is left a zombie. */
static void test_orphans_reaped(void)
{
    pid_t ns;
    agent_client_t *c = boot(&ns);
    run_expect(c, "for i in 1 2 3 4 5; do (sleep 0.1 &) ; done; echo started", "started");
    usleep(600000);
    struct t_out o;
    t_run(c, ARGV("sh", "-c", "grep -h '^State:' /proc/[0-9]*/status"), NULL, NULL, NULL, 0, &o);
    T_ASSERT(o.rc == 0 && !strstr(o.out, "zombie"), "zombies left: %s", o.out);
    t_out_free(&o);
    agent_client_close(c);
}

/* SHUTDOWN: PID 1 stops everything and calls reboot(), which in a PID
 * namespace ends it as if by SIGINT (power off); then what it logged (to
 * the console in a VM). */
static void test_shutdown_and_log(void)
{
    pid_t ns;
    vhpc_err_t e;
    agent_client_t *c = boot(&ns);
    T_ASSERT(agent_client_shutdown(c, AGENT_SHUTDOWN_POWEROFF, &e) == 0, "%s", e.msg);
    int st = t_wait_bounded(ns, 15000, "PID 1 after SHUTDOWN");
    T_ASSERT(st == 128 + SIGINT, "namespace ended with %d", st);
    agent_client_close(c);

    char path[512];
    size_t len;
    snprintf(path, sizeof(path), "%s/agent.log", root);
    int fd = open(path, O_RDONLY);
    T_ASSERT(fd >= 0, "no log at %s", path);
    char *log = t_slurp(fd, &len);
    close(fd);
    static const char *const lines[] = {
        "unexpected argument 'single' (ignored)",
        "loading module /lib/modules/none/no_such.ko: No such file or directory",
        "ready (kernel ",
        ", host node7, PID 1)",
        "shutdown requested",
        "powering off"};
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        T_ASSERT(strstr(log, lines[i]), "log lacks '%s':\n%s", lines[i], log);
    free(log);
}

static const struct t_case cases[] = {
    {"pid1_system", test_pid1_system, 60},
    {"orphans_reaped", test_orphans_reaped, 60},
    {"shutdown_and_log", test_shutdown_and_log, 60},
    {0},
};

int main(int argc, char **argv)
{
    return t_main(argc, argv, cases);
}
